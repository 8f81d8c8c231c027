/* error.c - gp_err: codes plus a message a user can act on (see error.h). */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int gp_err_set(gp_err *err, gp_code code, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int gp_err_wrap(gp_err *err, const char *fmt, ...)
{
    if (err == NULL)
        return -1;
    char prefix[GP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[GP_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    /* prefix + ": " + old message, cut to fit (assembled by hand: truncation is intended here) */
    size_t cap = sizeof err->msg - 1, n = 0;
    for (const char *parts[3] = {prefix, ": ", old}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c && n < cap; c++)
            err->msg[n++] = *c;
    err->msg[n] = '\0';
    if (err->code == GP_OK)
        err->code = GP_ERR_INTERNAL;
    return -1;
}

void gp_err_clear(gp_err *err)
{
    if (err == NULL)
        return;
    err->code = GP_OK;
    err->msg[0] = '\0';
}

const char *gp_code_name(gp_code code)
{
    switch (code) {
    case GP_OK: return "ok";
    case GP_ERR_INVALID: return "invalid";
    case GP_ERR_RANGE: return "out-of-range";
    case GP_ERR_NOT_FOUND: return "not-found";
    case GP_ERR_EXISTS: return "exists";
    case GP_ERR_CONFLICT: return "conflict";
    case GP_ERR_NOMEM: return "no-memory";
    case GP_ERR_IO: return "io";
    case GP_ERR_UNSUPPORTED: return "unsupported";
    case GP_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

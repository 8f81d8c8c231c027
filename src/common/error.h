/* error.h - the one error type of gpupool's libraries.
 *
 * A function that can fail returns 0 or -1 (or a NULL pointer) and fills a caller-owned gp_err with a code
 * and a message a user can act on: what failed, why, and what to do. The caller owns the gp_err (usually on
 * its stack); nothing is allocated. Passing NULL for the gp_err is allowed and discards the message.
 */
#ifndef GP_COMMON_ERROR_H
#define GP_COMMON_ERROR_H

#include <stddef.h>

typedef enum gp_code {
    GP_OK = 0,
    GP_ERR_INVALID,     /* bad input: a malformed value, a missing field */
    GP_ERR_RANGE,       /* well-formed but out of the allowed range */
    GP_ERR_NOT_FOUND,   /* the named thing does not exist */
    GP_ERR_EXISTS,      /* it already exists */
    GP_ERR_CONFLICT,    /* the current state does not allow it */
    GP_ERR_NOMEM,       /* out of host memory */
    GP_ERR_IO,          /* a system call failed (the message carries strerror) */
    GP_ERR_UNSUPPORTED, /* not implemented, or not on this platform */
    GP_ERR_INTERNAL,    /* a bug: an invariant did not hold */
} gp_code;

#define GP_ERR_MSG_MAX 320

typedef struct gp_err {
    gp_code code;
    char msg[GP_ERR_MSG_MAX];
} gp_err;

/* Fills *err (if not NULL) and returns -1, so that `return gp_err_set(err, ...);` reads naturally. */
int gp_err_set(gp_err *err, gp_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in *err with more context ("loading models: " + old message). Returns -1. */
int gp_err_wrap(gp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets *err to GP_OK with an empty message. */
void gp_err_clear(gp_err *err);

/* A short stable name for a code ("invalid", "not-found", ...). */
const char *gp_code_name(gp_code code);

#endif

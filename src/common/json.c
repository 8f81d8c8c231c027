/* json.c - typed, validated fields of request objects (see json.h), on top of jansson.
 *
 * Every getter looks the key up once, treats an absent key or an explicit null as "not given", checks the
 * type and the range, and only then writes *out: a failed call changes nothing the caller owns. Messages
 * name the field and show what was received ("got true", "got an array"), so an API user can fix the request
 * without reading our source. The HTTP server (http.c) and the daemons' request handlers build on these.
 */
#include "common/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/quantity.h"

/* A short description of a received value for messages: `true`, `"8Gb"`, `12.5`, `an object`. */
static const char *describe(const json_t *v, char *buf, size_t len)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    case JSON_INTEGER: snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return buf;
    case JSON_REAL:
        /* The shortest form that reads back as the same double. */
        snprintf(buf, len, "%.15g", json_real_value(v));
        if (strtod(buf, NULL) != json_real_value(v))
            snprintf(buf, len, "%.17g", json_real_value(v));
        return buf;
    case JSON_STRING: {
        /* Quoted and cut short: the message has room for a hint, not for a whole document. */
        const char *s = json_string_value(v);
        size_t n = strlen(s), max = len > 8 ? len - 8 : 0;
        if (max > 40)
            max = 40;
        if (n > max)
            snprintf(buf, len, "\"%.*s...\"", (int)max, s);
        else
            snprintf(buf, len, "\"%s\"", s);
        return buf;
    }
    }
    return "an unknown value";
}

/* Finds obj[key]. Returns 1 when present (and not null), 0 when absent (an error when required), -1 on an
 * error already set in *err. */
static int lookup(const json_t *obj, const char *key, bool required, const json_t **v, gp_err *err)
{
    if (key == NULL)
        return gp_err_set(err, GP_ERR_INTERNAL, "json: a field lookup without a field name");
    if (!json_is_object(obj))
        return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": expected a JSON object holding it, got %s", key,
                          obj == NULL ? "nothing" : "another JSON value");
    *v = json_object_get(obj, key);
    if (*v == NULL || json_is_null(*v)) {
        if (required)
            return gp_err_set(err, GP_ERR_INVALID, "field \"%s\" is required", key);
        return 0;
    }
    return 1;
}

static int wrong_type(gp_err *err, const char *key, const char *expected, const json_t *v)
{
    char buf[64];
    return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": expected %s, got %s", key, expected,
                      describe(v, buf, sizeof buf));
}

/* The integral value of an integer, or of a real with no fraction that fits int64 ("3.0" from a client that
 * only has doubles). Returns false for anything else. */
static bool integral_value(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* -2^63 is exact in a double; 2^63 is the first value past INT64_MAX. */
        if (isfinite(d) && d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

int gp_json_only(const json_t *obj, const char *const *known, gp_err *err)
{
    if (!json_is_object(obj))
        return gp_err_set(err, GP_ERR_INVALID, "expected a JSON object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool ok = false;
        for (const char *const *k = known; k && *k && !ok; k++)
            ok = strcmp(*k, key) == 0;
        if (ok)
            continue;
        /* List what is allowed: the usual cause is a typo. */
        char list[200] = "";
        size_t n = 0;
        for (const char *const *k = known; k && *k && n < sizeof list; k++) {
            int m = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *k);
            if (m < 0)
                break;
            n += (size_t)m;
        }
        if (n >= sizeof list)
            memcpy(list + sizeof list - 5, "...", 4);
        return gp_err_set(err, GP_ERR_INVALID, "unknown field \"%.80s\" (known fields: %s)", key,
                          n ? list : "none");
    }
    return 0;
}

int gp_json_str(const json_t *obj, const char *key, bool required, size_t max_len, const char **out,
                gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_string(v))
        return wrong_type(err, key, "a string", v);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": the string contains a NUL character", key);
    if (max_len && len > max_len)
        return gp_err_set(err, GP_ERR_RANGE, "field \"%s\": at most %zu bytes, got %zu", key, max_len, len);
    *out = s;
    return 0;
}

int gp_json_int(const json_t *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *out,
                gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    int64_t i;
    if (!integral_value(v, &i))
        return wrong_type(err, key, "an integer", v);
    if (i < min || i > max)
        return gp_err_set(err, GP_ERR_RANGE, "field \"%s\": %lld is out of range [%lld, %lld]", key,
                          (long long)i, (long long)min, (long long)max);
    *out = i;
    return 0;
}

int gp_json_num(const json_t *obj, const char *key, bool required, double min, double max, double *out,
                gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_number(v))
        return wrong_type(err, key, "a number", v);
    double d = json_number_value(v);
    if (!isfinite(d))
        return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": expected a finite number", key);
    if (d < min || d > max)
        return gp_err_set(err, GP_ERR_RANGE, "field \"%s\": %g is out of range [%g, %g]", key, d, min, max);
    *out = d;
    return 0;
}

int gp_json_bool(const json_t *obj, const char *key, bool required, bool *out, gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean(v))
        return wrong_type(err, key, "true or false", v);
    *out = json_is_true(v);
    return 0;
}

int gp_json_bytes(const json_t *obj, const char *key, bool required, uint64_t *out, gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
            return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": the string contains a NUL character", key);
        gp_err qe = {0};
        uint64_t b;
        if (gp_quantity_parse_bytes(s, NULL, &b, &qe) != 0)
            return gp_err_set(err, qe.code, "field \"%s\": %s", key, qe.msg);
        *out = b;
        return 0;
    }
    int64_t i;
    if (integral_value(v, &i)) {
        if (i < 0)
            return gp_err_set(err, GP_ERR_RANGE, "field \"%s\": a size cannot be negative, got %lld", key,
                              (long long)i);
        *out = (uint64_t)i;
        return 0;
    }
    if (json_is_real(v)) {
        /* Past INT64_MAX only a double can say it (jansson integers are signed 64-bit). */
        double d = json_real_value(v);
        if (d >= 9223372036854775808.0 && d < 18446744073709551616.0 && d == floor(d)) {
            *out = (uint64_t)d;
            return 0;
        }
    }
    return wrong_type(err, key, "a quantity such as \"8Gi\" or a number of bytes", v);
}

int gp_json_enum(const json_t *obj, const char *key, bool required, const char *const *choices, int *out,
                 gp_err *err)
{
    const json_t *v;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    char list[200] = "";
    size_t n = 0;
    for (int i = 0; choices && choices[i]; i++) {
        if (json_is_string(v) && strcasecmp(json_string_value(v), choices[i]) == 0 &&
            strlen(json_string_value(v)) == json_string_length(v)) {
            *out = i;
            return 0;
        }
        if (n < sizeof list) {
            int m = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", choices[i]);
            n = m < 0 ? sizeof list : n + (size_t)m;
        }
    }
    if (n >= sizeof list)
        memcpy(list + sizeof list - 5, "...", 4);
    char buf[64];
    return gp_err_set(err, GP_ERR_INVALID, "field \"%s\": expected one of %s, got %s", key,
                      n ? list : "(none)", describe(v, buf, sizeof buf));
}

char *gp_json_dump(const json_t *v, size_t *len)
{
    if (v == NULL)
        return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t == NULL) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    if (len)
        *len = n + 1;
    return t;
}

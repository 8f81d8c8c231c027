/* json.h - reading request objects with jansson: typed, validated fields with errors a person can act on.
 *
 * Every getter names the field in its error ("field \"vram\": expected a quantity such as \"8Gi\" or a number
 * of bytes, got true"). A missing optional field leaves *out untouched and returns 0; a missing required one
 * is an error. An explicit null counts as missing (clients often serialise an unset field as null). On any
 * error *out is untouched. gp_json_only rejects fields the caller does not know, so a typo is an error, not a
 * no-op.
 */
#ifndef GP_COMMON_JSON_H
#define GP_COMMON_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

/* Fails (GP_ERR_INVALID) on a key of obj not in the NULL-terminated list `known`, naming it. */
int gp_json_only(const json_t *obj, const char *const *known, gp_err *err);

/* *out points into obj (valid while obj lives). Strings must be valid UTF-8 without NUL (jansson's rule) and
 * at most max_len bytes (0: no bound). */
int gp_json_str(const json_t *obj, const char *key, bool required, size_t max_len, const char **out,
                gp_err *err);
/* An integer in [min, max]. */
int gp_json_int(const json_t *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *out,
                gp_err *err);
/* A finite number (integer or real) in [min, max]. */
int gp_json_num(const json_t *obj, const char *key, bool required, double min, double max, double *out,
                gp_err *err);
int gp_json_bool(const json_t *obj, const char *key, bool required, bool *out, gp_err *err);
/* Bytes: a quantity string ("8Gi", common/quantity.h) or a non-negative integer. */
int gp_json_bytes(const json_t *obj, const char *key, bool required, uint64_t *out, gp_err *err);
/* One of the NULL-terminated `choices` (case-insensitive); *out is its index. */
int gp_json_enum(const json_t *obj, const char *key, bool required, const char *const *choices, int *out,
                 gp_err *err);

/* Serialises compactly with a trailing newline; malloc'd (NULL when out of memory). */
char *gp_json_dump(const json_t *v, size_t *len);

#endif

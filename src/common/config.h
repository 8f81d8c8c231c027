/* config.h - daemon configuration: a YAML file, then flags on top.
 *
 * The YAML document must be a mapping; nested mappings flatten to dotted keys ("api.tcp: ..." and
 * "api: {tcp: ...}" are the same key "api.tcp"), sequences to key[0], key[1], ... Scalars are kept as text;
 * typed getters convert them and name the key and the file:line in errors. gp_config_check rejects keys a
 * daemon does not know, so a misspelt option is an error instead of being ignored. Flags are applied with
 * gp_config_set (a later set of the same key wins). Aliases, anchors, tags and multi-document files are
 * refused with a message, and so is a file that sets one key twice. A YAML null ("key:" alone, "~") is kept
 * as an empty value: gp_config_get and gp_config_str return "", the other typed getters refuse it.
 */
#ifndef GP_COMMON_CONFIG_H
#define GP_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct gp_config_kv {
    char *key;
    char *value;
    char where[160]; /* "agent.yaml:12" or "--flag" for errors */
} gp_config_kv;

typedef struct gp_config {
    gp_config_kv *kv;
    size_t n, cap;
} gp_config;

/* Parses YAML text (`name` is used in messages). On error *c is unchanged. */
int gp_config_parse(gp_config *c, const char *text, size_t len, const char *name, gp_err *err);
/* Reads and parses a file (at most 1 MiB). */
int gp_config_load(gp_config *c, const char *path, gp_err *err);
/* Sets key to value (a copy), replacing an earlier value. `where` names the source ("--api-tcp"). */
int gp_config_set(gp_config *c, const char *key, const char *value, const char *where, gp_err *err);
void gp_config_free(gp_config *c);

/* The value of key, or NULL. */
const char *gp_config_get(const gp_config *c, const char *key);
/* Fails on the first key not in the NULL-terminated list `known`; "name[]" in the list allows name[0..]. */
int gp_config_check(const gp_config *c, const char *const *known, gp_err *err);

/* Typed getters: a missing key leaves *out as it is (the caller's default) and returns 0. */
int gp_config_str(const gp_config *c, const char *key, const char **out, gp_err *err);
/* The same, copied into a fixed buffer: a value that does not fit is an error naming the key. */
int gp_config_str_copy(const gp_config *c, const char *key, char *dst, size_t len, gp_err *err);
int gp_config_bool(const gp_config *c, const char *key, bool *out,
                   gp_err *err); /* true/false/yes/no/on/off/1/0 */
int gp_config_u64(const gp_config *c, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                  gp_err *err);
int gp_config_bytes(const gp_config *c, const char *key, uint64_t *out, gp_err *err); /* a quantity */
/* A duration: "250ms", "2s", "1m", "1h", or a bare number of seconds; returned in milliseconds. */
int gp_config_duration_ms(const gp_config *c, const char *key, uint64_t *out, gp_err *err);
/* Parses a duration string on its own (same syntax). */
int gp_duration_parse_ms(const char *s, const char *what, uint64_t *out, gp_err *err);

#endif

/* fuzz_config.c - libFuzzer target: any bytes given to the YAML configuration parser are either refused with
 * a message (and leave the configuration untouched) or become unique, non-empty keys with values that every
 * typed getter reads or refuses with a message.
 *
 * The same bytes also go to the duration parser: an accepted duration prints and parses back to itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_getter(int rc, const gp_err *err)
{
    if (rc != 0 && (rc != -1 || err->msg[0] == '\0'))
        abort(); /* a refusal always says why */
}

static void exercise_getters(const gp_config *c, const char *key)
{
    gp_err err = {0};
    const char *s = NULL;
    bool b = false;
    uint64_t u = 0;
    check_getter(gp_config_str(c, key, &s, &err), &err);
    if (s != gp_config_get(c, key))
        abort();
    check_getter(gp_config_bool(c, key, &b, &err), &err);
    check_getter(gp_config_u64(c, key, 1, 65535, &u, &err), &err);
    if (gp_config_u64(c, key, 10, 20, &u, &err) == 0 && u != 0 && (u < 10 || u > 20))
        abort();
    check_getter(gp_config_bytes(c, key, &u, &err), &err);
    check_getter(gp_config_duration_ms(c, key, &u, &err), &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_config c = {0};
    gp_err err = {0};
    if (gp_config_set(&c, "preset", "1", "--preset", &err) != 0)
        abort();
    if (gp_config_parse(&c, (const char *)data, size, "fuzz.yaml", &err) != 0) {
        if (err.msg[0] == '\0' || c.n != 1 || strcmp(gp_config_get(&c, "preset"), "1") != 0)
            abort(); /* refused: said why, changed nothing */
    } else {
        for (size_t i = 0; i < c.n; i++) {
            const gp_config_kv *kv = &c.kv[i];
            if (kv->key == NULL || kv->key[0] == '\0' || kv->value == NULL || kv->where[0] == '\0')
                abort();
            if (gp_config_get(&c, kv->key) != kv->value) /* keys are unique */
                abort();
            exercise_getters(&c, kv->key);
        }
        static const char *const known[] = {"api.tcp", "api.unix", "gpus[]", "pools[].name", NULL};
        if (gp_config_check(&c, known, &err) != 0 && err.msg[0] == '\0')
            abort();
    }
    gp_config_free(&c);

    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    uint64_t ms = 0, back = 0;
    if (gp_duration_parse_ms(s, "fuzz", &ms, &err) == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%llums", (unsigned long long)ms);
        if (gp_duration_parse_ms(buf, NULL, &back, NULL) != 0 || back != ms)
            abort();
    } else if (err.msg[0] == '\0') {
        abort();
    }
    free(s);
    return 0;
}

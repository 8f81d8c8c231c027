/* fuzz_json.c - libFuzzer target: any bytes that jansson reads as JSON go through every typed getter, on a
 * few fixed keys and on every key the document has. A getter either succeeds with a value inside the bounds
 * it was given, or fails with a message and leaves *out untouched; a dumped document reads back equal.
 * Strings may hold NUL (JSON_ALLOW_NUL) so that the getters' refusal of them is exercised too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SENTINEL 0x5eed5eed5eedull

/* A getter's result: on success a written value lies in its bounds; on failure there is a message and the
 * output still holds the sentinel the caller put there. */
static void check(int rc, const gp_err *err, bool untouched, bool in_bounds)
{
    if (rc == 0 && !untouched && !in_bounds)
        abort();
    if (rc != 0 && (rc != -1 || err->msg[0] == '\0' || !untouched))
        abort();
}

static void exercise(const json_t *obj, const char *key)
{
    static const char *const choices[] = {"low", "medium", "high", "critical", NULL};
    gp_err err = {0};
    for (int required = 0; required < 2; required++) {
        const char *s = NULL;
        int rc = gp_json_str(obj, key, required, 8, &s, &err);
        check(rc, &err, s == NULL, s && strlen(s) <= 8);

        int64_t i = (int64_t)SENTINEL;
        rc = gp_json_int(obj, key, required, -5, 5, &i, &err);
        check(rc, &err, i == (int64_t)SENTINEL, i >= -5 && i <= 5);

        double d = 1e300;
        rc = gp_json_num(obj, key, required, -1.5, 2.5, &d, &err);
        check(rc, &err, d == 1e300, d >= -1.5 && d <= 2.5);

        bool b = true;
        rc = gp_json_bool(obj, key, required, &b, &err);
        check(rc, &err, b, true);

        uint64_t u = SENTINEL;
        rc = gp_json_bytes(obj, key, required, &u, &err);
        check(rc, &err, u == SENTINEL, true);

        int e = -7;
        rc = gp_json_enum(obj, key, required, choices, &e, &err);
        check(rc, &err, e == -7, e >= 0 && e <= 3);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v == NULL)
        return 0;
    static const char *const keys[] = {"name", "vram", "qos", "tflops", "a", "", NULL};
    for (const char *const *k = keys; *k; k++)
        exercise(v, *k);
    if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) exercise(v, key);
        gp_err err = {0};
        if (gp_json_only(v, keys, &err) != 0 && err.msg[0] == '\0')
            abort();
    }
    size_t len = 0;
    char *s = gp_json_dump(v, &len);
    if (s) {
        if (len == 0 || s[len - 1] != '\n' || strlen(s) != len)
            abort();
        json_t *back = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (back == NULL || !json_equal(back, v))
            abort();
        json_decref(back);
        free(s);
    }
    json_decref(v);
    return 0;
}

/* test_json.c - typed JSON fields: what each getter accepts, what it refuses, what the errors say, and that a
 * refusal leaves the caller's value alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, 0, &je);
    if (v == NULL)
        fail_msg("test JSON does not parse: %s: %s", text, je.text);
    return v;
}

static void assert_msg_has(const gp_err *err, const char *part)
{
    if (strstr(err->msg, part) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err->msg, part);
}

static void only_accepts_known_fields_and_names_the_unknown_one(void **state)
{
    (void)state;
    static const char *const known[] = {"name", "vram", "qos", NULL};
    json_t *ok = parse("{\"name\":\"a\",\"vram\":\"8Gi\"}");
    json_t *typo = parse("{\"name\":\"a\",\"vrma\":\"8Gi\"}");
    gp_err err = {0};
    assert_int_equal(gp_json_only(ok, known, &err), 0);
    assert_int_equal(gp_json_only(typo, known, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    assert_msg_has(&err, "unknown field \"vrma\"");
    assert_msg_has(&err, "name, vram, qos");
    json_t *arr = parse("[1]");
    assert_int_equal(gp_json_only(arr, known, &err), -1);
    assert_msg_has(&err, "expected a JSON object");
    json_decref(ok);
    json_decref(typo);
    json_decref(arr);
}

static void str_reads_strings_and_bounds_their_length(void **state)
{
    (void)state;
    json_t *o = parse("{\"name\":\"worker-1\",\"n\":3,\"long\":\"abcdefghij\"}");
    gp_err err = {0};
    const char *s = "default";
    assert_int_equal(gp_json_str(o, "name", true, 64, &s, &err), 0);
    assert_string_equal(s, "worker-1");
    s = "default";
    assert_int_equal(gp_json_str(o, "n", true, 0, &s, &err), -1);
    assert_string_equal(s, "default");
    assert_msg_has(&err, "field \"n\": expected a string, got 3");
    assert_int_equal(gp_json_str(o, "long", false, 5, &s, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    assert_msg_has(&err, "at most 5 bytes, got 10");
    assert_int_equal(gp_json_str(o, "long", false, 10, &s, &err), 0);
    json_decref(o);
}

static void str_refuses_an_embedded_nul(void **state)
{
    (void)state;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_stringn("a\0b", 3));
    const char *s = "default";
    gp_err err = {0};
    assert_int_equal(gp_json_str(o, "name", true, 0, &s, &err), -1);
    assert_msg_has(&err, "NUL");
    assert_string_equal(s, "default");
    json_decref(o);
}

static void missing_optional_is_untouched_and_missing_required_is_an_error(void **state)
{
    (void)state;
    json_t *o = parse("{\"present\":1,\"nothing\":null}");
    gp_err err = {0};
    int64_t i = 42;
    assert_int_equal(gp_json_int(o, "absent", false, 0, 10, &i, &err), 0);
    assert_int_equal(i, 42);
    assert_int_equal(gp_json_int(o, "nothing", false, 0, 10, &i, &err), 0); /* null is "not given" */
    assert_int_equal(i, 42);
    assert_int_equal(gp_json_int(o, "absent", true, 0, 10, &i, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    assert_msg_has(&err, "field \"absent\" is required");
    assert_int_equal(gp_json_int(o, "nothing", true, 0, 10, &i, &err), -1);
    assert_int_equal(i, 42);
    json_decref(o);
}

static void int_checks_type_and_range(void **state)
{
    (void)state;
    json_t *o = parse("{\"a\":7,\"b\":3.0,\"c\":3.5,\"d\":\"7\",\"e\":-9223372036854775808,\"f\":1e300}");
    gp_err err = {0};
    int64_t i = 0;
    assert_int_equal(gp_json_int(o, "a", true, 0, 10, &i, &err), 0);
    assert_int_equal(i, 7);
    assert_int_equal(gp_json_int(o, "b", true, 0, 10, &i, &err), 0); /* a client that only has doubles */
    assert_int_equal(i, 3);
    assert_int_equal(gp_json_int(o, "c", true, 0, 10, &i, &err), -1);
    assert_msg_has(&err, "field \"c\": expected an integer, got 3.5");
    assert_int_equal(gp_json_int(o, "d", true, 0, 10, &i, &err), -1);
    assert_msg_has(&err, "got \"7\"");
    assert_int_equal(gp_json_int(o, "a", true, 8, 10, &i, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    assert_msg_has(&err, "7 is out of range [8, 10]");
    assert_int_equal(gp_json_int(o, "e", true, INT64_MIN, INT64_MAX, &i, &err), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(gp_json_int(o, "f", true, INT64_MIN, INT64_MAX, &i, &err), -1);
    assert_true(i == INT64_MIN);
    json_decref(o);
}

static void num_accepts_integers_and_reals_in_range(void **state)
{
    (void)state;
    json_t *o = parse("{\"t\":12.5,\"i\":100,\"s\":\"1\",\"big\":1e9}");
    gp_err err = {0};
    double d = -1;
    assert_int_equal(gp_json_num(o, "t", true, 0, 1000, &d, &err), 0);
    assert_true(d == 12.5);
    assert_int_equal(gp_json_num(o, "i", true, 0, 1000, &d, &err), 0);
    assert_true(d == 100.0);
    assert_int_equal(gp_json_num(o, "s", true, 0, 1000, &d, &err), -1);
    assert_msg_has(&err, "expected a number, got \"1\"");
    assert_int_equal(gp_json_num(o, "big", true, 0, 1000, &d, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    assert_msg_has(&err, "out of range");
    assert_true(d == 100.0);
    json_decref(o);
}

static void bool_accepts_only_true_and_false(void **state)
{
    (void)state;
    json_t *o = parse("{\"y\":true,\"n\":false,\"s\":\"true\",\"one\":1}");
    gp_err err = {0};
    bool b = false;
    assert_int_equal(gp_json_bool(o, "y", true, &b, &err), 0);
    assert_true(b);
    assert_int_equal(gp_json_bool(o, "n", true, &b, &err), 0);
    assert_false(b);
    b = true;
    assert_int_equal(gp_json_bool(o, "s", true, &b, &err), -1);
    assert_msg_has(&err, "field \"s\": expected true or false, got \"true\"");
    assert_int_equal(gp_json_bool(o, "one", true, &b, &err), -1);
    assert_true(b);
    json_decref(o);
}

static void bytes_take_quantities_and_non_negative_integers(void **state)
{
    (void)state;
    json_t *o = parse("{\"q\":\"8Gi\",\"n\":1024,\"r\":1e9,\"neg\":-1,\"bad\":\"8Gb\",\"t\":true,"
                      "\"huge\":18446744073709549568.0,\"frac\":1.5}");
    gp_err err = {0};
    uint64_t v = 5;
    assert_int_equal(gp_json_bytes(o, "q", true, &v, &err), 0);
    assert_int_equal(v, 8ull << 30);
    assert_int_equal(gp_json_bytes(o, "n", true, &v, &err), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(gp_json_bytes(o, "r", true, &v, &err), 0);
    assert_int_equal(v, 1000000000ull);
    assert_int_equal(gp_json_bytes(o, "huge", true, &v, &err), 0);
    assert_true(v == 18446744073709549568ull);
    v = 5;
    assert_int_equal(gp_json_bytes(o, "neg", true, &v, &err), -1);
    assert_msg_has(&err, "cannot be negative");
    assert_int_equal(gp_json_bytes(o, "bad", true, &v, &err), -1);
    assert_msg_has(&err, "field \"bad\"");
    assert_msg_has(&err, "unknown unit \"Gb\"");
    assert_int_equal(gp_json_bytes(o, "t", true, &v, &err), -1);
    assert_msg_has(&err, "field \"t\": expected a quantity such as \"8Gi\" or a number of bytes, got true");
    assert_int_equal(gp_json_bytes(o, "frac", true, &v, &err), -1);
    assert_int_equal(v, 5);
    json_decref(o);
}

static void enum_matches_case_insensitively_and_lists_the_choices(void **state)
{
    (void)state;
    static const char *const qos[] = {"low", "medium", "high", "critical", NULL};
    json_t *o = parse("{\"a\":\"HIGH\",\"b\":\"urgent\",\"c\":2}");
    gp_err err = {0};
    int i = -1;
    assert_int_equal(gp_json_enum(o, "a", true, qos, &i, &err), 0);
    assert_int_equal(i, 2);
    i = -1;
    assert_int_equal(gp_json_enum(o, "b", true, qos, &i, &err), -1);
    assert_msg_has(&err, "field \"b\": expected one of low, medium, high, critical, got \"urgent\"");
    assert_int_equal(gp_json_enum(o, "c", true, qos, &i, &err), -1);
    assert_int_equal(i, -1);
    json_decref(o);
}

static void getters_refuse_a_non_object(void **state)
{
    (void)state;
    json_t *a = parse("[1,2]");
    gp_err err = {0};
    const char *s = NULL;
    assert_int_equal(gp_json_str(a, "x", false, 0, &s, &err), -1);
    assert_msg_has(&err, "field \"x\"");
    assert_int_equal(gp_json_str(NULL, "x", false, 0, &s, &err), -1);
    json_decref(a);
}

static void dump_is_compact_with_a_trailing_newline(void **state)
{
    (void)state;
    json_t *o = parse("{ \"a\" : [1, 2], \"b\" : {\"c\": \"d\"} }");
    size_t len = 0;
    char *s = gp_json_dump(o, &len);
    assert_non_null(s);
    assert_string_equal(s, "{\"a\":[1,2],\"b\":{\"c\":\"d\"}}\n");
    assert_int_equal(len, strlen(s));
    free(s);
    json_t *n = json_integer(5);
    s = gp_json_dump(n, NULL); /* any value, not only containers */
    assert_string_equal(s, "5\n");
    free(s);
    assert_null(gp_json_dump(NULL, &len));
    json_decref(n);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(only_accepts_known_fields_and_names_the_unknown_one),
        cmocka_unit_test(str_reads_strings_and_bounds_their_length),
        cmocka_unit_test(str_refuses_an_embedded_nul),
        cmocka_unit_test(missing_optional_is_untouched_and_missing_required_is_an_error),
        cmocka_unit_test(int_checks_type_and_range),
        cmocka_unit_test(num_accepts_integers_and_reals_in_range),
        cmocka_unit_test(bool_accepts_only_true_and_false),
        cmocka_unit_test(bytes_take_quantities_and_non_negative_integers),
        cmocka_unit_test(enum_matches_case_insensitively_and_lists_the_choices),
        cmocka_unit_test(getters_refuse_a_non_object),
        cmocka_unit_test(dump_is_compact_with_a_trailing_newline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

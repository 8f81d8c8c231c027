/* test_quantity.c - Kubernetes-style byte quantities: what parses, what does not, and what the errors say. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/quantity.h"

static uint64_t parse_ok(const char *s)
{
    uint64_t v = 0;
    gp_err err = {0};
    int rc = gp_quantity_parse_bytes(s, "vram-limit", &v, &err);
    if (rc != 0)
        fail_msg("\"%s\" should parse: %s", s, err.msg);
    return v;
}

static const char *parse_err(const char *s)
{
    static gp_err err;
    uint64_t v = 12345;
    memset(&err, 0, sizeof err);
    assert_int_equal(gp_quantity_parse_bytes(s, "vram-limit", &v, &err), -1);
    assert_int_equal(v, 12345); /* nothing written on failure */
    assert_true(err.code != GP_OK);
    return err.msg;
}

static void binary_suffixes_are_powers_of_1024(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("8Gi"), 8ull << 30);
    assert_int_equal(parse_ok("512Mi"), 512ull << 20);
    assert_int_equal(parse_ok("1Ki"), 1024);
    assert_int_equal(parse_ok("2Ti"), 2ull << 40);
    assert_int_equal(parse_ok("1Ei"), 1ull << 60);
}

static void decimal_suffixes_are_powers_of_1000(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("4G"), 4000000000ull);
    assert_int_equal(parse_ok("5M"), 5000000ull);
    assert_int_equal(parse_ok("7k"), 7000ull);
    assert_int_equal(parse_ok("1T"), 1000000000000ull);
}

static void plain_numbers_exponents_and_fractions(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("0"), 0);
    assert_int_equal(parse_ok("100"), 100);
    assert_int_equal(parse_ok("+1Ki"), 1024);
    assert_int_equal(parse_ok("1e9"), 1000000000ull);
    assert_int_equal(parse_ok("1E3"), 1000);
    assert_int_equal(parse_ok("1.5Gi"), 3ull << 29);
    assert_int_equal(parse_ok("0.5Ki"), 512);
    assert_int_equal(parse_ok("2.5e3"), 2500);
    assert_int_equal(parse_ok("250e-1"), 25);
}

static void unknown_unit_names_the_unit_and_the_choices(void **state)
{
    (void)state;
    const char *m = parse_err("8Gb");
    assert_non_null(strstr(m, "vram-limit \"8Gb\""));
    assert_non_null(strstr(m, "unknown unit \"Gb\""));
    assert_non_null(strstr(m, "Gi"));
    assert_non_null(strstr(parse_err("8 Gi"), "unknown unit"));
    assert_non_null(strstr(parse_err("8gi"), "unknown unit"));
}

static void bad_numbers_are_refused(void **state)
{
    (void)state;
    assert_non_null(strstr(parse_err(""), "empty"));
    assert_non_null(strstr(parse_err("-1Gi"), "negative"));
    assert_non_null(strstr(parse_err("Gi"), "number"));
    assert_non_null(strstr(parse_err("."), "number"));
    assert_non_null(strstr(parse_err("+.Gi"), "number"));
    assert_non_null(strstr(parse_err("1.2.3"), "decimal point"));
    assert_non_null(strstr(parse_err("0.5"), "whole number"));
    assert_non_null(strstr(parse_err("100m"), "unknown unit")); /* milli-bytes make no sense */
    assert_non_null(strstr(parse_err("1e-3"), "whole number"));
    assert_non_null(strstr(parse_err("1e"), "unknown unit"));
}

static void values_beyond_64_bits_are_out_of_range(void **state)
{
    (void)state;
    uint64_t v;
    gp_err err;
    assert_int_equal(gp_quantity_parse_bytes("17Ei", NULL, &v, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    assert_int_equal(gp_quantity_parse_bytes("18446744073709551616", NULL, &v, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    assert_int_equal(gp_quantity_parse_bytes("1e40", NULL, &v, &err), -1);
    assert_int_equal(gp_quantity_parse_bytes("123456789012345678901234567890123456789", NULL, &v, &err), -1);
    assert_int_equal(parse_ok("18446744073709551615"), UINT64_MAX);
}

static void null_input_is_an_error_not_a_crash(void **state)
{
    (void)state;
    uint64_t v;
    gp_err err;
    assert_int_equal(gp_quantity_parse_bytes(NULL, "x", &v, &err), -1);
    assert_int_equal(gp_quantity_parse_bytes("1Gi", NULL, &v, NULL), 0); /* a NULL gp_err is allowed */
}

static void formatting_picks_the_largest_exact_suffix(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(gp_quantity_format_bytes(8ull << 30, b, sizeof b), "8Gi");
    assert_string_equal(gp_quantity_format_bytes(1536ull << 20, b, sizeof b), "1536Mi");
    assert_string_equal(gp_quantity_format_bytes(1000, b, sizeof b), "1000");
    assert_string_equal(gp_quantity_format_bytes(0, b, sizeof b), "0");
    assert_string_equal(gp_bytes_human(3ull << 29, b, sizeof b), "1.5 GiB");
    assert_string_equal(gp_bytes_human(100, b, sizeof b), "100 B");
    assert_string_equal(gp_bytes_human(512ull << 20, b, sizeof b), "512 MiB");
}

static void format_then_parse_round_trips(void **state)
{
    (void)state;
    uint64_t samples[] = {0, 1, 1023, 1024, 4096, 3ull << 29, 81559ull << 20, UINT64_MAX, 1ull << 63};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char b[32];
        assert_int_equal(parse_ok(gp_quantity_format_bytes(samples[i], b, sizeof b)), samples[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(binary_suffixes_are_powers_of_1024),
        cmocka_unit_test(decimal_suffixes_are_powers_of_1000),
        cmocka_unit_test(plain_numbers_exponents_and_fractions),
        cmocka_unit_test(unknown_unit_names_the_unit_and_the_choices),
        cmocka_unit_test(bad_numbers_are_refused),
        cmocka_unit_test(values_beyond_64_bits_are_out_of_range),
        cmocka_unit_test(null_input_is_an_error_not_a_crash),
        cmocka_unit_test(formatting_picks_the_largest_exact_suffix),
        cmocka_unit_test(format_then_parse_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

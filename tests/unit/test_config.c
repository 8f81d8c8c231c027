/* test_config.c - YAML configuration: flattening to dotted keys, flags on top, typed getters, the YAML
 * features that are refused, and errors that name the file, the line and the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"

static void parse_ok(gp_config *c, const char *yaml)
{
    gp_err err = {0};
    if (gp_config_parse(c, yaml, strlen(yaml), "agent.yaml", &err) != 0)
        fail_msg("should parse: %s\n---\n%s", err.msg, yaml);
}

/* Parses text that must be refused; returns the message (static) and checks nothing was set. */
static const char *parse_err(const char *yaml)
{
    static gp_err err;
    memset(&err, 0, sizeof err);
    gp_config c = {0};
    assert_int_equal(gp_config_set(&c, "before", "1", "--before", &err), 0);
    if (gp_config_parse(&c, yaml, strlen(yaml), "agent.yaml", &err) == 0)
        fail_msg("should be refused:\n%s", yaml);
    assert_true(err.code != GP_OK);
    assert_int_equal(c.n, 1); /* a refused file changes nothing */
    assert_string_equal(gp_config_get(&c, "before"), "1");
    gp_config_free(&c);
    return err.msg;
}

static void assert_has(const char *msg, const char *part)
{
    if (strstr(msg, part) == NULL)
        fail_msg("message \"%s\" does not contain \"%s\"", msg, part);
}

static void nested_mappings_flatten_to_dotted_keys(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "api:\n"
                 "  unix: /run/gpupool/agent.sock\n"
                 "  tcp: \":9001\"\n"
                 "  tls:\n"
                 "    cert: /etc/cert.pem\n"
                 "node: gpu-host-1\n"
                 "metrics.interval: 10s\n");
    assert_int_equal(c.n, 5);
    assert_string_equal(gp_config_get(&c, "api.unix"), "/run/gpupool/agent.sock");
    assert_string_equal(gp_config_get(&c, "api.tcp"), ":9001");
    assert_string_equal(gp_config_get(&c, "api.tls.cert"), "/etc/cert.pem");
    assert_string_equal(gp_config_get(&c, "node"), "gpu-host-1");
    assert_string_equal(gp_config_get(&c, "metrics.interval"), "10s");
    assert_null(gp_config_get(&c, "api"));
    gp_config_free(&c);
}

static void flow_style_and_block_style_are_the_same_keys(void **state)
{
    (void)state;
    gp_config a = {0}, b = {0};
    parse_ok(&a, "api: {tcp: \":9001\", unix: /x.sock}\n");
    parse_ok(&b, "api.tcp: \":9001\"\napi.unix: /x.sock\n");
    assert_string_equal(gp_config_get(&a, "api.tcp"), gp_config_get(&b, "api.tcp"));
    assert_string_equal(gp_config_get(&a, "api.unix"), gp_config_get(&b, "api.unix"));
    gp_config_free(&a);
    gp_config_free(&b);
}

static void sequences_flatten_to_indexed_keys(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "gpus:\n"
                 "  - GPU-0\n"
                 "  - GPU-1\n"
                 "pools:\n"
                 "  - name: a\n"
                 "    tflops: 100\n"
                 "  - name: b\n"
                 "matrix: [[1, 2], [3]]\n");
    assert_string_equal(gp_config_get(&c, "gpus[0]"), "GPU-0");
    assert_string_equal(gp_config_get(&c, "gpus[1]"), "GPU-1");
    assert_null(gp_config_get(&c, "gpus[2]"));
    assert_string_equal(gp_config_get(&c, "pools[0].name"), "a");
    assert_string_equal(gp_config_get(&c, "pools[0].tflops"), "100");
    assert_string_equal(gp_config_get(&c, "pools[1].name"), "b");
    assert_string_equal(gp_config_get(&c, "matrix[0][1]"), "2");
    assert_string_equal(gp_config_get(&c, "matrix[1][0]"), "3");
    gp_config_free(&c);
}

static void where_names_the_file_and_line_of_each_key(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "# a comment\n"
                 "a: 1\n"
                 "b:\n"
                 "  c: 2\n"
                 "list:\n"
                 "  - x\n"
                 "  - y\n");
    for (size_t i = 0; i < c.n; i++) {
        const char *want = !strcmp(c.kv[i].key, "a")         ? "agent.yaml:2"
                           : !strcmp(c.kv[i].key, "b.c")     ? "agent.yaml:4"
                           : !strcmp(c.kv[i].key, "list[0]") ? "agent.yaml:6"
                                                             : "agent.yaml:7";
        assert_string_equal(c.kv[i].where, want);
    }
    gp_config_free(&c);
}

static void flags_override_the_file_and_the_last_set_wins(void **state)
{
    (void)state;
    gp_config c = {0};
    gp_err err = {0};
    parse_ok(&c, "api:\n  tcp: \":9001\"\nnode: n1\n");
    assert_int_equal(gp_config_set(&c, "api.tcp", ":9100", "--api-tcp", &err), 0);
    assert_int_equal(gp_config_set(&c, "api.tcp", ":9200", "--api-tcp", &err), 0);
    assert_int_equal(gp_config_set(&c, "new.key", "v", "--new-key", &err), 0);
    assert_string_equal(gp_config_get(&c, "api.tcp"), ":9200");
    assert_string_equal(gp_config_get(&c, "node"), "n1");
    assert_string_equal(gp_config_get(&c, "new.key"), "v");
    assert_int_equal(c.n, 3);
    uint64_t port = 0;
    assert_int_equal(gp_config_set(&c, "port", "70000", "--port", &err), 0);
    assert_int_equal(gp_config_u64(&c, "port", 1, 65535, &port, &err), -1);
    assert_has(err.msg, "--port: port: 70000 is out of range [1, 65535]");
    assert_int_equal(gp_config_set(&c, "", "v", "--x", &err), -1);
    gp_config_free(&c);
}

static void a_second_file_replaces_keys_of_the_first(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "a: 1\nb: 2\n");
    parse_ok(&c, "b: 3\nc: 4\n");
    assert_string_equal(gp_config_get(&c, "a"), "1");
    assert_string_equal(gp_config_get(&c, "b"), "3");
    assert_string_equal(gp_config_get(&c, "c"), "4");
    assert_int_equal(c.n, 3);
    gp_config_free(&c);
}

static void unknown_keys_are_rejected_with_file_and_line(void **state)
{
    (void)state;
    static const char *const known[] = {"api.tcp",      "api.unix",       "gpus[]",
                                        "pools[].name", "pools[].tflops", NULL};
    gp_config c = {0};
    gp_err err = {0};
    parse_ok(&c, "api:\n  tcp: \":1\"\ngpus: [a, b]\npools:\n  - name: x\n    tflops: 1\n");
    assert_int_equal(gp_config_check(&c, known, &err), 0);
    gp_config_free(&c);

    parse_ok(&c, "api:\n  tcp: \":1\"\n  unxi: /s\n");
    assert_int_equal(gp_config_check(&c, known, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    assert_has(err.msg, "agent.yaml:3");
    assert_has(err.msg, "unknown option \"api.unxi\"");
    assert_has(err.msg, "did you mean \"api.unix\"");
    gp_config_free(&c);

    parse_ok(&c, "gpus:\n  x: 1\n"); /* a mapping where a list is expected */
    assert_int_equal(gp_config_check(&c, known, &err), -1);
    assert_has(err.msg, "\"gpus.x\"");
    gp_config_free(&c);

    parse_ok(&c, "completely: different\n");
    assert_int_equal(gp_config_check(&c, known, &err), -1);
    assert_has(err.msg, "unknown option \"completely\"");
    assert_null(strstr(err.msg, "did you mean"));
    gp_config_free(&c);
}

static void bools_accept_the_usual_spellings_and_name_a_bad_one(void **state)
{
    (void)state;
    gp_config c = {0};
    gp_err err = {0};
    parse_ok(&c, "a: true\nb: off\nc: YES\nd: 0\ne: maybe\nf:\n");
    bool v = false;
    assert_int_equal(gp_config_bool(&c, "a", &v, &err), 0);
    assert_true(v);
    assert_int_equal(gp_config_bool(&c, "b", &v, &err), 0);
    assert_false(v);
    assert_int_equal(gp_config_bool(&c, "c", &v, &err), 0);
    assert_true(v);
    assert_int_equal(gp_config_bool(&c, "d", &v, &err), 0);
    assert_false(v);
    v = true;
    assert_int_equal(gp_config_bool(&c, "e", &v, &err), -1);
    assert_true(v);
    assert_has(err.msg, "agent.yaml:5: e: \"maybe\" is not a boolean (use true or false)");
    assert_int_equal(gp_config_bool(&c, "f", &v, &err), -1);
    assert_has(err.msg, "agent.yaml:6: f has no value");
    assert_int_equal(gp_config_bool(&c, "missing", &v, &err), 0);
    assert_true(v);
    gp_config_free(&c);
}

static void numbers_and_bytes_are_checked(void **state)
{
    (void)state;
    gp_config c = {0};
    gp_err err = {0};
    parse_ok(&c, "n: 42\nneg: -1\nhuge: 99999999999999999999\nvram: 8Gi\nbad: 8Gb\n");
    uint64_t v = 7;
    assert_int_equal(gp_config_u64(&c, "n", 0, 100, &v, &err), 0);
    assert_int_equal(v, 42);
    assert_int_equal(gp_config_u64(&c, "neg", 0, 100, &v, &err), -1);
    assert_has(err.msg, "agent.yaml:2: neg: \"-1\" is not a whole number");
    assert_int_equal(gp_config_u64(&c, "huge", 0, UINT64_MAX, &v, &err), -1);
    assert_has(err.msg, "too large");
    assert_int_equal(v, 42);
    assert_int_equal(gp_config_bytes(&c, "vram", &v, &err), 0);
    assert_int_equal(v, 8ull << 30);
    assert_int_equal(gp_config_bytes(&c, "bad", &v, &err), -1);
    assert_has(err.msg, "agent.yaml:5");
    assert_has(err.msg, "bad \"8Gb\": unknown unit \"Gb\"");
    assert_int_equal(v, 8ull << 30);
    const char *s = "default";
    assert_int_equal(gp_config_str(&c, "absent", &s, &err), 0);
    assert_string_equal(s, "default");
    assert_int_equal(gp_config_str(&c, "vram", &s, &err), 0);
    assert_string_equal(s, "8Gi");
    gp_config_free(&c);
}

static void durations_parse_with_units_and_bad_ones_are_explained(void **state)
{
    (void)state;
    gp_err err = {0};
    uint64_t ms = 0;
    struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"250ms", 250},   {"2s", 2000},   {"1m", 60000}, {"1h", 3600000},
              {"30", 30000},    {"1.5s", 1500}, {"0.5", 500},  {"0", 0},
              {"1.25m", 75000}, {"0.001s", 1},  {".5s", 500},  {"1.000000000000h", 3600000}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (gp_duration_parse_ms(ok[i].s, "timeout", &ms, &err) != 0)
            fail_msg("\"%s\" should parse: %s", ok[i].s, err.msg);
        assert_int_equal(ms, ok[i].ms);
    }
    ms = 77;
    assert_int_equal(gp_duration_parse_ms("5x", "timeout", &ms, &err), -1);
    assert_has(err.msg, "timeout \"5x\": unknown unit \"x\" (use ms, s, m or h)");
    assert_int_equal(gp_duration_parse_ms("", "timeout", &ms, &err), -1);
    assert_has(err.msg, "empty duration");
    assert_int_equal(gp_duration_parse_ms("-1s", "timeout", &ms, &err), -1);
    assert_has(err.msg, "cannot be negative");
    assert_int_equal(gp_duration_parse_ms("0.5ms", "timeout", &ms, &err), -1);
    assert_has(err.msg, "finer than a millisecond");
    assert_int_equal(gp_duration_parse_ms("ms", "timeout", &ms, &err), -1);
    assert_has(err.msg, "expected a number with a unit");
    assert_int_equal(gp_duration_parse_ms("99999999999999999999h", "timeout", &ms, &err), -1);
    assert_has(err.msg, "too large");
    assert_int_equal(gp_duration_parse_ms("5 s", "timeout", &ms, &err), -1);
    assert_int_equal(ms, 77);

    gp_config c = {0};
    parse_ok(&c, "poll: 250ms\nbad: 10 minutes\n");
    assert_int_equal(gp_config_duration_ms(&c, "poll", &ms, &err), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(gp_config_duration_ms(&c, "bad", &ms, &err), -1);
    assert_has(err.msg, "agent.yaml:2: bad \"10 minutes\"");
    assert_int_equal(ms, 250);
    gp_config_free(&c);
}

static void aliases_anchors_and_tags_are_refused(void **state)
{
    (void)state;
    assert_has(parse_err("base: &b 1\nother: *b\n"), "agent.yaml:1: anchors (&b) are not supported");
    assert_has(parse_err("a: !!str 1\n"), "agent.yaml:1: tags (!!str) are not supported");
    assert_has(parse_err("a: !custom x\n"), "tags");
    assert_has(parse_err("a:\n  b: 1\nc: !!map {x: 1}\n"), "agent.yaml:3: tags");
    /* An alias is refused at its anchor already; one without an anchor is refused for itself. */
    assert_has(parse_err("a: 1\nb: *nothing\n"), "agent.yaml:2: aliases (*nothing) are not supported");
}

static void a_second_document_is_refused(void **state)
{
    (void)state;
    assert_has(parse_err("a: 1\n---\nb: 2\n"), "agent.yaml:2: a second document");
}

static void an_empty_file_is_an_empty_configuration(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "");
    assert_int_equal(c.n, 0);
    parse_ok(&c, "# only a comment\n\n");
    assert_int_equal(c.n, 0);
    parse_ok(&c, "---\n");
    assert_int_equal(c.n, 0);
    parse_ok(&c, "{}\n");
    assert_int_equal(c.n, 0);
    gp_config_free(&c);
}

static void the_root_must_be_a_mapping(void **state)
{
    (void)state;
    assert_has(parse_err("- a\n- b\n"), "must be a mapping of option names to values");
    assert_has(parse_err("just a string\n"), "must be a mapping");
    assert_has(parse_err("42\n"), "agent.yaml:1");
}

static void a_key_set_twice_is_refused_naming_both_lines(void **state)
{
    (void)state;
    const char *m = parse_err("api:\n  tcp: \":1\"\nnode: x\napi.tcp: \":2\"\n");
    assert_has(m, "agent.yaml:4");
    assert_has(m, "\"api.tcp\" is set again (it was set at agent.yaml:2)");
    assert_has(parse_err("a: 1\na: 2\n"), "agent.yaml:2: \"a\" is set again");
}

static void bad_keys_and_syntax_errors_say_where(void **state)
{
    (void)state;
    assert_has(parse_err("a: 1\n b: 2\n  c: [\n"), "agent.yaml:");
    assert_has(parse_err("a:\n\tb: 1\n"), "spaces, not tabs");
    assert_has(parse_err("? [a, b]\n: 1\n"), "a key must be a plain name");
    assert_has(parse_err("\"a b\": 1\n"), "cannot contain spaces");
    assert_has(parse_err("\"x[0]\": 1\n"), "brackets");
    assert_has(parse_err("\"a..b\": 1\n"), "dots separate names");
    assert_has(parse_err("a: \"x\\0y\"\n"), "NUL");
    assert_has(parse_err("a: \"unterminated\n"), "agent.yaml:");
}

static void deep_nesting_is_refused(void **state)
{
    (void)state;
    char yaml[2048] = "";
    for (int i = 0; i < 100; i++)
        strcat(yaml, "{a: ");
    strcat(yaml, "1");
    for (int i = 0; i < 100; i++)
        strcat(yaml, "}");
    assert_has(parse_err(yaml), "nested deeper than");
}

static void a_null_value_is_kept_empty(void **state)
{
    (void)state;
    gp_config c = {0};
    parse_ok(&c, "a:\nb: ~\nc: null\nd: \"null\"\ne: ''\n");
    assert_string_equal(gp_config_get(&c, "a"), "");
    assert_string_equal(gp_config_get(&c, "b"), "");
    assert_string_equal(gp_config_get(&c, "c"), "");
    assert_string_equal(gp_config_get(&c, "d"), "null"); /* quoted: the text itself */
    assert_string_equal(gp_config_get(&c, "e"), "");
    gp_config_free(&c);
}

static void load_reads_a_file_and_reports_missing_ones(void **state)
{
    (void)state;
    char path[] = "/tmp/gpupool-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *yaml = "node: n1\nlimits:\n  vram: 4Gi\n  bogus: 1\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    gp_config c = {0};
    gp_err err = {0};
    assert_int_equal(gp_config_load(&c, path, &err), 0);
    uint64_t v = 0;
    assert_int_equal(gp_config_bytes(&c, "limits.vram", &v, &err), 0);
    assert_int_equal(v, 4ull << 30);
    static const char *const known[] = {"node", "limits.vram", NULL};
    assert_int_equal(gp_config_check(&c, known, &err), -1);
    char want[128];
    snprintf(want, sizeof want, "%s:4: unknown option \"limits.bogus\"", path);
    assert_has(err.msg, want);
    gp_config_free(&c);
    unlink(path);
    assert_int_equal(gp_config_load(&c, path, &err), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_has(err.msg, path);
    assert_int_equal(gp_config_load(&c, "/tmp", &err), -1);
    assert_has(err.msg, "not a regular file");
}

static void a_long_file_name_keeps_the_line_number(void **state)
{
    (void)state;
    char name[400];
    memset(name, 'd', sizeof name);
    memcpy(name + sizeof name - 12, "/agent.yaml", 12);
    gp_config c = {0};
    gp_err err = {0};
    assert_int_equal(gp_config_parse(&c, "a: 1\nb: 2\n", 10, name, &err), 0);
    const char *w = c.kv[1].where;
    assert_true(strlen(w) < sizeof c.kv[1].where);
    assert_non_null(strstr(w, "/agent.yaml:2"));
    assert_int_equal(strncmp(w, "...", 3), 0);
    gp_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nested_mappings_flatten_to_dotted_keys),
        cmocka_unit_test(flow_style_and_block_style_are_the_same_keys),
        cmocka_unit_test(sequences_flatten_to_indexed_keys),
        cmocka_unit_test(where_names_the_file_and_line_of_each_key),
        cmocka_unit_test(flags_override_the_file_and_the_last_set_wins),
        cmocka_unit_test(a_second_file_replaces_keys_of_the_first),
        cmocka_unit_test(unknown_keys_are_rejected_with_file_and_line),
        cmocka_unit_test(bools_accept_the_usual_spellings_and_name_a_bad_one),
        cmocka_unit_test(numbers_and_bytes_are_checked),
        cmocka_unit_test(durations_parse_with_units_and_bad_ones_are_explained),
        cmocka_unit_test(aliases_anchors_and_tags_are_refused),
        cmocka_unit_test(a_second_document_is_refused),
        cmocka_unit_test(an_empty_file_is_an_empty_configuration),
        cmocka_unit_test(the_root_must_be_a_mapping),
        cmocka_unit_test(a_key_set_twice_is_refused_naming_both_lines),
        cmocka_unit_test(bad_keys_and_syntax_errors_say_where),
        cmocka_unit_test(deep_nesting_is_refused),
        cmocka_unit_test(a_null_value_is_kept_empty),
        cmocka_unit_test(load_reads_a_file_and_reports_missing_ones),
        cmocka_unit_test(a_long_file_name_keeps_the_line_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

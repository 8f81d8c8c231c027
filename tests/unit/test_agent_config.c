/* test_agent_config.c - the agent's configuration: the example in deploy/ is valid and means what it says;
 * a misspelt key or a bad value stops the start with a message naming it; flags override the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agent.h"

static void the_shipped_example_is_valid(void **state)
{
    (void)state;
    gp_config kv = {0};
    gp_err err = {0};
    if (gp_config_load(&kv, GP_SOURCE_DIR "/deploy/agent.yaml", &err) < 0)
        fail_msg("%s", err.msg);
    gp_agent_config c;
    gp_agent_config_defaults(&c);
    if (gp_agent_config_apply(&c, &kv, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.run_dir, "/run/gpupool");
    assert_string_equal(c.unix_path, "/run/gpupool/agent.sock");
    assert_string_equal(c.tcp_addr, "0.0.0.0:9401");
    assert_string_equal(c.token, "");
    assert_int_equal(c.nvml_mode, GP_NVML_AUTO);
    assert_int_equal(c.period_ms, 100);
    assert_int_equal(c.discovery_ms, 1000);
    assert_string_equal(c.vgpu_lib, "/usr/local/lib/libgpupool-vgpu.so");
    gp_config_free(&kv);
}

static void flags_override_the_file(void **state)
{
    (void)state;
    gp_config kv = {0};
    gp_err err = {0};
    const char *yaml = "api:\n  tcp: 127.0.0.1:1\narbiter:\n  period: 250ms\n";
    assert_int_equal(gp_config_parse(&kv, yaml, strlen(yaml), "agent.yaml", &err), 0);
    assert_int_equal(gp_config_set(&kv, "arbiter.period", "50ms", "--period", &err), 0);
    assert_int_equal(gp_config_set(&kv, "gpus.mode", "sim", "--sim", &err), 0);
    gp_agent_config c;
    gp_agent_config_defaults(&c);
    assert_int_equal(gp_agent_config_apply(&c, &kv, &err), 0);
    assert_int_equal(c.period_ms, 50);
    assert_int_equal(c.nvml_mode, GP_NVML_SIM);
    assert_string_equal(c.tcp_addr, "127.0.0.1:1");
    gp_config_free(&kv);
}

static void bad_configs_are_refused_with_the_key_named(void **state)
{
    (void)state;
    struct {
        const char *yaml, *words;
    } cases[] = {
        {"arbiter:\n  perod: 100ms\n", "arbiter.perod"},
        {"arbiter:\n  period: fast\n", "arbiter.period"},
        {"arbiter:\n  period: 1ms\n", "arbiter.period"},
        {"gpus:\n  mode: quantum\n", "gpus.mode"},
        {"log:\n  level: loud\n", "log.level"},
        {"api:\n  tls:\n    cert: /x.pem\n", "api.tls"},
        {"run_dir: [a, b]\n", "run_dir"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gp_config kv = {0};
        gp_err err = {0};
        gp_agent_config c;
        gp_agent_config_defaults(&c);
        int rc = gp_config_parse(&kv, cases[i].yaml, strlen(cases[i].yaml), "agent.yaml", &err);
        if (rc == 0)
            rc = gp_agent_config_apply(&c, &kv, &err);
        if (rc == 0 || strstr(err.msg, cases[i].words) == NULL)
            fail_msg("config %s: rc %d, message \"%s\" should name %s", cases[i].yaml, rc, err.msg,
                     cases[i].words);
        gp_config_free(&kv);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_shipped_example_is_valid),
        cmocka_unit_test(flags_override_the_file),
        cmocka_unit_test(bad_configs_are_refused_with_the_key_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

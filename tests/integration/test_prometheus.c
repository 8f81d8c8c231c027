/* test_prometheus.c - a real Prometheus (Debian's package) scrapes a real agent, and PromQL finds the
 * per-slot and per-GPU series with the values and labels the agent exports.
 *
 * Prometheus runs on a free loopback port with its own storage folder and a 1 s scrape interval; the test
 * asks its HTTP API (/api/v1/query) until the series appear (at most 30 s). Without the prometheus binary
 * the test fails with a message saying how to install it: it is part of `make test`'s dependencies.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/http.h"
#include "common/timeutil.h"
#include "harness.h"

static pid_t g_prom;

static void start_prometheus(const char *dir, int agent_port, int port)
{
    if (access("/usr/bin/prometheus", X_OK) != 0)
        fail_msg("/usr/bin/prometheus is missing: run scripts/install-deps.sh (Debian package prometheus)");
    char cfg[400];
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: gpupool-agent\n"
            "    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            agent_port);
    fclose(f);
    char cfg_arg[450], data_arg[450], listen_arg[100], log[400];
    snprintf(cfg_arg, sizeof cfg_arg, "--config.file=%s", cfg);
    snprintf(data_arg, sizeof data_arg, "--storage.tsdb.path=%s/data", dir);
    snprintf(listen_arg, sizeof listen_arg, "--web.listen-address=127.0.0.1:%d", port);
    snprintf(log, sizeof log, "%s/prometheus.log", dir);
    g_prom = fork();
    if (g_prom == 0) {
        if (freopen(log, "w", stderr) == NULL || freopen(log, "a", stdout) == NULL)
            _exit(126);
        execl("/usr/bin/prometheus", "prometheus", cfg_arg, data_arg, listen_arg, "--log.level=warn",
              (char *)NULL);
        _exit(127);
    }
}

/* The result vector of a PromQL query (caller decrefs), or NULL while Prometheus has none. */
static json_t *query(int port, const char *promql)
{
    char url[1024], enc[800];
    size_t n = 0;
    for (const char *p = promql; *p && n + 4 < sizeof enc; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
            c == '.')
            enc[n++] = (char)c;
        else
            n += (size_t)snprintf(enc + n, sizeof enc - n, "%%%02X", c);
    }
    enc[n] = '\0';
    snprintf(url, sizeof url, "/api/v1/query?query=%s", enc);
    json_t *o = NULL;
    long st = h_api_tcp(port, "GET", url, NULL, NULL, &o, NULL);
    if (st != 200 || o == NULL) {
        json_decref(o);
        return NULL;
    }
    json_t *res = json_object_get(json_object_get(o, "data"), "result");
    if (json_array_size(res) == 0) {
        json_decref(o);
        return NULL;
    }
    json_incref(res);
    json_decref(o);
    return res;
}

static json_t *wait_for(int port, const char *promql)
{
    for (int i = 0; i < 300; i++) {
        json_t *r = query(port, promql);
        if (r)
            return r;
        int st;
        if (waitpid(g_prom, &st, WNOHANG) == g_prom)
            fail_msg("prometheus exited (status %#x); see its log", st);
        gp_sleep_ns(100000000);
    }
    fail_msg("no result for %s within 30 s", promql);
    return NULL;
}

static void prometheus_scrapes_the_agent_and_promql_finds_slot_series(void **state)
{
    (void)state;
    char run[256], pdir[256];
    h_sim_host("2xH100-SXM-80GB");
    h_tmpdir(run, sizeof run, "prom-agent");
    h_tmpdir(pdir, sizeof pdir, "prom");
    h_agent a;
    const char *extra[] = {"--listen-tcp", "127.0.0.1:0", NULL};
    h_agent_start(&a, run, extra);
    assert_true(a.tcp_port > 0);
    json_t *o = NULL;
    assert_int_equal(h_api(&a, "POST", "/v1/slots",
                           "{\"id\":\"p1\",\"workload\":\"llm-serve\",\"namespace\":\"prod\",\"gpus\":[1],"
                           "\"vram\":\"4Gi\",\"tflops_request\":150,\"tflops_limit\":300}",
                           &o),
                     201);
    json_decref(o);
    int port = h_free_port();
    start_prometheus(pdir, a.tcp_port, port);

    json_t *r = wait_for(port, "gpupool_slot_vram_limit_bytes{workload=\"llm-serve\"}");
    assert_int_equal(json_array_size(r), 1);
    json_t *m = json_object_get(json_array_get(r, 0), "metric");
    assert_string_equal(json_string_value(json_object_get(m, "namespace")), "prod");
    assert_string_equal(json_string_value(json_object_get(m, "slot")), "p1");
    assert_string_equal(json_string_value(json_object_get(m, "gpu")), "1");
    assert_string_equal(json_string_value(json_object_get(m, "modelName")), "NVIDIA H100 80GB HBM3");
    assert_int_equal(strncmp(json_string_value(json_object_get(m, "UUID")), "GPU-", 4), 0);
    assert_string_equal(json_string_value(json_object_get(m, "job")), "gpupool-agent");
    const char *v = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
    assert_string_equal(v, "4294967296");
    json_decref(r);

    r = wait_for(port, "sum by (namespace) (gpupool_slot_tflops_limit)");
    v = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
    double limit = atof(v);
    assert_true(limit > 299.9 && limit < 300.1);
    json_decref(r);

    r = wait_for(port, "count(DCGM_FI_DEV_FB_FREE)");
    v = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
    assert_string_equal(v, "2");
    json_decref(r);

    kill(g_prom, SIGTERM);
    waitpid(g_prom, NULL, 0);
    g_prom = 0;
    h_agent_kill(&a, SIGTERM);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' \"$GPUPOOL_SIM_STATE\"", run, pdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not clean up\n");
}

static int cleanup(void **state)
{
    (void)state;
    if (g_prom > 0) {
        kill(g_prom, SIGKILL);
        waitpid(g_prom, NULL, 0);
    }
    h_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(prometheus_scrapes_the_agent_and_promql_finds_slot_series, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

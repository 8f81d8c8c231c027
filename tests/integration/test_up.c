/* test_up.c - the whole product on one machine: `gpupool up --sim` (a controller and an agent in one
 * process), then `gpupool run` gives commands fractional vGPUs through the controller, the agent and the
 * vGPU library, passes their exit status through and releases what they held; `gpupool get` shows them.
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

#include "common/timeutil.h"
#include "harness.h"

#define GIB (1024ull * 1024 * 1024)

static h_agent g_up;
static char g_dir[256], g_server[320];

static int setup(void **state)
{
    (void)state;
    h_sim_host("2xH100-SXM-80GB");
    h_tmpdir(g_dir, sizeof g_dir, "up");
    char sock[300], log[300];
    snprintf(sock, sizeof sock, "%s/controller.sock", g_dir);
    snprintf(log, sizeof log, "%s/up.log", g_dir);
    snprintf(g_server, sizeof g_server, "unix:%s", sock);
    const char *argv[] = {"gpupool",      "up",   "--sim",       "--dir", g_dir,
                          "--listen-tcp", "none", "--log-level", "info",  NULL};
    h_daemon_start(&g_up, argv, sock, log);
    /* the agent registers its node shortly after the controller answers */
    for (int i = 0; i < 100; i++) {
        json_t *o = NULL;
        h_api(&g_up, "GET", "/v1/gpus", NULL, &o);
        size_t n = json_array_size(json_object_get(o, "gpus"));
        json_decref(o);
        if (n == 2)
            return 0;
        gp_sleep_ns(100000000);
    }
    fail_msg("the agent of gpupool up did not register its 2 GPUs");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_agent_kill(&g_up, SIGTERM);
    h_cleanup();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' \"$GPUPOOL_SIM_STATE\"", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not clean up %s\n", g_dir);
    return 0;
}

/* Runs a shell command line with GPUPOOL_SERVER pointing at our gpupool up; returns its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    setenv("GPUPOOL_SERVER", g_server, 1);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static size_t workloads(void)
{
    json_t *o = NULL;
    assert_int_equal(h_api(&g_up, "GET", "/v1/workloads", NULL, &o), 200);
    size_t n = json_array_size(json_object_get(o, "workloads"));
    json_decref(o);
    return n;
}

static void run_passes_the_exit_status_through_and_releases_the_workload(void **state)
{
    (void)state;
    assert_int_equal(
        sh("%s run --percent 10 --vram 1Gi -- %s --seconds 0.2 --exit 7 >/dev/null", GPUPOOL_BIN, GP_BUSY),
        7);
    assert_int_equal(workloads(), 0);
    assert_int_equal(sh("%s run --percent 10 --vram 1Gi -- %s --seconds 0.2 --raise %d >/dev/null",
                        GPUPOOL_BIN, GP_BUSY, SIGTERM),
                     128 + SIGTERM);
    assert_int_equal(workloads(), 0);
    assert_int_equal(sh("%s run --percent 10 --vram 1Gi -- /nonexistent/program 2>/dev/null", GPUPOOL_BIN),
                     127);
    assert_int_equal(workloads(), 0);
}

static void run_gives_the_command_its_fraction_of_a_gpu(void **state)
{
    (void)state;
    char out[300], cmd[900];
    snprintf(out, sizeof out, "%s/busy.out", g_dir);
    /* in the background, so that `gpupool get` can look at it while it runs */
    snprintf(cmd, sizeof cmd,
             "%s run --name busy --namespace demo --percent 25 --vram 2Gi -- %s --mem --seconds 4 >'%s' &",
             GPUPOOL_BIN, GP_BUSY, out);
    assert_int_equal(sh("%s", cmd), 0);
    gp_sleep_ns(2500000000ull);
    char table[300];
    snprintf(table, sizeof table, "%s/get.out", g_dir);
    assert_int_equal(sh("%s get workloads > '%s'", GPUPOOL_BIN, table), 0);
    assert_int_equal(sh("grep -E '^demo +busy +Allocated .* yes ' '%s' >/dev/null", table), 0);
    assert_int_equal(sh("%s get workload busy -n demo -o json | grep -q '\"ready\": true'", GPUPOOL_BIN), 0);
    /* the live usage the pool reports is what the command gets (its limit), not more */
    json_t *w = NULL;
    assert_int_equal(h_api(&g_up, "GET", "/v1/workloads/demo/busy", NULL, &w), 200);
    json_t *used = json_object_get(json_object_get(json_object_get(w, "status"), "usage"), "used_percent");
    double u = json_number_value(json_array_get(used, 0));
    printf("the pool reports it using %.1f%% of its GPU (limit 25%%)\n", u);
    assert_true(u > 15 && u < 35);
    json_decref(w);
    /* wait for the run to end, then read what the command saw */
    for (int i = 0; i < 100 && workloads() > 0; i++)
        gp_sleep_ns(100000000);
    assert_int_equal(workloads(), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    unsigned long long free_b = 0, total = 0, t0 = 0, c0 = 0, t1 = 0, c1 = 0, t, c;
    char line[200];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "mem %llu %llu", &free_b, &total) == 2)
            continue;
        if (sscanf(line, "%llu %llu", &t, &c) == 2) {
            if (t0 == 0 && t > 0 && c > 0)
                t0 = t, c0 = c;
            t1 = t, c1 = c;
        }
    }
    fclose(f);
    assert_int_equal(total, 2 * GIB); /* cuMemGetInfo shows the vGPU */
    assert_true(t1 > t0 + 1000000000ull);
    double share = (double)(c1 - c0) * 2e6 / (double)(t1 - t0);
    printf("the command got %.3f of the GPU (asked for 0.25)\n", share);
    assert_true(share > 0.22 && share < 0.28);
}

/* GPU-over-IP through the pool: `gpupool run --remote` runs the command here on gpupool's client
 * libcuda.so.1, against the worker `gpupool up` runs, under the workload's slot (its VRAM limit holds there),
 * with the exit status passed through; the token of the workload is refused once it is released. */
static void run_remote_uses_a_vgpu_through_the_worker(void **state)
{
    (void)state;
    char out[300];
    snprintf(out, sizeof out, "%s/remote.out", g_dir);
    assert_int_equal(
        sh("GPUPOOL_CLIENT_LIB_DIR=%s %s run --remote --wait --name far --percent 25 --vram 2Gi -- sh -c "
           "'echo \"$GPUPOOL_REMOTE $GPUPOOL_REMOTE_TOKEN\"; exec %s --mem --seconds 1 --exit 7' "
           ">'%s'",
           GP_REMOTE_LIB_DIR, GPUPOOL_BIN, GP_BUSY, out),
        7);
    assert_int_equal(workloads(), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char line[300], addr[200] = "", token[64] = "";
    unsigned long long free_b = 0, total = 0, t, c, last = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "unix:%199s %63s", addr, token) == 2)
            continue;
        if (sscanf(line, "mem %llu %llu", &free_b, &total) == 2)
            continue;
        if (sscanf(line, "%llu %llu", &t, &c) == 2)
            last = c;
    }
    fclose(f);
    printf("remote: worker unix:%s, the vGPU has %llu bytes, %llu kernels completed\n", addr, total, last);
    assert_true(addr[0] != '\0' && strlen(token) == 32);
    assert_int_equal(total, 2 * GIB); /* the slot's limit, enforced on the GPU host */
    assert_true(last > 10);
    /* the workload is gone, and so is its token */
    char tokens[400];
    snprintf(tokens, sizeof tokens, "%s/worker-tokens", g_dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "grep -q '%s' '%s'", token, tokens);
    assert_int_not_equal(system(cmd), 0);
}

static void a_misfit_is_explained_and_nothing_runs(void **state)
{
    (void)state;
    char err[300];
    snprintf(err, sizeof err, "%s/err.out", g_dir);
    assert_int_equal(
        sh("%s run --percent 60 --gpus 3 --vram 1Gi -- sh -c 'echo ran' 2>'%s'", GPUPOOL_BIN, err), 1);
    assert_int_equal(sh("grep -q 'GPU' '%s' && ! grep -q ran '%s'", err, err), 0);
    assert_int_equal(sh("%s run --vram 1Gi --qos urgent -- true 2>'%s'", GPUPOOL_BIN, err), 1);
    assert_int_equal(sh("grep -q qos '%s'", err), 0);
    assert_int_equal(workloads(), 0);
}

static void get_lists_the_pool_for_people_and_programs(void **state)
{
    (void)state;
    char out[300];
    snprintf(out, sizeof out, "%s/gpus.json", g_dir);
    assert_int_equal(sh("%s get gpus -o json > '%s'", GPUPOOL_BIN, out), 0);
    json_t *o = json_load_file(out, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_array_size(json_object_get(o, "gpus")), 2);
    json_decref(o);
    assert_int_equal(sh("%s get nodes | grep -q Ready", GPUPOOL_BIN), 0);
    assert_int_equal(sh("%s get pools -o yaml | grep -q 'name: \"default\"'", GPUPOOL_BIN), 0);
    assert_int_equal(sh("%s get widgets 2>/dev/null", GPUPOOL_BIN), 2);
    assert_int_equal(sh("%s describe workload nothing 2>/dev/null", GPUPOOL_BIN), 1);

    /* describe shows one in full, delete releases it, version says what this is */
    json_t *w = NULL;
    assert_int_equal(h_api(&g_up, "POST", "/v1/workloads",
                           "{\"name\":\"held\",\"namespace\":\"ops\",\"percent_request\":20,"
                           "\"vram_request\":\"1Gi\"}",
                           &w),
                     201);
    json_decref(w);
    snprintf(out, sizeof out, "%s/describe.out", g_dir);
    assert_int_equal(sh("%s describe workload held -n ops > '%s'", GPUPOOL_BIN, out), 0);
    assert_int_equal(sh("grep -q 'held' '%s' && grep -qi 'node' '%s'", out, out), 0);
    assert_int_equal(workloads(), 1);
    assert_int_equal(sh("%s delete workload held -n ops >/dev/null", GPUPOOL_BIN), 0);
    assert_int_equal(workloads(), 0);
    assert_int_equal(sh("%s delete workload held -n ops 2>/dev/null", GPUPOOL_BIN), 1);
    assert_int_equal(sh("%s version | grep -q gpupool", GPUPOOL_BIN), 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_passes_the_exit_status_through_and_releases_the_workload),
        cmocka_unit_test(run_gives_the_command_its_fraction_of_a_gpu),
        cmocka_unit_test(run_remote_uses_a_vgpu_through_the_worker),
        cmocka_unit_test(a_misfit_is_explained_and_nothing_runs),
        cmocka_unit_test(get_lists_the_pool_for_people_and_programs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_agent.c - the gpupool agent as a real process on two simulated H100s: its API, slot life cycle and
 * validation, health, metrics, compute arbitration between real workloads, and restarts (SIGTERM and
 * SIGKILL) that leave workloads untouched.
 *
 * Shares are measured by the workloads themselves (kernels completed x kernel time), not by the agent.
 * Windows are generous and bounds loose (a few percentage points): the CI machine is shared; exact
 * figures are in bench/.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/timeutil.h"
#include "harness.h"

#define GIB (1024ull * 1024 * 1024)

static h_agent g_agent;
static char g_run[256];

static int setup(void **state)
{
    (void)state;
    h_sim_host("2xH100-SXM-80GB");
    h_tmpdir(g_run, sizeof g_run, "agent");
    h_agent_start(&g_agent, g_run, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_agent_kill(&g_agent, SIGTERM);
    h_cleanup();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' \"$GPUPOOL_SIM_STATE\"", g_run);
    if (system(cmd) != 0)
        fprintf(stderr, "could not clean up %s\n", g_run);
    return 0;
}

/* Removes every slot set (force): each test starts from an empty agent. */
static int reset(void **state)
{
    (void)state;
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "GET", "/v1/slots", NULL, &o), 200);
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(o, "slots"), i, v)
    {
        char path[200];
        snprintf(path, sizeof path, "/v1/slots/%s?force=true", json_string_value(json_object_get(v, "id")));
        assert_int_equal(h_api(&g_agent, "DELETE", path, NULL, NULL), 204);
    }
    json_decref(o);
    return 0;
}

/* A test that failed half-way leaves its workloads running, or the agent down: the next one must not pay. */
static int after_each(void **state)
{
    (void)state;
    h_work_kill_all();
    if (g_agent.pid <= 0)
        h_agent_start(&g_agent, g_run, NULL);
    return 0;
}

/* Creates a set; returns its JSON (caller decrefs). */
static json_t *create(const char *body)
{
    json_t *o = NULL;
    long st = h_api(&g_agent, "POST", "/v1/slots", body, &o);
    if (st != 201)
        fail_msg("POST /v1/slots %s -> %ld %s", body, st, o ? json_dumps(o, 0) : "");
    return o;
}

static const char *detail(json_t *o)
{
    const char *d = json_string_value(json_object_get(o, "detail"));
    return d ? d : "";
}

static void expect_problem(const char *method, const char *path, const char *body, long status,
                           const char *words)
{
    json_t *o = NULL;
    long st = h_api(&g_agent, method, path, body, &o);
    if (st != status || o == NULL || strstr(detail(o), words) == NULL)
        fail_msg("%s %s %s -> %ld \"%s\"; expected %ld mentioning \"%s\"", method, path, body ? body : "", st,
                 detail(o), status, words);
    assert_int_equal(json_integer_value(json_object_get(o, "status")), status);
    json_decref(o);
}

static size_t count_sets(void)
{
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "GET", "/v1/slots", NULL, &o), 200);
    size_t n = json_array_size(json_object_get(o, "slots"));
    json_decref(o);
    return n;
}

/* ---- API ---------------------------------------------------------------------------------------------- */

static void gpus_are_discovered_with_model_and_health(void **state)
{
    (void)state;
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "GET", "/v1/gpus", NULL, &o), 200);
    json_t *gpus = json_object_get(o, "gpus");
    assert_int_equal(json_array_size(gpus), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *g = json_array_get(gpus, i);
        assert_int_equal(json_integer_value(json_object_get(g, "index")), (json_int_t)i);
        assert_string_equal(json_string_value(json_object_get(g, "model")), "H100-SXM-80GB");
        assert_true(json_real_value(json_object_get(g, "tflops")) > 900);
        assert_true(json_integer_value(json_object_get(json_object_get(g, "memory"), "total")) >
                    79 * (json_int_t)GIB);
        assert_true(json_is_true(json_object_get(json_object_get(g, "health"), "healthy")));
        assert_int_equal(strncmp(json_string_value(json_object_get(g, "uuid")), "GPU-", 4), 0);
    }
    /* by UUID too */
    char path[200];
    snprintf(path, sizeof path, "/v1/gpus/%s",
             json_string_value(json_object_get(json_array_get(gpus, 1), "uuid")));
    json_t *one = NULL;
    assert_int_equal(h_api(&g_agent, "GET", path, NULL, &one), 200);
    assert_int_equal(json_integer_value(json_object_get(one, "index")), 1);
    json_decref(one);
    json_decref(o);
    expect_problem("GET", "/v1/gpus/7", NULL, 404, "no GPU");
}

static void slot_set_life_cycle(void **state)
{
    (void)state;
    json_t *s = create("{\"id\":\"train-1\",\"workload\":\"train\",\"namespace\":\"ml\",\"gpus\":[0],"
                       "\"vram\":\"4Gi\",\"percent_request\":20,\"percent_limit\":50,\"qos\":\"high\"}");
    assert_string_equal(json_string_value(json_object_get(s, "id")), "train-1");
    assert_string_equal(json_string_value(json_object_get(s, "qos")), "high");
    json_t *env = json_object_get(s, "env");
    const char *dir = json_string_value(json_object_get(env, "GPUPOOL_SLOT_DIR"));
    assert_non_null(dir);
    assert_non_null(strstr(json_string_value(json_object_get(env, "LD_PRELOAD")), "libgpupool-vgpu.so"));
    assert_non_null(json_object_get(env, "LD_LIBRARY_PATH")); /* simulated GPUs: the workload needs the sim */
    char path[600];
    snprintf(path, sizeof path, "%s/gpu0.slot", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    json_t *part = json_array_get(json_object_get(s, "gpus"), 0);
    json_t *comp = json_object_get(part, "compute");
    assert_true(json_real_value(json_object_get(comp, "request_percent")) == 20);
    assert_true(json_real_value(json_object_get(comp, "limit_percent")) == 50);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(part, "vram"), "limit")), 4 * GIB);
    json_decref(s);

    /* change it */
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "PATCH", "/v1/slots/train-1",
                           "{\"vram\":\"6Gi\",\"percent_limit\":80,\"frozen\":true}", &o),
                     200);
    part = json_array_get(json_object_get(o, "gpus"), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(part, "vram"), "limit")), 6 * GIB);
    assert_true(json_real_value(json_object_get(json_object_get(part, "compute"), "limit_percent")) == 80);
    assert_true(json_real_value(json_object_get(json_object_get(part, "compute"), "request_percent")) == 20);
    assert_true(json_is_true(json_object_get(o, "frozen")));
    json_decref(o);
    assert_int_equal(h_api(&g_agent, "PATCH", "/v1/slots/train-1", "{\"frozen\":false}", &o), 200);
    assert_true(json_is_false(json_object_get(o, "frozen")));
    json_decref(o);

    /* a generated id */
    s = create("{\"workload\":\"Serve Model!\",\"gpus\":[\"1\"],\"vram\":1073741824}");
    const char *id = json_string_value(json_object_get(s, "id"));
    assert_int_equal(strncmp(id, "serve-model-", 12), 0);
    assert_string_equal(json_string_value(json_object_get(s, "namespace")), "default");
    /* no compute given: no guarantee, no limit */
    comp = json_object_get(json_array_get(json_object_get(s, "gpus"), 0), "compute");
    assert_true(json_real_value(json_object_get(comp, "request_percent")) == 0);
    assert_true(json_real_value(json_object_get(comp, "limit_percent")) == 100);
    char del[200];
    snprintf(del, sizeof del, "/v1/slots/%s", id);
    json_decref(s);
    assert_int_equal(count_sets(), 2);
    assert_int_equal(h_api(&g_agent, "DELETE", del, NULL, NULL), 204);
    assert_int_equal(h_api(&g_agent, "DELETE", "/v1/slots/train-1", NULL, NULL), 204);
    assert_int_equal(stat(path, &st), -1); /* the files are gone */
    assert_int_equal(count_sets(), 0);
    expect_problem("GET", "/v1/slots/train-1", NULL, 404, "no slot set");
}

static void bad_requests_are_refused_and_change_nothing(void **state)
{
    (void)state;
    struct {
        const char *body;
        long status;
        const char *words;
    } cases[] = {
        {"{\"gpus\":[0],\"vram\":\"1Gi\"}", 400, "workload"},
        {"{\"workload\":\"w\",\"gpus\":[0]}", 400, "vram"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"8Gb\"}", 400, "Gb"},
        {"{\"workload\":\"w\",\"gpus\":[],\"vram\":\"1Gi\"}", 400, "gpus"},
        {"{\"workload\":\"w\",\"gpus\":[5],\"vram\":\"1Gi\"}", 422, "no GPU"},
        {"{\"workload\":\"w\",\"gpus\":[0,0],\"vram\":\"1Gi\"}", 400, "twice"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"qos\":\"urgent\"}", 400, "qos"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"percent_limit\":120}", 400, "percent_limit"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"percent_request\":60,\"percent_limit\":50}",
         400, "above the limit"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"percent_limit\":50,\"tflops_limit\":100}", 400,
         "not both"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"tflops_limit\":5000}", 400, "TFLOPS"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"100Gi\"}", 409, "VRAM left"},
        {"{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\",\"colour\":\"red\"}", 400, "colour"},
        {"{\"id\":\"Bad Id\",\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\"}", 400, "id"},
        {"[1,2]", 400, "object"},
        {"{\"workload\":", 400, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_problem("POST", "/v1/slots", cases[i].body, cases[i].status, cases[i].words);
    assert_int_equal(count_sets(), 0);

    /* guarantees are never oversold */
    json_decref(
        create("{\"id\":\"a\",\"workload\":\"a\",\"gpus\":[0],\"vram\":\"60Gi\",\"percent_request\":70}"));
    expect_problem("POST", "/v1/slots",
                   "{\"workload\":\"b\",\"gpus\":[0],\"vram\":\"1Gi\",\"percent_request\":40}", 409,
                   "compute left");
    expect_problem("POST", "/v1/slots", "{\"workload\":\"b\",\"gpus\":[0],\"vram\":\"30Gi\"}", 409,
                   "VRAM left");
    expect_problem("POST", "/v1/slots", "{\"id\":\"a\",\"workload\":\"b\",\"gpus\":[1],\"vram\":\"1Gi\"}",
                   409, "exists");
    expect_problem("PATCH", "/v1/slots/a", "{\"percent_request\":101}", 400, "percent_request");
    expect_problem("PATCH", "/v1/slots/a", "{\"frozen\":\"yes\"}", 400, "frozen");
    expect_problem("PATCH", "/v1/slots/nope", "{\"frozen\":true}", 404, "no slot set");
    expect_problem("DELETE", "/v1/slots/a?force=maybe", NULL, 400, "force");
    expect_problem("PUT", "/v1/slots/a", "{}", 405, "allowed");
    expect_problem("GET", "/v1/nothing", NULL, 404, "no such resource");
    assert_int_equal(count_sets(), 1);
}

static void unhealthy_gpu_takes_no_new_work(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "%s sim inject-xid 1 79 >/dev/null", GPUPOOL_BIN);
    assert_int_equal(system(cmd), 0);
    json_t *g = NULL;
    for (int i = 0; i < 50; i++) { /* discovery runs every second */
        json_decref(g);
        assert_int_equal(h_api(&g_agent, "GET", "/v1/gpus/1", NULL, &g), 200);
        if (json_is_false(json_object_get(json_object_get(g, "health"), "healthy")))
            break;
        gp_sleep_ns(100000000);
    }
    json_t *h = json_object_get(g, "health");
    assert_true(json_is_false(json_object_get(h, "healthy")));
    assert_int_equal(json_integer_value(json_object_get(h, "last_xid")), 79);
    assert_non_null(strstr(json_string_value(json_object_get(h, "reason")), "79"));
    json_decref(g);
    expect_problem("POST", "/v1/slots", "{\"workload\":\"w\",\"gpus\":[1],\"vram\":\"1Gi\"}", 409,
                   "unhealthy");
    /* GPU 0 is fine */
    json_decref(create("{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\"}"));
}

static void metrics_use_dcgm_names_and_slot_labels(void **state)
{
    (void)state;
    json_decref(create("{\"id\":\"m1\",\"workload\":\"infer\",\"namespace\":\"team-a\",\"gpus\":[0],"
                       "\"vram\":\"2Gi\",\"tflops_request\":100,\"tflops_limit\":200}"));
    char *text = NULL;
    assert_int_equal(h_api_raw(&g_agent, "/metrics", &text), 200);
    assert_non_null(strstr(text, "# HELP DCGM_FI_DEV_GPU_UTIL "));
    assert_non_null(strstr(text, "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"));
    assert_non_null(strstr(text, "DCGM_FI_DEV_FB_USED{gpu=\"0\",UUID=\"GPU-"));
    assert_non_null(strstr(text, "modelName=\"NVIDIA H100 80GB HBM3\""));
    assert_non_null(strstr(text, "# TYPE DCGM_FI_DEV_POWER_USAGE gauge"));
    assert_non_null(strstr(text, "# TYPE DCGM_FI_DEV_GPU_TEMP gauge"));
    assert_non_null(strstr(text, "# TYPE gpupool_slot_throttled_seconds_total counter"));
    const char *line = strstr(text, "gpupool_slot_vram_limit_bytes{gpu=\"0\"");
    assert_non_null(line);
    assert_non_null(strstr(line, "workload=\"infer\",namespace=\"team-a\",slot=\"m1\"} 2147483648\n"));
    line = strstr(text, "gpupool_slot_tflops_request{");
    assert_non_null(line);
    double v = atof(strchr(line, '}') + 1);
    assert_true(v > 99.9 && v < 100.1);
    free(text);
}

static void tcp_api_is_read_only_without_the_token(void **state)
{
    (void)state;
    h_agent a;
    char run[256];
    h_tmpdir(run, sizeof run, "tcp");
    const char *extra[] = {"--listen-tcp", "127.0.0.1:0", "--token", "s3cret", NULL};
    h_agent_start(&a, run, extra);
    assert_true(a.tcp_port > 0);
    json_t *o = NULL;
    assert_int_equal(h_api_tcp(a.tcp_port, "GET", "/v1/gpus", NULL, NULL, &o, NULL), 200);
    json_decref(o);
    const char *body = "{\"workload\":\"w\",\"gpus\":[0],\"vram\":\"1Gi\"}";
    assert_int_equal(h_api_tcp(a.tcp_port, "POST", "/v1/slots", body, NULL, &o, NULL), 401);
    json_decref(o);
    assert_int_equal(h_api_tcp(a.tcp_port, "POST", "/v1/slots", body, "wrong", &o, NULL), 401);
    json_decref(o);
    assert_int_equal(h_api_tcp(a.tcp_port, "POST", "/v1/slots", body, "s3cret", &o, NULL), 201);
    json_decref(o);
    h_agent_kill(&a, SIGTERM);
}

/* ---- arbitration -------------------------------------------------------------------------------------- */

static json_t *env_of(json_t *set)
{
    return json_object_get(set, "env");
}

/* The share the agent grants a set's first GPU now, in percent. */
static double effective_percent(const char *id)
{
    char path[100];
    snprintf(path, sizeof path, "/v1/slots/%s", id);
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "GET", path, NULL, &o), 200);
    double v = json_real_value(json_object_get(
        json_object_get(json_array_get(json_object_get(o, "gpus"), 0), "compute"), "effective_percent"));
    json_decref(o);
    return v;
}

/* Sleeps for ns while sampling what the agent grants sets x and y; their averages over that time, in percent.
 * (A single look could fall on a step where a measurement was short.) */
static void watch_grants(const char *x, const char *y, uint64_t ns, double *gx, double *gy)
{
    uint64_t end = gp_now_ns() + ns;
    int n = 0;
    double sx = 0, sy = 0;
    while (gp_now_ns() < end) {
        sx += effective_percent(x);
        sy += effective_percent(y);
        n++;
        gp_sleep_ns(200000000);
    }
    *gx = sx / n;
    *gy = sy / n;
}

static void saturating_workloads_each_get_at_least_their_request(void **state)
{
    (void)state;
    json_t *a =
        create("{\"id\":\"a\",\"workload\":\"a\",\"gpus\":[0],\"vram\":\"2Gi\",\"percent_request\":30,"
               "\"percent_limit\":60}");
    json_t *b =
        create("{\"id\":\"b\",\"workload\":\"b\",\"gpus\":[0],\"vram\":\"2Gi\",\"percent_request\":50,"
               "\"percent_limit\":100}");
    h_work wa, wb;
    h_work_start(&wa, env_of(a), 0);
    h_work_start(&wb, env_of(b), 0);
    gp_sleep_ns(2500000000ull);
    uint64_t t0 = gp_now_ns();
    double ga, gb;
    watch_grants("a", "b", 3000000000ull, &ga, &gb);
    uint64_t t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    double sa = h_work_share(&wa, t0, t1, 2), sb = h_work_share(&wb, t0, t1, 2);
    printf("both busy: a %.3f (request 0.30, limit 0.60), b %.3f (request 0.50, limit 1.00)\n", sa, sb);
    printf("granted on average: a %.1f%%, b %.1f%%\n", ga, gb);
    assert_true(sa >= 0.27);
    assert_true(sb >= 0.47);
    assert_true(sa <= 0.63);
    /* The GPU is not left idle: the unused 20% is granted. What the two achieve beyond their requests also
     * depends on how fast this machine's CPU lets them launch (a shared CI machine may not); the grant does
     * not. */
    assert_true(ga + gb >= 95);
    assert_true(ga >= 30 && gb >= 50);
    assert_true(sa + sb >= 0.80);

    /* a alone: it bursts to its limit, and no further */
    h_work_stop(&wb);
    gp_sleep_ns(2000000000ull);
    t0 = gp_now_ns();
    gp_sleep_ns(2500000000ull);
    t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    sa = h_work_share(&wa, t0, t1, 2);
    printf("a alone: %.3f (limit 0.60)\n", sa);
    assert_true(sa >= 0.55 && sa <= 0.63);

    /* b alone: it bursts to its limit, the whole GPU */
    h_work_stop(&wa);
    h_work_start(&wb, env_of(b), 0);
    gp_sleep_ns(2000000000ull);
    t0 = gp_now_ns();
    watch_grants("b", "b", 2500000000ull, &gb, &gb);
    t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    sb = h_work_share(&wb, t0, t1, 2);
    printf("b alone: %.3f (limit 1.00), granted %.1f%% on average\n", sb, gb);
    assert_true(gb >= 90);
    assert_true(sb >= H_FULL_FLOOR);
    h_work_stop(&wb);
    json_decref(a);
    json_decref(b);
}

static void higher_qos_waking_up_takes_back_its_share(void **state)
{
    (void)state;
    json_t *lo =
        create("{\"id\":\"lo\",\"workload\":\"batch\",\"gpus\":[0],\"vram\":\"2Gi\",\"percent_request\":20,"
               "\"percent_limit\":100,\"qos\":\"low\"}");
    json_t *hi =
        create("{\"id\":\"hi\",\"workload\":\"serve\",\"gpus\":[0],\"vram\":\"2Gi\",\"percent_request\":40,"
               "\"percent_limit\":80,\"qos\":\"high\"}");
    h_work wl, wh;
    h_work_start(&wl, env_of(lo), 0);
    gp_sleep_ns(2500000000ull);
    uint64_t t0 = gp_now_ns();
    double gh, gl;
    watch_grants("lo", "lo", 1500000000ull, &gl, &gl);
    uint64_t t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    double before = h_work_share(&wl, t0, t1, 2);
    printf("low-QoS alone: %.3f, granted %.1f%% on average\n", before, gl);
    assert_true(gl >= 90); /* it bursts into the idle request of the other */
    assert_true(before >= H_FULL_FLOOR);

    uint64_t woke = gp_now_ns();
    h_work_start(&wh, env_of(hi), 0);
    /* docs/agent.md: the bound is about 0.35 s at the default period; measure from 1 s after the wake-up */
    gp_sleep_ns(1000000000ull);
    t0 = gp_now_ns();
    watch_grants("hi", "lo", 2500000000ull, &gh, &gl);
    t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    double sh = h_work_share(&wh, t0, t1, 2), sl = h_work_share(&wl, t0, t1, 2);
    printf("after the high-QoS one woke (%.1f s ago): high %.3f (request 0.40), low %.3f (request 0.20)\n",
           (t0 - woke) / 1e9, sh, sl);
    assert_true(sh >= 0.37);
    assert_true(sl >= 0.17);
    /* The spare 40% is split 4:1 by QoS weight. What each achieves also depends on how fast its host side can
     * launch (slow under the sanitizers); what the agent grants does not: high is granted more than low. */
    printf("granted on average: high %.1f%%, low %.1f%%\n", gh, gl);
    assert_true(gh > gl);
    assert_true(gh >= 40 && gl >= 20);
    assert_true(gh - 40 > gl - 20); /* of the spare, high got more */
    h_work_stop(&wl);
    h_work_stop(&wh);
    json_decref(lo);
    json_decref(hi);
}

/* ---- restarts ----------------------------------------------------------------------------------------- */

static double metric_value(const char *text, const char *name, const char *label)
{
    for (const char *p = text; (p = strstr(p, name)) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        const char *l = strstr(p, label);
        if (p[strlen(name)] == '{' && l && (!eol || l < eol))
            return atof(strchr(p, '}') + 1);
    }
    return -1;
}

static void killed_agent_leaves_workloads_alone_and_is_adopted_on_restart(void **state)
{
    (void)state;
    json_t *a =
        create("{\"id\":\"ka\",\"workload\":\"a\",\"gpus\":[0],\"vram\":\"2Gi\",\"percent_request\":30,"
               "\"percent_limit\":30}");
    json_t *b = create("{\"id\":\"kb\",\"workload\":\"b\",\"gpus\":[1],\"vram\":\"2Gi\"}");
    h_work wa, wb;
    h_work_start(&wa, env_of(a), 0);
    h_work_start(&wb, env_of(b), 0);
    gp_sleep_ns(1500000000ull);
    char *before = NULL;
    assert_int_equal(h_api_raw(&g_agent, "/metrics", &before), 200);
    double throttled_before = metric_value(before, "gpupool_slot_throttled_seconds_total", "slot=\"ka\"");
    assert_true(throttled_before > 0); /* a is limited to 30% and saturating */
    free(before);

    h_agent_kill(&g_agent, SIGKILL);
    uint64_t ca = h_work_count(&wa), cb = h_work_count(&wb);
    uint64_t t0 = gp_now_ns();
    gp_sleep_ns(2000000000ull);
    uint64_t t1 = gp_now_ns();
    gp_sleep_ns(150000000);
    /* without an agent, both keep running, a still held to 30% */
    uint64_t na = h_work_count(&wa) - ca, nb = h_work_count(&wb) - cb;
    printf("kernels completed in 2 s without an agent: a %llu (limited to 30%%), b %llu\n",
           (unsigned long long)na, (unsigned long long)nb);
    assert_true(na > 100);
    assert_true(nb > 300);
    double sa = h_work_share(&wa, t0, t1, 2);
    printf("a without an agent: %.3f (limit 0.30)\n", sa);
    assert_true(sa >= 0.27 && sa <= 0.33);

    h_agent_start(&g_agent, g_run, NULL);
    json_t *o = NULL;
    assert_int_equal(h_api(&g_agent, "GET", "/v1/slots/ka", NULL, &o), 200);
    json_t *procs = json_object_get(json_array_get(json_object_get(o, "gpus"), 0), "processes");
    assert_int_equal(json_array_size(procs), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(procs, 0), "pid")), wa.pid);
    json_decref(o);
    assert_int_equal(count_sets(), 2);
    gp_sleep_ns(500000000ull);
    char *after = NULL;
    assert_int_equal(h_api_raw(&g_agent, "/metrics", &after), 200);
    double throttled_after = metric_value(after, "gpupool_slot_throttled_seconds_total", "slot=\"ka\"");
    printf("throttled seconds of a: %.3f before the kill, %.3f after the restart\n", throttled_before,
           throttled_after);
    assert_true(throttled_after > throttled_before); /* counters continue, they do not restart */
    assert_true(metric_value(after, "gpupool_slot_processes", "slot=\"kb\"") == 1);
    free(after);
    h_work_stop(&wa);
    h_work_stop(&wb);
    json_decref(a);
    json_decref(b);
}

static void leftovers_are_cleaned_and_corrupt_sets_left_alone(void **state)
{
    (void)state;
    h_agent_kill(&g_agent, SIGTERM);
    char path[600];
    snprintf(path, sizeof path, "%s/slots/.new-half", g_run);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/slots/broken", g_run);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/slots/broken/gpu0.slot", g_run);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a slot", f);
    fclose(f);
    h_agent_start(&g_agent, g_run, NULL);
    struct stat st;
    snprintf(path, sizeof path, "%s/slots/.new-half", g_run);
    assert_int_equal(stat(path, &st), -1);
    snprintf(path, sizeof path, "%s/slots/broken/gpu0.slot", g_run);
    assert_int_equal(stat(path, &st), 0); /* kept for a person to look at */
    assert_int_equal(count_sets(), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "grep -q 'slot set broken is not usable' '%s'", g_agent.log);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s/slots/broken'", g_run);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
#define T(f) cmocka_unit_test_setup_teardown(f, reset, after_each)
    const struct CMUnitTest tests[] = {
        T(gpus_are_discovered_with_model_and_health),
        T(slot_set_life_cycle),
        T(bad_requests_are_refused_and_change_nothing),
        T(metrics_use_dcgm_names_and_slot_labels),
        T(tcp_api_is_read_only_without_the_token),
        T(saturating_workloads_each_get_at_least_their_request),
        T(higher_qos_waking_up_takes_back_its_share),
        T(killed_agent_leaves_workloads_alone_and_is_adopted_on_restart),
        T(leftovers_are_cleaned_and_corrupt_sets_left_alone),
        T(unhealthy_gpu_takes_no_new_work), /* last: it leaves GPU 1 unhealthy */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

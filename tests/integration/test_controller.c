/* test_controller.c - the controller as a real process: its REST API over real HTTP (unix socket and TCP),
 * the pool model and placement, idempotent creation, quotas, profiles, nodes that stop reporting, remote
 * workloads placed by the nodes' GPU-over-IP workers, and kill -9
 * during a stream of allocations (after a restart every acknowledged allocation exists exactly once).
 *
 * Nodes here are registered through the API by the test itself (an agent does the same, see test_up.c), so
 * clusters of any shape can be made without simulated GPUs.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/timeutil.h"
#include "harness.h"

#define GIB (1024ull * 1024 * 1024)

static h_agent g_ctl;
static char g_dir[256];

static void start(const char *const *extra)
{
    h_controller_start(&g_ctl, g_dir, extra);
}

static int setup(void **state)
{
    (void)state;
    h_tmpdir(g_dir, sizeof g_dir, "ctl");
    start(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_agent_kill(&g_ctl, SIGTERM);
    h_cleanup();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return 0;
}

static json_t *ok(const char *method, const char *path, const char *body, long want)
{
    json_t *o = NULL;
    long st = h_api(&g_ctl, method, path, body, &o);
    if (st != want) {
        char *s = o ? json_dumps(o, 0) : NULL;
        fail_msg("%s %s %s -> %ld %s (wanted %ld)", method, path, body ? body : "", st, s ? s : "", want);
    }
    return o;
}

static void problem(const char *method, const char *path, const char *body, long status, const char *words)
{
    json_t *o = NULL;
    long st = h_api(&g_ctl, method, path, body, &o);
    const char *d = json_string_value(json_object_get(o, "detail"));
    if (st != status || d == NULL || strstr(d, words) == NULL)
        fail_msg("%s %s %s -> %ld \"%s\"; expected %ld mentioning \"%s\"", method, path, body ? body : "", st,
                 d ? d : "", status, words);
    json_decref(o);
}

/* Registers node `name` with n GPUs of the given TFLOPS and GiB, and its GPU-over-IP worker (a JSON object,
 * or NULL for none). */
static void add_node_w(const char *name, const char *pool, int n, double tflops, int gib, const char *worker)
{
    json_t *gpus = json_array();
    for (int i = 0; i < n; i++) {
        char uuid[96];
        snprintf(uuid, sizeof uuid, "GPU-%s-%04d", name, i);
        json_array_append_new(gpus, json_pack("{s:s, s:i, s:s, s:s, s:f, s:I}", "uuid", uuid, "index", i,
                                              "model", "H100-SXM-80GB", "vendor", "nvidia", "tflops", tflops,
                                              "vram", (json_int_t)gib * (json_int_t)GIB));
    }
    json_t *body = json_pack("{s:s, s:s, s:o}", "pool", pool, "api", "unix:/nowhere", "gpus", gpus);
    if (worker)
        json_object_set_new(body, "worker", json_loads(worker, 0, NULL));
    char *text = json_dumps(body, 0), path[200];
    snprintf(path, sizeof path, "/v1/nodes/%s/register", name);
    json_decref(ok("POST", path, text, 200));
    free(text);
    json_decref(body);
}

static void add_node(const char *name, const char *pool, int n, double tflops, int gib)
{
    add_node_w(name, pool, n, tflops, gib, NULL);
}

static void heartbeat(const char *name)
{
    char path[200];
    snprintf(path, sizeof path, "/v1/nodes/%s/heartbeat", name);
    json_decref(ok("POST", path, "{\"gpus\":[],\"sets\":[]}", 200));
}

static void pools_quotas_profiles_and_placement(void **state)
{
    (void)state;
    json_t *o = ok("GET", "/v1/pools", NULL, 200);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(o, "pools"), 0), "name")),
        "default");
    json_decref(o);
    json_decref(ok("POST", "/v1/pools",
                   "{\"name\":\"train\",\"strategy\":\"low-load-first\",\"tflops_oversell_percent\":50}",
                   201));
    problem("POST", "/v1/pools", "{\"name\":\"train\"}", 409, "exists");
    problem("POST", "/v1/pools", "{\"name\":\"Bad_Name\"}", 400, "pool name");
    problem("POST", "/v1/pools", "{\"name\":\"x\",\"strategy\":\"random\"}", 400, "strategy");
    add_node("node-a", "default", 2, 1000, 80);
    add_node("node-b", "train", 4, 1000, 80);

    /* placement, compact-first on the default pool: both land on the same GPU */
    o = ok("POST", "/v1/workloads", "{\"name\":\"a1\",\"tflops_request\":300,\"vram_request\":\"10Gi\"}",
           201);
    json_t *al = json_object_get(json_object_get(o, "status"), "allocation");
    assert_string_equal(json_string_value(json_object_get(al, "node")), "node-a");
    char gpu_a1[96];
    snprintf(gpu_a1, sizeof gpu_a1, "%s", json_string_value(json_array_get(json_object_get(al, "gpus"), 0)));
    json_decref(o);
    o = ok("POST", "/v1/workloads", "{\"name\":\"a2\",\"tflops_request\":300,\"vram_request\":\"10Gi\"}",
           201);
    al = json_object_get(json_object_get(o, "status"), "allocation");
    assert_string_equal(json_string_value(json_array_get(json_object_get(al, "gpus"), 0)), gpu_a1);
    json_decref(o);
    /* idempotent: the same request again returns the same workload; a different one is refused */
    o = ok("POST", "/v1/workloads", "{\"name\":\"a2\",\"tflops_request\":300,\"vram_request\":\"10Gi\"}",
           200);
    json_decref(o);
    problem("POST", "/v1/workloads", "{\"name\":\"a2\",\"tflops_request\":200,\"vram_request\":\"10Gi\"}",
            409, "different spec");
    /* multi-GPU on one node, in the pool that spreads */
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"big\",\"namespace\":\"ml\",\"pool\":\"train\",\"gpus\":4,\"percent_request\":50,"
           "\"vram_request\":\"40Gi\"}",
           201);
    al = json_object_get(json_object_get(o, "status"), "allocation");
    assert_string_equal(json_string_value(json_object_get(al, "node")), "node-b");
    assert_int_equal(json_array_size(json_object_get(al, "gpus")), 4);
    json_decref(o);
    /* a misfit is explained, and nothing is stored */
    problem("POST", "/v1/workloads",
            "{\"name\":\"huge\",\"gpus\":3,\"tflops_request\":100,\"vram_request\":\"1Gi\"}", 409, "GPU");
    problem("GET", "/v1/workloads/default/huge", NULL, 404, "no workload");
    /* ... unless it may wait: then it is pending, with the reason, and placed when room appears */
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"later\",\"tflops_request\":900,\"vram_request\":\"1Gi\",\"wait_for_capacity\":true}",
           201);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")),
                        "Allocated");
    json_decref(o);
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"later2\",\"tflops_request\":900,\"vram_request\":\"1Gi\",\"wait_for_capacity\":true}",
           201);
    json_t *st = json_object_get(o, "status");
    assert_string_equal(json_string_value(json_object_get(st, "phase")), "Pending");
    assert_true(strlen(json_string_value(json_object_get(st, "message"))) > 10);
    json_decref(o);
    o = ok("GET", "/v1/workloads/default/later2/explain", NULL, 200);
    assert_true(json_is_false(json_object_get(o, "fits")));
    json_decref(o);
    json_decref(ok("DELETE", "/v1/workloads/default/later", NULL, 204));
    o = ok("GET", "/v1/workloads/default/later2", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")),
                        "Allocated");
    json_decref(o);

    /* quotas: checked with the placement, counted for workloads that existed before */
    json_decref(ok("PUT", "/v1/quotas/ml", "{\"tflops_request\":2200,\"max_workloads\":2}", 200));
    o = ok("GET", "/v1/quotas/ml", NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "used"), "workloads")), 1);
    json_decref(o);
    problem("POST", "/v1/workloads",
            "{\"name\":\"more\",\"namespace\":\"ml\",\"pool\":\"train\",\"tflops_request\":300,\"vram_"
            "request\":\"1Gi\"}",
            403, "quota");
    json_decref(ok("POST", "/v1/workloads",
                   "{\"name\":\"small\",\"namespace\":\"ml\",\"pool\":\"train\",\"tflops_request\":150,"
                   "\"vram_request\":\"1Gi\"}",
                   201));
    problem("POST", "/v1/workloads",
            "{\"name\":\"third\",\"namespace\":\"ml\",\"pool\":\"train\",\"tflops_request\":1,\"vram_"
            "request\":\"1Gi\"}",
            403, "quota");
    json_decref(ok("DELETE", "/v1/quotas/ml", NULL, 204));

    /* profiles fill what a workload leaves out */
    json_decref(ok("POST", "/v1/profiles",
                   "{\"name\":\"inference\",\"percent_request\":10,\"percent_limit\":20,"
                   "\"vram_request\":\"2Gi\",\"qos\":\"high\"}",
                   201));
    o = ok("POST", "/v1/workloads", "{\"name\":\"svc\",\"profile\":\"inference\"}", 201);
    json_t *spec = json_object_get(o, "spec");
    assert_string_equal(json_string_value(json_object_get(spec, "qos")), "high");
    assert_int_equal(json_integer_value(json_object_get(spec, "vram_request")), 2 * GIB);
    json_decref(o);
    problem("POST", "/v1/profiles", "{\"name\":\"bad\",\"percent_request\":50,\"percent_limit\":10}", 400,
            "above");

    /* bad input never changes anything */
    problem("POST", "/v1/workloads", "{\"name\":\"x\"}", 400, "vram");
    problem("POST", "/v1/workloads",
            "{\"name\":\"x\",\"vram_request\":\"1Gi\",\"percent_request\":10,\"tflops_limit\":5}", 400,
            "not both");
    problem("POST", "/v1/workloads", "{\"name\":\"X!\",\"vram_request\":\"1Gi\"}", 400, "DNS");
    problem("POST", "/v1/workloads", "{\"name\":\"x\",\"vram_request\":\"1Gi\",\"pool\":\"nope\"}", 400,
            "no pool");
    problem("POST", "/v1/workloads", "{\"name\":\"x\",\"vram_request\":\"1Gi\",\"gpus\":99}", 400, "gpus");
    problem("POST", "/v1/workloads", "{\"name\":\"x\",\"vram_request\":\"1Gi\",\"size\":3}", 400, "size");
    problem("POST", "/v1/workloads", "not json", 400, "JSON");
    problem("DELETE", "/v1/pools/train", NULL, 409, "node");
    problem("GET", "/v1/nodes/ghost/allocations", NULL, 404, "not registered");
    problem("GET", "/v1/nothing", NULL, 404, "no such resource");

    /* a node's watch: its allocations, and a long-poll that returns when they change */
    o = ok("GET", "/v1/nodes/node-a/allocations", NULL, 200);
    uint64_t rev = (uint64_t)json_integer_value(json_object_get(o, "revision"));
    assert_true(json_array_size(json_object_get(o, "allocations")) >= 2);
    json_t *first = json_array_get(json_object_get(o, "allocations"), 0);
    assert_non_null(json_object_get(first, "percent_request"));
    json_decref(o);
    char path[200];
    snprintf(path, sizeof path, "/v1/nodes/node-a/allocations?since=%llu&timeout=1", (unsigned long long)rev);
    uint64_t t0 = gp_now_ns();
    o = ok("GET", path, NULL, 200); /* nothing changed: it waits out its timeout */
    assert_true(gp_now_ns() - t0 > 500000000ull);
    assert_int_equal(json_integer_value(json_object_get(o, "revision")), rev);
    json_decref(o);

    /* over TCP the same API answers */
    assert_true(g_ctl.tcp_port > 0);
    o = NULL;
    assert_int_equal(h_api_tcp(g_ctl.tcp_port, "GET", "/v1/gpus", NULL, NULL, &o, NULL), 200);
    assert_int_equal(json_array_size(json_object_get(o, "gpus")), 6);
    json_decref(o);
    heartbeat("node-a");
    heartbeat("node-b");
}

static void a_silent_node_loses_its_workloads_until_it_reports_again(void **state)
{
    (void)state;
    h_agent_kill(&g_ctl, SIGTERM);
    const char *extra[] = {"--node-timeout", "1s", NULL};
    start(extra);
    add_node("node-c", "default", 1, 1000, 80);
    json_decref(ok("POST", "/v1/workloads",
                   "{\"name\":\"on-c\",\"node\":\"node-c\",\"tflops_request\":100,\"vram_request\":\"1Gi\"}",
                   201));
    const char *phase = NULL;
    json_t *o = NULL;
    for (int i = 0; i < 60; i++) { /* node-a and node-b are silent too */
        json_decref(o);
        o = ok("GET", "/v1/workloads/default/on-c", NULL, 200);
        phase = json_string_value(json_object_get(json_object_get(o, "status"), "phase"));
        if (strcmp(phase, "Lost") == 0)
            break;
        gp_sleep_ns(100000000);
    }
    assert_string_equal(phase, "Lost");
    json_decref(o);
    o = ok("GET", "/v1/nodes/node-c", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "Lost");
    json_decref(o);
    /* no new work goes to a lost node */
    problem("POST", "/v1/workloads",
            "{\"name\":\"more-c\",\"node\":\"node-c\",\"tflops_request\":1,\"vram_request\":\"1Gi\"}", 409,
            "");
    heartbeat("node-c");
    o = ok("GET", "/v1/workloads/default/on-c", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")),
                        "Allocated");
    json_decref(o);
    h_agent_kill(&g_ctl, SIGTERM);
    start(NULL);
}

/* ---- remote (GPU-over-IP) workloads ------------------------------------------------------------------- */

static void heartbeat_w(const char *name, const char *worker)
{
    char path[200], body[400];
    snprintf(path, sizeof path, "/v1/nodes/%s/heartbeat", name);
    snprintf(body, sizeof body, "{\"gpus\":[],\"sets\":[],\"worker\":%s}", worker);
    json_decref(ok("POST", path, body, 200));
}

static json_t *node_worker(const char *name)
{
    char path[200];
    snprintf(path, sizeof path, "/v1/nodes/%s", name);
    json_t *o = ok("GET", path, NULL, 200), *w = json_incref(json_object_get(o, "worker"));
    json_decref(o);
    return w;
}

static const char *placed_on(json_t *workload)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(workload, "status"), "allocation"), "node"));
}

/* Nodes advertise their worker (registration and heartbeats); the controller stores it, shows it, and sends a
 * remote workload only to a node whose worker is up - or refuses it, saying why, or queues it until one is.
 */
static void a_remote_workload_goes_only_to_a_node_whose_worker_is_up(void **state)
{
    (void)state;
    const char *down = "{\"address\":\"tcp:far-2:7070\",\"up\":false,\"message\":\"connection refused\"}",
               *up = "{\"address\":\"tcp:far-2:7070\",\"up\":true}";
    json_decref(ok("POST", "/v1/pools", "{\"name\":\"far\"}", 201));
    add_node_w("far-1", "far", 1, 1000, 80, NULL);
    add_node_w("far-2", "far", 1, 1000, 80, down);
    json_t *w = node_worker("far-2");
    assert_string_equal(json_string_value(json_object_get(w, "address")), "tcp:far-2:7070");
    assert_true(json_is_false(json_object_get(w, "up")));
    assert_string_equal(json_string_value(json_object_get(w, "message")), "connection refused");
    json_decref(w);
    assert_null(node_worker("far-1"));

    /* no worker up: refused with the reason, or pending when it may wait */
    const char *r1 = "{\"name\":\"r1\",\"pool\":\"far\",\"remote\":true,\"percent_request\":10,"
                     "\"vram_request\":\"1Gi\"}";
    problem("POST", "/v1/workloads", r1, 409, "runs a GPU-over-IP worker that is up, and a remote workload");
    json_t *o = ok("POST", "/v1/workloads",
                   "{\"name\":\"r1\",\"pool\":\"far\",\"remote\":true,\"percent_request\":10,"
                   "\"vram_request\":\"1Gi\",\"wait_for_capacity\":true}",
                   201);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")), "Pending");
    json_decref(o);
    /* a local one is placed as before: on far-1, which is then the fuller node */
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"l1\",\"pool\":\"far\",\"percent_request\":30,\"vram_request\":\"1Gi\"}", 201);
    assert_string_equal(placed_on(o), "far-1");
    json_decref(o);

    /* the worker comes up: the pending remote workload is placed on its node at once */
    heartbeat_w("far-2", up);
    o = ok("GET", "/v1/workloads/default/r1", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")),
                        "Allocated");
    assert_string_equal(placed_on(o), "far-2");
    json_decref(o);
    /* compact-first would take the fuller far-1; a remote workload still goes to the worker's node */
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"r2\",\"pool\":\"far\",\"remote\":true,\"percent_request\":5,"
           "\"vram_request\":\"1Gi\"}",
           201);
    assert_string_equal(placed_on(o), "far-2");
    assert_true(json_is_true(json_object_get(json_object_get(o, "spec"), "remote")));
    json_decref(o);
    problem("POST", "/v1/workloads",
            "{\"name\":\"r3\",\"pool\":\"far\",\"node\":\"far-1\",\"remote\":true,\"percent_request\":5,"
            "\"vram_request\":\"1Gi\"}",
            409, "node \"far-1\" runs no GPU-over-IP worker that is up");

    /* bad worker reports are refused and change nothing */
    problem("POST", "/v1/nodes/far-2/heartbeat", "{\"worker\":{\"address\":\"tcp:x:1\",\"up\":\"yes\"}}", 400,
            "up");
    problem("POST", "/v1/nodes/far-2/heartbeat", "{\"worker\":{\"address\":\"\",\"up\":true}}", 400,
            "address");
    problem("POST", "/v1/nodes/far-2/heartbeat", "{\"worker\":{\"address\":\"tcp:x:1\",\"up\":true,\"x\":1}}",
            400, "\"x\"");
    problem("POST", "/v1/nodes/far-3/register", "{\"pool\":\"far\",\"gpus\":[],\"worker\":7}", 400, "worker");
    problem("GET", "/v1/nodes/far-3", NULL, 404, "");
    w = node_worker("far-2");
    assert_true(json_is_true(json_object_get(w, "up")));
    json_decref(w);

    /* the worker's state is stored: after a restart (before any report) remote work still goes there */
    h_agent_kill(&g_ctl, SIGTERM);
    start(NULL);
    w = node_worker("far-2");
    assert_true(json_is_true(json_object_get(w, "up")));
    json_decref(w);
    o = ok("POST", "/v1/workloads",
           "{\"name\":\"r4\",\"pool\":\"far\",\"remote\":true,\"percent_request\":5,"
           "\"vram_request\":\"1Gi\"}",
           201);
    assert_string_equal(placed_on(o), "far-2");
    json_decref(o);
    /* the CLI shows it */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s get nodes --server unix:%s | grep far-2 | grep -q 'tcp:far-2:7070 (up)'",
             GPUPOOL_BIN, g_ctl.sock);
    assert_int_equal(system(cmd), 0);

    /* down again: no new remote work; an agent that registers without a worker has none */
    heartbeat_w("far-2", down);
    problem("POST", "/v1/workloads",
            "{\"name\":\"r5\",\"pool\":\"far\",\"remote\":true,\"percent_request\":5,"
            "\"vram_request\":\"1Gi\"}",
            409, "GPU-over-IP worker");
    heartbeat_w("far-2", up);
    add_node_w("far-2", "far", 1, 1000, 80, NULL);
    assert_null(node_worker("far-2"));
    problem("POST", "/v1/workloads",
            "{\"name\":\"r5\",\"pool\":\"far\",\"remote\":true,\"percent_request\":5,"
            "\"vram_request\":\"1Gi\"}",
            409, "GPU-over-IP worker");
    for (int i = 1; i <= 4; i++) {
        char path[100];
        snprintf(path, sizeof path, "/v1/workloads/default/r%d", i);
        if (i != 3)
            json_decref(ok("DELETE", path, NULL, 204));
    }
    json_decref(ok("DELETE", "/v1/workloads/default/l1", NULL, 204));
}

/* ---- kill -9 during a stream of allocations --------------------------------------------------------- */

typedef struct stream {
    int next;        /* the next workload number to create */
    int acked[4000]; /* 1 when the controller answered 201/200 */
    int tried[4000];
    long bad; /* an answer other than 200/201 (checked by the main thread) */
    char why[600];
    atomic_bool stop;
} stream;

static void *poster(void *arg)
{
    stream *s = arg;
    while (!atomic_load(&s->stop) && s->next < 4000) {
        char body[200];
        snprintf(
            body, sizeof body,
            "{\"name\":\"w%d\",\"namespace\":\"crash\",\"percent_request\":0.2,\"vram_request\":\"64Mi\"}",
            s->next);
        s->tried[s->next] = 1;
        json_t *o = NULL;
        long st = h_api(&g_ctl, "POST", "/v1/workloads", body, &o);
        if (st == 201 || st == 200)
            s->acked[s->next] = 1;
        else if (st != 0 && s->bad == 0) {
            s->bad = st;
            snprintf(s->why, sizeof s->why, "%s -> %s", body,
                     json_string_value(json_object_get(o, "detail")));
        }
        json_decref(o);
        s->next++;
    }
    return NULL;
}

static void kill_9_during_allocations_loses_nothing_and_doubles_nothing(void **state)
{
    (void)state;
    add_node("node-k", "default", 8, 1000, 80);
    static stream s;
    memset(&s, 0, sizeof s);
    for (int round = 0; round < 4; round++) {
        atomic_store(&s.stop, false);
        pthread_t t;
        pthread_create(&t, NULL, poster, &s);
        gp_sleep_ns((150 + 70 * (uint64_t)round) * 1000000ull);
        kill(g_ctl.pid, SIGKILL); /* mid-stream: some request is usually in flight */
        h_agent_kill(&g_ctl, SIGKILL);
        atomic_store(&s.stop, true);
        pthread_join(t, NULL);
        start(NULL);
        if (s.bad)
            fail_msg("%ld: %s", s.bad, s.why);
        /* retrying what got no answer is safe: each either exists already (200) or is created now (201) */
        for (int k = 0; k < s.next; k++) {
            if (!s.tried[k] || s.acked[k])
                continue;
            char body[200];
            snprintf(body, sizeof body,
                     "{\"name\":\"w%d\",\"namespace\":\"crash\",\"percent_request\":0.2,\"vram_request\":"
                     "\"64Mi\"}",
                     k);
            json_t *o = NULL;
            long st = h_api(&g_ctl, "POST", "/v1/workloads", body, &o);
            json_decref(o);
            assert_true(st == 200 || st == 201);
            s.acked[k] = 1;
        }
    }
    /* every acknowledged workload is there, exactly once; nothing else is */
    json_t *o = ok("GET", "/v1/workloads?namespace=crash", NULL, 200);
    json_t *arr = json_object_get(o, "workloads"), *w;
    size_t i;
    static int seen[4000];
    memset(seen, 0, sizeof seen);
    double req_sum = 0;
    json_array_foreach(arr, i, w)
    {
        const char *name = json_string_value(json_object_get(json_object_get(w, "spec"), "name"));
        int k = atoi(name + 1);
        assert_true(k >= 0 && k < 4000);
        seen[k]++;
        json_t *al = json_object_get(json_object_get(w, "status"), "allocation");
        assert_non_null(al);
        req_sum += json_number_value(json_array_get(json_object_get(al, "tflops_request"), 0));
    }
    int acked = 0;
    for (int k = 0; k < 4000; k++) {
        if (s.acked[k]) {
            acked++;
            if (seen[k] != 1)
                fail_msg("acknowledged workload w%d appears %d times", k, seen[k]);
        } else if (seen[k] > 1) {
            fail_msg("workload w%d appears %d times", k, seen[k]);
        }
    }
    printf("%d workloads acknowledged across 4 kill -9s, all present once (%zu stored)\n", acked,
           json_array_size(arr));
    assert_true(acked > 20);
    json_decref(o);
    /* the GPUs' books agree with the workloads: nothing doubled in the allocator either */
    double all_req = 0, committed = 0;
    o = ok("GET", "/v1/workloads", NULL, 200);
    json_array_foreach(json_object_get(o, "workloads"), i, w)
    {
        json_t *al = json_object_get(json_object_get(w, "status"), "allocation"), *x;
        size_t k;
        json_array_foreach(json_object_get(al, "tflops_request"), k, x) all_req += json_number_value(x);
    }
    json_decref(o);
    o = ok("GET", "/v1/gpus", NULL, 200);
    json_array_foreach(json_object_get(o, "gpus"), i, w) committed +=
        json_number_value(json_object_get(json_object_get(w, "committed"), "tflops_request"));
    json_decref(o);
    printf("requests of all workloads %.3f TFLOPS, committed on the GPUs %.3f\n", all_req, committed);
    assert_true(req_sum > 0 && committed > all_req - 1e-3 && committed < all_req + 1e-3);
}

static void a_corrupt_store_is_refused_and_left_alone(void **state)
{
    (void)state;
    char dir[256], path[300], cmd[700];
    h_tmpdir(dir, sizeof dir, "corrupt");
    snprintf(path, sizeof path, "%s/controller.db", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("this is not a database, and it must not be overwritten\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s controller --data-dir '%s' --listen-tcp none 2>'%s/err'", GPUPOOL_BIN, dir,
             dir);
    assert_int_not_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "grep -q 'not a usable gpupool store' '%s/err' && grep -q 'must not be overwritten' '%s'", dir,
             path);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pools_quotas_profiles_and_placement),
        cmocka_unit_test(a_silent_node_loses_its_workloads_until_it_reports_again),
        cmocka_unit_test(a_remote_workload_goes_only_to_a_node_whose_worker_is_up),
        cmocka_unit_test(kill_9_during_allocations_loses_nothing_and_doubles_nothing),
        cmocka_unit_test(a_corrupt_store_is_refused_and_left_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

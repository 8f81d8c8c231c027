/* test_allocator.c - the controller's allocator: strategies on small hand-built clusters (exact GPU choices),
 * oversubscription, multi-GPU placement, filters, health, remote workloads (nodes with a GPU-over-IP worker),
 * quotas, bad input, determinism, explanations, and
 * the index held equal to a full scan over thousands of random operations. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "controller/allocator.h"

#define GiB (1ull << 30)

#define assert_contains(s, sub)                                        \
    do {                                                               \
        if (strstr((s), (sub)) == NULL)                                \
            fail_msg("\"%s\"\n  does not contain \"%s\"", (s), (sub)); \
    } while (0)

/* ---- building clusters -------------------------------------------------------------------------------- */

static int add_pool(gp_allocator *a, const char *name, gp_alloc_strategy s, double oversell, double host,
                    double disk)
{
    gp_err err = {0};
    gp_alloc_pool_spec p = {.name = name,
                            .tflops_oversell_pct = oversell,
                            .vram_host_pct = host,
                            .vram_disk_pct = disk,
                            .strategy = s};
    int id = gp_alloc_add_pool(a, &p, &err);
    if (id < 0)
        fail_msg("add_pool: %s", err.msg);
    return id;
}

static int add_node(gp_allocator *a, const char *name, int pool)
{
    gp_err err = {0};
    int id = gp_alloc_add_node(a, name, pool, &err);
    if (id < 0)
        fail_msg("add_node: %s", err.msg);
    return id;
}

static int add_gpu_v(gp_allocator *a, int node, const char *model, const char *vendor, double tflops,
                     uint64_t vram)
{
    static int serial;
    char uuid[48];
    snprintf(uuid, sizeof uuid, "GPU-%08d", serial++);
    gp_err err = {0};
    gp_alloc_gpu_spec g = {.uuid = uuid, .model = model, .vendor = vendor, .tflops = tflops, .vram = vram};
    int id = gp_alloc_add_gpu(a, node, &g, &err);
    if (id < 0)
        fail_msg("add_gpu: %s", err.msg);
    return id;
}

static int add_gpu(gp_allocator *a, int node)
{
    return add_gpu_v(a, node, "A100-80GB", "nvidia", 100, 80 * GiB);
}

/* Pool "default" (id 0) of nodes n0..n<nodes-1> with per GPUs each of 100 TFLOPS and 80 GiB: node i holds
 * GPUs i*per .. i*per+per-1. */
static gp_allocator *cluster(gp_alloc_strategy s, int nodes, int per, double oversell)
{
    gp_allocator *a = gp_alloc_new();
    assert_non_null(a);
    add_pool(a, "default", s, oversell, 0, 0);
    for (int i = 0; i < nodes; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        add_node(a, name, 0);
        for (int j = 0; j < per; j++)
            add_gpu(a, i);
    }
    return a;
}

static gp_alloc_request treq(int pool, int k, double req, double lim, uint64_t vreq, uint64_t vlim)
{
    return (gp_alloc_request){.pool = pool,
                              .gpu_count = k,
                              .req_tflops = req,
                              .lim_tflops = lim,
                              .req_vram = vreq,
                              .lim_vram = vlim,
                              .node = -1,
                              .quota = -1};
}

static gp_alloc_request preq(int pool, int k, double req_pct, double lim_pct, uint64_t vreq, uint64_t vlim)
{
    gp_alloc_request r = treq(pool, k, -1, -1, vreq, vlim);
    r.req_pct = req_pct;
    r.lim_pct = lim_pct;
    return r;
}

static gp_alloc_placement alloc_ok(gp_allocator *a, const gp_alloc_request *r)
{
    gp_err err = {0};
    gp_alloc_placement p;
    if (gp_alloc_allocate(a, r, &p, &err) != 0)
        fail_msg("allocate: %s", err.msg);
    gp_err cerr = {0};
    if (gp_alloc_check(a, &cerr) != 0)
        fail_msg("check: %s", cerr.msg);
    return p;
}

/* Expects placing r to fail with code; returns the message (valid until the next call). */
static const char *place_fails(gp_allocator *a, const gp_alloc_request *r, gp_code code)
{
    static gp_err err;
    gp_alloc_placement p, before;
    memset(&p, 0xA5, sizeof p);
    before = p;
    memset(&err, 0, sizeof err);
    assert_int_equal(gp_alloc_place(a, r, &p, &err), -1);
    if (err.code != code)
        fail_msg("expected %s, got %s: %s", gp_code_name(code), gp_code_name(err.code), err.msg);
    assert_memory_equal(&p, &before, sizeof p); /* nothing written on failure */
    assert_true(strlen(err.msg) > 0 && strlen(err.msg) < GP_ERR_MSG_MAX);
    return err.msg;
}

static gp_alloc_gpu_state gpu_state(const gp_allocator *a, int gpu)
{
    gp_alloc_gpu_state s;
    assert_int_equal(gp_alloc_gpu_state_get(a, gpu, &s), 0);
    return s;
}

/* Commits req TFLOPS on one GPU (as a restore would), to set up a cluster's state. */
static void preload(gp_allocator *a, int gpu, double req, double lim)
{
    gp_alloc_request r = treq(0, 1, req, lim, GiB, GiB);
    gp_alloc_placement p = {
        .node = gpu_state(a, gpu).node, .ngpus = 1, .gpu = {gpu}, .req_vram = GiB, .lim_vram = GiB};
    p.req_tflops[0] = req;
    p.lim_tflops[0] = lim;
    gp_alloc_commit(a, &r, &p);
}

/* ---- strategies --------------------------------------------------------------------------------------- */

static void compact_first_packs_the_fullest_node_and_its_fullest_gpu_that_fits(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 2, 0); /* n0: GPUs 0,1  n1: GPUs 2,3 */
    preload(a, 2, 30, 30);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    gp_alloc_placement p = alloc_ok(a, &r); /* n1 is the fuller node, GPU 2 its fuller GPU */
    assert_int_equal(p.node, 1);
    assert_int_equal(p.gpu[0], 2);
    r = treq(0, 1, 60, 60, GiB, GiB);
    p = alloc_ok(a, &r); /* GPU 2 has exactly 60 free */
    assert_int_equal(p.gpu[0], 2);
    r = treq(0, 1, 50, 50, GiB, GiB);
    p = alloc_ok(a, &r); /* GPU 2 is full: GPU 3, still on the fuller node */
    assert_int_equal(p.gpu[0], 3);
    r = treq(0, 1, 60, 60, GiB, GiB);
    p = alloc_ok(a, &r); /* n1 cannot hold 60 any more: n0, lowest id */
    assert_int_equal(p.node, 0);
    assert_int_equal(p.gpu[0], 0);
    gp_alloc_free(a);
}

static void low_load_first_spreads_over_the_least_committed_gpus(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_LOW_LOAD_FIRST, 2, 2, 0);
    int expect[] = {0, 2, 1, 3, 0};
    for (int i = 0; i < 5; i++) {
        gp_alloc_request r = treq(0, 1, 10, 20, GiB, GiB);
        gp_alloc_placement p = alloc_ok(a, &r);
        assert_int_equal(p.gpu[0], expect[i]);
    }
    gp_alloc_free(a);
}

static void low_load_first_breaks_commitment_ties_by_measured_load(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_LOW_LOAD_FIRST, 2, 2, 0);
    gp_alloc_set_gpu_load(a, 0, 0.9);
    gp_alloc_set_gpu_load(a, 1, 0.9);
    gp_alloc_set_gpu_load(a, 2, 0.5);
    gp_alloc_set_gpu_load(a, 3, 0.1);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    gp_alloc_placement p = alloc_ok(a, &r);
    assert_int_equal(p.node, 1); /* n1's GPUs are less loaded on average */
    assert_int_equal(p.gpu[0], 3);
    assert_true(fabs(gpu_state(a, 3).load - 0.1) < 1e-12);
    /* commitment comes before load: GPU 3 now carries 10 TFLOPS, GPU 2 none */
    p = alloc_ok(a, &r);
    assert_int_equal(p.gpu[0], 0); /* n0 is now the less committed node; GPU 0 and 1 tie on load: lowest id */
    gp_alloc_free(a);
}

static void node_compact_gpu_low_load_fills_the_fullest_node_on_its_emptiest_gpus(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD, 2, 2, 0);
    preload(a, 2, 30, 30);
    int expect[] = {3, 3, 3, 2, 3};
    for (int i = 0; i < 5; i++) {
        gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
        gp_alloc_placement p = alloc_ok(a, &r);
        assert_int_equal(p.node, 1);
        assert_int_equal(p.gpu[0], expect[i]);
    }
    gp_alloc_free(a);
}

static void ties_go_to_the_lowest_node_and_gpu_ids(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        gp_allocator *a = cluster((gp_alloc_strategy)s, 3, 4, 0);
        gp_alloc_request r = treq(0, 2, 10, 10, GiB, GiB);
        gp_alloc_placement p = alloc_ok(a, &r);
        assert_int_equal(p.node, 0);
        assert_int_equal(p.ngpus, 2);
        assert_int_equal(p.gpu[0], 0);
        assert_int_equal(p.gpu[1], 1);
        gp_alloc_free(a);
    }
}

static void strategy_names_parse_and_print(void **state)
{
    (void)state;
    assert_int_equal(gp_alloc_strategy_parse("compact-first"), GP_STRATEGY_COMPACT_FIRST);
    assert_int_equal(gp_alloc_strategy_parse("low-load-first"), GP_STRATEGY_LOW_LOAD_FIRST);
    assert_int_equal(gp_alloc_strategy_parse("node-compact-gpu-low-load"),
                     GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD);
    assert_int_equal(gp_alloc_strategy_parse("CompactFirst"), GP_STRATEGY_COMPACT_FIRST);
    assert_int_equal(gp_alloc_strategy_parse("NodeCompactGPULowLoad"), GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD);
    assert_int_equal(gp_alloc_strategy_parse("best-fit"), -1);
    assert_int_equal(gp_alloc_strategy_parse(NULL), -1);
    for (int s = 0; s < 3; s++)
        assert_int_equal(gp_alloc_strategy_parse(gp_alloc_strategy_name((gp_alloc_strategy)s)), s);
    assert_string_equal(gp_alloc_strategy_name((gp_alloc_strategy)7), "unknown");
}

static void changing_a_pool_changes_its_order_and_capacities(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 1, 0);
    preload(a, 1, 50, 50);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    gp_alloc_placement p;
    gp_err err = {0};
    assert_int_equal(gp_alloc_place(a, &r, &p, &err), 0);
    assert_int_equal(p.gpu[0], 1);
    gp_alloc_pool_spec spec = {
        .name = "default", .tflops_oversell_pct = 100, .strategy = GP_STRATEGY_LOW_LOAD_FIRST};
    assert_int_equal(gp_alloc_set_pool(a, 0, &spec, &err), 0);
    assert_int_equal(gp_alloc_place(a, &r, &p, &err), 0);
    assert_int_equal(p.gpu[0], 0);
    r = treq(0, 1, 10, 190, GiB, GiB); /* only fits with the new 100% oversell */
    assert_int_equal(gp_alloc_place(a, &r, &p, &err), 0);
    assert_true(fabs(gpu_state(a, 0).tflops_oversold - 200) < 1e-9);
    assert_int_equal(gp_alloc_check(a, &err), 0);
    gp_alloc_free(a);
}

/* ---- oversubscription --------------------------------------------------------------------------------- */

static void requests_are_held_to_physical_capacity_even_when_oversold(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 1, 100);
    gp_alloc_request r = treq(0, 1, 60, 60, GiB, GiB);
    alloc_ok(a, &r);
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT); /* 120 requested > 100, though 120 <= 200 limits */
    assert_contains(msg, "less than 60 TFLOPS of request capacity free (most free: 40 TFLOPS on node n0)");
    assert_contains(msg, "asking for at most 40 TFLOPS would fit");
    r = treq(0, 1, 40, 100, GiB, GiB); /* exactly the rest; limits 160 of 200 */
    alloc_ok(a, &r);
    gp_alloc_gpu_state s = gpu_state(a, 0);
    assert_true(fabs(s.req_tflops - 100) < 1e-9);
    assert_true(fabs(s.lim_tflops - 160) < 1e-9);
    assert_false(s.over_capacity);
    gp_alloc_free(a);
}

static void limits_are_held_to_oversold_tflops(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 1, 50); /* limits up to 150 */
    gp_alloc_request r = treq(0, 1, 10, 100, GiB, GiB);
    alloc_ok(a, &r);
    r = treq(0, 1, 10, 50, GiB, GiB);
    alloc_ok(a, &r);
    r = treq(0, 1, 1, 1, GiB, GiB);
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "1 has less than 1 TFLOPS of limit capacity free");
    assert_contains(msg, "pool oversells 50%");
    gp_alloc_free(a);
}

static void vram_limits_may_expand_to_host_and_disk(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "default", GP_STRATEGY_COMPACT_FIRST, 0, 25, 25); /* VRAM limits up to 80 x 1.5 = 120 GiB */
    add_node(a, "n0", 0);
    add_gpu(a, 0);
    assert_int_equal(gpu_state(a, 0).vram_expanded, 120 * GiB);
    gp_alloc_request r = treq(0, 1, 1, 1, 30 * GiB, 80 * GiB);
    alloc_ok(a, &r);
    r = treq(0, 1, 1, 1, 30 * GiB, 40 * GiB);
    alloc_ok(a, &r);
    r = treq(0, 1, 1, 1, 0, GiB); /* requests 60 of 80 GiB, but limits 120 of 120 */
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "less than 1 GiB of VRAM limit capacity free");
    assert_contains(msg, "pool expands VRAM 50%");
    r = treq(0, 1, 1, 1, 30 * GiB, 30 * GiB); /* requests would be 90 of 80 GiB */
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "less than 30 GiB of VRAM free for requests (most free: 20 GiB on node n0)");
    gp_alloc_free(a);
}

static void percent_requests_resolve_to_each_gpus_tflops(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "mixed", GP_STRATEGY_LOW_LOAD_FIRST, 0, 0, 0);
    add_node(a, "big", 0);
    add_node(a, "small", 0);
    add_gpu_v(a, 0, "A100-80GB", "nvidia", 312, 80 * GiB);
    add_gpu_v(a, 1, "T4", "nvidia", 65, 16 * GiB);
    gp_alloc_request r = preq(0, 1, 50, 50, GiB, GiB);
    r.node = 1;
    gp_alloc_placement p = alloc_ok(a, &r);
    assert_int_equal(p.gpu[0], 1);
    assert_true(fabs(p.req_tflops[0] - 32.5) < 1e-9);
    assert_true(fabs(p.lim_tflops[0] - 32.5) < 1e-9);
    r = preq(0, 1, 25, 100, GiB, GiB);
    p = alloc_ok(a, &r); /* the least committed GPU is the A100 */
    assert_int_equal(p.gpu[0], 0);
    assert_true(fabs(p.req_tflops[0] - 78) < 1e-9);
    assert_true(fabs(p.lim_tflops[0] - 312) < 1e-9);
    r = preq(0, 1, 60, 60, GiB, GiB);
    r.node = 1; /* 50% of the T4 is taken */
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "less than 60% of request capacity free (most free: 50% on node small)");
    assert_contains(msg, "a request and limit of at most 50% would fit");
    gp_alloc_free(a);
}

/* ---- multi-GPU, filters, health ----------------------------------------------------------------------- */

static void a_multi_gpu_workload_gets_gpus_of_one_node(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 3, 0); /* n0: 0,1,2  n1: 3,4,5 */
    preload(a, 0, 100, 100);
    preload(a, 1, 100, 100);
    gp_alloc_request r = treq(0, 2, 50, 50, 8 * GiB, 8 * GiB);
    gp_alloc_placement p = alloc_ok(a, &r); /* n0 is fuller but has one free GPU: n1 */
    assert_int_equal(p.node, 1);
    assert_int_equal(p.ngpus, 2);
    assert_int_equal(p.gpu[0], 3);
    assert_int_equal(p.gpu[1], 4);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gpu_state(a, p.gpu[i]).node, 1);
        assert_true(fabs(p.req_tflops[i] - 50) < 1e-9);
    }
    assert_int_equal(p.req_vram, 8 * GiB);
    gp_alloc_free(a);
}

static void a_multi_gpu_workload_is_refused_when_free_gpus_are_on_different_nodes(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 2, 0);
    preload(a, 0, 100, 100);
    preload(a, 2, 100, 100);
    gp_alloc_request r = treq(0, 2, 50, 50, GiB, GiB);
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(msg,
                        "no node of pool \"default\" has 2 GPUs that fit: of 4 GPUs, 2 have less than 50 "
                        "TFLOPS of request capacity free (most free: 100 TFLOPS on node n0), 2 fit but no "
                        "node has 2 of them (at most 1, on node n0); asking for 1 GPU would fit (node n0)");
    r.gpu_count = 1;
    alloc_ok(a, &r);
    gp_alloc_free(a);
}

static void the_model_filter_ignores_case(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "p", GP_STRATEGY_COMPACT_FIRST, 0, 0, 0);
    add_node(a, "a100", 0);
    add_node(a, "h100", 0);
    add_gpu_v(a, 0, "A100-80GB", "nvidia", 312, 80 * GiB);
    add_gpu_v(a, 1, "H100-SXM-80GB", "nvidia", 989, 80 * GiB);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    r.model = "h100-sxm-80gb";
    gp_alloc_placement p = alloc_ok(a, &r);
    assert_int_equal(p.gpu[0], 1);
    r.model = "A100-80gb";
    p = alloc_ok(a, &r);
    assert_int_equal(p.gpu[0], 0);
    r.model = "B200";
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "2 are not model B200 (no GPU of that model is known)");
    assert_contains(msg, "without the model/vendor filter it would fit");
    gp_alloc_free(a);
}

static void the_vendor_filter_and_a_node_pin_restrict_the_candidates(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "p", GP_STRATEGY_COMPACT_FIRST, 0, 0, 0);
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%d", i);
        add_node(a, name, 0);
    }
    add_gpu_v(a, 0, "A100-80GB", "nvidia", 312, 80 * GiB);
    add_gpu_v(a, 1, "MI300X", "amd", 1307, 192 * GiB);
    add_gpu_v(a, 2, "A100-80GB", "nvidia", 312, 80 * GiB);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    r.vendor = "AMD";
    assert_int_equal(alloc_ok(a, &r).gpu[0], 1);
    r.vendor = NULL;
    r.node = 2; /* compact-first alone would pick the fuller n1 */
    assert_int_equal(alloc_ok(a, &r).gpu[0], 2);
    r.vendor = "amd"; /* pinned to a node without such GPUs */
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "no GPU of node \"n2\" fits: of its 1 GPU, 1 is not vendor amd");
    gp_alloc_free(a);
}

static void unhealthy_gpus_and_nodes_not_ready_take_no_placements(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 2, 0);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    gp_alloc_set_gpu_healthy(a, 0, false);
    assert_int_equal(alloc_ok(a, &r).gpu[0], 1);
    assert_false(gpu_state(a, 0).healthy);
    gp_alloc_set_node_ready(a, 0, false);
    assert_int_equal(alloc_ok(a, &r).gpu[0], 2);
    gp_alloc_set_node_ready(a, 1, false);
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(msg, "no GPU of pool \"default\" fits: of 4 GPUs, 4 are on nodes that are not ready");
    r.node = 1;
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "node \"n1\" is not ready");
    r.node = -1;
    gp_alloc_set_node_ready(a, 0, true); /* GPU 0 is still unhealthy */
    assert_int_equal(alloc_ok(a, &r).gpu[0], 1);
    gp_alloc_set_gpu_healthy(a, 1, false);
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "2 are on nodes that are not ready, 2 are unhealthy");
    gp_alloc_set_gpu_healthy(a, 0, true);
    assert_int_equal(alloc_ok(a, &r).gpu[0], 0);
    gp_alloc_free(a);
}

/* ---- remote (GPU-over-IP) workloads ------------------------------------------------------------------- */

static void a_remote_workload_lands_on_a_node_whose_worker_is_up(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 3, 2, 0);
    preload(a, 0, 50, 50); /* n0 is the fullest: compact-first sends local work there */
    gp_alloc_set_node_worker(a, 2, true);
    gp_alloc_request local = treq(0, 1, 10, 10, GiB, GiB), remote = local;
    remote.remote = true;
    assert_int_equal(alloc_ok(a, &local).node, 0);
    gp_alloc_placement p = alloc_ok(a, &remote);
    assert_int_equal(p.node, 2);
    assert_int_equal(p.gpu[0], 4);
    /* among nodes with a worker the strategy still decides: n1, once fuller than n2, takes the next one */
    gp_alloc_set_node_worker(a, 1, true);
    preload(a, 2, 60, 60);
    assert_int_equal(alloc_ok(a, &remote).node, 1);
    /* a worker that goes down takes no more remote work; its node (the fullest now) still takes local work */
    gp_alloc_set_node_worker(a, 1, false);
    assert_int_equal(alloc_ok(a, &remote).node, 2);
    assert_int_equal(alloc_ok(a, &local).node, 1);
    gp_alloc_set_node_worker(a, 2, false);
    gp_alloc_set_node_worker(a, 1, true);
    assert_int_equal(alloc_ok(a, &remote).node, 1);
    remote.gpu_count = 2; /* several GPUs: all on the worker's node */
    p = alloc_ok(a, &remote);
    assert_int_equal(p.node, 1);
    assert_int_equal(p.gpu[0], 2);
    assert_int_equal(p.gpu[1], 3);
    /* a node that is not ready takes nothing, worker or not */
    remote.gpu_count = 1;
    gp_alloc_set_node_ready(a, 1, false);
    place_fails(a, &remote, GP_ERR_CONFLICT);
    gp_alloc_set_node_ready(a, 1, true);
    assert_int_equal(alloc_ok(a, &remote).node, 1);
    gp_alloc_free(a);
}

static void a_remote_workload_is_refused_with_a_reason_when_no_worker_is_up(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 2, 0);
    gp_alloc_request r = treq(0, 1, 10, 10, GiB, GiB);
    r.remote = true;
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(msg,
                        "no ready node of pool \"default\" runs a GPU-over-IP worker that is up, and a "
                        "remote workload needs one; an agent's worker.address and worker.token_file name "
                        "the `gpupool worker` of its node (`gpupool up` runs one)");
    assert_int_equal(gpu_state(a, 0).allocations, 0); /* nothing committed anywhere */
    /* a worker on a node that is not ready does not count */
    gp_alloc_set_node_worker(a, 1, true);
    gp_alloc_set_node_ready(a, 1, false);
    assert_contains(place_fails(a, &r, GP_ERR_CONFLICT),
                    "no ready node of pool \"default\" runs a GPU-over-IP");
    gp_alloc_set_node_ready(a, 1, true);
    /* pinned to a node without one */
    r.node = 0;
    assert_contains(place_fails(a, &r, GP_ERR_CONFLICT),
                    "node \"n0\" runs no GPU-over-IP worker that is up, and a remote workload needs one: pin "
                    "a node whose worker is up, or none");
    r.node = 1;
    assert_int_equal(alloc_ok(a, &r).node, 1);
    /* workers that are full: the explanation counts the GPUs without one and says what would fit */
    r.node = -1;
    preload(a, 2, 90, 90); /* with the 10 above: full */
    preload(a, 3, 95, 95);
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(msg,
                        "no GPU of pool \"default\" fits: of 4 GPUs, 2 are on nodes without a GPU-over-IP "
                        "worker that is up (a remote workload needs one), 2 have less than 10 TFLOPS of "
                        "request capacity free (most free: 5 TFLOPS on node n1); a request and limit of "
                        "at most 5 TFLOPS would fit");
    r = treq(0, 2, 10, 10, GiB, GiB);
    r.remote = true;
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "as a local workload (not remote) it would fit (node n0, which runs no worker)");
    r.remote = false;
    assert_int_equal(alloc_ok(a, &r).node, 0);
    gp_alloc_free(a);
}

/* ---- quotas ------------------------------------------------------------------------------------------- */

static gp_alloc_quota_spec unlimited(void)
{
    return (gp_alloc_quota_spec){-1, -1, -1, -1, -1, -1, -1};
}

static void quotas_refuse_each_dimension_with_what_is_used_and_asked(void **state)
{
    (void)state;
    struct {
        const char *dim;
        gp_alloc_quota_spec q;
        const char *expect;
    } cases[] = {
        {"req_tflops", unlimited(),
         "quota 0: requested TFLOPS would total 40, over its 30 (20 in use + 20 asked)"},
        {"lim_tflops", unlimited(),
         "quota 0: TFLOPS limits would total 60, over its 50 (30 in use + 30 asked)"},
        {"req_vram", unlimited(),
         "quota 0: requested VRAM would total 4 GiB, over its 3 GiB (2 GiB in use + 2 GiB"},
        {"lim_vram", unlimited(),
         "quota 0: VRAM limits would total 8 GiB, over its 6 GiB (4 GiB in use + 4 GiB"},
        {"workloads", unlimited(), "quota 0: workloads would number 2, over its 1 (1 running + 1 asked)"},
        {"tflops_per", unlimited(),
         "this workload's TFLOPS limit would be 30 (1 GPU), over the 25 one workload"},
        {"vram_per", unlimited(),
         "this workload's VRAM limit would be 4 GiB (1 GPU), over the 3 GiB one workload"},
    };
    cases[0].q.req_tflops = 30;
    cases[1].q.lim_tflops = 50;
    cases[2].q.req_vram = 3 * GiB;
    cases[3].q.lim_vram = 6 * GiB;
    cases[4].q.max_workloads = 1;
    cases[5].q.max_tflops_per_workload = 25;
    cases[6].q.max_vram_per_workload = 3 * GiB;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 2, 0);
        gp_err err = {0};
        assert_int_equal(gp_alloc_add_quota(a, &cases[i].q, &err), 0);
        gp_alloc_request r = treq(0, 1, 20, 30, 2 * GiB, 4 * GiB);
        r.quota = 0;
        if (i < 5)
            alloc_ok(a, &r);
        const char *msg = place_fails(a, &r, GP_ERR_RANGE);
        if (strstr(msg, cases[i].expect) == NULL)
            fail_msg("%s: \"%s\" does not contain \"%s\"", cases[i].dim, msg, cases[i].expect);
        gp_alloc_free(a);
    }
}

static void quotas_are_charged_at_commit_over_all_gpus_and_given_back_at_release(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 4, 0);
    gp_err err = {0};
    gp_alloc_quota_spec q = unlimited();
    q.req_tflops = 100;
    assert_int_equal(gp_alloc_add_quota(a, &q, &err), 0);
    gp_alloc_request r = treq(0, 2, 30, 40, GiB, 2 * GiB);
    r.quota = 0;
    gp_alloc_placement p, p2;
    assert_int_equal(gp_alloc_place(a, &r, &p, &err), 0); /* placing alone charges nothing */
    gp_alloc_quota_state qs;
    assert_int_equal(gp_alloc_quota_state_get(a, 0, &qs), 0);
    assert_int_equal(qs.workloads, 0);
    gp_alloc_commit(a, &r, &p);
    assert_int_equal(gp_alloc_quota_state_get(a, 0, &qs), 0);
    assert_int_equal(qs.workloads, 1);
    assert_true(fabs(qs.req_tflops - 60) < 1e-9);
    assert_true(fabs(qs.lim_tflops - 80) < 1e-9);
    assert_int_equal(qs.req_vram, 2 * GiB);
    assert_int_equal(qs.lim_vram, 4 * GiB);
    /* the second would take the namespace to 120 TFLOPS: refused, and nothing changes */
    gp_alloc_gpu_state before = gpu_state(a, 0);
    assert_int_equal(gp_alloc_allocate(a, &r, &p2, &err), -1);
    assert_int_equal(err.code, GP_ERR_RANGE);
    gp_alloc_gpu_state after = gpu_state(a, 0);
    assert_true(before.req_tflops == after.req_tflops && before.lim_tflops == after.lim_tflops);
    assert_true(before.req_vram == after.req_vram && before.lim_vram == after.lim_vram);
    assert_int_equal(before.allocations, after.allocations);
    assert_int_equal(gp_alloc_quota_state_get(a, 0, &qs), 0);
    assert_int_equal(qs.workloads, 1);
    gp_alloc_release(a, &r, &p);
    assert_int_equal(gp_alloc_quota_state_get(a, 0, &qs), 0);
    assert_int_equal(qs.workloads, 0);
    assert_true(qs.req_tflops == 0 && qs.lim_tflops == 0 && qs.req_vram == 0 && qs.lim_vram == 0);
    assert_int_equal(gp_alloc_allocate(a, &r, &p2, &err), 0);
    assert_int_equal(gp_alloc_quota_state_get(a, 7, &qs), -1);
    gp_alloc_free(a);
}

static void percent_requests_are_charged_to_quotas_as_the_chosen_gpus_tflops(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "p", GP_STRATEGY_LOW_LOAD_FIRST, 0, 0, 0);
    add_node(a, "big", 0);
    add_gpu_v(a, 0, "H100-SXM-80GB", "nvidia", 989, 80 * GiB);
    gp_err err = {0};
    gp_alloc_quota_spec q = unlimited();
    q.req_tflops = 400;
    assert_int_equal(gp_alloc_add_quota(a, &q, &err), 0);
    gp_alloc_request r = preq(0, 1, 50, 50, GiB, GiB); /* 494.5 TFLOPS of an H100 */
    r.quota = 0;
    const char *msg = place_fails(a, &r, GP_ERR_RANGE);
    assert_contains(msg, "requested TFLOPS would total 494.5, over its 400 (0 in use + 494.5 asked)");
    r.req_pct = r.lim_pct = 40;
    alloc_ok(a, &r);
    gp_alloc_quota_state qs;
    assert_int_equal(gp_alloc_quota_state_get(a, 0, &qs), 0);
    assert_true(fabs(qs.req_tflops - 395.6) < 1e-9);
    gp_alloc_free(a);
}

/* ---- bad input ---------------------------------------------------------------------------------------- */

static void bad_requests_are_invalid_and_change_nothing(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 2, 0);
    add_pool(a, "other", GP_STRATEGY_COMPACT_FIRST, 0, 0, 0);
    gp_err err = {0};
    gp_alloc_quota_spec q = unlimited();
    assert_int_equal(gp_alloc_add_quota(a, &q, &err), 0);
    gp_alloc_request good = treq(0, 1, 10, 20, GiB, 2 * GiB);
    struct {
        gp_alloc_request r;
        const char *expect;
    } cases[16];
    int n = 0;
    for (int i = 0; i < 16; i++)
        cases[i].r = good;
    cases[n].r.pool = 5, cases[n++].expect = "pool 5 does not exist";
    cases[n].r.pool = -1, cases[n++].expect = "pool -1 does not exist";
    cases[n].r.gpu_count = 0, cases[n++].expect = "gpu-count 0 is out of range";
    cases[n].r.gpu_count = 17, cases[n++].expect = "gpu-count 17 is out of range";
    cases[n].r.req_tflops = 30, cases[n++].expect = "tflops-request 30 is more than tflops-limit 20";
    cases[n].r.req_tflops = 0, cases[n].r.lim_tflops = 0,
    cases[n++].expect = "tflops-limit must be more than 0";
    cases[n].r.req_tflops = -1, cases[n++].expect = "give both (0 <= request <= limit) or neither";
    cases[n].r.req_pct = 10, cases[n++].expect = "give one or the other";
    cases[n].r.req_tflops = NAN, cases[n++].expect = "must be finite";
    cases[n].r = preq(0, 1, 150, 200, GiB, GiB),
    cases[n++].expect = "percent-request 150 is more than a whole GPU";
    cases[n].r = preq(0, 1, 50, 40, GiB, GiB),
    cases[n++].expect = "percent-request 50 is more than percent-limit 40";
    cases[n].r = preq(0, 1, 0, 0, GiB, GiB), cases[n++].expect = "no compute asked for";
    cases[n].r.req_vram = 3 * GiB, cases[n++].expect = "vram-request 3 GiB is more than vram-limit 2 GiB";
    cases[n].r.req_vram = 0, cases[n].r.lim_vram = 0, cases[n++].expect = "vram-limit must be more than 0";
    cases[n].r.node = 0, cases[n].r.pool = 1,
    cases[n++].expect = "node \"n0\" is in pool \"default\", not in";
    cases[n].r.quota = 3, cases[n++].expect = "quota 3 does not exist";
    assert_int_equal(n, 16);
    for (int i = 0; i < n; i++) {
        const char *msg = place_fails(a, &cases[i].r, GP_ERR_INVALID);
        if (strstr(msg, cases[i].expect) == NULL)
            fail_msg("case %d: \"%s\" does not contain \"%s\"", i, msg, cases[i].expect);
    }
    assert_int_equal(gp_alloc_place(a, NULL, &(gp_alloc_placement){0}, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    for (int g = 0; g < 4; g++)
        assert_int_equal(gpu_state(a, g).allocations, 0);
    gp_alloc_free(a);
}

static void bad_cluster_input_is_refused_with_a_reason(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    gp_err err = {0};
    gp_alloc_pool_spec p = {.name = "", .strategy = GP_STRATEGY_COMPACT_FIRST};
    assert_int_equal(gp_alloc_add_pool(a, &p, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    p.name = "p";
    p.tflops_oversell_pct = -5;
    assert_int_equal(gp_alloc_add_pool(a, &p, &err), -1);
    assert_contains(err.msg, "tflops-oversell -5% is out of range");
    p.tflops_oversell_pct = 0;
    p.strategy = (gp_alloc_strategy)9;
    assert_int_equal(gp_alloc_add_pool(a, &p, &err), -1);
    assert_contains(err.msg, "unknown strategy 9");
    p.strategy = GP_STRATEGY_LOW_LOAD_FIRST;
    assert_int_equal(gp_alloc_add_pool(a, &p, &err), 0);
    assert_int_equal(gp_alloc_set_pool(a, 3, &p, &err), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_int_equal(gp_alloc_add_node(a, "n", 2, &err), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_int_equal(gp_alloc_add_node(a, NULL, 0, &err), -1);
    assert_int_equal(gp_alloc_add_node(a, "n", 0, &err), 0);
    gp_alloc_gpu_spec g = {.uuid = "GPU-1", .model = "T4", .vendor = "nvidia", .tflops = 0, .vram = GiB};
    assert_int_equal(gp_alloc_add_gpu(a, 0, &g, &err), -1);
    assert_contains(err.msg, "TFLOPS 0 is out of range");
    g.tflops = 65;
    g.vram = 0;
    assert_int_equal(gp_alloc_add_gpu(a, 0, &g, &err), -1);
    assert_contains(err.msg, "VRAM of 0 bytes is out of range");
    g.vram = GiB;
    g.model = NULL;
    assert_int_equal(gp_alloc_add_gpu(a, 0, &g, &err), -1);
    assert_contains(err.msg, "a model key");
    g.model = "T4";
    assert_int_equal(gp_alloc_add_gpu(a, 4, &g, &err), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_int_equal(gp_alloc_add_gpu(a, 0, &g, &err), 0);
    gp_alloc_quota_spec q = unlimited();
    q.req_tflops = NAN;
    assert_int_equal(gp_alloc_add_quota(a, &q, &err), -1);
    assert_int_equal(err.code, GP_ERR_INVALID);
    assert_int_equal(gp_alloc_set_quota(a, 0, &q, &err), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    /* out-of-range ids of the setters and getters change nothing and do not crash */
    gp_alloc_set_node_ready(a, 9, false);
    gp_alloc_set_gpu_healthy(a, -1, false);
    gp_alloc_set_gpu_load(a, 9, 0.5);
    gp_alloc_gpu_state s;
    assert_int_equal(gp_alloc_gpu_state_get(a, 1, &s), -1);
    assert_int_equal(gp_alloc_check(a, &err), 0);
    gp_alloc_free(a);
    gp_alloc_free(NULL);
}

static void a_malformed_commit_changes_nothing(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 2, 0);
    gp_alloc_request r = treq(0, 2, 10, 10, GiB, GiB);
    gp_alloc_placement p = {
        .node = 0, .ngpus = 2, .gpu = {0, 99}, .req_tflops = {10, 10}, .lim_tflops = {10, 10}};
    gp_alloc_commit(a, &r, &p);
    p.gpu[1] = 1;
    p.req_tflops[1] = NAN;
    gp_alloc_commit(a, &r, &p);
    p.req_tflops[1] = 10;
    p.ngpus = 0;
    gp_alloc_commit(a, &r, &p);
    gp_alloc_commit(a, &r, NULL);
    for (int g = 0; g < 2; g++) {
        assert_int_equal(gpu_state(a, g).allocations, 0);
        assert_true(gpu_state(a, g).req_tflops == 0);
    }
    gp_alloc_free(a);
}

/* ---- release, restore, determinism -------------------------------------------------------------------- */

static void a_release_frees_the_capacity_for_the_next_placement(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 2, 1, 0);
    gp_alloc_request r = treq(0, 1, 50, 50, 40 * GiB, 40 * GiB);
    gp_alloc_placement p1 = alloc_ok(a, &r), p2 = alloc_ok(a, &r), p3 = alloc_ok(a, &r);
    assert_int_equal(p1.gpu[0], 0);
    assert_int_equal(p2.gpu[0], 0);
    assert_int_equal(p3.gpu[0], 1);
    gp_alloc_release(a, &r, &p1);
    gp_alloc_gpu_state s = gpu_state(a, 0);
    assert_true(fabs(s.req_tflops - 50) < 1e-9);
    assert_int_equal(s.req_vram, 40 * GiB);
    assert_int_equal(s.allocations, 1);
    /* GPU 0 and GPU 1 are now equally committed: the lowest id */
    gp_alloc_placement p4 = alloc_ok(a, &r);
    assert_int_equal(p4.gpu[0], 0);
    gp_alloc_release(a, &r, &p2);
    gp_alloc_release(a, &r, &p4);
    gp_alloc_release(a, &r, &p3);
    for (int g = 0; g < 2; g++) {
        s = gpu_state(a, g);
        assert_true(s.req_tflops == 0 && s.lim_tflops == 0 && s.req_vram == 0 && s.allocations == 0);
    }
    gp_err err = {0};
    assert_int_equal(gp_alloc_check(a, &err), 0);
    gp_alloc_free(a);
}

static void a_restored_over_capacity_placement_is_accepted_and_reported(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 1, 2, 0);
    gp_alloc_request r = treq(0, 1, 150, 150, 100 * GiB, 100 * GiB);
    gp_alloc_placement p = {.node = 0, .ngpus = 1, .gpu = {1}, .req_vram = 100 * GiB, .lim_vram = 100 * GiB};
    p.req_tflops[0] = p.lim_tflops[0] = 150;
    gp_alloc_commit(a, &r, &p); /* more than the GPU has: what the store says was running is trusted */
    gp_alloc_gpu_state s = gpu_state(a, 1);
    assert_true(s.over_capacity);
    assert_true(fabs(s.req_tflops - 150) < 1e-9);
    assert_int_equal(s.req_vram, 100 * GiB);
    assert_int_equal(s.allocations, 1);
    assert_false(gpu_state(a, 0).over_capacity);
    gp_alloc_request small = treq(0, 1, 1, 1, GiB, GiB);
    small.node = 0;
    assert_int_equal(alloc_ok(a, &small).gpu[0], 0); /* the over-full GPU takes nothing more */
    gp_alloc_release(a, &r, &p);
    assert_false(gpu_state(a, 1).over_capacity);
    gp_err err = {0};
    assert_int_equal(gp_alloc_check(a, &err), 0);
    gp_alloc_free(a);
}

/* A reproducible stream of random numbers (xorshift64*). */
static uint64_t rng;
static uint32_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}
static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static const struct {
    const char *model, *vendor;
    double tflops;
    uint64_t vram;
} models[] = {{"A100-80GB", "nvidia", 312, 80 * GiB},
              {"H100-SXM-80GB", "nvidia", 989, 80 * GiB},
              {"T4", "nvidia", 65, 15 * GiB},
              {"MI300X", "amd", 1307, 192 * GiB}};

/* Three pools (one per strategy), 45 nodes of 0-12 GPUs, every 7th node mixing models, 3 quotas. */
static gp_allocator *random_cluster(void)
{
    gp_allocator *a = gp_alloc_new();
    static const double oversell[] = {0, 50, 100};
    for (int p = 0; p < 3; p++) {
        char name[8];
        snprintf(name, sizeof name, "p%d", p);
        add_pool(a, name, (gp_alloc_strategy)p, oversell[p], p * 10, p == 2 ? 10 : 0);
    }
    for (int n = 0; n < 45; n++) {
        char name[16];
        snprintf(name, sizeof name, "node-%d", n);
        add_node(a, name, n % 3);
        int per = rnd_in(0, 12), m = rnd_in(0, 3);
        for (int g = 0; g < per; g++) {
            int mm = n % 7 == 6 ? rnd_in(0, 3) : m;
            add_gpu_v(a, n, models[mm].model, models[mm].vendor, models[mm].tflops, models[mm].vram);
        }
    }
    gp_err err = {0};
    for (int i = 0; i < 3; i++) {
        gp_alloc_quota_spec q = {.req_tflops = 20000 + 10000 * i,
                                 .lim_tflops = -1,
                                 .req_vram = (int64_t)(2000 * GiB),
                                 .lim_vram = -1,
                                 .max_workloads = 100 + 50 * i,
                                 .max_tflops_per_workload = i == 2 ? 3000 : -1,
                                 .max_vram_per_workload = -1};
        assert_true(gp_alloc_add_quota(a, &q, &err) >= 0);
    }
    return a;
}

static gp_alloc_request random_request(const gp_allocator *a, int nnodes)
{
    static const char *filters[] = {"A100-80GB", "h100-sxm-80gb", "T4", "MI300X", "B200"};
    int k = rnd_in(0, 9) < 7 ? 1 : rnd_in(2, 6);
    if (rnd_in(0, 50) == 0)
        k = 13;
    gp_alloc_request r;
    uint64_t vreq = (uint64_t)rnd_in(0, 40) * GiB / 2, vlim = vreq + (uint64_t)rnd_in(1, 40) * GiB / 2;
    if (rnd_in(0, 9) < 7) {
        double req = rnd_in(0, 400) * 0.5;
        r = treq(rnd_in(0, 2), k, req, req + rnd_in(0, 200) * 0.5 + 0.5, vreq, vlim);
    } else {
        double req = rnd_in(0, 100);
        r = preq(rnd_in(0, 2), k, req, req + rnd_in(1, 100), vreq, vlim);
    }
    if (rnd_in(0, 4) == 0)
        r.model = filters[rnd_in(0, 4)];
    if (rnd_in(0, 19) == 0)
        r.vendor = rnd_in(0, 1) ? "nvidia" : "AMD";
    if (rnd_in(0, 19) == 0)
        r.node = rnd_in(0, nnodes / 3 - 1) * 3 + r.pool;
    if (rnd_in(0, 2) == 0)
        r.quota = rnd_in(0, 2);
    r.remote = rnd_in(0, 3) == 0;
    (void)a;
    return r;
}

typedef struct held {
    gp_alloc_request r;
    gp_alloc_placement p;
} held;

/* Runs ops random operations; with compare, holds every placement equal to the full scan's. Returns a hash
 * of all placements and errors. */
static uint64_t random_run(uint64_t seed, int ops, bool compare)
{
    rng = seed;
    gp_allocator *a = random_cluster();
    static held live[4096];
    int nlive = 0, ngpus = 0, nplaced = 0, nfailed = 0;
    gp_alloc_gpu_state s;
    while (gp_alloc_gpu_state_get(a, ngpus, &s) == 0)
        ngpus++;
    uint64_t hash = 1469598103934665603ull;
    for (int op = 0; op < ops; op++) {
        int what = rnd_in(0, 99);
        if (what < 55 || nlive == 0) {
            gp_alloc_request r = random_request(a, 45);
            gp_alloc_placement p, q;
            gp_err e1 = {0}, e2 = {0};
            int rc = gp_alloc_place(a, &r, &p, &e1);
            if (compare) {
                int rc2 = gp_alloc_place_scan(a, &r, &q, &e2);
                if (rc != rc2)
                    fail_msg(
                        "op %d: index %d (%s), scan %d (node %d) for pool %d k %d %s %g/%g %g/%g model %s "
                        "vendor %s node %d quota %d remote %d",
                        op, rc, e1.msg, rc2, q.node, r.pool, r.gpu_count, rc2 == 0 ? "" : e2.msg,
                        r.req_tflops, r.lim_tflops, r.req_pct, r.lim_pct, r.model ? r.model : "-",
                        r.vendor ? r.vendor : "-", r.node, r.quota, r.remote);
                if (rc == 0)
                    assert_memory_equal(&p, &q, sizeof p);
                else {
                    assert_int_equal(e1.code, e2.code);
                    assert_string_equal(e1.msg, e2.msg);
                }
            }
            if (rc == 0) {
                nplaced++;
                gp_alloc_commit(a, &r, &p);
                for (int i = 0; i < p.ngpus; i++)
                    hash = (hash ^ (uint64_t)p.gpu[i]) * 1099511628211ull;
                if (nlive < 4096)
                    live[nlive++] = (held){r, p};
            } else {
                nfailed++;
                for (const char *c = e1.msg; *c; c++)
                    hash = (hash ^ (uint8_t)*c) * 1099511628211ull;
            }
        } else if (what < 85) {
            int i = rnd_in(0, nlive - 1);
            gp_alloc_release(a, &live[i].r, &live[i].p);
            live[i] = live[--nlive];
        } else if (what < 90) {
            gp_alloc_set_gpu_healthy(a, rnd_in(0, ngpus - 1), rnd_in(0, 3) != 0);
        } else if (what < 92) {
            gp_alloc_set_node_ready(a, rnd_in(0, 44), rnd_in(0, 2) != 0);
        } else if (what < 94) {
            gp_alloc_set_node_worker(a, rnd_in(0, 44), rnd_in(0, 2) != 0);
        } else if (what == 94) { /* a pool changes strategy and oversubscription under load */
            int pool = rnd_in(0, 2);
            char name[8];
            snprintf(name, sizeof name, "p%d", pool);
            gp_alloc_pool_spec spec = {name, rnd_in(0, 4) * 25.0, rnd_in(0, 2) * 10.0, rnd_in(0, 1) * 10.0,
                                       (gp_alloc_strategy)rnd_in(0, 2)};
            gp_err err = {0};
            assert_int_equal(gp_alloc_set_pool(a, pool, &spec, &err), pool);
        } else {
            gp_alloc_set_gpu_load(a, rnd_in(0, ngpus - 1), rnd_in(0, 4) / 4.0);
        }
        if (compare && op % 250 == 0) {
            gp_err err = {0};
            if (gp_alloc_check(a, &err) != 0)
                fail_msg("after op %d: %s", op, err.msg);
        }
    }
    gp_err err = {0};
    if (gp_alloc_check(a, &err) != 0)
        fail_msg("at the end: %s", err.msg);
    assert_true(nplaced > ops / 5 && nfailed > ops / 20); /* both paths were exercised */
    /* releasing everything leaves every GPU and quota empty */
    while (nlive > 0) {
        nlive--;
        gp_alloc_release(a, &live[nlive].r, &live[nlive].p);
    }
    for (int g = 0; g < ngpus; g++) {
        assert_int_equal(gp_alloc_gpu_state_get(a, g, &s), 0);
        assert_true(s.req_tflops == 0 && s.lim_tflops == 0 && s.req_vram == 0 && s.lim_vram == 0);
        assert_int_equal(s.allocations, 0);
    }
    assert_int_equal(gp_alloc_check(a, &err), 0);
    gp_alloc_free(a);
    return hash;
}

static void the_index_agrees_with_a_full_scan_over_random_operations(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++)
        random_run(seed * 0x9E3779B97F4A7C15ull, 3000, true);
}

static void the_same_operations_give_the_same_placements(void **state)
{
    (void)state;
    uint64_t h1 = random_run(42, 3000, false), h2 = random_run(42, 3000, false);
    assert_true(h1 == h2);
    assert_true(random_run(43, 3000, false) != h1);
}

/* ---- explanations ------------------------------------------------------------------------------------- */

static void an_explanation_names_the_failing_constraint_and_its_numbers(void **state)
{
    (void)state;
    gp_allocator *a = cluster(GP_STRATEGY_COMPACT_FIRST, 3, 2, 50);
    gp_alloc_request r = treq(0, 1, 120, 120, GiB, GiB);
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(msg,
                        "no GPU of pool \"default\" fits: of 6 GPUs, 6 have less than 120 TFLOPS of request "
                        "capacity free (most free: 100 TFLOPS on node n0); asking for at most 100 TFLOPS "
                        "would fit");
    preload(a, 0, 30, 30);
    preload(a, 2, 30, 30);
    preload(a, 4, 30, 30);
    gp_alloc_set_node_ready(a, 2, false);
    r = treq(0, 2, 80, 80, GiB, GiB);
    msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_string_equal(
        msg, "no node of pool \"default\" has 2 GPUs that fit: of 6 GPUs, 2 are on nodes that are "
             "not ready, 2 have less than 80 TFLOPS of request capacity free (most free: 100 TFLOPS "
             "on node n0), 2 fit but no node has 2 of them (at most 1, on node n0); asking for at "
             "most 70 TFLOPS would fit");
    gp_alloc_free(a);
}

static void an_explanation_of_a_large_pool_stays_within_the_message_size(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    char name[200];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    add_pool(a, name, GP_STRATEGY_COMPACT_FIRST, 0, 0, 0);
    for (int n = 0; n < 200; n++) {
        name[0] = (char)('a' + n % 26);
        name[1] = (char)('a' + n / 26);
        add_node(a, name, 0);
        for (int g = 0; g < 4; g++)
            add_gpu_v(a, n, n % 2 ? "A100-80GB" : "T4", n % 5 ? "nvidia" : "amd", n % 2 ? 312 : 65, 16 * GiB);
        if (n % 3 == 0)
            gp_alloc_set_node_ready(a, n, false);
        if (n % 7 == 0)
            gp_alloc_set_gpu_healthy(a, n * 4, false);
    }
    gp_alloc_request r = treq(0, 3, 100, 300, 10 * GiB, 20 * GiB);
    r.model = "A100-80GB";
    r.vendor = "nvidia";
    const char *msg = place_fails(a, &r, GP_ERR_CONFLICT);
    assert_contains(msg, "no node of pool \"xxxx");
    assert_contains(msg, "are not model A100-80GB");
    assert_contains(msg, "would fit");
    gp_alloc_free(a);
}

static void an_empty_pool_says_it_has_no_gpus(void **state)
{
    (void)state;
    gp_allocator *a = gp_alloc_new();
    add_pool(a, "empty", GP_STRATEGY_COMPACT_FIRST, 0, 0, 0);
    add_node(a, "bare", 0);
    gp_alloc_request r = treq(0, 1, 1, 1, GiB, GiB);
    assert_string_equal(place_fails(a, &r, GP_ERR_CONFLICT),
                        "pool \"empty\" has no GPUs: add nodes with GPUs to it");
    gp_alloc_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compact_first_packs_the_fullest_node_and_its_fullest_gpu_that_fits),
        cmocka_unit_test(low_load_first_spreads_over_the_least_committed_gpus),
        cmocka_unit_test(low_load_first_breaks_commitment_ties_by_measured_load),
        cmocka_unit_test(node_compact_gpu_low_load_fills_the_fullest_node_on_its_emptiest_gpus),
        cmocka_unit_test(ties_go_to_the_lowest_node_and_gpu_ids),
        cmocka_unit_test(strategy_names_parse_and_print),
        cmocka_unit_test(changing_a_pool_changes_its_order_and_capacities),
        cmocka_unit_test(requests_are_held_to_physical_capacity_even_when_oversold),
        cmocka_unit_test(limits_are_held_to_oversold_tflops),
        cmocka_unit_test(vram_limits_may_expand_to_host_and_disk),
        cmocka_unit_test(percent_requests_resolve_to_each_gpus_tflops),
        cmocka_unit_test(a_multi_gpu_workload_gets_gpus_of_one_node),
        cmocka_unit_test(a_multi_gpu_workload_is_refused_when_free_gpus_are_on_different_nodes),
        cmocka_unit_test(the_model_filter_ignores_case),
        cmocka_unit_test(the_vendor_filter_and_a_node_pin_restrict_the_candidates),
        cmocka_unit_test(unhealthy_gpus_and_nodes_not_ready_take_no_placements),
        cmocka_unit_test(a_remote_workload_lands_on_a_node_whose_worker_is_up),
        cmocka_unit_test(a_remote_workload_is_refused_with_a_reason_when_no_worker_is_up),
        cmocka_unit_test(quotas_refuse_each_dimension_with_what_is_used_and_asked),
        cmocka_unit_test(quotas_are_charged_at_commit_over_all_gpus_and_given_back_at_release),
        cmocka_unit_test(percent_requests_are_charged_to_quotas_as_the_chosen_gpus_tflops),
        cmocka_unit_test(bad_requests_are_invalid_and_change_nothing),
        cmocka_unit_test(bad_cluster_input_is_refused_with_a_reason),
        cmocka_unit_test(a_malformed_commit_changes_nothing),
        cmocka_unit_test(a_release_frees_the_capacity_for_the_next_placement),
        cmocka_unit_test(a_restored_over_capacity_placement_is_accepted_and_reported),
        cmocka_unit_test(the_index_agrees_with_a_full_scan_over_random_operations),
        cmocka_unit_test(the_same_operations_give_the_same_placements),
        cmocka_unit_test(an_explanation_names_the_failing_constraint_and_its_numbers),
        cmocka_unit_test(an_explanation_of_a_large_pool_stays_within_the_message_size),
        cmocka_unit_test(an_empty_pool_says_it_has_no_gpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

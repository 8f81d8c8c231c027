/* allocator.c - how fast the controller's allocator decides: placements per second and their latency on a
 * pool of 10,000 GPUs, against a full scan of the same model in the same run.
 *
 * The model: 1,000 nodes of 10 GPUs (H100, A100, L40S, L4 nodes, every 50th node mixing H100s and A100s) in
 * three pools, one per strategy, with different oversell and VRAM expansion, and 20 namespace quotas. The
 * load: 50,000 workloads (fractions of a GPU in TFLOPS or percent, some 2-4 GPU workloads, some whole GPUs,
 * a quarter with a model filter) placed and committed one by one (gp_alloc_allocate), then 10,000 of them
 * released and placed again. A decision is one placement attempt, misfits (explained) included. The
 * baseline runs the same sequence on an identical model with gp_alloc_place_scan, which examines every node
 * of the pool; both must make the same decisions, and the benchmark says whether they did.
 *
 *   bench_allocator [WORKLOADS] [NODES]      (defaults 50000 and 1000; 10 GPUs per node)
 * Targets (issue 5): >= 20,000 decisions/s and p99 < 1 ms on the 2-core CI machine.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "controller/allocator.h"

#define GiB           (1ull << 30)
#define GPUS_PER_NODE 10
#define NQUOTAS       20

static const struct {
    const char *model;
    double tflops;
    uint64_t vram;
} models[] = {{"H100-SXM-80GB", 989, 80 * GiB},
              {"A100-80GB", 312, 80 * GiB},
              {"L40S", 362, 45 * GiB},
              {"L4", 121, 22 * GiB}};

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void) /* [0, 1) */
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static int irand(int lo, int hi)
{
    return lo + (int)(urand() * (hi - lo + 1));
}

static int model_of_node(int n)
{
    int r = n % 10; /* 40% H100, 30% A100, 20% L40S, 10% L4 */
    return r < 4 ? 0 : r < 7 ? 1 : r < 9 ? 2 : 3;
}

static gp_allocator *build(int nodes)
{
    gp_allocator *a = gp_alloc_new();
    gp_err err;
    static const gp_alloc_pool_spec pools[] = {
        {"training", 0, 0, 0, GP_STRATEGY_COMPACT_FIRST},
        {"inference", 50, 20, 0, GP_STRATEGY_LOW_LOAD_FIRST},
        {"shared", 100, 50, 50, GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD},
    };
    for (int p = 0; p < 3; p++)
        if (gp_alloc_add_pool(a, &pools[p], &err) < 0)
            goto fail;
    for (int n = 0; n < nodes; n++) {
        char name[32], uuid[48];
        snprintf(name, sizeof name, "node-%04d", n);
        int pool = n % 10 < 4 ? 0 : n % 10 < 7 ? 1 : 2;
        int id = gp_alloc_add_node(a, name, pool, &err);
        if (id < 0)
            goto fail;
        for (int g = 0; g < GPUS_PER_NODE; g++) {
            int m = n % 50 == 49 ? g % 2 : model_of_node(n / 10 + n);
            snprintf(uuid, sizeof uuid, "GPU-%04d-%02d", n, g);
            gp_alloc_gpu_spec s = {uuid, models[m].model, "nvidia", models[m].tflops, models[m].vram};
            if (gp_alloc_add_gpu(a, id, &s, &err) < 0)
                goto fail;
        }
    }
    for (int q = 0; q < NQUOTAS; q++) {
        gp_alloc_quota_spec s = {.req_tflops = 400000,
                                 .lim_tflops = -1,
                                 .req_vram = -1,
                                 .lim_vram = (int64_t)(80000 * GiB),
                                 .max_workloads = 2600,
                                 .max_tflops_per_workload = 6000,
                                 .max_vram_per_workload = -1};
        if (gp_alloc_add_quota(a, &s, &err) < 0)
            goto fail;
    }
    return a;
fail:
    fprintf(stderr, "bench_allocator: building the model: %s\n", err.msg);
    exit(1);
}

static gp_alloc_request workload(void)
{
    gp_alloc_request r = {
        .pool = irand(0, 9) < 4 ? 0 : irand(0, 1) + 1, .node = -1, .quota = -1, .gpu_count = 1};
    int m = irand(0, 3);
    double kind = urand(), frac;
    if (kind < 0.92) {
        frac = 0.02 + urand() * urand() * 0.25; /* mostly small fractions of a GPU */
    } else if (kind < 0.97) {
        r.gpu_count = irand(2, 4);
        frac = 0.3 + urand() * 0.5;
    } else {
        frac = 0.9 + urand() * 0.1;
    }
    double burst = 1 + urand();
    if (urand() < 0.7) {
        r.req_tflops = frac * models[m].tflops;
        r.lim_tflops = r.req_tflops * burst;
    } else {
        r.req_tflops = r.lim_tflops = -1;
        r.req_pct = frac * 100;
        r.lim_pct = frac * 100 * burst;
    }
    r.req_vram = (uint64_t)(frac * (double)models[m].vram);
    r.lim_vram = (uint64_t)((double)r.req_vram * (1 + urand() * 0.5)) + GiB / 4;
    if (urand() < 0.25)
        r.model = models[m].model;
    if (urand() < 0.7)
        r.quota = irand(0, NQUOTAS - 1);
    return r;
}

typedef struct slot {
    gp_alloc_request r;
    gp_alloc_placement p;
    bool live;
} slot;

typedef struct result {
    double *lat, *lat_placed; /* seconds per decision, and per decision that placed */
    int decisions, placed, misfits, refused_by_quota;
    double total, misfit_total, release_total;
    int releases;
    uint64_t hash;
} result;

static int by_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void decide(gp_allocator *a, slot *s, bool scan, result *res)
{
    gp_err err;
    double t0 = bench_now();
    int rc = scan ? gp_alloc_place_scan(a, &s->r, &s->p, &err) : gp_alloc_place(a, &s->r, &s->p, &err);
    if (rc == 0)
        gp_alloc_commit(a, &s->r, &s->p);
    double dt = bench_now() - t0;
    res->lat[res->decisions++] = dt;
    res->total += dt;
    s->live = rc == 0;
    if (rc == 0) {
        res->lat_placed[res->placed++] = dt;
        for (int i = 0; i < s->p.ngpus; i++)
            res->hash = (res->hash ^ (uint64_t)s->p.gpu[i]) * 1099511628211ull;
    } else {
        res->misfits += err.code == GP_ERR_CONFLICT;
        res->misfit_total += err.code == GP_ERR_CONFLICT ? dt : 0;
        res->refused_by_quota += err.code == GP_ERR_RANGE;
        res->hash = (res->hash ^ (uint64_t)err.code) * 1099511628211ull;
    }
}

static void run(slot *w, int nw, const int *order, int nrel, int nodes, bool scan, result *res)
{
    gp_allocator *a = build(nodes);
    res->lat = malloc(sizeof(double) * (size_t)(nw + nrel));
    res->lat_placed = malloc(sizeof(double) * (size_t)(nw + nrel));
    res->hash = 1469598103934665603ull;
    for (int i = 0; i < nw; i++)
        decide(a, &w[i], scan, res);
    for (int i = 0; i < nrel; i++) { /* release some, in a random order */
        slot *s = &w[order[i]];
        if (!s->live)
            continue;
        double t0 = bench_now();
        gp_alloc_release(a, &s->r, &s->p);
        res->release_total += bench_now() - t0;
        res->releases++;
        s->live = false;
    }
    for (int i = 0; i < nrel; i++) /* and place them again */
        decide(a, &w[order[i]], scan, res);
    qsort(res->lat, (size_t)res->decisions, sizeof(double), by_double);
    qsort(res->lat_placed, (size_t)res->placed, sizeof(double), by_double);
    gp_err err;
    if (gp_alloc_check(a, &err) != 0) {
        fprintf(stderr, "bench_allocator: %s\n", err.msg);
        exit(1);
    }
    gp_alloc_free(a);
}

static double pct(const double *sorted, int n, double p)
{
    return n > 0 ? sorted[(int)(p * (n - 1))] : 0;
}

int main(int argc, char **argv)
{
    int nw = argc > 1 ? atoi(argv[1]) : 50000, nodes = argc > 2 ? atoi(argv[2]) : 1000;
    if (nw < 10 || nodes < 10) {
        fprintf(stderr, "usage: bench_allocator [WORKLOADS >= 10] [NODES >= 10]\n");
        return 2;
    }
    int nrel = nw / 5;
    slot *w = calloc((size_t)nw, sizeof *w), *w2 = calloc((size_t)nw, sizeof *w2);
    int *order = malloc(sizeof(int) * (size_t)nw);
    for (int i = 0; i < nw; i++) {
        w[i].r = workload();
        order[i] = i;
    }
    for (int i = nw - 1; i > 0; i--) {
        int j = irand(0, i), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    memcpy(w2, w, sizeof *w * (size_t)nw);

    char cpu[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof line, f))
        if (sscanf(line, "model name : %255[^\n]", cpu) == 1)
            break;
    if (f != NULL)
        fclose(f);
    char date[32];
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&t));
    printf("# allocator  date=%s  cpu=\"%s\"  gpus=%d  workloads=%d (+%d released and placed again)\n", date,
           cpu, nodes * GPUS_PER_NODE, nw, nrel);
    printf("%-44s %16s %16s %8s  %s\n", "metric", "value", "baseline", "ratio", "baseline is");

    result idx = {0}, scan = {0};
    run(w, nw, order, nrel, nodes, false, &idx);
    run(w2, nw, order, nrel, nodes, true, &scan);

    const char *base = "full scan of the pool, same decisions";
    bench_line("decisions/s (place + commit)", idx.decisions / idx.total, scan.decisions / scan.total, "/s",
               base);
    bench_line("p50 decision latency", pct(idx.lat, idx.decisions, 0.50) * 1e6,
               pct(scan.lat, scan.decisions, 0.50) * 1e6, "us", base);
    bench_line("p99 decision latency", pct(idx.lat, idx.decisions, 0.99) * 1e6,
               pct(scan.lat, scan.decisions, 0.99) * 1e6, "us", base);
    bench_line("max decision latency", pct(idx.lat, idx.decisions, 1.0) * 1e6,
               pct(scan.lat, scan.decisions, 1.0) * 1e6, "us", base);
    bench_line("p99 latency of decisions that placed", pct(idx.lat_placed, idx.placed, 0.99) * 1e6,
               pct(scan.lat_placed, scan.placed, 0.99) * 1e6, "us", base);
    bench_line("misfit latency (mean, with explanation)",
               idx.misfits ? idx.misfit_total / idx.misfits * 1e6 : 0,
               scan.misfits ? scan.misfit_total / scan.misfits * 1e6 : 0, "us", base);
    bench_line("release latency (mean)", idx.release_total / idx.releases * 1e6,
               scan.release_total / scan.releases * 1e6, "us", base);
    printf(
        "# decisions %d: %d placed, %d misfits (explained), %d refused by quota; same decisions as the scan: "
        "%s\n",
        idx.decisions, idx.placed, idx.misfits, idx.refused_by_quota, idx.hash == scan.hash ? "yes" : "NO");
    free(idx.lat);
    free(scan.lat);
    free(idx.lat_placed);
    free(scan.lat_placed);
    free(w);
    free(w2);
    free(order);
    return idx.hash == scan.hash ? 0 : 1;
}

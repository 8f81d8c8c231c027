/* allocator.h - placing workloads on GPUs by TFLOPS and VRAM: the controller's scheduler.
 *
 * The allocator holds, in memory, every pool, node and GPU the controller knows and what is committed on
 * each GPU (the sum of the requests and of the limits of the allocations placed there). A placement fits a
 * workload's REQUESTS against the GPUs' physical capacity and its LIMITS against their oversold capacity
 * (pool settings: TFLOPS x (1 + oversell%), VRAM x (1 + host-expansion% + disk-expansion%)), all its GPUs on
 * one node, honouring model/vendor/node filters, health, quotas and, for a remote (GPU-over-IP) workload, the
 * node's worker; it chooses among the fits by the pool's
 * strategy and is deterministic (ties go to the lowest id). A misfit is explained in words a user can act on.
 *
 * Not thread-safe: the controller calls it under its own lock, which also makes the quota check atomic with
 * the commit. Ids are dense indices the caller gets back from the add functions; names are the caller's.
 * Ownership: the allocator copies what it is given; nothing it returns needs freeing except the allocator.
 * Cost: a placement looks at O(model groups x tree depth + candidates examined), not at every GPU; only the
 * explanation of a misfit scans the pool (allocator.c says how; bench/allocator.c measures it).
 */
#ifndef GP_CONTROLLER_ALLOCATOR_H
#define GP_CONTROLLER_ALLOCATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define GP_ALLOC_MAX_GPUS 16 /* GPUs of one workload (all on one node) */

typedef enum gp_alloc_strategy {
    GP_STRATEGY_COMPACT_FIRST = 0,         /* bin-pack: the fullest GPUs (and nodes) that fit */
    GP_STRATEGY_LOW_LOAD_FIRST,            /* spread: the emptiest GPUs */
    GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD, /* the fullest node that fits, its emptiest GPUs there */
} gp_alloc_strategy;

/* "compact-first", "low-load-first", "node-compact-gpu-low-load" <-> the enum; -1 if unknown. */
int gp_alloc_strategy_parse(const char *s);
const char *gp_alloc_strategy_name(gp_alloc_strategy s);

typedef struct gp_alloc_pool_spec {
    const char *name;
    double tflops_oversell_pct; /* limits may add up to TFLOPS x (1 + this/100); 0 = no overselling */
    double vram_host_pct;       /* VRAM limits may exceed VRAM by this % of it (expansion to host memory) */
    double vram_disk_pct;       /* ... and by this % more (expansion to disk) */
    gp_alloc_strategy strategy;
} gp_alloc_pool_spec;

typedef struct gp_alloc_gpu_spec {
    const char *uuid;
    const char *model;  /* the model table key, e.g. "H100-SXM-80GB" */
    const char *vendor; /* "nvidia" */
    double tflops;      /* physical dense FP16 TFLOPS */
    uint64_t vram;      /* physical bytes */
} gp_alloc_gpu_spec;

/* What one workload asks for, per GPU, and where it may go. */
typedef struct gp_alloc_request {
    int pool;                      /* pool id */
    int gpu_count;                 /* 1..GP_ALLOC_MAX_GPUS, all on one node */
    double req_tflops, lim_tflops; /* per GPU; use percents instead when both are < 0 */
    double req_pct, lim_pct;       /* per GPU, percent of the GPU (the GPU's TFLOPS x pct / 100) */
    uint64_t req_vram, lim_vram;   /* per GPU */
    const char *model;             /* only GPUs of this model key (NULL: any) */
    const char *vendor;            /* only this vendor (NULL: any) */
    int node;                      /* only this node (-1: any) */
    int quota;                     /* the namespace's quota id (-1: none) */
    bool remote;                   /* GPU-over-IP: only nodes whose worker is up (gp_alloc_set_node_worker) */
} gp_alloc_request;

typedef struct gp_alloc_placement {
    int node;
    int ngpus;
    int gpu[GP_ALLOC_MAX_GPUS];
    /* what was committed per GPU (percent requests resolved to TFLOPS of each chosen GPU) */
    double req_tflops[GP_ALLOC_MAX_GPUS], lim_tflops[GP_ALLOC_MAX_GPUS];
    uint64_t req_vram, lim_vram;
} gp_alloc_placement;

typedef struct gp_alloc_quota_spec {
    double req_tflops, lim_tflops;  /* totals over the namespace's workloads; < 0: unlimited */
    int64_t req_vram, lim_vram;     /* < 0: unlimited */
    int max_workloads;              /* < 0: unlimited */
    double max_tflops_per_workload; /* limit TFLOPS x GPUs of one workload; < 0: unlimited */
    int64_t max_vram_per_workload;  /* limit VRAM x GPUs of one workload; < 0: unlimited */
} gp_alloc_quota_spec;

typedef struct gp_allocator gp_allocator;

gp_allocator *gp_alloc_new(void);
void gp_alloc_free(gp_allocator *a);

/* Adding and changing the model. Each returns the new id (>= 0) or -1 with *err. */
int gp_alloc_add_pool(gp_allocator *a, const gp_alloc_pool_spec *p, gp_err *err);
int gp_alloc_set_pool(gp_allocator *a, int pool, const gp_alloc_pool_spec *p, gp_err *err);
int gp_alloc_add_node(gp_allocator *a, const char *name, int pool, gp_err *err);
int gp_alloc_add_gpu(gp_allocator *a, int node, const gp_alloc_gpu_spec *g, gp_err *err);
/* A node that is not ready (lost, draining) and an unhealthy GPU take no new placements. */
void gp_alloc_set_node_ready(gp_allocator *a, int node, bool ready);
void gp_alloc_set_gpu_healthy(gp_allocator *a, int gpu, bool healthy);
/* Whether the node's GPU-over-IP worker is up: only such nodes take remote requests (a new node has none). */
void gp_alloc_set_node_worker(gp_allocator *a, int node, bool up);
/* Measured load of a GPU, 0..1 (used by the low-load strategies to break ties among equal commitments). */
void gp_alloc_set_gpu_load(gp_allocator *a, int gpu, double load);
int gp_alloc_add_quota(gp_allocator *a, const gp_alloc_quota_spec *q, gp_err *err);
int gp_alloc_set_quota(gp_allocator *a, int quota, const gp_alloc_quota_spec *q, gp_err *err);

/* Chooses GPUs for r without committing. 0 and *out on success; -1 when nothing fits, with *err holding
 * the explanation (GP_ERR_CONFLICT for capacity, GP_ERR_RANGE for a quota, GP_ERR_INVALID for a bad
 * request). */
int gp_alloc_place(const gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out, gp_err *err);
/* The same answer as gp_alloc_place (same errors too), found by examining every node of the pool instead of
 * the index: the reference the tests hold the index to, and the benchmark's baseline. */
int gp_alloc_place_scan(const gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out,
                        gp_err *err);
/* Commits a placement (from gp_alloc_place, or restored from the store at start-up: then it is trusted and
 * may exceed capacity, which is reported by gp_alloc_gpu_state_get but never refused). */
void gp_alloc_commit(gp_allocator *a, const gp_alloc_request *r, const gp_alloc_placement *p);
/* Releases a committed placement (the exact values commit was given). */
void gp_alloc_release(gp_allocator *a, const gp_alloc_request *r, const gp_alloc_placement *p);

/* Place + commit in one step (what the controller does under its lock). */
int gp_alloc_allocate(gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out, gp_err *err);

typedef struct gp_alloc_gpu_state {
    int node;
    bool healthy;
    double tflops, req_tflops, lim_tflops, load;
    uint64_t vram, req_vram, lim_vram;
    int allocations;
    double tflops_oversold; /* what limits may add up to: tflops x (1 + the pool's oversell %) */
    uint64_t vram_expanded; /* vram x (1 + the pool's host % + disk %) */
    bool over_capacity;     /* requests beyond the physical capacity or limits beyond the oversold one (only a
                               restored placement can do that) */
} gp_alloc_gpu_state;
/* What is committed on a GPU / charged to a quota: 0, or -1 when the id does not exist. (Named _get: C does
 * not allow a function and a type of the same name.) */
int gp_alloc_gpu_state_get(const gp_allocator *a, int gpu, gp_alloc_gpu_state *out);

typedef struct gp_alloc_quota_state {
    double req_tflops, lim_tflops;
    uint64_t req_vram, lim_vram;
    int workloads;
} gp_alloc_quota_state;
int gp_alloc_quota_state_get(const gp_allocator *a, int quota, gp_alloc_quota_state *out);

/* Checks the allocator's internal invariants (index order and summaries, cached keys): 0, or -1 with
 * GP_ERR_INTERNAL naming the first that does not hold. For tests; O(everything). */
int gp_alloc_check(const gp_allocator *a, gp_err *err);

#endif

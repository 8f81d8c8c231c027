/* alloc_internal.h - the allocator's private model, shared by allocator.c (the model, requests, quotas,
 * commit), alloc_index.c (the per-group ordered index of nodes) and alloc_explain.c (why nothing fits).
 *
 * Units inside: TFLOPS are kept as integer micro-TFLOPS (int64) and VRAM as bytes (int64), so that commit
 * and release are exact inverses and ties compare equal however placements came and went. Every GPU has
 * four capacity dimensions (ALLOC_DIM_*): requests against physical TFLOPS and VRAM, limits against the
 * oversold TFLOPS and the expanded VRAM; free = cap - used, negative only after a trusted over-capacity
 * restore.
 */
#ifndef GP_CONTROLLER_ALLOC_INTERNAL_H
#define GP_CONTROLLER_ALLOC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "controller/allocator.h"

#define ALLOC_UTF_PER_TFLOPS 1e6 /* micro-TFLOPS per TFLOPS */
#define ALLOC_NONE           INT64_MIN

enum { ALLOC_DIM_REQ_T, ALLOC_DIM_REQ_V, ALLOC_DIM_LIM_T, ALLOC_DIM_LIM_V, ALLOC_NDIM };

/* The grid of a node for one-GPU requests: for each pair of a TFLOPS and a VRAM dimension, bit j of row i is
 * set when one usable GPU has at least threshold i free of the first and threshold j of the second (the
 * group's thresholds, alloc_group.thr). It rules out nodes whose TFLOPS and VRAM are free on different
 * GPUs, which the per-dimension summaries cannot. */
#define ALLOC_GRID  16
#define ALLOC_PAIRS 4 /* (req T, req V), (req T, lim V), (lim T, req V), (lim T, lim V) */
typedef struct alloc_grid {
    uint16_t row[ALLOC_PAIRS][ALLOC_GRID];
} alloc_grid;

typedef struct alloc_gpu {
    char *uuid;
    int model, vendor; /* interned, case-folded ids (alloc_names) */
    int node;
    bool healthy;
    double load;
    int64_t cap[ALLOC_NDIM];  /* physical TFLOPS (uTF), VRAM, oversold TFLOPS, expanded VRAM */
    int64_t used[ALLOC_NDIM]; /* committed requests, requests, limits, limits */
    int allocations;
} alloc_gpu;

/* A node is its own entry in its group's treap (int links into gp_allocator.nodes, -1 for none). */
typedef struct alloc_node {
    char *name;
    int pool, group;
    bool ready;
    bool worker; /* its GPU-over-IP worker is up: remote requests may go there */
    int *gpus;
    int ngpus, gpus_cap;
    /* index: the ordering key as of the last attach, the treap links and the fit summaries */
    int left, right;
    uint32_t prio;
    int nworker; /* nodes of the subtree whose worker is up: remote requests skip a subtree without any */
    double share_t, share_v, load;
    /* own[k-1][d]: the k-th largest free amount of dimension d among the node's eligible GPUs (ready node,
     * healthy GPU), ALLOC_NONE when it has fewer than k; agg: the element-wise maximum over the subtree */
    int64_t own[GP_ALLOC_MAX_GPUS][ALLOC_NDIM];
    int64_t agg[GP_ALLOC_MAX_GPUS][ALLOC_NDIM];
    alloc_grid grid_own, grid_agg;
} alloc_node;

/* The nodes of one pool whose GPUs are all of one model and vendor; nodes mixing models share a "mixed"
 * group of their pool (model = vendor = -1), whose GPUs are filtered one by one. */
typedef struct alloc_group {
    int pool;
    int model, vendor;
    int root;
    int kmax;           /* summaries kept for k = 1..kmax: the most GPUs of a node in the group (<= 16) */
    int64_t min_tflops; /* the smallest physical uTF of a GPU in the group: bounds percent requests */
    int64_t max_cap[ALLOC_NDIM];         /* the largest capacities of its GPUs ... */
    int64_t thr[ALLOC_NDIM][ALLOC_GRID]; /* ... and the grid thresholds made from them (thr[d][0] = 0) */
    int nnodes;
} alloc_group;

typedef struct alloc_pool {
    char *name;
    double oversell_pct, host_pct, disk_pct;
    gp_alloc_strategy strategy;
    int *groups;
    int ngroups, groups_cap;
    int *nodes;
    int nnodes, nodes_cap;
    int ngpus;
    int mixed_group; /* -1 until a node mixes models */
} alloc_pool;

typedef struct alloc_quota {
    int64_t max[ALLOC_NDIM]; /* uTF and bytes; < 0: unlimited */
    int max_workloads;
    int64_t max_tflops_per_workload, max_vram_per_workload; /* uTF and bytes; < 0: unlimited */
    gp_alloc_quota_spec spec;
    int64_t used[ALLOC_NDIM];
    int workloads;
} alloc_quota;

typedef struct alloc_names {
    char **s; /* lower-cased */
    int n, cap;
} alloc_names;

struct gp_allocator {
    alloc_pool *pools;
    int npools, pools_cap;
    alloc_node *nodes;
    int nnodes, nodes_cap;
    alloc_gpu *gpus;
    int ngpus, gpus_cap;
    alloc_group *groups;
    int ngroups, groups_cap;
    alloc_quota *quotas;
    int nquotas, quotas_cap;
    alloc_names models, vendors;
};

/* A request resolved once: validated, its filters interned, its TFLOPS in uTF (or its percents). */
typedef struct alloc_query {
    const gp_alloc_request *r;
    int pool, node, k;
    bool pct;
    int64_t req_t, lim_t; /* uTF per GPU (TFLOPS requests) */
    double req_pct, lim_pct;
    int64_t req_v, lim_v;
    int model, vendor; /* -1: any; ALLOC_UNKNOWN_NAME: a name no GPU has */
    bool remote;       /* only nodes whose worker is up */
    gp_alloc_strategy strategy;
} alloc_query;

#define ALLOC_UNKNOWN_NAME (-2)

/* allocator.c */
int64_t gp_alloc_resolve_pct(double pct, int64_t tflops_utf);
void gp_alloc_need(const alloc_query *q, const alloc_gpu *g, int64_t need[ALLOC_NDIM]);
bool gp_alloc_gpu_matches(const alloc_query *q, const alloc_gpu *g);
bool gp_alloc_fit_node(const gp_allocator *a, const alloc_query *q, int node, gp_alloc_placement *out);
/* The live ordering key of a node (what the index caches at attach). */
void gp_alloc_node_key(const gp_allocator *a, int node, double *share_t, double *share_v, double *load);
/* < 0 when node x comes before node y in strategy s's order (its cached key). */
int gp_alloc_node_cmp(const gp_allocator *a, gp_alloc_strategy s, int x, int y);

/* alloc_index.c */
void gp_alloc_index_attach(gp_allocator *a, int node);
void gp_alloc_index_detach(gp_allocator *a, int node);
void gp_alloc_index_rebuild(gp_allocator *a, int group);
/* The first node of the group in its pool's order that fits q exactly (its placement in *out), or -1. */
int gp_alloc_index_find(const gp_allocator *a, int group, const alloc_query *q, gp_alloc_placement *out);
void gp_alloc_node_summary(const gp_allocator *a, int node, int64_t own[GP_ALLOC_MAX_GPUS][ALLOC_NDIM],
                           alloc_grid *grid);
/* Whether node's GPUs exceed what its group's grid was made for (then the group must be rebuilt). */
bool gp_alloc_index_outgrown(const gp_allocator *a, int node);
int gp_alloc_index_check(const gp_allocator *a, int group, gp_err *err);

/* alloc_explain.c: fills *err with GP_ERR_CONFLICT and why q fits nowhere; returns -1. */
int gp_alloc_explain(const gp_allocator *a, const alloc_query *q, gp_err *err);
/* "120", "0.5", "989.125": uTF rounded down to thousandths of a TFLOPS, trailing zeros cut. */
const char *gp_alloc_fmt_tflops(char *buf, size_t n, int64_t utf);
/* "8 GiB", "1.5 GiB", "512 MiB", "100 B": rounded down to hundredths of the unit. */
const char *gp_alloc_fmt_bytes(char *buf, size_t n, int64_t bytes);

#endif

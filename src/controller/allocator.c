/* allocator.c - the controller's allocator: the in-memory model of pools, nodes, GPUs and quotas, request
 * validation, quota checks, placement, commit and release (the contract is allocator.h).
 *
 * Design. Every GPU has four capacity dimensions (alloc_internal.h): requests against physical TFLOPS and
 * VRAM, limits against the pool's oversold TFLOPS and expanded VRAM, kept in integer micro-TFLOPS and bytes
 * so that release undoes commit exactly. A pool's nodes are split into groups of one GPU model and vendor
 * (nodes mixing models form their pool's "mixed" group, filtered GPU by GPU); each group is a treap of its
 * nodes in the order of the pool's strategy (node commitment = requested TFLOPS / TFLOPS of the node, then
 * the same for VRAM, fullest or emptiest first; low-load-first then takes the lower measured load; then the
 * lowest id) (alloc_index.c). Each node keeps, for k = 1..16, the k-th largest free amount of each
 * dimension among its usable GPUs and, for one-GPU requests, a 16x16 grid per TFLOPS/VRAM pair of
 * dimensions saying which (TFLOPS, VRAM) steps one GPU has free together; each subtree keeps the maxima and
 * the union, and counts the nodes whose GPU-over-IP worker is up, so that a remote request skips subtrees
 * without one. A placement asks each group the request may use for its first node in order whose subtree
 * summaries can hold it and whose GPUs then fit exactly, and keeps the best answer of the groups: the cost
 * is O(groups x depth) plus the nodes whose summaries pass but whose GPUs do not fit together, not the
 * number of GPUs (for a remote request, also the worker nodes whose subtree passes the summaries on the
 * room of nodes without a worker). Commit and release re-insert the nodes they touch (O(depth x summary
 * size)). Why not buckets of free capacity: the strategies need an exact order with ties by id, and a
 * quantized bucket would have to be scanned whole (all empty nodes sit in one). gp_alloc_place_scan answers
 * the same by examining every node of the pool; the tests hold the two equal and bench/allocator.c measures
 * both. Explanations of a misfit scan the pool: the slow path, taken only when nothing fits
 * (alloc_explain.c).
 */
#include "controller/alloc_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TFLOPS    1e6          /* per GPU or per request: far above any GPU, keeps uTF sums exact */
#define MAX_VRAM      (1ull << 50) /* 1 PiB per GPU or per request */
#define MAX_PCT_SETTL 10000.0      /* pool oversell / expansion percents */
#define MAX_NAME_LEN  253          /* node names are host names */

/* ---- small helpers ---------------------------------------------------------------------------------- */

static void *grow(void *arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return arr;
    int nc = *cap ? *cap : 8;
    while (nc < need)
        nc *= 2;
    void *p = realloc(arr, (size_t)nc * elem);
    if (p != NULL)
        *cap = nc;
    return p;
}

static int64_t utf_of(double tflops)
{
    return (int64_t)llround(tflops * ALLOC_UTF_PER_TFLOPS);
}

int64_t gp_alloc_resolve_pct(double pct, int64_t tflops_utf)
{
    return (int64_t)llround(pct * (double)tflops_utf / 100.0);
}

static bool valid_name(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= MAX_NAME_LEN;
}

static int name_find(const alloc_names *t, const char *s)
{
    for (int i = 0; i < t->n; i++)
        if (strcasecmp(t->s[i], s) == 0)
            return i;
    return -1;
}

/* The id of s (case-folded), adding it when new; -1 when out of memory. */
static int name_intern(alloc_names *t, const char *s)
{
    int i = name_find(t, s);
    if (i >= 0)
        return i;
    char **p = grow(t->s, &t->cap, t->n + 1, sizeof *t->s);
    if (p == NULL)
        return -1;
    t->s = p;
    char *c = strdup(s);
    if (c == NULL)
        return -1;
    for (char *x = c; *x; x++)
        *x = (char)tolower((unsigned char)*x);
    t->s[t->n] = c;
    return t->n++;
}

/* ---- strategies --------------------------------------------------------------------------------------- */

static const struct {
    const char *name, *alias; /* ours, and the seeds' product's spelling */
} strategy_names[] = {
    [GP_STRATEGY_COMPACT_FIRST] = {"compact-first", "CompactFirst"},
    [GP_STRATEGY_LOW_LOAD_FIRST] = {"low-load-first", "LowLoadFirst"},
    [GP_STRATEGY_NODE_COMPACT_GPU_LOW_LOAD] = {"node-compact-gpu-low-load", "NodeCompactGPULowLoad"},
};
#define NSTRATEGIES ((int)(sizeof strategy_names / sizeof strategy_names[0]))

int gp_alloc_strategy_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < NSTRATEGIES; i++)
        if (strcasecmp(s, strategy_names[i].name) == 0 || strcasecmp(s, strategy_names[i].alias) == 0)
            return i;
    return -1;
}

const char *gp_alloc_strategy_name(gp_alloc_strategy s)
{
    return (int)s >= 0 && (int)s < NSTRATEGIES ? strategy_names[s].name : "unknown";
}

/* ---- lifetime ----------------------------------------------------------------------------------------- */

gp_allocator *gp_alloc_new(void)
{
    return calloc(1, sizeof(gp_allocator));
}

static void names_free(alloc_names *t)
{
    for (int i = 0; i < t->n; i++)
        free(t->s[i]);
    free(t->s);
}

void gp_alloc_free(gp_allocator *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->npools; i++) {
        free(a->pools[i].name);
        free(a->pools[i].groups);
        free(a->pools[i].nodes);
    }
    for (int i = 0; i < a->nnodes; i++) {
        free(a->nodes[i].name);
        free(a->nodes[i].gpus);
    }
    for (int i = 0; i < a->ngpus; i++)
        free(a->gpus[i].uuid);
    free(a->pools);
    free(a->nodes);
    free(a->gpus);
    free(a->groups);
    free(a->quotas);
    names_free(&a->models);
    names_free(&a->vendors);
    free(a);
}

/* ---- pools -------------------------------------------------------------------------------------------- */

static int check_pool_spec(const gp_alloc_pool_spec *p, gp_err *err)
{
    if (p == NULL || !valid_name(p->name))
        return gp_err_set(err, GP_ERR_INVALID, "pool: a name of 1 to %d characters is required",
                          MAX_NAME_LEN);
    const struct {
        const char *what;
        double v;
    } pcts[] = {{"tflops-oversell", p->tflops_oversell_pct},
                {"vram-expand-to-host", p->vram_host_pct},
                {"vram-expand-to-disk", p->vram_disk_pct}};
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        if (!(pcts[i].v >= 0 && pcts[i].v <= MAX_PCT_SETTL))
            return gp_err_set(err, GP_ERR_INVALID, "pool \"%.64s\": %s %g%% is out of range (0 to %g%%)",
                              p->name, pcts[i].what, pcts[i].v, MAX_PCT_SETTL);
    if ((int)p->strategy < 0 || (int)p->strategy >= NSTRATEGIES)
        return gp_err_set(err, GP_ERR_INVALID,
                          "pool \"%.64s\": unknown strategy %d (compact-first, low-load-first or "
                          "node-compact-gpu-low-load)",
                          p->name, (int)p->strategy);
    return 0;
}

/* The oversold and expanded capacities of a GPU from its physical ones and its pool's settings. */
static void gpu_set_limits(const alloc_pool *p, alloc_gpu *g)
{
    g->cap[ALLOC_DIM_LIM_T] =
        (int64_t)llround((double)g->cap[ALLOC_DIM_REQ_T] * (1.0 + p->oversell_pct / 100.0));
    double expand = 1.0 + (p->host_pct + p->disk_pct) / 100.0;
    g->cap[ALLOC_DIM_LIM_V] =
        expand == 1.0 ? g->cap[ALLOC_DIM_REQ_V] : (int64_t)llround((double)g->cap[ALLOC_DIM_REQ_V] * expand);
}

int gp_alloc_add_pool(gp_allocator *a, const gp_alloc_pool_spec *p, gp_err *err)
{
    if (check_pool_spec(p, err) < 0)
        return -1;
    alloc_pool *pools = grow(a->pools, &a->pools_cap, a->npools + 1, sizeof *a->pools);
    if (pools == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "pool \"%.64s\": out of memory", p->name);
    a->pools = pools;
    char *name = strdup(p->name);
    if (name == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "pool \"%.64s\": out of memory", p->name);
    a->pools[a->npools] = (alloc_pool){.name = name,
                                       .oversell_pct = p->tflops_oversell_pct,
                                       .host_pct = p->vram_host_pct,
                                       .disk_pct = p->vram_disk_pct,
                                       .strategy = p->strategy,
                                       .mixed_group = -1};
    return a->npools++;
}

int gp_alloc_set_pool(gp_allocator *a, int pool, const gp_alloc_pool_spec *p, gp_err *err)
{
    if (pool < 0 || pool >= a->npools)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "pool %d does not exist (%d pools)", pool, a->npools);
    if (check_pool_spec(p, err) < 0)
        return -1;
    alloc_pool *P = &a->pools[pool];
    if (strcmp(P->name, p->name) != 0) {
        char *name = strdup(p->name);
        if (name == NULL)
            return gp_err_set(err, GP_ERR_NOMEM, "pool \"%.64s\": out of memory", p->name);
        free(P->name);
        P->name = name;
    }
    P->oversell_pct = p->tflops_oversell_pct;
    P->host_pct = p->vram_host_pct;
    P->disk_pct = p->vram_disk_pct;
    P->strategy = p->strategy;
    for (int i = 0; i < P->nnodes; i++) {
        const alloc_node *n = &a->nodes[P->nodes[i]];
        for (int j = 0; j < n->ngpus; j++)
            gpu_set_limits(P, &a->gpus[n->gpus[j]]);
    }
    /* capacities and perhaps the order changed: every group of the pool is built again */
    for (int i = 0; i < P->ngroups; i++)
        gp_alloc_index_rebuild(a, P->groups[i]);
    return pool;
}

/* ---- nodes and GPUs ----------------------------------------------------------------------------------- */

int gp_alloc_add_node(gp_allocator *a, const char *name, int pool, gp_err *err)
{
    if (!valid_name(name))
        return gp_err_set(err, GP_ERR_INVALID, "node: a name of 1 to %d characters is required",
                          MAX_NAME_LEN);
    if (pool < 0 || pool >= a->npools)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "node \"%.64s\": pool %d does not exist (%d pools)", name,
                          pool, a->npools);
    alloc_pool *P = &a->pools[pool];
    alloc_node *nodes = grow(a->nodes, &a->nodes_cap, a->nnodes + 1, sizeof *a->nodes);
    if (nodes == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "node \"%.64s\": out of memory", name);
    a->nodes = nodes;
    int *pn = grow(P->nodes, &P->nodes_cap, P->nnodes + 1, sizeof *P->nodes);
    if (pn == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "node \"%.64s\": out of memory", name);
    P->nodes = pn;
    char *copy = strdup(name);
    if (copy == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "node \"%.64s\": out of memory", name);
    int id = a->nnodes++;
    alloc_node *n = &a->nodes[id];
    memset(n, 0, sizeof *n);
    n->name = copy;
    n->pool = pool;
    n->group = -1;
    n->ready = true;
    n->left = n->right = -1;
    P->nodes[P->nnodes++] = id;
    return id;
}

static int new_group(gp_allocator *a, int pool, int model, int vendor)
{
    alloc_pool *P = &a->pools[pool];
    alloc_group *groups = grow(a->groups, &a->groups_cap, a->ngroups + 1, sizeof *a->groups);
    if (groups == NULL)
        return -1;
    a->groups = groups;
    int *pg = grow(P->groups, &P->groups_cap, P->ngroups + 1, sizeof *P->groups);
    if (pg == NULL)
        return -1;
    P->groups = pg;
    a->groups[a->ngroups] = (alloc_group){
        .pool = pool, .model = model, .vendor = vendor, .root = -1, .kmax = 0, .min_tflops = INT64_MAX};
    P->groups[P->ngroups++] = a->ngroups;
    return a->ngroups++;
}

/* The group a node belongs in once GPU g is on it: its current one, its model's, or its pool's mixed one. */
static int group_for(gp_allocator *a, const alloc_node *n, const alloc_gpu *g)
{
    alloc_pool *P = &a->pools[n->pool];
    if (n->group >= 0) {
        const alloc_group *G = &a->groups[n->group];
        if (G->model < 0 || (G->model == g->model && G->vendor == g->vendor))
            return n->group;
        if (P->mixed_group < 0)
            P->mixed_group = new_group(a, n->pool, -1, -1);
        return P->mixed_group;
    }
    for (int i = 0; i < P->ngroups; i++) {
        const alloc_group *G = &a->groups[P->groups[i]];
        if (G->model == g->model && G->vendor == g->vendor)
            return P->groups[i];
    }
    return new_group(a, n->pool, g->model, g->vendor);
}

int gp_alloc_add_gpu(gp_allocator *a, int node, const gp_alloc_gpu_spec *g, gp_err *err)
{
    if (node < 0 || node >= a->nnodes)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "GPU: node %d does not exist (%d nodes)", node, a->nnodes);
    if (g == NULL || !valid_name(g->uuid))
        return gp_err_set(err, GP_ERR_INVALID, "GPU on node \"%.64s\": a UUID is required",
                          a->nodes[node].name);
    if (!valid_name(g->model) || !valid_name(g->vendor))
        return gp_err_set(err, GP_ERR_INVALID,
                          "GPU %.64s: a model key (e.g. \"H100-SXM-80GB\") and a vendor (e.g. \"nvidia\") "
                          "are required",
                          g->uuid);
    if (!(g->tflops > 0 && g->tflops <= MAX_TFLOPS))
        return gp_err_set(err, GP_ERR_INVALID,
                          "GPU %.64s: TFLOPS %g is out of range (more than 0, at most %g)", g->uuid,
                          g->tflops, MAX_TFLOPS);
    if (g->vram == 0 || g->vram > MAX_VRAM)
        return gp_err_set(err, GP_ERR_INVALID, "GPU %.64s: VRAM of %llu bytes is out of range (1 B to 1 PiB)",
                          g->uuid, (unsigned long long)g->vram);
    alloc_gpu *gpus = grow(a->gpus, &a->gpus_cap, a->ngpus + 1, sizeof *a->gpus);
    if (gpus == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "GPU %.64s: out of memory", g->uuid);
    a->gpus = gpus;
    alloc_node *n = &a->nodes[node];
    int *ng = grow(n->gpus, &n->gpus_cap, n->ngpus + 1, sizeof *n->gpus);
    if (ng == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "GPU %.64s: out of memory", g->uuid);
    n->gpus = ng;
    alloc_gpu G = {.node = node, .healthy = true};
    G.model = name_intern(&a->models, g->model);
    G.vendor = name_intern(&a->vendors, g->vendor);
    G.uuid = strdup(g->uuid);
    if (G.model < 0 || G.vendor < 0 || G.uuid == NULL) {
        free(G.uuid);
        return gp_err_set(err, GP_ERR_NOMEM, "GPU %.64s: out of memory", g->uuid);
    }
    G.cap[ALLOC_DIM_REQ_T] = utf_of(g->tflops);
    G.cap[ALLOC_DIM_REQ_V] = (int64_t)g->vram;
    gpu_set_limits(&a->pools[n->pool], &G);
    int group = group_for(a, n, &G);
    if (group < 0) {
        free(G.uuid);
        return gp_err_set(err, GP_ERR_NOMEM, "GPU %.64s: out of memory", g->uuid);
    }
    int id = a->ngpus++;
    a->gpus[id] = G;
    gp_alloc_index_detach(a, node);
    if (n->group >= 0 && n->group != group)
        a->groups[n->group].nnodes--;
    if (n->group != group)
        a->groups[group].nnodes++;
    n->group = group;
    n->gpus[n->ngpus++] = id;
    a->pools[n->pool].ngpus++;
    alloc_group *grp = &a->groups[group];
    for (int i = 0; i < n->ngpus; i++) /* all of them: the node may just have moved to the mixed group */
        if (a->gpus[n->gpus[i]].cap[ALLOC_DIM_REQ_T] < grp->min_tflops)
            grp->min_tflops = a->gpus[n->gpus[i]].cap[ALLOC_DIM_REQ_T];
    bool more_k = n->ngpus > grp->kmax && grp->kmax < GP_ALLOC_MAX_GPUS;
    if (more_k)
        grp->kmax = n->ngpus < GP_ALLOC_MAX_GPUS ? n->ngpus : GP_ALLOC_MAX_GPUS;
    if (more_k || gp_alloc_index_outgrown(a, node)) {
        gp_alloc_index_rebuild(a, group); /* more summaries, or a grid made for bigger GPUs, for all */
    } else {
        gp_alloc_index_attach(a, node);
    }
    return id;
}

void gp_alloc_set_node_ready(gp_allocator *a, int node, bool ready)
{
    if (node < 0 || node >= a->nnodes || a->nodes[node].ready == ready)
        return;
    gp_alloc_index_detach(a, node);
    a->nodes[node].ready = ready;
    gp_alloc_index_attach(a, node);
}

void gp_alloc_set_node_worker(gp_allocator *a, int node, bool up)
{
    if (node < 0 || node >= a->nnodes || a->nodes[node].worker == up)
        return;
    gp_alloc_index_detach(a, node);
    a->nodes[node].worker = up;
    gp_alloc_index_attach(a, node);
}

void gp_alloc_set_gpu_healthy(gp_allocator *a, int gpu, bool healthy)
{
    if (gpu < 0 || gpu >= a->ngpus || a->gpus[gpu].healthy == healthy)
        return;
    int node = a->gpus[gpu].node;
    gp_alloc_index_detach(a, node);
    a->gpus[gpu].healthy = healthy;
    gp_alloc_index_attach(a, node);
}

void gp_alloc_set_gpu_load(gp_allocator *a, int gpu, double load)
{
    if (gpu < 0 || gpu >= a->ngpus || !isfinite(load))
        return;
    load = load < 0 ? 0 : load > 1 ? 1 : load;
    alloc_gpu *g = &a->gpus[gpu];
    if (g->load == load)
        return;
    alloc_node *n = &a->nodes[g->node];
    if (a->pools[n->pool].strategy == GP_STRATEGY_LOW_LOAD_FIRST) {
        /* part of the node order there */
        gp_alloc_index_detach(a, g->node);
        g->load = load;
        gp_alloc_index_attach(a, g->node);
    } else {
        g->load = load;
        double s_t, s_v;
        gp_alloc_node_key(a, g->node, &s_t, &s_v, &n->load);
    }
}

/* ---- quotas ------------------------------------------------------------------------------------------- */

static int set_quota(alloc_quota *Q, const gp_alloc_quota_spec *q, const char *what, gp_err *err)
{
    if (q == NULL)
        return gp_err_set(err, GP_ERR_INVALID, "%s: no quota given", what);
    const double vals[] = {q->req_tflops, q->lim_tflops, q->max_tflops_per_workload};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (!isfinite(vals[i]) || vals[i] > 1e12)
            return gp_err_set(err, GP_ERR_INVALID,
                              "%s: TFLOPS %g is not a usable number (< 0 means unlimited)", what, vals[i]);
    Q->spec = *q;
    Q->max[ALLOC_DIM_REQ_T] = q->req_tflops < 0 ? -1 : utf_of(q->req_tflops);
    Q->max[ALLOC_DIM_LIM_T] = q->lim_tflops < 0 ? -1 : utf_of(q->lim_tflops);
    Q->max[ALLOC_DIM_REQ_V] = q->req_vram < 0 ? -1 : q->req_vram;
    Q->max[ALLOC_DIM_LIM_V] = q->lim_vram < 0 ? -1 : q->lim_vram;
    Q->max_workloads = q->max_workloads < 0 ? -1 : q->max_workloads;
    Q->max_tflops_per_workload = q->max_tflops_per_workload < 0 ? -1 : utf_of(q->max_tflops_per_workload);
    Q->max_vram_per_workload = q->max_vram_per_workload < 0 ? -1 : q->max_vram_per_workload;
    return 0;
}

int gp_alloc_add_quota(gp_allocator *a, const gp_alloc_quota_spec *q, gp_err *err)
{
    alloc_quota Q = {0};
    if (set_quota(&Q, q, "quota", err) < 0)
        return -1;
    alloc_quota *quotas = grow(a->quotas, &a->quotas_cap, a->nquotas + 1, sizeof *a->quotas);
    if (quotas == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "quota: out of memory");
    a->quotas = quotas;
    a->quotas[a->nquotas] = Q;
    return a->nquotas++;
}

int gp_alloc_set_quota(gp_allocator *a, int quota, const gp_alloc_quota_spec *q, gp_err *err)
{
    if (quota < 0 || quota >= a->nquotas)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "quota %d does not exist (%d quotas)", quota, a->nquotas);
    alloc_quota Q = a->quotas[quota];
    if (set_quota(&Q, q, "quota", err) < 0)
        return -1;
    a->quotas[quota] = Q; /* what is in use stays: a lowered quota only refuses what comes next */
    return quota;
}

static const char *const dim_quota_names[ALLOC_NDIM] = {
    [ALLOC_DIM_REQ_T] = "requested TFLOPS",
    [ALLOC_DIM_REQ_V] = "requested VRAM",
    [ALLOC_DIM_LIM_T] = "TFLOPS limits",
    [ALLOC_DIM_LIM_V] = "VRAM limits",
};

static const char *fmt_dim(char *buf, size_t n, int d, int64_t v)
{
    return d == ALLOC_DIM_REQ_T || d == ALLOC_DIM_LIM_T ? gp_alloc_fmt_tflops(buf, n, v)
                                                        : gp_alloc_fmt_bytes(buf, n, v);
}

/* Whether the workload's totals (ask, per dimension over its GPUs) fit its quota; with_tflops false skips
 * the TFLOPS dimensions (percent requests, before their GPUs are chosen). */
static int quota_check(const gp_allocator *a, const alloc_query *q, const int64_t ask[ALLOC_NDIM],
                       bool with_tflops, gp_err *err)
{
    if (q->r->quota < 0)
        return 0;
    int id = q->r->quota;
    const alloc_quota *Q = &a->quotas[id];
    if (Q->max_workloads >= 0 && Q->workloads + 1 > Q->max_workloads)
        return gp_err_set(
            err, GP_ERR_RANGE,
            "quota %d: workloads would number %d, over its %d (%d running + 1 asked); release a "
            "workload of this namespace or raise max-workloads",
            id, Q->workloads + 1, Q->max_workloads, Q->workloads);
    char b1[32], b2[32], b3[32], b4[32];
    if (with_tflops && Q->max_tflops_per_workload >= 0 && ask[ALLOC_DIM_LIM_T] > Q->max_tflops_per_workload)
        return gp_err_set(
            err, GP_ERR_RANGE,
            "quota %d: this workload's TFLOPS limit would be %s (%d GPU%s), over the %s one workload "
            "may have; ask for less or raise max-tflops-per-workload",
            id, gp_alloc_fmt_tflops(b1, sizeof b1, ask[ALLOC_DIM_LIM_T]), q->k, q->k == 1 ? "" : "s",
            gp_alloc_fmt_tflops(b2, sizeof b2, Q->max_tflops_per_workload));
    if (Q->max_vram_per_workload >= 0 && ask[ALLOC_DIM_LIM_V] > Q->max_vram_per_workload)
        return gp_err_set(
            err, GP_ERR_RANGE,
            "quota %d: this workload's VRAM limit would be %s (%d GPU%s), over the %s one workload "
            "may have; ask for less or raise max-vram-per-workload",
            id, gp_alloc_fmt_bytes(b1, sizeof b1, ask[ALLOC_DIM_LIM_V]), q->k, q->k == 1 ? "" : "s",
            gp_alloc_fmt_bytes(b2, sizeof b2, Q->max_vram_per_workload));
    for (int d = 0; d < ALLOC_NDIM; d++) {
        if (!with_tflops && (d == ALLOC_DIM_REQ_T || d == ALLOC_DIM_LIM_T))
            continue;
        if (Q->max[d] < 0 || Q->used[d] + ask[d] <= Q->max[d])
            continue;
        return gp_err_set(
            err, GP_ERR_RANGE,
            "quota %d: %s would total %s, over its %s (%s in use + %s asked); release workloads of "
            "this namespace or raise the quota",
            id, dim_quota_names[d], fmt_dim(b1, sizeof b1, d, Q->used[d] + ask[d]),
            fmt_dim(b2, sizeof b2, d, Q->max[d]), fmt_dim(b3, sizeof b3, d, Q->used[d]),
            fmt_dim(b4, sizeof b4, d, ask[d]));
    }
    return 0;
}

/* ---- requests ----------------------------------------------------------------------------------------- */

static int resolve_query(const gp_allocator *a, const gp_alloc_request *r, alloc_query *q, gp_err *err)
{
    if (r == NULL)
        return gp_err_set(err, GP_ERR_INVALID, "no request given");
    memset(q, 0, sizeof *q);
    q->r = r;
    if (r->pool < 0 || r->pool >= a->npools)
        return gp_err_set(err, GP_ERR_INVALID, "pool %d does not exist (%d pools)", r->pool, a->npools);
    const alloc_pool *P = &a->pools[r->pool];
    q->pool = r->pool;
    q->strategy = P->strategy;
    if (r->gpu_count < 1 || r->gpu_count > GP_ALLOC_MAX_GPUS)
        return gp_err_set(err, GP_ERR_INVALID,
                          "gpu-count %d is out of range: a workload takes 1 to %d GPUs, all on one node",
                          r->gpu_count, GP_ALLOC_MAX_GPUS);
    q->k = r->gpu_count;
    if (!isfinite(r->req_tflops) || !isfinite(r->lim_tflops) || !isfinite(r->req_pct) ||
        !isfinite(r->lim_pct))
        return gp_err_set(err, GP_ERR_INVALID, "TFLOPS and percents must be finite numbers");
    if (r->req_tflops < 0 && r->lim_tflops < 0) {
        q->pct = true;
        if (r->req_pct < 0 || r->lim_pct <= 0)
            return gp_err_set(
                err, GP_ERR_INVALID,
                "no compute asked for: give tflops-request and tflops-limit (0 <= request <= limit, "
                "limit > 0), or percent-request and percent-limit of a GPU");
        if (r->req_pct > r->lim_pct)
            return gp_err_set(
                err, GP_ERR_INVALID,
                "percent-request %g is more than percent-limit %g: the request is the guaranteed "
                "part of the limit",
                r->req_pct, r->lim_pct);
        if (r->req_pct > 100)
            return gp_err_set(
                err, GP_ERR_INVALID,
                "percent-request %g is more than a whole GPU: ask for more GPUs (gpu-count) instead",
                r->req_pct);
        if (r->lim_pct > 100 * (1 + MAX_PCT_SETTL / 100))
            return gp_err_set(err, GP_ERR_INVALID, "percent-limit %g is more than any pool can oversell",
                              r->lim_pct);
        q->req_pct = r->req_pct;
        q->lim_pct = r->lim_pct;
    } else {
        if (r->req_tflops < 0 || r->lim_tflops < 0)
            return gp_err_set(
                err, GP_ERR_INVALID,
                "tflops-request %g and tflops-limit %g: give both (0 <= request <= limit) or neither "
                "(both < 0, then the percents are used)",
                r->req_tflops, r->lim_tflops);
        if (r->req_pct > 0 || r->lim_pct > 0)
            return gp_err_set(err, GP_ERR_INVALID,
                              "both TFLOPS (%g/%g) and percents (%g/%g) given: give one or the other",
                              r->req_tflops, r->lim_tflops, r->req_pct, r->lim_pct);
        if (r->lim_tflops <= 0)
            return gp_err_set(err, GP_ERR_INVALID, "tflops-limit must be more than 0");
        if (r->req_tflops > r->lim_tflops)
            return gp_err_set(
                err, GP_ERR_INVALID,
                "tflops-request %g is more than tflops-limit %g: the request is the guaranteed part "
                "of the limit",
                r->req_tflops, r->lim_tflops);
        if (r->lim_tflops > MAX_TFLOPS)
            return gp_err_set(err, GP_ERR_INVALID, "tflops-limit %g is more than any GPU has (at most %g)",
                              r->lim_tflops, MAX_TFLOPS);
        q->req_t = utf_of(r->req_tflops);
        q->lim_t = utf_of(r->lim_tflops);
    }
    char b1[32], b2[32];
    if (r->lim_vram == 0)
        return gp_err_set(err, GP_ERR_INVALID, "vram-limit must be more than 0 bytes (e.g. 8Gi)");
    if (r->req_vram > r->lim_vram)
        return gp_err_set(
            err, GP_ERR_INVALID,
            "vram-request %s is more than vram-limit %s: the request is the guaranteed part of the "
            "limit",
            gp_alloc_fmt_bytes(b1, sizeof b1, (int64_t)(r->req_vram > MAX_VRAM ? MAX_VRAM : r->req_vram)),
            gp_alloc_fmt_bytes(b2, sizeof b2, (int64_t)(r->lim_vram > MAX_VRAM ? MAX_VRAM : r->lim_vram)));
    if (r->lim_vram > MAX_VRAM)
        return gp_err_set(err, GP_ERR_INVALID,
                          "vram-limit of %llu bytes is more than any GPU has (at most 1 PiB)",
                          (unsigned long long)r->lim_vram);
    q->req_v = (int64_t)r->req_vram;
    q->lim_v = (int64_t)r->lim_vram;
    if (r->node < -1 || r->node >= a->nnodes)
        return gp_err_set(err, GP_ERR_INVALID, "node %d does not exist (%d nodes; -1 for any)", r->node,
                          a->nnodes);
    if (r->node >= 0 && a->nodes[r->node].pool != r->pool)
        return gp_err_set(err, GP_ERR_INVALID, "node \"%.64s\" is in pool \"%.64s\", not in pool \"%.64s\"",
                          a->nodes[r->node].name, a->pools[a->nodes[r->node].pool].name, P->name);
    q->node = r->node;
    q->remote = r->remote;
    if (r->quota < -1 || r->quota >= a->nquotas)
        return gp_err_set(err, GP_ERR_INVALID, "quota %d does not exist (%d quotas; -1 for none)", r->quota,
                          a->nquotas);
    q->model = -1;
    if (r->model != NULL && r->model[0] != '\0') {
        int m = name_find(&a->models, r->model);
        q->model = m >= 0 ? m : ALLOC_UNKNOWN_NAME;
    }
    q->vendor = -1;
    if (r->vendor != NULL && r->vendor[0] != '\0') {
        int v = name_find(&a->vendors, r->vendor);
        q->vendor = v >= 0 ? v : ALLOC_UNKNOWN_NAME;
    }
    return 0;
}

void gp_alloc_need(const alloc_query *q, const alloc_gpu *g, int64_t need[ALLOC_NDIM])
{
    need[ALLOC_DIM_REQ_T] = q->pct ? gp_alloc_resolve_pct(q->req_pct, g->cap[ALLOC_DIM_REQ_T]) : q->req_t;
    need[ALLOC_DIM_LIM_T] = q->pct ? gp_alloc_resolve_pct(q->lim_pct, g->cap[ALLOC_DIM_REQ_T]) : q->lim_t;
    need[ALLOC_DIM_REQ_V] = q->req_v;
    need[ALLOC_DIM_LIM_V] = q->lim_v;
}

bool gp_alloc_gpu_matches(const alloc_query *q, const alloc_gpu *g)
{
    return (q->model == -1 || g->model == q->model) && (q->vendor == -1 || g->vendor == q->vendor);
}

/* ---- orders ------------------------------------------------------------------------------------------- */

static double share(int64_t used, int64_t cap)
{
    return cap > 0 ? (double)used / (double)cap : 0;
}

void gp_alloc_node_key(const gp_allocator *a, int node, double *share_t, double *share_v, double *load)
{
    const alloc_node *n = &a->nodes[node];
    int64_t ut = 0, ct = 0, uv = 0, cv = 0;
    double l = 0;
    for (int i = 0; i < n->ngpus; i++) {
        const alloc_gpu *g = &a->gpus[n->gpus[i]];
        ut += g->used[ALLOC_DIM_REQ_T];
        ct += g->cap[ALLOC_DIM_REQ_T];
        uv += g->used[ALLOC_DIM_REQ_V];
        cv += g->cap[ALLOC_DIM_REQ_V];
        l += g->load;
    }
    *share_t = share(ut, ct);
    *share_v = share(uv, cv);
    *load = n->ngpus > 0 ? l / n->ngpus : 0;
}

typedef struct order_key {
    double share_t, share_v, load;
    int id;
} order_key;

/* The node order of a strategy: the most committed first (compact-first, node-compact-gpu-low-load) or the
 * least committed first with the lowest measured load among equals (low-load-first); then the lowest id. The
 * GPU order on a node is the same with GPU figures, except that node-compact-gpu-low-load takes the least
 * committed GPUs there. */
static int key_cmp(bool fullest_first, const order_key *x, const order_key *y)
{
    int sign = fullest_first ? -1 : 1;
    if (x->share_t != y->share_t)
        return x->share_t < y->share_t ? -sign : sign;
    if (x->share_v != y->share_v)
        return x->share_v < y->share_v ? -sign : sign;
    if (!fullest_first && x->load != y->load)
        return x->load < y->load ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool nodes_fullest_first(gp_alloc_strategy s)
{
    return s != GP_STRATEGY_LOW_LOAD_FIRST;
}

static bool gpus_fullest_first(gp_alloc_strategy s)
{
    return s == GP_STRATEGY_COMPACT_FIRST;
}

int gp_alloc_node_cmp(const gp_allocator *a, gp_alloc_strategy s, int x, int y)
{
    const alloc_node *X = &a->nodes[x], *Y = &a->nodes[y];
    order_key kx = {X->share_t, X->share_v, X->load, x}, ky = {Y->share_t, Y->share_v, Y->load, y};
    return key_cmp(nodes_fullest_first(s), &kx, &ky);
}

static order_key gpu_key(const gp_allocator *a, int gpu)
{
    const alloc_gpu *g = &a->gpus[gpu];
    return (order_key){share(g->used[ALLOC_DIM_REQ_T], g->cap[ALLOC_DIM_REQ_T]),
                       share(g->used[ALLOC_DIM_REQ_V], g->cap[ALLOC_DIM_REQ_V]), g->load, gpu};
}

static int by_id(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

bool gp_alloc_fit_node(const gp_allocator *a, const alloc_query *q, int node, gp_alloc_placement *out)
{
    const alloc_node *n = &a->nodes[node];
    if (!n->ready || n->ngpus < q->k || (q->remote && !n->worker))
        return false;
    bool fullest = gpus_fullest_first(q->strategy);
    order_key best[GP_ALLOC_MAX_GPUS];
    int nb = 0;
    for (int i = 0; i < n->ngpus; i++) {
        const alloc_gpu *g = &a->gpus[n->gpus[i]];
        if (!g->healthy || !gp_alloc_gpu_matches(q, g))
            continue;
        int64_t need[ALLOC_NDIM];
        gp_alloc_need(q, g, need);
        bool fits = true;
        for (int d = 0; d < ALLOC_NDIM && fits; d++)
            fits = g->cap[d] - g->used[d] >= need[d];
        if (!fits)
            continue;
        /* keep the k best in order (insertion into a short sorted array) */
        order_key k = gpu_key(a, n->gpus[i]);
        int pos = nb;
        while (pos > 0 && key_cmp(fullest, &k, &best[pos - 1]) < 0)
            pos--;
        if (pos >= q->k)
            continue;
        int last = nb < q->k ? nb : q->k - 1;
        memmove(&best[pos + 1], &best[pos], (size_t)(last - pos) * sizeof best[0]);
        best[pos] = k;
        if (nb < q->k)
            nb++;
    }
    if (nb < q->k)
        return false;
    if (out != NULL) {
        memset(out, 0, sizeof *out);
        out->node = node;
        out->ngpus = q->k;
        for (int i = 0; i < q->k; i++)
            out->gpu[i] = best[i].id;
        qsort(out->gpu, (size_t)q->k, sizeof out->gpu[0], by_id);
        for (int i = 0; i < q->k; i++) {
            int64_t need[ALLOC_NDIM];
            gp_alloc_need(q, &a->gpus[out->gpu[i]], need);
            out->req_tflops[i] = (double)need[ALLOC_DIM_REQ_T] / ALLOC_UTF_PER_TFLOPS;
            out->lim_tflops[i] = (double)need[ALLOC_DIM_LIM_T] / ALLOC_UTF_PER_TFLOPS;
        }
        out->req_vram = (uint64_t)q->req_v;
        out->lim_vram = (uint64_t)q->lim_v;
    }
    return true;
}

/* ---- placing ------------------------------------------------------------------------------------------ */

static int search_index(const gp_allocator *a, const alloc_query *q, gp_alloc_placement *out)
{
    if (q->node >= 0)
        return gp_alloc_fit_node(a, q, q->node, out) ? q->node : -1;
    const alloc_pool *P = &a->pools[q->pool];
    int best = -1;
    gp_alloc_placement cand;
    for (int i = 0; i < P->ngroups; i++) {
        const alloc_group *G = &a->groups[P->groups[i]];
        if (G->model >= 0 &&
            ((q->model != -1 && G->model != q->model) || (q->vendor != -1 && G->vendor != q->vendor)))
            continue;
        int n = gp_alloc_index_find(a, P->groups[i], q, &cand);
        if (n >= 0 && (best < 0 || gp_alloc_node_cmp(a, q->strategy, n, best) < 0)) {
            best = n;
            *out = cand;
        }
    }
    return best;
}

static int search_scan(const gp_allocator *a, const alloc_query *q, gp_alloc_placement *out)
{
    if (q->node >= 0)
        return gp_alloc_fit_node(a, q, q->node, out) ? q->node : -1;
    const alloc_pool *P = &a->pools[q->pool];
    bool fullest = nodes_fullest_first(q->strategy);
    int best = -1;
    order_key bk = {0};
    gp_alloc_placement cand;
    for (int i = 0; i < P->nnodes; i++) {
        int n = P->nodes[i];
        if (!gp_alloc_fit_node(a, q, n, &cand))
            continue;
        order_key k = {.id = n};
        gp_alloc_node_key(a, n, &k.share_t, &k.share_v, &k.load);
        if (best < 0 || key_cmp(fullest, &k, &bk) < 0) {
            best = n;
            bk = k;
            *out = cand;
        }
    }
    return best;
}

static void placement_totals(const gp_alloc_placement *p, int64_t tot[ALLOC_NDIM])
{
    tot[ALLOC_DIM_REQ_T] = tot[ALLOC_DIM_LIM_T] = 0;
    for (int i = 0; i < p->ngpus; i++) {
        tot[ALLOC_DIM_REQ_T] += utf_of(p->req_tflops[i]);
        tot[ALLOC_DIM_LIM_T] += utf_of(p->lim_tflops[i]);
    }
    tot[ALLOC_DIM_REQ_V] = (int64_t)p->req_vram * p->ngpus;
    tot[ALLOC_DIM_LIM_V] = (int64_t)p->lim_vram * p->ngpus;
}

static int place(const gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out, gp_err *err,
                 bool scan)
{
    alloc_query q;
    if (a == NULL || out == NULL)
        return gp_err_set(err, GP_ERR_INVALID, "no allocator or no placement to fill");
    if (resolve_query(a, r, &q, err) < 0)
        return -1;
    /* what the quota can judge before GPUs are chosen (all of it but percent TFLOPS) */
    int64_t ask[ALLOC_NDIM] = {q.req_t * q.k, q.req_v * q.k, q.lim_t * q.k, q.lim_v * q.k};
    if (quota_check(a, &q, ask, !q.pct, err) < 0)
        return -1;
    gp_alloc_placement p;
    int node = scan ? search_scan(a, &q, &p) : search_index(a, &q, &p);
    if (node < 0)
        return gp_alloc_explain(a, &q, err);
    if (q.pct) {
        placement_totals(&p, ask);
        if (quota_check(a, &q, ask, true, err) < 0)
            return -1;
    }
    *out = p;
    gp_err_clear(err);
    return 0;
}

int gp_alloc_place(const gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out, gp_err *err)
{
    return place(a, r, out, err, false);
}

int gp_alloc_place_scan(const gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out,
                        gp_err *err)
{
    return place(a, r, out, err, true);
}

/* ---- commit and release ------------------------------------------------------------------------------- */

static bool placement_usable(const gp_allocator *a, const gp_alloc_placement *p)
{
    if (p == NULL || p->ngpus < 1 || p->ngpus > GP_ALLOC_MAX_GPUS || p->req_vram > MAX_VRAM ||
        p->lim_vram > MAX_VRAM)
        return false;
    for (int i = 0; i < p->ngpus; i++) {
        if (p->gpu[i] < 0 || p->gpu[i] >= a->ngpus)
            return false;
        double t[2] = {p->req_tflops[i], p->lim_tflops[i]};
        for (int j = 0; j < 2; j++)
            if (!(t[j] >= 0 && t[j] <= MAX_TFLOPS))
                return false;
    }
    return true;
}

static void apply(gp_allocator *a, const gp_alloc_request *r, const gp_alloc_placement *p, int sign)
{
    if (a == NULL || !placement_usable(a, p))
        return; /* nothing half-applied: a malformed placement changes nothing */
    int touched[GP_ALLOC_MAX_GPUS], nt = 0;
    for (int i = 0; i < p->ngpus; i++) {
        int node = a->gpus[p->gpu[i]].node, j = 0;
        while (j < nt && touched[j] != node)
            j++;
        if (j == nt)
            touched[nt++] = node;
    }
    for (int j = 0; j < nt; j++)
        gp_alloc_index_detach(a, touched[j]);
    for (int i = 0; i < p->ngpus; i++) {
        alloc_gpu *g = &a->gpus[p->gpu[i]];
        g->used[ALLOC_DIM_REQ_T] += sign * utf_of(p->req_tflops[i]);
        g->used[ALLOC_DIM_LIM_T] += sign * utf_of(p->lim_tflops[i]);
        g->used[ALLOC_DIM_REQ_V] += sign * (int64_t)p->req_vram;
        g->used[ALLOC_DIM_LIM_V] += sign * (int64_t)p->lim_vram;
        g->allocations += sign;
    }
    for (int j = 0; j < nt; j++)
        gp_alloc_index_attach(a, touched[j]);
    if (r != NULL && r->quota >= 0 && r->quota < a->nquotas) {
        alloc_quota *Q = &a->quotas[r->quota];
        int64_t tot[ALLOC_NDIM];
        placement_totals(p, tot);
        for (int d = 0; d < ALLOC_NDIM; d++)
            Q->used[d] += sign * tot[d];
        Q->workloads += sign;
    }
}

void gp_alloc_commit(gp_allocator *a, const gp_alloc_request *r, const gp_alloc_placement *p)
{
    apply(a, r, p, +1);
}

void gp_alloc_release(gp_allocator *a, const gp_alloc_request *r, const gp_alloc_placement *p)
{
    apply(a, r, p, -1);
}

int gp_alloc_allocate(gp_allocator *a, const gp_alloc_request *r, gp_alloc_placement *out, gp_err *err)
{
    if (gp_alloc_place(a, r, out, err) < 0)
        return -1;
    gp_alloc_commit(a, r, out);
    return 0;
}

/* ---- state -------------------------------------------------------------------------------------------- */

int gp_alloc_gpu_state_get(const gp_allocator *a, int gpu, gp_alloc_gpu_state *out)
{
    if (a == NULL || out == NULL || gpu < 0 || gpu >= a->ngpus)
        return -1;
    const alloc_gpu *g = &a->gpus[gpu];
    *out = (gp_alloc_gpu_state){
        .node = g->node,
        .healthy = g->healthy,
        .tflops = (double)g->cap[ALLOC_DIM_REQ_T] / ALLOC_UTF_PER_TFLOPS,
        .req_tflops = (double)g->used[ALLOC_DIM_REQ_T] / ALLOC_UTF_PER_TFLOPS,
        .lim_tflops = (double)g->used[ALLOC_DIM_LIM_T] / ALLOC_UTF_PER_TFLOPS,
        .load = g->load,
        .vram = (uint64_t)g->cap[ALLOC_DIM_REQ_V],
        .req_vram = (uint64_t)(g->used[ALLOC_DIM_REQ_V] > 0 ? g->used[ALLOC_DIM_REQ_V] : 0),
        .lim_vram = (uint64_t)(g->used[ALLOC_DIM_LIM_V] > 0 ? g->used[ALLOC_DIM_LIM_V] : 0),
        .allocations = g->allocations,
        .tflops_oversold = (double)g->cap[ALLOC_DIM_LIM_T] / ALLOC_UTF_PER_TFLOPS,
        .vram_expanded = (uint64_t)g->cap[ALLOC_DIM_LIM_V],
    };
    for (int d = 0; d < ALLOC_NDIM; d++)
        out->over_capacity |= g->used[d] > g->cap[d];
    return 0;
}

int gp_alloc_quota_state_get(const gp_allocator *a, int quota, gp_alloc_quota_state *out)
{
    if (a == NULL || out == NULL || quota < 0 || quota >= a->nquotas)
        return -1;
    const alloc_quota *Q = &a->quotas[quota];
    *out = (gp_alloc_quota_state){
        .req_tflops = (double)Q->used[ALLOC_DIM_REQ_T] / ALLOC_UTF_PER_TFLOPS,
        .lim_tflops = (double)Q->used[ALLOC_DIM_LIM_T] / ALLOC_UTF_PER_TFLOPS,
        .req_vram = (uint64_t)(Q->used[ALLOC_DIM_REQ_V] > 0 ? Q->used[ALLOC_DIM_REQ_V] : 0),
        .lim_vram = (uint64_t)(Q->used[ALLOC_DIM_LIM_V] > 0 ? Q->used[ALLOC_DIM_LIM_V] : 0),
        .workloads = Q->workloads,
    };
    return 0;
}

int gp_alloc_check(const gp_allocator *a, gp_err *err)
{
    for (int i = 0; i < a->ngroups; i++)
        if (gp_alloc_index_check(a, i, err) < 0)
            return -1;
    for (int i = 0; i < a->nnodes; i++) {
        const alloc_node *n = &a->nodes[i];
        if ((n->group < 0) != (n->ngpus == 0))
            return gp_err_set(err, GP_ERR_INTERNAL, "node %d: in group %d with %d GPUs", i, n->group,
                              n->ngpus);
    }
    return 0;
}

/* alloc_index.c - the allocator's index: per group of nodes (one pool, one GPU model), a treap of the nodes
 * in their pool strategy's order, each subtree carrying what its best nodes have free.
 *
 * A node's summary own[k-1][d] is the k-th largest free amount of dimension d among its usable GPUs (ready
 * node, healthy GPU), and its grid (alloc_internal.h) which steps of a TFLOPS and a VRAM dimension one GPU
 * has free together; agg and grid_agg are the maximum and the union over the subtree, nworker the count of
 * its nodes whose GPU-over-IP worker is up (a remote request skips a subtree without one). A node that could
 * hold k GPUs of a request has own[k-1][d] >= the request's need in every dimension and, for k = 1, the
 * grid bits of the need's steps set, so a subtree that falls short is skipped whole; the first node in
 * order that passes and whose GPUs fit exactly (gp_alloc_fit_node) is the group's answer. The summaries
 * only prune; the exact check decides. Invariants (gp_alloc_index_check): in-order = strategy order of the
 * cached keys, heap order of the priorities (a hash of the node id, so shapes are deterministic),
 * summaries, maxima, unions and cached keys equal to what the GPUs say. Callers detach a node before
 * changing what its key or summary depends on and attach it after; a group whose GPUs outgrow its grid
 * thresholds or summary count is rebuilt.
 */
#include "controller/alloc_internal.h"

#include <stdio.h>
#include <string.h>

static uint32_t prio_of(int id)
{
    uint32_t x = (uint32_t)id * 0x9E3779B9u + 0x7F4A7C15u;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    return x ^ (x >> 16);
}

/* Out of 64ths of the largest capacity: fine steps where small requests are, coarse ones above. */
static const int grid_64ths[ALLOC_GRID] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40, 48, 56, 60, 64};
static const int pair_dims[ALLOC_PAIRS][2] = {{ALLOC_DIM_REQ_T, ALLOC_DIM_REQ_V},
                                              {ALLOC_DIM_REQ_T, ALLOC_DIM_LIM_V},
                                              {ALLOC_DIM_LIM_T, ALLOC_DIM_REQ_V},
                                              {ALLOC_DIM_LIM_T, ALLOC_DIM_LIM_V}};

/* The highest step of the group's dimension d that v reaches; -1 below zero. */
static int grid_step(const alloc_group *G, int d, int64_t v)
{
    if (v < 0)
        return -1;
    int i = ALLOC_GRID - 1;
    while (G->thr[d][i] > v)
        i--;
    return i;
}

/* A GPU with steps (x, y) free in a pair has all of (<= x, <= y) free. */
static void grid_mark(alloc_grid *grid, int pair, int x, int y)
{
    if (x < 0 || y < 0)
        return;
    uint16_t bits = (uint16_t)((2u << y) - 1);
    for (int i = 0; i <= x; i++)
        grid->row[pair][i] |= bits;
}

static bool grid_has(const alloc_grid *grid, const int step[ALLOC_NDIM])
{
    for (int p = 0; p < ALLOC_PAIRS; p++)
        if (!(grid->row[p][step[pair_dims[p][0]]] >> step[pair_dims[p][1]] & 1))
            return false;
    return true;
}

void gp_alloc_node_summary(const gp_allocator *a, int node, int64_t own[GP_ALLOC_MAX_GPUS][ALLOC_NDIM],
                           alloc_grid *grid)
{
    const alloc_node *n = &a->nodes[node];
    const alloc_group *G = &a->groups[n->group];
    int64_t top[ALLOC_NDIM][GP_ALLOC_MAX_GPUS];
    int cnt = 0;
    memset(grid, 0, sizeof *grid);
    for (int i = 0; n->ready && i < n->ngpus; i++) {
        const alloc_gpu *g = &a->gpus[n->gpus[i]];
        if (!g->healthy)
            continue;
        int step[ALLOC_NDIM];
        for (int d = 0; d < ALLOC_NDIM; d++)
            step[d] = grid_step(G, d, g->cap[d] - g->used[d]);
        for (int p = 0; p < ALLOC_PAIRS; p++)
            grid_mark(grid, p, step[pair_dims[p][0]], step[pair_dims[p][1]]);
        int len = cnt < GP_ALLOC_MAX_GPUS ? cnt + 1 : GP_ALLOC_MAX_GPUS;
        for (int d = 0; d < ALLOC_NDIM; d++) {
            int64_t v = g->cap[d] - g->used[d];
            int pos = len - 1;
            if (cnt >= GP_ALLOC_MAX_GPUS && v <= top[d][pos])
                continue;
            while (pos > 0 && top[d][pos - 1] < v) {
                top[d][pos] = top[d][pos - 1];
                pos--;
            }
            top[d][pos] = v;
        }
        cnt = len;
    }
    for (int k = 0; k < GP_ALLOC_MAX_GPUS; k++)
        for (int d = 0; d < ALLOC_NDIM; d++)
            own[k][d] = k < cnt ? top[d][k] : ALLOC_NONE;
}

/* ---- the treap ---------------------------------------------------------------------------------------- */

typedef struct tctx {
    gp_allocator *a;
    gp_alloc_strategy s;
    int kmax;
} tctx;

static void pull(const tctx *c, int t)
{
    alloc_node *n = &c->a->nodes[t];
    const alloc_node *l = n->left >= 0 ? &c->a->nodes[n->left] : NULL;
    const alloc_node *r = n->right >= 0 ? &c->a->nodes[n->right] : NULL;
    n->nworker = n->worker + (l != NULL ? l->nworker : 0) + (r != NULL ? r->nworker : 0);
    for (int k = 0; k < c->kmax; k++)
        for (int d = 0; d < ALLOC_NDIM; d++) {
            int64_t v = n->own[k][d];
            if (l != NULL && l->agg[k][d] > v)
                v = l->agg[k][d];
            if (r != NULL && r->agg[k][d] > v)
                v = r->agg[k][d];
            n->agg[k][d] = v;
        }
    /* the grids as flat arrays of words: one short loop the compiler can vectorize */
    uint16_t *dst = &n->grid_agg.row[0][0];
    const uint16_t *own = &n->grid_own.row[0][0];
    const uint16_t *lg = l != NULL ? &l->grid_agg.row[0][0] : own,
                   *rg = r != NULL ? &r->grid_agg.row[0][0] : own;
    for (int i = 0; i < ALLOC_PAIRS * ALLOC_GRID; i++)
        dst[i] = (uint16_t)(own[i] | lg[i] | rg[i]);
}

/* Splits tree t around x (not in it): *l gets the nodes before x, *r those after. */
static void split(const tctx *c, int t, int x, int *l, int *r)
{
    if (t < 0) {
        *l = *r = -1;
        return;
    }
    alloc_node *n = &c->a->nodes[t];
    if (gp_alloc_node_cmp(c->a, c->s, t, x) < 0) {
        split(c, n->right, x, &n->right, r);
        *l = t;
    } else {
        split(c, n->left, x, l, &n->left);
        *r = t;
    }
    pull(c, t);
}

static int merge(const tctx *c, int l, int r)
{
    if (l < 0)
        return r;
    if (r < 0)
        return l;
    alloc_node *L = &c->a->nodes[l], *R = &c->a->nodes[r];
    if (L->prio > R->prio) {
        L->right = merge(c, L->right, r);
        pull(c, l);
        return l;
    }
    R->left = merge(c, l, R->left);
    pull(c, r);
    return r;
}

static int insert(const tctx *c, int t, int x)
{
    alloc_node *X = &c->a->nodes[x];
    if (t < 0) {
        pull(c, x);
        return x;
    }
    alloc_node *T = &c->a->nodes[t];
    if (X->prio > T->prio) {
        split(c, t, x, &X->left, &X->right);
        pull(c, x);
        return x;
    }
    if (gp_alloc_node_cmp(c->a, c->s, x, t) < 0)
        T->left = insert(c, T->left, x);
    else
        T->right = insert(c, T->right, x);
    pull(c, t);
    return t;
}

static int erase(const tctx *c, int t, int x)
{
    if (t < 0)
        return -1; /* not there: an invariant broke; gp_alloc_index_check reports it */
    alloc_node *T = &c->a->nodes[t];
    if (t == x) {
        int m = merge(c, T->left, T->right);
        T->left = T->right = -1;
        return m;
    }
    if (gp_alloc_node_cmp(c->a, c->s, x, t) < 0)
        T->left = erase(c, T->left, x);
    else
        T->right = erase(c, T->right, x);
    pull(c, t);
    return t;
}

static tctx ctx_of(gp_allocator *a, const alloc_group *G)
{
    return (tctx){.a = a, .s = a->pools[G->pool].strategy, .kmax = G->kmax};
}

void gp_alloc_index_attach(gp_allocator *a, int node)
{
    alloc_node *n = &a->nodes[node];
    if (n->group < 0)
        return;
    alloc_group *G = &a->groups[n->group];
    gp_alloc_node_summary(a, node, n->own, &n->grid_own);
    gp_alloc_node_key(a, node, &n->share_t, &n->share_v, &n->load);
    n->prio = prio_of(node);
    n->left = n->right = -1;
    tctx c = ctx_of(a, G);
    G->root = insert(&c, G->root, node);
}

void gp_alloc_index_detach(gp_allocator *a, int node)
{
    alloc_node *n = &a->nodes[node];
    if (n->group < 0)
        return;
    alloc_group *G = &a->groups[n->group];
    tctx c = ctx_of(a, G);
    G->root = erase(&c, G->root, node);
}

bool gp_alloc_index_outgrown(const gp_allocator *a, int node)
{
    const alloc_node *n = &a->nodes[node];
    const alloc_group *G = &a->groups[n->group];
    for (int i = 0; i < n->ngpus; i++)
        for (int d = 0; d < ALLOC_NDIM; d++)
            if (a->gpus[n->gpus[i]].cap[d] > G->max_cap[d])
                return true;
    return false;
}

void gp_alloc_index_rebuild(gp_allocator *a, int group)
{
    alloc_group *G = &a->groups[group];
    const alloc_pool *P = &a->pools[G->pool];
    memset(G->max_cap, 0, sizeof G->max_cap);
    for (int i = 0; i < P->nnodes; i++) {
        const alloc_node *n = &a->nodes[P->nodes[i]];
        for (int j = 0; n->group == group && j < n->ngpus; j++)
            for (int d = 0; d < ALLOC_NDIM; d++)
                if (a->gpus[n->gpus[j]].cap[d] > G->max_cap[d])
                    G->max_cap[d] = a->gpus[n->gpus[j]].cap[d];
    }
    for (int d = 0; d < ALLOC_NDIM; d++)
        for (int i = 0; i < ALLOC_GRID; i++)
            G->thr[d][i] = (int64_t)((double)G->max_cap[d] * grid_64ths[i] / 64);
    G->root = -1;
    for (int i = 0; i < P->nnodes; i++)
        if (a->nodes[P->nodes[i]].group == group)
            gp_alloc_index_attach(a, P->nodes[i]);
}

/* ---- finding ------------------------------------------------------------------------------------------ */

typedef struct fctx {
    const gp_allocator *a;
    const alloc_query *q;
    int64_t lo[ALLOC_NDIM]; /* what every GPU of the group needs at least */
    int step[ALLOC_NDIM];   /* lo on the group's grid (one-GPU requests) */
    gp_alloc_placement *out;
} fctx;

static bool covers(const int64_t have[ALLOC_NDIM], const int64_t need[ALLOC_NDIM])
{
    return have[0] >= need[0] && have[1] >= need[1] && have[2] >= need[2] && have[3] >= need[3];
}

static int find(const fctx *f, int t)
{
    while (t >= 0) {
        const alloc_node *n = &f->a->nodes[t];
        bool one = f->q->k == 1;
        if (!covers(n->agg[f->q->k - 1], f->lo) || (one && !grid_has(&n->grid_agg, f->step)) ||
            (f->q->remote && n->nworker == 0))
            return -1;
        int r = find(f, n->left);
        if (r >= 0)
            return r;
        if ((!f->q->remote || n->worker) && covers(n->own[f->q->k - 1], f->lo) &&
            (!one || grid_has(&n->grid_own, f->step)) && gp_alloc_fit_node(f->a, f->q, t, f->out))
            return t;
        t = n->right;
    }
    return -1;
}

int gp_alloc_index_find(const gp_allocator *a, int group, const alloc_query *q, gp_alloc_placement *out)
{
    const alloc_group *G = &a->groups[group];
    if (q->k > G->kmax || G->root < 0)
        return -1;
    fctx f = {.a = a, .q = q, .out = out};
    /* percent requests need the least on the group's smallest GPU (resolving is monotonic in TFLOPS) */
    f.lo[ALLOC_DIM_REQ_T] = q->pct ? gp_alloc_resolve_pct(q->req_pct, G->min_tflops) : q->req_t;
    f.lo[ALLOC_DIM_LIM_T] = q->pct ? gp_alloc_resolve_pct(q->lim_pct, G->min_tflops) : q->lim_t;
    f.lo[ALLOC_DIM_REQ_V] = q->req_v;
    f.lo[ALLOC_DIM_LIM_V] = q->lim_v;
    for (int d = 0; d < ALLOC_NDIM; d++)
        f.step[d] = grid_step(G, d, f.lo[d]);
    return find(&f, G->root);
}

/* ---- checking ----------------------------------------------------------------------------------------- */

typedef struct cctx {
    const gp_allocator *a;
    int group, count, prev;
    gp_err *err;
} cctx;

static int check_node(cctx *c, int t, uint32_t parent_prio)
{
    if (t < 0)
        return 0;
    const gp_allocator *a = c->a;
    const alloc_node *n = &a->nodes[t];
    const alloc_group *G = &a->groups[c->group];
    if (t >= a->nnodes || n->group != c->group)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: node %d of group %d in its tree", c->group, t,
                          n->group);
    int want_k = n->ngpus < GP_ALLOC_MAX_GPUS ? n->ngpus : GP_ALLOC_MAX_GPUS;
    if (G->kmax < want_k)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: keeps %d summaries, node %d has %d GPUs",
                          c->group, G->kmax, t, n->ngpus);
    for (int i = 0; i < n->ngpus; i++) {
        const alloc_gpu *g = &a->gpus[n->gpus[i]];
        if (g->cap[ALLOC_DIM_REQ_T] < G->min_tflops)
            return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: GPU %d is smaller than its bound", c->group,
                              n->gpus[i]);
        if (G->model >= 0 && (g->model != G->model || g->vendor != G->vendor))
            return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: GPU %d is of another model", c->group,
                              n->gpus[i]);
    }
    if (++c->count > G->nnodes)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: more nodes in the tree than %d", c->group,
                          G->nnodes);
    if (n->prio > parent_prio)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: node %d breaks the heap order", c->group, t);
    if (check_node(c, n->left, n->prio) < 0)
        return -1;
    gp_alloc_strategy s = a->pools[G->pool].strategy;
    if (c->prev >= 0 && gp_alloc_node_cmp(a, s, c->prev, t) >= 0)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: node %d is not after node %d", c->group, t,
                          c->prev);
    c->prev = t;
    double st, sv, ld;
    gp_alloc_node_key(a, t, &st, &sv, &ld);
    if (st != n->share_t || sv != n->share_v || ld != n->load)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "node %d: cached key (%g %g %g) is stale (%g %g %g)", t,
                          n->share_t, n->share_v, n->load, st, sv, ld);
    int64_t own[GP_ALLOC_MAX_GPUS][ALLOC_NDIM];
    alloc_grid grid, agg;
    gp_alloc_node_summary(a, t, own, &grid);
    if (memcmp(own, n->own, sizeof own) != 0 || memcmp(&grid, &n->grid_own, sizeof grid) != 0)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "node %d: summary is stale", t);
    agg = grid;
    for (int p = 0; p < ALLOC_PAIRS; p++)
        for (int i = 0; i < ALLOC_GRID; i++) {
            if (n->left >= 0)
                agg.row[p][i] |= a->nodes[n->left].grid_agg.row[p][i];
            if (n->right >= 0)
                agg.row[p][i] |= a->nodes[n->right].grid_agg.row[p][i];
        }
    if (memcmp(&agg, &n->grid_agg, sizeof agg) != 0)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "node %d: subtree grid is stale", t);
    int nworker = n->worker + (n->left >= 0 ? a->nodes[n->left].nworker : 0) +
                  (n->right >= 0 ? a->nodes[n->right].nworker : 0);
    if (nworker != n->nworker)
        return gp_err_set(c->err, GP_ERR_INTERNAL, "node %d: %d workers counted in its subtree, %d there", t,
                          n->nworker, nworker);
    for (int d = 0; d < ALLOC_NDIM; d++)
        if (G->max_cap[d] <= 0 || G->thr[d][0] != 0)
            return gp_err_set(c->err, GP_ERR_INTERNAL, "group %d: grid thresholds not set", c->group);
    for (int k = 0; k < G->kmax; k++)
        for (int d = 0; d < ALLOC_NDIM; d++) {
            int64_t v = n->own[k][d];
            if (n->left >= 0 && a->nodes[n->left].agg[k][d] > v)
                v = a->nodes[n->left].agg[k][d];
            if (n->right >= 0 && a->nodes[n->right].agg[k][d] > v)
                v = a->nodes[n->right].agg[k][d];
            if (v != n->agg[k][d])
                return gp_err_set(c->err, GP_ERR_INTERNAL, "node %d: subtree maximum %d/%d is stale", t, k,
                                  d);
        }
    return check_node(c, n->right, n->prio);
}

int gp_alloc_index_check(const gp_allocator *a, int group, gp_err *err)
{
    cctx c = {.a = a, .group = group, .prev = -1, .err = err};
    if (check_node(&c, a->groups[group].root, UINT32_MAX) < 0)
        return -1;
    if (c.count != a->groups[group].nnodes)
        return gp_err_set(err, GP_ERR_INTERNAL, "group %d: %d nodes in the tree, %d in the group", group,
                          c.count, a->groups[group].nnodes);
    return 0;
}

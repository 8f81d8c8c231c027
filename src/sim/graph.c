/* graph.c - CUDA graphs: building them node by node, instantiating them, launching them on streams.
 *
 * Nodes are validated and copied when added (kernel nodes by gp_kernel_op, as cuLaunchKernel does);
 * instantiation copies the graph into an independent executable graph. A launch is one GP_OP_GRAPH
 * operation: the executor runs the nodes in creation order (topological) through gp_op_run, the path of
 * ordinary work, each starting when its dependencies ended, so kernels take turns on the device timeline and
 * independent copies overlap them. Copy and memset addresses are resolved at each launch. Launches of one
 * executable graph are ordered whatever their streams. Graphs belong to the context current when made and go
 * with it; graphs using an unloaded module's kernels can no longer run.
 */
#include "sim/graph.h"

#include <stdlib.h>
#include <string.h>

pthread_mutex_t g_gp_graph_mu = PTHREAD_MUTEX_INITIALIZER;

static gp_ptrvec g_graphs, g_execs; /* every live graph and executable graph */
static unsigned g_mark;

typedef struct exec_node {
    CUgraphNodeType type;
    size_t *deps; /* indices of earlier nodes */
    size_t ndeps;
    union {
        gp_op k;
        CUDA_MEMCPY3D copy;
        CUDA_MEMSET_NODE_PARAMS set;
        CUDA_HOST_NODE_PARAMS host;
    } u;
} exec_node;

typedef struct gp_graph_exec {
    atomic_int refs; /* the handle's, and one per launch in flight */
    gp_ctx *ctx;     /* the context its nodes run in; NULL if none needs one */
    gp_ctx *owner;
    atomic_bool dead; /* a kernel's module was unloaded */
    exec_node *nodes;
    size_t n;
    uint64_t *ends;     /* modelled end of each node in the running launch (launches never overlap) */
    pthread_mutex_t mu; /* orders launches: last/last_seq */
    gp_stream *last;    /* stream of the latest launch (holds a reference), or NULL */
    uint64_t last_seq;
} gp_graph_exec;

unsigned gp_graph_next_mark(void)
{
    return ++g_mark;
}

/* ---- graphs --------------------------------------------------------------------------------------- */

gp_graph *gp_graph_new(gp_ctx *owner)
{
    gp_graph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->ctx = owner;
    if (gp_ptrvec_push(&g_graphs, g) < 0) {
        free(g);
        return NULL;
    }
    gp_handle_add(g, GP_OBJ_GRAPH);
    return g;
}

static void node_free(gp_graph_node *n)
{
    gp_handle_del(n);
    if (n->type == CU_GRAPH_NODE_TYPE_KERNEL)
        gp_op_discard(&n->u.k);
    free(n->deps);
    free(n);
}

void gp_graph_free(gp_graph *g)
{
    gp_handle_del(g);
    gp_ptrvec_remove(&g_graphs, g);
    for (size_t i = 0; i < g->n; i++)
        node_free(g->nodes[i]);
    free(g->nodes);
    free(g);
}

static gp_graph *graph_of(CUgraph h)
{
    return h != NULL && gp_handle_type(h) == GP_OBJ_GRAPH ? (gp_graph *)h : NULL;
}

CUresult gp_graph_add(gp_graph *g, CUgraphNodeType type, gp_graph_node *const *deps, size_t ndeps,
                      const void *payload, gp_ctx *ctx, gp_graph_node **out)
{
    unsigned mark = gp_graph_next_mark();
    for (size_t i = 0; i < ndeps; i++) {
        if (deps[i] == NULL || deps[i]->g != g || deps[i]->mark == mark)
            return CUDA_ERROR_INVALID_VALUE; /* not a node of this graph, or listed twice */
        deps[i]->mark = mark;
    }
    gp_graph_node *n = calloc(1, sizeof *n);
    gp_graph_node **d = ndeps ? malloc(ndeps * sizeof *d) : NULL;
    if (n == NULL || (ndeps && d == NULL)) {
        free(n);
        free(d);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (g->n == g->cap) {
        size_t ncap = g->cap ? 2 * g->cap : 16;
        gp_graph_node **nn = realloc(g->nodes, ncap * sizeof *nn);
        if (nn == NULL) {
            free(n);
            free(d);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        g->nodes = nn;
        g->cap = ncap;
    }
    if (ndeps)
        memcpy(d, deps, ndeps * sizeof *d);
    n->g = g;
    n->idx = g->n;
    n->type = type;
    n->deps = d;
    n->ndeps = ndeps;
    n->ctx = ctx;
    switch (type) {
    case CU_GRAPH_NODE_TYPE_KERNEL: n->u.k = *(const gp_op *)payload; break;
    case CU_GRAPH_NODE_TYPE_MEMCPY: n->u.copy = *(const CUDA_MEMCPY3D *)payload; break;
    case CU_GRAPH_NODE_TYPE_MEMSET: n->u.set = *(const CUDA_MEMSET_NODE_PARAMS *)payload; break;
    case CU_GRAPH_NODE_TYPE_HOST: n->u.host = *(const CUDA_HOST_NODE_PARAMS *)payload; break;
    default: break;
    }
    g->nodes[g->n++] = n;
    gp_handle_add(n, GP_OBJ_GRAPH_NODE);
    *out = n;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
    GP_INIT_OR_RETURN();
    if (phGraph == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *owner = NULL;
    gp_ctx_current(&owner);
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph *g = gp_graph_new(owner);
    pthread_mutex_unlock(&g_gp_graph_mu);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *phGraph = (CUgraph)g;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphDestroy(CUgraph hGraph)
{
    GP_INIT_OR_RETURN();
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph *g = graph_of(hGraph);
    CUresult rc = g == NULL || g->capture ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
    if (rc == CUDA_SUCCESS)
        gp_graph_free(g);
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

/* Adds a node through the API: checks the graph and the dependency list. */
static CUresult add_node(CUgraphNode *out, CUgraph hGraph, const CUgraphNode *deps, size_t ndeps,
                         CUgraphNodeType type, const void *payload, gp_ctx *ctx)
{
    if (out == NULL || (ndeps > 0 && deps == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph *g = graph_of(hGraph);
    CUresult rc = g ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; rc == CUDA_SUCCESS && i < ndeps; i++)
        if (gp_handle_type(deps[i]) != GP_OBJ_GRAPH_NODE)
            rc = CUDA_ERROR_INVALID_VALUE;
    gp_graph_node *n = NULL;
    if (rc == CUDA_SUCCESS)
        rc = gp_graph_add(g, type, (gp_graph_node *const *)deps, ndeps, payload, ctx, &n);
    pthread_mutex_unlock(&g_gp_graph_mu);
    if (rc == CUDA_SUCCESS)
        *out = (CUgraphNode)n;
    return rc;
}

static CUresult add_kernel(CUgraphNode *out, CUgraph g, const CUgraphNode *deps, size_t ndeps,
                           CUfunction func, CUkernel kern, const CUDA_KERNEL_NODE_PARAMS_v1 *p)
{
    if (func == NULL && kern != NULL) {
        /* A CUkernel comes from the library API (cuLibraryLoad*), which the simulation does not have. */
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "kernel nodes of a CUkernel are not supported by the simulated GPU");
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (func == NULL || gp_handle_type(func) != GP_OBJ_FUNC)
        return CUDA_ERROR_INVALID_VALUE;
    gp_func *f = (gp_func *)func;
    if (!atomic_load(&f->mod->ctx->active))
        return CUDA_ERROR_INVALID_VALUE;
    unsigned grid[3] = {p->gridDimX, p->gridDimY, p->gridDimZ};
    unsigned block[3] = {p->blockDimX, p->blockDimY, p->blockDimZ};
    gp_op op;
    CUresult rc =
        gp_kernel_op(f, grid, block, p->sharedMemBytes, false, NULL, p->kernelParams, p->extra, &op);
    if (rc)
        return rc;
    rc = add_node(out, g, deps, ndeps, CU_GRAPH_NODE_TYPE_KERNEL, &op, f->mod->ctx);
    if (rc)
        gp_op_discard(&op);
    return rc;
}

GP_API CUresult cuGraphAddKernelNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph,
                                        const CUgraphNode *dependencies, size_t numDependencies,
                                        const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    GP_INIT_OR_RETURN();
    if (nodeParams == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const CUDA_KERNEL_NODE_PARAMS *p = nodeParams;
    /* The v1 layout is the v2 one without kern and ctx (ctx is ignored when func is set). */
    CUDA_KERNEL_NODE_PARAMS_v1 v1 = {p->func,         p->gridDimX,  p->gridDimY,  p->gridDimZ,
                                     p->blockDimX,    p->blockDimY, p->blockDimZ, p->sharedMemBytes,
                                     p->kernelParams, p->extra};
    return add_kernel(phGraphNode, hGraph, dependencies, numDependencies, p->func, p->kern, &v1);
}

GP_API CUresult cuGraphAddKernelNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    GP_INIT_OR_RETURN();
    if (nodeParams == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return add_kernel(phGraphNode, hGraph, dependencies, numDependencies, nodeParams->func, NULL, nodeParams);
}

/* The context a memcpy or memset node runs in: the given one, or the current one. */
static CUresult node_ctx(CUcontext h, gp_ctx **out)
{
    return gp_ctx_resolve(h, out);
}

GP_API CUresult cuGraphAddMemcpyNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_MEMCPY3D *copyParams, CUcontext ctx)
{
    GP_INIT_OR_RETURN();
    if (copyParams == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c;
    CUresult rc = node_ctx(ctx, &c);
    if (rc)
        return rc;
    gp_op op;
    if ((rc = gp_copy3d_op(copyParams, &op)))
        return rc; /* validated now, resolved again at each launch */
    return add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_MEMCPY, copyParams,
                    c);
}

GP_API CUresult cuGraphAddMemsetNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_MEMSET_NODE_PARAMS *memsetParams, CUcontext ctx)
{
    GP_INIT_OR_RETURN();
    if (memsetParams == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c;
    CUresult rc = node_ctx(ctx, &c);
    if (rc)
        return rc;
    gp_op op;
    if ((rc = gp_memset_op(memsetParams, &op)))
        return rc;
    return add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_MEMSET,
                    memsetParams, c);
}

GP_API CUresult cuGraphAddHostNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                   size_t numDependencies, const CUDA_HOST_NODE_PARAMS *nodeParams)
{
    GP_INIT_OR_RETURN();
    if (nodeParams == NULL || nodeParams->fn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_HOST, nodeParams,
                    NULL);
}

GP_API CUresult cuGraphAddEmptyNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                    size_t numDependencies)
{
    GP_INIT_OR_RETURN();
    return add_node(phGraphNode, hGraph, dependencies, numDependencies, CU_GRAPH_NODE_TYPE_EMPTY, NULL, NULL);
}

GP_API CUresult cuGraphGetNodes(CUgraph hGraph, CUgraphNode *nodes, size_t *numNodes)
{
    GP_INIT_OR_RETURN();
    if (numNodes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph *g = graph_of(hGraph);
    if (g && nodes == NULL) {
        *numNodes = g->n;
    } else if (g) {
        size_t k = 0;
        for (; k < *numNodes && k < g->n; k++)
            nodes[k] = (CUgraphNode)g->nodes[k];
        for (size_t i = k; i < *numNodes; i++)
            nodes[i] = NULL;
        *numNodes = k;
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return g ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- executable graphs ---------------------------------------------------------------------------- */

static void exec_free(gp_graph_exec *x)
{
    for (size_t i = 0; i < x->n; i++) {
        if (x->nodes[i].type == CU_GRAPH_NODE_TYPE_KERNEL)
            gp_op_discard(&x->nodes[i].u.k);
        free(x->nodes[i].deps);
    }
    if (x->last)
        gp_stream_unref(x->last);
    free(x->nodes);
    free(x->ends);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

void gp_graph_exec_unref(gp_graph_exec *x)
{
    if (atomic_fetch_sub(&x->refs, 1) == 1)
        exec_free(x);
}

/* Copies node n of a graph into an executable graph's node. */
static CUresult exec_node_copy(exec_node *e, const gp_graph_node *n)
{
    e->type = n->type;
    e->ndeps = n->ndeps;
    e->deps = n->ndeps ? malloc(n->ndeps * sizeof *e->deps) : NULL;
    if (n->ndeps && e->deps == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n->ndeps; i++)
        e->deps[i] = n->deps[i]->idx;
    switch (n->type) {
    case CU_GRAPH_NODE_TYPE_KERNEL:
        e->u.k = n->u.k;
        if (n->u.k.u.k.argsize > GP_OP_INLINE_ARGS) {
            e->u.k.u.k.args = malloc(n->u.k.u.k.argsize);
            if (e->u.k.u.k.args == NULL) {
                e->type = CU_GRAPH_NODE_TYPE_EMPTY; /* nothing to free */
                return CUDA_ERROR_OUT_OF_MEMORY;
            }
            memcpy(e->u.k.u.k.args, n->u.k.u.k.args, n->u.k.u.k.argsize);
        }
        break;
    case CU_GRAPH_NODE_TYPE_MEMCPY: e->u.copy = n->u.copy; break;
    case CU_GRAPH_NODE_TYPE_MEMSET: e->u.set = n->u.set; break;
    case CU_GRAPH_NODE_TYPE_HOST: e->u.host = n->u.host; break;
    default: break;
    }
    return CUDA_SUCCESS;
}

#define INSTANTIATE_FLAGS                                                                   \
    (CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH | CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD | \
     CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH | CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY)

/* Instantiates g (lock held). On failure *result and *err_node say why, as cuGraphInstantiateWithParams
 * reports it. */
static CUresult instantiate_locked(gp_graph *g, unsigned long long flags, gp_graph_exec **out,
                                   CUgraphInstantiateResult *result, gp_graph_node **err_node)
{
    bool device_launch = flags & CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH;
    gp_ctx *ctx = NULL;
    *result = CUDA_GRAPH_INSTANTIATE_ERROR;
    if (g->capture)
        return CUDA_ERROR_INVALID_VALUE; /* not before cuStreamEndCapture */
    if (device_launch && g->n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < g->n; i++) {
        gp_graph_node *n = g->nodes[i];
        *err_node = n;
        if (n->dead || (n->ctx && !atomic_load(&n->ctx->active)))
            return CUDA_ERROR_INVALID_VALUE;
        if (device_launch && n->type != CU_GRAPH_NODE_TYPE_KERNEL && n->type != CU_GRAPH_NODE_TYPE_MEMCPY &&
            n->type != CU_GRAPH_NODE_TYPE_MEMSET) {
            *result = CUDA_GRAPH_INSTANTIATE_NODE_OPERATION_NOT_SUPPORTED;
            return CUDA_ERROR_INVALID_VALUE;
        }
        if (n->ctx && ctx && n->ctx != ctx) {
            if (device_launch) {
                *result = CUDA_GRAPH_INSTANTIATE_MULTIPLE_CTXS_NOT_SUPPORTED;
                return CUDA_ERROR_INVALID_VALUE;
            }
            gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                        "graphs whose nodes run in several contexts are not supported by the simulated "
                        "GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
        if (n->ctx)
            ctx = n->ctx;
    }
    *err_node = NULL;
    if (g->n > SIZE_MAX / sizeof(exec_node) || g->n > (size_t)UINT32_MAX)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_graph_exec *x = calloc(1, sizeof *x);
    if (x == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    atomic_store(&x->refs, 1);
    pthread_mutex_init(&x->mu, NULL);
    x->ctx = ctx;
    x->nodes = g->n ? calloc(g->n, sizeof *x->nodes) : NULL;
    x->ends = g->n ? calloc(g->n, sizeof *x->ends) : NULL;
    if (g->n && (x->nodes == NULL || x->ends == NULL)) {
        exec_free(x);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < g->n; i++) {
        x->n = i + 1;
        if (exec_node_copy(&x->nodes[i], g->nodes[i]) != CUDA_SUCCESS) {
            exec_free(x);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    x->n = g->n;
    *result = CUDA_GRAPH_INSTANTIATE_SUCCESS;
    *out = x;
    return CUDA_SUCCESS;
}

static CUresult instantiate(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags,
                            CUgraphInstantiateResult *result, CUgraphNode *err_node)
{
    gp_graph_node *bad = NULL;
    CUgraphInstantiateResult res = CUDA_GRAPH_INSTANTIATE_ERROR;
    CUresult rc = CUDA_SUCCESS;
    if (phGraphExec == NULL || (flags & ~(unsigned long long)INSTANTIATE_FLAGS) ||
        ((flags & CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH) &&
         (flags & CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH)))
        rc = CUDA_ERROR_INVALID_VALUE;
    gp_ctx *owner = NULL;
    gp_ctx_current(&owner);
    gp_graph_exec *x = NULL;
    if (rc == CUDA_SUCCESS) {
        pthread_mutex_lock(&g_gp_graph_mu);
        gp_graph *g = graph_of(hGraph);
        rc = g ? instantiate_locked(g, flags, &x, &res, &bad) : CUDA_ERROR_INVALID_VALUE;
        if (rc == CUDA_SUCCESS) {
            x->owner = x->ctx ? x->ctx : owner;
            if (gp_ptrvec_push(&g_execs, x) < 0) {
                exec_free(x);
                rc = CUDA_ERROR_OUT_OF_MEMORY;
                res = CUDA_GRAPH_INSTANTIATE_ERROR;
            } else {
                gp_handle_add(x, GP_OBJ_GRAPH_EXEC);
            }
        }
        pthread_mutex_unlock(&g_gp_graph_mu);
    }
    if (result)
        *result = res;
    if (err_node)
        *err_node = (CUgraphNode)bad;
    if (rc == CUDA_SUCCESS)
        *phGraphExec = (CUgraphExec)x;
    return rc;
}

GP_API CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph,
                                            unsigned long long flags)
{
    GP_INIT_OR_RETURN();
    if (flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD)
        return CUDA_ERROR_INVALID_VALUE; /* cuda.h: only with cuGraphInstantiateWithParams */
    return instantiate(phGraphExec, hGraph, flags, NULL, NULL);
}

static CUresult graph_upload(CUgraphExec hGraphExec, CUstream hStream, bool pt);

static CUresult instantiate_with_params(CUgraphExec *phGraphExec, CUgraph hGraph,
                                        CUDA_GRAPH_INSTANTIATE_PARAMS *p, bool pt)
{
    GP_INIT_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = instantiate(phGraphExec, hGraph, p->flags, &p->result_out, &p->hErrNode_out);
    if (rc == CUDA_SUCCESS && (p->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD) &&
        (rc = graph_upload(*phGraphExec, p->hUploadStream, pt)) != CUDA_SUCCESS) {
        cuGraphExecDestroy(*phGraphExec);
        p->result_out = CUDA_GRAPH_INSTANTIATE_ERROR;
    }
    return rc;
}

GP_API CUresult cuGraphInstantiateWithParams(CUgraphExec *phGraphExec, CUgraph hGraph,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    return instantiate_with_params(phGraphExec, hGraph, instantiateParams, false);
}

GP_API CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *phGraphExec, CUgraph hGraph,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    return instantiate_with_params(phGraphExec, hGraph, instantiateParams, true);
}

GP_API CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
{
    GP_INIT_OR_RETURN();
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph_exec *x = hGraphExec != NULL && gp_handle_type(hGraphExec) == GP_OBJ_GRAPH_EXEC
                           ? (gp_graph_exec *)hGraphExec
                           : NULL;
    if (x) {
        gp_handle_del(x);
        gp_ptrvec_remove(&g_execs, x);
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    if (x == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_graph_exec_unref(x); /* launches in flight keep it until they complete */
    return CUDA_SUCCESS;
}

/* ---- launching ------------------------------------------------------------------------------------ */

/* The executable graph behind a handle, with a reference taken, and the stream of the call. */
static CUresult launch_target(CUgraphExec hx, CUstream hs, bool pt, gp_graph_exec **xo, gp_stream **so)
{
    gp_ctx *cur = NULL;
    CUresult rc;
    if (hs == NULL || hs == CU_STREAM_LEGACY || hs == CU_STREAM_PER_THREAD) {
        if ((rc = gp_ctx_current(&cur)))
            return rc;
    } else {
        GP_INIT_OR_RETURN();
    }
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_graph_exec *x = hx != NULL && gp_handle_type(hx) == GP_OBJ_GRAPH_EXEC ? (gp_graph_exec *)hx : NULL;
    if (x)
        atomic_fetch_add(&x->refs, 1);
    pthread_mutex_unlock(&g_gp_graph_mu);
    if (x == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    rc = gp_stream_resolve(hs, pt, cur, so);
    if (rc == CUDA_SUCCESS && atomic_load(&x->dead)) {
        gp_log(GP_LOG_DEBUG, GP_LOG_SIM, "graph launch: a kernel's module was unloaded");
        rc = CUDA_ERROR_INVALID_VALUE;
    }
    if (rc == CUDA_SUCCESS && x->ctx && x->ctx != (*so)->ctx) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "launching a graph into a stream of another context is not supported by the "
                    "simulated GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
        rc = CUDA_ERROR_NOT_SUPPORTED;
    }
    if (rc == CUDA_SUCCESS)
        rc = gp_ctx_sticky((*so)->ctx);
    if (rc == CUDA_SUCCESS)
        rc = gp_capture_legacy(*so);
    if (rc) {
        gp_graph_exec_unref(x);
        return rc;
    }
    *xo = x;
    return CUDA_SUCCESS;
}

static CUresult graph_launch(CUgraphExec hGraphExec, CUstream hStream, bool pt)
{
    gp_graph_exec *x;
    gp_stream *s;
    CUresult rc = launch_target(hGraphExec, hStream, pt, &x, &s);
    if (rc)
        return rc;
    if (gp_stream_capturing(s)) {
        gp_graph_exec_unref(x);
        return gp_capture_refuse(s, "capturing a graph launch (a child graph node)",
                                 CUDA_ERROR_NOT_SUPPORTED);
    }
    gp_op op = {.kind = GP_OP_GRAPH};
    op.u.g.x = x; /* the launch's reference */
    /* Each launch is ordered behind the previous launch of the same executable graph. */
    pthread_mutex_lock(&x->mu);
    if (x->last)
        gp_op_add_dep(&op, x->last, x->last_seq);
    uint64_t seq = gp_stream_enqueue(s, &op);
    if (x->last != s) {
        atomic_fetch_add(&s->refs, 1);
        if (x->last)
            gp_stream_unref(x->last);
        x->last = s;
    }
    x->last_seq = seq;
    pthread_mutex_unlock(&x->mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
{
    return graph_launch(hGraphExec, hStream, false);
}

GP_API CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return graph_launch(hGraphExec, hStream, true);
}

/* Uploading prepares device-side state a GPU keeps for the graph; the simulation has none to prepare. */
static CUresult graph_upload(CUgraphExec hGraphExec, CUstream hStream, bool pt)
{
    gp_graph_exec *x;
    gp_stream *s;
    CUresult rc = launch_target(hGraphExec, hStream, pt, &x, &s);
    if (rc)
        return rc;
    gp_graph_exec_unref(x);
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphUpload(CUgraphExec hGraphExec, CUstream hStream)
{
    return graph_upload(hGraphExec, hStream, false);
}

GP_API CUresult cuGraphUpload_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return graph_upload(hGraphExec, hStream, true);
}

/* On the executor: each node starts once its dependencies ended, and takes the path of its kind of work. */
uint64_t gp_graph_exec_run(gp_stream *s, gp_graph_exec *x, uint64_t start)
{
    uint64_t last = start;
    for (size_t i = 0; i < x->n; i++) {
        exec_node *e = &x->nodes[i];
        uint64_t at = start;
        for (size_t d = 0; d < e->ndeps; d++)
            if (x->ends[e->deps[d]] > at)
                at = x->ends[e->deps[d]];
        gp_op op = {.kind = GP_OP_NOP};
        CUresult rc = CUDA_SUCCESS;
        switch (e->type) {
        case CU_GRAPH_NODE_TYPE_KERNEL: op = e->u.k; break; /* shares the node's arguments */
        case CU_GRAPH_NODE_TYPE_MEMCPY: rc = gp_copy3d_op(&e->u.copy, &op); break;
        case CU_GRAPH_NODE_TYPE_MEMSET: rc = gp_memset_op(&e->u.set, &op); break;
        case CU_GRAPH_NODE_TYPE_HOST:
            op.kind = GP_OP_HOSTFN;
            op.u.h.fn = e->u.host.fn;
            op.u.h.data = e->u.host.userData;
            break;
        default: break;
        }
        if (rc != CUDA_SUCCESS) {
            /* The memory the node was made for is gone: on a GPU the copy faults. */
            gp_ctx_set_sticky(s->ctx, CUDA_ERROR_ILLEGAL_ADDRESS);
            op.kind = GP_OP_NOP;
        }
        uint64_t end = gp_op_run(s, &op, at);
        x->ends[i] = end > at ? end : at;
        if (x->ends[i] > last)
            last = x->ends[i];
        gp_stream_pace(s, x->ends[i]);
    }
    return last;
}

/* ---- teardown ------------------------------------------------------------------------------------- */

void gp_graph_forget_module(gp_module *m)
{
    pthread_mutex_lock(&g_gp_graph_mu);
    for (size_t i = 0; i < g_graphs.n; i++) {
        gp_graph *g = g_graphs.v[i];
        for (size_t k = 0; k < g->n; k++)
            if (g->nodes[k]->type == CU_GRAPH_NODE_TYPE_KERNEL && g->nodes[k]->u.k.u.k.f->mod == m)
                g->nodes[k]->dead = true;
    }
    for (size_t i = 0; i < g_execs.n; i++) {
        gp_graph_exec *x = g_execs.v[i];
        for (size_t k = 0; k < x->n; k++)
            if (x->nodes[k].type == CU_GRAPH_NODE_TYPE_KERNEL && x->nodes[k].u.k.u.k.f->mod == m)
                atomic_store(&x->dead, true);
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
}

void gp_graph_forget_ctx(gp_ctx *c)
{
    gp_ptrvec gone = {0};
    pthread_mutex_lock(&g_gp_graph_mu);
    for (size_t i = 0; i < g_graphs.n;) {
        gp_graph *g = g_graphs.v[i];
        if (g->ctx == c && g->capture == NULL)
            gp_graph_free(g); /* takes it out of g_graphs: look at index i again */
        else
            i++;
    }
    for (size_t i = 0; i < g_execs.n;) {
        gp_graph_exec *x = g_execs.v[i];
        if (x->owner != c) {
            i++;
            continue;
        }
        gp_handle_del(x);
        gp_ptrvec_remove(&g_execs, x);
        if (gp_ptrvec_push(&gone, x) < 0)
            atomic_store(&x->dead, true); /* cannot release it now: it leaks, unusable */
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    for (size_t i = 0; i < gone.n; i++)
        gp_graph_exec_unref(gone.v[i]);
    gp_ptrvec_free(&gone);
}

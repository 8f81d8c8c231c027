/* client_graph.c - CUDA graphs and stream capture for the remote driver.
 *
 * Graphs, nodes and executable graphs are records holding wire ids (client.h); the worker builds the driver's
 * graphs from them. Nodes the driver made itself (stream capture) are learnt from the worker's answers
 * (GRAPH_NODES, CAPTURE_INFO), which name them by ids it picked. What a graph runs on this host, its host
 * nodes and its copies to or from host memory ("staged" through a buffer on the worker), is a list of actions
 * kept with the graph and copied into each executable graph: every launch registers one run of each with
 * client.c, which runs it when the worker's CALLBACK for it comes.
 *
 * Stream capture happens on the worker's stream, which captures what the client forwards in order. The client
 * still tracks which streams capture (the origin, and streams that joined through an event recorded in the
 * capture), because work with a side in host memory must be captured as staged nodes rather than run, and
 * host functions as host nodes that run at every launch. Records change under the registry lock.
 */
#include "remote/client.h"

#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"

struct gp_rgraph {
    uint64_t id;
    gp_rctx *ctx;     /* current when made (NULL: none) */
    gp_u64map nodes;  /* node id -> gp_rnode * */
    gp_gaction *acts; /* what runs on this host */
    size_t nacts, capacts;
    bool capturing;       /* a capture still builds it */
    gp_rstream *origin;   /* capturing: the stream that began it */
    gp_rstream **members; /* capturing: the streams taking part, the origin included */
    size_t nmembers, capmembers;
};

typedef struct gp_rnode {
    uint64_t id;
    gp_rgraph *g;
} gp_rnode;

typedef struct gp_rexec {
    uint64_t id;
    gp_rctx *ctx;
    gp_gaction *acts; /* a copy of its graph's at instantiation */
    size_t nacts;
} gp_rexec;

static uint64_t ctx_id(const gp_rgraph *g)
{
    return g->ctx ? g->ctx->id : gp_ctx_cur_id();
}

static CUresult graph_arg(CUgraph h, gp_rgraph **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_GRAPH)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rgraph *g = (gp_rgraph *)h;
    if (g->ctx && !atomic_load(&g->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = g;
    return CUDA_SUCCESS;
}

static gp_rgraph *graph_new(gp_rctx *c)
{
    gp_rgraph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->id = gp_client_next_id();
    g->ctx = c;
    return g;
}

static void graph_free(gp_rgraph *g)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&g->nodes, &i, &k, &v);) {
        gp_reg_del((void *)(uintptr_t)v);
        free((void *)(uintptr_t)v);
    }
    gp_u64map_free(&g->nodes);
    free(g->acts);
    free(g->members);
    free(g);
}

/* The node record of id in g, made when new (registry lock held). NULL when out of memory. */
static gp_rnode *node_locked(gp_rgraph *g, uint64_t id)
{
    uint64_t v;
    if (gp_u64map_get(&g->nodes, id, &v))
        return (gp_rnode *)(uintptr_t)v;
    gp_rnode *n = malloc(sizeof *n);
    if (n == NULL)
        return NULL;
    n->id = id;
    n->g = g;
    if (gp_u64map_put(&g->nodes, id, (uint64_t)(uintptr_t)n) < 0) {
        free(n);
        return NULL;
    }
    gp_reg_unlock(); /* gp_reg_add takes the lock itself */
    int rc = gp_reg_add(n, GP_R_NODE);
    gp_reg_lock();
    if (rc < 0) {
        gp_u64map_del(&g->nodes, id, NULL);
        free(n);
        return NULL;
    }
    return n;
}

static CUresult act_add_locked(gp_rgraph *g, const gp_gaction *a)
{
    if (g->nacts == g->capacts) {
        size_t ncap = g->capacts ? 2 * g->capacts : 8;
        gp_gaction *na = realloc(g->acts, ncap * sizeof *na);
        if (na == NULL)
            return CUDA_ERROR_OUT_OF_MEMORY;
        g->acts = na;
        g->capacts = ncap;
    }
    g->acts[g->nacts++] = *a;
    return CUDA_SUCCESS;
}

/* ---- graphs --------------------------------------------------------------------------------------- */

GP_API CUresult cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
    GP_READY_OR_RETURN();
    if (phGraph == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = NULL;
    if (gp_ctx_cur(&c) != CUDA_SUCCESS)
        c = NULL;
    gp_rgraph *g = graph_new(c);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx_id(g));
    gp_w_u64(w, g->id);
    gp_w_u32(w, flags);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_GRAPH_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(g, GP_R_GRAPH) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        graph_free(g);
        return rc;
    }
    *phGraph = (CUgraph)g;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphDestroy(CUgraph hGraph)
{
    gp_rgraph *g;
    CUresult rc = graph_arg(hGraph, &g);
    if (rc)
        return rc;
    if (g->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx_id(g));
    gp_w_u64(w, g->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_GRAPH_DESTROY, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_reg_del(g);
    graph_free(g);
    return CUDA_SUCCESS;
}

/* A node about to be added: the graph, its dependencies (nodes of it, each once) as a blob of ids, and the
 * request so far (gp_rpc_begin was called when it returns success). */
static CUresult add_begin(CUgraphNode *out, CUgraph h, const CUgraphNode *deps, size_t n, gp_rgraph **g,
                          uint64_t *node, gp_wbuf **w)
{
    CUresult rc = graph_arg(h, g);
    if (rc)
        return rc;
    if (out == NULL || (n > 0 && deps == NULL) || (*g)->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    if (n && ids == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n && rc == CUDA_SUCCESS; i++) {
        if (gp_reg_kind(deps[i]) != GP_R_NODE || ((gp_rnode *)deps[i])->g != *g)
            rc = CUDA_ERROR_INVALID_VALUE;
        else
            ids[i] = ((gp_rnode *)deps[i])->id;
        for (size_t k = 0; k < i && rc == CUDA_SUCCESS; k++)
            if (ids[k] == ids[i])
                rc = CUDA_ERROR_INVALID_VALUE; /* listed twice */
    }
    if (rc) {
        free(ids);
        return rc;
    }
    *node = gp_client_next_id();
    *w = gp_rpc_begin();
    gp_w_u64(*w, ctx_id(*g));
    gp_w_u64(*w, (*g)->id);
    gp_w_u64(*w, *node);
    gp_w_u32(*w, (uint32_t)(n * 8));
    for (size_t i = 0; i < n; i++)
        gp_w_u64(*w, ids[i]);
    free(ids);
    return CUDA_SUCCESS;
}

/* Sends the request add_begin started; on success the node (and its action, if any) join the graph. */
static CUresult add_end(unsigned op, gp_rgraph *g, uint64_t node, const gp_gaction *act, CUgraphNode *out)
{
    gp_rbuf r;
    CUresult rc = gp_rpc_call(op, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_reg_lock();
    gp_rnode *n = node_locked(g, node);
    if (n && act)
        rc = act_add_locked(g, act);
    gp_reg_unlock();
    if (n == NULL || rc)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *out = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphAddEmptyNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                    size_t numDependencies)
{
    gp_rgraph *g;
    uint64_t node;
    gp_wbuf *w;
    CUresult rc = add_begin(phGraphNode, hGraph, dependencies, numDependencies, &g, &node, &w);
    return rc ? rc : add_end(GP_OP_GRAPH_ADD_EMPTY, g, node, NULL, phGraphNode);
}

static CUresult add_kernel(CUgraphNode *out, CUgraph h, const CUgraphNode *deps, size_t n,
                           const CUDA_KERNEL_NODE_PARAMS_v1 *p)
{
    GP_READY_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rfunc *f;
    uint8_t *args;
    CUresult rc = gp_kernel_args(p->func, p->kernelParams, p->extra, &f, &args);
    if (rc)
        return rc == CUDA_ERROR_INVALID_HANDLE ? CUDA_ERROR_INVALID_VALUE : rc;
    gp_rgraph *g;
    uint64_t node;
    gp_wbuf *w;
    if ((rc = add_begin(out, h, deps, n, &g, &node, &w))) {
        free(args);
        return rc;
    }
    gp_w_u64(w, f->id);
    gp_w_u32(w, p->gridDimX);
    gp_w_u32(w, p->gridDimY);
    gp_w_u32(w, p->gridDimZ);
    gp_w_u32(w, p->blockDimX);
    gp_w_u32(w, p->blockDimY);
    gp_w_u32(w, p->blockDimZ);
    gp_w_u32(w, p->sharedMemBytes);
    gp_w_blob(w, args, f->argsize);
    free(args);
    return add_end(GP_OP_GRAPH_ADD_KERNEL, g, node, NULL, out);
}

GP_API CUresult cuGraphAddKernelNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph,
                                        const CUgraphNode *dependencies, size_t numDependencies,
                                        const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    if (nodeParams && nodeParams->kern != NULL) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "cuGraphAddKernelNode with a CUkernel is not supported over GPU-over-IP (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    CUDA_KERNEL_NODE_PARAMS_v1 p;
    if (nodeParams)
        memcpy(&p, nodeParams, sizeof p); /* v2 starts with v1's fields */
    return add_kernel(phGraphNode, hGraph, dependencies, numDependencies, nodeParams ? &p : NULL);
}

GP_API CUresult cuGraphAddKernelNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    return add_kernel(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
}

/* The context a node runs in: ctx, or the current one when NULL. */
static CUresult node_ctx(CUcontext ctx, uint64_t *id)
{
    if (ctx == NULL) {
        gp_rctx *c;
        CUresult rc = gp_ctx_cur(&c);
        if (rc)
            return rc;
        *id = c->id;
        return CUDA_SUCCESS;
    }
    if (gp_reg_kind(ctx) != GP_R_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!atomic_load(&((gp_rctx *)ctx)->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *id = ((gp_rctx *)ctx)->id;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphAddMemsetNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_MEMSET_NODE_PARAMS *memsetParams, CUcontext ctx)
{
    GP_READY_OR_RETURN();
    uint64_t cid;
    if (memsetParams == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = node_ctx(ctx, &cid);
    if (rc)
        return rc;
    gp_rgraph *g;
    uint64_t node;
    gp_wbuf *w;
    if ((rc = add_begin(phGraphNode, hGraph, dependencies, numDependencies, &g, &node, &w)))
        return rc;
    gp_w_u64(w, cid);
    gp_w_u64(w, memsetParams->dst);
    gp_w_u64(w, memsetParams->pitch);
    gp_w_u32(w, memsetParams->value);
    gp_w_u32(w, memsetParams->elementSize);
    gp_w_u64(w, memsetParams->width);
    gp_w_u64(w, memsetParams->height);
    return add_end(GP_OP_GRAPH_ADD_MEMSET, g, node, NULL, phGraphNode);
}

GP_API CUresult cuGraphAddMemcpyNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                     const CUgraphNode *dependencies, size_t numDependencies,
                                     const CUDA_MEMCPY3D *copyParams, CUcontext ctx)
{
    GP_READY_OR_RETURN();
    uint64_t cid;
    gp_copy_side dst, src;
    gp_gaction act = {.staged = true};
    bool host = false;
    CUresult rc = node_ctx(ctx, &cid);
    if (rc || (rc = gp_copy3d_sides(copyParams, &dst, &src, &act.box, &host)))
        return rc;
    gp_rgraph *g;
    uint64_t node;
    gp_wbuf *w;
    if ((rc = add_begin(phGraphNode, hGraph, dependencies, numDependencies, &g, &node, &w)))
        return rc;
    gp_w_u64(w, cid);
    gp_w_copy(w, &dst, &src, copyParams->WidthInBytes, copyParams->Height, copyParams->Depth);
    act.id = node; /* a staged copy runs under its node's id */
    return add_end(GP_OP_GRAPH_ADD_MEMCPY, g, node, host ? &act : NULL, phGraphNode);
}

GP_API CUresult cuGraphAddHostNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                                   size_t numDependencies, const CUDA_HOST_NODE_PARAMS *nodeParams)
{
    GP_READY_OR_RETURN();
    if (nodeParams == NULL || nodeParams->fn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rgraph *g;
    uint64_t node;
    gp_wbuf *w;
    CUresult rc = add_begin(phGraphNode, hGraph, dependencies, numDependencies, &g, &node, &w);
    if (rc)
        return rc;
    gp_gaction act = {.id = node, .fn = nodeParams->fn, .data = nodeParams->userData};
    return add_end(GP_OP_GRAPH_ADD_HOST, g, node, &act, phGraphNode);
}

GP_API CUresult cuGraphGetNodes(CUgraph hGraph, CUgraphNode *nodes, size_t *numNodes)
{
    gp_rgraph *g;
    CUresult rc = graph_arg(hGraph, &g);
    if (rc)
        return rc;
    if (numNodes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx_id(g));
    gp_w_u64(w, g->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_GRAPH_NODES, &r);
    uint32_t n = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && (!r.ok || n > r.left / 8))
        rc = gp_rpc_malformed(GP_OP_GRAPH_NODES);
    size_t got = 0;
    if (rc == CUDA_SUCCESS && nodes) {
        gp_reg_lock();
        for (; got < n && got < *numNodes; got++) {
            gp_rnode *node = node_locked(g, gp_r_u64(&r));
            if (node == NULL) {
                rc = CUDA_ERROR_OUT_OF_MEMORY;
                break;
            }
            nodes[got] = (CUgraphNode)node;
        }
        gp_reg_unlock();
        for (size_t i = got; rc == CUDA_SUCCESS && i < *numNodes; i++)
            nodes[i] = NULL;
    }
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *numNodes = nodes && got < n ? got : n;
    return rc;
}

/* ---- executable graphs ---------------------------------------------------------------------------- */

static CUresult instantiate(CUgraphExec *out, CUgraph h, uint64_t flags, CUstream upload)
{
    gp_rgraph *g;
    CUresult rc = graph_arg(h, &g);
    if (rc)
        return rc;
    if (out == NULL || g->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid = 0, scid;
    if ((flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD) && (rc = gp_stream_arg(upload, &sid, &scid)))
        return rc;
    gp_rexec *x = calloc(1, sizeof *x);
    if (x == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    x->id = gp_client_next_id();
    x->ctx = g->ctx;
    gp_reg_lock();
    x->nacts = g->nacts;
    x->acts = g->nacts ? malloc(g->nacts * sizeof *x->acts) : NULL;
    if (x->acts)
        memcpy(x->acts, g->acts, g->nacts * sizeof *x->acts);
    gp_reg_unlock();
    if (x->nacts && x->acts == NULL) {
        free(x);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx_id(g));
    gp_w_u64(w, g->id);
    gp_w_u64(w, x->id);
    gp_w_u64(w, flags);
    gp_w_u64(w, sid);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_GRAPH_INSTANTIATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(x, GP_R_EXEC) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(x->acts);
        free(x);
        return rc;
    }
    *out = (CUgraphExec)x;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph,
                                            unsigned long long flags)
{
    if (flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD) {
        GP_READY_OR_RETURN();
        return CUDA_ERROR_INVALID_VALUE; /* cuda.h: only cuGraphInstantiateWithParams uploads */
    }
    return instantiate(phGraphExec, hGraph, flags, NULL);
}

static CUresult instantiate_params(CUgraphExec *phGraphExec, CUgraph hGraph, CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
    GP_READY_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = instantiate(phGraphExec, hGraph, p->flags, p->hUploadStream);
    p->hErrNode_out = NULL;
    p->result_out = rc == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS : CUDA_GRAPH_INSTANTIATE_ERROR;
    return rc;
}

GP_API CUresult cuGraphInstantiateWithParams(CUgraphExec *phGraphExec, CUgraph hGraph,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    return instantiate_params(phGraphExec, hGraph, instantiateParams);
}

GP_API CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *phGraphExec, CUgraph hGraph,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    if (instantiateParams && instantiateParams->hUploadStream == NULL) {
        CUDA_GRAPH_INSTANTIATE_PARAMS p = *instantiateParams;
        p.hUploadStream = CU_STREAM_PER_THREAD;
        CUresult rc = instantiate_params(phGraphExec, hGraph, &p);
        instantiateParams->hErrNode_out = p.hErrNode_out;
        instantiateParams->result_out = p.result_out;
        return rc;
    }
    return instantiate_params(phGraphExec, hGraph, instantiateParams);
}

static CUresult exec_arg(CUgraphExec h, gp_rexec **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_EXEC)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rexec *x = (gp_rexec *)h;
    if (x->ctx && !atomic_load(&x->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = x;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
{
    gp_rexec *x;
    CUresult rc = exec_arg(hGraphExec, &x);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, x->ctx ? x->ctx->id : gp_ctx_cur_id());
    gp_w_u64(w, x->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_GRAPH_EXEC_DESTROY, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_reg_del(x); /* a launch in flight has its own copy of the actions (gp_client_expect) */
    free(x->acts);
    free(x);
    return CUDA_SUCCESS;
}

/* GRAPH_LAUNCH (every action expected first, so that none of its CALLBACKs can come before) or UPLOAD. */
static CUresult exec_on_stream(CUgraphExec h, CUstream hs, unsigned op)
{
    gp_rexec *x;
    uint64_t sid, cid;
    CUresult rc = exec_arg(h, &x);
    if (rc || (rc = gp_stream_arg(hs, &sid, &cid)))
        return rc;
    if (op == GP_OP_GRAPH_LAUNCH && x->nacts) {
        if (gp_stream_capture(hs)) {
            gp_log_once(
                GP_LOG_WARN, GP_LOG_CLIENT,
                "capturing the launch of a graph with host nodes or host copies is not supported over "
                "GPU-over-IP (returning CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
        if ((rc = gp_client_expect(x->acts, x->nacts)))
            return rc;
    }
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, x->id);
    gp_w_u64(w, sid);
    rc = gp_rpc_async(op);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
{
    return exec_on_stream(hGraphExec, hStream, GP_OP_GRAPH_LAUNCH);
}

GP_API CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return exec_on_stream(hGraphExec, hStream ? hStream : CU_STREAM_PER_THREAD, GP_OP_GRAPH_LAUNCH);
}

GP_API CUresult cuGraphUpload(CUgraphExec hGraphExec, CUstream hStream)
{
    return exec_on_stream(hGraphExec, hStream, GP_OP_GRAPH_UPLOAD);
}

GP_API CUresult cuGraphUpload_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return exec_on_stream(hGraphExec, hStream ? hStream : CU_STREAM_PER_THREAD, GP_OP_GRAPH_UPLOAD);
}

/* ---- stream capture ------------------------------------------------------------------------------- */

static gp_rstream *stream_rec(CUstream h)
{
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD || gp_reg_kind(h) != GP_R_STREAM)
        return NULL;
    return (gp_rstream *)h;
}

gp_rgraph *gp_stream_capture(CUstream h)
{
    gp_rstream *s = stream_rec(h);
    return s ? atomic_load(&s->capture) : NULL;
}

/* s takes part in g's capture (registry lock held). */
static bool join_locked(gp_rgraph *g, gp_rstream *s)
{
    if (g->nmembers == g->capmembers) {
        size_t ncap = g->capmembers ? 2 * g->capmembers : 4;
        gp_rstream **nm = realloc(g->members, ncap * sizeof *nm);
        if (nm == NULL)
            return false;
        g->members = nm;
        g->capmembers = ncap;
    }
    g->members[g->nmembers++] = s;
    atomic_store(&s->capture, g);
    return true;
}

/* The capture ended: its streams leave it (registry lock held). */
static void capture_over_locked(gp_rgraph *g)
{
    for (size_t i = 0; i < g->nmembers; i++)
        atomic_store(&g->members[i]->capture, NULL);
    g->nmembers = 0;
    g->capturing = false;
    g->origin = NULL;
}

void gp_capture_stream_gone(gp_rstream *s)
{
    gp_reg_lock();
    gp_rgraph *g = atomic_load(&s->capture);
    for (size_t i = 0; g && i < g->nmembers; i++)
        if (g->members[i] == s) {
            g->members[i] = g->members[--g->nmembers];
            break;
        }
    if (g && g->origin == s)
        g->origin = NULL;
    atomic_store(&s->capture, NULL);
    gp_reg_unlock();
}

void gp_capture_event_recorded(CUevent e, CUstream h)
{
    gp_rgraph *g = gp_stream_capture(h);
    if (gp_reg_kind(e) != GP_R_EVENT)
        return;
    gp_reg_lock();
    ((gp_revent *)e)->capture = g;
    gp_reg_unlock();
}

void gp_capture_event_waited(CUstream h, CUevent e)
{
    gp_rstream *s = stream_rec(h);
    if (s == NULL || gp_reg_kind(e) != GP_R_EVENT)
        return;
    gp_reg_lock();
    gp_rgraph *g = ((gp_revent *)e)->capture;
    if (g && g->capturing && atomic_load(&s->capture) == NULL)
        join_locked(g,
                    s); /* out of memory: the stream's staged copies then fail on the worker, not silently */
    gp_reg_unlock();
}

static CUresult begin_capture(CUstream h, CUstreamCaptureMode mode)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    gp_rstream *s = stream_rec(h);
    gp_rgraph *g = graph_new(s ? s->ctx : NULL);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    g->capturing = true;
    g->origin = s;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_w_u64(w, g->id);
    gp_w_u32(w, (uint32_t)mode);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CAPTURE_BEGIN, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && (s == NULL || gp_reg_add(g, GP_R_GRAPH) < 0))
        rc = CUDA_ERROR_OUT_OF_MEMORY; /* (the legacy stream cannot capture: the worker refused it first) */
    if (rc == CUDA_SUCCESS) {
        gp_reg_lock();
        if (!join_locked(g, s))
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        gp_reg_unlock();
        if (rc) /* the worker's capture goes on, unknown here: its staged work fails there */
            gp_reg_del(g);
    }
    if (rc) {
        graph_free(g);
        return rc;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream, mode);
}

GP_API CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream ? hStream : CU_STREAM_PER_THREAD, mode);
}

static CUresult end_capture(CUstream h, CUgraph *phGraph)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (phGraph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rstream *s = stream_rec(h);
    gp_rgraph *g = s ? atomic_load(&s->capture) : NULL;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CAPTURE_END, &r);
    gp_rpc_end();
    *phGraph = NULL;
    if (g == NULL || g->origin != s)
        return rc; /* not the stream that began the capture: it goes on */
    gp_reg_lock();
    capture_over_locked(g);
    gp_reg_unlock();
    if (rc) { /* the capture ended without a graph */
        gp_reg_del(g);
        graph_free(g);
        return rc;
    }
    *phGraph = (CUgraph)g;
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream, phGraph);
}

GP_API CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream ? hStream : CU_STREAM_PER_THREAD, phGraph);
}

static CUresult is_capturing(CUstream h, CUstreamCaptureStatus *status)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (status == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CAPTURE_STATUS, &r);
    uint32_t st = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_CAPTURE_STATUS);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *status = (CUstreamCaptureStatus)st;
    return rc;
}

GP_API CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    return is_capturing(hStream, captureStatus);
}

GP_API CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    return is_capturing(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus);
}

/* The dependency array (and its zeroed edge data) stays valid until the next query on the stream. */
static CUresult capture_info(CUstream h, CUstreamCaptureStatus *status, cuuint64_t *id, CUgraph *graph,
                             const CUgraphNode **deps, const CUgraphEdgeData **edges, size_t *ndeps)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (status == NULL || (edges != NULL && deps == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    gp_rstream *s = stream_rec(h);
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CAPTURE_INFO, &r);
    uint32_t st = gp_r_u32(&r);
    uint64_t cap_id = gp_r_u64(&r), gid = gp_r_u64(&r);
    uint32_t n = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && (!r.ok || n > r.left / 8))
        rc = gp_rpc_malformed(GP_OP_CAPTURE_INFO);
    gp_rgraph *g = s ? atomic_load(&s->capture) : NULL;
    if (rc == CUDA_SUCCESS && st == CU_STREAM_CAPTURE_STATUS_ACTIVE && (g == NULL || g->id != gid))
        n = 0, g = NULL; /* a capture this client does not know of (none can be: kept safe) */
    CUgraphNode *v = NULL;
    if (rc == CUDA_SUCCESS && st == CU_STREAM_CAPTURE_STATUS_ACTIVE && s && (deps || ndeps)) {
        size_t bytes = (size_t)n * (sizeof(CUgraphNode) + sizeof(CUgraphEdgeData));
        v = realloc(s->capture_deps, bytes ? bytes : 1);
        if (v == NULL) {
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            s->capture_deps = v;
            memset(v, 0, bytes);
            gp_reg_lock();
            for (uint32_t i = 0; i < n && rc == CUDA_SUCCESS; i++)
                if ((v[i] = (CUgraphNode)node_locked(g, gp_r_u64(&r))) == NULL)
                    rc = CUDA_ERROR_OUT_OF_MEMORY;
            gp_reg_unlock();
        }
    }
    gp_rpc_end();
    if (rc)
        return rc;
    *status = (CUstreamCaptureStatus)st;
    if (st == CU_STREAM_CAPTURE_STATUS_ACTIVE) {
        if (id)
            *id = cap_id;
        if (graph)
            *graph = (CUgraph)g;
        if (deps)
            *deps = v;
        if (edges)
            *edges = v ? (const CUgraphEdgeData *)(v + n) : NULL;
        if (ndeps)
            *ndeps = n;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamGetCaptureInfo_v2(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                          cuuint64_t *id_out, CUgraph *graph_out,
                                          const CUgraphNode **dependencies_out, size_t *numDependencies_out)
{
    return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, NULL,
                        numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v2_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out,
                                               size_t *numDependencies_out)
{
    return capture_info(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus_out, id_out, graph_out,
                        dependencies_out, NULL, numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                          cuuint64_t *id_out, CUgraph *graph_out,
                                          const CUgraphNode **dependencies_out,
                                          const CUgraphEdgeData **edgeData_out, size_t *numDependencies_out)
{
    return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                        numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out,
                                               const CUgraphEdgeData **edgeData_out,
                                               size_t *numDependencies_out)
{
    return capture_info(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus_out, id_out, graph_out,
                        dependencies_out, edgeData_out, numDependencies_out);
}

/* ---- work on a capturing stream that runs on this host -------------------------------------------- */

/* Adds the action to the capture's graph and sends the request the caller started (op, ASYNC). */
static CUresult capture_send(gp_rgraph *g, const gp_gaction *a, unsigned op)
{
    gp_reg_lock();
    CUresult rc = act_add_locked(g, a);
    gp_reg_unlock();
    if (rc) {
        gp_rpc_end();
        return rc;
    }
    rc = gp_rpc_async(op);
    gp_rpc_end();
    return rc;
}

CUresult gp_capture_host(gp_rgraph *g, uint64_t ctx, uint64_t stream, CUstream h, CUhostFn fn,
                         CUstreamCallback cb, void *data)
{
    gp_gaction a = {.id = gp_client_next_id(), .fn = fn, .cb = cb, .stream = h, .data = data};
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, g->id);
    gp_w_u64(w, a.id);
    return capture_send(g, &a, GP_OP_CAPTURE_HOST);
}

CUresult gp_capture_copy(gp_rgraph *g, uint64_t ctx, uint64_t stream, const gp_copy_side *dst,
                         const gp_copy_side *src, size_t width, size_t rows, size_t depth,
                         const gp_hostbox *box)
{
    gp_gaction a = {.id = gp_client_next_id(), .staged = true, .box = *box};
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, g->id);
    gp_w_u64(w, a.id);
    gp_w_copy(w, dst, src, width, rows, depth);
    return capture_send(g, &a, GP_OP_CAPTURE_COPY);
}

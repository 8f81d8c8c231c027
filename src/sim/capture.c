/* capture.c - stream capture: work submitted to a capturing stream becomes nodes of a graph.
 *
 * While a stream captures, its kernels, asynchronous copies and memsets and host functions are added to the
 * capture's graph after the stream's dependency set instead of running. Events carry dependencies across
 * streams: a stream waiting for an event recorded in a capture joins it (fork) or merges its nodes (join);
 * cuStreamEndCapture on the origin hands the graph over unless the capture was invalidated or left a fork
 * open. What cuda.h forbids during capture (synchronising, "potentially unsafe" calls under the thread's
 * mode, legacy-stream work while a blocking stream captures) fails and invalidates the captures concerned.
 * State is under the graph lock (graph.h); g_gp_captures keeps every check one atomic load while nothing
 * captures.
 */
#include "sim/graph.h"

#include <stdlib.h>
#include <string.h>

typedef struct gp_capture {
    unsigned long long id;
    gp_graph *graph; /* owned until cuStreamEndCapture hands it over */
    gp_stream *origin;
    CUstreamCaptureMode mode;
    pthread_t thread; /* that began it */
    bool invalidated, ended;
    int refs;          /* 1 while in progress, plus one per event whose latest record it captured */
    gp_ptrvec streams; /* member streams, the origin included; each holds a reference */
} gp_capture;

atomic_int g_gp_captures;
static gp_ptrvec g_captures; /* in progress */
static atomic_ullong g_capture_ids = 1;
static __thread CUstreamCaptureMode t_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

static bool none_active(void)
{
    return atomic_load_explicit(&g_gp_captures, memory_order_acquire) == 0;
}

static void capture_unref(gp_capture *cap)
{
    if (--cap->refs == 0) {
        gp_ptrvec_free(&cap->streams);
        free(cap);
    }
}

static void invalidate(gp_capture *cap, const char *why)
{
    if (!cap->invalidated)
        gp_log(GP_LOG_DEBUG, GP_LOG_SIM, "stream capture %llu invalidated: %s", cap->id, why);
    cap->invalidated = true;
}

/* Ends a capture (lock held): its streams leave it and go into *unref for the caller to release after
 * unlocking. Returns the graph, which the caller owns. */
static gp_graph *capture_end(gp_capture *cap, gp_ptrvec *unref)
{
    for (size_t i = 0; i < cap->streams.n; i++) {
        gp_stream *m = cap->streams.v[i];
        atomic_store(&m->capture, NULL);
        m->cap_deps.n = 0;
        if (gp_ptrvec_push(unref, m) < 0)
            atomic_fetch_sub(&m->refs, 1); /* cannot be the last reference: the stream's owner has one */
    }
    cap->streams.n = 0;
    gp_graph *g = cap->graph;
    cap->graph = NULL;
    g->capture = NULL;
    cap->ended = true;
    gp_ptrvec_remove(&g_captures, cap);
    atomic_fetch_sub(&g_gp_captures, 1);
    capture_unref(cap);
    return g;
}

static void unref_all(gp_ptrvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        gp_stream_unref(v->v[i]);
    gp_ptrvec_free(v);
}

/* Sets v to a copy of n nodes. */
static int set_deps(gp_ptrvec *v, void *const *nodes, size_t n)
{
    v->n = 0;
    for (size_t i = 0; i < n; i++)
        if (gp_ptrvec_push(v, nodes[i]) < 0)
            return -1;
    return 0;
}

/* Adds to v the nodes it lacks. */
static int merge_deps(gp_ptrvec *v, void *const *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool have = false;
        for (size_t k = 0; k < v->n && !have; k++)
            have = v->v[k] == nodes[i];
        if (!have && gp_ptrvec_push(v, nodes[i]) < 0)
            return -1;
    }
    return 0;
}

/* Joins stream s to cap (lock held), with deps as its dependency set. */
static CUresult join(gp_stream *s, gp_capture *cap, void *const *deps, size_t n)
{
    if (gp_ptrvec_push(&cap->streams, s) < 0 || set_deps(&s->cap_deps, deps, n) < 0) {
        gp_ptrvec_remove(&cap->streams, s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    atomic_fetch_add(&s->refs, 1);
    atomic_store(&s->capture, cap);
    return CUDA_SUCCESS;
}

/* ---- beginning and ending ------------------------------------------------------------------------- */

static CUresult stream_of(CUstream h, bool pt, gp_stream **out)
{
    gp_ctx *c = NULL;
    CUresult rc;
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        if ((rc = gp_ctx_current(&c)))
            return rc;
    } else {
        GP_INIT_OR_RETURN();
    }
    return gp_stream_resolve(h, pt, c, out);
}

static CUresult begin_capture(CUstream h, CUstreamCaptureMode mode, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_of(h, pt, &s);
    if (rc)
        return rc;
    if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
        mode != CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    if (s->kind == GP_STREAM_LEGACY)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; /* cuda.h: not on CU_STREAM_LEGACY */
    gp_capture *cap = calloc(1, sizeof *cap);
    if (cap == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_gp_graph_mu);
    if (gp_stream_capturing(s)) {
        pthread_mutex_unlock(&g_gp_graph_mu);
        free(cap);
        return CUDA_ERROR_ILLEGAL_STATE; /* already capturing, possibly as a joined stream */
    }
    cap->graph = gp_graph_new(s->ctx);
    if (cap->graph == NULL || gp_ptrvec_push(&g_captures, cap) < 0) {
        if (cap->graph)
            gp_graph_free(cap->graph);
        pthread_mutex_unlock(&g_gp_graph_mu);
        free(cap);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    cap->graph->capture = cap;
    cap->id = atomic_fetch_add(&g_capture_ids, 1);
    cap->origin = s;
    cap->mode = mode;
    cap->thread = pthread_self();
    cap->refs = 1;
    atomic_fetch_add(&g_gp_captures, 1);
    if (join(s, cap, NULL, 0) != CUDA_SUCCESS) {
        gp_ptrvec unref = {0};
        gp_graph_free(capture_end(cap, &unref));
        pthread_mutex_unlock(&g_gp_graph_mu);
        unref_all(&unref);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream, mode, false);
}

GP_API CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream, mode, true);
}

/* True when a captured node cannot reach the origin's dependency set: a forked stream never joined. */
static bool unjoined(gp_capture *cap)
{
    unsigned mark = gp_graph_next_mark();
    gp_ptrvec stack = {0};
    bool oom = false;
    for (size_t i = 0; i < cap->origin->cap_deps.n; i++)
        oom |= gp_ptrvec_push(&stack, cap->origin->cap_deps.v[i]) < 0;
    while (stack.n > 0) {
        gp_graph_node *n = stack.v[--stack.n];
        if (n->mark == mark)
            continue;
        n->mark = mark;
        for (size_t d = 0; d < n->ndeps; d++)
            oom |= gp_ptrvec_push(&stack, n->deps[d]) < 0;
    }
    gp_ptrvec_free(&stack);
    if (oom)
        return false; /* could not tell: let it pass */
    for (size_t i = 0; i < cap->graph->n; i++)
        if (cap->graph->nodes[i]->captured && cap->graph->nodes[i]->mark != mark)
            return true;
    return false;
}

static CUresult end_capture(CUstream h, CUgraph *phGraph, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_of(h, pt, &s);
    if (rc)
        return rc;
    if (phGraph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ptrvec unref = {0};
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (cap == NULL) {
        rc = CUDA_ERROR_ILLEGAL_STATE;
    } else if (cap->origin != s) {
        invalidate(cap, "cuStreamEndCapture on a stream that joined the capture");
        rc = CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
    } else if (cap->mode != CU_STREAM_CAPTURE_MODE_RELAXED && !pthread_equal(cap->thread, pthread_self())) {
        rc = CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
    } else {
        if (cap->invalidated)
            rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        else if (unjoined(cap))
            rc = CUDA_ERROR_STREAM_CAPTURE_UNJOINED;
        gp_graph *g = capture_end(cap, &unref);
        if (rc) {
            gp_graph_free(g);
            *phGraph = NULL;
        } else {
            *phGraph = (CUgraph)g;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    unref_all(&unref);
    return rc;
}

GP_API CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream, phGraph, false);
}

GP_API CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream, phGraph, true);
}

void gp_capture_stream_forget(gp_stream *s)
{
    gp_ptrvec unref = {0};
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (cap != NULL) {
        invalidate(cap, "a stream of the capture was destroyed");
        if (cap->origin == s) {
            gp_graph_free(capture_end(cap, &unref)); /* nobody can end it any more */
        } else {
            gp_ptrvec_remove(&cap->streams, s);
            atomic_store(&s->capture, NULL);
            s->cap_deps.n = 0;
            if (gp_ptrvec_push(&unref, s) < 0)
                atomic_fetch_sub(&s->refs, 1); /* not the last reference: the caller holds the owner's */
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    unref_all(&unref);
}

/* ---- status --------------------------------------------------------------------------------------- */

/* cuda.h: the legacy stream while a blocking stream of its context captures. Lock held. */
static bool implicit_locked(gp_stream *s)
{
    if (s->kind != GP_STREAM_LEGACY)
        return false;
    for (size_t i = 0; i < g_captures.n; i++) {
        gp_capture *cap = g_captures.v[i];
        for (size_t k = 0; k < cap->streams.n; k++) {
            gp_stream *m = cap->streams.v[k];
            if (m->ctx == s->ctx && !(m->flags & CU_STREAM_NON_BLOCKING))
                return true;
        }
    }
    return false;
}

static CUresult is_capturing(CUstream h, CUstreamCaptureStatus *status, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_of(h, pt, &s);
    if (rc)
        return rc;
    if (status == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (none_active()) {
        *status = CU_STREAM_CAPTURE_STATUS_NONE;
        return CUDA_SUCCESS;
    }
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (implicit_locked(s))
        rc = CUDA_ERROR_STREAM_CAPTURE_IMPLICIT; /* the capture is not invalidated by this query */
    else if (cap == NULL)
        *status = CU_STREAM_CAPTURE_STATUS_NONE;
    else
        *status = cap->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

GP_API CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    return is_capturing(hStream, captureStatus, false);
}

GP_API CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    return is_capturing(hStream, captureStatus, true);
}

static CUresult capture_info(CUstream h, bool pt, CUstreamCaptureStatus *status, cuuint64_t *id,
                             CUgraph *graph, const CUgraphNode **deps, const CUgraphEdgeData **edges,
                             size_t *ndeps)
{
    gp_stream *s;
    CUresult rc = stream_of(h, pt, &s);
    if (rc)
        return rc;
    if (status == NULL || (edges != NULL && deps == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (implicit_locked(s)) {
        rc = CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    } else if (cap == NULL) {
        *status = CU_STREAM_CAPTURE_STATUS_NONE;
    } else if (cap->invalidated) {
        *status = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    } else {
        *status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
        if (id)
            *id = cap->id;
        if (graph)
            *graph = (CUgraph)cap->graph;
        if (deps)
            *deps = (const CUgraphNode *)s->cap_deps.v;
        if (ndeps)
            *ndeps = s->cap_deps.n;
        if (edges) {
            /* Every captured edge is a plain one: zeroed edge data, valid until the next call on s. */
            if (s->cap_edges_n < s->cap_deps.n || s->cap_edges == NULL) {
                size_t n = s->cap_deps.n ? s->cap_deps.n : 1;
                void *e = calloc(n, sizeof(CUgraphEdgeData));
                if (e == NULL) {
                    rc = CUDA_ERROR_OUT_OF_MEMORY;
                } else {
                    free(s->cap_edges);
                    s->cap_edges = e;
                    s->cap_edges_n = n;
                }
            }
            *edges = s->cap_edges;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

GP_API CUresult cuStreamGetCaptureInfo_v2(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                          cuuint64_t *id_out, CUgraph *graph_out,
                                          const CUgraphNode **dependencies_out, size_t *numDependencies_out)
{
    return capture_info(hStream, false, captureStatus_out, id_out, graph_out, dependencies_out, NULL,
                        numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v2_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out,
                                               size_t *numDependencies_out)
{
    return capture_info(hStream, true, captureStatus_out, id_out, graph_out, dependencies_out, NULL,
                        numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                          cuuint64_t *id_out, CUgraph *graph_out,
                                          const CUgraphNode **dependencies_out,
                                          const CUgraphEdgeData **edgeData_out, size_t *numDependencies_out)
{
    return capture_info(hStream, false, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                        numDependencies_out);
}

GP_API CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                               cuuint64_t *id_out, CUgraph *graph_out,
                                               const CUgraphNode **dependencies_out,
                                               const CUgraphEdgeData **edgeData_out,
                                               size_t *numDependencies_out)
{
    return capture_info(hStream, true, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                        numDependencies_out);
}

static CUresult update_deps(CUstream h, CUgraphNode *deps, const CUgraphEdgeData *data, size_t n,
                            unsigned flags, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_of(h, pt, &s);
    if (rc)
        return rc;
    if ((n > 0 && deps == NULL) ||
        (flags != CU_STREAM_ADD_CAPTURE_DEPENDENCIES && flags != CU_STREAM_SET_CAPTURE_DEPENDENCIES))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; data && i < n; i++) {
        static const CUgraphEdgeData zero;
        if (memcmp(&data[i], &zero, sizeof zero) != 0) {
            gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                        "graph edges with data (programmatic dependencies) are not supported by the "
                        "simulated GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (cap == NULL) {
        rc = CUDA_ERROR_ILLEGAL_STATE;
    } else {
        for (size_t i = 0; rc == CUDA_SUCCESS && i < n; i++)
            if (gp_handle_type(deps[i]) != GP_OBJ_GRAPH_NODE || ((gp_graph_node *)deps[i])->g != cap->graph)
                rc = CUDA_ERROR_INVALID_VALUE;
        if (rc == CUDA_SUCCESS) {
            if (flags == CU_STREAM_SET_CAPTURE_DEPENDENCIES)
                s->cap_deps.n = 0;
            if (merge_deps(&s->cap_deps, (void *const *)deps, n) < 0)
                rc = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

GP_API CUresult cuStreamUpdateCaptureDependencies_v2(CUstream hStream, CUgraphNode *dependencies,
                                                     const CUgraphEdgeData *dependencyData,
                                                     size_t numDependencies, unsigned int flags)
{
    return update_deps(hStream, dependencies, dependencyData, numDependencies, flags, false);
}

GP_API CUresult cuStreamUpdateCaptureDependencies_v2_ptsz(CUstream hStream, CUgraphNode *dependencies,
                                                          const CUgraphEdgeData *dependencyData,
                                                          size_t numDependencies, unsigned int flags)
{
    return update_deps(hStream, dependencies, dependencyData, numDependencies, flags, true);
}

GP_API CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    GP_INIT_OR_RETURN();
    if (mode == NULL ||
        (*mode != CU_STREAM_CAPTURE_MODE_GLOBAL && *mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
         *mode != CU_STREAM_CAPTURE_MODE_RELAXED))
        return CUDA_ERROR_INVALID_VALUE;
    CUstreamCaptureMode old = t_mode;
    t_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* ---- checks of other calls ------------------------------------------------------------------------ */

CUresult gp_capture_unsafe(void)
{
    if (none_active() || t_mode == CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_SUCCESS;
    bool prohibited = false;
    pthread_mutex_lock(&g_gp_graph_mu);
    for (size_t i = 0; i < g_captures.n; i++) {
        gp_capture *cap = g_captures.v[i];
        bool local = pthread_equal(cap->thread, pthread_self());
        /* cuThreadExchangeStreamCaptureMode: this thread's non-relaxed captures forbid it in any mode
         * but relaxed; other threads' global captures forbid it in global mode. */
        if ((local && cap->mode != CU_STREAM_CAPTURE_MODE_RELAXED) ||
            (!local && cap->mode == CU_STREAM_CAPTURE_MODE_GLOBAL &&
             t_mode == CU_STREAM_CAPTURE_MODE_GLOBAL)) {
            invalidate(cap, "a call not permitted during stream capture");
            prohibited = true;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return prohibited ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

CUresult gp_capture_legacy(gp_stream *s)
{
    if (none_active() || s->kind != GP_STREAM_LEGACY)
        return CUDA_SUCCESS;
    bool implicit = false;
    pthread_mutex_lock(&g_gp_graph_mu);
    for (size_t i = 0; i < g_captures.n; i++) {
        gp_capture *cap = g_captures.v[i];
        for (size_t k = 0; k < cap->streams.n; k++) {
            gp_stream *m = cap->streams.v[k];
            if (m->ctx == s->ctx && !(m->flags & CU_STREAM_NON_BLOCKING)) {
                invalidate(cap, "work on the legacy stream depends on a capturing stream");
                implicit = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return implicit ? CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : CUDA_SUCCESS;
}

CUresult gp_capture_sync(gp_stream *s, gp_ctx *c)
{
    if (none_active())
        return CUDA_SUCCESS;
    bool refused = false;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *own = s ? atomic_load(&s->capture) : NULL;
    if (own) {
        invalidate(own, "synchronising with a capturing stream");
        refused = true;
    }
    for (size_t i = 0; c && i < g_captures.n; i++) {
        gp_capture *cap = g_captures.v[i];
        for (size_t k = 0; k < cap->streams.n; k++)
            if (((gp_stream *)cap->streams.v[k])->ctx == c) {
                invalidate(cap, "synchronising a context with a capturing stream");
                refused = true;
                break;
            }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return refused ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

CUresult gp_capture_refuse(gp_stream *s, const char *what, CUresult rc)
{
    gp_log(GP_LOG_WARN, GP_LOG_SIM, "%s: %s (the capture is invalidated)", what,
           rc == CUDA_ERROR_NOT_SUPPORTED ? "not supported by the simulated GPU" : "not permitted");
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    if (cap)
        invalidate(cap, what);
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

/* ---- captured work -------------------------------------------------------------------------------- */

static CUresult capture_node(gp_stream *s, CUgraphNodeType type, const void *payload, gp_ctx *ctx)
{
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    CUresult rc = CUDA_SUCCESS;
    gp_graph_node *n = NULL;
    if (cap == NULL)
        rc = CUDA_ERROR_ILLEGAL_STATE; /* the capture ended meanwhile, from another thread */
    else if (cap->invalidated)
        rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    else
        rc = gp_graph_add(cap->graph, type, (gp_graph_node *const *)s->cap_deps.v, s->cap_deps.n, payload,
                          ctx, &n);
    if (rc == CUDA_SUCCESS) {
        n->captured = true;
        s->cap_deps.n = 0;
        if (gp_ptrvec_push(&s->cap_deps, n) < 0) {
            invalidate(cap, "out of host memory");
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

CUresult gp_capture_kernel(gp_stream *s, gp_op *op)
{
    CUresult rc = capture_node(s, CU_GRAPH_NODE_TYPE_KERNEL, op, s->ctx);
    if (rc)
        gp_op_discard(op);
    return rc;
}

CUresult gp_capture_memcpy(gp_stream *s, const CUDA_MEMCPY3D *p)
{
    return capture_node(s, CU_GRAPH_NODE_TYPE_MEMCPY, p, s->ctx);
}

CUresult gp_capture_memset(gp_stream *s, const CUDA_MEMSET_NODE_PARAMS *p)
{
    return capture_node(s, CU_GRAPH_NODE_TYPE_MEMSET, p, s->ctx);
}

CUresult gp_capture_host(gp_stream *s, CUhostFn fn, void *data)
{
    CUDA_HOST_NODE_PARAMS p = {fn, data};
    return capture_node(s, CU_GRAPH_NODE_TYPE_HOST, &p, NULL);
}

/* ---- events --------------------------------------------------------------------------------------- */

/* Forgets which capture e's latest record was part of (lock held). */
static void event_release(gp_event *e)
{
    gp_capture *cap = atomic_load(&e->capture);
    if (cap) {
        atomic_store(&e->capture, NULL);
        e->cap_nodes.n = 0;
        capture_unref(cap);
    }
}

CUresult gp_capture_event_record(gp_stream *s, gp_event *e, bool *handled)
{
    *handled = false;
    if (none_active() && atomic_load(&e->capture) == NULL)
        return CUDA_SUCCESS;
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture);
    event_release(e); /* any record replaces the previous one */
    if (cap) {
        *handled = true;
        if (cap->invalidated) {
            rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        } else if (set_deps(&e->cap_nodes, s->cap_deps.v, s->cap_deps.n) < 0) {
            invalidate(cap, "out of host memory");
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            cap->refs++;
            atomic_store(&e->capture, cap);
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

CUresult gp_capture_event_wait(gp_stream *s, gp_event *e, bool *handled)
{
    *handled = false;
    if (none_active())
        return CUDA_SUCCESS; /* an event recorded in a capture that ended was never recorded on a stream */
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *cap = atomic_load(&s->capture), *ec = atomic_load(&e->capture);
    if (ec && ec->ended)
        ec = NULL;
    if (cap) {
        *handled = true;
        if (cap->invalidated) {
            rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        } else if (ec == cap) {
            if (merge_deps(&s->cap_deps, e->cap_nodes.v, e->cap_nodes.n) < 0) {
                invalidate(cap, "out of host memory");
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            }
        } else if (ec) {
            invalidate(cap, "waiting for an event of another capture");
            invalidate(ec, "an event of the capture was waited for by another capture");
            rc = CUDA_ERROR_STREAM_CAPTURE_MERGE;
        } else if (atomic_load(&e->rec_gen) > 0) {
            /* cuda.h: only in-stream ordering may cross the boundary of a capture. */
            invalidate(cap, "waiting for an event recorded outside the capture");
            rc = CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
        }
    } else if (ec) {
        *handled = true;
        if (s->kind == GP_STREAM_LEGACY) {
            invalidate(ec, "the legacy stream waited for a captured event");
            rc = CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
        } else if (ec->invalidated) {
            rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        } else if (join(s, ec, e->cap_nodes.v, e->cap_nodes.n) != CUDA_SUCCESS) {
            invalidate(ec, "out of host memory");
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&g_gp_graph_mu);
    return rc;
}

CUresult gp_capture_event_check(gp_event *e)
{
    if (atomic_load(&e->capture) == NULL)
        return CUDA_SUCCESS;
    pthread_mutex_lock(&g_gp_graph_mu);
    gp_capture *ec = atomic_load(&e->capture);
    bool active = ec && !ec->ended;
    pthread_mutex_unlock(&g_gp_graph_mu);
    return active ? CUDA_ERROR_CAPTURED_EVENT : CUDA_SUCCESS;
}

void gp_capture_event_forget(gp_event *e)
{
    pthread_mutex_lock(&g_gp_graph_mu);
    event_release(e);
    gp_ptrvec_free(&e->cap_nodes);
    pthread_mutex_unlock(&g_gp_graph_mu);
}

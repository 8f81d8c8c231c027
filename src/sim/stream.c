/* stream.c - streams and the executor threads that run device work in stream order.
 *
 * Each stream has a ring of operations and, from its first operation on, one thread that takes them in
 * order. Before an operation runs, its dependencies (events waited for, and the implicit ordering between
 * the legacy default stream and blocking streams) must have completed; its effect on data happens on the
 * executor thread; its duration is reserved on the device's timeline in the host-wide state (shared.c),
 * where other streams and other processes reserve theirs, so the device executes one thing at a time and
 * processes take turns. An executor may run at most a lookahead (GPUPOOL_SIM_LOOKAHEAD_NS, 2 ms) ahead of
 * the clock; a host thread that waits for an operation waits for its modelled end, not just its execution.
 *
 * A full ring (1024 operations, like a GPU's launch queue) blocks the producer until there is room.
 * Streams are reference-counted: the owner's reference, the executor's, and one per dependency on it.
 * A graph launch is one operation whose nodes the executor runs one after another (graph.c), each through
 * the same path as the operation it stands for. While a stream captures (capture.c), its work becomes
 * graph nodes and never reaches the ring.
 */
#include "sim/sim.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define GP_STREAM_CAP 1024u

static void stream_free(gp_stream *s)
{
    gp_ptrvec_free(&s->cap_deps);
    free(s->cap_edges);
    free(s->ring);
    free(s->end_seq);
    free(s->end_ns);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_cond_destroy(&s->space_cv);
    free(s);
}

void gp_stream_unref(gp_stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        stream_free(s);
}

static void release_deps(gp_op *op)
{
    for (unsigned i = 0; i < op->ndeps; i++) {
        gp_dep *d = i < GP_OP_INLINE_DEPS ? &op->deps[i] : &op->more[i - GP_OP_INLINE_DEPS];
        gp_stream_unref(d->stream);
    }
    free(op->more);
    op->more = NULL;
    op->ndeps = 0;
}

void gp_op_discard(gp_op *op)
{
    release_deps(op);
    if (op->kind == GP_OP_KERNEL && op->u.k.argsize > GP_OP_INLINE_ARGS)
        free(op->u.k.args);
    if (op->kind == GP_OP_EVENT)
        gp_event_unref(op->u.e.ev);
    if (op->kind == GP_OP_GRAPH)
        gp_graph_exec_unref(op->u.g.x);
}

uint64_t gp_stream_end_of(gp_stream *s, uint64_t seq)
{
    if (s->end_seq == NULL)
        return 0;
    /* The executor writes an entry as (seq 0, end, seq): a consistent read sees the same seq around it. */
    size_t i = seq % s->cap;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (atomic_load(&s->end_seq[i]) != seq)
            return 0; /* long gone: its end has passed anyway */
        uint64_t end = atomic_load(&s->end_ns[i]);
        if (atomic_load(&s->end_seq[i]) == seq)
            return end;
    }
    return 0;
}

void gp_op_add_dep(gp_op *op, gp_stream *dep, uint64_t seq)
{
    if (seq == 0)
        return;
    if (atomic_load(&dep->completed) >= seq) {
        uint64_t end = gp_stream_end_of(dep, seq);
        if (end > op->not_before_ns)
            op->not_before_ns = end;
        return;
    }
    atomic_fetch_add(&dep->refs, 1);
    if (op->ndeps < GP_OP_INLINE_DEPS) {
        op->deps[op->ndeps++] = (gp_dep){dep, seq};
        return;
    }
    unsigned k = op->ndeps - GP_OP_INLINE_DEPS;
    if (k >= op->nmore) {
        unsigned ncap = op->nmore ? op->nmore * 2 : 4;
        gp_dep *nm = realloc(op->more, ncap * sizeof *nm);
        if (nm == NULL) {
            /* Cannot record the dependency: wait for it here instead, which keeps the ordering. */
            gp_stream_wait(dep, seq);
            gp_stream_unref(dep);
            return;
        }
        op->more = nm;
        op->nmore = ncap;
    }
    op->more[k] = (gp_dep){dep, seq};
    op->ndeps++;
}

/* ---- execution ------------------------------------------------------------------------------------ */

static void wait_completed(gp_stream *s, uint64_t seq)
{
    if (atomic_load(&s->completed) >= seq)
        return;
    pthread_mutex_lock(&s->mu);
    while (atomic_load(&s->completed) < seq) {
        /* Tell the executor the earliest op someone waits for: it wakes waiters when that one is done,
         * not at every op. (It resets wake_seq when it wakes us; whoever is still waiting sets it again.) */
        if (atomic_load(&s->wake_seq) > seq)
            atomic_store(&s->wake_seq, seq);
        if (atomic_load(&s->completed) >= seq)
            break;
        pthread_cond_wait(&s->done_cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

static uint64_t ns_for(double amount, double per_second)
{
    if (amount <= 0 || per_second <= 0)
        return 0;
    return (uint64_t)(amount / per_second * 1e9);
}

static void do_copy(gp_op *op)
{
    for (size_t z = 0; z < op->u.c.depth; z++)
        for (size_t y = 0; y < op->u.c.height; y++)
            memmove(op->u.c.dst + z * op->u.c.dslice + y * op->u.c.dpitch,
                    op->u.c.src + z * op->u.c.sslice + y * op->u.c.spitch, op->u.c.width);
}

static void do_memset(gp_op *op)
{
    for (size_t y = 0; y < op->u.m.height; y++) {
        uint8_t *row = op->u.m.dst + y * op->u.m.pitch;
        if (op->u.m.elem == 1) {
            memset(row, (int)(op->u.m.value & 0xff), op->u.m.width);
        } else if (op->u.m.elem == 2) {
            uint16_t v = (uint16_t)op->u.m.value;
            for (size_t i = 0; i < op->u.m.width; i++)
                memcpy(row + 2 * i, &v, 2);
        } else {
            uint32_t v = op->u.m.value;
            for (size_t i = 0; i < op->u.m.width; i++)
                memcpy(row + 4 * i, &v, 4);
        }
    }
}

uint64_t gp_op_run(gp_stream *s, gp_op *op, uint64_t start)
{
    gp_ctx *c = s->ctx;
    const gp_model *m = &g_sim.shm.shm->dev[c->pdev].model;
    bool failed = gp_ctx_sticky(c) != CUDA_SUCCESS;
    uint64_t end = start;
    switch (op->kind) {
    case GP_OP_NOP: break;
    case GP_OP_KERNEL: {
        if (failed)
            break;
        uint64_t dur = 0, membusy = 0;
        CUresult rc = gp_kernel_run(s, op, &dur, &membusy);
        if (rc != CUDA_SUCCESS)
            gp_ctx_set_sticky(c, rc);
        else
            end =
                gp_shm_reserve(&g_sim.shm, c->pdev, GP_ENGINE_COMPUTE, start, g_sim.launch_ns + dur, membusy);
        break;
    }
    case GP_OP_COPY: {
        if (failed)
            break;
        do_copy(op);
        double bw = op->engine == GP_ENGINE_D2D ? m->mem_bw_gbs * 1e9 / 2 : m->link_gbs * 1e9;
        if (op->engine < GP_ENGINE_COUNT) {
            uint64_t dur = g_sim.copy_ns + ns_for((double)op->u.c.bytes, bw);
            end = gp_shm_reserve(&g_sim.shm, c->pdev, op->engine, start, dur, 0);
        }
        break;
    }
    case GP_OP_MEMSET: {
        if (failed)
            break;
        do_memset(op);
        uint64_t bytes = (uint64_t)op->u.m.width * op->u.m.elem * op->u.m.height;
        uint64_t busy = ns_for((double)bytes, m->mem_bw_gbs * 1e9);
        end = gp_shm_reserve(&g_sim.shm, c->pdev, GP_ENGINE_COMPUTE, start, g_sim.launch_ns + busy, busy);
        break;
    }
    case GP_OP_EVENT: gp_event_complete(op->u.e.ev, op->u.e.gen, start); break;
    case GP_OP_HOSTFN:
        gp_sleep_until_ns(start);
        op->u.h.fn(op->u.h.data);
        end = gp_now_ns();
        break;
    case GP_OP_CALLBACK:
        gp_sleep_until_ns(start);
        op->u.cb.fn(op->u.cb.stream, gp_ctx_sticky(c), op->u.cb.data);
        end = gp_now_ns();
        break;
    case GP_OP_FREE: gp_pool_free_block(op->u.fr.a); break;
    case GP_OP_GRAPH: end = gp_graph_exec_run(s, op->u.g.x, start); break;
    }
    return end;
}

void gp_stream_pace(gp_stream *s, uint64_t end)
{
    uint64_t now = gp_now_ns();
    gp_shm_tick(&g_sim.shm, s->ctx->pdev, now);
    if (end > now + g_sim.lookahead_ns)
        gp_sleep_until_ns(end - g_sim.lookahead_ns);
}

static uint64_t execute(gp_stream *s, gp_op *op)
{
    uint64_t start = op->enq_ns;
    uint64_t last = atomic_load(&s->last_end);
    if (last > start)
        start = last;
    if (op->not_before_ns > start)
        start = op->not_before_ns;
    for (unsigned i = 0; i < op->ndeps; i++) {
        gp_dep *d = i < GP_OP_INLINE_DEPS ? &op->deps[i] : &op->more[i - GP_OP_INLINE_DEPS];
        wait_completed(d->stream, d->seq);
        uint64_t e = gp_stream_end_of(d->stream, d->seq);
        if (e > start)
            start = e;
    }
    release_deps(op);

    uint64_t end = gp_op_run(s, op, start);
    /* What the ring operation owned. */
    if (op->kind == GP_OP_KERNEL && op->u.k.argsize > GP_OP_INLINE_ARGS)
        free(op->u.k.args);
    else if (op->kind == GP_OP_EVENT)
        gp_event_unref(op->u.e.ev);
    else if (op->kind == GP_OP_GRAPH)
        gp_graph_exec_unref(op->u.g.x);
    return end;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void *executor(void *arg)
{
    gp_stream *s = arg;
    /* Application signals are for application threads. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    uint64_t avail = 0; /* our last look at `submitted` */
    for (;;) {
        uint64_t done = atomic_load_explicit(&s->completed, memory_order_relaxed); /* ours alone to write */
        if (avail <= done) /* (after a spin below found work, avail is behind) */
            avail = atomic_load(&s->submitted);
        if (avail == done) {
            /* More work usually follows within microseconds: look for it briefly before sleeping, since each
             * sleep makes the next enqueue pay for a wake-up (a futex call). */
            for (int i = 0; i < 2000 && atomic_load(&s->submitted) == done; i++)
                cpu_relax();
            if (atomic_load(&s->submitted) == done) {
                pthread_mutex_lock(&s->mu);
                atomic_store(&s->consumer_waiting, true);
                while (atomic_load(&s->submitted) == done && !s->stopping)
                    pthread_cond_wait(&s->work_cv, &s->mu);
                atomic_store(&s->consumer_waiting, false);
                bool stop = atomic_load(&s->submitted) == done && s->stopping;
                pthread_mutex_unlock(&s->mu);
                if (stop)
                    break; /* stopping, and nothing left */
                continue;
            }
        }
        gp_op *op = &s->ring[done % s->cap];
        uint64_t end = execute(s, op);

        uint64_t seq = done + 1;
        size_t i = seq % s->cap;
        atomic_store(&s->end_seq[i], 0);
        atomic_store(&s->end_ns[i], end);
        atomic_store(&s->end_seq[i], seq);
        if (end > atomic_load(&s->last_end))
            atomic_store(&s->last_end, end);
        atomic_store(&s->completed, seq);
        /* Wake whoever waits for this op, and producers waiting for room once half the ring is free (not
         * at every op: a wake-up per op would make a full ring crawl). */
        bool wake_done = atomic_load(&s->wake_seq) <= seq;
        bool wake_space =
            atomic_load(&s->producers_waiting) && atomic_load(&s->submitted) - seq <= s->cap / 2;
        if (wake_done || wake_space) {
            pthread_mutex_lock(&s->mu);
            if (wake_done) {
                atomic_store(&s->wake_seq, UINT64_MAX);
                pthread_cond_broadcast(&s->done_cv);
            }
            if (wake_space)
                pthread_cond_broadcast(&s->space_cv);
            pthread_mutex_unlock(&s->mu);
        }
        gp_stream_pace(s, end);
    }
    gp_stream_unref(s); /* the executor's reference */
    return NULL;
}

/* Called with s->mu held. */
static int start_executor(gp_stream *s)
{
    if (s->ring == NULL) {
        s->ring = calloc(s->cap, sizeof *s->ring);
        s->end_seq = calloc(s->cap, sizeof *s->end_seq); /* zero: an atomic's valid initial state */
        s->end_ns = calloc(s->cap, sizeof *s->end_ns);
        if (!s->ring || !s->end_seq || !s->end_ns)
            return -1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1u << 20);
    atomic_fetch_add(&s->refs, 1);
    pthread_t t;
    int rc = pthread_create(&t, &attr, executor, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&s->refs, 1);
        return -1;
    }
    s->thread_started = true;
    return 0;
}

/* ---- enqueue and wait ----------------------------------------------------------------------------- */

static void implicit_deps(gp_stream *s, gp_op *op)
{
    gp_ctx *c = s->ctx;
    if (s->kind == GP_STREAM_LEGACY) {
        /* The legacy stream waits for all earlier work of the context's blocking streams. */
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < c->streams.n; i++) {
            gp_stream *o = c->streams.v[i];
            if (o == s || (o->flags & CU_STREAM_NON_BLOCKING))
                continue;
            uint64_t sub = atomic_load(&o->submitted);
            if (sub > atomic_load(&o->completed))
                gp_op_add_dep(op, o, sub);
        }
        pthread_mutex_unlock(&c->mu);
    } else if (!(s->flags & CU_STREAM_NON_BLOCKING)) {
        /* A blocking stream waits for earlier work of the legacy stream. */
        gp_stream *l = atomic_load(&c->legacy);
        if (l != NULL && l != s) {
            uint64_t sub = atomic_load(&l->submitted);
            if (sub > atomic_load(&l->completed))
                gp_op_add_dep(op, l, sub);
        }
    }
}

uint64_t gp_stream_enqueue(gp_stream *s, const gp_op *in)
{
    gp_op op = *in;
    op.enq_ns = gp_now_ns();
    implicit_deps(s, &op);
    pthread_mutex_lock(&s->mu);
    if (!s->thread_started && start_executor(s) < 0) {
        pthread_mutex_unlock(&s->mu);
        /* No thread: run it here, in order (the ring is empty since no thread ever ran). */
        gp_log_once(GP_LOG_ERROR, GP_LOG_SIM, "cannot start a stream thread; running stream work inline");
        uint64_t end = execute(s, &op);
        pthread_mutex_lock(&s->mu);
        uint64_t seq = atomic_load(&s->submitted) + 1;
        atomic_store(&s->submitted, seq);
        atomic_store(&s->completed, seq);
        atomic_store(&s->last_end, end);
        pthread_mutex_unlock(&s->mu);
        return seq;
    }
    /* `completed` only grows: look at it again only when the last look says the ring is full. */
    if (atomic_load(&s->submitted) - s->room_seen >= s->cap)
        s->room_seen = atomic_load(&s->completed);
    if (atomic_load(&s->submitted) - s->room_seen >= s->cap) {
        atomic_fetch_add(&s->producers_waiting, 1);
        while (atomic_load(&s->submitted) - atomic_load(&s->completed) >= s->cap)
            pthread_cond_wait(&s->space_cv, &s->mu);
        atomic_fetch_sub(&s->producers_waiting, 1);
        s->room_seen = atomic_load(&s->completed);
    }
    uint64_t seq = atomic_load(&s->submitted) + 1;
    gp_op *slot = &s->ring[(seq - 1) % s->cap];
    *slot = op;
    atomic_store(&s->submitted, seq);
    if (atomic_load(&s->consumer_waiting))
        pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    return seq;
}

void gp_stream_wait(gp_stream *s, uint64_t seq)
{
    if (seq == 0)
        return;
    wait_completed(s, seq);
    uint64_t end = gp_stream_end_of(s, seq);
    if (end > gp_now_ns())
        gp_sleep_until_ns(end);
}

void gp_stream_drain(gp_stream *s)
{
    gp_stream_wait(s, atomic_load(&s->submitted));
}

bool gp_stream_idle(gp_stream *s)
{
    return atomic_load(&s->completed) == atomic_load(&s->submitted) &&
           atomic_load(&s->last_end) <= gp_now_ns();
}

/* ---- creation and destruction --------------------------------------------------------------------- */

static gp_stream *stream_new(gp_ctx *c, int kind, unsigned flags, int priority)
{
    gp_stream *s = aligned_alloc(_Alignof(gp_stream), sizeof *s);
    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    atomic_store(&s->wake_seq, UINT64_MAX);
    s->ctx = c;
    s->kind = kind;
    s->flags = flags;
    s->priority = priority;
    s->id = gp_next_id();
    s->cap = GP_STREAM_CAP;
    atomic_store(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    pthread_cond_init(&s->space_cv, NULL);
    pthread_mutex_lock(&c->mu);
    int rc = gp_ptrvec_push(&c->streams, s);
    pthread_mutex_unlock(&c->mu);
    if (rc < 0) {
        stream_free(s);
        return NULL;
    }
    return s;
}

CUresult gp_stream_create(gp_ctx *c, unsigned flags, int priority, gp_stream **out)
{
    if (priority > 0)
        priority = 0;
    if (priority < -5)
        priority = -5;
    gp_stream *s = stream_new(c, GP_STREAM_USER, flags, priority);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_handle_add(s, GP_OBJ_STREAM);
    *out = s;
    return CUDA_SUCCESS;
}

/* Stops the executor once the stream is drained and drops the owner's reference; the stream's memory
 * goes when the last reference does. Returns at once, as cuStreamDestroy does. */
void gp_stream_destroy(gp_stream *s)
{
    gp_handle_del(s);
    if (gp_stream_capturing(s))
        gp_capture_stream_forget(s);
    atomic_store(&s->destroyed, 1);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    gp_stream_unref(s);
}

static void remove_from_ctx(gp_stream *s)
{
    gp_ctx *c = s->ctx;
    pthread_mutex_lock(&c->mu);
    gp_ptrvec_remove(&c->streams, s);
    pthread_mutex_unlock(&c->mu);
}

/* Per-thread default streams, one per (thread, context activation). */
typedef struct pts_entry {
    gp_ctx *ctx;
    unsigned gen;
    gp_stream *s;
} pts_entry;

static __thread pts_entry *t_pts;
static __thread int t_npts;
static pthread_key_t g_pts_key;
static pthread_once_t g_pts_once = PTHREAD_ONCE_INIT;

static void pts_thread_exit(void *unused)
{
    for (int i = 0; i < t_npts; i++) {
        pts_entry *e = &t_pts[i];
        if (atomic_load(&e->ctx->gen) == e->gen && atomic_load(&e->ctx->active)) {
            remove_from_ctx(e->s);
            gp_stream_destroy(e->s);
        }
    }
    free(t_pts);
    t_pts = NULL;
    t_npts = 0;
}

static void pts_key_init(void)
{
    pthread_key_create(&g_pts_key, pts_thread_exit);
}

static CUresult per_thread_stream(gp_ctx *c, gp_stream **out)
{
    unsigned gen = atomic_load(&c->gen);
    for (int i = 0; i < t_npts; i++)
        if (t_pts[i].ctx == c) {
            if (t_pts[i].gen == gen) {
                *out = t_pts[i].s;
                return CUDA_SUCCESS;
            }
            t_pts[i] = t_pts[--t_npts]; /* from an earlier activation: its stream is gone */
            break;
        }
    pthread_once(&g_pts_once, pts_key_init);
    pts_entry *n = realloc(t_pts, (size_t)(t_npts + 1) * sizeof *n);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    t_pts = n;
    gp_stream *s = stream_new(c, GP_STREAM_PER_THREAD, 0, 0);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    t_pts[t_npts++] = (pts_entry){c, gen, s};
    pthread_setspecific(g_pts_key, (void *)1);
    *out = s;
    return CUDA_SUCCESS;
}

static CUresult legacy_stream(gp_ctx *c, gp_stream **out)
{
    gp_stream *l = atomic_load(&c->legacy);
    if (l) {
        *out = l;
        return CUDA_SUCCESS;
    }
    gp_stream *s = stream_new(c, GP_STREAM_LEGACY, 0, 0);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_stream *expected = NULL;
    if (!atomic_compare_exchange_strong(&c->legacy, &expected, s)) {
        remove_from_ctx(s);
        stream_free(s);
        *out = expected;
        return CUDA_SUCCESS;
    }
    *out = s;
    return CUDA_SUCCESS;
}

CUresult gp_stream_resolve(CUstream h, bool per_thread, gp_ctx *cur, gp_stream **out)
{
    if (h == NULL)
        return per_thread ? per_thread_stream(cur, out) : legacy_stream(cur, out);
    if (h == CU_STREAM_LEGACY)
        return legacy_stream(cur, out);
    if (h == CU_STREAM_PER_THREAD)
        return per_thread_stream(cur, out);
    if (gp_handle_type(h) != GP_OBJ_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_stream *s = (gp_stream *)h;
    if (!atomic_load(&s->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = s;
    return CUDA_SUCCESS;
}

/* ---- the stream API ------------------------------------------------------------------------------- */

/* Resolves the current context and a stream for an API call. */
static CUresult resolve(CUstream h, bool per_thread, gp_stream **out)
{
    gp_ctx *c = NULL;
    CUresult rc;
    bool special = h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD;
    if (special) {
        rc = gp_ctx_current(&c);
        if (rc)
            return rc;
    } else {
        GP_INIT_OR_RETURN();
    }
    return gp_stream_resolve(h, per_thread, c, out);
}

GP_API CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (phStream == NULL || (Flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    gp_stream *s;
    rc = gp_stream_create(c, Flags, 0, &s);
    if (rc == CUDA_SUCCESS)
        *phStream = (CUstream)s;
    return rc;
}

GP_API CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (phStream == NULL || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    gp_stream *s;
    rc = gp_stream_create(c, flags, priority, &s);
    if (rc == CUDA_SUCCESS)
        *phStream = (CUstream)s;
    return rc;
}

static CUresult stream_destroy(CUstream h)
{
    GP_INIT_OR_RETURN();
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD || gp_handle_type(h) != GP_OBJ_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_stream *s = (gp_stream *)h;
    remove_from_ctx(s);
    gp_stream_destroy(s);
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamDestroy(CUstream hStream)
{
    return stream_destroy(hStream);
}

GP_API CUresult cuStreamDestroy_v2(CUstream hStream)
{
    return stream_destroy(hStream);
}

static CUresult stream_query(CUstream h, bool pt)
{
    gp_stream *s;
    CUresult rc = resolve(h, pt, &s);
    if (rc)
        return rc;
    if ((rc = gp_capture_sync(s, NULL)) || (rc = gp_capture_legacy(s)))
        return rc;
    rc = gp_ctx_sticky(s->ctx);
    if (rc)
        return rc;
    return gp_stream_idle(s) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

GP_API CUresult cuStreamQuery(CUstream hStream)
{
    return stream_query(hStream, false);
}

GP_API CUresult cuStreamQuery_ptsz(CUstream hStream)
{
    return stream_query(hStream, true);
}

static CUresult stream_sync(CUstream h, bool pt)
{
    gp_stream *s;
    CUresult rc = resolve(h, pt, &s);
    if (rc)
        return rc;
    if ((rc = gp_capture_sync(s, NULL)) || (rc = gp_capture_legacy(s)))
        return rc;
    gp_stream_drain(s);
    gp_pools_trim_after_sync(s->ctx->dev);
    return gp_ctx_sticky(s->ctx);
}

GP_API CUresult cuStreamSynchronize(CUstream hStream)
{
    return stream_sync(hStream, false);
}

GP_API CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
    return stream_sync(hStream, true);
}

static CUresult stream_wait_event(CUstream h, CUevent hEvent, unsigned int flags, bool pt)
{
    gp_stream *s;
    CUresult rc = resolve(h, pt, &s);
    if (rc)
        return rc;
    if (flags & ~(unsigned)CU_EVENT_WAIT_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    if (hEvent == NULL || gp_handle_type(hEvent) != GP_OBJ_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_event *e = (gp_event *)hEvent;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if ((flags & CU_EVENT_WAIT_EXTERNAL) && gp_stream_capturing(s))
        return gp_capture_refuse(s, "capturing cuStreamWaitEvent with CU_EVENT_WAIT_EXTERNAL",
                                 CUDA_ERROR_NOT_SUPPORTED);
    bool handled = false;
    rc = gp_capture_event_wait(s, e, &handled);
    if (handled)
        return rc;
    gp_op op = {.kind = GP_OP_NOP};
    pthread_mutex_lock(&e->mu);
    if (e->rec_stream)
        gp_op_add_dep(&op, e->rec_stream, e->rec_seq);
    pthread_mutex_unlock(&e->mu);
    if (op.ndeps == 0 && op.not_before_ns == 0)
        return CUDA_SUCCESS; /* never recorded, or already complete */
    gp_stream_enqueue(s, &op);
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream, hEvent, Flags, false);
}

GP_API CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream, hEvent, Flags, true);
}

static CUresult add_callback(CUstream h, CUstreamCallback callback, void *userData, unsigned int flags,
                             bool pt)
{
    gp_stream *s;
    CUresult rc = resolve(h, pt, &s);
    if (rc)
        return rc;
    if (callback == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if (gp_stream_capturing(s))
        return gp_capture_refuse(s, "cuStreamAddCallback on a capturing stream (use cuLaunchHostFunc)",
                                 CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    gp_op op = {.kind = GP_OP_CALLBACK};
    op.u.cb.fn = callback;
    op.u.cb.stream = h;
    op.u.cb.data = userData;
    gp_stream_enqueue(s, &op);
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback, void *userData,
                                    unsigned int flags)
{
    return add_callback(hStream, callback, userData, flags, false);
}

GP_API CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback, void *userData,
                                         unsigned int flags)
{
    return add_callback(hStream, callback, userData, flags, true);
}

static CUresult launch_host_func(CUstream h, CUhostFn fn, void *userData, bool pt)
{
    gp_stream *s;
    CUresult rc = resolve(h, pt, &s);
    if (rc)
        return rc;
    if (fn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    rc = gp_ctx_sticky(s->ctx);
    if (rc)
        return rc;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if (gp_stream_capturing(s))
        return gp_capture_host(s, fn, userData);
    gp_op op = {.kind = GP_OP_HOSTFN};
    op.u.h.fn = fn;
    op.u.h.data = userData;
    gp_stream_enqueue(s, &op);
    return CUDA_SUCCESS;
}

GP_API CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData)
{
    return launch_host_func(hStream, fn, userData, false);
}

GP_API CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void *userData)
{
    return launch_host_func(hStream, fn, userData, true);
}

#define STREAM_GETTER(name, type, expr)                         \
    static CUresult name##_impl(CUstream h, type *out, bool pt) \
    {                                                           \
        gp_stream *s;                                           \
        CUresult rc = resolve(h, pt, &s);                       \
        if (rc)                                                 \
            return rc;                                          \
        if (out == NULL)                                        \
            return CUDA_ERROR_INVALID_VALUE;                    \
        *out = (expr);                                          \
        return CUDA_SUCCESS;                                    \
    }                                                           \
    GP_API CUresult name(CUstream h, type *out)                 \
    {                                                           \
        return name##_impl(h, out, false);                      \
    }                                                           \
    GP_API CUresult name##_ptsz(CUstream h, type *out)          \
    {                                                           \
        return name##_impl(h, out, true);                       \
    }

STREAM_GETTER(cuStreamGetPriority, int, s->priority)
STREAM_GETTER(cuStreamGetFlags, unsigned int, s->flags)
STREAM_GETTER(cuStreamGetCtx, CUcontext, (CUcontext)s->ctx)
STREAM_GETTER(cuStreamGetId, unsigned long long, s->id)
STREAM_GETTER(cuStreamGetDevice, CUdevice, s->ctx->dev)

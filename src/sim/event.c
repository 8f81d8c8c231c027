/* event.c - events: recording in stream order, queries, host waits and elapsed time.
 *
 * Recording an event enqueues a marker on the stream; when the executor reaches it, all earlier work of the
 * stream has completed and the marker takes the modelled time at that point as the event's timestamp. An
 * event remembers only its latest record (generation counter), as CUDA's do: waiting for it or querying it
 * concerns the work captured by the most recent cuEventRecord. A record on a capturing stream is no
 * operation: it marks the capture's dependencies for streams that wait for the event (capture.c).
 */
#include "sim/sim.h"

#include <stdlib.h>

void gp_event_unref(gp_event *e)
{
    if (atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    if (atomic_load(&e->capture) || e->cap_nodes.v)
        gp_capture_event_forget(e);
    if (e->rec_stream)
        gp_stream_unref(e->rec_stream);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

void gp_event_complete(gp_event *e, uint64_t gen, uint64_t ts)
{
    pthread_mutex_lock(&e->mu);
    if (gen > atomic_load(&e->done_gen)) {
        atomic_store(&e->ts_ns, ts);
        atomic_store(&e->done_gen, gen);
    }
    pthread_mutex_unlock(&e->mu);
}

static CUresult event_of(CUevent h, gp_event **out)
{
    GP_INIT_OR_RETURN();
    if (h == NULL || gp_handle_type(h) != GP_OBJ_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    *out = (gp_event *)h;
    return CUDA_SUCCESS;
}

GP_API CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    unsigned valid = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
    if (phEvent == NULL || (Flags & ~valid))
        return CUDA_ERROR_INVALID_VALUE;
    if ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_VALUE;
    gp_event *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->ctx = c;
    e->flags = Flags;
    atomic_store(&e->refs, 1);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_lock(&c->mu);
    int pushed = gp_ptrvec_push(&c->events, e);
    pthread_mutex_unlock(&c->mu);
    if (pushed < 0) {
        free(e);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_handle_add(e, GP_OBJ_EVENT);
    *phEvent = (CUevent)e;
    return CUDA_SUCCESS;
}

static CUresult event_record(CUevent h, CUstream hs, unsigned flags, bool pt)
{
    gp_event *e;
    CUresult rc = event_of(h, &e);
    if (rc)
        return rc;
    if (flags & ~(unsigned)CU_EVENT_RECORD_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *cur = NULL;
    if (hs == NULL || hs == CU_STREAM_LEGACY || hs == CU_STREAM_PER_THREAD) {
        rc = gp_ctx_current(&cur);
        if (rc)
            return rc;
    }
    gp_stream *s;
    rc = gp_stream_resolve(hs, pt, cur, &s);
    if (rc)
        return rc;
    if (s->ctx != e->ctx)
        return CUDA_ERROR_INVALID_HANDLE; /* event and stream must belong to one context */
    rc = gp_ctx_sticky(s->ctx);
    if (rc)
        return rc;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if ((flags & CU_EVENT_RECORD_EXTERNAL) && gp_stream_capturing(s))
        return gp_capture_refuse(s, "capturing cuEventRecordWithFlags with CU_EVENT_RECORD_EXTERNAL",
                                 CUDA_ERROR_NOT_SUPPORTED);
    bool handled = false;
    rc = gp_capture_event_record(s, e, &handled);
    if (handled)
        return rc;
    pthread_mutex_lock(&e->mu);
    uint64_t gen = atomic_load(&e->rec_gen) + 1;
    atomic_store(&e->rec_gen, gen);
    pthread_mutex_unlock(&e->mu);

    gp_op op = {.kind = GP_OP_EVENT};
    op.u.e.ev = e;
    op.u.e.gen = gen;
    atomic_fetch_add(&e->refs, 1);
    uint64_t seq = gp_stream_enqueue(s, &op);

    pthread_mutex_lock(&e->mu);
    if (atomic_load(&e->rec_gen) == gen) {
        atomic_fetch_add(&s->refs, 1);
        if (e->rec_stream)
            gp_stream_unref(e->rec_stream);
        e->rec_stream = s;
        e->rec_seq = seq;
    }
    pthread_mutex_unlock(&e->mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream, 0, false);
}

GP_API CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream, 0, true);
}

GP_API CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    return event_record(hEvent, hStream, flags, false);
}

GP_API CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    return event_record(hEvent, hStream, flags, true);
}

/* True when the latest record has completed and its modelled time has passed. */
static bool event_done(gp_event *e)
{
    uint64_t gen = atomic_load(&e->rec_gen);
    if (gen == 0)
        return true;
    if (atomic_load(&e->done_gen) < gen)
        return false;
    return atomic_load(&e->ts_ns) <= gp_now_ns();
}

GP_API CUresult cuEventQuery(CUevent hEvent)
{
    gp_event *e;
    CUresult rc = event_of(hEvent, &e);
    if (rc)
        return rc;
    rc = gp_ctx_sticky(e->ctx);
    if (rc || (rc = gp_capture_event_check(e)))
        return rc;
    return event_done(e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

GP_API CUresult cuEventSynchronize(CUevent hEvent)
{
    gp_event *e;
    CUresult rc = event_of(hEvent, &e);
    if (rc || (rc = gp_capture_event_check(e)))
        return rc;
    pthread_mutex_lock(&e->mu);
    gp_stream *s = e->rec_stream;
    uint64_t seq = e->rec_seq;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&e->mu);
    if (s) {
        gp_stream_wait(s, seq);
        gp_stream_unref(s);
    }
    uint64_t ts = atomic_load(&e->ts_ns);
    if (ts > gp_now_ns())
        gp_sleep_until_ns(ts);
    return gp_ctx_sticky(e->ctx);
}

static CUresult event_destroy(CUevent h)
{
    gp_event *e;
    CUresult rc = event_of(h, &e);
    if (rc)
        return rc;
    gp_handle_del(e);
    pthread_mutex_lock(&e->ctx->mu);
    gp_ptrvec_remove(&e->ctx->events, e);
    pthread_mutex_unlock(&e->ctx->mu);
    gp_event_unref(e); /* pending records keep it alive until they complete */
    return CUDA_SUCCESS;
}

GP_API CUresult cuEventDestroy(CUevent hEvent)
{
    return event_destroy(hEvent);
}

GP_API CUresult cuEventDestroy_v2(CUevent hEvent)
{
    return event_destroy(hEvent);
}

static CUresult elapsed(float *ms, CUevent hStart, CUevent hEnd)
{
    GP_INIT_OR_RETURN();
    if (ms == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_event *a, *b;
    CUresult rc = event_of(hStart, &a);
    if (rc == CUDA_SUCCESS)
        rc = event_of(hEnd, &b);
    if (rc)
        return rc;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return CUDA_ERROR_INVALID_HANDLE;
    if (atomic_load(&a->rec_gen) == 0 || atomic_load(&b->rec_gen) == 0)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!event_done(a) || !event_done(b))
        return CUDA_ERROR_NOT_READY;
    int64_t d = (int64_t)atomic_load(&b->ts_ns) - (int64_t)atomic_load(&a->ts_ns);
    *ms = (float)((double)d / 1e6);
    return CUDA_SUCCESS;
}

GP_API CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    return elapsed(pMilliseconds, hStart, hEnd);
}

GP_API CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    return elapsed(pMilliseconds, hStart, hEnd);
}

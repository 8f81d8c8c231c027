/* client_exec.c - streams, events, modules, functions and kernel launches for the remote driver.
 *
 * Each handle is a record holding the wire id (client.h). Arguments are checked here before anything is sent,
 * so the errors the driver reports synchronously (unknown handles, zero grid dimensions, bad flags) still
 * come back from the call that caused them, while launches, event records and stream waits travel
 * asynchronously. A function's parameter layout comes with MODULE_FUNC and is kept in its record, so a launch
 * packs its arguments without asking the worker. Module images are named by SHA-256: MODULE_HAVE first, and
 * the image itself only when the worker has not seen it.
 *
 * The per-thread default stream (CU_STREAM_PER_THREAD, the _ptsz entry points) is served by the legacy NULL
 * stream: correct results, less concurrency between threads.
 */
#include "remote/client.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* ---- streams -------------------------------------------------------------------------------------- */

CUresult gp_stream_arg(CUstream h, uint64_t *stream_id, uint64_t *ctx_id)
{
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        gp_rctx *c;
        CUresult rc = gp_ctx_cur(&c);
        if (rc)
            return rc;
        *stream_id = 0;
        *ctx_id = c->id;
        return CUDA_SUCCESS;
    }
    GP_READY_OR_RETURN();
    if (gp_reg_kind(h) != GP_R_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rstream *s = (gp_rstream *)h;
    if (!atomic_load(&s->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *stream_id = s->id;
    *ctx_id = s->ctx->id;
    return CUDA_SUCCESS;
}

/* A request of u64 ctx + u64 id, answered with a status only. */
static CUresult call_ctx_id(unsigned op, uint64_t ctx, uint64_t id)
{
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx);
    gp_w_u64(w, id);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(op, &r);
    gp_rpc_end();
    return rc;
}

static CUresult stream_create(CUstream *phStream, unsigned int flags, int priority)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (phStream == NULL || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    /* Priorities clamp to the range cuCtxGetStreamPriorityRange reports, as the driver does. */
    if (priority > 0)
        priority = 0;
    if (priority < -5)
        priority = -5;
    gp_rstream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->id = gp_client_next_id();
    s->ctx = c;
    s->flags = flags;
    s->priority = priority;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, s->id);
    gp_w_u32(w, flags);
    gp_w_u32(w, (uint32_t)priority);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_STREAM_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(s, GP_R_STREAM) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(s);
        return rc;
    }
    *phStream = (CUstream)s;
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    return stream_create(phStream, Flags, 0);
}

GP_API CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority)
{
    return stream_create(phStream, flags, priority);
}

static CUresult stream_destroy(CUstream h)
{
    GP_READY_OR_RETURN();
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD || gp_reg_kind(h) != GP_R_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rstream *s = (gp_rstream *)h;
    gp_reg_del(s);
    gp_capture_stream_gone(s);
    CUresult rc = CUDA_SUCCESS;
    if (atomic_load(&s->ctx->active))
        rc = call_ctx_id(GP_OP_STREAM_DESTROY, s->ctx->id, s->id);
    free(s->capture_deps);
    free(s);
    return rc == CUDA_ERROR_DEVICE_UNAVAILABLE ? rc : CUDA_SUCCESS;
}

GP_API CUresult cuStreamDestroy(CUstream hStream)
{
    return stream_destroy(hStream);
}

GP_API CUresult cuStreamDestroy_v2(CUstream hStream)
{
    return stream_destroy(hStream);
}

/* STREAM_SYNC, and a STREAM_QUERY that finds the stream done, are synchronization points for mirrored
 * memory (client_mirror.c). */
static CUresult stream_op(CUstream h, unsigned op)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    return rc ? rc : gp_mirror_synced(call_ctx_id(op, cid, sid), cid, sid, GP_SYNC_STREAM);
}

GP_API CUresult cuStreamQuery(CUstream hStream)
{
    return stream_op(hStream, GP_OP_STREAM_QUERY);
}

GP_API CUresult cuStreamQuery_ptsz(CUstream hStream)
{
    return stream_op(hStream, GP_OP_STREAM_QUERY);
}

GP_API CUresult cuStreamSynchronize(CUstream hStream)
{
    return stream_op(hStream, GP_OP_STREAM_SYNC);
}

GP_API CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
    return stream_op(hStream, GP_OP_STREAM_SYNC);
}

static CUresult event_arg(CUevent h, gp_revent **out)
{
    if (h == NULL || gp_reg_kind(h) != GP_R_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_revent *e = (gp_revent *)h;
    if (!atomic_load(&e->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = e;
    return CUDA_SUCCESS;
}

static CUresult stream_wait_event(CUstream h, CUevent hEvent, unsigned int flags)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (flags & ~(unsigned)CU_EVENT_WAIT_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_revent *e;
    if ((rc = event_arg(hEvent, &e)))
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_w_u64(w, e->id);
    gp_w_u32(w, flags);
    rc = gp_rpc_async(GP_OP_STREAM_WAIT_EVENT);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        gp_capture_event_waited(h, hEvent);
    return rc;
}

GP_API CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream, hEvent, Flags);
}

GP_API CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream ? hStream : CU_STREAM_PER_THREAD, hEvent, Flags);
}

static CUresult stream_get(CUstream h, gp_rstream **s, gp_rctx **c)
{
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        *s = NULL;
        return gp_ctx_cur(c);
    }
    GP_READY_OR_RETURN();
    if (gp_reg_kind(h) != GP_R_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    *s = (gp_rstream *)h;
    *c = (*s)->ctx;
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamGetPriority(CUstream hStream, int *priority)
{
    gp_rstream *s;
    gp_rctx *c;
    CUresult rc = stream_get(hStream, &s, &c);
    if (rc)
        return rc;
    if (priority == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *priority = s ? s->priority : 0;
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamGetFlags(CUstream hStream, unsigned int *flags)
{
    gp_rstream *s;
    gp_rctx *c;
    CUresult rc = stream_get(hStream, &s, &c);
    if (rc)
        return rc;
    if (flags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = s ? s->flags : 0;
    return CUDA_SUCCESS;
}

GP_API CUresult cuStreamGetCtx(CUstream hStream, CUcontext *pctx)
{
    gp_rstream *s;
    gp_rctx *c;
    CUresult rc = stream_get(hStream, &s, &c);
    if (rc)
        return rc;
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

/* ---- events --------------------------------------------------------------------------------------- */

GP_API CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    unsigned valid = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
    if (phEvent == NULL || (Flags & ~valid))
        return CUDA_ERROR_INVALID_VALUE;
    if ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_VALUE;
    gp_revent *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->id = gp_client_next_id();
    e->ctx = c;
    e->flags = Flags;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, e->id);
    gp_w_u32(w, Flags);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_EVENT_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(e, GP_R_EVENT) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(e);
        return rc;
    }
    *phEvent = (CUevent)e;
    return CUDA_SUCCESS;
}

static CUresult event_destroy(CUevent h)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_revent *e = (gp_revent *)h;
    gp_reg_del(e);
    CUresult rc = CUDA_SUCCESS;
    if (atomic_load(&e->ctx->active))
        rc = call_ctx_id(GP_OP_EVENT_DESTROY, e->ctx->id, e->id);
    free(e);
    return rc == CUDA_ERROR_DEVICE_UNAVAILABLE ? rc : CUDA_SUCCESS;
}

GP_API CUresult cuEventDestroy(CUevent hEvent)
{
    return event_destroy(hEvent);
}

GP_API CUresult cuEventDestroy_v2(CUevent hEvent)
{
    return event_destroy(hEvent);
}

static CUresult event_record(CUevent hEvent, CUstream hStream)
{
    GP_READY_OR_RETURN();
    gp_revent *e;
    CUresult rc = event_arg(hEvent, &e);
    if (rc)
        return rc;
    uint64_t sid, cid;
    if ((rc = gp_stream_arg(hStream, &sid, &cid)))
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, e->id);
    gp_w_u64(w, sid);
    rc = gp_rpc_async(GP_OP_EVENT_RECORD);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        gp_capture_event_recorded(hEvent, hStream);
    return rc;
}

GP_API CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream);
}

GP_API CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream ? hStream : CU_STREAM_PER_THREAD);
}

GP_API CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    if (flags & ~(unsigned)CU_EVENT_RECORD_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    return event_record(hEvent, hStream);
}

GP_API CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    if (flags & ~(unsigned)CU_EVENT_RECORD_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    return event_record(hEvent, hStream ? hStream : CU_STREAM_PER_THREAD);
}

static CUresult event_op(CUevent h, unsigned op)
{
    GP_READY_OR_RETURN();
    gp_revent *e;
    CUresult rc = event_arg(h, &e);
    return rc ? rc : gp_mirror_synced(call_ctx_id(op, e->ctx->id, e->id), e->ctx->id, 0, GP_SYNC_SOME);
}

GP_API CUresult cuEventQuery(CUevent hEvent)
{
    return event_op(hEvent, GP_OP_EVENT_QUERY);
}

GP_API CUresult cuEventSynchronize(CUevent hEvent)
{
    return event_op(hEvent, GP_OP_EVENT_SYNC);
}

static CUresult elapsed(float *ms, CUevent hStart, CUevent hEnd)
{
    GP_READY_OR_RETURN();
    if (ms == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_revent *a, *b;
    CUresult rc = event_arg(hStart, &a);
    if (rc || (rc = event_arg(hEnd, &b)))
        return rc;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, a->ctx->id);
    gp_w_u64(w, a->id);
    gp_w_u64(w, b->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_EVENT_ELAPSED, &r);
    float v = gp_r_f32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_EVENT_ELAPSED);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *ms = v;
    return rc;
}

GP_API CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    return elapsed(pMilliseconds, hStart, hEnd);
}

GP_API CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    return elapsed(pMilliseconds, hStart, hEnd);
}

/* ---- module images -------------------------------------------------------------------------------- */

static uint64_t rd(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#define FATBIN_MAGIC 0xBA55ED50u
#define FATBIN_WRAP  0x466243B1u
#define GP_IMAGE_MAX (1ull << 31) /* sanity bound on a length read from a header */

static size_t elf_size(const uint8_t *p)
{
    bool is64 = p[4] == 2;
    if (!is64 && p[4] != 1)
        return 0;
    uint64_t shoff = is64 ? rd(p + 0x28, 8) : rd(p + 0x20, 4);
    uint64_t phoff = is64 ? rd(p + 0x20, 8) : rd(p + 0x1C, 4);
    uint64_t phentsize = rd(p + (is64 ? 0x36 : 0x2A), 2), phnum = rd(p + (is64 ? 0x38 : 0x2C), 2);
    uint64_t shentsize = rd(p + (is64 ? 0x3A : 0x2E), 2), shnum = rd(p + (is64 ? 0x3C : 0x30), 2);
    uint64_t end = is64 ? 64 : 52;
    if (shoff > GP_IMAGE_MAX || phoff > GP_IMAGE_MAX)
        return 0;
    if (shoff + shnum * shentsize > end)
        end = shoff + shnum * shentsize;
    if (phoff + phnum * phentsize > end)
        end = phoff + phnum * phentsize;
    for (uint64_t i = 0; shoff && i < shnum && shentsize >= (is64 ? 0x28u : 0x18u); i++) {
        const uint8_t *sh = p + shoff + i * shentsize;
        uint32_t type = (uint32_t)rd(sh + 4, 4);
        uint64_t off = is64 ? rd(sh + 0x18, 8) : rd(sh + 0x10, 4);
        uint64_t size = is64 ? rd(sh + 0x20, 8) : rd(sh + 0x14, 4);
        if (type != 8 /* SHT_NOBITS */ && off <= GP_IMAGE_MAX && size <= GP_IMAGE_MAX && off + size > end)
            end = off + size;
    }
    return end > GP_IMAGE_MAX ? 0 : (size_t)end;
}

size_t gp_image_size(const void *image)
{
    const uint8_t *p = image;
    if (p == NULL)
        return 0;
    if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F')
        return elf_size(p);
    uint32_t magic = (uint32_t)rd(p, 4);
    if (magic == FATBIN_MAGIC) {
        uint64_t hdr = rd(p + 6, 2), fat = rd(p + 8, 8);
        return (hdr + fat > GP_IMAGE_MAX) ? 0 : (size_t)(hdr + fat);
    }
    return strlen((const char *)p) + 1; /* PTX (or anything else: text up to its NUL) */
}

/* The bytes to send: a fatbin wrapper (as compilers emit: magic, version, pointer to the fatbin) is
 * unwrapped. */
static const void *image_bytes(const void *image, size_t *len)
{
    const uint8_t *p = image;
    if ((uint32_t)rd(p, 4) == FATBIN_WRAP) {
        const void *inner;
        memcpy(&inner, p + 8, sizeof inner);
        if (inner == NULL)
            return NULL;
        image = inner;
    }
    *len = gp_image_size(image);
    return *len ? image : NULL;
}

/* ---- modules -------------------------------------------------------------------------------------- */

static CUresult module_load(CUmodule *module, const void *image)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (module == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    size_t len = 0;
    const void *bytes = image_bytes(image, &len);
    if (bytes == NULL || len > GP_WIRE_MAX_PAYLOAD - 256)
        return CUDA_ERROR_INVALID_IMAGE;
    uint8_t sha[32];
    unsigned shalen = 0;
    if (!EVP_Digest(bytes, len, sha, &shalen, EVP_sha256(), NULL) || shalen != 32)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_rmodule *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->id = gp_client_next_id();
    m->ctx = c;

    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_blob(w, sha, sizeof sha);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MODULE_HAVE, &r);
    uint32_t have = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MODULE_HAVE);
    if (rc == CUDA_SUCCESS) {
        w = gp_rpc_begin_again();
        gp_w_u64(w, c->id);
        gp_w_u64(w, m->id);
        gp_w_blob(w, sha, sizeof sha);
        gp_w_blob(w, bytes, have ? 0 : len);
        rc = gp_rpc_call(GP_OP_MODULE_LOAD, &r);
    }
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(m, GP_R_MODULE) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(m);
        return rc;
    }
    *module = (CUmodule)m;
    return CUDA_SUCCESS;
}

GP_API CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    return module_load(module, image);
}

GP_API CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin)
{
    return module_load(module, fatCubin);
}

GP_API CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions,
                                   CUjit_option *options, void **optionValues)
{
    GP_READY_OR_RETURN();
    if (numOptions > 0 && (options == NULL || optionValues == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = module_load(module, image);
    /* JIT options tune compilation on the worker, which does not see them; report empty logs. */
    for (unsigned i = 0; i < numOptions; i++) {
        if ((options[i] == CU_JIT_INFO_LOG_BUFFER || options[i] == CU_JIT_ERROR_LOG_BUFFER) &&
            optionValues[i])
            *(char *)optionValues[i] = '\0';
        if (options[i] == CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES ||
            options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
            optionValues[i] = (void *)(uintptr_t)0;
        if (options[i] == CU_JIT_WALL_TIME) {
            float z = 0.0f;
            memcpy(&optionValues[i], &z, sizeof z);
        }
    }
    return rc;
}

static CUresult module_arg(CUmodule h, gp_rmodule **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_MODULE)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rmodule *m = (gp_rmodule *)h;
    if (!atomic_load(&m->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = m;
    return CUDA_SUCCESS;
}

GP_API CUresult cuModuleUnload(CUmodule hmod)
{
    gp_rmodule *m;
    CUresult rc = module_arg(hmod, &m);
    if (rc)
        return rc;
    gp_reg_del(m);
    for (gp_rfunc *f = m->funcs; f; f = f->next)
        gp_reg_del(f);
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    rc = gp_rpc_async(GP_OP_MODULE_UNLOAD);
    gp_rpc_end();
    gp_dmem_del_owner(m);
    while (m->funcs) {
        gp_rfunc *f = m->funcs;
        m->funcs = f->next;
        free(f->offset);
        free(f);
    }
    free(m);
    return rc == CUDA_ERROR_DEVICE_UNAVAILABLE ? rc : CUDA_SUCCESS;
}

GP_API CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    gp_rmodule *m;
    CUresult rc = module_arg(hmod, &m);
    if (rc)
        return rc;
    if (hfunc == NULL || name == NULL || strlen(name) >= GP_WIRE_MAX_STR)
        return CUDA_ERROR_INVALID_VALUE;
    gp_reg_lock();
    gp_rfunc *f = m->funcs;
    while (f && strcmp(f->name, name) != 0)
        f = f->next;
    gp_reg_unlock();
    if (f) {
        *hfunc = (CUfunction)f;
        return CUDA_SUCCESS;
    }
    size_t nlen = strlen(name);
    f = calloc(1, sizeof *f + nlen + 1);
    if (f == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memcpy(f->name, name, nlen + 1);
    f->id = gp_client_next_id();
    f->mod = m;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    gp_w_u64(w, f->id);
    gp_w_str(w, name);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MODULE_FUNC, &r);
    if (rc == CUDA_SUCCESS) {
        uint32_t n = gp_r_u32(&r);
        if (!r.ok || n > GP_WIRE_MAX_PARAMS || (size_t)n * 8 > r.left) {
            rc = gp_rpc_malformed(GP_OP_MODULE_FUNC);
        } else {
            f->offset = calloc(2 * (size_t)n + 1, sizeof *f->offset);
            if (f->offset == NULL) {
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            } else {
                f->size = f->offset + n;
                f->nparams = n;
                for (uint32_t i = 0; i < n; i++) {
                    f->offset[i] = gp_r_u32(&r);
                    f->size[i] = gp_r_u32(&r);
                    uint64_t end = (uint64_t)f->offset[i] + f->size[i];
                    if (end > 65536)
                        r.ok = false;
                    else if (end > f->argsize)
                        f->argsize = (uint32_t)end;
                }
                if (!r.ok)
                    rc = gp_rpc_malformed(GP_OP_MODULE_FUNC);
            }
        }
    }
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(f, GP_R_FUNC) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(f->offset);
        free(f);
        return rc;
    }
    gp_reg_lock();
    f->next = m->funcs;
    m->funcs = f;
    gp_reg_unlock();
    *hfunc = (CUfunction)f;
    return CUDA_SUCCESS;
}

GP_API CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod, const char *name)
{
    gp_rmodule *m;
    CUresult rc = module_arg(hmod, &m);
    if (rc)
        return rc;
    if (name == NULL || strlen(name) >= GP_WIRE_MAX_STR)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    gp_w_str(w, name);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MODULE_GLOBAL, &r);
    uint64_t p = gp_r_u64(&r), size = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MODULE_GLOBAL);
    gp_rpc_end();
    if (rc)
        return rc;
    if (!gp_dmem_find(p, NULL, NULL))
        gp_dmem_add(p, size, m, m->ctx);
    if (dptr)
        *dptr = p;
    if (bytes)
        *bytes = (size_t)size;
    return CUDA_SUCCESS;
}

static CUresult func_arg(CUfunction h, gp_rfunc **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_FUNC)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rfunc *f = (gp_rfunc *)h;
    if (!atomic_load(&f->mod->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = f;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
{
    gp_rfunc *f;
    CUresult rc = func_arg(hfunc, &f);
    if (rc)
        return rc;
    if (pi == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, f->mod->ctx->id);
    gp_w_u64(w, f->id);
    gp_w_u32(w, (uint32_t)attrib);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_FUNC_ATTR, &r);
    int32_t v = (int32_t)gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_FUNC_ATTR);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *pi = v;
    return rc;
}

GP_API CUresult cuFuncGetName(const char **name, CUfunction hfunc)
{
    gp_rfunc *f;
    CUresult rc = func_arg(hfunc, &f);
    if (rc)
        return rc;
    if (name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *name = f->name;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset, size_t *paramSize)
{
    gp_rfunc *f;
    CUresult rc = func_arg(func, &f);
    if (rc)
        return rc;
    if (paramIndex >= f->nparams)
        return CUDA_ERROR_INVALID_VALUE;
    if (paramOffset)
        *paramOffset = f->offset[paramIndex];
    if (paramSize)
        *paramSize = f->size[paramIndex];
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetModule(CUmodule *hmod, CUfunction hfunc)
{
    gp_rfunc *f;
    CUresult rc = func_arg(hfunc, &f);
    if (rc)
        return rc;
    if (hmod == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *hmod = (CUmodule)f->mod;
    return CUDA_SUCCESS;
}

/* ---- launches ------------------------------------------------------------------------------------- */

/* Packs the arguments at their offsets, from kernelParams or an `extra` buffer. */
static CUresult pack_args(const gp_rfunc *f, void **kernelParams, void **extra, uint8_t *dst)
{
    if (kernelParams && extra)
        return CUDA_ERROR_INVALID_VALUE;
    if (f->nparams == 0)
        return CUDA_SUCCESS;
    if (kernelParams) {
        for (uint32_t i = 0; i < f->nparams; i++) {
            if (kernelParams[i] == NULL)
                return CUDA_ERROR_INVALID_VALUE;
            memcpy(dst + f->offset[i], kernelParams[i], f->size[i]);
        }
        return CUDA_SUCCESS;
    }
    if (extra == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const void *buf = NULL;
    size_t bufsize = 0;
    bool have_size = false;
    for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
        if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
            buf = extra[i + 1];
        } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
            if (extra[i + 1] == NULL)
                return CUDA_ERROR_INVALID_VALUE;
            bufsize = *(size_t *)extra[i + 1];
            have_size = true;
        } else {
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    if (buf == NULL || !have_size || bufsize < f->argsize)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy(dst, buf, f->argsize);
    return CUDA_SUCCESS;
}

CUresult gp_kernel_args(CUfunction hf, void **kernelParams, void **extra, gp_rfunc **fo, uint8_t **args)
{
    gp_rfunc *f;
    CUresult rc = func_arg(hf, &f);
    if (rc)
        return rc;
    uint8_t *a = calloc(1, f->argsize ? f->argsize : 1);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if ((rc = pack_args(f, kernelParams, extra, a))) {
        free(a);
        return rc;
    }
    *fo = f;
    *args = a;
    return CUDA_SUCCESS;
}

static CUresult launch(CUfunction hf, const unsigned grid[3], const unsigned block[3], unsigned shmem,
                       CUstream hs, void **kernelParams, void **extra, bool coop)
{
    gp_rctx *cur;
    CUresult rc = gp_ctx_cur(&cur);
    if (rc)
        return rc;
    gp_rfunc *f;
    if ((rc = func_arg(hf, &f)))
        return rc;
    uint64_t sid, cid;
    if ((rc = gp_stream_arg(hs, &sid, &cid)))
        return rc;
    if ((sid != 0 ? ((gp_rstream *)hs)->ctx : cur) != f->mod->ctx)
        return CUDA_ERROR_INVALID_HANDLE; /* the function was loaded in another context */
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || block[0] == 0 || block[1] == 0 || block[2] == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535)
        return CUDA_ERROR_INVALID_VALUE;
    if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 ||
        (uint64_t)block[0] * block[1] * block[2] > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    uint8_t stackbuf[512];
    uint8_t *args = f->argsize <= sizeof stackbuf ? stackbuf : malloc(f->argsize);
    if (args == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memset(args, 0, f->argsize);
    rc = pack_args(f, kernelParams, extra, args);
    if (rc == CUDA_SUCCESS) {
        gp_wbuf *w = gp_rpc_begin();
        if ((rc = gp_mirror_launch(cid, sid))) {
            gp_rpc_end();
            if (args != stackbuf)
                free(args);
            return rc;
        }
        gp_w_u64(w, cid);
        gp_w_u64(w, f->id);
        for (int i = 0; i < 3; i++)
            gp_w_u32(w, grid[i]);
        for (int i = 0; i < 3; i++)
            gp_w_u32(w, block[i]);
        gp_w_u32(w, shmem);
        gp_w_u64(w, sid);
        gp_w_blob(w, args, f->argsize);
        if (coop) { /* replied: a grid the device cannot hold at once is refused at the call */
            gp_rbuf r;
            rc = gp_rpc_call(GP_OP_LAUNCH_COOP, &r);
        } else {
            rc = gp_rpc_async(GP_OP_LAUNCH);
        }
        gp_rpc_end();
    }
    if (args != stackbuf)
        free(args);
    return rc;
}

GP_API CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                               unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                               unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                               void **kernelParams, void **extra)
{
    const unsigned g[3] = {gridDimX, gridDimY, gridDimZ}, b[3] = {blockDimX, blockDimY, blockDimZ};
    return launch(f, g, b, sharedMemBytes, hStream, kernelParams, extra, false);
}

GP_API CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                    unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                    unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                    void **kernelParams, void **extra)
{
    const unsigned g[3] = {gridDimX, gridDimY, gridDimZ}, b[3] = {blockDimX, blockDimY, blockDimZ};
    return launch(f, g, b, sharedMemBytes, hStream ? hStream : CU_STREAM_PER_THREAD, kernelParams, extra,
                  false);
}

GP_API CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                 void **extra)
{
    GP_READY_OR_RETURN();
    if (config == NULL || (config->numAttrs > 0 && config->attrs == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    if (config->numAttrs > 0) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "cuLaunchKernelEx with launch attributes is not supported over GPU-over-IP (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    const unsigned g[3] = {config->gridDimX, config->gridDimY, config->gridDimZ};
    const unsigned b[3] = {config->blockDimX, config->blockDimY, config->blockDimZ};
    return launch(f, g, b, config->sharedMemBytes, config->hStream, kernelParams, extra, false);
}

GP_API CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                      void **extra)
{
    if (config && config->hStream == NULL) {
        CUlaunchConfig c = *config;
        c.hStream = CU_STREAM_PER_THREAD;
        return cuLaunchKernelEx(&c, f, kernelParams, extra);
    }
    return cuLaunchKernelEx(config, f, kernelParams, extra);
}

static CUresult launch_coop(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shmem, CUstream hs, void **kernelParams)
{
    const unsigned g[3] = {gx, gy, gz}, b[3] = {bx, by, bz};
    return launch(f, g, b, shmem, hs, kernelParams, NULL, true);
}

GP_API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                          unsigned int gridDimZ, unsigned int blockDimX,
                                          unsigned int blockDimY, unsigned int blockDimZ,
                                          unsigned int sharedMemBytes, CUstream hStream, void **kernelParams)
{
    return launch_coop(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                       hStream, kernelParams);
}

GP_API CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                               unsigned int gridDimZ, unsigned int blockDimX,
                                               unsigned int blockDimY, unsigned int blockDimZ,
                                               unsigned int sharedMemBytes, CUstream hStream,
                                               void **kernelParams)
{
    return launch_coop(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                       hStream ? hStream : CU_STREAM_PER_THREAD, kernelParams);
}

/* ---- module and occupancy queries ----------------------------------------------------------------- */

GP_API CUresult cuModuleGetFunctionCount(unsigned int *count, CUmodule hmod)
{
    gp_rmodule *m;
    CUresult rc = module_arg(hmod, &m);
    if (rc)
        return rc;
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MODULE_FUNC_COUNT, &r);
    uint32_t n = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MODULE_FUNC_COUNT);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *count = n;
    return rc;
}

static CUresult occupancy(int *numBlocks, CUfunction func, int blockSize, size_t smem, unsigned flags)
{
    gp_rfunc *f;
    CUresult rc = func_arg(func, &f);
    if (rc)
        return rc;
    if (numBlocks == NULL || blockSize <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, f->mod->ctx->id);
    gp_w_u64(w, f->id);
    gp_w_u32(w, (uint32_t)blockSize);
    gp_w_u64(w, smem);
    gp_w_u32(w, flags);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_OCCUPANCY, &r);
    uint32_t n = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_OCCUPANCY);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *numBlocks = (int)n;
    return rc;
}

GP_API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func, int blockSize,
                                                            size_t dynamicSMemSize)
{
    return occupancy(numBlocks, func, blockSize, dynamicSMemSize, 0);
}

/* Not declared by gpupool/cuda.h. */
GP_API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *numBlocks, CUfunction func,
                                                                     int blockSize, size_t dynamicSMemSize,
                                                                     unsigned int flags);
GP_API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *numBlocks, CUfunction func,
                                                                     int blockSize, size_t dynamicSMemSize,
                                                                     unsigned int flags)
{
    return occupancy(numBlocks, func, blockSize, dynamicSMemSize, flags);
}

/* ---- host functions (run here, in stream order: client.c) ---------------------------------------- */

static CUresult host_func(CUstream h, CUhostFn fn, CUstreamCallback cb, void *data, unsigned flags)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if ((fn == NULL && cb == NULL) || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rgraph *g = gp_stream_capture(h);
    if (g)
        return gp_capture_host(g, cid, sid, h, fn, cb, data);
    return gp_client_host_func(cid, sid, h, fn, cb, data);
}

GP_API CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData)
{
    return host_func(hStream, fn, NULL, userData, 0);
}

GP_API CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void *userData)
{
    return host_func(hStream ? hStream : CU_STREAM_PER_THREAD, fn, NULL, userData, 0);
}

GP_API CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback, void *userData,
                                    unsigned int flags)
{
    return host_func(hStream, NULL, callback, userData, flags);
}

GP_API CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback, void *userData,
                                         unsigned int flags)
{
    return host_func(hStream ? hStream : CU_STREAM_PER_THREAD, NULL, callback, userData, flags);
}

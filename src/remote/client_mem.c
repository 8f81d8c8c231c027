/* client_mem.c - device and host memory, copies and memsets for the remote driver.
 *
 * Every device allocation this process made (cuMemAlloc, cuMemAllocPitch, module globals, cuMemAllocManaged,
 * stream-ordered allocations and cuMemMap mappings of client_pool.c) is kept in a sorted interval table,
 * together with the host memory the driver "pinned" (cuMemHostAlloc, cuMemHostRegister: plain local memory
 * here, unless mapped into the device with DEVICEMAP, when client_mirror.c keeps a copy of it in the worker,
 * as of managed memory). The table decides a unified copy's direction (cuMemcpy), and lets bad device ranges
 * be refused synchronously, as the driver does, before anything is sent. Host-to-host copies and memsets into
 * pinned host memory happen locally: every device-to-host copy has completed by the time its call returns, so
 * nothing queued can still write there.
 *
 * Device-to-device copies and memsets go out asynchronously (the driver does not wait for them either);
 * host-to-device copies are sent from the caller's buffer before the call returns, so the buffer may be
 * reused at once even for the Async forms; device-to-host copies always wait for the data.
 */
#include "remote/client.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the interval table --------------------------------------------------------------------------- */

/* MEM_MANAGED: managed memory, whose host copy is at the same address. MEM_MAPPED: the device pointer of
 * registered memory mapped with DEVICEMAP (peer: the registered memory; a MEM_REGISTERED span's peer is its
 * MEM_MAPPED one, or 0). The device-side kinds travel to the worker in copies and memsets. */
enum { MEM_DEVICE = 1, MEM_HOST = 2, MEM_REGISTERED = 3, MEM_MANAGED = 4, MEM_MAPPED = 5 };

static bool device_side(int kind)
{
    return kind == MEM_DEVICE || kind == MEM_MANAGED || kind == MEM_MAPPED;
}

enum { FROM_ALLOC, FROM_POOL, FROM_MAP }; /* where device memory came from */

typedef struct span {
    uint64_t base, size;
    const void *owner; /* device memory: the context (or module) it dies with; NULL: a mapping (cuMemUnmap) */
    gp_rctx *ctx;
    const void *pool; /* stream-ordered memory: the gp_rpool it came from (NULL once destroyed) */
    unsigned long long buffer_id;
    int kind, from;
    int dev; /* the device it lives on (a pool's or a physical allocation's may not be the context's) */
    unsigned flags;
    uint64_t peer;
} span;

static pthread_mutex_t g_mem_mu = PTHREAD_MUTEX_INITIALIZER;
static span *g_spans;
static size_t g_nspans, g_capspans;

/* Index of the first span with base > p. */
static size_t upper(uint64_t p)
{
    size_t lo = 0, hi = g_nspans;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g_spans[mid].base <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static atomic_ullong g_buffer_ids = 1;

/* Enters t (its base, size, owner, ctx, pool, kind, from, dev and flags) with a fresh buffer id. */
static int span_insert(span t)
{
    pthread_mutex_lock(&g_mem_mu);
    if (g_nspans == g_capspans) {
        size_t ncap = g_capspans ? g_capspans * 2 : 64;
        span *ns = realloc(g_spans, ncap * sizeof *ns);
        if (ns == NULL) {
            pthread_mutex_unlock(&g_mem_mu);
            return -1;
        }
        g_spans = ns;
        g_capspans = ncap;
    }
    size_t i = upper(t.base);
    memmove(&g_spans[i + 1], &g_spans[i], (g_nspans - i) * sizeof *g_spans);
    t.size = t.size ? t.size : 1;
    t.buffer_id = atomic_fetch_add(&g_buffer_ids, 1);
    g_spans[i] = t;
    g_nspans++;
    pthread_mutex_unlock(&g_mem_mu);
    return 0;
}

static int span_add(uint64_t base, uint64_t size, const void *owner, gp_rctx *ctx, int kind, unsigned flags,
                    uint64_t peer)
{
    return span_insert((span){.base = base,
                              .size = size,
                              .owner = owner,
                              .ctx = ctx,
                              .kind = kind,
                              .from = FROM_ALLOC,
                              .dev = ctx ? ctx->dev : 0,
                              .flags = flags,
                              .peer = peer});
}

/* The span holding [p, p+extent): 0 when none. */
static int span_find(uint64_t p, uint64_t extent, span *out)
{
    pthread_mutex_lock(&g_mem_mu);
    size_t i = upper(p);
    int kind = 0;
    if (i > 0) {
        span *s = &g_spans[i - 1];
        if (p - s->base < s->size && extent <= s->size - (p - s->base)) {
            kind = s->kind;
            if (out)
                *out = *s;
        }
    }
    pthread_mutex_unlock(&g_mem_mu);
    return kind;
}

/* Removes the span starting exactly at base whose kind is `kind`. */
static bool span_del(uint64_t base, int kind, span *out)
{
    pthread_mutex_lock(&g_mem_mu);
    size_t i = upper(base);
    bool found = i > 0 && g_spans[i - 1].base == base && g_spans[i - 1].kind == kind;
    if (found) {
        if (out)
            *out = g_spans[i - 1];
        memmove(&g_spans[i - 1], &g_spans[i], (g_nspans - i) * sizeof *g_spans);
        g_nspans--;
    }
    pthread_mutex_unlock(&g_mem_mu);
    return found;
}

void gp_dmem_add(uint64_t base, uint64_t size, const void *owner, gp_rctx *ctx)
{
    if (span_add(base, size, owner, ctx, MEM_DEVICE, 0, 0) < 0)
        gp_log(GP_LOG_WARN, GP_LOG_CLIENT, "out of memory tracking device allocations");
}

bool gp_dmem_del(uint64_t base)
{
    return span_del(base, MEM_DEVICE, NULL);
}

void gp_dmem_del_owner(const void *owner)
{
    gp_mirror_drop_ctx(owner); /* managed memory dies with its context (pinned memory stays host memory) */
    pthread_mutex_lock(&g_mem_mu);
    size_t k = 0;
    for (size_t i = 0; i < g_nspans; i++)
        if (!(device_side(g_spans[i].kind) && g_spans[i].owner == owner && owner != NULL))
            g_spans[k++] = g_spans[i];
    g_nspans = k;
    pthread_mutex_unlock(&g_mem_mu);
}

void gp_dmem_add_pooled(uint64_t base, uint64_t size, gp_rctx *ctx, int dev, const void *pool)
{
    if (span_insert((span){.base = base,
                           .size = size,
                           .owner = ctx,
                           .ctx = ctx,
                           .pool = pool,
                           .kind = MEM_DEVICE,
                           .from = FROM_POOL,
                           .dev = dev}) < 0)
        gp_log(GP_LOG_WARN, GP_LOG_CLIENT, "out of memory tracking device allocations");
}

void gp_dmem_add_mapped(uint64_t base, uint64_t size, gp_rctx *ctx, int dev)
{
    if (span_insert((span){
            .base = base, .size = size, .ctx = ctx, .kind = MEM_DEVICE, .from = FROM_MAP, .dev = dev}) < 0)
        gp_log(GP_LOG_WARN, GP_LOG_CLIENT, "out of memory tracking device mappings");
}

bool gp_dmem_del_unmapped(uint64_t base)
{
    pthread_mutex_lock(&g_mem_mu);
    size_t i = upper(base);
    bool found = i > 0 && g_spans[i - 1].base == base && g_spans[i - 1].kind == MEM_DEVICE &&
                 g_spans[i - 1].from != FROM_MAP;
    if (found) {
        memmove(&g_spans[i - 1], &g_spans[i], (g_nspans - i) * sizeof *g_spans);
        g_nspans--;
    }
    pthread_mutex_unlock(&g_mem_mu);
    return found;
}

void gp_dmem_del_mapped(uint64_t base, uint64_t size)
{
    pthread_mutex_lock(&g_mem_mu);
    size_t k = 0;
    for (size_t i = 0; i < g_nspans; i++) {
        const span *t = &g_spans[i];
        if (!(t->kind == MEM_DEVICE && t->from == FROM_MAP && t->base >= base && t->base - base < size))
            g_spans[k++] = g_spans[i];
    }
    g_nspans = k;
    pthread_mutex_unlock(&g_mem_mu);
}

void gp_dmem_forget_pool(const void *pool)
{
    pthread_mutex_lock(&g_mem_mu);
    for (size_t i = 0; i < g_nspans; i++)
        if (g_spans[i].pool == pool)
            g_spans[i].pool = NULL;
    pthread_mutex_unlock(&g_mem_mu);
}

bool gp_dmem_find(uint64_t p, uint64_t *base, uint64_t *size)
{
    span s;
    if (span_find(p, 1, &s) != MEM_DEVICE)
        return false;
    if (base)
        *base = s.base;
    if (size)
        *size = s.size;
    return true;
}

/* ---- device memory -------------------------------------------------------------------------------- */

GP_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, bytesize);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MEM_ALLOC, &r);
    uint64_t p = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MEM_ALLOC);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_dmem_add(p, bytesize, c, c);
    *dptr = p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                   unsigned int ElementSizeBytes)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (dptr == NULL || pPitch == NULL || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, WidthInBytes);
    gp_w_u64(w, Height);
    gp_w_u32(w, ElementSizeBytes);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MEM_ALLOC_PITCH, &r);
    uint64_t p = gp_r_u64(&r), pitch = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MEM_ALLOC_PITCH);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_dmem_add(p, pitch * Height, c, c);
    *dptr = p;
    *pPitch = pitch;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    span s;
    int kind = dptr ? span_find(dptr, 1, &s) : 0;
    if ((kind != MEM_DEVICE && kind != MEM_MANAGED) || s.base != dptr)
        return CUDA_ERROR_INVALID_VALUE;
    if (kind == MEM_MANAGED) {
        rc = gp_mirror_free(dptr);
        if (rc == CUDA_SUCCESS)
            span_del(dptr, MEM_MANAGED, NULL);
        return rc;
    }
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, dptr);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MEM_FREE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        gp_dmem_del(dptr);
    return rc;
}

/* The worker allocates; this process maps a copy at the same address (client_mirror.c). */
GP_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0 || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t p;
    if ((rc = gp_mirror_alloc(c, GP_MIRROR_MANAGED, bytesize, flags, NULL, &p)))
        return rc;
    if (span_add(p, bytesize, c, c, MEM_MANAGED, flags, 0) < 0) {
        gp_mirror_free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *dptr = p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_w_u64(gp_rpc_begin(), c->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MEM_INFO, &r);
    uint64_t f = gp_r_u64(&r), t = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_MEM_INFO);
    gp_rpc_end();
    if (rc)
        return rc;
    *free_bytes = (size_t)f;
    *total = (size_t)t;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    span s;
    if (span_find(dptr, 1, &s) == 0)
        return CUDA_ERROR_NOT_FOUND;
    if (pbase)
        *pbase = s.base;
    if (psize)
        *psize = s.size;
    return CUDA_SUCCESS;
}

/* ---- pointer attributes (answered from the table) ------------------------------------------------ */

static CUresult pointer_attr(void *data, CUpointer_attribute attribute, uint64_t ptr, const span *s)
{
    bool dev = s->kind == MEM_DEVICE || s->kind == MEM_MANAGED;
    uint64_t mapped;
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = (CUcontext)s->ctx; break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned *)data = dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        if (dev || s->kind == MEM_MAPPED)
            *(CUdeviceptr *)data = ptr;
        else if (gp_mirror_dev(ptr, &mapped))
            *(CUdeviceptr *)data = mapped;
        else
            return CUDA_ERROR_INVALID_VALUE; /* not mapped into the remote GPU (no DEVICEMAP) */
        break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (s->kind == MEM_DEVICE)
            return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)(s->kind == MEM_MAPPED ? s->peer + (ptr - s->base) : ptr);
        break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: *(unsigned *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = s->buffer_id; break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(unsigned *)data = s->kind == MEM_MANAGED; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = s->dev; break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: *(unsigned *)data = 0; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = s->base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = (size_t)s->size; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(unsigned *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: *(CUmemoryPool *)data = (CUmemoryPool)s->pool; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    GP_READY_OR_RETURN();
    if (data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    span s;
    if (span_find(ptr, 1, &s) == 0)
        return CUDA_ERROR_INVALID_VALUE;
    return pointer_attr(data, attribute, ptr, &s);
}

GP_API CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes,
                                       void **data, CUdeviceptr ptr)
{
    GP_READY_OR_RETURN();
    if (numAttributes == 0 || attributes == NULL || data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    span s;
    bool known = span_find(ptr, 1, &s) != 0;
    for (unsigned i = 0; i < numAttributes; i++) {
        if (data[i] == NULL)
            continue;
        if (!known || pointer_attr(data[i], attributes[i], ptr, &s) != CUDA_SUCCESS) {
            /* Unknown memory (or an attribute that does not apply) reads as zero, as the driver answers. */
            switch (attributes[i]) {
            case CU_POINTER_ATTRIBUTE_CONTEXT:
            case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
            case CU_POINTER_ATTRIBUTE_HOST_POINTER: *(void **)data[i] = NULL; break;
            case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
            case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
            case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data[i] = 0; break;
            case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data[i] = 0; break;
            case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data[i] = -2; break;
            default: *(unsigned *)data[i] = 0; break;
            }
        }
    }
    return CUDA_SUCCESS;
}

/* ---- host memory (local) -------------------------------------------------------------------------- */

static CUresult host_alloc(void **pp, size_t bytesize, unsigned int flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pp == NULL || bytesize == 0 ||
        (flags &
         ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED)))
        return CUDA_ERROR_INVALID_VALUE;
    if (flags & CU_MEMHOSTALLOC_DEVICEMAP) { /* mirrored at the worker's device address */
        uint64_t d;
        if ((rc = gp_mirror_alloc(c, GP_MIRROR_PINNED, bytesize, flags, NULL, &d)))
            return rc;
        if (span_add(d, bytesize, c, c, MEM_HOST, flags, 0) < 0) {
            gp_mirror_free(d);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        *pp = (void *)(uintptr_t)d;
        return CUDA_SUCCESS;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = NULL;
    if (posix_memalign(&p, page, bytesize) != 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (span_add((uint64_t)(uintptr_t)p, bytesize, c, c, MEM_HOST, flags, 0) < 0) {
        free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pp = p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    return host_alloc(pp, bytesize, 0);
}

GP_API CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    return host_alloc(pp, bytesize, Flags);
}

GP_API CUresult cuMemFreeHost(void *p)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    span s;
    if (p == NULL || !span_del((uint64_t)(uintptr_t)p, MEM_HOST, &s))
        return CUDA_ERROR_INVALID_VALUE;
    if (s.flags & CU_MEMHOSTALLOC_DEVICEMAP)
        return gp_mirror_free(s.base);
    free(p);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pdptr == NULL || Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int kind = span_find((uint64_t)(uintptr_t)p, 1, NULL);
    if (kind != MEM_HOST && kind != MEM_REGISTERED)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t d;
    if (gp_mirror_dev((uint64_t)(uintptr_t)p, &d)) {
        *pdptr = d;
        return CUDA_SUCCESS;
    }
    gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                "cuMemHostGetDevicePointer: pinned memory allocated or registered without DEVICEMAP is not "
                "mapped into the GPU on the worker's machine (returning CUDA_ERROR_NOT_SUPPORTED)");
    return CUDA_ERROR_NOT_SUPPORTED;
}

GP_API CUresult cuMemHostGetFlags(unsigned int *pFlags, void *p)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pFlags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    span s;
    if (span_find((uint64_t)(uintptr_t)p, 1, &s) != MEM_HOST)
        return CUDA_ERROR_INVALID_VALUE;
    *pFlags = s.flags;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    unsigned valid = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                     CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY;
    if (p == NULL || bytesize == 0 || (Flags & ~valid))
        return CUDA_ERROR_INVALID_VALUE;
    if (Flags & CU_MEMHOSTREGISTER_IOMEMORY) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "cuMemHostRegister with CU_MEMHOSTREGISTER_IOMEMORY is not supported over GPU-over-IP "
                    "(returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    uint64_t b = (uint64_t)(uintptr_t)p;
    if (span_find(b, 1, NULL) || span_find(b + bytesize - 1, 1, NULL))
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    if (!(Flags & CU_MEMHOSTREGISTER_DEVICEMAP))
        return span_add(b, bytesize, c, c, MEM_REGISTERED, Flags, 0) < 0 ? CUDA_ERROR_OUT_OF_MEMORY
                                                                         : CUDA_SUCCESS;
    /* Mapped: the device reaches a copy in the worker, at a device address of its own
     * (CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM is 0 over GPU-over-IP). */
    uint64_t d;
    if ((rc = gp_mirror_alloc(c, GP_MIRROR_REGISTERED, bytesize, 0, p, &d)))
        return rc;
    if (span_find(d, 1, NULL) || span_find(d + bytesize - 1, 1, NULL)) {
        gp_log(
            GP_LOG_WARN, GP_LOG_CLIENT,
            "cuMemHostRegister(DEVICEMAP) of %zu bytes: the worker's device address 0x%llx overlaps memory "
            "of this process (returning CUDA_ERROR_OUT_OF_MEMORY)",
            bytesize, (unsigned long long)d);
        gp_mirror_free(b);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (span_add(b, bytesize, c, c, MEM_REGISTERED, Flags, d) < 0 ||
        span_add(d, bytesize, c, c, MEM_MAPPED, Flags, b) < 0) {
        span_del(b, MEM_REGISTERED, NULL);
        gp_mirror_free(b);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostUnregister(void *p)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    span s;
    if (!span_del((uint64_t)(uintptr_t)p, MEM_REGISTERED, &s))
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    if (s.peer) {
        span_del(s.peer, MEM_MAPPED, NULL);
        gp_mirror_free(s.base);
    }
    return CUDA_SUCCESS;
}

/* ---- copies --------------------------------------------------------------------------------------- */

enum { SIDE_HOST, SIDE_DEVICE, SIDE_ARRAY };

/* Where a copy's side lies: device memory (must hold `extent` bytes), or host memory of any kind. */
static CUresult side_of(uint64_t p, size_t extent, bool must_be_device, int *side)
{
    span s;
    int kind = span_find(p, 1, &s);
    if (device_side(kind)) {
        if (extent > s.size - (p - s.base))
            return CUDA_ERROR_INVALID_VALUE;
        *side = SIDE_DEVICE;
        return CUDA_SUCCESS;
    }
    if (p == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (must_be_device && kind == 0)
        return CUDA_ERROR_INVALID_VALUE;
    *side = SIDE_HOST;
    return CUDA_SUCCESS;
}

/* A small asynchronous host-to-device copy travels in the send queue (the data copied once, there). */
static CUresult htod_queued(uint64_t ctx, uint64_t stream, uint64_t dst, const void *src, size_t n)
{
    gp_wbuf *w = gp_rpc_begin();
    CUresult rc = gp_mirror_before(ctx, stream, 0, 0, dst, n);
    if (rc) {
        gp_rpc_end();
        return rc;
    }
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, dst);
    gp_w_u32(w, 1);
    gp_w_blob(w, src, n);
    rc = gp_rpc_async(GP_OP_HTOD);
    gp_rpc_end();
    return rc;
}

/* A copy on a capturing stream with a side in host memory becomes a staged node of the capture's graph. */
static CUresult capture_linear(gp_rgraph *g, uint64_t cid, uint64_t sid, uint64_t dst, uint64_t src, size_t n,
                               int dside, int sside)
{
    if (dside == SIDE_HOST && sside == SIDE_HOST) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "a host-to-host copy on a capturing stream is not supported over GPU-over-IP (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    gp_copy_side dev = {.kind = 1, .pitch = n, .height = 1}, host = {.kind = 0};
    dev.h = dside == SIDE_HOST ? src : dst;
    uint64_t hp = dside == SIDE_HOST ? dst : src;
    gp_hostbox box = {(uint8_t *)(uintptr_t)hp, n, n, n, 1, 1, sside == SIDE_HOST};
    return sside == SIDE_HOST ? gp_capture_copy(g, cid, sid, &dev, &host, n, 1, 1, &box)
                              : gp_capture_copy(g, cid, sid, &host, &dev, n, 1, 1, &box);
}

static CUresult copy(uint64_t dst, uint64_t src, size_t n, int dside, int sside, CUstream h, bool sync)
{
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (n == 0)
        return CUDA_SUCCESS;
    gp_rgraph *g = (dside == SIDE_HOST || sside == SIDE_HOST) ? gp_stream_capture(h) : NULL;
    if (g)
        return capture_linear(g, cid, sid, dst, src, n, dside, sside);
    if (dside == SIDE_HOST && sside == SIDE_HOST) {
        memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
        return CUDA_SUCCESS;
    }
    if (dside == SIDE_DEVICE && sside == SIDE_DEVICE) {
        gp_wbuf *w = gp_rpc_begin();
        if ((rc = gp_mirror_before(cid, sid, src, n, dst, n))) {
            gp_rpc_end();
            return rc;
        }
        gp_w_u64(w, cid);
        gp_w_u64(w, sid);
        gp_w_u64(w, dst);
        gp_w_u64(w, src);
        gp_w_u64(w, n);
        rc = gp_rpc_async(GP_OP_DTOD);
        gp_rpc_end();
        return rc;
    }
    if (dside == SIDE_DEVICE) {
        if (!sync && n <= 16384)
            return htod_queued(cid, sid, dst, (const void *)(uintptr_t)src, n);
        gp_rpc_begin();
        rc = gp_mirror_before(cid, sid, 0, 0, dst, n);
        if (rc == CUDA_SUCCESS)
            rc = gp_rpc_htod(cid, sid, dst, (const void *)(uintptr_t)src, n, !sync);
        if (rc == CUDA_SUCCESS && sync)
            rc = gp_mirror_synced_locked(cid, sid, GP_SYNC_STREAM);
        gp_rpc_end();
        return rc;
    }
    gp_rpc_begin();
    rc = gp_mirror_before(cid, sid, src, n, 0, 0);
    if (rc == CUDA_SUCCESS)
        rc = gp_rpc_dtoh(cid, sid, (void *)(uintptr_t)dst, src, n);
    if (rc == CUDA_SUCCESS && sync)
        rc = gp_mirror_synced_locked(cid, sid, GP_SYNC_STREAM);
    gp_rpc_end();
    return rc;
}

#define HP(p) ((uint64_t)(uintptr_t)(p))

static CUresult htod(CUdeviceptr dst, const void *src, size_t n, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    int d, s;
    CUresult rc;
    if (n && ((rc = side_of(dst, n, true, &d)) || (rc = side_of(HP(src), n, false, &s))))
        return rc;
    return copy(dst, HP(src), n, n ? d : SIDE_DEVICE, SIDE_HOST, h, sync);
}

static CUresult dtoh(void *dst, CUdeviceptr src, size_t n, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    int d, s;
    CUresult rc;
    if (n && ((rc = side_of(src, n, true, &s)) || (rc = side_of(HP(dst), n, false, &d))))
        return rc;
    return copy(HP(dst), src, n, SIDE_HOST, n ? s : SIDE_DEVICE, h, sync);
}

static CUresult dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    int d, s;
    CUresult rc;
    if (n && ((rc = side_of(dst, n, true, &d)) || (rc = side_of(src, n, true, &s))))
        return rc;
    return copy(dst, src, n, n ? d : SIDE_DEVICE, n ? s : SIDE_DEVICE, h, sync);
}

static CUresult unified(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    int d = SIDE_HOST, s = SIDE_HOST;
    CUresult rc;
    if (n && ((rc = side_of(dst, n, false, &d)) || (rc = side_of(src, n, false, &s))))
        return rc;
    return copy(dst, src, n, d, s, h, sync);
}

/* The per-thread default stream is served by the legacy one (gp_stream_arg). */
#define PTDS CU_STREAM_PER_THREAD

GP_API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return unified(dst, src, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return unified(dst, src, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return unified(dst, src, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return unified(dst, src, ByteCount, hStream ? hStream : PTDS, false);
}
GP_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return htod(dstDevice, srcHost, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return htod(dstDevice, srcHost, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtoh(dstHost, srcDevice, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpyDtoH_v2_ptds(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtoh(dstHost, srcDevice, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtod(dstDevice, srcDevice, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtod(dstDevice, srcDevice, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                     CUstream hStream)
{
    return htod(dstDevice, srcHost, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                          CUstream hStream)
{
    return htod(dstDevice, srcHost, ByteCount, hStream ? hStream : PTDS, false);
}
GP_API CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
{
    return dtoh(dstHost, srcDevice, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return dtoh(dstHost, srcDevice, ByteCount, hStream ? hStream : PTDS, false);
}
GP_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                     CUstream hStream)
{
    return dtod(dstDevice, srcDevice, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return dtod(dstDevice, srcDevice, ByteCount, hStream ? hStream : PTDS, false);
}

/* ---- memsets -------------------------------------------------------------------------------------- */

static CUresult memset_common(CUdeviceptr dst, size_t pitch, uint32_t value, unsigned elem, size_t width,
                              size_t height, CUstream h)
{
    GP_READY_OR_RETURN();
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (dst % elem != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (width == 0 || height == 0)
        return CUDA_SUCCESS;
    if (height > 1 && (pitch < width * elem || pitch % elem != 0))
        return CUDA_ERROR_INVALID_VALUE;
    if (height == 1)
        pitch = width * elem;
    size_t extent = (height - 1) * pitch + width * elem;
    span s;
    int kind = span_find(dst, extent, &s);
    if (kind == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!device_side(kind) && gp_stream_capture(h)) {
        gp_log_once(
            GP_LOG_WARN, GP_LOG_CLIENT,
            "a memset of host memory on a capturing stream is not supported over GPU-over-IP (returning "
            "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (!device_side(kind)) { /* pinned host memory: nothing queued can write it (see the top) */
        for (size_t y = 0; y < height; y++) {
            uint8_t *row = (uint8_t *)(uintptr_t)(dst + y * pitch);
            for (size_t x = 0; x < width; x++)
                memcpy(row + x * elem, &value, elem); /* little-endian: the low bytes */
        }
        return CUDA_SUCCESS;
    }
    gp_wbuf *w = gp_rpc_begin();
    if ((rc = gp_mirror_before(cid, sid, 0, 0, dst, extent))) {
        gp_rpc_end();
        return rc;
    }
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_w_u64(w, dst);
    gp_w_u32(w, value);
    gp_w_u32(w, elem);
    gp_w_u64(w, pitch);
    gp_w_u64(w, width);
    gp_w_u64(w, height);
    rc = gp_rpc_async(GP_OP_MEMSET);
    gp_rpc_end();
    return rc;
}

#define MEMSET_1D(name, type, elem, strm)                         \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N) \
    {                                                             \
        return memset_common(dstDevice, 0, v, elem, N, 1, strm);  \
    }
#define MEMSET_1D_ASYNC(name, type, elem, pt)                                                 \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N, CUstream hStream)           \
    {                                                                                         \
        return memset_common(dstDevice, 0, v, elem, N, 1, (pt && !hStream) ? PTDS : hStream); \
    }
#define MEMSET_2D(name, type, elem, strm)                                                             \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height) \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height, strm);                      \
    }
#define MEMSET_2D_ASYNC(name, type, elem, pt)                                                         \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height, \
                         CUstream hStream)                                                            \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height,                             \
                             (pt && !hStream) ? PTDS : hStream);                                      \
    }

MEMSET_1D(cuMemsetD8_v2, unsigned char, 1, NULL)
MEMSET_1D(cuMemsetD8_v2_ptds, unsigned char, 1, PTDS)
MEMSET_1D(cuMemsetD16_v2, unsigned short, 2, NULL)
MEMSET_1D(cuMemsetD16_v2_ptds, unsigned short, 2, PTDS)
MEMSET_1D(cuMemsetD32_v2, unsigned int, 4, NULL)
MEMSET_1D(cuMemsetD32_v2_ptds, unsigned int, 4, PTDS)
MEMSET_1D_ASYNC(cuMemsetD8Async, unsigned char, 1, false)
MEMSET_1D_ASYNC(cuMemsetD8Async_ptsz, unsigned char, 1, true)
MEMSET_1D_ASYNC(cuMemsetD16Async, unsigned short, 2, false)
MEMSET_1D_ASYNC(cuMemsetD16Async_ptsz, unsigned short, 2, true)
MEMSET_1D_ASYNC(cuMemsetD32Async, unsigned int, 4, false)
MEMSET_1D_ASYNC(cuMemsetD32Async_ptsz, unsigned int, 4, true)
MEMSET_2D(cuMemsetD2D8_v2, unsigned char, 1, NULL)
MEMSET_2D(cuMemsetD2D8_v2_ptds, unsigned char, 1, PTDS)
MEMSET_2D(cuMemsetD2D16_v2, unsigned short, 2, NULL)
MEMSET_2D(cuMemsetD2D16_v2_ptds, unsigned short, 2, PTDS)
MEMSET_2D(cuMemsetD2D32_v2, unsigned int, 4, NULL)
MEMSET_2D(cuMemsetD2D32_v2_ptds, unsigned int, 4, PTDS)
MEMSET_2D_ASYNC(cuMemsetD2D8Async, unsigned char, 1, false)
MEMSET_2D_ASYNC(cuMemsetD2D8Async_ptsz, unsigned char, 1, true)
MEMSET_2D_ASYNC(cuMemsetD2D16Async, unsigned short, 2, false)
MEMSET_2D_ASYNC(cuMemsetD2D16Async_ptsz, unsigned short, 2, true)
MEMSET_2D_ASYNC(cuMemsetD2D32Async, unsigned int, 4, false)
MEMSET_2D_ASYNC(cuMemsetD2D32Async_ptsz, unsigned int, 4, true)

/* ---- peer copies (one worker: device pointers are unified there) ----------------------------------- */

static CUresult peer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, CUstream h,
                     bool sync)
{
    GP_READY_OR_RETURN();
    if (gp_reg_kind(dctx) != GP_R_CTX || gp_reg_kind(sctx) != GP_R_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!atomic_load(&((gp_rctx *)dctx)->active) || !atomic_load(&((gp_rctx *)sctx)->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    return dtod(dst, src, n, h, sync);
}

GP_API CUresult cuMemcpyPeer(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                             CUcontext srcContext, size_t ByteCount)
{
    return peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpyPeer_ptds(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                  CUcontext srcContext, size_t ByteCount)
{
    return peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                  CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    return peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                       CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    return peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream ? hStream : PTDS, false);
}

/* ---- 2D and 3D copies ----------------------------------------------------------------------------- */

/* One side of a box copy: where its first byte is, and its row pitch and slice stride. */
typedef struct box_side {
    int side;
    uint64_t p; /* an array: the packed offset of the first byte */
    size_t pitch, slice;
    gp_rarray *arr;
    size_t x, y, z;
} box_side;

/* As the driver resolves a side (pitch 0: rows packed; height 0: slices packed), with its range checked. */
static CUresult box_resolve(CUmemorytype type, const void *host, CUdeviceptr dev, CUarray array, size_t x,
                            size_t y, size_t z, size_t pitch, size_t height, size_t width, size_t rows,
                            size_t depth, box_side *out)
{
    if (type == CU_MEMORYTYPE_ARRAY) {
        gp_rarray *a;
        CUresult rc = gp_array_arg(array, &a);
        if (rc)
            return rc == CUDA_ERROR_INVALID_HANDLE ? CUDA_ERROR_INVALID_VALUE : rc;
        /* whole elements, within the array */
        if (x % a->elem != 0 || width % a->elem != 0 || x > a->row || width > a->row - x || y > a->rows ||
            rows > a->rows - y || z > a->slices || depth > a->slices - z)
            return CUDA_ERROR_INVALID_VALUE;
        out->side = SIDE_ARRAY;
        out->arr = a;
        out->x = x;
        out->y = y;
        out->z = z;
        out->pitch = a->row;
        out->slice = a->row * a->rows;
        out->p = z * out->slice + y * a->row + x;
        return CUDA_SUCCESS;
    }
    if (type != CU_MEMORYTYPE_HOST && type != CU_MEMORYTYPE_DEVICE && type != CU_MEMORYTYPE_UNIFIED)
        return CUDA_ERROR_INVALID_VALUE;
    pitch = pitch ? pitch : width + x;
    height = height ? height : rows + y;
    if (pitch < width + x || height < rows + y)
        return CUDA_ERROR_INVALID_VALUE;
    out->pitch = pitch;
    out->slice = pitch * height;
    size_t first = z * out->slice + y * pitch + x;
    size_t extent = (depth - 1) * out->slice + (rows - 1) * pitch + width;
    if (type == CU_MEMORYTYPE_HOST) {
        if (host == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        out->side = SIDE_HOST;
        out->p = HP(host) + first;
        return CUDA_SUCCESS;
    }
    uint64_t base = type == CU_MEMORYTYPE_UNIFIED && host ? HP(host) : dev;
    out->p = base + first;
    return side_of(out->p, extent, type == CU_MEMORYTYPE_DEVICE, &out->side);
}

/* A resolved side as the wire describes it (a host side goes into *box, when given). */
static void side_wire(const box_side *b, gp_copy_side *out, gp_hostbox *box, bool src, size_t width,
                      size_t rows, size_t depth)
{
    memset(out, 0, sizeof *out);
    switch (b->side) {
    case SIDE_ARRAY:
        out->kind = 2;
        out->h = b->arr->id;
        out->x = b->x;
        out->y = b->y;
        out->z = b->z;
        break;
    case SIDE_DEVICE:
        out->kind = 1;
        out->h = b->p;
        out->pitch = b->pitch;
        out->height = b->slice / b->pitch;
        break;
    default:
        out->kind = 0;
        if (box)
            *box = (gp_hostbox){(uint8_t *)(uintptr_t)b->p, b->pitch, b->slice, width, rows, depth, src};
        break;
    }
}

void gp_w_copy(gp_wbuf *w, const gp_copy_side *dst, const gp_copy_side *src, size_t width, size_t rows,
               size_t depth)
{
    const gp_copy_side *sides[2] = {dst, src};
    for (int i = 0; i < 2; i++) {
        gp_w_u32(w, sides[i]->kind);
        gp_w_u64(w, sides[i]->h);
        gp_w_u64(w, sides[i]->x);
        gp_w_u64(w, sides[i]->y);
        gp_w_u64(w, sides[i]->z);
        gp_w_u64(w, sides[i]->pitch);
        gp_w_u64(w, sides[i]->height);
    }
    gp_w_u64(w, width);
    gp_w_u64(w, rows);
    gp_w_u64(w, depth);
}

void gp_hostbox_move(const gp_hostbox *b, uint8_t *packed, size_t off, size_t n, bool to_host)
{
    while (n > 0) {
        size_t row = off / b->width, x = off % b->width;
        size_t k = b->width - x < n ? b->width - x : n;
        uint8_t *h = b->p + (row / b->rows) * b->slice + (row % b->rows) * b->pitch + x;
        if (to_host)
            memcpy(h, packed, k);
        else
            memcpy(packed, h, k);
        packed += k;
        off += k;
        n -= k;
    }
}

CUresult gp_copy3d_sides(const CUDA_MEMCPY3D *p, gp_copy_side *dst, gp_copy_side *src, gp_hostbox *box,
                         bool *has_host)
{
    if (p == NULL || p->reserved0 != NULL || p->reserved1 != NULL || p->srcLOD != 0 || p->dstLOD != 0)
        return CUDA_ERROR_INVALID_VALUE;
    size_t w = p->WidthInBytes, rows = p->Height, depth = p->Depth;
    if (w == 0 || rows == 0 || depth == 0)
        return CUDA_ERROR_INVALID_VALUE;
    box_side s, d;
    CUresult rc;
    if ((rc = box_resolve(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY,
                          p->srcZ, p->srcPitch, p->srcHeight, w, rows, depth, &s)) ||
        (rc = box_resolve(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY,
                          p->dstZ, p->dstPitch, p->dstHeight, w, rows, depth, &d)))
        return rc;
    if (s.side == SIDE_HOST && d.side == SIDE_HOST) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "a graph's host-to-host memcpy node is not supported over GPU-over-IP (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    *has_host = s.side == SIDE_HOST || d.side == SIDE_HOST;
    side_wire(&d, dst, box, false, w, rows, depth);
    side_wire(&s, src, box, true, w, rows, depth);
    return CUDA_SUCCESS;
}

/* Device to device: one MEMCPY_3D, run by the worker (queued, as DTOD). Host to device: a HTOD per row (one
 * in all when both sides are packed). Device to host: the whole span in one DTOH, scattered here. */
static CUresult box_copy(const box_side *s, const box_side *d, size_t width, size_t rows, size_t depth,
                         uint64_t cid, uint64_t sid, bool sync)
{
    CUresult rc;
    size_t sext = (depth - 1) * s->slice + (rows - 1) * s->pitch + width;
    size_t dext = (depth - 1) * d->slice + (rows - 1) * d->pitch + width;
    if (s->side == SIDE_HOST && d->side == SIDE_HOST) {
        for (size_t z = 0; z < depth; z++)
            for (size_t y = 0; y < rows; y++)
                memmove((void *)(uintptr_t)(d->p + z * d->slice + y * d->pitch),
                        (const void *)(uintptr_t)(s->p + z * s->slice + y * s->pitch), width);
        return CUDA_SUCCESS;
    }
    if (s->side == SIDE_ARRAY || d->side == SIDE_ARRAY) {
        if (s->side != SIDE_HOST && d->side != SIDE_HOST) { /* device and array sides: run by the worker */
            gp_copy_side ds, ss;
            side_wire(d, &ds, NULL, false, width, rows, depth);
            side_wire(s, &ss, NULL, true, width, rows, depth);
            gp_wbuf *w = gp_rpc_begin();
            bool sdev = s->side == SIDE_DEVICE,
                 ddev = d->side == SIDE_DEVICE; /* mirrored memory agrees first */
            if ((rc = gp_mirror_before(cid, sid, sdev ? s->p : 0, sdev ? sext : 0, ddev ? d->p : 0,
                                       ddev ? dext : 0))) {
                gp_rpc_end();
                return rc;
            }
            gp_w_u64(w, cid);
            gp_w_u64(w, sid);
            gp_w_copy(w, &ds, &ss, width, rows, depth);
            rc = gp_rpc_async(GP_OP_MEMCPY_BOX);
            gp_rpc_end();
            return rc;
        }
        if (d->side == SIDE_ARRAY) { /* host to array: HTOA, a piece per row unless both sides are packed */
            bool packed = s->pitch == width && d->pitch == width &&
                          (depth == 1 || (s->slice == width * rows && d->slice == width * rows));
            gp_rpc_begin();
            if (packed)
                rc = gp_rpc_htoa(cid, sid, d->arr->id, d->p, (const void *)(uintptr_t)s->p,
                                 width * rows * depth, !sync);
            else
                rc = gp_rpc_htoa_rows(cid, sid, d->arr->id, d->p, d->pitch, d->slice,
                                      (const void *)(uintptr_t)s->p, s->pitch, s->slice, width, rows, depth,
                                      !sync);
            gp_rpc_end();
            return rc;
        }
    }
    if (s->side == SIDE_DEVICE && d->side == SIDE_DEVICE) {
        gp_wbuf *w = gp_rpc_begin();
        if ((rc = gp_mirror_before(cid, sid, s->p, sext, d->p, dext))) {
            gp_rpc_end();
            return rc;
        }
        gp_w_u64(w, cid);
        gp_w_u64(w, sid);
        gp_w_u64(w, d->p);
        gp_w_u64(w, d->pitch);
        gp_w_u64(w, d->slice / d->pitch);
        gp_w_u64(w, s->p);
        gp_w_u64(w, s->pitch);
        gp_w_u64(w, s->slice / s->pitch);
        gp_w_u64(w, width);
        gp_w_u64(w, rows);
        gp_w_u64(w, depth);
        rc = gp_rpc_async(GP_OP_MEMCPY_3D);
        gp_rpc_end();
        return rc;
    }
    if (d->side == SIDE_DEVICE) {
        bool packed = s->pitch == width && d->pitch == width &&
                      (depth == 1 || (s->slice == width * rows && d->slice == width * rows));
        gp_rpc_begin();
        rc = gp_mirror_before(cid, sid, 0, 0, d->p, dext);
        if (rc == CUDA_SUCCESS && packed)
            rc = gp_rpc_htod(cid, sid, d->p, (const void *)(uintptr_t)s->p, width * rows * depth, !sync);
        else if (rc == CUDA_SUCCESS)
            rc = gp_rpc_htod_rows(cid, sid, d->p, d->pitch, d->slice, (const void *)(uintptr_t)s->p, s->pitch,
                                  s->slice, width, rows, depth, !sync);
        if (rc == CUDA_SUCCESS && sync)
            rc = gp_mirror_synced_locked(cid, sid, GP_SYNC_STREAM);
        gp_rpc_end();
        return rc;
    }
    uint8_t *tmp = malloc(sext);
    if (tmp == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_rpc_begin();
    if (s->side == SIDE_ARRAY)
        rc = gp_rpc_atoh(cid, sid, tmp, s->arr->id, s->p, sext);
    else if ((rc = gp_mirror_before(cid, sid, s->p, sext, 0, 0)) == CUDA_SUCCESS)
        rc = gp_rpc_dtoh(cid, sid, tmp, s->p, sext);
    if (rc == CUDA_SUCCESS && sync)
        rc = gp_mirror_synced_locked(cid, sid, GP_SYNC_STREAM);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        for (size_t z = 0; z < depth; z++)
            for (size_t y = 0; y < rows; y++)
                memcpy((void *)(uintptr_t)(d->p + z * d->slice + y * d->pitch),
                       tmp + z * s->slice + y * s->pitch, width);
    free(tmp);
    return rc;
}

static CUresult copy3d(const CUDA_MEMCPY3D *p, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    if (p == NULL || p->reserved0 != NULL || p->reserved1 != NULL || p->srcLOD != 0 || p->dstLOD != 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    size_t w = p->WidthInBytes, rows = p->Height, depth = p->Depth;
    if (w == 0 || rows == 0 || depth == 0)
        return CUDA_SUCCESS;
    box_side s, d;
    if ((rc = box_resolve(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY,
                          p->srcZ, p->srcPitch, p->srcHeight, w, rows, depth, &s)) ||
        (rc = box_resolve(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY,
                          p->dstZ, p->dstPitch, p->dstHeight, w, rows, depth, &d)))
        return rc;
    gp_rgraph *g = (s.side == SIDE_HOST || d.side == SIDE_HOST) ? gp_stream_capture(h) : NULL;
    if (g) {
        if (s.side == SIDE_HOST && d.side == SIDE_HOST)
            return capture_linear(g, cid, sid, 0, 0, 1, SIDE_HOST,
                                  SIDE_HOST); /* refused, with its log line */
        gp_copy_side ds, ss;
        gp_hostbox box;
        side_wire(&d, &ds, &box, false, w, rows, depth);
        side_wire(&s, &ss, &box, true, w, rows, depth);
        return gp_capture_copy(g, cid, sid, &ds, &ss, w, rows, depth, &box);
    }
    return box_copy(&s, &d, w, rows, depth, cid, sid, sync);
}

static CUresult copy2d(const CUDA_MEMCPY2D *p, CUstream h, bool sync)
{
    GP_READY_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (p->Height > 1 && ((p->srcMemoryType != CU_MEMORYTYPE_ARRAY && p->srcPitch &&
                           p->srcPitch < p->WidthInBytes + p->srcXInBytes) ||
                          (p->dstMemoryType != CU_MEMORYTYPE_ARRAY && p->dstPitch &&
                           p->dstPitch < p->WidthInBytes + p->dstXInBytes)))
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_MEMCPY3D c = {.srcXInBytes = p->srcXInBytes,
                       .srcY = p->srcY,
                       .srcMemoryType = p->srcMemoryType,
                       .srcHost = p->srcHost,
                       .srcDevice = p->srcDevice,
                       .srcArray = p->srcArray,
                       .srcPitch = p->srcPitch,
                       .dstXInBytes = p->dstXInBytes,
                       .dstY = p->dstY,
                       .dstMemoryType = p->dstMemoryType,
                       .dstHost = p->dstHost,
                       .dstDevice = p->dstDevice,
                       .dstArray = p->dstArray,
                       .dstPitch = p->dstPitch,
                       .WidthInBytes = p->WidthInBytes,
                       .Height = p->Height,
                       .Depth = 1};
    return copy3d(&c, h, sync);
}

GP_API CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, NULL, true);
}

GP_API CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, PTDS, true);
}

GP_API CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, NULL, true);
}

GP_API CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, PTDS, true);
}

GP_API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *pCopy, CUstream hStream)
{
    return copy2d(pCopy, hStream, false);
}

GP_API CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *pCopy, CUstream hStream)
{
    return copy2d(pCopy, hStream ? hStream : PTDS, false);
}

GP_API CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *pCopy)
{
    return copy3d(pCopy, NULL, true);
}

GP_API CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *pCopy)
{
    return copy3d(pCopy, PTDS, true);
}

GP_API CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return copy3d(pCopy, hStream, false);
}

GP_API CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return copy3d(pCopy, hStream ? hStream : PTDS, false);
}

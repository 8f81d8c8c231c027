/* mem.c - every path that takes device memory, charged against the vGPU's VRAM limit.
 *
 * An allocation is charged to this process's entry in the device's slot before the driver is asked, and
 * refused with CUDA_ERROR_OUT_OF_MEMORY if the workload (all its processes) would exceed the limit; the
 * charge is returned when the memory is freed, and the entry as a whole when the process exits or is
 * killed. Charged: cuMemAlloc, pitched, managed and VMM (cuMemCreate) memory and arrays at their size; what
 * stream-ordered pools reserve (re-read from the pool after each pool operation and at synchronisation
 * points, since a pool holds freed blocks until it trims); and each context's own memory (init.c).
 * cuMemGetInfo, cuDeviceTotalMem and NVML report the vGPU: its limit as total, what is left as free.
 */
#include "vgpu/vgpu.h"
#include "common/array_format.h"

#include <string.h>

static gp_slot_handle *slot_of(int dev)
{
    if (g_vg.mode != VG_ENFORCE || dev < 0 || dev >= g_vg.ndev)
        return NULL;
    gp_slot_handle *h = g_vg.dev[dev].slot;
    if (h->proc < 0) {
        gp_err err;
        if (gp_slot_join(h, &err) < 0)
            gp_log(GP_LOG_ERROR, VG_LOG, "%s", err.msg);
    }
    return h;
}

/* Charges bytes on dev; CUDA_ERROR_OUT_OF_MEMORY when the vGPU has no room. Caller holds mem_mu. */
static CUresult charge(int dev, uint64_t bytes)
{
    gp_slot_handle *h = slot_of(dev);
    if (h == NULL)
        return g_vg.mode == VG_ENFORCE ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
    return gp_slot_charge(h, bytes) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static void uncharge(int dev, uint64_t bytes)
{
    gp_slot_handle *h = slot_of(dev);
    if (h)
        gp_slot_uncharge(h, bytes);
}

/* Records an allocation made on dev; if the map cannot take it, the charge stays (counted, never lost). */
static void track(gp_u64map *m, uint64_t key, uint64_t bytes, int dev)
{
    if (gp_u64map_put(m, key, vg_rec(bytes, dev)) < 0)
        gp_log_once(GP_LOG_ERROR, VG_LOG,
                    "out of host memory tracking allocations; their VRAM stays charged");
}

/* Charge, call, and on success track in map: the shape of every simple allocation path. */
#define ALLOC_PATH(dev, bytes, key_expr, call) ALLOC_PATH_IN(g_vg.allocs, dev, bytes, key_expr, call)
#define ALLOC_PATH_IN(map, dev, bytes, key_expr, call)               \
    do {                                                             \
        CUresult rc_ = vg_cuda_ok();                                 \
        if (rc_)                                                     \
            return rc_;                                              \
        if (g_vg.mode != VG_ENFORCE)                                 \
            return (call);                                           \
        pthread_mutex_lock(&g_vg.mem_mu);                            \
        rc_ = charge((dev), (bytes));                                \
        if (rc_ == CUDA_SUCCESS) {                                   \
            rc_ = (call);                                            \
            if (rc_ == CUDA_SUCCESS)                                 \
                track(&(map), (uint64_t)(key_expr), (bytes), (dev)); \
            else                                                     \
                uncharge((dev), (bytes));                            \
        }                                                            \
        pthread_mutex_unlock(&g_vg.mem_mu);                          \
        return rc_;                                                  \
    } while (0)

VG_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    if (dptr == NULL || bytesize == 0)
        return REAL(cuMemAlloc_v2)(dptr, bytesize); /* the driver's own answer to bad arguments */
    int dev = vg_current_dev();
    ALLOC_PATH(dev, bytesize, *dptr, REAL(cuMemAlloc_v2)(dptr, bytesize));
}

VG_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    if (dptr == NULL || bytesize == 0)
        return REAL(cuMemAllocManaged)(dptr, bytesize, flags);
    int dev = vg_current_dev();
    ALLOC_PATH(dev, bytesize, *dptr, REAL(cuMemAllocManaged)(dptr, bytesize, flags));
}

VG_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                   unsigned int ElementSizeBytes)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    if (g_vg.mode != VG_ENFORCE || dptr == NULL || pPitch == NULL || WidthInBytes == 0 || Height == 0)
        return REAL(cuMemAllocPitch_v2)(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    /* The pitch is the driver's choice: charge the worst case first, then exactly pitch * height. */
    int dev = vg_current_dev();
    uint64_t worst = (uint64_t)(WidthInBytes + 511) / 512 * 512 * Height;
    pthread_mutex_lock(&g_vg.mem_mu);
    rc = charge(dev, worst);
    if (rc == CUDA_SUCCESS) {
        rc = REAL(cuMemAllocPitch_v2)(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
        if (rc == CUDA_SUCCESS) {
            uint64_t exact = (uint64_t)*pPitch * Height;
            if (exact > worst && charge(dev, exact - worst) != CUDA_SUCCESS) {
                REAL(cuMemFree_v2)(*dptr);
                uncharge(dev, worst);
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            } else {
                if (exact < worst)
                    uncharge(dev, worst - exact);
                track(&g_vg.allocs, *dptr, exact, dev);
            }
        } else {
            uncharge(dev, worst);
        }
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

/* Frees a tracked allocation's charge once the driver has freed it. */
static CUresult free_tracked(gp_u64map *m, uint64_t key, CUresult rc)
{
    if (rc != CUDA_SUCCESS || g_vg.mode != VG_ENFORCE)
        return rc;
    uint64_t r;
    if (gp_u64map_del(m, key, &r))
        uncharge(vg_rec_dev(r), vg_rec_bytes(r));
    return rc;
}

static void pool_forget_alloc(CUdeviceptr dptr, uint64_t r);

VG_API CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuMemFree_v2)(dptr);
    if (rc != CUDA_SUCCESS || g_vg.mode != VG_ENFORCE)
        return rc;
    pthread_mutex_lock(&g_vg.mem_mu);
    uint64_t r;
    bool pooled = gp_u64map_get(&g_vg.allocs, dptr, &r) && (r & VG_REC_POOL);
    if (pooled)
        pool_forget_alloc(dptr, r); /* stream-ordered memory freed with cuMemFree: its pool's books change */
    else
        free_tracked(&g_vg.allocs, dptr, rc);
    pthread_mutex_unlock(&g_vg.mem_mu);
    if (pooled)
        vg_pools_reconcile();
    return rc;
}

/* ---- stream-ordered pools ------------------------------------------------------------------------- */

/* An allocation from a pool leaves the pool's books (freed). Caller holds mem_mu. */
static void pool_forget_alloc(CUdeviceptr dptr, uint64_t r)
{
    uint64_t pool, out = 0;
    gp_u64map_del(&g_vg.allocs, dptr, NULL);
    if (!gp_u64map_del(&g_vg.pool_of, dptr, &pool))
        return;
    gp_u64map_get(&g_vg.pool_out, pool, &out);
    uint64_t b = vg_rec_bytes(r);
    gp_u64map_put(&g_vg.pool_out, pool, out > b ? out - b : 0);
}

static uint64_t pool_reserved(CUmemoryPool p)
{
    cuuint64_t v = 0;
    REAL(cuMemPoolGetAttribute)(p, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &v);
    return v;
}

/* Brings a pool's charge to what it reserves (never below what is allocated from it). Holds mem_mu. */
static CUresult pool_settle(CUmemoryPool p, int dev, uint64_t outstanding)
{
    uint64_t cur = 0;
    gp_u64map_get(&g_vg.pools, (uint64_t)(uintptr_t)p, &cur);
    uint64_t now = pool_reserved(p);
    if (now < outstanding)
        now = outstanding;
    CUresult rc = CUDA_SUCCESS;
    if (now > vg_rec_bytes(cur))
        rc = charge(dev, now - vg_rec_bytes(cur));
    else
        uncharge(dev, vg_rec_bytes(cur) - now);
    if (rc == CUDA_SUCCESS)
        gp_u64map_put(&g_vg.pools, (uint64_t)(uintptr_t)p, vg_rec(now, dev));
    return rc;
}

void vg_pools_reconcile(void)
{
    if (g_vg.mode != VG_ENFORCE)
        return;
    pthread_mutex_lock(&g_vg.mem_mu);
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&g_vg.pools, &i, &k, &v);) {
        uint64_t out = 0;
        gp_u64map_get(&g_vg.pool_out, k, &out);
        if (pool_settle((CUmemoryPool)(uintptr_t)k, vg_rec_dev(v), out) != CUDA_SUCCESS)
            gp_log_once(GP_LOG_WARN, VG_LOG, "a memory pool holds more than the vGPU's VRAM limit");
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
}

static CUresult alloc_async(CUresult (*real_async)(CUdeviceptr *, size_t, CUstream),
                            CUresult (*real_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream),
                            CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream h)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    if (g_vg.mode != VG_ENFORCE || dptr == NULL || bytesize == 0)
        return real_pool ? real_pool(dptr, bytesize, pool, h) : real_async(dptr, bytesize, h);
    int dev = vg_stream_dev(h);
    if (pool == NULL) {
        if (REAL(cuDeviceGetMemPool)(&pool, dev) != CUDA_SUCCESS)
            return real_async(dptr, bytesize, h);
    } else {
        uint64_t known;
        pthread_mutex_lock(&g_vg.mem_mu);
        if (gp_u64map_get(&g_vg.pools, (uint64_t)(uintptr_t)pool, &known))
            dev = vg_rec_dev(known); /* a pool may belong to another device than the stream */
        pthread_mutex_unlock(&g_vg.mem_mu);
    }
    pthread_mutex_lock(&g_vg.mem_mu);
    uint64_t key = (uint64_t)(uintptr_t)pool, out = 0, cur = 0;
    gp_u64map_get(&g_vg.pool_out, key, &out);
    if (!gp_u64map_get(&g_vg.pools, key, &cur))
        gp_u64map_put(&g_vg.pools, key, vg_rec(0, dev));
    /* Charge for the pool holding what it holds now or what will be allocated from it, whichever is more;
     * the driver may reuse a free block, or reserve a new one. */
    rc = pool_settle(pool, dev, out + bytesize);
    if (rc != CUDA_SUCCESS) {
        /* Free blocks it keeps may be given back first. */
        REAL(cuMemPoolTrimTo)(pool, out);
        rc = pool_settle(pool, dev, out + bytesize);
    }
    if (rc == CUDA_SUCCESS) {
        rc = real_pool ? real_pool(dptr, bytesize, pool, h) : real_async(dptr, bytesize, h);
        if (rc == CUDA_SUCCESS) {
            gp_u64map_put(&g_vg.pool_out, key, out + bytesize);
            gp_u64map_put(&g_vg.allocs, *dptr, vg_rec(bytesize, dev) | VG_REC_POOL);
            gp_u64map_put(&g_vg.pool_of, *dptr, key);
            if (pool_settle(pool, dev, out + bytesize) != CUDA_SUCCESS) {
                /* The pool reserved more than the vGPU can hold: undo. */
                pool_forget_alloc(*dptr, vg_rec(bytesize, dev) | VG_REC_POOL);
                REAL(cuMemFreeAsync)(*dptr, h);
                REAL(cuStreamSynchronize)(h);
                REAL(cuMemPoolTrimTo)(pool, out);
                pool_settle(pool, dev, out);
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            }
        } else {
            pool_settle(pool, dev, out);
        }
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

VG_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(REAL(cuMemAllocAsync), NULL, dptr, bytesize, NULL, hStream);
}

VG_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(REAL(cuMemAllocAsync_ptsz), NULL, dptr, bytesize, NULL, hStream);
}

VG_API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                        CUstream hStream)
{
    if (pool == NULL)
        return REAL(cuMemAllocFromPoolAsync)(dptr, bytesize, pool, hStream);
    return alloc_async(NULL, REAL(cuMemAllocFromPoolAsync), dptr, bytesize, pool, hStream);
}

VG_API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream hStream)
{
    if (pool == NULL)
        return REAL(cuMemAllocFromPoolAsync_ptsz)(dptr, bytesize, pool, hStream);
    return alloc_async(NULL, REAL(cuMemAllocFromPoolAsync_ptsz), dptr, bytesize, pool, hStream);
}

static CUresult free_async(CUresult (*real)(CUdeviceptr, CUstream), CUdeviceptr dptr, CUstream h)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = real(dptr, h);
    if (rc != CUDA_SUCCESS || g_vg.mode != VG_ENFORCE)
        return rc;
    pthread_mutex_lock(&g_vg.mem_mu);
    uint64_t r;
    if (gp_u64map_get(&g_vg.allocs, dptr, &r)) {
        if (r & VG_REC_POOL) {
            /* The block goes back to its pool, which keeps it reserved (and charged) until it trims. */
            pool_forget_alloc(dptr, r);
        } else {
            /* cuMemAlloc memory freed in stream order: returned to the device when the free runs; charge it
             * back now, as the program can no longer use it. */
            free_tracked(&g_vg.allocs, dptr, CUDA_SUCCESS);
        }
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

VG_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(REAL(cuMemFreeAsync), dptr, hStream);
}

VG_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(REAL(cuMemFreeAsync_ptsz), dptr, hStream);
}

VG_API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuMemPoolCreate)(pool, poolProps);
    if (rc == CUDA_SUCCESS && g_vg.mode == VG_ENFORCE &&
        poolProps->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
        pthread_mutex_lock(&g_vg.mem_mu);
        gp_u64map_put(&g_vg.pools, (uint64_t)(uintptr_t)*pool, vg_rec(0, poolProps->location.id));
        pthread_mutex_unlock(&g_vg.mem_mu);
    }
    return rc;
}

VG_API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuMemPoolTrimTo)(pool, minBytesToKeep);
    if (rc == CUDA_SUCCESS)
        vg_pools_reconcile();
    return rc;
}

/* Synchronisation points are where pools give memory back: settle their charges after each. */
#define SYNC_RECONCILE(call)         \
    do {                             \
        CUresult rc_ = vg_cuda_ok(); \
        if (rc_)                     \
            return rc_;              \
        rc_ = (call);                \
        vg_pools_reconcile();        \
        return rc_;                  \
    } while (0)

VG_API CUresult cuStreamSynchronize(CUstream hStream)
{
    SYNC_RECONCILE(REAL(cuStreamSynchronize)(hStream));
}

VG_API CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
    SYNC_RECONCILE(REAL(cuStreamSynchronize_ptsz)(hStream));
}

VG_API CUresult cuCtxSynchronize(void)
{
    SYNC_RECONCILE(REAL(cuCtxSynchronize)());
}

VG_API CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    SYNC_RECONCILE(REAL(cuCtxSynchronize_v2)(ctx));
}

VG_API CUresult cuEventSynchronize(CUevent hEvent)
{
    SYNC_RECONCILE(REAL(cuEventSynchronize)(hEvent));
}

/* ---- VMM and arrays: memory held by a handle ------------------------------------------------------ */

VG_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags)
{
    if (handle == NULL || prop == NULL || size == 0 || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return REAL(cuMemCreate)(handle, size, prop, flags);
    ALLOC_PATH_IN(g_vg.handles, prop->location.id, size, *handle,
                  REAL(cuMemCreate)(handle, size, prop, flags));
}

VG_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuMemRelease)(handle);
    pthread_mutex_lock(&g_vg.mem_mu);
    rc = free_tracked(&g_vg.handles, handle, rc);
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

static uint64_t format_bytes(CUarray_format f)
{
    unsigned b = gp_array_format_bytes(f);
    return b ? b : 16; /* block-compressed and exotic formats: a generous bound */
}

static uint64_t array_bytes(size_t w, size_t h, size_t d, CUarray_format f, unsigned channels)
{
    return (uint64_t)w * (h ? h : 1) * (d ? d : 1) * format_bytes(f) * (channels ? channels : 1);
}

VG_API CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *p)
{
    if (pHandle == NULL || p == NULL)
        return REAL(cuArrayCreate_v2)(pHandle, p);
    uint64_t bytes = array_bytes(p->Width, p->Height, 1, p->Format, p->NumChannels);
    int dev = vg_current_dev();
    ALLOC_PATH_IN(g_vg.handles, dev, bytes, (uintptr_t)*pHandle, REAL(cuArrayCreate_v2)(pHandle, p));
}

VG_API CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *p)
{
    if (pHandle == NULL || p == NULL)
        return REAL(cuArray3DCreate_v2)(pHandle, p);
    uint64_t bytes = array_bytes(p->Width, p->Height, p->Depth, p->Format, p->NumChannels);
    int dev = vg_current_dev();
    ALLOC_PATH_IN(g_vg.handles, dev, bytes, (uintptr_t)*pHandle, REAL(cuArray3DCreate_v2)(pHandle, p));
}

VG_API CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *p,
                                       unsigned int numMipmapLevels)
{
    if (pHandle == NULL || p == NULL)
        return REAL(cuMipmappedArrayCreate)(pHandle, p, numMipmapLevels);
    uint64_t bytes = 0;
    size_t w = p->Width, h = p->Height, d = p->Depth;
    for (unsigned l = 0; l < (numMipmapLevels ? numMipmapLevels : 1); l++) {
        bytes += array_bytes(w, h, d, p->Format, p->NumChannels);
        w = w > 1 ? w / 2 : 1;
        h = h > 1 ? h / 2 : h;
        d = d > 1 ? d / 2 : d;
    }
    int dev = vg_current_dev();
    ALLOC_PATH_IN(g_vg.handles, dev, bytes, (uintptr_t)*pHandle,
                  REAL(cuMipmappedArrayCreate)(pHandle, p, numMipmapLevels));
}

static CUresult handle_destroy(CUresult rc, uint64_t key)
{
    pthread_mutex_lock(&g_vg.mem_mu);
    rc = free_tracked(&g_vg.handles, key, rc);
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

VG_API CUresult cuArrayDestroy(CUarray hArray)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc : handle_destroy(REAL(cuArrayDestroy)(hArray), (uintptr_t)hArray);
}

VG_API CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc
              : handle_destroy(REAL(cuMipmappedArrayDestroy)(hMipmappedArray), (uintptr_t)hMipmappedArray);
}

/* ---- what the program is told ------------------------------------------------------------------------ */

VG_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    size_t real_free = 0, real_total = 0;
    rc = REAL(cuMemGetInfo_v2)(&real_free, &real_total);
    if (rc != CUDA_SUCCESS || g_vg.mode != VG_ENFORCE || free_bytes == NULL || total == NULL) {
        if (rc == CUDA_SUCCESS && free_bytes && total) {
            *free_bytes = real_free;
            *total = real_total;
        }
        return rc;
    }
    gp_slot_handle *h = slot_of(vg_current_dev());
    if (h == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    uint64_t limit = atomic_load(&h->s->vram_limit), used = gp_slot_vram_used(h->s);
    uint64_t left = used >= limit ? 0 : limit - used; /* never an underflow */
    *total = limit;
    *free_bytes = left < real_free ? left : real_free;
    return CUDA_SUCCESS;
}

VG_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuDeviceTotalMem_v2)(bytes, dev);
    if (rc == CUDA_SUCCESS && g_vg.mode == VG_ENFORCE && dev >= 0 && dev < g_vg.ndev)
        *bytes = atomic_load(&g_vg.dev[dev].slot->s->vram_limit);
    return rc;
}

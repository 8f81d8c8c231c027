/* pool.c - stream-ordered allocation: memory pools, cuMemAllocAsync and cuMemFreeAsync.
 *
 * A pool reserves device memory in blocks (each a device allocation charged to the device like any other)
 * and hands them out; a block freed in stream order goes back to its pool, still reserved and still
 * charged, and is reused by later allocations. At synchronisation points a pool gives back what it holds
 * above its release threshold (0 by default), as NVIDIA's pools do, so reserved memory shows in
 * cuMemGetInfo and NVML for as long as a real pool would hold it.
 */
#include "sim/sim.h"

#include <stdlib.h>
#include <string.h>

static pthread_mutex_t g_pools_mu = PTHREAD_MUTEX_INITIALIZER;
static gp_ptrvec g_pools;

static gp_mempool *pool_new(int dev, bool is_default)
{
    gp_mempool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->dev = dev;
    p->is_default = is_default;
    p->reuse_follow_event = p->reuse_opportunistic = p->reuse_internal = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_lock(&g_pools_mu);
    int rc = gp_ptrvec_push(&g_pools, p);
    pthread_mutex_unlock(&g_pools_mu);
    if (rc < 0) {
        free(p);
        return NULL;
    }
    gp_handle_add(p, GP_OBJ_POOL);
    return p;
}

int gp_pool_init_defaults(gp_err *err)
{
    for (int d = 0; d < g_sim.ndev; d++) {
        if (g_sim.default_pool[d] == NULL) {
            g_sim.default_pool[d] = pool_new(d, true);
            if (g_sim.default_pool[d] == NULL)
                return gp_err_set(err, GP_ERR_NOMEM, "out of host memory creating memory pools");
        }
        g_sim.current_pool[d] = g_sim.default_pool[d];
    }
    return 0;
}

/* Gives back free blocks until at most `keep` bytes stay reserved. Caller holds p->mu. */
static void release_free_blocks(gp_mempool *p, uint64_t keep)
{
    while (p->reserved > keep && p->free.n > 0) {
        gp_alloc *a = p->free.v[--p->free.n];
        p->reserved -= a->charged;
        a->pool = NULL;
        a->in_pool_free = false;
        gp_mem_free_alloc(a);
    }
}

void gp_pools_trim_after_sync(int dev)
{
    pthread_mutex_lock(&g_pools_mu);
    for (size_t i = 0; i < g_pools.n; i++) {
        gp_mempool *p = g_pools.v[i];
        if (p->dev != dev)
            continue;
        pthread_mutex_lock(&p->mu);
        release_free_blocks(p, p->release_threshold);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&g_pools_mu);
}

void gp_pool_free_block(gp_alloc *a)
{
    gp_mempool *p = a->pool;
    if (p == NULL) {
        gp_mem_free_alloc(a); /* cuMemFreeAsync of memory that came from cuMemAlloc */
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->used -= a->size;
    a->in_pool_free = true;
    if (p->destroyed || gp_ptrvec_push(&p->free, a) < 0) {
        p->reserved -= a->charged; /* no room to keep it: give it back */
        a->pool = NULL;
        a->in_pool_free = false;
        gp_mem_free_alloc(a);
    }
    pthread_mutex_unlock(&p->mu);
}

void gp_pool_detach(gp_alloc *a)
{
    gp_mempool *p = a->pool;
    pthread_mutex_lock(&p->mu);
    if (a->in_pool_free)
        gp_ptrvec_remove(&p->free, a);
    else
        p->used -= a->size;
    p->reserved -= a->charged;
    a->pool = NULL;
    a->in_pool_free = false;
    pthread_mutex_unlock(&p->mu);
}

/* Takes a block of at least `bytes` from the pool, reusing a free one when one fits. */
static CUresult pool_alloc(gp_mempool *p, gp_ctx *c, size_t bytes, gp_alloc **out)
{
    if (bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->free.n; i++) {
        gp_alloc *a = p->free.v[i];
        if (a->backing >= bytes && a->backing <= 2 * bytes + (2u << 20)) {
            gp_ptrvec_remove(&p->free, a);
            a->in_pool_free = false;
            a->size = bytes;
            a->ctx = c;
            p->used += bytes;
            if (p->used > p->used_high)
                p->used_high = p->used;
            pthread_mutex_unlock(&p->mu);
            *out = a;
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&p->mu);
    gp_alloc *a;
    CUresult rc = gp_mem_alloc_device(c, p->dev, bytes, 0, &a);
    if (rc == CUDA_ERROR_OUT_OF_MEMORY) {
        /* Free blocks of every pool of the device are reclaimable before giving up. */
        gp_pools_trim_after_sync(p->dev);
        rc = gp_mem_alloc_device(c, p->dev, bytes, 0, &a);
    }
    if (rc)
        return rc;
    pthread_mutex_lock(&p->mu);
    a->pool = p;
    p->reserved += a->charged;
    p->used += bytes;
    if (p->reserved > p->reserved_high)
        p->reserved_high = p->reserved;
    if (p->used > p->used_high)
        p->used_high = p->used;
    pthread_mutex_unlock(&p->mu);
    *out = a;
    return CUDA_SUCCESS;
}

/* ---- the API -------------------------------------------------------------------------------------- */

static CUresult stream_for(CUstream h, bool pt, gp_stream **s)
{
    gp_ctx *c = NULL;
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        CUresult rc = gp_ctx_current(&c);
        if (rc)
            return rc;
    } else {
        GP_INIT_OR_RETURN();
    }
    return gp_stream_resolve(h, pt, c, s);
}

static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize, gp_mempool *pool, CUstream h, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_for(h, pt, &s);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if (gp_stream_capturing(s))
        return gp_capture_refuse(s, "capturing cuMemAllocAsync (a memory allocation node)",
                                 CUDA_ERROR_NOT_SUPPORTED);
    if (pool == NULL)
        pool = g_sim.current_pool[s->ctx->dev]; /* an explicit pool may be another device's */
    gp_alloc *a;
    rc = pool_alloc(pool, s->ctx, bytesize, &a);
    if (rc)
        return rc;
    *dptr = a->base;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(dptr, bytesize, NULL, hStream, false);
}

GP_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(dptr, bytesize, NULL, hStream, true);
}

static CUresult alloc_from_pool(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream h, bool pt)
{
    GP_INIT_OR_RETURN();
    if (pool == NULL || gp_handle_type(pool) != GP_OBJ_POOL)
        return CUDA_ERROR_INVALID_VALUE;
    return alloc_async(dptr, bytesize, (gp_mempool *)pool, h, pt);
}

GP_API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                        CUstream hStream)
{
    return alloc_from_pool(dptr, bytesize, pool, hStream, false);
}

GP_API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream hStream)
{
    return alloc_from_pool(dptr, bytesize, pool, hStream, true);
}

static CUresult free_async(CUdeviceptr dptr, CUstream h, bool pt)
{
    gp_stream *s;
    CUresult rc = stream_for(h, pt, &s);
    if (rc)
        return rc;
    gp_alloc *a = gp_mem_find(dptr, 1);
    if (dptr == 0 || a == NULL || a->base != dptr || a->kind != GP_ALLOC_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_legacy(s)))
        return rc;
    if (gp_stream_capturing(s))
        return gp_capture_refuse(s, "capturing cuMemFreeAsync (a memory free node)",
                                 CUDA_ERROR_NOT_SUPPORTED);
    gp_op op = {.kind = GP_OP_FREE};
    op.u.fr.a = a;
    op.u.fr.ptr = dptr;
    gp_stream_enqueue(s, &op);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(dptr, hStream, false);
}

GP_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(dptr, hStream, true);
}

GP_API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
    GP_INIT_OR_RETURN();
    if (pool == NULL || poolProps == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->allocType != CU_MEM_ALLOCATION_TYPE_PINNED)
        return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE &&
        poolProps->location.type != CU_MEM_LOCATION_TYPE_HOST &&
        poolProps->location.type != CU_MEM_LOCATION_TYPE_HOST_NUMA)
        return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "cuMemPoolCreate for host memory is not supported by the simulated "
                    "GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (poolProps->location.id < 0 || poolProps->location.id >= g_sim.ndev)
        return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->handleTypes != CU_MEM_HANDLE_TYPE_NONE) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "cuMemPoolCreate with exportable handles is not supported by the "
                    "simulated GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    gp_mempool *p = pool_new(poolProps->location.id, false);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    GP_INIT_OR_RETURN();
    if (pool == NULL || gp_handle_type(pool) != GP_OBJ_POOL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_mempool *p = (gp_mempool *)pool;
    if (p->is_default)
        return CUDA_ERROR_INVALID_VALUE;
    /* Memory still allocated from it stays valid until freed; free blocks go now. */
    pthread_mutex_lock(&p->mu);
    p->destroyed = true;
    release_free_blocks(p, 0);
    pthread_mutex_unlock(&p->mu);
    if (g_sim.current_pool[p->dev] == p)
        g_sim.current_pool[p->dev] = g_sim.default_pool[p->dev];
    gp_handle_del(p);
    return CUDA_SUCCESS;
}

static CUresult pool_of(CUmemoryPool pool, gp_mempool **out)
{
    GP_INIT_OR_RETURN();
    if (pool == NULL || gp_handle_type(pool) != GP_OBJ_POOL)
        return CUDA_ERROR_INVALID_VALUE;
    *out = (gp_mempool *)pool;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    gp_mempool *p;
    CUresult rc = pool_of(pool, &p);
    if (rc)
        return rc;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&p->mu);
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: p->reuse_follow_event = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: p->reuse_opportunistic = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: p->reuse_internal = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: p->release_threshold = *(cuuint64_t *)value; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            rc = CUDA_ERROR_INVALID_VALUE;
        else
            p->reserved_high = p->reserved;
        break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            rc = CUDA_ERROR_INVALID_VALUE;
        else
            p->used_high = p->used;
        break;
    default: rc = CUDA_ERROR_INVALID_VALUE; break;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

GP_API CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    gp_mempool *p;
    CUresult rc = pool_of(pool, &p);
    if (rc)
        return rc;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&p->mu);
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: *(int *)value = p->reuse_follow_event; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: *(int *)value = p->reuse_opportunistic; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *(int *)value = p->reuse_internal; break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = p->release_threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = p->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = p->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = p->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = p->used_high; break;
    default: rc = CUDA_ERROR_INVALID_VALUE; break;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

GP_API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    gp_mempool *p;
    CUresult rc = pool_of(pool, &p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->mu);
    release_free_blocks(p, minBytesToKeep);
    pthread_mutex_unlock(&p->mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
{
    GP_INIT_OR_RETURN();
    if (pool_out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *pool_out = (CUmemoryPool)g_sim.default_pool[dev];
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    GP_INIT_OR_RETURN();
    if (pool == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *pool = (CUmemoryPool)g_sim.current_pool[dev];
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    GP_INIT_OR_RETURN();
    if (dev < 0 || dev >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    if (pool == NULL || gp_handle_type(pool) != GP_OBJ_POOL || ((gp_mempool *)pool)->dev != dev)
        return CUDA_ERROR_INVALID_VALUE;
    g_sim.current_pool[dev] = (gp_mempool *)pool;
    return CUDA_SUCCESS;
}

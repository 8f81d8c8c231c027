/* client_pool.c - memory pools, stream-ordered allocation and virtual memory management for the remote
 * driver.
 *
 * A CUmemoryPool is a gp_rpool record (registered like streams) whose id the worker maps to its pool. A
 * device's default pool gets its record the first time this process names it, here; its id travels as
 * default_id so that the worker maps it then (the worker answers which pool is current, since only it knows).
 * cuMemAllocAsync needs a reply (the pointer); cuMemFreeAsync goes out asynchronously. Both keep
 * client_mem.c's table, which answers cuPointerGetAttribute (the pool, the device) and directs copies.
 *
 * A CUmemGenericAllocationHandle is a client id the worker maps to its handle; the device of each is kept
 * here, for the mappings' pointer attributes. Reserved addresses and mappings are the worker's own addresses,
 * as device pointers are. Properties travel field by field, with device ordinals translated
 * (CUDA_VISIBLE_DEVICES may renumber them); memory on a host, which would be the worker's host and not this
 * one, is refused with CUDA_ERROR_NOT_SUPPORTED, as are exportable handles, whose file descriptors would be
 * the worker's.
 */
#include "remote/client.h"

#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"

#define MAX_DEVS         64
#define MAX_ACCESS_DESCS 64 /* cuMemSetAccess descriptors in one call (the worker's bound) */

static pthread_mutex_t g_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static gp_u64map g_pools;             /* id -> gp_rpool *, every live pool record */
static gp_rpool *g_default[MAX_DEVS]; /* each device's default pool, once named */
static gp_u64map g_handles;           /* allocation handle id -> its device + 1 */

/* ---- pools ---------------------------------------------------------------------------------------- */

/* The default pool's record of dev (made the first time): NULL when out of memory. */
static gp_rpool *default_pool(int dev)
{
    if (dev < 0 || dev >= MAX_DEVS)
        return NULL;
    pthread_mutex_lock(&g_pool_mu);
    gp_rpool *p = g_default[dev];
    if (p == NULL && (p = calloc(1, sizeof *p)) != NULL) {
        p->id = gp_client_next_id();
        p->dev = dev;
        p->is_default = true;
        if (gp_u64map_put(&g_pools, p->id, (uint64_t)(uintptr_t)p) < 0 || gp_reg_add(p, GP_R_POOL) < 0) {
            gp_u64map_del(&g_pools, p->id, NULL);
            free(p);
            p = NULL;
        } else {
            g_default[dev] = p;
        }
    }
    pthread_mutex_unlock(&g_pool_mu);
    return p;
}

static gp_rpool *pool_by_id(uint64_t id)
{
    uint64_t v = 0;
    pthread_mutex_lock(&g_pool_mu);
    bool found = id != 0 && gp_u64map_get(&g_pools, id, &v);
    pthread_mutex_unlock(&g_pool_mu);
    return found ? (gp_rpool *)(uintptr_t)v : NULL;
}

static CUresult pool_arg(CUmemoryPool h, gp_rpool **out)
{
    GP_READY_OR_RETURN();
    if (gp_reg_kind(h) != GP_R_POOL)
        return CUDA_ERROR_INVALID_VALUE; /* as the driver answers a pool that is not one */
    *out = (gp_rpool *)h;
    return CUDA_SUCCESS;
}

/* A location the worker's driver cannot honour for this process: memory on a host is the worker's host's. */
static bool location_remote_ok(const CUmemLocation *loc, const char *call)
{
    if (loc->type != CU_MEM_LOCATION_TYPE_HOST && loc->type != CU_MEM_LOCATION_TYPE_HOST_NUMA)
        return true;
    gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                "%s: memory located on a host would be on the GPU host, out of this process's reach, over "
                "GPU-over-IP (returning CUDA_ERROR_NOT_SUPPORTED)",
                call);
    return false;
}

static bool handle_types_remote_ok(unsigned types, const char *call)
{
    if (types == CU_MEM_HANDLE_TYPE_NONE)
        return true;
    gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                "%s: exportable handles (types 0x%x) would be the GPU host's over GPU-over-IP (returning "
                "CUDA_ERROR_NOT_SUPPORTED)",
                call, types);
    return false;
}

/* A location's id as the worker numbers devices (one naming no visible device: -1, which the driver refuses).
 */
static uint32_t location_id_out(const CUmemLocation *loc)
{
    return (uint32_t)(loc->type == CU_MEM_LOCATION_TYPE_DEVICE ? gp_dev_phys(loc->id) : loc->id);
}

/* POOL_DEVICE: the device's default (current false) or current pool. */
static CUresult device_pool(CUmemoryPool *out, CUdevice dev, bool current)
{
    GP_READY_OR_RETURN();
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int phys = gp_dev_phys(dev);
    if (phys < 0)
        return CUDA_ERROR_INVALID_DEVICE;
    gp_rpool *def = default_pool(dev);
    if (def == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u32(w, (uint32_t)phys);
    gp_w_u32(w, current);
    gp_w_u64(w, def->id);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_POOL_DEVICE, &r);
    gp_rpool *p = pool_by_id(gp_r_u64(&r));
    if (rc == CUDA_SUCCESS && (!gp_r_done(&r) || p == NULL))
        rc = gp_rpc_malformed(GP_OP_POOL_DEVICE);
    gp_rpc_end();
    if (rc)
        return rc;
    *out = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
{
    return device_pool(pool_out, dev, false);
}

GP_API CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    return device_pool(pool, dev, true);
}

GP_API CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    GP_READY_OR_RETURN();
    int phys = gp_dev_phys(dev);
    if (phys < 0)
        return CUDA_ERROR_INVALID_DEVICE;
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u32(w, (uint32_t)phys);
    gp_w_u64(w, p->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_POOL_SET_CURRENT, &r);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
    GP_READY_OR_RETURN();
    if (pool == NULL || poolProps == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!location_remote_ok(&poolProps->location, "cuMemPoolCreate") ||
        !handle_types_remote_ok(poolProps->handleTypes, "cuMemPoolCreate"))
        return CUDA_ERROR_NOT_SUPPORTED;
    gp_rpool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    p->id = gp_client_next_id();
    p->dev = poolProps->location.id;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, p->id);
    gp_w_u32(w, (uint32_t)poolProps->allocType);
    gp_w_u32(w, (uint32_t)poolProps->handleTypes);
    gp_w_u32(w, (uint32_t)poolProps->location.type);
    gp_w_u32(w, location_id_out(&poolProps->location));
    gp_w_u64(w, poolProps->maxSize);
    gp_w_u32(w, poolProps->usage);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_POOL_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS) {
        pthread_mutex_lock(&g_pool_mu);
        if (gp_u64map_put(&g_pools, p->id, (uint64_t)(uintptr_t)p) < 0 || gp_reg_add(p, GP_R_POOL) < 0) {
            gp_u64map_del(&g_pools, p->id, NULL);
            rc = CUDA_ERROR_OUT_OF_MEMORY; /* the worker's pool goes with the session */
        }
        pthread_mutex_unlock(&g_pool_mu);
    }
    if (rc) {
        free(p);
        return rc;
    }
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, p->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_POOL_DESTROY, &r); /* the driver refuses a default pool */
    gp_rpc_end();
    if (rc)
        return rc;
    pthread_mutex_lock(&g_pool_mu);
    gp_u64map_del(&g_pools, p->id, NULL);
    pthread_mutex_unlock(&g_pool_mu);
    gp_reg_del(p);
    gp_dmem_forget_pool(p);
    free(p);
    return CUDA_SUCCESS;
}

/* The REUSE_* attributes are ints, the others cuuint64_t; one of neither kind is refused, as the driver does.
 */
static int attr_size(CUmemPool_attribute attr)
{
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: return (int)sizeof(int);
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT:
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT:
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: return (int)sizeof(cuuint64_t);
    default: return 0;
    }
}

GP_API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    if (rc)
        return rc;
    int size = attr_size(attr);
    if (value == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t v = size == (int)sizeof(int) ? (uint64_t)(*(int *)value != 0) : *(cuuint64_t *)value;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, p->id);
    gp_w_u32(w, (uint32_t)attr);
    gp_w_u64(w, v);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_POOL_SET_ATTR, &r);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    if (rc)
        return rc;
    int size = attr_size(attr);
    if (value == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, p->id);
    gp_w_u32(w, (uint32_t)attr);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_POOL_GET_ATTR, &r);
    uint64_t v = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_POOL_GET_ATTR);
    gp_rpc_end();
    if (rc)
        return rc;
    if (size == (int)sizeof(int))
        *(int *)value = v != 0;
    else
        *(cuuint64_t *)value = v;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, p->id);
    gp_w_u64(w, minBytesToKeep);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_POOL_TRIM, &r);
    gp_rpc_end();
    return rc;
}

/* ---- stream-ordered allocation -------------------------------------------------------------------- */

/* The context a stream argument works in (as gp_stream_arg resolves it). */
static gp_rctx *stream_ctx(CUstream h)
{
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        gp_rctx *c = NULL;
        return gp_ctx_cur(&c) == CUDA_SUCCESS ? c : NULL;
    }
    return ((gp_rstream *)h)->ctx;
}

/* pool NULL: the current pool of the stream's device (whose default pool is named on the way). */
static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize, gp_rpool *pool, CUstream h)
{
    GP_READY_OR_RETURN();
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = stream_ctx(h);
    gp_rpool *def = pool ? NULL : default_pool(c->dev);
    if (pool == NULL && def == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_w_u64(w, pool ? pool->id : 0);
    gp_w_u64(w, bytesize);
    gp_w_u64(w, def ? def->id : 0);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MEM_ALLOC_ASYNC, &r);
    uint64_t p = gp_r_u64(&r);
    gp_rpool *from = pool_by_id(gp_r_u64(&r));
    if (rc == CUDA_SUCCESS && (!gp_r_done(&r) || from == NULL))
        rc = gp_rpc_malformed(GP_OP_MEM_ALLOC_ASYNC);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_dmem_add_pooled(p, bytesize, c, from->dev, from);
    *dptr = p;
    return CUDA_SUCCESS;
}

/* The per-thread default stream is served by the legacy one (gp_stream_arg). */
#define PTDS CU_STREAM_PER_THREAD

GP_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(dptr, bytesize, NULL, hStream);
}

GP_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return alloc_async(dptr, bytesize, NULL, hStream ? hStream : PTDS);
}

static CUresult alloc_from_pool(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream h)
{
    gp_rpool *p;
    CUresult rc = pool_arg(pool, &p);
    return rc ? rc : alloc_async(dptr, bytesize, p, h);
}

GP_API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                        CUstream hStream)
{
    return alloc_from_pool(dptr, bytesize, pool, hStream);
}

GP_API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream hStream)
{
    return alloc_from_pool(dptr, bytesize, pool, hStream ? hStream : PTDS);
}

/* Any device allocation but a mapping may be freed in stream order (cuMemAlloc's too); the pointer leaves the
 * table at once, since nothing may use it after the free in stream order anyway. */
static CUresult free_async(CUdeviceptr dptr, CUstream h)
{
    GP_READY_OR_RETURN();
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc)
        return rc;
    if (dptr == 0 || !gp_dmem_del_unmapped(dptr))
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u64(w, sid);
    gp_w_u64(w, dptr);
    rc = gp_rpc_async(GP_OP_MEM_FREE_ASYNC);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(dptr, hStream);
}

GP_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    return free_async(dptr, hStream ? hStream : PTDS);
}

/* ---- virtual memory management -------------------------------------------------------------------- */

static void prop_write(gp_wbuf *w, const CUmemAllocationProp *p)
{
    gp_w_u32(w, (uint32_t)p->type);
    gp_w_u32(w, (uint32_t)p->requestedHandleTypes);
    gp_w_u32(w, (uint32_t)p->location.type);
    gp_w_u32(w, location_id_out(&p->location));
    gp_w_u32(w, p->allocFlags.compressionType);
    gp_w_u32(w, p->allocFlags.gpuDirectRDMACapable);
    gp_w_u32(w, p->allocFlags.usage);
}

static CUresult prop_check(const CUmemAllocationProp *p, const char *call)
{
    if (!location_remote_ok(&p->location, call) || !handle_types_remote_ok(p->requestedHandleTypes, call))
        return CUDA_ERROR_NOT_SUPPORTED;
    return CUDA_SUCCESS;
}

/* The device of a live allocation handle: -1 when the handle is none. */
static int handle_dev(CUmemGenericAllocationHandle h)
{
    uint64_t v = 0;
    pthread_mutex_lock(&g_pool_mu);
    bool found = h != 0 && h != UINT64_MAX && gp_u64map_get(&g_handles, h, &v);
    pthread_mutex_unlock(&g_pool_mu);
    return found ? (int)v - 1 : -1;
}

GP_API CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags option)
{
    GP_READY_OR_RETURN();
    if (granularity == NULL || prop == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = prop_check(prop, "cuMemGetAllocationGranularity");
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    prop_write(w, prop);
    gp_w_u32(w, (uint32_t)option);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_VMM_GRANULARITY, &r);
    uint64_t g = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_VMM_GRANULARITY);
    gp_rpc_end();
    if (rc)
        return rc;
    *granularity = (size_t)g;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags)
{
    GP_READY_OR_RETURN();
    if (handle == NULL || prop == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = prop_check(prop, "cuMemCreate");
    if (rc)
        return rc;
    uint64_t id = gp_client_next_id();
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, id);
    gp_w_u64(w, size);
    gp_w_u64(w, flags);
    prop_write(w, prop);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_VMM_CREATE, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    pthread_mutex_lock(&g_pool_mu);
    /* a device type location: the driver took its id as a device's */
    int put = gp_u64map_put(&g_handles, id, (uint64_t)prop->location.id + 1);
    pthread_mutex_unlock(&g_pool_mu);
    if (put < 0)
        return CUDA_ERROR_OUT_OF_MEMORY; /* the worker's allocation goes with the session */
    *handle = id;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    GP_READY_OR_RETURN();
    if (handle_dev(handle) < 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, handle);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_RELEASE, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    pthread_mutex_lock(&g_pool_mu);
    gp_u64map_del(&g_handles, handle, NULL);
    pthread_mutex_unlock(&g_pool_mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                    unsigned long long flags)
{
    GP_READY_OR_RETURN();
    if (ptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, size);
    gp_w_u64(w, alignment);
    gp_w_u64(w, addr);
    gp_w_u64(w, flags);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_RESERVE, &r);
    uint64_t p = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_VMM_RESERVE);
    gp_rpc_end();
    if (rc)
        return rc;
    *ptr = p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    GP_READY_OR_RETURN();
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, ptr);
    gp_w_u64(w, size);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_ADDRESS_FREE, &r);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                         unsigned long long flags)
{
    GP_READY_OR_RETURN();
    int dev = handle_dev(handle);
    if (dev < 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, ptr);
    gp_w_u64(w, size);
    gp_w_u64(w, offset);
    gp_w_u64(w, handle);
    gp_w_u64(w, flags);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_MAP, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_rctx *c = NULL;
    gp_dmem_add_mapped(ptr, size, gp_ctx_cur(&c) == CUDA_SUCCESS ? c : NULL, dev);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    GP_READY_OR_RETURN();
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, ptr);
    gp_w_u64(w, size);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_UNMAP, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        gp_dmem_del_mapped(ptr, size);
    return rc;
}

GP_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    GP_READY_OR_RETURN();
    if (desc == NULL || count == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (count > MAX_ACCESS_DESCS) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "cuMemSetAccess with more than %d descriptors is not supported over GPU-over-IP "
                    "(returning CUDA_ERROR_NOT_SUPPORTED)",
                    MAX_ACCESS_DESCS);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    uint8_t descs[MAX_ACCESS_DESCS * 12];
    for (size_t i = 0; i < count; i++) {
        uint32_t f[3] = {(uint32_t)desc[i].location.type, location_id_out(&desc[i].location),
                         (uint32_t)desc[i].flags};
        for (int k = 0; k < 3; k++)
            for (int b = 0; b < 4; b++)
                descs[i * 12 + (size_t)k * 4 + (size_t)b] = (uint8_t)(f[k] >> (8 * b)); /* little-endian */
    }
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, ptr);
    gp_w_u64(w, size);
    gp_w_blob(w, descs, count * 12);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_SET_ACCESS, &r);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location, CUdeviceptr ptr)
{
    GP_READY_OR_RETURN();
    if (flags == NULL || location == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u32(w, (uint32_t)location->type);
    gp_w_u32(w, location_id_out(location));
    gp_w_u64(w, ptr);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_GET_ACCESS, &r);
    uint64_t f = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_VMM_GET_ACCESS);
    gp_rpc_end();
    if (rc)
        return rc;
    *flags = f;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                       CUmemGenericAllocationHandle handle)
{
    GP_READY_OR_RETURN();
    if (prop == NULL || handle_dev(handle) < 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, gp_ctx_cur_id());
    gp_w_u64(w, handle);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(GP_OP_VMM_PROPS, &r);
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = (CUmemAllocationType)gp_r_u32(&r);
    p.requestedHandleTypes = (CUmemAllocationHandleType)gp_r_u32(&r);
    p.location.type = (CUmemLocationType)gp_r_u32(&r);
    p.location.id = (int)gp_r_u32(&r);
    p.allocFlags.compressionType = (unsigned char)gp_r_u32(&r);
    p.allocFlags.gpuDirectRDMACapable = (unsigned char)gp_r_u32(&r);
    p.allocFlags.usage = (unsigned short)gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_VMM_PROPS);
    gp_rpc_end();
    if (rc)
        return rc;
    if (p.location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        p.location.id = gp_dev_from_phys(p.location.id);
    *prop = p;
    return CUDA_SUCCESS;
}

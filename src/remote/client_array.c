/* client_array.c - CUDA arrays and mipmapped arrays for the remote driver.
 *
 * An array is a record holding its wire id and descriptor (client.h), so that copies are checked here
 * (whole elements, within the array) before anything is sent, as the driver checks them. Data moves as in
 * client_mem.c: host-to-array copies as HTOA pieces sent before the call returns, array-to-host copies as
 * ATOH chunks that are waited for, array-to-device and array-to-array copies queued for the worker
 * (ARRAY_LINEAR, MEMCPY_BOX). An array is addressed on the wire by its packed byte offset, which for a 1D
 * array is cuMemcpyHtoA's offset. The levels of a mipmapped array are arrays that go with it.
 */
#include "remote/client.h"
#include "common/array_format.h"

#include <stdlib.h>
#include <string.h>

typedef struct gp_rmipmap {
    uint64_t id;
    gp_rctx *ctx;
    gp_rarray *levels[32]; /* those asked for (a level is always the same handle) */
} gp_rmipmap;

static gp_rarray *array_new(gp_rctx *c, const CUDA_ARRAY3D_DESCRIPTOR *d, bool level)
{
    gp_rarray *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->id = gp_client_next_id();
    a->ctx = c;
    a->desc = *d;
    /* 0 for formats whose layout the client does not know (copies then refuse) */
    a->elem = (size_t)gp_array_format_bytes(d->Format) * d->NumChannels;
    if (a->elem == 0)
        a->elem = 1;
    a->row = d->Width * a->elem;
    a->rows = d->Height ? d->Height : 1;
    a->slices = d->Depth ? d->Depth : 1;
    a->level = level;
    return a;
}

static void desc_write(gp_wbuf *w, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    gp_w_u64(w, d->Width);
    gp_w_u64(w, d->Height);
    gp_w_u64(w, d->Depth);
    gp_w_u32(w, (uint32_t)d->Format);
    gp_w_u32(w, d->NumChannels);
    gp_w_u32(w, d->Flags);
}

CUresult gp_array_arg(CUarray h, gp_rarray **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_ARRAY)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rarray *a = (gp_rarray *)h;
    if (!atomic_load(&a->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = a;
    return CUDA_SUCCESS;
}

static CUresult array_create(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pHandle == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rarray *a = array_new(c, d, false);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, a->id);
    desc_write(w, d);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_ARRAY_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(a, GP_R_ARRAY) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(a);
        return rc;
    }
    *pHandle = (CUarray)a;
    return CUDA_SUCCESS;
}

GP_API CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray)
{
    if (pAllocateArray == NULL) {
        GP_READY_OR_RETURN();
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUDA_ARRAY3D_DESCRIPTOR d = {pAllocateArray->Width,  pAllocateArray->Height,      0,
                                 pAllocateArray->Format, pAllocateArray->NumChannels, 0};
    return array_create(pHandle, &d);
}

GP_API CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray)
{
    return array_create(pHandle, pAllocateArray);
}

GP_API CUresult cuArrayDestroy(CUarray hArray)
{
    gp_rarray *a;
    CUresult rc = gp_array_arg(hArray, &a);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, a->ctx->id);
    gp_w_u64(w, a->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_ARRAY_DESTROY, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS) {
        gp_reg_del(a);
        free(a);
    }
    return rc;
}

GP_API CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    gp_rarray *a;
    CUresult rc = gp_array_arg(hArray, &a);
    if (rc)
        return rc;
    if (pArrayDescriptor == NULL || a->desc.Depth != 0)
        return CUDA_ERROR_INVALID_VALUE; /* a 3D array has no 2D descriptor */
    pArrayDescriptor->Width = a->desc.Width;
    pArrayDescriptor->Height = a->desc.Height;
    pArrayDescriptor->Format = a->desc.Format;
    pArrayDescriptor->NumChannels = a->desc.NumChannels;
    return CUDA_SUCCESS;
}

GP_API CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    gp_rarray *a;
    CUresult rc = gp_array_arg(hArray, &a);
    if (rc)
        return rc;
    if (pArrayDescriptor == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pArrayDescriptor = a->desc;
    return CUDA_SUCCESS;
}

/* ARRAY_MEM_REQ and MIPMAP_MEM_REQ. */
static CUresult mem_req(unsigned op, uint64_t ctx, uint64_t id, CUdevice dev,
                        CUDA_ARRAY_MEMORY_REQUIREMENTS *req)
{
    if (req == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx);
    gp_w_u64(w, id);
    gp_w_u32(w, (uint32_t)dev);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(op, &r);
    uint64_t size = gp_r_u64(&r), align = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(op);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS) {
        memset(req, 0, sizeof *req);
        req->size = (size_t)size;
        req->alignment = (size_t)align;
    }
    return rc;
}

GP_API CUresult cuArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *memoryRequirements,
                                             CUarray array, CUdevice device)
{
    gp_rarray *a;
    CUresult rc = gp_array_arg(array, &a);
    if (rc)
        return rc == CUDA_ERROR_INVALID_HANDLE ? CUDA_ERROR_INVALID_VALUE : rc;
    return mem_req(GP_OP_ARRAY_MEM_REQ, a->ctx->id, a->id, device, memoryRequirements);
}

/* ---- mipmapped arrays ----------------------------------------------------------------------------- */

static CUresult mipmap_arg(CUmipmappedArray h, gp_rmipmap **out)
{
    GP_READY_OR_RETURN();
    if (h == NULL || gp_reg_kind(h) != GP_R_MIPMAP)
        return CUDA_ERROR_INVALID_HANDLE;
    gp_rmipmap *m = (gp_rmipmap *)h;
    if (!atomic_load(&m->ctx->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = m;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                       const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,
                                       unsigned int numMipmapLevels)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pHandle == NULL || pMipmappedArrayDesc == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rmipmap *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->id = gp_client_next_id();
    m->ctx = c;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u64(w, m->id);
    desc_write(w, pMipmappedArrayDesc);
    gp_w_u32(w, numMipmapLevels);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MIPMAP_CREATE, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS && gp_reg_add(m, GP_R_MIPMAP) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc) {
        free(m);
        return rc;
    }
    *pHandle = (CUmipmappedArray)m;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMipmappedArrayGetLevel(CUarray *pLevelArray, CUmipmappedArray hMipmappedArray,
                                         unsigned int level)
{
    gp_rmipmap *m;
    CUresult rc = mipmap_arg(hMipmappedArray, &m);
    if (rc)
        return rc;
    if (pLevelArray == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_reg_lock();
    gp_rarray *have = level < 32 ? m->levels[level] : NULL;
    gp_reg_unlock();
    if (have) {
        *pLevelArray = (CUarray)have;
        return CUDA_SUCCESS;
    }
    uint64_t id = gp_client_next_id();
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    gp_w_u32(w, level);
    gp_w_u64(w, id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MIPMAP_LEVEL, &r);
    CUDA_ARRAY3D_DESCRIPTOR d;
    d.Width = (size_t)gp_r_u64(&r);
    d.Height = (size_t)gp_r_u64(&r);
    d.Depth = (size_t)gp_r_u64(&r);
    d.Format = (CUarray_format)gp_r_u32(&r);
    d.NumChannels = gp_r_u32(&r);
    d.Flags = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !gp_r_done(&r))
        rc = gp_rpc_malformed(GP_OP_MIPMAP_LEVEL);
    gp_rpc_end();
    if (rc)
        return rc;
    gp_rarray *a = level < 32 ? array_new(m->ctx, &d, true) : NULL;
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY; /* (a level past 32 cannot exist: 2^32 elements wide) */
    a->id = id;
    if (gp_reg_add(a, GP_R_ARRAY) < 0) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_reg_lock();
    m->levels[level] = a;
    gp_reg_unlock();
    *pLevelArray = (CUarray)a;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMipmappedArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *memoryRequirements,
                                                      CUmipmappedArray mipmap, CUdevice device)
{
    gp_rmipmap *m;
    CUresult rc = mipmap_arg(mipmap, &m);
    if (rc)
        return rc == CUDA_ERROR_INVALID_HANDLE ? CUDA_ERROR_INVALID_VALUE : rc;
    return mem_req(GP_OP_MIPMAP_MEM_REQ, m->ctx->id, m->id, device, memoryRequirements);
}

GP_API CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    gp_rmipmap *m;
    CUresult rc = mipmap_arg(hMipmappedArray, &m);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, m->ctx->id);
    gp_w_u64(w, m->id);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_MIPMAP_DESTROY, &r);
    gp_rpc_end();
    if (rc)
        return rc;
    for (int l = 0; l < 32; l++)
        if (m->levels[l]) {
            gp_reg_del(m->levels[l]);
            free(m->levels[l]);
        }
    gp_reg_del(m);
    free(m);
    return CUDA_SUCCESS;
}

/* ---- 1D copies (byte offsets) --------------------------------------------------------------------- */

#define PTDS CU_STREAM_PER_THREAD

/* n bytes at off fit in the array. */
static bool fits(const gp_rarray *a, size_t off, size_t n)
{
    size_t total = a->row * a->rows * a->slices;
    return off <= total && n <= total - off;
}

static bool device_range(CUdeviceptr p, size_t n)
{
    uint64_t base, size;
    return gp_dmem_find(p, &base, &size) && n <= size - (p - base);
}

/* On a capturing stream: a staged node (the range within one row of the array, as a box). */
static CUresult capture_1d(gp_rgraph *g, uint64_t cid, uint64_t sid, gp_rarray *a, size_t off, void *host,
                           size_t n, bool to_array)
{
    size_t x = off % a->row;
    if (n > a->row - x) {
        gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                    "a captured array copy across rows is not supported over GPU-over-IP (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    gp_copy_side arr = {
        .kind = 2, .h = a->id, .x = x, .y = off / a->row % a->rows, .z = off / (a->row * a->rows)};
    gp_copy_side hs = {.kind = 0};
    gp_hostbox box = {host, n, n, n, 1, 1, to_array};
    return to_array ? gp_capture_copy(g, cid, sid, &arr, &hs, n, 1, 1, &box)
                    : gp_capture_copy(g, cid, sid, &hs, &arr, n, 1, 1, &box);
}

static CUresult htoa(CUarray dst, size_t off, const void *src, size_t n, CUstream h, bool sync)
{
    gp_rarray *a;
    uint64_t sid, cid;
    CUresult rc = gp_array_arg(dst, &a);
    if (rc || (rc = gp_stream_arg(h, &sid, &cid)))
        return rc;
    if ((src == NULL && n) || !fits(a, off, n))
        return CUDA_ERROR_INVALID_VALUE;
    if (n == 0)
        return CUDA_SUCCESS;
    gp_rgraph *g = gp_stream_capture(h);
    if (g)
        return capture_1d(g, cid, sid, a, off, (void *)(uintptr_t)src, n, true);
    gp_rpc_begin();
    rc = gp_rpc_htoa(cid, sid, a->id, off, src, n, !sync);
    gp_rpc_end();
    return rc;
}

static CUresult atoh(void *dst, CUarray src, size_t off, size_t n, CUstream h)
{
    gp_rarray *a;
    uint64_t sid, cid;
    CUresult rc = gp_array_arg(src, &a);
    if (rc || (rc = gp_stream_arg(h, &sid, &cid)))
        return rc;
    if ((dst == NULL && n) || !fits(a, off, n))
        return CUDA_ERROR_INVALID_VALUE;
    if (n == 0)
        return CUDA_SUCCESS;
    gp_rgraph *g = gp_stream_capture(h);
    if (g)
        return capture_1d(g, cid, sid, a, off, dst, n, false);
    gp_rpc_begin();
    rc = gp_rpc_atoh(cid, sid, dst, a->id, off, n);
    gp_rpc_end();
    return rc;
}

/* DtoA (kind 1), AtoD (2), AtoA (3): queued, run by the worker on the NULL stream. */
static CUresult linear(uint32_t kind, uint64_t dst, size_t doff, uint64_t src, size_t soff, size_t n,
                       CUstream h)
{
    gp_rarray *d = NULL, *s = NULL;
    uint64_t sid, cid;
    CUresult rc = gp_stream_arg(h, &sid, &cid);
    if (rc || ((kind == 1 || kind == 3) && (rc = gp_array_arg((CUarray)(uintptr_t)dst, &d))) ||
        ((kind == 2 || kind == 3) && (rc = gp_array_arg((CUarray)(uintptr_t)src, &s))))
        return rc;
    if (d && !fits(d, doff, n))
        return CUDA_ERROR_INVALID_VALUE;
    if (s && (!fits(s, soff, n) || n % s->elem != 0 || (d && d->elem != s->elem)))
        return CUDA_ERROR_INVALID_VALUE; /* cuda.h: whole elements, of one size */
    if ((kind == 1 && !device_range(src, n)) || (kind == 2 && !device_range(dst, n)))
        return CUDA_ERROR_INVALID_VALUE;
    if (n == 0)
        return CUDA_SUCCESS;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, cid);
    gp_w_u32(w, kind);
    gp_w_u64(w, d ? d->id : dst);
    gp_w_u64(w, doff);
    gp_w_u64(w, s ? s->id : src);
    gp_w_u64(w, soff);
    gp_w_u64(w, n);
    rc = gp_rpc_async(GP_OP_ARRAY_LINEAR);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuMemcpyHtoA_v2(CUarray dstArray, size_t dstOffset, const void *srcHost, size_t ByteCount)
{
    return htoa(dstArray, dstOffset, srcHost, ByteCount, NULL, true);
}
GP_API CUresult cuMemcpyHtoA_v2_ptds(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                     size_t ByteCount)
{
    return htoa(dstArray, dstOffset, srcHost, ByteCount, PTDS, true);
}
GP_API CUresult cuMemcpyHtoAAsync_v2(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                     size_t ByteCount, CUstream hStream)
{
    return htoa(dstArray, dstOffset, srcHost, ByteCount, hStream, false);
}
GP_API CUresult cuMemcpyHtoAAsync_v2_ptsz(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                          size_t ByteCount, CUstream hStream)
{
    return htoa(dstArray, dstOffset, srcHost, ByteCount, hStream ? hStream : PTDS, false);
}
GP_API CUresult cuMemcpyAtoH_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return atoh(dstHost, srcArray, srcOffset, ByteCount, NULL);
}
GP_API CUresult cuMemcpyAtoH_v2_ptds(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return atoh(dstHost, srcArray, srcOffset, ByteCount, PTDS);
}
GP_API CUresult cuMemcpyAtoHAsync_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount,
                                     CUstream hStream)
{
    return atoh(dstHost, srcArray, srcOffset, ByteCount, hStream);
}
GP_API CUresult cuMemcpyAtoHAsync_v2_ptsz(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount,
                                          CUstream hStream)
{
    return atoh(dstHost, srcArray, srcOffset, ByteCount, hStream ? hStream : PTDS);
}
GP_API CUresult cuMemcpyDtoA_v2(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice, size_t ByteCount)
{
    return linear(1, (uint64_t)(uintptr_t)dstArray, dstOffset, srcDevice, 0, ByteCount, NULL);
}
GP_API CUresult cuMemcpyDtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice,
                                     size_t ByteCount)
{
    return linear(1, (uint64_t)(uintptr_t)dstArray, dstOffset, srcDevice, 0, ByteCount, PTDS);
}
GP_API CUresult cuMemcpyAtoD_v2(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return linear(2, dstDevice, 0, (uint64_t)(uintptr_t)srcArray, srcOffset, ByteCount, NULL);
}
GP_API CUresult cuMemcpyAtoD_v2_ptds(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset,
                                     size_t ByteCount)
{
    return linear(2, dstDevice, 0, (uint64_t)(uintptr_t)srcArray, srcOffset, ByteCount, PTDS);
}
GP_API CUresult cuMemcpyAtoA_v2(CUarray dstArray, size_t dstOffset, CUarray srcArray, size_t srcOffset,
                                size_t ByteCount)
{
    return linear(3, (uint64_t)(uintptr_t)dstArray, dstOffset, (uint64_t)(uintptr_t)srcArray, srcOffset,
                  ByteCount, NULL);
}
GP_API CUresult cuMemcpyAtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUarray srcArray, size_t srcOffset,
                                     size_t ByteCount)
{
    return linear(3, (uint64_t)(uintptr_t)dstArray, dstOffset, (uint64_t)(uintptr_t)srcArray, srcOffset,
                  ByteCount, PTDS);
}

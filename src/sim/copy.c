/* copy.c - memcpy and memset, synchronous and asynchronous, linear, 2D and 3D, in every direction.
 *
 * Each side of a copy is classified through the allocation table: device memory (device or managed
 * allocations), pinned host memory (cuMemHostAlloc / cuMemHostRegister), or pageable host memory (anything
 * else). The copy is an operation on a stream (the legacy default stream, or the calling thread's default
 * stream for the _ptds/_ptsz entry points), executed in order; host<->device copies occupy the device's
 * copy engine for bytes / link bandwidth, device<->device copies its memory. Host synchronisation follows
 * the driver's documented rules: synchronous copies return once the data has arrived (device-to-device
 * ones do not wait), and an asynchronous copy that touches pageable host memory behaves synchronously.
 * CUDA arrays are not simulated: a copy naming one returns CUDA_ERROR_NOT_SUPPORTED.
 */
#include "sim/sim.h"

#include <string.h>

enum side_kind { SIDE_PAGEABLE, SIDE_PINNED, SIDE_DEVICE };

typedef struct side {
    uint8_t *p; /* host address of the first byte */
    int kind;
} side;

/* A device-accessible address: must lie in an allocation, with `extent` bytes valid from it. */
static CUresult side_device(CUdeviceptr d, size_t extent, side *out)
{
    gp_alloc *a;
    uint8_t *h = gp_mem_host(d, extent, &a);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    out->p = h;
    out->kind = (a->kind == GP_ALLOC_HOST || a->kind == GP_ALLOC_REGISTERED) ? SIDE_PINNED : SIDE_DEVICE;
    return CUDA_SUCCESS;
}

/* A host address (or, with unified addressing, any address): pinned, device, or plain pageable memory. */
static CUresult side_any(const void *p, size_t extent, side *out)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = gp_mem_find((CUdeviceptr)(uintptr_t)p, 1);
    if (a == NULL) {
        out->p = (uint8_t *)p;
        out->kind = SIDE_PAGEABLE;
        return CUDA_SUCCESS;
    }
    return side_device((CUdeviceptr)(uintptr_t)p, extent, out);
}

static int engine_of(const side *dst, const side *src)
{
    bool dd = dst->kind == SIDE_DEVICE, sd = src->kind == SIDE_DEVICE;
    if (dd && sd)
        return GP_ENGINE_D2D;
    if (dd)
        return GP_ENGINE_H2D;
    if (sd)
        return GP_ENGINE_D2H;
    return GP_ENGINE_COUNT; /* host to host: no device time */
}

/* Where a copy or memset goes: the given stream, or the default stream of the call's flavour. */
static CUresult target_stream(CUstream h, bool pt, gp_stream **out)
{
    gp_ctx *c = NULL;
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        CUresult rc = gp_ctx_current(&c);
        if (rc)
            return rc;
    } else {
        GP_INIT_OR_RETURN();
    }
    return gp_stream_resolve(h, pt, c, out);
}

enum wait_mode { NO_WAIT, WAIT };

static CUresult submit(gp_stream *s, gp_op *op, int mode)
{
    CUresult rc = gp_ctx_sticky(s->ctx);
    if (rc)
        return rc;
    uint64_t seq = gp_stream_enqueue(s, op);
    if (mode == WAIT) {
        gp_stream_wait(s, seq);
        return gp_ctx_sticky(s->ctx);
    }
    return CUDA_SUCCESS;
}

/* A linear copy between two resolved sides. `sync`: the call is one of the synchronous variants. */
static CUresult copy_linear(gp_stream *s, side dst, side src, size_t n, bool sync)
{
    gp_op op = {.kind = GP_OP_COPY};
    op.engine = (uint8_t)engine_of(&dst, &src);
    op.u.c.dst = dst.p;
    op.u.c.src = src.p;
    op.u.c.width = n;
    op.u.c.height = op.u.c.depth = 1;
    op.u.c.bytes = n;
    bool pageable = dst.kind == SIDE_PAGEABLE || src.kind == SIDE_PAGEABLE;
    bool d2d = op.engine == GP_ENGINE_D2D;
    return submit(s, &op, (sync && !d2d) || pageable ? WAIT : NO_WAIT);
}

static CUresult memcpy_unified(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h, bool pt, bool sync)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc || n == 0)
        return rc;
    side d, so;
    if ((rc = side_any((void *)(uintptr_t)dst, n, &d)) ||
        (rc = side_any((const void *)(uintptr_t)src, n, &so)))
        return rc;
    return copy_linear(s, d, so, n, sync);
}

GP_API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return memcpy_unified(dst, src, ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return memcpy_unified(dst, src, ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return memcpy_unified(dst, src, ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return memcpy_unified(dst, src, ByteCount, hStream, true, false);
}

/* HtoD / DtoH / DtoD: a device side must be a device-accessible allocation; a host side may be anything. */
enum { HOST_SIDE, DEVICE_SIDE };

static CUresult memcpy_dir(int dkind, CUdeviceptr dst, int skind, CUdeviceptr src, size_t n, CUstream h,
                           bool pt, bool sync)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc || n == 0)
        return rc;
    side d, so;
    rc = dkind == HOST_SIDE ? side_any((void *)(uintptr_t)dst, n, &d) : side_device(dst, n, &d);
    if (rc == CUDA_SUCCESS)
        rc = skind == HOST_SIDE ? side_any((const void *)(uintptr_t)src, n, &so) : side_device(src, n, &so);
    if (rc)
        return rc;
    return copy_linear(s, d, so, n, sync);
}

#define HP(p) ((CUdeviceptr)(uintptr_t)(p))

GP_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, HOST_SIDE, HP(srcHost), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, HOST_SIDE, HP(srcHost), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return memcpy_dir(HOST_SIDE, HP(dstHost), DEVICE_SIDE, srcDevice, ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyDtoH_v2_ptds(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return memcpy_dir(HOST_SIDE, HP(dstHost), DEVICE_SIDE, srcDevice, ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, DEVICE_SIDE, srcDevice, ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, DEVICE_SIDE, srcDevice, ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                     CUstream hStream)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, HOST_SIDE, HP(srcHost), ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                          CUstream hStream)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, HOST_SIDE, HP(srcHost), ByteCount, hStream, true, false);
}

GP_API CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
{
    return memcpy_dir(HOST_SIDE, HP(dstHost), DEVICE_SIDE, srcDevice, ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return memcpy_dir(HOST_SIDE, HP(dstHost), DEVICE_SIDE, srcDevice, ByteCount, hStream, true, false);
}

GP_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                     CUstream hStream)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, DEVICE_SIDE, srcDevice, ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return memcpy_dir(DEVICE_SIDE, dstDevice, DEVICE_SIDE, srcDevice, ByteCount, hStream, true, false);
}

/* ---- peer copies ---------------------------------------------------------------------------------- */

static CUresult memcpy_peer(CUdeviceptr dst, CUcontext dstCtx, CUdeviceptr src, CUcontext srcCtx, size_t n,
                            CUstream h, bool pt, bool sync)
{
    GP_INIT_OR_RETURN();
    gp_ctx *dc, *sc;
    if (dstCtx == NULL || srcCtx == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = gp_ctx_resolve(dstCtx, &dc);
    if (rc == CUDA_SUCCESS)
        rc = gp_ctx_resolve(srcCtx, &sc);
    if (rc)
        return rc;
    gp_stream *s;
    rc = target_stream(h, pt, &s);
    if (rc || n == 0)
        return rc;
    side d, so;
    if ((rc = side_device(dst, n, &d)) || (rc = side_device(src, n, &so)))
        return rc;
    return copy_linear(s, d, so, n, sync);
}

GP_API CUresult cuMemcpyPeer(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                             CUcontext srcContext, size_t ByteCount)
{
    return memcpy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyPeer_ptds(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                  CUcontext srcContext, size_t ByteCount)
{
    return memcpy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                  CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    return memcpy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                       CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    return memcpy_peer(dstDevice, dstContext, srcDevice, srcContext, ByteCount, hStream, true, false);
}

/* ---- 2D and 3D copies ----------------------------------------------------------------------------- */

typedef struct region {
    CUmemorytype type;
    const void *host;
    CUdeviceptr dev;
    CUarray array;
    size_t x, y, z, pitch, height; /* height: rows per slice (3D) */
} region;

static CUresult resolve_region(const region *r, size_t width, size_t rows, size_t depth, side *out)
{
    if (r->type == CU_MEMORYTYPE_ARRAY || r->array != NULL)
        GP_NOT_SUPPORTED("copies to or from CUDA arrays");
    if (r->type != CU_MEMORYTYPE_HOST && r->type != CU_MEMORYTYPE_DEVICE && r->type != CU_MEMORYTYPE_UNIFIED)
        return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = r->pitch ? r->pitch : width + r->x;
    size_t height = r->height ? r->height : rows + r->y;
    if (pitch < width + r->x || height < rows + r->y)
        return CUDA_ERROR_INVALID_VALUE;
    size_t slice = pitch * height;
    size_t first = r->z * slice + r->y * pitch + r->x;
    size_t extent = (depth - 1) * slice + (rows - 1) * pitch + width;
    if (r->type == CU_MEMORYTYPE_HOST) {
        if (r->host == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        CUresult rc = side_any((const uint8_t *)r->host + first, extent, out);
        return rc;
    }
    CUdeviceptr base = r->type == CU_MEMORYTYPE_UNIFIED && r->host ? (CUdeviceptr)(uintptr_t)r->host : r->dev;
    if (r->type == CU_MEMORYTYPE_UNIFIED)
        return side_any((const void *)(uintptr_t)(base + first), extent, out);
    return side_device(base + first, extent, out);
}

static CUresult copy_strided(const region *src, const region *dst, size_t width, size_t rows, size_t depth,
                             CUstream h, bool pt, bool sync)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc)
        return rc;
    if (width == 0 || rows == 0 || depth == 0)
        return CUDA_SUCCESS;
    side d, so;
    if ((rc = resolve_region(src, width, rows, depth, &so)) ||
        (rc = resolve_region(dst, width, rows, depth, &d)))
        return rc;
    size_t spitch = src->pitch ? src->pitch : width + src->x,
           dpitch = dst->pitch ? dst->pitch : width + dst->x;
    size_t sh = src->height ? src->height : rows + src->y, dh = dst->height ? dst->height : rows + dst->y;
    gp_op op = {.kind = GP_OP_COPY};
    op.engine = (uint8_t)engine_of(&d, &so);
    op.u.c.dst = d.p;
    op.u.c.src = so.p;
    op.u.c.width = width;
    op.u.c.height = rows;
    op.u.c.depth = depth;
    op.u.c.dpitch = dpitch;
    op.u.c.spitch = spitch;
    op.u.c.dslice = dpitch * dh;
    op.u.c.sslice = spitch * sh;
    op.u.c.bytes = (uint64_t)width * rows * depth;
    bool pageable = d.kind == SIDE_PAGEABLE || so.kind == SIDE_PAGEABLE;
    return submit(s, &op, (sync && op.engine != GP_ENGINE_D2D) || pageable ? WAIT : NO_WAIT);
}

static CUresult memcpy2d(const CUDA_MEMCPY2D *p, CUstream h, bool pt, bool sync)
{
    GP_INIT_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    region s = {p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY, 0,
                p->srcPitch,      0};
    region d = {p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY, 0,
                p->dstPitch,      0};
    if (p->Height > 1 && ((p->srcPitch && p->srcPitch < p->WidthInBytes + p->srcXInBytes) ||
                          (p->dstPitch && p->dstPitch < p->WidthInBytes + p->dstXInBytes)))
        return CUDA_ERROR_INVALID_VALUE;
    return copy_strided(&s, &d, p->WidthInBytes, p->Height, 1, h, pt, sync);
}

GP_API CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *pCopy)
{
    return memcpy2d(pCopy, NULL, false, true);
}

GP_API CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *pCopy)
{
    return memcpy2d(pCopy, NULL, true, true);
}

GP_API CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *pCopy)
{
    return memcpy2d(pCopy, NULL, false, true);
}

GP_API CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *pCopy)
{
    return memcpy2d(pCopy, NULL, true, true);
}

GP_API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *pCopy, CUstream hStream)
{
    return memcpy2d(pCopy, hStream, false, false);
}

GP_API CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *pCopy, CUstream hStream)
{
    return memcpy2d(pCopy, hStream, true, false);
}

static CUresult memcpy3d(const CUDA_MEMCPY3D *p, CUstream h, bool pt, bool sync)
{
    GP_INIT_OR_RETURN();
    if (p == NULL || p->reserved0 != NULL || p->reserved1 != NULL || p->srcLOD != 0 || p->dstLOD != 0)
        return CUDA_ERROR_INVALID_VALUE;
    region s = {p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes,
                p->srcY,          p->srcZ,    p->srcPitch,  p->srcHeight};
    region d = {p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes,
                p->dstY,          p->dstZ,    p->dstPitch,  p->dstHeight};
    return copy_strided(&s, &d, p->WidthInBytes, p->Height, p->Depth, h, pt, sync);
}

GP_API CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *pCopy)
{
    return memcpy3d(pCopy, NULL, false, true);
}

GP_API CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *pCopy)
{
    return memcpy3d(pCopy, NULL, true, true);
}

GP_API CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return memcpy3d(pCopy, hStream, false, false);
}

GP_API CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return memcpy3d(pCopy, hStream, true, false);
}

/* ---- memset --------------------------------------------------------------------------------------- */

static CUresult memset_common(CUdeviceptr dst, size_t pitch, uint32_t value, unsigned elem, size_t width,
                              size_t height, CUstream h, bool pt)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc)
        return rc;
    if (dst % elem != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (width == 0 || height == 0)
        return CUDA_SUCCESS;
    if (height > 1 && (pitch < width * elem || pitch % elem != 0))
        return CUDA_ERROR_INVALID_VALUE;
    size_t extent = (height - 1) * pitch + width * elem;
    side d;
    if ((rc = side_device(dst, extent, &d)))
        return rc;
    gp_op op = {.kind = GP_OP_MEMSET};
    op.u.m.dst = d.p;
    op.u.m.value = value;
    op.u.m.elem = elem;
    op.u.m.width = width;
    op.u.m.height = height;
    op.u.m.pitch = height > 1 ? pitch : width * elem;
    /* Asynchronous with respect to the host, except into pinned host memory. */
    return submit(s, &op, d.kind == SIDE_PINNED ? WAIT : NO_WAIT);
}

#define MEMSET_1D(name, type, elem, pt)                              \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N)    \
    {                                                                \
        return memset_common(dstDevice, 0, v, elem, N, 1, NULL, pt); \
    }
#define MEMSET_1D_ASYNC(name, type, elem, pt)                                       \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N, CUstream hStream) \
    {                                                                               \
        return memset_common(dstDevice, 0, v, elem, N, 1, hStream, pt);             \
    }
#define MEMSET_2D(name, type, elem, pt)                                                               \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height) \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height, NULL, pt);                  \
    }
#define MEMSET_2D_ASYNC(name, type, elem, pt)                                                         \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height, \
                         CUstream hStream)                                                            \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height, hStream, pt);               \
    }

MEMSET_1D(cuMemsetD8_v2, unsigned char, 1, false)
MEMSET_1D(cuMemsetD8_v2_ptds, unsigned char, 1, true)
MEMSET_1D(cuMemsetD16_v2, unsigned short, 2, false)
MEMSET_1D(cuMemsetD16_v2_ptds, unsigned short, 2, true)
MEMSET_1D(cuMemsetD32_v2, unsigned int, 4, false)
MEMSET_1D(cuMemsetD32_v2_ptds, unsigned int, 4, true)
MEMSET_1D_ASYNC(cuMemsetD8Async, unsigned char, 1, false)
MEMSET_1D_ASYNC(cuMemsetD8Async_ptsz, unsigned char, 1, true)
MEMSET_1D_ASYNC(cuMemsetD16Async, unsigned short, 2, false)
MEMSET_1D_ASYNC(cuMemsetD16Async_ptsz, unsigned short, 2, true)
MEMSET_1D_ASYNC(cuMemsetD32Async, unsigned int, 4, false)
MEMSET_1D_ASYNC(cuMemsetD32Async_ptsz, unsigned int, 4, true)
MEMSET_2D(cuMemsetD2D8_v2, unsigned char, 1, false)
MEMSET_2D(cuMemsetD2D8_v2_ptds, unsigned char, 1, true)
MEMSET_2D(cuMemsetD2D16_v2, unsigned short, 2, false)
MEMSET_2D(cuMemsetD2D16_v2_ptds, unsigned short, 2, true)
MEMSET_2D(cuMemsetD2D32_v2, unsigned int, 4, false)
MEMSET_2D(cuMemsetD2D32_v2_ptds, unsigned int, 4, true)
MEMSET_2D_ASYNC(cuMemsetD2D8Async, unsigned char, 1, false)
MEMSET_2D_ASYNC(cuMemsetD2D8Async_ptsz, unsigned char, 1, true)
MEMSET_2D_ASYNC(cuMemsetD2D16Async, unsigned short, 2, false)
MEMSET_2D_ASYNC(cuMemsetD2D16Async_ptsz, unsigned short, 2, true)
MEMSET_2D_ASYNC(cuMemsetD2D32Async, unsigned int, 4, false)
MEMSET_2D_ASYNC(cuMemsetD2D32Async_ptsz, unsigned int, 4, true)

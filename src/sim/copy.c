/* copy.c - memcpy and memset, synchronous and asynchronous, linear, 2D and 3D, in every direction, CUDA
 * arrays included.
 *
 * Each side of a copy is a region: host, device or unified memory, or a CUDA array (array.c: elements
 * stored linearly). Addresses are classified through the allocation table: device memory (device, managed
 * and mapped VMM allocations, and arrays), pinned host memory (cuMemHostAlloc / cuMemHostRegister), or
 * pageable host memory (anything else). The copy is an operation on a stream (the legacy default stream,
 * or the calling thread's default stream for the _ptds/_ptsz entry points), executed in order; host<->device
 * copies occupy the device's copy engine for bytes / link bandwidth, device<->device copies its memory.
 * Host synchronisation follows the driver's documented rules: synchronous copies return once the data has
 * arrived (device-to-device ones do not wait), and an asynchronous copy that touches pageable host memory
 * behaves synchronously. On a capturing stream an asynchronous copy or memset becomes a graph node
 * (capture.c) described by its CUDA_MEMCPY3D / memset parameters, resolved again at each graph launch.
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

/* ---- regions -------------------------------------------------------------------------------------- */

typedef struct region {
    CUmemorytype type;
    const void *host;
    CUdeviceptr dev;
    CUarray array;
    size_t x, y, z, pitch, height; /* height: rows per slice (3D) */
    bool linear; /* an array addressed as its bytes in order: x is the offset (cuMemcpyHtoA and kin) */
} region;

/* A resolved region: where its first byte is, and its row and slice pitches. */
typedef struct place {
    side s;
    size_t pitch, slice;
} place;

static CUresult resolve_array(const region *r, size_t width, size_t rows, size_t depth, place *out)
{
    gp_array *a = gp_array_of(r->array);
    if (a == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint8_t *base = a->a->host + a->offset;
    out->s.kind = SIDE_DEVICE;
    if (r->linear) {
        size_t total = a->pitch * a->rows * a->slices;
        if (r->x > total || width > total - r->x)
            return CUDA_ERROR_INVALID_VALUE;
        out->s.p = base + r->x;
        out->pitch = width;
        out->slice = width;
        return CUDA_SUCCESS;
    }
    /* cuda.h: for CUDA arrays, the X offset in bytes must be a multiple of the element size. */
    if (r->x % a->elem != 0 || r->x > a->pitch || width > a->pitch - r->x || r->y > a->rows ||
        rows > a->rows - r->y || r->z > a->slices || depth > a->slices - r->z)
        return CUDA_ERROR_INVALID_VALUE;
    out->pitch = a->pitch;
    out->slice = a->pitch * a->rows;
    out->s.p = base + r->z * out->slice + r->y * out->pitch + r->x;
    return CUDA_SUCCESS;
}

static CUresult resolve_region(const region *r, size_t width, size_t rows, size_t depth, place *out)
{
    if (r->type == CU_MEMORYTYPE_ARRAY)
        return resolve_array(r, width, rows, depth, out);
    if (r->type != CU_MEMORYTYPE_HOST && r->type != CU_MEMORYTYPE_DEVICE && r->type != CU_MEMORYTYPE_UNIFIED)
        return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = r->pitch ? r->pitch : width + r->x;
    size_t height = r->height ? r->height : rows + r->y;
    if (pitch < width + r->x || height < rows + r->y)
        return CUDA_ERROR_INVALID_VALUE;
    out->pitch = pitch;
    out->slice = pitch * height;
    size_t first = r->z * out->slice + r->y * pitch + r->x;
    size_t extent = (depth - 1) * out->slice + (rows - 1) * pitch + width;
    if (r->type == CU_MEMORYTYPE_HOST) {
        if (r->host == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        return side_any((const uint8_t *)r->host + first, extent, &out->s);
    }
    CUdeviceptr base = r->type == CU_MEMORYTYPE_UNIFIED && r->host ? (CUdeviceptr)(uintptr_t)r->host : r->dev;
    if (r->type == CU_MEMORYTYPE_UNIFIED)
        return side_any((const void *)(uintptr_t)(base + first), extent, &out->s);
    return side_device(base + first, extent, &out->s);
}

/* The copy operation between two regions; *pageable says a side is pageable host memory. */
static CUresult build_copy(const region *src, const region *dst, size_t width, size_t rows, size_t depth,
                           gp_op *op, bool *pageable)
{
    place so, d;
    CUresult rc;
    if ((rc = resolve_region(src, width, rows, depth, &so)) ||
        (rc = resolve_region(dst, width, rows, depth, &d)))
        return rc;
    memset(op, 0, sizeof *op);
    op->kind = GP_OP_COPY;
    op->engine = (uint8_t)engine_of(&d.s, &so.s);
    op->u.c.dst = d.s.p;
    op->u.c.src = so.s.p;
    op->u.c.width = width;
    op->u.c.height = rows;
    op->u.c.depth = depth;
    op->u.c.dpitch = d.pitch;
    op->u.c.spitch = so.pitch;
    op->u.c.dslice = d.slice;
    op->u.c.sslice = so.slice;
    op->u.c.bytes = (uint64_t)width * rows * depth;
    if (pageable)
        *pageable = d.s.kind == SIDE_PAGEABLE || so.s.kind == SIDE_PAGEABLE;
    return CUDA_SUCCESS;
}

/* The CUDA_MEMCPY3D side a captured copy is recorded as; false when a linear range of an array spans
 * rows, which a 3D copy cannot describe. */
static bool region_to_3d(const region *r, size_t width, bool is_src, CUDA_MEMCPY3D *p)
{
    size_t x = r->x, y = r->y, z = r->z;
    if (r->linear) {
        gp_array *a = gp_array_of(r->array);
        if (a == NULL || width > a->pitch - r->x % a->pitch)
            return false;
        x = r->x % a->pitch;
        y = r->x / a->pitch % a->rows;
        z = r->x / (a->pitch * a->rows);
    }
    if (is_src) {
        p->srcXInBytes = x;
        p->srcY = y;
        p->srcZ = z;
        p->srcMemoryType = r->type;
        p->srcHost = r->host;
        p->srcDevice = r->dev;
        p->srcArray = r->array;
        p->srcPitch = r->pitch;
        p->srcHeight = r->height;
    } else {
        p->dstXInBytes = x;
        p->dstY = y;
        p->dstZ = z;
        p->dstMemoryType = r->type;
        p->dstHost = (void *)(uintptr_t)r->host;
        p->dstDevice = r->dev;
        p->dstArray = r->array;
        p->dstPitch = r->pitch;
        p->dstHeight = r->height;
    }
    return true;
}

/* Every copy entry point ends here. `sync`: one of the synchronous variants. */
static CUresult copy_regions(const region *src, const region *dst, size_t width, size_t rows, size_t depth,
                             CUstream h, bool pt, bool sync)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc)
        return rc;
    if ((sync && (rc = gp_capture_unsafe())) || (rc = gp_capture_legacy(s)))
        return rc;
    if (width == 0 || rows == 0 || depth == 0)
        return CUDA_SUCCESS;
    gp_op op;
    bool pageable;
    if ((rc = build_copy(src, dst, width, rows, depth, &op, &pageable)))
        return rc;
    if (gp_stream_capturing(s)) {
        if (sync)
            return gp_capture_refuse(s, "a synchronous copy on a capturing stream",
                                     CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        CUDA_MEMCPY3D p = {0};
        p.WidthInBytes = width;
        p.Height = rows;
        p.Depth = depth;
        if (!region_to_3d(src, width, true, &p) || !region_to_3d(dst, width, false, &p))
            return gp_capture_refuse(s, "capturing a linear copy across rows of a CUDA array",
                                     CUDA_ERROR_NOT_SUPPORTED);
        return gp_capture_memcpy(s, &p);
    }
    return submit(s, &op, (sync && op.engine != GP_ENGINE_D2D) || pageable ? WAIT : NO_WAIT);
}

static region host_region(const void *p)
{
    return (region){.type = CU_MEMORYTYPE_HOST, .host = p};
}

static region device_region(CUdeviceptr d)
{
    return (region){.type = CU_MEMORYTYPE_DEVICE, .dev = d};
}

static region unified_region(CUdeviceptr d)
{
    return (region){.type = CU_MEMORYTYPE_UNIFIED, .dev = d};
}

static region array_region(CUarray a, size_t offset)
{
    return (region){.type = CU_MEMORYTYPE_ARRAY, .array = a, .x = offset, .linear = true};
}

static CUresult copy_linear(region src, region dst, size_t n, CUstream h, bool pt, bool sync)
{
    return copy_regions(&src, &dst, n, 1, 1, h, pt, sync);
}

/* ---- linear copies -------------------------------------------------------------------------------- */

#define HP(p) ((CUdeviceptr)(uintptr_t)(p))

GP_API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return copy_linear(unified_region(src), unified_region(dst), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return copy_linear(unified_region(src), unified_region(dst), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return copy_linear(unified_region(src), unified_region(dst), ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return copy_linear(unified_region(src), unified_region(dst), ByteCount, hStream, true, false);
}

/* HtoD / DtoH / DtoD: a device side must be a device-accessible allocation; a host side may be anything. */
GP_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return copy_linear(host_region(srcHost), device_region(dstDevice), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return copy_linear(host_region(srcHost), device_region(dstDevice), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), host_region(dstHost), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyDtoH_v2_ptds(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), host_region(dstHost), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), device_region(dstDevice), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), device_region(dstDevice), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                     CUstream hStream)
{
    return copy_linear(host_region(srcHost), device_region(dstDevice), ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                          CUstream hStream)
{
    return copy_linear(host_region(srcHost), device_region(dstDevice), ByteCount, hStream, true, false);
}

GP_API CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
{
    return copy_linear(device_region(srcDevice), host_region(dstHost), ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return copy_linear(device_region(srcDevice), host_region(dstHost), ByteCount, hStream, true, false);
}

GP_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                     CUstream hStream)
{
    return copy_linear(device_region(srcDevice), device_region(dstDevice), ByteCount, hStream, false, false);
}

GP_API CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                          CUstream hStream)
{
    return copy_linear(device_region(srcDevice), device_region(dstDevice), ByteCount, hStream, true, false);
}

/* ---- copies with 1D arrays: byte offsets into the array ------------------------------------------- */

/* cuda.h: copies from an array to device memory, and between arrays, move whole elements. */
static CUresult whole_elements(CUarray h, size_t n)
{
    gp_array *a = gp_array_of(h);
    return a != NULL && n % a->elem != 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

GP_API CUresult cuMemcpyHtoA_v2(CUarray dstArray, size_t dstOffset, const void *srcHost, size_t ByteCount)
{
    return copy_linear(host_region(srcHost), array_region(dstArray, dstOffset), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyHtoA_v2_ptds(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                     size_t ByteCount)
{
    return copy_linear(host_region(srcHost), array_region(dstArray, dstOffset), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyAtoH_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return copy_linear(array_region(srcArray, srcOffset), host_region(dstHost), ByteCount, NULL, false, true);
}

GP_API CUresult cuMemcpyAtoH_v2_ptds(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return copy_linear(array_region(srcArray, srcOffset), host_region(dstHost), ByteCount, NULL, true, true);
}

GP_API CUresult cuMemcpyDtoA_v2(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice, size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), array_region(dstArray, dstOffset), ByteCount, NULL, false,
                       true);
}

GP_API CUresult cuMemcpyDtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice,
                                     size_t ByteCount)
{
    return copy_linear(device_region(srcDevice), array_region(dstArray, dstOffset), ByteCount, NULL, true,
                       true);
}

static CUresult atod(CUdeviceptr dst, CUarray src, size_t off, size_t n, bool pt)
{
    GP_INIT_OR_RETURN();
    CUresult rc = whole_elements(src, n);
    return rc ? rc : copy_linear(array_region(src, off), device_region(dst), n, NULL, pt, true);
}

GP_API CUresult cuMemcpyAtoD_v2(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    return atod(dstDevice, srcArray, srcOffset, ByteCount, false);
}

GP_API CUresult cuMemcpyAtoD_v2_ptds(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset,
                                     size_t ByteCount)
{
    return atod(dstDevice, srcArray, srcOffset, ByteCount, true);
}

static CUresult atoa(CUarray dst, size_t doff, CUarray src, size_t soff, size_t n, bool pt)
{
    GP_INIT_OR_RETURN();
    gp_array *d = gp_array_of(dst), *s = gp_array_of(src);
    if (d && s && (d->elem != s->elem || n % s->elem != 0))
        return CUDA_ERROR_INVALID_VALUE; /* elements must have one size, and move whole */
    return copy_linear(array_region(src, soff), array_region(dst, doff), n, NULL, pt, true);
}

GP_API CUresult cuMemcpyAtoA_v2(CUarray dstArray, size_t dstOffset, CUarray srcArray, size_t srcOffset,
                                size_t ByteCount)
{
    return atoa(dstArray, dstOffset, srcArray, srcOffset, ByteCount, false);
}

GP_API CUresult cuMemcpyAtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUarray srcArray, size_t srcOffset,
                                     size_t ByteCount)
{
    return atoa(dstArray, dstOffset, srcArray, srcOffset, ByteCount, true);
}

GP_API CUresult cuMemcpyHtoAAsync_v2(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                     size_t ByteCount, CUstream hStream)
{
    return copy_linear(host_region(srcHost), array_region(dstArray, dstOffset), ByteCount, hStream, false,
                       false);
}

GP_API CUresult cuMemcpyHtoAAsync_v2_ptsz(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                          size_t ByteCount, CUstream hStream)
{
    return copy_linear(host_region(srcHost), array_region(dstArray, dstOffset), ByteCount, hStream, true,
                       false);
}

GP_API CUresult cuMemcpyAtoHAsync_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount,
                                     CUstream hStream)
{
    return copy_linear(array_region(srcArray, srcOffset), host_region(dstHost), ByteCount, hStream, false,
                       false);
}

GP_API CUresult cuMemcpyAtoHAsync_v2_ptsz(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount,
                                          CUstream hStream)
{
    return copy_linear(array_region(srcArray, srcOffset), host_region(dstHost), ByteCount, hStream, true,
                       false);
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
    return copy_linear(device_region(src), device_region(dst), n, h, pt, sync);
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

static CUresult memcpy2d(const CUDA_MEMCPY2D *p, CUstream h, bool pt, bool sync)
{
    GP_INIT_OR_RETURN();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    region s = {p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes,
                p->srcY,          0,          p->srcPitch,  0,           false};
    region d = {p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes,
                p->dstY,          0,          p->dstPitch,  0,           false};
    if (p->Height > 1 && ((p->srcMemoryType != CU_MEMORYTYPE_ARRAY && p->srcPitch &&
                           p->srcPitch < p->WidthInBytes + p->srcXInBytes) ||
                          (p->dstMemoryType != CU_MEMORYTYPE_ARRAY && p->dstPitch &&
                           p->dstPitch < p->WidthInBytes + p->dstXInBytes)))
        return CUDA_ERROR_INVALID_VALUE;
    return copy_regions(&s, &d, p->WidthInBytes, p->Height, 1, h, pt, sync);
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

static CUresult regions_3d(const CUDA_MEMCPY3D *p, region *s, region *d)
{
    if (p == NULL || p->reserved0 != NULL || p->reserved1 != NULL || p->srcLOD != 0 || p->dstLOD != 0)
        return CUDA_ERROR_INVALID_VALUE;
    *s = (region){p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray,  p->srcXInBytes,
                  p->srcY,          p->srcZ,    p->srcPitch,  p->srcHeight, false};
    *d = (region){p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray,  p->dstXInBytes,
                  p->dstY,          p->dstZ,    p->dstPitch,  p->dstHeight, false};
    return CUDA_SUCCESS;
}

static CUresult memcpy3d(const CUDA_MEMCPY3D *p, CUstream h, bool pt, bool sync)
{
    GP_INIT_OR_RETURN();
    region s, d;
    CUresult rc = regions_3d(p, &s, &d);
    return rc ? rc : copy_regions(&s, &d, p->WidthInBytes, p->Height, p->Depth, h, pt, sync);
}

CUresult gp_copy3d_op(const CUDA_MEMCPY3D *p, gp_op *op)
{
    region s, d;
    CUresult rc = regions_3d(p, &s, &d);
    if (rc)
        return rc;
    if (p->WidthInBytes == 0 || p->Height == 0 || p->Depth == 0) {
        memset(op, 0, sizeof *op); /* nothing to copy */
        op->kind = GP_OP_NOP;
        return CUDA_SUCCESS;
    }
    return build_copy(&s, &d, p->WidthInBytes, p->Height, p->Depth, op, NULL);
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

/* The memset operation for a node's parameters; *pinned says the target is pinned host memory. */
static CUresult build_memset(const CUDA_MEMSET_NODE_PARAMS *p, gp_op *op, bool *pinned)
{
    unsigned elem = p->elementSize;
    if ((elem != 1 && elem != 2 && elem != 4) || p->dst % elem != 0)
        return CUDA_ERROR_INVALID_VALUE;
    memset(op, 0, sizeof *op);
    if (p->width == 0 || p->height == 0) {
        op->kind = GP_OP_NOP;
        return CUDA_SUCCESS;
    }
    if (p->height > 1 && (p->pitch < p->width * elem || p->pitch % elem != 0))
        return CUDA_ERROR_INVALID_VALUE;
    size_t extent = (p->height - 1) * p->pitch + p->width * elem;
    side d;
    CUresult rc = side_device(p->dst, extent, &d);
    if (rc)
        return rc;
    op->kind = GP_OP_MEMSET;
    op->u.m.dst = d.p;
    op->u.m.value = elem == 4 ? p->value : elem == 2 ? (uint16_t)p->value : (uint8_t)p->value;
    op->u.m.elem = elem;
    op->u.m.width = p->width;
    op->u.m.height = p->height;
    op->u.m.pitch = p->height > 1 ? p->pitch : p->width * elem;
    if (pinned)
        *pinned = d.kind == SIDE_PINNED;
    return CUDA_SUCCESS;
}

CUresult gp_memset_op(const CUDA_MEMSET_NODE_PARAMS *p, gp_op *op)
{
    return build_memset(p, op, NULL);
}

static CUresult memset_common(CUdeviceptr dst, size_t pitch, uint32_t value, unsigned elem, size_t width,
                              size_t height, CUstream h, bool pt, bool sync)
{
    gp_stream *s;
    CUresult rc = target_stream(h, pt, &s);
    if (rc)
        return rc;
    if ((sync && (rc = gp_capture_unsafe())) || (rc = gp_capture_legacy(s)))
        return rc;
    if (dst % elem != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (width == 0 || height == 0)
        return CUDA_SUCCESS;
    CUDA_MEMSET_NODE_PARAMS p = {dst, height > 1 ? pitch : width * elem, value, elem, width, height};
    gp_op op;
    bool pinned = false;
    if ((rc = build_memset(&p, &op, &pinned)))
        return rc;
    if (gp_stream_capturing(s)) {
        if (sync)
            return gp_capture_refuse(s, "a synchronous memset on a capturing stream",
                                     CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        return gp_capture_memset(s, &p);
    }
    /* Asynchronous with respect to the host, except into pinned host memory. */
    return submit(s, &op, pinned ? WAIT : NO_WAIT);
}

#define MEMSET_1D(name, type, elem, pt)                                    \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N)          \
    {                                                                      \
        return memset_common(dstDevice, 0, v, elem, N, 1, NULL, pt, true); \
    }
#define MEMSET_1D_ASYNC(name, type, elem, pt)                                       \
    GP_API CUresult name(CUdeviceptr dstDevice, type v, size_t N, CUstream hStream) \
    {                                                                               \
        return memset_common(dstDevice, 0, v, elem, N, 1, hStream, pt, false);      \
    }
#define MEMSET_2D(name, type, elem, pt)                                                               \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height) \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height, NULL, pt, true);            \
    }
#define MEMSET_2D_ASYNC(name, type, elem, pt)                                                         \
    GP_API CUresult name(CUdeviceptr dstDevice, size_t dstPitch, type v, size_t Width, size_t Height, \
                         CUstream hStream)                                                            \
    {                                                                                                 \
        return memset_common(dstDevice, dstPitch, v, elem, Width, Height, hStream, pt, false);        \
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

/* array.c - CUDA arrays and mipmapped arrays.
 *
 * An array is device memory with a shape: a device allocation (mem.c, so it is charged to the device and
 * refused with CUDA_ERROR_OUT_OF_MEMORY when the device is full) holding the elements linearly, row after
 * row and slice after slice (row pitch = width * element size). A GPU lays arrays out in its own tiled
 * order, which no API exposes: copies (copy.c) address arrays by element, and textures and surfaces, the
 * only other way to reach them, are not simulated. The levels of a mipmapped array share one allocation.
 * Sparse and deferred-mapping arrays are refused, as the simulated devices report no support for them.
 */
#include "sim/sim.h"
#include "common/array_format.h"

#include <stdlib.h>
#include <string.h>

typedef struct gp_mipmap {
    gp_ctx *ctx;
    gp_alloc *a;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    unsigned nlevels;
    gp_array *levels;
} gp_mipmap;

static pthread_mutex_t g_array_mu = PTHREAD_MUTEX_INITIALIZER;
static gp_ptrvec g_arrays, g_mipmaps; /* arrays made by cuArrayCreate / cuArray3DCreate; mipmapped arrays */

#define KNOWN_FLAGS                                                                                          \
    (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_SURFACE_LDST | CUDA_ARRAY3D_CUBEMAP | CUDA_ARRAY3D_TEXTURE_GATHER | \
     CUDA_ARRAY3D_DEPTH_TEXTURE | CUDA_ARRAY3D_COLOR_ATTACHMENT | CUDA_ARRAY3D_SPARSE |                      \
     CUDA_ARRAY3D_DEFERRED_MAPPING | CUDA_ARRAY3D_VIDEO_ENCODE_DECODE)

/* Bytes per channel of the formats the simulation stores; 0 for other formats of cuda.h, -1 for values that
 * are no format. */
static int format_bytes(CUarray_format f)
{
    unsigned b = gp_array_format_bytes(f);
    if (b > 0)
        return (int)b;
    switch (f) {
    case CU_AD_FORMAT_NV12:
    case CU_AD_FORMAT_UNORM_INT8X1:
    case CU_AD_FORMAT_UNORM_INT8X2:
    case CU_AD_FORMAT_UNORM_INT8X4:
    case CU_AD_FORMAT_UNORM_INT16X1:
    case CU_AD_FORMAT_UNORM_INT16X2:
    case CU_AD_FORMAT_UNORM_INT16X4:
    case CU_AD_FORMAT_SNORM_INT8X1:
    case CU_AD_FORMAT_SNORM_INT8X2:
    case CU_AD_FORMAT_SNORM_INT8X4:
    case CU_AD_FORMAT_SNORM_INT16X1:
    case CU_AD_FORMAT_SNORM_INT16X2:
    case CU_AD_FORMAT_SNORM_INT16X4:
    case CU_AD_FORMAT_BC1_UNORM:
    case CU_AD_FORMAT_BC1_UNORM_SRGB:
    case CU_AD_FORMAT_BC2_UNORM:
    case CU_AD_FORMAT_BC2_UNORM_SRGB:
    case CU_AD_FORMAT_BC3_UNORM:
    case CU_AD_FORMAT_BC3_UNORM_SRGB:
    case CU_AD_FORMAT_BC4_UNORM:
    case CU_AD_FORMAT_BC4_SNORM:
    case CU_AD_FORMAT_BC5_UNORM:
    case CU_AD_FORMAT_BC5_SNORM:
    case CU_AD_FORMAT_BC6H_UF16:
    case CU_AD_FORMAT_BC6H_SF16:
    case CU_AD_FORMAT_BC7_UNORM:
    case CU_AD_FORMAT_BC7_UNORM_SRGB:
    case CU_AD_FORMAT_P010:
    case CU_AD_FORMAT_P016:
    case CU_AD_FORMAT_NV16:
    case CU_AD_FORMAT_P210:
    case CU_AD_FORMAT_P216:
    case CU_AD_FORMAT_YUY2:
    case CU_AD_FORMAT_Y210:
    case CU_AD_FORMAT_Y216:
    case CU_AD_FORMAT_AYUV:
    case CU_AD_FORMAT_Y410:
    case CU_AD_FORMAT_Y416:
    case CU_AD_FORMAT_Y444_PLANAR8:
    case CU_AD_FORMAT_Y444_PLANAR10:
    case CU_AD_FORMAT_YUV444_8bit_SemiPlanar:
    case CU_AD_FORMAT_YUV444_16bit_SemiPlanar:
    case CU_AD_FORMAT_UNORM_INT_101010_2: return 0; /* packed, compressed or planar: not simulated */
    default: return -1;
    }
}

static size_t attr(CUdevice_attribute a, int dev)
{
    int v = 0;
    cuDeviceGetAttribute(&v, a, dev);
    return v > 0 ? (size_t)v : 0;
}

/* The extent limits of cuda.h's table for cuArray3DCreate (and cuMipmappedArrayCreate, `mip`). */
static bool extents_ok(const CUDA_ARRAY3D_DESCRIPTOR *d, int dev, bool mip)
{
    size_t w = d->Width, h = d->Height, z = d->Depth;
    bool layered = d->Flags & CUDA_ARRAY3D_LAYERED, cube = d->Flags & CUDA_ARRAY3D_CUBEMAP;
    bool ldst = d->Flags & CUDA_ARRAY3D_SURFACE_LDST, gather = d->Flags & CUDA_ARRAY3D_TEXTURE_GATHER;
    if (w == 0)
        return false;
    if (cube) {
        if (w != h || z == 0 || (!layered && z != 6) || (layered && z % 6 != 0))
            return false;
        if (!layered)
            return w <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_WIDTH
                                  : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_WIDTH,
                             dev);
        return w <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH
                              : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH,
                         dev) &&
               z <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS
                              : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS,
                         dev);
    }
    if (layered) {
        if (z == 0)
            return false;
        if (h == 0)
            return w <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_WIDTH
                                  : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH,
                             dev) &&
                   z <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_LAYERS
                                  : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS,
                             dev);
        return w <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_WIDTH
                              : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH,
                         dev) &&
               h <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_HEIGHT
                              : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT,
                         dev) &&
               z <= attr(ldst ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_LAYERS
                              : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS,
                         dev);
    }
    if (h == 0 && z == 0)
        return w <= attr(ldst  ? CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_WIDTH
                         : mip ? CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH
                               : CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH,
                         dev);
    if (h == 0)
        return false; /* a depth without a height is no array shape */
    if (z == 0) {
        if (ldst)
            return w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_WIDTH, dev) &&
                   h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_HEIGHT, dev);
        if (gather)
            return w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH, dev) &&
                   h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT, dev);
        if (mip)
            return w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH, dev) &&
                   h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT, dev);
        return w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH, dev) &&
               h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT, dev);
    }
    if (ldst)
        return w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_WIDTH, dev) &&
               h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_HEIGHT, dev) &&
               z <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_DEPTH, dev);
    return (w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH, dev) &&
            h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT, dev) &&
            z <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH, dev)) ||
           (w <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE, dev) &&
            h <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE, dev) &&
            z <= attr(CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE, dev));
}

/* Checks a descriptor; sets the element size. */
static CUresult check_desc(const CUDA_ARRAY3D_DESCRIPTOR *d, int dev, bool mip, unsigned *elem)
{
    if (d->Flags & ~(unsigned)KNOWN_FLAGS)
        return CUDA_ERROR_INVALID_VALUE;
    if (d->Flags & (CUDA_ARRAY3D_SPARSE | CUDA_ARRAY3D_DEFERRED_MAPPING | CUDA_ARRAY3D_VIDEO_ENCODE_DECODE)) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "sparse, deferred-mapping and video arrays are not supported by the simulated GPU "
                    "(returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (d->NumChannels != 1 && d->NumChannels != 2 && d->NumChannels != 4)
        return CUDA_ERROR_INVALID_VALUE;
    int fb = format_bytes(d->Format);
    if (fb < 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (fb == 0) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "CUDA arrays of packed, block-compressed or video formats are not supported by the "
                    "simulated GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (!extents_ok(d, dev, mip))
        return CUDA_ERROR_INVALID_VALUE;
    *elem = (unsigned)fb * d->NumChannels;
    return CUDA_SUCCESS;
}

/* Shape of an array with descriptor d in the linear layout; false when its size overflows. */
static bool shape(gp_array *a, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned elem, size_t *bytes)
{
    a->desc = *d;
    a->elem = elem;
    a->pitch = d->Width * elem;
    a->rows = d->Height ? d->Height : 1;
    a->slices = d->Depth ? d->Depth : 1;
    if (a->pitch / elem != d->Width || a->rows > SIZE_MAX / a->pitch ||
        a->slices > SIZE_MAX / (a->pitch * a->rows))
        return false;
    *bytes = a->pitch * a->rows * a->slices;
    return true;
}

gp_array *gp_array_of(CUarray h)
{
    return h != NULL && gp_handle_type(h) == GP_OBJ_ARRAY ? (gp_array *)h : NULL;
}

static CUresult array_create(CUarray *out, const CUDA_ARRAY3D_DESCRIPTOR *d, bool created_2d)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (out == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned elem;
    if ((rc = check_desc(d, c->dev, false, &elem)))
        return rc;
    gp_array *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    size_t bytes;
    if (!shape(a, d, elem, &bytes)) {
        free(a);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((rc = gp_capture_unsafe())) {
        free(a);
        return rc;
    }
    a->ctx = c;
    a->created_2d = created_2d;
    if ((rc = gp_mem_alloc_device(c, c->dev, bytes, 0, &a->a))) {
        free(a);
        return rc;
    }
    pthread_mutex_lock(&g_array_mu);
    int pushed = gp_ptrvec_push(&g_arrays, a);
    pthread_mutex_unlock(&g_array_mu);
    if (pushed < 0) {
        gp_mem_free_alloc(a->a);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_handle_add(a, GP_OBJ_ARRAY);
    *out = (CUarray)a;
    return CUDA_SUCCESS;
}

GP_API CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray)
{
    GP_INIT_OR_RETURN();
    if (pAllocateArray == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d = {pAllocateArray->Width,  pAllocateArray->Height,      0,
                                 pAllocateArray->Format, pAllocateArray->NumChannels, 0};
    return array_create(pHandle, &d, true);
}

GP_API CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray)
{
    return array_create(pHandle, pAllocateArray, false);
}

static CUresult array_of(CUarray h, gp_array **out)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if ((*out = gp_array_of(h)) == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS;
}

GP_API CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    gp_array *a;
    CUresult rc = array_of(hArray, &a);
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
    gp_array *a;
    CUresult rc = array_of(hArray, &a);
    if (rc)
        return rc;
    if (pArrayDescriptor == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pArrayDescriptor = a->desc;
    return CUDA_SUCCESS;
}

GP_API CUresult cuArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *memoryRequirements,
                                             CUarray array, CUdevice device)
{
    gp_array *a;
    CUresult rc = array_of(array, &a);
    if (rc == CUDA_ERROR_INVALID_HANDLE)
        return CUDA_ERROR_INVALID_VALUE;
    if (rc)
        return rc;
    /* Defined only for arrays made with CUDA_ARRAY3D_DEFERRED_MAPPING, which the simulation refuses. */
    return CUDA_ERROR_INVALID_VALUE;
}

GP_API CUresult cuArrayDestroy(CUarray hArray)
{
    gp_array *a;
    CUresult rc = array_of(hArray, &a);
    if (rc)
        return rc;
    if (a->parent)
        return CUDA_ERROR_INVALID_HANDLE; /* a mipmap level goes with its mipmapped array */
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_handle_del(a);
    pthread_mutex_lock(&g_array_mu);
    gp_ptrvec_remove(&g_arrays, a);
    pthread_mutex_unlock(&g_array_mu);
    /* Like cuMemFree: work still queued may use the array. */
    gp_ctx_synchronize(a->ctx);
    gp_mem_free_alloc(a->a);
    free(a);
    return CUDA_SUCCESS;
}

/* ---- mipmapped arrays ----------------------------------------------------------------------------- */

static unsigned max_levels(const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    size_t m = d->Width;
    if (d->Height > m)
        m = d->Height;
    if (!(d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP)) && d->Depth > m)
        m = d->Depth; /* layers are no extent */
    unsigned n = 1;
    while (m >>= 1)
        n++;
    return n;
}

static size_t level_extent(size_t v, unsigned level)
{
    if (v == 0)
        return 0;
    v >>= level;
    return v ? v : 1;
}

static void mipmap_free(gp_mipmap *m)
{
    for (unsigned i = 0; i < m->nlevels; i++)
        gp_handle_del(&m->levels[i]);
    gp_handle_del(m);
    gp_mem_free_alloc(m->a);
    free(m->levels);
    free(m);
}

GP_API CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                       const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,
                                       unsigned int numMipmapLevels)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    const CUDA_ARRAY3D_DESCRIPTOR *d = pMipmappedArrayDesc;
    if (pHandle == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned elem;
    if ((rc = check_desc(d, c->dev, true, &elem)))
        return rc;
    /* cuda.h: the count is clamped to [1, 1 + floor(log2(max extent))]. */
    unsigned n = numMipmapLevels ? numMipmapLevels : 1;
    if (n > max_levels(d))
        n = max_levels(d);
    gp_mipmap *m = calloc(1, sizeof *m);
    gp_array *levels = calloc(n, sizeof *levels);
    if (m == NULL || levels == NULL) {
        free(m);
        free(levels);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t total = 0;
    bool spatial_depth = !(d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP));
    for (unsigned i = 0; i < n; i++) {
        CUDA_ARRAY3D_DESCRIPTOR ld = *d;
        ld.Width = level_extent(d->Width, i);
        ld.Height = level_extent(d->Height, i);
        if (spatial_depth)
            ld.Depth = level_extent(d->Depth, i); /* layers stay as many */
        size_t bytes;
        if (!shape(&levels[i], &ld, elem, &bytes) || total + bytes < total) {
            free(m);
            free(levels);
            return CUDA_ERROR_INVALID_VALUE;
        }
        levels[i].offset = total;
        total += (bytes + 511) / 512 * 512; /* each level starts aligned, as texture memory does */
    }
    if ((rc = gp_capture_unsafe()) || (rc = gp_mem_alloc_device(c, c->dev, total, 0, &m->a))) {
        free(m);
        free(levels);
        return rc;
    }
    m->ctx = c;
    m->desc = *d;
    m->nlevels = n;
    m->levels = levels;
    for (unsigned i = 0; i < n; i++) {
        levels[i].ctx = c;
        levels[i].a = m->a;
        levels[i].parent = m;
    }
    pthread_mutex_lock(&g_array_mu);
    int pushed = gp_ptrvec_push(&g_mipmaps, m);
    pthread_mutex_unlock(&g_array_mu);
    if (pushed < 0) {
        mipmap_free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (unsigned i = 0; i < n; i++)
        gp_handle_add(&levels[i], GP_OBJ_ARRAY);
    gp_handle_add(m, GP_OBJ_MIPMAP);
    *pHandle = (CUmipmappedArray)m;
    return CUDA_SUCCESS;
}

static CUresult mipmap_of(CUmipmappedArray h, gp_mipmap **out)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (h == NULL || gp_handle_type(h) != GP_OBJ_MIPMAP)
        return CUDA_ERROR_INVALID_HANDLE;
    *out = (gp_mipmap *)h;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMipmappedArrayGetLevel(CUarray *pLevelArray, CUmipmappedArray hMipmappedArray,
                                         unsigned int level)
{
    gp_mipmap *m;
    CUresult rc = mipmap_of(hMipmappedArray, &m);
    if (rc)
        return rc;
    if (pLevelArray == NULL || level >= m->nlevels)
        return CUDA_ERROR_INVALID_VALUE;
    *pLevelArray = (CUarray)&m->levels[level];
    return CUDA_SUCCESS;
}

GP_API CUresult cuMipmappedArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *memoryRequirements,
                                                      CUmipmappedArray mipmap, CUdevice device)
{
    gp_mipmap *m;
    CUresult rc = mipmap_of(mipmap, &m);
    if (rc == CUDA_ERROR_INVALID_HANDLE)
        return CUDA_ERROR_INVALID_VALUE;
    if (rc)
        return rc;
    return CUDA_ERROR_INVALID_VALUE; /* only for deferred-mapping mipmapped arrays, which are refused */
}

GP_API CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    gp_mipmap *m;
    CUresult rc = mipmap_of(hMipmappedArray, &m);
    if (rc)
        return rc;
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_handle_del(m);
    pthread_mutex_lock(&g_array_mu);
    gp_ptrvec_remove(&g_mipmaps, m);
    pthread_mutex_unlock(&g_array_mu);
    gp_ctx_synchronize(m->ctx);
    mipmap_free(m);
    return CUDA_SUCCESS;
}

/* ---- context teardown ----------------------------------------------------------------------------- */

void gp_array_forget_ctx(gp_ctx *c)
{
    pthread_mutex_lock(&g_array_mu);
    for (size_t i = 0; i < g_arrays.n;) {
        gp_array *a = g_arrays.v[i];
        if (a->ctx != c) {
            i++;
            continue;
        }
        gp_ptrvec_remove(&g_arrays, a);
        gp_handle_del(a);
        gp_mem_free_alloc(a->a);
        free(a);
    }
    for (size_t i = 0; i < g_mipmaps.n;) {
        gp_mipmap *m = g_mipmaps.v[i];
        if (m->ctx != c) {
            i++;
            continue;
        }
        gp_ptrvec_remove(&g_mipmaps, m);
        mipmap_free(m);
    }
    pthread_mutex_unlock(&g_array_mu);
}

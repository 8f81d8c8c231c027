/* work.c - copies, memsets and host functions: device work that waits while the vGPU is frozen.
 *
 * They are not compute-limited (copies run on copy engines, memsets are short), but freezing a slot stops
 * all new device work of the workload, so each of these first passes the freeze gate. When no slot of the
 * process is frozen the gate is a few atomic loads and the device is not even looked up.
 */
#include "vgpu/vgpu.h"

static bool any_frozen(void)
{
    for (int i = 0; i < g_vg.ndev; i++)
        if (atomic_load_explicit(&g_vg.dev[i].slot->s->frozen, memory_order_relaxed))
            return true;
    return false;
}

#define WORK(stream, call)                                                                            \
    do {                                                                                              \
        CUresult rc_ = vg_cuda_ok();                                                                  \
        if (rc_)                                                                                      \
            return rc_;                                                                               \
        if (g_vg.mode == VG_ENFORCE && any_frozen() && (rc_ = vg_gate(vg_stream_dev(stream), false))) \
            return rc_;                                                                               \
        return (call);                                                                                \
    } while (0)

#define SYNC_WORK(call) WORK(NULL, call)

VG_API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpy)(dst, src, n));
}
VG_API CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpy_ptds)(dst, src, n));
}
VG_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyAsync)(dst, src, n, s));
}
VG_API CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyAsync_ptsz)(dst, src, n, s));
}
VG_API CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyPeer)(dst, dc, src, sc, n));
}
VG_API CUresult cuMemcpyPeer_ptds(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyPeer_ptds)(dst, dc, src, sc, n));
}
VG_API CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n,
                                  CUstream s)
{
    WORK(s, REAL(cuMemcpyPeerAsync)(dst, dc, src, sc, n, s));
}
VG_API CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n,
                                       CUstream s)
{
    WORK(s, REAL(cuMemcpyPeerAsync_ptsz)(dst, dc, src, sc, n, s));
}
VG_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyHtoD_v2)(dst, src, n));
}
VG_API CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyHtoD_v2_ptds)(dst, src, n));
}
VG_API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyDtoH_v2)(dst, src, n));
}
VG_API CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyDtoH_v2_ptds)(dst, src, n));
}
VG_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyDtoD_v2)(dst, src, n));
}
VG_API CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    SYNC_WORK(REAL(cuMemcpyDtoD_v2_ptds)(dst, src, n));
}
VG_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyHtoDAsync_v2)(dst, src, n, s));
}
VG_API CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyHtoDAsync_v2_ptsz)(dst, src, n, s));
}
VG_API CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyDtoHAsync_v2)(dst, src, n, s));
}
VG_API CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyDtoHAsync_v2_ptsz)(dst, src, n, s));
}
VG_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyDtoDAsync_v2)(dst, src, n, s));
}
VG_API CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    WORK(s, REAL(cuMemcpyDtoDAsync_v2_ptsz)(dst, src, n, s));
}
VG_API CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p)
{
    SYNC_WORK(REAL(cuMemcpy2D_v2)(p));
}
VG_API CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p)
{
    SYNC_WORK(REAL(cuMemcpy2D_v2_ptds)(p));
}
VG_API CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *p)
{
    SYNC_WORK(REAL(cuMemcpy2DUnaligned_v2)(p));
}
VG_API CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *p)
{
    SYNC_WORK(REAL(cuMemcpy2DUnaligned_v2_ptds)(p));
}
VG_API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream s)
{
    WORK(s, REAL(cuMemcpy2DAsync_v2)(p, s));
}
VG_API CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream s)
{
    WORK(s, REAL(cuMemcpy2DAsync_v2_ptsz)(p, s));
}
VG_API CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *p)
{
    SYNC_WORK(REAL(cuMemcpy3D_v2)(p));
}
VG_API CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *p)
{
    SYNC_WORK(REAL(cuMemcpy3D_v2_ptds)(p));
}
VG_API CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *p, CUstream s)
{
    WORK(s, REAL(cuMemcpy3DAsync_v2)(p, s));
}
VG_API CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *p, CUstream s)
{
    WORK(s, REAL(cuMemcpy3DAsync_v2_ptsz)(p, s));
}

#define MEMSET1(name, type)                               \
    VG_API CUresult name(CUdeviceptr d, type v, size_t n) \
    {                                                     \
        SYNC_WORK(REAL(name)(d, v, n));                   \
    }
#define MEMSET1_ASYNC(name, type)                                     \
    VG_API CUresult name(CUdeviceptr d, type v, size_t n, CUstream s) \
    {                                                                 \
        WORK(s, REAL(name)(d, v, n, s));                              \
    }
#define MEMSET2(name, type)                                                       \
    VG_API CUresult name(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h) \
    {                                                                             \
        SYNC_WORK(REAL(name)(d, pitch, v, w, h));                                 \
    }
#define MEMSET2_ASYNC(name, type)                                                             \
    VG_API CUresult name(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h, CUstream s) \
    {                                                                                         \
        WORK(s, REAL(name)(d, pitch, v, w, h, s));                                            \
    }

MEMSET1(cuMemsetD8_v2, unsigned char)
MEMSET1(cuMemsetD8_v2_ptds, unsigned char)
MEMSET1(cuMemsetD16_v2, unsigned short)
MEMSET1(cuMemsetD16_v2_ptds, unsigned short)
MEMSET1(cuMemsetD32_v2, unsigned int)
MEMSET1(cuMemsetD32_v2_ptds, unsigned int)
MEMSET1_ASYNC(cuMemsetD8Async, unsigned char)
MEMSET1_ASYNC(cuMemsetD8Async_ptsz, unsigned char)
MEMSET1_ASYNC(cuMemsetD16Async, unsigned short)
MEMSET1_ASYNC(cuMemsetD16Async_ptsz, unsigned short)
MEMSET1_ASYNC(cuMemsetD32Async, unsigned int)
MEMSET1_ASYNC(cuMemsetD32Async_ptsz, unsigned int)
MEMSET2(cuMemsetD2D8_v2, unsigned char)
MEMSET2(cuMemsetD2D8_v2_ptds, unsigned char)
MEMSET2(cuMemsetD2D16_v2, unsigned short)
MEMSET2(cuMemsetD2D16_v2_ptds, unsigned short)
MEMSET2(cuMemsetD2D32_v2, unsigned int)
MEMSET2(cuMemsetD2D32_v2_ptds, unsigned int)
MEMSET2_ASYNC(cuMemsetD2D8Async, unsigned char)
MEMSET2_ASYNC(cuMemsetD2D8Async_ptsz, unsigned char)
MEMSET2_ASYNC(cuMemsetD2D16Async, unsigned short)
MEMSET2_ASYNC(cuMemsetD2D16Async_ptsz, unsigned short)
MEMSET2_ASYNC(cuMemsetD2D32Async, unsigned int)
MEMSET2_ASYNC(cuMemsetD2D32Async_ptsz, unsigned int)

VG_API CUresult cuLaunchHostFunc(CUstream s, CUhostFn fn, void *userData)
{
    WORK(s, REAL(cuLaunchHostFunc)(s, fn, userData));
}
VG_API CUresult cuLaunchHostFunc_ptsz(CUstream s, CUhostFn fn, void *userData)
{
    WORK(s, REAL(cuLaunchHostFunc_ptsz)(s, fn, userData));
}

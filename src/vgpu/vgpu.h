/* vgpu.h - internals of libgpupool-vgpu.so, the one enforcement point of gpupool (docs/vgpu.md).
 *
 * The library is LD_PRELOADed into a CUDA program (or loaded by /etc/ld.so.preload, or into the remote
 * worker). It exports the driver's and NVML's entry points that matter - device memory, contexts, launches,
 * copies, memory queries, device enumeration - under their exact names, so the program's calls land here;
 * cuGetProcAddress and dlsym return these wrappers too, so the CUDA runtime and programs that look the
 * driver up by hand are covered. Each wrapper applies the workload's vGPU slots (gpupool/slot.h) and calls
 * NVIDIA's function (or the simulated GPU's), resolved from the real library.
 *
 * Files: init.c (start-up, slots, refusal, device visibility, fork), mem.c (every allocation path),
 * compute.c (launch gating: budget, pacing, freeze), nvml.c (the virtualised NVML view), lookup.c
 * (cuGetProcAddress, dlsym), work.c (copies and memsets that wait while frozen).
 *
 * Threading: process-wide state lives in g_vg and is set up once (pthread_once). The launch path takes no
 * lock and allocates nothing unless the slot is frozen or compute-limited. Maps of allocations are behind
 * g_vg.mem_mu. After fork() a child never touches its parent's slot entries.
 */
#ifndef GP_VGPU_VGPU_H
#define GP_VGPU_VGPU_H

#define GP_CUDA_NO_API_MACROS 1
#include "gpupool/cuda.h"
#define GP_NVML_NO_API_MACROS 1
#include "gpupool/nvml.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/log.h"
#include "common/slot.h"
#include "common/timeutil.h"
#include "common/u64map.h"

#define VG_API __attribute__((visibility("default")))
#define VG_LOG "vgpu"

/* CUDA entry points the library replaces (it exports a function of the same name). */
#define VG_CUDA_WRAPPED(X)            \
    X(cuInit)                         \
    X(cuGetProcAddress)               \
    X(cuGetProcAddress_v2)            \
    X(cuDeviceTotalMem_v2)            \
    X(cuMemGetInfo_v2)                \
    X(cuCtxCreate)                    \
    X(cuCtxCreate_v2)                 \
    X(cuCtxCreate_v3)                 \
    X(cuCtxCreate_v4)                 \
    X(cuCtxDestroy)                   \
    X(cuCtxDestroy_v2)                \
    X(cuDevicePrimaryCtxRetain)       \
    X(cuDevicePrimaryCtxRelease)      \
    X(cuDevicePrimaryCtxRelease_v2)   \
    X(cuDevicePrimaryCtxReset)        \
    X(cuDevicePrimaryCtxReset_v2)     \
    X(cuMemAlloc_v2)                  \
    X(cuMemAllocPitch_v2)             \
    X(cuMemFree_v2)                   \
    X(cuMemAllocManaged)              \
    X(cuMemAllocAsync)                \
    X(cuMemAllocAsync_ptsz)           \
    X(cuMemAllocFromPoolAsync)        \
    X(cuMemAllocFromPoolAsync_ptsz)   \
    X(cuMemFreeAsync)                 \
    X(cuMemFreeAsync_ptsz)            \
    X(cuMemPoolCreate)                \
    X(cuMemPoolTrimTo)                \
    X(cuMemCreate)                    \
    X(cuMemRelease)                   \
    X(cuArrayCreate_v2)               \
    X(cuArray3DCreate_v2)             \
    X(cuArrayDestroy)                 \
    X(cuMipmappedArrayCreate)         \
    X(cuMipmappedArrayDestroy)        \
    X(cuStreamSynchronize)            \
    X(cuStreamSynchronize_ptsz)       \
    X(cuCtxSynchronize)               \
    X(cuCtxSynchronize_v2)            \
    X(cuEventSynchronize)             \
    X(cuLaunchKernel)                 \
    X(cuLaunchKernel_ptsz)            \
    X(cuLaunchKernelEx)               \
    X(cuLaunchKernelEx_ptsz)          \
    X(cuLaunchCooperativeKernel)      \
    X(cuLaunchCooperativeKernel_ptsz) \
    X(cuGraphLaunch)                  \
    X(cuGraphLaunch_ptsz)             \
    VG_CUDA_WORK(X)

/* Copies, memsets and host functions: they only wait while the slot is frozen (work.c). */
#define VG_CUDA_WORK(X)            \
    X(cuMemcpy)                    \
    X(cuMemcpy_ptds)               \
    X(cuMemcpyAsync)               \
    X(cuMemcpyAsync_ptsz)          \
    X(cuMemcpyPeer)                \
    X(cuMemcpyPeer_ptds)           \
    X(cuMemcpyPeerAsync)           \
    X(cuMemcpyPeerAsync_ptsz)      \
    X(cuMemcpyHtoD_v2)             \
    X(cuMemcpyHtoD_v2_ptds)        \
    X(cuMemcpyDtoH_v2)             \
    X(cuMemcpyDtoH_v2_ptds)        \
    X(cuMemcpyDtoD_v2)             \
    X(cuMemcpyDtoD_v2_ptds)        \
    X(cuMemcpyHtoDAsync_v2)        \
    X(cuMemcpyHtoDAsync_v2_ptsz)   \
    X(cuMemcpyDtoHAsync_v2)        \
    X(cuMemcpyDtoHAsync_v2_ptsz)   \
    X(cuMemcpyDtoDAsync_v2)        \
    X(cuMemcpyDtoDAsync_v2_ptsz)   \
    X(cuMemcpy2D_v2)               \
    X(cuMemcpy2D_v2_ptds)          \
    X(cuMemcpy2DUnaligned_v2)      \
    X(cuMemcpy2DUnaligned_v2_ptds) \
    X(cuMemcpy2DAsync_v2)          \
    X(cuMemcpy2DAsync_v2_ptsz)     \
    X(cuMemcpy3D_v2)               \
    X(cuMemcpy3D_v2_ptds)          \
    X(cuMemcpy3DAsync_v2)          \
    X(cuMemcpy3DAsync_v2_ptsz)     \
    X(cuMemsetD8_v2)               \
    X(cuMemsetD8_v2_ptds)          \
    X(cuMemsetD16_v2)              \
    X(cuMemsetD16_v2_ptds)         \
    X(cuMemsetD32_v2)              \
    X(cuMemsetD32_v2_ptds)         \
    X(cuMemsetD8Async)             \
    X(cuMemsetD8Async_ptsz)        \
    X(cuMemsetD16Async)            \
    X(cuMemsetD16Async_ptsz)       \
    X(cuMemsetD32Async)            \
    X(cuMemsetD32Async_ptsz)       \
    X(cuMemsetD2D8_v2)             \
    X(cuMemsetD2D8_v2_ptds)        \
    X(cuMemsetD2D16_v2)            \
    X(cuMemsetD2D16_v2_ptds)       \
    X(cuMemsetD2D32_v2)            \
    X(cuMemsetD2D32_v2_ptds)       \
    X(cuMemsetD2D8Async)           \
    X(cuMemsetD2D8Async_ptsz)      \
    X(cuMemsetD2D16Async)          \
    X(cuMemsetD2D16Async_ptsz)     \
    X(cuMemsetD2D32Async)          \
    X(cuMemsetD2D32Async_ptsz)     \
    X(cuLaunchHostFunc)            \
    X(cuLaunchHostFunc_ptsz)

/* CUDA entry points the library calls but does not replace. */
#define VG_CUDA_USED(X)      \
    X(cuDriverGetVersion)    \
    X(cuDeviceGetCount)      \
    X(cuDeviceGetUuid_v2)    \
    X(cuCtxGetCurrent)       \
    X(cuCtxGetDevice)        \
    X(cuCtxPushCurrent_v2)   \
    X(cuCtxPopCurrent_v2)    \
    X(cuStreamGetCtx)        \
    X(cuEventCreate)         \
    X(cuEventRecord)         \
    X(cuEventQuery)          \
    X(cuEventDestroy_v2)     \
    X(cuMemPoolGetAttribute) \
    X(cuDeviceGetMemPool)    \
    X(cuMemGetAllocationPropertiesFromHandle)

/* NVML entry points the library replaces, and those it only calls. */
#define VG_NVML_WRAPPED(X)                     \
    X(nvmlInit)                                \
    X(nvmlInit_v2)                             \
    X(nvmlInitWithFlags)                       \
    X(nvmlDeviceGetCount)                      \
    X(nvmlDeviceGetCount_v2)                   \
    X(nvmlDeviceGetHandleByIndex)              \
    X(nvmlDeviceGetHandleByIndex_v2)           \
    X(nvmlDeviceGetHandleByUUID)               \
    X(nvmlDeviceGetHandleByPciBusId)           \
    X(nvmlDeviceGetHandleByPciBusId_v2)        \
    X(nvmlDeviceGetHandleBySerial)             \
    X(nvmlDeviceGetIndex)                      \
    X(nvmlDeviceGetMemoryInfo)                 \
    X(nvmlDeviceGetMemoryInfo_v2)              \
    X(nvmlDeviceGetComputeRunningProcesses)    \
    X(nvmlDeviceGetComputeRunningProcesses_v2) \
    X(nvmlDeviceGetComputeRunningProcesses_v3) \
    X(nvmlDeviceGetProcessUtilization)

#define VG_NVML_USED(X) \
    X(nvmlShutdown)     \
    X(nvmlDeviceGetUUID)

typedef struct vg_real {
#define VG_PTR(name) __typeof__(name) *name;
    VG_CUDA_WRAPPED(VG_PTR)
    VG_CUDA_USED(VG_PTR)
    VG_NVML_WRAPPED(VG_PTR)
    VG_NVML_USED(VG_PTR)
#undef VG_PTR
} vg_real;

/* Calls NVIDIA's function, or answers CUDA_ERROR_NOT_SUPPORTED when the installed driver lacks it. */
/* (Through void (*)(void): the one function type that may stand for any other in a cast.) */
#define REAL(name) (g_vg.real.name ? g_vg.real.name : (__typeof__(name) *)(void (*)(void))vg_missing_cuda)
#define REAL_NVML(name) \
    (g_vg.real.name ? g_vg.real.name : (__typeof__(name) *)(void (*)(void))vg_missing_nvml)

enum vg_mode {
    VG_ENFORCE = 0, /* slots loaded: limits apply */
    VG_DISABLED,    /* GPUPOOL_VGPU_DISABLE=1: everything passes through, and the program was told so */
    VG_REFUSE,      /* no usable slot: CUDA and NVML refuse, with a message */
};

#define VG_PACE_MAX      64 /* kernels a compute-limited process may have in flight per device, at most */
#define VG_PACE_AHEAD_NS 8000000ull /* ... and about this much GPU time of them (at least 2 kernels) */

/* One visible device of this process (CUDA ordinal == slot index order, after visibility mapping). */
typedef struct vg_dev {
    gp_slot_handle *slot;
    nvmlDevice_t nvml; /* the real NVML handle of its GPU, once NVML is up */
    /* contexts of this process on the device, and the memory charged for them */
    int ctx_count;
    uint64_t ctx_charged;
    /* for measuring: the newest NVML utilization sample already counted, per process of the slot */
    struct {
        unsigned pid;
        uint64_t ts_us;
    } seen[GP_SLOT_MAX_PROCS];
    uint64_t blind_steps, blind_launches; /* budget steps in a row that measured no use while launching */
    /* pacing of compute-limited launches: a ring of events recorded after launches */
    pthread_mutex_t pace_mu;
    CUcontext pace_ctx;
    CUevent pace_ev[VG_PACE_MAX]; /* a ring; created as needed */
    unsigned pace_head, pace_n;
    unsigned pace_depth;     /* how many may be in flight now (2..VG_PACE_MAX) */
    uint64_t pace_wait_ns;   /* when the last wait for a slot in the ring ended */
    uint64_t pace_since;     /* launches since then */
    uint64_t pace_kernel_ns; /* a kernel's time, averaged, while the ring was full */
} vg_dev;

typedef struct vg_state {
    atomic_int inited; /* do_init has run (release): mode and the slots may be read */
    int mode;
    char refuse_why[400];
    vg_real real;
    void *cuda_dl, *nvml_dl;
    gp_slot_handle slots[GP_SLOT_MAX_GPUS];
    int nslots;
    vg_dev dev[GP_SLOT_MAX_GPUS]; /* by CUDA ordinal */
    int ndev;
    atomic_int cuda_ready; /* cuInit succeeded with the visibility applied */
    atomic_int nvml_ready;
    pthread_mutex_t mem_mu; /* the maps below */
    gp_u64map allocs;       /* device pointer -> vg_rec */
    gp_u64map handles;      /* VMM handle, array, mipmapped array -> vg_rec */
    gp_u64map pools;        /* pool -> vg_rec(bytes charged for what it reserves, its device) */
    gp_u64map pool_out;     /* pool -> bytes allocated from it and not yet freed */
    gp_u64map pool_of;      /* stream-ordered allocation -> its pool */
    uint64_t freeze_timeout_ns;
} vg_state;

extern vg_state g_vg;

/* A tracked allocation: size in the low 55 bits, VG_REC_POOL, device ordinal in the top 8. */
#define VG_REC_POOL (1ull << 55) /* from a pool: charged through the pool, not by itself */
static inline uint64_t vg_rec(uint64_t bytes, int dev)
{
    return (bytes & (VG_REC_POOL - 1)) | ((uint64_t)dev << 56);
}
static inline uint64_t vg_rec_bytes(uint64_t r)
{
    return r & (VG_REC_POOL - 1);
}
static inline int vg_rec_dev(uint64_t r)
{
    return (int)(r >> 56);
}

CUresult vg_missing_cuda(void);
nvmlReturn_t vg_missing_nvml(void);

/* Sets everything up once; returns g_vg.mode. After the first call, one load and a branch. */
int vg_init_slow(void);
static inline int vg_init(void)
{
    if (__builtin_expect(atomic_load_explicit(&g_vg.inited, memory_order_acquire), 1))
        return g_vg.mode;
    return vg_init_slow();
}
/* CUDA_SUCCESS when CUDA calls may proceed under enforcement (or disabled), else the refusal's error. */
CUresult vg_cuda_ok(void);

/* The calling thread's current device (ordinal), or -1. */
int vg_current_dev(void);
/* The device of a stream (its context's device). */
int vg_stream_dev(CUstream s);

/* Joins the device's slot and charges this process's context memory there (first context on the device).
 * Returns CUDA_ERROR_OUT_OF_MEMORY when the context itself does not fit in the vGPU. */
CUresult vg_ctx_opened(int dev);
void vg_ctx_closed(int dev);

/* Re-reads what the pools of a device reserve and charges exactly that (at synchronisation points). */
void vg_pools_reconcile(void);

/* True when a launch on device `dev` needs nothing from us: its slot is neither frozen nor compute-limited
 * (the launch paths' fast path, two loads from the slot). */
static inline bool vg_launch_free(int dev)
{
    if (dev < 0 || dev >= g_vg.ndev)
        return true;
    const gp_slot *s = g_vg.dev[dev].slot->s;
    return atomic_load_explicit(&((gp_slot *)s)->frozen, memory_order_relaxed) == 0 &&
           gp_slot_share_ppm(s) >= GP_SLOT_FULL_PPM;
}

/* Waits while the device's slot is frozen; with compute, also for the compute budget. */
CUresult vg_gate(int dev, bool compute);
/* After a launch on a compute-limited device: keep about VG_PACE_AHEAD_NS of GPU time in flight. */
void vg_after_launch(int dev, CUstream stream);

/* NVML: real handle of a visible device, and the reverse. */
nvmlReturn_t vg_nvml_up(void);

/* Wrapper lookup for cuGetProcAddress and dlsym: our replacement for a real function pointer, or NULL. */
void *vg_wrapper_for(void *real);

#endif

/* The CUDA driver API header that gpupool's programs and tests include, in place of NVIDIA's.
 * It pulls in our types and prototypes and then, like CUDA 13.0's cuda.h, maps each classic name to
 * the entry point a new binary should bind to (cuMemAlloc -> cuMemAlloc_v2, and _ptds/_ptsz when
 * CUDA_API_PER_THREAD_DEFAULT_STREAM is defined). Code that implements the exact exported names
 * (the simulator) defines GP_CUDA_NO_API_MACROS first and gets no mapping. tests/abi compares it. */
#ifndef GPUPOOL_CUDA_H
#define GPUPOOL_CUDA_H

#include "cuda_types.h"
#include "cuda_api.h"

#define CUDA_VERSION 13000

#ifndef GP_CUDA_NO_API_MACROS

/* Per-thread default stream: synchronous calls gain _ptds, stream-taking calls _ptsz. */
#if defined(CUDA_API_PER_THREAD_DEFAULT_STREAM)
#define GP_CUDA_PTDS(name) name##_ptds
#define GP_CUDA_PTSZ(name) name##_ptsz
#else
#define GP_CUDA_PTDS(name) name
#define GP_CUDA_PTSZ(name) name
#endif

/* Entry points, devices, contexts. */
#define cuGetProcAddress           cuGetProcAddress_v2
#define cuDeviceGetUuid            cuDeviceGetUuid_v2
#define cuDeviceTotalMem           cuDeviceTotalMem_v2
#define cuDevicePrimaryCtxRelease  cuDevicePrimaryCtxRelease_v2
#define cuDevicePrimaryCtxSetFlags cuDevicePrimaryCtxSetFlags_v2
#define cuDevicePrimaryCtxReset    cuDevicePrimaryCtxReset_v2
#define cuCtxCreate                cuCtxCreate_v4
#define cuCtxDestroy               cuCtxDestroy_v2
#define cuCtxPushCurrent           cuCtxPushCurrent_v2
#define cuCtxPopCurrent            cuCtxPopCurrent_v2

/* Memory. */
#define cuMemGetInfo              cuMemGetInfo_v2
#define cuMemAlloc                cuMemAlloc_v2
#define cuMemAllocPitch           cuMemAllocPitch_v2
#define cuMemFree                 cuMemFree_v2
#define cuMemGetAddressRange      cuMemGetAddressRange_v2
#define cuMemAllocHost            cuMemAllocHost_v2
#define cuMemHostGetDevicePointer cuMemHostGetDevicePointer_v2
#define cuMemHostRegister         cuMemHostRegister_v2
#define cuMemAdvise               cuMemAdvise_v2
#define cuMemPrefetchAsync        GP_CUDA_PTSZ(cuMemPrefetchAsync_v2)
#define cuArrayCreate             cuArrayCreate_v2
#define cuArray3DCreate           cuArray3DCreate_v2
#define cuArrayGetDescriptor      cuArrayGetDescriptor_v2
#define cuArray3DGetDescriptor    cuArray3DGetDescriptor_v2
#define cuIpcOpenMemHandle        cuIpcOpenMemHandle_v2

/* Copies and memsets. */
#define cuMemcpyHtoD        GP_CUDA_PTDS(cuMemcpyHtoD_v2)
#define cuMemcpyDtoH        GP_CUDA_PTDS(cuMemcpyDtoH_v2)
#define cuMemcpyDtoD        GP_CUDA_PTDS(cuMemcpyDtoD_v2)
#define cuMemcpyDtoA        GP_CUDA_PTDS(cuMemcpyDtoA_v2)
#define cuMemcpyAtoD        GP_CUDA_PTDS(cuMemcpyAtoD_v2)
#define cuMemcpyHtoA        GP_CUDA_PTDS(cuMemcpyHtoA_v2)
#define cuMemcpyAtoH        GP_CUDA_PTDS(cuMemcpyAtoH_v2)
#define cuMemcpyAtoA        GP_CUDA_PTDS(cuMemcpyAtoA_v2)
#define cuMemcpyHtoAAsync   GP_CUDA_PTSZ(cuMemcpyHtoAAsync_v2)
#define cuMemcpyAtoHAsync   GP_CUDA_PTSZ(cuMemcpyAtoHAsync_v2)
#define cuMemcpy2D          GP_CUDA_PTDS(cuMemcpy2D_v2)
#define cuMemcpy2DUnaligned GP_CUDA_PTDS(cuMemcpy2DUnaligned_v2)
#define cuMemcpy3D          GP_CUDA_PTDS(cuMemcpy3D_v2)
#define cuMemcpyHtoDAsync   GP_CUDA_PTSZ(cuMemcpyHtoDAsync_v2)
#define cuMemcpyDtoHAsync   GP_CUDA_PTSZ(cuMemcpyDtoHAsync_v2)
#define cuMemcpyDtoDAsync   GP_CUDA_PTSZ(cuMemcpyDtoDAsync_v2)
#define cuMemcpy2DAsync     GP_CUDA_PTSZ(cuMemcpy2DAsync_v2)
#define cuMemcpy3DAsync     GP_CUDA_PTSZ(cuMemcpy3DAsync_v2)
#define cuMemsetD8          GP_CUDA_PTDS(cuMemsetD8_v2)
#define cuMemsetD16         GP_CUDA_PTDS(cuMemsetD16_v2)
#define cuMemsetD32         GP_CUDA_PTDS(cuMemsetD32_v2)
#define cuMemsetD2D8        GP_CUDA_PTDS(cuMemsetD2D8_v2)
#define cuMemsetD2D16       GP_CUDA_PTDS(cuMemsetD2D16_v2)
#define cuMemsetD2D32       GP_CUDA_PTDS(cuMemsetD2D32_v2)

/* Streams, events, graphs. */
#define cuStreamDestroy      cuStreamDestroy_v2
#define cuStreamBeginCapture GP_CUDA_PTSZ(cuStreamBeginCapture_v2)
#define cuEventDestroy       cuEventDestroy_v2
#define cuEventElapsedTime   cuEventElapsedTime_v2
#define cuGraphInstantiate   cuGraphInstantiateWithFlags
#define cuGraphAddKernelNode cuGraphAddKernelNode_v2

/* Stream capture queries. */
#define cuStreamGetCaptureInfo            GP_CUDA_PTSZ(cuStreamGetCaptureInfo_v3)
#define cuStreamUpdateCaptureDependencies GP_CUDA_PTSZ(cuStreamUpdateCaptureDependencies_v2)

/* Modules. */
#define cuModuleGetGlobal cuModuleGetGlobal_v2

/* Names that keep their spelling and only change with the per-thread default stream. */
#if defined(CUDA_API_PER_THREAD_DEFAULT_STREAM)
#define cuMemcpy                     GP_CUDA_PTDS(cuMemcpy)
#define cuMemcpyAsync                GP_CUDA_PTSZ(cuMemcpyAsync)
#define cuMemcpyPeer                 GP_CUDA_PTDS(cuMemcpyPeer)
#define cuMemcpyPeerAsync            GP_CUDA_PTSZ(cuMemcpyPeerAsync)
#define cuMemsetD8Async              GP_CUDA_PTSZ(cuMemsetD8Async)
#define cuMemsetD16Async             GP_CUDA_PTSZ(cuMemsetD16Async)
#define cuMemsetD32Async             GP_CUDA_PTSZ(cuMemsetD32Async)
#define cuMemsetD2D8Async            GP_CUDA_PTSZ(cuMemsetD2D8Async)
#define cuMemsetD2D16Async           GP_CUDA_PTSZ(cuMemsetD2D16Async)
#define cuMemsetD2D32Async           GP_CUDA_PTSZ(cuMemsetD2D32Async)
#define cuMemAllocAsync              GP_CUDA_PTSZ(cuMemAllocAsync)
#define cuMemFreeAsync               GP_CUDA_PTSZ(cuMemFreeAsync)
#define cuMemAllocFromPoolAsync      GP_CUDA_PTSZ(cuMemAllocFromPoolAsync)
#define cuStreamQuery                GP_CUDA_PTSZ(cuStreamQuery)
#define cuStreamSynchronize          GP_CUDA_PTSZ(cuStreamSynchronize)
#define cuStreamWaitEvent            GP_CUDA_PTSZ(cuStreamWaitEvent)
#define cuStreamAddCallback          GP_CUDA_PTSZ(cuStreamAddCallback)
#define cuStreamGetPriority          GP_CUDA_PTSZ(cuStreamGetPriority)
#define cuStreamGetFlags             GP_CUDA_PTSZ(cuStreamGetFlags)
#define cuStreamGetCtx               GP_CUDA_PTSZ(cuStreamGetCtx)
#define cuStreamGetId                GP_CUDA_PTSZ(cuStreamGetId)
#define cuStreamGetDevice            GP_CUDA_PTSZ(cuStreamGetDevice)
#define cuStreamEndCapture           GP_CUDA_PTSZ(cuStreamEndCapture)
#define cuStreamIsCapturing          GP_CUDA_PTSZ(cuStreamIsCapturing)
#define cuEventRecord                GP_CUDA_PTSZ(cuEventRecord)
#define cuEventRecordWithFlags       GP_CUDA_PTSZ(cuEventRecordWithFlags)
#define cuLaunchKernel               GP_CUDA_PTSZ(cuLaunchKernel)
#define cuLaunchKernelEx             GP_CUDA_PTSZ(cuLaunchKernelEx)
#define cuLaunchCooperativeKernel    GP_CUDA_PTSZ(cuLaunchCooperativeKernel)
#define cuLaunchHostFunc             GP_CUDA_PTSZ(cuLaunchHostFunc)
#define cuGraphInstantiateWithParams GP_CUDA_PTSZ(cuGraphInstantiateWithParams)
#define cuGraphUpload                GP_CUDA_PTSZ(cuGraphUpload)
#define cuGraphLaunch                GP_CUDA_PTSZ(cuGraphLaunch)

/* Entry points looked up by name must default to the per-thread stream flavour too. libcuda has no
 * such symbol; like NVIDIA's header, we add the flag in an inline wrapper and map the name to it. */
static inline CUresult cuGetProcAddress_v2_ptsz(const char *symbol, void **pfn, int cudaVersion,
                                                cuuint64_t flags,
                                                CUdriverProcAddressQueryResult *symbolStatus)
{
    const cuuint64_t stream_kind =
        CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    if ((flags & stream_kind) == 0)
        flags |= CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus);
}
#define cuGetProcAddress_v2 cuGetProcAddress_v2_ptsz
#endif /* CUDA_API_PER_THREAD_DEFAULT_STREAM */

#endif /* GP_CUDA_NO_API_MACROS */

#endif /* GPUPOOL_CUDA_H */

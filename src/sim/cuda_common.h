/* cuda_common.h - what every libcuda.so.1 gpupool builds answers the same way, whatever runs the calls (the
 * simulated GPU, or the GPU-over-IP client): error names and texts, and cuGetProcAddress's version semantics
 * over the table generated from NVIDIA's cudaTypedefs.h (procaddr.inc). */
#ifndef GPUPOOL_SIM_CUDA_COMMON_H
#define GPUPOOL_SIM_CUDA_COMMON_H

#include <stdbool.h>

#include "gpupool/cuda.h"

#define GP_CUDA_HIDDEN __attribute__((visibility("hidden")))

/* cuGetErrorName (text false) and cuGetErrorString (text true). */
GP_CUDA_HIDDEN CUresult gp_cuda_error_str(CUresult error, const char **pStr, bool text);

/* cuGetProcAddress (v2 false) and cuGetProcAddress_v2 (v2 true): the symbol's newest variant not newer than
 * cudaVersion (the per-thread default-stream one when flags ask for it), resolved in the shared library that
 * holds `anchor` (one of its own functions), so that an interposer on top is not consulted. */
GP_CUDA_HIDDEN CUresult gp_cuda_proc_address(void *anchor, int driver_version, const char *symbol, void **pfn,
                                             int cudaVersion, cuuint64_t flags,
                                             CUdriverProcAddressQueryResult *status, bool v2);

#endif

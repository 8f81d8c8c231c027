/* Proves every prototype in include/gpupool/cuda_api.h is compatible with NVIDIA's: this file only
 * compiles if it is. __CUDA_API_VERSION_INTERNAL makes NVIDIA's cuda.h declare each entry point under
 * its exported name (legacy, _v2, _ptds and _ptsz alike, no mapping macros); redeclaring one with a
 * different type is then a constraint violation, i.e. a compile error naming the function. */
#define __CUDA_API_VERSION_INTERNAL 1
#include GP_NVIDIA_CUDA_H

#include "abi_check.h"

/* First, each name we declare must already be declared by NVIDIA (else: undeclared identifier), so
 * that the redeclaration below really is compared against something. sizeof keeps the operands
 * unevaluated: no reference to libcuda is emitted. */
size_t gp_abi_protos_checked(void)
{
    size_t n = 0;
#define GP_ABI_PROTO(name) n += sizeof(&(name)) > 0;
#include "abi_list.h"
    return n;
}

#include "gpupool/cuda_api.h"

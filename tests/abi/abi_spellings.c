/* Records what each CUDA API name becomes after preprocessing: the classic names our cuda.h maps
 * (cuMemAlloc -> cuMemAlloc_v2) and every name cuda_api.h declares. Built five ways (ours, NVIDIA's,
 * each with and without CUDA_API_PER_THREAD_DEFAULT_STREAM, and ours with GP_CUDA_NO_API_MACROS);
 * GP_ABI_SPELLINGS_FN names the filler. With our mapping on, each expansion must be a declared function. */
#include "abi_check.h"

#ifdef GP_ABI_NVIDIA
#include GP_NVIDIA_CUDA_H
#else
#include "gpupool/cuda.h"
#endif

#define GP_ABI_STR_(x) #x
#define GP_ABI_STR(x)  GP_ABI_STR_(x)

#if defined(GP_ABI_NVIDIA) || defined(GP_CUDA_NO_API_MACROS)
#define GP_ABI_MUST_BE_DECLARED(name)
#else
/* Compiles only if the expansion names something declared; sizeof emits no reference to it. */
#define GP_ABI_MUST_BE_DECLARED(name) (void)sizeof(&(name));
#endif

size_t GP_ABI_SPELLINGS_FN(struct gp_abi_spelling *rows, size_t cap)
{
    size_t n = 0;

#define GP_ABI_MAPPED(name)                                          \
    GP_ABI_MUST_BE_DECLARED(name)                                    \
    if (n < cap)                                                     \
        rows[n] = (struct gp_abi_spelling){#name, GP_ABI_STR(name)}; \
    n++;
#include "abi_list.h"

    return n;
}

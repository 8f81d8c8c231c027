/* Fills the table of numbers that must agree between our CUDA headers and NVIDIA's: enumerator
 * values, macro values, sizes and alignments of typedefs, offsets and sizes of struct members.
 * Built twice: GP_ABI_NVIDIA selects NVIDIA's cuda.h (path in GP_NVIDIA_CUDA_H), and
 * GP_ABI_VALUES_FN names the filler; abi_cuda_check.c compares the two tables row by row. */
#include "abi_check.h"

#ifdef GP_ABI_NVIDIA
#include GP_NVIDIA_CUDA_H
#else
#include "gpupool/cuda.h"
#endif

size_t GP_ABI_VALUES_FN(struct gp_abi_value *rows, size_t cap)
{
    size_t n = 0;

#define GP_ABI_PUT(what_, name_, value_)                                            \
    do {                                                                            \
        if (n < cap)                                                                \
            rows[n] = (struct gp_abi_value){(what_), (name_), (long long)(value_)}; \
        n++;                                                                        \
    } while (0);
#define GP_ABI_ENUM(name)  GP_ABI_PUT("enum", #name, name)
#define GP_ABI_MACRO(name) GP_ABI_PUT("macro", #name, (intptr_t)(name))
#define GP_ABI_TYPE(name)                   \
    GP_ABI_PUT("size", #name, sizeof(name)) \
    GP_ABI_PUT("align", #name, _Alignof(name))
#define GP_ABI_FIELD(type, path)                                \
    GP_ABI_PUT("offset", #type "." #path, offsetof(type, path)) \
    GP_ABI_PUT("member size", #type "." #path, sizeof(((type *)0)->path))
#include "abi_list.h"
#undef GP_ABI_PUT

    return n;
}

/* array_format.h - bytes per channel of the CUDA array formats that hold plain numbers.
 *
 * The simulated GPU stores arrays of these formats, the GPU-over-IP client and worker lay out copies of them
 * and the vGPU library charges their memory. Each of them decides for itself what a packed, block-compressed
 * or video format (or a value that is no format) costs or means: for all of those the answer here is 0.
 * Inline and free of state, so that every library, interposed ones included, can use it without linking.
 */
#ifndef GP_COMMON_ARRAY_FORMAT_H
#define GP_COMMON_ARRAY_FORMAT_H

#include "gpupool/cuda_types.h"

/* Bytes per channel of the 8, 16 and 32-bit integer, half and float formats; 0 for any other value. */
static inline unsigned gp_array_format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    default: return 0;
    }
}

#endif

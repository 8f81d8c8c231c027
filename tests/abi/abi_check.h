/* Shared by the sources of abi_cuda_check, the test that include/gpupool/cuda*.h match NVIDIA's.
 * abi_values.c and abi_spellings.c are each compiled once against our headers and once against
 * NVIDIA's (and the spellings again with the per-thread default stream); each build fills rows from
 * the same generated list (abi_list.h), so row i of one side is row i of the other. */
#ifndef GP_ABI_CHECK_H
#define GP_ABI_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* One compared number: `what` is "enum", "macro", "size", "align", "offset" or "member size". */
struct gp_abi_value {
    const char *what;
    const char *name;
    long long value;
};

/* A name and what the preprocessor turns it into (the symbol a call binds to). */
struct gp_abi_spelling {
    const char *name;
    const char *expansion;
};

/* Each filler writes at most cap rows and returns how many it has, so a first call with cap 0 sizes
 * the array. */
size_t gp_abi_values_ours(struct gp_abi_value *rows, size_t cap);
size_t gp_abi_values_nvidia(struct gp_abi_value *rows, size_t cap);

size_t gp_abi_spellings_ours(struct gp_abi_spelling *rows, size_t cap);
size_t gp_abi_spellings_nvidia(struct gp_abi_spelling *rows, size_t cap);
size_t gp_abi_spellings_ours_ptds(struct gp_abi_spelling *rows, size_t cap);
size_t gp_abi_spellings_nvidia_ptds(struct gp_abi_spelling *rows, size_t cap);
size_t gp_abi_spellings_ours_no_macros(struct gp_abi_spelling *rows, size_t cap);

/* How many of our prototypes abi_protos.c redeclared over NVIDIA's (it only compiles if all agree). */
size_t gp_abi_protos_checked(void);

#endif /* GP_ABI_CHECK_H */

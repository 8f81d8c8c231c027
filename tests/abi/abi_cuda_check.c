/* abi_cuda_check: proves gpupool's CUDA driver API headers (include/gpupool/cuda*.h) match NVIDIA's
 * CUDA 13.0 cuda.h. It compares the tables filled by abi_values.c and abi_spellings.c (same list,
 * built against both headers) and prints every mismatch; prototypes were already checked when
 * abi_protos.c compiled. Exit status 0 only if nothing differs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi_check.h"

/* Compares values row by row; returns the number of mismatches. */
static size_t compare_values(void)
{
    size_t n = gp_abi_values_ours(NULL, 0);
    size_t n_nvidia = gp_abi_values_nvidia(NULL, 0);
    if (n != n_nvidia) {
        fprintf(stderr,
                "value tables differ in length (ours %zu, NVIDIA %zu): rebuild both from abi_list.h\n", n,
                n_nvidia);
        return 1;
    }
    struct gp_abi_value *ours = calloc(n, sizeof *ours);
    struct gp_abi_value *theirs = calloc(n, sizeof *theirs);
    if (ours == NULL || theirs == NULL) {
        fprintf(stderr, "out of memory for %zu rows\n", n);
        exit(2);
    }
    gp_abi_values_ours(ours, n);
    gp_abi_values_nvidia(theirs, n);

    size_t bad = 0, enums = 0, macros = 0, types = 0, fields = 0;
    for (size_t i = 0; i < n; i++) {
        enums += strcmp(ours[i].what, "enum") == 0;
        macros += strcmp(ours[i].what, "macro") == 0;
        types += strcmp(ours[i].what, "size") == 0;
        fields += strcmp(ours[i].what, "offset") == 0;
        if (ours[i].value != theirs[i].value) {
            printf("MISMATCH %s %s: ours %lld, NVIDIA %lld\n", ours[i].what, ours[i].name, ours[i].value,
                   theirs[i].value);
            bad++;
        }
    }
    printf("compared %zu enumerators, %zu macros, %zu types (size, alignment), %zu members (offset, size)\n",
           enums, macros, types, fields);
    free(ours);
    free(theirs);
    return bad;
}

typedef size_t (*spelling_fn)(struct gp_abi_spelling *, size_t);

static struct gp_abi_spelling *load_spellings(spelling_fn fill, size_t *count)
{
    *count = fill(NULL, 0);
    struct gp_abi_spelling *rows = calloc(*count ? *count : 1, sizeof *rows);
    if (rows == NULL) {
        fprintf(stderr, "out of memory for %zu rows\n", *count);
        exit(2);
    }
    fill(rows, *count);
    return rows;
}

/* Each name must expand to the same symbol under both headers; `theirs` NULL means "to itself". */
static size_t compare_spellings(const char *mode, spelling_fn ours_fn, spelling_fn theirs_fn)
{
    size_t n, n_theirs = 0;
    struct gp_abi_spelling *ours = load_spellings(ours_fn, &n);
    struct gp_abi_spelling *theirs = theirs_fn ? load_spellings(theirs_fn, &n_theirs) : NULL;
    size_t bad = 0;
    if (theirs != NULL && n != n_theirs) {
        fprintf(stderr, "%s: spelling tables differ in length (%zu, %zu)\n", mode, n, n_theirs);
        bad = 1;
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *want = theirs ? theirs[i].expansion : ours[i].name;
        if (strcmp(ours[i].expansion, want) != 0) {
            printf("MISMATCH %s: %s expands to %s with our cuda.h, to %s %s\n", mode, ours[i].name,
                   ours[i].expansion, want, theirs ? "with NVIDIA's" : "expected");
            bad++;
        }
    }
    printf("compared %zu API names (%s)\n", n, mode);
    free(ours);
    free(theirs);
    return bad;
}

int main(void)
{
    size_t bad = compare_values();
    bad += compare_spellings("default stream", gp_abi_spellings_ours, gp_abi_spellings_nvidia);
    bad += compare_spellings("CUDA_API_PER_THREAD_DEFAULT_STREAM", gp_abi_spellings_ours_ptds,
                             gp_abi_spellings_nvidia_ptds);
    bad += compare_spellings("GP_CUDA_NO_API_MACROS", gp_abi_spellings_ours_no_macros, NULL);
    printf("%zu prototypes in cuda_api.h matched NVIDIA's at compile time\n", gp_abi_protos_checked());
    if (bad != 0) {
        printf("FAIL: %zu mismatches between include/gpupool/cuda*.h and NVIDIA's cuda.h\n", bad);
        return 1;
    }
    printf("OK: our CUDA headers match NVIDIA's\n");
    return 0;
}

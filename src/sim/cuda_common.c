/* cuda_common.c - error names and cuGetProcAddress, shared by the simulated driver and the GPU-over-IP client
 * (cuda_common.h). */
#include "sim/cuda_common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
#define GP_CUDA_ERROR(name, value, text) {value, #name, text},
#include "sim/cuda_errors.inc"
#undef GP_CUDA_ERROR
};

CUresult gp_cuda_error_str(CUresult error, const char **pStr, bool text)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == (int)error) {
            *pStr = text ? errors[i].text : errors[i].name;
            return CUDA_SUCCESS;
        }
    *pStr = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

enum { GP_PROC_DEFAULT = 0, GP_PROC_PTDS = 1 };

static const struct procrow {
    const char *name;
    int since;
    const char *symbol;
    int variant;
} procrows[] = {
#define GP_PROC(name, since, symbol, variant) {name, since, symbol, variant},
#include "sim/procaddr.inc"
#undef GP_PROC
};

/* The library this copy of the module is linked into (each libcuda has its own copy). */
static void *g_self;
static _Atomic(void *) g_anchor;

static void open_self(void)
{
    Dl_info info;
    if (dladdr(atomic_load(&g_anchor), &info) && info.dli_fname)
        g_self = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
}

CUresult gp_cuda_proc_address(void *anchor, int driver_version, const char *symbol, void **pfn,
                              int cudaVersion, cuuint64_t flags, CUdriverProcAddressQueryResult *status,
                              bool v2)
{
    if (symbol == NULL || pfn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    if (flags &
        ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
        return CUDA_ERROR_INVALID_VALUE;
    if (cudaVersion > driver_version)
        return CUDA_ERROR_INVALID_VALUE;
    bool ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    size_t nrows = sizeof procrows / sizeof procrows[0], lo = 0, hi = nrows;
    while (lo < hi) { /* first row whose name is >= symbol */
        size_t mid = (lo + hi) / 2;
        if (strcmp(procrows[mid].name, symbol) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    const struct procrow *def = NULL, *pt = NULL;
    bool known = false;
    for (size_t i = lo; i < nrows && strcmp(procrows[i].name, symbol) == 0; i++) {
        known = true;
        const struct procrow *r = &procrows[i];
        if (r->since > cudaVersion)
            continue;
        if (r->variant == GP_PROC_DEFAULT && (!def || r->since > def->since))
            def = r;
        if (r->variant == GP_PROC_PTDS && (!pt || r->since > pt->since))
            pt = r;
    }
    const struct procrow *use = (ptds && pt) ? pt : def;
    if (use == NULL) {
        if (status)
            *status =
                known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return v2 ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
    }
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    atomic_store(&g_anchor, anchor);
    pthread_once(&once, open_self);
    void *fn = g_self ? dlsym(g_self, use->symbol) : NULL;
    if (fn == NULL) {
        if (status)
            *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return v2 ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
    }
    *pfn = fn;
    if (status)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}

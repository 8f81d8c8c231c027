/* init.c - driver initialisation, versions, error names, cuGetProcAddress and process lifecycle.
 *
 * cuInit reads the device spec (GPUPOOL_SIM_GPUS), maps the host-wide state (shared.c), applies
 * CUDA_VISIBLE_DEVICES as the driver does, and reserves the device address ranges (mem.c). A child forked
 * from a process that initialised CUDA cannot use it, as with NVIDIA's driver: every call there answers
 * CUDA_ERROR_NOT_INITIALIZED. At exit the process's entry in the state file is given back; if the process is
 * killed instead, the next process to look reclaims it (shared.c).
 */
#include "sim/sim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

gp_sim_proc g_sim = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_ullong g_ids = 1;

unsigned long long gp_next_id(void)
{
    return atomic_fetch_add(&g_ids, 1);
}

/* ---- fork ----------------------------------------------------------------------------------------- */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_sim.mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&g_sim.mu);
}

static void atfork_child(void)
{
    pthread_mutex_init(&g_sim.mu, NULL);
    if (atomic_load(&g_sim.state) == GP_SIM_READY) {
        /* The parent's contexts, streams and memory are not the child's. Close our copy of the state file's
         * descriptor without unlocking: the ownership lock belongs to the parent's open file description. */
        if (g_sim.shm.fd >= 0)
            close(g_sim.shm.fd);
        g_sim.shm.fd = -1;
        g_sim.shm.proc = -1;
        g_sim.init_result = CUDA_ERROR_NOT_INITIALIZED;
        atomic_store(&g_sim.state, GP_SIM_FAILED);
    }
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void gp_sim_atfork_init(void)
{
    pthread_once(&g_fork_once, register_atfork);
}

__attribute__((destructor)) static void sim_fini(void)
{
    if (atomic_load(&g_sim.state) == GP_SIM_READY && g_sim.shm.proc >= 0)
        gp_shm_proc_release(&g_sim.shm);
}

/* ---- cuInit --------------------------------------------------------------------------------------- */

static uint64_t env_u64(const char *name, uint64_t def, uint64_t max)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end != '\0' || x > max) {
        gp_log(GP_LOG_WARN, GP_LOG_SIM, "%s=\"%s\" is not a number up to %llu; using %llu", name, v,
               (unsigned long long)max, (unsigned long long)def);
        return def;
    }
    return x;
}

static CUresult do_init(void)
{
    gp_err err;
    if (gp_models_count() == 0) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "the built-in GPU model table is empty; the build is broken");
        return CUDA_ERROR_NO_DEVICE;
    }
    if (gp_sim_spec_from_env(&g_sim.spec, &err) < 0) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "%s", err.msg);
        return CUDA_ERROR_NO_DEVICE;
    }
    if (g_sim.spec.ndev == 0)
        return CUDA_ERROR_NO_DEVICE;
    if (gp_shm_open(&g_sim.shm, &g_sim.spec, &err) < 0) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "%s", err.msg);
        return CUDA_ERROR_OPERATING_SYSTEM;
    }
    g_sim.ndev = gp_sim_visible_devices(getenv("CUDA_VISIBLE_DEVICES"), g_sim.shm.shm, g_sim.phys);
    if (g_sim.ndev == 0) {
        gp_shm_close(&g_sim.shm);
        return CUDA_ERROR_NO_DEVICE;
    }
    if (gp_mem_init(&err) < 0 || gp_pool_init_defaults(&err) < 0) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "%s", err.msg);
        gp_shm_close(&g_sim.shm);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    g_sim.driver_version = (int)env_u64("GPUPOOL_SIM_DRIVER_VERSION", GP_SIM_DRIVER_VERSION, 99990);
    g_sim.launch_ns = env_u64("GPUPOOL_SIM_LAUNCH_NS", 1000, 1000000000ull);
    g_sim.copy_ns = env_u64("GPUPOOL_SIM_COPY_NS", 1500, 1000000000ull);
    g_sim.lookahead_ns = env_u64("GPUPOOL_SIM_LOOKAHEAD_NS", 2000000, 10000000000ull);
    return CUDA_SUCCESS;
}

GP_API CUresult cuInit(unsigned int Flags)
{
    gp_sim_atfork_init();
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int s = atomic_load_explicit(&g_sim.state, memory_order_acquire);
    if (s != GP_SIM_UNINIT)
        return s == GP_SIM_READY ? CUDA_SUCCESS : g_sim.init_result;
    pthread_mutex_lock(&g_sim.mu);
    if (atomic_load(&g_sim.state) == GP_SIM_UNINIT) {
        CUresult rc = do_init();
        g_sim.init_result = rc;
        atomic_store_explicit(&g_sim.state, rc == CUDA_SUCCESS ? GP_SIM_READY : GP_SIM_FAILED,
                              memory_order_release);
    }
    pthread_mutex_unlock(&g_sim.mu);
    return atomic_load(&g_sim.state) == GP_SIM_READY ? CUDA_SUCCESS : g_sim.init_result;
}

GP_API CUresult cuDriverGetVersion(int *driverVersion)
{
    if (driverVersion == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int v = g_sim.driver_version;
    *driverVersion = v ? v : (int)env_u64("GPUPOOL_SIM_DRIVER_VERSION", GP_SIM_DRIVER_VERSION, 99990);
    return CUDA_SUCCESS;
}

/* ---- error names ---------------------------------------------------------------------------------- */

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
#define GP_CUDA_ERROR(name, value, text) {value, #name, text},
#include "sim/cuda_errors.inc"
#undef GP_CUDA_ERROR
};

static int error_index(CUresult e)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == (int)e)
            return (int)i;
    return -1;
}

GP_API CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int i = error_index(error);
    if (i < 0) {
        *pStr = NULL;
        return CUDA_ERROR_INVALID_VALUE;
    }
    *pStr = errors[i].name;
    return CUDA_SUCCESS;
}

GP_API CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int i = error_index(error);
    if (i < 0) {
        *pStr = NULL;
        return CUDA_ERROR_INVALID_VALUE;
    }
    *pStr = errors[i].text;
    return CUDA_SUCCESS;
}

/* ---- cuGetProcAddress ----------------------------------------------------------------------------- */

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

/* Our own library, for dlsym of the exact exported symbol (an interposer on top of us is not consulted). */
static void *g_self;

static void open_self(void)
{
    Dl_info info;
    if (dladdr((void *)cuInit, &info) && info.dli_fname)
        g_self = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
}

static void *self_handle(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, open_self);
    return g_self;
}

static CUresult proc_address(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *status, bool v2)
{
    if (symbol == NULL || pfn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    if (flags &
        ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
        return CUDA_ERROR_INVALID_VALUE;
    int drv;
    cuDriverGetVersion(&drv);
    if (cudaVersion > drv)
        return CUDA_ERROR_INVALID_VALUE;
    bool ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;

    size_t lo = 0, hi = sizeof procrows / sizeof procrows[0];
    while (lo < hi) { /* first row whose name is >= symbol */
        size_t mid = (lo + hi) / 2;
        if (strcmp(procrows[mid].name, symbol) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    const struct procrow *def = NULL, *pt = NULL;
    bool known = false;
    for (size_t i = lo; i < sizeof procrows / sizeof procrows[0] && strcmp(procrows[i].name, symbol) == 0;
         i++) {
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
    void *self = self_handle();
    void *fn = self ? dlsym(self, use->symbol) : NULL;
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

GP_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    return proc_address(symbol, pfn, cudaVersion, flags, NULL, false);
}

GP_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *symbolStatus)
{
    return proc_address(symbol, pfn, cudaVersion, flags, symbolStatus, true);
}

GP_API CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId)
{
    if (ppExportTable == NULL || pExportTableId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *ppExportTable = NULL;
    const unsigned char *u = (const unsigned char *)pExportTableId->bytes;
    gp_log(GP_LOG_WARN, GP_LOG_SIM,
           "cuGetExportTable(%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x): the "
           "simulated GPU has no private export tables (returning CUDA_ERROR_NOT_SUPPORTED)",
           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
           u[15]);
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* Called by the generated stubs (cmake/gen_stubs.cmake) of every libcuda export not implemented here. */
int gp_cuda_unsupported(const char *name, atomic_int *once);
int gp_cuda_unsupported(const char *name, atomic_int *once)
{
    if (!atomic_exchange(once, 1))
        gp_log(GP_LOG_WARN, GP_LOG_SIM,
               "%s is not supported by the simulated GPU (returning "
               "CUDA_ERROR_NOT_SUPPORTED)",
               name);
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* Present only in the simulation: tools check for it to label simulated GPUs as such. */
GP_API const char gpupool_sim_cuda_version[] = GP_VERSION;

/* init.c - driver initialisation, versions, error names, cuGetProcAddress and process lifecycle.
 *
 * cuInit reads the device spec (GPUPOOL_SIM_GPUS), maps the host-wide state (shared.c), applies
 * CUDA_VISIBLE_DEVICES as the driver does, and reserves the device address ranges (mem.c). A child forked
 * from a process that initialised CUDA cannot use it, as with NVIDIA's driver: every call there answers
 * CUDA_ERROR_NOT_INITIALIZED. At exit the process's entry in the state file is given back; if the process is
 * killed instead, the next process to look reclaims it (shared.c).
 */
#include "sim/sim.h"
#include "sim/cuda_common.h"

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

/* ---- error names and cuGetProcAddress (cuda_common.c, shared with the GPU-over-IP client) ------------- */

GP_API CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    return gp_cuda_error_str(error, pStr, false);
}

GP_API CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    return gp_cuda_error_str(error, pStr, true);
}

static CUresult proc_address(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *status, bool v2)
{
    int drv = 0;
    cuDriverGetVersion(&drv);
    return gp_cuda_proc_address((void *)cuInit, drv, symbol, pfn, cudaVersion, flags, status, v2);
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

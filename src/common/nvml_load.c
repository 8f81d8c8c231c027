/* nvml_load.c - finds, loads and initialises NVML at run time (see nvml_load.h). */
#include "common/nvml_load.h"
#include "common/paths.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *gp_sim_lib_dir(char *buf, size_t len)
{
    const char *env = getenv("GPUPOOL_SIM_LIB_DIR");
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return buf;
    }
    if (gp_install_path("lib/sim", buf, len) == NULL)
        return NULL;
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

#define SYM(field, name)                                                                        \
    do {                                                                                        \
        *(void **)&n->field = dlsym(n->dl, name);                                               \
        if (n->field == NULL) {                                                                 \
            gp_err_set(err, GP_ERR_UNSUPPORTED, "%s has no %s (NVML too old?)", n->path, name); \
            return -1;                                                                          \
        }                                                                                       \
    } while (0)

static int bind(gp_nvml *n, gp_err *err)
{
    SYM(Init, "nvmlInit_v2");
    SYM(Shutdown, "nvmlShutdown");
    SYM(ErrorString, "nvmlErrorString");
    SYM(SystemGetDriverVersion, "nvmlSystemGetDriverVersion");
    SYM(SystemGetCudaDriverVersion, "nvmlSystemGetCudaDriverVersion");
    SYM(SystemGetProcessName, "nvmlSystemGetProcessName");
    SYM(DeviceGetCount, "nvmlDeviceGetCount_v2");
    SYM(DeviceGetHandleByIndex, "nvmlDeviceGetHandleByIndex_v2");
    SYM(DeviceGetName, "nvmlDeviceGetName");
    SYM(DeviceGetUUID, "nvmlDeviceGetUUID");
    SYM(DeviceGetPciInfo, "nvmlDeviceGetPciInfo_v3");
    SYM(DeviceGetMemoryInfo, "nvmlDeviceGetMemoryInfo");
    SYM(DeviceGetUtilizationRates, "nvmlDeviceGetUtilizationRates");
    SYM(DeviceGetProcessUtilization, "nvmlDeviceGetProcessUtilization");
    SYM(DeviceGetComputeRunningProcesses, "nvmlDeviceGetComputeRunningProcesses_v3");
    SYM(DeviceGetTemperature, "nvmlDeviceGetTemperature");
    SYM(DeviceGetPowerUsage, "nvmlDeviceGetPowerUsage");
    SYM(DeviceGetEnforcedPowerLimit, "nvmlDeviceGetEnforcedPowerLimit");
    SYM(DeviceGetCudaComputeCapability, "nvmlDeviceGetCudaComputeCapability");
    SYM(DeviceGetEccMode, "nvmlDeviceGetEccMode");
    SYM(DeviceGetTotalEccErrors, "nvmlDeviceGetTotalEccErrors");
    SYM(DeviceGetMigMode, "nvmlDeviceGetMigMode");
    SYM(DeviceGetClockInfo, "nvmlDeviceGetClockInfo");
    SYM(EventSetCreate, "nvmlEventSetCreate");
    SYM(DeviceRegisterEvents, "nvmlDeviceRegisterEvents");
    SYM(DeviceGetSupportedEventTypes, "nvmlDeviceGetSupportedEventTypes");
    SYM(EventSetWait, "nvmlEventSetWait_v2");
    SYM(EventSetFree, "nvmlEventSetFree");
    return 0;
}

/* Opens one candidate and initialises it; 0 on success with at least one GPU (or any, when sim). */
static int try_open(gp_nvml *n, const char *path, bool need_gpu, gp_err *err)
{
    memset(n, 0, sizeof *n);
    snprintf(n->path, sizeof n->path, "%s", path);
    n->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (n->dl == NULL) {
        const char *e = dlerror();
        return gp_err_set(err, GP_ERR_NOT_FOUND, "cannot load %s: %s", path, e ? e : "not found");
    }
    n->simulated = dlsym(n->dl, "gpupool_sim_nvml_version") != NULL;
    if (bind(n, err) < 0)
        goto fail;
    nvmlReturn_t rc = n->Init();
    if (rc != NVML_SUCCESS) {
        gp_err_set(err, GP_ERR_IO, "%s: nvmlInit: %s", path, n->ErrorString(rc));
        goto fail;
    }
    unsigned count = 0;
    if (need_gpu && (n->DeviceGetCount(&count) != NVML_SUCCESS || count == 0)) {
        n->Shutdown();
        gp_err_set(err, GP_ERR_NOT_FOUND, "%s: no GPU found", path);
        goto fail;
    }
    return 0;
fail:
    n->dl = NULL; /* left loaded, like a successful one (see gp_nvml_unload) */
    return -1;
}

int gp_nvml_load(gp_nvml *n, gp_nvml_mode mode, gp_err *err)
{
    gp_err real_err = {0};
    if (mode != GP_NVML_SIM) {
        const char *lib = getenv("GPUPOOL_NVML_LIBRARY");
        if (try_open(n, lib && *lib ? lib : "libnvidia-ml.so.1", mode == GP_NVML_AUTO, &real_err) == 0)
            return 0;
        if (mode == GP_NVML_REAL) {
            if (err)
                *err = real_err;
            return -1;
        }
    }
    char dir[PATH_MAX - 32], path[PATH_MAX];
    if (gp_sim_lib_dir(dir, sizeof dir) == NULL)
        return gp_err_set(err, GP_ERR_NOT_FOUND,
                          "no NVIDIA GPU (%s), and the simulated GPU libraries were not "
                          "found beside this program (set GPUPOOL_SIM_LIB_DIR)",
                          real_err.msg);
    snprintf(path, sizeof path, "%s/libnvidia-ml.so.1", dir);
    return try_open(n, path, false, err);
}

/* NVML is shut down but its library stays loaded: NVML libraries are not made to be unloaded (NVIDIA's keeps
 * threads; the simulated one keeps its model table), and a later load finds it again. */
void gp_nvml_unload(gp_nvml *n)
{
    if (n->dl)
        n->Shutdown();
    n->dl = NULL;
}

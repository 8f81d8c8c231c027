/* nvml_load.h - NVML loaded at run time: NVIDIA's libnvidia-ml.so.1 when a GPU is there, else gpupool's
 * simulated one.
 *
 * Tools and daemons (gpupool smi, the agent) never link NVML: a host without NVIDIA's driver must still run
 * them. gp_nvml_load fills a table of entry points. In GP_NVML_AUTO mode it tries NVIDIA's library (the
 * loader's search path, or GPUPOOL_NVML_LIBRARY) and falls back to the simulated one, found beside the
 * gpupool binary (<prefix>/lib/sim) or at GPUPOOL_SIM_LIB_DIR. The table is owned by the caller;
 * gp_nvml_unload shuts NVML down and closes the library.
 */
#ifndef GP_COMMON_NVML_LOAD_H
#define GP_COMMON_NVML_LOAD_H

#include <stdbool.h>

#include "common/error.h"
#define GP_NVML_NO_API_MACROS 1
#include "gpupool/nvml.h"

typedef enum gp_nvml_mode { GP_NVML_AUTO = 0, GP_NVML_REAL, GP_NVML_SIM } gp_nvml_mode;

typedef struct gp_nvml {
    void *dl;
    bool simulated;
    char path[512];
    __typeof__(nvmlInit_v2) *Init;
    __typeof__(nvmlShutdown) *Shutdown;
    __typeof__(nvmlErrorString) *ErrorString;
    __typeof__(nvmlSystemGetDriverVersion) *SystemGetDriverVersion;
    __typeof__(nvmlSystemGetCudaDriverVersion) *SystemGetCudaDriverVersion;
    __typeof__(nvmlSystemGetProcessName) *SystemGetProcessName;
    __typeof__(nvmlDeviceGetCount_v2) *DeviceGetCount;
    __typeof__(nvmlDeviceGetHandleByIndex_v2) *DeviceGetHandleByIndex;
    __typeof__(nvmlDeviceGetName) *DeviceGetName;
    __typeof__(nvmlDeviceGetUUID) *DeviceGetUUID;
    __typeof__(nvmlDeviceGetPciInfo_v3) *DeviceGetPciInfo;
    __typeof__(nvmlDeviceGetMemoryInfo) *DeviceGetMemoryInfo;
    __typeof__(nvmlDeviceGetUtilizationRates) *DeviceGetUtilizationRates;
    __typeof__(nvmlDeviceGetProcessUtilization) *DeviceGetProcessUtilization;
    __typeof__(nvmlDeviceGetComputeRunningProcesses_v3) *DeviceGetComputeRunningProcesses;
    __typeof__(nvmlDeviceGetTemperature) *DeviceGetTemperature;
    __typeof__(nvmlDeviceGetPowerUsage) *DeviceGetPowerUsage;
    __typeof__(nvmlDeviceGetEnforcedPowerLimit) *DeviceGetEnforcedPowerLimit;
    __typeof__(nvmlDeviceGetCudaComputeCapability) *DeviceGetCudaComputeCapability;
    __typeof__(nvmlDeviceGetEccMode) *DeviceGetEccMode;
    __typeof__(nvmlDeviceGetTotalEccErrors) *DeviceGetTotalEccErrors;
    __typeof__(nvmlDeviceGetMigMode) *DeviceGetMigMode;
    __typeof__(nvmlDeviceGetClockInfo) *DeviceGetClockInfo;
    __typeof__(nvmlEventSetCreate) *EventSetCreate;
    __typeof__(nvmlDeviceRegisterEvents) *DeviceRegisterEvents;
    __typeof__(nvmlDeviceGetSupportedEventTypes) *DeviceGetSupportedEventTypes;
    __typeof__(nvmlEventSetWait_v2) *EventSetWait;
    __typeof__(nvmlEventSetFree) *EventSetFree;
} gp_nvml;

/* Loads and initialises NVML. On success the library is initialised and must be unloaded. */
int gp_nvml_load(gp_nvml *n, gp_nvml_mode mode, gp_err *err);
void gp_nvml_unload(gp_nvml *n);

/* The folder holding the simulated libraries (libcuda.so.1, libnvidia-ml.so.1): GPUPOOL_SIM_LIB_DIR, or
 * lib/sim beside the running program's bin/. Returns buf, or NULL if it cannot be found. */
char *gp_sim_lib_dir(char *buf, size_t len);

#endif

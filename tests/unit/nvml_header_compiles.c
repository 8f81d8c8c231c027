/* Proves include/gpupool/nvml.h against NVIDIA's NVML ABI without NVIDIA's header: struct sizes and
 * offsets, enumerator and macro values, version words and entry-point signatures, all checked at compile
 * time with the figures of nvml.h from NVML 13.0.39 (x86-64 / aarch64 LP64). Built twice: as is, where the
 * classic names must map to their current entry points, and with GP_NVML_NO_API_MACROS, where they must
 * stay themselves. Nothing is called, so it links without libnvidia-ml; running it just returns 0. */
#include <stddef.h>
#include <string.h>

#include "gpupool/nvml.h"

/* Struct sizes. */
_Static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t");
_Static_assert(sizeof(nvmlBAR1Memory_t) == 24, "nvmlBAR1Memory_t");
_Static_assert(sizeof(nvmlUtilization_t) == 8, "nvmlUtilization_t");
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t");
_Static_assert(sizeof(gp_nvml_pci_info_legacy_t) == 52, "legacy PCI info (_v1, _v2)");
_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t");
_Static_assert(sizeof(nvmlProcessInfo_v2_t) == 24, "nvmlProcessInfo_v2_t");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t");
_Static_assert(sizeof(nvmlProcessDetail_v1_t) == 32, "nvmlProcessDetail_v1_t");
_Static_assert(sizeof(nvmlProcessDetailList_v1_t) == 24, "nvmlProcessDetailList_v1_t");
_Static_assert(sizeof(nvmlProcessUtilizationSample_t) == 32, "nvmlProcessUtilizationSample_t");
_Static_assert(sizeof(nvmlProcessUtilizationInfo_v1_t) == 40, "nvmlProcessUtilizationInfo_v1_t");
_Static_assert(sizeof(nvmlProcessesUtilizationInfo_v1_t) == 24, "nvmlProcessesUtilizationInfo_v1_t");
_Static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t");
_Static_assert(sizeof(nvmlEccErrorCounts_t) == 32, "nvmlEccErrorCounts_t");
_Static_assert(sizeof(nvmlTemperature_v1_t) == 12, "nvmlTemperature_v1_t");
_Static_assert(sizeof(nvmlDevice_t) == sizeof(void *), "nvmlDevice_t is a pointer");
_Static_assert(sizeof(nvmlEventSet_t) == sizeof(void *), "nvmlEventSet_t is a pointer");
_Static_assert(sizeof(nvmlReturn_t) == 4, "enums are int-sized");

/* Field offsets where padding makes a mistake likely. */
_Static_assert(offsetof(nvmlMemory_v2_t, total) == 8, "nvmlMemory_v2_t.total");
_Static_assert(offsetof(nvmlMemory_v2_t, used) == 32, "nvmlMemory_v2_t.used");
_Static_assert(offsetof(nvmlPciInfo_t, domain) == 16, "nvmlPciInfo_t.domain");
_Static_assert(offsetof(nvmlPciInfo_t, pciSubSystemId) == 32, "nvmlPciInfo_t.pciSubSystemId");
_Static_assert(offsetof(nvmlPciInfo_t, busId) == 36, "nvmlPciInfo_t.busId");
_Static_assert(offsetof(gp_nvml_pci_info_legacy_t, pciSubSystemId) == 32, "legacy shares the first 36 bytes");
_Static_assert(offsetof(nvmlProcessInfo_v1_t, usedGpuMemory) == 8, "nvmlProcessInfo_v1_t.usedGpuMemory");
_Static_assert(offsetof(nvmlProcessInfo_t, gpuInstanceId) == 16, "nvmlProcessInfo_t.gpuInstanceId");
_Static_assert(offsetof(nvmlProcessInfo_t, computeInstanceId) == 20, "nvmlProcessInfo_t.computeInstanceId");
_Static_assert(offsetof(nvmlProcessUtilizationSample_t, timeStamp) == 8, "sample.timeStamp");
_Static_assert(offsetof(nvmlProcessUtilizationSample_t, decUtil) == 28, "sample.decUtil");
_Static_assert(offsetof(nvmlEventData_t, eventType) == 8, "nvmlEventData_t.eventType");
_Static_assert(offsetof(nvmlEventData_t, gpuInstanceId) == 24, "nvmlEventData_t.gpuInstanceId");
_Static_assert(offsetof(nvmlProcessDetailList_v1_t, procArray) == 16, "nvmlProcessDetailList_v1_t.procArray");

/* Version words: size | version << 24. */
_Static_assert(nvmlMemory_v2 == 0x02000028u, "nvmlMemory_v2");
_Static_assert(nvmlProcessDetailList_v1 == 0x01000018u, "nvmlProcessDetailList_v1");
_Static_assert(nvmlProcessesUtilizationInfo_v1 == 0x01000018u, "nvmlProcessesUtilizationInfo_v1");
_Static_assert(nvmlTemperature_v1 == 0x0100000Cu, "nvmlTemperature_v1");

/* Enumerators. */
_Static_assert(NVML_SUCCESS == 0, "NVML_SUCCESS");
_Static_assert(NVML_ERROR_UNINITIALIZED == 1, "NVML_ERROR_UNINITIALIZED");
_Static_assert(NVML_ERROR_INVALID_ARGUMENT == 2, "NVML_ERROR_INVALID_ARGUMENT");
_Static_assert(NVML_ERROR_NOT_SUPPORTED == 3, "NVML_ERROR_NOT_SUPPORTED");
_Static_assert(NVML_ERROR_NO_PERMISSION == 4, "NVML_ERROR_NO_PERMISSION");
_Static_assert(NVML_ERROR_NOT_FOUND == 6, "NVML_ERROR_NOT_FOUND");
_Static_assert(NVML_ERROR_INSUFFICIENT_SIZE == 7, "NVML_ERROR_INSUFFICIENT_SIZE");
_Static_assert(NVML_ERROR_DRIVER_NOT_LOADED == 9, "NVML_ERROR_DRIVER_NOT_LOADED");
_Static_assert(NVML_ERROR_TIMEOUT == 10, "NVML_ERROR_TIMEOUT");
_Static_assert(NVML_ERROR_FUNCTION_NOT_FOUND == 13, "NVML_ERROR_FUNCTION_NOT_FOUND");
_Static_assert(NVML_ERROR_GPU_IS_LOST == 15, "NVML_ERROR_GPU_IS_LOST");
_Static_assert(NVML_ERROR_LIB_RM_VERSION_MISMATCH == 18, "NVML_ERROR_LIB_RM_VERSION_MISMATCH");
_Static_assert(NVML_ERROR_MEMORY == 20, "NVML_ERROR_MEMORY");
_Static_assert(NVML_ERROR_ARGUMENT_VERSION_MISMATCH == 25, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH");
_Static_assert(NVML_ERROR_RESET_TYPE_NOT_SUPPORTED == 30, "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED");
_Static_assert(NVML_ERROR_UNKNOWN == 999, "NVML_ERROR_UNKNOWN");
_Static_assert(NVML_FEATURE_ENABLED == 1, "NVML_FEATURE_ENABLED");
_Static_assert(NVML_BRAND_NVIDIA_VGAMING == NVML_BRAND_NVIDIA_CLOUD_GAMING, "NVML_BRAND_NVIDIA_VGAMING");
_Static_assert(NVML_BRAND_NVIDIA == 14 && NVML_BRAND_COUNT == 18, "nvmlBrandType_t");
_Static_assert(NVML_TEMPERATURE_THRESHOLD_GPS_CURR == 7, "NVML_TEMPERATURE_THRESHOLD_GPS_CURR");
_Static_assert(NVML_COMPUTEMODE_EXCLUSIVE_PROCESS == 3, "NVML_COMPUTEMODE_EXCLUSIVE_PROCESS");
_Static_assert(NVML_AGGREGATE_ECC == 1 && NVML_MEMORY_ERROR_TYPE_UNCORRECTED == 1, "ECC enums");
_Static_assert(NVML_CLOCK_VIDEO == 3 && NVML_CLOCK_COUNT == 4, "nvmlClockType_t");
_Static_assert(NVML_CLOCK_ID_CUSTOMER_BOOST_MAX == 3, "nvmlClockId_t");
_Static_assert(NVML_PSTATE_15 == 15 && NVML_PSTATE_UNKNOWN == 32, "nvmlPstates_t");
_Static_assert(NVML_DEVICE_ARCH_HOPPER == 9 && NVML_DEVICE_ARCH_BLACKWELL == 10, "architectures");

/* Constants and event bits. */
_Static_assert(NVML_VALUE_NOT_AVAILABLE == -1, "NVML_VALUE_NOT_AVAILABLE");
_Static_assert(NVML_DEVICE_UUID_V2_BUFFER_SIZE == 96, "NVML_DEVICE_UUID_V2_BUFFER_SIZE");
_Static_assert(NVML_DEVICE_NAME_V2_BUFFER_SIZE == 96, "NVML_DEVICE_NAME_V2_BUFFER_SIZE");
_Static_assert(NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE == 32, "NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE");
_Static_assert(NVML_DEVICE_SERIAL_BUFFER_SIZE == 30, "NVML_DEVICE_SERIAL_BUFFER_SIZE");
_Static_assert(NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE == 80, "NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE");
_Static_assert(NVML_DEVICE_VBIOS_VERSION_BUFFER_SIZE == 32, "NVML_DEVICE_VBIOS_VERSION_BUFFER_SIZE");
_Static_assert(nvmlEventTypeXidCriticalError == 0x8, "nvmlEventTypeXidCriticalError");
_Static_assert(nvmlEventTypePowerSourceChange == 0x80, "nvmlEventTypePowerSourceChange");
_Static_assert(nvmlEventTypeGpuRecoveryAction == 0x8000, "nvmlEventTypeGpuRecoveryAction");
_Static_assert(nvmlEventTypeAll == 0xff9f, "nvmlEventTypeAll");
_Static_assert(NVML_INIT_FLAG_NO_GPUS == 1 && NVML_INIT_FLAG_NO_ATTACH == 2, "init flags");
_Static_assert(NVML_CUDA_DRIVER_VERSION_MAJOR(13000) == 13 && NVML_CUDA_DRIVER_VERSION_MINOR(12090) == 9,
               "CUDA version macros");

/* Entry-point signatures. _Generic does not evaluate its operand, so nothing here needs the library. */
#define GP_HAS_TYPE(fn, type) _Generic((fn), type : 1, default : 0)
_Static_assert(GP_HAS_TYPE(nvmlInit_v2, nvmlReturn_t (*)(void)), "nvmlInit_v2");
_Static_assert(GP_HAS_TYPE(nvmlErrorString, const char *(*)(nvmlReturn_t)), "nvmlErrorString");
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetHandleByIndex_v2, nvmlReturn_t (*)(unsigned int, nvmlDevice_t *)),
               "nvmlDeviceGetHandleByIndex_v2");
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetMemoryInfo_v2, nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_v2_t *)),
               "nvmlDeviceGetMemoryInfo_v2");
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetComputeRunningProcesses_v3,
                           nvmlReturn_t (*)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *)),
               "nvmlDeviceGetComputeRunningProcesses_v3");
_Static_assert(GP_HAS_TYPE(nvmlEventSetWait_v2,
                           nvmlReturn_t (*)(nvmlEventSet_t, nvmlEventData_t *, unsigned int)),
               "nvmlEventSetWait_v2");
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetPciInfo_v3, nvmlReturn_t (*)(nvmlDevice_t, nvmlPciInfo_t *)),
               "nvmlDeviceGetPciInfo_v3");

#define GP_STR2(x) #x
#define GP_STR(x)  GP_STR2(x)

#ifdef GP_NVML_NO_API_MACROS
/* The simulator's view: old names are their own symbols with their old types. */
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetComputeRunningProcesses,
                           nvmlReturn_t (*)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_v1_t *)),
               "unversioned process list takes nvmlProcessInfo_v1_t");
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetPciInfo, nvmlReturn_t (*)(nvmlDevice_t, gp_nvml_pci_info_legacy_t *)),
               "unversioned PCI info takes the legacy layout");
#define GP_EXPECT_INIT "nvmlInit"
#define GP_EXPECT_PROC "nvmlDeviceGetComputeRunningProcesses"
#define GP_EXPECT_WAIT "nvmlEventSetWait"
#else
/* An application's view: classic names bind to the current entry points. */
_Static_assert(GP_HAS_TYPE(nvmlDeviceGetComputeRunningProcesses,
                           nvmlReturn_t (*)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *)),
               "classic process list maps to _v3");
#define GP_EXPECT_INIT "nvmlInit_v2"
#define GP_EXPECT_PROC "nvmlDeviceGetComputeRunningProcesses_v3"
#define GP_EXPECT_WAIT "nvmlEventSetWait_v2"
#endif

int main(void)
{
    /* Macro expansion is only visible at run time through the stringized names. */
    if (strcmp(GP_STR(nvmlInit), GP_EXPECT_INIT) != 0)
        return 1;
    if (strcmp(GP_STR(nvmlDeviceGetComputeRunningProcesses), GP_EXPECT_PROC) != 0)
        return 2;
    if (strcmp(GP_STR(nvmlEventSetWait), GP_EXPECT_WAIT) != 0)
        return 3;
    return 0;
}

/* nvml.c - NVML as the workload sees it: only its slots' GPUs, numbered from 0 in slot order (as CUDA
 * numbers them), each with the vGPU's memory as total and the workload's use as used, and only the
 * workload's processes. The library also uses NVML itself, to measure the workload's GPU time (compute.c).
 */
#include "vgpu/vgpu.h"

#include <string.h>
#include <unistd.h>

static nvmlDevice_t g_slot_nvml[GP_SLOT_MAX_GPUS];
static pthread_mutex_t g_nvml_mu = PTHREAD_MUTEX_INITIALIZER;

/* Brings NVML up for the library's own use (once) and maps each slot to its real handle. */
nvmlReturn_t vg_nvml_up(void)
{
    if (atomic_load(&g_vg.nvml_ready))
        return NVML_SUCCESS;
    if (vg_init() != VG_ENFORCE || g_vg.real.nvmlInit_v2 == NULL)
        return NVML_ERROR_LIBRARY_NOT_FOUND;
    pthread_mutex_lock(&g_nvml_mu);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (!atomic_load(&g_vg.nvml_ready)) {
        rc = g_vg.real.nvmlInit_v2(); /* a reference of our own, never dropped */
        for (int i = 0; rc == NVML_SUCCESS && i < g_vg.nslots; i++)
            if (REAL_NVML(nvmlDeviceGetHandleByUUID)(g_vg.slots[i].s->gpu_uuid, &g_slot_nvml[i]) !=
                NVML_SUCCESS) {
                gp_log(GP_LOG_ERROR, VG_LOG, "NVML does not know the slot's GPU %s",
                       g_vg.slots[i].s->gpu_uuid);
                rc = NVML_ERROR_GPU_NOT_FOUND;
            }
        if (rc == NVML_SUCCESS) {
            for (int d = 0; d < g_vg.ndev; d++)
                g_vg.dev[d].nvml = g_slot_nvml[g_vg.dev[d].slot - g_vg.slots];
            atomic_store(&g_vg.nvml_ready, 1);
        }
    }
    pthread_mutex_unlock(&g_nvml_mu);
    return rc;
}

/* Called by every NVML wrapper: refuses when there is no slot, passes through when disabled. */
static nvmlReturn_t nvml_ok(void)
{
    int mode = vg_init();
    if (mode == VG_REFUSE)
        return NVML_ERROR_NO_PERMISSION;
    return NVML_SUCCESS;
}

static int slot_index(nvmlDevice_t h)
{
    for (int i = 0; i < g_vg.nslots; i++)
        if (g_slot_nvml[i] == h)
            return i;
    return -1;
}

static nvmlReturn_t init_common(nvmlReturn_t (*real)(void), unsigned flags, bool with_flags)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    rc = with_flags ? REAL_NVML(nvmlInitWithFlags)(flags) : real();
    if (rc == NVML_SUCCESS && g_vg.mode == VG_ENFORCE && vg_nvml_up() != NVML_SUCCESS)
        return NVML_ERROR_GPU_NOT_FOUND;
    return rc;
}

VG_API nvmlReturn_t nvmlInit(void)
{
    return init_common(REAL_NVML(nvmlInit), 0, false);
}

VG_API nvmlReturn_t nvmlInit_v2(void)
{
    return init_common(REAL_NVML(nvmlInit_v2), 0, false);
}

VG_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    return init_common(NULL, flags, true);
}

static nvmlReturn_t count(nvmlReturn_t (*real)(unsigned *), unsigned int *deviceCount)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    rc = real(deviceCount);
    if (rc == NVML_SUCCESS && g_vg.mode == VG_ENFORCE)
        *deviceCount = (unsigned)g_vg.nslots;
    return rc;
}

VG_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return count(REAL_NVML(nvmlDeviceGetCount), deviceCount);
}

VG_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    return count(REAL_NVML(nvmlDeviceGetCount_v2), deviceCount);
}

static nvmlReturn_t by_index(nvmlReturn_t (*real)(unsigned, nvmlDevice_t *), unsigned index,
                             nvmlDevice_t *device)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    if (g_vg.mode != VG_ENFORCE)
        return real(index, device);
    if (vg_nvml_up() != NVML_SUCCESS)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= (unsigned)g_vg.nslots)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = g_slot_nvml[index];
    return NVML_SUCCESS;
}

VG_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return by_index(REAL_NVML(nvmlDeviceGetHandleByIndex), index, device);
}

VG_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return by_index(REAL_NVML(nvmlDeviceGetHandleByIndex_v2), index, device);
}

/* A GPU found by UUID, PCI id or serial counts only if it is one of the slots'. */
static nvmlReturn_t only_slots(nvmlReturn_t rc, nvmlDevice_t *device)
{
    if (rc != NVML_SUCCESS || g_vg.mode != VG_ENFORCE)
        return rc;
    if (vg_nvml_up() != NVML_SUCCESS || slot_index(*device) < 0) {
        *device = NULL;
        return NVML_ERROR_NOT_FOUND;
    }
    return rc;
}

VG_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    nvmlReturn_t rc = nvml_ok();
    return rc ? rc : only_slots(REAL_NVML(nvmlDeviceGetHandleByUUID)(uuid, device), device);
}

VG_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    nvmlReturn_t rc = nvml_ok();
    return rc ? rc : only_slots(REAL_NVML(nvmlDeviceGetHandleByPciBusId)(pciBusId, device), device);
}

VG_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    nvmlReturn_t rc = nvml_ok();
    return rc ? rc : only_slots(REAL_NVML(nvmlDeviceGetHandleByPciBusId_v2)(pciBusId, device), device);
}

VG_API nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device)
{
    nvmlReturn_t rc = nvml_ok();
    return rc ? rc : only_slots(REAL_NVML(nvmlDeviceGetHandleBySerial)(serial, device), device);
}

VG_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    rc = REAL_NVML(nvmlDeviceGetIndex)(device, index);
    if (rc == NVML_SUCCESS && g_vg.mode == VG_ENFORCE) {
        int i = vg_nvml_up() == NVML_SUCCESS ? slot_index(device) : -1;
        if (i < 0)
            return NVML_ERROR_INVALID_ARGUMENT;
        *index = (unsigned)i;
    }
    return rc;
}

/* The vGPU's memory: limit as total, the workload's use as used; never an underflow. */
static void vgpu_memory(nvmlDevice_t device, unsigned long long *total, unsigned long long *used,
                        unsigned long long *free_bytes)
{
    int i = slot_index(device);
    if (i < 0)
        return;
    uint64_t limit = atomic_load(&g_vg.slots[i].s->vram_limit), u = gp_slot_vram_used(g_vg.slots[i].s);
    if (u > limit)
        u = limit;
    *total = limit;
    *used = u;
    *free_bytes = limit - u;
}

VG_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    rc = REAL_NVML(nvmlDeviceGetMemoryInfo)(device, memory);
    if (rc == NVML_SUCCESS && g_vg.mode == VG_ENFORCE && vg_nvml_up() == NVML_SUCCESS)
        vgpu_memory(device, &memory->total, &memory->used, &memory->free);
    return rc;
}

VG_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    rc = REAL_NVML(nvmlDeviceGetMemoryInfo_v2)(device, memory);
    if (rc == NVML_SUCCESS && g_vg.mode == VG_ENFORCE && vg_nvml_up() == NVML_SUCCESS) {
        vgpu_memory(device, &memory->total, &memory->used, &memory->free);
        memory->reserved = 0;
    }
    return rc;
}

/* Is pid one of the workload's processes on this slot? Its memory there, if so. */
static bool member(int slot, unsigned pid, unsigned long long *mem)
{
    const gp_slot *s = g_vg.slots[slot].s;
    for (int p = 0; p < GP_SLOT_MAX_PROCS; p++)
        if (atomic_load(&((gp_slot *)s)->proc[p].state) == GP_PROCTAB_LIVE &&
            atomic_load(&((gp_slot *)s)->proc[p].pid) == pid) {
            if (mem)
                *mem = atomic_load(&((gp_slot *)s)->proc[p].vram_used);
            return true;
        }
    return false;
}

/* The real list, filtered to the workload's processes, with the vGPU's accounting of their memory. */
static nvmlReturn_t running(nvmlDevice_t device, unsigned int *infoCount, void *infos, int version)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    if (g_vg.mode != VG_ENFORCE) {
        if (version == 1)
            return REAL_NVML(nvmlDeviceGetComputeRunningProcesses)(device, infoCount, infos);
        if (version == 2)
            return REAL_NVML(nvmlDeviceGetComputeRunningProcesses_v2)(device, infoCount, infos);
        return REAL_NVML(nvmlDeviceGetComputeRunningProcesses_v3)(device, infoCount, infos);
    }
    if (infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    int slot = vg_nvml_up() == NVML_SUCCESS ? slot_index(device) : -1;
    if (slot < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlProcessInfo_t all[256];
    unsigned n = 256;
    rc = REAL_NVML(nvmlDeviceGetComputeRunningProcesses_v3)(device, &n, all);
    if (rc != NVML_SUCCESS)
        return rc;
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned long long mem;
        if (member(slot, all[i].pid, &mem)) {
            all[k] = all[i];
            all[k].usedGpuMemory = mem;
            k++;
        }
    }
    if (*infoCount < k || (k > 0 && infos == NULL)) {
        *infoCount = k;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < k; i++) {
        if (version == 1) {
            nvmlProcessInfo_v1_t *r = &((nvmlProcessInfo_v1_t *)infos)[i];
            r->pid = all[i].pid;
            r->usedGpuMemory = all[i].usedGpuMemory;
        } else {
            ((nvmlProcessInfo_t *)infos)[i] = all[i];
        }
    }
    *infoCount = k;
    return NVML_SUCCESS;
}

VG_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                         nvmlProcessInfo_v1_t *infos)
{
    return running(device, infoCount, infos, 1);
}

VG_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_v2_t *infos)
{
    return running(device, infoCount, infos, 2);
}

VG_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos)
{
    return running(device, infoCount, infos, 3);
}

VG_API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount,
                                                    unsigned long long lastSeenTimeStamp)
{
    nvmlReturn_t rc = nvml_ok();
    if (rc)
        return rc;
    if (g_vg.mode != VG_ENFORCE)
        return REAL_NVML(nvmlDeviceGetProcessUtilization)(device, utilization, processSamplesCount,
                                                          lastSeenTimeStamp);
    if (processSamplesCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    int slot = vg_nvml_up() == NVML_SUCCESS ? slot_index(device) : -1;
    if (slot < 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlProcessUtilizationSample_t all[512];
    unsigned n = 512;
    rc = REAL_NVML(nvmlDeviceGetProcessUtilization)(device, all, &n, lastSeenTimeStamp);
    if (rc != NVML_SUCCESS)
        return rc;
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        if (member(slot, all[i].pid, NULL))
            all[k++] = all[i];
    if (k == 0) {
        *processSamplesCount = 0;
        return NVML_ERROR_NOT_FOUND;
    }
    if (utilization == NULL || *processSamplesCount < k) {
        *processSamplesCount = k;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(utilization, all, k * sizeof *all);
    *processSamplesCount = k;
    return NVML_SUCCESS;
}

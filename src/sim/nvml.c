/* nvml.c - the simulated libnvidia-ml.so.1: NVML over the simulated GPU's host-wide state.
 *
 * It reads what the simulated driver writes (shared.c): the same devices, UUIDs, memory totals and
 * processes, so NVML and CUDA agree as they do on a real host. Like NVIDIA's NVML it enumerates every
 * device of the host, ignoring CUDA_VISIBLE_DEVICES. Utilization, power, temperature and clocks are
 * derived from the device timeline: a device busy x% of the last second reports x% utilization and
 * draws idle + x% of (limit - idle) watts. XID and ECC events are raised with `gpupool smi --inject`.
 * NVML functions that are not implemented here return NVML_ERROR_NOT_SUPPORTED and log once.
 */
#define GP_NVML_NO_API_MACROS 1
#include "gpupool/nvml.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "sim/shared.h"

#define GP_API             __attribute__((visibility("default")))
#define SIM_DRIVER_VERSION "580.95.05"
#define SIM_CUDA_VERSION   13000

struct nvmlDevice_st {
    int index;
};

struct nvmlEventSet_st {
    pthread_mutex_t mu;
    unsigned long long types[GP_SIM_MAX_DEVICES];
    uint64_t seen_xid[GP_SIM_MAX_DEVICES];
    uint64_t seen_sbe[GP_SIM_MAX_DEVICES];
    uint64_t seen_dbe[GP_SIM_MAX_DEVICES];
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_refs;
static gp_shm_handle g_shm = {.fd = -1, .proc = -1};
static struct nvmlDevice_st g_devs[GP_SIM_MAX_DEVICES];
static int g_ndev;

int gp_nvml_unsupported(const char *name, atomic_int *once);
int gp_nvml_unsupported(const char *name, atomic_int *once)
{
    if (!atomic_exchange(once, 1))
        gp_log(GP_LOG_WARN, "sim-nvml",
               "%s is not supported by the simulated NVML (returning "
               "NVML_ERROR_NOT_SUPPORTED)",
               name);
    return NVML_ERROR_NOT_SUPPORTED;
}

/* ---- init ----------------------------------------------------------------------------------------- */

static nvmlReturn_t init(unsigned int flags)
{
    if (flags & ~(unsigned)(NVML_INIT_FLAG_NO_GPUS | NVML_INIT_FLAG_NO_ATTACH))
        return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    if (g_refs > 0) {
        g_refs++;
        pthread_mutex_unlock(&g_mu);
        return NVML_SUCCESS;
    }
    gp_sim_spec spec;
    gp_err err;
    if (gp_sim_spec_from_env(&spec, &err) < 0) {
        gp_log(GP_LOG_ERROR, "sim-nvml", "%s", err.msg);
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_UNKNOWN;
    }
    if (spec.ndev == 0 && !(flags & NVML_INIT_FLAG_NO_GPUS)) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    if (spec.ndev > 0 && gp_shm_open(&g_shm, &spec, &err) < 0) {
        gp_log(GP_LOG_ERROR, "sim-nvml", "%s", err.msg);
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_UNKNOWN;
    }
    g_ndev = spec.ndev;
    for (int i = 0; i < g_ndev; i++)
        g_devs[i].index = i;
    g_refs = 1;
    pthread_mutex_unlock(&g_mu);
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlInit(void)
{
    return init(0);
}

GP_API nvmlReturn_t nvmlInit_v2(void)
{
    return init(0);
}

GP_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    return init(flags);
}

GP_API nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&g_mu);
    if (g_refs == 0) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (--g_refs == 0 && g_shm.shm) {
        gp_shm_close(&g_shm);
        g_ndev = 0;
    }
    pthread_mutex_unlock(&g_mu);
    return NVML_SUCCESS;
}

static const struct {
    int code;
    const char *text;
} errors[] = {
#define GP_NVML_ERROR(name, value, text) {value, text},
#include "sim/nvml_errors.inc"
#undef GP_NVML_ERROR
};

GP_API const char *nvmlErrorString(nvmlReturn_t result)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == (int)result)
            return errors[i].text;
    return "Unknown Error";
}

static nvmlReturn_t ready(void)
{
    return g_refs > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
}

/* Validates a handle; on success *d is the device's shared record and *i its index. */
static nvmlReturn_t dev_of(nvmlDevice_t h, const gp_shm_dev **d, int *i)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (h < &g_devs[0] || h >= &g_devs[g_ndev])
        return NVML_ERROR_INVALID_ARGUMENT;
    *i = h->index;
    *d = &g_shm.shm->dev[h->index];
    return NVML_SUCCESS;
}

#define DEV_OR_RETURN(h)                       \
    const gp_shm_dev *d;                       \
    int di;                                    \
    do {                                       \
        nvmlReturn_t rc_ = dev_of(h, &d, &di); \
        if (rc_)                               \
            return rc_;                        \
    } while (0)

static nvmlReturn_t copy_str(char *dst, unsigned int length, const char *src)
{
    if (dst == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

/* ---- system --------------------------------------------------------------------------------------- */

GP_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    nvmlReturn_t rc = ready();
    return rc ? rc : copy_str(version, length, SIM_DRIVER_VERSION);
}

GP_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return copy_str(version, length, "13." SIM_DRIVER_VERSION);
}

GP_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    if (cudaDriverVersion == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = SIM_CUDA_VERSION;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

GP_API nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (name == NULL || length == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NVML_ERROR_NOT_FOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NVML_ERROR_NOT_FOUND;
    buf[n] = '\0';
    snprintf(name, length, "%s", buf);
    return NVML_SUCCESS;
}

/* ---- device handles ------------------------------------------------------------------------------- */

static nvmlReturn_t count(unsigned int *deviceCount)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (deviceCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = (unsigned)g_ndev;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return count(deviceCount);
}

GP_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    return count(deviceCount);
}

static nvmlReturn_t by_index(unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (device == NULL || index >= (unsigned)g_ndev)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_devs[index];
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return by_index(index, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return by_index(index, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (uuid == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g_ndev; i++)
        if (strcasecmp(g_shm.shm->dev[i].uuid, uuid) == 0) {
            *device = &g_devs[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

static nvmlReturn_t by_bus_id(const char *busId, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (busId == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned domain = 0, bus = 0, dv = 0, fn = 0;
    char tail;
    if (sscanf(busId, "%x:%x:%x.%x%c", &domain, &bus, &dv, &fn, &tail) != 4) {
        domain = fn = 0;
        if (sscanf(busId, "%x:%x:%x%c", &domain, &bus, &dv, &tail) != 3) {
            domain = 0;
            if (sscanf(busId, "%x:%x.%x%c", &bus, &dv, &fn, &tail) != 3)
                return NVML_ERROR_INVALID_ARGUMENT;
        }
    }
    for (int i = 0; i < g_ndev; i++)
        if (domain == 0 && dv == 0 && fn == 0 && g_shm.shm->dev[i].pci_bus == bus) {
            *device = &g_devs[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return by_bus_id(pciBusId, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    return by_bus_id(pciBusId, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (serial == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g_ndev; i++)
        if (strcmp(g_shm.shm->dev[i].serial, serial) == 0) {
            *device = &g_devs[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

/* ---- identity ------------------------------------------------------------------------------------- */

GP_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    DEV_OR_RETURN(device);
    return copy_str(name, length, d->model.nvml_name);
}

GP_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    DEV_OR_RETURN(device);
    return copy_str(uuid, length, d->uuid);
}

GP_API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length)
{
    DEV_OR_RETURN(device);
    return copy_str(serial, length, d->serial);
}

GP_API nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t device, char *version, unsigned int length)
{
    DEV_OR_RETURN(device);
    char v[32];
    snprintf(v, sizeof v, "96.00.%02X.00.01", d->model.pci_id & 0xff);
    return copy_str(version, length, v);
}

#define GETTER(name, type, expr)                             \
    GP_API nvmlReturn_t name(nvmlDevice_t device, type *out) \
    {                                                        \
        DEV_OR_RETURN(device);                               \
        (void)d;                                             \
        (void)di;                                            \
        if (out == NULL)                                     \
            return NVML_ERROR_INVALID_ARGUMENT;              \
        *out = (expr);                                       \
        return NVML_SUCCESS;                                 \
    }

static nvmlBrandType_t brand(const gp_model *m)
{
    if (strcasecmp(m->brand, "geforce") == 0)
        return NVML_BRAND_GEFORCE;
    if (strcasecmp(m->brand, "tesla") == 0)
        return NVML_BRAND_TESLA;
    return NVML_BRAND_NVIDIA;
}

static nvmlDeviceArchitecture_t arch(const gp_model *m)
{
    if (strcasecmp(m->arch, "turing") == 0)
        return NVML_DEVICE_ARCH_TURING;
    if (strcasecmp(m->arch, "ampere") == 0)
        return NVML_DEVICE_ARCH_AMPERE;
    if (strcasecmp(m->arch, "ada") == 0)
        return NVML_DEVICE_ARCH_ADA;
    if (strcasecmp(m->arch, "hopper") == 0)
        return NVML_DEVICE_ARCH_HOPPER;
    return NVML_DEVICE_ARCH_UNKNOWN;
}

static unsigned cores_per_sm(const gp_model *m)
{
    if (m->cc_major == 7 || (m->cc_major == 8 && m->cc_minor == 0))
        return 64;
    return 128;
}

GETTER(nvmlDeviceGetIndex, unsigned int, (unsigned)di)
GETTER(nvmlDeviceGetMinorNumber, unsigned int, d->minor)
GETTER(nvmlDeviceGetBrand, nvmlBrandType_t, brand(&d->model))
GETTER(nvmlDeviceGetArchitecture, nvmlDeviceArchitecture_t, arch(&d->model))
GETTER(nvmlDeviceGetMultiGpuBoard, unsigned int, 0)
GETTER(nvmlDeviceGetNumGpuCores, unsigned int, (unsigned)d->model.sms *cores_per_sm(&d->model))
GETTER(nvmlDeviceGetMemoryBusWidth, unsigned int, (unsigned)d->model.bus_bits)
GETTER(nvmlDeviceGetCurrPcieLinkGeneration, unsigned int, (unsigned)d->model.pcie_gen)
GETTER(nvmlDeviceGetCurrPcieLinkWidth, unsigned int, (unsigned)d->model.pcie_width)
GETTER(nvmlDeviceGetMaxPcieLinkGeneration, unsigned int, (unsigned)d->model.pcie_gen)
GETTER(nvmlDeviceGetMaxPcieLinkWidth, unsigned int, (unsigned)d->model.pcie_width)
GETTER(nvmlDeviceGetComputeMode, nvmlComputeMode_t, NVML_COMPUTEMODE_DEFAULT)
GETTER(nvmlDeviceGetPersistenceMode, nvmlEnableState_t, NVML_FEATURE_ENABLED)
GETTER(nvmlDeviceGetDisplayMode, nvmlEnableState_t, NVML_FEATURE_DISABLED)
GETTER(nvmlDeviceGetDisplayActive, nvmlEnableState_t, NVML_FEATURE_DISABLED)
GETTER(nvmlDeviceGetPowerManagementLimit, unsigned int, (unsigned)d->model.power_w * 1000u)
GETTER(nvmlDeviceGetPowerManagementDefaultLimit, unsigned int, (unsigned)d->model.power_w * 1000u)
GETTER(nvmlDeviceGetEnforcedPowerLimit, unsigned int, (unsigned)d->model.power_w * 1000u)

GP_API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    DEV_OR_RETURN(device);
    if (major == NULL || minor == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = d->model.cc_major;
    *minor = d->model.cc_minor;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *minLimit,
                                                                 unsigned int *maxLimit)
{
    DEV_OR_RETURN(device);
    if (minLimit == NULL || maxLimit == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minLimit = (unsigned)d->model.power_w * 1000u / 2;
    *maxLimit = (unsigned)d->model.power_w * 1000u;
    return NVML_SUCCESS;
}

/* ---- PCI ------------------------------------------------------------------------------------------ */

GP_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEV_OR_RETURN(device);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, 0u, d->pci_bus,
             0u);
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, 0u, d->pci_bus, 0u);
    pci->domain = 0;
    pci->bus = d->pci_bus;
    pci->device = 0;
    pci->pciDeviceId = d->pci_device_id;
    pci->pciSubSystemId = d->pci_subsystem_id;
    return NVML_SUCCESS;
}

static nvmlReturn_t pci_legacy(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    DEV_OR_RETURN(device);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, 0u, d->pci_bus, 0u);
    pci->bus = d->pci_bus;
    pci->pciDeviceId = d->pci_device_id;
    pci->pciSubSystemId = d->pci_subsystem_id;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    return pci_legacy(device, pci);
}

GP_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    return pci_legacy(device, pci);
}

/* ---- memory and utilization ----------------------------------------------------------------------- */

static uint64_t used_bytes(int di)
{
    gp_shm_reap_soon(&g_shm);
    uint64_t used = gp_shm_mem_used(g_shm.shm, di);
    uint64_t total = g_shm.shm->dev[di].model.vram_bytes;
    return used > total ? total : used;
}

GP_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    DEV_OR_RETURN(device);
    if (memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t used = used_bytes(di);
    memory->total = d->model.vram_bytes;
    memory->used = used;
    memory->free = d->model.vram_bytes - used;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    DEV_OR_RETURN(device);
    if (memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    uint64_t used = used_bytes(di);
    memory->total = d->model.vram_bytes;
    memory->reserved = 0;
    memory->used = used;
    memory->free = d->model.vram_bytes - used;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t device, nvmlBAR1Memory_t *bar1Memory)
{
    DEV_OR_RETURN(device);
    if (bar1Memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t total = strcasecmp(d->model.brand, "geforce") == 0 ? 256ull << 20 : d->model.vram_bytes;
    bar1Memory->bar1Total = total;
    bar1Memory->bar1Used = 2ull << 20;
    bar1Memory->bar1Free = total - bar1Memory->bar1Used;
    return NVML_SUCCESS;
}

static void util_of(int di, unsigned *gpu, unsigned *mem)
{
    gp_shm_util(&g_shm, di, 1000000000ull, gpu, mem);
}

GP_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (utilization == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    util_of(di, &utilization->gpu, &utilization->memory);
    return NVML_SUCCESS;
}

/* Indices of live processes with a context on device di. */
static int procs_on(int di, int *out)
{
    gp_shm_reap_soon(&g_shm);
    int n = 0;
    for (int i = 0; i < GP_SIM_MAX_PROCS; i++) {
        const gp_shm_proc *p = &g_shm.shm->proc[i];
        if (atomic_load(&p->state) == GP_PROC_LIVE && atomic_load(&p->nctx[di]) > 0 &&
            gp_shm_proc_alive(&g_shm, i))
            out[n++] = i;
    }
    return n;
}

/* Like NVIDIA's: per process, the samples newer than lastSeenTimeStamp (all of the last second when it is
 * 0), each the SM utilization over the time since that process's previous sample. */
GP_API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount,
                                                    unsigned long long lastSeenTimeStamp)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (processSamplesCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    int idx[GP_SIM_MAX_PROCS];
    int n = procs_on(di, idx);
    /* timestamps are CPU time in microseconds; map the caller's to the monotonic clock */
    uint64_t now = gp_now_ns(), real_us = gp_realtime_ns() / 1000;
    uint64_t since = now - 1000000000ull;
    if (lastSeenTimeStamp && lastSeenTimeStamp < real_us && real_us - lastSeenTimeStamp < now / 1000)
        since = now - (real_us - lastSeenTimeStamp) * 1000;
    unsigned gpu, mem;
    util_of(di, &gpu, &mem);
    unsigned total = 0, cap = utilization ? *processSamplesCount : 0;
    for (int k = 0; k < n; k++) {
        uint64_t ts[GP_SIM_PROC_SNAPS];
        unsigned pct[GP_SIM_PROC_SNAPS];
        int m = gp_shm_proc_samples(g_shm.shm, idx[k], di, since, ts, pct, GP_SIM_PROC_SNAPS);
        for (int i = 0; i < m; i++, total++) {
            if (total >= cap)
                continue;
            nvmlProcessUtilizationSample_t *s = &utilization[total];
            memset(s, 0, sizeof *s);
            s->pid = atomic_load(&g_shm.shm->proc[idx[k]].pid);
            s->smUtil = pct[i];
            s->memUtil = gpu ? (unsigned)((uint64_t)mem * pct[i] / gpu) : 0;
            /* a sample written after `now` was read (by a process running meanwhile) is from now, not from
             * 2^64 ns ago */
            s->timeStamp = real_us - (ts[i] < now ? (now - ts[i]) / 1000 : 0);
        }
    }
    if (total == 0) {
        *processSamplesCount = 0;
        return NVML_ERROR_NOT_FOUND;
    }
    if (total > cap) {
        *processSamplesCount = total;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *processSamplesCount = total;
    return NVML_SUCCESS;
}

/* Fills n process records of either layout. */
static nvmlReturn_t running(nvmlDevice_t device, unsigned int *infoCount, void *infos, int version)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    int idx[GP_SIM_MAX_PROCS];
    int n = procs_on(di, idx);
    if (*infoCount < (unsigned)n || (n > 0 && infos == NULL)) {
        *infoCount = (unsigned)n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (int k = 0; k < n; k++) {
        const gp_shm_proc *p = &g_shm.shm->proc[idx[k]];
        unsigned pid = atomic_load(&p->pid);
        unsigned long long mem = atomic_load(&p->mem[di]);
        if (version == 1) {
            nvmlProcessInfo_v1_t *r = &((nvmlProcessInfo_v1_t *)infos)[k];
            r->pid = pid;
            r->usedGpuMemory = mem;
        } else {
            nvmlProcessInfo_t *r = &((nvmlProcessInfo_t *)infos)[k];
            r->pid = pid;
            r->usedGpuMemory = mem;
            r->gpuInstanceId = 0xFFFFFFFFu; /* not a MIG instance */
            r->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    *infoCount = (unsigned)n;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                         nvmlProcessInfo_v1_t *infos)
{
    return running(device, infoCount, infos, 1);
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_v2_t *infos)
{
    return running(device, infoCount, infos, 2);
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos)
{
    return running(device, infoCount, infos, 3);
}

static nvmlReturn_t none_running(nvmlDevice_t device, unsigned int *infoCount)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *infoCount = 0; /* the simulation runs no graphics and no MPS clients */
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos)
{
    (void)infos;
    return none_running(device, infoCount);
}

GP_API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                               nvmlProcessInfo_t *infos)
{
    (void)infos;
    return none_running(device, infoCount);
}

/* ---- thermals, power, clocks ---------------------------------------------------------------------- */

static unsigned gpu_util(int di)
{
    unsigned gpu, mem;
    util_of(di, &gpu, &mem);
    return gpu;
}

GP_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                             unsigned int *temp)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (temp == NULL || sensorType != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    *temp = 32 + gpu_util(di) * 45 / 100;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, nvmlTemperatureThresholds_t type,
                                                      unsigned int *temp)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (temp == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    switch (type) {
    case NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: *temp = 92; break;
    case NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: *temp = 89; break;
    case NVML_TEMPERATURE_THRESHOLD_MEM_MAX: *temp = 95; break;
    case NVML_TEMPERATURE_THRESHOLD_GPU_MAX: *temp = 87; break;
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    DEV_OR_RETURN(device);
    if (power == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned u = gpu_util(di);
    *power = (unsigned)(d->model.idle_w * 1000 + (d->model.power_w - d->model.idle_w) * 10 * (int)u);
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy)
{
    DEV_OR_RETURN(device);
    if (energy == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t now = gp_now_ns(), busy, membusy;
    gp_shm_busy_now(g_shm.shm, di, now, &busy, &membusy);
    /* idle draw since boot (the monotonic clock) plus the extra draw while busy, in millijoules */
    *energy = (unsigned long long)((double)d->model.idle_w * (double)now / 1e6 +
                                   (double)(d->model.power_w - d->model.idle_w) * (double)busy / 1e6);
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *pState)
{
    DEV_OR_RETURN(device);
    (void)d;
    if (pState == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *pState = gpu_util(di) > 0 ? NVML_PSTATE_0 : NVML_PSTATE_8;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    DEV_OR_RETURN(device);
    if (speed == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strcasecmp(d->model.brand, "geforce") != 0)
        return NVML_ERROR_NOT_SUPPORTED; /* passively cooled data-centre boards have no fan */
    *speed = 30 + gpu_util(di) / 2;
    return NVML_SUCCESS;
}

static nvmlReturn_t clock_of(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock, bool current)
{
    DEV_OR_RETURN(device);
    if (clock == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned sm = (unsigned)d->model.sm_mhz, mem = (unsigned)d->model.mem_mhz;
    if (current && gpu_util(di) == 0)
        sm = sm * 3 / 10; /* idle boards clock down */
    switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM: *clock = sm; break;
    case NVML_CLOCK_MEM: *clock = mem; break;
    case NVML_CLOCK_VIDEO: *clock = sm * 9 / 10; break;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock)
{
    return clock_of(device, type, clock, true);
}

GP_API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock)
{
    return clock_of(device, type, clock, false);
}

/* ---- modes and ECC -------------------------------------------------------------------------------- */

GP_API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                         unsigned int *pendingMode)
{
    DEV_OR_RETURN(device);
    if (currentMode == NULL || pendingMode == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->model.mig)
        return NVML_ERROR_NOT_SUPPORTED;
    *currentMode = *pendingMode = NVML_DEVICE_MIG_DISABLE;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current,
                                         nvmlEnableState_t *pending)
{
    DEV_OR_RETURN(device);
    if (current == NULL || pending == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->model.ecc)
        return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                                nvmlEccCounterType_t counterType,
                                                unsigned long long *eccCounts)
{
    DEV_OR_RETURN(device);
    if (eccCounts == NULL || (int)errorType < 0 || errorType >= NVML_MEMORY_ERROR_TYPE_COUNT ||
        (int)counterType < 0 || counterType >= NVML_ECC_COUNTER_TYPE_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->model.ecc)
        return NVML_ERROR_NOT_SUPPORTED;
    *eccCounts =
        errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED ? atomic_load(&d->ecc_sbe) : atomic_load(&d->ecc_dbe);
    return NVML_SUCCESS;
}

/* ---- events --------------------------------------------------------------------------------------- */

static unsigned long long supported_events(const gp_shm_dev *d)
{
    unsigned long long t = nvmlEventTypeXidCriticalError;
    if (d->model.ecc)
        t |= nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError;
    return t;
}

GP_API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes)
{
    DEV_OR_RETURN(device);
    if (eventTypes == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *eventTypes = supported_events(d);
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (set == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlEventSet_st *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NVML_ERROR_MEMORY;
    pthread_mutex_init(&s->mu, NULL);
    *set = s;
    return NVML_SUCCESS;
}

GP_API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes,
                                             nvmlEventSet_t set)
{
    DEV_OR_RETURN(device);
    if (set == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (eventTypes & ~supported_events(d))
        return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&set->mu);
    set->types[di] |= eventTypes;
    set->seen_xid[di] = atomic_load(&d->xid_count);
    set->seen_sbe[di] = atomic_load(&d->ecc_sbe);
    set->seen_dbe[di] = atomic_load(&d->ecc_dbe);
    pthread_mutex_unlock(&set->mu);
    return NVML_SUCCESS;
}

/* One pending event of the set, if any. Caller holds set->mu. */
static bool take_event(nvmlEventSet_t set, nvmlEventData_t *data)
{
    for (int i = 0; i < g_ndev; i++) {
        gp_shm_dev *d = &g_shm.shm->dev[i];
        memset(data, 0, sizeof *data);
        data->device = &g_devs[i];
        data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFFu;
        uint64_t xid = atomic_load(&d->xid_count);
        if ((set->types[i] & nvmlEventTypeXidCriticalError) && xid > set->seen_xid[i]) {
            set->seen_xid[i]++;
            data->eventType = nvmlEventTypeXidCriticalError;
            data->eventData = atomic_load(&d->last_xid);
            return true;
        }
        uint64_t sbe = atomic_load(&d->ecc_sbe);
        if ((set->types[i] & nvmlEventTypeSingleBitEccError) && sbe > set->seen_sbe[i]) {
            set->seen_sbe[i] = sbe;
            data->eventType = nvmlEventTypeSingleBitEccError;
            return true;
        }
        uint64_t dbe = atomic_load(&d->ecc_dbe);
        if ((set->types[i] & nvmlEventTypeDoubleBitEccError) && dbe > set->seen_dbe[i]) {
            set->seen_dbe[i] = dbe;
            data->eventType = nvmlEventTypeDoubleBitEccError;
            return true;
        }
    }
    return false;
}

static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (set == NULL || data == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t deadline = gp_now_ns() + (uint64_t)timeoutms * 1000000ull;
    for (;;) {
        pthread_mutex_lock(&set->mu);
        bool got = take_event(set, data);
        pthread_mutex_unlock(&set->mu);
        if (got)
            return NVML_SUCCESS;
        uint64_t now = gp_now_ns();
        if (now >= deadline)
            return NVML_ERROR_TIMEOUT;
        uint64_t step = deadline - now < 20000000ull ? deadline - now : 20000000ull;
        gp_sleep_ns(step);
    }
}

GP_API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    return event_wait(set, data, timeoutms);
}

GP_API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    return event_wait(set, data, timeoutms);
}

GP_API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    nvmlReturn_t rc = ready();
    if (rc)
        return rc;
    if (set == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_destroy(&set->mu);
    free(set);
    return NVML_SUCCESS;
}

/* Present only in the simulation: tools check for it to label simulated GPUs as such. */
GP_API const char gpupool_sim_nvml_version[] = GP_VERSION;

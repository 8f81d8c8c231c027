/* conf_nvml.c - NVML as it agrees with the CUDA driver: initialisation, device count, names, UUIDs, memory
 * totals, the processes running on a device, and NVML's argument errors.
 * Devices are paired by UUID, not by index: CUDA orders devices fastest first, NVML by PCI bus. NVML's
 * declarations always come from gpupool's nvml.h (NVIDIA's toolkit may not ship one); the values in it are
 * NVIDIA's. CUDA_VISIBLE_DEVICES is cleared before cuInit so CUDA sees every device NVML does.
 */
#include "check.h"

#include "../../include/gpupool/nvml.h"

#include <strings.h>
#include <unistd.h>

#define MiB (1ull << 20)

#define EXPECT_NVML(call, expect)                                                                          \
    do {                                                                                                   \
        nvmlReturn_t n_ = (call);                                                                          \
        if (n_ != (expect)) {                                                                              \
            fprintf(stderr, "FAIL %s (%s:%d): %s returned %d (%s), expected %d\n", conf_current, __FILE__, \
                    __LINE__, #call, (int)n_, nvmlErrorString(n_), (int)(expect));                         \
            conf_failures++;                                                                               \
        }                                                                                                  \
    } while (0)

#define NV(call)                                                                                        \
    do {                                                                                                \
        nvmlReturn_t n_ = (call);                                                                       \
        if (n_ != NVML_SUCCESS) {                                                                       \
            fprintf(stderr, "FAIL %s (%s:%d): %s returned %d (%s)\n", conf_current, __FILE__, __LINE__, \
                    #call, (int)n_, nvmlErrorString(n_));                                               \
            conf_failures++;                                                                            \
            return;                                                                                     \
        }                                                                                               \
    } while (0)

static int g_cuda_count;

static void format_uuid(const CUuuid *u, char out[64])
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, 64, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* The NVML device whose UUID is CUDA device `ordinal`'s, or NULL. */
static nvmlDevice_t nvml_device_of(int ordinal)
{
    CUdevice d;
    CUuuid u;
    if (cuDeviceGet(&d, ordinal) != CUDA_SUCCESS || cuDeviceGetUuid(&u, d) != CUDA_SUCCESS)
        return NULL;
    char want[64];
    format_uuid(&u, want);
    unsigned int n = 0;
    if (nvmlDeviceGetCount(&n) != NVML_SUCCESS)
        return NULL;
    for (unsigned int i = 0; i < n; i++) {
        nvmlDevice_t h;
        char got[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
        if (nvmlDeviceGetHandleByIndex(i, &h) == NVML_SUCCESS &&
            nvmlDeviceGetUUID(h, got, sizeof got) == NVML_SUCCESS && strcasecmp(got, want) == 0)
            return h;
    }
    return NULL;
}

static void calls_before_nvmlInit_return_uninitialized(void)
{
    unsigned int n = 0;
    EXPECT_NVML(nvmlDeviceGetCount(&n), NVML_ERROR_UNINITIALIZED);
    nvmlDevice_t h;
    EXPECT_NVML(nvmlDeviceGetHandleByIndex(0, &h), NVML_ERROR_UNINITIALIZED);
    EXPECT_NVML(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
}

static void nvml_device_count_equals_cuda_device_count(void)
{
    NV(nvmlInit());
    CU(cuInit(0));
    CU(cuDeviceGetCount(&g_cuda_count));
    unsigned int n = 0;
    NV(nvmlDeviceGetCount(&n));
    EXPECT((int)n == g_cuda_count, "NVML counts %u devices, CUDA %d", n, g_cuda_count);
}

static void uuids_names_and_memory_agree_with_cuda(void)
{
    for (int i = 0; i < g_cuda_count; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        CUuuid u;
        CU(cuDeviceGetUuid(&u, d));
        char want[64];
        format_uuid(&u, want);
        nvmlDevice_t h = nvml_device_of(i);
        EXPECT(h != NULL, "CUDA device %d (%s) has no NVML device with that UUID", i, want);
        if (h == NULL)
            continue;
        nvmlDevice_t by_uuid = NULL;
        NV(nvmlDeviceGetHandleByUUID(want, &by_uuid));
        EXPECT(by_uuid == h, "CUDA device %d: nvmlDeviceGetHandleByUUID(%s) gives another handle", i, want);

        char cname[256], nname[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
        CU(cuDeviceGetName(cname, (int)sizeof cname, d));
        NV(nvmlDeviceGetName(h, nname, sizeof nname));
        EXPECT(strcmp(cname, nname) == 0, "CUDA device %d: name \"%s\", NVML \"%s\"", i, cname, nname);

        /* NVML's total may include memory the driver keeps for itself, so it is at least CUDA's and close. */
        size_t ctotal = 0;
        CU(cuDeviceTotalMem(&ctotal, d));
        nvmlMemory_t mem;
        NV(nvmlDeviceGetMemoryInfo(h, &mem));
        EXPECT(mem.total >= ctotal && mem.total - ctotal <= mem.total / 32,
               "CUDA device %d: CUDA total %zu, NVML total %llu", i, ctotal, mem.total);
        EXPECT(mem.used <= mem.total && mem.free <= mem.total,
               "NVML memory: total %llu, used %llu, free %llu", mem.total, mem.used, mem.free);
    }
}

static void running_processes_list_this_process_and_its_memory(void)
{
    CUcontext ctx;
    CU(conf_context(&ctx));
    CUdeviceptr p;
    CU(cuMemAlloc(&p, 256 * MiB));
    nvmlDevice_t h = nvml_device_of(0);
    EXPECT(h != NULL, "CUDA device 0 has no NVML device");
    if (h != NULL) {
        unsigned int need = 0;
        EXPECT_NVML(nvmlDeviceGetComputeRunningProcesses(h, &need, NULL), NVML_ERROR_INSUFFICIENT_SIZE);
        EXPECT(need >= 1, "a too-small buffer reports %u processes needed", need);
        unsigned int cap = need + 8, n = cap; /* room for processes that start meanwhile */
        nvmlProcessInfo_t *infos = calloc(cap, sizeof *infos);
        if (infos != NULL) {
            EXPECT_NVML(nvmlDeviceGetComputeRunningProcesses(h, &n, infos), NVML_SUCCESS);
            const nvmlProcessInfo_t *mine = NULL;
            for (unsigned int i = 0; i < n && i < cap; i++)
                if (infos[i].pid == (unsigned int)getpid())
                    mine = &infos[i];
            EXPECT(mine != NULL, "pid %d is not among the %u processes listed", (int)getpid(), n);
            if (mine)
                EXPECT(mine->usedGpuMemory >= 256 * MiB, "this process uses %llu bytes, it allocated 256 MiB",
                       mine->usedGpuMemory);
            if (n >= 1) {
                unsigned int small = n - 1, got = small;
                nvmlReturn_t rc = nvmlDeviceGetComputeRunningProcesses(h, &got, infos);
                EXPECT(rc == NVML_ERROR_INSUFFICIENT_SIZE && got > small,
                       "buffer for %u of %u processes: returned %s, count %u", small, n, nvmlErrorString(rc),
                       got);
            }
            free(infos);
        }
    }
    cuMemFree(p);
    cuCtxDestroy(ctx);
}

static void memory_info_v2_checks_the_struct_version(void)
{
    nvmlDevice_t h;
    NV(nvmlDeviceGetHandleByIndex(0, &h));
    nvmlMemory_v2_t mem;
    memset(&mem, 0, sizeof mem);
    mem.version = 0;
    EXPECT_NVML(nvmlDeviceGetMemoryInfo_v2(h, &mem), NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    mem.version = (unsigned int)(sizeof(nvmlMemory_v2_t) | (7u << 24));
    EXPECT_NVML(nvmlDeviceGetMemoryInfo_v2(h, &mem), NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    mem.version = nvmlMemory_v2;
    EXPECT_NVML(nvmlDeviceGetMemoryInfo_v2(h, &mem), NVML_SUCCESS);
    EXPECT(mem.total > 0 && mem.free <= mem.total && mem.used <= mem.total,
           "v2 memory: total %llu, used %llu, free %llu", mem.total, mem.used, mem.free);
}

static void init_is_reference_counted(void)
{
    NV(nvmlInit());     /* a second reference */
    NV(nvmlShutdown()); /* drops it; the first still holds */
    unsigned int n = 0;
    EXPECT_NVML(nvmlDeviceGetCount(&n), NVML_SUCCESS);
}

static void unknown_uuid_returns_not_found(void)
{
    nvmlDevice_t h;
    EXPECT_NVML(nvmlDeviceGetHandleByUUID("GPU-01234567-89ab-cdef-0123-456789abcdef", &h),
                NVML_ERROR_NOT_FOUND);
}

static void short_name_buffer_returns_insufficient_size(void)
{
    nvmlDevice_t h;
    NV(nvmlDeviceGetHandleByIndex(0, &h));
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    NV(nvmlDeviceGetName(h, name, sizeof name));
    size_t len = strlen(name);
    EXPECT(len > 0, "empty device name");
    if (len == 0)
        return;
    char small[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    EXPECT_NVML(nvmlDeviceGetName(h, small, (unsigned int)len), NVML_ERROR_INSUFFICIENT_SIZE);
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    EXPECT_NVML(nvmlDeviceGetUUID(h, uuid, 8), NVML_ERROR_INSUFFICIENT_SIZE);
}

static void bad_device_index_returns_invalid_argument(void)
{
    unsigned int n = 0;
    NV(nvmlDeviceGetCount(&n));
    nvmlDevice_t h;
    EXPECT_NVML(nvmlDeviceGetHandleByIndex(n, &h), NVML_ERROR_INVALID_ARGUMENT);
    EXPECT_NVML(nvmlDeviceGetHandleByIndex(n + 100, &h), NVML_ERROR_INVALID_ARGUMENT);
}

static void error_string_of_success_is_nonempty(void)
{
    const char *s = nvmlErrorString(NVML_SUCCESS);
    EXPECT(s != NULL && s[0] != '\0', "nvmlErrorString(NVML_SUCCESS) is empty");
}

static void calls_after_nvmlShutdown_return_uninitialized(void)
{
    NV(nvmlShutdown());
    unsigned int n = 0;
    EXPECT_NVML(nvmlDeviceGetCount(&n), NVML_ERROR_UNINITIALIZED);
}

int main(void)
{
    unsetenv("CUDA_VISIBLE_DEVICES");
    RUN(calls_before_nvmlInit_return_uninitialized);
    RUN(nvml_device_count_equals_cuda_device_count);
    RUN(uuids_names_and_memory_agree_with_cuda);
    RUN(running_processes_list_this_process_and_its_memory);
    RUN(memory_info_v2_checks_the_struct_version);
    RUN(init_is_reference_counted);
    RUN(unknown_uuid_returns_not_found);
    RUN(short_name_buffer_returns_insufficient_size);
    RUN(bad_device_index_returns_invalid_argument);
    RUN(error_string_of_success_is_nonempty);
    RUN(calls_after_nvmlShutdown_return_uninitialized);
    CONF_EXIT();
}

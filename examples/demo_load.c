/* demo_load.c - a small CUDA driver-API program that keeps a GPU busy for a while: it allocates some device
 * memory and launches spin kernels so the GPU is busy a given fraction of the time. `make run` starts two of
 * them so `gpupool smi` has something to show; it runs unchanged on a real GPU.
 *
 *   demo_load [--gpu N] [--busy PERCENT] [--mem MiB] [--seconds S]
 */
#include <cuda.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern const char gp_sample_ptx[];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int check(CUresult rc, const char *what)
{
    if (rc == CUDA_SUCCESS)
        return 0;
    const char *s = "?";
    cuGetErrorString(rc, &s);
    fprintf(stderr, "demo_load: %s: %s\n", what, s);
    return 1;
}

int main(int argc, char **argv)
{
    int gpu = 0, busy = 50, mem_mib = 1024;
    double seconds = 10;
    static const struct option opts[] = {{"gpu", required_argument, 0, 'g'},
                                         {"busy", required_argument, 0, 'b'},
                                         {"mem", required_argument, 0, 'm'},
                                         {"seconds", required_argument, 0, 's'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "g:b:m:s:", opts, NULL)) != -1) {
        switch (c) {
        case 'g': gpu = atoi(optarg); break;
        case 'b': busy = atoi(optarg); break;
        case 'm': mem_mib = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        default:
            fprintf(stderr, "usage: demo_load [--gpu N] [--busy PERCENT] [--mem MiB] [--seconds S]\n");
            return 2;
        }
    }
    if (busy < 1 || busy > 100 || mem_mib < 0 || seconds <= 0) {
        fprintf(stderr, "demo_load: --busy takes 1..100, --mem and --seconds positive numbers\n");
        return 2;
    }
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction spin;
    CUdeviceptr buf = 0;
    if (check(cuInit(0), "cuInit") || check(cuDeviceGet(&dev, gpu), "cuDeviceGet") ||
        check(cuCtxCreate(&ctx, NULL, 0, dev), "cuCtxCreate") ||
        check(cuModuleLoadData(&mod, gp_sample_ptx), "load") ||
        check(cuModuleGetFunction(&spin, mod, "spin_ns"), "cuModuleGetFunction"))
        return 1;
    /* Held, not touched: on the simulation untouched device memory costs no host memory. */
    if (mem_mib > 0 && check(cuMemAlloc(&buf, (size_t)mem_mib << 20), "cuMemAlloc"))
        return 1;
    /* Periods of 100 ms: busy% of it in 1 ms kernels, the rest idle. */
    uint64_t kernel_ns = 1000000, period = 100000000ull, end = now_ns() + (uint64_t)(seconds * 1e9);
    void *args[] = {&kernel_ns};
    while (now_ns() < end) {
        uint64_t t0 = now_ns();
        for (int k = 0; k < busy; k++)
            if (check(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL), "cuLaunchKernel"))
                return 1;
        if (check(cuCtxSynchronize(), "cuCtxSynchronize"))
            return 1;
        uint64_t spent = now_ns() - t0;
        if (spent < period) {
            struct timespec ts = {0, (long)(period - spent)};
            nanosleep(&ts, NULL);
        }
    }
    if (buf)
        cuMemFree(buf);
    cuCtxDestroy(ctx);
    return 0;
}

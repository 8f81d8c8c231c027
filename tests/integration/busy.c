/* busy.c - a workload for the integration tests: keeps one GPU saturated with kernels of a fixed duration
 * and reports its progress, so a test can measure the share of the GPU it really got.
 *
 *   gp_busy [--gpu N] [--kernel-ms MS] [--seconds S] [--mem] [--exit N | --raise SIG]
 *
 * With --mem it first prints "mem <free> <total>" as cuMemGetInfo reports them (the vGPU's, under a slot).
 * Every 50 ms it prints "<CLOCK_MONOTONIC ns> <kernels completed>" on stdout (the clock is the host's, the
 * same in every process). Completions are counted by a host function queued after each kernel, so queued
 * work is not mistaken for done work. Runs until killed, or for S seconds; then exits with status N (3 when
 * neither GPUPOOL_SLOT_DIR nor GPUPOOL_REMOTE is set: it was not given a vGPU), or kills itself with signal
 * SIG. (The tests use it rather than sh for that: in the sanitizer build, the vGPU library cannot be
 * preloaded into a program built without the sanitizer runtime.)
 */
#include <signal.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/timeutil.h"
#include "gpupool/cuda.h"

extern const char gp_sample_ptx[];

static atomic_ullong g_done;

static void CUDA_CB completed(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_done, 1);
}

static void *reporter(void *arg)
{
    (void)arg;
    for (;;) {
        printf("%llu %llu\n", (unsigned long long)gp_now_ns(), (unsigned long long)atomic_load(&g_done));
        fflush(stdout);
        gp_sleep_ns(50000000);
    }
    return NULL;
}

static void check(CUresult rc, const char *what)
{
    if (rc != CUDA_SUCCESS) {
        const char *name = "?";
        cuGetErrorName(rc, &name);
        fprintf(stderr, "gp_busy: %s failed: %s\n", what, name);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"gpu", required_argument, 0, 'g'},
                                       {"kernel-ms", required_argument, 0, 'k'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"mem", no_argument, 0, 'm'},
                                       {"exit", required_argument, 0, 'e'},
                                       {"raise", required_argument, 0, 'r'},
                                       {0, 0, 0, 0}};
    int gpu = 0, c, mem = 0, status = 0, sig = 0;
    double kernel_ms = 2, seconds = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 'g')
            gpu = atoi(optarg);
        else if (c == 'k')
            kernel_ms = atof(optarg);
        else if (c == 's')
            seconds = atof(optarg);
        else if (c == 'm')
            mem = 1;
        else if (c == 'e')
            status = getenv("GPUPOOL_SLOT_DIR") || getenv("GPUPOOL_REMOTE") ? atoi(optarg) : 3;
        else if (c == 'r')
            sig = atoi(optarg);
        else
            return 2;
    }
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction spin;
    CUstream s;
    check(cuInit(0), "cuInit");
    check(cuDeviceGet(&dev, gpu), "cuDeviceGet");
    check(cuCtxCreate(&ctx, NULL, 0, dev), "cuCtxCreate");
    if (mem) {
        size_t free_b = 0, total = 0;
        check(cuMemGetInfo(&free_b, &total), "cuMemGetInfo");
        printf("mem %zu %zu\n", free_b, total);
        fflush(stdout);
    }
    check(cuModuleLoadData(&mod, gp_sample_ptx), "cuModuleLoadData");
    check(cuModuleGetFunction(&spin, mod, "spin_ns"), "cuModuleGetFunction");
    check(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    pthread_t t;
    pthread_create(&t, NULL, reporter, NULL);
    uint64_t ns = (uint64_t)(kernel_ms * 1e6);
    void *args[] = {&ns};
    uint64_t end = seconds > 0 ? gp_now_ns() + (uint64_t)(seconds * 1e9) : UINT64_MAX;
    while (gp_now_ns() < end) {
        check(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, s, args, NULL), "cuLaunchKernel");
        check(cuLaunchHostFunc(s, completed, NULL), "cuLaunchHostFunc");
    }
    check(cuStreamSynchronize(s), "cuStreamSynchronize");
    if (sig > 0)
        raise(sig);
    return status;
}

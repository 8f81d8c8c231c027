/* vgpu_overhead.c - what libgpupool-vgpu.so costs a program that is not compute-limited: calls per second
 * of cuLaunchKernel (an empty kernel, asynchronous) and of a cuMemAlloc/cuMemFree pair, with the library
 * (a slot with a VRAM limit and no compute limit) and without it, in one run. Ratio = with / without;
 * the target for launches is >= 0.97. Each figure is the best of several rounds, run alternately, so that
 * both sides see the same machine. GPUPOOL_SIM_LAUNCH_NS=0 (set by scripts/bench.sh) keeps the simulated
 * device from being the bottleneck, so the host path is what is measured.
 */
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

extern const char gp_sample_ptx[];

static int child(long n)
{
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction spin;
    CUstream s;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    BCK(cuModuleLoadData(&mod, gp_sample_ptx));
    BCK(cuModuleGetFunction(&spin, mod, "spin_ns"));
    BCK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    uint64_t zero = 0;
    void *args[] = {&zero};
    for (int i = 0; i < 20000; i++)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
    BCK(cuStreamSynchronize(s));
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
    BCK(cuStreamSynchronize(s));
    double launches = (double)n / (bench_now() - t0);
    long m = n / 10;
    CUdeviceptr p;
    t0 = bench_now();
    for (long i = 0; i < m; i++) {
        BCK(cuMemAlloc(&p, 4096));
        BCK(cuMemFree(p));
    }
    double allocs = (double)m / (bench_now() - t0);
    printf("%.1f %.1f\n", launches, allocs);
    return 0;
}

static void run(bool with_lib, const char *slot, long n, double *launches, double *allocs)
{
    int p[2];
    if (pipe(p) != 0)
        exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        if (with_lib) {
            setenv("LD_PRELOAD", getenv("GPUPOOL_VGPU_LIB"), 1);
            setenv("GPUPOOL_SLOT_DIR", slot, 1);
        }
        char ns[32];
        snprintf(ns, sizeof ns, "%ld", n);
        execl("/proc/self/exe", "bench_vgpu_overhead", "--child", ns, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[128] = "";
    ssize_t r = read(p[0], buf, sizeof buf - 1);
    buf[r > 0 ? r : 0] = '\0';
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (sscanf(buf, "%lf %lf", launches, allocs) != 2) {
        fprintf(stderr, "bench_vgpu_overhead: a run failed\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child(atol(argv[2]));
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 9;
    if (!getenv("GPUPOOL_BIN") || !getenv("GPUPOOL_VGPU_LIB")) {
        fprintf(stderr,
                "bench_vgpu_overhead: set GPUPOOL_BIN and GPUPOOL_VGPU_LIB (scripts/bench.sh does)\n");
        return 2;
    }
    char slot[128], cmd[512];
    snprintf(slot, sizeof slot, "/tmp/gpupool-bench-overhead-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s slot create '%s' --gpu 0 --vram 16Gi >/dev/null", getenv("GPUPOOL_BIN"),
             slot);
    if (system(cmd) != 0)
        return 1;
    BCK(cuInit(0));
    bench_header("vgpu_overhead");
    double bl = 0, ba = 0, wl = 0, wa = 0;
    for (int r = 0; r < rounds; r++) {
        double l, a;
        run(false, slot, n, &l, &a);
        bl = l > bl ? l : bl;
        ba = a > ba ? a : ba;
        run(true, slot, n, &l, &a);
        wl = l > wl ? l : wl;
        wa = a > wa ? a : wa;
    }
    bench_line("cuLaunchKernel (empty, async), with the library", wl, bl, "/s", "the same without it");
    bench_line("cuMemAlloc + cuMemFree, with the library", wa, ba, "/s", "the same without it");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", slot);
    return system(cmd) == 0 ? 0 : 1;
}

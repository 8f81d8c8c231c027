/* vgpu_accuracy.c - how exactly libgpupool-vgpu.so holds processes to their compute share.
 *
 * On one simulated H100, each scenario runs processes that launch saturating kernels (2 ms each, back to
 * back) under a compute limit: one process at 10, 25, 50 and 75 %, then two at once at 30/70 and 10/90. After
 * a warm-up each process counts the kernels it completes in a 10 s window; achieved share = kernels x kernel
 * time / window, measured by the process itself, independently of the library's own accounting. The
 * baseline of the ratio is the requested share; the target is within +-2 percentage points.
 *
 *   bench_vgpu_accuracy [WINDOW_S] [WARMUP_S]
 * Needs LD_LIBRARY_PATH with the simulated GPU, GPUPOOL_SIM_KERNEL_PATH, GPUPOOL_BIN and GPUPOOL_VGPU_LIB
 * (scripts/bench.sh sets them).
 */
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

extern const char gp_sample_ptx[];

static int child(double warmup, double window)
{
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction spin;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    BCK(cuModuleLoadData(&mod, gp_sample_ptx));
    BCK(cuModuleGetFunction(&spin, mod, "spin_ns"));
    uint64_t kernel_ns = 2000000;
    void *args[] = {&kernel_ns};
    double t0 = bench_now(), start = t0 + warmup, end = start + window;
    uint64_t counted = 0;
    for (;;) {
        double now = bench_now();
        if (now >= end)
            break;
        BCK(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
        if (now >= start)
            counted++;
    }
    BCK(cuCtxSynchronize());
    printf("%.6f\n", (double)counted * (double)kernel_ns * 1e-9 / window);
    return 0;
}

static void make_slot(const char *dir, double percent)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && %s slot create '%s' --gpu 0 --vram 8Gi --percent %g >/dev/null",
             dir, getenv("GPUPOOL_BIN"), dir, percent);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create slot %s\n", dir);
        exit(1);
    }
}

static void scenario(const char *name, const double *pct, int n, double warmup, double window)
{
    pid_t pids[4];
    int fds[4];
    char dirs[4][128];
    for (int i = 0; i < n; i++) {
        snprintf(dirs[i], sizeof dirs[i], "/tmp/gpupool-bench-vgpu-%d-%d", (int)getpid(), i);
        make_slot(dirs[i], pct[i]);
    }
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe(p) != 0)
            exit(1);
        pids[i] = fork();
        if (pids[i] == 0) {
            dup2(p[1], 1);
            setenv("LD_PRELOAD", getenv("GPUPOOL_VGPU_LIB"), 1);
            setenv("GPUPOOL_SLOT_DIR", dirs[i], 1);
            char w[32], v[32];
            snprintf(w, sizeof w, "%g", warmup);
            snprintf(v, sizeof v, "%g", window);
            execl("/proc/self/exe", "bench_vgpu_accuracy", "--child", w, v, (char *)NULL);
            _exit(127);
        }
        close(p[1]);
        fds[i] = p[0];
    }
    for (int i = 0; i < n; i++) {
        char buf[64] = "";
        ssize_t r = read(fds[i], buf, sizeof buf - 1);
        buf[r > 0 ? r : 0] = '\0';
        close(fds[i]);
        int st;
        waitpid(pids[i], &st, 0);
        double achieved = atof(buf) * 100;
        char metric[64];
        snprintf(metric, sizeof metric, "%s: process %d share", name, i + 1);
        bench_line(metric, achieved, pct[i], "%", "the requested share");
        printf("    error %+.2f percentage points%s\n", achieved - pct[i],
               achieved - pct[i] > 2 || achieved - pct[i] < -2 ? "  (outside +-2)" : "");
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dirs[i]);
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--child") == 0)
        return child(atof(argv[2]), atof(argv[3]));
    double window = argc > 1 ? atof(argv[1]) : 10, warmup = argc > 2 ? atof(argv[2]) : 2;
    if (!getenv("GPUPOOL_BIN") || !getenv("GPUPOOL_VGPU_LIB")) {
        fprintf(stderr,
                "bench_vgpu_accuracy: set GPUPOOL_BIN and GPUPOOL_VGPU_LIB (scripts/bench.sh does)\n");
        return 2;
    }
    BCK(cuInit(0));
    bench_header("vgpu_accuracy");
    printf("# window %.0f s after %.0f s of warm-up; saturating 2 ms kernels; one simulated GPU\n", window,
           warmup);
    static const double singles[] = {10, 25, 50, 75};
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "alone at %.0f%%", singles[i]);
        scenario(name, &singles[i], 1, warmup, window);
    }
    static const double pair1[] = {30, 70}, pair2[] = {10, 90};
    scenario("pair 30/70", pair1, 2, warmup, window);
    scenario("pair 10/90", pair2, 2, warmup, window);
    return 0;
}

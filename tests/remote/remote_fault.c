/* remote_fault.c - what a program on gpupool's remote libcuda.so.1 sees when things go wrong: a worker killed
 * (kill -9, the whole worker with its session processes) in the middle of the program's work gives a clear
 * CUDA error within a bound, never a hang; a wrong token and a missing configuration fail cuInit with a clear
 * error. Run with LD_LIBRARY_PATH at the remote library (ctest does); it starts its own worker.
 *
 *   remote_fault worker-killed unix|tcp   the worker dies mid-run: the next calls answer
 *                                          CUDA_ERROR_DEVICE_UNAVAILABLE within 6 s
 *   remote_fault wrong-token              cuInit answers CUDA_ERROR_NOT_PERMITTED
 *   remote_fault unconfigured             cuInit answers CUDA_ERROR_NO_DEVICE
 *
 * Environment: GPUPOOL_BIN (the gpupool binary), GPUPOOL_SIM_LIB_DIR (the simulated driver, for the worker).
 */
#include <cuda.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_failed;

#define EXPECT(cond, ...)                                \
    do {                                                 \
        if (!(cond)) {                                   \
            fprintf(stderr, "FAIL line %d: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                \
            fprintf(stderr, "\n");                       \
            g_failed = 1;                                \
        }                                                \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *name(CUresult r)
{
    const char *s = "?";
    cuGetErrorName(r, &s);
    return s;
}

static char g_dir[64];

/* Starts `gpupool worker` in a process group of its own (so that it can be killed with its sessions) on a
 * unix socket or a TCP port; returns the group's id. */
static pid_t start_worker(const char *transport, char *addr, size_t alen)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/gpupool-test-fault-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char tokens[128], log[128], cache[128], state[128];
    snprintf(tokens, sizeof tokens, "%s/tokens", g_dir);
    snprintf(log, sizeof log, "%s/worker.log", g_dir);
    snprintf(cache, sizeof cache, "%s/cache", g_dir);
    snprintf(state, sizeof state, "/dev/shm/gpupool-test-fault-%d", (int)getpid());
    FILE *f = fopen(tokens, "w");
    fputs("right-token\n", f);
    fclose(f);
    if (strcmp(transport, "unix") == 0)
        snprintf(addr, alen, "unix:%s/worker.sock", g_dir);
    else
        snprintf(addr, alen, "tcp:127.0.0.1:0"); /* the worker picks a port and says which */
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        const char *sim = getenv("GPUPOOL_SIM_LIB_DIR");
        if (sim)
            setenv("LD_LIBRARY_PATH", sim, 1);
        setenv("GPUPOOL_SIM_STATE", state, 1);
        if (!freopen(log, "w", stderr))
            _exit(126);
        execl(getenv("GPUPOOL_BIN"), "gpupool", "worker", "--listen", addr, "--token-file", tokens,
              "--cache-dir", cache, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    /* until it listens: its log says where */
    for (int i = 0; i < 100; i++) {
        FILE *lf = fopen(log, "r");
        char line[512];
        while (lf && fgets(line, sizeof line, lf)) {
            const char *at = strstr(line, "listening on ");
            if (at && sscanf(at + 13, "%127s", addr) == 1) {
                fclose(lf);
                return pid;
            }
        }
        if (lf)
            fclose(lf);
        usleep(100000);
    }
    fprintf(stderr, "the worker did not start; its log:\n");
    char cmd[200];
    snprintf(cmd, sizeof cmd, "cat '%s' >&2", log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log)\n");
    exit(2);
}

static void cleanup(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' /dev/shm/gpupool-test-fault-%d", g_dir, (int)getpid());
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
}

static int worker_killed(const char *transport)
{
    char addr[128];
    pid_t pg = start_worker(transport, addr, sizeof addr);
    setenv("GPUPOOL_REMOTE", addr, 1);
    setenv("GPUPOOL_REMOTE_TOKEN", "right-token", 1);
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr d;
    EXPECT(cuInit(0) == CUDA_SUCCESS, "cuInit through %s", addr);
    EXPECT(cuDeviceGet(&dev, 0) == CUDA_SUCCESS, "cuDeviceGet");
    EXPECT(cuCtxCreate(&ctx, NULL, 0, dev) == CUDA_SUCCESS, "cuCtxCreate");
    size_t n = 64u << 20;
    char *h = calloc(1, n);
    EXPECT(cuMemAlloc(&d, n) == CUDA_SUCCESS, "cuMemAlloc");
    EXPECT(cuMemcpyHtoD(d, h, n) == CUDA_SUCCESS, "cuMemcpyHtoD before the kill");

    kill(-pg, SIGKILL); /* the worker and its session processes */
    waitpid(pg, NULL, 0);
    double t0 = now();
    CUresult r = cuMemcpyDtoH(h, d, n);
    double took = now() - t0;
    printf("%s: after kill -9 of the worker, cuMemcpyDtoH answered %s in %.3f s\n", transport, name(r), took);
    EXPECT(r == CUDA_ERROR_DEVICE_UNAVAILABLE, "cuMemcpyDtoH answered %s", name(r));
    EXPECT(took < 6.0, "it took %.1f s (the bound is about 5 s)", took);
    /* and so does every call after it, at once */
    t0 = now();
    EXPECT(cuCtxSynchronize() == CUDA_ERROR_DEVICE_UNAVAILABLE, "cuCtxSynchronize after");
    CUdeviceptr d2;
    EXPECT(cuMemAlloc(&d2, 4096) == CUDA_ERROR_DEVICE_UNAVAILABLE, "cuMemAlloc after");
    EXPECT(now() - t0 < 1.0, "later calls took %.1f s", now() - t0);
    free(h);
    cleanup();
    return g_failed;
}

static int wrong_token(void)
{
    char addr[128];
    pid_t pg = start_worker("unix", addr, sizeof addr);
    setenv("GPUPOOL_REMOTE", addr, 1);
    setenv("GPUPOOL_REMOTE_TOKEN", "wrong-token", 1);
    CUresult r = cuInit(0);
    printf("wrong token: cuInit answered %s\n", name(r));
    EXPECT(r == CUDA_ERROR_NOT_PERMITTED, "cuInit answered %s", name(r));
    int count = -1;
    EXPECT(cuDeviceGetCount(&count) != CUDA_SUCCESS, "cuDeviceGetCount after a refused cuInit");
    kill(-pg, SIGTERM);
    waitpid(pg, NULL, 0);
    cleanup();
    return g_failed;
}

static int unconfigured(void)
{
    unsetenv("GPUPOOL_REMOTE");
    unsetenv("GPUPOOL_REMOTE_TOKEN");
    unsetenv("GPUPOOL_REMOTE_TOKEN_FILE");
    CUresult r = cuInit(0);
    printf("no GPUPOOL_REMOTE: cuInit answered %s\n", name(r));
    EXPECT(r == CUDA_ERROR_NO_DEVICE, "cuInit answered %s", name(r));
    return g_failed;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && strcmp(argv[1], "worker-killed") == 0)
        return worker_killed(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "wrong-token") == 0)
        return wrong_token();
    if (argc >= 2 && strcmp(argv[1], "unconfigured") == 0)
        return unconfigured();
    fprintf(stderr, "usage: remote_fault worker-killed unix|tcp | wrong-token | unconfigured\n");
    return 2;
}

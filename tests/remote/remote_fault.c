/* remote_fault.c - what a program on gpupool's remote libcuda.so.1 sees when things go wrong: a worker killed
 * (kill -9, the whole worker with its session processes) in the middle of the program's work gives a clear
 * CUDA error within a bound, never a hang; a wrong token and a missing configuration fail cuInit with a clear
 * error. Run with LD_LIBRARY_PATH at the remote library (ctest does); it starts its own worker.
 *
 *   remote_fault worker-killed unix|tcp|tls   the worker dies mid-run: the next calls answer
 *                                          CUDA_ERROR_DEVICE_UNAVAILABLE within 6 s
 *   remote_fault tls-refused              a worker whose certificate the client does not trust, a plain
 * client at a TLS worker and a TLS client at a plain one: cuInit answers CUDA_ERROR_NO_DEVICE at once, and
 * the worker still serves remote_fault wrong-token              cuInit answers CUDA_ERROR_NOT_PERMITTED
 *   remote_fault unconfigured             cuInit answers CUDA_ERROR_NO_DEVICE
 *
 * Environment: GPUPOOL_BIN (the gpupool binary), GPUPOOL_SIM_LIB_DIR (the simulated driver, for the worker).
 */
#include <cuda.h>
#include <signal.h>
#include <stdbool.h>
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

/* A self-signed certificate for 127.0.0.1 in g_dir/NAME-cert.pem and NAME-key.pem (the openssl command). */
static void make_cert(const char *name)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '%s/%s-key.pem' "
             "-out '%s/%s-cert.pem' -days 1 -subj /CN=gpupool-test -addext subjectAltName=IP:127.0.0.1 "
             "2>/dev/null",
             g_dir, name, g_dir, name);
    if (system(cmd) != 0) {
        fprintf(stderr, "openssl could not make a certificate\n");
        exit(2);
    }
}

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
    char cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/worker-cert.pem", g_dir);
    snprintf(key, sizeof key, "%s/worker-key.pem", g_dir);
    bool tls = strcmp(transport, "tls") == 0;
    if (tls) {
        make_cert("worker");
        setenv("GPUPOOL_REMOTE_CA", cert, 1);
    }
    if (strcmp(transport, "unix") == 0)
        snprintf(addr, alen, "unix:%s/worker.sock", g_dir);
    else /* the worker picks a port and says which */
        snprintf(addr, alen, "%s:127.0.0.1:0", tls ? "tls" : "tcp");
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        const char *sim = getenv("GPUPOOL_SIM_LIB_DIR");
        if (sim)
            setenv("LD_LIBRARY_PATH", sim, 1);
        setenv("GPUPOOL_SIM_STATE", state, 1);
        if (!freopen(log, "w", stderr))
            _exit(126);
        if (tls)
            execl(getenv("GPUPOOL_BIN"), "gpupool", "worker", "--listen", addr, "--token-file", tokens,
                  "--cache-dir", cache, "--tls-cert", cert, "--tls-key", key, (char *)NULL);
        else
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

/* cuInit of a child process (a failed cuInit is final in a process) with GPUPOOL_REMOTE=addr and the given
 * trusted certificate (NULL: none set); its answer, or -1. */
static int child_init(const char *addr, const char *ca, double *took)
{
    double t0 = now();
    pid_t p = fork();
    if (p == 0) {
        setenv("GPUPOOL_REMOTE", addr, 1);
        setenv("GPUPOOL_REMOTE_TOKEN", "right-token", 1);
        if (ca)
            setenv("GPUPOOL_REMOTE_CA", ca, 1);
        else
            unsetenv("GPUPOOL_REMOTE_CA");
        int count = 0;
        CUresult r = cuInit(0);
        if (r == CUDA_SUCCESS && (cuDeviceGetCount(&count) != CUDA_SUCCESS || count < 1))
            r = CUDA_ERROR_UNKNOWN;
        _exit(r > 250 ? 250 : (int)r);
    }
    int st = 0;
    waitpid(p, &st, 0);
    *took = now() - t0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int tls_refused(void)
{
    char tls_addr[128], tcp_addr[128];
    pid_t tls_pg = start_worker("tls", tls_addr, sizeof tls_addr);
    char worker_cert[128], other_cert[128];
    snprintf(worker_cert, sizeof worker_cert, "%s/worker-cert.pem", g_dir);
    make_cert("other");
    snprintf(other_cert, sizeof other_cert, "%s/other-cert.pem", g_dir);
    char tls_dir[64];
    snprintf(tls_dir, sizeof tls_dir, "%s", g_dir);
    pid_t tcp_pg = start_worker("tcp", tcp_addr, sizeof tcp_addr);
    char tcp_as_tls[140], tls_as_tcp[140];
    snprintf(tcp_as_tls, sizeof tcp_as_tls, "tls:%s", tcp_addr + 4);
    snprintf(tls_as_tcp, sizeof tls_as_tcp, "tcp:%s", tls_addr + 4);
    double took;
    int r = child_init(tls_addr, worker_cert, &took);
    printf("tls with the worker's certificate trusted: cuInit answered %d in %.2f s\n", r, took);
    EXPECT(r == CUDA_SUCCESS, "cuInit over TLS answered %d", r);
    r = child_init(tls_addr, other_cert, &took);
    printf("tls with another certificate trusted: cuInit answered %d in %.2f s\n", r, took);
    EXPECT(r == CUDA_ERROR_NO_DEVICE && took < 3, "an untrusted worker: cuInit answered %d in %.1f s", r,
           took);
    r = child_init(tls_addr, NULL, &took);
    printf("tls with the system's authorities only: cuInit answered %d in %.2f s\n", r, took);
    EXPECT(r == CUDA_ERROR_NO_DEVICE && took < 3, "a self-signed worker: cuInit answered %d in %.1f s", r,
           took);
    r = child_init(tls_as_tcp, NULL, &took);
    printf("plain tcp at the TLS worker: cuInit answered %d in %.2f s\n", r, took);
    EXPECT(r == CUDA_ERROR_NO_DEVICE && took < 8, "plain at TLS: cuInit answered %d in %.1f s", r, took);
    r = child_init(tcp_as_tls, worker_cert, &took);
    printf("tls at the plain tcp worker: cuInit answered %d in %.2f s\n", r, took);
    EXPECT(r == CUDA_ERROR_NO_DEVICE && took < 8, "TLS at plain: cuInit answered %d in %.1f s", r, took);
    r = child_init(tls_addr, worker_cert, &took);
    EXPECT(r == CUDA_SUCCESS, "after all that, cuInit over TLS answered %d", r);
    kill(-tcp_pg, SIGTERM);
    waitpid(tcp_pg, NULL, 0);
    cleanup();
    snprintf(g_dir, sizeof g_dir, "%s", tls_dir);
    kill(-tls_pg, SIGTERM);
    waitpid(tls_pg, NULL, 0);
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
    if (argc >= 2 && strcmp(argv[1], "tls-refused") == 0)
        return tls_refused();
    fprintf(stderr,
            "usage: remote_fault worker-killed unix|tcp|tls | wrong-token | unconfigured | tls-refused\n");
    return 2;
}

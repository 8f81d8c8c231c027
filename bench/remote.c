/* remote.c - GPU-over-IP on loopback, in one run: (a) what the machine's sockets allow (a raw TCP ping-pong
 * round trip and a raw one-way stream's bandwidth: the limit); (b) a synchronous CUDA call's round trip
 * through gpupool; (c) asynchronous launches per second; (d) host<->device copy bandwidth from 4 KiB to 1
 * GiB, against the raw stream. Targets (issue 6): (b) <= 1.5 x (a); (c) >= 200,000/s; (d) >= 80% of raw from
 * 1 MiB up.
 *
 * Run with the loader finding libgpupool-client.so as libcuda.so.1 (scripts/bench.sh: LD_LIBRARY_PATH=
 * build/lib/remote). This program starts the worker itself: GPUPOOL_BIN (the gpupool binary) and
 * GPUPOOL_BENCH_WORKER_LIBS (the LD_LIBRARY_PATH the worker needs: the simulated driver's directory, or
 * nothing on a GPU host).
 *
 *   bench_remote [MAX_COPY_MIB]   (default 1024)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

extern const char gp_sample_ptx[];

static int listen_lo(int *port)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        perror("bench_remote: listen");
        exit(1);
    }
    *port = ntohs(a.sin_port);
    return l;
}

static int connect_lo(int port)
{
    int c = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bench_remote: connect");
        exit(1);
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

static void full(int fd, void *p, size_t n, int writing)
{
    char *c = p;
    while (n) {
        ssize_t r = writing ? write(fd, c, n) : read(fd, c, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            exit(2);
        }
        c += r;
        n -= (size_t)r;
    }
}

/* (a) the raw socket: a 32-byte ping-pong (a small request and reply, like a call's), and a one-way stream.
 */
static void raw_tcp(double *rtt_us, double *bw_mibs, size_t stream_bytes)
{
    int port, l = listen_lo(&port);
    pid_t pid = fork();
    if (pid == 0) {
        int s = accept(l, NULL, NULL), one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char m[32];
        uint32_t n;
        full(s, &n, 4, 0);
        for (uint32_t i = 0; i < n; i++) {
            full(s, m, sizeof m, 0);
            full(s, m, sizeof m, 1);
        }
        char *buf = malloc(4u << 20); /* as the worker reads: 4 MiB pieces */
        memset(buf, 0, 4u << 20);
        for (int round = 0; round < 3; round++) {
            size_t left = stream_bytes / 3;
            while (left) {
                ssize_t r = read(s, buf, left < (4u << 20) ? left : (4u << 20));
                if (r <= 0)
                    _exit(1);
                left -= (size_t)r;
            }
            full(s, m, 1, 1);
        }
        _exit(0);
    }
    int c = connect_lo(port);
    uint32_t n = 20000;
    char m[32] = {0};
    full(c, &n, 4, 1);
    double t0 = bench_now();
    for (uint32_t i = 0; i < n; i++) {
        full(c, m, sizeof m, 1);
        full(c, m, sizeof m, 0);
    }
    *rtt_us = (bench_now() - t0) / n * 1e6;
    char *buf = malloc(4u << 20);
    memset(buf, 0x5a, 4u << 20);
    /* the best of three one-way streams of stream_bytes/3 each */
    *bw_mibs = 0;
    for (int round = 0; round < 3; round++) {
        t0 = bench_now();
        for (size_t left = stream_bytes / 3; left;) {
            size_t k = left < (4u << 20) ? left : (4u << 20);
            full(c, buf, k, 1);
            left -= k;
        }
        full(c, m, 1, 0);
        double bw = (double)(stream_bytes / 3) / (bench_now() - t0) / (1 << 20);
        if (bw > *bw_mibs)
            *bw_mibs = bw;
    }
    free(buf);
    close(c);
    close(l);
    waitpid(pid, NULL, 0);
}

static pid_t start_worker(char *addr, size_t alen)
{
    const char *bin = getenv("GPUPOOL_BIN");
    if (!bin) {
        fprintf(stderr, "bench_remote: set GPUPOOL_BIN to the gpupool binary (scripts/bench.sh does)\n");
        exit(1);
    }
    char dir[] = "/tmp/gpupool-bench-remote-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char tokens[128], cache[128];
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    FILE *f = fopen(tokens, "w");
    fputs("bench-token\n", f);
    fclose(f);
    int port, l = listen_lo(&port);
    close(l); /* a free port, for the worker to take */
    snprintf(addr, alen, "tcp:127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        const char *libs = getenv("GPUPOOL_BENCH_WORKER_LIBS");
        if (libs && *libs)
            setenv("LD_LIBRARY_PATH", libs, 1);
        else
            unsetenv("LD_LIBRARY_PATH");
        execl(bin, "gpupool", "worker", "--listen", addr, "--token-file", tokens, "--cache-dir", cache,
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* until it listens */
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(c, (struct sockaddr *)&a, sizeof a) == 0;
        close(c);
        if (ok)
            break;
        usleep(50000);
    }
    setenv("GPUPOOL_REMOTE", addr, 1);
    setenv("GPUPOOL_REMOTE_TOKEN", "bench-token", 1);
    return pid;
}

int main(int argc, char **argv)
{
    size_t max_mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    if (max_mib < 1)
        max_mib = 1;
    double rtt, raw_bw;
    raw_tcp(&rtt, &raw_bw, (size_t)1 << 30);

    char addr[64];
    pid_t worker = start_worker(addr, sizeof addr);
    CUdevice dev;
    CUcontext ctx;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    bench_header("remote (gpupool worker over TCP loopback)");
    printf("# worker %s\n", addr);

    /* (b) a synchronous call with nothing to do: a round trip through client, worker and driver */
    int n = 20000;
    for (int i = 0; i < 100; i++)
        BCK(cuCtxSynchronize());
    double t0 = bench_now();
    for (int i = 0; i < n; i++)
        BCK(cuCtxSynchronize());
    double call_us = (bench_now() - t0) / n * 1e6;
    bench_line("(b) sync call round trip (cuCtxSynchronize)", call_us, rtt, "us",
               "(a) raw TCP ping-pong, 32 B");

    /* (c) asynchronous launches of an empty kernel (the simulated device takes 1 us per launch) */
    CUmodule mod;
    CUfunction spin;
    BCK(cuModuleLoadData(&mod, gp_sample_ptx));
    BCK(cuModuleGetFunction(&spin, mod, "spin_ns"));
    uint64_t zero = 0;
    void *args[] = {&zero};
    int launches = 500000;
    BCK(cuCtxSynchronize());
    t0 = bench_now();
    for (int i = 0; i < launches; i++)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    double issue = bench_now() - t0;
    BCK(cuCtxSynchronize());
    double total = bench_now() - t0;
    bench_line("(c) async launches/s (issue rate)", launches / issue, 200000, "/s", "the target, 200,000/s");
    bench_line("(c) launches/s, until all completed", launches / total, 200000, "/s",
               "the target, 200,000/s");

    /* (d) copies */
    size_t max = max_mib << 20;
    char *host = malloc(max);
    memset(host, 0x5a, max);
    CUdeviceptr d;
    BCK(cuMemAlloc(&d, max));
    printf("# copies: MiB/s against the raw one-way stream (%.0f MiB/s)\n", raw_bw);
    for (size_t sz = 4096; sz <= max; sz *= 4) {
        int reps = sz < (1u << 20) ? 2000 : sz < (64u << 20) ? 20 : 2;
        BCK(cuMemcpyHtoD(d, host, sz));
        t0 = bench_now();
        for (int i = 0; i < reps; i++)
            BCK(cuMemcpyHtoD(d, host, sz));
        double h2d = (double)sz * reps / (bench_now() - t0) / (1 << 20);
        t0 = bench_now();
        for (int i = 0; i < reps; i++)
            BCK(cuMemcpyDtoH(host, d, sz));
        double d2h = (double)sz * reps / (bench_now() - t0) / (1 << 20);
        char m[64];
        snprintf(m, sizeof m, "(d) HtoD %zu KiB", sz >> 10);
        bench_line(m, h2d, raw_bw, "MiB/s", "(a) raw TCP stream");
        snprintf(m, sizeof m, "(d) DtoH %zu KiB", sz >> 10);
        bench_line(m, d2h, raw_bw, "MiB/s", "(a) raw TCP stream");
    }
    BCK(cuMemFree(d));
    free(host);
    cuCtxDestroy(ctx);
    kill(worker, SIGTERM);
    waitpid(worker, NULL, 0);
    return 0;
}

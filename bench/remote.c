/* remote.c - GPU-over-IP on loopback, in one run: (a) what the machine's sockets allow (a raw TCP ping-pong
 * round trip, and the same transfers as the copies: the limit); (b) a synchronous CUDA call's round trip
 * through gpupool; (c) asynchronous launches per second; (d) host<->device copy bandwidth from 4 KiB to 1
 * GiB, against the same transfer over the raw socket. Targets (issue 6): (b) <= 1.5 x (a); (c) >= 200,000/s;
 * (d) >= 80% of raw from 1 MiB up.
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
#include <sys/uio.h>
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
        ssize_t r =
            writing ? write(fd, c, n) : recv(fd, c, n, MSG_WAITALL); /* as the worker and client read */
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            exit(2);
        }
        c += r;
        n -= (size_t)r;
    }
}

/* (a) the raw socket: a server process on loopback that does with plain reads and writes what the worker
 * does for a call and a copy, minus the GPU: a 32-byte ping-pong; receive N bytes (in reads of up to 4 MiB,
 * which this machine's loopback moves faster than smaller ones) and answer one byte; send N bytes on request
 * (in writes of 4 MiB). */
enum { RAW_PING = 1, RAW_SINK = 2, RAW_SOURCE = 3, RAW_END = 4 };
#define RAW_PIECE (4u << 20)

static int g_raw = -1;
static pid_t g_raw_pid;

static void raw_start(void)
{
    int port, l = listen_lo(&port);
    pid_t pid = fork();
    if (pid == 0) {
        int s = accept(l, NULL, NULL), one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char *buf = malloc(RAW_PIECE);
        memset(buf, 0, RAW_PIECE);
        for (;;) {
            uint64_t cmd[2];
            full(s, cmd, sizeof cmd, 0);
            if (cmd[0] == RAW_PING) {
                for (uint64_t i = 0; i < cmd[1]; i++) {
                    full(s, buf, 32, 0);
                    full(s, buf, 32, 1);
                }
            } else if (cmd[0] == RAW_SINK) {
                for (uint64_t left = cmd[1]; left;) {
                    ssize_t r = recv(s, buf, left < RAW_PIECE ? left : RAW_PIECE, MSG_WAITALL);
                    if (r <= 0)
                        _exit(1);
                    left -= (uint64_t)r;
                }
                full(s, buf, 1, 1);
            } else if (cmd[0] == RAW_SOURCE) {
                for (uint64_t left = cmd[1]; left;) {
                    size_t k = left < RAW_PIECE ? (size_t)left : RAW_PIECE;
                    full(s, buf, k, 1);
                    left -= k;
                }
            } else {
                _exit(0);
            }
        }
    }
    close(l);
    g_raw_pid = pid;
    g_raw = connect_lo(port);
}

static void raw_stop(void)
{
    uint64_t cmd[2] = {RAW_END, 0};
    full(g_raw, cmd, sizeof cmd, 1);
    close(g_raw);
    waitpid(g_raw_pid, NULL, 0);
}

/* The round trip of a 32-byte ping-pong, in microseconds. */
static double raw_rtt_us(uint32_t n)
{
    uint64_t cmd[2] = {RAW_PING, n};
    full(g_raw, cmd, sizeof cmd, 1);
    char m[32] = {0};
    double t0 = bench_now();
    for (uint32_t i = 0; i < n; i++) {
        full(g_raw, m, sizeof m, 1);
        full(g_raw, m, sizeof m, 0);
    }
    return (bench_now() - t0) / n * 1e6;
}

/* One transfer of n bytes of buf (the program's memory, as a copy's) to the server (answered by a byte once
 * all arrived) or from it into buf. */
static void raw_transfer(char *buf, size_t n, int to_server)
{
    uint64_t cmd[2] = {to_server ? RAW_SINK : RAW_SOURCE, n};
    size_t left = n;
    if (to_server && n) { /* the command and the first piece in one write, as a frame's header and payload */
        size_t k = left < RAW_PIECE ? left : RAW_PIECE;
        struct iovec iov[2] = {{cmd, sizeof cmd}, {buf, k}};
        ssize_t w = writev(g_raw, iov, 2);
        if (w < (ssize_t)sizeof cmd)
            exit(2);
        size_t sent = (size_t)w - sizeof cmd;
        if (sent < k)
            full(g_raw, buf + sent, k - sent, 1);
        left -= k;
        buf += k;
    } else {
        full(g_raw, cmd, sizeof cmd, 1);
    }
    while (left) {
        size_t k = left < RAW_PIECE ? left : RAW_PIECE;
        full(g_raw, buf, k, to_server);
        left -= k;
        buf += k;
    }
    if (to_server)
        full(g_raw, cmd, 1, 0);
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double t[64];
    n = n > 64 ? 64 : n;
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* MiB/s of reps copies of sz bytes: through gpupool (dir 0 HtoD, 1 DtoH) or, with d == 0, raw transfers. */
static double copy_rate(CUdeviceptr d, char *host, size_t sz, int reps, int dtoh)
{
    double t0 = bench_now();
    for (int i = 0; i < reps; i++) {
        if (!d)
            raw_transfer(host, sz, !dtoh);
        else if (dtoh)
            BCK(cuMemcpyDtoH(host, d, sz));
        else
            BCK(cuMemcpyHtoD(d, host, sz));
    }
    return (double)sz * reps / (bench_now() - t0) / (1 << 20);
}

int main(int argc, char **argv)
{
    size_t max_mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    if (max_mib < 1)
        max_mib = 1;
    raw_start();
    raw_rtt_us(1000); /* warm */

    char addr[64];
    pid_t worker = start_worker(addr, sizeof addr);
    CUdevice dev;
    CUcontext ctx;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    bench_header("remote (gpupool worker over TCP loopback)");
    printf("# worker %s\n", addr);

    /* (b) a synchronous call with nothing to do: a round trip through client, worker and driver; the raw
     * ping-pong is measured right before, and the better of three alternations of each is kept */
    int n = 20000;
    for (int i = 0; i < 100; i++)
        BCK(cuCtxSynchronize());
    double rtt = 1e9, call_us = 1e9;
    for (int round = 0; round < 3; round++) {
        double r = raw_rtt_us((uint32_t)n);
        if (r < rtt)
            rtt = r;
        double t0 = bench_now();
        for (int i = 0; i < n; i++)
            BCK(cuCtxSynchronize());
        double c = (bench_now() - t0) / n * 1e6;
        if (c < call_us)
            call_us = c;
    }
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
    double t0 = bench_now();
    for (int i = 0; i < launches; i++)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    double issue = bench_now() - t0;
    BCK(cuCtxSynchronize());
    double total = bench_now() - t0;
    bench_line("(c) async launches/s (issue rate)", launches / issue, 200000, "/s", "the target, 200,000/s");
    bench_line("(c) launches/s, until all completed", launches / total, 200000, "/s",
               "the target, 200,000/s");

    /* (d) copies: each size through gpupool and as the same raw transfer, in ROUNDS back-to-back pairs (which
     * of the two goes first alternates); the line shows the medians of the rates and the median of the pairs'
     * ratios, since the loopback rate of this shared machine swings by half from one second to the next and
     * a pair shares its conditions */
    enum { ROUNDS = 9 };
    size_t max = max_mib << 20;
    char *host = malloc(max);
    memset(host, 0x5a, max);
    CUdeviceptr d;
    BCK(cuMemAlloc(&d, max));
    double stream_best = 0, big_ratio[2][64];
    int nbig = 0;
    printf("# copies: MiB/s against the same transfer over the raw socket (medians of %d pairs)\n", ROUNDS);
    for (size_t sz = 4096; sz <= max; sz *= 4) {
        /* each measurement moves at least 64 MiB (2000 copies of the small sizes), so that one scheduling
         * hiccup does not decide it */
        int reps = sz < (1u << 20) ? 2000 : sz < (64u << 20) ? (int)((64u << 20) / sz) : 2;
        BCK(cuMemcpyHtoD(d, host, sz));
        BCK(cuMemcpyDtoH(host, d, sz));
        double rate[2][2][ROUNDS], ratio[2][ROUNDS]; /* [dtoh][raw][round] */
        for (int round = 0; round < ROUNDS; round++)
            for (int dir = 0; dir < 2; dir++) {
                for (int k = 0; k < 2; k++) {
                    int raw = (round + k) % 2;
                    rate[dir][raw][round] = copy_rate(raw ? 0 : d, host, sz, reps, dir);
                }
                ratio[dir][round] = rate[dir][0][round] / rate[dir][1][round];
                if (rate[dir][1][round] > stream_best)
                    stream_best = rate[dir][1][round];
            }
        for (int dir = 0; dir < 2; dir++) {
            char m[64];
            snprintf(m, sizeof m, "(d) %s %zu KiB", dir ? "DtoH" : "HtoD", sz >> 10);
            double ours = median(rate[dir][0], ROUNDS), raw = median(rate[dir][1], ROUNDS);
            double q = median(ratio[dir], ROUNDS);
            bench_line_ratio(m, ours, raw, q, "MiB/s", "(a) raw TCP transfer, same size");
            if (sz >= (1u << 20) && nbig < 64)
                big_ratio[dir][nbig] = q;
        }
        if (sz >= (1u << 20) && nbig < 64)
            nbig++;
    }
    for (int dir = 0; dir < 2; dir++) {
        double lo = 1e9;
        for (int i = 0; i < nbig; i++)
            lo = big_ratio[dir][i] < lo ? big_ratio[dir][i] : lo;
        printf("# (d) %s from 1 MiB up: the lowest ratio is %.3f (target 0.8)\n", dir ? "DtoH" : "HtoD", lo);
    }
    printf("# the raw socket's best one-way rate in this run: %.0f MiB/s\n", stream_best);
    BCK(cuMemFree(d));
    free(host);
    cuCtxDestroy(ctx);
    raw_stop();
    kill(worker, SIGTERM);
    waitpid(worker, NULL, 0);
    return 0;
}

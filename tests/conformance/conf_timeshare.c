/* conf_timeshare.c - two processes on one device take turns: each gets about half of it, neither starves,
 * and NVML lists both as compute processes while they run.
 *
 * The parent sizes `burn` (4 x SM-count blocks of 256 threads) so one launch takes >= 20 ms, then re-executes
 * itself (/proc/self/exe child ITERS UPFD DOWNFD) as children that each time K launches: one alone (T_solo),
 * then two released together through pipes. Sharing, each must take >= 1.5 T_solo and <= 4 T_solo.
 */
#include "check.h"
#include "../../include/gpupool/nvml.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define K     10
#define MS_NS 1000000ull

/* ---- the child ------------------------------------------------------------------------------------- */

typedef struct burner {
    CUcontext ctx;
    CUmodule mod;
    CUfunction f;
    CUdeviceptr out;
    unsigned grid, block;
} burner;

static CUresult burner_open(burner *b)
{
    CUresult r = conf_context(&b->ctx);
    if (r == CUDA_SUCCESS)
        r = conf_module(&b->mod);
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&b->f, b->mod, "burn");
    CUdevice dev;
    int sms = 0;
    if (r == CUDA_SUCCESS)
        r = cuCtxGetDevice(&dev);
    if (r == CUDA_SUCCESS)
        r = cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    b->grid = 4u * (unsigned)sms;
    b->block = 256;
    if (r == CUDA_SUCCESS)
        r = cuMemAlloc(&b->out, (size_t)b->grid * b->block * 4);
    return r;
}

static CUresult burn(const burner *b, uint64_t iters)
{
    CUdeviceptr out = b->out;
    void *args[] = {&out, &iters};
    return cuLaunchKernel(b->f, b->grid, 1, 1, b->block, 1, 1, 0, NULL, args, NULL);
}

/* Sets up, reports 'R', waits for the go-ahead, times K launches, reports the nanoseconds, and stays
 * alive until the parent closes its pipe. */
static int child_main(uint64_t iters, int up, int down)
{
    burner b;
    CUresult r = burner_open(&b);
    if (r == CUDA_SUCCESS)
        r = burn(&b, iters); /* warm up: the first launch may carry one-time costs */
    if (r == CUDA_SUCCESS)
        r = cuCtxSynchronize();
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "child %d: setup: %s\n", (int)getpid(), conf_err_name(r));
        (void)!write(up, "F", 1);
        return 1;
    }
    (void)!write(up, "R", 1);
    char c;
    if (read(down, &c, 1) != 1)
        return 1;
    uint64_t t0 = conf_now_ns();
    for (int i = 0; i < K && r == CUDA_SUCCESS; i++)
        r = burn(&b, iters);
    if (r == CUDA_SUCCESS)
        r = cuCtxSynchronize();
    uint64_t ns = conf_now_ns() - t0;
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "child %d: burn: %s\n", (int)getpid(), conf_err_name(r));
        return 1;
    }
    (void)!write(up, &ns, sizeof ns);
    while (read(down, &c, 1) > 0) {
    }
    return 0;
}

/* ---- the parent ------------------------------------------------------------------------------------ */

typedef struct child {
    pid_t pid;
    int up, down;
} child;

static int spawn(uint64_t iters, child *out)
{
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(down, O_CLOEXEC) < 0) {
        close(up[0]);
        close(up[1]);
        return -1;
    }
    char it[32], upfd[16], downfd[16];
    snprintf(it, sizeof it, "%llu", (unsigned long long)iters);
    snprintf(upfd, sizeof upfd, "%d", up[1]);
    snprintf(downfd, sizeof downfd, "%d", down[0]);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        fcntl(up[1], F_SETFD, 0);
        fcntl(down[0], F_SETFD, 0);
        execl("/proc/self/exe", "conf_timeshare", "child", it, upfd, downfd, (char *)NULL);
        _exit(127);
    }
    close(up[1]);
    close(down[0]);
    if (pid < 0) {
        close(up[0]);
        close(down[1]);
        return -1;
    }
    *out = (child){pid, up[0], down[1]};
    return 0;
}

/* Reads exactly n bytes from fd, waiting up to 60 s in all. */
static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    uint64_t deadline = conf_now_ns() + 60000 * MS_NS;
    while (n > 0) {
        uint64_t now = conf_now_ns();
        if (now >= deadline)
            return -1;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int k = poll(&pf, 1, (int)((deadline - now) / MS_NS) + 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k != 1)
            return -1;
        ssize_t got = read(fd, p, n);
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static void reap(child *c, int n)
{
    for (int i = 0; i < n; i++) {
        close(c[i].down); /* lets the child exit */
        close(c[i].up);
        int status = 0;
        waitpid(c[i].pid, &status, 0);
        EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d ended with status 0x%x",
               (int)c[i].pid, status);
    }
}

static uint64_t g_iters;
static char g_bus_id[32];
static uint64_t g_solo_ns;

static void calibrate_burn_to_20ms_per_launch(void)
{
    burner b;
    CUevent start, end;
    CU(burner_open(&b));
    CU(cuDeviceGetPCIBusId(g_bus_id, sizeof g_bus_id, 0));
    CU(cuEventCreate(&start, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&end, CU_EVENT_DEFAULT));
    float ms = 0;
    uint64_t iters = 1024;
    for (; iters < (1ull << 40); iters *= 2) {
        CU(cuEventRecord(start, NULL));
        CU(burn(&b, iters));
        CU(cuEventRecord(end, NULL));
        CU(cuEventSynchronize(end));
        CU(cuEventElapsedTime(&ms, start, end));
        if (ms >= 20.0f)
            break;
    }
    EXPECT(ms >= 20.0f, "burn with %llu iterations still takes %.2f ms", (unsigned long long)iters,
           (double)ms);
    if (ms >= 20.0f)
        g_iters = iters;
    printf("     (burn: %llu iterations x %u blocks x %u threads = %.1f ms)\n", (unsigned long long)iters,
           b.grid, b.block, (double)ms);
    cuEventDestroy(start);
    cuEventDestroy(end);
    /* Leave the device to the children. */
    cuCtxDestroy(b.ctx);
}

/* Starts n children, releases them together, and collects their times; for two, checks NVML meanwhile. */
static int run_children(int n, uint64_t *ns)
{
    child c[2];
    int started = 0;
    for (; started < n; started++)
        if (spawn(g_iters, &c[started]) < 0) {
            EXPECT(0, "cannot start a child: %s", strerror(errno));
            reap(c, started);
            return -1;
        }
    for (int i = 0; i < n; i++) {
        char ch = 0;
        if (read_full(c[i].up, &ch, 1) < 0 || ch != 'R') {
            EXPECT(0, "child %d did not get ready", (int)c[i].pid);
            for (int j = 0; j < n; j++)
                kill(c[j].pid, SIGKILL);
            reap(c, n);
            return -1;
        }
    }
    for (int i = 0; i < n; i++)
        (void)!write(c[i].down, "G", 1);

    if (n == 2) {
        /* Both children hold a context until the parent closes their pipes, so they are listed now. */
        nvmlDevice_t dev;
        nvmlProcessInfo_t infos[64];
        unsigned count = 64;
        nvmlReturn_t nr = nvmlInit();
        int inited = nr == NVML_SUCCESS;
        if (nr == NVML_SUCCESS)
            nr = nvmlDeviceGetHandleByPciBusId(g_bus_id, &dev);
        if (nr == NVML_SUCCESS)
            nr = nvmlDeviceGetComputeRunningProcesses(dev, &count, infos);
        EXPECT(nr == NVML_SUCCESS, "NVML returned %d", (int)nr);
        if (nr == NVML_SUCCESS)
            for (int i = 0; i < n; i++) {
                int listed = 0;
                for (unsigned k = 0; k < count; k++)
                    listed |= infos[k].pid == (unsigned)c[i].pid;
                EXPECT(listed, "child %d is not among the %u compute processes NVML lists", (int)c[i].pid,
                       count);
            }
        if (inited)
            nvmlShutdown();
    }

    int ok = 0;
    for (int i = 0; i < n; i++) {
        if (read_full(c[i].up, &ns[i], sizeof ns[i]) < 0) {
            EXPECT(0, "child %d reported no time", (int)c[i].pid);
            ok = -1;
        }
    }
    reap(c, n);
    return ok;
}

static void one_process_alone_sets_the_baseline(void)
{
    if (g_iters == 0) {
        EXPECT(0, "no calibration");
        return;
    }
    uint64_t ns[1];
    if (run_children(1, ns) < 0)
        return;
    g_solo_ns = ns[0];
    EXPECT(g_solo_ns > 0, "no time measured");
    printf("     (alone: %.1f ms)\n", (double)g_solo_ns / 1e6);
}

static void two_processes_share_the_device_and_neither_starves(void)
{
    if (g_solo_ns == 0) {
        EXPECT(0, "no baseline");
        return;
    }
    uint64_t ns[2];
    if (run_children(2, ns) < 0)
        return;
    for (int i = 0; i < 2; i++) {
        double ratio = (double)ns[i] / (double)g_solo_ns;
        printf("     (child %d of 2: %.1f ms, %.2f x alone)\n", i + 1, (double)ns[i] / 1e6, ratio);
        EXPECT(ratio >= 1.5, "child %d took %.2f x its time alone: the device was not shared", i + 1, ratio);
        EXPECT(ratio <= 4.0, "child %d took %.2f x its time alone: it starved", i + 1, ratio);
    }
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "child") == 0)
        return child_main(strtoull(argv[2], NULL, 10), atoi(argv[3]), atoi(argv[4]));
    signal(SIGPIPE, SIG_IGN);
    RUN(calibrate_burn_to_20ms_per_launch);
    RUN(one_process_alone_sets_the_baseline);
    RUN(two_processes_share_the_device_and_neither_starves);
    CONF_EXIT();
}

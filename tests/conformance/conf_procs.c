/* conf_procs.c - device memory is accounted across processes and reclaimed when a process goes away.
 *
 * The program re-executes itself (/proc/self/exe child MODE UPFD DOWNFD) as a child with its own context
 * that allocates and touches 1 GiB, reports through a pipe and then either waits to be killed (SIGKILL) or
 * exits normally without freeing. The parent, with a context of its own, sees cuMemGetInfo's free memory
 * drop by at least 1 GiB and come back (within 64 MiB) no later than 10 s after the child is gone.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define GIB   (1ull << 30)
#define SLACK (64ull << 20)

/* ---- the child ------------------------------------------------------------------------------------- */

static int child_main(const char *mode, int up, int down)
{
    CUcontext ctx;
    CUdeviceptr p;
    CUresult r = conf_context(&ctx);
    if (r == CUDA_SUCCESS)
        r = cuMemAlloc(&p, GIB);
    if (r == CUDA_SUCCESS)
        r = cuMemsetD8(p, 0x5A, GIB);
    if (r == CUDA_SUCCESS)
        r = cuCtxSynchronize();
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "child %d: %s\n", (int)getpid(), conf_err_name(r));
        (void)!write(up, "F", 1);
        return 1;
    }
    (void)!write(up, "R", 1);
    if (strcmp(mode, "hold") == 0) {
        sleep(60); /* the parent kills us long before; never wait forever */
        return 2;
    }
    char c;
    (void)!read(down, &c, 1); /* until the parent says so (or goes away) */
    return 0;                 /* exit without freeing the allocation or destroying the context */
}

/* ---- the parent ------------------------------------------------------------------------------------ */

typedef struct child {
    pid_t pid;
    int up;   /* read end: the child's report */
    int down; /* write end: the parent's go-ahead */
} child;

static int spawn(const char *mode, child *out)
{
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(down, O_CLOEXEC) < 0) {
        close(up[0]);
        close(up[1]);
        return -1;
    }
    char upfd[16], downfd[16];
    snprintf(upfd, sizeof upfd, "%d", up[1]);
    snprintf(downfd, sizeof downfd, "%d", down[0]);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec: the parent has CUDA threads. */
        fcntl(up[1], F_SETFD, 0);
        fcntl(down[0], F_SETFD, 0);
        execl("/proc/self/exe", "conf_procs", "child", mode, upfd, downfd, (char *)NULL);
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

/* Waits up to 60 s for the child's report; true if it is 'R' (ready). */
static int child_ready(const child *c)
{
    struct pollfd pf = {.fd = c->up, .events = POLLIN};
    int n;
    do
        n = poll(&pf, 1, 60000);
    while (n < 0 && errno == EINTR);
    char ch = 0;
    return n == 1 && read(c->up, &ch, 1) == 1 && ch == 'R';
}

static void close_child(child *c)
{
    close(c->up);
    close(c->down);
}

static size_t free_now(void)
{
    size_t f = 0, t = 0;
    CUresult r = cuMemGetInfo(&f, &t);
    EXPECT(r == CUDA_SUCCESS, "cuMemGetInfo returned %s", conf_err_name(r));
    return f;
}

/* Polls free memory every 50 ms for up to 10 s until it is back within SLACK of `before`. */
static void expect_reclaimed(size_t before, const char *how)
{
    uint64_t t0 = conf_now_ns();
    size_t f = free_now();
    while (f + SLACK < before && conf_now_ns() - t0 < 10000000000ull) {
        usleep(50000);
        f = free_now();
    }
    EXPECT(f + SLACK >= before, "%s: free memory %zu MiB, %zu MiB before the child, 10 s after it went away",
           how, f >> 20, before >> 20);
}

/* Starts a child of `mode`, checks its 1 GiB shows in free memory, and returns free memory before it. */
static int start_and_see_allocation(const char *mode, child *c, size_t *before)
{
    *before = free_now();
    if (spawn(mode, c) < 0) {
        EXPECT(0, "cannot start a child: %s", strerror(errno));
        return -1;
    }
    if (!child_ready(c)) {
        EXPECT(0, "the child did not allocate its 1 GiB");
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        close_child(c);
        return -1;
    }
    size_t during = free_now();
    EXPECT(during + GIB <= *before, "free memory went from %zu MiB to %zu MiB while a child held 1 GiB",
           *before >> 20, during >> 20);
    return 0;
}

static void killed_childs_memory_is_reclaimed(void)
{
    child c;
    size_t before;
    if (start_and_see_allocation("hold", &c, &before) < 0)
        return;
    kill(c.pid, SIGKILL);
    int status = 0;
    waitpid(c.pid, &status, 0);
    close_child(&c);
    EXPECT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was not killed (status 0x%x)",
           status);
    expect_reclaimed(before, "killed child");
}

static void exited_childs_memory_is_reclaimed(void)
{
    child c;
    size_t before;
    if (start_and_see_allocation("exit", &c, &before) < 0)
        return;
    (void)!write(c.down, "x", 1);
    int status = 0;
    waitpid(c.pid, &status, 0);
    close_child(&c);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child did not exit normally (status 0x%x)",
           status);
    expect_reclaimed(before, "exited child");
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "child") == 0)
        return child_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    signal(SIGPIPE, SIG_IGN);
    CUcontext ctx;
    CUresult r = conf_context(&ctx);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: no context: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(exited_childs_memory_is_reclaimed);
    RUN(killed_childs_memory_is_reclaimed);
    cuCtxDestroy(ctx);
    CONF_EXIT();
}

/* test_vgpu.c - libgpupool-vgpu.so on the simulated GPU: VRAM limits to the byte on every allocation path,
 * across processes and after SIGKILL; the virtualised cuMemGetInfo and NVML; GPUs outside the slot hidden;
 * missing or corrupt slots refused with a message; the compute limit, live share changes and freezing;
 * cuGetProcAddress and dlsym leading to the same enforcement.
 *
 * The test program is the parent: it creates slots (as the agent would) and runs itself as children with
 * LD_PRELOAD=libgpupool-vgpu.so and GPUPOOL_SLOT_DIR, in modes selected by argv[1]; a child reports by its
 * exit status (0 = every check held) and prints what failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../asan.h"

#include "common/slot.h"
#include "common/timeutil.h"
#include "gpupool/cuda.h"
#include "gpupool/nvml.h"

extern const char gp_sample_ptx[];

#define GIB (1ull << 30)
#define MIB (1ull << 20)

/* ---- child side: runs under the library ------------------------------------------------------------ */

static int child_failures;

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "child check failed at line %d: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            child_failures++;                                                        \
        }                                                                            \
    } while (0)

#define RC(call, expect) CHECK((call) == (expect), "%s", #call)

static CUcontext child_ctx(void)
{
    CUcontext c = NULL;
    if (cuInit(0) != CUDA_SUCCESS || cuCtxCreate(&c, NULL, 0, 0) != CUDA_SUCCESS) {
        fprintf(stderr, "child: no context\n");
        exit(3);
    }
    return c;
}

/* Free vGPU memory, as cuMemGetInfo says. */
static size_t vfree(void)
{
    size_t f = 0, t = 0;
    cuMemGetInfo(&f, &t);
    return f;
}

static int child_limits_every_path(void)
{
    child_ctx();
    size_t f0, total;
    RC(cuMemGetInfo(&f0, &total), CUDA_SUCCESS);
    CHECK(total == GIB, "total %zu", total);
    CHECK(f0 < total, "the context's own memory is charged (free %zu)", f0);
    size_t dt = 0;
    RC(cuDeviceTotalMem(&dt, 0), CUDA_SUCCESS);
    CHECK(dt == GIB, "cuDeviceTotalMem %zu", dt);

    /* cuMemAlloc: exactly what is left fits, one byte more does not */
    CUdeviceptr a, b;
    RC(cuMemAlloc(&a, f0 + 1), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemAlloc(&a, f0), CUDA_SUCCESS);
    CHECK(vfree() == 0, "free %zu after taking everything", vfree());
    RC(cuMemAlloc(&b, 1), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemFree(a), CUDA_SUCCESS);
    CHECK(vfree() == f0, "free %zu, was %zu", vfree(), f0);

    /* managed memory counts too */
    RC(cuMemAllocManaged(&a, f0 + 1, CU_MEM_ATTACH_GLOBAL), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemAllocManaged(&a, f0, CU_MEM_ATTACH_GLOBAL), CUDA_SUCCESS);
    RC(cuMemAlloc(&b, 1), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemFree(a), CUDA_SUCCESS);

    /* pitched memory is charged pitch x height */
    size_t pitch = 0;
    RC(cuMemAllocPitch(&a, &pitch, 1000, 1000, 4), CUDA_SUCCESS);
    CHECK(vfree() == f0 - pitch * 1000, "pitched: free %zu, pitch %zu", vfree(), pitch);
    RC(cuMemFree(a), CUDA_SUCCESS);
    RC(cuMemAllocPitch(&a, &pitch, f0 / 1000, 1001, 4), CUDA_ERROR_OUT_OF_MEMORY);

    /* stream-ordered allocation: charged for what the pool holds, until it trims at a synchronisation */
    CUstream s;
    RC(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    RC(cuMemAllocAsync(&a, f0 + 1, s), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemAllocAsync(&a, f0 / 2, s), CUDA_SUCCESS);
    RC(cuMemAllocAsync(&b, f0 - f0 / 2, s), CUDA_SUCCESS);
    CUdeviceptr c;
    RC(cuMemAlloc(&c, 1), CUDA_ERROR_OUT_OF_MEMORY);
    RC(cuMemFreeAsync(a, s), CUDA_SUCCESS);
    RC(cuMemFreeAsync(b, s), CUDA_SUCCESS);
    RC(cuStreamSynchronize(s), CUDA_SUCCESS);
    CHECK(vfree() == f0, "after the pool trimmed: free %zu, was %zu", vfree(), f0);
    RC(cuStreamDestroy(s), CUDA_SUCCESS);

    /* arrays: width x height x channels x element size */
    CUDA_ARRAY_DESCRIPTOR ad = {
        .Width = 1024, .Height = 1024, .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUarray arr;
    if (cuArrayCreate(&arr, &ad) == CUDA_SUCCESS) {
        CHECK(vfree() <= f0 - 16 * MIB, "an array of 16 MiB: free %zu", vfree());
        RC(cuArrayDestroy(arr), CUDA_SUCCESS);
        CHECK(vfree() == f0, "array destroyed: free %zu", vfree());
        ad.Width = 1u << 20;
        ad.Height = (unsigned)(f0 / (16u << 20)) + 1;
        RC(cuArrayCreate(&arr, &ad), CUDA_ERROR_OUT_OF_MEMORY);
    } else {
        fprintf(stderr, "note: the simulated GPU has no CUDA arrays yet; array path not checked\n");
    }

    /* VMM: physical memory from cuMemCreate */
    CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {CU_MEM_LOCATION_TYPE_DEVICE, 0}};
    size_t gran = 0;
    if (cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) == CUDA_SUCCESS) {
        CUmemGenericAllocationHandle h;
        size_t fit = f0 / gran * gran;
        RC(cuMemCreate(&h, fit + gran, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
        RC(cuMemCreate(&h, fit, &prop, 0), CUDA_SUCCESS);
        RC(cuMemAlloc(&c, f0 - fit + 1), CUDA_ERROR_OUT_OF_MEMORY);
        RC(cuMemRelease(h), CUDA_SUCCESS);
        CHECK(vfree() == f0, "VMM released: free %zu", vfree());
    } else {
        fprintf(stderr, "note: the simulated GPU has no VMM yet; cuMemCreate path not checked\n");
    }
    return child_failures ? 1 : 0;
}

/* Allocates `bytes`, reports on stdout, then waits (to be killed) or exits without freeing. */
static int child_hold(const char *bytes_s, const char *then)
{
    child_ctx();
    CUdeviceptr p;
    size_t bytes = strtoull(bytes_s, NULL, 10);
    CUresult rc = cuMemAlloc(&p, bytes);
    printf("%d\n", (int)rc);
    fflush(stdout);
    if (strcmp(then, "wait") == 0)
        pause();
    return 0;
}

/* Many processes allocating and freeing at once never exceed the limit together. */
static int child_churn(const char *seed_s)
{
    child_ctx();
    unsigned seed = (unsigned)atoi(seed_s);
    CUdeviceptr held[16];
    size_t sizes[16];
    int n = 0, refusals = 0;
    for (int i = 0; i < 400; i++) {
        if (n < 16 && (n == 0 || rand_r(&seed) % 2)) {
            size_t sz = (1 + rand_r(&seed) % 64) * MIB;
            CUresult rc = cuMemAlloc(&held[n], sz);
            if (rc == CUDA_SUCCESS)
                sizes[n++] = sz;
            else if (rc == CUDA_ERROR_OUT_OF_MEMORY)
                refusals++;
            else
                child_failures++;
        } else if (n > 0) {
            n--;
            RC(cuMemFree(held[n]), CUDA_SUCCESS);
        }
    }
    (void)sizes;
    printf("%d\n", refusals);
    return child_failures ? 1 : 0;
}

static int child_visible(const char *other_uuid)
{
    child_ctx();
    int n = -1;
    RC(cuDeviceGetCount(&n), CUDA_SUCCESS);
    CHECK(n == 1, "CUDA sees %d devices", n);
    RC(nvmlInit(), NVML_SUCCESS);
    unsigned nn = 0;
    RC(nvmlDeviceGetCount(&nn), NVML_SUCCESS);
    CHECK(nn == 1, "NVML sees %u devices", nn);
    nvmlDevice_t d;
    RC(nvmlDeviceGetHandleByUUID(other_uuid, &d), NVML_ERROR_NOT_FOUND);
    RC(nvmlDeviceGetHandleByIndex(1, &d), NVML_ERROR_INVALID_ARGUMENT);
    RC(nvmlDeviceGetHandleByIndex(0, &d), NVML_SUCCESS);
    char nv[96] = "", cu[64];
    nvmlDeviceGetUUID(d, nv, sizeof nv);
    CUuuid u;
    cuDeviceGetUuid(&u, 0);
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(cu, sizeof cu, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    CHECK(strcmp(nv, cu) == 0, "NVML's device 0 is %s, CUDA's %s", nv, cu);
    unsigned idx = 9;
    RC(nvmlDeviceGetIndex(d, &idx), NVML_SUCCESS);
    CHECK(idx == 0, "index %u", idx);
    /* the vGPU's memory, and only the workload's processes */
    CUdeviceptr p;
    RC(cuMemAlloc(&p, 256 * MIB), CUDA_SUCCESS);
    nvmlMemory_t m;
    RC(nvmlDeviceGetMemoryInfo(d, &m), NVML_SUCCESS);
    CHECK(m.total == GIB, "NVML total %llu", m.total);
    CHECK(m.used >= 256 * MIB && m.used + m.free == m.total, "NVML used %llu free %llu", m.used, m.free);
    nvmlMemory_v2_t m2 = {.version = nvmlMemory_v2};
    RC(nvmlDeviceGetMemoryInfo_v2(d, &m2), NVML_SUCCESS);
    CHECK(m2.total == GIB && m2.used == m.used, "NVML v2 total %llu used %llu", m2.total, m2.used);
    size_t f, t;
    cuMemGetInfo(&f, &t);
    CHECK(t == m.total && f == m.free, "CUDA free %zu total %zu, NVML free %llu", f, t, m.free);
    nvmlProcessInfo_t procs[8];
    unsigned np = 8;
    RC(nvmlDeviceGetComputeRunningProcesses(d, &np, procs), NVML_SUCCESS);
    CHECK(np == 1 && procs[0].pid == (unsigned)getpid(), "NVML lists %u processes", np);
    return child_failures ? 1 : 0;
}

static int child_init_only(void)
{
    CUresult rc = cuInit(0);
    printf("%d\n", (int)rc);
    nvmlReturn_t nr = nvmlInit();
    printf("%d\n", (int)nr);
    return 0;
}

/* Runs the busy kernel for `seconds`, printing the share of the device it achieved: kernels completed x
 * modelled kernel time / wall time. */
static double run_busy(double seconds, CUfunction spin)
{
    uint64_t kernel_ns = 2000000;
    void *args[] = {&kernel_ns};
    uint64_t t0 = gp_now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
    uint64_t done = 0;
    while (gp_now_ns() < end) {
        if (cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL) != CUDA_SUCCESS)
            return -1;
        done++;
    }
    cuCtxSynchronize();
    return (double)done * (double)kernel_ns / (double)(gp_now_ns() - t0);
}

static int child_compute(const char *seconds_s)
{
    child_ctx();
    CUmodule m;
    CUfunction spin;
    if (cuModuleLoadData(&m, gp_sample_ptx) || cuModuleGetFunction(&spin, m, "spin_ns"))
        return 3;
    run_busy(0.3, spin); /* warm-up */
    printf("%.4f\n", run_busy(atof(seconds_s), spin));
    return 0;
}

/* Graph launches are governed too: a graph of one 2 ms kernel, launched back to back. */
static int child_graph(const char *seconds_s)
{
    child_ctx();
    CUmodule m;
    CUfunction spin;
    if (cuModuleLoadData(&m, gp_sample_ptx) || cuModuleGetFunction(&spin, m, "spin_ns"))
        return 3;
    uint64_t kernel_ns = 2000000;
    void *args[] = {&kernel_ns};
    CUDA_KERNEL_NODE_PARAMS kp = {.func = spin,
                                  .gridDimX = 1,
                                  .gridDimY = 1,
                                  .gridDimZ = 1,
                                  .blockDimX = 32,
                                  .blockDimY = 1,
                                  .blockDimZ = 1,
                                  .kernelParams = args};
    CUgraph g;
    CUgraphNode node;
    CUgraphExec exec;
    if (cuGraphCreate(&g, 0) || cuGraphAddKernelNode(&node, g, NULL, 0, &kp) ||
        cuGraphInstantiate(&exec, g, 0))
        return 3;
    double seconds = atof(seconds_s);
    uint64_t t0 = gp_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), done = 0;
    while (gp_now_ns() < end) {
        if (cuGraphLaunch(exec, NULL) != CUDA_SUCCESS)
            return 4;
        done++;
    }
    cuCtxSynchronize();
    printf("%.4f\n", (double)done * (double)kernel_ns / (double)(gp_now_ns() - t0));
    return 0;
}

static int child_frozen_launch(void)
{
    child_ctx();
    CUmodule m;
    CUfunction spin;
    if (cuModuleLoadData(&m, gp_sample_ptx) || cuModuleGetFunction(&spin, m, "spin_ns"))
        return 3;
    uint64_t ns = 1000;
    void *args[] = {&ns};
    uint64_t t0 = gp_now_ns();
    CUresult rc = cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL);
    printf("%d %.3f\n", (int)rc, (double)(gp_now_ns() - t0) / 1e9);
    return 0;
}

/* The same limits through cuGetProcAddress and through dlsym on the driver. */
static int child_lookups(void)
{
    child_ctx();
    size_t f0 = vfree();
    CUresult (*alloc)(CUdeviceptr *, size_t) = NULL;
    RC(cuGetProcAddress("cuMemAlloc", (void **)&alloc, 12000, CU_GET_PROC_ADDRESS_DEFAULT, NULL),
       CUDA_SUCCESS);
    CUdeviceptr p;
    CHECK(alloc != NULL, "no pointer");
    if (alloc)
        RC(alloc(&p, f0 + 1), CUDA_ERROR_OUT_OF_MEMORY);
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    CUresult (*alloc2)(CUdeviceptr *, size_t) =
        h ? (CUresult(*)(CUdeviceptr *, size_t))dlsym(h, "cuMemAlloc_v2") : NULL;
    CHECK(alloc2 != NULL, "dlsym found nothing");
    if (alloc2) {
        RC(alloc2(&p, f0 + 1), CUDA_ERROR_OUT_OF_MEMORY);
        RC(alloc2(&p, f0), CUDA_SUCCESS);
    }
    CUresult (*getinfo)(size_t *, size_t *) = NULL;
    RC(cuGetProcAddress("cuMemGetInfo", (void **)&getinfo, 12000, CU_GET_PROC_ADDRESS_DEFAULT, NULL),
       CUDA_SUCCESS);
    size_t f = 1, t = 0;
    if (getinfo)
        getinfo(&f, &t);
    CHECK(t == GIB && f == 0, "through cuGetProcAddress: free %zu total %zu", f, t);
    return child_failures ? 1 : 0;
}

/* dlsym(RTLD_NEXT) keeps its meaning for an interposer loaded after the library (tests/vgpu/shim.c), and a
 * lookup from the program itself still leads to the library's replacements. */
extern int gp_shim_calls;

/* fork() while another thread is inside the library (allocating: it holds the library's lock around the
 * driver call) must not leave the child with a lock nobody will release. Each forked child calls into the
 * library's locked paths and must come back; the parent's books must still balance. */
static atomic_int g_fork_stop;
static void *alloc_loop(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_fork_stop)) {
        CUdeviceptr p;
        if (cuMemAlloc(&p, MIB) == CUDA_SUCCESS)
            cuMemFree(p);
    }
    return NULL;
}

static int child_fork(void)
{
    child_ctx();
    pthread_t t;
    CHECK(pthread_create(&t, NULL, alloc_loop, NULL) == 0, "pthread_create");
    for (int i = 0; i < 50; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(10); /* a deadlock shows as SIGALRM */
            CUdeviceptr p;
            cuMemAlloc(&p, MIB); /* whatever the driver answers in a forked child: it must answer */
            size_t f, tot;
            cuMemGetInfo(&f, &tot);
            unsigned n = 0;
            nvmlInit();
            nvmlDeviceGetCount(&n);
            _exit(0);
        }
        int st = 0;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/waitpid");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "forked child %d ended with status %#x (deadlocked?)", i,
              st);
    }
    atomic_store(&g_fork_stop, 1);
    pthread_join(t, NULL);
    size_t f = 0, tot = 0;
    RC(cuMemGetInfo(&f, &tot), CUDA_SUCCESS);
    printf("%zu %zu\n", f, tot);
    return child_failures ? 1 : 0;
}

/* Touches neither CUDA nor NVML: prints "ok" and how many lines of its maps name the library. */
static int child_nocuda(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, "gpupool-vgpu") != NULL;
    if (f)
        fclose(f);
    printf("ok\n%d\n", n);
    return 0;
}

static int child_rtld_next(void)
{
    child_ctx();
    pid_t a = getpid(), b = (pid_t)syscall(SYS_getpid);
    CHECK(a == b && gp_shim_calls > 0, "shim getpid %d, real %d, calls %d", (int)a, (int)b, gp_shim_calls);
    CUresult (*alloc)(CUdeviceptr *, size_t) =
        (CUresult(*)(CUdeviceptr *, size_t))dlsym(RTLD_NEXT, "cuMemAlloc_v2");
    CHECK(alloc != NULL, "RTLD_NEXT found no cuMemAlloc_v2");
    CUdeviceptr p;
    if (alloc)
        RC(alloc(&p, vfree() + 1), CUDA_ERROR_OUT_OF_MEMORY);
    return child_failures ? 1 : 0;
}

/* ---- parent side ---------------------------------------------------------------------------------- */

static char g_slots[256];
static char g_sim_state[256];

static void kill_kids(void);

static int setup(void **state)
{
    (void)state;
    snprintf(g_slots, sizeof g_slots, "/tmp/gpupool-vgpu-test-%d", (int)getpid());
    snprintf(g_sim_state, sizeof g_sim_state, "/dev/shm/gpupool-vgpu-test-%d", (int)getpid());
    setenv("GPUPOOL_SIM_STATE", g_sim_state, 1);
    setenv("GPUPOOL_SIM_GPUS", "2xH100-SXM-80GB", 1);
    return 0;
}

static void remove_slots(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_slots);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_slots);
}

/* After each test: no child survives a failed assertion (ctest would wait for its output forever). */
static int test_done(void **state)
{
    (void)state;
    kill_kids();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kill_kids();
    remove_slots();
    unlink(g_sim_state);
    return 0;
}

/* The UUID of simulated GPU i, as the simulation derives it from the spec. */
static void sim_uuid(int i, char *out, size_t len)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd,
             "%s sim devices | awk '$1==%d {for (i = 2; i <= NF; i++) if ($i ~ /^GPU-/) print $i}'",
             GPUPOOL_BIN, i);
    FILE *p = popen(cmd, "r");
    out[0] = '\0';
    if (p && fgets(out, (int)len, p))
        out[strcspn(out, "\n")] = '\0';
    if (p)
        pclose(p);
}

static void make_slot(int gpu, uint64_t vram, uint32_t limit_ppm)
{
    remove_slots();
    mkdir(g_slots, 0777);
    char uuid[64], path[300];
    sim_uuid(gpu, uuid, sizeof uuid);
    assert_int_equal(strncmp(uuid, "GPU-", 4), 0);
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    gp_slot_params p = {.index = 0,
                        .count = 1,
                        .gpu_uuid = uuid,
                        .workload = "test",
                        .namespace_ = "default",
                        .gpu_tflops = 989,
                        .vram_limit = vram,
                        .limit_ppm = limit_ppm,
                        .qos = GP_QOS_MEDIUM};
    gp_err err;
    if (gp_slot_create(path, &p, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Children still running; a failed assertion leaves some behind, and teardown must not. */
static pid_t g_kids[64];
static int g_nkids;

static void kill_kids(void)
{
    for (int i = 0; i < g_nkids; i++)
        if (g_kids[i] > 0 && kill(g_kids[i], SIGKILL) == 0)
            waitpid(g_kids[i], NULL, 0);
    g_nkids = 0;
}

/* Starts this program as a child under the library; its stdout comes back through *out_fd if asked. */
static pid_t spawn(const char *mode, const char *arg, const char *extra_env, int *out_fd)
{
    int fds[2];
    if (out_fd)
        assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd) {
            dup2(fds[1], 1);
            close(fds[0]);
        }
        setenv("LD_PRELOAD", GP_VGPU_LIB, 1);
        setenv("GPUPOOL_SLOT_DIR", g_slots, 1);
        if (extra_env) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", extra_env);
            char *eq = strchr(buf, '=');
            if (eq) {
                *eq = '\0';
                setenv(buf, eq + 1, 1);
            }
        }
        execl("/proc/self/exe", "test_vgpu", mode, arg ? arg : "", (char *)NULL);
        _exit(127);
    }
    if (out_fd) {
        close(fds[1]);
        *out_fd = fds[0];
    }
    if (g_nkids < 64)
        g_kids[g_nkids++] = pid;
    return pid;
}

static int wait_status(pid_t pid)
{
    int st;
    waitpid(pid, &st, 0);
    for (int i = 0; i < g_nkids; i++)
        if (g_kids[i] == pid)
            g_kids[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static double read_double(int fd)
{
    char buf[128] = "";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    return atof(buf);
}

static int run(const char *mode, const char *arg, const char *extra_env)
{
    return wait_status(spawn(mode, arg, extra_env, NULL));
}

static void vram_limit_holds_to_the_byte_on_every_path(void **state)
{
    (void)state;
    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    assert_int_equal(run("limits", NULL, NULL), 0);
}

static uint64_t slot_used(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    gp_slot_handle h;
    gp_err err;
    if (gp_slot_open(path, &h, &err) < 0)
        fail_msg("%s", err.msg);
    gp_proctab t = gp_slot_proctab(&h);
    gp_proctab_reap(&t, -1);
    uint64_t used = gp_slot_vram_used(h.s);
    gp_slot_close(&h);
    return used;
}

static void processes_sharing_a_slot_never_exceed_it_together(void **state)
{
    (void)state;
    make_slot(0, 2 * GIB, GP_SLOT_FULL_PPM);
    int fd;
    pid_t a = spawn("hold", "1073741824", NULL, &fd); /* 1 GiB, held */
    assert_int_equal((int)read_double(fd), CUDA_SUCCESS);
    pid_t b = spawn("hold", "1073741824", "X=1", &fd); /* another GiB no longer fits beside two contexts */
    assert_int_equal((int)read_double(fd), CUDA_ERROR_OUT_OF_MEMORY);
    assert_true(slot_used() <= 2 * GIB);
    kill(a, SIGKILL);
    kill(b, SIGKILL);
    wait_status(a);
    wait_status(b);
    /* and many at once, allocating and freeing: six contexts (3 GiB) and up to 6 GiB more wanted in 8 GiB */
    make_slot(0, 8 * GIB, GP_SLOT_FULL_PPM);
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        char seed[16];
        snprintf(seed, sizeof seed, "%d", i + 1);
        kids[i] = spawn("churn", seed, NULL, NULL);
    }
    uint64_t peak = 0;
    for (int k = 0; k < 200; k++) {
        uint64_t u = slot_used();
        peak = u > peak ? u : peak;
        gp_sleep_ns(5000000);
    }
    for (int i = 0; i < 6; i++)
        assert_int_equal(wait_status(kids[i]), 0);
    assert_true(peak <= 8 * GIB);
    assert_int_equal(slot_used(), 0);
}

static void killed_process_memory_comes_back(void **state)
{
    (void)state;
    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    int fd;
    pid_t a = spawn("hold", "268435456", NULL, &fd);
    assert_int_equal((int)read_double(fd), CUDA_SUCCESS);
    assert_true(slot_used() >= 256 * MIB);
    kill(a, SIGKILL);
    wait_status(a);
    assert_int_equal(slot_used(), 0);
    pid_t b = spawn("hold", "536870912", "X=1", &fd); /* exits without freeing */
    assert_int_equal((int)read_double(fd), CUDA_SUCCESS);
    wait_status(b);
    assert_int_equal(slot_used(), 0);
}

static void only_the_slots_gpus_are_visible_and_nvml_shows_the_vgpu(void **state)
{
    (void)state;
    make_slot(1, GIB, GP_SLOT_FULL_PPM);
    char other[64];
    sim_uuid(0, other, sizeof other);
    assert_int_equal(run("visible", other, NULL), 0);
}

/* Runs a child that only initialises, capturing its stderr. */
static void init_child(const char *extra_env, int *cuda_rc, int *nvml_rc, char *err, size_t errlen)
{
    int out[2], e[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(e), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(e[1], 2);
        close(out[0]);
        close(e[0]);
        setenv("LD_PRELOAD", GP_VGPU_LIB, 1);
        if (extra_env && strncmp(extra_env, "GPUPOOL_SLOT_DIR=", 17) == 0)
            setenv("GPUPOOL_SLOT_DIR", extra_env + 17, 1);
        else
            setenv("GPUPOOL_SLOT_DIR", g_slots, 1);
        if (extra_env && strcmp(extra_env, "NOSLOT") == 0)
            unsetenv("GPUPOOL_SLOT_DIR");
        if (extra_env && strcmp(extra_env, "DISABLE") == 0) {
            unsetenv("GPUPOOL_SLOT_DIR");
            setenv("GPUPOOL_VGPU_DISABLE", "1", 1);
        }
        execl("/proc/self/exe", "test_vgpu", "init", "", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(e[1]);
    char buf[64] = "";
    ssize_t n = read(out[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    sscanf(buf, "%d %d", cuda_rc, nvml_rc);
    size_t off = 0;
    while (off < errlen - 1 && (n = read(e[0], err + off, errlen - 1 - off)) > 0)
        off += (size_t)n;
    err[off] = '\0';
    close(out[0]);
    close(e[0]);
    wait_status(pid);
}

static void missing_or_corrupt_slot_is_refused_with_a_message(void **state)
{
    (void)state;
    int c, nv;
    char err[2048];
    init_child("NOSLOT", &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_ERROR_NO_DEVICE);
    assert_int_equal(nv, NVML_ERROR_NO_PERMISSION);
    assert_non_null(strstr(err, "GPUPOOL_SLOT_DIR is not set"));

    init_child("GPUPOOL_SLOT_DIR=/nonexistent/slots", &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_ERROR_NO_DEVICE);
    assert_non_null(strstr(err, "/nonexistent/slots"));

    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    char path[300];
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    FILE *f = fopen(path, "r+");
    fseek(f, offsetof(gp_slot, gpu_tflops), SEEK_SET);
    fputc(0x7f, f); /* one byte of the identity */
    fclose(f);
    init_child(NULL, &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_ERROR_NO_DEVICE);
    assert_non_null(strstr(err, "corrupt"));

    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    assert_int_equal(truncate(path, 100), 0);
    init_child(NULL, &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_ERROR_NO_DEVICE);
    assert_non_null(strstr(err, "size is 100 bytes"));

    /* a slot for a GPU this host does not have */
    remove_slots();
    mkdir(g_slots, 0777);
    gp_slot_params p = {.count = 1,
                        .gpu_uuid = "GPU-00000000-0000-4000-8000-000000000000",
                        .workload = "w",
                        .gpu_tflops = 989,
                        .vram_limit = GIB,
                        .limit_ppm = GP_SLOT_FULL_PPM};
    gp_err e;
    assert_int_equal(gp_slot_create(path, &p, &e), 0);
    init_child(NULL, &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_ERROR_NO_DEVICE);
    assert_non_null(strstr(err, "not on this host"));

    init_child("DISABLE", &c, &nv, err, sizeof err);
    assert_int_equal(c, CUDA_SUCCESS);
    assert_int_equal(nv, NVML_SUCCESS);
    assert_non_null(strstr(err, "enforcement is OFF"));
}

static double share_with(uint32_t ppm, double seconds)
{
    char path[300];
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    int fd;
    char s[16];
    snprintf(s, sizeof s, "%.1f", seconds);
    pid_t pid = spawn("compute", s, NULL, &fd);
    (void)ppm;
    double share = read_double(fd);
    assert_int_equal(wait_status(pid), 0);
    return share;
}

static void compute_limit_holds_a_process_to_its_share(void **state)
{
    (void)state;
    make_slot(0, 4 * GIB, 250000); /* 25% */
    double limited = share_with(250000, 3.0);
    make_slot(0, 4 * GIB, GP_SLOT_FULL_PPM);
    double unlimited = share_with(GP_SLOT_FULL_PPM, 1.5);
    print_message("share at a 25%% limit: %.3f; unlimited: %.3f\n", limited, unlimited);
    assert_true(limited > 0.15 && limited < 0.35); /* accuracy is measured in bench/vgpu_accuracy */
    assert_true(unlimited > 0.9);
}

static void graph_launches_are_held_to_the_share(void **state)
{
    (void)state;
    make_slot(0, 4 * GIB, 250000); /* 25% */
    int fd;
    pid_t pid = spawn("graph", "3.0", NULL, &fd);
    double share = read_double(fd);
    assert_int_equal(wait_status(pid), 0);
    print_message("graph launches at a 25%% limit: %.3f\n", share);
    assert_true(share > 0.15 && share < 0.35);
}

static void share_changes_apply_while_running(void **state)
{
    (void)state;
    make_slot(0, 4 * GIB, 200000); /* 20% */
    int fd;
    pid_t pid = spawn("compute", "4.0", NULL, &fd);
    gp_sleep_ns(1500000000ull); /* 0.3 s warm-up plus about 1.2 s at 20% */
    char path[300];
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    gp_slot_handle h;
    gp_err err;
    assert_int_equal(gp_slot_open(path, &h, &err), 0);
    assert_int_equal(gp_slot_set_limits(h.s, 0, GP_SLOT_KEEP, 800000, &err), 0); /* now 80% */
    gp_slot_close(&h);
    double share = read_double(fd);
    assert_int_equal(wait_status(pid), 0);
    /* about 1.2 s at 20% then 2.8 s at 80%: about 0.62 over the 4 s */
    print_message("share over 4 s, 20%% then 80%%: %.3f\n", share);
    assert_true(share > 0.45 && share < 0.75);
}

static void frozen_slot_holds_launches_until_resumed(void **state)
{
    (void)state;
    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    char path[300];
    snprintf(path, sizeof path, "%s/gpu0.slot", g_slots);
    gp_slot_handle h;
    gp_err err;
    assert_int_equal(gp_slot_open(path, &h, &err), 0);
    atomic_store(&h.s->frozen, 1);
    int fd;
    pid_t pid = spawn("frozen", NULL, NULL, &fd);
    gp_sleep_ns(500000000ull);
    atomic_store(&h.s->frozen, 0);
    char buf[64] = "";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    int rc = -1;
    double waited = 0;
    sscanf(buf, "%d %lf", &rc, &waited);
    assert_int_equal(wait_status(pid), 0);
    assert_int_equal(rc, CUDA_SUCCESS);
    assert_true(waited >= 0.3); /* it waited for the resume */
    /* frozen for longer than the bound: the call fails instead of hanging */
    atomic_store(&h.s->frozen, 1);
    pid = spawn("frozen", NULL, "GPUPOOL_VGPU_FREEZE_TIMEOUT_S=1", &fd);
    n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    sscanf(buf, "%d %lf", &rc, &waited);
    assert_int_equal(wait_status(pid), 0);
    assert_int_equal(rc, CUDA_ERROR_TIMEOUT);
    assert_true(atomic_load(&h.s->frozen_waits) >= 2);
    gp_slot_close(&h);
}

static void fork_while_allocating_does_not_deadlock(void **state)
{
    (void)state;
    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    int fd;
    pid_t pid = spawn("fork", NULL, NULL, &fd);
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    assert_int_equal(wait_status(pid), 0);
    unsigned long long f = 0, tot = 0;
    assert_int_equal(sscanf(buf, "%llu %llu", &f, &tot), 2);
    assert_int_equal(tot, GIB); /* the parent still sees its vGPU */
    /* nothing is left charged once the loop stopped and the children are gone: only the context */
    if (f < GIB / 2)
        fail_msg("free %llu of %llu after the fork loop", f, tot);
    assert_true(slot_used() == 0); /* and all of it comes back at exit */
}

/* /etc/ld.so.preload puts the library into every process: one that never touches CUDA or NVML must not
 * notice it, with or without a slot. */
static void programs_without_cuda_do_not_notice_the_library(void **state)
{
    (void)state;
    int out[2], err[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        setenv("LD_PRELOAD", GP_VGPU_LIB, 1);
        unsetenv("GPUPOOL_SLOT_DIR");
#if GP_ASAN
        /* A sanitized library cannot load into an unsanitized program: run this (sanitized) one instead,
         * in a mode that touches neither CUDA nor NVML. */
        execl("/proc/self/exe", "test_vgpu", "nocuda", "", (char *)NULL);
#else
        execl("/bin/sh", "sh", "-c",
              "echo ok; ls /proc/self/maps >/dev/null && grep -c gpupool-vgpu /proc/self/maps", (char *)NULL);
#endif
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    char o[256] = "", e[256] = "";
    size_t no = 0, ne = 0;
    ssize_t n;
    while (no < sizeof o - 1 && (n = read(out[0], o + no, sizeof o - 1 - no)) > 0)
        no += (size_t)n;
    while (ne < sizeof e - 1 && (n = read(err[0], e + ne, sizeof e - 1 - ne)) > 0)
        ne += (size_t)n;
    o[no] = e[ne] = '\0';
    close(out[0]);
    close(err[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(strncmp(o, "ok\n", 3), 0);
    if (atoi(o + 3) < 1)
        fail_msg("the library was not loaded into grep: stdout %s", o);
    assert_string_equal(e, ""); /* and said nothing */
}

static void get_proc_address_and_dlsym_lead_to_the_same_limits(void **state)
{
    (void)state;
    make_slot(0, GIB, GP_SLOT_FULL_PPM);
    assert_int_equal(run("lookups", NULL, NULL), 0);
    assert_int_equal(run("rtldnext", NULL, NULL), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        const char *mode = argv[1], *arg = argc > 2 ? argv[2] : "";
        if (strcmp(mode, "limits") == 0)
            return child_limits_every_path();
        if (strcmp(mode, "hold") == 0)
            return child_hold(arg, getenv("X") ? "exit" : "wait");
        if (strcmp(mode, "churn") == 0)
            return child_churn(arg);
        if (strcmp(mode, "visible") == 0)
            return child_visible(arg);
        if (strcmp(mode, "init") == 0)
            return child_init_only();
        if (strcmp(mode, "compute") == 0)
            return child_compute(arg);
        if (strcmp(mode, "frozen") == 0)
            return child_frozen_launch();
        if (strcmp(mode, "graph") == 0)
            return child_graph(arg);
        if (strcmp(mode, "rtldnext") == 0)
            return child_rtld_next();
        if (strcmp(mode, "lookups") == 0)
            return child_lookups();
        if (strcmp(mode, "fork") == 0)
            return child_fork();
        if (strcmp(mode, "nocuda") == 0)
            return child_nocuda();
        return 2;
    }
#define T(f) cmocka_unit_test_teardown(f, test_done)
    const struct CMUnitTest tests[] = {
        T(vram_limit_holds_to_the_byte_on_every_path),
        T(processes_sharing_a_slot_never_exceed_it_together),
        T(killed_process_memory_comes_back),
        T(only_the_slots_gpus_are_visible_and_nvml_shows_the_vgpu),
        T(missing_or_corrupt_slot_is_refused_with_a_message),
        T(compute_limit_holds_a_process_to_its_share),
        T(graph_launches_are_held_to_the_share),
        T(share_changes_apply_while_running),
        T(frozen_slot_holds_launches_until_resumed),
        T(get_proc_address_and_dlsym_lead_to_the_same_limits),
        T(fork_while_allocating_does_not_deadlock),
        T(programs_without_cuda_do_not_notice_the_library),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

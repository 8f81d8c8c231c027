/* test_sim_driver.c - behaviour of the simulated driver that a real GPU has no counterpart for, or that the
 * conformance suite cannot state portably: unimplemented entry points say so, images without host code are
 * refused with the driver's error, a forked child cannot use its parent's CUDA, a bad device spec is
 * explained, device addresses fault on the host, NVML utilization follows the kernels that ran, injected
 * XID errors reach NVML event sets, and NVML ignores CUDA_VISIBLE_DEVICES as NVIDIA's does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpupool/cuda.h"
#include "gpupool/nvml.h"
#include "common/nvml_load.h"
#include "common/timeutil.h"

extern const char gp_sample_ptx[];

static CUcontext g_ctx;

static int setup(void **state)
{
    (void)state;
    if (cuInit(0) != CUDA_SUCCESS || cuCtxCreate(&g_ctx, NULL, 0, 0) != CUDA_SUCCESS)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return cuCtxDestroy(g_ctx) == CUDA_SUCCESS ? 0 : -1;
}

/* Runs fn with stderr captured; returns what was written. */
static const char *capture(CUresult (*fn)(void), CUresult *rc)
{
    static char buf[8192];
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(2);
    dup2(fds[1], 2);
    close(fds[1]);
    *rc = fn();
    dup2(saved, 2);
    close(saved);
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* Textures are not simulated: cuTexObjectDestroy is one of the generated stubs. */
static CUresult call_tex_object_destroy_twice(void)
{
    CUresult (*fn)(CUtexObject) = (CUresult(*)(CUtexObject))dlsym(RTLD_DEFAULT, "cuTexObjectDestroy");
    CUresult a = fn(1), b = fn(1);
    return a == b ? a : CUDA_ERROR_UNKNOWN;
}

static void unimplemented_export_returns_not_supported_and_logs_once(void **state)
{
    (void)state;
    CUresult rc;
    const char *out = capture(call_tex_object_destroy_twice, &rc);
    assert_int_equal(rc, CUDA_ERROR_NOT_SUPPORTED);
    const char *first = strstr(out, "cuTexObjectDestroy is not supported");
    assert_non_null(first);
    assert_null(strstr(first + 1, "cuTexObjectDestroy is not supported"));
}

static void private_export_tables_are_refused(void **state)
{
    (void)state;
    const void *table = (void *)1;
    CUuuid id;
    memset(&id, 0x42, sizeof id);
    assert_int_equal(cuGetExportTable(&table, &id), CUDA_ERROR_NOT_SUPPORTED);
    assert_null(table);
    assert_int_equal(cuGetExportTable(NULL, &id), CUDA_ERROR_INVALID_VALUE);
}

static void images_without_host_code_get_the_drivers_errors(void **state)
{
    (void)state;
    CUmodule m;
    const char *ptx = ".version 7.0\n.target sm_75\n.address_size 64\n";
    assert_int_equal(cuModuleLoadData(&m, ptx), CUDA_ERROR_JIT_COMPILER_NOT_FOUND);
    unsigned char fatbin[16] = {0x50, 0xED, 0x55, 0xBA, 1, 0, 16, 0};
    assert_int_equal(cuModuleLoadData(&m, fatbin), CUDA_ERROR_NO_BINARY_FOR_GPU);
    assert_int_equal(cuModuleLoadData(&m, "\x7f"
                                          "ELF rest of a cubin"),
                     CUDA_ERROR_NO_BINARY_FOR_GPU);
    assert_int_equal(cuModuleLoadData(&m, "// gpupool-sim-module: libdoes-not-exist.so\n"),
                     CUDA_ERROR_SHARED_OBJECT_INIT_FAILED);
    assert_int_equal(cuModuleLoadData(&m, "// gpupool-sim-module: libm.so.6\n"),
                     CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND);
    assert_int_equal(cuModuleLoadData(&m, "not an image"), CUDA_ERROR_INVALID_IMAGE);
    assert_int_equal(cuModuleLoad(&m, "/nonexistent/module.ptx"), CUDA_ERROR_FILE_NOT_FOUND);
}

static void forked_child_cannot_use_the_parents_cuda(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        int n;
        CUdeviceptr p;
        int ok = cuDeviceGetCount(&n) == CUDA_ERROR_NOT_INITIALIZED &&
                 cuInit(0) == CUDA_ERROR_NOT_INITIALIZED && cuMemAlloc(&p, 4) == CUDA_ERROR_NOT_INITIALIZED;
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* and the parent is unaffected */
    CUdeviceptr p;
    assert_int_equal(cuMemAlloc(&p, 4), CUDA_SUCCESS);
    assert_int_equal(cuMemFree(p), CUDA_SUCCESS);
}

static void bad_device_spec_fails_cuInit_with_a_message(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        char *argv[] = {"/proc/self/exe", "--child-bad-spec", NULL};
        setenv("GPUPOOL_SIM_GPUS", "2xH300", 1);
        unsetenv("GPUPOOL_SIM_STATE");
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[4096] = "";
    ssize_t n, off = 0;
    while ((n = read(fds[0], buf + off, sizeof buf - 1 - (size_t)off)) > 0)
        off += n;
    buf[off] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), CUDA_ERROR_NO_DEVICE);
    assert_non_null(strstr(buf, "unknown GPU model \"H300\""));
}

static void device_addresses_fault_when_dereferenced_on_the_host(void **state)
{
    (void)state;
    CUdeviceptr p;
    assert_int_equal(cuMemAlloc(&p, 4096), CUDA_SUCCESS);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* cmocka catches SIGSEGV to report failures; here it must kill us */
        volatile int *q = (volatile int *)(uintptr_t)p;
        int v = *q; /* must fault, as on a real GPU */
        _exit(v == 12345 ? 2 : 0);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    cuMemFree(p);
}

static void context_creation_takes_device_memory(void **state)
{
    (void)state;
    size_t free0, total;
    assert_int_equal(cuMemGetInfo(&free0, &total), CUDA_SUCCESS);
    CUcontext c2;
    assert_int_equal(cuCtxCreate(&c2, NULL, 0, 0), CUDA_SUCCESS);
    size_t free1;
    assert_int_equal(cuMemGetInfo(&free1, &total), CUDA_SUCCESS);
    assert_true(free0 - free1 >= (256ull << 20)); /* the model's ctx_mib */
    assert_int_equal(cuCtxDestroy(c2), CUDA_SUCCESS);
    assert_int_equal(cuCtxSetCurrent(g_ctx), CUDA_SUCCESS);
    assert_int_equal(cuMemGetInfo(&free1, &total), CUDA_SUCCESS);
    assert_int_equal(free1, free0);
}

static unsigned nvml_util(nvmlDevice_t d)
{
    nvmlUtilization_t u;
    assert_int_equal(nvmlDeviceGetUtilizationRates(d, &u), NVML_SUCCESS);
    return u.gpu;
}

static void nvml_utilization_follows_the_kernels(void **state)
{
    (void)state;
    CUmodule mod;
    CUfunction spin;
    assert_int_equal(cuModuleLoadData(&mod, gp_sample_ptx), CUDA_SUCCESS);
    assert_int_equal(cuModuleGetFunction(&spin, mod, "spin_ns"), CUDA_SUCCESS);
    assert_int_equal(nvmlInit(), NVML_SUCCESS);
    nvmlDevice_t d;
    assert_int_equal(nvmlDeviceGetHandleByIndex(0, &d), NVML_SUCCESS);
    /* 1.5 s of back-to-back 10 ms kernels: the device is busy all of the last second */
    uint64_t ns = 10000000;
    void *args[] = {&ns};
    for (int i = 0; i < 150; i++)
        assert_int_equal(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL), CUDA_SUCCESS);
    assert_int_equal(cuCtxSynchronize(), CUDA_SUCCESS);
    unsigned busy = nvml_util(d);
    assert_true(busy >= 90);
    unsigned temp_busy, power_busy;
    nvmlDeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &temp_busy);
    nvmlDeviceGetPowerUsage(d, &power_busy);
    gp_sleep_ns(1300000000ull);
    unsigned idle = nvml_util(d);
    assert_true(idle <= 10);
    unsigned temp_idle, power_idle;
    nvmlDeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &temp_idle);
    nvmlDeviceGetPowerUsage(d, &power_idle);
    assert_true(temp_busy > temp_idle);
    assert_true(power_busy > power_idle);
    nvmlShutdown();
    cuModuleUnload(mod);
}

static void injected_xid_reaches_nvml_event_sets(void **state)
{
    (void)state;
    assert_int_equal(nvmlInit(), NVML_SUCCESS);
    nvmlDevice_t d;
    assert_int_equal(nvmlDeviceGetHandleByIndex(1, &d), NVML_SUCCESS);
    nvmlEventSet_t set;
    assert_int_equal(nvmlEventSetCreate(&set), NVML_SUCCESS);
    assert_int_equal(nvmlDeviceRegisterEvents(d, nvmlEventTypeXidCriticalError, set), NVML_SUCCESS);
    nvmlEventData_t ev;
    assert_int_equal(nvmlEventSetWait(set, &ev, 50), NVML_ERROR_TIMEOUT);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s sim inject-xid 1 79 >/dev/null", GPUPOOL_BIN);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(nvmlEventSetWait(set, &ev, 2000), NVML_SUCCESS);
    assert_int_equal(ev.eventType, nvmlEventTypeXidCriticalError);
    assert_int_equal(ev.eventData, 79);
    assert_ptr_equal(ev.device, d);
    assert_int_equal(nvmlEventSetWait(set, &ev, 50), NVML_ERROR_TIMEOUT); /* delivered once */
    nvmlEventSetFree(set);
    nvmlShutdown();
}

static void nvml_ignores_cuda_visible_devices(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"/proc/self/exe", "--child-visible", NULL};
        setenv("CUDA_VISIBLE_DEVICES", "1", 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void nvml_loader_falls_back_to_the_simulation(void **state)
{
    (void)state;
    gp_nvml n;
    gp_err err;
    setenv("GPUPOOL_SIM_LIB_DIR", GP_SIM_LIB_DIR, 1);
    setenv("GPUPOOL_NVML_LIBRARY", "libnvidia-ml-does-not-exist.so.1", 1); /* as on a host without NVIDIA's */
    assert_int_equal(gp_nvml_load(&n, GP_NVML_REAL, &err), -1);
    assert_non_null(strstr(err.msg, "libnvidia-ml-does-not-exist.so.1"));
    assert_int_equal(gp_nvml_load(&n, GP_NVML_AUTO, &err), 0);
    assert_true(n.simulated);
    unsigned count = 0;
    assert_int_equal(n.DeviceGetCount(&count), NVML_SUCCESS);
    assert_int_equal(count, 2);
    gp_nvml_unload(&n);
    unsetenv("GPUPOOL_NVML_LIBRARY");
    setenv("GPUPOOL_SIM_LIB_DIR", "/nonexistent", 1);
    assert_int_equal(gp_nvml_load(&n, GP_NVML_SIM, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/libnvidia-ml.so.1"));
    unsetenv("GPUPOOL_SIM_LIB_DIR");
}

static int child_visible(void)
{
    int n = 0;
    unsigned nn = 0;
    if (cuInit(0) || cuDeviceGetCount(&n) || nvmlInit() || nvmlDeviceGetCount(&nn))
        return 3;
    /* CUDA sees one device, NVML the host's two; CUDA's device 0 is NVML's device 1 */
    CUuuid u;
    nvmlDevice_t d;
    char nv[96], cu[48];
    cuDeviceGetUuid(&u, 0);
    nvmlDeviceGetHandleByIndex(1, &d);
    nvmlDeviceGetUUID(d, nv, sizeof nv);
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(cu, sizeof cu, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return (n == 1 && nn == 2 && strcmp(nv, cu) == 0) ? 0 : 4;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--child-bad-spec") == 0)
        return (int)cuInit(0);
    if (argc > 1 && strcmp(argv[1], "--child-visible") == 0)
        return child_visible();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unimplemented_export_returns_not_supported_and_logs_once),
        cmocka_unit_test(private_export_tables_are_refused),
        cmocka_unit_test(images_without_host_code_get_the_drivers_errors),
        cmocka_unit_test(forked_child_cannot_use_the_parents_cuda),
        cmocka_unit_test(bad_device_spec_fails_cuInit_with_a_message),
        cmocka_unit_test(device_addresses_fault_when_dereferenced_on_the_host),
        cmocka_unit_test(context_creation_takes_device_memory),
        cmocka_unit_test(nvml_utilization_follows_the_kernels),
        cmocka_unit_test(injected_xid_reaches_nvml_event_sets),
        cmocka_unit_test(nvml_ignores_cuda_visible_devices),
        cmocka_unit_test(nvml_loader_falls_back_to_the_simulation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

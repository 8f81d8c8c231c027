/* agent.c - what the agent costs its host: resident memory and CPU of `gpupool agent` managing 8 simulated
 * GPUs with 32 slot sets each (256), against the same agent managing none, in one run.
 *
 * Each phase: start the agent, (create the slots through its API), let it settle, then measure its CPU time
 * (utime + stime from /proc) over the window and its resident set (VmRSS) at the end, while /metrics is
 * scraped every second - far more often than Prometheus usually does - and, in the loaded phase, one
 * process per GPU saturates it under its slot, so the arbiter has real samples to process every 100 ms.
 * Targets (issue 4): < 16 MiB RSS and < 1 % of a core with 8 x 32.
 *
 *   bench_agent [WINDOW_S]
 * Needs GPUPOOL_BIN, GPUPOOL_VGPU_LIB, GPUPOOL_SIM_KERNEL_PATH and the simulated GPU on LD_LIBRARY_PATH
 * (scripts/bench.sh sets them).
 */
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_util.h"
#include "common/http.h"

extern const char gp_sample_ptx[];

#define GPUS      8
#define PER_GPU   32
#define KERNEL_NS 2000000ull

static int child_busy(void)
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
    uint64_t ns = KERNEL_NS;
    void *args[] = {&ns};
    for (;;)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
}

static char g_sock[300];

static long api(const char *method, const char *path, const char *body, json_t **out)
{
    char url[512];
    snprintf(url, sizeof url, "unix:%s:%s", g_sock, path);
    gp_http_client_opts o = {.timeout_ms = 10000};
    gp_http_result r = {0};
    gp_err err;
    if (out)
        *out = NULL;
    if (gp_http_call(method, url, body, NULL, &o, &r, &err) < 0)
        return 0;
    if (out && r.body)
        *out = json_loads(r.body, 0, NULL);
    long st = r.status;
    gp_http_result_free(&r);
    return st;
}

static pid_t start_agent(const char *run)
{
    snprintf(g_sock, sizeof g_sock, "%s/agent.sock", run);
    pid_t pid = fork();
    if (pid == 0) {
        execl(getenv("GPUPOOL_BIN"), "gpupool", "agent", "--sim", "--run-dir", run, "--log-level", "warn",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        if (api("GET", "/healthz", NULL, NULL) == 200)
            return pid;
        usleep(50000);
    }
    fprintf(stderr, "bench_agent: the agent did not start\n");
    exit(1);
}

static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof buf, f)) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double rss_mib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb / 1024;
}

/* Memory only this process holds (not shared with any other: USS), from smaps_rollup. */
static double uss_mib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    double kb = 0, v;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Private_Clean: %lf", &v) == 1 || sscanf(line, "Private_Dirty: %lf", &v) == 1)
            kb += v;
    if (f)
        fclose(f);
    return kb / 1024;
}

/* CPU share and RSS of the agent over a window, scraping /metrics every second. */
static void measure(pid_t agent, double window, double *cpu_pct, double *rss, double *uss)
{
    double c0 = cpu_seconds(agent), t0 = bench_now();
    while (bench_now() - t0 < window) {
        char url[512];
        snprintf(url, sizeof url, "unix:%s:/metrics", g_sock);
        gp_http_client_opts o = {.timeout_ms = 10000};
        gp_http_result r = {0};
        gp_err err;
        if (gp_http_call("GET", url, NULL, NULL, &o, &r, &err) == 0)
            gp_http_result_free(&r);
        usleep(1000000);
    }
    *cpu_pct = (cpu_seconds(agent) - c0) / (bench_now() - t0) * 100;
    *rss = rss_mib(agent);
    *uss = uss_mib(agent);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--child") == 0)
        return child_busy();
    double window = argc > 1 ? atof(argv[1]) : 20;
    if (!getenv("GPUPOOL_BIN") || !getenv("GPUPOOL_VGPU_LIB")) {
        fprintf(stderr, "bench_agent: set GPUPOOL_BIN and GPUPOOL_VGPU_LIB (scripts/bench.sh does)\n");
        return 2;
    }
    char spec[32], state[128], run[128], cmd[300];
    snprintf(spec, sizeof spec, "%dxH100-SXM-80GB", GPUS);
    snprintf(state, sizeof state, "/dev/shm/gpupool-bench-agent-%d", (int)getpid());
    setenv("GPUPOOL_SIM_GPUS", spec, 1);
    setenv("GPUPOOL_SIM_STATE", state, 1);
    BCK(cuInit(0));
    bench_header("agent");
    printf("# %d simulated GPUs; window %.0f s; /metrics scraped every second\n", GPUS, window);

    /* baseline: the agent with no slots */
    snprintf(run, sizeof run, "/tmp/gpupool-bench-agent-%d-empty", (int)getpid());
    pid_t a = start_agent(run);
    sleep(2);
    double base_cpu, base_rss, base_uss;
    measure(a, window, &base_cpu, &base_rss, &base_uss);
    kill(a, SIGTERM);
    waitpid(a, NULL, 0);

    /* loaded: 8 x 32 slot sets, one busy process per GPU */
    snprintf(run, sizeof run, "/tmp/gpupool-bench-agent-%d-full", (int)getpid());
    a = start_agent(run);
    pid_t busy[GPUS];
    for (int g = 0; g < GPUS; g++)
        for (int k = 0; k < PER_GPU; k++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"id\":\"w%d-%d\",\"workload\":\"w%d-%d\",\"gpus\":[%d],\"vram\":\"2Gi\","
                     "\"percent_request\":3,\"percent_limit\":%d}",
                     g, k, g, k, g, k == 0 ? 50 : 100);
            json_t *o = NULL;
            if (api("POST", "/v1/slots", body, &o) != 201) {
                fprintf(stderr, "bench_agent: creating slot %d/%d failed: %s\n", g, k,
                        o ? json_string_value(json_object_get(o, "detail")) : "no answer");
                return 1;
            }
            if (k == 0) {
                json_t *env = json_object_get(o, "env");
                busy[g] = fork();
                if (busy[g] == 0) {
                    const char *key;
                    json_t *v;
                    json_object_foreach(env, key, v) setenv(key, json_string_value(v), 1);
                    execl("/proc/self/exe", "bench_agent", "--child", (char *)NULL);
                    _exit(127);
                }
            }
            json_decref(o);
        }
    sleep(3);
    double cpu, rss, uss;
    measure(a, window, &cpu, &rss, &uss);
    printf("# 8 x 32 = %d slot sets, %d of them busy (limited to 50%%)\n", GPUS * PER_GPU, GPUS);
    bench_line("agent CPU, 8 GPUs x 32 slots", cpu, base_cpu, "%core", "the agent with no slots");
    bench_line("agent RSS, 8 GPUs x 32 slots", rss, base_rss, "MiB", "the agent with no slots");
    bench_line("agent private memory (USS), 8 x 32", uss, base_uss, "MiB", "the agent with no slots");
    printf("    targets: < 1 %%core (%s), < 16 MiB (%s)\n", cpu < 1 ? "met" : "NOT met",
           rss < 16 ? "met" : "NOT met");
    for (int g = 0; g < GPUS; g++) {
        kill(busy[g], SIGKILL);
        waitpid(busy[g], NULL, 0);
    }
    kill(a, SIGTERM);
    waitpid(a, NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/gpupool-bench-agent-%d-* '%s'", (int)getpid(), state);
    return system(cmd) == 0 ? 0 : 1;
}

/* bench_util.h - shared helpers of the benchmarks: a clock, a CUDA error check that exits, and the line
 * format every benchmark prints (metric, value, baseline measured in the same run, ratio). */
#ifndef GP_BENCH_UTIL_H
#define GP_BENCH_UTIL_H

#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define BCK(call)                                                                     \
    do {                                                                              \
        CUresult r_ = (call);                                                         \
        if (r_ != CUDA_SUCCESS) {                                                     \
            const char *s_ = "?";                                                     \
            cuGetErrorName(r_, &s_);                                                  \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, s_); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static inline void bench_header(const char *name)
{
    char cpu[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "model name : %255[^\n]", cpu) == 1)
                break;
        fclose(f);
    }
    char dev[128] = "?";
    cuDeviceGetName(dev, sizeof dev, 0);
    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&t));
    printf("# %s  date=%s  cpu=\"%s\"  device=\"%s\"\n", name, date, cpu, dev);
    printf("%-44s %16s %16s %8s  %s\n", "metric", "value", "baseline", "ratio", "baseline is");
}

/* A line whose ratio is given (e.g. a median of paired measurements' ratios) rather than value / baseline. */
static inline void bench_line_ratio(const char *metric, double value, double baseline, double ratio,
                                    const char *unit, const char *baseline_is)
{
    char v[32], b[32];
    snprintf(v, sizeof v, "%.4g %s", value, unit);
    snprintf(b, sizeof b, "%.4g %s", baseline, unit);
    printf("%-44s %16s %16s %8.3f  %s\n", metric, v, b, ratio, baseline_is);
    fflush(stdout);
}

static inline void bench_line(const char *metric, double value, double baseline, const char *unit,
                              const char *baseline_is)
{
    bench_line_ratio(metric, value, baseline, baseline > 0 ? value / baseline : 0.0, unit, baseline_is);
}

#endif

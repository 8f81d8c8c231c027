/* check.h - the assertions of the conformance programs.
 *
 * Every program in tests/conformance states driver semantics the simulated GPU promises. It compiles
 * against gpupool's own cuda.h or NVIDIA's (both builds run in `make test`) and runs unchanged against the
 * simulated driver (LD_LIBRARY_PATH=build/lib/sim) or NVIDIA's (tests/conformance/run-real.sh on a GPU
 * machine). A program prints one line per check that fails and exits 1 if any did.
 */
#ifndef GP_CONF_CHECK_H
#define GP_CONF_CHECK_H

#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int conf_failures;
static const char *conf_current = "";

static const char *conf_err_name(CUresult r)
{
    const char *n = NULL;
    if (cuGetErrorName(r, &n) != CUDA_SUCCESS || n == NULL)
        return "(unknown CUresult)";
    return n;
}

/* A call must return `expect`. */
#define EXPECT_RC(call, expect)                                                                       \
    do {                                                                                              \
        CUresult r_ = (call);                                                                         \
        if (r_ != (expect)) {                                                                         \
            fprintf(stderr, "FAIL %s (%s:%d): %s returned %s (%d), expected %s (%d)\n", conf_current, \
                    __FILE__, __LINE__, #call, conf_err_name(r_), (int)r_, conf_err_name(expect),     \
                    (int)(expect));                                                                   \
            conf_failures++;                                                                          \
        }                                                                                             \
    } while (0)

/* A call must succeed; if it does not, the rest of the test cannot run. */
#define CU(call)                                                                                        \
    do {                                                                                                \
        CUresult r_ = (call);                                                                           \
        if (r_ != CUDA_SUCCESS) {                                                                       \
            fprintf(stderr, "FAIL %s (%s:%d): %s returned %s (%d)\n", conf_current, __FILE__, __LINE__, \
                    #call, conf_err_name(r_), (int)r_);                                                 \
            conf_failures++;                                                                            \
            return;                                                                                     \
        }                                                                                               \
    } while (0)

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s (%s:%d): %s: ", conf_current, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            conf_failures++;                                                                   \
        }                                                                                      \
    } while (0)

#define RUN(test)                                                             \
    do {                                                                      \
        int before_ = conf_failures;                                          \
        conf_current = #test;                                                 \
        test();                                                               \
        printf("%s %s\n", conf_failures == before_ ? "ok  " : "FAIL", #test); \
        fflush(stdout);                                                       \
    } while (0)

#define CONF_EXIT() return conf_failures ? 1 : 0

static inline uint64_t conf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The PTX image of src/sim/kernels/sample.ptx (embedded by the build). */
extern const char gp_sample_ptx[];

/* cuInit, device 0, and a new context current on this thread. */
static inline CUresult conf_context(CUcontext *ctx)
{
    CUresult r = cuInit(0);
    if (r != CUDA_SUCCESS)
        return r;
    CUdevice dev;
    if ((r = cuDeviceGet(&dev, 0)) != CUDA_SUCCESS)
        return r;
    return cuCtxCreate(ctx, NULL, 0, dev);
}

static inline CUresult conf_module(CUmodule *mod)
{
    return cuModuleLoadData(mod, gp_sample_ptx);
}

#endif

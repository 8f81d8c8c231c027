/* conf_module.c - modules and launches: loading the sample kernels (src/sim/kernels/sample.ptx), looking up
 * functions and globals, parameter layout, the two ways of passing parameters, launch validation,
 * cuLaunchKernelEx and cooperative launches.
 *
 * Not tested: using a function after its module is unloaded, or unloading a module twice; NVIDIA documents
 * any use of a handle after its destruction as undefined behaviour.
 */
#include "check.h"

static CUcontext g_ctx;
static CUmodule g_mod;

static const char *const kernel_names[] = {"vec_add", "fill_u32",  "add_one_u32", "spin_ns",
                                           "burn",    "store_u32", "mixed",       "incr_counter"};

static CUfunction get(const char *name)
{
    CUfunction f = NULL;
    CUresult r = cuModuleGetFunction(&f, g_mod, name);
    EXPECT(r == CUDA_SUCCESS, "cuModuleGetFunction(%s) returned %s", name, conf_err_name(r));
    return f;
}

static void every_kernel_of_the_module_is_found(void)
{
    for (size_t i = 0; i < sizeof kernel_names / sizeof kernel_names[0]; i++) {
        CUfunction f = get(kernel_names[i]);
        EXPECT(f != NULL, "no handle for %s", kernel_names[i]);
    }
}

static void unknown_function_is_not_found(void)
{
    CUfunction f;
    EXPECT_RC(cuModuleGetFunction(&f, g_mod, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
    EXPECT_RC(cuModuleGetFunction(&f, g_mod, "vec_ad"), CUDA_ERROR_NOT_FOUND);
}

static void garbage_image_is_rejected(void)
{
    CUmodule m = NULL;
    static const char garbage[] = "this is neither PTX, nor a cubin, nor a fatbin\n";
    CUresult r = cuModuleLoadData(&m, garbage);
    /* The driver reads text as PTX, and which of the two a failed parse reports is not documented. */
    EXPECT(r == CUDA_ERROR_INVALID_IMAGE || r == CUDA_ERROR_INVALID_PTX,
           "cuModuleLoadData(garbage) returned %s (%d)", conf_err_name(r), (int)r);
    if (r == CUDA_SUCCESS)
        cuModuleUnload(m);
}

static void module_function_count_is_eight(void)
{
    unsigned n = 0;
    CU(cuModuleGetFunctionCount(&n, g_mod));
    EXPECT(n == 8, "cuModuleGetFunctionCount gave %u", n);
}

static void global_counter_counts_three_launches(void)
{
    CUdeviceptr p = 0;
    size_t size = 0;
    CU(cuModuleGetGlobal(&p, &size, g_mod, "counter"));
    EXPECT(size == 4, "counter is %zu bytes", size);
    EXPECT(p != 0, "counter has no address");
    size_t size_only = 0;
    EXPECT_RC(cuModuleGetGlobal(NULL, &size_only, g_mod, "counter"), CUDA_SUCCESS);
    EXPECT(size_only == 4, "counter is %zu bytes", size_only);
    CUdeviceptr q;
    EXPECT_RC(cuModuleGetGlobal(&q, NULL, g_mod, "no_such_global"), CUDA_ERROR_NOT_FOUND);

    uint32_t v = 0xFFFFFFFFu;
    CU(cuMemcpyDtoH(&v, p, 4));
    EXPECT(v == 0, "counter starts at %u, not its initializer 0", v);
    CUfunction incr = get("incr_counter");
    if (!incr)
        return;
    for (int i = 0; i < 3; i++)
        CU(cuLaunchKernel(incr, 2, 1, 1, 64, 1, 1, 0, NULL, NULL, NULL));
    CU(cuMemcpyDtoH(&v, p, 4));
    EXPECT(v == 3, "counter is %u after 3 launches", v);
}

static void vec_add_adds_a_million_floats(void)
{
    enum { N = 1 << 20 };
    float *a = malloc(N * 4), *b = malloc(N * 4), *c = malloc(N * 4);
    CUdeviceptr da = 0, db = 0, dc = 0;
    CUfunction f = get("vec_add");
    if (!a || !b || !c || !f) {
        EXPECT(a && b && c, "out of host memory");
        goto out;
    }
    for (uint32_t i = 0; i < N; i++) {
        a[i] = (float)(i % 4096) * 0.25f;
        b[i] = (float)(i / 4096) - 100.0f;
    }
    CU(cuMemAlloc(&da, N * 4));
    CU(cuMemAlloc(&db, N * 4));
    CU(cuMemAlloc(&dc, N * 4));
    CU(cuMemcpyHtoD(da, a, N * 4));
    CU(cuMemcpyHtoD(db, b, N * 4));
    CU(cuMemsetD32(dc, 0, N));
    uint32_t n = N;
    void *args[] = {&da, &db, &dc, &n};
    CU(cuLaunchKernel(f, N / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CU(cuMemcpyDtoH(c, dc, N * 4));
    for (uint32_t i = 0; i < N; i++)
        if (c[i] != a[i] + b[i]) {
            EXPECT(c[i] == a[i] + b[i], "c[%u] = %g, expected %g", i, (double)c[i], (double)(a[i] + b[i]));
            break;
        }
out:
    if (da)
        cuMemFree(da);
    if (db)
        cuMemFree(db);
    if (dc)
        cuMemFree(dc);
    free(a);
    free(b);
    free(c);
}

/* mixed(out u64*, a u8, b u64, c u32, d f64, e u16): each parameter aligned to its own size. */
static const size_t mixed_offset[6] = {0, 8, 16, 24, 32, 40};
static const size_t mixed_size[6] = {8, 1, 8, 4, 8, 2};

static void param_info_of_mixed_follows_the_ptx_abi(void)
{
    CUfunction f = get("mixed");
    if (!f)
        return;
    for (size_t i = 0; i < 6; i++) {
        size_t off = 999, size = 999;
        CU(cuFuncGetParamInfo(f, i, &off, &size));
        EXPECT(off == mixed_offset[i] && size == mixed_size[i],
               "parameter %zu at %zu size %zu, expected %zu size %zu", i, off, size, mixed_offset[i],
               mixed_size[i]);
    }
    size_t off = 0;
    EXPECT_RC(cuFuncGetParamInfo(f, 0, &off, NULL), CUDA_SUCCESS); /* the size is optional */
    EXPECT_RC(cuFuncGetParamInfo(f, 6, &off, NULL), CUDA_ERROR_INVALID_VALUE);
}

#define MIXED_A   ((uint8_t)200)
#define MIXED_B   ((uint64_t)1000000000000ull)
#define MIXED_C   ((uint32_t)70000)
#define MIXED_D   12345.0
#define MIXED_E   ((uint16_t)65000)
#define MIXED_SUM (1000000000000ull + 200 + 70000 + 12345 + 65000)

static void mixed_parameters_arrive_through_kernel_params_and_extra(void)
{
    CUfunction f = get("mixed");
    CUdeviceptr out = 0;
    if (!f)
        return;
    CU(cuMemAlloc(&out, 8));
    uint8_t a = MIXED_A;
    uint64_t b = MIXED_B;
    uint32_t c = MIXED_C;
    double d = MIXED_D;
    uint16_t e = MIXED_E;

    uint64_t got = 0;
    CU(cuMemsetD8(out, 0, 8));
    void *params[] = {&out, &a, &b, &c, &d, &e};
    CU(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    CU(cuMemcpyDtoH(&got, out, 8));
    EXPECT(got == MIXED_SUM, "kernelParams: sum %llu, expected %llu", (unsigned long long)got, MIXED_SUM);

    /* The same launch from one packed buffer laid out as cuFuncGetParamInfo says. */
    _Alignas(8) uint8_t buf[48];
    memset(buf, 0, sizeof buf);
    memcpy(buf + mixed_offset[0], &out, 8);
    memcpy(buf + mixed_offset[1], &a, 1);
    memcpy(buf + mixed_offset[2], &b, 8);
    memcpy(buf + mixed_offset[3], &c, 4);
    memcpy(buf + mixed_offset[4], &d, 8);
    memcpy(buf + mixed_offset[5], &e, 2);
    size_t bufsize = mixed_offset[5] + mixed_size[5];
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &bufsize,
                     CU_LAUNCH_PARAM_END};
    got = 0;
    CU(cuMemsetD8(out, 0, 8));
    CU(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, extra));
    CU(cuMemcpyDtoH(&got, out, 8));
    EXPECT(got == MIXED_SUM, "extra buffer: sum %llu, expected %llu", (unsigned long long)got, MIXED_SUM);

    EXPECT_RC(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, extra), CUDA_ERROR_INVALID_VALUE);
    CU(cuCtxSynchronize());
    cuMemFree(out);
}

static void empty_grid_or_oversized_block_is_invalid_value(void)
{
    CUfunction f = get("fill_u32");
    CUdeviceptr p = 0;
    if (!f)
        return;
    CU(cuMemAlloc(&p, 4 * 4096));
    uint32_t v = 1;
    uint64_t n = 4096;
    void *args[] = {&p, &v, &n};
    EXPECT_RC(cuLaunchKernel(f, 0, 1, 1, 256, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuLaunchKernel(f, 1, 0, 1, 256, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuLaunchKernel(f, 1, 1, 1, 1025, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuLaunchKernel(f, 1, 1, 1, 32, 32, 2, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuLaunchKernel(f, 1, 1, 1, 0, 1, 1, 0, NULL, args, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuCtxSynchronize(), CUDA_SUCCESS); /* nothing was launched, nothing failed */
    cuMemFree(p);
}

/* Fills n words with v by `how` (0: cuLaunchKernelEx, 1: cuLaunchCooperativeKernel) and checks them. */
static void fill_and_check(CUfunction f, int how, unsigned grid, unsigned block, uint32_t v)
{
    uint64_t n = (uint64_t)grid * block;
    CUdeviceptr p = 0;
    uint32_t *h = malloc(n * 4);
    if (!h) {
        EXPECT(0, "out of host memory");
        return;
    }
    CUresult r = cuMemAlloc(&p, n * 4);
    EXPECT(r == CUDA_SUCCESS, "cuMemAlloc returned %s", conf_err_name(r));
    if (r == CUDA_SUCCESS) {
        EXPECT_RC(cuMemsetD32(p, 0, n), CUDA_SUCCESS);
        void *args[] = {&p, &v, &n};
        if (how == 0) {
            CUlaunchConfig cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.gridDimX = grid;
            cfg.gridDimY = cfg.gridDimZ = 1;
            cfg.blockDimX = block;
            cfg.blockDimY = cfg.blockDimZ = 1;
            cfg.hStream = NULL;
            EXPECT_RC(cuLaunchKernelEx(&cfg, f, args, NULL), CUDA_SUCCESS);
        } else {
            EXPECT_RC(cuLaunchCooperativeKernel(f, grid, 1, 1, block, 1, 1, 0, NULL, args), CUDA_SUCCESS);
        }
        EXPECT_RC(cuMemcpyDtoH(h, p, n * 4), CUDA_SUCCESS);
        for (uint64_t i = 0; i < n; i++)
            if (h[i] != v) {
                EXPECT(h[i] == v, "element %llu is %u, expected %u", (unsigned long long)i, h[i], v);
                break;
            }
        cuMemFree(p);
    }
    free(h);
}

static void launch_kernel_ex_with_a_plain_config_works(void)
{
    CUfunction f = get("fill_u32");
    if (f)
        fill_and_check(f, 0, 64, 128, 0xC0FFEEu);
}

static void cooperative_launch_larger_than_the_device_is_too_large(void)
{
    CUdevice dev;
    int coop = 0, sms = 0;
    CU(cuCtxGetDevice(&dev));
    CU(cuDeviceGetAttribute(&coop, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev));
    CU(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    if (!coop) {
        printf("     (device has no cooperative launch: not tested)\n");
        return;
    }
    CUfunction f = get("fill_u32");
    if (!f)
        return;
    /* One block of 256 threads per SM is always resident. */
    fill_and_check(f, 1, (unsigned)sms, 256, 0xC00Bu);

    int per_sm = 0;
    CU(cuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, 1024, 0));
    unsigned grid = 1u << 20; /* a million blocks of 1024 threads: no GPU holds that many at once */
    EXPECT((uint64_t)per_sm * (uint64_t)sms < grid, "%d blocks per SM x %d SMs hold the whole grid", per_sm,
           sms);
    CUdeviceptr p = 0;
    uint32_t v = 1;
    uint64_t n = 0; /* writes nothing, were it to run */
    void *args[] = {&p, &v, &n};
    EXPECT_RC(cuLaunchCooperativeKernel(f, grid, 1, 1, 1024, 1, 1, 0, NULL, args),
              CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
    EXPECT_RC(cuCtxSynchronize(), CUDA_SUCCESS);
}

static void max_threads_per_block_attribute_is_positive(void)
{
    for (size_t i = 0; i < sizeof kernel_names / sizeof kernel_names[0]; i++) {
        CUfunction f = get(kernel_names[i]);
        if (!f)
            continue;
        int v = 0;
        CU(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f));
        EXPECT(v > 0 && v <= 1024, "%s: MAX_THREADS_PER_BLOCK %d", kernel_names[i], v);
    }
}

int main(void)
{
    CUresult r = conf_context(&g_ctx);
    if (r == CUDA_SUCCESS)
        r = conf_module(&g_mod);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: loading the sample module: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(every_kernel_of_the_module_is_found);
    RUN(unknown_function_is_not_found);
    RUN(garbage_image_is_rejected);
    RUN(module_function_count_is_eight);
    RUN(global_counter_counts_three_launches);
    RUN(vec_add_adds_a_million_floats);
    RUN(param_info_of_mixed_follows_the_ptx_abi);
    RUN(mixed_parameters_arrive_through_kernel_params_and_extra);
    RUN(empty_grid_or_oversized_block_is_invalid_value);
    RUN(launch_kernel_ex_with_a_plain_config_works);
    RUN(cooperative_launch_larger_than_the_device_is_too_large);
    RUN(max_threads_per_block_attribute_is_positive);
    EXPECT_RC(cuModuleUnload(g_mod), CUDA_SUCCESS);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

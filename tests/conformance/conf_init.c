/* conf_init.c - driver initialisation, versions and error names. */
#include "check.h"

static void calls_before_cuInit_return_not_initialized(void)
{
    int n = -1;
    EXPECT_RC(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
    CUdevice d;
    EXPECT_RC(cuDeviceGet(&d, 0), CUDA_ERROR_NOT_INITIALIZED);
    CUdeviceptr p;
    EXPECT_RC(cuMemAlloc(&p, 16), CUDA_ERROR_NOT_INITIALIZED);
    CUcontext c;
    EXPECT_RC(cuCtxGetCurrent(&c), CUDA_ERROR_NOT_INITIALIZED);
}

static void driver_version_works_before_cuInit(void)
{
    int v = 0;
    CU(cuDriverGetVersion(&v));
    EXPECT(v >= 12000, "driver version %d", v);
    EXPECT_RC(cuDriverGetVersion(NULL), CUDA_ERROR_INVALID_VALUE);
}

static void cuInit_rejects_flags_and_succeeds_with_zero(void)
{
    EXPECT_RC(cuInit(1), CUDA_ERROR_INVALID_VALUE);
    CU(cuInit(0));
    CU(cuInit(0)); /* idempotent */
    int n = 0;
    CU(cuDeviceGetCount(&n));
    EXPECT(n >= 1, "device count %d", n);
}

static void error_names_and_strings(void)
{
    const char *s = NULL;
    CU(cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &s));
    EXPECT(s && strcmp(s, "CUDA_ERROR_OUT_OF_MEMORY") == 0, "name %s", s ? s : "(null)");
    CU(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &s));
    EXPECT(s && strcmp(s, "out of memory") == 0, "string %s", s ? s : "(null)");
    CU(cuGetErrorString(CUDA_ERROR_INVALID_VALUE, &s));
    EXPECT(s && strcmp(s, "invalid argument") == 0, "string %s", s ? s : "(null)");
    CU(cuGetErrorName(CUDA_SUCCESS, &s));
    EXPECT(s && strcmp(s, "CUDA_SUCCESS") == 0, "name %s", s ? s : "(null)");
    EXPECT_RC(cuGetErrorName((CUresult)123456, &s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGetErrorString((CUresult)123456, &s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, NULL), CUDA_ERROR_INVALID_VALUE);
}

int main(void)
{
    RUN(calls_before_cuInit_return_not_initialized);
    RUN(driver_version_works_before_cuInit);
    RUN(cuInit_rejects_flags_and_succeeds_with_zero);
    RUN(error_names_and_strings);
    CONF_EXIT();
}

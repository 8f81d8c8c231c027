/* conf_fault.c - an illegal address in a kernel: the launch succeeds, the fault surfaces at the next
 * synchronisation as CUDA_ERROR_ILLEGAL_ADDRESS, and the context stays unusable from then on.
 *
 * A program of its own because its context is dead after the first test; the tests run in order and
 * share that context.
 */
#include "check.h"

static CUcontext g_ctx;
static CUmodule g_mod;
static int g_launched; /* the faulting launch was accepted */

static void faulting_launch_itself_returns_success(void)
{
    CUfunction f;
    CU(cuModuleGetFunction(&f, g_mod, "store_u32"));
    /* Make sure the context works before the fault, so any error below is the fault's. */
    CUdeviceptr probe;
    CU(cuMemAlloc(&probe, 64));
    CU(cuMemFree(probe));
    CU(cuCtxSynchronize());

    CUdeviceptr null_ptr = 0;
    uint32_t v = 0xDEAD;
    void *args[] = {&null_ptr, &v};
    CUresult r = cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL);
    EXPECT(r == CUDA_SUCCESS, "the launch returned %s; launches are asynchronous and fault later",
           conf_err_name(r));
    g_launched = r == CUDA_SUCCESS;
}

static void ctx_synchronize_reports_illegal_address(void)
{
    if (!g_launched) {
        EXPECT(0, "the faulting launch was not made");
        return;
    }
    EXPECT_RC(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
}

static void context_is_unusable_after_the_fault(void)
{
    if (!g_launched) {
        EXPECT(0, "the faulting launch was not made");
        return;
    }
    CUdeviceptr p;
    EXPECT_RC(cuMemAlloc(&p, 64), CUDA_ERROR_ILLEGAL_ADDRESS);
    EXPECT_RC(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS); /* the error is sticky */
}

int main(void)
{
    CUresult r = conf_context(&g_ctx);
    if (r == CUDA_SUCCESS)
        r = conf_module(&g_mod);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(faulting_launch_itself_returns_success);
    RUN(ctx_synchronize_reports_illegal_address);
    RUN(context_is_unusable_after_the_fault);
    /* The context is corrupt; the process exits without tearing it down. */
    CONF_EXIT();
}

/* conf_context.c - contexts: the per-thread context stack, context queries, primary contexts and limits.
 * Each test leaves the calling thread with an empty context stack and every primary context released, so
 * the tests can run in any order. Flags are compared through CU_CTX_SCHED_MASK only: NVIDIA's driver may
 * report bits it implies (CU_CTX_MAP_HOST is always in effect since CUDA 11), which the caller never set.
 */
#include "check.h"

#include <pthread.h>

static CUdevice g_dev;

/* Pops whatever is left on this thread's stack (after a failed check). */
static void clear_stack(void)
{
    CUcontext c = NULL;
    for (int i = 0; i < 64 && cuCtxGetCurrent(&c) == CUDA_SUCCESS && c != NULL; i++)
        cuCtxPopCurrent(&c);
}

static void calls_without_a_current_context_return_invalid_context(void)
{
    CU(cuInit(0));
    CU(cuDeviceGet(&g_dev, 0));
    CUcontext cur = (CUcontext)1;
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL, "a context is current before any was created");
    CUdeviceptr p;
    EXPECT_RC(cuMemAlloc(&p, 4096), CUDA_ERROR_INVALID_CONTEXT);
    CUdevice d;
    EXPECT_RC(cuCtxGetDevice(&d), CUDA_ERROR_INVALID_CONTEXT);
    unsigned int flags;
    EXPECT_RC(cuCtxGetFlags(&flags), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RC(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
    size_t free_b, total_b;
    EXPECT_RC(cuMemGetInfo(&free_b, &total_b), CUDA_ERROR_INVALID_CONTEXT);
    CUstream s;
    EXPECT_RC(cuStreamCreate(&s, 0), CUDA_ERROR_INVALID_CONTEXT);
}

static void bad_device_returns_invalid_device(void)
{
    int n = 0;
    CU(cuDeviceGetCount(&n));
    CUcontext c = NULL;
    EXPECT_RC(cuCtxCreate(&c, NULL, 0, (CUdevice)n), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RC(cuDevicePrimaryCtxRetain(&c, (CUdevice)n), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RC(cuDevicePrimaryCtxRelease((CUdevice)n), CUDA_ERROR_INVALID_DEVICE);
    unsigned int flags;
    int active;
    EXPECT_RC(cuDevicePrimaryCtxGetState((CUdevice)n, &flags, &active), CUDA_ERROR_INVALID_DEVICE);
    clear_stack();
}

static void cuCtxCreate_makes_the_new_context_current(void)
{
    CUcontext ctx = NULL, cur = NULL;
    CU(cuCtxCreate(&ctx, NULL, 0, g_dev));
    EXPECT(ctx != NULL, "cuCtxCreate returned a NULL context");
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx, "current %p, created %p", (void *)cur, (void *)ctx);
    CUdevice d = -1;
    CU(cuCtxGetDevice(&d));
    EXPECT(d == g_dev, "cuCtxGetDevice %d, created on %d", (int)d, (int)g_dev);
    CU(cuCtxDestroy(ctx));
    clear_stack();
}

static void push_and_pop_follow_stack_order(void)
{
    CUcontext a, b, c, cur, popped;
    CU(cuCtxCreate(&c, NULL, 0, g_dev));
    CU(cuCtxPopCurrent(&popped)); /* stack: empty */
    EXPECT(popped == c, "pop returned %p, expected the created context %p", (void *)popped, (void *)c);
    CU(cuCtxCreate(&a, NULL, 0, g_dev));
    CU(cuCtxCreate(&b, NULL, 0, g_dev)); /* stack: a b */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == b, "the second context created is not current");
    CU(cuCtxPopCurrent(&popped)); /* stack: a */
    EXPECT(popped == b, "pop returned %p, expected the second context %p", (void *)popped, (void *)b);
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == a, "after one pop the first context is not current");
    CU(cuCtxPushCurrent(c)); /* stack: a c */
    CU(cuCtxPushCurrent(b)); /* stack: a c b */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == b, "the last pushed context is not current");
    CU(cuCtxPopCurrent(&popped));
    EXPECT(popped == b, "pop did not return the last pushed context");
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == c, "after a pop the context pushed before is not current");
    CU(cuCtxPopCurrent(&popped));
    EXPECT(popped == c, "second pop did not return the context pushed before");
    CU(cuCtxPopCurrent(&popped));
    EXPECT(popped == a, "third pop did not return the bottom context");
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL, "the stack is not empty after popping everything");
    CU(cuCtxDestroy(a));
    CU(cuCtxDestroy(b));
    CU(cuCtxDestroy(c));
    clear_stack();
}

static void pop_on_empty_stack_returns_invalid_context(void)
{
    clear_stack();
    CUcontext popped;
    EXPECT_RC(cuCtxPopCurrent(&popped), CUDA_ERROR_INVALID_CONTEXT);
}

static void set_current_replaces_the_top_and_null_pops(void)
{
    CUcontext a, b, c, cur, popped;
    CU(cuCtxCreate(&c, NULL, 0, g_dev));
    CU(cuCtxPopCurrent(&popped)); /* stack: empty */
    CU(cuCtxCreate(&a, NULL, 0, g_dev));
    CU(cuCtxCreate(&b, NULL, 0, g_dev)); /* stack: a b */
    CU(cuCtxSetCurrent(c));              /* stack: a c */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == c, "cuCtxSetCurrent did not make the context current");
    CU(cuCtxSetCurrent(NULL)); /* stack: a */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == a, "cuCtxSetCurrent replaced more than the top, or NULL popped more than it");
    CU(cuCtxSetCurrent(NULL)); /* stack: empty */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL, "cuCtxSetCurrent(NULL) left %p current", (void *)cur);
    CU(cuCtxSetCurrent(NULL)); /* a no-op on an empty stack */
    EXPECT_RC(cuCtxPopCurrent(&popped), CUDA_ERROR_INVALID_CONTEXT);
    CU(cuCtxSetCurrent(b)); /* on an empty stack it binds b */
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == b, "cuCtxSetCurrent on an empty stack did not bind the context");
    CU(cuCtxPopCurrent(&popped));
    EXPECT(popped == b, "popped %p, expected %p", (void *)popped, (void *)b);
    CU(cuCtxDestroy(a));
    CU(cuCtxDestroy(b));
    CU(cuCtxDestroy(c));
    clear_stack();
}

static void destroying_the_current_context_pops_it(void)
{
    CUcontext a, b, cur;
    CU(cuCtxCreate(&a, NULL, 0, g_dev));
    CU(cuCtxCreate(&b, NULL, 0, g_dev)); /* stack: a b */
    CU(cuCtxDestroy(b));
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == a, "after destroying the current context, %p is current (expected %p)", (void *)cur,
           (void *)a);
    CU(cuCtxDestroy(a));
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL, "after destroying every context, %p is current", (void *)cur);
    clear_stack();
}

static void context_queries_report_device_flags_and_versions(void)
{
    CUcontext ctx;
    CU(cuCtxCreate(&ctx, NULL, CU_CTX_SCHED_BLOCKING_SYNC, g_dev));
    unsigned int flags = 0;
    CU(cuCtxGetFlags(&flags));
    EXPECT((flags & CU_CTX_SCHED_MASK) == CU_CTX_SCHED_BLOCKING_SYNC, "flags 0x%x", flags);
    CUdevice d = -1;
    CU(cuCtxGetDevice(&d));
    EXPECT(d == g_dev, "device %d", (int)d);
    unsigned int v_ctx = 0, v_cur = 0;
    CU(cuCtxGetApiVersion(ctx, &v_ctx));
    CU(cuCtxGetApiVersion(NULL, &v_cur));
    EXPECT(v_ctx >= 3020, "API version %u", v_ctx);
    EXPECT(v_ctx == v_cur, "API version %u by handle, %u for the current context", v_ctx, v_cur);
    int least = 1, greatest = 1;
    CU(cuCtxGetStreamPriorityRange(&least, &greatest));
    EXPECT(greatest <= least, "priorities: least %d, greatest %d", least, greatest);
    int supported = 0;
    CU(cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED, g_dev));
    if (supported)
        EXPECT(greatest < least, "priorities supported but the range is [%d, %d]", greatest, least);
    CU(cuCtxGetStreamPriorityRange(NULL, &greatest)); /* either output may be NULL */
    CU(cuCtxGetStreamPriorityRange(&least, NULL));
    CU(cuCtxDestroy(ctx));
    clear_stack();
}

static void context_ids_are_unique(void)
{
    CUcontext a, b;
    CU(cuCtxCreate(&a, NULL, 0, g_dev));
    CU(cuCtxCreate(&b, NULL, 0, g_dev));
    unsigned long long ia = 0, ib = 0, icur = 0;
    CU(cuCtxGetId(a, &ia));
    CU(cuCtxGetId(b, &ib));
    CU(cuCtxGetId(NULL, &icur));
    EXPECT(ia != ib, "two contexts share id %llu", ia);
    EXPECT(icur == ib, "id of the current context %llu, of b %llu", icur, ib);
    CU(cuCtxDestroy(b));
    CUcontext c;
    CU(cuCtxCreate(&c, NULL, 0, g_dev));
    unsigned long long ic = 0;
    CU(cuCtxGetId(c, &ic));
    EXPECT(ic != ia && ic != ib, "a new context reuses id %llu", ic);
    CU(cuCtxDestroy(c));
    CU(cuCtxDestroy(a));
    clear_stack();
}

typedef struct thread_report {
    CUcontext shared;
    CUresult get_current, get_device, mem_alloc, push, device_after_push, pop;
    CUcontext current;
    CUdevice device;
} thread_report;

static void *thread_body(void *arg)
{
    thread_report *r = arg;
    r->get_current = cuCtxGetCurrent(&r->current);
    CUdevice d;
    r->get_device = cuCtxGetDevice(&d);
    CUdeviceptr p;
    r->mem_alloc = cuMemAlloc(&p, 4096);
    if (r->mem_alloc == CUDA_SUCCESS)
        cuMemFree(p);
    r->push = cuCtxPushCurrent(r->shared);
    r->device_after_push = cuCtxGetDevice(&r->device);
    CUcontext popped;
    r->pop = cuCtxPopCurrent(&popped);
    return NULL;
}

static void a_new_thread_starts_with_no_current_context(void)
{
    CUcontext ctx;
    CU(cuCtxCreate(&ctx, NULL, 0, g_dev));
    thread_report r = {.shared = ctx, .current = (CUcontext)1, .device = -1};
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, thread_body, &r) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    EXPECT(r.get_current == CUDA_SUCCESS && r.current == NULL, "new thread: cuCtxGetCurrent %s, context %p",
           conf_err_name(r.get_current), (void *)r.current);
    EXPECT(r.get_device == CUDA_ERROR_INVALID_CONTEXT, "new thread: cuCtxGetDevice returned %s",
           conf_err_name(r.get_device));
    EXPECT(r.mem_alloc == CUDA_ERROR_INVALID_CONTEXT, "new thread: cuMemAlloc returned %s",
           conf_err_name(r.mem_alloc));
    EXPECT(r.push == CUDA_SUCCESS && r.device_after_push == CUDA_SUCCESS && r.device == g_dev,
           "new thread: pushing the main thread's context: %s, then cuCtxGetDevice %s (device %d)",
           conf_err_name(r.push), conf_err_name(r.device_after_push), (int)r.device);
    EXPECT(r.pop == CUDA_SUCCESS, "new thread: pop returned %s", conf_err_name(r.pop));
    CUcontext cur;
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx, "the main thread's current context changed");
    CU(cuCtxDestroy(ctx));
    clear_stack();
}

static void primary_context_retain_release_and_state(void)
{
    unsigned int flags;
    int active = -1;
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 0, "primary context active before any retain");
    CUcontext p1 = NULL, p2 = NULL, cur;
    CU(cuDevicePrimaryCtxRetain(&p1, g_dev));
    CU(cuDevicePrimaryCtxRetain(&p2, g_dev));
    EXPECT(p1 != NULL && p1 == p2, "two retains gave %p and %p", (void *)p1, (void *)p2);
    CU(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL, "retaining the primary context made it current");
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 1, "retained primary context reports active=%d", active);
    CU(cuDevicePrimaryCtxRelease(g_dev));
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 1, "primary context inactive with one reference left");
    CU(cuDevicePrimaryCtxRelease(g_dev));
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 0, "primary context still active after the last release");
    EXPECT_RC(cuDevicePrimaryCtxRelease(g_dev), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RC(cuDevicePrimaryCtxRetain(NULL, g_dev), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDevicePrimaryCtxGetState(g_dev, NULL, &active), CUDA_ERROR_INVALID_VALUE);
    clear_stack();
}

static void primary_context_is_usable_once_current(void)
{
    CUcontext p;
    CU(cuDevicePrimaryCtxRetain(&p, g_dev));
    CU(cuCtxPushCurrent(p));
    CUdeviceptr d;
    CU(cuMemAlloc(&d, 1 << 20));
    CU(cuMemFree(d));
    CUcontext popped;
    CU(cuCtxPopCurrent(&popped));
    EXPECT(popped == p, "popped %p, expected the primary context %p", (void *)popped, (void *)p);
    CU(cuDevicePrimaryCtxRelease(g_dev));
    clear_stack();
}

static void primary_context_flags_can_be_set_while_active(void)
{
    CUcontext p;
    CU(cuDevicePrimaryCtxRetain(&p, g_dev));
    /* cuDevicePrimaryCtxSetFlags is the _v2 entry point, which accepts an active context. */
    CU(cuDevicePrimaryCtxSetFlags(g_dev, CU_CTX_SCHED_BLOCKING_SYNC));
    unsigned int flags = 0;
    int active = 0;
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 1, "setting flags deactivated the primary context");
    EXPECT((flags & CU_CTX_SCHED_MASK) == CU_CTX_SCHED_BLOCKING_SYNC, "flags 0x%x", flags);
    CU(cuDevicePrimaryCtxSetFlags(g_dev, CU_CTX_SCHED_AUTO));
    CU(cuDevicePrimaryCtxRelease(g_dev));
}

static void invalid_context_flags_return_invalid_value(void)
{
    /* Every bit set: several scheduling policies at once and bits outside CU_CTX_FLAGS_MASK. */
    EXPECT_RC(cuDevicePrimaryCtxSetFlags(g_dev, ~0u), CUDA_ERROR_INVALID_VALUE);
    CUcontext c = NULL;
    EXPECT_RC(cuCtxCreate(&c, NULL, ~0u, g_dev), CUDA_ERROR_INVALID_VALUE);
    clear_stack();
}

static void primary_context_reset_deactivates_it(void)
{
    CUcontext p;
    CU(cuDevicePrimaryCtxRetain(&p, g_dev));
    CU(cuCtxPushCurrent(p));
    CUdeviceptr d;
    CU(cuMemAlloc(&d, 1 << 20));
    CUcontext popped;
    CU(cuCtxPopCurrent(&popped));
    CU(cuDevicePrimaryCtxReset(g_dev));
    unsigned int flags;
    int active = -1;
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 0, "primary context still active after cuDevicePrimaryCtxReset");
    /* NVIDIA: a reset does not release, and releasing after a reset is safe. What the release returns then
     * is not documented, so it is not checked. */
    (void)cuDevicePrimaryCtxRelease(g_dev);
    CU(cuDevicePrimaryCtxGetState(g_dev, &flags, &active));
    EXPECT(active == 0, "primary context active after reset and release");
    clear_stack();
}

static void malloc_heap_limit_round_trips(void)
{
    CUcontext ctx;
    CU(cuCtxCreate(&ctx, NULL, 0, g_dev));
    size_t want = 32u << 20, got = 0;
    CU(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, want));
    CU(cuCtxGetLimit(&got, CU_LIMIT_MALLOC_HEAP_SIZE));
    /* The driver may round the request up to what the hardware needs, never below it. */
    EXPECT(got >= want, "heap limit set to %zu, reads back %zu", want, got);
    EXPECT_RC(cuCtxGetLimit(NULL, CU_LIMIT_MALLOC_HEAP_SIZE), CUDA_ERROR_INVALID_VALUE);
    CU(cuCtxDestroy(ctx));
    clear_stack();
}

static void invalid_limit_is_rejected(void)
{
    CUcontext ctx;
    CU(cuCtxCreate(&ctx, NULL, 0, g_dev));
    /* Which of the two documented codes a limit the driver does not know gets is not pinned down. */
    size_t v = 0;
    CUresult set = cuCtxSetLimit((CUlimit)0x7fff, 1);
    EXPECT(set == CUDA_ERROR_INVALID_VALUE || set == CUDA_ERROR_UNSUPPORTED_LIMIT,
           "cuCtxSetLimit returned %s", conf_err_name(set));
    CUresult get = cuCtxGetLimit(&v, (CUlimit)0x7fff);
    EXPECT(get == CUDA_ERROR_INVALID_VALUE || get == CUDA_ERROR_UNSUPPORTED_LIMIT,
           "cuCtxGetLimit returned %s", conf_err_name(get));
    CU(cuCtxDestroy(ctx));
    clear_stack();
}

int main(void)
{
    RUN(calls_without_a_current_context_return_invalid_context);
    RUN(bad_device_returns_invalid_device);
    RUN(cuCtxCreate_makes_the_new_context_current);
    RUN(push_and_pop_follow_stack_order);
    RUN(pop_on_empty_stack_returns_invalid_context);
    RUN(set_current_replaces_the_top_and_null_pops);
    RUN(destroying_the_current_context_pops_it);
    RUN(context_queries_report_device_flags_and_versions);
    RUN(context_ids_are_unique);
    RUN(a_new_thread_starts_with_no_current_context);
    RUN(primary_context_retain_release_and_state);
    RUN(primary_context_is_usable_once_current);
    RUN(primary_context_flags_can_be_set_while_active);
    RUN(invalid_context_flags_return_invalid_value);
    RUN(primary_context_reset_deactivates_it);
    RUN(malloc_heap_limit_round_trips);
    RUN(invalid_limit_is_rejected);
    CONF_EXIT();
}

/* conf_stream.c - streams: creation, ordering, queries, host functions, waits on events, the legacy
 * default stream's implicit synchronisation, the per-thread stream handle, priorities and getters.
 *
 * Device time comes from spin_ns (waits N ns of %globaltimer). NOT_READY is asserted only while the host
 * clock shows the spin cannot have finished, or while a host function the test controls holds the stream;
 * durations get only lower bounds, so a slow or loaded machine cannot fail a test by being slow.
 */
#include "check.h"

#include <stdatomic.h>
#include <unistd.h>

#define MS_NS 1000000ull

static CUcontext g_ctx;
static CUmodule g_mod;
static CUfunction g_fill, g_add_one, g_spin;

static CUresult spin(CUstream s, uint64_t ns)
{
    void *args[] = {&ns};
    return cuLaunchKernel(g_spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL);
}

static CUresult fill(CUstream s, CUdeviceptr p, uint32_t v, uint64_t n)
{
    void *args[] = {&p, &v, &n};
    return cuLaunchKernel(g_fill, (unsigned)((n + 255) / 256), 1, 1, 256, 1, 1, 0, s, args, NULL);
}

/* The index of the first of n words that is not v, or n. */
static size_t first_not(const uint32_t *p, size_t n, uint32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return i;
    return n;
}

static void create_with_unknown_flags_is_invalid_value(void)
{
    CUstream s;
    EXPECT_RC(cuStreamCreate(&s, 0xF0u), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuStreamCreateWithPriority(&s, 0xF0u, 0), CUDA_ERROR_INVALID_VALUE);
}

static void new_stream_queries_success(void)
{
    CUstream s;
    CU(cuStreamCreate(&s, 0));
    EXPECT_RC(cuStreamQuery(s), CUDA_SUCCESS);
    CU(cuStreamDestroy(s));
}

static void launches_on_one_stream_run_in_order(void)
{
    enum { N = 65536, LAUNCHES = 1000 };
    CUstream s;
    CUdeviceptr d;
    uint32_t *h;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&h, N * 4));
    CU(cuMemsetD32Async(d, 0, N, s));
    uint32_t n = N;
    void *args[] = {&d, &n};
    for (int i = 0; i < LAUNCHES; i++)
        CU(cuLaunchKernel(g_add_one, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, s));
    CU(cuStreamSynchronize(s));
    size_t i = first_not(h, N, LAUNCHES);
    EXPECT(i == N, "element %zu is %u after %d increments", i, i < N ? h[i] : 0, LAUNCHES);
    cuMemFreeHost(h);
    cuMemFree(d);
    cuStreamDestroy(s);
}

static void query_is_not_ready_while_a_kernel_runs(void)
{
    const uint64_t spin_ns = 200 * MS_NS;
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    uint64_t t0 = conf_now_ns();
    CU(spin(s, spin_ns));
    CUresult r = cuStreamQuery(s);
    if (conf_now_ns() - t0 < spin_ns)
        EXPECT(r == CUDA_ERROR_NOT_READY, "cuStreamQuery during the spin returned %s", conf_err_name(r));
    EXPECT_RC(cuStreamSynchronize(s), CUDA_SUCCESS);
    uint64_t waited = conf_now_ns() - t0;
    EXPECT(waited >= spin_ns - 5 * MS_NS, "cuStreamSynchronize returned %.1f ms after a 200 ms spin began",
           (double)waited / 1e6);
    EXPECT_RC(cuStreamQuery(s), CUDA_SUCCESS);
    cuStreamDestroy(s);
}

/* What the host functions saw: the order they ran in and the data they found. */
typedef struct order_log {
    atomic_int next;
    int order_a, order_b;
    uint32_t a_first, a_last, b_saw;
    const uint32_t *pinned;
} order_log;

static void host_fn_a(void *p)
{
    order_log *l = p;
    l->a_first = l->pinned[0];
    usleep(30000); /* later work must not run meanwhile */
    l->a_last = l->pinned[0];
    l->order_a = atomic_fetch_add(&l->next, 1);
}

static void CUDA_CB callback_b(CUstream s, CUresult status, void *p)
{
    (void)s;
    order_log *l = p;
    l->b_saw = status == CUDA_SUCCESS ? l->pinned[0] : 0xFFFFFFFFu;
    l->order_b = atomic_fetch_add(&l->next, 1);
}

static void host_functions_run_in_stream_order(void)
{
    enum { N = 4096 };
    CUstream s;
    CUdeviceptr d;
    uint32_t *h;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&h, N * 4));
    memset(h, 0, N * 4);
    order_log l = {.order_a = -1, .order_b = -1, .pinned = h};
    atomic_init(&l.next, 1);

    CU(spin(s, 20 * MS_NS)); /* host function A must wait for this and the fill */
    CU(fill(s, d, 7, N));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, s));
    CU(cuLaunchHostFunc(s, host_fn_a, &l));
    CU(fill(s, d, 9, N));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, s));
    CU(cuStreamAddCallback(s, callback_b, &l, 0));
    CU(cuStreamSynchronize(s));

    EXPECT(l.a_first == 7, "the host function saw %u, not the 7 the kernel before it wrote", l.a_first);
    EXPECT(l.a_last == 7, "work after the host function ran while it did (saw %u)", l.a_last);
    EXPECT(l.b_saw == 9, "the callback saw %u, not the 9 of the work before it", l.b_saw);
    EXPECT(l.order_a == 1 && l.order_b == 2, "host function ran %d-th, callback %d-th", l.order_a, l.order_b);
    EXPECT(h[N - 1] == 9, "final value %u", h[N - 1]);
    cuMemFreeHost(h);
    cuMemFree(d);
    cuStreamDestroy(s);
}

static void stream_wait_event_orders_across_streams(void)
{
    enum { N = 65536 };
    CUstream a, b;
    CUevent e;
    CUdeviceptr d;
    uint32_t *h;
    CU(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
    CU(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&h, N * 4));
    CU(cuMemsetD32(d, 0, N));
    CU(cuCtxSynchronize());

    CU(spin(a, 100 * MS_NS));
    CU(fill(a, d, 0xA11CE, N));
    CU(cuEventRecord(e, a));
    CU(cuStreamWaitEvent(b, e, 0));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, b));
    CU(cuStreamSynchronize(b));
    size_t i = first_not(h, N, 0xA11CE);
    EXPECT(i == N, "stream B copied element %zu = 0x%x before stream A's fill", i, i < N ? h[i] : 0);
    CU(cuStreamSynchronize(a));
    cuMemFreeHost(h);
    cuMemFree(d);
    cuEventDestroy(e);
    cuStreamDestroy(a);
    cuStreamDestroy(b);
}

static void null_stream_and_blocking_streams_wait_for_each_other(void)
{
    enum { N = 65536 };
    CUstream s;
    CUdeviceptr d;
    uint32_t *h;
    CU(cuStreamCreate(&s, CU_STREAM_DEFAULT));
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&h, N * 4));
    CU(cuMemsetD32(d, 0, N));
    CU(cuCtxSynchronize());

    /* Blocking stream first: the NULL stream's copy must see its fill. */
    CU(spin(s, 100 * MS_NS));
    CU(fill(s, d, 5, N));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, NULL));
    CU(cuStreamSynchronize(NULL));
    size_t i = first_not(h, N, 5);
    EXPECT(i == N, "the NULL stream copied element %zu = %u before the blocking stream's fill", i,
           i < N ? h[i] : 0);
    CU(cuCtxSynchronize());

    /* NULL stream first: the blocking stream's copy must see the NULL stream's fill. */
    CU(spin(NULL, 100 * MS_NS));
    CU(fill(NULL, d, 6, N));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, s));
    CU(cuStreamSynchronize(s));
    i = first_not(h, N, 6);
    EXPECT(i == N, "the blocking stream copied element %zu = %u before the NULL stream's fill", i,
           i < N ? h[i] : 0);
    CU(cuCtxSynchronize());
    cuMemFreeHost(h);
    cuMemFree(d);
    cuStreamDestroy(s);
}

/* A host function that holds its stream until the test opens the gate (bounded at 20 s). */
static atomic_int g_gate;

static void wait_for_gate(void *unused)
{
    (void)unused;
    for (int i = 0; i < 20000 && !atomic_load(&g_gate); i++)
        usleep(1000);
}

static void non_blocking_stream_does_not_wait_for_null_stream(void)
{
    enum { N = 1024 };
    CUstream nb;
    CUdeviceptr d;
    uint32_t *src, *dst;
    CU(cuStreamCreate(&nb, CU_STREAM_NON_BLOCKING));
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&src, N * 4));
    CU(cuMemAllocHost((void **)&dst, N * 4));
    for (uint32_t i = 0; i < N; i++)
        src[i] = i * 2654435761u;
    memset(dst, 0, N * 4);
    CU(cuCtxSynchronize());

    /* The NULL stream spins, then stays busy until the gate opens, so it is certainly not done while the gate
     * is closed, however slow the host. The non-blocking stream's work is copies: they need no SM, so they
     * can run beside the spin whether or not the device runs kernels of two streams at once. */
    atomic_store(&g_gate, 0);
    CU(spin(NULL, 100 * MS_NS));
    CU(cuLaunchHostFunc(NULL, wait_for_gate, NULL));
    CU(cuMemcpyHtoDAsync(d, src, N * 4, nb));
    CU(cuMemcpyDtoHAsync(dst, d, N * 4, nb));
    CU(cuStreamSynchronize(nb));
    EXPECT(memcmp(src, dst, N * 4) == 0, "the non-blocking stream's copies did not complete");
    EXPECT_RC(cuStreamQuery(NULL), CUDA_ERROR_NOT_READY);
    EXPECT_RC(cuStreamQuery(CU_STREAM_LEGACY), CUDA_ERROR_NOT_READY);
    atomic_store(&g_gate, 1);
    CU(cuCtxSynchronize());
    EXPECT_RC(cuStreamQuery(NULL), CUDA_SUCCESS);
    cuMemFreeHost(src);
    cuMemFreeHost(dst);
    cuMemFree(d);
    cuStreamDestroy(nb);
}

static void per_thread_stream_handle_is_usable(void)
{
    enum { N = 4096 };
    CUdeviceptr d;
    uint32_t *h;
    CU(cuMemAlloc(&d, N * 4));
    CU(cuMemAllocHost((void **)&h, N * 4));
    memset(h, 0, N * 4);
    CU(fill(CU_STREAM_PER_THREAD, d, 0x7EAD, N));
    CU(cuMemcpyDtoHAsync(h, d, N * 4, CU_STREAM_PER_THREAD));
    CU(cuStreamSynchronize(CU_STREAM_PER_THREAD));
    EXPECT_RC(cuStreamQuery(CU_STREAM_PER_THREAD), CUDA_SUCCESS);
    size_t i = first_not(h, N, 0x7EAD);
    EXPECT(i == N, "element %zu is 0x%x", i, i < N ? h[i] : 0);
    cuMemFreeHost(h);
    cuMemFree(d);
}

static void getters_report_priority_flags_and_context(void)
{
    CUstream a, b;
    CU(cuStreamCreate(&a, CU_STREAM_DEFAULT));
    CU(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    int prio = 99;
    unsigned flags = 99;
    CUcontext c = NULL;
    CU(cuStreamGetPriority(a, &prio));
    EXPECT(prio == 0, "a stream made by cuStreamCreate has priority %d, not the default 0", prio);
    CU(cuStreamGetFlags(a, &flags));
    EXPECT(flags == CU_STREAM_DEFAULT, "flags 0x%x", flags);
    CU(cuStreamGetFlags(b, &flags));
    EXPECT(flags == CU_STREAM_NON_BLOCKING, "flags 0x%x", flags);
    CU(cuStreamGetCtx(a, &c));
    EXPECT(c == g_ctx, "cuStreamGetCtx gave %p, not the creating context %p", (void *)c, (void *)g_ctx);
    CU(cuStreamGetCtx(b, &c));
    EXPECT(c == g_ctx, "cuStreamGetCtx gave %p, not the creating context %p", (void *)c, (void *)g_ctx);
    cuStreamDestroy(a);
    cuStreamDestroy(b);
}

static void priorities_are_clamped_into_the_context_range(void)
{
    int least = 0, greatest = 0, p = 0;
    CU(cuCtxGetStreamPriorityRange(&least, &greatest));
    EXPECT(greatest <= least, "range [%d, %d]: lower numbers are greater priorities", greatest, least);
    CUstream hi, lo, mid;
    CU(cuStreamCreateWithPriority(&hi, 0, greatest - 1000));
    CU(cuStreamCreateWithPriority(&lo, CU_STREAM_NON_BLOCKING, least + 1000));
    CU(cuStreamCreateWithPriority(&mid, 0, greatest));
    CU(cuStreamGetPriority(hi, &p));
    EXPECT(p == greatest, "priority %d clamped to %d, expected %d", greatest - 1000, p, greatest);
    CU(cuStreamGetPriority(lo, &p));
    EXPECT(p == least, "priority %d clamped to %d, expected %d", least + 1000, p, least);
    CU(cuStreamGetPriority(mid, &p));
    EXPECT(p == greatest, "priority %d in range came back as %d", greatest, p);
    unsigned flags = 0;
    CU(cuStreamGetFlags(lo, &flags));
    EXPECT(flags == CU_STREAM_NON_BLOCKING, "flags 0x%x", flags);
    cuStreamDestroy(hi);
    cuStreamDestroy(lo);
    cuStreamDestroy(mid);
}

static void ctx_synchronize_waits_for_all_streams(void)
{
    enum { N = 4096 };
    const uint64_t spin_ns = 100 * MS_NS;
    CUstream a, b;
    CUdeviceptr da, db;
    uint32_t *ha, *hb;
    CU(cuStreamCreate(&a, CU_STREAM_DEFAULT));
    CU(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
    CU(cuMemAlloc(&da, N * 4));
    CU(cuMemAlloc(&db, N * 4));
    CU(cuMemAllocHost((void **)&ha, N * 4));
    CU(cuMemAllocHost((void **)&hb, N * 4));
    memset(ha, 0, N * 4);
    memset(hb, 0, N * 4);
    uint64_t t0 = conf_now_ns();
    CU(spin(a, spin_ns));
    CU(fill(a, da, 0xAAAA, N));
    CU(cuMemcpyDtoHAsync(ha, da, N * 4, a));
    CU(spin(b, spin_ns));
    CU(fill(b, db, 0xBBBB, N));
    CU(cuMemcpyDtoHAsync(hb, db, N * 4, b));
    CU(cuCtxSynchronize());
    uint64_t waited = conf_now_ns() - t0;
    EXPECT(waited >= spin_ns - 5 * MS_NS,
           "cuCtxSynchronize returned after %.1f ms, before a 100 ms spin ended", (double)waited / 1e6);
    EXPECT_RC(cuStreamQuery(a), CUDA_SUCCESS);
    EXPECT_RC(cuStreamQuery(b), CUDA_SUCCESS);
    EXPECT(first_not(ha, N, 0xAAAA) == N, "stream A's copy had not landed");
    EXPECT(first_not(hb, N, 0xBBBB) == N, "stream B's copy had not landed");
    cuMemFreeHost(ha);
    cuMemFreeHost(hb);
    cuMemFree(da);
    cuMemFree(db);
    cuStreamDestroy(a);
    cuStreamDestroy(b);
}

int main(void)
{
    CUresult r = conf_context(&g_ctx);
    if (r == CUDA_SUCCESS)
        r = conf_module(&g_mod);
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&g_fill, g_mod, "fill_u32");
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&g_add_one, g_mod, "add_one_u32");
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&g_spin, g_mod, "spin_ns");
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(create_with_unknown_flags_is_invalid_value);
    RUN(new_stream_queries_success);
    RUN(launches_on_one_stream_run_in_order);
    RUN(query_is_not_ready_while_a_kernel_runs);
    RUN(host_functions_run_in_stream_order);
    RUN(stream_wait_event_orders_across_streams);
    RUN(null_stream_and_blocking_streams_wait_for_each_other);
    RUN(non_blocking_stream_does_not_wait_for_null_stream);
    RUN(per_thread_stream_handle_is_usable);
    RUN(getters_report_priority_flags_and_context);
    RUN(priorities_are_clamped_into_the_context_range);
    RUN(ctx_synchronize_waits_for_all_streams);
    atomic_store(&g_gate, 1);
    cuModuleUnload(g_mod);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

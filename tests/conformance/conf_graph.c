/* conf_graph.c - CUDA graphs and stream capture: building graphs node by node, instantiating and
 * launching them, capturing stream work (across streams through events), and what capture forbids.
 *
 * Results are checked through data: kernels fill and increment words (sample.ptx), memset and memcpy nodes
 * move them, host nodes record that and when they ran. Ordering is asserted only where dependencies
 * make it certain. NOT_READY is asserted only while the host clock shows a spin cannot have finished.
 */
#include "check.h"

#include <stdatomic.h>
#include <stdbool.h>

#define MS_NS 1000000ull

static CUcontext g_ctx;
static CUmodule g_mod;
static CUfunction g_fill, g_add_one, g_spin;

enum { N = 4096 };

static size_t first_not(const uint32_t *p, size_t n, uint32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return i;
    return n;
}

static CUDA_KERNEL_NODE_PARAMS kernel_params(CUfunction f, unsigned blocks, void **args)
{
    CUDA_KERNEL_NODE_PARAMS k;
    memset(&k, 0, sizeof k);
    k.func = f;
    k.gridDimX = blocks;
    k.gridDimY = k.gridDimZ = 1;
    k.blockDimX = 256;
    k.blockDimY = k.blockDimZ = 1;
    k.kernelParams = args;
    return k;
}

static CUDA_MEMCPY3D dtoh_params(void *dst, CUdeviceptr src, size_t bytes)
{
    CUDA_MEMCPY3D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = dst;
    c.WidthInBytes = bytes;
    c.Height = 1;
    c.Depth = 1;
    return c;
}

typedef struct host_log {
    atomic_int calls;
    const uint32_t *watch; /* pinned memory the host node looks at */
    uint32_t seen;
} host_log;

static void CUDA_CB host_record(void *p)
{
    host_log *l = p;
    if (l->watch)
        l->seen = l->watch[N - 1];
    atomic_fetch_add(&l->calls, 1);
}

static void empty_graph_is_created_launched_and_destroyed(void)
{
    CUgraph g;
    CUgraphExec x;
    CU(cuGraphCreate(&g, 0));
    size_t n = 99;
    CU(cuGraphGetNodes(g, NULL, &n));
    EXPECT(n == 0, "a new graph has %zu nodes", n);
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, NULL));
    CU(cuStreamSynchronize(NULL));
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    EXPECT_RC(cuGraphCreate(&g, 1), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGraphCreate(NULL, 0), CUDA_ERROR_INVALID_VALUE);
}

/* memset -> kernel -> memcpy -> host node, launched twice. */
static void chain_of_nodes_runs_in_dependency_order(void)
{
    CUdeviceptr buf = 0;
    uint32_t *pinned = NULL;
    CUstream s = NULL;
    CU(cuMemAlloc(&buf, N * 4));
    CU(cuMemAllocHost((void **)&pinned, N * 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    memset(pinned, 0, N * 4);

    CUgraph g;
    CU(cuGraphCreate(&g, 0));
    CUgraphNode set, inc, copy, host;
    CUDA_MEMSET_NODE_PARAMS ms;
    memset(&ms, 0, sizeof ms);
    ms.dst = buf;
    ms.value = 41;
    ms.elementSize = 4;
    ms.width = N;
    ms.height = 1;
    CU(cuGraphAddMemsetNode(&set, g, NULL, 0, &ms, g_ctx));
    uint32_t n32 = N;
    void *args[] = {&buf, &n32};
    CUDA_KERNEL_NODE_PARAMS k = kernel_params(g_add_one, N / 256, args);
    CU(cuGraphAddKernelNode(&inc, g, &set, 1, &k));
    CUDA_MEMCPY3D cp = dtoh_params(pinned, buf, N * 4);
    CU(cuGraphAddMemcpyNode(&copy, g, &inc, 1, &cp, g_ctx));
    host_log log = {.watch = pinned};
    CUDA_HOST_NODE_PARAMS hp = {host_record, &log};
    CU(cuGraphAddHostNode(&host, g, &copy, 1, &hp));

    CUgraphNode nodes[6];
    size_t count = 6;
    CU(cuGraphGetNodes(g, nodes, &count));
    EXPECT(count == 4, "cuGraphGetNodes found %zu nodes", count);
    bool all = count == 4;
    CUgraphNode want[4] = {set, inc, copy, host};
    for (int i = 0; i < 4 && all; i++) {
        bool found = false;
        for (size_t j = 0; j < count; j++)
            found |= nodes[j] == want[i];
        all &= found;
    }
    EXPECT(all, "cuGraphGetNodes does not list the nodes added");
    EXPECT(nodes[4] == NULL && nodes[5] == NULL, "entries past the node count are not NULL");

    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    for (int round = 1; round <= 2; round++) {
        CU(cuGraphLaunch(x, s));
        CU(cuStreamSynchronize(s));
        size_t d = first_not(pinned, N, 42);
        EXPECT(d == N, "launch %d: word %zu is %u, not 42", round, d, d < N ? pinned[d] : 0);
        EXPECT(atomic_load(&log.calls) == round, "launch %d: the host node ran %d times", round,
               atomic_load(&log.calls));
        EXPECT(log.seen == 42, "launch %d: the host node saw %u before the copy had landed", round, log.seen);
    }
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    cuStreamDestroy(s);
    cuMemFreeHost(pinned);
    cuMemFree(buf);
}

/* fill -> two independent increments of the halves -> a join node -> copy out. */
static void diamond_dependencies_are_honoured(void)
{
    CUdeviceptr buf = 0;
    CU(cuMemAlloc(&buf, N * 4));
    CUgraph g;
    CU(cuGraphCreate(&g, 0));
    CUgraphNode fill, left, right, join, copy;
    uint32_t v = 7;
    uint64_t n64 = N;
    void *fargs[] = {&buf, &v, &n64};
    CUDA_KERNEL_NODE_PARAMS k = kernel_params(g_fill, N / 256, fargs);
    CU(cuGraphAddKernelNode(&fill, g, NULL, 0, &k));
    CUdeviceptr hi = buf + N * 2;
    uint32_t half = N / 2;
    void *largs[] = {&buf, &half}, *rargs[] = {&hi, &half};
    k = kernel_params(g_add_one, N / 512, largs);
    CU(cuGraphAddKernelNode(&left, g, &fill, 1, &k));
    k = kernel_params(g_add_one, N / 512, rargs);
    CU(cuGraphAddKernelNode(&right, g, &fill, 1, &k));
    CUgraphNode both[2] = {left, right};
    CU(cuGraphAddEmptyNode(&join, g, both, 2));
    static uint32_t out[N];
    memset(out, 0, sizeof out);
    CUDA_MEMCPY3D cp = dtoh_params(out, buf, sizeof out);
    CU(cuGraphAddMemcpyNode(&copy, g, &join, 1, &cp, g_ctx));
    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, NULL));
    CU(cuStreamSynchronize(NULL));
    size_t d = first_not(out, N, 8);
    EXPECT(d == N, "word %zu is %u, not 8", d, d < N ? out[d] : 0);
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    cuMemFree(buf);
}

static void kernel_node_arguments_are_copied_when_added(void)
{
    CUdeviceptr buf = 0;
    CU(cuMemAlloc(&buf, N * 4));
    CUgraph g;
    CU(cuGraphCreate(&g, 0));
    CUgraphNode node;
    uint32_t v = 1234;
    uint64_t n64 = N;
    void *args[] = {&buf, &v, &n64};
    CUDA_KERNEL_NODE_PARAMS k = kernel_params(g_fill, N / 256, args);
    CU(cuGraphAddKernelNode(&node, g, NULL, 0, &k));
    v = 99; /* too late: the node holds its own copy */
    n64 = 1;
    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, NULL));
    static uint32_t out[N];
    CU(cuMemcpyDtoH(out, buf, sizeof out));
    size_t d = first_not(out, N, 1234);
    EXPECT(d == N, "word %zu is %u, not 1234", d, d < N ? out[d] : 0);
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    cuMemFree(buf);
}

static void graph_launch_is_asynchronous(void)
{
    const uint64_t spin = 200 * MS_NS;
    CUgraph g;
    CU(cuGraphCreate(&g, 0));
    CUgraphNode node;
    uint64_t ns = spin;
    void *args[] = {&ns};
    CUDA_KERNEL_NODE_PARAMS k = kernel_params(g_spin, 1, args);
    k.blockDimX = 1;
    CU(cuGraphAddKernelNode(&node, g, NULL, 0, &k));
    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    uint64_t t0 = conf_now_ns();
    CU(cuGraphLaunch(x, s));
    CUresult r = cuStreamQuery(s);
    if (conf_now_ns() - t0 < spin)
        EXPECT(r == CUDA_ERROR_NOT_READY, "cuStreamQuery right after the launch returned %s",
               conf_err_name(r));
    CU(cuStreamSynchronize(s));
    EXPECT(conf_now_ns() - t0 >= spin - 5 * MS_NS, "the graph's 200 ms kernel took %.1f ms",
           (double)(conf_now_ns() - t0) / 1e6);
    /* Destroying an executable graph with a launch in flight is allowed. */
    CU(cuGraphLaunch(x, s));
    CU(cuGraphExecDestroy(x));
    CU(cuStreamSynchronize(s));
    CU(cuGraphDestroy(g));
    cuStreamDestroy(s);
}

static void instantiate_with_params_reports_success_and_uploads(void)
{
    CUgraph g;
    CU(cuGraphCreate(&g, 0));
    CUgraphNode e;
    CU(cuGraphAddEmptyNode(&e, g, NULL, 0));
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUDA_GRAPH_INSTANTIATE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.flags = CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD;
    p.hUploadStream = s;
    p.hErrNode_out = e;
    p.result_out = CUDA_GRAPH_INSTANTIATE_ERROR;
    CUgraphExec x;
    CU(cuGraphInstantiateWithParams(&x, g, &p));
    EXPECT(p.result_out == CUDA_GRAPH_INSTANTIATE_SUCCESS, "result_out %d", (int)p.result_out);
    EXPECT(p.hErrNode_out == NULL, "hErrNode_out is set on success");
    CU(cuGraphUpload(x, s));
    CU(cuGraphLaunch(x, s));
    CU(cuStreamSynchronize(s));
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    cuStreamDestroy(s);
}

static void bad_nodes_and_handles_are_invalid_value(void)
{
    CUgraph g, other;
    CU(cuGraphCreate(&g, 0));
    CU(cuGraphCreate(&other, 0));
    CUgraphNode a, b, foreign;
    CU(cuGraphAddEmptyNode(&a, g, NULL, 0));
    CU(cuGraphAddEmptyNode(&foreign, other, NULL, 0));
    CUgraphNode dup[2] = {a, a};
    EXPECT_RC(cuGraphAddEmptyNode(&b, g, dup, 2), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGraphAddEmptyNode(&b, g, &foreign, 1), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGraphAddEmptyNode(&b, g, NULL, 1), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGraphAddKernelNode(&b, g, NULL, 0, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuGraphAddHostNode(&b, g, NULL, 0, NULL), CUDA_ERROR_INVALID_VALUE);
    CUDA_MEMSET_NODE_PARAMS ms;
    memset(&ms, 0, sizeof ms);
    CUdeviceptr buf;
    CU(cuMemAlloc(&buf, 4096));
    ms.dst = buf;
    ms.elementSize = 3; /* must be 1, 2 or 4 */
    ms.width = 16;
    ms.height = 1;
    EXPECT_RC(cuGraphAddMemsetNode(&b, g, NULL, 0, &ms, g_ctx), CUDA_ERROR_INVALID_VALUE);
    /* A kernel node with both kernelParams and extra. */
    uint32_t v = 0;
    uint64_t n64 = 1;
    void *args[] = {&buf, &v, &n64};
    void *extra[] = {CU_LAUNCH_PARAM_END};
    CUDA_KERNEL_NODE_PARAMS k = kernel_params(g_fill, 1, args);
    k.extra = extra;
    EXPECT_RC(cuGraphAddKernelNode(&b, g, NULL, 0, &k), CUDA_ERROR_INVALID_VALUE);
    size_t n = 0;
    EXPECT_RC(cuGraphGetNodes(g, NULL, NULL), CUDA_ERROR_INVALID_VALUE);
    CU(cuGraphGetNodes(g, NULL, &n));
    EXPECT(n == 1, "failed additions left %zu nodes", n);
    EXPECT_RC(cuGraphInstantiate(NULL, g, 0), CUDA_ERROR_INVALID_VALUE);
    CU(cuGraphDestroy(other));
    CU(cuGraphDestroy(g));
    cuMemFree(buf);
}

/* ---- stream capture ------------------------------------------------------------------------------- */

static void captured_work_runs_only_when_the_graph_is_launched(void)
{
    CUdeviceptr buf = 0;
    uint32_t *pinned = NULL;
    CUstream s = NULL;
    CU(cuMemAlloc(&buf, N * 4));
    CU(cuMemAllocHost((void **)&pinned, N * 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuMemsetD32(buf, 0, N));
    CU(cuCtxSynchronize());
    memset(pinned, 0xee, N * 4);
    host_log log = {.watch = pinned};

    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    CU(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "status %d before capture", (int)st);
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_ACTIVE, "status %d during capture", (int)st);
    CU(cuMemsetD32Async(buf, 10, N, s));
    uint32_t n32 = N;
    void *args[] = {&buf, &n32};
    CU(cuLaunchKernel(g_add_one, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));

    /* The capture's dependency set is the kernel node, which the graph will hold. */
    CUstreamCaptureStatus info = CU_STREAM_CAPTURE_STATUS_NONE;
    cuuint64_t id = 0;
    CUgraph capturing = NULL;
    const CUgraphNode *deps = NULL;
    size_t ndeps = 0;
    CU(cuStreamGetCaptureInfo(s, &info, &id, &capturing, &deps, NULL, &ndeps));
    EXPECT(info == CU_STREAM_CAPTURE_STATUS_ACTIVE && capturing != NULL && ndeps == 1,
           "capture info: status %d, graph %p, %zu dependencies", (int)info, (void *)capturing, ndeps);
    CUgraphNode kernel_node = ndeps == 1 ? deps[0] : NULL;

    CU(cuMemcpyDtoHAsync(pinned, buf, N * 4, s));
    CU(cuLaunchHostFunc(s, host_record, &log));
    CUgraph g = NULL;
    CU(cuStreamEndCapture(s, &g));
    EXPECT(g != NULL, "cuStreamEndCapture returned no graph");
    CU(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "status %d after capture", (int)st);
    /* Nothing ran. */
    CU(cuStreamSynchronize(s));
    EXPECT(atomic_load(&log.calls) == 0, "a captured host function ran during capture");
    EXPECT(pinned[0] == 0xeeeeeeeeu, "a captured copy ran during capture");

    size_t n = 0;
    CU(cuGraphGetNodes(g, NULL, &n));
    EXPECT(n == 4, "the captured graph has %zu nodes, not 4", n);
    CUgraphNode nodes[4];
    size_t got = 4;
    CU(cuGraphGetNodes(g, nodes, &got));
    bool found = false;
    for (size_t i = 0; i < got; i++)
        found |= nodes[i] == kernel_node;
    EXPECT(found, "the node of cuStreamGetCaptureInfo is not in the graph");

    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, s));
    CU(cuStreamSynchronize(s));
    size_t d = first_not(pinned, N, 11);
    EXPECT(d == N, "word %zu is %u, not 11", d, d < N ? pinned[d] : 0);
    EXPECT(atomic_load(&log.calls) == 1 && log.seen == 11, "host node: %d calls, saw %u",
           atomic_load(&log.calls), log.seen);
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));
    cuStreamDestroy(s);
    cuMemFreeHost(pinned);
    cuMemFree(buf);
}

/* s1 forks s2 through an event, each fills half, s1 joins s2 through another event. */
static void capture_forks_and_joins_across_streams_through_events(void)
{
    CUdeviceptr buf = 0;
    CUstream s1 = NULL, s2 = NULL;
    CUevent fork_ev = NULL, join_ev = NULL;
    CU(cuMemAlloc(&buf, N * 4));
    CU(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
    CU(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&fork_ev, CU_EVENT_DISABLE_TIMING));
    CU(cuEventCreate(&join_ev, CU_EVENT_DISABLE_TIMING));

    CU(cuStreamBeginCapture(s1, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuMemsetD32Async(buf, 5, N, s1));
    CU(cuEventRecord(fork_ev, s1));
    CU(cuStreamWaitEvent(s2, fork_ev, 0));
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    CU(cuStreamIsCapturing(s2, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_ACTIVE, "the forked stream's status is %d", (int)st);
    CUdeviceptr hi = buf + N * 2;
    uint32_t half = N / 2;
    void *largs[] = {&buf, &half}, *rargs[] = {&hi, &half};
    CU(cuLaunchKernel(g_add_one, N / 512, 1, 1, 256, 1, 1, 0, s1, largs, NULL));
    CU(cuLaunchKernel(g_add_one, N / 512, 1, 1, 256, 1, 1, 0, s2, rargs, NULL));
    CU(cuEventRecord(join_ev, s2));
    CU(cuStreamWaitEvent(s1, join_ev, 0));
    CUgraph g = NULL;
    CU(cuStreamEndCapture(s1, &g));
    CU(cuStreamIsCapturing(s2, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "the joined stream still captures (status %d)", (int)st);
    size_t n = 0;
    CU(cuGraphGetNodes(g, NULL, &n));
    EXPECT(n == 3, "the fork/join capture has %zu nodes, not 3", n);

    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, s1));
    static uint32_t out[N];
    CU(cuStreamSynchronize(s1));
    CU(cuMemcpyDtoH(out, buf, sizeof out));
    size_t d = first_not(out, N, 6);
    EXPECT(d == N, "word %zu is %u, not 6", d, d < N ? out[d] : 0);
    CU(cuGraphExecDestroy(x));
    CU(cuGraphDestroy(g));

    /* A fork that never joins back. */
    CU(cuStreamBeginCapture(s1, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuEventRecord(fork_ev, s1));
    CU(cuStreamWaitEvent(s2, fork_ev, 0));
    CU(cuLaunchKernel(g_add_one, N / 512, 1, 1, 256, 1, 1, 0, s2, rargs, NULL));
    g = (CUgraph)1;
    EXPECT_RC(cuStreamEndCapture(s1, &g), CUDA_ERROR_STREAM_CAPTURE_UNJOINED);
    EXPECT(g == NULL, "an unjoined capture returned a graph");

    cuEventDestroy(fork_ev);
    cuEventDestroy(join_ev);
    cuStreamDestroy(s1);
    cuStreamDestroy(s2);
    cuMemFree(buf);
}

static void synchronising_a_capturing_stream_invalidates_the_capture(void)
{
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr buf;
    CU(cuMemAlloc(&buf, 4096));
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuMemsetD8Async(buf, 1, 4096, s));
    EXPECT_RC(cuStreamSynchronize(s), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    CU(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_INVALIDATED, "status %d after a sync in capture", (int)st);
    CUgraph g = (CUgraph)1;
    EXPECT_RC(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    EXPECT(g == NULL, "an invalidated capture returned a graph");
    /* The stream works normally again. */
    CU(cuMemsetD8Async(buf, 2, 4096, s));
    CU(cuStreamSynchronize(s));
    cuMemFree(buf);
    cuStreamDestroy(s);
}

static void allocation_during_global_capture_is_unsupported_but_relaxed_allows_it(void)
{
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr p = 0;
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT_RC(cuMemAlloc(&p, 4096), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    CUgraph g = (CUgraph)1;
    EXPECT_RC(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    EXPECT(g == NULL, "an invalidated capture returned a graph");

    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    CU(cuMemAlloc(&p, 4096));
    CU(cuMemsetD8Async(p, 3, 4096, s));
    CU(cuStreamEndCapture(s, &g));
    size_t n = 0;
    CU(cuGraphGetNodes(g, NULL, &n));
    EXPECT(n == 1, "the relaxed capture has %zu nodes", n);
    CU(cuGraphDestroy(g));
    CU(cuMemFree(p));

    /* A thread in relaxed mode is not prohibited, whatever the capture's mode. */
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    CU(cuThreadExchangeStreamCaptureMode(&mode));
    EXPECT(mode == CU_STREAM_CAPTURE_MODE_GLOBAL, "the default thread mode is %d", (int)mode);
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    CU(cuMemAlloc(&p, 4096));
    CU(cuStreamEndCapture(s, &g));
    CU(cuGraphDestroy(g));
    CU(cuMemFree(p));
    CU(cuThreadExchangeStreamCaptureMode(&mode));
    EXPECT(mode == CU_STREAM_CAPTURE_MODE_RELAXED, "the swapped-out mode is %d", (int)mode);
    cuStreamDestroy(s);
}

static void legacy_stream_is_implicit_while_a_blocking_stream_captures(void)
{
    CUstream s;
    CU(cuStreamCreate(&s, CU_STREAM_DEFAULT));
    CUdeviceptr buf;
    CU(cuMemAlloc(&buf, 4096));
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuMemsetD8Async(buf, 1, 4096, s));
    CUstreamCaptureStatus st;
    EXPECT_RC(cuStreamIsCapturing(CU_STREAM_LEGACY, &st), CUDA_ERROR_STREAM_CAPTURE_IMPLICIT);
    /* cuda.h: the query does not invalidate the capture. */
    CUgraph g = NULL;
    CU(cuStreamEndCapture(s, &g));
    CU(cuGraphDestroy(g));
    CU(cuStreamIsCapturing(CU_STREAM_LEGACY, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "the legacy stream reports status %d", (int)st);
    cuMemFree(buf);
    cuStreamDestroy(s);
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
    RUN(empty_graph_is_created_launched_and_destroyed);
    RUN(chain_of_nodes_runs_in_dependency_order);
    RUN(diamond_dependencies_are_honoured);
    RUN(kernel_node_arguments_are_copied_when_added);
    RUN(graph_launch_is_asynchronous);
    RUN(instantiate_with_params_reports_success_and_uploads);
    RUN(bad_nodes_and_handles_are_invalid_value);
    RUN(captured_work_runs_only_when_the_graph_is_launched);
    RUN(capture_forks_and_joins_across_streams_through_events);
    RUN(synchronising_a_capturing_stream_invalidates_the_capture);
    RUN(allocation_during_global_capture_is_unsupported_but_relaxed_allows_it);
    RUN(legacy_stream_is_implicit_while_a_blocking_stream_captures);
    cuModuleUnload(g_mod);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

/* conf_array.c - CUDA arrays and mipmapped arrays: creation and descriptors, every copy that names an
 * array, device memory they take, and their bad inputs.
 *
 * An array's layout on the device is the driver's business; a program sees it only through copies, which
 * address it by element (X in bytes, Y rows, Z slices). So every check here goes through copies: data in,
 * data out, compared with what went in. Free memory is checked as deltas of at least the array's bytes.
 */
#include "check.h"

#include <stdbool.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static CUcontext g_ctx;
static CUdevice g_dev;

static size_t free_now(void)
{
    size_t f = 0, t = 0;
    cuMemGetInfo(&f, &t);
    return f;
}

static uint32_t word(size_t i, uint32_t seed)
{
    return (uint32_t)(i + seed) * 2654435761u;
}

static CUDA_ARRAY3D_DESCRIPTOR desc3d(size_t w, size_t h, size_t d, CUarray_format f, unsigned ch)
{
    CUDA_ARRAY3D_DESCRIPTOR a;
    memset(&a, 0, sizeof a);
    a.Width = w;
    a.Height = h;
    a.Depth = d;
    a.Format = f;
    a.NumChannels = ch;
    return a;
}

static void descriptors_describe_the_array(void)
{
    CUDA_ARRAY_DESCRIPTOR d2 = {1000, 37, CU_AD_FORMAT_UNSIGNED_INT16, 2};
    CUarray a;
    CU(cuArrayCreate(&a, &d2));
    CUDA_ARRAY_DESCRIPTOR back;
    memset(&back, 0, sizeof back);
    CU(cuArrayGetDescriptor(&back, a));
    EXPECT(back.Width == 1000 && back.Height == 37 && back.Format == CU_AD_FORMAT_UNSIGNED_INT16 &&
               back.NumChannels == 2,
           "2D descriptor %zu x %zu, format 0x%x, %u channels", back.Width, back.Height,
           (unsigned)back.Format, back.NumChannels);
    CU(cuArrayDestroy(a));

    CUDA_ARRAY3D_DESCRIPTOR d1 = desc3d(4096, 0, 0, CU_AD_FORMAT_FLOAT, 1);
    CU(cuArray3DCreate(&a, &d1));
    CUDA_ARRAY3D_DESCRIPTOR b3;
    memset(&b3, 0xff, sizeof b3);
    CU(cuArray3DGetDescriptor(&b3, a));
    EXPECT(b3.Width == 4096 && b3.Height == 0 && b3.Depth == 0 && b3.Format == CU_AD_FORMAT_FLOAT &&
               b3.NumChannels == 1,
           "1D array's 3D descriptor %zu x %zu x %zu", b3.Width, b3.Height, b3.Depth);
    CU(cuArrayDestroy(a));

    CUDA_ARRAY3D_DESCRIPTOR d3 = desc3d(64, 32, 16, CU_AD_FORMAT_SIGNED_INT8, 4);
    CU(cuArray3DCreate(&a, &d3));
    CU(cuArray3DGetDescriptor(&b3, a));
    EXPECT(b3.Width == 64 && b3.Height == 32 && b3.Depth == 16 && b3.NumChannels == 4,
           "3D descriptor %zu x %zu x %zu, %u channels", b3.Width, b3.Height, b3.Depth, b3.NumChannels);
    /* Only deferred-mapping arrays have memory requirements to report. */
    CUDA_ARRAY_MEMORY_REQUIREMENTS req;
    EXPECT_RC(cuArrayGetMemoryRequirements(&req, a, g_dev), CUDA_ERROR_INVALID_VALUE);
    CU(cuArrayDestroy(a));
}

static void one_d_copies_round_trip_through_host_device_and_arrays(void)
{
    enum { N = 8192 };
    static uint32_t in[N], out[N];
    for (size_t i = 0; i < N; i++)
        in[i] = word(i, 1);
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(N, 0, 0, CU_AD_FORMAT_UNSIGNED_INT32, 1);
    CUarray a = NULL, b = NULL;
    CUdeviceptr dev = 0;
    CU(cuArray3DCreate(&a, &d));
    CU(cuArray3DCreate(&b, &d));
    CU(cuMemAlloc(&dev, sizeof in));
    /* host -> a -> b -> device -> host, then a's second half straight back to the host. */
    CU(cuMemcpyHtoA(a, 0, in, sizeof in));
    CU(cuMemcpyAtoA(b, 0, a, 0, sizeof in));
    CU(cuMemcpyAtoD(dev, b, 0, sizeof in));
    memset(out, 0, sizeof out);
    CU(cuMemcpyDtoH(out, dev, sizeof out));
    EXPECT(memcmp(in, out, sizeof in) == 0, "host -> array -> array -> device -> host differs");
    memset(out, 0, sizeof out);
    CU(cuMemcpyAtoH(out, a, sizeof in / 2, sizeof in / 2));
    EXPECT(memcmp(in + N / 2, out, sizeof in / 2) == 0, "array -> host at an offset differs");
    /* device -> array at an offset. */
    CU(cuMemsetD32(dev, 0x5a5a5a5au, N));
    CU(cuMemcpyDtoA(a, 4 * 100, dev, 4 * 10));
    CU(cuMemcpyAtoH(out, a, 0, sizeof out));
    EXPECT(out[99] == in[99] && out[100] == 0x5a5a5a5au && out[109] == 0x5a5a5a5au && out[110] == in[110],
           "DtoA at word 100 gave %08x %08x %08x %08x", out[99], out[100], out[109], out[110]);
    /* Out of the array: invalid. */
    EXPECT_RC(cuMemcpyHtoA(a, sizeof in - 4, in, 8), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemcpyAtoH(out, a, sizeof in, 4), CUDA_ERROR_INVALID_VALUE);
    cuMemFree(dev);
    cuArrayDestroy(a);
    cuArrayDestroy(b);
}

static void async_one_d_copies_with_pinned_memory(void)
{
    enum { N = 4096 };
    uint32_t *in = NULL, *out = NULL;
    CUstream s = NULL;
    CUarray a = NULL;
    CU(cuMemAllocHost((void **)&in, N * 4));
    CU(cuMemAllocHost((void **)&out, N * 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(N, 0, 0, CU_AD_FORMAT_FLOAT, 1);
    CU(cuArray3DCreate(&a, &d));
    for (size_t i = 0; i < N; i++)
        in[i] = word(i, 2);
    memset(out, 0, N * 4);
    CU(cuMemcpyHtoAAsync(a, 0, in, N * 4, s));
    CU(cuMemcpyAtoHAsync(out, a, 0, N * 4, s));
    CU(cuStreamSynchronize(s));
    EXPECT(memcmp(in, out, N * 4) == 0, "async HtoA -> AtoH differs");
    cuArrayDestroy(a);
    cuStreamDestroy(s);
    cuMemFreeHost(in);
    cuMemFreeHost(out);
}

static void captured_array_copies_run_when_the_graph_runs(void)
{
    enum { N = 1024 };
    uint32_t *in = NULL, *out = NULL;
    CUstream s = NULL;
    CUarray a = NULL;
    CU(cuMemAllocHost((void **)&in, N * 4));
    CU(cuMemAllocHost((void **)&out, N * 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(N, 0, 0, CU_AD_FORMAT_UNSIGNED_INT32, 1);
    CU(cuArray3DCreate(&a, &d));
    for (size_t i = 0; i < N; i++)
        in[i] = word(i, 6);
    memset(out, 0, N * 4);
    CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU(cuMemcpyHtoAAsync(a, 0, in, N * 4, s));
    CU(cuMemcpyAtoHAsync(out, a, 0, N * 4, s));
    CUgraph g;
    CU(cuStreamEndCapture(s, &g));
    EXPECT(out[0] == 0 && out[N - 1] == 0, "captured copies ran during capture");
    CUgraphExec x;
    CU(cuGraphInstantiate(&x, g, 0));
    CU(cuGraphLaunch(x, s));
    CU(cuStreamSynchronize(s));
    EXPECT(memcmp(in, out, N * 4) == 0, "the graph's HtoA -> AtoH differs");
    cuGraphExecDestroy(x);
    cuGraphDestroy(g);
    cuArrayDestroy(a);
    cuStreamDestroy(s);
    cuMemFreeHost(in);
    cuMemFreeHost(out);
}

static void two_d_copies_address_arrays_by_element(void)
{
    enum { W = 300, H = 40 }; /* elements of 4 bytes */
    static uint32_t host[H][W], back[H][W];
    for (size_t y = 0; y < H; y++)
        for (size_t x = 0; x < W; x++)
            host[y][x] = word(y * W + x, 3);
    CUDA_ARRAY_DESCRIPTOR d = {W, H, CU_AD_FORMAT_UNSIGNED_INT8, 4};
    CUarray a;
    CU(cuArrayCreate(&a, &d));

    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_HOST;
    c.srcHost = host;
    c.srcPitch = sizeof host[0];
    c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    c.dstArray = a;
    c.WidthInBytes = sizeof host[0];
    c.Height = H;
    CU(cuMemcpy2D(&c));

    /* A sub-rectangle (columns 10.., rows 5..) out to pitched device memory, then to the host. */
    CUdeviceptr dev;
    size_t pitch;
    CU(cuMemAllocPitch(&dev, &pitch, 100 * 4, 20, 4));
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    c.srcArray = a;
    c.srcXInBytes = 10 * 4;
    c.srcY = 5;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.dstDevice = dev;
    c.dstPitch = pitch;
    c.WidthInBytes = 100 * 4;
    c.Height = 20;
    CU(cuMemcpy2D(&c));
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = dev;
    c.srcPitch = pitch;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = back;
    c.dstPitch = sizeof back[0];
    c.WidthInBytes = 100 * 4;
    c.Height = 20;
    memset(back, 0, sizeof back);
    CU(cuMemcpy2D(&c));
    size_t bad = 0;
    for (size_t y = 0; y < 20; y++)
        for (size_t x = 0; x < 100; x++)
            bad += back[y][x] != host[y + 5][x + 10];
    EXPECT(bad == 0, "%zu elements of the sub-rectangle differ", bad);

    /* The whole array back, and an X offset that is not a whole element. */
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    c.srcArray = a;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = back;
    c.dstPitch = sizeof back[0];
    c.WidthInBytes = sizeof back[0];
    c.Height = H;
    memset(back, 0, sizeof back);
    CU(cuMemcpy2D(&c));
    EXPECT(memcmp(host, back, sizeof host) == 0, "array -> host differs");
    c.srcXInBytes = 2;
    c.WidthInBytes = 4;
    EXPECT_RC(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE);
    /* Rows beyond the array. */
    c.srcXInBytes = 0;
    c.srcY = H - 1;
    c.Height = 2;
    EXPECT_RC(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE);
    cuMemFree(dev);
    cuArrayDestroy(a);
}

static void three_d_copies_round_trip_through_a_3d_array(void)
{
    enum { W = 32, H = 16, D = 8 };
    static uint16_t host[D][H][W], back[D][H][W];
    for (size_t i = 0; i < W * H * D; i++)
        (&host[0][0][0])[i] = (uint16_t)word(i, 4);
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(W, H, D, CU_AD_FORMAT_HALF, 1);
    CUarray a;
    CU(cuArray3DCreate(&a, &d));
    CUDA_MEMCPY3D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_HOST;
    c.srcHost = host;
    c.srcPitch = W * 2;
    c.srcHeight = H;
    c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    c.dstArray = a;
    c.WidthInBytes = W * 2;
    c.Height = H;
    c.Depth = D;
    CU(cuMemcpy3D(&c));
    /* Slices 2..5, rows 3..12 back into the same place of a zeroed buffer. */
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    c.srcArray = a;
    c.srcY = 3;
    c.srcZ = 2;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = back;
    c.dstPitch = W * 2;
    c.dstHeight = H;
    c.dstY = 3;
    c.dstZ = 2;
    c.WidthInBytes = W * 2;
    c.Height = 10;
    c.Depth = 4;
    memset(back, 0, sizeof back);
    CU(cuMemcpy3D(&c));
    size_t bad = 0;
    for (size_t z = 0; z < D; z++)
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++) {
                bool inside = z >= 2 && z < 6 && y >= 3 && y < 13;
                bad += back[z][y][x] != (inside ? host[z][y][x] : 0);
            }
    EXPECT(bad == 0, "%zu elements differ after a 3D copy of a box", bad);
    cuArrayDestroy(a);
}

static void arrays_take_device_memory_until_destroyed(void)
{
    /* 8192 x 8192 floats: 256 MiB. */
    CUDA_ARRAY_DESCRIPTOR d = {8192, 8192, CU_AD_FORMAT_FLOAT, 1};
    const size_t bytes = 8192ull * 8192 * 4;
    size_t free0 = free_now();
    CUarray a;
    CU(cuArrayCreate(&a, &d));
    size_t free1 = free_now();
    EXPECT(free1 + bytes <= free0, "free went from %zu to %zu for a %zu-byte array", free0, free1, bytes);
    CU(cuArrayDestroy(a));
    size_t free2 = free_now();
    EXPECT(free2 >= free1 + bytes, "destroying the array raised free only from %zu to %zu", free1, free2);
}

static void arrays_until_out_of_memory_stay_within_total(void)
{
    size_t total = 0;
    CU(cuDeviceTotalMem(&total, g_dev));
    /* 16384 x 16384 x 4 floats: 4 GiB each. */
    CUDA_ARRAY_DESCRIPTOR d = {16384, 16384, CU_AD_FORMAT_FLOAT, 4};
    const size_t bytes = 16384ull * 16384 * 16;
    enum { MAX = 1024 };
    static CUarray as[MAX];
    size_t n = 0;
    CUresult rc = CUDA_SUCCESS;
    while (n < MAX && (rc = cuArrayCreate(&as[n], &d)) == CUDA_SUCCESS)
        n++;
    EXPECT(rc == CUDA_ERROR_OUT_OF_MEMORY, "array %zu returned %s", n, conf_err_name(rc));
    EXPECT((unsigned long long)n * bytes <= total, "%zu arrays of %zu bytes on a device of %zu bytes", n,
           bytes, total);
    size_t free_full = free_now();
    for (size_t i = 0; i < n; i++)
        EXPECT_RC(cuArrayDestroy(as[i]), CUDA_SUCCESS);
    EXPECT(free_now() >= free_full + (unsigned long long)n * bytes, "destroying %zu arrays did not free them",
           n);
}

static void context_destruction_frees_its_arrays(void)
{
    CUcontext other;
    CU(cuCtxCreate(&other, NULL, 0, g_dev));
    CUDA_ARRAY_DESCRIPTOR d = {8192, 8192, CU_AD_FORMAT_FLOAT, 1};
    const size_t bytes = 8192ull * 8192 * 4;
    CUarray a;
    CU(cuArrayCreate(&a, &d));
    size_t with = free_now();
    CU(cuCtxDestroy(other)); /* also pops it: g_ctx is current again */
    CUcontext cur = NULL;
    CU(cuCtxGetCurrent(&cur));
    if (cur != g_ctx)
        CU(cuCtxSetCurrent(g_ctx));
    EXPECT(free_now() >= with + bytes, "destroying a context kept its array's memory");
}

static void bad_descriptors_and_handles_are_refused(void)
{
    CUarray a;
    CUDA_ARRAY_DESCRIPTOR d = {0, 16, CU_AD_FORMAT_FLOAT, 1};
    EXPECT_RC(cuArrayCreate(&a, &d), CUDA_ERROR_INVALID_VALUE); /* no width */
    d.Width = 16;
    d.NumChannels = 3;
    EXPECT_RC(cuArrayCreate(&a, &d), CUDA_ERROR_INVALID_VALUE); /* channels: 1, 2 or 4 */
    EXPECT_RC(cuArrayCreate(&a, NULL), CUDA_ERROR_INVALID_VALUE);
    CUDA_ARRAY3D_DESCRIPTOR d3 = desc3d(16, 0, 4, CU_AD_FORMAT_FLOAT, 1);
    EXPECT_RC(cuArray3DCreate(&a, &d3), CUDA_ERROR_INVALID_VALUE); /* a depth without a height, not layered */
    d3 = desc3d(16, 16, 5, CU_AD_FORMAT_FLOAT, 1);
    d3.Flags = CUDA_ARRAY3D_CUBEMAP;
    EXPECT_RC(cuArray3DCreate(&a, &d3), CUDA_ERROR_INVALID_VALUE); /* a cubemap has six faces */
    EXPECT_RC(cuArrayDestroy(NULL), CUDA_ERROR_INVALID_HANDLE);
    CUDA_ARRAY3D_DESCRIPTOR out;
    EXPECT_RC(cuArray3DGetDescriptor(&out, NULL), CUDA_ERROR_INVALID_HANDLE);
}

static void mipmapped_arrays_have_halving_levels(void)
{
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(64, 32, 0, CU_AD_FORMAT_UNSIGNED_INT32, 1);
    CUmipmappedArray m;
    /* cuda.h: the level count is clamped to 1 + floor(log2(64)) = 7. */
    CU(cuMipmappedArrayCreate(&m, &d, 100));
    for (unsigned l = 0; l < 7; l++) {
        CUarray lvl = NULL;
        CUresult r = cuMipmappedArrayGetLevel(&lvl, m, l);
        EXPECT(r == CUDA_SUCCESS, "level %u: %s", l, conf_err_name(r));
        if (r != CUDA_SUCCESS)
            continue;
        CUDA_ARRAY3D_DESCRIPTOR ld;
        CU(cuArray3DGetDescriptor(&ld, lvl));
        size_t w = 64 >> l, h = 32 >> l;
        EXPECT(ld.Width == w && ld.Height == (h ? h : 1) && ld.Depth == 0, "level %u is %zu x %zu x %zu", l,
               ld.Width, ld.Height, ld.Depth);
    }
    CUarray lvl;
    EXPECT_RC(cuMipmappedArrayGetLevel(&lvl, m, 7), CUDA_ERROR_INVALID_VALUE);
    /* A level is an array: data goes in and out of it. */
    CU(cuMipmappedArrayGetLevel(&lvl, m, 2));
    enum { N = 16 * 8 };
    uint32_t in[N], out[N];
    for (size_t i = 0; i < N; i++)
        in[i] = word(i, 5);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_HOST;
    c.srcHost = in;
    c.srcPitch = 16 * 4;
    c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    c.dstArray = lvl;
    c.WidthInBytes = 16 * 4;
    c.Height = 8;
    CU(cuMemcpy2D(&c));
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    c.srcArray = lvl;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = out;
    c.dstPitch = 16 * 4;
    c.WidthInBytes = 16 * 4;
    c.Height = 8;
    memset(out, 0, sizeof out);
    CU(cuMemcpy2D(&c));
    EXPECT(memcmp(in, out, sizeof in) == 0, "mipmap level 2 did not keep its data");
    CUDA_ARRAY_MEMORY_REQUIREMENTS req;
    EXPECT_RC(cuMipmappedArrayGetMemoryRequirements(&req, m, g_dev), CUDA_ERROR_INVALID_VALUE);
    CU(cuMipmappedArrayDestroy(m));
}

static void mipmapped_arrays_take_device_memory(void)
{
    CUDA_ARRAY3D_DESCRIPTOR d = desc3d(8192, 8192, 0, CU_AD_FORMAT_FLOAT, 1);
    const size_t level0 = 8192ull * 8192 * 4;
    size_t free0 = free_now();
    CUmipmappedArray m;
    CU(cuMipmappedArrayCreate(&m, &d, 4));
    size_t free1 = free_now();
    EXPECT(free1 + level0 <= free0, "a mipmapped array with a %zu-byte level 0 took only %zu bytes", level0,
           free0 - free1);
    CU(cuMipmappedArrayDestroy(m));
    EXPECT(free_now() >= free1 + level0, "destroying the mipmapped array did not free it");
}

int main(void)
{
    CUresult rc = conf_context(&g_ctx);
    if (rc == CUDA_SUCCESS)
        rc = cuCtxGetDevice(&g_dev);
    if (rc != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: %s\n", conf_err_name(rc));
        return 1;
    }
    RUN(descriptors_describe_the_array);
    RUN(one_d_copies_round_trip_through_host_device_and_arrays);
    RUN(async_one_d_copies_with_pinned_memory);
    RUN(captured_array_copies_run_when_the_graph_runs);
    RUN(two_d_copies_address_arrays_by_element);
    RUN(three_d_copies_round_trip_through_a_3d_array);
    RUN(arrays_take_device_memory_until_destroyed);
    RUN(arrays_until_out_of_memory_stay_within_total);
    RUN(context_destruction_frees_its_arrays);
    RUN(bad_descriptors_and_handles_are_refused);
    RUN(mipmapped_arrays_have_halving_levels);
    RUN(mipmapped_arrays_take_device_memory);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

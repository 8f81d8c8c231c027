/* conf_copy.c - memory copies and memsets: every direction and flavour, and their bad inputs.
 *
 * Synchronous and stream-ordered copies between pageable, pinned and device memory, unified-address
 * cuMemcpy, peer copies between two devices' contexts, pitched 2D and 3D copies, and the 1D and 2D memsets.
 * Data is a few MiB of (i * 2654435761) words copied at odd offsets and lengths, so a lost byte, a swapped
 * byte order or a wrong row pitch shows. Contents are always read back through a copy to the host.
 */
#include "check.h"

#define BIG (3u << 20) /* bytes moved by the linear copies */

static CUcontext g_ctx;

/* Byte i of the test pattern number `seed`: the bytes of the words (k + seed) * 2654435761. */
static uint8_t pattern_byte(size_t i, uint32_t seed)
{
    uint32_t w = (uint32_t)(i / 4 + seed) * 2654435761u;
    return (uint8_t)(w >> (8 * (i % 4)));
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(i, seed);
}

/* The index of the first byte where a and b differ, or n when they are equal. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return i;
    return n;
}

static void sync_copies_htod_dtoh_dtod_round_trip(void)
{
    uint8_t *src = malloc(BIG), *dst = malloc(BIG);
    CUdeviceptr a = 0, b = 0;
    if (!src || !dst) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    fill_pattern(src, BIG, 1);
    memset(dst, 0x5a, BIG);
    CU(cuMemAlloc(&a, BIG));
    CU(cuMemAlloc(&b, BIG));
    CU(cuMemcpyHtoD(a, src, BIG));
    CU(cuMemcpyDtoD(b, a, BIG));
    CU(cuMemcpyDtoH(dst, b, BIG));
    size_t d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "HtoD -> DtoD -> DtoH differs at byte %zu", d);

    /* Odd offsets and lengths: bytes 3 .. BIG-5 of src land at b + 1; everything else of b is untouched. */
    CU(cuMemsetD8(b, 0, BIG));
    CU(cuMemcpyHtoD(a, src, BIG));
    CU(cuMemcpyDtoD(b + 1, a + 3, BIG - 8));
    CU(cuMemcpyDtoH(dst, b, BIG));
    EXPECT(dst[0] == 0, "byte before the copy is %u", dst[0]);
    d = first_diff(src + 3, dst + 1, BIG - 8);
    EXPECT(d == BIG - 8, "offset DtoD differs at byte %zu", d);
    EXPECT(dst[BIG - 7] == 0 && dst[BIG - 1] == 0, "bytes after the copy are %u %u", dst[BIG - 7],
           dst[BIG - 1]);
out:
    if (a)
        cuMemFree(a);
    if (b)
        cuMemFree(b);
    free(src);
    free(dst);
}

static void async_copies_on_a_stream_with_pinned_memory(void)
{
    uint8_t *src = NULL, *dst = NULL;
    CUdeviceptr a = 0, b = 0;
    CUstream s = NULL;
    CU(cuMemAllocHost((void **)&src, BIG));
    CU(cuMemAllocHost((void **)&dst, BIG));
    CU(cuMemAlloc(&a, BIG));
    CU(cuMemAlloc(&b, BIG));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    fill_pattern(src, BIG, 2);
    memset(dst, 0, BIG);
    CU(cuMemcpyHtoDAsync(a, src, BIG, s));
    CU(cuMemcpyDtoDAsync(b, a, BIG, s));
    CU(cuMemcpyDtoHAsync(dst, b, BIG, s));
    CU(cuStreamSynchronize(s));
    size_t d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "async HtoD -> DtoD -> DtoH differs at byte %zu", d);
    cuStreamDestroy(s);
    cuMemFree(a);
    cuMemFree(b);
    cuMemFreeHost(src);
    cuMemFreeHost(dst);
}

static int unified_addressing(void)
{
    CUdevice dev;
    int ua = 0;
    if (cuCtxGetDevice(&dev) != CUDA_SUCCESS ||
        cuDeviceGetAttribute(&ua, CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, dev) != CUDA_SUCCESS)
        return 0;
    return ua;
}

#define HOSTPTR(p) ((CUdeviceptr)(uintptr_t)(p))

static void unified_memcpy_infers_every_direction(void)
{
    /* cuMemcpy is allowed only with unified addressing, which every 64-bit Linux device has. */
    EXPECT(unified_addressing() == 1, "CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING is not 1");
    uint8_t *src = malloc(BIG), *mid = malloc(BIG), *dst = malloc(BIG);
    CUdeviceptr a = 0, b = 0;
    if (!src || !mid || !dst) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    fill_pattern(src, BIG, 3);
    memset(dst, 0, BIG);
    CU(cuMemAlloc(&a, BIG));
    CU(cuMemAlloc(&b, BIG));
    CU(cuMemcpy(a, HOSTPTR(src), BIG));            /* host -> device */
    CU(cuMemcpy(b, a, BIG));                       /* device -> device */
    CU(cuMemcpy(HOSTPTR(mid), b, BIG));            /* device -> host */
    CU(cuMemcpy(HOSTPTR(dst), HOSTPTR(mid), BIG)); /* host -> host */
    size_t d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "cuMemcpy chain differs at byte %zu", d);
out:
    if (a)
        cuMemFree(a);
    if (b)
        cuMemFree(b);
    free(src);
    free(mid);
    free(dst);
}

static void unified_memcpy_async_infers_every_direction(void)
{
    uint8_t *src = NULL, *mid = NULL, *dst = NULL;
    CUdeviceptr a = 0, b = 0;
    CUstream s = NULL;
    CU(cuMemAllocHost((void **)&src, BIG));
    CU(cuMemAllocHost((void **)&mid, BIG));
    CU(cuMemAllocHost((void **)&dst, BIG));
    CU(cuMemAlloc(&a, BIG));
    CU(cuMemAlloc(&b, BIG));
    CU(cuStreamCreate(&s, 0));
    fill_pattern(src, BIG, 4);
    memset(dst, 0, BIG);
    CU(cuMemcpyAsync(a, HOSTPTR(src), BIG, s));
    CU(cuMemcpyAsync(b, a, BIG, s));
    CU(cuMemcpyAsync(HOSTPTR(mid), b, BIG, s));
    CU(cuMemcpyAsync(HOSTPTR(dst), HOSTPTR(mid), BIG, s));
    CU(cuStreamSynchronize(s));
    size_t d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "cuMemcpyAsync chain differs at byte %zu", d);
    cuStreamDestroy(s);
    cuMemFree(a);
    cuMemFree(b);
    cuMemFreeHost(src);
    cuMemFreeHost(mid);
    cuMemFreeHost(dst);
}

static void peer_copies_between_two_devices(void)
{
    int n = 0;
    CU(cuDeviceGetCount(&n));
    if (n < 2) {
        printf("     (one device: peer copies not tested)\n");
        return;
    }
    CUdevice d1;
    CU(cuDeviceGet(&d1, 1));
    uint8_t *src = malloc(BIG), *dst = malloc(BIG);
    CUcontext c1 = NULL;
    CUdeviceptr a = 0, b = 0, back = 0;
    CUstream s = NULL;
    if (!src || !dst) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    fill_pattern(src, BIG, 5);
    CU(cuCtxSetCurrent(g_ctx));
    CU(cuMemAlloc(&a, BIG));
    CU(cuMemAlloc(&back, BIG));
    CU(cuMemcpyHtoD(a, src, BIG));
    CU(cuCtxCreate(&c1, NULL, 0, d1)); /* current now */
    CU(cuMemAlloc(&b, BIG));
    CU(cuMemsetD8(b, 0, BIG));
    CU(cuCtxSynchronize()); /* the memset must be done before another context's copy writes b */
    CU(cuCtxSetCurrent(g_ctx));
    CU(cuMemcpyPeer(b, c1, a, g_ctx, BIG));
    /* A device-to-device copy need not be complete when the call returns. */
    CU(cuCtxSynchronize());

    CU(cuCtxSetCurrent(c1));
    memset(dst, 0, BIG);
    CU(cuMemcpyDtoH(dst, b, BIG));
    size_t d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "cuMemcpyPeer device 0 -> 1 differs at byte %zu", d);

    /* And back, stream-ordered, on a stream of the destination's context. */
    CU(cuCtxSetCurrent(g_ctx));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuMemsetD8(back, 0, BIG));
    CU(cuCtxSynchronize());
    CU(cuMemcpyPeerAsync(back, g_ctx, b, c1, BIG, s));
    CU(cuStreamSynchronize(s));
    memset(dst, 0, BIG);
    CU(cuMemcpyDtoH(dst, back, BIG));
    d = first_diff(src, dst, BIG);
    EXPECT(d == BIG, "cuMemcpyPeerAsync device 1 -> 0 differs at byte %zu", d);
out:
    cuCtxSetCurrent(g_ctx);
    if (s)
        cuStreamDestroy(s);
    if (a)
        cuMemFree(a);
    if (back)
        cuMemFree(back);
    if (c1)
        cuCtxDestroy(c1); /* frees b with it */
    cuCtxSetCurrent(g_ctx);
    free(src);
    free(dst);
}

/* A 2D region of W bytes x H rows; host buffers have pitches wider than W. */
#define W2  1000u
#define H2  300u
#define SP2 1100u /* source host pitch */
#define DP2 1200u /* destination host pitch */

static CUDA_MEMCPY2D copy2d(CUmemorytype st, const void *sh, CUdeviceptr sd, size_t sp, CUmemorytype dt,
                            void *dh, CUdeviceptr dd, size_t dp, size_t w, size_t h)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = st;
    c.srcHost = sh;
    c.srcDevice = sd;
    c.srcPitch = sp;
    c.dstMemoryType = dt;
    c.dstHost = dh;
    c.dstDevice = dd;
    c.dstPitch = dp;
    c.WidthInBytes = w;
    c.Height = h;
    return c;
}

/* Every row of dst (pitch DP2) holds row y of src (pitch SP2); the padding of dst still holds 0xEE. */
static void expect_rows(const uint8_t *src, const uint8_t *dst, const char *what)
{
    for (size_t y = 0; y < H2; y++) {
        size_t d = first_diff(src + y * SP2, dst + y * DP2, W2);
        if (d != W2) {
            EXPECT(d == W2, "%s: row %zu differs at byte %zu", what, y, d);
            return;
        }
        for (size_t x = W2; x < DP2; x++)
            if (dst[y * DP2 + x] != 0xEE) {
                EXPECT(dst[y * DP2 + x] == 0xEE, "%s: padding byte %zu of row %zu was written", what, x, y);
                return;
            }
    }
}

static void memcpy2d_with_pitched_device_memory(void)
{
    uint8_t *src = malloc(SP2 * H2), *dst = malloc(DP2 * H2);
    CUdeviceptr a = 0, b = 0;
    size_t pa = 0, pb = 0;
    if (!src || !dst) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    fill_pattern(src, SP2 * H2, 6);
    memset(dst, 0xEE, DP2 * H2);
    CU(cuMemAllocPitch(&a, &pa, W2, H2, 4));
    CU(cuMemAllocPitch(&b, &pb, W2, H2, 4));
    EXPECT(pa >= W2 && pb >= W2, "pitches %zu %zu below the width %u", pa, pb, W2);
    CUDA_MEMCPY2D c = copy2d(CU_MEMORYTYPE_HOST, src, 0, SP2, CU_MEMORYTYPE_DEVICE, NULL, a, pa, W2, H2);
    CU(cuMemcpy2D(&c));
    c = copy2d(CU_MEMORYTYPE_DEVICE, NULL, a, pa, CU_MEMORYTYPE_DEVICE, NULL, b, pb, W2, H2);
    CU(cuMemcpy2D(&c));
    c = copy2d(CU_MEMORYTYPE_DEVICE, NULL, b, pb, CU_MEMORYTYPE_HOST, dst, 0, DP2, W2, H2);
    CU(cuMemcpy2D(&c));
    expect_rows(src, dst, "cuMemcpy2D");

    /* A sub-rectangle: 100 bytes x 50 rows from (x 7, y 11) of the device copy to (x 3, y 2) on the host. */
    memset(dst, 0xEE, DP2 * H2);
    c = copy2d(CU_MEMORYTYPE_DEVICE, NULL, b, pb, CU_MEMORYTYPE_HOST, dst, 0, DP2, 100, 50);
    c.srcXInBytes = 7;
    c.srcY = 11;
    c.dstXInBytes = 3;
    c.dstY = 2;
    CU(cuMemcpy2D(&c));
    for (size_t y = 0; y < 50; y++) {
        size_t d = first_diff(src + (y + 11) * SP2 + 7, dst + (y + 2) * DP2 + 3, 100);
        if (d != 100) {
            EXPECT(d == 100, "sub-rectangle row %zu differs at byte %zu", y, d);
            break;
        }
    }
    EXPECT(dst[2 * DP2 + 2] == 0xEE && dst[2 * DP2 + 103] == 0xEE && dst[DP2 + 3] == 0xEE,
           "bytes around the sub-rectangle were written");
out:
    if (a)
        cuMemFree(a);
    if (b)
        cuMemFree(b);
    free(src);
    free(dst);
}

static void memcpy2d_async_with_pitched_device_memory(void)
{
    uint8_t *src = NULL, *dst = NULL;
    CUdeviceptr a = 0;
    size_t pa = 0;
    CUstream s = NULL;
    CU(cuMemAllocHost((void **)&src, SP2 * H2));
    CU(cuMemAllocHost((void **)&dst, DP2 * H2));
    CU(cuMemAllocPitch(&a, &pa, W2, H2, 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    fill_pattern(src, SP2 * H2, 7);
    memset(dst, 0xEE, DP2 * H2);
    CUDA_MEMCPY2D up = copy2d(CU_MEMORYTYPE_HOST, src, 0, SP2, CU_MEMORYTYPE_DEVICE, NULL, a, pa, W2, H2);
    CUDA_MEMCPY2D down = copy2d(CU_MEMORYTYPE_DEVICE, NULL, a, pa, CU_MEMORYTYPE_HOST, dst, 0, DP2, W2, H2);
    CU(cuMemcpy2DAsync(&up, s));
    CU(cuMemcpy2DAsync(&down, s));
    CU(cuStreamSynchronize(s));
    expect_rows(src, dst, "cuMemcpy2DAsync");
    cuStreamDestroy(s);
    cuMemFree(a);
    cuMemFreeHost(src);
    cuMemFreeHost(dst);
}

/* A 3D box of W3 bytes x H3 rows x D3 slices. */
#define W3 256u
#define H3 16u
#define D3 5u

static void memcpy3d_between_device_and_host(void)
{
    const size_t sp = 300, sh = 20; /* source host pitch and rows per slice */
    const size_t dp = 280, dh = 18; /* destination host pitch and rows per slice */
    uint8_t *src = malloc(sp * sh * D3), *dst = malloc(dp * dh * D3);
    CUdeviceptr a = 0;
    size_t pa = 0;
    if (!src || !dst) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    fill_pattern(src, sp * sh * D3, 8);
    memset(dst, 0xEE, dp * dh * D3);
    CU(cuMemAllocPitch(&a, &pa, W3, H3 * D3, 4));

    CUDA_MEMCPY3D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_HOST;
    c.srcHost = src;
    c.srcPitch = sp;
    c.srcHeight = sh;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.dstDevice = a;
    c.dstPitch = pa;
    c.dstHeight = H3;
    c.WidthInBytes = W3;
    c.Height = H3;
    c.Depth = D3;
    CU(cuMemcpy3D(&c));

    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = a;
    c.srcPitch = pa;
    c.srcHeight = H3;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = dst;
    c.dstPitch = dp;
    c.dstHeight = dh;
    c.WidthInBytes = W3;
    c.Height = H3;
    c.Depth = D3;
    CU(cuMemcpy3D(&c));

    for (size_t z = 0; z < D3; z++)
        for (size_t y = 0; y < dh; y++) {
            const uint8_t *drow = dst + z * dp * dh + y * dp;
            if (y < H3) {
                size_t d = first_diff(src + z * sp * sh + y * sp, drow, W3);
                if (d != W3) {
                    EXPECT(d == W3, "slice %zu row %zu differs at byte %zu", z, y, d);
                    goto out;
                }
            } else if (drow[0] != 0xEE || drow[W3 - 1] != 0xEE) {
                EXPECT(0, "slice %zu row %zu lies outside the copy but was written", z, y);
                goto out;
            }
        }
out:
    if (a)
        cuMemFree(a);
    free(src);
    free(dst);
}

/* Reads n bytes of device memory back into a new host buffer (NULL on failure, counted). */
static uint8_t *read_back(CUdeviceptr d, size_t n)
{
    uint8_t *h = malloc(n);
    if (h == NULL) {
        EXPECT(0, "out of host memory");
        return NULL;
    }
    CUresult r = cuMemcpyDtoH(h, d, n);
    if (r != CUDA_SUCCESS) {
        EXPECT(r == CUDA_SUCCESS, "cuMemcpyDtoH returned %s", conf_err_name(r));
        free(h);
        return NULL;
    }
    return h;
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

#define MS (1u << 20) /* bytes the memset tests cover */

/* D8 at [1, 1002), D16 at [2048, 2048 + 2*777), D32 at [8192, 8192 + 4*12345), over a zeroed buffer. */
static void expected_memsets(uint8_t *want)
{
    memset(want, 0, MS);
    memset(want + 1, 0xAB, 1001);
    for (size_t i = 0; i < 777; i++)
        put16(want + 2048 + 2 * i, 0xBEEF);
    for (size_t i = 0; i < 12345; i++)
        put32(want + 8192 + 4 * i, 0xDEADBEEFu);
}

static void memsets_d8_d16_d32_set_exactly_their_range(void)
{
    uint8_t *want = malloc(MS), *got = NULL;
    CUdeviceptr d = 0;
    if (!want) {
        EXPECT(0, "out of host memory");
        return;
    }
    expected_memsets(want);
    CUresult r = cuMemAlloc(&d, MS);
    EXPECT(r == CUDA_SUCCESS, "cuMemAlloc returned %s", conf_err_name(r));
    if (r == CUDA_SUCCESS) {
        EXPECT_RC(cuMemsetD8(d, 0, MS), CUDA_SUCCESS);
        EXPECT_RC(cuMemsetD8(d + 1, 0xAB, 1001), CUDA_SUCCESS);
        EXPECT_RC(cuMemsetD16(d + 2048, 0xBEEF, 777), CUDA_SUCCESS);
        EXPECT_RC(cuMemsetD32(d + 8192, 0xDEADBEEFu, 12345), CUDA_SUCCESS);
        got = read_back(d, MS);
        if (got) {
            size_t i = first_diff(want, got, MS);
            EXPECT(i == MS, "byte %zu is 0x%02x, expected 0x%02x", i, i < MS ? got[i] : 0,
                   i < MS ? want[i] : 0);
        }
        cuMemFree(d);
    }
    free(want);
    free(got);
}

static void async_memsets_set_exactly_their_range(void)
{
    uint8_t *want = malloc(MS), *got = NULL;
    CUdeviceptr d = 0;
    CUstream s = NULL;
    if (!want) {
        EXPECT(0, "out of host memory");
        return;
    }
    expected_memsets(want);
    CU(cuMemAlloc(&d, MS));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    EXPECT_RC(cuMemsetD8Async(d, 0, MS, s), CUDA_SUCCESS);
    EXPECT_RC(cuMemsetD8Async(d + 1, 0xAB, 1001, s), CUDA_SUCCESS);
    EXPECT_RC(cuMemsetD16Async(d + 2048, 0xBEEF, 777, s), CUDA_SUCCESS);
    EXPECT_RC(cuMemsetD32Async(d + 8192, 0xDEADBEEFu, 12345, s), CUDA_SUCCESS);
    EXPECT_RC(cuStreamSynchronize(s), CUDA_SUCCESS);
    got = read_back(d, MS);
    if (got) {
        size_t i = first_diff(want, got, MS);
        EXPECT(i == MS, "byte %zu is 0x%02x, expected 0x%02x", i, i < MS ? got[i] : 0, i < MS ? want[i] : 0);
    }
    cuStreamDestroy(s);
    cuMemFree(d);
    free(want);
    free(got);
}

/* 2D memsets over a pitched allocation of 512 bytes x 64 rows: 8-bit over rows 0-9, 16-bit over rows
 * 10-29, 32-bit over rows 30-63, each row's set part narrower than the row so the rest must stay zero. */
static void expected_memsets_2d(uint8_t *want, size_t pitch)
{
    memset(want, 0, pitch * 64);
    for (size_t y = 0; y < 10; y++)
        memset(want + y * pitch, 0x5C, 301);
    for (size_t y = 10; y < 30; y++)
        for (size_t x = 0; x < 150; x++)
            put16(want + y * pitch + 2 * x, 0xA1B2);
    for (size_t y = 30; y < 64; y++)
        for (size_t x = 0; x < 100; x++)
            put32(want + y * pitch + 4 * x, 0x01020304u);
}

static void memsets_2d_set_rows_and_skip_padding(void)
{
    CUdeviceptr d = 0;
    size_t pitch = 0;
    CUstream s = NULL;
    CU(cuMemAllocPitch(&d, &pitch, 512, 64, 4));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    uint8_t *want = malloc(pitch * 64), *got = NULL;
    if (!want) {
        EXPECT(0, "out of host memory");
        goto out;
    }
    expected_memsets_2d(want, pitch);
    for (int async = 0; async < 2; async++) {
        CU(cuMemsetD8(d, 0, pitch * 64));
        CU(cuCtxSynchronize());
        if (async) {
            EXPECT_RC(cuMemsetD2D8Async(d, pitch, 0x5C, 301, 10, s), CUDA_SUCCESS);
            EXPECT_RC(cuMemsetD2D16Async(d + 10 * pitch, pitch, 0xA1B2, 150, 20, s), CUDA_SUCCESS);
            EXPECT_RC(cuMemsetD2D32Async(d + 30 * pitch, pitch, 0x01020304u, 100, 34, s), CUDA_SUCCESS);
            EXPECT_RC(cuStreamSynchronize(s), CUDA_SUCCESS);
        } else {
            EXPECT_RC(cuMemsetD2D8(d, pitch, 0x5C, 301, 10), CUDA_SUCCESS);
            EXPECT_RC(cuMemsetD2D16(d + 10 * pitch, pitch, 0xA1B2, 150, 20), CUDA_SUCCESS);
            EXPECT_RC(cuMemsetD2D32(d + 30 * pitch, pitch, 0x01020304u, 100, 34), CUDA_SUCCESS);
        }
        got = read_back(d, pitch * 64);
        if (got) {
            size_t i = first_diff(want, got, pitch * 64);
            EXPECT(i == pitch * 64, "%s: row %zu byte %zu is 0x%02x, expected 0x%02x",
                   async ? "async" : "sync", i / pitch, i % pitch, i < pitch * 64 ? got[i] : 0,
                   i < pitch * 64 ? want[i] : 0);
        }
        free(got);
        got = NULL;
    }
out:
    free(want);
    cuStreamDestroy(s);
    cuMemFree(d);
}

static void misaligned_memset_d16_d32_is_invalid_value(void)
{
    CUdeviceptr d = 0;
    CUstream s = NULL;
    CU(cuMemAlloc(&d, 4096));
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    EXPECT_RC(cuMemsetD16(d + 1, 0x1234, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD32(d + 2, 0x12345678u, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD32(d + 1, 0x12345678u, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD16Async(d + 3, 0x1234, 16, s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD32Async(d + 6, 0x12345678u, 16, s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD2D16(d + 1, 64, 0x1234, 8, 4), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemsetD2D32(d + 2, 64, 0x12345678u, 8, 4), CUDA_ERROR_INVALID_VALUE);
    /* The aligned forms of the same calls are fine. */
    EXPECT_RC(cuMemsetD16(d + 2, 0x1234, 16), CUDA_SUCCESS);
    EXPECT_RC(cuMemsetD32(d + 4, 0x12345678u, 16), CUDA_SUCCESS);
    EXPECT_RC(cuCtxSynchronize(), CUDA_SUCCESS);
    cuStreamDestroy(s);
    cuMemFree(d);
}

static void copy_past_the_end_of_an_allocation_is_invalid_value(void)
{
    uint8_t *h = calloc(1, 8192);
    CUdeviceptr d = 0, e = 0;
    if (!h) {
        EXPECT(0, "out of host memory");
        return;
    }
    CU(cuMemAlloc(&d, 4096));
    CU(cuMemAlloc(&e, 4096));
    EXPECT_RC(cuMemcpyHtoD(d, h, 4097), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemcpyHtoD(d + 4000, h, 200), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemcpyDtoH(h, d + 1, 4096), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemcpyDtoD(e, d, 8192), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemcpyDtoD(e + 2048, d, 4096), CUDA_ERROR_INVALID_VALUE);
    /* The last byte is still in range. */
    EXPECT_RC(cuMemcpyHtoD(d + 4095, h, 1), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyDtoH(h, d, 4096), CUDA_SUCCESS);
    cuMemFree(d);
    cuMemFree(e);
    free(h);
}

static void zero_byte_copies_succeed(void)
{
    uint8_t h[16] = {0};
    CUdeviceptr d = 0, e = 0;
    CUstream s = NULL;
    CU(cuMemAlloc(&d, 4096));
    CU(cuMemAlloc(&e, 4096));
    CU(cuStreamCreate(&s, 0));
    EXPECT_RC(cuMemcpyHtoD(d, h, 0), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyDtoH(h, d, 0), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyDtoD(e, d, 0), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpy(e, d, 0), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyHtoDAsync(d, h, 0, s), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyDtoHAsync(h, d, 0, s), CUDA_SUCCESS);
    EXPECT_RC(cuMemcpyAsync(e, d, 0, s), CUDA_SUCCESS);
    EXPECT_RC(cuStreamSynchronize(s), CUDA_SUCCESS);
    cuStreamDestroy(s);
    cuMemFree(d);
    cuMemFree(e);
}

static void memcpy2d_with_pitch_below_width_is_invalid_value(void)
{
    uint8_t *h = calloc(1, 64 * 1024);
    CUdeviceptr d = 0;
    size_t pitch = 0;
    if (!h) {
        EXPECT(0, "out of host memory");
        return;
    }
    CU(cuMemAllocPitch(&d, &pitch, 256, 16, 4));
    /* Source pitch 255 < width 256. */
    CUDA_MEMCPY2D c = copy2d(CU_MEMORYTYPE_HOST, h, 0, 255, CU_MEMORYTYPE_DEVICE, NULL, d, pitch, 256, 16);
    EXPECT_RC(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE);
    /* Destination pitch 200 < width 256. */
    c = copy2d(CU_MEMORYTYPE_DEVICE, NULL, d, pitch, CU_MEMORYTYPE_HOST, h, 0, 200, 256, 16);
    EXPECT_RC(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE);
    /* Pitch 256 but an x offset of 1: pitch < width + srcXInBytes. */
    c = copy2d(CU_MEMORYTYPE_HOST, h, 0, 256, CU_MEMORYTYPE_DEVICE, NULL, d, pitch, 256, 16);
    c.srcXInBytes = 1;
    EXPECT_RC(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE);
    cuMemFree(d);
    free(h);
}

int main(void)
{
    CUresult r = conf_context(&g_ctx);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: no context: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(sync_copies_htod_dtoh_dtod_round_trip);
    RUN(async_copies_on_a_stream_with_pinned_memory);
    RUN(unified_memcpy_infers_every_direction);
    RUN(unified_memcpy_async_infers_every_direction);
    RUN(peer_copies_between_two_devices);
    RUN(memcpy2d_with_pitched_device_memory);
    RUN(memcpy2d_async_with_pitched_device_memory);
    RUN(memcpy3d_between_device_and_host);
    RUN(memsets_d8_d16_d32_set_exactly_their_range);
    RUN(async_memsets_set_exactly_their_range);
    RUN(memsets_2d_set_rows_and_skip_padding);
    RUN(misaligned_memset_d16_d32_is_invalid_value);
    RUN(copy_past_the_end_of_an_allocation_is_invalid_value);
    RUN(zero_byte_copies_succeed);
    RUN(memcpy2d_with_pitch_below_width_is_invalid_value);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

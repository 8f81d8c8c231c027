/* conf_pools.c - stream-ordered allocation: cuMemAllocAsync/cuMemFreeAsync, the default memory pool,
 * pool accounting attributes, the release threshold, and pools created with cuMemPoolCreate.
 * Accounting is checked as NVIDIA documents it: USED_MEM_CURRENT counts what the application holds,
 * RESERVED_MEM_CURRENT what the pool holds (at least as much), and at a synchronisation the pool gives back
 * what it holds above its release threshold. Amounts are lower bounds (the pool rounds up to its pages).
 */
#include "check.h"

#define MiB (1ull << 20)

static CUcontext g_ctx;
static CUdevice g_dev;
static CUstream g_stream;

static cuuint64_t pool_attr(CUmemoryPool pool, CUmemPool_attribute attr)
{
    cuuint64_t v = ~(cuuint64_t)0;
    CUresult rc = cuMemPoolGetAttribute(pool, attr, &v);
    EXPECT(rc == CUDA_SUCCESS, "cuMemPoolGetAttribute(%d) returned %s", (int)attr, conf_err_name(rc));
    return v;
}

static void async_alloc_round_trips_data(void)
{
    enum { N = 256 * 1024 };
    const size_t bytes = N * sizeof(uint32_t);
    uint32_t *src = NULL, *dst = NULL;
    CU(cuMemAllocHost((void **)&src, bytes));
    CU(cuMemAllocHost((void **)&dst, bytes));
    for (uint32_t i = 0; i < N; i++) {
        src[i] = i ^ 0xa5a5a5a5u;
        dst[i] = 0;
    }
    CUdeviceptr d = 0;
    CU(cuMemAllocAsync(&d, bytes, g_stream));
    EXPECT(d != 0, "cuMemAllocAsync returned a NULL pointer");
    CU(cuMemcpyHtoDAsync(d, src, bytes, g_stream));
    CU(cuMemcpyDtoHAsync(dst, d, bytes, g_stream));
    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    size_t bad = 0;
    for (uint32_t i = 0; i < N; i++)
        bad += dst[i] != (i ^ 0xa5a5a5a5u);
    EXPECT(bad == 0, "%zu of %d words differ after the round trip", bad, N);
    CU(cuMemFreeHost(src));
    CU(cuMemFreeHost(dst));
}

static void default_pool_is_the_current_pool(void)
{
    CUmemoryPool def = NULL, cur = NULL;
    CU(cuDeviceGetDefaultMemPool(&def, g_dev));
    EXPECT(def != NULL, "no default pool");
    CU(cuDeviceGetMemPool(&cur, g_dev));
    EXPECT(cur == def, "current pool %p, default pool %p", (void *)cur, (void *)def);
    EXPECT_RC(cuDeviceGetDefaultMemPool(NULL, g_dev), CUDA_ERROR_INVALID_VALUE);
    /* A device's default pool cannot be destroyed. */
    EXPECT_RC(cuMemPoolDestroy(def), CUDA_ERROR_INVALID_VALUE);
}

static void used_and_reserved_track_allocations_and_threshold_zero_releases(void)
{
    CUmemoryPool pool;
    CU(cuDeviceGetDefaultMemPool(&pool, g_dev));
    cuuint64_t zero = 0;
    CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &zero));
    CU(cuStreamSynchronize(g_stream));
    const size_t size = 64 * MiB;
    cuuint64_t used0 = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    size_t free0 = 0, total = 0;
    CU(cuMemGetInfo(&free0, &total));

    CUdeviceptr d;
    CU(cuMemAllocAsync(&d, size, g_stream));
    CU(cuStreamSynchronize(g_stream));
    cuuint64_t used1 = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    cuuint64_t reserved1 = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
    EXPECT(used1 >= used0 + size, "used went from %llu to %llu for %zu bytes", (unsigned long long)used0,
           (unsigned long long)used1, size);
    EXPECT(reserved1 >= used1, "reserved %llu < used %llu", (unsigned long long)reserved1,
           (unsigned long long)used1);
    size_t free1 = 0;
    CU(cuMemGetInfo(&free1, &total));
    EXPECT(free1 + size <= free0, "free went from %zu to %zu for %zu pool bytes", free0, free1, size);

    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    cuuint64_t used2 = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    cuuint64_t reserved2 = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
    EXPECT(used2 == used0, "used %llu after the free, %llu before the allocation", (unsigned long long)used2,
           (unsigned long long)used0);
    if (used0 == 0)
        EXPECT(reserved2 == 0, "threshold 0: the idle pool still reserves %llu bytes after a synchronize",
               (unsigned long long)reserved2);
    size_t free2 = 0;
    CU(cuMemGetInfo(&free2, &total));
    EXPECT(free2 >= free1 + size, "threshold 0: free went only from %zu to %zu after the synchronize", free1,
           free2);
}

static void release_threshold_round_trips_and_keeps_memory(void)
{
    CUmemoryPool pool;
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = (int)g_dev;
    CU(cuMemPoolCreate(&pool, &props));
    cuuint64_t threshold = pool_attr(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD);
    EXPECT(threshold == 0, "a new pool has release threshold %llu", (unsigned long long)threshold);
    cuuint64_t want = 256 * MiB;
    CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &want));
    threshold = pool_attr(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD);
    EXPECT(threshold == want, "release threshold set to %llu, reads %llu", (unsigned long long)want,
           (unsigned long long)threshold);

    /* Below the threshold, a synchronize leaves the freed memory reserved in the pool. */
    const size_t size = 64 * MiB;
    CUdeviceptr d;
    CU(cuMemAllocFromPoolAsync(&d, size, pool, g_stream));
    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    cuuint64_t used = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    cuuint64_t reserved = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
    EXPECT(used == 0, "used %llu with nothing allocated", (unsigned long long)used);
    EXPECT(reserved >= size, "reserved %llu after freeing %zu bytes under a %llu-byte threshold",
           (unsigned long long)reserved, size, (unsigned long long)want);
    CU(cuMemPoolTrimTo(pool, 0));
    reserved = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
    EXPECT(reserved == 0, "reserved %llu after trimming an idle pool to 0", (unsigned long long)reserved);
    CU(cuMemPoolDestroy(pool));
}

static void created_pool_serves_allocations(void)
{
    CUmemoryPool pool;
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = (int)g_dev;
    CU(cuMemPoolCreate(&pool, &props));
    CUmemoryPool def;
    CU(cuDeviceGetDefaultMemPool(&def, g_dev));
    EXPECT(pool != def, "cuMemPoolCreate returned the default pool");
    const size_t size = 4 * MiB;
    CUdeviceptr d = 0;
    CU(cuMemAllocFromPoolAsync(&d, size, pool, g_stream));
    CU(cuStreamSynchronize(g_stream));
    EXPECT(d != 0, "cuMemAllocFromPoolAsync returned a NULL pointer");
    cuuint64_t used = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    EXPECT(used >= size, "pool used %llu after a %zu-byte allocation", (unsigned long long)used, size);
    CUmemoryPool owner = NULL;
    CU(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, d));
    EXPECT(owner == pool, "allocation reports pool %p, allocated from %p", (void *)owner, (void *)pool);
    CU(cuMemsetD32Async(d, 0x01020304u, size / 4, g_stream));
    uint32_t word = 0;
    CU(cuMemcpyDtoHAsync(&word, d + size - 4, 4, g_stream));
    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    EXPECT(word == 0x01020304u, "last word 0x%08x", word);
    used = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    EXPECT(used == 0, "pool used %llu after everything was freed", (unsigned long long)used);
    CU(cuMemPoolDestroy(pool));
}

static CUresult create_device_pool(CUmemoryPool *pool, CUdevice dev)
{
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = (int)dev;
    return cuMemPoolCreate(pool, &props);
}

static void high_watermarks_track_the_peak_and_reset(void)
{
    CUmemoryPool pool;
    CU(create_device_pool(&pool, g_dev));
    const size_t size = 32 * MiB;
    CUdeviceptr d;
    CU(cuMemAllocFromPoolAsync(&d, size, pool, g_stream));
    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    cuuint64_t used_high = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH);
    cuuint64_t reserved_high = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH);
    EXPECT(used_high >= size, "used high watermark %llu after a %zu-byte allocation",
           (unsigned long long)used_high, size);
    EXPECT(reserved_high >= used_high, "reserved high %llu < used high %llu",
           (unsigned long long)reserved_high, (unsigned long long)used_high);
    cuuint64_t zero = 0, nonzero = 1;
    CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &zero));
    CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &zero));
    cuuint64_t used = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    used_high = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH);
    EXPECT(used_high == used, "after a reset the used high watermark is %llu, current use %llu",
           (unsigned long long)used_high, (unsigned long long)used);
    /* NVIDIA: it is illegal to set RESERVED_MEM_HIGH to a non-zero value. */
    EXPECT_RC(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &nonzero),
              CUDA_ERROR_INVALID_VALUE);
    CU(cuMemPoolDestroy(pool));
}

static void cuMemFree_releases_a_stream_ordered_allocation(void)
{
    CUmemoryPool pool;
    CU(cuDeviceGetDefaultMemPool(&pool, g_dev));
    cuuint64_t used0 = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    CUdeviceptr d;
    CU(cuMemAllocAsync(&d, 8 * MiB, g_stream));
    CU(cuStreamSynchronize(g_stream)); /* cuMemFree does not wait for the allocation itself */
    CU(cuMemFree(d));
    cuuint64_t used = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    EXPECT(used == used0, "used %llu after cuMemFree, %llu before the allocation", (unsigned long long)used,
           (unsigned long long)used0);
}

static void destroyed_pool_keeps_outstanding_allocations_valid(void)
{
    CUmemoryPool pool;
    CU(create_device_pool(&pool, g_dev));
    const size_t size = 16 * MiB;
    CUdeviceptr d;
    CU(cuMemAllocFromPoolAsync(&d, size, pool, g_stream));
    CU(cuStreamSynchronize(g_stream));
    size_t free_held = 0, total = 0;
    CU(cuMemGetInfo(&free_held, &total));
    /* Destroying returns at once; the pool's resources go when its last allocation is freed, whatever the
     * pool's release threshold was. */
    cuuint64_t keep_all = ~(cuuint64_t)0;
    CU(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
    CU(cuMemPoolDestroy(pool));
    CU(cuMemsetD32Async(d, 0xfeedf00du, size / 4, g_stream));
    uint32_t word = 0;
    CU(cuMemcpyDtoHAsync(&word, d + size / 2, 4, g_stream));
    CU(cuStreamSynchronize(g_stream));
    EXPECT(word == 0xfeedf00du, "word 0x%08x in an allocation of a destroyed pool", word);
    CU(cuMemFreeAsync(d, g_stream));
    CU(cuStreamSynchronize(g_stream));
    CU(cuCtxSynchronize());
    size_t free_after = 0;
    CU(cuMemGetInfo(&free_after, &total));
    EXPECT(free_after >= free_held + size, "free %zu while the allocation lived, %zu after it was freed",
           free_held, free_after);
}

static void pool_of_another_device_serves_this_stream(void)
{
    int n = 0;
    CU(cuDeviceGetCount(&n));
    if (n < 2) {
        printf("note: one device; %s skipped\n", conf_current);
        return;
    }
    CUdevice other = g_dev == 0 ? 1 : 0;
    int supported = 0;
    CU(cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, other));
    if (!supported)
        return;
    CUmemoryPool pool;
    CU(create_device_pool(&pool, other));
    /* cuMemAllocFromPoolAsync: "The specified memory pool may be from a device different than that of the
     * specified hStream." */
    CUdeviceptr d = 0;
    EXPECT_RC(cuMemAllocFromPoolAsync(&d, 4 * MiB, pool, g_stream), CUDA_SUCCESS);
    if (d != 0) {
        int ordinal = -1;
        CU(cuStreamSynchronize(g_stream));
        CU(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, d));
        EXPECT(ordinal == (int)other, "allocation from a pool of device %d lives on device %d", (int)other,
               ordinal);
        CU(cuMemFreeAsync(d, g_stream));
        CU(cuStreamSynchronize(g_stream));
    }
    CU(cuMemPoolDestroy(pool));
}

static void bad_pool_props_return_invalid_value(void)
{
    CUmemoryPool pool = NULL;
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = (int)g_dev;
    EXPECT_RC(cuMemPoolCreate(&pool, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemPoolCreate(NULL, &props), CUDA_ERROR_INVALID_VALUE);
    props.allocType = CU_MEM_ALLOCATION_TYPE_INVALID;
    EXPECT_RC(cuMemPoolCreate(&pool, &props), CUDA_ERROR_INVALID_VALUE);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_INVALID;
    EXPECT_RC(cuMemPoolCreate(&pool, &props), CUDA_ERROR_INVALID_VALUE);
    /* cuMemPoolCreate: "Specifying CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT as the type will result in
     * CUDA_ERROR_INVALID_VALUE." */
    props.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT;
    props.location.id = 0;
    EXPECT_RC(cuMemPoolCreate(&pool, &props), CUDA_ERROR_INVALID_VALUE);
}

int main(void)
{
    CUresult rc = conf_context(&g_ctx);
    if (rc != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: no context (%s)\n", conf_err_name(rc));
        return 1;
    }
    if (cuCtxGetDevice(&g_dev) != CUDA_SUCCESS ||
        cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: no device or stream\n");
        return 1;
    }
    int supported = 0;
    if (cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, g_dev) != CUDA_SUCCESS ||
        !supported) {
        printf("note: device %d has no memory pools; nothing to check\n", (int)g_dev);
        return 0;
    }
    RUN(async_alloc_round_trips_data);
    RUN(default_pool_is_the_current_pool);
    RUN(used_and_reserved_track_allocations_and_threshold_zero_releases);
    RUN(release_threshold_round_trips_and_keeps_memory);
    RUN(created_pool_serves_allocations);
    RUN(high_watermarks_track_the_peak_and_reset);
    RUN(cuMemFree_releases_a_stream_ordered_allocation);
    RUN(destroyed_pool_keeps_outstanding_allocations_valid);
    RUN(pool_of_another_device_serves_this_stream);
    RUN(bad_pool_props_return_invalid_value);
    cuStreamDestroy(g_stream);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

/* conf_memory.c - device, pitched, pinned-host, registered and managed memory, and pointer queries.
 * Device pointers are never dereferenced on the host: they are not host memory, and on a GPU touching one
 * faults. Sizes are checked as lower bounds only (NVIDIA's allocator rounds up, to 2 MiB pages for large
 * allocations), and free memory as deltas of at least the size allocated, since the driver keeps some
 * device memory of its own. Every test runs in one context, created by main.
 */
#include "check.h"

#include <unistd.h>

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static CUcontext g_ctx;
static CUdevice g_dev;

static void alloc_and_free_succeed(void)
{
    CUdeviceptr p = 0;
    CU(cuMemAlloc(&p, 1 * MiB));
    EXPECT(p != 0, "cuMemAlloc returned a NULL device pointer");
    EXPECT(p % 256 == 0, "device pointer 0x%llx is not 256-byte aligned", (unsigned long long)p);
    CU(cuMemFree(p));
    EXPECT_RC(cuMemAlloc(NULL, 16), CUDA_ERROR_INVALID_VALUE);
}

static void zero_size_alloc_returns_invalid_value(void)
{
    CUdeviceptr p;
    EXPECT_RC(cuMemAlloc(&p, 0), CUDA_ERROR_INVALID_VALUE);
}

static void double_free_and_interior_free_return_invalid_value(void)
{
    CUdeviceptr p;
    CU(cuMemAlloc(&p, 4 * MiB));
    EXPECT_RC(cuMemFree(p + 4096), CUDA_ERROR_INVALID_VALUE);
    CU(cuMemFree(p));
    EXPECT_RC(cuMemFree(p), CUDA_ERROR_INVALID_VALUE);
}

static void mem_get_info_tracks_allocations(void)
{
    size_t free0 = 0, total = 0, dev_total = 0;
    CU(cuMemGetInfo(&free0, &total));
    CU(cuDeviceTotalMem(&dev_total, g_dev));
    EXPECT(total == dev_total, "cuMemGetInfo total %zu, cuDeviceTotalMem %zu", total, dev_total);
    EXPECT(free0 <= total, "free %zu exceeds total %zu", free0, total);
    const size_t size = 256 * MiB;
    CUdeviceptr p;
    CU(cuMemAlloc(&p, size));
    size_t free1 = 0;
    CU(cuMemGetInfo(&free1, &total));
    EXPECT(free1 + size <= free0, "free went from %zu to %zu for a %zu-byte allocation", free0, free1, size);
    CU(cuMemFree(p));
    size_t free2 = 0;
    CU(cuMemGetInfo(&free2, &total));
    EXPECT(free2 >= free1 + size, "freeing %zu bytes raised free only from %zu to %zu", size, free1, free2);
    EXPECT_RC(cuMemGetInfo(NULL, &total), CUDA_ERROR_INVALID_VALUE);
}

static void alloc_larger_than_total_returns_out_of_memory(void)
{
    size_t total = 0;
    CU(cuDeviceTotalMem(&total, g_dev));
    CUdeviceptr p = 0;
    EXPECT_RC(cuMemAlloc(&p, total + GiB), CUDA_ERROR_OUT_OF_MEMORY);
    /* The failure is not sticky: the context still allocates. */
    CU(cuMemAlloc(&p, 1 * MiB));
    CU(cuMemFree(p));
}

static void alloc_gib_chunks_until_out_of_memory_stays_within_total(void)
{
    size_t total = 0, free0 = 0;
    CU(cuMemGetInfo(&free0, &total));
    enum { MAX_CHUNKS = 4096 };
    static CUdeviceptr chunks[MAX_CHUNKS];
    size_t n = 0;
    CUresult rc = CUDA_SUCCESS;
    while (n < MAX_CHUNKS && (rc = cuMemAlloc(&chunks[n], GiB)) == CUDA_SUCCESS)
        n++;
    EXPECT(rc == CUDA_ERROR_OUT_OF_MEMORY, "allocation %zu returned %s", n, conf_err_name(rc));
    EXPECT((unsigned long long)n * GiB <= total, "%zu GiB allocated on a device of %zu bytes", n, total);
    EXPECT(n >= 1, "not even one GiB could be allocated (free was %zu)", free0);
    size_t free_full = 0;
    CU(cuMemGetInfo(&free_full, &total));
    size_t freed = 0;
    for (size_t i = 0; i < n; i++) {
        CUresult f = cuMemFree(chunks[i]);
        EXPECT(f == CUDA_SUCCESS, "freeing chunk %zu returned %s", i, conf_err_name(f));
        if (f == CUDA_SUCCESS)
            freed++;
    }
    size_t free_after = 0;
    CU(cuMemGetInfo(&free_after, &total));
    EXPECT(free_after >= free_full + (unsigned long long)freed * GiB,
           "after freeing %zu GiB free went only from %zu to %zu", freed, free_full, free_after);
}

static void device_pointer_attributes_describe_the_allocation(void)
{
    const size_t size = 4 * MiB;
    CUdeviceptr p;
    CU(cuMemAlloc(&p, size));
    CUdeviceptr inner = p + 12345;
    unsigned int type = 0, managed = 7;
    CUcontext ctx = NULL;
    int ordinal = -1;
    CUdeviceptr start = 0;
    size_t range = 0;
    CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, inner));
    EXPECT(type == CU_MEMORYTYPE_DEVICE, "memory type %u", type);
    CU(cuPointerGetAttribute(&ctx, CU_POINTER_ATTRIBUTE_CONTEXT, inner));
    EXPECT(ctx == g_ctx, "context %p, allocated in %p", (void *)ctx, (void *)g_ctx);
    CU(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, inner));
    EXPECT(ordinal == (int)g_dev, "device ordinal %d", ordinal);
    CU(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, inner));
    EXPECT(start == p, "range start 0x%llx, allocation at 0x%llx", (unsigned long long)start,
           (unsigned long long)p);
    CU(cuPointerGetAttribute(&range, CU_POINTER_ATTRIBUTE_RANGE_SIZE, inner));
    EXPECT(range >= size, "range size %zu for a %zu-byte allocation", range, size);
    CU(cuPointerGetAttribute(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, inner));
    EXPECT(managed == 0, "cuMemAlloc memory reports IS_MANAGED=%u", managed);
    CUdeviceptr dp = 0;
    CU(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, inner));
    EXPECT(dp == inner, "device pointer 0x%llx for 0x%llx", (unsigned long long)dp,
           (unsigned long long)inner);
    void *hp = NULL;
    EXPECT_RC(cuPointerGetAttribute(&hp, CU_POINTER_ATTRIBUTE_HOST_POINTER, inner), CUDA_ERROR_INVALID_VALUE);

    CUpointer_attribute attrs[2] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_CONTEXT};
    unsigned int type2 = 0;
    CUcontext ctx2 = NULL;
    void *data[2] = {&type2, &ctx2};
    CU(cuPointerGetAttributes(2, attrs, data, inner));
    EXPECT(type2 == CU_MEMORYTYPE_DEVICE && ctx2 == g_ctx, "cuPointerGetAttributes: type %u, context %p",
           type2, (void *)ctx2);
    CU(cuMemFree(p));
}

static void buffer_ids_are_never_reused(void)
{
    CUdeviceptr a, b;
    CU(cuMemAlloc(&a, 1 * MiB));
    CU(cuMemAlloc(&b, 1 * MiB));
    unsigned long long ia = 0, ib = 0, ia_inner = 0;
    CU(cuPointerGetAttribute(&ia, CU_POINTER_ATTRIBUTE_BUFFER_ID, a));
    CU(cuPointerGetAttribute(&ia_inner, CU_POINTER_ATTRIBUTE_BUFFER_ID, a + 100));
    CU(cuPointerGetAttribute(&ib, CU_POINTER_ATTRIBUTE_BUFFER_ID, b));
    EXPECT(ia == ia_inner, "one allocation has buffer ids %llu and %llu", ia, ia_inner);
    EXPECT(ia != ib, "two allocations share buffer id %llu", ia);
    CU(cuMemFree(a));
    CUdeviceptr c;
    CU(cuMemAlloc(&c, 1 * MiB)); /* possibly at a's address */
    unsigned long long ic = 0;
    CU(cuPointerGetAttribute(&ic, CU_POINTER_ATTRIBUTE_BUFFER_ID, c));
    EXPECT(ic != ia && ic != ib, "a new allocation reuses buffer id %llu", ic);
    CU(cuMemFree(b));
    CU(cuMemFree(c));
}

static void host_malloc_pointer_is_unknown_to_cuPointerGetAttribute(void)
{
    void *h = malloc(4096);
    EXPECT(h != NULL, "malloc failed");
    if (h == NULL)
        return;
    CUdeviceptr hp = (CUdeviceptr)(uintptr_t)h;
    unsigned int type = 0;
    CUcontext ctx = NULL;
    EXPECT_RC(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, hp), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuPointerGetAttribute(&ctx, CU_POINTER_ATTRIBUTE_CONTEXT, hp), CUDA_ERROR_INVALID_VALUE);
    /* cuPointerGetAttributes answers default values instead of failing. */
    CUpointer_attribute attrs[2] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_CONTEXT};
    type = 99;
    ctx = (CUcontext)h;
    void *data[2] = {&type, &ctx};
    EXPECT_RC(cuPointerGetAttributes(2, attrs, data, hp), CUDA_SUCCESS);
    EXPECT(type == 0, "memory type of a malloc pointer: %u", type);
    EXPECT(ctx == NULL, "context of a malloc pointer: %p", (void *)ctx);
    free(h);
}

static void address_range_of_interior_pointer_is_the_allocation(void)
{
    const size_t size = 6 * MiB;
    CUdeviceptr p;
    CU(cuMemAlloc(&p, size));
    CUdeviceptr base = 0;
    size_t got = 0;
    CU(cuMemGetAddressRange(&base, &got, p + size / 2));
    EXPECT(base == p, "base 0x%llx, allocation at 0x%llx", (unsigned long long)base, (unsigned long long)p);
    EXPECT(got >= size, "size %zu for a %zu-byte allocation", got, size);
    /* Either output is optional. */
    CU(cuMemGetAddressRange(NULL, &got, p + 1));
    CU(cuMemGetAddressRange(&base, NULL, p + size - 1));
    EXPECT(base == p, "base of the last byte 0x%llx", (unsigned long long)base);
    CU(cuMemFree(p));
}

static void alloc_pitch_pads_rows_and_rejects_bad_element_size(void)
{
    const size_t width = 1000, height = 37;
    CUdeviceptr p = 0;
    size_t pitch = 0;
    CU(cuMemAllocPitch(&p, &pitch, width, height, 4));
    EXPECT(pitch >= width, "pitch %zu for rows of %zu bytes", pitch, width);
    CUdeviceptr base = 0;
    size_t size = 0;
    CU(cuMemGetAddressRange(&base, &size, p));
    EXPECT(base == p && size >= pitch * height, "pitched allocation of %zu x %zu has %zu bytes", pitch,
           height, size);
    CU(cuMemFree(p));
    EXPECT_RC(cuMemAllocPitch(&p, &pitch, width, height, 3), CUDA_ERROR_INVALID_VALUE);
}

static void pinned_host_memory_is_allocated_flagged_and_mapped(void)
{
    void *h = NULL;
    CU(cuMemAllocHost(&h, 64 * 1024));
    EXPECT(h != NULL, "cuMemAllocHost returned NULL");
    memset(h, 0x5a, 64 * 1024); /* host memory: the host may touch it */
    unsigned int flags = 0;
    CU(cuMemHostGetFlags(&flags, h));
    unsigned int type = 0;
    CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)h));
    EXPECT(type == CU_MEMORYTYPE_HOST, "pinned memory reports memory type %u", type);
    CU(cuMemFreeHost(h));

    const unsigned int want = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP;
    CU(cuMemHostAlloc(&h, 8192, want));
    ((volatile unsigned char *)h)[8191] = 1;
    CU(cuMemHostGetFlags(&flags, h));
    EXPECT((flags & want) == want, "flags 0x%x, allocated with 0x%x", flags, want);
    unsigned int inner_flags = 0;
    CU(cuMemHostGetFlags(&inner_flags, (char *)h + 100)); /* any pointer inside the allocation */
    EXPECT(inner_flags == flags, "flags 0x%x inside the allocation, 0x%x at its start", inner_flags, flags);
    CUdeviceptr d = 0;
    CU(cuMemHostGetDevicePointer(&d, h, 0));
    int uva = 0;
    CU(cuDeviceGetAttribute(&uva, CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, g_dev));
    if (uva)
        EXPECT(d == (CUdeviceptr)(uintptr_t)h, "device pointer 0x%llx for host pointer %p",
               (unsigned long long)d, h);
    EXPECT_RC(cuMemHostGetDevicePointer(&d, h, 1), CUDA_ERROR_INVALID_VALUE);
    CU(cuMemFreeHost(h));

    void *plain = malloc(4096);
    if (plain) {
        EXPECT_RC(cuMemHostGetFlags(&flags, plain), CUDA_ERROR_INVALID_VALUE);
        free(plain);
    }
}

static void host_register_twice_and_unregister_unknown_fail(void)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), size = 16 * page;
    void *buf = aligned_alloc(page, size);
    void *other = aligned_alloc(page, page);
    EXPECT(buf != NULL && other != NULL, "aligned_alloc failed");
    if (buf == NULL || other == NULL) {
        free(buf);
        free(other);
        return;
    }
    memset(buf, 0, size);
    CU(cuMemHostRegister(buf, size, CU_MEMHOSTREGISTER_DEVICEMAP));
    EXPECT_RC(cuMemHostRegister(buf, size, CU_MEMHOSTREGISTER_DEVICEMAP),
              CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
    CUdeviceptr d = 0;
    EXPECT_RC(cuMemHostGetDevicePointer(&d, buf, 0), CUDA_SUCCESS);
    EXPECT(d != 0, "registered memory has no device pointer");
    unsigned int type = 0;
    CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)buf));
    EXPECT(type == CU_MEMORYTYPE_HOST, "registered memory reports memory type %u", type);
    EXPECT_RC(cuMemHostUnregister(other), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
    CU(cuMemHostUnregister(buf));
    EXPECT_RC(cuMemHostUnregister(buf), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
    free(buf);
    free(other);
}

static void managed_memory_written_by_host_is_read_by_copy(void)
{
    int supported = 0;
    CU(cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, g_dev));
    if (!supported) {
        printf("note: device has no managed memory; %s skipped\n", conf_current);
        return;
    }
    enum { N = 4096 };
    CUdeviceptr m = 0;
    CU(cuMemAllocManaged(&m, N * sizeof(uint32_t), CU_MEM_ATTACH_GLOBAL));
    uint32_t *host_view = (uint32_t *)(uintptr_t)m; /* managed memory is valid on the host */
    for (uint32_t i = 0; i < N; i++)
        host_view[i] = i * 2654435761u;
    static uint32_t back[N];
    CU(cuMemcpyDtoH(back, m, sizeof back));
    size_t bad = 0;
    for (uint32_t i = 0; i < N; i++)
        bad += back[i] != i * 2654435761u;
    EXPECT(bad == 0, "%zu of %d words differ after the copy", bad, N);
    unsigned int managed = 0;
    CU(cuPointerGetAttribute(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, m));
    EXPECT(managed == 1, "managed memory reports IS_MANAGED=%u", managed);
    CU(cuMemFree(m));
    EXPECT_RC(cuMemAllocManaged(&m, 4096, CU_MEM_ATTACH_SINGLE), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemAllocManaged(&m, 4096, CU_MEM_ATTACH_GLOBAL | CU_MEM_ATTACH_HOST),
              CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemAllocManaged(&m, 0, CU_MEM_ATTACH_GLOBAL), CUDA_ERROR_INVALID_VALUE);
}

int main(void)
{
    CUresult rc = conf_context(&g_ctx);
    if (rc != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: no context (%s)\n", conf_err_name(rc));
        return 1;
    }
    if (cuCtxGetDevice(&g_dev) != CUDA_SUCCESS)
        return 1;
    RUN(alloc_and_free_succeed);
    RUN(zero_size_alloc_returns_invalid_value);
    RUN(double_free_and_interior_free_return_invalid_value);
    RUN(mem_get_info_tracks_allocations);
    RUN(alloc_larger_than_total_returns_out_of_memory);
    RUN(alloc_gib_chunks_until_out_of_memory_stays_within_total);
    RUN(device_pointer_attributes_describe_the_allocation);
    RUN(buffer_ids_are_never_reused);
    RUN(host_malloc_pointer_is_unknown_to_cuPointerGetAttribute);
    RUN(address_range_of_interior_pointer_is_the_allocation);
    RUN(alloc_pitch_pads_rows_and_rejects_bad_element_size);
    RUN(pinned_host_memory_is_allocated_flagged_and_mapped);
    RUN(host_register_twice_and_unregister_unknown_fail);
    RUN(managed_memory_written_by_host_is_read_by_copy);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

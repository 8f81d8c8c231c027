/* conf_vmm.c - virtual memory management: granularity, address reservations, physical allocations,
 * mappings and access, and their bad inputs.
 *
 * A physical allocation (cuMemCreate) is device memory from the moment it exists: free memory drops by at
 * least its size, and comes back only once the handle is released and no mapping of it remains. Mapped
 * memory with access granted is reached like any device memory: copies, memsets, kernels and pointer
 * queries. Sizes and offsets are multiples of the granularity the driver reports, never an assumed 2 MiB.
 * Free memory is checked as deltas of at least the size, as in conf_memory.c.
 */
#include "check.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static CUcontext g_ctx;
static CUdevice g_dev;
static CUmodule g_mod;
static CUfunction g_fill;
static size_t g_gran;

static CUmemAllocationProp device_prop(void)
{
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = (int)g_dev;
    return p;
}

static CUmemAccessDesc rw_access(void)
{
    CUmemAccessDesc d;
    memset(&d, 0, sizeof d);
    d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d.location.id = (int)g_dev;
    d.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    return d;
}

static size_t free_now(void)
{
    size_t f = 0, t = 0;
    cuMemGetInfo(&f, &t);
    return f;
}

static void granularity_is_reported_for_device_memory(void)
{
    CUmemAllocationProp p = device_prop();
    size_t min = 0, rec = 0;
    CU(cuMemGetAllocationGranularity(&min, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    CU(cuMemGetAllocationGranularity(&rec, &p, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
    EXPECT(min > 0 && (min & (min - 1)) == 0, "minimum granularity %zu is not a power of two", min);
    EXPECT(rec >= min && rec % min == 0, "recommended granularity %zu is not a multiple of the minimum %zu",
           rec, min);
    EXPECT_RC(cuMemGetAllocationGranularity(NULL, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
              CUDA_ERROR_INVALID_VALUE);
}

static void map_with_access_round_trips_copies_memsets_and_kernels(void)
{
    enum { WORDS = 4096 };
    const size_t size = 2 * g_gran;
    CUmemAllocationProp p = device_prop();
    CUmemGenericAllocationHandle h = 0;
    CUdeviceptr va = 0;
    CU(cuMemAddressReserve(&va, size, 0, 0, 0));
    EXPECT(va != 0 && va % g_gran == 0, "reservation at 0x%llx is not granularity-aligned",
           (unsigned long long)va);
    CU(cuMemCreate(&h, size, &p, 0));
    CU(cuMemMap(va, size, 0, h, 0));
    CUmemAccessDesc d = rw_access();
    CU(cuMemSetAccess(va, size, &d, 1));

    static uint32_t in[WORDS], out[WORDS];
    for (uint32_t i = 0; i < WORDS; i++)
        in[i] = i * 2654435761u;
    /* A copy in, a copy across the two granules, a copy out. */
    CU(cuMemcpyHtoD(va, in, sizeof in));
    CU(cuMemcpyDtoD(va + g_gran, va, sizeof in));
    memset(out, 0, sizeof out);
    CU(cuMemcpyDtoH(out, va + g_gran, sizeof out));
    EXPECT(memcmp(in, out, sizeof in) == 0, "data copied through the mapping differs");

    /* A memset and a kernel on the second granule. */
    CU(cuMemsetD32(va + g_gran, 0x01020304u, WORDS));
    CU(cuMemcpyDtoH(out, va + g_gran, sizeof out));
    size_t bad = 0;
    for (size_t i = 0; i < WORDS; i++)
        bad += out[i] != 0x01020304u;
    EXPECT(bad == 0, "%zu words differ after cuMemsetD32", bad);
    CUdeviceptr dst = va + g_gran;
    uint32_t v = 77;
    uint64_t n = WORDS;
    void *args[] = {&dst, &v, &n};
    CU(cuLaunchKernel(g_fill, WORDS / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CU(cuMemcpyDtoH(out, va + g_gran, sizeof out));
    bad = 0;
    for (size_t i = 0; i < WORDS; i++)
        bad += out[i] != 77;
    EXPECT(bad == 0, "%zu words differ after a kernel wrote through the mapping", bad);

    unsigned int type = 0;
    int ordinal = -1;
    CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, va + 12345));
    EXPECT(type == CU_MEMORYTYPE_DEVICE, "memory type %u of mapped memory", type);
    CU(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, va));
    EXPECT(ordinal == (int)g_dev, "device ordinal %d of mapped memory", ordinal);

    unsigned long long flags = 0;
    CU(cuMemGetAccess(&flags, &d.location, va + g_gran));
    EXPECT(flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "cuMemGetAccess returned 0x%llx", flags);
    CUmemAllocationProp back;
    memset(&back, 0xff, sizeof back);
    CU(cuMemGetAllocationPropertiesFromHandle(&back, h));
    EXPECT(back.type == CU_MEM_ALLOCATION_TYPE_PINNED && back.location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
               back.location.id == (int)g_dev,
           "properties: type %d, location %d/%d", (int)back.type, (int)back.location.type, back.location.id);

    CU(cuMemUnmap(va, size));
    CU(cuMemRelease(h));
    CU(cuMemAddressFree(va, size));
}

static void one_allocation_maps_at_two_addresses(void)
{
    const size_t size = g_gran;
    CUmemAllocationProp p = device_prop();
    CUmemGenericAllocationHandle h;
    CUdeviceptr a = 0, b = 0;
    CU(cuMemCreate(&h, size, &p, 0));
    CU(cuMemAddressReserve(&a, size, 0, 0, 0));
    CU(cuMemAddressReserve(&b, size, 0, 0, 0));
    CU(cuMemMap(a, size, 0, h, 0));
    CU(cuMemMap(b, size, 0, h, 0));
    CUmemAccessDesc d = rw_access();
    CU(cuMemSetAccess(a, size, &d, 1));
    CU(cuMemSetAccess(b, size, &d, 1));
    CU(cuMemsetD32(a, 0xabcdef01u, size / 4));
    uint32_t w = 0;
    CU(cuMemcpyDtoH(&w, b + size - 4, 4));
    EXPECT(w == 0xabcdef01u, "the second mapping reads 0x%08x", w);
    CU(cuMemUnmap(a, size));
    CU(cuMemUnmap(b, size));
    CU(cuMemRelease(h));
    CU(cuMemAddressFree(a, size));
    CU(cuMemAddressFree(b, size));
}

static void reservation_honours_alignment(void)
{
    const size_t align = 8 * g_gran;
    CUdeviceptr va = 0;
    CU(cuMemAddressReserve(&va, g_gran, align, 0, 0));
    EXPECT(va % align == 0, "reservation at 0x%llx asked for alignment %zu", (unsigned long long)va, align);
    CU(cuMemAddressFree(va, g_gran));
    EXPECT_RC(cuMemAddressReserve(&va, g_gran, 3 * g_gran, 0, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemAddressReserve(NULL, g_gran, 0, 0, 0), CUDA_ERROR_INVALID_VALUE);
}

static void memory_is_charged_until_released_and_unmapped(void)
{
    const size_t size = 256 * MiB / g_gran * g_gran;
    CUmemAllocationProp p = device_prop();
    size_t free0 = free_now();
    CUmemGenericAllocationHandle h;
    CU(cuMemCreate(&h, size, &p, 0));
    size_t free1 = free_now();
    EXPECT(free1 + size <= free0, "free went from %zu to %zu for a %zu-byte cuMemCreate", free0, free1, size);
    CUdeviceptr va;
    CU(cuMemAddressReserve(&va, size, 0, 0, 0));
    CU(cuMemMap(va, size, 0, h, 0));
    /* Released while mapped: the mapping keeps the memory. */
    CU(cuMemRelease(h));
    size_t free2 = free_now();
    EXPECT(free2 + size <= free0, "releasing a mapped allocation freed its memory (free %zu -> %zu)", free1,
           free2);
    CU(cuMemUnmap(va, size));
    size_t free3 = free_now();
    EXPECT(free3 >= free2 + size, "unmapping the last mapping freed only %zu -> %zu", free2, free3);
    CU(cuMemAddressFree(va, size));
}

static void create_until_out_of_memory_stays_within_total(void)
{
    size_t total = 0;
    CU(cuDeviceTotalMem(&total, g_dev));
    const size_t chunk = GiB / g_gran * g_gran;
    enum { MAX_CHUNKS = 4096 };
    static CUmemGenericAllocationHandle hs[MAX_CHUNKS];
    CUmemAllocationProp p = device_prop();
    size_t n = 0;
    CUresult rc = CUDA_SUCCESS;
    while (n < MAX_CHUNKS && (rc = cuMemCreate(&hs[n], chunk, &p, 0)) == CUDA_SUCCESS)
        n++;
    EXPECT(rc == CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate %zu returned %s", n, conf_err_name(rc));
    EXPECT((unsigned long long)n * chunk <= total, "%zu chunks of %zu bytes on a device of %zu bytes", n,
           chunk, total);
    EXPECT(n >= 1, "not even one chunk could be created");
    size_t free_full = free_now();
    for (size_t i = 0; i < n; i++)
        EXPECT_RC(cuMemRelease(hs[i]), CUDA_SUCCESS);
    size_t free_after = free_now();
    EXPECT(free_after >= free_full + (unsigned long long)n * chunk,
           "releasing %zu chunks raised free %zu -> %zu", n, free_full, free_after);
    /* Not sticky: the device still allocates. */
    CUmemGenericAllocationHandle h;
    CU(cuMemCreate(&h, g_gran, &p, 0));
    CU(cuMemRelease(h));
}

static void bad_sizes_offsets_and_overlaps_are_invalid_value(void)
{
    CUmemAllocationProp p = device_prop();
    CUmemGenericAllocationHandle h;
    EXPECT_RC(cuMemCreate(&h, g_gran + g_gran / 2, &p, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemCreate(&h, 0, &p, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemCreate(NULL, g_gran, &p, 0), CUDA_ERROR_INVALID_VALUE);

    const size_t size = 2 * g_gran;
    CUdeviceptr va;
    CU(cuMemCreate(&h, size, &p, 0));
    CU(cuMemAddressReserve(&va, 4 * g_gran, 0, 0, 0));
    /* Unaligned address, size, offset; beyond the allocation. */
    EXPECT_RC(cuMemMap(va + g_gran / 2, g_gran, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemMap(va, g_gran / 2, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemMap(va, g_gran, g_gran / 2, h, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemMap(va, 3 * g_gran, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
    /* Mapping over an existing mapping. */
    CU(cuMemMap(va, size, 0, h, 0));
    EXPECT_RC(cuMemMap(va + g_gran, size, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuMemMap(va, size, 0, h, 0), CUDA_ERROR_INVALID_VALUE);
    /* cuMemUnmap cannot unmap part of a mapping. */
    EXPECT_RC(cuMemUnmap(va, g_gran), CUDA_ERROR_INVALID_VALUE);
    CU(cuMemUnmap(va, size));
    CU(cuMemRelease(h));
    CU(cuMemAddressFree(va, 4 * g_gran));
}

int main(void)
{
    CUresult rc = conf_context(&g_ctx);
    if (rc == CUDA_SUCCESS)
        rc = cuCtxGetDevice(&g_dev);
    if (rc == CUDA_SUCCESS)
        rc = conf_module(&g_mod);
    if (rc == CUDA_SUCCESS)
        rc = cuModuleGetFunction(&g_fill, g_mod, "fill_u32");
    int vmm = 0;
    if (rc == CUDA_SUCCESS)
        rc = cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, g_dev);
    CUmemAllocationProp p = device_prop();
    if (rc == CUDA_SUCCESS && vmm)
        rc = cuMemGetAllocationGranularity(&g_gran, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (rc != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: %s\n", conf_err_name(rc));
        return 1;
    }
    if (!vmm) {
        printf("note: device has no virtual memory management; every test skipped\n");
        return 0;
    }
    RUN(granularity_is_reported_for_device_memory);
    RUN(map_with_access_round_trips_copies_memsets_and_kernels);
    RUN(one_allocation_maps_at_two_addresses);
    RUN(reservation_honours_alignment);
    RUN(memory_is_charged_until_released_and_unmapped);
    RUN(create_until_out_of_memory_stays_within_total);
    RUN(bad_sizes_offsets_and_overlaps_are_invalid_value);
    cuModuleUnload(g_mod);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

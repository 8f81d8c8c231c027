/* conf_procaddr.c - cuGetProcAddress: versioned lookup, per-thread default-stream variants, the status it
 * reports for unknown and too-new symbols, and calling what it returns.
 * In CUDA 12+ headers cuGetProcAddress is the _v2 entry point, with a symbolStatus output. Addresses are
 * compared with dlsym on libcuda.so.1 itself (RTLD_NOLOAD: the program is linked to it), so an interposer
 * loaded in front of the driver does not stand in for it.
 */
#include "check.h"

#include <dlfcn.h>

typedef CUresult (*init_fn)(unsigned int);
typedef CUresult (*count_fn)(int *);

static void *libcuda_symbol(const char *name)
{
    void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
    EXPECT(lib != NULL, "libcuda.so.1 is not loaded: %s", dlerror());
    return lib ? dlsym(lib, name) : NULL;
}

/* Looks `symbol` up and checks the call succeeded; returns the pointer (NULL when not found). */
static void *lookup(const char *symbol, int version, cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
    void *pfn = (void *)1;
    *status = (CUdriverProcAddressQueryResult)-1;
    CUresult rc = cuGetProcAddress(symbol, &pfn, version, flags, status);
    EXPECT(rc == CUDA_SUCCESS, "cuGetProcAddress(\"%s\", %d, %llu) returned %s", symbol, version,
           (unsigned long long)flags, conf_err_name(rc));
    return rc == CUDA_SUCCESS ? pfn : NULL;
}

static void lookup_works_before_cuInit(void)
{
    /* The CUDA runtime finds cuInit itself this way, before the driver is initialised. */
    CUdriverProcAddressQueryResult st;
    void *p = lookup("cuInit", 2000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(st == CU_GET_PROC_ADDRESS_SUCCESS && p != NULL, "status %d, pointer %p", (int)st, p);
    EXPECT(p == libcuda_symbol("cuInit"), "cuGetProcAddress(\"cuInit\") %p, dlsym %p", p,
           libcuda_symbol("cuInit"));
    if (p == NULL)
        return;
    init_fn init;
    memcpy(&init, &p, sizeof init);
    CU(init(0));
}

static void versioned_lookup_returns_the_matching_entry_point(void)
{
    CUdriverProcAddressQueryResult st;
    void *v2 = lookup("cuMemAlloc", 3020, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(st == CU_GET_PROC_ADDRESS_SUCCESS && v2 != NULL, "cuMemAlloc@3020: status %d, pointer %p", (int)st,
           v2);
    EXPECT(v2 == libcuda_symbol("cuMemAlloc_v2"), "cuMemAlloc@3020 is %p, cuMemAlloc_v2 is %p", v2,
           libcuda_symbol("cuMemAlloc_v2"));
    void *v1 = lookup("cuMemAlloc", 2000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(st == CU_GET_PROC_ADDRESS_SUCCESS && v1 != NULL, "cuMemAlloc@2000: status %d, pointer %p", (int)st,
           v1);
    EXPECT(v1 == libcuda_symbol("cuMemAlloc"), "cuMemAlloc@2000 is %p, cuMemAlloc is %p", v1,
           libcuda_symbol("cuMemAlloc"));
    EXPECT(v1 != v2, "versions 2000 and 3020 of cuMemAlloc are the same entry point");
    void *gpa = lookup("cuGetProcAddress", 12000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(gpa != NULL && gpa == libcuda_symbol("cuGetProcAddress_v2"),
           "cuGetProcAddress@12000 is %p, cuGetProcAddress_v2 is %p", gpa,
           libcuda_symbol("cuGetProcAddress_v2"));
    /* A later version keeps the latest entry point not newer than it. */
    void *latest = lookup("cuMemAlloc", 12000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(latest == v2, "cuMemAlloc@12000 is %p, cuMemAlloc_v2 is %p", latest, v2);
}

static void per_thread_flag_selects_ptds_variant(void)
{
    CUdriverProcAddressQueryResult st;
    void *pt = lookup("cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st);
    EXPECT(st == CU_GET_PROC_ADDRESS_SUCCESS && pt != NULL, "status %d, pointer %p", (int)st, pt);
    EXPECT(pt == libcuda_symbol("cuMemcpyHtoD_v2_ptds"),
           "per-thread cuMemcpyHtoD is %p, cuMemcpyHtoD_v2_ptds %p", pt,
           libcuda_symbol("cuMemcpyHtoD_v2_ptds"));
    void *legacy = lookup("cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &st);
    EXPECT(legacy == libcuda_symbol("cuMemcpyHtoD_v2"), "legacy cuMemcpyHtoD is %p, cuMemcpyHtoD_v2 %p",
           legacy, libcuda_symbol("cuMemcpyHtoD_v2"));
    /* A symbol without a per-thread variant falls back to its legacy one. */
    void *alloc = lookup("cuMemAlloc", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st);
    EXPECT(alloc == libcuda_symbol("cuMemAlloc_v2"), "per-thread cuMemAlloc is %p, cuMemAlloc_v2 %p", alloc,
           libcuda_symbol("cuMemAlloc_v2"));
}

static void unknown_symbol_reports_symbol_not_found(void)
{
    CUdriverProcAddressQueryResult st;
    void *p = lookup("cuNoSuchFunctionInAnyDriver", 12000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(p == NULL, "unknown symbol resolved to %p", p);
    EXPECT(st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "status %d", (int)st);
}

static void symbol_newer_than_requested_version_reports_version_not_sufficient(void)
{
    /* cuMemAllocAsync first appeared in CUDA 11.2. */
    CUdriverProcAddressQueryResult st;
    void *p = lookup("cuMemAllocAsync", 11000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(p == NULL, "cuMemAllocAsync@11000 resolved to %p", p);
    EXPECT(st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "status %d", (int)st);
    p = lookup("cuMemAllocAsync", 11020, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(p != NULL && st == CU_GET_PROC_ADDRESS_SUCCESS, "cuMemAllocAsync@11020: status %d, pointer %p",
           (int)st, p);
}

static void version_above_the_driver_returns_invalid_value(void)
{
    int drv = 0;
    CU(cuDriverGetVersion(&drv));
    void *p = NULL;
    CUdriverProcAddressQueryResult st;
    EXPECT_RC(cuGetProcAddress("cuMemAlloc", &p, drv + 10, CU_GET_PROC_ADDRESS_DEFAULT, &st),
              CUDA_ERROR_INVALID_VALUE);
    /* The driver's own version is fine. */
    EXPECT_RC(cuGetProcAddress("cuMemAlloc", &p, drv, CU_GET_PROC_ADDRESS_DEFAULT, &st), CUDA_SUCCESS);
}

static void returned_pointer_is_callable(void)
{
    CU(cuInit(0));
    CUdriverProcAddressQueryResult st;
    void *p = lookup("cuDeviceGetCount", 2000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    EXPECT(p != NULL, "cuDeviceGetCount not found (status %d)", (int)st);
    if (p == NULL)
        return;
    count_fn count;
    memcpy(&count, &p, sizeof count);
    int via_pointer = -1, direct = -2;
    CU(count(&via_pointer));
    CU(cuDeviceGetCount(&direct));
    EXPECT(via_pointer == direct && direct >= 1, "count %d through the pointer, %d directly", via_pointer,
           direct);
}

int main(void)
{
    RUN(lookup_works_before_cuInit);
    RUN(versioned_lookup_returns_the_matching_entry_point);
    RUN(per_thread_flag_selects_ptds_variant);
    RUN(unknown_symbol_reports_symbol_not_found);
    RUN(symbol_newer_than_requested_version_reports_version_not_sufficient);
    RUN(version_above_the_driver_returns_invalid_value);
    RUN(returned_pointer_is_callable);
    CONF_EXIT();
}

/* vmm.c - virtual memory management: address reservations, physical allocations, mappings and access.
 *
 * Reservations come from an address space of their own (PROT_NONE: a host dereference faults). A physical
 * allocation (cuMemCreate) is host memory charged to its device at once; cuMemMap enters the range in the
 * allocation table (mem.c) as a mapping of its bytes, resolvable by copies, kernels and pointer queries
 * once cuMemSetAccess gave a device access. The memory goes back when the handle is released and no mapping
 * remains. Everything belongs to the context current when made and goes with it. g_vmm_mu guards it all and
 * is never held while waiting for the device.
 */
#include "sim/sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GRANULARITY (2ull << 20) /* minimum and recommended, as on NVIDIA's GPUs */

typedef struct vmm_handle {
    gp_ctx *ctx; /* owner; NULL when made with no context current */
    int dev;     /* ordinal */
    size_t size;
    uint8_t *host;
    CUmemAllocationProp prop;
    int refs;  /* cuMemCreate's and cuMemRetainAllocationHandle's, each dropped by a cuMemRelease */
    int nmaps; /* live mappings */
} vmm_handle;

typedef struct reservation {
    CUdeviceptr base;
    size_t size, span; /* as asked; rounded up to the granularity */
    gp_ctx *ctx;
} reservation;

typedef struct mapping {
    CUdeviceptr base;
    size_t size;
    vmm_handle *h;
    gp_alloc *a; /* its entry in the allocation table */
    unsigned char access[GP_SIM_MAX_DEVICES];
} mapping;

/* A vector kept sorted by base address (reservations, mappings). */
typedef struct sorted {
    void **v;
    size_t n, cap;
} sorted;

static pthread_mutex_t g_vmm_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_va_base, g_va_size; /* the reserved address space, mapped on first use */
static sorted g_res, g_maps;
static gp_ptrvec g_handles;

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static CUdeviceptr base_of(const sorted *s, size_t i)
{
    return s == &g_res ? ((reservation *)s->v[i])->base : ((mapping *)s->v[i])->base;
}

/* Index of the first element whose base is > p. */
static size_t upper(const sorted *s, CUdeviceptr p)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (base_of(s, mid) <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int sorted_insert(sorted *s, void *p, CUdeviceptr base)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? 2 * s->cap : 16;
        void **nv = realloc(s->v, ncap * sizeof *nv);
        if (nv == NULL)
            return -1;
        s->v = nv;
        s->cap = ncap;
    }
    size_t i = upper(s, base);
    memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof *s->v);
    s->v[i] = p;
    s->n++;
    return 0;
}

static void sorted_remove(sorted *s, const void *p)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == p) {
            memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof *s->v);
            s->n--;
            return;
        }
}

/* The reservation holding [p, p + n), or NULL. */
static reservation *reservation_at(CUdeviceptr p, size_t n)
{
    size_t i = upper(&g_res, p);
    if (i == 0)
        return NULL;
    reservation *r = g_res.v[i - 1];
    return p - r->base < r->size && n <= r->size - (p - r->base) ? r : NULL;
}

/* The mapping holding p, or NULL. */
static mapping *mapping_at(CUdeviceptr p)
{
    size_t i = upper(&g_maps, p);
    if (i == 0)
        return NULL;
    mapping *m = g_maps.v[i - 1];
    return p - m->base < m->size ? m : NULL;
}

/* The mappings that exactly tile [p, p + n): each lies inside, and no byte is left unmapped. Returns the
 * index of the first and sets *count, or returns -1. */
static ssize_t mappings_tiling(CUdeviceptr p, size_t n, size_t *count)
{
    size_t i = upper(&g_maps, p);
    if (i == 0)
        return -1;
    size_t first = i - 1, k = first;
    CUdeviceptr cursor = p;
    while (k < g_maps.n && cursor < p + n) {
        mapping *m = g_maps.v[k];
        if (m->base != cursor || m->size > p + n - cursor)
            return -1;
        cursor += m->size;
        k++;
    }
    if (cursor != p + n)
        return -1;
    *count = k - first;
    return (ssize_t)first;
}

static vmm_handle *handle_of(CUmemGenericAllocationHandle handle)
{
    void *p = (void *)(uintptr_t)handle;
    return handle != 0 && gp_handle_type(p) == GP_OBJ_VMM ? p : NULL;
}

/* Gives a physical allocation's memory back. The caller took it out of g_handles and made sure no device
 * work uses it. */
static void handle_free(vmm_handle *h)
{
    munmap(h->host, h->size);
    gp_shm_mem_uncharge(&g_sim.shm, g_sim.phys[h->dev], h->size);
    free(h);
}

/* Called with g_vmm_mu held when a handle lost a reference or a mapping: true when it is to be freed. */
static bool handle_done(vmm_handle *h)
{
    if (h->refs > 0 || h->nmaps > 0)
        return false;
    gp_ptrvec_remove(&g_handles, h);
    return true;
}

static void mapping_free(mapping *m)
{
    gp_mem_table_remove(m->a);
    free(m->a);
    m->h->nmaps--;
    free(m);
}

static bool supported_location(const CUmemLocation *loc, const char *call)
{
    if (loc->type == CU_MEM_LOCATION_TYPE_HOST || loc->type == CU_MEM_LOCATION_TYPE_HOST_NUMA ||
        loc->type == CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "%s for host memory is not supported by the simulated GPU (returning "
                    "CUDA_ERROR_NOT_SUPPORTED)",
                    call);
        return false;
    }
    return true;
}

/* ---- granularity and properties ------------------------------------------------------------------- */

GP_API CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags option)
{
    GP_INIT_OR_RETURN();
    if (granularity == NULL || prop == NULL ||
        (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return CUDA_ERROR_INVALID_VALUE;
    if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED && prop->type != CU_MEM_ALLOCATION_TYPE_MANAGED)
        return CUDA_ERROR_INVALID_VALUE;
    if (!supported_location(&prop->location, "cuMemGetAllocationGranularity"))
        return CUDA_ERROR_NOT_SUPPORTED;
    if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
        prop->location.id >= g_sim.ndev)
        return CUDA_ERROR_INVALID_VALUE;
    *granularity = GRANULARITY;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                       CUmemGenericAllocationHandle handle)
{
    GP_INIT_OR_RETURN();
    if (prop == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_vmm_mu);
    vmm_handle *h = handle_of(handle);
    if (h)
        *prop = h->prop;
    pthread_mutex_unlock(&g_vmm_mu);
    return h ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- address reservations ------------------------------------------------------------------------- */

/* Maps the reserved address space on first use: as much as the host grants, from 8 TiB down. */
static int va_init(void)
{
    if (g_va_base)
        return 0;
    for (uint64_t size = 8ull << 40; size >= (64ull << 30); size /= 2) {
        void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            /* Start at a granule boundary, and leave the first granule unused as mem.c does. */
            uint64_t base = round_up((uint64_t)(uintptr_t)p, GRANULARITY) + GRANULARITY;
            g_va_base = base;
            g_va_size = (uint64_t)(uintptr_t)p + size - base;
            return 0;
        }
    }
    gp_log(GP_LOG_ERROR, GP_LOG_SIM, "cannot reserve address space for cuMemAddressReserve: %s",
           strerror(errno));
    return -1;
}

/* True when [a, a + span) lies in the address space and overlaps no reservation. */
static bool va_free_at(uint64_t a, uint64_t span)
{
    if (a < g_va_base || span > g_va_size || a - g_va_base > g_va_size - span)
        return false;
    size_t i = upper(&g_res, a);
    if (i > 0) {
        reservation *r = g_res.v[i - 1];
        if (r->base + r->span > a)
            return false;
    }
    return i == g_res.n || ((reservation *)g_res.v[i])->base >= a + span;
}

/* First fit at the given alignment; 0 when the space is full. */
static uint64_t va_find(uint64_t span, uint64_t align)
{
    uint64_t cursor = g_va_base;
    for (size_t i = 0; i <= g_res.n; i++) {
        uint64_t limit = i < g_res.n ? ((reservation *)g_res.v[i])->base : g_va_base + g_va_size;
        uint64_t a = round_up(cursor, align);
        if (a >= cursor && a <= limit && limit - a >= span)
            return a;
        if (i < g_res.n)
            cursor = ((reservation *)g_res.v[i])->base + ((reservation *)g_res.v[i])->span;
    }
    return 0;
}

GP_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                    unsigned long long flags)
{
    GP_INIT_OR_RETURN();
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (ptr == NULL || size == 0 || flags != 0 || size % page != 0 || addr % page != 0 ||
        (alignment & (alignment - 1)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c = NULL;
    gp_ctx_current(&c); /* the owner, if a context is current */
    uint64_t align = alignment > GRANULARITY ? alignment : GRANULARITY;
    uint64_t span = round_up(size, GRANULARITY);
    if (span < size)
        return CUDA_ERROR_OUT_OF_MEMORY;
    reservation *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_vmm_mu);
    if (va_init() < 0) {
        pthread_mutex_unlock(&g_vmm_mu);
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    /* The address is a hint: taken when it is free and aligned, otherwise the first fit. */
    uint64_t at = addr && addr % align == 0 && va_free_at(addr, span) ? addr : va_find(span, align);
    if (at == 0 || sorted_insert(&g_res, r, at) < 0) {
        pthread_mutex_unlock(&g_vmm_mu);
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = at;
    r->size = size;
    r->span = span;
    r->ctx = c;
    pthread_mutex_unlock(&g_vmm_mu);
    *ptr = at;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    GP_INIT_OR_RETURN();
    if (ptr == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_vmm_mu);
    reservation *r = reservation_at(ptr, 1);
    CUresult rc = CUDA_SUCCESS;
    if (r == NULL || r->base != ptr || r->size != size) {
        rc = CUDA_ERROR_INVALID_VALUE; /* not what cuMemAddressReserve returned */
    } else {
        size_t i = upper(&g_maps, ptr + size - 1);
        if (i > 0 && ((mapping *)g_maps.v[i - 1])->base + ((mapping *)g_maps.v[i - 1])->size > ptr) {
            gp_log(GP_LOG_DEBUG, GP_LOG_SIM, "cuMemAddressFree: the range still has mappings (cuMemUnmap)");
            rc = CUDA_ERROR_INVALID_VALUE;
        } else {
            sorted_remove(&g_res, r);
            free(r);
        }
    }
    pthread_mutex_unlock(&g_vmm_mu);
    return rc;
}

/* ---- physical allocations ------------------------------------------------------------------------- */

GP_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags)
{
    GP_INIT_OR_RETURN();
    if (handle == NULL || prop == NULL || flags != 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (prop->type == CU_MEM_ALLOCATION_TYPE_MANAGED) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "cuMemCreate of managed memory is not supported by the simulated GPU "
                    "(returning CUDA_ERROR_NOT_SUPPORTED)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED)
        return CUDA_ERROR_INVALID_VALUE;
    if (!supported_location(&prop->location, "cuMemCreate"))
        return CUDA_ERROR_NOT_SUPPORTED;
    if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (prop->location.id < 0 || prop->location.id >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    if (prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_NONE) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "cuMemCreate with shareable handle types (0x%x) is not supported by the simulated GPU "
                    "(returning CUDA_ERROR_NOT_SUPPORTED)",
                    (unsigned)prop->requestedHandleTypes);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (size % GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev = prop->location.id;
    if (size > gp_dev_model(dev)->vram_bytes)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = gp_capture_unsafe();
    if (rc)
        return rc;
    vmm_handle *h = calloc(1, sizeof *h);
    if (h == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (gp_shm_mem_charge(&g_sim.shm, g_sim.phys[dev], size) < 0) {
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        gp_shm_mem_uncharge(&g_sim.shm, g_sim.phys[dev], size);
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_ctx_current(&h->ctx); /* the owner, if a context is current */
    h->dev = dev;
    h->size = size;
    h->host = p;
    h->prop = *prop;
    /* Compression is a hint; the simulated device has none, which the properties then say. */
    h->prop.allocFlags.compressionType = CU_MEM_ALLOCATION_COMP_NONE;
    h->refs = 1;
    pthread_mutex_lock(&g_vmm_mu);
    int pushed = gp_ptrvec_push(&g_handles, h);
    if (pushed == 0)
        gp_handle_add(h, GP_OBJ_VMM);
    pthread_mutex_unlock(&g_vmm_mu);
    if (pushed < 0) {
        handle_free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    GP_INIT_OR_RETURN();
    pthread_mutex_lock(&g_vmm_mu);
    vmm_handle *h = handle_of(handle);
    bool done = false;
    if (h && --h->refs == 0) {
        gp_handle_del(h); /* the handle is gone; mappings keep the memory */
        done = handle_done(h);
    }
    pthread_mutex_unlock(&g_vmm_mu);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (done)
        handle_free(h); /* no mapping left: cuMemUnmap already waited for the device */
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
    GP_INIT_OR_RETURN();
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_vmm_mu);
    mapping *m = mapping_at((CUdeviceptr)(uintptr_t)addr);
    vmm_handle *h = m ? m->h : NULL;
    if (h) {
        if (h->refs++ == 0)
            gp_handle_add(h, GP_OBJ_VMM); /* released while mapped: the handle is valid again */
        *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    }
    pthread_mutex_unlock(&g_vmm_mu);
    return h ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- mappings ------------------------------------------------------------------------------------- */

GP_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                         unsigned long long flags)
{
    GP_INIT_OR_RETURN();
    if (ptr == 0 || size == 0 || flags != 0 || ptr % GRANULARITY || size % GRANULARITY ||
        offset % GRANULARITY)
        return CUDA_ERROR_INVALID_VALUE;
    if (offset != 0) {
        /* cuda.h: "offset ... Note: currently must be zero." */
        gp_log(GP_LOG_DEBUG, GP_LOG_SIM, "cuMemMap: offset must be zero");
        return CUDA_ERROR_INVALID_VALUE;
    }
    mapping *m = calloc(1, sizeof *m);
    gp_alloc *a = calloc(1, sizeof *a);
    if (m == NULL || a == NULL) {
        free(m);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_vmm_mu);
    vmm_handle *h = handle_of(handle);
    size_t i = upper(&g_maps, ptr + size - 1);
    bool overlaps = i > 0 && ((mapping *)g_maps.v[i - 1])->base + ((mapping *)g_maps.v[i - 1])->size > ptr;
    if (h == NULL || offset > h->size || size > h->size - offset || reservation_at(ptr, size) == NULL ||
        overlaps) {
        rc = CUDA_ERROR_INVALID_VALUE;
        goto fail;
    }
    a->base = ptr;
    a->size = a->span = a->backing = size;
    a->host = h->host + offset;
    a->kind = GP_ALLOC_VMM;
    a->dev = h->dev;
    a->ctx = h->ctx;
    a->buffer_id = gp_mem_next_buffer_id();
    a->inaccessible = true; /* until cuMemSetAccess */
    a->handle_types = (unsigned long long)h->prop.requestedHandleTypes;
    m->base = ptr;
    m->size = size;
    m->h = h;
    m->a = a;
    if (sorted_insert(&g_maps, m, ptr) < 0) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto fail;
    }
    if (gp_mem_table_insert(a) != 0) {
        sorted_remove(&g_maps, m);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto fail;
    }
    h->nmaps++;
    pthread_mutex_unlock(&g_vmm_mu);
    return CUDA_SUCCESS;
fail:
    pthread_mutex_unlock(&g_vmm_mu);
    free(m);
    free(a);
    return rc;
}

/* cuMemUnmap is synchronous: device work of the owning and the calling context that may use the range
 * completes first. */
static void wait_for_users(gp_ctx *owner)
{
    gp_ctx *cur = NULL;
    if (owner && atomic_load(&owner->active))
        gp_ctx_synchronize(owner);
    if (gp_ctx_current(&cur) == CUDA_SUCCESS && cur != owner)
        gp_ctx_synchronize(cur);
}

GP_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    GP_INIT_OR_RETURN();
    if (ptr == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_vmm_mu);
    size_t count = 0;
    ssize_t first = mappings_tiling(ptr, size, &count);
    gp_ctx *owner = first >= 0 ? ((mapping *)g_maps.v[first])->h->ctx : NULL;
    pthread_mutex_unlock(&g_vmm_mu);
    if (first < 0)
        return CUDA_ERROR_INVALID_VALUE; /* not whole mappings: cuMemUnmap cannot split one */
    wait_for_users(owner);

    gp_ptrvec gone = {0};
    pthread_mutex_lock(&g_vmm_mu);
    first = mappings_tiling(ptr, size, &count); /* again: the table may have changed meanwhile */
    if (first < 0) {
        pthread_mutex_unlock(&g_vmm_mu);
        return CUDA_ERROR_INVALID_VALUE;
    }
    for (size_t k = 0; k < count; k++) {
        mapping *m = g_maps.v[first];
        vmm_handle *h = m->h;
        sorted_remove(&g_maps, m);
        mapping_free(m);
        if (handle_done(h) && gp_ptrvec_push(&gone, h) < 0)
            handle_free(h); /* cannot defer it: free it here, the device is idle */
    }
    pthread_mutex_unlock(&g_vmm_mu);
    for (size_t k = 0; k < gone.n; k++)
        handle_free(gone.v[k]);
    gp_ptrvec_free(&gone);
    return CUDA_SUCCESS;
}

/* ---- access --------------------------------------------------------------------------------------- */

GP_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    GP_INIT_OR_RETURN();
    if (ptr == 0 || size == 0 || desc == NULL || count == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t k = 0; k < count; k++) {
        const CUmemAccessDesc *d = &desc[k];
        if (d->flags != CU_MEM_ACCESS_FLAGS_PROT_NONE && d->flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
            d->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            return CUDA_ERROR_INVALID_VALUE;
        /* Device memory can be made accessible to devices only (cuda.h: no HOST_NUMA for it). */
        if (d->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
            return CUDA_ERROR_INVALID_VALUE;
        if (d->location.id < 0 || d->location.id >= g_sim.ndev)
            return CUDA_ERROR_INVALID_DEVICE;
    }
    pthread_mutex_lock(&g_vmm_mu);
    size_t n = 0;
    ssize_t first = mappings_tiling(ptr, size, &n);
    for (size_t i = 0; first >= 0 && i < n; i++) {
        mapping *m = g_maps.v[(size_t)first + i];
        bool any = false;
        for (size_t k = 0; k < count; k++)
            m->access[desc[k].location.id] = (unsigned char)desc[k].flags;
        for (int d = 0; d < g_sim.ndev; d++)
            any |= m->access[d] != CU_MEM_ACCESS_FLAGS_PROT_NONE;
        gp_mem_set_accessible(m->a, any);
    }
    pthread_mutex_unlock(&g_vmm_mu);
    return first >= 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

GP_API CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location, CUdeviceptr ptr)
{
    GP_INIT_OR_RETURN();
    if (flags == NULL || location == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (location->type == CU_MEM_LOCATION_TYPE_DEVICE && (location->id < 0 || location->id >= g_sim.ndev))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_vmm_mu);
    mapping *m = mapping_at(ptr);
    if (m)
        *flags = location->type == CU_MEM_LOCATION_TYPE_DEVICE ? m->access[location->id]
                                                               : CU_MEM_ACCESS_FLAGS_PROT_NONE;
    pthread_mutex_unlock(&g_vmm_mu);
    return m ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- context teardown ----------------------------------------------------------------------------- */

void gp_vmm_forget_ctx(gp_ctx *c)
{
    gp_ptrvec gone = {0};
    pthread_mutex_lock(&g_vmm_mu);
    /* Mappings of the context's allocations, and every mapping in its reservations. */
    for (size_t i = 0; i < g_maps.n;) {
        mapping *m = g_maps.v[i];
        reservation *r = reservation_at(m->base, m->size);
        if (m->h->ctx != c && (r == NULL || r->ctx != c)) {
            i++;
            continue;
        }
        vmm_handle *h = m->h;
        sorted_remove(&g_maps, m);
        mapping_free(m);
        if (handle_done(h) && gp_ptrvec_push(&gone, h) < 0)
            handle_free(h);
    }
    for (size_t i = 0; i < g_res.n;) {
        reservation *r = g_res.v[i];
        if (r->ctx != c) {
            i++;
            continue;
        }
        sorted_remove(&g_res, r);
        free(r);
    }
    for (size_t i = 0; i < g_handles.n;) {
        vmm_handle *h = g_handles.v[i];
        if (h->ctx != c || h->refs == 0) {
            i++;
            continue;
        }
        h->refs = 0;
        gp_handle_del(h);
        if (handle_done(h)) { /* took it out of g_handles: look at index i again */
            if (gp_ptrvec_push(&gone, h) < 0)
                handle_free(h);
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&g_vmm_mu);
    for (size_t k = 0; k < gone.n; k++)
        handle_free(gone.v[k]);
    gp_ptrvec_free(&gone);
}

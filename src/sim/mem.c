/* mem.c - device, pinned-host, registered and managed memory; the table of allocations; pointer queries.
 *
 * Device addresses come from an address range reserved per device with PROT_NONE, so they never collide
 * with host pointers and dereferencing one on the host faults, as on a real GPU. The bytes of a device
 * allocation live elsewhere in host memory; kernels and copies reach them through gp_mem_host(). Managed
 * memory is mapped readable and writable at its device address, so host and device share it. Pinned and
 * registered host memory is its own device address (unified addressing).
 *
 * Device memory is charged to this process's entry in the host-wide state before it is handed out, so the
 * capacity holds across processes: device allocations are charged in 512-byte units below 2 MiB and in
 * 2 MiB pages from there on, the granularities of NVIDIA's allocator. Mappings of physical allocations
 * (cuMemMap, vmm.c) are entries of the same table, charged with their physical allocation.
 */
#include "sim/sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SMALL_ALIGN    512ull
#define PAGE_2M        (2ull << 20)
#define MMAP_THRESHOLD (64ull << 10)

/* ---- device address ranges ------------------------------------------------------------------------ */

typedef struct extent {
    uint64_t base, size;
} extent;

typedef struct va_region {
    uint64_t base, size;
    extent *free; /* sorted by base, coalesced */
    size_t nfree, capfree;
} va_region;

static va_region g_va[GP_SIM_MAX_DEVICES];
static pthread_mutex_t g_va_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

int gp_mem_init(gp_err *err)
{
    for (uint32_t d = 0; d < g_sim.shm.shm->ndev; d++) {
        if (g_va[d].base)
            continue;
        uint64_t size = round_up(2 * g_sim.shm.shm->dev[d].model.vram_bytes + (16ull << 30), 1ull << 30);
        void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return gp_err_set(err, GP_ERR_NOMEM,
                              "cannot reserve %llu GiB of address space for simulated "
                              "device %u: %s",
                              (unsigned long long)(size >> 30), d, strerror(errno));
        g_va[d].base = (uint64_t)(uintptr_t)p;
        g_va[d].size = size;
        g_va[d].free = malloc(sizeof(extent) * 16);
        if (g_va[d].free == NULL)
            return gp_err_set(err, GP_ERR_NOMEM, "out of host memory");
        g_va[d].capfree = 16;
        g_va[d].nfree = 1;
        /* Leave the first 2 MiB unused so that no device address is the region's base by accident. */
        g_va[d].free[0] = (extent){g_va[d].base + PAGE_2M, size - PAGE_2M};
    }
    return 0;
}

static uint64_t va_alloc(int pdev, uint64_t size, uint64_t align)
{
    va_region *r = &g_va[pdev];
    pthread_mutex_lock(&g_va_mu);
    for (size_t i = 0; i < r->nfree; i++) {
        extent *e = &r->free[i];
        uint64_t a = round_up(e->base, align);
        if (a + size > e->base + e->size)
            continue;
        uint64_t left = a - e->base, right = e->base + e->size - (a + size);
        if (left && right) {
            if (r->nfree == r->capfree) {
                extent *nf = realloc(r->free, 2 * r->capfree * sizeof *nf);
                if (nf == NULL) {
                    pthread_mutex_unlock(&g_va_mu);
                    return 0;
                }
                r->free = nf;
                r->capfree *= 2;
                e = &r->free[i];
            }
            memmove(&r->free[i + 2], &r->free[i + 1], (r->nfree - i - 1) * sizeof *e);
            r->free[i + 1] = (extent){a + size, right};
            e->size = left;
            r->nfree++;
        } else if (left) {
            e->size = left;
        } else if (right) {
            e->base = a + size;
            e->size = right;
        } else {
            memmove(&r->free[i], &r->free[i + 1], (r->nfree - i - 1) * sizeof *e);
            r->nfree--;
        }
        pthread_mutex_unlock(&g_va_mu);
        return a;
    }
    pthread_mutex_unlock(&g_va_mu);
    return 0;
}

static void va_free(int pdev, uint64_t base, uint64_t size)
{
    va_region *r = &g_va[pdev];
    pthread_mutex_lock(&g_va_mu);
    size_t i = 0;
    while (i < r->nfree && r->free[i].base < base)
        i++;
    bool merge_prev = i > 0 && r->free[i - 1].base + r->free[i - 1].size == base;
    bool merge_next = i < r->nfree && base + size == r->free[i].base;
    if (merge_prev && merge_next) {
        r->free[i - 1].size += size + r->free[i].size;
        memmove(&r->free[i], &r->free[i + 1], (r->nfree - i - 1) * sizeof(extent));
        r->nfree--;
    } else if (merge_prev) {
        r->free[i - 1].size += size;
    } else if (merge_next) {
        r->free[i].base = base;
        r->free[i].size += size;
    } else {
        if (r->nfree == r->capfree) {
            extent *nf = realloc(r->free, 2 * r->capfree * sizeof *nf);
            if (nf == NULL) { /* the range is lost to reuse, which is safe */
                pthread_mutex_unlock(&g_va_mu);
                return;
            }
            r->free = nf;
            r->capfree *= 2;
        }
        memmove(&r->free[i + 1], &r->free[i], (r->nfree - i) * sizeof(extent));
        r->free[i] = (extent){base, size};
        r->nfree++;
    }
    pthread_mutex_unlock(&g_va_mu);
}

/* ---- the allocation table ------------------------------------------------------------------------- */

static pthread_rwlock_t g_tab_lock = PTHREAD_RWLOCK_INITIALIZER;
static gp_alloc **g_tab; /* sorted by base; allocations never overlap */
static size_t g_ntab, g_captab;
static atomic_ullong g_buffer_ids = 1;

/* Index of the last allocation whose base is <= p, or -1. Caller holds the lock. */
static ssize_t tab_floor(CUdeviceptr p)
{
    ssize_t lo = 0, hi = (ssize_t)g_ntab - 1, ans = -1;
    while (lo <= hi) {
        ssize_t mid = (lo + hi) / 2;
        if (g_tab[mid]->base <= p) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

static int tab_insert(gp_alloc *a)
{
    pthread_rwlock_wrlock(&g_tab_lock);
    ssize_t f = tab_floor(a->base);
    bool overlap = (f >= 0 && g_tab[f]->base + g_tab[f]->span > a->base) ||
                   ((size_t)(f + 1) < g_ntab && a->base + a->span > g_tab[f + 1]->base);
    if (overlap) {
        pthread_rwlock_unlock(&g_tab_lock);
        return 1;
    }
    if (g_ntab == g_captab) {
        size_t ncap = g_captab ? g_captab * 2 : 64;
        gp_alloc **nt = realloc(g_tab, ncap * sizeof *nt);
        if (nt == NULL) {
            pthread_rwlock_unlock(&g_tab_lock);
            return -1;
        }
        g_tab = nt;
        g_captab = ncap;
    }
    size_t i = (size_t)(f + 1);
    memmove(&g_tab[i + 1], &g_tab[i], (g_ntab - i) * sizeof *g_tab);
    g_tab[i] = a;
    g_ntab++;
    pthread_rwlock_unlock(&g_tab_lock);
    return 0;
}

static void tab_remove(gp_alloc *a)
{
    pthread_rwlock_wrlock(&g_tab_lock);
    ssize_t f = tab_floor(a->base);
    if (f >= 0 && g_tab[f] == a) {
        memmove(&g_tab[f], &g_tab[f + 1], (g_ntab - (size_t)f - 1) * sizeof *g_tab);
        g_ntab--;
    }
    pthread_rwlock_unlock(&g_tab_lock);
}

int gp_mem_table_insert(gp_alloc *a)
{
    return tab_insert(a);
}

void gp_mem_table_remove(gp_alloc *a)
{
    tab_remove(a);
}

void gp_mem_set_accessible(gp_alloc *a, bool accessible)
{
    pthread_rwlock_wrlock(&g_tab_lock);
    a->inaccessible = !accessible;
    pthread_rwlock_unlock(&g_tab_lock);
}

unsigned long long gp_mem_next_buffer_id(void)
{
    return atomic_fetch_add(&g_buffer_ids, 1);
}

gp_alloc *gp_mem_find(CUdeviceptr p, size_t n)
{
    pthread_rwlock_rdlock(&g_tab_lock);
    ssize_t f = tab_floor(p);
    gp_alloc *a = NULL;
    if (f >= 0) {
        gp_alloc *c = g_tab[f];
        uint64_t off = p - c->base;
        if (off < c->size && n <= c->size - off && !c->in_pool_free && !c->inaccessible)
            a = c;
    }
    pthread_rwlock_unlock(&g_tab_lock);
    return a;
}

uint8_t *gp_mem_host(CUdeviceptr p, size_t n, gp_alloc **out)
{
    gp_alloc *a = gp_mem_find(p, n ? n : 1);
    if (out)
        *out = a;
    return a ? a->host + (p - a->base) : NULL;
}

/* ---- allocating and freeing ----------------------------------------------------------------------- */

static uint8_t *backing_alloc(size_t size)
{
    if (size >= MMAP_THRESHOLD) {
        void *p =
            mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    return aligned_alloc(64, round_up(size, 64));
}

static void backing_free(uint8_t *p, size_t size)
{
    if (size >= MMAP_THRESHOLD)
        munmap(p, size);
    else
        free(p);
}

static uint64_t charge_for(size_t size)
{
    return size >= PAGE_2M ? round_up(size, PAGE_2M) : round_up(size, SMALL_ALIGN);
}

CUresult gp_mem_alloc_device(gp_ctx *c, int dev, size_t bytes, size_t align, gp_alloc **out)
{
    if (bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int pdev = g_sim.phys[dev];
    if (bytes > gp_dev_model(dev)->vram_bytes)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t charge = charge_for(bytes);
    if (align == 0)
        align = bytes >= PAGE_2M ? PAGE_2M : SMALL_ALIGN;
    gp_alloc *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (gp_shm_mem_charge(&g_sim.shm, pdev, charge) < 0) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->span = round_up(bytes, SMALL_ALIGN);
    a->base = va_alloc(pdev, a->span, align);
    a->host = a->base ? backing_alloc(bytes) : NULL;
    if (a->host == NULL) {
        if (a->base)
            va_free(pdev, a->base, a->span);
        gp_shm_mem_uncharge(&g_sim.shm, pdev, charge);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->size = bytes;
    a->backing = bytes;
    a->kind = GP_ALLOC_DEVICE;
    a->dev = dev;
    a->ctx = c;
    a->charged = charge;
    a->buffer_id = atomic_fetch_add(&g_buffer_ids, 1);
    if (tab_insert(a) != 0) {
        backing_free(a->host, a->backing);
        va_free(pdev, a->base, a->span);
        gp_shm_mem_uncharge(&g_sim.shm, pdev, charge);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = a;
    return CUDA_SUCCESS;
}

/* Releases an allocation of any kind. The caller made sure no device work still uses it. */
void gp_mem_free_alloc(gp_alloc *a)
{
    if (a->pool)
        gp_pool_detach(a);
    tab_remove(a);
    switch (a->kind) {
    case GP_ALLOC_DEVICE:
        backing_free(a->host, a->backing);
        va_free(g_sim.phys[a->dev], a->base, a->span);
        gp_shm_mem_uncharge(&g_sim.shm, g_sim.phys[a->dev], a->charged);
        break;
    case GP_ALLOC_MANAGED:
        mmap((void *)(uintptr_t)a->base, a->span, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
        va_free(g_sim.phys[a->dev], a->base, a->span);
        break;
    case GP_ALLOC_HOST: munmap(a->host, a->span); break;
    case GP_ALLOC_REGISTERED: break;
    case GP_ALLOC_VMM: break; /* the physical allocation is vmm.c's */
    }
    free(a);
}

void gp_mem_forget_ctx(gp_ctx *c)
{
    for (;;) {
        gp_alloc *victim = NULL;
        pthread_rwlock_rdlock(&g_tab_lock);
        for (size_t i = 0; i < g_ntab; i++)
            if (g_tab[i]->ctx == c && g_tab[i]->kind != GP_ALLOC_VMM) {
                victim = g_tab[i];
                break;
            }
        pthread_rwlock_unlock(&g_tab_lock);
        if (victim == NULL)
            return;
        gp_mem_free_alloc(victim);
    }
}

/* Finds the allocation that starts exactly at p. */
static gp_alloc *find_base(CUdeviceptr p)
{
    gp_alloc *a = gp_mem_find(p, 1);
    return (a && a->base == p) ? a : NULL;
}

/* ---- the memory API ------------------------------------------------------------------------------- */

GP_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t cap = gp_dev_model(c->dev)->vram_bytes;
    gp_shm_reap_soon(&g_sim.shm);
    uint64_t used = gp_shm_mem_used(g_sim.shm.shm, c->pdev);
    *total = cap;
    *free_bytes = used >= cap ? 0 : cap - used;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_alloc *a;
    rc = gp_mem_alloc_device(c, c->dev, bytesize, 0, &a);
    if (rc)
        return rc;
    *dptr = a->base;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                   unsigned int ElementSizeBytes)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (dptr == NULL || pPitch == NULL || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
        return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = round_up(WidthInBytes, SMALL_ALIGN);
    if (Height > SIZE_MAX / pitch)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_alloc *a;
    rc = gp_mem_alloc_device(c, c->dev, pitch * Height, 0, &a);
    if (rc)
        return rc;
    *dptr = a->base;
    *pPitch = pitch;
    return CUDA_SUCCESS;
}

static CUresult mem_free(CUdeviceptr dptr)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (dptr == 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = find_base(dptr);
    if (a == NULL || (a->kind != GP_ALLOC_DEVICE && a->kind != GP_ALLOC_MANAGED))
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    /* cuMemFree waits for the device: work still queued may use the memory. */
    gp_ctx_synchronize(a->ctx);
    gp_mem_free_alloc(a);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    return mem_free(dptr);
}

GP_API CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    gp_alloc *a = gp_mem_find(dptr, 1);
    if (a == NULL)
        return CUDA_ERROR_NOT_FOUND;
    if (pbase)
        *pbase = a->base;
    if (psize)
        *psize = a->size;
    return CUDA_SUCCESS;
}

/* ---- host memory ---------------------------------------------------------------------------------- */

static CUresult host_alloc(void **pp, size_t bytesize, unsigned int flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (pp == NULL || bytesize == 0 ||
        (flags &
         ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED)))
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    size_t span = round_up(bytesize, (uint64_t)sysconf(_SC_PAGESIZE));
    void *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_alloc *a = calloc(1, sizeof *a);
    if (a == NULL) {
        munmap(p, span);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->base = (CUdeviceptr)(uintptr_t)p;
    a->host = p;
    a->size = bytesize;
    a->span = span;
    a->kind = GP_ALLOC_HOST;
    a->dev = -1;
    a->ctx = c;
    a->flags = flags;
    a->buffer_id = atomic_fetch_add(&g_buffer_ids, 1);
    if (tab_insert(a) != 0) {
        munmap(p, span);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pp = p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    return host_alloc(pp, bytesize, 0);
}

GP_API CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    return host_alloc(pp, bytesize, Flags);
}

GP_API CUresult cuMemFreeHost(void *p)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    gp_alloc *a = find_base((CUdeviceptr)(uintptr_t)p);
    if (p == NULL || a == NULL || a->kind != GP_ALLOC_HOST)
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_ctx_synchronize(a->ctx);
    gp_mem_free_alloc(a);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (pdptr == NULL || Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = gp_mem_find((CUdeviceptr)(uintptr_t)p, 1);
    if (a == NULL || (a->kind != GP_ALLOC_HOST && a->kind != GP_ALLOC_REGISTERED))
        return CUDA_ERROR_INVALID_VALUE;
    *pdptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostGetFlags(unsigned int *pFlags, void *p)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (pFlags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = gp_mem_find((CUdeviceptr)(uintptr_t)p, 1);
    if (a == NULL || a->kind != GP_ALLOC_HOST)
        return CUDA_ERROR_INVALID_VALUE;
    *pFlags = a->flags;
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    unsigned valid = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                     CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY;
    if (p == NULL || bytesize == 0 || (Flags & ~valid))
        return CUDA_ERROR_INVALID_VALUE;
    if (Flags & CU_MEMHOSTREGISTER_IOMEMORY)
        GP_NOT_SUPPORTED("cuMemHostRegister with CU_MEMHOSTREGISTER_IOMEMORY");
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_alloc *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->base = (CUdeviceptr)(uintptr_t)p;
    a->host = p;
    a->size = a->span = bytesize;
    a->kind = GP_ALLOC_REGISTERED;
    a->dev = -1;
    a->ctx = c;
    a->flags = Flags;
    a->buffer_id = atomic_fetch_add(&g_buffer_ids, 1);
    int r = tab_insert(a);
    if (r != 0) {
        free(a);
        return r > 0 ? CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED : CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemHostUnregister(void *p)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = find_base((CUdeviceptr)(uintptr_t)p);
    if (a == NULL || a->kind != GP_ALLOC_REGISTERED)
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    if ((rc = gp_capture_unsafe()))
        return rc;
    gp_ctx_synchronize(a->ctx);
    gp_mem_free_alloc(a);
    return CUDA_SUCCESS;
}

GP_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (dptr == NULL || bytesize == 0 || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
        return CUDA_ERROR_INVALID_VALUE;
    if ((rc = gp_capture_unsafe()))
        return rc;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    size_t span = round_up(bytesize, page);
    gp_alloc *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->base = va_alloc(c->pdev, span, bytesize >= PAGE_2M ? PAGE_2M : page);
    if (a->base == 0 || mmap((void *)(uintptr_t)a->base, span, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        if (a->base)
            va_free(c->pdev, a->base, span);
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->host = (uint8_t *)(uintptr_t)a->base;
    a->size = bytesize;
    a->span = span;
    a->kind = GP_ALLOC_MANAGED;
    a->dev = c->dev;
    a->ctx = c;
    a->flags = flags;
    a->mapped_fixed = true;
    a->buffer_id = atomic_fetch_add(&g_buffer_ids, 1);
    if (tab_insert(a) != 0) {
        gp_mem_free_alloc(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *dptr = a->base;
    return CUDA_SUCCESS;
}

/* ---- pointer attributes --------------------------------------------------------------------------- */

static CUresult pointer_attribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr, gp_alloc *a)
{
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = (CUcontext)a->ctx; break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data = (a->kind == GP_ALLOC_HOST || a->kind == GP_ALLOC_REGISTERED)
                                    ? CU_MEMORYTYPE_HOST
                                    : CU_MEMORYTYPE_DEVICE;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (a->kind == GP_ALLOC_DEVICE || a->kind == GP_ALLOC_VMM)
            return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)ptr;
        break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: *(unsigned int *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = a->buffer_id; break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(unsigned int *)data = a->kind == GP_ALLOC_MANAGED; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = a->dev >= 0 ? a->dev : a->ctx->dev; break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
        *(unsigned int *)data = a->kind == GP_ALLOC_DEVICE && a->pool == NULL;
        break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(void **)data = (void *)(uintptr_t)a->base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = a->size; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(unsigned int *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: *(unsigned long long *)data = a->handle_types; break;
    case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE: *(unsigned int *)data = 0; break;
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
        *(unsigned int *)data = (a->flags & CU_MEMHOSTREGISTER_READ_ONLY) && a->kind == GP_ALLOC_REGISTERED
                                    ? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READ
                                    : CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE;
        break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: *(CUmemoryPool *)data = (CUmemoryPool)a->pool; break;
    case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: *(size_t *)data = a->size; break;
    case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR: *(void **)data = (void *)(uintptr_t)a->base; break;
    case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: *(unsigned long long *)data = a->buffer_id; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    GP_INIT_OR_RETURN();
    if (data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = gp_mem_find(ptr, 1);
    if (a == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return pointer_attribute(data, attribute, ptr, a);
}

GP_API CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes,
                                       void **data, CUdeviceptr ptr)
{
    GP_INIT_OR_RETURN();
    if (numAttributes == 0 || attributes == NULL || data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_alloc *a = gp_mem_find(ptr, 1);
    for (unsigned i = 0; i < numAttributes; i++) {
        if (data[i] == NULL)
            continue;
        if (a == NULL) {
            /* Not a CUDA pointer: default values, and no error (unlike cuPointerGetAttribute). */
            switch (attributes[i]) {
            case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data[i] = -2; break;
            case CU_POINTER_ATTRIBUTE_CONTEXT:
            case CU_POINTER_ATTRIBUTE_HOST_POINTER:
            case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
            case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
            case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: *(void **)data[i] = NULL; break;
            case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
            case CU_POINTER_ATTRIBUTE_BUFFER_ID:
            case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
            case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: *(unsigned long long *)data[i] = 0; break;
            case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
            case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: *(size_t *)data[i] = 0; break;
            default: *(unsigned int *)data[i] = 0; break;
            }
            continue;
        }
        CUresult rc = pointer_attribute(data[i], attributes[i], ptr, a);
        if (rc == CUDA_ERROR_INVALID_VALUE && attributes[i] == CU_POINTER_ATTRIBUTE_HOST_POINTER)
            *(void **)data[i] = NULL;
        else if (rc)
            return rc;
    }
    return CUDA_SUCCESS;
}

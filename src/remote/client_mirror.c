/* client_mirror.c - mirrored memory: managed memory and mapped pinned host memory over GPU-over-IP.
 *
 * A GPU on another host cannot reach this process's memory, so memory both sides use lives twice: in the
 * worker (cuMemAllocManaged, or pinned host memory of the worker's host mapped into its GPU) and here, in a
 * "shadow" the application reads and writes. For managed and cuMemHostAlloc(DEVICEMAP) memory the shadow is
 * mapped at the worker's device address, so one number is both the host and the device pointer; registered
 * memory (cuMemHostRegister with DEVICEMAP) keeps its own address and gets a device pointer of its own.
 *
 * The two copies agree at synchronization points, under the contract of a device without concurrent managed
 * access (docs/protocol.md): the host touches mirrored memory only while no kernel runs. A "twin" per mirror
 * holds what both sides last agreed on. Before work that may use mirrored memory goes out (launches; copies
 * and memsets on a mirrored device range) the pages where shadow and twin differ are pushed as HTOD; after a
 * synchronizing call, when work that may have written mirrored memory was sent to a stream it covers, every
 * mirror is read back with DTOH and merged: bytes the host left alone take the device's value. Pushes are
 * skipped between a launch and the next synchronizing call (the host may not write then).
 *
 * All of it runs with the connection locked (gp_rpc_begin .. gp_rpc_end), which also guards the table.
 */
#include "remote/client.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIRROR_PAGE  4096u
#define PULL_SCRATCH (16u << 20) /* bytes read back per DTOH round */
#define WROTE_MAX    16          /* streams remembered as written; more: every sync pulls until a ctx sync */

typedef struct mirror {
    uint64_t host, dev, size; /* the shadow here, the worker's address, bytes */
    gp_rctx *ctx;
    int kind;      /* GP_MIRROR_* */
    uint8_t *twin; /* what both ends last agreed on */
    bool dead;     /* its context was destroyed: the worker's copy is gone, no more pushes or pulls */
} mirror;

static mirror *g_mirrors;
static size_t g_nmirrors, g_capmirrors;
static atomic_size_t g_live; /* live mirrors: the fast path of every hook reads only this */

static struct {
    bool host_open; /* the host may have written mirrored memory since the last push */
    uint64_t wrote[WROTE_MAX];
    int nwrote;
    bool overflow;
    uint8_t *scratch;
} g_sync = {.host_open = true};

static mirror *find_host(uint64_t p)
{
    for (size_t i = 0; i < g_nmirrors; i++)
        if (p - g_mirrors[i].host < g_mirrors[i].size)
            return &g_mirrors[i];
    return NULL;
}

static bool overlaps_dev(uint64_t p, uint64_t n)
{
    for (size_t i = 0; i < g_nmirrors; i++) {
        const mirror *m = &g_mirrors[i];
        if (!m->dead && p < m->dev + m->size && m->dev < p + n)
            return true;
    }
    return false;
}

static size_t span_of(uint64_t size)
{
    return (size_t)((size + MIRROR_PAGE - 1) / MIRROR_PAGE * MIRROR_PAGE);
}

static void mirror_remove(mirror *m)
{
    if (!m->dead)
        atomic_fetch_sub(&g_live, 1);
    free(m->twin);
    size_t i = (size_t)(m - g_mirrors);
    memmove(m, m + 1, (g_nmirrors - i - 1) * sizeof *m);
    g_nmirrors--;
}

/* ---- allocation ----------------------------------------------------------------------------------- */

static CUresult worker_alloc(unsigned op, uint64_t ctx, uint64_t size, unsigned flags, uint64_t *dev)
{
    gp_wbuf *w = gp_rpc_begin_again();
    gp_w_u64(w, ctx);
    gp_w_u64(w, size);
    gp_w_u32(w, flags);
    gp_rbuf r;
    CUresult rc = gp_rpc_call(op, &r);
    *dev = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && (!r.ok || *dev == 0))
        rc = gp_rpc_malformed(op);
    return rc;
}

static void worker_free(int kind, uint64_t ctx, uint64_t dev)
{
    gp_wbuf *w = gp_rpc_begin_again();
    gp_w_u64(w, ctx);
    gp_w_u64(w, dev);
    gp_rbuf r;
    gp_rpc_call(kind == GP_MIRROR_MANAGED ? GP_OP_MEM_FREE : GP_OP_MEM_HOST_FREE, &r);
}

CUresult gp_mirror_alloc(gp_rctx *c, int kind, uint64_t size, unsigned flags, void *host, uint64_t *dev)
{
    uint8_t *twin = calloc(1, size);
    if (twin == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_rpc_begin();
    if (g_nmirrors == g_capmirrors) {
        size_t ncap = g_capmirrors ? 2 * g_capmirrors : 16;
        mirror *nm = realloc(g_mirrors, ncap * sizeof *nm);
        if (nm == NULL) {
            gp_rpc_end();
            free(twin);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        g_mirrors = nm;
        g_capmirrors = ncap;
    }
    uint64_t d = 0;
    CUresult rc = worker_alloc(kind == GP_MIRROR_MANAGED ? GP_OP_MEM_ALLOC_MANAGED : GP_OP_MEM_HOST_ALLOC,
                               c->id, size, flags, &d);
    if (rc) {
        gp_rpc_end();
        free(twin);
        return rc;
    }
    uint64_t h = (uint64_t)(uintptr_t)host;
    if (kind != GP_MIRROR_REGISTERED) {
        /* The shadow at the worker's address: the application uses one pointer on both sides. */
        size_t span = span_of(size);
        void *p = mmap((void *)(uintptr_t)d, span, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p != MAP_FAILED && p != (void *)(uintptr_t)d) { /* a kernel without MAP_FIXED_NOREPLACE */
            munmap(p, span);
            p = MAP_FAILED;
        }
        if (p == MAP_FAILED) {
            gp_log(GP_LOG_WARN, GP_LOG_CLIENT,
                   "%s of %llu bytes: the worker's address 0x%llx is taken in this process, so no host copy "
                   "can live at the same address (returning CUDA_ERROR_OUT_OF_MEMORY)",
                   kind == GP_MIRROR_MANAGED ? "cuMemAllocManaged" : "cuMemHostAlloc(DEVICEMAP)",
                   (unsigned long long)size, (unsigned long long)d);
            worker_free(kind, c->id, d);
            gp_rpc_end();
            free(twin);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        h = d;
    }
    g_mirrors[g_nmirrors++] = (mirror){h, d, size, c, kind, twin, false};
    atomic_fetch_add(&g_live, 1);
    g_sync.host_open = true;
    gp_rpc_end();
    *dev = d;
    return CUDA_SUCCESS;
}

CUresult gp_mirror_free(uint64_t host)
{
    gp_rpc_begin();
    mirror *m = find_host(host);
    if (m == NULL || m->host != host) {
        gp_rpc_end();
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (!m->dead && atomic_load(&m->ctx->active))
        worker_free(m->kind, m->ctx->id, m->dev);
    if (m->kind != GP_MIRROR_REGISTERED)
        munmap((void *)(uintptr_t)m->host, span_of(m->size));
    mirror_remove(m);
    gp_rpc_end();
    return CUDA_SUCCESS;
}

void gp_mirror_drop_ctx(const void *ctx)
{
    if (atomic_load(&g_live) == 0)
        return;
    gp_rpc_begin();
    for (size_t i = 0; i < g_nmirrors; i++) {
        mirror *m = &g_mirrors[i];
        if (m->ctx != ctx || m->dead)
            continue;
        if (m->kind == GP_MIRROR_MANAGED) { /* managed memory dies with its context, on both sides */
            munmap((void *)(uintptr_t)m->host, span_of(m->size));
            mirror_remove(m);
            i--;
            continue;
        }
        m->dead = true; /* pinned memory stays host memory until the application frees it */
        atomic_fetch_sub(&g_live, 1);
    }
    gp_rpc_end();
}

bool gp_mirror_dev(uint64_t host, uint64_t *dev)
{
    gp_rpc_begin();
    const mirror *m = find_host(host);
    bool ok = m && !m->dead;
    if (ok)
        *dev = m->dev + (host - m->host);
    gp_rpc_end();
    return ok;
}

/* ---- coherence ------------------------------------------------------------------------------------ */

static bool page_differs(const uint8_t *a, const uint8_t *b, uint64_t off, uint64_t size)
{
    uint64_t n = size - off < MIRROR_PAGE ? size - off : MIRROR_PAGE;
    return memcmp(a + off, b + off, n) != 0;
}

/* The stream to use for mirror m with a call made on (ctx, stream): the call's own when m lives in that
 * context, else m's NULL stream. */
static uint64_t stream_for(const mirror *m, uint64_t ctx, uint64_t stream)
{
    return m->ctx->id == ctx ? stream : 0;
}

static CUresult push_one(mirror *m, uint64_t ctx, uint64_t stream)
{
    uint8_t *sh = (uint8_t *)(uintptr_t)m->host;
    for (uint64_t off = 0; off < m->size;) {
        if (!page_differs(sh, m->twin, off, m->size)) {
            off += MIRROR_PAGE;
            continue;
        }
        uint64_t end = off + MIRROR_PAGE;
        while (end < m->size && page_differs(sh, m->twin, end, m->size))
            end += MIRROR_PAGE;
        if (end > m->size)
            end = m->size;
        memcpy(m->twin + off, sh + off, end - off);
        CUresult rc =
            gp_rpc_htod(m->ctx->id, stream_for(m, ctx, stream), m->dev + off, m->twin + off, end - off, true);
        if (rc)
            return rc;
        off = end;
    }
    return CUDA_SUCCESS;
}

static CUresult push_all(uint64_t ctx, uint64_t stream)
{
    for (size_t i = 0; i < g_nmirrors; i++) {
        mirror *m = &g_mirrors[i];
        if (m->dead || !atomic_load(&m->ctx->active))
            continue;
        CUresult rc = push_one(m, ctx, stream);
        if (rc)
            return rc;
    }
    return CUDA_SUCCESS;
}

static void wrote(uint64_t stream)
{
    for (int i = 0; i < g_sync.nwrote; i++)
        if (g_sync.wrote[i] == stream)
            return;
    if (g_sync.nwrote == WROTE_MAX)
        g_sync.overflow = true;
    else
        g_sync.wrote[g_sync.nwrote++] = stream;
}

CUresult gp_mirror_launch(uint64_t ctx, uint64_t stream)
{
    if (atomic_load_explicit(&g_live, memory_order_relaxed) == 0)
        return CUDA_SUCCESS;
    CUresult rc = g_sync.host_open ? push_all(ctx, stream) : CUDA_SUCCESS;
    g_sync.host_open = false; /* a kernel may run: the host keeps off mirrored memory until a sync */
    wrote(stream);
    return rc;
}

CUresult gp_mirror_before(uint64_t ctx, uint64_t stream, uint64_t src, uint64_t nsrc, uint64_t dst,
                          uint64_t ndst)
{
    if (atomic_load_explicit(&g_live, memory_order_relaxed) == 0)
        return CUDA_SUCCESS;
    bool in_src = nsrc && overlaps_dev(src, nsrc), in_dst = ndst && overlaps_dev(dst, ndst);
    if (in_dst)
        wrote(stream);
    if ((in_src || in_dst) && g_sync.host_open)
        return push_all(ctx, stream);
    return CUDA_SUCCESS;
}

/* Takes the device's bytes where the host left the shadow as agreed (shadow == twin). */
static void merge(mirror *m, uint64_t off, const uint8_t *dev, uint64_t n)
{
    uint8_t *sh = (uint8_t *)(uintptr_t)m->host + off, *tw = m->twin + off;
    for (uint64_t p = 0; p < n; p += MIRROR_PAGE) {
        uint64_t k = n - p < MIRROR_PAGE ? n - p : MIRROR_PAGE;
        if (memcmp(dev + p, tw + p, k) == 0)
            continue; /* the device did not change it */
        if (memcmp(sh + p, tw + p, k) == 0) {
            memcpy(sh + p, dev + p, k);
        } else { /* both changed it (outside the contract): each byte keeps the side that changed it */
            for (uint64_t b = p; b < p + k; b++)
                if (sh[b] == tw[b])
                    sh[b] = dev[b];
        }
        memcpy(tw + p, dev + p, k);
    }
}

static CUresult pull_all(uint64_t ctx, uint64_t stream)
{
    if (g_sync.scratch == NULL && (g_sync.scratch = malloc(PULL_SCRATCH)) == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    for (size_t i = 0; i < g_nmirrors; i++) {
        mirror *m = &g_mirrors[i];
        if (m->dead || !atomic_load(&m->ctx->active))
            continue;
        for (uint64_t off = 0; off < m->size; off += PULL_SCRATCH) {
            uint64_t n = m->size - off < PULL_SCRATCH ? m->size - off : PULL_SCRATCH;
            CUresult rc =
                gp_rpc_dtoh(m->ctx->id, stream_for(m, ctx, stream), g_sync.scratch, m->dev + off, (size_t)n);
            if (rc)
                return rc;
            merge(m, off, g_sync.scratch, n);
        }
    }
    return CUDA_SUCCESS;
}

CUresult gp_mirror_synced_locked(uint64_t ctx, uint64_t stream, int scope)
{
    if (atomic_load_explicit(&g_live, memory_order_relaxed) == 0)
        return CUDA_SUCCESS;
    bool need = g_sync.overflow || (g_sync.nwrote > 0 && (scope != GP_SYNC_STREAM || stream == 0));
    for (int i = 0; !need && i < g_sync.nwrote; i++)
        need = g_sync.wrote[i] == stream;
    g_sync.host_open = true;
    if (!need)
        return CUDA_SUCCESS;
    CUresult rc = pull_all(ctx, stream);
    if (rc)
        return rc;
    if (scope == GP_SYNC_CTX) {
        g_sync.nwrote = 0;
        g_sync.overflow = false;
    } else if (scope == GP_SYNC_STREAM) {
        for (int i = 0; i < g_sync.nwrote; i++)
            if (g_sync.wrote[i] == stream)
                g_sync.wrote[i--] = g_sync.wrote[--g_sync.nwrote];
    }
    return CUDA_SUCCESS;
}

CUresult gp_mirror_synced(CUresult rc, uint64_t ctx, uint64_t stream, int scope)
{
    if (rc != CUDA_SUCCESS || atomic_load_explicit(&g_live, memory_order_relaxed) == 0)
        return rc;
    gp_rpc_begin();
    rc = gp_mirror_synced_locked(ctx, stream, scope);
    gp_rpc_end();
    return rc;
}

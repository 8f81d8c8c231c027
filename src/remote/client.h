/* client.h - the GPU-over-IP client library (libcuda.so.1 for a host without a GPU; docs/protocol.md).
 *
 * Internals shared by the client's files: client.c (connection, cuInit, batching, error names, entry points),
 * client_ctx.c (devices, primary and ordinary contexts, the per-thread context stack), client_mem.c (device
 * and host memory, copies, memsets), client_exec.c (streams, events, modules, functions, launches),
 * client_mirror.c (managed and mapped pinned memory, kept coherent with the worker's copy), client_pool.c
 * (memory pools, stream-ordered allocation, virtual memory management), client_array.c (CUDA arrays and
 * mipmapped arrays) and client_graph.c (graphs and stream capture).
 *
 * Handles the application sees (CUcontext, CUstream, CUevent, CUmodule, CUfunction, CUmemoryPool) point at
 * the small records below; each holds the 64-bit id the wire uses. Every live record is in a registry (a hash
 * set of pointers), so an unknown or destroyed handle is told apart from a live one without dereferencing it.
 * Contexts are never freed (a destroyed one answers CUDA_ERROR_CONTEXT_IS_DESTROYED, as the driver does); the
 * other records are freed when destroyed.
 *
 * One connection per process. conn.mu serialises every request with its reply (replies come in request
 * order), so a thread blocked in a long synchronising call delays other threads' calls until it returns.
 * Host functions run on a callback thread of client.c, which needs only the write lock (conn.wmu) to answer.
 */
#ifndef GPUPOOL_REMOTE_CLIENT_H
#define GPUPOOL_REMOTE_CLIENT_H

#define GP_CUDA_NO_API_MACROS
#include "gpupool/cuda.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "remote/wire.h"

#define GP_API        __attribute__((visibility("default")))
#define GP_LOG_CLIENT "remote"

/* ---- handle records ------------------------------------------------------------------------------- */

enum gp_rkind {
    GP_R_CTX = 1,
    GP_R_STREAM,
    GP_R_EVENT,
    GP_R_MODULE,
    GP_R_FUNC,
    GP_R_POOL,
    GP_R_ARRAY,
    GP_R_MIPMAP,
    GP_R_GRAPH,
    GP_R_NODE,
    GP_R_EXEC
};

typedef struct gp_rgraph gp_rgraph;

typedef struct gp_rctx {
    uint64_t id; /* the wire id; a primary context gets a fresh one each time it becomes active */
    int dev;
    unsigned flags;
    bool primary;
    atomic_bool active; /* false: destroyed (or a primary context nobody retains) */
    int refs;           /* primary contexts: retain count (under the registry lock) */
} gp_rctx;

typedef struct gp_rstream {
    uint64_t id;
    gp_rctx *ctx;
    unsigned flags;
    int priority;
    _Atomic(gp_rgraph *) capture; /* the graph of the capture it takes part in, or NULL (client_graph.c) */
    void *capture_deps;           /* cuStreamGetCaptureInfo's dependency array (freed with the stream) */
} gp_rstream;

typedef struct gp_revent {
    uint64_t id;
    gp_rctx *ctx;
    unsigned flags;
    gp_rgraph
        *capture; /* its latest record was captured into this capture's graph (under the registry lock) */
} gp_revent;

typedef struct gp_rfunc gp_rfunc;
typedef struct gp_rmodule {
    uint64_t id;
    gp_rctx *ctx;
    gp_rfunc *funcs; /* every function looked up in it (freed with it) */
} gp_rmodule;

struct gp_rfunc {
    uint64_t id;
    gp_rmodule *mod;
    gp_rfunc *next;
    uint32_t nparams;
    uint32_t argsize; /* bytes of the packed parameter buffer */
    uint32_t *offset, *size;
    char name[];
};

typedef struct gp_rpool {
    uint64_t id;
    int dev; /* the device its memory lives on */
    bool is_default;
} gp_rpool;
/* A CUDA array (or a level of a mipmapped array, which goes with it). row: bytes per row; rows per slice;
 * slices (1 for 1D and 2D arrays). Its packed offset (wire.h, HTOA) of (x, y, z) is (z*rows + y)*row + x. */
typedef struct gp_rarray {
    uint64_t id;
    gp_rctx *ctx;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    size_t elem, row, rows, slices;
    bool level;
} gp_rarray;

/* The array a handle names (live, in a live context). */
CUresult gp_array_arg(CUarray h, gp_rarray **out);

/* A box of host memory a staged copy reads (fetch) or writes: width bytes of rows rows of depth slices. */
typedef struct gp_hostbox {
    uint8_t *p;
    size_t pitch, slice, width, rows, depth;
    bool fetch;
} gp_hostbox;

/* Moves n bytes at packed offset off of box b between the host memory and packed (to_host: into the host). */
void gp_hostbox_move(const gp_hostbox *b, uint8_t *packed, size_t off, size_t n, bool to_host);

/* A side of a copy descriptor (wire.h): kind 0 host (the worker's staging buffer), 1 device, 2 array. */
typedef struct gp_copy_side {
    uint32_t kind;
    uint64_t h, x, y, z, pitch, height;
} gp_copy_side;
void gp_w_copy(gp_wbuf *w, const gp_copy_side *dst, const gp_copy_side *src, size_t width, size_t rows,
               size_t depth);

/* A 3D copy as the wire describes it: a host side (at most one) comes back in *box. CUDA_ERROR_NOT_SUPPORTED
 * when both sides are host memory. */
CUresult gp_copy3d_sides(const CUDA_MEMCPY3D *p, gp_copy_side *dst, gp_copy_side *src, gp_hostbox *box,
                         bool *has_host);

/* ---- graphs and capture (client_graph.c) ---------------------------------------------------------- */

/* What a graph runs on this host: host functions (fn or cb) and staged copies (box), each under the callback
 * id the worker's node sends. */
typedef struct gp_gaction {
    uint64_t id;
    CUhostFn fn;
    CUstreamCallback cb;
    CUstream stream;
    void *data;
    bool staged;
    gp_hostbox box;
} gp_gaction;

/* The graph of the capture stream h takes part in, or NULL. */
gp_rgraph *gp_stream_capture(CUstream h);
/* A host function or callback on a capturing stream: a host node of the capture's graph. */
CUresult gp_capture_host(gp_rgraph *g, uint64_t ctx, uint64_t stream, CUstream h, CUhostFn fn,
                         CUstreamCallback cb, void *data);
/* A copy with one host side (box) on a capturing stream: a staged node of the capture's graph. */
CUresult gp_capture_copy(gp_rgraph *g, uint64_t ctx, uint64_t stream, const gp_copy_side *dst,
                         const gp_copy_side *src, size_t width, size_t rows, size_t depth,
                         const gp_hostbox *box);
/* A destroyed stream leaves its capture. */
void gp_capture_stream_gone(gp_rstream *s);
/* A kernel's arguments packed as LAUNCH sends them (*args malloc'd, f->argsize bytes). */
CUresult gp_kernel_args(CUfunction hf, void **kernelParams, void **extra, gp_rfunc **f, uint8_t **args);
/* Event records and waits carry a capture from stream to stream (fork and join). */
void gp_capture_event_recorded(CUevent e, CUstream h);
void gp_capture_event_waited(CUstream h, CUevent e);
/* Expects one run of each action (a graph launch): client.c runs it when its CALLBACK comes. */
CUresult gp_client_expect(const gp_gaction *a, size_t n);

/* Registry of live records: 0, or -1 when out of memory. */
int gp_reg_add(void *obj, int kind);
void gp_reg_del(void *obj);
/* The record's kind, or 0 when h is not a live record. */
int gp_reg_kind(const void *h);
void gp_reg_lock(void);
void gp_reg_unlock(void);

uint64_t gp_client_next_id(void);

/* ---- state and the current context ---------------------------------------------------------------- */

/* CUDA_SUCCESS once cuInit succeeded (and the connection was not lost since): CUDA_ERROR_NOT_INITIALIZED
 * before, CUDA_ERROR_DEVICE_UNAVAILABLE after the worker went away. */
CUresult gp_client_ready(void);
#define GP_READY_OR_RETURN()              \
    do {                                  \
        CUresult rr_ = gp_client_ready(); \
        if (rr_ != CUDA_SUCCESS)          \
            return rr_;                   \
    } while (0)

/* The current context (usable): CUDA_ERROR_INVALID_CONTEXT without one, CUDA_ERROR_CONTEXT_IS_DESTROYED when
 * it was destroyed. Checks readiness first. */
CUresult gp_ctx_cur(gp_rctx **out);
/* The id to send as the u64 ctx field: the current context's, or 0. */
uint64_t gp_ctx_cur_id(void);

/* Resolves a stream argument: NULL, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD are the NULL stream (id 0,
 * needing a current context); others must be live. *ctx_id: the context to send with the call. */
CUresult gp_stream_arg(CUstream h, uint64_t *stream_id, uint64_t *ctx_id);

/* Devices, cached at cuInit (gp_devices_load fetches them). */
CUresult gp_devices_load(void);
int gp_dev_count(void);
int gp_dev_attr(int dev, int attrib); /* 0 when unknown */
/* Device ordinals, the application's (after CUDA_VISIBLE_DEVICES) and the worker's: -1 when dev names no
 * visible device. */
int gp_dev_phys(int dev);
int gp_dev_from_phys(int phys);

/* ---- the connection ------------------------------------------------------------------------------- */

/* A call: gp_rpc_begin locks the connection and returns the empty request payload to fill; gp_rpc_call sends
 * it (after everything queued) and waits for the reply, whose payload *reply then reads; gp_rpc_async queues
 * it with GP_WIRE_F_ASYNC (no reply). Either way gp_rpc_end unlocks (after the reply was read). */
gp_wbuf *gp_rpc_begin(void);
/* A second request within the same locked call (after the first one's reply was read). */
gp_wbuf *gp_rpc_begin_again(void);
CUresult gp_rpc_call(unsigned op, gp_rbuf *reply);
CUresult gp_rpc_async(unsigned op);
void gp_rpc_end(void);

/* Bulk transfers (called between gp_rpc_begin and gp_rpc_end; the request buffer is not used). */
CUresult gp_rpc_htod(uint64_t ctx, uint64_t stream, uint64_t dst, const void *src, size_t n, bool async);
CUresult gp_rpc_dtoh(uint64_t ctx, uint64_t stream, void *dst, uint64_t src, size_t n);
/* A box of depth slices of rows rows of width bytes (pitches and slice strides in bytes), one HTOD per row.
 */
CUresult gp_rpc_htod_rows(uint64_t ctx, uint64_t stream, uint64_t dst, size_t dpitch, size_t dslice,
                          const void *src, size_t spitch, size_t sslice, size_t width, size_t rows,
                          size_t depth, bool async);
/* The same to and from an array (HTOA, ATOH), dst and src being packed offsets into it. */
CUresult gp_rpc_htoa(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, const void *src, size_t n,
                     bool async);
CUresult gp_rpc_htoa_rows(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, size_t dpitch,
                          size_t dslice, const void *src, size_t spitch, size_t sslice, size_t width,
                          size_t rows, size_t depth, bool async);
CUresult gp_rpc_atoh(uint64_t ctx, uint64_t stream, void *dst, uint64_t array, uint64_t src, size_t n);

/* A host function (fn) or stream callback (cb, called with stream h) to run on this host when the worker's
 * stream reaches it (ids as gp_stream_arg gives them; the arguments checked by the caller). */
CUresult gp_client_host_func(uint64_t ctx, uint64_t stream, CUstream h, CUhostFn fn, CUstreamCallback cb,
                             void *data);

/* A reply that did not decode: the session cannot go on. */
CUresult gp_rpc_malformed(unsigned op);

/* ---- device allocations (for cuMemcpy's direction and cuMemGetAddressRange checks) ----------------- */
/* owner: what the memory dies with (its context, or the module of a global); ctx: its context. */
void gp_dmem_add(uint64_t base, uint64_t size, const void *owner, gp_rctx *ctx);
bool gp_dmem_del(uint64_t base);
void gp_dmem_del_owner(const void *owner);
bool gp_dmem_find(uint64_t p, uint64_t *base, uint64_t *size);
/* Stream-ordered memory (pool: the gp_rpool it came from; it dies with ctx) and cuMemMap mappings (they go
 * with cuMemUnmap only) live on dev, which need not be their context's device. */
void gp_dmem_add_pooled(uint64_t base, uint64_t size, gp_rctx *ctx, int dev, const void *pool);
void gp_dmem_add_mapped(uint64_t base, uint64_t size, gp_rctx *ctx, int dev);
/* Removes the allocation starting at base unless it is a mapping (cuMemFreeAsync): false when none is. */
bool gp_dmem_del_unmapped(uint64_t base);
/* Removes every mapping starting in [base, base + size) (cuMemUnmap). */
void gp_dmem_del_mapped(uint64_t base, uint64_t size);
/* A destroyed pool: its allocations stay valid, no longer naming it. */
void gp_dmem_forget_pool(const void *pool);

/* ---- mirrored memory (client_mirror.c): managed and mapped pinned memory, kept here and in the worker ---
 */

enum { GP_MIRROR_MANAGED = 1, GP_MIRROR_PINNED, GP_MIRROR_REGISTERED };
enum { GP_SYNC_STREAM, GP_SYNC_CTX, GP_SYNC_SOME }; /* what a synchronizing call waited for */

/* A worker allocation (managed, or pinned memory mapped into the device) of size bytes with flags, and its
 * host copy: for MANAGED and PINNED a new mapping at the worker's address *dev (CUDA_ERROR_OUT_OF_MEMORY,
 * logged, when that address is taken here); for REGISTERED the application's memory at host. Takes the
 * connection lock. */
CUresult gp_mirror_alloc(gp_rctx *c, int kind, uint64_t size, unsigned flags, void *host, uint64_t *dev);
/* Frees the mirror whose host copy starts at host (both ends); INVALID_VALUE when there is none. */
CUresult gp_mirror_free(uint64_t host);
/* The context's mirrors stop being kept coherent (the worker freed them with it). */
void gp_mirror_drop_ctx(const void *ctx);
/* The device pointer for a host pointer inside a live mirror. */
bool gp_mirror_dev(uint64_t host, uint64_t *dev);

/* Hooks, called with the connection locked, before the call's own frames go out. A launch on (ctx, stream)
 * pushes the host's changes and marks the stream as writing mirrored memory; a copy or memset does so only
 * when its device source [src, +nsrc) or destination [dst, +ndst) overlaps a mirror. */
CUresult gp_mirror_launch(uint64_t ctx, uint64_t stream);
CUresult gp_mirror_before(uint64_t ctx, uint64_t stream, uint64_t src, uint64_t nsrc, uint64_t dst,
                          uint64_t ndst);
/* After a synchronizing call that returned rc, on (ctx, stream) with scope GP_SYNC_*: reads mirrored memory
 * back when work that may have written it was sent to what the call waited for. gp_mirror_synced takes the
 * lock (and does nothing unless rc is CUDA_SUCCESS); the _locked form runs inside a call. */
CUresult gp_mirror_synced(CUresult rc, uint64_t ctx, uint64_t stream, int scope);
CUresult gp_mirror_synced_locked(uint64_t ctx, uint64_t stream, int scope);

/* ---- module images -------------------------------------------------------------------------------- */

/* The length of a module image (PTX text, ELF cubin or fatbin): 0 when it is none of these. */
size_t gp_image_size(const void *image);

#endif

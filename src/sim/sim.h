/* sim.h - internals of the simulated CUDA driver (libcuda.so.1 built from src/sim).
 *
 * Objects (contexts, streams, events, modules, functions, pools) are plain structs whose addresses are the
 * CUDA handles; a registry (handles.c) tells live handles from stale or foreign ones. Device work runs on
 * one executor thread per stream (stream.c) in stream order; its effect on data happens on that thread,
 * and its modelled time is reserved on the device's shared timeline (shared.c), so kernels of different
 * processes take turns as on a GPU without MPS. Device memory is host memory reached through a table of
 * allocations (mem.c); device addresses come from a reserved, inaccessible address range, so they never
 * collide with host pointers and a host dereference of one faults as it would on a real GPU.
 *
 * Arrays (array.c) are device allocations with a shape; virtual memory (vmm.c) maps physical handles into
 * reserved address ranges through the same table. Graphs (graph.c) are instantiated into executable graphs
 * whose launch is one operation on a stream, running the nodes on the executor like ordinary work; stream
 * capture (capture.c) turns work submitted to a capturing stream into graph nodes instead.
 *
 * Locking order: g_sim.mu > ctx->mu > the graph lock (graph.c: graphs, executable graphs, captures) >
 * stream->mu; an executable graph's launch lock comes before ctx->mu; the VMM lock (vmm.c) is taken alone.
 * The allocation table's rwlock and the handle registry's rwlock are leaves. No lock is held while a
 * kernel or host function runs.
 */
#ifndef GP_SIM_SIM_H
#define GP_SIM_SIM_H

#define GP_CUDA_NO_API_MACROS 1
#include "gpupool/cuda.h"
#include "gpupool/sim_kernel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "sim/shared.h"

#define GP_API                __attribute__((visibility("default")))
#define GP_SIM_DRIVER_VERSION 13000 /* the CUDA version whose driver API the simulation follows */
#define GP_LOG_SIM            "sim"

/* ---- process-wide state --------------------------------------------------------------------------- */

enum gp_sim_state { GP_SIM_UNINIT = 0, GP_SIM_READY = 1, GP_SIM_FAILED = 2 };

struct gp_ctx;
struct gp_stream;
struct gp_mempool;

typedef struct gp_sim_proc {
    atomic_int state;     /* gp_sim_state */
    CUresult init_result; /* why cuInit failed, when it did */
    pthread_mutex_t mu;   /* init, primary contexts, pools */
    gp_shm_handle shm;
    gp_sim_spec spec;
    int ndev;                     /* devices visible to CUDA (after CUDA_VISIBLE_DEVICES) */
    int phys[GP_SIM_MAX_DEVICES]; /* ordinal -> index in the state file */
    struct gp_ctx *primary[GP_SIM_MAX_DEVICES];
    struct gp_mempool *default_pool[GP_SIM_MAX_DEVICES];
    struct gp_mempool *current_pool[GP_SIM_MAX_DEVICES];
    int driver_version;
    uint64_t launch_ns;    /* modelled time of an empty kernel */
    uint64_t copy_ns;      /* modelled fixed cost of a copy */
    uint64_t lookahead_ns; /* how far ahead of the clock a stream may reserve device time */
    atomic_int nctx_live;  /* contexts alive in this process */
} gp_sim_proc;

extern gp_sim_proc g_sim;

/* Every entry point starts with this: CUDA_ERROR_NOT_INITIALIZED before cuInit. */
static inline CUresult gp_check_init(void)
{
    int s = atomic_load_explicit(&g_sim.state, memory_order_acquire);
    if (s == GP_SIM_READY)
        return CUDA_SUCCESS;
    return s == GP_SIM_FAILED ? g_sim.init_result : CUDA_ERROR_NOT_INITIALIZED;
}

#define GP_INIT_OR_RETURN()                  \
    do {                                     \
        CUresult init_rc_ = gp_check_init(); \
        if (init_rc_ != CUDA_SUCCESS)        \
            return init_rc_;                 \
    } while (0)

static inline const gp_shm_dev *gp_dev(int ordinal)
{
    return &g_sim.shm.shm->dev[g_sim.phys[ordinal]];
}

static inline const gp_model *gp_dev_model(int ordinal)
{
    return &gp_dev(ordinal)->model;
}

/* Logs once per call site that an entry point is not implemented, and returns CUDA_ERROR_NOT_SUPPORTED. */
#define GP_NOT_SUPPORTED(what)                                  \
    do {                                                        \
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,                    \
                    "%s is not supported by the simulated GPU " \
                    "(returning CUDA_ERROR_NOT_SUPPORTED)",     \
                    what);                                      \
        return CUDA_ERROR_NOT_SUPPORTED;                        \
    } while (0)

/* ---- handle registry (handles.c) ------------------------------------------------------------------ */

enum gp_obj_type {
    GP_OBJ_CTX = 1,
    GP_OBJ_CTX_DEAD, /* a destroyed context: its handle answers CUDA_ERROR_CONTEXT_IS_DESTROYED */
    GP_OBJ_STREAM,
    GP_OBJ_EVENT,
    GP_OBJ_MODULE,
    GP_OBJ_FUNC,
    GP_OBJ_POOL,
    GP_OBJ_ARRAY,
    GP_OBJ_MIPMAP,
    GP_OBJ_VMM, /* a physical allocation of cuMemCreate */
    GP_OBJ_GRAPH,
    GP_OBJ_GRAPH_NODE,
    GP_OBJ_GRAPH_EXEC,
};

void gp_handle_add(const void *p, int type);
void gp_handle_set_type(const void *p, int type);
void gp_handle_del(const void *p);
int gp_handle_type(const void *p); /* 0 if not a live handle */

/* ---- small pointer vectors (util.c) ---- */

typedef struct gp_ptrvec {
    void **v;
    size_t n, cap;
} gp_ptrvec;

int gp_ptrvec_push(gp_ptrvec *v, void *p); /* 0, or -1 when out of memory */
void gp_ptrvec_remove(gp_ptrvec *v, const void *p);
void gp_ptrvec_free(gp_ptrvec *v);

/* ---- contexts (ctx.c) ----------------------------------------------------------------------------- */

enum { GP_NLIMITS = 16 };

typedef struct gp_ctx {
    int dev;  /* ordinal */
    int pdev; /* index in the state file */
    unsigned flags;
    bool primary;
    atomic_int active;  /* has resources (a primary context between first retain and last release) */
    atomic_int refs;    /* primary: retain count */
    _Atomic int sticky; /* a sticky error (CUresult) from an asynchronous fault; the context is unusable */
    unsigned long long id;
    atomic_uint gen;    /* activations so far: per-thread streams of an earlier activation are stale */
    pthread_mutex_t mu; /* streams, modules, events */
    struct gp_stream *_Atomic legacy;
    gp_ptrvec streams; /* every stream of the context, the legacy and per-thread ones included */
    gp_ptrvec modules;
    gp_ptrvec events;
    size_t limits[GP_NLIMITS];
    CUfunc_cache cache_config;
    CUsharedconfig shared_config;
    uint64_t overhead; /* device memory charged for the context itself */
} gp_ctx;

/* The calling thread's current context, validated. */
CUresult gp_ctx_current(gp_ctx **out);
/* Validates a context handle (NULL: the current one). */
CUresult gp_ctx_resolve(CUcontext h, gp_ctx **out);
/* A context's sticky error, or CUDA_SUCCESS. */
static inline CUresult gp_ctx_sticky(gp_ctx *c)
{
    return (CUresult)atomic_load_explicit(&c->sticky, memory_order_relaxed);
}
void gp_ctx_set_sticky(gp_ctx *c, CUresult rc);
/* Waits for all work of the context. */
CUresult gp_ctx_synchronize(gp_ctx *c);

/* ---- streams and device work (stream.c) ----------------------------------------------------------- */

enum gp_stream_kind { GP_STREAM_USER = 0, GP_STREAM_LEGACY, GP_STREAM_PER_THREAD };

enum gp_op_kind {
    GP_OP_NOP = 0,
    GP_OP_KERNEL,
    GP_OP_COPY,   /* strided copy, up to 3D */
    GP_OP_MEMSET, /* strided memset, 2D */
    GP_OP_EVENT,
    GP_OP_HOSTFN,
    GP_OP_CALLBACK,
    GP_OP_FREE,  /* stream-ordered free into a pool */
    GP_OP_GRAPH, /* a launch of an executable graph: runs its nodes in a topological order */
};

typedef struct gp_dep {
    struct gp_stream *stream; /* holds a reference */
    uint64_t seq;
} gp_dep;

#define GP_OP_INLINE_DEPS 2
#define GP_OP_INLINE_ARGS 128

struct gp_func;
struct gp_event;
struct gp_alloc;
struct gp_graph_exec;
struct gp_capture;

typedef struct gp_op {
    uint8_t kind;
    uint8_t engine;
    uint16_t ndeps; /* deps in `deps`, then `more` */
    uint32_t nmore;
    uint64_t enq_ns;
    uint64_t not_before_ns; /* a lower bound on the start from deps that had completed at enqueue */
    gp_dep deps[GP_OP_INLINE_DEPS];
    gp_dep *more;
    union {
        struct {
            struct gp_func *f;
            unsigned grid[3], block[3], shmem;
            uint32_t argsize;
            uint8_t *args; /* argsize bytes: inline, or malloc'ed when larger */
            uint8_t inl[GP_OP_INLINE_ARGS];
        } k;
        struct {
            uint8_t *dst;
            const uint8_t *src;
            size_t width, height, depth; /* bytes per row, rows, slices */
            size_t dpitch, spitch;       /* row pitches */
            size_t dslice, sslice;       /* slice pitches */
            uint64_t bytes;
        } c;
        struct {
            uint8_t *dst;
            uint32_t value;
            unsigned elem; /* 1, 2 or 4 */
            size_t width;  /* elements per row */
            size_t height;
            size_t pitch;
        } m;
        struct {
            struct gp_event *ev;
            uint64_t gen;
        } e;
        struct {
            void (*fn)(void *);
            void *data;
        } h;
        struct {
            void (*fn)(CUstream, CUresult, void *);
            CUstream stream;
            void *data;
        } cb;
        struct {
            struct gp_alloc *a;
            CUdeviceptr ptr;
        } fr;
        struct {
            struct gp_graph_exec *x; /* holds a reference */
        } g;
    } u;
} gp_op;

typedef struct gp_stream {
    gp_ctx *ctx;
    int kind;
    unsigned flags;
    int priority;
    unsigned long long id;
    atomic_int refs; /* the owner's, plus one per dependency on it held by another stream or event */
    atomic_int destroyed;
    /* The ring is single-consumer: the executor reads ops and publishes `completed` without taking mu.
     * Producers hold mu while they enqueue; mu and the condition variables also serve the sleeping and
     * waking of the executor (work_cv), of producers waiting for room (space_cv) and of threads waiting
     * for completion (done_cv), each announced by a field the other side checks after publishing. */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv, space_cv;
    gp_op *ring;
    uint32_t cap;
    _Atomic uint64_t *end_seq, *end_ns; /* ring of (seq, end) for recent ops */
    atomic_bool consumer_waiting;       /* the executor sleeps on work_cv */
    atomic_int producers_waiting;       /* producers sleeping on space_cv */
    _Atomic uint64_t wake_seq;          /* the earliest seq a thread sleeping on done_cv waits for */
    /* What producers write and what the executor writes live on cache lines of their own, so that the two
     * sides do not steal a line from each other at every op. */
    _Alignas(64) _Atomic uint64_t submitted; /* ops enqueued; the n-th has seq n (from 1) */
    uint64_t room_seen;                      /* producers' (under mu) last look at `completed` */
    _Alignas(64) _Atomic uint64_t completed; /* ops done */
    _Atomic uint64_t last_end;               /* modelled end of the last completed op */
    _Alignas(64) bool thread_started;        /* the rest is cold */
    bool stopping;
    /* Stream capture (capture.c), under the graph lock; `capture` may be read without it. */
    struct gp_capture *_Atomic capture; /* the capture sequence the stream takes part in, or NULL */
    gp_ptrvec cap_deps;                 /* nodes the next captured node depends on */
    void *cap_edges;                    /* zeroed edge data handed out by cuStreamGetCaptureInfo_v3 */
    size_t cap_edges_n;
} gp_stream;

/* Resolves a stream handle as the API call sees it (NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD, or a
 * created stream) for the given current context. `per_thread` is true for the _ptsz/_ptds entry points. */
CUresult gp_stream_resolve(CUstream h, bool per_thread, gp_ctx *cur, gp_stream **out);
CUresult gp_stream_create(gp_ctx *c, unsigned flags, int priority, gp_stream **out);
void gp_stream_destroy(gp_stream *s);
void gp_stream_unref(gp_stream *s);

/* Enqueues *op (copied) on s, adding the implicit dependencies of s's kind. Returns the op's seq. */
uint64_t gp_stream_enqueue(gp_stream *s, const gp_op *op);
/* Waits until op seq of s has completed and its modelled end has passed. */
void gp_stream_wait(gp_stream *s, uint64_t seq);
/* Waits for everything enqueued so far. */
void gp_stream_drain(gp_stream *s);
bool gp_stream_idle(gp_stream *s);
/* The modelled end of op seq (0 when it is long gone). Call only after it completed. */
uint64_t gp_stream_end_of(gp_stream *s, uint64_t seq);
/* Adds a dependency on (dep, seq) to op, unless it is already satisfied. */
void gp_op_add_dep(gp_op *op, gp_stream *dep, uint64_t seq);
/* Releases what an op holds that was never enqueued. */
void gp_op_discard(gp_op *op);
/* Executes one operation on stream s's executor, starting no earlier than `start`; returns its modelled
 * end. Used for ring operations and for the nodes of a graph launch; frees nothing the op points to. */
uint64_t gp_op_run(gp_stream *s, gp_op *op, uint64_t start);
/* Keeps the executor within the lookahead of the clock after an operation that ends at `end`. */
void gp_stream_pace(gp_stream *s, uint64_t end);

/* ---- events (event.c) ----------------------------------------------------------------------------- */

typedef struct gp_event {
    gp_ctx *ctx;
    unsigned flags;
    atomic_int refs;
    pthread_mutex_t mu;
    gp_stream *rec_stream; /* stream of the last record (holds a reference), or NULL */
    uint64_t rec_seq;
    _Atomic uint64_t rec_gen;  /* records issued */
    _Atomic uint64_t done_gen; /* records completed */
    _Atomic uint64_t ts_ns;    /* modelled time of the completed record */
    /* Set while the latest record was captured (capture.c), under the graph lock. */
    struct gp_capture *_Atomic capture;
    gp_ptrvec cap_nodes; /* the capturing stream's dependency set at the record */
} gp_event;

void gp_event_complete(gp_event *e, uint64_t gen, uint64_t ts);
void gp_event_unref(gp_event *e);

/* ---- memory (mem.c) ------------------------------------------------------------------------------- */

enum gp_alloc_kind {
    GP_ALLOC_DEVICE = 1, /* cuMemAlloc, pitch, pools */
    GP_ALLOC_HOST,       /* cuMemHostAlloc / cuMemAllocHost: pinned host memory, device pointer == host */
    GP_ALLOC_REGISTERED, /* cuMemHostRegister'ed range */
    GP_ALLOC_MANAGED,    /* cuMemAllocManaged: reachable from host and device at the same address */
    GP_ALLOC_VMM,        /* a cuMemMap mapping of a physical allocation (vmm.c owns it) */
};

typedef struct gp_alloc {
    CUdeviceptr base;
    size_t size;    /* what the caller asked for (pitch * height for pitched memory) */
    size_t span;    /* address range reserved */
    size_t backing; /* bytes of host memory behind a device allocation */
    uint8_t *host;  /* where the bytes live */
    int kind;
    int dev; /* ordinal, or -1 for host memory */
    gp_ctx *ctx;
    unsigned flags;
    uint64_t charged; /* device bytes charged */
    unsigned long long buffer_id;
    struct gp_mempool *pool;         /* for pool allocations */
    bool in_pool_free;               /* a freed pool block kept reserved by its pool */
    bool mapped_fixed;               /* host bytes are mapped at base itself (managed) */
    bool inaccessible;               /* a VMM mapping no device has access to yet (cuMemSetAccess) */
    unsigned long long handle_types; /* VMM: the shareable handle types of the physical allocation */
} gp_alloc;

/* Finds the allocation holding [p, p + n); NULL if none. The pointer stays valid until the allocation is
 * freed, which the API allows only after the device work using it completed. */
gp_alloc *gp_mem_find(CUdeviceptr p, size_t n);
/* Host address for device-accessible address p, with n bytes valid; NULL if none. */
uint8_t *gp_mem_host(CUdeviceptr p, size_t n, gp_alloc **out);
/* Device memory on device `dev` (an ordinal), owned by context c (freed with it). */
CUresult gp_mem_alloc_device(gp_ctx *c, int dev, size_t bytes, size_t align, gp_alloc **out);
void gp_mem_free_alloc(gp_alloc *a);
/* Frees every allocation of a context (context destruction); VMM mappings are vmm.c's to free. */
void gp_mem_forget_ctx(gp_ctx *c);
int gp_mem_init(gp_err *err);
/* For allocations made elsewhere (vmm.c): enter one in the table (0; 1 if it overlaps one; -1 out of
 * memory), take it out, flip its visibility, and number a new buffer. */
int gp_mem_table_insert(gp_alloc *a);
void gp_mem_table_remove(gp_alloc *a);
void gp_mem_set_accessible(gp_alloc *a, bool accessible);
unsigned long long gp_mem_next_buffer_id(void);

/* Arrays (array.c): device memory with a shape, stored linearly (row pitch = width * element size). */
typedef struct gp_array {
    gp_ctx *ctx;
    gp_alloc *a;   /* the device allocation holding the elements */
    size_t offset; /* of the first element in a (the levels of a mipmapped array share one) */
    CUDA_ARRAY3D_DESCRIPTOR desc;
    bool created_2d;          /* by cuArrayCreate: its descriptor answers cuArrayGetDescriptor as given */
    struct gp_mipmap *parent; /* a mipmap level: owned by its mipmapped array */
    unsigned elem;            /* bytes per element */
    size_t pitch, rows, slices;
} gp_array;

/* The live array behind a handle, or NULL. */
gp_array *gp_array_of(CUarray h);
void gp_array_forget_ctx(gp_ctx *c);
void gp_vmm_forget_ctx(gp_ctx *c);

/* Copies and memsets (copy.c), also for graph nodes: builds the operation a 3D copy descriptor or a
 * memset node describes, resolving its addresses now. */
CUresult gp_copy3d_op(const CUDA_MEMCPY3D *p, gp_op *op);
CUresult gp_memset_op(const CUDA_MEMSET_NODE_PARAMS *p, gp_op *op);

/* Stream-ordered pools (pool.c). */
typedef struct gp_mempool {
    int dev;
    bool is_default;
    bool destroyed; /* by cuMemPoolDestroy: blocks freed into it are released at once */
    pthread_mutex_t mu;
    uint64_t release_threshold;
    uint64_t reserved, used, reserved_high, used_high;
    gp_ptrvec free; /* blocks freed in stream order, still reserved */
    int reuse_follow_event, reuse_opportunistic, reuse_internal;
} gp_mempool;

void gp_pool_free_block(gp_alloc *a);
/* Takes an allocation out of its pool's books (it is being freed for good). */
void gp_pool_detach(gp_alloc *a);
/* Releases free blocks above the pool's release threshold (at synchronization points). */
void gp_pools_trim_after_sync(int dev);
int gp_pool_init_defaults(gp_err *err);

/* ---- modules and launches (module.c, launch.c) ---------------------------------------------------- */

typedef struct gp_module gp_module;

typedef struct gp_func {
    gp_module *mod;
    const gp_sim_kernel *k;
    uint32_t argsize;
    uint32_t *offsets; /* packed offset of each parameter */
    int max_dynamic_shared;
    int carveout;
    CUfunc_cache cache;
} gp_func;

typedef struct gp_global {
    const char *name;
    size_t size;
    gp_alloc *a;
} gp_global;

struct gp_module {
    gp_ctx *ctx;
    void *dl;
    const gp_sim_module *desc;
    gp_func *funcs;
    unsigned nfuncs;
    gp_global *globals;
    unsigned nglobals;
};

void gp_module_forget_ctx(gp_ctx *c);
/* Runs a kernel op on the executor thread; returns CUDA_SUCCESS or the fault. */
CUresult gp_kernel_run(gp_stream *s, gp_op *op, uint64_t *dur_ns, uint64_t *membusy_ns);
/* Validates a launch as cuLaunchKernel does and fills a kernel op with a copy of the arguments (owned by
 * the op: malloc'ed when larger than GP_OP_INLINE_ARGS). s may be NULL (a graph node) or the stream. */
CUresult gp_kernel_op(gp_func *f, const unsigned grid[3], const unsigned block[3], unsigned shmem,
                      bool cooperative, gp_stream *s, void **kernelParams, void **extra, gp_op *op);

/* ---- graphs and stream capture (graph.c, capture.c) ----------------------------------------------- */

/* Runs a graph launch on the executor; returns the modelled end of its last node. */
uint64_t gp_graph_exec_run(gp_stream *s, struct gp_graph_exec *x, uint64_t start);
void gp_graph_exec_unref(struct gp_graph_exec *x);
/* Forgets graphs and executable graphs of a context; marks nodes using a module's kernels unusable. */
void gp_graph_forget_ctx(gp_ctx *c);
void gp_graph_forget_module(gp_module *m);

/* Number of capture sequences in progress in the process: every capture check is free while it is 0. */
extern atomic_int g_gp_captures;

static inline bool gp_stream_capturing(gp_stream *s)
{
    return atomic_load_explicit(&s->capture, memory_order_acquire) != NULL;
}

/* The checks every entry point makes while some stream captures (no-ops otherwise):
 * - gp_capture_unsafe: a call that stream capture forbids as potentially unsafe (allocations, frees,
 *   synchronous copies) under the calling thread's capture mode -> CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
 *   and the captures that forbid it are invalidated;
 * - gp_capture_legacy: work on the legacy stream while a blocking stream of its context captures ->
 *   CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, invalidating those captures;
 * - gp_capture_sync: synchronising with a capturing stream (or, for c, any stream of c) ->
 *   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, invalidating the capture. */
CUresult gp_capture_unsafe(void);
CUresult gp_capture_legacy(gp_stream *s);
CUresult gp_capture_sync(gp_stream *s, gp_ctx *c);
/* Captured work: a node in the capture graph after the stream's current dependencies. */
CUresult gp_capture_kernel(gp_stream *s, gp_op *op); /* takes the op's arguments */
CUresult gp_capture_memcpy(gp_stream *s, const CUDA_MEMCPY3D *p);
CUresult gp_capture_memset(gp_stream *s, const CUDA_MEMSET_NODE_PARAMS *p);
CUresult gp_capture_host(gp_stream *s, CUhostFn fn, void *data);
/* Work the capture cannot record: logs `what`, invalidates the capture, returns `rc`. */
CUresult gp_capture_refuse(gp_stream *s, const char *what, CUresult rc);
/* Event record and wait while captures exist; *handled says the call is complete. */
CUresult gp_capture_event_record(gp_stream *s, gp_event *e, bool *handled);
CUresult gp_capture_event_wait(gp_stream *s, gp_event *e, bool *handled);
/* CUDA_ERROR_CAPTURED_EVENT while e's latest record is part of a capture in progress. */
CUresult gp_capture_event_check(gp_event *e);
void gp_capture_event_forget(gp_event *e);
/* A destroyed stream leaves its capture, which is invalidated. */
void gp_capture_stream_forget(gp_stream *s);

/* ---- misc ----------------------------------------------------------------------------------------- */

/* Runs at the start of each cu* entry point for process-wide one-time setup (fork handling, env). */
void gp_sim_atfork_init(void);
unsigned long long gp_next_id(void);

#endif

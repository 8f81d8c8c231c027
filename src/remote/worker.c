/* worker.c - the GPU-over-IP worker (worker.h): accepts connections, one process per session, and serves the
 * calls of wire.h on the real driver.
 *
 * Three parts, top to bottom: the session (a table of CUDA entry points resolved through RTLD_DEFAULT so that
 * a preloaded vGPU library interposes, maps from the client's ids to the driver's handles, one handler per
 * op), the HELLO check (token file, version, the re-exec under the vGPU library for slot tokens), and the
 * accept loop of the main process, which never loads CUDA. A session serves one frame at a time, in order;
 * asynchronous requests get no reply and their first error waits for the next synchronizing call. Any frame
 * that does not decode ends its session (never the worker). Host functions run on the client: from a
 * session's first HOST_FUNC on, a reader thread takes the frames off the socket (see "host functions").
 */
#define GP_CUDA_NO_API_MACROS /* the exact exported names below, not cuda.h's mapping */
#include "remote/worker.h"
#include "common/array_format.h"
#include "common/paths.h"

#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/u64map.h"
#include "gpupool/cuda.h"
#include "remote/tls.h"
#define GP_NVML_NO_API_MACROS /* the exact exported names, as for CUDA */
#include "gpupool/nvml.h"
#include "remote/wire.h"

#define COMPONENT       "worker"
#define HELLO_TIMEOUT_S 5
#define WORKER_KEEPALIVE_S                                                                                 \
    10 /* a silent TCP client is probed after this long, and its session ended when 3 probes go unanswered \
        * (about 16 s) */
#define MAX_PARAM_BYTES 32768 /* CUDA's limit on a kernel's parameters is 32764 bytes */

/* Session process exit statuses; the main process turns them into the reason it logs. */
enum { EXIT_BYE = 0, EXIT_FAIL = 1, EXIT_PROTO = 2, EXIT_REFUSED = 3, EXIT_GONE = 4 };
#define GO_ON (-1) /* serve_one: the session goes on */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* ==== the session ======================================================================================= */

/* Every entry point a session calls, by the name libcuda.so.1 exports (the _v2 forms where NVIDIA has them).
 */
#define CU_FUNCS(X)                                \
    X(cuInit)                                      \
    X(cuDriverGetVersion)                          \
    X(cuDeviceGet)                                 \
    X(cuDeviceGetCount)                            \
    X(cuDeviceGetName)                             \
    X(cuDeviceTotalMem_v2)                         \
    X(cuDeviceGetUuid_v2)                          \
    X(cuDeviceGetAttribute)                        \
    X(cuDevicePrimaryCtxRetain)                    \
    X(cuDevicePrimaryCtxRelease_v2)                \
    X(cuDevicePrimaryCtxGetState)                  \
    X(cuDevicePrimaryCtxSetFlags_v2)               \
    X(cuDevicePrimaryCtxReset_v2)                  \
    X(cuCtxCreate_v2)                              \
    X(cuCtxDestroy_v2)                             \
    X(cuCtxSetCurrent)                             \
    X(cuCtxSynchronize)                            \
    X(cuMemAlloc_v2)                               \
    X(cuMemFree_v2)                                \
    X(cuMemGetInfo_v2)                             \
    X(cuMemAllocPitch_v2)                          \
    X(cuMemGetAddressRange_v2)                     \
    X(cuMemcpyHtoD_v2)                             \
    X(cuMemcpyHtoDAsync_v2)                        \
    X(cuMemcpyDtoH_v2)                             \
    X(cuMemcpyDtoHAsync_v2)                        \
    X(cuMemcpyDtoD_v2)                             \
    X(cuMemcpyDtoDAsync_v2)                        \
    X(cuMemsetD8_v2)                               \
    X(cuMemsetD16_v2)                              \
    X(cuMemsetD32_v2)                              \
    X(cuMemsetD8Async)                             \
    X(cuMemsetD16Async)                            \
    X(cuMemsetD32Async)                            \
    X(cuMemsetD2D8_v2)                             \
    X(cuMemsetD2D16_v2)                            \
    X(cuMemsetD2D32_v2)                            \
    X(cuMemsetD2D8Async)                           \
    X(cuMemsetD2D16Async)                          \
    X(cuMemsetD2D32Async)                          \
    X(cuStreamCreateWithPriority)                  \
    X(cuStreamDestroy_v2)                          \
    X(cuStreamSynchronize)                         \
    X(cuStreamQuery)                               \
    X(cuStreamWaitEvent)                           \
    X(cuEventCreate)                               \
    X(cuEventDestroy_v2)                           \
    X(cuEventRecord)                               \
    X(cuEventSynchronize)                          \
    X(cuEventQuery)                                \
    X(cuEventElapsedTime_v2)                       \
    X(cuModuleLoadData)                            \
    X(cuModuleUnload)                              \
    X(cuModuleGetFunction)                         \
    X(cuModuleGetGlobal_v2)                        \
    X(cuFuncGetAttribute)                          \
    X(cuLaunchKernel)                              \
    X(cuCtxSetLimit)                               \
    X(cuCtxGetLimit)                               \
    X(cuMemcpy2D_v2)                               \
    X(cuMemcpy2DAsync_v2)                          \
    X(cuMemcpy3D_v2)                               \
    X(cuMemcpy3DAsync_v2)                          \
    X(cuStreamAddCallback)                         \
    X(cuModuleGetFunctionCount)                    \
    X(cuLaunchCooperativeKernel)                   \
    X(cuOccupancyMaxActiveBlocksPerMultiprocessor) \
    X(cuMemAllocManaged)                           \
    X(cuMemHostAlloc)                              \
    X(cuMemFreeHost)                               \
    X(cuMemHostGetDevicePointer_v2)

/* Memory pools, stream-ordered allocation and virtual memory management (CUDA 11.2 and later). */
#define CU_FUNCS_POOL_VMM(X)         \
    X(cuCtxGetDevice)                \
    X(cuDeviceGetDefaultMemPool)     \
    X(cuDeviceGetMemPool)            \
    X(cuDeviceSetMemPool)            \
    X(cuMemAllocAsync)               \
    X(cuMemAllocFromPoolAsync)       \
    X(cuMemFreeAsync)                \
    X(cuMemPoolCreate)               \
    X(cuMemPoolDestroy)              \
    X(cuMemPoolSetAttribute)         \
    X(cuMemPoolGetAttribute)         \
    X(cuMemPoolTrimTo)               \
    X(cuMemGetAllocationGranularity) \
    X(cuMemCreate)                   \
    X(cuMemRelease)                  \
    X(cuMemAddressReserve)           \
    X(cuMemAddressFree)              \
    X(cuMemMap)                      \
    X(cuMemUnmap)                    \
    X(cuMemSetAccess)                \
    X(cuMemGetAccess)                \
    X(cuMemGetAllocationPropertiesFromHandle)

/* Arrays, graphs and stream capture (the section "graphs and arrays"). */
#define CU_FUNCS_GRAPH(X)          \
    X(cuArray3DCreate_v2)          \
    X(cuArrayDestroy)              \
    X(cuArray3DGetDescriptor_v2)   \
    X(cuMipmappedArrayCreate)      \
    X(cuMipmappedArrayDestroy)     \
    X(cuMipmappedArrayGetLevel)    \
    X(cuMemcpyDtoA_v2)             \
    X(cuMemcpyAtoD_v2)             \
    X(cuMemcpyAtoA_v2)             \
    X(cuMemAllocHost_v2)           \
    X(cuLaunchHostFunc)            \
    X(cuGraphCreate)               \
    X(cuGraphDestroy)              \
    X(cuGraphAddEmptyNode)         \
    X(cuGraphAddKernelNode)        \
    X(cuGraphAddMemsetNode)        \
    X(cuGraphAddMemcpyNode)        \
    X(cuGraphAddHostNode)          \
    X(cuGraphGetNodes)             \
    X(cuGraphInstantiateWithFlags) \
    X(cuGraphExecDestroy)          \
    X(cuGraphLaunch)               \
    X(cuGraphUpload)               \
    X(cuStreamBeginCapture_v2)     \
    X(cuStreamEndCapture)          \
    X(cuStreamIsCapturing)         \
    X(cuStreamGetCaptureInfo_v2)   \
    X(cuThreadExchangeStreamCaptureMode)

typedef struct cu_api {
#define FIELD(name) __typeof__(name) *name;
    CU_FUNCS(FIELD)
    CU_FUNCS_POOL_VMM(FIELD)
    CU_FUNCS_GRAPH(FIELD)
#undef FIELD
    __typeof__(cuFuncGetParamInfo) *cuFuncGetParamInfo; /* CUDA 12.4 and later; MODULE_FUNC needs it */
    /* OCCUPANCY with flags (absent: NOT_SUPPORTED) */
    CUresult (*cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags)(int *, CUfunction, int, size_t,
                                                                     unsigned);
    /* CUDA 11.6 and later (absent: NOT_SUPPORTED) */
    __typeof__(cuArrayGetMemoryRequirements) *cuArrayGetMemoryRequirements;
    __typeof__(cuMipmappedArrayGetMemoryRequirements) *cuMipmappedArrayGetMemoryRequirements;
} cu_api;

/* NVML's entry points a session calls (NVML_* ops), loaded at the session's first NVML_INIT; the first four
 * are needed, a missing other one answers NVML_ERROR_FUNCTION_NOT_FOUND. */
#define NV_FUNCS(X)                               \
    X(nvmlInitWithFlags)                          \
    X(nvmlShutdown)                               \
    X(nvmlDeviceGetCount_v2)                      \
    X(nvmlDeviceGetHandleByIndex_v2)              \
    X(nvmlSystemGetDriverVersion)                 \
    X(nvmlSystemGetNVMLVersion)                   \
    X(nvmlSystemGetCudaDriverVersion)             \
    X(nvmlDeviceGetHandleByUUID)                  \
    X(nvmlDeviceGetHandleByPciBusId_v2)           \
    X(nvmlDeviceGetHandleBySerial)                \
    X(nvmlDeviceGetIndex)                         \
    X(nvmlDeviceGetPciInfo_v3)                    \
    X(nvmlDeviceGetMemoryInfo)                    \
    X(nvmlDeviceGetMemoryInfo_v2)                 \
    X(nvmlDeviceGetUtilizationRates)              \
    X(nvmlDeviceGetTotalEnergyConsumption)        \
    X(nvmlDeviceGetTotalEccErrors)                \
    X(nvmlDeviceGetComputeRunningProcesses_v3)    \
    X(nvmlDeviceGetGraphicsRunningProcesses_v3)   \
    X(nvmlDeviceGetMPSComputeRunningProcesses_v3) \
    X(nvmlDeviceGetProcessUtilization)
#define NV_REQUIRED 4

typedef struct nv_api {
#define FIELD(name)           __typeof__(name) *name;
#define QFIELD(q, name, type) __typeof__(name) *name;
    NV_FUNCS(FIELD)
    GP_NVML_STR_QUERIES(QFIELD)
    GP_NVML_U32_QUERIES(QFIELD)
    GP_NVML_U32_ARG_QUERIES(QFIELD)
    GP_NVML_PAIR_QUERIES(QFIELD)
#undef QFIELD
#undef FIELD
} nv_api;

/* A function the client named, with its parameter layout (LAUNCH rebuilds kernelParams from it). */
typedef struct func_rec {
    CUfunction f;
    uint64_t module; /* the client's module id, so that MODULE_UNLOAD forgets it */
    uint32_t n;
    uint32_t off[GP_WIRE_MAX_PARAMS], size[GP_WIRE_MAX_PARAMS];
} func_rec;

/* Bulk copies go through pinned staging buffers, so that the driver copies while the socket carries data: an
 * HTOD piece is received straight into a buffer and copied from there while the next arrives; a DTOH chunk is
 * copied into a buffer and its reply deferred until BULK_AHEAD later chunks' copies are under way (the copies
 * run that far ahead of the sending: fewer left the sending waiting for a copy's completion). Pieces smaller
 * than BULK_MIN or larger than a buffer (the client sends 512 KiB at most; the protocol allows 4 MiB), and
 * everything before the first large copy has allocated the buffers, take the plain synchronous path. */
#define BULK_BUFS  5
#define BULK_AHEAD 3
#define BULK_MIN   (64u << 10)
#define BULK_CAP   ((1u << 20) + 64) /* an HTOD piece of 1 MiB with its fields; a DTOH chunk of 1 MiB */

typedef struct bulk_buf {
    uint8_t *buf;     /* BULK_CAP bytes of pinned memory (cuMemHostAlloc, portable) */
    CUevent ev;       /* recorded after the copy that uses buf */
    CUcontext ev_ctx; /* the context ev was created in */
    bool busy;        /* that copy may still run: wait for ev before buf is used again */
    bool reply;       /* a DTOH whose reply waits: req, size */
    gp_wire_hdr req;
    uint32_t size;
} bulk_buf;

typedef struct session {
    int fd;
    uint64_t id;
    cu_api cu;
    /* client id -> driver handle (funcs: func_rec *). owned: contexts this session created (destroyed at
     * end). */
    gp_u64map ctxs, owned, streams, events, modules, funcs;
    gp_u64map hostmem; /* MEM_HOST_ALLOC: device pointer -> the pinned host memory behind it */
    /* pools: client id -> CUmemoryPool (default pools too); made_pools: those this session created.
     * vmm: client id -> CUmemGenericAllocationHandle. reserved, mapped: the worker's address -> size of each
     * reservation and mapping. All given back at the end (session_free). */
    gp_u64map pools, made_pools, vmm, reserved, mapped;
    /* arrays (array_rec *), mipmapped arrays (obj_rec *), graphs (graph_rec *), graph nodes (node_rec *),
     * driver node -> client node id, executable graphs (exec_rec *): "graphs and arrays" below */
    gp_u64map arrays, mipmaps, graphs, nodes, node_ids, execs;
    uint64_t node_seq;       /* ids of nodes the driver made: top bit set, then this counter */
    struct graph_rec *grave; /* freed graphs whose staged nodes a launch may still run (freed at end) */
    uint64_t cur_ctx;        /* the current request's ctx field */
    /* the client ctx id each stream, event, module and MEM_HOST_ALLOC was made in, so that a context that
     * goes takes its handles out of the maps (ctx_objects_forget) rather than leave them to a later call */
    gp_u64map stream_ctx, event_ctx, module_ctx, hostmem_ctx;
    uint64_t primary_id[64]; /* the client id of each device's primary context, once retained */
    int primary[64];         /* primary context retains per device, released at the end */
    uint32_t pending;        /* the first error of an asynchronous request, for the next synchronizing call */
    uint32_t flags;          /* the current request's GP_WIRE_F_* */
    const char *cache_dir;
    nv_api nv;
    bool nvml_up;    /* NVML_INIT succeeded: the session holds one NVML reference */
    bool registered; /* CLIENT_ID came: the session is in the registry */
    char space[160]; /* the client's pid space (CLIENT_ID) */
    char why[160];   /* what was malformed */
    gp_wbuf in, out;
    const uint8_t *pl; /* the current request's payload: in.p, or a stage's buffer */
    size_t pl_len;
    bulk_buf *in_bulk; /* the bulk buffer holding the current request's payload, if one does */
    gp_wire_hdr req;   /* the current request's header */
    CUcontext cur;     /* the context the current request runs in */
    bulk_buf bulk[BULK_BUFS];
    bool bulked;        /* the bulk buffers are allocated */
    unsigned next_bulk; /* bulk buffers are used in turn */
    unsigned ndeferred; /* DTOH replies waiting, oldest first from deferred_at */
    unsigned deferred_at;
    bool reading; /* the reader thread takes the frames off the socket (since the first HOST_FUNC) */
    pthread_t reader;
    _Alignas(16) unsigned char params[MAX_PARAM_BYTES];
    void *args[GP_WIRE_MAX_PARAMS];
} session;

static uint64_t h2u(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

static void *u2h(uint64_t v)
{
    return (void *)(uintptr_t)v;
}

/* Ids 0 and UINT64_MAX never name anything (the map reserves them). */
static bool id_ok(uint64_t id)
{
    return id != 0 && id != UINT64_MAX;
}

static bool map_get(const gp_u64map *m, uint64_t id, void **out)
{
    uint64_t v;
    if (!id_ok(id) || !gp_u64map_get(m, id, &v))
        return false;
    *out = u2h(v);
    return true;
}

/* A new id for a handle: refused when it is 0, reserved, or already names one. */
static uint32_t map_new(gp_u64map *m, uint64_t id, const void *h)
{
    uint64_t v;
    if (!id_ok(id) || gp_u64map_get(m, id, &v))
        return CUDA_ERROR_INVALID_VALUE;
    return gp_u64map_put(m, id, h2u(h)) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static uint32_t stream_of(session *s, uint64_t id, CUstream *st)
{
    *st = NULL;
    if (id == 0)
        return CUDA_SUCCESS;
    void *h;
    if (!map_get(&s->streams, id, &h))
        return CUDA_ERROR_INVALID_HANDLE;
    *st = h;
    return CUDA_SUCCESS;
}

static uint32_t event_of(session *s, uint64_t id, CUevent *ev)
{
    void *h;
    if (!map_get(&s->events, id, &h))
        return CUDA_ERROR_INVALID_HANDLE;
    *ev = h;
    return CUDA_SUCCESS;
}

/* ---- host functions and the reader thread ----------------------------------------------------------
 *
 * A host function (HOST_FUNC) runs on the client. The worker enqueues host_cb on the stream; when the stream
 * reaches it, host_cb (on the driver's stream thread) sends CALLBACK and waits for the client's
 * CALLBACK_DONE, holding the stream as the client's function would. Meanwhile a call of the session may
 * itself wait for that stream (STREAM_SYNC, a DTOH on it), so from the first HOST_FUNC on a reader thread
 * takes every frame off the socket: CALLBACK_DONE it handles at once, the others it queues for the session's
 * thread, which still serves them one at a time, in order. Before that, the session's thread reads the socket
 * itself.
 *
 * The state lives in g_rx, not in the session: a process serves one session, and host_cb may run on a
 * stream thread after the session is gone (it then finds `gone` set and returns). Frames to the client are
 * written under g_wmu, since host_cb writes from the stream thread while the session's thread replies. */

#define RX_QUEUE_MAX                                                                         \
    (64u << 20) /* bytes of queued frames before the reader waits (not while a host function \
                 * waits: its CALLBACK_DONE must get through) */

#define RX_QUEUE_HARD (1ull << 30) /* ... and even then: the session ends beyond this */

typedef struct rx_frame {
    struct rx_frame *next;
    gp_wire_hdr h;
    gp_wbuf payload;
} rx_frame;

typedef struct stage stage;
typedef struct hostcb {
    struct hostcb *next;
    uint64_t id; /* the client's */
    bool done;
    stage *st; /* a graph node's: host function, or staged copy (graphs and arrays, below) */
} hostcb;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* any change below */
    int fd;
    rx_frame *head, *tail;
    size_t bytes;
    bool end; /* the reader stopped: end_errno, end_why and end_hdr say why */
    int end_errno;
    const char *end_why;
    gp_wire_hdr end_hdr;
    bool stop;   /* the session is ending */
    bool gone;   /* no CALLBACK_DONE will come: host functions return at once */
    hostcb *cbs; /* registered host functions */
    int waiting; /* host functions waiting for CALLBACK_DONE */
} g_rx = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1};

static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;

/* A frame out whole, whichever thread sends it (host functions send CALLBACK from the driver's threads). */
static int send_frame2(int fd, const gp_wire_hdr *h, const void *a, size_t na, const void *b, size_t nb)
{
    pthread_mutex_lock(&g_wmu);
    int rc = gp_wire_send2(fd, h, a, na, b, nb);
    pthread_mutex_unlock(&g_wmu);
    return rc;
}

static int send_frame(int fd, const gp_wire_hdr *h, const void *p, size_t n)
{
    return send_frame2(fd, h, p, n, NULL, 0);
}

/* CALLBACK_DONE for id (called with g_rx.mu held); an id that waits for nothing is ignored. */
static void callback_done_locked(uint64_t id)
{
    for (hostcb *c = g_rx.cbs; c; c = c->next)
        if (c->id == id && !c->done) {
            c->done = true;
            pthread_cond_broadcast(&g_rx.cv);
            return;
        }
}

static int stage_deliver(int fd, const hostcb *c);

/* Sends CALLBACK for c (registered in g_rx.cbs; a staged copy's data first) and waits for CALLBACK_DONE;
 * unregisters c. */
static void run_on_client(hostcb *c, CUresult status)
{
    uint8_t pl[12];
    for (int i = 0; i < 8; i++)
        pl[i] = (uint8_t)(c->id >> (8 * i));
    for (int i = 0; i < 4; i++)
        pl[8 + i] = (uint8_t)((uint32_t)status >> (8 * i));
    gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_CALLBACK, .length = sizeof pl};
    pthread_mutex_lock(&g_rx.mu);
    g_rx.waiting++;
    bool send = !g_rx.gone;
    pthread_mutex_unlock(&g_rx.mu);
    bool sent = send && stage_deliver(g_rx.fd, c) == 0 && send_frame(g_rx.fd, &h, pl, sizeof pl) == 0;
    pthread_mutex_lock(&g_rx.mu);
    if (!sent)
        g_rx.gone = true;
    /* Bounded by the client: its function returns, or the connection ends (the reader then sets gone). */
    while (!c->done && !g_rx.gone)
        pthread_cond_wait(&g_rx.cv, &g_rx.mu);
    g_rx.waiting--;
    for (hostcb **pp = &g_rx.cbs; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_cond_broadcast(&g_rx.cv);
    pthread_mutex_unlock(&g_rx.mu);
}

static void CUDA_CB host_cb(CUstream st, CUresult status, void *p)
{
    (void)st;
    run_on_client(p, status);
    free(p);
}

static bool stage_fill_locked(const void *p, size_t n);

static void *reader_main(void *arg)
{
    (void)arg;
    gp_wbuf buf;
    gp_wbuf_init(&buf);
    for (;;) {
        gp_wire_hdr h = {0};
        const char *why = NULL;
        gp_w_reserve(&buf, 1); /* as prime(): never NULL + 0 */
        gp_wbuf_reset(&buf);
        int rc = gp_wire_recv(g_rx.fd, &h, &buf, &why);
        int err = errno;
        pthread_mutex_lock(&g_rx.mu);
        if (rc == 0 && h.op == GP_OP_CALLBACK_DONE && !(h.flags & GP_WIRE_F_REPLY) &&
            gp_worker_request_ok(h.op, buf.p, buf.len, &why)) {
            gp_rbuf r;
            gp_rbuf_init(&r, buf.p, buf.len);
            (void)gp_r_u64(&r); /* ctx */
            callback_done_locked(gp_r_u64(&r));
            pthread_mutex_unlock(&g_rx.mu);
            continue;
        }
        if (rc == 0 && h.op == GP_OP_STAGE_FILL && !(h.flags & GP_WIRE_F_REPLY) &&
            gp_worker_request_ok(h.op, buf.p, buf.len, &why) && stage_fill_locked(buf.p, buf.len)) {
            pthread_mutex_unlock(&g_rx.mu);
            continue;
        }
        rx_frame *f = rc == 0 ? malloc(sizeof *f) : NULL;
        if (f == NULL) {
            g_rx.end = true;
            g_rx.end_errno = rc == 0 ? ENOMEM : err;
            g_rx.end_why = rc == 0 ? "out of memory" : why;
            g_rx.end_hdr = h;
            g_rx.gone = true;
            pthread_cond_broadcast(&g_rx.cv);
            pthread_mutex_unlock(&g_rx.mu);
            break;
        }
        f->next = NULL;
        f->h = h;
        f->payload = buf;
        gp_wbuf_init(&buf);
        if (g_rx.tail)
            g_rx.tail->next = f;
        else
            g_rx.head = f;
        g_rx.tail = f;
        g_rx.bytes += f->payload.cap;
        pthread_cond_broadcast(&g_rx.cv);
        while (g_rx.bytes > RX_QUEUE_MAX && g_rx.waiting == 0 && !g_rx.stop)
            pthread_cond_wait(&g_rx.cv, &g_rx.mu);
        if (g_rx.bytes > RX_QUEUE_HARD) { /* a host function waits, and the client floods meanwhile */
            g_rx.end = true;
            g_rx.end_errno = ENOMEM;
            g_rx.end_why = "the client queued more than 1 GiB of requests while a host function waited";
            g_rx.end_hdr = h;
            g_rx.gone = true;
            pthread_cond_broadcast(&g_rx.cv);
            pthread_mutex_unlock(&g_rx.mu);
            break;
        }
        bool stop = g_rx.stop;
        pthread_mutex_unlock(&g_rx.mu);
        if (stop)
            break;
    }
    gp_wbuf_free(&buf);
    return NULL;
}

/* ---- staging buffers for bulk copies --------------------------------------------------------------- */

#define DEFERRED 0x20000u /* an op's status: its reply is sent later (a staged DTOH) */

/* Waits for the copy that last used g's buffer. Its status: the copy's error, if it failed. */
static uint32_t bulk_wait(session *s, bulk_buf *g)
{
    if (!g->busy)
        return CUDA_SUCCESS;
    g->busy = false;
    return s->cu.cuEventSynchronize(g->ev);
}

/* Sends g's deferred DTOH reply, the copy done: the data, or the error (an earlier asynchronous one first, as
 * the synchronizing call it is). -1 when the connection is gone. */
static int bulk_reply(session *s, bulk_buf *g)
{
    uint32_t status = bulk_wait(s, g);
    g->reply = false;
    s->ndeferred--;
    if (s->pending != CUDA_SUCCESS) {
        status = s->pending;
        s->pending = CUDA_SUCCESS;
    }
    gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                     .op = g->req.op,
                     .flags = GP_WIRE_F_REPLY,
                     .seq = g->req.seq,
                     .status = status};
    if (status != CUDA_SUCCESS)
        return send_frame2(s->fd, &h, NULL, 0, NULL, 0);
    uint8_t len[4] = {(uint8_t)g->size, (uint8_t)(g->size >> 8), (uint8_t)(g->size >> 16),
                      (uint8_t)(g->size >> 24)};
    return send_frame2(s->fd, &h, len, sizeof len, g->buf, g->size);
}

/* Sends every deferred reply, oldest first (the buffers are used in turn, so the oldest is the next one), or
 * all but the BULK_AHEAD newest. -1 when the connection is gone. */
static int bulk_replies(session *s, bool keep_newest)
{
    int rc = 0;
    for (unsigned i = 0; i < BULK_BUFS && s->ndeferred > (keep_newest ? (unsigned)BULK_AHEAD : 0u); i++) {
        bulk_buf *g = &s->bulk[(s->next_bulk + i) % BULK_BUFS];
        if (g->reply && bulk_reply(s, g) < 0)
            rc = -1;
    }
    return rc;
}

/* The next stage, free: its earlier copy done (an HTOD's error becomes pending) and its reply sent. NULL when
 * the connection is gone. */
static bulk_buf *bulk_take(session *s)
{
    bulk_buf *g = &s->bulk[s->next_bulk];
    s->next_bulk = (s->next_bulk + 1) % BULK_BUFS;
    if (g->reply) {
        if (bulk_reply(s, g) < 0)
            return NULL;
    } else {
        uint32_t rc = bulk_wait(s, g);
        if (rc != CUDA_SUCCESS && s->pending == CUDA_SUCCESS)
            s->pending = rc;
    }
    return g;
}

/* After a copy from or into g's buffer was issued on st: marks the buffer busy until an event behind the
 * copy fires. Without an event (none could be made in this context), waits for the stream instead. */
static uint32_t bulk_mark(session *s, bulk_buf *g, CUstream st)
{
    if (g->ev && g->ev_ctx != s->cur) {
        s->cu.cuEventDestroy_v2(g->ev);
        g->ev = NULL;
    }
    if (!g->ev) {
        if (s->cu.cuEventCreate(&g->ev, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
            g->ev = NULL;
            return s->cu.cuStreamSynchronize(st);
        }
        g->ev_ctx = s->cur;
    }
    uint32_t rc = s->cu.cuEventRecord(g->ev, st);
    if (rc != CUDA_SUCCESS)
        return s->cu.cuStreamSynchronize(st);
    g->busy = true;
    return CUDA_SUCCESS;
}

/* Allocates the stages (in the current context; portable, so that every context may copy from them). A
 * failure leaves the plain path in use. */
static void bulk_alloc(session *s)
{
    if (s->bulked || !s->cur)
        return;
    for (int i = 0; i < BULK_BUFS; i++) {
        void *p = NULL;
        if (s->cu.cuMemHostAlloc(&p, BULK_CAP, CU_MEMHOSTALLOC_PORTABLE) != CUDA_SUCCESS) {
            gp_log(GP_LOG_INFO, COMPONENT,
                   "session %016llx: no pinned staging memory; copies stay synchronous",
                   (unsigned long long)s->id);
            while (--i >= 0) {
                s->cu.cuMemFreeHost(s->bulk[i].buf);
                s->bulk[i].buf = NULL;
            }
            return;
        }
        s->bulk[i].buf = p;
    }
    s->bulked = true;
    gp_log(GP_LOG_DEBUG, COMPONENT,
           "session %016llx: bulk copies staged through %d x %u KiB of pinned memory",
           (unsigned long long)s->id, BULK_BUFS, BULK_CAP >> 10);
}

/* Everything staged is finished and the stages freed: before a context that may own their memory or events
 * goes away, and at the end. -1 when the connection is gone (a deferred reply could not be sent). */
static int bulk_release(session *s)
{
    int rc = bulk_replies(s, false);
    for (int i = 0; i < BULK_BUFS; i++) {
        bulk_buf *g = &s->bulk[i];
        uint32_t st = bulk_wait(s, g);
        if (st != CUDA_SUCCESS && s->pending == CUDA_SUCCESS)
            s->pending = st;
        if (g->ev)
            s->cu.cuEventDestroy_v2(g->ev);
        if (g->buf)
            s->cu.cuMemFreeHost(g->buf);
        memset(g, 0, sizeof *g);
    }
    s->bulked = false;
    s->next_bulk = 0;
    return rc;
}

/* The next request: off the socket, or from the reader's queue once it runs. 0, or -1 with errno (and why)
 * as gp_wire_recv says. */
static int next_frame(session *s, gp_wire_hdr *h, const char **why)
{
    s->in_bulk = NULL;
    if (!s->reading) {
        if (gp_wire_recv_hdr(s->fd, h, why) < 0)
            return -1;
        if (h->op == GP_OP_HTOD && !(h->flags & GP_WIRE_F_REPLY) && s->bulked && h->length >= BULK_MIN &&
            h->length <= BULK_CAP) {
            bulk_buf *g = bulk_take(s); /* an HTOD is not a DTOH: no reply is deferred now */
            if (!g) {
                *why = "the connection closed";
                errno = ECONNRESET;
                return -1;
            }
            s->in_bulk = g;
            s->pl = g->buf;
            s->pl_len = h->length;
            return gp_wire_recv_body(s->fd, h, g->buf, why);
        }
        gp_wbuf_reset(&s->in);
        if (h->length && !gp_w_reserve(&s->in, h->length)) {
            errno = ENOMEM;
            *why = "out of memory for a frame";
            return -1;
        }
        s->in.len = h->length;
        s->pl = s->in.p;
        s->pl_len = s->in.len;
        return gp_wire_recv_body(s->fd, h, s->in.p, why);
    }
    pthread_mutex_lock(&g_rx.mu);
    while (!g_rx.head && !g_rx.end)
        pthread_cond_wait(&g_rx.cv, &g_rx.mu);
    rx_frame *f = g_rx.head;
    if (f == NULL) {
        *h = g_rx.end_hdr;
        *why = g_rx.end_why;
        errno = g_rx.end_errno;
        pthread_mutex_unlock(&g_rx.mu);
        return -1;
    }
    g_rx.head = f->next;
    if (!g_rx.head)
        g_rx.tail = NULL;
    g_rx.bytes -= f->payload.cap;
    pthread_cond_broadcast(&g_rx.cv);
    pthread_mutex_unlock(&g_rx.mu);
    gp_wbuf_free(&s->in);
    s->in = f->payload;
    *h = f->h;
    free(f);
    if (s->in.p == NULL) { /* an empty frame's buffer never grew */
        gp_w_reserve(&s->in, 1);
        gp_wbuf_reset(&s->in);
    }
    s->pl = s->in.p;
    s->pl_len = s->in.len;
    return 0;
}

/* Whether a request has arrived already (a deferred reply waits for the next one only when it has). */
static bool frame_waiting(session *s)
{
    if (s->reading) {
        pthread_mutex_lock(&g_rx.mu);
        bool any = g_rx.head != NULL || g_rx.end;
        pthread_mutex_unlock(&g_rx.mu);
        return any;
    }
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static bool reader_start(session *s)
{
    if (s->reading)
        return true;
    g_rx.fd = s->fd;
    if (pthread_create(&s->reader, NULL, reader_main, NULL) != 0)
        return false;
    s->reading = true;
    return true;
}

/* The session ends: host functions stop waiting, the reader is stopped and its queue dropped. */
static void reader_stop(session *s)
{
    pthread_mutex_lock(&g_rx.mu);
    g_rx.stop = true;
    g_rx.gone = true;
    pthread_cond_broadcast(&g_rx.cv);
    pthread_mutex_unlock(&g_rx.mu);
    if (!s->reading)
        return;
    shutdown(s->fd, SHUT_RD);
    pthread_join(s->reader, NULL);
    s->reading = false;
    pthread_mutex_lock(&g_rx.mu);
    while (g_rx.head) {
        rx_frame *f = g_rx.head;
        g_rx.head = f->next;
        gp_wbuf_free(&f->payload);
        free(f);
    }
    g_rx.tail = NULL;
    g_rx.bytes = 0;
    pthread_mutex_unlock(&g_rx.mu);
}

/* A copy descriptor (wire.h): two sides of u32 kind and six u64, then width, rows, depth. */
#define COPY_LAYOUT \
    "4888888"       \
    "4888888"       \
    "888"

/* Each op's request fields, in wire.h's order: 4 u32, 8 u64, b blob, s str. Checked before the op runs, so
 * that a payload which does not decode exactly ends the session before any call or id lookup. */
static const char *const g_layout[GP_OP__END] = {
    [GP_OP_HELLO] = "44ss4",
    [GP_OP_BYE] = "",
    [GP_OP_INIT] = "4",
    [GP_OP_DRIVER_VERSION] = "",
    [GP_OP_DEVICE_COUNT] = "",
    [GP_OP_DEVICE_INFO] = "4",
    [GP_OP_PRIMARY_RETAIN] = "48",
    [GP_OP_PRIMARY_RELEASE] = "4",
    [GP_OP_PRIMARY_STATE] = "4",
    [GP_OP_PRIMARY_FLAGS] = "44",
    [GP_OP_PRIMARY_RESET] = "4",
    [GP_OP_CTX_CREATE] = "448",
    [GP_OP_CTX_DESTROY] = "8",
    [GP_OP_CTX_SYNC] = "8",
    [GP_OP_CTX_SET_LIMIT] = "848",
    [GP_OP_CTX_GET_LIMIT] = "84",
    [GP_OP_MEM_ALLOC] = "88",
    [GP_OP_MEM_FREE] = "88",
    [GP_OP_MEM_INFO] = "8",
    [GP_OP_MEM_ALLOC_PITCH] = "8884",
    [GP_OP_MEM_RANGE] = "88",
    [GP_OP_HTOD] = "8884b",
    [GP_OP_DTOH] = "8888",
    [GP_OP_DTOD] = "88888",
    [GP_OP_MEMSET] = "88844888",
    [GP_OP_MEMCPY_3D] = "88888888888",
    [GP_OP_STREAM_CREATE] = "8844",
    [GP_OP_STREAM_DESTROY] = "88",
    [GP_OP_STREAM_SYNC] = "88",
    [GP_OP_STREAM_QUERY] = "88",
    [GP_OP_STREAM_WAIT_EVENT] = "8884",
    [GP_OP_HOST_FUNC] = "888",
    [GP_OP_CALLBACK] = "84", /* the worker's to send: a client sending it is answered NOT_SUPPORTED */
    [GP_OP_CALLBACK_DONE] = "88",
    [GP_OP_EVENT_CREATE] = "884",
    [GP_OP_EVENT_DESTROY] = "88",
    [GP_OP_EVENT_RECORD] = "888",
    [GP_OP_EVENT_SYNC] = "88",
    [GP_OP_EVENT_QUERY] = "88",
    [GP_OP_EVENT_ELAPSED] = "888",
    [GP_OP_MODULE_HAVE] = "8b",
    [GP_OP_MODULE_LOAD] = "88bb",
    [GP_OP_MODULE_UNLOAD] = "88",
    [GP_OP_MODULE_FUNC] = "888s",
    [GP_OP_MODULE_GLOBAL] = "88s",
    [GP_OP_FUNC_ATTR] = "884",
    [GP_OP_LAUNCH] = "8844444448b",
    [GP_OP_MODULE_FUNC_COUNT] = "88",
    [GP_OP_LAUNCH_COOP] = "8844444448b",
    [GP_OP_OCCUPANCY] = "88484",
    [GP_OP_CLIENT_ID] = "4s",
    [GP_OP_NVML_INIT] = "4",
    [GP_OP_NVML_SYSTEM] = "",
    [GP_OP_NVML_HANDLE] = "4s",
    [GP_OP_NVML_STR] = "44",
    [GP_OP_NVML_U32] = "444",
    [GP_OP_NVML_PAIR] = "44",
    [GP_OP_NVML_U64] = "4444",
    [GP_OP_NVML_MEMORY] = "44",
    [GP_OP_NVML_UTILIZATION] = "4",
    [GP_OP_NVML_PCI] = "4",
    [GP_OP_NVML_PROCS] = "44",
    [GP_OP_NVML_PROC_UTIL] = "48",
    [GP_OP_POOL_DEVICE] = "8448",
    [GP_OP_POOL_SET_CURRENT] = "848",
    [GP_OP_POOL_CREATE] = "88444484",
    [GP_OP_POOL_DESTROY] = "88",
    [GP_OP_POOL_SET_ATTR] = "8848",
    [GP_OP_POOL_GET_ATTR] = "884",
    [GP_OP_POOL_TRIM] = "888",
    [GP_OP_MEM_ALLOC_ASYNC] = "88888",
    [GP_OP_MEM_FREE_ASYNC] = "888",
    [GP_OP_VMM_GRANULARITY] = "844444444",
    [GP_OP_VMM_CREATE] = "88884444444",
    [GP_OP_VMM_RELEASE] = "88",
    [GP_OP_VMM_RESERVE] = "88888",
    [GP_OP_VMM_ADDRESS_FREE] = "888",
    [GP_OP_VMM_MAP] = "888888",
    [GP_OP_VMM_UNMAP] = "888",
    [GP_OP_VMM_SET_ACCESS] = "888b",
    [GP_OP_VMM_GET_ACCESS] = "8448",
    [GP_OP_VMM_PROPS] = "88",
    [GP_OP_MEM_ALLOC_MANAGED] = "884",
    [GP_OP_MEM_HOST_ALLOC] = "884",
    [GP_OP_MEM_HOST_FREE] = "88",
    [GP_OP_ARRAY_CREATE] = "88888444",
    [GP_OP_ARRAY_DESTROY] = "88",
    [GP_OP_ARRAY_MEM_REQ] = "884",
    [GP_OP_MIPMAP_CREATE] = "888884444",
    [GP_OP_MIPMAP_DESTROY] = "88",
    [GP_OP_MIPMAP_LEVEL] = "8848",
    [GP_OP_MIPMAP_MEM_REQ] = "884",
    [GP_OP_HTOA] = "88884b",
    [GP_OP_ATOH] = "88888",
    [GP_OP_ARRAY_LINEAR] = "8488888",
    [GP_OP_MEMCPY_BOX] = "88" COPY_LAYOUT,
    [GP_OP_GRAPH_CREATE] = "884",
    [GP_OP_GRAPH_DESTROY] = "88",
    [GP_OP_GRAPH_ADD_EMPTY] = "888b",
    [GP_OP_GRAPH_ADD_KERNEL] = "888b84444444b",
    [GP_OP_GRAPH_ADD_MEMSET] = "888b8884488",
    [GP_OP_GRAPH_ADD_MEMCPY] = "888b8" COPY_LAYOUT,
    [GP_OP_GRAPH_ADD_HOST] = "888b",
    [GP_OP_GRAPH_NODES] = "88",
    [GP_OP_GRAPH_INSTANTIATE] = "88888",
    [GP_OP_GRAPH_EXEC_DESTROY] = "88",
    [GP_OP_GRAPH_LAUNCH] = "888",
    [GP_OP_GRAPH_UPLOAD] = "888",
    [GP_OP_CAPTURE_BEGIN] = "8884",
    [GP_OP_CAPTURE_END] = "88",
    [GP_OP_CAPTURE_STATUS] = "88",
    [GP_OP_CAPTURE_INFO] = "88",
    [GP_OP_CAPTURE_MODE] = "84",
    [GP_OP_CAPTURE_HOST] = "8888",
    [GP_OP_CAPTURE_COPY] = "8888" COPY_LAYOUT,
    [GP_OP_STAGE_DATA] = "88b", /* the worker's to send */
    [GP_OP_STAGE_FILL] = "888b",
};

bool gp_worker_request_ok(unsigned op, const void *payload, size_t len, const char **why)
{
    const char *l = op < GP_OP__END ? g_layout[op] : NULL;
    *why = NULL;
    if (!l)
        return true;
    gp_rbuf r;
    gp_rbuf_init(&r, payload, len);
    char str[GP_WIRE_MAX_STR + 1];
    size_t n;
    for (; *l && r.ok; l++) {
        switch (*l) {
        case '4': gp_r_u32(&r); break;
        case '8': gp_r_u64(&r); break;
        case 'b': gp_r_blob(&r, &n); break;
        case 's': gp_r_str(&r, str, sizeof str); break;
        default: assert(!"bad layout letter");
        }
    }
    if (gp_r_done(&r))
        return true;
    *why = r.ok ? "bytes left over after the last field" : "fields missing, or a blob or str too long";
    return false;
}

/* A handler reads its request fields from r, checks they decoded exactly, runs the call, and writes its reply
 * fields to o. It returns the status: a CUresult, or GP_WIRE_E_MALFORMED (with s->why set). */
typedef uint32_t (*op_fn)(session *s, gp_rbuf *r, gp_wbuf *o);

#define DECODED(s, r)                                                                                 \
    do {                                                                                              \
        if (!gp_r_done(r)) {                                                                          \
            snprintf((s)->why, sizeof(s)->why, "%s", (r)->ok ? "bytes left over" : "fields missing"); \
            return GP_WIRE_E_MALFORMED;                                                               \
        }                                                                                             \
    } while (0)

#define CHECK(call)              \
    do {                         \
        uint32_t rc_ = (call);   \
        if (rc_ != CUDA_SUCCESS) \
            return rc_;          \
    } while (0)

/* Graphs and arrays (further down) that a context's destruction took with it, and the session's end. */
static void ctx_objects_forget(session *s, uint64_t ctx);
static void graphs_arrays_free(session *s);

static uint32_t op_init(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    return s->cu.cuInit(flags);
}

static uint32_t op_driver_version(session *s, gp_rbuf *r, gp_wbuf *o)
{
    DECODED(s, r);
    int v = 0;
    CHECK(s->cu.cuDriverGetVersion(&v));
    gp_w_u32(o, (uint32_t)v);
    return CUDA_SUCCESS;
}

static uint32_t op_device_count(session *s, gp_rbuf *r, gp_wbuf *o)
{
    DECODED(s, r);
    int n = 0;
    CHECK(s->cu.cuDeviceGetCount(&n));
    gp_w_u32(o, (uint32_t)n);
    return CUDA_SUCCESS;
}

static uint32_t device_of(session *s, uint32_t ordinal, CUdevice *dev)
{
    if (ordinal > INT_MAX)
        return CUDA_ERROR_INVALID_DEVICE;
    return s->cu.cuDeviceGet(dev, (int)ordinal);
}

static uint32_t op_device_info(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    CUdevice dev;
    char name[256];
    size_t total = 0;
    CUuuid uuid;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuDeviceGetName(name, sizeof name, dev));
    CHECK(s->cu.cuDeviceTotalMem_v2(&total, dev));
    CHECK(s->cu.cuDeviceGetUuid_v2(&uuid, dev));
    name[sizeof name - 1] = '\0';
    gp_w_str(o, name);
    gp_w_u64(o, total);
    gp_w_blob(o, uuid.bytes, sizeof uuid.bytes);
    /* attributes 1..n: every one our cuda.h names; one the driver does not know reads 0 */
    uint32_t n = CU_DEVICE_ATTRIBUTE_MAX - 1;
    gp_w_u32(o, n);
    for (uint32_t a = 1; a <= n; a++) {
        int v = 0;
        if (s->cu.cuDeviceGetAttribute(&v, (CUdevice_attribute)a, dev) != CUDA_SUCCESS)
            v = 0;
        gp_w_u32(o, (uint32_t)v);
    }
    return CUDA_SUCCESS;
}

static uint32_t op_primary_retain(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUdevice dev;
    CUcontext c;
    void *old;
    CHECK(device_of(s, ordinal, &dev));
    if (!id_ok(id))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuDevicePrimaryCtxRetain(&c, dev));
    /* the same primary context may be retained again under its id; a different context may not take it */
    if (map_get(&s->ctxs, id, &old) && old != c) {
        s->cu.cuDevicePrimaryCtxRelease_v2(dev);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (gp_u64map_put(&s->ctxs, id, h2u(c)) < 0) {
        s->cu.cuDevicePrimaryCtxRelease_v2(dev);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (dev >= 0 && dev < 64) {
        s->primary[dev]++;
        s->primary_id[dev] = id;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_primary_release(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    bulk_release(s); /* its memory or events may belong to that context */
    CUdevice dev;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuDevicePrimaryCtxRelease_v2(dev));
    if (dev >= 0 && dev < 64 && s->primary[dev] > 0 && --s->primary[dev] == 0)
        ctx_objects_forget(s, s->primary_id[dev]); /* the last retain went: the driver destroyed it */
    return CUDA_SUCCESS;
}

static uint32_t op_primary_state(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    CUdevice dev;
    unsigned flags = 0;
    int active = 0;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuDevicePrimaryCtxGetState(dev, &flags, &active));
    gp_w_u32(o, flags);
    gp_w_u32(o, (uint32_t)active);
    return CUDA_SUCCESS;
}

static uint32_t op_primary_flags(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r), flags = gp_r_u32(r);
    DECODED(s, r);
    CUdevice dev;
    CHECK(device_of(s, ordinal, &dev));
    return s->cu.cuDevicePrimaryCtxSetFlags_v2(dev, flags);
}

static uint32_t op_primary_reset(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    bulk_release(s); /* its memory or events may belong to that context */
    CUdevice dev;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuDevicePrimaryCtxReset_v2(dev));
    if (dev >= 0 && dev < 64 && s->primary_id[dev])
        ctx_objects_forget(s, s->primary_id[dev]); /* everything made in it went with it */
    return CUDA_SUCCESS;
}

static uint32_t op_ctx_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t flags = gp_r_u32(r), ordinal = gp_r_u32(r);
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUdevice dev;
    CUcontext c;
    void *old;
    CHECK(device_of(s, ordinal, &dev));
    if (!id_ok(id) || map_get(&s->ctxs, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuCtxCreate_v2(&c, flags, dev));
    if (gp_u64map_put(&s->ctxs, id, h2u(c)) < 0 || gp_u64map_put(&s->owned, id, h2u(c)) < 0) {
        gp_u64map_del(&s->ctxs, id, NULL);
        s->cu.cuCtxDestroy_v2(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_ctx_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    bulk_release(s); /* its memory or events may belong to that context */
    void *c;
    if (!map_get(&s->ctxs, id, &c))
        return CUDA_ERROR_INVALID_CONTEXT;
    CHECK(s->cu.cuCtxDestroy_v2(c));
    ctx_objects_forget(s, id);
    gp_u64map_del(&s->ctxs, id, NULL);
    gp_u64map_del(&s->owned, id, NULL);
    return CUDA_SUCCESS;
}

/* Ops from here on start with u64 ctx, which the dispatcher has read and made current. */

static uint32_t op_ctx_sync(session *s, gp_rbuf *r, gp_wbuf *o)
{
    DECODED(s, r);
    return s->cu.cuCtxSynchronize();
}

static uint32_t op_ctx_set_limit(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t limit = gp_r_u32(r);
    uint64_t value = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    return s->cu.cuCtxSetLimit((CUlimit)limit, (size_t)value);
}

static uint32_t op_ctx_get_limit(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t limit = gp_r_u32(r);
    DECODED(s, r);
    size_t v = 0;
    CHECK(s->cu.cuCtxGetLimit(&v, (CUlimit)limit));
    gp_w_u64(o, v);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_alloc(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t size = gp_r_u64(r);
    DECODED(s, r);
    CUdeviceptr p = 0;
    CHECK(s->cu.cuMemAlloc_v2(&p, (size_t)size));
    gp_w_u64(o, p);
    return CUDA_SUCCESS;
}

/* Mirrored memory starts zeroed on both ends: the client's copy is fresh anonymous memory, and the two copies
 * must agree before the first push (docs/protocol.md). */
static uint32_t op_mem_alloc_managed(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t size = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    CUdeviceptr p = 0;
    CHECK(s->cu.cuMemAllocManaged(&p, (size_t)size, flags));
    uint32_t rc = s->cu.cuMemsetD8_v2(p, 0, (size_t)size);
    if (rc != CUDA_SUCCESS) {
        s->cu.cuMemFree_v2(p);
        return rc;
    }
    gp_w_u64(o, p);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_host_alloc(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t size = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    void *h = NULL;
    CUdeviceptr p = 0;
    CHECK(s->cu.cuMemHostAlloc(&h, (size_t)size, flags | CU_MEMHOSTALLOC_DEVICEMAP));
    uint32_t rc = s->cu.cuMemHostGetDevicePointer_v2(&p, h, 0);
    if (rc == CUDA_SUCCESS &&
        (gp_u64map_put(&s->hostmem, p, h2u(h)) != 0 || gp_u64map_put(&s->hostmem_ctx, p, s->cur_ctx) != 0))
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc != CUDA_SUCCESS) {
        s->cu.cuMemFreeHost(h);
        return rc;
    }
    memset(h, 0, (size_t)size);
    gp_w_u64(o, p);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_host_free(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r);
    DECODED(s, r);
    uint64_t h;
    if (!gp_u64map_get(&s->hostmem, p, &h))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuMemFreeHost(u2h(h)));
    gp_u64map_del(&s->hostmem, p, NULL);
    gp_u64map_del(&s->hostmem_ctx, p, NULL);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_free(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r);
    DECODED(s, r);
    return s->cu.cuMemFree_v2(p);
}

static uint32_t op_mem_info(session *s, gp_rbuf *r, gp_wbuf *o)
{
    DECODED(s, r);
    size_t free_b = 0, total = 0;
    CHECK(s->cu.cuMemGetInfo_v2(&free_b, &total));
    gp_w_u64(o, free_b);
    gp_w_u64(o, total);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_alloc_pitch(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t width = gp_r_u64(r), height = gp_r_u64(r);
    uint32_t elem = gp_r_u32(r);
    DECODED(s, r);
    CUdeviceptr p = 0;
    size_t pitch = 0;
    CHECK(s->cu.cuMemAllocPitch_v2(&p, &pitch, (size_t)width, (size_t)height, elem));
    gp_w_u64(o, p);
    gp_w_u64(o, pitch);
    return CUDA_SUCCESS;
}

static uint32_t op_mem_range(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r);
    DECODED(s, r);
    CUdeviceptr base = 0;
    size_t size = 0;
    CHECK(s->cu.cuMemGetAddressRange_v2(&base, &size, p));
    gp_w_u64(o, base);
    gp_w_u64(o, size);
    return CUDA_SUCCESS;
}

/* A piece received into a bulk buffer is copied asynchronously on its stream (the legacy one for a
 * synchronous copy) while the next piece arrives. Otherwise the data lies in the frame buffer, which the next
 * frame reuses: the copy is waited for here. Stream order holds either way, since a session issues its calls
 * one at a time. */
static uint32_t op_htod(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), dst = gp_r_u64(r);
    (void)gp_r_u32(r); /* last: only the client's business (it waits for the last piece's reply) */
    size_t n;
    const void *data = gp_r_blob(r, &n);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    if (n == 0)
        return CUDA_SUCCESS;
    if (s->in_bulk) {
        CHECK(s->cu.cuMemcpyHtoDAsync_v2(dst, data, n, st));
        /* Even the replied last piece of a synchronous copy does not wait for the copy itself: the caller's
         * buffer was consumed when its data arrived here, which is when NVIDIA's driver lets a synchronous
         * copy from pageable memory return ("the DMA to final destination may not have completed"); the copy
         * is ordered on its stream before everything issued after it, and a failure surfaces at the next
         * synchronizing call. */
        return bulk_mark(s, s->in_bulk, st);
    }
    if (n >= BULK_MIN)
        bulk_alloc(s); /* for the pieces that follow */
    if (!st)
        return s->cu.cuMemcpyHtoD_v2(dst, data, n);
    CHECK(s->cu.cuMemcpyHtoDAsync_v2(dst, data, n, st));
    return s->cu.cuStreamSynchronize(st);
}

/* A chunk of BULK_MIN to BULK_CAP is copied into a bulk buffer and its reply deferred: sent once BULK_AHEAD
 * later requests (a pipelined copy's next chunks, whose copies then overlap the sending) have been issued, or
 * before anything else runs, or when no request is waiting. */
static uint32_t op_dtoh(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), src = gp_r_u64(r), size = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    if (size > GP_WIRE_CHUNK)
        return CUDA_ERROR_INVALID_VALUE;
    if (size >= BULK_MIN && size <= BULK_CAP && !(s->flags & GP_WIRE_F_ASYNC)) {
        bulk_alloc(s);
        if (s->bulked) {
            bulk_buf *g = bulk_take(s);
            if (!g)
                return CUDA_ERROR_LAUNCH_FAILED; /* the connection is gone; the loop notices */
            CHECK(s->cu.cuMemcpyDtoHAsync_v2(g->buf, src, (size_t)size, st));
            CHECK(bulk_mark(s, g, st));
            g->reply = true;
            g->req = s->req;
            g->size = (uint32_t)size;
            s->ndeferred++;
            bulk_replies(s, true); /* the earlier chunks go out while the later ones copy */
            return DEFERRED;
        }
    }
    gp_w_u32(o, (uint32_t)size);
    uint8_t *dst = gp_w_reserve(o, (size_t)size);
    if (!dst && size)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (size == 0)
        return CUDA_SUCCESS;
    if (!st)
        return s->cu.cuMemcpyDtoH_v2(dst, src, (size_t)size);
    CHECK(s->cu.cuMemcpyDtoHAsync_v2(dst, src, (size_t)size, st));
    return s->cu.cuStreamSynchronize(st);
}

static uint32_t op_dtod(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), dst = gp_r_u64(r), src = gp_r_u64(r), size = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    if (!st)
        return s->cu.cuMemcpyDtoD_v2(dst, src, (size_t)size);
    return s->cu.cuMemcpyDtoDAsync_v2(dst, src, (size_t)size, st);
}

/* 1D (height 1) or 2D, 8/16/32-bit, on the NULL stream (synchronous) or a stream. */
static uint32_t op_memset(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), dst = gp_r_u64(r);
    uint32_t v = gp_r_u32(r), elem = gp_r_u32(r);
    uint64_t pitch = gp_r_u64(r), w64 = gp_r_u64(r), h64 = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    size_t w = (size_t)w64, h = (size_t)h64, p = (size_t)pitch;
    cu_api *cu = &s->cu;
    switch (elem) {
    case 1:
        if (h == 1)
            return st ? cu->cuMemsetD8Async(dst, (unsigned char)v, w, st)
                      : cu->cuMemsetD8_v2(dst, (unsigned char)v, w);
        return st ? cu->cuMemsetD2D8Async(dst, p, (unsigned char)v, w, h, st)
                  : cu->cuMemsetD2D8_v2(dst, p, (unsigned char)v, w, h);
    case 2:
        if (h == 1)
            return st ? cu->cuMemsetD16Async(dst, (unsigned short)v, w, st)
                      : cu->cuMemsetD16_v2(dst, (unsigned short)v, w);
        return st ? cu->cuMemsetD2D16Async(dst, p, (unsigned short)v, w, h, st)
                  : cu->cuMemsetD2D16_v2(dst, p, (unsigned short)v, w, h);
    case 4:
        if (h == 1)
            return st ? cu->cuMemsetD32Async(dst, v, w, st) : cu->cuMemsetD32_v2(dst, v, w);
        return st ? cu->cuMemsetD2D32Async(dst, p, v, w, h, st) : cu->cuMemsetD2D32_v2(dst, p, v, w, h);
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

/* Device to device, 2D (depth 1) or 3D; the client folded the offsets into the pointers. */
static uint32_t op_memcpy_3d(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), v[9];
    for (int i = 0; i < 9; i++)
        v[i] = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    if (v[8] == 1) {
        CUDA_MEMCPY2D c = {.srcMemoryType = CU_MEMORYTYPE_DEVICE,
                           .srcDevice = v[3],
                           .srcPitch = (size_t)v[4],
                           .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                           .dstDevice = v[0],
                           .dstPitch = (size_t)v[1],
                           .WidthInBytes = (size_t)v[6],
                           .Height = (size_t)v[7]};
        return st ? s->cu.cuMemcpy2DAsync_v2(&c, st) : s->cu.cuMemcpy2D_v2(&c);
    }
    CUDA_MEMCPY3D c = {.srcMemoryType = CU_MEMORYTYPE_DEVICE,
                       .srcDevice = v[3],
                       .srcPitch = (size_t)v[4],
                       .srcHeight = (size_t)v[5],
                       .dstMemoryType = CU_MEMORYTYPE_DEVICE,
                       .dstDevice = v[0],
                       .dstPitch = (size_t)v[1],
                       .dstHeight = (size_t)v[2],
                       .WidthInBytes = (size_t)v[6],
                       .Height = (size_t)v[7],
                       .Depth = (size_t)v[8]};
    return st ? s->cu.cuMemcpy3DAsync_v2(&c, st) : s->cu.cuMemcpy3D_v2(&c);
}

static uint32_t op_stream_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    int prio = (int)gp_r_u32(r);
    DECODED(s, r);
    void *old;
    CUstream st;
    if (!id_ok(id) || map_get(&s->streams, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuStreamCreateWithPriority(&st, flags, prio));
    if (map_new(&s->streams, id, st) != CUDA_SUCCESS || gp_u64map_put(&s->stream_ctx, id, s->cur_ctx) < 0) {
        s->cu.cuStreamDestroy_v2(st);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_stream_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    void *st;
    if (!map_get(&s->streams, id, &st))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuStreamDestroy_v2(st));
    gp_u64map_del(&s->streams, id, NULL);
    gp_u64map_del(&s->stream_ctx, id, NULL);
    return CUDA_SUCCESS;
}

static uint32_t op_stream_sync(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, id, &st));
    return s->cu.cuStreamSynchronize(st);
}

static uint32_t op_stream_query(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CHECK(stream_of(s, id, &st));
    return s->cu.cuStreamQuery(st);
}

static uint32_t op_stream_wait_event(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), eid = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    CUstream st;
    CUevent ev;
    CHECK(stream_of(s, sid, &st));
    CHECK(event_of(s, eid, &ev));
    return s->cu.cuStreamWaitEvent(st, ev, flags);
}

static uint32_t op_event_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    void *old;
    CUevent ev;
    if (!id_ok(id) || map_get(&s->events, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuEventCreate(&ev, flags));
    if (map_new(&s->events, id, ev) != CUDA_SUCCESS || gp_u64map_put(&s->event_ctx, id, s->cur_ctx) < 0) {
        s->cu.cuEventDestroy_v2(ev);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_event_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUevent ev;
    CHECK(event_of(s, id, &ev));
    CHECK(s->cu.cuEventDestroy_v2(ev));
    gp_u64map_del(&s->events, id, NULL);
    gp_u64map_del(&s->event_ctx, id, NULL);
    return CUDA_SUCCESS;
}

static uint32_t op_event_record(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t eid = gp_r_u64(r), sid = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CUevent ev;
    CHECK(event_of(s, eid, &ev));
    CHECK(stream_of(s, sid, &st));
    return s->cu.cuEventRecord(ev, st);
}

static uint32_t op_event_sync(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUevent ev;
    CHECK(event_of(s, id, &ev));
    return s->cu.cuEventSynchronize(ev);
}

static uint32_t op_event_query(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUevent ev;
    CHECK(event_of(s, id, &ev));
    return s->cu.cuEventQuery(ev);
}

static uint32_t op_event_elapsed(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t a = gp_r_u64(r), b = gp_r_u64(r);
    DECODED(s, r);
    CUevent ea, eb;
    float ms = 0;
    CHECK(event_of(s, a, &ea));
    CHECK(event_of(s, b, &eb));
    CHECK(s->cu.cuEventElapsedTime_v2(&ms, ea, eb));
    gp_w_f32(o, ms);
    return CUDA_SUCCESS;
}

/* ---- the module cache: images named by the hex SHA-256 of their bytes, written whole then renamed ---- */

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32); /* matches no real digest: the image is refused */
}

static void cache_path(const session *s, const unsigned char sha[32], char *out, size_t len)
{
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha[i]);
    snprintf(out, len, "%s/%s", s->cache_dir, hex);
}

static void cache_store(const session *s, const unsigned char sha[32], const void *img, size_t n)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    cache_path(s, sha, path, sizeof path);
    if (access(path, F_OK) == 0)
        return;
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const uint8_t *p = img;
    size_t left = n;
    while (fd >= 0 && left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
    if (fd < 0 || left > 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        gp_log(GP_LOG_WARN, COMPONENT, "cannot store a module in the cache %s: %s (the session goes on)",
               s->cache_dir, strerror(errno));
        unlink(tmp);
    }
}

/* The cached image with a NUL after it (PTX is text), verified against its name; NULL when absent or bad. */
static unsigned char *cache_load(const session *s, const unsigned char sha[32], size_t *n)
{
    char path[PATH_MAX];
    cache_path(s, sha, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return NULL;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size < SIZE_MAX - 1)
        buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t rd = read(fd, buf + got, (size_t)st.st_size - got);
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd <= 0)
            break;
        got += (size_t)rd;
    }
    close(fd);
    unsigned char d[32];
    if (buf)
        sha256(buf, got, d);
    if (!buf || got != (size_t)st.st_size || CRYPTO_memcmp(d, sha, 32) != 0) {
        gp_log(GP_LOG_WARN, COMPONENT,
               "module cache file %s is unreadable or does not match its name; removing it", path);
        unlink(path);
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *n = got;
    utimensat(AT_FDCWD, path, NULL, 0); /* used now: the cache's pruning keeps what is used */
    return buf;
}

static uint32_t op_module_have(session *s, gp_rbuf *r, gp_wbuf *o)
{
    size_t n;
    const void *sha = gp_r_blob(r, &n);
    DECODED(s, r);
    if (n != 32)
        return CUDA_ERROR_INVALID_VALUE;
    char path[PATH_MAX];
    cache_path(s, sha, path, sizeof path);
    gp_w_u32(o, access(path, R_OK) == 0);
    return CUDA_SUCCESS;
}

static uint32_t op_module_load(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    size_t nsha, nimg;
    const unsigned char *sha = gp_r_blob(r, &nsha);
    const void *img = gp_r_blob(r, &nimg);
    DECODED(s, r);
    void *old;
    if (nsha != 32 || !id_ok(id) || map_get(&s->modules, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    unsigned char *buf;
    if (nimg > 0) {
        unsigned char d[32];
        sha256(img, nimg, d);
        if (CRYPTO_memcmp(d, sha, 32) != 0) {
            gp_log(GP_LOG_WARN, COMPONENT,
                   "session %016llx: a module image does not match its SHA-256; refused",
                   (unsigned long long)s->id);
            return CUDA_ERROR_INVALID_VALUE;
        }
        cache_store(s, sha, img, nimg);
        if (!(buf = malloc(nimg + 1)))
            return CUDA_ERROR_OUT_OF_MEMORY;
        memcpy(buf, img, nimg);
        buf[nimg] = '\0';
    } else if (!(buf = cache_load(s, sha, &nimg))) {
        return CUDA_ERROR_NOT_FOUND;
    }
    CUmodule m;
    uint32_t rc = s->cu.cuModuleLoadData(&m, buf);
    free(buf);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (map_new(&s->modules, id, m) != CUDA_SUCCESS || gp_u64map_put(&s->module_ctx, id, s->cur_ctx) < 0) {
        s->cu.cuModuleUnload(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static void func_forget(session *s, uint64_t id)
{
    uint64_t v;
    if (id_ok(id) && gp_u64map_del(&s->funcs, id, &v))
        free(u2h(v));
}

/* The functions of module mid (deleting leaves a tombstone: the walk goes on safely). */
static void module_funcs_forget(session *s, uint64_t mid)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->funcs, &i, &k, &v);)
        if (((func_rec *)u2h(v))->module == mid)
            func_forget(s, k);
}

static uint32_t op_module_unload(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    void *m;
    if (!map_get(&s->modules, id, &m))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuModuleUnload(m));
    gp_u64map_del(&s->modules, id, NULL);
    gp_u64map_del(&s->module_ctx, id, NULL);
    module_funcs_forget(s, id);
    return CUDA_SUCCESS;
}

static uint32_t op_module_func(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t mid = gp_r_u64(r), id = gp_r_u64(r);
    char name[GP_WIRE_MAX_STR + 1];
    gp_r_str(r, name, sizeof name);
    DECODED(s, r);
    void *m, *old;
    if (!map_get(&s->modules, mid, &m))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!id_ok(id) || map_get(&s->funcs, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    if (!s->cu.cuFuncGetParamInfo) {
        gp_log_once(GP_LOG_WARN, COMPONENT,
                    "the driver has no cuFuncGetParamInfo (CUDA 12.4+): cannot launch");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    func_rec *f = calloc(1, sizeof *f);
    if (!f)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint32_t rc = s->cu.cuModuleGetFunction(&f->f, m, name);
    for (uint32_t i = 0; rc == CUDA_SUCCESS && i < GP_WIRE_MAX_PARAMS; i++) {
        size_t off = 0, size = 0;
        uint32_t q = s->cu.cuFuncGetParamInfo(f->f, i, &off, &size);
        if (q == CUDA_ERROR_INVALID_VALUE)
            break; /* past the last parameter */
        if (q != CUDA_SUCCESS || off + size > MAX_PARAM_BYTES)
            rc = q ? q : CUDA_ERROR_INVALID_VALUE;
        f->off[i] = (uint32_t)off;
        f->size[i] = (uint32_t)size;
        f->n = i + 1;
    }
    f->module = mid;
    if (rc == CUDA_SUCCESS && gp_u64map_put(&s->funcs, id, h2u(f)) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc != CUDA_SUCCESS) {
        free(f);
        return rc;
    }
    gp_w_u32(o, f->n);
    for (uint32_t i = 0; i < f->n; i++) {
        gp_w_u32(o, f->off[i]);
        gp_w_u32(o, f->size[i]);
    }
    return CUDA_SUCCESS;
}

static uint32_t op_module_global(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t mid = gp_r_u64(r);
    char name[GP_WIRE_MAX_STR + 1];
    gp_r_str(r, name, sizeof name);
    DECODED(s, r);
    void *m;
    CUdeviceptr p = 0;
    size_t size = 0;
    if (!map_get(&s->modules, mid, &m))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuModuleGetGlobal_v2(&p, &size, m, name));
    gp_w_u64(o, p);
    gp_w_u64(o, size);
    return CUDA_SUCCESS;
}

static uint32_t op_func_attr(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t attrib = gp_r_u32(r);
    DECODED(s, r);
    void *f;
    int v = 0;
    if (!map_get(&s->funcs, id, &f))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuFuncGetAttribute(&v, (CUfunction_attribute)attrib, ((func_rec *)f)->f));
    gp_w_u32(o, (uint32_t)v);
    return CUDA_SUCCESS;
}

/* kernelParams point into a copy of the parameter blob (aligned, and kept apart from the frame buffer), one
 * pointer per parameter at the offset MODULE_FUNC reported. */
static uint32_t op_launch(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t g[3], b[3];
    for (int i = 0; i < 3; i++)
        g[i] = gp_r_u32(r);
    for (int i = 0; i < 3; i++)
        b[i] = gp_r_u32(r);
    uint32_t shmem = gp_r_u32(r);
    uint64_t sid = gp_r_u64(r);
    size_t n;
    const void *params = gp_r_blob(r, &n);
    DECODED(s, r);
    void *fv;
    CUstream st;
    if (!map_get(&s->funcs, id, &fv))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(stream_of(s, sid, &st));
    func_rec *f = fv;
    if (n > sizeof s->params)
        return CUDA_ERROR_INVALID_VALUE;
    if (n)
        memcpy(s->params, params, n);
    for (uint32_t i = 0; i < f->n; i++) {
        if ((size_t)f->off[i] + f->size[i] > n)
            return CUDA_ERROR_INVALID_VALUE;
        s->args[i] = s->params + f->off[i];
    }
    return s->cu.cuLaunchKernel(f->f, g[0], g[1], g[2], b[0], b[1], b[2], shmem, st, f->n ? s->args : NULL,
                                NULL);
}

static uint32_t op_launch_coop(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t g[3], b[3];
    for (int i = 0; i < 3; i++)
        g[i] = gp_r_u32(r);
    for (int i = 0; i < 3; i++)
        b[i] = gp_r_u32(r);
    uint32_t shmem = gp_r_u32(r);
    uint64_t sid = gp_r_u64(r);
    size_t n;
    const void *params = gp_r_blob(r, &n);
    DECODED(s, r);
    (void)o;
    void *fv;
    CUstream st;
    if (!map_get(&s->funcs, id, &fv))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(stream_of(s, sid, &st));
    func_rec *f = fv;
    if (n > sizeof s->params)
        return CUDA_ERROR_INVALID_VALUE;
    if (n)
        memcpy(s->params, params, n);
    for (uint32_t i = 0; i < f->n; i++) {
        if ((size_t)f->off[i] + f->size[i] > n)
            return CUDA_ERROR_INVALID_VALUE;
        s->args[i] = s->params + f->off[i];
    }
    return s->cu.cuLaunchCooperativeKernel(f->f, g[0], g[1], g[2], b[0], b[1], b[2], shmem, st,
                                           f->n ? s->args : NULL);
}

static uint32_t op_module_func_count(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t mid = gp_r_u64(r);
    DECODED(s, r);
    void *m;
    unsigned n = 0;
    if (!map_get(&s->modules, mid, &m))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuModuleGetFunctionCount(&n, m));
    gp_w_u32(o, n);
    return CUDA_SUCCESS;
}

static uint32_t op_occupancy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t block = gp_r_u32(r);
    uint64_t smem = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    void *fv;
    int n = 0;
    if (!map_get(&s->funcs, id, &fv))
        return CUDA_ERROR_INVALID_HANDLE;
    CUfunction f = ((func_rec *)fv)->f;
    if (flags == 0)
        CHECK(s->cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, f, (int)block, (size_t)smem));
    else if (s->cu.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags)
        CHECK(s->cu.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(&n, f, (int)block, (size_t)smem,
                                                                         flags));
    else
        return CUDA_ERROR_NOT_SUPPORTED;
    gp_w_u32(o, (uint32_t)n);
    return CUDA_SUCCESS;
}

/* ---- memory pools and stream-ordered allocation ----------------------------------------------------- */

static uint32_t pool_of(session *s, uint64_t id, CUmemoryPool *pool)
{
    void *h;
    if (!map_get(&s->pools, id, &h))
        return CUDA_ERROR_INVALID_VALUE; /* as the driver answers a pool that is not one */
    *pool = h;
    return CUDA_SUCCESS;
}

/* The client's id of a pool the session knows: 0 when none names it. */
static uint64_t pool_id(const session *s, CUmemoryPool pool)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->pools, &i, &k, &v);)
        if (v == h2u(pool))
            return k;
    return 0;
}

/* Names dev's default pool default_id unless it has an id already (the reply says which); 0 offers none. An
 * id that names another pool is refused. */
static uint32_t pool_name_default(session *s, CUdevice dev, uint64_t default_id)
{
    if (default_id == 0)
        return CUDA_SUCCESS;
    CUmemoryPool def;
    CHECK(s->cu.cuDeviceGetDefaultMemPool(&def, dev));
    return pool_id(s, def) != 0 ? CUDA_SUCCESS : map_new(&s->pools, default_id, def);
}

/* The pool's id for the reply. Every pool that can be current was named (created here, or a default pool
 * named on the way), so a pool without one is a worker bug, said as such. */
static uint32_t pool_reply_id(session *s, CUmemoryPool pool, gp_wbuf *o)
{
    uint64_t id = pool_id(s, pool);
    if (id == 0) {
        gp_log(GP_LOG_WARN, COMPONENT,
               "session %016llx: the driver names a memory pool the session never saw",
               (unsigned long long)s->id);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    gp_w_u64(o, id);
    return CUDA_SUCCESS;
}

static uint32_t op_pool_device(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r), current = gp_r_u32(r);
    uint64_t default_id = gp_r_u64(r);
    DECODED(s, r);
    CUdevice dev;
    CUmemoryPool pool;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(pool_name_default(s, dev, default_id));
    if (current)
        CHECK(s->cu.cuDeviceGetMemPool(&pool, dev));
    else
        CHECK(s->cu.cuDeviceGetDefaultMemPool(&pool, dev));
    return pool_reply_id(s, pool, o);
}

static uint32_t op_pool_set_current(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t ordinal = gp_r_u32(r);
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUdevice dev;
    CUmemoryPool pool;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(pool_of(s, id, &pool));
    return s->cu.cuDeviceSetMemPool(dev, pool);
}

static uint32_t op_pool_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    CUmemPoolProps p;
    memset(&p, 0, sizeof p);
    p.allocType = (CUmemAllocationType)gp_r_u32(r);
    p.handleTypes = (CUmemAllocationHandleType)gp_r_u32(r);
    p.location.type = (CUmemLocationType)gp_r_u32(r);
    p.location.id = (int)gp_r_u32(r);
    p.maxSize = (size_t)gp_r_u64(r);
    p.usage = (unsigned short)gp_r_u32(r);
    DECODED(s, r);
    (void)o;
    void *old;
    CUmemoryPool pool;
    if (!id_ok(id) || map_get(&s->pools, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuMemPoolCreate(&pool, &p));
    if (map_new(&s->pools, id, pool) != CUDA_SUCCESS || map_new(&s->made_pools, id, pool) != CUDA_SUCCESS) {
        gp_u64map_del(&s->pools, id, NULL);
        s->cu.cuMemPoolDestroy(pool);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_pool_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUmemoryPool pool;
    CHECK(pool_of(s, id, &pool));
    CHECK(s->cu.cuMemPoolDestroy(pool)); /* a default pool is refused here, by the driver */
    gp_u64map_del(&s->pools, id, NULL);
    gp_u64map_del(&s->made_pools, id, NULL);
    return CUDA_SUCCESS;
}

/* The REUSE_* attributes are ints, the others cuuint64_t. */
static bool pool_attr_is_int(uint32_t attr)
{
    return attr == CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES ||
           attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC ||
           attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES;
}

static uint32_t op_pool_set_attr(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t attr = gp_r_u32(r);
    uint64_t value = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUmemoryPool pool;
    CHECK(pool_of(s, id, &pool));
    int iv = value != 0;
    cuuint64_t v64 = value;
    return s->cu.cuMemPoolSetAttribute(pool, (CUmemPool_attribute)attr,
                                       pool_attr_is_int(attr) ? (void *)&iv : (void *)&v64);
}

static uint32_t op_pool_get_attr(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t attr = gp_r_u32(r);
    DECODED(s, r);
    CUmemoryPool pool;
    CHECK(pool_of(s, id, &pool));
    int iv = 0;
    cuuint64_t v64 = 0;
    bool is_int = pool_attr_is_int(attr);
    CHECK(s->cu.cuMemPoolGetAttribute(pool, (CUmemPool_attribute)attr, is_int ? (void *)&iv : (void *)&v64));
    gp_w_u64(o, is_int ? (uint64_t)(iv != 0) : v64);
    return CUDA_SUCCESS;
}

static uint32_t op_pool_trim(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r), keep = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUmemoryPool pool;
    CHECK(pool_of(s, id, &pool));
    return s->cu.cuMemPoolTrimTo(pool, (size_t)keep);
}

/* The stream's context is current (the client sends it as ctx): its device's current pool serves pool 0. */
static uint32_t op_mem_alloc_async(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), id = gp_r_u64(r), size = gp_r_u64(r), default_id = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CUmemoryPool pool = NULL;
    CUdeviceptr p = 0;
    CHECK(stream_of(s, sid, &st));
    if (id != 0) {
        CHECK(pool_of(s, id, &pool));
        CHECK(s->cu.cuMemAllocFromPoolAsync(&p, (size_t)size, pool, st));
    } else {
        CUdevice dev;
        CHECK(s->cu.cuCtxGetDevice(&dev));
        CHECK(pool_name_default(s, dev, default_id));
        CHECK(s->cu.cuDeviceGetMemPool(&pool, dev));
        CHECK(s->cu.cuMemAllocAsync(&p, (size_t)size, st));
    }
    gp_w_u64(o, p);
    uint32_t rc = pool_reply_id(s, pool, o);
    if (rc != CUDA_SUCCESS)
        s->cu.cuMemFreeAsync(p, st);
    return rc;
}

static uint32_t op_mem_free_async(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), p = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    return s->cu.cuMemFreeAsync(p, st);
}

/* ---- virtual memory management --------------------------------------------------------------------- */

/* A CUmemAllocationProp, field by field (wire.h's "prop"). */
static void prop_read(gp_rbuf *r, CUmemAllocationProp *p)
{
    memset(p, 0, sizeof *p);
    p->type = (CUmemAllocationType)gp_r_u32(r);
    p->requestedHandleTypes = (CUmemAllocationHandleType)gp_r_u32(r);
    p->location.type = (CUmemLocationType)gp_r_u32(r);
    p->location.id = (int)gp_r_u32(r);
    p->allocFlags.compressionType = (unsigned char)gp_r_u32(r);
    p->allocFlags.gpuDirectRDMACapable = (unsigned char)gp_r_u32(r);
    p->allocFlags.usage = (unsigned short)gp_r_u32(r);
}

static void prop_write(gp_wbuf *o, const CUmemAllocationProp *p)
{
    gp_w_u32(o, (uint32_t)p->type);
    gp_w_u32(o, (uint32_t)p->requestedHandleTypes);
    gp_w_u32(o, (uint32_t)p->location.type);
    gp_w_u32(o, (uint32_t)p->location.id);
    gp_w_u32(o, p->allocFlags.compressionType);
    gp_w_u32(o, p->allocFlags.gpuDirectRDMACapable);
    gp_w_u32(o, p->allocFlags.usage);
}

static uint32_t vmm_of(session *s, uint64_t id, CUmemGenericAllocationHandle *h)
{
    uint64_t v;
    if (!id_ok(id) || !gp_u64map_get(&s->vmm, id, &v))
        return CUDA_ERROR_INVALID_VALUE; /* as the driver answers a handle that is not one */
    *h = v;
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_granularity(session *s, gp_rbuf *r, gp_wbuf *o)
{
    CUmemAllocationProp p;
    prop_read(r, &p);
    uint32_t option = gp_r_u32(r);
    DECODED(s, r);
    size_t g = 0;
    CHECK(s->cu.cuMemGetAllocationGranularity(&g, &p, (CUmemAllocationGranularity_flags)option));
    gp_w_u64(o, g);
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r), size = gp_r_u64(r), flags = gp_r_u64(r);
    CUmemAllocationProp p;
    prop_read(r, &p);
    DECODED(s, r);
    (void)o;
    uint64_t old;
    CUmemGenericAllocationHandle h;
    if (!id_ok(id) || gp_u64map_get(&s->vmm, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuMemCreate(&h, (size_t)size, &p, flags));
    if (gp_u64map_put(&s->vmm, id, h) < 0) {
        s->cu.cuMemRelease(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_release(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUmemGenericAllocationHandle h;
    CHECK(vmm_of(s, id, &h));
    CHECK(s->cu.cuMemRelease(h)); /* its mappings keep the memory until they go */
    gp_u64map_del(&s->vmm, id, NULL);
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_reserve(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t size = gp_r_u64(r), align = gp_r_u64(r), addr = gp_r_u64(r), flags = gp_r_u64(r);
    DECODED(s, r);
    CUdeviceptr p = 0;
    CHECK(s->cu.cuMemAddressReserve(&p, (size_t)size, (size_t)align, addr, flags));
    if (!id_ok(p) || gp_u64map_put(&s->reserved, p, size) < 0) {
        s->cu.cuMemAddressFree(p, (size_t)size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_w_u64(o, p);
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_address_free(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r), size = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CHECK(s->cu.cuMemAddressFree(p, (size_t)size));
    if (id_ok(p))
        gp_u64map_del(&s->reserved, p, NULL);
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_map(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r), size = gp_r_u64(r), offset = gp_r_u64(r), id = gp_r_u64(r), flags = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUmemGenericAllocationHandle h;
    CHECK(vmm_of(s, id, &h));
    CHECK(s->cu.cuMemMap(p, (size_t)size, (size_t)offset, h, flags));
    if (!id_ok(p) || gp_u64map_put(&s->mapped, p, size) < 0) {
        s->cu.cuMemUnmap(p, (size_t)size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

/* One cuMemUnmap may take several whole mappings: every one starting inside the range is gone after it. */
static uint32_t op_vmm_unmap(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r), size = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CHECK(s->cu.cuMemUnmap(p, (size_t)size));
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->mapped, &i, &k, &v);)
        if (k >= p && k - p < size)
            gp_u64map_del(&s->mapped, k, NULL); /* deleting leaves a tombstone: the iteration goes on */
    return CUDA_SUCCESS;
}

#define MAX_ACCESS_DESCS 64

static uint32_t op_vmm_set_access(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t p = gp_r_u64(r), size = gp_r_u64(r);
    size_t n;
    const void *blob = gp_r_blob(r, &n);
    DECODED(s, r);
    (void)o;
    if (n == 0 || n % 12 != 0 || n / 12 > MAX_ACCESS_DESCS) {
        snprintf(s->why, sizeof s->why, "access descriptors of %zu bytes (1 to %d of 12 bytes each)", n,
                 MAX_ACCESS_DESCS);
        return GP_WIRE_E_MALFORMED;
    }
    CUmemAccessDesc d[MAX_ACCESS_DESCS];
    gp_rbuf b;
    gp_rbuf_init(&b, blob, n);
    for (size_t i = 0; i < n / 12; i++) {
        d[i].location.type = (CUmemLocationType)gp_r_u32(&b);
        d[i].location.id = (int)gp_r_u32(&b);
        d[i].flags = (CUmemAccess_flags)gp_r_u32(&b);
    }
    return s->cu.cuMemSetAccess(p, (size_t)size, d, n / 12);
}

static uint32_t op_vmm_get_access(session *s, gp_rbuf *r, gp_wbuf *o)
{
    CUmemLocation loc;
    loc.type = (CUmemLocationType)gp_r_u32(r);
    loc.id = (int)gp_r_u32(r);
    uint64_t p = gp_r_u64(r);
    DECODED(s, r);
    unsigned long long flags = 0;
    CHECK(s->cu.cuMemGetAccess(&flags, &loc, p));
    gp_w_u64(o, flags);
    return CUDA_SUCCESS;
}

static uint32_t op_vmm_props(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    CUmemGenericAllocationHandle h;
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    CHECK(vmm_of(s, id, &h));
    CHECK(s->cu.cuMemGetAllocationPropertiesFromHandle(&p, h));
    prop_write(o, &p);
    return CUDA_SUCCESS;
}

/* Queued on the stream with cuStreamAddCallback, which passes the stream's status on to CALLBACK. */
static uint32_t op_host_func(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    hostcb *c = calloc(1, sizeof *c);
    if (c == NULL || !reader_start(s)) {
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    c->id = id;
    pthread_mutex_lock(&g_rx.mu);
    c->next = g_rx.cbs;
    g_rx.cbs = c;
    pthread_mutex_unlock(&g_rx.mu);
    uint32_t rc = s->cu.cuStreamAddCallback(st, host_cb, c, 0);
    if (rc != CUDA_SUCCESS) {
        pthread_mutex_lock(&g_rx.mu);
        for (hostcb **pp = &g_rx.cbs; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        pthread_mutex_unlock(&g_rx.mu);
        free(c);
    }
    return rc;
}

/* Normally taken by the reader thread; here only when one arrives before any HOST_FUNC (nothing waits). */
static uint32_t op_callback_done(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    pthread_mutex_lock(&g_rx.mu);
    callback_done_locked(id);
    pthread_mutex_unlock(&g_rx.mu);
    return CUDA_SUCCESS;
}

/* ---- the session registry ----------------------------------------------------------------------------
 *
 * NVML on the GPU host lists the session processes; their pids mean nothing on the client's host. Each
 * session writes, at CLIENT_ID, a file named by its own pid in <cache dir>/sessions: "START CLIENT_PID
 * PID_SPACE", START being the session process's start time (field 22 of /proc/PID/stat), so that a stale file
 * (a session killed before it could remove it, its pid reused) is told apart from a live one. The session
 * removes it when it ends, and the main process when it reaps the session (a killed one too). The folder is
 * host-wide: every worker with that cache folder shares it, as they share the GPUs whose processes it
 * names. */

#define SESSIONS_DIR                                                                      \
    "sessions" /* under the cache folder (module images there are named by 64 hex digits) \
                */

static void registry_path(const char *cache_dir, long pid, char *out, size_t len)
{
    snprintf(out, len, "%s/" SESSIONS_DIR "/%ld", cache_dir, pid);
}

/* The start time of a process (clock ticks since boot); 0 when it is gone. */
static unsigned long long proc_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return 0;
    p++;                                          /* the space before field 3 */
    for (int field = 3; field < 22 && p; field++) /* then before field + 1 */
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void registry_add(session *s, uint32_t client_pid)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8], line[256];
    long self = (long)getpid();
    registry_path(s->cache_dir, self, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(line, sizeof line, "%llu %u %s\n", proc_start(self), client_pid, s->space);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, line, (size_t)n) == n;
    if (fd >= 0 && close(fd) < 0)
        ok = false;
    if (!ok || rename(tmp, path) < 0) {
        gp_log(GP_LOG_WARN, COMPONENT,
               "session %016llx: cannot register in %s: %s (NVML on its client will not list this process)",
               (unsigned long long)s->id, path, strerror(errno));
        unlink(tmp);
        return;
    }
    s->registered = true;
}

static void registry_del(const char *cache_dir, long pid)
{
    char path[PATH_MAX];
    registry_path(cache_dir, pid, path, sizeof path);
    unlink(path);
}

/* The client pid of the session that is process pid, if it is one and its client shares the pid space. */
static bool registry_client_pid(const session *s, unsigned pid, unsigned *client_pid)
{
    if (!s->space[0])
        return false;
    char path[PATH_MAX], line[256], space[160];
    registry_path(s->cache_dir, (long)pid, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n <= 0)
        return false;
    line[n] = '\0';
    unsigned long long start;
    unsigned cpid;
    if (sscanf(line, "%llu %u %159s", &start, &cpid, space) != 3)
        return false;
    if (start == 0 || start != proc_start((long)pid) || strcmp(space, s->space) != 0)
        return false;
    *client_pid = cpid;
    return true;
}

static uint32_t op_client_id(session *s, gp_rbuf *r, gp_wbuf *o)
{
    (void)o;
    uint32_t pid = gp_r_u32(r);
    char space[GP_WIRE_MAX_STR + 1];
    gp_r_str(r, space, sizeof space);
    DECODED(s, r);
    /* a pid space is a boot id and a namespace: short, and one word (registry lines are split at spaces) */
    if (strlen(space) >= sizeof s->space || strpbrk(space, " \t\r\n"))
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(s->space, sizeof s->space, "%s", space);
    registry_add(s, pid);
    return CUDA_SUCCESS;
}

/* ---- NVML ----------------------------------------------------------------------------------------------
 *
 * The NVML_* ops run NVML on the GPU host (the loader's libnvidia-ml.so.1, resolved through RTLD_DEFAULT as
 * CUDA is, so that a preloaded vGPU library shows the slot's view). Their status is the nvmlReturn_t. Lists
 * come back whole; the client applies the caller's array size. */

static int nv_load(nv_api *nv, char *err, size_t errlen)
{
    if (!dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(err, errlen, "the worker cannot load libnvidia-ml.so.1: %s", dlerror());
        return -1;
    }
    int i = 0;
#define RESOLVE(name)                                                                              \
    if (!(*(void **)&nv->name = dlsym(RTLD_DEFAULT, #name)) && i < NV_REQUIRED) {                  \
        snprintf(err, errlen, "the worker's libnvidia-ml.so.1 has no %s (driver too old)", #name); \
        return -1;                                                                                 \
    }                                                                                              \
    i++;
#define QRESOLVE(q, name, type) *(void **)&nv->name = dlsym(RTLD_DEFAULT, #name);
    NV_FUNCS(RESOLVE)
    GP_NVML_STR_QUERIES(QRESOLVE)
    GP_NVML_U32_QUERIES(QRESOLVE)
    GP_NVML_U32_ARG_QUERIES(QRESOLVE)
    GP_NVML_PAIR_QUERIES(QRESOLVE)
#undef QRESOLVE
#undef RESOLVE
    return 0;
}

#define NV_CALL(s, name, ...) \
    ((s)->nv.name ? (uint32_t)(s)->nv.name(__VA_ARGS__) : (uint32_t)NVML_ERROR_FUNCTION_NOT_FOUND)

/* The NVML device of the worker's index dev. */
static uint32_t nv_dev(session *s, uint32_t dev, nvmlDevice_t *h)
{
    if (!s->nvml_up)
        return NVML_ERROR_UNINITIALIZED;
    return s->nv.nvmlDeviceGetHandleByIndex_v2(dev, h);
}

static uint32_t op_nvml_init(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    if (!s->nvml_up) {
        char err[300];
        if (nv_load(&s->nv, err, sizeof err) < 0) {
            gp_log(GP_LOG_ERROR, COMPONENT, "session %016llx: %s", (unsigned long long)s->id, err);
            return NVML_ERROR_LIBRARY_NOT_FOUND;
        }
        uint32_t rc = s->nv.nvmlInitWithFlags(flags);
        if (rc != NVML_SUCCESS)
            return rc;
        s->nvml_up = true;
    }
    unsigned n = 0;
    CHECK(s->nv.nvmlDeviceGetCount_v2(&n));
    gp_w_u32(o, n);
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t h;
        char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = "";
        nvmlPciInfo_t pci;
        memset(&pci, 0, sizeof pci);
        CHECK(s->nv.nvmlDeviceGetHandleByIndex_v2(i, &h));
        CHECK(NV_CALL(s, nvmlDeviceGetUUID, h, uuid, sizeof uuid));
        if (NV_CALL(s, nvmlDeviceGetPciInfo_v3, h, &pci) != NVML_SUCCESS)
            pci.busId[0] = '\0';
        uuid[sizeof uuid - 1] = pci.busId[sizeof pci.busId - 1] = '\0';
        gp_w_str(o, uuid);
        gp_w_str(o, pci.busId);
    }
    /* CUDA's devices, so that the client shows NVML the devices CUDA_VISIBLE_DEVICES leaves to CUDA */
    int m = 0;
    if (s->cu.cuDeviceGetCount(&m) != CUDA_SUCCESS || m < 0)
        m = 0;
    gp_w_u32(o, (uint32_t)m);
    for (int i = 0; i < m; i++) {
        CUdevice d;
        CUuuid u;
        memset(&u, 0, sizeof u);
        if (s->cu.cuDeviceGet(&d, i) == CUDA_SUCCESS)
            s->cu.cuDeviceGetUuid_v2(&u, d);
        gp_w_blob(o, u.bytes, sizeof u.bytes);
    }
    return NVML_SUCCESS;
}

static uint32_t op_nvml_system(session *s, gp_rbuf *r, gp_wbuf *o)
{
    DECODED(s, r);
    if (!s->nvml_up)
        return NVML_ERROR_UNINITIALIZED;
    char drv[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE] = "", ver[NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE] = "";
    int cuda = 0;
    CHECK(NV_CALL(s, nvmlSystemGetDriverVersion, drv, sizeof drv));
    CHECK(NV_CALL(s, nvmlSystemGetNVMLVersion, ver, sizeof ver));
    CHECK(NV_CALL(s, nvmlSystemGetCudaDriverVersion, &cuda));
    drv[sizeof drv - 1] = ver[sizeof ver - 1] = '\0';
    gp_w_str(o, drv);
    gp_w_str(o, ver);
    gp_w_u32(o, (uint32_t)cuda);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_handle(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t kind = gp_r_u32(r);
    char key[GP_WIRE_MAX_STR + 1];
    gp_r_str(r, key, sizeof key);
    DECODED(s, r);
    if (!s->nvml_up)
        return NVML_ERROR_UNINITIALIZED;
    nvmlDevice_t h;
    unsigned index = 0;
    switch (kind) {
    case GP_NVML_BY_UUID: CHECK(NV_CALL(s, nvmlDeviceGetHandleByUUID, key, &h)); break;
    case GP_NVML_BY_PCI_BUS_ID: CHECK(NV_CALL(s, nvmlDeviceGetHandleByPciBusId_v2, key, &h)); break;
    case GP_NVML_BY_SERIAL: CHECK(NV_CALL(s, nvmlDeviceGetHandleBySerial, key, &h)); break;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    CHECK(NV_CALL(s, nvmlDeviceGetIndex, h, &index));
    gp_w_u32(o, index);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_str(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), q = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    char v[256] = "";
    CHECK(nv_dev(s, dev, &h));
    switch (q) {
#define STR_CASE(name, fn, type) \
    case GP_NVML_Q_##name: CHECK(NV_CALL(s, fn, h, v, sizeof v)); break;
        GP_NVML_STR_QUERIES(STR_CASE)
#undef STR_CASE
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    v[sizeof v - 1] = '\0';
    gp_w_str(o, v);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_u32(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), q = gp_r_u32(r), arg = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    CHECK(nv_dev(s, dev, &h));
    switch (q) {
#define U32_CASE(name, fn, type)                \
    case GP_NVML_Q_##name: {                    \
        type v_ = (type)0;                      \
        if (arg != 0)                           \
            return NVML_ERROR_INVALID_ARGUMENT; \
        CHECK(NV_CALL(s, fn, h, &v_));          \
        gp_w_u32(o, (uint32_t)v_);              \
        break;                                  \
    }
#define U32_ARG_CASE(name, fn, type)              \
    case GP_NVML_Q_##name: {                      \
        unsigned int v_ = 0;                      \
        CHECK(NV_CALL(s, fn, h, (type)arg, &v_)); \
        gp_w_u32(o, v_);                          \
        break;                                    \
    }
        GP_NVML_U32_QUERIES(U32_CASE)
        GP_NVML_U32_ARG_QUERIES(U32_ARG_CASE)
#undef U32_ARG_CASE
#undef U32_CASE
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

static uint32_t op_nvml_pair(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), q = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    CHECK(nv_dev(s, dev, &h));
    switch (q) {
#define PAIR_CASE(name, fn, type)           \
    case GP_NVML_Q_##name: {                \
        type a_ = (type)0, b_ = (type)0;    \
        CHECK(NV_CALL(s, fn, h, &a_, &b_)); \
        gp_w_u32(o, (uint32_t)a_);          \
        gp_w_u32(o, (uint32_t)b_);          \
        break;                              \
    }
        GP_NVML_PAIR_QUERIES(PAIR_CASE)
#undef PAIR_CASE
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

static uint32_t op_nvml_u64(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), q = gp_r_u32(r), a = gp_r_u32(r), b = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    unsigned long long v = 0;
    CHECK(nv_dev(s, dev, &h));
    if (q == GP_NVML_U64_ENERGY && a == 0 && b == 0)
        CHECK(NV_CALL(s, nvmlDeviceGetTotalEnergyConsumption, h, &v));
    else if (q == GP_NVML_U64_ECC_ERRORS)
        CHECK(NV_CALL(s, nvmlDeviceGetTotalEccErrors, h, (nvmlMemoryErrorType_t)a, (nvmlEccCounterType_t)b,
                      &v));
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    gp_w_u64(o, v);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_memory(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), v2 = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    CHECK(nv_dev(s, dev, &h));
    if (v2 > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlMemory_v2_t m;
    memset(&m, 0, sizeof m);
    if (v2) {
        m.version = nvmlMemory_v2;
        CHECK(NV_CALL(s, nvmlDeviceGetMemoryInfo_v2, h, &m));
    } else {
        nvmlMemory_t m1;
        CHECK(NV_CALL(s, nvmlDeviceGetMemoryInfo, h, &m1));
        m.total = m1.total;
        m.free = m1.free;
        m.used = m1.used;
    }
    gp_w_u64(o, m.total);
    gp_w_u64(o, m.reserved);
    gp_w_u64(o, m.free);
    gp_w_u64(o, m.used);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_utilization(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    nvmlUtilization_t u;
    CHECK(nv_dev(s, dev, &h));
    CHECK(NV_CALL(s, nvmlDeviceGetUtilizationRates, h, &u));
    gp_w_u32(o, u.gpu);
    gp_w_u32(o, u.memory);
    return NVML_SUCCESS;
}

static uint32_t op_nvml_pci(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    nvmlPciInfo_t p;
    memset(&p, 0, sizeof p);
    CHECK(nv_dev(s, dev, &h));
    CHECK(NV_CALL(s, nvmlDeviceGetPciInfo_v3, h, &p));
    p.busIdLegacy[sizeof p.busIdLegacy - 1] = p.busId[sizeof p.busId - 1] = '\0';
    gp_w_str(o, p.busIdLegacy);
    gp_w_str(o, p.busId);
    gp_w_u32(o, p.domain);
    gp_w_u32(o, p.bus);
    gp_w_u32(o, p.device);
    gp_w_u32(o, p.pciDeviceId);
    gp_w_u32(o, p.pciSubSystemId);
    return NVML_SUCCESS;
}

/* Calls an NVML list getter until its array is large enough: *out (malloc'd; the caller frees) with *n
 * entries of size bytes. first is the count to try first. */
typedef nvmlReturn_t (*nv_lister)(session *s, nvmlDevice_t h, unsigned *n, void *arr, uint64_t arg);

static uint32_t nv_list(session *s, nvmlDevice_t h, nv_lister fn, uint64_t arg, size_t size, void **out,
                        unsigned *n)
{
    unsigned cap = 64;
    *out = NULL;
    *n = 0;
    for (int tries = 0; tries < 4; tries++) {
        void *arr = calloc(cap, size);
        if (arr == NULL)
            return NVML_ERROR_MEMORY;
        unsigned got = cap;
        uint32_t rc = fn(s, h, &got, arr, arg);
        if (rc == NVML_SUCCESS) {
            *out = arr;
            *n = got;
            return rc;
        }
        free(arr);
        if (rc != NVML_ERROR_INSUFFICIENT_SIZE)
            return rc;
        cap = got > cap ? got + 16 : cap * 2; /* more came meanwhile */
    }
    return NVML_ERROR_INSUFFICIENT_SIZE;
}

static nvmlReturn_t list_procs(session *s, nvmlDevice_t h, unsigned *n, void *arr, uint64_t kind)
{
    __typeof__(nvmlDeviceGetComputeRunningProcesses_v3) *fn =
        kind == GP_NVML_PROCS_COMPUTE    ? s->nv.nvmlDeviceGetComputeRunningProcesses_v3
        : kind == GP_NVML_PROCS_GRAPHICS ? s->nv.nvmlDeviceGetGraphicsRunningProcesses_v3
                                         : s->nv.nvmlDeviceGetMPSComputeRunningProcesses_v3;
    return fn ? fn(h, n, arr) : NVML_ERROR_FUNCTION_NOT_FOUND;
}

static uint32_t op_nvml_procs(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r), kind = gp_r_u32(r);
    DECODED(s, r);
    nvmlDevice_t h;
    CHECK(nv_dev(s, dev, &h));
    if (kind > GP_NVML_PROCS_MPS)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlProcessInfo_t *p;
    unsigned n;
    CHECK(nv_list(s, h, list_procs, kind, sizeof *p, (void **)&p, &n));
    /* the sessions of the client's pid space, under their clients' pids; nothing else */
    /* one look at the registry per process (pid 0: not shown), so that the count and the entries agree even
     * when a session ends meanwhile */
    unsigned shown = 0, cpid;
    for (unsigned i = 0; i < n; i++) {
        p[i].pid = registry_client_pid(s, p[i].pid, &cpid) ? cpid : 0;
        shown += p[i].pid != 0;
    }
    gp_w_u32(o, shown);
    for (unsigned i = 0; i < n; i++) {
        if (p[i].pid == 0)
            continue;
        gp_w_u32(o, p[i].pid);
        gp_w_u64(o, p[i].usedGpuMemory);
        gp_w_u32(o, p[i].gpuInstanceId);
        gp_w_u32(o, p[i].computeInstanceId);
    }
    free(p);
    return NVML_SUCCESS;
}

static nvmlReturn_t list_samples(session *s, nvmlDevice_t h, unsigned *n, void *arr, uint64_t last_seen)
{
    if (!s->nv.nvmlDeviceGetProcessUtilization)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t rc = s->nv.nvmlDeviceGetProcessUtilization(h, arr, n, last_seen);
    if (rc == NVML_ERROR_NOT_FOUND) { /* no samples: an empty list */
        *n = 0;
        rc = NVML_SUCCESS;
    }
    return rc;
}

static uint32_t op_nvml_proc_util(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t dev = gp_r_u32(r);
    uint64_t last_seen = gp_r_u64(r);
    DECODED(s, r);
    nvmlDevice_t h;
    CHECK(nv_dev(s, dev, &h));
    nvmlProcessUtilizationSample_t *p;
    unsigned n;
    CHECK(nv_list(s, h, list_samples, last_seen, sizeof *p, (void **)&p, &n));
    unsigned shown = 0, cpid; /* as op_nvml_procs: one look per process */
    for (unsigned i = 0; i < n; i++) {
        p[i].pid = registry_client_pid(s, p[i].pid, &cpid) ? cpid : 0;
        shown += p[i].pid != 0;
    }
    gp_w_u32(o, shown);
    for (unsigned i = 0; i < n; i++) {
        if (p[i].pid == 0)
            continue;
        gp_w_u32(o, p[i].pid);
        gp_w_u64(o, p[i].timeStamp);
        gp_w_u32(o, p[i].smUtil);
        gp_w_u32(o, p[i].memUtil);
        gp_w_u32(o, p[i].encUtil);
        gp_w_u32(o, p[i].decUtil);
    }
    free(p);
    return NVML_SUCCESS;
}

/* ---- graphs and arrays -------------------------------------------------------------------------------
 *
 * Arrays, mipmapped arrays, graphs, graph nodes and executable graphs are client ids mapped to records. A
 * node that runs on the client (a host node, or a copy with a side in the client's host memory) has a stage:
 * its callback id (the node's), and for a copy a staging buffer of pinned host memory here, packed (pitch =
 * width). A copy to the client is a driver memcpy node into the staging buffer followed by a host node that
 * sends the data (STAGE_DATA) and the CALLBACK; a copy from the client is a host node whose CALLBACK the
 * client answers with the data (STAGE_FILL, written into the staging buffer by the reader thread) and
 * CALLBACK_DONE, followed by a memcpy node out of the staging buffer. Such a client node is two driver nodes,
 * entry and exit: dependencies attach to its entry, dependants to its exit, and both map back to its id.
 * Stages live as long as their graph and its executable graphs; a graph whose executable graphs were
 * launched keeps its stages until the session ends, as a launch may still be running them. */

enum { STAGE_HOST, STAGE_FETCH, STAGE_DELIVER };

struct stage {
    stage *next;
    uint64_t id; /* the client's callback (its node's id) */
    int kind;
    void *buf; /* pinned, size bytes (copies) */
    size_t size;
};

typedef struct graph_rec {
    struct graph_rec *next; /* in the graveyard */
    CUgraph g;
    uint64_t ctx;
    CUstream origin; /* capturing: the stream whose capture builds it (g is the driver's, not yet ours) */
    bool capturing, launched;
    int refs; /* the graph's own, plus one per executable graph */
    stage *stages;
} graph_rec;

typedef struct node_rec {
    CUgraphNode entry, exit;
    uint64_t graph;
} node_rec;

typedef struct exec_rec {
    CUgraphExec x;
    graph_rec *g;
    uint64_t ctx;
} exec_rec;

typedef struct array_rec {
    CUarray a;
    uint64_t ctx, mipmap; /* mipmap: the mipmapped array it is a level of (destroyed with it), or 0 */
    CUDA_ARRAY3D_DESCRIPTOR d;
    size_t row, rows, slices; /* bytes per row; rows per slice; slices (1 for 1D and 2D arrays) */
} array_rec;

typedef struct obj_rec {
    void *h;
    uint64_t ctx;
} obj_rec;

/* The reader thread (g_rx.mu held): a STAGE_FILL piece goes into the staging buffer of the copy waiting for
 * it. false: nothing waits for it (the session's thread then ignores it). */
static bool stage_fill_locked(const void *p, size_t n)
{
    gp_rbuf r;
    gp_rbuf_init(&r, p, n);
    (void)gp_r_u64(&r); /* ctx */
    uint64_t id = gp_r_u64(&r), off = gp_r_u64(&r);
    size_t len;
    const void *data = gp_r_blob(&r, &len);
    for (hostcb *c = g_rx.cbs; c; c = c->next)
        if (c->id == id && !c->done && c->st && c->st->kind == STAGE_FETCH) {
            if (c->st->buf && off <= c->st->size && len <= c->st->size - off) /* buf: its context lives */
                memcpy((uint8_t *)c->st->buf + off, data, len);
            return true;
        }
    return false;
}

/* A staged copy to the client: its data, in pieces of GP_WIRE_CHUNK, before the CALLBACK. */
static int stage_deliver(int fd, const hostcb *c)
{
    if (!c->st || c->st->kind != STAGE_DELIVER || !c->st->buf)
        return 0;
    for (size_t off = 0; off < c->st->size; off += GP_WIRE_CHUNK) {
        size_t n = c->st->size - off > GP_WIRE_CHUNK ? GP_WIRE_CHUNK : c->st->size - off;
        uint8_t pre[20];
        for (int i = 0; i < 8; i++) {
            pre[i] = (uint8_t)(c->id >> (8 * i));
            pre[8 + i] = (uint8_t)((uint64_t)off >> (8 * i));
        }
        for (int i = 0; i < 4; i++)
            pre[16 + i] = (uint8_t)((uint32_t)n >> (8 * i));
        gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_STAGE_DATA};
        pthread_mutex_lock(&g_wmu);
        int rc = gp_wire_send2(fd, &h, pre, sizeof pre, (uint8_t *)c->st->buf + off, n);
        pthread_mutex_unlock(&g_wmu);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A graph's host node (the driver's thread): runs the stage's callback on the client. */
static void CUDA_CB stage_node(void *p)
{
    stage *st = p;
    hostcb c = {.id = st->id, .st = st};
    pthread_mutex_lock(&g_rx.mu);
    c.next = g_rx.cbs;
    g_rx.cbs = &c;
    pthread_mutex_unlock(&g_rx.mu);
    run_on_client(&c, CUDA_SUCCESS);
}

static void stages_free(session *s, stage *st)
{
    while (st) {
        stage *n = st->next;
        if (st->buf)
            s->cu.cuMemFreeHost(st->buf);
        free(st);
        st = n;
    }
}

/* A stage for callback id (and its staging buffer: allocating pinned memory is "potentially unsafe" during
 * stream capture, which the worker's own buffer is not, so the thread's mode is relaxed meanwhile). */
static uint32_t stage_new(session *s, uint64_t id, int kind, size_t size, stage **out)
{
    if (!reader_start(s))
        return CUDA_ERROR_OUT_OF_MEMORY;
    stage *st = calloc(1, sizeof *st);
    if (st == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    st->id = id;
    st->kind = kind;
    st->size = size;
    if (kind != STAGE_HOST) {
        CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
        s->cu.cuThreadExchangeStreamCaptureMode(&mode);
        uint32_t rc = s->cu.cuMemAllocHost_v2(&st->buf, size ? size : 1);
        s->cu.cuThreadExchangeStreamCaptureMode(&mode);
        if (rc != CUDA_SUCCESS) {
            free(st);
            return rc;
        }
    }
    *out = st;
    return CUDA_SUCCESS;
}

static bool graph_of(session *s, uint64_t id, graph_rec **out)
{
    void *v;
    if (!map_get(&s->graphs, id, &v))
        return false;
    *out = v;
    return true;
}

static uint64_t graph_id_of(session *s, CUgraph g)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->graphs, &i, &k, &v);)
        if (((graph_rec *)u2h(v))->g == g)
            return k;
    return 0;
}

static uint32_t node_new(session *s, uint64_t id, uint64_t graph, CUgraphNode entry, CUgraphNode exit)
{
    node_rec *n = malloc(sizeof *n);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *n = (node_rec){entry, exit, graph};
    if (map_new(&s->nodes, id, n) != CUDA_SUCCESS) {
        free(n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (gp_u64map_put(&s->node_ids, h2u(entry), id) < 0 || gp_u64map_put(&s->node_ids, h2u(exit), id) < 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    return CUDA_SUCCESS;
}

/* The client id of a driver node of graph (one the driver made gets a new one). 0 when out of memory. */
static uint64_t node_id_of(session *s, uint64_t graph, CUgraphNode n)
{
    uint64_t id;
    if (gp_u64map_get(&s->node_ids, h2u(n), &id))
        return id;
    id = (1ull << 63) | ++s->node_seq;
    return node_new(s, id, graph, n, n) == CUDA_SUCCESS ? id : 0;
}

/* The nodes of a graph go with it. */
static void nodes_forget(session *s, uint64_t graph)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->nodes, &i, &k, &v);) {
        node_rec *n = u2h(v);
        if (n->graph != graph)
            continue;
        gp_u64map_del(&s->node_ids, h2u(n->entry), NULL);
        gp_u64map_del(&s->node_ids, h2u(n->exit), NULL);
        gp_u64map_del(&s->nodes, k, NULL);
        free(n);
    }
}

static void graph_unref(session *s, graph_rec *g)
{
    if (--g->refs > 0)
        return;
    if (g->launched && g->stages) {
        g->next = s->grave;
        s->grave = g;
        return;
    }
    stages_free(s, g->stages);
    free(g);
}

/* The dependencies blob: the exit node of each id, which must be a node of graph. *out is malloc'd. */
static uint32_t deps_of(session *s, uint64_t graph, const void *blob, size_t len, CUgraphNode **out,
                        size_t *n)
{
    *out = NULL;
    *n = len / 8;
    if (len % 8 != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (*n == 0)
        return CUDA_SUCCESS;
    CUgraphNode *d = malloc(*n * sizeof *d);
    if (d == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_rbuf r;
    gp_rbuf_init(&r, blob, len);
    for (size_t i = 0; i < *n; i++) {
        void *v;
        if (!map_get(&s->nodes, gp_r_u64(&r), &v) || ((node_rec *)v)->graph != graph) {
            free(d);
            return CUDA_ERROR_INVALID_VALUE;
        }
        d[i] = ((node_rec *)v)->exit;
    }
    *out = d;
    return CUDA_SUCCESS;
}

/* ---- arrays ---- */

static size_t format_bytes(CUarray_format f)
{
    unsigned b = gp_array_format_bytes(f);
    return b ? b : 4; /* 32-bit formats; others are refused by the client's descriptor checks or the driver */
}

static uint32_t array_add(session *s, uint64_t id, CUarray a, uint64_t mipmap)
{
    array_rec *ar = calloc(1, sizeof *ar);
    if (ar == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    ar->a = a;
    ar->ctx = s->cur_ctx;
    ar->mipmap = mipmap;
    s->cu.cuArray3DGetDescriptor_v2(&ar->d, a);
    ar->row = ar->d.Width * ar->d.NumChannels * format_bytes(ar->d.Format);
    ar->rows = ar->d.Height ? ar->d.Height : 1;
    ar->slices = ar->d.Depth ? ar->d.Depth : 1;
    if (map_new(&s->arrays, id, ar) != CUDA_SUCCESS) {
        free(ar);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

static bool array_of(session *s, uint64_t id, array_rec **out)
{
    void *v;
    if (!map_get(&s->arrays, id, &v))
        return false;
    *out = v;
    return true;
}

static void desc_read(gp_rbuf *r, CUDA_ARRAY3D_DESCRIPTOR *d)
{
    d->Width = (size_t)gp_r_u64(r);
    d->Height = (size_t)gp_r_u64(r);
    d->Depth = (size_t)gp_r_u64(r);
    d->Format = (CUarray_format)gp_r_u32(r);
    d->NumChannels = gp_r_u32(r);
    d->Flags = gp_r_u32(r);
}

static uint32_t op_array_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    CUDA_ARRAY3D_DESCRIPTOR d;
    desc_read(r, &d);
    DECODED(s, r);
    (void)o;
    void *old;
    CUarray a;
    if (!id_ok(id) || map_get(&s->arrays, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuArray3DCreate_v2(&a, &d));
    uint32_t rc = array_add(s, id, a, 0);
    if (rc != CUDA_SUCCESS)
        s->cu.cuArrayDestroy(a);
    return rc;
}

static uint32_t op_array_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    array_rec *a;
    if (!array_of(s, id, &a))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuArrayDestroy(a->a));
    gp_u64map_del(&s->arrays, id, NULL);
    free(a);
    return CUDA_SUCCESS;
}

static uint32_t op_array_mem_req(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    array_rec *a;
    CUdevice dev;
    CUDA_ARRAY_MEMORY_REQUIREMENTS req;
    if (!array_of(s, id, &a))
        return CUDA_ERROR_INVALID_VALUE;
    if (!s->cu.cuArrayGetMemoryRequirements)
        return CUDA_ERROR_NOT_SUPPORTED;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuArrayGetMemoryRequirements(&req, a->a, dev));
    gp_w_u64(o, req.size);
    gp_w_u64(o, req.alignment);
    return CUDA_SUCCESS;
}

static uint32_t op_mipmap_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    CUDA_ARRAY3D_DESCRIPTOR d;
    desc_read(r, &d);
    uint32_t levels = gp_r_u32(r);
    DECODED(s, r);
    (void)o;
    void *old;
    CUmipmappedArray m;
    if (!id_ok(id) || map_get(&s->mipmaps, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    obj_rec *rec = malloc(sizeof *rec);
    if (rec == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint32_t rc = s->cu.cuMipmappedArrayCreate(&m, &d, levels);
    if (rc == CUDA_SUCCESS) {
        *rec = (obj_rec){m, s->cur_ctx};
        if ((rc = map_new(&s->mipmaps, id, rec)) != CUDA_SUCCESS)
            s->cu.cuMipmappedArrayDestroy(m);
    }
    if (rc != CUDA_SUCCESS)
        free(rec);
    return rc;
}

/* Its level arrays go with a mipmapped array. */
static void levels_forget(session *s, uint64_t mipmap)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->arrays, &i, &k, &v);)
        if (((array_rec *)u2h(v))->mipmap == mipmap) {
            gp_u64map_del(&s->arrays, k, NULL);
            free(u2h(v));
        }
}

static uint32_t op_mipmap_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    void *v;
    if (!map_get(&s->mipmaps, id, &v))
        return CUDA_ERROR_INVALID_HANDLE;
    CHECK(s->cu.cuMipmappedArrayDestroy(((obj_rec *)v)->h));
    levels_forget(s, id);
    gp_u64map_del(&s->mipmaps, id, NULL);
    free(v);
    return CUDA_SUCCESS;
}

static uint32_t op_mipmap_level(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t mid = gp_r_u64(r);
    uint32_t level = gp_r_u32(r);
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    void *v, *old;
    CUarray a;
    if (!map_get(&s->mipmaps, mid, &v))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!id_ok(id) || map_get(&s->arrays, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuMipmappedArrayGetLevel(&a, ((obj_rec *)v)->h, level));
    CHECK(array_add(s, id, a, mid));
    array_rec *ar = NULL;
    if (!array_of(s, id, &ar))
        return CUDA_ERROR_OUT_OF_MEMORY;
    gp_w_u64(o, ar->d.Width);
    gp_w_u64(o, ar->d.Height);
    gp_w_u64(o, ar->d.Depth);
    gp_w_u32(o, (uint32_t)ar->d.Format);
    gp_w_u32(o, ar->d.NumChannels);
    gp_w_u32(o, ar->d.Flags);
    return CUDA_SUCCESS;
}

static uint32_t op_mipmap_mem_req(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t ordinal = gp_r_u32(r);
    DECODED(s, r);
    void *v;
    CUdevice dev;
    CUDA_ARRAY_MEMORY_REQUIREMENTS req;
    if (!map_get(&s->mipmaps, id, &v))
        return CUDA_ERROR_INVALID_VALUE;
    if (!s->cu.cuMipmappedArrayGetMemoryRequirements)
        return CUDA_ERROR_NOT_SUPPORTED;
    CHECK(device_of(s, ordinal, &dev));
    CHECK(s->cu.cuMipmappedArrayGetMemoryRequirements(&req, ((obj_rec *)v)->h, dev));
    gp_w_u64(o, req.size);
    gp_w_u64(o, req.alignment);
    return CUDA_SUCCESS;
}

/* n bytes at packed offset off of an array, to or from host memory, as box copies: the rest of a row, then
 * whole rows of a slice, then whole slices. On a stream, waited for (the host side is the frame buffer). */
static uint32_t array_io(session *s, const array_rec *a, uint64_t off, uint8_t *host, size_t n, bool to_array,
                         CUstream st)
{
    size_t slice = a->row * a->rows;
    if (off > slice * a->slices || n > slice * a->slices - off)
        return CUDA_ERROR_INVALID_VALUE;
    while (n > 0) {
        size_t x = (size_t)(off % a->row), y = (size_t)(off / a->row % a->rows), z = (size_t)(off / slice);
        size_t w, rows = 1, depth = 1;
        if (x != 0 || n < a->row) {
            w = n < a->row - x ? n : a->row - x;
        } else if (y != 0 || n < slice) {
            w = a->row;
            rows = n / a->row < a->rows - y ? n / a->row : a->rows - y;
        } else {
            w = a->row;
            rows = a->rows;
            depth = n / slice;
        }
        CUDA_MEMCPY3D c = {.WidthInBytes = w, .Height = rows, .Depth = depth};
        if (to_array) {
            c.srcMemoryType = CU_MEMORYTYPE_HOST;
            c.srcHost = host;
            c.srcPitch = w;
            c.srcHeight = rows;
            c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
            c.dstArray = a->a;
            c.dstXInBytes = x;
            c.dstY = y;
            c.dstZ = z;
        } else {
            c.dstMemoryType = CU_MEMORYTYPE_HOST;
            c.dstHost = host;
            c.dstPitch = w;
            c.dstHeight = rows;
            c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
            c.srcArray = a->a;
            c.srcXInBytes = x;
            c.srcY = y;
            c.srcZ = z;
        }
        CHECK(st ? s->cu.cuMemcpy3DAsync_v2(&c, st) : s->cu.cuMemcpy3D_v2(&c));
        size_t moved = w * rows * depth;
        host += moved;
        off += moved;
        n -= moved;
    }
    return st ? s->cu.cuStreamSynchronize(st) : CUDA_SUCCESS;
}

static uint32_t op_htoa(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), id = gp_r_u64(r), off = gp_r_u64(r);
    (void)gp_r_u32(r); /* last: the client's business, as HTOD's */
    size_t n;
    const void *data = gp_r_blob(r, &n);
    DECODED(s, r);
    (void)o;
    CUstream st;
    array_rec *a;
    CHECK(stream_of(s, sid, &st));
    if (!array_of(s, id, &a))
        return CUDA_ERROR_INVALID_HANDLE;
    return array_io(s, a, off, (uint8_t *)(uintptr_t)data, n, true, st);
}

static uint32_t op_atoh(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), id = gp_r_u64(r), off = gp_r_u64(r), size = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    array_rec *a;
    CHECK(stream_of(s, sid, &st));
    if (!array_of(s, id, &a))
        return CUDA_ERROR_INVALID_HANDLE;
    if (size > GP_WIRE_CHUNK)
        return CUDA_ERROR_INVALID_VALUE;
    gp_w_u32(o, (uint32_t)size);
    uint8_t *dst = gp_w_reserve(o, (size_t)size);
    if (!dst && size)
        return CUDA_ERROR_OUT_OF_MEMORY;
    return array_io(s, a, off, dst, (size_t)size, false, st);
}

static uint32_t op_array_linear(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t kind = gp_r_u32(r);
    uint64_t dst = gp_r_u64(r), doff = gp_r_u64(r), src = gp_r_u64(r), soff = gp_r_u64(r), n = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    array_rec *d = NULL, *a = NULL;
    if ((kind == 1 || kind == 3) && !array_of(s, dst, &d))
        return CUDA_ERROR_INVALID_HANDLE;
    if ((kind == 2 || kind == 3) && !array_of(s, src, &a))
        return CUDA_ERROR_INVALID_HANDLE;
    switch (kind) {
    case 1: return s->cu.cuMemcpyDtoA_v2(d->a, (size_t)doff, src, (size_t)n);
    case 2: return s->cu.cuMemcpyAtoD_v2(dst, a->a, (size_t)soff, (size_t)n);
    case 3: return s->cu.cuMemcpyAtoA_v2(d->a, (size_t)doff, a->a, (size_t)soff, (size_t)n);
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

/* ---- copy descriptors ---- */

typedef struct side {
    uint32_t kind; /* 0 host (staging), 1 device, 2 array */
    uint64_t h, x, y, z, pitch, height;
} side;

typedef struct copy_desc {
    side dst, src;
    uint64_t width, rows, depth;
} copy_desc;

static void copy_read(gp_rbuf *r, copy_desc *c)
{
    side *sides[2] = {&c->dst, &c->src};
    for (int i = 0; i < 2; i++) {
        sides[i]->kind = gp_r_u32(r);
        sides[i]->h = gp_r_u64(r);
        sides[i]->x = gp_r_u64(r);
        sides[i]->y = gp_r_u64(r);
        sides[i]->z = gp_r_u64(r);
        sides[i]->pitch = gp_r_u64(r);
        sides[i]->height = gp_r_u64(r);
    }
    c->width = gp_r_u64(r);
    c->rows = gp_r_u64(r);
    c->depth = gp_r_u64(r);
}

/* Bytes a copy moves; UINT64_MAX when the product overflows (callers refuse anything over SIZE_MAX / 2). */
static uint64_t copy_bytes(const copy_desc *c)
{
    uint64_t n;
    if (__builtin_mul_overflow(c->width, c->rows, &n) || __builtin_mul_overflow(n, c->depth, &n))
        return UINT64_MAX;
    return n;
}

/* One side of the driver's descriptor; a host side is the staging buffer (none: INVALID_VALUE). */
static uint32_t side_set(session *s, const side *sd, const copy_desc *c, void *staging, bool dst,
                         CUDA_MEMCPY3D *m)
{
    CUmemorytype type;
    void *host = NULL;
    CUdeviceptr dev = 0;
    CUarray arr = NULL;
    size_t pitch = (size_t)sd->pitch, height = (size_t)sd->height, x = (size_t)sd->x, y = (size_t)sd->y,
           z = (size_t)sd->z;
    array_rec *a;
    switch (sd->kind) {
    case 0:
        if (!staging)
            return CUDA_ERROR_INVALID_VALUE;
        type = CU_MEMORYTYPE_HOST;
        host = staging;
        pitch = (size_t)c->width;
        height = (size_t)c->rows;
        x = y = z = 0;
        break;
    case 1:
        type = CU_MEMORYTYPE_DEVICE;
        dev = sd->h;
        break;
    case 2:
        if (!array_of(s, sd->h, &a))
            return CUDA_ERROR_INVALID_HANDLE;
        type = CU_MEMORYTYPE_ARRAY;
        arr = a->a;
        break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    if (dst) {
        m->dstMemoryType = type;
        m->dstHost = host;
        m->dstDevice = dev;
        m->dstArray = arr;
        m->dstPitch = pitch;
        m->dstHeight = height;
        m->dstXInBytes = x;
        m->dstY = y;
        m->dstZ = z;
    } else {
        m->srcMemoryType = type;
        m->srcHost = host;
        m->srcDevice = dev;
        m->srcArray = arr;
        m->srcPitch = pitch;
        m->srcHeight = height;
        m->srcXInBytes = x;
        m->srcY = y;
        m->srcZ = z;
    }
    return CUDA_SUCCESS;
}

static uint32_t copy_build(session *s, const copy_desc *c, void *staging, CUDA_MEMCPY3D *m)
{
    memset(m, 0, sizeof *m);
    m->WidthInBytes = (size_t)c->width;
    m->Height = (size_t)c->rows;
    m->Depth = (size_t)c->depth;
    CHECK(side_set(s, &c->dst, c, staging, true, m));
    return side_set(s, &c->src, c, staging, false, m);
}

/* The kind of stage a copy with one host side needs; -1 for none or both. */
static int copy_stage_kind(const copy_desc *c)
{
    if ((c->src.kind == 0) == (c->dst.kind == 0))
        return -1;
    return c->src.kind == 0 ? STAGE_FETCH : STAGE_DELIVER;
}

static uint32_t op_memcpy_box(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r);
    copy_desc c;
    copy_read(r, &c);
    DECODED(s, r);
    (void)o;
    CUstream st;
    CUDA_MEMCPY3D m;
    CHECK(stream_of(s, sid, &st));
    CHECK(copy_build(s, &c, NULL, &m));
    return st ? s->cu.cuMemcpy3DAsync_v2(&m, st) : s->cu.cuMemcpy3D_v2(&m);
}

/* ---- graphs ---- */

static uint32_t op_graph_create(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    uint32_t flags = gp_r_u32(r);
    DECODED(s, r);
    (void)o;
    void *old;
    if (!id_ok(id) || map_get(&s->graphs, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    graph_rec *g = calloc(1, sizeof *g);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint32_t rc = s->cu.cuGraphCreate(&g->g, flags);
    if (rc == CUDA_SUCCESS) {
        g->ctx = s->cur_ctx;
        g->refs = 1;
        if ((rc = map_new(&s->graphs, id, g)) != CUDA_SUCCESS)
            s->cu.cuGraphDestroy(g->g);
    }
    if (rc != CUDA_SUCCESS)
        free(g);
    return rc;
}

static uint32_t op_graph_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    graph_rec *g;
    if (!graph_of(s, id, &g) || g->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuGraphDestroy(g->g));
    nodes_forget(s, id);
    gp_u64map_del(&s->graphs, id, NULL);
    graph_unref(s, g);
    return CUDA_SUCCESS;
}

/* The start of every ADD: the graph and the dependencies. */
static uint32_t add_begin(session *s, uint64_t gid, uint64_t node, const void *deps, size_t len,
                          graph_rec **g, CUgraphNode **d, size_t *nd)
{
    void *old;
    *d = NULL;
    if (!graph_of(s, gid, g) || (*g)->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    if (!id_ok(node) || map_get(&s->nodes, node, &old))
        return CUDA_ERROR_INVALID_VALUE;
    return deps_of(s, gid, deps, len, d, nd);
}

static uint32_t add_end(session *s, uint32_t rc, uint64_t node, uint64_t gid, CUgraphNode entry,
                        CUgraphNode exit, CUgraphNode *deps)
{
    free(deps);
    return rc == CUDA_SUCCESS ? node_new(s, node, gid, entry, exit) : rc;
}

static uint32_t op_graph_add_empty(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), node = gp_r_u64(r);
    size_t len, nd;
    const void *blob = gp_r_blob(r, &len);
    DECODED(s, r);
    (void)o;
    graph_rec *g;
    CUgraphNode *deps, n = NULL;
    CHECK(add_begin(s, gid, node, blob, len, &g, &deps, &nd));
    uint32_t rc = s->cu.cuGraphAddEmptyNode(&n, g->g, deps, nd);
    return add_end(s, rc, node, gid, n, n, deps);
}

static uint32_t op_graph_add_kernel(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), node = gp_r_u64(r);
    size_t len, nd, n;
    const void *blob = gp_r_blob(r, &len);
    uint64_t fid = gp_r_u64(r);
    CUDA_KERNEL_NODE_PARAMS_v1 k = {0};
    k.gridDimX = gp_r_u32(r);
    k.gridDimY = gp_r_u32(r);
    k.gridDimZ = gp_r_u32(r);
    k.blockDimX = gp_r_u32(r);
    k.blockDimY = gp_r_u32(r);
    k.blockDimZ = gp_r_u32(r);
    k.sharedMemBytes = gp_r_u32(r);
    const void *params = gp_r_blob(r, &n);
    DECODED(s, r);
    (void)o;
    void *fv;
    if (!map_get(&s->funcs, fid, &fv))
        return CUDA_ERROR_INVALID_VALUE;
    func_rec *f = fv;
    if (n > sizeof s->params)
        return CUDA_ERROR_INVALID_VALUE;
    if (n)
        memcpy(s->params, params, n);
    for (uint32_t i = 0; i < f->n; i++) {
        if ((size_t)f->off[i] + f->size[i] > n)
            return CUDA_ERROR_INVALID_VALUE;
        s->args[i] = s->params + f->off[i];
    }
    k.func = f->f;
    k.kernelParams = f->n ? s->args : NULL;
    graph_rec *g;
    CUgraphNode *deps, nn = NULL;
    CHECK(add_begin(s, gid, node, blob, len, &g, &deps, &nd));
    /* the driver copies the arguments when the node is added */
    uint32_t rc = s->cu.cuGraphAddKernelNode(&nn, g->g, deps, nd, &k);
    return add_end(s, rc, node, gid, nn, nn, deps);
}

static uint32_t op_graph_add_memset(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), node = gp_r_u64(r);
    size_t len, nd;
    const void *blob = gp_r_blob(r, &len);
    uint64_t cid = gp_r_u64(r);
    CUDA_MEMSET_NODE_PARAMS p = {0};
    p.dst = gp_r_u64(r);
    p.pitch = (size_t)gp_r_u64(r);
    p.value = gp_r_u32(r);
    p.elementSize = gp_r_u32(r);
    p.width = (size_t)gp_r_u64(r);
    p.height = (size_t)gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    void *c;
    if (!map_get(&s->ctxs, cid, &c))
        return CUDA_ERROR_INVALID_CONTEXT;
    graph_rec *g;
    CUgraphNode *deps, n = NULL;
    CHECK(add_begin(s, gid, node, blob, len, &g, &deps, &nd));
    uint32_t rc = s->cu.cuGraphAddMemsetNode(&n, g->g, deps, nd, &p, c);
    return add_end(s, rc, node, gid, n, n, deps);
}

static uint32_t op_graph_add_memcpy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), node = gp_r_u64(r);
    size_t len, nd;
    const void *blob = gp_r_blob(r, &len);
    uint64_t cid = gp_r_u64(r);
    copy_desc cd;
    copy_read(r, &cd);
    DECODED(s, r);
    (void)o;
    void *c;
    if (!map_get(&s->ctxs, cid, &c))
        return CUDA_ERROR_INVALID_CONTEXT;
    graph_rec *g;
    CUgraphNode *deps, a = NULL, b = NULL;
    CHECK(add_begin(s, gid, node, blob, len, &g, &deps, &nd));
    int kind = copy_stage_kind(&cd);
    stage *st = NULL;
    CUDA_MEMCPY3D m;
    uint32_t rc = CUDA_SUCCESS;
    if (kind >= 0 && copy_bytes(&cd) > SIZE_MAX / 2)
        rc = CUDA_ERROR_INVALID_VALUE;
    if (rc == CUDA_SUCCESS && kind >= 0)
        rc = stage_new(s, node, kind, (size_t)copy_bytes(&cd), &st);
    if (rc == CUDA_SUCCESS)
        rc = copy_build(s, &cd, st ? st->buf : NULL, &m);
    if (rc == CUDA_SUCCESS && kind < 0) {
        rc = s->cu.cuGraphAddMemcpyNode(&a, g->g, deps, nd, &m, c);
        b = a;
    } else if (rc == CUDA_SUCCESS) {
        CUDA_HOST_NODE_PARAMS hp = {stage_node, st};
        if (kind == STAGE_FETCH) {
            rc = s->cu.cuGraphAddHostNode(&a, g->g, deps, nd, &hp);
            if (rc == CUDA_SUCCESS)
                rc = s->cu.cuGraphAddMemcpyNode(&b, g->g, &a, 1, &m, c);
        } else {
            rc = s->cu.cuGraphAddMemcpyNode(&a, g->g, deps, nd, &m, c);
            if (rc == CUDA_SUCCESS)
                rc = s->cu.cuGraphAddHostNode(&b, g->g, &a, 1, &hp);
        }
        /* a half-added pair stays in the driver's graph, unreachable by the client's ids: harmless */
    }
    if (st && rc == CUDA_SUCCESS) {
        st->next = g->stages;
        g->stages = st;
    } else if (st) {
        stages_free(s, st);
    }
    return add_end(s, rc, node, gid, a, b, deps);
}

static uint32_t op_graph_add_host(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), node = gp_r_u64(r);
    size_t len, nd;
    const void *blob = gp_r_blob(r, &len);
    DECODED(s, r);
    (void)o;
    graph_rec *g;
    CUgraphNode *deps, n = NULL;
    stage *st;
    CHECK(add_begin(s, gid, node, blob, len, &g, &deps, &nd));
    uint32_t rc = stage_new(s, node, STAGE_HOST, 0, &st);
    if (rc == CUDA_SUCCESS) {
        CUDA_HOST_NODE_PARAMS hp = {stage_node, st};
        rc = s->cu.cuGraphAddHostNode(&n, g->g, deps, nd, &hp);
        if (rc == CUDA_SUCCESS) {
            st->next = g->stages;
            g->stages = st;
        } else {
            stages_free(s, st);
        }
    }
    return add_end(s, rc, node, gid, n, n, deps);
}

static uint32_t op_graph_nodes(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r);
    DECODED(s, r);
    graph_rec *g;
    size_t n = 0;
    if (!graph_of(s, gid, &g))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuGraphGetNodes(g->g, NULL, &n));
    CUgraphNode *v = n ? calloc(n, sizeof *v) : NULL;
    if (n && v == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint32_t rc = n ? s->cu.cuGraphGetNodes(g->g, v, &n) : CUDA_SUCCESS;
    gp_u64map seen = {0}; /* a client node of two driver nodes is listed once */
    gp_wbuf ids;
    gp_wbuf_init(&ids);
    uint32_t count = 0;
    for (size_t i = 0; rc == CUDA_SUCCESS && i < n; i++) {
        uint64_t id = node_id_of(s, gid, v[i]), dummy;
        if (id == 0 || !ids.ok) {
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else if (!gp_u64map_get(&seen, id, &dummy)) {
            if (gp_u64map_put(&seen, id, 1) < 0)
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            gp_w_u64(&ids, id);
            count++;
        }
    }
    if (rc == CUDA_SUCCESS) {
        gp_w_u32(o, count);
        uint8_t *p = ids.len ? gp_w_reserve(o, ids.len) : NULL;
        if (p)
            memcpy(p, ids.p, ids.len);
    }
    gp_u64map_free(&seen);
    gp_wbuf_free(&ids);
    free(v);
    return rc;
}

static uint32_t op_graph_instantiate(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t gid = gp_r_u64(r), xid = gp_r_u64(r), flags = gp_r_u64(r), sid = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    graph_rec *g;
    CUstream st;
    void *old;
    if (!graph_of(s, gid, &g) || g->capturing)
        return CUDA_ERROR_INVALID_VALUE;
    if (!id_ok(xid) || map_get(&s->execs, xid, &old))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(stream_of(s, sid, &st));
    exec_rec *x = calloc(1, sizeof *x);
    if (x == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    /* CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD (cuGraphInstantiateWithParams): instantiate, then upload */
    uint32_t rc =
        s->cu.cuGraphInstantiateWithFlags(&x->x, g->g, flags & ~(uint64_t)CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD);
    if (rc == CUDA_SUCCESS && (flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD))
        rc = s->cu.cuGraphUpload(x->x, st);
    if (rc == CUDA_SUCCESS && (rc = map_new(&s->execs, xid, x)) == CUDA_SUCCESS) {
        x->g = g;
        x->ctx = s->cur_ctx;
        g->refs++;
        g->launched = true; /* from now on a launch may run its stages */
        return CUDA_SUCCESS;
    }
    if (x->x)
        s->cu.cuGraphExecDestroy(x->x);
    free(x);
    return rc;
}

static bool exec_of(session *s, uint64_t id, exec_rec **out)
{
    void *v;
    if (!map_get(&s->execs, id, &v))
        return false;
    *out = v;
    return true;
}

static uint32_t op_graph_exec_destroy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    exec_rec *x;
    if (!exec_of(s, id, &x))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(s->cu.cuGraphExecDestroy(x->x));
    gp_u64map_del(&s->execs, id, NULL);
    graph_unref(s, x->g);
    free(x);
    return CUDA_SUCCESS;
}

static uint32_t op_graph_launch(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r), sid = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    exec_rec *x;
    CUstream st;
    if (!exec_of(s, id, &x))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(stream_of(s, sid, &st));
    return s->cu.cuGraphLaunch(x->x, st);
}

static uint32_t op_graph_upload(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t id = gp_r_u64(r), sid = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    exec_rec *x;
    CUstream st;
    if (!exec_of(s, id, &x))
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(stream_of(s, sid, &st));
    return s->cu.cuGraphUpload(x->x, st);
}

/* ---- stream capture ---- */

static uint32_t op_capture_begin(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), gid = gp_r_u64(r);
    uint32_t mode = gp_r_u32(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    void *old;
    CHECK(stream_of(s, sid, &st));
    if (!id_ok(gid) || map_get(&s->graphs, gid, &old))
        return CUDA_ERROR_INVALID_VALUE;
    graph_rec *g = calloc(1, sizeof *g);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint32_t rc = s->cu.cuStreamBeginCapture_v2(st, (CUstreamCaptureMode)mode);
    if (rc != CUDA_SUCCESS) {
        free(g);
        return rc;
    }
    CUstreamCaptureStatus status;
    cuuint64_t cap_id;
    rc = s->cu.cuStreamGetCaptureInfo_v2(st, &status, &cap_id, &g->g, NULL, NULL);
    g->ctx = s->cur_ctx;
    g->origin = st;
    g->capturing = true;
    g->refs = 1;
    if (rc == CUDA_SUCCESS)
        rc = map_new(&s->graphs, gid, g);
    if (rc != CUDA_SUCCESS) {
        CUgraph dropped = NULL;
        if (s->cu.cuStreamEndCapture(st, &dropped) == CUDA_SUCCESS && dropped)
            s->cu.cuGraphDestroy(dropped);
        free(g);
    }
    return rc;
}

/* The capture that stream st began (the graph's id in *gid). */
static graph_rec *capture_of(session *s, CUstream st, uint64_t *gid)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->graphs, &i, &k, &v);) {
        graph_rec *g = u2h(v);
        if (g->capturing && g->origin == st) {
            *gid = k;
            return g;
        }
    }
    return NULL;
}

static uint32_t op_capture_end(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    CHECK(stream_of(s, sid, &st));
    CUgraph g = NULL;
    uint64_t gid = 0;
    uint32_t rc = s->cu.cuStreamEndCapture(st, &g);
    graph_rec *rec = capture_of(s, st, &gid);
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (rec == NULL)
        return rc == CUDA_SUCCESS ? CUDA_ERROR_ILLEGAL_STATE : rc;
    if (rc == CUDA_SUCCESS) {
        rec->g = g;
        rec->capturing = false;
        rec->origin = NULL;
    } else if (s->cu.cuStreamIsCapturing(st, &status) == CUDA_SUCCESS &&
               status == CU_STREAM_CAPTURE_STATUS_NONE) {
        /* the capture ended without a graph (invalidated, unjoined): nothing it staged ever ran */
        nodes_forget(s, gid);
        gp_u64map_del(&s->graphs, gid, NULL);
        stages_free(s, rec->stages);
        free(rec);
    }
    return rc;
}

static uint32_t op_capture_status(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    CHECK(stream_of(s, sid, &st));
    CHECK(s->cu.cuStreamIsCapturing(st, &status));
    gp_w_u32(o, (uint32_t)status);
    return CUDA_SUCCESS;
}

static uint32_t op_capture_info(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r);
    DECODED(s, r);
    CUstream st;
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    cuuint64_t cap_id = 0;
    CUgraph g = NULL;
    const CUgraphNode *deps = NULL;
    size_t n = 0;
    CHECK(stream_of(s, sid, &st));
    CHECK(s->cu.cuStreamGetCaptureInfo_v2(st, &status, &cap_id, &g, &deps, &n));
    uint64_t gid = status == CU_STREAM_CAPTURE_STATUS_ACTIVE ? graph_id_of(s, g) : 0;
    if (gid == 0)
        n = 0;
    gp_w_u32(o, (uint32_t)status);
    gp_w_u64(o, cap_id);
    gp_w_u64(o, gid);
    gp_w_u32(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        uint64_t id = node_id_of(s, gid, deps[i]);
        if (id == 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
        gp_w_u64(o, id);
    }
    return CUDA_SUCCESS;
}

static uint32_t op_capture_mode(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint32_t mode = gp_r_u32(r);
    DECODED(s, r);
    (void)o;
    CUstreamCaptureMode m = (CUstreamCaptureMode)mode;
    return s->cu.cuThreadExchangeStreamCaptureMode(&m);
}

/* The node the capture on st added last (its dependency set is that one node), or NULL. */
static CUgraphNode captured_last(session *s, CUstream st)
{
    CUstreamCaptureStatus status;
    const CUgraphNode *deps = NULL;
    size_t n = 0;
    if (s->cu.cuStreamGetCaptureInfo_v2(st, &status, NULL, NULL, &deps, &n) != CUDA_SUCCESS ||
        status != CU_STREAM_CAPTURE_STATUS_ACTIVE || n != 1)
        return NULL;
    return deps[0];
}

/* The start of CAPTURE_HOST and CAPTURE_COPY: the stream, and the capturing graph it works for. */
static uint32_t capture_op_begin(session *s, uint64_t sid, uint64_t gid, uint64_t id, CUstream *st,
                                 graph_rec **g)
{
    void *old;
    CHECK(stream_of(s, sid, st));
    if (!graph_of(s, gid, g) || !(*g)->capturing || !id_ok(id) || map_get(&s->nodes, id, &old))
        return CUDA_ERROR_INVALID_VALUE;
    /* the stream must be capturing into that very graph: otherwise the host function or copy would run at
     * once, on a stage the graph frees when it goes */
    CUstreamCaptureStatus status;
    CUgraph into = NULL;
    if (s->cu.cuStreamGetCaptureInfo_v2(*st, &status, NULL, &into, NULL, NULL) != CUDA_SUCCESS ||
        status != CU_STREAM_CAPTURE_STATUS_ACTIVE || into != (*g)->g)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

static uint32_t op_capture_host(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), gid = gp_r_u64(r), id = gp_r_u64(r);
    DECODED(s, r);
    (void)o;
    CUstream st;
    graph_rec *g;
    stage *sg;
    CHECK(capture_op_begin(s, sid, gid, id, &st, &g));
    CHECK(stage_new(s, id, STAGE_HOST, 0, &sg));
    uint32_t rc = s->cu.cuLaunchHostFunc(st, stage_node, sg);
    if (rc != CUDA_SUCCESS) {
        stages_free(s, sg);
        return rc;
    }
    sg->next = g->stages;
    g->stages = sg;
    CUgraphNode n = captured_last(s, st);
    return n ? node_new(s, id, gid, n, n) : CUDA_SUCCESS;
}

static uint32_t op_capture_copy(session *s, gp_rbuf *r, gp_wbuf *o)
{
    uint64_t sid = gp_r_u64(r), gid = gp_r_u64(r), id = gp_r_u64(r);
    copy_desc cd;
    copy_read(r, &cd);
    DECODED(s, r);
    (void)o;
    CUstream st;
    graph_rec *g;
    stage *sg;
    CUDA_MEMCPY3D m;
    int kind = copy_stage_kind(&cd);
    CHECK(capture_op_begin(s, sid, gid, id, &st, &g));
    if (kind < 0 || copy_bytes(&cd) > SIZE_MAX / 2)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK(stage_new(s, id, kind, (size_t)copy_bytes(&cd), &sg));
    uint32_t rc = copy_build(s, &cd, sg->buf, &m);
    CUgraphNode a = NULL, b = NULL;
    if (rc == CUDA_SUCCESS && kind == STAGE_FETCH) {
        rc = s->cu.cuLaunchHostFunc(st, stage_node, sg);
        a = captured_last(s, st);
        if (rc == CUDA_SUCCESS)
            rc = s->cu.cuMemcpy3DAsync_v2(&m, st);
    } else if (rc == CUDA_SUCCESS) {
        rc = s->cu.cuMemcpy3DAsync_v2(&m, st);
        a = captured_last(s, st);
        if (rc == CUDA_SUCCESS)
            rc = s->cu.cuLaunchHostFunc(st, stage_node, sg);
    }
    if (rc == CUDA_SUCCESS)
        b = captured_last(s, st);
    /* a stage the capture may hold lives with the graph, whether or not all of it was captured */
    sg->next = g->stages;
    g->stages = sg;
    if (rc == CUDA_SUCCESS && a && b)
        rc = node_new(s, id, gid, a, b);
    return rc;
}

/* Normally taken by the reader thread; here only when nothing waits for it. */
static uint32_t op_stage_fill(session *s, gp_rbuf *r, gp_wbuf *o)
{
    (void)gp_r_u64(r);
    (void)gp_r_u64(r);
    size_t n;
    (void)gp_r_blob(r, &n);
    DECODED(s, r);
    (void)o;
    return CUDA_SUCCESS;
}

/* ---- the end of a context, and of the session ---- */

/* Drops from map (and its owner map) every id made in ctx; for modules, their functions too. */
static void owned_forget(session *s, gp_u64map *map, gp_u64map *owner, uint64_t ctx, bool modules)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(owner, &i, &k, &v);)
        if (v == ctx) {
            gp_u64map_del(owner, k, NULL);
            gp_u64map_del(map, k, NULL);
            if (modules)
                module_funcs_forget(s, k);
        }
}

static void ctx_objects_forget(session *s, uint64_t ctx)
{
    owned_forget(s, &s->streams, &s->stream_ctx, ctx, false);
    owned_forget(s, &s->events, &s->event_ctx, ctx, false);
    owned_forget(s, &s->modules, &s->module_ctx, ctx, true);
    owned_forget(s, &s->hostmem, &s->hostmem_ctx, ctx, false);
    for (graph_rec *g = s->grave; g; g = g->next) /* freed graphs a launch may still have run */
        if (g->ctx == ctx)
            for (stage *st = g->stages; st; st = st->next)
                st->buf = NULL; /* the context's pinned memory went with it */
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->execs, &i, &k, &v);) {
        exec_rec *x = u2h(v);
        if (x->ctx == ctx) {
            gp_u64map_del(&s->execs, k, NULL);
            graph_unref(s, x->g);
            free(x);
        }
    }
    for (size_t i = 0; gp_u64map_next(&s->graphs, &i, &k, &v);) {
        graph_rec *g = u2h(v);
        if (g->ctx == ctx && !g->capturing) {
            for (stage *st = g->stages; st; st = st->next)
                st->buf = NULL; /* the context's pinned memory went with it */
            nodes_forget(s, k);
            gp_u64map_del(&s->graphs, k, NULL);
            graph_unref(s, g);
        }
    }
    for (size_t i = 0; gp_u64map_next(&s->mipmaps, &i, &k, &v);)
        if (((obj_rec *)u2h(v))->ctx == ctx) {
            levels_forget(s, k);
            gp_u64map_del(&s->mipmaps, k, NULL);
            free(u2h(v));
        }
    for (size_t i = 0; gp_u64map_next(&s->arrays, &i, &k, &v);)
        if (((array_rec *)u2h(v))->ctx == ctx) {
            gp_u64map_del(&s->arrays, k, NULL);
            free(u2h(v));
        }
}

/* Each object is destroyed in its context (still alive: ctx_objects_forget dropped the others). */
static bool ctx_enter(session *s, uint64_t ctx)
{
    void *c = NULL;
    if (ctx != 0 && !map_get(&s->ctxs, ctx, &c))
        return false;
    return s->cu.cuCtxSetCurrent(c) == CUDA_SUCCESS;
}

static void graphs_arrays_free(session *s)
{
    uint64_t k, v;
    for (size_t i = 0; gp_u64map_next(&s->execs, &i, &k, &v);) {
        exec_rec *x = u2h(v);
        if (ctx_enter(s, x->ctx))
            s->cu.cuGraphExecDestroy(x->x);
        x->g->launched = false; /* nothing runs after the session: its stages can go */
        graph_unref(s, x->g);
        free(x);
    }
    for (size_t i = 0; gp_u64map_next(&s->graphs, &i, &k, &v);) {
        graph_rec *g = u2h(v);
        if (!g->capturing && ctx_enter(s, g->ctx))
            s->cu.cuGraphDestroy(g->g);
        g->launched = false;
        graph_unref(s, g);
    }
    while (s->grave) {
        graph_rec *g = s->grave;
        s->grave = g->next;
        if (!ctx_enter(s, g->ctx))
            for (stage *st = g->stages; st; st = st->next)
                st->buf = NULL; /* its context, gone, took the staging buffers */
        stages_free(s, g->stages);
        free(g);
    }
    for (size_t i = 0; gp_u64map_next(&s->nodes, &i, &k, &v);)
        free(u2h(v));
    for (size_t i = 0; gp_u64map_next(&s->arrays, &i, &k, &v);) {
        array_rec *a = u2h(v);
        if (a->mipmap == 0 && ctx_enter(s, a->ctx))
            s->cu.cuArrayDestroy(a->a);
        free(a);
    }
    for (size_t i = 0; gp_u64map_next(&s->mipmaps, &i, &k, &v);) {
        obj_rec *m = u2h(v);
        if (ctx_enter(s, m->ctx))
            s->cu.cuMipmappedArrayDestroy(m->h);
        free(m);
    }
    gp_u64map_free(&s->arrays);
    gp_u64map_free(&s->mipmaps);
    gp_u64map_free(&s->graphs);
    gp_u64map_free(&s->nodes);
    gp_u64map_free(&s->node_ids);
    gp_u64map_free(&s->execs);
}

typedef struct op_entry {
    op_fn fn;
    bool sync; /* a synchronizing call: returns (and clears) the pending asynchronous error */
} op_entry;

static const op_entry g_ops[GP_OP__END] = {
    [GP_OP_INIT] = {op_init, false},
    [GP_OP_DRIVER_VERSION] = {op_driver_version, false},
    [GP_OP_DEVICE_COUNT] = {op_device_count, false},
    [GP_OP_DEVICE_INFO] = {op_device_info, false},
    [GP_OP_PRIMARY_RETAIN] = {op_primary_retain, false},
    [GP_OP_PRIMARY_RELEASE] = {op_primary_release, false},
    [GP_OP_PRIMARY_STATE] = {op_primary_state, false},
    [GP_OP_PRIMARY_FLAGS] = {op_primary_flags, false},
    [GP_OP_PRIMARY_RESET] = {op_primary_reset, false},
    [GP_OP_CTX_CREATE] = {op_ctx_create, false},
    [GP_OP_CTX_DESTROY] = {op_ctx_destroy, false},
    [GP_OP_CTX_SYNC] = {op_ctx_sync, true},
    [GP_OP_CTX_SET_LIMIT] = {op_ctx_set_limit, false},
    [GP_OP_CTX_GET_LIMIT] = {op_ctx_get_limit, false},
    [GP_OP_MEM_ALLOC] = {op_mem_alloc, false},
    [GP_OP_MEM_FREE] = {op_mem_free, false},
    [GP_OP_MEM_INFO] = {op_mem_info, false},
    [GP_OP_MEM_ALLOC_PITCH] = {op_mem_alloc_pitch, false},
    [GP_OP_MEM_RANGE] = {op_mem_range, false},
    [GP_OP_HTOD] = {op_htod, true}, /* only its replied (last) piece reaches the client */
    [GP_OP_DTOH] = {op_dtoh, true},
    [GP_OP_DTOD] = {op_dtod, false},
    [GP_OP_MEMSET] = {op_memset, false},
    [GP_OP_MEMCPY_3D] = {op_memcpy_3d, false},
    [GP_OP_STREAM_CREATE] = {op_stream_create, false},
    [GP_OP_STREAM_DESTROY] = {op_stream_destroy, false},
    [GP_OP_STREAM_SYNC] = {op_stream_sync, true},
    [GP_OP_STREAM_QUERY] = {op_stream_query, false},
    [GP_OP_STREAM_WAIT_EVENT] = {op_stream_wait_event, false},
    [GP_OP_HOST_FUNC] = {op_host_func, false},
    [GP_OP_CALLBACK_DONE] = {op_callback_done, false},
    [GP_OP_EVENT_CREATE] = {op_event_create, false},
    [GP_OP_EVENT_DESTROY] = {op_event_destroy, false},
    [GP_OP_EVENT_RECORD] = {op_event_record, false},
    [GP_OP_EVENT_SYNC] = {op_event_sync, true},
    [GP_OP_EVENT_QUERY] = {op_event_query, false},
    [GP_OP_EVENT_ELAPSED] = {op_event_elapsed, false},
    [GP_OP_MODULE_HAVE] = {op_module_have, false},
    [GP_OP_MODULE_LOAD] = {op_module_load, false},
    [GP_OP_MODULE_UNLOAD] = {op_module_unload, false},
    [GP_OP_MODULE_FUNC] = {op_module_func, false},
    [GP_OP_MODULE_GLOBAL] = {op_module_global, false},
    [GP_OP_FUNC_ATTR] = {op_func_attr, false},
    [GP_OP_LAUNCH] = {op_launch, false},
    [GP_OP_MODULE_FUNC_COUNT] = {op_module_func_count, false},
    [GP_OP_LAUNCH_COOP] = {op_launch_coop, false},
    [GP_OP_OCCUPANCY] = {op_occupancy, false},
    [GP_OP_CLIENT_ID] = {op_client_id, false},
    [GP_OP_NVML_INIT] = {op_nvml_init, false},
    [GP_OP_NVML_SYSTEM] = {op_nvml_system, false},
    [GP_OP_NVML_HANDLE] = {op_nvml_handle, false},
    [GP_OP_NVML_STR] = {op_nvml_str, false},
    [GP_OP_NVML_U32] = {op_nvml_u32, false},
    [GP_OP_NVML_PAIR] = {op_nvml_pair, false},
    [GP_OP_NVML_U64] = {op_nvml_u64, false},
    [GP_OP_NVML_MEMORY] = {op_nvml_memory, false},
    [GP_OP_NVML_UTILIZATION] = {op_nvml_utilization, false},
    [GP_OP_NVML_PCI] = {op_nvml_pci, false},
    [GP_OP_NVML_PROCS] = {op_nvml_procs, false},
    [GP_OP_NVML_PROC_UTIL] = {op_nvml_proc_util, false},
    [GP_OP_POOL_DEVICE] = {op_pool_device, false},
    [GP_OP_POOL_SET_CURRENT] = {op_pool_set_current, false},
    [GP_OP_POOL_CREATE] = {op_pool_create, false},
    [GP_OP_POOL_DESTROY] = {op_pool_destroy, false},
    [GP_OP_POOL_SET_ATTR] = {op_pool_set_attr, false},
    [GP_OP_POOL_GET_ATTR] = {op_pool_get_attr, false},
    [GP_OP_POOL_TRIM] = {op_pool_trim, false},
    [GP_OP_MEM_ALLOC_ASYNC] = {op_mem_alloc_async, false},
    [GP_OP_MEM_FREE_ASYNC] = {op_mem_free_async, false},
    [GP_OP_VMM_GRANULARITY] = {op_vmm_granularity, false},
    [GP_OP_VMM_CREATE] = {op_vmm_create, false},
    [GP_OP_VMM_RELEASE] = {op_vmm_release, false},
    [GP_OP_VMM_RESERVE] = {op_vmm_reserve, false},
    [GP_OP_VMM_ADDRESS_FREE] = {op_vmm_address_free, false},
    [GP_OP_VMM_MAP] = {op_vmm_map, false},
    [GP_OP_VMM_UNMAP] = {op_vmm_unmap, false},
    [GP_OP_VMM_SET_ACCESS] = {op_vmm_set_access, false},
    [GP_OP_VMM_GET_ACCESS] = {op_vmm_get_access, false},
    [GP_OP_VMM_PROPS] = {op_vmm_props, false},
    [GP_OP_MEM_ALLOC_MANAGED] = {op_mem_alloc_managed, false},
    [GP_OP_MEM_HOST_ALLOC] = {op_mem_host_alloc, false},
    [GP_OP_MEM_HOST_FREE] = {op_mem_host_free, false},
    [GP_OP_ARRAY_CREATE] = {op_array_create, false},
    [GP_OP_ARRAY_DESTROY] = {op_array_destroy, false},
    [GP_OP_ARRAY_MEM_REQ] = {op_array_mem_req, false},
    [GP_OP_MIPMAP_CREATE] = {op_mipmap_create, false},
    [GP_OP_MIPMAP_DESTROY] = {op_mipmap_destroy, false},
    [GP_OP_MIPMAP_LEVEL] = {op_mipmap_level, false},
    [GP_OP_MIPMAP_MEM_REQ] = {op_mipmap_mem_req, false},
    [GP_OP_HTOA] = {op_htoa, true}, /* as HTOD */
    [GP_OP_ATOH] = {op_atoh, true},
    [GP_OP_ARRAY_LINEAR] = {op_array_linear, false},
    [GP_OP_MEMCPY_BOX] = {op_memcpy_box, false},
    [GP_OP_GRAPH_CREATE] = {op_graph_create, false},
    [GP_OP_GRAPH_DESTROY] = {op_graph_destroy, false},
    [GP_OP_GRAPH_ADD_EMPTY] = {op_graph_add_empty, false},
    [GP_OP_GRAPH_ADD_KERNEL] = {op_graph_add_kernel, false},
    [GP_OP_GRAPH_ADD_MEMSET] = {op_graph_add_memset, false},
    [GP_OP_GRAPH_ADD_MEMCPY] = {op_graph_add_memcpy, false},
    [GP_OP_GRAPH_ADD_HOST] = {op_graph_add_host, false},
    [GP_OP_GRAPH_NODES] = {op_graph_nodes, false},
    [GP_OP_GRAPH_INSTANTIATE] = {op_graph_instantiate, false},
    [GP_OP_GRAPH_EXEC_DESTROY] = {op_graph_exec_destroy, false},
    [GP_OP_GRAPH_LAUNCH] = {op_graph_launch, false},
    [GP_OP_GRAPH_UPLOAD] = {op_graph_upload, false},
    [GP_OP_CAPTURE_BEGIN] = {op_capture_begin, false},
    [GP_OP_CAPTURE_END] = {op_capture_end, false},
    [GP_OP_CAPTURE_STATUS] = {op_capture_status, false},
    [GP_OP_CAPTURE_INFO] = {op_capture_info, false},
    [GP_OP_CAPTURE_MODE] = {op_capture_mode, false},
    [GP_OP_CAPTURE_HOST] = {op_capture_host, false},
    [GP_OP_CAPTURE_COPY] = {op_capture_copy, false},
    [GP_OP_STAGE_FILL] = {op_stage_fill, false},
};

/* Gives a buffer its first memory: wire.c's gp_w_reserve(w, 0) on a buffer that never grew computes NULL + 0,
 * which UBSan stops at (a frame without payload does that in gp_wire_recv). */
static void prime(gp_wbuf *w)
{
    gp_w_reserve(w, 1);
    gp_wbuf_reset(w);
}

/* Sends one reply; a protocol error carries a message (str) instead of the op's fields. */
static int reply(int fd, const gp_wire_hdr *req, uint32_t status, const void *p, size_t n)
{
    gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                     .op = req->op,
                     .flags = GP_WIRE_F_REPLY,
                     .seq = req->seq,
                     .status = status};
    return send_frame(fd, &h, p, n);
}

static int reply_error(int fd, const gp_wire_hdr *req, uint32_t status, const char *msg)
{
    gp_wbuf w;
    gp_wbuf_init(&w);
    gp_w_str(&w, msg);
    int rc = reply(fd, req, status, w.ok ? w.p : NULL, w.ok ? w.len : 0);
    gp_wbuf_free(&w);
    return rc;
}

/* A request that does not decode: the client and the worker no longer agree on the stream, so it ends. */
static int malformed(session *s, const gp_wire_hdr *h, const char *name)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s request of %u bytes does not decode: %s", name, h->length, s->why);
    gp_log(GP_LOG_WARN, COMPONENT, "session %016llx: %s; ending the session", (unsigned long long)s->id, msg);
    reply_error(s->fd, h, GP_WIRE_E_MALFORMED, msg);
    return EXIT_PROTO;
}

/* Runs one request. Returns GO_ON, or an EXIT_* status to end the session with. */
static int serve_one(session *s, const gp_wire_hdr *h)
{
    gp_rbuf r;
    gp_rbuf_init(&r, s->pl, s->pl_len);
    gp_wbuf_reset(&s->out);
    s->req = *h;
    s->flags = h->flags;
    s->why[0] = '\0';
    if (s->ndeferred && h->op != GP_OP_DTOH && bulk_replies(s, false) < 0)
        return EXIT_GONE; /* deferred replies go out before anything else runs */
    bool async = h->flags & GP_WIRE_F_ASYNC;
    const char *name = gp_wire_op_name(h->op);
    if (h->flags & GP_WIRE_F_REPLY) {
        gp_log(GP_LOG_WARN, COMPONENT,
               "session %016llx: the client sent a reply frame (op %u); ending the session",
               (unsigned long long)s->id, h->op);
        reply_error(s->fd, h, GP_WIRE_E_MALFORMED, "a reply frame sent to the worker");
        return EXIT_PROTO;
    }
    if (h->op == GP_OP_BYE) {
        reply(s->fd, h, CUDA_SUCCESS, NULL, 0);
        gp_log(GP_LOG_INFO, COMPONENT, "session %016llx: the client said goodbye", (unsigned long long)s->id);
        return EXIT_BYE;
    }
    const op_entry *e = h->op < GP_OP__END ? &g_ops[h->op] : NULL;
    if (!e || !e->fn) {
        if (h->op == GP_OP_HELLO) {
            reply_error(s->fd, h, GP_WIRE_E_MALFORMED, "HELLO sent twice");
            return EXIT_PROTO;
        }
        gp_log(GP_LOG_WARN, COMPONENT,
               "session %016llx: op %u (%s) is not implemented; answered NOT_SUPPORTED",
               (unsigned long long)s->id, h->op, name);
        if (!async && reply(s->fd, h, CUDA_ERROR_NOT_SUPPORTED, NULL, 0) < 0)
            return EXIT_GONE;
        return GO_ON;
    }
    const char *bad;
    if (!gp_worker_request_ok(h->op, s->pl, s->pl_len, &bad)) {
        snprintf(s->why, sizeof s->why, "%s", bad);
        return malformed(s, h, name);
    }
    uint32_t status;
    bool known_ctx = true;
    if (GP_WIRE_OP_HAS_CTX(h->op)) {
        uint64_t cid = gp_r_u64(&r);
        void *c = NULL;
        /* ctx 0: none current, and the driver answers INVALID_CONTEXT for what needs one */
        if (cid != 0 && !map_get(&s->ctxs, cid, &c))
            known_ctx = false;
        else if (s->cu.cuCtxSetCurrent(c) == CUDA_SUCCESS)
            s->cur = c;
        s->cur_ctx = cid;
    }
    if (!r.ok) {
        snprintf(s->why, sizeof s->why, "no ctx field");
        status = GP_WIRE_E_MALFORMED;
    } else if (!known_ctx) {
        status = CUDA_ERROR_INVALID_CONTEXT;
    } else {
        status = e->fn(s, &r, &s->out);
    }
    if (status == GP_WIRE_E_MALFORMED)
        return malformed(s, h, name);
    if (status == DEFERRED)
        return GO_ON;
    if (s->ndeferred && bulk_replies(s, false) < 0) /* a DTOH not staged after staged ones */
        return EXIT_GONE;
    if (!s->out.ok) /* NVML's replies carry an nvmlReturn_t */
        status = GP_WIRE_OP_IS_NVML(h->op) ? NVML_ERROR_MEMORY : CUDA_ERROR_OUT_OF_MEMORY;
    if (async) {
        if (status != CUDA_SUCCESS && s->pending == CUDA_SUCCESS) {
            s->pending = status;
            gp_log(GP_LOG_DEBUG, COMPONENT,
                   "session %016llx: asynchronous %s failed (%u); kept for the next sync",
                   (unsigned long long)s->id, name, status);
        }
        return GO_ON;
    }
    if (e->sync && s->pending != CUDA_SUCCESS) {
        status = s->pending; /* it happened first */
        s->pending = CUDA_SUCCESS;
    }
    bool fields = status == CUDA_SUCCESS;
    if (reply(s->fd, h, status, fields ? s->out.p : NULL, fields ? s->out.len : 0) < 0)
        return EXIT_GONE;
    return GO_ON;
}

static int cu_load(cu_api *cu, char *err, size_t errlen)
{
    /* RTLD_GLOBAL, and every symbol through RTLD_DEFAULT: a preloaded vGPU library comes first */
    if (!dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(err, errlen, "the worker cannot load libcuda.so.1: %s", dlerror());
        return -1;
    }
#define RESOLVE(name)                                                                         \
    if (!(*(void **)&cu->name = dlsym(RTLD_DEFAULT, #name))) {                                \
        snprintf(err, errlen, "the worker's libcuda.so.1 has no %s (driver too old)", #name); \
        return -1;                                                                            \
    }
    CU_FUNCS(RESOLVE)
    CU_FUNCS_POOL_VMM(RESOLVE)
    CU_FUNCS_GRAPH(RESOLVE)
#undef RESOLVE
    *(void **)&cu->cuFuncGetParamInfo = dlsym(RTLD_DEFAULT, "cuFuncGetParamInfo");
    *(void **)&cu->cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags =
        dlsym(RTLD_DEFAULT, "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags");
    *(void **)&cu->cuArrayGetMemoryRequirements = dlsym(RTLD_DEFAULT, "cuArrayGetMemoryRequirements");
    *(void **)&cu->cuMipmappedArrayGetMemoryRequirements =
        dlsym(RTLD_DEFAULT, "cuMipmappedArrayGetMemoryRequirements");
    return 0;
}

/* Mappings first (a released handle's memory goes with its last mapping), then handles, reservations, and the
 * pools the session created (memory still allocated from one stays valid until freed, as the driver says),
 * all while the contexts that may own them still exist. */
static void vmm_and_pools_free(session *s)
{
    uint64_t k, v;
    if (!s->cu.cuMemUnmap) /* the driver never loaded: nothing was made */
        return;
    for (size_t i = 0; gp_u64map_next(&s->mapped, &i, &k, &v);)
        s->cu.cuMemUnmap(k, (size_t)v);
    for (size_t i = 0; gp_u64map_next(&s->vmm, &i, &k, &v);)
        s->cu.cuMemRelease(v);
    for (size_t i = 0; gp_u64map_next(&s->reserved, &i, &k, &v);)
        s->cu.cuMemAddressFree(k, (size_t)v);
    for (size_t i = 0; gp_u64map_next(&s->made_pools, &i, &k, &v);)
        s->cu.cuMemPoolDestroy(u2h(v));
}

/* A clean end: what the session made is given back (a killed session's is reclaimed by the driver). */
static void session_free(session *s)
{
    if (s->cu.cuMemFreeHost)
        bulk_release(s);
    uint64_t k, v;
    /* a launched graph may still run a staged copy into a buffer graphs_arrays_free frees: every context
     * finishes its work first (host functions no longer wait: the reader has marked the client gone) */
    for (size_t i = 0; s->cu.cuCtxSynchronize && gp_u64map_next(&s->ctxs, &i, &k, &v);)
        if (s->cu.cuCtxSetCurrent(u2h(v)) == CUDA_SUCCESS)
            s->cu.cuCtxSynchronize();
    graphs_arrays_free(s);
    for (size_t i = 0; gp_u64map_next(&s->funcs, &i, &k, &v);)
        free(u2h(v));
    vmm_and_pools_free(s);
    for (size_t i = 0; s->cu.cuCtxDestroy_v2 && gp_u64map_next(&s->owned, &i, &k, &v);)
        s->cu.cuCtxDestroy_v2(u2h(v));
    for (int d = 0; d < 64 && s->cu.cuDevicePrimaryCtxRelease_v2; d++)
        while (s->primary[d]-- > 0)
            s->cu.cuDevicePrimaryCtxRelease_v2(d);
    if (s->nvml_up)
        s->nv.nvmlShutdown();
    if (s->registered)
        registry_del(s->cache_dir, (long)getpid());
    gp_u64map_free(&s->ctxs);
    gp_u64map_free(&s->owned);
    gp_u64map_free(&s->streams);
    gp_u64map_free(&s->events);
    gp_u64map_free(&s->modules);
    gp_u64map_free(&s->funcs);
    gp_u64map_free(&s->hostmem); /* the memory itself dies with the contexts, or the process */
    gp_u64map_free(&s->stream_ctx);
    gp_u64map_free(&s->event_ctx);
    gp_u64map_free(&s->module_ctx);
    gp_u64map_free(&s->hostmem_ctx);
    gp_u64map_free(&s->pools);
    gp_u64map_free(&s->made_pools);
    gp_u64map_free(&s->vmm);
    gp_u64map_free(&s->reserved);
    gp_u64map_free(&s->mapped);
    gp_wbuf_free(&s->in);
    gp_wbuf_free(&s->out);
}

/* Loads the driver, answers HELLO (seq), serves until the client leaves. Returns an EXIT_* status. */
static int session_serve(int fd, uint64_t id, uint32_t hello_seq, const char *cache_dir, const char *client)
{
    session *s = calloc(1, sizeof *s);
    gp_wire_hdr hello = {.op = GP_OP_HELLO, .seq = hello_seq};
    if (!s) {
        reply_error(fd, &hello, CUDA_ERROR_OUT_OF_MEMORY, "the worker is out of memory");
        return EXIT_FAIL;
    }
    s->fd = fd;
    s->id = id;
    s->cache_dir = cache_dir;
    gp_wbuf_init(&s->in);
    gp_wbuf_init(&s->out);
    prime(&s->in);
    prime(&s->out);
    char err[300];
    if (cu_load(&s->cu, err, sizeof err) < 0) {
        gp_log(GP_LOG_ERROR, COMPONENT, "session %016llx: %s", (unsigned long long)id, err);
        reply_error(fd, &hello, CUDA_ERROR_NO_DEVICE, err);
        session_free(s);
        free(s);
        return EXIT_FAIL;
    }
    uint32_t rc = s->cu.cuInit(0);
    if (rc != CUDA_SUCCESS) /* the client's own INIT will hear it */
        gp_log(GP_LOG_WARN, COMPONENT, "session %016llx: cuInit answered %u", (unsigned long long)id, rc);
    gp_w_u32(&s->out, GP_WIRE_VERSION);
    gp_w_u64(&s->out, id);
    gp_w_str(&s->out, "gpupool-worker " GP_VERSION);
    if (reply(fd, &hello, CUDA_SUCCESS, s->out.p, s->out.len) < 0) {
        session_free(s);
        free(s);
        return EXIT_GONE;
    }
    gp_log(GP_LOG_INFO, COMPONENT, "session %016llx: serving %s (pid %d)", (unsigned long long)id, client,
           (int)getpid());
    int status = GO_ON;
    while (status == GO_ON) {
        gp_wire_hdr h;
        const char *why = NULL;
        if (s->ndeferred && !frame_waiting(s) && bulk_replies(s, false) < 0) {
            status = EXIT_GONE;
            break;
        }
        if (next_frame(s, &h, &why) < 0) {
            if (errno == EPROTO) {
                gp_log(GP_LOG_WARN, COMPONENT, "session %016llx: bad frame header: %s; ending the session",
                       (unsigned long long)id, why);
                reply_error(fd, &h, GP_WIRE_E_MALFORMED, why);
                status = EXIT_PROTO;
            } else {
                gp_log(why && strstr(why, "middle") ? GP_LOG_WARN : GP_LOG_INFO, COMPONENT,
                       "session %016llx: %s", (unsigned long long)id, why ? why : strerror(errno));
                status = errno == ENOMEM ? EXIT_FAIL : EXIT_GONE;
            }
            break;
        }
        status = serve_one(s, &h);
    }
    reader_stop(s);
    session_free(s);
    free(s);
    return status;
}

int gp_worker_session_main(int fd, uint64_t session, uint32_t hello_seq, const char *cache_dir,
                           const char *client)
{
    signal(SIGPIPE, SIG_IGN);
    int st = session_serve(fd, session, hello_seq, cache_dir, client);
    close(fd);
    return st;
}

/* ==== HELLO: version, token, and where the session runs ================================================= */

/* One line of the token file: "TOKEN [SLOT_DIR]", blank, or a comment ('#' to the end of the line). Splits
 * the line in place; false when it holds no token. */
static bool token_line(char *line, char **token, char **slot)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    char *p = line + strspn(line, " \t");
    if (!*p)
        return false;
    char *end = p + strcspn(p, " \t");
    char *rest = end + strspn(end, " \t");
    *end = '\0';
    size_t n = strlen(rest);
    while (n > 0 && (rest[n - 1] == ' ' || rest[n - 1] == '\t'))
        rest[--n] = '\0';
    *token = p;
    *slot = rest;
    return true;
}

/* Looks the token up in the file, comparing every line in time independent of where it matches or how long
 * the tokens are (digests are compared). 1 found (*slot_dir its slot folder or ""), 0 not, -1 unreadable. */
static int token_lookup(const char *file, const char *token, char *slot_dir, size_t len)
{
    FILE *f = fopen(file, "re");
    if (!f)
        return -1;
    unsigned char want[32], have[32];
    sha256(token, strlen(token), want);
    char line[4096 + 600], *tok, *slot;
    int found = 0;
    slot_dir[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (!token_line(line, &tok, &slot))
            continue;
        sha256(tok, strlen(tok), have);
        if (CRYPTO_memcmp(want, have, 32) == 0 && !found && token[0]) {
            found = 1;
            snprintf(slot_dir, len, "%s", slot);
        }
    }
    fclose(f);
    return found;
}

/* Counts the tokens in the file; -1 when it cannot be read. */
static int token_count(const char *file, int *with_slot)
{
    FILE *f = fopen(file, "re");
    if (!f)
        return -1;
    char line[4096 + 600], *tok, *slot;
    int n = 0;
    *with_slot = 0;
    while (fgets(line, sizeof line, f))
        if (token_line(line, &tok, &slot)) {
            n++;
            *with_slot += slot[0] != '\0';
        }
    fclose(f);
    return n;
}

static void child_exit(int fd, int status)
{
    close(fd);
    _exit(status);
}

/* The forked child of one connection: on a tls: listener the handshake, then HELLO within HELLO_TIMEOUT_S,
 * then serve here or re-exec for a slot. */
static void session_child(const gp_worker_config *c, SSL_CTX *tls, int fd, uint64_t id, const char *peer)
{
    signal(SIGPIPE, SIG_IGN);
    /* An absolute deadline for the handshake and HELLO (SO_RCVTIMEO below restarts with every byte, so a
     * client trickling bytes would hold this process): SIGALRM ends it. */
    alarm(HELLO_TIMEOUT_S + (tls ? HELLO_TIMEOUT_S : 0));
    if (tls) { /* this process becomes the pump; a child of it goes on as the session, on the plain end */
        char e[400];
        int plain = gp_tls_server(tls, fd, HELLO_TIMEOUT_S * 1000, e, sizeof e);
        if (plain < 0) {
            gp_log(GP_LOG_WARN, COMPONENT, "connection from %s: %s", peer, e);
            child_exit(fd, EXIT_REFUSED);
        }
        fd = plain;
        alarm(HELLO_TIMEOUT_S); /* the session's own deadline for HELLO */
    }
    struct timeval tv = {.tv_sec = HELLO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    gp_wire_hdr h;
    /* a connection closed without a word is a liveness probe (the agent's, docs/agent.md): no warning */
    char first;
    ssize_t got = recv(fd, &first, 1, MSG_PEEK);
    if (got == 0) {
        gp_log(GP_LOG_DEBUG, COMPONENT, "connection from %s closed without a word (a probe)", peer);
        child_exit(fd, EXIT_GONE);
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        gp_log(GP_LOG_WARN, COMPONENT, "connection from %s: no HELLO: none within %d s", peer,
               HELLO_TIMEOUT_S);
        child_exit(fd, EXIT_REFUSED);
    }
    gp_wbuf in;
    gp_wbuf_init(&in);
    prime(&in);
    const char *why = NULL;
    if (gp_wire_recv(fd, &h, &in, &why) < 0) {
        int e = errno;
        if (e == EPROTO) {
            bool version = why && strstr(why, "version");
            char msg[160];
            snprintf(msg, sizeof msg, "the worker speaks protocol version %d (frames of version %u refused)",
                     GP_WIRE_VERSION, h.version);
            reply_error(fd, &h, version ? GP_WIRE_E_VERSION : GP_WIRE_E_MALFORMED, version ? msg : why);
        }
        gp_log(GP_LOG_WARN, COMPONENT, "connection from %s: no HELLO: %s", peer,
               e == EAGAIN || e == EWOULDBLOCK ? "none within 5 s"
               : why                           ? why
                                               : strerror(e));
        gp_wbuf_free(&in);
        child_exit(fd, EXIT_REFUSED);
    }
    gp_rbuf r;
    gp_rbuf_init(&r, in.p, in.len);
    uint32_t pmin = gp_r_u32(&r), pmax = gp_r_u32(&r);
    char token[GP_WIRE_MAX_STR + 1], client[GP_WIRE_MAX_STR + 1];
    gp_r_str(&r, token, sizeof token);
    gp_r_str(&r, client, sizeof client);
    uint32_t cpid = gp_r_u32(&r);
    bool done = gp_r_done(&r);
    gp_wbuf_free(&in);
    if (h.op != GP_OP_HELLO || h.flags != 0 || !done) {
        reply_error(fd, &h, GP_WIRE_E_MALFORMED,
                    h.op != GP_OP_HELLO ? "the first request must be HELLO" : "HELLO does not decode");
        gp_log(GP_LOG_WARN, COMPONENT, "connection from %s: the first frame is not a valid HELLO (op %u)",
               peer, h.op);
        child_exit(fd, EXIT_PROTO);
    }
    if (pmin > GP_WIRE_VERSION || pmax < GP_WIRE_VERSION) {
        char msg[160];
        snprintf(msg, sizeof msg, "the worker speaks protocol version %d; the client offers %u..%u",
                 GP_WIRE_VERSION, pmin, pmax);
        reply_error(fd, &h, GP_WIRE_E_VERSION, msg);
        gp_log(GP_LOG_WARN, COMPONENT, "connection from %s: %s", peer, msg);
        child_exit(fd, EXIT_REFUSED);
    }
    char slot[600];
    int t = token_lookup(c->token_file, token, slot, sizeof slot);
    memset(token, 0, sizeof token);
    if (t <= 0) {
        if (t < 0)
            gp_log(GP_LOG_ERROR, COMPONENT, "cannot read the token file %s: %s; refusing every client",
                   c->token_file, strerror(errno));
        gp_log(GP_LOG_WARN, COMPONENT, "connection from %s (%.200s, pid %u): wrong token; refused", peer,
               client, cpid);
        reply_error(fd, &h, GP_WIRE_E_AUTH,
                    "the worker does not accept this token (check GPUPOOL_REMOTE_TOKEN against the worker's "
                    "--token-file)");
        child_exit(fd, EXIT_REFUSED);
    }
    alarm(0);
    tv.tv_sec = 0; /* a session may be idle as long as its client likes */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char who[GP_WIRE_MAX_STR + 100];
    snprintf(who, sizeof who, "%.200s pid %u at %s", client, cpid, peer);
    if (!slot[0])
        child_exit(fd, gp_worker_session_main(fd, id, h.seq, c->cache_dir, who));

    /* a slot: the session runs under the vGPU library, which reads the slot's limits at load */
    struct stat st;
    const char *bad = NULL, *what = NULL;
    if (stat(slot, &st) != 0 || !S_ISDIR(st.st_mode))
        bad = "its slot folder is missing", what = slot;
    else if (access(c->vgpu_lib, R_OK) != 0)
        bad = "the vGPU library is missing (--vgpu-lib)", what = c->vgpu_lib;
    if (bad) {
        char msg[1200];
        snprintf(msg, sizeof msg, "the worker cannot serve this token: %s (%s)", bad, what);
        gp_log(GP_LOG_ERROR, COMPONENT, "connection from %s: %s", peer, msg);
        reply_error(fd, &h, CUDA_ERROR_OPERATING_SYSTEM, msg);
        child_exit(fd, EXIT_FAIL);
    }
    char fds[16], ids[24], seqs[16];
    snprintf(fds, sizeof fds, "%d", fd);
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    snprintf(seqs, sizeof seqs, "%u", h.seq);
    fcntl(fd, F_SETFD, 0); /* the session process inherits the connection */
    setenv("GPUPOOL_SLOT_DIR", slot, 1);
    setenv("LD_PRELOAD", c->vgpu_lib, 1);
    char *argv[] = {"gpupool",  "worker",      "--session", fds,           "--session-id",
                    ids,        "--hello-seq", seqs,        "--cache-dir", (char *)c->cache_dir,
                    "--client", who,           NULL};
    execv("/proc/self/exe", argv);
    gp_log(GP_LOG_ERROR, COMPONENT, "cannot start the session process: %s", strerror(errno));
    reply_error(fd, &h, CUDA_ERROR_OPERATING_SYSTEM, "the worker cannot start a session process");
    child_exit(fd, EXIT_FAIL);
}

/* ==== the main process: listeners, sessions, signals ==================================================== */

typedef struct live_session {
    pid_t pid;
    uint64_t id;
    uint64_t t0;
    char peer[96];
} live_session;

static void peer_name(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%u", host, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, n, "a local socket");
    }
    (void)len;
}

static const char *end_reason(int st, char *buf, size_t n)
{
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        return "no TLS handshake and HELLO within the deadline";
    if (WIFSIGNALED(st)) {
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
        return buf;
    }
    switch (WEXITSTATUS(st)) {
    case EXIT_BYE: return "the client said goodbye";
    case EXIT_GONE: return "the client disconnected";
    case EXIT_PROTO: return "a protocol error (malformed frame)";
    case EXIT_REFUSED: return "refused at HELLO";
    default: snprintf(buf, n, "a worker error (exit status %d)", WEXITSTATUS(st)); return buf;
    }
}

/* Reaps ended sessions, and takes each out of the session registry (a killed one could not). */
/* Keeps the module cache under c->cache_max bytes: while it holds more, the image used longest ago goes (its
 * mtime: stored or last loaded). Images used in the last minute stay, so that a session which has just been
 * told the worker has one still finds it. Run by the main process when sessions end. */
static void cache_prune(const gp_worker_config *c)
{
    if (c->cache_max == 0)
        return;
    DIR *d = opendir(c->cache_dir);
    if (!d)
        return;
    struct entry {
        char name[65];
        time_t mtime;
        off_t size;
    } *e = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strlen(de->d_name) != 64 || strspn(de->d_name, "0123456789abcdef") != 64 ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue; /* only images: the session registry and unfinished files are not the cache's */
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct entry *ne = realloc(e, ncap * sizeof *e);
            if (!ne)
                break;
            e = ne;
            cap = ncap;
        }
        snprintf(e[n].name, sizeof e[n].name, "%s", de->d_name);
        e[n].mtime = st.st_mtime;
        e[n].size = st.st_size;
        total += (uint64_t)st.st_size;
        n++;
    }
    time_t now = time(NULL);
    while (total > c->cache_max) {
        size_t oldest = n;
        for (size_t i = 0; i < n; i++)
            if (e[i].size >= 0 && now - e[i].mtime >= 60 && (oldest == n || e[i].mtime < e[oldest].mtime))
                oldest = i;
        if (oldest == n)
            break; /* everything left was used within the minute */
        if (unlinkat(dirfd(d), e[oldest].name, 0) == 0) {
            total -= (uint64_t)e[oldest].size;
            gp_log(GP_LOG_INFO, COMPONENT, "module cache over %llu bytes: removed %s, used longest ago",
                   (unsigned long long)c->cache_max, e[oldest].name);
        }
        e[oldest].size = -1;
    }
    free(e);
    closedir(d);
}

static void reap(live_session *live, int *nlive, const char *cache_dir)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        registry_del(cache_dir, (long)p);
        for (int i = 0; i < *nlive; i++) {
            if (live[i].pid != p)
                continue;
            char buf[64];
            gp_log(GP_LOG_INFO, COMPONENT, "session %016llx (%s, pid %d) ended after %.1f s: %s",
                   (unsigned long long)live[i].id, live[i].peer, (int)p,
                   (double)(now_ns() - live[i].t0) / 1e9, end_reason(st, buf, sizeof buf));
            live[i] = live[--*nlive];
            break;
        }
    }
}

static int mkdir_p(const char *dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

void gp_worker_config_defaults(gp_worker_config *c)
{
    memset(c, 0, sizeof *c);
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        snprintf(c->cache_dir, sizeof c->cache_dir, "%.400s/gpupool/module-cache", xdg);
    else
        snprintf(c->cache_dir, sizeof c->cache_dir, "/tmp/gpupool-%u/module-cache", (unsigned)geteuid());
    /* the vGPU library beside the binary: <prefix>/bin/gpupool -> <prefix>/lib/libgpupool-vgpu.so */
    gp_install_path("lib/libgpupool-vgpu.so", c->vgpu_lib, sizeof c->vgpu_lib);
    c->cache_max = 1ull << 30;
}

int gp_worker_run(const gp_worker_config *c, gp_err *err)
{
    if (c->nlisten == 0)
        return gp_err_set(
            err, GP_ERR_INVALID,
            "no address to listen on: give --listen unix:/path, tcp:HOST:PORT or tls:HOST:PORT");
    bool any_tls = false;
    for (int i = 0; i < c->nlisten; i++)
        any_tls |= strncmp(c->listen[i], "tls:", 4) == 0;
    SSL_CTX *tls = NULL;
    if (any_tls) {
        if (!c->tls_cert[0] || !c->tls_key[0])
            return gp_err_set(err, GP_ERR_INVALID, "a tls: address needs --tls-cert and --tls-key");
        char e[800];
        if (!(tls = gp_tls_server_ctx(c->tls_cert, c->tls_key, e, sizeof e)))
            return gp_err_set(err, GP_ERR_INVALID, "%s", e);
    }
    int with_slot = 0, ntok = token_count(c->token_file, &with_slot);
    if (ntok < 0)
        return gp_err_set(err, GP_ERR_IO, "cannot read the token file %s: %s", c->token_file,
                          strerror(errno));
    if (ntok == 0) /* the agent may keep it, adding a token per slot set as they come */
        gp_log(
            GP_LOG_WARN, COMPONENT,
            "the token file %s holds no token yet: every client is refused until a line \"TOKEN [SLOT_DIR]\" "
            "is added (it is read at every connection)",
            c->token_file);
    if (with_slot && access(c->vgpu_lib, R_OK) != 0)
        gp_log(GP_LOG_WARN, COMPONENT,
               "the vGPU library %s is missing: clients of tokens with a slot folder will be refused "
               "(--vgpu-lib)",
               c->vgpu_lib[0] ? c->vgpu_lib : "(not found)");
    char reg[PATH_MAX];
    snprintf(reg, sizeof reg, "%s/" SESSIONS_DIR, c->cache_dir);
    if (mkdir_p(c->cache_dir) < 0 || mkdir_p(reg) < 0)
        return gp_err_set(err, GP_ERR_IO, "cannot make the module cache %s: %s (give --cache-dir)", reg,
                          strerror(errno));
    cache_prune(c);

    struct pollfd pfd[GP_WORKER_MAX_LISTEN + 1];
    bool is_tls[GP_WORKER_MAX_LISTEN] = {false};
    int nl = 0;
    for (int i = 0; i < c->nlisten; i++) {
        char e[300];
        int port = 0, fd = gp_wire_listen(c->listen[i], &port, e, sizeof e);
        if (fd < 0) {
            for (int j = 0; j < nl; j++)
                close(pfd[j].fd);
            gp_tls_ctx_free(tls);
            return gp_err_set(err, GP_ERR_IO, "%s", e);
        }
        is_tls[nl] = strncmp(c->listen[i], "tls:", 4) == 0;
        pfd[nl++] = (struct pollfd){.fd = fd, .events = POLLIN};
        if (strncmp(c->listen[i], "unix:", 5) == 0) {
            fprintf(stderr, "gpupool worker: listening on %s\n", c->listen[i]);
        } else {
            bool named = strncmp(c->listen[i], "tcp:", 4) == 0 || strncmp(c->listen[i], "tls:", 4) == 0;
            const char *a = named ? c->listen[i] + 4 : c->listen[i];
            const char *colon = strrchr(a, ':');
            fprintf(stderr, "gpupool worker: listening on %s:%.*s:%d\n", is_tls[nl - 1] ? "tls" : "tcp",
                    (int)(colon - a), a, port);
        }
    }
    gp_log(GP_LOG_INFO, COMPONENT, "%d token(s) in %s, %d with a slot; module cache %s", ntok, c->token_file,
           with_slot, c->cache_dir);

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        for (int j = 0; j < nl; j++)
            close(pfd[j].fd);
        sigprocmask(SIG_SETMASK, &old, NULL);
        gp_tls_ctx_free(tls);
        return gp_err_set(err, GP_ERR_IO, "signalfd: %s", strerror(errno));
    }
    pfd[nl] = (struct pollfd){.fd = sfd, .events = POLLIN};

    live_session *live = NULL;
    int nlive = 0, caplive = 0, stop = 0;
    while (!stop) {
        if (poll(pfd, (nfds_t)nl + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            gp_log(GP_LOG_ERROR, COMPONENT, "poll: %s", strerror(errno));
            break;
        }
        if (pfd[nl].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
                    gp_log(GP_LOG_INFO, COMPONENT, "stopping on signal %u; ending %d session(s)",
                           si.ssi_signo, nlive);
                    stop = 1;
                }
            reap(live, &nlive, c->cache_dir);
            cache_prune(c);
        }
        for (int i = 0; i < nl && !stop; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd = accept4(pfd[i].fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
                    gp_log(GP_LOG_WARN, COMPONENT, "accept: %s", strerror(errno));
                continue;
            }
            if (nlive == caplive) {
                int ncap = caplive ? caplive * 2 : 16;
                live_session *nl2 = realloc(live, (size_t)ncap * sizeof *live);
                if (!nl2) {
                    gp_log(GP_LOG_ERROR, COMPONENT, "out of memory: refusing a connection");
                    close(fd);
                    continue;
                }
                live = nl2;
                caplive = ncap;
            }
            if (ss.ss_family != AF_UNIX)
                gp_wire_keepalive(fd, WORKER_KEEPALIVE_S, 0); /* a vanished client host ends its session */
            live_session *ls = &live[nlive];
            peer_name(&ss, sl, ls->peer, sizeof ls->peer);
            if (getrandom(&ls->id, sizeof ls->id, 0) != (ssize_t)sizeof ls->id)
                ls->id = now_ns() ^ ((uint64_t)getpid() << 32);
            ls->t0 = now_ns();
            pid_t p = fork();
            if (p == 0) {
                for (int j = 0; j <= nl; j++)
                    close(pfd[j].fd);
                sigprocmask(SIG_SETMASK, &old, NULL);
                signal(SIGCHLD, SIG_DFL);
                session_child(c, is_tls[i] ? tls : NULL, fd, ls->id, ls->peer);
                _exit(EXIT_FAIL); /* not reached */
            }
            close(fd);
            if (p < 0) {
                gp_log(GP_LOG_ERROR, COMPONENT, "cannot start a session process: %s", strerror(errno));
                continue;
            }
            ls->pid = p;
            nlive++;
            gp_log(GP_LOG_INFO, COMPONENT, "session %016llx: connection from %s (pid %d)",
                   (unsigned long long)ls->id, ls->peer, (int)p);
        }
    }
    for (int j = 0; j < nl; j++) {
        close(pfd[j].fd);
        if (strncmp(c->listen[j], "unix:", 5) == 0)
            unlink(c->listen[j] + 5);
    }
    for (int i = 0; i < nlive; i++)
        kill(live[i].pid, SIGTERM);
    for (int waited = 0; nlive > 0 && waited < 100; waited++) { /* 5 s for them to go */
        reap(live, &nlive, c->cache_dir);
        if (nlive > 0)
            usleep(50000);
    }
    for (int i = 0; i < nlive; i++)
        kill(live[i].pid, SIGKILL);
    while (nlive > 0 && waitpid(-1, NULL, 0) > 0)
        nlive--;
    gp_tls_ctx_free(tls);
    free(live);
    close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return 0;
}

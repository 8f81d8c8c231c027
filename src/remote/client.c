/* client.c - the client's connection to `gpupool worker`, cuInit, the handle registry, error names and
 * cuGetProcAddress (client.h says how the files divide the work).
 *
 * cuInit connects to GPUPOOL_REMOTE and says HELLO with the token (remote_conn.c, shared with the remote
 * libnvidia-ml.so.1, which has a connection of its own). Calls that wait for an answer go out at
 * once, after anything queued; asynchronous ones (launches, async copies and memsets, event records) are
 * queued in one send buffer that goes out before the next waiting call, when it passes GP_FLUSH_BYTES, or
 * when the flusher thread finds it waiting for GP_FLUSH_NS, so that queued work starts even if the
 * application never synchronises. Once the connection fails every call answers CUDA_ERROR_DEVICE_UNAVAILABLE;
 * TCP keepalive and TCP_USER_TIMEOUT bound the time to notice a worker host that vanished (about 5 s). A
 * child forked after cuInit cannot use the parent's connection: its calls answer CUDA_ERROR_NOT_INITIALIZED,
 * as with NVIDIA's driver.
 */
#include "remote/client.h"
#include "remote/remote_conn.h"
#include "sim/cuda_common.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/u64map.h"

#define GP_FLUSH_BYTES (64u << 10)
#define GP_FLUSH_NS    50000 /* the flusher sends what waited this long (so within ~100 us) */
/* Flow control: after every GP_FENCE_EVERY asynchronous frames a fence (a DRIVER_VERSION request) goes out,
 * its reply not awaited; a sender that would put more than GP_FENCE_AHEAD fences in flight first waits for
 * the oldest. The worker answers a fence once it has handed everything before it to the driver (whose own
 * queue, under the vGPU library, runs a few milliseconds ahead of the GPU), so a program cannot queue minutes
 * of work on the wire, as no driver lets it queue minutes of work on a local GPU. */
#define GP_FENCE_EVERY 128
#define GP_FENCE_AHEAD 2

/* ---- the connection ------------------------------------------------------------------------------- */

static struct {
    pthread_mutex_t mu;  /* one request and its reply at a time; the queue */
    pthread_mutex_t wmu; /* one frame written at a time (taken inside mu, or alone by the callback thread) */
    pthread_cond_t queued;
    int fd;
    uint32_t seq;
    gp_wbuf out; /* queued async frames */
    gp_wbuf req; /* the payload being built */
    gp_wbuf rep; /* the last reply's payload */
    char addr[256];
    bool flusher;
} g_conn = {.mu = PTHREAD_MUTEX_INITIALIZER,
            .wmu = PTHREAD_MUTEX_INITIALIZER,
            .queued = PTHREAD_COND_INITIALIZER,
            .fd = -1};

enum { ST_NONE, ST_READY, ST_FAILED, ST_LOST, ST_FORKED };
static atomic_int g_state = ST_NONE;
static CUresult g_init_rc = CUDA_ERROR_NOT_INITIALIZED; /* what a failed cuInit answers again */
static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_driver_version;

CUresult gp_client_ready(void)
{
    switch (atomic_load_explicit(&g_state, memory_order_acquire)) {
    case ST_READY: return CUDA_SUCCESS;
    case ST_LOST: return CUDA_ERROR_DEVICE_UNAVAILABLE;
    default: return CUDA_ERROR_NOT_INITIALIZED;
    }
}

/* Host functions (cuLaunchHostFunc, cuStreamAddCallback) run here, on the callback thread, when the worker's
 * stream reaches them: the worker sends CALLBACK and holds the stream until CALLBACK_DONE. Whoever reads the
 * socket (a caller waiting for its reply, under mu, or the poller thread while host functions are
 * outstanding and nobody else reads) hands CALLBACKs to the callback thread, so a host function never runs
 * on a thread that holds mu; CALLBACK_DONE is written under wmu alone, so it goes out even while a caller
 * holds mu waiting for a stream that waits for the host function. Lock order: mu, then g_cb.mu. As with
 * NVIDIA's driver, a host function must not call CUDA (here such a call could wait for mu forever). */
typedef struct gp_hostcb {
    struct gp_hostcb *next;
    uint64_t id;
    CUhostFn fn;         /* cuLaunchHostFunc, or */
    CUstreamCallback cb; /* cuStreamAddCallback */
    CUstream stream;
    void *data;
    bool staged; /* a graph's staged copy: box receives STAGE_DATA, or is sent as STAGE_FILL */
    gp_hostbox box;
    bool ready; /* CALLBACK came */
    CUresult status;
} gp_hostcb;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a callback ready, one outstanding, or the connection gone */
    gp_hostcb *list;   /* registered, in the order they were launched */
    int outstanding;   /* registered and not yet run */
    bool threads;      /* the callback and poller threads run */
    int pollfd;        /* a dup of the connection's socket, for the poller */
} g_cb = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .pollfd = -1};

/* The connection failed (called with mu held): every later call answers CUDA_ERROR_DEVICE_UNAVAILABLE. */
static CUresult conn_lost(const char *what, const char *why)
{
    if (atomic_exchange(&g_state, ST_LOST) == ST_READY)
        gp_log(GP_LOG_ERROR, GP_LOG_CLIENT,
               "the gpupool worker at %s went away (%s: %s); every CUDA call now returns "
               "CUDA_ERROR_DEVICE_UNAVAILABLE; restart the program once the worker is back",
               g_conn.addr, what, why);
    pthread_mutex_lock(&g_conn.wmu); /* the callback thread writes under wmu alone */
    if (g_conn.fd >= 0) {
        shutdown(g_conn.fd, SHUT_RDWR);
        close(g_conn.fd);
        g_conn.fd = -1;
    }
    pthread_mutex_unlock(&g_conn.wmu);
    gp_wbuf_reset(&g_conn.out);
    pthread_mutex_lock(&g_cb.mu);
    pthread_cond_broadcast(&g_cb.cv);
    pthread_mutex_unlock(&g_cb.mu);
    return CUDA_ERROR_DEVICE_UNAVAILABLE;
}

/* A CALLBACK frame's payload: marks its host function ready for the callback thread. false: it does not
 * decode, or names no host function of ours (a protocol error). */
static bool callback_arrived(const void *p, size_t n)
{
    gp_rbuf r;
    gp_rbuf_init(&r, p, n);
    uint64_t id = gp_r_u64(&r);
    uint32_t status = gp_r_u32(&r);
    if (!gp_r_done(&r))
        return false;
    bool found = false;
    pthread_mutex_lock(&g_cb.mu);
    for (gp_hostcb *c = g_cb.list; c; c = c->next)
        if (c->id == id && !c->ready) {
            c->ready = true;
            c->status = (CUresult)status;
            found = true;
            pthread_cond_broadcast(&g_cb.cv);
            break;
        }
    pthread_mutex_unlock(&g_cb.mu);
    return found;
}

/* A STAGE_DATA frame's payload: a piece of a graph's staged copy, written into the host memory of the first
 * run of its callback still to come. false: it does not decode, or fits no such copy. */
static bool stage_data_arrived(const void *p, size_t n)
{
    gp_rbuf r;
    gp_rbuf_init(&r, p, n);
    uint64_t id = gp_r_u64(&r), off = gp_r_u64(&r);
    size_t len;
    const void *data = gp_r_blob(&r, &len);
    if (!gp_r_done(&r))
        return false;
    bool found = false;
    pthread_mutex_lock(&g_cb.mu);
    for (gp_hostcb *c = g_cb.list; c; c = c->next)
        if (c->id == id && !c->ready) {
            const gp_hostbox *b = &c->box;
            size_t total = b->width * b->rows * b->depth;
            found = c->staged && !b->fetch && off <= total && len <= total - off;
            if (found)
                gp_hostbox_move(b, (uint8_t *)(uintptr_t)data, (size_t)off, len, true);
            break;
        }
    pthread_mutex_unlock(&g_cb.mu);
    return found;
}

/* CALLBACK and STAGE_DATA come unasked, between replies. */
static bool is_callback(const gp_wire_hdr *h)
{
    return (h->op == GP_OP_CALLBACK || h->op == GP_OP_STAGE_DATA) && !(h->flags & GP_WIRE_F_REPLY);
}

static bool unasked_arrived(const gp_wire_hdr *h, const void *p, size_t n)
{
    return h->op == GP_OP_CALLBACK ? callback_arrived(p, n) : stage_data_arrived(p, n);
}

/* Fences in flight (under g_conn.mu). */
static struct {
    uint32_t seq[GP_FENCE_AHEAD + 1];
    int head, n;
    unsigned since; /* async frames since the last fence */
} g_fence;

/* A reply to the oldest fence in flight: taken off (its payload, already read or to be skipped, is of no
 * use). */
static bool is_fence_reply(const gp_wire_hdr *h)
{
    if (g_fence.n == 0 || !(h->flags & GP_WIRE_F_REPLY) || h->op != GP_OP_DRIVER_VERSION ||
        h->seq != g_fence.seq[g_fence.head])
        return false;
    g_fence.head = (g_fence.head + 1) % (GP_FENCE_AHEAD + 1);
    g_fence.n--;
    return true;
}

static CUresult flush_locked(void)
{
    if (g_conn.out.len == 0)
        return CUDA_SUCCESS;
    if (g_conn.fd < 0)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    pthread_mutex_lock(&g_conn.wmu);
    int rc = gp_wire_write_all(g_conn.fd, g_conn.out.p, g_conn.out.len);
    pthread_mutex_unlock(&g_conn.wmu);
    gp_wbuf_reset(&g_conn.out);
    if (rc < 0)
        return conn_lost("sending", strerror(errno));
    return CUDA_SUCCESS;
}

/* Appends a frame of the request payload to the queue. */
static bool queue_frame(unsigned op, uint32_t flags, uint32_t *seq_out)
{
    gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                     .op = (uint16_t)op,
                     .flags = flags,
                     .seq = ++g_conn.seq,
                     .length = (uint32_t)g_conn.req.len};
    if (!g_conn.req.ok)
        return false;
    uint8_t *p = gp_w_reserve(&g_conn.out, GP_WIRE_HEADER + g_conn.req.len);
    if (p == NULL) {
        g_conn.out.ok = true; /* what was queued before stays intact */
        return false;
    }
    gp_wire_hdr_encode(&h, p);
    if (g_conn.req.len)
        memcpy(p + GP_WIRE_HEADER, g_conn.req.p, g_conn.req.len);
    if (seq_out)
        *seq_out = h.seq;
    return true;
}

/* Reads the reply to request seq: its status, the payload in g_conn.rep. */
static CUresult read_reply(uint32_t seq, unsigned op)
{
    gp_wire_hdr h;
    const char *why = NULL;
    for (;;) {
        if (gp_wire_recv(g_conn.fd, &h, &g_conn.rep, &why) < 0)
            return conn_lost("waiting for a reply", why ? why : strerror(errno));
        if (is_fence_reply(&h))
            continue;
        if (!is_callback(&h))
            break;
        if (!unasked_arrived(&h, g_conn.rep.p, g_conn.rep.len))
            return conn_lost("reading a host function call", "an unknown callback (protocol error)");
    }
    if (h.seq != seq || !(h.flags & GP_WIRE_F_REPLY) || h.op != op)
        return conn_lost("reading a reply", "a reply out of order (protocol error)");
    if (h.status >= 0x10000u)
        return conn_lost(gp_wire_op_name(op), h.status == GP_WIRE_E_MALFORMED
                                                  ? "the worker could not decode a request"
                                                  : "the worker ended the session");
    return (CUresult)h.status;
}

/* Stream capture's thread mode (cuThreadExchangeStreamCaptureMode): the worker serves every thread of the
 * program on one thread, so a thread's mode goes to it (CAPTURE_MODE) before that thread's next call whenever
 * it differs from the last one sent. */
static _Thread_local CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
static CUstreamCaptureMode g_sent_mode = CU_STREAM_CAPTURE_MODE_GLOBAL; /* under g_conn.mu */

static void send_capture_mode(void)
{
    if (t_capture_mode == g_sent_mode || g_conn.fd < 0)
        return;
    gp_wbuf_reset(&g_conn.req);
    g_conn.req.ok = true;
    gp_w_u64(&g_conn.req, 0);
    gp_w_u32(&g_conn.req, (uint32_t)t_capture_mode);
    if (queue_frame(GP_OP_CAPTURE_MODE, GP_WIRE_F_ASYNC, NULL))
        g_sent_mode = t_capture_mode;
}

GP_API CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    GP_READY_OR_RETURN();
    if (mode == NULL ||
        (*mode != CU_STREAM_CAPTURE_MODE_GLOBAL && *mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
         *mode != CU_STREAM_CAPTURE_MODE_RELAXED))
        return CUDA_ERROR_INVALID_VALUE;
    CUstreamCaptureMode old = t_capture_mode;
    t_capture_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

gp_wbuf *gp_rpc_begin(void)
{
    pthread_mutex_lock(&g_conn.mu);
    send_capture_mode();
    gp_wbuf_reset(&g_conn.req);
    g_conn.req.ok = true;
    return &g_conn.req;
}

gp_wbuf *gp_rpc_begin_again(void)
{
    gp_wbuf_reset(&g_conn.req);
    g_conn.req.ok = true;
    return &g_conn.req;
}

void gp_rpc_end(void)
{
    pthread_mutex_unlock(&g_conn.mu);
}

CUresult gp_rpc_call(unsigned op, gp_rbuf *reply)
{
    gp_rbuf_init(reply, NULL, 0);
    if (g_conn.fd < 0)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    uint32_t seq;
    if (!queue_frame(op, 0, &seq))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = flush_locked();
    if (rc)
        return rc;
    rc = read_reply(seq, op);
    gp_rbuf_init(reply, g_conn.rep.p, g_conn.rep.len);
    return rc;
}

/* Puts a fence after the frames queued so far; with GP_FENCE_AHEAD in flight, first waits for the oldest. */
static CUresult fence(void)
{
    g_fence.since = 0;
    if (g_fence.n == GP_FENCE_AHEAD) {
        CUresult rc = flush_locked();
        if (rc)
            return rc;
        while (g_fence.n == GP_FENCE_AHEAD) {
            gp_wire_hdr h;
            const char *why = NULL;
            if (gp_wire_recv(g_conn.fd, &h, &g_conn.rep, &why) < 0)
                return conn_lost("waiting for the worker to catch up", why ? why : strerror(errno));
            if (is_callback(&h)) {
                if (!unasked_arrived(&h, g_conn.rep.p, g_conn.rep.len))
                    return conn_lost("reading a host function call", "an unknown callback (protocol error)");
            } else if (!is_fence_reply(&h)) {
                return conn_lost("waiting for the worker to catch up",
                                 "a reply out of order (protocol error)");
            }
        }
    }
    gp_wbuf_reset(&g_conn.req);
    uint32_t seq;
    if (!queue_frame(GP_OP_DRIVER_VERSION, 0, &seq))
        return CUDA_ERROR_OUT_OF_MEMORY;
    g_fence.seq[(g_fence.head + g_fence.n) % (GP_FENCE_AHEAD + 1)] = seq;
    g_fence.n++;
    return CUDA_SUCCESS;
}

CUresult gp_rpc_async(unsigned op)
{
    if (g_conn.fd < 0)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    bool was_empty = g_conn.out.len == 0;
    if (!queue_frame(op, GP_WIRE_F_ASYNC, NULL))
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (++g_fence.since >= GP_FENCE_EVERY) {
        CUresult rc = fence();
        if (rc)
            return rc;
    }
    if (g_conn.out.len >= GP_FLUSH_BYTES)
        return flush_locked();
    if (was_empty)
        pthread_cond_signal(&g_conn.queued);
    return CUDA_SUCCESS;
}

CUresult gp_rpc_malformed(unsigned op)
{
    return conn_lost(gp_wire_op_name(op), "a reply that does not decode (protocol error)");
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The piece size of a bulk copy of n bytes: an eighth of it, so that the worker copies one piece while the
 * next travels and only the last one's copy is not overlapped, from 256 KiB (smaller pieces cost more in
 * per-frame work than they save) to 512 KiB, which stays in the CPU's cache between the worker's receiving a
 * piece and its copying it (pieces of GP_WIRE_CHUNK made 16 MiB and larger copies a third slower). */
#define BULK_PIECE_MIN (256u << 10)
#define BULK_PIECE_MAX (512u << 10)

static size_t bulk_piece(size_t n)
{
    size_t p = n / 8;
    if (p < BULK_PIECE_MIN)
        p = BULK_PIECE_MIN;
    if (p > BULK_PIECE_MAX)
        p = BULK_PIECE_MAX;
    return p & ~(size_t)4095;
}

/* Sends n bytes to dst as HTOD pieces (bulk_piece), straight from the caller's buffer (no copy),
 * all ASYNC but the last when want_reply; *seq is the last piece's. With an array (HTOA), dst is the packed
 * offset into it. */
static CUresult send_htod(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, const uint8_t *s,
                          size_t n, bool want_reply, uint32_t *seq)
{
    const size_t most = bulk_piece(n);
    do {
        size_t piece = n > most ? most : n;
        bool last = piece == n;
        uint8_t pre[8 * 4 + 4 + 4];
        size_t at = 0;
        put_le(pre, ctx, 8);
        put_le(pre + 8, stream, 8);
        if (array) {
            put_le(pre + 16, array, 8);
            at = 8;
        }
        put_le(pre + at + 16, dst, 8);
        put_le(pre + at + 24, last ? 1 : 0, 4);
        put_le(pre + at + 28, piece, 4);
        gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                         .op = array ? GP_OP_HTOA : GP_OP_HTOD,
                         .flags = (last && want_reply) ? 0 : GP_WIRE_F_ASYNC,
                         .seq = ++g_conn.seq};
        pthread_mutex_lock(&g_conn.wmu);
        int rc = gp_wire_send2(g_conn.fd, &h, pre, at + 32, s, piece);
        pthread_mutex_unlock(&g_conn.wmu);
        if (rc < 0)
            return conn_lost("sending a copy", strerror(errno));
        *seq = h.seq;
        s += piece;
        dst += piece;
        n -= piece;
    } while (n > 0);
    return CUDA_SUCCESS;
}

/* Host to device (or array); a sync copy waits for the last piece's reply. */
static CUresult htod(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, const void *src, size_t n,
                     bool async)
{
    CUresult rc = flush_locked();
    if (rc)
        return rc;
    uint32_t last_seq = 0;
    if ((rc = send_htod(ctx, stream, array, dst, src, n, !async, &last_seq)) || async)
        return rc;
    return read_reply(last_seq, array ? GP_OP_HTOA : GP_OP_HTOD);
}

CUresult gp_rpc_htod(uint64_t ctx, uint64_t stream, uint64_t dst, const void *src, size_t n, bool async)
{
    return htod(ctx, stream, 0, dst, src, n, async);
}

CUresult gp_rpc_htoa(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, const void *src, size_t n,
                     bool async)
{
    return htod(ctx, stream, array, dst, src, n, async);
}

static CUresult htod_rows(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, size_t dpitch,
                          size_t dslice, const void *src, size_t spitch, size_t sslice, size_t width,
                          size_t rows, size_t depth, bool async)
{
    CUresult rc = flush_locked();
    if (rc)
        return rc;
    uint32_t last_seq = 0;
    const uint8_t *s = src;
    for (size_t z = 0; z < depth; z++)
        for (size_t y = 0; y < rows; y++) {
            bool final = z == depth - 1 && y == rows - 1;
            if ((rc = send_htod(ctx, stream, array, dst + z * dslice + y * dpitch,
                                s + z * sslice + y * spitch, width, final && !async, &last_seq)))
                return rc;
        }
    if (async)
        return CUDA_SUCCESS;
    return read_reply(last_seq, array ? GP_OP_HTOA : GP_OP_HTOD);
}

CUresult gp_rpc_htod_rows(uint64_t ctx, uint64_t stream, uint64_t dst, size_t dpitch, size_t dslice,
                          const void *src, size_t spitch, size_t sslice, size_t width, size_t rows,
                          size_t depth, bool async)
{
    return htod_rows(ctx, stream, 0, dst, dpitch, dslice, src, spitch, sslice, width, rows, depth, async);
}

CUresult gp_rpc_htoa_rows(uint64_t ctx, uint64_t stream, uint64_t array, uint64_t dst, size_t dpitch,
                          size_t dslice, const void *src, size_t spitch, size_t sslice, size_t width,
                          size_t rows, size_t depth, bool async)
{
    return htod_rows(ctx, stream, array, dst, dpitch, dslice, src, spitch, sslice, width, rows, depth, async);
}

/* Device (or array) to host: every chunk's request goes out first, then the replies are read in order
 * straight into the caller's buffer. The first error wins; the remaining replies are still read. */
static CUresult dtoh(uint64_t ctx, uint64_t stream, void *dst, uint64_t array, uint64_t src, size_t n)
{
    unsigned op = array ? GP_OP_ATOH : GP_OP_DTOH;
    const size_t most = bulk_piece(n);
    size_t nchunks = n ? (n + most - 1) / most : 1;
    uint32_t first_seq = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * most;
        size_t piece = n - off > most ? most : n - off;
        gp_wbuf_reset(&g_conn.req);
        gp_w_u64(&g_conn.req, ctx);
        gp_w_u64(&g_conn.req, stream);
        if (array)
            gp_w_u64(&g_conn.req, array);
        gp_w_u64(&g_conn.req, src + off);
        gp_w_u64(&g_conn.req, piece);
        uint32_t seq;
        if (!queue_frame(op, 0, &seq))
            return CUDA_ERROR_OUT_OF_MEMORY; /* nothing sent yet for this chunk: the earlier ones still */
        if (i == 0)
            first_seq = seq;
        if (g_conn.out.len >= GP_FLUSH_BYTES) {
            CUresult rc = flush_locked();
            if (rc)
                return rc;
        }
    }
    CUresult rc = flush_locked();
    if (rc)
        return rc;
    CUresult first = CUDA_SUCCESS;
    uint8_t *d = dst;
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * most;
        size_t piece = n - off > most ? most : n - off;
        uint8_t hb[GP_WIRE_HEADER];
        gp_wire_hdr h;
        const char *why = NULL;
        if (gp_wire_read_all(g_conn.fd, hb, sizeof hb) < 0)
            return conn_lost("waiting for a copy", strerror(errno));
        if (gp_wire_hdr_decode(hb, &h, &why) < 0)
            return conn_lost("reading a copy", why ? why : "bad header");
        if (is_fence_reply(&h)) { /* a fence sent before this copy: its payload is of no use */
            uint8_t skip[64];
            if (h.length > sizeof skip || gp_wire_read_all(g_conn.fd, skip, h.length) < 0)
                return conn_lost("reading a copy", "a fence reply that does not decode");
            i--;
            continue;
        }
        if (is_callback(&h)) { /* a host function came due meanwhile; this chunk's reply is still to come */
            uint8_t *cb = gp_w_reserve(&g_conn.rep, h.length + 1);
            gp_wbuf_reset(&g_conn.rep);
            if (cb == NULL || gp_wire_read_all(g_conn.fd, cb, h.length) < 0 ||
                !unasked_arrived(&h, cb, h.length))
                return conn_lost("reading a host function call", "a callback that does not decode");
            i--;
            continue;
        }
        if (h.seq != first_seq + (uint32_t)i || h.op != op || !(h.flags & GP_WIRE_F_REPLY))
            return conn_lost("reading a copy", "a reply out of order (protocol error)");
        if (h.status >= 0x10000u)
            return conn_lost("reading a copy", "the worker ended the session");
        size_t left = h.length;
        if (h.status == 0) {
            uint8_t lb[4];
            if (left < 4 || gp_wire_read_all(g_conn.fd, lb, 4) < 0)
                return conn_lost("reading a copy", left < 4 ? "short reply" : strerror(errno));
            left -= 4;
            uint32_t bl =
                (uint32_t)lb[0] | (uint32_t)lb[1] << 8 | (uint32_t)lb[2] << 16 | (uint32_t)lb[3] << 24;
            if (bl != piece || left < piece)
                return conn_lost("reading a copy", "a reply of the wrong size (protocol error)");
            if (gp_wire_read_all(g_conn.fd, d + off, piece) < 0)
                return conn_lost("reading a copy", strerror(errno));
            left -= piece;
        } else if (first == CUDA_SUCCESS) {
            first = (CUresult)h.status;
        }
        while (left > 0) { /* nothing else is expected; skip it */
            uint8_t skip[256];
            size_t k = left > sizeof skip ? sizeof skip : left;
            if (gp_wire_read_all(g_conn.fd, skip, k) < 0)
                return conn_lost("reading a copy", strerror(errno));
            left -= k;
        }
    }
    return first;
}

CUresult gp_rpc_dtoh(uint64_t ctx, uint64_t stream, void *dst, uint64_t src, size_t n)
{
    return dtoh(ctx, stream, dst, 0, src, n);
}

CUresult gp_rpc_atoh(uint64_t ctx, uint64_t stream, void *dst, uint64_t array, uint64_t src, size_t n)
{
    return dtoh(ctx, stream, dst, array, src, n);
}

/* Sends what waited GP_FLUSH_NS in the queue, so that work starts without a synchronising call. */
static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_conn.mu);
    for (;;) {
        while (g_conn.out.len == 0 && atomic_load(&g_state) == ST_READY)
            pthread_cond_wait(&g_conn.queued, &g_conn.mu);
        if (atomic_load(&g_state) != ST_READY)
            break;
        pthread_mutex_unlock(&g_conn.mu);
        struct timespec ts = {0, GP_FLUSH_NS};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&g_conn.mu);
        flush_locked();
    }
    pthread_mutex_unlock(&g_conn.mu);
    return NULL;
}

/* ---- host functions ------------------------------------------------------------------------------- */

static bool conn_ready(void)
{
    return atomic_load(&g_state) == ST_READY;
}

/* A staged copy from host memory: its data as STAGE_FILL pieces (before CALLBACK_DONE), read now, when the
 * graph reaches the copy. */
static void stage_fill(const gp_hostcb *c)
{
    size_t total = c->box.width * c->box.rows * c->box.depth;
    size_t cap = total < GP_WIRE_CHUNK ? total : GP_WIRE_CHUNK;
    uint8_t *buf = malloc(cap ? cap : 1);
    for (size_t off = 0; buf && off < total; off += cap) {
        size_t n = total - off < cap ? total - off : cap;
        gp_hostbox_move(&c->box, buf, off, n, false);
        uint8_t pre[28];
        put_le(pre, 0, 8);
        put_le(pre + 8, c->id, 8);
        put_le(pre + 16, off, 8);
        put_le(pre + 24, n, 4);
        gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_STAGE_FILL, .flags = GP_WIRE_F_ASYNC};
        pthread_mutex_lock(&g_conn.wmu);
        if (g_conn.fd >= 0) /* a failed write is seen by the next call, which reads */
            (void)gp_wire_send2(g_conn.fd, &h, pre, sizeof pre, buf, n);
        pthread_mutex_unlock(&g_conn.wmu);
    }
    if (buf == NULL) /* the worker's copy then moves what its staging buffer holds */
        gp_log(GP_LOG_ERROR, GP_LOG_CLIENT, "out of memory sending a graph's copy from host memory");
    free(buf);
}

/* Runs each host function once its CALLBACK came, in launch order, then answers CALLBACK_DONE (unnumbered,
 * seq 0, outside the ordered stream of calls: it may overtake queued calls, and needs neither mu nor seq). */
static void *callback_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_cb.mu);
    for (;;) {
        gp_hostcb *c = NULL, **pp = NULL;
        while (conn_ready()) {
            for (pp = &g_cb.list; *pp && !(*pp)->ready; pp = &(*pp)->next)
                ;
            if ((c = *pp) != NULL)
                break;
            pthread_cond_wait(&g_cb.cv, &g_cb.mu);
        }
        if (c == NULL)
            break;
        *pp = c->next;
        pthread_mutex_unlock(&g_cb.mu);
        if (c->staged && c->box.fetch)
            stage_fill(c);
        else if (c->fn)
            c->fn(c->data);
        else if (c->cb)
            c->cb(c->stream, c->status, c->data);
        uint8_t pl[16];
        put_le(pl, 0, 8);
        put_le(pl + 8, c->id, 8);
        gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                         .op = GP_OP_CALLBACK_DONE,
                         .flags = GP_WIRE_F_ASYNC,
                         .length = sizeof pl};
        pthread_mutex_lock(&g_conn.wmu);
        if (g_conn.fd >= 0) /* a failed write is seen by the next call, which reads */
            (void)gp_wire_send(g_conn.fd, &h, pl);
        pthread_mutex_unlock(&g_conn.wmu);
        free(c);
        pthread_mutex_lock(&g_cb.mu);
        g_cb.outstanding--;
    }
    pthread_mutex_unlock(&g_cb.mu);
    return NULL;
}

/* While host functions are outstanding, reads the CALLBACKs that come when no caller is reading (a program
 * waiting for a host function's effect without any CUDA call). A frame is read only under mu, and when mu is
 * free every reply has been read by its caller but fences', so what arrives then is a CALLBACK or a fence's
 * reply. */
static void *poller_main(void *arg)
{
    (void)arg;
    gp_wbuf buf;
    gp_wbuf_init(&buf);
    for (;;) {
        pthread_mutex_lock(&g_cb.mu);
        while (g_cb.outstanding == 0 && conn_ready())
            pthread_cond_wait(&g_cb.cv, &g_cb.mu);
        pthread_mutex_unlock(&g_cb.mu);
        if (!conn_ready())
            break;
        struct pollfd p = {.fd = g_cb.pollfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        pthread_mutex_lock(&g_conn.mu);
        p.revents = 0;
        if (g_conn.fd >= 0 && conn_ready() && poll(&p, 1, 0) > 0) {
            gp_wire_hdr h;
            const char *why = NULL;
            gp_w_reserve(&buf, 1); /* never NULL + 0 (see gp_wire_recv) */
            gp_wbuf_reset(&buf);
            if (gp_wire_recv(g_conn.fd, &h, &buf, &why) < 0)
                conn_lost("waiting for host function calls", why ? why : strerror(errno));
            else if (h.op == GP_OP_BYE && (h.flags & GP_WIRE_F_REPLY))
                ; /* at exit: BYE's reply is not awaited */
            else if (is_fence_reply(&h))
                ; /* flow control: the worker caught up */
            else if (!is_callback(&h) || !unasked_arrived(&h, buf.p, buf.len))
                conn_lost("waiting for host function calls", "an unexpected frame (protocol error)");
        }
        pthread_mutex_unlock(&g_conn.mu);
    }
    pthread_mutex_lock(&g_cb.mu);
    close(g_cb.pollfd);
    g_cb.pollfd = -1;
    pthread_mutex_unlock(&g_cb.mu);
    gp_wbuf_free(&buf);
    return NULL;
}

static bool start_detached(void *(*fn)(void *))
{
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    bool ok = pthread_create(&t, &at, fn, NULL) == 0;
    pthread_attr_destroy(&at);
    return ok;
}

CUresult gp_client_host_func(uint64_t ctx, uint64_t stream, CUstream h, CUhostFn fn, CUstreamCallback cb,
                             void *data)
{
    gp_hostcb *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->id = gp_client_next_id();
    c->fn = fn;
    c->cb = cb;
    c->stream = h;
    c->data = data;
    pthread_mutex_lock(&g_cb.mu);
    if (!g_cb.threads) {
        pthread_mutex_lock(&g_conn.wmu); /* fd is closed under mu and wmu */
        g_cb.pollfd = g_conn.fd >= 0 ? fcntl(g_conn.fd, F_DUPFD_CLOEXEC, 0) : -1;
        pthread_mutex_unlock(&g_conn.wmu);
        if (g_cb.pollfd < 0 || !start_detached(callback_main) || !start_detached(poller_main)) {
            /* a thread that did start finds nothing outstanding, and stays idle */
            pthread_mutex_unlock(&g_cb.mu);
            free(c);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        g_cb.threads = true;
    }
    gp_hostcb **pp = &g_cb.list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    g_cb.outstanding++;
    pthread_cond_broadcast(&g_cb.cv);
    pthread_mutex_unlock(&g_cb.mu);
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, c->id);
    CUresult rc = gp_rpc_async(GP_OP_HOST_FUNC);
    gp_rpc_end();
    if (rc != CUDA_SUCCESS) { /* not sent: it will never be called */
        pthread_mutex_lock(&g_cb.mu);
        for (pp = &g_cb.list; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                g_cb.outstanding--;
                free(c);
                break;
            }
        pthread_mutex_unlock(&g_cb.mu);
    }
    return rc;
}

/* Starts the callback and poller threads once (g_cb.mu held). */
static bool cb_threads_locked(void)
{
    if (g_cb.threads)
        return true;
    pthread_mutex_lock(&g_conn.wmu); /* fd is closed under mu and wmu */
    g_cb.pollfd = g_conn.fd >= 0 ? fcntl(g_conn.fd, F_DUPFD_CLOEXEC, 0) : -1;
    pthread_mutex_unlock(&g_conn.wmu);
    if (g_cb.pollfd < 0 || !start_detached(callback_main) || !start_detached(poller_main))
        return false; /* a thread that did start finds nothing outstanding, and stays idle */
    g_cb.threads = true;
    return true;
}

CUresult gp_client_expect(const gp_gaction *a, size_t n)
{
    if (n == 0)
        return CUDA_SUCCESS;
    gp_hostcb *first = NULL, **tail = &first;
    for (size_t i = 0; i < n; i++) {
        gp_hostcb *c = calloc(1, sizeof *c);
        if (c == NULL) {
            while (first) {
                gp_hostcb *next = first->next;
                free(first);
                first = next;
            }
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        c->id = a[i].id;
        c->fn = a[i].fn;
        c->cb = a[i].cb;
        c->stream = a[i].stream;
        c->data = a[i].data;
        c->staged = a[i].staged;
        c->box = a[i].box;
        *tail = c;
        tail = &c->next;
    }
    pthread_mutex_lock(&g_cb.mu);
    if (!cb_threads_locked()) {
        pthread_mutex_unlock(&g_cb.mu);
        while (first) {
            gp_hostcb *next = first->next;
            free(first);
            first = next;
        }
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_hostcb **pp = &g_cb.list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = first;
    g_cb.outstanding += (int)n;
    pthread_cond_broadcast(&g_cb.cv);
    pthread_mutex_unlock(&g_cb.mu);
    return CUDA_SUCCESS;
}

/* ---- cuInit --------------------------------------------------------------------------------------- */

static void atfork_child(void)
{
    pthread_mutex_init(&g_conn.mu, NULL);
    pthread_mutex_init(&g_conn.wmu, NULL);
    pthread_cond_init(&g_conn.queued, NULL);
    pthread_mutex_init(&g_cb.mu, NULL);
    pthread_cond_init(&g_cb.cv, NULL);
    g_cb.list = NULL; /* the parent's host functions are the parent's (their records leak in the child) */
    g_cb.outstanding = 0;
    g_cb.threads = false;
    if (g_cb.pollfd >= 0)
        close(g_cb.pollfd);
    g_cb.pollfd = -1;
    pthread_mutex_init(&g_init_mu, NULL);
    if (g_conn.fd >= 0)
        close(g_conn.fd);
    g_conn.fd = -1;
    gp_wbuf_reset(&g_conn.out);
    int st = atomic_load(&g_state);
    if (st == ST_READY || st == ST_LOST)
        atomic_store(&g_state, ST_FORKED);
}

/* At exit: what is queued goes out, and BYE ends the session (its reply is not awaited). */
static void at_exit(void)
{
    if (atomic_load(&g_state) != ST_READY)
        return;
    pthread_mutex_lock(&g_conn.mu);
    if (g_conn.fd >= 0) {
        gp_wbuf_reset(&g_conn.req);
        if (queue_frame(GP_OP_BYE, 0, NULL))
            flush_locked();
    }
    pthread_mutex_unlock(&g_conn.mu);
}

static const gp_remote_who g_who = {.library = "CUDA driver",
                                    .call = "cuInit",
                                    .no_device = "CUDA_ERROR_NO_DEVICE",
                                    .not_permitted = "CUDA_ERROR_NOT_PERMITTED",
                                    .log = GP_LOG_CLIENT};

static CUresult connect_and_init(void)
{
    gp_remote_fail fail;
    uint32_t seq = 0;
    int fd = gp_remote_connect(&g_who, g_conn.addr, sizeof g_conn.addr, &seq, &fail);
    if (fd < 0)
        return fail == GP_REMOTE_NOT_PERMITTED ? CUDA_ERROR_NOT_PERMITTED : CUDA_ERROR_NO_DEVICE;
    g_conn.fd = fd;
    g_conn.seq = seq;
    gp_wbuf_init(&g_conn.out);
    gp_wbuf_init(&g_conn.req);
    gp_wbuf_init(&g_conn.rep);
    atomic_store(&g_state, ST_READY); /* the calls below go through the ordinary path */
    gp_rbuf r;
    gp_w_u32(gp_rpc_begin(), 0);
    CUresult rc = gp_rpc_call(GP_OP_INIT, &r);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS) {
        gp_rpc_begin();
        rc = gp_rpc_call(GP_OP_DRIVER_VERSION, &r);
        g_driver_version = (int)gp_r_u32(&r);
        if (rc == CUDA_SUCCESS && !r.ok)
            rc = gp_rpc_malformed(GP_OP_DRIVER_VERSION);
        gp_rpc_end();
    }
    if (rc == CUDA_SUCCESS)
        rc = gp_devices_load();
    if (rc != CUDA_SUCCESS) {
        gp_log(GP_LOG_ERROR, GP_LOG_CLIENT, "cuInit on the gpupool worker at %s failed (CUresult %d)",
               g_conn.addr, (int)rc);
        atomic_store(&g_state, ST_NONE);
        pthread_mutex_lock(&g_conn.mu);
        if (g_conn.fd >= 0)
            close(g_conn.fd);
        g_conn.fd = -1;
        pthread_mutex_unlock(&g_conn.mu);
        return rc == CUDA_ERROR_DEVICE_UNAVAILABLE ? CUDA_ERROR_NO_DEVICE : rc;
    }
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    g_conn.flusher = pthread_create(&t, &at, flusher_main, NULL) == 0;
    pthread_attr_destroy(&at);
    atexit(at_exit);
    return CUDA_SUCCESS;
}

GP_API CUresult cuInit(unsigned int Flags)
{
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int st = atomic_load(&g_state);
    if (st == ST_READY)
        return CUDA_SUCCESS;
    if (st == ST_LOST)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    if (st == ST_FORKED)
        return CUDA_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock(&g_init_mu);
    CUresult rc;
    st = atomic_load(&g_state);
    if (st == ST_READY) {
        rc = CUDA_SUCCESS;
    } else if (st == ST_FAILED) {
        rc = g_init_rc;
    } else {
        static bool atfork_done;
        if (!atfork_done) {
            pthread_atfork(NULL, NULL, atfork_child);
            atfork_done = true;
        }
        rc = connect_and_init();
        if (rc != CUDA_SUCCESS) {
            g_init_rc = rc;
            atomic_store(&g_state, ST_FAILED);
        }
    }
    pthread_mutex_unlock(&g_init_mu);
    return rc;
}

GP_API CUresult cuDriverGetVersion(int *driverVersion)
{
    if (driverVersion == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    /* Before cuInit (or without a worker) the version of the API this library implements. */
    *driverVersion = g_driver_version ? g_driver_version : CUDA_VERSION;
    return CUDA_SUCCESS;
}

/* ---- the registry --------------------------------------------------------------------------------- */

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static gp_u64map g_reg;
static atomic_ullong g_next_id = 1;

uint64_t gp_client_next_id(void)
{
    return atomic_fetch_add(&g_next_id, 1);
}

void gp_reg_lock(void)
{
    pthread_mutex_lock(&g_reg_mu);
}

void gp_reg_unlock(void)
{
    pthread_mutex_unlock(&g_reg_mu);
}

int gp_reg_add(void *obj, int kind)
{
    gp_reg_lock();
    int rc = gp_u64map_put(&g_reg, (uint64_t)(uintptr_t)obj, (uint64_t)kind);
    gp_reg_unlock();
    return rc;
}

void gp_reg_del(void *obj)
{
    gp_reg_lock();
    gp_u64map_del(&g_reg, (uint64_t)(uintptr_t)obj, NULL);
    gp_reg_unlock();
}

int gp_reg_kind(const void *h)
{
    uintptr_t k = (uintptr_t)h;
    if (k == 0 || k == UINTPTR_MAX)
        return 0;
    uint64_t v = 0;
    gp_reg_lock();
    bool found = gp_u64map_get(&g_reg, (uint64_t)k, &v);
    gp_reg_unlock();
    return found ? (int)v : 0;
}

/* ---- error names and cuGetProcAddress (cuda_common.c, shared with the simulated driver) ------------- */

GP_API CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    return gp_cuda_error_str(error, pStr, false);
}

GP_API CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    return gp_cuda_error_str(error, pStr, true);
}

static CUresult proc_address(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *status, bool v2)
{
    int drv = 0;
    cuDriverGetVersion(&drv);
    return gp_cuda_proc_address((void *)cuInit, drv, symbol, pfn, cudaVersion, flags, status, v2);
}

GP_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    return proc_address(symbol, pfn, cudaVersion, flags, NULL, false);
}

GP_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *symbolStatus)
{
    return proc_address(symbol, pfn, cudaVersion, flags, symbolStatus, true);
}

GP_API CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId)
{
    if (ppExportTable == NULL || pExportTableId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *ppExportTable = NULL;
    gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                "cuGetExportTable: NVIDIA's private export tables do not travel to a remote GPU (returning "
                "CUDA_ERROR_NOT_SUPPORTED)");
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* Called by the generated stubs (cmake/gen_stubs.cmake) of every libcuda export not implemented here. */
int gp_cuda_unsupported(const char *name, atomic_int *once);
int gp_cuda_unsupported(const char *name, atomic_int *once)
{
    if (!atomic_exchange(once, 1))
        gp_log(GP_LOG_WARN, GP_LOG_CLIENT,
               "%s is not supported over GPU-over-IP (returning CUDA_ERROR_NOT_SUPPORTED)", name);
    return CUDA_ERROR_NOT_SUPPORTED;
}

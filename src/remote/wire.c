/* wire.c - the GPU-over-IP codec (wire.h): frame headers, payload fields, whole-frame socket I/O, addresses.
 */
#include "remote/wire.h"
#include "remote/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- little-endian fields ------------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void gp_wire_hdr_encode(const gp_wire_hdr *h, uint8_t out[GP_WIRE_HEADER])
{
    put32(out, GP_WIRE_MAGIC);
    out[4] = (uint8_t)h->version;
    out[5] = (uint8_t)(h->version >> 8);
    out[6] = (uint8_t)h->op;
    out[7] = (uint8_t)(h->op >> 8);
    put32(out + 8, h->flags);
    put32(out + 12, h->seq);
    put32(out + 16, h->status);
    put32(out + 20, h->length);
}

int gp_wire_hdr_decode(const uint8_t in[GP_WIRE_HEADER], gp_wire_hdr *h, const char **why)
{
    const char *w = NULL;
    if (get32(in) != GP_WIRE_MAGIC)
        w = "not a gpupool frame (bad magic)";
    h->version = (uint16_t)(in[4] | in[5] << 8);
    h->op = (uint16_t)(in[6] | in[7] << 8);
    h->flags = get32(in + 8);
    h->seq = get32(in + 12);
    h->status = get32(in + 16);
    h->length = get32(in + 20);
    if (!w && h->version != GP_WIRE_VERSION)
        w = "unsupported protocol version";
    if (!w && h->length > GP_WIRE_MAX_PAYLOAD)
        w = "frame longer than the protocol allows";
    if (!w && (h->flags & ~(GP_WIRE_F_ASYNC | GP_WIRE_F_REPLY)))
        w = "unknown frame flags";
    if (why)
        *why = w;
    return w ? -1 : 0;
}

const char *gp_wire_op_name(unsigned op)
{
    static const char *const names[GP_OP__END] = {
        [GP_OP_HELLO] = "HELLO",
        [GP_OP_BYE] = "BYE",
        [GP_OP_INIT] = "INIT",
        [GP_OP_DRIVER_VERSION] = "DRIVER_VERSION",
        [GP_OP_DEVICE_COUNT] = "DEVICE_COUNT",
        [GP_OP_DEVICE_INFO] = "DEVICE_INFO",
        [GP_OP_PRIMARY_RETAIN] = "PRIMARY_RETAIN",
        [GP_OP_PRIMARY_RELEASE] = "PRIMARY_RELEASE",
        [GP_OP_PRIMARY_STATE] = "PRIMARY_STATE",
        [GP_OP_PRIMARY_FLAGS] = "PRIMARY_FLAGS",
        [GP_OP_PRIMARY_RESET] = "PRIMARY_RESET",
        [GP_OP_CTX_CREATE] = "CTX_CREATE",
        [GP_OP_CTX_DESTROY] = "CTX_DESTROY",
        [GP_OP_CTX_SYNC] = "CTX_SYNC",
        [GP_OP_CTX_SET_LIMIT] = "CTX_SET_LIMIT",
        [GP_OP_CTX_GET_LIMIT] = "CTX_GET_LIMIT",
        [GP_OP_MEM_ALLOC] = "MEM_ALLOC",
        [GP_OP_MEM_FREE] = "MEM_FREE",
        [GP_OP_MEM_INFO] = "MEM_INFO",
        [GP_OP_MEM_ALLOC_PITCH] = "MEM_ALLOC_PITCH",
        [GP_OP_MEM_RANGE] = "MEM_RANGE",
        [GP_OP_HTOD] = "HTOD",
        [GP_OP_DTOH] = "DTOH",
        [GP_OP_DTOD] = "DTOD",
        [GP_OP_MEMSET] = "MEMSET",
        [GP_OP_MEMCPY_3D] = "MEMCPY_3D",
        [GP_OP_STREAM_CREATE] = "STREAM_CREATE",
        [GP_OP_STREAM_DESTROY] = "STREAM_DESTROY",
        [GP_OP_STREAM_SYNC] = "STREAM_SYNC",
        [GP_OP_STREAM_QUERY] = "STREAM_QUERY",
        [GP_OP_STREAM_WAIT_EVENT] = "STREAM_WAIT_EVENT",
        [GP_OP_HOST_FUNC] = "HOST_FUNC",
        [GP_OP_CALLBACK] = "CALLBACK",
        [GP_OP_CALLBACK_DONE] = "CALLBACK_DONE",
        [GP_OP_EVENT_CREATE] = "EVENT_CREATE",
        [GP_OP_EVENT_DESTROY] = "EVENT_DESTROY",
        [GP_OP_EVENT_RECORD] = "EVENT_RECORD",
        [GP_OP_EVENT_SYNC] = "EVENT_SYNC",
        [GP_OP_EVENT_QUERY] = "EVENT_QUERY",
        [GP_OP_EVENT_ELAPSED] = "EVENT_ELAPSED",
        [GP_OP_MODULE_HAVE] = "MODULE_HAVE",
        [GP_OP_MODULE_LOAD] = "MODULE_LOAD",
        [GP_OP_MODULE_UNLOAD] = "MODULE_UNLOAD",
        [GP_OP_MODULE_FUNC] = "MODULE_FUNC",
        [GP_OP_MODULE_GLOBAL] = "MODULE_GLOBAL",
        [GP_OP_FUNC_ATTR] = "FUNC_ATTR",
        [GP_OP_LAUNCH] = "LAUNCH",
        [GP_OP_MODULE_FUNC_COUNT] = "MODULE_FUNC_COUNT",
        [GP_OP_LAUNCH_COOP] = "LAUNCH_COOP",
        [GP_OP_OCCUPANCY] = "OCCUPANCY",
        [GP_OP_CLIENT_ID] = "CLIENT_ID",
        [GP_OP_NVML_INIT] = "NVML_INIT",
        [GP_OP_NVML_SYSTEM] = "NVML_SYSTEM",
        [GP_OP_NVML_HANDLE] = "NVML_HANDLE",
        [GP_OP_NVML_STR] = "NVML_STR",
        [GP_OP_NVML_U32] = "NVML_U32",
        [GP_OP_NVML_PAIR] = "NVML_PAIR",
        [GP_OP_NVML_U64] = "NVML_U64",
        [GP_OP_NVML_MEMORY] = "NVML_MEMORY",
        [GP_OP_NVML_UTILIZATION] = "NVML_UTILIZATION",
        [GP_OP_NVML_PCI] = "NVML_PCI",
        [GP_OP_NVML_PROCS] = "NVML_PROCS",
        [GP_OP_NVML_PROC_UTIL] = "NVML_PROC_UTIL",
        [GP_OP_POOL_DEVICE] = "POOL_DEVICE",
        [GP_OP_POOL_SET_CURRENT] = "POOL_SET_CURRENT",
        [GP_OP_POOL_CREATE] = "POOL_CREATE",
        [GP_OP_POOL_DESTROY] = "POOL_DESTROY",
        [GP_OP_POOL_SET_ATTR] = "POOL_SET_ATTR",
        [GP_OP_POOL_GET_ATTR] = "POOL_GET_ATTR",
        [GP_OP_POOL_TRIM] = "POOL_TRIM",
        [GP_OP_MEM_ALLOC_ASYNC] = "MEM_ALLOC_ASYNC",
        [GP_OP_MEM_FREE_ASYNC] = "MEM_FREE_ASYNC",
        [GP_OP_VMM_GRANULARITY] = "VMM_GRANULARITY",
        [GP_OP_VMM_CREATE] = "VMM_CREATE",
        [GP_OP_VMM_RELEASE] = "VMM_RELEASE",
        [GP_OP_VMM_RESERVE] = "VMM_RESERVE",
        [GP_OP_VMM_ADDRESS_FREE] = "VMM_ADDRESS_FREE",
        [GP_OP_VMM_MAP] = "VMM_MAP",
        [GP_OP_VMM_UNMAP] = "VMM_UNMAP",
        [GP_OP_VMM_SET_ACCESS] = "VMM_SET_ACCESS",
        [GP_OP_VMM_GET_ACCESS] = "VMM_GET_ACCESS",
        [GP_OP_VMM_PROPS] = "VMM_PROPS",
        [GP_OP_MEM_ALLOC_MANAGED] = "MEM_ALLOC_MANAGED",
        [GP_OP_MEM_HOST_ALLOC] = "MEM_HOST_ALLOC",
        [GP_OP_MEM_HOST_FREE] = "MEM_HOST_FREE",
        [GP_OP_ARRAY_CREATE] = "ARRAY_CREATE",
        [GP_OP_ARRAY_DESTROY] = "ARRAY_DESTROY",
        [GP_OP_ARRAY_MEM_REQ] = "ARRAY_MEM_REQ",
        [GP_OP_MIPMAP_CREATE] = "MIPMAP_CREATE",
        [GP_OP_MIPMAP_DESTROY] = "MIPMAP_DESTROY",
        [GP_OP_MIPMAP_LEVEL] = "MIPMAP_LEVEL",
        [GP_OP_MIPMAP_MEM_REQ] = "MIPMAP_MEM_REQ",
        [GP_OP_HTOA] = "HTOA",
        [GP_OP_ATOH] = "ATOH",
        [GP_OP_ARRAY_LINEAR] = "ARRAY_LINEAR",
        [GP_OP_MEMCPY_BOX] = "MEMCPY_BOX",
        [GP_OP_GRAPH_CREATE] = "GRAPH_CREATE",
        [GP_OP_GRAPH_DESTROY] = "GRAPH_DESTROY",
        [GP_OP_GRAPH_ADD_EMPTY] = "GRAPH_ADD_EMPTY",
        [GP_OP_GRAPH_ADD_KERNEL] = "GRAPH_ADD_KERNEL",
        [GP_OP_GRAPH_ADD_MEMSET] = "GRAPH_ADD_MEMSET",
        [GP_OP_GRAPH_ADD_MEMCPY] = "GRAPH_ADD_MEMCPY",
        [GP_OP_GRAPH_ADD_HOST] = "GRAPH_ADD_HOST",
        [GP_OP_GRAPH_NODES] = "GRAPH_NODES",
        [GP_OP_GRAPH_INSTANTIATE] = "GRAPH_INSTANTIATE",
        [GP_OP_GRAPH_EXEC_DESTROY] = "GRAPH_EXEC_DESTROY",
        [GP_OP_GRAPH_LAUNCH] = "GRAPH_LAUNCH",
        [GP_OP_GRAPH_UPLOAD] = "GRAPH_UPLOAD",
        [GP_OP_CAPTURE_BEGIN] = "CAPTURE_BEGIN",
        [GP_OP_CAPTURE_END] = "CAPTURE_END",
        [GP_OP_CAPTURE_STATUS] = "CAPTURE_STATUS",
        [GP_OP_CAPTURE_INFO] = "CAPTURE_INFO",
        [GP_OP_CAPTURE_MODE] = "CAPTURE_MODE",
        [GP_OP_CAPTURE_HOST] = "CAPTURE_HOST",
        [GP_OP_CAPTURE_COPY] = "CAPTURE_COPY",
        [GP_OP_STAGE_DATA] = "STAGE_DATA",
        [GP_OP_STAGE_FILL] = "STAGE_FILL",
    };
    return op < GP_OP__END && names[op] ? names[op] : "unknown";
}

/* ---- payload writer ------------------------------------------------------------------------------ */

void gp_wbuf_init(gp_wbuf *w)
{
    w->p = NULL;
    w->len = w->cap = 0;
    w->ok = true;
}

void gp_wbuf_free(gp_wbuf *w)
{
    free(w->p);
    gp_wbuf_init(w);
}

void gp_wbuf_reset(gp_wbuf *w)
{
    w->len = 0;
    w->ok = true;
}

uint8_t *gp_w_reserve(gp_wbuf *w, size_t n)
{
    if (!w->ok)
        return NULL;
    if (n == 0) /* nothing to make room for (and no arithmetic on a NULL buffer) */
        return w->p ? w->p + w->len : NULL;
    if (n > SIZE_MAX / 2 - w->len) {
        w->ok = false;
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *p = realloc(w->p, cap);
        if (!p) {
            w->ok = false;
            return NULL;
        }
        w->p = p;
        w->cap = cap;
    }
    uint8_t *at = w->p + w->len;
    w->len += n;
    return at;
}

void gp_w_u32(gp_wbuf *w, uint32_t v)
{
    uint8_t *p = gp_w_reserve(w, 4);
    if (p)
        put32(p, v);
}

void gp_w_u64(gp_wbuf *w, uint64_t v)
{
    gp_w_u32(w, (uint32_t)v);
    gp_w_u32(w, (uint32_t)(v >> 32));
}

void gp_w_i64(gp_wbuf *w, int64_t v)
{
    gp_w_u64(w, (uint64_t)v);
}

void gp_w_f32(gp_wbuf *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    gp_w_u32(w, u);
}

void gp_w_blob(gp_wbuf *w, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        w->ok = false;
        return;
    }
    gp_w_u32(w, (uint32_t)n);
    uint8_t *d = gp_w_reserve(w, n);
    if (d && n)
        memcpy(d, p, n);
}

void gp_w_str(gp_wbuf *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > GP_WIRE_MAX_STR) {
        w->ok = false;
        return;
    }
    gp_w_blob(w, s, n);
}

/* ---- payload reader ------------------------------------------------------------------------------ */

void gp_rbuf_init(gp_rbuf *r, const void *p, size_t n)
{
    r->p = p;
    r->left = p ? n : 0;
    r->ok = true;
}

static const uint8_t *take(gp_rbuf *r, size_t n)
{
    if (!r->ok || n > r->left) {
        r->ok = false;
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}

uint32_t gp_r_u32(gp_rbuf *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get32(p) : 0;
}

uint64_t gp_r_u64(gp_rbuf *r)
{
    uint64_t lo = gp_r_u32(r);
    uint64_t hi = gp_r_u32(r);
    return lo | hi << 32;
}

int64_t gp_r_i64(gp_rbuf *r)
{
    return (int64_t)gp_r_u64(r);
}

float gp_r_f32(gp_rbuf *r)
{
    uint32_t u = gp_r_u32(r);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

const void *gp_r_blob(gp_rbuf *r, size_t *n)
{
    uint32_t len = gp_r_u32(r);
    const uint8_t *p = take(r, len);
    *n = p ? len : 0;
    return p;
}

bool gp_r_str(gp_rbuf *r, char *out, size_t cap)
{
    size_t n;
    const char *s = gp_r_blob(r, &n);
    if (cap)
        out[0] = '\0';
    if (!r->ok)
        return false;
    if (n > GP_WIRE_MAX_STR || n + 1 > cap || (n && memchr(s, '\0', n))) {
        r->ok = false;
        return false;
    }
    if (n)
        memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

bool gp_r_done(const gp_rbuf *r)
{
    return r->ok && r->left == 0;
}

/* ---- socket I/O ---------------------------------------------------------------------------------- */

static int writev_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        /* sendmsg with MSG_NOSIGNAL: a peer gone is an error here, never a SIGPIPE that kills the program */
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t done = (size_t)w;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int gp_wire_write_all(int fd, const void *p, size_t n)
{
    struct iovec iov = {(void *)p, n};
    return n ? writev_all(fd, &iov, 1) : 0;
}

int gp_wire_send2(int fd, const gp_wire_hdr *h, const void *a, size_t na, const void *b, size_t nb)
{
    uint8_t hdr[GP_WIRE_HEADER];
    gp_wire_hdr hh = *h;
    if (na + nb > GP_WIRE_MAX_PAYLOAD) {
        errno = EMSGSIZE;
        return -1;
    }
    hh.version = GP_WIRE_VERSION;
    hh.length = (uint32_t)(na + nb);
    gp_wire_hdr_encode(&hh, hdr);
    struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)a, na}, {(void *)b, nb}};
    int n = nb ? 3 : na ? 2 : 1;
    return writev_all(fd, iov, n);
}

int gp_wire_send(int fd, const gp_wire_hdr *h, const void *payload)
{
    return gp_wire_send2(fd, h, payload, payload ? h->length : 0, NULL, 0);
}

int gp_wire_read_all(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, MSG_WAITALL); /* one wakeup for a whole payload, not one per segment */
        if (r < 0 && errno == ENOTSOCK)
            r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = ECONNRESET;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int gp_wire_recv_hdr(int fd, gp_wire_hdr *h, const char **why)
{
    uint8_t hdr[GP_WIRE_HEADER];
    if (why)
        *why = NULL;
    if (gp_wire_read_all(fd, hdr, sizeof hdr) < 0) {
        if (why)
            *why = "the connection closed";
        return -1;
    }
    if (gp_wire_hdr_decode(hdr, h, why) < 0) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int gp_wire_recv_body(int fd, const gp_wire_hdr *h, void *out, const char **why)
{
    if (h->length && gp_wire_read_all(fd, out, h->length) < 0) {
        if (why)
            *why = "the connection closed in the middle of a frame";
        return -1;
    }
    return 0;
}

int gp_wire_recv(int fd, gp_wire_hdr *h, gp_wbuf *payload, const char **why)
{
    if (gp_wire_recv_hdr(fd, h, why) < 0)
        return -1;
    gp_wbuf_reset(payload);
    uint8_t *p = gp_w_reserve(payload, h->length);
    if (h->length && !p) {
        errno = ENOMEM;
        if (why)
            *why = "out of memory for a frame";
        return -1;
    }
    return gp_wire_recv_body(fd, h, p, why);
}

/* ---- addresses ----------------------------------------------------------------------------------- */

static int split_hostport(const char *addr, char *host, size_t hl, char *port, size_t pl)
{
    const char *a = strncmp(addr, "tcp:", 4) == 0 || strncmp(addr, "tls:", 4) == 0 ? addr + 4 : addr;
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || !colon[1])
        return -1;
    size_t n = (size_t)(colon - a);
    if (a[0] == '[' && colon[-1] == ']') { /* [v6]:port */
        a++;
        n -= 2;
    }
    if (n + 1 > hl || strlen(colon + 1) + 1 > pl)
        return -1;
    memcpy(host, a, n);
    host[n] = '\0';
    snprintf(port, pl, "%s", colon + 1);
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) + 1 > sizeof sa->sun_path) {
        snprintf(err, errlen, "unix socket path %s is too long (at most %zu bytes)", path,
                 sizeof sa->sun_path - 1);
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

int gp_wire_listen(const char *addr, int *port_out, char *err, size_t errlen)
{
    if (port_out)
        *port_out = 0;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sa;
        if (unix_addr(addr + 5, &sa, err, errlen) < 0)
            return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unlink(addr + 5);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[256], port[32];
    if (split_hostport(addr, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "bad address \"%s\": use unix:/path, tcp:HOST:PORT or tls:HOST:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE},
                    *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (port_out && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static int set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* connect() with a deadline. */
static int connect_by(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    if (set_nonblock(fd, 1) < 0)
        return -1;
    int rc = connect(fd, sa, len);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        rc = poll(&p, 1, timeout_ms);
        if (rc == 0) {
            errno = ETIMEDOUT;
            rc = -1;
        } else if (rc > 0) {
            int e = 0;
            socklen_t el = sizeof e;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
            errno = e;
            rc = e ? -1 : 0;
        }
    }
    int e = errno;
    set_nonblock(fd, 0);
    errno = e;
    return rc;
}

int gp_wire_connect(const char *addr, int timeout_ms, char *err, size_t errlen)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sa;
        if (unix_addr(addr + 5, &sa, err, errlen) < 0)
            return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_by(fd, (struct sockaddr *)&sa, sizeof sa, timeout_ms) < 0) {
            snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[256], port[32];
    if (split_hostport(addr, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "bad address \"%s\": use unix:/path, tcp:HOST:PORT or tls:HOST:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect_by(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == 0)
            break;
        e = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(e));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (strncmp(addr, "tls:", 4) != 0)
        return fd;
    gp_wire_keepalive(fd, GP_WIRE_CLIENT_KEEPALIVE);
    return gp_tls_client(fd, host, getenv("GPUPOOL_REMOTE_CA"), timeout_ms, err, errlen);
}

void gp_wire_keepalive(int fd, int idle_s, unsigned user_timeout_ms)
{
    int one = 1, intvl = idle_s > 2 ? 2 : 1, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    if (user_timeout_ms)
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

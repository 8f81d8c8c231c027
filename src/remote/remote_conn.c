/* remote_conn.c - reaching `gpupool worker` from either client library, and CUDA_VISIBLE_DEVICES
 * (remote_conn.h).
 *
 * The handshake is synchronous and stateless: HELLO, its reply, then CLIENT_ID (no reply), all before the
 * library makes the socket its connection. Failures are logged once here, in the calling library's words.
 */
#include "remote/remote_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/visible.h"
#include "remote/wire.h"

#define GP_CONNECT_MS   5000
#define GP_CLIENT_PROTO 1

/* Up to cap-1 bytes of a small file, the first line only; false when it cannot be read. */
static bool read_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        n = 0;
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    return true;
}

/* The token: GPUPOOL_REMOTE_TOKEN, or the first line of GPUPOOL_REMOTE_TOKEN_FILE. */
static bool read_token(const gp_remote_who *who, char *out, size_t cap)
{
    const char *t = getenv("GPUPOOL_REMOTE_TOKEN");
    if (t && *t) {
        snprintf(out, cap, "%s", t);
        return true;
    }
    const char *f = getenv("GPUPOOL_REMOTE_TOKEN_FILE");
    out[0] = '\0';
    if (f == NULL || *f == '\0')
        return true; /* no token: the worker decides */
    if (!read_line(f, out, cap)) {
        gp_log(GP_LOG_ERROR, who->log, "cannot read GPUPOOL_REMOTE_TOKEN_FILE %s: %s; %s returns %s", f,
               strerror(errno), who->call, who->no_device);
        return false;
    }
    return true;
}

static void program_name(char *out, size_t cap)
{
    if (!read_line("/proc/self/comm", out, cap) || !out[0])
        snprintf(out, cap, "unknown");
}

void gp_remote_pid_space(char *out, size_t cap)
{
    char boot[64], ns[64];
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    if (!read_line("/proc/sys/kernel/random/boot_id", boot, sizeof boot) || !boot[0] || n <= 0) {
        out[0] = '\0';
        return;
    }
    ns[n] = '\0';
    snprintf(out, cap, "%s/%s", boot, ns);
}

/* HELLO and its reply on a fresh socket; then CLIENT_ID. 0, or -1 with *fail (logged). */
static int handshake(const gp_remote_who *who, int fd, const char *addr, gp_remote_fail *fail)
{
    char token[GP_WIRE_MAX_STR], name[64], space[160];
    *fail = GP_REMOTE_NO_DEVICE;
    if (!read_token(who, token, sizeof token))
        return -1;
    program_name(name, sizeof name);
    gp_wbuf w, in;
    gp_wbuf_init(&w);
    gp_wbuf_init(&in);
    gp_w_u32(&w, GP_CLIENT_PROTO);
    gp_w_u32(&w, GP_CLIENT_PROTO);
    gp_w_str(&w, token);
    gp_w_str(&w, name);
    gp_w_u32(&w, (uint32_t)getpid());
    memset(token, 0, sizeof token);
    gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_HELLO, .seq = 1, .length = (uint32_t)w.len};
    const char *why = NULL;
    int rc = -1;
    gp_w_reserve(&in, 1); /* never NULL + 0 (see gp_wire_recv) */
    if (!w.ok || gp_wire_send(fd, &h, w.p) < 0 || gp_wire_recv(fd, &h, &in, &why) < 0) {
        gp_log(GP_LOG_ERROR, who->log,
               "the gpupool worker at %s closed the connection during the handshake (%s); check that "
               "GPUPOOL_REMOTE names a gpupool worker; %s returns %s",
               addr, why ? why : strerror(errno), who->call, who->no_device);
    } else if (h.status == GP_WIRE_E_AUTH) {
        gp_log(GP_LOG_ERROR, who->log,
               "the gpupool worker at %s refused the token; set GPUPOOL_REMOTE_TOKEN (or "
               "GPUPOOL_REMOTE_TOKEN_FILE) to the worker's token; %s returns %s",
               addr, who->call, who->not_permitted);
        *fail = GP_REMOTE_NOT_PERMITTED;
    } else if (h.status != 0) {
        gp_log(GP_LOG_ERROR, who->log,
               "the gpupool worker at %s refused the session (status %u%s); %s returns %s", addr, h.status,
               h.status == GP_WIRE_E_VERSION ? ": no common protocol version, upgrade client or worker" : "",
               who->call, who->no_device);
    } else {
        gp_rbuf r;
        gp_rbuf_init(&r, in.p, in.len);
        uint32_t proto = gp_r_u32(&r);
        uint64_t session = gp_r_u64(&r);
        char worker[256];
        gp_r_str(&r, worker, sizeof worker);
        if (!r.ok || proto != GP_CLIENT_PROTO || h.seq != 1 || h.op != GP_OP_HELLO) {
            gp_log(GP_LOG_ERROR, who->log, "the gpupool worker at %s answered HELLO wrongly; %s returns %s",
                   addr, who->call, who->no_device);
        } else {
            /* who we are, for the worker's session registry (NVML's process lists) */
            gp_remote_pid_space(space, sizeof space);
            gp_wbuf_reset(&w);
            gp_w_u32(&w, (uint32_t)getpid());
            gp_w_str(&w, space);
            h = (gp_wire_hdr){.version = GP_WIRE_VERSION,
                              .op = GP_OP_CLIENT_ID,
                              .flags = GP_WIRE_F_ASYNC,
                              .seq = 2,
                              .length = (uint32_t)w.len};
            if (!w.ok || gp_wire_send(fd, &h, w.p) < 0) {
                gp_log(GP_LOG_ERROR, who->log,
                       "the gpupool worker at %s went away after HELLO (%s); %s returns %s", addr,
                       strerror(errno), who->call, who->no_device);
            } else {
                gp_log(GP_LOG_INFO, who->log, "connected to %s at %s (session %llu)", worker, addr,
                       (unsigned long long)session);
                rc = 0;
            }
        }
    }
    gp_wbuf_free(&w);
    gp_wbuf_free(&in);
    return rc;
}

int gp_remote_connect(const gp_remote_who *who, char *addr, size_t addrlen, uint32_t *seq,
                      gp_remote_fail *fail)
{
    const char *a = getenv("GPUPOOL_REMOTE");
    *fail = GP_REMOTE_NO_DEVICE;
    snprintf(addr, addrlen, "%s", a ? a : "");
    if (a == NULL || *a == '\0') {
        gp_log(GP_LOG_ERROR, who->log,
               "this is gpupool's remote %s and GPUPOOL_REMOTE is not set: set it to the worker's address "
               "(unix:/path, tcp:HOST:PORT or tls:HOST:PORT) and GPUPOOL_REMOTE_TOKEN to its token; %s "
               "returns %s",
               who->library, who->call, who->no_device);
        return -1;
    }
    char err[512];
    int fd = gp_wire_connect(a, GP_CONNECT_MS, err, sizeof err);
    if (fd < 0) {
        gp_log(GP_LOG_ERROR, who->log,
               "%s; start `gpupool worker` there or fix GPUPOOL_REMOTE; %s returns %s", err, who->call,
               who->no_device);
        return -1;
    }
    if (strncmp(a, "unix:", 5) != 0 && strncmp(a, "tls:", 4) != 0) /* gp_wire_connect tuned tls:'s socket */
        gp_wire_keepalive(fd, GP_WIRE_CLIENT_KEEPALIVE);
    if (handshake(who, fd, addr, fail) < 0) {
        close(fd);
        return -1;
    }
    *seq = 2;
    return fd;
}

/* ---- CUDA_VISIBLE_DEVICES ------------------------------------------------------------------------- */

void gp_remote_uuid_text(const uint8_t u[16], char out[41])
{
    static const int dash[] = {4, 6, 8, 10};
    char *o = out + sprintf(out, "GPU-");
    for (int i = 0, d = 0; i < 16; i++) {
        if (d < 4 && i == dash[d]) {
            *o++ = '-';
            d++;
        }
        o += sprintf(o, "%02x", u[i]);
    }
}

static const char *uuid_text(const void *arg, int i, char out[GP_VISIBLE_UUID_LEN])
{
    gp_remote_uuid_text(((const uint8_t(*)[16])arg)[i], out);
    return out;
}

int gp_remote_visible(const uint8_t (*uuid)[16], int n, int *order)
{
    return gp_visible_devices(getenv("CUDA_VISIBLE_DEVICES"), n, uuid_text, uuid, order);
}

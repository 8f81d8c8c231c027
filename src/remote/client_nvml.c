/* client_nvml.c - libnvidia-ml.so.1 for a host without a GPU: NVML forwarded to `gpupool worker`
 * (docs/protocol.md, "NVML"), beside the remote libcuda.so.1 in lib/remote.
 *
 * nvmlInit connects on its own (remote_conn.c: the same GPUPOOL_REMOTE, token and HELLO as cuInit), with a
 * session of its own rather than the CUDA library's: NVML needs no cuInit, is refcounted and shut down on
 * its own, and a monitoring call never waits behind a long synchronizing CUDA call (a session serves one
 * call at a time, in order). The last nvmlShutdown ends the session. One call (request and reply) at a time,
 * under g.mu; once the connection fails every call answers NVML_ERROR_GPU_IS_LOST until nvmlShutdown.
 *
 * Devices: at nvmlInit the worker lists NVML's devices and CUDA's; the ones shown are NVML's, in NVML's
 * order, whose UUIDs CUDA_VISIBLE_DEVICES leaves to CUDA (applied as the remote libcuda applies it), so NVML
 * and CUDA agree on the set. An nvmlDevice_t points into g.devs, which holds the worker's NVML index of
 * each; handles stay the same from nvmlInit to nvmlShutdown. Pids in process lists are this host's: the
 * worker translates its sessions' pids to their clients' and leaves out processes of other hosts.
 *
 * A child forked while NVML is up keeps its reference and reconnects at its next call (the parent's socket
 * stays the parent's). Functions not forwarded are generated stubs (data/nvml-exports.txt) answering
 * NVML_ERROR_NOT_SUPPORTED with one log line.
 */
#define GP_NVML_NO_API_MACROS 1
#include "gpupool/nvml.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "remote/remote_conn.h"
#include "remote/wire.h"

#define GP_API     __attribute__((visibility("default")))
#define COMPONENT  "remote-nvml"
#define GP_MAX_DEV 64

struct nvmlDevice_st {
    uint32_t index; /* the worker's NVML index */
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
};

static struct {
    pthread_mutex_t mu; /* one call at a time; everything below */
    int refs;           /* nvmlInit calls not yet shut down */
    int fd;             /* -1: not connected (before nvmlInit, after a fork or once lost) */
    bool lost;          /* the worker went away: NVML_ERROR_GPU_IS_LOST until the last nvmlShutdown */
    pid_t pid;          /* the process the connection belongs to */
    unsigned flags;     /* nvmlInitWithFlags', for a reconnect */
    uint32_t seq;
    char addr[256];
    gp_wbuf req, rep;
    int ndev;
    struct nvmlDevice_st devs[GP_MAX_DEV];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static const gp_remote_who g_who = {.library = "NVML",
                                    .call = "nvmlInit",
                                    .no_device = "NVML_ERROR_DRIVER_NOT_LOADED",
                                    .not_permitted = "NVML_ERROR_NO_PERMISSION",
                                    .log = COMPONENT};

/* Called by the generated stubs (cmake/gen_stubs.cmake) of every NVML export not forwarded here. */
int gp_nvml_unsupported(const char *name, atomic_int *once);
int gp_nvml_unsupported(const char *name, atomic_int *once)
{
    if (!atomic_exchange(once, 1))
        gp_log(GP_LOG_WARN, COMPONENT,
               "%s is not supported over GPU-over-IP (returning NVML_ERROR_NOT_SUPPORTED)", name);
    return NVML_ERROR_NOT_SUPPORTED;
}

/* ---- the connection ------------------------------------------------------------------------------- */

static void drop_conn(void)
{
    if (g.fd >= 0)
        close(g.fd);
    g.fd = -1;
}

static nvmlReturn_t conn_lost(unsigned op, const char *why)
{
    if (!g.lost)
        gp_log(GP_LOG_ERROR, COMPONENT,
               "the gpupool worker at %s went away (%s: %s); NVML calls now return NVML_ERROR_GPU_IS_LOST",
               g.addr, gp_wire_op_name(op), why);
    g.lost = true;
    if (g.fd >= 0)
        shutdown(g.fd, SHUT_RDWR);
    drop_conn();
    return NVML_ERROR_GPU_IS_LOST;
}

/* Sends g.req as op and reads the reply into g.rep (*r reads it): the reply's status, an nvmlReturn_t.
 * Called with g.mu held and a connection. */
static nvmlReturn_t rpc(unsigned op, gp_rbuf *r)
{
    gp_rbuf_init(r, NULL, 0);
    if (!g.req.ok)
        return NVML_ERROR_MEMORY;
    gp_wire_hdr h = {
        .version = GP_WIRE_VERSION, .op = (uint16_t)op, .seq = ++g.seq, .length = (uint32_t)g.req.len};
    const char *why = NULL;
    if (gp_wire_send(g.fd, &h, g.req.p) < 0)
        return conn_lost(op, strerror(errno));
    uint32_t seq = h.seq;
    if (gp_wire_recv(g.fd, &h, &g.rep, &why) < 0)
        return conn_lost(op, why ? why : strerror(errno));
    if (h.seq != seq || h.op != op || !(h.flags & GP_WIRE_F_REPLY))
        return conn_lost(op, "a reply out of order (protocol error)");
    if (h.status >= 0x10000u)
        return conn_lost(op, h.status == GP_WIRE_E_MALFORMED ? "the worker could not decode a request"
                                                             : "the worker ended the session");
    if (h.status == 801) { /* CUDA_ERROR_NOT_SUPPORTED: a worker that does not know the op */
        gp_log_once(
            GP_LOG_WARN, COMPONENT,
            "the gpupool worker at %s does not forward NVML's %s (returning NVML_ERROR_NOT_SUPPORTED)",
            g.addr, gp_wire_op_name(op));
        return NVML_ERROR_NOT_SUPPORTED;
    }
    gp_rbuf_init(r, g.rep.p, g.rep.len);
    return (nvmlReturn_t)h.status;
}

/* A reply whose fields do not decode: the session cannot go on. */
static nvmlReturn_t malformed(unsigned op)
{
    return conn_lost(op, "a reply that does not decode (protocol error)");
}

static gp_wbuf *req(void)
{
    gp_wbuf_reset(&g.req);
    g.req.ok = true;
    return &g.req;
}

/* NVML_INIT: the devices to show (with g.mu held and a fresh connection). */
static nvmlReturn_t load_devices(void)
{
    gp_rbuf r;
    gp_w_u32(req(), g.flags);
    nvmlReturn_t rc = rpc(GP_OP_NVML_INIT, &r);
    if (rc != NVML_SUCCESS)
        return rc;
    uint32_t n = gp_r_u32(&r);
    struct nvmlDevice_st nv[GP_MAX_DEV];
    char bus[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    for (uint32_t i = 0; i < n && r.ok; i++) {
        struct nvmlDevice_st d = {.index = i};
        gp_r_str(&r, d.uuid, sizeof d.uuid);
        gp_r_str(&r, bus, sizeof bus);
        if (i < GP_MAX_DEV)
            nv[i] = d;
    }
    uint32_t m = gp_r_u32(&r);
    uint8_t cuda[GP_MAX_DEV][16];
    for (uint32_t i = 0; i < m && r.ok; i++) {
        size_t len = 0;
        const void *u = gp_r_blob(&r, &len);
        if (len != 16)
            r.ok = false;
        else if (i < GP_MAX_DEV)
            memcpy(cuda[i], u, 16);
    }
    if (!gp_r_done(&r))
        return malformed(GP_OP_NVML_INIT);
    int order[GP_MAX_DEV];
    int nvis = gp_remote_visible((const uint8_t(*)[16])cuda, m < GP_MAX_DEV ? (int)m : GP_MAX_DEV, order);
    g.ndev = 0;
    for (uint32_t i = 0; i < n && i < GP_MAX_DEV; i++) {
        bool shown = false;
        for (int k = 0; k < nvis && !shown; k++) {
            char u[41];
            gp_remote_uuid_text(cuda[order[k]], u);
            shown = strcasecmp(u, nv[i].uuid) == 0;
        }
        if (shown)
            g.devs[g.ndev++] = nv[i];
    }
    return NVML_SUCCESS;
}

/* Connects (g.mu held): HELLO, then NVML_INIT. */
static nvmlReturn_t connect_worker(void)
{
    gp_remote_fail fail;
    int fd = gp_remote_connect(&g_who, g.addr, sizeof g.addr, &g.seq, &fail);
    if (fd < 0)
        return fail == GP_REMOTE_NOT_PERMITTED ? NVML_ERROR_NO_PERMISSION : NVML_ERROR_DRIVER_NOT_LOADED;
    g.fd = fd;
    g.pid = getpid();
    g.lost = false;
    nvmlReturn_t rc = load_devices();
    if (rc != NVML_SUCCESS) {
        if (!g.lost)
            gp_log(GP_LOG_ERROR, COMPONENT, "nvmlInit on the gpupool worker at %s failed: %s", g.addr,
                   nvmlErrorString(rc));
        drop_conn();
    }
    return rc;
}

/* At exit: BYE ends the session (its reply is not awaited). */
static void at_exit(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.fd >= 0 && g.pid == getpid()) {
        gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_BYE, .seq = ++g.seq};
        (void)gp_wire_send(g.fd, &h, NULL);
    }
    pthread_mutex_unlock(&g.mu);
}

/* In a forked child: the parent's connection is the parent's (closing our copy leaves it open there). */
static void atfork_child(void)
{
    pthread_mutex_init(&g.mu, NULL);
    if (g.fd >= 0)
        close(g.fd);
    g.fd = -1;
}

/* Locks g.mu for a call, reconnecting in a forked child: NVML_SUCCESS with the lock held, or an error
 * without it. */
static nvmlReturn_t begin(void)
{
    pthread_mutex_lock(&g.mu);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (g.refs == 0)
        rc = NVML_ERROR_UNINITIALIZED;
    else if (g.lost)
        rc = NVML_ERROR_GPU_IS_LOST;
    else if (g.fd < 0 && (rc = connect_worker()) != NVML_SUCCESS && rc != NVML_ERROR_GPU_IS_LOST)
        rc = NVML_ERROR_GPU_IS_LOST; /* the worker was there at nvmlInit */
    if (rc != NVML_SUCCESS)
        pthread_mutex_unlock(&g.mu);
    return rc;
}

static void end(void)
{
    pthread_mutex_unlock(&g.mu);
}

/* ---- init and errors ------------------------------------------------------------------------------ */

static nvmlReturn_t init(unsigned flags)
{
    if (flags & ~(unsigned)(NVML_INIT_FLAG_NO_GPUS | NVML_INIT_FLAG_NO_ATTACH))
        return NVML_ERROR_INVALID_ARGUMENT;
    static bool hooks;
    pthread_mutex_lock(&g.mu);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (g.refs == 0) {
        gp_wbuf_init(&g.req);
        gp_wbuf_init(&g.rep);
        gp_w_reserve(&g.rep, 1); /* never NULL + 0 (see gp_wire_recv) */
        g.flags = flags;
        g.lost = false;
        rc = connect_worker();
    }
    if (rc == NVML_SUCCESS) {
        g.refs++;
        if (!hooks) {
            pthread_atfork(NULL, NULL, atfork_child);
            atexit(at_exit);
            hooks = true;
        }
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

GP_API nvmlReturn_t nvmlInit(void)
{
    return init(0);
}

GP_API nvmlReturn_t nvmlInit_v2(void)
{
    return init(0);
}

GP_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    return init(flags);
}

GP_API nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.refs == 0) {
        pthread_mutex_unlock(&g.mu);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (--g.refs == 0) {
        if (g.fd >= 0 && g.pid == getpid()) {
            gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_BYE, .seq = ++g.seq};
            (void)gp_wire_send(g.fd, &h, NULL); /* the reply is not awaited: the worker ends the session */
        }
        drop_conn();
        g.ndev = 0;
        g.lost = false;
        gp_wbuf_free(&g.req);
        gp_wbuf_free(&g.rep);
    }
    pthread_mutex_unlock(&g.mu);
    return NVML_SUCCESS;
}

static const struct {
    int code;
    const char *text;
} errors[] = {
#define GP_NVML_ERROR(name, value, text) {value, text},
#include "sim/nvml_errors.inc"
#undef GP_NVML_ERROR
};

GP_API const char *nvmlErrorString(nvmlReturn_t result)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == (int)result)
            return errors[i].text;
    return "Unknown Error";
}

/* ---- system --------------------------------------------------------------------------------------- */

static nvmlReturn_t copy_str(char *dst, unsigned int length, const char *src)
{
    if (dst == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

/* NVML_SYSTEM: which 0 the driver version, 1 NVML's; *cuda the CUDA driver version. */
static nvmlReturn_t system_info(int which, char *out, unsigned int length, int *cuda)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    gp_rbuf r;
    req();
    rc = rpc(GP_OP_NVML_SYSTEM, &r);
    char v[2][NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    gp_r_str(&r, v[0], sizeof v[0]);
    gp_r_str(&r, v[1], sizeof v[1]);
    int c = (int)gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_SYSTEM);
    if (rc == NVML_SUCCESS)
        rc = cuda ? (*cuda = c, NVML_SUCCESS) : copy_str(out, length, v[which]);
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    return system_info(0, version, length, NULL);
}

GP_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return system_info(1, version, length, NULL);
}

GP_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    if (cudaDriverVersion == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    return system_info(0, NULL, 0, cudaDriverVersion);
}

GP_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* The pids NVML lists here are this host's, so their names are read here. */
GP_API nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    pthread_mutex_lock(&g.mu);
    int refs = g.refs;
    pthread_mutex_unlock(&g.mu);
    if (refs == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (name == NULL || length == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NVML_ERROR_NOT_FOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NVML_ERROR_NOT_FOUND;
    buf[n] = '\0';
    snprintf(name, length, "%s", buf);
    return NVML_SUCCESS;
}

/* ---- device handles (answered here) --------------------------------------------------------------- */

/* A handle of ours (g.mu held): its worker index. */
static nvmlReturn_t dev_index(nvmlDevice_t h, uint32_t *index)
{
    if (h < &g.devs[0] || h >= &g.devs[g.ndev])
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = h->index;
    return NVML_SUCCESS;
}

static nvmlReturn_t count(unsigned int *deviceCount)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    if (deviceCount == NULL)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    else
        *deviceCount = (unsigned)g.ndev;
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return count(deviceCount);
}

GP_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    return count(deviceCount);
}

static nvmlReturn_t by_index(unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    if (device == NULL || index >= (unsigned)g.ndev)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    else
        *device = &g.devs[index];
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return by_index(index, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return by_index(index, device);
}

/* NVML_HANDLE: the worker's NVML finds the device (its own rules for the key), we map it to ours; a device
 * CUDA_VISIBLE_DEVICES hides is not found. */
static nvmlReturn_t by_key(uint32_t kind, const char *key, nvmlDevice_t *device)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    if (key == NULL || device == NULL || strlen(key) > GP_WIRE_MAX_STR) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_rbuf r;
    gp_wbuf *w = req();
    gp_w_u32(w, kind);
    gp_w_str(w, key);
    rc = rpc(GP_OP_NVML_HANDLE, &r);
    uint32_t index = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_HANDLE);
    if (rc == NVML_SUCCESS) {
        rc = NVML_ERROR_NOT_FOUND;
        for (int i = 0; i < g.ndev; i++)
            if (g.devs[i].index == index) {
                *device = &g.devs[i];
                rc = NVML_SUCCESS;
            }
    }
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    return by_key(GP_NVML_BY_UUID, uuid, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return by_key(GP_NVML_BY_PCI_BUS_ID, pciBusId, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    return by_key(GP_NVML_BY_PCI_BUS_ID, pciBusId, device);
}

GP_API nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device)
{
    return by_key(GP_NVML_BY_SERIAL, serial, device);
}

GP_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    uint32_t wi;
    if ((rc = dev_index(device, &wi)) == NVML_SUCCESS) {
        if (index == NULL)
            rc = NVML_ERROR_INVALID_ARGUMENT;
        else
            *index = (unsigned)(device - g.devs);
    }
    end();
    return rc;
}

/* ---- device queries (forwarded) ------------------------------------------------------------------- */

/* Begins a call on device h: g.mu held and the request started with its worker index, or an error. */
static nvmlReturn_t dev_begin(nvmlDevice_t h, gp_wbuf **w)
{
    nvmlReturn_t rc = begin();
    if (rc)
        return rc;
    uint32_t index;
    if ((rc = dev_index(h, &index)) != NVML_SUCCESS) {
        end();
        return rc;
    }
    *w = req();
    gp_w_u32(*w, index);
    return NVML_SUCCESS;
}

static nvmlReturn_t dev_str(nvmlDevice_t h, uint32_t q, char *out, unsigned int length)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(h, &w);
    if (rc)
        return rc;
    if (out == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u32(w, q);
    gp_rbuf r;
    char v[256];
    rc = rpc(GP_OP_NVML_STR, &r);
    gp_r_str(&r, v, sizeof v);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_STR);
    if (rc == NVML_SUCCESS)
        rc = copy_str(out, length, v);
    end();
    return rc;
}

#define STR_QUERY(name, fn, type)                                               \
    GP_API nvmlReturn_t fn(nvmlDevice_t device, char *out, unsigned int length) \
    {                                                                           \
        return dev_str(device, GP_NVML_Q_##name, out, length);                  \
    }
GP_NVML_STR_QUERIES(STR_QUERY)
#undef STR_QUERY

static nvmlReturn_t dev_u32(nvmlDevice_t h, uint32_t q, uint32_t arg, uint32_t *out)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(h, &w);
    if (rc)
        return rc;
    if (out == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u32(w, q);
    gp_w_u32(w, arg);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_U32, &r);
    uint32_t v = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_U32);
    if (rc == NVML_SUCCESS)
        *out = v;
    end();
    return rc;
}

#define U32_QUERY(name, fn, type)                                                  \
    GP_API nvmlReturn_t fn(nvmlDevice_t device, type *out)                         \
    {                                                                              \
        uint32_t v_ = 0;                                                           \
        nvmlReturn_t rc_ = dev_u32(device, GP_NVML_Q_##name, 0, out ? &v_ : NULL); \
        if (rc_ == NVML_SUCCESS)                                                   \
            *out = (type)v_;                                                       \
        return rc_;                                                                \
    }
#define U32_ARG_QUERY(name, fn, type)                                                          \
    GP_API nvmlReturn_t fn(nvmlDevice_t device, type arg, unsigned int *out)                   \
    {                                                                                          \
        uint32_t v_ = 0;                                                                       \
        nvmlReturn_t rc_ = dev_u32(device, GP_NVML_Q_##name, (uint32_t)arg, out ? &v_ : NULL); \
        if (rc_ == NVML_SUCCESS)                                                               \
            *out = v_;                                                                         \
        return rc_;                                                                            \
    }
GP_NVML_U32_QUERIES(U32_QUERY)
GP_NVML_U32_ARG_QUERIES(U32_ARG_QUERY)
#undef U32_ARG_QUERY
#undef U32_QUERY

static nvmlReturn_t dev_pair(nvmlDevice_t h, uint32_t q, uint32_t *a, uint32_t *b, bool args_ok)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(h, &w);
    if (rc)
        return rc;
    if (!args_ok) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u32(w, q);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_PAIR, &r);
    uint32_t x = gp_r_u32(&r), y = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_PAIR);
    if (rc == NVML_SUCCESS) {
        *a = x;
        *b = y;
    }
    end();
    return rc;
}

#define PAIR_QUERY(name, fn, type)                                                        \
    GP_API nvmlReturn_t fn(nvmlDevice_t device, type *first, type *second)                \
    {                                                                                     \
        uint32_t a_ = 0, b_ = 0;                                                          \
        nvmlReturn_t rc_ = dev_pair(device, GP_NVML_Q_##name, &a_, &b_, first && second); \
        if (rc_ == NVML_SUCCESS) {                                                        \
            *first = (type)a_;                                                            \
            *second = (type)b_;                                                           \
        }                                                                                 \
        return rc_;                                                                       \
    }
GP_NVML_PAIR_QUERIES(PAIR_QUERY)
#undef PAIR_QUERY

static nvmlReturn_t dev_u64(nvmlDevice_t h, uint32_t q, uint32_t a, uint32_t b, unsigned long long *out)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(h, &w);
    if (rc)
        return rc;
    if (out == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u32(w, q);
    gp_w_u32(w, a);
    gp_w_u32(w, b);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_U64, &r);
    uint64_t v = gp_r_u64(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_U64);
    if (rc == NVML_SUCCESS)
        *out = v;
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy)
{
    return dev_u64(device, GP_NVML_U64_ENERGY, 0, 0, energy);
}

GP_API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                                nvmlEccCounterType_t counterType,
                                                unsigned long long *eccCounts)
{
    return dev_u64(device, GP_NVML_U64_ECC_ERRORS, (uint32_t)errorType, (uint32_t)counterType, eccCounts);
}

/* NVML_MEMORY: total, reserved, free, used; arg_rc: what the caller's arguments deserve once the handle
 * passed (NVML_SUCCESS: the call goes out). */
static nvmlReturn_t memory(nvmlDevice_t h, bool v2, nvmlReturn_t arg_rc, uint64_t m[4])
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(h, &w);
    if (rc)
        return rc;
    if (arg_rc != NVML_SUCCESS) {
        end();
        return arg_rc;
    }
    gp_w_u32(w, v2);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_MEMORY, &r);
    for (int i = 0; i < 4; i++)
        m[i] = gp_r_u64(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_MEMORY);
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *mem)
{
    uint64_t m[4];
    nvmlReturn_t rc = memory(device, false, mem ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT, m);
    if (rc == NVML_SUCCESS) {
        mem->total = m[0];
        mem->free = m[2];
        mem->used = m[3];
    }
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *mem)
{
    uint64_t m[4];
    nvmlReturn_t arg_rc = mem == NULL                     ? NVML_ERROR_INVALID_ARGUMENT
                          : mem->version != nvmlMemory_v2 ? NVML_ERROR_ARGUMENT_VERSION_MISMATCH
                                                          : NVML_SUCCESS; /* the one layout known here */
    nvmlReturn_t rc = memory(device, true, arg_rc, m);
    if (rc == NVML_SUCCESS) {
        mem->total = m[0];
        mem->reserved = m[1];
        mem->free = m[2];
        mem->used = m[3];
    }
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(device, &w);
    if (rc)
        return rc;
    if (utilization == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_UTILIZATION, &r);
    uint32_t gpu = gp_r_u32(&r), mem = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_UTILIZATION);
    if (rc == NVML_SUCCESS) {
        utilization->gpu = gpu;
        utilization->memory = mem;
    }
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(device, &w);
    if (rc)
        return rc;
    if (pci == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_rbuf r;
    nvmlPciInfo_t p;
    memset(&p, 0, sizeof p);
    rc = rpc(GP_OP_NVML_PCI, &r);
    gp_r_str(&r, p.busIdLegacy, sizeof p.busIdLegacy);
    gp_r_str(&r, p.busId, sizeof p.busId);
    p.domain = gp_r_u32(&r);
    p.bus = gp_r_u32(&r);
    p.device = gp_r_u32(&r);
    p.pciDeviceId = gp_r_u32(&r);
    p.pciSubSystemId = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && !gp_r_done(&r))
        rc = malformed(GP_OP_NVML_PCI);
    if (rc == NVML_SUCCESS)
        *pci = p;
    end();
    return rc;
}

/* The unversioned and _v2 forms fill the 52-byte layout of NVML before 9.0 (nvml.h). */
static nvmlReturn_t pci_legacy(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    nvmlPciInfo_t p;
    if (pci == NULL)
        return nvmlDeviceGetPciInfo_v3(device, NULL); /* the handle's error first, as NVML */
    nvmlReturn_t rc = nvmlDeviceGetPciInfo_v3(device, &p);
    if (rc == NVML_SUCCESS) {
        memset(pci, 0, sizeof *pci);
        memcpy(pci->busId, p.busIdLegacy, sizeof pci->busId);
        pci->domain = p.domain;
        pci->bus = p.bus;
        pci->device = p.device;
        pci->pciDeviceId = p.pciDeviceId;
        pci->pciSubSystemId = p.pciSubSystemId;
    }
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    return pci_legacy(device, pci);
}

GP_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, gp_nvml_pci_info_legacy_t *pci)
{
    return pci_legacy(device, pci);
}

/* ---- processes ------------------------------------------------------------------------------------ */

/* NVML_PROCS into the caller's array of records of one layout (version 1: nvmlProcessInfo_v1_t, else
 * nvmlProcessInfo_t), with NVML's rules: a count too small (or no array for a nonempty list) answers
 * NVML_ERROR_INSUFFICIENT_SIZE with the count needed. */
static nvmlReturn_t running(nvmlDevice_t device, uint32_t kind, unsigned int *infoCount, void *infos,
                            int version)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(device, &w);
    if (rc)
        return rc;
    if (infoCount == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u32(w, kind);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_PROCS, &r);
    uint32_t n = gp_r_u32(&r);
    if (rc == NVML_SUCCESS && (!r.ok || n > r.left / 20))
        rc = malformed(GP_OP_NVML_PROCS);
    if (rc == NVML_SUCCESS && (*infoCount < n || (n > 0 && infos == NULL))) {
        *infoCount = n;
        rc = NVML_ERROR_INSUFFICIENT_SIZE;
    } else if (rc == NVML_SUCCESS) {
        for (uint32_t k = 0; k < n; k++) {
            unsigned pid = gp_r_u32(&r);
            unsigned long long mem = gp_r_u64(&r);
            unsigned gi = gp_r_u32(&r), ci = gp_r_u32(&r);
            if (version == 1) {
                nvmlProcessInfo_v1_t *p = &((nvmlProcessInfo_v1_t *)infos)[k];
                p->pid = pid;
                p->usedGpuMemory = mem;
            } else {
                nvmlProcessInfo_t *p = &((nvmlProcessInfo_t *)infos)[k];
                p->pid = pid;
                p->usedGpuMemory = mem;
                p->gpuInstanceId = gi;
                p->computeInstanceId = ci;
            }
        }
        if (!gp_r_done(&r))
            rc = malformed(GP_OP_NVML_PROCS);
        else
            *infoCount = n;
    }
    end();
    return rc;
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                         nvmlProcessInfo_v1_t *infos)
{
    return running(device, GP_NVML_PROCS_COMPUTE, infoCount, infos, 1);
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_v2_t *infos)
{
    return running(device, GP_NVML_PROCS_COMPUTE, infoCount, infos, 2);
}

GP_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos)
{
    return running(device, GP_NVML_PROCS_COMPUTE, infoCount, infos, 3);
}

GP_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos)
{
    return running(device, GP_NVML_PROCS_GRAPHICS, infoCount, infos, 3);
}

GP_API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                               nvmlProcessInfo_t *infos)
{
    return running(device, GP_NVML_PROCS_MPS, infoCount, infos, 3);
}

/* NVML_PROC_UTIL, with NVML's rules: no samples answers NVML_ERROR_NOT_FOUND; no array, or one too small,
 * NVML_ERROR_INSUFFICIENT_SIZE with the count needed. */
GP_API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *utilization,
                                                    unsigned int *processSamplesCount,
                                                    unsigned long long lastSeenTimeStamp)
{
    gp_wbuf *w;
    nvmlReturn_t rc = dev_begin(device, &w);
    if (rc)
        return rc;
    if (processSamplesCount == NULL) {
        end();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gp_w_u64(w, lastSeenTimeStamp);
    gp_rbuf r;
    rc = rpc(GP_OP_NVML_PROC_UTIL, &r);
    uint32_t n = gp_r_u32(&r);
    unsigned cap = utilization ? *processSamplesCount : 0;
    if (rc == NVML_SUCCESS && (!r.ok || n > r.left / 28))
        rc = malformed(GP_OP_NVML_PROC_UTIL);
    if (rc == NVML_SUCCESS && n == 0) {
        *processSamplesCount = 0;
        rc = NVML_ERROR_NOT_FOUND;
    } else if (rc == NVML_SUCCESS && n > cap) {
        *processSamplesCount = n;
        rc = NVML_ERROR_INSUFFICIENT_SIZE;
    } else if (rc == NVML_SUCCESS) {
        for (uint32_t k = 0; k < n; k++) {
            nvmlProcessUtilizationSample_t *s = &utilization[k];
            memset(s, 0, sizeof *s);
            s->pid = gp_r_u32(&r);
            s->timeStamp = gp_r_u64(&r);
            s->smUtil = gp_r_u32(&r);
            s->memUtil = gp_r_u32(&r);
            s->encUtil = gp_r_u32(&r);
            s->decUtil = gp_r_u32(&r);
        }
        if (!gp_r_done(&r))
            rc = malformed(GP_OP_NVML_PROC_UTIL);
        else
            *processSamplesCount = n;
    }
    end();
    return rc;
}

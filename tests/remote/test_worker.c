/* test_worker.c - `gpupool worker` as a real process on two simulated H100s, spoken to in the raw protocol
 * (wire.h, no client library): HELLO and its refusals, the calls a CUDA program makes (devices, memory,
 * copies, modules through the cache, launches, memory pools and VMM by client ids), asynchronous errors, bad
 * frames and dying clients that end only their own session, a token bound to a vGPU slot that holds its
 * session to the slot's VRAM, and NVML (process lists under the clients' pids, bad NVML payloads).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/timeutil.h"
#include "gpupool/cuda.h"
#include "gpupool/nvml.h"
#include "harness.h"
#include "remote/wire.h"

#define MIB (1024ull * 1024)
#define GIB (1024 * MIB)

extern const char gp_sample_ptx[];

static char g_dir[256], g_addr[320], g_tokens[320], g_log[320];
static pid_t g_worker;
static uint32_t g_seq;
static gp_wbuf g_req, g_in;

/* ---- the worker process ---- */

static void write_tokens(const char *extra)
{
    FILE *f = fopen(g_tokens, "w");
    assert_non_null(f);
    fprintf(f, "# clients of the test\ngood-token\n\n  other-token   # a second one\n%s", extra ? extra : "");
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    h_sim_host("2xH100-SXM-80GB");
    h_tmpdir(g_dir, sizeof g_dir, "worker");
    snprintf(g_addr, sizeof g_addr, "unix:%s/w.sock", g_dir);
    snprintf(g_tokens, sizeof g_tokens, "%s/tokens", g_dir);
    snprintf(g_log, sizeof g_log, "%s/worker.log", g_dir);
    write_tokens(NULL);
    gp_wbuf_init(&g_in);
    gp_wbuf_init(&g_req);
    gp_w_reserve(&g_in, 1); /* wire.c computes NULL + 0 for an empty payload into a buffer that never grew */
    gp_w_reserve(&g_req, 1);
    char cache[300];
    snprintf(cache, sizeof cache, "%s/cache", g_dir);
    /* the worker finds the simulated libcuda.so.1 as it would find NVIDIA's: through the loader */
    const char *sim = getenv("GPUPOOL_SIM_LIB_DIR");
    assert_non_null(sim);
    setenv("LD_LIBRARY_PATH", sim, 1);
    g_worker = fork();
    if (g_worker == 0) {
        int fd = open(g_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        execl(GPUPOOL_BIN, "gpupool", "worker", "--listen", g_addr, "--token-file", g_tokens, "--cache-dir",
              cache, "--cache-max", "1Mi", "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    unsetenv("LD_LIBRARY_PATH");
    for (int i = 0; i < 300; i++) {
        char err[200];
        int fd = gp_wire_connect(g_addr, 1000, err, sizeof err);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        gp_sleep_ns(50000000);
    }
    fail_msg("gpupool worker did not listen on %s within 15 s (log: %s)", g_addr, g_log);
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_worker > 0) {
        kill(g_worker, SIGTERM);
        waitpid(g_worker, NULL, 0);
    }
    h_cleanup();
    gp_wbuf_free(&g_req);
    gp_wbuf_free(&g_in);
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2; rm -rf '%s' \"$GPUPOOL_SIM_STATE\"", g_log, g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not clean up %s\n", g_dir);
    return 0;
}

/* ---- the raw protocol ---- */

static gp_wbuf *req(void)
{
    gp_wbuf_reset(&g_req);
    return &g_req;
}

static int send_req(int fd, uint16_t op, uint32_t flags, const gp_wbuf *w)
{
    gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = op, .flags = flags, .seq = ++g_seq};
    return gp_wire_send2(fd, &h, w ? w->p : NULL, w ? w->len : 0, NULL, 0);
}

/* One reply: its status, its payload in *r. */
static uint32_t recv_reply(int fd, gp_rbuf *r)
{
    gp_wire_hdr h;
    const char *why = NULL;
    if (gp_wire_recv(fd, &h, &g_in, &why) < 0)
        fail_msg("no reply: %s", why ? why : strerror(errno));
    assert_true(h.flags & GP_WIRE_F_REPLY);
    gp_rbuf_init(r, g_in.p, g_in.len);
    return h.status;
}

static uint32_t call(int fd, uint16_t op, const gp_wbuf *w, gp_rbuf *r)
{
    gp_rbuf dummy;
    assert_int_equal(send_req(fd, op, 0, w), 0);
    return recv_reply(fd, r ? r : &dummy);
}

static int dial(void)
{
    char err[200];
    int fd = gp_wire_connect(g_addr, 2000, err, sizeof err);
    if (fd < 0)
        fail_msg("%s", err);
    return fd;
}

static uint32_t hello(int fd, const char *token, uint32_t pmin, uint32_t pmax, gp_rbuf *r)
{
    gp_wbuf *w = req();
    gp_w_u32(w, pmin);
    gp_w_u32(w, pmax);
    gp_w_str(w, token);
    gp_w_str(w, "test_worker");
    gp_w_u32(w, (uint32_t)getpid());
    return call(fd, GP_OP_HELLO, w, r);
}

/* A connected session past HELLO. */
static int session(const char *token)
{
    int fd = dial();
    gp_rbuf r;
    assert_int_equal(hello(fd, token, 1, 1, &r), 0);
    return fd;
}

static void bye(int fd)
{
    assert_int_equal(call(fd, GP_OP_BYE, NULL, NULL), 0);
    close(fd);
}

/* True when the worker has closed the connection (after what it had to say). */
static bool closed_by_worker(int fd)
{
    gp_wire_hdr h;
    const char *why;
    for (int i = 0; i < 4; i++)
        if (gp_wire_recv(fd, &h, &g_in, &why) < 0)
            return errno == ECONNRESET;
    return false;
}

static void ctx_create(int fd, uint64_t id, uint32_t dev)
{
    gp_wbuf *w = req();
    gp_w_u32(w, 0);
    gp_w_u32(w, dev);
    gp_w_u64(w, id);
    assert_int_equal(call(fd, GP_OP_CTX_CREATE, w, NULL), CUDA_SUCCESS);
}

static uint32_t mem_alloc(int fd, uint64_t ctx, uint64_t size, uint64_t *dptr)
{
    gp_wbuf *w = req();
    gp_rbuf r;
    gp_w_u64(w, ctx);
    gp_w_u64(w, size);
    uint32_t st = call(fd, GP_OP_MEM_ALLOC, w, &r);
    *dptr = st == 0 ? gp_r_u64(&r) : 0;
    return st;
}

static void mem_info(int fd, uint64_t ctx, uint64_t *free_b, uint64_t *total)
{
    gp_wbuf *w = req();
    gp_rbuf r;
    gp_w_u64(w, ctx);
    assert_int_equal(call(fd, GP_OP_MEM_INFO, w, &r), CUDA_SUCCESS);
    *free_b = gp_r_u64(&r);
    *total = gp_r_u64(&r);
    assert_true(gp_r_done(&r));
}

static uint32_t stream_sync(int fd, uint64_t ctx, uint64_t stream)
{
    gp_wbuf *w = req();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    return call(fd, GP_OP_STREAM_SYNC, w, NULL);
}

static void sample_sha(unsigned char sha[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(gp_sample_ptx, strlen(gp_sample_ptx), sha, &len, EVP_sha256(), NULL), 1);
}

static uint32_t module_have(int fd, uint64_t ctx, const unsigned char sha[32])
{
    gp_wbuf *w = req();
    gp_rbuf r;
    gp_w_u64(w, ctx);
    gp_w_blob(w, sha, 32);
    assert_int_equal(call(fd, GP_OP_MODULE_HAVE, w, &r), CUDA_SUCCESS);
    uint32_t have = gp_r_u32(&r);
    assert_true(gp_r_done(&r));
    return have;
}

static uint32_t module_load(int fd, uint64_t ctx, uint64_t id, const unsigned char sha[32], const char *img)
{
    gp_wbuf *w = req();
    gp_w_u64(w, ctx);
    gp_w_u64(w, id);
    gp_w_blob(w, sha, 32);
    gp_w_blob(w, img, img ? strlen(img) : 0);
    return call(fd, GP_OP_MODULE_LOAD, w, NULL);
}

/* MODULE_FUNC "spin_ns": one parameter, 8 bytes at offset 0. */
static void func_spin(int fd, uint64_t ctx, uint64_t module, uint64_t id)
{
    gp_wbuf *w = req();
    gp_rbuf r;
    gp_w_u64(w, ctx);
    gp_w_u64(w, module);
    gp_w_u64(w, id);
    gp_w_str(w, "spin_ns");
    assert_int_equal(call(fd, GP_OP_MODULE_FUNC, w, &r), CUDA_SUCCESS);
    assert_int_equal(gp_r_u32(&r), 1);
    assert_int_equal(gp_r_u32(&r), 0);
    assert_int_equal(gp_r_u32(&r), 8);
    assert_true(gp_r_done(&r));
}

static void launch_async(int fd, uint64_t ctx, uint64_t func, uint64_t stream, uint64_t ns)
{
    gp_wbuf *w = req();
    gp_w_u64(w, ctx);
    gp_w_u64(w, func);
    uint32_t dims[6] = {1, 1, 1, 32, 1, 1};
    for (int i = 0; i < 6; i++)
        gp_w_u32(w, dims[i]);
    gp_w_u32(w, 0);
    gp_w_u64(w, stream);
    gp_w_blob(w, &ns, sizeof ns);
    assert_int_equal(send_req(fd, GP_OP_LAUNCH, GP_WIRE_F_ASYNC, w), 0);
}

/* ---- tests ---- */

static void hello_with_a_listed_token_is_accepted(void **state)
{
    (void)state;
    int fd = dial();
    gp_rbuf r;
    assert_int_equal(hello(fd, "other-token", 1, 3, &r), 0);
    assert_int_equal(gp_r_u32(&r), GP_WIRE_VERSION);
    assert_true(gp_r_u64(&r) != 0);
    char name[200];
    assert_true(gp_r_str(&r, name, sizeof name));
    assert_true(gp_r_done(&r));
    assert_memory_equal(name, "gpupool-worker ", 15);
    bye(fd);
}

static void wrong_token_is_refused_with_auth(void **state)
{
    (void)state;
    const char *bad[] = {"bad-token", "good-token-", "good", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = dial();
        gp_rbuf r;
        assert_int_equal(hello(fd, bad[i], 1, 1, &r), GP_WIRE_E_AUTH);
        char msg[300];
        assert_true(gp_r_str(&r, msg, sizeof msg));
        assert_non_null(strstr(msg, "token"));
        assert_true(closed_by_worker(fd));
        close(fd);
    }
}

static void other_protocol_version_is_refused(void **state)
{
    (void)state;
    int fd = dial();
    gp_rbuf r;
    assert_int_equal(hello(fd, "good-token", 2, 5, &r), GP_WIRE_E_VERSION);
    assert_true(closed_by_worker(fd));
    close(fd);
}

static void first_request_must_be_hello(void **state)
{
    (void)state;
    int fd = dial();
    assert_int_equal(call(fd, GP_OP_DEVICE_COUNT, NULL, NULL), GP_WIRE_E_MALFORMED);
    assert_true(closed_by_worker(fd));
    close(fd);
}

static void devices_are_the_simulated_h100s(void **state)
{
    (void)state;
    int fd = session("good-token");
    gp_rbuf r;
    gp_wbuf *w = req();
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_INIT, w, NULL), CUDA_SUCCESS);
    assert_int_equal(call(fd, GP_OP_DRIVER_VERSION, NULL, &r), CUDA_SUCCESS);
    assert_true(gp_r_u32(&r) >= 12000);
    assert_int_equal(call(fd, GP_OP_DEVICE_COUNT, NULL, &r), CUDA_SUCCESS);
    assert_int_equal(gp_r_u32(&r), 2);
    assert_true(gp_r_done(&r));
    for (uint32_t d = 0; d < 2; d++) {
        w = req();
        gp_w_u32(w, d);
        assert_int_equal(call(fd, GP_OP_DEVICE_INFO, w, &r), CUDA_SUCCESS);
        char name[256];
        assert_true(gp_r_str(&r, name, sizeof name));
        assert_non_null(strstr(name, "H100"));
        uint64_t total = gp_r_u64(&r);
        assert_true(total > 70 * GIB && total <= 81 * GIB);
        size_t n;
        gp_r_blob(&r, &n);
        assert_int_equal(n, 16);
        uint32_t nattr = gp_r_u32(&r);
        assert_true(nattr >= 140);
        int32_t attr[200] = {0};
        for (uint32_t a = 1; a <= nattr && a < 200; a++)
            attr[a] = (int32_t)gp_r_u32(&r);
        assert_true(gp_r_done(&r));
        assert_int_equal(attr[CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR], 9);
        assert_true(attr[CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT] > 100);
    }
    w = req();
    gp_w_u32(w, 7);
    assert_int_equal(call(fd, GP_OP_DEVICE_INFO, w, NULL), CUDA_ERROR_INVALID_DEVICE);
    bye(fd);
}

static void htod_dtoh_round_trip_in_chunks(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    size_t size = 10 * MIB;
    uint8_t *a = malloc(size), *b = malloc(size);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < size; i++)
        a[i] = (uint8_t)(i * 131 + (i >> 12));
    uint64_t d;
    assert_int_equal(mem_alloc(fd, 1, size, &d), CUDA_SUCCESS);
    /* a sync copy: every piece but the last ASYNC, the last one's reply says how it went */
    for (size_t off = 0; off < size; off += GP_WIRE_CHUNK) {
        size_t n = size - off < GP_WIRE_CHUNK ? size - off : GP_WIRE_CHUNK;
        bool last = off + n == size;
        gp_wbuf *w = req();
        gp_w_u64(w, 1);
        gp_w_u64(w, 0);
        gp_w_u64(w, d + off);
        gp_w_u32(w, last);
        gp_w_blob(w, a + off, n);
        assert_int_equal(send_req(fd, GP_OP_HTOD, last ? 0 : GP_WIRE_F_ASYNC, w), 0);
    }
    gp_rbuf r;
    assert_int_equal(recv_reply(fd, &r), CUDA_SUCCESS);
    /* back in pipelined chunks: every request first, then the replies in order */
    for (size_t off = 0; off < size; off += GP_WIRE_CHUNK) {
        gp_wbuf *w = req();
        gp_w_u64(w, 1);
        gp_w_u64(w, 0);
        gp_w_u64(w, d + off);
        gp_w_u64(w, size - off < GP_WIRE_CHUNK ? size - off : GP_WIRE_CHUNK);
        assert_int_equal(send_req(fd, GP_OP_DTOH, 0, w), 0);
    }
    for (size_t off = 0; off < size; off += GP_WIRE_CHUNK) {
        assert_int_equal(recv_reply(fd, &r), CUDA_SUCCESS);
        size_t n;
        const void *p = gp_r_blob(&r, &n);
        assert_true(gp_r_done(&r));
        assert_int_equal(n, size - off < GP_WIRE_CHUNK ? size - off : GP_WIRE_CHUNK);
        memcpy(b + off, p, n);
    }
    assert_memory_equal(a, b, size);
    /* a chunk larger than the protocol's is refused, and so is an address nobody allocated */
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    gp_w_u64(w, d);
    gp_w_u64(w, GP_WIRE_CHUNK + 1);
    assert_int_equal(call(fd, GP_OP_DTOH, w, NULL), CUDA_ERROR_INVALID_VALUE);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, d);
    assert_int_equal(call(fd, GP_OP_MEM_FREE, w, NULL), CUDA_SUCCESS);
    free(a);
    free(b);
    bye(fd);
}

static void send_dtoh(int fd, uint64_t ctx, uint64_t stream, uint64_t src, uint64_t n)
{
    gp_wbuf *w = req();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, src);
    gp_w_u64(w, n);
    assert_int_equal(send_req(fd, GP_OP_DTOH, 0, w), 0);
}

static void send_htod(int fd, uint64_t ctx, uint64_t stream, uint64_t dst, const void *p, size_t n,
                      uint32_t flags)
{
    gp_wbuf *w = req();
    gp_w_u64(w, ctx);
    gp_w_u64(w, stream);
    gp_w_u64(w, dst);
    gp_w_u32(w, !(flags & GP_WIRE_F_ASYNC));
    gp_w_blob(w, p, n);
    assert_int_equal(send_req(fd, GP_OP_HTOD, flags, w), 0);
}

/* Large pieces go through the worker's pinned stages (an HTOD piece copied while the next arrives, a DTOH
 * reply sent while the next chunk copies): replies still come in request order with their own status, a
 * failing chunk in the middle of a pipeline is answered as such, and a context destroyed while staged copies
 * are under way takes nothing down with it. */
static void staged_copies_keep_order_and_errors(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    const size_t piece = MIB;
    uint8_t *a = malloc(4 * piece), *b = malloc(4 * piece);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < 4 * piece; i++)
        a[i] = (uint8_t)(i * 7 + (i >> 16));
    uint64_t d;
    assert_int_equal(mem_alloc(fd, 1, 4 * piece, &d), CUDA_SUCCESS);
    /* async pieces on a stream (the first allocates the stages, the others use them), then a sync one */
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 7);
    gp_w_u32(w, 0);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_STREAM_CREATE, w, NULL), CUDA_SUCCESS);
    for (int i = 0; i < 3; i++)
        send_htod(fd, 1, 7, d + i * piece, a + i * piece, piece, GP_WIRE_F_ASYNC);
    assert_int_equal(stream_sync(fd, 1, 7), CUDA_SUCCESS);
    send_htod(fd, 1, 0, d + 3 * piece, a + 3 * piece, piece, 0);
    gp_rbuf r;
    assert_int_equal(recv_reply(fd, &r), CUDA_SUCCESS);
    /* a pipeline whose second chunk reads past the allocation, followed at once by another call */
    send_dtoh(fd, 1, 0, d, piece);
    send_dtoh(fd, 1, 0, d + 4 * piece - piece / 2, piece); /* half of it lies outside */
    send_dtoh(fd, 1, 0, d + 2 * piece, 2 * piece);
    w = req();
    gp_w_u64(w, 1);
    assert_int_equal(send_req(fd, GP_OP_MEM_INFO, 0, w), 0);
    uint32_t want[] = {CUDA_SUCCESS, CUDA_ERROR_INVALID_VALUE, CUDA_SUCCESS, CUDA_SUCCESS};
    uint8_t *at[] = {b, NULL, b + 2 * piece, NULL};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(recv_reply(fd, &r), want[i]);
        if (at[i]) {
            size_t n;
            const void *p = gp_r_blob(&r, &n);
            assert_true(gp_r_done(&r));
            memcpy(at[i], p, n);
        }
    }
    send_dtoh(fd, 1, 0, d + piece, piece);
    assert_int_equal(recv_reply(fd, &r), CUDA_SUCCESS);
    size_t n;
    memcpy(b + piece, gp_r_blob(&r, &n), piece);
    assert_memory_equal(a, b, 4 * piece);
    /* staged copies in flight, then their context goes away: the worker drains them first */
    for (int i = 0; i < 3; i++)
        send_htod(fd, 1, 7, d + i * piece, a, piece, GP_WIRE_F_ASYNC);
    w = req();
    gp_w_u64(w, 1);
    assert_int_equal(call(fd, GP_OP_CTX_DESTROY, w, NULL), CUDA_SUCCESS);
    ctx_create(fd, 2, 0);
    uint64_t f0, t0;
    mem_info(fd, 2, &f0, &t0);
    assert_true(f0 > 0);
    free(a);
    free(b);
    bye(fd);
}

/* An image of `kib` KiB in the module cache, last used `age` seconds ago. */
static void cache_file(const char *name, size_t kib, time_t age)
{
    char path[400];
    snprintf(path, sizeof path, "%s/cache/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    static char block[1024];
    for (size_t i = 0; i < kib; i++)
        assert_int_equal(fwrite(block, 1, sizeof block, f), sizeof block);
    fclose(f);
    struct timespec t[2] = {{.tv_sec = time(NULL) - age}, {.tv_sec = time(NULL) - age}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static bool cache_has(const char *name)
{
    char path[400];
    snprintf(path, sizeof path, "%s/cache/%s", g_dir, name);
    return access(path, F_OK) == 0;
}

/* The worker runs with --cache-max 1Mi: when a session ends, images used longest ago go until the cache fits;
 * one used within the last minute stays, and so does what is not an image. */
static void module_cache_keeps_under_its_bound(void **state)
{
    (void)state;
    const char *old3 = "0000000000000000000000000000000000000000000000000000000000000003",
               *old2 = "0000000000000000000000000000000000000000000000000000000000000002",
               *old1 = "0000000000000000000000000000000000000000000000000000000000000001",
               *fresh = "00000000000000000000000000000000000000000000000000000000000000ff";
    cache_file(old3, 400, 3 * 3600);
    cache_file(old2, 400, 2 * 3600);
    cache_file(old1, 400, 3600);
    cache_file(fresh, 400, 0);
    cache_file("not-an-image", 400, 4 * 3600);
    bye(session("good-token")); /* a session ends: the main process prunes */
    for (int i = 0; i < 100 && cache_has(old2); i++)
        gp_sleep_ns(20000000);
    assert_false(cache_has(old3));
    assert_false(cache_has(old2));
    assert_true(cache_has(old1));  /* with the two older ones gone, the cache fits */
    assert_true(cache_has(fresh)); /* used within the minute: a session may have just been told it is here */
    assert_true(cache_has("not-an-image"));
    char path[400];
    snprintf(path, sizeof path, "%s/cache/%s", g_dir, fresh);
    unlink(path);
    snprintf(path, sizeof path, "%s/cache/%s", g_dir, old1);
    unlink(path);
    snprintf(path, sizeof path, "%s/cache/not-an-image", g_dir);
    unlink(path);
}

/* A client that trickles its HELLO a byte a second (each byte restarting a receive timeout) is still cut off
 * at the worker's absolute deadline of 5 s, and the worker goes on serving. */
static void trickling_client_is_cut_off_at_the_hello_deadline(void **state)
{
    (void)state;
    int fd = dial();
    uint64_t t0 = gp_now_ns();
    bool closed = false;
    for (int i = 0; i < 12 && !closed; i++) {
        char b = 0;
        if (send(fd, &b, 1, MSG_NOSIGNAL) != 1)
            closed = true;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0 && recv(fd, &b, 1, MSG_DONTWAIT) <= 0)
            closed = true;
    }
    double took = (double)(gp_now_ns() - t0) / 1e9;
    close(fd);
    assert_true(closed);
    assert_true(took < 8.0);
    bye(session("good-token")); /* still serving */
}

/* What a destroyed context took with it leaves the worker's maps: its stream's id answers INVALID_HANDLE from
 * another context, instead of reaching the driver as a freed handle. */
static void a_destroyed_context_takes_its_handles_along(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 5);
    gp_w_u32(w, 0);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_STREAM_CREATE, w, NULL), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 6);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_EVENT_CREATE, w, NULL), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    assert_int_equal(call(fd, GP_OP_CTX_DESTROY, w, NULL), CUDA_SUCCESS);
    ctx_create(fd, 2, 0);
    assert_int_equal(stream_sync(fd, 2, 5), CUDA_ERROR_INVALID_HANDLE);
    w = req();
    gp_w_u64(w, 2);
    gp_w_u64(w, 6);
    assert_int_equal(call(fd, GP_OP_EVENT_SYNC, w, NULL), CUDA_ERROR_INVALID_HANDLE);
    /* and the ids are free for new objects (a stale entry would refuse them as taken) */
    w = req();
    gp_w_u64(w, 2);
    gp_w_u64(w, 5);
    gp_w_u32(w, 0);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_STREAM_CREATE, w, NULL), CUDA_SUCCESS);
    assert_int_equal(stream_sync(fd, 2, 5), CUDA_SUCCESS);
    bye(fd);
}

static void calls_without_a_context_answer_invalid_context(void **state)
{
    (void)state;
    int fd = session("good-token");
    uint64_t d;
    assert_int_equal(mem_alloc(fd, 0, MIB, &d), CUDA_ERROR_INVALID_CONTEXT);
    assert_int_equal(mem_alloc(fd, 99, MIB, &d), CUDA_ERROR_INVALID_CONTEXT); /* an id never created */
    ctx_create(fd, 5, 1);
    assert_int_equal(stream_sync(fd, 5, 42), CUDA_ERROR_INVALID_HANDLE); /* a stream never created */
    bye(fd);
}

static void module_through_the_cache_and_launch(void **state)
{
    (void)state;
    unsigned char sha[32];
    sample_sha(sha);
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    assert_int_equal(module_have(fd, 1, sha), 0);
    assert_int_equal(module_load(fd, 1, 10, sha, NULL), CUDA_ERROR_NOT_FOUND); /* not cached yet */
    unsigned char wrong[32];
    memcpy(wrong, sha, 32);
    wrong[0] ^= 1;
    assert_int_equal(module_load(fd, 1, 10, wrong, gp_sample_ptx), CUDA_ERROR_INVALID_VALUE);
    assert_int_equal(module_load(fd, 1, 10, sha, gp_sample_ptx), CUDA_SUCCESS);
    func_spin(fd, 1, 10, 11);
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 20);
    gp_w_u32(w, CU_STREAM_NON_BLOCKING);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_STREAM_CREATE, w, NULL), CUDA_SUCCESS);
    for (int i = 0; i < 3; i++)
        launch_async(fd, 1, 11, 20, 1000000);
    assert_int_equal(stream_sync(fd, 1, 20), CUDA_SUCCESS);
    bye(fd);

    /* a second session finds the image in the cache and loads it without sending it */
    fd = session("good-token");
    ctx_create(fd, 1, 1);
    assert_int_equal(module_have(fd, 1, sha), 1);
    assert_int_equal(module_load(fd, 1, 10, sha, NULL), CUDA_SUCCESS);
    func_spin(fd, 1, 10, 11);
    launch_async(fd, 1, 11, 0, 1000);
    assert_int_equal(call(fd, GP_OP_CTX_SYNC, (gp_w_u64(req(), 1), &g_req), NULL), CUDA_SUCCESS);
    bye(fd);
}

static void async_error_surfaces_at_the_next_sync(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    launch_async(fd, 1, 777, 0, 1000); /* no function 777: no reply now */
    assert_int_equal(stream_sync(fd, 1, 0), CUDA_ERROR_INVALID_HANDLE);
    assert_int_equal(stream_sync(fd, 1, 0), CUDA_SUCCESS); /* reported once */
    bye(fd);
}

/* The NULL stream is held by a host function until CALLBACK_DONE: the worker sends CALLBACK (seq 0) while the
 * session's STREAM_SYNC waits, reads CALLBACK_DONE meanwhile, and only then answers the sync. */
static void host_function_holds_the_stream_until_callback_done(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    gp_w_u64(w, 77);
    assert_int_equal(send_req(fd, GP_OP_HOST_FUNC, GP_WIRE_F_ASYNC, w), 0);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    assert_int_equal(send_req(fd, GP_OP_STREAM_SYNC, 0, w), 0);
    uint32_t sync_seq = g_seq;

    gp_wire_hdr h;
    const char *why = NULL;
    assert_int_equal(gp_wire_recv(fd, &h, &g_in, &why), 0);
    assert_int_equal(h.op, GP_OP_CALLBACK); /* before the sync's reply: the stream waits for it */
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.seq, 0);
    gp_rbuf r;
    gp_rbuf_init(&r, g_in.p, g_in.len);
    assert_int_equal(gp_r_u64(&r), 77);
    assert_int_equal(gp_r_u32(&r), CUDA_SUCCESS);
    assert_true(gp_r_done(&r));

    w = req();
    gp_w_u64(w, 0);
    gp_w_u64(w, 12345); /* an id nothing waits for: ignored */
    gp_wire_hdr d = {.version = GP_WIRE_VERSION,
                     .op = GP_OP_CALLBACK_DONE,
                     .flags = GP_WIRE_F_ASYNC,
                     .length = (uint32_t)w->len};
    assert_int_equal(gp_wire_send(fd, &d, w->p), 0);
    w = req();
    gp_w_u64(w, 0);
    gp_w_u64(w, 77);
    d.length = (uint32_t)w->len;
    assert_int_equal(gp_wire_send(fd, &d, w->p), 0);
    assert_int_equal(gp_wire_recv(fd, &h, &g_in, &why), 0);
    assert_int_equal(h.op, GP_OP_STREAM_SYNC);
    assert_int_equal(h.seq, sync_seq);
    assert_int_equal(h.status, CUDA_SUCCESS);
    bye(fd);
}

static void ctx_limit_and_2d_copy_run_on_the_worker(void **state)
{
    (void)state;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u32(w, CU_LIMIT_MALLOC_HEAP_SIZE);
    gp_w_u64(w, 16u << 20);
    assert_int_equal(call(fd, GP_OP_CTX_SET_LIMIT, w, NULL), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u32(w, CU_LIMIT_MALLOC_HEAP_SIZE);
    gp_rbuf r;
    assert_int_equal(call(fd, GP_OP_CTX_GET_LIMIT, w, &r), CUDA_SUCCESS);
    assert_true(gp_r_u64(&r) >= 16u << 20);

    /* 4 rows of 8 bytes from a pitch of 16 to a pitch of 8, then read back packed. */
    uint64_t a, b;
    assert_int_equal(mem_alloc(fd, 1, 64, &a), CUDA_SUCCESS);
    assert_int_equal(mem_alloc(fd, 1, 32, &b), CUDA_SUCCESS);
    uint8_t src[64], got[32];
    for (int i = 0; i < 64; i++)
        src[i] = (uint8_t)i;
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    gp_w_u64(w, a);
    gp_w_u32(w, 1);
    gp_w_blob(w, src, sizeof src);
    assert_int_equal(call(fd, GP_OP_HTOD, w, NULL), CUDA_SUCCESS);
    w = req();
    const uint64_t f[] = {1, 0, b, 8, 4, a, 16, 4, 8, 4, 1};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        gp_w_u64(w, f[i]);
    assert_int_equal(call(fd, GP_OP_MEMCPY_3D, w, NULL), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    gp_w_u64(w, b);
    gp_w_u64(w, sizeof got);
    assert_int_equal(call(fd, GP_OP_DTOH, w, &r), CUDA_SUCCESS);
    size_t n;
    const uint8_t *p = gp_r_blob(&r, &n);
    assert_int_equal(n, sizeof got);
    memcpy(got, p, n);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 8; x++)
            assert_int_equal(got[y * 8 + x], src[y * 16 + x]);
    bye(fd);
}

static void unknown_op_is_not_supported_and_the_session_goes_on(void **state)
{
    (void)state;
    int fd = session("good-token");
    assert_int_equal(call(fd, 333, (gp_w_u64(req(), 1), &g_req), NULL), CUDA_ERROR_NOT_SUPPORTED);
    gp_rbuf r;
    assert_int_equal(call(fd, GP_OP_DEVICE_COUNT, NULL, &r), CUDA_SUCCESS);
    assert_int_equal(gp_r_u32(&r), 2);
    bye(fd);
}

/* A new session after a bad one: the worker itself is fine. */
static void still_serving(void)
{
    int fd = session("good-token");
    gp_rbuf r;
    assert_int_equal(call(fd, GP_OP_DEVICE_COUNT, NULL, &r), CUDA_SUCCESS);
    bye(fd);
}

static void bad_frames_end_only_their_session(void **state)
{
    (void)state;
    /* garbage instead of a header */
    int fd = session("good-token");
    char junk[64];
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    gp_rbuf r;
    assert_int_equal(recv_reply(fd, &r), GP_WIRE_E_MALFORMED);
    assert_true(closed_by_worker(fd));
    close(fd);
    still_serving();

    /* a frame cut short: a header promising 1000 bytes, 10 of them, then the end */
    fd = session("good-token");
    uint8_t hdr[GP_WIRE_HEADER];
    gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_MEM_ALLOC, .seq = ++g_seq, .length = 1000};
    gp_wire_hdr_encode(&h, hdr);
    assert_int_equal(write(fd, hdr, sizeof hdr), (ssize_t)sizeof hdr);
    assert_int_equal(write(fd, junk, 10), 10);
    close(fd);
    still_serving();

    /* a payload with a byte too many, and one with too few */
    for (int extra = 1; extra >= -1; extra -= 2) {
        fd = session("good-token");
        gp_wbuf *w = req();
        gp_w_u64(w, 1);
        gp_w_u64(w, MIB);
        if (extra > 0)
            gp_w_reserve(w, 1)[0] = 0;
        else
            w->len -= 1;
        assert_int_equal(call(fd, GP_OP_MEM_ALLOC, w, &r), GP_WIRE_E_MALFORMED);
        char msg[300];
        assert_true(gp_r_str(&r, msg, sizeof msg));
        assert_non_null(strstr(msg, "MEM_ALLOC"));
        assert_true(closed_by_worker(fd));
        close(fd);
    }

    /* a frame longer than the protocol allows */
    fd = session("good-token");
    h = (gp_wire_hdr){
        .version = GP_WIRE_VERSION, .op = GP_OP_HTOD, .seq = ++g_seq, .length = GP_WIRE_MAX_PAYLOAD + 1};
    gp_wire_hdr_encode(&h, hdr);
    assert_int_equal(write(fd, hdr, sizeof hdr), (ssize_t)sizeof hdr);
    assert_int_equal(recv_reply(fd, &r), GP_WIRE_E_MALFORMED);
    assert_true(closed_by_worker(fd));
    close(fd);
    still_serving();
}

/* Baseline free memory as a fresh session sees it on GPU 0. */
static uint64_t fresh_free(void)
{
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    uint64_t free_b, total;
    mem_info(fd, 1, &free_b, &total);
    bye(fd);
    return free_b;
}

static void killed_client_leaves_no_memory_behind(void **state)
{
    (void)state;
    uint64_t before = fresh_free();
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t p = fork();
    if (p == 0) { /* a raw client that allocates 4 GiB and dies in the middle of filling it */
        close(pipefd[0]);
        int fd = session("good-token");
        ctx_create(fd, 1, 0);
        uint64_t d;
        if (mem_alloc(fd, 1, 4 * GIB, &d) != CUDA_SUCCESS)
            _exit(3);
        static uint8_t chunk[GP_WIRE_CHUNK];
        for (uint64_t off = 0;; off = (off + GP_WIRE_CHUNK) % (4 * GIB)) {
            gp_wbuf *w = req();
            gp_w_u64(w, 1);
            gp_w_u64(w, 0);
            gp_w_u64(w, d + off);
            gp_w_u32(w, 0);
            gp_w_blob(w, chunk, sizeof chunk);
            if (send_req(fd, GP_OP_HTOD, GP_WIRE_F_ASYNC, w) < 0)
                _exit(4);
            if (off == 8 * GP_WIRE_CHUNK && write(pipefd[1], "x", 1) != 1)
                _exit(5);
        }
    }
    close(pipefd[1]);
    char c;
    assert_int_equal(read(pipefd[0], &c, 1), 1); /* it is copying */
    close(pipefd[0]);
    kill(p, SIGKILL);
    int st;
    waitpid(p, &st, 0);
    assert_true(WIFSIGNALED(st));
    uint64_t now = 0;
    for (int i = 0; i < 100; i++) { /* the session process ends and the driver reclaims its memory */
        now = fresh_free();
        if (now == before)
            break;
        gp_sleep_ns(100000000);
    }
    assert_int_equal(now, before);
}

/* A CUmemAllocationProp for device memory on dev, as wire.h's "prop". */
static void device_prop(gp_wbuf *w, uint32_t dev)
{
    gp_w_u32(w, CU_MEM_ALLOCATION_TYPE_PINNED);
    gp_w_u32(w, CU_MEM_HANDLE_TYPE_NONE);
    gp_w_u32(w, CU_MEM_LOCATION_TYPE_DEVICE);
    gp_w_u32(w, dev);
    gp_w_u32(w, 0);
    gp_w_u32(w, 0);
    gp_w_u32(w, 0);
}

static uint32_t pool_device(int fd, uint32_t current, uint64_t default_id, uint64_t *pool)
{
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u32(w, 0);
    gp_w_u32(w, current);
    gp_w_u64(w, default_id);
    gp_rbuf r;
    uint32_t st = call(fd, GP_OP_POOL_DEVICE, w, &r);
    *pool = gp_r_u64(&r);
    return st;
}

static uint32_t pool_attr(int fd, uint64_t pool, uint32_t attr, uint64_t *v)
{
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, pool);
    gp_w_u32(w, attr);
    gp_rbuf r;
    uint32_t st = call(fd, GP_OP_POOL_GET_ATTR, w, &r);
    *v = gp_r_u64(&r);
    return st;
}

static uint32_t set_access(int fd, uint64_t va, uint64_t size, size_t blob_len)
{
    uint8_t descs[13] = {CU_MEM_LOCATION_TYPE_DEVICE,       0, 0, 0, 0, 0, 0, 0,
                         CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, va);
    gp_w_u64(w, size);
    gp_w_blob(w, descs, blob_len);
    gp_rbuf r;
    return call(fd, GP_OP_VMM_SET_ACCESS, w, &r);
}

static void pools_and_vmm_answer_by_client_ids_and_end_with_the_session(void **state)
{
    (void)state;
    uint64_t before = fresh_free(), pool = 0, v = 0;
    int fd = session("good-token");
    ctx_create(fd, 1, 0);
    /* The default pool takes the id first offered; later offers are answered with that one. */
    assert_int_equal(pool_device(fd, 1, 50, &pool), CUDA_SUCCESS);
    assert_int_equal(pool, 50);
    assert_int_equal(pool_device(fd, 0, 51, &pool), CUDA_SUCCESS);
    assert_int_equal(pool, 50);
    gp_wbuf *w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 50);
    assert_int_equal(call(fd, GP_OP_POOL_DESTROY, w, NULL), CUDA_ERROR_INVALID_VALUE); /* a default pool */
    assert_int_equal(pool_attr(fd, 99, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &v), CUDA_ERROR_INVALID_VALUE);

    /* A created pool made current serves an allocation that names it. */
    for (uint64_t id = 50; id <= 60; id += 10) {
        w = req();
        gp_w_u64(w, 1);
        gp_w_u64(w, id);
        gp_w_u32(w, CU_MEM_ALLOCATION_TYPE_PINNED);
        gp_w_u32(w, CU_MEM_HANDLE_TYPE_NONE);
        gp_w_u32(w, CU_MEM_LOCATION_TYPE_DEVICE);
        gp_w_u32(w, 0);
        gp_w_u64(w, 0);
        gp_w_u32(w, 0);
        assert_int_equal(call(fd, GP_OP_POOL_CREATE, w, NULL), id == 50 ? CUDA_ERROR_INVALID_VALUE : 0);
    }
    w = req();
    gp_w_u64(w, 1);
    gp_w_u32(w, 0);
    gp_w_u64(w, 60);
    assert_int_equal(call(fd, GP_OP_POOL_SET_CURRENT, w, NULL), CUDA_SUCCESS);
    assert_int_equal(pool_device(fd, 1, 50, &pool), CUDA_SUCCESS);
    assert_int_equal(pool, 60);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 0);
    gp_w_u64(w, 0);
    gp_w_u64(w, 8 * MIB);
    gp_w_u64(w, 50);
    gp_rbuf r;
    assert_int_equal(call(fd, GP_OP_MEM_ALLOC_ASYNC, w, &r), CUDA_SUCCESS);
    assert_true(gp_r_u64(&r) != 0);
    assert_int_equal(gp_r_u64(&r), 60);
    assert_int_equal(pool_attr(fd, 60, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &v), CUDA_SUCCESS);
    assert_true(v >= 8 * MIB);

    /* A physical allocation mapped into a reservation, with access, and its properties back. */
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 70);
    gp_w_u64(w, 2 * MIB);
    gp_w_u64(w, 0);
    device_prop(w, 0);
    assert_int_equal(call(fd, GP_OP_VMM_CREATE, w, NULL), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 4 * MIB);
    gp_w_u64(w, 0);
    gp_w_u64(w, 0);
    gp_w_u64(w, 0);
    assert_int_equal(call(fd, GP_OP_VMM_RESERVE, w, &r), CUDA_SUCCESS);
    uint64_t va = gp_r_u64(&r);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, va);
    gp_w_u64(w, 2 * MIB);
    gp_w_u64(w, 0);
    gp_w_u64(w, 70);
    gp_w_u64(w, 0);
    assert_int_equal(call(fd, GP_OP_VMM_MAP, w, NULL), CUDA_SUCCESS);
    assert_int_equal(set_access(fd, va, 2 * MIB, 12), CUDA_SUCCESS);
    w = req();
    gp_w_u64(w, 1);
    gp_w_u64(w, 70);
    assert_int_equal(call(fd, GP_OP_VMM_PROPS, w, &r), CUDA_SUCCESS);
    uint32_t type = gp_r_u32(&r), handle_types = gp_r_u32(&r), loc_type = gp_r_u32(&r), loc_id = gp_r_u32(&r);
    assert_int_equal(type, CU_MEM_ALLOCATION_TYPE_PINNED);
    assert_int_equal(handle_types, CU_MEM_HANDLE_TYPE_NONE);
    assert_int_equal(loc_type, CU_MEM_LOCATION_TYPE_DEVICE);
    assert_int_equal(loc_id, 0);

    /* Access descriptors that are not whole 12-byte records end the session; everything above was still live
     * and goes with it. */
    assert_int_equal(set_access(fd, va, 2 * MIB, 13), GP_WIRE_E_MALFORMED);
    assert_true(closed_by_worker(fd));
    close(fd);
    uint64_t now = 0;
    for (int i = 0; i < 100; i++) {
        now = fresh_free();
        if (now == before)
            break;
        gp_sleep_ns(100000000);
    }
    assert_int_equal(now, before);
}

static void slot_token_is_held_to_the_slot_vram(void **state)
{
    (void)state;
    char slot[300], cmd[800], line[400];
    snprintf(slot, sizeof slot, "%s/slot", g_dir);
    snprintf(cmd, sizeof cmd, "'%s' slot create '%s' --gpu 0 --vram 1Gi --sim >>'%s' 2>&1", GPUPOOL_BIN, slot,
             g_log);
    assert_int_equal(system(cmd), 0);
    snprintf(line, sizeof line, "slot-token %s\n", slot);
    write_tokens(line); /* read again at the next connection */

    int fd = session("slot-token");
    ctx_create(fd, 1, 0);
    uint64_t free_b, total, d, d2;
    mem_info(fd, 1, &free_b, &total);
    assert_true(total <= GIB);
    assert_int_equal(mem_alloc(fd, 1, 2 * GIB, &d), CUDA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(mem_alloc(fd, 1, 512 * MIB, &d), CUDA_SUCCESS);
    assert_int_equal(mem_alloc(fd, 1, 768 * MIB, &d2), CUDA_ERROR_OUT_OF_MEMORY);
    bye(fd);

    /* the same GPU through a plain token: the whole of it */
    fd = session("good-token");
    ctx_create(fd, 1, 0);
    assert_int_equal(mem_alloc(fd, 1, 2 * GIB, &d), CUDA_SUCCESS);
    bye(fd);
    write_tokens(NULL);
}

/* ---- NVML ---- */

static void client_id(int fd, uint32_t pid, const char *space)
{
    gp_wbuf *w = req();
    gp_w_u32(w, pid);
    gp_w_str(w, space);
    assert_int_equal(send_req(fd, GP_OP_CLIENT_ID, GP_WIRE_F_ASYNC, w), 0);
}

/* An NVML session of a client in pid space `space`: NVML_INIT answered, its device count returned. */
static int nvml_session(const char *space, uint32_t *ndev)
{
    int fd = session("good-token");
    client_id(fd, (uint32_t)getpid(), space);
    gp_rbuf r;
    assert_int_equal(call(fd, GP_OP_NVML_INIT, (gp_w_u32(req(), 0), &g_req), &r), NVML_SUCCESS);
    *ndev = gp_r_u32(&r);
    return fd;
}

/* Whether NVML lists client pid `pid` as a compute process of any device, as session fd sees it. */
static bool nvml_lists(int fd, uint32_t ndev, uint32_t pid, uint64_t *mem)
{
    bool found = false;
    for (uint32_t d = 0; d < ndev; d++) {
        gp_wbuf *w = req();
        gp_w_u32(w, d);
        gp_w_u32(w, GP_NVML_PROCS_COMPUTE);
        gp_rbuf r;
        assert_int_equal(call(fd, GP_OP_NVML_PROCS, w, &r), NVML_SUCCESS);
        uint32_t n = gp_r_u32(&r);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t p = gp_r_u32(&r);
            uint64_t m = gp_r_u64(&r);
            gp_r_u32(&r);
            gp_r_u32(&r);
            if (p == pid) {
                found = true;
                *mem = m;
            }
        }
        assert_true(gp_r_done(&r));
    }
    return found;
}

static void nvml_lists_sessions_under_their_client_pids_in_their_pid_space(void **state)
{
    (void)state;
    /* a CUDA session of "client pid 4242" holding 1 GiB */
    int cuda = session("good-token");
    client_id(cuda, 4242, "host-a/pid:[1]");
    ctx_create(cuda, 1, 0);
    uint64_t d;
    assert_int_equal(mem_alloc(cuda, 1, GIB, &d), CUDA_SUCCESS);

    uint32_t ndev = 0, other_ndev = 0;
    int same = nvml_session("host-a/pid:[1]", &ndev);
    int other = nvml_session("host-b/pid:[1]", &other_ndev);
    assert_int_equal(ndev, 2);
    uint64_t mem = 0;
    assert_true(nvml_lists(same, ndev, 4242, &mem));
    assert_true(mem >= GIB);
    /* another client host's NVML sees neither that pid nor the session's own */
    assert_false(nvml_lists(other, other_ndev, 4242, &mem));
    bye(other);
    bye(same);
    bye(cuda);
}

static void nvml_calls_before_nvml_init_answer_uninitialized(void **state)
{
    (void)state;
    int fd = session("good-token");
    gp_wbuf *w = req();
    gp_w_u32(w, 0);
    gp_w_u32(w, GP_NVML_Q_NAME);
    assert_int_equal(call(fd, GP_OP_NVML_STR, w, NULL), NVML_ERROR_UNINITIALIZED);
    bye(fd);
}

static void nvml_unknown_query_or_device_is_invalid_argument(void **state)
{
    (void)state;
    uint32_t ndev;
    int fd = nvml_session("host-a/pid:[1]", &ndev);
    gp_wbuf *w = req();
    gp_w_u32(w, 0);
    gp_w_u32(w, GP_NVML_U32__END);
    gp_w_u32(w, 0);
    assert_int_equal(call(fd, GP_OP_NVML_U32, w, NULL), NVML_ERROR_INVALID_ARGUMENT);
    w = req();
    gp_w_u32(w, ndev);
    gp_w_u32(w, GP_NVML_Q_NAME);
    assert_int_equal(call(fd, GP_OP_NVML_STR, w, NULL), NVML_ERROR_INVALID_ARGUMENT);
    gp_rbuf r;
    w = req();
    gp_w_u32(w, 0);
    gp_w_u32(w, GP_NVML_Q_NAME);
    assert_int_equal(call(fd, GP_OP_NVML_STR, w, &r), NVML_SUCCESS);
    char name[256];
    assert_true(gp_r_str(&r, name, sizeof name));
    assert_non_null(strstr(name, "H100"));
    bye(fd);
}

static void malformed_nvml_payloads_end_only_their_session(void **state)
{
    (void)state;
    static const struct {
        uint16_t op;
        int u32s; /* the payload: this many u32 fields */
    } bad[] = {
        {GP_OP_CLIENT_ID, 1},      /* the pid space missing */
        {GP_OP_NVML_INIT, 2},      /* a field too many */
        {GP_OP_NVML_HANDLE, 1},    /* the key missing */
        {GP_OP_NVML_U32, 2},       /* arg missing */
        {GP_OP_NVML_PROCS, 3},     /* a field too many */
        {GP_OP_NVML_PROC_UTIL, 2}, /* half of the u64 missing */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = session("good-token");
        gp_wbuf *w = req();
        for (int k = 0; k < bad[i].u32s; k++)
            gp_w_u32(w, 0);
        gp_rbuf r;
        assert_int_equal(call(fd, bad[i].op, w, &r), GP_WIRE_E_MALFORMED);
        char msg[300];
        assert_true(gp_r_str(&r, msg, sizeof msg));
        assert_non_null(strstr(msg, gp_wire_op_name(bad[i].op)));
        assert_true(closed_by_worker(fd));
        close(fd);
    }
    still_serving();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hello_with_a_listed_token_is_accepted),
        cmocka_unit_test(wrong_token_is_refused_with_auth),
        cmocka_unit_test(other_protocol_version_is_refused),
        cmocka_unit_test(first_request_must_be_hello),
        cmocka_unit_test(devices_are_the_simulated_h100s),
        cmocka_unit_test(htod_dtoh_round_trip_in_chunks),
        cmocka_unit_test(staged_copies_keep_order_and_errors),
        cmocka_unit_test(module_cache_keeps_under_its_bound),
        cmocka_unit_test(trickling_client_is_cut_off_at_the_hello_deadline),
        cmocka_unit_test(a_destroyed_context_takes_its_handles_along),
        cmocka_unit_test(calls_without_a_context_answer_invalid_context),
        cmocka_unit_test(module_through_the_cache_and_launch),
        cmocka_unit_test(async_error_surfaces_at_the_next_sync),
        cmocka_unit_test(host_function_holds_the_stream_until_callback_done),
        cmocka_unit_test(ctx_limit_and_2d_copy_run_on_the_worker),
        cmocka_unit_test(unknown_op_is_not_supported_and_the_session_goes_on),
        cmocka_unit_test(bad_frames_end_only_their_session),
        cmocka_unit_test(killed_client_leaves_no_memory_behind),
        cmocka_unit_test(pools_and_vmm_answer_by_client_ids_and_end_with_the_session),
        cmocka_unit_test(slot_token_is_held_to_the_slot_vram),
        cmocka_unit_test(nvml_lists_sessions_under_their_client_pids_in_their_pid_space),
        cmocka_unit_test(nvml_calls_before_nvml_init_answer_uninitialized),
        cmocka_unit_test(nvml_unknown_query_or_device_is_invalid_argument),
        cmocka_unit_test(malformed_nvml_payloads_end_only_their_session),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_wire.c - the GPU-over-IP codec (src/remote/wire.c): headers, payload fields, overruns, whole frames
 * over a real socket pair (short reads, a peer that closes mid-frame, oversize and foreign frames),
 * addresses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "remote/wire.h"

static void header_round_trips_and_is_little_endian(void **state)
{
    (void)state;
    gp_wire_hdr h = {.version = GP_WIRE_VERSION,
                     .op = GP_OP_LAUNCH,
                     .flags = GP_WIRE_F_ASYNC,
                     .seq = 0x01020304,
                     .status = 7,
                     .length = 300};
    uint8_t b[GP_WIRE_HEADER];
    gp_wire_hdr_encode(&h, b);
    assert_memory_equal(b, "GPRW", 4);
    assert_int_equal(b[12], 0x04); /* seq, least significant byte first */
    assert_int_equal(b[15], 0x01);
    gp_wire_hdr d;
    const char *why = "x";
    assert_int_equal(gp_wire_hdr_decode(b, &d, &why), 0);
    assert_null(why);
    assert_int_equal(d.op, GP_OP_LAUNCH);
    assert_int_equal(d.flags, GP_WIRE_F_ASYNC);
    assert_int_equal(d.seq, 0x01020304);
    assert_int_equal(d.status, 7);
    assert_int_equal(d.length, 300);
    assert_string_equal(gp_wire_op_name(GP_OP_LAUNCH), "LAUNCH");
    assert_string_equal(gp_wire_op_name(9999), "unknown");
}

static void bad_headers_are_refused_with_a_reason(void **state)
{
    (void)state;
    gp_wire_hdr h = {.version = GP_WIRE_VERSION, .op = GP_OP_INIT}, d;
    uint8_t b[GP_WIRE_HEADER];
    const char *why;
    gp_wire_hdr_encode(&h, b);
    b[0] = 'X';
    assert_int_equal(gp_wire_hdr_decode(b, &d, &why), -1);
    assert_non_null(strstr(why, "magic"));

    h.version = 2;
    gp_wire_hdr_encode(&h, b);
    assert_int_equal(gp_wire_hdr_decode(b, &d, &why), -1);
    assert_non_null(strstr(why, "version"));

    h.version = GP_WIRE_VERSION;
    h.length = GP_WIRE_MAX_PAYLOAD + 1;
    gp_wire_hdr_encode(&h, b);
    assert_int_equal(gp_wire_hdr_decode(b, &d, &why), -1);
    assert_non_null(strstr(why, "longer"));

    h.length = 0;
    h.flags = 0x80;
    gp_wire_hdr_encode(&h, b);
    assert_int_equal(gp_wire_hdr_decode(b, &d, &why), -1);
    assert_non_null(strstr(why, "flags"));
}

static void fields_round_trip(void **state)
{
    (void)state;
    gp_wbuf w;
    gp_wbuf_init(&w);
    gp_w_u32(&w, 0xdeadbeef);
    gp_w_u64(&w, 0x0123456789abcdefull);
    gp_w_i64(&w, -5);
    gp_w_f32(&w, 1.5f);
    gp_w_blob(&w, "\0\1\2", 3);
    gp_w_str(&w, "spin_ns");
    gp_w_str(&w, "");
    assert_true(w.ok);
    assert_int_equal(w.len, 4 + 8 + 8 + 4 + 7 + 11 + 4);

    gp_rbuf r;
    gp_rbuf_init(&r, w.p, w.len);
    assert_int_equal(gp_r_u32(&r), 0xdeadbeef);
    assert_true(gp_r_u64(&r) == 0x0123456789abcdefull);
    assert_true(gp_r_i64(&r) == -5);
    assert_true(gp_r_f32(&r) == 1.5f);
    size_t n;
    const uint8_t *b = gp_r_blob(&r, &n);
    assert_int_equal(n, 3);
    assert_int_equal(b[2], 2);
    char s[16];
    assert_true(gp_r_str(&r, s, sizeof s));
    assert_string_equal(s, "spin_ns");
    assert_true(gp_r_str(&r, s, sizeof s));
    assert_string_equal(s, "");
    assert_true(gp_r_done(&r));

    /* reset keeps the memory and starts over */
    uint8_t *mem = w.p;
    gp_wbuf_reset(&w);
    gp_w_u32(&w, 1);
    assert_ptr_equal(w.p, mem);
    assert_int_equal(w.len, 4);
    gp_wbuf_free(&w);
}

static void overruns_and_leftovers_are_caught(void **state)
{
    (void)state;
    uint8_t three[3] = {1, 2, 3};
    gp_rbuf r;
    gp_rbuf_init(&r, three, sizeof three);
    assert_int_equal(gp_r_u32(&r), 0); /* too short: zero, and not ok */
    assert_false(r.ok);
    assert_int_equal(gp_r_u32(&r), 0); /* stays failed */
    assert_false(gp_r_done(&r));

    /* a blob claiming more than is left */
    gp_wbuf w;
    gp_wbuf_init(&w);
    gp_w_u32(&w, 1000);
    gp_w_u32(&w, 0);
    gp_rbuf_init(&r, w.p, w.len);
    size_t n = 7;
    assert_null(gp_r_blob(&r, &n));
    assert_int_equal(n, 0);
    assert_false(r.ok);

    /* bytes left over: decoded, but not done */
    gp_rbuf_init(&r, w.p, w.len);
    gp_r_u32(&r);
    assert_true(r.ok);
    assert_false(gp_r_done(&r));

    /* a str with a NUL inside, or longer than the room for it */
    gp_wbuf_reset(&w);
    gp_w_blob(&w, "a\0b", 3);
    char s[8];
    gp_rbuf_init(&r, w.p, w.len);
    assert_false(gp_r_str(&r, s, sizeof s));
    assert_false(r.ok);
    gp_wbuf_reset(&w);
    gp_w_str(&w, "longer than eight");
    gp_rbuf_init(&r, w.p, w.len);
    assert_false(gp_r_str(&r, s, sizeof s));
    assert_string_equal(s, "");

    /* a str over the protocol's limit is not even written */
    char big[GP_WIRE_MAX_STR + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gp_wbuf_reset(&w);
    gp_w_str(&w, big);
    assert_false(w.ok);
    gp_wbuf_free(&w);
}

static void frames_cross_a_socket_whole(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* big enough that the writer blocks and the reader sees short reads */
    size_t big = 3u << 20;
    uint8_t *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7);
    pid_t pid = fork();
    if (pid == 0) {
        gp_wire_hdr h = {.op = GP_OP_HTOD, .seq = 1};
        h.length = (uint32_t)big;
        /* header + two parts, from two buffers */
        int rc = gp_wire_send2(sv[0], &h, data, 100, data + 100, big - 100);
        gp_wire_hdr e = {.op = GP_OP_BYE, .seq = 2, .flags = GP_WIRE_F_ASYNC};
        rc |= gp_wire_send(sv[0], &e, NULL);
        _exit(rc == 0 ? 0 : 1);
    }
    close(sv[0]);
    gp_wire_hdr h;
    gp_wbuf p;
    gp_wbuf_init(&p);
    const char *why;
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), 0);
    assert_int_equal(h.op, GP_OP_HTOD);
    assert_int_equal(h.length, big);
    assert_int_equal(p.len, big);
    assert_memory_equal(p.p, data, big);
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), 0);
    assert_int_equal(h.op, GP_OP_BYE);
    assert_int_equal(p.len, 0);
    /* the peer has gone: end of stream, said so */
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), -1);
    assert_non_null(why);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(sv[1]);
    gp_wbuf_free(&p);
    free(data);
}

static void truncated_and_foreign_frames_fail_cleanly(void **state)
{
    (void)state;
    int sv[2];
    gp_wire_hdr h;
    gp_wbuf p;
    gp_wbuf_init(&p);
    const char *why;

    /* a header promising 100 bytes, then only 10 and the end */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    gp_wire_hdr t = {.version = GP_WIRE_VERSION, .op = GP_OP_INIT, .length = 100};
    uint8_t b[GP_WIRE_HEADER + 10] = {0};
    gp_wire_hdr_encode(&t, b);
    assert_int_equal(write(sv[0], b, sizeof b), (ssize_t)sizeof b);
    close(sv[0]);
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), -1);
    assert_non_null(strstr(why, "middle of a frame"));
    close(sv[1]);

    /* an HTTP request sent to the worker port by mistake */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(sv[0], http, strlen(http)), (ssize_t)strlen(http));
    errno = 0;
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), -1);
    assert_int_equal(errno, EPROTO);
    assert_non_null(strstr(why, "magic"));
    close(sv[0]);
    close(sv[1]);

    /* a frame over the limit is refused before anything is allocated for it */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    t.length = 0xffffffffu;
    gp_wire_hdr_encode(&t, b);
    assert_int_equal(write(sv[0], b, GP_WIRE_HEADER), GP_WIRE_HEADER);
    assert_int_equal(gp_wire_recv(sv[1], &h, &p, &why), -1);
    assert_non_null(strstr(why, "longer"));
    assert_true(p.cap < 1024);
    close(sv[0]);
    close(sv[1]);

    /* and a sender refuses to build one */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    gp_wire_hdr big = {.op = GP_OP_HTOD};
    errno = 0;
    assert_int_equal(gp_wire_send2(sv[0], &big, b, GP_WIRE_MAX_PAYLOAD, b, 1), -1);
    assert_int_equal(errno, EMSGSIZE);
    close(sv[0]);
    close(sv[1]);
    gp_wbuf_free(&p);
}

static void addresses_listen_and_connect(void **state)
{
    (void)state;
    char err[256];
    int port = 0;
    int l = gp_wire_listen("tcp:127.0.0.1:0", &port, err, sizeof err);
    assert_true(l >= 0);
    assert_true(port > 0);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", port);
    int c = gp_wire_connect(addr, 2000, err, sizeof err);
    assert_true(c >= 0);
    close(c);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port); /* tcp: may be left out */
    c = gp_wire_connect(addr, 2000, err, sizeof err);
    assert_true(c >= 0);
    close(c);
    close(l);

    char path[64];
    snprintf(path, sizeof path, "unix:/tmp/gpupool-test-wire-%d.sock", (int)getpid());
    l = gp_wire_listen(path, NULL, err, sizeof err);
    assert_true(l >= 0);
    c = gp_wire_connect(path, 2000, err, sizeof err);
    assert_true(c >= 0);
    close(c);
    close(l);
    unlink(path + 5);

    /* nobody there, and nonsense: a sentence, not a crash */
    assert_int_equal(gp_wire_connect(path, 500, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot connect"));
    assert_int_equal(gp_wire_connect("nonsense", 500, err, sizeof err), -1);
    assert_non_null(strstr(err, "unix:/path, tcp:HOST:PORT or tls:HOST:PORT"));
    assert_int_equal(gp_wire_listen("tcp:127.0.0.1:", NULL, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_round_trips_and_is_little_endian),
        cmocka_unit_test(bad_headers_are_refused_with_a_reason),
        cmocka_unit_test(fields_round_trip),
        cmocka_unit_test(overruns_and_leftovers_are_caught),
        cmocka_unit_test(frames_cross_a_socket_whole),
        cmocka_unit_test(truncated_and_foreign_frames_fail_cleanly),
        cmocka_unit_test(addresses_listen_and_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* tls.c - TLS under the GPU-over-IP frames: handshakes, and the pump between a TLS connection and a plain
 * socketpair (tls.h). */
#include "remote/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PUMP_BUF (64u << 10)

/* OpenSSL's first queued error as text (or what the caller says when there is none). */
static void ssl_why(char *err, size_t errlen, const char *what, const char *fallback)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, e ? buf : fallback);
    ERR_clear_error();
}

SSL_CTX *gp_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_why(err, errlen, "cannot make a TLS context", "out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    char what[700];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(what, sizeof what, "TLS certificate %s", cert_file);
        ssl_why(err, errlen, what, "cannot be read");
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof what, "TLS private key %s", key_file);
        ssl_why(err, errlen, what, "cannot be read");
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof what, "TLS private key %s", key_file);
        ssl_why(err, errlen, what, "does not match the certificate");
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

void gp_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

static void set_timeouts(int fd, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Moves bytes both ways until either side ends: the local end's reads go out through SSL_write, SSL_read's
 * data goes to the local end. Non-blocking on both, one thread: an SSL call that wants the socket readable or
 * writable is retried once poll says so. Closes both ends and frees ssl. */
static void pump(SSL *ssl, int net, int local)
{
    set_nonblock(net);
    set_nonblock(local);
    unsigned char *up = malloc(PUMP_BUF), *down = malloc(PUMP_BUF); /* local->net, net->local */
    size_t up_len = 0, up_off = 0, down_len = 0, down_off = 0;
    bool done = up == NULL || down == NULL;
    bool net_in = false, net_out = false; /* what the last SSL calls wait for */
    while (!done) {
        bool progress = false;
        net_in = net_out = false;
        if (up_len == 0) {
            ssize_t n = read(local, up, PUMP_BUF);
            if (n > 0) {
                up_len = (size_t)n;
                up_off = 0;
                progress = true;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                break; /* the protocol side closed */
            }
        }
        if (up_len > 0) {
            int w = SSL_write(ssl, up + up_off, (int)(up_len - up_off));
            if (w > 0) {
                up_off += (size_t)w;
                if (up_off == up_len)
                    up_len = 0;
                progress = true;
            } else {
                int e = SSL_get_error(ssl, w);
                if (e == SSL_ERROR_WANT_READ)
                    net_in = true;
                else if (e == SSL_ERROR_WANT_WRITE)
                    net_out = true;
                else
                    break;
            }
        }
        if (down_len == 0) {
            int r = SSL_read(ssl, down, PUMP_BUF);
            if (r > 0) {
                down_len = (size_t)r;
                down_off = 0;
                progress = true;
            } else {
                int e = SSL_get_error(ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    net_in = true;
                else if (e == SSL_ERROR_WANT_WRITE)
                    net_out = true;
                else
                    break; /* the peer closed, or the connection failed */
            }
        }
        if (down_len > 0) {
            ssize_t n = write(local, down + down_off, down_len - down_off);
            if (n > 0) {
                down_off += (size_t)n;
                if (down_off == down_len)
                    down_len = 0;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                break;
            }
        }
        if (progress)
            continue;
        struct pollfd p[2] = {
            {.fd = net, .events = (short)((net_in ? POLLIN : 0) | (net_out ? POLLOUT : 0))},
            {.fd = local, .events = (short)((up_len == 0 ? POLLIN : 0) | (down_len > 0 ? POLLOUT : 0))}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if ((p[0].revents & (POLLERR | POLLNVAL)) || (p[1].revents & (POLLERR | POLLNVAL)))
            done = true;
    }
    /* whatever reached us from the network still goes to the protocol side (e.g. a last reply), for at most
     * a second: a program that stopped reading must not hold the pump */
    for (int tries = 0; down_len > down_off && tries < 10; tries++) {
        struct pollfd p = {.fd = local, .events = POLLOUT};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = write(local, down + down_off, down_len - down_off);
        if (n <= 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (n > 0)
            down_off += (size_t)n;
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(net);
    close(local);
    free(up);
    free(down);
}

int gp_tls_server(SSL_CTX *ctx, int fd, int timeout_ms, char *err, size_t errlen)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        ssl_why(err, errlen, "TLS", "out of memory");
        return -1;
    }
    set_timeouts(fd, timeout_ms);
    SSL_set_fd(ssl, fd);
    int rc = SSL_accept(ssl);
    if (rc != 1) {
        int e = SSL_get_error(ssl, rc);
        ssl_why(err, errlen, "TLS handshake failed",
                e == SSL_ERROR_SYSCALL ? "the client closed the connection or timed out" : "protocol error");
        SSL_free(ssl);
        return -1;
    }
    set_timeouts(fd, 0);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        SSL_free(ssl);
        return -1;
    }
    pid_t child = fork();
    if (child < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        SSL_free(ssl);
        close(sp[0]);
        close(sp[1]);
        return -1;
    }
    if (child == 0) { /* the session: a plain socket from here on; the SSL state stays with the pump */
        close(sp[0]);
        close(fd);
        return sp[1];
    }
    close(sp[1]);
    alarm(
        0); /* the caller's deadline for the handshake and HELLO is the session's now (alarms do not fork) */
    pump(ssl, fd, sp[0]);
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR)
        ;
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0));
}

/* The client's pumps (the CUDA and the NVML connection have one each), stopped and joined at exit: their
 * OpenSSL thread state is freed, and nothing is left running while the process tears down. */
#define MAX_PUMPS 8
static struct client_pump {
    pthread_t thread;
    SSL *ssl;
    int net, local, app; /* app: the socketpair end the protocol code uses */
    pid_t pid;           /* the process that started it (a forked child has no such thread) */
    bool used, running;
} g_pumps[MAX_PUMPS];
static pthread_mutex_t g_pumps_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_pumps_once = PTHREAD_ONCE_INIT;

static void *pump_main(void *arg)
{
    struct client_pump *p = arg;
    pump(p->ssl, p->net, p->local);
    pthread_mutex_lock(&g_pumps_mu);
    p->running = false; /* its descriptors are closed: the exit handler must not touch them */
    pthread_mutex_unlock(&g_pumps_mu);
    OPENSSL_thread_stop();
    return NULL;
}

/* At exit: the program's end of each socketpair says it is done, so that its pump sends what is left (a last
 * BYE) and closes the TLS connection; a pump still running after a second is cut off. */
static void pumps_stop(void)
{
    pthread_mutex_lock(&g_pumps_mu);
    for (int i = 0; i < MAX_PUMPS; i++)
        if (g_pumps[i].used && g_pumps[i].pid == getpid() && g_pumps[i].running)
            shutdown(g_pumps[i].app, SHUT_WR);
    pthread_mutex_unlock(&g_pumps_mu);
    for (int waited = 0; waited < 100; waited++) {
        bool any = false;
        pthread_mutex_lock(&g_pumps_mu);
        for (int i = 0; i < MAX_PUMPS; i++)
            any |= g_pumps[i].used && g_pumps[i].pid == getpid() && g_pumps[i].running;
        pthread_mutex_unlock(&g_pumps_mu);
        if (!any)
            break;
        usleep(10000);
    }
    pthread_mutex_lock(&g_pumps_mu);
    for (int i = 0; i < MAX_PUMPS; i++)
        if (g_pumps[i].used && g_pumps[i].pid == getpid() && g_pumps[i].running)
            shutdown(g_pumps[i].net, SHUT_RDWR); /* the pump's poll and SSL calls return at once */
    pthread_mutex_unlock(&g_pumps_mu);
    for (int i = 0; i < MAX_PUMPS; i++)
        if (g_pumps[i].used && g_pumps[i].pid == getpid()) {
            pthread_join(g_pumps[i].thread, NULL);
            g_pumps[i].used = false;
        }
}

static void pumps_init(void)
{
    atexit(pumps_stop);
}

int gp_tls_client(int fd, const char *host, const char *ca_file, int timeout_ms, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_why(err, errlen, "cannot make a TLS context", "out of memory");
        close(fd);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    SSL *ssl = NULL;
    if (ok != 1) {
        char what[600];
        snprintf(what, sizeof what, "TLS: the trusted certificates %s", ca_file ? ca_file : "(system)");
        ssl_why(err, errlen, what, "cannot be read");
        goto fail;
    }
    ssl = SSL_new(ctx);
    if (!ssl) {
        ssl_why(err, errlen, "TLS", "out of memory");
        goto fail;
    }
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, host); /* SNI names hosts, never addresses */
    if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) : SSL_set1_host(ssl, host)) != 1) {
        ssl_why(err, errlen, "TLS: the worker's host name", "cannot be checked");
        goto fail;
    }
    set_timeouts(fd, timeout_ms);
    SSL_set_fd(ssl, fd);
    int rc = SSL_connect(ssl);
    if (rc != 1) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK) {
            snprintf(err, errlen, "TLS: the worker's certificate is not trusted for %s: %s", host,
                     X509_verify_cert_error_string(v));
            ERR_clear_error();
        } else {
            ssl_why(err, errlen, "TLS handshake with the worker failed",
                    "the connection closed (is the worker's address a TLS listener?)");
        }
        goto fail;
    }
    set_timeouts(fd, 0);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        snprintf(err, errlen, "TLS: %s", strerror(errno));
        goto fail;
    }
    pthread_once(&g_pumps_once, pumps_init);
    pthread_mutex_lock(&g_pumps_mu);
    struct client_pump *p = NULL;
    for (int i = 0; i < MAX_PUMPS && !p; i++)
        if (!g_pumps[i].used || (g_pumps[i].pid != getpid())) /* a forked child reuses its parent's slots */
            p = &g_pumps[i];
    if (p) {
        *p = (struct client_pump){.ssl = ssl, .net = fd, .local = sp[0], .app = sp[1], .pid = getpid()};
        /* the pump must not take signals the application expects on its own threads */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&p->thread, NULL, pump_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        p->used = p->running = rc == 0;
    }
    pthread_mutex_unlock(&g_pumps_mu);
    if (!p || rc != 0) {
        snprintf(err, errlen, "TLS: cannot start its thread: %s",
                 p ? strerror(rc) : "too many TLS connections in this process");
        close(sp[0]);
        close(sp[1]);
        goto fail;
    }
    SSL_CTX_free(ctx); /* the SSL object holds its own reference */
    return sp[1];
fail:
    if (ssl)
        SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return -1;
}

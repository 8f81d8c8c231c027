/* http.c - the HTTP server (libmicrohttpd) and client (libcurl) of every gpupool daemon (see http.h).
 *
 * Server: we create the listening sockets ourselves (a unix socket needs the stale/live check and its mode;
 * a TCP address needs our parsing and the bound port) and give each to its own MHD daemon, so the unix
 * socket stays plain HTTP while TCP may speak TLS. MHD takes a socket it is given and closes it, on failure
 * too. Each connection has a thread; a request's body is gathered into one buffer (at most max_body, else
 * 413 without calling the handler) and the handler then runs exactly once. The connection count is shared
 * by both listeners through the accept policy. Client: one curl easy handle per call, with a process-wide
 * curl_global_init done once under pthread_once.
 */
#include "common/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include "common/json.h"
#include "common/log.h"

#define DEFAULT_MAX_BODY  (1u << 20)
#define DEFAULT_MAX_CONNS 256u
#define DEFAULT_TIMEOUT_S 120u
#define MAX_PEM           (1u << 20)
#define MAX_RESPONSE      ((size_t)256 << 20) /* a client refuses bigger answers rather than exhaust memory */
#define DEFAULT_CALL_MS   30000L

/* ---- server ---- */

typedef struct listener {
    gp_http_server *srv;
    struct MHD_Daemon *d;
    int quiesced_fd; /* the listening socket once MHD_quiesce_daemon handed it back, else -1 */
    bool is_unix;
} listener;

struct gp_http_server {
    listener unix_l, tcp_l;
    gp_http_handler handler;
    void *ctx;
    size_t max_body;
    unsigned max_conns;
    atomic_uint conns; /* open connections, both listeners together */
    int port;
    char *unix_path; /* NULL when not listening on a unix socket */
    dev_t unix_dev;  /* the socket file we made: stop removes it only if it is still ours */
    ino_t unix_ino;
    char *cert, *key;
    size_t key_len;
    pthread_mutex_t log_mu;
    bool starting; /* a daemon is starting: keep MHD's first message for the error if it fails */
    char start_log[256];
};

/* One request, from its headers to its completion. */
typedef struct http_call {
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    bool too_large, answered;
    char peer[64];
} http_call;

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    gp_http_server *s = cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pthread_mutex_lock(&s->log_mu);
    if (s->starting &&
        s->start_log[0] == '\0') /* the first message says what went wrong; later ones follow */
        memcpy(s->start_log, msg, n + 1);
    pthread_mutex_unlock(&s->log_mu);
    /* Most of MHD's messages are about one misbehaving client: details for debugging, not warnings. */
    gp_log(GP_LOG_DEBUG, "http", "%s", msg);
}

static void format_peer(const struct sockaddr *a, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (a && a->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (a && a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) { /* an IPv4 client of a dual-stack socket */
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
            snprintf(buf, len, "%s:%u", host, ntohs(in6->sin6_port));
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
        }
    } else {
        snprintf(buf, len, "unknown");
    }
}

static enum MHD_Result respond(struct MHD_Connection *conn, gp_http_resp *r)
{
    if (r->status == 0)
        gp_http_problem(r, 500, "the handler gave no answer (a bug in the server)");
    else if (r->status < 100 || r->status > 599)
        gp_http_problem(r, 500,
                        "the handler answered with status %d, which is not an HTTP status (a bug in the "
                        "server)",
                        r->status);
    if (r->body == NULL)
        r->len = 0;
    struct MHD_Response *mr = MHD_create_response_from_buffer(
        r->len, r->body ? r->body : (char *)"", r->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (mr == NULL) {
        free(r->body);
        r->body = NULL;
        return MHD_NO;
    }
    r->body = NULL; /* MHD frees it with the response */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type : "application/json");
    if (r->location[0] && MHD_add_response_header(mr, MHD_HTTP_HEADER_LOCATION, r->location) != MHD_YES)
        gp_log(GP_LOG_WARN, "http", "dropped a Location header that is not a valid header value");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return rc;
}

static enum MHD_Result answer_too_large(struct MHD_Connection *conn, const gp_http_server *s)
{
    gp_http_resp r = {0};
    gp_http_problem(&r, 413, "the request body is larger than the %zu bytes this server accepts",
                    s->max_body);
    return respond(conn, &r);
}

/* Appends a piece of the body, or notes that the body is too large (the rest is then read and dropped). */
static void gather(http_call *c, const char *data, size_t n, size_t max)
{
    if (c->too_large)
        return;
    if (n > max - c->len) {
        c->too_large = true;
        free(c->body);
        c->body = NULL;
        c->len = c->cap = 0;
        return;
    }
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        char *b = realloc(c->body, cap);
        if (b == NULL) { /* answered as too large: the server cannot hold it now */
            c->too_large = true;
            free(c->body);
            c->body = NULL;
            c->len = c->cap = 0;
            return;
        }
        c->body = b;
        c->cap = cap;
    }
    memcpy(c->body + c->len, data, n);
    c->len += n;
    c->body[c->len] = '\0';
}

static enum MHD_Result dispatch(listener *l, http_call *c, const char *url, const char *method)
{
    gp_http_server *s = l->srv;
    if (l->is_unix) {
        snprintf(c->peer, sizeof c->peer, "unix");
    } else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        format_peer(ci ? ci->client_addr : NULL, c->peer, sizeof c->peer);
    }
    gp_http_req req = {
        .method = method,
        .path = url,
        .body = c->body ? c->body : "",
        .body_len = c->len,
        .content_type = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .peer = c->peer,
        .impl = c,
    };
    gp_http_resp resp = {0};
    s->handler(s->ctx, &req, &resp);
    return respond(c->conn, &resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size,
                                  void **con_cls)
{
    listener *l = cls;
    gp_http_server *s = l->srv;
    http_call *c = *con_cls;
    if (c == NULL) { /* the headers are in */
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return MHD_NO;
        c->conn = conn;
        *con_cls = c;
        /* A declared length over the limit is answered now: MHD then drops the body and the connection. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno == 0 && end != cl && n > s->max_body) {
                c->answered = true;
                return answer_too_large(conn, s);
            }
        }
        return MHD_YES;
    }
    if (c->answered)
        return MHD_NO;
    if (*upload_size > 0) {
        gather(c, upload, *upload_size, s->max_body);
        *upload_size = 0;
        return MHD_YES;
    }
    c->answered = true; /* the body is complete: the one call of the handler */
    if (c->too_large)
        return answer_too_large(conn, s);
    return dispatch(l, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_call *c = *con_cls;
    if (c) {
        free(c->body);
        free(c);
        *con_cls = NULL;
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    gp_http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&s->conns, 1);
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub(&s->conns, 1);
}

/* The bound on connections, across both listeners (each MHD daemon also has it as its own hard limit). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    gp_http_server *s = cls;
    if (atomic_load(&s->conns) < s->max_conns)
        return MHD_YES;
    gp_log_once(GP_LOG_WARN, "http", "refusing connections: %u are open, the limit (max_conns)",
                s->max_conns);
    return MHD_NO;
}

static int read_pem(const char *path, const char *what, char **out, size_t *len, gp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gp_err_set(err, errno == ENOENT ? GP_ERR_NOT_FOUND : GP_ERR_IO, "%s %s: %s", what, path,
                          strerror(errno));
    char *buf = malloc(MAX_PEM + 1);
    if (buf == NULL) {
        close(fd);
        return gp_err_set(err, GP_ERR_NOMEM, "%s %s: out of memory", what, path);
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, MAX_PEM + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return gp_err_set(err, GP_ERR_IO, "%s %s: %s", what, path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > MAX_PEM) {
            close(fd);
            free(buf);
            return gp_err_set(err, GP_ERR_INVALID, "%s %s: larger than %u bytes: not a PEM file", what, path,
                              MAX_PEM);
        }
    }
    close(fd);
    buf[n] = '\0';
    if (strstr(buf, "-----BEGIN ") == NULL) {
        free(buf);
        return gp_err_set(err, GP_ERR_INVALID, "%s %s: not a PEM file (no \"-----BEGIN\" line)", what, path);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Creates the unix socket: a stale socket file (nobody accepts on it) is replaced, a live one or anything
 * that is not a socket is an error. */
static int open_unix(gp_http_server *s, const char *path, int *fd_out, gp_err *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof a.sun_path)
        return gp_err_set(err, GP_ERR_INVALID, "unix socket path \"%.100s\": %zu bytes; it must be 1 to %zu",
                          path, n, sizeof a.sun_path - 1);
    memcpy(a.sun_path, path, n + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return gp_err_set(
                err, GP_ERR_EXISTS,
                "unix socket %s: the path exists and is not a socket; remove it or choose another "
                "path",
                path);
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return gp_err_set(err, GP_ERR_IO, "unix socket %s: socket: %s", path, strerror(errno));
        int rc = connect(probe, (struct sockaddr *)&a, sizeof a), e = errno;
        close(probe);
        if (rc == 0 || e == EAGAIN)
            return gp_err_set(err, GP_ERR_EXISTS,
                              "unix socket %s: another server is listening on it; stop that one or choose "
                              "another path",
                              path);
        if (e != ECONNREFUSED)
            return gp_err_set(err, GP_ERR_IO, "unix socket %s: cannot tell whether it is in use: %s", path,
                              strerror(e));
        if (unlink(path) != 0 && errno != ENOENT)
            return gp_err_set(err, GP_ERR_IO, "unix socket %s: cannot remove the stale socket file: %s", path,
                              strerror(errno));
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gp_err_set(err, GP_ERR_IO, "unix socket %s: socket: %s", path, strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return gp_err_set(err, e == EADDRINUSE ? GP_ERR_EXISTS : GP_ERR_IO, "unix socket %s: bind: %s", path,
                          strerror(e));
    }
    /* 0660: the owner and its group (the daemon's clients) may connect; chmod because umask is per process.
     */
    if (chmod(path, 0660) != 0 || listen(fd, SOMAXCONN) != 0 || lstat(path, &st) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return gp_err_set(err, GP_ERR_IO, "unix socket %s: %s", path, strerror(e));
    }
    s->unix_dev = st.st_dev;
    s->unix_ino = st.st_ino;
    *fd_out = fd;
    return 0;
}

/* Splits "HOST:PORT", ":PORT" or "[V6]:PORT". host is "" for all interfaces. */
static int parse_tcp_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
                          gp_err *err)
{
    const char *colon;
    size_t hl;
    const char *h = addr;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        if (hl == 0)
            goto bad;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            goto bad;
        hl = (size_t)(colon - addr);
        if (memchr(addr, ':', hl))
            return gp_err_set(err, GP_ERR_INVALID,
                              "tcp address \"%.100s\": put an IPv6 address in brackets, as in [::1]:9000",
                              addr);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (pl == 0 || pl > 5 || strspn(p, "0123456789") != pl || atol(p) > 65535)
        return gp_err_set(err, GP_ERR_INVALID,
                          "tcp address \"%.100s\": the port must be a number from 0 to 65535", addr);
    if (hl >= hostlen || pl >= portlen)
        goto bad;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
bad:
    return gp_err_set(err, GP_ERR_INVALID,
                      "tcp address \"%.100s\": expected HOST:PORT, :PORT (all interfaces) or [IPv6]:PORT",
                      addr);
}

static int bind_listen(const struct sockaddr *a, socklen_t len, bool dual_stack, int *fd_out)
{
    int fd = socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, v6only = !dual_stack;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (bind(fd, a, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *fd_out = fd;
    return 0;
}

static int open_tcp(gp_http_server *s, const char *addr, int *fd_out, gp_err *err)
{
    char host[256], port[8];
    if (parse_tcp_addr(addr, host, sizeof host, port, sizeof port, err) != 0)
        return -1;
    int fd = -1, e = 0;
    if (host[0] == '\0') { /* all interfaces: IPv6 and IPv4 on one socket, or IPv4 alone without IPv6 */
        struct sockaddr_in6 a6 = {
            .sin6_family = AF_INET6, .sin6_addr = in6addr_any, .sin6_port = htons((uint16_t)atoi(port))};
        struct sockaddr_in a4 = {.sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_ANY),
                                 .sin_port = htons((uint16_t)atoi(port))};
        if (bind_listen((struct sockaddr *)&a6, sizeof a6, true, &fd) != 0) {
            e = errno;
            if (e == EAFNOSUPPORT && bind_listen((struct sockaddr *)&a4, sizeof a4, false, &fd) != 0)
                e = errno;
        }
    } else {
        struct addrinfo hints = {
            .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *res = NULL;
        int g = getaddrinfo(host, port, &hints, &res);
        if (g != 0)
            return gp_err_set(err, GP_ERR_INVALID, "tcp address \"%.100s\": cannot resolve \"%s\": %s", addr,
                              host, gai_strerror(g));
        e = EADDRNOTAVAIL;
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
            if (bind_listen(ai->ai_addr, ai->ai_addrlen, false, &fd) != 0)
                e = errno;
        freeaddrinfo(res);
    }
    if (fd < 0) {
        const char *hint = e == EADDRINUSE
                               ? " (another program listens there: stop it or choose another port)"
                           : e == EACCES        ? " (ports below 1024 need privileges: choose a higher port)"
                           : e == EADDRNOTAVAIL ? " (not an address of this host)"
                                                : "";
        return gp_err_set(err, e == EADDRINUSE ? GP_ERR_EXISTS : GP_ERR_IO, "tcp address %.100s: %s%s", addr,
                          strerror(e), hint);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

/* Starts one MHD daemon on fd (which it takes, whatever happens). */
static int start_daemon(gp_http_server *s, listener *l, int fd, unsigned timeout_s, bool tls,
                        const char *what, gp_err *err)
{
    l->srv = s;
    l->quiesced_fd = -1;
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert},
        {MHD_OPTION_END, 0, NULL},
    };
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0);
    pthread_mutex_lock(&s->log_mu);
    s->starting = true;
    s->start_log[0] = '\0';
    pthread_mutex_unlock(&s->log_mu);
    /* The logger goes first: MHD prints to stderr whatever it logs before seeing it. */
    l->d = MHD_start_daemon(flags, 0, on_accept, s, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, s->max_conns,
                            MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_ARRAY, tls ? tls_opts : tls_opts + 2, MHD_OPTION_END);
    pthread_mutex_lock(&s->log_mu);
    s->starting = false;
    if (l->d) {
        pthread_mutex_unlock(&s->log_mu);
        return 0;
    }
    gp_err_set(err, tls ? GP_ERR_INVALID : GP_ERR_IO, "cannot serve %s: %s%s", what,
               s->start_log[0] ? s->start_log : "libmicrohttpd did not start",
               tls ? " (check that tls_cert and tls_key are a matching PEM certificate and key)" : "");
    pthread_mutex_unlock(&s->log_mu);
    return -1;
}

int gp_http_start(const gp_http_opts *o, gp_http_handler h, void *ctx, gp_http_server **out, gp_err *err)
{
    if (o == NULL || h == NULL || out == NULL)
        return gp_err_set(err, GP_ERR_INTERNAL, "gp_http_start: options, handler and result are required");
    if ((o->unix_path == NULL || !*o->unix_path) && (o->tcp_addr == NULL || !*o->tcp_addr))
        return gp_err_set(err, GP_ERR_INVALID,
                          "the HTTP server needs a unix socket path, a TCP address, or both");
    bool tls = o->tls_cert || o->tls_key;
    if (tls && !(o->tls_cert && o->tls_key))
        return gp_err_set(err, GP_ERR_INVALID,
                          "TLS needs both a certificate (tls_cert) and its key (tls_key)");
    if (tls && (o->tcp_addr == NULL || !*o->tcp_addr))
        return gp_err_set(
            err, GP_ERR_INVALID,
            "TLS applies to the TCP listener, and none is configured: set a TCP address as well");
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return gp_err_set(err, GP_ERR_UNSUPPORTED, "this libmicrohttpd was built without TLS support");

    gp_http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "http server: out of memory");
    pthread_mutex_init(&s->log_mu, NULL);
    s->handler = h;
    s->ctx = ctx;
    s->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
    s->max_conns = o->max_conns ? o->max_conns : DEFAULT_MAX_CONNS;
    unsigned timeout_s = o->timeout_s ? o->timeout_s : DEFAULT_TIMEOUT_S;
    size_t cert_len;
    if (tls && (read_pem(o->tls_cert, "tls_cert", &s->cert, &cert_len, err) != 0 ||
                read_pem(o->tls_key, "tls_key", &s->key, &s->key_len, err) != 0))
        goto fail;
    int fd = -1;
    if (o->unix_path && *o->unix_path) {
        if (open_unix(s, o->unix_path, &fd, err) != 0)
            goto fail;
        if ((s->unix_path = strdup(o->unix_path)) == NULL) {
            close(fd);
            unlink(o->unix_path);
            gp_err_set(err, GP_ERR_NOMEM, "http server: out of memory");
            goto fail;
        }
        s->unix_l.is_unix = true;
        char what[160];
        snprintf(what, sizeof what, "unix socket %s", o->unix_path);
        if (start_daemon(s, &s->unix_l, fd, timeout_s, false, what, err) != 0)
            goto fail;
    }
    if (o->tcp_addr && *o->tcp_addr) {
        if (open_tcp(s, o->tcp_addr, &fd, err) != 0)
            goto fail;
        char what[160];
        snprintf(what, sizeof what, "%s on %s", tls ? "HTTPS" : "HTTP", o->tcp_addr);
        if (start_daemon(s, &s->tcp_l, fd, timeout_s, tls, what, err) != 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    gp_http_stop(s);
    return -1;
}

void gp_http_stop(gp_http_server *s)
{
    if (s == NULL)
        return;
    /* Stop accepting on both first, so that no new request starts while the other one drains. */
    listener *ls[2] = {&s->tcp_l, &s->unix_l};
    for (int i = 0; i < 2; i++)
        if (ls[i]->d)
            ls[i]->quiesced_fd = MHD_quiesce_daemon(ls[i]->d);
    for (int i = 0; i < 2; i++) {
        if (ls[i]->d)
            MHD_stop_daemon(ls[i]->d); /* joins the connection threads: running handlers finish */
        if (ls[i]->d && ls[i]->quiesced_fd >= 0)
            close(ls[i]->quiesced_fd);
        ls[i]->d = NULL;
    }
    struct stat st;
    if (s->unix_path && lstat(s->unix_path, &st) == 0 && st.st_dev == s->unix_dev && st.st_ino == s->unix_ino)
        unlink(s->unix_path);
    free(s->unix_path);
    if (s->key)
        explicit_bzero(s->key, s->key_len);
    free(s->key);
    free(s->cert);
    pthread_mutex_destroy(&s->log_mu);
    free(s);
}

int gp_http_port(const gp_http_server *s)
{
    return s && s->tcp_l.d ? s->port : 0;
}

const char *gp_http_req_arg(const gp_http_req *r, const char *name)
{
    const http_call *c = r ? r->impl : NULL;
    if (c == NULL || name == NULL)
        return NULL;
    const char *v = NULL;
    size_t vlen = 0;
    if (MHD_lookup_connection_value_n(c->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v, &vlen) !=
        MHD_YES)
        return NULL;
    return v ? v : ""; /* "?watch" without "=": present, empty */
}

const char *gp_http_req_header(const gp_http_req *r, const char *name)
{
    const http_call *c = r ? r->impl : NULL;
    if (c == NULL || name == NULL)
        return NULL;
    return MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, name);
}

/* ---- responses ---- */

static void set_body(gp_http_resp *r, int status, const char *type, char *body, size_t len)
{
    free(r->body);
    r->status = status;
    r->content_type = type;
    r->body = body;
    r->len = body ? len : 0;
}

void gp_http_body(gp_http_resp *r, int status, const char *content_type, char *body, size_t len)
{
    set_body(r, status, content_type, body, len);
}

void gp_http_json(gp_http_resp *r, int status, json_t *body)
{
    size_t len = 0;
    char *s = body ? gp_json_dump(body, &len) : NULL;
    json_decref(body);
    if (s == NULL) {
        gp_http_problem(r, 500, "the server could not build its answer (out of memory)");
        return;
    }
    set_body(r, status, "application/json", s, len);
}

/* Replaces bytes that are not UTF-8 with '?', so that any text (a path a client sent) can go into JSON. */
static void utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xe0) == 0xc0 ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        bool ok = n >= 0 && !(n == 1 && *p < 0xc2);
        for (int i = 1; ok && i <= n; i++)
            ok = (p[i] & 0xc0) == 0x80;
        if (ok && n > 0) { /* overlong, surrogates and past U+10FFFF are invalid too */
            uint32_t cp = n == 1   ? (uint32_t)(p[0] & 0x1f)
                          : n == 2 ? (uint32_t)(p[0] & 0x0f)
                                   : (uint32_t)(p[0] & 0x07);
            for (int i = 1; i <= n; i++)
                cp = cp << 6 | (p[i] & 0x3f);
            ok = !(n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) &&
                 !(n == 3 && (cp < 0x10000 || cp > 0x10ffff));
        }
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n + 1;
    }
}

__attribute__((format(printf, 3, 0))) static void problemv(gp_http_resp *r, int status, const char *fmt,
                                                           va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    utf8_sanitize(detail);
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", gp_http_reason(status),
                          "status", status, "detail", detail);
    size_t len = 0;
    char *s = o ? gp_json_dump(o, &len) : NULL;
    json_decref(o);
    set_body(r, status, "application/problem+json", s, len);
    r->location[0] = '\0'; /* an error points nowhere */
}

void gp_http_problem(gp_http_resp *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problemv(r, status, fmt, ap);
    va_end(ap);
}

static void problem_err(gp_http_resp *r, const gp_err *e, bool unprocessable)
{
    if (e == NULL) {
        gp_http_problem(r, 500, "an error without a description (a bug in the server)");
        return;
    }
    int status;
    switch (e->code) {
    case GP_ERR_INVALID:
    case GP_ERR_RANGE: status = unprocessable ? 422 : 400; break;
    case GP_ERR_NOT_FOUND: status = 404; break;
    case GP_ERR_EXISTS:
    case GP_ERR_CONFLICT: status = 409; break;
    case GP_ERR_UNSUPPORTED: status = 501; break;
    default: status = 500; break;
    }
    gp_http_problem(r, status, "%s", e->msg[0] ? e->msg : gp_code_name(e->code));
}

void gp_http_problem_err(gp_http_resp *r, const gp_err *e)
{
    problem_err(r, e, false);
}

void gp_http_problem_unprocessable(gp_http_resp *r, const gp_err *e)
{
    problem_err(r, e, true);
}

void gp_http_not_allowed(gp_http_resp *r, const gp_http_req *req, const char *allow)
{
    gp_http_problem(r, 405, "%s is not allowed on %s (allowed: %s)", req->method, req->path, allow);
}

bool gp_http_bearer_ok(const gp_http_req *req, const char *token)
{
    const char *h = gp_http_req_header(req, "Authorization");
    if (h == NULL || strncmp(h, "Bearer ", 7) != 0 || token == NULL)
        return false;
    const char *given = h + 7;
    size_t gl = strlen(given), tl = strlen(token);
    /* no early exit on the first difference: how long the check takes says nothing of the token */
    unsigned char diff = (unsigned char)(gl != tl);
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(token[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

const char *gp_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 511: return "Network Authentication Required";
    }
    return "Unknown";
}

/* "application/json", any case, with optional parameters ("; charset=utf-8"). */
static bool is_json_type(const char *t)
{
    while (*t == ' ' || *t == '\t')
        t++;
    static const char want[] = "application/json";
    if (strncasecmp(t, want, sizeof want - 1) != 0)
        return false;
    t += sizeof want - 1;
    while (*t == ' ' || *t == '\t')
        t++;
    return *t == '\0' || *t == ';';
}

json_t *gp_http_json_body(const gp_http_req *req, gp_http_resp *resp)
{
    if (req->content_type && !is_json_type(req->content_type)) {
        gp_http_problem(resp, 415,
                        "Content-Type \"%.100s\" is not supported: send the body as application/json",
                        req->content_type);
        return NULL;
    }
    if (req->body_len == 0) {
        gp_http_problem(resp, 400, "the request needs a JSON object as its body");
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        gp_http_problem(resp, 400, "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                        je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        static const char *const names[] = {"an object", "an array", "a string", "a number",
                                            "a number",  "true",     "false",    "null"};
        json_type t = json_typeof(v);
        gp_http_problem(resp, 400, "the body must be a JSON object, got %s",
                        (unsigned)t < sizeof names / sizeof *names ? names[t] : "another value");
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ---- client ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct sink {
    char *buf;
    size_t len, cap;
    bool too_big;
} sink;

static size_t on_data(char *data, size_t size, size_t n, void *userdata)
{
    sink *k = userdata;
    size_t add = size * n;
    if (add > MAX_RESPONSE - k->len) {
        k->too_big = true;
        return 0; /* makes curl fail the transfer */
    }
    if (k->len + add + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        while (cap < k->len + add + 1)
            cap *= 2;
        char *b = realloc(k->buf, cap);
        if (b == NULL)
            return 0;
        k->buf = b;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, data, add);
    k->len += add;
    k->buf[k->len] = '\0';
    return add;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

static int call_error(CURLcode rc, const char *errbuf, const char *method, const char *url, long timeout_ms,
                      const sink *k, gp_err *err)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return gp_err_set(err, GP_ERR_IO,
                          "%s %s: cannot connect: %s (is the server running and listening there?)", method,
                          url, why);
    case CURLE_COULDNT_RESOLVE_HOST:
        return gp_err_set(err, GP_ERR_IO, "%s %s: %s (check the host name)", method, url, why);
    case CURLE_OPERATION_TIMEDOUT:
        return gp_err_set(err, GP_ERR_IO, "%s %s: no complete answer within %ld ms", method, url, timeout_ms);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return gp_err_set(
            err, GP_ERR_IO,
            "%s %s: TLS failed: %s (give the CA that signed the server's certificate, or check the "
            "server's certificate)",
            method, url, why);
    case CURLE_WRITE_ERROR:
        if (k->too_big)
            return gp_err_set(err, GP_ERR_RANGE, "%s %s: the answer is larger than %zu MiB", method, url,
                              MAX_RESPONSE >> 20);
        return gp_err_set(err, GP_ERR_NOMEM, "%s %s: out of memory for the answer", method, url);
    default: return gp_err_set(err, GP_ERR_IO, "%s %s: %s", method, url, why);
    }
}

int gp_http_call(const char *method, const char *url, const char *body, const char *content_type,
                 const gp_http_client_opts *o, gp_http_result *out, gp_err *err)
{
    if (out == NULL || url == NULL)
        return gp_err_set(err, GP_ERR_INTERNAL, "gp_http_call: url and result are required");
    memset(out, 0, sizeof *out);
    if (method == NULL)
        method = body ? "POST" : "GET";
    if (!is_token(method))
        return gp_err_set(err, GP_ERR_INVALID, "HTTP method \"%.40s\" is not a valid method name", method);
    const gp_http_client_opts none = {0};
    if (o == NULL)
        o = &none;
    if (o->bearer && strpbrk(o->bearer, "\r\n"))
        return gp_err_set(err, GP_ERR_INVALID,
                          "the bearer token contains a line break: check the token file");
    long timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_CALL_MS;

    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return gp_err_set(err, GP_ERR_INTERNAL, "libcurl did not initialise: %s",
                          curl_easy_strerror(curl_init_rc));

    /* "unix:/run/agent.sock:/v1/gpus": the socket path ends at the first ":/". */
    char *sock = NULL, *http_url = NULL;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *sp = url + 5, *sep = strstr(sp, ":/");
        if (sep == NULL || sep == sp)
            return gp_err_set(err, GP_ERR_INVALID,
                              "url \"%.200s\": expected unix:/path/to.sock:/request/path", url);
        sock = strndup(sp, (size_t)(sep - sp));
        if (sock && asprintf(&http_url, "http://localhost%s", sep + 1) < 0)
            http_url = NULL;
        if (sock == NULL || http_url == NULL) {
            free(sock);
            return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
        }
    } else if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        return gp_err_set(err, GP_ERR_INVALID,
                          "url \"%.200s\": expected http://, https:// or unix:/path.sock:/path", url);
    }

    CURL *h = curl_easy_init();
    if (h == NULL) {
        free(sock);
        free(http_url);
        return gp_err_set(err, GP_ERR_NOMEM, "libcurl: cannot create a handle (out of memory)");
    }
    sink k = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    char line[512];
    bool has_body = body != NULL;
    bool bodyless_method = !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "DELETE") ||
                           !strcmp(method, "OPTIONS");
    curl_easy_setopt(h, CURLOPT_URL, http_url ? http_url : url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for timeouts: we run in threads */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &k);
    if (sock) {
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
        curl_easy_setopt(h, CURLOPT_PROXY, ""); /* a local socket is never reached through a proxy */
    }
    if (o->tls_ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->tls_ca);
    if (o->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (has_body || !bodyless_method) {
        /* A POST without a body still says Content-Length: 0, which every server accepts. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, has_body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(has_body ? strlen(body) : 0));
        snprintf(line, sizeof line, "Content-Type:%s%.400s", has_body ? " " : "",
                 has_body ? (content_type ? content_type : "application/json") : "");
        hdrs = curl_slist_append(hdrs, line);
    }
    if (o->bearer) {
        char *auth = NULL;
        if (asprintf(&auth, "Authorization: Bearer %s", o->bearer) >= 0) {
            hdrs = curl_slist_append(hdrs, auth);
            explicit_bzero(auth, strlen(auth));
            free(auth);
        }
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        ret = call_error(rc, errbuf, method, url, timeout_ms, &k, err);
        free(k.buf);
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
        const char *ct = NULL;
        if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
            snprintf(out->content_type, sizeof out->content_type, "%s", ct);
        if (k.buf == NULL)
            k.buf = calloc(1, 1);
        if (k.buf == NULL) {
            ret = gp_err_set(err, GP_ERR_NOMEM, "out of memory");
            out->status = 0;
        }
        out->body = k.buf;
        out->len = k.len;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(sock);
    free(http_url);
    return ret;
}

void gp_http_result_free(gp_http_result *r)
{
    if (r == NULL)
        return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

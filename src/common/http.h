/* http.h - the HTTP server and client every gpupool daemon uses: the agent's local API and /metrics, the
 * controller's REST API, agent -> controller calls.
 *
 * Server: libmicrohttpd underneath, listening on a unix socket, a TCP address, or both (TLS through GnuTLS
 * when a certificate and key are given). One thread per connection, so a handler may block (long-poll); the
 * number of connections is bounded. The whole request body is gathered (up to max_body, else 413) before the
 * handler runs once; the handler fills a gp_http_resp. Handlers run concurrently: they lock what they share.
 * Client: libcurl underneath; one call, one result; unix sockets through "unix:PATH" in place of a host.
 */
#ifndef GP_COMMON_HTTP_H
#define GP_COMMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/error.h"

typedef struct gp_http_server gp_http_server;

typedef struct gp_http_req {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* the URL path, without the query string, percent-decoded */
    const char *body;   /* NUL-terminated (the NUL is not counted in body_len); "" when none */
    size_t body_len;
    const char *content_type; /* the request's Content-Type, or NULL */
    const char *peer;         /* "unix" or the TCP peer's "address:port" ("[address]:port" for IPv6) */
    void *impl;               /* the server's (for gp_http_req_arg / gp_http_req_header) */
} gp_http_req;

typedef struct gp_http_resp {
    int status;               /* 0 until set: a handler that sets nothing answers 500 */
    const char *content_type; /* static string; NULL: "application/json" */
    char *body;               /* malloc'd; the server frees it */
    size_t len;
    char location[256]; /* optional Location header ("" for none) */
} gp_http_resp;

typedef void (*gp_http_handler)(void *ctx, const gp_http_req *req, gp_http_resp *resp);

typedef struct gp_http_opts {
    const char *unix_path; /* listen on this unix socket (created 0660; a stale socket file is replaced,
                              a live one is an error); NULL for none */
    const char *tcp_addr;  /* "HOST:PORT", ":PORT" (all interfaces) or "[::1]:PORT"; port 0 picks one;
                              NULL for none */
    const char *tls_cert;  /* PEM files: with both, TCP speaks HTTPS */
    const char *tls_key;
    size_t max_body;    /* 0: 1 MiB */
    unsigned max_conns; /* 0: 256 */
    unsigned timeout_s; /* idle connection timeout; 0: 120 */
} gp_http_opts;

/* Starts serving. At least one of unix_path and tcp_addr must be set. */
int gp_http_start(const gp_http_opts *o, gp_http_handler h, void *ctx, gp_http_server **out, gp_err *err);
/* Stops accepting, waits for running handlers, closes, removes the unix socket file. NULL is allowed. */
void gp_http_stop(gp_http_server *s);
/* The TCP port actually bound (useful with port 0), or 0 when not listening on TCP. */
int gp_http_port(const gp_http_server *s);

/* A query-string argument (percent-decoded), or NULL; "" for one given without a value ("?watch"). */
const char *gp_http_req_arg(const gp_http_req *r, const char *name);
/* A request header, or NULL. */
const char *gp_http_req_header(const gp_http_req *r, const char *name);

/* Response helpers. Each replaces the status, content type and body resp held; the problem helpers also clear
 * location (an error points nowhere), the others keep it. */
/* status + JSON body; takes the reference to `body` (json_decref'd); compact, with a trailing newline. */
void gp_http_json(gp_http_resp *r, int status, json_t *body);
/* An RFC 9457 problem: application/problem+json {"type":"about:blank","title":<reason phrase>,
 * "status":status,"detail":<formatted>}. */
void gp_http_problem(gp_http_resp *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A problem from a gp_err, whose message becomes the detail: GP_ERR_INVALID/RANGE -> 400, NOT_FOUND -> 404,
 * EXISTS/CONFLICT -> 409, NOMEM/IO/INTERNAL -> 500, UNSUPPORTED -> 501. */
void gp_http_problem_err(gp_http_resp *r, const gp_err *e);
/* The same, but GP_ERR_INVALID/RANGE -> 422: for a well-formed body whose content is refused (a field out of
 * range, an unknown QoS), as opposed to a malformed request. */
void gp_http_problem_unprocessable(gp_http_resp *r, const gp_err *e);
/* 405 naming the method, the path and what is allowed there. */
void gp_http_not_allowed(gp_http_resp *r, const gp_http_req *req, const char *allow);
/* Whether the request carries "Authorization: Bearer <token>" (compared in constant time). */
bool gp_http_bearer_ok(const gp_http_req *req, const char *token);
/* Any other body: takes ownership of `body` (malloc'd). */
void gp_http_body(gp_http_resp *r, int status, const char *content_type, char *body, size_t len);
/* The standard reason phrase of a status ("Not Found"); "Unknown" for others. */
const char *gp_http_reason(int status);

/* Parses a request body as one JSON object. On failure answers 400 (or 415 for a Content-Type other than
 * application/json) in *resp and returns NULL; the caller then just returns. */
json_t *gp_http_json_body(const gp_http_req *req, gp_http_resp *resp);

/* ---- client ---- */

typedef struct gp_http_result {
    long status; /* HTTP status, 0 when no response came */
    char *body;  /* malloc'd, NUL-terminated; NULL when no response */
    size_t len;
    char content_type[128];
} gp_http_result;

/* One request. url is "http://host:port/path", "https://...", or "unix:/path/to.sock:/path?query" for a unix
 * socket. body may be NULL (no body); content_type NULL means application/json when there is a body.
 * timeout_ms bounds the whole call (0: 30 s). Returns 0 when a response arrived (any status), -1 with *err
 * when none did (connection refused, timeout, TLS failure, ...). tls_ca: PEM file to trust (NULL: system);
 * insecure skips verification (tests only). */
typedef struct gp_http_client_opts {
    long timeout_ms;
    const char *tls_ca;
    bool insecure;
    const char *bearer; /* Authorization: Bearer <token>, or NULL */
} gp_http_client_opts;
int gp_http_call(const char *method, const char *url, const char *body, const char *content_type,
                 const gp_http_client_opts *o, gp_http_result *out, gp_err *err);
void gp_http_result_free(gp_http_result *r);

#endif

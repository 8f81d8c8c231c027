/* api.c - the controller's REST API /v1 (docs/openapi.yaml).
 *
 * Resources: pools, nodes (registration, heartbeats and the long-poll watch of a node's allocations for its
 * agent), gpus (read-only, from the nodes), workloads (create places them; explain says where they would go
 * or why they fit nowhere), quotas (per namespace), profiles (workload templates). Every request is validated
 * whole before anything changes; errors are RFC 9457 problem details. Over TCP, changes need the configured
 * bearer token (when one is set); the unix socket is trusted.
 */
#include "controller/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/json.h"

#define MAX_WAIT_S 60

/* Splits "/v1/a/b/c" into at most 5 segments (copied into buf). */
static int segments(const char *path, char *buf, size_t len, char **seg, int max)
{
    snprintf(buf, len, "%s", path);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, "/", &save); t && n < max; t = strtok_r(NULL, "/", &save))
        seg[n++] = t;
    return n;
}

static bool is(const gp_http_req *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* A wait bound from ?timeout= (seconds, 0..60); def when absent. -1 on a bad value (answered). */
static int wait_arg(const gp_http_req *req, gp_http_resp *resp, int def)
{
    const char *t = gp_http_req_arg(req, "timeout");
    if (t == NULL)
        return def;
    char *end;
    long v = strtol(t, &end, 10);
    if (*end != '\0' || end == t || v < 0 || v > MAX_WAIT_S) {
        gp_http_problem(resp, 400, "timeout=\"%s\" must be a whole number of seconds from 0 to %d", t,
                        MAX_WAIT_S);
        return -1;
    }
    return (int)v;
}

/* Waits (mu held) until `done` says so, the deadline passes or the controller stops. */
static void wait_until(gp_controller *c, uint64_t deadline, bool (*done)(gp_controller *, void *), void *arg)
{
    while (!done(c, arg) && !atomic_load(&c->stop) && gp_now_ns() < deadline) {
        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                              .tv_nsec = (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&c->changed, &c->mu, &ts);
    }
}

/* ---- pools, quotas, profiles ------------------------------------------------------------------------ */

static void pools(gp_controller *c, const gp_http_req *req, gp_http_resp *resp, char **seg, int n)
{
    gp_err err = {0};
    json_t *out = NULL;
    if (n == 2) {
        if (is(req, "GET")) {
            json_t *arr = json_array();
            pthread_mutex_lock(&c->mu);
            for (int i = 0; i < c->npools; i++)
                json_array_append_new(arr, cn_pool_json(c, &c->pools[i]));
            pthread_mutex_unlock(&c->mu);
            gp_http_json(resp, 200, json_pack("{s:o}", "pools", arr));
            return;
        }
        if (!is(req, "POST")) {
            gp_http_not_allowed(resp, req, "GET, POST");
            return;
        }
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        int rc = cn_pool_put(c, body, true, NULL, &out, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0) {
            gp_http_problem_err(resp, &err);
            return;
        }
        snprintf(resp->location, sizeof resp->location, "/v1/pools/%s",
                 json_string_value(json_object_get(out, "name")));
        gp_http_json(resp, 201, out);
        return;
    }
    const char *name = seg[2];
    if (is(req, "GET")) {
        pthread_mutex_lock(&c->mu);
        int i = cn_pool_find(c, name);
        out = i >= 0 ? cn_pool_json(c, &c->pools[i]) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (out == NULL)
            gp_http_problem(resp, 404, "no pool \"%s\"", name);
        else
            gp_http_json(resp, 200, out);
        return;
    }
    if (is(req, "PUT")) {
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        int rc = cn_pool_put(c, body, false, name, &out, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_json(resp, 200, out);
        return;
    }
    if (is(req, "DELETE")) {
        pthread_mutex_lock(&c->mu);
        int rc = cn_pool_delete(c, name, &err);
        pthread_mutex_unlock(&c->mu);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_body(resp, 204, "text/plain", NULL, 0);
        return;
    }
    gp_http_not_allowed(resp, req, "GET, PUT, DELETE");
}

static void quotas(gp_controller *c, const gp_http_req *req, gp_http_resp *resp, char **seg, int n)
{
    gp_err err = {0};
    json_t *out = NULL;
    if (n == 2) {
        if (!is(req, "GET")) {
            gp_http_not_allowed(resp, req, "GET (PUT /v1/quotas/{namespace} sets one)");
            return;
        }
        json_t *arr = json_array();
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < c->nquotas; i++)
            json_array_append_new(arr, cn_quota_json(c, &c->quotas[i]));
        pthread_mutex_unlock(&c->mu);
        gp_http_json(resp, 200, json_pack("{s:o}", "quotas", arr));
        return;
    }
    const char *ns = seg[2];
    if (is(req, "GET")) {
        pthread_mutex_lock(&c->mu);
        int i = cn_quota_find(c, ns);
        out = i >= 0 ? cn_quota_json(c, &c->quotas[i]) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (out == NULL)
            gp_http_problem(resp, 404, "no quota for namespace \"%s\"", ns);
        else
            gp_http_json(resp, 200, out);
    } else if (is(req, "PUT")) {
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        int rc = cn_quota_put(c, ns, body, &out, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_json(resp, 200, out);
    } else if (is(req, "DELETE")) {
        pthread_mutex_lock(&c->mu);
        int rc = cn_quota_delete(c, ns, &err);
        pthread_mutex_unlock(&c->mu);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_body(resp, 204, "text/plain", NULL, 0);
    } else {
        gp_http_not_allowed(resp, req, "GET, PUT, DELETE");
    }
}

static void profiles(gp_controller *c, const gp_http_req *req, gp_http_resp *resp, char **seg, int n)
{
    gp_err err = {0};
    json_t *out = NULL;
    if (n == 2) {
        if (is(req, "GET")) {
            json_t *arr = json_array();
            pthread_mutex_lock(&c->mu);
            const char *k;
            json_t *v;
            json_object_foreach(c->profiles, k, v) json_array_append(arr, v);
            pthread_mutex_unlock(&c->mu);
            gp_http_json(resp, 200, json_pack("{s:o}", "profiles", arr));
            return;
        }
        if (!is(req, "POST")) {
            gp_http_not_allowed(resp, req, "GET, POST");
            return;
        }
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        int rc = cn_profile_put(c, body, &out, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_json(resp, 201, out);
        return;
    }
    if (is(req, "GET")) {
        pthread_mutex_lock(&c->mu);
        json_t *p = json_object_get(c->profiles, seg[2]);
        out = p ? json_deep_copy(p) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (out == NULL)
            gp_http_problem(resp, 404, "no profile \"%s\"", seg[2]);
        else
            gp_http_json(resp, 200, out);
    } else if (is(req, "DELETE")) {
        pthread_mutex_lock(&c->mu);
        int rc = cn_profile_delete(c, seg[2], &err);
        pthread_mutex_unlock(&c->mu);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_body(resp, 204, "text/plain", NULL, 0);
    } else {
        gp_http_not_allowed(resp, req, "GET, DELETE");
    }
}

/* ---- nodes ------------------------------------------------------------------------------------------ */

typedef struct node_wait {
    const char *name;
    uint64_t since;
} node_wait;

static bool node_changed(gp_controller *c, void *arg)
{
    node_wait *w = arg;
    int i = cn_node_find(c, w->name);
    return i < 0 || c->nodes[i].alloc_rev > w->since;
}

static void nodes(gp_controller *c, const gp_http_req *req, gp_http_resp *resp, char **seg, int n)
{
    gp_err err = {0};
    json_t *out = NULL;
    if (n == 2) {
        if (!is(req, "GET")) {
            gp_http_not_allowed(resp, req, "GET (agents register with POST /v1/nodes/{name}/register)");
            return;
        }
        json_t *arr = json_array();
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < c->nnodes; i++)
            json_array_append_new(arr, cn_node_json(c, &c->nodes[i]));
        pthread_mutex_unlock(&c->mu);
        gp_http_json(resp, 200, json_pack("{s:o}", "nodes", arr));
        return;
    }
    const char *name = seg[2];
    if (n == 3) {
        if (is(req, "GET")) {
            pthread_mutex_lock(&c->mu);
            int i = cn_node_find(c, name);
            out = i >= 0 ? cn_node_json(c, &c->nodes[i]) : NULL;
            pthread_mutex_unlock(&c->mu);
            if (out == NULL)
                gp_http_problem(resp, 404, "no node \"%s\"", name);
            else
                gp_http_json(resp, 200, out);
        } else if (is(req, "DELETE")) {
            pthread_mutex_lock(&c->mu);
            int rc = cn_node_delete(c, name, &err);
            pthread_mutex_unlock(&c->mu);
            if (rc < 0)
                gp_http_problem_err(resp, &err);
            else
                gp_http_body(resp, 204, "text/plain", NULL, 0);
        } else {
            gp_http_not_allowed(resp, req, "GET, DELETE");
        }
        return;
    }
    const char *what = seg[3];
    if (strcmp(what, "register") == 0 || strcmp(what, "heartbeat") == 0) {
        if (!is(req, "POST")) {
            gp_http_not_allowed(resp, req, "POST");
            return;
        }
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        int rc = what[0] == 'r' ? cn_node_register(c, name, body, &out, &err)
                                : cn_node_heartbeat(c, name, body, &out, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else
            gp_http_json(resp, 200, out);
        return;
    }
    if (strcmp(what, "allocations") == 0) {
        if (!is(req, "GET")) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        const char *since_s = gp_http_req_arg(req, "since");
        char *end = NULL;
        unsigned long long since = since_s ? strtoull(since_s, &end, 10) : 0;
        if (since_s && (*end != '\0' || end == since_s)) {
            gp_http_problem(resp, 400, "since=\"%s\" must be a revision number", since_s);
            return;
        }
        int timeout = wait_arg(req, resp, 0);
        if (timeout < 0)
            return;
        pthread_mutex_lock(&c->mu);
        if (cn_node_find(c, name) < 0) {
            pthread_mutex_unlock(&c->mu);
            gp_http_problem(resp, 404, "node %s is not registered", name);
            return;
        }
        node_wait w = {name, since};
        if (since_s && timeout > 0)
            wait_until(c, gp_now_ns() + (uint64_t)timeout * 1000000000ull, node_changed, &w);
        int i = cn_node_find(c, name);
        if (i < 0) {
            pthread_mutex_unlock(&c->mu);
            gp_http_problem(resp, 404, "node %s was deleted", name);
            return;
        }
        out = json_pack("{s:s, s:I, s:o}", "node", name, "revision", (json_int_t)c->nodes[i].alloc_rev,
                        "allocations", cn_node_allocations(c, &c->nodes[i]));
        pthread_mutex_unlock(&c->mu);
        gp_http_json(resp, 200, out);
        return;
    }
    gp_http_problem(resp, 404, "no such resource %s", req->path);
}

/* ---- workloads -------------------------------------------------------------------------------------- */

typedef struct work_wait {
    const char *ns, *name;
} work_wait;

static bool work_ready(gp_controller *c, void *arg)
{
    work_wait *w = arg;
    cn_workload *wl = cn_work_find(c, w->ns, w->name);
    if (wl == NULL)
        return true;
    json_t *o = cn_work_json(c, wl);
    bool ready = json_is_true(json_object_get(json_object_get(o, "status"), "ready"));
    json_decref(o);
    return ready;
}

static void workloads(gp_controller *c, const gp_http_req *req, gp_http_resp *resp, char **seg, int n)
{
    gp_err err = {0};
    json_t *out = NULL;
    if (n == 2) {
        if (is(req, "GET")) {
            const char *ns = gp_http_req_arg(req, "namespace"), *phase = gp_http_req_arg(req, "phase");
            json_t *arr = json_array();
            pthread_mutex_lock(&c->mu);
            for (int i = 0; i < c->nwork; i++) {
                json_t *spec = json_object_get(c->work[i]->doc, "spec"),
                       *st = json_object_get(c->work[i]->doc, "status");
                if (ns && strcmp(ns, json_string_value(json_object_get(spec, "namespace"))) != 0)
                    continue;
                if (phase && strcasecmp(phase, json_string_value(json_object_get(st, "phase"))) != 0)
                    continue;
                json_array_append_new(arr, cn_work_json(c, c->work[i]));
            }
            pthread_mutex_unlock(&c->mu);
            gp_http_json(resp, 200, json_pack("{s:o}", "workloads", arr));
            return;
        }
        if (!is(req, "POST")) {
            gp_http_not_allowed(resp, req, "GET, POST");
            return;
        }
        json_t *body = gp_http_json_body(req, resp);
        if (body == NULL)
            return;
        bool created = false;
        pthread_mutex_lock(&c->mu);
        int rc = cn_work_create(c, body, &out, &created, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0) {
            if (err.code == GP_ERR_RANGE) /* over a quota */
                gp_http_problem(resp, 403, "%s", err.msg);
            else
                gp_http_problem_err(resp, &err);
            return;
        }
        json_t *spec = json_object_get(out, "spec");
        snprintf(resp->location, sizeof resp->location, "/v1/workloads/%s/%s",
                 json_string_value(json_object_get(spec, "namespace")),
                 json_string_value(json_object_get(spec, "name")));
        gp_http_json(resp, created ? 201 : 200, out);
        return;
    }
    if (n < 4) {
        gp_http_problem(resp, 404, "workloads are /v1/workloads/{namespace}/{name}");
        return;
    }
    const char *ns = seg[2], *name = seg[3];
    if (n == 5 && strcmp(seg[4], "explain") == 0) {
        pthread_mutex_lock(&c->mu);
        cn_workload *w = cn_work_find(c, ns, name);
        out = w ? cn_work_explain(c, w) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (out == NULL)
            gp_http_problem(resp, 404, "no workload %s/%s", ns, name);
        else
            gp_http_json(resp, 200, out);
        return;
    }
    if (n != 4) {
        gp_http_problem(resp, 404, "no such resource %s", req->path);
        return;
    }
    if (is(req, "GET")) {
        const char *wait = gp_http_req_arg(req, "wait");
        if (wait && strcmp(wait, "ready") != 0) {
            gp_http_problem(resp, 400, "wait=\"%s\": the only condition is wait=ready", wait);
            return;
        }
        int timeout = wait_arg(req, resp, 30);
        if (timeout < 0)
            return;
        pthread_mutex_lock(&c->mu);
        work_wait ww = {ns, name};
        if (wait)
            wait_until(c, gp_now_ns() + (uint64_t)timeout * 1000000000ull, work_ready, &ww);
        cn_workload *w = cn_work_find(c, ns, name);
        out = w ? cn_work_json(c, w) : NULL;
        pthread_mutex_unlock(&c->mu);
        if (out == NULL)
            gp_http_problem(resp, 404, "no workload %s/%s", ns, name);
        else
            gp_http_json(resp, 200, out);
        return;
    }
    if (is(req, "PATCH") || is(req, "DELETE")) {
        json_t *body = NULL;
        if (is(req, "PATCH") && (body = gp_http_json_body(req, resp)) == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        cn_workload *w = cn_work_find(c, ns, name);
        int rc = -1;
        if (w == NULL)
            gp_err_set(&err, GP_ERR_NOT_FOUND, "no workload %s/%s", ns, name);
        else if (body)
            rc = cn_work_patch(c, w, body, &out, &err);
        else
            rc = cn_work_delete(c, w, &err);
        pthread_mutex_unlock(&c->mu);
        json_decref(body);
        if (rc < 0)
            gp_http_problem_err(resp, &err);
        else if (out)
            gp_http_json(resp, 200, out);
        else
            gp_http_body(resp, 204, "text/plain", NULL, 0);
        return;
    }
    gp_http_not_allowed(resp, req, "GET, PATCH, DELETE");
}

/* ---- routing ---------------------------------------------------------------------------------------- */

static char *metrics(gp_controller *c, size_t *len)
{
    int phases[3] = {0}, lost = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nwork; i++) {
        const char *p =
            json_string_value(json_object_get(json_object_get(c->work[i]->doc, "status"), "phase"));
        phases[strcmp(p, "Allocated") == 0 ? 0 : strcmp(p, "Pending") == 0 ? 1 : 2]++;
    }
    for (int i = 0; i < c->nnodes; i++)
        lost += c->nodes[i].lost;
    char *text = NULL;
    int n = asprintf(&text,
                     "# HELP gpupool_controller_workloads Workloads by phase.\n"
                     "# TYPE gpupool_controller_workloads gauge\n"
                     "gpupool_controller_workloads{phase=\"Allocated\"} %d\n"
                     "gpupool_controller_workloads{phase=\"Pending\"} %d\n"
                     "gpupool_controller_workloads{phase=\"Lost\"} %d\n"
                     "# HELP gpupool_controller_nodes Nodes by state.\n"
                     "# TYPE gpupool_controller_nodes gauge\n"
                     "gpupool_controller_nodes{state=\"Ready\"} %d\n"
                     "gpupool_controller_nodes{state=\"Lost\"} %d\n"
                     "# HELP gpupool_controller_revision The store's revision.\n"
                     "# TYPE gpupool_controller_revision counter\n"
                     "gpupool_controller_revision %llu\n",
                     phases[0], phases[1], phases[2], c->nnodes - lost, lost,
                     (unsigned long long)gp_store_revision(c->store));
    pthread_mutex_unlock(&c->mu);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return text;
}

static bool allowed(const gp_controller *c, const gp_http_req *req, gp_http_resp *resp)
{
    if (strcmp(req->peer, "unix") == 0 || c->cfg.token[0] == '\0' || is(req, "GET") || is(req, "HEAD"))
        return true;
    if (!gp_http_bearer_ok(req, c->cfg.token)) {
        gp_http_problem(
            resp, 401, "this change needs \"Authorization: Bearer <token>\" with the controller's api.token");
        return false;
    }
    return true;
}

void cn_api_handle(void *ctx, const gp_http_req *req, gp_http_resp *resp)
{
    gp_controller *c = ctx;
    if (!allowed(c, req, resp))
        return;
    if (strcmp(req->path, "/healthz") == 0) {
        pthread_mutex_lock(&c->mu);
        json_t *o =
            json_pack("{s:s, s:s, s:I, s:i, s:i}", "status", "ok", "version", GP_VERSION, "revision",
                      (json_int_t)gp_store_revision(c->store), "nodes", c->nnodes, "workloads", c->nwork);
        pthread_mutex_unlock(&c->mu);
        gp_http_json(resp, 200, o);
        return;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        size_t len = 0;
        char *text = metrics(c, &len);
        if (text == NULL)
            gp_http_problem(resp, 500, "out of memory");
        else
            gp_http_body(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        return;
    }
    char buf[512], *seg[6];
    int n = segments(req->path, buf, sizeof buf, seg, 6);
    if (n < 2 || strcmp(seg[0], "v1") != 0 || n > 5) {
        gp_http_problem(resp, 404,
                        "no such resource %s (the API is under /v1: pools, nodes, gpus, workloads, "
                        "quotas, profiles)",
                        req->path);
        return;
    }
    const char *kind = seg[1];
    if (strcmp(kind, "pools") == 0 && n <= 3)
        pools(c, req, resp, seg, n);
    else if (strcmp(kind, "quotas") == 0 && n <= 3)
        quotas(c, req, resp, seg, n);
    else if (strcmp(kind, "profiles") == 0 && n <= 3)
        profiles(c, req, resp, seg, n);
    else if (strcmp(kind, "nodes") == 0 && n <= 4)
        nodes(c, req, resp, seg, n);
    else if (strcmp(kind, "workloads") == 0)
        workloads(c, req, resp, seg, n);
    else if (strcmp(kind, "gpus") == 0 && n <= 3) {
        if (!is(req, "GET")) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        pthread_mutex_lock(&c->mu);
        json_t *arr = cn_gpus_json(c, gp_http_req_arg(req, "node"));
        pthread_mutex_unlock(&c->mu);
        if (n == 3) {
            json_t *g, *found = NULL;
            size_t i;
            json_array_foreach(arr, i, g) if (strcmp(json_string_value(json_object_get(g, "uuid")), seg[2]) ==
                                              0) found = g;
            if (found) {
                json_incref(found);
                gp_http_json(resp, 200, found);
            } else {
                gp_http_problem(resp, 404, "no GPU \"%s\"", seg[2]);
            }
            json_decref(arr);
            return;
        }
        gp_http_json(resp, 200, json_pack("{s:o}", "gpus", arr));
    } else {
        gp_http_problem(resp, 404, "no such resource %s", req->path);
    }
}

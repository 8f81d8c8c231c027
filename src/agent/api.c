/* api.c - the agent's local API (docs/agent.md): HTTP+JSON on a unix socket, and on TCP when configured.
 *
 *   GET /healthz                       liveness and a summary
 *   GET /metrics                       Prometheus text (metrics.c)
 *   GET /v1/gpus, /v1/gpus/{index|uuid}
 *   GET /v1/slots, POST /v1/slots, GET|PATCH|DELETE /v1/slots/{id}
 *
 * Every field of a request is checked (unknown fields too) before anything changes; errors are RFC 9457
 * problem details with a 4xx status that says what to fix. The unix socket is trusted (its file mode is the
 * access control); over TCP, reads are open and changes need the configured bearer token - without one,
 * TCP is read-only.
 */
#include "agent/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/quantity.h"

/* ---- JSON views ------------------------------------------------------------------------------------ */

static json_t *gpu_json(const gp_agent *a, const ag_gpu *g)
{
    json_t *slots = json_array();
    double req = 0;
    uint64_t vram = 0;
    for (size_t i = 0; i < a->nsets; i++)
        for (int k = 0; k < a->sets[i]->n; k++)
            if (a->sets[i]->part[k].gpu == g - a->gpus) {
                json_array_append_new(slots, json_string(a->sets[i]->id));
                req += atomic_load(&a->sets[i]->part[k].h.s->compute_request_ppm) / 1e4;
                vram += atomic_load(&a->sets[i]->part[k].h.s->vram_limit);
            }
    json_t *health =
        json_pack("{s:b, s:s, s:I, s:i, s:{s:I, s:I}}", "healthy", g->healthy, "reason", g->health,
                  "xid_errors", (json_int_t)g->xid_count, "last_xid", (int)g->last_xid, "ecc", "corrected",
                  (json_int_t)g->ecc_sbe, "uncorrected", (json_int_t)g->ecc_dbe);
    return json_pack("{s:i, s:s, s:s, s:s, s:s?, s:f, s:{s:I, s:I, s:I}, s:{s:i, s:i}, s:i, s:f, s:o, s:i, "
                     "s:o, s:{s:f, s:I}}",
                     "index", g->index, "uuid", g->uuid, "name", g->name, "bus_id", g->bus_id, "model",
                     g->model ? g->model->key : NULL, "tflops", g->tflops, "memory", "total",
                     (json_int_t)g->mem_total, "used", (json_int_t)g->mem_used, "free",
                     (json_int_t)(g->mem_total > g->mem_used ? g->mem_total - g->mem_used : 0), "utilization",
                     "gpu", (int)g->util_gpu, "memory", (int)g->util_mem, "temperature_c", (int)g->temp_c,
                     "power_w", g->power_w, "health", health, "processes", (int)g->nprocs, "slots", slots,
                     "committed", "compute_request_percent", req, "vram_limit", (json_int_t)vram);
}

json_t *ag_set_env(const gp_agent *a, const ag_set *s)
{
    json_t *env = json_pack("{s:s, s:s}", "GPUPOOL_SLOT_DIR", s->dir, "LD_PRELOAD", a->cfg.vgpu_lib);
    if (a->nvml.simulated) {
        /* the workload must see the same simulated host as the agent */
        char dir[512];
        if (gp_sim_lib_dir(dir, sizeof dir))
            json_object_set_new(env, "LD_LIBRARY_PATH", json_string(dir));
        static const char *const pass[] = {"GPUPOOL_SIM_GPUS", "GPUPOOL_SIM_STATE", "GPUPOOL_SIM_DIR",
                                           "GPUPOOL_SIM_HOST_ID", "GPUPOOL_SIM_KERNEL_PATH"};
        for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++)
            if (getenv(pass[i]))
                json_object_set_new(env, pass[i], json_string(getenv(pass[i])));
    }
    return env;
}

static json_t *set_json(const gp_agent *a, ag_set *s)
{
    json_t *parts = json_array();
    const gp_slot *first = s->part[0].h.s;
    for (int k = 0; k < s->n; k++) {
        ag_part *p = &s->part[k];
        gp_slot *sl = p->h.s;
        const ag_gpu *g = p->gpu >= 0 ? &a->gpus[p->gpu] : NULL;
        json_t *procs = json_array();
        gp_proctab t = gp_slot_proctab(&p->h);
        gp_proctab_reap(&t, -1);
        for (int e = 0; e < GP_SLOT_MAX_PROCS; e++)
            if (gp_proctab_alive(&t, e, -1))
                json_array_append_new(
                    procs,
                    json_pack("{s:i, s:s, s:I, s:I}", "pid", (int)atomic_load(&sl->proc[e].pid), "name",
                              sl->proc[e].name, "vram_used", (json_int_t)atomic_load(&sl->proc[e].vram_used),
                              "vram_peak", (json_int_t)atomic_load(&sl->proc[e].vram_peak)));
        double tfl = g ? g->tflops : sl->gpu_tflops;
        double req = atomic_load(&sl->compute_request_ppm) / 1e4,
               lim = atomic_load(&sl->compute_limit_ppm) / 1e4;
        double eff = gp_slot_share_ppm(sl) / 1e4, used = p->used_avg * 100;
        json_array_append_new(
            parts,
            json_pack(
                "{s:i, s:i, s:s, s:{s:I, s:I}, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}, s:f, s:I, s:I, "
                "s:o}",
                "index", (int)sl->index, "gpu", g ? g->index : -1, "uuid", sl->gpu_uuid, "vram", "limit",
                (json_int_t)atomic_load(&sl->vram_limit), "used", (json_int_t)gp_slot_vram_used(sl),
                "compute", "request_percent", req, "limit_percent", lim, "effective_percent", eff,
                "used_percent", used, "request_tflops", req / 100 * tfl, "limit_tflops", lim / 100 * tfl,
                "effective_tflops", eff / 100 * tfl, "used_tflops", used / 100 * tfl, "throttled_seconds",
                atomic_load(&sl->throttled_ns) / 1e9, "launches", (json_int_t)atomic_load(&sl->launches),
                "oom_refusals", (json_int_t)atomic_load(&sl->oom_refusals), "processes", procs));
    }
    bool missing = false;
    for (int k = 0; k < s->n; k++)
        missing |= s->part[k].gpu < 0;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:b, s:s, s:o, s:o}", "id", s->id, "workload",
                          first->workload, "namespace", first->namespace_, "qos",
                          gp_qos_name(atomic_load(&first->qos)), "frozen", atomic_load(&first->frozen) != 0,
                          "state", missing ? "gpu-missing" : "ready", "managed", s->managed, "dir", s->dir,
                          "env", ag_set_env(a, s), "gpus", parts);
    json_t *remote = ag_set_remote_env(a, s);
    if (o && remote)
        json_object_set_new(o, "remote_env", remote);
    else
        json_decref(remote);
    return o;
}

/* ---- requests --------------------------------------------------------------------------------------- */

static const char *const qos_names[] = {"low", "medium", "high", "critical", NULL};

/* The four compute fields; -1 when absent. tflops and percent of the same side are exclusive. */
static int read_compute(json_t *body, double *req_pct, double *lim_pct, double *req_tf, double *lim_tf,
                        gp_err *err)
{
    *req_pct = *lim_pct = *req_tf = *lim_tf = -1;
    if (gp_json_num(body, "percent_request", false, 0, 100, req_pct, err) < 0 ||
        gp_json_num(body, "percent_limit", false, 0, 100, lim_pct, err) < 0 ||
        gp_json_num(body, "tflops_request", false, 0, 1e6, req_tf, err) < 0 ||
        gp_json_num(body, "tflops_limit", false, 0, 1e6, lim_tf, err) < 0)
        return -1;
    if (*req_pct >= 0 && *req_tf >= 0)
        return gp_err_set(err, GP_ERR_INVALID,
                          "give the compute request as tflops_request or percent_request, not both");
    if (*lim_pct >= 0 && *lim_tf >= 0)
        return gp_err_set(err, GP_ERR_INVALID,
                          "give the compute limit as tflops_limit or percent_limit, not both");
    return 0;
}

static void create_set(gp_agent *a, const gp_http_req *req, gp_http_resp *resp)
{
    json_t *body = gp_http_json_body(req, resp);
    if (body == NULL)
        return;
    static const char *const known[] = {"id",
                                        "workload",
                                        "namespace",
                                        "gpus",
                                        "vram",
                                        "percent_request",
                                        "percent_limit",
                                        "tflops_request",
                                        "tflops_limit",
                                        "qos",
                                        NULL};
    gp_err err = {0};
    ag_set_spec sp = {.qos = -1};
    const char *id = NULL, *ns = "default";
    int qos = -1;
    json_t *gpus = json_object_get(body, "gpus");
    if (gp_json_only(body, known, &err) < 0 || gp_json_str(body, "id", false, 63, &id, &err) < 0 ||
        gp_json_str(body, "workload", true, 127, &sp.workload, &err) < 0 ||
        gp_json_str(body, "namespace", false, 63, &ns, &err) < 0 ||
        gp_json_bytes(body, "vram", true, &sp.vram, &err) < 0 ||
        read_compute(body, &sp.req_pct, &sp.lim_pct, &sp.req_tflops, &sp.lim_tflops, &err) < 0 ||
        gp_json_enum(body, "qos", false, qos_names, &qos, &err) < 0) {
        gp_http_problem_err(resp, &err);
        json_decref(body);
        return;
    }
    sp.namespace_ = ns;
    sp.qos = qos;
    if (id)
        snprintf(sp.id, sizeof sp.id, "%s", id);
    if (sp.workload[0] == '\0') {
        gp_http_problem(resp, 400, "field \"workload\" must not be empty");
        json_decref(body);
        return;
    }
    if (!json_is_array(gpus) || json_array_size(gpus) == 0 || json_array_size(gpus) > GP_SLOT_MAX_GPUS) {
        gp_http_problem(resp, 400, "field \"gpus\" must be a list of 1 to %d GPUs (NVML indices or UUIDs)",
                        GP_SLOT_MAX_GPUS);
        json_decref(body);
        return;
    }
    pthread_mutex_lock(&a->mu);
    sp.ngpus = (int)json_array_size(gpus);
    for (int i = 0; i < sp.ngpus; i++) {
        json_t *v = json_array_get(gpus, (size_t)i);
        char key[100];
        if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < 1000000)
            snprintf(key, sizeof key, "%lld", (long long)json_integer_value(v));
        else if (json_is_string(v) && json_string_length(v) < sizeof key)
            snprintf(key, sizeof key, "%s", json_string_value(v));
        else
            key[0] = '\0';
        sp.gpu[i] = ag_gpu_find(a, key);
        if (sp.gpu[i] < 0) {
            pthread_mutex_unlock(&a->mu);
            gp_http_problem(resp, 422, "gpus[%d]: no GPU \"%s\" on this host (GET /v1/gpus lists them)", i,
                            key[0] ? key : "(not an index or a UUID)");
            json_decref(body);
            return;
        }
    }
    ag_set *s;
    if (ag_set_create(a, &sp, &s, &err) < 0) {
        pthread_mutex_unlock(&a->mu);
        if (err.code == GP_ERR_RANGE)
            err.code = GP_ERR_INVALID;
        gp_http_problem_err(resp, &err);
        json_decref(body);
        return;
    }
    json_t *out = set_json(a, s);
    snprintf(resp->location, sizeof resp->location, "/v1/slots/%s", s->id);
    pthread_mutex_unlock(&a->mu);
    json_decref(body);
    gp_http_json(resp, 201, out);
}

static void update_set(gp_agent *a, const char *id, const gp_http_req *req, gp_http_resp *resp)
{
    json_t *body = gp_http_json_body(req, resp);
    if (body == NULL)
        return;
    static const char *const known[] = {
        "vram", "percent_request", "percent_limit", "tflops_request", "tflops_limit", "qos", "frozen", NULL};
    gp_err err = {0};
    ag_set_change c = {.qos = -1, .frozen = -1};
    bool frozen = false;
    if (gp_json_only(body, known, &err) < 0 || gp_json_bytes(body, "vram", false, &c.vram, &err) < 0 ||
        read_compute(body, &c.req_pct, &c.lim_pct, &c.req_tflops, &c.lim_tflops, &err) < 0 ||
        gp_json_enum(body, "qos", false, qos_names, &c.qos, &err) < 0 ||
        gp_json_bool(body, "frozen", false, &frozen, &err) < 0) {
        gp_http_problem_err(resp, &err);
        json_decref(body);
        return;
    }
    c.has_vram = json_object_get(body, "vram") != NULL;
    if (json_object_get(body, "frozen"))
        c.frozen = frozen;
    json_decref(body);
    pthread_mutex_lock(&a->mu);
    ag_set *s = ag_set_find(a, id);
    if (s == NULL) {
        pthread_mutex_unlock(&a->mu);
        gp_http_problem(resp, 404, "no slot set \"%s\"", id);
        return;
    }
    if (s->managed) {
        pthread_mutex_unlock(&a->mu);
        gp_http_problem(resp, 409, "slot set %s is managed by the controller: change its workload there", id);
        return;
    }
    if (ag_set_update(a, s, &c, &err) < 0) {
        pthread_mutex_unlock(&a->mu);
        if (err.code == GP_ERR_RANGE)
            err.code = GP_ERR_INVALID;
        gp_http_problem_err(resp, &err);
        return;
    }
    json_t *out = set_json(a, s);
    pthread_mutex_unlock(&a->mu);
    gp_http_json(resp, 200, out);
}

static void delete_set(gp_agent *a, const char *id, const gp_http_req *req, gp_http_resp *resp)
{
    const char *f = gp_http_req_arg(req, "force");
    bool force = f && (strcmp(f, "true") == 0 || strcmp(f, "1") == 0);
    if (f && !force && strcmp(f, "false") != 0 && strcmp(f, "0") != 0) {
        gp_http_problem(resp, 400, "query argument force=\"%s\" must be true or false", f);
        return;
    }
    gp_err err = {0};
    pthread_mutex_lock(&a->mu);
    ag_set *s = ag_set_find(a, id);
    if (s == NULL) {
        pthread_mutex_unlock(&a->mu);
        gp_http_problem(resp, 404, "no slot set \"%s\"", id);
        return;
    }
    if (s->managed) {
        pthread_mutex_unlock(&a->mu);
        gp_http_problem(resp, 409, "slot set %s is managed by the controller: delete its workload there", id);
        return;
    }
    int rc = ag_set_remove(a, s, force, &err);
    pthread_mutex_unlock(&a->mu);
    if (rc < 0) {
        gp_http_problem_err(resp, &err);
        return;
    }
    gp_http_body(resp, 204, "text/plain", NULL, 0);
}

static int by_id(const void *x, const void *y)
{
    return strcmp((*(ag_set *const *)x)->id, (*(ag_set *const *)y)->id);
}

/* ---- routing ---------------------------------------------------------------------------------------- */

static bool allowed(const gp_agent *a, const gp_http_req *req, gp_http_resp *resp)
{
    if (strcmp(req->peer, "unix") == 0 || strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
        return true;
    if (a->cfg.token[0] == '\0') {
        gp_http_problem(resp, 403,
                        "the agent's TCP API is read-only; change things through its unix socket, or "
                        "configure api.token");
        return false;
    }
    if (!gp_http_bearer_ok(req, a->cfg.token)) {
        gp_http_problem(resp, 401,
                        "this change needs \"Authorization: Bearer <token>\" with the agent's api.token");
        return false;
    }
    return true;
}

void ag_api_handle(void *ctx, const gp_http_req *req, gp_http_resp *resp)
{
    gp_agent *a = ctx;
    const char *p = req->path;
    bool get = strcmp(req->method, "GET") == 0;
    if (!allowed(a, req, resp))
        return;
    if (strcmp(p, "/metrics") == 0) {
        if (!get) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        size_t len = 0;
        char *text = ag_metrics(a, &len);
        if (text == NULL) {
            gp_http_problem(resp, 500, "out of memory building the metrics");
            return;
        }
        {
            gp_http_body(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
            return;
        }
    }
    if (strcmp(p, "/healthz") == 0) {
        if (!get) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        pthread_mutex_lock(&a->mu);
        int healthy = 0;
        for (int i = 0; i < a->ngpus; i++)
            healthy += a->gpus[i].healthy;
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:i, s:i, s:I}", "status", "ok", "node", a->cfg.node_name,
                              "version", GP_VERSION, "simulated", a->nvml.simulated, "gpus", a->ngpus,
                              "healthy_gpus", healthy, "slot_sets", (json_int_t)a->nsets);
        json_t *worker = ag_worker_json(a);
        if (o && worker)
            json_object_set_new(o, "worker", worker);
        else
            json_decref(worker);
        pthread_mutex_unlock(&a->mu);
        {
            gp_http_json(resp, 200, o);
            return;
        }
    }
    if (strcmp(p, "/v1/gpus") == 0) {
        if (!get) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        json_t *arr = json_array();
        pthread_mutex_lock(&a->mu);
        for (int i = 0; i < a->ngpus; i++)
            json_array_append_new(arr, gpu_json(a, &a->gpus[i]));
        pthread_mutex_unlock(&a->mu);
        {
            gp_http_json(resp, 200, json_pack("{s:o}", "gpus", arr));
            return;
        }
    }
    if (strncmp(p, "/v1/gpus/", 9) == 0) {
        if (!get) {
            gp_http_not_allowed(resp, req, "GET");
            return;
        }
        pthread_mutex_lock(&a->mu);
        int gi = ag_gpu_find(a, p + 9);
        json_t *o = gi >= 0 ? gpu_json(a, &a->gpus[gi]) : NULL;
        pthread_mutex_unlock(&a->mu);
        if (o == NULL) {
            gp_http_problem(resp, 404, "no GPU \"%s\" on this host", p + 9);
            return;
        }
        {
            gp_http_json(resp, 200, o);
            return;
        }
    }
    if (strcmp(p, "/v1/slots") == 0) {
        if (strcmp(req->method, "POST") == 0) {
            create_set(a, req, resp);
            return;
        }
        if (!get) {
            gp_http_not_allowed(resp, req, "GET, POST");
            return;
        }
        json_t *arr = json_array();
        pthread_mutex_lock(&a->mu);
        ag_set **sorted = malloc((a->nsets ? a->nsets : 1) * sizeof *sorted);
        if (sorted) {
            if (a->nsets)
                memcpy(sorted, a->sets, a->nsets * sizeof *sorted);
            qsort(sorted, a->nsets, sizeof *sorted, by_id);
            for (size_t i = 0; i < a->nsets; i++)
                json_array_append_new(arr, set_json(a, sorted[i]));
            free(sorted);
        }
        pthread_mutex_unlock(&a->mu);
        {
            gp_http_json(resp, 200, json_pack("{s:o}", "slots", arr));
            return;
        }
    }
    if (strncmp(p, "/v1/slots/", 10) == 0) {
        const char *id = p + 10;
        if (!ag_id_valid(id)) {
            gp_http_problem(resp, 404, "no slot set \"%s\" (ids are 1-63 of a-z, 0-9, '-', '.', '_')", id);
            return;
        }
        if (strcmp(req->method, "PATCH") == 0) {
            update_set(a, id, req, resp);
            return;
        }
        if (strcmp(req->method, "DELETE") == 0) {
            delete_set(a, id, req, resp);
            return;
        }
        if (!get) {
            gp_http_not_allowed(resp, req, "GET, PATCH, DELETE");
            return;
        }
        pthread_mutex_lock(&a->mu);
        ag_set *s = ag_set_find(a, id);
        json_t *o = s ? set_json(a, s) : NULL;
        pthread_mutex_unlock(&a->mu);
        if (o == NULL) {
            gp_http_problem(resp, 404, "no slot set \"%s\"", id);
            return;
        }
        {
            gp_http_json(resp, 200, o);
            return;
        }
    }
    gp_http_problem(resp, 404,
                    "no such resource %s (see docs/agent.md: /v1/gpus, /v1/slots, /metrics, /healthz)", p);
}

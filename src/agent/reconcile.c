/* reconcile.c - the agent's link to the controller, kubelet-style: desired state flows down, observed state
 * up.
 *
 * A watch thread registers the node (its GPUs, pool and API address), then long-polls the allocations the
 * controller placed on it and makes the slot sets match: creates what is missing, changes limits, QoS and the
 * freeze flag where they differ, and removes the sets it once created for the controller ("managed") that are
 * no longer wanted. A heartbeat thread reports GPU health and load and, per set, whether it is ready, the
 * environment its processes need, and its usage. Both carry the state of the node's GPU-over-IP worker, when
 * it has one (worker.address): whether it accepts connections there, probed at every report while it is
 * down and every WORKER_RECHECK_MS while it is up. Either thread re-registers when the controller has
 * forgotten the node, and backs off while it cannot be reached; the node keeps enforcing what it has
 * meanwhile. Local (unmanaged) sets are never touched.
 */
#include "agent/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remote/wire.h"

#define WATCH_WAIT_S            5 /* long-poll bound: also how long a stop may wait for the watch thread */
#define WORKER_RECHECK_MS       10000 /* a worker found up is probed again after this (one down: every report) */
#define WORKER_PROBE_TIMEOUT_MS 1000

static bool stopping(gp_agent *a)
{
    return atomic_load(&a->stop);
}

/* Sleeps up to ms, returning early when the agent stops. */
static void nap(gp_agent *a, uint64_t ms)
{
    uint64_t end = gp_now_ns() + ms * 1000000ull;
    while (!stopping(a) && gp_now_ns() < end)
        gp_sleep_ns(50000000);
}

static long call(gp_agent *a, const char *method, const char *path, json_t *body, long timeout_ms,
                 json_t **out, gp_err *err)
{
    char url[700];
    const char *base = a->cfg.controller_url;
    if (strncmp(base, "unix:", 5) == 0)
        snprintf(url, sizeof url, "%s:%s", base, path);
    else
        snprintf(url, sizeof url, "%s%s", base, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    gp_http_client_opts o = {.timeout_ms = timeout_ms,
                             .bearer = a->cfg.controller_token[0] ? a->cfg.controller_token : NULL};
    gp_http_result r = {0};
    int rc = gp_http_call(method, url, text, NULL, &o, &r, err);
    free(text);
    if (out)
        *out = NULL;
    if (rc < 0)
        return -1;
    if (out && r.body)
        *out = json_loads(r.body, 0, NULL);
    if (r.status >= 400 && r.body) {
        json_t *p = json_loads(r.body, 0, NULL);
        gp_err_set(err, GP_ERR_CONFLICT, "%s %s: %ld %s", method, path, r.status,
                   p && json_string_value(json_object_get(p, "detail"))
                       ? json_string_value(json_object_get(p, "detail"))
                       : "");
        json_decref(p);
    }
    long st = r.status;
    gp_http_result_free(&r);
    return st;
}

static void note_error(gp_agent *a, const char *msg)
{
    pthread_mutex_lock(&a->mu);
    bool fresh = strcmp(a->controller_error, msg) != 0;
    snprintf(a->controller_error, sizeof a->controller_error, "%s", msg);
    pthread_mutex_unlock(&a->mu);
    if (fresh)
        gp_log(GP_LOG_WARN, AG_LOG, "controller %s: %s", a->cfg.controller_url, msg);
}

static void clear_error(gp_agent *a)
{
    pthread_mutex_lock(&a->mu);
    bool was = a->controller_error[0] != '\0';
    a->controller_error[0] = '\0';
    pthread_mutex_unlock(&a->mu);
    if (was)
        gp_log(GP_LOG_INFO, AG_LOG, "controller %s reachable again", a->cfg.controller_url);
}

/* ---- the GPU-over-IP worker ---------------------------------------------------------------------------- */

/* Whether the worker accepts connections on the address clients are given: a connection opened and closed at
 * once, which the worker takes for a probe (it forks a session that ends without a word). Blocks up to
 * WORKER_PROBE_TIMEOUT_MS (and a name lookup), so it runs without mu. */
static void probe_worker(gp_agent *a, bool force)
{
    if (a->cfg.worker_addr[0] == '\0')
        return;
    uint64_t now = gp_now_ns();
    pthread_mutex_lock(&a->mu);
    bool due = force || !a->worker_up || now - a->worker_probed_ns >= WORKER_RECHECK_MS * 1000000ull;
    pthread_mutex_unlock(&a->mu);
    if (!due)
        return;
    char why[GP_ERR_MSG_MAX] = "";
    int fd = gp_wire_connect(a->cfg.worker_addr, WORKER_PROBE_TIMEOUT_MS, why, sizeof why);
    if (fd >= 0)
        close(fd);
    pthread_mutex_lock(&a->mu);
    bool first = !a->worker_probed, was = a->worker_up, up = fd >= 0;
    a->worker_probed = true;
    a->worker_up = up;
    a->worker_probed_ns = now;
    snprintf(a->worker_error, sizeof a->worker_error, "%s", up ? "" : why);
    /* one that was up and fails is worth a warning at once; one not up yet at start (`gpupool up` starts its
     * worker after the agent) only once it stays down for WORKER_RECHECK_MS */
    int say = 0; /* 1 up, 2 not up yet, 3 down */
    if (up) {
        say = first || !was ? 1 : 0;
        a->worker_warned = false;
    } else if (first || was) {
        a->worker_down_ns = now;
        say = was ? 3 : 2;
        a->worker_warned = was;
    } else if (!a->worker_warned && now - a->worker_down_ns >= WORKER_RECHECK_MS * 1000000ull) {
        say = 3;
        a->worker_warned = true;
    }
    pthread_mutex_unlock(&a->mu);
    if (say == 1)
        gp_log(GP_LOG_INFO, AG_LOG, "GPU-over-IP worker %s is up", a->cfg.worker_addr);
    else if (say == 2)
        gp_log(GP_LOG_INFO, AG_LOG, "GPU-over-IP worker %s is not up yet: %s", a->cfg.worker_addr, why);
    else if (say == 3)
        gp_log(GP_LOG_WARN, AG_LOG, "GPU-over-IP worker %s is down: %s (remote workloads go to other nodes)",
               a->cfg.worker_addr, why);
}

json_t *ag_worker_json(const gp_agent *a)
{
    if (a->cfg.worker_addr[0] == '\0')
        return NULL;
    json_t *o = json_pack("{s:s, s:b}", "address", a->cfg.worker_addr, "up", a->worker_up);
    if (o && !a->worker_up)
        json_object_set_new(o, "message", json_string(a->worker_probed ? a->worker_error : "not probed yet"));
    return o;
}

static json_t *register_body(gp_agent *a)
{
    json_t *gpus = json_array();
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->ngpus; i++) {
        const ag_gpu *g = &a->gpus[i];
        json_array_append_new(gpus,
                              json_pack("{s:s, s:i, s:s, s:s, s:s, s:f, s:I, s:b}", "uuid", g->uuid, "index",
                                        g->index, "name", g->name, "model",
                                        g->model ? g->model->key : "unknown", "vendor", "nvidia", "tflops",
                                        g->tflops, "vram", (json_int_t)g->mem_total, "healthy", g->healthy));
    }
    json_t *worker = ag_worker_json(a);
    pthread_mutex_unlock(&a->mu);
    char api[400];
    if (a->cfg.tcp_addr[0])
        snprintf(api, sizeof api, "%s", a->cfg.tcp_addr);
    else
        snprintf(api, sizeof api, "unix:%s", a->cfg.unix_path);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "pool", a->cfg.pool, "api", api, "version", GP_VERSION,
                          "gpus", gpus);
    if (o && worker)
        json_object_set_new(o, "worker", worker);
    else
        json_decref(worker);
    return o;
}

static int do_register(gp_agent *a)
{
    char path[200];
    snprintf(path, sizeof path, "/v1/nodes/%s/register", a->cfg.node_name);
    probe_worker(a, true);
    json_t *body = register_body(a), *out = NULL;
    gp_err err = {0};
    long st = call(a, "POST", path, body, 10000, &out, &err);
    json_decref(body);
    json_decref(out);
    if (st != 200) {
        note_error(a, st < 0 ? err.msg : err.msg[0] ? err.msg : "registration refused");
        return -1;
    }
    clear_error(a);
    atomic_store(&a->registered, true);
    gp_log(GP_LOG_INFO, AG_LOG, "node %s registered with controller %s (pool %s)", a->cfg.node_name,
           a->cfg.controller_url, a->cfg.pool);
    return 0;
}

/* ---- applying the desired state (mu held) ------------------------------------------------------------ */

static void set_error(gp_agent *a, const char *id, const char *msg)
{
    if (a->alloc_errors == NULL)
        a->alloc_errors = json_object();
    json_t *old = json_object_get(a->alloc_errors, id);
    if (old == NULL || strcmp(json_string_value(old), msg) != 0) {
        gp_log(GP_LOG_ERROR, AG_LOG, "allocation %s: %s", id, msg);
        json_object_set_new(a->alloc_errors, id, json_string(msg));
    }
}

static uint32_t ppm_of(json_t *arr, size_t i)
{
    double pct = json_number_value(json_array_get(arr, i));
    double ppm = pct * 1e4 + 0.5;
    return ppm < 0 ? 0 : ppm > GP_SLOT_FULL_PPM ? GP_SLOT_FULL_PPM : (uint32_t)ppm;
}

static int qos_of(json_t *d)
{
    const char *q = json_string_value(json_object_get(d, "qos"));
    int v = q ? gp_qos_parse(q) : -1;
    return v < 0 ? GP_QOS_MEDIUM : v;
}

static void create_set(gp_agent *a, json_t *d, const char *id)
{
    json_t *gpus = json_object_get(d, "gpus");
    ag_set_spec sp = {.managed = true, .have_ppm = true, .qos = qos_of(d)};
    snprintf(sp.id, sizeof sp.id, "%s", id);
    sp.workload = json_string_value(json_object_get(d, "workload"));
    sp.namespace_ = json_string_value(json_object_get(d, "namespace"));
    sp.vram = (uint64_t)json_integer_value(json_object_get(d, "vram"));
    sp.ngpus = (int)json_array_size(gpus);
    if (!sp.workload || !sp.namespace_ || sp.ngpus < 1 || sp.ngpus > GP_SLOT_MAX_GPUS) {
        set_error(a, id, "the controller sent an allocation without workload, namespace or GPUs");
        return;
    }
    for (int i = 0; i < sp.ngpus; i++) {
        const char *u = json_string_value(json_array_get(gpus, (size_t)i));
        sp.gpu[i] = u ? ag_gpu_find(a, u) : -1;
        if (sp.gpu[i] < 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "GPU %s is not on this node", u ? u : "?");
            set_error(a, id, msg);
            return;
        }
        sp.req_ppm[i] = ppm_of(json_object_get(d, "percent_request"), (size_t)i);
        sp.lim_ppm[i] = ppm_of(json_object_get(d, "percent_limit"), (size_t)i);
        if (sp.lim_ppm[i] == 0)
            sp.lim_ppm[i] = 1;
    }
    ag_set *s;
    gp_err err = {0};
    if (ag_set_create(a, &sp, &s, &err) < 0) {
        set_error(a, id, err.msg);
        return;
    }
    if (json_is_true(json_object_get(d, "frozen")))
        for (int i = 0; i < s->n; i++)
            atomic_store(&s->part[i].h.s->frozen, 1);
    if (a->alloc_errors)
        json_object_del(a->alloc_errors, id);
}

static void update_set(gp_agent *a, ag_set *s, json_t *d)
{
    uint64_t vram = (uint64_t)json_integer_value(json_object_get(d, "vram"));
    uint32_t qos = (uint32_t)qos_of(d), frozen = json_is_true(json_object_get(d, "frozen"));
    for (int i = 0; i < s->n; i++) {
        gp_slot *sl = s->part[i].h.s;
        uint32_t req = ppm_of(json_object_get(d, "percent_request"), (size_t)i),
                 lim = ppm_of(json_object_get(d, "percent_limit"), (size_t)i);
        if (lim == 0)
            lim = 1;
        if (atomic_load(&sl->vram_limit) != vram || atomic_load(&sl->compute_request_ppm) != req ||
            atomic_load(&sl->compute_limit_ppm) != lim) {
            gp_err err;
            if (gp_slot_set_limits(sl, vram ? vram : 0, req, lim, &err) < 0)
                set_error(a, s->id, err.msg);
        }
        if (atomic_load(&sl->qos) != qos)
            atomic_store(&sl->qos, qos);
        if (atomic_load(&sl->frozen) != frozen) {
            atomic_store(&sl->frozen, frozen);
            gp_log(GP_LOG_INFO, AG_LOG, "slot set %s %s by the controller", s->id,
                   frozen ? "frozen" : "resumed");
        }
    }
}

static void apply(gp_agent *a, json_t *allocs)
{
    json_t *d;
    size_t i;
    json_array_foreach(allocs, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "id"));
        if (id == NULL || !ag_id_valid(id)) {
            gp_log(GP_LOG_ERROR, AG_LOG, "the controller sent an allocation with a bad id; ignored");
            continue;
        }
        ag_set *s = ag_set_find(a, id);
        if (s && !s->managed)
            set_error(
                a, id,
                "a local slot set has this id; remove it, or the controller's workload cannot run here");
        else if (s)
            update_set(a, s, d);
        else
            create_set(a, d, id);
    }
    /* managed sets no longer wanted */
    for (size_t k = a->nsets; k-- > 0;) {
        ag_set *s = a->sets[k];
        if (!s->managed)
            continue;
        bool wanted = false;
        json_array_foreach(allocs, i, d) wanted |=
            strcmp(json_string_value(json_object_get(d, "id")), s->id) == 0;
        if (wanted)
            continue;
        gp_err err = {0};
        if (ag_set_remove(a, s, true, &err) < 0)
            gp_log(GP_LOG_ERROR, AG_LOG, "removing slot set %s the controller no longer wants: %s", s->id,
                   err.msg);
    }
    /* errors of allocations that are gone are forgotten */
    const char *k;
    json_t *v, *tmp;
    json_object_foreach_safe(a->alloc_errors, tmp, k, v)
    {
        bool wanted = false;
        json_array_foreach(allocs, i, d) wanted |=
            strcmp(json_string_value(json_object_get(d, "id")), k) == 0;
        if (!wanted)
            json_object_del(a->alloc_errors, k);
    }
}

static void *watch(void *arg)
{
    gp_agent *a = arg;
    uint64_t rev = 0, backoff = 500;
    bool have = false;
    char path[300];
    while (!stopping(a)) {
        if (!atomic_load(&a->registered) && do_register(a) < 0) {
            nap(a, backoff);
            backoff = backoff * 2 > 10000 ? 10000 : backoff * 2;
            continue;
        }
        if (have)
            snprintf(path, sizeof path, "/v1/nodes/%s/allocations?since=%llu&timeout=%d", a->cfg.node_name,
                     (unsigned long long)rev, WATCH_WAIT_S);
        else
            snprintf(path, sizeof path, "/v1/nodes/%s/allocations", a->cfg.node_name);
        json_t *out = NULL;
        gp_err err = {0};
        long st = call(a, "GET", path, NULL, (WATCH_WAIT_S + 10) * 1000, &out, &err);
        if (st == 404) {
            atomic_store(&a->registered, false);
            json_decref(out);
            continue;
        }
        if (st != 200 || !json_is_array(json_object_get(out, "allocations"))) {
            note_error(a, st < 0 ? err.msg : "the controller answered the watch with an error");
            json_decref(out);
            nap(a, backoff);
            backoff = backoff * 2 > 10000 ? 10000 : backoff * 2;
            continue;
        }
        backoff = 500;
        clear_error(a);
        uint64_t r = (uint64_t)json_integer_value(json_object_get(out, "revision"));
        if (!have || r != rev) {
            pthread_mutex_lock(&a->mu);
            apply(a, json_object_get(out, "allocations"));
            pthread_mutex_unlock(&a->mu);
        }
        rev = r;
        have = true;
        json_decref(out);
    }
    return NULL;
}

/* ---- observed state --------------------------------------------------------------------------------- */

static json_t *heartbeat_body(gp_agent *a)
{
    json_t *gpus = json_array(), *sets = json_array();
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->ngpus; i++)
        json_array_append_new(gpus, json_pack("{s:s, s:b, s:f, s:I}", "uuid", a->gpus[i].uuid, "healthy",
                                              a->gpus[i].healthy, "load", a->gpus[i].util_gpu / 100.0,
                                              "vram_used", (json_int_t)a->gpus[i].mem_used));
    for (size_t i = 0; i < a->nsets; i++) {
        ag_set *s = a->sets[i];
        if (!s->managed)
            continue;
        json_t *used = json_array(), *vram = json_array();
        int procs = 0;
        bool ready = true;
        for (int k = 0; k < s->n; k++) {
            ag_part *p = &s->part[k];
            json_array_append_new(used, json_real(p->used_avg * 100));
            json_array_append_new(vram, json_integer((json_int_t)gp_slot_vram_used(p->h.s)));
            procs += ag_part_procs(p);
            ready &= p->gpu >= 0;
        }
        json_t *o =
            json_pack("{s:s, s:b, s:o, s:{s:o, s:o, s:i}}", "id", s->id, "ready", ready, "env",
                      ag_set_env(a, s), "usage", "used_percent", used, "vram_used", vram, "processes", procs);
        json_t *remote = ag_set_remote_env(a, s);
        if (o && remote)
            json_object_set_new(o, "remote_env",
                                remote); /* GPU-over-IP: where its worker is, and its token */
        else
            json_decref(remote);
        json_array_append_new(sets, o);
    }
    const char *k;
    json_t *v;
    json_object_foreach(a->alloc_errors, k, v)
        json_array_append_new(sets, json_pack("{s:s, s:b, s:O}", "id", k, "ready", 0, "error", v));
    json_t *worker = ag_worker_json(a);
    pthread_mutex_unlock(&a->mu);
    json_t *o = json_pack("{s:o, s:o}", "gpus", gpus, "sets", sets);
    if (o && worker)
        json_object_set_new(o, "worker", worker);
    else
        json_decref(worker);
    return o;
}

static void *beat(void *arg)
{
    gp_agent *a = arg;
    char path[200];
    snprintf(path, sizeof path, "/v1/nodes/%s/heartbeat", a->cfg.node_name);
    while (!stopping(a)) {
        if (atomic_load(&a->registered)) {
            probe_worker(a, false);
            json_t *body = heartbeat_body(a), *out = NULL;
            gp_err err = {0};
            long st = call(a, "POST", path, body, 5000, &out, &err);
            json_decref(body);
            json_decref(out);
            if (st == 404)
                atomic_store(&a->registered, false);
            else if (st != 200)
                note_error(a, st < 0 ? err.msg : err.msg[0] ? err.msg : "heartbeat refused");
        }
        nap(a, a->cfg.heartbeat_ms);
    }
    return NULL;
}

int ag_reconcile_start(gp_agent *a, gp_err *err)
{
    if (a->cfg.controller_url[0] == '\0')
        return 0;
    if (pthread_create(&a->watch_thread, NULL, watch, a) != 0)
        return gp_err_set(err, GP_ERR_IO, "cannot start the agent's watch thread");
    a->watch_started = true;
    if (pthread_create(&a->beat_thread, NULL, beat, a) != 0)
        return gp_err_set(err, GP_ERR_IO, "cannot start the agent's heartbeat thread");
    a->beat_started = true;
    return 0;
}

void ag_reconcile_stop(gp_agent *a)
{
    if (a->watch_started)
        pthread_join(a->watch_thread, NULL);
    if (a->beat_started)
        pthread_join(a->beat_thread, NULL);
    a->watch_started = a->beat_started = false;
    json_decref(a->alloc_errors);
    a->alloc_errors = NULL;
}

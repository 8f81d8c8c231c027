/* model.c - the controller's model in memory and in the store: pools, nodes and their GPUs, workloads and
 * their allocations, quotas, profiles; validation of every change; the allocator kept in step.
 *
 * Invariants: a change is validated completely, then written to the store in one transaction, and applied in
 * memory (and in the allocator) only after that transaction committed - so a failed write (full disk) or a
 * kill -9 leaves memory and disk agreeing, and a restart (cn_load) rebuilds exactly what was acknowledged.
 * Each workload's key is "namespace/name"; creating the same workload again with the same spec returns the
 * existing one (a client retrying after a lost answer never doubles an allocation).
 */
#include "controller/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/json.h"
#include "common/models.h"
#include "common/quantity.h"

static const char *const qos_names[] = {"low", "medium", "high", "critical", NULL};
static const char *const phase_pending = "Pending", *const phase_allocated = "Allocated",
                         *const phase_lost = "Lost";

bool cn_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' && i > 0 && i + 1 < n))
            return false;
    }
    return true;
}

/* Node names are DNS subdomains (host names): labels of a-z, 0-9 and '-' joined by dots, 63 at most here. */
static bool node_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return false;
    char label[64];
    for (const char *p = s; *p;) {
        size_t k = strcspn(p, ".");
        snprintf(label, sizeof label, "%.*s", (int)k, p);
        if (!cn_name_valid(label))
            return false;
        p += k + (p[k] == '.');
    }
    return true;
}

static void now_iso(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int grow(void **v, int *cap, int n, size_t size)
{
    if (n < *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, (size_t)nc * size);
    if (p == NULL)
        return -1;
    *v = p;
    *cap = nc;
    return 0;
}

static void broadcast(gp_controller *c)
{
    pthread_cond_broadcast(&c->changed);
}

/* ---- lookups ---------------------------------------------------------------------------------------- */

int cn_pool_find(const gp_controller *c, const char *name)
{
    for (int i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].name, name) == 0)
            return i;
    return -1;
}

int cn_node_find(const gp_controller *c, const char *name)
{
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].name, name) == 0)
            return i;
    return -1;
}

cn_workload *cn_work_find(const gp_controller *c, const char *ns, const char *name)
{
    char key[160];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    json_t *i = json_object_get(c->work_index, key);
    return i ? c->work[json_integer_value(i)] : NULL;
}

int cn_quota_find(const gp_controller *c, const char *ns)
{
    for (int i = 0; i < c->nquotas; i++)
        if (strcmp(c->quotas[i].ns, ns) == 0)
            return i;
    return -1;
}

/* The node and index of an allocator GPU id. */
static const cn_node *node_of_gpu(const gp_controller *c, int gpu, int *k)
{
    for (int i = 0; i < c->nnodes; i++)
        for (int j = 0; j < c->nodes[i].ngpus; j++)
            if (c->nodes[i].gpu[j] == gpu) {
                if (k)
                    *k = j;
                return &c->nodes[i];
            }
    return NULL;
}

static json_t *node_gpu_doc(const cn_node *n, int k)
{
    return json_array_get(json_object_get(n->doc, "gpus"), (size_t)k);
}

static const char *gpu_uuid(const gp_controller *c, int gpu)
{
    int k;
    const cn_node *n = node_of_gpu(c, gpu, &k);
    return n ? json_string_value(json_object_get(node_gpu_doc(n, k), "uuid")) : "?";
}

/* ---- pools ------------------------------------------------------------------------------------------ */

static int pool_spec(json_t *doc, gp_alloc_pool_spec *p, gp_err *err)
{
    static const char *const strategies[] = {"compact-first", "low-load-first", "node-compact-gpu-low-load",
                                             NULL};
    static const char *const known[] = {"name",
                                        "tflops_oversell_percent",
                                        "vram_expand_host_percent",
                                        "vram_expand_disk_percent",
                                        "strategy",
                                        "default_qos",
                                        "created",
                                        NULL};
    int strategy = GP_STRATEGY_COMPACT_FIRST, qos = 1;
    memset(p, 0, sizeof *p);
    if (gp_json_only(doc, known, err) < 0 || gp_json_str(doc, "name", true, 63, &p->name, err) < 0 ||
        gp_json_num(doc, "tflops_oversell_percent", false, 0, 10000, &p->tflops_oversell_pct, err) < 0 ||
        gp_json_num(doc, "vram_expand_host_percent", false, 0, 10000, &p->vram_host_pct, err) < 0 ||
        gp_json_num(doc, "vram_expand_disk_percent", false, 0, 10000, &p->vram_disk_pct, err) < 0 ||
        gp_json_enum(doc, "strategy", false, strategies, &strategy, err) < 0 ||
        gp_json_enum(doc, "default_qos", false, qos_names, &qos, err) < 0)
        return -1;
    if (!cn_name_valid(p->name))
        return gp_err_set(err, GP_ERR_INVALID, "pool name \"%s\" must be 1-63 of a-z, 0-9 and '-'", p->name);
    p->strategy = (gp_alloc_strategy)strategy;
    /* normalised: every field present */
    json_object_set_new(doc, "tflops_oversell_percent", json_real(p->tflops_oversell_pct));
    json_object_set_new(doc, "vram_expand_host_percent", json_real(p->vram_host_pct));
    json_object_set_new(doc, "vram_expand_disk_percent", json_real(p->vram_disk_pct));
    json_object_set_new(doc, "strategy", json_string(strategies[strategy]));
    json_object_set_new(doc, "default_qos", json_string(qos_names[qos]));
    return 0;
}

static int pool_add_mem(gp_controller *c, json_t *doc, gp_err *err)
{
    gp_alloc_pool_spec p;
    if (pool_spec(doc, &p, err) < 0)
        return -1;
    int id = gp_alloc_add_pool(c->alloc, &p, err);
    if (id < 0 || grow((void **)&c->pools, &c->cappools, c->npools, sizeof *c->pools) < 0)
        return id < 0 ? -1 : gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    cn_pool *cp = &c->pools[c->npools++];
    memset(cp, 0, sizeof *cp);
    snprintf(cp->name, sizeof cp->name, "%s", p.name);
    cp->id = id;
    cp->doc = json_incref(doc);
    return 0;
}

json_t *cn_pool_json(const gp_controller *c, const cn_pool *p)
{
    json_t *o = json_deep_copy(p->doc);
    int nodes = 0, gpus = 0;
    double tflops = 0, req = 0;
    uint64_t vram = 0, vreq = 0;
    for (int i = 0; i < c->nnodes; i++) {
        if (&c->pools[c->nodes[i].pool] != p)
            continue;
        nodes++;
        for (int k = 0; k < c->nodes[i].ngpus; k++) {
            gp_alloc_gpu_state s;
            if (gp_alloc_gpu_state_get(c->alloc, c->nodes[i].gpu[k], &s) < 0)
                continue;
            gpus++;
            tflops += s.tflops;
            req += s.req_tflops;
            vram += s.vram;
            vreq += s.req_vram;
        }
    }
    json_object_set_new(o, "capacity",
                        json_pack("{s:i, s:i, s:f, s:f, s:I, s:I}", "nodes", nodes, "gpus", gpus, "tflops",
                                  tflops, "tflops_requested", req, "vram", (json_int_t)vram, "vram_requested",
                                  (json_int_t)vreq));
    return o;
}

int cn_pool_put(gp_controller *c, json_t *body, bool create, const char *name, json_t **out, gp_err *err)
{
    json_t *doc = json_deep_copy(body);
    if (!create)
        json_object_set_new(doc, "name", json_string(name));
    gp_alloc_pool_spec p;
    if (pool_spec(doc, &p, err) < 0) {
        json_decref(doc);
        return -1;
    }
    char pname[64];
    snprintf(pname, sizeof pname, "%s", p.name);
    int i = cn_pool_find(c, pname);
    if (create && i >= 0) {
        json_decref(doc);
        return gp_err_set(err, GP_ERR_EXISTS, "pool \"%s\" exists already", pname);
    }
    if (!create && i < 0) {
        json_decref(doc);
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no pool \"%s\"", name);
    }
    char ts[32];
    now_iso(ts, sizeof ts);
    json_object_set_new(
        doc, "created",
        json_string(i >= 0 ? json_string_value(json_object_get(c->pools[i].doc, "created")) : ts));
    if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "pool", pname, doc, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        json_decref(doc);
        return -1;
    }
    if (i < 0) {
        if (pool_add_mem(c, doc, err) < 0) {
            json_decref(doc);
            return -1;
        }
        json_decref(doc);
        i = c->npools - 1;
    } else {
        gp_alloc_set_pool(c->alloc, c->pools[i].id, &p, err);
        json_decref(c->pools[i].doc);
        c->pools[i].doc = doc;
    }
    *out = cn_pool_json(c, &c->pools[i]);
    broadcast(c);
    cn_retry_pending(c);
    return 0;
}

int cn_pool_delete(gp_controller *c, const char *name, gp_err *err)
{
    int i = cn_pool_find(c, name);
    if (i < 0)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no pool \"%s\"", name);
    for (int n = 0; n < c->nnodes; n++)
        if (c->nodes[n].pool == i)
            return gp_err_set(err, GP_ERR_CONFLICT,
                              "pool \"%s\" still has node \"%s\"; move or delete its nodes first", name,
                              c->nodes[n].name);
    for (int w = 0; w < c->nwork; w++)
        if (c->work[w]->req.pool == c->pools[i].id)
            return gp_err_set(err, GP_ERR_CONFLICT, "pool \"%s\" still has workload %s", name,
                              c->work[w]->key);
    if (gp_store_begin(c->store, err) < 0 || gp_store_del(c->store, "pool", name, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    /* The allocator keeps the pool id (it has no removal); nothing refers to it any more. */
    json_decref(c->pools[i].doc);
    c->pools[i] = c->pools[--c->npools];
    for (int n = 0; n < c->nnodes; n++)
        if (c->nodes[n].pool == c->npools)
            c->nodes[n].pool = i;
    broadcast(c);
    return 0;
}

/* ---- quotas ----------------------------------------------------------------------------------------- */

static int quota_spec(json_t *doc, gp_alloc_quota_spec *q, gp_err *err)
{
    static const char *const known[] = {"namespace",
                                        "tflops_request",
                                        "tflops_limit",
                                        "vram_request",
                                        "vram_limit",
                                        "max_workloads",
                                        "max_tflops_per_workload",
                                        "max_vram_per_workload",
                                        NULL};
    *q = (gp_alloc_quota_spec){-1, -1, -1, -1, -1, -1, -1};
    uint64_t vr = 0, vl = 0, vw = 0;
    int64_t mw = -1;
    if (gp_json_only(doc, known, err) < 0 ||
        gp_json_num(doc, "tflops_request", false, 0, 1e12, &q->req_tflops, err) < 0 ||
        gp_json_num(doc, "tflops_limit", false, 0, 1e12, &q->lim_tflops, err) < 0 ||
        gp_json_bytes(doc, "vram_request", false, &vr, err) < 0 ||
        gp_json_bytes(doc, "vram_limit", false, &vl, err) < 0 ||
        gp_json_int(doc, "max_workloads", false, 0, 100000000, &mw, err) < 0 ||
        gp_json_num(doc, "max_tflops_per_workload", false, 0, 1e12, &q->max_tflops_per_workload, err) < 0 ||
        gp_json_bytes(doc, "max_vram_per_workload", false, &vw, err) < 0)
        return -1;
    if (json_object_get(doc, "vram_request"))
        q->req_vram = (int64_t)vr, json_object_set_new(doc, "vram_request", json_integer((json_int_t)vr));
    if (json_object_get(doc, "vram_limit"))
        q->lim_vram = (int64_t)vl, json_object_set_new(doc, "vram_limit", json_integer((json_int_t)vl));
    if (json_object_get(doc, "max_vram_per_workload"))
        q->max_vram_per_workload = (int64_t)vw,
        json_object_set_new(doc, "max_vram_per_workload", json_integer((json_int_t)vw));
    q->max_workloads = (int)mw;
    return 0;
}

json_t *cn_quota_json(const gp_controller *c, const cn_quota *q)
{
    json_t *o = json_deep_copy(q->doc);
    gp_alloc_quota_state s;
    if (gp_alloc_quota_state_get(c->alloc, q->id, &s) == 0)
        json_object_set_new(o, "used",
                            json_pack("{s:f, s:f, s:I, s:I, s:i}", "tflops_request", s.req_tflops,
                                      "tflops_limit", s.lim_tflops, "vram_request", (json_int_t)s.req_vram,
                                      "vram_limit", (json_int_t)s.lim_vram, "workloads", s.workloads));
    return o;
}

/* Re-commits the placed workloads of a namespace so that a (new) quota counts them. */
static void recount_quota(gp_controller *c, const char *ns, int quota)
{
    size_t len = strlen(ns);
    for (int w = 0; w < c->nwork; w++) {
        cn_workload *wl = c->work[w];
        if (strncmp(wl->key, ns, len) != 0 || wl->key[len] != '/')
            continue;
        if (wl->placed)
            gp_alloc_release(c->alloc, &wl->req, &wl->place);
        wl->req.quota = quota;
        if (wl->placed)
            gp_alloc_commit(c->alloc, &wl->req, &wl->place);
    }
}

static int quota_add_mem(gp_controller *c, const char *ns, json_t *doc, gp_err *err)
{
    gp_alloc_quota_spec q;
    if (quota_spec(doc, &q, err) < 0)
        return -1;
    int id = gp_alloc_add_quota(c->alloc, &q, err);
    if (id < 0 || grow((void **)&c->quotas, &c->capquotas, c->nquotas, sizeof *c->quotas) < 0)
        return id < 0 ? -1 : gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    cn_quota *cq = &c->quotas[c->nquotas++];
    snprintf(cq->ns, sizeof cq->ns, "%s", ns);
    cq->id = id;
    cq->doc = json_incref(doc);
    recount_quota(c, ns, id);
    return 0;
}

int cn_quota_put(gp_controller *c, const char *ns, json_t *body, json_t **out, gp_err *err)
{
    if (!cn_name_valid(ns))
        return gp_err_set(err, GP_ERR_INVALID, "namespace \"%s\" must be 1-63 of a-z, 0-9 and '-'", ns);
    json_t *doc = json_deep_copy(body);
    json_object_set_new(doc, "namespace", json_string(ns));
    gp_alloc_quota_spec q;
    if (quota_spec(doc, &q, err) < 0) {
        json_decref(doc);
        return -1;
    }
    if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "quota", ns, doc, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        json_decref(doc);
        return -1;
    }
    int i = cn_quota_find(c, ns);
    if (i < 0) {
        if (quota_add_mem(c, ns, doc, err) < 0) {
            json_decref(doc);
            return -1;
        }
        i = c->nquotas - 1;
    } else {
        gp_alloc_set_quota(c->alloc, c->quotas[i].id, &q, err);
        json_decref(c->quotas[i].doc);
        c->quotas[i].doc = json_incref(doc);
    }
    json_decref(doc);
    *out = cn_quota_json(c, &c->quotas[i]);
    broadcast(c);
    return 0;
}

int cn_quota_delete(gp_controller *c, const char *ns, gp_err *err)
{
    int i = cn_quota_find(c, ns);
    if (i < 0)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no quota for namespace \"%s\"", ns);
    if (gp_store_begin(c->store, err) < 0 || gp_store_del(c->store, "quota", ns, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    /* no removal in the allocator: lift the quota, and stop counting against it */
    gp_alloc_quota_spec unlimited = {-1, -1, -1, -1, -1, -1, -1};
    gp_alloc_set_quota(c->alloc, c->quotas[i].id, &unlimited, err);
    recount_quota(c, ns, -1);
    json_decref(c->quotas[i].doc);
    c->quotas[i] = c->quotas[--c->nquotas];
    broadcast(c);
    cn_retry_pending(c);
    return 0;
}

/* ---- workload specs --------------------------------------------------------------------------------- */

static const char *const spec_fields[] = {"name",
                                          "namespace",
                                          "pool",
                                          "gpus",
                                          "tflops_request",
                                          "tflops_limit",
                                          "percent_request",
                                          "percent_limit",
                                          "vram_request",
                                          "vram_limit",
                                          "qos",
                                          "model",
                                          "vendor",
                                          "node",
                                          "remote",
                                          "profile",
                                          NULL};

/* Normalises a spec (defaults from its profile and its pool, bytes as integers, request/limit pairs
 * completed) and fills the allocation request. Strings in *r point into spec. */
static int work_spec(gp_controller *c, json_t *spec, gp_alloc_request *r, gp_err *err)
{
    const char *name = NULL, *ns = "default", *pool = "default", *model = NULL, *vendor = NULL, *node = NULL,
               *profile = NULL;
    int64_t gpus = 1;
    double rt = -1, lt = -1, rp = -1, lp = -1;
    uint64_t rv = 0, lv = 0;
    int qos = -1;
    bool remote = false;
    if (gp_json_str(spec, "profile", false, 63, &profile, err) < 0)
        return -1;
    if (profile) {
        json_t *p = json_object_get(c->profiles, profile);
        if (p == NULL)
            return gp_err_set(err, GP_ERR_INVALID, "no profile \"%s\" (GET /v1/profiles lists them)",
                              profile);
        const char *k;
        json_t *v;
        json_object_foreach(p, k, v) if (strcmp(k, "name") != 0 && !json_object_get(spec, k))
            json_object_set(spec, k, v);
    }
    if (gp_json_only(spec, spec_fields, err) < 0 || gp_json_str(spec, "name", true, 63, &name, err) < 0 ||
        gp_json_str(spec, "namespace", false, 63, &ns, err) < 0 ||
        gp_json_str(spec, "pool", false, 63, &pool, err) < 0 ||
        gp_json_int(spec, "gpus", false, 1, GP_ALLOC_MAX_GPUS, &gpus, err) < 0 ||
        gp_json_num(spec, "tflops_request", false, 0, 1e6, &rt, err) < 0 ||
        gp_json_num(spec, "tflops_limit", false, 0, 1e6, &lt, err) < 0 ||
        gp_json_num(spec, "percent_request", false, 0, 100, &rp, err) < 0 ||
        gp_json_num(spec, "percent_limit", false, 0, 100, &lp, err) < 0 ||
        gp_json_bytes(spec, "vram_request", false, &rv, err) < 0 ||
        gp_json_bytes(spec, "vram_limit", false, &lv, err) < 0 ||
        gp_json_enum(spec, "qos", false, qos_names, &qos, err) < 0 ||
        gp_json_str(spec, "model", false, 63, &model, err) < 0 ||
        gp_json_str(spec, "vendor", false, 31, &vendor, err) < 0 ||
        gp_json_str(spec, "node", false, 63, &node, err) < 0 ||
        gp_json_bool(spec, "remote", false, &remote, err) < 0)
        return -1;
    if (!cn_name_valid(name))
        return gp_err_set(err, GP_ERR_INVALID, "name \"%s\" must be 1-63 of a-z, 0-9 and '-' (a DNS label)",
                          name);
    if (!cn_name_valid(ns))
        return gp_err_set(err, GP_ERR_INVALID, "namespace \"%s\" must be 1-63 of a-z, 0-9 and '-'", ns);
    if ((rt >= 0 || lt >= 0) && (rp >= 0 || lp >= 0))
        return gp_err_set(err, GP_ERR_INVALID, "give compute in TFLOPS or in percent of a GPU, not both");
    if (rt < 0 && lt < 0 && rp < 0 && lp < 0)
        rp = 0, lp = 100; /* no compute asked: no guarantee, up to a whole GPU */
    if (rt >= 0 || lt >= 0) {
        if (rt < 0)
            rt = lt;
        if (lt < 0)
            lt = rt;
        if (lt <= 0)
            return gp_err_set(err, GP_ERR_INVALID, "tflops_limit must be more than 0");
        if (rt > lt)
            return gp_err_set(err, GP_ERR_INVALID, "tflops_request (%g) is above tflops_limit (%g)", rt, lt);
    } else {
        if (rp < 0)
            rp = lp;
        if (lp < 0)
            lp = rp;
        if (lp <= 0)
            return gp_err_set(err, GP_ERR_INVALID, "percent_limit must be more than 0");
        if (rp > lp)
            return gp_err_set(err, GP_ERR_INVALID, "percent_request (%g) is above percent_limit (%g)", rp,
                              lp);
    }
    bool has_rv = json_object_get(spec, "vram_request") != NULL,
         has_lv = json_object_get(spec, "vram_limit") != NULL;
    if (!has_rv && !has_lv)
        return gp_err_set(err, GP_ERR_INVALID, "give vram_request or vram_limit (e.g. \"8Gi\")");
    if (!has_rv)
        rv = lv;
    if (!has_lv)
        lv = rv;
    if (lv == 0)
        return gp_err_set(err, GP_ERR_INVALID, "vram_limit must be more than 0 bytes");
    if (rv > lv)
        return gp_err_set(err, GP_ERR_INVALID, "vram_request is above vram_limit");
    int pi = cn_pool_find(c, pool);
    if (pi < 0)
        return gp_err_set(err, GP_ERR_INVALID, "no pool \"%s\" (GET /v1/pools lists them)", pool);
    int ni = -1;
    if (node && (ni = cn_node_find(c, node)) < 0)
        return gp_err_set(err, GP_ERR_INVALID, "no node \"%s\" (GET /v1/nodes lists them)", node);
    if (qos < 0)
        gp_json_enum(c->pools[pi].doc, "default_qos", false, qos_names, &qos, err);
    if (qos < 0)
        qos = 1;
    /* copies: ns and pool point into spec, whose values are replaced just below */
    char ns_copy[64], pool_copy[64];
    snprintf(ns_copy, sizeof ns_copy, "%s", ns);
    snprintf(pool_copy, sizeof pool_copy, "%s", pool);
    ns = ns_copy;
    pool = pool_copy;
    /* normalised */
    json_object_set_new(spec, "namespace", json_string(ns));
    json_object_set_new(spec, "pool", json_string(pool));
    json_object_set_new(spec, "gpus", json_integer(gpus));
    json_object_set_new(spec, "qos", json_string(qos_names[qos]));
    json_object_set_new(spec, "vram_request", json_integer((json_int_t)rv));
    json_object_set_new(spec, "vram_limit", json_integer((json_int_t)lv));
    json_object_set_new(spec, "remote", json_boolean(remote));
    if (rt >= 0) {
        json_object_set_new(spec, "tflops_request", json_real(rt));
        json_object_set_new(spec, "tflops_limit", json_real(lt));
    } else {
        json_object_set_new(spec, "percent_request", json_real(rp));
        json_object_set_new(spec, "percent_limit", json_real(lp));
    }
    /* re-read the strings: set_new above may have replaced the values they pointed into */
    gp_json_str(spec, "model", false, 63, &model, err);
    gp_json_str(spec, "vendor", false, 31, &vendor, err);
    int qi = cn_quota_find(c, ns);
    *r = (gp_alloc_request){.pool = c->pools[pi].id,
                            .gpu_count = (int)gpus,
                            .req_tflops = rt,
                            .lim_tflops = lt,
                            .req_pct = rp,
                            .lim_pct = lp,
                            .req_vram = rv,
                            .lim_vram = lv,
                            .model = model,
                            .vendor = vendor,
                            .node = ni >= 0 ? c->nodes[ni].id : -1,
                            .quota = qi >= 0 ? c->quotas[qi].id : -1,
                            .remote = remote};
    return 0;
}

/* The allocation part of a workload's status from its placement. */
static json_t *placement_json(const gp_controller *c, const char *id, const gp_alloc_placement *p)
{
    json_t *uuids = json_array(), *rq = json_array(), *lm = json_array();
    for (int i = 0; i < p->ngpus; i++) {
        json_array_append_new(uuids, json_string(gpu_uuid(c, p->gpu[i])));
        json_array_append_new(rq, json_real(p->req_tflops[i]));
        json_array_append_new(lm, json_real(p->lim_tflops[i]));
    }
    const cn_node *n = node_of_gpu(c, p->gpu[0], NULL);
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:I, s:I}", "id", id, "node", n ? n->name : "?", "gpus",
                     uuids, "tflops_request", rq, "tflops_limit", lm, "vram_request", (json_int_t)p->req_vram,
                     "vram_limit", (json_int_t)p->lim_vram);
}

/* Rebuilds a placement from a stored allocation (at start-up). */
static int placement_from_json(const gp_controller *c, json_t *a, gp_alloc_placement *p, int *node)
{
    memset(p, 0, sizeof *p);
    const char *nn = json_string_value(json_object_get(a, "node"));
    int ni = nn ? cn_node_find(c, nn) : -1;
    if (ni < 0)
        return -1;
    json_t *uuids = json_object_get(a, "gpus"), *rq = json_object_get(a, "tflops_request"),
           *lm = json_object_get(a, "tflops_limit");
    size_t n = json_array_size(uuids);
    if (n == 0 || n > GP_ALLOC_MAX_GPUS)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *u = json_string_value(json_array_get(uuids, i));
        int g = -1;
        for (int k = 0; k < c->nodes[ni].ngpus && u; k++)
            if (strcmp(json_string_value(json_object_get(node_gpu_doc(&c->nodes[ni], k), "uuid")), u) == 0)
                g = c->nodes[ni].gpu[k];
        if (g < 0)
            return -1;
        p->gpu[i] = g;
        p->req_tflops[i] = json_number_value(json_array_get(rq, i));
        p->lim_tflops[i] = json_number_value(json_array_get(lm, i));
    }
    p->ngpus = (int)n;
    p->node = c->nodes[ni].id;
    p->req_vram = (uint64_t)json_integer_value(json_object_get(a, "vram_request"));
    p->lim_vram = (uint64_t)json_integer_value(json_object_get(a, "vram_limit"));
    *node = ni;
    return 0;
}

static int node_index_of_alloc_id(const gp_controller *c, int alloc_node)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].id == alloc_node)
            return i;
    return -1;
}

/* The slot-set id an agent gives a workload's allocation: "<namespace>.<name>" (both DNS labels). */
static void alloc_id(const char *key, char *out, size_t len)
{
    snprintf(out, len, "%s", key);
    char *slash = strchr(out, '/');
    if (slash)
        *slash = '.';
}

static int work_add_mem(gp_controller *c, json_t *doc, gp_err *err)
{
    cn_workload *w = calloc(1, sizeof *w);
    if (w == NULL || grow((void **)&c->work, &c->capwork, c->nwork, sizeof *c->work) < 0) {
        free(w);
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    }
    w->doc = json_incref(doc);
    json_t *spec = json_object_get(doc, "spec");
    if (work_spec(c, spec, &w->req, err) < 0) {
        json_decref(w->doc);
        free(w);
        return -1;
    }
    snprintf(w->key, sizeof w->key, "%s/%s", json_string_value(json_object_get(spec, "namespace")),
             json_string_value(json_object_get(spec, "name")));
    w->node = -1;
    /* pending workloads are placed oldest first: by the revision that created them */
    w->created_seq =
        (uint64_t)json_integer_value(json_object_get(json_object_get(doc, "status"), "created_revision"));
    json_t *a = json_object_get(json_object_get(doc, "status"), "allocation");
    if (a && placement_from_json(c, a, &w->place, &w->node) == 0) {
        gp_alloc_commit(c->alloc, &w->req, &w->place); /* restored: trusted */
        w->placed = true;
    } else if (a) {
        gp_log(GP_LOG_ERROR, CN_LOG,
               "workload %s: its allocation names a node or GPU the controller does not know; "
               "it is pending again",
               w->key);
    }
    json_object_set_new(c->work_index, w->key, json_integer(c->nwork));
    c->work[c->nwork++] = w;
    return 0;
}

static void work_remove_mem(gp_controller *c, cn_workload *w)
{
    json_t *i = json_object_get(c->work_index, w->key);
    int idx = (int)json_integer_value(i);
    json_object_del(c->work_index, w->key);
    c->work[idx] = c->work[--c->nwork];
    if (idx < c->nwork)
        json_object_set_new(c->work_index, c->work[idx]->key, json_integer(idx));
    json_decref(w->doc);
    free(w);
}

/* Observed state of a workload's allocation (from its node's last heartbeat), or NULL. */
static json_t *observed_set(const gp_controller *c, const cn_workload *w)
{
    if (!w->placed || w->node < 0)
        return NULL;
    const char *id = json_string_value(
        json_object_get(json_object_get(json_object_get(w->doc, "status"), "allocation"), "id"));
    json_t *sets = json_object_get(c->nodes[w->node].observed, "sets"), *s;
    size_t i;
    json_array_foreach(sets, i,
                       s) if (id && strcmp(json_string_value(json_object_get(s, "id")), id) == 0) return s;
    return NULL;
}

json_t *cn_work_json(const gp_controller *c, const cn_workload *w)
{
    json_t *o = json_deep_copy(w->doc);
    json_t *st = json_object_get(o, "status");
    json_t *obs = observed_set(c, w);
    json_object_set_new(st, "ready", json_boolean(obs && json_is_true(json_object_get(obs, "ready"))));
    if (obs) {
        json_object_set(st, "env", json_object_get(obs, "env"));
        json_t *remote = json_object_get(obs, "remote_env"); /* GPU-over-IP, when the node runs a worker */
        if (json_is_object(remote))
            json_object_set(st, "remote_env", remote);
        json_t *u = json_object_get(obs, "usage");
        if (u)
            json_object_set(st, "usage", u);
    }
    return o;
}

static int persist_work(gp_controller *c, const char *key, json_t *doc, gp_err *err)
{
    if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "workload", key, doc, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    return 0;
}

static void touch_node(gp_controller *c, int ni)
{
    if (ni >= 0 && ni < c->nnodes)
        c->nodes[ni].alloc_rev = gp_store_revision(c->store);
}

int cn_work_create(gp_controller *c, json_t *body, json_t **out, bool *created, gp_err *err)
{
    json_t *spec = json_deep_copy(body);
    bool wait = false;
    if (gp_json_bool(spec, "wait_for_capacity", false, &wait, err) < 0) {
        json_decref(spec);
        return -1;
    }
    json_object_del(spec, "wait_for_capacity");
    gp_alloc_request r;
    if (work_spec(c, spec, &r, err) < 0) {
        json_decref(spec);
        if (err->code == GP_ERR_RANGE) /* a field out of range: a bad request (RANGE below means a quota) */
            err->code = GP_ERR_INVALID;
        return -1;
    }
    /* copies: the spec's strings are replaced when it is normalised again on the way in */
    char ns[64], name[64];
    snprintf(ns, sizeof ns, "%s", json_string_value(json_object_get(spec, "namespace")));
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(spec, "name")));
    cn_workload *old = cn_work_find(c, ns, name);
    if (old) {
        bool same = json_equal(json_object_get(old->doc, "spec"), spec);
        json_decref(spec);
        if (!same)
            return gp_err_set(
                err, GP_ERR_EXISTS,
                "workload %s/%s exists with a different spec; delete it first, or choose another name", ns,
                name);
        *created = false;
        *out = cn_work_json(c, old);
        return 0;
    }
    char key[160], id[160], ts[32];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    alloc_id(key, id, sizeof id);
    now_iso(ts, sizeof ts);
    gp_alloc_placement p;
    gp_err why = {0};
    json_t *status;
    bool fits = gp_alloc_place(c->alloc, &r, &p, &why) == 0;
    json_int_t rev = (json_int_t)gp_store_revision(c->store) + 1; /* the revision that will create it */
    if (fits) {
        status = json_pack("{s:s, s:s, s:s, s:I, s:o}", "phase", phase_allocated, "message", "", "created",
                           ts, "created_revision", rev, "allocation", placement_json(c, id, &p));
    } else if (wait && why.code == GP_ERR_CONFLICT) {
        status = json_pack("{s:s, s:s, s:s, s:I}", "phase", phase_pending, "message", why.msg, "created", ts,
                           "created_revision", rev);
    } else {
        json_decref(spec);
        *err = why;
        return -1;
    }
    json_t *doc = json_pack("{s:o, s:o}", "spec", spec, "status", status);
    if (persist_work(c, key, doc, err) < 0) {
        json_decref(doc);
        return -1;
    }
    if (work_add_mem(c, doc, err) < 0) { /* cannot fail after work_spec passed, short of memory */
        json_decref(doc);
        return -1;
    }
    json_decref(doc);
    cn_workload *w = cn_work_find(c, ns, name);
    if (w->placed)
        touch_node(c, w->node);
    gp_log(GP_LOG_INFO, CN_LOG, "workload %s %s%s%s", key,
           fits ? "allocated on node " : "pending: ", fits ? c->nodes[w->node].name : why.msg, "");
    *created = true;
    *out = cn_work_json(c, w);
    broadcast(c);
    return 0;
}

int cn_work_patch(gp_controller *c, cn_workload *w, json_t *body, json_t **out, gp_err *err)
{
    static const char *const known[] = {"frozen", NULL};
    bool frozen = false;
    if (gp_json_only(body, known, err) < 0 || gp_json_bool(body, "frozen", false, &frozen, err) < 0)
        return gp_err_wrap(err, "a workload's placement-free fields can change (frozen); to change its size, "
                                "create it anew: ");
    json_t *doc = json_deep_copy(w->doc);
    if (json_object_get(body, "frozen"))
        json_object_set_new(json_object_get(doc, "status"), "frozen", json_boolean(frozen));
    if (persist_work(c, w->key, doc, err) < 0) {
        json_decref(doc);
        return -1;
    }
    json_decref(w->doc);
    w->doc = doc;
    touch_node(c, w->node);
    *out = cn_work_json(c, w);
    broadcast(c);
    return 0;
}

int cn_work_delete(gp_controller *c, cn_workload *w, gp_err *err)
{
    if (gp_store_begin(c->store, err) < 0 || gp_store_del(c->store, "workload", w->key, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    if (w->placed) {
        gp_alloc_release(c->alloc, &w->req, &w->place);
        touch_node(c, w->node);
    }
    gp_log(GP_LOG_INFO, CN_LOG, "workload %s deleted", w->key);
    work_remove_mem(c, w);
    broadcast(c);
    cn_retry_pending(c);
    return 0;
}

json_t *cn_work_explain(gp_controller *c, cn_workload *w)
{
    gp_alloc_placement p;
    gp_err why = {0};
    if (w->placed)
        gp_alloc_release(c->alloc, &w->req, &w->place); /* where would it go now, its own share free */
    int rc = gp_alloc_place(c->alloc, &w->req, &p, &why);
    if (w->placed)
        gp_alloc_commit(c->alloc, &w->req, &w->place);
    if (rc < 0)
        return json_pack("{s:b, s:s}", "fits", 0, "reason", why.msg);
    const cn_node *n = node_of_gpu(c, p.gpu[0], NULL);
    json_t *g = json_array();
    for (int i = 0; i < p.ngpus; i++)
        json_array_append_new(g, json_string(gpu_uuid(c, p.gpu[i])));
    return json_pack("{s:b, s:s, s:o}", "fits", 1, "node", n ? n->name : "?", "gpus", g);
}

static int by_seq(const void *a, const void *b)
{
    const cn_workload *x = *(cn_workload *const *)a, *y = *(cn_workload *const *)b;
    return x->created_seq < y->created_seq ? -1 : x->created_seq > y->created_seq;
}

void cn_retry_pending(gp_controller *c)
{
    cn_workload **pending = NULL;
    int n = 0;
    for (int i = 0; i < c->nwork; i++)
        if (!c->work[i]->placed) {
            cn_workload **p = realloc(pending, (size_t)(n + 1) * sizeof *p);
            if (p == NULL)
                break;
            pending = p;
            pending[n++] = c->work[i];
        }
    if (n > 1)
        qsort(pending, (size_t)n, sizeof *pending, by_seq);
    for (int i = 0; i < n; i++) {
        cn_workload *w = pending[i];
        gp_alloc_placement p;
        gp_err why = {0}, err = {0};
        if (gp_alloc_place(c->alloc, &w->req, &p, &why) < 0) {
            json_t *st = json_object_get(w->doc, "status");
            if (strcmp(json_string_value(json_object_get(st, "message")), why.msg) != 0) {
                json_t *doc = json_deep_copy(w->doc);
                json_object_set_new(json_object_get(doc, "status"), "message", json_string(why.msg));
                if (persist_work(c, w->key, doc, &err) == 0) {
                    json_decref(w->doc);
                    w->doc = doc;
                } else {
                    json_decref(doc);
                }
            }
            continue;
        }
        char id[160];
        alloc_id(w->key, id, sizeof id);
        json_t *doc = json_deep_copy(w->doc);
        json_t *st = json_object_get(doc, "status");
        json_object_set_new(st, "phase", json_string(phase_allocated));
        json_object_set_new(st, "message", json_string(""));
        json_object_set_new(st, "allocation", placement_json(c, id, &p));
        if (persist_work(c, w->key, doc, &err) < 0) {
            gp_log(GP_LOG_ERROR, CN_LOG, "placing pending workload %s: %s", w->key, err.msg);
            json_decref(doc);
            continue;
        }
        json_decref(w->doc);
        w->doc = doc;
        gp_alloc_commit(c->alloc, &w->req, &p);
        w->place = p;
        w->placed = true;
        w->node = node_index_of_alloc_id(c, p.node);
        touch_node(c, w->node);
        gp_log(GP_LOG_INFO, CN_LOG, "pending workload %s allocated on node %s", w->key,
               c->nodes[w->node].name);
        broadcast(c);
    }
    free(pending);
}

/* ---- profiles --------------------------------------------------------------------------------------- */

int cn_profile_put(gp_controller *c, json_t *body, json_t **out, gp_err *err)
{
    const char *name = NULL;
    if (gp_json_str(body, "name", true, 63, &name, err) < 0)
        return -1;
    if (!cn_name_valid(name))
        return gp_err_set(err, GP_ERR_INVALID, "profile name \"%s\" must be 1-63 of a-z, 0-9 and '-'", name);
    static const char *const known[] = {"name",          "pool",
                                        "gpus",          "tflops_request",
                                        "tflops_limit",  "percent_request",
                                        "percent_limit", "vram_request",
                                        "vram_limit",    "qos",
                                        "model",         "vendor",
                                        "remote",        NULL};
    if (gp_json_only(body, known, err) < 0)
        return -1;
    /* the fields must make sense as a workload's (checked on a copy with a placeholder name) */
    json_t *probe = json_deep_copy(body);
    json_object_set_new(probe, "name", json_string("probe"));
    if (!json_object_get(probe, "vram_request") && !json_object_get(probe, "vram_limit"))
        json_object_set_new(probe, "vram_limit", json_integer(1));
    gp_alloc_request r;
    int rc = work_spec(c, probe, &r, err);
    json_decref(probe);
    if (rc < 0)
        return gp_err_wrap(err, "profile \"%s\": ", name);
    if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "profile", name, body, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    json_object_set_new(c->profiles, name, json_deep_copy(body));
    *out = json_deep_copy(body);
    return 0;
}

int cn_profile_delete(gp_controller *c, const char *name, gp_err *err)
{
    if (!json_object_get(c->profiles, name))
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no profile \"%s\"", name);
    if (gp_store_begin(c->store, err) < 0 || gp_store_del(c->store, "profile", name, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    json_object_del(c->profiles, name);
    return 0;
}

/* ---- nodes ------------------------------------------------------------------------------------------ */

static int node_gpus_add(gp_controller *c, cn_node *n, json_t *gpus, gp_err *err)
{
    json_t *g;
    size_t i;
    json_array_foreach(gpus, i, g)
    {
        if ((int)i < n->ngpus)
            continue; /* known already */
        if (n->ngpus >= CN_MAX_NODE_GPUS)
            return gp_err_set(err, GP_ERR_RANGE, "node %s reports more than %d GPUs", n->name,
                              CN_MAX_NODE_GPUS);
        gp_alloc_gpu_spec s = {.uuid = json_string_value(json_object_get(g, "uuid")),
                               .model = json_string_value(json_object_get(g, "model")),
                               .vendor = json_string_value(json_object_get(g, "vendor")),
                               .tflops = json_number_value(json_object_get(g, "tflops")),
                               .vram = (uint64_t)json_integer_value(json_object_get(g, "vram"))};
        int id = gp_alloc_add_gpu(c->alloc, n->id, &s, err);
        if (id < 0)
            return -1;
        n->gpu[n->ngpus++] = id;
        gp_alloc_set_gpu_healthy(c->alloc, id, !json_is_false(json_object_get(g, "healthy")));
    }
    return 0;
}

/* GPU-over-IP: the node's worker as its agent reports it ({address, up, message}), or NULL when it runs none.
 * Only a node whose worker is up takes remote workloads. */
static json_t *node_worker(const json_t *doc)
{
    json_t *w = json_object_get(doc, "worker");
    return json_is_object(w) ? w : NULL;
}

static bool node_worker_up(const json_t *doc)
{
    return json_is_true(json_object_get(node_worker(doc), "up"));
}

/* Checks a registration's or heartbeat's "worker" (absent or null: none reported). */
static int check_worker(const json_t *body, gp_err *err)
{
    json_t *w = json_object_get(body, "worker");
    if (w == NULL || json_is_null(w))
        return 0;
    static const char *const known[] = {"address", "up", "message", NULL};
    const char *addr = NULL, *msg = NULL;
    bool up = false;
    if (!json_is_object(w))
        return gp_err_set(
            err, GP_ERR_INVALID,
            "field \"worker\" must be an object: {\"address\": \"tcp:HOST:PORT\", \"up\": true}");
    if (gp_json_only(w, known, err) < 0 || gp_json_str(w, "address", true, 299, &addr, err) < 0 ||
        gp_json_bool(w, "up", true, &up, err) < 0 || gp_json_str(w, "message", false, 511, &msg, err) < 0)
        return gp_err_wrap(err, "worker: ");
    if (addr[0] == '\0')
        return gp_err_set(err, GP_ERR_INVALID, "worker: field \"address\" must not be empty");
    return 0;
}

static int node_add_mem(gp_controller *c, json_t *doc, gp_err *err)
{
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *pool = json_string_value(json_object_get(doc, "pool"));
    int pi = pool ? cn_pool_find(c, pool) : -1;
    if (name == NULL || pi < 0)
        return gp_err_set(err, GP_ERR_INVALID, "node %s: no pool \"%s\"", name ? name : "?",
                          pool ? pool : "?");
    if (grow((void **)&c->nodes, &c->capnodes, c->nnodes, sizeof *c->nodes) < 0)
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    int id = gp_alloc_add_node(c->alloc, name, c->pools[pi].id, err);
    if (id < 0)
        return -1;
    cn_node *n = &c->nodes[c->nnodes];
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    n->id = id;
    n->pool = pi;
    n->doc = json_incref(doc);
    n->last_seen_ns = gp_now_ns(); /* a grace period of one timeout after a (re)start */
    if (node_gpus_add(c, n, json_object_get(doc, "gpus"), err) < 0) {
        json_decref(n->doc);
        return -1;
    }
    gp_alloc_set_node_worker(c->alloc, id,
                             node_worker_up(doc)); /* as last reported, until it reports again */
    c->nnodes++;
    return 0;
}

/* Checks and normalises a registration's GPU list. */
static int check_gpus(json_t *gpus, gp_err *err)
{
    if (!json_is_array(gpus) || json_array_size(gpus) > CN_MAX_NODE_GPUS)
        return gp_err_set(err, GP_ERR_INVALID, "field \"gpus\" must be a list of at most %d GPUs",
                          CN_MAX_NODE_GPUS);
    static const char *const known[] = {"uuid",   "index", "name",    "model", "vendor",
                                        "tflops", "vram",  "healthy", NULL};
    json_t *g;
    size_t i;
    json_array_foreach(gpus, i, g)
    {
        const char *uuid = NULL, *model = NULL, *vendor = NULL, *name = NULL;
        double tflops = 0;
        uint64_t vram = 0;
        int64_t index = 0;
        bool healthy = true;
        if (!json_is_object(g) || gp_json_only(g, known, err) < 0 ||
            gp_json_str(g, "uuid", true, 95, &uuid, err) < 0 ||
            gp_json_int(g, "index", false, 0, 1024, &index, err) < 0 ||
            gp_json_str(g, "name", false, 95, &name, err) < 0 ||
            gp_json_str(g, "model", false, 63, &model, err) < 0 ||
            gp_json_str(g, "vendor", false, 31, &vendor, err) < 0 ||
            gp_json_num(g, "tflops", true, 0, 1e6, &tflops, err) < 0 ||
            gp_json_bytes(g, "vram", true, &vram, err) < 0 ||
            gp_json_bool(g, "healthy", false, &healthy, err) < 0)
            return gp_err_wrap(err, "gpus[%zu]: ", i);
        if (vram == 0)
            return gp_err_set(err, GP_ERR_INVALID, "gpus[%zu]: vram must be more than 0", i);
        json_object_set_new(g, "vram", json_integer((json_int_t)vram));
        if (!model)
            json_object_set_new(g, "model", json_string("unknown"));
        if (!vendor)
            json_object_set_new(g, "vendor", json_string("nvidia"));
    }
    return 0;
}

int cn_node_register(gp_controller *c, const char *name, json_t *body, json_t **out, gp_err *err)
{
    if (!node_name_valid(name))
        return gp_err_set(err, GP_ERR_INVALID,
                          "node name \"%s\" must be a DNS name of at most 63 characters (a-z, 0-9, '-', '.')",
                          name);
    static const char *const known[] = {"pool", "api", "version", "gpus", "worker", NULL};
    const char *pool = "default", *api = "", *version = "";
    if (gp_json_only(body, known, err) < 0 || gp_json_str(body, "pool", false, 63, &pool, err) < 0 ||
        gp_json_str(body, "api", false, 255, &api, err) < 0 ||
        gp_json_str(body, "version", false, 63, &version, err) < 0 || check_worker(body, err) < 0)
        return -1;
    json_t *gpus = json_deep_copy(json_object_get(body, "gpus"));
    if (check_gpus(gpus, err) < 0) {
        json_decref(gpus);
        return -1;
    }
    int ni = cn_node_find(c, name);
    if (ni < 0 && cn_pool_find(c, pool) < 0) {
        json_decref(gpus);
        return gp_err_set(err, GP_ERR_INVALID, "no pool \"%s\" for node %s: create it first (POST /v1/pools)",
                          pool, name);
    }
    /* a known node keeps its pool and the order of its GPUs; GPUs it no longer reports are kept, unhealthy */
    json_t *doc;
    if (ni >= 0) {
        doc = json_deep_copy(c->nodes[ni].doc);
        json_t *known_gpus = json_object_get(doc, "gpus"), *g;
        size_t i;
        json_array_foreach(gpus, i, g)
        {
            const char *u = json_string_value(json_object_get(g, "uuid"));
            bool found = false;
            json_t *k;
            size_t j;
            json_array_foreach(known_gpus, j,
                               k) if (strcmp(json_string_value(json_object_get(k, "uuid")), u) == 0)
            {
                json_array_set(known_gpus, j, g);
                found = true;
            }
            if (!found)
                json_array_append(known_gpus, g);
        }
        json_decref(gpus);
    } else {
        char ts[32];
        now_iso(ts, sizeof ts);
        doc = json_pack("{s:s, s:s, s:o, s:s}", "name", name, "pool", pool, "gpus", gpus, "registered", ts);
    }
    json_object_set_new(doc, "api", json_string(api));
    json_object_set_new(doc, "version", json_string(version));
    json_t *worker = node_worker(body); /* what the agent runs now: a worker it no longer has is gone */
    if (worker)
        json_object_set_new(doc, "worker", json_deep_copy(worker));
    else
        json_object_del(doc, "worker");
    if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "node", name, doc, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        json_decref(doc);
        return -1;
    }
    if (ni < 0) {
        if (node_add_mem(c, doc, err) < 0) {
            json_decref(doc);
            return -1;
        }
        ni = c->nnodes - 1;
        gp_log(GP_LOG_INFO, CN_LOG, "node %s registered with %zu GPU(s) in pool %s", name,
               json_array_size(json_object_get(doc, "gpus")), pool);
    } else {
        cn_node *n = &c->nodes[ni];
        json_decref(n->doc);
        n->doc = json_incref(doc);
        if (node_gpus_add(c, n, json_object_get(doc, "gpus"), err) < 0) {
            json_decref(doc);
            return -1;
        }
    }
    json_decref(doc);
    cn_node *n = &c->nodes[ni];
    n->last_seen_ns = gp_now_ns();
    if (n->lost) {
        n->lost = false;
        gp_alloc_set_node_ready(c->alloc, n->id, true);
    }
    gp_alloc_set_node_worker(c->alloc, n->id, node_worker_up(n->doc));
    *out = json_pack("{s:s, s:I}", "node", name, "revision", (json_int_t)n->alloc_rev);
    broadcast(c);
    cn_retry_pending(c);
    return 0;
}

/* Sets the phase of every workload placed on node ni (persisted in one transaction). */
static void set_phase_on_node(gp_controller *c, int ni, const char *from, const char *to)
{
    gp_err err = {0};
    if (gp_store_begin(c->store, &err) < 0) {
        gp_log(GP_LOG_ERROR, CN_LOG, "node %s: %s", c->nodes[ni].name, err.msg);
        return;
    }
    json_t **docs = calloc((size_t)c->nwork + 1, sizeof *docs);
    int changed = 0;
    for (int i = 0; i < c->nwork && docs; i++) {
        cn_workload *w = c->work[i];
        json_t *st = json_object_get(w->doc, "status");
        if (!w->placed || w->node != ni || strcmp(json_string_value(json_object_get(st, "phase")), from) != 0)
            continue;
        docs[i] = json_deep_copy(w->doc);
        json_object_set_new(json_object_get(docs[i], "status"), "phase", json_string(to));
        json_object_set_new(json_object_get(docs[i], "status"), "message",
                            json_string(strcmp(to, phase_lost) == 0 ? "its node stopped reporting" : ""));
        if (gp_store_put(c->store, "workload", w->key, docs[i], &err) < 0)
            break;
        changed++;
    }
    if (docs == NULL || err.code != GP_OK || gp_store_commit(c->store, &err) < 0) {
        gp_store_rollback(c->store);
        gp_log(GP_LOG_ERROR, CN_LOG, "node %s: recording its workloads as %s failed: %s", c->nodes[ni].name,
               to, docs ? err.msg : "out of memory");
        for (int i = 0; docs && i < c->nwork; i++)
            json_decref(docs[i]);
        free(docs);
        return;
    }
    for (int i = 0; i < c->nwork; i++)
        if (docs[i]) {
            json_decref(c->work[i]->doc);
            c->work[i]->doc = docs[i];
        }
    free(docs);
    if (changed)
        gp_log(GP_LOG_WARN, CN_LOG, "node %s: %d workload(s) %s", c->nodes[ni].name, changed,
               strcmp(to, phase_lost) == 0 ? "lost (the node stopped reporting)"
                                           : "back (the node reports again)");
}

int cn_node_heartbeat(gp_controller *c, const char *name, json_t *body, json_t **out, gp_err *err)
{
    int ni = cn_node_find(c, name);
    if (ni < 0)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "node %s is not registered (POST /v1/nodes/%s/register)",
                          name, name);
    static const char *const known[] = {"gpus", "sets", "worker", NULL};
    if (gp_json_only(body, known, err) < 0 || check_worker(body, err) < 0)
        return -1;
    json_t *sets = json_object_get(body, "sets"), *gpus = json_object_get(body, "gpus");
    if ((sets && !json_is_array(sets)) || (gpus && !json_is_array(gpus)))
        return gp_err_set(err, GP_ERR_INVALID, "fields \"sets\" and \"gpus\" must be lists");
    cn_node *n = &c->nodes[ni];
    /* a change of its worker (up, down, another address) is stored first: if that fails, nothing changed */
    json_t *worker = node_worker(body);
    bool worker_changed = worker && !json_equal(worker, node_worker(n->doc));
    if (worker_changed) {
        json_t *doc = json_deep_copy(n->doc);
        json_object_set_new(doc, "worker", json_deep_copy(worker));
        if (gp_store_begin(c->store, err) < 0 || gp_store_put(c->store, "node", name, doc, err) < 0 ||
            gp_store_commit(c->store, err) < 0) {
            gp_store_rollback(c->store);
            json_decref(doc);
            return -1;
        }
        json_decref(n->doc);
        n->doc = doc;
        gp_alloc_set_node_worker(c->alloc, n->id, node_worker_up(doc));
        gp_log(GP_LOG_INFO, CN_LOG, "node %s: GPU-over-IP worker %s is %s%s%s", n->name,
               json_string_value(json_object_get(worker, "address")), node_worker_up(doc) ? "up" : "down",
               json_is_string(json_object_get(worker, "message")) ? ": " : "",
               json_is_string(json_object_get(worker, "message"))
                   ? json_string_value(json_object_get(worker, "message"))
                   : "");
    }
    n->last_seen_ns = gp_now_ns();
    json_decref(n->observed);
    n->observed = json_incref(body);
    json_t *g;
    size_t i;
    json_array_foreach(gpus, i, g)
    {
        const char *u = json_string_value(json_object_get(g, "uuid"));
        for (int k = 0; u && k < n->ngpus; k++)
            if (strcmp(json_string_value(json_object_get(node_gpu_doc(n, k), "uuid")), u) == 0) {
                gp_alloc_set_gpu_healthy(c->alloc, n->gpu[k], !json_is_false(json_object_get(g, "healthy")));
                json_t *load = json_object_get(g, "load");
                if (json_is_number(load))
                    gp_alloc_set_gpu_load(c->alloc, n->gpu[k], json_number_value(load));
            }
    }
    if (n->lost) {
        n->lost = false;
        gp_alloc_set_node_ready(c->alloc, n->id, true);
        set_phase_on_node(c, ni, phase_lost, phase_allocated);
        gp_log(GP_LOG_INFO, CN_LOG, "node %s reports again", n->name);
        cn_retry_pending(c);
    } else if (worker_changed && node_worker_up(n->doc)) {
        cn_retry_pending(c); /* remote workloads waiting for a worker */
    }
    *out = json_pack("{s:I}", "revision", (json_int_t)n->alloc_rev);
    broadcast(c);
    return 0;
}

void cn_check_nodes(gp_controller *c, uint64_t now)
{
    for (int i = 0; i < c->nnodes; i++) {
        cn_node *n = &c->nodes[i];
        if (n->lost || now - n->last_seen_ns < c->cfg.node_timeout_ms * 1000000ull)
            continue;
        n->lost = true;
        gp_alloc_set_node_ready(c->alloc, n->id, false);
        gp_log(GP_LOG_WARN, CN_LOG, "node %s has not reported for %.1f s: it is lost", n->name,
               (now - n->last_seen_ns) / 1e9);
        set_phase_on_node(c, i, phase_allocated, phase_lost);
        broadcast(c);
    }
}

int cn_node_delete(gp_controller *c, const char *name, gp_err *err)
{
    int ni = cn_node_find(c, name);
    if (ni < 0)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no node \"%s\"", name);
    for (int i = 0; i < c->nwork; i++)
        if (c->work[i]->placed && c->work[i]->node == ni)
            return gp_err_set(err, GP_ERR_CONFLICT, "node %s still holds workload %s; delete it first", name,
                              c->work[i]->key);
    if (gp_store_begin(c->store, err) < 0 || gp_store_del(c->store, "node", name, err) < 0 ||
        gp_store_commit(c->store, err) < 0) {
        gp_store_rollback(c->store);
        return -1;
    }
    /* the allocator keeps its ids; the node just never takes work again */
    gp_alloc_set_node_ready(c->alloc, c->nodes[ni].id, false);
    json_decref(c->nodes[ni].doc);
    json_decref(c->nodes[ni].observed);
    int last = --c->nnodes;
    if (ni != last) {
        c->nodes[ni] = c->nodes[last];
        for (int i = 0; i < c->nwork; i++)
            if (c->work[i]->node == last)
                c->work[i]->node = ni;
    }
    broadcast(c);
    return 0;
}

json_t *cn_node_json(const gp_controller *c, const cn_node *n)
{
    json_t *o = json_deep_copy(n->doc);
    json_object_set_new(o, "state", json_string(n->lost ? "Lost" : "Ready"));
    json_object_set_new(o, "last_report_seconds_ago", json_real((gp_now_ns() - n->last_seen_ns) / 1e9));
    int placed = 0;
    for (int i = 0; i < c->nwork; i++)
        placed += c->work[i]->placed && c->work[i]->node == n - c->nodes;
    json_object_set_new(o, "workloads", json_integer(placed));
    json_t *gpus = json_object_get(o, "gpus"), *g;
    size_t i;
    json_array_foreach(gpus, i, g)
    {
        gp_alloc_gpu_state s;
        if ((int)i < n->ngpus && gp_alloc_gpu_state_get(c->alloc, n->gpu[i], &s) == 0) {
            json_object_set_new(g, "healthy", json_boolean(s.healthy));
            json_object_set_new(g, "committed",
                                json_pack("{s:f, s:f, s:I, s:I, s:i}", "tflops_request", s.req_tflops,
                                          "tflops_limit", s.lim_tflops, "vram_request",
                                          (json_int_t)s.req_vram, "vram_limit", (json_int_t)s.lim_vram,
                                          "workloads", s.allocations));
            json_object_set_new(g, "load", json_real(s.load));
        }
    }
    return o;
}

json_t *cn_gpus_json(const gp_controller *c, const char *node_filter)
{
    json_t *arr = json_array();
    for (int i = 0; i < c->nnodes; i++) {
        if (node_filter && strcmp(node_filter, c->nodes[i].name) != 0)
            continue;
        json_t *n = cn_node_json(c, &c->nodes[i]), *g;
        size_t k;
        json_array_foreach(json_object_get(n, "gpus"), k, g)
        {
            json_object_set_new(g, "node", json_string(c->nodes[i].name));
            json_object_set_new(g, "pool", json_string(c->pools[c->nodes[i].pool].name));
            json_array_append(arr, g);
        }
        json_decref(n);
    }
    return arr;
}

json_t *cn_node_allocations(const gp_controller *c, const cn_node *n)
{
    json_t *arr = json_array();
    int ni = (int)(n - c->nodes);
    for (int i = 0; i < c->nwork; i++) {
        const cn_workload *w = c->work[i];
        if (!w->placed || w->node != ni)
            continue;
        json_t *spec = json_object_get(w->doc, "spec"), *st = json_object_get(w->doc, "status");
        json_t *a = json_object_get(st, "allocation");
        json_t *req = json_array(), *lim = json_array();
        for (int k = 0; k < w->place.ngpus; k++) {
            gp_alloc_gpu_state s;
            double t =
                gp_alloc_gpu_state_get(c->alloc, w->place.gpu[k], &s) == 0 && s.tflops > 0 ? s.tflops : 1;
            json_array_append_new(req, json_real(w->place.req_tflops[k] / t * 100));
            json_array_append_new(lim, json_real(w->place.lim_tflops[k] / t * 100));
        }
        json_array_append_new(
            arr,
            json_pack("{s:O, s:O, s:O, s:O, s:O, s:o, s:o, s:O, s:b}", "id", json_object_get(a, "id"),
                      "workload", json_object_get(spec, "name"), "namespace",
                      json_object_get(spec, "namespace"), "gpus", json_object_get(a, "gpus"), "vram",
                      json_object_get(a, "vram_limit"), "percent_request", req, "percent_limit", lim, "qos",
                      json_object_get(spec, "qos"), "frozen", json_is_true(json_object_get(st, "frozen"))));
    }
    return arr;
}

/* ---- loading ---------------------------------------------------------------------------------------- */

typedef struct load_ctx {
    gp_controller *c;
    gp_err *err;
    int failed;
} load_ctx;

static int load_pool(void *ctx, const char *key, json_t *doc, uint64_t rev)
{
    (void)rev;
    load_ctx *l = ctx;
    if (pool_add_mem(l->c, doc, l->err) < 0) {
        gp_err_wrap(l->err, "pool %s in the store: ", key);
        return l->failed = 1;
    }
    return 0;
}

static int load_node(void *ctx, const char *key, json_t *doc, uint64_t rev)
{
    load_ctx *l = ctx;
    if (node_add_mem(l->c, doc, l->err) < 0) {
        gp_err_wrap(l->err, "node %s in the store: ", key);
        return l->failed = 1;
    }
    l->c->nodes[l->c->nnodes - 1].alloc_rev = rev;
    return 0;
}

static int load_quota(void *ctx, const char *key, json_t *doc, uint64_t rev)
{
    (void)rev;
    load_ctx *l = ctx;
    if (quota_add_mem(l->c, key, doc, l->err) < 0) {
        gp_err_wrap(l->err, "quota %s in the store: ", key);
        return l->failed = 1;
    }
    return 0;
}

static int load_profile(void *ctx, const char *key, json_t *doc, uint64_t rev)
{
    (void)rev;
    load_ctx *l = ctx;
    json_object_set(l->c->profiles, key, doc);
    return 0;
}

static int load_work(void *ctx, const char *key, json_t *doc, uint64_t rev)
{
    load_ctx *l = ctx;
    if (work_add_mem(l->c, doc, l->err) < 0) {
        gp_err_wrap(l->err, "workload %s in the store: ", key);
        return l->failed = 1;
    }
    cn_workload *w = l->c->work[l->c->nwork - 1];
    if (w->placed && w->node >= 0 && l->c->nodes[w->node].alloc_rev < rev)
        l->c->nodes[w->node].alloc_rev = rev;
    return 0;
}

int cn_load(gp_controller *c, gp_err *err)
{
    c->work_index = json_object();
    c->profiles = json_object();
    load_ctx l = {c, err, 0};
    if (gp_store_each(c->store, "pool", load_pool, &l, err) < 0 || l.failed ||
        gp_store_each(c->store, "node", load_node, &l, err) < 0 || l.failed ||
        gp_store_each(c->store, "quota", load_quota, &l, err) < 0 || l.failed ||
        gp_store_each(c->store, "profile", load_profile, &l, err) < 0 || l.failed)
        return -1;
    /* workloads last: they refer to all of the above */
    if (gp_store_each(c->store, "workload", load_work, &l, err) < 0 || l.failed)
        return -1;
    if (cn_pool_find(c, "default") < 0 && c->npools == 0) {
        json_t *out = NULL, *body = json_pack("{s:s}", "name", "default");
        int rc = cn_pool_put(c, body, true, NULL, &out, err);
        json_decref(body);
        json_decref(out);
        if (rc < 0)
            return -1;
    }
    gp_log(GP_LOG_INFO, CN_LOG, "loaded %d pool(s), %d node(s), %d workload(s), %d quota(s) at revision %llu",
           c->npools, c->nnodes, c->nwork, c->nquotas, (unsigned long long)gp_store_revision(c->store));
    return 0;
}

void cn_unload(gp_controller *c)
{
    for (int i = 0; i < c->npools; i++)
        json_decref(c->pools[i].doc);
    for (int i = 0; i < c->nnodes; i++) {
        json_decref(c->nodes[i].doc);
        json_decref(c->nodes[i].observed);
    }
    for (int i = 0; i < c->nwork; i++) {
        json_decref(c->work[i]->doc);
        free(c->work[i]);
    }
    for (int i = 0; i < c->nquotas; i++)
        json_decref(c->quotas[i].doc);
    free(c->pools);
    free(c->nodes);
    free(c->work);
    free(c->quotas);
    json_decref(c->work_index);
    json_decref(c->profiles);
}

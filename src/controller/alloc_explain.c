/* alloc_explain.c - why a workload fits nowhere, in words a user can act on (the allocator's slow path).
 *
 * Only called when placing failed: it examines every GPU of the pool (or of the pinned node) and counts each
 * under the first constraint it fails - node not ready, no GPU-over-IP worker up on the node (remote
 * workloads only), GPU unhealthy, model, vendor, then the four capacity
 * dimensions in the order request TFLOPS, request VRAM, TFLOPS limit, VRAM limit - or as fitting on its own
 * when it fails none (then no node has enough such GPUs). The message names the commonest causes with their
 * numbers (what was asked, the most any GPU has free and where) and, when it can tell cheaply, what would
 * fit: the most of one dimension that k GPUs of one node still offer with everything else unchanged, fewer
 * GPUs, no model/vendor filter, or a local workload instead of a remote one. A remote workload that no node
 * of its scope can take for want of a worker is told so in one sentence, with what starts one. It stays
 * within GP_ERR_MSG_MAX, dropping the least common causes first.
 */
#include "controller/alloc_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define RES_T ((1u << ALLOC_DIM_REQ_T) | (1u << ALLOC_DIM_LIM_T))
#define RES_V ((1u << ALLOC_DIM_REQ_V) | (1u << ALLOC_DIM_LIM_V))

enum {
    R_NOT_READY,
    R_NO_WORKER,
    R_UNHEALTHY,
    R_MODEL,
    R_VENDOR,
    R_CAP /* + dimension */,
    R_FITS = R_CAP + ALLOC_NDIM,
    NREASON
};

const char *gp_alloc_fmt_tflops(char *buf, size_t n, int64_t utf)
{
    if (utf < 0)
        utf = 0;
    int64_t milli = utf / 1000;
    snprintf(buf, n, "%lld.%03lld", (long long)(milli / 1000), (long long)(milli % 1000));
    char *dot = strchr(buf, '.');
    if (dot != NULL) {
        char *e = buf + strlen(buf) - 1;
        while (e > dot && *e == '0')
            *e-- = '\0';
        if (e == dot)
            *e = '\0';
    }
    return buf;
}

static const char *fmt_hundredths(char *buf, size_t n, int64_t hundredths, const char *unit)
{
    snprintf(buf, n, "%lld.%02lld", (long long)(hundredths / 100), (long long)(hundredths % 100));
    char *dot = strchr(buf, '.'), *e = buf + strlen(buf) - 1;
    while (e > dot && *e == '0')
        *e-- = '\0';
    if (e == dot)
        *e = '\0';
    size_t len = strlen(buf);
    snprintf(buf + len, n - len, "%s", unit);
    return buf;
}

const char *gp_alloc_fmt_bytes(char *buf, size_t n, int64_t bytes)
{
    static const struct {
        int shift;
        const char *unit;
    } units[] = {{40, " TiB"}, {30, " GiB"}, {20, " MiB"}, {10, " KiB"}};
    if (bytes < 0)
        bytes = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        int64_t one = (int64_t)1 << units[i].shift;
        if (bytes >= one) /* hundredths, rounded down, without overflowing */
            return fmt_hundredths(buf, n, bytes / one * 100 + (bytes % one) * 100 / one, units[i].unit);
    }
    snprintf(buf, n, "%lld B", (long long)bytes);
    return buf;
}

/* A free amount in the request's own units: uTF, hundredths of a percent of the GPU, or bytes. */
static double in_request_units(const alloc_query *q, const alloc_gpu *g, int d, int64_t v)
{
    if (q->pct && (d == ALLOC_DIM_REQ_T || d == ALLOC_DIM_LIM_T))
        return floor((double)v * 10000.0 / (double)g->cap[ALLOC_DIM_REQ_T]);
    return (double)v;
}

static const char *fmt_units(char *buf, size_t n, const alloc_query *q, int d, double v)
{
    if (v < 0)
        v = 0;
    if (d == ALLOC_DIM_REQ_V || d == ALLOC_DIM_LIM_V)
        return gp_alloc_fmt_bytes(buf, n, (int64_t)v);
    if (q->pct)
        return fmt_hundredths(buf, n, (int64_t)v, "%");
    char t[32];
    snprintf(buf, n, "%s TFLOPS", gp_alloc_fmt_tflops(t, sizeof t, (int64_t)v));
    return buf;
}

/* What the request asks of dimension d, in request units. */
static double asked(const alloc_query *q, int d)
{
    switch (d) {
    case ALLOC_DIM_REQ_T: return q->pct ? q->req_pct * 100 : (double)q->req_t;
    case ALLOC_DIM_LIM_T: return q->pct ? q->lim_pct * 100 : (double)q->lim_t;
    case ALLOC_DIM_REQ_V: return (double)q->req_v;
    default: return (double)q->lim_v;
    }
}

typedef struct survey {
    int total;
    int count[NREASON];
    double most[ALLOC_NDIM]; /* the most free among GPUs passing health and filters, request units */
    int most_node[ALLOC_NDIM];
    double best[ALLOC_NDIM]; /* the most of d that k GPUs of one node offer, others fitting */
    double joint[2]; /* the most of TFLOPS (0) or VRAM (1) as request and limit both, the other fitting */
    int fit_max, fit_max_node;
    int unfiltered_node; /* a node where k GPUs would fit without the model/vendor filters */
    int local_node;      /* a remote request: a node without a worker where k GPUs would fit */
} survey;

/* Keeps top[0..*n) the k largest values seen, largest first. */
static void keep_top(double *top, int *n, int k, double v)
{
    int pos;
    if (*n < k)
        pos = (*n)++;
    else if (v <= top[k - 1])
        return;
    else
        pos = k - 1;
    while (pos > 0 && top[pos - 1] < v) {
        top[pos] = top[pos - 1];
        pos--;
    }
    top[pos] = v;
}

/* The capacity dimensions in which GPU g lacks what q needs, as bits. */
static unsigned capacity_fails(const alloc_query *q, const alloc_gpu *g)
{
    int64_t need[ALLOC_NDIM];
    gp_alloc_need(q, g, need);
    unsigned fails = 0;
    for (int d = 0; d < ALLOC_NDIM; d++)
        if (g->cap[d] - g->used[d] < need[d])
            fails |= 1u << d;
    return fails;
}

static void survey_node(const gp_allocator *a, const alloc_query *q, int node, survey *s)
{
    const alloc_node *n = &a->nodes[node];
    double top[ALLOC_NDIM][GP_ALLOC_MAX_GPUS], jtop[2][GP_ALLOC_MAX_GPUS];
    int ntop[ALLOC_NDIM] = {0}, njtop[2] = {0};
    int nfit = 0, nfit_unfiltered = 0, nfit_local = 0;
    for (int i = 0; i < n->ngpus; i++) {
        const alloc_gpu *g = &a->gpus[n->gpus[i]];
        s->total++;
        if (!n->ready) {
            s->count[R_NOT_READY]++;
            continue;
        }
        if (q->remote && !n->worker) {
            s->count[R_NO_WORKER]++;
            nfit_local += g->healthy && gp_alloc_gpu_matches(q, g) && capacity_fails(q, g) == 0;
            continue;
        }
        if (!g->healthy) {
            s->count[R_UNHEALTHY]++;
            continue;
        }
        unsigned fails = capacity_fails(q, g);
        if (fails == 0)
            nfit_unfiltered++;
        if (q->model != -1 && g->model != q->model) {
            s->count[R_MODEL]++;
            continue;
        }
        if (q->vendor != -1 && g->vendor != q->vendor) {
            s->count[R_VENDOR]++;
            continue;
        }
        double u[ALLOC_NDIM];
        for (int d = 0; d < ALLOC_NDIM; d++) {
            u[d] = in_request_units(q, g, d, g->cap[d] - g->used[d]);
            if (s->most_node[d] < 0 || u[d] > s->most[d]) {
                s->most[d] = u[d];
                s->most_node[d] = node;
            }
            if ((fails & ~(1u << d)) == 0)
                keep_top(top[d], &ntop[d], q->k, u[d]);
        }
        /* request and limit of one resource capped together at x: x may be as much as the least free of
         * the dimensions of it that fail (those that fit still do, being asked no more) */
        for (int res = 0; res < 2; res++) {
            unsigned mine = res == 0 ? RES_T : RES_V;
            if (fails & ~mine)
                continue;
            int dr = res == 0 ? ALLOC_DIM_REQ_T : ALLOC_DIM_REQ_V,
                dl = res == 0 ? ALLOC_DIM_LIM_T : ALLOC_DIM_LIM_V;
            double x = fmin(u[dr], u[dl]); /* a GPU that fits takes at least what it is asked */
            if ((fails & mine) == (1u << dr))
                x = u[dr];
            else if ((fails & mine) == (1u << dl))
                x = u[dl];
            keep_top(jtop[res], &njtop[res], q->k, x);
        }
        if (fails == 0) {
            nfit++;
            s->count[R_FITS]++;
        } else {
            int d = 0;
            while (!(fails & (1u << d)))
                d++;
            s->count[R_CAP + d]++;
        }
    }
    if (nfit > s->fit_max) {
        s->fit_max = nfit;
        s->fit_max_node = node;
    }
    for (int d = 0; d < ALLOC_NDIM; d++)
        if (ntop[d] >= q->k && top[d][q->k - 1] > s->best[d])
            s->best[d] = top[d][q->k - 1];
    for (int res = 0; res < 2; res++)
        if (njtop[res] >= q->k && jtop[res][q->k - 1] > s->joint[res])
            s->joint[res] = jtop[res][q->k - 1];
    if (nfit_unfiltered >= q->k && s->unfiltered_node < 0)
        s->unfiltered_node = node;
    if (nfit_local >= q->k && s->local_node < 0)
        s->local_node = node;
}

typedef struct sbuf {
    char s[GP_ERR_MSG_MAX];
    size_t n;
} sbuf;

static bool sb_add(sbuf *b, const char *t, size_t reserve)
{
    size_t len = strlen(t);
    if (b->n + len + reserve >= sizeof b->s)
        return false;
    memcpy(b->s + b->n, t, len + 1);
    b->n += len;
    return true;
}

/* The text for reason i with count c; brief leaves out the figures in parentheses. */
static void reason_text(const gp_allocator *a, const alloc_query *q, const survey *s, int i, bool brief,
                        char *out, size_t n)
{
    int c = s->count[i];
    bool one = c == 1;
    const alloc_pool *P = &a->pools[q->pool];
    char v1[48], v2[48], extra[160] = "";
    switch (i) {
    case R_NOT_READY: snprintf(out, n, "%d %s on nodes that are not ready", c, one ? "is" : "are"); return;
    case R_NO_WORKER:
        snprintf(out, n, "%d %s on nodes without a GPU-over-IP worker that is up%s", c, one ? "is" : "are",
                 brief ? "" : " (a remote workload needs one)");
        return;
    case R_UNHEALTHY: snprintf(out, n, "%d %s unhealthy", c, one ? "is" : "are"); return;
    case R_MODEL:
        snprintf(out, n, "%d %s not model %.32s%s", c, one ? "is" : "are", q->r->model,
                 q->model == ALLOC_UNKNOWN_NAME && !brief ? " (no GPU of that model is known)" : "");
        return;
    case R_VENDOR:
        snprintf(out, n, "%d %s not vendor %.32s%s", c, one ? "is" : "are", q->r->vendor,
                 q->vendor == ALLOC_UNKNOWN_NAME && !brief ? " (no GPU of that vendor is known)" : "");
        return;
    case R_FITS:
        if (brief)
            snprintf(out, n, "%d %s but no node has %d of them", c, one ? "fits" : "fit", q->k);
        else
            snprintf(out, n, "%d %s but no node has %d of them (at most %d, on node %.40s)", c,
                     one ? "fits" : "fit", q->k, s->fit_max, a->nodes[s->fit_max_node].name);
        return;
    default: break;
    }
    int d = i - R_CAP;
    static const char *const what[ALLOC_NDIM] = {
        [ALLOC_DIM_REQ_T] = "of request capacity free",
        [ALLOC_DIM_REQ_V] = "of VRAM free for requests",
        [ALLOC_DIM_LIM_T] = "of limit capacity free",
        [ALLOC_DIM_LIM_V] = "of VRAM limit capacity free",
    };
    fmt_units(v1, sizeof v1, q, d, asked(q, d));
    if (!brief && s->most_node[d] >= 0) {
        char setting[48] = "";
        if (d == ALLOC_DIM_LIM_T)
            snprintf(setting, sizeof setting, "; pool oversells %g%%", P->oversell_pct);
        else if (d == ALLOC_DIM_LIM_V)
            snprintf(setting, sizeof setting, "; pool expands VRAM %g%%", P->host_pct + P->disk_pct);
        snprintf(extra, sizeof extra, " (most free: %s on node %.40s%s)",
                 fmt_units(v2, sizeof v2, q, d, s->most[d]), a->nodes[s->most_node[d]].name, setting);
    }
    snprintf(out, n, "%d %s less than %s %s%s", c, one ? "has" : "have", v1, what[d], extra);
}

/* What would fit, when a cheap look tells: "" when nothing simple does. */
static void suggestion(const gp_allocator *a, const alloc_query *q, const survey *s, char *out, size_t n)
{
    out[0] = '\0';
    /* a dimension in which some node offers k GPUs with everything else fitting, the commonest cause first */
    int order[ALLOC_NDIM] = {0, 1, 2, 3};
    for (int i = 1; i < ALLOC_NDIM; i++)
        for (int j = i; j > 0 && s->count[R_CAP + order[j]] > s->count[R_CAP + order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    char v[48];
    for (int i = 0; i < ALLOC_NDIM; i++) {
        int d = order[i];
        bool limit = d == ALLOC_DIM_LIM_T || d == ALLOC_DIM_LIM_V;
        if (s->count[R_CAP + d] == 0 || s->best[d] < 0 || (limit && s->best[d] <= 0))
            continue;
        fmt_units(v, sizeof v, q, d, s->best[d]);
        bool tflops = d == ALLOC_DIM_REQ_T || d == ALLOC_DIM_LIM_T;
        switch (d) {
        case ALLOC_DIM_REQ_T: snprintf(out, n, "asking for at most %s would fit", v); break;
        case ALLOC_DIM_REQ_V: snprintf(out, n, "asking for at most %s of VRAM would fit", v); break;
        default:
            /* a limit below the request takes the request down with it (which only helps) */
            if (s->best[d] < asked(q, d == ALLOC_DIM_LIM_T ? ALLOC_DIM_REQ_T : ALLOC_DIM_REQ_V))
                snprintf(out, n, "a %srequest and limit of at most %s would fit", tflops ? "" : "VRAM ", v);
            else
                snprintf(out, n, "a %slimit of at most %s would fit", tflops ? "" : "VRAM ", v);
        }
        return;
    }
    /* request and limit of one resource both lower */
    unsigned failed = 0;
    for (int d = 0; d < ALLOC_NDIM; d++)
        if (s->count[R_CAP + d] > 0)
            failed |= 1u << d;
    for (int res = 0; res < 2; res++) {
        if (!(failed & (res == 0 ? RES_T : RES_V)) || s->joint[res] <= 0)
            continue;
        fmt_units(v, sizeof v, q, res == 0 ? ALLOC_DIM_REQ_T : ALLOC_DIM_REQ_V, s->joint[res]);
        snprintf(out, n, "a %srequest and limit of at most %s would fit", res == 0 ? "" : "VRAM ", v);
        return;
    }
    if (s->fit_max >= 1 && s->fit_max < q->k) {
        snprintf(out, n, "asking for %d GPU%s would fit (node %.40s)", s->fit_max, s->fit_max == 1 ? "" : "s",
                 a->nodes[s->fit_max_node].name);
        return;
    }
    if (s->unfiltered_node >= 0 && (s->count[R_MODEL] > 0 || s->count[R_VENDOR] > 0)) {
        snprintf(out, n, "without the model/vendor filter it would fit (node %.40s)",
                 a->nodes[s->unfiltered_node].name);
        return;
    }
    if (s->local_node >= 0)
        snprintf(out, n, "as a local workload (not remote) it would fit (node %.40s, which runs no worker)",
                 a->nodes[s->local_node].name);
}

int gp_alloc_explain(const gp_allocator *a, const alloc_query *q, gp_err *err)
{
    const alloc_pool *P = &a->pools[q->pool];
    bool pinned = q->node >= 0;
    if (pinned && !a->nodes[q->node].ready)
        return gp_err_set(
            err, GP_ERR_CONFLICT,
            "node \"%.64s\" is not ready (lost or draining): it takes no new workloads; pin another "
            "node or none",
            a->nodes[q->node].name);
    survey s = {.fit_max_node = -1, .unfiltered_node = -1, .local_node = -1};
    for (int d = 0; d < ALLOC_NDIM; d++) {
        s.most_node[d] = -1;
        s.best[d] = -1;
    }
    s.joint[0] = s.joint[1] = -1;
    if (pinned)
        survey_node(a, q, q->node, &s);
    else
        for (int i = 0; i < P->nnodes; i++)
            survey_node(a, q, P->nodes[i], &s);
    if (s.total == 0)
        return pinned ? gp_err_set(err, GP_ERR_CONFLICT, "node \"%.64s\" has no GPUs", a->nodes[q->node].name)
                      : gp_err_set(err, GP_ERR_CONFLICT,
                                   "pool \"%.64s\" has no GPUs: add nodes with GPUs to it", P->name);
    /* a remote workload with no worker to go to: that alone is the answer */
    if (s.count[R_NO_WORKER] > 0 && s.count[R_NO_WORKER] + s.count[R_NOT_READY] == s.total) {
        static const char how[] = "an agent's worker.address and worker.token_file name the `gpupool worker` "
                                  "of its node (`gpupool up` runs one)";
        if (pinned)
            return gp_err_set(err, GP_ERR_CONFLICT,
                              "node \"%.64s\" runs no GPU-over-IP worker that is up, and a remote workload "
                              "needs one: pin a node whose worker is up, or none; %s",
                              a->nodes[q->node].name, how);
        return gp_err_set(
            err, GP_ERR_CONFLICT,
            "no ready node of pool \"%.64s\" runs a GPU-over-IP worker that is up, and a remote "
            "workload needs one; %s",
            P->name, how);
    }

    sbuf b = {.n = 0};
    char t[GP_ERR_MSG_MAX];
    const char *gpus = s.total == 1 ? "GPU" : "GPUs";
    if (pinned && q->k == 1)
        snprintf(t, sizeof t, "no GPU of node \"%.40s\" fits: of its %d %s, ", a->nodes[q->node].name,
                 s.total, gpus);
    else if (pinned)
        snprintf(t, sizeof t, "node \"%.40s\" does not have %d GPUs that fit: of its %d %s, ",
                 a->nodes[q->node].name, q->k, s.total, gpus);
    else if (q->k == 1)
        snprintf(t, sizeof t, "no GPU of pool \"%.40s\" fits: of %d %s, ", P->name, s.total, gpus);
    else
        snprintf(t, sizeof t, "no node of pool \"%.40s\" has %d GPUs that fit: of %d %s, ", P->name, q->k,
                 s.total, gpus);
    sb_add(&b, t, 0);

    char sug[160], tail[170] = "";
    suggestion(a, q, &s, sug, sizeof sug);
    if (sug[0] != '\0')
        snprintf(tail, sizeof tail, "; %s", sug);
    size_t reserve = strlen(tail);

    /* causes, the commonest first (ties in the fixed order above) */
    int order[NREASON], nr = 0;
    for (int i = 0; i < NREASON; i++)
        if (s.count[i] > 0) {
            int j = nr++;
            while (j > 0 && s.count[order[j - 1]] < s.count[i]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
    int omitted = 0, added = 0;
    for (int i = 0; i < nr; i++) {
        char text[GP_ERR_MSG_MAX], piece[GP_ERR_MSG_MAX + 2];
        bool done = false;
        for (int brief = 0; brief < 2 && !done; brief++) {
            reason_text(a, q, &s, order[i], brief, text, sizeof text);
            snprintf(piece, sizeof piece, "%s%s", added > 0 ? ", " : "", text);
            done = sb_add(&b, piece, reserve);
        }
        if (done)
            added++;
        else
            omitted += s.count[order[i]];
    }
    if (omitted > 0) {
        snprintf(t, sizeof t, "%s%d more", added > 0 ? ", " : "", omitted);
        sb_add(&b, t, reserve);
    }
    sb_add(&b, tail, 0);
    return gp_err_set(err, GP_ERR_CONFLICT, "%s", b.s);
}

/* arbiter.c - sharing each GPU's compute between the slots on it, by request, limit and QoS.
 *
 * Every period (100 ms by default) the agent measures, per slot and GPU, the share of the GPU its processes
 * used (NVML's per-process utilization samples, counted once each, as the vGPU library does) and whether
 * its launches waited for compute (the slot's throttled_ns grew). From that, a demand: a throttled slot wants
 * up to its limit, and so does one using at least 80% of its grant on a saturated GPU (its launches wait for
 * the GPU, not for its budget); one using that much of an unsaturated GPU keeps its grant, and so does any
 * busy one on a saturated GPU (where using less may only mean being crowded out); any other wants what it
 * used plus a quarter.
 * Then ag_share_split: every slot keeps its request (what it does not use of it is lent, not given away), the
 * GPU's spare capacity goes to slots that want more, weighted by QoS (low 1, medium 2, high 4, critical 8)
 * and capped at each one's limit. The result is written to the slot's compute_effective_ppm, which the
 * library re-reads at every budget step.
 *
 * A slot's effective share never drops below its request, so a workload that wakes up may run at its request
 * at once; the slots that were bursting into its unused request are cut back at the next step, and their
 * libraries apply that within their own control period. docs/agent.md states the bound.
 */
#include "agent/internal.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SAMPLES     1024
#define MIN_SHARE       0.01 /* an idle slot without a request keeps this much, so that it can start */
#define DEMAND_HEADROOM 1.25
#define KEEP_FRACTION   0.8 /* a slot using this much of its grant is not cut back */
#define SATURATED       0.9 /* a GPU this busy: no slot on it is cut back for using less than its grant */
#define NO_SAMPLE_NS    1000000000ull /* a GPU without a utilization sample for this long is idle */

double ag_qos_weight(uint32_t qos)
{
    static const double w[] = {1, 2, 4, 8};
    return qos < 4 ? w[qos] : 1;
}

/* Water-filling: spreads spare over the claims below their cap, by weight, none past its cap; returns what is
 * left. cap_of: 0 = what each demands (bounded by its limit), 1 = the limit of each active claim. */
static double fill(ag_claim *c, int n, double spare, int cap_of)
{
    for (int round = 0; round < n + 1 && spare > 1e-9; round++) {
        double wsum = 0;
        for (int i = 0; i < n; i++) {
            double cap = cap_of ? (c[i].active ? c[i].limit : 0)
                                : (c[i].demand < c[i].limit ? c[i].demand : c[i].limit);
            if (cap - c[i].eff > 1e-9)
                wsum += c[i].weight;
        }
        if (wsum <= 0)
            break;
        double given = 0;
        for (int i = 0; i < n; i++) {
            double cap = cap_of ? (c[i].active ? c[i].limit : 0)
                                : (c[i].demand < c[i].limit ? c[i].demand : c[i].limit);
            double want = cap - c[i].eff;
            if (want <= 1e-9)
                continue;
            double part = spare * c[i].weight / wsum;
            double g = part < want ? part : want;
            c[i].eff += g;
            given += g;
        }
        spare -= given;
    }
    return spare;
}

void ag_share_split(ag_claim *c, int n, double capacity)
{
    double reserved = 0;
    for (int i = 0; i < n; i++) {
        c[i].eff = c[i].request;
        reserved += c[i].demand < c[i].request ? c[i].demand : c[i].request;
    }
    /* first to the slots that want more, up to what they want; then what nobody wants to the busy ones, up to
     * their limits (work conservation: a busy slot that cannot show it wants more - its own host side is what
     * holds it back - is not kept below its limit for capacity no one else asks for) */
    double spare = fill(c, n, capacity - reserved, 0);
    fill(c, n, spare, 1);
    for (int i = 0; i < n; i++) {
        double floor = c[i].limit < MIN_SHARE ? c[i].limit : MIN_SHARE;
        if (c[i].eff < floor)
            c[i].eff = floor;
        if (c[i].eff > c[i].limit)
            c[i].eff = c[i].limit;
    }
}

static int by_time(const void *x, const void *y)
{
    const nvmlProcessUtilizationSample_t *a = x, *b = y;
    return a->timeStamp < b->timeStamp ? -1 : a->timeStamp > b->timeStamp;
}

/* The part of a set on GPU gi that process pid belongs to, or NULL. */
static ag_part *part_of(gp_agent *a, int gi, unsigned pid)
{
    for (size_t i = 0; i < a->nsets; i++) {
        ag_set *s = a->sets[i];
        for (int k = 0; k < s->n; k++) {
            ag_part *p = &s->part[k];
            if (p->gpu != gi)
                continue;
            gp_slot *sl = p->h.s;
            uint64_t hw = atomic_load(&sl->proc_hw);
            for (uint64_t e = 0; e < hw && e < GP_SLOT_MAX_PROCS; e++)
                if (atomic_load(&sl->proc[e].state) == GP_PROCTAB_LIVE &&
                    atomic_load(&sl->proc[e].pid) == pid)
                    return p;
        }
    }
    return NULL;
}

/* GPU time each slot's processes used on GPU gi since the last look, from NVML's samples, added to their
 * busy_ns. Returns the unmanaged processes' time; *fresh tells whether there was any new sample. */
static uint64_t measure(gp_agent *a, int gi, bool *fresh)
{
    ag_gpu *g = &a->gpus[gi];
    *fresh = false;
    if (a->nvml.DeviceGetProcessUtilization == NULL)
        return 0;
    static nvmlProcessUtilizationSample_t *buf; /* the loop thread's only; grown when NVML says so */
    static unsigned cap;
    if (buf == NULL && (buf = malloc(MAX_SAMPLES * sizeof *buf)) != NULL)
        cap = MAX_SAMPLES;
    if (buf == NULL)
        return 0;
    unsigned n = cap;
    nvmlReturn_t r = a->nvml.DeviceGetProcessUtilization(g->h, buf, &n, g->last_sample_us);
    for (int tries = 0; r == NVML_ERROR_INSUFFICIENT_SIZE && tries < 3; tries++) {
        nvmlProcessUtilizationSample_t *bigger = realloc(buf, (n + 256) * sizeof *buf);
        if (bigger == NULL)
            break;
        buf = bigger;
        cap = n = n + 256;
        r = a->nvml.DeviceGetProcessUtilization(g->h, buf, &n, g->last_sample_us);
    }
    if (r != NVML_SUCCESS)
        return 0; /* NVML_ERROR_NOT_FOUND: no process ran since the last look */
    *fresh = true;
    qsort(buf, n, sizeof buf[0], by_time);
    uint64_t unmanaged = 0;
    /* A sample stamped in the future (a clock stepped, or a driver's bug) would, once remembered as the last
     * one seen, hide every real sample after it: such samples are dropped. */
    unsigned long long horizon = gp_realtime_ns() / 1000 + 1000000;
    for (unsigned i = 0; i < n; i++) {
        nvmlProcessUtilizationSample_t *sm = &buf[i];
        if (sm->timeStamp > horizon || sm->smUtil > 100)
            continue;
        if (sm->timeStamp <= g->last_sample_us && g->last_sample_us)
            continue;
        uint64_t prev = 0;
        if (!gp_u64map_get(&g->seen, sm->pid + 1ull, &prev) || prev == 0 || prev >= sm->timeStamp)
            prev = g->last_sample_us && g->last_sample_us < sm->timeStamp ? g->last_sample_us : sm->timeStamp;
        uint64_t ns = (uint64_t)sm->smUtil * (sm->timeStamp - prev) * 10; /* % of us -> ns */
        gp_u64map_put(&g->seen, sm->pid + 1ull, sm->timeStamp);
        ag_part *p = part_of(a, gi, sm->pid);
        if (p)
            p->busy_ns += ns;
        else
            unmanaged += ns;
    }
    for (unsigned i = 0; i < n; i++)
        if (buf[i].timeStamp > g->last_sample_us && buf[i].timeStamp <= horizon)
            g->last_sample_us = buf[i].timeStamp;
    /* forget processes not heard of for a minute */
    size_t it = 0;
    uint64_t k, v;
    while (gp_u64map_next(&g->seen, &it, &k, &v))
        if (v + 60000000ull < g->last_sample_us)
            gp_u64map_del(&g->seen, k, NULL);
    return unmanaged;
}

static void split_gpu(gp_agent *a, int gi, double capacity)
{
    /* A busy GPU: what a slot uses then says little about what it would use */
    double total = a->gpus[gi].unmanaged;
    for (size_t i = 0; i < a->nsets; i++)
        for (int k = 0; k < a->sets[i]->n; k++)
            if (a->sets[i]->part[k].gpu == gi)
                total += a->sets[i]->part[k].used;
    bool saturated = total >= SATURATED;
    ag_claim c[256];
    ag_part *parts[256];
    int n = 0;
    for (size_t i = 0; i < a->nsets && n < 256; i++) {
        ag_set *s = a->sets[i];
        for (int k = 0; k < s->n && n < 256; k++) {
            ag_part *p = &s->part[k];
            if (p->gpu != gi)
                continue;
            gp_slot *sl = p->h.s;
            double req = atomic_load(&sl->compute_request_ppm) / (double)GP_SLOT_FULL_PPM;
            double lim = atomic_load(&sl->compute_limit_ppm) / (double)GP_SLOT_FULL_PPM;
            double eff = gp_slot_share_ppm(sl) / (double)GP_SLOT_FULL_PPM, demand;
            if (atomic_load(&sl->frozen))
                demand = 0;
            else if (p->throttled) /* it wants more than it has */
                demand = lim;
            else if (saturated && p->used >= eff * KEEP_FRACTION)
                /* It uses what it has of a full GPU: its launches wait for the GPU rather than for its
                 * budget, so it cannot show that it wants more. Every such slot claims its limit, and the
                 * split gives each its request and the rest by QoS weight - a fixed point, not a see-saw. */
                demand = lim;
            else if (p->used >= eff * KEEP_FRACTION) /* it uses what it has: keep it (no see-saw) */
                demand = eff;
            else if (saturated && p->used > 0.01) /* it may use less only because others crowd it out */
                demand = eff;
            else /* it uses less: it needs what it uses, and some headroom */
                demand = p->used > 0.005 ? p->used * DEMAND_HEADROOM : 0;
            c[n] = (ag_claim){.request = req,
                              .limit = lim,
                              .demand = demand,
                              .weight = ag_qos_weight(atomic_load(&sl->qos)),
                              .active = !atomic_load(&sl->frozen) && p->used > 0.01};
            parts[n++] = p;
        }
    }
    ag_share_split(c, n, capacity);
    for (int i = 0; i < n; i++) {
        uint32_t ppm = (uint32_t)(c[i].eff * GP_SLOT_FULL_PPM + 0.5);
        if (ppm < 1)
            ppm = 1;
        /* Alone on the GPU, a slot at (nearly) the whole GPU runs unpaced. Sharing it, a slot stays just
         * under the whole GPU, so that its library keeps pacing it: an unpaced process queues up to a ring's
         * worth of kernels, which would keep running after the slot is cut back and delay the others' return.
         */
        if (ppm >= GP_SLOT_FULL_PPM - 500)
            ppm = n == 1 ? GP_SLOT_FULL_PPM : GP_SLOT_FULL_PPM - 1;
        gp_slot *sl = parts[i]->h.s;
        uint32_t lim = atomic_load(&sl->compute_limit_ppm);
        if (ppm > lim)
            ppm = lim;
        if (atomic_load(&sl->compute_effective_ppm) != ppm)
            atomic_store(&sl->compute_effective_ppm, ppm);
    }
}

void ag_arbitrate(gp_agent *a, uint64_t now)
{
    for (int gi = 0; gi < a->ngpus; gi++) {
        ag_gpu *g = &a->gpus[gi];
        bool fresh;
        g->unmanaged_ns += measure(a, gi, &fresh);
        if (g->window_start_ns == 0) { /* the first look only sets where counting starts */
            g->window_start_ns = now;
            g->unmanaged_ns = 0;
            for (size_t i = 0; i < a->nsets; i++)
                for (int k = 0; k < a->sets[i]->n; k++)
                    if (a->sets[i]->part[k].gpu == gi)
                        a->sets[i]->part[k].busy_ns = 0;
            continue;
        }
        uint64_t window = now - g->window_start_ns;
        /* No new sample: NVML has not sampled yet (a real GPU samples a few times a second), which says
         * nothing about use. Keep counting into a longer window rather than reading it as idle; only after
         * NO_SAMPLE_NS without one is the GPU taken to be idle. */
        if (window == 0 || (!fresh && window < NO_SAMPLE_NS))
            continue;
        g->window_start_ns = now;
        uint64_t unmanaged = g->unmanaged_ns;
        g->unmanaged_ns = 0;
        g->unmanaged = (double)unmanaged / (double)window;
        for (size_t i = 0; i < a->nsets; i++)
            for (int k = 0; k < a->sets[i]->n; k++) {
                ag_part *p = &a->sets[i]->part[k];
                if (p->gpu != gi)
                    continue;
                p->used = (double)p->busy_ns / (double)window;
                p->busy_ns = 0;
                if (p->used > 1)
                    p->used = 1;
                p->used_avg = p->used_avg * 0.8 + p->used * 0.2;
                uint64_t th = atomic_load(&p->h.s->throttled_ns);
                p->throttled = th - p->last_throttled > window / 100;
                p->last_throttled = th;
            }
        double capacity = 1.0 - g->unmanaged;
        split_gpu(a, gi, capacity > 0 ? capacity : 0);
    }
    a->steps++;
}

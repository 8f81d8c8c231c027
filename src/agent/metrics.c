/* metrics.c - /metrics in the Prometheus text format (version 0.0.4).
 *
 * Per GPU, the names and labels of NVIDIA's DCGM exporter where one exists (DCGM_FI_DEV_GPU_UTIL, _FB_USED,
 * _FB_FREE in MiB, _GPU_TEMP, _POWER_USAGE, _XID_ERRORS, _ECC_DBE_VOL_TOTAL; labels gpu, UUID, device,
 * modelName, Hostname), so existing dashboards and alerts work unchanged; per slot, gpupool_slot_* with the
 * labels gpu, UUID, modelName, workload, namespace and slot (the set's id). Every family has HELP and TYPE.
 * The text is built in memory under the agent's lock and returned to be sent after it is released.
 */
#include "agent/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the format requires. */
static const char *esc(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; *s && n + 3 < len; s++) {
        if (*s == '\\' || *s == '"') {
            out[n++] = '\\';
            out[n++] = *s;
        } else if (*s == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return out;
}

static void family(buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gpu_labels(const gp_agent *a, const ag_gpu *g, char *out, size_t len)
{
    char m[200], h[140];
    snprintf(out, len, "gpu=\"%d\",UUID=\"%s\",device=\"nvidia%d\",modelName=\"%s\",Hostname=\"%s\"",
             g->index, g->uuid, g->index, esc(g->name, m, sizeof m), esc(a->cfg.node_name, h, sizeof h));
}

typedef double (*gpu_value)(const ag_gpu *g);
static double v_util(const ag_gpu *g)
{
    return g->util_gpu;
}
static double v_mem_util(const ag_gpu *g)
{
    return g->util_mem;
}
static double v_fb_used(const ag_gpu *g)
{
    return (double)(g->mem_used >> 20);
}
static double v_fb_free(const ag_gpu *g)
{
    return (double)((g->mem_total - (g->mem_used < g->mem_total ? g->mem_used : g->mem_total)) >> 20);
}
static double v_temp(const ag_gpu *g)
{
    return g->temp_c;
}
static double v_power(const ag_gpu *g)
{
    return g->power_w;
}
static double v_xid(const ag_gpu *g)
{
    return g->last_xid;
}
static double v_dbe(const ag_gpu *g)
{
    return (double)g->ecc_dbe;
}
static double v_sbe(const ag_gpu *g)
{
    return (double)g->ecc_sbe;
}
static double v_healthy(const ag_gpu *g)
{
    return g->healthy;
}
static double v_tflops(const ag_gpu *g)
{
    return g->tflops;
}

static const struct {
    const char *name, *type, *help;
    gpu_value v;
} gpu_families[] = {
    {"DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", v_util},
    {"DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", v_mem_util},
    {"DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", v_fb_used},
    {"DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", v_fb_free},
    {"DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", v_temp},
    {"DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", v_power},
    {"DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", v_xid},
    {"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors.", v_sbe},
    {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors.", v_dbe},
    {"gpupool_gpu_healthy", "gauge", "1 when the agent considers the GPU healthy, else 0.", v_healthy},
    {"gpupool_gpu_tflops", "gauge", "Dense FP16 tensor TFLOPS of the GPU model (0 when unknown).", v_tflops},
};

typedef double (*part_value)(const ag_part *p, const ag_gpu *g);
static double tf(const ag_gpu *g, double ppm)
{
    return ppm / GP_SLOT_FULL_PPM * (g ? g->tflops : 0);
}
static double p_used(const ag_part *p, const ag_gpu *g)
{
    return p->used_avg * (g ? g->tflops : 0);
}
static double p_req(const ag_part *p, const ag_gpu *g)
{
    return tf(g, atomic_load(&p->h.s->compute_request_ppm));
}
static double p_lim(const ag_part *p, const ag_gpu *g)
{
    return tf(g, atomic_load(&p->h.s->compute_limit_ppm));
}
static double p_eff(const ag_part *p, const ag_gpu *g)
{
    return tf(g, gp_slot_share_ppm(p->h.s));
}
static double p_used_pct(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return p->used_avg * 100;
}
static double p_vram_used(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return (double)gp_slot_vram_used(p->h.s);
}
static double p_vram_lim(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return (double)atomic_load(&p->h.s->vram_limit);
}
static double p_throttled(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return atomic_load(&p->h.s->throttled_ns) / 1e9;
}
static double p_frozen(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return atomic_load(&p->h.s->frozen) != 0;
}
static double p_launches(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return (double)atomic_load(&p->h.s->launches);
}
static double p_oom(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    return (double)atomic_load(&p->h.s->oom_refusals);
}
static double p_procs(const ag_part *p, const ag_gpu *g)
{
    (void)g;
    gp_slot *s = p->h.s;
    int n = 0;
    uint64_t hw = atomic_load(&s->proc_hw);
    for (uint64_t i = 0; i < hw && i < GP_SLOT_MAX_PROCS; i++)
        n += atomic_load(&s->proc[i].state) == GP_PROCTAB_LIVE;
    return n;
}

static const struct {
    const char *name, *type, *help;
    part_value v;
} slot_families[] = {
    {"gpupool_slot_tflops_used", "gauge", "TFLOPS the slot's processes use (measured, ~1 s average).",
     p_used},
    {"gpupool_slot_tflops_request", "gauge", "TFLOPS guaranteed to the slot.", p_req},
    {"gpupool_slot_tflops_limit", "gauge", "TFLOPS the slot may burst to.", p_lim},
    {"gpupool_slot_tflops_effective", "gauge", "TFLOPS the arbiter grants the slot now.", p_eff},
    {"gpupool_slot_compute_used_percent", "gauge", "Share of the GPU the slot uses (in %).", p_used_pct},
    {"gpupool_slot_vram_used_bytes", "gauge", "VRAM the slot's processes hold.", p_vram_used},
    {"gpupool_slot_vram_limit_bytes", "gauge", "The slot's VRAM limit.", p_vram_lim},
    {"gpupool_slot_throttled_seconds_total", "counter", "Time the slot's launches waited for compute.",
     p_throttled},
    {"gpupool_slot_frozen", "gauge", "1 while the slot is frozen.", p_frozen},
    {"gpupool_slot_launches_total", "counter", "Kernel and graph launches of compute-limited processes.",
     p_launches},
    {"gpupool_slot_oom_refusals_total", "counter", "Allocations refused at the VRAM limit.", p_oom},
    {"gpupool_slot_processes", "gauge", "Processes using the slot.", p_procs},
};

char *ag_metrics(gp_agent *a, size_t *len)
{
    buf b = {malloc(16384), 0, 16384, false};
    if (b.p == NULL)
        return NULL;
    char labels[600];
    pthread_mutex_lock(&a->mu);
    for (size_t f = 0; f < sizeof gpu_families / sizeof gpu_families[0]; f++) {
        family(&b, gpu_families[f].name, gpu_families[f].type, gpu_families[f].help);
        for (int i = 0; i < a->ngpus; i++) {
            gpu_labels(a, &a->gpus[i], labels, sizeof labels);
            put(&b, "%s{%s} %.17g\n", gpu_families[f].name, labels, gpu_families[f].v(&a->gpus[i]));
        }
    }
    for (size_t f = 0; f < sizeof slot_families / sizeof slot_families[0]; f++) {
        family(&b, slot_families[f].name, slot_families[f].type, slot_families[f].help);
        for (size_t i = 0; i < a->nsets; i++) {
            ag_set *s = a->sets[i];
            for (int k = 0; k < s->n; k++) {
                ag_part *p = &s->part[k];
                const ag_gpu *g = p->gpu >= 0 ? &a->gpus[p->gpu] : NULL;
                char m[200], w[300], ns[140];
                snprintf(
                    labels, sizeof labels,
                    "gpu=\"%d\",UUID=\"%s\",modelName=\"%s\",workload=\"%s\",namespace=\"%s\",slot=\"%s\"",
                    g ? g->index : -1, p->h.s->gpu_uuid, esc(g ? g->name : "", m, sizeof m),
                    esc(p->h.s->workload, w, sizeof w), esc(p->h.s->namespace_, ns, sizeof ns), s->id);
                put(&b, "%s{%s} %.17g\n", slot_families[f].name, labels, slot_families[f].v(p, g));
            }
        }
    }
    family(&b, "gpupool_agent_slot_sets", "gauge", "Slot sets the agent manages.");
    put(&b, "gpupool_agent_slot_sets %zu\n", a->nsets);
    family(&b, "gpupool_agent_gpus", "gauge", "GPUs the agent manages.");
    put(&b, "gpupool_agent_gpus %d\n", a->ngpus);
    family(&b, "gpupool_agent_arbiter_steps_total", "counter", "Compute arbitration steps taken.");
    put(&b, "gpupool_agent_arbiter_steps_total %llu\n", (unsigned long long)a->steps);
    family(&b, "gpupool_agent_start_time_seconds", "gauge", "When this agent process started (Unix time).");
    put(&b, "gpupool_agent_start_time_seconds %.3f\n", a->start_realtime_ns / 1e9);
    pthread_mutex_unlock(&a->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* internal.h - the agent's state, shared by its parts: discovery.c (GPUs), slots.c (the run directory),
 * arbiter.c (compute shares), metrics.c (/metrics), api.c (the local API), agent.c (life cycle).
 *
 * One mutex, gp_agent.mu, guards everything below it in gp_agent; the API handlers and the loop thread both
 * take it. NVML is called with it held (calls are short), never while blocking on anything else.
 */
#ifndef GP_AGENT_INTERNAL_H
#define GP_AGENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "agent/agent.h"
#include "common/http.h"
#include "common/log.h"
#include "common/models.h"
#include "common/slot.h"
#include "common/timeutil.h"
#include "common/u64map.h"

#define AG_LOG      "agent"
#define AG_MAX_GPUS 64

/* One GPU of the host. */
typedef struct ag_gpu {
    int index; /* NVML index */
    nvmlDevice_t h;
    char uuid[96];
    char name[96];
    char bus_id[32];
    const gp_model *model; /* NULL for a model the table does not know */
    double tflops;         /* dense FP16 TFLOPS (0 when unknown: compute is then asked in percent) */
    uint64_t mem_total, mem_used;
    unsigned util_gpu, util_mem, temp_c;
    double power_w;
    unsigned long long ecc_sbe, ecc_dbe; /* volatile totals, when ECC is on */
    uint64_t xid_count;
    unsigned last_xid;
    bool healthy;
    char health[160]; /* why not healthy; "" when healthy */
    unsigned nprocs;  /* processes NVML lists on it */
    /* arbitration: per-process NVML samples already counted (pid -> newest timestamp, us) */
    gp_u64map seen;
    unsigned long long last_sample_us;
    uint64_t window_start_ns;
    double unmanaged;      /* share used by processes in no slot, over the last window */
    uint64_t unmanaged_ns; /* their GPU time in the window being counted */
} ag_gpu;

/* One GPU of a slot set, and what the arbiter knows of it. */
typedef struct ag_part {
    gp_slot_handle h;
    int gpu;                 /* index into gp_agent.gpus, -1 while its GPU is absent */
    uint64_t busy_ns;        /* GPU time its processes used in the last window (measured by NVML) */
    double used;             /* that, as a share of the window */
    double used_avg;         /* smoothed over ~1 s, for metrics */
    uint64_t last_throttled; /* the slot's throttled_ns at the previous step */
    bool throttled;          /* launches waited for compute in the last window */
} ag_part;

/* A workload's slot set: the folder <run_dir>/slots/<id> with one slot file per GPU. */
typedef struct ag_set {
    char id[64];
    char dir[640];
    bool managed;   /* placed by the controller (an "owner" file in the folder): reconcile.c may remove it */
    char token[40]; /* GPU-over-IP: the token a remote client of this set presents (its remote-token file) */
    int n;
    ag_part part[]; /* n of them */
} ag_set;

struct gp_agent {
    gp_agent_config cfg;
    char slots_dir[300];
    gp_nvml nvml;
    gp_http_server *http;
    pthread_t loop;
    bool loop_started;
    atomic_bool stop;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    uint64_t start_realtime_ns;

    /* reconcile.c: the controller link, on threads of its own that take mu to apply what they learn */
    pthread_t watch_thread, beat_thread;
    bool watch_started, beat_started;
    atomic_bool registered;
    char controller_error[GP_ERR_MSG_MAX]; /* the last failure talking to it, under mu */
    json_t *alloc_errors;                  /* allocation id -> why its set could not be made, under mu */
    /* the GPU-over-IP worker (cfg.worker_addr) as last probed, under mu: the controller sends remote
     * workloads only to nodes whose worker is up */
    bool worker_probed, worker_up, worker_warned;
    uint64_t worker_probed_ns, worker_down_ns; /* when it was last probed, and found down (first) */
    char worker_error[GP_ERR_MSG_MAX];         /* why it is down */

    pthread_mutex_t mu; /* guards everything below */
    ag_gpu gpus[AG_MAX_GPUS];
    int ngpus;
    nvmlEventSet_t events; /* XID events, when NVML supports them */
    ag_set **sets;
    size_t nsets, capsets;
    uint64_t steps; /* arbitration steps taken */
    uint64_t last_discovery_ns;
};

/* discovery.c */
int ag_discover(gp_agent *a, gp_err *err);                     /* first look: fills gpus */
void ag_refresh(gp_agent *a);                                  /* facts, health, processes; with mu held */
int ag_gpu_find(const gp_agent *a, const char *uuid_or_index); /* index into gpus, or -1 */
void ag_discovery_close(gp_agent *a);

/* slots.c (all with mu held) */
int ag_slots_adopt(gp_agent *a, gp_err *err); /* at start: every valid set in the run directory */
ag_set *ag_set_find(const gp_agent *a, const char *id);
bool ag_id_valid(const char *id);

typedef struct ag_set_spec {
    char id[64];
    const char *workload, *namespace_;
    int ngpus;
    int gpu[GP_SLOT_MAX_GPUS]; /* indices into gpus */
    uint64_t vram;             /* per GPU */
    double req_pct, lim_pct;   /* share of each GPU, percent; < 0: not given */
    double req_tflops, lim_tflops;
    int qos;       /* -1: medium */
    bool managed;  /* from the controller: its allocator already applied the pool's VRAM rules */
    bool have_ppm; /* shares given per GPU in ppm below (from the controller) */
    uint32_t req_ppm[GP_SLOT_MAX_GPUS], lim_ppm[GP_SLOT_MAX_GPUS];
} ag_set_spec;

int ag_set_create(gp_agent *a, const ag_set_spec *sp, ag_set **out, gp_err *err);

typedef struct ag_set_change {
    bool has_vram;
    uint64_t vram;
    double req_pct, lim_pct, req_tflops, lim_tflops; /* < 0: unchanged */
    int qos;                                         /* -1: unchanged */
    int frozen;                                      /* -1: unchanged */
} ag_set_change;

int ag_set_update(gp_agent *a, ag_set *s, const ag_set_change *c, gp_err *err);
/* Refuses while processes use the set, unless force. */
int ag_set_remove(gp_agent *a, ag_set *s, bool force, gp_err *err);
/* Processes alive in a part (reaping dead entries). */
int ag_part_procs(ag_part *p);
void ag_sets_close(gp_agent *a);

/* Rewrites the GPU-over-IP worker's token file (cfg.worker_tokens) from the sets: "TOKEN SET_DIR" per set, so
 * that a client with a set's token runs under that set's slots. No-op without a worker. With mu held. */
void ag_tokens_write(gp_agent *a);
/* The environment a program on another host needs to use the set through the worker, or NULL without one. */
json_t *ag_set_remote_env(const gp_agent *a, const ag_set *s);

/* reconcile.c */
int ag_reconcile_start(gp_agent *a, gp_err *err);
/* The worker as last probed: {address, up, message (why it is down)}, or NULL without one. With mu held. */
json_t *ag_worker_json(const gp_agent *a);
void ag_reconcile_stop(gp_agent *a); /* after a->stop is set */

/* arbiter.c (with mu held) */
typedef struct ag_claim {
    double request, limit; /* shares of the GPU, 0..1 */
    double demand;         /* what the slot would use now */
    double weight;         /* its QoS weight */
    bool active;           /* it used the GPU in the last window: capacity no one wants may go to it */
    double eff;            /* out: the share it gets */
} ag_claim;
/* Splits `capacity` (0..1) of a GPU: every claim gets its request; the capacity its demand leaves unused
 * goes to claims that want more, by weight, up to their limits. Pure: unit-tested on its own. */
void ag_share_split(ag_claim *c, int n, double capacity);
void ag_arbitrate(gp_agent *a, uint64_t now_ns);
/* QoS weight of the arbiter (low 1, medium 2, high 4, critical 8). */
double ag_qos_weight(uint32_t qos);

/* metrics.c */
char *ag_metrics(gp_agent *a, size_t *len); /* takes mu */

/* api.c */
void ag_api_handle(void *ctx, const gp_http_req *req, gp_http_resp *resp);

/* The environment a workload's processes need for a set (docs/agent.md): a JSON object. */
json_t *ag_set_env(const gp_agent *a, const ag_set *s);

#endif

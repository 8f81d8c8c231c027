/* compute.c - the compute limit and the freeze flag, applied to every launch path.
 *
 * Mechanism (docs/vgpu.md, "Compute"): each slot holds a budget of GPU time, tokens_ns, shared by the
 * workload's processes. One of them at a time (the leader, by a lease in the slot) keeps the budget: every
 * CONTROL_PERIOD it adds share x elapsed time and subtracts the GPU time the workload's processes really
 * used, as NVML measures it per process on the device. A launch may start while the budget is not negative;
 * otherwise it waits until the leader has refilled it. Measuring use on the device, rather than estimating
 * kernel costs, makes the share exact over time whatever the kernels are and whoever else shares the GPU;
 * keeping about VG_PACE_AHEAD_NS of GPU time in flight (an event after each launch) bounds how far a process
 * can run ahead of its budget. Shares are re-read from the slot at every step, so the agent can change them
 * live. An unlimited, unfrozen slot costs a launch two loads from the slot (vg_launch_free).
 */
#include "vgpu/vgpu.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONTROL_PERIOD_NS 50000000ull  /* how often the leader brings the budget up to date */
#define LEADER_STALE_NS   200000000ull /* a leader silent this long is replaced */
#define BURST_NS          100000000ull /* at most this much unused share is saved up (times the share) */
#define MAX_DEBT_NS                                                                     \
    500000000ull /* debt beyond this (GPU time) is forgiven: it can only come from work \
                          queued while the slot was unlimited, not from a share overrun */

static atomic_uint g_claims;

/* GPU time (ns) the workload's processes used on the device since `since_mono`, measured by NVML.
 *
 * NVML reports, per process, samples of SM utilization, each covering the time since that process's
 * previous sample. Counting each sample once, over exactly that span, makes the sum telescope: nothing is
 * counted twice or lost, whatever the sampling period. The newest sample counted per process is remembered
 * (a process this leader has not seen before starts from since_mono). */
static uint64_t measure_busy(vg_dev *d, uint64_t since_mono, uint64_t now_mono)
{
    if (vg_nvml_up() != NVML_SUCCESS || d->nvml == NULL || g_vg.real.nvmlDeviceGetProcessUtilization == NULL)
        return 0;
    uint64_t real_now_us = gp_realtime_ns() / 1000;
    uint64_t since_us = real_now_us - (now_mono - since_mono) / 1000;
    gp_slot *s = d->slot->s;
    /* the processes of the slot, each with where its count stands */
    unsigned pids[GP_SLOT_MAX_PROCS];
    uint64_t prev[GP_SLOT_MAX_PROCS];
    int np = 0;
    uint64_t oldest = since_us;
    for (int p = 0; p < GP_SLOT_MAX_PROCS; p++) {
        if (atomic_load(&s->proc[p].state) != GP_PROCTAB_LIVE)
            continue;
        unsigned pid = atomic_load(&s->proc[p].pid);
        uint64_t from = since_us;
        for (int k = 0; k < GP_SLOT_MAX_PROCS; k++)
            if (d->seen[k].pid == pid && d->seen[k].ts_us + 10000000ull > since_us)
                from = d->seen[k].ts_us;
        pids[np] = pid;
        prev[np] = from;
        if (from < oldest)
            oldest = from;
        np++;
    }
    /* The samples of every process on the GPU come back, not only the slot's: when they do not fit, NVML says
     * how many there are, and they are read again into a buffer that big. Reading none would count the slot
     * idle and let it run unlimited. */
    nvmlProcessUtilizationSample_t stack[GP_SLOT_MAX_PROCS * 8], *samples = stack, *heap = NULL;
    unsigned n = GP_SLOT_MAX_PROCS * 8;
    nvmlReturn_t r =
        np ? g_vg.real.nvmlDeviceGetProcessUtilization(d->nvml, samples, &n, oldest) : NVML_ERROR_NOT_FOUND;
    for (int tries = 0; r == NVML_ERROR_INSUFFICIENT_SIZE && tries < 3; tries++) {
        unsigned want = n + 64;
        nvmlProcessUtilizationSample_t *bigger = realloc(heap, want * sizeof *bigger);
        if (bigger == NULL)
            break;
        heap = samples = bigger;
        n = want;
        r = g_vg.real.nvmlDeviceGetProcessUtilization(d->nvml, samples, &n, oldest);
    }
    if (r != NVML_SUCCESS) {
        if (r != NVML_ERROR_NOT_FOUND) /* NOT_FOUND: nothing ran since */
            gp_log_once(GP_LOG_WARN, VG_LOG,
                        "cannot read the GPU's per-process utilization (NVML error %d): compute use is not "
                        "counted while this lasts",
                        (int)r);
        n = 0;
    }
    uint64_t busy = 0;
    for (int i = 0; i < np; i++) {
        for (;;) { /* this process's samples, oldest first */
            int best = -1;
            for (unsigned k = 0; k < n; k++)
                if (samples[k].pid == pids[i] && samples[k].timeStamp > prev[i] &&
                    (best < 0 || samples[k].timeStamp < samples[best].timeStamp))
                    best = (int)k;
            if (best < 0)
                break;
            if (samples[best].timeStamp > real_now_us + 1000000 || samples[best].smUtil > 100)
                break; /* a sample from the future, or no percentage: not to be counted (nor trusted) */
            busy += (uint64_t)samples[best].smUtil * (samples[best].timeStamp - prev[i]) *
                    10; /* % of us, in ns */
            prev[i] = samples[best].timeStamp;
        }
    }
    free(heap);
    /* remember where each process's count stands */
    memset(d->seen, 0, sizeof d->seen);
    for (int i = 0; i < np; i++) {
        d->seen[i].pid = pids[i];
        d->seen[i].ts_us = prev[i];
    }
    return busy;
}

/* One step of budget keeping, if this process may and it is due. */
static void control_step(vg_dev *d, uint64_t now)
{
    gp_slot *s = d->slot->s;
    uint64_t me = (uint64_t)getpid();
    uint64_t leader = atomic_load(&s->leader), beat = atomic_load(&s->leader_beat_ns);
    if ((leader >> 32) != me) {
        if (now - beat < LEADER_STALE_NS && leader != 0)
            return;
        uint64_t mine = (me << 32) | (atomic_fetch_add(&g_claims, 1) & 0xffffffffu);
        if (!atomic_compare_exchange_strong(&s->leader, &leader, mine))
            return;
        atomic_store(&s->leader_beat_ns, now);
        atomic_store(&s->refill_ns, now); /* measure from here: what happened before was someone else's */
        return;
    }
    if (now - beat < CONTROL_PERIOD_NS || !atomic_compare_exchange_strong(&s->leader_beat_ns, &beat, now))
        return;
    if (now - beat >= LEADER_STALE_NS) {
        /* We kept no budget for a while (the slot was unlimited, or nothing launched): start measuring from
         * now, as a new leader would, instead of charging everything since the last step at once. */
        atomic_store(&s->refill_ns, now);
        return;
    }
    uint64_t from = atomic_load(&s->refill_ns);
    if (now <= from)
        return;
    uint64_t busy = measure_busy(d, from, now);
    uint64_t share = gp_slot_share_ppm(s);
    int64_t allowed = (int64_t)((now - from) * share / GP_SLOT_FULL_PPM);
    int64_t tokens = atomic_load(&s->tokens_ns) + allowed - (int64_t)busy;
    int64_t burst = (int64_t)(BURST_NS * share / GP_SLOT_FULL_PPM), debt = -(int64_t)MAX_DEBT_NS;
    if (tokens > burst)
        tokens = burst;
    if (tokens < debt)
        tokens = debt;
    atomic_store(&s->tokens_ns, tokens);
    atomic_store(&s->refill_ns, now);
    atomic_fetch_add(&s->busy_ns, busy);
    if (gp_log_enabled(GP_LOG_DEBUG))
        gp_log(GP_LOG_DEBUG, VG_LOG, "budget step: %.1f ms, busy %.1f ms, share %u ppm, tokens %.1f ms",
               (now - from) / 1e6, busy / 1e6, (unsigned)share, tokens / 1e6);
    /* Launches without any GPU time measured for a second: the driver's per-process samples are not coming
     * (or not for this process), and the limit cannot hold. Said once. */
    uint64_t l = atomic_load(&s->launches);
    d->blind_steps = busy == 0 && l > d->blind_launches + 20 ? d->blind_steps + 1 : 0;
    d->blind_launches = l;
    if (d->blind_steps == 20)
        gp_log_once(GP_LOG_WARN, VG_LOG,
                    "no GPU time measured for this process over 1 s of launches: the driver's per-process "
                    "utilization samples are missing, so its compute limit is not being held");
}

static bool limited(const gp_slot *s)
{
    return gp_slot_share_ppm(s) < GP_SLOT_FULL_PPM;
}

/* A share within 0.1 % of the whole GPU (the agent grants GP_SLOT_FULL_PPM - 1 to a slot that may have the
 * whole GPU while it shares it) is paced - kept a few milliseconds ahead, so that a cut-back applies at once
 * - but not budgeted: a budget of "everything" only turns the lag of utilization samples into idle gaps. */
static bool budgeted(const gp_slot *s)
{
    return gp_slot_share_ppm(s) < GP_SLOT_FULL_PPM - 1000;
}

CUresult vg_gate(int dev, bool compute)
{
    if (g_vg.mode != VG_ENFORCE || dev < 0 || dev >= g_vg.ndev)
        return CUDA_SUCCESS;
    vg_dev *d = &g_vg.dev[dev];
    gp_slot *s = d->slot->s;
    bool frozen = atomic_load_explicit(&s->frozen, memory_order_relaxed) != 0;
    if (!frozen && (!compute || !limited(s)))
        return CUDA_SUCCESS; /* the common case */
    uint64_t t0 = gp_now_ns(), now = t0;
    if (frozen) {
        atomic_fetch_add(&s->frozen_waits, 1);
        while (atomic_load(&s->frozen)) {
            if (now - t0 > g_vg.freeze_timeout_ns) {
                gp_log(GP_LOG_ERROR, VG_LOG,
                       "the vGPU has been frozen for more than %llu s; giving up on this call "
                       "(CUDA_ERROR_TIMEOUT)",
                       (unsigned long long)(g_vg.freeze_timeout_ns / 1000000000ull));
                return CUDA_ERROR_TIMEOUT;
            }
            gp_sleep_ns(1000000);
            now = gp_now_ns();
        }
    }
    if (!compute || !limited(s))
        return CUDA_SUCCESS;
    control_step(d, now);
    while (atomic_load(&s->tokens_ns) < 0 && budgeted(s)) {
        gp_sleep_ns(1000000);
        uint64_t then = now;
        now = gp_now_ns();
        /* Counted as it happens, not when the wait ends: the agent reads it to see who wants more compute,
         * and a long wait is exactly when it must see it. */
        atomic_fetch_add(&s->throttled_ns, now - then);
        if (d->slot->proc >= 0)
            atomic_fetch_add(&s->proc[d->slot->proc].throttled_ns, now - then);
        control_step(d, now);
        if (atomic_load(&s->frozen))
            return vg_gate(dev, compute);
    }
    return CUDA_SUCCESS;
}

/* Keeps a limited process's launches in flight to about VG_PACE_AHEAD_NS of GPU time, so that it cannot queue
 * far more work than its budget covers before the budget can react - and no fewer than two, so that the GPU
 * is never left idle while the host turns around. The number in flight adapts to the kernels' length:
 * while the queue is full, each wait returns when one kernel ends, so the time between waits is a kernel's
 * time (short kernels: up to VG_PACE_MAX in flight; long ones: 2). */
void vg_after_launch(int dev, CUstream stream)
{
    if (g_vg.mode != VG_ENFORCE || dev < 0 || dev >= g_vg.ndev)
        return;
    vg_dev *d = &g_vg.dev[dev];
    gp_slot *s = d->slot->s;
    if (!limited(s))
        return; /* unlimited launches are not even counted: the fast path stays two loads */
    atomic_fetch_add_explicit(&s->launches, 1, memory_order_relaxed);
    CUcontext cur = NULL;
    REAL(cuCtxGetCurrent)(&cur);
    pthread_mutex_lock(&d->pace_mu);
    if (d->pace_ctx != cur) {
        /* Events belong to a context: start over in this one. */
        for (unsigned i = 0; i < VG_PACE_MAX; i++)
            if (d->pace_ev[i]) {
                REAL(cuEventDestroy_v2)(d->pace_ev[i]);
                d->pace_ev[i] = NULL;
            }
        d->pace_ctx = cur;
        d->pace_head = d->pace_n = 0;
        d->pace_depth = 2;
        d->pace_wait_ns = 0;
        d->pace_since = 0;
    }
    if (d->pace_depth < 2)
        d->pace_depth = 2;
    while (d->pace_n >= d->pace_depth) {
        /* wait for the oldest launch in flight; bounded by that kernel's own run time */
        CUevent oldest = d->pace_ev[d->pace_head];
        if (oldest)
            REAL(cuEventSynchronize)(oldest);
        d->pace_head = (d->pace_head + 1) % VG_PACE_MAX;
        d->pace_n--;
        uint64_t now = gp_now_ns();
        if (d->pace_wait_ns && d->pace_since > 0) {
            uint64_t per = (now - d->pace_wait_ns) / d->pace_since; /* a kernel's time, while saturated */
            d->pace_kernel_ns = d->pace_kernel_ns ? (d->pace_kernel_ns * 7 + per) / 8 : per;
            uint64_t depth = d->pace_kernel_ns ? VG_PACE_AHEAD_NS / d->pace_kernel_ns + 1 : 2;
            d->pace_depth = depth < 2 ? 2 : depth > VG_PACE_MAX ? VG_PACE_MAX : (unsigned)depth;
        }
        d->pace_wait_ns = now;
        d->pace_since = 0;
    }
    unsigned slot = (d->pace_head + d->pace_n) % VG_PACE_MAX;
    if (d->pace_ev[slot] == NULL &&
        REAL(cuEventCreate)(&d->pace_ev[slot], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS)
        d->pace_ev[slot] = NULL;
    if (d->pace_ev[slot] && REAL(cuEventRecord)(d->pace_ev[slot], stream) == CUDA_SUCCESS)
        d->pace_n++;
    d->pace_since++;
    pthread_mutex_unlock(&d->pace_mu);
}

/* ---- launch paths --------------------------------------------------------------------------------- */

/* The fast path (one device, neither frozen nor limited): a few loads, then a tail call into the driver. */
static inline bool launch_fast(void)
{
    return atomic_load_explicit(&g_vg.inited, memory_order_acquire) && g_vg.mode == VG_ENFORCE &&
           g_vg.ndev == 1 && vg_launch_free(0);
}

/* The rest, out of line: start-up, refusal, several devices, the freeze gate, the compute budget, pacing. */
#define LAUNCH_SLOW(stream, call)                                      \
    do {                                                               \
        int mode_ = vg_init();                                         \
        if (mode_ != VG_ENFORCE)                                       \
            return mode_ == VG_REFUSE ? CUDA_ERROR_NO_DEVICE : (call); \
        int dev_ = g_vg.ndev == 1 ? 0 : vg_stream_dev(stream);         \
        if (vg_launch_free(dev_))                                      \
            return (call);                                             \
        CUresult rc_ = vg_gate(dev_, true);                            \
        if (rc_ != CUDA_SUCCESS)                                       \
            return rc_;                                                \
        rc_ = (call);                                                  \
        if (rc_ == CUDA_SUCCESS)                                       \
            vg_after_launch(dev_, (stream));                           \
        return rc_;                                                    \
    } while (0)

/* Defines entry point `name` with parameter list PARAMS, called with ARGS, on stream STREAM. */
#define LAUNCH_ENTRY(name, STREAM, PARAMS, ARGS)                 \
    static __attribute__((noinline)) CUresult slow_##name PARAMS \
    {                                                            \
        LAUNCH_SLOW(STREAM, REAL(name) ARGS);                    \
    }                                                            \
    VG_API CUresult name PARAMS                                  \
    {                                                            \
        if (__builtin_expect(launch_fast(), 1))                  \
            return REAL(name) ARGS;                              \
        return slow_##name ARGS;                                 \
    }

#define KERNEL_PARAMS                                                                                   \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, \
     unsigned int bz, unsigned int shmem, CUstream hStream, void **kernelParams, void **extra)
#define KERNEL_ARGS (f, gx, gy, gz, bx, by, bz, shmem, hStream, kernelParams, extra)
#define COOP_PARAMS                                                                                     \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, \
     unsigned int bz, unsigned int shmem, CUstream hStream, void **kernelParams)
#define COOP_ARGS (f, gx, gy, gz, bx, by, bz, shmem, hStream, kernelParams)
#define EX_PARAMS (const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra)
#define EX_ARGS   (config, f, kernelParams, extra)
#define EX_STREAM (config ? config->hStream : NULL)

LAUNCH_ENTRY(cuLaunchKernel, hStream, KERNEL_PARAMS, KERNEL_ARGS)
LAUNCH_ENTRY(cuLaunchKernel_ptsz, hStream, KERNEL_PARAMS, KERNEL_ARGS)
LAUNCH_ENTRY(cuLaunchKernelEx, EX_STREAM, EX_PARAMS, EX_ARGS)
LAUNCH_ENTRY(cuLaunchKernelEx_ptsz, EX_STREAM, EX_PARAMS, EX_ARGS)
LAUNCH_ENTRY(cuLaunchCooperativeKernel, hStream, COOP_PARAMS, COOP_ARGS)
LAUNCH_ENTRY(cuLaunchCooperativeKernel_ptsz, hStream, COOP_PARAMS, COOP_ARGS)
LAUNCH_ENTRY(cuGraphLaunch, hStream, (CUgraphExec hGraphExec, CUstream hStream), (hGraphExec, hStream))
LAUNCH_ENTRY(cuGraphLaunch_ptsz, hStream, (CUgraphExec hGraphExec, CUstream hStream), (hGraphExec, hStream))

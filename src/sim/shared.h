/* shared.h - the simulated GPU's host-wide state, in one shared-memory file.
 *
 * Every process of the host that loads the simulated libcuda.so.1 or libnvidia-ml.so.1 maps the same file,
 * as every process of a real host sees the same GPUs: device memory in use, the processes on each device and
 * what each holds, the device timelines that make kernels of different processes take turns, and
 * utilization history. Its location: GPUPOOL_SIM_STATE (a path), else <GPUPOOL_SIM_DIR or /dev/shm>/
 * gpupool-sim-<uid>-<hash of the device spec>.
 *
 * Invariants: there is no lock in the file that waits. Counters are atomics. A process entry is owned by
 * whoever holds an OFD byte lock on it (fcntl F_OFD_SETLK on the state file), which the kernel drops when
 * the process dies or execs, so a dead owner is recognised at once and its memory reclaimed by the next
 * process that looks; reclaiming takes the same byte lock, so two reapers never both reclaim. Memory in use
 * on a device is the sum over entries (no separate total to drift). Creation and re-initialisation of the
 * file happen under flock(2), which the kernel also drops with its holder.
 */
#ifndef GP_SIM_SHARED_H
#define GP_SIM_SHARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/models.h"
#include "common/proctab.h"

#define GP_SHM_MAGIC               0x4750534d53494d31ull /* "GPSMSIM1" */
#define GP_SHM_VERSION             2
#define GP_SIM_MAX_DEVICES         16
#define GP_SIM_MAX_PROCS           256
#define GP_SIM_UTIL_SNAPS          64
#define GP_SIM_PROC_SNAPS          64
#define GP_SIM_PROC_SNAP_PERIOD_NS 20000000ull  /* each process snapshots its own busy time every 20 ms */
#define GP_SIM_SNAP_PERIOD_NS      100000000ull /* a utilization snapshot at most every 100 ms */
#define GP_SIM_REAP_PERIOD_NS      1000000000ull /* dead processes looked for at least every second while busy */

enum gp_engine { GP_ENGINE_COMPUTE = 0, GP_ENGINE_H2D, GP_ENGINE_D2H, GP_ENGINE_D2D, GP_ENGINE_COUNT };

enum gp_proc_state { GP_PROC_FREE = GP_PROCTAB_FREE, GP_PROC_LIVE = GP_PROCTAB_LIVE };

typedef struct gp_util_snap {
    _Atomic uint32_t seq; /* seqlock: odd while being written */
    uint32_t pad;
    uint64_t ts_ns;      /* CLOCK_MONOTONIC */
    uint64_t busy_ns;    /* compute-busy time elapsed up to ts_ns */
    uint64_t membusy_ns; /* memory-bandwidth-busy time up to ts_ns */
} gp_util_snap;

typedef struct gp_shm_dev {
    gp_model model; /* copied at creation, so all processes agree even if their tables differ */
    char uuid[48];  /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    uint8_t uuid_bytes[16];
    char serial[32];
    char pci_bus_id[32]; /* "00000000:18:00.0" (NVML form; CUDA prints 0000:18:00.0) */
    uint32_t pci_bus;
    uint32_t pci_device_id; /* (device << 16) | 0x10DE */
    uint32_t pci_subsystem_id;
    uint32_t minor;
    /* Timelines: the device is busy on an engine until *_until; total counts every reserved nanosecond. */
    _Atomic uint64_t until[GP_ENGINE_COUNT];
    _Atomic uint64_t reserved[GP_ENGINE_COUNT];
    _Atomic uint64_t membusy_reserved;
    _Atomic uint64_t snap_next; /* index of the next snapshot to write */
    _Atomic uint64_t snap_last_ns;
    _Atomic uint64_t reap_last_ns;
    gp_util_snap snaps[GP_SIM_UTIL_SNAPS];
    _Atomic uint64_t xid_count; /* simulated XID errors raised (tests inject them) */
    _Atomic uint32_t last_xid;
    _Atomic uint64_t ecc_sbe, ecc_dbe; /* simulated ECC error counters */
} gp_shm_dev;

typedef struct gp_shm_proc {
    _Atomic uint32_t state; /* gp_proc_state; state and pid are a gp_proctab_head */
    _Atomic uint32_t pid;
    char name[64];
    uint64_t start_ns;
    _Atomic uint64_t mem[GP_SIM_MAX_DEVICES];     /* device bytes held */
    _Atomic uint64_t busy_ns[GP_SIM_MAX_DEVICES]; /* device time its kernels reserved */
    _Atomic uint32_t nctx[GP_SIM_MAX_DEVICES];    /* contexts it has on each device */
    _Atomic uint32_t snap_seq;
    uint32_t snap_next;
    uint64_t snap_last_ns; /* written by the owner only */
    uint64_t snap_ts[GP_SIM_PROC_SNAPS];
    uint64_t snap_busy[GP_SIM_PROC_SNAPS][GP_SIM_MAX_DEVICES];
} gp_shm_proc;

typedef struct gp_shm {
    uint64_t magic;
    uint32_t version;
    uint32_t size; /* sizeof(gp_shm) of the creator */
    _Atomic uint32_t ready;
    uint32_t ndev;
    char spec[256];
    _Atomic uint64_t query_reap_ns; /* last reap done for a memory query (gp_shm_reap_soon) */
    gp_shm_dev dev[GP_SIM_MAX_DEVICES];
    gp_shm_proc proc[GP_SIM_MAX_PROCS];
} gp_shm;

_Static_assert(offsetof(gp_shm_proc, state) == offsetof(gp_proctab_head, state) &&
                   offsetof(gp_shm_proc, pid) == offsetof(gp_proctab_head, pid),
               "a process entry starts with a gp_proctab_head");

/* A process's handle on the state file. Each library (libcuda, libnvidia-ml) opens its own. */
typedef struct gp_shm_handle {
    gp_shm *shm;
    int fd;
    int proc; /* index of this process's entry, -1 if none */
    char path[256];
} gp_shm_handle;

/* Device spec: "2xH100-SXM-80GB,A100-40GB", "@/path/file", "" or unset: one H100-SXM-80GB. */
typedef struct gp_sim_spec {
    int ndev;
    const gp_model *model[GP_SIM_MAX_DEVICES];
    char text[256]; /* normalised: "H100-SXM-80GB,H100-SXM-80GB" */
} gp_sim_spec;

int gp_sim_spec_parse(const char *spec, gp_sim_spec *out, gp_err *err);
/* Reads GPUPOOL_SIM_GPUS (or the file it names with a leading '@'). */
int gp_sim_spec_from_env(gp_sim_spec *out, gp_err *err);

/* CUDA_VISIBLE_DEVICES as NVIDIA's driver reads it: indices or UUID prefixes ("GPU-..."), comma-separated;
 * the list ends at the first entry that names no device, names one ambiguously, or repeats one. NULL: every
 * device. Fills phys (visible ordinal -> device index) and returns how many are visible. */
int gp_sim_visible_devices(const char *visible, const gp_shm *shm, int phys[GP_SIM_MAX_DEVICES]);

/* Opens (creating if needed) the state for this spec. */
int gp_shm_open(gp_shm_handle *h, const gp_sim_spec *spec, gp_err *err);
void gp_shm_close(gp_shm_handle *h);

/* Claims an entry for this process (idempotent). */
int gp_shm_proc_claim(gp_shm_handle *h, gp_err *err);
/* Gives the entry back (process exit, or last context gone). */
void gp_shm_proc_release(gp_shm_handle *h);
/* Reclaims entries whose owner is gone. Returns how many. */
int gp_shm_reap(gp_shm_handle *h);

/* Reaps unless another call did within the last 100 ms; for queries that report memory in use. */
void gp_shm_reap_soon(gp_shm_handle *h);

/* True if entry i has a live owner (another process's, or ours). */
bool gp_shm_proc_alive(gp_shm_handle *h, int i);

/* Device memory: total in use over all processes, and charging this process's entry. */
uint64_t gp_shm_mem_used(const gp_shm *shm, int dev);
/* Adds bytes to this process's usage on dev unless the device would exceed its capacity. 0 or -1. */
int gp_shm_mem_charge(gp_shm_handle *h, int dev, uint64_t bytes);
void gp_shm_mem_uncharge(gp_shm_handle *h, int dev, uint64_t bytes);

/* Reserves dur_ns on an engine's timeline starting no earlier than earliest_ns; returns the end time. */
uint64_t gp_shm_reserve(gp_shm_handle *h, int dev, int engine, uint64_t earliest_ns, uint64_t dur_ns,
                        uint64_t membusy_ns);

/* Compute-busy and memory-busy time elapsed up to now on dev. */
void gp_shm_busy_now(const gp_shm *shm, int dev, uint64_t now, uint64_t *busy, uint64_t *membusy);

/* Takes a utilization snapshot if the last is older than the period; reaps now and then. Cheap to call. */
void gp_shm_tick(gp_shm_handle *h, int dev, uint64_t now);

/* Utilization (percent) of dev over about the last window_ns. */
void gp_shm_util(gp_shm_handle *h, int dev, uint64_t window_ns, unsigned *gpu_pct, unsigned *mem_pct);

/* Samples of a process's compute utilization on dev newer than since_ns, oldest first: one per pair of
 * consecutive snapshots of its busy time (the process takes one every 20 ms while it runs work), giving the
 * percentage of the span between them and the time it ends. Counting each sample once over its own span
 * adds up to the process's device time exactly. Returns how many were written (at most max). */
int gp_shm_proc_samples(const gp_shm *shm, int proc, int dev, uint64_t since_ns, uint64_t *ts_ns,
                        unsigned *pct, int max);

#endif

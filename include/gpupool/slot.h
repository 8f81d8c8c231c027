/* slot.h - the vGPU slot: the contract between the gpupool agent and the vGPU library (interface 1 of
 * ARCHITECTURE.md). Layout version 1; documented in docs/slot.md.
 *
 * A slot is a shared-memory file, one per workload per GPU, in the workload's slot folder
 * (GPUPOOL_SLOT_DIR, files gpu<index>.slot). The agent (or `gpupool slot create`) writes the identity once
 * and the limits whenever they change; the vGPU library in each of the workload's processes writes usage.
 * Everything that changes after creation is an atomic; nothing in the file is a lock anyone waits on.
 * Process entries (proc[]) are owned through OFD byte-range locks on byte GP_SLOT_LOCK_BASE + index of the
 * file (common/proctab.h): the kernel drops them with their holder, so the memory of a process killed
 * with SIGKILL is reclaimed by the next process that looks.
 *
 * Units: bytes for memory; parts per million (ppm) of the GPU for compute (1,000,000 = the whole GPU; the
 * share of a workload asking for T TFLOPS on a GPU of G TFLOPS is T / G); nanoseconds of CLOCK_MONOTONIC.
 */
#ifndef GPUPOOL_SLOT_H
#define GPUPOOL_SLOT_H

#include <stdatomic.h>
#include <stdint.h>

#define GP_SLOT_MAGIC     0x31544f4c53565047ull /* "GPVSLOT1" */
#define GP_SLOT_VERSION   1u
#define GP_SLOT_MAX_PROCS 64
#define GP_SLOT_MAX_GPUS  16
#define GP_SLOT_LOCK_BASE (1ull << 30)
#define GP_SLOT_FULL_PPM  1000000u

enum gp_slot_qos { GP_QOS_LOW = 0, GP_QOS_MEDIUM = 1, GP_QOS_HIGH = 2, GP_QOS_CRITICAL = 3 };

typedef struct gp_slot_proc {
    _Atomic uint32_t state;        /* common/proctab.h: 0 free, 1 live */
    _Atomic uint32_t pid;          /* in the process's own PID namespace */
    _Atomic uint64_t vram_used;    /* bytes this process holds on the GPU (allocations and contexts) */
    _Atomic uint64_t vram_peak;    /* the most it held */
    _Atomic uint64_t ctx_bytes;    /* of vram_used: its contexts' own memory */
    _Atomic uint64_t launches;     /* kernel and graph launches */
    _Atomic uint64_t throttled_ns; /* time its launches waited for compute */
    uint64_t start_ns;             /* CLOCK_REALTIME when it joined */
    char name[64];                 /* argv[0] */
} gp_slot_proc;

typedef struct gp_slot {
    /* Identity: written once, before the file is visible, and covered by ident_crc. */
    uint64_t magic;    /* GP_SLOT_MAGIC */
    uint32_t version;  /* GP_SLOT_VERSION */
    uint32_t size;     /* sizeof(gp_slot): the file's size */
    uint32_t index;    /* this GPU's ordinal in the workload: CUDA and NVML show it as device index */
    uint32_t count;    /* how many GPUs (slot files) the workload has */
    char gpu_uuid[48]; /* the physical GPU, "GPU-xxxxxxxx-...": NVML's and CUDA's UUID */
    char workload[128];
    char namespace_[64];
    double gpu_tflops;   /* dense FP16 TFLOPS of the GPU model, the unit compute is asked in */
    uint64_t created_ns; /* CLOCK_REALTIME */
    uint32_t ident_crc;  /* CRC-32 of the bytes from magic up to (not including) ident_crc */
    uint32_t reserved0;

    /* Limits: written by the agent, re-read live by the library. generation is bumped after each change. */
    _Atomic uint64_t generation;
    _Atomic uint64_t vram_limit;          /* bytes: the vGPU's memory */
    _Atomic uint32_t compute_request_ppm; /* guaranteed share */
    _Atomic uint32_t compute_limit_ppm;   /* burst ceiling; GP_SLOT_FULL_PPM = no compute limit */
    _Atomic uint32_t
        compute_effective_ppm; /* the share the agent grants now (request <= it <= limit); 0: limit */
    _Atomic uint32_t qos;      /* gp_slot_qos */
    _Atomic uint32_t frozen;   /* 1: new work waits (bounded); work already queued completes */
    _Atomic uint32_t reserved1;

    /* Compute budget, shared by the workload's processes (docs/vgpu.md, "Compute"). */
    _Atomic int64_t tokens_ns;       /* GPU time the workload may still use before it must wait */
    _Atomic uint64_t refill_ns;      /* when the budget was last brought up to date */
    _Atomic uint64_t leader;         /* (pid << 32) | claim counter of the process that keeps the budget */
    _Atomic uint64_t leader_beat_ns; /* its last step; a stale beat lets another process take over */

    /* Usage: written by the library. */
    _Atomic uint64_t busy_ns;      /* GPU time the workload used, as measured for the budget */
    _Atomic uint64_t throttled_ns; /* time launches waited for compute */
    _Atomic uint64_t launches;
    _Atomic uint64_t oom_refusals; /* allocations refused at the VRAM limit */
    _Atomic uint64_t frozen_waits; /* calls that waited on a frozen slot */
    _Atomic uint64_t proc_hw;      /* proc[0, proc_hw) are all entries ever claimed: sums look no further */
    _Atomic uint64_t reserved2[2];

    gp_slot_proc proc[GP_SLOT_MAX_PROCS];
} gp_slot;

#endif

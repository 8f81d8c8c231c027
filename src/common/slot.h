/* slot.h - creating, opening, validating and charging vGPU slots (the layout is gpupool/slot.h).
 *
 * Used by the vGPU library (which charges usage), the agent and `gpupool slot` (which write limits). A
 * gp_slot_handle maps one slot file; the caller owns it and closes it. Validation refuses anything that is
 * not a complete slot of this layout version with consistent limits, saying what is wrong.
 */
#ifndef GP_COMMON_SLOT_H
#define GP_COMMON_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/proctab.h"
#include "gpupool/slot.h"

typedef struct gp_slot_params {
    unsigned index, count;
    const char *gpu_uuid;
    const char *workload;
    const char *namespace_;
    double gpu_tflops;
    uint64_t vram_limit;
    uint32_t request_ppm, limit_ppm;
    uint32_t qos;
} gp_slot_params;

typedef struct gp_slot_handle {
    gp_slot *s;
    int fd;
    int proc; /* this process's entry, -1 until it joins */
    char path[512];
} gp_slot_handle;

uint32_t gp_crc32(const void *data, size_t len);

/* Writes a new slot file at path (replacing any, atomically through a rename). */
int gp_slot_create(const char *path, const gp_slot_params *p, gp_err *err);

/* Maps and validates an existing slot file for reading and writing usage. */
int gp_slot_open(const char *path, gp_slot_handle *h, gp_err *err);
void gp_slot_close(gp_slot_handle *h);

/* Checks a mapped slot of file_size bytes. */
int gp_slot_validate(const gp_slot *s, size_t file_size, gp_err *err);

/* Opens every gpu<N>.slot of dir, ordered by index; they must form one workload (indices 0..count-1). */
int gp_slot_dir_open(const char *dir, gp_slot_handle *hs, int max, int *n, gp_err *err);

/* Updates limits (what the agent does); bumps generation. vram_limit 0 and ppm GP_SLOT_KEEP leave a field
 * unchanged. The effective share is pulled into [request, limit]. */
#define GP_SLOT_KEEP UINT32_MAX
int gp_slot_set_limits(gp_slot *s, uint64_t vram_limit, uint32_t request_ppm, uint32_t limit_ppm,
                       gp_err *err);

/* The share enforced now: the agent's effective grant if set, else the limit. */
static inline uint32_t gp_slot_share_ppm(const gp_slot *s)
{
    uint32_t e = atomic_load_explicit(&((gp_slot *)s)->compute_effective_ppm, memory_order_relaxed);
    return e ? e : atomic_load_explicit(&((gp_slot *)s)->compute_limit_ppm, memory_order_relaxed);
}

/* The process table of a slot. */
gp_proctab gp_slot_proctab(const gp_slot_handle *h);

/* Joins the slot (claims a process entry); idempotent. */
int gp_slot_join(gp_slot_handle *h, gp_err *err);

/* Bytes in use over all the workload's processes. */
uint64_t gp_slot_vram_used(const gp_slot *s);

/* Charges bytes to this process unless the workload would exceed its VRAM limit: 0, or -1. */
int gp_slot_charge(gp_slot_handle *h, uint64_t bytes);
void gp_slot_uncharge(gp_slot_handle *h, uint64_t bytes);

/* "low", "medium", "high", "critical" <-> gp_slot_qos; -1 if unknown. */
int gp_qos_parse(const char *s);
const char *gp_qos_name(uint32_t qos);

#endif

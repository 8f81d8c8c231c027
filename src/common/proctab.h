/* proctab.h - a table of process entries in a shared file, owned through locks the kernel releases.
 *
 * Used by the simulated GPU's host state and by vGPU slots: each process that uses a resource holds an
 * entry, and counters in the entry (memory held, time used) belong to it. An entry is owned by whoever
 * holds an OFD byte-range write lock (fcntl F_OFD_SETLK) on byte `lock_base + index` of the file. The kernel
 * drops the lock when the owner exits, is killed or execs (the descriptor is close-on-exec), so a dead owner
 * is recognised by the next process that looks, which takes the same lock to reclaim the entry - two
 * reapers never both reclaim, and no lock is ever waited on. Each entry starts with gp_proctab_head.
 *
 * A process must use one descriptor for the file throughout: locks belong to the open file description.
 */
#ifndef GP_COMMON_PROCTAB_H
#define GP_COMMON_PROCTAB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gp_proctab_state { GP_PROCTAB_FREE = 0, GP_PROCTAB_LIVE = 1 };

typedef struct gp_proctab_head {
    _Atomic uint32_t state; /* gp_proctab_state */
    _Atomic uint32_t pid;
} gp_proctab_head;

typedef struct gp_proctab {
    int fd;             /* the shared file, opened O_RDWR | O_CLOEXEC */
    uint64_t lock_base; /* byte offset of entry 0's lock (may lie past the end of the file) */
    void *entries;      /* the first entry, in the mapped file */
    size_t stride;      /* bytes from one entry to the next */
    int n;              /* number of entries */
    /* Zeroes an entry's own counters (not the head); called with the entry's lock held. */
    void (*clear)(void *entry);
} gp_proctab;

static inline gp_proctab_head *gp_proctab_at(const gp_proctab *t, int i)
{
    return (gp_proctab_head *)((char *)t->entries + (size_t)i * t->stride);
}

/* Claims an entry for this process: a free one, else one whose owner is gone. Returns its index, or -1
 * when every entry has a live owner. The entry is cleared, its pid set and its state LIVE. */
int gp_proctab_claim(const gp_proctab *t);

/* Clears and frees our entry, and drops its lock. */
void gp_proctab_release(const gp_proctab *t, int index);

/* Reclaims the entries of owners that are gone (never `mine`). Returns how many. */
int gp_proctab_reap(const gp_proctab *t, int mine);

/* True if entry i is LIVE and its owner holds it (always true for `mine`). */
bool gp_proctab_alive(const gp_proctab *t, int i, int mine);

/* True if any entry's lock is held by a process (for deciding whether a file is in use). */
bool gp_proctab_any_owner(const gp_proctab *t);

/* A forked child shares its parent's open file description, and so its locks: it must never release or
 * reap through it. It forgets its index and closes its copy of the descriptor instead. */

#endif

/* proctab.c - shared process tables with kernel-released ownership locks (see proctab.h). */
#include "common/proctab.h"

#include <fcntl.h>
#include <unistd.h>

/* F_OFD_SETLK / F_OFD_GETLK on one byte. For GETLK returns the conflicting lock type (F_UNLCK if none). */
static int lock_byte(const gp_proctab *t, int i, short type, int cmd)
{
    struct flock fl = {
        .l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)(t->lock_base + (unsigned)i), .l_len = 1};
    if (fcntl(t->fd, cmd, &fl) != 0)
        return -1;
    return cmd == F_OFD_GETLK ? fl.l_type : 0;
}

static void clear_entry(const gp_proctab *t, int i)
{
    gp_proctab_head *h = gp_proctab_at(t, i);
    if (t->clear)
        t->clear(h);
    atomic_store(&h->pid, 0);
}

int gp_proctab_claim(const gp_proctab *t)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t->n; i++) {
            gp_proctab_head *h = gp_proctab_at(t, i);
            if (pass == 0 && atomic_load(&h->state) != GP_PROCTAB_FREE)
                continue; /* first free entries; then entries whose owner is gone */
            if (lock_byte(t, i, F_WRLCK, F_OFD_SETLK) < 0)
                continue; /* someone owns it, or is reclaiming it */
            clear_entry(t, i);
            atomic_store(&h->pid, (uint32_t)getpid());
            atomic_store(&h->state, GP_PROCTAB_LIVE);
            return i;
        }
    }
    return -1;
}

void gp_proctab_release(const gp_proctab *t, int index)
{
    if (index < 0)
        return;
    clear_entry(t, index);
    atomic_store(&gp_proctab_at(t, index)->state, GP_PROCTAB_FREE);
    lock_byte(t, index, F_UNLCK, F_OFD_SETLK);
}

int gp_proctab_reap(const gp_proctab *t, int mine)
{
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        if (i == mine || atomic_load(&gp_proctab_at(t, i)->state) != GP_PROCTAB_LIVE)
            continue;
        if (lock_byte(t, i, F_WRLCK, F_OFD_SETLK) < 0)
            continue; /* the owner lives (or another reaper is at it) */
        clear_entry(t, i);
        atomic_store(&gp_proctab_at(t, i)->state, GP_PROCTAB_FREE);
        lock_byte(t, i, F_UNLCK, F_OFD_SETLK);
        n++;
    }
    return n;
}

bool gp_proctab_alive(const gp_proctab *t, int i, int mine)
{
    if (i == mine)
        return true;
    if (atomic_load(&gp_proctab_at(t, i)->state) != GP_PROCTAB_LIVE)
        return false;
    return lock_byte(t, i, F_WRLCK, F_OFD_GETLK) == F_WRLCK;
}

bool gp_proctab_any_owner(const gp_proctab *t)
{
    for (int i = 0; i < t->n; i++)
        if (lock_byte(t, i, F_WRLCK, F_OFD_GETLK) == F_WRLCK)
            return true;
    return false;
}

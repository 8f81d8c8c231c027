/* handles.c - the registry of live CUDA handles.
 *
 * A handle is the address of a simulator object. Before using one, an entry point asks the registry whether
 * the address is a live object of the expected type, so a stale, destroyed or foreign handle gets
 * CUDA_ERROR_INVALID_HANDLE (or INVALID_CONTEXT) instead of a use-after-free. An open-addressing hash set
 * keyed by address, under a reader-writer lock (lookups on launch paths only read).
 */
#include "sim/sim.h"

#include <stdlib.h>

typedef struct slot {
    uintptr_t key; /* 0: empty, 1: deleted */
    int type;
} slot;

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static slot *g_slots;
static size_t g_cap, g_used, g_live;

static size_t hash(uintptr_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static slot *find(uintptr_t k)
{
    if (g_cap == 0)
        return NULL;
    for (size_t i = hash(k) & (g_cap - 1), n = 0; n < g_cap; i = (i + 1) & (g_cap - 1), n++) {
        if (g_slots[i].key == k)
            return &g_slots[i];
        if (g_slots[i].key == 0)
            return NULL;
    }
    return NULL;
}

static void insert_raw(slot *slots, size_t cap, uintptr_t k, int type)
{
    for (size_t i = hash(k) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (slots[i].key <= 1) {
            slots[i].key = k;
            slots[i].type = type;
            return;
        }
    }
}

static void grow(void)
{
    size_t ncap = g_cap ? g_cap * 2 : 256;
    while (g_live * 2 >= ncap)
        ncap *= 2;
    slot *ns = calloc(ncap, sizeof *ns);
    if (ns == NULL) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "out of host memory growing the handle registry");
        abort();
    }
    for (size_t i = 0; i < g_cap; i++)
        if (g_slots[i].key > 1)
            insert_raw(ns, ncap, g_slots[i].key, g_slots[i].type);
    free(g_slots);
    g_slots = ns;
    g_cap = ncap;
    g_used = g_live;
}

void gp_handle_add(const void *p, int type)
{
    pthread_rwlock_wrlock(&g_lock);
    slot *s = find((uintptr_t)p);
    if (s) {
        s->type = type;
    } else {
        if ((g_used + 1) * 4 >= g_cap * 3)
            grow();
        insert_raw(g_slots, g_cap, (uintptr_t)p, type);
        g_used++;
        g_live++;
    }
    pthread_rwlock_unlock(&g_lock);
}

void gp_handle_set_type(const void *p, int type)
{
    pthread_rwlock_wrlock(&g_lock);
    slot *s = find((uintptr_t)p);
    if (s)
        s->type = type;
    pthread_rwlock_unlock(&g_lock);
}

void gp_handle_del(const void *p)
{
    pthread_rwlock_wrlock(&g_lock);
    slot *s = find((uintptr_t)p);
    if (s) {
        s->key = 1;
        g_live--;
    }
    pthread_rwlock_unlock(&g_lock);
}

int gp_handle_type(const void *p)
{
    if ((uintptr_t)p <= 1)
        return 0;
    pthread_rwlock_rdlock(&g_lock);
    slot *s = find((uintptr_t)p);
    int t = s ? s->type : 0;
    pthread_rwlock_unlock(&g_lock);
    return t;
}

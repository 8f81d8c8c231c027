/* u64map.c - open-addressing hash map from u64 to u64 (see u64map.h). */
#include "common/u64map.h"

#include <stdlib.h>

#define EMPTY 0ull
#define GONE  UINT64_MAX

static size_t slot_of(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static int grow(gp_u64map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    while (m->live * 2 >= ncap)
        ncap *= 2;
    uint64_t *nk = calloc(ncap, sizeof *nk), *nv = calloc(ncap, sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == EMPTY || m->keys[i] == GONE)
            continue;
        size_t j = slot_of(m->keys[i], ncap);
        while (nk[j] != EMPTY)
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    m->used = m->live;
    return 0;
}

static long find(const gp_u64map *m, uint64_t key)
{
    if (m->cap == 0)
        return -1;
    for (size_t i = slot_of(key, m->cap), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
        if (m->keys[i] == key)
            return (long)i;
        if (m->keys[i] == EMPTY)
            return -1;
    }
    return -1;
}

int gp_u64map_put(gp_u64map *m, uint64_t key, uint64_t val)
{
    long f = find(m, key);
    if (f >= 0) {
        m->vals[f] = val;
        return 0;
    }
    if ((m->used + 1) * 4 >= m->cap * 3 && grow(m) < 0)
        return -1;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != EMPTY && m->keys[i] != GONE)
        i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == EMPTY)
        m->used++;
    m->keys[i] = key;
    m->vals[i] = val;
    m->live++;
    return 0;
}

bool gp_u64map_get(const gp_u64map *m, uint64_t key, uint64_t *val)
{
    long f = find(m, key);
    if (f < 0)
        return false;
    if (val)
        *val = m->vals[f];
    return true;
}

bool gp_u64map_del(gp_u64map *m, uint64_t key, uint64_t *val)
{
    long f = find(m, key);
    if (f < 0)
        return false;
    if (val)
        *val = m->vals[f];
    m->keys[f] = GONE;
    m->live--;
    return true;
}

void gp_u64map_free(gp_u64map *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = m->vals = NULL;
    m->cap = m->used = m->live = 0;
}

bool gp_u64map_next(const gp_u64map *m, size_t *i, uint64_t *key, uint64_t *val)
{
    for (; *i < m->cap; (*i)++) {
        if (m->keys[*i] != EMPTY && m->keys[*i] != GONE) {
            *key = m->keys[*i];
            *val = m->vals[*i];
            (*i)++;
            return true;
        }
    }
    return false;
}

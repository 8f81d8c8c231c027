/* u64map.h - a hash map from 64-bit keys to 64-bit values (open addressing, linear probing, tombstones).
 *
 * For tables of handles: device pointers -> allocation sizes, handles -> records. Not thread-safe: the
 * owner locks around it. Key 0 is reserved (never stored); values are the caller's.
 */
#ifndef GP_COMMON_U64MAP_H
#define GP_COMMON_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gp_u64map {
    uint64_t *keys; /* 0 empty, UINT64_MAX deleted */
    uint64_t *vals;
    size_t cap, used, live;
} gp_u64map;

/* 0, or -1 when out of memory (the map is unchanged). Key must not be 0 or UINT64_MAX. */
int gp_u64map_put(gp_u64map *m, uint64_t key, uint64_t val);
bool gp_u64map_get(const gp_u64map *m, uint64_t key, uint64_t *val);
/* Removes key; returns whether it was there (and its value). */
bool gp_u64map_del(gp_u64map *m, uint64_t key, uint64_t *val);
void gp_u64map_free(gp_u64map *m);

/* Iteration: for (size_t i = 0; gp_u64map_next(m, &i, &k, &v);) */
bool gp_u64map_next(const gp_u64map *m, size_t *i, uint64_t *key, uint64_t *val);

#endif

/* store.h - the controller's durable state: SQLite in WAL mode.
 *
 * One table of JSON documents keyed by (kind, key) - pools, nodes, workloads, quotas, profiles - each stamped
 * with the revision of the transaction that last wrote it; the store's revision is global and only grows
 * (as etcd's does), which is what agents' watches wait on. Every change runs in a transaction that is synced
 * before gp_store_commit returns (synchronous=FULL), so a change the controller acknowledged survives
 * kill -9 (and power loss); one it did not acknowledge is either wholly there or wholly absent.
 *
 * Errors never lose data: a full disk or an I/O error fails the transaction (rolled back) with a message; a
 * file that is not a gpupool store, or a corrupt one, is refused at open and left as it is. Not thread-safe:
 * the controller serialises calls under its lock. Documents returned are new references the caller owns.
 */
#ifndef GP_CONTROLLER_STORE_H
#define GP_CONTROLLER_STORE_H

#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

typedef struct gp_store gp_store;

/* Opens (creating) the store at path; ":memory:" for a throw-away one. */
int gp_store_open(const char *path, gp_store **out, gp_err *err);
void gp_store_close(gp_store *s);

int gp_store_begin(gp_store *s, gp_err *err);
int gp_store_commit(gp_store *s, gp_err *err); /* on failure the transaction is rolled back */
void gp_store_rollback(gp_store *s);

/* Inside a transaction. */
int gp_store_put(gp_store *s, const char *kind, const char *key, const json_t *doc, gp_err *err);
int gp_store_del(gp_store *s, const char *kind, const char *key, gp_err *err); /* GP_ERR_NOT_FOUND */

/* Reads (inside or outside a transaction). */
json_t *gp_store_get(gp_store *s, const char *kind, const char *key, uint64_t *rev);
typedef int (*gp_store_each_fn)(void *ctx, const char *key, json_t *doc,
                                uint64_t rev); /* doc borrowed; non-0 stops */
int gp_store_each(gp_store *s, const char *kind, gp_store_each_fn fn, void *ctx, gp_err *err);

/* The revision of the last committed transaction (0 for a new store). */
uint64_t gp_store_revision(const gp_store *s);

#endif

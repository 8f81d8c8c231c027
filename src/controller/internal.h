/* internal.h - the controller's state, shared by its parts: model.c (the in-memory model, its validation
 * and its persistence), api.c (the REST API), controller.c (life cycle, node monitor, pending workloads).
 *
 * One mutex, gp_controller.mu, guards the model; `changed` is broadcast after every committed change, and
 * agents' long-polls wait on it. The in-memory model mirrors the store: every change is written to the store
 * in a transaction first and applied in memory only once that transaction has committed.
 */
#ifndef GP_CONTROLLER_INTERNAL_H
#define GP_CONTROLLER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "common/http.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "controller/allocator.h"
#include "controller/controller.h"
#include "controller/store.h"

#define CN_LOG           "controller"
#define CN_MAX_NODE_GPUS 64

typedef struct cn_pool {
    char name[64];
    int id; /* allocator pool id */
    json_t *doc;
} cn_pool;

typedef struct cn_node {
    char name[64];
    int id;   /* allocator node id */
    int pool; /* index into pools */
    json_t *doc;
    int ngpus;
    int gpu[CN_MAX_NODE_GPUS]; /* allocator GPU ids */
    uint64_t last_seen_ns;     /* CLOCK_MONOTONIC of its last report */
    bool lost;
    uint64_t alloc_rev; /* store revision of the last change to its allocations */
    json_t *observed;   /* its last heartbeat: sets and GPUs as the agent sees them */
} cn_node;

typedef struct cn_workload {
    char key[160]; /* namespace/name */
    json_t *doc;   /* {spec, status}: what the store holds */
    gp_alloc_request req;
    bool placed;
    gp_alloc_placement place;
    int node; /* index into nodes when placed */
    uint64_t created_seq;
} cn_workload;

typedef struct cn_quota {
    char ns[64];
    int id;
    json_t *doc;
} cn_quota;

struct gp_controller {
    gp_controller_config cfg;
    gp_store *store;
    gp_allocator *alloc;
    gp_http_server *http;
    pthread_t monitor;
    bool monitor_started;
    atomic_bool stop;

    pthread_mutex_t mu;
    pthread_cond_t changed; /* CLOCK_MONOTONIC */
    cn_pool *pools;
    int npools, cappools;
    cn_node *nodes;
    int nnodes, capnodes;
    cn_workload **work;
    int nwork, capwork;
    json_t *work_index; /* key -> index into work */
    cn_quota *quotas;
    int nquotas, capquotas;
    json_t *profiles; /* name -> spec document */
    uint64_t seq;
};

/* model.c (all with mu held) */
int cn_load(gp_controller *c, gp_err *err);
void cn_unload(gp_controller *c);
int cn_pool_find(const gp_controller *c, const char *name);
int cn_node_find(const gp_controller *c, const char *name);
cn_workload *cn_work_find(const gp_controller *c, const char *ns, const char *name);
int cn_quota_find(const gp_controller *c, const char *ns);

json_t *cn_pool_json(const gp_controller *c, const cn_pool *p);
json_t *cn_node_json(const gp_controller *c, const cn_node *n);
json_t *cn_gpus_json(const gp_controller *c, const char *node_filter);
json_t *cn_work_json(const gp_controller *c, const cn_workload *w);
json_t *cn_quota_json(const gp_controller *c, const cn_quota *q);

/* Changes: each validates, writes the store in one transaction, then applies in memory and broadcasts.
 * On error nothing changed and *err says why (codes map to HTTP statuses, gp_http_problem_err). */
int cn_pool_put(gp_controller *c, json_t *body, bool create, const char *name, json_t **out, gp_err *err);
int cn_pool_delete(gp_controller *c, const char *name, gp_err *err);
int cn_quota_put(gp_controller *c, const char *ns, json_t *body, json_t **out, gp_err *err);
int cn_quota_delete(gp_controller *c, const char *ns, gp_err *err);
int cn_profile_put(gp_controller *c, json_t *body, json_t **out, gp_err *err);
int cn_profile_delete(gp_controller *c, const char *name, gp_err *err);
/* Creates a workload and places it. *created is false when an identical one existed (idempotent retry). */
int cn_work_create(gp_controller *c, json_t *body, json_t **out, bool *created, gp_err *err);
int cn_work_patch(gp_controller *c, cn_workload *w, json_t *body, json_t **out, gp_err *err);
int cn_work_delete(gp_controller *c, cn_workload *w, gp_err *err);
/* Explains where a workload would go, or why it fits nowhere, without changing anything. */
json_t *cn_work_explain(gp_controller *c, cn_workload *w);
/* Places pending workloads, oldest first, while they fit. */
void cn_retry_pending(gp_controller *c);

int cn_node_register(gp_controller *c, const char *name, json_t *body, json_t **out, gp_err *err);
int cn_node_heartbeat(gp_controller *c, const char *name, json_t *body, json_t **out, gp_err *err);
int cn_node_delete(gp_controller *c, const char *name, gp_err *err);
/* The allocations of a node as its agent applies them. */
json_t *cn_node_allocations(const gp_controller *c, const cn_node *n);
/* Marks nodes silent for longer than the timeout lost (and their workloads). */
void cn_check_nodes(gp_controller *c, uint64_t now);

/* api.c */
void cn_api_handle(void *ctx, const gp_http_req *req, gp_http_resp *resp);

/* Name checks: DNS-1123 labels (1-63 of a-z 0-9 '-', alphanumeric at both ends). */
bool cn_name_valid(const char *s);

#endif

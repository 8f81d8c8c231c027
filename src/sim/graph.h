/* graph.h - the graph structures shared by graph.c (graphs, executable graphs) and capture.c (stream
 * capture, which builds graphs).
 *
 * A graph is a vector of nodes in creation order; a node may depend only on nodes that existed when it was
 * added (no API here adds edges afterwards), so creation order is a topological order and a graph never
 * has a cycle. Everything here is guarded by one lock, g_gp_graph_mu (see sim.h for its place in the lock
 * order); the executor never takes it: a launch runs an executable graph, which is immutable.
 */
#ifndef GP_SIM_GRAPH_H
#define GP_SIM_GRAPH_H

#include "sim/sim.h"

typedef struct gp_graph_node {
    struct gp_graph *g;
    size_t idx; /* position in g->nodes */
    CUgraphNodeType type;
    struct gp_graph_node **deps;
    size_t ndeps;
    gp_ctx *ctx;   /* the context the node runs in; NULL for host and empty nodes */
    bool captured; /* made by stream capture (cuStreamEndCapture checks those are joined) */
    bool dead;     /* its kernel's module was unloaded: the graph cannot be instantiated */
    unsigned mark; /* scratch for walks under the lock */
    union {
        gp_op k; /* kernel: the validated operation, arguments owned by the node */
        CUDA_MEMCPY3D copy;
        CUDA_MEMSET_NODE_PARAMS set;
        CUDA_HOST_NODE_PARAMS host;
    } u;
} gp_graph_node;

typedef struct gp_graph {
    gp_ctx *ctx;                /* owner: freed with it; NULL when made with no context current */
    struct gp_capture *capture; /* the capture sequence building it, or NULL */
    gp_graph_node **nodes;      /* creation order */
    size_t n, cap;
} gp_graph;

extern pthread_mutex_t g_gp_graph_mu;

/* All with g_gp_graph_mu held. */
gp_graph *gp_graph_new(gp_ctx *owner);
void gp_graph_free(gp_graph *g);
/* Adds a node after deps (nodes of g, no duplicates). A kernel payload's arguments pass to the node on
 * success only. */
CUresult gp_graph_add(gp_graph *g, CUgraphNodeType type, gp_graph_node *const *deps, size_t ndeps,
                      const void *payload, gp_ctx *ctx, gp_graph_node **out);
/* A fresh value for gp_graph_node.mark. */
unsigned gp_graph_next_mark(void);

#endif

/* controller.h - the gpupool controller: the pool's single source of truth (docs/controller.md).
 *
 * It owns the model - pools, nodes and their GPUs, workloads and their allocations, quotas, profiles - in a
 * SQLite store (store.h), places workloads with the allocator (allocator.h), and serves the REST API /v1
 * (docs/openapi.yaml) on TCP and a unix socket. Agents register their node, report what they observe
 * (heartbeats) and watch the allocations placed on their node (long-poll), kubelet-style: desired state flows
 * down, observed state flows up. A node that stops reporting has its allocations marked lost after a timeout.
 *
 * `gpupool controller` runs one; `gpupool up` embeds one with an agent. The caller owns the gp_controller.
 */
#ifndef GP_CONTROLLER_CONTROLLER_H
#define GP_CONTROLLER_CONTROLLER_H

#include <stdint.h>

#include "common/config.h"
#include "common/error.h"

typedef struct gp_controller_config {
    char data_dir[256];  /* controller.db and controller.sock live here */
    char unix_path[300]; /* "" = <data_dir>/controller.sock */
    char tcp_addr[128];  /* "HOST:PORT"; "" for none */
    char token[128];     /* bearer token TCP clients need for changes; "" = none needed */
    char tls_cert[256];
    char tls_key[256];
    uint64_t node_timeout_ms; /* a node silent this long is lost (default 30 s) */
} gp_controller_config;

extern const char *const gp_controller_config_keys[];

void gp_controller_config_defaults(gp_controller_config *c);
int gp_controller_config_apply(gp_controller_config *c, const gp_config *kv, gp_err *err);

typedef struct gp_controller gp_controller;

int gp_controller_start(const gp_controller_config *c, gp_controller **out, gp_err *err);
void gp_controller_stop(gp_controller *c);
int gp_controller_tcp_port(const gp_controller *c);
/* The unix socket the API listens on. */
const char *gp_controller_socket(const gp_controller *c);

#endif

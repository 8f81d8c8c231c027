/* agent.h - the gpupool agent, the node "hypervisor": one per GPU host.
 *
 * It discovers the host's GPUs through NVML (NVIDIA's, or the simulated one), creates, changes and removes
 * the vGPU slots of the workloads placed on them (interface 1, docs/slot.md), shares each GPU's compute
 * between its slots by their requests, limits and QoS (arbiter.c), exports metrics, and serves its local
 * API (docs/agent.md) on a unix socket and optionally TCP. Everything a running workload depends on lives
 * in the run directory (the slot files), so the agent can be restarted - or killed - without disturbing
 * one: a new agent adopts the slots it finds there.
 *
 * `gpupool agent` runs one; `gpupool up` embeds one. The caller owns the gp_agent and stops it.
 */
#ifndef GP_AGENT_AGENT_H
#define GP_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/error.h"
#include "common/nvml_load.h"

typedef struct gp_agent_config {
    char run_dir[256];   /* slots/ and the API socket live here */
    char unix_path[300]; /* the local API's socket; "" = <run_dir>/agent.sock */
    char tcp_addr[128];  /* "HOST:PORT" for the API and /metrics over TCP; "" for none */
    char token[128];     /* bearer token TCP clients need for changes; "" = TCP is read-only */
    char tls_cert[256];  /* PEM: with both, TCP is HTTPS */
    char tls_key[256];
    char node_name[64]; /* default: the host name */
    char vgpu_lib[512]; /* libgpupool-vgpu.so given to workloads; default: beside the gpupool binary */
    gp_nvml_mode nvml_mode;
    uint64_t period_ms;    /* compute arbitration period */
    uint64_t discovery_ms; /* how often GPU facts, health and processes are refreshed */
    /* the controller, when the node is part of a pool (docs/agent.md, "Joining a controller") */
    char controller_url[300]; /* "http(s)://HOST:PORT" or "unix:/path/controller.sock"; "" = standalone */
    char controller_token[128];
    char pool[64];         /* the pool the node joins; default "default" */
    uint64_t heartbeat_ms; /* how often it reports to the controller */
    /* GPU-over-IP (docs/protocol.md): the node's `gpupool worker`, if it runs one. The agent keeps the
     * worker's token file, one token per slot set, and tells clients where the worker is. */
    char worker_addr[300];   /* the address clients connect to, e.g. "tcp:gpu-7:7070"; "" = no worker */
    char worker_tokens[300]; /* the worker's --token-file */
} gp_agent_config;

/* The keys an agent config file may hold (docs/agent.md). */
extern const char *const gp_agent_config_keys[];

/* Fills defaults: run_dir /run/gpupool (root) or $XDG_RUNTIME_DIR/gpupool or /tmp/gpupool-<uid>, period
 * 100 ms, discovery 1 s, NVML auto. */
void gp_agent_config_defaults(gp_agent_config *c);
/* Applies a parsed config (file and flags); unknown keys and bad values are errors naming the key. */
int gp_agent_config_apply(gp_agent_config *c, const gp_config *kv, gp_err *err);

typedef struct gp_agent gp_agent;

/* Loads NVML, adopts the slots in the run directory, starts the API and the arbiter. */
int gp_agent_start(const gp_agent_config *c, gp_agent **out, gp_err *err);
/* Stops the API and the arbiter and releases NVML. Slots stay (workloads keep running). */
void gp_agent_stop(gp_agent *a);
/* Whether its GPUs are the simulated ones. */
bool gp_agent_simulated(const gp_agent *a);
/* The TCP port the API listens on (0 when none). */
int gp_agent_tcp_port(const gp_agent *a);

#endif

/* harness.h - what the integration tests share: a real `gpupool agent` process on simulated GPUs, its API
 * over its unix socket, and gp_busy workloads started with the environment the agent hands out.
 *
 * Everything runs as real processes talking over real sockets; the test owns them and kills them at the end
 * (h_cleanup). Paths come from compile definitions (GPUPOOL_BIN, GP_BUSY) and the test's environment
 * (GPUPOOL_SIM_KERNEL_PATH, set by ctest).
 */
#ifndef GP_TESTS_HARNESS_H
#define GP_TESTS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

typedef struct h_agent {
    pid_t pid;
    char run_dir[256];
    char sock[300];
    char log[300];
    int tcp_port; /* when started with --listen-tcp */
} h_agent;

/* A fresh simulated host for this test process: GPUPOOL_SIM_GPUS=spec and a state file of its own. */
void h_sim_host(const char *spec);
/* A new empty folder under /tmp; returns it (static storage per call index is the caller's problem: copy). */
void h_tmpdir(char *out, size_t len, const char *tag);

/* Starts `gpupool agent --sim --run-dir DIR` plus extra args (NULL-terminated), logging to DIR/agent.log, and
 * waits until /healthz answers (fails the test after 15 s). */
void h_agent_start(h_agent *a, const char *run_dir, const char *const *extra);
/* Starts `gpupool <what> ARGS...` (NULL-terminated), logging to log, and waits until GET /healthz answers on
 * the unix socket sock (fails the test after 15 s). Fills a like h_agent_start. */
void h_daemon_start(h_agent *a, const char *const *argv, const char *sock, const char *log);
/* `gpupool controller --data-dir DIR --listen-tcp 127.0.0.1:0` plus extra args. */
void h_controller_start(h_agent *a, const char *data_dir, const char *const *extra);
/* Sends sig (SIGKILL or SIGTERM) and reaps the process. */
void h_agent_kill(h_agent *a, int sig);

/* One API call over the agent's unix socket; returns the HTTP status, *out the parsed JSON body (or NULL;
 * the caller json_decref's it). body may be NULL. */
long h_api(const h_agent *a, const char *method, const char *path, const char *body, json_t **out);
/* GET path over the unix socket; *raw the body as text (caller frees). */
long h_api_raw(const h_agent *a, const char *path, char **raw);
/* Same, over TCP on port, with an optional bearer token. */
long h_api_tcp(int port, const char *method, const char *path, const char *body, const char *token,
               json_t **out, char **raw);

/* 1 in the sanitizer build: instrumented programs launch several times slower, so a workload granted a whole
 * GPU may not be able to fill it. Tests check what is granted exactly, and what is achieved against a floor.
 */
#include "../asan.h"
/* What a saturating workload achieves when granted (nearly) a whole GPU, at least: a floor that catches a GPU
 * left idle by a gross mistake (a slot held to a budget it does not have), not a throughput figure - this
 * machine's speed varies through the day (0.84-0.95 for the same build). The grant is asserted exactly. */
#define H_FULL_FLOOR (GP_ASAN ? 0.6 : 0.7)

/* A workload: gp_busy on GPU gpu, with the environment of a slot set (the "env" object the agent returns). */
typedef struct h_work {
    pid_t pid;
    int fd;
    char part[128]; /* an unfinished line */
    size_t n, cap;
    uint64_t *t, *count; /* progress samples */
} h_work;

void h_work_start(h_work *w, json_t *env, int gpu);
/* Reads the progress printed so far. */
void h_work_poll(h_work *w);
/* Kernels (of kernel_ms) completed between t0 and t1 (CLOCK_MONOTONIC ns), as a share of the time. */
double h_work_share(h_work *w, uint64_t t0, uint64_t t1, double kernel_ms);
/* The newest completed-kernel count. */
uint64_t h_work_count(h_work *w);
void h_work_stop(h_work *w);
/* Kills every workload still running (a test that failed half-way leaves its own). */
void h_work_kill_all(void);

/* Kills every process the harness started (a test may fail half-way). */
void h_cleanup(void);

/* A free TCP port on 127.0.0.1 (bound then released). */
int h_free_port(void);

#endif

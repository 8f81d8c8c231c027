/* worker.h - `gpupool worker`: serves the GPU-over-IP protocol (wire.h) to remote clients on the GPU host.
 *
 * The main process only accepts connections and reaps session processes; it never calls CUDA. Each
 * connection gets a process of its own (fork), which checks the client's HELLO against the token file and
 * then serves the session's calls in order on the real driver (libcuda.so.1, found by the loader). A token
 * bound to a vGPU slot folder re-executes the session process with the vGPU library preloaded, so that the
 * slot's limits hold for the remote client as they would for a local one. When the connection ends, the
 * session process exits and the driver frees everything it held.
 */
#ifndef GPUPOOL_REMOTE_WORKER_H
#define GPUPOOL_REMOTE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define GP_WORKER_MAX_LISTEN 16

typedef struct gp_worker_config {
    const char *listen[GP_WORKER_MAX_LISTEN]; /* "unix:/path", "tcp:HOST:PORT" or "tls:HOST:PORT" (the
                                               * caller's strings) */
    int nlisten;
    char token_file[512]; /* lines "TOKEN [SLOT_DIR]", '#' comments; read again for every connection */
    char vgpu_lib[512];   /* libgpupool-vgpu.so preloaded into sessions of slot tokens */
    char cache_dir[512];  /* module images by SHA-256, shared by every session */
    uint64_t cache_max;   /* bytes the module cache may hold (0: no bound); the images used longest ago go */
    char tls_cert[512];   /* tls: listeners: the certificate chain and private key (PEM files) */
    char tls_key[512];
} gp_worker_config;

/* Defaults: the vGPU library beside the binary (<prefix>/lib), the module cache under the run folder
 * ($XDG_RUNTIME_DIR/gpupool or /tmp/gpupool-UID), bounded to 1 GiB. */
void gp_worker_config_defaults(gp_worker_config *c);

/* Listens on every address, prints each on stderr ("gpupool worker: listening on tcp:127.0.0.1:4321"), and
 * serves until SIGINT or SIGTERM (which it blocks and waits for; sessions are then ended too). Returns 0
 * after a signal, or -1 with err when it cannot start (an address, the token file, the cache folder). */
int gp_worker_run(const gp_worker_config *c, gp_err *err);

/* Whether a request payload of op decodes exactly as wire.h lays out its fields (every request passes this
 * before it runs; the fuzz target walks it). An op without a layout (unknown to the worker) passes: it is
 * answered NOT_SUPPORTED unread. On false, *why says what was wrong (static text). */
bool gp_worker_request_ok(unsigned op, const void *payload, size_t len, const char **why);

/* A session process after the re-exec for a slot token (`gpupool worker --session FD ...`): the client's
 * HELLO was accepted; this answers it and serves fd until the client leaves. Returns the exit status. */
int gp_worker_session_main(int fd, uint64_t session, uint32_t hello_seq, const char *cache_dir,
                           const char *client);

#endif

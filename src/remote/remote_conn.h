/* remote_conn.h - what both client libraries share: reaching `gpupool worker` (GPUPOOL_REMOTE, the token,
 * HELLO, CLIENT_ID), and CUDA_VISIBLE_DEVICES as the driver applies it.
 *
 * The remote libcuda.so.1 (client.c) and the remote libnvidia-ml.so.1 (client_nvml.c) are separate
 * libraries, each with a connection (a session) of its own, so that NVML works without cuInit and never
 * waits behind a long synchronizing CUDA call; both are linked with this code (gp_remote_conn). Nothing here
 * keeps state: each library owns its socket.
 */
#ifndef GPUPOOL_REMOTE_CONN_H
#define GPUPOOL_REMOTE_CONN_H

#include <stddef.h>
#include <stdint.h>

/* How a library names itself in the log lines of a failed connection. */
typedef struct gp_remote_who {
    const char *library;   /* "CUDA driver" */
    const char *call;      /* "cuInit" */
    const char *no_device; /* what the call answers when the worker is not reached: "CUDA_ERROR_NO_DEVICE" */
    const char *not_permitted; /* ... when it refuses the token: "CUDA_ERROR_NOT_PERMITTED" */
    const char *log;           /* the log component */
} gp_remote_who;

typedef enum gp_remote_fail {
    GP_REMOTE_NO_DEVICE = 1, /* not configured, unreachable, the handshake failed */
    GP_REMOTE_NOT_PERMITTED, /* the worker refused the token */
} gp_remote_fail;

/* Connects to GPUPOOL_REMOTE, says HELLO (seq 1) with GPUPOOL_REMOTE_TOKEN (or GPUPOOL_REMOTE_TOKEN_FILE's
 * first line), and once HELLO is accepted sends CLIENT_ID (seq 2, ASYNC: no reply to wait for). Returns the
 * socket (close-on-exec; TCP tuned to notice a vanished worker within about 5 s), *seq the last sequence
 * number used, addr the worker's address (for log lines); or -1 with *fail, after one log line saying what
 * failed and what to do. */
int gp_remote_connect(const gp_remote_who *who, char *addr, size_t addrlen, uint32_t *seq,
                      gp_remote_fail *fail);

/* This process's pid space: "BOOT_ID/pid:[INODE]" (the host's boot and the pid namespace), which tells the
 * worker whose pids a session's client pid is. "" when /proc does not say. */
void gp_remote_pid_space(char *out, size_t cap);

/* CUDA_VISIBLE_DEVICES, applied as the driver applies it (the worker never sees the variable) to the worker's
 * n devices, given by their UUIDs in the worker's order: ordinals or UUID prefixes, in the order given, up to
 * the first entry that names no device, repeats one or is ambiguous. order[] gets the visible devices'
 * indices, in order; returns how many (n when the variable is unset). */
int gp_remote_visible(const uint8_t (*uuid)[16], int n, int *order);

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as NVML and CUDA_VISIBLE_DEVICES write a UUID. */
void gp_remote_uuid_text(const uint8_t u[16], char out[41]);

#endif

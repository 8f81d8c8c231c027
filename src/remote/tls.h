/* tls.h - optional TLS for GPU-over-IP on TCP (docs/protocol.md, "TLS").
 *
 * The frames do not change: after the TLS handshake a pump moves bytes between the TLS connection and one end
 * of a socketpair, and the protocol code reads and writes the other end as it would a plain socket. On the
 * client the pump is a thread of the library; on the worker it is the session's parent process (the session
 * itself may re-execute under the vGPU library, which a thread would not survive). The pump owns the SSL
 * object alone, so OpenSSL is never used from two threads at once.
 */
#ifndef GPUPOOL_REMOTE_TLS_H
#define GPUPOOL_REMOTE_TLS_H

#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;

/* The worker's context: its certificate chain and private key (PEM files), TLS 1.2 or later. NULL with err
 * set when a file is missing or the key does not match the certificate. */
SSL_CTX *gp_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);

void gp_tls_ctx_free(SSL_CTX *ctx); /* NULL is fine */

/* The worker's side of an accepted TCP connection: the handshake (within timeout_ms), then a socketpair. The
 * call returns in a new child process, with the local end as its connection; the calling process becomes the
 * pump, which runs until either side closes, waits for the child and exits with its status (so whoever waits
 * for the caller learns how the session ended). -1 with err set when the handshake fails (nothing forked). */
int gp_tls_server(SSL_CTX *ctx, int fd, int timeout_ms, char *err, size_t errlen);

/* The client's side of a connected TCP socket to host: the handshake, verifying the worker's certificate
 * against ca_file (PEM; NULL: the system's trusted authorities) and host, then a pump thread. Returns the
 * local end (fd is owned by the pump from then on), or -1 with err set. */
int gp_tls_client(int fd, const char *host, const char *ca_file, int timeout_ms, char *err, size_t errlen);

#endif

/* client.h - what the CLI's client commands (get, describe, delete, run) share: finding the controller,
 * calling it, reporting its errors, and printing resources as tables, JSON or YAML.
 */
#ifndef GP_CLI_CLIENT_H
#define GP_CLI_CLIENT_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

/* The controller's address: --server, else GPUPOOL_SERVER, else the unix socket of `gpupool up`'s default
 * folder when it exists, else http://127.0.0.1:9400. Returns a static string. */
const char *gp_cli_server(const char *flag);

/* One call. Returns the HTTP status (0 when the controller could not be reached: *errmsg says why), *out the
 * JSON body (may be NULL; the caller decrefs). */
long gp_cli_call(const char *server, const char *method, const char *path, json_t *body, long timeout_ms,
                 json_t **out, char *errmsg, size_t errlen);

/* Prints "gpupool <cmd>: <problem detail>" (or the transport error) on stderr. */
void gp_cli_report(const char *cmd, long status, json_t *body, const char *errmsg);

/* YAML (block style; scalars in JSON syntax, which is valid YAML) of any JSON value. */
void gp_cli_yaml(FILE *f, const json_t *v);

/* Percent-encodes s into out (for path segments and query values). */
void gp_cli_escape(const char *s, char *out, size_t len);

#endif

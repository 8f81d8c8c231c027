/* client.c - see client.h. */
#include "cli/client.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/http.h"
#include "controller/controller.h"

const char *gp_cli_server(const char *flag)
{
    static char buf[460];
    if (flag && *flag)
        return flag;
    const char *env = getenv("GPUPOOL_SERVER");
    if (env && *env)
        return env;
    gp_controller_config c;
    gp_controller_config_defaults(&c);
    snprintf(buf, sizeof buf, "unix:%s/controller.sock", c.data_dir);
    if (access(buf + 5, F_OK) == 0)
        return buf;
    return "http://127.0.0.1:9400";
}

long gp_cli_call(const char *server, const char *method, const char *path, json_t *body, long timeout_ms,
                 json_t **out, char *errmsg, size_t errlen)
{
    char url[1200];
    if (strncmp(server, "unix:", 5) == 0)
        snprintf(url, sizeof url, "%s:%s", server, path);
    else
        snprintf(url, sizeof url, "%s%s", server, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    const char *token = getenv("GPUPOOL_TOKEN");
    gp_http_client_opts o = {.timeout_ms = timeout_ms, .bearer = token && *token ? token : NULL};
    gp_http_result r = {0};
    gp_err err = {0};
    int rc = gp_http_call(method, url, text, NULL, &o, &r, &err);
    free(text);
    if (out)
        *out = NULL;
    if (rc < 0) {
        snprintf(errmsg, errlen,
                 "cannot reach the controller at %s: %s (is `gpupool up` or `gpupool controller` "
                 "running? --server or GPUPOOL_SERVER say where it is)",
                 server, err.msg);
        return 0;
    }
    if (out && r.body)
        *out = json_loads(r.body, 0, NULL);
    long st = r.status;
    gp_http_result_free(&r);
    return st;
}

void gp_cli_report(const char *cmd, long status, json_t *body, const char *errmsg)
{
    if (status == 0) {
        fprintf(stderr, "gpupool %s: %s\n", cmd, errmsg);
        return;
    }
    const char *d = json_string_value(json_object_get(body, "detail"));
    fprintf(stderr, "gpupool %s: %s\n", cmd, d ? d : "the controller answered with an error");
    (void)status;
}

static void indent(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fputs("  ", f);
}

static void scalar(FILE *f, const json_t *v)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12));
    fputs(s ? s : "null", f);
    free(s);
}

static bool simple(const json_t *v)
{
    return !(json_is_object(v) && json_object_size(v) > 0) && !(json_is_array(v) && json_array_size(v) > 0);
}

static void yaml(FILE *f, const json_t *v, int depth)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            indent(f, depth);
            fprintf(f, "%s:", k);
            if (simple(x)) {
                fputc(' ', f);
                scalar(f, x);
                fputc('\n', f);
            } else {
                fputc('\n', f);
                yaml(f, x, depth + 1);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            indent(f, depth);
            if (simple(x)) {
                fputs("- ", f);
                scalar(f, x);
                fputc('\n', f);
            } else {
                fputs("-\n", f);
                yaml(f, x, depth + 1);
            }
        }
    } else {
        indent(f, depth);
        scalar(f, v);
        fputc('\n', f);
    }
}

void gp_cli_yaml(FILE *f, const json_t *v)
{
    if (simple(v)) {
        scalar(f, v);
        fputc('\n', f);
    } else {
        yaml(f, v, 0);
    }
}

void gp_cli_escape(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; *s && n + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '.' || c == '_' || c == '~')
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, len - n, "%%%02X", c);
    }
    out[n] = '\0';
}

/* get_cmd.c - `gpupool get|describe|delete`: the controller's resources for people (tables) and programs
 * (-o json|yaml). A thin client of the REST API (docs/openapi.yaml).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/quantity.h"

typedef struct kind {
    const char *name;    /* as typed (plural) */
    const char *alias;   /* singular */
    const char *path;    /* /v1/... */
    const char *listkey; /* the array in a list answer */
    bool namespaced;
} kind;

static const kind kinds[] = {
    {"pools", "pool", "/v1/pools", "pools", false},
    {"nodes", "node", "/v1/nodes", "nodes", false},
    {"gpus", "gpu", "/v1/gpus", "gpus", false},
    {"workloads", "workload", "/v1/workloads", "workloads", true},
    {"quotas", "quota", "/v1/quotas", "quotas", false},
    {"profiles", "profile", "/v1/profiles", "profiles", false},
};

static const kind *find_kind(const char *s)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(s, kinds[i].name) == 0 || strcmp(s, kinds[i].alias) == 0 ||
            (strcmp(kinds[i].name, "workloads") == 0 && (strcmp(s, "wl") == 0 || strcmp(s, "w") == 0)))
            return &kinds[i];
    return NULL;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static const char *gib(double bytes, char *buf, size_t len)
{
    snprintf(buf, len, "%.1fGi", bytes / (1024.0 * 1024 * 1024));
    return buf;
}

static void table_pools(json_t *arr)
{
    printf("%-16s %-26s %9s %6s %5s %-20s %-20s\n", "NAME", "STRATEGY", "OVERSELL", "NODES", "GPUS",
           "TFLOPS REQ/TOTAL", "VRAM REQ/TOTAL");
    json_t *p;
    size_t i;
    json_array_foreach(arr, i, p)
    {
        json_t *cap = json_object_get(p, "capacity");
        char a[32], b[32], t[80], v[80];
        snprintf(t, sizeof t, "%.0f/%.0f", num(cap, "tflops_requested"), num(cap, "tflops"));
        snprintf(v, sizeof v, "%s/%s", gib(num(cap, "vram_requested"), a, sizeof a),
                 gib(num(cap, "vram"), b, sizeof b));
        printf("%-16s %-26s %8.0f%% %6.0f %5.0f %-20s %-20s\n", str(p, "name"), str(p, "strategy"),
               num(p, "tflops_oversell_percent"), num(cap, "nodes"), num(cap, "gpus"), t, v);
    }
}

static void table_nodes(json_t *arr)
{
    printf("%-24s %-12s %-6s %5s %10s %12s  %s\n", "NAME", "POOL", "STATE", "GPUS", "WORKLOADS",
           "LAST REPORT", "WORKER");
    json_t *n;
    size_t i;
    json_array_foreach(arr, i, n)
    {
        char ago[32], worker[340] = "-"; /* GPU-over-IP: where its worker is, and whether it is up */
        snprintf(ago, sizeof ago, "%.0fs ago", num(n, "last_report_seconds_ago"));
        json_t *w = json_object_get(n, "worker");
        if (json_is_object(w))
            snprintf(worker, sizeof worker, "%s (%s)", str(w, "address"),
                     json_is_true(json_object_get(w, "up")) ? "up" : "down");
        printf("%-24s %-12s %-6s %5zu %10.0f %12s  %s\n", str(n, "name"), str(n, "pool"), str(n, "state"),
               json_array_size(json_object_get(n, "gpus")), num(n, "workloads"), ago, worker);
    }
}

static void table_gpus(json_t *arr)
{
    printf("%-20s %-5s %-18s %-16s %-20s %-16s %-8s %5s\n", "NODE", "INDEX", "UUID", "MODEL",
           "TFLOPS REQ/LIM/ALL", "VRAM REQ/ALL", "HEALTHY", "LOAD");
    json_t *g;
    size_t i;
    json_array_foreach(arr, i, g)
    {
        json_t *c = json_object_get(g, "committed");
        char t[80], v[80], a[32], b[32];
        snprintf(t, sizeof t, "%.0f/%.0f/%.0f", num(c, "tflops_request"), num(c, "tflops_limit"),
                 num(g, "tflops"));
        snprintf(v, sizeof v, "%s/%s", gib(num(c, "vram_request"), a, sizeof a),
                 gib(num(g, "vram"), b, sizeof b));
        printf("%-20s %-5.0f %-18.18s %-16s %-20s %-16s %-8s %4.0f%%\n", str(g, "node"), num(g, "index"),
               str(g, "uuid"), str(g, "model"), t, v,
               json_is_false(json_object_get(g, "healthy")) ? "no" : "yes", num(g, "load") * 100);
    }
}

static void table_workloads(json_t *arr)
{
    printf("%-12s %-20s %-10s %-16s %4s %-14s %-14s %-8s %-5s %-9s %s\n", "NAMESPACE", "NAME", "PHASE",
           "NODE", "GPUS", "COMPUTE", "VRAM", "QOS", "READY", "USED", "MESSAGE");
    json_t *w;
    size_t i;
    json_array_foreach(arr, i, w)
    {
        json_t *s = json_object_get(w, "spec"), *st = json_object_get(w, "status");
        json_t *al = json_object_get(st, "allocation"), *u = json_object_get(st, "usage");
        char comp[80], vram[80], a[32], b[32], used[24] = "-";
        if (json_object_get(s, "tflops_limit"))
            snprintf(comp, sizeof comp, "%g/%g TF", num(s, "tflops_request"), num(s, "tflops_limit"));
        else
            snprintf(comp, sizeof comp, "%g/%g%%", num(s, "percent_request"), num(s, "percent_limit"));
        snprintf(vram, sizeof vram, "%s/%s", gib(num(s, "vram_request"), a, sizeof a),
                 gib(num(s, "vram_limit"), b, sizeof b));
        json_t *up = json_object_get(u, "used_percent");
        if (json_array_size(up)) {
            double sum = 0;
            json_t *x;
            size_t k;
            json_array_foreach(up, k, x) sum += json_number_value(x);
            snprintf(used, sizeof used, "%.0f%%", sum / (double)json_array_size(up));
        }
        printf("%-12s %-20s %-10s %-16s %4.0f %-14s %-14s %-8s %-5s %-9s %s\n", str(s, "namespace"),
               str(s, "name"), str(st, "phase"), al ? str(al, "node") : "-", num(s, "gpus"), comp, vram,
               str(s, "qos"), json_is_true(json_object_get(st, "ready")) ? "yes" : "no", used,
               str(st, "message"));
    }
}

static void table_other(json_t *arr)
{
    json_t *x;
    size_t i;
    json_array_foreach(arr, i, x)
    {
        char *s = json_dumps(x, JSON_COMPACT);
        printf("%s\n", s ? s : "");
        free(s);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gpupool get KIND [NAME] [-n NAMESPACE] [-o table|json|yaml] [--server URL]\n"
               "       gpupool describe KIND NAME [-n NAMESPACE] [--server URL]\n"
               "       gpupool delete KIND NAME [-n NAMESPACE] [--server URL]\n"
               "KIND: pools, nodes, gpus, workloads (wl), quotas, profiles (singular works too)\n");
}

/* verb: 'g' get, 'd' describe, 'x' delete */
static int client_cmd(char verb, const char *cmd, int argc, char **argv)
{
    static const struct option lo[] = {{"namespace", required_argument, 0, 'n'},
                                       {"output", required_argument, 0, 'o'},
                                       {"server", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *ns = NULL, *output = "table", *server = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:o:h", lo, NULL)) != -1) {
        if (c == 'n')
            ns = optarg;
        else if (c == 'o')
            output = optarg;
        else if (c == 's')
            server = optarg;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "gpupool %s: which kind of resource?\n", cmd);
        usage(stderr);
        return 2;
    }
    const kind *k = find_kind(argv[optind]);
    if (k == NULL) {
        fprintf(stderr, "gpupool %s: unknown kind \"%s\"\n", cmd, argv[optind]);
        usage(stderr);
        return 2;
    }
    const char *name = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (verb != 'g' && name == NULL) {
        fprintf(stderr, "gpupool %s: which %s? (gpupool get %s lists them)\n", cmd, k->alias, k->name);
        return 2;
    }
    if (strcmp(output, "table") != 0 && strcmp(output, "json") != 0 && strcmp(output, "yaml") != 0) {
        fprintf(stderr, "gpupool %s: -o %s: use table, json or yaml\n", cmd, output);
        return 2;
    }
    char path[600], e1[200], e2[200];
    if (name) {
        gp_cli_escape(name, e1, sizeof e1);
        if (k->namespaced) {
            gp_cli_escape(ns ? ns : "default", e2, sizeof e2);
            snprintf(path, sizeof path, "%s/%s/%s", k->path, e2, e1);
        } else {
            snprintf(path, sizeof path, "%s/%s", k->path, e1);
        }
    } else if (k->namespaced && ns) {
        gp_cli_escape(ns, e2, sizeof e2);
        snprintf(path, sizeof path, "%s?namespace=%s", k->path, e2);
    } else {
        snprintf(path, sizeof path, "%s", k->path);
    }
    const char *srv = gp_cli_server(server);
    char errmsg[600];
    json_t *out = NULL;
    long st =
        gp_cli_call(srv, verb == 'x' ? "DELETE" : "GET", path, NULL, 30000, &out, errmsg, sizeof errmsg);
    if (st < 200 || st >= 300) {
        gp_cli_report(cmd, st, out, errmsg);
        json_decref(out);
        return 1;
    }
    if (verb == 'x') {
        printf("%s %s deleted\n", k->alias, name);
        json_decref(out);
        return 0;
    }
    if (verb == 'd' && strcmp(k->name, "workloads") == 0) {
        char ep[700];
        snprintf(ep, sizeof ep, "%s/explain", path);
        json_t *why = NULL;
        if (gp_cli_call(srv, "GET", ep, NULL, 30000, &why, errmsg, sizeof errmsg) == 200)
            json_object_set_new(out, "placement", why);
    }
    if (strcmp(output, "json") == 0) {
        char *s = json_dumps(out, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
        printf("%s\n", s ? s : "null");
        free(s);
    } else if (strcmp(output, "yaml") == 0 || verb == 'd' || name) {
        gp_cli_yaml(stdout, out);
    } else {
        json_t *arr = json_object_get(out, k->listkey);
        if (strcmp(k->name, "pools") == 0)
            table_pools(arr);
        else if (strcmp(k->name, "nodes") == 0)
            table_nodes(arr);
        else if (strcmp(k->name, "gpus") == 0)
            table_gpus(arr);
        else if (strcmp(k->name, "workloads") == 0)
            table_workloads(arr);
        else
            table_other(arr);
    }
    json_decref(out);
    return 0;
}

int gp_cmd_get(int argc, char **argv)
{
    return client_cmd('g', "get", argc, argv);
}

int gp_cmd_describe(int argc, char **argv)
{
    return client_cmd('d', "describe", argc, argv);
}

int gp_cmd_delete(int argc, char **argv)
{
    return client_cmd('x', "delete", argc, argv);
}

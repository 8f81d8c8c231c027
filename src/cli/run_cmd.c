/* run_cmd.c - `gpupool run [options] -- CMD [ARGS]`: runs a command on a fractional vGPU of the pool.
 *
 * It asks the controller for a workload of the given size, waits until the node's agent has made its slots
 * (at most --timeout), starts CMD with the environment the agent gives (the vGPU library and its slot
 * folder), forwards SIGINT/SIGTERM/SIGHUP to it, and when it ends deletes the workload and exits with CMD's
 * status (128 + the signal when it was killed by one). A workload that does not fit fails at once with the
 * controller's explanation, unless --wait asks to queue for capacity.
 *
 * With --remote the workload is a remote one (GPU-over-IP, docs/protocol.md): the controller places it only
 * on a node whose worker is up, and CMD runs here, on gpupool's client libcuda.so.1, against that worker,
 * with the slot set's token.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/paths.h"
#include "common/quantity.h"

static volatile sig_atomic_t g_child;

static void forward(int sig)
{
    if (g_child > 0)
        kill((pid_t)g_child, sig);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gpupool run [options] -- COMMAND [ARGS...]\n"
               "  --tflops T            guaranteed TFLOPS per GPU (also the limit unless --tflops-limit)\n"
               "  --tflops-limit T      TFLOPS per GPU it may burst to\n"
               "  --percent P           guaranteed percent of a GPU (also the limit unless --percent-limit)\n"
               "  --percent-limit P     percent of a GPU it may burst to\n"
               "  --vram SIZE           VRAM per GPU, e.g. 8Gi (also the limit unless --vram-limit)\n"
               "  --vram-limit SIZE     VRAM limit per GPU\n"
               "  --gpus N              GPUs, all on one node (default 1)\n"
               "  --qos LEVEL           low, medium, high or critical (default: the pool's)\n"
               "  --pool NAME           (default \"default\")\n"
               "  --model KEY           only GPUs of this model, e.g. H100-SXM-80GB\n"
               "  --node NAME           only this node\n"
               "  --profile NAME        take unset sizes from a workload profile\n"
               "  --name NAME           the workload's name (default: from the command)\n"
               "  -n, --namespace NS    (default \"default\")\n"
               "  --wait                queue until capacity frees up instead of failing at once\n"
               "  --remote              run COMMAND here on a vGPU of another host (GPU-over-IP): the\n"
               "                        controller picks a node whose worker is up; COMMAND uses gpupool's\n"
               "                        client libcuda.so.1 and that worker\n"
               "  --timeout SECONDS     how long to wait for the vGPU to be ready (default 60)\n"
               "  --server URL          the controller (default: GPUPOOL_SERVER, or `gpupool up`'s)\n");
}

/* A DNS label from the command's base name plus a random suffix. */
static void default_name(const char *cmd, char *out, size_t len)
{
    const char *base = strrchr(cmd, '/');
    base = base ? base + 1 : cmd;
    char b[40];
    size_t n = 0;
    for (const char *p = base; *p && n < 30; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            b[n++] = c;
        else if (n && b[n - 1] != '-')
            b[n++] = '-';
    }
    while (n && b[n - 1] == '-')
        n--;
    b[n] = '\0';
    unsigned char r[3] = {0};
    if (getrandom(r, sizeof r, 0) != 3)
        r[0] = (unsigned char)getpid();
    snprintf(out, len, "%s-%02x%02x%02x", n ? b : "run", r[0], r[1], r[2]);
}

static int set_num(json_t *body, const char *key, const char *v, const char *flag)
{
    char *end;
    double d = strtod(v, &end);
    if (*end != '\0' || end == v) {
        fprintf(stderr, "gpupool run: %s \"%s\" is not a number\n", flag, v);
        return -1;
    }
    json_object_set_new(body, key, json_real(d));
    return 0;
}

static int set_bytes(json_t *body, const char *key, const char *v, const char *flag)
{
    uint64_t b;
    gp_err err;
    if (gp_quantity_parse_bytes(v, flag, &b, &err) < 0) {
        fprintf(stderr, "gpupool run: %s\n", err.msg);
        return -1;
    }
    json_object_set_new(body, key, json_integer((json_int_t)b));
    return 0;
}

/* Prepends value to a colon-separated variable (LD_PRELOAD, LD_LIBRARY_PATH); sets the others. */
static void apply_env(json_t *env)
{
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v)
    {
        const char *val = json_string_value(v);
        if (val == NULL)
            continue;
        const char *old = getenv(k);
        if (old && *old && (strcmp(k, "LD_PRELOAD") == 0 || strcmp(k, "LD_LIBRARY_PATH") == 0)) {
            size_t len = strlen(val) + strlen(old) + 2;
            char *both = malloc(len);
            if (both) {
                snprintf(both, len, "%s:%s", val, old);
                setenv(k, both, 1);
                free(both);
                continue;
            }
        }
        setenv(k, val, 1);
    }
}

/* The environment of a remote workload's command: where its worker is and its token (from the agent), and
 * gpupool's client libcuda.so.1 first on the loader's path (GPUPOOL_CLIENT_LIB_DIR, or lib/remote beside this
 * binary's folder). NULL when the agent gave no worker. */
static json_t *remote_env(json_t *from_agent)
{
    if (!json_is_object(from_agent) || !json_is_string(json_object_get(from_agent, "GPUPOOL_REMOTE")))
        return NULL;
    json_t *env = json_deep_copy(from_agent);
    char dir[600] = "";
    const char *given = getenv("GPUPOOL_CLIENT_LIB_DIR");
    if (given && *given) {
        snprintf(dir, sizeof dir, "%s", given);
    } else if (gp_install_path("lib/remote", dir, sizeof dir) == NULL) {
        dir[0] = '\0';
    }
    if (dir[0])
        json_object_set_new(env, "LD_LIBRARY_PATH", json_string(dir));
    return env;
}

int gp_cmd_run(int argc, char **argv)
{
    static const struct option lo[] = {
        {"tflops", required_argument, 0, 't'},  {"tflops-limit", required_argument, 0, 'T'},
        {"percent", required_argument, 0, 'p'}, {"percent-limit", required_argument, 0, 'P'},
        {"vram", required_argument, 0, 'v'},    {"vram-limit", required_argument, 0, 'V'},
        {"gpus", required_argument, 0, 'g'},    {"qos", required_argument, 0, 'q'},
        {"pool", required_argument, 0, 'o'},    {"model", required_argument, 0, 'm'},
        {"node", required_argument, 0, 'N'},    {"profile", required_argument, 0, 'f'},
        {"name", required_argument, 0, 'a'},    {"namespace", required_argument, 0, 'n'},
        {"wait", no_argument, 0, 'w'},          {"remote", no_argument, 0, 'R'},
        {"timeout", required_argument, 0, 'W'}, {"server", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    json_t *body = json_object();
    const char *server = NULL, *name = NULL, *ns = "default";
    long timeout = 60;
    bool remote = false;
    int c, bad = 0;
    optind = 1;
    /* "+": options stop at the command */
    while (!bad && (c = getopt_long(argc, argv, "+n:h", lo, NULL)) != -1) {
        switch (c) {
        case 't': bad = set_num(body, "tflops_request", optarg, "--tflops"); break;
        case 'T': bad = set_num(body, "tflops_limit", optarg, "--tflops-limit"); break;
        case 'p': bad = set_num(body, "percent_request", optarg, "--percent"); break;
        case 'P': bad = set_num(body, "percent_limit", optarg, "--percent-limit"); break;
        case 'v': bad = set_bytes(body, "vram_request", optarg, "--vram"); break;
        case 'V': bad = set_bytes(body, "vram_limit", optarg, "--vram-limit"); break;
        case 'g': json_object_set_new(body, "gpus", json_integer(atoi(optarg))); break;
        case 'q': json_object_set_new(body, "qos", json_string(optarg)); break;
        case 'o': json_object_set_new(body, "pool", json_string(optarg)); break;
        case 'm': json_object_set_new(body, "model", json_string(optarg)); break;
        case 'N': json_object_set_new(body, "node", json_string(optarg)); break;
        case 'f': json_object_set_new(body, "profile", json_string(optarg)); break;
        case 'a': name = optarg; break;
        case 'n': ns = optarg; break;
        case 'w': json_object_set_new(body, "wait_for_capacity", json_true()); break;
        case 'R':
            json_object_set_new(body, "remote", json_true());
            remote = true;
            break;
        case 'W': timeout = atol(optarg); break;
        case 's': server = optarg; break;
        case 'h':
            usage(stdout);
            json_decref(body);
            return 0;
        default: bad = 1;
        }
    }
    if (bad || optind >= argc) {
        if (!bad)
            fprintf(stderr, "gpupool run: which command? (gpupool run [options] -- COMMAND)\n");
        usage(stderr);
        json_decref(body);
        return 2;
    }
    if (timeout < 1 || timeout > 3600) {
        fprintf(stderr, "gpupool run: --timeout must be 1 to 3600 seconds\n");
        json_decref(body);
        return 2;
    }
    char gen[64];
    if (name == NULL)
        default_name(argv[optind], gen, sizeof gen), name = gen;
    json_object_set_new(body, "name", json_string(name));
    json_object_set_new(body, "namespace", json_string(ns));
    const char *srv = gp_cli_server(server);
    char errmsg[600], path[480], en[200], enn[200];
    json_t *out = NULL;
    long st = gp_cli_call(srv, "POST", "/v1/workloads", body, 30000, &out, errmsg, sizeof errmsg);
    json_decref(body);
    if (st != 201 && st != 200) {
        gp_cli_report("run", st, out, errmsg);
        json_decref(out);
        return 1;
    }
    json_decref(out);
    gp_cli_escape(ns, enn, sizeof enn);
    gp_cli_escape(name, en, sizeof en);
    snprintf(path, sizeof path, "/v1/workloads/%s/%s", enn, en);
    /* wait until the agent has made the slots (and, with --wait, until it is placed at all) */
    json_t *env = NULL;
    uint64_t deadline = (uint64_t)time(NULL) + (uint64_t)timeout;
    int rc = 1;
    while ((uint64_t)time(NULL) < deadline) {
        char q[560];
        snprintf(q, sizeof q, "%s?wait=ready&timeout=%ld", path,
                 (long)(deadline - (uint64_t)time(NULL)) > 20 ? 20 : (long)(deadline - (uint64_t)time(NULL)));
        st = gp_cli_call(srv, "GET", q, NULL, 30000, &out, errmsg, sizeof errmsg);
        if (st != 200) {
            gp_cli_report("run", st, out, errmsg);
            json_decref(out);
            out = NULL;
            goto done;
        }
        json_t *status = json_object_get(out, "status");
        if (json_is_true(json_object_get(status, "ready"))) {
            if (remote) {
                env = remote_env(json_object_get(status, "remote_env"));
                if (env == NULL) {
                    /* the controller placed it on a node whose worker was up: its agent no longer has one */
                    fprintf(
                        stderr,
                        "gpupool run: the node of %s/%s no longer reports a GPU-over-IP worker, so --remote "
                        "cannot use it (gpupool get nodes shows the workers; an agent needs worker.address "
                        "and worker.token_file, docs/protocol.md)\n",
                        ns, name);
                    json_decref(out);
                    goto done;
                }
            } else {
                env = json_incref(json_object_get(status, "env"));
            }
            json_decref(out);
            break;
        }
        json_decref(out);
    }
    if (env == NULL) {
        fprintf(
            stderr,
            "gpupool run: the vGPU of %s/%s was not ready within %ld s (gpupool describe workload %s -n %s "
            "says why)\n",
            ns, name, timeout, name, ns);
        goto done;
    }
    struct sigaction sa = {.sa_handler = forward};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        apply_env(env);
        execvp(argv[optind], argv + optind);
        fprintf(stderr, "gpupool run: cannot run %s: %s\n", argv[optind], strerror(errno));
        _exit(127);
    }
    json_decref(env);
    if (pid < 0) {
        fprintf(stderr, "gpupool run: cannot start %s: %s\n", argv[optind], strerror(errno));
        goto done;
    }
    g_child = pid;
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    g_child = 0;
    rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : 1;
done:
    st = gp_cli_call(srv, "DELETE", path, NULL, 30000, &out, errmsg, sizeof errmsg);
    if (st != 204 && st != 404) {
        gp_cli_report("run", st, out, errmsg);
        fprintf(stderr,
                "gpupool run: the workload %s/%s is still allocated: gpupool delete workload %s -n %s\n", ns,
                name, name, ns);
    }
    json_decref(out);
    return rc;
}

/* agent_cmd.c - `gpupool agent`: runs the node agent (src/agent) in the foreground until SIGINT or SIGTERM.
 *
 * Configuration: a YAML file (--config, keys in docs/agent.md), then flags on top of it. A bad key or value
 * stops the start with a message naming it; nothing starts half-configured.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "common/log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpupool agent [options]\n"
            "  --config FILE         YAML configuration (docs/agent.md lists the keys)\n"
            "  --run-dir DIR         slots and the API socket live here (run_dir)\n"
            "  --listen-unix PATH    the API's unix socket (api.unix; default RUN_DIR/agent.sock)\n"
            "  --listen-tcp ADDR     also serve the API and /metrics on HOST:PORT (api.tcp)\n"
            "  --token TOKEN         bearer token TCP clients need to change things (api.token)\n"
            "  --tls-cert FILE --tls-key FILE   serve TCP as HTTPS (api.tls.cert, api.tls.key)\n"
            "  --sim | --real        simulated GPUs, or NVIDIA's only (gpus.mode; default: real if present)\n"
            "  --period DURATION     compute arbitration period, e.g. 100ms (arbiter.period)\n"
            "  --node-name NAME      (node.name; default: the host name)\n"
            "  --vgpu-lib PATH       libgpupool-vgpu.so given to workloads (vgpu.library)\n"
            "  --log-level LEVEL     error, warn, info or debug (log.level)\n");
}

int gp_cmd_agent(int argc, char **argv)
{
    static const struct option lo[] = {
        {"config", required_argument, 0, 'c'},
        {"run-dir", required_argument, 0, 'd'},
        {"listen-unix", required_argument, 0, 'u'},
        {"listen-tcp", required_argument, 0, 't'},
        {"token", required_argument, 0, 'k'},
        {"tls-cert", required_argument, 0, 'C'},
        {"tls-key", required_argument, 0, 'K'},
        {"sim", no_argument, 0, 's'},
        {"real", no_argument, 0, 'r'},
        {"period", required_argument, 0, 'p'},
        {"node-name", required_argument, 0, 'n'},
        {"vgpu-lib", required_argument, 0, 'v'},
        {"log-level", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    gp_config flags = {0}, file = {0};
    gp_err err = {0};
    const char *config_path = NULL;
    int rc = 0, c;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        const char *key = NULL, *val = optarg;
        char where[64];
        switch (c) {
        case 'c': config_path = optarg; continue;
        case 'd': key = "run_dir"; break;
        case 'u': key = "api.unix"; break;
        case 't': key = "api.tcp"; break;
        case 'k': key = "api.token"; break;
        case 'C': key = "api.tls.cert"; break;
        case 'K': key = "api.tls.key"; break;
        case 's': key = "gpus.mode", val = "sim"; break;
        case 'r': key = "gpus.mode", val = "real"; break;
        case 'p': key = "arbiter.period"; break;
        case 'n': key = "node.name"; break;
        case 'v': key = "vgpu.library"; break;
        case 'l': key = "log.level"; break;
        case 'U': key = "controller.url"; break;
        case 'T': key = "controller.token"; break;
        case 'P': key = "controller.pool"; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        snprintf(where, sizeof where, "--%s", lo[0].name);
        for (const struct option *o = lo; o->name; o++)
            if (o->val == c)
                snprintf(where, sizeof where, "--%s", o->name);
        if (gp_config_set(&flags, key, val, where, &err) < 0)
            rc = 1;
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "gpupool agent: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    gp_agent_config cfg;
    gp_agent_config_defaults(&cfg);
    if (rc == 0 && config_path &&
        (gp_config_load(&file, config_path, &err) < 0 || gp_agent_config_apply(&cfg, &file, &err) < 0))
        rc = 1;
    if (rc == 0 && gp_agent_config_apply(&cfg, &flags, &err) < 0)
        rc = 1;
    gp_config_free(&flags);
    gp_config_free(&file);
    if (rc == 1)
        fprintf(stderr, "gpupool agent: %s\n", err.msg);
    if (rc != 0)
        return rc;

    /* the signals are waited for here; every thread the agent starts inherits the blocked mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    gp_agent *a;
    if (gp_agent_start(&cfg, &a, &err) < 0) {
        fprintf(stderr, "gpupool agent: %s\n", err.msg);
        return 1;
    }
    char sock[400];
    if (cfg.unix_path[0])
        snprintf(sock, sizeof sock, "%s", cfg.unix_path);
    else
        snprintf(sock, sizeof sock, "%s/agent.sock", cfg.run_dir);
    if (gp_agent_tcp_port(a))
        fprintf(stderr, "gpupool agent: API on %s and TCP port %d (run dir %s)\n", sock, gp_agent_tcp_port(a),
                cfg.run_dir);
    else
        fprintf(stderr, "gpupool agent: API on %s (run dir %s)\n", sock, cfg.run_dir);
    int sig = 0;
    sigwait(&set, &sig);
    gp_log(GP_LOG_INFO, "agent", "stopping on signal %d; slots stay in place", sig);
    gp_agent_stop(a);
    return 0;
}

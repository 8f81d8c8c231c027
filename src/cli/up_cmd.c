/* up_cmd.c - `gpupool controller` (the controller alone) and `gpupool up` (a controller and an agent in one
 * process: the whole product on one machine, on its GPUs or simulated ones when it has none).
 *
 * In `up` the agent joins the controller through the controller's unix socket, exactly as a remote agent
 * does over TCP, and both keep their state under one folder (--dir): controller.db and controller.sock, and
 * run/ for the agent's slots and socket. Both run until SIGINT or SIGTERM.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "common/log.h"
#include "controller/controller.h"

static void wait_for_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    gp_log(GP_LOG_INFO, "gpupool", "stopping on signal %d", sig);
}

static void block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int gp_cmd_controller(int argc, char **argv)
{
    static const struct option lo[] = {
        {"config", required_argument, 0, 'c'},
        {"data-dir", required_argument, 0, 'd'},
        {"listen-unix", required_argument, 0, 'u'},
        {"listen-tcp", required_argument, 0, 't'},
        {"token", required_argument, 0, 'k'},
        {"tls-cert", required_argument, 0, 'C'},
        {"tls-key", required_argument, 0, 'K'},
        {"node-timeout", required_argument, 0, 'T'},
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
        const char *key = NULL;
        switch (c) {
        case 'c': config_path = optarg; continue;
        case 'd': key = "data_dir"; break;
        case 'u': key = "api.unix"; break;
        case 't': key = "api.tcp"; break;
        case 'k': key = "api.token"; break;
        case 'C': key = "api.tls.cert"; break;
        case 'K': key = "api.tls.key"; break;
        case 'T': key = "nodes.timeout"; break;
        case 'l': key = "log.level"; break;
        case 'h':
            printf(
                "usage: gpupool controller [--config FILE] [--data-dir DIR] [--listen-tcp HOST:PORT|none]\n"
                "                          [--listen-unix PATH] [--token T] [--tls-cert F --tls-key F]\n"
                "                          [--node-timeout DURATION] [--log-level LEVEL]\n"
                "docs/controller.md lists the configuration keys.\n");
            return 0;
        default: return 2;
        }
        if (gp_config_set(&flags, key, optarg, argv[optind - 1], &err) < 0)
            rc = 1;
    }
    gp_controller_config cfg;
    gp_controller_config_defaults(&cfg);
    if (rc == 0 && config_path &&
        (gp_config_load(&file, config_path, &err) < 0 || gp_controller_config_apply(&cfg, &file, &err) < 0))
        rc = 1;
    if (rc == 0 && gp_controller_config_apply(&cfg, &flags, &err) < 0)
        rc = 1;
    gp_config_free(&flags);
    gp_config_free(&file);
    if (rc) {
        fprintf(stderr, "gpupool controller: %s\n", err.msg);
        return rc;
    }
    block_signals();
    gp_controller *ctl;
    if (gp_controller_start(&cfg, &ctl, &err) < 0) {
        fprintf(stderr, "gpupool controller: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "gpupool controller: API on %s%s", gp_controller_socket(ctl),
            gp_controller_tcp_port(ctl) ? "" : "\n");
    if (gp_controller_tcp_port(ctl))
        fprintf(stderr, " and TCP port %d\n", gp_controller_tcp_port(ctl));
    wait_for_signal();
    gp_controller_stop(ctl);
    return 0;
}

int gp_cmd_up(int argc, char **argv)
{
    static const struct option lo[] = {
        {"dir", required_argument, 0, 'd'},
        {"sim", no_argument, 0, 's'},
        {"real", no_argument, 0, 'r'},
        {"listen-tcp", required_argument, 0, 't'},
        {"node-name", required_argument, 0, 'n'},
        {"log-level", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    gp_controller_config cc;
    gp_controller_config_defaults(&cc);
    gp_agent_config ac;
    gp_agent_config_defaults(&ac);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': snprintf(cc.data_dir, sizeof cc.data_dir, "%s", optarg); break;
        case 's': ac.nvml_mode = GP_NVML_SIM; break;
        case 'r': ac.nvml_mode = GP_NVML_REAL; break;
        case 't':
            snprintf(cc.tcp_addr, sizeof cc.tcp_addr, "%s", strcmp(optarg, "none") ? optarg : "");
            break;
        case 'n': snprintf(ac.node_name, sizeof ac.node_name, "%s", optarg); break;
        case 'l': {
            int lvl = gp_log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "gpupool up: --log-level \"%s\" is not error, warn, info or debug\n", optarg);
                return 2;
            }
            gp_log_set_level((gp_log_level)lvl);
            break;
        }
        case 'h':
            printf("usage: gpupool up [--dir DIR] [--sim | --real] [--listen-tcp HOST:PORT|none] "
                   "[--node-name N]\n"
                   "                  [--log-level LEVEL]\n"
                   "Runs a controller and an agent in one process: a one-machine pool of this host's GPUs "
                   "(simulated\n"
                   "ones when there are none, or with --sim). State lives in DIR (default %s).\n"
                   "Then: gpupool get gpus; gpupool run --percent 30 --vram 4Gi -- ./app\n",
                   cc.data_dir);
            return 0;
        default: return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gpupool up: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    snprintf(ac.run_dir, sizeof ac.run_dir, "%.240s/run", cc.data_dir);
    snprintf(ac.controller_url, sizeof ac.controller_url, "unix:%.250s/controller.sock", cc.data_dir);
    ac.heartbeat_ms = 1000;
    block_signals();
    gp_err err = {0};
    gp_controller *ctl;
    if (gp_controller_start(&cc, &ctl, &err) < 0) {
        fprintf(stderr, "gpupool up: %s\n", err.msg);
        return 1;
    }
    gp_agent *ag;
    if (gp_agent_start(&ac, &ag, &err) < 0) {
        fprintf(stderr, "gpupool up: the agent: %s\n", err.msg);
        gp_controller_stop(ctl);
        return 1;
    }
    fprintf(stderr,
            "gpupool up: controller on %s%s%s, agent for node %s (slots in %s)\n"
            "gpupool up: try `gpupool get gpus`, `gpupool run --percent 30 --vram 4Gi -- COMMAND`; Ctrl-C "
            "stops\n",
            gp_controller_socket(ctl), cc.tcp_addr[0] ? " and " : "", cc.tcp_addr, ac.node_name, ac.run_dir);
    wait_for_signal();
    gp_agent_stop(ag);
    gp_controller_stop(ctl);
    return 0;
}

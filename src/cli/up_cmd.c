/* up_cmd.c - `gpupool controller` (the controller alone) and `gpupool up` (a controller and an agent in one
 * process: the whole product on one machine, on its GPUs or simulated ones when it has none).
 *
 * In `up` the agent joins the controller through the controller's unix socket, exactly as a remote agent
 * does over TCP, and both keep their state under one folder (--dir): controller.db and controller.sock, and
 * run/ for the agent's slots and socket. Both run until SIGINT or SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "common/log.h"
#include "common/nvml_load.h"
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

/* GPU-over-IP: `gpupool worker` beside the agent, on the agent's token file (one token per slot set), so that
 * `gpupool run --remote` can use this host's GPUs from elsewhere. Its sessions load the same driver as the
 * agent: the simulated one when the agent simulates. Returns its pid, or -1 (logged). */
static pid_t start_worker(const char *listen, const char *tokens, const char *cache, bool sim)
{
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        gp_log(GP_LOG_ERROR, "gpupool", "cannot find the gpupool binary to start its worker: %s",
               strerror(errno));
        return -1;
    }
    self[n] = '\0';
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        if (sim) {
            char dir[512];
            if (gp_sim_lib_dir(dir, sizeof dir))
                setenv("LD_LIBRARY_PATH", dir, 1);
        }
        const char *lvl = gp_log_enabled(GP_LOG_DEBUG)  ? "debug"
                          : gp_log_enabled(GP_LOG_INFO) ? "info"
                          : gp_log_enabled(GP_LOG_WARN) ? "warn"
                                                        : "error";
        execl(self, "gpupool", "worker", "--listen", listen, "--token-file", tokens, "--cache-dir", cache,
              "--log-level", lvl, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        gp_log(GP_LOG_ERROR, "gpupool", "cannot start the worker: %s", strerror(errno));
    return pid;
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
        {"worker-listen", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *worker_listen = NULL;
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
        case 'w': worker_listen = optarg; break;
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
            printf(
                "usage: gpupool up [--dir DIR] [--sim | --real] [--listen-tcp HOST:PORT|none] "
                "[--node-name N]\n"
                "                  [--worker-listen unix:PATH|tcp:HOST:PORT|none] [--log-level LEVEL]\n"
                "Runs a controller and an agent in one process: a one-machine pool of this host's GPUs "
                "(simulated\n"
                "ones when there are none, or with --sim). State lives in DIR (default %s).\n"
                "It also starts `gpupool worker` (default on unix:DIR/worker.sock) so that programs can use\n"
                "the pool's GPUs over the network: gpupool run --remote ... (docs/protocol.md).\n"
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
    bool worker = !worker_listen || strcmp(worker_listen, "none") != 0;
    char cache[300];
    if (worker) {
        if (worker_listen)
            snprintf(ac.worker_addr, sizeof ac.worker_addr, "%s", worker_listen);
        else
            snprintf(ac.worker_addr, sizeof ac.worker_addr, "unix:%.250s/worker.sock", cc.data_dir);
        snprintf(ac.worker_tokens, sizeof ac.worker_tokens, "%.250s/worker-tokens", cc.data_dir);
        snprintf(cache, sizeof cache, "%.250s/module-cache", cc.data_dir);
    }
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
    /* the agent has written the token file by now (one token per slot set it adopted) */
    pid_t wpid = worker ? start_worker(ac.worker_addr, ac.worker_tokens, cache, gp_agent_simulated(ag)) : -1;
    fprintf(stderr,
            "gpupool up: controller on %s%s%s, agent for node %s (slots in %s)%s%s\n"
            "gpupool up: try `gpupool get gpus`, `gpupool run --percent 30 --vram 4Gi -- COMMAND`; Ctrl-C "
            "stops\n",
            gp_controller_socket(ctl), cc.tcp_addr[0] ? " and " : "", cc.tcp_addr, ac.node_name, ac.run_dir,
            wpid > 0 ? ", GPU-over-IP worker on " : "", wpid > 0 ? ac.worker_addr : "");
    wait_for_signal();
    if (wpid > 0) {
        kill(wpid, SIGTERM);
        waitpid(wpid, NULL, 0);
    }
    gp_agent_stop(ag);
    gp_controller_stop(ctl);
    return 0;
}

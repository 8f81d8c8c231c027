/* worker_cmd.c - `gpupool worker`: serves this host's GPUs to remote clients (GPU-over-IP,
 * src/remote/worker.h) in the foreground until SIGINT or SIGTERM.
 *
 * `--session FD ...` is internal: the worker re-executes itself so for a client whose token is bound to a
 * vGPU slot, with the vGPU library preloaded; a person never types it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/quantity.h"
#include "remote/worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpupool worker --listen ADDR [--listen ADDR ...] --token-file FILE [options]\n"
            "\n"
            "Serves this host's GPUs to programs on other machines: a program run there with gpupool's\n"
            "client library in place of libcuda.so.1 sends its CUDA calls here (docs/protocol.md).\n"
            "Each connection is served by a process of its own; when the client goes, so does\n"
            "everything it held on the GPU.\n"
            "\n"
            "  --listen ADDR       unix:/path, tcp:HOST:PORT or tls:HOST:PORT (TCP under TLS; needs\n"
            "                      --tls-cert and --tls-key). Port 0 picks a free one; the address is\n"
            "                      printed on stderr. Repeat to listen on several.\n"
            "  --tls-cert FILE     the worker's certificate chain (PEM), for tls: addresses\n"
            "  --tls-key FILE      its private key (PEM)\n"
            "  --token-file FILE   who may connect: one line per client, \"TOKEN [SLOT_DIR]\" ('#' starts a\n"
            "                      comment). A token with a SLOT_DIR (made by `gpupool slot create` or the\n"
            "                      agent) runs its sessions under the vGPU library, held to that slot's\n"
            "                      VRAM and compute limits. Read again for every connection: edit it\n"
            "                      while the worker runs.\n"
            "  --vgpu-lib PATH     libgpupool-vgpu.so for slot sessions (default: ../lib beside gpupool)\n"
            "  --cache-dir DIR     module images received from clients, by SHA-256, shared by sessions\n"
            "                      (default: $XDG_RUNTIME_DIR/gpupool/module-cache or\n"
            "                      /tmp/gpupool-UID/module-cache)\n"
            "  --cache-max SIZE    the most the module cache holds (default 1Gi; 0: no bound): beyond it\n"
            "                      the images used longest ago are removed as sessions end\n"
            "  --log-level LEVEL   error, warn, info or debug (default warn; info logs every session)\n"
            "\n"
            "The worker loads libcuda.so.1 as the loader finds it (LD_LIBRARY_PATH), in each session only.\n"
            "tcp: carries tokens and data in the clear: use tls: across networks you do not trust\n"
            "(clients set GPUPOOL_REMOTE=tls:HOST:PORT and GPUPOOL_REMOTE_CA to the certificate that\n"
            "signed the worker's).\n");
}

/* The session process after a re-exec (internal; see worker.h). */
static int session_cmd(int argc, char **argv)
{
    int fd = -1;
    unsigned long long id = 0;
    unsigned long seq = 0;
    const char *cache = NULL, *client = "client";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--session") == 0)
            fd = atoi(v);
        else if (strcmp(k, "--session-id") == 0)
            id = strtoull(v, NULL, 10);
        else if (strcmp(k, "--hello-seq") == 0)
            seq = strtoul(v, NULL, 10);
        else if (strcmp(k, "--cache-dir") == 0)
            cache = v;
        else if (strcmp(k, "--client") == 0)
            client = v;
    }
    if (fd < 0 || !cache) {
        fprintf(stderr, "gpupool worker: --session is internal to the worker; run `gpupool worker --help`\n");
        return 2;
    }
    return gp_worker_session_main(fd, id, (uint32_t)seq, cache, client);
}

int gp_cmd_worker(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--session") == 0)
        return session_cmd(argc, argv);
    static const struct option lo[] = {
        {"listen", required_argument, 0, 'L'},
        {"token-file", required_argument, 0, 't'},
        {"vgpu-lib", required_argument, 0, 'v'},
        {"cache-dir", required_argument, 0, 'c'},
        {"log-level", required_argument, 0, 'l'},
        {"cache-max", required_argument, 0, 'M'},
        {"tls-cert", required_argument, 0, 'C'},
        {"tls-key", required_argument, 0, 'K'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    gp_worker_config cfg;
    gp_worker_config_defaults(&cfg);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (cfg.nlisten == GP_WORKER_MAX_LISTEN) {
                fprintf(stderr, "gpupool worker: at most %d --listen addresses\n", GP_WORKER_MAX_LISTEN);
                return 2;
            }
            cfg.listen[cfg.nlisten++] = optarg;
            break;
        case 't': snprintf(cfg.token_file, sizeof cfg.token_file, "%s", optarg); break;
        case 'v': snprintf(cfg.vgpu_lib, sizeof cfg.vgpu_lib, "%s", optarg); break;
        case 'c': snprintf(cfg.cache_dir, sizeof cfg.cache_dir, "%s", optarg); break;
        case 'M': {
            gp_err qe = {0};
            if (gp_quantity_parse_bytes(optarg, "--cache-max", &cfg.cache_max, &qe) < 0) {
                fprintf(stderr, "gpupool worker: %s\n", qe.msg);
                return 2;
            }
            break;
        }
        case 'C': snprintf(cfg.tls_cert, sizeof cfg.tls_cert, "%s", optarg); break;
        case 'K': snprintf(cfg.tls_key, sizeof cfg.tls_key, "%s", optarg); break;
        case 'l': {
            int lv = gp_log_level_parse(optarg);
            if (lv < 0) {
                fprintf(stderr, "gpupool worker: --log-level \"%s\": use error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            gp_log_set_level((gp_log_level)lv);
            setenv("GPUPOOL_LOG", optarg, 1); /* for the session processes a slot token re-executes */
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gpupool worker: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (cfg.nlisten == 0 || !cfg.token_file[0]) {
        fprintf(stderr, "gpupool worker: %s is required\n", cfg.nlisten == 0 ? "--listen" : "--token-file");
        usage(stderr);
        return 2;
    }
    gp_err err = {0};
    if (gp_worker_run(&cfg, &err) < 0) {
        fprintf(stderr, "gpupool worker: %s\n", err.msg);
        return 1;
    }
    return 0;
}

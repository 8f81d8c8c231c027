/* main.c - the gpupool command: dispatches to subcommands (cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gpupool <command> [options]\n"
               "\n"
               "commands:\n"
               "  smi        show the GPUs of this host and the processes using them (like nvidia-smi)\n"
               "  sim        inspect or disturb the simulated GPUs (inject XID and ECC errors)\n"
               "  slot       create, show, change and remove vGPU slots by hand\n"
               "  version    print the version\n"
               "\n"
               "`gpupool <command> --help` describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "smi") == 0)
        return gp_cmd_smi(argc - 1, argv + 1);
    if (strcmp(cmd, "sim") == 0)
        return gp_cmd_sim(argc - 1, argv + 1);
    if (strcmp(cmd, "slot") == 0)
        return gp_cmd_slot(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("gpupool %s\n", GP_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "gpupool: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}

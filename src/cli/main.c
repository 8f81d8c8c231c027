/* main.c - the gpupool command: dispatches to subcommands (cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gpupool <command> [options]\n"
               "\n"
               "commands:\n"
               "  up         run a one-machine pool: a controller and an agent in one process\n"
               "  run        run a command on a fractional vGPU: gpupool run --percent 30 --vram 4Gi -- CMD\n"
               "  get        list pools, nodes, gpus, workloads, quotas, profiles (-o json|yaml)\n"
               "  describe   show one resource in full (a workload with where it would fit and why)\n"
               "  delete     delete a resource\n"
               "  controller run the controller alone (the pool's API, allocator and store)\n"
               "  agent      run the node agent: GPU discovery, vGPU slots, compute arbitration, metrics\n"
               "  smi        show the GPUs of this host and the processes using them (like nvidia-smi)\n"
               "  sim        inspect or disturb the simulated GPUs (inject XID and ECC errors)\n"
               "  slot       create, show, change and remove vGPU slots by hand\n"
               "  worker     serve this host's GPUs to programs on other machines (GPU-over-IP)\n"
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
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"up", gp_cmd_up},         {"run", gp_cmd_run},
                {"get", gp_cmd_get},       {"describe", gp_cmd_describe},
                {"delete", gp_cmd_delete}, {"controller", gp_cmd_controller}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    if (strcmp(cmd, "agent") == 0)
        return gp_cmd_agent(argc - 1, argv + 1);
    if (strcmp(cmd, "smi") == 0)
        return gp_cmd_smi(argc - 1, argv + 1);
    if (strcmp(cmd, "sim") == 0)
        return gp_cmd_sim(argc - 1, argv + 1);
    if (strcmp(cmd, "slot") == 0)
        return gp_cmd_slot(argc - 1, argv + 1);
    if (strcmp(cmd, "worker") == 0)
        return gp_cmd_worker(argc - 1, argv + 1);
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

/* smi.c - `gpupool smi`: the GPUs of this host and the processes on them, through NVML (NVIDIA's, or the
 * simulated one when the host has no NVIDIA GPU), printed like nvidia-smi's summary. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/nvml_load.h"
#include "common/timeutil.h"

static void smi_usage(FILE *f)
{
    fprintf(f, "usage: gpupool smi [-i GPU] [-l SECONDS] [--sim | --real]\n"
               "  -i, --id GPU         only this GPU (index)\n"
               "  -l, --loop SECONDS   print again every SECONDS until interrupted\n"
               "      --sim            use the simulated GPUs even if NVIDIA's driver is present\n"
               "      --real           use NVIDIA's driver only (fail without it)\n");
}

static unsigned mib(unsigned long long b)
{
    return (unsigned)(b >> 20);
}

static void print_once(gp_nvml *n, int only)
{
    char drv[96] = "?";
    int cuda = 0;
    n->SystemGetDriverVersion(drv, sizeof drv);
    n->SystemGetCudaDriverVersion(&cuda);
    unsigned count = 0;
    n->DeviceGetCount(&count);
    printf("gpupool smi    Driver Version: %s    CUDA Version: %d.%d%s\n", drv, cuda / 1000,
           (cuda % 1000) / 10, n->simulated ? "    (simulated GPUs)" : "");
    printf("%-4s %-26s %-17s %-22s %5s %5s %-16s\n", "GPU", "Name", "Bus-Id", "Memory-Usage", "Util", "Temp",
           "Power");
    for (unsigned i = 0; i < count; i++) {
        if (only >= 0 && (unsigned)only != i)
            continue;
        nvmlDevice_t d;
        if (n->DeviceGetHandleByIndex(i, &d) != NVML_SUCCESS)
            continue;
        char name[96] = "?", uuid[96] = "?";
        nvmlPciInfo_t pci;
        memset(&pci, 0, sizeof pci);
        nvmlMemory_t mem = {0, 0, 0};
        nvmlUtilization_t util = {0, 0};
        unsigned temp = 0, power = 0, limit = 0;
        n->DeviceGetName(d, name, sizeof name);
        n->DeviceGetUUID(d, uuid, sizeof uuid);
        n->DeviceGetPciInfo(d, &pci);
        n->DeviceGetMemoryInfo(d, &mem);
        n->DeviceGetUtilizationRates(d, &util);
        n->DeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &temp);
        n->DeviceGetPowerUsage(d, &power);
        n->DeviceGetEnforcedPowerLimit(d, &limit);
        char memtxt[40], powtxt[32];
        snprintf(memtxt, sizeof memtxt, "%uMiB / %uMiB", mib(mem.used), mib(mem.total));
        snprintf(powtxt, sizeof powtxt, "%uW / %uW", power / 1000, limit / 1000);
        printf("%-4u %-26.26s %-17s %-22s %4u%% %4uC %-16s\n", i, name, pci.busId, memtxt, util.gpu, temp,
               powtxt);
        printf("     %s\n", uuid);
    }
    printf("\nProcesses:\n%-4s %-8s %-12s %5s  %s\n", "GPU", "PID", "GPU-Memory", "SM%", "Process");
    int shown = 0;
    for (unsigned i = 0; i < count; i++) {
        if (only >= 0 && (unsigned)only != i)
            continue;
        nvmlDevice_t d;
        if (n->DeviceGetHandleByIndex(i, &d) != NVML_SUCCESS)
            continue;
        nvmlProcessInfo_t procs[64];
        unsigned np = 64;
        if (n->DeviceGetComputeRunningProcesses(d, &np, procs) != NVML_SUCCESS)
            continue;
        nvmlProcessUtilizationSample_t samples[1024];
        unsigned ns = 1024;
        if (n->DeviceGetProcessUtilization(d, samples, &ns, 0) != NVML_SUCCESS)
            ns = 0;
        for (unsigned k = 0; k < np; k++) {
            char pname[256] = "?";
            n->SystemGetProcessName(procs[k].pid, pname, sizeof pname);
            /* SM% over the last second: the samples' utilizations weighted by the time each covers */
            unsigned long long weighted = 0, span = 0;
            for (unsigned s = 0; s < ns; s++)
                if (samples[s].pid == procs[k].pid) {
                    unsigned long long t = samples[s].timeStamp;
                    unsigned long long before = 0;
                    for (unsigned o = 0; o < ns; o++) /* the same process's previous sample */
                        if (samples[o].pid == procs[k].pid && samples[o].timeStamp < t &&
                            samples[o].timeStamp > before)
                            before = samples[o].timeStamp;
                    if (before) {
                        weighted += (unsigned long long)samples[s].smUtil * (t - before);
                        span += t - before;
                    }
                }
            unsigned sm = span ? (unsigned)(weighted / span) : 0;
            char memtxt[24];
            snprintf(memtxt, sizeof memtxt, "%uMiB", mib(procs[k].usedGpuMemory));
            printf("%-4u %-8u %-12s %4u%%  %s\n", i, procs[k].pid, memtxt, sm, pname);
            shown++;
        }
    }
    if (!shown)
        printf("  no processes are using the GPUs\n");
}

int gp_cmd_smi(int argc, char **argv)
{
    static const struct option opts[] = {
        {"id", required_argument, 0, 'i'}, {"loop", required_argument, 0, 'l'}, {"sim", no_argument, 0, 's'},
        {"real", no_argument, 0, 'r'},     {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    int only = -1, loop = 0, c;
    gp_nvml_mode mode = GP_NVML_AUTO;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:l:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'i':
            only = (int)strtol(optarg, &end, 10);
            if (*end || only < 0) {
                fprintf(stderr, "gpupool smi: -i wants a GPU index, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'l':
            loop = (int)strtol(optarg, &end, 10);
            if (*end || loop <= 0) {
                fprintf(stderr, "gpupool smi: -l wants a number of seconds, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 's': mode = GP_NVML_SIM; break;
        case 'r': mode = GP_NVML_REAL; break;
        case 'h': smi_usage(stdout); return 0;
        default: smi_usage(stderr); return 2;
        }
    }
    gp_nvml n;
    gp_err err;
    if (gp_nvml_load(&n, mode, &err) < 0) {
        fprintf(stderr, "gpupool smi: %s\n", err.msg);
        return 1;
    }
    for (;;) {
        print_once(&n, only);
        if (!loop)
            break;
        fflush(stdout);
        gp_sleep_ns((uint64_t)loop * 1000000000ull);
        printf("\n");
    }
    gp_nvml_unload(&n);
    return 0;
}

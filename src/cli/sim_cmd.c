/* sim_cmd.c - `gpupool sim`: the simulated GPUs' state, and faults injected into it so that health checks
 * (XID errors, ECC errors) can be exercised without hardware. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sim/shared.h"

static void sim_usage(FILE *f)
{
    fprintf(f,
            "usage: gpupool sim <command>\n"
            "  devices                 list the simulated GPUs (from GPUPOOL_SIM_GPUS) and the state file\n"
            "  models                  list the GPU models a spec may name\n"
            "  inject-xid GPU XID      raise XID error XID on GPU (an index)\n"
            "  inject-ecc GPU sbe|dbe  count one single- or double-bit ECC error on GPU\n");
}

static int open_state(gp_shm_handle *h)
{
    gp_sim_spec spec;
    gp_err err;
    if (gp_sim_spec_from_env(&spec, &err) < 0 || gp_shm_open(h, &spec, &err) < 0) {
        fprintf(stderr, "gpupool sim: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int gpu_arg(const gp_shm_handle *h, const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v >= (long)h->shm->ndev) {
        fprintf(stderr, "gpupool sim: no simulated GPU \"%s\" (there are %u)\n", s, h->shm->ndev);
        return -1;
    }
    return (int)v;
}

int gp_cmd_sim(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        sim_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "models") == 0) {
        printf("%-16s %-28s %8s %8s %6s %5s\n", "KEY", "NAME", "VRAM", "TFLOPS", "SMs", "CC");
        for (size_t i = 0; i < gp_models_count(); i++) {
            const gp_model *m = gp_model_at(i);
            printf("%-16s %-28s %6lluGi %8.0f %6d %3d.%d\n", m->key, m->nvml_name,
                   (unsigned long long)(m->vram_bytes >> 30), m->fp16_tflops, m->sms, m->cc_major,
                   m->cc_minor);
        }
        return 0;
    }
    gp_shm_handle h;
    if (open_state(&h) < 0)
        return 1;
    int rc = 0;
    if (strcmp(argv[1], "devices") == 0) {
        printf("state: %s\n", h.path);
        for (uint32_t i = 0; i < h.shm->ndev; i++) {
            const gp_shm_dev *d = &h.shm->dev[i];
            printf("%u  %-26s %s  %s  %.0f TFLOPS  %llu MiB\n", i, d->model.nvml_name, d->uuid, d->pci_bus_id,
                   d->model.fp16_tflops, (unsigned long long)(d->model.vram_bytes >> 20));
        }
    } else if (strcmp(argv[1], "inject-xid") == 0 && argc == 4) {
        int g = gpu_arg(&h, argv[2]);
        char *end;
        long xid = strtol(argv[3], &end, 10);
        if (g < 0 || *end || xid <= 0 || xid > 0xffff) {
            if (g >= 0)
                fprintf(stderr, "gpupool sim: XID must be a positive number (e.g. 79), not \"%s\"\n",
                        argv[3]);
            rc = 2;
        } else {
            atomic_store(&h.shm->dev[g].last_xid, (uint32_t)xid);
            atomic_fetch_add(&h.shm->dev[g].xid_count, 1);
            printf("XID %ld raised on simulated GPU %d\n", xid, g);
        }
    } else if (strcmp(argv[1], "inject-ecc") == 0 && argc == 4) {
        int g = gpu_arg(&h, argv[2]);
        if (g < 0) {
            rc = 2;
        } else if (strcmp(argv[3], "sbe") == 0) {
            atomic_fetch_add(&h.shm->dev[g].ecc_sbe, 1);
        } else if (strcmp(argv[3], "dbe") == 0) {
            atomic_fetch_add(&h.shm->dev[g].ecc_dbe, 1);
        } else {
            fprintf(stderr, "gpupool sim: ECC error kind must be sbe or dbe, not \"%s\"\n", argv[3]);
            rc = 2;
        }
    } else {
        sim_usage(stderr);
        rc = 2;
    }
    gp_shm_close(&h);
    return rc;
}

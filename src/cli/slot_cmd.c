/* slot_cmd.c - `gpupool slot`: vGPU slots made by hand (the agent makes them for allocations), for users
 * and tests: create a workload's slot folder for some GPUs, show limits and usage, change limits live,
 * freeze and resume, remove. The limits are validated here; the library enforces them. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/models.h"
#include "common/nvml_load.h"
#include "common/quantity.h"
#include "common/slot.h"

static void slot_usage(FILE *f)
{
    fprintf(f,
            "usage: gpupool slot <command> DIR [options]\n"
            "  create DIR --gpu GPU[,GPU...] --vram SIZE [--tflops T | --percent P]\n"
            "             [--tflops-request T | --percent-request P] [--qos low|medium|high|critical]\n"
            "             [--name NAME] [--namespace NS] [--sim | --real]\n"
            "      GPU is an NVML index or a UUID; SIZE a quantity such as 8Gi; T TFLOPS of the GPU's\n"
            "      dense FP16 tensor throughput; P a percentage of the GPU. Without a compute limit the\n"
            "      workload may use the whole GPU. Run the program with GPUPOOL_SLOT_DIR=DIR and\n"
            "      LD_PRELOAD=libgpupool-vgpu.so.\n"
            "  show DIR   limits, usage and processes\n"
            "  set DIR [--vram SIZE] [--tflops T | --percent P] [--tflops-request T | --percent-request P]\n"
            "          [--effective-percent P] [--qos Q] [--freeze | --resume]\n"
            "  rm DIR [--force]   remove the slots (refused while processes use them, unless --force)\n");
}

typedef struct opts {
    const char *gpus, *vram, *name, *ns, *qos;
    double tflops, percent, tflops_req, percent_req, eff_percent;
    int freeze; /* 1 freeze, 0 resume, -1 unchanged */
    int force;
    gp_nvml_mode mode;
} opts;

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"gpu", required_argument, 0, 'g'},
        {"vram", required_argument, 0, 'v'},
        {"tflops", required_argument, 0, 't'},
        {"percent", required_argument, 0, 'p'},
        {"tflops-request", required_argument, 0, 'T'},
        {"percent-request", required_argument, 0, 'P'},
        {"effective-percent", required_argument, 0, 'e'},
        {"qos", required_argument, 0, 'q'},
        {"name", required_argument, 0, 'n'},
        {"namespace", required_argument, 0, 'N'},
        {"freeze", no_argument, 0, 'F'},
        {"resume", no_argument, 0, 'R'},
        {"force", no_argument, 0, 'f'},
        {"sim", no_argument, 0, 's'},
        {"real", no_argument, 0, 'r'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->tflops = o->percent = o->tflops_req = o->percent_req = o->eff_percent = -1;
    o->freeze = -1;
    optind = 2;
    int c, li = 0;
    while ((c = getopt_long(argc, argv, "", lo, &li)) != -1) {
        char *end = NULL;
        double v = 0;
        if (c != '?' && strchr("tpTPe", c)) {
            v = strtod(optarg, &end);
            if (*end || v < 0) {
                fprintf(stderr, "gpupool slot: --%s wants a non-negative number, not \"%s\"\n", lo[li].name,
                        optarg);
                return -1;
            }
        }
        switch (c) {
        case 'g': o->gpus = optarg; break;
        case 'v': o->vram = optarg; break;
        case 't': o->tflops = v; break;
        case 'p': o->percent = v; break;
        case 'T': o->tflops_req = v; break;
        case 'P': o->percent_req = v; break;
        case 'e': o->eff_percent = v; break;
        case 'q': o->qos = optarg; break;
        case 'n': o->name = optarg; break;
        case 'N': o->ns = optarg; break;
        case 'F': o->freeze = 1; break;
        case 'R': o->freeze = 0; break;
        case 'f': o->force = 1; break;
        case 's': o->mode = GP_NVML_SIM; break;
        case 'r': o->mode = GP_NVML_REAL; break;
        default: return -1;
        }
    }
    if ((o->tflops >= 0 && o->percent >= 0) || (o->tflops_req >= 0 && o->percent_req >= 0)) {
        fprintf(stderr, "gpupool slot: give compute as TFLOPS or as a percentage, not both\n");
        return -1;
    }
    return 0;
}

/* A compute amount in ppm of a GPU of gpu_tflops: from TFLOPS or a percentage; 0 when neither was given. */
static int to_ppm(double tflops, double percent, double gpu_tflops, const char *what, uint32_t *out)
{
    double share = tflops >= 0 ? tflops / gpu_tflops : percent >= 0 ? percent / 100.0 : 0;
    if (tflops < 0 && percent < 0) {
        *out = 0;
        return 0;
    }
    if (share <= 0 || share > 1.0 + 1e-9) {
        if (tflops >= 0)
            fprintf(stderr, "gpupool slot: %s of %g TFLOPS is not within what the GPU has (0 < T <= %g)\n",
                    what, tflops, gpu_tflops);
        else
            fprintf(stderr, "gpupool slot: %s of %g%% is not within 0 < P <= 100\n", what, percent);
        return -1;
    }
    *out = (uint32_t)(share * GP_SLOT_FULL_PPM + 0.5);
    if (*out == 0)
        *out = 1;
    if (*out > GP_SLOT_FULL_PPM)
        *out = GP_SLOT_FULL_PPM;
    return 0;
}

static int create(const char *dir, const opts *o)
{
    if (!o->gpus || !o->vram) {
        fprintf(stderr, "gpupool slot create: --gpu and --vram are required\n");
        return 2;
    }
    uint64_t vram;
    gp_err err;
    if (gp_quantity_parse_bytes(o->vram, "--vram", &vram, &err) < 0 || vram == 0) {
        fprintf(stderr, "gpupool slot create: %s\n",
                vram == 0 && err.code == GP_OK ? "--vram must be > 0" : err.msg);
        return 2;
    }
    int qos = o->qos ? gp_qos_parse(o->qos) : GP_QOS_MEDIUM;
    if (qos < 0) {
        fprintf(stderr, "gpupool slot create: --qos \"%s\" is not low, medium, high or critical\n", o->qos);
        return 2;
    }
    gp_nvml n;
    if (gp_nvml_load(&n, o->mode, &err) < 0) {
        fprintf(stderr, "gpupool slot create: %s\n", err.msg);
        return 1;
    }
    char list[1024];
    snprintf(list, sizeof list, "%s", o->gpus);
    char uuids[GP_SLOT_MAX_GPUS][96], names[GP_SLOT_MAX_GPUS][96];
    unsigned count = 0, total = 0;
    n.DeviceGetCount(&total);
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        nvmlDevice_t d = NULL;
        char *end;
        long idx = strtol(tok, &end, 10);
        nvmlReturn_t nr = (*end == '\0' && end != tok && idx >= 0)
                              ? n.DeviceGetHandleByIndex((unsigned)idx, &d)
                              : NVML_ERROR_NOT_FOUND;
        if (nr != NVML_SUCCESS && strncmp(tok, "GPU-", 4) == 0) {
            for (unsigned i = 0; i < total && d == NULL; i++) {
                nvmlDevice_t h;
                char u[96];
                if (n.DeviceGetHandleByIndex(i, &h) == NVML_SUCCESS && n.DeviceGetUUID(h, u, sizeof u) == 0 &&
                    strcmp(u, tok) == 0)
                    d = h;
            }
            nr = d ? NVML_SUCCESS : NVML_ERROR_NOT_FOUND;
        }
        if (nr != NVML_SUCCESS || count == GP_SLOT_MAX_GPUS) {
            fprintf(stderr,
                    "gpupool slot create: no GPU \"%s\" on this host (%u GPUs: indices 0..%u or UUIDs)\n",
                    tok, total, total ? total - 1 : 0);
            rc = 2;
            break;
        }
        n.DeviceGetUUID(d, uuids[count], sizeof uuids[count]);
        n.DeviceGetName(d, names[count], sizeof names[count]);
        for (unsigned j = 0; j < count; j++)
            if (strcmp(uuids[j], uuids[count]) == 0) {
                fprintf(stderr, "gpupool slot create: GPU %s is listed twice\n", tok);
                rc = 2;
            }
        count++;
    }
    gp_nvml_unload(&n);
    if (rc)
        return rc;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "gpupool slot create: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    for (unsigned i = 0; i < count; i++) {
        const gp_model *m = gp_model_find(names[i]);
        if (m == NULL) {
            fprintf(stderr,
                    "gpupool slot create: GPU model \"%s\" is not in the model table (data/gpu-models.csv)\n",
                    names[i]);
            return 1;
        }
        gp_slot_params p = {.index = i,
                            .count = count,
                            .gpu_uuid = uuids[i],
                            .workload = o->name ? o->name : "manual",
                            .namespace_ = o->ns ? o->ns : "default",
                            .gpu_tflops = m->fp16_tflops,
                            .vram_limit = vram,
                            .qos = (uint32_t)qos};
        if (to_ppm(o->tflops, o->percent, m->fp16_tflops, "the compute limit", &p.limit_ppm) < 0 ||
            to_ppm(o->tflops_req, o->percent_req, m->fp16_tflops, "the compute request", &p.request_ppm) < 0)
            return 2;
        if (p.limit_ppm == 0)
            p.limit_ppm = GP_SLOT_FULL_PPM;
        if (p.request_ppm > p.limit_ppm) {
            fprintf(stderr, "gpupool slot create: the compute request exceeds the limit\n");
            return 2;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/gpu%u.slot", dir, i);
        if (gp_slot_create(path, &p, &err) < 0) {
            fprintf(stderr, "gpupool slot create: %s\n", err.msg);
            return 1;
        }
    }
    printf("created %u slot(s) in %s\n", count, dir);
    return 0;
}

static int show(const char *dir)
{
    gp_slot_handle hs[GP_SLOT_MAX_GPUS];
    int n;
    gp_err err;
    if (gp_slot_dir_open(dir, hs, GP_SLOT_MAX_GPUS, &n, &err) < 0) {
        fprintf(stderr, "gpupool slot show: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        gp_slot *s = hs[i].s;
        gp_proctab t = gp_slot_proctab(&hs[i]);
        gp_proctab_reap(&t, -1);
        uint64_t used = gp_slot_vram_used(s), limit = atomic_load(&s->vram_limit);
        double share = gp_slot_share_ppm(s) / 1e4;
        printf("gpu %u  %s  workload %s/%s  qos %s%s\n", s->index, s->gpu_uuid, s->namespace_, s->workload,
               gp_qos_name(atomic_load(&s->qos)), atomic_load(&s->frozen) ? "  FROZEN" : "");
        printf("  vram     %llu MiB used of %llu MiB\n", (unsigned long long)(used >> 20),
               (unsigned long long)(limit >> 20));
        printf("  compute  request %.2f%%  limit %.2f%%  now %.2f%%  (%.1f of %.0f TFLOPS)\n",
               atomic_load(&s->compute_request_ppm) / 1e4, atomic_load(&s->compute_limit_ppm) / 1e4, share,
               share / 100 * s->gpu_tflops, s->gpu_tflops);
        printf("  usage    %llu launches, busy %.3f s, throttled %.3f s, %llu OOM refusals\n",
               (unsigned long long)atomic_load(&s->launches), atomic_load(&s->busy_ns) / 1e9,
               atomic_load(&s->throttled_ns) / 1e9, (unsigned long long)atomic_load(&s->oom_refusals));
        for (int p = 0; p < GP_SLOT_MAX_PROCS; p++)
            if (gp_proctab_alive(&t, p, -1))
                printf("  pid %-8u %-28.28s vram %llu MiB (context %llu MiB)\n", atomic_load(&s->proc[p].pid),
                       s->proc[p].name, (unsigned long long)(atomic_load(&s->proc[p].vram_used) >> 20),
                       (unsigned long long)(atomic_load(&s->proc[p].ctx_bytes) >> 20));
        gp_slot_close(&hs[i]);
    }
    return 0;
}

static int set(const char *dir, const opts *o)
{
    gp_slot_handle hs[GP_SLOT_MAX_GPUS];
    int n;
    gp_err err;
    if (gp_slot_dir_open(dir, hs, GP_SLOT_MAX_GPUS, &n, &err) < 0) {
        fprintf(stderr, "gpupool slot set: %s\n", err.msg);
        return 1;
    }
    uint64_t vram = 0;
    int rc = 0;
    if (o->vram && gp_quantity_parse_bytes(o->vram, "--vram", &vram, &err) < 0) {
        fprintf(stderr, "gpupool slot set: %s\n", err.msg);
        rc = 2;
    }
    int qos = o->qos ? gp_qos_parse(o->qos) : -1;
    if (o->qos && qos < 0) {
        fprintf(stderr, "gpupool slot set: --qos \"%s\" is not low, medium, high or critical\n", o->qos);
        rc = 2;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        gp_slot *s = hs[i].s;
        uint32_t lim = 0, req = 0, eff = 0;
        if (to_ppm(o->tflops, o->percent, s->gpu_tflops, "the compute limit", &lim) < 0 ||
            to_ppm(o->tflops_req, o->percent_req, s->gpu_tflops, "the compute request", &req) < 0 ||
            to_ppm(-1, o->eff_percent, s->gpu_tflops, "the effective share", &eff) < 0) {
            rc = 2;
            break;
        }
        if (gp_slot_set_limits(s, vram, req ? req : GP_SLOT_KEEP, lim ? lim : GP_SLOT_KEEP, &err) < 0) {
            fprintf(stderr, "gpupool slot set: %s\n", err.msg);
            rc = 2;
            break;
        }
        if (o->eff_percent >= 0)
            atomic_store(&s->compute_effective_ppm, eff);
        if (qos >= 0)
            atomic_store(&s->qos, (uint32_t)qos);
        if (o->freeze >= 0)
            atomic_store(&s->frozen, (uint32_t)o->freeze);
        atomic_fetch_add(&s->generation, 1);
    }
    for (int i = 0; i < n; i++)
        gp_slot_close(&hs[i]);
    return rc;
}

static int rm(const char *dir, const opts *o)
{
    gp_slot_handle hs[GP_SLOT_MAX_GPUS];
    int n;
    gp_err err;
    if (gp_slot_dir_open(dir, hs, GP_SLOT_MAX_GPUS, &n, &err) < 0) {
        fprintf(stderr, "gpupool slot rm: %s\n", err.msg);
        return 1;
    }
    int busy = 0;
    for (int i = 0; i < n; i++) {
        gp_proctab t = gp_slot_proctab(&hs[i]);
        gp_proctab_reap(&t, -1);
        for (int p = 0; p < GP_SLOT_MAX_PROCS; p++)
            busy += gp_proctab_alive(&t, p, -1);
    }
    if (busy && !o->force) {
        fprintf(stderr, "gpupool slot rm: %d process(es) still use %s (stop them, or use --force)\n", busy,
                dir);
        for (int i = 0; i < n; i++)
            gp_slot_close(&hs[i]);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (unlink(hs[i].path) != 0) {
            fprintf(stderr, "gpupool slot rm: %s: %s\n", hs[i].path, strerror(errno));
            rc = 1;
        }
        gp_slot_close(&hs[i]);
    }
    if (rc == 0 && rmdir(dir) != 0 && errno != ENOTEMPTY)
        fprintf(stderr, "gpupool slot rm: %s: %s\n", dir, strerror(errno));
    return rc;
}

int gp_cmd_slot(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        slot_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (argc < 3 || argv[2][0] == '-') {
        fprintf(stderr, "gpupool slot %s: which slot folder?\n\n", cmd);
        slot_usage(stderr);
        return 2;
    }
    const char *dir = argv[2];
    opts o;
    argv[2] = argv[1]; /* getopt starts after the folder */
    if (parse_opts(argc - 1, argv + 1, &o) < 0) {
        slot_usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "create") == 0)
        return create(dir, &o);
    if (strcmp(cmd, "show") == 0)
        return show(dir);
    if (strcmp(cmd, "set") == 0)
        return set(dir, &o);
    if (strcmp(cmd, "rm") == 0)
        return rm(dir, &o);
    fprintf(stderr, "gpupool slot: unknown command \"%s\"\n\n", cmd);
    slot_usage(stderr);
    return 2;
}

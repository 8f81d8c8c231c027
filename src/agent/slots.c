/* slots.c - the agent's slot sets: one folder per workload under <run_dir>/slots/<id>, one slot file per
 * GPU (gpu<N>.slot, docs/slot.md). The folder is the whole record: a restarted agent adopts every valid
 * folder it finds, with the limits, shares and usage in its files, so nothing else needs to be journaled.
 *
 * Creation is atomic: the files are written into a hidden folder, which is then renamed into place; removal
 * renames the folder away before deleting it. Leftovers of either, from an agent killed half-way, are
 * cleaned up at the next start. Guarantees are never oversold: the compute requests on a GPU add up to at
 * most the whole GPU, and the VRAM limits to at most its memory.
 */
#include "agent/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/quantity.h"

bool ag_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '-' || c == '.' || c == '_'));
        if (!ok)
            return false;
    }
    return true;
}

ag_set *ag_set_find(const gp_agent *a, const char *id)
{
    for (size_t i = 0; i < a->nsets; i++)
        if (strcmp(a->sets[i]->id, id) == 0)
            return a->sets[i];
    return NULL;
}

static int push_set(gp_agent *a, ag_set *s)
{
    if (a->nsets == a->capsets) {
        size_t cap = a->capsets ? a->capsets * 2 : 16;
        ag_set **v = realloc(a->sets, cap * sizeof *v);
        if (v == NULL)
            return -1;
        a->sets = v;
        a->capsets = cap;
    }
    a->sets[a->nsets++] = s;
    return 0;
}

/* A set holding the n opened slots (the set owns them from here). NULL when out of memory. */
static ag_set *new_set(const char *id, const char *dir, const gp_slot_handle *hs, int n)
{
    ag_set *s = calloc(1, sizeof *s + (size_t)n * sizeof s->part[0]);
    if (s == NULL)
        return NULL;
    snprintf(s->id, sizeof s->id, "%.63s", id);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->n = n;
    for (int i = 0; i < n; i++)
        s->part[i].h = hs[i];
    return s;
}

/* GPU-over-IP: the set's token, from its remote-token file, made when missing (a set made before the node
 * had a worker, or by an older agent). A token is 32 hex digits from getrandom. */
static void load_token(ag_set *s)
{
    char path[700], tok[64] = "";
    snprintf(path, sizeof path, "%s/remote-token", s->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%39s", tok) != 1)
            tok[0] = '\0';
        fclose(f);
    }
    if (strlen(tok) == 32 && strspn(tok, "0123456789abcdef") == 32) {
        snprintf(s->token, sizeof s->token, "%s", tok);
        return;
    }
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        gp_log(GP_LOG_ERROR, AG_LOG, "no random bytes for the remote token of %s: %s", s->id,
               strerror(errno));
        s->token[0] = '\0';
        return;
    }
    for (int i = 0; i < 16; i++)
        snprintf(s->token + 2 * i, 3, "%02x", r[i]);
    char tmp[720];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || dprintf(fd, "%s\n", s->token) < 0 || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        gp_log(GP_LOG_ERROR, AG_LOG, "cannot write %s: %s (remote clients of %s are refused)", path,
               strerror(errno), s->id);
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        s->token[0] = '\0';
    }
}

void ag_tokens_write(gp_agent *a)
{
    const char *file = a->cfg.worker_tokens;
    if (!file[0])
        return;
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    FILE *f = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        f = fdopen(fd, "w");
    bool ok = f != NULL;
    if (ok)
        ok = fprintf(f, "# written by gpupool agent: one line per slot set (TOKEN SLOT_DIR)\n") > 0;
    for (size_t i = 0; ok && i < a->nsets; i++)
        if (a->sets[i]->token[0])
            ok = fprintf(f, "%s %s\n", a->sets[i]->token, a->sets[i]->dir) > 0;
    if (f) {
        ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
        ok = fclose(f) == 0 && ok;
    } else if (fd >= 0) {
        close(fd);
    }
    if (!ok || rename(tmp, file) < 0) {
        gp_log(GP_LOG_ERROR, AG_LOG, "cannot write the worker's token file %s: %s", file, strerror(errno));
        unlink(tmp);
    }
}

json_t *ag_set_remote_env(const gp_agent *a, const ag_set *s)
{
    if (!a->cfg.worker_addr[0] || !s->token[0])
        return NULL;
    return json_pack("{s:s, s:s}", "GPUPOOL_REMOTE", a->cfg.worker_addr, "GPUPOOL_REMOTE_TOKEN", s->token);
}

static void set_close(ag_set *s)
{
    for (int i = 0; i < s->n; i++)
        gp_slot_close(&s->part[i].h);
    free(s);
}

/* Deletes the slot files of a folder and the folder. */
static int remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    char path[800];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(dir);
}

static void find_gpus(gp_agent *a, ag_set *s)
{
    for (int i = 0; i < s->n; i++) {
        ag_part *p = &s->part[i];
        p->gpu = ag_gpu_find(a, p->h.s->gpu_uuid);
        p->last_throttled = atomic_load(&p->h.s->throttled_ns);
        if (p->gpu < 0)
            gp_log(GP_LOG_WARN, AG_LOG,
                   "slot set %s: GPU %s is not on this host (any more); its slot is kept", s->id,
                   p->h.s->gpu_uuid);
    }
}

int ag_slots_adopt(gp_agent *a, gp_err *err)
{
    if (mkdir(a->cfg.run_dir, 0755) < 0 && errno != EEXIST)
        return gp_err_set(err, GP_ERR_IO, "cannot create the run directory %s: %s", a->cfg.run_dir,
                          strerror(errno));
    if (mkdir(a->slots_dir, 0755) < 0 && errno != EEXIST)
        return gp_err_set(err, GP_ERR_IO, "cannot create %s: %s", a->slots_dir, strerror(errno));
    DIR *d = opendir(a->slots_dir);
    if (d == NULL)
        return gp_err_set(err, GP_ERR_IO, "cannot read %s: %s", a->slots_dir, strerror(errno));
    struct dirent *e;
    int adopted = 0, broken = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char dir[600];
        snprintf(dir, sizeof dir, "%s/%s", a->slots_dir, e->d_name);
        if (e->d_name[0] == '.') { /* a creation or removal an earlier agent did not finish */
            gp_log(GP_LOG_INFO, AG_LOG, "removing %s, left by an interrupted change", dir);
            remove_dir(dir);
            continue;
        }
        if (!ag_id_valid(e->d_name) || ag_set_find(a, e->d_name))
            continue;
        gp_slot_handle hs[GP_SLOT_MAX_GPUS];
        int n = 0;
        gp_err e2;
        if (gp_slot_dir_open(dir, hs, GP_SLOT_MAX_GPUS, &n, &e2) < 0) {
            gp_log(GP_LOG_ERROR, AG_LOG, "slot set %s is not usable, left as it is: %s", e->d_name, e2.msg);
            broken++;
            continue;
        }
        ag_set *s = new_set(e->d_name, dir, hs, n);
        if (s == NULL) {
            for (int i = 0; i < n; i++)
                gp_slot_close(&hs[i]);
            closedir(d);
            return gp_err_set(err, GP_ERR_NOMEM, "out of memory adopting slots");
        }
        char owner[700];
        snprintf(owner, sizeof owner, "%s/owner", dir);
        s->managed = access(owner, F_OK) == 0;
        load_token(s);
        find_gpus(a, s);
        if (push_set(a, s) < 0) {
            set_close(s);
            closedir(d);
            return gp_err_set(err, GP_ERR_NOMEM, "out of memory adopting slots");
        }
        adopted++;
    }
    closedir(d);
    if (adopted || broken)
        gp_log(GP_LOG_INFO, AG_LOG, "adopted %d slot set(s) from %s (%d unusable)", adopted, a->slots_dir,
               broken);
    ag_tokens_write(a);
    return 0;
}

/* A share of a GPU in ppm from percent or TFLOPS (whichever was given), -1 when neither; fills err. */
static int64_t to_ppm(const ag_gpu *g, double pct, double tflops, const char *what, gp_err *err)
{
    double share;
    if (tflops >= 0) {
        if (g->tflops <= 0) {
            gp_err_set(err, GP_ERR_INVALID,
                       "%s is in TFLOPS, but the TFLOPS of GPU %d (\"%s\") are unknown: ask in percent", what,
                       g->index, g->name);
            return -2;
        }
        share = tflops / g->tflops;
        if (share > 1.0 + 1e-9) {
            gp_err_set(err, GP_ERR_RANGE, "%s of %g TFLOPS is more than GPU %d (%s) has (%g TFLOPS)", what,
                       tflops, g->index, g->name, g->tflops);
            return -2;
        }
    } else if (pct >= 0) {
        if (pct > 100) {
            gp_err_set(err, GP_ERR_RANGE, "%s of %g%% is more than a whole GPU", what, pct);
            return -2;
        }
        share = pct / 100;
    } else {
        return -1;
    }
    int64_t ppm = (int64_t)(share * GP_SLOT_FULL_PPM + 0.5);
    return ppm > GP_SLOT_FULL_PPM ? GP_SLOT_FULL_PPM : ppm;
}

/* Request and limit in ppm for GPU g: each defaults to the other; neither means no guarantee and no limit. */
static int shares(const ag_gpu *g, double req_pct, double req_tf, double lim_pct, double lim_tf,
                  uint32_t *req, uint32_t *lim, gp_err *err)
{
    int64_t r = to_ppm(g, req_pct, req_tf, "the compute request", err);
    int64_t l = to_ppm(g, lim_pct, lim_tf, "the compute limit", err);
    if (r == -2 || l == -2)
        return -1;
    if (r < 0 && l < 0) {
        r = 0;
        l = GP_SLOT_FULL_PPM;
    } else if (r < 0) {
        r = l;
    } else if (l < 0) {
        l = r;
    }
    if (l == 0)
        return gp_err_set(err, GP_ERR_RANGE,
                          "a compute limit of 0 would stop the workload; give at least 1 ppm");
    if (r > l)
        return gp_err_set(err, GP_ERR_RANGE, "the compute request (%.2f%%) is above the limit (%.2f%%)",
                          r / 1e4, l / 1e4);
    *req = (uint32_t)r;
    *lim = (uint32_t)l;
    return 0;
}

/* What other sets already take of GPU gi: guaranteed compute (ppm) and VRAM. */
static void committed(const gp_agent *a, int gi, const ag_set *except, uint64_t *req_ppm, uint64_t *vram)
{
    *req_ppm = 0;
    *vram = 0;
    for (size_t i = 0; i < a->nsets; i++) {
        const ag_set *s = a->sets[i];
        if (s == except)
            continue;
        for (int k = 0; k < s->n; k++)
            if (s->part[k].gpu == gi) {
                *req_ppm += atomic_load(&s->part[k].h.s->compute_request_ppm);
                *vram += atomic_load(&s->part[k].h.s->vram_limit);
            }
    }
}

static int check_fits(const gp_agent *a, int gi, const ag_set *except, uint32_t req, uint64_t vram,
                      gp_err *err)
{
    const ag_gpu *g = &a->gpus[gi];
    uint64_t used_req, used_vram;
    committed(a, gi, except, &used_req, &used_vram);
    if (used_req + req > GP_SLOT_FULL_PPM)
        return gp_err_set(err, GP_ERR_CONFLICT,
                          "GPU %d (%s) has %.2f%% of its compute left to guarantee, and this asks for %.2f%%",
                          g->index, g->uuid, (GP_SLOT_FULL_PPM - used_req) / 1e4, req / 1e4);
    if (vram > 0 && used_vram + vram > g->mem_total) {
        char left[32], want[32];
        return gp_err_set(err, GP_ERR_CONFLICT,
                          "GPU %d (%s) has %s of VRAM left to give, and this asks for %s", g->index, g->uuid,
                          gp_bytes_human(g->mem_total - used_vram, left, sizeof left),
                          gp_bytes_human(vram, want, sizeof want));
    }
    return 0;
}

static void random_suffix(char *out, size_t len)
{
    unsigned char b[3] = {0};
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        uint64_t t = gp_now_ns();
        memcpy(b, &t, sizeof b);
    }
    snprintf(out, len, "%02x%02x%02x", b[0], b[1], b[2]);
}

/* An id from the workload name: lower-case letters, digits and '-', then a random suffix. */
static void make_id(const char *workload, char *id, size_t len)
{
    char base[48];
    size_t n = 0;
    for (const char *p = workload; *p && n < sizeof base - 1; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            base[n++] = c;
        else if (n > 0 && base[n - 1] != '-')
            base[n++] = '-';
    }
    while (n > 0 && base[n - 1] == '-')
        n--;
    base[n] = '\0';
    char suf[8];
    random_suffix(suf, sizeof suf);
    snprintf(id, len, "%s%s%s", n ? base : "w", "-", suf);
}

int ag_set_create(gp_agent *a, const ag_set_spec *sp, ag_set **out, gp_err *err)
{
    if (sp->ngpus < 1 || sp->ngpus > GP_SLOT_MAX_GPUS)
        return gp_err_set(err, GP_ERR_RANGE, "a workload has 1 to %d GPUs, not %d", GP_SLOT_MAX_GPUS,
                          sp->ngpus);
    uint32_t req[GP_SLOT_MAX_GPUS], lim[GP_SLOT_MAX_GPUS];
    for (int i = 0; i < sp->ngpus; i++) {
        int gi = sp->gpu[i];
        for (int k = 0; k < i; k++)
            if (sp->gpu[k] == gi)
                return gp_err_set(err, GP_ERR_INVALID, "GPU %d is listed twice", a->gpus[gi].index);
        const ag_gpu *g = &a->gpus[gi];
        if (!g->healthy)
            return gp_err_set(err, GP_ERR_CONFLICT,
                              "GPU %d (%s) is unhealthy (%s): nothing new is placed on it", g->index, g->uuid,
                              g->health);
        if (sp->vram == 0)
            return gp_err_set(err, GP_ERR_INVALID, "the VRAM limit must be more than 0 bytes");
        if (sp->have_ppm) {
            req[i] = sp->req_ppm[i];
            lim[i] = sp->lim_ppm[i];
            if (lim[i] == 0 || lim[i] > GP_SLOT_FULL_PPM || req[i] > lim[i])
                return gp_err_set(err, GP_ERR_RANGE, "GPU %d: request %u ppm / limit %u ppm are inconsistent",
                                  g->index, req[i], lim[i]);
        } else if (shares(g, sp->req_pct, sp->req_tflops, sp->lim_pct, sp->lim_tflops, &req[i], &lim[i],
                          err) < 0) {
            return -1;
        }
        /* The controller's allocator has applied its pool's rules (VRAM expansion may let limits add up past
         * the GPU's memory); guarantees of compute are physical everywhere. */
        if (check_fits(a, gi, NULL, req[i], sp->managed ? 0 : sp->vram, err) < 0)
            return -1;
    }
    char id[64];
    if (sp->id[0]) {
        if (!ag_id_valid(sp->id))
            return gp_err_set(
                err, GP_ERR_INVALID,
                "id \"%s\" must be 1-63 of a-z, 0-9, '-', '.', '_', starting with a letter or digit", sp->id);
        if (ag_set_find(a, sp->id))
            return gp_err_set(err, GP_ERR_EXISTS, "a slot set with id \"%s\" exists already", sp->id);
        snprintf(id, sizeof id, "%s", sp->id);
    } else {
        do
            make_id(sp->workload, id, sizeof id);
        while (ag_set_find(a, id));
    }
    char tmp[600], dir[600];
    snprintf(tmp, sizeof tmp, "%s/.new-%s", a->slots_dir, id);
    snprintf(dir, sizeof dir, "%s/%s", a->slots_dir, id);
    remove_dir(tmp);
    if (mkdir(tmp, 0755) < 0)
        return gp_err_set(err, GP_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    for (int i = 0; i < sp->ngpus; i++) {
        const ag_gpu *g = &a->gpus[sp->gpu[i]];
        gp_slot_params p = {.index = (unsigned)i,
                            .count = (unsigned)sp->ngpus,
                            .gpu_uuid = g->uuid,
                            .workload = sp->workload,
                            .namespace_ = sp->namespace_,
                            .gpu_tflops = g->tflops > 0 ? g->tflops : 1,
                            .vram_limit = sp->vram,
                            .request_ppm = req[i],
                            .limit_ppm = lim[i],
                            .qos = sp->qos >= 0 ? (uint32_t)sp->qos : GP_QOS_MEDIUM};
        char path[700];
        snprintf(path, sizeof path, "%s/gpu%d.slot", tmp, i);
        if (gp_slot_create(path, &p, err) < 0) {
            remove_dir(tmp);
            return -1;
        }
    }
    if (sp->managed) {
        char owner[700];
        snprintf(owner, sizeof owner, "%s/owner", tmp);
        FILE *f = fopen(owner, "w");
        if (f == NULL || fputs("controller\n", f) < 0 || fclose(f) != 0) {
            int e = errno;
            remove_dir(tmp);
            return gp_err_set(err, GP_ERR_IO, "cannot write %s: %s", owner, strerror(e));
        }
    }
    if (rename(tmp, dir) < 0) {
        int e = errno;
        remove_dir(tmp);
        return gp_err_set(err, e == EEXIST || e == ENOTEMPTY ? GP_ERR_EXISTS : GP_ERR_IO,
                          "cannot create %s: %s", dir, strerror(e));
    }
    gp_slot_handle hs[GP_SLOT_MAX_GPUS];
    int n = 0;
    ag_set *s = NULL;
    if (gp_slot_dir_open(dir, hs, GP_SLOT_MAX_GPUS, &n, err) < 0) {
        remove_dir(dir);
        return -1;
    }
    if ((s = new_set(id, dir, hs, n)) == NULL || push_set(a, s) < 0) {
        if (s)
            set_close(s);
        else
            for (int i = 0; i < n; i++)
                gp_slot_close(&hs[i]);
        remove_dir(dir);
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    }
    s->managed = sp->managed;
    load_token(s);
    ag_tokens_write(a);
    find_gpus(a, s);
    /* A set that shares its GPU starts at its request (paced) until the arbiter's next step grants more:
     * unpaced, its processes could queue a ring of kernels that would hold the others back. */
    for (int i = 0; i < s->n; i++) {
        int others = 0;
        for (size_t k = 0; k + 1 < a->nsets; k++)
            for (int j = 0; j < a->sets[k]->n; j++)
                others += a->sets[k]->part[j].gpu == s->part[i].gpu;
        if (others && s->part[i].gpu >= 0) {
            uint32_t req = atomic_load(&s->part[i].h.s->compute_request_ppm),
                     lim = atomic_load(&s->part[i].h.s->compute_limit_ppm), eff = req ? req : 10000;
            atomic_store(&s->part[i].h.s->compute_effective_ppm, eff < lim ? eff : lim);
        }
    }
    gp_log(GP_LOG_INFO, AG_LOG, "created slot set %s for %s/%s on %d GPU(s)", id, sp->namespace_,
           sp->workload, sp->ngpus);
    *out = s;
    return 0;
}

int ag_set_update(gp_agent *a, ag_set *s, const ag_set_change *c, gp_err *err)
{
    bool compute = c->req_pct >= 0 || c->req_tflops >= 0 || c->lim_pct >= 0 || c->lim_tflops >= 0;
    uint32_t req[GP_SLOT_MAX_GPUS], lim[GP_SLOT_MAX_GPUS];
    /* check everything before changing anything */
    for (int i = 0; i < s->n; i++) {
        ag_part *p = &s->part[i];
        gp_slot *sl = p->h.s;
        req[i] = atomic_load(&sl->compute_request_ppm);
        lim[i] = atomic_load(&sl->compute_limit_ppm);
        if (compute) {
            if (p->gpu < 0)
                return gp_err_set(err, GP_ERR_CONFLICT, "GPU %s of this slot set is not on this host",
                                  sl->gpu_uuid);
            const ag_gpu *g = &a->gpus[p->gpu];
            /* a side not given keeps its value, unless that would put request above limit */
            double rp = c->req_pct, rt = c->req_tflops, lp = c->lim_pct, lt = c->lim_tflops;
            if (rp < 0 && rt < 0)
                rp = req[i] / 1e4;
            if (lp < 0 && lt < 0)
                lp = lim[i] / 1e4;
            if (shares(g, rp, rt, lp, lt, &req[i], &lim[i], err) < 0)
                return -1;
        }
        if (c->has_vram && c->vram == 0)
            return gp_err_set(err, GP_ERR_INVALID, "the VRAM limit must be more than 0 bytes");
        if (p->gpu >= 0 &&
            check_fits(a, p->gpu, s, req[i], c->has_vram ? c->vram : atomic_load(&sl->vram_limit), err) < 0)
            return -1;
    }
    for (int i = 0; i < s->n; i++) {
        gp_slot *sl = s->part[i].h.s;
        if (gp_slot_set_limits(sl, c->has_vram ? c->vram : 0, req[i], lim[i], err) < 0)
            return -1; /* cannot happen: checked above */
        if (c->qos >= 0)
            atomic_store(&sl->qos, (uint32_t)c->qos);
        if (c->frozen >= 0)
            atomic_store(&sl->frozen, (uint32_t)c->frozen);
        atomic_fetch_add(&sl->generation, 1);
    }
    if (c->frozen >= 0)
        gp_log(GP_LOG_INFO, AG_LOG, "slot set %s %s", s->id, c->frozen ? "frozen" : "resumed");
    return 0;
}

int ag_part_procs(ag_part *p)
{
    gp_proctab t = gp_slot_proctab(&p->h);
    gp_proctab_reap(&t, -1);
    int n = 0;
    for (int i = 0; i < GP_SLOT_MAX_PROCS; i++)
        n += gp_proctab_alive(&t, i, -1);
    return n;
}

int ag_set_remove(gp_agent *a, ag_set *s, bool force, gp_err *err)
{
    int procs = 0;
    for (int i = 0; i < s->n; i++)
        procs += ag_part_procs(&s->part[i]);
    if (procs > 0 && !force)
        return gp_err_set(
            err, GP_ERR_CONFLICT,
            "%d process(es) still use slot set %s; stop them first, or remove it with force (they "
            "keep the limits they have until they exit)",
            procs, s->id);
    char away[600];
    snprintf(away, sizeof away, "%s/.del-%s", a->slots_dir, s->id);
    remove_dir(away);
    if (rename(s->dir, away) < 0)
        return gp_err_set(err, GP_ERR_IO, "cannot remove %s: %s", s->dir, strerror(errno));
    remove_dir(away);
    for (size_t i = 0; i < a->nsets; i++)
        if (a->sets[i] == s) {
            a->sets[i] = a->sets[--a->nsets];
            break;
        }
    gp_log(GP_LOG_INFO, AG_LOG, "removed slot set %s%s", s->id,
           procs ? " (forced, processes were running)" : "");
    set_close(s);
    ag_tokens_write(a); /* its token is refused from now on */
    return 0;
}

void ag_sets_close(gp_agent *a)
{
    for (size_t i = 0; i < a->nsets; i++)
        set_close(a->sets[i]);
    free(a->sets);
    a->sets = NULL;
    a->nsets = a->capsets = 0;
}

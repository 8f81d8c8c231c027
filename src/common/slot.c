/* slot.c - vGPU slot files: create, open, validate, limits and memory charging (see slot.h). */
#include "common/slot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/timeutil.h"

uint32_t gp_crc32(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint32_t ident_crc(const gp_slot *s)
{
    return gp_crc32(s, offsetof(gp_slot, ident_crc));
}

static bool terminated(const char *s, size_t len)
{
    return memchr(s, '\0', len) != NULL;
}

int gp_slot_validate(const gp_slot *s, size_t file_size, gp_err *err)
{
    if (file_size != sizeof(gp_slot))
        return gp_err_set(err, GP_ERR_INVALID, "size is %zu bytes, a version-%u slot has %zu", file_size,
                          GP_SLOT_VERSION, sizeof(gp_slot));
    if (s->magic != GP_SLOT_MAGIC)
        return gp_err_set(err, GP_ERR_INVALID, "not a gpupool slot (bad magic)");
    if (s->version != GP_SLOT_VERSION || s->size != sizeof(gp_slot))
        return gp_err_set(err, GP_ERR_INVALID, "slot layout version %u, this library reads version %u",
                          s->version, GP_SLOT_VERSION);
    if (s->ident_crc != ident_crc(s))
        return gp_err_set(err, GP_ERR_INVALID, "identity checksum mismatch: the slot is corrupt");
    if (s->count == 0 || s->count > GP_SLOT_MAX_GPUS || s->index >= s->count)
        return gp_err_set(err, GP_ERR_INVALID, "GPU index %u of %u is out of range", s->index, s->count);
    if (!terminated(s->gpu_uuid, sizeof s->gpu_uuid) || strncmp(s->gpu_uuid, "GPU-", 4) != 0 ||
        !terminated(s->workload, sizeof s->workload) || !terminated(s->namespace_, sizeof s->namespace_))
        return gp_err_set(err, GP_ERR_INVALID, "GPU UUID or workload name is malformed");
    if (!(s->gpu_tflops > 0 && s->gpu_tflops < 1e6))
        return gp_err_set(err, GP_ERR_INVALID, "GPU TFLOPS %g is not a positive number", s->gpu_tflops);
    uint64_t vram = atomic_load(&((gp_slot *)s)->vram_limit);
    uint32_t req = atomic_load(&((gp_slot *)s)->compute_request_ppm);
    uint32_t lim = atomic_load(&((gp_slot *)s)->compute_limit_ppm);
    uint32_t eff = atomic_load(&((gp_slot *)s)->compute_effective_ppm);
    if (vram == 0)
        return gp_err_set(err, GP_ERR_INVALID, "VRAM limit is 0");
    if (lim == 0 || lim > GP_SLOT_FULL_PPM || req > lim || eff > GP_SLOT_FULL_PPM)
        return gp_err_set(err, GP_ERR_INVALID,
                          "compute request %u / limit %u / effective %u ppm are inconsistent", req, lim, eff);
    if (atomic_load(&((gp_slot *)s)->proc_hw) > GP_SLOT_MAX_PROCS)
        return gp_err_set(err, GP_ERR_INVALID, "process high-water mark %llu is past the table's %d entries",
                          (unsigned long long)atomic_load(&((gp_slot *)s)->proc_hw), GP_SLOT_MAX_PROCS);
    if (atomic_load(&((gp_slot *)s)->qos) > GP_QOS_CRITICAL)
        return gp_err_set(err, GP_ERR_INVALID, "QoS level %u is unknown", atomic_load(&((gp_slot *)s)->qos));
    return 0;
}

static int copy_field(char *dst, size_t len, const char *src, const char *what, gp_err *err)
{
    if (src == NULL)
        src = "";
    if (strlen(src) >= len)
        return gp_err_set(err, GP_ERR_INVALID, "%s \"%s\" is longer than %zu characters", what, src, len - 1);
    strcpy(dst, src);
    return 0;
}

int gp_slot_create(const char *path, const gp_slot_params *p, gp_err *err)
{
    gp_slot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    s->magic = GP_SLOT_MAGIC;
    s->version = GP_SLOT_VERSION;
    s->size = sizeof(gp_slot);
    s->index = p->index;
    s->count = p->count;
    s->gpu_tflops = p->gpu_tflops;
    s->created_ns = gp_realtime_ns();
    int rc = copy_field(s->gpu_uuid, sizeof s->gpu_uuid, p->gpu_uuid, "GPU UUID", err);
    if (rc == 0)
        rc = copy_field(s->workload, sizeof s->workload, p->workload, "workload name", err);
    if (rc == 0)
        rc = copy_field(s->namespace_, sizeof s->namespace_, p->namespace_, "namespace", err);
    s->ident_crc = ident_crc(s);
    atomic_store(&s->vram_limit, p->vram_limit);
    atomic_store(&s->compute_request_ppm, p->request_ppm);
    atomic_store(&s->compute_limit_ppm, p->limit_ppm);
    atomic_store(&s->qos, p->qos);
    atomic_store(&s->generation, 1);
    atomic_store(&s->refill_ns, gp_now_ns());
    if (rc == 0 && gp_slot_validate(s, sizeof *s, err) < 0)
        rc = gp_err_wrap(err, "slot %s", path);
    if (rc < 0) {
        free(s);
        return -1;
    }
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        free(s);
        return gp_err_set(err, GP_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    ssize_t w = write(fd, s, sizeof *s);
    int saved = errno;
    free(s);
    if (w != (ssize_t)sizeof(gp_slot) || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return gp_err_set(err, GP_ERR_IO, "cannot write %s: %s", tmp, w < 0 ? strerror(saved) : "disk full?");
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return gp_err_set(err, GP_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return 0;
}

int gp_slot_open(const char *path, gp_slot_handle *h, gp_err *err)
{
    memset(h, 0, sizeof *h);
    h->fd = -1;
    h->proc = -1;
    snprintf(h->path, sizeof h->path, "%s", path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return gp_err_set(err, errno == ENOENT ? GP_ERR_NOT_FOUND : GP_ERR_IO, "cannot open slot %s: %s",
                          path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != sizeof(gp_slot)) {
        close(fd);
        return gp_err_set(err, GP_ERR_INVALID, "slot %s: size is %lld bytes, a version-%u slot has %zu", path,
                          (long long)st.st_size, GP_SLOT_VERSION, sizeof(gp_slot));
    }
    void *p = mmap(NULL, sizeof(gp_slot), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return gp_err_set(err, GP_ERR_IO, "cannot map slot %s: %s", path, strerror(errno));
    }
    if (gp_slot_validate(p, (size_t)st.st_size, err) < 0) {
        munmap(p, sizeof(gp_slot));
        close(fd);
        return gp_err_wrap(err, "slot %s", path);
    }
    h->s = p;
    h->fd = fd;
    return 0;
}

void gp_slot_close(gp_slot_handle *h)
{
    if (h->proc >= 0) {
        gp_proctab t = gp_slot_proctab(h);
        gp_proctab_release(&t, h->proc);
        h->proc = -1;
    }
    if (h->s)
        munmap(h->s, sizeof(gp_slot));
    if (h->fd >= 0)
        close(h->fd);
    h->s = NULL;
    h->fd = -1;
}

static int by_index(const void *a, const void *b)
{
    const gp_slot_handle *x = a, *y = b;
    return (int)x->s->index - (int)y->s->index;
}

int gp_slot_dir_open(const char *dir, gp_slot_handle *hs, int max, int *n, gp_err *err)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return gp_err_set(err, errno == ENOENT ? GP_ERR_NOT_FOUND : GP_ERR_IO,
                          "cannot open slot folder %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "gpu", 3) != 0 || len < 9 || strcmp(e->d_name + len - 5, ".slot") != 0)
            continue;
        if (*n == max) {
            rc = gp_err_set(err, GP_ERR_RANGE, "slot folder %s has more than %d slots", dir, max);
            break;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (gp_slot_open(path, &hs[*n], err) < 0) {
            rc = -1;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (rc == 0 && *n == 0)
        rc = gp_err_set(err, GP_ERR_NOT_FOUND, "slot folder %s has no gpu<N>.slot files", dir);
    if (rc == 0) {
        qsort(hs, (size_t)*n, sizeof *hs, by_index);
        for (int i = 0; i < *n && rc == 0; i++) {
            const gp_slot *s = hs[i].s;
            if (s->index != (unsigned)i || s->count != (unsigned)*n)
                rc = gp_err_set(err, GP_ERR_INVALID,
                                "slot folder %s: %d slots, but %s says it is GPU %u of %u", dir, *n,
                                hs[i].path, s->index, s->count);
            else if (strcmp(s->workload, hs[0].s->workload) != 0)
                rc = gp_err_set(err, GP_ERR_INVALID, "slot folder %s mixes workloads %s and %s", dir,
                                hs[0].s->workload, s->workload);
            for (int j = 0; j < i && rc == 0; j++)
                if (strcmp(hs[j].s->gpu_uuid, s->gpu_uuid) == 0)
                    rc = gp_err_set(err, GP_ERR_INVALID, "slot folder %s names GPU %s twice", dir,
                                    s->gpu_uuid);
        }
    }
    if (rc < 0) {
        for (int i = 0; i < *n; i++)
            gp_slot_close(&hs[i]);
        *n = 0;
    }
    return rc;
}

int gp_slot_set_limits(gp_slot *s, uint64_t vram_limit, uint32_t request_ppm, uint32_t limit_ppm, gp_err *err)
{
    uint64_t vram = vram_limit ? vram_limit : atomic_load(&s->vram_limit);
    uint32_t req = request_ppm != GP_SLOT_KEEP ? request_ppm : atomic_load(&s->compute_request_ppm);
    uint32_t lim = limit_ppm != GP_SLOT_KEEP ? limit_ppm : atomic_load(&s->compute_limit_ppm);
    if (lim == 0 || lim > GP_SLOT_FULL_PPM || req > lim)
        return gp_err_set(err, GP_ERR_INVALID,
                          "compute request (%u ppm) must not exceed the limit (%u ppm), nor the "
                          "limit the whole GPU",
                          req, lim);
    atomic_store(&s->vram_limit, vram);
    atomic_store(&s->compute_request_ppm, req);
    atomic_store(&s->compute_limit_ppm, lim);
    uint32_t eff = atomic_load(&s->compute_effective_ppm);
    if (eff && (eff < req || eff > lim))
        atomic_store(&s->compute_effective_ppm, eff < req ? req : lim);
    atomic_fetch_add(&s->generation, 1);
    return 0;
}

static void clear_slot_proc(void *entry)
{
    gp_slot_proc *p = entry;
    atomic_store(&p->vram_used, 0);
    atomic_store(&p->vram_peak, 0);
    atomic_store(&p->ctx_bytes, 0);
    atomic_store(&p->launches, 0);
    atomic_store(&p->throttled_ns, 0);
    p->start_ns = 0;
    p->name[0] = '\0';
}

gp_proctab gp_slot_proctab(const gp_slot_handle *h)
{
    gp_proctab t = {h->fd,          GP_SLOT_LOCK_BASE, h->s->proc, sizeof(gp_slot_proc), GP_SLOT_MAX_PROCS,
                    clear_slot_proc};
    return t;
}

int gp_slot_join(gp_slot_handle *h, gp_err *err)
{
    if (h->proc >= 0)
        return 0;
    gp_proctab t = gp_slot_proctab(h);
    gp_proctab_reap(&t, -1);
    int i = gp_proctab_claim(&t);
    if (i < 0)
        return gp_err_set(err, GP_ERR_RANGE, "slot %s already has %d processes", h->path, GP_SLOT_MAX_PROCS);
    /* Raise the high-water mark before this process charges anything: a process summing usage then either
     * sees the entry, or summed before our first charge, which will see its own charge in turn. */
    uint64_t hw = atomic_load(&h->s->proc_hw);
    while (hw < (uint64_t)i + 1 && !atomic_compare_exchange_weak(&h->s->proc_hw, &hw, (uint64_t)i + 1)) {
    }
    gp_slot_proc *p = &h->s->proc[i];
    p->start_ns = gp_realtime_ns();
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, p->name, sizeof p->name - 1);
        p->name[r > 0 ? r : 0] = '\0';
        close(fd);
    }
    h->proc = i;
    return 0;
}

uint64_t gp_slot_vram_used(const gp_slot *s)
{
    uint64_t sum = 0, hw = atomic_load(&((gp_slot *)s)->proc_hw);
    for (uint64_t i = 0; i < hw && i < GP_SLOT_MAX_PROCS; i++)
        sum += atomic_load(&((gp_slot *)s)->proc[i].vram_used);
    return sum;
}

int gp_slot_charge(gp_slot_handle *h, uint64_t bytes)
{
    if (h->proc < 0)
        return -1;
    gp_slot_proc *me = &h->s->proc[h->proc];
    for (int attempt = 0; attempt < 3; attempt++) {
        uint64_t limit = atomic_load(&h->s->vram_limit);
        /* Add first, then look: two processes racing for the last bytes each see the other's claim, so the
         * workload never exceeds its limit (at worst both back off and retry). */
        uint64_t mine = atomic_fetch_add(&me->vram_used, bytes) + bytes;
        if (bytes <= limit && gp_slot_vram_used(h->s) <= limit) {
            uint64_t peak = atomic_load(&me->vram_peak);
            while (mine > peak && !atomic_compare_exchange_weak(&me->vram_peak, &peak, mine)) {
            }
            return 0;
        }
        atomic_fetch_sub(&me->vram_used, bytes);
        if (bytes > limit)
            break;
        gp_proctab t = gp_slot_proctab(h);
        if (gp_proctab_reap(&t, h->proc) == 0 && attempt > 0)
            break;
    }
    atomic_fetch_add(&h->s->oom_refusals, 1);
    return -1;
}

void gp_slot_uncharge(gp_slot_handle *h, uint64_t bytes)
{
    if (h->proc < 0)
        return;
    _Atomic uint64_t *mine = &h->s->proc[h->proc].vram_used;
    uint64_t cur = atomic_load(mine);
    while (!atomic_compare_exchange_weak(mine, &cur, cur >= bytes ? cur - bytes : 0)) {
    }
}

static const char *const qos_names[] = {"low", "medium", "high", "critical"};

int gp_qos_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (strcasecmp(s, qos_names[i]) == 0)
            return i;
    return -1;
}

const char *gp_qos_name(uint32_t qos)
{
    return qos < 4 ? qos_names[qos] : "unknown";
}

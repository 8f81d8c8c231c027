/* shared.c - the simulated GPU's host-wide state file: creation, process entries, memory accounting,
 * device timelines and utilization history. See shared.h for the invariants; both simulated libraries
 * (libcuda.so.1, libnvidia-ml.so.1) link this file and each opens the state on its own descriptor.
 */
#include "sim/shared.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/proctab.h"
#include "common/strutil.h"
#include "common/timeutil.h"
#include "common/visible.h"

#define LOCK_BASE (1ull << 30) /* byte offset of entry i's ownership lock: LOCK_BASE + i */

/* ---- device spec ---------------------------------------------------------------------------------- */

int gp_sim_spec_parse(const char *spec, gp_sim_spec *out, gp_err *err)
{
    memset(out, 0, sizeof *out);
    if (spec == NULL || *spec == '\0')
        spec = "H100-SXM-80GB";
    char buf[512];
    if (strlen(spec) >= sizeof buf)
        return gp_err_set(err, GP_ERR_INVALID, "GPU spec is longer than %zu characters", sizeof buf - 1);
    strcpy(buf, spec);
    char *s = gp_str_trim(buf);
    if (strcmp(s, "0") == 0 || strcasecmp(s, "none") == 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = gp_str_trim(tok);
        long count = 1;
        char *x = strchr(tok, 'x');
        if (x && x > tok) {
            char *end;
            long n = strtol(tok, &end, 10);
            if (end == x) {
                if (n < 1)
                    return gp_err_set(err, GP_ERR_INVALID, "GPU spec \"%s\": the count must be at least 1",
                                      tok);
                count = n;
                tok = gp_str_trim(x + 1);
            }
        }
        const gp_model *m = gp_model_find(tok);
        if (m == NULL) {
            char keys[512];
            return gp_err_set(err, GP_ERR_INVALID, "GPU spec: unknown GPU model \"%s\" (known: %s)", tok,
                              gp_models_keys(keys, sizeof keys));
        }
        if (count > GP_SIM_MAX_DEVICES - out->ndev)
            return gp_err_set(err, GP_ERR_RANGE, "GPU spec: more than %d GPUs", GP_SIM_MAX_DEVICES);
        for (long i = 0; i < count; i++)
            out->model[out->ndev++] = m;
    }
    size_t off = 0;
    for (int i = 0; i < out->ndev; i++) {
        int n = snprintf(out->text + off, sizeof out->text - off, "%s%s", i ? "," : "", out->model[i]->key);
        if (n < 0 || (size_t)n >= sizeof out->text - off)
            return gp_err_set(err, GP_ERR_RANGE, "GPU spec too long");
        off += (size_t)n;
    }
    return 0;
}

int gp_sim_spec_from_env(gp_sim_spec *out, gp_err *err)
{
    const char *env = getenv("GPUPOOL_SIM_GPUS");
    if (env && env[0] == '@') {
        FILE *f = fopen(env + 1, "r");
        if (!f)
            return gp_err_set(err, GP_ERR_IO, "GPUPOOL_SIM_GPUS: cannot open spec file %s: %s", env + 1,
                              strerror(errno));
        char text[512] = "", line[256];
        while (fgets(line, sizeof line, f)) {
            char *l = gp_str_trim(line);
            if (*l == '#' || *l == '\0')
                continue;
            if (strlen(text) + strlen(l) + 2 >= sizeof text) {
                fclose(f);
                return gp_err_set(err, GP_ERR_RANGE, "GPUPOOL_SIM_GPUS: spec file %s too long", env + 1);
            }
            if (text[0])
                strcat(text, ",");
            strcat(text, l);
        }
        fclose(f);
        if (gp_sim_spec_parse(text, out, err) < 0)
            return gp_err_wrap(err, "GPUPOOL_SIM_GPUS file %s", env + 1);
        return 0;
    }
    if (gp_sim_spec_parse(env, out, err) < 0)
        return gp_err_wrap(err, "GPUPOOL_SIM_GPUS=\"%s\"", env ? env : "");
    return 0;
}

/* ---- identity of simulated devices ---------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Bus numbers of an 8-GPU server; further GPUs continue upwards. */
static const uint8_t bus_numbers[] = {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb};

static void init_device(gp_shm_dev *d, const gp_model *m, int index, const char *spec_text)
{
    memset(d, 0, sizeof *d);
    d->model = *m;
    const char *host = getenv("GPUPOOL_SIM_HOST_ID");
    char seedtext[512];
    snprintf(seedtext, sizeof seedtext, "%s|%s|%d|%s", host ? host : "", spec_text, index, m->key);
    uint64_t seed = fnv1a(seedtext, 0xcbf29ce484222325ull);
    uint64_t a = splitmix(&seed), b = splitmix(&seed);
    for (int i = 0; i < 8; i++) {
        d->uuid_bytes[i] = (uint8_t)(a >> (8 * i));
        d->uuid_bytes[8 + i] = (uint8_t)(b >> (8 * i));
    }
    d->uuid_bytes[6] = (uint8_t)((d->uuid_bytes[6] & 0x0f) | 0x40); /* version 4 layout */
    d->uuid_bytes[8] = (uint8_t)((d->uuid_bytes[8] & 0x3f) | 0x80);
    const uint8_t *u = d->uuid_bytes;
    snprintf(d->uuid, sizeof d->uuid,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
             u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    snprintf(d->serial, sizeof d->serial, "%013llu",
             (unsigned long long)(splitmix(&seed) % 10000000000000ull));
    d->pci_bus = index < 8 ? bus_numbers[index] : (uint32_t)(0xdb + index - 7);
    snprintf(d->pci_bus_id, sizeof d->pci_bus_id, "00000000:%02X:00.0", d->pci_bus);
    d->pci_device_id = (m->pci_id << 16) | 0x10deu;
    d->pci_subsystem_id = (uint32_t)(0x10de0000u | (0x1600u + (unsigned)index));
    d->minor = (uint32_t)index;
}

static const char *shm_uuid(const void *arg, int i, char out[GP_VISIBLE_UUID_LEN])
{
    (void)out;
    return ((const gp_shm *)arg)->dev[i].uuid;
}

int gp_sim_visible_devices(const char *visible, const gp_shm *shm, int phys[GP_SIM_MAX_DEVICES])
{
    return gp_visible_devices(visible, (int)shm->ndev, shm_uuid, shm, phys);
}

/* ---- the state file ------------------------------------------------------------------------------- */

static int state_path(char *buf, size_t len, const gp_sim_spec *spec, gp_err *err)
{
    const char *p = getenv("GPUPOOL_SIM_STATE");
    if (p && *p) {
        if (strlen(p) >= len)
            return gp_err_set(err, GP_ERR_INVALID, "GPUPOOL_SIM_STATE is longer than %zu characters",
                              len - 1);
        strcpy(buf, p);
        return 0;
    }
    const char *dir = getenv("GPUPOOL_SIM_DIR");
    if (!dir || !*dir)
        dir = "/dev/shm";
    const char *host = getenv("GPUPOOL_SIM_HOST_ID");
    uint64_t h = fnv1a(spec->text, fnv1a(host ? host : "", 0xcbf29ce484222325ull));
    int n = snprintf(buf, len, "%s/gpupool-sim-%u-%016llx", dir, (unsigned)getuid(), (unsigned long long)h);
    if (n < 0 || (size_t)n >= len)
        return gp_err_set(err, GP_ERR_INVALID, "GPUPOOL_SIM_DIR is too long");
    return 0;
}

/* The process entries of the state file as a shared process table (common/proctab.h). */
static void clear_proc(void *entry);

static gp_proctab proctab(const gp_shm_handle *h)
{
    gp_proctab t = {h->fd, LOCK_BASE, h->shm->proc, sizeof(gp_shm_proc), GP_SIM_MAX_PROCS, clear_proc};
    return t;
}

int gp_shm_open(gp_shm_handle *h, const gp_sim_spec *spec, gp_err *err)
{
    memset(h, 0, sizeof *h);
    h->fd = -1;
    h->proc = -1;
    if (state_path(h->path, sizeof h->path, spec, err) < 0)
        return -1;
    int fd = open(h->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return gp_err_set(err, GP_ERR_IO,
                          "cannot open the simulated GPU state %s: %s (set GPUPOOL_SIM_DIR to a "
                          "writable folder)",
                          h->path, strerror(errno));
    h->fd = fd;
    if (flock(fd, LOCK_EX) < 0) {
        gp_err_set(err, GP_ERR_IO, "cannot lock %s: %s", h->path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        gp_err_set(err, GP_ERR_IO, "cannot stat %s: %s", h->path, strerror(errno));
        goto fail_unlock;
    }
    if ((size_t)st.st_size < sizeof(gp_shm) && ftruncate(fd, sizeof(gp_shm)) < 0) {
        gp_err_set(err, GP_ERR_IO, "cannot size %s: %s (is the folder full?)", h->path, strerror(errno));
        goto fail_unlock;
    }
    void *p = mmap(NULL, sizeof(gp_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        gp_err_set(err, GP_ERR_IO, "cannot map %s: %s", h->path, strerror(errno));
        goto fail_unlock;
    }
    h->shm = p;
    gp_shm *s = h->shm;
    bool valid = s->magic == GP_SHM_MAGIC && s->version == GP_SHM_VERSION && s->size == sizeof(gp_shm) &&
                 atomic_load(&s->ready) == 1;
    bool same = valid && strcmp(s->spec, spec->text) == 0 && s->ndev == (uint32_t)spec->ndev;
    if (!same) {
        gp_proctab t = proctab(h);
        if (valid && gp_proctab_any_owner(&t)) {
            gp_err_set(
                err, GP_ERR_CONFLICT,
                "simulated GPU state %s is in use with GPUs \"%s\", not \"%s\": stop those processes or "
                "set GPUPOOL_SIM_STATE to another file",
                h->path, s->spec, spec->text);
            goto fail_unlock;
        }
        memset(s, 0, sizeof *s);
        s->magic = GP_SHM_MAGIC;
        s->version = GP_SHM_VERSION;
        s->size = sizeof(gp_shm);
        s->ndev = (uint32_t)spec->ndev;
        snprintf(s->spec, sizeof s->spec, "%s", spec->text);
        for (int i = 0; i < spec->ndev; i++)
            init_device(&s->dev[i], spec->model[i], i, spec->text);
        atomic_store(&s->ready, 1);
    }
    flock(fd, LOCK_UN);
    return 0;
fail_unlock:
    flock(fd, LOCK_UN);
fail:
    if (h->shm)
        munmap(h->shm, sizeof(gp_shm));
    close(fd);
    h->shm = NULL;
    h->fd = -1;
    return -1;
}

void gp_shm_close(gp_shm_handle *h)
{
    if (h->proc >= 0)
        gp_shm_proc_release(h);
    if (h->shm)
        munmap(h->shm, sizeof(gp_shm));
    if (h->fd >= 0)
        close(h->fd);
    h->shm = NULL;
    h->fd = -1;
}

/* ---- process entries ------------------------------------------------------------------------------ */

static void clear_proc(void *entry)
{
    gp_shm_proc *p = entry;
    for (int d = 0; d < GP_SIM_MAX_DEVICES; d++) {
        atomic_store(&p->mem[d], 0);
        atomic_store(&p->busy_ns[d], 0);
        atomic_store(&p->nctx[d], 0);
    }
    atomic_store(&p->snap_seq, 0);
    p->snap_next = 0;
    memset(p->snap_ts, 0, sizeof p->snap_ts);
    memset(p->snap_busy, 0, sizeof p->snap_busy);
    p->snap_last_ns = 0;
    p->name[0] = '\0';
}

static void read_comm(char *buf, size_t len)
{
    buf[0] = '\0';
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[n] = '\0'; /* the first NUL ends argv[0] */
}

int gp_shm_proc_claim(gp_shm_handle *h, gp_err *err)
{
    if (h->proc >= 0)
        return 0;
    gp_shm_reap(h); /* a new process on the device is a good moment to clear out dead ones */
    gp_proctab t = proctab(h);
    int i = gp_proctab_claim(&t);
    if (i < 0)
        return gp_err_set(err, GP_ERR_RANGE, "the simulated GPU host already has %d processes",
                          GP_SIM_MAX_PROCS);
    gp_shm_proc *p = &h->shm->proc[i];
    read_comm(p->name, sizeof p->name);
    p->start_ns = gp_now_ns();
    h->proc = i;
    return 0;
}

void gp_shm_proc_release(gp_shm_handle *h)
{
    if (h->proc < 0)
        return;
    gp_proctab t = proctab(h);
    gp_proctab_release(&t, h->proc);
    h->proc = -1;
}

bool gp_shm_proc_alive(gp_shm_handle *h, int i)
{
    gp_proctab t = proctab(h);
    return gp_proctab_alive(&t, i, h->proc);
}

int gp_shm_reap(gp_shm_handle *h)
{
    gp_proctab t = proctab(h);
    return gp_proctab_reap(&t, h->proc);
}

void gp_shm_reap_soon(gp_shm_handle *h)
{
    _Atomic uint64_t *last = &h->shm->query_reap_ns;
    uint64_t now = gp_now_ns(), prev = atomic_load(last);
    if (now - prev >= 100000000ull && atomic_compare_exchange_strong(last, &prev, now))
        gp_shm_reap(h);
}

/* ---- device memory -------------------------------------------------------------------------------- */

uint64_t gp_shm_mem_used(const gp_shm *shm, int dev)
{
    uint64_t sum = 0;
    for (int i = 0; i < GP_SIM_MAX_PROCS; i++)
        sum += atomic_load(&((gp_shm_proc *)&shm->proc[i])->mem[dev]);
    return sum;
}

int gp_shm_mem_charge(gp_shm_handle *h, int dev, uint64_t bytes)
{
    if (h->proc < 0)
        return -1;
    _Atomic uint64_t *mine = &h->shm->proc[h->proc].mem[dev];
    uint64_t total = h->shm->dev[dev].model.vram_bytes;
    if (bytes > total)
        return -1;
    for (int attempt = 0; attempt < 4; attempt++) {
        /* Add first, then look: two processes racing for the last bytes each see the other's claim, so the
         * device is never over-committed (at worst both back off and retry). */
        atomic_fetch_add(mine, bytes);
        if (gp_shm_mem_used(h->shm, dev) <= total)
            return 0;
        atomic_fetch_sub(mine, bytes);
        if (attempt == 0 && gp_shm_reap(h) > 0)
            continue;
        if (attempt > 0)
            usleep(100u << attempt);
    }
    return -1;
}

void gp_shm_mem_uncharge(gp_shm_handle *h, int dev, uint64_t bytes)
{
    if (h->proc < 0)
        return;
    _Atomic uint64_t *mine = &h->shm->proc[h->proc].mem[dev];
    uint64_t cur = atomic_load(mine);
    /* Never below zero: an underflow would make the device look full for everyone. */
    while (!atomic_compare_exchange_weak(mine, &cur, cur >= bytes ? cur - bytes : 0)) {
    }
}

/* ---- timelines and utilization -------------------------------------------------------------------- */

/* A process's GPU time is counted as it elapses, not when it is reserved: work is reserved ahead (behind
 * other processes' work, or up to the look-ahead), and counting it then would put a burst of reserved
 * milliseconds into one short sample, which NVML's percentages cap at 100 % - losing most of it. Reservations
 * wait here (this process's own, so a local list) until their end has passed; gp_shm_tick moves them into the
 * process's busy counter. Ends arrive nearly in order (each device's timeline only grows). */
#define PENDING_MAX 4096
static struct {
    pthread_mutex_t mu;
    unsigned head, n;
    struct {
        uint64_t end, dur;
        int dev;
    } e[PENDING_MAX];
} g_pending = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void pending_add(gp_shm_handle *h, int dev, uint64_t end, uint64_t dur)
{
    pthread_mutex_lock(&g_pending.mu);
    if (g_pending.n == PENDING_MAX) { /* full: count the oldest now rather than lose it */
        unsigned k = g_pending.head;
        atomic_fetch_add(&h->shm->proc[h->proc].busy_ns[g_pending.e[k].dev], g_pending.e[k].dur);
        g_pending.head = (k + 1) % PENDING_MAX;
        g_pending.n--;
    }
    unsigned k = (g_pending.head + g_pending.n) % PENDING_MAX;
    g_pending.e[k].end = end;
    g_pending.e[k].dur = dur;
    g_pending.e[k].dev = dev;
    g_pending.n++;
    pthread_mutex_unlock(&g_pending.mu);
}

static void pending_drain(gp_shm_handle *h, uint64_t now)
{
    if (h->proc < 0)
        return;
    pthread_mutex_lock(&g_pending.mu);
    while (g_pending.n > 0 && g_pending.e[g_pending.head].end <= now) {
        unsigned k = g_pending.head;
        atomic_fetch_add(&h->shm->proc[h->proc].busy_ns[g_pending.e[k].dev], g_pending.e[k].dur);
        g_pending.head = (k + 1) % PENDING_MAX;
        g_pending.n--;
    }
    pthread_mutex_unlock(&g_pending.mu);
}

uint64_t gp_shm_reserve(gp_shm_handle *h, int dev, int engine, uint64_t earliest_ns, uint64_t dur_ns,
                        uint64_t membusy_ns)
{
    gp_shm_dev *d = &h->shm->dev[dev];
    uint64_t cur = atomic_load(&d->until[engine]), end;
    do {
        uint64_t start = cur > earliest_ns ? cur : earliest_ns;
        end = start + dur_ns;
    } while (!atomic_compare_exchange_weak(&d->until[engine], &cur, end));
    atomic_fetch_add(&d->reserved[engine], dur_ns);
    if (engine == GP_ENGINE_COMPUTE) {
        atomic_fetch_add(&d->membusy_reserved, membusy_ns);
        if (h->proc >= 0)
            pending_add(h, dev, end, dur_ns);
    }
    return end;
}

void gp_shm_busy_now(const gp_shm *shm, int dev, uint64_t now, uint64_t *busy, uint64_t *membusy)
{
    gp_shm_dev *d = (gp_shm_dev *)&shm->dev[dev];
    uint64_t until, res, mres;
    for (int i = 0;; i++) {
        until = atomic_load(&d->until[GP_ENGINE_COMPUTE]);
        res = atomic_load(&d->reserved[GP_ENGINE_COMPUTE]);
        mres = atomic_load(&d->membusy_reserved);
        if (atomic_load(&d->until[GP_ENGINE_COMPUTE]) == until || i == 8)
            break;
    }
    /* Work reserved but not yet elapsed lies, contiguous, between now and `until`. */
    uint64_t future = until > now ? until - now : 0;
    uint64_t b = res > future ? res - future : 0;
    *busy = b;
    *membusy = res ? (uint64_t)((double)mres * ((double)b / (double)res)) : 0;
}

/* A process snapshots its own busy time (only the owner writes its entry, so no CAS is needed). */
static void proc_snapshot(gp_shm_handle *h, uint64_t now)
{
    if (h->proc < 0)
        return;
    gp_shm_proc *p = &h->shm->proc[h->proc];
    if (now - p->snap_last_ns < GP_SIM_PROC_SNAP_PERIOD_NS)
        return;
    p->snap_last_ns = now;
    uint32_t seq = atomic_load(&p->snap_seq);
    atomic_store(&p->snap_seq, seq + 1);
    uint32_t k = p->snap_next % GP_SIM_PROC_SNAPS;
    p->snap_ts[k] = now;
    for (int d = 0; d < GP_SIM_MAX_DEVICES; d++)
        p->snap_busy[k][d] = atomic_load(&p->busy_ns[d]);
    p->snap_next++;
    atomic_store(&p->snap_seq, seq + 2);
}

void gp_shm_tick(gp_shm_handle *h, int dev, uint64_t now)
{
    gp_shm_dev *d = &h->shm->dev[dev];
    uint64_t last = atomic_load(&d->snap_last_ns);
    if (now - last >= GP_SIM_SNAP_PERIOD_NS && atomic_compare_exchange_strong(&d->snap_last_ns, &last, now)) {
        uint64_t k = atomic_fetch_add(&d->snap_next, 1) % GP_SIM_UTIL_SNAPS;
        gp_util_snap *sn = &d->snaps[k];
        uint64_t busy, membusy;
        gp_shm_busy_now(h->shm, dev, now, &busy, &membusy);
        uint32_t seq = atomic_load(&sn->seq);
        atomic_store(&sn->seq, seq | 1);
        sn->ts_ns = now;
        sn->busy_ns = busy;
        sn->membusy_ns = membusy;
        atomic_store(&sn->seq, (seq | 1) + 1);
    }
    pending_drain(h, now);
    proc_snapshot(h, now);
    uint64_t rl = atomic_load(&d->reap_last_ns);
    if (now - rl >= GP_SIM_REAP_PERIOD_NS && atomic_compare_exchange_strong(&d->reap_last_ns, &rl, now))
        gp_shm_reap(h);
}

static bool read_snap(const gp_util_snap *sn, gp_util_snap *out)
{
    for (int i = 0; i < 4; i++) {
        uint32_t s1 = atomic_load(&((gp_util_snap *)sn)->seq);
        if (s1 & 1)
            continue;
        out->ts_ns = sn->ts_ns;
        out->busy_ns = sn->busy_ns;
        out->membusy_ns = sn->membusy_ns;
        if (atomic_load(&((gp_util_snap *)sn)->seq) == s1)
            return s1 != 0;
    }
    return false;
}

static unsigned pct_of(uint64_t part, uint64_t whole)
{
    if (whole == 0)
        return 0;
    uint64_t v = (part * 100 + whole / 2) / whole;
    return v > 100 ? 100 : (unsigned)v;
}

void gp_shm_util(gp_shm_handle *h, int dev, uint64_t window_ns, unsigned *gpu_pct, unsigned *mem_pct)
{
    uint64_t now = gp_now_ns();
    gp_shm_tick(h, dev, now);
    gp_shm_dev *d = &h->shm->dev[dev];
    gp_util_snap best = {0}, sn;
    bool found = false;
    for (int i = 0; i < GP_SIM_UTIL_SNAPS; i++) {
        if (!read_snap(&d->snaps[i], &sn) || sn.ts_ns >= now)
            continue;
        /* the newest snapshot at least a window old; else the oldest one there is */
        if (sn.ts_ns + window_ns <= now) {
            if (!found || best.ts_ns + window_ns > now || sn.ts_ns > best.ts_ns)
                best = sn;
        } else if (!found || (best.ts_ns + window_ns > now && sn.ts_ns < best.ts_ns)) {
            best = sn;
        }
        found = true;
    }
    uint64_t busy, membusy;
    gp_shm_busy_now(h->shm, dev, now, &busy, &membusy);
    if (!found) {
        *gpu_pct = 0;
        *mem_pct = 0;
        return;
    }
    *gpu_pct = pct_of(busy - (busy > best.busy_ns ? best.busy_ns : busy), now - best.ts_ns);
    *mem_pct = pct_of(membusy - (membusy > best.membusy_ns ? best.membusy_ns : membusy), now - best.ts_ns);
}

int gp_shm_proc_samples(const gp_shm *shm, int proc, int dev, uint64_t since_ns, uint64_t *ts_ns,
                        unsigned *pct, int max)
{
    gp_shm_proc *p = (gp_shm_proc *)&shm->proc[proc];
    uint64_t ts[GP_SIM_PROC_SNAPS], busy[GP_SIM_PROC_SNAPS];
    int n = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t s1 = atomic_load(&p->snap_seq);
        if (s1 & 1)
            continue;
        n = 0;
        for (int k = 0; k < GP_SIM_PROC_SNAPS; k++)
            if (p->snap_ts[k]) {
                ts[n] = p->snap_ts[k];
                busy[n] = p->snap_busy[k][dev];
                n++;
            }
        if (atomic_load(&p->snap_seq) == s1)
            break;
    }
    /* oldest first (insertion sort: at most 64) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ts[j] < ts[j - 1]; j--) {
            uint64_t t = ts[j], b = busy[j];
            ts[j] = ts[j - 1];
            busy[j] = busy[j - 1];
            ts[j - 1] = t;
            busy[j - 1] = b;
        }
    int out = 0;
    for (int i = 1; i < n && out < max; i++) {
        if (ts[i] <= since_ns || ts[i] <= ts[i - 1] || busy[i] < busy[i - 1])
            continue;
        ts_ns[out] = ts[i];
        pct[out] = pct_of(busy[i] - busy[i - 1], ts[i] - ts[i - 1]);
        out++;
    }
    return out;
}

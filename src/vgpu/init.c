/* init.c - start-up of the vGPU library: the real driver and NVML, the workload's slots, refusal when a
 * slot is missing or corrupt, device visibility, contexts, and fork.
 *
 * Nothing happens at load time beyond registering fork handlers: /etc/ld.so.preload puts the library in
 * every process of a host, and one that never touches CUDA or NVML must not notice it. The first CUDA or
 * NVML call runs vg_init. With GPUPOOL_VGPU_DISABLE=1 everything passes through (and stderr says so); with
 * no valid slot folder in GPUPOOL_SLOT_DIR every call is refused with a message - never silently unlimited.
 */
#include "vgpu/vgpu.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

vg_state g_vg = {.mem_mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

CUresult vg_missing_cuda(void)
{
    gp_log_once(GP_LOG_WARN, VG_LOG,
                "the installed CUDA driver lacks a function the program called "
                "(returning CUDA_ERROR_NOT_SUPPORTED)");
    return CUDA_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t vg_missing_nvml(void)
{
    gp_log_once(GP_LOG_WARN, VG_LOG,
                "the installed NVML lacks a function the program called "
                "(returning NVML_ERROR_FUNCTION_NOT_FOUND)");
    return NVML_ERROR_FUNCTION_NOT_FOUND;
}

/* dlsym as glibc provides it; ours (lookup.c) would hand back wrappers. */
void *vg_real_dlsym(void *handle, const char *name);

__attribute__((format(printf, 1, 2))) static void refuse(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_vg.mode = VG_REFUSE;
    vsnprintf(g_vg.refuse_why, sizeof g_vg.refuse_why, fmt, ap);
    va_end(ap);
    /* Said at once and always: a refused program must know why it has no GPU. */
    fprintf(stderr, "gpupool-vgpu: %s; CUDA and NVML calls are refused\n", g_vg.refuse_why);
}

static void resolve_all(void)
{
    /* The loader searches libcuda.so.1 and libnvidia-ml.so.1 as the program would have. */
    g_vg.cuda_dl = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    g_vg.nvml_dl = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL);
#define VG_RESOLVE_CUDA(name) \
    *(void **)&g_vg.real.name = g_vg.cuda_dl ? vg_real_dlsym(g_vg.cuda_dl, #name) : NULL;
#define VG_RESOLVE_NVML(name) \
    *(void **)&g_vg.real.name = g_vg.nvml_dl ? vg_real_dlsym(g_vg.nvml_dl, #name) : NULL;
    VG_CUDA_WRAPPED(VG_RESOLVE_CUDA)
    VG_CUDA_USED(VG_RESOLVE_CUDA)
    VG_NVML_WRAPPED(VG_RESOLVE_NVML)
    VG_NVML_USED(VG_RESOLVE_NVML)
#undef VG_RESOLVE_CUDA
#undef VG_RESOLVE_NVML
}

static void do_init(void)
{
    const char *t = getenv("GPUPOOL_VGPU_FREEZE_TIMEOUT_S");
    g_vg.freeze_timeout_ns = (t && atoll(t) > 0 ? (uint64_t)atoll(t) : 600) * 1000000000ull;
    resolve_all();
    const char *dis = getenv("GPUPOOL_VGPU_DISABLE");
    if (dis && *dis && strcmp(dis, "0") != 0) {
        g_vg.mode = VG_DISABLED;
        fprintf(stderr,
                "gpupool-vgpu: enforcement is OFF (GPUPOOL_VGPU_DISABLE=%s): this process has no VRAM or "
                "compute limit\n",
                dis);
        return;
    }
    if (g_vg.cuda_dl == NULL && g_vg.nvml_dl == NULL) {
        refuse("no CUDA driver (libcuda.so.1) and no NVML (libnvidia-ml.so.1) on this host");
        return;
    }
    const char *dir = getenv("GPUPOOL_SLOT_DIR");
    if (dir == NULL || *dir == '\0') {
        refuse("no vGPU slot: GPUPOOL_SLOT_DIR is not set (run the program with `gpupool run`, or set "
               "GPUPOOL_VGPU_DISABLE=1 to run it unlimited for debugging)");
        return;
    }
    gp_err err;
    if (gp_slot_dir_open(dir, g_vg.slots, GP_SLOT_MAX_GPUS, &g_vg.nslots, &err) < 0) {
        refuse("%s", err.msg);
        return;
    }
    g_vg.mode = VG_ENFORCE;
}

int vg_init_slow(void)
{
    pthread_once(&g_once, do_init);
    atomic_store_explicit(&g_vg.inited, 1, memory_order_release);
    return g_vg.mode;
}

/* ---- CUDA start-up and visibility ----------------------------------------------------------------- */

CUresult vg_cuda_ok(void)
{
    int mode = vg_init();
    if (mode == VG_REFUSE)
        return CUDA_ERROR_NO_DEVICE;
    return CUDA_SUCCESS;
}

/* The devices CUDA should show: the slots' GPUs in slot order, narrowed by the program's own
 * CUDA_VISIBLE_DEVICES, which counts from the vGPU's device 0 (indices or UUID prefixes of slot GPUs). */
static int compose_visible(char *out, size_t len, int *order)
{
    const char *app = getenv("GPUPOOL_APP_CUDA_VISIBLE_DEVICES");
    if (app == NULL)
        app = getenv("CUDA_VISIBLE_DEVICES");
    int n = 0;
    out[0] = '\0';
    if (app == NULL) {
        for (int i = 0; i < g_vg.nslots; i++)
            order[n++] = i;
    } else {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", app);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok && n < g_vg.nslots;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            int found = -1;
            if (strncasecmp(tok, "GPU-", 4) == 0) {
                for (int i = 0; i < g_vg.nslots; i++)
                    if (strncasecmp(g_vg.slots[i].s->gpu_uuid, tok, strlen(tok)) == 0)
                        found = found == -1 ? i : -2;
            } else {
                char *end;
                long v = strtol(tok, &end, 10);
                if (end != tok && *end == '\0' && v >= 0 && v < g_vg.nslots)
                    found = (int)v;
            }
            for (int j = 0; j < n && found >= 0; j++)
                if (order[j] == found)
                    found = -1;
            if (found < 0)
                break; /* as the driver does: the list ends at the first bad entry */
            order[n++] = found;
        }
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int w = snprintf(out + off, len - off, "%s%s", i ? "," : "", g_vg.slots[order[i]].s->gpu_uuid);
        if (w < 0 || (size_t)w >= len - off)
            break;
        off += (size_t)w;
    }
    return n;
}

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;

VG_API CUresult cuInit(unsigned int Flags)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    if (g_vg.mode == VG_DISABLED)
        return REAL(cuInit)(Flags);
    pthread_mutex_lock(&g_init_mu);
    if (!atomic_load(&g_vg.cuda_ready)) {
        int order[GP_SLOT_MAX_GPUS];
        char visible[GP_SLOT_MAX_GPUS * 48];
        int n = compose_visible(visible, sizeof visible, order);
        /* Keep the program's own list for its children, which inherit the composed one. */
        const char *app = getenv("CUDA_VISIBLE_DEVICES");
        if (app != NULL)
            setenv("GPUPOOL_APP_CUDA_VISIBLE_DEVICES", app, 0);
        /* The driver reads CUDA_VISIBLE_DEVICES at cuInit: it then shows exactly the vGPU's devices. */
        setenv("CUDA_VISIBLE_DEVICES", n ? visible : "", 1);
        rc = REAL(cuInit)(Flags);
        if (rc == CUDA_ERROR_NO_DEVICE && n > 0) {
            /* The driver found none of the slots' GPUs (the list ends at the first it does not know). */
            refuse("the slot's GPU %s is not on this host", g_vg.slots[order[0]].s->gpu_uuid);
        } else if (rc == CUDA_SUCCESS) {
            int count = 0;
            REAL(cuDeviceGetCount)(&count);
            for (int i = 0; i < n && rc == CUDA_SUCCESS; i++) {
                CUuuid u;
                char uuid[48] = "";
                if (i < count && REAL(cuDeviceGetUuid_v2)(&u, i) == CUDA_SUCCESS) {
                    const unsigned char *b = (const unsigned char *)u.bytes;
                    snprintf(uuid, sizeof uuid,
                             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                             b[14], b[15]);
                }
                if (strcasecmp(uuid, g_vg.slots[order[i]].s->gpu_uuid) != 0) {
                    refuse("the slot's GPU %s is not on this host", g_vg.slots[order[i]].s->gpu_uuid);
                    rc = CUDA_ERROR_NO_DEVICE;
                    break;
                }
                g_vg.dev[i].slot = &g_vg.slots[order[i]];
                pthread_mutex_init(&g_vg.dev[i].pace_mu, NULL);
            }
            if (rc == CUDA_SUCCESS) {
                g_vg.ndev = n;
                atomic_store(&g_vg.cuda_ready, 1);
            }
        }
    }
    pthread_mutex_unlock(&g_init_mu);
    return rc;
}

int vg_current_dev(void)
{
    CUdevice d;
    if (REAL(cuCtxGetDevice)(&d) != CUDA_SUCCESS || d < 0 || d >= g_vg.ndev)
        return -1;
    return d;
}

int vg_stream_dev(CUstream s)
{
    if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD)
        return vg_current_dev();
    CUcontext c;
    if (REAL(cuStreamGetCtx)(s, &c) != CUDA_SUCCESS)
        return vg_current_dev();
    CUcontext cur = NULL;
    REAL(cuCtxGetCurrent)(&cur);
    if (c == cur)
        return vg_current_dev();
    if (REAL(cuCtxPushCurrent_v2)(c) != CUDA_SUCCESS)
        return -1;
    int d = vg_current_dev();
    CUcontext popped;
    REAL(cuCtxPopCurrent_v2)(&popped);
    return d;
}

/* ---- contexts ------------------------------------------------------------------------------------- */

/* Device memory this process holds on a device according to NVML: what its first context took. */
static uint64_t nvml_process_bytes(int dev)
{
    if (vg_nvml_up() != NVML_SUCCESS || g_vg.dev[dev].nvml == NULL ||
        !g_vg.real.nvmlDeviceGetComputeRunningProcesses_v3)
        return 0;
    nvmlProcessInfo_t procs[64];
    unsigned n = 64;
    if (g_vg.real.nvmlDeviceGetComputeRunningProcesses_v3(g_vg.dev[dev].nvml, &n, procs) != NVML_SUCCESS)
        return 0;
    for (unsigned i = 0; i < n; i++)
        if (procs[i].pid == (unsigned)getpid() &&
            procs[i].usedGpuMemory != (unsigned long long)NVML_VALUE_NOT_AVAILABLE)
            return procs[i].usedGpuMemory;
    return 0;
}

CUresult vg_ctx_opened(int dev)
{
    if (g_vg.mode != VG_ENFORCE || dev < 0 || dev >= g_vg.ndev)
        return CUDA_SUCCESS;
    vg_dev *d = &g_vg.dev[dev];
    pthread_mutex_lock(&g_vg.mem_mu);
    CUresult rc = CUDA_SUCCESS;
    if (d->ctx_count++ == 0) {
        gp_err err;
        if (gp_slot_join(d->slot, &err) < 0) {
            gp_log(GP_LOG_ERROR, VG_LOG, "%s", err.msg);
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            /* What NVML says the process holds, less what it allocated (nothing yet, normally). */
            uint64_t held = nvml_process_bytes(dev), tracked = 0, k, v;
            for (size_t i = 0; gp_u64map_next(&g_vg.allocs, &i, &k, &v);)
                if (vg_rec_dev(v) == dev)
                    tracked += vg_rec_bytes(v);
            uint64_t ctx = held > tracked ? held - tracked : 0;
            if (gp_slot_charge(d->slot, ctx) < 0) {
                rc = CUDA_ERROR_OUT_OF_MEMORY;
                gp_log(GP_LOG_WARN, VG_LOG, "a CUDA context needs %llu MiB, more than the vGPU has left",
                       (unsigned long long)(ctx >> 20));
            } else {
                d->ctx_charged = ctx;
                atomic_fetch_add(&d->slot->s->proc[d->slot->proc].ctx_bytes, ctx);
            }
        }
        if (rc)
            d->ctx_count = 0;
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
    return rc;
}

void vg_ctx_closed(int dev)
{
    if (g_vg.mode != VG_ENFORCE || dev < 0 || dev >= g_vg.ndev)
        return;
    vg_dev *d = &g_vg.dev[dev];
    pthread_mutex_lock(&g_vg.mem_mu);
    if (d->ctx_count > 0 && --d->ctx_count == 0 && d->ctx_charged) {
        gp_slot_uncharge(d->slot, d->ctx_charged);
        atomic_fetch_sub(&d->slot->s->proc[d->slot->proc].ctx_bytes, d->ctx_charged);
        d->ctx_charged = 0;
    }
    pthread_mutex_unlock(&g_vg.mem_mu);
}

/* A context was created on dev: account it, or undo it when it does not fit. */
static CUresult created(CUresult rc, CUcontext *pctx, int dev)
{
    if (rc != CUDA_SUCCESS || g_vg.mode != VG_ENFORCE)
        return rc;
    rc = vg_ctx_opened(dev);
    if (rc != CUDA_SUCCESS)
        REAL(cuCtxDestroy_v2)(*pctx);
    return rc;
}

VG_API CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc : created(REAL(cuCtxCreate)(pctx, flags, dev), pctx, dev);
}

VG_API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc : created(REAL(cuCtxCreate_v2)(pctx, flags, dev), pctx, dev);
}

VG_API CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray, int numParams,
                               unsigned int flags, CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc : created(REAL(cuCtxCreate_v3)(pctx, paramsArray, numParams, flags, dev), pctx, dev);
}

VG_API CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams, unsigned int flags,
                               CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    return rc ? rc : created(REAL(cuCtxCreate_v4)(pctx, ctxCreateParams, flags, dev), pctx, dev);
}

static int ctx_device(CUcontext c)
{
    if (REAL(cuCtxPushCurrent_v2)(c) != CUDA_SUCCESS)
        return -1;
    int d = vg_current_dev();
    CUcontext popped;
    REAL(cuCtxPopCurrent_v2)(&popped);
    return d;
}

static CUresult ctx_destroy(CUresult (*real)(CUcontext), CUcontext ctx)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    int dev = g_vg.mode == VG_ENFORCE ? ctx_device(ctx) : -1;
    rc = real(ctx);
    if (rc == CUDA_SUCCESS)
        vg_ctx_closed(dev);
    return rc;
}

VG_API CUresult cuCtxDestroy(CUcontext ctx)
{
    return ctx_destroy(REAL(cuCtxDestroy), ctx);
}

VG_API CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    return ctx_destroy(REAL(cuCtxDestroy_v2), ctx);
}

/* The primary context is counted once per retain, as the driver counts it. */
VG_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
    if (rc == CUDA_SUCCESS && g_vg.mode == VG_ENFORCE && (rc = vg_ctx_opened(dev)) != CUDA_SUCCESS)
        REAL(cuDevicePrimaryCtxRelease_v2)(dev);
    return rc;
}

static CUresult primary_release(CUresult (*real)(CUdevice), CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = real(dev);
    if (rc == CUDA_SUCCESS)
        vg_ctx_closed(dev);
    return rc;
}

VG_API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return primary_release(REAL(cuDevicePrimaryCtxRelease), dev);
}

VG_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    return primary_release(REAL(cuDevicePrimaryCtxRelease_v2), dev);
}

static CUresult primary_reset(CUresult (*real)(CUdevice), CUdevice dev)
{
    CUresult rc = vg_cuda_ok();
    if (rc)
        return rc;
    rc = real(dev);
    /* A reset frees everything the primary context held; its retains are gone too. */
    if (rc == CUDA_SUCCESS && g_vg.mode == VG_ENFORCE && dev >= 0 && dev < g_vg.ndev) {
        pthread_mutex_lock(&g_vg.mem_mu);
        uint64_t k, v, freed = 0;
        for (size_t i = 0; gp_u64map_next(&g_vg.allocs, &i, &k, &v);)
            if (vg_rec_dev(v) == dev) {
                freed += vg_rec_bytes(v);
                gp_u64map_del(&g_vg.allocs, k, NULL);
            }
        gp_slot_uncharge(g_vg.dev[dev].slot, freed);
        pthread_mutex_unlock(&g_vg.mem_mu);
        while (g_vg.dev[dev].ctx_count > 0)
            vg_ctx_closed(dev);
    }
    return rc;
}

VG_API CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return primary_reset(REAL(cuDevicePrimaryCtxReset), dev);
}

VG_API CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    return primary_reset(REAL(cuDevicePrimaryCtxReset_v2), dev);
}

/* ---- fork ----------------------------------------------------------------------------------------- */

static void before_fork(void)
{
    pthread_mutex_lock(&g_init_mu);
    pthread_mutex_lock(&g_vg.mem_mu);
}

static void after_fork_parent(void)
{
    pthread_mutex_unlock(&g_vg.mem_mu);
    pthread_mutex_unlock(&g_init_mu);
}

static void after_fork_child(void)
{
    pthread_mutex_init(&g_vg.mem_mu, NULL);
    pthread_mutex_init(&g_init_mu, NULL);
    /* The slot entries and their locks are the parent's (the child shares its open file descriptions): forget
     * them without unlocking, and close our copies. CUDA in a forked child is unusable anyway. */
    for (int i = 0; i < g_vg.nslots; i++) {
        g_vg.slots[i].proc = -1;
        if (g_vg.slots[i].fd >= 0)
            close(g_vg.slots[i].fd);
        g_vg.slots[i].fd = -1;
    }
    for (int i = 0; i < g_vg.ndev; i++) {
        pthread_mutex_init(&g_vg.dev[i].pace_mu, NULL);
        g_vg.dev[i].ctx_count = 0;
        g_vg.dev[i].ctx_charged = 0;
        g_vg.dev[i].pace_n = 0;
        g_vg.dev[i].pace_depth = 2;
    }
}

__attribute__((constructor)) static void vg_load(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

__attribute__((destructor)) static void vg_unload(void)
{
    /* Give the entries back at a normal exit; a killed process's are reclaimed by the next one to look. */
    for (int i = 0; i < g_vg.nslots; i++)
        if (g_vg.slots[i].proc >= 0) {
            gp_proctab t = gp_slot_proctab(&g_vg.slots[i]);
            gp_proctab_release(&t, g_vg.slots[i].proc);
            g_vg.slots[i].proc = -1;
        }
}

/* client_ctx.c - devices, primary and ordinary contexts, and the per-thread current-context stack.
 *
 * Device facts (name, memory, UUID, every attribute) are fetched once in cuInit and answered locally. The
 * current-context stack is thread-local here, as in the driver; each call that needs a context sends the id
 * of the current one and the worker makes it current there. Primary contexts are counted here: the worker
 * sees PRIMARY_RETAIN when the count leaves 0 and PRIMARY_RELEASE when it returns to 0. Context records live
 * as long as the process, so a destroyed one answers CUDA_ERROR_CONTEXT_IS_DESTROYED instead of being a
 * dangling pointer.
 */
#include "remote/client.h"
#include "remote/remote_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- devices -------------------------------------------------------------------------------------- */

#define GP_MAX_DEVS 64

typedef struct gp_rdev {
    char name[256];
    uint64_t total_mem;
    uint8_t uuid[16];
    uint32_t nattr;
    int32_t *attr; /* attr[i] is attribute i+1 */
    uint32_t phys; /* the worker's ordinal */
    gp_rctx primary;
} gp_rdev;

static gp_rdev g_devs[GP_MAX_DEVS];
static int g_ndev;

/* CUDA_VISIBLE_DEVICES (remote_conn.c, shared with the remote NVML): keeps the visible devices first in
 * all[], in order; returns how many. */
static int apply_visible(gp_rdev *all, int n)
{
    uint8_t uuid[GP_MAX_DEVS][16];
    int order[GP_MAX_DEVS];
    for (int i = 0; i < n; i++)
        memcpy(uuid[i], all[i].uuid, 16);
    int count = gp_remote_visible((const uint8_t(*)[16])uuid, n, order);
    gp_rdev tmp[GP_MAX_DEVS];
    memcpy(tmp, all, (size_t)n * sizeof *all);
    for (int i = 0; i < count; i++)
        all[i] = tmp[order[i]];
    for (int i = count, k = 0; i < n; k++) { /* the hidden ones after, so that their memory stays owned */
        bool used = false;
        for (int j = 0; j < count; j++)
            used |= order[j] == k;
        if (!used)
            all[i++] = tmp[k];
    }
    return count;
}

/* What the worker's GPU can do with this host's memory, said as it is over the network: managed memory is
 * coherent only at synchronization points (the host keeps off it while kernels run, as on a device without
 * concurrent managed access), the GPU reaches no pageable memory of this host, registered memory gets a
 * device address of its own (client_mirror.c), and no atomic is shared with this host. */
static void tell_remote_truth(gp_rdev *d)
{
    static const int zero[] = {CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS,
                               CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS,
                               CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
                               CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST,
                               CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM,
                               CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        if ((uint32_t)zero[i] <= d->nattr)
            d->attr[zero[i] - 1] = 0;
}

CUresult gp_devices_load(void)
{
    gp_rbuf r;
    gp_rpc_begin();
    CUresult rc = gp_rpc_call(GP_OP_DEVICE_COUNT, &r);
    uint32_t n = gp_r_u32(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_DEVICE_COUNT);
    gp_rpc_end();
    if (rc)
        return rc;
    if (n > GP_MAX_DEVS)
        n = GP_MAX_DEVS;
    for (uint32_t i = 0; i < n; i++) {
        gp_rdev *d = &g_devs[i];
        d->phys = i;
        gp_w_u32(gp_rpc_begin(), i);
        rc = gp_rpc_call(GP_OP_DEVICE_INFO, &r);
        if (rc == CUDA_SUCCESS) {
            gp_r_str(&r, d->name, sizeof d->name);
            d->total_mem = gp_r_u64(&r);
            size_t ul = 0;
            const void *u = gp_r_blob(&r, &ul);
            if (u && ul == 16)
                memcpy(d->uuid, u, 16);
            uint32_t na = gp_r_u32(&r);
            if (r.ok && na <= r.left / 4) {
                free(d->attr);
                d->attr = calloc(na ? na : 1, sizeof *d->attr);
                d->nattr = d->attr ? na : 0;
                for (uint32_t k = 0; k < na; k++) {
                    int32_t v = (int32_t)gp_r_u32(&r);
                    if (d->attr)
                        d->attr[k] = v;
                }
            } else {
                r.ok = false;
            }
            if (!r.ok)
                rc = gp_rpc_malformed(GP_OP_DEVICE_INFO);
        }
        gp_rpc_end();
        if (rc)
            return rc;
    }
    g_ndev = apply_visible(g_devs, (int)n);
    for (int i = 0; i < g_ndev; i++) {
        gp_rdev *d = &g_devs[i];
        tell_remote_truth(d);
        d->primary.dev = i;
        d->primary.primary = true;
        if (gp_reg_add(&d->primary, GP_R_CTX) < 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return g_ndev ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

int gp_dev_count(void)
{
    return g_ndev;
}

int gp_dev_attr(int dev, int attrib)
{
    if (dev < 0 || dev >= g_ndev || attrib < 1 || (uint32_t)attrib > g_devs[dev].nattr)
        return 0;
    return g_devs[dev].attr[attrib - 1];
}

int gp_dev_phys(int dev)
{
    return dev >= 0 && dev < g_ndev ? (int)g_devs[dev].phys : -1;
}

int gp_dev_from_phys(int phys)
{
    for (int i = 0; i < g_ndev; i++)
        if ((int)g_devs[i].phys == phys)
            return i;
    return -1;
}

static CUresult check_dev(CUdevice dev)
{
    GP_READY_OR_RETURN();
    if (dev < 0 || dev >= g_ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    GP_READY_OR_RETURN();
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= g_ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetCount(int *count)
{
    GP_READY_OR_RETURN();
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = g_ndev;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (name == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", g_devs[dev].name);
    return CUDA_SUCCESS;
}

static CUresult get_uuid(CUuuid *uuid, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (uuid == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy(uuid->bytes, g_devs[dev].uuid, 16);
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    return get_uuid(uuid, dev);
}

GP_API CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    return get_uuid(uuid, dev);
}

GP_API CUresult cuDeviceGetLuid(char *luid, unsigned int *deviceNodeMask, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (luid == NULL || deviceNodeMask == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_ERROR_NOT_SUPPORTED; /* LUIDs exist on Windows only */
}

GP_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (bytes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *bytes = (size_t)g_devs[dev].total_mem;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (pi == NULL || (int)attrib < 1 || (uint32_t)attrib > g_devs[dev].nattr)
        return CUDA_ERROR_INVALID_VALUE;
    *pi = g_devs[dev].attr[attrib - 1];
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (major == NULL || minor == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *major = gp_dev_attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    *minor = gp_dev_attr(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (pciBusId == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(pciBusId, (size_t)len, "%04x:%02x:%02x.0",
             (unsigned)gp_dev_attr(dev, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
             (unsigned)gp_dev_attr(dev, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
             (unsigned)gp_dev_attr(dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID));
    return CUDA_SUCCESS;
}

GP_API CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
    GP_READY_OR_RETURN();
    if (dev == NULL || pciBusId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned domain = 0, bus = 0, device = 0, function = 0;
    char tail;
    if (sscanf(pciBusId, "%x:%x:%x.%x%c", &domain, &bus, &device, &function, &tail) != 4) {
        domain = function = 0;
        if (sscanf(pciBusId, "%x:%x:%x%c", &domain, &bus, &device, &tail) != 3) {
            domain = 0;
            if (sscanf(pciBusId, "%x:%x.%x%c", &bus, &device, &function, &tail) != 3)
                return CUDA_ERROR_INVALID_VALUE;
        }
    }
    for (int i = 0; i < g_ndev; i++)
        if ((unsigned)gp_dev_attr(i, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID) == domain &&
            (unsigned)gp_dev_attr(i, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID) == bus &&
            (unsigned)gp_dev_attr(i, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID) == device && function == 0) {
            *dev = i;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_DEVICE;
}

/* ---- the current-context stack -------------------------------------------------------------------- */

static _Thread_local gp_rctx **t_stack;
static _Thread_local int t_depth, t_cap;

/* A thread's stack is freed when the thread exits (the key's destructor gets it). */
static pthread_key_t g_stack_key;
static pthread_once_t g_stack_once = PTHREAD_ONCE_INIT;

static void stack_key_make(void)
{
    (void)pthread_key_create(&g_stack_key, free);
}

static int stack_push(gp_rctx *c)
{
    if (t_depth == t_cap) {
        int ncap = t_cap ? t_cap * 2 : 8;
        gp_rctx **ns = realloc(t_stack, (size_t)ncap * sizeof *ns);
        if (ns == NULL)
            return -1;
        t_stack = ns;
        t_cap = ncap;
        pthread_once(&g_stack_once, stack_key_make);
        (void)pthread_setspecific(g_stack_key, ns);
    }
    t_stack[t_depth++] = c;
    return 0;
}

CUresult gp_ctx_cur(gp_rctx **out)
{
    GP_READY_OR_RETURN();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_rctx *c = t_stack[t_depth - 1];
    if (!atomic_load(&c->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = c;
    return CUDA_SUCCESS;
}

uint64_t gp_ctx_cur_id(void)
{
    if (t_depth == 0)
        return 0;
    gp_rctx *c = t_stack[t_depth - 1];
    return atomic_load(&c->active) ? c->id : 0;
}

/* A context handle argument: live and active. */
static CUresult ctx_arg(CUcontext h, gp_rctx **out)
{
    if (gp_reg_kind(h) != GP_R_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_rctx *c = (gp_rctx *)h;
    if (!atomic_load(&c->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    *out = c;
    return CUDA_SUCCESS;
}

#define CTX_FLAGS_VALID                                                                         \
    (CU_CTX_SCHED_MASK | CU_CTX_MAP_HOST | CU_CTX_LMEM_RESIZE_TO_MAX | CU_CTX_COREDUMP_ENABLE | \
     CU_CTX_USER_COREDUMP_ENABLE | CU_CTX_SYNC_MEMOPS)

static bool flags_ok(unsigned flags)
{
    unsigned sched = flags & CU_CTX_SCHED_MASK;
    return (flags & ~(unsigned)CTX_FLAGS_VALID) == 0 && sched != 3 && sched <= CU_CTX_SCHED_BLOCKING_SYNC;
}

/* A call with no reply fields: u32/u64 arguments, status back. */
static CUresult simple_call(unsigned op, int n, const uint64_t *v, const int *is64)
{
    gp_wbuf *w = gp_rpc_begin();
    for (int i = 0; i < n; i++) {
        if (is64[i])
            gp_w_u64(w, v[i]);
        else
            gp_w_u32(w, (uint32_t)v[i]);
    }
    gp_rbuf r;
    CUresult rc = gp_rpc_call(op, &r);
    gp_rpc_end();
    return rc;
}

static CUresult ctx_create(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    GP_READY_OR_RETURN();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= g_ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!flags_ok(flags))
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->id = gp_client_next_id();
    c->dev = dev;
    c->flags = flags;
    CUresult rc =
        simple_call(GP_OP_CTX_CREATE, 3, (uint64_t[]){flags, g_devs[dev].phys, c->id}, (int[]){0, 0, 1});
    if (rc == CUDA_SUCCESS && (gp_reg_add(c, GP_R_CTX) < 0 || stack_push(c) < 0))
        rc = CUDA_ERROR_OUT_OF_MEMORY; /* the worker's context stays until the session ends */
    if (rc) {
        gp_reg_del(c);
        free(c);
        return rc;
    }
    atomic_store(&c->active, true);
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return ctx_create(pctx, flags, dev);
}

GP_API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return ctx_create(pctx, flags, dev);
}

GP_API CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray, int numParams,
                               unsigned int flags, CUdevice dev)
{
    GP_READY_OR_RETURN();
    if (numParams < 0 || (numParams > 0 && paramsArray == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    if (numParams > 0)
        return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
    return ctx_create(pctx, flags, dev);
}

GP_API CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams, unsigned int flags,
                               CUdevice dev)
{
    GP_READY_OR_RETURN();
    if (ctxCreateParams) {
        if (ctxCreateParams->execAffinityParams && ctxCreateParams->numExecAffinityParams > 0)
            return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
        if (ctxCreateParams->cigParams) {
            gp_log_once(GP_LOG_WARN, GP_LOG_CLIENT,
                        "cuCtxCreate in CIG mode is not supported over GPU-over-IP (returning "
                        "CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    return ctx_create(pctx, flags, dev);
}

static CUresult ctx_destroy(CUcontext h)
{
    GP_READY_OR_RETURN();
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (gp_reg_kind(h) != GP_R_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_rctx *c = (gp_rctx *)h;
    if (!atomic_load(&c->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (c->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = simple_call(GP_OP_CTX_DESTROY, 1, (uint64_t[]){c->id}, (int[]){1});
    if (rc == CUDA_ERROR_DEVICE_UNAVAILABLE)
        return rc;
    atomic_store(&c->active, false);
    gp_dmem_del_owner(c);
    if (t_depth > 0 && t_stack[t_depth - 1] == c)
        t_depth--;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxDestroy(CUcontext ctx)
{
    return ctx_destroy(ctx);
}

GP_API CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    return ctx_destroy(ctx);
}

static CUresult push_current(CUcontext h)
{
    GP_READY_OR_RETURN();
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c;
    CUresult rc = ctx_arg(h, &c);
    if (rc)
        return rc;
    return stack_push(c) < 0 ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
}

GP_API CUresult cuCtxPushCurrent(CUcontext ctx)
{
    return push_current(ctx);
}

GP_API CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    return push_current(ctx);
}

static CUresult pop_current(CUcontext *pctx)
{
    GP_READY_OR_RETURN();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_rctx *c = t_stack[--t_depth];
    if (pctx)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxPopCurrent(CUcontext *pctx)
{
    return pop_current(pctx);
}

GP_API CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    return pop_current(pctx);
}

GP_API CUresult cuCtxSetCurrent(CUcontext ctx)
{
    GP_READY_OR_RETURN();
    if (ctx == NULL) {
        if (t_depth > 0)
            t_depth--;
        return CUDA_SUCCESS;
    }
    if (gp_reg_kind(ctx) != GP_R_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_rctx *c = (gp_rctx *)ctx;
    if (!c->primary && !atomic_load(&c->active))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    /* An inactive primary context may be made current (the runtime does so before retaining). */
    if (t_depth == 0)
        return stack_push(c) < 0 ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
    t_stack[t_depth - 1] = c;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    GP_READY_OR_RETURN();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = t_depth ? (CUcontext)t_stack[t_depth - 1] : NULL;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetDevice(CUdevice *device)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *device = c->dev;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
    gp_rctx *c;
    CUresult rc = ctx ? (gp_client_ready() ? gp_client_ready() : ctx_arg(ctx, &c)) : gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *device = c->dev;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetFlags(unsigned int *flags)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (flags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = c->flags;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetId(CUcontext ctx, unsigned long long *ctxId)
{
    gp_rctx *c;
    CUresult rc = ctx ? (gp_client_ready() ? gp_client_ready() : ctx_arg(ctx, &c)) : gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (ctxId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *ctxId = c->id;
    return CUDA_SUCCESS;
}

static CUresult ctx_sync(gp_rctx *c)
{
    return gp_mirror_synced(simple_call(GP_OP_CTX_SYNC, 1, (uint64_t[]){c->id}, (int[]){1}), c->id, 0,
                            GP_SYNC_CTX);
}

GP_API CUresult cuCtxSynchronize(void)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    return rc ? rc : ctx_sync(c);
}

GP_API CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    gp_rctx *c;
    CUresult rc = ctx ? (gp_client_ready() ? gp_client_ready() : ctx_arg(ctx, &c)) : gp_ctx_cur(&c);
    return rc ? rc : ctx_sync(c);
}

GP_API CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    gp_rctx *c;
    CUresult rc = ctx ? (gp_client_ready() ? gp_client_ready() : ctx_arg(ctx, &c)) : gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *version = 3020;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (leastPriority)
        *leastPriority = 0;
    if (greatestPriority)
        *greatestPriority = -5;
    return CUDA_SUCCESS;
}

/* ---- primary contexts ----------------------------------------------------------------------------- */

GP_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = &g_devs[dev].primary;
    gp_reg_lock(); /* orders retains and releases of one primary context */
    if (c->refs == 0) {
        uint64_t id = gp_client_next_id();
        rc = simple_call(GP_OP_PRIMARY_RETAIN, 2, (uint64_t[]){g_devs[dev].phys, id}, (int[]){0, 1});
        if (rc == CUDA_SUCCESS) {
            c->id = id;
            atomic_store(&c->active, true);
        }
    }
    if (rc == CUDA_SUCCESS)
        c->refs++;
    gp_reg_unlock();
    if (rc == CUDA_SUCCESS)
        *pctx = (CUcontext)c;
    return rc;
}

static CUresult primary_release(CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    gp_rctx *c = &g_devs[dev].primary;
    gp_reg_lock();
    if (c->refs == 0) {
        rc = CUDA_ERROR_INVALID_CONTEXT;
    } else if (c->refs == 1) {
        rc = simple_call(GP_OP_PRIMARY_RELEASE, 1, (uint64_t[]){g_devs[dev].phys}, (int[]){0});
        if (rc != CUDA_ERROR_DEVICE_UNAVAILABLE) {
            c->refs = 0;
            atomic_store(&c->active, false);
            gp_dmem_del_owner(c);
            rc = CUDA_SUCCESS;
        }
    } else {
        c->refs--;
    }
    gp_reg_unlock();
    return rc;
}

GP_API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return primary_release(dev);
}

GP_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    return primary_release(dev);
}

static CUresult primary_set_flags(CUdevice dev, unsigned int flags, bool allow_active)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (!flags_ok(flags))
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = &g_devs[dev].primary;
    if (!allow_active && atomic_load(&c->active))
        return CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE;
    rc = simple_call(GP_OP_PRIMARY_FLAGS, 2, (uint64_t[]){g_devs[dev].phys, flags}, (int[]){0, 0});
    if (rc == CUDA_SUCCESS)
        c->flags = flags;
    return rc;
}

GP_API CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags)
{
    return primary_set_flags(dev, flags, false);
}

GP_API CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags)
{
    return primary_set_flags(dev, flags, true);
}

GP_API CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    if (flags == NULL || active == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_rctx *c = &g_devs[dev].primary;
    *flags = c->flags;
    *active = atomic_load(&c->active);
    return CUDA_SUCCESS;
}

static CUresult primary_reset(CUdevice dev)
{
    CUresult rc = check_dev(dev);
    if (rc)
        return rc;
    gp_rctx *c = &g_devs[dev].primary;
    gp_reg_lock();
    rc = simple_call(GP_OP_PRIMARY_RESET, 1, (uint64_t[]){g_devs[dev].phys}, (int[]){0});
    if (rc == CUDA_SUCCESS) {
        c->refs = 0;
        c->flags = 0;
        atomic_store(&c->active, false);
        gp_dmem_del_owner(c);
    }
    gp_reg_unlock();
    return rc;
}

GP_API CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return primary_reset(dev);
}

GP_API CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    return primary_reset(dev);
}

/* ---- limits --------------------------------------------------------------------------------------- */

GP_API CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u32(w, (uint32_t)limit);
    gp_w_u64(w, value);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CTX_SET_LIMIT, &r);
    gp_rpc_end();
    return rc;
}

GP_API CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit)
{
    gp_rctx *c;
    CUresult rc = gp_ctx_cur(&c);
    if (rc)
        return rc;
    if (pvalue == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_wbuf *w = gp_rpc_begin();
    gp_w_u64(w, c->id);
    gp_w_u32(w, (uint32_t)limit);
    gp_rbuf r;
    rc = gp_rpc_call(GP_OP_CTX_GET_LIMIT, &r);
    uint64_t v = gp_r_u64(&r);
    if (rc == CUDA_SUCCESS && !r.ok)
        rc = gp_rpc_malformed(GP_OP_CTX_GET_LIMIT);
    gp_rpc_end();
    if (rc == CUDA_SUCCESS)
        *pvalue = (size_t)v;
    return rc;
}

/* ctx.c - contexts: created ones, the primary context of each device, and each thread's context stack.
 *
 * Context objects are never freed: a destroyed context stays registered as GP_OBJ_CTX_DEAD, so a thread
 * that still has it current gets CUDA_ERROR_CONTEXT_IS_DESTROYED rather than a crash, and the current-
 * context fast path may read the object without consulting the registry. A context charges its device the
 * model's context overhead (data/gpu-models.csv, ctx_mib) for as long as it is active, as real contexts
 * take device memory.
 */
#include "sim/sim.h"

#include <stdlib.h>
#include <string.h>

/* The calling thread's context stack; the top is the current context. */
static __thread gp_ctx **t_stack;
static __thread int t_depth, t_cap;

static pthread_key_t g_stack_key;
static pthread_once_t g_stack_once = PTHREAD_ONCE_INIT;

static void stack_free(void *unused)
{
    (void)unused;
    free(t_stack);
    t_stack = NULL;
    t_depth = t_cap = 0;
}

static void stack_key_init(void)
{
    pthread_key_create(&g_stack_key, stack_free);
}

static int stack_push(gp_ctx *c)
{
    if (t_depth == t_cap) {
        if (t_stack == NULL) {
            /* the stack is freed when the thread exits */
            pthread_once(&g_stack_once, stack_key_init);
            pthread_setspecific(g_stack_key, (void *)1);
        }
        int ncap = t_cap ? t_cap * 2 : 8;
        gp_ctx **ns = realloc(t_stack, (size_t)ncap * sizeof *ns);
        if (ns == NULL)
            return -1;
        t_stack = ns;
        t_cap = ncap;
    }
    t_stack[t_depth++] = c;
    return 0;
}

/* A context is usable while active and until an asynchronous fault made it sticky-broken: from then on,
 * as on a GPU, every call that needs it returns that error (only destroying it still works). */
static CUresult usable(gp_ctx *c)
{
    if (!atomic_load_explicit(&c->active, memory_order_acquire))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    return gp_ctx_sticky(c);
}

CUresult gp_ctx_current(gp_ctx **out)
{
    GP_INIT_OR_RETURN();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_ctx *c = t_stack[t_depth - 1];
    CUresult rc = usable(c);
    if (rc)
        return rc;
    *out = c;
    return CUDA_SUCCESS;
}

CUresult gp_ctx_resolve(CUcontext h, gp_ctx **out)
{
    if (h == NULL)
        return gp_ctx_current(out);
    GP_INIT_OR_RETURN();
    int t = gp_handle_type(h);
    if (t == GP_OBJ_CTX_DEAD)
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (t != GP_OBJ_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_ctx *c = (gp_ctx *)h;
    CUresult rc = usable(c);
    if (rc)
        return rc;
    *out = c;
    return CUDA_SUCCESS;
}

void gp_ctx_set_sticky(gp_ctx *c, CUresult rc)
{
    int expected = CUDA_SUCCESS;
    if (atomic_compare_exchange_strong(&c->sticky, &expected, (int)rc))
        gp_log(GP_LOG_WARN, GP_LOG_SIM,
               "context %llu on device %d: asynchronous error %d; the context is "
               "unusable from now on, as on a GPU",
               c->id, c->dev, (int)rc);
}

CUresult gp_ctx_synchronize(gp_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->streams.n;
    gp_stream **snap = n ? malloc(n * sizeof *snap) : NULL;
    if (n && snap == NULL) {
        pthread_mutex_unlock(&c->mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        snap[i] = c->streams.v[i];
        atomic_fetch_add(&snap[i]->refs, 1);
    }
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        gp_stream_drain(snap[i]);
        gp_stream_unref(snap[i]);
    }
    free(snap);
    gp_pools_trim_after_sync(c->dev);
    return gp_ctx_sticky(c);
}

/* ---- creation and teardown ------------------------------------------------------------------------ */

static CUresult activate(gp_ctx *c)
{
    if (gp_shm_proc_claim(&g_sim.shm, NULL) < 0) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "no free process entry in the simulated GPU state");
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uint64_t overhead = gp_dev(c->dev)->model.ctx_bytes;
    if (overhead && gp_shm_mem_charge(&g_sim.shm, c->pdev, overhead) < 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->overhead = overhead;
    for (int i = 0; i < GP_NLIMITS; i++)
        c->limits[i] = 0;
    c->limits[CU_LIMIT_STACK_SIZE] = 1024;
    c->limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1048576;
    c->limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8388608;
    c->limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
    c->limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
    c->limits[CU_LIMIT_MAX_L2_FETCH_GRANULARITY] = 32;
    c->limits[CU_LIMIT_PERSISTING_L2_CACHE_SIZE] = 0;
    c->cache_config = CU_FUNC_CACHE_PREFER_NONE;
    c->shared_config = CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE;
    atomic_store(&c->sticky, CUDA_SUCCESS);
    atomic_fetch_add(&c->gen, 1);
    atomic_fetch_add(&g_sim.shm.shm->proc[g_sim.shm.proc].nctx[c->pdev], 1);
    atomic_fetch_add(&g_sim.nctx_live, 1);
    atomic_store_explicit(&c->active, 1, memory_order_release);
    return CUDA_SUCCESS;
}

static void teardown(gp_ctx *c)
{
    gp_ctx_synchronize(c);
    atomic_store_explicit(&c->active, 0, memory_order_release);
    pthread_mutex_lock(&c->mu);
    while (c->streams.n) {
        gp_stream *s = c->streams.v[c->streams.n - 1];
        c->streams.n--;
        pthread_mutex_unlock(&c->mu);
        gp_stream_destroy(s);
        pthread_mutex_lock(&c->mu);
    }
    atomic_store(&c->legacy, NULL);
    while (c->events.n) {
        gp_event *e = c->events.v[--c->events.n];
        gp_handle_del(e);
        gp_event_unref(e);
    }
    pthread_mutex_unlock(&c->mu);
    gp_graph_forget_ctx(c);
    gp_module_forget_ctx(c);
    gp_array_forget_ctx(c);
    gp_vmm_forget_ctx(c);
    gp_mem_forget_ctx(c);
    if (c->overhead)
        gp_shm_mem_uncharge(&g_sim.shm, c->pdev, c->overhead);
    c->overhead = 0;
    if (g_sim.shm.proc >= 0) {
        _Atomic uint32_t *n = &g_sim.shm.shm->proc[g_sim.shm.proc].nctx[c->pdev];
        if (atomic_load(n) > 0)
            atomic_fetch_sub(n, 1);
    }
    atomic_fetch_sub(&g_sim.nctx_live, 1);
}

static gp_ctx *new_ctx(CUdevice dev, unsigned flags, bool primary)
{
    gp_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->dev = dev;
    c->pdev = g_sim.phys[dev];
    c->flags = flags;
    c->primary = primary;
    c->id = gp_next_id();
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

#define CTX_FLAGS_VALID                                                                         \
    (CU_CTX_SCHED_MASK | CU_CTX_MAP_HOST | CU_CTX_LMEM_RESIZE_TO_MAX | CU_CTX_COREDUMP_ENABLE | \
     CU_CTX_USER_COREDUMP_ENABLE | CU_CTX_SYNC_MEMOPS)

static bool flags_ok(unsigned flags)
{
    unsigned sched = flags & CU_CTX_SCHED_MASK;
    return (flags & ~(unsigned)CTX_FLAGS_VALID) == 0 && sched != 3 && sched <= CU_CTX_SCHED_BLOCKING_SYNC;
}

static CUresult ctx_create(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    GP_INIT_OR_RETURN();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!flags_ok(flags))
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c = new_ctx(dev, flags, false);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = activate(c);
    if (rc) {
        free(c);
        return rc;
    }
    if (stack_push(c) < 0) {
        teardown(c);
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    gp_handle_add(c, GP_OBJ_CTX);
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
    GP_INIT_OR_RETURN();
    if (numParams < 0 || (numParams > 0 && paramsArray == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    if (numParams > 0) {
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "cuCtxCreate with execution affinity: the simulated GPU does "
                    "not partition SMs (returning CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY)");
        return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
    }
    return ctx_create(pctx, flags, dev);
}

GP_API CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams, unsigned int flags,
                               CUdevice dev)
{
    GP_INIT_OR_RETURN();
    if (ctxCreateParams) {
        if (ctxCreateParams->execAffinityParams && ctxCreateParams->numExecAffinityParams > 0) {
            gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                        "cuCtxCreate with execution affinity: the simulated GPU does "
                        "not partition SMs (returning CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY)");
            return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
        }
        if (ctxCreateParams->cigParams) {
            gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                        "cuCtxCreate in CIG mode is not supported by the simulated "
                        "GPU (returning CUDA_ERROR_NOT_SUPPORTED)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    return ctx_create(pctx, flags, dev);
}

static CUresult ctx_destroy(CUcontext h)
{
    GP_INIT_OR_RETURN();
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int t = gp_handle_type(h);
    if (t == GP_OBJ_CTX_DEAD)
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (t != GP_OBJ_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_ctx *c = (gp_ctx *)h;
    if (c->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_handle_set_type(c, GP_OBJ_CTX_DEAD);
    teardown(c);
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

/* ---- the context stack ---------------------------------------------------------------------------- */

static CUresult push_current(CUcontext h)
{
    GP_INIT_OR_RETURN();
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c;
    CUresult rc = gp_ctx_resolve(h, &c);
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
    GP_INIT_OR_RETURN();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    gp_ctx *c = t_stack[--t_depth];
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
    GP_INIT_OR_RETURN();
    if (ctx == NULL) {
        if (t_depth > 0)
            t_depth--;
        return CUDA_SUCCESS;
    }
    gp_ctx *c;
    int t = gp_handle_type(ctx);
    if (t == GP_OBJ_CTX_DEAD)
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (t != GP_OBJ_CTX)
        return CUDA_ERROR_INVALID_CONTEXT;
    c = (gp_ctx *)ctx;
    /* An inactive primary context may be made current (the runtime does so before retaining). */
    if (t_depth == 0)
        return stack_push(c) < 0 ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
    t_stack[t_depth - 1] = c;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    GP_INIT_OR_RETURN();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = t_depth ? (CUcontext)t_stack[t_depth - 1] : NULL;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetDevice(CUdevice *device)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *device = c->dev;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_resolve(ctx, &c);
    if (rc)
        return rc;
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *device = c->dev;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetFlags(unsigned int *flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (flags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = c->flags;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxSetFlags(unsigned int flags)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (!flags_ok(flags))
        return CUDA_ERROR_INVALID_VALUE;
    c->flags = flags;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetId(CUcontext ctx, unsigned long long *ctxId)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_resolve(ctx, &c);
    if (rc)
        return rc;
    if (ctxId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *ctxId = c->id;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxSynchronize(void)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc || (rc = gp_capture_sync(NULL, c)))
        return rc;
    return gp_ctx_synchronize(c);
}

GP_API CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_resolve(ctx, &c);
    if (rc || (rc = gp_capture_sync(NULL, c)))
        return rc;
    return gp_ctx_synchronize(c);
}

GP_API CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    switch (limit) {
    case CU_LIMIT_STACK_SIZE:
    case CU_LIMIT_PRINTF_FIFO_SIZE:
    case CU_LIMIT_MALLOC_HEAP_SIZE:
    case CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT:
    case CU_LIMIT_PERSISTING_L2_CACHE_SIZE: break;
    case CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH:
        if (gp_dev_model(c->dev)->cc_major >= 9)
            return CUDA_ERROR_UNSUPPORTED_LIMIT; /* device-side synchronisation is gone since Hopper */
        break;
    case CU_LIMIT_MAX_L2_FETCH_GRANULARITY:
        if (value > 128)
            return CUDA_ERROR_INVALID_VALUE;
        break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    c->limits[limit] = value;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (pvalue == NULL || (int)limit < 0 || (int)limit > CU_LIMIT_PERSISTING_L2_CACHE_SIZE)
        return CUDA_ERROR_INVALID_VALUE;
    *pvalue = c->limits[limit];
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetCacheConfig(CUfunc_cache *pconfig)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (pconfig == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pconfig = c->cache_config;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxSetCacheConfig(CUfunc_cache config)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if ((int)config < CU_FUNC_CACHE_PREFER_NONE || (int)config > CU_FUNC_CACHE_PREFER_EQUAL)
        return CUDA_ERROR_INVALID_VALUE;
    c->cache_config = config;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_resolve(ctx, &c);
    if (rc)
        return rc;
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *version = 3020;
    return CUDA_SUCCESS;
}

GP_API CUresult cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (leastPriority)
        *leastPriority = 0;
    if (greatestPriority)
        *greatestPriority = -5;
    return CUDA_SUCCESS;
}

/* ---- primary contexts ----------------------------------------------------------------------------- */

static CUresult primary_of(CUdevice dev, gp_ctx **out)
{
    GP_INIT_OR_RETURN();
    if (dev < 0 || dev >= g_sim.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_sim.mu);
    gp_ctx *c = g_sim.primary[dev];
    if (c == NULL) {
        c = new_ctx(dev, 0, true);
        if (c == NULL) {
            pthread_mutex_unlock(&g_sim.mu);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        g_sim.primary[dev] = c;
        gp_handle_add(c, GP_OBJ_CTX);
    }
    pthread_mutex_unlock(&g_sim.mu);
    *out = c;
    return CUDA_SUCCESS;
}

GP_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    GP_INIT_OR_RETURN();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_ctx *c;
    CUresult rc = primary_of(dev, &c);
    if (rc)
        return rc;
    pthread_mutex_lock(&g_sim.mu);
    if (atomic_load(&c->refs) == 0) {
        rc = activate(c);
        if (rc) {
            pthread_mutex_unlock(&g_sim.mu);
            return rc;
        }
    }
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&g_sim.mu);
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

static CUresult primary_release(CUdevice dev)
{
    gp_ctx *c;
    CUresult rc = primary_of(dev, &c);
    if (rc)
        return rc;
    pthread_mutex_lock(&g_sim.mu);
    if (atomic_load(&c->refs) == 0) {
        pthread_mutex_unlock(&g_sim.mu);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        teardown(c);
    pthread_mutex_unlock(&g_sim.mu);
    return CUDA_SUCCESS;
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
    gp_ctx *c;
    CUresult rc = primary_of(dev, &c);
    if (rc)
        return rc;
    if (!flags_ok(flags))
        return CUDA_ERROR_INVALID_VALUE;
    if (!allow_active && atomic_load(&c->active))
        return CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE;
    c->flags = flags;
    return CUDA_SUCCESS;
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
    gp_ctx *c;
    CUresult rc = primary_of(dev, &c);
    if (rc)
        return rc;
    if (flags == NULL || active == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = c->flags;
    *active = atomic_load(&c->active);
    return CUDA_SUCCESS;
}

static CUresult primary_reset(CUdevice dev)
{
    gp_ctx *c;
    CUresult rc = primary_of(dev, &c);
    if (rc)
        return rc;
    pthread_mutex_lock(&g_sim.mu);
    if (atomic_load(&c->active))
        teardown(c);
    atomic_store(&c->refs, 0);
    c->flags = 0;
    pthread_mutex_unlock(&g_sim.mu);
    return CUDA_SUCCESS;
}

GP_API CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return primary_reset(dev);
}

GP_API CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    return primary_reset(dev);
}

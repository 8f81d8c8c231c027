/* launch.c - kernel launches and occupancy.
 *
 * A launch is validated as the driver validates it (grid and block limits, shared memory, parameters),
 * its arguments are copied (the caller may reuse them at once), and a kernel operation is enqueued on the
 * stream - or, on a capturing stream, becomes a kernel node (capture.c); graph kernel nodes are validated
 * and copied by the same code (gp_kernel_op) and run through the same executor path. On the executor thread,
 * gp_kernel_run calls the kernel's host implementation and its cost function; the modelled duration is
 * max(fixed ns, FLOPs / FP16 tensor rate, bytes / memory bandwidth).
 */
#include "sim/sim.h"

#include <stdlib.h>
#include <string.h>

/* ---- the kernel-side API (gpupool/sim_kernel.h) --------------------------------------------------- */

typedef struct launch_priv {
    gp_func *f;
} launch_priv;

static void *api_mem(const gp_sim_launch *l, unsigned long long dptr, size_t bytes)
{
    (void)l;
    return gp_mem_host((CUdeviceptr)dptr, bytes, NULL);
}

static void *api_global(const gp_sim_launch *l, const char *name, size_t *size)
{
    const launch_priv *p = l->sim_private;
    gp_module *m = p->f->mod;
    for (unsigned i = 0; i < m->nglobals; i++)
        if (strcmp(m->globals[i].name, name) == 0 && m->globals[i].a) {
            if (size)
                *size = m->globals[i].size;
            return m->globals[i].a->host;
        }
    return NULL;
}

static const gp_sim_api g_api = {GP_SIM_KERNEL_ABI, api_mem, api_global};

CUresult gp_kernel_run(gp_stream *s, gp_op *op, uint64_t *dur_ns, uint64_t *membusy_ns)
{
    gp_func *f = op->u.k.f;
    const gp_sim_kernel *k = f->k;
    uint8_t *args = op->u.k.argsize <= GP_OP_INLINE_ARGS ? op->u.k.inl : op->u.k.args;
    void *stackp[32];
    void **params = k->nparams <= 32 ? stackp : malloc(k->nparams * sizeof *params);
    if (params == NULL)
        return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    for (unsigned i = 0; i < k->nparams; i++)
        params[i] = args + f->offsets[i];
    launch_priv priv = {f};
    gp_sim_launch l = {
        .grid = {op->u.k.grid[0], op->u.k.grid[1], op->u.k.grid[2]},
        .block = {op->u.k.block[0], op->u.k.block[1], op->u.k.block[2]},
        .shared_mem_bytes = op->u.k.shmem,
        .nparams = k->nparams,
        .params = params,
        .device = s->ctx->dev,
        .api = &g_api,
        .sim_private = &priv,
    };
    int rc = k->run ? k->run(&l) : 0;
    gp_sim_cost cost = {0, 0, 0};
    if (rc == 0 && k->cost)
        k->cost(&l, &cost);
    if (params != stackp)
        free(params);
    if (rc != 0)
        return (CUresult)rc;
    const gp_model *m = gp_dev_model(s->ctx->dev);
    double t_flops = cost.flops > 0 ? cost.flops / (m->fp16_tflops * 1e12) * 1e9 : 0;
    double t_bytes = cost.bytes > 0 ? cost.bytes / (m->mem_bw_gbs * 1e9) * 1e9 : 0;
    double t = cost.ns > t_flops ? cost.ns : t_flops;
    if (t_bytes > t)
        t = t_bytes;
    *dur_ns = (uint64_t)t;
    *membusy_ns = (uint64_t)t_bytes;
    return CUDA_SUCCESS;
}

/* ---- validation and enqueue ----------------------------------------------------------------------- */

typedef struct launch_args {
    gp_func *f;
    unsigned grid[3], block[3], shmem;
    gp_stream *s; /* NULL for a graph node: its device is the function's */
    bool cooperative;
} launch_args;

static int blocks_per_sm(const gp_func *f, const gp_model *m, unsigned threads, size_t dyn_smem, CUdevice dev)
{
    int max_threads = 0, smem_sm = 0, max_blocks = 0, reserved = 0;
    cuDeviceGetAttribute(&max_threads, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, dev);
    cuDeviceGetAttribute(&smem_sm, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, dev);
    cuDeviceGetAttribute(&max_blocks, CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR, dev);
    cuDeviceGetAttribute(&reserved, CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, dev);
    (void)m;
    unsigned warps = (threads + 31) / 32;
    if (warps == 0)
        return 0;
    int by_threads = max_threads / (int)(warps * 32);
    size_t smem = f->k->static_shared + dyn_smem + (size_t)reserved;
    int by_smem = smem ? (int)((size_t)smem_sm / smem) : max_blocks;
    unsigned regs = f->k->num_regs ? f->k->num_regs : 32;
    int by_regs = (int)(65536 / (regs * warps * 32));
    int n = max_blocks;
    if (by_threads < n)
        n = by_threads;
    if (by_smem < n)
        n = by_smem;
    if (by_regs < n)
        n = by_regs;
    return n < 0 ? 0 : n;
}

static CUresult validate(launch_args *a)
{
    if (a->grid[0] == 0 || a->grid[1] == 0 || a->grid[2] == 0 || a->block[0] == 0 || a->block[1] == 0 ||
        a->block[2] == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (a->grid[0] > 2147483647u || a->grid[1] > 65535 || a->grid[2] > 65535)
        return CUDA_ERROR_INVALID_VALUE;
    if (a->block[0] > 1024 || a->block[1] > 1024 || a->block[2] > 64)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t threads = (uint64_t)a->block[0] * a->block[1] * a->block[2];
    unsigned max = a->f->k->max_threads ? a->f->k->max_threads : 1024;
    if (threads > max)
        return CUDA_ERROR_INVALID_VALUE;
    if (a->shmem > (unsigned)a->f->max_dynamic_shared)
        return CUDA_ERROR_INVALID_VALUE;
    if (a->cooperative) {
        int dev = a->s ? a->s->ctx->dev : a->f->mod->ctx->dev;
        const gp_model *m = gp_dev_model(dev);
        uint64_t total = (uint64_t)a->grid[0] * a->grid[1] * a->grid[2];
        int per_sm = blocks_per_sm(a->f, m, (unsigned)threads, a->shmem, dev);
        if (total > (uint64_t)per_sm * (uint64_t)m->sms)
            return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    }
    return CUDA_SUCCESS;
}

/* Copies the arguments into op, from kernelParams or from an `extra` packed buffer. */
static CUresult pack_args(gp_op *op, gp_func *f, void **kernelParams, void **extra)
{
    if (kernelParams && extra)
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t size = f->argsize;
    op->u.k.argsize = size;
    uint8_t *dst = op->u.k.inl;
    if (size > GP_OP_INLINE_ARGS) {
        dst = malloc(size);
        if (dst == NULL)
            return CUDA_ERROR_OUT_OF_MEMORY;
        op->u.k.args = dst;
    }
    const gp_sim_kernel *k = f->k;
    if (k->nparams == 0)
        return CUDA_SUCCESS;
    if (kernelParams) {
        for (unsigned i = 0; i < k->nparams; i++) {
            if (kernelParams[i] == NULL)
                goto bad;
            memcpy(dst + f->offsets[i], kernelParams[i], k->params[i].size);
        }
        return CUDA_SUCCESS;
    }
    if (extra) {
        const void *buf = NULL;
        size_t bufsize = 0;
        bool have_size = false;
        for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
                buf = extra[i + 1];
            } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
                if (extra[i + 1] == NULL)
                    goto bad;
                bufsize = *(size_t *)extra[i + 1];
                have_size = true;
            } else {
                goto bad;
            }
        }
        if (buf == NULL || !have_size || bufsize < size)
            goto bad;
        memcpy(dst, buf, size);
        return CUDA_SUCCESS;
    }
bad:
    if (size > GP_OP_INLINE_ARGS)
        free(op->u.k.args);
    return CUDA_ERROR_INVALID_VALUE;
}

static CUresult launch(launch_args *a, CUfunction hf, CUstream hs, bool pt, void **kernelParams, void **extra)
{
    gp_ctx *cur;
    CUresult rc = gp_ctx_current(&cur);
    if (rc)
        return rc;
    if (hf == NULL || gp_handle_type(hf) != GP_OBJ_FUNC)
        return CUDA_ERROR_INVALID_HANDLE;
    a->f = (gp_func *)hf;
    rc = gp_stream_resolve(hs, pt, cur, &a->s);
    if (rc)
        return rc;
    if (a->f->mod->ctx != a->s->ctx)
        return CUDA_ERROR_INVALID_HANDLE; /* the function was loaded in another context */
    rc = gp_ctx_sticky(a->s->ctx);
    if (rc)
        return rc;
    gp_op op;
    rc = gp_kernel_op(a->f, a->grid, a->block, a->shmem, a->cooperative, a->s, kernelParams, extra, &op);
    if (rc == CUDA_SUCCESS)
        rc = gp_capture_legacy(a->s);
    if (rc == CUDA_SUCCESS && gp_stream_capturing(a->s))
        return gp_capture_kernel(a->s, &op);
    if (rc) {
        gp_op_discard(&op);
        return rc;
    }
    gp_stream_enqueue(a->s, &op);
    return CUDA_SUCCESS;
}

CUresult gp_kernel_op(gp_func *f, const unsigned grid[3], const unsigned block[3], unsigned shmem,
                      bool cooperative, gp_stream *s, void **kernelParams, void **extra, gp_op *op)
{
    launch_args a = {.f = f, .shmem = shmem, .s = s, .cooperative = cooperative};
    memcpy(a.grid, grid, sizeof a.grid);
    memcpy(a.block, block, sizeof a.block);
    memset(op, 0, sizeof *op);
    CUresult rc = validate(&a);
    if (rc)
        return rc;
    op->kind = GP_OP_KERNEL;
    op->engine = GP_ENGINE_COMPUTE;
    op->u.k.f = f;
    memcpy(op->u.k.grid, grid, sizeof op->u.k.grid);
    memcpy(op->u.k.block, block, sizeof op->u.k.block);
    op->u.k.shmem = shmem;
    rc = pack_args(op, f, kernelParams, extra);
    if (rc)
        op->kind = GP_OP_NOP; /* pack_args freed what it took */
    return rc;
}

static CUresult launch_kernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                              unsigned bz, unsigned shmem, CUstream hs, void **kernelParams, void **extra,
                              bool pt, bool cooperative)
{
    launch_args a = {.grid = {gx, gy, gz}, .block = {bx, by, bz}, .shmem = shmem, .cooperative = cooperative};
    return launch(&a, f, hs, pt, kernelParams, extra);
}

GP_API CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                               unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                               unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                               void **kernelParams, void **extra)
{
    return launch_kernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                         hStream, kernelParams, extra, false, false);
}

GP_API CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                    unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                    unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                    void **kernelParams, void **extra)
{
    return launch_kernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                         hStream, kernelParams, extra, true, false);
}

GP_API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                          unsigned int gridDimZ, unsigned int blockDimX,
                                          unsigned int blockDimY, unsigned int blockDimZ,
                                          unsigned int sharedMemBytes, CUstream hStream, void **kernelParams)
{
    return launch_kernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                         hStream, kernelParams, NULL, false, true);
}

GP_API CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                               unsigned int gridDimZ, unsigned int blockDimX,
                                               unsigned int blockDimY, unsigned int blockDimZ,
                                               unsigned int sharedMemBytes, CUstream hStream,
                                               void **kernelParams)
{
    return launch_kernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                         hStream, kernelParams, NULL, true, true);
}

static CUresult launch_ex(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra,
                          bool pt)
{
    GP_INIT_OR_RETURN();
    if (config == NULL || (config->numAttrs > 0 && config->attrs == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    launch_args a = {.grid = {config->gridDimX, config->gridDimY, config->gridDimZ},
                     .block = {config->blockDimX, config->blockDimY, config->blockDimZ},
                     .shmem = config->sharedMemBytes};
    CUevent after[2];
    int nafter = 0;
    for (unsigned i = 0; i < config->numAttrs; i++) {
        const CUlaunchAttribute *at = &config->attrs[i];
        switch (at->id) {
        case CU_LAUNCH_ATTRIBUTE_IGNORE: break;
        case CU_LAUNCH_ATTRIBUTE_COOPERATIVE: a.cooperative = at->value.cooperative != 0; break;
        case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: {
            unsigned x = at->value.clusterDim.x, y = at->value.clusterDim.y, z = at->value.clusterDim.z;
            if (x == 0 || y == 0 || z == 0 || a.grid[0] % x || a.grid[1] % y || a.grid[2] % z)
                return CUDA_ERROR_INVALID_VALUE;
            break;
        }
        case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT:
        case CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT:
            /* Both fire no earlier than the kernel's blocks start; recording them after the kernel keeps
             * every ordering a program may rely on. */
            if (at->value.programmaticEvent.event == NULL)
                return CUDA_ERROR_INVALID_VALUE;
            after[nafter < 2 ? nafter++ : 1] = at->value.programmaticEvent.event;
            break;
        case CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE:
            GP_NOT_SUPPORTED("cuLaunchKernelEx with CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE");
        case CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW:
        case CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY:
        case CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
        case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
        case CU_LAUNCH_ATTRIBUTE_PRIORITY:
        case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
        case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN:
        case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:
        case CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
        case CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING:
            break; /* performance hints: they change nothing a program can observe */
        default: return CUDA_ERROR_INVALID_VALUE;
        }
    }
    CUresult rc = launch(&a, f, config->hStream, pt, kernelParams, extra);
    for (int i = 0; rc == CUDA_SUCCESS && i < nafter; i++)
        rc = pt ? cuEventRecord_ptsz(after[i], config->hStream) : cuEventRecord(after[i], config->hStream);
    return rc;
}

GP_API CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                 void **extra)
{
    return launch_ex(config, f, kernelParams, extra, false);
}

GP_API CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                      void **extra)
{
    return launch_ex(config, f, kernelParams, extra, true);
}

/* ---- occupancy ------------------------------------------------------------------------------------ */

GP_API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func, int blockSize,
                                                            size_t dynamicSMemSize)
{
    GP_INIT_OR_RETURN();
    if (func == NULL || gp_handle_type(func) != GP_OBJ_FUNC)
        return CUDA_ERROR_INVALID_HANDLE;
    if (numBlocks == NULL || blockSize <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    gp_func *f = (gp_func *)func;
    CUdevice dev = f->mod->ctx->dev;
    *numBlocks = blocks_per_sm(f, gp_dev_model(dev), (unsigned)blockSize, dynamicSMemSize, dev);
    return CUDA_SUCCESS;
}

GP_API CUresult cuOccupancyMaxPotentialBlockSize(int *minGridSize, int *blockSize, CUfunction func,
                                                 CUoccupancyB2DSize blockSizeToDynamicSMemSize,
                                                 size_t dynamicSMemSize, int blockSizeLimit)
{
    GP_INIT_OR_RETURN();
    if (func == NULL || gp_handle_type(func) != GP_OBJ_FUNC)
        return CUDA_ERROR_INVALID_HANDLE;
    if (minGridSize == NULL || blockSize == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_func *f = (gp_func *)func;
    CUdevice dev = f->mod->ctx->dev;
    const gp_model *m = gp_dev_model(dev);
    int limit = f->k->max_threads ? (int)f->k->max_threads : 1024;
    if (blockSizeLimit > 0 && blockSizeLimit < limit)
        limit = blockSizeLimit;
    int best_block = 0, best_threads = -1;
    for (int b = limit / 32 * 32; b >= 32; b -= 32) {
        size_t smem = blockSizeToDynamicSMemSize ? blockSizeToDynamicSMemSize(b) : dynamicSMemSize;
        int n = blocks_per_sm(f, m, (unsigned)b, smem, dev);
        if (n * b > best_threads) {
            best_threads = n * b;
            best_block = b;
        }
    }
    if (best_block == 0)
        best_block = limit;
    size_t smem = blockSizeToDynamicSMemSize ? blockSizeToDynamicSMemSize(best_block) : dynamicSMemSize;
    *blockSize = best_block;
    *minGridSize = blocks_per_sm(f, m, (unsigned)best_block, smem, dev) * m->sms;
    return CUDA_SUCCESS;
}

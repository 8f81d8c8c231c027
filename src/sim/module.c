/* module.c - modules and functions of the simulated GPU.
 *
 * A module image runs on the simulation when it names a shared object of host implementations
 * (gpupool/sim_kernel.h: a line "gpupool-sim-module: <library>", a comment in PTX). The library's
 * descriptor gives each kernel's name, parameter sizes, cost function and code; the module gets one
 * function per kernel and device memory for each declared global. Images without that line get the
 * error NVIDIA's driver gives when it cannot use an image: PTX needs a JIT compiler the simulation
 * lacks (CUDA_ERROR_JIT_COMPILER_NOT_FOUND), cubins and fatbins hold no code for this "GPU"
 * (CUDA_ERROR_NO_BINARY_FOR_GPU), anything else is not an image (CUDA_ERROR_INVALID_IMAGE).
 */
#include "sim/image.h"
#include "sim/sim.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void *open_library(const char *name, char *why, size_t whylen)
{
    void *h = NULL;
    if (strchr(name, '/') == NULL) {
        const char *path = getenv("GPUPOOL_SIM_KERNEL_PATH");
        if (path && *path) {
            char dirs[4096];
            snprintf(dirs, sizeof dirs, "%s", path);
            char *save = NULL;
            for (char *d = strtok_r(dirs, ":", &save); d && !h; d = strtok_r(NULL, ":", &save)) {
                char full[4096];
                snprintf(full, sizeof full, "%s/%s", d, name);
                struct stat st;
                if (stat(full, &st) == 0)
                    h = dlopen(full, RTLD_NOW | RTLD_LOCAL);
            }
        }
    }
    if (!h)
        h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, whylen, "%s", e ? e : "not found");
    }
    return h;
}

static void module_free(gp_module *m)
{
    for (unsigned i = 0; i < m->nfuncs; i++) {
        gp_handle_del(&m->funcs[i]);
        free(m->funcs[i].offsets);
    }
    for (unsigned i = 0; i < m->nglobals; i++)
        if (m->globals[i].a)
            gp_mem_free_alloc(m->globals[i].a);
    free(m->funcs);
    free(m->globals);
    if (m->dl)
        dlclose(m->dl);
    free(m);
}

static CUresult build_module(gp_ctx *c, void *dl, const gp_sim_module *desc, gp_module **out)
{
    gp_module *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->ctx = c;
    m->dl = dl;
    m->desc = desc;
    m->funcs = calloc(desc->nkernels ? desc->nkernels : 1, sizeof *m->funcs);
    m->globals = calloc(desc->nglobals ? desc->nglobals : 1, sizeof *m->globals);
    if (!m->funcs || !m->globals) {
        module_free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (unsigned i = 0; i < desc->nkernels; i++) {
        const gp_sim_kernel *k = &desc->kernels[i];
        gp_func *f = &m->funcs[i];
        f->mod = m;
        f->k = k;
        f->carveout = -1;
        f->cache = CU_FUNC_CACHE_PREFER_NONE;
        f->max_dynamic_shared = (int)(49152 - (k->static_shared < 49152 ? k->static_shared : 49152));
        f->offsets = calloc(k->nparams ? k->nparams : 1, sizeof *f->offsets);
        if (f->offsets == NULL) {
            m->nfuncs = i;
            module_free(m);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        uint32_t off = 0;
        for (unsigned p = 0; p < k->nparams; p++) {
            unsigned al = k->params[p].align ? k->params[p].align : 1;
            off = (off + al - 1) / al * al;
            f->offsets[p] = off;
            off += k->params[p].size;
        }
        f->argsize = off;
        m->nfuncs = i + 1;
    }
    for (unsigned i = 0; i < desc->nglobals; i++) {
        const gp_sim_global *g = &desc->globals[i];
        m->globals[i].name = g->name;
        m->globals[i].size = g->size;
        if (g->size) {
            CUresult rc = gp_mem_alloc_device(c, c->dev, g->size, 0, &m->globals[i].a);
            if (rc) {
                m->nglobals = i;
                module_free(m);
                return rc;
            }
            if (g->init)
                memcpy(m->globals[i].a->host, g->init, g->size);
            else
                memset(m->globals[i].a->host, 0, g->size);
        }
        m->nglobals = i + 1;
    }
    pthread_mutex_lock(&c->mu);
    int pushed = gp_ptrvec_push(&c->modules, m);
    pthread_mutex_unlock(&c->mu);
    if (pushed < 0) {
        module_free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (unsigned i = 0; i < m->nfuncs; i++)
        gp_handle_add(&m->funcs[i], GP_OBJ_FUNC);
    gp_handle_add(m, GP_OBJ_MODULE);
    *out = m;
    return CUDA_SUCCESS;
}

static CUresult load_image(gp_ctx *c, const void *image, size_t len_hint, gp_module **out)
{
    /* cuModuleLoadData's image is NUL-terminated text, or a binary whose header has no NUL in its magic */
    size_t len = len_hint ? len_hint : strnlen(image, 16u << 20) + 1;
    char lib[1024];
    switch (gp_sim_image_classify(image, len, lib, sizeof lib)) {
    case GP_IMAGE_SIM: break;
    case GP_IMAGE_BINARY:
        gp_log_once(GP_LOG_WARN, GP_LOG_SIM,
                    "a cubin or fatbin cannot run on the simulated GPU: give the module host implementations "
                    "(docs/sim.md); returning CUDA_ERROR_NO_BINARY_FOR_GPU");
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    case GP_IMAGE_PTX:
        gp_log(GP_LOG_WARN, GP_LOG_SIM,
               "PTX without a \"%s\" line: the simulated GPU has no PTX compiler (returning "
               "CUDA_ERROR_JIT_COMPILER_NOT_FOUND; see docs/sim.md)",
               GP_SIM_MODULE_DIRECTIVE);
        return CUDA_ERROR_JIT_COMPILER_NOT_FOUND;
    case GP_IMAGE_UNKNOWN: return CUDA_ERROR_INVALID_IMAGE;
    }
    char why[512];
    void *dl = open_library(lib, why, sizeof why);
    if (dl == NULL) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM,
               "simulated module library %s: %s (set GPUPOOL_SIM_KERNEL_PATH to its "
               "folder)",
               lib, why);
        return CUDA_ERROR_SHARED_OBJECT_INIT_FAILED;
    }
    gp_sim_module_fn fn = (gp_sim_module_fn)dlsym(dl, GP_SIM_MODULE_SYMBOL);
    const gp_sim_module *desc = fn ? fn() : NULL;
    if (desc == NULL || desc->abi != GP_SIM_KERNEL_ABI) {
        gp_log(GP_LOG_ERROR, GP_LOG_SIM, "simulated module library %s: %s", lib,
               fn ? "its descriptor has another ABI version" : "it does not export " GP_SIM_MODULE_SYMBOL);
        dlclose(dl);
        return CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND;
    }
    CUresult rc = build_module(c, dl, desc, out);
    if (rc)
        dlclose(dl);
    return rc;
}

static CUresult load_data(CUmodule *module, const void *image)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (module == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    gp_module *m;
    rc = load_image(c, image, 0, &m);
    if (rc == CUDA_SUCCESS)
        *module = (CUmodule)m;
    return rc;
}

GP_API CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    return load_data(module, image);
}

GP_API CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin)
{
    return load_data(module, fatCubin);
}

GP_API CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions,
                                   CUjit_option *options, void **optionValues)
{
    GP_INIT_OR_RETURN();
    if (numOptions > 0 && (options == NULL || optionValues == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = load_data(module, image);
    /* JIT options only tune compilation, which the simulation does not do; report empty logs. */
    for (unsigned i = 0; i < numOptions; i++) {
        if ((options[i] == CU_JIT_INFO_LOG_BUFFER || options[i] == CU_JIT_ERROR_LOG_BUFFER) &&
            optionValues[i])
            *(char *)optionValues[i] = '\0';
        if (options[i] == CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES ||
            options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
            optionValues[i] = (void *)(uintptr_t)0;
        if (options[i] == CU_JIT_WALL_TIME)
            *(float *)&optionValues[i] = 0.0f;
    }
    return rc;
}

GP_API CUresult cuModuleLoad(CUmodule *module, const char *fname)
{
    gp_ctx *c;
    CUresult rc = gp_ctx_current(&c);
    if (rc)
        return rc;
    if (module == NULL || fname == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    FILE *f = fopen(fname, "rb");
    if (f == NULL)
        return CUDA_ERROR_FILE_NOT_FOUND;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *nb = cap < (64u << 20) ? realloc(buf, 2 * cap + 1) : NULL;
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    buf[len] = '\0';
    if (len < 4) {
        free(buf);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    gp_module *m;
    rc = load_image(c, buf, len, &m);
    free(buf);
    if (rc == CUDA_SUCCESS)
        *module = (CUmodule)m;
    return rc;
}

static CUresult module_of(CUmodule h, gp_module **out)
{
    GP_INIT_OR_RETURN();
    if (h == NULL || gp_handle_type(h) != GP_OBJ_MODULE)
        return CUDA_ERROR_INVALID_HANDLE;
    *out = (gp_module *)h;
    return CUDA_SUCCESS;
}

GP_API CUresult cuModuleUnload(CUmodule hmod)
{
    gp_module *m;
    CUresult rc = module_of(hmod, &m);
    if (rc)
        return rc;
    gp_handle_del(m);
    gp_graph_forget_module(m); /* graphs using its kernels can no longer run */
    /* The module's code must not be unmapped under a running kernel. */
    gp_ctx_synchronize(m->ctx);
    pthread_mutex_lock(&m->ctx->mu);
    gp_ptrvec_remove(&m->ctx->modules, m);
    pthread_mutex_unlock(&m->ctx->mu);
    module_free(m);
    return CUDA_SUCCESS;
}

void gp_module_forget_ctx(gp_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->modules.n) {
        gp_module *m = c->modules.v[--c->modules.n];
        gp_handle_del(m);
        gp_graph_forget_module(m);
        module_free(m);
    }
    gp_ptrvec_free(&c->modules);
    pthread_mutex_unlock(&c->mu);
}

GP_API CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    gp_module *m;
    CUresult rc = module_of(hmod, &m);
    if (rc)
        return rc;
    if (hfunc == NULL || name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < m->nfuncs; i++)
        if (strcmp(m->funcs[i].k->name, name) == 0) {
            *hfunc = (CUfunction)&m->funcs[i];
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

GP_API CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod, const char *name)
{
    gp_module *m;
    CUresult rc = module_of(hmod, &m);
    if (rc)
        return rc;
    if (name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < m->nglobals; i++)
        if (strcmp(m->globals[i].name, name) == 0) {
            if (dptr)
                *dptr = m->globals[i].a ? m->globals[i].a->base : 0;
            if (bytes)
                *bytes = m->globals[i].size;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

GP_API CUresult cuModuleGetFunctionCount(unsigned int *count, CUmodule mod)
{
    gp_module *m;
    CUresult rc = module_of(mod, &m);
    if (rc)
        return rc;
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = m->nfuncs;
    return CUDA_SUCCESS;
}

GP_API CUresult cuModuleEnumerateFunctions(CUfunction *functions, unsigned int numFunctions, CUmodule mod)
{
    gp_module *m;
    CUresult rc = module_of(mod, &m);
    if (rc)
        return rc;
    if (functions == NULL || numFunctions == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < numFunctions && i < m->nfuncs; i++)
        functions[i] = (CUfunction)&m->funcs[i];
    return CUDA_SUCCESS;
}

/* ---- functions ------------------------------------------------------------------------------------ */

static CUresult func_of(CUfunction h, gp_func **out)
{
    GP_INIT_OR_RETURN();
    if (h == NULL || gp_handle_type(h) != GP_OBJ_FUNC)
        return CUDA_ERROR_INVALID_HANDLE;
    *out = (gp_func *)h;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
{
    gp_func *f;
    CUresult rc = func_of(hfunc, &f);
    if (rc)
        return rc;
    if (pi == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const gp_model *m = gp_dev_model(f->mod->ctx->dev);
    switch (attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
        *pi = f->k->max_threads ? (int)f->k->max_threads : 1024;
        break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = (int)f->k->static_shared; break;
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = f->k->num_regs ? (int)f->k->num_regs : 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: *pi = m->cc_major * 10 + m->cc_minor; break;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = m->cc_major * 10 + m->cc_minor; break;
    case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = f->max_dynamic_shared; break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *pi = f->carveout; break;
    case CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
    case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE: *pi = 0; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
{
    gp_func *f;
    CUresult rc = func_of(hfunc, &f);
    if (rc)
        return rc;
    switch (attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: {
        int optin = 0;
        cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, f->mod->ctx->dev);
        if (value < 0 || value + (int)f->k->static_shared > optin)
            return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_shared = value;
        return CUDA_SUCCESS;
    }
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
        if (value < -1 || value > 100)
            return CUDA_ERROR_INVALID_VALUE;
        f->carveout = value;
        return CUDA_SUCCESS;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

GP_API CUresult cuFuncSetCacheConfig(CUfunction hfunc, CUfunc_cache config)
{
    gp_func *f;
    CUresult rc = func_of(hfunc, &f);
    if (rc)
        return rc;
    if ((int)config < CU_FUNC_CACHE_PREFER_NONE || (int)config > CU_FUNC_CACHE_PREFER_EQUAL)
        return CUDA_ERROR_INVALID_VALUE;
    f->cache = config;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetName(const char **name, CUfunction hfunc)
{
    gp_func *f;
    CUresult rc = func_of(hfunc, &f);
    if (rc)
        return rc;
    if (name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *name = f->k->name;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset, size_t *paramSize)
{
    gp_func *f;
    CUresult rc = func_of(func, &f);
    if (rc)
        return rc;
    if (paramIndex >= f->k->nparams || (paramOffset == NULL && paramSize == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    if (paramOffset)
        *paramOffset = f->offsets[paramIndex];
    if (paramSize)
        *paramSize = f->k->params[paramIndex].size;
    return CUDA_SUCCESS;
}

GP_API CUresult cuFuncGetModule(CUmodule *hmod, CUfunction hfunc)
{
    gp_func *f;
    CUresult rc = func_of(hfunc, &f);
    if (rc)
        return rc;
    if (hmod == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *hmod = (CUmodule)f->mod;
    return CUDA_SUCCESS;
}

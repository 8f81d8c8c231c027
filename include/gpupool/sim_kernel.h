/* sim_kernel.h - contract between the simulated GPU and the host implementations of simulated kernels.
 *
 * The simulated GPU (libcuda.so.1 from src/sim) cannot run GPU machine code. A module image given to
 * cuModuleLoad/cuModuleLoadData (or cuLibraryLoad*) names a shared object that implements its kernels in C,
 * with a line anywhere in the image of the form
 *
 *     gpupool-sim-module: libmykernels.so
 *
 * Inside a PTX file this is a comment (`// gpupool-sim-module: libmykernels.so`), so one image runs on a real
 * GPU (which JIT-compiles the PTX) and on the simulation (which loads the library). A relative name is looked
 * up in the colon-separated folders of GPUPOOL_SIM_KERNEL_PATH, then by dlopen's usual search.
 *
 * The library exports `gp_sim_module_v1`, returning a static gp_sim_module. For each launch the simulation
 * copies the arguments (as sized by the kernel's parameter list), runs `run` once (it loops over the grid
 * itself) in stream order on a device thread, and charges the device `cost`: the launch occupies the device
 * for max(ns, flops / device FLOP/s, bytes / device bandwidth) plus the model's launch overhead. See
 * docs/sim.md.
 */
#ifndef GPUPOOL_SIM_KERNEL_H
#define GPUPOOL_SIM_KERNEL_H

#include <stddef.h>

#define GP_SIM_KERNEL_ABI       1
#define GP_SIM_MODULE_SYMBOL    "gp_sim_module_v1"
#define GP_SIM_MODULE_DIRECTIVE "gpupool-sim-module:"

struct gp_sim_api;

typedef struct gp_sim_launch {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_mem_bytes;
    unsigned nparams;
    void *const *params; /* params[i] points at the i-th argument's value, as cuLaunchKernel's kernelParams */
    int device;          /* device ordinal the launch runs on */
    const struct gp_sim_api *api;
    void *sim_private; /* owned by the simulation; do not touch */
} gp_sim_launch;

typedef struct gp_sim_cost {
    double flops; /* floating-point operations the launch performs (FP16 tensor rate applies) */
    double bytes; /* device-memory bytes it reads plus writes */
    double ns;    /* a fixed duration, for kernels whose time is their point (spin loops) */
} gp_sim_cost;

typedef struct gp_sim_api {
    unsigned abi; /* GP_SIM_KERNEL_ABI */
    /* Host address of `bytes` of device memory at `dptr`, or NULL if any of it is outside an allocation the
     * launch's context can reach; the kernel then returns CUDA_ERROR_ILLEGAL_ADDRESS (700). */
    void *(*mem)(const gp_sim_launch *launch, unsigned long long dptr, size_t bytes);
    /* Host address and size of a module global (see gp_sim_global), or NULL. */
    void *(*global)(const gp_sim_launch *launch, const char *name, size_t *size);
} gp_sim_api;

/* Returns 0 (CUDA_SUCCESS) or the CUresult the launch fails with: 700 CUDA_ERROR_ILLEGAL_ADDRESS,
 * 710 CUDA_ERROR_ASSERT, 719 CUDA_ERROR_LAUNCH_FAILED. A failure is sticky for the context, as on a GPU. */
typedef int (*gp_sim_kernel_fn)(const gp_sim_launch *launch);
typedef void (*gp_sim_cost_fn)(const gp_sim_launch *launch, gp_sim_cost *cost);

typedef struct gp_sim_param {
    unsigned size;  /* bytes */
    unsigned align; /* alignment in the packed parameter buffer (1, 2, 4, 8 or 16) */
} gp_sim_param;

typedef struct gp_sim_kernel {
    const char *name; /* the name cuModuleGetFunction looks up (the mangled name, for C++ kernels) */
    gp_sim_kernel_fn run;
    gp_sim_cost_fn cost; /* NULL: only the launch overhead */
    unsigned nparams;
    const gp_sim_param *params;
    unsigned num_regs;      /* reported by cuFuncGetAttribute(NUM_REGS) */
    unsigned static_shared; /* bytes of static shared memory */
    unsigned max_threads;   /* largest block the kernel accepts; 0: the device's limit */
} gp_sim_kernel;

typedef struct gp_sim_global {
    const char *name;
    size_t size;
    const void *init; /* initial bytes, or NULL for zeros */
} gp_sim_global;

typedef struct gp_sim_module {
    unsigned abi; /* GP_SIM_KERNEL_ABI */
    unsigned nkernels;
    const gp_sim_kernel *kernels;
    unsigned nglobals;
    const gp_sim_global *globals;
} gp_sim_module;

typedef const gp_sim_module *(*gp_sim_module_fn)(void);

#endif

/* sample_kernels.c - host implementations of sample.ptx for the simulated GPU (gpupool/sim_kernel.h).
 *
 * Each kernel does what its PTX twin does, over the whole grid, and states its cost: bytes moved for the
 * memory-bound ones, FLOPs for burn, a fixed duration for spin_ns. An address outside every allocation
 * makes the launch fail with CUDA_ERROR_ILLEGAL_ADDRESS (700), as the GPU would.
 */
#include <stdint.h>
#include <string.h>

#include "gpupool/sim_kernel.h"

#define ILLEGAL_ADDRESS 700

static uint64_t threads(const gp_sim_launch *l)
{
    return (uint64_t)l->grid[0] * l->grid[1] * l->grid[2] * l->block[0] * l->block[1] * l->block[2];
}

/* Elements the launch touches: one per thread of a 1D grid, capped by n. */
static uint64_t covered(const gp_sim_launch *l, uint64_t n)
{
    uint64_t t = (uint64_t)l->grid[0] * l->block[0];
    return t < n ? t : n;
}

#define ARG(l, i, type) (*(const type *)(l)->params[i])

static int vec_add(const gp_sim_launch *l)
{
    uint64_t n = covered(l, ARG(l, 3, uint32_t));
    if (n == 0)
        return 0;
    const float *a = l->api->mem(l, ARG(l, 0, uint64_t), n * 4);
    const float *b = l->api->mem(l, ARG(l, 1, uint64_t), n * 4);
    float *c = l->api->mem(l, ARG(l, 2, uint64_t), n * 4);
    if (!a || !b || !c)
        return ILLEGAL_ADDRESS;
    for (uint64_t i = 0; i < n; i++)
        c[i] = a[i] + b[i];
    return 0;
}

static void vec_add_cost(const gp_sim_launch *l, gp_sim_cost *c)
{
    c->bytes = 12.0 * (double)covered(l, ARG(l, 3, uint32_t));
    c->flops = c->bytes / 12.0;
}

static int fill_u32(const gp_sim_launch *l)
{
    uint64_t n = covered(l, ARG(l, 2, uint64_t));
    if (n == 0)
        return 0;
    uint32_t *p = l->api->mem(l, ARG(l, 0, uint64_t), n * 4);
    if (!p)
        return ILLEGAL_ADDRESS;
    uint32_t v = ARG(l, 1, uint32_t);
    for (uint64_t i = 0; i < n; i++)
        p[i] = v;
    return 0;
}

static void fill_u32_cost(const gp_sim_launch *l, gp_sim_cost *c)
{
    c->bytes = 4.0 * (double)covered(l, ARG(l, 2, uint64_t));
}

static int add_one_u32(const gp_sim_launch *l)
{
    uint64_t n = covered(l, ARG(l, 1, uint32_t));
    if (n == 0)
        return 0;
    uint32_t *p = l->api->mem(l, ARG(l, 0, uint64_t), n * 4);
    if (!p)
        return ILLEGAL_ADDRESS;
    for (uint64_t i = 0; i < n; i++)
        p[i] += 1;
    return 0;
}

static void add_one_u32_cost(const gp_sim_launch *l, gp_sim_cost *c)
{
    c->bytes = 8.0 * (double)covered(l, ARG(l, 1, uint32_t));
}

static int spin_ns(const gp_sim_launch *l)
{
    (void)l;
    return 0;
}

static void spin_ns_cost(const gp_sim_launch *l, gp_sim_cost *c)
{
    c->ns = (double)ARG(l, 0, uint64_t);
}

static int burn(const gp_sim_launch *l)
{
    uint64_t n = threads(l);
    float *out = l->api->mem(l, ARG(l, 0, uint64_t), n * 4);
    if (!out)
        return ILLEGAL_ADDRESS;
    /* The real kernel's result is of no interest to anyone; what matters is the time it takes. */
    for (uint64_t i = 0; i < n; i++)
        out[i] = (float)i;
    return 0;
}

static void burn_cost(const gp_sim_launch *l, gp_sim_cost *c)
{
    c->flops = 2.0 * (double)threads(l) * (double)ARG(l, 1, uint64_t);
    c->bytes = 4.0 * (double)threads(l);
}

static int store_u32(const gp_sim_launch *l)
{
    uint32_t *p = l->api->mem(l, ARG(l, 0, uint64_t), 4);
    if (!p)
        return ILLEGAL_ADDRESS;
    *p = ARG(l, 1, uint32_t);
    return 0;
}

static int mixed(const gp_sim_launch *l)
{
    uint64_t *out = l->api->mem(l, ARG(l, 0, uint64_t), 8);
    if (!out)
        return ILLEGAL_ADDRESS;
    *out = ARG(l, 1, uint8_t) + ARG(l, 2, uint64_t) + ARG(l, 3, uint32_t) + (uint64_t)ARG(l, 4, double) +
           ARG(l, 5, uint16_t);
    return 0;
}

static int incr_counter(const gp_sim_launch *l)
{
    size_t size = 0;
    uint32_t *c = l->api->global(l, "counter", &size);
    if (!c || size != 4)
        return ILLEGAL_ADDRESS;
    *c += 1;
    return 0;
}

/* Parameter descriptors: {size, alignment}. Macros, since C does not allow a const object in an initializer.
 */
#define P_PTR \
    {         \
        8, 8  \
    }
#define P_U64 \
    {         \
        8, 8  \
    }
#define P_F64 \
    {         \
        8, 8  \
    }
#define P_U32 \
    {         \
        4, 4  \
    }
#define P_U16 \
    {         \
        2, 2  \
    }
#define P_U8 \
    {        \
        1, 1 \
    }
static const gp_sim_param vec_add_p[] = {P_PTR, P_PTR, P_PTR, P_U32};
static const gp_sim_param fill_p[] = {P_PTR, P_U32, P_U64};
static const gp_sim_param add_one_p[] = {P_PTR, P_U32};
static const gp_sim_param spin_p[] = {P_U64};
static const gp_sim_param burn_p[] = {P_PTR, P_U64};
static const gp_sim_param store_p[] = {P_PTR, P_U32};
static const gp_sim_param mixed_p[] = {P_PTR, P_U8, P_U64, P_U32, P_F64, P_U16};

static const gp_sim_kernel kernels[] = {
    {"vec_add", vec_add, vec_add_cost, 4, vec_add_p, 10, 0, 0},
    {"fill_u32", fill_u32, fill_u32_cost, 3, fill_p, 8, 0, 0},
    {"add_one_u32", add_one_u32, add_one_u32_cost, 2, add_one_p, 8, 0, 0},
    {"spin_ns", spin_ns, spin_ns_cost, 1, spin_p, 6, 0, 0},
    {"burn", burn, burn_cost, 2, burn_p, 10, 0, 0},
    {"store_u32", store_u32, NULL, 2, store_p, 6, 0, 0},
    {"mixed", mixed, NULL, 6, mixed_p, 12, 0, 0},
    {"incr_counter", incr_counter, NULL, 0, NULL, 6, 0, 0},
};

static const uint32_t counter_init = 0;
static const gp_sim_global globals[] = {{"counter", 4, &counter_init}};

static const gp_sim_module module = {GP_SIM_KERNEL_ABI, sizeof kernels / sizeof kernels[0], kernels, 1,
                                     globals};

__attribute__((visibility("default"))) const gp_sim_module *gp_sim_module_v1(void);
__attribute__((visibility("default"))) const gp_sim_module *gp_sim_module_v1(void)
{
    return &module;
}

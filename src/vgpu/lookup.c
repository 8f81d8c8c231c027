/* lookup.c - the other ways a program reaches the driver: cuGetProcAddress, and dlsym on libcuda or NVML.
 *
 * The CUDA runtime dlopens libcuda.so.1, looks up cuGetProcAddress with dlsym, and gets every other entry
 * point through it, per CUDA version and per-thread-stream flavour. Both doors lead here: dlsym of a name
 * this library replaces returns the replacement, and cuGetProcAddress maps the real function it would
 * return (whatever version or _ptsz variant that is) to this library's replacement of that same function.
 * dlsym(RTLD_NEXT, ...) keeps its meaning: the next definition after the caller's object, not after ours.
 */
#include "vgpu/vgpu.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

typedef struct wrap_entry {
    const char *name;
    void *wrapper;
    void **real; /* where vg_init stores the real pointer */
} wrap_entry;

static const wrap_entry g_wraps[] = {
#define VG_WRAP_ENTRY(n) {#n, (void *)n, (void **)&g_vg.real.n},
    VG_CUDA_WRAPPED(VG_WRAP_ENTRY) VG_NVML_WRAPPED(VG_WRAP_ENTRY)
#undef VG_WRAP_ENTRY
};

#define NWRAPS (sizeof g_wraps / sizeof g_wraps[0])

void *vg_wrapper_for(void *real)
{
    if (real == NULL)
        return NULL;
    for (size_t i = 0; i < NWRAPS; i++)
        if (*g_wraps[i].real == real)
            return g_wraps[i].wrapper;
    return NULL;
}

static void *wrapper_named(const char *name)
{
    if (name == NULL || !((name[0] == 'c' && name[1] == 'u') || strncmp(name, "nvml", 4) == 0))
        return NULL;
    for (size_t i = 0; i < NWRAPS; i++)
        if (strcmp(g_wraps[i].name, name) == 0)
            return g_wraps[i].wrapper;
    return NULL;
}

static CUresult map_proc(CUresult rc, void **pfn)
{
    if (rc == CUDA_SUCCESS && pfn && *pfn) {
        void *w = vg_wrapper_for(*pfn);
        if (w)
            *pfn = w;
    }
    return rc;
}

VG_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    vg_init(); /* the table of real pointers; works in every mode, so nothing slips past a refusal */
    return map_proc(REAL(cuGetProcAddress)(symbol, pfn, cudaVersion, flags), pfn);
}

VG_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *symbolStatus)
{
    vg_init();
    return map_proc(REAL(cuGetProcAddress_v2)(symbol, pfn, cudaVersion, flags, symbolStatus), pfn);
}

/* ---- dlsym ---------------------------------------------------------------------------------------- */

typedef void *(*dlsym_fn)(void *, const char *);
static dlsym_fn g_real_dlsym;
static pthread_once_t g_dlsym_once = PTHREAD_ONCE_INIT;

static void find_real_dlsym(void)
{
    g_real_dlsym = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (g_real_dlsym == NULL)
        g_real_dlsym = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
}

void *vg_real_dlsym(void *handle, const char *name);
void *vg_real_dlsym(void *handle, const char *name)
{
    pthread_once(&g_dlsym_once, find_real_dlsym);
    return g_real_dlsym ? g_real_dlsym(handle, name) : NULL;
}

static struct link_map *map_of(const void *addr)
{
    Dl_info info;
    struct link_map *m = NULL;
    if (!dladdr1(addr, &info, (void **)&m, RTLD_DL_LINKMAP))
        return NULL;
    return m;
}

/* RTLD_NEXT as the caller meant it: the first definition in an object loaded after the caller's.
 *
 * A caller loaded before this library (the program itself: sanitizer runtimes look their interceptees up
 * this way while they start, before dlopen may be called) gets the real lookup from here, which is the same
 * answer but for the names this library replaces, which it returns anyway. A caller loaded after it (an
 * interposer of malloc, say) must not be handed its own definition back: each later object is searched in
 * turn, through a handle from dlopen(RTLD_NOLOAD), keeping only a definition the object itself holds. */
static void *next_after(const void *caller, const char *name)
{
    struct link_map *self = map_of((const void *)next_after), *who = map_of(caller);
    bool after_us = false;
    for (struct link_map *m = self ? self->l_next : NULL; m && who; m = m->l_next)
        if (m == who)
            after_us = true;
    if (!after_us)
        return vg_real_dlsym(RTLD_NEXT, name);
    for (struct link_map *m = who->l_next; m; m = m->l_next) {
        if (m->l_name == NULL || m->l_name[0] == '\0' || strncmp(m->l_name, "linux-vdso", 10) == 0)
            continue; /* the program itself is never "next"; the vDSO is nothing to search */
        void *h = dlopen(m->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (h == NULL)
            continue;
        void *p = vg_real_dlsym(h, name);
        dlclose(h);
        if (p && map_of(p) == m)
            return p;
    }
    return NULL;
}

VG_API void *dlsym(void *handle, const char *name)
{
    void *p =
        handle == RTLD_NEXT ? next_after(__builtin_return_address(0), name) : vg_real_dlsym(handle, name);
    if (p != NULL) {
        void *w = wrapper_named(name);
        if (w)
            return w;
    }
    return p;
}

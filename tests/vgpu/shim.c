/* shim.c - libgp_test_shim.so: an interposer loaded after libgpupool-vgpu.so, as a malloc or tracing shim
 * would be. Its getpid() finds the real one with dlsym(RTLD_NEXT, ...): if the vGPU library's dlsym handed
 * the shim its own definition back, getpid() would recurse until the stack overflowed. */
#include <dlfcn.h>
#include <sys/types.h>
#include <unistd.h>

__attribute__((visibility("default"))) int gp_shim_calls;

__attribute__((visibility("default"))) pid_t getpid(void)
{
    static pid_t (*real)(void);
    if (real == NULL)
        real = (pid_t(*)(void))dlsym(RTLD_NEXT, "getpid");
    gp_shim_calls++;
    return real();
}

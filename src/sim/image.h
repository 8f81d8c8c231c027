/* image.h - what a module image handed to cuModuleLoadData is, for the simulated GPU.
 *
 * The simulation runs an image only when it names a library of host implementations (the
 * "gpupool-sim-module: <library>" line of gpupool/sim_kernel.h); other images get the error NVIDIA's driver
 * gives when it cannot use one. Pure functions over bytes: fuzzed in tests/fuzz.
 */
#ifndef GP_SIM_IMAGE_H
#define GP_SIM_IMAGE_H

#include <stddef.h>

typedef enum gp_image_kind {
    GP_IMAGE_SIM,     /* names a library of host implementations (copied into lib) */
    GP_IMAGE_PTX,     /* PTX without such a line: needs a JIT compiler */
    GP_IMAGE_BINARY,  /* a cubin (ELF) or a fatbin: machine code for a real GPU */
    GP_IMAGE_UNKNOWN, /* not an image */
} gp_image_kind;

/* Classifies len bytes of image. For GP_IMAGE_SIM the library name (NUL-terminated) goes to lib; a name
 * that does not fit in liblen makes the image GP_IMAGE_UNKNOWN. */
gp_image_kind gp_sim_image_classify(const void *image, size_t len, char *lib, size_t liblen);

#endif

/* fuzz_image.c - libFuzzer target: module image classification reads only the bytes it is given and
 * returns a library name only when it fits and is a single word. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly `size` bytes, so that any read past the end is caught */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    char lib[64];
    if (gp_sim_image_classify(copy, size, lib, sizeof lib) == GP_IMAGE_SIM) {
        size_t n = strlen(lib);
        if (n == 0 || n >= sizeof lib || strpbrk(lib, " \t\r\n"))
            abort();
    }
    free(copy);
    return 0;
}

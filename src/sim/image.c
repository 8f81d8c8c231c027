/* image.c - classifies module images for the simulated GPU (see image.h). */
#include "sim/image.h"

#include <stdint.h>
#include <string.h>

#include "gpupool/sim_kernel.h"

#define FATBIN_MAGIC         0xBA55ED50u
#define FATBIN_WRAPPER_MAGIC 0x466243B1u

static const char *find(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

gp_image_kind gp_sim_image_classify(const void *image, size_t len, char *lib, size_t liblen)
{
    const char *b = image;
    if (len >= 4) {
        uint32_t magic;
        memcpy(&magic, b, 4);
        if (memcmp(b,
                   "\x7f"
                   "ELF",
                   4) == 0 ||
            magic == FATBIN_MAGIC || magic == FATBIN_WRAPPER_MAGIC)
            return GP_IMAGE_BINARY;
    }
    const char *d = find(b, len, GP_SIM_MODULE_DIRECTIVE);
    if (d) {
        const char *p = d + strlen(GP_SIM_MODULE_DIRECTIVE), *end = b + len;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        size_t n = 0;
        while (p + n < end && p[n] && p[n] != '\n' && p[n] != '\r' && p[n] != ' ' && p[n] != '\t')
            n++;
        if (n == 0 || n >= liblen)
            return GP_IMAGE_UNKNOWN;
        memcpy(lib, p, n);
        lib[n] = '\0';
        return GP_IMAGE_SIM;
    }
    if (find(b, len, ".version") || find(b, len, ".target"))
        return GP_IMAGE_PTX;
    return GP_IMAGE_UNKNOWN;
}

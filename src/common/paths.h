/* paths.h - where gpupool's own files are, from where its binary is: <prefix>/bin/gpupool, so that a library
 * it hands to workloads is <prefix>/lib/... (the build tree has the same shape). */
#ifndef GPUPOOL_COMMON_PATHS_H
#define GPUPOOL_COMMON_PATHS_H

#include <stddef.h>

/* "<prefix>/<rel>", resolved (realpath) when it exists, into buf; NULL when this process's binary cannot be
 * found. */
char *gp_install_path(const char *rel, char *buf, size_t len);

#endif

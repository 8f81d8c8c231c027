/* visible.h - CUDA_VISIBLE_DEVICES, parsed as the driver parses it.
 *
 * The simulated GPU applies it to the host's simulated devices and the GPU-over-IP client to the worker's
 * devices (the worker never sees the variable); both ask this parser, so that the two answer alike.
 */
#ifndef GP_COMMON_VISIBLE_H
#define GP_COMMON_VISIBLE_H

#define GP_VISIBLE_UUID_LEN 41 /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and its NUL */

/* The text UUID of device i (0 <= i < n), "GPU-" and all: either a string the caller already holds, or out,
 * filled. */
typedef const char *(*gp_visible_uuid_fn)(const void *arg, int i, char out[GP_VISIBLE_UUID_LEN]);

/* Applies spec (the value of CUDA_VISIBLE_DEVICES; NULL when unset) to n devices: comma-separated ordinals
 * or UUID prefixes ("GPU-" and at least that, case-insensitive), in the order given, up to the first entry
 * that names no device, repeats one or is an ambiguous prefix. order[] (room for n) gets the visible
 * devices' indices, in order; returns how many: n for NULL (every device, in order), 0 for "". */
int gp_visible_devices(const char *spec, int n, gp_visible_uuid_fn uuid, const void *arg, int *order);

#endif

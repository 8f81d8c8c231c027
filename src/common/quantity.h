/* quantity.h - Kubernetes-style quantities for memory sizes: "8Gi", "512Mi", "4G", "1.5Gi", "1e9".
 *
 * Accepted: a non-negative decimal number (optionally with a fraction) followed by one binary suffix
 * (Ki Mi Gi Ti Pi Ei), one decimal suffix (k M G T P E), an exponent (e9, E6), or nothing (bytes). The
 * result must be a whole number of bytes that fits in 64 bits. Errors name the bad part and what to use.
 */
#ifndef GP_COMMON_QUANTITY_H
#define GP_COMMON_QUANTITY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Parses a byte quantity. `what` names the field in error messages (e.g. "vram-limit"); may be NULL. */
int gp_quantity_parse_bytes(const char *s, const char *what, uint64_t *out, gp_err *err);

/* Formats bytes with the largest binary suffix that divides it exactly: 8589934592 -> "8Gi",
 * 1536 MiB -> "1536Mi", 1000 -> "1000". Returns buf. */
char *gp_quantity_format_bytes(uint64_t bytes, char *buf, size_t len);

/* Formats bytes for people, rounded to one decimal: "7.5 GiB", "512 MiB", "100 B". Returns buf. */
char *gp_bytes_human(uint64_t bytes, char *buf, size_t len);

#endif

/* log.h - one-line log records on stderr, for daemons and for the interposed libraries alike.
 *
 * A record is formatted on the stack and written with one write(2), so lines from many threads and
 * processes do not interleave and nothing is allocated (safe in interposed entry points). The threshold
 * comes from GPUPOOL_LOG (error, warn, info, debug; default warn) and can be changed by a program.
 */
#ifndef GP_COMMON_LOG_H
#define GP_COMMON_LOG_H

#include <stdarg.h>
#include <stdatomic.h>

typedef enum gp_log_level {
    GP_LOG_ERROR = 0,
    GP_LOG_WARN = 1,
    GP_LOG_INFO = 2,
    GP_LOG_DEBUG = 3,
} gp_log_level;

void gp_log(gp_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void gp_logv(gp_log_level level, const char *component, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* True when a record of this level would be written. */
int gp_log_enabled(gp_log_level level);

/* Sets the threshold, overriding GPUPOOL_LOG. */
void gp_log_set_level(gp_log_level level);

/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int gp_log_level_parse(const char *s);

/* Logs the first time this call site is reached in the process, and never again. */
#define gp_log_once(level, component, ...)                                 \
    do {                                                                   \
        static atomic_int gp_once_;                                        \
        if (!atomic_exchange_explicit(&gp_once_, 1, memory_order_relaxed)) \
            gp_log(level, component, __VA_ARGS__);                         \
    } while (0)

#endif

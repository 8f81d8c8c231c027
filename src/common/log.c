/* log.c - stderr logging with one write(2) per record (see log.h). */
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* -1: not read from the environment yet. */
static atomic_int g_threshold = -1;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int gp_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return GP_LOG_WARN;
    return -1;
}

static int threshold(void)
{
    int t = atomic_load_explicit(&g_threshold, memory_order_relaxed);
    if (t >= 0)
        return t;
    t = gp_log_level_parse(getenv("GPUPOOL_LOG"));
    if (t < 0)
        t = GP_LOG_WARN;
    atomic_store_explicit(&g_threshold, t, memory_order_relaxed);
    return t;
}

int gp_log_enabled(gp_log_level level)
{
    return (int)level <= threshold();
}

void gp_log_set_level(gp_log_level level)
{
    atomic_store_explicit(&g_threshold, (int)level, memory_order_relaxed);
}

void gp_logv(gp_log_level level, const char *component, const char *fmt, va_list ap)
{
    if (!gp_log_enabled(level))
        return;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s[%d]: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level], component ? component : "gpupool", (int)getpid());
    if (n < 0)
        return;
    if ((size_t)n < sizeof line - 1) {
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write: a record is never split by another thread's record. A short write to a pipe is ignored. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void gp_log(gp_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gp_logv(level, component, fmt, ap);
    va_end(ap);
}

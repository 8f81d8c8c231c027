/* timeutil.h - monotonic nanosecond clock and absolute sleeps.
 *
 * CLOCK_MONOTONIC is one clock for every process of the host, which is what lets the simulated GPU keep a
 * shared timeline in shared memory. Inline: these sit on hot paths.
 */
#ifndef GP_COMMON_TIMEUTIL_H
#define GP_COMMON_TIMEUTIL_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t gp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t gp_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleeps until CLOCK_MONOTONIC reaches t (returns at once if it already has). */
static inline void gp_sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static inline void gp_sleep_ns(uint64_t ns)
{
    gp_sleep_until_ns(gp_now_ns() + ns);
}

#endif

/* conf_event.c - events: queries, host waits, elapsed time and its error cases, creation flags, and
 * re-recording.
 *
 * Device time comes from spin_ns (waits N ns of %globaltimer). NOT_READY is asserted only while the host
 * clock shows the spin cannot have finished, or while a host function the test controls holds the stream
 * back; elapsed times only get lower bounds (and a 10 s sanity ceiling), never tight ones.
 */
#include "check.h"

#include <stdatomic.h>
#include <unistd.h>

#define MS_NS 1000000ull

static CUcontext g_ctx;
static CUmodule g_mod;
static CUfunction g_spin;

static CUresult spin(CUstream s, uint64_t ns)
{
    void *args[] = {&ns};
    return cuLaunchKernel(g_spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL);
}

static void query_of_a_never_recorded_event_is_success(void)
{
    CUevent e, f;
    CU(cuEventCreate(&e, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&f, CU_EVENT_DISABLE_TIMING));
    EXPECT_RC(cuEventQuery(e), CUDA_SUCCESS);
    EXPECT_RC(cuEventQuery(f), CUDA_SUCCESS);
    EXPECT_RC(cuEventSynchronize(e), CUDA_SUCCESS);
    cuEventDestroy(e);
    cuEventDestroy(f);
}

static void query_is_not_ready_during_a_spin_and_synchronize_waits(void)
{
    const uint64_t spin_ns = 200 * MS_NS;
    CUstream s;
    CUevent e;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&e, CU_EVENT_DEFAULT));
    uint64_t t0 = conf_now_ns();
    CU(spin(s, spin_ns));
    CU(cuEventRecord(e, s));
    CUresult r = cuEventQuery(e);
    if (conf_now_ns() - t0 < spin_ns)
        EXPECT(r == CUDA_ERROR_NOT_READY, "cuEventQuery during the spin returned %s", conf_err_name(r));
    EXPECT_RC(cuEventSynchronize(e), CUDA_SUCCESS);
    uint64_t waited = conf_now_ns() - t0;
    EXPECT(waited >= spin_ns - 5 * MS_NS, "cuEventSynchronize returned %.1f ms after a 200 ms spin began",
           (double)waited / 1e6);
    EXPECT_RC(cuEventQuery(e), CUDA_SUCCESS);
    cuEventDestroy(e);
    cuStreamDestroy(s);
}

static void elapsed_time_around_a_100ms_spin_is_at_least_95ms(void)
{
    CUstream s;
    CUevent a, b;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&a, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&b, CU_EVENT_BLOCKING_SYNC));
    CU(cuEventRecord(a, s));
    CU(spin(s, 100 * MS_NS));
    CU(cuEventRecord(b, s));
    CU(cuEventSynchronize(b));
    float ms = -1;
    CU(cuEventElapsedTime(&ms, a, b));
    EXPECT(ms >= 95.0f && ms < 10000.0f, "elapsed %.3f ms around a 100 ms spin", (double)ms);
    cuEventDestroy(a);
    cuEventDestroy(b);
    cuStreamDestroy(s);
}

static void elapsed_with_a_timing_disabled_event_is_invalid_handle(void)
{
    CUevent timed, untimed;
    CU(cuEventCreate(&timed, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING));
    CU(cuEventRecord(timed, NULL));
    CU(cuEventRecord(untimed, NULL));
    CU(cuEventSynchronize(timed));
    CU(cuEventSynchronize(untimed));
    float ms;
    EXPECT_RC(cuEventElapsedTime(&ms, timed, untimed), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RC(cuEventElapsedTime(&ms, untimed, timed), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RC(cuEventElapsedTime(&ms, untimed, untimed), CUDA_ERROR_INVALID_HANDLE);
    cuEventDestroy(timed);
    cuEventDestroy(untimed);
}

static void elapsed_with_a_never_recorded_event_is_invalid_handle(void)
{
    CUevent recorded, never;
    CU(cuEventCreate(&recorded, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&never, CU_EVENT_DEFAULT));
    CU(cuEventRecord(recorded, NULL));
    CU(cuEventSynchronize(recorded));
    float ms;
    EXPECT_RC(cuEventElapsedTime(&ms, recorded, never), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RC(cuEventElapsedTime(&ms, never, recorded), CUDA_ERROR_INVALID_HANDLE);
    cuEventDestroy(recorded);
    cuEventDestroy(never);
}

static void elapsed_is_not_ready_while_the_end_event_is_pending(void)
{
    const uint64_t spin_ns = 200 * MS_NS;
    CUstream s;
    CUevent a, b;
    CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&a, CU_EVENT_DEFAULT));
    CU(cuEventCreate(&b, CU_EVENT_DEFAULT));
    CU(cuEventRecord(a, s));
    CU(cuEventSynchronize(a));
    uint64_t t0 = conf_now_ns();
    CU(spin(s, spin_ns));
    CU(cuEventRecord(b, s));
    float ms = -1;
    CUresult r = cuEventElapsedTime(&ms, a, b);
    if (conf_now_ns() - t0 < spin_ns)
        EXPECT(r == CUDA_ERROR_NOT_READY, "cuEventElapsedTime with the end pending returned %s",
               conf_err_name(r));
    CU(cuEventSynchronize(b));
    CU(cuEventElapsedTime(&ms, a, b));
    EXPECT(ms >= 195.0f && ms < 10000.0f, "elapsed %.3f ms around a 200 ms spin", (double)ms);
    cuEventDestroy(a);
    cuEventDestroy(b);
    cuStreamDestroy(s);
}

static void interprocess_event_needs_disable_timing(void)
{
    CUevent e;
    EXPECT_RC(cuEventCreate(&e, CU_EVENT_INTERPROCESS), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuEventCreate(&e, CU_EVENT_INTERPROCESS | CU_EVENT_BLOCKING_SYNC), CUDA_ERROR_INVALID_VALUE);
    CU(cuEventCreate(&e, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING));
    cuEventDestroy(e);
}

/* A host function that holds its stream until the test opens the gate (bounded at 20 s). */
static atomic_int g_gate;

static void wait_for_gate(void *unused)
{
    (void)unused;
    for (int i = 0; i < 20000 && !atomic_load(&g_gate); i++)
        usleep(1000);
}

/* Polls cuEventQuery for up to 10 s; returns its last result. */
static CUresult poll_event(CUevent e)
{
    CUresult r = CUDA_ERROR_NOT_READY;
    for (int i = 0; i < 10000 && (r = cuEventQuery(e)) == CUDA_ERROR_NOT_READY; i++)
        usleep(1000);
    return r;
}

static void rerecording_an_event_tracks_the_latest_record(void)
{
    CUstream held, idle;
    CUevent e;
    CU(cuStreamCreate(&held, CU_STREAM_NON_BLOCKING));
    CU(cuStreamCreate(&idle, CU_STREAM_NON_BLOCKING));
    CU(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));

    /* Complete, then pending: a record behind a spin makes the event pending again. */
    CU(cuEventRecord(e, idle));
    EXPECT_RC(poll_event(e), CUDA_SUCCESS);
    const uint64_t spin_ns = 200 * MS_NS;
    uint64_t t0 = conf_now_ns();
    CU(spin(idle, spin_ns));
    CU(cuEventRecord(e, idle));
    CUresult r = cuEventQuery(e);
    if (conf_now_ns() - t0 < spin_ns)
        EXPECT(r == CUDA_ERROR_NOT_READY, "a re-recorded event behind a spin queried %s", conf_err_name(r));
    CU(cuEventSynchronize(e));
    EXPECT_RC(cuEventQuery(e), CUDA_SUCCESS);

    /* Pending, then complete: recorded behind a closed gate, then re-recorded on an idle stream, the event
     * completes while the gate is still closed, since only the latest record counts. */
    atomic_store(&g_gate, 0);
    CU(cuLaunchHostFunc(held, wait_for_gate, NULL));
    CU(cuEventRecord(e, held));
    EXPECT_RC(cuEventQuery(e), CUDA_ERROR_NOT_READY);
    CU(cuEventRecord(e, idle));
    EXPECT_RC(poll_event(e), CUDA_SUCCESS);
    EXPECT_RC(cuStreamQuery(held), CUDA_ERROR_NOT_READY);
    atomic_store(&g_gate, 1);
    CU(cuStreamSynchronize(held));
    cuEventDestroy(e);
    cuStreamDestroy(held);
    cuStreamDestroy(idle);
}

int main(void)
{
    CUresult r = conf_context(&g_ctx);
    if (r == CUDA_SUCCESS)
        r = conf_module(&g_mod);
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&g_spin, g_mod, "spin_ns");
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL setup: %s\n", conf_err_name(r));
        return 1;
    }
    RUN(query_of_a_never_recorded_event_is_success);
    RUN(query_is_not_ready_during_a_spin_and_synchronize_waits);
    RUN(elapsed_time_around_a_100ms_spin_is_at_least_95ms);
    RUN(elapsed_with_a_timing_disabled_event_is_invalid_handle);
    RUN(elapsed_with_a_never_recorded_event_is_invalid_handle);
    RUN(elapsed_is_not_ready_while_the_end_event_is_pending);
    RUN(interprocess_event_needs_disable_timing);
    RUN(rerecording_an_event_tracks_the_latest_record);
    atomic_store(&g_gate, 1);
    cuModuleUnload(g_mod);
    cuCtxDestroy(g_ctx);
    CONF_EXIT();
}

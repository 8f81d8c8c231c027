/* sim_launch.c - how fast the simulated GPU takes kernel launches.
 *
 * (a) asynchronous launches of an empty kernel on one stream, per second, against a baseline measured in
 *     the same run: handing the same number of items to another thread through a mutex/condition-variable
 *     ring, the mechanism underneath a stream - the ratio says what the driver adds on top of the handoff;
 * (b) one launch plus cuStreamSynchronize, round trips per second, against a condition-variable ping-pong
 *     between two threads.
 * With GPUPOOL_SIM_LAUNCH_NS=0 (what scripts/bench.sh sets) an empty kernel takes no modelled time, so (a)
 * measures the host path; with the default model (1 us per launch) the device's rate caps it at 1M/s.
 */
#include <pthread.h>
#include <stdbool.h>

#include "bench_util.h"

extern const char gp_sample_ptx[];

enum { RING = 1024 };

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, space, done;
    uint64_t head, tail, n;
    bool consumer_waiting, producer_waiting;
    uint64_t items[RING];
} q = {PTHREAD_MUTEX_INITIALIZER,
       PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER,
       0,
       0,
       0,
       false,
       false,
       {0}};

static void *consumer(void *arg)
{
    (void)arg;
    uint64_t sum = 0;
    pthread_mutex_lock(&q.mu);
    while (q.tail < q.n) {
        while (q.tail == q.head) {
            q.consumer_waiting = true;
            pthread_cond_wait(&q.work, &q.mu);
            q.consumer_waiting = false;
        }
        sum += q.items[q.tail % RING];
        q.tail++;
        if (q.producer_waiting)
            pthread_cond_signal(&q.space);
        pthread_cond_broadcast(&q.done);
    }
    pthread_mutex_unlock(&q.mu);
    return (void *)(uintptr_t)sum;
}

static double handoff_rate(uint64_t n)
{
    q.head = q.tail = 0;
    q.n = n;
    pthread_t t;
    pthread_create(&t, NULL, consumer, NULL);
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&q.mu);
        while (q.head - q.tail >= RING) {
            q.producer_waiting = true;
            pthread_cond_wait(&q.space, &q.mu);
            q.producer_waiting = false;
        }
        q.items[q.head % RING] = i;
        q.head++;
        if (q.consumer_waiting)
            pthread_cond_signal(&q.work);
        pthread_mutex_unlock(&q.mu);
    }
    pthread_join(t, NULL);
    return (double)n / (bench_now() - t0);
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t ping, pong, n;
} pp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};

static void *ponger(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pp.mu);
    while (pp.pong < pp.n) {
        while (pp.ping == pp.pong)
            pthread_cond_wait(&pp.cv, &pp.mu);
        pp.pong++;
        pthread_cond_broadcast(&pp.cv);
    }
    pthread_mutex_unlock(&pp.mu);
    return NULL;
}

static double pingpong_rate(uint64_t n)
{
    pp.ping = pp.pong = 0;
    pp.n = n;
    pthread_t t;
    pthread_create(&t, NULL, ponger, NULL);
    double t0 = bench_now();
    pthread_mutex_lock(&pp.mu);
    for (uint64_t i = 0; i < n; i++) {
        pp.ping++;
        pthread_cond_broadcast(&pp.cv);
        while (pp.pong != pp.ping)
            pthread_cond_wait(&pp.cv, &pp.mu);
    }
    pthread_mutex_unlock(&pp.mu);
    pthread_join(t, NULL);
    return (double)n / (bench_now() - t0);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction spin;
    CUstream s;
    BCK(cuInit(0));
    BCK(cuDeviceGet(&dev, 0));
    BCK(cuCtxCreate(&ctx, NULL, 0, dev));
    BCK(cuModuleLoadData(&mod, gp_sample_ptx));
    BCK(cuModuleGetFunction(&spin, mod, "spin_ns"));
    BCK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    bench_header("sim_launch");
    uint64_t zero = 0;
    void *args[] = {&zero};

    for (int i = 0; i < 10000; i++) /* warm up: thread started, pages touched */
        BCK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
    BCK(cuStreamSynchronize(s));

    double base = handoff_rate(n);
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++)
        BCK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
    BCK(cuStreamSynchronize(s));
    double rate = (double)n / (bench_now() - t0);
    bench_line("async cuLaunchKernel (empty kernel)", rate, base, "/s", "mutex+condvar ring handoff");

    uint64_t m = n / 20;
    double pbase = pingpong_rate(m);
    t0 = bench_now();
    for (uint64_t i = 0; i < m; i++) {
        BCK(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, s, args, NULL));
        BCK(cuStreamSynchronize(s));
    }
    double sync_rate = (double)m / (bench_now() - t0);
    bench_line("cuLaunchKernel + cuStreamSynchronize", sync_rate, pbase, "/s",
               "condvar ping-pong round trip");

    BCK(cuStreamDestroy(s));
    BCK(cuCtxDestroy(ctx));
    return 0;
}

/* threads.c: the process-wide thread count (ad_set_num_threads) and the fork-join helper ad__parallel. */
#include "threads.h"

#include <pthread.h>
#include <stdatomic.h>

/* A process-wide setting, like the allocator: set by an explicit call, read by the kernels.
** Atomic so that a read from a worker thread is never a data race. */
static atomic_int g_threads = 1;

void ad_set_num_threads(int n) { atomic_store_explicit(&g_threads, n < 1 ? 1 : n, memory_order_relaxed); }

int ad_get_num_threads(void) { return atomic_load_explicit(&g_threads, memory_order_relaxed); }

typedef struct job {
    void (*fn)(void *ctx, int tid, int nth);
    void *ctx;
    int tid, nth;
} job;

static void *run_job(void *p)
{
    job *j = p;
    j->fn(j->ctx, j->tid, j->nth);
    return NULL;
}

void ad__parallel(int nth, void (*fn)(void *ctx, int tid, int nth), void *ctx)
{
    if (nth > AD__MAX_THREADS) nth = AD__MAX_THREADS;
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_t th[AD__MAX_THREADS];
    job jobs[AD__MAX_THREADS];
    bool started[AD__MAX_THREADS];
    for (int t = 1; t < nth; t++) {
        jobs[t] = (job){fn, ctx, t, nth};
        started[t] = pthread_create(&th[t], NULL, run_job, &jobs[t]) == 0;
    }
    fn(ctx, 0, nth);
    for (int t = 1; t < nth; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            fn(ctx, t, nth);
    }
}

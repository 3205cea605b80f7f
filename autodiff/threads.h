/* threads.h: the fork-join helper the engine's kernels use to spread work over ad_set_num_threads() threads. */
#ifndef AUTODIFF_THREADS_H
#define AUTODIFF_THREADS_H

#include "ad_internal.h"

/* The most threads one parallel call uses (larger settings are capped to this). */
#define AD__MAX_THREADS 64

/* Runs fn(ctx, tid, nth) for tid = 0 .. nth-1, tid 0 on the calling thread, the others on the
** persistent worker pool (started by the first call with nth > 1), and returns when all are done.
** Work must be split by tid alone, so results never depend on scheduling: a share may run on the
** calling thread instead (a worker that cannot be started, another call using the pool, a call
** from inside fn), with the same result, just slower. Never fails; fn must not fork. Exported
** for libautodiff-nn's optimizers. */
AD_SHARED void ad__parallel(int nth, void (*fn)(void *ctx, int tid, int nth), void *ctx);

/* Tests: the number of running pool workers (ad_set_num_threads(n) leaves at most n - 1). */
AD_INTERNAL int ad__pool_workers(void);
/* Tests: makes the next n worker starts fail, as if the system had no threads left. */
AD_INTERNAL void ad__pool_fail_starts(int n);

#endif

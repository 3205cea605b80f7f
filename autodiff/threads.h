/* threads.h: the fork-join helper the engine's kernels use to spread work over ad_set_num_threads() threads. */
#ifndef AUTODIFF_THREADS_H
#define AUTODIFF_THREADS_H

#include "ad_internal.h"

/* The most threads one parallel call starts (larger settings are capped to this). */
#define AD__MAX_THREADS 64

/* Runs fn(ctx, tid, nth) for tid = 0 .. nth-1, tid 0 on the calling thread, and returns when all
** are done. Work must be split by tid alone, so results never depend on scheduling. If a thread
** cannot be started, its share runs on the calling thread instead (same result, just slower). */
AD_INTERNAL void ad__parallel(int nth, void (*fn)(void *ctx, int tid, int nth), void *ctx);

#endif

/* threads.h: the worker pool's test hooks; ad__parallel itself is in services.h. */
#ifndef AUTODIFF_THREADS_H
#define AUTODIFF_THREADS_H

#include "services.h"

/* Tests: the number of running pool workers (ad_set_num_threads(n) leaves at most n - 1). */
AD_INTERNAL int ad__pool_workers(void);
/* Tests: makes the next n worker starts fail, as if the system had no threads left. */
AD_INTERNAL void ad__pool_fail_starts(int n);

#endif

/* test_threads.c: the worker pool behind ad__parallel: lazy start, stopping, many calls, fallbacks, fork. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ad.h"
#include "test_util.h"
#include "threads.h"

/* What one call saw: which tids ran, how often, with which nth, and whether tid 0 ran on the caller. */
typedef struct record {
    pthread_t caller;
    int expect_nth;
    atomic_int runs[AD__MAX_THREADS];
    atomic_int bad_nth;
    atomic_int tid0_elsewhere;
    atomic_llong sum; /* sum over tids of a share computed from the tid alone */
} record;

static void record_init(record *r, int nth)
{
    memset(r, 0, sizeof *r);
    r->caller = pthread_self();
    r->expect_nth = nth;
}

static void record_fn(void *ctx, int tid, int nth)
{
    record *r = ctx;
    if (nth != r->expect_nth) atomic_fetch_add(&r->bad_nth, 1);
    if (tid < 0 || tid >= AD__MAX_THREADS) return;
    atomic_fetch_add(&r->runs[tid], 1);
    if (tid == 0 && !pthread_equal(pthread_self(), r->caller)) atomic_fetch_add(&r->tid0_elsewhere, 1);
    atomic_fetch_add(&r->sum, (long long)(tid + 1) * 1000 + nth);
}

/* Runs one call with nth threads and checks every tid ran exactly once, with that nth. */
static void check_call(int nth)
{
    record r;
    record_init(&r, nth);
    ad__parallel(nth, record_fn, &r);
    for (int t = 0; t < AD__MAX_THREADS; t++) ck_assert_int_eq(atomic_load(&r.runs[t]), t < nth ? 1 : 0);
    ck_assert_int_eq(atomic_load(&r.bad_nth), 0);
    ck_assert_int_eq(atomic_load(&r.tid0_elsewhere), 0);
    long long want = 0;
    for (int t = 0; t < nth; t++) want += (long long)(t + 1) * 1000 + nth;
    ck_assert_int_eq(atomic_load(&r.sum), want);
}

static void teardown(void)
{
    ad__pool_fail_starts(0);
    ad_set_num_threads(1);
}

/* Workers start with the first parallel call, not before; the count going back to 1 joins them. */
START_TEST(lazy_start_and_stop)
{
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__pool_workers(), 0);
    check_call(1);
    ck_assert_int_eq(ad__pool_workers(), 0); /* one thread never starts a worker */
    ad_set_num_threads(2);
    ck_assert_int_eq(ad__pool_workers(), 0);
    check_call(2);
    ck_assert_int_eq(ad__pool_workers(), 1);
    check_call(2);
    ck_assert_int_eq(ad__pool_workers(), 1); /* reused, not restarted */
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__pool_workers(), 0);
    check_call(2); /* a caller may still ask for 2: the pool starts again */
    ck_assert_int_eq(ad__pool_workers(), 1);
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__pool_workers(), 0);
}
END_TEST

/* Growing and shrinking the thread count: the pool keeps at most n - 1 workers. */
START_TEST(changing_counts)
{
    static const int seq[] = {2, 5, 3, 8, 8, 2, 4, 1, 6, 16, 7, 1};
    int n_seq = (int)(sizeof seq / sizeof seq[0]);
    for (int i = 0; i < n_seq; i++) {
        int n = seq[i];
        if (tu_quick() && n > 8) n = 8;
        ad_set_num_threads(n);
        ck_assert_int_eq(ad_get_num_threads(), n);
        ck_assert_int_le(ad__pool_workers(), n - 1);
        for (int rep = 0; rep < 3; rep++) check_call(n);
        ck_assert_int_eq(ad__pool_workers(), n - 1);
        /* a call asking for fewer threads than the pool holds leaves the rest idle */
        check_call(n > 1 ? n - 1 : 1);
        ck_assert_int_eq(ad__pool_workers(), n - 1);
    }
    ad_set_num_threads(1000); /* capped */
    ck_assert_int_eq(ad_get_num_threads(), AD__MAX_THREADS);
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__pool_workers(), 0);
}
END_TEST

/* Many tiny calls back to back: each share lands once, none is lost or run twice. */
typedef struct counts {
    int64_t per_tid[8];
} counts;

static void count_fn(void *ctx, int tid, int nth)
{
    counts *c = ctx;
    (void)nth;
    c->per_tid[tid]++; /* each tid is written by one thread per call; calls are ordered by ad__parallel */
}

START_TEST(many_small_calls)
{
    for (int nth = 2; nth <= 3; nth++) {
        /* more threads than this machine may have cores: slower hand-offs, fewer calls */
        int calls = (tu_quick() ? 500 : 5000) / (nth == 2 ? 1 : 5);
        ad_set_num_threads(nth);
        counts c = {{0}};
        for (int i = 0; i < calls; i++) ad__parallel(nth, count_fn, &c);
        for (int t = 0; t < 8; t++) ck_assert_int_eq(c.per_tid[t], t < nth ? calls : 0);
    }
    ad_set_num_threads(1);
}
END_TEST

/* A share that calls ad__parallel again runs the inner call on its own thread (no deadlock), and
** setting the thread count from inside a share is carried out when the outer call ends. */
typedef struct nested {
    record inner[4];
} nested;

static void outer_fn(void *ctx, int tid, int nth)
{
    nested *n = ctx;
    (void)nth;
    record_init(&n->inner[tid], 2);
    ad__parallel(2, record_fn, &n->inner[tid]);
    if (tid == 1) ad_set_num_threads(1);
}

START_TEST(nested_calls)
{
    ad_set_num_threads(2);
    nested n;
    ad__parallel(2, outer_fn, &n);
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(atomic_load(&n.inner[t].runs[0]), 1);
        ck_assert_int_eq(atomic_load(&n.inner[t].runs[1]), 1);
        ck_assert_int_eq(atomic_load(&n.inner[t].tid0_elsewhere), 0);
        ck_assert_int_eq(atomic_load(&n.inner[t].bad_nth), 0);
    }
    ck_assert_int_eq(ad_get_num_threads(), 1);
    ck_assert_int_eq(ad__pool_workers(), 0);
}
END_TEST

/* The workers do run shares: tid 0 (on the caller) waits until tid 1 has run elsewhere, which
** only a worker can do (the caller would take tid 1 only after tid 0). Also a stress for the
** claims: every other call, tid 0 waits a little, so workers and the caller race for shares. */
typedef struct handoff {
    pthread_t caller;
    atomic_int ran_elsewhere;
    atomic_int runs[4];
    bool wait_for_worker;
} handoff;

static void handoff_fn(void *ctx, int tid, int nth)
{
    handoff *h = ctx;
    (void)nth;
    atomic_fetch_add(&h->runs[tid], 1);
    if (tid != 0) {
        if (!pthread_equal(pthread_self(), h->caller)) atomic_store(&h->ran_elsewhere, 1);
        return;
    }
    if (!h->wait_for_worker) return;
    struct timespec nap = {0, 500000};
    for (int i = 0; i < 20000 && !atomic_load(&h->ran_elsewhere); i++) nanosleep(&nap, NULL); /* at most 10 s */
}

START_TEST(workers_take_shares)
{
    ad_set_num_threads(2);
    handoff h = {.caller = pthread_self(), .wait_for_worker = true};
    ad__parallel(2, handoff_fn, &h);
    ck_assert_int_eq(atomic_load(&h.ran_elsewhere), 1);
    ck_assert_int_eq(atomic_load(&h.runs[0]), 1);
    ck_assert_int_eq(atomic_load(&h.runs[1]), 1);
    int calls = tu_quick() ? 200 : 2000;
    for (int i = 0; i < calls; i++) {
        handoff r = {.caller = pthread_self(), .wait_for_worker = false};
        for (int rep = 0; rep < (i & 1) * 50; rep++) atomic_fetch_add(&r.runs[3], 0); /* a little work first */
        ad__parallel(3, handoff_fn, &r);
        for (int t = 0; t < 3; t++) ck_assert_int_eq(atomic_load(&r.runs[t]), 1);
    }
}
END_TEST

/* Workers that cannot start leave their shares to the caller: every tid still runs once. */
START_TEST(start_failure_fallback)
{
    ad_set_num_threads(4);
    ad__pool_fail_starts(1); /* the first start fails: no worker at all this call */
    check_call(4);
    ck_assert_int_eq(ad__pool_workers(), 0);
    check_call(4); /* the next call starts them */
    ck_assert_int_eq(ad__pool_workers(), 3);
    ad_set_num_threads(1);
    ad_set_num_threads(4);
    ck_assert_int_eq(ad__pool_workers(), 0);
    ad__pool_fail_starts(0);
    check_call(2); /* one worker */
    ck_assert_int_eq(ad__pool_workers(), 1);
    ad__pool_fail_starts(1); /* worker 2 fails, so 3 is not tried: tids 2 and 3 run on the caller */
    check_call(4);
    ck_assert_int_eq(ad__pool_workers(), 1);
    ad__pool_fail_starts(0);
    check_call(4);
    ck_assert_int_eq(ad__pool_workers(), 3);
}
END_TEST

/* Two application threads calling at once: one gets the pool, the other runs its shares itself. */
typedef struct racer {
    int calls;
    int failures;
} racer;

static void *racer_main(void *arg)
{
    racer *rc = arg;
    for (int i = 0; i < rc->calls; i++) {
        record r;
        record_init(&r, 3);
        ad__parallel(3, record_fn, &r);
        for (int t = 0; t < 3; t++)
            if (atomic_load(&r.runs[t]) != 1) rc->failures++;
        if (atomic_load(&r.tid0_elsewhere) || atomic_load(&r.bad_nth)) rc->failures++;
    }
    return NULL;
}

START_TEST(concurrent_callers)
{
    ad_set_num_threads(3);
    int calls = tu_quick() ? 200 : 2000;
    racer rs[3] = {{calls, 0}, {calls, 0}, {calls, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    racer_main(&rs[2]);
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(rs[i].failures, 0);
    /* and a thread count set while other threads use the pool is carried out */
    ck_assert_int_eq(ad__pool_workers(), 2);
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__pool_workers(), 0);
}
END_TEST

/* A work split that depends on the tid alone gives the same bits for every thread count. */
typedef struct sums {
    const double *x;
    int64_t n;
    double part[16];
} sums;

static void sum_fn(void *ctx, int tid, int nth)
{
    sums *s = ctx;
    int64_t lo = s->n * tid / nth, hi = s->n * (tid + 1) / nth;
    double acc = 0;
    for (int64_t i = lo; i < hi; i++) acc += s->x[i];
    s->part[tid] = acc;
}

START_TEST(repeatable_results)
{
    int64_t n = 100003;
    double *x = malloc((size_t)n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n; i++) x[i] = 1.0 / (double)(i + 1);
    for (int nth = 1; nth <= 4; nth++) {
        ad_set_num_threads(nth);
        double first = 0;
        for (int rep = 0; rep < 50; rep++) {
            sums s = {x, n, {0}};
            ad__parallel(nth, sum_fn, &s);
            double total = 0;
            for (int t = 0; t < nth; t++) total += s.part[t];
            if (rep == 0) first = total;
            ck_assert(memcmp(&first, &total, sizeof total) == 0);
        }
        ck_assert(fabs(first - 12.090) < 0.01); /* the harmonic number H_100003 */
    }
    free(x);
}
END_TEST

/* After fork() the child's pool is empty (the parent's workers do not exist there) and works. */
START_TEST(after_fork)
{
    ad_set_num_threads(2);
    check_call(2);
    ck_assert_int_eq(ad__pool_workers(), 1);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int ok = ad__pool_workers() == 0;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        /* these sanitizers' allocators may be locked in a child forked from a threaded process
        ** (Check's timer thread): starting a thread there can hang, so only the reset is checked */
        _exit(ok ? 0 : 1);
#endif
        record r;
        record_init(&r, 2);
        ad__parallel(2, record_fn, &r);
        ok = ok && atomic_load(&r.runs[0]) == 1 && atomic_load(&r.runs[1]) == 1 && ad__pool_workers() == 1;
        ad_set_num_threads(1);
        ok = ok && ad__pool_workers() == 0;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_call(2); /* the parent's pool still runs */
    ck_assert_int_eq(ad__pool_workers(), 1);
}
END_TEST

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, lazy_start_and_stop);
    tcase_add_test(tc, changing_counts);
    tcase_add_test(tc, many_small_calls);
    tcase_add_test(tc, nested_calls);
    tcase_add_test(tc, workers_take_shares);
    tcase_add_test(tc, start_failure_fallback);
    tcase_add_test(tc, concurrent_callers);
    tcase_add_test(tc, repeatable_results);
    tcase_add_test(tc, after_fork);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(threads_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

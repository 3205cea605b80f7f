/* threads.c: the process-wide thread count (ad_set_num_threads) and ad__parallel's persistent worker pool. */
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/*
** The pool. Starting and joining a thread costs tens of microseconds, as much as a whole matrix
** product of a small network's training step, so the workers are started once and then reused:
**
**   - The first ad__parallel call with nth > 1 starts workers 1 .. nth-1 (more later if a call
**     asks for more); the caller itself always runs tid 0.
**   - A call publishes its job (fn, ctx, nth), opens one claim per worker share and bumps the
**     generation counter `gen`. A worker that sees a new generation claims its share (tid = its
**     id) and runs it. The caller runs tid 0, then claims every share no worker has claimed yet
**     and runs it itself, then waits only for the shares workers took. So a worker that is slow
**     to wake, or not scheduled at all on a busy machine, costs the call nothing but its share
**     running on the caller; and nothing a worker reads belongs to a call that has returned
**     (it reads the job only after winning its claim, and the caller waits for those).
**   - Between jobs a worker spins on `gen` for up to SPIN_NS, then parks on a condition variable;
**     the caller waits for the workers' shares the same way. A training step issues its products
**     tens of microseconds apart, and waking a parked thread costs far more than that on a virtual
**     machine (on the project's 2-core VM, bench_mlp at 2 threads with workers that had to run
**     their own shares: spinning 20 us, 1.05 s per epoch; 1 ms, 0.56 s). After SPIN_PAUSE_NS the
**     spin also yields the CPU, for when the machine is busy and another thread needs this core.
**   - ad_set_num_threads(n) stops and joins the workers with id >= n (all of them for n = 1); the
**     library's destructor stops the rest, so nothing is left running or allocated at exit.
**   - One call uses the pool at a time (the `busy` mutex, taken with trylock): a second caller,
**     or a nested call from inside fn, runs all its shares on its own thread. The shares are fixed
**     by tid, so the result is the same whichever thread runs them.
**   - A worker that cannot be started leaves its share (and those of the ids after it) to the
**     caller: same result, just slower.
**   - After fork() the child has no workers; a fork handler empties the pool there, and the
**     child's first parallel call starts its own.
** The pool holds no heap memory: the workers' slots are a fixed array of AD__MAX_THREADS.
*/

#define SPIN_NS 300000L      /* how long a waiting thread spins before it parks (300 us) */
#define SPIN_PAUSE_NS 50000L /* for this long it only pauses; then it also yields the CPU */

/* A process-wide setting, like the allocator: set by an explicit call, read by the kernels.
** Atomic so that a read from a worker thread is never a data race. */
static atomic_int g_threads = 1;

typedef void (*par_fn)(void *ctx, int tid, int nth);

typedef struct slot {
    pthread_t th;
    unsigned long long start_gen; /* the generation current when this worker was started */
} slot;

/* A share's claim word: 4 gen + OPEN, TAKEN (by its worker) or STOLEN (by the caller). Claims of
** older generations never match the current one, so a late worker cannot take a new job's share
** believing it is an old one. On its own cache line: the caller and a worker race for it. */
enum { OPEN = 0, TAKEN = 1, STOLEN = 2 };
typedef struct claim {
    _Alignas(64) atomic_ullong word;
} claim;

typedef struct pool {
    pthread_mutex_t busy; /* held by the one call that uses the pool, and while workers start or stop */
    pthread_mutex_t lock; /* guards the sleeper count and the condition variables */
    pthread_cond_t wake;  /* parked workers wait here for a new generation */
    pthread_cond_t done;  /* a parked caller waits here for the workers' shares */
    int nworkers;         /* running workers: ids 1 .. nworkers (under busy) */
    int sleepers;         /* parked workers (under lock) */
    int fail_starts;      /* tests: this many thread starts fail (under busy) */
    /* the job of the current generation, written before gen is bumped (release) */
    par_fn fn;
    void *ctx;
    int nth;
    atomic_int keep; /* workers with an id above this exit at the next generation */
    _Alignas(64) atomic_ullong gen;
    _Alignas(64) atomic_int finished; /* shares taken by workers and done, this job */
    atomic_bool caller_parked;
    atomic_bool trim; /* a smaller thread count was set while the pool was busy */
    claim claims[AD__MAX_THREADS];
    slot slots[AD__MAX_THREADS];
} pool;

static pool g_pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .keep = AD__MAX_THREADS,
};

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One step of a wait loop: a pause for the first SPIN_PAUSE_NS of the wait, then a yield of the
** CPU (on a busy machine the thread waited for may need it); false once SPIN_NS have passed. */
static bool spin_step(int i, int64_t *t0)
{
    if ((i & 31) != 31) {
        cpu_relax();
        return true;
    }
    int64_t t = now_ns();
    if (!*t0) *t0 = t;
    if (t - *t0 > SPIN_NS) return false;
    if (t - *t0 > SPIN_PAUSE_NS) sched_yield();
    return true;
}

/* Spins until gen differs from seen or SPIN_NS pass; returns the last value read. */
static unsigned long long spin_gen(pool *p, unsigned long long seen)
{
    unsigned long long g = atomic_load_explicit(&p->gen, memory_order_acquire);
    int64_t t0 = 0;
    for (int i = 0; g == seen && spin_step(i, &t0); i++) g = atomic_load_explicit(&p->gen, memory_order_acquire);
    return g;
}

/* Claims share id of generation g for `who`; false when someone else has. */
static bool claim_share(pool *p, int id, unsigned long long g, int who)
{
    unsigned long long open = 4 * g + OPEN;
    return atomic_compare_exchange_strong_explicit(&p->claims[id].word, &open, 4 * g + (unsigned long long)who,
                                                   memory_order_acq_rel, memory_order_relaxed);
}

static void *worker_main(void *arg)
{
    pool *p = &g_pool;
    int id = (int)(intptr_t)arg;
    unsigned long long seen = p->slots[id].start_gen;
    for (;;) {
        unsigned long long g = spin_gen(p, seen);
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
                p->sleepers++;
                pthread_cond_wait(&p->wake, &p->lock);
                p->sleepers--;
            }
            pthread_mutex_unlock(&p->lock);
        }
        seen = g;
        if (id > atomic_load_explicit(&p->keep, memory_order_relaxed)) return NULL;
        if (!claim_share(p, id, g, TAKEN)) continue; /* no share for this worker, or the caller took it */
        p->fn(p->ctx, id, p->nth);
        atomic_fetch_add(&p->finished, 1);
        if (atomic_load(&p->caller_parked)) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

/* Bumps the generation, waking parked workers (the caller holds busy). */
static void publish(pool *p)
{
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    if (p->sleepers) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Waits until `taken` shares taken by workers are done: spins, then parks. */
static void wait_finished(pool *p, int taken)
{
    int64_t t0 = 0;
    for (int i = 0; atomic_load_explicit(&p->finished, memory_order_acquire) != taken; i++) {
        if (spin_step(i, &t0)) continue;
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->caller_parked, true);
        while (atomic_load(&p->finished) != taken) pthread_cond_wait(&p->done, &p->lock);
        atomic_store(&p->caller_parked, false);
        pthread_mutex_unlock(&p->lock);
        return;
    }
}

/* Stops and joins the workers with id > keep (the caller holds busy). */
static void stop_above(pool *p, int keep)
{
    if (keep < 0) keep = 0;
    if (p->nworkers <= keep) return;
    atomic_store(&p->keep, keep);
    publish(p); /* a generation with no share open: the workers above keep exit, the others wait on */
    for (int id = keep + 1; id <= p->nworkers; id++) pthread_join(p->slots[id].th, NULL);
    p->nworkers = keep;
    atomic_store(&p->keep, AD__MAX_THREADS);
}

/* fork: hold the pool across fork() so the child copies it in a known state; the child has none
** of the parent's threads, so its pool starts empty. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_pool.busy);
    pthread_mutex_lock(&g_pool.lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&g_pool.lock);
    pthread_mutex_unlock(&g_pool.busy);
}

static void atfork_child(void)
{
    pool *p = &g_pool;
    p->nworkers = 0;
    p->sleepers = 0;
    atomic_store(&p->caller_parked, false);
    /* the parent's parked workers may still be counted inside the condition variables */
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->busy);
}

static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

/* Starts workers until there are want of them (the caller holds busy); stops at the first failure. */
static void grow(pool *p, int want)
{
    if (p->nworkers >= want) return;
    pthread_once(&g_atfork_once, register_atfork);
    /* workers take no signals: those go to the application's own threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    unsigned long long g = atomic_load_explicit(&p->gen, memory_order_relaxed);
    while (p->nworkers < want) {
        int id = p->nworkers + 1;
        p->slots[id].start_gen = g;
        if (p->fail_starts > 0) {
            p->fail_starts--;
            break;
        }
        if (pthread_create(&p->slots[id].th, NULL, worker_main, (void *)(intptr_t)id) != 0) break;
        p->nworkers = id;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void ad_set_num_threads(int n)
{
    if (n < 1) n = 1;
    if (n > AD__MAX_THREADS) n = AD__MAX_THREADS;
    atomic_store_explicit(&g_threads, n, memory_order_relaxed);
    pool *p = &g_pool;
    if (pthread_mutex_trylock(&p->busy) == 0) {
        stop_above(p, n - 1);
        pthread_mutex_unlock(&p->busy);
    } else {
        atomic_store_explicit(&p->trim, true, memory_order_relaxed); /* the call in flight trims */
    }
}

int ad_get_num_threads(void) { return atomic_load_explicit(&g_threads, memory_order_relaxed); }

void ad__parallel(int nth, void (*fn)(void *ctx, int tid, int nth), void *ctx)
{
    if (nth < 1) nth = 1;
    if (nth > AD__MAX_THREADS) nth = AD__MAX_THREADS;
    pool *p = &g_pool;
    if (nth == 1 || pthread_mutex_trylock(&p->busy) != 0) { /* one thread, or the pool is in use */
        for (int t = 0; t < nth; t++) fn(ctx, t, nth);
        return;
    }
    grow(p, nth - 1);
    int used = p->nworkers < nth - 1 ? p->nworkers : nth - 1;
    unsigned long long g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1; /* gen changes under busy */
    if (used > 0) {
        p->fn = fn;
        p->ctx = ctx;
        p->nth = nth;
        atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
        for (int id = 1; id <= used; id++) atomic_store_explicit(&p->claims[id].word, 4 * g + OPEN, memory_order_relaxed);
        publish(p);
    }
    fn(ctx, 0, nth);
    for (int t = used + 1; t < nth; t++) fn(ctx, t, nth); /* the shares of workers that did not start */
    int taken = 0;
    for (int id = 1; id <= used; id++) {
        if (claim_share(p, id, g, STOLEN))
            fn(ctx, id, nth); /* its worker has not started it: run it here rather than wait */
        else
            taken++;
    }
    if (taken) wait_finished(p, taken);
    if (atomic_exchange_explicit(&p->trim, false, memory_order_relaxed)) stop_above(p, ad_get_num_threads() - 1);
    pthread_mutex_unlock(&p->busy);
}

int ad__pool_workers(void)
{
    pool *p = &g_pool;
    pthread_mutex_lock(&p->busy);
    int n = p->nworkers;
    pthread_mutex_unlock(&p->busy);
    return n;
}

void ad__pool_fail_starts(int n)
{
    pool *p = &g_pool;
    pthread_mutex_lock(&p->busy);
    p->fail_starts = n < 0 ? 0 : n;
    pthread_mutex_unlock(&p->busy);
}

/* At unload or exit: join the workers, unless a call is still using them (then the process is
** going away under it, and the workers go with it). */
__attribute__((destructor)) static void pool_shutdown(void)
{
    pool *p = &g_pool;
    if (pthread_mutex_trylock(&p->busy) != 0) return;
    stop_above(p, 0);
    pthread_mutex_unlock(&p->busy);
}

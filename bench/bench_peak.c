/* bench_peak.c: the machine's own yardstick: F32/F64 FMA throughput of the ISA the GEMM kernels dispatch to, stream bandwidth, and the round trip of a cache line between two CPUs. */
#define _GNU_SOURCE /* pthread_setaffinity_np, sched_getaffinity */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PEAK_X86 1
#endif

/*
** Figures from other machines cannot be compared as times; as fractions of the machine's own
** peak they can. This program measures that peak on the instruction set the GEMM kernels were
** dispatched to (ad__gemm_kernel_name: avx512, avx2 or generic) and prints it as JSON lines for
** bench/compare, which divides every GEMM and convolution rate by it:
**
**   peak_fma_f32 / peak_fma_f64: GFLOP/s of independent fused multiply-adds (2 flops each) on
**     full vectors, ACC accumulators deep (enough to cover the FMA latency on both FMA pipes),
**     on 1 thread and on --threads threads at once (each its own loop: no memory traffic);
**   stream_triad: a[i] = b[i] + s c[i] over three arrays far larger than the caches, in GB/s
**     counted as STREAM does (3 x 8 bytes per element, no write-allocate traffic);
**   core_roundtrip (with --threads 2 or more, or --roundtrip alone): the time for a cache line to
**     go from one CPU to another and back (two threads pinned to the first two CPUs this process
**     may run on, each in turn writing a counter the other spins on), in nanoseconds, the median
**     of --reps runs. It tells whether those CPUs share a cache: on the project's 2-vCPU VM the
**     hypervisor moves the vCPUs between cores that share an L3 (about 100 ns) and cores that do
**     not (about 420 ns) every few seconds or minutes, and a multi-threaded step that hands its
**     activations from one thread to the other runs about a third slower in the second placement
**     (docs/performance.md); bench/compare runs the probe around each of our multi-thread runs.
**
** Times are each thread's CPU time (the slowest thread's, for several), so that a machine shared
** with other work still shows its peak while our threads run; each figure is the best of --reps runs (a peak: anything lower is interference, which the
** median, min and max fields also show).
** Usage: bench_peak [--threads N] [--reps N] [--quick] [--level avx512|avx2|generic] [--roundtrip]
*/

#define ACC 24           /* independent accumulators (AVX-512: 24 of 32 registers) */
#define ACC_AVX2 12      /* AVX2 has 16 registers: 24 accumulators would spill to memory */
#define FMA_ITERS 2000000 /* loop trips per timed run (x ACC FMAs) */

/* Each thread's own CPU time: on a machine shared with other work, time the thread was not
** running does not count against the peak (which is what a peak means). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct fma_arg {
    int isa;  /* the GEMM kernels' level: AD__GEMM_AVX512, AD__GEMM_AVX2 or AD__GEMM_GENERIC */
    int f64;
    long iters;
    double sink, secs;
} fma_arg;

#ifdef PEAK_X86
#define FMA_LOOP(NAME, TARGET, V, SET1, FMA, ADD, STORE, T, W, NACC)                                     \
    TARGET static double NAME(long iters)                                                                \
    {                                                                                                    \
        V acc[NACC], x = SET1((T)1.0000001), y = SET1((T)0.9999999);                                     \
        for (int i = 0; i < NACC; i++) acc[i] = SET1((T)i);                                              \
        for (long it = 0; it < iters; it++) {                                                            \
            _Pragma("GCC unroll 24") for (int i = 0; i < NACC; i++) acc[i] = FMA(acc[i], x, y);          \
            __asm__ volatile("" : "+v"(x)); /* x is not a constant the compiler can fold */              \
        }                                                                                                \
        for (int i = 1; i < NACC; i++) acc[0] = ADD(acc[0], acc[i]);                                     \
        T out[W];                                                                                        \
        STORE(out, acc[0]);                                                                              \
        return (double)out[0];                                                                           \
    }
FMA_LOOP(fma512_f32, __attribute__((target("avx512f"))), __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
         _mm512_storeu_ps, float, 16, ACC)
FMA_LOOP(fma512_f64, __attribute__((target("avx512f"))), __m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd,
         _mm512_storeu_pd, double, 8, ACC)
FMA_LOOP(fma256_f32, __attribute__((target("avx2,fma"))), __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
         _mm256_storeu_ps, float, 8, ACC_AVX2)
FMA_LOOP(fma256_f64, __attribute__((target("avx2,fma"))), __m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd,
         _mm256_storeu_pd, double, 4, ACC_AVX2)
#endif

/* Baseline x86-64 has no FMA: a multiply and an add per step (SSE2 vectors, 2 flops per lane). */
#define GENERIC_LOOP(NAME, T, W)                                                                         \
    static double NAME(long iters)                                                                       \
    {                                                                                                    \
        T acc[ACC][W], x = (T)1.0000001, y = (T)0.9999999;                                               \
        for (int i = 0; i < ACC; i++)                                                                    \
            for (int l = 0; l < W; l++) acc[i][l] = (T)(i + l);                                          \
        for (long it = 0; it < iters; it++) {                                                            \
            for (int i = 0; i < ACC; i++)                                                                \
                for (int l = 0; l < W; l++) acc[i][l] = acc[i][l] * x + y;                               \
            __asm__ volatile("" : "+x"(x));                                                              \
        }                                                                                                \
        T s = 0;                                                                                         \
        for (int i = 0; i < ACC; i++) s += acc[i][0];                                                    \
        return (double)s;                                                                                \
    }
GENERIC_LOOP(generic_f32, float, 4)
GENERIC_LOOP(generic_f64, double, 2)

/* Lanes per vector of the ISA (flops per FMA instruction = 2 x lanes). */
static int lanes(int isa, int f64)
{
    int bytes = isa == AD__GEMM_AVX512 ? 64 : isa == AD__GEMM_AVX2 ? 32 : 16;
    return bytes / (f64 ? 8 : 4);
}

static void *fma_thread(void *p)
{
    fma_arg *a = p;
    double t0 = now(), s = 0;
#ifdef PEAK_X86
    if (a->isa == AD__GEMM_AVX512) s = a->f64 ? fma512_f64(a->iters) : fma512_f32(a->iters);
    else if (a->isa == AD__GEMM_AVX2) s = a->f64 ? fma256_f64(a->iters) : fma256_f32(a->iters);
    else
#endif
        s = a->f64 ? generic_f64(a->iters) : generic_f32(a->iters);
    a->secs = now() - t0;
    a->sink = s;
    return NULL;
}

/* GFLOP/s of nth threads running the FMA loop at once (the slowest thread's time). */
static double fma_rate(int isa, int f64, int nth, long iters)
{
    fma_arg args[64];
    pthread_t th[64];
    for (int i = 0; i < nth; i++) args[i] = (fma_arg){isa, f64, iters, 0, 0};
    for (int i = 1; i < nth; i++)
        if (pthread_create(&th[i], NULL, fma_thread, &args[i]) != 0) return -1;
    fma_thread(&args[0]);
    double worst = args[0].secs;
    for (int i = 1; i < nth; i++) {
        pthread_join(th[i], NULL);
        if (args[i].secs > worst) worst = args[i].secs;
    }
    double flops = 2.0 * (double)lanes(isa, f64) * (isa == AD__GEMM_AVX2 ? ACC_AVX2 : ACC) * (double)iters * nth;
    return flops / worst / 1e9;
}

typedef struct triad_arg {
    double *a, *b, *c;
    size_t lo, hi;
    double secs;
} triad_arg;

static void *triad_thread(void *p)
{
    triad_arg *t = p;
    double t0 = now();
    for (size_t i = t->lo; i < t->hi; i++) t->a[i] = t->b[i] + 3.0 * t->c[i];
    t->secs = now() - t0;
    return NULL;
}

/* GB/s of the triad over n doubles split into nth contiguous parts. */
static double triad_rate(double *a, double *b, double *c, size_t n, int nth)
{
    triad_arg args[64];
    pthread_t th[64];
    for (int i = 0; i < nth; i++)
        args[i] = (triad_arg){a, b, c, n * (size_t)i / (size_t)nth, n * (size_t)(i + 1) / (size_t)nth, 0};
    for (int i = 1; i < nth; i++)
        if (pthread_create(&th[i], NULL, triad_thread, &args[i]) != 0) return -1;
    triad_thread(&args[0]);
    double worst = args[0].secs;
    for (int i = 1; i < nth; i++) {
        pthread_join(th[i], NULL);
        if (args[i].secs > worst) worst = args[i].secs;
    }
    return 3.0 * 8.0 * (double)n / worst / 1e9;
}

/* ---- the round trip of a cache line between two CPUs ---- */

#define RT_TRIPS 20000L   /* round trips per run */
#define RT_WARMUP 200L     /* untimed round trips first */
#define RT_BUDGET_NS 2e8  /* a run stops after this long (an oversubscribed machine: trips of milliseconds) */

typedef struct rt_arg {
    _Alignas(64) atomic_long flag; /* 2i + 1: the first thread's turn i; 2i + 2: the answer; -1: stop */
    int cpu;
} rt_arg;

static double wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *rt_partner(void *p)
{
    rt_arg *a = p;
    pin(a->cpu);
    long seen = 0;
    for (;;) {
        long v = atomic_load_explicit(&a->flag, memory_order_acquire);
        if (v < 0) return NULL;
        if (v > seen && (v & 1)) {
            atomic_store_explicit(&a->flag, v + 1, memory_order_release);
            seen = v + 1;
        }
    }
}

/* Round trip i: hands the line to the partner and waits for it to come back. */
static void trip(rt_arg *a, long i)
{
    atomic_store_explicit(&a->flag, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&a->flag, memory_order_acquire) != 2 * i + 2) {}
}

/* The first two CPUs this process may run on: false when it may run on only one. */
static bool two_cpus(int cpu[2])
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return false;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &set)) cpu[n++] = c;
    return n == 2;
}

/* Nanoseconds per round trip between cpu[0] and cpu[1], or -1. */
static double roundtrip_ns(const int cpu[2])
{
    static rt_arg a; /* one run at a time; static for its alignment */
    atomic_store(&a.flag, 0);
    a.cpu = cpu[1];
    pthread_t th;
    cpu_set_t old;
    if (pthread_getaffinity_np(pthread_self(), sizeof old, &old) != 0) return -1;
    if (pthread_create(&th, NULL, rt_partner, &a) != 0) return -1;
    pin(cpu[0]);
    for (long i = 0; i < RT_WARMUP; i++) trip(&a, i); /* warm up: both threads running, the line moving */
    double t0 = wall_ns(), t = t0;
    long trips = 0;
    for (; trips < RT_TRIPS && t - t0 < RT_BUDGET_NS; trips++) {
        trip(&a, RT_WARMUP + trips);
        if ((trips & 255) == 255) t = wall_ns();
    }
    t = wall_ns();
    atomic_store_explicit(&a.flag, -1, memory_order_release);
    pthread_join(th, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old); /* the caller runs anywhere again */
    return (t - t0) / (double)trips;
}

static int cmp(const void *x, const void *y)
{
    double p = *(const double *)x, q = *(const double *)y;
    return p < q ? -1 : p > q;
}

static void report(const char *bench, const char *unit, int nth, double *v, int reps, const char *isa)
{
    qsort(v, (size_t)reps, sizeof *v, cmp);
    printf("%-14s %3d %-8s %10.1f %10.1f %10.1f %s\n", bench, nth, isa, v[reps - 1], v[reps / 2], v[0], unit);
    printf("{\"bench\":\"%s\",\"impl\":\"machine\",\"isa\":\"%s\",\"threads\":%d,\"unit\":\"%s\",\"best\":%.3f,"
           "\"median\":%.3f,\"min\":%.3f,\"max\":%.3f}\n",
           bench, isa, nth, unit, v[reps - 1], v[reps / 2], v[0], v[reps - 1]);
    fflush(stdout);
}

/* Prints core_roundtrip (median, min and max of reps runs), or a comment when this process may
** run on one CPU only; false when a thread cannot be started. */
static bool report_roundtrip(int reps)
{
    int cpu[2];
    if (!two_cpus(cpu)) {
        printf("# core_roundtrip: not measured, this process may run on one CPU only\n");
        return true;
    }
    double v[100];
    for (int r = 0; r < reps; r++)
        if ((v[r] = roundtrip_ns(cpu)) < 0) {
            fprintf(stderr, "bench_peak: cannot start a thread\n");
            return false;
        }
    qsort(v, (size_t)reps, sizeof *v, cmp);
    printf("%-14s %3d %-8s %10.1f %10.1f %10.1f ns (CPUs %d and %d; the least is the best)\n", "core_roundtrip", 2, "-",
           v[0], v[reps / 2], v[reps - 1], cpu[0], cpu[1]);
    printf("{\"bench\":\"core_roundtrip\",\"impl\":\"machine\",\"cpus\":[%d,%d],\"threads\":2,\"unit\":\"ns\","
           "\"best\":%.1f,\"median\":%.1f,\"min\":%.1f,\"max\":%.1f}\n",
           cpu[0], cpu[1], v[0], v[reps / 2], v[0], v[reps - 1]);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv)
{
    int threads = 1, reps = 5;
    bool only_rt = false;
    long iters = FMA_ITERS;
    size_t n = (size_t)24 << 20; /* 3 arrays of 192 MiB */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0) reps = 3, iters /= 4, n /= 4;
        else if (strcmp(argv[i], "--roundtrip") == 0) only_rt = true;
        else if (strcmp(argv[i], "--level") == 0 && i + 1 < argc && ad__gemm_level_named(argv[i + 1]) >= 0)
            /* the GEMM kernels' level to measure instead of the CPU's best (which caps it) */
            ad__gemm_set_backend(AD__GEMM_AUTO, ad__gemm_level_named(argv[++i]));
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--quick] [--level avx512|avx2|generic] [--roundtrip]\n",
                    argv[0]);
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || reps < 1 || reps > 100) return 2;
    const char *name = ad__gemm_kernel_name(false);
    int isa = ad__gemm_level_named(name);
    if (only_rt) return report_roundtrip(reps) ? 0 : 1;
    printf("# machine peak on the GEMM kernels' ISA (%s); best / median / min of %d runs\n", name, reps);
    printf("%-14s %3s %-8s %10s %10s %10s %s\n", "figure", "thr", "isa", "best", "median", "min", "unit");
    double v[100];
    int counts[2] = {1, threads};
    for (int ci = 0; ci < (threads > 1 ? 2 : 1); ci++) {
        int nth = counts[ci];
        for (int f64 = 0; f64 < 2; f64++) {
            fma_rate(isa, f64, nth, iters / 10); /* warm up: clocks, AVX-512 licence */
            for (int r = 0; r < reps; r++) v[r] = fma_rate(isa, f64, nth, iters);
            report(f64 ? "peak_fma_f64" : "peak_fma_f32", "GFLOP/s", nth, v, reps, name);
        }
    }
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "bench_peak: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2;
    for (int ci = 0; ci < (threads > 1 ? 2 : 1); ci++) {
        int nth = counts[ci];
        triad_rate(a, b, c, n, nth);
        for (int r = 0; r < reps; r++) v[r] = triad_rate(a, b, c, n, nth);
        report("stream_triad", "GB/s", nth, v, reps, name);
    }
    free(a);
    free(b);
    free(c);
    return threads > 1 && !report_roundtrip(reps) ? 1 : 0;
}

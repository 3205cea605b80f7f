/* bench_matmul.c: GFLOP/s of the matrix product: the built-in kernel, the engine's default path, OpenBLAS. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ad.h"
#include "gemm.h"

#ifdef AD_HAVE_BLAS
#include <cblas.h>
#endif

/*
** Usage: bench_matmul [--sizes 64,256,1024] [--threads 1,2] [--dtypes f32,f64] [--reps 11]
**                     [--min-ms 20] [--impls builtin,auto,openblas] [--level avx512|avx2|generic]
**                     [--cpu-time] [--quick]
** For each dtype, size n (square n x n x n products) and thread count, the implementations run
** interleaved, rep by rep, so drift of the machine hits them alike. Each rep times enough calls
** to last --min-ms; the figures are the median, min and max over the reps of the time per call.
** Time is wall-clock, or with --cpu-time the CPU time of the whole process (all its threads):
** on a loaded machine that is the steadier figure for one thread; with more threads it is the
** total work, not the elapsed time.
**   builtin:  the engine's own packed kernel (ad__gemm_* with the BLAS backend off)
**   auto:     ad__gemm_* as the engine runs it (OpenBLAS above a size threshold when built with it)
**   openblas: cblas_?gemm called directly
** --level runs the built-in kernels of that instruction set (at most the CPU's best): on an AVX-512
** machine, --level avx2 measures the AVX2 kernels, to set against bench_peak --level avx2.
** Output: a table for people, and one JSON line (starting with '{') per case for scripts:
**   {"bench":"matmul_f32_n256","impl":"builtin","kernel":"avx512","threads":1,"unit":"ms",
**    "median":..,"min":..,"max":..,"gflops":..(at the median),"gflops_best":..,"reps":..,"iters":..}
*/

#define MAX_LIST 16

typedef struct opts {
    int sizes[MAX_LIST], nsizes;
    int threads[MAX_LIST], nthreads;
    int f64[2], ndtypes;
    const char *impls[3];
    int nimpls;
    int reps;
    double min_s;
    bool cpu_time;
} opts;

static int parse_ints(const char *s, int *out)
{
    int n = 0;
    while (*s && n < MAX_LIST) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 16) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

#define FIRST_WARMUP_S 0.3 /* seconds */

static bool g_cpu_time; /* set once from the command line, before any timing */
static int g_level = AD__GEMM_BEST; /* --level: the built-in kernels' level (capped by the CPU's) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(g_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One call of implementation `impl` on n x n x n; false when it is not available. */
static bool call(const char *impl, bool f64, int n, int threads, const void *a, const void *b, void *c)
{
    ad_set_num_threads(threads);
    if (!strcmp(impl, "openblas")) {
#ifdef AD_HAVE_BLAS
        if (openblas_get_num_threads() != threads) openblas_set_num_threads(threads);
        if (f64)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        return true;
#else
        return false;
#endif
    }
    ad__gemm_set_backend(!strcmp(impl, "builtin") ? AD__GEMM_BUILTIN : AD__GEMM_AUTO, g_level);
    ad_status st = f64 ? ad__gemm_f64(false, false, n, n, n, 1.0, a, n, b, n, 0.0, c, n)
                       : ad__gemm_f32(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return st == AD_OK;
}

typedef struct result {
    double t[64];
    int64_t iters;
    bool ok;
} result;

/* After the openblas impl ran on more than one thread: OpenBLAS's pool threads spin on
** sched_yield for about 0.1 s after each call before they park, on the cores our pool needs, so
** the rep after it waits 0.2 s. (Interleaved without the pause, in bench/compare's 2-thread
** matmul rounds on the 2-core Zen 5, the built-in kernel at n = 1024 read 12.6-14.4 ms in some
** processes and 6.6-6.7 in others; OpenBLAS itself 6.6-7.1 in both.) The pause parks our pool's
** workers as well, and on a virtual machine a CPU left idle that long can take milliseconds to
** run a woken thread: our caller then runs the worker's share itself, at one thread's speed (on
** the 2-core Zen 5 VM at n = 256, the first 2 to 40 calls after a 0.2 s sleep took 0.15 ms each,
** against 0.08-0.10 once the worker ran; bench/compare's matmul rounds read the built-in kernel's
** 2-thread scaling as 0.92x at n = 256 and 1.26x at n = 1024, 2.0x in a run without the
** openblas impl). So after the pause, the first of our impls and the openblas impl each run
** untimed for REWARM_S before their timed calls, as in a user's loop of products, whose threads
** never park. */
#define REWARM_S 0.05 /* seconds */

static bool pauses(const opts *o, int threads)
{
    bool blas = false;
    for (int im = 0; im < o->nimpls; im++) blas = blas || !strcmp(o->impls[im], "openblas");
    return blas && threads > 1;
}

static void rewarm(const char *impl, bool f64, int n, int threads, const void *a, const void *b, void *c)
{
    for (double w0 = now_s(); now_s() - w0 < REWARM_S;) call(impl, f64, n, threads, a, b, c);
}

static void run_case(const opts *o, bool f64, int n, int threads)
{
    size_t es = f64 ? sizeof(double) : sizeof(float), bytes = (size_t)n * (size_t)n * es;
    void *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
    if (!a || !b || !c) {
        fprintf(stderr, "bench_matmul: out of memory at n=%d\n", n);
        free(a), free(b), free(c);
        return;
    }
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < (size_t)n * (size_t)n; i++) {
        for (int w = 0; w < 2; w++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            double v = (double)(s >> 11) / 9007199254740992.0 - 0.5;
            if (f64)
                ((double *)(w ? b : a))[i] = v;
            else
                ((float *)(w ? b : a))[i] = (float)v;
        }
    }
    result r[3] = {0};
    /* warm up and size the inner loop so one rep lasts about min_s. The process's first case warms
    ** up for at least FIRST_WARMUP_S: OpenBLAS's idle pool, started when the library loads, spins
    ** for about its first 0.1 s, taking a core and, with --cpu-time, counting in the figures. */
    static bool warmed;
    for (int im = 0; im < o->nimpls; im++) {
        r[im].ok = call(o->impls[im], f64, n, threads, a, b, c);
        if (!r[im].ok) continue;
        if (!warmed) {
            for (double w0 = now_s(); now_s() - w0 < FIRST_WARMUP_S;) call(o->impls[im], f64, n, threads, a, b, c);
            warmed = true;
        }
        double t0 = now_s();
        int64_t it = 0;
        do {
            call(o->impls[im], f64, n, threads, a, b, c);
            it++;
        } while (now_s() - t0 < o->min_s / 4);
        double per = (now_s() - t0) / (double)it;
        r[im].iters = (int64_t)(o->min_s / per) + 1;
    }
    bool pause = pauses(o, threads);
    for (int rep = 0; rep < o->reps; rep++) {
        bool first = true; /* (openblas, when listed, runs last in each rep) */
        if (pause) nanosleep(&(struct timespec){0, 200000000}, NULL);
        for (int im = 0; im < o->nimpls; im++) {
            if (!r[im].ok) continue;
            if (pause && (first || !strcmp(o->impls[im], "openblas"))) rewarm(o->impls[im], f64, n, threads, a, b, c);
            first = false;
            double t0 = now_s();
            for (int64_t it = 0; it < r[im].iters; it++) call(o->impls[im], f64, n, threads, a, b, c);
            r[im].t[rep] = (now_s() - t0) / (double)r[im].iters;
        }
    }
    double flops = 2.0 * n * n * (double)n, ref = 0;
    for (int im = 0; im < o->nimpls; im++)
        if (r[im].ok && !strcmp(o->impls[im], "openblas")) {
            double tmp[64];
            memcpy(tmp, r[im].t, sizeof(double) * (size_t)o->reps);
            qsort(tmp, (size_t)o->reps, sizeof(double), cmp_double);
            ref = flops / tmp[o->reps / 2] * 1e-9;
        }
    for (int im = 0; im < o->nimpls; im++) {
        if (!r[im].ok) continue;
        qsort(r[im].t, (size_t)o->reps, sizeof(double), cmp_double);
        double med = r[im].t[o->reps / 2], mn = r[im].t[0], mx = r[im].t[o->reps - 1];
        double gf = flops / med * 1e-9;
        const char *impl = o->impls[im];
        const char *kernel = !strcmp(impl, "builtin") ? ad__gemm_kernel_name(f64) : !strcmp(impl, "auto") ? "default" : "openblas";
        printf("%-4s %5d %3d  %-9s %-8s %9.3f %9.3f %9.3f %8.1f", f64 ? "f64" : "f32", n, threads, impl, kernel,
               med * 1e3, mn * 1e3, mx * 1e3, gf);
        if (ref > 0)
            printf("   %5.2f\n", gf / ref);
        else
            printf("       -\n");
        printf("{\"bench\":\"matmul_%s_n%d\",\"impl\":\"%s\",\"kernel\":\"%s\",\"threads\":%d,\"unit\":\"ms\","
               "\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"gflops\":%.2f,\"gflops_best\":%.2f,\"reps\":%d,"
               "\"iters\":%" PRId64 ",\"clock\":\"%s\"}\n",
               f64 ? "f64" : "f32", n, impl, kernel, threads, med * 1e3, mn * 1e3, mx * 1e3, gf, flops / mn * 1e-9,
               o->reps, r[im].iters, o->cpu_time ? "cpu" : "wall");
    }
    fflush(stdout);
    free(a), free(b), free(c);
}

int main(int argc, char **argv)
{
    opts o = {{64, 256, 1024}, 3, {1, 2}, 2, {0, 1}, 2, {"builtin", "auto", "openblas"}, 3, 11, 0.02, false};
    if (!ad__gemm_has_blas()) o.nimpls = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--quick")) {
            o.reps = 3, o.min_s = 0.005;
        } else if (!strcmp(argv[i], "--cpu-time")) {
            o.cpu_time = g_cpu_time = true;
        } else if (!strcmp(argv[i], "--sizes") && (o.nsizes = parse_ints(v, o.sizes)) > 0) {
            i++;
        } else if (!strcmp(argv[i], "--threads") && (o.nthreads = parse_ints(v, o.threads)) > 0) {
            i++;
        } else if (!strcmp(argv[i], "--reps") && atoi(v) > 0 && atoi(v) <= 64) {
            o.reps = atoi(v), i++;
        } else if (!strcmp(argv[i], "--min-ms") && atof(v) > 0) {
            o.min_s = atof(v) * 1e-3, i++;
        } else if (!strcmp(argv[i], "--dtypes")) {
            o.ndtypes = 0;
            if (strstr(v, "f32")) o.f64[o.ndtypes++] = 0;
            if (strstr(v, "f64")) o.f64[o.ndtypes++] = 1;
            i++;
        } else if (!strcmp(argv[i], "--level") && ad__gemm_level_named(v) >= 0) {
            g_level = ad__gemm_level_named(v);
            ad__gemm_set_backend(AD__GEMM_AUTO, g_level); /* (for the kernel names printed below) */
            i++;
        } else if (!strcmp(argv[i], "--impls")) {
            o.nimpls = 0;
            static const char *const all[3] = {"builtin", "auto", "openblas"};
            for (int k = 0; k < 3; k++)
                if (strstr(v, all[k]) && (k == 0 || ad__gemm_has_blas())) o.impls[o.nimpls++] = all[k];
            i++;
        } else {
            fprintf(stderr, "usage: %s [--sizes 64,256,1024] [--threads 1,2] [--dtypes f32,f64] [--reps N]\n"
                            "       [--min-ms MS] [--impls builtin,auto,openblas] [--level avx512|avx2|generic]\n"
                            "       [--cpu-time] [--quick]\n", argv[0]);
            return 2;
        }
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
#ifdef AD_HAVE_BLAS
    printf("# OpenBLAS %s, core %s%s%s\n", openblas_get_config(), openblas_get_corename(),
           ct ? "; OPENBLAS_CORETYPE is set to " : "", ct ? ct : "");
#else
    printf("# built without OpenBLAS%s%s\n", ct ? "; OPENBLAS_CORETYPE=" : "", ct ? ct : "");
#endif
    printf("# built-in kernels: f32 %s, f64 %s; %d reps of >= %.0f ms of %s time; vs-oblas = GFLOP/s ratio\n",
           ad__gemm_kernel_name(false), ad__gemm_kernel_name(true), o.reps, o.min_s * 1e3,
           o.cpu_time ? "process CPU" : "wall");
    printf("%-4s %5s %3s  %-9s %-8s %9s %9s %9s %8s %8s\n", "type", "n", "thr", "impl", "kernel", "med ms",
           "min ms", "max ms", "GFLOP/s", "vs-oblas");
    for (int d = 0; d < o.ndtypes; d++)
        for (int s = 0; s < o.nsizes; s++)
            for (int t = 0; t < o.nthreads; t++) run_case(&o, o.f64[d] != 0, o.sizes[s], o.threads[t]);
    ad__gemm_set_backend(AD__GEMM_AUTO, AD__GEMM_BEST);
    return 0;
}

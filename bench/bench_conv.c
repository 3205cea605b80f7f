/* bench_conv.c: ad_conv2d forward, and forward + backward, on the layer shapes of a small CNN; a table and JSON lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ad.h"

/*
** Cases are the convolutions of a Fashion-MNIST CNN at batch 64 (F32, NCHW):
** the first layer (1 -> 32 channels on 28x28), the second (32 -> 64 on 14x14),
** each with 3x3 and 5x5 kernels ("same" padding), a 1x1 convolution of the second
** layer's shape, and a stride-2 3x3 (32 -> 64 channels, 28x28 -> 14x14). "fwd" records conv2d on a
** tape; "fwdbwd" also runs ad_backward to both the input and the weight (what
** a training step pays). Each rep times enough calls to last --min-ms; the
** figures are the median, min and max per call over the reps.
** Output: a table, and one JSON line per case ("bench", "impl":"ours",
** "threads", "unit":"ms", "median", "min", "max") for bench/compare, which
** runs bench/peers/conv_torch.py on the same cases and prints the ratios.
** --cpu-time measures the process's CPU time instead of wall time (for a busy
** machine; with one thread it is the work done).
** --case runs only the cases whose name contains NAME.
** Usage: bench_conv [--threads N] [--reps N] [--min-ms X] [--quick] [--cpu-time] [--case NAME]
*/

typedef struct conv_case {
    const char *name;
    int64_t n, c, h, w, o, k, s; /* s: stride; padding k / 2 */
} conv_case;

static const conv_case cases[] = {
    {"l1_k3", 64, 1, 28, 28, 32, 3, 1},
    {"l1_k5", 64, 1, 28, 28, 32, 5, 1},
    {"l2_k3", 64, 32, 14, 14, 64, 3, 1},
    {"l2_k5", 64, 32, 14, 14, 64, 5, 1},
    {"l2_k1", 64, 32, 14, 14, 64, 1, 1},    /* a 1x1 (pointwise) convolution */
    {"s2_k3", 64, 32, 28, 28, 64, 3, 2},    /* a downsampling 3x3 with stride 2: 28x28 -> 14x14 */
};

static clockid_t g_clock = CLOCK_MONOTONIC; /* --cpu-time: CLOCK_PROCESS_CPUTIME_ID */

static double now(void)
{
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One call: conv2d on a reset tape, with a backward pass when bwd. */
static int run(ad_tape *t, const conv_case *c, ad_tensor *x, ad_tensor *w, ad_tensor *wg, ad_tensor *seed, bool bwd)
{
    ad_tape_reset(t);
    ad_var xv = ad_leaf(t, x);
    ad_var y = ad_conv2d(xv, ad_param(t, w, wg), c->s, c->k / 2, 1, 1);
    if (bwd && ad_backward(y, seed, 0) != AD_OK) return -1;
    return ad_ok(y) ? 0 : -1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int threads = 1, reps = 7;
    const char *only = NULL;
    double min_ms = 50;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--min-ms") == 0 && i + 1 < argc) min_ms = atof(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0) reps = 3, min_ms = 10;
        else if (strcmp(argv[i], "--cpu-time") == 0) g_clock = CLOCK_PROCESS_CPUTIME_ID;
        else if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--min-ms X] [--quick] [--cpu-time] [--case NAME]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || threads < 1) return 2;
    ad_set_num_threads(threads);
    /* OpenBLAS, loaded with the library (which calls it single-threaded only), starts its own idle
    ** threads at load, and they spin for about 2^28 cycles (0.1 s) before they park: on a 2-core
    ** machine they took the second core from the first case's 2-thread figures (fwdbwd_l1_k3 at
    ** 2 threads: 3.6 and 4.9 ms in two runs, 2.0 and 2.3 ms with OPENBLAS_THREAD_TIMEOUT=4).
    ** A training run never sees them; the benchmark waits them out. */
    nanosleep(&(struct timespec){0, 300000000}, NULL);
    printf("# ad_conv2d, F32, padding k/2; %d reps of >= %.0f ms (%s), %d thread%s\n", reps, min_ms,
           g_clock == CLOCK_MONOTONIC ? "wall" : "cpu time", threads, threads == 1 ? "" : "s");
    printf("%-14s %-22s %9s %9s %9s %8s\n", "case", "shape", "med ms", "min ms", "max ms", "GFLOP/s");
    ad_tape *t = ad_tape_new();
    ad_rng rng;
    ad_rng_seed(&rng, 1234);
    int status = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0] && status == 0; ci++) {
        const conv_case *c = &cases[ci];
        if (only && !strstr(c->name, only)) continue;
        ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(c->n, c->c, c->h, c->w));
        ad_tensor *w = ad_tensor_new(AD_F32, AD_SHAPE(c->o, c->c, c->k, c->k));
        ad_tensor *wg = ad_tensor_new(AD_F32, AD_SHAPE(c->o, c->c, c->k, c->k));
        int64_t oh = (c->h + 2 * (c->k / 2) - c->k) / c->s + 1, ow = (c->w + 2 * (c->k / 2) - c->k) / c->s + 1;
        ad_tensor *seed = ad_tensor_new(AD_F32, AD_SHAPE(c->n, c->o, oh, ow));
        double *times = malloc((size_t)reps * sizeof *times);
        if (!t || !x || !w || !wg || !seed || !times) {
            fprintf(stderr, "bench_conv: out of memory\n");
            return 1;
        }
        ad_rng_fill_uniform(&rng, x, -1, 1);
        ad_rng_fill_uniform(&rng, w, -0.1, 0.1);
        ad_rng_fill_uniform(&rng, seed, -1, 1);
        for (int bwd = 0; bwd < 2 && status == 0; bwd++) {
            /* warm up for 0.1 s at least (and min_ms / 4), and size the inner loop: with --quick's
            ** 2.5 ms the first case's forward read 1.0-1.2 ms per call against 0.30-0.46 ms after
            ** 0.1 s, in the same process (a 2-core Zen 5 virtual machine) */
            double t0 = now(), warm = min_ms / 4e3 > 0.1 ? min_ms / 4e3 : 0.1;
            int it = 0;
            while (now() - t0 < warm || it < 1) {
                if (run(t, c, x, w, wg, seed, bwd) != 0) {
                    fprintf(stderr, "bench_conv: %s\n", ad_tape_error(t));
                    status = 1;
                    break;
                }
                it++;
            }
            int iters = (int)(min_ms / 1e3 / ((now() - t0) / it)) + 1;
            for (int r = 0; r < reps && status == 0; r++) {
                double s = now();
                for (int i = 0; i < iters; i++) run(t, c, x, w, wg, seed, bwd);
                times[r] = (now() - s) / iters * 1e3;
            }
            qsort(times, (size_t)reps, sizeof *times, cmp);
            double med = times[reps / 2];
            /* 2 flops per multiply-add; backward costs two more products of the same size */
            double flops = 2.0 * (double)(c->n * c->o * oh * ow) * (double)(c->c * c->k * c->k) * (bwd ? 3 : 1);
            char shape[64];
            snprintf(shape, sizeof shape, "%lldx%lldx%lld->%lld k%lld%s", (long long)c->c, (long long)c->h,
                     (long long)c->w, (long long)c->o, (long long)c->k, c->s == 2 ? " s2" : "");
            char name[48];
            snprintf(name, sizeof name, "%s_%s", bwd ? "fwdbwd" : "fwd", c->name);
            printf("%-14s %-22s %9.3f %9.3f %9.3f %8.1f\n", name, shape, med, times[0], times[reps - 1],
                   flops / (med * 1e6));
            printf("{\"bench\":\"conv2d_%s\",\"impl\":\"ours\",\"threads\":%d,\"unit\":\"ms\",\"median\":%.6f,"
                   "\"min\":%.6f,\"max\":%.6f,\"gflops\":%.3f}\n",
                   name, threads, med, times[0], times[reps - 1], flops / (med * 1e6));
            fflush(stdout);
        }
        ad_tensor_free(x);
        ad_tensor_free(w);
        ad_tensor_free(wg);
        ad_tensor_free(seed);
        free(times);
    }
    ad_tape_free(t);
    return status;
}

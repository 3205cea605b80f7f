/* bench_tape.c: the tape's own cost: a scalar graph, small layers, and heap allocations per step. */
#include <autodiff/ad.h>

/* Usage: bench_tape [reps (200)] [threads (1)]; prints a table line and a JSON line per workload. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- timing: median, min and max of repeated runs ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double median, min, max;
} stats;

static stats summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return (stats){n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[0], v[n - 1]};
}

/* ---- an allocator that counts, to prove a warmed-up step allocates nothing ---- */

static long g_allocs; /* benchmark-only counter, not part of the library */

static void *counting_alloc(void *ud, void *ptr, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    g_allocs++;
    return realloc(ptr, nsize);
}

/* ---- workload 1: acc = acc + tanh(a*b + c), 2,500 times: 10,000 ops ---- */

typedef struct scalar_ws {
    ad_tensor *v[3], *g[3];
} scalar_ws;

static int scalar_step(ad_tape *t, scalar_ws *w)
{
    ad_tape_reset(t);
    ad_var a = ad_param(t, w->v[0], w->g[0]), b = ad_param(t, w->v[1], w->g[1]), c = ad_param(t, w->v[2], w->g[2]);
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < 2500; i++) acc = ad_add(acc, ad_tanh(ad_add(ad_mul(a, b), c)));
    return ad_backward(acc, NULL, AD_ACCUMULATE) == AD_OK ? 0 : -1;
}

/* ---- workload 1b: acc = acc + tanh(a*x_i + c) with a new leaf x_i recorded each time (data) ---- */

static int leaves_step(ad_tape *t, scalar_ws *w)
{
    ad_tape_reset(t);
    ad_var a = ad_param(t, w->v[0], w->g[0]), c = ad_param(t, w->v[2], w->g[2]);
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < 2500; i++) acc = ad_add(acc, ad_tanh(ad_add(ad_mul(a, ad_scalar(t, AD_F64, 0.001 * i)), c)));
    return ad_backward(acc, NULL, AD_ACCUMULATE) == AD_OK ? 0 : -1;
}

/* ---- workload 2: sum(tanh(W @ x + b)), W [n,n], x [n], b [n], F32 ---- */

typedef struct layer_ws {
    int64_t n;
    ad_tensor *w, *gw, *b, *gb, *x;
} layer_ws;

static int layer_step(ad_tape *t, layer_ws *l)
{
    ad_tape_reset(t);
    ad_var w = ad_param(t, l->w, l->gw), b = ad_param(t, l->b, l->gb), x = ad_const(t, l->x);
    ad_var y = ad_sum(ad_tanh(ad_add(ad_matmul(w, x), b)));
    return ad_backward(y, NULL, AD_ACCUMULATE) == AD_OK ? 0 : -1;
}

static void report(const char *name, const char *unit, stats s, long allocs, int threads)
{
    printf("%-28s %12.3f %12.3f %12.3f  %-6s  heap allocs/step after warm-up: %ld\n", name, s.median, s.min, s.max,
           unit, allocs);
    printf("{\"bench\":\"%s\",\"impl\":\"ours\",\"unit\":\"%s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"allocs_per_step\":%ld,"
           "\"threads\":%d}\n",
           name, unit, s.median, s.min, s.max, allocs, threads);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 200, threads = argc > 2 ? atoi(argv[2]) : 1;
    if (reps < 3) reps = 3;
    if (threads < 1) threads = 1;
    ad_set_allocator(counting_alloc, NULL);
    ad_set_num_threads(threads); /* only the n = 256 product could use them */
    double *times = malloc((size_t)reps * sizeof *times);
    ad_tape *t = ad_tape_new();
    if (!times || !t) return 1;
    printf("%-28s %12s %12s %12s  %-6s\n", "workload", "median", "min", "max", "unit");

    scalar_ws sw;
    for (int i = 0; i < 3; i++) {
        sw.v[i] = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (const double[]){0.1 * (i + 1)});
        sw.g[i] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    }
    for (int i = 0; i < 3; i++) scalar_step(t, &sw); /* warm-up */
    long before = g_allocs;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (scalar_step(t, &sw)) return fprintf(stderr, "%s\n", ad_tape_error(t)), 1;
        times[r] = (now_s() - t0) / 10000.0 * 1e9;
    }
    long allocs = (g_allocs - before) / reps;
    size_t nodes = ad_tape_node_count(t);
    for (int r = 0; r < reps; r++) times[r] *= 10000.0 / (double)nodes;
    stats per_node = summarize(times, reps);
    for (int r = 0; r < reps; r++) times[r] *= (double)nodes / 10000.0;
    report("scalar_graph_10k_ops", "ns/op", summarize(times, reps), allocs, threads);
    printf("# the same graph per node: %zu nodes, leaves and the initial constant included\n", nodes);
    report("scalar_graph_per_node", "ns/node", per_node, allocs, threads);

    for (int i = 0; i < 3; i++) leaves_step(t, &sw);
    before = g_allocs;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (leaves_step(t, &sw)) return fprintf(stderr, "%s\n", ad_tape_error(t)), 1;
        times[r] = (now_s() - t0) * 1e9;
    }
    nodes = ad_tape_node_count(t);
    for (int r = 0; r < reps; r++) times[r] /= (double)nodes;
    printf("# acc += tanh(a*x_i + c), a leaf x_i recorded each iteration: %zu nodes\n", nodes);
    report("scalar_graph_leaves_per_node", "ns/node", summarize(times, reps), (g_allocs - before) / reps, threads);

    static const int64_t sizes[] = {4, 32, 256};
    for (int k = 0; k < 3; k++) {
        int64_t n = sizes[k];
        layer_ws l = {n, ad_tensor_new(AD_F32, AD_SHAPE(n, n)), ad_tensor_new(AD_F32, AD_SHAPE(n, n)),
                      ad_tensor_new(AD_F32, AD_SHAPE(n)), ad_tensor_new(AD_F32, AD_SHAPE(n)),
                      ad_tensor_new(AD_F32, AD_SHAPE(n))};
        ad_rng rng;
        ad_rng_seed(&rng, 42);
        ad_rng_fill_normal(&rng, l.w, 0, 1.0 / (double)n);
        ad_rng_fill_normal(&rng, l.x, 0, 1);
        int inner = n <= 32 ? 1000 : 100;
        for (int i = 0; i < 10; i++) layer_step(t, &l);
        before = g_allocs;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            for (int i = 0; i < inner; i++)
                if (layer_step(t, &l)) return fprintf(stderr, "%s\n", ad_tape_error(t)), 1;
            times[r] = (now_s() - t0) / inner * 1e6;
        }
        char name[64];
        snprintf(name, sizeof name, "sum_tanh_matvec_n%lld", (long long)n);
        report(name, "us/it", summarize(times, reps), (g_allocs - before) / ((long)reps * inner), threads);
        ad_tensor_free(l.w);
        ad_tensor_free(l.gw);
        ad_tensor_free(l.b);
        ad_tensor_free(l.gb);
        ad_tensor_free(l.x);
    }
    for (int i = 0; i < 3; i++) {
        ad_tensor_free(sw.v[i]);
        ad_tensor_free(sw.g[i]);
    }
    ad_tape_free(t);
    free(times);
    return 0;
}

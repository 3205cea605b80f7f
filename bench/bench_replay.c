/* bench_replay.c: a recorded tape replayed against recorded again each step, and H v by forward over reverse against reverse over reverse. */
#include <autodiff/ad.h>

/* Usage: bench_replay [reps (50)] [threads (1)]; prints a table line and a JSON line per case.
**
** Workloads (those of bench_tape):
**   scalar graph: acc = acc + tanh(a*b + c), 2,500 times: 10,000 ops on 0-dimensional F64 params;
**   sum(tanh(W @ x + b)), W [n,n], x [n], b [n], F32, n = 4, 32, 256.
** Each is timed as a training step would run it: "recorded" = reset, record, backward;
** "replayed" = ad_tape_replay, backward; and the forward part alone (record vs replay).
** Then a Hessian-vector product of an MLP loss with 9,610 parameters: ad_hvp (forward over
** reverse) against reverse over reverse written with ad_gradients / ad_gradients_seed. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static long g_allocs; /* benchmark-only counter */
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

static void report(const char *name, const char *impl, const char *unit, stats s, double allocs, int threads)
{
    printf("%-30s %-16s %10.3f %10.3f %10.3f  %-6s  heap allocs/step: %g\n", name, impl, s.median, s.min, s.max, unit,
           allocs);
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"unit\":\"%s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,"
           "\"allocs_per_step\":%g,\"threads\":%d}\n",
           name, impl, unit, s.median, s.min, s.max, allocs, threads);
}

/* ---- the workloads: record (forward only) and their leaves ---- */

typedef struct work {
    int nleaf;
    ad_tensor *v[3], *g[3]; /* params (value, grad); a const in slot 2 for the layer when g[2] is NULL */
    ad_var leaf[3];
    int64_t ops; /* forward ops recorded */
    bool layer;
} work;

static ad_var record(ad_tape *t, work *w)
{
    ad_tape_reset(t);
    for (int i = 0; i < w->nleaf; i++)
        w->leaf[i] = w->g[i] ? ad_param(t, w->v[i], w->g[i]) : ad_const(t, w->v[i]);
    if (w->layer) return ad_sum(ad_tanh(ad_add(ad_matmul(w->leaf[0], w->leaf[2]), w->leaf[1])));
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < 2500; i++) acc = ad_add(acc, ad_tanh(ad_add(ad_mul(w->leaf[0], w->leaf[1]), w->leaf[2])));
    return acc;
}

/* One case: mode 0 recorded step, 1 replayed step, 2 record only, 3 replay only. Returns time per unit. */
static int run(ad_tape *t, work *w, int mode, int reps, int inner, double unit, double *times, double *allocs)
{
    ad_var y = record(t, w);
    if (ad_backward(y, NULL, AD_ACCUMULATE) != AD_OK) return -1;
    for (int warm = 0; warm < 3; warm++) {
        if (mode == 0 || mode == 2) y = record(t, w);
        else if (ad_tape_replay(t, 0, NULL, NULL) != AD_OK) return -1;
        if (mode < 2 && ad_backward(y, NULL, AD_ACCUMULATE) != AD_OK) return -1;
    }
    long before = g_allocs;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int i = 0; i < inner; i++) {
            if (mode == 0 || mode == 2) y = record(t, w);
            else if (ad_tape_replay(t, 0, NULL, NULL) != AD_OK) return -1;
            if (mode < 2 && ad_backward(y, NULL, AD_ACCUMULATE) != AD_OK) return -1;
        }
        times[r] = (now_s() - t0) / inner * unit;
    }
    *allocs = (double)(g_allocs - before) / ((double)reps * inner);
    return 0;
}

static const char *const impls[4] = {"recorded", "replayed", "record_fwd", "replay_fwd"};

static int bench_work(ad_tape *t, work *w, const char *name, const char *unit, double scale, int reps, int inner,
                      int threads)
{
    double *times = malloc((size_t)reps * sizeof *times), med[4];
    if (!times) return -1;
    for (int mode = 0; mode < 4; mode++) {
        double allocs;
        if (run(t, w, mode, reps, inner, scale, times, &allocs)) {
            fprintf(stderr, "%s: %s\n", name, ad_tape_error(t));
            free(times);
            return -1;
        }
        stats s = summarize(times, reps);
        med[mode] = s.median;
        report(name, impls[mode], unit, s, allocs, threads);
    }
    printf("%-30s replayed step %.2fx faster than recorded; forward alone %.2fx\n", name, med[0] / med[1],
           med[2] / med[3]);
    free(times);
    return 0;
}

/* ---- H v of an MLP loss: 64 -> 128 tanh -> 10, squared error over a batch of 32: 9,610 parameters ---- */

enum { IN = 64, HID = 128, OUT = 10, BATCH = 32 };
#define NPARAM ((int64_t)IN * HID + HID + HID * OUT + OUT)

typedef struct mlp_ctx {
    ad_tensor *data, *target;
} mlp_ctx;

static ad_var mlp_loss(ad_tape *t, const ad_var *x, void *ctx)
{
    const mlp_ctx *m = ctx;
    int64_t a = (int64_t)IN * HID, b = a + HID, c = b + (int64_t)HID * OUT;
    ad_var w1 = ad_reshape(ad_slice(x[0], 0, 0, a), AD_SHAPE(IN, HID)), b1 = ad_slice(x[0], 0, a, b);
    ad_var w2 = ad_reshape(ad_slice(x[0], 0, b, c), AD_SHAPE(HID, OUT)), b2 = ad_slice(x[0], 0, c, NPARAM);
    ad_var h = ad_tanh(ad_add(ad_matmul(ad_const(t, m->data), w1), b1));
    ad_var y = ad_add(ad_matmul(h, w2), b2);
    return ad_mean(ad_square(ad_sub(y, ad_const(t, m->target))));
}

/* reverse over reverse with the public API: g recorded with AD_CREATE_GRAPH, then d(g . v)/dx */
static ad_status hvp_rr(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out)
{
    ad_tape *t = ad_tape_new();
    if (!t) return AD_ERR_NOMEM;
    ad_var xv = ad_leaf(t, x), g, hv;
    ad_var y = f(t, &xv, ctx);
    ad_status s = ad_gradients(y, 1, &xv, &g, AD_CREATE_GRAPH);
    if (s == AD_OK) s = ad_gradients_seed(g, ad_const(t, v), 1, &xv, &hv, 0);
    if (s == AD_OK) s = ad_tensor_copy(out, ad_value(hv));
    ad_tape_free(t);
    return s;
}

static int bench_hvp(int reps, int threads)
{
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    mlp_ctx m = {ad_tensor_new(AD_F64, AD_SHAPE(BATCH, IN)), ad_tensor_new(AD_F64, AD_SHAPE(BATCH, OUT))};
    ad_tensor *x = ad_tensor_new(AD_F64, AD_SHAPE(NPARAM)), *v = ad_tensor_new(AD_F64, AD_SHAPE(NPARAM));
    ad_tensor *o1 = ad_tensor_new(AD_F64, AD_SHAPE(NPARAM)), *o2 = ad_tensor_new(AD_F64, AD_SHAPE(NPARAM));
    ad_rng_fill_normal(&rng, m.data, 0, 1);
    ad_rng_fill_normal(&rng, m.target, 0, 1);
    ad_rng_fill_normal(&rng, x, 0, 0.1);
    ad_rng_fill_normal(&rng, v, 0, 1);
    double *times = malloc((size_t)reps * sizeof *times), med[2];
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        ad_tensor *o = k ? o2 : o1;
        for (int r = -2; r < reps; r++) {
            double t0 = now_s();
            ad_status s = k ? hvp_rr(mlp_loss, &m, x, v, o) : ad_hvp(mlp_loss, &m, x, v, o);
            if (s != AD_OK) {
                fprintf(stderr, "hvp: %s\n", ad_status_str(s));
                rc = -1;
                break;
            }
            if (r >= 0) times[r] = (now_s() - t0) * 1e3;
        }
        if (rc) break;
        stats st = summarize(times, reps);
        med[k] = st.median;
        report("hvp_mlp_9610", k ? "reverse_reverse" : "forward_reverse", "ms", st, 0, threads);
    }
    if (rc == 0) {
        double worst = 0;
        for (int64_t i = 0; i < NPARAM; i++) {
            double d = ad_tensor_get(o1, i) - ad_tensor_get(o2, i);
            worst = d < 0 ? (-d > worst ? -d : worst) : (d > worst ? d : worst);
        }
        printf("hvp_mlp_9610                   forward over reverse / reverse over reverse time: %.2f "
               "(largest difference of the two H v: %.3g)\n",
               med[0] / med[1], worst);
    }
    free(times);
    ad_tensor_free(m.data);
    ad_tensor_free(m.target);
    ad_tensor_free(x);
    ad_tensor_free(v);
    ad_tensor_free(o1);
    ad_tensor_free(o2);
    return rc;
}

/* The same H v with the parameters as four leaves (no slicing of one vector) on one tape reset each
** time: forward over reverse (ad_tangents through the recorded gradients) against reverse over
** reverse (the gradient of sum_i g_i . v_i). */
static int bench_hvp_leaves(int reps, int threads)
{
    ad_rng rng;
    ad_rng_seed(&rng, 8);
    static const int64_t shp[4][2] = {{IN, HID}, {HID, 0}, {HID, OUT}, {OUT, 0}};
    ad_tensor *p[4], *v[4], *data = ad_tensor_new(AD_F64, AD_SHAPE(BATCH, IN));
    ad_tensor *target = ad_tensor_new(AD_F64, AD_SHAPE(BATCH, OUT));
    ad_rng_fill_normal(&rng, data, 0, 1);
    ad_rng_fill_normal(&rng, target, 0, 1);
    for (int i = 0; i < 4; i++) {
        int nd = shp[i][1] ? 2 : 1;
        p[i] = ad_tensor_new(AD_F64, nd, shp[i]);
        v[i] = ad_tensor_new(AD_F64, nd, shp[i]);
        ad_rng_fill_normal(&rng, p[i], 0, 0.1);
        ad_rng_fill_normal(&rng, v[i], 0, 1);
    }
    ad_tape *t = ad_tape_new();
    double *times = malloc((size_t)reps * sizeof *times), med[2], first[2] = {0, 0};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        for (int r = -2; r < reps && rc == 0; r++) {
            double t0 = now_s();
            ad_tape_reset(t);
            ad_var x[4], vs[4], g[4], hv[4];
            for (int i = 0; i < 4; i++) {
                x[i] = ad_leaf(t, p[i]);
                vs[i] = ad_const(t, v[i]);
            }
            ad_var h = ad_tanh(ad_add(ad_matmul(ad_const(t, data), x[0]), x[1]));
            ad_var y = ad_mean(ad_square(ad_sub(ad_add(ad_matmul(h, x[2]), x[3]), ad_const(t, target))));
            ad_status s = ad_gradients(y, 4, x, g, AD_CREATE_GRAPH);
            if (s == AD_OK && k == 0) {
                ad_tape_set_grad_enabled(t, false);
                s = ad_tangents(4, x, vs, 4, g, hv);
                ad_tape_set_grad_enabled(t, true);
            } else if (s == AD_OK) {
                ad_var gv = ad_sum(ad_mul(g[0], vs[0]));
                for (int i = 1; i < 4; i++) gv = ad_add(gv, ad_sum(ad_mul(g[i], vs[i])));
                s = ad_gradients(gv, 4, x, hv, 0);
            }
            if (s != AD_OK) {
                fprintf(stderr, "hvp leaves: %s\n", ad_tape_error(t));
                rc = -1;
            }
            if (r >= 0) times[r] = (now_s() - t0) * 1e3;
            if (rc == 0) first[k] = ad_tensor_get(ad_value(hv[0]), 5);
        }
        if (rc) break;
        stats st = summarize(times, reps);
        med[k] = st.median;
        report("hvp_mlp_9610_leaves", k ? "reverse_reverse" : "forward_reverse", "ms", st, 0, threads);
    }
    if (rc == 0)
        printf("hvp_mlp_9610_leaves            forward over reverse / reverse over reverse time: %.2f "
               "(an element of both: %.17g, %.17g)\n",
               med[0] / med[1], first[0], first[1]);
    free(times);
    ad_tape_free(t);
    for (int i = 0; i < 4; i++) {
        ad_tensor_free(p[i]);
        ad_tensor_free(v[i]);
    }
    ad_tensor_free(data);
    ad_tensor_free(target);
    return rc;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50, threads = argc > 2 ? atoi(argv[2]) : 1;
    if (reps < 3) reps = 3;
    if (threads < 1) threads = 1;
    ad_set_allocator(counting_alloc, NULL);
    ad_set_num_threads(threads);
    if (getenv("AD_BENCH_HVP_ONLY")) return bench_hvp(reps, threads) || bench_hvp_leaves(reps, threads) ? 1 : 0;
    ad_tape *t = ad_tape_new();
    if (!t) return 1;
    printf("%-30s %-16s %10s %10s %10s  %-6s\n", "workload", "impl", "median", "min", "max", "unit");

    work sw = {3, {NULL}, {NULL}, {{0}}, 10000, false};
    for (int i = 0; i < 3; i++) {
        sw.v[i] = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (const double[]){0.1 * (i + 1)});
        sw.g[i] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    }
    int rc = bench_work(t, &sw, "scalar_graph_10k_ops", "ns/op", 1e9 / 10000.0, reps, 1, threads);
    for (int i = 0; i < 3; i++) {
        ad_tensor_free(sw.v[i]);
        ad_tensor_free(sw.g[i]);
    }

    static const int64_t sizes[] = {4, 32, 256};
    for (int k = 0; k < 3 && rc == 0; k++) {
        int64_t n = sizes[k];
        work lw = {3, {ad_tensor_new(AD_F32, AD_SHAPE(n, n)), ad_tensor_new(AD_F32, AD_SHAPE(n)),
                       ad_tensor_new(AD_F32, AD_SHAPE(n))},
                   {ad_tensor_new(AD_F32, AD_SHAPE(n, n)), ad_tensor_new(AD_F32, AD_SHAPE(n)), NULL}, {{0}}, 5, true};
        ad_rng rng;
        ad_rng_seed(&rng, 42);
        ad_rng_fill_normal(&rng, lw.v[0], 0, 1.0 / (double)n);
        ad_rng_fill_normal(&rng, lw.v[2], 0, 1);
        char name[64];
        snprintf(name, sizeof name, "sum_tanh_matvec_n%lld", (long long)n);
        rc = bench_work(t, &lw, name, "us/it", 1e6, reps, n <= 32 ? 1000 : 100, threads);
        for (int i = 0; i < 3; i++) {
            ad_tensor_free(lw.v[i]);
            ad_tensor_free(lw.g[i]);
        }
    }
    if (rc == 0) rc = bench_hvp(reps < 20 ? reps : 20, threads);
    if (rc == 0) rc = bench_hvp_leaves(reps < 20 ? reps : 20, threads);
    ad_tape_free(t);
    return rc ? 1 : 0;
}

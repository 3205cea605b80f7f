/* bench_dist.c: compute per step against gradient all-reduce per step for the MLP, the CNN and a small transformer, and the scaling model's efficiency at 8/64/512 ranks. */
#include "nn.h"
#include "nn_dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
** Run under mpirun (mpirun -np 2 ./build/bench/bench_dist [threads]). For each model it
** measures, with the per-rank batch of the model's own training run:
**   t_c   one training step on one rank (forward, backward, Adam), median of the steps, in
**         CPU time of the calling thread (so: meant for 1 thread);
**   S     the bytes of gradients all-reduced per step;
**   t_ar  nn_dist_allreduce_grads on this run's ranks (median).
** and prints the model of docs/distributed.md: a ring all-reduce sends 2 (N-1)/N S bytes per
** rank, plus 2 log2(N) latencies alpha (the reduce-scatter + all-gather that MPI libraries use
** for large messages), on a link of BW bytes/s:
**   t_ar(N) = 2 (N-1)/N S / BW + 2 log2(N) alpha,   efficiency(N) = t_c / (t_c + t_ar(N))
** without overlap, and t_c / max(t_c, t_ar(N)) when the reduction hides under backward.
*/

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of the calling thread: a step's compute on one thread, much less disturbed than wall
** time when other work shares the cores */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct model {
    const char *name;
    nn_module *m;
    ad_tensor *x;   /* one batch */
    int64_t *labels; /* classifiers; NULL: mean of squares of the output */
    int64_t batch;
} model;

static ad_var loss_of(model *md, ad_tape *t)
{
    ad_var y = nn_forward(md->m, t, ad_const(t, md->x));
    if (md->labels) {
        if (ad_value(y) && ad_value(y)->ndim > 2) y = ad_reshape(y, 2, (const int64_t[]){md->batch, -1});
        return nn_loss_cross_entropy(y, md->labels);
    }
    return ad_mean(ad_square(y));
}

static int rank;

static void run(nn_dist *d, model *md, int steps, int reduces)
{
    nn_error e = {0};
    nn_optim *opt = nn_optim_for("adam", md->m, NULL, &e);
    ad_tape *t = ad_tape_new();
    double *tc = malloc(sizeof(double) * (size_t)steps), *tr = malloc(sizeof(double) * (size_t)reduces);
    for (int s = -2; s < steps; s++) { /* two warm-up steps */
        double t0 = cpu_now();
        ad_tape_reset(t);
        if (nn_train_step(opt, loss_of(md, t), NULL, NULL, &e) != AD_OK) {
            fprintf(stderr, "bench_dist: %s: %s\n", md->name, e.message);
            exit(1);
        }
        if (s >= 0) tc[s] = cpu_now() - t0;
    }
    int64_t weights = nn_module_num_weights(md->m);
    double bytes = 4.0 * (double)weights;
    for (int s = 0; s < reduces; s++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now();
        if (nn_dist_allreduce_grads(d, md->m, 1.0 / nn_dist_size(d), &e) != AD_OK) {
            fprintf(stderr, "bench_dist: %s\n", e.message);
            exit(1);
        }
        tr[s] = now() - t0;
    }
    double c = median(tc, steps), r = median(tr, reduces);
    /* the slowest rank's figures (a step waits for it) */
    double mine[2] = {c, r}, worst[2];
    MPI_Allreduce(mine, worst, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    c = worst[0];
    r = worst[1];
    if (rank == 0) {
        const double bw = 25e9 / 8, alpha = 30e-6;
        printf("%-12s batch %4lld/rank  %9lld weights  S = %6.2f MB  t_c = %7.2f ms CPU  t_ar(%d ranks, here) = %6.3f ms wall",
               md->name, (long long)md->batch, (long long)weights, bytes / 1e6, 1e3 * c, nn_dist_size(d), 1e3 * r);
        printf("\n%-12s model at 25 Gbit/s, alpha 30 us:", "");
        for (int n = 8; n <= 512; n *= 8) {
            double tar = 2.0 * (n - 1) / n * bytes / bw + 2 * log2(n) * alpha;
            printf("  N=%d: t_ar %.2f ms, eff %.0f%% (%.0f%% overlapped)", n, 1e3 * tar, 100 * c / (c + tar),
                   100 * c / (c > tar ? c : tar));
        }
        printf("\n");
        fflush(stdout);
    }
    free(tc);
    free(tr);
    ad_tape_free(t);
    nn_optim_free(opt);
}

static void fill(ad_tensor *x, ad_rng *rng)
{
    for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, ad_rng_uniform(rng));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    nn_error e = {0};
    nn_dist *d = nn_dist_new(MPI_COMM_WORLD, &e);
    if (!d) return fprintf(stderr, "bench_dist: %s\n", e.message), 1;
    rank = nn_dist_rank(d);
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    bool quick = argc > 2 && strcmp(argv[2], "--quick") == 0;
    ad_set_num_threads(threads > 0 ? threads : 1);
    if (rank == 0) printf("bench_dist: %d ranks x %d threads\n", nn_dist_size(d), threads);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    int64_t labels[128];
    for (int i = 0; i < 128; i++) labels[i] = i % 10;

    model mlp = {"MLP", nn_mlp(4, (const int64_t[]){784, 256, 128, 10}, NN_RELU, &rng, NULL),
                 ad_tensor_new(AD_F32, AD_SHAPE(128, 784)), labels, 128};
    fill(mlp.x, &rng);
    run(d, &mlp, quick ? 5 : 50, quick ? 5 : 50);

    model cnn = {"CNN", nn_model_from_spec("conv:32:3,pool:2,conv:64:3,pool:2,fc:128,fc:10", 1, 28, 28, &rng, NULL),
                 ad_tensor_new(AD_F32, AD_SHAPE(64, 1, 28, 28)), labels, 64};
    fill(cnn.x, &rng);
    run(d, &cnn, quick ? 3 : 20, quick ? 5 : 50);

    /* a small transformer: 4 pre-norm blocks, d_model 128, 4 heads, 32 sequences of 128 tokens */
    nn_module *blocks[4];
    for (int i = 0; i < 4; i++) {
        nn_transformer_opts o = nn_transformer_defaults(128, 4);
        o.causal = true;
        blocks[i] = nn_transformer_block(&o, &rng, NULL);
    }
    model tr = {"transformer", nn_sequential(4, blocks, NULL), ad_tensor_new(AD_F32, AD_SHAPE(32, 128, 128)), NULL, 32};
    fill(tr.x, &rng);
    run(d, &tr, quick ? 2 : 10, quick ? 5 : 50);

    model *all[3] = {&mlp, &cnn, &tr};
    for (int i = 0; i < 3; i++) {
        nn_module_free(all[i]->m);
        ad_tensor_free(all[i]->x);
    }
    nn_dist_free(d);
    MPI_Finalize();
    return 0;
}

/* bench_cnn.c: training speed of examples/cnn_fashion's network (seconds per 200 steps of Adam, batch 64, Fashion-MNIST). */
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
** The network of examples/cnn_fashion (spec conv:32:3,pool:2,conv:64:3,pool:2,fc:128,fc:10:
** two 3x3 convolutions with ReLU, each followed by 2x2 max pooling, a hidden layer of 128 and
** a 10-way output), cross-entropy, Adam (lr 1e-3), shuffled batches of 64, one step (nn_train_step)
** as nn_fit takes it. bench/peers/cnn_torch.py trains the same network in PyTorch.
** Each rep times 200 steps (after 5 warm-up steps); prints median, min and max seconds per
** 200 steps as a table line and a JSON line ("bench":"cnn_200_steps").
** Usage: bench_cnn [--threads N] [--reps N] [--steps N] [--quick] [--data DIR]
*/

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

int main(int argc, char **argv)
{
    int threads = 1, reps = 3, steps = 200;
    const char *dir = "/usr/share/datasets/fashion-mnist";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--quick")) reps = 1, steps = 50;
        else return fprintf(stderr, "usage: bench_cnn [--threads N] [--reps N] [--steps N] [--quick] [--data DIR]\n"), 2;
    }
    if (threads < 1 || reps < 1 || steps < 1) return fprintf(stderr, "bench_cnn: bad arguments\n"), 2;
    ad_set_num_threads(threads);
    char ip[512], lp[512];
    nn_error err = {0};
    snprintf(ip, sizeof ip, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/train-labels-idx1-ubyte.gz", dir);
    nn_dataset *ds = NULL;
    if (nn_dataset_load_idx(ip, lp, &ds, &err) != AD_OK) return fprintf(stderr, "bench_cnn: %s\n", err.message), 1;

    enum { BATCH = 64 };
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *net = nn_model_from_spec("conv:32:3,pool:2,conv:64:3,pool:2,fc:128,fc:10", 1, 28, 28, &rng, &err);
    nn_optim *opt = net ? nn_adam(net, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL) : NULL;
    nn_batcher *b = nn_batcher_new(ds, BATCH, true, 1, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(BATCH, ds->dim));
    int64_t labels[BATCH];
    ad_tape *t = ad_tape_new();
    double *secs = malloc((size_t)reps * sizeof *secs);
    if (!net || !opt || !b || !x || !t || !secs) return fprintf(stderr, "bench_cnn: %s\n", net ? "out of memory" : err.message), 1;

    double loss = 0;
    for (int r = -1; r < reps; r++) {
        int n = r < 0 ? 5 : steps;
        double t0 = now_s();
        for (int s = 0; s < n; s++) {
            int64_t got = nn_batcher_next(b, x, NULL, labels);
            if (got < BATCH) { /* a short last batch: start the next epoch */
                nn_batcher_reset(b);
                got = nn_batcher_next(b, x, NULL, labels);
            }
            ad_tape_reset(t);
            ad_var l = nn_loss_cross_entropy(nn_forward(net, t, ad_const(t, x)), labels);
            if (nn_train_step(opt, l, NULL, NULL, &err) != AD_OK) return fprintf(stderr, "bench_cnn: %s\n", err.message), 1;
            loss = ad_item(l);
        }
        if (r >= 0) secs[r] = now_s() - t0;
    }
    qsort(secs, (size_t)reps, sizeof *secs, cmp_double);
    double med = reps % 2 ? secs[reps / 2] : 0.5 * (secs[reps / 2 - 1] + secs[reps / 2]);
    printf("cnn_%d_steps  threads=%d  median %.3f s  min %.3f  max %.3f  (%d reps, last loss %.4f)\n", steps, threads,
           med, secs[0], secs[reps - 1], reps, loss);
    printf("{\"bench\":\"cnn_%d_steps\",\"impl\":\"ours\",\"threads\":%d,\"unit\":\"s\",\"median\":%.6g,\"min\":%.6g,"
           "\"max\":%.6g}\n",
           steps, threads, med, secs[0], secs[reps - 1]);
    free(secs);
    ad_tape_free(t);
    ad_tensor_free(x);
    nn_batcher_free(b);
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(ds);
    return 0;
}

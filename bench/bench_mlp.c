/* bench_mlp.c: training speed of a 784-256-128-10 ReLU MLP on Fashion-MNIST (seconds per epoch, peak RSS, allocations per step). */
#include "nn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/*
** Usage: bench_mlp [--threads N] [--epochs N] [--sgd] [--quick] [--data DIR]
**
** Trains with Adam (lr 1e-3) or SGD (lr 0.05, momentum 0.9), batch 64, shuffled,
** as bench/peers/mlp_torch.py does, writing one step by hand as nn_fit does.
** Each epoch is timed (loading batches included, evaluation excluded); it prints
** the median/min/max seconds per epoch (wall; and the least CPU time), the peak RSS of the process and the heap
** allocations per step after the first epoch's first 3 steps, as a table line
** and a JSON line each. --quick: 200 steps per "epoch" (for smoke runs).
*/

#define DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* An allocator that counts, to show a warmed-up step allocates nothing. */
typedef struct counter {
    long allocs;
} counter;

static void *counting_alloc(void *ud, void *ptr, size_t nsize)
{
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    ((counter *)ud)->allocs++;
    return realloc(ptr, nsize);
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

int main(int argc, char **argv)
{
    int threads = 1, epochs = 3;
    bool sgd = false, quick = false;
    const char *dir = DEFAULT_DIR;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--sgd")) sgd = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else return fprintf(stderr, "usage: bench_mlp [--threads N] [--epochs N] [--sgd] [--quick] [--data DIR]\n"), 2;
    }
    if (threads < 1 || epochs < 1) return fprintf(stderr, "bench_mlp: threads and epochs must be >= 1\n"), 2;

    counter cnt = {0};
    ad_set_allocator(counting_alloc, &cnt);
    ad_set_num_threads(threads);

    char ip[512], lp[512];
    nn_error err = {0};
    snprintf(ip, sizeof ip, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/train-labels-idx1-ubyte.gz", dir);
    nn_dataset *ds = NULL;
    if (nn_dataset_load_idx(ip, lp, &ds, &err) != AD_OK) return fprintf(stderr, "bench_mlp: %s\n", err.message), 1;

    enum { BATCH = 64 };
    ad_rng rng;
    ad_rng_seed(&rng, 42);
    nn_module *net = nn_mlp(4, (const int64_t[]){784, 256, 128, 10}, NN_RELU, &rng, NULL);
    nn_optim *opt = net ? (sgd ? nn_sgd(net, 0.05, 0.9, 0.0, false, NULL) : nn_adam(net, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL)) : NULL;
    nn_batcher *b = nn_batcher_new(ds, BATCH, true, 1, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(BATCH, ds->dim));
    int64_t labels[BATCH];
    ad_tape *t = ad_tape_new();
    double *secs = malloc((size_t)epochs * sizeof *secs), *cpu = malloc((size_t)epochs * sizeof *cpu);
    if (!net || !opt || !b || !x || !t || !secs || !cpu) return fprintf(stderr, "bench_mlp: out of memory\n"), 1;

    long steps_counted = 0, allocs_counted = 0;
    double last_loss = 0;
    for (int e = 0; e < epochs; e++) {
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        int64_t r, step = 0;
        while ((r = nn_batcher_next(b, x, NULL, labels)) > 0 && (!quick || step < 200)) {
            long a0 = cnt.allocs;
            ad_tape_reset(t);
            ad_tensor view = *x; /* the first r rows: the last batch may be short */
            view.shape[0] = r;
            view.size = r * x->shape[1];
            ad_var loss = nn_loss_cross_entropy(nn_forward(net, t, ad_const(t, &view)), labels);
            if (nn_train_step(opt, loss, NULL, NULL, &err) != AD_OK)
                return fprintf(stderr, "bench_mlp: %s\n", err.message), 1;
            last_loss = ad_item(loss);
            if (e > 0 || step >= 3) {
                allocs_counted += cnt.allocs - a0;
                steps_counted++;
            }
            step++;
        }
        secs[e] = clock_s(CLOCK_MONOTONIC) - t0;
        cpu[e] = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        nn_batcher_reset(b);
    }

    double rss = peak_rss_mib(), allocs = steps_counted ? (double)allocs_counted / (double)steps_counted : 0;
    qsort(secs, (size_t)epochs, sizeof *secs, cmp_double);
    qsort(cpu, (size_t)epochs, sizeof *cpu, cmp_double);
    double med = epochs % 2 ? secs[epochs / 2] : 0.5 * (secs[epochs / 2 - 1] + secs[epochs / 2]);
    const char *name = quick ? "mlp_200_steps" : "mlp_epoch";
    printf("%-14s %s threads=%d  median %.3f s  min %.3f  max %.3f  (%d epochs, last loss %.4f)\n", name,
           sgd ? "sgd" : "adam", threads, med, secs[0], secs[epochs - 1], epochs, last_loss);
    printf("CPU time per epoch (all threads): min %.3f s; peak RSS %.1f MiB; heap allocations per step after warm-up: "
           "%.3f\n", cpu[0], rss, allocs);
    printf("{\"bench\":\"%s\",\"impl\":\"ours\",\"threads\":%d,\"unit\":\"s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,"
           "\"cpu_min\":%.6g,\"allocs_per_step\":%.6g}\n",
           name, threads, med, secs[0], secs[epochs - 1], cpu[0], allocs);
    printf("{\"bench\":\"mlp_peak_rss\",\"impl\":\"ours\",\"threads\":%d,\"unit\":\"MiB\",\"median\":%.6g,\"min\":%.6g,"
           "\"max\":%.6g}\n",
           threads, rss, rss, rss);

    free(secs);
    free(cpu);
    ad_tape_free(t);
    ad_tensor_free(x);
    nn_batcher_free(b);
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(ds);
    return 0;
}

/* cnn_fashion.c: a convolutional network learns Fashion-MNIST; prints the test accuracy and the training time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn.h"

/*
** The network comes from a spec string (nn_model_from_spec): by default two
** 3x3 convolutions (32 and 64 channels, ReLU) each followed by 2x2 max
** pooling, then a hidden layer of 128 and a 10-way output. Adam with a cosine
** learning-rate schedule, cross-entropy, batches of 64, via nn_fit; the test
** set is evaluated after every epoch. Other specs to try:
** "conv:32:3,bn,pool:2,conv:64:3,bn,pool:2,fc:128,dropout:0.25,fc:10" or the
** larger "conv:32:5,pool:2,conv:64:5,pool:2,fc:1024,fc:10".
**
** Usage: cnn_fashion [--epochs N] [--spec S] [--threads N] [--limit N] [--data DIR] [--target ACC]
** --limit trains on the first N images only (a quick run); the test set is
** always all 10,000 images. Exits 0 when the test accuracy reaches --target
** (default 0: any), 2 when the data set is not installed (apt-get install
** dataset-fashion-mnist), 1 on an error.
*/

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    const char *spec = "conv:32:3,pool:2,conv:64:3,pool:2,fc:128,fc:10";
    int epochs = 6, threads = 2;
    long limit = 0;
    double target = 0.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--epochs") == 0) epochs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--spec") == 0) spec = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--limit") == 0) limit = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--data") == 0) dir = argv[i + 1];
        else if (strcmp(argv[i], "--target") == 0) target = atof(argv[i + 1]);
        else {
            fprintf(stderr, "cnn_fashion: unknown option %s\n", argv[i]);
            return 1;
        }
    }
    ad_set_num_threads(threads > 0 ? threads : 1);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines as they come, also into a file */

    nn_error err = {0};
    char p1[1024], p2[1024];
    nn_dataset *train = NULL, *test = NULL;
    snprintf(p1, sizeof p1, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(p2, sizeof p2, "%s/train-labels-idx1-ubyte.gz", dir);
    if (nn_dataset_load_idx(p1, p2, &train, &err) != AD_OK) {
        fprintf(stderr, "cnn_fashion: %s\n(install the data with: apt-get install dataset-fashion-mnist)\n", err.message);
        return 2;
    }
    snprintf(p1, sizeof p1, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte.gz", dir);
    if (nn_dataset_load_idx(p1, p2, &test, &err) != AD_OK) {
        fprintf(stderr, "cnn_fashion: %s\n", err.message);
        nn_dataset_free(train);
        return 2;
    }
    if (limit > 0 && limit < train->n) train->n = limit; /* the first rows only */

    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *net = nn_model_from_spec(spec, 1, 28, 28, &rng, &err);
    nn_optim *opt = net ? nn_adam(net, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL) : NULL;
    if (!opt) {
        fprintf(stderr, "cnn_fashion: %s\n", net ? "out of memory" : err.message);
        nn_module_free(net);
        nn_dataset_free(train);
        nn_dataset_free(test);
        return 1;
    }
    printf("model: %s (%lld weights), %lld training images, %d epochs, %d threads\n", spec,
           (long long)nn_module_num_weights(net), (long long)train->n, epochs, threads);

    nn_sched_opts so = nn_sched_defaults(1e-3, epochs * ((train->n + 63) / 64)); /* per step */
    so.min_lr = 1e-5;
    nn_sched *sched = nn_sched_new("cosine", &so, &err);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = epochs;
    fo.batch_size = 64;
    fo.schedule = sched;
    fo.progress = NN_PROGRESS_AUTO; /* on a terminal, a bar with samples/s and time left */
    fo.out = stdout;
    fo.test = test; /* the test accuracy after every epoch, reported only */
    double t0 = now();
    ad_status st = nn_fit(net, opt, train, &fo, NULL, &err);
    double secs = now() - t0;
    double loss = 0, acc = 0;
    if (st == AD_OK) st = nn_evaluate(net, test, 256, &loss, &acc, &err);
    if (st != AD_OK) fprintf(stderr, "cnn_fashion: %s\n", err.message);
    else printf("test accuracy %.2f%% (loss %.4f) after %.0f s of training\n", 100 * acc, loss, secs);
    nn_sched_free(sched);
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return st != AD_OK ? 1 : acc >= target ? 0 : 1;
}

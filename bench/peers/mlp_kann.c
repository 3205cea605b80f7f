/* mlp_kann.c: bench_mlp.c's workload (784-256-128-10 ReLU MLP, Adam, batch 64, Fashion-MNIST) on KANN, same output lines. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zlib.h>

#include "kann.h"

/*
** The C peer: KANN (github.com/attractivechaos/kann, at the commit bench/compare pins), built by
** bench/compare with OpenBLAS (-DHAVE_CBLAS) from a checkout the user gives it; none of KANN's
** code is in this repository. The network is built with KANN's layer API (kann_layer_input,
** kann_layer_dense, kad_relu, kann_layer_cost with softmax cross-entropy, which is KANN's way of
** writing the same loss) and trained by a loop of kann_cost(ann, 0, 1) steps over shuffled
** batches of 64, with Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) written over KANN's flat
** parameter and gradient arrays (KANN ships RMSprop only; Adam keeps the update the same as
** ours). Pixels are converted to floats once, before timing (KANN's data are floats).
** Usage: mlp_kann [--threads N] [--epochs N] [--quick] [--data DIR]
** --threads N > 1 uses kann_mt (KANN's own threads over the batch); OpenBLAS's thread count
** comes from its environment (bench/compare sets it).
*/

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t *read_gz(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    int r;
    while (buf && (r = gzread(f, buf + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    gzclose(f);
    *len = n;
    return buf;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = 1, epochs = 3, quick = 0;
    const char *dir = "/usr/share/datasets/fashion-mnist";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else return fprintf(stderr, "usage: mlp_kann [--threads N] [--epochs N] [--quick] [--data DIR]\n"), 2;
    }
    char p[512];
    size_t li, ll;
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    uint8_t *img = read_gz(p, &li);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    uint8_t *lab = read_gz(p, &ll);
    if (!img || !lab || li < 16 || ll < 8) return fprintf(stderr, "mlp_kann: cannot read the data in %s\n", dir), 1;
    int n = (int)(ll - 8), batch = 64;
    if ((size_t)n * 784 + 16 > li) return fprintf(stderr, "mlp_kann: short image file\n"), 1;
    float *xs = malloc((size_t)n * 784 * sizeof *xs), *xb = malloc((size_t)batch * 784 * sizeof *xb);
    float *yb = malloc((size_t)batch * 10 * sizeof *yb);
    int *perm = malloc((size_t)n * sizeof *perm);
    double *secs = malloc((size_t)epochs * sizeof *secs);
    if (!xs || !xb || !yb || !perm || !secs) return fprintf(stderr, "mlp_kann: out of memory\n"), 1;
    for (size_t i = 0; i < (size_t)n * 784; i++) xs[i] = (float)img[16 + i] / 255.0f;

    kann_srand(42);
    kad_node_t *t = kann_layer_input(784);
    t = kad_relu(kann_layer_dense(t, 256));
    t = kad_relu(kann_layer_dense(t, 128));
    kann_t *ann = kann_new(kann_layer_cost(t, 10, KANN_C_CEM), 0);
    if (!ann) return fprintf(stderr, "mlp_kann: kann_new failed\n"), 1;
    if (threads > 1) kann_mt(ann, threads, batch);
    int nv = kann_size_var(ann);
    float *m1 = calloc((size_t)nv, sizeof *m1), *m2 = calloc((size_t)nv, sizeof *m2);
    if (!m1 || !m2) return fprintf(stderr, "mlp_kann: out of memory\n"), 1;
    kann_feed_bind(ann, KANN_F_IN, 0, &xb);
    kann_feed_bind(ann, KANN_F_TRUTH, 0, &yb);
    kann_switch(ann, 1);

    uint64_t rs = 1;
    long step_no = 0;
    float cost = 0;
    for (int e = 0; e < epochs; e++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = n - 1; i > 0; i--) { /* Fisher-Yates with a fixed LCG: a shuffled order, as the others */
            rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
            int j = (int)((rs >> 33) % (uint64_t)(i + 1)), tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        int steps = 0;
        for (int i = 0; i < n && (!quick || steps < 200); i += batch, steps++) {
            int b = n - i < batch ? n - i : batch;
            for (int r = 0; r < b; r++) {
                memcpy(xb + (size_t)r * 784, xs + (size_t)perm[i + r] * 784, 784 * sizeof(float));
                memset(yb + r * 10, 0, 10 * sizeof(float));
                yb[r * 10 + lab[8 + perm[i + r]]] = 1.0f;
            }
            kann_set_batch_size(ann, b);
            cost = kann_cost(ann, 0, 1);
            step_no++;
            /* Adam: the same update as nn_adam and torch.optim.Adam */
            float c1 = 1.0f - powf(0.9f, (float)step_no), c2 = 1.0f - powf(0.999f, (float)step_no);
            for (int k = 0; k < nv; k++) {
                float g = ann->g[k];
                m1[k] = 0.9f * m1[k] + 0.1f * g;
                m2[k] = 0.999f * m2[k] + 0.001f * g * g;
                ann->x[k] -= 1e-3f * (m1[k] / c1) / (sqrtf(m2[k] / c2) + 1e-8f);
            }
        }
        secs[e] = now_s() - t0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss / 1024.0;
    qsort(secs, (size_t)epochs, sizeof *secs, cmp_double);
    double med = epochs % 2 ? secs[epochs / 2] : 0.5 * (secs[epochs / 2 - 1] + secs[epochs / 2]);
    const char *name = quick ? "mlp_200_steps" : "mlp_epoch";
    printf("%-14s adam threads=%d  median %.3f s  min %.3f  max %.3f  (%d epochs, last cost %.4f)\n", name, threads,
           med, secs[0], secs[epochs - 1], epochs, cost);
    printf("{\"bench\":\"%s\",\"impl\":\"kann\",\"threads\":%d,\"unit\":\"s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g}\n",
           name, threads, med, secs[0], secs[epochs - 1]);
    printf("{\"bench\":\"mlp_peak_rss\",\"impl\":\"kann\",\"threads\":%d,\"unit\":\"MiB\",\"median\":%.6g,\"min\":%.6g,"
           "\"max\":%.6g}\n",
           threads, rss, rss, rss);
    kann_delete(ann);
    free(m1), free(m2), free(xs), free(xb), free(yb), free(perm), free(secs), free(img), free(lab);
    return 0;
}

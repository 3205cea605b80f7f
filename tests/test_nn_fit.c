/* test_nn_fit.c: the training loop and evaluation on small hand-made data sets: learning, logs, determinism, NaN stops. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "test_util.h"

/* Three Gaussian blobs in the plane, n samples; the caller frees with free_blobs. */
static nn_dataset *make_blobs(int64_t n, uint64_t seed)
{
    static const double centers[3][2] = {{-2, 0}, {2, 0}, {0, 2.5}};
    nn_dataset *ds = calloc(1, sizeof *ds);
    ds->n = n;
    ds->dim = 2;
    ds->nclasses = 3;
    ds->features = malloc((size_t)n * 2 * sizeof(float));
    ds->labels = malloc((size_t)n * sizeof(int64_t));
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = i % 3;
        ds->labels[i] = c;
        ds->features[2 * i] = (float)(centers[c][0] + 0.5 * ad_rng_normal(&r));
        ds->features[2 * i + 1] = (float)(centers[c][1] + 0.5 * ad_rng_normal(&r));
    }
    return ds;
}

static void free_blobs(nn_dataset *ds)
{
    free(ds->features);
    free(ds->labels);
    free(ds);
}

static int epochs_seen;
static void count_epochs(const nn_epoch_stats *s, void *ctx)
{
    (void)ctx;
    epochs_seen++;
    ck_assert_int_eq(s->epoch, epochs_seen);
}

START_TEST(test_fit_learns_blobs)
{
    nn_dataset *train = make_blobs(300, 1), *val = make_blobs(90, 2);
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 16, 3}, NN_RELU, &rng, NULL);
    nn_optim *o = nn_adam(m, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    double loss0, acc0;
    nn_error err = {0};
    ck_assert_int_eq(nn_evaluate(m, val, 0, &loss0, &acc0, &err), AD_OK);

    char log[] = "/tmp/test_nn_fit_log_XXXXXX";
    int fd = mkstemp(log);
    ck_assert_int_ge(fd, 0);
    close(fd);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 15;
    fo.batch_size = 32;
    fo.val = val;
    fo.log_path = log;
    fo.progress = NN_PROGRESS_NONE;
    fo.on_epoch = count_epochs;
    nn_sched_opts so = nn_sched_defaults(0.01, 150); /* per step: 15 epochs of ceil(300 / 32) batches */
    nn_sched *sched = nn_sched_new("cosine", &so, &err);
    fo.schedule = sched;
    nn_epoch_stats last;
    epochs_seen = 0;
    ck_assert_msg(nn_fit(m, o, train, &fo, &last, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(epochs_seen, 15);
    ck_assert_int_eq(last.epoch, 15);
    ck_assert_int_eq(last.steps, 15 * 10); /* ceil(300 / 32) batches per epoch */
    ck_assert_int_eq(nn_optim_steps(o), 150);
    ck_assert(last.train_acc > 0.95);
    ck_assert(last.val_acc > 0.95);
    ck_assert(last.val_loss < loss0 / 4);
    TU_ASSERT_CLOSE(last.lr, nn_sched_lr(sched, 149), 1e-15, 0); /* set before the last step */
    ck_assert(isnan(last.test_loss) && isnan(last.test_acc));
    nn_sched_free(sched);

    double loss, acc;
    ck_assert_int_eq(nn_evaluate(m, val, 7, &loss, &acc, &err), AD_OK);
    TU_ASSERT_CLOSE(loss, last.val_loss, 1e-6, 1e-5); /* another batch size, same figures */
    TU_ASSERT_CLOSE(acc, last.val_acc, 1e-12, 0);
    ck_assert(nn_module_training(m));

    /* the CSV log: a header and one row per epoch with 10 fields */
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int rows = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds\n");
    while (fgets(line, sizeof line, f)) {
        int commas = 0;
        for (char *p = line; *p; p++) commas += *p == ',';
        ck_assert_int_eq(commas, 9);
        ck_assert_int_eq(atoi(line), ++rows);
    }
    ck_assert_int_eq(rows, 15);
    fclose(f);
    unlink(log);

    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(train);
    free_blobs(val);
}
END_TEST

/* Trains a fresh model for 3 epochs and returns its first weight matrix's bytes' checksum-like sum. */
static void train_once(const nn_dataset *ds, uint64_t seed, float *w_out, size_t nw)
{
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_TANH, &rng, NULL);
    nn_optim *o = nn_sgd(m, 0.1, 0.9, 1e-4, true, NULL);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 3;
    fo.batch_size = 16;
    fo.seed = seed;
    fo.progress = NN_PROGRESS_NONE;
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_OK);
    memcpy(w_out, nn_module_param(m, "0.weight")->value->data, nw * sizeof(float));
    nn_optim_free(o);
    nn_module_free(m);
}

START_TEST(test_fit_is_deterministic)
{
    nn_dataset *ds = make_blobs(100, 5);
    float a[16], b[16], c[16];
    train_once(ds, 1, a, 16);
    train_once(ds, 1, b, 16);
    train_once(ds, 2, c, 16);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert(memcmp(a, c, sizeof a) != 0); /* another shuffling seed, other weights */
    free_blobs(ds);
}
END_TEST

START_TEST(test_nan_loss_stops_with_step)
{
    /* a NaN feature in row 45: without shuffling, batch 10 of 10 rows meets it at step 5 */
    nn_dataset *ds = make_blobs(100, 7);
    ds->features[2 * 45] = NAN;
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *m = nn_mlp(2, (const int64_t[]){2, 3}, NN_RELU, &rng, NULL);
    nn_optim *o = nn_sgd(m, 0.1, 0, 0, false, NULL);
    nn_fit_opts fo = nn_fit_defaults();
    fo.batch_size = 10;
    fo.shuffle = false;
    fo.progress = NN_PROGRESS_NONE;
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(err.message, "epoch 1, step 5 ") != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.message, "nan") != NULL, "message: %s", err.message);
    ck_assert_int_eq(nn_optim_steps(o), 4); /* the bad step applied nothing */
    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(ds);
}
END_TEST

START_TEST(test_fit_errors)
{
    nn_dataset *ds = make_blobs(30, 7);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *m = nn_mlp(2, (const int64_t[]){5, 3}, NN_RELU, &rng, NULL); /* 5 inputs, the data has 2 */
    nn_optim *o = nn_adam(m, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    nn_fit_opts fo = nn_fit_defaults();
    fo.progress = NN_PROGRESS_NONE;
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_SHAPE);
    ck_assert_msg(strstr(err.message, "nn_fit: epoch 1, step 1 (batch 1 of 1): ") == err.message, "message: %s", err.message);
    ck_assert_ptr_nonnull(strstr(err.message, "): ad_matmul: inner dimensions differ")); /* no second prefix */
    ck_assert_int_eq(nn_evaluate(m, ds, 8, NULL, NULL, &err), AD_ERR_SHAPE);
    ck_assert_int_eq(nn_fit(NULL, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    ck_assert_int_eq(nn_fit(m, o, NULL, &fo, NULL, &err), AD_ERR_ARG);
    fo.batch_size = 0;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    fo.batch_size = 8;
    fo.log_path = "/nonexistent-dir/log.csv";
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.message, "/nonexistent-dir/log.csv"));
    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(ds);
}
END_TEST

START_TEST(test_progress_lines)
{
    nn_dataset *ds = make_blobs(30, 8);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *m = nn_mlp(2, (const int64_t[]){2, 3}, NN_RELU, &rng, NULL);
    nn_optim *o = nn_adam(m, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    FILE *out = tmpfile();
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 2;
    fo.out = out; /* not a terminal: plain lines */
    fo.val = ds;
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_OK);
    rewind(out);
    char line[256];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, out));
    ck_assert_msg(strncmp(line, "epoch 1/2  loss ", 16) == 0, "%s", line);
    ck_assert_ptr_nonnull(strstr(line, "val acc"));
    ck_assert_ptr_null(strchr(line, '\r'));
    ck_assert_ptr_nonnull(fgets(line, sizeof line, out));
    ck_assert(strncmp(line, "epoch 2/2", 9) == 0);
    ck_assert_ptr_null(fgets(line, sizeof line, out));
    fclose(out);
    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(ds);
}
END_TEST

/* Counts allocations made through the library's allocator. */
static void *counting_alloc(void *ud, void *ptr, size_t n)
{
    if (n == 0) {
        free(ptr);
        return NULL;
    }
    ++*(long *)ud;
    return realloc(ptr, n);
}

START_TEST(test_training_step_allocates_nothing)
{
    /* the loop nn_fit runs: after two warm-up steps, a step takes no heap memory */
    long count = 0;
    ad_set_allocator(counting_alloc, &count);
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *m = nn_mlp(4, (const int64_t[]){20, 32, 16, 5}, NN_GELU, &rng, NULL);
    nn_optim *o = nn_adamw(m, 1e-3, 0.9, 0.999, 1e-8, 0.01, NULL);
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(16, 20), -1, 1, 2);
    int64_t labels[16];
    for (int i = 0; i < 16; i++) labels[i] = i % 5;
    ad_tape *t = ad_tape_new();
    for (int step = 0; step < 8; step++) {
        if (step == 2) count = 0;
        ad_tape_reset(t);
        nn_zero_grad(m);
        ad_var l = nn_loss_cross_entropy(nn_forward(m, t, ad_const(t, x)), labels);
        ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
    }
    long after = count;
    ad_tape_free(t);
    ad_tensor_free(x);
    nn_optim_free(o);
    nn_module_free(m);
    ad_set_allocator(NULL, NULL);
    ck_assert_msg(after == 0, "%ld allocations in 6 warmed-up steps", after);
}
END_TEST


/* ---- beyond classification: float targets, any loss, validation split ---- */

/* y [n, 2] = (x0 + 2 x1, x0 - x1) + small noise, x in [-1, 1]^3 (x2 unused): a copied data set. */
static nn_dataset *make_regression(int64_t n, uint64_t seed)
{
    float *x = malloc((size_t)n * 3 * sizeof *x), *y = malloc((size_t)n * 2 * sizeof *y);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) x[3 * i + k] = (float)(2 * ad_rng_uniform(&r) - 1);
        y[2 * i] = (float)(x[3 * i] + 2 * x[3 * i + 1] + 0.01 * ad_rng_normal(&r));
        y[2 * i + 1] = (float)(x[3 * i] - x[3 * i + 1] + 0.01 * ad_rng_normal(&r));
    }
    nn_dataset *ds = NULL;
    nn_error e;
    ck_assert_msg(nn_dataset_from_arrays(n, 3, x, NULL, y, 1, (const int64_t[]){2}, true, &ds, &e) == AD_OK, "%s",
                  e.message);
    free(x); /* copied: the data set keeps its own */
    free(y);
    return ds;
}

/* L = mean |y - t|^3 / 3, a loss of one's own */
static int cube_calls;
static ad_var cube_loss(ad_var out, ad_var target, const int64_t *labels, void *ctx)
{
    (void)ctx;
    ck_assert_ptr_null(labels);
    cube_calls++;
    return ad_mul_scalar(ad_mean(ad_pow_scalar(ad_abs(ad_sub(out, target)), 3.0)), 1.0 / 3.0);
}

/* the same as a two-input module */
static ad_var cube_forward(nn_module *m, ad_tape *t, int n, const ad_var *in) { return cube_loss(in[0], in[1], NULL, NULL); }
static const nn_module_ops cube_ops = {.kind = "cube_loss", .n_inputs = 2, .forward = cube_forward};

START_TEST(test_fit_regression_losses)
{
    nn_dataset *train = make_regression(400, 1), *test = make_regression(100, 2);
    ck_assert_int_eq(train->nclasses, 0);
    ck_assert_int_eq(train->target_size, 2);
    /* each way of giving the loss fits the linear map (the mean guess has MSE about 5/3 and 2/3) */
    for (int way = 0; way < 6; way++) {
        ad_rng rng;
        ad_rng_seed(&rng, 4);
        nn_error e = {0};
        nn_module *m = nn_linear(3, 2, &rng, &e);
        nn_optim *o = nn_adam(m, 0.05, 0.9, 0.999, 1e-8, 0, &e);
        nn_module *lm = way == 5 ? nn_module_new(&cube_ops, NULL, &e) : NULL;
        nn_fit_opts fo = nn_fit_defaults();
        fo.epochs = 40;
        fo.batch_size = 40;
        fo.progress = NN_PROGRESS_NONE;
        fo.test = test;
        fo.val_split = 0.25;
        cube_calls = 0;
        switch (way) {
        case 0: fo.loss = NN_LOSS_AUTO; break; /* MSE for targets */
        case 1: fo.loss = NN_LOSS_MSE; break;
        case 2: fo.loss = NN_LOSS_HUBER, fo.huber_delta = 0.5; break;
        case 3: fo.loss = NN_LOSS_L1; break;
        case 4: fo.loss_fn = cube_loss; break;
        case 5: fo.loss_module = lm; break;
        }
        nn_epoch_stats last;
        ck_assert_msg(nn_fit(m, o, train, &fo, &last, &e) == AD_OK, "way %d: %s", way, e.message);
        ck_assert(isnan(last.train_acc) && isnan(last.val_acc) && isnan(last.test_acc));
        ck_assert_int_eq(last.steps, 40 * (300 / 40 + 1)); /* 300 training rows after the split */
        /* the test set's MSE, whichever loss trained it */
        double mse;
        ck_assert_int_eq(nn_evaluate(m, test, 0, &mse, NULL, &e), AD_OK);
        ck_assert_msg(mse < 2e-3, "way %d: test MSE %g", way, mse);
        /* in the training loss's own units (the mean guess gives about 1 or more in each) */
        ck_assert_msg(last.val_loss < 0.05 && last.test_loss < 0.05, "way %d: val %g test %g", way, last.val_loss,
                      last.test_loss);
        if (way == 4) ck_assert_int_gt(cube_calls, 0);
        nn_module_free(lm);
        nn_optim_free(o);
        nn_module_free(m);
    }
    nn_dataset_free(train);
    nn_dataset_free(test);
}
END_TEST

/* Multi-label: 3 independent binary targets per sample (x0 > 0, x1 > 0, x0 + x1 > 0.5), BCE of logits. */
START_TEST(test_fit_multilabel_bce)
{
    enum { N = 600 };
    float *x = malloc(N * 2 * sizeof *x), *y = malloc(N * 3 * sizeof *y);
    ad_rng r;
    ad_rng_seed(&r, 9);
    for (int i = 0; i < N; i++) {
        x[2 * i] = (float)(2 * ad_rng_uniform(&r) - 1);
        x[2 * i + 1] = (float)(2 * ad_rng_uniform(&r) - 1);
        y[3 * i] = x[2 * i] > 0;
        y[3 * i + 1] = x[2 * i + 1] > 0;
        y[3 * i + 2] = x[2 * i] + x[2 * i + 1] > 0.5f;
    }
    nn_dataset *ds = NULL;
    nn_error e;
    /* borrowed: the arrays stay the caller's */
    ck_assert_int_eq(nn_dataset_from_arrays(N, 2, x, NULL, y, 1, (const int64_t[]){3}, false, &ds, &e), AD_OK);
    ck_assert_ptr_eq(ds->features, x);
    ad_rng rng;
    ad_rng_seed(&rng, 10);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 16, 3}, NN_TANH, &rng, &e);
    nn_optim *o = nn_adam(m, 0.02, 0.9, 0.999, 1e-8, 0, &e);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 30;
    fo.batch_size = 32;
    fo.progress = NN_PROGRESS_NONE;
    fo.loss = NN_LOSS_BCE_WITH_LOGITS;
    fo.val_split = 0.2;
    nn_epoch_stats last;
    ck_assert_msg(nn_fit(m, o, ds, &fo, &last, &e) == AD_OK, "%s", e.message);
    /* accuracy counts target elements */
    ck_assert_msg(last.train_acc > 0.95 && last.val_acc > 0.93, "train %g val %g", last.train_acc, last.val_acc);
    nn_optim_free(o);
    nn_module_free(m);
    nn_dataset_free(ds); /* leaves x and y alone */
    ck_assert(x[0] == x[0]);
    free(x);
    free(y);
}
END_TEST

/* The validation split is drawn from the seed: the same seed, the same figures; its rows are never trained on. */
START_TEST(test_val_split_deterministic)
{
    nn_dataset *ds = make_blobs(200, 12);
    double val[2];
    for (int k = 0; k < 2; k++) {
        ad_rng rng;
        ad_rng_seed(&rng, 13);
        nn_module *m = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_RELU, &rng, NULL);
        nn_optim *o = nn_sgd(m, 0.05, 0.9, 0, false, NULL);
        nn_fit_opts fo = nn_fit_defaults();
        fo.epochs = 3;
        fo.batch_size = 16;
        fo.progress = NN_PROGRESS_NONE;
        fo.val_split = 0.1;
        fo.seed = 77;
        nn_epoch_stats last;
        nn_error e;
        ck_assert_msg(nn_fit(m, o, ds, &fo, &last, &e) == AD_OK, "%s", e.message);
        ck_assert_int_eq(last.steps, 3 * ((200 - 20 + 15) / 16)); /* 180 training rows */
        val[k] = last.val_loss;
        nn_optim_free(o);
        nn_module_free(m);
    }
    ck_assert(val[0] == val[1]);
    /* a split that leaves nothing on one side */
    ad_rng rng;
    ad_rng_seed(&rng, 13);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_RELU, &rng, NULL);
    nn_optim *o = nn_sgd(m, 0.05, 0.9, 0, false, NULL);
    nn_fit_opts fo = nn_fit_defaults();
    fo.progress = NN_PROGRESS_NONE;
    fo.val_split = 0.001;
    nn_error e;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "no validation row"));
    fo.val_split = 1.0;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &e), AD_ERR_ARG);
    /* a loss that does not fit the set's kind */
    fo.val_split = 0;
    fo.loss = NN_LOSS_MSE;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "float targets"));
    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(ds);
}
END_TEST

/* nn_fit with accumulate k over batches of b takes the steps of batches of k b (without shuffling). */
START_TEST(test_fit_accumulate)
{
    nn_dataset *ds = make_regression(64, 14);
    float w[2][6];
    for (int k = 0; k < 2; k++) {
        ad_rng rng;
        ad_rng_seed(&rng, 15);
        nn_module *m = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F32, &rng, NULL);
        nn_optim *o = nn_sgd(m, 0.1, 0, 0, false, NULL);
        nn_fit_opts fo = nn_fit_defaults();
        fo.epochs = 2;
        fo.shuffle = false;
        fo.progress = NN_PROGRESS_NONE;
        fo.batch_size = k ? 8 : 32;
        fo.accumulate = k ? 4 : 1;
        nn_error e;
        ck_assert_msg(nn_fit(m, o, ds, &fo, NULL, &e) == AD_OK, "%s", e.message);
        ck_assert_int_eq(nn_optim_steps(o), 4);
        memcpy(w[k], nn_module_param(m, "weight")->value->data, sizeof w[k]);
        nn_optim_free(o);
        nn_module_free(m);
    }
    for (int i = 0; i < 6; i++) TU_ASSERT_CLOSE(w[1][i], w[0][i], 1e-6, 1e-5);
    nn_dataset_free(ds);
}
END_TEST

/* Data sets from arrays and from .npy files; the batcher's targets. */
START_TEST(test_datasets_in_memory_and_npy)
{
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const int64_t lab[3] = {2, 0, 1};
    nn_dataset *ds = NULL;
    nn_error e;
    ck_assert_int_eq(nn_dataset_from_arrays(3, 2, x, lab, NULL, 0, NULL, true, &ds, &e), AD_OK);
    ck_assert_int_eq(ds->nclasses, 3);
    ck_assert_ptr_ne(ds->labels, lab);
    nn_dataset_free(ds);
    ck_assert_int_eq(nn_dataset_from_arrays(3, 2, x, lab, x, 1, (const int64_t[]){2}, true, &ds, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "either labels or targets"));
    ck_assert_int_eq(nn_dataset_from_arrays(3, 2, x, (const int64_t[]){0, -1, 2}, NULL, 0, NULL, true, &ds, &e), AD_ERR_ARG);
    ck_assert_ptr_null(ds);
    /* targets of shape [2, 2] per sample reach the batcher's y in order */
    const float t[12] = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23};
    ck_assert_int_eq(nn_dataset_from_arrays(3, 2, x, NULL, t, 2, (const int64_t[]){2, 2}, false, &ds, &e), AD_OK);
    nn_batcher *b = nn_batcher_new(ds, 2, false, 0, &e);
    ad_tensor *xb = ad_tensor_new(AD_F32, AD_SHAPE(2, 2)), *yb = ad_tensor_new(AD_F64, AD_SHAPE(2, 2, 2));
    ad_tensor *ybad = ad_tensor_new(AD_F32, AD_SHAPE(2, 4));
    ck_assert_int_eq(nn_batcher_next(b, xb, ybad, NULL), -1);
    ck_assert_int_eq(nn_batcher_next(b, xb, NULL, (int64_t[2]){0}), -1); /* no labels here */
    ck_assert_int_eq(nn_batcher_next(b, xb, yb, NULL), 2);
    tu_assert_values(yb, (const double[]){0, 1, 2, 3, 10, 11, 12, 13}, 0, 0);
    ck_assert_int_eq(nn_batcher_next(b, xb, yb, NULL), 1);
    TU_ASSERT_CLOSE(ad_tensor_get(yb, 0), 20, 0, 0);
    nn_batcher_free(b);
    /* a subset of rows */
    b = nn_batcher_new_rows(ds, 2, (const int64_t[]){2, 0}, 2, false, 0, &e);
    ck_assert_int_eq(nn_batcher_num_batches(b), 1);
    ck_assert_int_eq(nn_batcher_next(b, xb, yb, NULL), 2);
    tu_assert_values(xb, (const double[]){5, 6, 1, 2}, 0, 0);
    nn_batcher_free(b);
    ck_assert_ptr_null(nn_batcher_new_rows(ds, 1, (const int64_t[]){3}, 2, false, 0, &e));
    ck_assert_int_eq(e.status, AD_ERR_INDEX);
    nn_dataset_free(ds);

    /* .npy: features [4, 2, 1] (flattened to 2), targets [4] as labels or as floats */
    char dir[] = "/tmp/test_nn_fit_npy_XXXXXX", xp[64], yp[64], bad[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(xp, sizeof xp, "%s/x.npy", dir);
    snprintf(yp, sizeof yp, "%s/y.npy", dir);
    snprintf(bad, sizeof bad, "%s/bad.npy", dir);
    ad_tensor *fx = tu_f64(AD_SHAPE(4, 2, 1), (const double[]){1, 2, 3, 4, 5, 6, 7, 8});
    ad_tensor *fy = tu_f64(AD_SHAPE(4), (const double[]){1, 0, 3, 1});
    ad_tensor *fb = tu_f64(AD_SHAPE(3), (const double[]){1, 0.5, 3});
    char m[256];
    ck_assert(ad_npy_save(xp, fx, m, sizeof m) == AD_OK && ad_npy_save(yp, fy, m, sizeof m) == AD_OK &&
              ad_npy_save(bad, fb, m, sizeof m) == AD_OK);
    ck_assert_msg(nn_dataset_load_npy(xp, yp, true, &ds, &e) == AD_OK, "%s", e.message);
    ck_assert_int_eq(ds->n, 4);
    ck_assert_int_eq(ds->dim, 2);
    ck_assert_int_eq(ds->nclasses, 4);
    ck_assert_int_eq(ds->labels[2], 3);
    nn_dataset_free(ds);
    ck_assert_msg(nn_dataset_load_npy(xp, yp, false, &ds, &e) == AD_OK, "%s", e.message);
    ck_assert_int_eq(ds->target_ndim, 1);
    ck_assert_int_eq(ds->target_shape[0], 1);
    ck_assert(ds->targets[3] == 1.0f);
    nn_dataset_free(ds);
    ck_assert_int_eq(nn_dataset_load_npy(xp, bad, false, &ds, &e), AD_ERR_SHAPE); /* 4 rows and 3 */
    ck_assert_ptr_nonnull(strstr(e.message, "4 and 3 rows"));
    ck_assert_int_eq(nn_dataset_load_npy(bad, bad, true, &ds, &e), AD_ERR_FORMAT); /* label 0.5 */
    ck_assert_ptr_nonnull(strstr(e.message, "label 0.5"));
    ck_assert_int_eq(nn_dataset_load_npy("/nonexistent.npy", yp, true, &ds, &e), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.message, "/nonexistent.npy"));
    ck_assert_ptr_null(ds);
    unlink(xp);
    unlink(yp);
    unlink(bad);
    rmdir(dir);
    ad_tensor_free(fx);
    ad_tensor_free(fy);
    ad_tensor_free(fb);
    ad_tensor_free(xb);
    ad_tensor_free(yb);
    ad_tensor_free(ybad);
}
END_TEST

/* Label smoothing through nn_fit: with lr 0 (the weights stay put) the epoch's training loss and
** the test loss are nn_loss_cross_entropy_smooth of the model on the whole set. */
START_TEST(test_fit_label_smoothing)
{
    nn_dataset *ds = make_blobs(60, 11);
    ad_rng rng;
    ad_rng_seed(&rng, 12);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_TANH, &rng, NULL);
    nn_optim *o = nn_sgd(m, 0.0, 0.0, 0.0, false, NULL);
    ad_tensor *x = ad_tensor_from(AD_F32, AD_SHAPE(60, 2), ds->features);
    double want[2];
    for (int k = 0; k < 2; k++) {
        ad_tape *t = ad_tape_new();
        ad_var z = nn_forward(m, t, ad_const(t, x));
        ad_var l = k ? nn_loss_cross_entropy_smooth(z, ds->labels, 0.15) : nn_loss_cross_entropy(z, ds->labels);
        ck_assert_msg(ad_ok(l), "%s", ad_tape_error(t));
        want[k] = ad_item(l);
        ad_tape_free(t);
    }
    ck_assert_msg(fabs(want[1] - want[0]) > 1e-3, "%g %g", want[0], want[1]);
    for (int k = 0; k < 2; k++) {
        nn_fit_opts fo = nn_fit_defaults();
        fo.epochs = 1;
        fo.batch_size = 16; /* batches of 16, 16, 16, 12: the size-weighted mean is the whole set's */
        fo.progress = NN_PROGRESS_NONE;
        fo.test = ds;
        fo.label_smoothing = k ? 0.15 : 0.0;
        nn_epoch_stats st;
        nn_error err = {0};
        ck_assert_msg(nn_fit(m, o, ds, &fo, &st, &err) == AD_OK, "%s", err.message);
        TU_ASSERT_CLOSE(st.train_loss, want[k], 0, 1e-5);
        TU_ASSERT_CLOSE(st.test_loss, want[k], 0, 1e-5);
    }
    /* out of range, or with a loss that is not the built-in cross-entropy */
    nn_error err = {0};
    nn_fit_opts fo = nn_fit_defaults();
    fo.progress = NN_PROGRESS_NONE;
    const double bad[] = {1.0, -0.1, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fo.label_smoothing = bad[i];
        ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
        ck_assert_ptr_nonnull(strstr(err.message, "label_smoothing"));
    }
    fo.label_smoothing = 0.1;
    fo.loss = NN_LOSS_MSE;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err.message, "label_smoothing"));
    fo.loss = NN_LOSS_AUTO;
    fo.loss_fn = cube_loss;
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err.message, "loss callback"));
    nn_dataset *reg = make_regression(20, 3);
    fo.loss_fn = NULL;
    ck_assert_int_eq(nn_fit(m, o, reg, &fo, NULL, &err), AD_ERR_ARG); /* AUTO on targets is MSE */
    ck_assert_ptr_nonnull(strstr(err.message, "mse"));
    ck_assert_int_eq(nn_optim_steps(o), 8); /* only the two good runs stepped */
    nn_dataset_free(reg);
    ad_tensor_free(x);
    nn_optim_free(o);
    nn_module_free(m);
    free_blobs(ds);
}
END_TEST

/* A run in parts (initial_epoch, stop_epoch, the shuffles from one generator) is the straight run bit for bit, its
** epochs numbered of the whole run; stop_epoch outside [initial_epoch, epochs] is an error. */
static int part_epochs[8], part_count;
static void note_epoch(const nn_epoch_stats *s, void *ctx)
{
    (void)ctx;
    if (part_count < 8) part_epochs[part_count++] = s->epoch;
}

static void fit_parts(nn_dataset *ds, const int *stops, int nstops, float *w, size_t nw)
{
    ad_rng init, shuffle;
    ad_rng_seed(&init, 11);
    ad_rng_seed(&shuffle, 12);
    nn_module *m = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_TANH, &init, NULL);
    nn_optim *o = nn_adam(m, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 3;
    fo.batch_size = 16;
    fo.rng = &shuffle;
    fo.progress = NN_PROGRESS_NONE;
    fo.on_epoch = note_epoch;
    nn_error err = {0};
    for (int i = 0; i < nstops; i++) {
        fo.initial_epoch = i ? stops[i - 1] : 0;
        fo.stop_epoch = stops[i];
        ck_assert_msg(nn_fit(m, o, ds, &fo, NULL, &err) == AD_OK, "%s", err.message);
    }
    memcpy(w, nn_module_param(m, "0.weight")->value->data, nw * sizeof *w);
    fo.initial_epoch = 2, fo.stop_epoch = 1; /* before its start */
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err.message, "stop_epoch"));
    fo.initial_epoch = 0, fo.stop_epoch = 4; /* past the run's end */
    ck_assert_int_eq(nn_fit(m, o, ds, &fo, NULL, &err), AD_ERR_ARG);
    nn_optim_free(o);
    nn_module_free(m);
}

START_TEST(test_fit_in_parts)
{
    nn_dataset *ds = make_blobs(90, 9);
    float straight[16], parts[16];
    part_count = 0;
    fit_parts(ds, (const int[]){0}, 1, straight, 16); /* stop_epoch 0: to epochs */
    ck_assert_int_eq(part_count, 3);
    part_count = 0;
    fit_parts(ds, (const int[]){1, 1, 3}, 3, parts, 16); /* an empty part, then the rest */
    ck_assert_int_eq(part_count, 3);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(part_epochs[i], i + 1);
    ck_assert_mem_eq(parts, straight, sizeof straight);
    free_blobs(ds);
}
END_TEST

static Suite *nn_fit_suite(void)
{
    Suite *s = suite_create("nn_fit");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 120);
    tcase_add_test(core, test_fit_learns_blobs);
    tcase_add_test(core, test_fit_is_deterministic);
    tcase_add_test(core, test_progress_lines);
    tcase_add_test(core, test_training_step_allocates_nothing);
    tcase_add_test(core, test_fit_regression_losses);
    tcase_add_test(core, test_fit_multilabel_bce);
    tcase_add_test(core, test_val_split_deterministic);
    tcase_add_test(core, test_fit_accumulate);
    tcase_add_test(core, test_datasets_in_memory_and_npy);
    tcase_add_test(core, test_fit_label_smoothing);
    tcase_add_test(core, test_fit_in_parts);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_nan_loss_stops_with_step);
    tcase_add_test(errors, test_fit_errors);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_fit_suite()); }

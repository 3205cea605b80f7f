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
    nn_schedule sched = nn_schedule_cosine(0.01, 15, 0.0);
    fo.schedule = &sched;
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
    TU_ASSERT_CLOSE(last.lr, nn_schedule_lr(&sched, 14), 1e-15, 0);

    double loss, acc;
    ck_assert_int_eq(nn_evaluate(m, val, 7, &loss, &acc, &err), AD_OK);
    TU_ASSERT_CLOSE(loss, last.val_loss, 1e-6, 1e-5); /* another batch size, same figures */
    TU_ASSERT_CLOSE(acc, last.val_acc, 1e-12, 0);
    ck_assert(nn_module_training(m));

    /* the CSV log: a header and one row per epoch with 8 fields */
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int rows = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,seconds\n");
    while (fgets(line, sizeof line, f)) {
        int commas = 0;
        for (char *p = line; *p; p++) commas += *p == ',';
        ck_assert_int_eq(commas, 7);
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
    ck_assert_ptr_nonnull(strstr(err.message, "ad_matmul: inner dimensions differ"));
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

static Suite *nn_fit_suite(void)
{
    Suite *s = suite_create("nn_fit");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 120);
    tcase_add_test(core, test_fit_learns_blobs);
    tcase_add_test(core, test_fit_is_deterministic);
    tcase_add_test(core, test_progress_lines);
    tcase_add_test(core, test_training_step_allocates_nothing);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_nan_loss_stops_with_step);
    tcase_add_test(errors, test_fit_errors);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_fit_suite()); }

/* test_nn_train_faults.c: autodiff-train against failing outputs, bad data and non-finite checkpoints: every failure found before the first step where it can be, a non-zero exit where it cannot. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn.h"
#include "test_cli_util.h"
#include "test_util.h"

/* Writes a CSV of n rows: label (row i's is labels(i)), then cols features around the label. */
static void write_csv(const char *name, int n, int cols, int nclasses, int last_label, uint64_t seed)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int label = i == n - 1 && last_label >= 0 ? last_label : i % nclasses;
        fprintf(f, "%d", label);
        for (int j = 0; j < cols; j++) fprintf(f, ",%.4f", (j % nclasses == i % nclasses) + 0.3 * ad_rng_normal(&r));
        fprintf(f, "\n");
    }
    ck_assert_int_eq(fclose(f), 0);
}

/* The usual small data set: 3 classes of 2 features, 120 training and 30 test rows. */
static void write_blobs(void)
{
    write_csv("train.csv", 120, 2, 3, -1, 1);
    write_csv("test.csv", 30, 2, 3, -1, 2);
}

#define DATA "--train-csv train.csv --test-csv test.csv --layers 2,8,3 --batch-size 16 --threads 1 --quiet"

/* ---- item: write failures are failures ---- */

START_TEST(test_write_failures)
{
    write_blobs();
    /* the log: its header cannot be written, so not one step is taken */
    ck_assert_int_eq(train(DATA " --epochs 3 --log /dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write log /dev/full") != NULL, "%s", err_text);
    ck_assert_ptr_null(strstr(out_text, "epoch 1/"));
    /* the plot, after training */
    ck_assert_int_eq(train(DATA " --epochs 2 --plot /dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write plot /dev/full") != NULL, "%s", err_text);
    /* the tape's drawing */
    ck_assert_int_eq(train(DATA " --draw /dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write /dev/full") != NULL, "%s", err_text);
    /* the standard output: found at the model line, before training and before saving */
    ck_assert_int_eq(train_to(DATA " --epochs 2 --save ck.st", "/dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write the standard output") != NULL, "%s", err_text);
    ck_assert_int_eq(count_lines(err_text), 1);
    ck_assert(!exists("ck.st"));
    ck_assert_int_eq(train_to(DATA " --eval-only", "/dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write the standard output") != NULL, "%s", err_text);
    ck_assert_int_eq(train_to("--help", "/dev/full"), 1);
    ck_assert_msg(strstr(err_text, "cannot write the standard output") != NULL, "%s", err_text);
    ck_assert_int_eq(train_to("--version", "/dev/full"), 1);
    /* and the same runs to a real file succeed */
    ck_assert_msg(train(DATA " --epochs 2 --log log.csv --plot p.svg --save ck.st") == 0, "%s", err_text);
    ck_assert(exists("ck.st") && exists("log.csv") && exists("p.svg"));
}
END_TEST

/* ---- item: fail early: outputs and data checked before the first step ---- */

START_TEST(test_outputs_before_training)
{
    write_blobs();
    char path[256];
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    snprintf(path, sizeof path, "%s/sub", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/link.st", dir);
    ck_assert_int_eq(symlink("train.csv", path), 0);
    static const struct {
        const char *args, *what;
    } cases[] = {
        {"--save nodir/x.st", "--save nodir/x.st: nodir does not exist"},
        {"--save fifo", "--save fifo: it is a FIFO"},
        {"--save sub", "--save sub: it is a directory"},
        {"--save link.st", "--save link.st: it is a symbolic link"},
        {"--log nodir/log.csv", "--log nodir/log.csv: nodir does not exist"},
        {"--plot nodir/p.svg", "--plot nodir/p.svg: nodir does not exist"},
        {"--log sub", "--log sub: it is a directory"},
        {"--save train.csv/x.st", "train.csv is not a directory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, DATA " --epochs 1000 %s", cases[i].args);
        ck_assert_msg(train(args) == 2, "%s: %s", cases[i].args, err_text);
        ck_assert_msg(strstr(err_text, cases[i].what) != NULL, "%s: %s", cases[i].args, err_text);
        ck_assert_int_eq(count_lines(err_text), 1);
        ck_assert_msg(out_text[0] == 0, "%s: %s", cases[i].args, out_text); /* nothing loaded, nothing trained */
    }
    /* a FIFO is a fine log (nothing reads it here, so not tried); an existing file is replaced */
    ck_assert_msg(train(DATA " --epochs 1 --save ck.st --log log.csv") == 0, "%s", err_text);
    ck_assert_msg(train(DATA " --epochs 1 --save ck.st --log log.csv") == 0, "%s", err_text);
}
END_TEST

/* A label beyond the network's outputs, in the test set or at the end of the training set, with
** an MLP and with --model (whose outputs were not checked at all): refused before the first step. */
START_TEST(test_labels_before_training)
{
    write_csv("train.csv", 120, 4, 3, -1, 1);
    write_csv("test.csv", 30, 4, 3, -1, 2);
    write_csv("test_bad.csv", 30, 4, 3, 7, 2);
    write_csv("train_bad.csv", 120, 4, 3, 5, 1);
    static const struct {
        const char *args, *what;
    } cases[] = {
        {"--train-csv train.csv --test-csv test_bad.csv --model fc:3", "the test set has 8 classes (labels 0 to 7), the network 3 outputs"},
        {"--train-csv train_bad.csv --test-csv test.csv --model fc:3", "the training set has 6 classes (labels 0 to 5), the network 3 outputs"},
        {"--train-csv train.csv --test-csv test_bad.csv --layers 4,8,3", "the test set has 8 classes"},
        {"--train-csv train.csv --test-csv test_bad.csv --model conv:2:3,pool:2,fc:3 --eval-only", "the test set has 8 classes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, "%s --epochs 3 --batch-size 16 --threads 1 --quiet --log log.csv --save ck.st",
                 cases[i].args);
        if (strstr(args, "--eval-only")) /* no training: no log */
            snprintf(args, sizeof args, "%s --batch-size 16 --threads 1 --quiet", cases[i].args);
        ck_assert_msg(train(args) == 2, "%s: %s%s", cases[i].args, out_text, err_text);
        ck_assert_msg(strstr(err_text, cases[i].what) != NULL, "%s: %s", cases[i].args, err_text);
        ck_assert_int_eq(count_lines(err_text), 1);
        ck_assert_msg(strstr(out_text, "epoch") == NULL, "%s: %s", cases[i].args, out_text);
        ck_assert(!exists("log.csv") && !exists("ck.st"));
    }
    /* the good sets train with the same model */
    ck_assert_msg(train("--train-csv train.csv --test-csv test.csv --model fc:3 --epochs 1 --threads 1 --quiet") == 0,
                  "%s", err_text);
}
END_TEST

/* Writes an IDX file of unsigned bytes: n items of the given dims (0 or 2 of them), values i % 256. */
static void write_idx(const char *name, int n, int ndims, int side)
{
    char p[256];
    snprintf(p, sizeof p, "%s/idx/%s", dir, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char head[4] = {0, 0, 8, (unsigned char)(1 + ndims)};
    fwrite(head, 1, 4, f);
    int dims[3] = {n, side, side}, count = ndims ? n * side * side : n;
    for (int i = 0; i <= ndims; i++) {
        unsigned char d[4] = {(unsigned char)(dims[i] >> 24), (unsigned char)(dims[i] >> 16), (unsigned char)(dims[i] >> 8),
                              (unsigned char)dims[i]};
        fwrite(d, 1, 4, f);
    }
    for (int i = 0; i < count; i++) fputc(ndims ? i % 256 : i % 10, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* Messages that named the wrong thing: a test set of 10x10 images beside 28x28 training images
** (it said "the first layer has 784 inputs, the data 784 features"); --label-col out of range is
** a usage error (exit 2, not 1). */
START_TEST(test_messages)
{
    char p[256];
    snprintf(p, sizeof p, "%s/idx", dir);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    write_idx("train-images-idx3-ubyte", 20, 2, 28);
    write_idx("train-labels-idx1-ubyte", 20, 0, 0);
    write_idx("t10k-images-idx3-ubyte", 10, 2, 10);
    write_idx("t10k-labels-idx1-ubyte", 10, 0, 0);
    ck_assert_int_eq(train("--data idx --epochs 1 --threads 1 --quiet"), 2);
    ck_assert_msg(strstr(err_text, "the test set has 100 features per sample, the training set 784") != NULL, "%s",
                  err_text);
    ck_assert_int_eq(train("--data idx --model fc:10 --epochs 1 --threads 1 --quiet"), 2);
    ck_assert_msg(strstr(err_text, "the test set has 100 features per sample, the training set 784") != NULL, "%s",
                  err_text);

    write_blobs();
    ck_assert_int_eq(train(DATA " --label-col 9"), 2);
    ck_assert_msg(strstr(err_text, "label column 9 out of range for 3 columns") != NULL, "%s", err_text);
    ck_assert_int_eq(count_lines(err_text), 1);
    ck_assert_int_eq(train(DATA " --label-col -4"), 2);
}
END_TEST

/* --momentum reaches RMSprop (it was dropped for every optimizer but SGD): its checkpoint holds
** the momentum buffers then, and not without the option. */
START_TEST(test_rmsprop_momentum)
{
    write_blobs();
    ck_assert_msg(train(DATA " --epochs 1 --optimizer rmsprop --momentum 0.9 --save m.st") == 0, "%s", err_text);
    ck_assert_msg(train(DATA " --epochs 1 --optimizer rmsprop --save p.st") == 0, "%s", err_text);
    char head[8192], p[256];
    snprintf(p, sizeof p, "%s/m.st", dir);
    slurp(p, head, sizeof head);
    ck_assert_ptr_nonnull(strstr(head + 8, ".momentum\""));
    snprintf(p, sizeof p, "%s/p.st", dir);
    slurp(p, head, sizeof head);
    ck_assert_ptr_null(strstr(head + 8, ".momentum\""));
}
END_TEST

/* ---- item: non-finite weights ---- */

/* Saves the CLI's 2-8-3 ReLU MLP with Adam as dir/name, with a NaN in its output bias (where no
** ReLU can hide it: every logit row holds it). */
static void save_nan_checkpoint(const char *name)
{
    nn_error e;
    ad_rng r;
    ad_rng_seed(&r, 1);
    nn_module *net = nn_mlp(3, (const int64_t[]){2, 8, 3}, NN_RELU, &r, &e);
    ck_assert_msg(net != NULL, "%s", e.message);
    nn_optim *opt = nn_optim_for("adam", net, NULL, &e);
    ck_assert_msg(opt != NULL, "%s", e.message);
    nn_param *ps;
    int np = nn_module_params(net, &ps);
    ck_assert_int_eq(np, 4);
    ck_assert_str_eq(ps[np - 1].name, "2.bias");
    ad_tensor_set(ps[np - 1].value, 1, NAN);
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_msg(nn_save(p, net, opt, &r, &e) == AD_OK, "%s", e.message);
    nn_optim_free(opt);
    nn_module_free(net);
}

START_TEST(test_nonfinite_checkpoint)
{
    write_blobs();
    save_nan_checkpoint("nan.st");
    /* refused with nn_load's message, which names the option that loads it */
    ck_assert_int_eq(train(DATA " --load nan.st --eval-only"), 1);
    ck_assert_msg(strstr(err_text, "holds nan at element 1") != NULL, "%s", err_text);
    ck_assert_msg(strstr(err_text, "--allow-nonfinite-load loads it") != NULL, "%s", err_text);
    ck_assert_int_eq(count_lines(err_text), 1);
    ck_assert_int_eq(train(DATA " --load nan.st --epochs 1 --save out.st"), 1);
    ck_assert(!exists("out.st"));
    /* flagged, not refused, when asked */
    ck_assert_msg(train(DATA " --load nan.st --eval-only --allow-nonfinite-load") == 0, "%s", err_text);
    ck_assert_msg(strstr(err_text, "autodiff-train: warning: ") != NULL, "%s", err_text);
    ck_assert_msg(strstr(err_text, "holds nan at element 1 (loaded: --allow-nonfinite-load)") != NULL, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "test: loss "));
    /* training from it stops at the NaN loss; with --skip-nonfinite at the end of an epoch of
    ** nothing but skipped steps; nothing is saved either way */
    ck_assert_int_eq(train(DATA " --load nan.st --allow-nonfinite-load --epochs 2 --save out.st"), 1);
    ck_assert(!exists("out.st"));
    ck_assert_int_eq(train(DATA " --load nan.st --allow-nonfinite-load --skip-nonfinite --epochs 2 --save out.st"), 1);
    ck_assert_msg(strstr(err_text, "every step of epoch 1 (8) was skipped as non-finite") != NULL, "%s", err_text);
    ck_assert(!exists("out.st"));
}
END_TEST

/* Every step of an epoch non-finite without any checkpoint: features near the float range make
** the squared error Inf from the first step. With --skip-nonfinite that run exited 0 and saved. */
START_TEST(test_skip_every_step)
{
    char p[256];
    snprintf(p, sizeof p, "%s/big.csv", dir);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 40; i++) fprintf(f, "%d,%g,%g\n", i % 2, 3e37 * (1 + i % 3), -2e37 * (1 + i % 5));
    ck_assert_int_eq(fclose(f), 0);
    const char *args = "--train-csv big.csv --test-csv big.csv --regression --layers 2,8,1 --batch-size 10 "
                       "--threads 1 --quiet --epochs 2 --skip-nonfinite --save out.st";
    ck_assert_int_eq(train(args), 1);
    ck_assert_msg(strstr(err_text, "every step of epoch 1 (4) was skipped as non-finite") != NULL, "%s", err_text);
    ck_assert(!exists("out.st"));
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("nn_train_faults");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_write_failures);
    tcase_add_test(tc, test_outputs_before_training);
    tcase_add_test(tc, test_labels_before_training);
    tcase_add_test(tc, test_messages);
    tcase_add_test(tc, test_rmsprop_momentum);
    tcase_add_test(tc, test_nonfinite_checkpoint);
    tcase_add_test(tc, test_skip_every_step);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    cli_wrapped = 1; /* the command's failure paths under valgrind too (meson test --setup=valgrind) */
    return tu_run(faults_suite());
}

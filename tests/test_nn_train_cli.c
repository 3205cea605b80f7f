/* test_nn_train_cli.c: the autodiff-train command: options, exit statuses, one-line errors, a CSV run with save/load. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <math.h>

#include "ad.h"
#include "test_util.h"
#include "test_cli_util.h"

START_TEST(test_help)
{
    ck_assert_int_eq(train("--help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: autodiff-train"));
    ck_assert_ptr_nonnull(strstr(out_text, "--layers"));
    ck_assert_str_eq(err_text, "");
}
END_TEST

/* Every option --help lists is one the parser knows: "extra --NAME" stops at the missing value
** (options that take one) or at the stray argument (flags), never at an unknown option. */
START_TEST(test_help_lists_parsed_options)
{
    ck_assert_int_eq(train("--help"), 0);
    char help[sizeof out_text];
    strcpy(help, out_text);
    int seen = 0;
    for (const char *line = help; *line; line = strchr(line, '\n') + 1) {
        const char *p = strncmp(line, "  --", 4) == 0 ? line + 4 : strncmp(line, "  -h, --", 8) == 0 ? line + 8 : NULL;
        if (p) {
            char name[64], args[128];
            size_t n = strcspn(p, " \n");
            ck_assert_uint_lt(n, sizeof name);
            memcpy(name, p, n);
            name[n] = 0;
            snprintf(args, sizeof args, "extra --%s", name);
            int rc = train(args);
            seen++;
            if (strcmp(name, "help") == 0) {
                ck_assert_int_eq(rc, 0);
            } else {
                ck_assert_msg(rc == 2, "--%s: exit status %d", name, rc);
                ck_assert_msg(strstr(err_text, "unknown option") == NULL, "--%s: %s", name, err_text);
                ck_assert_msg(strstr(err_text, "needs a value") || strstr(err_text, "unexpected argument 'extra'"),
                              "--%s: %s", name, err_text);
            }
        }
        if (!strchr(line, '\n')) break;
    }
    ck_assert_int_ge(seen, 25);
}
END_TEST

/* Each bad invocation: exit status 2 and exactly one line on stderr mentioning `what`. */
static const struct {
    const char *args, *what;
} bad[] = {
    {"--bogus", "unknown option '--bogus'"},
    {"--epochs abc", "--epochs"},
    {"--epochs", "needs a value"},
    {"--lr -1", "--lr"},
    {"--batch-size 0", "--batch-size"},
    {"--layers 784,,10", "--layers"},
    {"--layers 784", "--layers"},
    {"--activation swish", "--activation"},
    {"--optimizer adagrad", "--optimizer"},
    {"--loss hinge", "--loss"},
    {"--val-split 1", "--val-split"},
    {"--warmup 5", "--warmup needs --schedule warmup_cosine"},
    {"--regression", "--regression needs"},
    {"--train-npy a.npy,b.npy", "--test-npy"},
    {"--train-npy a.npy --test-npy b.npy", "FEATURES.npy,TARGETS.npy"},
    {"--schedule linear", "--schedule"},
    {"--nesterov", "--nesterov"},
    {"--label-smoothing 1", "--label-smoothing"},
    {"--label-smoothing -0.1", "--label-smoothing"},
    {"--label-smoothing 0.1 --loss mse", "--label-smoothing needs the cross_entropy loss"},
    {"extra", "unexpected argument"},
    {"--train-csv a.csv", "--test-csv"},
    {"--data /nonexistent-dir", "missing data file /nonexistent-dir/"},
    {"--train-csv nope.csv --test-csv nope.csv", "cannot open CSV file 'nope.csv'"},
    /* options that would have no effect beside others */
    {"--model conv:4:3,fc:10 --layers 784,10", "--layers has no effect with --model"},
    {"--model conv:4:3,fc:10 --activation tanh", "--activation has no effect with --model"},
    {"--momentum 0.5", "--momentum has no effect with --optimizer adam"},
    {"--optimizer adamw --momentum 0.5", "--momentum has no effect with --optimizer adamw"},
    {"--label-col 2", "--label-col needs --train-csv"},
    {"--csv-header", "--csv-header needs --train-csv"},
    {"--eval-only --log log.csv", "--log has no effect with --eval-only"},
    {"--eval-only --plot p.svg", "--plot has no effect with --eval-only"},
    {"--eval-only --loss mse", "--loss has no effect with --eval-only"},
    {"--eval-only --label-smoothing 0.1", "--label-smoothing has no effect with --eval-only"},
    {"--draw t.dot --label-smoothing 0.1", "--label-smoothing has no effect with --draw"},
    {"--eval-only --val-split 0.2", "--val-split has no effect with --eval-only"},
    {"--draw t.dot --save s.st", "--save has no effect with --draw"},
    {"--draw t.dot --log log.csv", "--log has no effect with --draw"},
    {"--draw t.dot --plot p.svg", "--plot has no effect with --draw"},
    {"--draw t.dot --eval-only", "--eval-only has no effect with --draw"},
    {"--draw t.dot --loss mse", "--loss has no effect with --draw"},
    {"--quiet --progress always", "--progress has no effect with --quiet"},
    {"--epochs 0 --log log.csv", "--log has no effect with --epochs 0"},
    {"--epochs 0 --plot p.svg", "--plot has no effect with --epochs 0"},
    {"--allow-nonfinite-load", "--allow-nonfinite-load needs --load"},
    /* outputs that cannot be written, found before anything is loaded */
    {"--save /nonexistent-dir/x.st", "--save /nonexistent-dir/x.st: /nonexistent-dir does not exist"},
    {"--log /nonexistent-dir/log.csv", "--log /nonexistent-dir/log.csv: /nonexistent-dir does not exist"},
    {"--plot /nonexistent-dir/p.svg", "--plot /nonexistent-dir/p.svg: /nonexistent-dir does not exist"},
    {"--draw /nonexistent-dir/t.dot", "--draw /nonexistent-dir/t.dot: /nonexistent-dir does not exist"},
    {"--save /dev/null", "--save /dev/null: it is a device"},
    {"--save /", "--save /: it is a directory"},
    {"--log /", "--log /: it is a directory"},
    {"--save /dev/null/x.st", "/dev/null is not a directory"},
};

START_TEST(test_bad_invocations)
{
    ck_assert_int_eq(train(bad[_i].args), 2);
    ck_assert_msg(strstr(err_text, bad[_i].what) != NULL, "%s: stderr was: %s", bad[_i].args, err_text);
    ck_assert_msg(strncmp(err_text, "autodiff-train: ", 16) == 0, "%s", err_text);
    ck_assert_int_eq(count_lines(err_text), 1);
}
END_TEST

/* Writes three separable blobs as CSV (label first) with n rows. */
static void write_blobs(const char *name, int n, uint64_t seed)
{
    static const double c[3][2] = {{-2, 0}, {2, 0}, {0, 2.5}};
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    ad_rng r;
    ad_rng_seed(&r, seed);
    fprintf(f, "label,x,y\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "%d,%.5f,%.5f\n", i % 3, c[i % 3][0] + 0.5 * ad_rng_normal(&r), c[i % 3][1] + 0.5 * ad_rng_normal(&r));
    fclose(f);
}

START_TEST(test_csv_train_save_load)
{
    write_blobs("train.csv", 300, 1);
    write_blobs("test.csv", 90, 2);
    const char *data = "--train-csv train.csv --test-csv test.csv --csv-header --label-col 0";
    char args[512];
    snprintf(args, sizeof args,
             "%s --layers 2,16,3 --epochs 6 --batch-size 16 --lr 0.01 --save ck.safetensors --log log.csv --quiet",
             data);
    ck_assert_msg(train(args) == 0, "stderr: %s", err_text);
    ck_assert_int_eq(count_lines(out_text), 1 + 6 + 2); /* model line, 6 epochs, final, saved */
    /* the per-epoch lines name the test set for what it is; no validation set was asked for */
    ck_assert_ptr_nonnull(strstr(out_text, "test loss "));
    ck_assert_ptr_null(strstr(out_text, "val loss"));
    const char *fin = strstr(out_text, "final: test accuracy ");
    ck_assert_ptr_nonnull(fin);
    double acc = atof(fin + strlen("final: test accuracy "));
    ck_assert_msg(acc > 90.0, "accuracy %g", acc);
    char log[4096], p[128];
    snprintf(p, sizeof p, "%s/log.csv", dir);
    slurp(p, log, sizeof log);
    ck_assert_int_eq(count_lines(log), 7);

    /* evaluating the checkpoint gives the final figures again */
    snprintf(args, sizeof args, "%s --layers 2,16,3 --load ck.safetensors --eval-only", data);
    ck_assert_msg(train(args) == 0, "stderr: %s", err_text);
    const char *ev = strstr(out_text, "accuracy ");
    ck_assert_ptr_nonnull(ev);
    TU_ASSERT_CLOSE(atof(ev + strlen("accuracy ")), acc, 1e-9, 0);

    /* resuming training from it works with the same optimizer, and not with another */
    snprintf(args, sizeof args, "%s --layers 2,16,3 --load ck.safetensors --epochs 7 --quiet", data);
    ck_assert_msg(train(args) == 0, "stderr: %s", err_text);
    snprintf(args, sizeof args, "%s --layers 2,16,3 --load ck.safetensors --optimizer sgd --epochs 1", data);
    ck_assert_int_eq(train(args), 1);
    ck_assert_ptr_nonnull(strstr(err_text, "optimizer"));

    /* a checkpoint of another architecture */
    snprintf(args, sizeof args, "%s --layers 2,8,3 --load ck.safetensors --eval-only", data);
    ck_assert_int_eq(train(args), 1);
    ck_assert_int_eq(count_lines(err_text), 1);
    /* layer sizes that do not fit the data */
    snprintf(args, sizeof args, "%s --layers 3,8,3 --epochs 1", data);
    ck_assert_int_eq(train(args), 2);
    ck_assert_ptr_nonnull(strstr(err_text, "features"));
    snprintf(args, sizeof args, "%s --layers 2,8,2 --epochs 1", data);
    ck_assert_int_eq(train(args), 2);
    ck_assert_ptr_nonnull(strstr(err_text, "classes"));
}
END_TEST

/* Writes a regression set y = 2 x0 - x1 + 0.5 (+ small noise), target first. */
static void write_regression(const char *name, int n, uint64_t seed)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        double a = 2 * ad_rng_uniform(&r) - 1, b = 2 * ad_rng_uniform(&r) - 1;
        fprintf(f, "%.6f,%.6f,%.6f\n", 2 * a - b + 0.5 + 0.01 * ad_rng_normal(&r), a, b);
    }
    fclose(f);
}

/* The number after `key` in out_text (NaN when absent). */
static double figure(const char *key)
{
    const char *p = strstr(out_text, key);
    return p ? atof(p + strlen(key)) : NAN;
}

START_TEST(test_regression_val_split_schedules)
{
    write_regression("train.csv", 400, 3);
    write_regression("test.csv", 100, 4);
    static const char *const variants[] = {
        "--loss mse --schedule cosine", "--loss huber --schedule warmup_cosine --warmup 20",
        "--loss l1 --schedule onecycle --lr 0.01", "--optimizer rmsprop --lr 0.003 --schedule step"};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        char args[512];
        snprintf(args, sizeof args,
                 "--train-csv train.csv --test-csv test.csv --regression --layers 2,16,1 --activation tanh "
                 "--epochs 30 --batch-size 20 --val-split 0.2 --quiet %s",
                 variants[v]);
        ck_assert_msg(train(args) == 0, "%s: stderr: %s", variants[v], err_text);
        ck_assert_int_eq(count_lines(out_text), 1 + 30 + 1);
        ck_assert_ptr_nonnull(strstr(out_text, "(80 of the train samples held out for validation)"));
        /* every epoch line has the validation and the test figures, and no accuracy */
        ck_assert_ptr_nonnull(strstr(out_text, "epoch 30/30  loss "));
        ck_assert_ptr_nonnull(strstr(out_text, "  val loss "));
        ck_assert_ptr_nonnull(strstr(out_text, "  test loss "));
        ck_assert_ptr_null(strstr(out_text, " acc "));
        double test_loss = figure("final: test loss ");
        /* the mean guess has an MSE of about var(2 a - b) = 5/3; the fit is far below it */
        ck_assert_msg(test_loss < 0.05, "%s: test loss %g\n%s", variants[v], test_loss, out_text);
    }
    /* classification labels are refused with a regression loss, and the last layer must fit */
    ck_assert_int_eq(train("--train-csv train.csv --test-csv test.csv --regression --layers 2,8,3 --epochs 1"), 2);
    ck_assert_ptr_nonnull(strstr(err_text, "targets"));
}
END_TEST

/* Writes a float32 .npy file of the given 2-D shape (C order) from double values. */
static void write_npy(const char *name, int rows, int cols, const double *v)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ad_tensor *t = ad_tensor_new(AD_F32, AD_SHAPE(rows, cols));
    for (int i = 0; i < rows * cols; i++) ad_tensor_set(t, i, v[i]);
    char e[256];
    ck_assert_msg(ad_npy_save(p, t, e, sizeof e) == AD_OK, "%s", e);
    ad_tensor_free(t);
}

START_TEST(test_npy_classification)
{
    /* two blobs as .npy features and labels */
    enum { N = 200 };
    double x[N * 2], y[N];
    ad_rng r;
    ad_rng_seed(&r, 6);
    for (int i = 0; i < N; i++) {
        y[i] = i % 2;
        x[2 * i] = (i % 2 ? 1.5 : -1.5) + 0.5 * ad_rng_normal(&r);
        x[2 * i + 1] = 0.5 * ad_rng_normal(&r);
    }
    write_npy("x.npy", N, 2, x);
    write_npy("y.npy", N, 1, y);
    ck_assert_msg(train("--train-npy x.npy,y.npy --test-npy x.npy,y.npy --layers 2,8,2 --epochs 5 --batch-size 20 "
                        "--quiet --val-split 0.25") != 0, "labels must be [n]: %s", out_text);
    ck_assert_ptr_nonnull(strstr(err_text, "labels must be a [n] array"));
    /* [n] labels */
    char p[128];
    snprintf(p, sizeof p, "%s/y1.npy", dir);
    ad_tensor *t = ad_tensor_new(AD_F64, AD_SHAPE(N));
    for (int i = 0; i < N; i++) ad_tensor_set(t, i, y[i]);
    char e[256];
    ck_assert(ad_npy_save(p, t, e, sizeof e) == AD_OK);
    ad_tensor_free(t);
    ck_assert_msg(train("--train-npy x.npy,y1.npy --test-npy x.npy,y1.npy --layers 2,8,2 --epochs 5 --batch-size 20 "
                        "--quiet --val-split 0.25 --lr 0.01 --epochs 20") == 0, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "val acc "));
    ck_assert_msg(figure("final: test accuracy ") > 95.0, "%s", out_text);
}
END_TEST

/* --label-smoothing: training runs, and the losses are the smoothed cross-entropy's, which never
** falls below the entropy of the smoothed targets (plain cross-entropy falls well below it here). */
START_TEST(test_label_smoothing)
{
    write_blobs("train.csv", 300, 1);
    write_blobs("test.csv", 90, 2);
    const char *common = "--train-csv train.csv --test-csv test.csv --csv-header --layers 2,16,3 --epochs 6 "
                         "--batch-size 16 --lr 0.01 --quiet";
    double train_loss[2], test_loss[2], acc[2];
    for (int i = 0; i < 2; i++) {
        char args[512];
        snprintf(args, sizeof args, "%s --label-smoothing %s", common, i ? "0.2" : "0");
        ck_assert_msg(train(args) == 0, "%s: %s", args, err_text);
        train_loss[i] = figure("epoch 6/6  loss ");
        const char *fin = strstr(out_text, "final: ");
        ck_assert_ptr_nonnull(fin);
        acc[i] = atof(fin + strlen("final: test accuracy "));
        const char *tl = strstr(fin, "test loss ");
        ck_assert_ptr_nonnull(tl);
        test_loss[i] = atof(tl + strlen("test loss "));
        ck_assert_msg(isfinite(train_loss[i]) && isfinite(test_loss[i]), "%s", out_text);
        ck_assert_msg(acc[i] > 90.0, "%s", out_text);
    }
    /* the entropy of (1 - 0.2) one-hot + 0.2 / 3: no prediction gets below it */
    double hi = 0.8 + 0.2 / 3, lo = 0.2 / 3, floor_h = -hi * log(hi) - 2 * lo * log(lo);
    ck_assert_msg(train_loss[1] >= floor_h - 1e-4 && test_loss[1] >= floor_h - 1e-4, "%g %g < %g", train_loss[1],
                  test_loss[1], floor_h);
    ck_assert_msg(train_loss[0] < floor_h - 0.1 && test_loss[0] < floor_h - 0.1, "plain %g %g", train_loss[0],
                  test_loss[0]);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("nn_train_cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_help_lists_parsed_options);
    tcase_add_loop_test(tc, test_bad_invocations, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_csv_train_save_load);
    tcase_add_test(tc, test_regression_val_split_schedules);
    tcase_add_test(tc, test_npy_classification);
    tcase_add_test(tc, test_label_smoothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(cli_suite()); }

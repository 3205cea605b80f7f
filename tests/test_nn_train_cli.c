/* test_nn_train_cli.c: the autodiff-train command: options, exit statuses, one-line errors, a CSV run with save/load. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ad.h"
#include "test_util.h"

static char dir[64];
static char out_text[16384], err_text[4096];

/* Reads a whole (small) file into buf. */
static void slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
}

/* Runs autodiff-train with args; returns its exit status, output in out_text/err_text. */
static int train(const char *args)
{
    const char *exe = getenv("AUTODIFF_TRAIN");
    ck_assert_msg(exe != NULL, "AUTODIFF_TRAIN is not set");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > out.txt 2> err.txt", dir, exe, args);
    int st = system(cmd);
    ck_assert(WIFEXITED(st));
    char p[128];
    snprintf(p, sizeof p, "%s/out.txt", dir);
    slurp(p, out_text, sizeof out_text);
    snprintf(p, sizeof p, "%s/err.txt", dir);
    slurp(p, err_text, sizeof err_text);
    return WEXITSTATUS(st);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void setup(void)
{
    strcpy(dir, "/tmp/test_nn_cli_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

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
    {"--optimizer rmsprop", "--optimizer"},
    {"--schedule linear", "--schedule"},
    {"--nesterov", "--nesterov"},
    {"extra", "unexpected argument"},
    {"--train-csv a.csv", "--test-csv"},
    {"--data /nonexistent-dir", "missing data file /nonexistent-dir/"},
    {"--train-csv nope.csv --test-csv nope.csv", "cannot open CSV file 'nope.csv'"},
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
    snprintf(args, sizeof args, "%s --layers 2,16,3 --load ck.safetensors --epochs 1 --quiet", data);
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
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(cli_suite()); }

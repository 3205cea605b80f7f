/* test_cli_resume.c: autodiff-train resumed from its checkpoints trains the same bits as one run (weights,
** optimizer state, generator, printed losses, the log), with shuffling, per-step schedules and more than one resume. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ad.h"
#include "nn.h"
#include "test_util.h"

static char dir[64];
static char out_text[16384], err_text[4096];

/* Reads a whole (small) file into buf; its length. */
static size_t slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
    return k;
}

/* Runs autodiff-train in dir with args; its exit status, output in out_text/err_text. */
static int train(const char *args)
{
    const char *exe = getenv("AUTODIFF_TRAIN");
    ck_assert_msg(exe != NULL, "AUTODIFF_TRAIN is not set");
    char cmd[4096];
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

static void setup(void)
{
    strcpy(dir, "/tmp/test_cli_resume_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* Four noisy features around one of three centres, the label first. */
static void write_set(const char *name, int n, uint64_t seed)
{
    static const double c[3][4] = {{-1, 0, 1, 0}, {1, 1, -1, 0}, {0, -1, 0, 1}};
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int k = (int)ad_rng_below(&r, 3);
        fprintf(f, "%d", k);
        for (int j = 0; j < 4; j++) fprintf(f, ",%.6f", c[k][j] + 0.8 * ad_rng_normal(&r));
        fprintf(f, "\n");
    }
    fclose(f);
}

/* The lines of text that start with "epoch ", each cut before its last field (the seconds), appended to out. */
static void epoch_lines(const char *text, char *out, size_t n)
{
    size_t len = strlen(out);
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        if (!e) e = p + strlen(p);
        if (strncmp(p, "epoch ", 6) == 0) {
            const char *cut = e;
            for (const char *q = p; q + 1 < e; q++)
                if (q[0] == ' ' && q[1] == ' ') cut = q; /* the last double space: before the seconds */
            size_t k = (size_t)(cut - p);
            ck_assert(len + k + 2 < n);
            memcpy(out + len, p, k);
            len += k;
            out[len++] = '\n';
            out[len] = 0;
        }
        p = *e ? e + 1 : e;
    }
}

/* A CSV log without its last column (the seconds). */
static void log_without_time(const char *name, char *out, size_t n)
{
    char p[128], raw[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    slurp(p, raw, sizeof raw);
    out[0] = 0;
    size_t k = 0;
    for (char *line = strtok(raw, "\n"); line; line = strtok(NULL, "\n")) {
        char *comma = strrchr(line, ',');
        if (comma) *comma = 0;
        k += (size_t)snprintf(out + k, n - k, "%s\n", line);
        ck_assert(k < n);
    }
}

/* Files a and b (in dir) hold the same bytes. */
static void same_file(const char *a, const char *b)
{
    static char ta[1 << 16], tb[1 << 16];
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, a);
    size_t na = slurp(p, ta, sizeof ta);
    snprintf(p, sizeof p, "%s/%s", dir, b);
    size_t nb = slurp(p, tb, sizeof tb);
    ck_assert_msg(na > 100 && na < sizeof ta - 1, "%s: %zu bytes", a, na);
    ck_assert_msg(na == nb && memcmp(ta, tb, na) == 0, "%s and %s differ (%zu and %zu bytes)", a, b, na, nb);
}

/* Per-step schedules and optimizers, each run straight (3 epochs) and in three parts. Schedules over all the
** epochs (warmup_cosine, onecycle, cosine) need the parts to know the total: --epochs 3 --stop-after K; the
** step schedule does not, so its parts are plain --epochs 1, 2, 3. */
static const struct {
    const char *opts;
    bool stop_after;
} configs[] = {
    {"--optimizer adam --schedule warmup_cosine --warmup 7", true},
    {"--optimizer sgd --momentum 0.9 --nesterov --schedule onecycle --val-split 0.2", true},
    {"--optimizer rmsprop --schedule cosine --clip-norm 1", true},
    {"--optimizer adam --schedule step", false},
};

START_TEST(resumed_is_straight)
{
    write_set("train.csv", 203, 1); /* 13 batches of 16, the last short */
    write_set("test.csv", 60, 2);
    char common[512], args[1024], straight[4096] = "", resumed[4096] = "";
    snprintf(common, sizeof common,
             "--train-csv train.csv --test-csv test.csv --layers 4,12,3 --batch-size 16 --seed 7 --quiet %s",
             configs[_i].opts);

    snprintf(args, sizeof args, "%s --epochs 3 --save straight.st --log straight.csv", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    epoch_lines(out_text, straight, sizeof straight);
    ck_assert_msg(strstr(straight, "epoch 3/3  loss "), "%s", out_text);

    /* to epoch 1, then from the checkpoint to 2, then to 3 */
    for (int k = 1; k <= 3; k++) {
        char load[32] = "", part[64];
        if (k > 1) snprintf(load, sizeof load, "--load r%d.st", k - 1);
        if (configs[_i].stop_after) snprintf(part, sizeof part, "--epochs 3%s", k < 3 ? (k == 1 ? " --stop-after 1" : " --stop-after 2") : "");
        else snprintf(part, sizeof part, "--epochs %d", k);
        snprintf(args, sizeof args, "%s %s %s --save r%d.st --log resumed.csv", common, load, part, k);
        ck_assert_msg(train(args) == 0, "%s", err_text);
        if (k > 1) ck_assert_msg(strstr(out_text, k == 2 ? "resuming after epoch 1 of " : "resuming after epoch 2 of 3"),
                                 "%s", out_text);
        ck_assert_msg(!strstr(out_text, "spans"), "%s", out_text);
        epoch_lines(out_text, resumed, sizeof resumed);
    }

    /* parts of a --stop-after run number their epochs of the whole run (k/3), as the straight run */
    if (configs[_i].stop_after) ck_assert_str_eq(resumed, straight);
    /* the same losses printed, epoch by epoch (parts of plain --epochs k runs number them k/k) */
    const char *sl = straight, *rl = resumed;
    for (int k = 1; k <= 3; k++) {
        sl = strstr(sl, "  loss ");
        rl = strstr(rl, "  loss ");
        ck_assert(sl && rl);
        size_t n = (size_t)(strchr(sl, '\n') - sl);
        ck_assert_msg(strncmp(sl, rl, n + 1) == 0, "epoch %d:\nstraight:\n%s\nresumed:\n%s", k, straight, resumed);
        sl += n;
        rl += n;
    }
    /* the log goes on across the parts: the same rows, times aside */
    char ls[4096], lr[4096];
    log_without_time("straight.csv", ls, sizeof ls);
    log_without_time("resumed.csv", lr, sizeof lr);
    ck_assert_str_eq(lr, ls);
    /* the same bytes: weights, optimizer state and step, generator, epoch counts */
    same_file("straight.st", "r3.st");

    /* nothing left: evaluated, not trained, and saved as it was */
    snprintf(args, sizeof args, "%s --load r3.st --epochs 3 --save r4.st", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(strstr(out_text, "no epoch left") && strstr(out_text, "test: loss ") && !strstr(out_text, "epoch 1/"),
                  "%s", out_text);
    same_file("r3.st", "r4.st");
    /* resumed with another total: the schedule changes, and the run says so (the step schedule excepted) */
    snprintf(args, sizeof args, "%s --load r1.st --epochs 5", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(!configs[_i].stop_after || strstr(out_text, "now spans 5"), "%s", out_text);
}
END_TEST

/* The CLI's model for --layers 4,6,3 and Adam, saved by a program of its own: nmeta pairs of metadata, and
** the generator only when rng. */
static void save_foreign(const char *name, int nmeta, const char *const *meta, bool rng)
{
    ad_rng r;
    ad_rng_seed(&r, 5);
    nn_error err;
    nn_module *m = nn_mlp(3, (const int64_t[]){4, 6, 3}, NN_RELU, &r, &err);
    ck_assert_msg(m != NULL, "%s", err.message);
    nn_optim_opts o = nn_optim_defaults("adam");
    nn_optim *opt = nn_optim_for("adam", m, &o, &err);
    ck_assert_msg(opt != NULL, "%s", err.message);
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_msg(nn_save_meta(p, m, opt, rng ? &r : NULL, nmeta, meta, &err) == AD_OK, "%s", err.message);
    nn_optim_free(opt);
    nn_module_free(m);
}

/* A checkpoint without an epoch count (another program's) starts a new run from its weights: --epochs more;
** a count of 0 likewise; a count that is not one is refused naming it; --eval-only --save keeps the count. */
START_TEST(counts_from_the_checkpoint)
{
    write_set("train.csv", 64, 3);
    write_set("test.csv", 30, 4);
    const char *common = "--train-csv train.csv --test-csv test.csv --layers 4,6,3 --batch-size 16 --quiet";
    char args[1024];
    save_foreign("foreign.st", 0, NULL, false);
    snprintf(args, sizeof args, "%s --load foreign.st --epochs 2 --save f2.st", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(strstr(out_text, "epoch 1/2") && strstr(out_text, "epoch 2/2") && !strstr(out_text, "resuming"),
                  "%s", out_text);
    snprintf(args, sizeof args, "%s --epochs 0 --save e0.st", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    snprintf(args, sizeof args, "%s --load e0.st --epochs 1", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(strstr(out_text, "epoch 1/1") && !strstr(out_text, "resuming"), "%s", out_text);
    static const char *const bad[][2] = {{"epoch", "x"}, {"epoch", "-1"}, {"epoch", "2e3"}, {"epoch", ""}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        save_foreign("bad.st", 1, bad[i], true);
        snprintf(args, sizeof args, "%s --load bad.st --epochs 2", common);
        ck_assert_int_eq(train(args), 1);
        ck_assert_msg(strstr(err_text, "bad.st") && strstr(err_text, "\"epoch\""), "%s", err_text);
    }
    /* --eval-only keeps the count: a later run goes on from it */
    snprintf(args, sizeof args, "%s --epochs 1 --save e1.st", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    snprintf(args, sizeof args, "%s --load e1.st --eval-only --save e1b.st", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    same_file("e1.st", "e1b.st");
    snprintf(args, sizeof args, "%s --load e1b.st --epochs 2", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(strstr(out_text, "epoch 2/2") && !strstr(out_text, "epoch 1/2"), "%s", out_text);
}
END_TEST

/* --stop-after: a usage error with --eval-only; at or past --epochs, the whole run */
START_TEST(stop_after_needs_training)
{
    write_set("train.csv", 40, 5);
    write_set("test.csv", 20, 6);
    const char *common = "--train-csv train.csv --test-csv test.csv --layers 4,6,3 --batch-size 16 --quiet";
    char args[1024];
    snprintf(args, sizeof args, "%s --eval-only --stop-after 1", common);
    ck_assert_int_eq(train(args), 2);
    ck_assert_ptr_nonnull(strstr(err_text, "--stop-after"));
    snprintf(args, sizeof args, "%s --epochs 2 --stop-after 5", common);
    ck_assert_msg(train(args) == 0, "%s", err_text);
    ck_assert_msg(strstr(out_text, "epoch 2/2"), "%s", out_text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_resume");
    TCase *tc = tcase_create("resume");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, resumed_is_straight, 0, (int)(sizeof configs / sizeof configs[0]));
    tcase_add_test(tc, stop_after_needs_training);
    tcase_add_test(tc, counts_from_the_checkpoint);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

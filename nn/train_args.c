/* train_args.c: autodiff-train's command line: the options' table, their parser and checks, and --help. */
#include "train_args.h"

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef AD_HAVE_MPI
#define HAVE_MPI 1
#else
#define HAVE_MPI 0
#endif

/* ---- the options: one table, from which the parser and --help are made ----
**
** To add an option: a field in config (train_args.h; its default set in main), and a row in options[]:
** FLAG, STR, NUM (a range-checked number) or FN (a handler for anything else). getopt_long's
** table, the range and value checks, the one-line errors and --help all follow from the row. */

/* How an option's argument is stored: a flag sets a bool; strings are kept as given; numbers
** are parsed and range-checked into an int, int64_t, uint64_t or double field; ARG_FN calls the
** row's handler; a section row only titles the lines after it in --help. */
typedef enum arg_kind { ARG_SECTION, ARG_FLAG, ARG_STR, ARG_INT, ARG_I64, ARG_U64, ARG_F64, ARG_FN } arg_kind;

typedef struct option_row {
    const char *name; /* the long name without "--" (a section: its title) */
    const char *arg;  /* the argument's name in --help, e.g. "N"; NULL for a flag */
    const char *help; /* '\n' starts a continuation line */
    arg_kind kind;
    size_t field;     /* offsetof(config, ...) of what it sets */
    double lo, hi;    /* the accepted range of a number */
    bool (*set)(config *c, const char *arg); /* ARG_FN: false on a bad argument */
    const char *bad;  /* ARG_FN: the one-line error for a bad argument, "%s" being the argument */
    char short_name;  /* a one-letter alias ("-h"), or 0 */
} option_row;

#define SECTION(title) {.name = title, .kind = ARG_SECTION}
#define FLAG(nm, f, text) {.name = nm, .help = text, .kind = ARG_FLAG, .field = offsetof(config, f)}
#define STR(nm, a, f, text) {.name = nm, .arg = a, .help = text, .kind = ARG_STR, .field = offsetof(config, f)}
#define NUM(k, nm, a, f, min, max, text)                                                                   \
    {.name = nm, .arg = a, .help = text, .kind = k, .field = offsetof(config, f), .lo = min, .hi = max}
#define FN(nm, a, fn, msg, text) {.name = nm, .arg = a, .help = text, .kind = ARG_FN, .set = fn, .bad = msg}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_f64(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

static bool set_layers(config *c, const char *s)
{
    c->nlayers = 0;
    const char *p = s;
    while (*p) {
        char buf[32];
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof buf || c->nlayers == MAX_LAYERS) return false;
        memcpy(buf, p, n);
        buf[n] = 0;
        if (!parse_i64(buf, 1, 1 << 24, &c->layers[c->nlayers++])) return false;
        p += n;
        if (*p == ',' && !*++p) return false;
    }
    return c->nlayers >= 2;
}

static bool set_activation(config *c, const char *a) { return nn_act_from_name(a, &c->act) && c->act != NN_SOFTMAX; }

/* a in the NULL-terminated list names; then *out = a */
static bool one_of(const char *a, const char *const *names, const char **out)
{
    for (; *names; names++)
        if (strcmp(a, *names) == 0) {
            *out = *names;
            return true;
        }
    return false;
}

static bool set_optimizer(config *c, const char *a)
{
    return one_of(a, (const char *const[]){"adam", "adamw", "sgd", "rmsprop", NULL}, &c->optimizer);
}

static bool set_schedule(config *c, const char *a)
{
    return one_of(a, (const char *const[]){"cosine", "warmup_cosine", "onecycle", "step", "none", NULL}, &c->schedule);
}

static bool set_loss(config *c, const char *a)
{
    return one_of(a, (const char *const[]){"cross_entropy", "mse", "huber", "l1", "bce", NULL}, &c->loss);
}

static bool set_label_smoothing(config *c, const char *a)
{
    return parse_f64(a, 0, 1, &c->label_smoothing) && c->label_smoothing < 1;
}

static bool set_progress(config *c, const char *a)
{
    return one_of(a, (const char *const[]){"auto", "always", "never", NULL}, &c->progress);
}

static const option_row options[] = {
    SECTION("data"),
    STR("data", "DIR", data,
        "IDX directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],\n"
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"),
    STR("train-csv", "FILE", train_csv, "training set as CSV instead (numeric; one label column)"),
    STR("test-csv", "FILE", test_csv, "test set as CSV"),
    NUM(ARG_INT, "label-col", "N", label_col, -100000, 100000,
        "CSV label (or target) column, negative from the end (default 0)"),
    FLAG("csv-header", csv_header, "the CSV files start with a header line"),
    STR("train-npy", "X,Y", train_npy, "training set as two .npy files: features [n, ...] and labels [n]\n"
        "(or float targets [n, ...] with --regression)"),
    STR("test-npy", "X,Y", test_npy, "test set as two .npy files"),
    FLAG("regression", regression, "float targets (the CSV label column, or the .npy targets) instead of\n"
         "class labels; the loss defaults to mse"),
    NUM(ARG_F64, "val-split", "F", val_split, 0, 0.99,
        "hold out this fraction of the training set for validation (default 0);\n"
        "the test set is reported only"),
    SECTION("model and training"),
    FN("layers", "A,B,...", set_layers, "bad --layers '%s' (want sizes like 784,256,10)",
       "layer sizes, input first (default 784,256,128,10; the first and last\n"
       "must match the data's features and classes)"),
    STR("model", "SPEC", model,
        "a convolutional network instead, for square one-channel images (such as\n"
        "28x28); comma-separated layers: conv:C:K[:S] (C channels, KxK, stride S,\n"
        "padding K/2, ReLU), pool:K (max), avgpool:K, bn, dropout:P, attn:H[:F]\n"
        "(a transformer block, H heads, MLP width F, over the positions), fc:N (ReLU\n"
        "but the last), e.g. conv:32:5,pool:2,conv:64:5,pool:2,fc:1024,fc:10 or\n"
        "conv:16:3,pool:2,attn:4,fc:10"),
    FN("activation", "NAME", set_activation, "unknown --activation '%s'",
       "relu, leaky_relu, gelu, tanh, sigmoid, identity (default relu)"),
    FN("optimizer", "NAME", set_optimizer, "unknown --optimizer '%s' (adam, adamw, sgd, rmsprop)",
       "adam, adamw, sgd, rmsprop (default adam)"),
    FN("loss", "NAME", set_loss, "unknown --loss '%s' (cross_entropy, mse, huber, l1, bce)",
       "cross_entropy (default with labels), mse (default with --regression),\n"
       "huber, l1, bce (binary cross-entropy of logits)"),
    FN("label-smoothing", "EPS", set_label_smoothing, "bad --label-smoothing '%s' (want EPS in [0, 1))",
       "cross-entropy against (1 - EPS) one-hot + EPS / classes, in training and\n"
       "the per-epoch losses (default 0)"),
    NUM(ARG_F64, "lr", "X", lr, 0, 1e3, "learning rate (default 1e-3 for Adam, 0.05 for SGD)"),
    NUM(ARG_F64, "momentum", "X", momentum, 0, 1, "SGD's momentum (default 0.9), or RMSprop's (default 0)"),
    FLAG("nesterov", nesterov, "SGD with Nesterov momentum"),
    NUM(ARG_F64, "weight-decay", "X", weight_decay, 0, 1e3, "(default 0)"),
    NUM(ARG_F64, "clip-norm", "X", clip_norm, 0, 1e30,
        "clip gradients to global norm X before each update (default 0: off)"),
    FLAG("skip-nonfinite", skip_nonfinite, "skip a step whose loss or gradient is NaN/Inf instead of stopping\n"
         "(an epoch of only skipped steps stops the run)"),
    FN("schedule", "NAME", set_schedule, "unknown --schedule '%s' (cosine, warmup_cosine, onecycle, step, none)",
       "cosine, warmup_cosine, onecycle, step, none, set at every step (default\n"
       "cosine; step halves the lr every 5 epochs)"),
    NUM(ARG_I64, "warmup", "N", warmup, 0, 1e12, "warmup_cosine's warmup steps (default: 5% of the steps)"),
    NUM(ARG_INT, "epochs", "N", epochs, 0, 1000000,
        "epochs in all (default 12), counted with --load from the checkpoint's:\n"
        "resumed after epoch 4 with --epochs 10, a run trains epochs 5 to 10"),
    NUM(ARG_INT, "stop-after", "N", stop_after, 1, 1000000,
        "stop after epoch N of the --epochs (and --save): a run in parts, each\n"
        "part resumed with --load, schedules spanning all the epochs"),
    NUM(ARG_I64, "batch-size", "N", batch, 1, 1 << 24, "(default 128)"),
    NUM(ARG_U64, "seed", "N", seed, 0, 0x1p63, "weights and shuffling (default 1)"),
    NUM(ARG_INT, "threads", "N", threads, 1, 1024, "threads for the matrix kernels (default 2)"),
    SECTION("checkpoints and output"),
    STR("save", "FILE", save, "write a checkpoint (safetensors) after training"),
    STR("load", "FILE", load, "start from a checkpoint: its weights, optimizer state, generator and\n"
        "epoch count (see --epochs)"),
    FLAG("allow-nonfinite-load", allow_nonfinite,
         "load a checkpoint that holds NaN or Inf, with a warning,\n"
         "instead of refusing it (to inspect a diverged run)"),
    FLAG("eval-only", eval_only, "only evaluate (usually with --load)"),
    STR("log", "FILE", log, "per-epoch CSV log"),
    FN("progress", "WHEN", set_progress, "bad --progress '%s' (auto, always, never)",
       "a progress bar with samples/s and time left: auto (on a terminal),\n"
       "always, never (default auto)"),
    FLAG("quiet", quiet, "no progress bar (--progress=never)"),
    STR("plot", "FILE", plot, "after training, write the loss and accuracy curves per epoch\n"
        "(train and test) as an SVG image"),
    STR("draw", "FILE", draw, "write the tape of one batch (forward pass and loss) as Graphviz\n"
        "DOT, or as SVG when FILE ends in .svg (runs dot), then exit"),
    FLAG("version", version, "print the version and exit"),
    {.name = "help", .help = "this help", .kind = ARG_FLAG, .field = offsetof(config, help), .short_name = 'h'},
};
#define NOPTIONS ((int)(sizeof options / sizeof options[0]))
_Static_assert(sizeof options / sizeof options[0] <= sizeof ((config *)0)->given, "config.given is too short");
#define OPT_VAL0 256 /* getopt_long's value for row i is OPT_VAL0 + i */
#define HELP_COLUMN 24

static const char usage_head[] =
    "usage: autodiff-train [options]\n"
    "Trains a multilayer perceptron (a classifier, or a regression with --regression) and\n"
    "reports per epoch the loss and accuracy on the training set, the validation set\n"
    "(--val-split) and the test set, and the time. With no options: Fashion-MNIST from\n"
    DEFAULT_DATA ", 784-256-128-10 with ReLU, Adam (lr 1e-3,\n"
    "cosine schedule), batch 128, 12 epochs.\n"
    "Data-parallel: 'mpirun -np N autodiff-train [options]' (a build with MPI): every\n"
    "rank holds the model and takes 1/N of each batch (--batch-size is the global\n"
    "batch), gradients are averaged before each update, rank 0 prints, logs and saves,\n"
    "and --load is read by rank 0 and broadcast.\n";

/* --help, from the table: "  --name ARG" padded to HELP_COLUMN, then the help text. */
static void print_help(FILE *f)
{
    fputs(usage_head, f);
    for (int i = 0; i < NOPTIONS; i++) {
        const option_row *r = &options[i];
        if (r->kind == ARG_SECTION) {
            fprintf(f, "%s%s:\n", i ? "" : "\n", r->name);
            continue;
        }
        int w = r->short_name ? fprintf(f, "  -%c, --%s", r->short_name, r->name) : fprintf(f, "  --%s", r->name);
        if (r->arg) w += fprintf(f, " %s", r->arg);
        if (w > HELP_COLUMN - 2) { /* two spaces at least between the name and its help, or a new line */
            fputc('\n', f);
            w = 0;
        }
        for (const char *h = r->help; *h;) {
            size_t n = strcspn(h, "\n");
            fprintf(f, "%*s%.*s\n", w < HELP_COLUMN ? HELP_COLUMN - w : 1, "", (int)n, h);
            w = 0;
            h += n + (h[n] == '\n');
        }
    }
}

/* A one-line error for a bad invocation; exit status 2. */
int train_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "autodiff-train: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

/* Applies row r with its argument a (NULL for a flag); 0 or the exit status. */
static int apply(const option_row *r, const char *a, config *c)
{
    char *field = (char *)c + r->field;
    c->given[r - options] = true;
    int64_t v;
    double d;
    switch (r->kind) {
    case ARG_SECTION: break;
    case ARG_FLAG: *(bool *)field = true; return 0;
    case ARG_STR: *(const char **)field = a; return 0;
    case ARG_FN:
        if (!r->set(c, a)) return train_usage_error(r->bad, a);
        return 0;
    case ARG_INT:
    case ARG_I64:
    case ARG_U64:
        if (!parse_i64(a, (int64_t)r->lo, r->hi >= 0x1p63 ? INT64_MAX : (int64_t)r->hi, &v)) break;
        if (r->kind == ARG_INT) *(int *)field = (int)v;
        else if (r->kind == ARG_I64) *(int64_t *)field = v;
        else *(uint64_t *)field = (uint64_t)v;
        return 0;
    case ARG_F64:
        if (!parse_f64(a, r->lo, r->hi, &d)) break;
        *(double *)field = d;
        return 0;
    }
    fprintf(stderr, "autodiff-train: bad --%s '%s' (see --help)\n", r->name, a);
    return 2;
}

/* Whether the option called name was on the command line. */
bool train_given(const config *c, const char *name)
{
    for (int i = 0; i < NOPTIONS; i++)
        if (options[i].kind != ARG_SECTION && strcmp(options[i].name, name) == 0) return c->given[i];
    return false;
}

/* An option that would do nothing beside another is an error, not silently dropped: a row
** names the option, the one that makes it moot, and why. 0 or the exit status. */
static int check_moot(const config *c)
{
    static const struct {
        const char *opt, *with, *why;
    } moot[] = {
        {"layers", "model", "--model gives the whole network"},
        {"activation", "model", "--model's layers use ReLU"},
        {"log", "eval-only", "nothing is trained"},
        {"plot", "eval-only", "nothing is trained"},
        {"loss", "eval-only", "evaluation reports cross-entropy, or MSE with --regression"},
        {"val-split", "eval-only", "nothing is trained (the test set is evaluated)"},
        {"save", "draw", "--draw writes the tape and exits"},
        {"log", "draw", "--draw writes the tape and exits"},
        {"plot", "draw", "--draw writes the tape and exits"},
        {"eval-only", "draw", "--draw writes the tape and exits"},
        {"loss", "draw", "the tape ends in cross-entropy, or MSE with --regression"},
        {"label-smoothing", "eval-only", "evaluation reports the plain cross-entropy"},
        {"label-smoothing", "draw", "the tape ends in the plain cross-entropy"},
        {"progress", "quiet", "--quiet is --progress=never"},
        {"stop-after", "eval-only", "nothing is trained"},
    };
    char msg[256];
    for (size_t i = 0; i < sizeof moot / sizeof moot[0]; i++) {
        if (!train_given(c, moot[i].opt) || !train_given(c, moot[i].with)) continue;
        if (strcmp(moot[i].opt, "progress") == 0 && strcmp(c->progress, "never") == 0) continue;
        snprintf(msg, sizeof msg, "--%s has no effect with --%s: %s", moot[i].opt, moot[i].with, moot[i].why);
        return train_usage_error("%s", msg);
    }
    if (c->epochs == 0 && !c->eval_only && !c->draw && (train_given(c, "log") || train_given(c, "plot")))
        return train_usage_error("--%s has no effect with --epochs 0: nothing is trained",
                                 train_given(c, "log") ? "log" : "plot");
    if (train_given(c, "momentum") && strcmp(c->optimizer, "sgd") != 0 && strcmp(c->optimizer, "rmsprop") != 0)
        return train_usage_error("--momentum has no effect with --optimizer %s: only sgd and rmsprop have one",
                                 c->optimizer);
    if ((train_given(c, "label-col") || c->csv_header) && !c->train_csv)
        return train_usage_error("%s needs --train-csv", c->csv_header ? "--csv-header" : "--label-col");
    if (c->allow_nonfinite && !c->load) return train_usage_error("%s", "--allow-nonfinite-load needs --load");
    return 0;
}

/* 0 on success, -1 after --help, else the exit status. */
int train_parse_args(int argc, char **argv, config *c)
{
    struct option longopts[NOPTIONS + 1];
    char shortopts[2 * NOPTIONS + 1];
    int n = 0, ns = 0;
    for (int i = 0; i < NOPTIONS; i++) {
        const option_row *r = &options[i];
        if (r->kind == ARG_SECTION) continue;
        longopts[n++] = (struct option){r->name, r->arg ? required_argument : no_argument, 0, OPT_VAL0 + i};
        if (r->short_name) {
            shortopts[ns++] = r->short_name;
            if (r->arg) shortopts[ns++] = ':';
        }
    }
    longopts[n] = (struct option){0, 0, 0, 0};
    shortopts[ns] = 0;
    opterr = 0;
    optind = 1;
    for (;;) {
        int o = getopt_long(argc, argv, shortopts, longopts, NULL);
        if (o == -1) break;
        for (int i = 0; o > 0 && o < OPT_VAL0 && i < NOPTIONS; i++)
            if (options[i].short_name == o) o = OPT_VAL0 + i;
        if (o < OPT_VAL0 || o >= OPT_VAL0 + NOPTIONS) {
            if (optopt >= OPT_VAL0) return train_usage_error("option '%s' needs a value", argv[optind - 1]);
            return train_usage_error("unknown option '%s'", argv[optind - 1]);
        }
        int rc = apply(&options[o - OPT_VAL0], optarg, c);
        if (rc) return rc;
        if (c->help) {
            print_help(stdout);
            return -1;
        }
    }
    if (optind < argc) return train_usage_error("unexpected argument '%s'", argv[optind]);
    if (c->version) {
        printf("autodiff-train %s%s\n", AD_VERSION_STRING, HAVE_MPI ? " (with MPI)" : "");
        return -1;
    }
    if (!!c->train_csv != !!c->test_csv) return train_usage_error("%s", "--train-csv and --test-csv go together");
    if (!!c->train_npy != !!c->test_npy) return train_usage_error("%s", "--train-npy and --test-npy go together");
    if ((c->train_csv != NULL) + (c->train_npy != NULL) + (c->data != NULL) > 1)
        return train_usage_error("%s", "--data, --train-csv and --train-npy exclude each other");
    if (c->regression && !c->train_csv && !c->train_npy)
        return train_usage_error("%s", "--regression needs --train-csv or --train-npy");
    if (c->warmup && strcmp(c->schedule, "warmup_cosine") != 0)
        return train_usage_error("%s", "--warmup needs --schedule warmup_cosine");
    if (c->nesterov && strcmp(c->optimizer, "sgd") != 0)
        return train_usage_error("%s", "--nesterov needs --optimizer sgd");
    if (c->label_smoothing != 0 && (c->regression || (c->loss && strcmp(c->loss, "cross_entropy") != 0)))
        return train_usage_error("%s", "--label-smoothing needs the cross_entropy loss (class labels)");
    return check_moot(c);
}

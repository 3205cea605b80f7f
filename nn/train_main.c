/* train_main.c: autodiff-train, trains and evaluates an MLP classifier from the command line (Fashion-MNIST by default). */
#include "nn.h"
#include "train_checks.h"
#include "train_extras.h"
#ifdef AD_HAVE_MPI
#include "nn_dist.h"
#endif

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#ifdef AD_HAVE_MPI
#define HAVE_MPI 1
#else
#define HAVE_MPI 0
typedef struct nn_dist nn_dist;
#endif
#define MAX_LAYERS 64

typedef struct config {
    const char *data, *train_csv, *test_csv, *train_npy, *test_npy, *save, *load, *log, *plot, *draw, *progress;
    int label_col;
    bool csv_header, eval_only, quiet, nesterov;
    int64_t layers[MAX_LAYERS];
    int nlayers;
    const char *model; /* --model: a CNN spec (nn_model_from_spec) instead of --layers */
    nn_act act;
    const char *optimizer, *schedule;
    double lr, momentum, weight_decay, clip_norm;
    bool skip_nonfinite, help, regression, version;
    const char *loss;
    double label_smoothing;
    double val_split;
    int64_t warmup;
    int epochs, threads, stop_after;
    int64_t batch;
    uint64_t seed;
    bool allow_nonfinite; /* --allow-nonfinite-load */
    bool given[96];       /* given[i]: options[i] was on the command line */
} config;

/* ---- the options: one table, from which the parser and --help are made ----
**
** To add an option: a field in config (its default set in main), and a row in options[]:
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
static int usage_error(const char *fmt, const char *arg)
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
        if (!r->set(c, a)) return usage_error(r->bad, a);
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
static bool given(const config *c, const char *name)
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
        if (!given(c, moot[i].opt) || !given(c, moot[i].with)) continue;
        if (strcmp(moot[i].opt, "progress") == 0 && strcmp(c->progress, "never") == 0) continue;
        snprintf(msg, sizeof msg, "--%s has no effect with --%s: %s", moot[i].opt, moot[i].with, moot[i].why);
        return usage_error("%s", msg);
    }
    if (c->epochs == 0 && !c->eval_only && !c->draw && (given(c, "log") || given(c, "plot")))
        return usage_error("--%s has no effect with --epochs 0: nothing is trained", given(c, "log") ? "log" : "plot");
    if (given(c, "momentum") && strcmp(c->optimizer, "sgd") != 0 && strcmp(c->optimizer, "rmsprop") != 0)
        return usage_error("--momentum has no effect with --optimizer %s: only sgd and rmsprop have one", c->optimizer);
    if ((given(c, "label-col") || c->csv_header) && !c->train_csv)
        return usage_error("%s needs --train-csv", c->csv_header ? "--csv-header" : "--label-col");
    if (c->allow_nonfinite && !c->load) return usage_error("%s", "--allow-nonfinite-load needs --load");
    return 0;
}

/* 0 on success, -1 after --help, else the exit status. */
static int parse_args(int argc, char **argv, config *c)
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
            if (optopt >= OPT_VAL0) return usage_error("option '%s' needs a value", argv[optind - 1]);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
        int rc = apply(&options[o - OPT_VAL0], optarg, c);
        if (rc) return rc;
        if (c->help) {
            print_help(stdout);
            return -1;
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (c->version) {
        printf("autodiff-train %s%s\n", AD_VERSION_STRING, HAVE_MPI ? " (with MPI)" : "");
        return -1;
    }
    if (!!c->train_csv != !!c->test_csv) return usage_error("%s", "--train-csv and --test-csv go together");
    if (!!c->train_npy != !!c->test_npy) return usage_error("%s", "--train-npy and --test-npy go together");
    if ((c->train_csv != NULL) + (c->train_npy != NULL) + (c->data != NULL) > 1)
        return usage_error("%s", "--data, --train-csv and --train-npy exclude each other");
    if (c->regression && !c->train_csv && !c->train_npy)
        return usage_error("%s", "--regression needs --train-csv or --train-npy");
    if (c->warmup && strcmp(c->schedule, "warmup_cosine") != 0)
        return usage_error("%s", "--warmup needs --schedule warmup_cosine");
    if (c->nesterov && strcmp(c->optimizer, "sgd") != 0) return usage_error("%s", "--nesterov needs --optimizer sgd");
    if (c->label_smoothing != 0 && (c->regression || (c->loss && strcmp(c->loss, "cross_entropy") != 0)))
        return usage_error("%s", "--label-smoothing needs the cross_entropy loss (class labels)");
    return check_moot(c);
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Every output path, before the data are loaded (a run must not train for hours to find it
** cannot save). 0 or the exit status. */
static int check_outputs(const config *c)
{
    int rc = 0;
    if (c->save) rc = train_check_output("save", c->save, true);
    if (!rc && c->log) rc = train_check_output("log", c->log, false);
    if (!rc && c->plot) rc = train_check_output("plot", c->plot, false);
    if (!rc && c->draw) rc = train_check_output("draw", c->draw, false);
    return rc;
}

/* dir/name.gz or dir/name, whichever exists (the .gz name if neither). */
static void idx_path(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s.gz", dir, name);
    if (is_file(out)) return;
    snprintf(out, n, "%s/%s", dir, name);
    if (!is_file(out)) snprintf(out, n, "%s/%s.gz", dir, name);
}

/* Loads the training and test sets; 0 or the exit status. */
static int load_data(const config *c, nn_dataset **train, nn_dataset **test)
{
    nn_error err;
    ad_status st;
    if (c->train_npy) {
        for (int i = 0; i < 2; i++) {
            const char *arg = i ? c->test_npy : c->train_npy, *comma = strchr(arg, ',');
            char xp[4096];
            if (!comma || (size_t)(comma - arg) >= sizeof xp || !comma[1])
                return usage_error("--train-npy/--test-npy want FEATURES.npy,TARGETS.npy, not '%s'", arg);
            memcpy(xp, arg, (size_t)(comma - arg));
            xp[comma - arg] = 0;
            if (!is_file(xp)) return usage_error("cannot open .npy file '%s'", xp);
            if (!is_file(comma + 1)) return usage_error("cannot open .npy file '%s'", comma + 1);
            st = nn_dataset_load_npy(xp, comma + 1, !c->regression, i ? test : train, &err);
            if (st != AD_OK) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                return 1;
            }
        }
        return 0;
    }
    if (c->train_csv) {
        for (int i = 0; i < 2; i++) {
            const char *p = i ? c->test_csv : c->train_csv;
            if (!is_file(p)) return usage_error("cannot open CSV file '%s'", p);
            st = c->regression ? nn_dataset_load_csv_targets(p, c->label_col, c->csv_header, i ? test : train, &err)
                               : nn_dataset_load_csv(p, c->label_col, c->csv_header, i ? test : train, &err);
            if (st != AD_OK) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                return st == AD_ERR_ARG ? 2 : 1; /* AD_ERR_ARG: --label-col beyond the file's columns */
            }
        }
        return 0;
    }
    const char *dir = c->data ? c->data : DEFAULT_DATA;
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char paths[4][4096];
    for (int i = 0; i < 4; i++) {
        idx_path(paths[i], sizeof paths[i], dir, names[i]);
        if (!is_file(paths[i])) {
            if (!c->data)
                fprintf(stderr,
                        "autodiff-train: Fashion-MNIST is not installed (no %s); install it with "
                        "'apt-get install dataset-fashion-mnist', or give --data DIR or --train-csv/--test-csv\n",
                        paths[i]);
            else
                fprintf(stderr, "autodiff-train: missing data file %s\n", paths[i]);
            return 2;
        }
    }
    for (int i = 0; i < 2; i++) {
        st = nn_dataset_load_idx(paths[2 * i], paths[2 * i + 1], i ? test : train, &err);
        if (st != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            return 1;
        }
    }
    return 0;
}

static nn_optim *make_optim(const config *c, nn_module *m, nn_error *err)
{
    nn_optim_opts o = nn_optim_defaults(c->optimizer);
    o.lr = c->lr;
    o.weight_decay = c->weight_decay;
    if (strcmp(c->optimizer, "sgd") == 0) {
        o.momentum = c->momentum;
        o.nesterov = c->nesterov;
    } else if (given(c, "momentum")) { /* rmsprop (check_moot refuses it with the others) */
        o.momentum = c->momentum;
    }
    return nn_optim_for(c->optimizer, m, &o, err);
}

/* Under mpirun, every rank must know that one failed: the rank's own status
** agreed across ranks (rc, or 1 when another rank failed). Without MPI, rc. */
static int agree(nn_dist *d, int rc, const char *what)
{
#ifdef AD_HAVE_MPI
    nn_error e = {AD_OK, ""};
    if (rc) nn_error_set(&e, AD_ERR_IO, "%s", what);
    if (d && nn_dist_check(d, rc ? AD_ERR_IO : AD_OK, &e) != AD_OK) {
        if (!rc && nn_dist_rank(d) == 0) fprintf(stderr, "autodiff-train: stopping: %s\n", e.message);
        return rc ? rc : 1;
    }
#endif
    return rc;
}

/* A failure inside training that other ranks may not share (they would wait
** for this one forever): end them all. Errors already agreed ("rank R: ...")
** reach every rank and need nothing more. */
static void end_others(nn_dist *d, const nn_error *e)
{
#ifdef AD_HAVE_MPI
    if (d && nn_dist_size(d) > 1 && strncmp(e->message, "rank ", 5) != 0) {
        fflush(NULL);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#endif
}

/* Every label (or target) of both sets against the network's outputs, before the first step: a
** label beyond them would stop training at its batch, or at the first epoch's test. 0 or the
** exit status, with a message. */
static int check_targets(const config *c, nn_module *net, const nn_dataset *train, const nn_dataset *test)
{
    nn_error err;
    int64_t outputs = c->model ? train_net_outputs(net, train->dim, &err) : c->layers[c->nlayers - 1];
    if (outputs < 0) {
        fprintf(stderr, "autodiff-train: the model does not run on the data: %s\n", err.message);
        return 1;
    }
    return train_check_sets(train, test, outputs, c->regression);
}

/* --load into net, opt (NULL: the weights alone) and rng (NULL: not restored); under mpirun
** rank 0 reads it and broadcasts. A checkpoint holding NaN or Inf is refused with nn_load's
** message, or with --allow-nonfinite-load loaded and that message printed as a warning. */
static ad_status load_checkpoint(const config *c, nn_dist *d, nn_module *net, nn_optim *opt, ad_rng *rng,
                                 nn_error *err)
{
#ifdef AD_HAVE_MPI
    ad_status st = d ? nn_dist_load(d, c->load, net, opt, rng, err) : nn_load(c->load, net, opt, rng, err);
    int rank = d ? nn_dist_rank(d) : 0;
#else
    (void)d;
    ad_status st = nn_load(c->load, net, opt, rng, err);
    int rank = 0;
#endif
    if (st != AD_ERR_NUMERIC) return st;
    char *tail = strstr(err->message, " (refused; NN_LOAD_ALLOW_NONFINITE loads it)");
    if (tail)
        snprintf(tail, sizeof err->message - (size_t)(tail - err->message), " (%s)",
                 c->allow_nonfinite ? "loaded: --allow-nonfinite-load" : "refused; --allow-nonfinite-load loads it");
    if (!c->allow_nonfinite) return st;
    if (rank == 0) fprintf(stderr, "autodiff-train: warning: %s\n", err->message);
#ifdef AD_HAVE_MPI
    if (d) return nn_dist_load_ex(d, c->load, net, opt, rng, NN_LOAD_ALLOW_NONFINITE, err);
#endif
    return nn_load_ex(c->load, net, opt, rng, NN_LOAD_ALLOW_NONFINITE, err);
}

static int run(const config *c, nn_dist *d)
{
    nn_dataset *train = NULL, *test = NULL;
    nn_module *net = NULL;
    nn_optim *opt = NULL;
    nn_sched *sched = NULL;
    nn_error err;
    int64_t held = 0;
    epoch_log curves = {0};
    int rank = 0;
#ifdef AD_HAVE_MPI
    rank = nn_dist_rank(d);
#endif
    int rc = agree(d, rank == 0 ? check_outputs(c) : 0, "an output cannot be written");
    if (rc) goto done;
    rc = agree(d, load_data(c, &train, &test), "cannot load the data");
    if (rc) goto done;
    rc = 2;
    if (test->dim != train->dim) {
        fprintf(stderr, "autodiff-train: the test set has %" PRId64 " features per sample, the training set %" PRId64
                        "\n", test->dim, train->dim);
        goto done;
    }
    if (!c->model && c->layers[0] != train->dim) {
        fprintf(stderr, "autodiff-train: the first layer has %" PRId64 " inputs, the data %" PRId64 " features\n",
                c->layers[0], train->dim);
        goto done;
    }
    rc = 1;
    ad_rng rng;
    ad_rng_seed(&rng, c->seed);
    if (c->model) {
        int64_t side = (int64_t)llround(sqrt((double)train->dim));
        if (side * side != train->dim || test->dim != train->dim) {
            fprintf(stderr, "autodiff-train: --model needs square one-channel images; the data has %" PRId64
                            " features\n", train->dim);
            rc = 2;
            goto done;
        }
        net = nn_model_from_spec(c->model, 1, side, side, &rng, &err);
        if (!net) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            rc = 2;
            goto done;
        }
    } else {
        net = nn_mlp(c->nlayers, c->layers, c->act, &rng, &err);
    }
    opt = net ? make_optim(c, net, &err) : NULL;
    if (!net || !opt) {
        fprintf(stderr, "autodiff-train: cannot build the model: %s\n", err.message);
        goto done;
    }
    if ((rc = check_targets(c, net, train, test)) != 0) goto done;
    rc = 1;
    int done_epochs = 0, planned = -1; /* the checkpoint's epochs done, and in all (-1: not said) */
    if (c->load) {
        if ((rc = agree(d, rank == 0 && !is_file(c->load) ? 2 : 0, "cannot open the checkpoint")) != 0) {
            if (rank == 0) fprintf(stderr, "autodiff-train: cannot open checkpoint '%s'\n", c->load);
            goto done;
        }
        rc = 1;
        int info[3] = {-1, -1, 0};
        if ((rc = agree(d, rank == 0 ? train_checkpoint_info(c->load, opt, info) : 0, "bad checkpoint")) != 0) goto done;
        rc = 1;
#ifdef AD_HAVE_MPI
        if (d && MPI_Bcast(info, 3, MPI_INT, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
            fprintf(stderr, "autodiff-train: rank %d: MPI_Bcast failed\n", rank);
            goto done;
        }
#endif
        done_epochs = info[0];
        planned = info[1];
        /* a checkpoint that says how far its run went also holds the generator the run goes on with;
        ** --eval-only takes the optimizer's state where it is this optimizer's (--save then keeps it) */
        ad_rng *load_rng = done_epochs >= 0 ? &rng : NULL;
        nn_optim *load_opt = !c->eval_only || info[2] ? opt : NULL;
        ad_status ls = load_checkpoint(c, d, net, load_opt, load_rng, &err);
        if (ls != AD_OK) {
            if (rank == 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
            goto done;
        }
        if (done_epochs < 0) done_epochs = 0; /* weights (and optimizer) only: a new run from them */
    }
    if (c->draw) {
        rc = rank == 0 ? draw_tape(c->draw, net, train, c->batch) : 0;
        goto done;
    }
    if (c->model) {
        printf("model: %s", c->model);
    } else {
        printf("model: %" PRId64, c->layers[0]);
        for (int i = 1; i < c->nlayers; i++) printf("-%" PRId64, c->layers[i]);
        printf(" %s", nn_act_name(c->act));
    }
    printf(", %" PRId64 " weights; %s lr %g; batch %" PRId64 "; %" PRId64 " train / %" PRId64 " test samples",
           nn_module_num_weights(net), c->optimizer, c->lr, c->batch, train->n, test->n);
    held = (int64_t)floor(c->val_split * (double)train->n);
    if (held > 0) printf(" (%" PRId64 " of the train samples held out for validation)", held);
    printf("\n");
    if (fflush(stdout) != 0) { /* before training, not after it */
        fprintf(stderr, "autodiff-train: cannot write the standard output: %s\n", strerror(errno));
        goto done;
    }
    int end_epoch = c->stop_after && c->stop_after < c->epochs ? c->stop_after : c->epochs; /* this part's last */
    if (!c->eval_only && done_epochs > 0) {
        printf("resuming after epoch %d of %d from %s", done_epochs, c->epochs, c->load);
        if (end_epoch <= done_epochs) printf(": no epoch left to train before epoch %d", end_epoch);
        else if (planned >= 0 && planned != c->epochs && strcmp(c->schedule, "none") != 0 && strcmp(c->schedule, "step") != 0)
            printf(" (its run had %d epochs in all: the %s schedule now spans %d)", planned, c->schedule, c->epochs);
        printf("\n");
    }
    if (!c->eval_only && end_epoch > done_epochs) {
        nn_fit_opts fo = nn_fit_defaults();
        int64_t rows = train->n - held, steps_per_epoch = (rows + c->batch - 1) / c->batch;
        int64_t total = steps_per_epoch * c->epochs;
        if (strcmp(c->schedule, "none") != 0) {
            nn_sched_opts so = nn_sched_defaults(c->lr, total);
            if (strcmp(c->schedule, "step") == 0) so.step_size = 5 * steps_per_epoch, so.gamma = 0.5;
            if (c->warmup) so.warmup_steps = c->warmup < total ? c->warmup : total;
            if (!(sched = nn_sched_new(c->schedule, &so, &err))) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                rc = 2;
                goto done;
            }
        }
        static const struct {
            const char *name;
            nn_loss_kind kind;
        } losses[] = {{"cross_entropy", NN_LOSS_CROSS_ENTROPY}, {"mse", NN_LOSS_MSE}, {"huber", NN_LOSS_HUBER},
                      {"l1", NN_LOSS_L1}, {"bce", NN_LOSS_BCE_WITH_LOGITS}};
        for (size_t i = 0; c->loss && i < sizeof losses / sizeof losses[0]; i++)
            if (strcmp(c->loss, losses[i].name) == 0) fo.loss = losses[i].kind;
        fo.epochs = c->epochs; /* the schedule above spans all of --epochs, and the labels count them */
        fo.stop_epoch = end_epoch;
        fo.initial_epoch = done_epochs;
        fo.rng = &rng; /* the shuffles, from the generator the checkpoint saves */
        fo.batch_size = c->batch;
        fo.seed = c->seed;
        fo.val_split = c->val_split;
        fo.label_smoothing = c->label_smoothing;
        fo.test = test;
        fo.schedule = sched;
        fo.log_path = rank == 0 ? c->log : NULL;
        fo.out = stdout;
        fo.progress = c->quiet || strcmp(c->progress, "never") == 0 ? NN_PROGRESS_LINES
                      : strcmp(c->progress, "always") == 0      ? NN_PROGRESS_BAR
                                                                : NN_PROGRESS_AUTO;
        if (rank != 0) fo.progress = NN_PROGRESS_NONE;
        if (c->plot) {
            fo.on_epoch = epoch_log_add;
            fo.ctx = &curves;
        }
#ifdef AD_HAVE_MPI
        if (d) nn_dist_attach(d, &fo);
#endif
        fo.clip_norm = c->clip_norm;
        fo.skip_nonfinite = c->skip_nonfinite;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        nn_epoch_stats last;
        if (nn_fit(net, opt, train, &fo, &last, &err) != AD_OK) {
            if (rank == 0 || strncmp(err.message, "rank ", 5) != 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
            end_others(d, &err);
            goto done;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (isnan(last.test_acc))
            printf("final: test loss %.6g, train loss %.6g, %.1f s in all\n", last.test_loss, last.train_loss, secs);
        else
            printf("final: test accuracy %.2f%%, test loss %.4f, train accuracy %.2f%%, %.1f s in all\n",
                   100.0 * last.test_acc, last.test_loss, 100.0 * last.train_acc, secs);
        if (c->plot && rank == 0 && (rc = epoch_log_plot(&curves, c->plot)) != 0) goto done;
        rc = 1;
    } else {
        double loss, acc;
        if (nn_evaluate(net, test, 256, &loss, &acc, &err) != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            goto done;
        }
        if (isnan(acc)) printf("test: loss %.6g\n", loss);
        else printf("test: loss %.4f, accuracy %.2f%%\n", loss, 100.0 * acc);
    }
    /* the checkpoint says how far the run went: a later --load goes on from there */
    char epoch_text[16], epochs_text[16];
    snprintf(epoch_text, sizeof epoch_text, "%d", c->eval_only || end_epoch < done_epochs ? done_epochs : end_epoch);
    snprintf(epochs_text, sizeof epochs_text, "%d", c->eval_only && planned >= 0 ? planned : c->epochs);
    const char *const meta[4] = {"epoch", epoch_text, "epochs", epochs_text};
    ad_status ss = c->save && rank == 0 ? nn_save_meta(c->save, net, opt, &rng, 2, meta, &err) : AD_OK;
#ifdef AD_HAVE_MPI
    if (c->save && d) ss = nn_dist_check(d, ss, &err); /* rank 0 saved: every rank learns how that went */
#endif
    if (ss != AD_OK) {
        if (rank == 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
        goto done;
    }
    if (c->save) printf("saved %s\n", c->save);
    rc = 0;
done:
    nn_sched_free(sched);
    epoch_log_free(&curves);
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return rc;
}

/* OpenBLAS starts threads of its own when it is loaded, before main, unless OPENBLAS_NUM_THREADS
** says otherwise. The library never uses them (it calls OpenBLAS on one thread, from its own pool),
** and under a memory limit such a thread retries its buffer's allocation for ever while the exit
** waits for it. So the command runs itself again with OPENBLAS_NUM_THREADS=1 when that is not set
** (should the exec fail, it carries on as it is). Setting it from .preinit_array is too early: the
** C library sets up the environment after that. */
static void blas_single_threaded(char **argv)
{
    if (getenv("OPENBLAS_NUM_THREADS") || setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

/* What was printed must have reached the standard output (a full disk, /dev/full): a
** failure to write it fails the command (status 1, with a message when rc was 0; a failure
** already reported has its own). */
static int close_stdout(int rc)
{
    bool bad = ferror(stdout) != 0;
    errno = 0;
    bad |= fclose(stdout) != 0;
    if (bad && !rc) {
        fprintf(stderr, "autodiff-train: cannot write the standard output%s%s\n", errno ? ": " : "",
                errno ? strerror(errno) : "");
        return 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    blas_single_threaded(argv);
    config c = {0};
    c.label_col = 0;
    c.layers[0] = 784;
    c.layers[1] = 256;
    c.layers[2] = 128;
    c.layers[3] = 10;
    c.nlayers = 4;
    c.act = NN_RELU;
    c.optimizer = "adam";
    c.schedule = "cosine";
    c.lr = -1;
    c.momentum = 0.9;
    c.epochs = 12;
    c.batch = 128;
    c.seed = 1;
    c.threads = 2;
    c.progress = "auto";
    int rc = parse_args(argc, argv, &c);
    if (rc) return close_stdout(rc < 0 ? 0 : rc);
    if (c.lr < 0) c.lr = strcmp(c.optimizer, "sgd") == 0 ? 0.05 : 1e-3;
    ad_set_num_threads(c.threads);
    nn_dist *d = NULL;
#ifdef AD_HAVE_MPI
    /* started by mpirun (Open MPI, or another launcher through PMI/PMIx): data-parallel */
    bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    if (launched) {
        nn_error e;
        if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
            fprintf(stderr, "autodiff-train: MPI_Init failed\n");
            return 1;
        }
        if (!(d = nn_dist_new(MPI_COMM_WORLD, &e))) {
            fprintf(stderr, "autodiff-train: %s\n", e.message);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (nn_dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout)) { /* rank 0 alone prints */
            fprintf(stderr, "autodiff-train: rank %d: cannot silence its output\n", nn_dist_rank(d));
        }
    }
    rc = run(&c, d);
    if (d) {
        nn_dist_free(d);
        MPI_Finalize();
    }
#else
    rc = run(&c, d);
#endif
    return close_stdout(rc);
}

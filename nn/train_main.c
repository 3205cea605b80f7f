/* train_main.c: autodiff-train, trains and evaluates an MLP classifier from the command line (Fashion-MNIST by default). */
#include "nn.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define MAX_LAYERS 64

static const char usage[] =
    "usage: autodiff-train [options]\n"
    "Trains a multilayer perceptron classifier and reports per-epoch loss, train and\n"
    "test accuracy and time. With no options: Fashion-MNIST from " DEFAULT_DATA ",\n"
    "784-256-128-10 with ReLU, Adam (lr 1e-3, cosine schedule), batch 128, 12 epochs.\n"
    "\n"
    "data:\n"
    "  --data DIR            IDX directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],\n"
    "                        t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]\n"
    "  --train-csv FILE      training set as CSV instead (numeric; one label column)\n"
    "  --test-csv FILE       test set as CSV\n"
    "  --label-col N         CSV label column, negative from the end (default 0)\n"
    "  --csv-header          the CSV files start with a header line\n"
    "model and training:\n"
    "  --layers A,B,...      layer sizes, input first (default 784,256,128,10; the first and last\n"
    "                        must match the data's features and classes)\n"
    "  --model SPEC          a convolutional network instead, for square one-channel images (such as\n"
    "                        28x28); comma-separated layers: conv:C:K[:S] (C channels, KxK, stride S,\n"
    "                        padding K/2, ReLU), pool:K (max), avgpool:K, bn, dropout:P, fc:N (ReLU but\n"
    "                        the last), e.g. conv:32:5,pool:2,conv:64:5,pool:2,fc:1024,fc:10\n"
    "  --activation NAME     relu, leaky_relu, gelu, tanh, sigmoid, identity (default relu)\n"
    "  --optimizer NAME      adam, adamw, sgd (default adam)\n"
    "  --lr X                learning rate (default 1e-3 for Adam, 0.05 for SGD)\n"
    "  --momentum X          SGD momentum (default 0.9)\n"
    "  --nesterov            SGD with Nesterov momentum\n"
    "  --weight-decay X      (default 0)\n"
    "  --clip-norm X         clip gradients to global norm X before each update (default 0: off)\n"
    "  --skip-nonfinite      skip a step whose loss or gradient is NaN/Inf instead of stopping\n"
    "  --schedule NAME       cosine, step, none (default cosine; step halves the lr every 5 epochs)\n"
    "  --epochs N            (default 12)\n"
    "  --batch-size N        (default 128)\n"
    "  --seed N              weights and shuffling (default 1)\n"
    "  --threads N           threads for the matrix kernels (default 2)\n"
    "checkpoints and output:\n"
    "  --save FILE           write a checkpoint (safetensors) after training\n"
    "  --load FILE           start from a checkpoint\n"
    "  --eval-only           only evaluate (usually with --load)\n"
    "  --log FILE            per-epoch CSV log\n"
    "  --quiet               no progress bar\n"
    "  -h, --help            this help\n";

typedef struct config {
    const char *data, *train_csv, *test_csv, *save, *load, *log;
    int label_col;
    bool csv_header, eval_only, quiet, nesterov;
    int64_t layers[MAX_LAYERS];
    int nlayers;
    const char *model; /* --model: a CNN spec (nn_model_from_spec) instead of --layers */
    nn_act act;
    const char *optimizer, *schedule;
    double lr, momentum, weight_decay, clip_norm;
    bool skip_nonfinite;
    int epochs, threads;
    int64_t batch;
    uint64_t seed;
} config;

/* A one-line error for a bad invocation; exit status 2. */
static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "autodiff-train: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

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

static bool parse_layers(const char *s, config *c)
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

/* 0 on success, else the exit status. */
static int parse_args(int argc, char **argv, config *c)
{
    enum { O_DATA = 256, O_TRAIN_CSV, O_TEST_CSV, O_LABEL_COL, O_CSV_HEADER, O_LAYERS, O_ACT, O_OPT, O_LR,
           O_MOMENTUM, O_NESTEROV, O_WD, O_SCHED, O_EPOCHS, O_BATCH, O_SEED, O_THREADS, O_SAVE, O_LOAD,
           O_EVAL_ONLY, O_LOG, O_QUIET, O_MODEL, O_CLIP, O_SKIP };
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA}, {"train-csv", required_argument, 0, O_TRAIN_CSV},
        {"test-csv", required_argument, 0, O_TEST_CSV}, {"label-col", required_argument, 0, O_LABEL_COL},
        {"csv-header", no_argument, 0, O_CSV_HEADER}, {"layers", required_argument, 0, O_LAYERS},
        {"activation", required_argument, 0, O_ACT}, {"optimizer", required_argument, 0, O_OPT},
        {"lr", required_argument, 0, O_LR}, {"momentum", required_argument, 0, O_MOMENTUM},
        {"nesterov", no_argument, 0, O_NESTEROV}, {"weight-decay", required_argument, 0, O_WD},
        {"schedule", required_argument, 0, O_SCHED}, {"epochs", required_argument, 0, O_EPOCHS},
        {"batch-size", required_argument, 0, O_BATCH}, {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS}, {"save", required_argument, 0, O_SAVE},
        {"load", required_argument, 0, O_LOAD}, {"eval-only", no_argument, 0, O_EVAL_ONLY},
        {"log", required_argument, 0, O_LOG}, {"quiet", no_argument, 0, O_QUIET},
        {"model", required_argument, 0, O_MODEL}, {"clip-norm", required_argument, 0, O_CLIP},
        {"skip-nonfinite", no_argument, 0, O_SKIP}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int64_t v;
    opterr = 0;
    optind = 1;
    for (;;) {
        int longidx = 0, o = getopt_long(argc, argv, "h", opts, &longidx);
        if (o == -1) break;
        const char *a = optarg;
        switch (o) {
        case 'h': fputs(usage, stdout); return -1;
        case O_DATA: c->data = a; break;
        case O_TRAIN_CSV: c->train_csv = a; break;
        case O_TEST_CSV: c->test_csv = a; break;
        case O_LABEL_COL:
            if (!parse_i64(a, -100000, 100000, &v)) return usage_error("bad --label-col '%s'", a);
            c->label_col = (int)v;
            break;
        case O_CSV_HEADER: c->csv_header = true; break;
        case O_MODEL: c->model = a; break;
        case O_LAYERS:
            if (!parse_layers(a, c)) return usage_error("bad --layers '%s' (want sizes like 784,256,10)", a);
            break;
        case O_ACT:
            if (!nn_act_from_name(a, &c->act) || c->act == NN_SOFTMAX)
                return usage_error("unknown --activation '%s'", a);
            break;
        case O_OPT:
            if (strcmp(a, "adam") && strcmp(a, "adamw") && strcmp(a, "sgd"))
                return usage_error("unknown --optimizer '%s' (adam, adamw, sgd)", a);
            c->optimizer = a;
            break;
        case O_LR:
            if (!parse_f64(a, 0, 1e3, &c->lr)) return usage_error("bad --lr '%s'", a);
            break;
        case O_MOMENTUM:
            if (!parse_f64(a, 0, 1, &c->momentum)) return usage_error("bad --momentum '%s'", a);
            break;
        case O_NESTEROV: c->nesterov = true; break;
        case O_CLIP:
            if (!parse_f64(a, 0, 1e30, &c->clip_norm)) return usage_error("bad --clip-norm '%s'", a);
            break;
        case O_SKIP:
            c->skip_nonfinite = true;
            break;
        case O_WD:
            if (!parse_f64(a, 0, 1e3, &c->weight_decay)) return usage_error("bad --weight-decay '%s'", a);
            break;
        case O_SCHED:
            if (strcmp(a, "cosine") && strcmp(a, "step") && strcmp(a, "none"))
                return usage_error("unknown --schedule '%s' (cosine, step, none)", a);
            c->schedule = a;
            break;
        case O_EPOCHS:
            if (!parse_i64(a, 0, 1000000, &v)) return usage_error("bad --epochs '%s'", a);
            c->epochs = (int)v;
            break;
        case O_BATCH:
            if (!parse_i64(a, 1, 1 << 24, &c->batch)) return usage_error("bad --batch-size '%s'", a);
            break;
        case O_SEED:
            if (!parse_i64(a, 0, INT64_MAX, &v)) return usage_error("bad --seed '%s'", a);
            c->seed = (uint64_t)v;
            break;
        case O_THREADS:
            if (!parse_i64(a, 1, 1024, &v)) return usage_error("bad --threads '%s'", a);
            c->threads = (int)v;
            break;
        case O_SAVE: c->save = a; break;
        case O_LOAD: c->load = a; break;
        case O_EVAL_ONLY: c->eval_only = true; break;
        case O_LOG: c->log = a; break;
        case O_QUIET: c->quiet = true; break;
        default:
            if (optopt >= O_DATA) return usage_error("option '%s' needs a value", argv[optind - 1]);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (!!c->train_csv != !!c->test_csv) return usage_error("%s", "--train-csv and --test-csv go together");
    if (c->train_csv && c->data) return usage_error("%s", "--data and --train-csv exclude each other");
    if (c->nesterov && strcmp(c->optimizer, "sgd") != 0) return usage_error("%s", "--nesterov needs --optimizer sgd");
    return 0;
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
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
    char err[512];
    ad_status st;
    if (c->train_csv) {
        for (int i = 0; i < 2; i++) {
            const char *p = i ? c->test_csv : c->train_csv;
            if (!is_file(p)) return usage_error("cannot open CSV file '%s'", p);
            st = nn_dataset_load_csv(p, c->label_col, c->csv_header, i ? test : train, err, sizeof err);
            if (st != AD_OK) {
                fprintf(stderr, "autodiff-train: %s\n", err);
                return 1;
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
        st = nn_dataset_load_idx(paths[2 * i], paths[2 * i + 1], i ? test : train, err, sizeof err);
        if (st != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err);
            return 1;
        }
    }
    return 0;
}

static nn_optim *make_optim(const config *c, nn_module *m)
{
    if (strcmp(c->optimizer, "sgd") == 0) return nn_sgd(m, c->lr, c->momentum, c->weight_decay, c->nesterov);
    if (strcmp(c->optimizer, "adamw") == 0) return nn_adamw(m, c->lr, 0.9, 0.999, 1e-8, c->weight_decay);
    return nn_adam(m, c->lr, 0.9, 0.999, 1e-8, c->weight_decay);
}

static int run(const config *c)
{
    nn_dataset *train = NULL, *test = NULL;
    nn_module *net = NULL;
    nn_optim *opt = NULL;
    char err[512];
    int rc = load_data(c, &train, &test);
    if (rc) goto done;
    rc = 1;
    if (!c->model && (c->layers[0] != train->dim || test->dim != train->dim)) {
        fprintf(stderr, "autodiff-train: the first layer has %" PRId64 " inputs, the data %" PRId64 " features\n",
                c->layers[0], train->dim);
        rc = 2;
        goto done;
    }
    int64_t classes = train->nclasses > test->nclasses ? train->nclasses : test->nclasses;
    if (!c->model && c->layers[c->nlayers - 1] < classes) {
        fprintf(stderr, "autodiff-train: the last layer has %" PRId64 " outputs, the data %" PRId64 " classes\n",
                c->layers[c->nlayers - 1], classes);
        rc = 2;
        goto done;
    }
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
        net = nn_model_from_spec(c->model, 1, side, side, &rng, err, sizeof err);
        if (!net) {
            fprintf(stderr, "autodiff-train: %s\n", err);
            rc = 2;
            goto done;
        }
    } else {
        net = nn_mlp(c->nlayers, c->layers, c->act, &rng);
    }
    opt = net ? make_optim(c, net) : NULL;
    if (!net || !opt) {
        fprintf(stderr, "autodiff-train: cannot build the model (out of memory)\n");
        goto done;
    }
    if (c->load) {
        if (!is_file(c->load)) {
            fprintf(stderr, "autodiff-train: cannot open checkpoint '%s'\n", c->load);
            rc = 2;
            goto done;
        }
        if (nn_load(c->load, net, c->eval_only ? NULL : opt, NULL, err, sizeof err) != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err);
            goto done;
        }
    }
    if (c->model) {
        printf("model: %s", c->model);
    } else {
        printf("model: %" PRId64, c->layers[0]);
        for (int i = 1; i < c->nlayers; i++) printf("-%" PRId64, c->layers[i]);
        printf(" %s", nn_act_name(c->act));
    }
    printf(", %" PRId64 " weights; %s lr %g; batch %" PRId64 "; %" PRId64 " train / %" PRId64 " test samples\n",
           nn_module_num_weights(net), c->optimizer, c->lr, c->batch, train->n, test->n);
    fflush(stdout);
    if (!c->eval_only && c->epochs > 0) {
        nn_fit_opts fo = nn_fit_defaults();
        nn_schedule sched = {NN_SCHED_CONSTANT, c->lr, 0, 1.0, 0, 0.0};
        if (strcmp(c->schedule, "cosine") == 0) sched = nn_schedule_cosine(c->lr, c->epochs, 0.0);
        else if (strcmp(c->schedule, "step") == 0) sched = nn_schedule_step(c->lr, 5, 0.5);
        fo.epochs = c->epochs;
        fo.batch_size = c->batch;
        fo.seed = c->seed;
        fo.val = test;
        fo.schedule = &sched;
        fo.log_path = c->log;
        fo.out = stdout;
        fo.progress = c->quiet ? NN_PROGRESS_LINES : NN_PROGRESS_AUTO;
        fo.clip_norm = c->clip_norm;
        fo.skip_nonfinite = c->skip_nonfinite;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        nn_epoch_stats last;
        if (nn_fit(net, opt, train, &fo, &last, err, sizeof err) != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err);
            goto done;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("final: test accuracy %.2f%%, test loss %.4f, train accuracy %.2f%%, %.1f s in all\n",
               100.0 * last.val_acc, last.val_loss, 100.0 * last.train_acc, secs);
    } else {
        double loss, acc;
        if (nn_evaluate(net, test, 256, &loss, &acc, err, sizeof err) != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err);
            goto done;
        }
        printf("test: loss %.4f, accuracy %.2f%%\n", loss, 100.0 * acc);
    }
    if (c->save && nn_save(c->save, net, opt, &rng, err, sizeof err) != AD_OK) {
        fprintf(stderr, "autodiff-train: %s\n", err);
        goto done;
    }
    if (c->save) printf("saved %s\n", c->save);
    rc = 0;
done:
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return rc;
}

int main(int argc, char **argv)
{
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
    int rc = parse_args(argc, argv, &c);
    if (rc) return rc < 0 ? 0 : rc;
    if (c.lr < 0) c.lr = strcmp(c.optimizer, "sgd") == 0 ? 0.05 : 1e-3;
    ad_set_num_threads(c.threads);
    return run(&c);
}

/* train_args.h: autodiff-train's command line: the run's settings (config) and their parser (train_args.c). */
#ifndef AUTODIFF_TRAIN_ARGS_H
#define AUTODIFF_TRAIN_ARGS_H

#include "nn.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define MAX_LAYERS 64

/* What autodiff-train is to do: every option's value (the defaults are set in main). */
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
    bool given[96];       /* given[i]: options[i] (train_args.c) was on the command line */
} config;

/* Parses the command line into c, which holds the defaults: 0 on success, -1 after --help or
** --version (printed on stdout), else the exit status, after a one-line error on stderr. */
int train_parse_args(int argc, char **argv, config *c);
/* Whether the option called name (without "--") was on the command line. */
bool train_given(const config *c, const char *name);
/* A one-line error for a bad invocation: "autodiff-train: ", fmt with arg, " (see --help)" on
** stderr; returns 2, the exit status. */
int train_usage_error(const char *fmt, const char *arg);

#endif

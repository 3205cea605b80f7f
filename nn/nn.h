/* nn.h: public interface of libautodiff-nn, neural-network modules, losses, optimizers, training and checkpoints. */
#ifndef AUTODIFF_NN_H
#define AUTODIFF_NN_H

/*
** libautodiff-nn builds networks on the libautodiff engine. A module holds its
** parameters (value and gradient tensors) outside any tape; nn_forward records
** the module's computation on a tape, joining each parameter with ad_param(), so
** one ad_backward() adds every parameter's gradient into its grad tensor.
**
** A complete training step, by hand:
**
**     nn_error e;
**     ad_rng rng; ad_rng_seed(&rng, 42);
**     nn_module *net = nn_mlp(3, (const int64_t[]){784, 128, 10}, NN_RELU, &rng, &e);
**     nn_optim *opt = net ? nn_optim_for("adam", net, NULL, &e) : NULL;  // defaults: lr 1e-3
**     if (!opt) ... e.message says why ...
**     ad_tape *t = ad_tape_new();
**     for (each batch x [b, 784] F32, labels [b]) {
**         ad_tape_reset(t);                  // keeps the arena: no heap traffic
**         ad_var loss = nn_loss_cross_entropy(nn_forward(net, t, ad_const(t, x)), labels);
**         // zero the grads, backward, (clip,) update; a NaN loss is an error naming the step
**         if (nn_train_step(opt, loss, NULL, NULL, &e) != AD_OK) ... e.message ...
**     }
**     nn_optim_free(opt); nn_module_free(net); ad_tape_free(t);
**
** nn_fit() runs that loop over a data set with batching, shuffling, progress
** output, validation and a CSV log; nn_save()/nn_load() write and read
** checkpoints (safetensors files) holding parameters, optimizer state and the
** random generator's state. Your own module kinds: nn_module.h.
**
** Errors: one record, nn_error (nn_error.h). Every function that can fail
** outside a tape, constructors included, takes `nn_error *err` last (may be
** NULL) and on failure fills it with the status and a message naming the
** function and the cause ("nn_linear: sizes must be >= 1"). Forward passes and
** losses record their errors on the tape like every op. Nothing aborts or exits.
** Ownership: constructors that take modules (nn_sequential, nn_residual,
** nn_parallel) own them from the call on, also when they fail.
*/

#include "ad.h"
#include "nn_error.h"
#include "nn_module.h"
#include "nn_io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- activations: one table (name, op, init gain) in dense.c ---- */

typedef enum nn_act {
    NN_IDENTITY = 0,
    NN_SIGMOID,    /* logistic: 1 / (1 + e^-x) */
    NN_TANH,
    NN_RELU,
    NN_LEAKY_RELU, /* slope 0.01 unless given with nn_activation_ex */
    NN_GELU,       /* exact: x Phi(x) */
    NN_SOFTMAX,    /* over the last axis */
    NN_ACT_COUNT
} nn_act;

/* "identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu", "softmax"; "?" otherwise. */
NN_API const char *nn_act_name(nn_act a);
/* Parses a name above (also "logistic", "linear", "none", "leaky-relu"); false if unknown. */
NN_API bool nn_act_from_name(const char *name, nn_act *out);
/* The recommended init gain for an activation (PyTorch's calculate_gain): 1 for
** identity, sigmoid and softmax, 5/3 for tanh, sqrt 2 for ReLU and GELU,
** sqrt(2 / (1 + 0.01^2)) for leaky ReLU. */
NN_API double nn_init_gain(nn_act a);

/* An activation as a module (no parameters); kind = its name. NULL on an unknown nn_act. */
NN_API nn_module *nn_activation(nn_act a, nn_error *err);
/* The same with its parameter: the negative slope of NN_LEAKY_RELU (ignored by the others). */
NN_API nn_module *nn_activation_ex(nn_act a, double param, nn_error *err);

/* ---- initializers: fill w in place from rng ---- */

typedef enum nn_init {
    NN_INIT_XAVIER_UNIFORM = 0, /* U(-a, a), a = gain sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010) */
    NN_INIT_XAVIER_NORMAL,      /* N(0, s^2), s = gain sqrt(2 / (fan_in + fan_out)) */
    NN_INIT_HE_UNIFORM,         /* U(-a, a), a = gain sqrt(3 / fan_in), gain sqrt 2 for ReLU (He et al. 2015) */
    NN_INIT_HE_NORMAL,          /* N(0, s^2), s = gain / sqrt(fan_in) */
    NN_INIT_ZEROS
} nn_init;

/* fan_in and fan_out of a weight shaped [out, in, k...] (PyTorch's rule: the
** receptive field k... multiplies both); a 1-D tensor has fan_in = fan_out = size. */
NN_API ad_status nn_init_fans(const ad_tensor *w, int64_t *fan_in, int64_t *fan_out, nn_error *err);
/* Fills w by initializer kind with the given gain (0: the usual one: 1 for
** Xavier, sqrt 2 for He). AD_ERR_ARG on NULL, a NULL rng, or an empty fan. */
NN_API ad_status nn_init_tensor(ad_tensor *w, nn_init kind, double gain, ad_rng *rng, nn_error *err);

/* ---- layers and containers ---- */

/* y = x W^T + b with W [out, in] and b [out] (PyTorch's layout), F32; W
** He-uniform, b zero. x is [..., in]. NULL on a size < 1 or out of memory. */
NN_API nn_module *nn_linear(int64_t in, int64_t out, ad_rng *rng, nn_error *err);
/* nn_linear with everything chosen: bias or not, the weight initializer and its
** gain (0 means the initializer's usual one), dtype F32 or F64. */
NN_API nn_module *nn_linear_ex(int64_t in, int64_t out, bool bias, nn_init init, double gain, ad_dtype dtype,
                               ad_rng *rng, nn_error *err);

/* Runs mods[0] on the inputs, then mods[1] on its output, and so on; children
** "0", "1", ..., so parameters are "0.weight", .... Takes ownership of every
** module, also on failure: when a mods[i] is NULL (a failed constructor) or
** memory runs out, it frees the others and returns NULL, so constructors nest
** without leaks. */
NN_API nn_module *nn_sequential(int n, nn_module *const *mods, nn_error *err);
/* y = in[0] + inner(in...): a skip connection around inner (child "inner"). Takes inner. */
NN_API nn_module *nn_residual(nn_module *inner, nn_error *err);
/* How nn_parallel joins its branches' outputs. */
typedef enum nn_combine {
    NN_COMBINE_CONCAT = 0, /* along the last axis */
    NN_COMBINE_SUM         /* elementwise (broadcasting) */
} nn_combine;
/* Every mods[i] on the same inputs, outputs joined by how; children "0", "1", ....
** Takes ownership as nn_sequential does. */
NN_API nn_module *nn_parallel(int n, nn_module *const *mods, nn_combine how, nn_error *err);

/* A multilayer perceptron with layer sizes sizes[0..n): Linear, act, Linear,
** act, ..., Linear (no activation after the last). Weights initialized for the
** activation (its table row: Xavier-uniform for sigmoid, tanh, identity and
** softmax, He-uniform for the ReLU family and GELU, each with its gain); biases
** zero. Parameters "0.weight", "0.bias", "2.weight"... NULL for n < 2, a size
** < 1, or out of memory. */
NN_API nn_module *nn_mlp(int n, const int64_t *sizes, nn_act hidden, ad_rng *rng, nn_error *err);

/* ---- losses: scalar vars, means over the batch (first dimension) ---- */

/* E = 1/2 sum (t - y)^2 per sample, averaged over the batch: the textbook
** delta-rule loss, whose gradient is dE/dy = (y - t) / batch. y and t of one shape. */
NN_API ad_var nn_loss_squared_error(ad_var y, ad_var t);
/* mean over every element of (y - t)^2. */
NN_API ad_var nn_loss_mse(ad_var y, ad_var t);
/* Binary cross-entropy of logits z against targets t in [0, 1], mean over
** every element: softplus(z) - t z, finite for any finite z (e.g. +-1000). */
NN_API ad_var nn_loss_bce_with_logits(ad_var z, ad_var t);
/* Cross-entropy of logits [b, c] against class labels[b] in [0, c), mean over
** the batch: logsumexp(z_i) - z_i[label_i], through log-softmax, finite for
** logits of any size (e.g. +-1e4). A label out of range is an AD_ERR_INDEX on the tape. */
NN_API ad_var nn_loss_cross_entropy(ad_var logits, const int64_t *labels);

/* ---- optimizers over any list of parameters ---- */

typedef struct nn_optim nn_optim;

/* Hyperparameters; nn_optim_defaults(kind) fills every field. */
typedef struct nn_optim_opts {
    double lr;           /* 1e-2 (sgd, rmsprop), 1e-3 (adam, adamw), 1 (lbfgs) */
    double weight_decay; /* L2 added to the gradient (sgd, adam, rmsprop); decoupled for adamw
                         ** (p *= 1 - lr wd, default 1e-2); lbfgs: none (add it to the loss) */
    double momentum;     /* sgd, rmsprop: 0 */
    bool nesterov;       /* sgd: false */
    double beta1, beta2; /* adam, adamw: 0.9, 0.999 */
    double eps;          /* adam, adamw, rmsprop: 1e-8 */
    double alpha;        /* rmsprop's smoothing: 0.99 */
    bool centered;       /* rmsprop: divide by the centered second moment; false */
    int history;         /* lbfgs: (s, y) pairs kept, 10 */
    int max_iter;        /* lbfgs: iterations per nn_optim_minimize, 20 */
    double tolerance_grad;   /* lbfgs: stop when max |g| <= this, 1e-7 */
    double tolerance_change; /* lbfgs: stop when the loss or a step changes less, 1e-9 */
    bool line_search;    /* lbfgs: strong Wolfe line search (true), else a fixed step lr */
} nn_optim_opts;

/* The defaults above for kind ("sgd", "adam", "adamw", "rmsprop", "lbfgs"). */
NN_API nn_optim_opts nn_optim_defaults(const char *kind);

/*
** An optimizer of kind over params[0..n) (entries of modules' lists, or your
** own nn_param structs; they must outlive the optimizer and keep their place),
** with opts (NULL: the defaults). The kinds, PyTorch's formulas:
**   "sgd":     g = grad + wd p; with momentum mu: buf = g at the first step,
**              mu buf + g after; g = g + mu buf (Nesterov) or buf; p -= lr g
**   "adam":    (Kingma & Ba 2015) m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
**              p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps), g = grad + wd p,
**              t the parameter's own count of updates (PyTorch's per-parameter
**              "step"): one unfrozen or added later starts at t = 1
**   "adamw":   (Loshchilov & Hutter 2019) Adam with decoupled decay p *= 1 - lr wd first
**   "rmsprop": v = a v + (1-a) g^2 (centered: minus the squared mean of g);
**              p -= lr g / (sqrt(v) + eps), or through a momentum buffer
**   "lbfgs":   full-batch L-BFGS with a strong-Wolfe line search; it needs the
**              loss at trial points, so it steps with nn_optim_minimize only.
** A frozen parameter (requires_grad false) is skipped at each step. The state
** (momentum, moments) starts at zero. Errors: AD_ERR_ARG (unknown kind, bad
** hyperparameters, a buffer or a parameter given twice), AD_ERR_DTYPE, AD_ERR_NOMEM.
*/
NN_API nn_optim *nn_optim_new(const char *kind, int n, nn_param *const *params, const nn_optim_opts *opts,
                              nn_error *err);
/* nn_optim_new over every parameter of m (buffers excepted). */
NN_API nn_optim *nn_optim_for(const char *kind, nn_module *m, const nn_optim_opts *opts, nn_error *err);
/* Adds a parameter group with its own learning rate and weight decay (the other
** hyperparameters are the optimizer's). nn_optim_set_lr scales every group's lr
** by the same factor, so a schedule keeps their ratios. Not for lbfgs. */
NN_API ad_status nn_optim_add_group(nn_optim *o, int n, nn_param *const *params, double lr, double weight_decay,
                                    nn_error *err);
/* Shorthands for nn_optim_for("sgd" | "adam" | "adamw", m, ...). */
NN_API nn_optim *nn_sgd(nn_module *m, double lr, double momentum, double weight_decay, bool nesterov, nn_error *err);
NN_API nn_optim *nn_adam(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay,
                         nn_error *err);
NN_API nn_optim *nn_adamw(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay,
                          nn_error *err);

/* Applies one update from the parameters' grad tensors. AD_ERR_NUMERIC (and
** nothing updated; the message names the parameter) when a gradient holds a
** NaN or Inf; AD_ERR_ARG for lbfgs (use nn_optim_minimize). */
NN_API ad_status nn_optim_step(nn_optim *o, nn_error *err);

/* Computes the loss at the current parameters into *loss and backpropagates it
** into their grad tensors (which the optimizer zeroes before each call). */
typedef ad_status (*nn_closure)(void *ctx, double *loss, nn_error *err);
/* One step that may evaluate the loss several times: for lbfgs up to
** opts.max_iter iterations with line searches; for the others one evaluation
** and one nn_optim_step. *loss (may be NULL) is the last loss computed. */
NN_API ad_status nn_optim_minimize(nn_optim *o, nn_closure fn, void *ctx, double *loss, nn_error *err);

/* The first group's learning rate, and setting it (every group scaled alike). */
NN_API double nn_optim_lr(const nn_optim *o);
NN_API void nn_optim_set_lr(nn_optim *o, double lr);
/* A group's current lr (NaN when out of range) and the number of groups. */
NN_API double nn_optim_group_lr(const nn_optim *o, int group);
NN_API int nn_optim_num_groups(const nn_optim *o);
/* Steps taken so far (lbfgs: iterations), restored by nn_load. */
NN_API int64_t nn_optim_steps(const nn_optim *o);
/* The kind: "sgd", "adam", "adamw", "rmsprop" or "lbfgs"; "none" for NULL. */
NN_API const char *nn_optim_name(const nn_optim *o);
/* The parameters o updates (an array owned by o), and their count. */
NN_API int nn_optim_params(const nn_optim *o, nn_param *const **out);
NN_API void nn_optim_free(nn_optim *o);

/* Gradient clipping by global norm (as torch.nn.utils.clip_grad_norm_): the
** norm is sqrt of the sum of squares of every gradient of m, written to
** *total_norm_out (may be NULL); when it exceeds max_norm every gradient is
** scaled by max_norm / (norm + 1e-6). Errors: AD_ERR_ARG (NULL m, max_norm not
** > 0), AD_ERR_NUMERIC when a gradient holds NaN or Inf (the norm is then NaN or
** Inf and nothing is scaled). */
NN_API ad_status nn_clip_grad_norm(nn_module *m, double max_norm, double *total_norm_out, nn_error *err);

/* ---- one training step, shared by nn_fit and hand-written loops ---- */

/* Data-parallel training: how gradients and sums are combined across
** processes (nn_dist.h fills one in over MPI). Every process calls these
** collectively, in the same order. */
typedef struct nn_data_parallel {
    int rank, size; /* nn_fit: this process takes rows [r rank/size, r (rank+1)/size) of each batch of r rows */
    /* Replaces each trainable params[i]->grad by the sum over processes of
    ** weight * grad. local_ok false: this process's loss was not finite (why
    ** says so; its gradients are unused); then, or when any gradient is not
    ** finite, every process returns AD_ERR_NUMERIC with a message naming the process. */
    ad_status (*reduce_grads)(void *ctx, int n, nn_param *const *params, double weight, bool local_ok,
                              const char *why, nn_error *err);
    /* Sums v[0..n) over processes, in place. */
    ad_status (*reduce_sums)(void *ctx, int n, double *v, nn_error *err);
    void *ctx;
} nn_data_parallel;

typedef struct nn_step_opts {
    double clip_norm;    /* > 0: clip the optimizer's gradients to this global norm before the update */
    int accumulate;      /* update once every `accumulate` calls, on the mean of their gradients (0 or 1: every call) */
    bool skip_nonfinite; /* a NaN/Inf loss or gradient skips the step (result.skipped) instead of AD_ERR_NUMERIC */
    const nn_data_parallel *parallel; /* NULL, or gradients reduced across processes before clipping and the
                                 ** update (accumulate must then be 0 or 1) */
    double weight;       /* with parallel: this process's weight in the sum (its share of the global batch) */
} nn_step_opts;

typedef struct nn_step_result {
    double loss;     /* the loss's value */
    bool updated;    /* the parameters changed (the last call of an accumulation cycle) */
    bool skipped;    /* non-finite, skipped (with opts.skip_nonfinite) */
    double grad_norm; /* the global norm before clipping, when clip_norm > 0; else NaN */
} nn_step_result;

/*
** One step of gradient descent from loss, a scalar recorded on a tape from
** opt's parameters: at the start of a cycle, zero their gradients; backward
** (adding into them); at the end of a cycle (every opts->accumulate calls)
** average them, clip them, and update. opts and res may be NULL. Errors:
** AD_ERR_NUMERIC when the loss or a gradient is NaN or Inf (nothing updated;
** the next call starts a new cycle), the tape's error when loss is invalid,
** AD_ERR_ARG for an lbfgs optimizer.
*/
NN_API ad_status nn_train_step(nn_optim *opt, ad_var loss, const nn_step_opts *opts, nn_step_result *res,
                               nn_error *err);

/* ---- learning-rate schedules, stepped per optimizer step ---- */

typedef struct nn_sched nn_sched;

/* The schedules' parameters; nn_sched_defaults fills every field. */
typedef struct nn_sched_opts {
    double lr;               /* the base (peak) learning rate */
    int64_t total_steps;     /* cosine, warmup_cosine, onecycle: the schedule's length in steps */
    int64_t warmup_steps;    /* warmup_cosine: linear from lr/warmup_steps up to lr (default total/20) */
    double min_lr;           /* cosine, warmup_cosine: the lr at the end (0) */
    int64_t step_size;       /* step: lr gamma^floor(step / step_size) (default total/3) */
    double gamma;            /* step: 0.1 */
    double pct_start;        /* onecycle: the rising fraction of the steps (0.3) */
    double div_factor;       /* onecycle: start at lr / div_factor (25) */
    double final_div_factor; /* onecycle: end at lr / (div_factor final_div_factor) (1e4) */
} nn_sched_opts;

NN_API nn_sched_opts nn_sched_defaults(double lr, int64_t total_steps);
/*
** A schedule of kind (at step s = 0, 1, ..., T = total_steps):
**   "constant"       lr
**   "step"           lr gamma^floor(s / step_size)
**   "cosine"         min + (lr - min) (1 + cos(pi s / T)) / 2, min after T
**   "warmup_cosine"  lr (s + 1) / W for s < W, then cosine from lr to min over T - W
**   "onecycle"       (Smith & Topin 2019, as torch's OneCycleLR) cosine from lr/div up to lr
**                    over pct_start T steps, then down to lr/(div final_div)
** NULL with AD_ERR_ARG on an unknown kind or bad parameters, AD_ERR_NOMEM.
*/
NN_API nn_sched *nn_sched_new(const char *kind, const nn_sched_opts *opts, nn_error *err);
/* The learning rate at step (0-based; nn_fit uses the optimizer's step count). */
NN_API double nn_sched_lr(const nn_sched *s, int64_t step);
NN_API const char *nn_sched_name(const nn_sched *s);
NN_API void nn_sched_free(nn_sched *s);

/* ---- training ---- */

typedef enum nn_progress {
    NN_PROGRESS_AUTO = 0, /* a bar when out is a terminal, plain lines otherwise */
    NN_PROGRESS_BAR,
    NN_PROGRESS_LINES,    /* one line per epoch */
    NN_PROGRESS_NONE
} nn_progress;

/* What one epoch gave (NaN where a figure does not apply). */
typedef struct nn_epoch_stats {
    int epoch;         /* 1-based */
    int64_t steps;     /* optimizer steps so far, all epochs */
    double lr;
    double train_loss; /* mean over the epoch's batches, weighted by their sizes */
    double train_acc;  /* fraction right as they were trained on: classes (labels) or, with
                       ** binary cross-entropy, target elements (logit > 0 against target > 0.5) */
    double val_loss, val_acc;   /* the validation set (opts.val or opts.val_split) */
    double test_loss, test_acc; /* the test set (opts.test), reported only */
    double seconds;    /* wall time of the epoch (training and evaluation) */
    int64_t skipped;   /* steps of this epoch skipped as non-finite (opts.skip_nonfinite) */
} nn_epoch_stats;

typedef void (*nn_epoch_fn)(const nn_epoch_stats *s, void *ctx);

/* The loss nn_fit minimizes (means over the batch). */
typedef enum nn_loss_kind {
    NN_LOSS_AUTO = 0,         /* cross-entropy for a set with labels, MSE for one with targets */
    NN_LOSS_CROSS_ENTROPY,    /* labels */
    NN_LOSS_MSE,              /* targets, as every loss below */
    NN_LOSS_HUBER,            /* nn_loss_huber with opts.huber_delta */
    NN_LOSS_L1,
    NN_LOSS_BCE_WITH_LOGITS   /* binary and multi-label: targets in [0, 1], one per output */
} nn_loss_kind;

/* A loss of your own: a scalar recorded from the model's output and the batch's
** target (a var shaped [rows, target_shape...], or invalid for a set with
** labels) or labels (rows of them, or NULL for a set with targets). */
typedef ad_var (*nn_loss_fn)(ad_var output, ad_var target, const int64_t *labels, void *ctx);

typedef struct nn_fit_opts {
    int epochs;                  /* default 10 */
    int64_t batch_size;          /* default 64 */
    uint64_t seed;               /* shuffling and the validation split; default 1 */
    bool shuffle;                /* default true */
    const nn_dataset *val;       /* optional validation set, evaluated after each epoch */
    double val_split;            /* in [0, 1): without val, hold out this fraction of train (drawn with
                                 ** seed) as the validation set; default 0 */
    const nn_dataset *test;      /* optional test set, evaluated after each epoch for the record */
    nn_sched *schedule;          /* optional; sets the lr before every step from the step count */
    nn_loss_kind loss;           /* default NN_LOSS_AUTO */
    double huber_delta;          /* NN_LOSS_HUBER; default 1 */
    double label_smoothing;      /* cross-entropy (NN_LOSS_CROSS_ENTROPY, or AUTO with labels) with label
                                 ** smoothing in [0, 1) (nn_loss_cross_entropy_smooth), for training and
                                 ** the validation and test losses alike; another loss is AD_ERR_ARG; default 0 */
    nn_loss_fn loss_fn;          /* optional: overrides loss */
    void *loss_ctx;
    nn_module *loss_module;      /* optional: a module of (output, target) giving the loss; overrides loss */
    const char *log_path;        /* optional CSV: epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,
                                 ** test_loss,test_acc,seconds */
    nn_progress progress;        /* default NN_PROGRESS_AUTO */
    FILE *out;                   /* progress output; NULL: stderr */
    nn_epoch_fn on_epoch;        /* optional, called after each epoch */
    void *ctx;
    bool skip_nonfinite;         /* skip a step whose loss or gradient is NaN or Inf (counted in
                                 ** nn_epoch_stats.skipped) instead of stopping; an epoch of nothing
                                 ** but skipped steps still stops (AD_ERR_NUMERIC); default false */
    double clip_norm;            /* > 0: clip the gradients to this global norm before each update
                                 ** (nn_clip_grad_norm); default 0, off */
    int accumulate;              /* update once every `accumulate` batches (nn_train_step); default 1 */
    const nn_data_parallel *parallel; /* data-parallel training (nn_dist_attach); default NULL */
    ad_rng *rng;                 /* optional: each epoch's shuffle is drawn from this generator (one
                                 ** ad_rng_u64 per epoch: nn_batcher_reseed) instead of from seed, and
                                 ** it advances; saved with the model (nn_save) and restored (nn_load),
                                 ** it lets a later nn_fit go on in the same order; default NULL */
    int initial_epoch;           /* epochs already done (a resumed run, as Keras's initial_epoch):
                                 ** trains epochs initial_epoch + 1 .. epochs, numbered so, and
                                 ** appends to log_path; in [0, epochs]; default 0 */
    int stop_epoch;              /* > 0: stop after this epoch, a part of a longer run (epochs, which the
                                 ** schedule spans and the epoch labels count, stays the whole run's);
                                 ** in [initial_epoch, epochs]; default 0: run to epochs */
} nn_fit_opts;

/* The defaults listed above. */
NN_API nn_fit_opts nn_fit_defaults(void);

/* Trains m with opt on train for opts->epochs epochs (those after
** opts->initial_epoch): each step records m on a
** batch (inputs: the pixels scaled to [0, 1] or the features), the loss
** (opts->loss, loss_fn or loss_module) against the batch's labels or targets,
** and nn_train_step. One tape is reused for every step. last (may be NULL)
** receives the final epoch's figures. Errors: AD_ERR_ARG (also a loss that
** does not fit the set: cross-entropy without labels, a regression loss
** without targets), AD_ERR_NUMERIC when the loss or a gradient becomes NaN or
** Inf (the message says at which epoch and step; the update of that step is
** not applied; with opts->skip_nonfinite the step is skipped instead, and an
** epoch whose every step was skipped ends the fit), AD_ERR_IO for the log file
** (it cannot be opened, or a line cannot be written: the fit stops there), AD_ERR_NOMEM, or an engine error (e.g. AD_ERR_SHAPE when m
** does not take the data's dimension), with a message in err.
** Resuming: K epochs, nn_save(path, m, opt, rng), then in a new process the same
** objects and options, nn_load(path, m, opt, rng) and initial_epoch K, trains the
** same bits as one run of all the epochs when opts->rng is that generator (and
** any schedule is a function of the step count, which the optimizer's state
** holds). Dropout's masks come from each dropout module's own generator, which a
** checkpoint does not hold: with dropout the resumed run differs. */
NN_API ad_status nn_fit(nn_module *m, nn_optim *opt, const nn_dataset *train, const nn_fit_opts *opts,
                        nn_epoch_stats *last, nn_error *err);

/* Mean loss (NN_LOSS_AUTO: cross-entropy with labels, MSE with targets) and
** accuracy (classes; NaN with targets) of m on ds, in evaluation mode with
** gradients off, batch_size rows at a time (<= 0: 256). loss and acc may be NULL. */
NN_API ad_status nn_evaluate(nn_module *m, const nn_dataset *ds, int64_t batch_size, double *loss, double *acc,
                             nn_error *err);

/* ---- checkpoints ---- */

/*
** A checkpoint is a safetensors file: m's parameters under their names
** ("0.weight"), the optimizer's state under "optim.*" ("optim.step", then per
** parameter "optim.<name>.momentum" for SGD, "optim.<name>.m", ".v" and ".step"
** (F64 [1]; a checkpoint written before it existed loads with each parameter's
** count taken as "optim.step") for Adam; for L-BFGS its history: "optim.lbfgs.s"
** and "optim.lbfgs.y" F64 [history, scalars], "optim.lbfgs.rho" [history] and
** "optim.lbfgs.pairs" [3], the next slot, the pairs held and whether it started) and the generator's
** state as "rng.state" (F64 [10]: the four 64-bit words as eight exact 32-bit
** halves, high first, then has_spare and spare). __metadata__ holds the format
** name and version, XXH3-64 checksums and "optimizer" ("sgd", "adam", "adamw",
** "rmsprop", "lbfgs" or "none"). Training K steps (L-BFGS: nn_optim_minimize
** calls), saving, loading and training on gives the same bits as straight
** through. Saving is atomic.
*/

/* Writes m's parameters, opt's state (opt may be NULL) and rng's state (may
** be NULL) to path. AD_ERR_IO with a message when the file cannot be written. */
NN_API ad_status nn_save(const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, nn_error *err);
/* nn_save with nmeta more __metadata__ pairs (meta[2i] a key, meta[2i+1] its
** value, UTF-8 strings; at most 64), e.g. how far a training run has gone
** (autodiff-train writes "epoch"). Keys of nn_save's own ("optimizer",
** "model") and of the file layer (nn_safetensors_save) are AD_ERR_ARG. */
NN_API ad_status nn_save_meta(const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, int nmeta,
                              const char *const *meta, nn_error *err);
/* The value of path's metadata key into buf (n bytes, n > 0; "" on failure).
** Reads the header only (nn_load checks the rest). AD_ERR_INDEX when the file
** has no such key, AD_ERR_ARG (NULL, or a value longer than n - 1 bytes),
** AD_ERR_IO, AD_ERR_FORMAT (not a checkpoint), AD_ERR_NOMEM. */
NN_API ad_status nn_checkpoint_meta(const char *path, const char *key, char *buf, size_t n, nn_error *err);
/* Reads a checkpoint written by nn_save for the same architecture, with the
** same optimizer kind when opt is given and rng state when rng is given.
** AD_ERR_IO (cannot read), AD_ERR_FORMAT (corrupt, truncated, checksum
** mismatch, names/shapes/dtypes that do not match m), AD_ERR_NUMERIC (a NaN or
** Inf value: see nn_load_ex): then m, opt and rng are left unchanged. */
NN_API ad_status nn_load(const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, nn_error *err);
/* nn_load with flags. A checkpoint holding a NaN or Inf in a parameter, buffer or optimizer
** state is refused (AD_ERR_NUMERIC, naming the tensor and element; nothing changes) unless
** flags has NN_LOAD_ALLOW_NONFINITE (to inspect a diverged run, say). nn_load passes 0. */
#define NN_LOAD_ALLOW_NONFINITE 1u
NN_API ad_status nn_load_ex(const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, unsigned flags,
                            nn_error *err);

/* The optimizer's state as named tensors ("optim.step" F64 [1], then per parameter
** "optim.<name><suffix>", or L-BFGS's "optim.lbfgs.*"), the optimizer's own (valid
** until it is freed): at most max entries written to names and tensors; returns how
** many there are in all (call with max 0 to count). After writing into them (a
** custom checkpoint format, a broadcast), call nn_optim_state_changed (an L-BFGS
** history position out of range then drops the history). */
NN_API int nn_optim_state(nn_optim *o, int max, const char **names, ad_tensor **tensors);
NN_API void nn_optim_state_changed(nn_optim *o);

/* ---- a progress bar with throughput and time left (nn_fit's, for your own loops too) ---- */

typedef struct nn_progress_bar {
    FILE *out;
    char label[32];
    int64_t total;        /* steps in the run being timed */
    double t0, last_draw; /* start and last redraw (monotonic seconds) */
    int width;            /* characters drawn last time, to clear them */
} nn_progress_bar;

/* Starts a bar labelled label ("epoch 3/12") over total steps, drawn on out. */
NN_API void nn_progress_start(nn_progress_bar *b, FILE *out, const char *label, int64_t total);
/* Redraws it (at most 10 times a second, and always at the last step):
** "epoch 3/12 [=====>    ]  45%  loss 0.4312  2317 samples/s  0:12 left";
** samples counts the samples done so far, loss may be NaN (not shown). */
NN_API void nn_progress_update(nn_progress_bar *b, int64_t done, int64_t samples, double loss);
/* Clears the bar's line so that the next output starts at column 0. */
NN_API void nn_progress_clear(nn_progress_bar *b);

/* convolutional, normalization, dropout, embedding and recurrent modules */
#include "nn_layers.h"

/* more losses, attention and transformer modules, weights by name, module gradcheck */
#include "nn_blocks.h"

#ifdef __cplusplus
}
#endif

#endif

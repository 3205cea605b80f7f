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
**     ad_rng rng; ad_rng_seed(&rng, 42);
**     nn_module *net = nn_mlp(3, (const int64_t[]){784, 128, 10}, NN_RELU, &rng);
**     nn_optim *opt = nn_adam(net, 1e-3, 0.9, 0.999, 1e-8, 0.0);
**     ad_tape *t = ad_tape_new();
**     for (each batch x [b, 784] F32, labels [b]) {
**         ad_tape_reset(t);                  // keeps the arena: no heap traffic
**         nn_zero_grad(net);
**         ad_var loss = nn_loss_cross_entropy(nn_forward(net, t, ad_const(t, x)), labels);
**         if (ad_backward(loss, NULL, 0) != AD_OK) ... ad_tape_error(t) ...
**         nn_optim_step(opt);
**     }
**     nn_optim_free(opt); nn_module_free(net); ad_tape_free(t);
**
** nn_fit() runs that loop over a data set with batching, shuffling, progress
** output, validation and a CSV log; nn_save()/nn_load() write and read
** checkpoints (safetensors files) holding parameters, optimizer state and the
** random generator's state.
**
** Errors: constructors return NULL only when out of memory or given bad sizes
** (nothing is leaked); functions returning ad_status fill an optional message
** buffer (err, errlen) naming the function and the problem. Losses record their
** errors on the tape like every op. Nothing aborts or exits.
*/

#include "ad.h"
#include "nn_io.h" /* (which also defines NN_API) */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- parameters and modules ---- */

/* A named tensor of a module. grad is NULL for a buffer (state saved in
** checkpoints but not trained, such as running statistics). */
typedef struct nn_param {
    const char *name; /* stable: "0.weight", "0.bias", "2.weight", ... */
    ad_tensor *value;
    ad_tensor *grad;
} nn_param;

typedef struct nn_module nn_module;

/* Activation functions. */
typedef enum nn_act {
    NN_IDENTITY = 0,
    NN_SIGMOID,    /* logistic: 1 / (1 + e^-x) */
    NN_TANH,
    NN_RELU,
    NN_LEAKY_RELU, /* slope 0.01 unless given with nn_activation_ex */
    NN_GELU,       /* exact: x Phi(x) */
    NN_SOFTMAX     /* over the last axis */
} nn_act;

/* "identity", "sigmoid", "tanh", "relu", "leaky_relu", "gelu", "softmax"; "?" otherwise. */
NN_API const char *nn_act_name(nn_act a);
/* Parses a name above (also "logistic", "linear", "none", "leaky-relu"); false if unknown. */
NN_API bool nn_act_from_name(const char *name, nn_act *out);

/* y = x W^T + b with W [out, in] and b [out] (PyTorch's layout), F32; W
** He-uniform, b zero. x is [..., in]. NULL on a size < 1 or out of memory. */
NN_API nn_module *nn_linear(int64_t in, int64_t out, ad_rng *rng);

/* Weight initializers (see nn_init_tensor). */
typedef enum nn_init {
    NN_INIT_XAVIER_UNIFORM = 0, /* U(-a, a), a = gain sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010) */
    NN_INIT_XAVIER_NORMAL,      /* N(0, s^2), s = gain sqrt(2 / (fan_in + fan_out)) */
    NN_INIT_HE_UNIFORM,         /* U(-a, a), a = gain sqrt(3 / fan_in), gain sqrt 2 for ReLU (He et al. 2015) */
    NN_INIT_HE_NORMAL,          /* N(0, s^2), s = gain / sqrt(fan_in) */
    NN_INIT_ZEROS
} nn_init;

/* nn_linear with everything chosen: bias or not, the weight initializer and its
** gain (0 means the initializer's usual one: 1 for Xavier, sqrt 2 for He), dtype. */
NN_API nn_module *nn_linear_ex(int64_t in, int64_t out, bool bias, nn_init init, double gain, ad_dtype dtype,
                               ad_rng *rng);

/* An activation as a module (no parameters). NULL on an unknown nn_act. */
NN_API nn_module *nn_activation(nn_act a);
/* The same with its parameter: the negative slope of NN_LEAKY_RELU (ignored by the others). */
NN_API nn_module *nn_activation_ex(nn_act a, double param);

/* Runs mods[0], mods[1], ... in turn; parameter names are prefixed by the
** index ("0.weight"). Takes ownership of every module, also on failure: when a
** mods[i] is NULL (a failed constructor) or memory runs out, it frees the
** others and returns NULL, so constructors can be nested without leaks. */
NN_API nn_module *nn_sequential(int n, nn_module *const *mods);

/* A multilayer perceptron with layer sizes sizes[0..n): Linear, act, Linear,
** act, ..., Linear (no activation after the last). Weights Xavier-uniform for
** sigmoid, tanh, identity and softmax, He-uniform for the ReLU family and GELU,
** each with its gain; biases zero. Parameters "0.weight", "0.bias", "2.weight"...
** NULL for n < 2, a size < 1, or out of memory. */
NN_API nn_module *nn_mlp(int n, const int64_t *sizes, nn_act hidden, ad_rng *rng);

/* Records m applied to x on tape t and returns the output (an invalid var,
** with the error on the tape, on a shape or dtype mismatch). */
NN_API ad_var nn_forward(nn_module *m, ad_tape *t, ad_var x);

/* Sets *out to m's parameters (an array owned by m, valid until it is freed)
** and returns their count. Order and names are stable. */
NN_API int nn_module_params(nn_module *m, nn_param **out);
/* The parameter called name, or NULL. */
NN_API nn_param *nn_module_param(nn_module *m, const char *name);
/* Total number of scalars in m's trainable parameters. */
NN_API int64_t nn_module_num_weights(nn_module *m);
/* A short name of the module's kind: "linear", "relu", "sequential", ... */
NN_API const char *nn_module_kind(const nn_module *m);
/* Training or evaluation mode (for modules that behave differently, such as
** dropout or normalization); applies to children. Modules start in training mode. */
NN_API void nn_module_set_training(nn_module *m, bool on);
NN_API bool nn_module_training(const nn_module *m);
/* Frees m, its children and its parameters. NULL is fine. */
NN_API void nn_module_free(nn_module *m);

/* ---- initializers: fill w in place from rng ---- */

/* fan_in and fan_out of a weight shaped [out, in, k...] (PyTorch's rule: the
** receptive field k... multiplies both); a 1-D tensor has fan_in = fan_out = size. */
NN_API ad_status nn_init_fans(const ad_tensor *w, int64_t *fan_in, int64_t *fan_out);
/* Fills w by initializer kind with the given gain (0: the usual one). AD_ERR_ARG on NULL or an empty fan. */
NN_API ad_status nn_init_tensor(ad_tensor *w, nn_init kind, double gain, ad_rng *rng);
NN_API ad_status nn_init_xavier_uniform(ad_tensor *w, double gain, ad_rng *rng);
NN_API ad_status nn_init_xavier_normal(ad_tensor *w, double gain, ad_rng *rng);
NN_API ad_status nn_init_he_uniform(ad_tensor *w, double gain, ad_rng *rng);
NN_API ad_status nn_init_he_normal(ad_tensor *w, double gain, ad_rng *rng);
/* The recommended gain for an activation (PyTorch's calculate_gain): 1 for
** identity, sigmoid and softmax, 5/3 for tanh, sqrt 2 for ReLU and GELU,
** sqrt(2 / (1 + 0.01^2)) for leaky ReLU. */
NN_API double nn_init_gain(nn_act a);

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

/* ---- optimizers: each binds the trainable parameters of one module ---- */

typedef struct nn_optim nn_optim;

/* Stochastic gradient descent, PyTorch's formulas: g = grad + wd p;
** with momentum mu: buf = g at the first step, buf = mu buf + g after, and
** g = g + mu buf (Nesterov) or g = buf; then p -= lr g. NULL on bad
** hyperparameters (lr < 0, momentum < 0, Nesterov without momentum) or no memory. */
NN_API nn_optim *nn_sgd(nn_module *m, double lr, double momentum, double weight_decay, bool nesterov);
/* Adam (Kingma & Ba 2015) as torch.optim.Adam, weight decay as an L2 term
** added to the gradient: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
** p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps). */
NN_API nn_optim *nn_adam(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay);
/* AdamW (Loshchilov & Hutter 2019): Adam with decoupled decay p *= 1 - lr wd first. */
NN_API nn_optim *nn_adamw(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay);
/* Applies one update from the parameters' grad tensors. AD_ERR_NUMERIC (and
** nothing updated) when a gradient holds a NaN or Inf. */
NN_API ad_status nn_optim_step(nn_optim *o);
/* The learning rate, and setting it (schedules). */
NN_API double nn_optim_lr(const nn_optim *o);
NN_API void nn_optim_set_lr(nn_optim *o, double lr);
/* Steps taken so far (restored by nn_load). */
NN_API int64_t nn_optim_steps(const nn_optim *o);
/* "sgd", "adam" or "adamw". */
NN_API const char *nn_optim_name(const nn_optim *o);
NN_API void nn_optim_free(nn_optim *o);
/* Sets every trainable parameter's gradient of m to zero. */
NN_API void nn_zero_grad(nn_module *m);
/* Gradient clipping by global norm (as torch.nn.utils.clip_grad_norm_): the
** norm is sqrt of the sum of squares of every trainable gradient of m, written to
** *total_norm_out (may be NULL); when it exceeds max_norm every gradient is
** scaled by max_norm / (norm + 1e-6). Errors: AD_ERR_ARG (NULL m, max_norm not
** > 0), AD_ERR_NUMERIC when a gradient holds NaN or Inf (the norm is then NaN or
** Inf and nothing is scaled). */
NN_API ad_status nn_clip_grad_norm(nn_module *m, double max_norm, double *total_norm_out);

/* A learning-rate schedule, evaluated per epoch. */
typedef enum nn_sched_kind {
    NN_SCHED_CONSTANT = 0,
    NN_SCHED_STEP,  /* lr = base gamma^floor(epoch / step_size) */
    NN_SCHED_COSINE /* lr = eta_min + (base - eta_min) (1 + cos(pi epoch / t_max)) / 2, eta_min after t_max */
} nn_sched_kind;

typedef struct nn_schedule {
    nn_sched_kind kind;
    double base_lr;
    int64_t step_size; /* NN_SCHED_STEP */
    double gamma;      /* NN_SCHED_STEP */
    int64_t t_max;     /* NN_SCHED_COSINE */
    double eta_min;    /* NN_SCHED_COSINE */
} nn_schedule;

NN_API nn_schedule nn_schedule_step(double base_lr, int64_t step_size, double gamma);
NN_API nn_schedule nn_schedule_cosine(double base_lr, int64_t t_max, double eta_min);
/* The learning rate for epoch (0-based). */
NN_API double nn_schedule_lr(const nn_schedule *s, int64_t epoch);

/* ---- training ---- */

typedef enum nn_progress {
    NN_PROGRESS_AUTO = 0, /* a bar when out is a terminal, plain lines otherwise */
    NN_PROGRESS_BAR,
    NN_PROGRESS_LINES,    /* one line per epoch */
    NN_PROGRESS_NONE
} nn_progress;

/* What one epoch gave (val_* are NaN without a validation set). */
typedef struct nn_epoch_stats {
    int epoch;         /* 1-based */
    int64_t steps;     /* optimizer steps so far, all epochs */
    double lr;
    double train_loss; /* mean over the epoch's batches, weighted by their sizes */
    double train_acc;  /* fraction of the epoch's samples classified right as they were trained on */
    double val_loss, val_acc;
    double seconds;    /* wall time of the epoch (training and validation) */
    int64_t skipped;   /* steps of this epoch skipped as non-finite (opts.skip_nonfinite) */
} nn_epoch_stats;

typedef void (*nn_epoch_fn)(const nn_epoch_stats *s, void *ctx);

typedef struct nn_fit_opts {
    int epochs;                  /* default 10 */
    int64_t batch_size;          /* default 64 */
    uint64_t seed;               /* shuffling; default 1 */
    bool shuffle;                /* default true */
    const nn_dataset *val;       /* optional validation set, evaluated after each epoch */
    const nn_schedule *schedule; /* optional; sets the lr at the start of each epoch */
    const char *log_path;        /* optional CSV: epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,seconds */
    nn_progress progress;        /* default NN_PROGRESS_AUTO */
    FILE *out;                   /* progress output; NULL: stderr */
    nn_epoch_fn on_epoch;        /* optional, called after each epoch */
    void *ctx;
    bool skip_nonfinite;         /* skip a step whose loss or gradient is NaN or Inf (counted in
                                 ** nn_epoch_stats.skipped) instead of stopping; default false */
    double clip_norm;            /* > 0: clip the gradients to this global norm before each update
                                 ** (nn_clip_grad_norm); default 0, off */
} nn_fit_opts;

/* The defaults listed above. */
NN_API nn_fit_opts nn_fit_defaults(void);

/* Trains m with opt on the classification set train (cross-entropy of m's
** logits against the labels; inputs are the pixels scaled to [0, 1] or the
** features) for opts->epochs epochs. One tape is reused for every step.
** last (may be NULL) receives the final epoch's figures. Errors: AD_ERR_ARG,
** AD_ERR_NUMERIC when the loss or a gradient becomes NaN or Inf (the message
** says at which epoch and step; the update of that step is not applied; with
** opts->skip_nonfinite the step is skipped instead and training goes on), AD_ERR_IO for the
** log file, AD_ERR_NOMEM, or an engine error (e.g. AD_ERR_SHAPE when m does
** not take the data's dimension), with a message in err. */
NN_API ad_status nn_fit(nn_module *m, nn_optim *opt, const nn_dataset *train, const nn_fit_opts *opts,
                        nn_epoch_stats *last, char *err, size_t errlen);

/* Mean cross-entropy and accuracy of m on ds, in evaluation mode with
** gradients off, batch_size rows at a time (<= 0: 256). loss and acc may be NULL. */
NN_API ad_status nn_evaluate(nn_module *m, const nn_dataset *ds, int64_t batch_size, double *loss, double *acc,
                             char *err, size_t errlen);

/* ---- checkpoints ---- */

/*
** A checkpoint is a safetensors file: m's parameters under their names
** ("0.weight"), the optimizer's state under "optim.*" ("optim.step", then per
** parameter "optim.<name>.momentum" for SGD, "optim.<name>.m" and ".v" for
** Adam) and the generator's state as "rng.state" (F64 [10]: the four 64-bit
** words as eight exact 32-bit halves, high first, then has_spare and spare).
** __metadata__ holds the format name and version, XXH3-64 checksums and
** "optimizer" ("sgd", "adam", "adamw" or "none"). Saving is atomic.
*/

/* Writes m's parameters, opt's state (opt may be NULL) and rng's state (may
** be NULL) to path. AD_ERR_IO with a message when the file cannot be written. */
NN_API ad_status nn_save(const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, char *err,
                         size_t errlen);
/* Reads a checkpoint written by nn_save for the same architecture, with the
** same optimizer kind when opt is given and rng state when rng is given.
** AD_ERR_IO (cannot read), AD_ERR_FORMAT (corrupt, truncated, checksum
** mismatch, names/shapes/dtypes that do not match m): then m, opt and rng are
** left unchanged. */
NN_API ad_status nn_load(const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, char *err, size_t errlen);

/* convolutional, normalization, dropout, embedding and recurrent modules */
#include "nn_layers.h"

#ifdef __cplusplus
}
#endif

#endif

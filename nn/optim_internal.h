/* optim_internal.h: the optimizer's struct and its table of kinds, shared by optim.c, optim_state.c and lbfgs.c;
** never installed. Calls go one way: optim.c -> lbfgs.c -> optim_state.c (the kinds' hooks are in the table). */
#ifndef AUTODIFF_OPTIM_INTERNAL_H
#define AUTODIFF_OPTIM_INTERNAL_H

#include "nn_internal.h"

#define NN__OPTIM_SLOTS 3 /* state tensors per parameter, at most */

/* The hyperparameters one update sees (one group's lr and decay, the step count after it). */
typedef struct hyper {
    double lr, wd, momentum, beta1, beta2, eps, alpha;
    bool nesterov, decoupled;
    int64_t step;
} hyper;

/* An elementwise update of n elements: parameter p, gradient g, state slots s[k] (NULL when unused). */
typedef void (*update_f32_fn)(const hyper *h, float *restrict p, const float *restrict g, float *const *s, int64_t n);
typedef void (*update_f64_fn)(const hyper *h, double *restrict p, const double *restrict g, double *const *s,
                              int64_t n);

/* One kind of optimizer: everything that differs between kinds is a row of this table (optim.c). */
typedef struct optim_kind {
    const char *name;
    int nslots;                                   /* state tensors per parameter */
    const char *slot_suffix[NN__OPTIM_SLOTS];     /* checkpoint names: "optim.<param><suffix>" */
    ad_status (*check)(const nn_optim_opts *o, nn_error *err); /* the hyperparameters */
    bool (*slot_used)(const nn_optim_opts *o, int slot);      /* NULL: every slot */
    update_f32_fn update_f32;                     /* elementwise kinds */
    update_f64_fn update_f64;
    /* kinds that evaluate the loss themselves (L-BFGS): the whole of nn_optim_minimize */
    ad_status (*step)(nn_optim *o, nn_closure fn, void *ctx, double *loss, nn_error *err);
    /* kinds with state kept as numbers (L-BFGS's history position): into their state tensors before
    ** the state is read (nn_optim_state), and back after it was written (nn_optim_state_changed) */
    void (*state_out)(nn_optim *o);
    void (*state_in)(nn_optim *o);
    bool decoupled; /* AdamW's weight decay */
    bool param_steps; /* a step count per parameter, "optim.<param>.step" (Adam's bias correction) */
} optim_kind;

typedef struct optim_group {
    double lr, weight_decay;
    double base_lr; /* the lr it was made with: nn_optim_set_lr scales every group alike */
} optim_group;

typedef struct param_slots {
    ad_tensor *s[NN__OPTIM_SLOTS];
    ad_tensor *steps; /* kinds with param_steps: F64 [1], the updates this parameter has had */
    bool steps_absent; /* nn_load: not in the file (written before the counts were): set from the global count */
    int group;
} param_slots;

typedef struct lbfgs_state lbfgs_state;

struct nn_optim {
    const optim_kind *kind;
    nn_optim_opts opts;
    int64_t step;
    int n;             /* parameters */
    nn_param **params; /* the caller's entries (their requires_grad is read at each step) */
    param_slots *slots;
    optim_group *groups;
    int ngroups;
    ad_tensor *step_t; /* F64 [1]: the step count, for checkpoints */
    int nstate, state_cap; /* named state tensors: "optim.step", then the slots' */
    char **state_names;
    ad_tensor **state;
    lbfgs_state *lbfgs;
    int pending; /* nn_train_step: backward passes accumulated since the last update */
};

NN_INTERNAL ad_status nn__lbfgs_check(const nn_optim_opts *o, nn_error *err);
NN_INTERNAL ad_status nn__lbfgs_init(nn_optim *o, nn_error *err);
NN_INTERNAL ad_status nn__lbfgs_step(nn_optim *o, nn_closure fn, void *ctx, double *loss, nn_error *err);
NN_INTERNAL void nn__lbfgs_free(nn_optim *o);
/* The history's position (head, count, started) into its state tensor "optim.lbfgs.pairs", and
** back after the state was written (a position out of range drops the history). */
NN_INTERNAL void nn__lbfgs_state_out(nn_optim *o);
NN_INTERNAL void nn__lbfgs_state_in(nn_optim *o);

/* A parameter's step count as read from its tensor (a value no step could have left reads as 0). */
NN_INTERNAL int64_t nn__optim_param_steps(const param_slots *s);

/* Zeroes the gradients of o's parameters (every one, frozen too) before a step's backward pass;
** with several threads each zeroes the shares of the parameters it updates (step_share's split),
** so those parts of the gradients are in the cache of the core that adds into them and reads them. */
NN_INTERNAL void nn__optim_zero_grads(nn_optim *o);

/* Appends t (owned elsewhere) to o's named state as "optim.<name><suffix>"; false when out of memory. */
NN_INTERNAL bool nn__optim_add_state(nn_optim *o, const char *name, const char *suffix, ad_tensor *t);

#endif

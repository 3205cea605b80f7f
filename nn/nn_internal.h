/* nn_internal.h: the module and optimizer internals shared by libautodiff-nn's files; never installed. */
#ifndef AUTODIFF_NN_INTERNAL_H
#define AUTODIFF_NN_INTERNAL_H

#include "services.h"
#include "nn.h"

#define NN_INTERNAL __attribute__((visibility("hidden")))

/*
** A module is a struct whose first member is `nn_module`, with a vtable of
** what differs between kinds. Parameters are gathered once, at construction,
** into the flat array `params` (names owned by the module): a leaf module
** (linear, convolution, ...) owns its tensors (owns_tensors); a container
** (sequential) refers to its children's tensors under prefixed names.
**
** To add a module kind: define a struct { nn_module base; ... }, a vtable, a
** constructor that fills the struct with nn__module_init() and adds its
** parameters with nn__module_add_param() (or for containers
** nn__module_adopt_params()), and a free function for whatever else it holds
** (children included); the base's own parts are freed by nn_module_free.
*/

typedef struct nn_module_vtable {
    const char *kind;
    /* Records the module applied to x; reports errors on the tape. */
    ad_var (*forward)(nn_module *m, ad_tape *t, ad_var x);
    /* Frees what the kind holds beyond the base (children, buffers); may be NULL. */
    void (*free)(nn_module *m);
    /* Propagates the mode to children; may be NULL (the base flag is set either way). */
    void (*set_training)(nn_module *m, bool on);
} nn_module_vtable;

struct nn_module {
    const nn_module_vtable *vt;
    nn_param *params; /* flat, named, in a stable order */
    int nparams, params_cap;
    bool owns_tensors; /* leaf modules: params' value and grad are freed with the module */
    bool training;
};

/* Sets up the base part of a zeroed module struct. */
NN_INTERNAL void nn__module_init(nn_module *m, const nn_module_vtable *vt);
/* Adds a parameter named name (copied) owning value and grad (grad NULL: a
** buffer). On failure frees value and grad and returns AD_ERR_NOMEM. */
NN_INTERNAL ad_status nn__module_add_param(nn_module *m, const char *name, ad_tensor *value, ad_tensor *grad);
/* Adds child's parameters to container m as "<prefix>.<name>", tensors borrowed. */
NN_INTERNAL ad_status nn__module_adopt_params(nn_module *m, const char *prefix, nn_module *child);

/* An ad_status with a message "fn: ..." into err (may be NULL); returns s. */
NN_INTERNAL ad_status nn__err(char *err, size_t errlen, ad_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The optimizer's state as named tensors, for checkpoints: *n entries written
** into names/tensors (arrays of at least nn__optim_state_count entries). The
** tensors are the optimizer's own (a load writes into them directly); "optim.step"
** is a F64 [1] tensor mirroring the step count, read back by nn__optim_sync_step. */
NN_INTERNAL int nn__optim_state_count(const nn_optim *o);
NN_INTERNAL int nn__optim_state(nn_optim *o, const char **names, ad_tensor **tensors);
NN_INTERNAL void nn__optim_sync_step(nn_optim *o);

#endif

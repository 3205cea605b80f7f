/* nn_internal.h: the module and optimizer internals shared by libautodiff-nn's files; never installed. */
#ifndef AUTODIFF_NN_INTERNAL_H
#define AUTODIFF_NN_INTERNAL_H

#include "services.h"
#include "nn.h"

#define NN_INTERNAL __attribute__((visibility("hidden")))

/*
** A module (nn_module.h) is its kind's ops, the kind's state, and a flat list
** of named tensors: params[0..nown) are its own (value and grad owned here),
** params[nown..nparams) are its children's, under "<child>.<name>", borrowed.
** Children are owned; parent is set once a module is added to a container,
** after which it takes no more additions (so a container's list stays whole).
*/
struct nn_module {
    const nn_module_ops *ops;
    void *state;
    nn_module *parent;
    nn_param *params;
    int nparams, params_cap, nown;
    nn_module **children;
    char **child_names;
    int nchildren, children_cap;
    bool training;
};

/* ops->free for a state allocated with ad__calloc. */
NN_INTERNAL void nn__free_state(nn_module *m);
/* A module of kind ops with a zeroed state of size bytes (none when 0), freed by
** ops->free (nn__free_state); NULL with "fn: out of memory" in err. */
NN_INTERNAL nn_module *nn__module_with_state(const nn_module_ops *ops, size_t size, const char *fn, nn_error *err);
/* Adds a parameter (or a buffer) named name, of dtype dt and shape, every element v. */
NN_INTERNAL ad_status nn__add_filled(nn_module *m, const char *name, ad_dtype dt, int nd, const int64_t *shape,
                                     double v, bool buffer, nn_error *err);

/* Gradient clipping (nn_clip_grad_norm) over n parameters given as pointers pp or, when pp
** is NULL, as the array arr; max_norm > 0. */
NN_INTERNAL ad_status nn__clip_grads(int n, nn_param *const *pp, const nn_param *arr, double max_norm,
                                     double *total_norm_out, nn_error *err);

/* The activation a applied to x (param: leaky ReLU's slope), from the table in dense.c. */
NN_INTERNAL ad_var nn__act_apply(nn_act a, ad_var x, double param);

/* A caller's nn_error, or a local one when the caller passed NULL, so that the
** library's own code can always read back the status of what it called. */
#define NN__ERR_OR_LOCAL(err)                                                                                   \
    nn_error err##_local_ = {AD_OK, ""};                                                                        \
    if (!(err)) (err) = &err##_local_

/* The (buffer, length) pair of the engine's message formatters (ad__file_error)
** pointing into an nn_error's message, for the file loaders; nn__status then
** records the status. */
#define NN__MSG(err) ((err) ? (err)->message : NULL), ((err) ? sizeof(err)->message : 0)
NN_INTERNAL ad_status nn__status(nn_error *err, ad_status s);

/* The optimizer's state as named tensors, for checkpoints: *n entries written
** into names/tensors (arrays of at least nn__optim_state_count entries). The
** tensors are the optimizer's own (a load writes into them directly); "optim.step"
** is a F64 [1] tensor mirroring the step count (and "optim.lbfgs.pairs" L-BFGS's
** history position), read back by nn__optim_sync_step. */
NN_INTERNAL int nn__optim_state_count(const nn_optim *o);
NN_INTERNAL int nn__optim_state(nn_optim *o, const char **names, ad_tensor **tensors);
NN_INTERNAL void nn__optim_sync_step(nn_optim *o);
/* For nn_load: true when the state entry `name`, absent from the file, is one a checkpoint
** written before it existed lacks (Adam's per-parameter step counts): it is then not read, and
** the next nn__optim_sync_step sets it as the older format meant it (the global step count). */
NN_INTERNAL bool nn__optim_state_absent(nn_optim *o, const char *name, bool absent);

/* A safetensors file's tensors as they are (any writer; __metadata__ ignored, no checksum):
** names, dtypes (F32/F64; others are AD_ERR_UNSUPPORTED), shapes, and bytes in `data`
** (little-endian, possibly unaligned). The same validation of the header and table as
** nn_safetensors_load (safetensors.c); free with nn__safetensors_plain_free. */
typedef struct nn__st_tensor {
    const char *name;
    ad_dtype dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    const unsigned char *bytes;
} nn__st_tensor;
typedef struct nn__st_plain {
    int n;
    nn__st_tensor *t;
    unsigned char *data;
    char *names;
} nn__st_plain;
NN_INTERNAL ad_status nn__safetensors_read_plain(const char *fn, const char *path, nn__st_plain *out, char *err,
                                                 size_t errlen);
NN_INTERNAL void nn__safetensors_plain_free(nn__st_plain *p);

#endif

/* nn_module.h: the public interface for module kinds: forward, parameters, buffers, children, training flag, free (included by nn.h). */
#ifndef AUTODIFF_NN_MODULE_H
#define AUTODIFF_NN_MODULE_H

#include "nn_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** A module is a kind (a table of callbacks, nn_module_ops), a state pointer
** the kind owns, and what the library keeps for it: named parameters and
** buffers (tensors outside any tape), named child modules, and a training
** flag. Every module of the library (linear, conv2d, sequential, lstm_cell,
** ...) is written with this interface, and so can yours. A worked example,
** y = a * x + b elementwise with learnable vectors a and b:
**
**     typedef struct affine { int64_t n; } affine;         // the kind's state
**
**     static ad_var affine_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
**     {
**         // own parameters come first in the module's list, in the order added
**         return ad_add(ad_mul(in[0], nn_module_var(m, t, 0)), nn_module_var(m, t, 1));
**     }
**     static void affine_free(nn_module *m) { free(nn_module_state(m)); }
**     static const nn_module_ops affine_ops = {.kind = "affine", .n_inputs = 1,
**                                              .forward = affine_forward, .free = affine_free};
**
**     nn_module *affine_new(int64_t n, nn_error *err)
**     {
**         affine *s = malloc(sizeof *s);
**         if (!s) { nn_error_set(err, AD_ERR_NOMEM, "affine_new: out of memory"); return NULL; }
**         s->n = n;
**         nn_module *m = nn_module_new(&affine_ops, s, err);  // on failure it frees s (ops.free)
**         if (!m) return NULL;
**         ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(n)), *b = ad_tensor_new(AD_F32, AD_SHAPE(n));
**         if (a) ad_tensor_fill(a, 1.0);
**         if (!nn_module_add_param(m, "a", a, true, err) |       // '|': both run, each takes
**             !nn_module_add_param(m, "b", b, true, err)) {      // its tensor, also on failure
**             nn_module_free(m);
**             return NULL;
**         }
**         return m;
**     }
**
** tests/test_nn_custom_module.c holds this module, trained and gradchecked, and
** a container with children.
**
** Rules:
** - Ownership: nn_module_new takes the state (ops->free releases it, also
**   when nn_module_new fails); nn_module_add_param/add_buffer take the tensor
**   and nn_module_add_child the child, also when they fail. nn_module_free
**   frees the state (ops->free), the children, the tensors and the names.
** - Names: a parameter, buffer or child name is non-empty, holds no '.', and
**   is unique in its module. nn_module_params lists a module's own
**   parameters and buffers first (in the order added), then each child's
**   under "<child>.<name>" ("layers.0.weight").
** - Build a module completely before adding it as a child: a module that
**   has a parent takes no more parameters or children (AD_ERR_STATE).
** - forward records ops on the tape and reports errors there (ad_tape_error);
**   nn_forward_n has already checked that m is valid, that n matches
**   ops->n_inputs, and that every input is a valid var of tape t.
** - Parameters join the tape with nn_module_var / nn_param_var: an ad_param
**   (its gradient is added into the param's grad tensor by ad_backward), or,
**   for a frozen parameter or a buffer, an ad_const.
*/

typedef struct nn_module nn_module;

/* A named tensor of a module. */
typedef struct nn_param {
    const char *name;   /* "weight"; in a container "0.weight", "layers.0.weight" */
    ad_tensor *value;
    ad_tensor *grad;    /* same shape and dtype as value; NULL for a buffer */
    bool requires_grad; /* false: frozen (a constant on the tape; optimizers skip it). Change it
                        ** with nn_module_set_requires_grad, which updates every level's entry. */
} nn_param;

typedef struct nn_module_ops {
    const char *kind; /* a short name: "linear", "affine", ... (static storage) */
    int n_inputs;     /* the number of inputs forward takes; 0: any number >= 1 */
    /* Records the module applied to in[0..n) on t and returns the output (an
    ** invalid var after an error, with the error on the tape). */
    ad_var (*forward)(nn_module *m, ad_tape *t, int n, const ad_var *in);
    /* Frees the state (not the parameters or children: those are the
    ** library's). NULL: the state is not freed (static, or NULL). */
    void (*free)(nn_module *m);
    /* Optional: called by nn_module_set_training after m's flag and its
    ** children's have changed. */
    void (*set_training)(nn_module *m, bool on);
} nn_module_ops;

/* A new module of kind ops with the given state, in training mode, with no
** parameters. NULL (and ops->free run on the state) when ops or
** ops->forward is NULL or memory runs out. */
NN_API nn_module *nn_module_new(const nn_module_ops *ops, void *state, nn_error *err);
/* The state given to nn_module_new. */
NN_API void *nn_module_state(const nn_module *m);
/* The kind's callbacks. */
NN_API const nn_module_ops *nn_module_ops_of(const nn_module *m);

/* Adds a parameter owning value (F32 or F64, any shape), with a zeroed grad
** tensor of its shape; trainable false adds it frozen. Returns the entry
** (valid until the next addition to m) or NULL: a bad or duplicate name, a
** NULL value (such as a failed ad_tensor_new: AD_ERR_NOMEM), m already a
** child, or no memory. value is freed on failure. */
NN_API nn_param *nn_module_add_param(nn_module *m, const char *name, ad_tensor *value, bool trainable,
                                     nn_error *err);
/* Adds a buffer: state saved in checkpoints and listed by nn_module_params,
** but with no gradient and never trained (running statistics). As above. */
NN_API nn_param *nn_module_add_buffer(nn_module *m, const char *name, ad_tensor *value, nn_error *err);
/* Adds child under name: its parameters appear in m's list as
** "<name>.<param>", its training flag follows m's, and it is freed with m.
** Takes child, also on failure (a NULL child, from a failed constructor, is
** an error that keeps the constructor's own message when err has one). */
NN_API ad_status nn_module_add_child(nn_module *m, const char *name, nn_module *child, nn_error *err);
/* Children in the order added, and their names. NULL when i is out of range. */
NN_API int nn_module_num_children(const nn_module *m);
NN_API nn_module *nn_module_child(const nn_module *m, int i);
NN_API const char *nn_module_child_name(const nn_module *m, int i);

/* Joins parameter p to tape t: ad_param(t, value, grad) when it is trainable,
** ad_const(t, value) when it is frozen or a buffer. */
NN_API ad_var nn_param_var(ad_tape *t, const nn_param *p);
/* nn_param_var of m's i-th parameter (own parameters come first). An
** AD_ERR_INDEX on the tape when i is out of range. */
NN_API ad_var nn_module_var(nn_module *m, ad_tape *t, int i);

/* Records m applied to the n inputs in on tape t; returns the output (an
** invalid var, with the error on the tape, on a NULL module, a wrong number of
** inputs, an invalid or foreign input var, or a shape or dtype mismatch). */
NN_API ad_var nn_forward_n(nn_module *m, ad_tape *t, int n, const ad_var *in);
/* nn_forward_n with one input. */
NN_API ad_var nn_forward(nn_module *m, ad_tape *t, ad_var x);

/* Sets *out to m's parameters and buffers (an array owned by m, valid until
** m changes or is freed) and returns their count. Order and names are stable. */
NN_API int nn_module_params(nn_module *m, nn_param **out);
/* The parameter or buffer called name ("layers.0.weight"), or NULL. */
NN_API nn_param *nn_module_param(nn_module *m, const char *name);
/* Freezes (on = false) or unfreezes every parameter of m called name or whose
** name starts with "name." ("0" matches "0.weight" and "0.bias"; NULL or ""
** matches all), at every level of the tree m belongs to. AD_ERR_ARG when
** nothing matches (buffers never do). */
NN_API ad_status nn_module_set_requires_grad(nn_module *m, const char *name, bool on, nn_error *err);
/* Total number of scalars in m's parameters (frozen ones included, buffers not). */
NN_API int64_t nn_module_num_weights(nn_module *m);
/* The kind's name: "linear", "relu", "sequential", ... ("?" for NULL). */
NN_API const char *nn_module_kind(const nn_module *m);
/* Training or evaluation mode (dropout and normalization differ), for m and
** its children; then ops->set_training. Modules start in training mode. */
NN_API void nn_module_set_training(nn_module *m, bool on);
NN_API bool nn_module_training(const nn_module *m);
/* Sets every parameter's gradient of m to zero. */
NN_API void nn_zero_grad(nn_module *m);
/* Frees m, its state, its children and its tensors. NULL is fine. */
NN_API void nn_module_free(nn_module *m);

#ifdef __cplusplus
}
#endif

#endif

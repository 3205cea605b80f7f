/* ad_custom.h: extending the engine: custom ops with a user VJP, checkpointed segments, functions of n inputs (included by ad.h). */
#ifndef AUTODIFF_AD_CUSTOM_H
#define AUTODIFF_AD_CUSTOM_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** ---- custom ops: your own function as one node on the tape ----
**
** A custom op wraps a routine the engine does not know (a linear solver, an
** ODE step, a call into LAPACK) and gives it a derivative. It is recorded as
** one node taking n inputs and producing n_out outputs; backward calls your
** VJP for it. A worked example, y = x^3 with its VJP dL/dx = 3 x^2 dL/dy:
**
**     static ad_status cube_shape(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
**     { *out = *in[0]; return AD_OK; }                      (same dtype and shape as x)
**     static ad_status cube_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
**     { for (int64_t i = 0; i < in[0]->size; i++) { double x = ad_tensor_get(in[0], i);
**           ad_tensor_set(out[0], i, x * x * x); } return AD_OK; }
**     static ad_status cube_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out,
**                               const ad_var *gout, ad_var *gin)
**     { gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_square(in[0]), 3.0)); return AD_OK; }
**     static const ad_custom_op cube = {.name = "cube", .n_out = 1, .shape = cube_shape,
**                                       .forward = cube_fwd, .vjp = cube_vjp};
**     ad_var y = ad_custom(&cube, NULL, 1, &x);
**
** The VJP comes in two kinds; give either or both:
**   vjp      written with the engine's ops on vars. Under AD_CREATE_GRAPH it is
**            recorded like any other op's VJP, so second and higher derivatives
**            (Hessians, gradgradcheck) come for free.
**   vjp_raw  on plain tensors, for a black box whose adjoint is itself a C routine.
**            gin[j] arrives zeroed (NULL for an input that needs no gradient): write
**            dL/d in[j] into it. Its result is a constant to the engine, so a second
**            derivative through it is AD_ERR_UNSUPPORTED naming the op, unless `jvp`
**            is given: then the derivative of J^T g in g is J (one jvp) and in x the
**            derivative of g . J(x) w (the jvp recorded and swept again).
** With both, the raw one runs in plain backward passes and the engine-op one under
** AD_CREATE_GRAPH.
**
** Contract:
** - name, forward and shape are required, and at least one of vjp/vjp_raw; n_out >= 1.
**   NULL fields, n < 0 or n_out < 1 are AD_ERR_ARG.
** - shape(ctx, n, in, out) fills the dtype, ndim and shape of out[0..n_out) (data is
**   ignored). All outputs of one op must share a dtype (AD_ERR_DTYPE otherwise).
** - forward(ctx, n, in, out) writes the outputs into storage the tape allocated from
**   shape(); it must not change their headers (a changed header is AD_ERR_SHAPE).
** - vjp gets gout[k] = dL/d out[k] for every output (zeros for an output no
**   gradient reached) and sets gin[j] for each differentiable input; a gin left
**   AD_NO_VAR counts as zero. A gin of the wrong shape or dtype, or of another tape,
**   is AD_ERR_SHAPE/AD_ERR_DTYPE/AD_ERR_ARG naming the op and the input.
** - differentiable: per input, NULL = all. Non-differentiable inputs (masks, flags)
**   get no gradient and do not make the output require one. Integers, flags and
**   index arrays that are not tensors travel in ctx.
** - A callback returning a status other than AD_OK becomes a sticky tape error
**   "custom op 'NAME': forward failed: ..." (vjp, jvp alike); an error a vjp's own
**   ops recorded keeps its message, prefixed with the op's name.
** - Ownership: the descriptor and its `differentiable` array are copied at each
**   call (they may live on the stack); `name` is copied too. ctx is borrowed: it
**   must stay valid until the tape is reset or freed (backward and replay call
**   the callbacks with it); the engine never frees it.
** - Custom ops appear by name in ad_tape_write_dot, in anomaly and error messages
**   and in ad_tape_fingerprint (which hashes the name).
*/

typedef struct ad_custom_op {
    const char *name; /* shown in errors, DOT, anomaly messages, fingerprint */
    int n_out;        /* outputs (>= 1): ad_custom returns the first, ad_custom_n all */
    /* output dtypes and shapes from the inputs: fills out[0..n_out) (data left NULL) */
    ad_status (*shape)(void *ctx, int n, const ad_tensor *const *in, ad_tensor *out);
    /* forward on values into outputs the tape allocated from shape() */
    ad_status (*forward)(void *ctx, int n, const ad_tensor *const *in, ad_tensor *const *out);
    /* VJP written with engine ops (differentiable again under AD_CREATE_GRAPH)... */
    ad_status (*vjp)(void *ctx, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                     ad_var *gin);
    /* ...or on raw tensors, for a black box (second order: AD_ERR_UNSUPPORTED without jvp). */
    ad_status (*vjp_raw)(void *ctx, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                         const ad_tensor *const *gout, ad_tensor *const *gin);
    /* optional forward-mode rule with engine ops: tout[k] = sum_j d out[k]/d in[j] tin[j]
    ** (tin[j] is zeros for an input without a tangent) */
    ad_status (*jvp)(void *ctx, int n, const ad_var *in, const ad_var *tin, int n_out, ad_var *tout);
    const bool *differentiable; /* per input; NULL = all */
} ad_custom_op;

/* Records op on in[0..n) (all on one tape) and returns its first output; an
** invalid var after recording an error (see the contract above). */
AD_API ad_var ad_custom(const ad_custom_op *op, void *ctx, int n, const ad_var *in);
/* The same, with every output in out[0..op->n_out). Returns the tape's status;
** AD_ERR_ARG without recording anything when op, in or out is NULL and no tape
** can be found. */
AD_API ad_status ad_custom_n(const ad_custom_op *op, void *ctx, int n, const ad_var *in, ad_var *out);

/* Checks a custom op's derivatives against central differences on the given
** f64 inputs (ad_gradcheck conventions; all outputs checked, flattened and
** concatenated): first order always, second order (ad_gradgradcheck) when the op
** has an engine-op vjp or a jvp. rep (may be NULL) holds the first failure, or on a
** pass the last check run (rep->order tells which: 2 when both ran). Returns AD_OK,
** AD_ERR_NUMERIC on a mismatch, or the error met. Prints nothing. */
AD_API ad_status ad_custom_check(const ad_custom_op *op, void *ctx, int n, const ad_tensor *const *in,
                                 const ad_check_opts *opts, ad_check_report *rep);

/*
** ---- checkpointed segments (rematerialization) ----
**
** ad_checkpoint(fn, ctx, n, in, n_out, out) runs fn on in[0..n) and records it as
** ONE node: the intermediates fn makes are dropped right after the forward, only
** the inputs and outputs stay. When backward reaches the node it records fn again
** from the same inputs, sweeps that recording in place (so the gradients are the
** same, bit for bit, as without the checkpoint) and drops it again. Peak memory
** for a chain of k segments is about the chain's boundaries plus one segment.
** fn must compute the same thing each time it is called (no hidden state, same
** random numbers) and may use any op, ad_scalar/ad_full/ad_const and ad_param, but
** not ad_leaf (a leaf made inside has nowhere to keep its gradient); every
** differentiable input must be among in[]. Outputs must share a dtype. Under
** AD_CREATE_GRAPH the recomputed segment is kept (higher derivatives work, no
** memory is saved). ctx is borrowed until the tape is reset or freed.
*/
typedef ad_status (*ad_fn_n)(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx);
AD_API ad_status ad_checkpoint(ad_fn_n fn, void *ctx, int n, const ad_var *in, int n_out, ad_var *out);

/*
** ---- functions of n tensors ----
**
** Each records f(x[0..n)) on a private tape (leaves over the caller's tensors,
** which are only read), writes the result into caller-owned tensors and frees
** everything. x[i] are F32 or F64, all of one dtype; results have that dtype.
** On failure err (may be NULL) receives a message naming the function and the
** problem, e.g. "ad_jacobian_n: out[1] is [3,2], expected [4,3]" or the error f
** recorded on the private tape. Errors as ad_jacobian.
*/
/* The vector-Jacobian product: out[i] = v^T dy/dx[i], shaped like x[i]; v shaped like f's output. */
AD_API ad_status ad_vjp(ad_fn f, void *ctx, int n, const ad_tensor *const *x, const ad_tensor *v,
                        ad_tensor *const *out, char *err, size_t errlen);
/* Jacobian blocks: out[i] is [m, size of x[i]] for f's output of m elements. */
AD_API ad_status ad_jacobian_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, ad_tensor *const *out,
                               char *err, size_t errlen);
/* Hessian blocks of a one-element f: out[i * n + j] = d2 f / dx[i] dx[j], [size of x[i], size of x[j]]. */
AD_API ad_status ad_hessian_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, ad_tensor *const *out,
                              char *err, size_t errlen);
/* Hessian-vector product of a one-element f: out[i] = sum_j H_ij v[j], shaped like x[i]. */
AD_API ad_status ad_hvp_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, const ad_tensor *const *v,
                          ad_tensor *const *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif

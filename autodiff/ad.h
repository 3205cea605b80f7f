/* ad.h: public interface of libautodiff, a tape-based reverse-mode automatic differentiation engine. */
#ifndef AUTODIFF_AD_H
#define AUTODIFF_AD_H

/*
** libautodiff records every operation on a tape (a Wengert list) as it runs and
** computes exact gradients with one reverse sweep of that tape.
**
** A worked example: the gradient of f(x, y) = x * sin(y) + exp(x * y).
**
**     ad_tape *t = ad_tape_new();
**     ad_tensor *xv = ad_tensor_from(AD_F64, AD_SHAPE(1), (double[]){0.5});
**     ad_tensor *yv = ad_tensor_from(AD_F64, AD_SHAPE(1), (double[]){2.0});
**     ad_var x = ad_leaf(t, xv), y = ad_leaf(t, yv);
**     ad_var f = ad_add(ad_mul(x, ad_sin(y)), ad_exp(ad_mul(x, y)));
**     if (ad_backward(f, NULL, 0) != AD_OK) fprintf(stderr, "%s\n", ad_tape_error(t));
**     double dfdx = ((const double *)ad_grad(x)->data)[0];
**     ad_tape_free(t); ad_tensor_free(xv); ad_tensor_free(yv);
**
** Errors are sticky on the tape, as in cairo: an op given a bad shape, dtype or
** axis records a status and a message naming the op and its operands and returns
** an invalid var; every later op on an invalid var returns an invalid var. Check
** once with ad_tape_status() or the status that ad_backward() returns. Nothing in
** this library aborts or exits on anything a caller or a file can cause.
**
** NULL: every function accepts NULL for any pointer argument and an invalid
** var for any var, with a defined result: a failure status (AD_ERR_ARG), an
** invalid var, NULL, false, 0 or NaN (ad_rng_normal), or nothing done (the
** functions returning void). tests/test_api_edges.c calls every exported
** function so.
**
** Memory: tensors made with ad_tensor_new/ad_tensor_from belong to the caller.
** Everything an op produces lives in the tape's arena until ad_tape_reset() or
** ad_tape_free(); ad_value() and ad_grad() return pointers into it.
*/

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(AD_BUILDING_LIBRARY)
#define AD_API __declspec(dllexport)
#elif defined(__GNUC__)
#define AD_API __attribute__((visibility("default")))
#else
#define AD_API
#endif

#define AD_MAX_DIMS 8

/* Status codes: AD_OK is zero, every failure is negative. */
typedef enum ad_status {
    AD_OK = 0,
    AD_ERR_NOMEM = -1,       /* an allocation failed */
    AD_ERR_ARG = -2,         /* a NULL pointer, a bad count or option */
    AD_ERR_SHAPE = -3,       /* shapes that do not fit the op */
    AD_ERR_DTYPE = -4,       /* mixed or unsupported dtypes */
    AD_ERR_AXIS = -5,        /* an axis out of range */
    AD_ERR_INDEX = -6,       /* an index out of range */
    AD_ERR_STATE = -7,       /* a stale handle, or a call at the wrong time */
    AD_ERR_NUMERIC = -8,     /* a gradient check mismatch, a NaN or Inf */
    AD_ERR_IO = -9,          /* a read or write failed */
    AD_ERR_FORMAT = -10,     /* a malformed file */
    AD_ERR_UNSUPPORTED = -11 /* valid, but not implemented */
} ad_status;

/* A short English name for a status ("out of memory", ...); never NULL. */
AD_API const char *ad_status_str(ad_status s);

typedef enum ad_dtype { AD_F32 = 0, AD_F64 = 1 } ad_dtype;

/* Size in bytes of one element of dtype d, 0 for an unknown dtype. */
AD_API size_t ad_dtype_size(ad_dtype d);
/* "f32" or "f64" ("?" for an unknown dtype). */
AD_API const char *ad_dtype_name(ad_dtype d);

/* A dense, contiguous, row-major tensor. The fields are public and read-only
** for tensors owned by a tape. ndim 0 is a scalar (size 1); a dimension of 0
** gives an empty tensor (size 0, data may be NULL). */
typedef struct ad_tensor {
    ad_dtype dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    int64_t size;
    void *data;
    unsigned flags_;   /* private */
    uint32_t version_; /* private: bumped by every library write, see ad_tensor_version */
} ad_tensor;

/* AD_SHAPE(2, 3) expands to: 2, (const int64_t[]){2, 3} */
#define AD_NARGS_(...) AD_NARGS_I_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define AD_NARGS_I_(a1, a2, a3, a4, a5, a6, a7, a8, n, ...) n
#define AD_SHAPE(...) AD_NARGS_(__VA_ARGS__), (const int64_t[]){__VA_ARGS__}
/* The shape of a scalar: 0 dimensions. */
#define AD_SCALAR_SHAPE 0, NULL

/* A new zeroed tensor, owned by the caller (free with ad_tensor_free). NULL on a
** bad dtype, ndim or negative dimension, or when out of memory. */
AD_API ad_tensor *ad_tensor_new(ad_dtype dtype, int ndim, const int64_t *shape);
/* A new tensor holding a copy of `data` (size elements of dtype). */
AD_API ad_tensor *ad_tensor_from(ad_dtype dtype, int ndim, const int64_t *shape, const void *data);
/* A deep copy of t (any tensor, including one owned by a tape). */
AD_API ad_tensor *ad_tensor_clone(const ad_tensor *t);
/* Copies src's values into dst; shapes must have equal sizes, dtypes may differ. */
AD_API ad_status ad_tensor_copy(ad_tensor *dst, const ad_tensor *src);
/* Sets every element to v. */
AD_API void ad_tensor_fill(ad_tensor *t, double v);
/* Element i (flat, row-major) as a double; 0 when out of range. */
AD_API double ad_tensor_get(const ad_tensor *t, int64_t i);
/* Sets element i (flat, row-major); ignored when out of range. */
AD_API void ad_tensor_set(ad_tensor *t, int64_t i, double v);
/*
** Tensors given to ad_const, ad_leaf and ad_param are borrowed, not copied. Each
** tensor carries a version, bumped by every library function that writes it
** (ad_tensor_set/fill/copy, ad_rng_fill_*, the nn optimizers, nn_load, the data
** loaders); ad_backward and ad_gradients check the borrowed tensors of the graph
** against the versions they had when recorded, and a changed one is AD_ERR_STATE
** with a message naming the op that takes it and the tensor ("modified after it
** was recorded"), instead of a silently wrong gradient. Conservatively, any op
** that needs a gradient and takes the tensor counts, whether or not its VJP
** reads the value. Writing ->data directly bypasses the counter: call
** ad_tensor_bump_version afterwards (or record again).
*/
/* t's version (0 for a new tensor and for NULL). */
AD_API uint32_t ad_tensor_version(const ad_tensor *t);
/* Marks t as written (after changing ->data directly). NULL is fine. */
AD_API void ad_tensor_bump_version(ad_tensor *t);
/* Frees a tensor made by ad_tensor_new/from/clone. NULL is fine. */
AD_API void ad_tensor_free(ad_tensor *t);
/* true when a and b have the same ndim and dimensions (false when either is NULL). */
AD_API bool ad_shape_equal(const ad_tensor *a, const ad_tensor *b);
/* Writes "[2,3]" into buf (always NUL-terminated); returns buf. "[?]" for a
** NULL shape with ndim > 0 or an ndim out of 0..AD_MAX_DIMS. */
AD_API char *ad_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* ---- the allocator: one process-wide setting, made once at start ---- */

/* realloc-like: ptr NULL allocates, nsize 0 frees (and returns NULL). Must
** return NULL on failure, never abort. */
typedef void *(*ad_alloc_fn)(void *ud, void *ptr, size_t nsize);
/* Sets the allocator every allocation of the library goes through (NULL
** restores the C library's). Call before creating any object. */
AD_API void ad_set_allocator(ad_alloc_fn fn, void *ud);

/* ---- the random number generator: xoshiro256**, explicitly seeded ---- */

typedef struct ad_rng {
    uint64_t s[4];
    double spare_; /* private: cached second normal deviate */
    int has_spare_;
} ad_rng;

/* Seeds rng from one 64-bit seed (expanded with splitmix64). With a NULL rng
** the draws below give 0 (ad_rng_normal: NaN) and the fills do nothing. */
AD_API void ad_rng_seed(ad_rng *rng, uint64_t seed);
AD_API uint64_t ad_rng_u64(ad_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
AD_API double ad_rng_uniform(ad_rng *rng);
/* Standard normal (Box-Muller). */
AD_API double ad_rng_normal(ad_rng *rng);
/* Uniform integer in [0, n); 0 when n <= 0. Unbiased. */
AD_API uint64_t ad_rng_below(ad_rng *rng, uint64_t n);
/* Fills t with uniform values in [lo, hi) / normal values (mean, std). */
AD_API void ad_rng_fill_uniform(ad_rng *rng, ad_tensor *t, double lo, double hi);
AD_API void ad_rng_fill_normal(ad_rng *rng, ad_tensor *t, double mean, double std);

/* ---- the tape ---- */

typedef struct ad_tape ad_tape;

/* A handle to a value on a tape, passed by value. A var from before an
** ad_tape_reset() is stale: ops given one fail with AD_ERR_STATE. */
typedef struct ad_var {
    ad_tape *tape;
    uint32_t id;  /* node index; AD_NO_NODE for an invalid var */
    uint32_t gen; /* the tape's generation when the var was made */
} ad_var;

#define AD_NO_NODE UINT32_MAX

/* A new empty tape, NULL when out of memory. */
AD_API ad_tape *ad_tape_new(void);
/* Frees the tape and everything it owns. NULL is fine. */
AD_API void ad_tape_free(ad_tape *t);
/* Drops every node in O(1), keeps the memory for reuse, clears the error.
** Every var made before is stale afterwards. */
AD_API void ad_tape_reset(ad_tape *t);
/* The first error recorded since the last reset (AD_OK if none). */
AD_API ad_status ad_tape_status(const ad_tape *t);
/* Its message ("" if none); valid until the next reset or clear. */
AD_API const char *ad_tape_error(const ad_tape *t);
AD_API void ad_tape_clear_error(ad_tape *t);
/* With grad disabled, ops evaluate but record nothing to differentiate
** (inference). Returns the previous setting. */
AD_API bool ad_tape_set_grad_enabled(ad_tape *t, bool on);
AD_API bool ad_tape_grad_enabled(const ad_tape *t);
/* Makes the first NaN or Inf produced by an op, forward or backward, an
** AD_ERR_NUMERIC error naming the op, the node and its input shapes. */
AD_API void ad_tape_set_anomaly_detection(ad_tape *t, bool on);
/* Number of nodes recorded since the last reset. */
AD_API size_t ad_tape_node_count(const ad_tape *t);
/* Bytes the tape's arena holds (in use or kept for reuse). */
AD_API size_t ad_tape_arena_bytes(const ad_tape *t);
/* XXH3-64 of the recorded structure: for each node its op, flags (leaf, param,
** needs-gradient, backward), dtype, shape, input node ids and integer attributes
** (axes, sizes); not values (leaf data, scalar constants, index lists). Equal for
** two recordings of the same program on same-shaped data. 0 for a NULL tape. */
AD_API uint64_t ad_tape_fingerprint(const ad_tape *t);
/* Writes the recorded graph to f as Graphviz DOT (render with `dot -Tsvg`): one
** node per tape node with its op, shape and dtype; params, leaves and constants
** drawn apart; nodes recorded by a backward pass (AD_CREATE_GRAPH) dashed.
** Errors: AD_ERR_ARG for a NULL argument, AD_ERR_IO when writing fails. */
AD_API ad_status ad_tape_write_dot(const ad_tape *t, FILE *f);

/* ---- leaves and values ---- */

/* A constant: value borrowed (must outlive the tape's use of it), no gradient. */
AD_API ad_var ad_const(ad_tape *t, const ad_tensor *value);
/* A differentiable input; value borrowed; its gradient is kept on the tape
** and read with ad_grad() after ad_backward(). */
AD_API ad_var ad_leaf(ad_tape *t, const ad_tensor *value);
/* A parameter: value borrowed; ad_backward adds (+=) its gradient into `grad`,
** which must have value's shape and dtype. grad may be NULL (no accumulation). */
AD_API ad_var ad_param(ad_tape *t, ad_tensor *value, ad_tensor *grad);
/* A scalar constant (ndim 0). */
AD_API ad_var ad_scalar(ad_tape *t, ad_dtype dtype, double v);
/* A constant filled with v, shaped like the given shape. */
AD_API ad_var ad_full(ad_tape *t, ad_dtype dtype, int ndim, const int64_t *shape, double v);
/* true when v is a valid, current handle with no error on its tape's record. */
AD_API bool ad_ok(ad_var v);
/* v's value, NULL for an invalid or stale var. Owned by the tape. */
AD_API const ad_tensor *ad_value(ad_var v);
/* The gradient accumulated into a leaf or param by ad_backward, NULL if none. */
AD_API const ad_tensor *ad_grad(ad_var v);
/* true when v depends on a leaf or param with grad enabled. */
AD_API bool ad_requires_grad(ad_var v);
/* The first element of v's value as a double (NaN for an invalid var). */
AD_API double ad_item(ad_var v);

/* ---- ops ----
** Each returns a new var; on error it records the error on the tape and
** returns an invalid var. Binary elementwise ops broadcast with NumPy's rules
** and need equal dtypes. Axes may be negative (counted from the end). */

/* elementwise binary */
AD_API ad_var ad_add(ad_var a, ad_var b);
AD_API ad_var ad_sub(ad_var a, ad_var b);
AD_API ad_var ad_mul(ad_var a, ad_var b);
AD_API ad_var ad_div(ad_var a, ad_var b);
AD_API ad_var ad_pow(ad_var a, ad_var b);
AD_API ad_var ad_maximum(ad_var a, ad_var b); /* ties share the gradient equally */
AD_API ad_var ad_minimum(ad_var a, ad_var b);
AD_API ad_var ad_xlogy(ad_var x, ad_var y);   /* x * log(y), 0 where x == 0 */
/* with a scalar */
AD_API ad_var ad_add_scalar(ad_var x, double c);
AD_API ad_var ad_mul_scalar(ad_var x, double c);
AD_API ad_var ad_pow_scalar(ad_var x, double p);
/* elementwise unary */
AD_API ad_var ad_neg(ad_var x);
AD_API ad_var ad_exp(ad_var x);
AD_API ad_var ad_log(ad_var x);
AD_API ad_var ad_log1p(ad_var x);
AD_API ad_var ad_sqrt(ad_var x);
AD_API ad_var ad_square(ad_var x);
AD_API ad_var ad_abs(ad_var x);
AD_API ad_var ad_sin(ad_var x);
AD_API ad_var ad_cos(ad_var x);
AD_API ad_var ad_tanh(ad_var x);
AD_API ad_var ad_sigmoid(ad_var x);
AD_API ad_var ad_relu(ad_var x);
AD_API ad_var ad_leaky_relu(ad_var x, double slope);
AD_API ad_var ad_elu(ad_var x, double alpha);
AD_API ad_var ad_gelu(ad_var x); /* exact: x * Phi(x) */
AD_API ad_var ad_softplus(ad_var x);
AD_API ad_var ad_erf(ad_var x);
AD_API ad_var ad_erfc(ad_var x); /* 1 - erf(x), accurate where erf(x) is near 1 */
AD_API ad_var ad_clamp(ad_var x, double lo, double hi);
AD_API ad_var ad_sign(ad_var x); /* not differentiable: gradient 0 */

/* reductions */
AD_API ad_var ad_sum(ad_var x);  /* all elements, ndim 0 result */
AD_API ad_var ad_mean(ad_var x); /* NaN for an empty tensor */
AD_API ad_var ad_sum_axis(ad_var x, int axis, bool keepdim);
AD_API ad_var ad_mean_axis(ad_var x, int axis, bool keepdim);
AD_API ad_var ad_max_axis(ad_var x, int axis, bool keepdim); /* ties share the gradient */
AD_API ad_var ad_logsumexp(ad_var x, int axis, bool keepdim);
/* Sums x over its broadcast dimensions down to `shape` (the adjoint of ad_broadcast_to). */
AD_API ad_var ad_sum_to(ad_var x, int ndim, const int64_t *shape);

/* linear algebra and shape */
AD_API ad_var ad_matmul(ad_var a, ad_var b); /* [...,m,k] x [...,k,n], batch dims broadcast */
/* op(a) @ op(b) where op transposes the last two dimensions when its flag is set. */
AD_API ad_var ad_matmul_t(ad_var a, ad_var b, bool trans_a, bool trans_b);
AD_API ad_var ad_transpose(ad_var x, int ax0, int ax1);
AD_API ad_var ad_reshape(ad_var x, int ndim, const int64_t *shape); /* one -1 allowed */
AD_API ad_var ad_broadcast_to(ad_var x, int ndim, const int64_t *shape);
/* x[..., start:stop, ...] along axis; negative start/stop count from the end,
** out-of-range bounds are clamped as in Python. */
AD_API ad_var ad_slice(ad_var x, int axis, int64_t start, int64_t stop);
AD_API ad_var ad_concat(int n, const ad_var *xs, int axis);
/* Rows idx[0..n) of x along axis (indices may repeat; negative count from the end). */
AD_API ad_var ad_index_select(ad_var x, int axis, int64_t n, const int64_t *idx);
/* zeros of x's shape with dimension `axis` set to `size`, plus x's slices added at idx
** (the adjoint of ad_index_select). */
AD_API ad_var ad_index_add(ad_var x, int axis, int64_t n, const int64_t *idx, int64_t size);
/* zeros of x's shape with dimension `axis` set to `size`, x placed at [start, start+len)
** (the adjoint of ad_slice). */
AD_API ad_var ad_pad_axis(ad_var x, int axis, int64_t start, int64_t size);
AD_API ad_var ad_softmax(ad_var x, int axis);
AD_API ad_var ad_log_softmax(ad_var x, int axis);
AD_API ad_var ad_cast(ad_var x, ad_dtype dtype);
AD_API ad_var ad_detach(ad_var x);

/* ---- network primitives: convolution, pooling, masking, dropout, normalization ----
** (ops_conv.c, ops_nn.c) Images are NCHW, convolution weights OIHW, as in PyTorch.
** Optional var arguments (gamma, beta) are omitted by passing AD_NO_VAR. */

#define AD_NO_VAR ((ad_var){NULL, AD_NO_NODE, 0})

typedef struct ad_conv2d_params {
    int64_t stride_h, stride_w;     /* >= 1 */
    int64_t pad_h, pad_w;           /* zeros added on both sides, >= 0 */
    int64_t dilation_h, dilation_w; /* >= 1 */
    int64_t groups;                 /* >= 1; divides C and O */
} ad_conv2d_params;

/* 2-D cross-correlation without bias (PyTorch's conv2d): x [N, C, H, W], w [O, C/groups, kh, kw]
** -> [N, O, OH, OW], OH = (H + 2 pad_h - dilation_h (kh - 1) - 1) / stride_h + 1 (likewise OW).
** Errors: AD_ERR_ARG for bad parameters, AD_ERR_SHAPE/AD_ERR_DTYPE for operands that do not fit.
** F32 3x3 and 5x5 convolutions with stride and dilation 1 and 16 channels or more on each side
** (per group) run by Winograd's minimal filtering, forward and both adjoints: their results
** differ from the direct sum's by rounding (a few units in the 6th digit of the largest output
** for 5x5; docs/performance.md has the figures); infinities and NaNs come out as the direct sum
** gives them. F64 always sums directly. Results are the same bits at any thread count. */
AD_API ad_var ad_conv2d_ex(ad_var x, ad_var w, const ad_conv2d_params *p);
/* The same with equal height and width parameters. */
AD_API ad_var ad_conv2d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t dilation, int64_t groups);

typedef struct ad_pool2d_params {
    int64_t kernel_h, kernel_w; /* >= 1 */
    int64_t stride_h, stride_w; /* >= 1; 0 means the kernel size */
    int64_t pad_h, pad_w;       /* 0 <= pad <= kernel / 2 */
} ad_pool2d_params;

/* Max over each window of x [N, C, H, W] (padding never wins); the gradient goes to each window's
** first maximum. Errors as ad_conv2d. */
AD_API ad_var ad_max_pool2d_ex(ad_var x, const ad_pool2d_params *p);
AD_API ad_var ad_max_pool2d(ad_var x, int64_t kernel, int64_t stride, int64_t padding);
/* Mean over each window, zero padding counted in the divisor kh kw (PyTorch's default). */
AD_API ad_var ad_avg_pool2d_ex(ad_var x, const ad_pool2d_params *p);
AD_API ad_var ad_avg_pool2d(ad_var x, int64_t kernel, int64_t stride, int64_t padding);

/* cond != 0 ? a : b elementwise, the three broadcast together. cond is a mask of any dtype and
** gets no gradient; a and b need equal dtypes. */
AD_API ad_var ad_where(ad_var cond, ad_var a, ad_var b);
/* where(mask, value, x): x with `value` wherever mask is nonzero. */
AD_API ad_var ad_masked_fill(ad_var x, ad_var mask, double value);
/* Inverted dropout: when training, each element is zeroed with probability p (drawn from rng)
** and the others scaled by 1 / (1 - p); the mask is a constant on the tape. Not training, or
** p == 0: returns x itself (rng may then be NULL). Errors: p outside [0, 1], rng NULL. */
AD_API ad_var ad_dropout(ad_var x, double p, bool training, ad_rng *rng);
/* Batch normalization of x [N, C, ...] over N and the trailing axes, per channel:
** y = (x - mean) / sqrt(var + eps) * gamma + beta (biased var; gamma, beta [C] or AD_NO_VAR).
** Training: batch statistics, and running_mean/var (caller's [C] tensors, may be NULL) become
** (1 - momentum) running + momentum batch, with the unbiased variance. Eval: the running
** statistics, which must then be given. */
AD_API ad_var ad_batch_norm(ad_var x, ad_var gamma, ad_var beta, ad_tensor *running_mean, ad_tensor *running_var,
                            bool training, double momentum, double eps);
/* Layer normalization over the last naxes axes of x; gamma and beta (or AD_NO_VAR) are shaped
** like those axes. */
AD_API ad_var ad_layer_norm(ad_var x, ad_var gamma, ad_var beta, int naxes, double eps);
/* Rows idx[0..n) of weight [V, D]: [n, D]; a differentiable lookup (repeated rows sum their
** gradients). Errors: AD_ERR_INDEX for an index outside [0, V). */
AD_API ad_var ad_embedding(ad_var weight, int64_t n, const int64_t *idx);
/* x with axes start_axis..end_axis (inclusive; negative count from the end) merged into one. */
AD_API ad_var ad_flatten(ad_var x, int start_axis, int end_axis);

/* ---- differentiation ---- */

enum {
    AD_CREATE_GRAPH = 1u << 0, /* record the backward pass so gradients are differentiable */
    /* ad_backward without AD_CREATE_GRAPH: each gradient reaching a param that has a grad
    ** tensor is added straight into that tensor, as torch's .grad is, and no copy of the
    ** param's gradient is kept on the tape (ad_grad() returns NULL for it). Saves a pass
    ** over every parameter gradient; training loops should pass it. */
    AD_ACCUMULATE = 1u << 1
};

/* One reverse sweep from y. seed: dL/dy, y's shape and dtype; NULL means 1 and
** needs y to have one element. Leaves get their gradient (ad_grad), params have
** it added into their grad tensor. Returns the tape's status on an earlier error.
** A second ad_backward on the same graph adds the gradients again, as PyTorch does
** with retain_graph: leaf gradients and param grad tensors hold twice the value
** (zero the grad tensors, or reset the tape and record again, between steps).
** Before sweeping it checks the versions of the caller's tensors the graph
** borrows (see ad_tensor_version): a changed one is AD_ERR_STATE. The seed is
** read during the call and never written; without AD_CREATE_GRAPH it is read in
** place (no gradient the call leaves behind points into it), with it it is
** copied (the recorded gradients depend on it). */
AD_API ad_status ad_backward(ad_var y, const ad_tensor *seed, unsigned flags);
/* Gradients of y (one element) with respect to xs, as vars in grads_out (zeros
** for an x that y does not depend on). Touches no leaf or param gradient. */
AD_API ad_status ad_gradients(ad_var y, int n, const ad_var *xs, ad_var *grads_out, unsigned flags);
/* As ad_gradients, with an explicit seed var (y's shape and dtype; may itself
** depend on leaves when flags has AD_CREATE_GRAPH). */
AD_API ad_status ad_gradients_seed(ad_var y, ad_var seed, int n, const ad_var *xs, ad_var *grads_out,
                                   unsigned flags);

/* ---- forward mode ---- */

/* Tangents of ys in the directions vs of xs (vs[i] shaped and typed like xs[i]):
** out[j] = sum_i dys[j]/dxs[i] vs[i], by one sweep forward over the tape from the
** first x to the last y, each op's tangent rule recorded with engine ops. So the
** tangents are vars: differentiable again (reverse over forward), and a sweep
** over a gradient recorded with AD_CREATE_GRAPH gives Hessian-vector products
** (forward over reverse). An xs[i] that is not a leaf is taken as independent;
** one listed twice gets the sum of its vs.
** out[j] is zeros for a y that no x reaches. Errors: AD_ERR_ARG (NULL arrays,
** n or m < 1, vars of another tape), AD_ERR_SHAPE/DTYPE (a v unlike its x). */
AD_API ad_status ad_tangents(int n, const ad_var *xs, const ad_var *vs, int m, const ad_var *ys, ad_var *out);

/* ---- replay: re-evaluating a recorded tape on new values ---- */

/* Recomputes, in place, every node recorded before the tape's first backward
** pass or tangent sweep since the last reset (the nodes such passes added are
** dropped), after giving leaves[i] (ad_leaf, ad_param or ad_const nodes) the
** values values[i] (same dtype and shape as recorded; borrowed, like ad_leaf's,
** until the next replay or reset). Params read their value tensors again, so a
** parameter updated in place needs no entry. Vars, ad_tape_fingerprint and the
** tape's memory stay as they are; after warm-up a replay allocates nothing.
** The tape is then ready for ad_backward. Value-dependent ops (relu, maximum,
** minimum, clamp, abs, max_axis, max pooling, where) choose again by the new
** values; constants, dropout masks, index lists stay as recorded. Control flow
** of the caller's program is not seen: record each decision on values with
** ad_branch. Errors: AD_ERR_ARG / SHAPE / DTYPE (a bad leaf or value), the
** tape's sticky error, or AD_ERR_STATE when a recorded ad_branch comes out
** differently ("replay diverged at node N: ..."): record the tape again. */
AD_API ad_status ad_tape_replay(ad_tape *t, int n, const ad_var *leaves, const ad_tensor *const *values);

typedef enum ad_cmp { AD_CMP_LT, AD_CMP_LE, AD_CMP_GT, AD_CMP_GE, AD_CMP_EQ, AD_CMP_NE } ad_cmp;
/* a <cmp> b for two one-element vars, recorded on the tape so that
** ad_tape_replay checks it comes out the same. Returns the comparison (false
** on an error, which is recorded: AD_ERR_SHAPE when an operand has other than
** one element, AD_ERR_ARG for an unknown cmp). */
AD_API bool ad_branch(ad_var a, ad_cmp cmp, ad_var b);

/* ---- functions of tensors ---- */

/* f builds its output on tape t from the vars `inputs` (leaves made from the
** tensors being checked) and returns it. */
typedef ad_var (*ad_fn)(ad_tape *t, const ad_var *inputs, void *ctx);

typedef struct ad_check_opts {
    double eps;     /* finite-difference step, default 1e-6 */
    double atol;    /* default 1e-5 */
    double rtol;    /* default 1e-3 */
    bool fast_mode; /* compare v^T J u for random u, v instead of every element */
    uint64_t seed;  /* for fast mode's u and v */
} ad_check_opts;

/* The defaults above. */
AD_API ad_check_opts ad_check_defaults(void);

typedef struct ad_check_report {
    ad_status status;    /* AD_OK, AD_ERR_NUMERIC on a mismatch, or the error met */
    int input;           /* which input (-1 when not applicable) */
    int64_t element;     /* flat index into that input (-1 in fast mode) */
    int64_t output;      /* flat index into the output (-1 in fast mode) */
    double analytic;     /* the worst mismatch; on a pass, the comparison closest to the tolerance */
    double numeric;
    double abs_err;
    double rel_err;
    int64_t checked;     /* how many elements (or products) were compared */
    int order;           /* 1 for gradcheck, 2 for gradgradcheck */
    char message[256];   /* set on an error other than a mismatch */
    /* A pass says nothing about an input the output does not depend on: the first
    ** input (-1: none) whose analytic and numeric derivatives were all exactly 0,
    ** and how many such inputs there were. ad_check_report_print warns about them. */
    int independent_input;
    int independent_count;
} ad_check_report;

/* Checks f's reverse-mode derivative against central differences, as PyTorch
** does: pass when |analytic - numeric| <= atol + rtol * |numeric| everywhere.
** Inputs must be AD_F64 (AD_ERR_DTYPE otherwise). Prints nothing; rep may be NULL. */
AD_API ad_status ad_gradcheck(ad_fn f, void *ctx, int n, const ad_tensor *const *inputs,
                              const ad_check_opts *opts, ad_check_report *rep);
/* The same for second derivatives: checks the derivative of v . df/dx. */
AD_API ad_status ad_gradgradcheck(ad_fn f, void *ctx, int n, const ad_tensor *const *inputs,
                                  const ad_check_opts *opts, ad_check_report *rep);
/* Writes a one-paragraph account of rep to f. */
AD_API void ad_check_report_print(const ad_check_report *rep, FILE *f);

/*
** Derivatives of a whole function y = f(x) of one tensor x (F32 or F64, any
** shape, n elements; f gets one input). Each records f on a private tape and
** writes into `out`, which the caller owns and which must have x's dtype
** (values are converted if f's output has another). v, where taken, has x's
** shape and dtype. They print nothing and free everything. Errors: AD_ERR_ARG
** (NULL f, x, v or out), AD_ERR_DTYPE (x not F32/F64, out or v of another dtype
** than x), AD_ERR_SHAPE (out or v of the wrong shape, or f not scalar-valued
** where it must be), AD_ERR_STATE (f returned an invalid var or one of another
** tape), or whatever error f or the backward pass recorded on the tape.
*/
/* The Jacobian dy/dx: out [m, n] for y of m elements (one reverse sweep per row). */
AD_API ad_status ad_jacobian(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out);
/* The Hessian of a one-element f: out [n, n], symmetric to rounding (reverse over reverse). */
AD_API ad_status ad_hessian(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out);
/* H v for a one-element f without forming H: forward over reverse (the gradient
** recorded with AD_CREATE_GRAPH, then one tangent sweep through it in direction
** v); out shaped like x. */
AD_API ad_status ad_hvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out);
/* J v by one forward tangent sweep (ad_tangents); out shaped like f's output. */
AD_API ad_status ad_jvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out);
/* The Jacobian dy/dx by columns: out [m, n] as ad_jacobian's, one tangent sweep
** per element of x (the cheaper choice when x has fewer elements than y). */
AD_API ad_status ad_jacfwd(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out);

/* ---- threads ---- */

/* Threads the engine's own kernels and the BLAS backend may use (1 default). */
AD_API void ad_set_num_threads(int n);
AD_API int ad_get_num_threads(void);

/* ---- files: .npy reading and writing ---- */
#include "ad_io.h"
/* ---- extending the engine: custom ops, checkpoints, functions of n tensors ---- */
#include "ad_custom.h"

/* ---- attention, transposed and 1-D convolution, group normalization ---- */
#include "ad_layers.h"

#ifdef __cplusplus
}
#endif

#endif

/* test_ops.h: helpers and per-op entries shared by the files of the op-table test (test_ops executable). */
#ifndef AUTODIFF_TEST_OPS_H
#define AUTODIFF_TEST_OPS_H

#include "backward.h"
#include "test_util.h"

/* Asserts y is a valid var whose node is `op`; marks the running entry as having built its op. */
void expect_op(ad_var y, ad_op op);

/* A shape as a value. */
typedef struct shp {
    int nd;
    int64_t d[AD_MAX_DIMS];
} shp;
#define SH(...) ((shp){AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}})
#define SCALAR ((shp){0, {0}})

/* A new F64 input, uniform in [lo, hi) (away: magnitudes in [lo, hi), random signs); a fresh seed each call. */
ad_tensor *input(shp s, double lo, double hi, bool away);
/* Flat index into `in` of element `flat` of a tensor shaped (nd, d), NumPy broadcasting. */
int64_t bcast_index(const ad_tensor *in, int nd, const int64_t *d, int64_t flat);

/* ad_gradcheck and then ad_gradgradcheck (slow mode, defaults) must pass; the report goes into the failure message. */
void gc_n(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in);
/* ad_gradgradcheck (slow mode, defaults) must pass: the VJP recorded with AD_CREATE_GRAPH is right. */
void gg_n(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in);
/* The same over fresh inputs of shapes s[0..n) in [lo, hi). */
void gc_shapes(const char *what, ad_fn f, void *ctx, int n, const shp *s, double lo, double hi, bool away);

/* A tape that owns the tensors given to rig_leaf / rig_const. */
typedef struct rig {
    ad_tape *t;
    ad_tensor *keep[16];
    int nkeep;
} rig;
rig rig_new(void);
ad_var rig_leaf(rig *r, ad_tensor *v);
ad_var rig_const(rig *r, ad_tensor *v);
void rig_free(rig *r);

/* Values and leaf gradients of build(x, p) summed, at points xs, against want / dwant. */
void point_values(ad_var (*build)(ad_var, const double *), const double *p, ad_dtype dt, int n, const double *xs,
                  const double *want, const double *dwant);
/* F32 and F64 runs of f on the same inputs (rounded to f32) agree to float precision. */
void f32_agrees(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in64, double tol);

/* Per-op entries, by family file. */
/* clang-format off */
#define ENTRIES_ELEMENTWISE(X)                                                                           \
    X(add) X(sub) X(mul) X(div) X(pow) X(maximum) X(minimum) X(xlogy) X(add_scalar) X(mul_scalar)        \
    X(pow_scalar) X(neg) X(exp) X(log) X(log1p) X(sqrt) X(square) X(abs) X(sin) X(cos) X(tanh)            \
    X(sigmoid) X(relu) X(leaky_relu) X(elu) X(gelu) X(softplus) X(erf) X(clamp)
#define ENTRIES_TENSOR(X)                                                                                \
    X(sum) X(mean) X(sum_axis) X(mean_axis) X(max_axis) X(logsumexp) X(sum_to) X(softmax) X(log_softmax)  \
    X(matmul) X(transpose) X(reshape) X(broadcast_to) X(slice) X(pad_axis) X(concat) X(index_select)     \
    X(index_add) X(cast)
/* clang-format on */
#define DECLARE_ENTRY(name) void t_##name(void);
ENTRIES_ELEMENTWISE(DECLARE_ENTRY)
ENTRIES_TENSOR(DECLARE_ENTRY)
#undef DECLARE_ENTRY

#endif

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

/* The op whose entry is running. */
ad_op op_under_test(void);

/* The op-table entries: t_elementwise (test_ops_elementwise.c) for every op with an elementwise test
** row in ops.def, and a hand-written t_<name> for every CUSTOM one (test_ops*.c). */
void t_elementwise(void);
#define UNARY(...) ENTRY_GENERATED
#define BINARY(...) ENTRY_GENERATED
#define CUSTOM ENTRY_DECLARE
#define ENTRY_GENERATED(name)
#define ENTRY_DECLARE(name) void t_##name(void);
#define AD_OP(ID, name, nin, family, grad, fast, ...) AD_TEST_ROW(__VA_ARGS__)(name)
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
#undef ENTRY_GENERATED
#undef ENTRY_DECLARE

#endif

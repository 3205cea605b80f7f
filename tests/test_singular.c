/* test_singular.c: every elementwise and reduction op at its singular and boundary points (0, +-Inf, NaN,
** ties, the largest floats, F32 overflow edges, empty axes): values, first and second derivatives. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backward.h"
#include "test_util.h"

/*
** The expected numbers are the mathematical values and limits (docs/reliability.md,
** "Derivatives at singular points", gives the conventions and where PyTorch differs);
** where an op has no limit (a kink, a pole from both sides) the row holds the
** convention chosen. Each unary row is run through the recorded VJP twice
** (AD_CREATE_GRAPH: the second derivative) and through the fast sweep (the first),
** so the fast VJPs are held to the same points, and replayed (the scalar program's forward
** and reverse sweep, replay.c and backward.c) from a recording made elsewhere. The
** completeness test fails for an op of the unary, binary or reduce families without a row,
** and wants a written reason for every other op.
*/

/* rows leave trailing fields (a point's f32 flag, a row's other arity) to their zero default */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define SKIP 1e300 /* "not checked" in a row (no op here produces 1e300 at these points) */
#define PI_2 1.12837916709551257390 /* 2 / sqrt(pi) */
#define INF INFINITY
#define LN2 0.69314718055994530942

static double Phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double phi(double x) { return exp(-0.5 * x * x) / 2.50662827463100050242 /* sqrt(2 pi) */; }

/* ---- the rows ---- */

typedef ad_var (*un_fn)(ad_var x);
typedef ad_var (*bin_fn)(ad_var a, ad_var b);

typedef struct upt {
    double x, y, g, h; /* input, value, first and second derivative */
    bool f32;          /* run in F32 (the expected numbers rounded to F32) instead of F64 */
} upt;
typedef struct bpt {
    double a, b, y, ga, gb;
} bpt;

#define MAXPT 16
typedef struct row {
    ad_op op;
    un_fn u;
    bin_fn b;
    upt up[MAXPT];
    bpt bp[MAXPT];
} row;

static ad_var f_add_scalar(ad_var x) { return ad_add_scalar(x, 2.0); }
static ad_var f_mul_scalar(ad_var x) { return ad_mul_scalar(x, -3.0); }
static ad_var f_pow0(ad_var x) { return ad_pow_scalar(x, 0.0); }
static ad_var f_lrelu(ad_var x) { return ad_leaky_relu(x, 0.01); }
static ad_var f_elu(ad_var x) { return ad_elu(x, 1.0); }
static ad_var f_clamp(ad_var x) { return ad_clamp(x, -1.0, 1.0); }

/* Rows are filled in at run time where the expected numbers need libm (init_rows). */
static row rows[AD_OP_COUNT];

static void init_rows(void)
{
    static bool done;
    if (done) return;
    done = true;
    double e30 = exp(-30.0), g10 = Phi(-10.0) - 10.0 * phi(-10.0);
#define R(ID) rows[AD_OP_##ID] = (row)
    R(ADD){AD_OP_ADD, NULL, ad_add, {{0}}, {{INF, -INF, NAN, 1, 1}, {NAN, 1, NAN, 1, 1}, {DBL_MAX, DBL_MAX, INF, 1, 1}}};
    R(SUB){AD_OP_SUB, NULL, ad_sub, {{0}}, {{INF, INF, NAN, 1, -1}, {-DBL_MAX, DBL_MAX, -INF, 1, -1}}};
    R(MUL){AD_OP_MUL, NULL, ad_mul, {{0}}, {{0, INF, NAN, INF, 0}, {DBL_MAX, 2, INF, 2, DBL_MAX}, {-0.0, 3, -0.0, 3, -0.0}}};
    R(DIV){AD_OP_DIV, NULL, ad_div, {{0}}, {{1, 0, INF, INF, -INF}, {0, 0, NAN, INF, NAN}, {1, INF, 0, 0, -0.0}, {DBL_MAX, 0.5, INF, 2, -INF}}};
    /* pow at 0^0: y = 1, both derivatives 0 (a^0 is constant; PyTorch's convention for db) */
    R(POW){AD_OP_POW, NULL, ad_pow, {{0}},
           {{0, 0, 1, 0, 0}, {0, 2, 0, 0, 0}, {2, 0, 1, 0, LN2}, {0, -1, INF, -INF, -INF}, {-2, 0.5, NAN, NAN, NAN},
            {0, INF, 0, NAN, 0}, {INF, 0, 1, 0, SKIP}, {1, INF, 1, INF, 0}}};
    /* ties share the gradient; a NaN operand is the output and takes the gradient (a when both are) */
    R(MAXIMUM){AD_OP_MAXIMUM, NULL, ad_maximum, {{0}},
               {{1, 1, 1, 0.5, 0.5}, {INF, INF, INF, 0.5, 0.5}, {-INF, 0, 0, 0, 1}, {1, NAN, NAN, 0, 1},
                {NAN, 1, NAN, 1, 0}, {NAN, NAN, NAN, 1, 0}}};
    R(MINIMUM){AD_OP_MINIMUM, NULL, ad_minimum, {{0}},
               {{1, 1, 1, 0.5, 0.5}, {-INF, -INF, -INF, 0.5, 0.5}, {-INF, 0, -INF, 1, 0}, {1, NAN, NAN, 0, 1},
                {NAN, 1, NAN, 1, 0}, {NAN, NAN, NAN, 1, 0}}};
    /* xlogy is linear in x: d/dx = log z at x = 0 too; 0 at x = 0, z <= 0 (PyTorch) */
    R(XLOGY){AD_OP_XLOGY, NULL, ad_xlogy, {{0}},
             {{0, 2, 0, LN2, 0}, {0, 0, 0, 0, NAN}, {1, 0, -INF, -INF, INF}, {0, NAN, NAN, NAN, NAN},
              {0, INF, 0, INF, 0}, {0, -1, 0, 0, -0.0}, {2, INF, INF, INF, 0}}};
    R(ADD_SCALAR){AD_OP_ADD_SCALAR, f_add_scalar, NULL, {{INF, INF, 1, 0}, {NAN, NAN, 1, 0}, {DBL_MAX, DBL_MAX, 1, 0}}};
    R(MUL_SCALAR){AD_OP_MUL_SCALAR, f_mul_scalar, NULL, {{INF, -INF, -3, 0}, {DBL_MAX, -INF, -3, 0}, {0, -0.0, -3, 0}}};
    /* x^0 = 1 everywhere (0^0 included): derivative 0 */
    R(POW_SCALAR){AD_OP_POW_SCALAR, f_pow0, NULL, {{0, 1, 0, 0}, {INF, 1, 0, 0}, {-1, 1, 0, 0}}};
    R(NEG){AD_OP_NEG, ad_neg, NULL, {{0, -0.0, -1, 0}, {INF, -INF, -1, 0}, {NAN, NAN, -1, 0}}};
    R(EXP){AD_OP_EXP, ad_exp, NULL,
           {{0, 1, 1, 1}, {-INF, 0, 0, 0}, {INF, INF, INF, INF}, {710, INF, INF, INF}, {-750, 0, 0, 0},
            {89, INF, INF, INF, true}, {88, exp(88.0), exp(88.0), exp(88.0), true}}};
    R(LOG){AD_OP_LOG, ad_log, NULL, {{0, -INF, INF, -INF}, {INF, INF, 0, -0.0}, {-1, NAN, -1, -1}, {DBL_MAX, log(DBL_MAX), 1 / DBL_MAX, -0.0}}};
    R(LOG1P){AD_OP_LOG1P, ad_log1p, NULL, {{-1, -INF, INF, -INF}, {INF, INF, 0, -0.0}, {0, 0, 1, -1}}};
    R(SQRT){AD_OP_SQRT, ad_sqrt, NULL, {{0, 0, INF, -INF}, {INF, INF, 0, -0.0}, {-1, NAN, NAN, NAN}}};
    R(SQUARE){AD_OP_SQUARE, ad_square, NULL, {{0, 0, 0, 2}, {INF, INF, INF, 2}, {DBL_MAX, INF, INF, 2}, {-INF, INF, -INF, 2}}};
    /* abs at 0: 0 (the subgradient PyTorch uses) */
    R(ABS){AD_OP_ABS, ad_abs, NULL, {{0, 0, 0, 0}, {-0.0, 0, 0, 0}, {-INF, INF, -1, 0}, {NAN, NAN, NAN, SKIP}}};
    R(SIN){AD_OP_SIN, ad_sin, NULL, {{0, 0, 1, -0.0}, {INF, NAN, NAN, NAN}}};
    R(COS){AD_OP_COS, ad_cos, NULL, {{0, 1, -0.0, -1}, {-INF, NAN, NAN, NAN}}};
    R(TANH){AD_OP_TANH, ad_tanh, NULL,
            {{0, 0, 1, 0}, {INF, 1, 0, 0}, {-INF, -1, 0, 0}, {DBL_MAX, 1, 0, 0}, {20, 1, 0, 0, true}}};
    R(SIGMOID){AD_OP_SIGMOID, ad_sigmoid, NULL,
               {{0, 0.5, 0.25, 0}, {INF, 1, 0, 0}, {-INF, 0, 0, 0}, {-1000, 0, 0, 0}, {-DBL_MAX, 0, 0, 0},
                {-104, 0, 0, 0, true}, {90, 1, 0, 0, true}}};
    /* relu's kink: 0 (PyTorch) */
    R(RELU){AD_OP_RELU, ad_relu, NULL, {{0, 0, 0, 0}, {INF, INF, 1, 0}, {-INF, 0, 0, 0}, {-0.0, 0, 0, 0}}};
    R(LEAKY_RELU){AD_OP_LEAKY_RELU, f_lrelu, NULL, {{0, 0, 0.01, 0}, {INF, INF, 1, 0}, {-INF, -INF, 0.01, 0}}};
    /* elu's kink: the left branch (first derivative alpha, second alpha), as the first derivative's
    ** convention; the tail without cancellation, +Inf without 0 * Inf */
    R(ELU){AD_OP_ELU, f_elu, NULL,
           {{0, 0, 1, 1}, {INF, INF, 1, 0}, {-INF, -1, 0, 0}, {-30, expm1(-30.0), e30, e30},
            {-20, expm1(-20.0), exp(-20.0), exp(-20.0), true}, {DBL_MAX, DBL_MAX, 1, 0}}};
    R(GELU){AD_OP_GELU, ad_gelu, NULL,
            {{0, 0, 0.5, 2 * phi(0)}, {INF, INF, 1, 0}, {-INF, -0.0, 0, 0}, {-10, -10 * Phi(-10), g10, phi(-10) * (2 - 100)},
             {DBL_MAX, DBL_MAX, 1, 0}, {-DBL_MAX, -0.0, 0, 0}, {-INF, -0.0, 0, 0, true}, {INF, INF, 1, 0, true}}};
    R(SOFTPLUS){AD_OP_SOFTPLUS, ad_softplus, NULL,
                {{0, LN2, 0.5, 0.25}, {INF, INF, 1, 0}, {-INF, 0, 0, 0}, {1000, 1000, 1, 0}, {-1000, 0, 0, 0},
                 {100, 100, 1, 0, true}, {-104, 0, 0, 0, true}}};
    R(ERF){AD_OP_ERF, ad_erf, NULL, {{0, 0, PI_2, -0.0}, {INF, 1, 0, 0}, {-INF, -1, 0, 0}, {DBL_MAX, 1, 0, 0}, {INF, 1, 0, 0, true}, {FLT_MAX, 1, 0, 0, true}}};
    R(ERFC){AD_OP_ERFC, ad_erfc, NULL,
            {{0, 1, -PI_2, 0}, {INF, 0, 0, 0}, {-INF, 2, 0, 0}, {10, erfc(10.0), -PI_2 * exp(-100.0), 20 * PI_2 * exp(-100.0)}}};
    /* clamp's bounds are inclusive (gradient 1 there, as PyTorch) */
    R(CLAMP){AD_OP_CLAMP, f_clamp, NULL, {{-1, -1, 1, 0}, {1, 1, 1, 0}, {INF, 1, 0, 0}, {-INF, -1, 0, 0}}};
#undef R
}

/* Ops without singular-point rows, each with its reason. */
static const char *const exempt[AD_OP_COUNT] = {
    [AD_OP_CONST] = "a leaf", [AD_OP_LEAF] = "a leaf", [AD_OP_PARAM] = "a leaf",
    [AD_OP_SIGN] = "a mask: no gradient (test_ops); through a leaf: test_api_edges",
    [AD_OP_STEP] = "a mask: no gradient", [AD_OP_INRANGE] = "a mask: no gradient",
    [AD_OP_CMP_GT] = "a mask: no gradient", [AD_OP_EQ] = "a mask: no gradient",
};

/* ---- running a row ---- */

static void check_num(const char *what, double got, double want, bool f32)
{
    if (want == SKIP) return;
    double rt = f32 ? 2e-6 : 1e-12;
    ck_assert_msg(tu_close(got, want, f32 ? 1e-37 : 1e-300, rt), "%s: got %.17g, want %.17g", what, got, want);
}

static void run_unary(const row *r, const upt *p)
{
    const char *name = ad__ops[r->op].name;
    ad_dtype dt = p->f32 ? AD_F32 : AD_F64;
    char what[160];
    for (int fast = 0; fast < 2; fast++) {
        ad_tape *t = ad_tape_new();
        ad_tensor *xv = ad_tensor_new(dt, 0, NULL);
        ck_assert_ptr_nonnull(t);
        ck_assert_ptr_nonnull(xv);
        ad_tensor_set(xv, 0, p->x);
        ad_var x = ad_leaf(t, xv), y = r->u(x), g, h;
        ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
        ck_assert_int_eq(ad__node(t, y.id)->op, r->op);
        snprintf(what, sizeof what, "%s(%g) %s value", name, p->x, ad_dtype_name(dt));
        check_num(what, ad_item(y), p->y, p->f32);
        ck_assert_msg(ad_gradients(y, 1, &x, &g, fast ? 0 : AD_CREATE_GRAPH) == AD_OK, "%s", ad_tape_error(t));
        snprintf(what, sizeof what, "%s'(%g) %s (%s)", name, p->x, ad_dtype_name(dt), fast ? "fast" : "recorded");
        check_num(what, ad_item(g), p->g, p->f32);
        if (!fast) {
            ck_assert_msg(ad_gradients(g, 1, &x, &h, 0) == AD_OK, "%s", ad_tape_error(t));
            snprintf(what, sizeof what, "%s''(%g) %s", name, p->x, ad_dtype_name(dt));
            check_num(what, ad_item(h), p->h, p->f32);
        }
        ad_tape_free(t);
        ad_tensor_free(xv);
    }
}

/* The tangent rule (ad_tangents, direction 1) at the point gives the first derivative, and the tangent's own
** gradient (reverse over forward) the second: forward mode is held to the same limits and conventions. */
static void run_unary_tangent(const row *r, const upt *p)
{
    const char *name = ad__ops[r->op].name;
    ad_dtype dt = p->f32 ? AD_F32 : AD_F64;
    char what[160];
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = ad_tensor_new(dt, 0, NULL), *vv = ad_tensor_new(dt, 0, NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(xv);
    ck_assert_ptr_nonnull(vv);
    ad_tensor_set(xv, 0, p->x);
    ad_tensor_set(vv, 0, 1.0);
    ad_var x = ad_leaf(t, xv), v = ad_const(t, vv), y = r->u(x), ty, h;
    ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
    ck_assert_msg(ad_tangents(1, &x, &v, 1, &y, &ty) == AD_OK, "%s", ad_tape_error(t));
    snprintf(what, sizeof what, "%s'(%g) %s (tangent)", name, p->x, ad_dtype_name(dt));
    check_num(what, ad_item(ty), p->g, p->f32);
    ck_assert_msg(ad_gradients(ty, 1, &x, &h, 0) == AD_OK, "%s", ad_tape_error(t));
    snprintf(what, sizeof what, "%s''(%g) %s (reverse over the tangent)", name, p->x, ad_dtype_name(dt));
    check_num(what, ad_item(h), p->h, p->f32);
    ad_tape_free(t);
    ad_tensor_free(xv);
    ad_tensor_free(vv);
}

/* The tangents in the directions (1, 0) and (0, 1) give the two partial derivatives. */
static void run_binary_tangent(const row *r, const bpt *p)
{
    const char *name = ad__ops[r->op].name;
    char what[160];
    for (int k = 0; k < 2; k++) {
        ad_tape *t = ad_tape_new();
        double one = 1.0, zero = 0.0;
        ad_tensor *av = tu_f64(0, NULL, &p->a), *bv = tu_f64(0, NULL, &p->b);
        ad_tensor *v1 = tu_f64(0, NULL, &one), *v0 = tu_f64(0, NULL, &zero);
        ad_var xs[2] = {ad_leaf(t, av), ad_leaf(t, bv)};
        ad_var vs[2] = {ad_const(t, k ? v0 : v1), ad_const(t, k ? v1 : v0)}, ty;
        ad_var y = r->b(xs[0], xs[1]);
        ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
        ck_assert_msg(ad_tangents(2, xs, vs, 1, &y, &ty) == AD_OK, "%s", ad_tape_error(t));
        snprintf(what, sizeof what, "d%s/d%c at (%g, %g) (tangent)", name, k ? 'b' : 'a', p->a, p->b);
        /* where the other partial is not finite, its term (0 times it) is NaN in IEEE arithmetic, or 0 by an
        ** op's convention (xlogy: a zero tangent or gradient for x gives 0): not checked there */
        double other = k ? p->ga : p->gb, want = isfinite(other) && other != SKIP ? (k ? p->gb : p->ga) : SKIP;
        check_num(what, ad_item(ty), want, false);
        ad_tape_free(t);
        ad_tensor_free(av);
        ad_tensor_free(bv);
        ad_tensor_free(v1);
        ad_tensor_free(v0);
    }
}

static void run_binary(const row *r, const bpt *p)
{
    const char *name = ad__ops[r->op].name;
    char what[160];
    for (int fast = 0; fast < 2; fast++) {
        ad_tape *t = ad_tape_new();
        ad_tensor *av = tu_f64(0, NULL, &p->a), *bv = tu_f64(0, NULL, &p->b);
        ad_var xs[2] = {ad_leaf(t, av), ad_leaf(t, bv)}, g[2];
        ad_var y = r->b(xs[0], xs[1]);
        ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
        ck_assert_int_eq(ad__node(t, y.id)->op, r->op);
        snprintf(what, sizeof what, "%s(%g, %g) value", name, p->a, p->b);
        check_num(what, ad_item(y), p->y, false);
        ck_assert_msg(ad_gradients(y, 2, xs, g, fast ? 0 : AD_CREATE_GRAPH) == AD_OK, "%s", ad_tape_error(t));
        snprintf(what, sizeof what, "d%s/da at (%g, %g) (%s)", name, p->a, p->b, fast ? "fast" : "recorded");
        check_num(what, ad_item(g[0]), p->ga, false);
        snprintf(what, sizeof what, "d%s/db at (%g, %g) (%s)", name, p->a, p->b, fast ? "fast" : "recorded");
        check_num(what, ad_item(g[1]), p->gb, false);
        ad_tape_free(t);
        ad_tensor_free(av);
        ad_tensor_free(bv);
    }
}

/* A replay at the point of a recording made at 0.5 (the value and the first derivative): one F64
** scalar is replay's scalar program (replay.c), both ways when the op has a fast VJP (the
** program's reverse sweep, backward.c): the leaf's storage kept (its value set in place, a replay
** of n = 0) and a param with its grad accumulated (AD_ACCUMULATE). F32 takes the general loop. */
static void run_unary_replayed(const row *r, const upt *p)
{
    const char *name = ad__ops[r->op].name;
    ad_dtype dt = p->f32 ? AD_F32 : AD_F64;
    char what[160];
    for (int acc = 0; acc < 2; acc++) {
        ad_tape *t = ad_tape_new();
        ad_tensor *xv = ad_tensor_new(dt, 0, NULL), *gv = ad_tensor_new(dt, 0, NULL);
        ck_assert_ptr_nonnull(t);
        ck_assert_ptr_nonnull(xv);
        ck_assert_ptr_nonnull(gv);
        ad_tensor_set(xv, 0, 0.5);
        ad_var x = acc ? ad_param(t, xv, gv) : ad_leaf(t, xv), y = r->u(x);
        ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
        ck_assert_int_eq(ad_backward(y, NULL, acc ? AD_ACCUMULATE : 0), AD_OK);
        ad_tensor_set(xv, 0, p->x);
        ad_tensor_set(gv, 0, 0.0);
        ck_assert_msg(ad_tape_replay(t, 0, NULL, NULL) == AD_OK, "%s: %s", name, ad_tape_error(t));
        ck_assert_int_eq(t->plan_state, p->f32 ? AD_PLAN_NO : AD_PLAN_OK);
        ck_assert(p->f32 || t->plan_grad == (ad__unary_grad64[r->op] != NULL));
        snprintf(what, sizeof what, "%s(%g) %s value (replayed)", name, p->x, ad_dtype_name(dt));
        check_num(what, ad_item(y), p->y, p->f32);
        ck_assert_msg(ad_backward(y, NULL, acc ? AD_ACCUMULATE : 0) == AD_OK, "%s", ad_tape_error(t));
        snprintf(what, sizeof what, "%s'(%g) %s (replayed, %s)", name, p->x, ad_dtype_name(dt),
                 acc ? "accumulated" : "leaf");
        check_num(what, acc ? ad_tensor_get(gv, 0) : ad_tensor_get(ad_grad(x), 0), p->g, p->f32);
        ad_tape_free(t);
        ad_tensor_free(xv);
        ad_tensor_free(gv);
    }
}

/* The same for two inputs, each replay given new leaf storage (the program built again). */
static void run_binary_replayed(const row *r, const bpt *p)
{
    const char *name = ad__ops[r->op].name;
    char what[160];
    double h = 0.5, q = 0.75;
    ad_tape *t = ad_tape_new();
    ad_tensor *a0 = tu_f64(0, NULL, &h), *b0 = tu_f64(0, NULL, &q);
    ad_tensor *av = tu_f64(0, NULL, &p->a), *bv = tu_f64(0, NULL, &p->b);
    ad_var xs[2] = {ad_leaf(t, a0), ad_leaf(t, b0)};
    ad_var y = r->b(xs[0], xs[1]);
    ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert_msg(ad_tape_replay(t, 2, xs, (const ad_tensor *const[]){av, bv}) == AD_OK, "%s", ad_tape_error(t));
    ck_assert_int_eq(t->plan_state, AD_PLAN_OK);
    ck_assert(t->plan_grad == (ad__binary_grad64[r->op][0] != NULL));
    snprintf(what, sizeof what, "%s(%g, %g) value (replayed)", name, p->a, p->b);
    check_num(what, ad_item(y), p->y, false);
    ck_assert_msg(ad_backward(y, NULL, 0) == AD_OK, "%s", ad_tape_error(t));
    snprintf(what, sizeof what, "d%s/da at (%g, %g) (replayed)", name, p->a, p->b);
    check_num(what, ad_tensor_get(ad_grad(xs[0]), 0), p->ga, false);
    snprintf(what, sizeof what, "d%s/db at (%g, %g) (replayed)", name, p->a, p->b);
    check_num(what, ad_tensor_get(ad_grad(xs[1]), 0), p->gb, false);
    ad_tape_free(t);
    ad_tensor_free(a0);
    ad_tensor_free(b0);
    ad_tensor_free(av);
    ad_tensor_free(bv);
}

/* Rows end at the first all-zero point. */
static bool upt_end(const upt *p) { return !p->x && !p->y && !p->g && !p->h && !p->f32 && !signbit(p->x); }
static bool bpt_end(const bpt *p) { return !p->a && !p->b && !p->y && !p->ga && !p->gb && !signbit(p->a); }

START_TEST(elementwise_rows)
{
    init_rows();
    const row *r = &rows[_i];
    if (!r->u && !r->b) return; /* not an elementwise op: the completeness test decides */
    int n = 0;
    for (int k = 0; r->u && k < MAXPT && (k == 0 || !upt_end(&r->up[k])); k++, n++) {
        run_unary(r, &r->up[k]);
        run_unary_tangent(r, &r->up[k]);
        run_unary_replayed(r, &r->up[k]);
    }
    for (int k = 0; r->b && k < MAXPT && (k == 0 || !bpt_end(&r->bp[k])); k++, n++) {
        run_binary(r, &r->bp[k]);
        run_binary_tangent(r, &r->bp[k]);
        run_binary_replayed(r, &r->bp[k]);
    }
    ck_assert_int_gt(n, 0);
}
END_TEST

/* ---- reductions over an axis: ties, infinities, NaN, empty axes ---- */

typedef ad_var (*red_fn)(ad_var x);
static ad_var r_lse(ad_var x) { return ad_logsumexp(x, -1, false); }
static ad_var r_softmax0(ad_var x) { return ad_index_select(ad_softmax(x, -1), 0, 1, (const int64_t[]){0}); }
static ad_var r_lsm1(ad_var x) { return ad_index_select(ad_log_softmax(x, -1), 0, 1, (const int64_t[]){1}); }
static ad_var r_max(ad_var x) { return ad_max_axis(x, -1, false); }
static ad_var r_sum_axis(ad_var x) { return ad_sum_axis(x, 0, false); }
static ad_var r_mean_axis(ad_var x) { return ad_mean_axis(x, 0, true); }

typedef struct rpt {
    double x[3], y, g[3];
} rpt;
typedef struct rrow {
    ad_op op;
    red_fn f;
    rpt p[8];
} rrow;

static const rrow rrows[] = {
    /* all -Inf: -Inf, no defined gradient (NaN, as PyTorch); one +Inf takes it all */
    {AD_OP_LOGSUMEXP, r_lse,
     {{{-INF, -INF, -INF}, -INF, {NAN, NAN, NAN}},
      {{INF, 1, 0}, INF, {NAN, 0, 0}},
      {{-INF, 0, 0}, LN2, {0, 0.5, 0.5}},
      {{1e308, 1e308, 0}, 1e308, {1, 1, 0}},
      {{1, 1, 1}, 2.09861228866810969140 /* 1 + ln 3 */, {1 / 3.0, 1 / 3.0, 1 / 3.0}}}},
    {AD_OP_SOFTMAX, r_softmax0,
     {{{-INF, 0, 1}, 0, {0, 0, 0}}, {{1e308, 1e308, 0}, 0.5, {0.25, -0.25, 0}}, {{-INF, -INF, -INF}, NAN, {NAN, NAN, NAN}}}},
    {AD_OP_LOG_SOFTMAX, r_lsm1,
     {{{-INF, 0, 0}, -LN2, {0, 0.5, -0.5}}, {{1e308, 1e308, 0}, -LN2, {-0.5, 0.5, 0}}}},
    /* ties share the gradient equally, infinities included */
    {AD_OP_MAX_AXIS, r_max,
     {{{1, 1, 0}, 1, {0.5, 0.5, 0}}, {{-INF, -INF, -INF}, -INF, {1 / 3.0, 1 / 3.0, 1 / 3.0}}, {{INF, INF, 0}, INF, {0.5, 0.5, 0}}}},
    {AD_OP_SUM, ad_sum, {{{INF, -INF, 0}, NAN, {1, 1, 1}}, {{DBL_MAX, DBL_MAX, 0}, INF, {1, 1, 1}}}},
    {AD_OP_MEAN, ad_mean, {{{DBL_MAX, DBL_MAX, 0}, INF, {1 / 3.0, 1 / 3.0, 1 / 3.0}}, {{NAN, 1, 0}, NAN, {1 / 3.0, 1 / 3.0, 1 / 3.0}}}},
};

START_TEST(reduction_rows)
{
    const rrow *r = &rrows[_i];
    for (int k = 0; k < 8 && (k == 0 || r->p[k].x[0] || r->p[k].x[1] || r->p[k].x[2]); k++) {
        const rpt *p = &r->p[k];
        ad_tape *t = ad_tape_new();
        ad_tensor *xv = tu_f64(AD_SHAPE(3), p->x);
        ad_var x = ad_leaf(t, xv), y = ad_sum(r->f(x)), g;
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        bool built = false;
        for (uint32_t i = 0; i < ad_tape_node_count(t); i++) built |= ad__node(t, i)->op == r->op;
        ck_assert_msg(built, "the row for %s never builds it", ad__ops[r->op].name);
        char what[160];
        snprintf(what, sizeof what, "%s at (%g, %g, %g)", ad__ops[r->op].name, p->x[0], p->x[1], p->x[2]);
        check_num(what, ad_item(y), p->y, false);
        ck_assert_msg(ad_gradients(y, 1, &x, &g, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int j = 0; j < 3; j++) check_num(what, ad_tensor_get(ad_value(g), j), p->g[j], false);
        ad_tape_free(t);
        ad_tensor_free(xv);
    }
}
END_TEST

/* Empty axes: sum gives 0, mean NaN (0/0), logsumexp -Inf, softmax an empty result; the gradients are
** empty or zero; max has no identity and is an error naming the axis. */
START_TEST(empty_axes)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = ad_tensor_new(AD_F64, AD_SHAPE(0, 3));
    ad_var x = ad_leaf(t, xv), g;
    ad_var s = ad_sum(r_sum_axis(x));
    ck_assert_double_eq(ad_item(s), 0.0);
    ad_var m = r_mean_axis(x);
    ck_assert(isnan(ad_tensor_get(ad_value(m), 0)));
    ad_var l = ad_logsumexp(x, 0, false);
    ck_assert(isinf(ad_tensor_get(ad_value(l), 0)) && ad_tensor_get(ad_value(l), 0) < 0);
    ad_var y = ad_add(ad_add(s, ad_sum(m)), ad_add(ad_sum(l), ad_sum(ad_softmax(x, 0))));
    ck_assert_int_eq(ad_gradients(y, 1, &x, &g, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_value(g)->size, 0);
    ad_var mx = ad_max_axis(x, 0, false);
    ck_assert(!ad_ok(mx));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_max_axis"));
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

/* Every differentiable op of the unary, binary and reduce families has a row; every op of those families
** that is not differentiable, a written reason; ops of the other families (linalg, shape, nn) have their
** edges (empty and size-1 dimensions, broadcasting) in test_ops and test_conv. */
static const char *const family_of[AD_OP_COUNT] = {
#define AD_OP(ID, name, nin, family, ...) [AD_OP_##ID] = #family,
#include "ops.def"
#undef AD_OP
};

START_TEST(every_op_has_a_row)
{
    init_rows();
    for (int op = 0; op < AD_OP_COUNT; op++) {
        const char *fam = family_of[op];
        bool elementwise = strcmp(fam, "unary") == 0 || strcmp(fam, "binary") == 0;
        if (!elementwise && strcmp(fam, "reduce") != 0 && strcmp(fam, "tape") != 0) continue;
        bool has = rows[op].u || rows[op].b;
        if (has) ck_assert_int_eq(rows[op].op, op);
        for (size_t k = 0; k < sizeof rrows / sizeof rrows[0]; k++) has |= rrows[k].op == (ad_op)op;
        has |= op == AD_OP_SUM_AXIS || op == AD_OP_MEAN_AXIS; /* empty_axes */
        if (!ad__ops[op].differentiable) {
            ck_assert_msg(exempt[op] != NULL, "%s: not differentiable, and no reason in exempt[]", ad__ops[op].name);
            continue;
        }
        ck_assert_msg(has, "%s (%s) has no singular-point row in tests/test_singular.c", ad__ops[op].name, fam);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("singular");
    TCase *tc = tcase_create("points");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, elementwise_rows, 0, AD_OP_COUNT);
    tcase_add_loop_test(tc, reduction_rows, 0, (int)(sizeof rrows / sizeof rrows[0]));
    tcase_add_test(tc, empty_axes);
    tcase_add_test(tc, every_op_has_a_row);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

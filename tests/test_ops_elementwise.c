/* test_ops_elementwise.c: op-table entries for the elementwise unary and binary ops. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "test_ops.h"

/* ================= elementwise unary ops, from one table ================= */

typedef struct unary_spec {
    ad_op op;
    ad_var (*build)(ad_var x, const double *p);
    double (*ref)(double x, const double *p);
    double p[2];
    double lo, hi; /* input range */
    bool away;     /* magnitudes in [lo, hi) with random signs (stay off kinks at 0) */
} unary_spec;

#define U(name, BUILD, REF)                                                                                            \
    static ad_var ub_##name(ad_var x, const double *p)                                                                 \
    {                                                                                                                  \
        (void)p;                                                                                                       \
        return BUILD;                                                                                                  \
    }                                                                                                                  \
    static double ur_##name(double v, const double *p)                                                                 \
    {                                                                                                                  \
        (void)p;                                                                                                       \
        return REF;                                                                                                    \
    }
U(add_scalar, ad_add_scalar(x, p[0]), v + p[0])
U(mul_scalar, ad_mul_scalar(x, p[0]), v *p[0])
U(pow_scalar, ad_pow_scalar(x, p[0]), pow(v, p[0]))
U(neg, ad_neg(x), -v)
U(exp, ad_exp(x), exp(v))
U(log, ad_log(x), log(v))
U(log1p, ad_log1p(x), log1p(v))
U(sqrt, ad_sqrt(x), sqrt(v))
U(square, ad_square(x), v *v)
U(abs, ad_abs(x), fabs(v))
U(sin, ad_sin(x), sin(v))
U(cos, ad_cos(x), cos(v))
U(tanh, ad_tanh(x), tanh(v))
U(sigmoid, ad_sigmoid(x), 1.0 / (1.0 + exp(-v)))
U(relu, ad_relu(x), v > 0 ? v : 0.0)
U(leaky_relu, ad_leaky_relu(x, p[0]), v > 0 ? v : p[0] * v)
U(elu, ad_elu(x, p[0]), v > 0 ? v : p[0] * (exp(v) - 1.0))
U(gelu, ad_gelu(x), 0.5 * v * (1.0 + erf(v / sqrt(2.0))))
U(softplus, ad_softplus(x), log1p(exp(v)))
U(erf, ad_erf(x), erf(v))
U(clamp, ad_clamp(x, p[0], p[1]), v < p[0] ? p[0] : (v > p[1] ? p[1] : v))
#undef U

#define US(ID, name, p0, p1, lo, hi, away)                                                                             \
    {                                                                                                                  \
        AD_OP_##ID, ub_##name, ur_##name, {p0, p1}, lo, hi, away                                                       \
    }
static const unary_spec unary_specs[] = {
    US(ADD_SCALAR, add_scalar, 0.7, 0, -2, 2, false),
    US(MUL_SCALAR, mul_scalar, -1.3, 0, -2, 2, false),
    US(POW_SCALAR, pow_scalar, 3.0, 0, -2, 2, false),
    US(POW_SCALAR, pow_scalar, 0.5, 0, 0.2, 3, false),
    US(POW_SCALAR, pow_scalar, -1.5, 0, 0.3, 3, false),
    US(POW_SCALAR, pow_scalar, 2.0, 0, -2, 2, false),
    US(POW_SCALAR, pow_scalar, 0.0, 0, -2, 2, false),
    US(NEG, neg, 0, 0, -2, 2, false),
    US(EXP, exp, 0, 0, -2, 2, false),
    US(LOG, log, 0, 0, 0.2, 3, false),
    US(LOG1P, log1p, 0, 0, -0.6, 3, false),
    US(SQRT, sqrt, 0, 0, 0.2, 4, false),
    US(SQUARE, square, 0, 0, -2, 2, false),
    US(ABS, abs, 0, 0, 0.1, 2, true),
    US(SIN, sin, 0, 0, -3, 3, false),
    US(COS, cos, 0, 0, -3, 3, false),
    US(TANH, tanh, 0, 0, -2.5, 2.5, false),
    US(SIGMOID, sigmoid, 0, 0, -5, 5, false),
    US(RELU, relu, 0, 0, 0.1, 2, true),
    US(LEAKY_RELU, leaky_relu, 0.1, 0, 0.1, 2, true),
    US(ELU, elu, 1.5, 0, 0.1, 2, true),
    US(GELU, gelu, 0, 0, -3, 3, false),
    US(SOFTPLUS, softplus, 0, 0, -5, 5, false),
    US(ERF, erf, 0, 0, -2, 2, false),
    US(CLAMP, clamp, -0.5, 0.8, -2, 2, false),
};
#undef US

static ad_var unary_fn(ad_tape *t, const ad_var *x, void *ctx)
{
    const unary_spec *s = ctx;
    return s->build(x[0], s->p);
}

/* Forward against the C reference in f64 (and f32 against the reference at the rounded inputs). */
static void unary_forward(const unary_spec *s, ad_dtype dt)
{
    rig r = rig_new();
    ad_tensor *x64 = input(SH(5, 7), s->lo, s->hi, s->away);
    ad_tensor *x = dt == AD_F64 ? x64 : tu_to_f32(x64);
    if (dt != AD_F64) ad_tensor_free(x64);
    ad_var y = s->build(rig_leaf(&r, x), s->p);
    expect_op(y, s->op);
    const ad_tensor *v = ad_value(y);
    ck_assert_int_eq(v->dtype, dt);
    tu_assert_shape(v, AD_SHAPE(5, 7));
    for (int64_t i = 0; i < x->size; i++) {
        double want = s->ref(ad_tensor_get(x, i), s->p), got = ad_tensor_get(v, i);
        bool ok = dt == AD_F64 ? tu_close(got, want, 1e-300, 1e-14) : tu_close(got, want, 2e-6, 2e-6);
        ck_assert_msg(ok, "%s(%.17g) [%s] = %.17g, expected %.17g", ad__ops[s->op].name, ad_tensor_get(x, i),
                      ad_dtype_name(dt), got, want);
    }
    ck_assert(ad_requires_grad(y) == (s->op != AD_OP_SIGN));
    rig_free(&r);
}

static void run_unary(ad_op op)
{
    int found = 0;
    for (size_t k = 0; k < sizeof unary_specs / sizeof unary_specs[0]; k++) {
        const unary_spec *s = &unary_specs[k];
        if (s->op != op) continue;
        found++;
        unary_forward(s, AD_F64);
        unary_forward(s, AD_F32);
        const shp shapes[] = {SH(2, 3), SCALAR, SH(0, 3), SH(1, 4, 1)};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            gc_shapes(ad__ops[op].name, unary_fn, (void *)s, 1, &shapes[i], s->lo, s->hi, s->away);
    }
    ck_assert_int_gt(found, 0);
}

/* ---- extra unary cases: extremes, conventions at kinks ---- */

static void unary_extremes(ad_op op)
{
    const double big[4] = {-1000, 1000, -1e4, 0};
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        if (op == AD_OP_SIGMOID)
            point_values(ub_sigmoid, NULL, dt, 4, big, (double[]){0, 1, 0, 0.5}, (double[]){0, 0, 0, 0.25});
        if (op == AD_OP_SOFTPLUS)
            point_values(ub_softplus, NULL, dt, 4, big, (double[]){0, 1000, 0, log(2.0)}, (double[]){0, 1, 0, 0.5});
        if (op == AD_OP_TANH) point_values(ub_tanh, NULL, dt, 4, big, (double[]){-1, 1, -1, 0}, (double[]){0, 0, 0, 1});
        if (op == AD_OP_EXP)
            point_values(ub_exp, NULL, dt, 3, (double[]){-1000, 0, 1}, (double[]){0, 1, exp(1.0)},
                         (double[]){0, 1, exp(1.0)});
    }
    /* conventions at kinks: 0 gradient for relu and abs at 0 (as PyTorch), clamp includes its bounds */
    if (op == AD_OP_RELU)
        point_values(ub_relu, NULL, AD_F64, 3, (double[]){-1, 0, 2}, (double[]){0, 0, 2}, (double[]){0, 0, 1});
    if (op == AD_OP_ABS)
        point_values(ub_abs, NULL, AD_F64, 3, (double[]){-1, 0, 2}, (double[]){1, 0, 2}, (double[]){-1, 0, 1});
    if (op == AD_OP_CLAMP)
        point_values(ub_clamp, (double[]){-1, 1}, AD_F64, 5, (double[]){-2, -1, 0, 1, 2}, (double[]){-1, -1, 0, 1, 1},
                     (double[]){0, 1, 1, 1, 0});
    if (op == AD_OP_POW_SCALAR)
        point_values(ub_pow_scalar, (double[]){0}, AD_F64, 3, (double[]){-2, 0, 3}, (double[]){1, 1, 1},
                     (double[]){0, 0, 0});
    if (op == AD_OP_LEAKY_RELU)
        point_values(ub_leaky_relu, (double[]){0.2}, AD_F64, 2, (double[]){-1, 3}, (double[]){-0.2, 3},
                     (double[]){0.2, 1});
    if (op == AD_OP_ELU)
        point_values(ub_elu, (double[]){2.0}, AD_F64, 2, (double[]){-1, 3}, (double[]){2 * (exp(-1.0) - 1), 3},
                     (double[]){2 * exp(-1.0), 1});
}

static void t_unary(ad_op op)
{
    run_unary(op);
    unary_extremes(op);
}

#define UNARY_ENTRY(name, ID)                                                                                          \
    void t_##name(void) { t_unary(AD_OP_##ID); }
UNARY_ENTRY(add_scalar, ADD_SCALAR)
UNARY_ENTRY(mul_scalar, MUL_SCALAR)
UNARY_ENTRY(pow_scalar, POW_SCALAR)
UNARY_ENTRY(neg, NEG)
UNARY_ENTRY(exp, EXP)
UNARY_ENTRY(log, LOG)
UNARY_ENTRY(log1p, LOG1P)
UNARY_ENTRY(sqrt, SQRT)
UNARY_ENTRY(square, SQUARE)
UNARY_ENTRY(abs, ABS)
UNARY_ENTRY(sin, SIN)
UNARY_ENTRY(cos, COS)
UNARY_ENTRY(tanh, TANH)
UNARY_ENTRY(sigmoid, SIGMOID)
UNARY_ENTRY(relu, RELU)
UNARY_ENTRY(leaky_relu, LEAKY_RELU)
UNARY_ENTRY(elu, ELU)
UNARY_ENTRY(gelu, GELU)
UNARY_ENTRY(softplus, SOFTPLUS)
UNARY_ENTRY(erf, ERF)
UNARY_ENTRY(clamp, CLAMP)
#undef UNARY_ENTRY

/* ================= elementwise binary ops ================= */

typedef struct binary_spec {
    ad_op op;
    ad_var (*build)(ad_var a, ad_var b);
    double (*ref)(double a, double b);
    double alo, ahi, blo, bhi;
    bool bway; /* b's magnitudes in [blo, bhi) with random signs */
} binary_spec;

static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_pow(double a, double b) { return pow(a, b); }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }
static double r_xlogy(double a, double b) { return a == 0 ? 0.0 : a * log(b); }

static const binary_spec binary_specs[] = {
    {AD_OP_ADD, ad_add, r_add, -2, 2, -2, 2, false},         {AD_OP_SUB, ad_sub, r_sub, -2, 2, -2, 2, false},
    {AD_OP_MUL, ad_mul, r_mul, -2, 2, -2, 2, false},         {AD_OP_DIV, ad_div, r_div, -2, 2, 0.5, 2, true},
    {AD_OP_POW, ad_pow, r_pow, 0.5, 2, -2, 2, false},        {AD_OP_MAXIMUM, ad_maximum, r_max, -2, 2, -2, 2, false},
    {AD_OP_MINIMUM, ad_minimum, r_min, -2, 2, -2, 2, false}, {AD_OP_XLOGY, ad_xlogy, r_xlogy, -2, 2, 0.3, 3, false},
};

static ad_var binary_fn(ad_tape *t, const ad_var *x, void *ctx)
{
    const binary_spec *s = ctx;
    return s->build(x[0], x[1]);
}

static const binary_spec *binary_spec_of(ad_op op)
{
    for (size_t k = 0; k < sizeof binary_specs / sizeof binary_specs[0]; k++)
        if (binary_specs[k].op == op) return &binary_specs[k];
    ck_abort_msg("no binary spec for %s", ad__ops[op].name);
    return NULL;
}

static ad_tensor *binput(const binary_spec *s, int side, shp sh)
{
    return side == 0 ? input(sh, s->alo, s->ahi, false) : input(sh, s->blo, s->bhi, s->bway);
}

/* Forward over a broadcasting pair, against the reference element by element. */
static void binary_forward(const binary_spec *s, shp sa, shp sb, shp want, ad_dtype dt)
{
    rig r = rig_new();
    ad_tensor *a = binput(s, 0, sa), *b = binput(s, 1, sb);
    if (dt == AD_F32) {
        ad_tensor *a32 = tu_to_f32(a), *b32 = tu_to_f32(b);
        ad_tensor_free(a);
        ad_tensor_free(b);
        a = a32;
        b = b32;
    }
    ad_var y = s->build(rig_leaf(&r, a), rig_leaf(&r, b));
    expect_op(y, s->op);
    const ad_tensor *v = ad_value(y);
    tu_assert_shape(v, want.nd, want.d);
    ck_assert_int_eq(v->dtype, dt);
    for (int64_t i = 0; i < v->size; i++) {
        double av = ad_tensor_get(a, bcast_index(a, v->ndim, v->shape, i));
        double bv = ad_tensor_get(b, bcast_index(b, v->ndim, v->shape, i));
        double w = s->ref(av, bv), got = ad_tensor_get(v, i);
        bool ok = dt == AD_F64 ? tu_close(got, w, 1e-300, 1e-15) : tu_close(got, w, 2e-6, 2e-6);
        ck_assert_msg(ok, "%s(%g, %g) = %.17g, expected %.17g", ad__ops[s->op].name, av, bv, got, w);
    }
    rig_free(&r);
}

static void t_binary(ad_op op)
{
    const binary_spec *s = binary_spec_of(op);
    const shp pairs[][3] = {
        {SH(3, 1, 4), SH(2, 4), SH(3, 2, 4)}, {SH(2, 3), SCALAR, SH(2, 3)},   {SCALAR, SCALAR, SCALAR},
        {SH(0, 4), SH(1, 4), SH(0, 4)},       {SH(2, 1), SH(1, 3), SH(2, 3)}, {SH(4), SH(4), SH(4)},
        {SCALAR, SH(2, 1, 3), SH(2, 1, 3)},   {SH(3, 1), SH(3, 0), SH(3, 0)},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        binary_forward(s, pairs[i][0], pairs[i][1], pairs[i][2], AD_F64);
        binary_forward(s, pairs[i][0], pairs[i][1], pairs[i][2], AD_F32);
        ad_tensor *in[2] = {binput(s, 0, pairs[i][0]), binput(s, 1, pairs[i][1])};
        gc_n(ad__ops[op].name, binary_fn, (void *)s, 2, (const ad_tensor *const *)in);
        ad_tensor_free(in[0]);
        ad_tensor_free(in[1]);
    }
    /* an empty broadcast output gives zero gradients of the inputs' shapes */
    rig r = rig_new();
    ad_var a = rig_leaf(&r, binput(s, 0, SH(3, 1))), b = rig_leaf(&r, binput(s, 1, SH(3, 0)));
    ad_var y = s->build(a, b);
    ad_tensor *seed = ad_tensor_new(AD_F64, AD_SHAPE(3, 0));
    ck_assert_int_eq(ad_backward(y, seed, 0), AD_OK);
    tu_assert_shape(ad_grad(a), AD_SHAPE(3, 1));
    tu_assert_values(ad_grad(a), (double[]){0, 0, 0}, 0, 0);
    ad_tensor_free(seed);
    rig_free(&r);
}

void t_add(void) { t_binary(AD_OP_ADD); }
void t_sub(void) { t_binary(AD_OP_SUB); }
void t_mul(void) { t_binary(AD_OP_MUL); }
void t_div(void) { t_binary(AD_OP_DIV); }
void t_pow(void) { t_binary(AD_OP_POW); }

static ad_var b_max(ad_var a, const double *p) { return ad_maximum(a, ad_scalar(a.tape, AD_F64, p[0])); }
static ad_var b_min(ad_var a, const double *p) { return ad_minimum(a, ad_scalar(a.tape, AD_F64, p[0])); }

void t_maximum(void)
{
    t_binary(AD_OP_MAXIMUM);
    /* ties share the gradient; NaN propagates */
    point_values(b_max, (double[]){1.0}, AD_F64, 3, (double[]){0, 1, 2}, (double[]){1, 1, 2}, (double[]){0, 0.5, 1});
    rig r = rig_new();
    ad_var y = ad_maximum(rig_leaf(&r, tu_f64(AD_SHAPE(2), (double[]){NAN, 1})), ad_scalar(r.t, AD_F64, 0));
    ck_assert(isnan(ad_tensor_get(ad_value(y), 0)));
    rig_free(&r);
}

void t_minimum(void)
{
    t_binary(AD_OP_MINIMUM);
    point_values(b_min, (double[]){1.0}, AD_F64, 3, (double[]){0, 1, 2}, (double[]){0, 1, 1}, (double[]){1, 0.5, 0});
}

void t_xlogy(void)
{
    t_binary(AD_OP_XLOGY);
    /* 0 * log(0) is 0, and so is its gradient in x's place */
    rig r = rig_new();
    ad_var x = rig_leaf(&r, tu_f64(AD_SHAPE(3), (double[]){0, 0, 2})),
           z = rig_leaf(&r, tu_f64(AD_SHAPE(3), (double[]){0, 5, 3}));
    ad_var y = ad_xlogy(x, z);
    expect_op(y, AD_OP_XLOGY);
    tu_assert_values(ad_value(y), (double[]){0, 0, 2 * log(3.0)}, 0, 1e-15);
    rig_free(&r);
}

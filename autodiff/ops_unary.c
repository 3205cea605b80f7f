/* ops_unary.c: elementwise unary ops and scalar variants; each forward beside its VJP. */
#include "jvp.h"
#include "kernels.h"
#include "vjp.h"
#include "vmath.h"

#include <math.h>

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794
#define TWO_INV_SQRT_PI 1.12837916709551257390

/* A forward on threads (ad__par_for, kernels.h): each chunk runs the op's loop on its range. */
typedef struct unary_job {
    void *y;
    const void *x;
    double c0, c1;
    bool f64;
} unary_job;

/* An op's formula as a loop over its elements, and on one element (scalars,
** see unary()); c0, c1 are its scalar attributes. The F32 loop is always
** inlined into each ISA clone of ad__fwd_<op> and of <op>_range (a chunk on threads):
** GCC's size limits would keep the longer formulas (exp, sigmoid of vmath.h)
** out, compiled for the baseline only. From 2 AD__PAR_MIN elements on the
** loop is split over threads. */
#define UNARY(name, EXPR64, EXPR32)                                                                      \
    static inline double name##_one64(double v, double c0, double c1) { return (EXPR64); }               \
    static inline float name##_one32(float v, float c0, float c1) { return (EXPR32); }                   \
    static void name##_f64(double *restrict y, const double *restrict x, int64_t n, double c0, double c1) \
    {                                                                                                    \
        for (int64_t i = 0; i < n; i++) {                                                                \
            double v = x[i];                                                                             \
            y[i] = (EXPR64);                                                                             \
        }                                                                                                \
    }                                                                                                    \
    static AD_ALWAYS_INLINE void name##_f32(float *restrict y, const float *restrict x, int64_t n,         \
                                            double c0d, double c1d)                                      \
    {                                                                                                    \
        float c0 = (float)c0d, c1 = (float)c1d;                                                          \
        (void)c0;                                                                                        \
        (void)c1;                                                                                        \
        for (int64_t i = 0; i < n; i++) {                                                                \
            float v = x[i];                                                                              \
            y[i] = (EXPR32);                                                                             \
        }                                                                                                \
    }                                                                                                    \
    AD_CLONES static void name##_range(void *ctx, int64_t lo, int64_t hi)                                \
    {                                                                                                    \
        const unary_job *j = ctx;                                                                        \
        if (j->f64)                                                                                      \
            name##_f64((double *)j->y + lo, (const double *)j->x + lo, hi - lo, j->c0, j->c1);          \
        else                                                                                             \
            name##_f32((float *)j->y + lo, (const float *)j->x + lo, hi - lo, j->c0, j->c1);            \
    }                                                                                                    \
    AD_CLONES ad_status ad__fwd_##name(ad_tape *t, ad_node *n)                                           \
    {                                                                                                    \
        const ad_tensor *x = ad__in(t, n, 0);                                                            \
        if (x->size == 1 && x->dtype == AD_F64) { /* one element (a replayed scalar graph) */            \
            *(double *)n->value.data = name##_one64(*(const double *)x->data, n->attr.f[0], n->attr.f[1]); \
            return AD_OK;                                                                                \
        }                                                                                                \
        int nth = ad__par_threads(x->size);                                                              \
        if (nth > 1) {                                                                                   \
            unary_job j = {n->value.data, x->data, n->attr.f[0], n->attr.f[1], x->dtype == AD_F64};      \
            ad__par_for(nth, x->size, 1, name##_range, &j);                                              \
            return AD_OK;                                                                                \
        }                                                                                                \
        if (x->dtype == AD_F64)                                                                          \
            name##_f64(n->value.data, x->data, x->size, n->attr.f[0], n->attr.f[1]);                     \
        else                                                                                             \
            name##_f32(n->value.data, x->data, x->size, n->attr.f[0], n->attr.f[1]);                     \
        return AD_OK;                                                                                    \
    }

/* Inlined into each op's front end, with the op's one-element formulas
** (ONE(name)): a scalar (0-dimensional) is recorded inline and computed here. */
#define ONE(name) name##_one64, name##_one32
static AD_ALWAYS_INLINE ad_var unary(ad_op op, ad_var x, double c0, double c1, double (*one64)(double, double, double),
                                     float (*one32)(float, float, float))
{
    ad_tape *t;
    if (!ad__begin(ad__ops[op].name, 1, &x, &t)) return ad__invalid(t);
    const ad_node *nx = ad__node(t, x.id);
    const ad_tensor *v = &nx->value;
    ad_attr a = {{c0, c1}, {0}, NULL};
    if (v->ndim == 0) {
        uint32_t id;
        uint64_t b0, b1; /* a zero attr need not be written (ad__emit_scalar) */
        memcpy(&b0, &c0, sizeof b0);
        memcpy(&b1, &c1, sizeof b1);
        ad_node *n = ad__emit_scalar(t, op, 1, &x, nx->flags & AD_NODE_REQ_GRAD, v->dtype, (b0 | b1) ? &a : NULL, &id);
        if (!n) return ad__invalid(t);
        if (v->dtype == AD_F64)
            *(double *)n->value.data = one64(*(const double *)v->data, c0, c1);
        else
            *(float *)n->value.data = one32(*(const float *)v->data, (float)c0, (float)c1);
        return ad__emit_done(t, id);
    }
    return ad__emit(t, op, 1, &x, v->dtype, v->ndim, v->shape, &a);
}

/* The fast path (see vjp.h): the VJP's formula on the tensors, with g = dL/dy, x the input,
** y the output and c0 the first attribute, written in the same order of operations as the recorded
** VJP. FAST(name, GX64, GX32) gives the formula on one element; fast_unary, inlined into each ISA
** clone of the op's fast VJP, runs it over the elements, or on threads (ad__par_for, with
** <name>_grange, a clone too) from 2 AD__PAR_MIN elements on. */
#define FAST(name, GX64, GX32)                                                                           \
    static inline double name##_gx64(double g, double x, double y, double c0) { return (GX64); }         \
    static inline float name##_gx32(float g, float x, float y, float c0) { return (GX32); }              \
    AD_CLONES static void name##_grange(void *ctx, int64_t lo, int64_t hi)                               \
    {                                                                                                    \
        fast_loops(ctx, lo, hi, name##_gx64, name##_gx32);                                               \
    }                                                                                                    \
    AD_CLONES FAST_VJP(name) { return fast_unary(sw, n, gy, name##_gx64, name##_gx32, name##_grange); }

typedef double (*gx64_fn)(double g, double x, double y, double c0);
typedef float (*gx32_fn)(float g, float x, float y, float c0);

/* The gradient's loops: elements [lo, hi) of o written (fresh) or added to. */
typedef struct fast_job {
    void *o;
    const void *g, *x, *y;
    double c0;
    bool f64, fresh;
} fast_job;

static AD_ALWAYS_INLINE void fast_loops(const fast_job *j, int64_t lo, int64_t hi, gx64_fn gx64, gx32_fn gx32)
{
    if (j->f64) {
        const double *gp = j->g, *xp = j->x, *yp = j->y;
        double *o = j->o, c0 = j->c0;
        if (j->fresh) /* two loops, not a select in one: each vectorizes */
            for (int64_t i = lo; i < hi; i++) o[i] = gx64(gp[i], xp[i], yp[i], c0);
        else
            for (int64_t i = lo; i < hi; i++) o[i] += gx64(gp[i], xp[i], yp[i], c0);
    } else {
        const float *gp = j->g, *xp = j->x, *yp = j->y;
        float *o = j->o, c0 = (float)j->c0;
        if (j->fresh)
            for (int64_t i = lo; i < hi; i++) o[i] = gx32(gp[i], xp[i], yp[i], c0);
        else
            for (int64_t i = lo; i < hi; i++) o[i] += gx32(gp[i], xp[i], yp[i], c0);
    }
}

static AD_ALWAYS_INLINE bool fast_unary(ad_sweep *sw, const ad_node *n, const ad_tensor *gy, gx64_fn gx64,
                                        gx32_fn gx32, ad__range_fn range)
{
    ad_tape *t = sw->t;
    bool fresh;
    const ad_tensor *xt = ad__in(t, n, 0);
    if (gy->ndim == 0) { /* one element, no loop */
        void *o = ad__gslot1(sw, n, 0, &fresh);
        if (!o) return true;
        if (gy->dtype == AD_F64) {
            double r = gx64(*(const double *)gy->data, *(const double *)xt->data, *(const double *)n->value.data,
                            n->attr.f[0]);
            *(double *)o = fresh ? r : *(double *)o + r;
        } else {
            float r = gx32(*(const float *)gy->data, *(const float *)xt->data, *(const float *)n->value.data,
                           (float)n->attr.f[0]);
            *(float *)o = fresh ? r : *(float *)o + r;
        }
        return true;
    }
    void *buf = ad__gslot(sw, n, 0, &fresh);
    if (!buf) return true;
    fast_job j = {buf, gy->data, xt->data, n->value.data, n->attr.f[0], xt->dtype == AD_F64, fresh};
    int nth = ad__par_threads(xt->size);
    if (nth > 1)
        ad__par_for(nth, xt->size, 1, range, &j);
    else
        fast_loops(&j, 0, xt->size, gx64, gx32);
    return true;
}

#define X ad__inv(t, n, 0)
#define Y ad__var(t, self)

/* add_scalar: y = x + c; VJP: gx = gy */
UNARY(add_scalar, v + c0, v + c0)
ad_var ad_add_scalar(ad_var x, double c) { return unary(AD_OP_ADD_SCALAR, x, c, 0, ONE(add_scalar)); }
VJP(add_scalar) { gx[0] = gy; }
/* Tangent rules (jvp.h): TX is the input's tangent; the Jacobian is diagonal, so each
** rule is its VJP's formula with TX in place of gy. */
#define TX tx[0]
JVP(add_scalar) { return TX; }
FAST_VJP(add_scalar)
{
    ad__gpass(sw, n, 0, gy);
    return true;
}

/* mul_scalar: y = c * x; VJP: gx = c * gy */
UNARY(mul_scalar, v *c0, v *c0)
ad_var ad_mul_scalar(ad_var x, double c) { return unary(AD_OP_MUL_SCALAR, x, c, 0, ONE(mul_scalar)); }
VJP(mul_scalar) { gx[0] = ad_mul_scalar(gy, n->attr.f[0]); }
JVP(mul_scalar) { return ad_mul_scalar(TX, n->attr.f[0]); }
FAST(mul_scalar, g * c0, g * c0)

/* pow_scalar: y = x^p; VJP: gx = p * x^(p-1) * gy (0 for p = 0) */
UNARY(pow_scalar, c0 == 2.0 ? v * v : pow(v, c0), c0 == 2.0f ? v * v : powf(v, c0))
ad_var ad_pow_scalar(ad_var x, double p) { return unary(AD_OP_POW_SCALAR, x, p, 0, ONE(pow_scalar)); }
VJP(pow_scalar)
{
    double p = n->attr.f[0];
    gx[0] = p == 0.0 ? ad__zeros_like(X) : ad_mul(gy, ad_mul_scalar(ad_pow_scalar(X, p - 1.0), p));
}
JVP(pow_scalar)
{
    double p = n->attr.f[0];
    return p == 0.0 ? ad__zeros_like(X) : ad_mul(TX, ad_mul_scalar(ad_pow_scalar(X, p - 1.0), p));
}

/* neg: y = -x; VJP: gx = -gy */
UNARY(neg, -v, -v)
ad_var ad_neg(ad_var x) { return unary(AD_OP_NEG, x, 0, 0, ONE(neg)); }
VJP(neg) { gx[0] = ad_neg(gy); }
JVP(neg) { return ad_neg(TX); }
FAST(neg, -g, -g)

/* exp: y = e^x (F32: vmath.h, vectorized); VJP: gx = gy * y */
UNARY(exp, exp(v), ad__vm_expf(v))
ad_var ad_exp(ad_var x) { return unary(AD_OP_EXP, x, 0, 0, ONE(exp)); }
VJP(exp) { gx[0] = ad_mul(gy, Y); }
JVP(exp) { return ad_mul(TX, Y); }
FAST(exp, g * y, g * y)

/* log: y = ln x; VJP: gx = gy / x */
UNARY(log, log(v), logf(v))
ad_var ad_log(ad_var x) { return unary(AD_OP_LOG, x, 0, 0, ONE(log)); }
VJP(log) { gx[0] = ad_div(gy, X); }
JVP(log) { return ad_div(TX, X); }
FAST(log, g / x, g / x)

/* log1p: y = ln(1 + x); VJP: gx = gy / (1 + x) */
UNARY(log1p, log1p(v), log1pf(v))
ad_var ad_log1p(ad_var x) { return unary(AD_OP_LOG1P, x, 0, 0, ONE(log1p)); }
VJP(log1p) { gx[0] = ad_div(gy, ad_add_scalar(X, 1.0)); }
JVP(log1p) { return ad_div(TX, ad_add_scalar(X, 1.0)); }

/* sqrt: y = sqrt(x); VJP: gx = gy / (2 y) */
UNARY(sqrt, sqrt(v), sqrtf(v))
ad_var ad_sqrt(ad_var x) { return unary(AD_OP_SQRT, x, 0, 0, ONE(sqrt)); }
VJP(sqrt) { gx[0] = ad_div(ad_mul_scalar(gy, 0.5), Y); }
JVP(sqrt) { return ad_div(ad_mul_scalar(TX, 0.5), Y); }
FAST(sqrt, (g * 0.5) / y, (g * 0.5f) / y)

/* square: y = x^2; VJP: gx = 2 x gy */
UNARY(square, v *v, v *v)
ad_var ad_square(ad_var x) { return unary(AD_OP_SQUARE, x, 0, 0, ONE(square)); }
VJP(square) { gx[0] = ad_mul(gy, ad_mul_scalar(X, 2.0)); }
JVP(square) { return ad_mul(TX, ad_mul_scalar(X, 2.0)); }
FAST(square, g * (x * 2.0), g * (x * 2.0f))

/* abs: y = |x|; VJP: gx = gy * sign(x) (0 at x = 0, as PyTorch) */
UNARY(abs, fabs(v), fabsf(v))
ad_var ad_abs(ad_var x) { return unary(AD_OP_ABS, x, 0, 0, ONE(abs)); }
VJP(abs) { gx[0] = ad_mul(gy, ad_sign(X)); }
JVP(abs) { return ad_mul(TX, ad_sign(X)); }

/* sin: y = sin x; VJP: gx = gy cos x */
UNARY(sin, sin(v), sinf(v))
ad_var ad_sin(ad_var x) { return unary(AD_OP_SIN, x, 0, 0, ONE(sin)); }
VJP(sin) { gx[0] = ad_mul(gy, ad_cos(X)); }
JVP(sin) { return ad_mul(TX, ad_cos(X)); }
FAST(sin, g * cos(x), g * cosf(x))

/* cos: y = cos x; VJP: gx = -gy sin x */
UNARY(cos, cos(v), cosf(v))
ad_var ad_cos(ad_var x) { return unary(AD_OP_COS, x, 0, 0, ONE(cos)); }
VJP(cos) { gx[0] = ad_neg(ad_mul(gy, ad_sin(X))); }
JVP(cos) { return ad_neg(ad_mul(TX, ad_sin(X))); }
FAST(cos, -(g * sin(x)), -(g * sinf(x)))

/* tanh: y = tanh x (vmath.h: F32 vectorized; F64 its own below |x| = 0.625, libm's above); VJP: gx = gy (1 - y^2) */
UNARY(tanh, ad__tanh_d(v), ad__vm_tanhf(v))
ad_var ad_tanh(ad_var x) { return unary(AD_OP_TANH, x, 0, 0, ONE(tanh)); }
VJP(tanh) { gx[0] = ad_mul(gy, ad_add_scalar(ad_neg(ad_square(Y)), 1.0)); }
JVP(tanh) { return ad_mul(TX, ad_add_scalar(ad_neg(ad_square(Y)), 1.0)); }
FAST(tanh, g * (-(y * y) + 1.0), g * (-(y * y) + 1.0f))

/* sigmoid: y = 1 / (1 + e^-x), F64 branching on the sign so exp never overflows (F32: vmath.h); VJP: gx = gy y (1 - y) */
UNARY(sigmoid, v >= 0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v)), ad__vm_sigmoidf(v))
ad_var ad_sigmoid(ad_var x) { return unary(AD_OP_SIGMOID, x, 0, 0, ONE(sigmoid)); }
VJP(sigmoid) { gx[0] = ad_mul(gy, ad_mul(Y, ad_add_scalar(ad_neg(Y), 1.0))); }
JVP(sigmoid) { return ad_mul(TX, ad_mul(Y, ad_add_scalar(ad_neg(Y), 1.0))); }
FAST(sigmoid, g * (y * (-y + 1.0)), g * (y * (-y + 1.0f)))

/* relu: y = max(x, 0); VJP: gx = gy [x > 0] (0 at the kink, as PyTorch; the mask has no derivative) */
UNARY(relu, v < 0 ? 0.0 : v, v < 0 ? 0.0f : v)
ad_var ad_relu(ad_var x) { return unary(AD_OP_RELU, x, 0, 0, ONE(relu)); }
VJP(relu) { gx[0] = ad_mul(gy, ad__step(X, 0.0, 1.0)); }
JVP(relu) { return ad_mul(TX, ad__step(X, 0.0, 1.0)); }
/* fast path: a select, which vectorizes (GCC does not if-convert the product);
** the same as gy [x > 0] for finite gy (an Inf or NaN gy gives 0 where x <= 0, as PyTorch) */
FAST(relu, x > 0 ? g : 0.0, x > 0 ? g : 0.0f)

/* leaky_relu: y = x > 0 ? x : s x; VJP: gx = gy (x > 0 ? 1 : s) (s at the kink x = 0, as PyTorch) */
UNARY(leaky_relu, v > 0 ? v : c0 * v, v > 0 ? v : c0 * v)
ad_var ad_leaky_relu(ad_var x, double slope) { return unary(AD_OP_LEAKY_RELU, x, slope, 0, ONE(leaky_relu)); }
VJP(leaky_relu) { gx[0] = ad_mul(gy, ad__step(X, n->attr.f[0], 1.0)); }
JVP(leaky_relu) { return ad_mul(TX, ad__step(X, n->attr.f[0], 1.0)); }
FAST(leaky_relu, g * (x > 0 ? 1.0 : c0), g * (x > 0 ? 1.0f : c0))

/* elu: y = x > 0 ? x : a (e^x - 1); VJP: gx = gy (x > 0 ? 1 : a e^min(x, 0)) (a at the kink x = 0,
** as PyTorch). a e^x rather than y + a: no cancellation in the tail (x = -30: PyTorch's y + a is
** off by 2e-4 relative in F64; F32 gives 0 from x = -17), and min(x, 0) keeps the unused
** branch finite, so x = +Inf gives 1, not 0 * Inf. The tangent rule is the same slope. */
UNARY(elu, v > 0 ? v : c0 * expm1(v), v > 0 ? v : c0 * expm1f(v))
ad_var ad_elu(ad_var x, double alpha) { return unary(AD_OP_ELU, x, alpha, 0, ONE(elu)); }
static ad_var elu_slope(ad_var x, double alpha)
{
    ad_var left = ad_mul_scalar(ad_exp(ad_clamp(x, -INFINITY, 0.0)), alpha);
    return ad_add(ad__step(x, 0.0, 1.0), ad_mul(ad__step(x, 1.0, 0.0), left));
}
VJP(elu) { gx[0] = ad_mul(gy, elu_slope(X, n->attr.f[0])); }
JVP(elu) { return ad_mul(TX, elu_slope(X, n->attr.f[0])); }

/* x clamped to +-1e15, for the factor x of x e^(-x^2/2) and the like: e^(-x^2/2) is 0 in both
** dtypes from |x| = 39 on, so this changes nothing but the tails, where the product becomes the
** limit 0 instead of Inf * 0 (x = +-Inf, or F32 x^2 or 2x overflowing); the clamp's mask makes
** the derivative of that factor 0 there too. */
static ad_var finite_tails(ad_var x) { return ad_clamp(x, -1e15, 1e15); }

/* gelu: y = x Phi(x) = x/2 erfc(-x/sqrt2) (the limit -0 at x = -Inf); VJP: gx = gy (Phi(x) + x phi(x)),
** Phi through erfc as in the forward, so the left tail keeps its digits (1 + erf(x/sqrt2) is 0 from
** x = -8.3 in F64), and x phi(x) is 0, not Inf * 0, at +-Inf: gelu'(+Inf) = 1, gelu'(-Inf) = 0;
** the tangent rule is the same slope: ty = tx gelu'(x) */
UNARY(gelu, v == -INFINITY ? -0.0 : 0.5 * v * erfc(-v * SQRT1_2),
      v == -INFINITY ? -0.0f : 0.5f * v * erfcf(-v * (float)SQRT1_2))
ad_var ad_gelu(ad_var x) { return unary(AD_OP_GELU, x, 0, 0, ONE(gelu)); }
static ad_var gelu_slope(ad_var x)
{
    ad_var xf = finite_tails(x);
    ad_var Phi = ad_mul_scalar(ad_erfc(ad_mul_scalar(x, -SQRT1_2)), 0.5);
    ad_var phi = ad_mul_scalar(ad_exp(ad_mul_scalar(ad_square(xf), -0.5)), INV_SQRT_2PI);
    return ad_add(Phi, ad_mul(xf, phi));
}
VJP(gelu) { gx[0] = ad_mul(gy, gelu_slope(X)); }
JVP(gelu) { return ad_mul(TX, gelu_slope(X)); }

/* softplus: y = ln(1 + e^x), computed without overflow; VJP: gx = gy sigmoid(x) */
UNARY(softplus, v > 0 ? v + log1p(exp(-v)) : log1p(exp(v)), v > 0 ? v + log1pf(expf(-v)) : log1pf(expf(v)))
ad_var ad_softplus(ad_var x) { return unary(AD_OP_SOFTPLUS, x, 0, 0, ONE(softplus)); }
VJP(softplus) { gx[0] = ad_mul(gy, ad_sigmoid(X)); }
JVP(softplus) { return ad_mul(TX, ad_sigmoid(X)); }

/* erf: y = erf x; VJP: gx = gy 2/sqrt(pi) e^(-x^2) (x through finite_tails: the second
** derivative -2x e^(-x^2) is 0 at +-Inf, not Inf * 0) */
UNARY(erf, erf(v), erff(v))
ad_var ad_erf(ad_var x) { return unary(AD_OP_ERF, x, 0, 0, ONE(erf)); }
VJP(erf) { gx[0] = ad_mul(gy, ad_mul_scalar(ad_exp(ad_neg(ad_square(finite_tails(X)))), TWO_INV_SQRT_PI)); }
JVP(erf) { return ad_mul(TX, ad_mul_scalar(ad_exp(ad_neg(ad_square(finite_tails(X)))), TWO_INV_SQRT_PI)); }

/* erfc: y = erfc x = 1 - erf x, with its digits where erf x is near 1; VJP: gx = -gy 2/sqrt(pi) e^(-x^2) */
UNARY(erfc, erfc(v), erfcf(v))
ad_var ad_erfc(ad_var x) { return unary(AD_OP_ERFC, x, 0, 0, ONE(erfc)); }
VJP(erfc) { gx[0] = ad_mul(gy, ad_mul_scalar(ad_exp(ad_neg(ad_square(finite_tails(X)))), -TWO_INV_SQRT_PI)); }
JVP(erfc) { return ad_mul(TX, ad_mul_scalar(ad_exp(ad_neg(ad_square(finite_tails(X)))), -TWO_INV_SQRT_PI)); }

/* clamp: y = min(max(x, lo), hi); VJP: gx = gy [lo <= x <= hi] (bounds inclusive, as PyTorch) */
UNARY(clamp, v < c0 ? c0 : (v > c1 ? c1 : v), v < c0 ? c0 : (v > c1 ? c1 : v))
ad_var ad_clamp(ad_var x, double lo, double hi)
{
    if (lo > hi && x.tape && x.tape->status == AD_OK) {
        ad__fail(x.tape, AD_ERR_ARG, "ad_clamp: lo %g is greater than hi %g", lo, hi);
        return ad__invalid(x.tape);
    }
    return unary(AD_OP_CLAMP, x, lo, hi, ONE(clamp));
}
VJP(clamp) { gx[0] = ad_mul(gy, ad__inrange(X, n->attr.f[0], n->attr.f[1])); }
JVP(clamp) { return ad_mul(TX, ad__inrange(X, n->attr.f[0], n->attr.f[1])); }

/* ---- masks: not differentiable ---- */

/* sign: y = x > 0 ? 1 : x < 0 ? -1 : 0 */
UNARY(sign, v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0 * v), v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f * v))
ad_var ad_sign(ad_var x) { return unary(AD_OP_SIGN, x, 0, 0, ONE(sign)); }
VJP(sign) {}

/* step: y = x > 0 ? hi : lo */
UNARY(step, v > 0 ? c1 : c0, v > 0 ? c1 : c0)
ad_var ad__step(ad_var x, double lo, double hi) { return unary(AD_OP_STEP, x, lo, hi, ONE(step)); }
VJP(step) {}

/* inrange: y = lo <= x <= hi ? 1 : 0 */
UNARY(inrange, (v >= c0 && v <= c1) ? 1.0 : 0.0, (v >= c0 && v <= c1) ? 1.0f : 0.0f)
ad_var ad__inrange(ad_var x, double lo, double hi) { return unary(AD_OP_INRANGE, x, lo, hi, ONE(inrange)); }
VJP(inrange) {}

/* The one-element F64 formulas of the unary ops, by op (NULL for the others): the steps of
** replay's scalar program (replay.c) call them, so that a replayed node computes exactly what
** the recording and the op's forward computed. */
#define AD_ONE64_unary(ID, name) [AD_OP_##ID] = name##_one64,
const ad_unary64_fn ad__unary_one64[AD_OP_COUNT] = {
#include "one64_table.inc"
};

/* The fast VJPs' one-element F64 formulas, by op (ad__unary_grad64, tape.h): add_scalar's
** passes gy through (ad__gpass: the same value, written or added). */
static inline double pass_gx64(double g, double x, double y, double c0)
{
    (void)x;
    (void)y;
    (void)c0;
    return g;
}
const ad_unary_grad64_fn ad__unary_grad64[AD_OP_COUNT] = {
    [AD_OP_ADD_SCALAR] = pass_gx64, [AD_OP_MUL_SCALAR] = mul_scalar_gx64, [AD_OP_NEG] = neg_gx64,
    [AD_OP_EXP] = exp_gx64,         [AD_OP_LOG] = log_gx64,               [AD_OP_SQRT] = sqrt_gx64,
    [AD_OP_SQUARE] = square_gx64,   [AD_OP_SIN] = sin_gx64,               [AD_OP_COS] = cos_gx64,
    [AD_OP_TANH] = tanh_gx64,       [AD_OP_SIGMOID] = sigmoid_gx64,       [AD_OP_RELU] = relu_gx64,
    [AD_OP_LEAKY_RELU] = leaky_relu_gx64,
};

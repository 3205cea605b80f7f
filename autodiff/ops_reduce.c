/* ops_reduce.c: sums, means, maxima, log-sum-exp and softmax over all elements or one axis. */
#include "jvp.h"
#include "vjp.h"
#include "vmath.h"

#include <math.h>


/* The reduced axis splits x into [outer, len, inner]. */
typedef struct {
    int64_t outer, len, inner;
} split3;

static split3 split_at(const ad_tensor *x, int axis)
{
    split3 s = {1, x->shape[axis], 1};
    for (int i = 0; i < axis; i++) s.outer *= x->shape[i];
    for (int i = axis + 1; i < x->ndim; i++) s.inner *= x->shape[i];
    return s;
}

/* x's shape with dimension `axis` set to 1 (keepdim) or removed. */
static int reduced_shape(const ad_tensor *x, int axis, bool keepdim, int64_t *out)
{
    int k = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != axis)
            out[k++] = x->shape[i];
        else if (keepdim)
            out[k++] = 1;
    }
    return k;
}

/* gy reshaped so that it broadcasts against the node's input (the reduced axis kept as 1). */
static ad_var keep(ad_tape *t, const ad_node *n, ad_var g)
{
    const ad_tensor *x = ad__in(t, n, 0);
    int64_t shape[AD_MAX_DIMS];
    int nd = reduced_shape(x, (int)n->attr.i[0], true, shape);
    const ad_tensor *gv = ad_value(g);
    if (!gv || gv->ndim == nd) return g;
    return ad_reshape(g, nd, shape);
}

static ad_var expand(ad_tape *t, const ad_node *n, ad_var g)
{
    const ad_tensor *x = ad__in(t, n, 0);
    return ad_broadcast_to(g, x->ndim, x->shape);
}

/* ---- over all elements ---- */

static ad_var reduce_all(ad_op op, ad_var x)
{
    ad_tape *t;
    if (!ad__begin(ad__ops[op].name, 1, &x, &t)) return ad__invalid(t);
    return ad__emit(t, op, 1, &x, ad__val(x)->dtype, 0, NULL, NULL);
}

static double total(const ad_tensor *x)
{
    double acc = 0;
    if (x->dtype == AD_F64) {
        const double *d = x->data;
        for (int64_t i = 0; i < x->size; i++) acc += d[i];
    } else {
        const float *d = x->data;
        for (int64_t i = 0; i < x->size; i++) acc += d[i];
    }
    return acc;
}

/* sum: y = sum_i x_i; VJP: gx = broadcast(gy) */
ad_var ad_sum(ad_var x) { return reduce_all(AD_OP_SUM, x); }
ad_status ad__fwd_sum(ad_tape *t, ad_node *n)
{
    ad_tensor_set(&n->value, 0, total(ad__in(t, n, 0)));
    return AD_OK;
}
VJP(sum) { gx[0] = expand(t, n, gy); }
/* Tangent rules (jvp.h), beside each VJP: TX is the input's tangent. */
#define TX tx[0]
JVP(sum) { return ad_sum(TX); }
/* The fast path for sum and mean: every input element gets g (times 1/N). */
AD_CLONES static bool fast_fill(ad_sweep *sw, const ad_node *n, const ad_tensor *gy, double scale)
{
    ad_tape *t = sw->t;
    bool fresh;
    void *buf = ad__gslot(sw, n, 0, &fresh);
    if (!buf) return true;
    const ad_tensor *x = ad__in(t, n, 0);
    if (x->dtype == AD_F64) {
        double g = ((const double *)gy->data)[0] * scale, *o = buf;
        if (fresh) /* two loops, not a select in one: each vectorizes */
            for (int64_t i = 0; i < x->size; i++) o[i] = g;
        else
            for (int64_t i = 0; i < x->size; i++) o[i] += g;
    } else {
        float g = (float)(((const float *)gy->data)[0] * (float)scale), *o = buf;
        if (fresh)
            for (int64_t i = 0; i < x->size; i++) o[i] = g;
        else
            for (int64_t i = 0; i < x->size; i++) o[i] += g;
    }
    return true;
}
FAST_VJP(sum) { return fast_fill(sw, n, gy, 1.0); }

/* mean: y = sum_i x_i / N (NaN for N = 0); VJP: gx = broadcast(gy) / N */
ad_var ad_mean(ad_var x) { return reduce_all(AD_OP_MEAN, x); }
ad_status ad__fwd_mean(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0);
    ad_tensor_set(&n->value, 0, x->size ? total(x) / (double)x->size : (double)NAN);
    return AD_OK;
}
VJP(mean) { gx[0] = ad_mul_scalar(expand(t, n, gy), 1.0 / (double)ad__in(t, n, 0)->size); }
JVP(mean) { return ad_mean(TX); }
FAST_VJP(mean)
{
    return fast_fill(sw, n, gy, 1.0 / (double)ad__in(sw->t, n, 0)->size);
}

/* ---- over one axis ---- */

static ad_var reduce_axis(ad_op op, ad_var x, int axis, bool keepdim, bool nonempty)
{
    ad_tape *t;
    const char *name = ad__ops[op].name;
    if (!ad__begin(name, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, name, axis, v->ndim, &ax)) return ad__invalid(t);
    if (nonempty && v->shape[ax] == 0) {
        ad__fail(t, AD_ERR_SHAPE, "%s: cannot reduce axis %d of length 0", name, axis);
        return ad__invalid(t);
    }
    int64_t shape[AD_MAX_DIMS];
    int nd = reduced_shape(v, ax, keepdim, shape);
    ad_attr a = {{0}, {ax, keepdim}, NULL};
    return ad__emit(t, op, 1, &x, v->dtype, nd, shape, &a);
}

/* The folds over one axis: an initial value, a step folding in v, and the finish over len values. */
typedef enum fold { FOLD_SUM, FOLD_MEAN, FOLD_MAX } fold;
static AD_ALWAYS_INLINE double fold_init(fold f) { return f == FOLD_MAX ? -INFINITY : 0.0; }
static AD_ALWAYS_INLINE double fold_step(fold f, double acc, double v)
{
    if (f != FOLD_MAX) return acc + v;
    if (v > acc || isnan(v)) acc = v; /* NaN propagates */
    return acc;
}
static AD_ALWAYS_INLINE double fold_fin(fold f, double acc, int64_t len)
{
    return f == FOLD_MEAN ? (len ? acc / (double)len : (double)NAN) : acc;
}

/* The loops, once per element type: axis_fold_f64 and axis_fold_f32 (reduce_axis.inc). */
#define AXIS_BLOCK 64
#define T double
#define S f64
#include "reduce_axis.inc"
#undef T
#undef S
#define T float
#define S f32
#include "reduce_axis.inc"
#undef T
#undef S

/* The forward kernel of a fold over the axis attr.i[0]; inlined into each op's ISA clones. */
static AD_ALWAYS_INLINE ad_status axis_fwd(ad_tape *t, ad_node *n, fold f)
{
    const ad_tensor *x = ad__in(t, n, 0);
    split3 s = split_at(x, (int)n->attr.i[0]);
    if (x->dtype == AD_F64)
        axis_fold_f64(x, &n->value, s, f);
    else
        axis_fold_f32(x, &n->value, s, f);
    return AD_OK;
}

/* sum_axis: y = sum_k x[.., k, ..]; VJP: gx = broadcast(gy with the axis kept) */
ad_var ad_sum_axis(ad_var x, int axis, bool keepdim) { return reduce_axis(AD_OP_SUM_AXIS, x, axis, keepdim, false); }
AD_CLONES ad_status ad__fwd_sum_axis(ad_tape *t, ad_node *n) { return axis_fwd(t, n, FOLD_SUM); }
VJP(sum_axis) { gx[0] = expand(t, n, keep(t, n, gy)); }
JVP(sum_axis) { return ad_sum_axis(TX, (int)n->attr.i[0], n->attr.i[1]); }

/* mean_axis: y = sum_k x[.., k, ..] / K; VJP: gx = broadcast(gy) / K */
ad_var ad_mean_axis(ad_var x, int axis, bool keepdim)
{
    return reduce_axis(AD_OP_MEAN_AXIS, x, axis, keepdim, false);
}
AD_CLONES ad_status ad__fwd_mean_axis(ad_tape *t, ad_node *n) { return axis_fwd(t, n, FOLD_MEAN); }
VJP(mean_axis)
{
    double len = (double)ad__in(t, n, 0)->shape[n->attr.i[0]];
    gx[0] = ad_mul_scalar(expand(t, n, keep(t, n, gy)), 1.0 / len);
}
JVP(mean_axis) { return ad_mean_axis(TX, (int)n->attr.i[0], n->attr.i[1]); }

/* max_axis: y = max_k x[.., k, ..] (NaN propagates); VJP: gx = gy [x == y] / #ties (ties share, as torch.amax) */
ad_var ad_max_axis(ad_var x, int axis, bool keepdim) { return reduce_axis(AD_OP_MAX_AXIS, x, axis, keepdim, true); }
AD_CLONES ad_status ad__fwd_max_axis(ad_tape *t, ad_node *n) { return axis_fwd(t, n, FOLD_MAX); }
VJP(max_axis)
{
    ad_var mask = ad__eq(ad__inv(t, n, 0), keep(t, n, ad__var(t, self)));
    ad_var count = ad_sum_axis(mask, (int)n->attr.i[0], true);
    gx[0] = ad_mul(keep(t, n, gy), ad_div(mask, count));
}
JVP(max_axis)
{
    ad_var mask = ad__eq(ad__inv(t, n, 0), keep(t, n, ad__var(t, self)));
    ad_var count = ad_sum_axis(mask, (int)n->attr.i[0], true);
    return ad_sum_axis(ad_mul(TX, ad_div(mask, count)), (int)n->attr.i[0], n->attr.i[1]);
}

/* logsumexp: y = m + ln sum_k e^(x_k - m), m = max_k x_k (so no overflow);
** VJP: gx = gy e^(x - y) */
ad_var ad_logsumexp(ad_var x, int axis, bool keepdim)
{
    return reduce_axis(AD_OP_LOGSUMEXP, x, axis, keepdim, false);
}
#define LSE_LOOP(T)                                                                                      \
    do {                                                                                                 \
        const T *xd = x->data;                                                                           \
        T *yd = n->value.data;                                                                           \
        for (int64_t o = 0; o < s.outer; o++)                                                            \
            for (int64_t j = 0; j < s.inner; j++) {                                                      \
                const T *p = xd + o * s.len * s.inner + j;                                               \
                double m = -INFINITY;                                                                    \
                for (int64_t k = 0; k < s.len; k++)                                                      \
                    if (p[k * s.inner] > m || isnan(p[k * s.inner])) m = p[k * s.inner];                 \
                double r = m;                                                                            \
                if (isfinite(m)) {                                                                       \
                    double acc = 0;                                                                      \
                    for (int64_t k = 0; k < s.len; k++) acc += exp(p[k * s.inner] - m);                  \
                    r = m + log(acc);                                                                    \
                }                                                                                        \
                yd[o * s.inner + j] = (T)r;                                                              \
            }                                                                                            \
    } while (0)
ad_status ad__fwd_logsumexp(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0);
    split3 s = split_at(x, (int)n->attr.i[0]);
    if (x->dtype == AD_F64)
        LSE_LOOP(double);
    else
        LSE_LOOP(float);
    return AD_OK;
}
VJP(logsumexp)
{
    ad_var e = ad_exp(ad_sub(ad__inv(t, n, 0), keep(t, n, ad__var(t, self))));
    gx[0] = ad_mul(keep(t, n, gy), e);
}
JVP(logsumexp)
{
    ad_var e = ad_exp(ad_sub(ad__inv(t, n, 0), keep(t, n, ad__var(t, self))));
    return ad_sum_axis(ad_mul(TX, e), (int)n->attr.i[0], n->attr.i[1]);
}

/* ---- softmax and log_softmax: the axis stays ---- */

static ad_var softmax_like(ad_op op, ad_var x, int axis)
{
    ad_tape *t;
    const char *name = ad__ops[op].name;
    if (!ad__begin(name, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, name, axis, v->ndim, &ax)) return ad__invalid(t);
    ad_attr a = {{0}, {ax, 1}, NULL};
    return ad__emit(t, op, 1, &x, v->dtype, v->ndim, v->shape, &a);
}

/* One row of len elements st apart, from p into q; shifted by the row maximum, so logits of
** +-1e4 stay finite. */
#define SOFTMAX_ROW(T, p, q, len, st, LOG)                                                                             \
    do {                                                                                                               \
        double mx_ = -INFINITY;                                                                                        \
        for (int64_t k = 0; k < (len); k++)                                                                            \
            if ((p)[k * (st)] > mx_ || isnan((p)[k * (st)])) mx_ = (p)[k * (st)];                                      \
        if (!isfinite(mx_)) mx_ = isnan(mx_) ? mx_ : 0.0;                                                              \
        double acc_ = 0;                                                                                               \
        for (int64_t k = 0; k < (len); k++) acc_ += exp((p)[k * (st)] - mx_);                                          \
        double lacc_ = log(acc_);                                                                                      \
        for (int64_t k = 0; k < (len); k++) {                                                                          \
            double z_ = (p)[k * (st)] - mx_;                                                                           \
            (q)[k * (st)] = (T)((LOG) ? z_ - lacc_ : exp(z_) / acc_);                                                  \
        }                                                                                                              \
    } while (0)
#define SOFTMAX_LOOP(T, LOG)                                                                                           \
    do {                                                                                                               \
        const T *xd = x->data;                                                                                         \
        T *yd = n->value.data;                                                                                         \
        for (int64_t o = 0; o < s.outer; o++)                                                                          \
            for (int64_t j = 0; j < s.inner; j++)                                                                      \
                SOFTMAX_ROW(T, xd + o * s.len * s.inner + j, yd + o * s.len * s.inner + j, s.len, s.inner, LOG);       \
    } while (0)

/* F32 over a contiguous axis (inner = 1: a classifier's logits, [batch, classes]), rows whose
** maximum is finite: e^(x - m) by vmath.h's double exp, inlined and vectorized in each ISA clone,
** instead of a libm call per element. On bench_mlp's [64, 10] logits, log_softmax's forward and
** fast VJP with their tape steps took 7.65 us and take 4.37 (2-core Zen 5), on the one thread
** that runs them in a step of 2-thread products. The row's sum is still added in index order in
** double, its terms within ~1e-13 (relative) of libm's, so the float results are the general
** loop's except in rare near-halfway roundings. A row whose maximum is infinite or NaN takes the
** general loop's formula (its infinities and NaNs as before). */
enum { SOFTMAX_CHUNK = 64 };

/* e^z for z <= 0 (finite or -Inf): below -700 it is below any float, so z is clamped there. */
static inline double exp_nonpos(double z) { return ad__vm_exp_d(z > -700.0 ? z : -700.0); }

AD_CLONES static void softmax_rows_f32(const float *x, float *y, int64_t rows, int64_t len, bool log_out)
{
    double e[SOFTMAX_CHUNK];
    for (int64_t o = 0; o < rows; o++) {
        const float *p = x + o * len;
        float *q = y + o * len;
        double m = -INFINITY;
        for (int64_t k = 0; k < len; k++)
            if (p[k] > m || isnan(p[k])) m = p[k];
        if (!isfinite(m)) { /* the general loop's row, libm's exp on every element */
            SOFTMAX_ROW(float, p, q, len, 1, log_out);
            continue;
        }
        double acc = 0;
        for (int64_t k0 = 0; k0 < len; k0 += SOFTMAX_CHUNK) {
            int64_t nk = len - k0 < SOFTMAX_CHUNK ? len - k0 : SOFTMAX_CHUNK;
            for (int64_t k = 0; k < nk; k++) e[k] = exp_nonpos((double)p[k0 + k] - m);
            for (int64_t k = 0; k < nk; k++) acc += e[k];
        }
        if (log_out) {
            double lacc = log(acc);
            for (int64_t k = 0; k < len; k++) q[k] = (float)(((double)p[k] - m) - lacc);
        } else if (len <= SOFTMAX_CHUNK) { /* (the row's one chunk: its exps are still in e) */
            for (int64_t k = 0; k < len; k++) q[k] = (float)(e[k] / acc);
        } else {
            for (int64_t k = 0; k < len; k++) q[k] = (float)(exp_nonpos((double)p[k] - m) / acc);
        }
    }
}

/* softmax: y = e^(x - m) / sum_k e^(x_k - m); VJP: gx = y (gy - sum_k gy_k y_k) */
ad_var ad_softmax(ad_var x, int axis) { return softmax_like(AD_OP_SOFTMAX, x, axis); }
ad_status ad__fwd_softmax(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0);
    split3 s = split_at(x, (int)n->attr.i[0]);
    if (x->dtype == AD_F64)
        SOFTMAX_LOOP(double, 0);
    else if (s.inner == 1)
        softmax_rows_f32(x->data, n->value.data, s.outer, s.len, false);
    else
        SOFTMAX_LOOP(float, 0);
    return AD_OK;
}
VJP(softmax)
{
    ad_var y = ad__var(t, self);
    ad_var dot = ad_sum_axis(ad_mul(gy, y), (int)n->attr.i[0], true);
    gx[0] = ad_mul(y, ad_sub(gy, dot));
}
JVP(softmax)
{
    ad_var y = ad__var(t, self);
    return ad_mul(y, ad_sub(TX, ad_sum_axis(ad_mul(TX, y), (int)n->attr.i[0], true)));
}

/* log_softmax: y = x - m - ln sum_k e^(x_k - m); VJP: gx = gy - e^y sum_k gy_k */
ad_var ad_log_softmax(ad_var x, int axis) { return softmax_like(AD_OP_LOG_SOFTMAX, x, axis); }
ad_status ad__fwd_log_softmax(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0);
    split3 s = split_at(x, (int)n->attr.i[0]);
    if (x->dtype == AD_F64)
        SOFTMAX_LOOP(double, 1);
    else if (s.inner == 1)
        softmax_rows_f32(x->data, n->value.data, s.outer, s.len, true);
    else
        SOFTMAX_LOOP(float, 1);
    return AD_OK;
}
VJP(log_softmax)
{
    ad_var total_g = ad_sum_axis(gy, (int)n->attr.i[0], true);
    gx[0] = ad_sub(gy, ad_mul(ad_exp(ad__var(t, self)), total_g));
}
JVP(log_softmax) { return ad_sub(TX, ad_sum_axis(ad_mul(ad_exp(ad__var(t, self)), TX), (int)n->attr.i[0], true)); }
/* The fast path: the same formula row by row, gx (+)= gy - e^y sum_k gy_k, with no
** nodes recorded (with index_select's, a cross-entropy loss's backward records nothing). */
#define LOG_SOFTMAX_FAST(T, EXP)                                                                         \
    do {                                                                                                 \
        const T *g = gy->data, *y = n->value.data;                                                       \
        T *d = buf;                                                                                      \
        for (int64_t o = 0; o < s.outer; o++)                                                            \
            for (int64_t j = 0; j < s.inner; j++) {                                                      \
                int64_t at = o * s.len * s.inner + j;                                                    \
                T total = 0;                                                                             \
                for (int64_t k = 0; k < s.len; k++) total += g[at + k * s.inner];                        \
                for (int64_t k = 0; k < s.len; k++) {                                                    \
                    int64_t i = at + k * s.inner;                                                        \
                    T v = g[i] - EXP(y[i]) * total;                                                      \
                    d[i] = fresh ? v : d[i] + v;                                                         \
                }                                                                                        \
            }                                                                                            \
    } while (0)

/* The same for F32 over a contiguous axis, as a loop the ISA clones vectorize (the exps). */
AD_CLONES static void log_softmax_vjp_rows_f32(const float *g, const float *y, float *d, int64_t rows, int64_t len,
                                               bool fresh)
{
    for (int64_t o = 0; o < rows; o++) {
        const float *gr = g + o * len, *yr = y + o * len;
        float *dr = d + o * len, total = 0;
        for (int64_t k = 0; k < len; k++) total += gr[k];
        if (fresh)
            for (int64_t k = 0; k < len; k++) dr[k] = gr[k] - ad__vm_expf(yr[k]) * total;
        else
            for (int64_t k = 0; k < len; k++) dr[k] += gr[k] - ad__vm_expf(yr[k]) * total;
    }
}

FAST_VJP(log_softmax)
{
    bool fresh;
    void *buf = ad__gslot(sw, n, 0, &fresh);
    if (!buf) return true;
    split3 s = split_at(&n->value, (int)n->attr.i[0]);
    if (gy->dtype == AD_F64)
        LOG_SOFTMAX_FAST(double, exp);
    else if (s.inner == 1)
        log_softmax_vjp_rows_f32(gy->data, n->value.data, buf, s.outer, s.len, fresh);
    else
        LOG_SOFTMAX_FAST(float, ad__vm_expf); /* as the recorded path's ad_exp in F32 */
    return true;
}

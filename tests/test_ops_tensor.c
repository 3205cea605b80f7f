/* test_ops_tensor.c: op-table entries for reductions, softmax, matmul and the shape ops. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "test_ops.h"

/* Attributes for the ad_fn wrappers below: an axis, a flag, a shape, indices. */
typedef struct args {
    int axis, axis2;
    bool keep;
    shp shape;
    int64_t start, stop;
    int64_t n;
    const int64_t *idx;
} args;

/* ================= reductions ================= */

static ad_var f_sum(ad_tape *t, const ad_var *x, void *c) { return ad_sum(x[0]); }
static ad_var f_mean(ad_tape *t, const ad_var *x, void *c) { return ad_mean(x[0]); }
static ad_var f_sum_axis(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_sum_axis(x[0], a->axis, a->keep);
}
static ad_var f_mean_axis(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_mean_axis(x[0], a->axis, a->keep);
}
static ad_var f_max_axis(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_max_axis(x[0], a->axis, a->keep);
}
static ad_var f_logsumexp(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_logsumexp(x[0], a->axis, a->keep);
}
static ad_var f_sum_to(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_sum_to(x[0], a->shape.nd, a->shape.d);
}
static ad_var f_softmax(ad_tape *t, const ad_var *x, void *c) { return ad_softmax(x[0], ((const args *)c)->axis); }
static ad_var f_log_softmax(ad_tape *t, const ad_var *x, void *c)
{
    return ad_log_softmax(x[0], ((const args *)c)->axis);
}

/* C reference of a reduction of x [outer, len, inner] along the middle axis. */
typedef double (*fold_fn)(const double *p, int64_t len, int64_t stride);
static double fold_sum(const double *p, int64_t len, int64_t st)
{
    double s = 0;
    for (int64_t k = 0; k < len; k++) s += p[k * st];
    return s;
}
static double fold_mean(const double *p, int64_t len, int64_t st) { return fold_sum(p, len, st) / (double)len; }
static double fold_max(const double *p, int64_t len, int64_t st)
{
    double m = -INFINITY;
    for (int64_t k = 0; k < len; k++) m = p[k * st] > m ? p[k * st] : m;
    return m;
}
static double fold_lse(const double *p, int64_t len, int64_t st)
{
    double m = fold_max(p, len, st), s = 0;
    for (int64_t k = 0; k < len; k++) s += exp(p[k * st] - m);
    return m + log(s);
}

/* y = reduce(x, axis, keep) for every axis and both keepdims on a [2,3,4] tensor, against fold; and gradcheck. */
static void axis_reduction(ad_op op, ad_fn f, fold_fn fold, bool distinct)
{
    ad_tensor *x = input(SH(2, 3, 4), -2, 2, false);
    if (distinct) /* a shuffled ladder of values 0.1 apart: no ties anywhere */
        for (int64_t i = 0; i < 24; i++) ad_tensor_set(x, i, 0.1 * (double)((i * 7) % 24) - 1.0);
    for (int axis = -3; axis < 3; axis++)
        for (int keep = 0; keep < 2; keep++) {
            args a = {.axis = axis, .keep = keep};
            rig r = rig_new();
            ad_var y = f(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
            expect_op(y, op);
            int ax = axis < 0 ? axis + 3 : axis;
            const ad_tensor *v = ad_value(y);
            ck_assert_int_eq(v->ndim, keep ? 3 : 2);
            int64_t outer = 1, inner = 1, len = x->shape[ax];
            for (int i = 0; i < ax; i++) outer *= x->shape[i];
            for (int i = ax + 1; i < 3; i++) inner *= x->shape[i];
            ck_assert_int_eq(v->size, outer * inner);
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < inner; j++) {
                    double want = fold((const double *)x->data + o * len * inner + j, len, inner);
                    TU_ASSERT_CLOSE(ad_tensor_get(v, o * inner + j), want, 1e-15, 1e-14);
                }
            rig_free(&r);
            gc_n(ad__ops[op].name, f, &a, 1, (const ad_tensor *const *)&x);
        }
    /* f32 agrees with f64 */
    args a = {.axis = 1, .keep = false};
    f32_agrees(ad__ops[op].name, f, &a, 1, (const ad_tensor *const *)&x, 1e-5);
    ad_tensor_free(x);
    /* a size-1 axis and a [1] vector */
    for (int i = 0; i < 2; i++) {
        args b = {.axis = i == 0 ? 1 : 0, .keep = i == 0};
        shp s = i == 0 ? SH(3, 1) : SH(1);
        gc_shapes(ad__ops[op].name, f, &b, 1, &s, -1, 1, false);
    }
}

void t_sum(void)
{
    rig r = rig_new();
    ad_tensor *x = input(SH(2, 3, 4), -1, 1, false);
    ad_var y = ad_sum(rig_leaf(&r, x));
    expect_op(y, AD_OP_SUM);
    ck_assert_int_eq(ad_value(y)->ndim, 0);
    TU_ASSERT_CLOSE(ad_item(y), fold_sum(x->data, 24, 1), 1e-15, 1e-14);
    ad_var e = ad_sum(rig_leaf(&r, input(SH(0, 3), -1, 1, false)));
    ck_assert(ad_item(e) == 0.0);
    rig_free(&r);
    const shp shapes[] = {SH(2, 3, 4), SCALAR, SH(0, 3), SH(1)};
    for (int i = 0; i < 4; i++) gc_shapes("ad_sum", f_sum, NULL, 1, &shapes[i], -1, 1, false);
}

void t_mean(void)
{
    rig r = rig_new();
    ad_tensor *x = input(SH(3, 5), -1, 1, false);
    ad_var y = ad_mean(rig_leaf(&r, x));
    expect_op(y, AD_OP_MEAN);
    TU_ASSERT_CLOSE(ad_item(y), fold_sum(x->data, 15, 1) / 15.0, 1e-15, 1e-14);
    ad_var e = ad_mean(rig_leaf(&r, input(SH(0), -1, 1, false)));
    ck_assert(isnan(ad_item(e))); /* NaN for an empty tensor */
    rig_free(&r);
    const shp shapes[] = {SH(3, 5), SCALAR, SH(0, 2), SH(1, 1)};
    for (int i = 0; i < 4; i++) gc_shapes("ad_mean", f_mean, NULL, 1, &shapes[i], -1, 1, false);
}

void t_sum_axis(void)
{
    axis_reduction(AD_OP_SUM_AXIS, f_sum_axis, fold_sum, false);
    /* over an empty tensor: an empty axis sums to zeros, a kept empty one stays empty */
    rig r = rig_new();
    ad_var x = rig_leaf(&r, input(SH(3, 0), -1, 1, false));
    ad_var y = ad_sum_axis(x, 1, false), z = ad_sum_axis(x, 0, true);
    tu_assert_shape(ad_value(y), AD_SHAPE(3));
    tu_assert_values(ad_value(y), (double[]){0, 0, 0}, 0, 0);
    tu_assert_shape(ad_value(z), AD_SHAPE(1, 0));
    rig_free(&r);
    args a = {.axis = 1, .keep = false};
    shp s = SH(3, 0);
    gc_shapes("ad_sum_axis", f_sum_axis, &a, 1, &s, -1, 1, false);
}

void t_mean_axis(void) { axis_reduction(AD_OP_MEAN_AXIS, f_mean_axis, fold_mean, false); }

void t_max_axis(void)
{
    axis_reduction(AD_OP_MAX_AXIS, f_max_axis, fold_max, true);
    /* ties share the gradient equally */
    rig r = rig_new();
    ad_var x = rig_leaf(&r, tu_f64(AD_SHAPE(2, 3), (double[]){1, 3, 3, 5, 2, 5}));
    ad_var y = ad_max_axis(x, 1, false);
    tu_assert_values(ad_value(y), (double[]){3, 5}, 0, 0);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){0, 0.5, 0.5, 0.5, 0, 0.5}, 0, 0);
    rig_free(&r);
}

void t_logsumexp(void)
{
    axis_reduction(AD_OP_LOGSUMEXP, f_logsumexp, fold_lse, false);
    /* logits of +-1e4 stay finite and exact */
    rig r = rig_new();
    ad_var x = rig_leaf(&r, tu_f64(AD_SHAPE(3, 2), (double[]){1e4, 1e4, -1e4, -1e4, 1e4, -1e4}));
    ad_var y = ad_logsumexp(x, -1, true);
    tu_assert_shape(ad_value(y), AD_SHAPE(3, 1));
    tu_assert_values(ad_value(y), (double[]){1e4 + log(2.0), -1e4 + log(2.0), 1e4}, 0, 1e-15);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    /* e^(x - y) with |x| = 1e4 keeps about 12 digits: y is rounded at 1e4's ulp */
    tu_assert_values(ad_grad(x), (double[]){0.5, 0.5, 0.5, 0.5, 1, 0}, 1e-11, 1e-11);
    rig_free(&r);
}

void t_sum_to(void)
{
    const shp targets[] = {SH(3, 1), SH(4), SCALAR, SH(1, 3, 4), SH(2, 1, 4), SH(2, 3, 4)};
    ad_tensor *x = input(SH(2, 3, 4), -1, 1, false);
    for (size_t k = 0; k < sizeof targets / sizeof targets[0]; k++) {
        args a = {.shape = targets[k]};
        rig r = rig_new();
        ad_var y = ad_sum_to(ad_leaf(r.t, x), a.shape.nd, a.shape.d);
        expect_op(y, AD_OP_SUM_TO);
        const ad_tensor *v = ad_value(y);
        ck_assert(ad_ok(y));
        tu_assert_shape(v, a.shape.nd, a.shape.d);
        /* reference: every x element added into its broadcast position */
        double acc[24] = {0};
        for (int64_t i = 0; i < 24; i++) acc[bcast_index(v, 3, x->shape, i)] += ad_tensor_get(x, i);
        tu_assert_values(v, acc, 1e-15, 1e-14);
        rig_free(&r);
        gc_n("ad_sum_to", f_sum_to, &a, 1, (const ad_tensor *const *)&x);
    }
    ad_tensor_free(x);
    args e = {.shape = SH(1, 4)};
    shp s = SH(0, 4);
    gc_shapes("ad_sum_to (empty)", f_sum_to, &e, 1, &s, -1, 1, false);
    rig r = rig_new();
    ad_var z = ad_sum_to(rig_leaf(&r, input(SH(0, 4), -1, 1, false)), AD_SHAPE(1, 4));
    tu_assert_values(ad_value(z), (double[]){0, 0, 0, 0}, 0, 0);
    ck_assert(!ad_ok(ad_sum_to(rig_leaf(&r, input(SH(2, 3), -1, 1, false)), AD_SHAPE(2, 2))));
    ck_assert_int_eq(ad_tape_status(r.t), AD_ERR_SHAPE);
    rig_free(&r);
}

/* softmax / log_softmax against C along each axis, plus extremes. */
static void softmax_family(ad_op op, ad_fn f, bool log_form)
{
    ad_tensor *x = input(SH(3, 4), -3, 3, false);
    for (int axis = -2; axis < 2; axis++) {
        args a = {.axis = axis};
        rig r = rig_new();
        ad_var y = f(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, op);
        int ax = axis < 0 ? axis + 2 : axis;
        int64_t len = x->shape[ax], st = ax == 0 ? 4 : 1, rows = ax == 0 ? 4 : 3, rst = ax == 0 ? 1 : 4;
        const double *xd = x->data;
        for (int64_t row = 0; row < rows; row++) {
            double lse = fold_lse(xd + row * rst, len, st), total = 0;
            for (int64_t k = 0; k < len; k++) {
                int64_t i = row * rst + k * st;
                double want = log_form ? xd[i] - lse : exp(xd[i] - lse);
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), i), want, 1e-15, 1e-13);
                total += exp(log_form ? ad_tensor_get(ad_value(y), i) : log(ad_tensor_get(ad_value(y), i)));
            }
            TU_ASSERT_CLOSE(total, 1.0, 1e-14, 0);
        }
        rig_free(&r);
        gc_n(ad__ops[op].name, f, &a, 1, (const ad_tensor *const *)&x);
    }
    args a = {.axis = -1};
    f32_agrees(ad__ops[op].name, f, &a, 1, (const ad_tensor *const *)&x, 1e-5);
    ad_tensor_free(x);
    /* a [1,5] row, a single-class axis, a 1-D vector */
    const shp shapes[] = {SH(1, 5), SH(4, 1), SH(3)};
    for (int i = 0; i < 3; i++) gc_shapes(ad__ops[op].name, f, &a, 1, &shapes[i], -2, 2, false);
    /* logits of +-1e4: finite and right, in both dtypes */
    const double big[6] = {1e4, 0, -1e4, -1e4, -1e4, -1e4};
    for (int d = 0; d < 2; d++) {
        rig r = rig_new();
        ad_tensor *xb = tu_f64(AD_SHAPE(2, 3), big);
        if (d) {
            ad_tensor *x32 = tu_to_f32(xb);
            ad_tensor_free(xb);
            xb = x32;
        }
        ad_var xv = rig_leaf(&r, xb);
        ad_var y = f(r.t, &xv, &a);
        ck_assert(ad__all_finite(ad_value(y)));
        double third = log(1.0 / 3.0);
        if (log_form)
            tu_assert_values(ad_value(y), (double[]){0, -1e4, -2e4, third, third, third}, 1e-6, 1e-7);
        else
            tu_assert_values(ad_value(y), (double[]){1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-7, 1e-6);
        ad_tensor *seed = ad_tensor_new(d ? AD_F32 : AD_F64, AD_SHAPE(2, 3));
        ad_tensor_fill(seed, 1.0);
        ad_tensor_set(seed, 0, 2.0);
        ck_assert_int_eq(ad_backward(y, seed, 0), AD_OK);
        ck_assert(ad__all_finite(ad_grad(xv)));
        ad_tensor_free(seed);
        rig_free(&r);
    }
}

/* log_softmax twice on one input: the second fast VJP adds into the slot the first wrote. */
static ad_var f_log_softmax_twice(ad_tape *t, const ad_var *x, void *c)
{
    return ad_add(ad_log_softmax(x[0], -1), ad_mul_scalar(ad_log_softmax(x[0], -1), 0.5));
}

/* F32 along a contiguous axis (ops_reduce.c's vectorized rows): rows longer than its 64-element
** chunks, one with a -Inf entry, and rows whose maximum is +Inf or NaN (the general loop there),
** against the formula in double on the same float inputs; the gradients against F64's. */
static void softmax_f32_rows(ad_fn f, bool log_form)
{
    enum { R = 4, L = 150 };
    ad_tensor *x64 = input(SH(R, L), -30, 30, false);
    args a = {.axis = -1};
    f32_agrees(log_form ? "log_softmax [4,150]" : "softmax [4,150]", f, &a, 1, (const ad_tensor *const *)&x64, 1e-5);
    if (log_form) f32_agrees("log_softmax twice", f_log_softmax_twice, &a, 1, (const ad_tensor *const *)&x64, 1e-5);
    double *xd = x64->data;
    xd[1 * L + 7] = -INFINITY;
    xd[2 * L + 100] = INFINITY;
    xd[3 * L + 3] = NAN;
    ad_tensor *x32 = tu_to_f32(x64);
    rig r = rig_new();
    const ad_tensor *y = ad_value(f(r.t, (ad_var[]){rig_leaf(&r, x32)}, &a));
    ck_assert_int_eq(y->dtype, AD_F32);
    for (int64_t row = 0; row < 2; row++) { /* finite maxima */
        const float *p = (const float *)x32->data + row * L;
        double m = -INFINITY, s = 0;
        for (int64_t k = 0; k < L; k++) m = p[k] > m ? p[k] : m;
        for (int64_t k = 0; k < L; k++) s += exp(p[k] - m);
        for (int64_t k = 0; k < L; k++) {
            double want = log_form ? (p[k] - m) - log(s) : exp(p[k] - m) / s, got = ad_tensor_get(y, row * L + k);
            if (isinf(want))
                ck_assert(got == want);
            else
                TU_ASSERT_CLOSE(got, want, 1e-6, 3e-7);
        }
    }
    for (int64_t k = 0; k < L; k++) { /* +Inf: NaN where it is, -Inf (log) or 0 elsewhere; NaN: all NaN */
        double inf_row = ad_tensor_get(y, 2 * L + k), nan_row = ad_tensor_get(y, 3 * L + k);
        if (k == 100)
            ck_assert(isnan(inf_row));
        else
            ck_assert(log_form ? inf_row == -INFINITY : inf_row == 0);
        ck_assert(isnan(nan_row));
    }
    rig_free(&r);
    ad_tensor_free(x64);
}

void t_softmax(void)
{
    softmax_family(AD_OP_SOFTMAX, f_softmax, false);
    softmax_f32_rows(f_softmax, false);
}
void t_log_softmax(void)
{
    softmax_family(AD_OP_LOG_SOFTMAX, f_log_softmax, true);
    softmax_f32_rows(f_log_softmax, true);
}

/* ================= matmul ================= */

typedef struct mm_args {
    bool ta, tb;
} mm_args;

static ad_var f_matmul(ad_tape *t, const ad_var *x, void *c)
{
    const mm_args *m = c;
    return m ? ad_matmul_t(x[0], x[1], m->ta, m->tb) : ad_matmul(x[0], x[1]);
}

/* C reference of a @ b for 2-D a [m,k] (or [k,m] with ta) and b [k,n] (or [n,k] with tb). */
static double mm_ref(const ad_tensor *a, const ad_tensor *b, int64_t aoff, int64_t boff, bool ta, bool tb, int64_t i,
                     int64_t j, int64_t k)
{
    int64_t lda = a->shape[a->ndim - 1], ldb = b->shape[b->ndim - 1];
    double s = 0;
    for (int64_t p = 0; p < k; p++) {
        double av = ad_tensor_get(a, aoff + (ta ? p * lda + i : i * lda + p));
        double bv = ad_tensor_get(b, boff + (tb ? j * ldb + p : p * ldb + j));
        s += av * bv;
    }
    return s;
}

/* Checks op(a) @ op(b) for 2-D or batched (broadcast) operands against the C reference, and gradchecks it. */
static void mm_case(shp sa, shp sb, bool ta, bool tb, shp want)
{
    ad_tensor *a = input(sa, -1, 1, false), *b = input(sb, -1, 1, false);
    mm_args m = {ta, tb};
    rig r = rig_new();
    ad_var y = ad_matmul_t(ad_leaf(r.t, a), ad_leaf(r.t, b), ta, tb);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(r.t));
    const ad_tensor *v = ad_value(y);
    tu_assert_shape(v, want.nd, want.d);
    if (sa.nd >= 2 && sb.nd >= 2) {
        expect_op(y, AD_OP_MATMUL);
        int nb = v->ndim - 2;
        int64_t mm = v->shape[nb], nn = v->shape[nb + 1], k = a->shape[a->ndim - (ta ? 2 : 1)];
        int64_t amat = a->shape[a->ndim - 2] * a->shape[a->ndim - 1],
                bmat = b->shape[b->ndim - 2] * b->shape[b->ndim - 1];
        int64_t batches = (mm > 0 && nn > 0) ? v->size / (mm * nn) : 0;
        /* batch index -> matrix index in a and b, by broadcasting over the batch shape */
        ad_tensor ab = *a, bb = *b;
        ab.ndim = a->ndim - 2;
        bb.ndim = b->ndim - 2;
        for (int64_t bi = 0; bi < batches; bi++)
            for (int64_t i = 0; i < mm; i++)
                for (int64_t j = 0; j < nn; j++) {
                    int64_t ai = nb ? bcast_index(&ab, nb, v->shape, bi) : 0,
                            bj = nb ? bcast_index(&bb, nb, v->shape, bi) : 0;
                    double w = mm_ref(a, b, ai * amat, bj * bmat, ta, tb, i, j, k);
                    TU_ASSERT_CLOSE(ad_tensor_get(v, (bi * mm + i) * nn + j), w, 1e-15, 1e-13);
                }
    }
    rig_free(&r);
    gc_n("ad_matmul", f_matmul, &m, 2, (const ad_tensor *const[]){a, b});
    ad_tensor_free(a);
    ad_tensor_free(b);
}

void t_matmul(void)
{
    mm_case(SH(3, 4), SH(4, 2), false, false, SH(3, 2));
    mm_case(SH(4, 3), SH(4, 2), true, false, SH(3, 2));
    mm_case(SH(3, 4), SH(2, 4), false, true, SH(3, 2));
    mm_case(SH(4, 3), SH(2, 4), true, true, SH(3, 2));
    mm_case(SH(2, 3, 4), SH(4, 5), false, false, SH(2, 3, 5));
    mm_case(SH(2, 1, 3, 4), SH(3, 4, 2), false, false, SH(2, 3, 3, 2));
    mm_case(SH(2, 1, 4, 3), SH(3, 2, 4), true, true, SH(2, 3, 3, 2));
    mm_case(SH(1, 1), SH(1, 1), false, false, SH(1, 1));
    /* vectors as in numpy.matmul */
    mm_case(SH(4), SH(4, 2), false, false, SH(2));
    mm_case(SH(3, 4), SH(4), false, false, SH(3));
    mm_case(SH(4), SH(4), false, false, SCALAR);
    mm_case(SH(2, 3, 4), SH(4), false, false, SH(2, 3));
    /* empty: k = 0 gives zeros; m = 0 gives an empty result */
    mm_case(SH(3, 0), SH(0, 2), false, false, SH(3, 2));
    mm_case(SH(0, 4), SH(4, 2), false, false, SH(0, 2));
    rig r = rig_new();
    ad_var z = ad_matmul(rig_leaf(&r, input(SH(3, 0), -1, 1, false)), rig_leaf(&r, input(SH(0, 2), -1, 1, false)));
    tu_assert_values(ad_value(z), (double[]){0, 0, 0, 0, 0, 0}, 0, 0);
    ck_assert(!ad_ok(
        ad_matmul(rig_leaf(&r, input(SH(2, 3, 4), -1, 1, false)), rig_leaf(&r, input(SH(3, 4, 2), -1, 1, false)))));
    ck_assert_int_eq(ad_tape_status(r.t), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(r.t), "ad_matmul: batch dimensions do not broadcast: [2,3,4] x [3,4,2]");
    rig_free(&r);
    ad_tensor *a = input(SH(2, 5, 7), -1, 1, false), *b = input(SH(7, 3), -1, 1, false);
    f32_agrees("ad_matmul", f_matmul, NULL, 2, (const ad_tensor *const[]){a, b}, 1e-5);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

/* ================= shape ops ================= */

static ad_var f_transpose(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_transpose(x[0], a->axis, a->axis2);
}
static ad_var f_reshape(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_reshape(x[0], a->shape.nd, a->shape.d);
}
static ad_var f_broadcast_to(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_broadcast_to(x[0], a->shape.nd, a->shape.d);
}
static ad_var f_slice(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_slice(x[0], a->axis, a->start, a->stop);
}
static ad_var f_pad_axis(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_pad_axis(x[0], a->axis, a->start, a->stop);
}
static ad_var f_concat(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_concat((int)a->n, x, a->axis);
}
static ad_var f_index_select(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_index_select(x[0], a->axis, a->n, a->idx);
}
static ad_var f_index_add(ad_tape *t, const ad_var *x, void *c)
{
    const args *a = c;
    return ad_index_add(x[0], a->axis, a->n, a->idx, a->stop);
}
static ad_var f_cast_roundtrip(ad_tape *t, const ad_var *x, void *c) { return ad_cast(ad_cast(x[0], AD_F64), AD_F64); }

/* Element (i0, i1, i2) of a 3-D tensor. */
static double at3(const ad_tensor *x, int64_t i, int64_t j, int64_t k)
{
    return ad_tensor_get(x, (i * x->shape[1] + j) * x->shape[2] + k);
}

void t_transpose(void)
{
    ad_tensor *x = input(SH(2, 3, 4), -1, 1, false);
    const int pairs[][2] = {{0, 2}, {1, -1}, {-3, 1}, {1, 1}};
    for (int p = 0; p < 4; p++) {
        args a = {.axis = pairs[p][0], .axis2 = pairs[p][1]};
        rig r = rig_new();
        ad_var y = f_transpose(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_TRANSPOSE);
        const ad_tensor *v = ad_value(y);
        int a0 = a.axis < 0 ? a.axis + 3 : a.axis, a1 = a.axis2 < 0 ? a.axis2 + 3 : a.axis2;
        for (int64_t i = 0; i < v->shape[0]; i++)
            for (int64_t j = 0; j < v->shape[1]; j++)
                for (int64_t k = 0; k < v->shape[2]; k++) {
                    int64_t o[3] = {i, j, k}, s[3] = {i, j, k};
                    s[a0] = o[a1];
                    s[a1] = o[a0];
                    ck_assert(at3(v, i, j, k) == at3(x, s[0], s[1], s[2]));
                }
        rig_free(&r);
        gc_n("ad_transpose", f_transpose, &a, 1, (const ad_tensor *const *)&x);
    }
    ad_tensor_free(x);
    args a = {.axis = 0, .axis2 = 1};
    const shp shapes[] = {SH(0, 3), SH(1, 5)};
    for (int i = 0; i < 2; i++) gc_shapes("ad_transpose", f_transpose, &a, 1, &shapes[i], -1, 1, false);
}

void t_reshape(void)
{
    const shp from[] = {SH(2, 3, 4), SH(2, 3, 4), SH(1), SCALAR, SH(0, 3)};
    const shp to[] = {SH(4, -1), SH(24), SCALAR, SH(1, 1, 1), SH(3, 0)};
    for (int k = 0; k < 5; k++) {
        args a = {.shape = to[k]};
        ad_tensor *x = input(from[k], -1, 1, false);
        rig r = rig_new();
        ad_var y = f_reshape(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_RESHAPE);
        ck_assert_int_eq(ad_value(y)->size, x->size);
        tu_assert_values(ad_value(y), x->data, 0, 0); /* row-major order is kept */
        rig_free(&r);
        gc_n("ad_reshape", f_reshape, &a, 1, (const ad_tensor *const *)&x);
        ad_tensor_free(x);
    }
}

void t_broadcast_to(void)
{
    const shp from[] = {SH(3, 1), SCALAR, SH(1, 4), SH(2, 3, 4), SH(1, 3)};
    const shp to[] = {SH(2, 3, 4), SH(2, 2), SH(3, 1, 4), SH(2, 3, 4), SH(0, 3)};
    for (int k = 0; k < 5; k++) {
        args a = {.shape = to[k]};
        ad_tensor *x = input(from[k], -1, 1, false);
        rig r = rig_new();
        ad_var y = f_broadcast_to(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_BROADCAST_TO);
        const ad_tensor *v = ad_value(y);
        tu_assert_shape(v, to[k].nd, to[k].d);
        for (int64_t i = 0; i < v->size; i++)
            ck_assert(ad_tensor_get(v, i) == ad_tensor_get(x, bcast_index(x, v->ndim, v->shape, i)));
        rig_free(&r);
        gc_n("ad_broadcast_to", f_broadcast_to, &a, 1, (const ad_tensor *const *)&x);
        ad_tensor_free(x);
    }
}

void t_slice(void)
{
    ad_tensor *x = input(SH(4, 5), -1, 1, false);
    const int64_t cases[][3] = {{1, 1, -1}, {0, -3, 100}, {1, -10, 100}, {0, 2, 2}, {1, 3, 1}, {-1, 0, 1}};
    for (int c = 0; c < 6; c++) {
        args a = {.axis = (int)cases[c][0], .start = cases[c][1], .stop = cases[c][2]};
        rig r = rig_new();
        ad_var y = f_slice(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_SLICE);
        const ad_tensor *v = ad_value(y);
        int ax = a.axis < 0 ? a.axis + 2 : a.axis;
        int64_t len = x->shape[ax], s = a.start < 0 ? a.start + len : a.start, e = a.stop < 0 ? a.stop + len : a.stop;
        s = s < 0 ? 0 : (s > len ? len : s);
        e = e < s ? s : (e > len ? len : e);
        ck_assert_int_eq(v->shape[ax], e - s);
        for (int64_t i = 0; i < v->shape[0]; i++)
            for (int64_t j = 0; j < v->shape[1]; j++) {
                int64_t si = ax == 0 ? i + s : i, sj = ax == 1 ? j + s : j;
                ck_assert(ad_tensor_get(v, i * v->shape[1] + j) == ad_tensor_get(x, si * 5 + sj));
            }
        rig_free(&r);
        gc_n("ad_slice", f_slice, &a, 1, (const ad_tensor *const *)&x);
    }
    ad_tensor_free(x);
}

void t_pad_axis(void)
{
    ad_tensor *x = input(SH(2, 3), -1, 1, false);
    const int64_t cases[][3] = {{1, 2, 6}, {0, 0, 2}, {-2, 3, 5}, {1, 0, 3}};
    for (int c = 0; c < 4; c++) {
        args a = {.axis = (int)cases[c][0], .start = cases[c][1], .stop = cases[c][2]};
        rig r = rig_new();
        ad_var y = f_pad_axis(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_PAD_AXIS);
        const ad_tensor *v = ad_value(y);
        int ax = a.axis < 0 ? a.axis + 2 : a.axis;
        ck_assert_int_eq(v->shape[ax], a.stop);
        for (int64_t i = 0; i < v->shape[0]; i++)
            for (int64_t j = 0; j < v->shape[1]; j++) {
                int64_t si = ax == 0 ? i - a.start : i, sj = ax == 1 ? j - a.start : j;
                bool inside = si >= 0 && si < 2 && sj >= 0 && sj < 3;
                ck_assert(ad_tensor_get(v, i * v->shape[1] + j) == (inside ? ad_tensor_get(x, si * 3 + sj) : 0.0));
            }
        rig_free(&r);
        gc_n("ad_pad_axis", f_pad_axis, &a, 1, (const ad_tensor *const *)&x);
    }
    rig r = rig_new();
    ck_assert(!ad_ok(ad_pad_axis(ad_leaf(r.t, x), 1, 2, 4)));
    ck_assert_int_eq(ad_tape_status(r.t), AD_ERR_SHAPE);
    rig_free(&r);
    ad_tensor_free(x);
}

void t_concat(void)
{
    /* four inputs (more than a node's inline slots), one of them empty along the axis */
    const shp shapes[] = {SH(2, 3), SH(1, 3), SH(0, 3), SH(3, 3)};
    ad_tensor *in[4];
    for (int i = 0; i < 4; i++) in[i] = input(shapes[i], -1, 1, false);
    args a = {.axis = 0, .n = 4};
    rig r = rig_new();
    ad_var xs[4];
    for (int i = 0; i < 4; i++) xs[i] = ad_leaf(r.t, in[i]);
    ad_var y = f_concat(r.t, xs, &a);
    expect_op(y, AD_OP_CONCAT);
    tu_assert_shape(ad_value(y), AD_SHAPE(6, 3));
    int64_t at = 0;
    for (int i = 0; i < 4; i++)
        for (int64_t k = 0; k < in[i]->size; k++, at++)
            ck_assert(ad_tensor_get(ad_value(y), at) == ad_tensor_get(in[i], k));
    rig_free(&r);
    gc_n("ad_concat", f_concat, &a, 4, (const ad_tensor *const *)in);
    for (int i = 0; i < 4; i++) ad_tensor_free(in[i]);
    /* along the last axis, two inputs; and a single input */
    const shp s2[] = {SH(2, 1, 2), SH(2, 1, 3)};
    args b = {.axis = -1, .n = 2};
    gc_shapes("ad_concat", f_concat, &b, 2, s2, -1, 1, false);
    args one = {.axis = 0, .n = 1};
    gc_shapes("ad_concat", f_concat, &one, 1, s2, -1, 1, false);
    rig r2 = rig_new();
    ad_var p = rig_leaf(&r2, tu_f64(AD_SHAPE(1, 2), (double[]){1, 2})),
           q = rig_leaf(&r2, tu_f64(AD_SHAPE(1, 1), (double[]){3}));
    ad_var c = ad_concat(2, (ad_var[]){p, q}, 1);
    tu_assert_values(ad_value(c), (double[]){1, 2, 3}, 0, 0);
    rig_free(&r2);
}

void t_index_select(void)
{
    static const int64_t idx[] = {2, 0, 2, -1, 1};
    ad_tensor *x = input(SH(3, 4), -1, 1, false);
    for (int axis = 0; axis < 2; axis++) {
        args a = {.axis = axis, .n = 5, .idx = idx};
        rig r = rig_new();
        ad_var y = f_index_select(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
        expect_op(y, AD_OP_INDEX_SELECT);
        const ad_tensor *v = ad_value(y);
        int64_t len = x->shape[axis];
        for (int64_t i = 0; i < v->shape[0]; i++)
            for (int64_t j = 0; j < v->shape[1]; j++) {
                int64_t k = axis == 0 ? i : j, src = idx[k] < 0 ? idx[k] + len : idx[k];
                int64_t si = axis == 0 ? src : i, sj = axis == 1 ? src : j;
                ck_assert(ad_tensor_get(v, i * v->shape[1] + j) == ad_tensor_get(x, si * 4 + sj));
            }
        rig_free(&r);
        gc_n("ad_index_select", f_index_select, &a, 1, (const ad_tensor *const *)&x); /* repeats accumulate */
    }
    args none = {.axis = 1, .n = 0, .idx = idx};
    gc_n("ad_index_select (no indices)", f_index_select, &none, 1, (const ad_tensor *const *)&x);
    ad_tensor_free(x);
}

void t_index_add(void)
{
    static const int64_t idx[] = {2, 0, 2, -1};
    ad_tensor *x = input(SH(4, 3), -1, 1, false);
    args a = {.axis = 0, .n = 4, .idx = idx, .stop = 5};
    rig r = rig_new();
    ad_var y = f_index_add(r.t, (ad_var[]){ad_leaf(r.t, x)}, &a);
    expect_op(y, AD_OP_INDEX_ADD);
    const ad_tensor *v = ad_value(y);
    tu_assert_shape(v, AD_SHAPE(5, 3));
    double want[15] = {0};
    for (int i = 0; i < 4; i++) {
        int64_t k = idx[i] < 0 ? idx[i] + 5 : idx[i];
        for (int j = 0; j < 3; j++) want[k * 3 + j] += ad_tensor_get(x, i * 3 + j);
    }
    tu_assert_values(v, want, 0, 1e-15);
    ck_assert(!ad_ok(ad_index_add(ad_leaf(r.t, x), 0, 4, (const int64_t[]){0, 1, 5, 2}, 5)));
    ck_assert_int_eq(ad_tape_status(r.t), AD_ERR_INDEX);
    rig_free(&r);
    gc_n("ad_index_add", f_index_add, &a, 1, (const ad_tensor *const *)&x);
    args b = {.axis = 1, .n = 3, .idx = (const int64_t[]){1, 1, 0}, .stop = 2};
    gc_n("ad_index_add", f_index_add, &b, 1, (const ad_tensor *const *)&x);
    ad_tensor_free(x);
}

void t_cast(void)
{
    rig r = rig_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){0.1, -2.5, 1e10});
    ad_var x = rig_leaf(&r, xv);
    ad_var f = ad_cast(x, AD_F32);
    expect_op(f, AD_OP_CAST);
    ck_assert_int_eq(ad_value(f)->dtype, AD_F32);
    tu_assert_values(ad_value(f), (double[]){(double)0.1f, -2.5, (double)1e10f}, 0, 0);
    ad_var back = ad_cast(f, AD_F64);
    expect_op(back, AD_OP_CAST);
    ck_assert_int_eq(ad_value(back)->dtype, AD_F64);
    /* the gradient comes back in each input's dtype: d/dx sum(3 cast(cast(x))) = 3 */
    ck_assert_int_eq(ad_backward(ad_sum(ad_mul_scalar(back, 3.0)), NULL, 0), AD_OK);
    ck_assert_int_eq(ad_grad(x)->dtype, AD_F64);
    tu_assert_values(ad_grad(x), (double[]){3, 3, 3}, 0, 0);
    /* an f32 leaf's gradient through an f64 computation is f32 */
    ad_tape_reset(r.t);
    ad_tensor *x32 = tu_to_f32(xv);
    ad_var y = ad_leaf(r.t, x32);
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(ad_cast(y, AD_F64))), NULL, 0), AD_OK);
    ck_assert_int_eq(ad_grad(y)->dtype, AD_F32);
    tu_assert_values(ad_grad(y), (double[]){2 * (double)0.1f, -5.0, 2 * (double)1e10f}, 0, 1e-7);
    ad_tensor_free(x32);
    rig_free(&r);
    const shp shapes[] = {SH(2, 3), SCALAR, SH(0)};
    for (int i = 0; i < 3; i++) gc_shapes("ad_cast", f_cast_roundtrip, NULL, 1, &shapes[i], -1, 1, false);
}

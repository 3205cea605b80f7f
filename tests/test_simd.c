/* test_simd.c: the vectorized kernels (AVX-512/AVX2/baseline clones, AD_CLONES) give the scalar results bit for bit. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

/*
** Each kernel's result is compared element by element, exactly (the same bits;
** NaN for NaN), with a reference computed one element at a time in this file,
** in the scalar code of the baseline ISA. On a CPU with AVX-512 the library
** runs its AVX-512 clones, under valgrind (which hides AVX-512) its AVX2
** clones; either way the vector code must round as the scalar code does. The
** sizes cover the vector widths' tails (1 .. 65 elements and beyond), and the
** inputs hold signed zeros, infinities, NaN and subnormals.
*/

static const int64_t sizes[] = {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 257, 1031};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

static int nsizes(void) { return tu_quick() ? 8 : NSIZES; }

/* Same bits, or both NaN (a NaN's payload depends on operand order, which the
** compiler may swap in a commutative op). */
static int same(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

static int same_f(float a, float b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Random values with special ones mixed in, from seed. */
static ad_tensor *inputs(ad_dtype dt, int ndim, const int64_t *shape, uint64_t seed, bool specials)
{
    ad_tensor *t = tu_rand(dt, ndim, shape, -4.0, 4.0, seed);
    if (!specials) return t;
    const double sp[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1e-310, -1e-40, 3.0, 1e300};
    for (int64_t i = 0; i < t->size; i += 5) ad_tensor_set(t, i, sp[(i / 5 + seed) % (sizeof sp / sizeof sp[0])]);
    return t;
}

typedef enum { ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, NBIN } bin_op;
static const char *const bin_names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};

/* The scalar formulas of ops_binary.c, one element per call. */
__attribute__((noinline)) static double ref_bin(bin_op op, double a, double b)
{
    switch (op) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return a / b;
    case MAXIMUM: return (a > b || isnan(a)) ? a : b;
    case MINIMUM: return (a < b || isnan(a)) ? a : b;
    default: return 0;
    }
}

__attribute__((noinline)) static float ref_bin_f(bin_op op, float a, float b)
{
    switch (op) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return a / b;
    case MAXIMUM: return (a > b || isnan(a)) ? a : b;
    case MINIMUM: return (a < b || isnan(a)) ? a : b;
    default: return 0;
    }
}

static ad_var apply_bin(bin_op op, ad_var a, ad_var b)
{
    switch (op) {
    case ADD: return ad_add(a, b);
    case SUB: return ad_sub(a, b);
    case MUL: return ad_mul(a, b);
    case DIV: return ad_div(a, b);
    case MAXIMUM: return ad_maximum(a, b);
    default: return ad_minimum(a, b);
    }
}

/* y = a op b with a [r, c] and b [r, c], [c] (a row broadcast) or [r, 1] (a column). */
static void check_binary(ad_dtype dt, bin_op op, int64_t r, int64_t c, int bshape)
{
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    int64_t sa[2] = {r, c}, sb_full[2] = {r, c}, sb_row[1] = {c}, sb_col[2] = {r, 1};
    ad_tensor *av = inputs(dt, 2, sa, 11 + (uint64_t)c, true);
    ad_tensor *bv = bshape == 0 ? inputs(dt, 2, sb_full, 23 + (uint64_t)c, true)
                    : bshape == 1 ? inputs(dt, 1, sb_row, 29 + (uint64_t)c, true)
                                  : inputs(dt, 2, sb_col, 31 + (uint64_t)c, true);
    const ad_tensor *y = ad_value(apply_bin(op, ad_const(t, av), ad_const(t, bv)));
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ck_assert_int_eq(y->size, r * c);
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) {
            int64_t k = i * c + j, kb = bshape == 0 ? k : bshape == 1 ? j : i;
            int ok;
            if (dt == AD_F64) {
                double want = ref_bin(op, ((double *)av->data)[k], ((double *)bv->data)[kb]);
                ok = same(((const double *)y->data)[k], want);
            } else {
                float want = ref_bin_f(op, ((float *)av->data)[k], ((float *)bv->data)[kb]);
                ok = same_f(((const float *)y->data)[k], want);
            }
            ck_assert_msg(ok, "%s %s [%lld, %lld] (b shape %d): element %lld differs from the scalar result",
                          bin_names[op], ad_dtype_name(dt), (long long)r, (long long)c, bshape, (long long)k);
        }
    ad_tensor_free(av);
    ad_tensor_free(bv);
    ad_tape_free(t);
}

START_TEST(binary_ops_exact)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    for (int op = 0; op < NBIN; op++)
        for (int s = 0; s < nsizes(); s++) {
            check_binary(dt, (bin_op)op, 1, sizes[s], 0);
            check_binary(dt, (bin_op)op, 3, sizes[s], 1);
            check_binary(dt, (bin_op)op, 2, sizes[s], 2);
        }
}
END_TEST

typedef enum { NEG, SQRT, SQUARE, RELU, LEAKY, CLAMP, ABS, MULS, ADDS, NUN } un_op;
static const char *const un_names[] = {"neg", "sqrt", "square", "relu", "leaky_relu", "clamp", "abs", "mul_scalar",
                                       "add_scalar"};

/* The scalar formulas of ops_unary.c (c0 = 0.01 for leaky_relu, clamp to [-1, 2], scalars 1.5 and -0.25). */
__attribute__((noinline)) static double ref_un(un_op op, double v)
{
    switch (op) {
    case NEG: return -v;
    case SQRT: return sqrt(v);
    case SQUARE: return v * v;
    case RELU: return v < 0 ? 0.0 : v;
    case LEAKY: return v > 0 ? v : 0.01 * v;
    case CLAMP: return v < -1.0 ? -1.0 : (v > 2.0 ? 2.0 : v);
    case ABS: return fabs(v);
    case MULS: return v * 1.5;
    case ADDS: return v + -0.25;
    default: return 0;
    }
}

__attribute__((noinline)) static float ref_un_f(un_op op, float v)
{
    switch (op) {
    case NEG: return -v;
    case SQRT: return sqrtf(v);
    case SQUARE: return v * v;
    case RELU: return v < 0 ? 0.0f : v;
    case LEAKY: return v > 0 ? v : (float)0.01 * v;
    case CLAMP: return v < -1.0f ? -1.0f : (v > 2.0f ? 2.0f : v);
    case ABS: return fabsf(v);
    case MULS: return v * 1.5f;
    case ADDS: return v + -0.25f;
    default: return 0;
    }
}

static ad_var apply_un(un_op op, ad_var x)
{
    switch (op) {
    case NEG: return ad_neg(x);
    case SQRT: return ad_sqrt(x);
    case SQUARE: return ad_square(x);
    case RELU: return ad_relu(x);
    case LEAKY: return ad_leaky_relu(x, 0.01);
    case CLAMP: return ad_clamp(x, -1.0, 2.0);
    case ABS: return ad_abs(x);
    case MULS: return ad_mul_scalar(x, 1.5);
    default: return ad_add_scalar(x, -0.25);
    }
}

START_TEST(unary_ops_exact)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    for (int op = 0; op < NUN; op++)
        for (int s = 0; s < nsizes(); s++) {
            ad_tape *t = ad_tape_new();
            ck_assert_ptr_nonnull(t);
            int64_t n = sizes[s];
            ad_tensor *xv = inputs(dt, 1, &n, 41 + (uint64_t)n, true);
            const ad_tensor *y = ad_value(apply_un((un_op)op, ad_const(t, xv)));
            ck_assert_int_eq(ad_tape_status(t), AD_OK);
            for (int64_t k = 0; k < n; k++) {
                int ok = dt == AD_F64 ? same(((const double *)y->data)[k], ref_un((un_op)op, ((double *)xv->data)[k]))
                                      : same_f(((const float *)y->data)[k], ref_un_f((un_op)op, ((float *)xv->data)[k]));
                ck_assert_msg(ok, "%s %s [%lld]: element %lld differs from the scalar result", un_names[op],
                              ad_dtype_name(dt), (long long)n, (long long)k);
            }
            ad_tensor_free(xv);
            ad_tape_free(t);
        }
}
END_TEST

/* sum_to (the bias gradient's kernel) keeps the scalar order of additions:
** rows add elementwise in float/double as they come, a broadcast column sums
** each row in double, and a total (one element) sums in double in index order. */
START_TEST(sum_to_order_exact)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    for (int s = 0; s < nsizes(); s++) {
        int64_t r = 5, c = sizes[s], shape[2] = {r, c};
        ad_tape *t = ad_tape_new();
        ck_assert_ptr_nonnull(t);
        ad_tensor *xv = inputs(dt, 2, shape, 53 + (uint64_t)c, false);
        ad_var x = ad_const(t, xv);
        const ad_tensor *rows = ad_value(ad_sum_to(x, 1, &c));
        const ad_tensor *cols = ad_value(ad_sum_to(x, 2, (int64_t[]){r, 1}));
        const ad_tensor *all = ad_value(ad_sum_to(x, 0, NULL));
        ck_assert_int_eq(ad_tape_status(t), AD_OK);
        for (int64_t j = 0; j < c; j++) {
            if (dt == AD_F64) {
                double acc = 0;
                for (int64_t i = 0; i < r; i++) acc = ref_bin(ADD, acc, ((double *)xv->data)[i * c + j]);
                ck_assert(same(((const double *)rows->data)[j], acc));
            } else if (c > 1) {
                float acc = 0;
                for (int64_t i = 0; i < r; i++) acc = ref_bin_f(ADD, acc, ((float *)xv->data)[i * c + j]);
                ck_assert(same_f(((const float *)rows->data)[j], acc));
            } else { /* one element: a total, in double */
                double acc = 0;
                for (int64_t i = 0; i < r; i++) acc = ref_bin(ADD, acc, ((float *)xv->data)[i]);
                ck_assert(same_f(((const float *)rows->data)[j], (float)acc));
            }
        }
        double total = 0;
        for (int64_t i = 0; i < r; i++) {
            double acc = 0;
            for (int64_t j = 0; j < c; j++) acc = ref_bin(ADD, acc, ad_tensor_get(xv, i * c + j));
            ck_assert(same(ad_tensor_get(cols, i), dt == AD_F64 ? acc : (double)(float)acc));
        }
        for (int64_t k = 0; k < xv->size; k++) total = ref_bin(ADD, total, ad_tensor_get(xv, k));
        ck_assert(same(ad_tensor_get(all, 0), dt == AD_F64 ? total : (double)(float)total));
        ad_tensor_free(xv);
        ad_tape_free(t);
    }
}
END_TEST

/* broadcast_to copies rows and fills broadcast columns: the same values. */
START_TEST(broadcast_exact)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    for (int s = 0; s < nsizes(); s++) {
        int64_t r = 3, c = sizes[s], out[2] = {r, c};
        ad_tape *t = ad_tape_new();
        ck_assert_ptr_nonnull(t);
        ad_tensor *row = inputs(dt, 1, &c, 61 + (uint64_t)c, true), *col = inputs(dt, 2, (int64_t[]){r, 1}, 67, true);
        const ad_tensor *yr = ad_value(ad_broadcast_to(ad_const(t, row), 2, out));
        const ad_tensor *yc = ad_value(ad_broadcast_to(ad_const(t, col), 2, out));
        ck_assert_int_eq(ad_tape_status(t), AD_OK);
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) {
                ck_assert(same(ad_tensor_get(yr, i * c + j), ad_tensor_get(row, j)));
                ck_assert(same(ad_tensor_get(yc, i * c + j), ad_tensor_get(col, i)));
            }
        ad_tensor_free(row);
        ad_tensor_free(col);
        ad_tape_free(t);
    }
}
END_TEST

/* sum_axis, mean_axis and max_axis fold each output's inputs in index order, in double,
** whichever axis is reduced (the inner axes' outputs fold side by side, vectorized). */
START_TEST(axis_reductions_exact)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    const int64_t shapes[][3] = {{4, 5, 67}, {3, 130, 2}, {2, 1, 129}, {6, 0, 3}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int axis = 0; axis < 3; axis++) {
            const int64_t *sh = shapes[si];
            ad_tape *t = ad_tape_new();
            ck_assert_ptr_nonnull(t);
            ad_tensor *xv = inputs(dt, 3, sh, 71 + si, false);
            for (int64_t i = 3; i < xv->size; i += 17) ad_tensor_set(xv, i, i % 2 ? NAN : -INFINITY);
            ad_var x = ad_const(t, xv);
            const ad_tensor *ys[3] = {ad_value(ad_sum_axis(x, axis, false)), ad_value(ad_mean_axis(x, axis, false)),
                                      sh[axis] ? ad_value(ad_max_axis(x, axis, false)) : NULL};
            ck_assert_int_eq(ad_tape_status(t), AD_OK);
            int64_t outer = 1, inner = 1, len = sh[axis];
            for (int d = 0; d < axis; d++) outer *= sh[d];
            for (int d = axis + 1; d < 3; d++) inner *= sh[d];
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < inner; j++) {
                    double sum = 0, max = -INFINITY;
                    for (int64_t k = 0; k < len; k++) {
                        double v = ad_tensor_get(xv, (o * len + k) * inner + j);
                        sum = ref_bin(ADD, sum, v);
                        if (v > max || isnan(v)) max = v;
                    }
                    double want[3] = {sum, len ? sum / (double)len : NAN, max};
                    for (int r = 0; r < 3; r++) {
                        if (!ys[r]) continue;
                        double w = dt == AD_F64 ? want[r] : (double)(float)want[r];
                        ck_assert_msg(same(ad_tensor_get(ys[r], o * inner + j), w),
                                      "reduction %d over axis %d of shape %zu, %s: output %lld differs", r, axis, si,
                                      ad_dtype_name(dt), (long long)(o * inner + j));
                    }
                }
            ad_tensor_free(xv);
            ad_tape_free(t);
        }
}
END_TEST

/* ---- the optimizers: nn_optim_step against its formulas, element by element ---- */

typedef struct {
    int kind; /* 0 sgd, 1 sgd momentum, 2 nesterov, 3 adam, 4 adamw */
    double lr, mu, wd, b1, b2, eps;
} opt_cfg;

static nn_optim *make_opt(nn_module *m, const opt_cfg *c)
{
    switch (c->kind) {
    case 0: return nn_sgd(m, c->lr, 0, c->wd, false, NULL);
    case 1: return nn_sgd(m, c->lr, c->mu, c->wd, false, NULL);
    case 2: return nn_sgd(m, c->lr, c->mu, c->wd, true, NULL);
    case 3: return nn_adam(m, c->lr, c->b1, c->b2, c->eps, c->wd, NULL);
    default: return nn_adamw(m, c->lr, c->b1, c->b2, c->eps, c->wd, NULL);
    }
}

/* One step of c on one element in T arithmetic, as nn/optim.c writes it (SGD in double, Adam in T). */
#define REF_STEP(T, SQRT)                                                                                \
    __attribute__((noinline)) static void ref_step_##T(const opt_cfg *c, int64_t step, T *p, T g, T *m, T *v) \
    {                                                                                                    \
        if (c->kind <= 2) {                                                                              \
            double d = (double)g + c->wd * (double)*p;                                                   \
            if (c->kind > 0) {                                                                           \
                *m = (T)(step == 1 ? d : c->mu * (double)*m + d);                                        \
                d = c->kind == 2 ? d + c->mu * (double)*m : (double)*m;                                  \
            }                                                                                            \
            *p = (T)((double)*p - c->lr * d);                                                            \
            return;                                                                                      \
        }                                                                                                \
        bool dec = c->kind == 4;                                                                         \
        T keep = dec ? (T)(1.0 - c->lr * c->wd) : (T)1, l2 = dec ? (T)0 : (T)c->wd;                      \
        T b1 = (T)c->b1, b2 = (T)c->b2, c1 = (T)(1.0 - c->b1), c2 = (T)(1.0 - c->b2);                    \
        T ss = (T)(c->lr / (1.0 - pow(c->b1, (double)step)));                                            \
        T ib = (T)(1.0 / sqrt(1.0 - pow(c->b2, (double)step)));                                          \
        T eps = (T)c->eps;                                                                               \
        T pi = *p * keep, gi = g + l2 * *p;                                                              \
        T mi = b1 * *m + c1 * gi;                                                                        \
        T vi = b2 * *v + c2 * (gi * gi);                                                                 \
        *m = mi;                                                                                         \
        *v = vi;                                                                                         \
        *p = pi - ss * mi / (SQRT(vi) * ib + eps);                                                       \
    }
REF_STEP(float, sqrtf)
REF_STEP(double, sqrt)

START_TEST(optim_steps_exact)
{
    const opt_cfg cfgs[] = {
        {0, 0.05, 0, 1e-3, 0, 0, 0},          {1, 0.05, 0.9, 1e-3, 0, 0, 0},
        {2, 0.05, 0.9, 0, 0, 0, 0},           {3, 1e-3, 0, 1e-2, 0.9, 0.999, 1e-8},
        {4, 1e-3, 0, 1e-2, 0.9, 0.999, 1e-8},
    };
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    const int64_t in = tu_quick() ? 13 : 37, out = 9; /* weight [9, in] and bias [9]: odd sizes, tails */
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        const opt_cfg *c = &cfgs[ci];
        nn_module *lin = nn_linear_ex(in, out, true, NN_INIT_ZEROS, 0, dt, NULL, NULL);
        ck_assert_ptr_nonnull(lin);
        nn_param *ps;
        int np = nn_module_params(lin, &ps);
        ck_assert_int_eq(np, 2);
        /* reference copies: p, m (momentum or first moment), v */
        double *ref[2][3];
        ad_rng rng;
        ad_rng_seed(&rng, 77 + ci);
        for (int k = 0; k < np; k++) {
            ad_rng_fill_uniform(&rng, ps[k].value, -1, 1);
            for (int j = 0; j < 3; j++) {
                ref[k][j] = calloc((size_t)ps[k].value->size, sizeof(double));
                ck_assert_ptr_nonnull(ref[k][j]);
            }
            for (int64_t e = 0; e < ps[k].value->size; e++) ref[k][0][e] = ad_tensor_get(ps[k].value, e);
        }
        nn_optim *o = make_opt(lin, c);
        ck_assert_ptr_nonnull(o);
        for (int64_t step = 1; step <= 3; step++) {
            for (int k = 0; k < np; k++) {
                ad_rng_fill_uniform(&rng, ps[k].grad, -2, 2);
                ad_tensor *p = ps[k].value, *g = ps[k].grad;
                for (int64_t e = 0; e < p->size; e++) {
                    if (dt == AD_F64) {
                        double pe = ref[k][0][e], me = ref[k][1][e], ve = ref[k][2][e];
                        ref_step_double(c, step, &pe, ((double *)g->data)[e], &me, &ve);
                        ref[k][0][e] = pe, ref[k][1][e] = me, ref[k][2][e] = ve;
                    } else {
                        float pe = (float)ref[k][0][e], me = (float)ref[k][1][e], ve = (float)ref[k][2][e];
                        ref_step_float(c, step, &pe, ((float *)g->data)[e], &me, &ve);
                        ref[k][0][e] = pe, ref[k][1][e] = me, ref[k][2][e] = ve;
                    }
                }
            }
            ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
            for (int k = 0; k < np; k++)
                for (int64_t e = 0; e < ps[k].value->size; e++)
                    ck_assert_msg(same(ad_tensor_get(ps[k].value, e), ref[k][0][e]),
                                  "optimizer %d %s, step %lld: %s[%lld] = %.17g, the scalar formula gives %.17g",
                                  c->kind, ad_dtype_name(dt), (long long)step, ps[k].name, (long long)e,
                                  ad_tensor_get(ps[k].value, e), ref[k][0][e]);
        }
        nn_optim_free(o);
        nn_module_free(lin);
        for (int k = 0; k < np; k++)
            for (int j = 0; j < 3; j++) free(ref[k][j]);
    }
}
END_TEST

/* The finite check before a step sees a NaN or an Inf at any position (vector body or tail). */
START_TEST(optim_finite_check_every_position)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    nn_module *lin = nn_linear_ex(tu_quick() ? 11 : 21, 3, false, NN_INIT_ZEROS, 0, dt, NULL, NULL);
    ck_assert_ptr_nonnull(lin);
    nn_param *ps;
    nn_module_params(lin, &ps);
    nn_optim *o = nn_sgd(lin, 0.1, 0, 0, false, NULL);
    ck_assert_ptr_nonnull(o);
    ad_tensor *g = ps[0].grad;
    for (int64_t e = 0; e < g->size; e++) {
        ad_tensor_fill(g, 0.5);
        ad_tensor_set(g, e, e % 2 ? INFINITY : NAN);
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_ERR_NUMERIC);
    }
    ad_tensor_fill(g, 0.5);
    ad_tensor_set(g, 0, 3e38); /* large but finite */
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
    nn_optim_free(o);
    nn_module_free(lin);
}
END_TEST

static Suite *simd_suite(void)
{
    Suite *s = suite_create("simd");
    TCase *tc = tcase_create("kernels");
    tcase_add_loop_test(tc, binary_ops_exact, 0, 2);
    tcase_add_loop_test(tc, unary_ops_exact, 0, 2);
    tcase_add_loop_test(tc, sum_to_order_exact, 0, 2);
    tcase_add_loop_test(tc, broadcast_exact, 0, 2);
    tcase_add_loop_test(tc, axis_reductions_exact, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("optimizers");
    tcase_add_loop_test(tc, optim_steps_exact, 0, 2);
    tcase_add_loop_test(tc, optim_finite_check_every_position, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(simd_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* test_par_ops.c: elementwise ops, their fast VJPs and sum_to on threads give the one-thread bits. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"

/*
** From 2 AD__PAR_MIN elements on, unary and broadcasting binary ops, their fast VJPs, sum_to and
** gradient accumulation hand out chunks of their outputs to ad__parallel's threads (ad__par_for,
** kernels.h). Each case here runs forward and backward (ad_backward, with a leaf's fresh gradient
** and a param's accumulated one) on 1, 2 and 3 threads on tensors of about 3 AD__PAR_MIN
** elements, and checks
**   - every output and gradient has the same bits on 2 and 3 threads as on 1, and
**   - on 1 thread, each element is the op's one-element result (the library's scalar path: a
**     0-dimensional tape per element) and each reduced gradient sums those in sum_to's order:
**     rows of the last dim in double when it is reduced, elementwise in the dtype when kept.
** The reference is taken on the elements around the ends of the chunks that threads take
** (ad__par_for) and on a stride between.
*/

#define BIG (3 * AD__PAR_MIN + 37) /* three shares and a tail */

/* The quick variant (valgrind): 2 threads at most, fewer elements checked against the reference,
** and of the binary ops add (its own fast VJP, sum_to for a broadcast input) and div only. */
static bool quick(void)
{
    static int q = -1;
    if (q < 0) q = tu_quick() != 0;
    return q;
}

/* The most threads a case runs on: 3 (two workers), 2 in the quick variant. */
static int max_threads(void) { return quick() ? 2 : 3; }

/* Same bits, or both NaN. */
static int same(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

/* (Check records every passing assertion: a loop over elements asserts once, on the first mismatch) */
static void assert_same_tensor(const ad_tensor *a, const ad_tensor *b, const char *what, int threads)
{
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(a->size, b->size);
    if (a->dtype == b->dtype && memcmp(a->data, b->data, (size_t)a->size * ad_dtype_size(a->dtype)) == 0) return;
    int64_t i = 0;
    while (i < a->size && same(ad_tensor_get(a, i), ad_tensor_get(b, i))) i++;
    if (i < a->size)
        ck_abort_msg("%s: element %lld of %lld on %d threads is %.9g, on 1 thread %.9g", what, (long long)i,
                     (long long)a->size, threads, ad_tensor_get(b, i), ad_tensor_get(a, i));
}

/* Whether the reference is checked at element i of n: near the ends of the chunks that threads
** take (ad__par_chunk), at the tensor's ends, or on a stride. */
static bool sampled(int64_t i, int64_t n)
{
    int64_t c = ad__par_chunk(1), k = i % c;
    return i % (quick() ? 997 : 97) == 0 || i < 40 || i >= n - 40 || k < 40 || k >= c - 40;
}

/* Random values in [-4, 4] with signed zeros, infinities and NaN mixed in. */
static ad_tensor *inputs(ad_dtype dt, int nd, const int64_t *shape, uint64_t seed)
{
    ad_tensor *t = tu_rand(dt, nd, shape, -4.0, 4.0, seed);
    const double sp[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1.0};
    for (int64_t i = 3; i < t->size; i += 1009) ad_tensor_set(t, i, sp[(i / 1009) % 6]);
    return t;
}

/* ---- unary ops ---- */

typedef ad_var (*un_fn)(ad_var);
static ad_var f_relu(ad_var x) { return ad_relu(x); }
static ad_var f_leaky(ad_var x) { return ad_leaky_relu(x, 0.05); }
static ad_var f_clamp(ad_var x) { return ad_clamp(x, -1.5, 2.0); }
static ad_var f_exp(ad_var x) { return ad_exp(x); }
static ad_var f_tanh(ad_var x) { return ad_tanh(x); }
static ad_var f_sigmoid(ad_var x) { return ad_sigmoid(x); }
static ad_var f_sqrt(ad_var x) { return ad_sqrt(x); }
static ad_var f_sin(ad_var x) { return ad_sin(x); }
static ad_var f_square(ad_var x) { return ad_square(x); }
static ad_var f_neg(ad_var x) { return ad_neg(x); }
static ad_var f_mul_scalar(ad_var x) { return ad_mul_scalar(x, -0.75); }
static ad_var f_gelu(ad_var x) { return ad_gelu(x); } /* (no fast VJP: the recorded one) */

static const struct {
    const char *name;
    un_fn f;
} un_ops[] = {{"relu", f_relu},     {"leaky_relu", f_leaky}, {"clamp", f_clamp},   {"exp", f_exp},
              {"tanh", f_tanh},     {"sigmoid", f_sigmoid},  {"sqrt", f_sqrt},     {"sin", f_sin},
              {"square", f_square}, {"neg", f_neg},          {"mul_scalar", f_mul_scalar}, {"gelu", f_gelu}};
#define NUN ((int)(sizeof un_ops / sizeof un_ops[0]))

/* y = f(x) forward, and backward with seed g: x a leaf (fresh gradient) and, when acc, a param
** whose grad tensor starts at acc's values (the gradient added to it). */
typedef struct un_result {
    ad_tensor *y, *gx;
} un_result;

static un_result run_unary(un_fn f, const ad_tensor *x, const ad_tensor *g, const ad_tensor *acc, int threads)
{
    ad_set_num_threads(threads);
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_tensor *grad = acc ? ad_tensor_clone(acc) : NULL;
    ad_var vx = acc ? ad_param(t, (ad_tensor *)x, grad) : ad_leaf(t, x);
    ad_var y = f(vx);
    ck_assert_int_eq(ad_backward(y, g, acc ? AD_ACCUMULATE : 0), AD_OK);
    un_result r = {ad_tensor_clone(ad_value(y)), acc ? grad : ad_tensor_clone(ad_grad(vx))};
    ck_assert_ptr_nonnull(r.y);
    ck_assert_ptr_nonnull(r.gx);
    ad_tape_free(t);
    ad_set_num_threads(1);
    return r;
}

static void un_free(un_result r)
{
    ad_tensor_free(r.y);
    ad_tensor_free(r.gx);
}

START_TEST(unary_threads_same_bits)
{
    ad_dtype dt = _i % 2 ? AD_F32 : AD_F64;
    int op = _i / 2;
    int64_t shape[2] = {3, BIG / 3 + 1};
    ad_tensor *x = inputs(dt, 2, shape, 101 + (uint64_t)op), *g = inputs(dt, 2, shape, 202 + (uint64_t)op);
    ad_tensor *acc = tu_rand(dt, 2, shape, -1.0, 1.0, 303);
    ck_assert_int_ge(x->size, 3 * AD__PAR_MIN);
    for (int mode = 0; mode < 2; mode++) {
        const ad_tensor *a = mode ? acc : NULL;
        un_result one = run_unary(un_ops[op].f, x, g, a, 1);
        for (int th = 2; th <= max_threads(); th++) {
            un_result r = run_unary(un_ops[op].f, x, g, a, th);
            char what[64];
            snprintf(what, sizeof what, "%s %s y", un_ops[op].name, ad_dtype_name(dt));
            assert_same_tensor(one.y, r.y, what, th);
            snprintf(what, sizeof what, "%s %s gx%s", un_ops[op].name, ad_dtype_name(dt), a ? " (accumulated)" : "");
            assert_same_tensor(one.gx, r.gx, what, th);
            un_free(r);
        }
        /* the one-element definition, on a scalar tape */
        ad_tape *t = ad_tape_new();
        ck_assert_ptr_nonnull(t);
        ad_tensor *xs = ad_tensor_new(dt, 0, NULL), *gs = ad_tensor_new(dt, 0, NULL);
        for (int64_t i = 0; i < x->size; i++) {
            if (!sampled(i, x->size)) continue;
            ad_tape_reset(t);
            ad_tensor_set(xs, 0, ad_tensor_get(x, i));
            ad_tensor_set(gs, 0, ad_tensor_get(g, i));
            ad_var vx = ad_leaf(t, xs), y = un_ops[op].f(vx);
            if (ad_backward(y, gs, 0) != AD_OK) ck_abort_msg("%s: a scalar backward failed", un_ops[op].name);
            double want_y = ad_tensor_get(ad_value(y), 0), want_g = ad_tensor_get(ad_grad(vx), 0);
            if (a && dt == AD_F64) /* the accumulated gradient: acc + gx in the dtype */
                want_g = ad_tensor_get(a, i) + want_g;
            else if (a)
                want_g = (double)((float)ad_tensor_get(a, i) + (float)want_g);
            if (!same(ad_tensor_get(one.y, i), want_y))
                ck_abort_msg("%s %s: y[%lld] = %.9g, one element gives %.9g", un_ops[op].name, ad_dtype_name(dt),
                             (long long)i, ad_tensor_get(one.y, i), want_y);
            if (!same(ad_tensor_get(one.gx, i), want_g))
                ck_abort_msg("%s %s%s: gx[%lld] = %.9g, one element gives %.9g", un_ops[op].name, ad_dtype_name(dt),
                             a ? " (accumulated)" : "", (long long)i, ad_tensor_get(one.gx, i), want_g);
        }
        ad_tensor_free(xs);
        ad_tensor_free(gs);
        ad_tape_free(t);
        un_free(one);
    }
    ad_tensor_free(x);
    ad_tensor_free(g);
    ad_tensor_free(acc);
}
END_TEST

/* ---- the reference of sum_to ---- */

/* The index into `in` (broadcast to y's shape) of y's element i. */
static int64_t bidx(const ad_tensor *y, int64_t i, const ad_tensor *in)
{
    int64_t k = 0, stride = 1;
    for (int d = y->ndim - 1; d >= 0; d--) {
        int64_t c = i % y->shape[d];
        i /= y->shape[d];
        int e = in->ndim - y->ndim + d;
        if (e < 0) continue;
        if (in->shape[e] != 1) k += c * stride;
        stride *= in->shape[e];
    }
    return k;
}

/* out (a shape that broadcasts to p's) = p summed down as sum_to does: a total (out of one element)
** in double in index order; else zeros, then each row of p's last dim in order: summed in double
** and added in the dtype when out is broadcast along it, added element by element when not. */
static void ref_sum_to(const ad_tensor *p, ad_tensor *out)
{
    bool f32 = out->dtype == AD_F32;
    if (out->size == p->size) {
        for (int64_t i = 0; i < p->size; i++) ad_tensor_set(out, i, ad_tensor_get(p, i));
        return;
    }
    if (out->size == 1) {
        double acc = 0;
        for (int64_t i = 0; i < p->size; i++) acc += ad_tensor_get(p, i);
        ad_tensor_set(out, 0, acc);
        return;
    }
    for (int64_t i = 0; i < out->size; i++) ad_tensor_set(out, i, 0.0);
    int64_t inner = p->shape[p->ndim - 1];
    bool reduced = inner > 1 && (out->ndim == 0 || out->shape[out->ndim - 1] == 1);
    for (int64_t r = 0; r < p->size; r += inner) {
        if (reduced) {
            double acc = 0;
            for (int64_t k = 0; k < inner; k++) acc += ad_tensor_get(p, r + k);
            int64_t o = bidx(p, r, out);
            double d = ad_tensor_get(out, o);
            ad_tensor_set(out, o, f32 ? (double)((float)d + (float)acc) : d + acc);
        } else { /* (out's last dim is p's: its elements from o0 on) */
            int64_t o0 = bidx(p, r, out);
            for (int64_t k = 0; k < inner; k++) {
                int64_t o = inner > 1 ? o0 + k : bidx(p, r + k, out);
                double d = ad_tensor_get(out, o), v = ad_tensor_get(p, r + k);
                ad_tensor_set(out, o, f32 ? (double)((float)d + (float)v) : d + v);
            }
        }
    }
}

/* ---- sum_to ---- */

static const struct {
    int nd;
    int64_t shape[4];
} sum_shapes[] = {
    {4, {1, 7, 1, 1}}, /* a bias of [N, C, H, W]: split by channels, rows reduced */
    {3, {7, 33, 71}},  /* the batch summed out: split by channels, rows kept */
    {1, {71}},         /* split within the rows */
    {4, {6, 1, 1, 1}}, /* one per image */
    {4, {6, 7, 33, 1}},
    {0, {0}}, /* a total: one thread */
};
#define NSUM ((int)(sizeof sum_shapes / sizeof sum_shapes[0]))

START_TEST(sum_to_threads_same_bits)
{
    ad_dtype dt = _i % 2 ? AD_F32 : AD_F64;
    int c = _i / 2;
    int64_t xs[4] = {6, 7, 33, 71};
    ad_tensor *x = inputs(dt, 4, xs, 404);
    for (int64_t i = 3; i < x->size; i += 1009) ad_tensor_set(x, i, (double)i / 7.0); /* finite: sums compare */
    ck_assert_int_ge(x->size, 3 * AD__PAR_MIN);
    ad_tensor *res[4] = {NULL};
    for (int th = 1; th <= max_threads(); th++) {
        ad_set_num_threads(th);
        ad_tape *t = ad_tape_new();
        ck_assert_ptr_nonnull(t);
        ad_var y = ad_sum_to(ad_const(t, x), sum_shapes[c].nd, sum_shapes[c].shape);
        ck_assert_int_eq(ad_tape_status(t), AD_OK);
        res[th] = ad_tensor_clone(ad_value(y));
        ad_tape_free(t);
        ad_set_num_threads(1);
        if (th > 1) assert_same_tensor(res[1], res[th], "sum_to", th);
    }
    ad_tensor *want = ad_tensor_new(dt, sum_shapes[c].nd, sum_shapes[c].shape);
    ref_sum_to(x, want);
    assert_same_tensor(want, res[1], "sum_to against its definition", 1);
    for (int th = 1; th <= max_threads(); th++) ad_tensor_free(res[th]);
    ad_tensor_free(want);
    ad_tensor_free(x);
}
END_TEST

/* ---- broadcasting binary ops ---- */

typedef ad_var (*bin_fn)(ad_var, ad_var);
static const struct {
    const char *name;
    bin_fn f;
} bin_ops[] = {{"add", ad_add}, {"sub", ad_sub}, {"mul", ad_mul}, {"div", ad_div}, {"maximum", ad_maximum}};
#define NBIN ((int)(sizeof bin_ops / sizeof bin_ops[0]))

/* a's and b's shapes: same, a bias, a column, a row, an outer product, a scalar, two long rows */
static const struct {
    int na, nb;
    int64_t a[4], b[4];
} bin_shapes[] = {
    {1, 1, {BIG}, {BIG}},
    {4, 4, {6, 7, 33, 71}, {1, 7, 1, 1}},
    {2, 2, {1637, 61}, {1637, 1}},
    {2, 1, {1637, 61}, {61}},
    {2, 2, {1637, 1}, {1, 61}},
    {1, 0, {BIG}, {0}},
    {2, 2, {2, BIG / 2}, {2, 1}},
};
#define NBSH ((int)(sizeof bin_shapes / sizeof bin_shapes[0]))

typedef struct bin_result {
    ad_tensor *y, *ga, *gb;
} bin_result;

/* y = f(a, b) forward, backward with seed g into leaves a and b. */
static bin_result run_binary(bin_fn f, const ad_tensor *a, const ad_tensor *b, const ad_tensor *g, int threads)
{
    ad_set_num_threads(threads);
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_var va = ad_leaf(t, a), vb = ad_leaf(t, b), y = f(va, vb);
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ck_assert_int_eq(ad_value(y)->size, g->size);
    ck_assert_int_eq(ad_backward(y, g, 0), AD_OK);
    bin_result r = {ad_tensor_clone(ad_value(y)), ad_tensor_clone(ad_grad(va)), ad_tensor_clone(ad_grad(vb))};
    ad_tape_free(t);
    ad_set_num_threads(1);
    return r;
}

static void bin_free(bin_result r)
{
    ad_tensor_free(r.y);
    ad_tensor_free(r.ga);
    ad_tensor_free(r.gb);
}

START_TEST(binary_threads_same_bits)
{
    ad_dtype dt = _i % 2 ? AD_F32 : AD_F64;
    int op = _i / 2 % NBIN, sh = _i / 2 / NBIN;
    if (quick() && bin_ops[op].f != ad_add && bin_ops[op].f != ad_div) return;
    ad_tensor *a = inputs(dt, bin_shapes[sh].na, bin_shapes[sh].a, 505 + (uint64_t)sh);
    ad_tensor *b = inputs(dt, bin_shapes[sh].nb, bin_shapes[sh].b, 606 + (uint64_t)sh);
    int nd;
    int64_t ys[4];
    ck_assert(ad__broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, ys));
    ad_tensor *g = tu_rand(dt, nd, ys, -2.0, 2.0, 707);
    ck_assert_int_ge(g->size, 2 * AD__PAR_MIN);
    bin_result one = run_binary(bin_ops[op].f, a, b, g, 1);
    for (int th = 2; th <= max_threads(); th++) {
        bin_result r = run_binary(bin_ops[op].f, a, b, g, th);
        char what[3][64];
        for (int k = 0; k < 3; k++)
            snprintf(what[k], sizeof what[k], "%s %s shapes %d %s", bin_ops[op].name, ad_dtype_name(dt), sh,
                     k == 0 ? "y" : k == 1 ? "ga" : "gb");
        assert_same_tensor(one.y, r.y, what[0], th);
        assert_same_tensor(one.ga, r.ga, what[1], th);
        assert_same_tensor(one.gb, r.gb, what[2], th);
        bin_free(r);
    }
    /* the partials: the op on a and b broadcast to y's shape (no reduction), checked against the
    ** one-element definition (a scalar tape) like y; then summed to a's and b's shapes */
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_tensor *af = ad_tensor_clone(ad_value(ad_broadcast_to(ad_const(t, a), nd, ys)));
    ad_tensor *bf = ad_tensor_clone(ad_value(ad_broadcast_to(ad_const(t, b), nd, ys)));
    ck_assert_ptr_nonnull(af);
    ck_assert_ptr_nonnull(bf);
    for (int64_t i = 0; i < g->size; i += 61) /* (broadcast_to itself, in passing) */
        if (!same(ad_tensor_get(af, i), ad_tensor_get(a, bidx(g, i, a))) ||
            !same(ad_tensor_get(bf, i), ad_tensor_get(b, bidx(g, i, b))))
            ck_abort_msg("broadcast_to: element %lld", (long long)i);
    bin_result full = run_binary(bin_ops[op].f, af, bf, g, 1);
    ad_tensor *sa = ad_tensor_new(dt, 0, NULL), *sb = ad_tensor_new(dt, 0, NULL), *sg = ad_tensor_new(dt, 0, NULL);
    for (int64_t i = 0; i < g->size; i++) {
        if (!sampled(i, g->size)) continue;
        ad_tape_reset(t);
        ad_tensor_set(sa, 0, ad_tensor_get(af, i));
        ad_tensor_set(sb, 0, ad_tensor_get(bf, i));
        ad_tensor_set(sg, 0, ad_tensor_get(g, i));
        ad_var va = ad_leaf(t, sa), vb = ad_leaf(t, sb), y = bin_ops[op].f(va, vb);
        if (ad_backward(y, sg, 0) != AD_OK) ck_abort_msg("%s: a scalar backward failed", bin_ops[op].name);
        double want[3] = {ad_tensor_get(ad_value(y), 0), ad_tensor_get(ad_grad(va), 0), ad_tensor_get(ad_grad(vb), 0)};
        double got[3] = {ad_tensor_get(one.y, i), ad_tensor_get(full.ga, i), ad_tensor_get(full.gb, i)};
        for (int k = 0; k < 3; k++)
            if (!same(got[k], want[k]))
                ck_abort_msg("%s %s shapes %d: %s[%lld] = %.9g, one element gives %.9g", bin_ops[op].name,
                             ad_dtype_name(dt), sh, k == 0 ? "y" : k == 1 ? "ga" : "gb", (long long)i, got[k], want[k]);
    }
    ad_tape_free(t);
    const ad_tensor *got[2] = {one.ga, one.gb}, *in[2] = {a, b}, *part[2] = {full.ga, full.gb};
    for (int s = 0; s < 2; s++) {
        ad_tensor *want = ad_tensor_new(dt, in[s]->ndim, in[s]->shape);
        ref_sum_to(part[s], want);
        assert_same_tensor(want, got[s], s ? "gb against the summed partials" : "ga against the summed partials", 1);
        ad_tensor_free(want);
    }
    bin_free(full);
    ad_tensor_free(af);
    ad_tensor_free(bf);
    ad_tensor_free(sa);
    ad_tensor_free(sb);
    ad_tensor_free(sg);
    bin_free(one);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(g);
}
END_TEST

/* A gradient reaching one node twice is added into its slot (ad__add_into): y = relu(x) * x + x. */
START_TEST(accumulated_gradients_same_bits)
{
    ad_dtype dt = _i ? AD_F32 : AD_F64;
    int64_t n = BIG;
    ad_tensor *x = inputs(dt, 1, &n, 808), *g = tu_rand(dt, 1, &n, -1.0, 1.0, 909);
    ad_tensor *res[4] = {NULL};
    for (int th = 1; th <= max_threads(); th++) {
        ad_set_num_threads(th);
        ad_tape *t = ad_tape_new();
        ck_assert_ptr_nonnull(t);
        ad_var vx = ad_leaf(t, x), y = ad_add(ad_mul(ad_relu(vx), vx), vx);
        ck_assert_int_eq(ad_backward(y, g, 0), AD_OK);
        res[th] = ad_tensor_clone(ad_grad(vx));
        ad_tape_free(t);
        ad_set_num_threads(1);
        if (th > 1) assert_same_tensor(res[1], res[th], "relu(x) * x + x", th);
    }
    for (int th = 1; th <= max_threads(); th++) ad_tensor_free(res[th]);
    ad_tensor_free(x);
    ad_tensor_free(g);
}
END_TEST

static Suite *par_ops_suite(void)
{
    Suite *s = suite_create("par_ops");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, unary_threads_same_bits, 0, 2 * NUN);
    tcase_add_loop_test(tc, sum_to_threads_same_bits, 0, 2 * NSUM);
    tcase_add_loop_test(tc, binary_threads_same_bits, 0, 2 * NBIN * NBSH);
    tcase_add_loop_test(tc, accumulated_gradients_same_bits, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(par_ops_suite()); }

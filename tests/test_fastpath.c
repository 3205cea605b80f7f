/* test_fastpath.c: the backward pass's fast path (tensors, no graph) agrees with the recorded VJPs. */
#include "test_util.h"

#include "backward.h"
#include "test_rows.h"

/* A function of two inputs; the cases below cover every op with a fast VJP
** (FAST in ops.def) that has no elementwise test row (those are checked from
** their rows: fast_rows_match_recorded), same-shape and broadcast operands, a
** var used twice, and compositions of them all. */
typedef ad_var (*fn2)(ad_var a, ad_var b);

static ad_var f_add(ad_var a, ad_var b) { return ad_add(a, b); }
static ad_var f_sub(ad_var a, ad_var b) { return ad_sub(a, b); }
static ad_var f_mul(ad_var a, ad_var b) { return ad_mul(a, b); }
static ad_var f_div(ad_var a, ad_var b) { return ad_div(a, b); }
static ad_var f_self(ad_var a, ad_var b) { return ad_add(ad_mul(a, a), ad_sub(a, ad_div(b, a))); }
static ad_var f_unary(ad_var a, ad_var b)
{
    ad_var s = ad_add_scalar(ad_mul_scalar(ad_neg(a), 0.5), 2.0);
    s = ad_add(s, ad_exp(ad_mul_scalar(a, 0.1)));
    s = ad_add(s, ad_log(ad_square(b)));
    s = ad_add(s, ad_sqrt(ad_add_scalar(ad_square(a), 1.0)));
    s = ad_add(s, ad_mul(ad_sin(a), ad_cos(b)));
    s = ad_add(s, ad_tanh(ad_sigmoid(a)));
    s = ad_add(s, ad_relu(b));
    return ad_add(s, ad_leaky_relu(a, 0.1));
}
static ad_var f_reduce(ad_var a, ad_var b)
{
    ad_var r = ad_reshape(ad_mul(a, b), 1, (const int64_t[]){-1});
    return ad_add(ad_mean(r), ad_sum(ad_tanh(r)));
}
static ad_var f_layer(ad_var a, ad_var b)
{
    /* a [4,3] as inputs, b [3] as a bias-like row: matmul, broadcast add, log_softmax */
    ad_var h = ad_relu(ad_add(ad_matmul_t(a, a, false, true), ad_sum(b)));
    return ad_mean(ad_log_softmax(ad_add(h, ad_mul_scalar(ad_sum(ad_tanh(a)), 0.01)), 1));
}
/* Products with every transpose flag, a matrix-vector product (reshapes
** around a 2-D product) and a batched one (declines the fast path). */
static ad_var f_mm(ad_var a, ad_var b) { return ad_matmul(a, b); }
static ad_var f_mm_nt(ad_var a, ad_var b) { return ad_matmul_t(a, b, false, true); }
static ad_var f_mm_tn(ad_var a, ad_var b) { return ad_matmul_t(a, b, true, false); }
static ad_var f_mm_tt(ad_var a, ad_var b) { return ad_matmul_t(a, b, true, true); }
static ad_var f_mm_twice(ad_var a, ad_var b)
{
    ad_var h = ad_matmul_t(a, a, true, false); /* a used as both operands: the second gradient adds in */
    return ad_add(ad_matmul(h, b), ad_matmul(ad_tanh(h), b));
}
/* Cross-entropy as nn_loss_cross_entropy composes it: log_softmax, picked entries
** (class 2, 0, 2, 1 of rows 0..3; one picked twice), mean; the logits also
** feed a second term, so the log_softmax and index_select gradients add in. */
static ad_var f_xent(ad_var a, ad_var b)
{
    static const int64_t pick[] = {2, 3, 8, 10, 10};
    ad_var z = ad_add(a, b), ls = ad_log_softmax(z, 1);
    ad_var flat = ad_reshape(ls, 1, (const int64_t[]){-1});
    ad_var ce = ad_neg(ad_mean(ad_index_select(flat, 0, 5, pick)));
    ad_var cols = ad_index_select(ad_log_softmax(z, 0), 1, 2, (const int64_t[]){1, 1});
    return ad_add(ce, ad_sum(ad_mul(cols, cols)));
}
/* A bias b added twice, on either side: its second gradient is summed into the first. */
static ad_var f_bias_twice(ad_var a, ad_var b) { return ad_add(ad_add(a, b), ad_tanh(ad_add(b, a))); }

typedef struct fcase {
    const char *name;
    fn2 f;
    int64_t sa[3], sb[3];
    int na, nb;
    double lo, hi;
} fcase;

static const fcase cases[] = {
    {"add", f_add, {3, 4}, {3, 4}, 2, 2, -2, 2},
    {"add broadcast", f_add, {3, 4}, {4}, 2, 1, -2, 2},
    {"add broadcast twice", f_bias_twice, {3, 4}, {1, 4}, 2, 2, -2, 2},
    {"add broadcast both", f_add, {3, 1}, {1, 4}, 2, 2, -2, 2},
    {"sub", f_sub, {2, 3, 2}, {2, 3, 2}, 3, 3, -2, 2},
    {"sub broadcast", f_sub, {2, 1, 2}, {3, 1}, 3, 2, -2, 2},
    {"mul", f_mul, {5}, {5}, 1, 1, -2, 2},
    {"mul scalar", f_mul, {0}, {0}, 0, 0, -2, 2},
    /* scalars (0-dimensional) take the one-element fast VJPs */
    {"add scalar", f_add, {0}, {0}, 0, 0, -2, 2},
    {"sub scalar", f_sub, {0}, {0}, 0, 0, -2, 2},
    {"div scalar", f_div, {0}, {0}, 0, 0, 0.5, 2},
    {"var used twice scalar", f_self, {0}, {0}, 0, 0, 0.5, 2},
    {"unary ops scalar", f_unary, {0}, {0}, 0, 0, 0.2, 1.5},
    {"bias twice scalar", f_bias_twice, {0}, {0}, 0, 0, -2, 2},
    {"scalar times vector", f_mul, {0}, {4}, 0, 1, -2, 2},
    {"mul broadcast", f_mul, {3, 1}, {1, 4}, 2, 2, -2, 2},
    {"div", f_div, {4}, {4}, 1, 1, 0.5, 2},
    {"div broadcast", f_div, {2, 4}, {1}, 2, 1, 0.5, 2},
    {"var used twice", f_self, {6}, {6}, 1, 1, 0.5, 2},
    {"unary ops", f_unary, {3, 5}, {3, 5}, 2, 2, 0.2, 1.5},
    {"reductions", f_reduce, {2, 3}, {2, 3}, 2, 2, -1, 1},
    {"layer", f_layer, {4, 3}, {3}, 2, 1, -1, 1},
    {"cross-entropy", f_xent, {4, 3}, {3}, 2, 1, -2, 2},
    {"empty", f_mul, {0, 3}, {0, 3}, 2, 2, -1, 1},
    {"matmul", f_mm, {3, 4}, {4, 2}, 2, 2, -1, 1},
    {"matmul a b^T", f_mm_nt, {3, 4}, {5, 4}, 2, 2, -1, 1},
    {"matmul a^T b", f_mm_tn, {4, 3}, {4, 5}, 2, 2, -1, 1},
    {"matmul a^T b^T", f_mm_tt, {4, 3}, {2, 4}, 2, 2, -1, 1},
    {"matmul twice", f_mm_twice, {3, 4}, {4, 2}, 2, 2, -1, 1},
    {"matrix-vector", f_mm, {3, 4}, {4}, 2, 1, -1, 1},
    {"matrix-column (outer-product gradient)", f_mm, {3, 4}, {4, 1}, 2, 2, -1, 1},
    {"row-matrix (outer-product gradient)", f_mm_tn, {4, 1}, {4, 3}, 2, 2, -1, 1},
    {"batched matmul", f_mm, {2, 3, 4}, {4, 2}, 3, 2, -1, 1},
    {"empty matmul", f_mm, {3, 0}, {0, 2}, 2, 2, -1, 1},
};

/* dL/da and dL/db for L = sum(f(a, b) * w), with flags, f's inputs the F64 values a and b in dtype dt
** (freed here); f is fn (ctx NULL) or, with row set, the row's op. */
static void grads_of(const char *name, fn2 fn, const op_row *row, ad_tensor *a, ad_tensor *b, ad_dtype dt,
                     unsigned flags, ad_tensor **ga, ad_tensor **gb)
{
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_tensor *a2 = ad_tensor_new(dt, a->ndim, a->shape), *b2 = ad_tensor_new(dt, b->ndim, b->shape);
    ad_tensor_copy(a2, a);
    ad_tensor_copy(b2, b);
    ad_var va = ad_leaf(t, a2), vb = ad_leaf(t, b2);
    ad_var y = row ? op_row_build(row, va, vb) : fn(va, vb);
    const ad_tensor *vy = ad_value(y);
    ck_assert_msg(vy != NULL, "%s: %s", name, ad_tape_error(t));
    if (row) ck_assert_msg(ad__node(t, y.id)->op == row->op, "%s: the row's build does not record the op", name);
    ad_tensor *w = tu_rand(AD_F64, vy->ndim, vy->shape, -1, 1, 13), *w2 = ad_tensor_new(dt, vy->ndim, vy->shape);
    ad_tensor_copy(w2, w);
    ad_var l = ad_sum(ad_mul(y, ad_const(t, w2)));
    ad_var g[2];
    ck_assert_msg(ad_gradients(l, 2, (ad_var[]){va, vb}, g, flags) == AD_OK, "%s: %s", name, ad_tape_error(t));
    *ga = ad_tensor_clone(ad_value(g[0]));
    *gb = ad_tensor_clone(ad_value(g[1]));
    ck_assert_ptr_nonnull(*ga);
    ck_assert_ptr_nonnull(*gb);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(a2);
    ad_tensor_free(b2);
    ad_tensor_free(w);
    ad_tensor_free(w2);
    ad_tape_free(t);
}

/* The case's gradients. */
static void grads(const fcase *c, ad_dtype dt, unsigned flags, ad_tensor **ga, ad_tensor **gb)
{
    ad_tensor *a = tu_rand(AD_F64, c->na, c->sa, c->lo, c->hi, 11), *b = tu_rand(AD_F64, c->nb, c->sb, c->lo, c->hi, 12);
    grads_of(c->name, c->f, NULL, a, b, dt, flags, ga, gb);
}

static void agree(const char *name, const ad_tensor *x, const ad_tensor *y, double rtol)
{
    ck_assert_int_eq(x->size, y->size);
    for (int64_t i = 0; i < x->size; i++)
        ck_assert_msg(tu_close(ad_tensor_get(x, i), ad_tensor_get(y, i), rtol * 1e-3, rtol), "%s: element %lld: %.17g vs %.17g",
                      name, (long long)i, ad_tensor_get(x, i), ad_tensor_get(y, i));
}

START_TEST(fast_matches_recorded)
{
    const fcase *c = &cases[_i];
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        ad_tensor *fa, *fb, *ra, *rb;
        grads(c, dt, 0, &fa, &fb);
        grads(c, dt, AD_CREATE_GRAPH, &ra, &rb);
        double rtol = dt == AD_F64 ? 1e-12 : 1e-5;
        agree(c->name, fa, ra, rtol);
        agree(c->name, fb, rb, rtol);
        ad_tensor_free(fa);
        ad_tensor_free(fb);
        ad_tensor_free(ra);
        ad_tensor_free(rb);
    }
}
END_TEST

/* The gradients of the row's op, its inputs shaped sa, sb in the row's ranges. */
static void row_grads(const op_row *row, int na, const int64_t *sa, int nb, const int64_t *sb, ad_dtype dt,
                      unsigned flags, ad_tensor **ga, ad_tensor **gb)
{
    bool binary = row->kind == ROW_BINARY;
    ad_tensor *a = row->away ? tu_rand_away(na, sa, row->lo, row->hi, 21) : tu_rand(AD_F64, na, sa, row->lo, row->hi, 21);
    ad_tensor *b = row->baway ? tu_rand_away(nb, sb, row->blo, row->bhi, 22)
                              : tu_rand(AD_F64, nb, sb, binary ? row->blo : -1, binary ? row->bhi : 1, 22);
    grads_of(ad__ops[row->op].name, NULL, row, a, b, dt, flags, ga, gb);
}

/* Every elementwise op marked FAST in ops.def: its fast VJP against its recorded one, on same-shape
** tensors, on scalars (the one-element path) and broadcast (where binary ops decline). */
START_TEST(fast_rows_match_recorded)
{
    op_row row = op_row_of((ad_op)_i);
    if (!row.fast || row.kind == ROW_CUSTOM) return; /* the cases above cover the others */
    static const struct {
        int na, nb;
        int64_t sa[2], sb[2];
    } shapes[] = {{2, 2, {3, 4}, {3, 4}}, {0, 0, {0}, {0}}, {2, 1, {3, 4}, {4}}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int d = 0; d < 2; d++) {
            ad_dtype dt = d ? AD_F32 : AD_F64;
            ad_tensor *fa, *fb, *ra, *rb;
            row_grads(&row, shapes[k].na, shapes[k].sa, shapes[k].nb, shapes[k].sb, dt, 0, &fa, &fb);
            row_grads(&row, shapes[k].na, shapes[k].sa, shapes[k].nb, shapes[k].sb, dt, AD_CREATE_GRAPH, &ra, &rb);
            double rtol = dt == AD_F64 ? 1e-12 : 1e-5;
            agree(ad__ops[row.op].name, fa, ra, rtol);
            agree(ad__ops[row.op].name, fb, rb, rtol);
            ad_tensor_free(fa);
            ad_tensor_free(fb);
            ad_tensor_free(ra);
            ad_tensor_free(rb);
        }
}
END_TEST

/* Every op that has a fast VJP (FAST in ops.def) and no elementwise row is reached by at least one
** case above: a recording of all cases must contain each of them. */
START_TEST(cases_cover_fast_ops)
{
    bool seen[AD_OP_COUNT] = {false};
    ad_tape *t = ad_tape_new();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const fcase *c = &cases[k];
        ad_tensor *a = tu_rand(AD_F64, c->na, c->sa, c->lo, c->hi, 1), *b = tu_rand(AD_F64, c->nb, c->sb, c->lo, c->hi, 2);
        ad_tape_reset(t);
        c->f(ad_leaf(t, a), ad_leaf(t, b));
        for (uint32_t i = 0; i < t->count; i++) seen[ad__node(t, i)->op] = true;
        ad_tensor_free(a);
        ad_tensor_free(b);
    }
    int fast = 0;
    for (int op = 0; op < AD_OP_COUNT; op++) {
        op_row row = op_row_of((ad_op)op);
        if (!row.fast) continue;
        fast++;
        if (row.kind == ROW_CUSTOM) ck_assert_msg(seen[op], "no case reaches %s", ad__ops[op].name);
    }
    ck_assert_int_gt(fast, 0);
    ad_tape_free(t);
}
END_TEST

/* Params accumulate the same gradient from both paths. */
START_TEST(params_agree)
{
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3, 3), -1, 1, 5), *x = tu_rand(AD_F64, AD_SHAPE(3, 3), -1, 1, 6);
    ad_tensor *g1 = ad_tensor_new(AD_F64, AD_SHAPE(3, 3)), *g2 = ad_tensor_new(AD_F64, AD_SHAPE(3, 3));
    for (int k = 0; k < 2; k++) {
        ad_tape *t = ad_tape_new();
        ad_var p = ad_param(t, w, k ? g2 : g1);
        ad_var y = ad_sum(ad_tanh(ad_add(ad_matmul(ad_const(t, x), p), ad_mul(p, p))));
        ck_assert_int_eq(ad_backward(y, NULL, k ? AD_CREATE_GRAPH : 0), AD_OK);
        ck_assert_int_eq(ad_backward(y, NULL, k ? AD_CREATE_GRAPH : 0), AD_OK); /* twice: accumulates */
        ad_tape_free(t);
    }
    agree("param grads", g1, g2, 1e-12);
    ck_assert(fabs(ad_tensor_get(g1, 0)) > 0);
    ad_tensor_free(w);
    ad_tensor_free(x);
    ad_tensor_free(g1);
    ad_tensor_free(g2);
}
END_TEST

/* Param grad tensors after two backward passes of L = sum(f(a, b) * w) from
** params a and b whose grad tensors start at 0.25, with flags; *had_grad says
** whether ad_grad() gave the params a tape gradient. */
static void param_grads(const fcase *c, unsigned flags, ad_tensor **ga, ad_tensor **gb, bool *had_grad)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *a = tu_rand(AD_F64, c->na, c->sa, c->lo, c->hi, 11), *b = tu_rand(AD_F64, c->nb, c->sb, c->lo, c->hi, 12);
    *ga = ad_tensor_new(AD_F64, a->ndim, a->shape);
    *gb = ad_tensor_new(AD_F64, b->ndim, b->shape);
    ad_tensor_fill(*ga, 0.25);
    ad_tensor_fill(*gb, 0.25);
    ad_var va = ad_param(t, a, *ga), vb = ad_param(t, b, *gb);
    ad_var y = c->f(va, vb);
    const ad_tensor *vy = ad_value(y);
    ck_assert_msg(vy != NULL, "%s: %s", c->name, ad_tape_error(t));
    ad_tensor *w = tu_rand(AD_F64, vy->ndim, vy->shape, -1, 1, 13);
    ad_var l = ad_sum(ad_mul(y, ad_const(t, w)));
    for (int k = 0; k < 2; k++)
        ck_assert_msg(ad_backward(l, NULL, flags) == AD_OK, "%s: %s", c->name, ad_tape_error(t));
    *had_grad = ad_grad(va) != NULL || ad_grad(vb) != NULL;
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(w);
    ad_tape_free(t);
}

/* AD_ACCUMULATE adds into the params' grad tensors what the default path adds,
** for every case (broadcast, a param used twice, products with it as either
** operand), and keeps no copy on the tape. */
START_TEST(accumulate_matches_default)
{
    const fcase *c = &cases[_i];
    ad_tensor *da, *db, *aa, *ab;
    bool had_default, had_acc;
    param_grads(c, 0, &da, &db, &had_default);
    param_grads(c, AD_ACCUMULATE, &aa, &ab, &had_acc);
    agree(c->name, da, aa, 1e-12);
    agree(c->name, db, ab, 1e-12);
    ck_assert(had_default);
    ck_assert_msg(!had_acc, "%s: a param kept a tape gradient under AD_ACCUMULATE", c->name);
    ad_tensor_free(da);
    ad_tensor_free(db);
    ad_tensor_free(aa);
    ad_tensor_free(ab);
}
END_TEST

/* Under AD_ACCUMULATE, leaves and params without a grad tensor keep their tape
** gradient, and a param that is itself the output gets its seed added in. */
START_TEST(accumulate_edges)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_f64(AD_SHAPE(2), (const double[]){1.5, -2.0});
    ad_tensor *g = ad_tensor_new(AD_F64, AD_SHAPE(2));
    ad_var p = ad_param(t, x, g), q = ad_param(t, x, NULL), l = ad_leaf(t, x);
    ad_var y = ad_sum(ad_mul(ad_mul(p, q), l)); /* x^3 summed: each gets x^2 */
    ck_assert_int_eq(ad_backward(y, NULL, AD_ACCUMULATE), AD_OK);
    ck_assert_ptr_null(ad_grad(p));
    ck_assert_ptr_nonnull(ad_grad(q));
    ck_assert_ptr_nonnull(ad_grad(l));
    for (int i = 0; i < 2; i++) {
        double x2 = ad_tensor_get(x, i) * ad_tensor_get(x, i);
        ck_assert_double_eq_tol(ad_tensor_get(g, i), x2, 1e-15);
        ck_assert_double_eq_tol(ad_tensor_get(ad_grad(q), i), x2, 1e-15);
        ck_assert_double_eq_tol(ad_tensor_get(ad_grad(l), i), x2, 1e-15);
    }
    /* two params sharing one grad tensor both add into it; a param recorded after
    ** the output gets nothing */
    ad_tape_reset(t);
    ad_tensor_fill(g, 0.0);
    ad_var p1 = ad_param(t, x, g), p2 = ad_param(t, x, g);
    ad_var y2 = ad_sum(ad_mul(p1, ad_mul_scalar(p2, 3.0))); /* d/dp1 = 3x, d/dp2 = 3x */
    ad_var late = ad_param(t, x, g);
    ck_assert(ad_ok(late));
    ck_assert_int_eq(ad_backward(y2, NULL, AD_ACCUMULATE), AD_OK);
    for (int i = 0; i < 2; i++) ck_assert_double_eq_tol(ad_tensor_get(g, i), 6.0 * ad_tensor_get(x, i), 1e-15);
    /* the param as the output: dp/dp = 1 is added into its grad tensor */
    ad_tape_reset(t);
    ad_tensor *s = tu_f64(0, NULL, (const double[]){3.0}), *gs = tu_f64(0, NULL, (const double[]){0.5});
    ad_var ps = ad_param(t, s, gs);
    ck_assert_int_eq(ad_backward(ps, NULL, AD_ACCUMULATE), AD_OK);
    ck_assert_double_eq(ad_tensor_get(gs, 0), 1.5);
    ad_tensor_free(s);
    ad_tensor_free(gs);
    ad_tensor_free(x);
    ad_tensor_free(g);
    ad_tape_free(t);
}
END_TEST

/* Anomaly detection sees non-finite gradients on the fast path too and names the op. */
START_TEST(fast_path_anomaly)
{
    ad_tape *t = ad_tape_new();
    ad_tape_set_anomaly_detection(t, true);
    ad_tensor *x = tu_f64(AD_SHAPE(2), (const double[]){0.0, 1.0});
    ad_var y = ad_sum(ad_sqrt(ad_leaf(t, x)));
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_sqrt") && strstr(ad_tape_error(t), "backward"), "%s", ad_tape_error(t));
    ad_tape_free(t);
    ad_tensor_free(x);
}
END_TEST

static Suite *fastpath_suite(void)
{
    Suite *s = suite_create("fastpath");
    TCase *tc = tcase_create("agree");
    tcase_add_loop_test(tc, fast_matches_recorded, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, cases_cover_fast_ops);
    tcase_add_loop_test(tc, fast_rows_match_recorded, 0, AD_OP_COUNT);
    tcase_add_test(tc, params_agree);
    tcase_add_test(tc, fast_path_anomaly);
    tcase_add_loop_test(tc, accumulate_matches_default, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, accumulate_edges);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fastpath_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

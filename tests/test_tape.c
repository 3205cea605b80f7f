/* test_tape.c: the tape: reset and memory reuse, handles, sticky errors and their messages, backward semantics. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "gemm.h"
#include "test_util.h"

/* ---- allocators that count, and fail on request ---- */

typedef struct counting {
    long allocs;  /* fresh allocations and reallocations */
    long live;    /* blocks not yet freed */
    long fail_at; /* fail the fail_at-th request and all later ones (0: never) */
    bool once;    /* fail only the fail_at-th request */
    bool failed;
} counting;

static void *counting_alloc(void *ud, void *ptr, size_t nsize)
{
    counting *c = ud;
    if (nsize == 0) {
        if (ptr) c->live--;
        free(ptr);
        return NULL;
    }
    c->allocs++;
    if (c->fail_at > 0 && (c->once ? c->allocs == c->fail_at : c->allocs >= c->fail_at)) {
        c->failed = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p && !ptr) c->live++;
    return p;
}

/* ---- a small step used by several tests: y = sum(tanh(x @ w) * x2) + sum(w^2) over many nodes ---- */

typedef struct step_data {
    ad_tensor *x, *w, *wgrad;
} step_data;

static step_data step_data_new(int64_t n)
{
    step_data d;
    d.x = tu_rand(AD_F64, AD_SHAPE(n, n), -1, 1, 11);
    d.w = tu_rand(AD_F64, AD_SHAPE(n, n), -1, 1, 12);
    d.wgrad = ad_tensor_new(AD_F64, AD_SHAPE(n, n));
    ck_assert_ptr_nonnull(d.wgrad);
    return d;
}

static void step_data_free(step_data *d)
{
    ad_tensor_free(d->x);
    ad_tensor_free(d->w);
    ad_tensor_free(d->wgrad);
}

/* Records the step (with `chain` extra scalar nodes, so it spans several node chunks) and backpropagates. */
static ad_status step(ad_tape *t, step_data *d, int chain)
{
    ad_var x = ad_const(t, d->x), w = ad_param(t, d->w, d->wgrad);
    ad_var h = ad_tanh(ad_matmul(x, w));
    ad_var y = ad_add(ad_sum(ad_mul(h, x)), ad_sum(ad_square(w)));
    for (int i = 0; i < chain; i++) y = ad_add_scalar(ad_mul_scalar(y, 1.0), 0.0);
    return ad_backward(y, NULL, 0);
}

/* A gradient penalty step: L = sum(tanh(x @ w)) + |dL0/dw|^2, backpropagated into w. */
static ad_status step2(ad_tape *t, step_data *d)
{
    ad_var x = ad_const(t, d->x), w = ad_param(t, d->w, d->wgrad);
    ad_var l0 = ad_sum(ad_tanh(ad_matmul(x, w)));
    ad_var g;
    ad_status s = ad_gradients(l0, 1, &w, &g, AD_CREATE_GRAPH);
    if (s != AD_OK) return s;
    return ad_backward(ad_add(l0, ad_sum(ad_square(g))), NULL, 0);
}

/* A product whose packed panels outgrow the threads' stacks (64 KiB each) takes them from the tape's
** arena, given back after the call: a warmed-up step with such products, forward and backward, makes
** no heap allocation either, with the built-in kernel on 1 and 2 threads, F32 and F64, and the arena
** does not grow from step to step. */
START_TEST(test_large_products_allocate_nothing)
{
    for (int f64 = 0; f64 < 2; f64++)
        for (int threads = 1; threads <= 2; threads++) {
            ad_dtype dt = f64 ? AD_F64 : AD_F32;
            ad_tensor *x = tu_rand(dt, AD_SHAPE(160, 200), -1, 1, 21), *w = tu_rand(dt, AD_SHAPE(200, 176), -1, 1, 22);
            ad_tensor *wg = ad_tensor_new(dt, AD_SHAPE(200, 176));
            ck_assert_ptr_nonnull(wg);
            ad_tape *t = ad_tape_new();
            ck_assert_ptr_nonnull(t);
            ad__gemm_set_backend(AD__GEMM_BUILTIN, AD__GEMM_BEST);
            ad_set_num_threads(threads);
            counting c = {0};
            size_t bytes = 0;
            for (int i = 0; i < 6; i++) {
                if (i == 3) {
                    bytes = ad_tape_arena_bytes(t);
                    ad_set_allocator(counting_alloc, &c);
                }
                ad_var xv = ad_param(t, x, NULL), wv = ad_param(t, w, wg);
                ad_var y = ad_sum(ad_square(ad_matmul(xv, wv)));
                ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
                ad_tape_reset(t);
                if (i >= 3) ck_assert_uint_eq(ad_tape_arena_bytes(t), bytes);
            }
            ad_set_allocator(NULL, NULL);
            ad_set_num_threads(1);
            ad__gemm_set_backend(AD__GEMM_AUTO, AD__GEMM_BEST);
            ck_assert_msg(c.allocs == 0, "%s, %d threads: a warmed-up step made %ld heap allocations",
                          f64 ? "F64" : "F32", threads, c.allocs);
            ad_tape_free(t);
            ad_tensor_free(x);
            ad_tensor_free(w);
            ad_tensor_free(wg);
        }
}
END_TEST

START_TEST(test_reset_keeps_memory)
{
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ad_tape_node_count(t), 0);
    step_data d = step_data_new(48);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(step(t, &d, 700), AD_OK);
        ck_assert_int_gt(ad_tape_node_count(t), 1400);
        ad_tape_reset(t);
        ck_assert_int_eq(ad_tape_node_count(t), 0);
    }
    size_t bytes = ad_tape_arena_bytes(t);
    ck_assert_uint_gt(bytes, 0);
    counting c = {0};
    ad_set_allocator(counting_alloc, &c);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(step(t, &d, 700), AD_OK);
        ad_tape_reset(t);
        ck_assert_uint_eq(ad_tape_arena_bytes(t), bytes);
    }
    ad_set_allocator(NULL, NULL);
    ck_assert_msg(c.allocs == 0, "a warmed-up step made %ld heap allocations", c.allocs);
    /* the same for a step that differentiates a gradient (AD_CREATE_GRAPH) */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(step2(t, &d), AD_OK);
        ad_tape_reset(t);
    }
    bytes = ad_tape_arena_bytes(t);
    ad_set_allocator(counting_alloc, &c);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(step2(t, &d), AD_OK);
        ad_tape_reset(t);
        ck_assert_uint_eq(ad_tape_arena_bytes(t), bytes);
    }
    ad_set_allocator(NULL, NULL);
    ck_assert_msg(c.allocs == 0, "a warmed-up second-order step made %ld heap allocations", c.allocs);
    ad_tape_free(t);
    step_data_free(&d);
}
END_TEST

START_TEST(test_stale_handle)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(2), (double[]){1, 2});
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_exp(x);
    ck_assert(ad_ok(y));
    ad_tape_reset(t);
    ck_assert(!ad_ok(x));
    ck_assert_ptr_null(ad_value(x));
    ck_assert_ptr_null(ad_value(y));
    ck_assert_ptr_null(ad_grad(x));
    ck_assert(isnan(ad_item(y)));
    /* a new node now sits at x's old id, yet the stale handle is still refused */
    ad_var fresh = ad_leaf(t, xv);
    ck_assert_int_eq(fresh.id, x.id);
    ad_var z = ad_mul(fresh, y);
    ck_assert(!ad_ok(z));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_STATE);
    ck_assert_str_eq(ad_tape_error(t), "ad_mul: operand 2 is a stale handle (from before ad_tape_reset)");
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_ERR_STATE);
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_different_tapes_and_bad_vars)
{
    ad_tape *t1 = ad_tape_new(), *t2 = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(2), (double[]){1, 2});
    ad_var a = ad_leaf(t1, xv), b = ad_leaf(t2, xv);
    ad_var c = ad_add(a, b);
    ck_assert(!ad_ok(c));
    ck_assert_int_eq(ad_tape_status(t1), AD_ERR_ARG);
    ck_assert_str_eq(ad_tape_error(t1), "ad_add: operand 2 is on a different tape");
    ck_assert_int_eq(ad_tape_status(t2), AD_OK);
    ad_tape_clear_error(t1);

    /* a zeroed var has no tape: the result is invalid and nothing can be recorded */
    ad_var none = {0};
    ck_assert(!ad_ok(ad_exp(none)));
    ck_assert(!ad_ok(ad_add(none, none)));
    ck_assert_ptr_null(ad_value(none));
    ck_assert_int_eq(ad_backward(none, NULL, 0), AD_ERR_ARG);
    /* a var with no tape next to a valid one is named */
    ck_assert(!ad_ok(ad_mul(a, none)));
    ck_assert_int_eq(ad_tape_status(t1), AD_ERR_ARG);
    ck_assert_str_eq(ad_tape_error(t1), "ad_mul: operand 2 is not a var (no tape)");
    ad_tape_clear_error(t1);
    /* an invalid var of this tape */
    ad_var inv = {t1, AD_NO_NODE, a.gen};
    ck_assert(!ad_ok(ad_sub(a, inv)));
    ck_assert_str_eq(ad_tape_error(t1), "ad_sub: operand 2 is an invalid var");
    ad_tape_clear_error(t1);
    /* an id past the end */
    ad_var past = {t1, 1000, a.gen};
    ck_assert(!ad_ok(ad_neg(past)));
    ck_assert_int_eq(ad_tape_status(t1), AD_ERR_STATE);
    ad_tape_clear_error(t1);
    /* NULL values and tapes */
    ck_assert(!ad_ok(ad_leaf(t1, NULL)));
    ck_assert_int_eq(ad_tape_status(t1), AD_ERR_ARG);
    ck_assert_str_eq(ad_tape_error(t1), "ad_leaf: value is NULL");
    ad_tape_clear_error(t1);
    ck_assert(!ad_ok(ad_const(NULL, xv)));
    ck_assert(!ad_ok(ad_scalar(NULL, AD_F64, 1.0)));
    ck_assert_int_eq(ad_tape_status(NULL), AD_ERR_ARG);
    ck_assert_ptr_nonnull(ad_tape_error(NULL));
    ck_assert_int_eq(ad_tape_node_count(NULL), 0);
    ad_tape_reset(NULL);
    ad_tape_clear_error(NULL);
    ad_tape_free(NULL);
    ck_assert(!ad_ok(ad_concat(0, NULL, 0)));
    ad_tape_free(t1);
    ad_tape_free(t2);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_sticky_errors)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *av = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 1), *bv = tu_rand(AD_F64, AD_SHAPE(5, 2), -1, 1, 2);
    ad_var a = ad_leaf(t, av), b = ad_leaf(t, bv);
    ad_var ok = ad_exp(a);
    ck_assert(ad_ok(ok));
    ad_var bad = ad_matmul(a, b);
    ck_assert(!ad_ok(bad));
    ck_assert_uint_eq(bad.id, AD_NO_NODE);
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    const char *first = "ad_matmul: inner dimensions differ: [3,4] x [5,2]";
    ck_assert_str_eq(ad_tape_error(t), first);
    size_t nodes = ad_tape_node_count(t);
    /* chained ops on the invalid var, and even on valid vars, record nothing and keep the first message */
    ad_var chain = ad_sum(ad_tanh(ad_add(bad, a)));
    ck_assert(!ad_ok(chain));
    ck_assert(!ad_ok(ad_exp(a)));
    ck_assert(!ad_ok(ad_sum_axis(a, 7, false)));
    ck_assert(!ad_ok(ad_scalar(t, AD_F64, 2)));
    ck_assert(!ad_ok(ad_leaf(t, av)));
    ck_assert(!ad_ok(ok)); /* ad_ok says the record has an error */
    ck_assert_int_eq(ad_tape_node_count(t), nodes);
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t), first);
    ck_assert_int_eq(ad_backward(ad_sum(ok), NULL, 0), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_backward(chain, NULL, 0), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t), first);
    /* clearing the error lets the tape go on */
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ck_assert_str_eq(ad_tape_error(t), "");
    ck_assert(ad_ok(ok));
    ad_var s = ad_sum(ad_exp(a));
    ck_assert(ad_ok(s));
    ck_assert_int_eq(ad_backward(s, NULL, 0), AD_OK);
    /* reset clears it as well */
    ck_assert(!ad_ok(ad_matmul(a, b)));
    ad_tape_reset(t);
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ck_assert_str_eq(ad_tape_error(t), "");
    ad_tape_free(t);
    ad_tensor_free(av);
    ad_tensor_free(bv);
}
END_TEST

/* Runs a failing expression on a fresh tape state and checks status and exact message. */
#define EXPECT_ERROR(t, expr, st, msg)                                                                                 \
    do {                                                                                                               \
        ad_tape_clear_error(t);                                                                                        \
        ad_var r_ = (expr);                                                                                            \
        ck_assert_msg(!ad_ok(r_), "%s succeeded", #expr);                                                              \
        ck_assert_int_eq(ad_tape_status(t), (st));                                                                     \
        ck_assert_str_eq(ad_tape_error(t), (msg));                                                                     \
    } while (0)

START_TEST(test_error_messages)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *m23 = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 1), *v4 = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 2),
              *f23 = ad_tensor_new(AD_F32, AD_SHAPE(2, 3)), *m34 = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 3);
    ad_var a = ad_leaf(t, m23), v = ad_leaf(t, v4), f = ad_const(t, f23), c = ad_leaf(t, m34);
    EXPECT_ERROR(t, ad_add(a, v), AD_ERR_SHAPE, "ad_add: shapes [2,3] and [4] do not broadcast");
    EXPECT_ERROR(t, ad_mul(a, f), AD_ERR_DTYPE, "ad_mul: dtypes differ: f64 and f32");
    EXPECT_ERROR(t, ad_matmul(a, f), AD_ERR_DTYPE, "ad_matmul: dtypes differ: f64 and f32");
    EXPECT_ERROR(t, ad_matmul(c, a), AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: [3,4] x [2,3]");
    EXPECT_ERROR(t, ad_sum_axis(a, 2, false), AD_ERR_AXIS,
                 "ad_sum_axis: axis 2 is out of range for a tensor of 2 dimensions");
    EXPECT_ERROR(t, ad_softmax(v, -2), AD_ERR_AXIS, "ad_softmax: axis -2 is out of range for a tensor of 1 dimension");
    EXPECT_ERROR(t, ad_transpose(a, 0, 5), AD_ERR_AXIS,
                 "ad_transpose: axis 5 is out of range for a tensor of 2 dimensions");
    EXPECT_ERROR(t, ad_index_select(a, 1, 2, (const int64_t[]){0, 3}), AD_ERR_INDEX,
                 "ad_index_select: index 3 (position 1) is out of range for an axis of length 3");
    EXPECT_ERROR(t, ad_index_select(a, 0, 1, (const int64_t[]){-3}), AD_ERR_INDEX,
                 "ad_index_select: index -3 (position 0) is out of range for an axis of length 2");
    EXPECT_ERROR(t, ad_reshape(a, AD_SHAPE(4, 2)), AD_ERR_SHAPE,
                 "ad_reshape: cannot reshape [2,3] (6 elements) to [4,2]");
    EXPECT_ERROR(t, ad_broadcast_to(a, AD_SHAPE(3, 3)), AD_ERR_SHAPE,
                 "ad_broadcast_to: cannot broadcast [2,3] to [3,3]");
    EXPECT_ERROR(t, ad_concat(2, (ad_var[]){a, c}, 0), AD_ERR_SHAPE,
                 "ad_concat: input 2 [3,4] does not match input 1 [2,3] outside axis 0");
    EXPECT_ERROR(t, ad_concat(2, (ad_var[]){a, f}, 0), AD_ERR_DTYPE, "ad_concat: input 2 is f32, input 1 is f64");
    EXPECT_ERROR(t, ad_max_axis(ad_slice(a, 1, 0, 0), 1, false), AD_ERR_SHAPE,
                 "ad_max_axis: cannot reduce axis 1 of length 0");
    EXPECT_ERROR(t, ad_clamp(a, 2, 1), AD_ERR_ARG, "ad_clamp: lo 2 is greater than hi 1");
    EXPECT_ERROR(t, ad_cast(a, (ad_dtype)9), AD_ERR_DTYPE, "ad_cast: unknown dtype 9");
    EXPECT_ERROR(t, ad_matmul(v, c), AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: [4] x [3,4]");
    EXPECT_ERROR(t, ad_matmul(a, v), AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: [2,3] x [4]");
    EXPECT_ERROR(t, ad_matmul(v, ad_slice(v, 0, 0, 3)), AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: [4] x [3]");
    EXPECT_ERROR(t, ad_matmul_t(a, v, true, false), AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: [2,3]^T x [4]");
    EXPECT_ERROR(t, ad_matmul(ad_sum(a), c), AD_ERR_SHAPE,
                 "ad_matmul: operands must have at least 1 dimension: [] x [3,4]");
    ad_tape_clear_error(t);
    ad_tape_free(t);
    ad_tensor_free(m23);
    ad_tensor_free(v4);
    ad_tensor_free(f23);
    ad_tensor_free(m34);
}
END_TEST

START_TEST(test_status_strings)
{
    const ad_status all[] = {AD_OK,          AD_ERR_NOMEM, AD_ERR_ARG,    AD_ERR_SHAPE,
                             AD_ERR_DTYPE,   AD_ERR_AXIS,  AD_ERR_INDEX,  AD_ERR_STATE,
                             AD_ERR_NUMERIC, AD_ERR_IO,    AD_ERR_FORMAT, AD_ERR_UNSUPPORTED};
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n; i++) {
        const char *s = ad_status_str(all[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_gt(strlen(s), 0);
        for (int j = 0; j < i; j++) ck_assert_str_ne(s, ad_status_str(all[j]));
    }
    ck_assert_ptr_nonnull(ad_status_str((ad_status)-1000));
    ck_assert_ptr_nonnull(ad_status_str((ad_status)5));
}
END_TEST

START_TEST(test_grad_disabled)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){1, 2, 3});
    ck_assert(ad_tape_grad_enabled(t));
    ck_assert(ad_tape_set_grad_enabled(t, false) == true);
    ck_assert(!ad_tape_grad_enabled(t));
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_sum(ad_mul(ad_exp(x), x));
    ck_assert(ad_ok(y));
    ck_assert(!ad_requires_grad(x));
    ck_assert(!ad_requires_grad(y));
    TU_ASSERT_CLOSE(ad_item(y), exp(1) + 2 * exp(2) + 3 * exp(3), 0, 1e-14);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_ERR_STATE);
    ad_tape_clear_error(t);
    ck_assert(ad_tape_set_grad_enabled(t, true) == false);
    ad_var x2 = ad_leaf(t, xv);
    ad_var y2 = ad_sum(ad_mul(x2, x)); /* mixes a var from the no-grad region */
    ck_assert(ad_requires_grad(x2));
    ck_assert(ad_requires_grad(y2));
    ck_assert_int_eq(ad_backward(y2, NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x2), (double[]){1, 2, 3}, 0, 0);
    ck_assert_ptr_null(ad_grad(x));
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_accumulate_and_leaves)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){0.5, -1.0, 2.0});
    ad_var x = ad_leaf(t, xv), k = ad_const(t, xv);
    ck_assert(ad_requires_grad(x));
    ck_assert(!ad_requires_grad(k));
    ck_assert_ptr_eq(ad_value(x)->data, xv->data); /* borrowed */
    ad_var y = ad_sum(ad_add(ad_mul(x, x), ad_mul(x, k)));
    ck_assert_ptr_null(ad_grad(x));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){1.5, -3.0, 6.0}, 0, 1e-15); /* 2x + x */
    ck_assert_ptr_null(ad_grad(k));
    ck_assert_ptr_null(ad_grad(y));

    /* x * x + x: one var used three times */
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    ck_assert_int_eq(ad_backward(ad_sum(ad_add(ad_mul(x, x), x)), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){2.0, -1.0, 5.0}, 0, 1e-15);

    /* scalars and ad_full */
    ad_tape_reset(t);
    ad_var s = ad_scalar(t, AD_F64, 4.0);
    ck_assert_int_eq(ad_value(s)->ndim, 0);
    ck_assert(ad_item(s) == 4.0);
    ad_var fl = ad_full(t, AD_F32, AD_SHAPE(2, 2), 1.5);
    ck_assert_int_eq(ad_value(fl)->dtype, AD_F32);
    ck_assert(ad_tensor_get(ad_value(fl), 3) == 1.5);
    ck_assert(!ad_requires_grad(fl));
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_param_accumulates)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *wv = tu_f64(AD_SHAPE(2), (double[]){3.0, -2.0});
    ad_tensor *wg = tu_f64(AD_SHAPE(2), (double[]){10.0, 20.0});
    for (int round = 1; round <= 2; round++) {
        ad_var w = ad_param(t, wv, wg);
        ck_assert(ad_requires_grad(w));
        ck_assert_int_eq(ad_backward(ad_sum(ad_square(w)), NULL, 0), AD_OK); /* d = 2w */
        tu_assert_values(wg, (double[]){10.0 + 6.0 * round, 20.0 - 4.0 * round}, 0, 1e-15);
        tu_assert_values(ad_grad(w), (double[]){6.0, -4.0}, 0, 1e-15);
        ad_tape_reset(t);
    }
    /* two backward calls on one tape add twice */
    ad_var w = ad_param(t, wv, wg);
    ad_var y = ad_sum(ad_mul_scalar(w, 0.5));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    tu_assert_values(wg, (double[]){23.0, 13.0}, 0, 1e-15);
    /* grad may be NULL; a mismatched grad is refused */
    ad_tape_reset(t);
    ad_var w0 = ad_param(t, wv, NULL);
    ck_assert_int_eq(ad_backward(ad_sum(w0), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(w0), (double[]){1.0, 1.0}, 0, 0);
    ad_tensor *bad = ad_tensor_new(AD_F64, AD_SHAPE(3));
    ck_assert(!ad_ok(ad_param(t, wv, bad)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t), "ad_param: grad [3] f64 does not match value [2] f64");
    /* f32 parameters accumulate in f32; a param may be the output itself */
    ad_tape_clear_error(t);
    ad_tape_reset(t);
    ad_tensor *fv = ad_tensor_new(AD_F32, AD_SHAPE(2)), *fg = ad_tensor_new(AD_F32, AD_SHAPE(2));
    ad_tensor_set(fv, 0, 1.5);
    ad_tensor_set(fv, 1, -0.5);
    ad_var f = ad_param(t, fv, fg);
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(f)), NULL, 0), AD_OK);
    ck_assert(((float *)fg->data)[0] == 3.0f && ((float *)fg->data)[1] == -1.0f);
    ad_tensor *s1 = ad_tensor_new(AD_F32, AD_SHAPE(2));
    ad_tensor_fill(s1, 0.5);
    ck_assert_int_eq(ad_backward(f, s1, 0), AD_OK);
    ck_assert(((float *)fg->data)[0] == 3.5f && ((float *)fg->data)[1] == -0.5f);
    ad_tensor *f64g = ad_tensor_new(AD_F64, AD_SHAPE(2));
    ck_assert(!ad_ok(ad_param(t, fv, f64g)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_DTYPE);
    ad_tensor_free(f64g);
    ad_tensor_free(s1);
    ad_tensor_free(fv);
    ad_tensor_free(fg);
    ad_tape_free(t);
    ad_tensor_free(bad);
    ad_tensor_free(wv);
    ad_tensor_free(wg);
}
END_TEST

START_TEST(test_gradients_api)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(2), (double[]){1.0, 2.0}), *zv = tu_f64(AD_SHAPE(3), (double[]){1, 1, 1});
    ad_tensor *wv = tu_f64(AD_SHAPE(2), (double[]){0.5, 0.25}), *wg = tu_f64(AD_SHAPE(2), (double[]){7, 7});
    ad_var x = ad_leaf(t, xv), w = ad_param(t, wv, wg), z = ad_leaf(t, zv);
    ad_var y = ad_sum(ad_mul(ad_square(x), w)); /* dy/dx = 2 x w, dy/dw = x^2 */
    ad_var g[3];
    ck_assert_int_eq(ad_gradients(y, 3, (ad_var[]){x, w, z}, g, 0), AD_OK);
    tu_assert_values(ad_value(g[0]), (double[]){1.0, 1.0}, 0, 1e-15);
    tu_assert_values(ad_value(g[1]), (double[]){1.0, 4.0}, 0, 1e-15);
    tu_assert_shape(ad_value(g[2]), AD_SHAPE(3));
    tu_assert_values(ad_value(g[2]), (double[]){0, 0, 0}, 0, 0);
    tu_assert_values(wg, (double[]){7, 7}, 0, 0); /* untouched */
    ck_assert_ptr_null(ad_grad(x));
    ck_assert_ptr_null(ad_grad(w));
    ck_assert(!ad_requires_grad(g[0])); /* no AD_CREATE_GRAPH */

    /* with AD_CREATE_GRAPH the gradient is differentiable: d/dx sum(2 x w) = 2 w */
    ad_var gx;
    ck_assert_int_eq(ad_gradients(y, 1, &x, &gx, AD_CREATE_GRAPH), AD_OK);
    ck_assert(ad_requires_grad(gx));
    ck_assert_int_eq(ad_backward(ad_sum(gx), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){1.0, 0.5}, 0, 1e-15);

    /* a gradient with respect to an intermediate */
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    ad_var h = ad_exp(x);
    ad_var y2 = ad_sum(ad_square(h));
    ck_assert_int_eq(ad_gradients(y2, 1, &h, g, 0), AD_OK);
    tu_assert_values(ad_value(g[0]), (double[]){2 * exp(1.0), 2 * exp(2.0)}, 0, 1e-14);
    /* bad arguments */
    ck_assert_int_eq(ad_gradients(y2, -1, &h, g, 0), AD_ERR_ARG);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_gradients(y2, 1, NULL, g, 0), AD_ERR_ARG);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_gradients(h, 1, &x, g, 0), AD_ERR_SHAPE); /* non-scalar output */
    ad_tape_free(t);
    ad_tensor_free(xv);
    ad_tensor_free(zv);
    ad_tensor_free(wv);
    ad_tensor_free(wg);
}
END_TEST

START_TEST(test_seeds)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){1.0, 2.0, 3.0});
    ad_tensor *seed = tu_f64(AD_SHAPE(3), (double[]){1.0, -1.0, 0.5});
    ad_tensor *seed_bad = tu_f64(AD_SHAPE(4), NULL);
    ad_tensor *seed_f32 = ad_tensor_new(AD_F32, AD_SHAPE(3));
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_square(x);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t),
                     "ad_backward: output [3] has 3 elements; pass a seed (dL/dy) for non-scalar outputs");
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_backward(y, seed_bad, 0), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t), "ad_backward: seed [4] f64 does not match output [3] f64");
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_backward(y, seed_f32, 0), AD_ERR_DTYPE);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_backward(y, seed, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){2.0, -4.0, 3.0}, 0, 1e-15);
    /* a one-element output of any rank needs no seed; a scalar output accepts a scalar seed */
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    ck_assert_int_eq(ad_backward(ad_reshape(ad_sum(x), AD_SHAPE(1, 1)), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){1, 1, 1}, 0, 0);
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    ad_tensor *s0 = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (double[]){3.0});
    ck_assert_int_eq(ad_backward(ad_sum(x), s0, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){3, 3, 3}, 0, 0);
    /* an explicit seed var: shape and dtype must match too */
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    y = ad_square(x);
    ad_var g;
    ck_assert_int_eq(ad_gradients_seed(y, ad_const(t, seed_bad), 1, &x, &g, 0), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(t), "ad_gradients_seed: seed [4] f64 does not match output [3] f64");
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_gradients_seed(y, ad_const(t, seed_f32), 1, &x, &g, 0), AD_ERR_DTYPE);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_gradients_seed(y, ad_const(t, seed), 1, &x, &g, 0), AD_OK);
    tu_assert_values(ad_value(g), (double[]){2.0, -4.0, 3.0}, 0, 1e-15);
    /* a seed that depends on x, with AD_CREATE_GRAPH: d/dx sum(2 x * x) = 4 x */
    ck_assert_int_eq(ad_gradients_seed(y, x, 1, &x, &g, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_backward(ad_sum(g), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){4.0, 8.0, 12.0}, 0, 1e-15);
    ad_tape_free(t);
    ad_tensor_free(s0);
    ad_tensor_free(xv);
    ad_tensor_free(seed);
    ad_tensor_free(seed_bad);
    ad_tensor_free(seed_f32);
}
END_TEST

/* ad_backward reads the caller's seed in place (no copy): it must leave the seed as it was, and
** no leaf's gradient may be the seed's memory, even where every op passes the gradient through
** (the leaf itself as the output, a reshape, a sum of the leaf with itself, a param with
** AD_ACCUMULATE). The seed is
** overwritten and freed before the gradients are read (under ASan or valgrind an alias fails
** there too). */
START_TEST(test_seed_read_in_place)
{
    for (int c = 0; c < 4; c++) {
        ad_tape *t = ad_tape_new();
        ad_tensor *xv = tu_f64(AD_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6});
        ad_tensor *pg = tu_f64(AD_SHAPE(2, 3), (double[]){0, 0, 0, 0, 0, 0});
        const double sv[6] = {0.5, -1, 2, 0, -3, 4};
        ad_tensor *seed = c == 0 ? tu_f64(AD_SHAPE(2, 3), sv) : tu_f64(AD_SHAPE(6), sv);
        ad_var x = c == 3 ? ad_param(t, xv, pg) : ad_leaf(t, xv), y;
        double k = 1; /* dy/dx */
        if (c == 0) {
            y = x; /* the leaf itself */
        } else if (c == 1) {
            y = ad_reshape(x, AD_SHAPE(6));
        } else {
            y = ad_reshape(ad_add(x, x), AD_SHAPE(6)); /* two contributions to x's slot */
            k = 2;
        }
        ck_assert_int_eq(ad_backward(y, seed, c == 3 ? AD_ACCUMULATE : 0), AD_OK);
        for (int i = 0; i < 6; i++) ck_assert_double_eq(((const double *)seed->data)[i], sv[i]);
        for (int i = 0; i < 6; i++) ((double *)seed->data)[i] = 99;
        ad_tensor_free(seed);
        const ad_tensor *g = c == 3 ? pg : ad_grad(x); /* (AD_ACCUMULATE: the param's grad tensor) */
        ck_assert_ptr_nonnull(g);
        for (int i = 0; i < 6; i++) ck_assert_double_eq(((const double *)g->data)[i], k * sv[i]);
        ad_tape_free(t);
        ad_tensor_free(xv);
        ad_tensor_free(pg);
    }
}
END_TEST

START_TEST(test_deep_graph)
{
    /* A chain of a million ops: backward is a loop, not a recursion, so depth is no limit. */
    int n = tu_quick() ? 20000 : 1000000;
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (double[]){0.7});
    ad_var x = ad_leaf(t, xv), v = x;
    double ref = 0.7, dref = 1.0;
    for (int i = 0; i < n; i++) {
        if (i % 2 == 0) {
            v = ad_sin(v);
            dref *= cos(ref);
            ref = sin(ref);
        } else {
            v = ad_mul_scalar(v, 1.0001);
            dref *= 1.0001;
            ref *= 1.0001;
        }
    }
    ck_assert(ad_ok(v));
    ck_assert_uint_eq(ad_tape_node_count(t), (size_t)n + 1);
    TU_ASSERT_CLOSE(ad_item(v), ref, 0, 1e-12);
    ck_assert_int_eq(ad_backward(v, NULL, 0), AD_OK);
    TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), 0), dref, 0, 1e-9);
    ck_assert(dref > 0);
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_alloc_failure)
{
    /* Fails the N-th allocation (and every later one) for N = 1, 2, ... until a run needs
    ** fewer: each failure must be AD_ERR_NOMEM, sticky, leak nothing, and leave a tape that
    ** resets and works. */
    step_data d = step_data_new(40);
    ad_tensor *ref_grad = ad_tensor_new(AD_F64, AD_SHAPE(40, 40));
    {
        ad_tape *t = ad_tape_new();
        ck_assert_int_eq(step(t, &d, 1100), AD_OK);
        ck_assert_int_eq(ad_tensor_copy(ref_grad, d.wgrad), AD_OK);
        ad_tape_free(t);
    }
    int failures = 0;
    long n;
    for (n = 1; n < 10000; n++) {
        counting c = {0};
        c.fail_at = n;
        ad_set_allocator(counting_alloc, &c);
        ad_tape *t = ad_tape_new();
        if (!t) {
            ck_assert(c.failed);
            ad_set_allocator(NULL, NULL);
            ck_assert_int_eq(c.live, 0);
            failures++;
            continue;
        }
        ad_tensor_fill(d.wgrad, 0);
        ad_status s = step(t, &d, 1100);
        bool failed = c.failed;
        if (failed) {
            failures++;
            ck_assert_int_eq(s, AD_ERR_NOMEM);
            ck_assert_int_eq(ad_tape_status(t), AD_ERR_NOMEM);
            ck_assert_msg(strstr(ad_tape_error(t), "out of memory") != NULL, "message: %s", ad_tape_error(t));
            c.fail_at = 0; /* sticky even once memory is back */
            ad_var again = ad_exp(ad_scalar(t, AD_F64, 1.0));
            ck_assert(!ad_ok(again));
            ck_assert_int_eq(ad_tape_status(t), AD_ERR_NOMEM);
        }
        c.fail_at = 0;
        ad_tape_reset(t);
        ad_tensor_fill(d.wgrad, 0);
        ck_assert_int_eq(step(t, &d, 1100), AD_OK);
        for (int64_t i = 0; i < ref_grad->size; i++) ck_assert(ad_tensor_get(d.wgrad, i) == ad_tensor_get(ref_grad, i));
        ad_tape_free(t);
        ad_set_allocator(NULL, NULL);
        ck_assert_msg(c.live == 0, "N = %ld: %ld blocks leaked", n, c.live);
        if (!failed) break;
    }
    ck_assert_int_gt(failures, 3);
    ck_assert_int_lt(n, 10000);
    ad_tensor_free(ref_grad);
    step_data_free(&d);
}
END_TEST

START_TEST(test_alloc_fail_once)
{
    /* Fails only the N-th allocation over three steps with resets between them, so that
    ** every allocation site fails once, including the block merge in ad_tape_reset: the
    ** step that meets it reports AD_ERR_NOMEM, every other step succeeds with the right
    ** gradient, and nothing leaks. */
    step_data d = step_data_new(40);
    ad_tensor *ref_grad = ad_tensor_new(AD_F64, AD_SHAPE(40, 40));
    {
        ad_tape *t = ad_tape_new();
        ck_assert_int_eq(step(t, &d, 1100), AD_OK);
        ck_assert_int_eq(ad_tensor_copy(ref_grad, d.wgrad), AD_OK);
        ad_tape_free(t);
    }
    long n;
    int failures = 0;
    for (n = 1; n < 10000; n++) {
        counting c = {0};
        c.fail_at = n;
        c.once = true;
        ad_set_allocator(counting_alloc, &c);
        ad_tape *t = ad_tape_new();
        if (!t) {
            ad_set_allocator(NULL, NULL);
            ck_assert(c.failed && c.live == 0);
            failures++;
            continue;
        }
        for (int k = 0; k < 3; k++) {
            bool before = c.failed;
            ad_tensor_fill(d.wgrad, 0);
            ad_status s = step(t, &d, 1100 * (k + 1)); /* each step longer than the last: the arena grows */
            if (c.failed && !before) {
                failures++;
                ck_assert_int_eq(s, AD_ERR_NOMEM);
                ck_assert_int_eq(ad_tape_status(t), AD_ERR_NOMEM);
            } else {
                ck_assert_msg(s == AD_OK, "N = %ld, step %d: %s", n, k, ad_tape_error(t));
                for (int64_t i = 0; i < ref_grad->size; i++)
                    TU_ASSERT_CLOSE(ad_tensor_get(d.wgrad, i), ad_tensor_get(ref_grad, i), 0, 0);
            }
            ad_tape_reset(t);
        }
        bool reached = c.failed;
        ad_tape_free(t);
        ad_set_allocator(NULL, NULL);
        ck_assert_msg(c.live == 0, "N = %ld: %ld blocks leaked", n, c.live);
        if (!reached) break; /* N is past the last allocation */
    }
    ck_assert_int_gt(failures, 3);
    ck_assert_int_lt(n, 10000);
    ad_tensor_free(ref_grad);
    step_data_free(&d);
}
END_TEST

START_TEST(test_anomaly_detection)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(2), (double[]){1.0, -1.0});
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_log(x); /* NaN, but without detection that is the caller's business */
    ck_assert(ad_ok(y));
    ck_assert(isnan(ad_tensor_get(ad_value(y), 1)));
    ad_tape_set_anomaly_detection(t, true);
    ad_var z = ad_log(x);
    ck_assert(!ad_ok(z));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_log: non-finite output") != NULL, "%s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "[2]") != NULL, "%s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "forward") != NULL, "%s", ad_tape_error(t));
    /* in backward: sqrt at 0 is finite forward, its gradient is not */
    ad_tape_reset(t);
    ad_tensor *zero = tu_f64(AD_SHAPE(1), (double[]){0.0});
    x = ad_leaf(t, zero);
    ck_assert_int_eq(ad_backward(ad_sum(ad_sqrt(x)), NULL, 0), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_sqrt") != NULL, "%s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "backward") != NULL, "%s", ad_tape_error(t));
    ad_tape_free(t);
    ad_tensor_free(xv);
    ad_tensor_free(zero);
}
END_TEST

/* Every binary and unary op on a and b: a used many times, so gradients add up. */
static ad_var all_ops(ad_var a, ad_var b)
{
    ad_var s = ad_add(ad_sub(a, b), ad_mul(a, b));
    s = ad_add(s, ad_div(a, b));
    s = ad_add(s, ad_pow(a, b));
    s = ad_add(s, ad_add(ad_maximum(a, b), ad_minimum(a, b)));
    s = ad_add(s, ad_xlogy(a, b));
    s = ad_add(s, ad_mul_scalar(ad_add_scalar(a, 0.5), 1.5));
    s = ad_add(s, ad_add(ad_pow_scalar(a, 3.0), ad_neg(ad_exp(b))));
    s = ad_add(s, ad_add(ad_log(a), ad_log1p(b)));
    s = ad_add(s, ad_add(ad_sqrt(a), ad_square(b)));
    s = ad_add(s, ad_add(ad_abs(ad_neg(a)), ad_sin(b)));
    s = ad_add(s, ad_add(ad_cos(a), ad_tanh(b)));
    s = ad_add(s, ad_add(ad_sigmoid(a), ad_relu(b)));
    s = ad_add(s, ad_add(ad_leaky_relu(ad_neg(a), 0.1), ad_elu(ad_neg(b), 0.7)));
    s = ad_add(s, ad_add(ad_gelu(a), ad_softplus(b)));
    s = ad_add(s, ad_add(ad_erf(a), ad_clamp(b, 0.1, 0.9)));
    return s;
}

/* Raw bytes of a tensor's one element, to compare bit for bit. */
static uint64_t bits1(const ad_tensor *x)
{
    uint64_t u = 0;
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(x->size, 1);
    memcpy(&u, x->data, x->dtype == AD_F64 ? 8 : 4);
    return u;
}

/* Scalars (0-dimensional) are recorded inline and take one-element fast VJPs;
** the same graph on tensors of shape [1] takes the general paths. Values and
** gradients agree bit for bit, in both dtypes, with and without AD_CREATE_GRAPH. */
START_TEST(test_scalar_paths)
{
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        for (int create = 0; create < 2; create++) {
            uint64_t val[2], ga[2], gb[2];
            for (int k = 0; k < 2; k++) {
                int nd = k; /* 0: a scalar, 1: shape [1] */
                const int64_t one[1] = {1};
                ad_tensor *av = ad_tensor_new(dt, nd, one), *bv = ad_tensor_new(dt, nd, one);
                ad_tensor_set(av, 0, 0.3);
                ad_tensor_set(bv, 0, 0.6);
                ad_tape *t = ad_tape_new();
                ad_var a = ad_leaf(t, av), b = ad_leaf(t, bv);
                ad_var y = ad_sum(all_ops(a, b));
                ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
                val[k] = bits1(ad_value(y));
                ck_assert_msg(ad_backward(y, NULL, create ? AD_CREATE_GRAPH : 0) == AD_OK, "%s", ad_tape_error(t));
                ga[k] = bits1(ad_grad(a));
                gb[k] = bits1(ad_grad(b));
                ck_assert(ad_tensor_get(ad_grad(a), 0) != 0 && ad_tensor_get(ad_grad(b), 0) != 0);
                ad_tape_free(t);
                ad_tensor_free(av);
                ad_tensor_free(bv);
            }
            ck_assert_msg(val[0] == val[1], "%s: values differ", ad_dtype_name(dt));
            ck_assert_msg(ga[0] == ga[1], "%s, create %d: grad a differs", ad_dtype_name(dt), create);
            ck_assert_msg(gb[0] == gb[1], "%s, create %d: grad b differs", ad_dtype_name(dt), create);
        }
    }
}
END_TEST

/* The benchmark's scalar graph on params: acc = acc + tanh(a*b + c), n times.
** Gradients land in the params' grad tensors with and without AD_ACCUMULATE
** (which adds each contribution straight in: the same sum in another order),
** and agree bit for bit with the same graph on shape-[1] params. */
START_TEST(test_scalar_params)
{
    uint64_t want[3] = {0};
    for (int k = 0; k < 3; k++) {
        int nd = k == 2; /* 0-dimensional params, then shape [1] */
        unsigned flags = k == 1 ? AD_ACCUMULATE : 0;
        const int64_t one[1] = {1};
        ad_tensor *v[3], *g[3];
        for (int i = 0; i < 3; i++) {
            v[i] = ad_tensor_new(AD_F64, nd, one);
            g[i] = ad_tensor_new(AD_F64, nd, one);
            ad_tensor_set(v[i], 0, 0.1 * (i + 1));
        }
        ad_tape *t = ad_tape_new();
        for (int rep = 0; rep < 2; rep++) { /* twice: the second backward adds to the first */
            ad_tape_reset(t);
            ad_var a = ad_param(t, v[0], g[0]), b = ad_param(t, v[1], g[1]), c = ad_param(t, v[2], g[2]);
            ad_var acc = ad_scalar(t, AD_F64, 0.0);
            if (nd) acc = ad_reshape(acc, 1, one);
            for (int i = 0; i < 300; i++) acc = ad_add(acc, ad_tanh(ad_add(ad_mul(a, b), c)));
            ck_assert_msg(ad_backward(acc, NULL, flags) == AD_OK, "%s", ad_tape_error(t));
        }
        for (int i = 0; i < 3; i++) {
            uint64_t got = bits1(g[i]);
            double w;
            memcpy(&w, &want[i], sizeof w);
            if (k == 0)
                want[i] = got;
            else if (k == 1)
                TU_ASSERT_CLOSE(ad_tensor_get(g[i], 0), w, 0, 1e-12);
            else
                ck_assert_msg(got == want[i], "case %d, param %d: %.17g", k, i, ad_tensor_get(g[i], 0));
            ck_assert(ad_tensor_get(g[i], 0) > 0);
        }
        /* 2 x 300 x (1 - tanh^2) x b for a: b = 0.2 */
        if (k == 0) {
            double ref = 0;
            for (int i = 0; i < 300; i++) ref += 1 - tanh(0.1 * 0.2 + 0.3) * tanh(0.1 * 0.2 + 0.3);
            TU_ASSERT_CLOSE(ad_tensor_get(g[0], 0), 2 * 0.2 * ref, 0, 1e-12);
        }
        ad_tape_free(t);
        for (int i = 0; i < 3; i++) {
            ad_tensor_free(v[i]);
            ad_tensor_free(g[i]);
        }
    }
}
END_TEST

/* A node remembers which of its first 8 inputs need a gradient; later inputs
** are looked up. A concat of 11 vars, leaves and constants mixed on both
** sides of that line: each leaf gets its gradient (its weight), constants none. */
START_TEST(test_many_inputs)
{
    for (int create = 0; create < 2; create++) {
        ad_tape *t = ad_tape_new();
        ad_tensor *v[11];
        ad_var xs[11];
        for (int i = 0; i < 11; i++) {
            v[i] = tu_f64(AD_SHAPE(1), (double[]){i});
            xs[i] = i % 3 == 1 ? ad_const(t, v[i]) : ad_leaf(t, v[i]); /* constants at 1, 4, 7, 10 */
        }
        ad_tensor *w = tu_f64(AD_SHAPE(11), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
        ad_var y = ad_sum(ad_mul(ad_concat(11, xs, 0), ad_const(t, w)));
        ck_assert_msg(ad_backward(y, NULL, create ? AD_CREATE_GRAPH : 0) == AD_OK, "%s", ad_tape_error(t));
        for (int i = 0; i < 11; i++) {
            if (i % 3 == 1) {
                ck_assert_ptr_null(ad_grad(xs[i]));
            } else {
                ck_assert_ptr_nonnull(ad_grad(xs[i]));
                TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(xs[i]), 0), i + 1, 0, 0);
            }
        }
        ad_tape_free(t);
        for (int i = 0; i < 11; i++) ad_tensor_free(v[i]);
        ad_tensor_free(w);
    }
}
END_TEST

/* The scalar paths keep the engine's checks and messages. */
START_TEST(test_scalar_errors)
{
    ad_tape *t = ad_tape_new();
    ad_var a = ad_scalar(t, AD_F64, -1.0), f = ad_scalar(t, AD_F32, 2.0);
    EXPECT_ERROR(t, ad_add(a, f), AD_ERR_DTYPE, "ad_add: dtypes differ: f64 and f32");
    EXPECT_ERROR(t, ad_div(f, a), AD_ERR_DTYPE, "ad_div: dtypes differ: f32 and f64");
    ad_tape_clear_error(t);
    /* anomaly detection, forward: log(-1) */
    ad_tape_set_anomaly_detection(t, true);
    EXPECT_ERROR(t, ad_log(a), AD_ERR_NUMERIC, "ad_log: non-finite output at node 2 (input []) during forward");
    EXPECT_ERROR(t, ad_div(f, ad_mul_scalar(f, 0.0)), AD_ERR_NUMERIC,
                 "ad_div: non-finite output at node 4 (inputs [], []) during forward");
    /* and backward: sqrt at 0 through a scalar chain */
    ad_tape_clear_error(t);
    ad_tensor *zv = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    ad_var z = ad_leaf(t, zv);
    ck_assert_int_eq(ad_backward(ad_add_scalar(ad_sqrt(z), 1.0), NULL, 0), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_sqrt: non-finite gradient") && strstr(ad_tape_error(t), "backward"), "%s",
                  ad_tape_error(t));
    /* stale scalar handles */
    ad_tape_set_anomaly_detection(t, false);
    ad_tape_reset(t);
    ad_var fresh = ad_scalar(t, AD_F64, 1.0);
    EXPECT_ERROR(t, ad_mul(fresh, a), AD_ERR_STATE, "ad_mul: operand 2 is a stale handle (from before ad_tape_reset)");
    EXPECT_ERROR(t, ad_tanh(a), AD_ERR_STATE, "ad_tanh: operand 1 is a stale handle (from before ad_tape_reset)");
    /* an error is sticky for scalar ops too: nothing is recorded */
    size_t nodes = ad_tape_node_count(t);
    ck_assert(!ad_ok(ad_add(fresh, fresh)));
    ck_assert(!ad_ok(ad_exp(fresh)));
    ck_assert_uint_eq(ad_tape_node_count(t), nodes);
    ad_tape_free(t);
    ad_tensor_free(zv);
}
END_TEST

static Suite *tape_suite(void)
{
    Suite *s = suite_create("tape");
    TCase *mem = tcase_create("memory");
    tcase_add_test(mem, test_reset_keeps_memory);
    tcase_add_test(mem, test_large_products_allocate_nothing);
    tcase_add_test(mem, test_deep_graph);
    tcase_add_test(mem, test_alloc_failure);
    tcase_add_test(mem, test_alloc_fail_once);
    tcase_set_timeout(mem, 600);
    suite_add_tcase(s, mem);
    TCase *err = tcase_create("errors");
    tcase_add_test(err, test_stale_handle);
    tcase_add_test(err, test_different_tapes_and_bad_vars);
    tcase_add_test(err, test_sticky_errors);
    tcase_add_test(err, test_error_messages);
    tcase_add_test(err, test_status_strings);
    tcase_add_test(err, test_anomaly_detection);
    tcase_add_test(err, test_scalar_errors);
    suite_add_tcase(s, err);
    TCase *bw = tcase_create("backward");
    tcase_add_test(bw, test_grad_disabled);
    tcase_add_test(bw, test_accumulate_and_leaves);
    tcase_add_test(bw, test_param_accumulates);
    tcase_add_test(bw, test_gradients_api);
    tcase_add_test(bw, test_seeds);
    tcase_add_test(bw, test_seed_read_in_place);
    tcase_add_test(bw, test_scalar_paths);
    tcase_add_test(bw, test_scalar_params);
    tcase_add_test(bw, test_many_inputs);
    suite_add_tcase(s, bw);
    return s;
}

int main(void) { return tu_run(tape_suite()); }

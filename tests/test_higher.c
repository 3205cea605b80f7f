/* test_higher.c: gradgradcheck of every op, third order, and Jacobian/Hessian/HVP/JVP against closed forms. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tape.h"
#include "ad_nnops.h"
#include "test_rows.h"
#include "test_custom_ops.h"
#include "test_util.h"

/* ======================================================================
** gradgradcheck over the op table: elementwise ops from their rows in
** ops.def (row_case), the others from the table below
** ====================================================================== */

/* How an input is made: uniform in [lo, hi), magnitudes in [lo, hi) with
** random signs (away from 0), or fixed data. */
enum { IN_UNIFORM = 1, IN_AWAY, IN_DATA };

typedef struct in_spec {
    int kind;
    int ndim;
    int64_t shape[4];
    double lo, hi;
    const double *data;
} in_spec;

typedef struct op_case {
    const char *exempt; /* why the op has no second-order check, or NULL */
    ad_fn f;            /* builds an expression around the op */
    int n;
    in_spec in[3];
    double eps; /* 0: the default */
    const void *ctx; /* f's context */
} op_case;

#define U(lo_, hi_, ...)                                                                                               \
    {                                                                                                                  \
        IN_UNIFORM, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, lo_, hi_, NULL                                              \
    }
#define AWAY(lo_, hi_, ...)                                                                                            \
    {                                                                                                                  \
        IN_AWAY, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, lo_, hi_, NULL                                                 \
    }
#define DATA(d_, ...)                                                                                                  \
    {                                                                                                                  \
        IN_DATA, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, 0, 0, d_                                                       \
    }

/* Builders: each wraps the op so that its VJP is differentiated with a
** non-zero second derivative (linear ops are squared afterwards). */
#define F(name) static ad_var name(ad_tape *t, const ad_var *x, void *c)
F(f_sum) { return ad_square(ad_sum(x[0])); }
F(f_mean) { return ad_square(ad_mean(x[0])); }
F(f_sum_axis)
{
    return ad_add(ad_sum(ad_square(ad_sum_axis(x[0], 1, false))), ad_sum(ad_square(ad_sum_axis(x[0], -1, true))));
}
F(f_mean_axis)
{
    return ad_add(ad_sum(ad_square(ad_mean_axis(x[0], 0, false))), ad_sum(ad_square(ad_mean_axis(x[0], -1, true))));
}
F(f_max_axis)
{
    return ad_add(ad_sum(ad_square(ad_max_axis(x[0], 1, false))), ad_sum(ad_square(ad_max_axis(x[0], 0, true))));
}
F(f_logsumexp) { return ad_add(ad_sum(ad_logsumexp(x[0], 1, false)), ad_sum(ad_logsumexp(x[0], 0, true))); }
F(f_sum_to) { return ad_square(ad_sum_to(x[0], AD_SHAPE(3, 1))); }
F(f_softmax) { return ad_softmax(x[0], -1); }
F(f_log_softmax) { return ad_log_softmax(x[0], 0); }
/* batched matmul with a broadcast batch, and both transposed forms (a a^T is quadratic in a) */
F(f_matmul)
{
    ad_var p = ad_sum(ad_square(ad_matmul(x[0], x[1])));
    ad_var q = ad_sum(ad_tanh(ad_matmul_t(x[0], x[0], false, true)));
    ad_var r = ad_sum(ad_square(ad_matmul_t(x[1], x[1], true, false)));
    return ad_add(p, ad_add(q, r));
}
F(f_transpose) { return ad_square(ad_transpose(x[0], 0, 2)); }
F(f_reshape) { return ad_square(ad_reshape(x[0], AD_SHAPE(3, -1))); }
F(f_broadcast_to) { return ad_square(ad_broadcast_to(x[0], AD_SHAPE(2, 3, 4))); }
F(f_slice) { return ad_square(ad_slice(x[0], 1, 1, 3)); }
F(f_pad_axis) { return ad_square(ad_pad_axis(x[0], 0, 1, 4)); }
F(f_concat)
{
    ad_var parts[3] = {x[0], x[1], x[0]};
    return ad_square(ad_concat(3, parts, 1));
}
F(f_index_select) { return ad_square(ad_index_select(x[0], 0, 4, (const int64_t[]){2, 0, 2, -1})); }
F(f_index_add) { return ad_square(ad_index_add(x[0], 0, 3, (const int64_t[]){1, 1, 0}, 2)); }
/* through f32 and back, and an f64 -> f64 cast */
F(f_cast) { return ad_cast(ad_pow_scalar(ad_cast(ad_cast(x[0], AD_F64), AD_F32), 3.0), AD_F64); }
/* network primitives: the public ops and the adjoint ops their VJPs record */
static const ad_conv2d_params CONV_P = {1, 1, 1, 1, 1, 1, 1}; /* stride 1, pad 1: 3x3 in, 2x2 kernel -> 4x4 */
static const ad_pool2d_params MAXP_P = {2, 2, 2, 2, 0, 0};    /* 4x4 -> 2x2 */
static const ad_pool2d_params AVGP_P = {2, 2, 2, 2, 1, 1};    /* 3x3, pad 1 -> 2x2 */
F(f_conv2d)
{
    ad_var a = ad_sum(ad_square(ad_conv2d(x[0], x[1], 1, 1, 1, 1)));
    ad_var b = ad_sum(ad_tanh(ad_conv2d(x[0], ad_slice(x[1], 1, 0, 1), 2, 0, 1, 2))); /* stride 2, 2 groups */
    return ad_add(a, b);
}
F(f_conv2d_grad_input) { return ad_square(ad__conv2d_grad_input(x[0], x[1], 3, 3, &CONV_P)); }
F(f_conv2d_grad_weight) { return ad_square(ad__conv2d_grad_weight(x[0], x[1], 2, 2, &CONV_P)); }
F(f_max_pool2d) { return ad_square(ad_max_pool2d(x[0], 2, 2, 0)); }
F(f_max_pool2d_grad) { return ad_square(ad__max_pool2d_grad(x[0], x[1], &MAXP_P)); }
F(f_max_pool2d_select) { return ad_square(ad__max_pool2d_select(x[0], x[1], &MAXP_P)); }
F(f_avg_pool2d) { return ad_square(ad_avg_pool2d(x[0], 2, 2, 1)); }
F(f_avg_pool2d_grad) { return ad_square(ad__avg_pool2d_grad(x[0], 3, 3, &AVGP_P)); }
/* cond [2,3] = [[1,0,1],[1,0,1]], a constant mask */
F(f_where)
{
    ad_var one = ad_full(t, AD_F64, AD_SHAPE(2, 1), 1.0), zero = ad_full(t, AD_F64, AD_SHAPE(2, 1), 0.0);
    ad_var parts[3] = {one, zero, one};
    return ad_square(ad_where(ad_concat(3, parts, 1), x[0], x[1]));
}
/* custom ops (tests/test_custom_ops.h): an engine-op VJP, a tuple's outputs, a raw VJP's
** result differentiated through its jvp (third order here), a checkpointed segment */
F(f_custom) { return ad_custom(&co_cube, NULL, 1, x); }
F(f_custom_out)
{
    ad_var o[2];
    ad_custom_n(&co_sqsum, NULL, 1, x, o);
    return ad_add(ad_sum(ad_square(o[0])), ad_sum(ad_square(o[1])));
}
F(f_custom_grad)
{
    ad_var g = AD_NO_VAR;
    ad_gradients(ad_sum(ad_custom(&co_cube_raw_jvp, NULL, 1, x)), 1, x, &g, AD_CREATE_GRAPH);
    return g;
}
F(f_checkpoint)
{
    ad_var in[3] = {x[0], x[1], x[1]}, o[2];
    ad_checkpoint(co_segment, NULL, 3, in, 2, o);
    return ad_add(o[0], o[1]);
}
#undef F

/* fixed inputs keeping kinks, ties and bounds well away from the finite-difference steps */
static const double d_max_axis[12] = {0.3, -1.2, 0.8, 0.1, 1.5, 0.2, -0.4, 0.9, -0.7, 0.6, 1.1, -0.1};
static const double d_pool[16] = {0.1, -0.5, 0.9, 0.3, -0.9, 0.6, -0.2, 1.2, 0.4, -1.1, 0.7, -0.3, 1.0, 0.0, -0.7, 0.5};

#define LEAF_REASON "a leaf: its value comes from the caller, nothing to differentiate"
#define MASK_REASON "a mask used by VJPs: not differentiable, its gradient is 0 by definition"

static const op_case op_cases[AD_OP_COUNT] = {
    [AD_OP_CONST] = {.exempt = LEAF_REASON},
    [AD_OP_LEAF] = {.exempt = LEAF_REASON},
    [AD_OP_PARAM] = {.exempt = LEAF_REASON},
    /* the elementwise ops are checked from their rows in ops.def (row_case) */
    [AD_OP_SIGN] = {.exempt = MASK_REASON},
    [AD_OP_STEP] = {.exempt = MASK_REASON},
    [AD_OP_INRANGE] = {.exempt = MASK_REASON},
    [AD_OP_CMP_GT] = {.exempt = MASK_REASON},
    [AD_OP_EQ] = {.exempt = MASK_REASON},

    [AD_OP_SUM] = {NULL, f_sum, 1, {U(-1, 1, 2, 3)}},
    [AD_OP_MEAN] = {NULL, f_mean, 1, {U(-1, 1, 2, 3)}},
    [AD_OP_SUM_AXIS] = {NULL, f_sum_axis, 1, {U(-1, 1, 2, 3, 2)}},
    [AD_OP_MEAN_AXIS] = {NULL, f_mean_axis, 1, {U(-1, 1, 2, 3, 2)}},
    [AD_OP_MAX_AXIS] = {NULL, f_max_axis, 1, {DATA(d_max_axis, 3, 4)}},
    [AD_OP_LOGSUMEXP] = {NULL, f_logsumexp, 1, {U(-2, 2, 3, 4)}},
    [AD_OP_SUM_TO] = {NULL, f_sum_to, 1, {U(-1, 1, 2, 3, 2)}},
    [AD_OP_SOFTMAX] = {NULL, f_softmax, 1, {U(-2, 2, 3, 4)}},
    [AD_OP_LOG_SOFTMAX] = {NULL, f_log_softmax, 1, {U(-2, 2, 3, 4)}},

    [AD_OP_MATMUL] = {NULL, f_matmul, 2, {U(-1, 1, 2, 2, 3), U(-1, 1, 3, 2)}},

    [AD_OP_TRANSPOSE] = {NULL, f_transpose, 1, {U(-1, 1, 2, 3, 2)}},
    [AD_OP_RESHAPE] = {NULL, f_reshape, 1, {U(-1, 1, 2, 3, 2)}},
    [AD_OP_BROADCAST_TO] = {NULL, f_broadcast_to, 1, {U(-1, 1, 3, 1)}},
    [AD_OP_SLICE] = {NULL, f_slice, 1, {U(-1, 1, 2, 4)}},
    [AD_OP_PAD_AXIS] = {NULL, f_pad_axis, 1, {U(-1, 1, 2, 3)}},
    [AD_OP_CONCAT] = {NULL, f_concat, 2, {U(-1, 1, 2, 2), U(-1, 1, 2, 1)}},
    [AD_OP_INDEX_SELECT] = {NULL, f_index_select, 1, {U(-1, 1, 3, 2)}},
    [AD_OP_INDEX_ADD] = {NULL, f_index_add, 1, {U(-1, 1, 3, 2)}},
    /* the f32 round trip needs a larger step: f32 rounding (1e-7) over eps stays far below the tolerance */
    [AD_OP_CAST] = {NULL, f_cast, 1, {U(0.5, 2, 2, 3)}, 1e-3},
    [AD_OP_DETACH] =
        {.exempt = "stops the gradient by design: its derivative is 0 on purpose, finite differences see through it"},

    [AD_OP_CONV2D] = {NULL, f_conv2d, 2, {U(-1, 1, 1, 2, 3, 3), U(-1, 1, 2, 2, 2, 2)}},
    [AD_OP_CONV2D_GRAD_INPUT] = {NULL, f_conv2d_grad_input, 2, {U(-1, 1, 1, 2, 4, 4), U(-1, 1, 2, 2, 2, 2)}},
    [AD_OP_CONV2D_GRAD_WEIGHT] = {NULL, f_conv2d_grad_weight, 2, {U(-1, 1, 1, 2, 3, 3), U(-1, 1, 1, 2, 4, 4)}},
    /* pools over distinct values: no ties, no argmax moves within a step */
    [AD_OP_MAX_POOL2D] = {NULL, f_max_pool2d, 1, {DATA(d_pool, 1, 1, 4, 4)}},
    [AD_OP_MAX_POOL2D_GRAD] = {NULL, f_max_pool2d_grad, 2, {DATA(d_pool, 1, 1, 4, 4), U(-1, 1, 1, 1, 2, 2)}},
    [AD_OP_MAX_POOL2D_SELECT] = {NULL, f_max_pool2d_select, 2, {DATA(d_pool, 1, 1, 4, 4), U(-1, 1, 1, 1, 4, 4)}},
    [AD_OP_AVG_POOL2D] = {NULL, f_avg_pool2d, 1, {U(-1, 1, 1, 2, 3, 3)}},
    [AD_OP_AVG_POOL2D_GRAD] = {NULL, f_avg_pool2d_grad, 1, {U(-1, 1, 1, 2, 2, 2)}},
    [AD_OP_WHERE] = {NULL, f_where, 2, {U(-1, 1, 2, 3), U(-1, 1, 3)}},
    [AD_OP_CUSTOM] = {NULL, f_custom, 1, {U(-1.5, 1.5, 2, 3)}},
    [AD_OP_CUSTOM_OUT] = {NULL, f_custom_out, 1, {U(-1, 1, 3, 2)}},
    [AD_OP_CUSTOM_GRAD] = {NULL, f_custom_grad, 1, {U(-1.5, 1.5, 4)}},
    [AD_OP_CHECKPOINT] = {NULL, f_checkpoint, 2, {U(-1, 1, 2, 3), U(0.5, 1, 3)}},
};

static ad_tensor *make_input(const in_spec *s, uint64_t seed)
{
    switch (s->kind) {
    case IN_UNIFORM:
        return tu_rand(AD_F64, s->ndim, s->shape, s->lo, s->hi, seed);
    case IN_AWAY:
        return tu_rand_away(s->ndim, s->shape, s->lo, s->hi, seed);
    case IN_DATA:
        return tu_f64(s->ndim, s->shape, s->data);
    default:
        ck_abort_msg("bad input kind %d", s->kind);
        return NULL;
    }
}

/* An elementwise op's row in ops.def as a case: the op (squared if the row says so) on [2, 3]
** inputs, b [3] broadcast for a binary op, in the row's ranges. */
static ad_var f_row(ad_tape *t, const ad_var *x, void *c)
{
    const op_row *row = c;
    return op_row_order2(row, x[0], row->kind == ROW_BINARY ? x[1] : x[0]);
}

static op_case row_case(const op_row *row)
{
    op_case c = {NULL, f_row, 1, {U(0, 1, 2, 3)}, 0, row};
    c.in[0].kind = row->away ? IN_AWAY : IN_UNIFORM;
    c.in[0].lo = row->lo;
    c.in[0].hi = row->hi;
    if (row->kind == ROW_BINARY) {
        c.n = 2;
        c.in[1] = (in_spec)U(0, 1, 3);
        c.in[1].kind = row->baway ? IN_AWAY : IN_UNIFORM;
        c.in[1].lo = row->blo;
        c.in[1].hi = row->bhi;
    }
    return c;
}

/* op's case: from its row in ops.def, or from the table above. */
static op_case case_of(int op, op_row *row)
{
    *row = op_row_of((ad_op)op);
    return row->kind == ROW_CUSTOM ? op_cases[op] : row_case(row);
}

/* Every op in ops.def has an entry: a check or a stated exemption. */
START_TEST(test_table_complete)
{
    int op = _i;
    op_row row;
    const op_case cc = case_of(op, &row), *c = &cc;
    ck_assert_msg(row.kind == ROW_CUSTOM || (!op_cases[op].f && !op_cases[op].exempt),
                  "%s has a row in ops.def and an entry in test_higher.c's table", ad__ops[op].name);
    ck_assert_msg(c->exempt || c->f,
                  "%s (AD_OP %d) has no entry in test_higher.c's op table: add a second-order "
                  "check or an exemption with its reason",
                  ad__ops[op].name, op);
    ck_assert_msg(!(c->exempt && c->f), "%s is both checked and exempt", ad__ops[op].name);
    if (c->exempt) ck_assert_msg(strlen(c->exempt) > 10, "%s: exemption without a reason", ad__ops[op].name);
    /* exempt ops are the ones that carry no gradient, plus detach */
    if (c->exempt && op != AD_OP_DETACH)
        ck_assert_msg(!ad__ops[op].differentiable, "%s is differentiable but exempt", ad__ops[op].name);
    if (!ad__ops[op].differentiable) ck_assert_msg(c->exempt != NULL, "%s is not differentiable", ad__ops[op].name);
}
END_TEST

/* The builder really records the op it is filed under. */
static bool records_op(const op_case *c, int op, ad_tensor **in)
{
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_var xs[3];
    for (int i = 0; i < c->n; i++) xs[i] = ad_leaf(t, in[i]);
    ad_var y = c->f(t, xs, (void *)c->ctx);
    ck_assert_msg(ad_ok(y), "%s: %s", ad__ops[op].name, ad_tape_error(t));
    bool found = false;
    for (uint32_t i = 0; i < t->count && !found; i++) found = ad__node(t, i)->op == op;
    ad_tape_free(t);
    return found;
}

START_TEST(test_gradgradcheck_op)
{
    int op = _i;
    op_row row;
    const op_case cc = case_of(op, &row), *c = &cc;
    if (!c->f) return; /* exempt: test_table_complete holds the reason */
    ad_tensor *in[3] = {NULL, NULL, NULL};
    for (int i = 0; i < c->n; i++) in[i] = make_input(&c->in[i], 1000u + 17u * (uint64_t)op + (uint64_t)i);
    ck_assert_msg(records_op(c, op, in), "the builder for %s does not use it", ad__ops[op].name);
    ad_check_opts o = ad_check_defaults();
    if (c->eps > 0) o.eps = c->eps;
    ad_check_report rep;
    ad_status s = ad_gradgradcheck(c->f, (void *)c->ctx, c->n, (const ad_tensor *const *)in, &o, &rep);
    if (s != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_msg(s == AD_OK, "gradgradcheck of %s: %s (%s), input %d element %lld: analytic %.10g numeric %.10g",
                  ad__ops[op].name, ad_status_str(s), rep.message, rep.input, (long long)rep.element, rep.analytic,
                  rep.numeric);
    ck_assert_int_eq(rep.order, 2);
    ck_assert(rep.checked > 0);
    /* first order passes too (the second-order check relies on it) */
    ck_assert_int_eq(ad_gradcheck(c->f, (void *)c->ctx, c->n, (const ad_tensor *const *)in, &o, NULL), AD_OK);
    for (int i = 0; i < c->n; i++) ad_tensor_free(in[i]);
}
END_TEST

/* ======================================================================
** create_graph semantics and a third derivative
** ====================================================================== */

START_TEST(test_create_graph_flag)
{
    ad_tensor *xv = tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1.5, 3);
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_sum(ad_mul(ad_sin(x), ad_exp(x)));
    ad_var g;
    /* without the flag: the gradient is a plain value, nothing differentiable recorded */
    uint32_t before = t->count;
    ck_assert_int_eq(ad_gradients(y, 1, &x, &g, 0), AD_OK);
    ck_assert(!ad_requires_grad(g));
    for (uint32_t i = before; i < t->count; i++) ck_assert(!(ad__node(t, i)->flags & AD_NODE_REQ_GRAD));
    /* with it: the gradient depends on x, and the new nodes are marked as backward */
    before = t->count;
    ad_var g2;
    ck_assert_int_eq(ad_gradients(y, 1, &x, &g2, AD_CREATE_GRAPH), AD_OK);
    ck_assert(ad_requires_grad(g2));
    ck_assert_uint_gt(t->count, before);
    bool any = false;
    for (uint32_t i = before; i < t->count; i++) {
        const ad_node *nd = ad__node(t, i);
        ck_assert_msg(nd->flags & AD_NODE_BACKWARD, "node %u (%s)", i, ad__ops[nd->op].name);
        any = any || (nd->flags & AD_NODE_REQ_GRAD);
    }
    ck_assert(any);
    for (int64_t i = 0; i < 3; i++) {
        double xi = ad_tensor_get(xv, i), want = exp(xi) * (sin(xi) + cos(xi));
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(g), i), want, 1e-14, 1e-12);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(g2), i), want, 1e-14, 1e-12);
    }
    /* second derivative of e^x sin x: 2 e^x cos x */
    ad_var h;
    ck_assert_int_eq(ad_gradients(ad_sum(g2), 1, &x, &h, 0), AD_OK);
    for (int64_t i = 0; i < 3; i++) {
        double xi = ad_tensor_get(xv, i);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(h), i), 2 * exp(xi) * cos(xi), 1e-13, 1e-12);
    }
    /* ad_backward with the flag: leaf gradients are differentiable vars too */
    ad_var x2 = ad_leaf(t, xv);
    ad_var y2 = ad_sum(ad_pow_scalar(x2, 3.0));
    ck_assert_int_eq(ad_backward(y2, NULL, AD_CREATE_GRAPH), AD_OK);
    ad_var gx = ad__var(t, ad__node(t, x2.id)->grad);
    ck_assert(ad_requires_grad(gx));
    ck_assert_int_eq(ad_gradients(ad_sum(gx), 1, &x2, &h, 0), AD_OK);
    for (int64_t i = 0; i < 3; i++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(h), i), 6 * ad_tensor_get(xv, i), 1e-13, 1e-12);
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

/* d/dx, d2/dx2, d3/dx3 of sin x and x^4, by differentiating the gradient again */
START_TEST(test_third_order)
{
    ad_tensor *xv = tu_rand(AD_F64, AD_SHAPE(4), -1.5, 1.5, 4);
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, xv);
    ad_var d1s, d2s, d3s, d1p, d2p, d3p, d4p;
    ck_assert_int_eq(ad_gradients(ad_sum(ad_sin(x)), 1, &x, &d1s, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(d1s), 1, &x, &d2s, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(d2s), 1, &x, &d3s, 0), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(ad_pow_scalar(x, 4.0)), 1, &x, &d1p, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(d1p), 1, &x, &d2p, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(d2p), 1, &x, &d3p, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(d3p), 1, &x, &d4p, 0), AD_OK);
    for (int64_t i = 0; i < 4; i++) {
        double v = ad_tensor_get(xv, i);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d1s), i), cos(v), 1e-15, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d2s), i), -sin(v), 1e-15, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d3s), i), -cos(v), 1e-15, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d1p), i), 4 * v * v * v, 1e-14, 1e-12);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d2p), i), 12 * v * v, 1e-14, 1e-12);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d3p), i), 24 * v, 1e-13, 1e-12);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(d4p), i), 24, 1e-12, 1e-12);
    }
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

/* x -> d/dx sum(x^4 + sin x) recorded with create_graph: gradgradcheck of it checks the third derivative */
static ad_var f_first_derivative(ad_tape *t, const ad_var *x, void *c)
{
    ad_var g;
    if (ad_gradients(ad_sum(ad_add(ad_pow_scalar(x[0], 4.0), ad_sin(x[0]))), 1, x, &g, AD_CREATE_GRAPH) != AD_OK)
        return ad__invalid(t);
    return g;
}

START_TEST(test_third_order_check)
{
    ad_tensor *xv = tu_rand(AD_F64, AD_SHAPE(3), -1.5, 1.5, 5);
    const ad_tensor *in[1] = {xv};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_first_derivative, NULL, 1, in, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_first_derivative, NULL, 1, in, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.checked, 9);
    ad_tensor_free(xv);
}
END_TEST

/* ======================================================================
** Jacobian, Hessian, HVP, JVP against closed forms
** ====================================================================== */

/* The n-dimensional Rosenbrock function sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2. */
static ad_var f_rosenbrock(ad_tape *t, const ad_var *x, void *c)
{
    int64_t n = ad_value(x[0])->size;
    ad_var a = ad_slice(x[0], 0, 0, n - 1), b = ad_slice(x[0], 0, 1, n);
    ad_var r = ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0);
    return ad_sum(ad_add(r, ad_square(ad_add_scalar(ad_neg(a), 1.0))));
}

static void rosen_grad(const double *x, int n, double *g)
{
    for (int j = 0; j < n; j++) {
        g[j] = 0;
        if (j < n - 1) g[j] += -400 * x[j] * (x[j + 1] - x[j] * x[j]) - 2 * (1 - x[j]);
        if (j > 0) g[j] += 200 * (x[j] - x[j - 1] * x[j - 1]);
    }
}

static void rosen_hess(const double *x, int n, double *h)
{
    memset(h, 0, (size_t)(n * n) * sizeof *h);
    for (int j = 0; j < n; j++) {
        if (j < n - 1) {
            h[j * n + j] += 1200 * x[j] * x[j] - 400 * x[j + 1] + 2;
            h[j * n + j + 1] = h[(j + 1) * n + j] = -400 * x[j];
        }
        if (j > 0) h[j * n + j] += 200;
    }
}

START_TEST(test_rosenbrock)
{
    static const double pts[][4] = {{-1.2, 1.0, 0.5, -0.3}, {1, 1, 1, 1}, {0, 0, 0, 0}, {0.3, -0.7, 2.0, 1.1}};
    for (int n = 2; n <= 4; n += 2)
        for (size_t p = 0; p < sizeof pts / sizeof pts[0]; p++) {
            ad_tensor *x = tu_f64(1, (const int64_t[]){n}, pts[p]);
            ad_tensor *jac = ad_tensor_new(AD_F64, AD_SHAPE(1, n));
            ad_tensor *hes = ad_tensor_new(AD_F64, AD_SHAPE(n, n));
            ad_tensor *hv = ad_tensor_new(AD_F64, 1, (const int64_t[]){n});
            ad_tensor *v = tu_rand(AD_F64, 1, (const int64_t[]){n}, -1, 1, 40 + p);
            double g[4], h[16];
            rosen_grad(pts[p], n, g);
            rosen_hess(pts[p], n, h);
            ck_assert_int_eq(ad_jacobian(f_rosenbrock, NULL, x, jac), AD_OK);
            ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, hes), AD_OK);
            ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, v, hv), AD_OK);
            tu_assert_values(jac, g, 1e-12, 1e-12);
            tu_assert_values(hes, h, 1e-12, 1e-12);
            for (int i = 0; i < n; i++) {
                double want = 0;
                for (int j = 0; j < n; j++) {
                    want += h[i * n + j] * ad_tensor_get(v, j);
                    TU_ASSERT_CLOSE(ad_tensor_get(hes, i * n + j), ad_tensor_get(hes, j * n + i), 1e-12, 1e-14);
                }
                TU_ASSERT_CLOSE(ad_tensor_get(hv, i), want, 1e-11, 1e-12);
            }
            /* the same in f32: x, out and v in f32, close to the f64 closed form */
            ad_tensor *x32 = tu_to_f32(x), *v32 = tu_to_f32(v);
            ad_tensor *h32 = ad_tensor_new(AD_F32, AD_SHAPE(n, n)),
                      *hv32 = ad_tensor_new(AD_F32, 1, (const int64_t[]){n});
            ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x32, h32), AD_OK);
            ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x32, v32, hv32), AD_OK);
            tu_assert_values(h32, h, 1e-3, 1e-5);
            for (int i = 0; i < n; i++) {
                double want = 0;
                for (int j = 0; j < n; j++) want += h[i * n + j] * ad_tensor_get(v32, j);
                TU_ASSERT_CLOSE(ad_tensor_get(hv32, i), want, 1e-3, 1e-5);
            }
            ad_tensor_free(x32);
            ad_tensor_free(v32);
            ad_tensor_free(h32);
            ad_tensor_free(hv32);
            ad_tensor_free(x);
            ad_tensor_free(jac);
            ad_tensor_free(hes);
            ad_tensor_free(hv);
            ad_tensor_free(v);
        }
}
END_TEST

/* cross-entropy of logits z against class `label`: -log softmax(z)[label]; Hessian diag(p) - p p^T */
static ad_var f_xent(ad_tape *t, const ad_var *x, void *c)
{
    int64_t label = *(const int64_t *)c;
    return ad_neg(ad_sum(ad_index_select(ad_log_softmax(x[0], 0), 0, 1, &label)));
}

START_TEST(test_softmax_xent_hessian)
{
    const int64_t n = 5;
    ad_tensor *z = tu_rand(AD_F64, AD_SHAPE(5), -2, 2, 6);
    ad_tensor *h = ad_tensor_new(AD_F64, AD_SHAPE(5, 5)), *g = ad_tensor_new(AD_F64, AD_SHAPE(1, 5));
    double p[5], s = 0;
    for (int64_t i = 0; i < n; i++) s += p[i] = exp(ad_tensor_get(z, i));
    for (int64_t i = 0; i < n; i++) p[i] /= s;
    for (int64_t label = 0; label < n; label += 2) {
        ck_assert_int_eq(ad_hessian(f_xent, &label, z, h), AD_OK);
        ck_assert_int_eq(ad_jacobian(f_xent, &label, z, g), AD_OK);
        for (int64_t i = 0; i < n; i++) {
            TU_ASSERT_CLOSE(ad_tensor_get(g, i), p[i] - (i == label), 1e-15, 1e-12);
            double row = 0;
            for (int64_t j = 0; j < n; j++) {
                double want = (i == j ? p[i] : 0) - p[i] * p[j];
                TU_ASSERT_CLOSE(ad_tensor_get(h, i * n + j), want, 1e-15, 1e-12);
                row += ad_tensor_get(h, i * n + j);
            }
            TU_ASSERT_CLOSE(row, 0, 1e-15, 0); /* softmax is shift-invariant */
        }
    }
    ad_tensor_free(z);
    ad_tensor_free(h);
    ad_tensor_free(g);
}
END_TEST

static ad_var f_elementwise(ad_tape *t, const ad_var *x, void *c) { return ad_mul(ad_tanh(x[0]), x[0]); }

/* A x with A a constant [3, 4] and x [4, k] (k = *ctx) */
typedef struct mm_ctx {
    const ad_tensor *a;
    int64_t k;
} mm_ctx;
static ad_var f_matmul_const(ad_tape *t, const ad_var *x, void *c)
{
    const mm_ctx *m = c;
    return ad_matmul(ad_const(t, m->a), ad_reshape(x[0], AD_SHAPE(4, m->k)));
}

START_TEST(test_jacobians)
{
    /* elementwise x tanh x: diagonal tanh x + x (1 - tanh^2 x), zeros elsewhere (exactly) */
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), -2, 2, 7);
    ad_tensor *j = ad_tensor_new(AD_F64, AD_SHAPE(6, 6));
    ck_assert_int_eq(ad_jacobian(f_elementwise, NULL, x, j), AD_OK);
    for (int64_t r = 0; r < 6; r++)
        for (int64_t c = 0; c < 6; c++) {
            double v = ad_tensor_get(x, r), th = tanh(v);
            double want = r == c ? th + v * (1 - th * th) : 0.0;
            TU_ASSERT_CLOSE(ad_tensor_get(j, r * 6 + c), want, 0, 1e-13);
        }
    /* J v by forward mode equals the Jacobian times v */
    ad_tensor *v = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 8), *jv = ad_tensor_new(AD_F64, AD_SHAPE(2, 3));
    ck_assert_int_eq(ad_jvp(f_elementwise, NULL, x, v, jv), AD_OK);
    for (int64_t r = 0; r < 6; r++)
        TU_ASSERT_CLOSE(ad_tensor_get(jv, r), ad_tensor_get(j, r * 7) * ad_tensor_get(v, r), 1e-15, 1e-13);
    ad_tensor_free(j);
    ad_tensor_free(jv);
    ad_tensor_free(v);
    ad_tensor_free(x);

    /* matmul: J of x -> A x is A (x a vector); for x [4, 2], J[(i,j),(k,l)] = A[i,k] [j == l] */
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 9);
    for (int64_t k = 1; k <= 2; k++) {
        mm_ctx m = {a, k};
        ad_tensor *xm = tu_rand(AD_F64, 1, (const int64_t[]){4 * k}, -1, 1, 10);
        ad_tensor *jm = ad_tensor_new(AD_F64, AD_SHAPE(3 * k, 4 * k));
        ck_assert_int_eq(ad_jacobian(f_matmul_const, &m, xm, jm), AD_OK);
        for (int64_t i = 0; i < 3; i++)
            for (int64_t jj = 0; jj < k; jj++)
                for (int64_t kk = 0; kk < 4; kk++)
                    for (int64_t l = 0; l < k; l++) {
                        double want = jj == l ? ad_tensor_get(a, i * 4 + kk) : 0.0;
                        ck_assert_double_eq(ad_tensor_get(jm, (i * k + jj) * 4 * k + kk * k + l), want);
                    }
        /* JVP of a linear map: A v, exactly as the Jacobian says */
        ad_tensor *vm = tu_rand(AD_F64, 1, (const int64_t[]){4 * k}, -1, 1, 11);
        ad_tensor *out = ad_tensor_new(AD_F64, AD_SHAPE(3, k));
        ck_assert_int_eq(ad_jvp(f_matmul_const, &m, xm, vm, out), AD_OK);
        for (int64_t r = 0; r < 3 * k; r++) {
            double want = 0;
            for (int64_t c = 0; c < 4 * k; c++) want += ad_tensor_get(jm, r * 4 * k + c) * ad_tensor_get(vm, c);
            TU_ASSERT_CLOSE(ad_tensor_get(out, r), want, 1e-15, 1e-13);
        }
        ad_tensor_free(vm);
        ad_tensor_free(out);
        ad_tensor_free(xm);
        ad_tensor_free(jm);
    }
    ad_tensor_free(a);
}
END_TEST

/* softmax of a matrix product: a nonlinear map [6] -> [2, 3]; JVP against Jacobian times v, F64 and F32 */
static ad_var f_nonlinear(ad_tape *t, const ad_var *x, void *c)
{
    ad_var m = ad_reshape(x[0], AD_SHAPE(2, 3));
    return ad_softmax(ad_add(ad_matmul_t(m, ad_sin(m), false, true), ad_square(ad_slice(m, 1, 0, 2))), -1);
}

START_TEST(test_jvp_matches_jacobian)
{
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *x64 = tu_rand(AD_F64, AD_SHAPE(6), -1, 1, 12), *v64 = tu_rand(AD_F64, AD_SHAPE(6), -1, 1, 13);
        ad_tensor *x = dt ? tu_to_f32(x64) : x64, *v = dt ? tu_to_f32(v64) : v64;
        ad_dtype d = dt ? AD_F32 : AD_F64;
        ad_tensor *j = ad_tensor_new(d, AD_SHAPE(4, 6)), *out = ad_tensor_new(d, AD_SHAPE(2, 2));
        ck_assert_int_eq(ad_jacobian(f_nonlinear, NULL, x, j), AD_OK);
        ck_assert_int_eq(ad_jvp(f_nonlinear, NULL, x, v, out), AD_OK);
        for (int64_t r = 0; r < 4; r++) {
            double want = 0;
            for (int64_t c = 0; c < 6; c++) want += ad_tensor_get(j, r * 6 + c) * ad_tensor_get(v, c);
            TU_ASSERT_CLOSE(ad_tensor_get(out, r), want, dt ? 1e-6 : 1e-15, dt ? 1e-5 : 1e-12);
        }
        /* and the Jacobian against finite differences (f64 only) */
        if (!dt) {
            const ad_tensor *in[1] = {x64};
            ck_assert_int_eq(ad_gradcheck(f_nonlinear, NULL, 1, in, NULL, NULL), AD_OK);
        }
        if (dt) {
            ad_tensor_free(x);
            ad_tensor_free(v);
        }
        ad_tensor_free(x64);
        ad_tensor_free(v64);
        ad_tensor_free(j);
        ad_tensor_free(out);
    }
}
END_TEST

static ad_var f_bad(ad_tape *t, const ad_var *x, void *c) { return ad_sum_axis(x[0], 5, false); }
static ad_var f_vector(ad_tape *t, const ad_var *x, void *c) { return ad_exp(x[0]); }
static ad_var f_constant(ad_tape *t, const ad_var *x, void *c) { return ad_scalar(t, AD_F64, 3.0); }
static ad_var f_linear(ad_tape *t, const ad_var *x, void *c) { return ad_sum(ad_mul_scalar(x[0], 2.0)); }
static ad_var f_foreign(ad_tape *t, const ad_var *x, void *c) { return *(const ad_var *)c; }

START_TEST(test_functional_errors)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 14), *v = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 15);
    ad_tensor *h = ad_tensor_new(AD_F64, AD_SHAPE(3, 3)), *out3 = ad_tensor_new(AD_F64, AD_SHAPE(3));
    ad_tensor *h32 = ad_tensor_new(AD_F32, AD_SHAPE(3, 3)), *h34 = ad_tensor_new(AD_F64, AD_SHAPE(3, 4));
    ad_tensor *v4 = ad_tensor_new(AD_F64, AD_SHAPE(4)), *v32 = tu_to_f32(v);
    ad_tensor *j13 = ad_tensor_new(AD_F64, AD_SHAPE(1, 3)), *flat9 = ad_tensor_new(AD_F64, AD_SHAPE(9));
    /* arguments */
    ck_assert_int_eq(ad_hessian(NULL, NULL, x, h), AD_ERR_ARG);
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, NULL, h), AD_ERR_ARG);
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, NULL, out3), AD_ERR_ARG);
    ck_assert_int_eq(ad_jvp(f_vector, NULL, x, NULL, out3), AD_ERR_ARG);
    ck_assert_int_eq(ad_jacobian(f_vector, NULL, x, NULL), AD_ERR_ARG);
    /* shapes and dtypes of out and v */
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, h34), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, flat9), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, h32), AD_ERR_DTYPE);
    ck_assert_int_eq(ad_jacobian(f_vector, NULL, x, j13), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jacobian(f_vector, NULL, x, h32), AD_ERR_DTYPE);
    ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, v4, out3), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, v32, out3), AD_ERR_DTYPE);
    ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, v, h), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jvp(f_vector, NULL, x, v4, out3), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jvp(f_vector, NULL, x, v, h), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jvp(f_vector, NULL, x, v32, out3), AD_ERR_DTYPE);
    /* malformed tensors: size or data that disagree with the shape */
    ad_tensor bad = *h;
    bad.size = 8;
    ck_assert_int_eq(ad_hessian(f_rosenbrock, NULL, x, &bad), AD_ERR_SHAPE);
    bad = *v;
    bad.data = NULL;
    ck_assert_int_eq(ad_hvp(f_rosenbrock, NULL, x, &bad, out3), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jvp(f_vector, NULL, x, &bad, out3), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jacobian(f_vector, NULL, &bad, h), AD_ERR_SHAPE);
    /* f not scalar for the Hessian and HVP */
    ck_assert_int_eq(ad_hessian(f_vector, NULL, x, h), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_hvp(f_vector, NULL, x, v, out3), AD_ERR_SHAPE);
    /* f fails: its error comes back */
    ck_assert_int_eq(ad_jacobian(f_bad, NULL, x, h), AD_ERR_AXIS);
    ck_assert_int_eq(ad_hessian(f_bad, NULL, x, h), AD_ERR_AXIS);
    ck_assert_int_eq(ad_hvp(f_bad, NULL, x, v, out3), AD_ERR_AXIS);
    ck_assert_int_eq(ad_jvp(f_bad, NULL, x, v, out3), AD_ERR_AXIS);
    /* f returns a var of another tape */
    ad_tape *other = ad_tape_new();
    ad_var foreign = ad_scalar(other, AD_F64, 1.0);
    ck_assert_int_eq(ad_hessian(f_foreign, &foreign, x, h), AD_ERR_STATE);
    ad_tape_free(other);
    /* constant and linear functions: zeros, not errors */
    ad_tensor_fill(h, 7);
    ck_assert_int_eq(ad_hessian(f_constant, NULL, x, h), AD_OK);
    for (int64_t i = 0; i < 9; i++) ck_assert_double_eq(ad_tensor_get(h, i), 0);
    ad_tensor_fill(h, 7);
    ck_assert_int_eq(ad_hessian(f_linear, NULL, x, h), AD_OK);
    for (int64_t i = 0; i < 9; i++) ck_assert_double_eq(ad_tensor_get(h, i), 0);
    ck_assert_int_eq(ad_jacobian(f_linear, NULL, x, j13), AD_OK);
    for (int64_t i = 0; i < 3; i++) ck_assert_double_eq(ad_tensor_get(j13, i), 2);
    ad_tensor *o0 = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    ck_assert_int_eq(ad_jvp(f_constant, NULL, x, v, o0), AD_OK);
    ck_assert_double_eq(ad_tensor_get(o0, 0), 0);
    ck_assert_int_eq(ad_jvp(f_linear, NULL, x, v, o0), AD_OK);
    TU_ASSERT_CLOSE(ad_tensor_get(o0, 0), 2 * (ad_tensor_get(v, 0) + ad_tensor_get(v, 1) + ad_tensor_get(v, 2)), 1e-15,
                    1e-14);
    ad_tensor_free(o0);
    ad_tensor *t_list[] = {x, v, h, out3, h32, h34, v4, v32, j13, flat9};
    for (size_t i = 0; i < sizeof t_list / sizeof t_list[0]; i++) ad_tensor_free(t_list[i]);
}
END_TEST

/* ---- allocation failure: every helper returns AD_ERR_NOMEM and leaks nothing ---- */

typedef struct failing {
    long allocs, live, fail_at;
} failing;

static void *failing_alloc(void *ud, void *ptr, size_t nsize)
{
    failing *c = ud;
    if (nsize == 0) {
        if (ptr) c->live--;
        free(ptr);
        return NULL;
    }
    if (++c->allocs >= c->fail_at) return NULL;
    void *p = realloc(ptr, nsize);
    if (p && !ptr) c->live++;
    return p;
}

START_TEST(test_functional_nomem)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 16), *v = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 17);
    ad_tensor *h = ad_tensor_new(AD_F64, AD_SHAPE(4, 4)), *o = ad_tensor_new(AD_F64, AD_SHAPE(4));
    ad_tensor *j = ad_tensor_new(AD_F64, AD_SHAPE(1, 4)), *o0 = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    for (int which = 0; which < 4; which++) {
        bool passed = false;
        for (long n = 1; n < 200 && !passed; n++) {
            failing c = {0, 0, n};
            ad_set_allocator(failing_alloc, &c);
            ad_status s = which == 0   ? ad_jacobian(f_rosenbrock, NULL, x, j)
                          : which == 1 ? ad_hessian(f_rosenbrock, NULL, x, h)
                          : which == 2 ? ad_hvp(f_rosenbrock, NULL, x, v, o)
                                       : ad_jvp(f_rosenbrock, NULL, x, v, o0);
            ad_set_allocator(NULL, NULL);
            ck_assert_msg(s == AD_OK || s == AD_ERR_NOMEM, "helper %d, failing allocation %ld: %s", which, n,
                          ad_status_str(s));
            ck_assert_msg(c.live == 0, "helper %d, failing allocation %ld: %ld blocks leaked", which, n, c.live);
            passed = s == AD_OK;
        }
        ck_assert_msg(passed, "helper %d never succeeded", which);
    }
    double hh[16], g[4];
    rosen_hess(x->data, 4, hh);
    rosen_grad(x->data, 4, g);
    tu_assert_values(h, hh, 1e-12, 1e-12);
    tu_assert_values(j, g, 1e-12, 1e-12);
    ad_tensor *t_list[] = {x, v, h, o, j, o0};
    for (size_t i = 0; i < sizeof t_list / sizeof t_list[0]; i++) ad_tensor_free(t_list[i]);
}
END_TEST

static Suite *higher_suite(void)
{
    Suite *s = suite_create("higher");
    TCase *tc = tcase_create("gradgradcheck");
    tcase_add_loop_test(tc, test_table_complete, 0, AD_OP_COUNT);
    tcase_add_loop_test(tc, test_gradgradcheck_op, 0, AD_OP_COUNT);
    tcase_add_test(tc, test_create_graph_flag);
    tcase_add_test(tc, test_third_order);
    tcase_add_test(tc, test_third_order_check);
    suite_add_tcase(s, tc);
    tc = tcase_create("functional");
    tcase_add_test(tc, test_rosenbrock);
    tcase_add_test(tc, test_softmax_xent_hessian);
    tcase_add_test(tc, test_jacobians);
    tcase_add_test(tc, test_jvp_matches_jacobian);
    tcase_add_test(tc, test_functional_errors);
    tcase_add_test(tc, test_functional_nomem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(higher_suite()); }

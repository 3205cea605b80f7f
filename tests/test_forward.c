/* test_forward.c: forward mode over the whole op table: every op's tangent rule against finite differences,
** against J v from reverse mode, differentiated again (reverse over forward), and through recorded gradients
** (forward over reverse); then ad_jvp, ad_jacfwd and ad_hvp. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad_nnops.h"
#include "forward.h"
#include "test_custom_ops.h"
#include "test_rows.h"
#include "test_util.h"

/* ======================================================================
** the op table: a builder per op, or the reason it has no tangent
** ====================================================================== */

enum { IN_UNIFORM = 1, IN_AWAY, IN_DATA };

typedef struct in_spec {
    int kind;
    int ndim;
    int64_t shape[4];
    double lo, hi;
    const double *data;
} in_spec;

typedef struct op_case {
    const char *exempt; /* why the op has no tangent rule to check, or NULL */
    ad_fn f;            /* builds an expression around the op */
    int n;
    in_spec in[3];
    double eps; /* finite-difference step; 0: 1e-6 */
    const void *ctx; /* f's context */
    bool unsupported; /* forward mode stops with AD_ERR_UNSUPPORTED naming the op */
} op_case;

#define U(lo_, hi_, ...) {IN_UNIFORM, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, lo_, hi_, NULL}
#define AWAY(lo_, hi_, ...) {IN_AWAY, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, lo_, hi_, NULL}
#define DATA(d_, ...) {IN_DATA, AD_NARGS_(__VA_ARGS__), {__VA_ARGS__}, 0, 0, d_}

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
#define MASK_REASON "a mask used by VJPs and tangent rules: not differentiable, its tangent is 0 by definition"

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
        {.exempt = "stops derivatives by design: its tangent is 0 on purpose, finite differences see through it"},

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
    /* a raw VJP's result: its tangent is not built (it would need the op's second derivative) */
    [AD_OP_CUSTOM_GRAD] = {NULL, f_custom_grad, 1, {U(-1.5, 1.5, 4)}, .unsupported = true},
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
    op_case c = {NULL, f_row, 1, {U(0, 1, 2, 3)}, 0, row, false};
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
/* Every op in ops.def has an entry: its row, a check here, or the reason it has no tangent; and ops.def's
** tangent column agrees: the ops without a tangent rule (NOJVP) are exactly the exempt ones. */
START_TEST(test_table_complete)
{
    int op = _i;
    op_row row;
    const op_case cc = case_of(op, &row), *c = &cc;
    const char *name = ad__ops[op].name;
    ck_assert_msg(row.kind == ROW_CUSTOM || (!op_cases[op].f && !op_cases[op].exempt),
                  "%s has a row in ops.def and an entry in test_forward.c's table", name);
    ck_assert_msg(c->exempt || c->f,
                  "%s (AD_OP %d) has no entry in test_forward.c's op table: add a tangent check "
                  "or, for an op whose tangent is zero by definition, the reason",
                  name, op);
    ck_assert_msg(!(c->exempt && c->f), "%s is both checked and exempt", name);
    if (c->exempt) ck_assert_msg(strlen(c->exempt) > 10, "%s: exemption without a reason", name);
    ck_assert_msg((ad__jvps[op] == NULL) == (c->exempt != NULL),
                  "%s: ops.def says %s, the test table says %s", name, ad__jvps[op] ? "JVP" : "NOJVP",
                  c->exempt ? "exempt" : "checked");
    if (c->exempt && op != AD_OP_DETACH) ck_assert_msg(!ad__ops[op].differentiable, "%s is differentiable but exempt", name);
    if (!ad__ops[op].differentiable) ck_assert_msg(c->exempt != NULL, "%s is not differentiable", name);
}
END_TEST

/* The state of one op's checks: inputs, tangent directions, and weights for a scalar. */
typedef struct probe {
    const op_case *c;
    ad_tensor *in[3], *v[3], *w; /* w: weights shaped like the output */
} probe;

/* f recorded at `in` on a fresh tape; leaves in xs. */
static ad_var record(ad_tape *t, const op_case *c, ad_tensor *const *in, ad_var *xs)
{
    for (int i = 0; i < c->n; i++) xs[i] = ad_leaf(t, in[i]);
    return c->f(t, xs, (void *)c->ctx);
}

/* x -> sum(w * (J(x) v)) with v fixed: its gradient differentiates each tangent rule (reverse over forward). */
static ad_var f_weighted_tangent(ad_tape *t, const ad_var *x, void *ctx)
{
    const probe *p = ctx;
    ad_var y = p->c->f(t, x, (void *)p->c->ctx), vs[3], ty;
    for (int i = 0; i < p->c->n; i++) vs[i] = ad_const(t, p->v[i]);
    if (ad_tangents(p->c->n, x, vs, 1, &y, &ty) != AD_OK) return ad__invalid(t);
    return ad_sum(ad_mul(ty, ad_const(t, p->w)));
}

START_TEST(test_tangent_op)
{
    int op = _i;
    op_row row;
    const op_case cc = case_of(op, &row), *c = &cc;
    if (!c->f) return; /* exempt: test_table_complete holds the reason */
    probe p = {c, {NULL}, {NULL}, NULL};
    for (int i = 0; i < c->n; i++) {
        p.in[i] = make_input(&c->in[i], 2000u + 31u * (uint64_t)op + (uint64_t)i);
        p.v[i] = tu_rand(AD_F64, p.in[i]->ndim, p.in[i]->shape, -1, 1, 3000u + 7u * (uint64_t)op + (uint64_t)i);
    }
    const char *name = ad__ops[op].name;
    ad_tape *t = ad_tape_new();
    ad_var xs[3], vs[3], ty;
    ad_var y = record(t, c, p.in, xs);
    ck_assert_msg(ad_ok(y), "%s: %s", name, ad_tape_error(t));
    bool found = false;
    for (uint32_t i = 0; i < t->count && !found; i++) found = ad__node(t, i)->op == op;
    ck_assert_msg(found, "the builder for %s does not use it", name);
    for (int i = 0; i < c->n; i++) vs[i] = ad_const(t, p.v[i]);
    if (c->unsupported) { /* a clear error, no tangent */
        ck_assert_int_eq(ad_tangents(c->n, xs, vs, 1, &y, &ty), AD_ERR_UNSUPPORTED);
        ck_assert_msg(strstr(ad_tape_error(t), "forward mode is unsupported") != NULL, "%s", ad_tape_error(t));
        ck_assert(!ad_ok(ty));
        ad_tape_free(t);
        for (int i = 0; i < c->n; i++) {
            ad_tensor_free(p.in[i]);
            ad_tensor_free(p.v[i]);
        }
        return;
    }
    ck_assert_msg(ad_tangents(c->n, xs, vs, 1, &y, &ty) == AD_OK, "%s: %s", name, ad_tape_error(t));
    const ad_tensor *yv = ad_value(y), *tv = ad_value(ty);
    int64_t m = yv->size;
    ck_assert(ad_shape_equal(yv, tv));

    /* 1. finite differences along v: (f(x + eps v) - f(x - eps v)) / 2 eps */
    double eps = c->eps > 0 ? c->eps : 1e-6;
    double *fd = calloc((size_t)m + 1, sizeof *fd);
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        ad_tensor *sh[3];
        for (int i = 0; i < c->n; i++) {
            sh[i] = ad_tensor_clone(p.in[i]);
            for (int64_t k = 0; k < sh[i]->size; k++)
                ad_tensor_set(sh[i], k, ad_tensor_get(p.in[i], k) + sgn * eps * ad_tensor_get(p.v[i], k));
        }
        ad_tape *t2 = ad_tape_new();
        ad_var xs2[3], y2 = record(t2, c, sh, xs2);
        ck_assert(ad_ok(y2));
        for (int64_t k = 0; k < m; k++) fd[k] += sgn * ad_tensor_get(ad_value(y2), k) / (2 * eps);
        ad_tape_free(t2);
        for (int i = 0; i < c->n; i++) ad_tensor_free(sh[i]);
    }
    for (int64_t k = 0; k < m; k++) {
        double a = ad_tensor_get(tv, k);
        ck_assert_msg(fabs(a - fd[k]) <= 1e-5 + 1e-3 * fabs(fd[k]),
                      "%s: tangent element %lld is %.10g, finite differences %.10g", name, (long long)k, a, fd[k]);
    }
    free(fd);

    /* 2. J v from reverse mode: row k of J by a sweep seeded with e_k, dotted with v (both in float64
    ** to rounding, but for a case through float32, whose roundings differ between the two orders) */
    double tol = c->eps > 0 ? 1e-6 : 1e-10;
    for (int64_t k = 0; k < m; k++) {
        ad_mark mk = ad__tape_mark(t);
        ad_var seed = ad_full(t, AD_F64, yv->ndim, yv->shape, 0.0), gs[3];
        ad_tensor_set(&ad__node(t, seed.id)->value, k, 1.0);
        ck_assert_int_eq(ad_gradients_seed(y, seed, c->n, xs, gs, 0), AD_OK);
        double jv = 0;
        for (int i = 0; i < c->n; i++)
            for (int64_t e = 0; e < p.v[i]->size; e++) jv += ad_tensor_get(ad_value(gs[i]), e) * ad_tensor_get(p.v[i], e);
        double a = ad_tensor_get(tv, k);
        ck_assert_msg(fabs(a - jv) <= 1e-2 * tol + tol * fabs(jv), "%s: tangent element %lld is %.17g, reverse J v %.17g",
                      name, (long long)k, a, jv);
        ad__tape_rewind(t, mk);
    }

    /* 3. reverse over forward: the recorded tangent is differentiable, and right (gradcheck) */
    p.w = tu_rand(AD_F64, yv->ndim, yv->shape, -1, 1, 4000u + (uint64_t)op);
    ad_check_opts o = ad_check_defaults();
    if (c->eps > 0) o.eps = c->eps;
    ad_check_report rep;
    ad_status s = ad_gradcheck(f_weighted_tangent, &p, c->n, (const ad_tensor *const *)p.in, &o, &rep);
    ck_assert_msg(s == AD_OK, "gradcheck of %s's tangent: %s (%s), input %d element %lld: analytic %.10g numeric %.10g",
                  name, ad_status_str(s), rep.message, rep.input, (long long)rep.element, rep.analytic, rep.numeric);

    /* 4. forward over reverse: the tangent of the recorded gradient of sum(w y) is H v, as reverse over reverse gives */
    ad_tape_reset(t);
    y = record(t, c, p.in, xs);
    ad_var h = ad_sum(ad_mul(y, ad_const(t, p.w))), g[3], hv_f[3], hv_r[3];
    ck_assert_int_eq(ad_gradients(h, c->n, xs, g, AD_CREATE_GRAPH), AD_OK);
    for (int i = 0; i < c->n; i++) vs[i] = ad_const(t, p.v[i]);
    ck_assert_msg(ad_tangents(c->n, xs, vs, c->n, g, hv_f) == AD_OK, "%s: %s", name, ad_tape_error(t));
    ad_var gv = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < c->n; i++) gv = ad_add(gv, ad_sum(ad_mul(g[i], vs[i])));
    ck_assert_int_eq(ad_gradients(gv, c->n, xs, hv_r, 0), AD_OK);
    for (int i = 0; i < c->n; i++)
        for (int64_t e = 0; e < p.in[i]->size; e++) {
            double a = ad_tensor_get(ad_value(hv_f[i]), e), b = ad_tensor_get(ad_value(hv_r[i]), e);
            ck_assert_msg(fabs(a - b) <= 1e-1 * tol + 10 * tol * fabs(b),
                          "%s: H v input %d element %lld: forward over reverse %.17g, reverse over reverse %.17g", name,
                          i, (long long)e, a, b);
        }
    ad_tape_free(t);
    for (int i = 0; i < c->n; i++) {
        ad_tensor_free(p.in[i]);
        ad_tensor_free(p.v[i]);
    }
    ad_tensor_free(p.w);
}
END_TEST

/* ======================================================================
** the sweep's own rules, and the functions built on it
** ====================================================================== */

static ad_var f_mix(ad_tape *t, const ad_var *x, void *c)
{
    /* [sin(x0) x1, x0^2 + e^(x1 x2), tanh(x2) / (1 + x0^2), x0 x1 x2] */
    ad_var a = ad_slice(x[0], 0, 0, 1), b = ad_slice(x[0], 0, 1, 2), d = ad_slice(x[0], 0, 2, 3);
    ad_var parts[4] = {ad_mul(ad_sin(a), b), ad_add(ad_square(a), ad_exp(ad_mul(b, d))),
                       ad_div(ad_tanh(d), ad_add_scalar(ad_square(a), 1.0)), ad_mul(ad_mul(a, b), d)};
    return ad_concat(4, parts, 0);
}

START_TEST(test_jacfwd_matches_jacobian)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 11);
    ad_tensor *jf = ad_tensor_new(AD_F64, AD_SHAPE(4, 3)), *jr = ad_tensor_new(AD_F64, AD_SHAPE(4, 3));
    ck_assert_int_eq(ad_jacfwd(f_mix, NULL, x, jf), AD_OK);
    ck_assert_int_eq(ad_jacobian(f_mix, NULL, x, jr), AD_OK);
    for (int64_t i = 0; i < 12; i++) TU_ASSERT_CLOSE(ad_tensor_get(jf, i), ad_tensor_get(jr, i), 1e-14, 1e-13);
    /* J v from ad_jvp is the Jacobian times v */
    ad_tensor *v = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 12), *jv = ad_tensor_new(AD_F64, AD_SHAPE(4));
    ck_assert_int_eq(ad_jvp(f_mix, NULL, x, v, jv), AD_OK);
    for (int64_t r = 0; r < 4; r++) {
        double want = 0;
        for (int64_t c = 0; c < 3; c++) want += ad_tensor_get(jr, r * 3 + c) * ad_tensor_get(v, c);
        TU_ASSERT_CLOSE(ad_tensor_get(jv, r), want, 1e-14, 1e-13);
    }
    /* shape and argument errors */
    ad_tensor *bad = ad_tensor_new(AD_F64, AD_SHAPE(3, 4));
    ck_assert_int_eq(ad_jacfwd(f_mix, NULL, x, bad), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_jacfwd(NULL, NULL, x, jf), AD_ERR_ARG);
    ad_tensor_free(bad);
    ad_tensor_free(x);
    ad_tensor_free(jf);
    ad_tensor_free(jr);
    ad_tensor_free(v);
    ad_tensor_free(jv);
}
END_TEST

/* a small MLP loss: the HVP by forward over reverse against reverse over reverse */
typedef struct mlp {
    int64_t in, hid, batch;
    ad_tensor *data;
} mlp;

static ad_var f_mlp(ad_tape *t, const ad_var *x, void *ctx)
{
    const mlp *m = ctx;
    int64_t nw1 = m->in * m->hid, nb1 = m->hid, nw2 = m->hid;
    ad_var w1 = ad_reshape(ad_slice(x[0], 0, 0, nw1), AD_SHAPE(m->in, m->hid));
    ad_var b1 = ad_slice(x[0], 0, nw1, nw1 + nb1);
    ad_var w2 = ad_reshape(ad_slice(x[0], 0, nw1 + nb1, nw1 + nb1 + nw2), AD_SHAPE(m->hid, 1));
    ad_var h = ad_tanh(ad_add(ad_matmul(ad_const(t, m->data), w1), b1));
    return ad_mean(ad_square(ad_add_scalar(ad_matmul(h, w2), -0.5)));
}

START_TEST(test_hvp_forward_over_reverse)
{
    mlp m = {5, 7, 4, NULL};
    m.data = tu_rand(AD_F64, AD_SHAPE(m.batch, m.in), -1, 1, 21);
    int64_t np = m.in * m.hid + 2 * m.hid;
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(np), -0.5, 0.5, 22), *v = tu_rand(AD_F64, AD_SHAPE(np), -1, 1, 23);
    ad_tensor *hv = ad_tensor_new(AD_F64, AD_SHAPE(np)), *hess = ad_tensor_new(AD_F64, AD_SHAPE(np, np));
    ck_assert_int_eq(ad_hvp(f_mlp, &m, x, v, hv), AD_OK);
    ck_assert_int_eq(ad_hessian(f_mlp, &m, x, hess), AD_OK);
    for (int64_t r = 0; r < np; r++) {
        double want = 0;
        for (int64_t c = 0; c < np; c++) want += ad_tensor_get(hess, r * np + c) * ad_tensor_get(v, c);
        TU_ASSERT_CLOSE(ad_tensor_get(hv, r), want, 1e-13, 1e-11);
    }
    ad_tensor_free(m.data);
    ad_tensor_free(x);
    ad_tensor_free(v);
    ad_tensor_free(hv);
    ad_tensor_free(hess);
}
END_TEST

START_TEST(test_tangents_rules)
{
    ad_tensor *xv = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 31), *v3 = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 32);
    ad_tensor *v2 = ad_tensor_new(AD_F64, AD_SHAPE(2)), *v32 = ad_tensor_new(AD_F32, AD_SHAPE(3));
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, xv), v = ad_const(t, v3);
    ad_var u = ad_sin(x);
    ad_var y = ad_mul(u, ad_exp(x)), ty;
    /* an intermediate var taken as independent: d/du (u e^x) v = e^x v */
    ck_assert_int_eq(ad_tangents(1, &u, &v, 1, &y, &ty), AD_OK);
    for (int64_t i = 0; i < 3; i++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(ty), i), exp(ad_tensor_get(xv, i)) * ad_tensor_get(v3, i), 1e-15, 1e-14);
    /* a y that x does not reach: zeros */
    ad_var c = ad_exp(ad_const(t, v3));
    ck_assert_int_eq(ad_tangents(1, &x, &v, 1, &c, &ty), AD_OK);
    for (int64_t i = 0; i < 3; i++) ck_assert(ad_tensor_get(ad_value(ty), i) == 0.0);
    /* detach stops tangents */
    ad_var d = ad_mul(ad_detach(x), x);
    ck_assert_int_eq(ad_tangents(1, &x, &v, 1, &d, &ty), AD_OK);
    for (int64_t i = 0; i < 3; i++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(ty), i), ad_tensor_get(xv, i) * ad_tensor_get(v3, i), 1e-15, 1e-14);
    /* errors: shape, dtype, arguments */
    ad_var bad = ad_const(t, v2);
    ck_assert_int_eq(ad_tangents(1, &x, &bad, 1, &y, &ty), AD_ERR_SHAPE);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_tangents") != NULL, "%s", ad_tape_error(t));
    ad_tape_clear_error(t);
    bad = ad_const(t, v32);
    ck_assert_int_eq(ad_tangents(1, &x, &bad, 1, &y, &ty), AD_ERR_DTYPE);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tangents(0, &x, &v, 1, &y, &ty), AD_ERR_ARG);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tangents(1, &x, &v, 1, &y, NULL), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor_free(xv);
    ad_tensor_free(v3);
    ad_tensor_free(v2);
    ad_tensor_free(v32);
}
END_TEST

static Suite *forward_suite(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("table");
    tcase_add_loop_test(tc, test_table_complete, 0, AD_OP_COUNT);
    tcase_add_loop_test(tc, test_tangent_op, 0, AD_OP_COUNT);
    suite_add_tcase(s, tc);
    tc = tcase_create("functional");
    tcase_add_test(tc, test_jacfwd_matches_jacobian);
    tcase_add_test(tc, test_hvp_forward_over_reverse);
    tcase_add_test(tc, test_tangents_rules);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(forward_suite()); }

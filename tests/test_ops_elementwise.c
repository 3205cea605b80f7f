/* test_ops_elementwise.c: the op-table entry of the elementwise unary and binary ops, from their test rows in ops.def. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "test_ops.h"
#include "test_rows.h"

/* ================= elementwise unary ops, from ops.def's test rows ================= */

/* One case: the op's row, or another attribute for it. */
typedef struct unary_spec {
    op_row row;
} unary_spec;

/* More attributes for pow_scalar than its row's (roots, a negative power, the squaring and
** constant special cases). */
static const struct {
    ad_op op;
    double p0, lo, hi;
} unary_more[] = {
    {AD_OP_POW_SCALAR, 0.5, 0.2, 3},
    {AD_OP_POW_SCALAR, -1.5, 0.3, 3},
    {AD_OP_POW_SCALAR, 2.0, -2, 2},
    {AD_OP_POW_SCALAR, 0.0, -2, 2},
};

static ad_var unary_fn(ad_tape *t, const ad_var *x, void *ctx)
{
    const unary_spec *s = ctx;
    return op_row_build(&s->row, x[0], x[0]);
}

/* The row's build and reference on one point, for point_values. */
static ad_var ub_row(ad_var x, const double *p)
{
    op_row r = op_row_of((ad_op)(int)p[2]);
    r.p[0] = p[0];
    r.p[1] = p[1];
    return op_row_build(&r, x, x);
}

/* Forward against the C reference in f64 (and f32 against the reference at the rounded inputs). */
static void unary_forward(const unary_spec *s, ad_dtype dt)
{
    rig r = rig_new();
    const op_row *row = &s->row;
    ad_tensor *x64 = input(SH(5, 7), row->lo, row->hi, row->away);
    ad_tensor *x = dt == AD_F64 ? x64 : tu_to_f32(x64);
    if (dt != AD_F64) ad_tensor_free(x64);
    ad_var y = unary_fn(r.t, (ad_var[]){rig_leaf(&r, x)}, (void *)s);
    expect_op(y, row->op);
    const ad_tensor *v = ad_value(y);
    ck_assert_int_eq(v->dtype, dt);
    tu_assert_shape(v, AD_SHAPE(5, 7));
    for (int64_t i = 0; i < x->size; i++) {
        double want = op_row_ref(row, ad_tensor_get(x, i), 0), got = ad_tensor_get(v, i);
        bool ok = dt == AD_F64 ? tu_close(got, want, 1e-300, 1e-14) : tu_close(got, want, 2e-6, 2e-6);
        ck_assert_msg(ok, "%s(%.17g) [%s] = %.17g, expected %.17g", ad__ops[row->op].name, ad_tensor_get(x, i),
                      ad_dtype_name(dt), got, want);
    }
    ck_assert(ad_requires_grad(y));
    rig_free(&r);
}

static void unary_case(const unary_spec *s)
{
    unary_forward(s, AD_F64);
    unary_forward(s, AD_F32);
    const shp shapes[] = {SH(2, 3), SCALAR, SH(0, 3), SH(1, 4, 1)};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        gc_shapes(ad__ops[s->row.op].name, unary_fn, (void *)s, 1, &shapes[i], s->row.lo, s->row.hi, s->row.away);
}

static void run_unary(ad_op op)
{
    unary_spec s = {op_row_of(op)};
    ck_assert_int_eq(s.row.kind, ROW_UNARY);
    unary_case(&s);
    for (size_t k = 0; k < sizeof unary_more / sizeof unary_more[0]; k++) {
        if (unary_more[k].op != op) continue;
        unary_spec m = s;
        m.row.p[0] = unary_more[k].p0;
        m.row.lo = unary_more[k].lo;
        m.row.hi = unary_more[k].hi;
        unary_case(&m);
    }
}

/* ---- extra unary cases: extremes, conventions at kinks ---- */

static void unary_extremes(ad_op op)
{
    const double big[4] = {-1000, 1000, -1e4, 0};
    for (int d = 0; d < 2; d++) {
        ad_dtype dt = d ? AD_F32 : AD_F64;
        if (op == AD_OP_SIGMOID)
            point_values(ub_row, (double[]){0, 0, AD_OP_SIGMOID}, dt, 4, big, (double[]){0, 1, 0, 0.5}, (double[]){0, 0, 0, 0.25});
        if (op == AD_OP_SOFTPLUS)
            point_values(ub_row, (double[]){0, 0, AD_OP_SOFTPLUS}, dt, 4, big, (double[]){0, 1000, 0, log(2.0)}, (double[]){0, 1, 0, 0.5});
        if (op == AD_OP_TANH) point_values(ub_row, (double[]){0, 0, AD_OP_TANH}, dt, 4, big, (double[]){-1, 1, -1, 0}, (double[]){0, 0, 0, 1});
        if (op == AD_OP_EXP)
            point_values(ub_row, (double[]){0, 0, AD_OP_EXP}, dt, 3, (double[]){-1000, 0, 1}, (double[]){0, 1, exp(1.0)},
                         (double[]){0, 1, exp(1.0)});
    }
    /* conventions at kinks: 0 gradient for relu and abs at 0 (as PyTorch), clamp includes its bounds */
    if (op == AD_OP_RELU)
        point_values(ub_row, (double[]){0, 0, AD_OP_RELU}, AD_F64, 3, (double[]){-1, 0, 2}, (double[]){0, 0, 2}, (double[]){0, 0, 1});
    if (op == AD_OP_ABS)
        point_values(ub_row, (double[]){0, 0, AD_OP_ABS}, AD_F64, 3, (double[]){-1, 0, 2}, (double[]){1, 0, 2}, (double[]){-1, 0, 1});
    if (op == AD_OP_CLAMP)
        point_values(ub_row, (double[]){-1, 1, AD_OP_CLAMP}, AD_F64, 5, (double[]){-2, -1, 0, 1, 2}, (double[]){-1, -1, 0, 1, 1},
                     (double[]){0, 1, 1, 1, 0});
    if (op == AD_OP_POW_SCALAR)
        point_values(ub_row, (double[]){0, 0, AD_OP_POW_SCALAR}, AD_F64, 3, (double[]){-2, 0, 3}, (double[]){1, 1, 1},
                     (double[]){0, 0, 0});
    if (op == AD_OP_LEAKY_RELU)
        point_values(ub_row, (double[]){0.2, 0, AD_OP_LEAKY_RELU}, AD_F64, 2, (double[]){-1, 3}, (double[]){-0.2, 3},
                     (double[]){0.2, 1});
    if (op == AD_OP_ELU)
        point_values(ub_row, (double[]){2.0, 0, AD_OP_ELU}, AD_F64, 2, (double[]){-1, 3}, (double[]){2 * (exp(-1.0) - 1), 3},
                     (double[]){2 * exp(-1.0), 1});
}



/* ================= elementwise binary ops ================= */

typedef op_row binary_spec; /* the op's row in ops.def */

static ad_var binary_fn(ad_tape *t, const ad_var *x, void *ctx) { return op_row_build(ctx, x[0], x[1]); }

static ad_tensor *binput(const binary_spec *s, int side, shp sh)
{
    return side == 0 ? input(sh, s->lo, s->hi, false) : input(sh, s->blo, s->bhi, s->baway);
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
    ad_var y = op_row_build(s, rig_leaf(&r, a), rig_leaf(&r, b));
    expect_op(y, s->op);
    const ad_tensor *v = ad_value(y);
    tu_assert_shape(v, want.nd, want.d);
    ck_assert_int_eq(v->dtype, dt);
    for (int64_t i = 0; i < v->size; i++) {
        double av = ad_tensor_get(a, bcast_index(a, v->ndim, v->shape, i));
        double bv = ad_tensor_get(b, bcast_index(b, v->ndim, v->shape, i));
        double w = op_row_ref(s, av, bv), got = ad_tensor_get(v, i);
        bool ok = dt == AD_F64 ? tu_close(got, w, 1e-300, 1e-15) : tu_close(got, w, 2e-6, 2e-6);
        ck_assert_msg(ok, "%s(%g, %g) = %.17g, expected %.17g", ad__ops[s->op].name, av, bv, got, w);
    }
    rig_free(&r);
}

static void t_binary(ad_op op)
{
    const binary_spec row = op_row_of(op), *s = &row;
    ck_assert_int_eq(row.kind, ROW_BINARY);
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
    ad_var y = op_row_build(s, a, b);
    ad_tensor *seed = ad_tensor_new(AD_F64, AD_SHAPE(3, 0));
    ck_assert_int_eq(ad_backward(y, seed, 0), AD_OK);
    tu_assert_shape(ad_grad(a), AD_SHAPE(3, 1));
    tu_assert_values(ad_grad(a), (double[]){0, 0, 0}, 0, 0);
    ad_tensor_free(seed);
    rig_free(&r);
}


static ad_var b_max(ad_var a, const double *p) { return ad_maximum(a, ad_scalar(a.tape, AD_F64, p[0])); }
static ad_var b_min(ad_var a, const double *p) { return ad_minimum(a, ad_scalar(a.tape, AD_F64, p[0])); }

/* ---- extra binary cases: ties, NaN, 0 log 0 ---- */

static void binary_extras(ad_op op)
{
    if (op == AD_OP_MAXIMUM) {
        /* ties share the gradient; NaN propagates */
        point_values(b_max, (double[]){1.0}, AD_F64, 3, (double[]){0, 1, 2}, (double[]){1, 1, 2}, (double[]){0, 0.5, 1});
        rig r = rig_new();
        ad_var y = ad_maximum(rig_leaf(&r, tu_f64(AD_SHAPE(2), (double[]){NAN, 1})), ad_scalar(r.t, AD_F64, 0));
        ck_assert(isnan(ad_tensor_get(ad_value(y), 0)));
        rig_free(&r);
    }
    if (op == AD_OP_MINIMUM)
        point_values(b_min, (double[]){1.0}, AD_F64, 3, (double[]){0, 1, 2}, (double[]){0, 1, 1}, (double[]){1, 0.5, 0});
    if (op == AD_OP_XLOGY) {
        /* 0 * log(0) is 0, and so is its gradient in x's place */
        rig r = rig_new();
        ad_var x = rig_leaf(&r, tu_f64(AD_SHAPE(3), (double[]){0, 0, 2})),
               z = rig_leaf(&r, tu_f64(AD_SHAPE(3), (double[]){0, 5, 3}));
        ad_var y = ad_xlogy(x, z);
        expect_op(y, AD_OP_XLOGY);
        tu_assert_values(ad_value(y), (double[]){0, 0, 2 * log(3.0)}, 0, 1e-15);
        rig_free(&r);
    }
}

/* The op-table entry of every op with an UNARY or BINARY row in ops.def. */
void t_elementwise(void)
{
    ad_op op = op_under_test();
    op_row row = op_row_of(op);
    if (row.kind == ROW_UNARY) {
        run_unary(op);
        unary_extremes(op);
    } else {
        ck_assert_int_eq(row.kind, ROW_BINARY);
        t_binary(op);
        binary_extras(op);
    }
}

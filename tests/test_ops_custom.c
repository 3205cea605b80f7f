/* test_ops_custom.c: op-table entries for custom ops, their outputs, a raw VJP's result and checkpoints; test_custom covers them in depth. */
#include "test_custom_ops.h"
#include "test_ops.h"

/* Each entry builds its op once through expect_op, checks values against plain C, then
** gradcheck and gradgradcheck (gc_n) in F64, over a size-1 dim and an empty tensor too. */

static ad_var f_cube(ad_tape *t, const ad_var *x, void *c) { return ad_custom(&co_cube, NULL, 1, x); }
static ad_var f_sqsum(ad_tape *t, const ad_var *x, void *c)
{
    ad_var o[2];
    if (ad_custom_n(&co_sqsum, NULL, 1, x, o) != AD_OK) return AD_NO_VAR;
    /* both outputs reach the result, and non-linearly (for the second order) */
    return ad_add(ad_sum(ad_square(o[0])), ad_sum(ad_sin(o[1])));
}
/* the gradient of sum(cube_raw_jvp(x)): its raw VJP's result (a custom_grad node) is the output */
static ad_var g_raw(ad_tape *t, const ad_var *x)
{
    ad_var y = ad_sum(ad_custom(&co_cube_raw_jvp, NULL, 1, x)), g;
    if (ad_gradients(y, 1, x, &g, AD_CREATE_GRAPH) != AD_OK) return AD_NO_VAR;
    return g;
}
static ad_var f_grad_raw(ad_tape *t, const ad_var *x, void *c) { return ad_sum(ad_square(g_raw(t, x))); }
static ad_status seg1(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    ad_var o[2];
    ad_status s = co_segment(t, n, in, 2, o, ctx);
    out[0] = ad_add(o[0], o[1]);
    return s;
}
static ad_var ckpt1(const ad_var *x)
{
    ad_var y = AD_NO_VAR;
    ad_checkpoint(seg1, NULL, 3, x, 1, &y);
    return y;
}
static ad_var f_ckpt(ad_tape *t, const ad_var *x, void *c) { return ad_sum(ckpt1(x)); }

static void cube_at(const ad_tensor *in)
{
    rig r = rig_new();
    ad_var x = rig_leaf(&r, ad_tensor_clone(in));
    ad_var y = f_cube(r.t, &x, NULL);
    expect_op(y, AD_OP_CUSTOM);
    for (int64_t i = 0; i < in->size; i++) {
        double v = ad_tensor_get(in, i);
        ck_assert_double_eq(ad_tensor_get(ad_value(y), i), v * v * v);
    }
    rig_free(&r);
}

void t_custom(void);
void t_custom(void)
{
    shp shapes[3] = {SH(2, 3), SH(1, 4), SH(0, 3)};
    for (int k = 0; k < 3; k++) {
        ad_tensor *x = input(shapes[k], -2, 2, false);
        cube_at(x);
        gc_n("custom (cube)", f_cube, NULL, 1, (const ad_tensor *const *)&x);
        ad_tensor_free(x);
    }
}

void t_custom_out(void);
void t_custom_out(void)
{
    shp shapes[3] = {SH(3, 2), SH(1, 1), SH(0, 2)};
    for (int k = 0; k < 3; k++) {
        ad_tensor *x = input(shapes[k], -1, 1, false);
        rig r = rig_new();
        ad_var xv = rig_leaf(&r, ad_tensor_clone(x)), o[2];
        ck_assert_int_eq(ad_custom_n(&co_sqsum, NULL, 1, &xv, o), AD_OK);
        expect_op(o[0], AD_OP_CUSTOM_OUT);
        expect_op(o[1], AD_OP_CUSTOM_OUT);
        int64_t m = x->shape[0], kk = x->shape[1];
        ck_assert_int_eq(ad_value(o[1])->ndim, 1);
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t j = 0; j < kk; j++) {
                double v = ad_tensor_get(x, i * kk + j);
                ck_assert_double_eq(ad_tensor_get(ad_value(o[0]), i * kk + j), v * v);
                s += v;
            }
            ck_assert_double_eq(ad_tensor_get(ad_value(o[1]), i), s);
        }
        rig_free(&r);
        gc_n("custom_out (sqsum)", f_sqsum, NULL, 1, (const ad_tensor *const *)&x);
        ad_tensor_free(x);
    }
}

void t_custom_grad(void);
void t_custom_grad(void)
{
    ad_tensor *x = input(SH(2, 2), -1.5, 1.5, false);
    rig r = rig_new();
    ad_var xv = rig_leaf(&r, ad_tensor_clone(x));
    ad_var g = g_raw(r.t, &xv);
    expect_op(g, AD_OP_CUSTOM_GRAD);
    /* d/dx sum(x^3) = 3 x^2 */
    for (int64_t i = 0; i < x->size; i++) {
        double v = ad_tensor_get(x, i);
        ck_assert(tu_close(ad_tensor_get(ad_value(g), i), 3 * v * v, 1e-12, 1e-12));
    }
    rig_free(&r);
    gc_n("custom_grad (raw VJP with a jvp)", f_grad_raw, NULL, 1, (const ad_tensor *const *)&x);
    ad_tensor_free(x);
}

void t_checkpoint(void);
void t_checkpoint(void)
{
    ad_tensor *in[3] = {input(SH(2, 3), -1, 1, false), input(SH(2, 3), -1, 1, false), input(SH(3), 0.5, 1.5, false)};
    rig r = rig_new();
    ad_var xs[3];
    for (int i = 0; i < 3; i++) xs[i] = rig_leaf(&r, ad_tensor_clone(in[i]));
    size_t before = ad_tape_node_count(r.t);
    ad_var y = ckpt1(xs);
    expect_op(y, AD_OP_CHECKPOINT);
    ck_assert_uint_eq(ad_tape_node_count(r.t), before + 1); /* the inside is not kept */
    rig_free(&r);
    gc_n("checkpoint", f_ckpt, NULL, 3, (const ad_tensor *const *)in);
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
}

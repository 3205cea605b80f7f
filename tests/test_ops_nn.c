/* test_ops_nn.c: op-table entries for the network primitives (conv2d, pools, their adjoints, where); test_conv covers them in depth. */
#include "ad_nnops.h"
#include "test_ops.h"

/* The entries build their op once through expect_op, then gradcheck (and gradgradcheck) in F64. */

static const ad_conv2d_params cp = {2, 1, 1, 0, 1, 2, 2}; /* stride 2x1, padding 1x0, dilation 1x2, 2 groups */
static const ad_pool2d_params pp = {3, 2, 2, 1, 1, 1};    /* 3x2 windows, stride 2x1, padding 1x1 */

static ad_var f_conv(ad_tape *t, const ad_var *x, void *c) { return ad_conv2d_ex(x[0], x[1], &cp); }
static ad_var f_gin(ad_tape *t, const ad_var *x, void *c) { return ad__conv2d_grad_input(x[0], x[1], 5, 6, &cp); }
static ad_var f_gw(ad_tape *t, const ad_var *x, void *c) { return ad__conv2d_grad_weight(x[0], x[1], 3, 2, &cp); }
static ad_var f_max(ad_tape *t, const ad_var *x, void *c) { return ad_max_pool2d_ex(x[0], &pp); }
static ad_var f_maxg(ad_tape *t, const ad_var *x, void *c) { return ad__max_pool2d_grad(x[0], x[1], &pp); }
static ad_var f_maxs(ad_tape *t, const ad_var *x, void *c) { return ad__max_pool2d_select(x[0], x[1], &pp); }
static ad_var f_avg(ad_tape *t, const ad_var *x, void *c) { return ad_avg_pool2d_ex(x[0], &pp); }
static ad_var f_avgg(ad_tape *t, const ad_var *x, void *c) { return ad__avg_pool2d_grad(x[0], 5, 6, &pp); }
static ad_var f_where(ad_tape *t, const ad_var *x, void *c) { return ad_where(ad_detach(x[0]), x[1], x[2]); }

/* x [2,4,5,6], w [4,2,3,2] -> y [2,4,3,4] */
#define XS SH(2, 4, 5, 6)
#define WS SH(4, 2, 3, 2)
#define YS SH(2, 4, 3, 4)
/* pools of x [2,4,5,6] -> [2,4,3,7] */
#define PS SH(2, 4, 3, 7)

static void builds(ad_fn f, ad_op op, int n, const shp *s)
{
    rig r = rig_new();
    ad_var xs[3];
    for (int i = 0; i < n; i++) xs[i] = rig_leaf(&r, input(s[i], -1, 1, false));
    expect_op(f(r.t, xs, NULL), op);
    rig_free(&r);
}

#define ENTRY(name, fn, OP, n, ...)                                                                      \
    void t_##name(void); /* called from test_ops.c's table */                                            \
    void t_##name(void)                                                                                  \
    {                                                                                                    \
        const shp s[n] = {__VA_ARGS__};                                                                  \
        builds(fn, OP, n, s);                                                                            \
        gc_shapes(#name, fn, NULL, n, s, -1, 1, false);                                                  \
    }

ENTRY(conv2d, f_conv, AD_OP_CONV2D, 2, XS, WS)
ENTRY(conv2d_grad_input, f_gin, AD_OP_CONV2D_GRAD_INPUT, 2, YS, WS)
ENTRY(conv2d_grad_weight, f_gw, AD_OP_CONV2D_GRAD_WEIGHT, 2, XS, YS)
ENTRY(max_pool2d, f_max, AD_OP_MAX_POOL2D, 1, XS)
ENTRY(max_pool2d_grad, f_maxg, AD_OP_MAX_POOL2D_GRAD, 2, XS, PS)
ENTRY(max_pool2d_select, f_maxs, AD_OP_MAX_POOL2D_SELECT, 2, XS, XS)
ENTRY(avg_pool2d, f_avg, AD_OP_AVG_POOL2D, 1, XS)
ENTRY(avg_pool2d_grad, f_avgg, AD_OP_AVG_POOL2D_GRAD, 1, PS)
/* cond [2,1] (values in [-1, 1): a few exact zeros are unlikely, signs decide nothing: nonzero picks a) */
ENTRY(where, f_where, AD_OP_WHERE, 3, SH(2, 1), SH(2, 3), SH(3))

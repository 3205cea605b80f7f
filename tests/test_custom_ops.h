/* test_custom_ops.h: custom ops the engine's suites share: a cube with every kind of VJP, a two-output op, a masked scale, a checkpointed segment. */
#ifndef AUTODIFF_TEST_CUSTOM_OPS_H
#define AUTODIFF_TEST_CUSTOM_OPS_H

#include "ad.h"

/* ---- cube: y = x^3 elementwise; dy/dx = 3 x^2 ---- */

static inline ad_status co_same_shape(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    (void)c, (void)n;
    *out = *in[0];
    return AD_OK;
}
static inline ad_status co_cube_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    (void)c, (void)n;
    for (int64_t i = 0; i < in[0]->size; i++) {
        double x = ad_tensor_get(in[0], i);
        ad_tensor_set(out[0], i, x * x * x);
    }
    return AD_OK;
}
/* engine ops: gin = gout * 3 x^2 (differentiable again) */
static inline ad_status co_cube_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                                    ad_var *gin)
{
    (void)c, (void)n, (void)n_out, (void)out;
    gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_square(in[0]), 3.0));
    return AD_OK;
}
/* raw: the same on tensors */
static inline ad_status co_cube_vjp_raw(void *c, int n, const ad_tensor *const *in, int n_out,
                                        const ad_tensor *const *out, const ad_tensor *const *gout,
                                        ad_tensor *const *gin)
{
    (void)c, (void)n, (void)n_out, (void)out;
    if (!gin[0]) return AD_OK;
    for (int64_t i = 0; i < in[0]->size; i++) {
        double x = ad_tensor_get(in[0], i);
        ad_tensor_set(gin[0], i, 3 * x * x * ad_tensor_get(gout[0], i));
    }
    return AD_OK;
}
/* tangent: tout = 3 x^2 tin */
static inline ad_status co_cube_jvp(void *c, int n, const ad_var *in, const ad_var *tin, int n_out, ad_var *tout)
{
    (void)c, (void)n, (void)n_out;
    tout[0] = ad_mul(tin[0], ad_mul_scalar(ad_square(in[0]), 3.0));
    return AD_OK;
}

static const ad_custom_op co_cube = {"cube", 1, co_same_shape, co_cube_fwd, co_cube_vjp, NULL, co_cube_jvp, NULL};
static const ad_custom_op co_cube_raw = {"cube_raw", 1, co_same_shape, co_cube_fwd, NULL, co_cube_vjp_raw, NULL, NULL};
static const ad_custom_op co_cube_raw_jvp = {"cube_raw_jvp",  1,           co_same_shape, co_cube_fwd, NULL,
                                             co_cube_vjp_raw, co_cube_jvp, NULL};
static const ad_custom_op co_cube_both = {"cube_both",     1,    co_same_shape, co_cube_fwd, co_cube_vjp,
                                          co_cube_vjp_raw, NULL, NULL};

/* ---- sqsum: x [m, k] -> (x * x [m, k], sum over axis 1 of x [m]) ---- */

static inline ad_status co_sqsum_shape(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    (void)c, (void)n;
    if (in[0]->ndim != 2) return AD_ERR_SHAPE;
    out[0] = *in[0];
    out[1] = *in[0];
    out[1].ndim = 1;
    return AD_OK;
}
static inline ad_status co_sqsum_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    (void)c, (void)n;
    int64_t m = in[0]->shape[0], k = in[0]->shape[1];
    for (int64_t i = 0; i < m; i++) {
        double s = 0;
        for (int64_t j = 0; j < k; j++) {
            double x = ad_tensor_get(in[0], i * k + j);
            ad_tensor_set(out[0], i * k + j, x * x);
            s += x;
        }
        ad_tensor_set(out[1], i, s);
    }
    return AD_OK;
}
/* gin = 2 x gout0 + gout1 broadcast along axis 1 */
static inline ad_status co_sqsum_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                                     ad_var *gin)
{
    (void)c, (void)n, (void)n_out, (void)out;
    const ad_tensor *x = ad_value(in[0]);
    ad_var g1 = ad_reshape(gout[1], 2, (const int64_t[]){x->shape[0], 1});
    gin[0] = ad_add(ad_mul(ad_mul_scalar(in[0], 2.0), gout[0]), ad_broadcast_to(g1, 2, x->shape));
    return AD_OK;
}
static inline ad_status co_sqsum_vjp_raw(void *c, int n, const ad_tensor *const *in, int n_out,
                                         const ad_tensor *const *out, const ad_tensor *const *gout,
                                         ad_tensor *const *gin)
{
    (void)c, (void)n, (void)n_out, (void)out;
    int64_t m = in[0]->shape[0], k = in[0]->shape[1];
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++) {
            double x = ad_tensor_get(in[0], i * k + j);
            ad_tensor_set(gin[0], i * k + j, 2 * x * ad_tensor_get(gout[0], i * k + j) + ad_tensor_get(gout[1], i));
        }
    return AD_OK;
}
static inline ad_status co_sqsum_jvp(void *c, int n, const ad_var *in, const ad_var *tin, int n_out, ad_var *tout)
{
    (void)c, (void)n, (void)n_out;
    tout[0] = ad_mul(ad_mul_scalar(in[0], 2.0), tin[0]);
    tout[1] = ad_sum_axis(tin[0], 1, false);
    return AD_OK;
}
static const ad_custom_op co_sqsum = {"sqsum", 2, co_sqsum_shape, co_sqsum_fwd, co_sqsum_vjp, NULL, co_sqsum_jvp, NULL};
static const ad_custom_op co_sqsum_raw = {"sqsum_raw",  2,   co_sqsum_shape, co_sqsum_fwd, NULL, co_sqsum_vjp_raw,
                                          co_sqsum_jvp, NULL};

/* ---- mscale: y = x * mask; mask is not differentiable ---- */

static inline ad_status co_mscale_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    (void)c, (void)n;
    for (int64_t i = 0; i < in[0]->size; i++)
        ad_tensor_set(out[0], i, ad_tensor_get(in[0], i) * (ad_tensor_get(in[1], i) > 0 ? 1.0 : 0.0));
    return AD_OK;
}
static inline ad_status co_mscale_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out,
                                      const ad_var *gout, ad_var *gin)
{
    (void)c, (void)n, (void)n_out, (void)out;
    gin[0] = ad_mul(gout[0], ad_relu(ad_sign(in[1])));
    gin[1] = gout[0]; /* ignored: input 2 is not differentiable */
    return AD_OK;
}
static const bool co_mscale_diff[2] = {true, false};
static const ad_custom_op co_mscale = {"mscale",      1,    co_same_shape, co_mscale_fwd,
                                       co_mscale_vjp, NULL, NULL,          co_mscale_diff};

/* ---- a checkpointed segment: (h, c) -> (tanh(h * w + c), c * h) over `steps` steps ---- */

static inline ad_status co_segment(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    (void)t, (void)n, (void)n_out;
    int steps = ctx ? *(const int *)ctx : 2;
    ad_var h = in[0], c = in[1], w = in[2];
    for (int k = 0; k < steps; k++) {
        ad_var h2 = ad_tanh(ad_add(ad_mul(h, w), c));
        c = ad_mul(c, h);
        h = h2;
    }
    out[0] = h;
    out[1] = c;
    return AD_OK;
}

#endif

/* composed.c: layers written with the engine's ops: scaled dot-product attention, transposed and 1-D convolution, group normalization. */
#include "ad_nnops.h"
#include "vjp.h"
#include "kernels.h"

#include <float.h>
#include <math.h>

static char *shp(const ad_tensor *x, char *buf) { return ad_shape_str(x->ndim, x->shape, buf, 96); }

/* An optional var: absent when it has no tape. */
static bool given(ad_var v) { return v.tape != NULL; }

/* ---- attention ---- */

/* keep[i, j] = j <= i: the causal pattern as a [tq, tk] constant. */
static ad_var causal_keep(ad_tape *t, ad_dtype dt, int64_t tq, int64_t tk)
{
    ad_var c = ad_full(t, dt, 2, (const int64_t[]){tq, tk}, 0.0);
    if (!ad_ok(c)) return c;
    ad_tensor *v = &ad__node(t, c.id)->value;
    for (int64_t i = 0; i < tq; i++)
        for (int64_t j = 0; j <= i && j < tk; j++) ad_tensor_set(v, i * tk + j, 1.0);
    return c;
}

/*
** attention: y = softmax(s) v with s = scale q k^T + mask, over the keys (last axis).
** Excluded entries (causal, or a mask of -inf) are replaced by where() with a large
** negative finite number before the softmax, whose own max shift keeps exp() in range,
** so no inf - inf is ever formed; rows with nothing kept are multiplied by 0 after it.
** VJP: the composition's (matmul, softmax, where, mul), differentiable again.
*/
ad_var ad_attention(ad_var q, ad_var k, ad_var v, ad_var mask, bool causal, double scale)
{
    static const char op[] = "ad_attention";
    ad_var xs[4] = {q, k, v, mask};
    ad_tape *t;
    if (!ad__begin(op, given(mask) ? 4 : 3, xs, &t)) return ad__invalid(t);
    const ad_tensor *vq = ad__val(q), *vk = ad__val(k), *vv = ad__val(v), *vm = given(mask) ? ad__val(mask) : NULL;
    char s1[96], s2[96], s3[96];
    if (vq->ndim < 2 || vk->ndim < 2 || vv->ndim < 2) {
        ad__fail(t, AD_ERR_SHAPE, "%s: q %s, k %s and v %s need at least 2 dimensions [..., T, d]", op, shp(vq, s1),
                 shp(vk, s2), shp(vv, s3));
        return ad__invalid(t);
    }
    if (vq->dtype != vk->dtype || vq->dtype != vv->dtype || (vm && vm->dtype != vq->dtype)) {
        ad__fail(t, AD_ERR_DTYPE, "%s: dtypes differ: q %s, k %s, v %s%s%s", op, ad_dtype_name(vq->dtype),
                 ad_dtype_name(vk->dtype), ad_dtype_name(vv->dtype), vm ? ", mask " : "",
                 vm ? ad_dtype_name(vm->dtype) : "");
        return ad__invalid(t);
    }
    int64_t tq = vq->shape[vq->ndim - 2], d = vq->shape[vq->ndim - 1];
    int64_t tk = vk->shape[vk->ndim - 2];
    if (vk->shape[vk->ndim - 1] != d || vv->shape[vv->ndim - 2] != tk) {
        ad__fail(t, AD_ERR_SHAPE, "%s: q %s, k %s and v %s do not fit [..., Tq, d], [..., Tk, d], [..., Tk, dv]", op,
                 shp(vq, s1), shp(vk, s2), shp(vv, s3));
        return ad__invalid(t);
    }
    int64_t bqk[AD_MAX_DIMS], batch[AD_MAX_DIMS], sshape[AD_MAX_DIMS], ms[AD_MAX_DIMS];
    int nqk, nb, nm;
    if (!ad__broadcast_shape(vq->ndim - 2, vq->shape, vk->ndim - 2, vk->shape, &nqk, bqk) ||
        !ad__broadcast_shape(nqk, bqk, vv->ndim - 2, vv->shape, &nb, batch)) {
        ad__fail(t, AD_ERR_SHAPE, "%s: the batch dimensions of q %s, k %s and v %s do not broadcast", op, shp(vq, s1),
                 shp(vk, s2), shp(vv, s3));
        return ad__invalid(t);
    }
    /* the scores' shape: q's and k's batch dimensions, then [Tq, Tk] */
    memcpy(sshape, bqk, (size_t)nqk * sizeof *sshape);
    sshape[nqk] = tq;
    sshape[nqk + 1] = tk;
    if (vm) {
        bool ok = ad__broadcast_shape(vm->ndim, vm->shape, nqk + 2, sshape, &nm, ms) && nm == nqk + 2;
        for (int i = 0; ok && i < nm; i++) ok = ms[i] == sshape[i];
        if (!ok) {
            ad__fail(t, AD_ERR_SHAPE, "%s: mask %s does not broadcast to the scores %s", op, shp(vm, s1),
                     ad_shape_str(nqk + 2, sshape, s2, sizeof s2));
            return ad__invalid(t);
        }
    }
    if (!isfinite(scale)) {
        ad__fail(t, AD_ERR_ARG, "%s: scale %g is not finite", op, scale);
        return ad__invalid(t);
    }
    if (scale == 0.0) scale = d > 0 ? 1.0 / sqrt((double)d) : 1.0;

    ad_dtype dt = vq->dtype;
    ad_var s = ad_mul_scalar(ad_matmul_t(q, k, false, true), scale);
    ad_var keep = causal ? causal_keep(t, dt, tq, tk) : AD_NO_VAR, km = AD_NO_VAR;
    if (vm) {
        /* the mask's -inf (and NaN) entries exclude; the others are added (no -inf is ever formed) */
        km = ad__inrange(mask, dt == AD_F32 ? -FLT_MAX : -DBL_MAX, INFINITY);
        s = ad_add(s, ad_where(km, mask, ad_scalar(t, dt, 0.0)));
        keep = given(keep) ? ad_mul(keep, km) : km;
    }
    if (given(keep)) s = ad_where(keep, s, ad_scalar(t, dt, dt == AD_F32 ? -FLT_MAX / 2 : -DBL_MAX / 2));
    ad_var p = ad_softmax(s, -1);
    /* a row with no key kept: its uniform weights become 0 (the causal pattern alone never empties a row) */
    if (vm && tk > 0) p = ad_mul(p, vm->ndim > 0 || causal ? ad_max_axis(keep, -1, true) : keep);
    return ad_matmul(p, v);
}

/* ---- transposed and 1-D convolution ---- */

static bool conv_params_ok(ad_tape *t, const char *op, const ad_conv2d_params *p)
{
    if (!p) {
        ad__fail(t, AD_ERR_ARG, "%s: params is NULL", op);
        return false;
    }
    const int64_t big = INT32_MAX;
    if (p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 || p->dilation_w < 1 || p->pad_h < 0 ||
        p->pad_w < 0 || p->groups < 1 || p->stride_h > big || p->stride_w > big || p->dilation_h > big ||
        p->dilation_w > big || p->pad_h > big || p->pad_w > big || p->groups > big) {
        ad__fail(t, AD_ERR_ARG,
                 "%s: bad parameters: stride %lldx%lld, padding %lldx%lld, dilation %lldx%lld, groups %lld "
                 "(stride, dilation and groups must be >= 1, padding >= 0)",
                 op, (long long)p->stride_h, (long long)p->stride_w, (long long)p->pad_h, (long long)p->pad_w,
                 (long long)p->dilation_h, (long long)p->dilation_w, (long long)p->groups);
        return false;
    }
    return true;
}

/* conv_transpose2d: y = conv2d_grad_input(x, w), the adjoint of conv2d with weight w for an input of
** size OH x OW; VJP (the adjoint op's): gx = conv2d(gy, w), gw = conv2d_grad_weight(gy, x) */
ad_var ad_conv_transpose2d_ex(ad_var x, ad_var w, const ad_conv2d_params *p, int64_t out_pad_h, int64_t out_pad_w)
{
    static const char op[] = "ad_conv_transpose2d";
    ad_var xs[2] = {x, w};
    ad_tape *t;
    if (!ad__begin(op, 2, xs, &t)) return ad__invalid(t);
    if (!conv_params_ok(t, op, p)) return ad__invalid(t);
    const ad_tensor *vx = ad__val(x), *vw = ad__val(w);
    char s1[96], s2[96];
    if (out_pad_h < 0 || out_pad_w < 0 || out_pad_h >= p->stride_h || out_pad_w >= p->stride_w) {
        ad__fail(t, AD_ERR_ARG, "%s: output padding %lldx%lld must be >= 0 and below the stride %lldx%lld", op,
                 (long long)out_pad_h, (long long)out_pad_w, (long long)p->stride_h, (long long)p->stride_w);
        return ad__invalid(t);
    }
    if (vx->dtype != vw->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "%s: dtypes differ: %s and %s", op, ad_dtype_name(vx->dtype),
                 ad_dtype_name(vw->dtype));
        return ad__invalid(t);
    }
    if (vx->ndim != 4 || vw->ndim != 4 || vx->shape[1] != vw->shape[0] || vw->shape[0] % p->groups ||
        vw->shape[2] < 1 || vw->shape[3] < 1) {
        ad__fail(t, AD_ERR_SHAPE,
                 "%s: input %s and weight %s must be [N, Cin, H, W] and [Cin, Cout/groups, kh, kw] with Cin "
                 "divisible by %lld groups",
                 op, shp(vx, s1), shp(vw, s2), (long long)p->groups);
        return ad__invalid(t);
    }
    int64_t oh = (vx->shape[2] - 1) * p->stride_h - 2 * p->pad_h + p->dilation_h * (vw->shape[2] - 1) + out_pad_h + 1;
    int64_t ow = (vx->shape[3] - 1) * p->stride_w - 2 * p->pad_w + p->dilation_w * (vw->shape[3] - 1) + out_pad_w + 1;
    if (vx->shape[2] < 1 || vx->shape[3] < 1 || oh < 1 || ow < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s with weight %s and padding %lldx%lld gives no output (%lldx%lld)", op,
                 shp(vx, s1), shp(vw, s2), (long long)p->pad_h, (long long)p->pad_w, (long long)oh, (long long)ow);
        return ad__invalid(t);
    }
    return ad__conv2d_grad_input(x, w, oh, ow, p);
}

ad_var ad_conv_transpose2d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t output_padding,
                           int64_t dilation, int64_t groups)
{
    ad_conv2d_params p = {stride, stride, padding, padding, dilation, dilation, groups};
    return ad_conv_transpose2d_ex(x, w, &p, output_padding, output_padding);
}

/* conv1d: y[n, o, l] = sum_{c, j} w[o, c, j] x[n, c, l stride - padding + j dilation], a conv2d of
** height 1; VJP: the reshapes' and conv2d's */
ad_var ad_conv1d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t dilation, int64_t groups)
{
    static const char op[] = "ad_conv1d";
    ad_var xs[2] = {x, w};
    ad_tape *t;
    if (!ad__begin(op, 2, xs, &t)) return ad__invalid(t);
    ad_conv2d_params p = {1, stride, 0, padding, 1, dilation, groups};
    if (!conv_params_ok(t, op, &p)) return ad__invalid(t);
    const ad_tensor *vx = ad__val(x), *vw = ad__val(w);
    char s1[96], s2[96];
    if (vx->dtype != vw->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "%s: dtypes differ: %s and %s", op, ad_dtype_name(vx->dtype),
                 ad_dtype_name(vw->dtype));
        return ad__invalid(t);
    }
    if (vx->ndim != 3 || vw->ndim != 3 || vx->shape[1] % groups || vw->shape[0] % groups ||
        vw->shape[1] * groups != vx->shape[1]) {
        ad__fail(t, AD_ERR_SHAPE,
                 "%s: input %s and weight %s must be [N, C, L] and [O, C/groups, k] with C and O divisible by %lld "
                 "groups",
                 op, shp(vx, s1), shp(vw, s2), (long long)groups);
        return ad__invalid(t);
    }
    int64_t n = vx->shape[0], o = vw->shape[0], k = vw->shape[2], len = vx->shape[2];
    int64_t span = dilation * (k - 1) + 1;
    if (k < 1 || len + 2 * padding < span) {
        ad__fail(t, AD_ERR_SHAPE, "%s: kernel %s does not fit input %s with padding %lld and dilation %lld", op,
                 shp(vw, s2), shp(vx, s1), (long long)padding, (long long)dilation);
        return ad__invalid(t);
    }
    int64_t ol = (len + 2 * padding - span) / stride + 1;
    ad_var x4 = ad_reshape(x, 4, (const int64_t[]){n, vx->shape[1], 1, len});
    ad_var w4 = ad_reshape(w, 4, (const int64_t[]){o, vw->shape[1], 1, k});
    return ad_reshape(ad_conv2d_ex(x4, w4, &p), 3, (const int64_t[]){n, o, ol});
}

/* ---- group normalization ---- */

/* group_norm: x viewed as [N, G, (C/G) L], each row normalized (a layer norm over its last axis),
** then y = x^ gamma[c] + beta[c]; VJP: the composition's */
ad_var ad_group_norm(ad_var x, int64_t groups, ad_var gamma, ad_var beta, double eps)
{
    static const char op[] = "ad_group_norm";
    ad_tape *t;
    if (!ad__begin(op, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    char s1[96], s2[96];
    if (groups < 1 || !(eps >= 0.0) || !isfinite(eps)) {
        ad__fail(t, AD_ERR_ARG, "%s: %lld groups and eps %g (need groups >= 1, eps >= 0)", op, (long long)groups, eps);
        return ad__invalid(t);
    }
    if (v->ndim < 2 || v->shape[1] % groups) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s is not [N, C, ...] with C divisible by %lld groups", op, shp(v, s1),
                 (long long)groups);
        return ad__invalid(t);
    }
    int64_t c = v->shape[1], rest = 1;
    for (int i = 2; i < v->ndim; i++) rest *= v->shape[i];
    int64_t m = c / groups * rest;
    if (m < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s leaves each of the %lld groups empty", op, shp(v, s1),
                 (long long)groups);
        return ad__invalid(t);
    }
    int64_t cshape[AD_MAX_DIMS];
    for (int i = 0; i < v->ndim; i++) cshape[i] = i == 1 ? c : 1;
    ad_var aff[2] = {gamma, beta};
    for (int i = 0; i < 2; i++) {
        if (!given(aff[i])) continue;
        if (!ad__begin(op, 1, &aff[i], &t)) return ad__invalid(t);
        const ad_tensor *a = ad__val(aff[i]);
        if (a->dtype != v->dtype || a->ndim != 1 || a->shape[0] != c) {
            ad__fail(t, AD_ERR_SHAPE, "%s: %s %s %s does not fit input %s %s (want [%lld])", op,
                     i ? "beta" : "gamma", shp(a, s1), ad_dtype_name(a->dtype), shp(v, s2), ad_dtype_name(v->dtype),
                     (long long)c);
            return ad__invalid(t);
        }
    }
    ad_var xg = ad_reshape(x, 3, (const int64_t[]){v->shape[0], groups, m});
    ad_var y = ad_reshape(ad_layer_norm(xg, AD_NO_VAR, AD_NO_VAR, 1, eps), v->ndim, v->shape);
    if (given(gamma)) y = ad_mul(y, ad_reshape(gamma, v->ndim, cshape));
    if (given(beta)) y = ad_add(y, ad_reshape(beta, v->ndim, cshape));
    return y;
}

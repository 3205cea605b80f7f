/* ops_nn.c: network primitives: where/masking (an op), dropout, batch and layer normalization, embedding, flatten. */
#include "jvp.h"
#include "vjp.h"
#include "kernels.h"

#include <math.h>


static char *shp(const ad_tensor *x, char *buf) { return ad_shape_str(x->ndim, x->shape, buf, 96); }

/* An optional var: absent when it has no tape. */
static bool given(ad_var v) { return v.tape != NULL; }

/* ---- where ---- */

/* where: y = cond != 0 ? a : b, all three broadcast (cond is a mask: no gradient, any dtype);
** VJP: ga = sum_to(where(cond, gy, 0)), gb = sum_to(where(cond, 0, gy)) */
ad_var ad_where(ad_var cond, ad_var a, ad_var b)
{
    ad_var xs[3] = {cond, a, b};
    ad_tape *t;
    if (!ad__begin("ad_where", 3, xs, &t)) return ad__invalid(t);
    const ad_tensor *vc = ad__val(cond), *va = ad__val(a), *vb = ad__val(b);
    char s1[96], s2[96], s3[96];
    if (va->dtype != vb->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "ad_where: dtypes of a and b differ: %s and %s", ad_dtype_name(va->dtype),
                 ad_dtype_name(vb->dtype));
        return ad__invalid(t);
    }
    int64_t s_ab[AD_MAX_DIMS], shape[AD_MAX_DIMS];
    int n_ab, nd;
    if (!ad__broadcast_shape(va->ndim, va->shape, vb->ndim, vb->shape, &n_ab, s_ab) ||
        !ad__broadcast_shape(vc->ndim, vc->shape, n_ab, s_ab, &nd, shape)) {
        ad__fail(t, AD_ERR_SHAPE, "ad_where: shapes do not broadcast: cond %s, a %s, b %s", shp(vc, s1), shp(va, s2),
                 shp(vb, s3));
        return ad__invalid(t);
    }
    return ad__emit(t, AD_OP_WHERE, 3, xs, va->dtype, nd, shape, NULL);
}

#define WHERE_LOOP(T)                                                                                    \
    do {                                                                                                 \
        const T *pa = a->data, *pb = b->data;                                                            \
        T *py = y->data;                                                                                 \
        for (int64_t i = 0; i < y->size; i++) {                                                          \
            double cv = c->dtype == AD_F64 ? ((const double *)c->data)[off[0]]                           \
                                           : ((const float *)c->data)[off[0]];                           \
            py[i] = cv != 0 ? pa[off[1]] : pb[off[2]];                                                   \
            ad__odometer_next(y->ndim, y->shape, idx, 3, (const int64_t *const[]){sc, sa, sb}, off);      \
        }                                                                                                \
    } while (0)

ad_status ad__fwd_where(ad_tape *t, ad_node *n)
{
    const ad_tensor *c = ad__in(t, n, 0), *a = ad__in(t, n, 1), *b = ad__in(t, n, 2);
    ad_tensor *y = &n->value;
    int64_t sc[AD_MAX_DIMS], sa[AD_MAX_DIMS], sb[AD_MAX_DIMS], idx[AD_MAX_DIMS] = {0};
    int64_t off[3] = {0, 0, 0}; /* cond's, a's and b's */
    ad__bcast_strides(c, y->ndim, y->shape, sc);
    ad__bcast_strides(a, y->ndim, y->shape, sa);
    ad__bcast_strides(b, y->ndim, y->shape, sb);
    if (y->dtype == AD_F64)
        WHERE_LOOP(double);
    else
        WHERE_LOOP(float);
    return AD_OK;
}

VJP(where)
{
    ad_var zero = ad_scalar(t, ad__val(gy)->dtype, 0.0), cond = ad__inv(t, n, 0);
    for (int i = 1; i <= 2; i++) {
        if (!ad__needs(t, n, i)) continue;
        gx[i] = ad__unbroadcast(t, n, i, i == 1 ? ad_where(cond, gy, zero) : ad_where(cond, zero, gy));
    }
}
/* tangent: where(cond, ta, tb), a missing tangent as 0 */
ad_var ad__jvp_where(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)
{
    ad_var zero = ad_scalar(t, n->value.dtype, 0.0), cond = ad__inv(t, n, 0);
    ad_var w = ad_where(cond, ad__has(tx[1]) ? tx[1] : zero, ad__has(tx[2]) ? tx[2] : zero);
    return ad__tfit(t, n, w);
}

ad_var ad_masked_fill(ad_var x, ad_var mask, double value)
{
    if (!ad_ok(x)) return ad__invalid(x.tape ? x.tape : mask.tape);
    return ad_where(mask, ad_scalar(x.tape, ad__val(x)->dtype, value), x);
}

/* ---- dropout ---- */

/* dropout: y = x * m, m[i] = 0 with probability p, else 1 / (1 - p) (drawn from rng, a constant on
** the tape); identity when not training. VJP (through mul): gx = gy * m */
ad_var ad_dropout(ad_var x, double p, bool training, ad_rng *rng)
{
    ad_tape *t;
    if (!ad__begin("ad_dropout", 1, &x, &t)) return ad__invalid(t);
    if (!(p >= 0.0 && p <= 1.0)) {
        ad__fail(t, AD_ERR_ARG, "ad_dropout: probability %g is outside [0, 1]", p);
        return ad__invalid(t);
    }
    if (!training || p == 0.0) return x;
    if (!rng) {
        ad__fail(t, AD_ERR_ARG, "ad_dropout: rng is NULL while training");
        return ad__invalid(t);
    }
    const ad_tensor *v = ad__val(x);
    ad_var m = ad_full(t, v->dtype, v->ndim, v->shape, 0.0);
    if (!ad_ok(m)) return ad__invalid(t);
    ad_tensor *mv = &ad__node(t, m.id)->value;
    double keep = p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
    for (int64_t i = 0; i < mv->size; i++) {
        double u = ad_rng_uniform(rng);
        double val = u < p ? 0.0 : keep;
        if (mv->dtype == AD_F64)
            ((double *)mv->data)[i] = val;
        else
            ((float *)mv->data)[i] = (float)val;
    }
    return ad_mul(x, m);
}

/* ---- normalization ---- */

/* gamma/beta, when given, must be [c] with x's dtype. */
static bool affine_ok(ad_tape *t, const char *op, const char *what, ad_var v, const ad_tensor *x, int nd,
                      const int64_t *want)
{
    if (!given(v)) return true;
    if (!ad__begin(op, 1, &v, &t)) return false;
    const ad_tensor *vv = ad__val(v);
    char s1[96], s2[96], s3[96];
    bool ok = vv->dtype == x->dtype && vv->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = vv->shape[i] == want[i];
    if (!ok) {
        ad__fail(t, AD_ERR_SHAPE, "%s: %s %s %s does not fit input %s %s (want %s)", op, what, shp(vv, s1),
                 ad_dtype_name(vv->dtype), shp(x, s2), ad_dtype_name(x->dtype), ad_shape_str(nd, want, s3, sizeof s3));
        return false;
    }
    return true;
}

/* batch_norm (composed): with x viewed as [N, C, L] and statistics over N and L,
** y = (x - mean) / sqrt(var + eps) * gamma + beta, var biased; in eval mode mean and var are the
** running statistics (constants). The VJP is the composition's. */
ad_var ad_batch_norm(ad_var x, ad_var gamma, ad_var beta, ad_tensor *running_mean, ad_tensor *running_var,
                     bool training, double momentum, double eps)
{
    ad_tape *t;
    const char *op = "ad_batch_norm";
    if (!ad__begin(op, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    char s1[96];
    if (v->ndim < 2 || v->shape[1] < 1) {
        ad__fail(t, AD_ERR_SHAPE, "ad_batch_norm: input %s needs at least 2 dimensions [N, C, ...]", shp(v, s1));
        return ad__invalid(t);
    }
    int64_t nb = v->shape[0], c = v->shape[1], l = v->size / (nb * c > 0 ? nb * c : 1);
    if (!(eps >= 0.0) || !(momentum >= 0.0 && momentum <= 1.0)) {
        ad__fail(t, AD_ERR_ARG, "ad_batch_norm: eps %g must be >= 0 and momentum %g in [0, 1]", eps, momentum);
        return ad__invalid(t);
    }
    ad_tensor *rs[2] = {running_mean, running_var};
    for (int i = 0; i < 2; i++)
        if (rs[i] && rs[i]->size != c) {
            ad__fail(t, AD_ERR_SHAPE, "ad_batch_norm: running %s %s does not have %lld elements (the channels)",
                     i ? "var" : "mean", shp(rs[i], s1), (long long)c);
            return ad__invalid(t);
        }
    if (!training && (!running_mean || !running_var)) {
        ad__fail(t, AD_ERR_ARG, "ad_batch_norm: eval mode needs running_mean and running_var");
        return ad__invalid(t);
    }
    if (training && nb * l < 1) {
        ad__fail(t, AD_ERR_SHAPE, "ad_batch_norm: input %s is empty; training needs a batch", shp(v, s1));
        return ad__invalid(t);
    }
    if (!affine_ok(t, op, "gamma", gamma, v, 1, &c) || !affine_ok(t, op, "beta", beta, v, 1, &c))
        return ad__invalid(t);

    const int64_t s3[3] = {nb, c, l}, sc[3] = {1, c, 1};
    ad_var x3 = ad_reshape(x, 3, s3), mean, var;
    if (training) {
        mean = ad_mean_axis(ad_mean_axis(x3, 2, true), 0, true);
        ad_var xc = ad_sub(x3, mean);
        var = ad_mean_axis(ad_mean_axis(ad_square(xc), 2, true), 0, true);
        x3 = xc;
        const ad_tensor *mv = ad_value(mean), *vv = ad_value(var);
        if (mv && vv && running_mean && running_var && ad_tape_status(t) == AD_OK) {
            double m = (double)(nb * l), unbias = m > 1 ? m / (m - 1) : 1.0;
            for (int64_t k = 0; k < c; k++) {
                ad_tensor_set(running_mean, k,
                              (1 - momentum) * ad_tensor_get(running_mean, k) + momentum * ad_tensor_get(mv, k));
                ad_tensor_set(running_var, k,
                              (1 - momentum) * ad_tensor_get(running_var, k) + momentum * unbias * ad_tensor_get(vv, k));
            }
        }
    } else {
        ad_var rm = ad_full(t, v->dtype, 3, sc, 0.0), rv = ad_full(t, v->dtype, 3, sc, 0.0);
        if (!ad_ok(rm) || !ad_ok(rv)) return ad__invalid(t);
        ad_tensor *pm = &ad__node(t, rm.id)->value, *pv = &ad__node(t, rv.id)->value;
        for (int64_t k = 0; k < c; k++) {
            ad_tensor_set(pm, k, ad_tensor_get(running_mean, k));
            ad_tensor_set(pv, k, ad_tensor_get(running_var, k));
        }
        x3 = ad_sub(x3, rm);
        var = rv;
    }
    ad_var y = ad_mul(x3, ad_pow_scalar(ad_add_scalar(var, eps), -0.5));
    if (given(gamma)) y = ad_mul(y, ad_reshape(gamma, 3, sc));
    if (given(beta)) y = ad_add(y, ad_reshape(beta, 3, sc));
    return ad_reshape(y, v->ndim, v->shape);
}

/* layer_norm (composed): statistics over the last naxes axes of x,
** y = (x - mean) / sqrt(var + eps) * gamma + beta, var biased; gamma, beta shaped like those axes. */
ad_var ad_layer_norm(ad_var x, ad_var gamma, ad_var beta, int naxes, double eps)
{
    ad_tape *t;
    const char *op = "ad_layer_norm";
    if (!ad__begin(op, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    char s1[96];
    if (naxes < 1 || naxes > v->ndim || !(eps >= 0.0)) {
        ad__fail(t, AD_ERR_ARG, "ad_layer_norm: cannot normalize over the last %d axes of input %s (eps %g)", naxes,
                 shp(v, s1), eps);
        return ad__invalid(t);
    }
    const int64_t *ns = v->shape + (v->ndim - naxes);
    int64_t m = 1;
    for (int i = 0; i < naxes; i++) m *= ns[i];
    if (m < 1) {
        ad__fail(t, AD_ERR_SHAPE, "ad_layer_norm: input %s has empty normalized axes", shp(v, s1));
        return ad__invalid(t);
    }
    if (!affine_ok(t, op, "gamma", gamma, v, naxes, ns) || !affine_ok(t, op, "beta", beta, v, naxes, ns))
        return ad__invalid(t);
    const int64_t s2[2] = {v->size / m, m};
    ad_var x2 = ad_reshape(x, 2, s2);
    ad_var xc = ad_sub(x2, ad_mean_axis(x2, 1, true));
    ad_var var = ad_mean_axis(ad_square(xc), 1, true);
    ad_var y = ad_reshape(ad_mul(xc, ad_pow_scalar(ad_add_scalar(var, eps), -0.5)), v->ndim, v->shape);
    if (given(gamma)) y = ad_mul(y, gamma);
    if (given(beta)) y = ad_add(y, beta);
    return y;
}

/* ---- embedding and flatten ---- */

/* embedding: y[i, :] = weight[idx[i], :] for weight [V, D]; VJP (through index_select):
** gweight = index_add(gy, idx) (rows used twice get both gradients) */
ad_var ad_embedding(ad_var weight, int64_t n, const int64_t *idx)
{
    ad_tape *t;
    if (!ad__begin("ad_embedding", 1, &weight, &t)) return ad__invalid(t);
    const ad_tensor *w = ad__val(weight);
    char s1[96];
    if (w->ndim != 2) {
        ad__fail(t, AD_ERR_SHAPE, "ad_embedding: weight %s must be 2-D [vocabulary, dim]", shp(w, s1));
        return ad__invalid(t);
    }
    if (n < 0 || (n > 0 && !idx)) {
        ad__fail(t, AD_ERR_ARG, "ad_embedding: %s", n < 0 ? "negative index count" : "index list is NULL");
        return ad__invalid(t);
    }
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= w->shape[0]) {
            ad__fail(t, AD_ERR_INDEX, "ad_embedding: index %lld (position %lld) is outside the vocabulary [0, %lld)",
                     (long long)idx[i], (long long)i, (long long)w->shape[0]);
            return ad__invalid(t);
        }
    return ad_index_select(weight, 0, n, idx);
}

/* flatten: x with axes start..end (inclusive, negative from the end) merged into one; a reshape. */
ad_var ad_flatten(ad_var x, int start_axis, int end_axis)
{
    ad_tape *t;
    if (!ad__begin("ad_flatten", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    if (v->ndim == 0) return ad_reshape(x, 1, (const int64_t[]){1});
    int s, e;
    if (!ad__axis(t, "ad_flatten", start_axis, v->ndim, &s) || !ad__axis(t, "ad_flatten", end_axis, v->ndim, &e))
        return ad__invalid(t);
    if (s > e) {
        ad__fail(t, AD_ERR_AXIS, "ad_flatten: start axis %d comes after end axis %d", start_axis, end_axis);
        return ad__invalid(t);
    }
    int64_t shape[AD_MAX_DIMS], merged = 1;
    int nd = 0;
    for (int i = 0; i < s; i++) shape[nd++] = v->shape[i];
    for (int i = s; i <= e; i++) merged *= v->shape[i];
    shape[nd++] = merged;
    for (int i = e + 1; i < v->ndim; i++) shape[nd++] = v->shape[i];
    return ad_reshape(x, nd, shape);
}

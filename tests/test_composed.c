/* test_composed.c: attention, transposed and 1-D convolution, group normalization: values against direct loops, gradchecks. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define GC(fn, ctx, n, ins)                                                                              \
    do {                                                                                                 \
        ad_check_report rep_;                                                                            \
        ad_status st_ = ad_gradcheck(fn, ctx, n, (const ad_tensor *const *)(ins), NULL, &rep_);          \
        if (st_ != AD_OK) ad_check_report_print(&rep_, stderr);                                          \
        ck_assert_msg(st_ == AD_OK, "gradcheck of %s failed: %s (input %d, element %lld: %g vs %g)", #fn, \
                      rep_.message, rep_.input, (long long)rep_.element, rep_.analytic, rep_.numeric);    \
        ck_assert_int_gt(rep_.checked, 0);                                                               \
    } while (0)

#define GGC(fn, ctx, n, ins)                                                                             \
    do {                                                                                                 \
        ad_check_report rep_;                                                                            \
        ad_status st_ = ad_gradgradcheck(fn, ctx, n, (const ad_tensor *const *)(ins), NULL, &rep_);      \
        if (st_ != AD_OK) ad_check_report_print(&rep_, stderr);                                          \
        ck_assert_msg(st_ == AD_OK, "gradgradcheck of %s failed: %s (input %d, element %lld: %g vs %g)", \
                      #fn, rep_.message, rep_.input, (long long)rep_.element, rep_.analytic, rep_.numeric); \
    } while (0)

static ad_tensor *rnd(int ndim, const int64_t *shape, uint64_t seed) { return tu_rand(AD_F64, ndim, shape, -1, 1, seed); }

/* Flat offset into a tensor of shape `shape` (ndim nd) of the index `idx` of a larger broadcast
** shape of ndim bnd (dimensions of size 1 broadcast, missing leading ones too). */
static int64_t bcast_off(const ad_tensor *x, int bnd, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < x->ndim; i++) {
        int64_t j = idx[bnd - x->ndim + i];
        off = off * x->shape[i] + (x->shape[i] == 1 ? 0 : j);
    }
    return off;
}

/* ---- attention ---- */

typedef struct att_case {
    int nq, nk, nv, nm;        /* ndims (nm 0: no mask) */
    int64_t q[4], k[4], v[4], m[4];
    bool causal;
    double scale;
    int mask_kind;             /* 0: random finite, 1: some -inf, 2: a fully excluded row */
} att_case;

static const att_case att_cases[] = {
    {3, 3, 3, 0, {2, 3, 4}, {2, 3, 4}, {2, 3, 4}, {0}, false, 0, 0},                   /* plain */
    {3, 3, 3, 0, {2, 4, 3}, {2, 4, 3}, {2, 4, 2}, {0}, true, 0, 0},                    /* causal */
    {4, 4, 4, 4, {2, 1, 3, 4}, {1, 2, 5, 4}, {1, 2, 5, 3}, {2, 1, 1, 5}, false, 0, 0}, /* broadcast batch, padding mask */
    {3, 3, 3, 0, {1, 1, 2}, {1, 1, 2}, {1, 1, 2}, {0}, true, 0, 0},                    /* T = 1 */
    {2, 2, 2, 0, {1, 1}, {1, 1}, {1, 1}, {0}, false, 0.7, 0},                          /* everything size 1 */
    {3, 3, 3, 2, {2, 2, 3}, {2, 4, 3}, {2, 4, 2}, {2, 4}, true, 0, 1},                 /* Tq < Tk, causal, -inf mask */
    {3, 3, 3, 2, {2, 4, 3}, {2, 2, 3}, {2, 2, 2}, {4, 2}, true, 0, 0},                 /* Tq > Tk, causal */
    {3, 3, 3, 2, {2, 3, 2}, {2, 4, 2}, {2, 4, 3}, {3, 4}, false, 0, 2},                /* a fully excluded row */
    {2, 3, 3, 1, {3, 2}, {2, 4, 2}, {2, 4, 2}, {4}, false, 0, 1},                      /* q unbatched, mask [Tk] */
};
#define NATT ((int)(sizeof att_cases / sizeof att_cases[0]))

/* The mask tensor of case c (caller-owned), or NULL. */
static ad_tensor *att_mask(const att_case *c, uint64_t seed)
{
    if (!c->nm) return NULL;
    ad_tensor *m = rnd(c->nm, c->m, seed);
    if (c->mask_kind == 1)
        for (int64_t i = 0; i < m->size; i += 3) ad_tensor_set(m, i, -INFINITY);
    if (c->mask_kind == 2) /* row 1 fully excluded, row 0 partly */
        for (int64_t j = 0; j < c->m[c->nm - 1]; j++) {
            ad_tensor_set(m, c->m[c->nm - 1] + j, -INFINITY);
            if (j % 2) ad_tensor_set(m, j, -INFINITY);
        }
    return m;
}

typedef struct att_ctx {
    const att_case *c;
    const ad_tensor *mask; /* a constant; NULL: none */
    bool mask_input;       /* the mask is inputs[3] instead */
} att_ctx;

static ad_var f_att(ad_tape *t, const ad_var *in, void *p)
{
    const att_ctx *a = p;
    ad_var m = a->mask_input ? in[3] : a->mask ? ad_const(t, a->mask) : AD_NO_VAR;
    return ad_attention(in[0], in[1], in[2], m, a->c->causal, a->c->scale);
}

/* The definition, by loops: y[b, i] = sum_j p_ij v[b, j], p = softmax over kept j of scale q.k + mask. */
static void naive_att(const att_case *c, const ad_tensor *q, const ad_tensor *k, const ad_tensor *v,
                      const ad_tensor *m, const ad_tensor *y)
{
    int nd = y->ndim;
    int64_t tq = y->shape[nd - 2], dv = y->shape[nd - 1], tk = k->shape[k->ndim - 2], d = q->shape[q->ndim - 1];
    double scale = c->scale ? c->scale : 1.0 / sqrt((double)d);
    int64_t nbatch = y->size / (tq * dv > 0 ? tq * dv : 1), idx[8];
    double *s = malloc((size_t)(tk + 1) * sizeof *s);
    for (int64_t b = 0; b < nbatch; b++)
        for (int64_t i = 0; i < tq; i++) {
            /* the batch index of b */
            int64_t r = b;
            for (int a = nd - 3; a >= 0; a--) {
                idx[a] = r % y->shape[a];
                r /= y->shape[a];
            }
            idx[nd - 2] = i;
            double mx = -INFINITY;
            for (int64_t j = 0; j < tk; j++) {
                double dot = 0;
                idx[nd - 1] = 0;
                for (int64_t e = 0; e < d; e++) {
                    int64_t iq[8], ik[8];
                    memcpy(iq, idx, sizeof iq);
                    memcpy(ik, idx, sizeof ik);
                    iq[nd - 1] = e;
                    ik[nd - 2] = j;
                    ik[nd - 1] = e;
                    dot += ad_tensor_get(q, bcast_off(q, nd, iq)) * ad_tensor_get(k, bcast_off(k, nd, ik));
                }
                s[j] = scale * dot;
                if (m) {
                    int64_t im[8];
                    memcpy(im, idx, sizeof im);
                    im[nd - 1] = j;
                    s[j] += ad_tensor_get(m, bcast_off(m, nd, im));
                }
                if (c->causal && j > i) s[j] = -INFINITY;
                if (s[j] > mx) mx = s[j];
            }
            double z = 0;
            for (int64_t j = 0; j < tk; j++) z += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
            for (int64_t e = 0; e < dv; e++) {
                double acc = 0;
                for (int64_t j = 0; j < tk; j++) {
                    if (s[j] == -INFINITY) continue;
                    int64_t iv[8];
                    memcpy(iv, idx, sizeof iv);
                    iv[nd - 2] = j;
                    iv[nd - 1] = e;
                    acc += exp(s[j] - mx) / z * ad_tensor_get(v, bcast_off(v, nd, iv));
                }
                idx[nd - 1] = e;
                int64_t off = 0;
                for (int a = 0; a < nd; a++) off = off * y->shape[a] + idx[a];
                TU_ASSERT_CLOSE(ad_tensor_get(y, off), acc, 1e-12, 1e-10);
            }
        }
    free(s);
}

START_TEST(attention_matches_the_definition)
{
    const att_case *c = &att_cases[_i];
    ad_tensor *q = rnd(c->nq, c->q, 1 + _i), *k = rnd(c->nk, c->k, 101 + _i), *v = rnd(c->nv, c->v, 201 + _i);
    ad_tensor *m = att_mask(c, 301 + _i);
    ad_tape *t = ad_tape_new();
    ad_var y = ad_attention(ad_const(t, q), ad_const(t, k), ad_const(t, v), m ? ad_const(t, m) : AD_NO_VAR, c->causal,
                            c->scale);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    naive_att(c, q, k, v, m, ad_value(y));
    for (int64_t i = 0; i < ad_value(y)->size; i++) ck_assert(isfinite(ad_tensor_get(ad_value(y), i)));
    ad_tape_free(t);
    ad_tensor_free(q);
    ad_tensor_free(k);
    ad_tensor_free(v);
    ad_tensor_free(m);
}
END_TEST

START_TEST(attention_gradcheck)
{
    const att_case *c = &att_cases[_i];
    ad_tensor *in[4] = {rnd(c->nq, c->q, 11 + _i), rnd(c->nk, c->k, 111 + _i), rnd(c->nv, c->v, 211 + _i), NULL};
    ad_tensor *m = att_mask(c, 311 + _i);
    att_ctx a = {c, m, false};
    GC(f_att, &a, 3, in);
    if (!tu_quick() || _i < 3) GGC(f_att, &a, 3, in);
    /* a finite mask as an input: a learned additive bias gets its gradient too */
    if (m && c->mask_kind == 0) {
        in[3] = m;
        a.mask_input = true;
        GC(f_att, &a, 4, in);
        if (!tu_quick()) GGC(f_att, &a, 4, in);
    }
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
    ad_tensor_free(m);
}
END_TEST

/* The same numbers as the explicit composition softmax(q k^T / sqrt(d)) v written with engine ops. */
START_TEST(attention_equals_explicit_composition)
{
    const int64_t sq[3] = {3, 5, 4}, sv[3] = {3, 5, 6};
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *q = tu_rand(dt ? AD_F64 : AD_F32, 3, sq, -2, 2, 1), *k = tu_rand(dt ? AD_F64 : AD_F32, 3, sq, -2, 2, 2);
        ad_tensor *v = tu_rand(dt ? AD_F64 : AD_F32, 3, sv, -2, 2, 3);
        ad_tape *t = ad_tape_new();
        ad_var vq = ad_leaf(t, q), vk = ad_leaf(t, k), vv = ad_leaf(t, v);
        ad_var y1 = ad_attention(vq, vk, vv, AD_NO_VAR, false, 0);
        ad_var y2 = ad_matmul(ad_softmax(ad_mul_scalar(ad_matmul(vq, ad_transpose(vk, 1, 2)), 1 / sqrt(4.0)), -1), vv);
        ck_assert_msg(ad_ok(y1) && ad_ok(y2), "%s", ad_tape_error(t));
        double tol = dt ? 1e-14 : 1e-6;
        for (int64_t i = 0; i < ad_value(y1)->size; i++)
            TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y1), i), ad_tensor_get(ad_value(y2), i), tol, tol);
        /* and the same gradients of a weighted sum */
        ad_tensor *r = tu_rand(dt ? AD_F64 : AD_F32, 3, sv, -1, 1, 4);
        ad_var g1[3], g2[3], xs[3] = {vq, vk, vv};
        ck_assert_int_eq(ad_gradients(ad_sum(ad_mul(y1, ad_const(t, r))), 3, xs, g1, 0), AD_OK);
        ck_assert_int_eq(ad_gradients(ad_sum(ad_mul(y2, ad_const(t, r))), 3, xs, g2, 0), AD_OK);
        for (int j = 0; j < 3; j++)
            for (int64_t i = 0; i < ad_value(g1[j])->size; i++)
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(g1[j]), i), ad_tensor_get(ad_value(g2[j]), i), tol, tol);
        ad_tape_free(t);
        ad_tensor_free(q);
        ad_tensor_free(k);
        ad_tensor_free(v);
        ad_tensor_free(r);
    }
}
END_TEST

/* A fully excluded row gives 0, and no NaN reaches any gradient; rows with keys are unaffected. */
START_TEST(attention_fully_masked_rows)
{
    const int64_t s[3] = {1, 2, 3};
    ad_tensor *q = rnd(3, s, 1), *k = rnd(3, s, 2), *v = rnd(3, s, 3);
    double mv[4] = {0, -INFINITY, -INFINITY, -INFINITY}; /* query 0 sees key 0; query 1 sees nothing */
    ad_tensor *m = tu_f64(2, (const int64_t[]){2, 2}, mv);
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *qq = dt ? ad_tensor_clone(q) : tu_to_f32(q), *kk = dt ? ad_tensor_clone(k) : tu_to_f32(k);
        ad_tensor *vv = dt ? ad_tensor_clone(v) : tu_to_f32(v), *mm = dt ? ad_tensor_clone(m) : tu_to_f32(m);
        ad_tape *t = ad_tape_new();
        ad_tape_set_anomaly_detection(t, true);
        ad_var xq = ad_leaf(t, qq), xk = ad_leaf(t, kk), xv = ad_leaf(t, vv);
        ad_var y = ad_attention(xq, xk, xv, ad_leaf(t, mm), true, 0);
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        const ad_tensor *yv = ad_value(y);
        for (int e = 0; e < 3; e++) {
            TU_ASSERT_CLOSE(ad_tensor_get(yv, e), ad_tensor_get(vv, e), 1e-6, 0); /* one key: v[0] */
            ck_assert(ad_tensor_get(yv, 3 + e) == 0.0);
        }
        ck_assert_int_eq(ad_backward(ad_sum(ad_mul(y, y)), NULL, 0), AD_OK);
        const ad_tensor *gs[3] = {ad_grad(xq), ad_grad(xk), ad_grad(xv)};
        for (int j = 0; j < 3; j++)
            for (int64_t i = 0; i < gs[j]->size; i++) ck_assert(isfinite(ad_tensor_get(gs[j], i)));
        for (int e = 0; e < 3; e++) ck_assert(ad_tensor_get(gs[0], 3 + e) == 0.0); /* query 1: no gradient */
        ad_tape_free(t);
        ad_tensor_free(qq);
        ad_tensor_free(kk);
        ad_tensor_free(vv);
        ad_tensor_free(mm);
    }
    ad_tensor_free(q);
    ad_tensor_free(k);
    ad_tensor_free(v);
    ad_tensor_free(m);
}
END_TEST

/* Scores of 1e4 and more: the softmax's max shift keeps everything finite (one key wins). */
START_TEST(attention_large_scores_are_stable)
{
    double qv[2] = {100, 0}, kv[6] = {100, 0, 99, 0, -100, 0}, vv[3] = {1, 2, 3};
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *q = ad_tensor_from(AD_F64, AD_SHAPE(1, 2), qv), *k = ad_tensor_from(AD_F64, AD_SHAPE(3, 2), kv);
        ad_tensor *v = ad_tensor_from(AD_F64, AD_SHAPE(3, 1), vv);
        ad_tensor *q2 = dt ? ad_tensor_clone(q) : tu_to_f32(q), *k2 = dt ? ad_tensor_clone(k) : tu_to_f32(k);
        ad_tensor *v2 = dt ? ad_tensor_clone(v) : tu_to_f32(v);
        ad_tape *t = ad_tape_new();
        ad_var xq = ad_leaf(t, q2);
        ad_var y = ad_attention(xq, ad_leaf(t, k2), ad_leaf(t, v2), AD_NO_VAR, false, 1.0);
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        TU_ASSERT_CLOSE(ad_item(y), 1.0, 1e-6, 0); /* scores 1e4, 9900, -1e4 */
        ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        for (int i = 0; i < 2; i++) ck_assert(isfinite(ad_tensor_get(ad_grad(xq), i)));
        ad_tape_free(t);
        ad_tensor_free(q);
        ad_tensor_free(k);
        ad_tensor_free(v);
        ad_tensor_free(q2);
        ad_tensor_free(k2);
        ad_tensor_free(v2);
    }
}
END_TEST

START_TEST(attention_empty_dims)
{
    ad_tape *t = ad_tape_new();
    /* an empty batch */
    ad_var q = ad_full(t, AD_F64, 3, (const int64_t[]){0, 3, 2}, 1.0), v = ad_full(t, AD_F64, 3, (const int64_t[]){0, 3, 4}, 1.0);
    ad_var y = ad_attention(q, q, v, AD_NO_VAR, true, 0);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 3, (const int64_t[]){0, 3, 4});
    /* no keys at all: every query's output is 0 */
    ad_var q1 = ad_full(t, AD_F64, 2, (const int64_t[]){2, 3}, 1.0);
    ad_var k0 = ad_full(t, AD_F64, 2, (const int64_t[]){0, 3}, 1.0), v0 = ad_full(t, AD_F64, 2, (const int64_t[]){0, 4}, 1.0);
    y = ad_attention(q1, k0, v0, AD_NO_VAR, false, 0);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 2, (const int64_t[]){2, 4});
    for (int i = 0; i < 8; i++) ck_assert(ad_tensor_get(ad_value(y), i) == 0.0);
    ad_tape_free(t);
}
END_TEST

START_TEST(attention_errors)
{
    ad_tape *t = ad_tape_new();
    ad_var q = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 4}, 1.0);
    ad_var k5 = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 5}, 1.0);
    ck_assert(!ad_ok(ad_attention(q, k5, q, AD_NO_VAR, false, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_attention"));
    ad_tape_reset(t);
    q = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 4}, 1.0);
    ad_var m = ad_full(t, AD_F64, 2, (const int64_t[]){3, 2}, 0.0);
    ck_assert(!ad_ok(ad_attention(q, q, q, m, false, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "mask"));
    ad_tape_reset(t);
    q = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 4}, 1.0);
    ad_var q32 = ad_full(t, AD_F32, 3, (const int64_t[]){2, 3, 4}, 1.0);
    ck_assert(!ad_ok(ad_attention(q, q32, q, AD_NO_VAR, false, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_DTYPE);
    ad_tape_reset(t);
    q = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 4}, 1.0);
    ck_assert(!ad_ok(ad_attention(q, q, q, AD_NO_VAR, false, INFINITY)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    ad_var x1 = ad_full(t, AD_F64, 1, (const int64_t[]){4}, 1.0);
    ck_assert(!ad_ok(ad_attention(x1, x1, x1, AD_NO_VAR, false, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    /* a batch that does not broadcast */
    ad_var a = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 4}, 1.0), b = ad_full(t, AD_F64, 3, (const int64_t[]){3, 3, 4}, 1.0);
    ck_assert(!ad_ok(ad_attention(a, b, b, AD_NO_VAR, false, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_free(t);
}
END_TEST

/* ---- transposed convolution ---- */

typedef struct ct_case {
    int64_t n, cin, h, w, cout, kh, kw;
    ad_conv2d_params p;
    int64_t oph, opw;
} ct_case;

static const ct_case ct_cases[] = {
    {2, 3, 3, 3, 2, 3, 3, {1, 1, 0, 0, 1, 1, 1}, 0, 0}, /* plain */
    {1, 2, 3, 4, 3, 3, 3, {2, 2, 1, 1, 1, 1, 1}, 1, 1}, /* stride 2, padding, output padding */
    {1, 4, 3, 3, 4, 2, 2, {2, 1, 0, 1, 1, 2, 2}, 1, 0}, /* groups 2, dilation, asymmetric */
    {2, 2, 1, 1, 1, 1, 1, {1, 1, 0, 0, 1, 1, 1}, 0, 0}, /* 1x1 everything */
};
#define NCT ((int)(sizeof ct_cases / sizeof ct_cases[0]))

static ad_var f_ct(ad_tape *t, const ad_var *in, void *ctx)
{
    const ct_case *c = ctx;
    return ad_conv_transpose2d_ex(in[0], in[1], &c->p, c->oph, c->opw);
}

START_TEST(conv_transpose2d_values_and_gradients)
{
    const ct_case *c = &ct_cases[_i];
    const ad_conv2d_params *p = &c->p;
    int64_t g = p->groups, cog = c->cout / g, cig = c->cin / g;
    ad_tensor *x = rnd(4, (const int64_t[]){c->n, c->cin, c->h, c->w}, 1 + _i);
    ad_tensor *w = rnd(4, (const int64_t[]){c->cin, cog, c->kh, c->kw}, 51 + _i);
    int64_t oh = (c->h - 1) * p->stride_h - 2 * p->pad_h + p->dilation_h * (c->kh - 1) + c->oph + 1;
    int64_t ow = (c->w - 1) * p->stride_w - 2 * p->pad_w + p->dilation_w * (c->kw - 1) + c->opw + 1;
    /* the definition: every input pixel scatters its kernel-weighted value */
    double *want = calloc((size_t)(c->n * c->cout * oh * ow), sizeof *want);
    for (int64_t b = 0; b < c->n; b++)
        for (int64_t ci = 0; ci < c->cin; ci++)
            for (int64_t iy = 0; iy < c->h; iy++)
                for (int64_t ix = 0; ix < c->w; ix++)
                    for (int64_t co = 0; co < cog; co++)
                        for (int64_t i = 0; i < c->kh; i++)
                            for (int64_t j = 0; j < c->kw; j++) {
                                int64_t oy = iy * p->stride_h - p->pad_h + i * p->dilation_h;
                                int64_t ox = ix * p->stride_w - p->pad_w + j * p->dilation_w;
                                if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
                                int64_t o = ci / cig * cog + co;
                                want[((b * c->cout + o) * oh + oy) * ow + ox] +=
                                    ad_tensor_get(x, ((b * c->cin + ci) * c->h + iy) * c->w + ix) *
                                    ad_tensor_get(w, ((ci * cog + co) * c->kh + i) * c->kw + j);
                            }
    ad_tape *t = ad_tape_new();
    ad_var y = f_ct(t, (ad_var[]){ad_const(t, x), ad_const(t, w)}, (void *)c);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 4, (const int64_t[]){c->n, c->cout, oh, ow});
    tu_assert_values(ad_value(y), want, 1e-12, 1e-12);
    ad_tape_free(t);
    free(want);
    ad_tensor *in[2] = {x, w};
    GC(f_ct, (void *)c, 2, in);
    GGC(f_ct, (void *)c, 2, in);
    ad_tensor_free(x);
    ad_tensor_free(w);
}
END_TEST

START_TEST(conv_transpose2d_errors)
{
    ad_tape *t = ad_tape_new();
    ad_var x = ad_full(t, AD_F64, 4, (const int64_t[]){1, 2, 3, 3}, 1.0);
    ad_var w = ad_full(t, AD_F64, 4, (const int64_t[]){2, 1, 3, 3}, 1.0);
    ck_assert(!ad_ok(ad_conv_transpose2d(x, w, 1, 0, 1, 1, 1))); /* output padding must be below the stride */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_conv_transpose2d"));
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 4, (const int64_t[]){1, 3, 3, 3}, 1.0);
    w = ad_full(t, AD_F64, 4, (const int64_t[]){2, 1, 3, 3}, 1.0);
    ck_assert(!ad_ok(ad_conv_transpose2d(x, w, 1, 0, 0, 1, 1))); /* Cin 3 vs 2 */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 4, (const int64_t[]){1, 2, 1, 1}, 1.0);
    w = ad_full(t, AD_F64, 4, (const int64_t[]){2, 1, 1, 1}, 1.0);
    ck_assert(!ad_ok(ad_conv_transpose2d(x, w, 1, 1, 0, 1, 1))); /* padding eats the output */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 4, (const int64_t[]){1, 2, 1, 1}, 1.0);
    ck_assert(!ad_ok(ad_conv_transpose2d_ex(x, x, NULL, 0, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
}
END_TEST

/* ---- 1-D convolution ---- */

typedef struct c1_case {
    int64_t n, c, l, o, k, stride, pad, dil, groups;
} c1_case;

static const c1_case c1_cases[] = {
    {2, 3, 7, 4, 3, 1, 0, 1, 1}, {1, 2, 8, 2, 3, 2, 1, 1, 1}, {2, 4, 9, 6, 2, 1, 2, 3, 2},
    {1, 1, 1, 1, 1, 1, 0, 1, 1}, {3, 2, 5, 2, 5, 1, 0, 1, 2},
};
#define NC1 ((int)(sizeof c1_cases / sizeof c1_cases[0]))

static ad_var f_c1(ad_tape *t, const ad_var *in, void *ctx)
{
    const c1_case *c = ctx;
    return ad_conv1d(in[0], in[1], c->stride, c->pad, c->dil, c->groups);
}

START_TEST(conv1d_values_and_gradients)
{
    const c1_case *c = &c1_cases[_i];
    int64_t cg = c->c / c->groups, og = c->o / c->groups;
    ad_tensor *x = rnd(3, (const int64_t[]){c->n, c->c, c->l}, 7 + _i), *w = rnd(3, (const int64_t[]){c->o, cg, c->k}, 70 + _i);
    int64_t ol = (c->l + 2 * c->pad - c->dil * (c->k - 1) - 1) / c->stride + 1;
    ad_tape *t = ad_tape_new();
    ad_var y = f_c1(t, (ad_var[]){ad_const(t, x), ad_const(t, w)}, (void *)c);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 3, (const int64_t[]){c->n, c->o, ol});
    for (int64_t b = 0; b < c->n; b++)
        for (int64_t o = 0; o < c->o; o++)
            for (int64_t l = 0; l < ol; l++) {
                double s = 0;
                for (int64_t ci = 0; ci < cg; ci++)
                    for (int64_t j = 0; j < c->k; j++) {
                        int64_t il = l * c->stride - c->pad + j * c->dil;
                        if (il < 0 || il >= c->l) continue;
                        s += ad_tensor_get(w, (o * cg + ci) * c->k + j) *
                             ad_tensor_get(x, (b * c->c + o / og * cg + ci) * c->l + il);
                    }
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), (b * c->o + o) * ol + l), s, 1e-12, 1e-12);
            }
    ad_tape_free(t);
    ad_tensor *in[2] = {x, w};
    GC(f_c1, (void *)c, 2, in);
    GGC(f_c1, (void *)c, 2, in);
    ad_tensor_free(x);
    ad_tensor_free(w);
}
END_TEST

START_TEST(conv1d_errors)
{
    ad_tape *t = ad_tape_new();
    ad_var x = ad_full(t, AD_F64, 3, (const int64_t[]){1, 2, 3}, 1.0);
    ad_var w = ad_full(t, AD_F64, 3, (const int64_t[]){2, 2, 5}, 1.0);
    ck_assert(!ad_ok(ad_conv1d(x, w, 1, 0, 1, 1))); /* kernel longer than the input */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_conv1d"));
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 3, (const int64_t[]){1, 2, 3}, 1.0);
    ck_assert(!ad_ok(ad_conv1d(x, x, 0, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 4, (const int64_t[]){1, 2, 3, 3}, 1.0);
    ck_assert(!ad_ok(ad_conv1d(x, x, 1, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_free(t);
}
END_TEST

/* ---- group normalization ---- */

typedef struct gn_case {
    int nd;
    int64_t shape[4];
    int64_t groups;
    bool affine;
} gn_case;

static const gn_case gn_cases[] = {
    {4, {2, 4, 3, 2}, 2, true},  /* two groups of two channels */
    {4, {2, 4, 2, 2}, 4, true},  /* one channel per group: instance normalization */
    {3, {3, 6, 2}, 1, false},    /* one group: layer normalization over [C, L] */
    {2, {3, 4}, 2, true},        /* no spatial axes */
    {4, {1, 2, 1, 1}, 1, true},  /* size-1 batch and spatial dims */
};
#define NGN ((int)(sizeof gn_cases / sizeof gn_cases[0]))

static ad_var f_gn(ad_tape *t, const ad_var *in, void *ctx)
{
    const gn_case *c = ctx;
    return ad_group_norm(in[0], c->groups, c->affine ? in[1] : AD_NO_VAR, c->affine ? in[2] : AD_NO_VAR, 1e-5);
}

START_TEST(group_norm_values_and_gradients)
{
    const gn_case *c = &gn_cases[_i];
    ad_tensor *x = rnd(c->nd, c->shape, 9 + _i);
    ad_tensor *gm = rnd(1, &c->shape[1], 90 + _i), *bt = rnd(1, &c->shape[1], 190 + _i);
    int64_t n = c->shape[0], ch = c->shape[1], rest = x->size / (n * ch), cg = ch / c->groups;
    ad_tape *t = ad_tape_new();
    ad_var y = f_gn(t, (ad_var[]){ad_const(t, x), ad_const(t, gm), ad_const(t, bt)}, (void *)c);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    for (int64_t b = 0; b < n; b++)
        for (int64_t g = 0; g < c->groups; g++) {
            int64_t base = (b * ch + g * cg) * rest, m = cg * rest;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < m; i++) mean += ad_tensor_get(x, base + i) / (double)m;
            for (int64_t i = 0; i < m; i++) var += pow(ad_tensor_get(x, base + i) - mean, 2) / (double)m;
            for (int64_t i = 0; i < m; i++) {
                int64_t chn = g * cg + i / rest;
                double want = (ad_tensor_get(x, base + i) - mean) / sqrt(var + 1e-5);
                if (c->affine) want = want * ad_tensor_get(gm, chn) + ad_tensor_get(bt, chn);
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), base + i), want, 1e-12, 1e-10);
            }
        }
    ad_tape_free(t);
    ad_tensor *in[3] = {x, gm, bt};
    GC(f_gn, (void *)c, c->affine ? 3 : 1, in);
    GGC(f_gn, (void *)c, c->affine ? 3 : 1, in);
    ad_tensor_free(x);
    ad_tensor_free(gm);
    ad_tensor_free(bt);
}
END_TEST

START_TEST(group_norm_errors)
{
    ad_tape *t = ad_tape_new();
    ad_var x = ad_full(t, AD_F64, 3, (const int64_t[]){2, 6, 3}, 1.0);
    ck_assert(!ad_ok(ad_group_norm(x, 4, AD_NO_VAR, AD_NO_VAR, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_group_norm"));
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 3, (const int64_t[]){2, 6, 3}, 1.0);
    ck_assert(!ad_ok(ad_group_norm(x, 0, AD_NO_VAR, AD_NO_VAR, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 3, (const int64_t[]){2, 6, 3}, 1.0);
    ad_var g = ad_full(t, AD_F64, 1, (const int64_t[]){3}, 1.0);
    ck_assert(!ad_ok(ad_group_norm(x, 3, g, AD_NO_VAR, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    x = ad_full(t, AD_F64, 3, (const int64_t[]){2, 6, 0}, 1.0);
    ck_assert(!ad_ok(ad_group_norm(x, 3, AD_NO_VAR, AD_NO_VAR, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_free(t);
}
END_TEST

static Suite *composed_suite(void)
{
    Suite *s = suite_create("composed");
    TCase *a = tcase_create("attention");
    tcase_set_timeout(a, 600);
    tcase_add_loop_test(a, attention_matches_the_definition, 0, NATT);
    tcase_add_loop_test(a, attention_gradcheck, 0, NATT);
    tcase_add_test(a, attention_equals_explicit_composition);
    tcase_add_test(a, attention_fully_masked_rows);
    tcase_add_test(a, attention_large_scores_are_stable);
    tcase_add_test(a, attention_empty_dims);
    tcase_add_test(a, attention_errors);
    suite_add_tcase(s, a);
    TCase *c = tcase_create("convolution");
    tcase_set_timeout(c, 600);
    tcase_add_loop_test(c, conv_transpose2d_values_and_gradients, 0, NCT);
    tcase_add_test(c, conv_transpose2d_errors);
    tcase_add_loop_test(c, conv1d_values_and_gradients, 0, NC1);
    tcase_add_test(c, conv1d_errors);
    suite_add_tcase(s, c);
    TCase *g = tcase_create("group_norm");
    tcase_set_timeout(g, 600);
    tcase_add_loop_test(g, group_norm_values_and_gradients, 0, NGN);
    tcase_add_test(g, group_norm_errors);
    suite_add_tcase(s, g);
    return s;
}

int main(void) { return tu_run(composed_suite()); }

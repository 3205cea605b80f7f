/* ops_conv.c: 2-D convolution (im2col + GEMM) and max/average pooling, NCHW, with their adjoint ops. */
#include "forward.h"
#include "ad_nnops.h"
#include "backward.h"
#include "kernels.h"

#include <math.h>


/* Two 31-bit parameters packed into one attribute slot. */
static int64_t pack(int64_t a, int64_t b) { return (a << 32) | b; }
static int64_t hi(int64_t v) { return v >> 32; }
static int64_t lo(int64_t v) { return v & 0xffffffff; }

/* The geometry of one convolution or pooling: input [n, c, h, w], output [n, o, oh, ow]. */
typedef struct geom {
    int64_t n, c, h, w;    /* input */
    int64_t o, oh, ow;     /* output channels and size */
    int64_t kh, kw;        /* window */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t g;             /* groups (pools: 1) */
} geom;

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    int64_t span = d * (k - 1) + 1;
    if (in + 2 * p < span) return 0;
    return (in + 2 * p - span) / s + 1;
}

static char *shp(const ad_tensor *x, char *buf) { return ad_shape_str(x->ndim, x->shape, buf, 96); }

/* ---- im2col and its adjoint ---- */

/*
** im2col: col[(c kh + i) kw + j][oy ow + ox] = x[c][oy sh - ph + i dh][ox sw - pw + j dw] (0 outside),
** for the c channels of one image. col2im adds col back into x (x must be zeroed first).
*/
#define IM2COL(T, SUFFIX)                                                                                \
    static void im2col_##SUFFIX(const geom *q, int64_t c, const T *x, T *col)                            \
    {                                                                                                    \
        int64_t ohw = q->oh * q->ow;                                                                     \
        for (int64_t ch = 0; ch < c; ch++)                                                               \
            for (int64_t i = 0; i < q->kh; i++)                                                          \
                for (int64_t j = 0; j < q->kw; j++) {                                                    \
                    T *row = col + ((ch * q->kh + i) * q->kw + j) * ohw;                                 \
                    const T *xc = x + ch * q->h * q->w;                                                  \
                    for (int64_t oy = 0; oy < q->oh; oy++) {                                             \
                        int64_t iy = oy * q->sh - q->ph + i * q->dh;                                     \
                        T *r = row + oy * q->ow;                                                         \
                        if (iy < 0 || iy >= q->h) {                                                      \
                            for (int64_t ox = 0; ox < q->ow; ox++) r[ox] = 0;                            \
                            continue;                                                                    \
                        }                                                                                \
                        const T *xr = xc + iy * q->w;                                                    \
                        int64_t ix = j * q->dw - q->pw;                                                  \
                        for (int64_t ox = 0; ox < q->ow; ox++, ix += q->sw)                              \
                            r[ox] = (ix >= 0 && ix < q->w) ? xr[ix] : 0;                                 \
                    }                                                                                    \
                }                                                                                        \
    }                                                                                                    \
    static void col2im_##SUFFIX(const geom *q, int64_t c, const T *col, T *x)                            \
    {                                                                                                    \
        int64_t ohw = q->oh * q->ow;                                                                     \
        for (int64_t ch = 0; ch < c; ch++)                                                               \
            for (int64_t i = 0; i < q->kh; i++)                                                          \
                for (int64_t j = 0; j < q->kw; j++) {                                                    \
                    const T *row = col + ((ch * q->kh + i) * q->kw + j) * ohw;                           \
                    T *xc = x + ch * q->h * q->w;                                                        \
                    for (int64_t oy = 0; oy < q->oh; oy++) {                                             \
                        int64_t iy = oy * q->sh - q->ph + i * q->dh;                                     \
                        if (iy < 0 || iy >= q->h) continue;                                              \
                        const T *r = row + oy * q->ow;                                                   \
                        T *xr = xc + iy * q->w;                                                          \
                        int64_t ix = j * q->dw - q->pw;                                                  \
                        for (int64_t ox = 0; ox < q->ow; ox++, ix += q->sw)                              \
                            if (ix >= 0 && ix < q->w) xr[ix] += r[ox];                                   \
                    }                                                                                    \
                }                                                                                        \
    }
IM2COL(double, f64)
IM2COL(float, f32)

/* A 1x1 kernel with stride 1 and no padding: the image itself is the column matrix. */
static bool direct(const geom *q)
{
    return q->kh == 1 && q->kw == 1 && q->sh == 1 && q->sw == 1 && q->ph == 0 && q->pw == 0;
}

/* gemm on either dtype; pointers are void so one kernel body serves both. */
static ad_status gemm(ad_dtype dt, bool ta, bool tb, int64_t m, int64_t nn, int64_t k, const void *a, int64_t lda,
                      const void *b, int64_t ldb, double beta, void *c, int64_t ldc)
{
    if (dt == AD_F64) return ad__gemm_f64(ta, tb, m, nn, k, 1.0, a, lda, b, ldb, beta, c, ldc);
    return ad__gemm_f32(ta, tb, m, nn, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
}

static void im2col(ad_dtype dt, const geom *q, int64_t c, const void *x, void *col)
{
    if (dt == AD_F64)
        im2col_f64(q, c, x, col);
    else
        im2col_f32(q, c, x, col);
}

static void col2im(ad_dtype dt, const geom *q, int64_t c, const void *col, void *x)
{
    if (dt == AD_F64)
        col2im_f64(q, c, col, x);
    else
        col2im_f32(q, c, col, x);
}

/* ---- conv2d ---- */

static void conv_attr(const ad_conv2d_params *p, ad_attr *a)
{
    *a = (ad_attr){{0}, {pack(p->stride_h, p->stride_w), pack(p->pad_h, p->pad_w), pack(p->dilation_h, p->dilation_w),
                         p->groups},
                   NULL};
}

static ad_conv2d_params attr_conv(const ad_attr *a)
{
    return (ad_conv2d_params){hi(a->i[0]), lo(a->i[0]), hi(a->i[1]), lo(a->i[1]), hi(a->i[2]), lo(a->i[2]), a->i[3]};
}

/* The geometry from the input [n, c, h, w] and weight [o, c/g, kh, kw] shapes. */
static geom conv_geom(const int64_t *xs, const int64_t *ws, const ad_conv2d_params *p)
{
    geom q = {xs[0], xs[1], xs[2], xs[3], ws[0], 0, 0, ws[2], ws[3], p->stride_h, p->stride_w, p->pad_h, p->pad_w,
              p->dilation_h, p->dilation_w, p->groups};
    q.oh = out_size(q.h, q.kh, q.sh, q.ph, q.dh);
    q.ow = out_size(q.w, q.kw, q.sw, q.pw, q.dw);
    return q;
}

static bool params_ok(ad_tape *t, const char *op, const ad_conv2d_params *p)
{
    const int64_t big = INT32_MAX;
    if (!p) {
        ad__fail(t, AD_ERR_ARG, "%s: params is NULL", op);
        return false;
    }
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

/* Checks x [n, c, h, w] against w [o, c/g, kh, kw]; fills q. */
static bool conv_check(ad_tape *t, const char *op, const ad_tensor *x, const ad_tensor *w, const ad_conv2d_params *p,
                       geom *q)
{
    char s1[96], s2[96];
    if (!params_ok(t, op, p)) return false;
    if (x->dtype != w->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "%s: dtypes differ: %s and %s", op, ad_dtype_name(x->dtype), ad_dtype_name(w->dtype));
        return false;
    }
    if (x->ndim != 4 || w->ndim != 4) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s and weight %s must both be 4-D (NCHW and OIHW)", op, shp(x, s1),
                 shp(w, s2));
        return false;
    }
    *q = conv_geom(x->shape, w->shape, p);
    if (q->c % q->g || q->o % q->g || w->shape[1] * q->g != q->c) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s and weight %s do not fit %lld groups (need C = groups * weight's dim 1, "
                 "O divisible by groups)", op, shp(x, s1), shp(w, s2), (long long)q->g);
        return false;
    }
    if (q->kh < 1 || q->kw < 1 || q->oh < 1 || q->ow < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: kernel %s does not fit input %s with padding %lldx%lld and dilation %lldx%lld",
                 op, shp(w, s2), shp(x, s1), (long long)q->ph, (long long)q->pw, (long long)q->dh, (long long)q->dw);
        return false;
    }
    return true;
}

/* Column buffer for one image and group (none for a direct 1x1 convolution). */
static void *col_buffer(ad_tape *t, const geom *q, ad_dtype dt)
{
    int64_t rows = q->c / q->g * q->kh * q->kw, cols = q->oh * q->ow, sz;
    if (!ad__mul_ok(rows, cols, &sz)) return NULL;
    return ad__arena_alloc(t, (size_t)sz * ad_dtype_size(dt));
}

/* conv2d: y[n,o] = sum_{c in o's group, i, j} w[o,c,i,j] x[n,c, oy sh - ph + i dh, ox sw - pw + j dw];
** VJP: gx = conv2d_grad_input(gy, w), gw = conv2d_grad_weight(x, gy) */
ad_var ad_conv2d_ex(ad_var x, ad_var w, const ad_conv2d_params *p)
{
    ad_var xs[2] = {x, w};
    ad_tape *t;
    if (!ad__begin("ad_conv2d", 2, xs, &t)) return ad__invalid(t);
    geom q;
    if (!conv_check(t, "ad_conv2d", ad__val(x), ad__val(w), p, &q)) return ad__invalid(t);
    ad_attr a;
    conv_attr(p, &a);
    return ad__emit(t, AD_OP_CONV2D, 2, xs, ad__val(x)->dtype, 4, (const int64_t[]){q.n, q.o, q.oh, q.ow}, &a);
}

ad_var ad_conv2d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t dilation, int64_t groups)
{
    ad_conv2d_params p = {stride, stride, padding, padding, dilation, dilation, groups};
    return ad_conv2d_ex(x, w, &p);
}

ad_status ad__fwd_conv2d(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0), *w = ad__in(t, n, 1);
    ad_conv2d_params p = attr_conv(&n->attr);
    geom q = conv_geom(x->shape, w->shape, &p);
    ad_dtype dt = x->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t cg = q.c / q.g, og = q.o / q.g, kk = cg * q.kh * q.kw, ohw = q.oh * q.ow;
    void *col = direct(&q) ? NULL : col_buffer(t, &q, dt);
    if (!direct(&q) && !col) return AD_ERR_NOMEM;
    for (int64_t b = 0; b < q.n; b++)
        for (int64_t g = 0; g < q.g; g++) {
            const char *xg = (const char *)x->data + (size_t)((b * q.c + g * cg) * q.h * q.w) * es;
            const void *src = xg;
            if (col) {
                im2col(dt, &q, cg, xg, col);
                src = col;
            }
            ad_status st = gemm(dt, false, false, og, ohw, kk, (const char *)w->data + (size_t)(g * og * kk) * es, kk,
                                src, ohw, 0.0, (char *)n->value.data + (size_t)((b * q.o + g * og) * ohw) * es, ohw);
            if (st != AD_OK) return st;
        }
    return AD_OK;
}

VJP(conv2d)
{
    const ad_tensor *x = ad__in(t, n, 0), *w = ad__in(t, n, 1);
    ad_conv2d_params p = attr_conv(&n->attr);
    if (ad__needs(t, n, 0)) gx[0] = ad__conv2d_grad_input(gy, ad__inv(t, n, 1), x->shape[2], x->shape[3], &p);
    if (ad__needs(t, n, 1)) gx[1] = ad__conv2d_grad_weight(ad__inv(t, n, 0), gy, w->shape[2], w->shape[3], &p);
}
/* tangent: conv2d(tx, w) + conv2d(x, tw) (bilinear) */
JVP(conv2d)
{
    ad_conv2d_params p = attr_conv(&n->attr);
    ad_var a = ad__has(tx[0]) ? ad_conv2d_ex(tx[0], ad__inv(t, n, 1), &p) : tx[0];
    ad_var b = ad__has(tx[1]) ? ad_conv2d_ex(ad__inv(t, n, 0), tx[1], &p) : tx[1];
    return ad__tsum(a, b);
}

/* The two adjoints' shared tail: x and w (one of them shaped from the other operands) must
** make a valid convolution whose output is g's shape; then records op `id` of that shape. */
static ad_var emit_adjoint(ad_tape *t, const char *op, ad_op id, const ad_var *xs, const ad_tensor *x,
                           const ad_tensor *w, const ad_tensor *vg, const ad_conv2d_params *p, const int64_t *shape)
{
    geom q;
    if (!conv_check(t, op, x, w, p, &q)) return ad__invalid(t);
    if (q.n != vg->shape[0] || q.o != vg->shape[1] || q.oh != vg->shape[2] || q.ow != vg->shape[3]) {
        char s1[96];
        ad__fail(t, AD_ERR_SHAPE, "%s: gradient %s does not match the convolution's output [%lld,%lld,%lld,%lld]", op,
                 shp(vg, s1), (long long)q.n, (long long)q.o, (long long)q.oh, (long long)q.ow);
        return ad__invalid(t);
    }
    ad_attr a;
    conv_attr(p, &a);
    return ad__emit(t, id, 2, xs, vg->dtype, 4, shape, &a);
}

/* conv2d_grad_input: y = J_x^T g for the convolution with weight w, an input of size h x wd (the transposed
** convolution); linear in g and in w. VJP: gg = conv2d(G, w), gw = conv2d_grad_weight(G, g) */
ad_var ad__conv2d_grad_input(ad_var g, ad_var w, int64_t h, int64_t wd, const ad_conv2d_params *p)
{
    ad_var xs[2] = {g, w};
    ad_tape *t;
    const char *op = "ad_conv2d_grad_input";
    if (!ad__begin(op, 2, xs, &t)) return ad__invalid(t);
    const ad_tensor *vg = ad__val(g), *vw = ad__val(w);
    char s1[96], s2[96];
    if (vg->ndim != 4 || vw->ndim != 4 || h < 1 || wd < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: gradient %s and weight %s must be 4-D, input size %lldx%lld positive", op,
                 shp(vg, s1), shp(vw, s2), (long long)h, (long long)wd);
        return ad__invalid(t);
    }
    int64_t gsz = p ? p->groups : 1;
    const int64_t xshape[4] = {vg->shape[0], vw->shape[1] * gsz, h, wd};
    ad_tensor fake; /* the input's header: what conv_check needs of it */
    ad__tensor_init(&fake, vg->dtype, 4, xshape, 0);
    return emit_adjoint(t, op, AD_OP_CONV2D_GRAD_INPUT, xs, &fake, vw, vg, p, xshape);
}

ad_status ad__fwd_conv2d_grad_input(ad_tape *t, ad_node *n)
{
    const ad_tensor *gy = ad__in(t, n, 0), *w = ad__in(t, n, 1);
    ad_conv2d_params p = attr_conv(&n->attr);
    geom q = conv_geom(n->value.shape, w->shape, &p);
    ad_dtype dt = gy->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t cg = q.c / q.g, og = q.o / q.g, kk = cg * q.kh * q.kw, ohw = q.oh * q.ow;
    bool dir = direct(&q);
    void *col = dir ? NULL : col_buffer(t, &q, dt);
    if (!dir && !col) return AD_ERR_NOMEM;
    if (!dir) memset(n->value.data, 0, ad__nbytes(&n->value));
    for (int64_t b = 0; b < q.n; b++)
        for (int64_t g = 0; g < q.g; g++) {
            char *xg = (char *)n->value.data + (size_t)((b * q.c + g * cg) * q.h * q.w) * es;
            ad_status st = gemm(dt, true, false, kk, ohw, og, (const char *)w->data + (size_t)(g * og * kk) * es, kk,
                                (const char *)gy->data + (size_t)((b * q.o + g * og) * ohw) * es, ohw, 0.0,
                                dir ? (void *)xg : col, ohw);
            if (st != AD_OK) return st;
            if (!dir) col2im(dt, &q, cg, col, xg);
        }
    return AD_OK;
}

VJP(conv2d_grad_input)
{
    ad_conv2d_params p = attr_conv(&n->attr);
    const ad_tensor *w = ad__in(t, n, 1);
    if (ad__needs(t, n, 0)) gx[0] = ad_conv2d_ex(gy, ad__inv(t, n, 1), &p);
    if (ad__needs(t, n, 1)) gx[1] = ad__conv2d_grad_weight(gy, ad__inv(t, n, 0), w->shape[2], w->shape[3], &p);
}
/* tangent: the same adjoint of tg with w, plus of g with tw (bilinear) */
JVP(conv2d_grad_input)
{
    ad_conv2d_params p = attr_conv(&n->attr);
    int64_t h = n->value.shape[2], wd = n->value.shape[3];
    ad_var a = ad__has(tx[0]) ? ad__conv2d_grad_input(tx[0], ad__inv(t, n, 1), h, wd, &p) : tx[0];
    ad_var b = ad__has(tx[1]) ? ad__conv2d_grad_input(ad__inv(t, n, 0), tx[1], h, wd, &p) : tx[1];
    return ad__tsum(a, b);
}

/* conv2d_grad_weight: y = J_w^T g for the convolution of input x, a kh x kw kernel; linear in x and in g.
** VJP: gx = conv2d_grad_input(g, G), gg = conv2d(x, G) */
ad_var ad__conv2d_grad_weight(ad_var x, ad_var g, int64_t kh, int64_t kw, const ad_conv2d_params *p)
{
    ad_var xs[2] = {x, g};
    ad_tape *t;
    const char *op = "ad_conv2d_grad_weight";
    if (!ad__begin(op, 2, xs, &t)) return ad__invalid(t);
    const ad_tensor *vx = ad__val(x), *vg = ad__val(g);
    char s1[96], s2[96];
    if (vx->ndim != 4 || vg->ndim != 4 || kh < 1 || kw < 1 || !p || p->groups < 1 || vx->shape[1] % p->groups) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s and gradient %s must be 4-D, the kernel size %lldx%lld positive, "
                 "the channels divisible by the groups", op, shp(vx, s1), shp(vg, s2), (long long)kh, (long long)kw);
        return ad__invalid(t);
    }
    const int64_t wshape[4] = {vg->shape[1], vx->shape[1] / p->groups, kh, kw};
    ad_tensor fake; /* the weight's header: what conv_check needs of it */
    ad__tensor_init(&fake, vg->dtype, 4, wshape, 0);
    return emit_adjoint(t, op, AD_OP_CONV2D_GRAD_WEIGHT, xs, vx, &fake, vg, p, wshape);
}

ad_status ad__fwd_conv2d_grad_weight(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0), *gy = ad__in(t, n, 1);
    ad_conv2d_params p = attr_conv(&n->attr);
    geom q = conv_geom(x->shape, n->value.shape, &p);
    ad_dtype dt = x->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t cg = q.c / q.g, og = q.o / q.g, kk = cg * q.kh * q.kw, ohw = q.oh * q.ow;
    bool dir = direct(&q);
    void *col = dir ? NULL : col_buffer(t, &q, dt);
    if (!dir && !col) return AD_ERR_NOMEM;
    memset(n->value.data, 0, ad__nbytes(&n->value));
    for (int64_t b = 0; b < q.n; b++)
        for (int64_t g = 0; g < q.g; g++) {
            const char *xg = (const char *)x->data + (size_t)((b * q.c + g * cg) * q.h * q.w) * es;
            if (!dir) im2col(dt, &q, cg, xg, col);
            ad_status st = gemm(dt, false, true, og, kk, ohw, (const char *)gy->data + (size_t)((b * q.o + g * og) * ohw) * es,
                                ohw, dir ? (const void *)xg : col, ohw, 1.0,
                                (char *)n->value.data + (size_t)(g * og * kk) * es, kk);
            if (st != AD_OK) return st;
        }
    return AD_OK;
}

VJP(conv2d_grad_weight)
{
    ad_conv2d_params p = attr_conv(&n->attr);
    const ad_tensor *x = ad__in(t, n, 0);
    if (ad__needs(t, n, 0)) gx[0] = ad__conv2d_grad_input(ad__inv(t, n, 1), gy, x->shape[2], x->shape[3], &p);
    if (ad__needs(t, n, 1)) gx[1] = ad_conv2d_ex(ad__inv(t, n, 0), gy, &p);
}
/* tangent: the same adjoint of tx with g, plus of x with tg (bilinear) */
JVP(conv2d_grad_weight)
{
    ad_conv2d_params p = attr_conv(&n->attr);
    int64_t kh = n->value.shape[2], kw = n->value.shape[3];
    ad_var a = ad__has(tx[0]) ? ad__conv2d_grad_weight(tx[0], ad__inv(t, n, 1), kh, kw, &p) : tx[0];
    ad_var b = ad__has(tx[1]) ? ad__conv2d_grad_weight(ad__inv(t, n, 0), tx[1], kh, kw, &p) : tx[1];
    return ad__tsum(a, b);
}

/* ---- pooling ---- */

static void pool_attr(const ad_pool2d_params *p, ad_attr *a)
{
    *a = (ad_attr){{0}, {pack(p->kernel_h, p->kernel_w), pack(p->stride_h, p->stride_w), pack(p->pad_h, p->pad_w), 0},
                   NULL};
}

static ad_pool2d_params attr_pool(const ad_attr *a)
{
    return (ad_pool2d_params){hi(a->i[0]), lo(a->i[0]), hi(a->i[1]), lo(a->i[1]), hi(a->i[2]), lo(a->i[2])};
}

static geom pool_geom(const int64_t *xs, const ad_pool2d_params *p)
{
    geom q = {xs[0], xs[1], xs[2], xs[3], xs[1], 0, 0, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w,
              p->pad_h, p->pad_w, 1, 1, 1};
    q.oh = out_size(q.h, q.kh, q.sh, q.ph, 1);
    q.ow = out_size(q.w, q.kw, q.sw, q.pw, 1);
    return q;
}

/* Validates the parameters against x [n, c, h, w] (stride 0 becomes the kernel size) and fills q. */
static bool pool_check(ad_tape *t, const char *op, const ad_tensor *x, ad_pool2d_params *p, geom *q)
{
    char s1[96];
    const int64_t big = INT32_MAX;
    if (p->stride_h == 0) p->stride_h = p->kernel_h;
    if (p->stride_w == 0) p->stride_w = p->kernel_w;
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || p->pad_h < 0 || p->pad_w < 0 ||
        2 * p->pad_h > p->kernel_h || 2 * p->pad_w > p->kernel_w || p->kernel_h > big || p->kernel_w > big ||
        p->stride_h > big || p->stride_w > big) {
        ad__fail(t, AD_ERR_ARG,
                 "%s: bad parameters: kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld (kernel >= 1, stride >= 1 "
                 "or 0 for the kernel size, 0 <= padding <= kernel / 2)",
                 op, (long long)p->kernel_h, (long long)p->kernel_w, (long long)p->stride_h, (long long)p->stride_w,
                 (long long)p->pad_h, (long long)p->pad_w);
        return false;
    }
    if (x->ndim != 4) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s must be 4-D (NCHW)", op, shp(x, s1));
        return false;
    }
    *q = pool_geom(x->shape, p);
    if (q->oh < 1 || q->ow < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: kernel %lldx%lld does not fit input %s with padding %lldx%lld", op,
                 (long long)q->kh, (long long)q->kw, shp(x, s1), (long long)q->ph, (long long)q->pw);
        return false;
    }
    return true;
}

/* Flat index (within one [h, w] plane) of the first maximum of window (oy, ox); padding never wins. */
#define ARGMAX(T, SUFFIX)                                                                                \
    static inline int64_t argmax_##SUFFIX(const geom *q, const T *x, int64_t oy, int64_t ox)             \
    {                                                                                                    \
        int64_t best = -1;                                                                               \
        T bv = 0;                                                                                        \
        if (q->ph == 0 && q->pw == 0) { /* every window lies inside the image */                         \
            const T *r = x + oy * q->sh * q->w + ox * q->sw;                                             \
            best = 0;                                                                                    \
            bv = r[0];                                                                                   \
            for (int64_t i = 0; i < q->kh; i++)                                                          \
                for (int64_t j = 0; j < q->kw; j++) {                                                    \
                    T v = r[i * q->w + j];                                                               \
                    if (v > bv || (isnan(v) && !isnan(bv))) {                                            \
                        best = i * q->w + j;                                                             \
                        bv = v;                                                                          \
                    }                                                                                    \
                }                                                                                        \
            return best + oy * q->sh * q->w + ox * q->sw;                                                \
        }                                                                                                \
        for (int64_t i = 0; i < q->kh; i++) {                                                            \
            int64_t iy = oy * q->sh - q->ph + i;                                                         \
            if (iy < 0 || iy >= q->h) continue;                                                          \
            for (int64_t j = 0; j < q->kw; j++) {                                                        \
                int64_t ix = ox * q->sw - q->pw + j;                                                     \
                if (ix < 0 || ix >= q->w) continue;                                                      \
                T v = x[iy * q->w + ix];                                                                 \
                if (best < 0 || v > bv || (isnan(v) && !isnan(bv))) {                                    \
                    best = iy * q->w + ix;                                                               \
                    bv = v;                                                                              \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        return best;                                                                                     \
    }
ARGMAX(double, f64)
ARGMAX(float, f32)

/* mode 0: y[o] = x[argmax]; 1: y[argmax] += g[o] (y zeroed, shaped like x); 2: y[o] = g[argmax] */
#define MAXPOOL_LOOP(T, SUFFIX)                                                                          \
    static void maxpool_##SUFFIX(const geom *q, const T *x, const T *g, T *y, int mode)                  \
    {                                                                                                    \
        int64_t hw = q->h * q->w, ohw = q->oh * q->ow;                                                   \
        for (int64_t pl = 0; pl < q->n * q->c; pl++) {                                                   \
            const T *xp = x + pl * hw;                                                                   \
            for (int64_t oy = 0; oy < q->oh; oy++)                                                       \
                for (int64_t ox = 0; ox < q->ow; ox++) {                                                 \
                    int64_t k = argmax_##SUFFIX(q, xp, oy, ox), o = pl * ohw + oy * q->ow + ox;          \
                    if (mode == 0)                                                                       \
                        y[o] = xp[k];                                                                    \
                    else if (mode == 1)                                                                  \
                        y[pl * hw + k] += g[o];                                                          \
                    else                                                                                 \
                        y[o] = g[pl * hw + k];                                                           \
                }                                                                                        \
        }                                                                                                \
    }
MAXPOOL_LOOP(double, f64)
MAXPOOL_LOOP(float, f32)

static void maxpool(const geom *q, const ad_tensor *x, const ad_tensor *g, ad_tensor *y, int mode)
{
    if (mode == 1) memset(y->data, 0, ad__nbytes(y));
    if (x->dtype == AD_F64)
        maxpool_f64(q, x->data, g ? g->data : NULL, y->data, mode);
    else
        maxpool_f32(q, x->data, g ? g->data : NULL, y->data, mode);
}

/* Records a pooling op (max or average) after checking its parameters against x. */
static ad_var pool_op(ad_op op, ad_var x, const ad_pool2d_params *pp)
{
    const char *name = ad__ops[op].name;
    ad_tape *t;
    if (!ad__begin(name, 1, &x, &t)) return ad__invalid(t);
    if (!pp) {
        ad__fail(t, AD_ERR_ARG, "%s: params is NULL", name);
        return ad__invalid(t);
    }
    ad_pool2d_params p = *pp;
    geom q;
    if (!pool_check(t, name, ad__val(x), &p, &q)) return ad__invalid(t);
    ad_attr a;
    pool_attr(&p, &a);
    return ad__emit(t, op, 1, &x, ad__val(x)->dtype, 4, (const int64_t[]){q.n, q.c, q.oh, q.ow}, &a);
}

/* max_pool2d: y[n,c,oy,ox] = max over the window of x (padding excluded);
** VJP: gx = max_pool2d_grad(x, gy) (all of gy to the window's first maximum) */
ad_var ad_max_pool2d_ex(ad_var x, const ad_pool2d_params *pp) { return pool_op(AD_OP_MAX_POOL2D, x, pp); }

ad_var ad_max_pool2d(ad_var x, int64_t kernel, int64_t stride, int64_t padding)
{
    ad_pool2d_params p = {kernel, kernel, stride, stride, padding, padding};
    return ad_max_pool2d_ex(x, &p);
}

ad_status ad__fwd_max_pool2d(ad_tape *t, ad_node *n)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    const ad_tensor *x = ad__in(t, n, 0);
    geom q = pool_geom(x->shape, &p);
    maxpool(&q, x, NULL, &n->value, 0);
    return AD_OK;
}

VJP(max_pool2d)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    gx[0] = ad__max_pool2d_grad(ad__inv(t, n, 0), gy, &p);
}
/* tangent: tx at each window's argmax, max_pool2d_select(x, tx) */
JVP(max_pool2d)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    return ad__max_pool2d_select(ad__inv(t, n, 0), tx[0], &p);
}

/* Shared checks of the two max-pool adjoints: x [n,c,h,w] and g (pooled shape when g_pooled, else x's). */
static bool maxpool_pair(ad_tape **tp, const char *op, ad_var x, ad_var g, const ad_pool2d_params *pp,
                         bool g_pooled, ad_pool2d_params *p, geom *q)
{
    ad_var xs[2] = {x, g};
    if (!ad__begin(op, 2, xs, tp)) return false;
    ad_tape *t = *tp;
    const ad_tensor *vx = ad__val(x), *vg = ad__val(g);
    char s1[96], s2[96];
    if (!pp) {
        ad__fail(t, AD_ERR_ARG, "%s: params is NULL", op);
        return false;
    }
    *p = *pp;
    if (!pool_check(t, op, vx, p, q)) return false;
    const int64_t pooled[4] = {q->n, q->c, q->oh, q->ow};
    bool ok = vg->dtype == vx->dtype && vg->ndim == 4;
    for (int i = 0; ok && i < 4; i++) ok = vg->shape[i] == (g_pooled ? pooled[i] : vx->shape[i]);
    if (!ok) {
        ad__fail(t, AD_ERR_SHAPE, "%s: input %s %s and gradient %s %s do not fit the pooling", op, shp(vx, s1),
                 ad_dtype_name(vx->dtype), shp(vg, s2), ad_dtype_name(vg->dtype));
        return false;
    }
    return true;
}

/* max_pool2d_grad: y = zeros like x, y[argmax of window o] += g[o]; linear in g, piecewise constant in x.
** VJP: gg = max_pool2d_select(x, G); x gets none (zero almost everywhere) */
ad_var ad__max_pool2d_grad(ad_var x, ad_var g, const ad_pool2d_params *pp)
{
    ad_pool2d_params p;
    geom q;
    ad_tape *t;
    if (!maxpool_pair(&t, "ad_max_pool2d_grad", x, g, pp, true, &p, &q)) return ad__invalid(t);
    ad_attr a;
    pool_attr(&p, &a);
    const ad_tensor *vx = ad__val(x);
    return ad__emit(t, AD_OP_MAX_POOL2D_GRAD, 2, (ad_var[]){x, g}, vx->dtype, 4, vx->shape, &a);
}

ad_status ad__fwd_max_pool2d_grad(ad_tape *t, ad_node *n)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    const ad_tensor *x = ad__in(t, n, 0);
    geom q = pool_geom(x->shape, &p);
    maxpool(&q, x, ad__in(t, n, 1), &n->value, 1);
    return AD_OK;
}

VJP(max_pool2d_grad)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    if (ad__needs(t, n, 1)) gx[1] = ad__max_pool2d_select(ad__inv(t, n, 0), gy, &p);
}
/* tangent: max_pool2d_grad(x, tg); x's tangent moves no argmax (zero almost everywhere) */
JVP(max_pool2d_grad)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    return ad__has(tx[1]) ? ad__max_pool2d_grad(ad__inv(t, n, 0), tx[1], &p) : tx[1];
}

/* max_pool2d_select: y[o] = g[argmax of window o of x]; linear in g. VJP: gg = max_pool2d_grad(x, G) */
ad_var ad__max_pool2d_select(ad_var x, ad_var g, const ad_pool2d_params *pp)
{
    ad_pool2d_params p;
    geom q;
    ad_tape *t;
    if (!maxpool_pair(&t, "ad_max_pool2d_select", x, g, pp, false, &p, &q)) return ad__invalid(t);
    ad_attr a;
    pool_attr(&p, &a);
    return ad__emit(t, AD_OP_MAX_POOL2D_SELECT, 2, (ad_var[]){x, g}, ad__val(x)->dtype, 4,
                    (const int64_t[]){q.n, q.c, q.oh, q.ow}, &a);
}

ad_status ad__fwd_max_pool2d_select(ad_tape *t, ad_node *n)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    const ad_tensor *x = ad__in(t, n, 0);
    geom q = pool_geom(x->shape, &p);
    maxpool(&q, x, ad__in(t, n, 1), &n->value, 2);
    return AD_OK;
}

VJP(max_pool2d_select)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    if (ad__needs(t, n, 1)) gx[1] = ad__max_pool2d_grad(ad__inv(t, n, 0), gy, &p);
}
/* tangent: max_pool2d_select(x, tg) (linear in g, piecewise constant in x) */
JVP(max_pool2d_select)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    return ad__has(tx[1]) ? ad__max_pool2d_select(ad__inv(t, n, 0), tx[1], &p) : tx[1];
}

/* Average pooling with zero padding counted (divisor kh kw): forward (y = window means of x) or its
** adjoint (x += y / (kh kw) over each window, x zeroed first). */
#define AVGPOOL_LOOP(T, SUFFIX)                                                                          \
    static void avgpool_##SUFFIX(const geom *q, T *x, T *y, bool adjoint)                                \
    {                                                                                                    \
        int64_t hw = q->h * q->w, ohw = q->oh * q->ow;                                                   \
        T inv = (T)1 / (T)(q->kh * q->kw);                                                               \
        for (int64_t pl = 0; pl < q->n * q->c; pl++) {                                                   \
            T *xp = x + pl * hw;                                                                         \
            for (int64_t oy = 0; oy < q->oh; oy++)                                                       \
                for (int64_t ox = 0; ox < q->ow; ox++) {                                                 \
                    T *yo = y + pl * ohw + oy * q->ow + ox, s = 0, gv = adjoint ? *yo * inv : 0;         \
                    for (int64_t i = 0; i < q->kh; i++) {                                                \
                        int64_t iy = oy * q->sh - q->ph + i;                                             \
                        if (iy < 0 || iy >= q->h) continue;                                              \
                        for (int64_t j = 0; j < q->kw; j++) {                                            \
                            int64_t ix = ox * q->sw - q->pw + j;                                         \
                            if (ix < 0 || ix >= q->w) continue;                                          \
                            if (adjoint)                                                                 \
                                xp[iy * q->w + ix] += gv;                                                \
                            else                                                                         \
                                s += xp[iy * q->w + ix];                                                 \
                        }                                                                                \
                    }                                                                                    \
                    if (!adjoint) *yo = s * inv;                                                         \
                }                                                                                        \
        }                                                                                                \
    }
AVGPOOL_LOOP(double, f64)
AVGPOOL_LOOP(float, f32)

static void avgpool(const geom *q, ad_tensor *x, ad_tensor *y, bool adjoint)
{
    if (adjoint) memset(x->data, 0, ad__nbytes(x));
    if (x->dtype == AD_F64)
        avgpool_f64(q, x->data, y->data, adjoint);
    else
        avgpool_f32(q, x->data, y->data, adjoint);
}

/* avg_pool2d: y[n,c,oy,ox] = (1 / (kh kw)) sum over the window of x (zero padding counted);
** VJP: gx = avg_pool2d_grad(gy) */
ad_var ad_avg_pool2d_ex(ad_var x, const ad_pool2d_params *pp) { return pool_op(AD_OP_AVG_POOL2D, x, pp); }

ad_var ad_avg_pool2d(ad_var x, int64_t kernel, int64_t stride, int64_t padding)
{
    ad_pool2d_params p = {kernel, kernel, stride, stride, padding, padding};
    return ad_avg_pool2d_ex(x, &p);
}

ad_status ad__fwd_avg_pool2d(ad_tape *t, ad_node *n)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    ad_tensor x = *ad__in(t, n, 0); /* read only: the forward loop never writes x */
    geom q = pool_geom(x.shape, &p);
    avgpool(&q, &x, &n->value, false);
    return AD_OK;
}

VJP(avg_pool2d)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    const ad_tensor *x = ad__in(t, n, 0);
    gx[0] = ad__avg_pool2d_grad(gy, x->shape[2], x->shape[3], &p);
}
/* tangent: avg_pool2d(tx) (linear) */
JVP(avg_pool2d)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    return ad_avg_pool2d_ex(tx[0], &p);
}

/* avg_pool2d_grad: y (shape [n,c,h,w]) = g[o] / (kh kw) added over each window o; linear.
** VJP: gg = avg_pool2d(G) */
ad_var ad__avg_pool2d_grad(ad_var g, int64_t h, int64_t wd, const ad_pool2d_params *pp)
{
    ad_tape *t;
    const char *op = "ad_avg_pool2d_grad";
    if (!ad__begin(op, 1, &g, &t)) return ad__invalid(t);
    const ad_tensor *vg = ad__val(g);
    char s1[96];
    if (!pp || vg->ndim != 4 || h < 1 || wd < 1) {
        ad__fail(t, AD_ERR_SHAPE, "%s: gradient %s must be 4-D, the input size %lldx%lld positive, params given", op,
                 shp(vg, s1), (long long)h, (long long)wd);
        return ad__invalid(t);
    }
    ad_pool2d_params p = *pp;
    const int64_t xshape[4] = {vg->shape[0], vg->shape[1], h, wd};
    ad_tensor fake = *vg;
    ad__tensor_init(&fake, vg->dtype, 4, xshape, 0);
    geom q;
    if (!pool_check(t, op, &fake, &p, &q)) return ad__invalid(t);
    if (q.oh != vg->shape[2] || q.ow != vg->shape[3]) {
        ad__fail(t, AD_ERR_SHAPE, "%s: gradient %s does not match the pooled size %lldx%lld", op, shp(vg, s1),
                 (long long)q.oh, (long long)q.ow);
        return ad__invalid(t);
    }
    ad_attr a;
    pool_attr(&p, &a);
    return ad__emit(t, AD_OP_AVG_POOL2D_GRAD, 1, &g, vg->dtype, 4, xshape, &a);
}

ad_status ad__fwd_avg_pool2d_grad(ad_tape *t, ad_node *n)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    ad_tensor g = *ad__in(t, n, 0); /* read only in the adjoint loop */
    geom q = pool_geom(n->value.shape, &p);
    avgpool(&q, &n->value, &g, true);
    return AD_OK;
}

VJP(avg_pool2d_grad)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    gx[0] = ad_avg_pool2d_ex(gy, &p);
}
/* tangent: avg_pool2d_grad(tg) (linear) */
JVP(avg_pool2d_grad)
{
    ad_pool2d_params p = attr_pool(&n->attr);
    return ad__avg_pool2d_grad(tx[0], n->value.shape[2], n->value.shape[3], &p);
}

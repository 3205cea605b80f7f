/* ops_pool.c: 2-D max and average pooling, NCHW, with their adjoint ops. */
#include "jvp.h"
#include "ad_nnops.h"
#include "vjp.h"
#include "conv_kernels.h"
#include "threads.h"

#include <math.h>


#include "conv_geom.h"

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
    static void maxpool_##SUFFIX(const geom *q, const T *x, const T *g, T *y, int mode, int64_t p0,      \
                                 int64_t p1)                                                             \
    {                                                                                                    \
        int64_t hw = q->h * q->w, ohw = q->oh * q->ow;                                                   \
        for (int64_t pl = p0; pl < p1; pl++) {                                                           \
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

/* The common 2x2 window with stride 2 and no padding, its argmax written out (the same first
** maximum, NaN winning, as argmax_*): a CNN's pooling layers spent more time in the general loop
** than in their convolutions (perf, bench_cnn: maxpool_f32 27% of the samples). */
#define MAXPOOL2(T, SUFFIX, FAST)                                                                              \
    /* argmax offsets (0 .. 3: row-major in the window) of one output row, branch-free */                \
    static inline void win2_##SUFFIX(const T *r0, const T *r1, int64_t ow, T *bv, int8_t *bk)            \
    {                                                                                                    \
        for (int64_t ox = 0; ox < ow; ox++) {                                                            \
            T b = r0[2 * ox], v;                                                                         \
            int8_t k = 0;                                                                                \
            v = r0[2 * ox + 1];                                                                          \
            bool t1 = (v > b) | ((v != v) & (b == b));                                                       \
            b = t1 ? v : b, k = t1 ? 1 : k;                                                              \
            v = r1[2 * ox];                                                                              \
            bool t2 = (v > b) | ((v != v) & (b == b));                                                       \
            b = t2 ? v : b, k = t2 ? 2 : k;                                                              \
            v = r1[2 * ox + 1];                                                                          \
            bool t3 = (v > b) | ((v != v) & (b == b));                                                       \
            bv[ox] = t3 ? v : b, bk[ox] = t3 ? 3 : k;                                                    \
        }                                                                                                \
    }                                                                                                    \
    AD_CLONES static void maxpool2_##SUFFIX(const geom *q, const T *x, const T *g, T *y, int mode,       \
                                            int64_t p0, int64_t p1)                                      \
    {                                                                                                    \
        int64_t hw = q->h * q->w, ohw = q->oh * q->ow, w = q->w;                                         \
        T bv[256];                                                                                       \
        int8_t bk[256];                                                                                  \
        for (int64_t pl = p0; pl < p1; pl++) {                                                           \
            const T *xp = x + pl * hw;                                                                   \
            for (int64_t oy = 0; oy < q->oh; oy++)                                                       \
                for (int64_t ox0 = 0; ox0 < q->ow; ox0 += 256) {                                         \
                    int64_t len = q->ow - ox0 < 256 ? q->ow - ox0 : 256;                                 \
                    const T *r0 = xp + 2 * oy * w + 2 * ox0;                                             \
                    int64_t o = pl * ohw + oy * q->ow + ox0;                                             \
                    if (!FAST(r0, r0 + w, len, bv, bk)) win2_##SUFFIX(r0, r0 + w, len, bv, bk);          \
                    if (mode == 0) {                                                                     \
                        for (int64_t i = 0; i < len; i++) y[o + i] = bv[i];                              \
                        continue;                                                                        \
                    }                                                                                    \
                    for (int64_t i = 0; i < len; i++) {                                                  \
                        int64_t at = pl * hw + (2 * oy + bk[i] / 2) * w + 2 * (ox0 + i) + bk[i] % 2;     \
                        if (mode == 1)                                                                   \
                            y[at] += g[o + i];                                                           \
                        else                                                                             \
                            y[o + i] = g[at];                                                            \
                    }                                                                                    \
                }                                                                                        \
        }                                                                                                \
    }
static bool no_fast_win(const double *r0, const double *r1, int64_t n, double *bv, int8_t *bk)
{
    (void)r0, (void)r1, (void)n, (void)bv, (void)bk;
    return false;
}
MAXPOOL2(double, f64, no_fast_win)
MAXPOOL2(float, f32, ad__maxpool2_win_f32)

/* A max-pooling pass over a range of planes per thread (each plane's windows, and in mode 1 its
** sums, stay on one thread: the same results whatever the thread count). */
typedef struct mp_job {
    const geom *q;
    const ad_tensor *x, *g;
    ad_tensor *y;
    int mode;
} mp_job;

static void mp_share(void *ctx, int tid, int nth)
{
    const mp_job *j = ctx;
    const geom *q = j->q;
    int64_t planes = q->n * q->c, p0 = planes * tid / nth, p1 = planes * (tid + 1) / nth;
    if (p0 >= p1) return;
    size_t es = ad_dtype_size(j->x->dtype);
    int64_t hw = q->h * q->w;
    if (j->mode == 1) memset((char *)j->y->data + (size_t)(p0 * hw) * es, 0, (size_t)((p1 - p0) * hw) * es);
    bool two = q->kh == 2 && q->kw == 2 && q->sh == 2 && q->sw == 2 && q->ph == 0 && q->pw == 0;
    const void *g = j->g ? j->g->data : NULL;
    if (j->x->dtype == AD_F64)
        (two ? maxpool2_f64 : maxpool_f64)(q, j->x->data, g, j->y->data, j->mode, p0, p1);
    else
        (two ? maxpool2_f32 : maxpool_f32)(q, j->x->data, g, j->y->data, j->mode, p0, p1);
}

#define POOL_THREAD_ELEMS ((int64_t)1 << 16) /* inputs from this many elements use the pool */

static void maxpool(const geom *q, const ad_tensor *x, const ad_tensor *g, ad_tensor *y, int mode)
{
    int nth = x->size >= POOL_THREAD_ELEMS ? ad_get_num_threads() : 1;
    if (nth > AD__MAX_THREADS) nth = AD__MAX_THREADS;
    if (nth > q->n * q->c) nth = (int)(q->n * q->c);
    if (nth < 1) nth = 1;
    mp_job j = {q, x, g, y, mode};
    ad__parallel(nth, mp_share, &j);
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

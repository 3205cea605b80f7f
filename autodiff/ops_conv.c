/* ops_conv.c: 2-D convolution (GEMM with im2col packed into its panels, direct kernels), NCHW, with its adjoint ops. */
#include "jvp.h"
#include "ad_nnops.h"
#include "vjp.h"
#include "conv_lane.h"
#include "conv_wino.h"
#include "gemm.h"
#include "kernels.h"
#include "threads.h"

#include <math.h>


#include "conv_geom.h"

/* ---- the convolution's product: implicit im2col packed straight into GEMM panels ---- */

/* A matrix view over a tensor: element (i, j) at base + (j / inner) outer + i ld + j % inner, so
** one view covers both a plain row-major matrix (inner huge, outer 0) and the [channels, batch x
** positions] matrix of an NCHW tensor (inner = positions per image, outer = image stride). */
typedef struct view {
    void *base;
    int64_t inner, outer, ld;
} view;

/* A row segment of output positions within one panel: first column, length, first tap's offset. */
typedef struct run {
    int64_t col, len, off;
} run;

/* how an operand's micro-panels are packed (conv_gemm.inc) */
enum { CP_IM2COL, CP_IM2COL_T, CP_ROWS, CP_COLS };

#define AD__CONV_SLACK 16                  /* a packed run is copied in blocks of this many elements */
#define AD__CONV_KC 256                    /* the reduction block (at most the kernels' kc) */
#define AD__CONV_MAX_RUNS 64               /* runs in one NR-wide panel: NR is at most 32 */
#define AD__CONV_MAX_RUNS_T AD__CONV_KC    /* runs in one reduction block */

/* C (m x n) = beta C + A B for the convolution's three products (see conv_gemm.inc). */
typedef struct cjob {
    const ad__gemm_kernel *kr;
    int64_t m, n, k;
    int64_t mcb, kcb, ncb; /* cache blocks */
    double beta;           /* for the first reduction block; later blocks add */
    const void *apack;     /* A packed whole (pack_a_all), or NULL: packed per block (amode) */
    int amode, bmode;      /* CP_* */
    view av, bv;           /* for CP_ROWS and CP_COLS */
    bool ct;               /* C is stored transposed: (i, j) is cv's plain (j, i) */
    const void *x;         /* CP_IM2COL(_T): the padded image of the group's first channel */
    const void *xend;      /* the end of that image's buffer (no read reaches past it) */
    int64_t xc, xb, wp;    /* its channel and image strides, its padded row length */
    int64_t oh, ow, kh, kw, sh, sw, dh, dw;
    view cv;
    bool split_n;          /* threads split C's columns (else its rows) */
    int split;             /* asked for: 0 the split that fits the tiles, 1 rows, 2 columns */
    void *bufs;            /* per thread: abuf_bytes of A~ then B~ */
    size_t buf_bytes, abuf_bytes;
} cjob;

static inline void ukr_f32(const ad__gemm_kernel *kr, int64_t kc, const float *a, const float *b, float *c,
                           int64_t ldc, float beta)
{
    kr->f32(kc, a, b, c, ldc, 1.0f, beta);
}

static inline void ukr_f64(const ad__gemm_kernel *kr, int64_t kc, const double *a, const double *b, double *c,
                           int64_t ldc, double beta)
{
    kr->f64(kc, a, b, c, ldc, 1.0, beta);
}

#define CG_T float
#define CG_S f32
#include "conv_gemm.inc"
#undef CG_T
#undef CG_S
#define CG_T double
#define CG_S f64
#include "conv_gemm.inc"
#undef CG_T
#undef CG_S

static const ad__gemm_kernel *conv_kernel(ad_dtype dt)
{
    return dt == AD_F64 ? ad__gemm_kernel_f64(AD__GEMM_BEST) : ad__gemm_kernel_f32(AD__GEMM_BEST);
}

/* The reduction block for a reduction of length k: at most the kernel's kc (and AD__CONV_KC), and
** the blocks of equal length (288 = 2 x 144, not 256 + 32: a short block pays the C tile's load
** and store for little work). */
static int64_t conv_kc(const ad__gemm_kernel *kr, int64_t k)
{
    int64_t most = kr->kc < AD__CONV_KC ? kr->kc : AD__CONV_KC, blocks = (k + most - 1) / most;
    int64_t kc = (k + blocks - 1) / blocks;
    return kc < 1 ? 1 : kc;
}

/* The share of a tile grid's multiply-adds that are useful for an m x n product. */
static double tile_fit(const ad__gemm_kernel *kr, int64_t m, int64_t n)
{
    int64_t mp = (m + kr->mr - 1) / kr->mr * kr->mr, np = (n + kr->nr - 1) / kr->nr * kr->nr;
    return (double)m * (double)n / ((double)mp * (double)np);
}

/* Fills the job's blocking and thread split and runs it on nth threads (buffers from the tape's arena). */
static ad_status cg_launch(ad_tape *t, cjob *jb, ad_dtype dt, int nth)
{
    const ad__gemm_kernel *kr = jb->kr;
    size_t es = ad_dtype_size(dt);
    jb->mcb = kr->mc / kr->mr * kr->mr;
    jb->kcb = conv_kc(kr, jb->k);
    int64_t un = (jb->n + kr->nr - 1) / kr->nr, um = (jb->m + kr->mr - 1) / kr->mr;
    jb->split_n = jb->split ? jb->split == 2 : un >= nth || un >= um;
    int64_t ncols = jb->split_n ? (un + nth - 1) / nth * kr->nr : un * kr->nr;
    jb->ncb = ncols < kr->nc ? ncols : kr->nc;
    jb->abuf_bytes = jb->apack ? 0 : up64((size_t)(jb->mcb * jb->kcb) * es);
    jb->buf_bytes = jb->abuf_bytes + up64((size_t)(jb->ncb * jb->kcb + AD__CONV_SLACK) * es);
    char *mem = ad__arena_alloc(t, (size_t)nth * jb->buf_bytes + 64);
    if (!mem) return AD_ERR_NOMEM;
    jb->bufs = (void *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    ad__parallel(nth, dt == AD_F64 ? run_share_f64 : run_share_f32, jb);
    return AD_OK;
}

/* A (m x k, row stride lda) packed whole for the kernel of dt, in the tape's arena. */
static const void *pack_weights(ad_tape *t, ad_dtype dt, const ad__gemm_kernel *kr, const void *a, int64_t lda,
                                int64_t m, int64_t k)
{
    int64_t mpad = (m + kr->mr - 1) / kr->mr * kr->mr;
    int kcb = (int)conv_kc(kr, k);
    void *dst = ad__arena_alloc(t, (size_t)(mpad * k) * ad_dtype_size(dt) + 64);
    if (!dst) return NULL;
    dst = (void *)(((uintptr_t)dst + 63) & ~(uintptr_t)63);
    if (dt == AD_F64)
        pack_a_all_f64(a, lda, m, k, kr->mr, kcb, dst);
    else
        pack_a_all_f32(a, lda, m, k, kr->mr, kcb, dst);
    return dst;
}

/* Copies planes into a zero-padded buffer (s > 1: each row split into its s column phases). */
typedef struct pad_job {
    ad_dtype dt;
    const void *x;
    void *out;
    int64_t planes, h, w, ph, pw, s;
} pad_job;

static void pad_share(void *ctx, int tid, int nth)
{
    const pad_job *j = ctx;
    int64_t p0 = j->planes * tid / nth, p1 = j->planes * (tid + 1) / nth;
    if (j->s > 1) {
        if (j->dt == AD_F64)
            pad_phases_f64(j->x, j->h, j->w, j->ph, j->pw, j->s, p0, p1, j->out);
        else
            pad_phases_f32(j->x, j->h, j->w, j->ph, j->pw, j->s, p0, p1, j->out);
    } else
        ad__pad_planes(j->dt == AD_F64, j->x, j->h, j->w, j->ph, j->pw, p0, p1, j->out);
}

/* The length of a padded row of wp elements split into s column phases (see pad_phases in
** conv_gemm.inc): s phases of ceil(wp / s) elements each. */
static int64_t phased_row(int64_t wp, int64_t s) { return (wp + s - 1) / s * s; }

static const void *padded_ex(ad_tape *t, ad_dtype dt, const void *x, int64_t planes, int64_t h, int64_t w, int64_t ph,
                             int64_t pw, int64_t s, int64_t slack)
{
    if (ph == 0 && pw == 0 && s == 1 && slack == 0) return x;
    int64_t sz;
    if (!ad__mul_ok(planes, (h + 2 * ph) * phased_row(w + 2 * pw, s), &sz) || sz > INT64_MAX - slack) return NULL;
    size_t es = ad_dtype_size(dt);
    char *out = ad__arena_alloc(t, (size_t)(sz + slack) * es);
    if (!out) return NULL;
    pad_job j = {dt, x, out, planes, h, w, ph, pw, s};
    ad__parallel(sz >= ((int64_t)1 << 18) ? conv_threads(1, 1, CONV_THREAD_FLOPS) : 1, pad_share, &j);
    memset(out + (size_t)sz * es, 0, (size_t)slack * es);
    return out;
}

/* The planes of x ([planes, h, w]) with a zero border of ph rows and pw columns, or x itself when
** there is no border. Split over threads by planes when large. */
static const void *padded(ad_tape *t, ad_dtype dt, const void *x, int64_t planes, int64_t h, int64_t w, int64_t ph,
                          int64_t pw, int64_t slack)
{
    return padded_ex(t, dt, x, planes, h, w, ph, pw, 1, slack);
}

/* ---- the direct path: horizontal stride 1, the image read in place (conv_kernels.c) ---- */

#define DCONV_SLACK 64 /* elements past a padded image that a kernel's last vector may read */

/* A direct convolution: y [n][m][oh][ow] (image stride yb) from the padded image x (image stride
** xb, rows wp apart, output rows rs apart) with m x k weights packed whole; offs[p] is tap p's offset. */
typedef struct dc_job {
    const ad__dconv_kernel *dk;
    bool f64;
    const void *apack;
    const int64_t *offs;
    int64_t k, m, n, oh, ow;
    const void *x;
    int64_t xb, rs;
    void *y;
    int64_t yb;
} dc_job;

static void dc_share(void *ctx, int tid, int nth)
{
    const dc_job *j = ctx;
    const ad__dconv_kernel *dk = j->dk;
    int rows = AD__DCONV_MAX_ROWS;
    int64_t groups = (j->oh + rows - 1) / rows, units = j->n * groups, ohw = j->oh * j->ow;
    size_t es = j->f64 ? sizeof(double) : sizeof(float);
    for (int64_t u = units * tid / nth; u < units * (tid + 1) / nth; u++) {
        int64_t b = u / groups, oy0 = u % groups * rows;
        int nrows = j->oh - oy0 < rows ? (int)(j->oh - oy0) : rows;
        for (int64_t ox0 = 0; ox0 < j->ow; ox0 += dk->w) {
            int lanes = j->ow - ox0 < dk->w ? (int)(j->ow - ox0) : dk->w;
            const char *xb = (const char *)j->x + (size_t)(b * j->xb + oy0 * j->rs + ox0) * es;
            char *yb = (char *)j->y + (size_t)(b * j->yb + oy0 * j->ow + ox0) * es;
            for (int64_t i0 = 0; i0 < j->m; i0 += dk->mr) {
                int mv = j->m - i0 < dk->mr ? (int)(j->m - i0) : dk->mr;
                const char *a = (const char *)j->apack + (size_t)(i0 * j->k) * es;
                char *c = yb + (size_t)(i0 * ohw) * es;
                if (j->f64)
                    dk->f64[nrows - 1](j->k, (const double *)(const void *)a, (const double *)(const void *)xb,
                                       j->offs, j->rs, (double *)(void *)c, ohw, j->ow, mv, lanes);
                else
                    dk->f32[nrows - 1](j->k, (const float *)(const void *)a, (const float *)(const void *)xb,
                                       j->offs, j->rs, (float *)(void *)c, ohw, j->ow, mv, lanes);
            }
        }
    }
}

/* The direct kernel for a convolution producing m channels of width ow, or NULL when the packed
** path suits it better (no SIMD kernel, or tiles mostly wasted). A horizontal stride above 1 reads
** the image with its rows split into column phases (pad_phases), where a tap's columns are again
** consecutive. */
static const ad__dconv_kernel *dconv_for(ad_dtype dt, int64_t m, int64_t ow)
{
    const ad__dconv_kernel *dk = ad__dconv_select(dt == AD_F64);
    if (!dk) return NULL;
    double lanes = (double)ow / (double)((ow + dk->w - 1) / dk->w * dk->w);
    double rows = (double)m / (double)((m + dk->mr - 1) / dk->mr * dk->mr);
    return lanes >= 0.75 && rows >= 0.75 ? dk : NULL;
}

/* Runs a direct convolution: weights w (m x cin kh kw, row stride ldw), input planes xp (already
** padded, cin channels from xp, xc apart, images xb apart, rows wp apart, each row in q->sw column
** phases of wp / q->sw elements), output y as in dc_job. */
static ad_status dconv_run(ad_tape *t, ad_dtype dt, const ad__dconv_kernel *dk, const void *w, int64_t ldw,
                           int64_t m, int64_t cin, const geom *q, const void *xp, int64_t xc, int64_t xb, int64_t wp,
                           int64_t n, int64_t oh, int64_t ow, void *y, int64_t yb)
{
    int64_t s = q->sw, plen = wp / s;
    int64_t khw = q->kh * q->kw, k = cin * khw, mpad = (m + dk->mr - 1) / dk->mr * dk->mr;
    size_t es = ad_dtype_size(dt);
    int64_t *offs = ad__arena_alloc(t, (size_t)k * sizeof *offs);
    char *ap = ad__arena_alloc(t, (size_t)(mpad * k) * es + 64);
    if (!offs || !ap) return AD_ERR_NOMEM;
    ap = (char *)(((uintptr_t)ap + 63) & ~(uintptr_t)63);
    for (int64_t c = 0, p = 0; c < cin; c++)
        for (int64_t i = 0; i < q->kh; i++)
            for (int64_t j = 0; j < q->kw; j++) offs[p++] = c * xc + i * q->dh * wp + j * q->dw % s * plen + j * q->dw / s;
    if (dt == AD_F64)
        pack_a_all_f64(w, ldw, m, k, dk->mr, (int)k, (double *)(void *)ap);
    else
        pack_a_all_f32(w, ldw, m, k, dk->mr, (int)k, (float *)(void *)ap);
    dc_job j = {dk, dt == AD_F64, ap, offs, k, m, n, oh, ow, xp, xb, q->sh * wp, y, yb};
    ad__parallel(conv_threads(m, n * oh * ow, k), dc_share, &j);
    return AD_OK;
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
    int64_t hp = q.h + 2 * q.ph, wp = q.w + 2 * q.pw;
    const ad__gemm_kernel *kr = conv_kernel(dt);
    const ad__lconv_kernel *lk = ad__wino_for(dt, &q, false, w->data);
    if (lk) { /* 3x3 or 5x5, stride 1, F32: Winograd F(2x2, 3x3) or F(2x2, 5x5) */
        for (int64_t g = 0; g < q.g; g++) {
            ad_status st = ad__wino_run(t, lk, (int)q.kh, (const float *)w->data + g * og * kk, kk, q.kh * q.kw, false, og, cg,
                                        (const float *)x->data + g * cg * q.h * q.w, q.c * q.h * q.w, q.h, q.w, q.ph,
                                        q.pw, q.n, (float *)n->value.data + g * og * ohw, q.o * ohw);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    lk = ad__lconv_for(dt, og, kk);
    if (lk) {
        for (int64_t g = 0; g < q.g; g++) {
            ad_status st = ad__lconv_run(t, dt, lk, (const char *)w->data + (size_t)(g * og * kk) * es, kk, og, cg, &q,
                                         (const char *)x->data + (size_t)(g * cg * q.h * q.w) * es, q.c * q.h * q.w,
                                         q.h, q.w, q.n, q.oh, q.ow, (char *)n->value.data + (size_t)(g * og * ohw) * es,
                                         q.o * ohw);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    const ad__dconv_kernel *dk = dconv_for(dt, og, q.ow);
    /* Without a border (a 1x1 convolution, say) the direct kernel reads the images in place: only
    ** the last image is copied, for the slack its last vectors read past it (an image's vectors
    ** read at most into the next image, which is as large). The whole batch's copy had been 10%
    ** of bench_conv's 1x1 samples at two threads. */
    if (dk && q.ph == 0 && q.pw == 0 && q.sw == 1 && q.n > 1 && q.c * q.h * q.w >= DCONV_SLACK) {
        const char *last = padded_ex(t, dt, (const char *)x->data + (size_t)((q.n - 1) * q.c * q.h * q.w) * es, q.c,
                                     q.h, q.w, 0, 0, 1, DCONV_SLACK);
        if (!last) return AD_ERR_NOMEM;
        int64_t hw = q.h * q.w;
        for (int64_t g = 0; g < q.g; g++) {
            const char *wg = (const char *)w->data + (size_t)(g * og * kk) * es;
            char *yg = (char *)n->value.data + (size_t)(g * og * ohw) * es;
            ad_status st = dconv_run(t, dt, dk, wg, kk, og, cg, &q, (const char *)x->data + (size_t)(g * cg * hw) * es,
                                     hw, q.c * hw, q.w, q.n - 1, q.oh, q.ow, yg, q.o * ohw);
            if (st == AD_OK)
                st = dconv_run(t, dt, dk, wg, kk, og, cg, &q, last + (size_t)(g * cg * hw) * es, hw, q.c * hw, q.w, 1,
                               q.oh, q.ow, yg + (size_t)((q.n - 1) * q.o * ohw) * es, q.o * ohw);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    const char *xp = padded_ex(t, dt, x->data, q.n * q.c, q.h, q.w, q.ph, q.pw, dk ? q.sw : 1, dk ? DCONV_SLACK : 0);
    if (!xp) return AD_ERR_NOMEM;
    if (dk) wp = phased_row(wp, q.sw); /* the rows in column phases */
    for (int64_t g = 0; g < q.g; g++) {
        const char *wg = (const char *)w->data + (size_t)(g * og * kk) * es;
        char *yg = (char *)n->value.data + (size_t)(g * og * ohw) * es;
        const char *xg = xp + (size_t)(g * cg * hp * wp) * es;
        ad_status st;
        if (dk) {
            st = dconv_run(t, dt, dk, wg, kk, og, cg, &q, xg, hp * wp, q.c * hp * wp, wp, q.n, q.oh, q.ow, yg,
                           q.o * ohw);
        } else {
            const void *ap = pack_weights(t, dt, kr, wg, kk, og, kk);
            if (!ap) return AD_ERR_NOMEM;
            cjob jb = {.kr = kr, .m = og, .n = q.n * ohw, .k = kk, .beta = 0, .apack = ap, .bmode = CP_IM2COL,
                       .x = xg, .xend = xp + (size_t)(q.n * q.c * hp * wp) * es, .xc = hp * wp, .xb = q.c * hp * wp,
                       .wp = wp, .oh = q.oh, .ow = q.ow, .kh = q.kh, .kw = q.kw, .sh = q.sh, .sw = q.sw, .dh = q.dh,
                       .dw = q.dw, .cv = {yg, ohw, q.o * ohw, ohw}};
            st = cg_launch(t, &jb, dt, conv_threads(og, q.n * ohw, kk));
        }
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

/* The input gradient of a stride-1 convolution is itself a stride-1 convolution: of g, padded by
** d (k - 1) - p, with the kernel flipped and its in and out channels swapped. */
static bool gi_as_conv(const geom *q)
{
    return q->sh == 1 && q->sw == 1 && q->dh * (q->kh - 1) >= q->ph && q->dw * (q->kw - 1) >= q->pw;
}

/* Group g's weights as the matrix the input gradient needs: flipped [cg][og kh kw] (as a
** convolution), or transposed [cg kh kw][og] (for col2im). */
#define WEIGHT_MATRIX(T)                                                                                 \
    static void wmat_##T(const geom *q, const T *w, bool flip, T *out)                                   \
    {                                                                                                    \
        int64_t cg = q->c / q->g, og = q->o / q->g, khw = q->kh * q->kw;                                 \
        for (int64_t o = 0; o < og; o++)                                                                 \
            for (int64_t c = 0; c < cg; c++)                                                             \
                for (int64_t i = 0; i < khw; i++) {                                                      \
                    T v = w[(o * cg + c) * khw + i];                                                     \
                    if (flip)                                                                            \
                        out[(c * og + o) * khw + (khw - 1 - i)] = v;                                     \
                    else                                                                                 \
                        out[(c * khw + i) * og + o] = v;                                                 \
                }                                                                                        \
    }
WEIGHT_MATRIX(float)
WEIGHT_MATRIX(double)

/* The general input gradient, per image (threads take whole images): col = W_g^T g[b, g] for
** each group, then col2im into the image. */
typedef struct gi_job {
    const geom *q;
    ad_dtype dt;
    const ad__gemm_kernel *kr;
    const void *const *apacks; /* per group: W_g^T packed */
    const void *gy;
    void *dx;
    char *bufs;                /* per thread: col, then A~/B~ buffers */
    size_t col_bytes, buf_bytes;
    cjob proto;
} gi_job;

static void gi_share(void *ctx, int tid, int nth)
{
    const gi_job *j = ctx;
    const geom *q = j->q;
    size_t es = ad_dtype_size(j->dt);
    int64_t cg = q->c / q->g, og = q->o / q->g, ohw = q->oh * q->ow, hw = q->h * q->w;
    char *mem = j->bufs + (size_t)tid * j->buf_bytes, *col = mem;
    char *bbuf = mem + j->col_bytes;
    for (int64_t b = q->n * tid / nth; b < q->n * (tid + 1) / nth; b++)
        for (int64_t g = 0; g < q->g; g++) {
            cjob jb = j->proto;
            jb.apack = j->apacks[g];
            jb.bv = (view){(char *)(uintptr_t)j->gy + (size_t)((b * q->o + g * og) * ohw) * es, INT64_MAX, 0, ohw};
            jb.cv = (view){col, INT64_MAX, 0, ohw};
            char *xg = (char *)j->dx + (size_t)((b * q->c + g * cg) * hw) * es;
            memset(xg, 0, (size_t)(cg * hw) * es);
            if (j->dt == AD_F64) {
                share_f64(&jb, 0, jb.m, 0, jb.n, NULL, (double *)(void *)bbuf);
                col2im_f64(q, cg, (const double *)(const void *)col, (double *)(void *)xg);
            } else {
                share_f32(&jb, 0, jb.m, 0, jb.n, NULL, (float *)(void *)bbuf);
                col2im_f32(q, cg, (const float *)(const void *)col, (float *)(void *)xg);
            }
        }
}

ad_status ad__fwd_conv2d_grad_input(ad_tape *t, ad_node *n)
{
    const ad_tensor *gy = ad__in(t, n, 0), *w = ad__in(t, n, 1);
    ad_conv2d_params p = attr_conv(&n->attr);
    geom q = conv_geom(n->value.shape, w->shape, &p);
    ad_dtype dt = gy->dtype;
    size_t es = ad_dtype_size(dt);
    int64_t cg = q.c / q.g, og = q.o / q.g, kk = cg * q.kh * q.kw, ohw = q.oh * q.ow, hw = q.h * q.w;
    const ad__gemm_kernel *kr = conv_kernel(dt);
    int64_t kg = og * q.kh * q.kw;
    /* channels as vector lanes, a phase per residue of the input position; strides above 1 with
    ** 64-byte vectors only (with AVX2's 32, on this project's AVX-512 machine, the stride-2 3x3 of
    ** bench_conv took 8.2 ms this way against 6.7 by col2im) */
    const ad__lconv_kernel *lk = ad__wino_for(dt, &q, true, w->data);
    if (lk) { /* 3x3 or 5x5, stride 1, F32: Winograd on gy with the flipped, transposed kernel */
        for (int64_t g = 0; g < q.g; g++) {
            ad_status st = ad__wino_run(t, lk, (int)q.kh, (const float *)w->data + g * og * kk, q.kh * q.kw, kk, true, cg, og,
                                        (const float *)gy->data + g * og * ohw, q.o * ohw, q.oh, q.ow, q.kh - 1 - q.ph,
                                        q.kw - 1 - q.pw, q.n, (float *)n->value.data + g * cg * hw, q.c * hw);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    lk = ad__lconv_for(dt, cg, kg);
    if (lk && (q.sh > 1 || q.sw > 1) && lk->w * (int64_t)es < 64) lk = NULL;
    if (lk) {
        for (int64_t g = 0; g < q.g; g++) {
            ad_status st = ad__lconv_grad_input(t, dt, lk, &q, (const char *)w->data + (size_t)(g * og * kk) * es,
                                                (const char *)gy->data + (size_t)(g * og * ohw) * es,
                                                (char *)n->value.data + (size_t)(g * cg * hw) * es);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    /* as a convolution: C = dX [cg][positions], unless cg is so small that most of the kernel's
    ** tile would be wasted (a first layer's one channel); else col = W^T G [kk][positions] per
    ** image and col2im; wm holds the weights as either needs them */
    void *wm = ad__arena_alloc(t, (size_t)(og * kk) * es);
    if (!wm) return AD_ERR_NOMEM;
    if (gi_as_conv(&q) && (dconv_for(dt, cg, q.w) || tile_fit(kr, cg, kr->nr) >= 0.75)) {
        int64_t ph = q.dh * (q.kh - 1) - q.ph, pw = q.dw * (q.kw - 1) - q.pw;
        int64_t hp = q.oh + 2 * ph, wp = q.ow + 2 * pw;
        const ad__dconv_kernel *dk = dconv_for(dt, cg, q.w);
        /* the flipped kernel as a convolution's geometry: stride 1, same dilation */
        geom fq = q;
        fq.sh = fq.sw = 1;
        const char *gp = padded(t, dt, gy->data, q.n * q.o, q.oh, q.ow, ph, pw, dk ? DCONV_SLACK : 0);
        if (!gp) return AD_ERR_NOMEM;
        for (int64_t g = 0; g < q.g; g++) {
            const char *wg = (const char *)w->data + (size_t)(g * og * kk) * es;
            if (dt == AD_F64)
                wmat_double(&q, (const double *)(const void *)wg, true, wm);
            else
                wmat_float(&q, (const float *)(const void *)wg, true, wm);
            const char *xg = gp + (size_t)(g * og * hp * wp) * es;
            char *yg = (char *)n->value.data + (size_t)(g * cg * hw) * es;
            ad_status st;
            if (dk) {
                st = dconv_run(t, dt, dk, wm, kg, cg, og, &fq, xg, hp * wp, q.o * hp * wp, wp, q.n, q.h, q.w, yg,
                               q.c * hw);
            } else {
                const void *ap = pack_weights(t, dt, kr, wm, kg, cg, kg);
                if (!ap) return AD_ERR_NOMEM;
                cjob jb = {.kr = kr, .m = cg, .n = q.n * hw, .k = kg, .beta = 0, .apack = ap, .bmode = CP_IM2COL,
                           .x = xg, .xend = gp + (size_t)(q.n * q.o * hp * wp) * es, .xc = hp * wp,
                           .xb = q.o * hp * wp, .wp = wp, .oh = q.h, .ow = q.w, .kh = q.kh, .kw = q.kw, .sh = 1,
                           .sw = 1, .dh = q.dh, .dw = q.dw, .cv = {yg, hw, q.c * hw, hw}};
                st = cg_launch(t, &jb, dt, conv_threads(cg, q.n * hw, kg));
            }
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    const void **apacks = ad__arena_alloc(t, (size_t)q.g * sizeof *apacks);
    if (!apacks) return AD_ERR_NOMEM;
    for (int64_t g = 0; g < q.g; g++) {
        const char *wg = (const char *)w->data + (size_t)(g * og * kk) * es;
        if (dt == AD_F64)
            wmat_double(&q, (const double *)(const void *)wg, false, wm);
        else
            wmat_float(&q, (const float *)(const void *)wg, false, wm);
        apacks[g] = pack_weights(t, dt, kr, wm, og, kk, og);
        if (!apacks[g]) return AD_ERR_NOMEM;
    }
    int nth = conv_threads(q.n * q.g * kk, ohw, og);
    if (nth > q.n) nth = (int)q.n;
    gi_job j = {&q, dt, kr, apacks, gy->data, n->value.data, NULL, up64((size_t)(kk * ohw) * es), 0,
                {.kr = kr, .m = kk, .n = ohw, .k = og, .beta = 0, .bmode = CP_COLS}};
    j.proto.mcb = kr->mc / kr->mr * kr->mr;
    j.proto.kcb = conv_kc(kr, og);
    int64_t npad = (ohw + kr->nr - 1) / kr->nr * kr->nr;
    j.proto.ncb = npad < kr->nc ? npad : kr->nc;
    j.buf_bytes = j.col_bytes + up64((size_t)(j.proto.ncb * j.proto.kcb + AD__CONV_SLACK) * es);
    char *mem = ad__arena_alloc(t, (size_t)nth * j.buf_bytes + 64);
    if (!mem) return AD_ERR_NOMEM;
    j.bufs = (char *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    ad__parallel(nth, gi_share, &j);
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
    int64_t hp = q.h + 2 * q.ph, wp = q.w + 2 * q.pw;
    const ad__gemm_kernel *kr = conv_kernel(dt);
    const ad__lconv_kernel *lk = ad__wino_wgrad_for(dt, &q);
    if (lk) { /* 3x3 or 5x5, stride 1, F32: Winograd F(3x3, 2x2) or F(5x5, 2x2) */
        for (int64_t g = 0; g < q.g; g++) {
            ad_status st = ad__wino_wgrad(t, lk, (int)q.kh, (const float *)x->data + g * cg * q.h * q.w, q.c * q.h * q.w,
                                          (const float *)gy->data + g * og * ohw, q.o * ohw, og, cg, q.h, q.w, q.ph,
                                          q.pw, q.n, (float *)n->value.data + g * og * kk);
            if (st != AD_OK) return st;
        }
        return AD_OK;
    }
    const char *xp = padded(t, dt, x->data, q.n * q.c, q.h, q.w, q.ph, q.pw, 0);
    if (!xp) return AD_ERR_NOMEM;
    const ad__wgrad_kernel *wk = ad__wgrad_select(dt == AD_F64);
    if (wk) return ad__wgrad_run(t, dt, wk, &q, xp, gy->data, n->value.data);
    /* dW_g [og][kk] = G_g [og][positions] col^T, or, when its tiles fit the kernel better, dW_g^T =
    ** col G_g^T (A packed from the image, B from G_g's rows, C written transposed) */
    bool tr = tile_fit(kr, kk, og) > tile_fit(kr, og, kk);
    for (int64_t g = 0; g < q.g; g++) {
        view gv = {(char *)(uintptr_t)gy->data + (size_t)(g * og * ohw) * es, ohw, q.o * ohw, ohw};
        cjob jb = {.kr = kr, .m = tr ? kk : og, .n = tr ? og : kk, .k = q.n * ohw, .beta = 0, .apack = NULL,
                   .amode = tr ? CP_IM2COL_T : CP_ROWS, .bmode = tr ? CP_ROWS : CP_IM2COL_T, .av = gv, .bv = gv,
                   .x = xp + (size_t)(g * cg * hp * wp) * es, .xend = xp + (size_t)(q.n * q.c * hp * wp) * es,
                   .xc = hp * wp,
                   .xb = q.c * hp * wp, .wp = wp, .oh = q.oh, .ow = q.ow, .kh = q.kh, .kw = q.kw, .sh = q.sh,
                   .sw = q.sw, .dh = q.dh, .dw = q.dw, .ct = tr, .split = tr ? 1 : 2, /* the im2col side */
                   .cv = {(char *)n->value.data + (size_t)(g * og * kk) * es, INT64_MAX, 0, kk}};
        ad_status st = cg_launch(t, &jb, dt, conv_threads(og, kk, q.n * ohw));
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

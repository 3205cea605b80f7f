/* conv_wino.c: 3x3 and 5x5 stride-1 convolutions in F32 by Winograd's minimal filtering F(2x2, 3x3)
** and F(2x2, 5x5) (forward, input gradient; the weight gradient's F(3x3, 2x2) and F(5x5, 2x2) are in
** conv_wino_wgrad.c): 16 (36) products for 4 outputs where the direct convolution takes 36 (100), on
** the lane kernels. */
#include "conv_wino.h"
#include "conv_wino_tx.h"

#include "tape.h"

#include <string.h>

/*
** Winograd's F(2x2, r x r) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
** 2016): a 2x2 block of outputs of an r x r filter g over the a x a input window d (a = r + 1) is
**     Y = A^T [ (G g G^T) .* (B^T d B) ] A.
** For r = 3: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
** 0 0 1] and A^T = [1 1 1 0; 0 1 -1 -1]; for r = 5 the matrices are wino_bt5, wino_g5, wino_at5.
** Summed over input channels, each of the a^2 elementwise products is a matrix product:
** M[xi][tile][co] = sum_ci V[xi][tile][ci] U[xi][ci][co], a^2 multiply-adds per tile and channel
** pair where the direct convolution takes 4 r^2.
**
** Here, per unit of work (a few whole images, or a block of tile rows of one):
**   1. each image's input rows, zero-bordered, channels last (one transpose, then row copies);
**   2. V = B^T d B for every tile, channels last (vector arithmetic over the channels);
**   3. the a^2 products on the lane kernels (the output channels as vector lanes, V's entries
**      broadcast: a tile is a "position", an input channel a "tap"), against U = G g G^T, which is
**      computed once per call (in double, then rounded) and packed as the lane kernels read it;
**   4. Y = A^T M A per tile, channels last, then transposed into the output's rows.
** The units do not depend on the thread count, and each output is computed the same way whatever
** thread runs it, so the results are the same bits at any thread count. They differ from the direct
** sum's by rounding: the transforms add and subtract up to a^2 terms (tests/test_conv.c holds them
** to the definition).
*/

#define WINO_BLOCK_BYTES (1 << 20) /* V and M of a block of tiles, at most (they stay in the L2 cache) */
#define WINO_MAX_IMGS 8            /* images in one unit of work, at most */
/* Inputs and weights below this in magnitude keep the transforms' sums finite. An infinity would
** not: the transforms subtract one window entry from another, and inf - inf is NaN where the
** direct sum gives an infinite output. So weights with an infinity, a NaN or a value this large
** leave the convolution to the direct paths, and a block of input holding one is computed
** directly (wino_direct). */
#define WINO_BIG 0x1p100f /* (wino_tame compares bits with 2^100's) */

/* Whether every one of the n floats at v is finite and below WINO_BIG in magnitude: their bits
** without the sign, as integers, are below WINO_BIG's (infinities and NaNs are above). */
typedef int32_t wino_vi __attribute__((vector_size(64), may_alias, aligned(4)));

AD_CLONES bool ad__wino_tame(const float *v, int64_t n)
{
    const int32_t big = 0x71800000; /* the bits of 2^100 */
    wino_vi acc = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc |= (*(const wino_vi *)(const void *)(v + i) & 0x7fffffff) >= big;
    int32_t bad = 0;
    for (int l = 0; l < 16; l++) bad |= acc[l];
    for (; i < n; i++) {
        int32_t bits;
        memcpy(&bits, v + i, sizeof bits);
        bad |= (bits & 0x7fffffff) >= big;
    }
    return !bad;
}

const ad__lconv_kernel *ad__wino_for(ad_dtype dt, const geom *q, bool input_grad, const void *w)
{
    if (dt != AD_F32 || q->kh != q->kw || (q->kh != 3 && q->kh != 5) || q->sh != 1 || q->sw != 1 || q->dh != 1 ||
        q->dw != 1)
        return NULL;
    int64_t cg = q->c / q->g, og = q->o / q->g;
    if (cg < WINO_MIN_C || og < WINO_MIN_C || q->n < 1 || q->oh < 2 || q->ow < 2) return NULL;
    if (input_grad && (q->ph > q->kh - 1 || q->pw > q->kw - 1)) return NULL; /* gy's border would be negative */
    int64_t m = input_grad ? cg : og;
    const ad__lconv_kernel *lk = ad__lconv_select(false);
    if (!lk) return NULL;
    double fill = (double)m / (double)((m + lk->w - 1) / lk->w * lk->w);
    if (fill < 0.75) return NULL;
    return ad__wino_tame(w, q->o * cg * q->kh * q->kw) ? lk : NULL;
}

/* G of F(2, r): F(2, 3) on the points 0, 1, -1 and infinity; F(2, 5) on 0, 1, -1, 1/2, -2 and
** infinity (of the usual choices the one whose F32 results came closest to F64's sums: 3.8e-6 against
** 8.9e-6 for 0, 1, -1, 2, -2, on 32 channels of 5x5 windows with outputs up to 3.1). */
static const double wino_g3[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wino_g5[6][5] = {{1, 0, 0, 0, 0},
                                     {1 / 3.0, 1 / 3.0, 1 / 3.0, 1 / 3.0, 1 / 3.0},
                                     {-1 / 3.0, 1 / 3.0, -1 / 3.0, 1 / 3.0, -1 / 3.0},
                                     {-16 / 15.0, -8 / 15.0, -4 / 15.0, -2 / 15.0, -1 / 15.0},
                                     {1 / 15.0, -2 / 15.0, 4 / 15.0, -8 / 15.0, 16 / 15.0},
                                     {0, 0, 0, 0, 1}};

/* U = G g G^T of input channel ci's filters for every output channel co < mpad (zero past m), in
** double, then rounded: u[xi][co] (rows mpad apart); gt and gg are scratch (r r and a r rows). */
AD_CLONES static void wino_u(int r, const double *gm, const float *w, int64_t sco, bool flip, int64_t m,
                             int64_t mpad, double *gt, double *gg, float *u)
{
    int a = r + 1, rr = r * r;
    for (int i = 0; i < rr; i++) /* the filters, tap by tap, output channels contiguous */
        for (int64_t co = 0; co < mpad; co++) gt[i * mpad + co] = co < m ? (double)w[co * sco + (flip ? rr - 1 - i : i)] : 0;
    for (int i = 0; i < a; i++) /* G g */
        for (int k = 0; k < r; k++) {
            double *o = gg + (i * r + k) * mpad;
            for (int64_t co = 0; co < mpad; co++) o[co] = 0;
            for (int e = 0; e < r; e++) {
                double f = gm[i * r + e];
                if (f == 0) continue;
                const double *src = gt + (e * r + k) * mpad;
                for (int64_t co = 0; co < mpad; co++) o[co] += f * src[co];
            }
        }
    for (int i = 0; i < a; i++) /* (G g) G^T, summed in gt (free now) */
        for (int k = 0; k < a; k++) {
            for (int64_t co = 0; co < mpad; co++) gt[co] = 0;
            for (int e = 0; e < r; e++) {
                double f = gm[k * r + e];
                if (f == 0) continue;
                const double *src = gg + (i * r + e) * mpad;
                for (int64_t co = 0; co < mpad; co++) gt[co] += src[co] * f;
            }
            float *o = u + (i * a + k) * mpad;
            for (int64_t co = 0; co < mpad; co++) o[co] = (float)gt[co];
        }
}

/* U of every channel pair, packed per xi as the lane kernels read their weights: per tile of
** channel vectors (ad__lconv_nv) [cin][nv w]. Threads take input channels. */
typedef struct wino_wjob {
    const ad__lconv_kernel *lk;
    int r;
    const float *w;
    int64_t sco, sci;
    bool flip;
    int64_t m, cin, mpad;
    float *up;
    char *scratch; /* per thread: gt, gg (double), u (float) */
    size_t scratch_bytes;
} wino_wjob;

static void wino_weights_share(void *ctx, int tid, int nth)
{
    const wino_wjob *j = ctx;
    const ad__lconv_kernel *lk = j->lk;
    int r = j->r, a = r + 1, na = a * a;
    int64_t mpad = j->mpad, cin = j->cin, nvec = mpad / lk->w;
    double *gt = (double *)(void *)(j->scratch + (size_t)tid * j->scratch_bytes);
    float *u = (float *)(void *)(gt + (r * r + a * r) * mpad);
    const double *gm = r == 3 ? &wino_g3[0][0] : &wino_g5[0][0]; /* a x r */
    for (int64_t ci = cin * tid / nth; ci < cin * (tid + 1) / nth; ci++) {
        wino_u(r, gm, j->w + ci * j->sci, j->sco, j->flip, j->m, mpad, gt, gt + r * r * mpad, u);
        for (int64_t v0 = 0; v0 < nvec;) {
            int64_t nv = ad__lconv_nv(nvec, lk->max_nv, v0), tw = nv * lk->w;
            for (int xi = 0; xi < na; xi++)
                memcpy(j->up + xi * mpad * cin + v0 * lk->w * cin + ci * tw, u + xi * mpad + v0 * lk->w,
                       (size_t)tw * sizeof(float));
            v0 += nv;
        }
    }
}

static float *wino_weights(ad_tape *t, const ad__lconv_kernel *lk, int r, const float *w, int64_t sco, int64_t sci,
                           bool flip, int64_t m, int64_t cin, int64_t mpad)
{
    int a = r + 1, na = a * a;
    int nth = conv_threads(1, 1, (int64_t)na * r * mpad * cin * 8); /* (about a hundredth of the products) */
    if (nth > cin) nth = (int)cin;
    size_t scratch = up64((size_t)((r * r + a * r) * mpad) * sizeof(double) + (size_t)(na * mpad) * sizeof(float));
    float *up = ad__arena_alloc(t, (size_t)(na * mpad * cin) * sizeof(float) + 64);
    char *sc = ad__arena_alloc(t, (size_t)nth * scratch + 64);
    if (!up || !sc) return NULL;
    up = (float *)(((uintptr_t)up + 63) & ~(uintptr_t)63);
    sc = (char *)(((uintptr_t)sc + 63) & ~(uintptr_t)63);
    wino_wjob j = {lk, r, w, sco, sci, flip, m, cin, mpad, up, sc, scratch};
    ad__parallel(nth, wino_weights_share, &j);
    return up;
}


/* V = B^T d B of one tile's channels [ch, ch + lanes): the window's row r, column j at d0 + r ld + j c. */
#define WINO_IN(T, LD, ST)                                                                               \
    do {                                                                                                 \
        const float *d1 = d0 + ld, *d2 = d1 + ld, *d3 = d2 + ld;                                         \
        T e[4][4];                                                                                       \
        _Pragma("GCC unroll 4") for (int jj = 0; jj < 4; jj++) {                                         \
            T a = LD(d0 + jj * c), b = LD(d1 + jj * c), cc = LD(d2 + jj * c), d = LD(d3 + jj * c);       \
            e[0][jj] = a - cc;                                                                           \
            e[1][jj] = b + cc;                                                                           \
            e[2][jj] = cc - b;                                                                           \
            e[3][jj] = b - d;                                                                            \
        }                                                                                                \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {                                            \
            ST(o + (4 * r + 0) * ldv, e[r][0] - e[r][2]);                                                \
            ST(o + (4 * r + 1) * ldv, e[r][1] + e[r][2]);                                                \
            ST(o + (4 * r + 2) * ldv, e[r][2] - e[r][1]);                                                \
            ST(o + (4 * r + 3) * ldv, e[r][1] - e[r][3]);                                                \
        }                                                                                                \
    } while (0)

/* Y = A^T M A of one tile's channels: M's entry xi at s[xi ldm], outputs (a, b) at o_a[b c]. */
#define WINO_OUT(T, LD, ST)                                                                              \
    do {                                                                                                 \
        T r0[4], r1[4];                                                                                  \
        _Pragma("GCC unroll 4") for (int jj = 0; jj < 4; jj++) {                                         \
            T a = LD(s + jj * ldm), b = LD(s + (4 + jj) * ldm), cc = LD(s + (8 + jj) * ldm);             \
            T d = LD(s + (12 + jj) * ldm);                                                               \
            r0[jj] = a + b + cc;                                                                         \
            r1[jj] = b - cc - d;                                                                         \
        }                                                                                                \
        ST(o0, r0[0] + r0[1] + r0[2]);                                                                   \
        ST(o0 + c, r0[1] - r0[2] - r0[3]);                                                               \
        ST(o1, r1[0] + r1[1] + r1[2]);                                                                   \
        ST(o1 + c, r1[1] - r1[2] - r1[3]);                                                               \
    } while (0)

#define WS_LD(p) (*(p))
#define WS_ST(p, v) (*(p) = (v))

/* The drivers of a transform macro: V = B^T d B of nt tiles (tile i's window at p + (2 i) c, rows
** ld apart, c channels each) into v[xi][i][c] (the xi-th matrix ldv floats after the previous); and
** Y = A^T M A of nt tiles (M's xi-th matrix ldm floats after the previous, tile i's c channels at
** row i) into y, tile i's outputs (a, b) at y + ((a yr) + 2 i + b) c. */
#define WINO_IN_DRIVER(NAME, BODY)                                                                       \
    AD_CLONES static void NAME(const float *p, int64_t ld, int64_t c, int64_t nt, float *v, int64_t ldv)  \
    {                                                                                                    \
        for (int64_t i = 0; i < nt; i++) {                                                               \
            int64_t ch = 0;                                                                              \
            for (; ch + 16 <= c; ch += 16) {                                                             \
                const float *d0 = p + 2 * i * c + ch;                                                    \
                float *o = v + i * c + ch;                                                               \
                BODY(wino_v, WV_LD, WV_ST);                                                              \
            }                                                                                            \
            for (; ch < c; ch++) {                                                                       \
                const float *d0 = p + 2 * i * c + ch;                                                    \
                float *o = v + i * c + ch;                                                               \
                BODY(float, WS_LD, WS_ST);                                                               \
            }                                                                                            \
        }                                                                                                \
    }
#define WINO_OUT_DRIVER(NAME, BODY)                                                                      \
    AD_CLONES static void NAME(const float *mm, int64_t ldm, int64_t c, int64_t nt, float *y, int64_t yr) \
    {                                                                                                    \
        for (int64_t i = 0; i < nt; i++) {                                                               \
            int64_t ch = 0;                                                                              \
            for (; ch + 16 <= c; ch += 16) {                                                             \
                const float *s = mm + i * c + ch;                                                        \
                float *o0 = y + 2 * i * c + ch, *o1 = o0 + yr * c;                                       \
                BODY(wino_v, WV_LD, WV_ST);                                                              \
            }                                                                                            \
            for (; ch < c; ch++) {                                                                       \
                const float *s = mm + i * c + ch;                                                        \
                float *o0 = y + 2 * i * c + ch, *o1 = o0 + yr * c;                                       \
                BODY(float, WS_LD, WS_ST);                                                               \
            }                                                                                            \
        }                                                                                                \
    }

WINO_IN_DRIVER(wino_in, WINO_IN)
WINO_OUT_DRIVER(wino_out, WINO_OUT)

/* F(2, 5)'s B^T (points 0, 1, -1, 1/2, -2, infinity) and A^T. */
static const float wino_bt5[6][6] = {{1, -1.5f, -2, 1.5f, 1, 0},   {0, -1, 0.5f, 2.5f, 1, 0},
                                     {0, 1, -2.5f, 0.5f, 1, 0},     {0, -2, -1, 2, 1, 0},
                                     {0, 0.5f, -1, -0.5f, 1, 0},    {0, 1, -1.5f, -2, 1.5f, 1}};
static const float wino_at5[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 0.5f, -2, 1}};

/* dst = sum_k m[k] v[k] over the nonzero m[k] of a constant row (the loops unrolled, the zeros
** dropped at compile time) */
#define WINO_DOT6(T, dst, mrow, v)                                                                       \
    do {                                                                                                 \
        T acc_ = (v)[0];                                                                                 \
        bool first_ = true;                                                                              \
        _Pragma("GCC unroll 6") for (int k_ = 0; k_ < 6; k_++) {                                         \
            float m_ = (mrow)[k_];                                                                       \
            if (m_ == 0.0f) continue;                                                                    \
            T t_ = (v)[k_];                                                                              \
            if (m_ != 1.0f && m_ != -1.0f) t_ = m_ * t_;                                                 \
            if (first_)                                                                                  \
                acc_ = m_ == -1.0f ? -t_ : t_;                                                           \
            else if (m_ == -1.0f)                                                                        \
                acc_ = acc_ - t_;                                                                        \
            else                                                                                         \
                acc_ = acc_ + t_;                                                                        \
            first_ = false;                                                                              \
        }                                                                                                \
        (dst) = acc_;                                                                                    \
    } while (0)

/* V = B^T d B of one tile's channels for F(2, 5): the window's row r, column j at d0 + r ld + j c. */
#define WINO_IN5(T, LD, ST)                                                                              \
    do {                                                                                                 \
        T e[6][6];                                                                                       \
        _Pragma("GCC unroll 6") for (int jj = 0; jj < 6; jj++) {                                         \
            T col[6];                                                                                    \
            _Pragma("GCC unroll 6") for (int k = 0; k < 6; k++) col[k] = LD(d0 + k * ld + jj * c);       \
            _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++) WINO_DOT6(T, e[r][jj], wino_bt5[r], col); \
        }                                                                                                \
        _Pragma("GCC unroll 6") for (int r = 0; r < 6; r++)                                              \
            _Pragma("GCC unroll 6") for (int l = 0; l < 6; l++) {                                        \
                T vo_;                                                                                   \
                WINO_DOT6(T, vo_, wino_bt5[l], e[r]);                                                    \
                ST(o + (6 * r + l) * ldv, vo_);                                                          \
            }                                                                                            \
    } while (0)

/* Y = A^T M A of one tile's channels for F(2, 5): M's entry xi at s[xi ldm], outputs (a, b) at o_a[b c]. */
#define WINO_OUT5(T, LD, ST)                                                                             \
    do {                                                                                                 \
        T r0[6], r1[6];                                                                                  \
        _Pragma("GCC unroll 6") for (int jj = 0; jj < 6; jj++) {                                         \
            T col[6];                                                                                    \
            _Pragma("GCC unroll 6") for (int k = 0; k < 6; k++) col[k] = LD(s + (6 * k + jj) * ldm);     \
            WINO_DOT6(T, r0[jj], wino_at5[0], col);                                                      \
            WINO_DOT6(T, r1[jj], wino_at5[1], col);                                                      \
        }                                                                                                \
        T y_[4];                                                                                         \
        WINO_DOT6(T, y_[0], wino_at5[0], r0);                                                            \
        WINO_DOT6(T, y_[1], wino_at5[1], r0);                                                            \
        WINO_DOT6(T, y_[2], wino_at5[0], r1);                                                            \
        WINO_DOT6(T, y_[3], wino_at5[1], r1);                                                            \
        ST(o0, y_[0]);                                                                                   \
        ST(o0 + c, y_[1]);                                                                               \
        ST(o1, y_[2]);                                                                                   \
        ST(o1 + c, y_[3]);                                                                               \
    } while (0)

WINO_IN_DRIVER(wino_in5, WINO_IN5)
WINO_OUT_DRIVER(wino_out5, WINO_OUT5)

typedef struct wino_job {
    const ad__lconv_kernel *lk;
    int r;          /* the window: 3 or 5 */
    const float *wt; /* the weights, for blocks computed directly */
    int64_t sco, sci;
    bool flip;
    const float *up; /* the packed U */
    const int64_t *offs; /* 0 .. cin - 1: input channel p's entry of a tile's row of V */
    int64_t m, mpad, nvec, cin;
    const float *x;
    int64_t xb, h, w, ph, pw;
    float *y;
    int64_t yb, oh, ow;
    int64_t n;
    int64_t th, tw, rb, per, units; /* tiles down and across; tile rows per block; blocks per image, in all */
    int64_t imgs, tb;               /* images per unit (when more than 1, each unit takes whole images); tiles */
    int64_t kcb;                    /* input channels per block of the products */
    char *bufs;
    size_t buf_bytes, p_off, v_off, m_off, y_off, i_off;
} wino_job;

/* The block's outputs by the definition, channels last as step 4 leaves them (output row oy of the
** block at yc + oy (2 tw) mp): for a block whose input holds an infinity, a NaN or a huge value. */
static void wino_direct(const wino_job *j, const float *p, int64_t wp, int64_t rows_out, float *yc)
{
    int64_t c = j->cin, mp = j->mpad;
    int rr = j->r * j->r;
    for (int64_t oy = 0; oy < rows_out; oy++)
        for (int64_t ox = 0; ox < j->ow; ox++)
            for (int64_t co = 0; co < j->m; co++) {
                float s = 0;
                for (int64_t ci = 0; ci < c; ci++)
                    for (int i = 0; i < rr; i++) {
                        float wv = j->wt[co * j->sco + ci * j->sci + (j->flip ? rr - 1 - i : i)];
                        s += wv * p[((oy + i / j->r) * wp + ox + i % j->r) * c + ci];
                    }
                yc[(oy * 2 * j->tw + ox) * mp + co] = s;
            }
}

/* Image b's output rows [oy0, oy1) from yc (channels last, 2 tw positions a row) into y. */
static void wino_image_out(const wino_job *j, const float *yc, int64_t b, int64_t oy0, int64_t oy1)
{
    const ad__lconv_kernel *lk = j->lk;
    int64_t mp = j->mpad;
    float *yo = j->y + b * j->yb;
    if (2 * j->tw == j->ow)
        lk->tr_f32(yc, mp, (oy1 - oy0) * j->ow, j->m, yo + oy0 * j->ow, j->oh * j->ow);
    else
        for (int64_t oy = oy0; oy < oy1; oy++)
            lk->tr_f32(yc + (oy - oy0) * 2 * j->tw * mp, mp, j->ow, j->m, yo + oy * j->ow, j->oh * j->ow);
}

/* p ([rows][wp][c]) = input rows [iy0, iy0 + rows) of the planes x ([c][h][w]) starting at column pw,
** channels last, zeros where no row or column is (one transpose of all the rows into tmp, then row
** copies: a transpose per row would run a 14-wide row's last 6 columns as scalars). */
void ad__wino_border(const ad__lconv_kernel *lk, const float *x, int64_t c, int64_t h, int64_t w, int64_t iy0,
                     int64_t rows, int64_t pw, int64_t wp, float *p, float *tmp)
{
    memset(p, 0, (size_t)(rows * wp * c) * sizeof(float));
    int64_t a = iy0 < 0 ? 0 : iy0, e = iy0 + rows < h ? iy0 + rows : h;
    if (e <= a) return;
    lk->tr_f32(x + a * w, h * w, c, (e - a) * w, tmp, c);
    for (int64_t iy = a; iy < e; iy++)
        memcpy(p + ((iy - iy0) * wp + pw) * c, tmp + (iy - a) * w * c, (size_t)(w * c) * sizeof(float));
}

/* Steps 1 and 2 for image b's tile rows [ty0, ty1): V of its tiles at v (matrices ldv apart); false
** (and the outputs computed directly into y) when its input is not tame. */
static bool wino_image_in(const wino_job *j, char *mem, int64_t b, int64_t ty0, int64_t ty1, float *v, int64_t ldv)
{
    const ad__lconv_kernel *lk = j->lk;
    int64_t c = j->cin, wp = 2 * j->tw + j->r - 1, rows = 2 * (ty1 - ty0) + j->r - 1;
    float *p = (float *)(void *)(mem + j->p_off), *yc = (float *)(void *)(mem + j->y_off);
    /* 1. the input rows the windows cover, zero-bordered, channels last (yc is free until step 4) */
    ad__wino_border(lk, j->x + b * j->xb, c, j->h, j->w, 2 * ty0 - j->ph, rows, j->pw, wp, p, yc);
    if (!ad__wino_tame(p, rows * wp * c)) {
        int64_t oy0 = 2 * ty0, oy1 = 2 * ty1 < j->oh ? 2 * ty1 : j->oh;
        wino_direct(j, p, wp, oy1 - oy0, yc);
        wino_image_out(j, yc, b, oy0, oy1);
        for (int64_t xi = 0; xi < (j->r + 1) * (j->r + 1); xi++) /* (its products still run: on zeros) */
            memset(v + xi * ldv, 0, (size_t)((ty1 - ty0) * j->tw * c) * sizeof(float));
        return false;
    }
    /* 2. V, a tile row at a time */
    for (int64_t ty = ty0; ty < ty1; ty++)
        (j->r == 3 ? wino_in : wino_in5)(p + 2 * (ty - ty0) * wp * c, wp * c, c, j->tw, v + (ty - ty0) * j->tw * c,
                                         ldv);
    return true;
}

/* Unit u: images [b0, b1) (whole, when a unit holds several) or image b0's tile rows [ty0, ty1).
** Several small images make a unit so that the products' last partial tile (a 14x14 output's 49
** tiles are 8 tiles of 6 and 1) is a small part of its work. */
static void wino_block(const wino_job *j, char *mem, int64_t u)
{
    const ad__lconv_kernel *lk = j->lk;
    int64_t b0, b1, ty0, ty1;
    if (j->imgs > 1) {
        b0 = u * j->imgs, b1 = b0 + j->imgs < j->n ? b0 + j->imgs : j->n, ty0 = 0, ty1 = j->th;
    } else {
        b0 = u / j->per, b1 = b0 + 1, ty0 = u % j->per * j->rb, ty1 = ty0 + j->rb < j->th ? ty0 + j->rb : j->th;
    }
    int64_t c = j->cin, mp = j->mpad, ni = (ty1 - ty0) * j->tw, nt = (b1 - b0) * ni, na = (j->r + 1) * (j->r + 1);
    int64_t tb = j->tb; /* V's and M's matrices hold this many tiles */
    int64_t oy0 = 2 * ty0, oy1 = 2 * ty1 < j->oh ? 2 * ty1 : j->oh;
    float *v = (float *)(void *)(mem + j->v_off), *mm = (float *)(void *)(mem + j->m_off);
    float *yc = (float *)(void *)(mem + j->y_off);
    int64_t *pos = (int64_t *)(void *)(mem + j->i_off), *row = pos + tb + AD__LCONV_MAX_MR;
    bool tame[WINO_MAX_IMGS];
    bool any = false;
    for (int64_t b = b0; b < b1; b++) any |= tame[b - b0] = wino_image_in(j, mem, b, ty0, ty1, v + (b - b0) * ni * c, tb * c);
    if (!any) return;
    /* 3. the 16 (F(2, 5): 36) products: M[xi] (tiles x mpad) = V[xi] (tiles x cin) U[xi] (cin x mpad) */
    for (int64_t i = 0; i < nt + AD__LCONV_MAX_MR; i++) { /* a last partial tile repeats the last tile */
        int64_t at = i < nt ? i : nt - 1;
        pos[i] = at * c, row[i] = at;
    }
    /* the output lines, fetched a few per kernel call (step 4's stores had missed the cache): the
    ** first image's, then the next one's */
    int64_t fb = b0;
    ad__lconv_prefetch pf = {0};
    for (int64_t xi = 0; xi < na; xi++) {
        const float *vx = v + xi * tb * c, *ux = j->up + xi * mp * c;
        float *mx = mm + xi * tb * mp;
        for (int64_t v0 = 0; v0 < j->nvec;) {
            int nv = ad__lconv_nv(j->nvec, lk->max_nv, v0), mr = lk->mr[nv - 1];
            int64_t tw = (int64_t)nv * lk->w;
            for (int64_t k0 = 0; k0 < c; k0 += j->kcb) {
                int64_t kc = c - k0 < j->kcb ? c - k0 : j->kcb;
                for (int64_t i0 = 0; i0 < nt; i0 += mr) {
                    if (pf.r >= pf.rows && fb < b1)
                        pf = (ad__lconv_prefetch){(const char *)(j->y + fb++ * j->yb + oy0 * j->ow), j->m,
                                                  (int64_t)((size_t)(j->oh * j->ow) * sizeof(float)),
                                                  (int64_t)((size_t)((oy1 - oy0) * j->ow) * sizeof(float)), 0, 0};
                    ad__lconv_fetch(&pf);
                    lk->f32[nv - 1](kc, ux + v0 * lk->w * c + k0 * tw, vx, j->offs + k0, pos + i0, mx + v0 * lk->w, mp,
                                    row + i0, k0 > 0);
                }
            }
            v0 += nv;
        }
    }
    /* 4. Y of each image, channels last (2 tw columns a row), then into the output's rows */
    for (int64_t b = b0; b < b1; b++) {
        if (!tame[b - b0]) continue;
        const float *mb = mm + (b - b0) * ni * mp;
        for (int64_t ty = ty0; ty < ty1; ty++)
            (j->r == 3 ? wino_out : wino_out5)(mb + (ty - ty0) * j->tw * mp, tb * mp, mp, j->tw,
                                               yc + 2 * (ty - ty0) * 2 * j->tw * mp, 2 * j->tw);
        wino_image_out(j, yc, b, oy0, oy1);
    }
}

static void wino_share(void *ctx, int tid, int nth)
{
    const wino_job *j = ctx;
    char *mem = j->bufs + (size_t)tid * j->buf_bytes;
    for (int64_t u = j->units * tid / nth; u < j->units * (tid + 1) / nth; u++) wino_block(j, mem, u);
}

ad_status ad__wino_run(ad_tape *t, const ad__lconv_kernel *lk, int r, const float *w, int64_t sco, int64_t sci,
                       bool flip, int64_t m, int64_t cin, const float *x, int64_t xb, int64_t h, int64_t wd, int64_t ph,
                       int64_t pw, int64_t n, float *y, int64_t yb)
{
    int64_t oh = h + 2 * ph - (r - 1), ow = wd + 2 * pw - (r - 1), na = (r + 1) * (r + 1);
    int64_t nvec = (m + lk->w - 1) / lk->w, mpad = nvec * lk->w;
    int64_t th = (oh + 1) / 2, tw = (ow + 1) / 2;
    float *up = wino_weights(t, lk, r, w, sco, sci, flip, m, cin, mpad);
    int64_t *offs = ad__arena_alloc(t, (size_t)cin * sizeof *offs);
    if (!up || !offs) return AD_ERR_NOMEM;
    for (int64_t i = 0; i < cin; i++) offs[i] = i;
    int nth = conv_threads(1, 1, m * cin * r * r * n * oh * ow);
    /* tile rows per block: V and M within WINO_BLOCK_BYTES, and 8 blocks at least (for the threads).
    ** The blocks do not depend on the thread count: a block whose input is not tame is computed
    ** directly, and the results stay the same bits at any thread count even then. */
    int64_t rb = WINO_BLOCK_BYTES / (na * (int64_t)sizeof(float)) / (cin + mpad) / tw;
    if (rb < 1) rb = 1;
    if (rb > th) rb = th;
    if (n * ((th + rb - 1) / rb) < 8) {
        int64_t want = (8 + n - 1) / n; /* blocks per image */
        rb = (th + want - 1) / want;
    }
    int64_t per = (th + rb - 1) / rb, units = n * per, tb = rb * tw;
    /* whole images that fit: as many to a unit as the block allows, with 8 units at least */
    int64_t imgs = 1;
    if (per == 1) {
        imgs = WINO_BLOCK_BYTES / (na * (int64_t)sizeof(float)) / (cin + mpad) / (th * tw);
        if (imgs > n / 8) imgs = n / 8;
        if (imgs > WINO_MAX_IMGS) imgs = WINO_MAX_IMGS;
        if (imgs < 1) imgs = 1;
        units = (n + imgs - 1) / imgs, tb = imgs * th * tw;
    }
    if (nth > units) nth = (int)units;
    /* per thread: the bordered input, V, M, Y, the tiles' positions and rows */
    size_t fs = sizeof(float);
    size_t p_bytes = up64((size_t)((2 * rb + r - 1) * (2 * tw + r - 1) * cin) * fs);
    size_t v_bytes = up64((size_t)(na * tb * cin) * fs), m_bytes = up64((size_t)(na * tb * mpad) * fs);
    size_t y_bytes = (size_t)(2 * rb * 2 * tw * mpad), in_rows = (size_t)((2 * rb + r - 1) * wd * cin);
    y_bytes = up64((y_bytes > in_rows ? y_bytes : in_rows) * fs); /* Y, or the block's input rows before it */
    size_t i_bytes = up64(2 * (size_t)(tb + AD__LCONV_MAX_MR) * sizeof(int64_t));
    size_t buf_bytes = p_bytes + v_bytes + m_bytes + y_bytes + i_bytes;
    char *bufs = ad__arena_alloc(t, (size_t)nth * buf_bytes + 64);
    if (!bufs) return AD_ERR_NOMEM;
    bufs = (char *)(((uintptr_t)bufs + 63) & ~(uintptr_t)63);
    /* input channels per block of the products: the weights of a block within the L1 budget */
    int64_t kcb = AD__LCONV_KC_BYTES / (int64_t)((size_t)(lk->max_nv * lk->w) * fs);
    if (kcb > cin) kcb = cin;
    wino_job j = {lk, r, w, sco, sci, flip, up, offs, m, mpad, nvec, cin, x, xb, h, wd, ph, pw, y, yb, oh, ow, n, th, tw,
                  rb, per, units, imgs, tb, kcb, bufs, buf_bytes, 0, p_bytes, p_bytes + v_bytes,
                  p_bytes + v_bytes + m_bytes, p_bytes + v_bytes + m_bytes + y_bytes};
    ad__parallel(nth, wino_share, &j);
    return AD_OK;
}

void ad__wino_in(int r, const float *p, int64_t ld, int64_t c, int64_t nt, float *v, int64_t ldv)
{
    (r == 3 ? wino_in : wino_in5)(p, ld, c, nt, v, ldv);
}

/* conv_wino_wgrad.c: the weight gradient of 3x3 and 5x5 stride-1 F32 convolutions by Winograd's
** F(3x3, 2x2) and F(5x5, 2x2), on the lane kernels, with the input transform of conv_wino.c. */
#include "conv_wino.h"
#include "conv_wino_tx.h"

#include "tape.h"

#include <string.h>

/*
** The weight gradient by F(r x r, 2 x 2) (the same windows, r + 1 on a side): dW[co][ci] is a
** correlation of x[ci] with gy[co] whose r x r outputs each sum over every output position. Per
** 2x2 block ("tile") of gy and the input window it meets,
**     dW += A'^T [ (G' gy G'^T) .* (B^T d B) ] A',
** with the forward's B (V is computed as there), and the 2-tap G' and r-output A' of the same
** points. The elementwise products summed over tiles and images are a^2 matrix products
** Mw[xi][ci][co] = sum_tiles V[xi][tile][ci] GY[xi][tile][co], on the lane kernels (the
** transformed gy packed as their weights, a tile as a tap, an input channel as a position). The
** images are split into up to WINO_WG_UNITS fixed units, each summing into its own Mw; the units'
** sums are added in order and transformed at the end (in double), so the result does not depend
** on the thread count. An image whose x or gy is not tame is summed directly (in double).
** Accuracy, in a float32 model of 400 tiles of random data in [-1, 1] (sums up to 52): F(3x3, 2x2)
** erred by 2.5e-5 at most, as much as the direct float sum (2.4e-5); F(5x5, 2x2), whose A' holds
** 16 and -8, by 2.5e-4 against the direct sum's 3.1e-5 (sums up to 41; the points 0, 1, -1, 1/2,
** -2 did best of five sets tried, 0, 1, -1, 2, -2 erred by 5.8e-4).
*/
#define WINO_WG_UNITS 8
#define WINO_WG_BYTES (16 << 20) /* the units' sums, at most */

static const double wino_g2_3[4][2] = {{1, 0}, {0.5, 0.5}, {0.5, -0.5}, {0, -1}};
static const double wino_a2_3[3][4] = {{1, 1, 1, 0}, {0, 1, -1, 0}, {0, 1, 1, 1}};
static const double wino_g2_5[6][2] = {{1, 0}, {1 / 3.0, 1 / 3.0}, {-1 / 3.0, 1 / 3.0}, {-16 / 15.0, -8 / 15.0},
                                       {1 / 15.0, -2 / 15.0}, {0, 1}};
static const double wino_a2_5[5][6] = {{1, 1, 1, 1, 1, 0},
                                       {0, 1, -1, 0.5, -2, 0},
                                       {0, 1, 1, 0.25, 4, 0},
                                       {0, 1, -1, 0.125, -8, 0},
                                       {0, 1, 1, 0.0625, 16, 1}};

const ad__lconv_kernel *ad__wino_wgrad_for(ad_dtype dt, const geom *q)
{
    if (dt != AD_F32 || q->kh != q->kw || (q->kh != 3 && q->kh != 5) || q->sh != 1 || q->sw != 1 || q->dh != 1 || q->dw != 1)
        return NULL;
    int64_t cg = q->c / q->g, og = q->o / q->g;
    if (cg < WINO_MIN_C || og < WINO_MIN_C || q->n < 1 || q->oh < 2 || q->ow < 2) return NULL;
    const ad__lconv_kernel *lk = ad__lconv_select(false);
    if (!lk) return NULL;
    double fill = (double)og / (double)((og + lk->w - 1) / lk->w * lk->w);
    return fill >= 0.75 ? lk : NULL;
}

/* GY = G' g G'^T of nt tiles of the channels-last output gradient (tile i's 2x2 block at
** g + 2 i mp, rows ld apart), written where the lane kernels read their weights: matrix xi at
** out + xi ldo, tile i's channels of channel tile [c0, c0 + tw) at + c0 nt0 + i tw (nt0 tiles in the
** matrix). */
AD_CLONES static void wino_gy(int r, const float *g, int64_t ld, int64_t mp, int64_t nt, int64_t c0, int64_t tw,
                              int64_t nt0, int64_t i0, float *out, int64_t ldo)
{
    int a = r + 1;
    const double *gm = r == 3 ? &wino_g2_3[0][0] : &wino_g2_5[0][0]; /* a x 2 */
    float f[6][2];
    for (int i = 0; i < a; i++) f[i][0] = (float)gm[2 * i], f[i][1] = (float)gm[2 * i + 1];
    for (int64_t i = 0; i < nt; i++) {
        const float *g0 = g + 2 * i * mp + c0, *g1 = g0 + ld;
        float *o = out + c0 * nt0 + (i0 + i) * tw;
        int64_t l = 0;
        for (; l + 16 <= tw; l += 16) {
            wino_v d00 = WV_LD(g0 + l), d01 = WV_LD(g0 + mp + l), d10 = WV_LD(g1 + l), d11 = WV_LD(g1 + mp + l);
            for (int u = 0; u < a; u++) {
                wino_v e0 = f[u][0] * d00 + f[u][1] * d10, e1 = f[u][0] * d01 + f[u][1] * d11; /* G' g */
                for (int k = 0; k < a; k++) WV_ST(o + (u * a + k) * ldo + l, f[k][0] * e0 + f[k][1] * e1);
            }
        }
        for (; l < tw; l++) {
            float d00 = g0[l], d01 = g0[mp + l], d10 = g1[l], d11 = g1[mp + l];
            for (int u = 0; u < a; u++) {
                float e0 = f[u][0] * d00 + f[u][1] * d10, e1 = f[u][0] * d01 + f[u][1] * d11;
                for (int k = 0; k < a; k++) o[(u * a + k) * ldo + l] = f[k][0] * e0 + f[k][1] * e1;
            }
        }
    }
}

typedef struct wino_wg {
    const ad__lconv_kernel *lk;
    int r;
    const float *x, *gy;
    int64_t xb, gyb, m, mpad, nvec, cin, h, w, ph, pw, n, oh, ow, th, tw;
    int units;
    const int64_t *offs; /* tap t (a tile): t cin */
    float *sums;         /* per unit: [na][cin][mpad] */
    unsigned char *bad;  /* per image: summed directly */
    char *bufs;
    size_t buf_bytes, p_off, v_off, g_off, t_off, i_off;
} wino_wg;

static void wino_wg_unit(const wino_wg *j, char *mem, int u)
{
    const ad__lconv_kernel *lk = j->lk;
    int64_t c = j->cin, mp = j->mpad, a = j->r + 1, na = a * a, nt = j->th * j->tw;
    int64_t wp = 2 * j->tw + j->r - 1, rows = 2 * j->th + j->r - 1, gw = 2 * j->tw;
    float *p = (float *)(void *)(mem + j->p_off), *v = (float *)(void *)(mem + j->v_off);
    float *gp = (float *)(void *)(mem + j->g_off), *tmp = (float *)(void *)(mem + j->t_off);
    int64_t *pos = (int64_t *)(void *)(mem + j->i_off), *row = pos + c + AD__LCONV_MAX_MR;
    float *sum = j->sums + (size_t)u * (size_t)(na * c * mp);
    memset(sum, 0, (size_t)(na * c * mp) * sizeof(float));
    for (int64_t i = 0; i < c + AD__LCONV_MAX_MR; i++) pos[i] = row[i] = i < c ? i : c - 1;
    int64_t kcb = AD__LCONV_KC_BYTES / (int64_t)((size_t)(lk->max_nv * lk->w) * sizeof(float));
    for (int64_t b = j->n * u / j->units; b < j->n * (u + 1) / j->units; b++) {
        /* x's windows, channels last, and gy's 2x2 blocks, channels last (zeros past its edge) */
        ad__wino_border(lk, j->x + b * j->xb, c, j->h, j->w, -j->ph, rows, j->pw, wp, p, tmp);
        float *gcl = tmp + 0; /* [2 th][2 tw][mp] after the transposed rows */
        memset(gcl, 0, (size_t)(2 * j->th * gw * mp) * sizeof(float));
        float *gt = gcl + 2 * j->th * gw * mp;
        if (mp > j->m) /* the lanes past m: zeros (their sums are never read) */
            for (int64_t i = 0; i < j->oh * j->ow; i++) memset(gt + i * mp + j->m, 0, (size_t)(mp - j->m) * sizeof(float));
        lk->tr_f32(j->gy + b * j->gyb, j->oh * j->ow, j->m, j->oh * j->ow, gt, mp);
        for (int64_t oy = 0; oy < j->oh; oy++)
            memcpy(gcl + oy * gw * mp, gt + oy * j->ow * mp, (size_t)(j->ow * mp) * sizeof(float));
        if (!ad__wino_tame(p, rows * wp * c) || !ad__wino_tame(gcl, 2 * j->th * gw * mp)) {
            j->bad[b] = 1;
            continue;
        }
        for (int64_t ty = 0; ty < j->th; ty++) {
            ad__wino_in(j->r, p + 2 * ty * wp * c, wp * c, c, j->tw, v + ty * j->tw * c, nt * c);
            for (int64_t v0 = 0; v0 < j->nvec;) {
                int64_t nv = ad__lconv_nv(j->nvec, lk->max_nv, v0);
                wino_gy(j->r, gcl + 2 * ty * gw * mp, gw * mp, mp, j->tw, v0 * lk->w, nv * lk->w, nt, ty * j->tw, gp,
                        nt * mp);
                v0 += nv;
            }
        }
        /* Mw[xi] (cin x mpad) += V[xi]^T (cin x tiles) GY[xi] (tiles x mpad) */
        for (int64_t xi = 0; xi < na; xi++)
            for (int64_t v0 = 0; v0 < j->nvec;) {
                int nv = ad__lconv_nv(j->nvec, lk->max_nv, v0), mr = lk->mr[nv - 1];
                int64_t tw = (int64_t)nv * lk->w;
                for (int64_t k0 = 0; k0 < nt; k0 += kcb) {
                    int64_t kc = nt - k0 < kcb ? nt - k0 : kcb;
                    for (int64_t i0 = 0; i0 < c; i0 += mr)
                        lk->f32[nv - 1](kc, gp + xi * nt * mp + v0 * lk->w * nt + k0 * tw, v + xi * nt * c,
                                        j->offs + k0, pos + i0, sum + xi * c * mp + v0 * lk->w, mp, row + i0, true);
                }
                v0 += nv;
            }
    }
}

static void wino_wg_share(void *ctx, int tid, int nth)
{
    const wino_wg *j = ctx;
    char *mem = j->bufs + (size_t)tid * j->buf_bytes;
    for (int u = j->units * tid / nth; u < j->units * (tid + 1) / nth; u++) wino_wg_unit(j, mem, u);
}

/* The end: the units' sums added in order (double), A'^T M A', and the directly summed images. */
typedef struct wino_wg_end {
    const wino_wg *j;
    float *dw;
    double *scratch; /* per thread: [na + r a][mpad] */
} wino_wg_end;

AD_CLONES static void wino_wg_finish(const wino_wg *j, int64_t ci, double *s, double *t, float *dw)
{
    int r = j->r, a = r + 1, na = a * a;
    int64_t c = j->cin, mp = j->mpad;
    const double *am = r == 3 ? &wino_a2_3[0][0] : &wino_a2_5[0][0]; /* r x a */
    for (int64_t xi = 0; xi < na; xi++) {
        double *o = s + xi * mp;
        for (int64_t co = 0; co < mp; co++) o[co] = 0;
        for (int u = 0; u < j->units; u++) {
            const float *src = j->sums + (size_t)u * (size_t)(na * c * mp) + (xi * c + ci) * mp;
            for (int64_t co = 0; co < mp; co++) o[co] += src[co];
        }
    }
    for (int ky = 0; ky < r; ky++) /* t[ky][k] = sum_i A'^T[ky][i] s[i][k] */
        for (int k = 0; k < a; k++) {
            double *o = t + (ky * a + k) * mp;
            for (int64_t co = 0; co < mp; co++) o[co] = 0;
            for (int i = 0; i < a; i++) {
                double f = am[ky * a + i];
                if (f == 0) continue;
                const double *src = s + (i * a + k) * mp;
                for (int64_t co = 0; co < mp; co++) o[co] += f * src[co];
            }
        }
    for (int ky = 0; ky < r; ky++)
        for (int kx = 0; kx < r; kx++) {
            double *o = s; /* (free now) */
            for (int64_t co = 0; co < mp; co++) o[co] = 0;
            for (int k = 0; k < a; k++) {
                double f = am[kx * a + k];
                if (f == 0) continue;
                const double *src = t + (ky * a + k) * mp;
                for (int64_t co = 0; co < mp; co++) o[co] += f * src[co];
            }
            for (int64_t co = 0; co < j->m; co++) dw[(co * c + ci) * r * r + ky * r + kx] = (float)o[co];
        }
}

static void wino_wg_end_share(void *ctx, int tid, int nth)
{
    const wino_wg_end *e = ctx;
    const wino_wg *j = e->j;
    int a = j->r + 1;
    double *s = e->scratch + (size_t)tid * (size_t)((a * a + j->r * a) * j->mpad);
    for (int64_t ci = j->cin * tid / nth; ci < j->cin * (tid + 1) / nth; ci++)
        wino_wg_finish(j, ci, s, s + a * a * j->mpad, e->dw);
}

ad_status ad__wino_wgrad(ad_tape *t, const ad__lconv_kernel *lk, int r, const float *x, int64_t xb, const float *gy,
                         int64_t gyb, int64_t m, int64_t cin, int64_t h, int64_t wd, int64_t ph, int64_t pw, int64_t n,
                         float *dw)
{
    int64_t oh = h + 2 * ph - (r - 1), ow = wd + 2 * pw - (r - 1), a = r + 1, na = a * a;
    int64_t nvec = (m + lk->w - 1) / lk->w, mpad = nvec * lk->w, th = (oh + 1) / 2, tw = (ow + 1) / 2, nt = th * tw;
    int64_t per_unit = na * cin * mpad * (int64_t)sizeof(float);
    int units = (int)(WINO_WG_BYTES / per_unit);
    if (units > WINO_WG_UNITS) units = WINO_WG_UNITS;
    if (units > n) units = (int)n;
    if (units < 1) units = 1;
    int nth = conv_threads(1, 1, m * cin * r * r * n * oh * ow);
    if (nth > units) nth = units;
    size_t fs = sizeof(float);
    size_t p_bytes = up64((size_t)((2 * th + r - 1) * (2 * tw + r - 1) * cin) * fs);
    size_t v_bytes = up64((size_t)(na * nt * cin) * fs), g_bytes = up64((size_t)(na * nt * mpad) * fs);
    size_t t1 = (size_t)((2 * th + r - 1) * wd * cin), t2 = (size_t)(2 * th * 2 * tw * mpad + oh * ow * mpad);
    size_t t_bytes = up64((t1 > t2 ? t1 : t2) * fs); /* x's transposed rows, or gy's blocks and rows */
    size_t i_bytes = up64(2 * (size_t)(cin + AD__LCONV_MAX_MR) * sizeof(int64_t));
    size_t buf_bytes = p_bytes + v_bytes + g_bytes + t_bytes + i_bytes;
    char *bufs = ad__arena_alloc(t, (size_t)nth * buf_bytes + 64);
    float *sums = ad__arena_alloc(t, (size_t)units * (size_t)per_unit);
    int64_t *offs = ad__arena_alloc(t, (size_t)nt * sizeof *offs);
    unsigned char *bad = ad__arena_alloc(t, (size_t)n);
    double *scratch = ad__arena_alloc(t, (size_t)nth * (size_t)((na + r * a) * mpad) * sizeof(double));
    if (!bufs || !sums || !offs || !bad || !scratch) return AD_ERR_NOMEM;
    bufs = (char *)(((uintptr_t)bufs + 63) & ~(uintptr_t)63);
    memset(bad, 0, (size_t)n);
    for (int64_t i = 0; i < nt; i++) offs[i] = i * cin;
    wino_wg j = {lk, r, x, gy, xb, gyb, m, mpad, nvec, cin, h, wd, ph, pw, n, oh, ow, th, tw, units, offs,
                 sums, bad, bufs, buf_bytes, 0, p_bytes, p_bytes + v_bytes, p_bytes + v_bytes + g_bytes,
                 p_bytes + v_bytes + g_bytes + t_bytes};
    ad__parallel(nth, wino_wg_share, &j);
    wino_wg_end e = {&j, dw, scratch};
    ad__parallel(nth, wino_wg_end_share, &e);
    /* images summed directly, in order, onto the rounded result (in double) */
    for (int64_t b = 0; b < n; b++) {
        if (!bad[b]) continue;
        const float *xi = x + b * xb, *gi = gy + b * gyb;
        for (int64_t co = 0; co < m; co++)
            for (int64_t ci = 0; ci < cin; ci++)
                for (int64_t k = 0; k < r * r; k++) {
                    double acc = 0; /* (the border's zeros multiply too, as on the other paths: inf 0 is NaN) */
                    for (int64_t oy = 0; oy < oh; oy++)
                        for (int64_t ox = 0; ox < ow; ox++) {
                            int64_t iy = oy + k / r - ph, ix = ox + k % r - pw;
                            double xv = iy >= 0 && iy < h && ix >= 0 && ix < wd ? xi[ci * h * wd + iy * wd + ix] : 0.0;
                            acc += (double)gi[co * oh * ow + oy * ow + ox] * xv;
                        }
                    float *o = dw + (co * cin + ci) * r * r + k;
                    *o = (float)((double)*o + acc);
                }
    }
    return AD_OK;
}

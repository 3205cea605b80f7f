/* conv_lane.c: the convolution's products with the channels as vector lanes and the input read in
** place (conv_kernels.c's lane and weight-gradient kernels): the forward, the input gradient by
** phases, the weight gradient; and the zero-padded copies of planes that they and ops_conv.c use. */
#include "conv_lane.h"

#include "tape.h"

/* Copies planes [p0, p1) of [h, w] each into [h + 2 ph, w + 2 pw] with a zero border. The planes
** are zeroed whole first, then the rows copied in: zeroing each row's borders by itself compiled to
** two memset calls per row (for a border of one element), and those calls took most of the time. */
#define PAD_PLANES(T)                                                                                    \
    static void pad_planes_##T(const T *x, int64_t h, int64_t w, int64_t ph, int64_t pw, int64_t p0, int64_t p1, \
                               T *out)                                                                   \
    {                                                                                                    \
        int64_t hp = h + 2 * ph, wp = w + 2 * pw;                                                        \
        if (p1 <= p0) return;                                                                            \
        memset(out + p0 * hp * wp, 0, (size_t)((p1 - p0) * hp * wp) * sizeof(T));                        \
        for (int64_t pl = p0; pl < p1; pl++) {                                                           \
            T *o = out + pl * hp * wp + ph * wp + pw;                                                    \
            const T *s = x + pl * h * w;                                                                 \
            for (int64_t y = 0; y < h; y++)                                                              \
                for (int64_t i = 0; i < w; i++) o[y * wp + i] = s[y * w + i];                            \
        }                                                                                                \
    }
PAD_PLANES(float)
PAD_PLANES(double)

void ad__pad_planes(bool f64, const void *x, int64_t h, int64_t w, int64_t ph, int64_t pw, int64_t p0, int64_t p1,
                    void *out)
{
    if (f64)
        pad_planes_double(x, h, w, ph, pw, p0, p1, out);
    else
        pad_planes_float(x, h, w, ph, pw, p0, p1, out);
}

/* ---- the forward and the input gradient: output channels as vector lanes ---- */


#define LCONV_MIN_K 64   /* fewer taps (a first layer's 9 or 25, a 1x1 of 32 channels): the direct kernel */
#define LCONV_MAX_MR AD__LCONV_MAX_MR
#define LCONV_CHUNK 48   /* output positions computed, then transposed into the output, at least */
#define LCONV_KC_BYTES AD__LCONV_KC_BYTES

/* One phase of a lane convolution: the output positions (r0 + jy rs, c0 + jx cs) for jy < nr,
** jx < nc, which read the padded input at jy xr + jx xc + offs[t] for their k taps t with the
** weights apack (packed per tile of channel vectors: [k][nv w], the tiles as ad__lconv_nv says). A forward convolution is one phase; the input gradient of a stride-s convolution
** has s x s, one per residue of the input position (a tap reaches the positions of one residue). */
typedef struct lc_phase {
    const void *apack;
    const int64_t *offs;
    int64_t k, r0, rs, c0, cs, nr, nc, xr, xc;
    int64_t tpc; /* taps per input channel (consecutive in offs) */
} lc_phase;

/* A lane convolution: y [n][m][oh][ow] (images yb apart) from x ([n][cin][h][w], images xb
** apart) with a zero border of ph rows and pw columns. A unit is an image's block
** of ub output rows: the thread pads the image into its own buffer (where it stays in the cache for
** the products), then for each chunk of rb output rows runs every phase's tiles, in blocks of taps,
** channels last into a second buffer, and transposes the chunk into y (its stores overlap the next
** chunk's products). */
typedef struct lc_job {
    const ad__lconv_kernel *lk;
    bool f64;
    const lc_phase *phase;
    int nphase;
    int64_t m, nvec, oh, ow, cin;
    const void *x;
    int64_t xb, h, w, ph, pw;
    int64_t plane_bytes; /* of a padded input plane */
    void *y;
    int64_t yb;
    int64_t ub, rb, units;
    char *bufs;
    size_t pad_bytes, out_bytes, buf_bytes;
} lc_job;

/* Runs phase f's positions among output rows [y0, y1) into buf (rows: positions from row y0). */
static void lc_phase_rows(const lc_job *j, const lc_phase *f, const char *xp, int64_t y0, int64_t y1, char *buf,
                          int64_t *lpos, int64_t *lrow, ad__lconv_prefetch *pf)
{
    const ad__lconv_kernel *lk = j->lk;
    size_t es = j->f64 ? sizeof(double) : sizeof(float);
    int64_t jy0 = y0 > f->r0 ? (y0 - f->r0 + f->rs - 1) / f->rs : 0, jy1 = (y1 - f->r0 + f->rs - 1) / f->rs;
    if (y1 <= f->r0) jy1 = 0;
    if (jy1 > f->nr) jy1 = f->nr;
    int64_t cnt = 0;
    for (int64_t jy = jy0; jy < jy1; jy++)
        for (int64_t jx = 0; jx < f->nc; jx++, cnt++) {
            lpos[cnt] = jy * f->xr + jx * f->xc;
            lrow[cnt] = (f->r0 + jy * f->rs - y0) * j->ow + f->c0 + jx * f->cs;
        }
    if (cnt == 0) return;
    for (int64_t i = cnt; i < cnt + LCONV_MAX_MR; i++) /* a last partial tile repeats the last position */
        lpos[i] = lpos[cnt - 1], lrow[i] = lrow[cnt - 1];
    int64_t mpad = j->nvec * lk->w;
    for (int64_t v0 = 0; v0 < j->nvec;) {
        int nv = ad__lconv_nv(j->nvec, lk->max_nv, v0), mr = lk->mr[nv - 1];
        /* at most LCONV_KC_BYTES of weights and about as much of the input per block */
        int64_t tw = (int64_t)nv * lk->w, most = LCONV_KC_BYTES / (tw * (int64_t)es);
        int64_t xmost = LCONV_KC_BYTES * f->tpc / j->plane_bytes;
        if (xmost < most) most = xmost > f->tpc ? xmost : f->tpc;
        int64_t nb = f->k > most ? (f->k + most - 1) / most : 1, kcb = (f->k + nb - 1) / nb;
        const char *at = (const char *)f->apack + (size_t)(v0 * lk->w * f->k) * es;
        /* blocks of taps whose weights stay in the L1 cache across the chunk's tiles; a phase
        ** without taps still runs one (empty) block, which writes its zeros */
        for (int64_t k0 = 0; k0 == 0 || k0 < f->k; k0 += kcb) {
            int64_t kc = f->k - k0 < kcb ? f->k - k0 : kcb;
            const char *a = at + (size_t)(k0 * tw) * es;
            char *c = buf + (size_t)(v0 * lk->w) * es;
            for (int64_t i0 = 0; i0 < cnt; i0 += mr) {
                ad__lconv_fetch(pf);
                if (j->f64)
                    lk->f64[nv - 1](kc, (const double *)(const void *)a, (const double *)(const void *)xp,
                                    f->offs + k0, lpos + i0, (double *)(void *)c, mpad, lrow + i0, k0 > 0);
                else
                    lk->f32[nv - 1](kc, (const float *)(const void *)a, (const float *)(const void *)xp,
                                    f->offs + k0, lpos + i0, (float *)(void *)c, mpad, lrow + i0, k0 > 0);
            }
            if (kcb == 0) break;
        }
        v0 += nv;
    }
}

static void lc_share(void *ctx, int tid, int nth)
{
    const lc_job *j = ctx;
    const ad__lconv_kernel *lk = j->lk;
    size_t es = j->f64 ? sizeof(double) : sizeof(float);
    int64_t mpad = j->nvec * lk->w, per = (j->oh + j->ub - 1) / j->ub;
    char *pad = j->bufs + (size_t)tid * j->buf_bytes, *buf = pad + j->pad_bytes;
    int64_t *lpos = (int64_t *)(void *)(buf + j->out_bytes), *lrow = lpos + j->rb * j->ow + LCONV_MAX_MR;
    int64_t have = -1; /* the image in pad */
    ad__lconv_prefetch pf = {0};
    for (int64_t u = j->units * tid / nth; u < j->units * (tid + 1) / nth; u++) {
        int64_t b = u / per, u0 = u % per * j->ub, u1 = u0 + j->ub < j->oh ? u0 + j->ub : j->oh;
        const char *src = (const char *)j->x + (size_t)(b * j->xb) * es, *xp = pad;
        if (j->ph == 0 && j->pw == 0) {
            xp = src; /* no border: the planes as they are */
        } else if (b != have) {
            ad__pad_planes(j->f64, src, j->h, j->w, j->ph, j->pw, 0, j->cin, pad);
            have = b;
        }
        for (int64_t y0 = u0; y0 < u1; y0 += j->rb) {
            int64_t y1 = y0 + j->rb < u1 ? y0 + j->rb : u1;
            int64_t y2 = y1 + j->rb < u1 ? y1 + j->rb : u1;
            char *y = (char *)j->y + (size_t)(b * j->yb + y0 * j->ow) * es;
            pf = (ad__lconv_prefetch){y + (size_t)((y1 - y0) * j->ow) * es, y2 > y1 ? j->m : 0,
                               (int64_t)((size_t)(j->oh * j->ow) * es), (int64_t)((size_t)((y2 - y1) * j->ow) * es), 0,
                               0};
            for (int f = 0; f < j->nphase; f++) lc_phase_rows(j, &j->phase[f], xp, y0, y1, buf, lpos, lrow, &pf);
            if (j->f64)
                lk->tr_f64((const double *)(const void *)buf, mpad, (y1 - y0) * j->ow, j->m, (double *)(void *)y,
                           j->oh * j->ow);
            else
                lk->tr_f32((const float *)(const void *)buf, mpad, (y1 - y0) * j->ow, j->m, (float *)(void *)y,
                           j->oh * j->ow);
        }
    }
}

/* The lane kernel for a convolution producing m channels from k taps, or NULL when another path
** suits it better (no SIMD kernel, few taps, or channel vectors mostly wasted). */
const ad__lconv_kernel *ad__lconv_for(ad_dtype dt, int64_t m, int64_t k)
{
    const ad__lconv_kernel *lk = ad__lconv_select(dt == AD_F64);
    if (!lk || k < LCONV_MIN_K) return NULL;
    double fill = (double)m / (double)((m + lk->w - 1) / lk->w * lk->w);
    return fill >= 0.75 ? lk : NULL;
}

/* Where the lane kernels' weights come from: tap t's weight for channel co (the vector lane) is
** w[co ld + (tmap ? tmap[t] : t)]. */
typedef struct wsrc {
    const void *w;
    int64_t ld;
    const int64_t *tmap;
} wsrc;

/* The weights of k taps for m channels packed per tile of channel vectors ([k][nv w], zero past
** m; see lc_phase), in the tape's arena. */
static void *lc_pack(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const wsrc *src, int64_t m, int64_t k)
{
    int64_t nvec = (m + lk->w - 1) / lk->w, mpad = nvec * lk->w;
    size_t es = ad_dtype_size(dt);
    char *ap = ad__arena_alloc(t, (size_t)(mpad * (k > 0 ? k : 1)) * es + 64);
    if (!ap) return NULL;
    ap = (char *)(((uintptr_t)ap + 63) & ~(uintptr_t)63);
    for (int64_t v0 = 0; v0 < nvec;) {
        int64_t nv = ad__lconv_nv(nvec, lk->max_nv, v0), tw = nv * lk->w;
        char *dst = ap + (size_t)(v0 * lk->w * k) * es;
        for (int64_t p = 0; p < k; p++) {
            int64_t at = src->tmap ? src->tmap[p] : p;
            for (int64_t l = 0; l < tw; l++) {
                int64_t co = v0 * lk->w + l;
                if (dt == AD_F64)
                    ((double *)(void *)dst)[p * tw + l] = co < m ? ((const double *)src->w)[co * src->ld + at] : 0;
                else
                    ((float *)(void *)dst)[p * tw + l] = co < m ? ((const float *)src->w)[co * src->ld + at] : 0;
            }
        }
        v0 += nv;
    }
    return ap;
}

/* Runs a lane convolution (see lc_job) over its phases. */
static ad_status lc_launch(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const lc_phase *phase, int nphase,
                           int64_t m, int64_t cin, const void *x, int64_t xb, int64_t h, int64_t wd,
                           int64_t ph, int64_t pw, int64_t n, int64_t oh, int64_t ow, void *y, int64_t yb, int64_t macs)
{
    int64_t nvec = (m + lk->w - 1) / lk->w, mpad = nvec * lk->w, plane;
    size_t es = ad_dtype_size(dt);
    if (!ad__mul_ok(cin, (h + 2 * ph) * (wd + 2 * pw), &plane)) return AD_ERR_NOMEM;
    int nth = conv_threads(1, 1, macs);
    /* output rows per chunk: LCONV_CHUNK positions or more for each phase (whose rows and columns
    ** are rs and cs apart) */
    int64_t rs = phase[0].rs, pcols = (ow + phase[0].cs - 1) / phase[0].cs;
    int64_t rb = (LCONV_CHUNK + pcols - 1) / pcols * rs;
    /* units: whole images when there are enough to share, else blocks of rows */
    int64_t blocks = n >= 2 * nth ? 1 : (2 * nth + n - 1) / n;
    int64_t ub = (oh + blocks - 1) / blocks;
    int64_t units = n * ((oh + ub - 1) / ub);
    if (nth > units) nth = (int)units;
    size_t pad_bytes = up64((size_t)plane * es), out_bytes = up64((size_t)((rb * ow + LCONV_MAX_MR) * mpad) * es);
    size_t buf_bytes = pad_bytes + out_bytes + up64(2 * (size_t)(rb * ow + LCONV_MAX_MR) * sizeof(int64_t));
    char *bufs = ad__arena_alloc(t, (size_t)nth * buf_bytes + 64);
    if (!bufs) return AD_ERR_NOMEM;
    bufs = (char *)(((uintptr_t)bufs + 63) & ~(uintptr_t)63);
    lc_job j = {lk, dt == AD_F64, phase, nphase, m, nvec, oh, ow, cin, x, xb, h, wd, ph, pw,
                (int64_t)((size_t)((h + 2 * ph) * (wd + 2 * pw)) * es), y, yb, ub, rb, units, bufs, pad_bytes, out_bytes,
                buf_bytes};
    ad__parallel(nth, lc_share, &j);
    return AD_OK;
}

/* A forward convolution by the lane kernels: weights w (m x cin kh kw, row stride ldw), input
** planes x (cin planes of h x wd, images xb apart, padded here as q says), output y
** [n][m][oh][ow] with images yb apart. */
ad_status ad__lconv_run(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const void *w, int64_t ldw, int64_t m,
                        int64_t cin, const geom *q, const void *x, int64_t xb, int64_t h, int64_t wd, int64_t n,
                        int64_t oh, int64_t ow, void *y, int64_t yb)
{
    int64_t k = cin * q->kh * q->kw, hp = h + 2 * q->ph, wp = wd + 2 * q->pw;
    int64_t *offs = ad__arena_alloc(t, (size_t)k * sizeof *offs);
    wsrc src = {w, ldw, NULL};
    void *ap = lc_pack(t, dt, lk, &src, m, k);
    if (!offs || !ap) return AD_ERR_NOMEM;
    for (int64_t c = 0, p = 0; c < cin; c++)
        for (int64_t i = 0; i < q->kh; i++)
            for (int64_t jj = 0; jj < q->kw; jj++) offs[p++] = c * hp * wp + i * q->dh * wp + jj * q->dw;
    lc_phase f = {ap, offs, k, 0, 1, 0, 1, oh, ow, q->sh * wp, q->sw, q->kh * q->kw};
    return lc_launch(t, dt, lk, &f, 1, m, cin, x, xb, h, wd, q->ph, q->pw, n, oh, ow, y, yb, m * n * oh * ow * k);
}

/* The taps of a stride-s input gradient that reach input residue a: kernel index i with
** (a + p - i d) divisible by s; e[i] = (a + p - i d) / s is then the output offset of input step 0. */
static int64_t phase_taps(int64_t a, int64_t p, int64_t d, int64_t s, int64_t k, int64_t *idx, int64_t *e)
{
    int64_t cnt = 0;
    for (int64_t i = 0; i < k; i++) {
        int64_t v = a + p - i * d;
        if (((v % s) + s) % s == 0) idx[cnt] = i, e[cnt++] = v / s; /* exact: C's division is then exact */
    }
    return cnt;
}

/* The input gradient of group g's convolution by the lane kernels, one phase per residue (a, b) of
** the input position modulo the strides: gi[c][a + sh jy][b + sw jx] = sum over og, the residue's
** taps (i, j) of w[o][c][i][j] gy[o][jy + e_i][jx + e_j], gy read with a zero border wide enough
** for every phase. */
ad_status ad__lconv_grad_input(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const geom *q, const void *wg,
                               const void *gyg, void *gig)
{
    int64_t cg = q->c / q->g, og = q->o / q->g, khw = q->kh * q->kw, nph = q->sh * q->sw;
    lc_phase *phase = ad__arena_alloc(t, (size_t)nph * sizeof *phase);
    int64_t *ti = ad__arena_alloc(t, (size_t)(2 * (q->kh + q->kw)) * sizeof *ti);
    if (!phase || !ti) return AD_ERR_NOMEM;
    int64_t *ei = ti + q->kh, *tj = ei + q->kh, *ej = tj + q->kw;
    /* the border: how far above/left and below/right of gy any phase reads */
    int64_t bt = 0, bb = 0, bl = 0, br = 0;
    for (int64_t a = 0; a < q->sh && a < q->h; a++) {
        int64_t nr = (q->h - a + q->sh - 1) / q->sh, ni = phase_taps(a, q->ph, q->dh, q->sh, q->kh, ti, ei);
        for (int64_t i = 0; i < ni; i++) {
            if (-ei[i] > bt) bt = -ei[i];
            if (nr - 1 + ei[i] - (q->oh - 1) > bb) bb = nr - 1 + ei[i] - (q->oh - 1);
        }
    }
    for (int64_t b = 0; b < q->sw && b < q->w; b++) {
        int64_t nc = (q->w - b + q->sw - 1) / q->sw, nj = phase_taps(b, q->pw, q->dw, q->sw, q->kw, tj, ej);
        for (int64_t i = 0; i < nj; i++) {
            if (-ej[i] > bl) bl = -ej[i];
            if (nc - 1 + ej[i] - (q->ow - 1) > br) br = nc - 1 + ej[i] - (q->ow - 1);
        }
    }
    int64_t bh = bt > bb ? bt : bb, bw = bl > br ? bl : br, gwp = q->ow + 2 * bw, gplane = (q->oh + 2 * bh) * gwp;
    int nphase = 0;
    int64_t macs = 0;
    for (int64_t a = 0; a < q->sh && a < q->h; a++)
        for (int64_t b = 0; b < q->sw && b < q->w; b++) {
            int64_t ni = phase_taps(a, q->ph, q->dh, q->sh, q->kh, ti, ei);
            int64_t nj = phase_taps(b, q->pw, q->dw, q->sw, q->kw, tj, ej), k = og * ni * nj;
            int64_t *offs = ad__arena_alloc(t, (size_t)(k > 0 ? k : 1) * 2 * sizeof *offs), *tmap = offs + k;
            if (!offs) return AD_ERR_NOMEM;
            for (int64_t o = 0, p = 0; o < og; o++)
                for (int64_t i = 0; i < ni; i++)
                    for (int64_t jj = 0; jj < nj; jj++, p++) {
                        offs[p] = o * gplane + (ei[i] + bh) * gwp + ej[jj] + bw;
                        tmap[p] = o * cg * khw + ti[i] * q->kw + tj[jj]; /* w[o][c][i][j] = w[c khw + tmap] */
                    }
            wsrc src = {wg, khw, tmap};
            void *ap = lc_pack(t, dt, lk, &src, cg, k);
            if (!ap) return AD_ERR_NOMEM;
            int64_t nr = (q->h - a + q->sh - 1) / q->sh, nc = (q->w - b + q->sw - 1) / q->sw;
            phase[nphase++] = (lc_phase){ap, offs, k, a, q->sh, b, q->sw, nr, nc, gwp, 1, ni * nj > 0 ? ni * nj : 1};
            macs += cg * nr * nc * k;
        }
    return lc_launch(t, dt, lk, phase, nphase, cg, og, gyg, q->o * q->oh * q->ow, q->oh, q->ow, bh, bw,
                     q->n, q->h, q->w, gig, q->c * q->h * q->w, macs * q->n);
}

/* ---- the weight gradient's direct path: the gradient channels-last, the input broadcast in place ---- */

/* One group's weight gradient, transposed: acc[t][co] = sum over images and positions of x at tap
** t times g at channel co. The units (a tile of taps x a tile of channels) are split over the
** threads; each unit adds the images in order, so the result does not depend on the thread count.
** Each thread puts the channels of its units of one image at a time channels last (gt, a buffer
** that stays in the cache) before running its units on that image. */
typedef struct wg_job {
    const ad__wgrad_kernel *wk;
    int kind;
    bool f64;
    const void *x;            /* the padded input of the group's first channel */
    int64_t xb, xrs, xcs;     /* image stride; the input step between output rows and columns */
    const int64_t *offs;      /* tp offsets of the taps (the padding taps at 0) */
    int64_t n, oh, ow;
    const void *g;            /* the output gradient's group's first channel; images gb apart */
    int64_t gb, og, ogp;
    void *acc;                /* [tp][ogp] */
    int64_t ttiles, ctiles;
    char *bufs;               /* per thread: ohw x ogp elements */
    size_t buf_bytes;
} wg_job;

static void wg_share(void *ctx, int tid, int nth)
{
    const wg_job *j = ctx;
    int nv = j->wk->nv[j->kind], mr = j->wk->mr[j->kind], w = j->wk->w;
    size_t es = j->f64 ? sizeof(double) : sizeof(float);
    int64_t units = j->ttiles * j->ctiles, u0 = units * tid / nth, u1 = units * (tid + 1) / nth, ohw = j->oh * j->ow;
    if (u0 >= u1) return;
    int64_t cw = (int64_t)nv * w, c0 = u0 / j->ttiles * cw, c1 = ((u1 - 1) / j->ttiles + 1) * cw, ldt = c1 - c0;
    char *gt = j->bufs + (size_t)tid * j->buf_bytes;
    for (int64_t b = 0; b < j->n; b++) {
        const char *gb = (const char *)j->g + (size_t)(b * j->gb) * es;
        /* gt[p][co - c0] = g[co][p] for co < og, zero from og on (the tile's padding lanes) */
        int64_t ce = c1 < j->og ? c1 : j->og;
        if (j->f64) {
            j->wk->tr_f64((const double *)(const void *)gb + c0 * ohw, ohw, ce - c0, ohw, (double *)(void *)gt, ldt);
            for (int64_t p = 0; ce < c1 && p < ohw; p++)
                for (int64_t co = ce; co < c1; co++) ((double *)(void *)gt)[p * ldt + co - c0] = 0;
        } else {
            j->wk->tr_f32((const float *)(const void *)gb + c0 * ohw, ohw, ce - c0, ohw, (float *)(void *)gt, ldt);
            for (int64_t p = 0; ce < c1 && p < ohw; p++)
                for (int64_t co = ce; co < c1; co++) ((float *)(void *)gt)[p * ldt + co - c0] = 0;
        }
        for (int64_t u = u0; u < u1; u++) { /* taps fastest: consecutive units read the same channels */
            int64_t ct = u / j->ttiles, tt = u % j->ttiles;
            const char *x = (const char *)j->x + (size_t)(b * j->xb) * es;
            const char *g = gt + (size_t)(ct * cw - c0) * es;
            char *c = (char *)j->acc + (size_t)(tt * mr * j->ogp + ct * cw) * es;
            if (j->f64)
                j->wk->f64[j->kind](j->oh, j->ow, (const double *)(const void *)x, j->offs + tt * mr, j->xrs, j->xcs,
                                    (const double *)(const void *)g, ldt, (double *)(void *)c, j->ogp, b > 0);
            else
                j->wk->f32[j->kind](j->oh, j->ow, (const float *)(const void *)x, j->offs + tt * mr, j->xrs, j->xcs,
                                    (const float *)(const void *)g, ldt, (float *)(void *)c, j->ogp, b > 0);
        }
    }
}

/* The kernel kind for og channels, kk taps and nth threads: the one whose busiest thread has the
** least to do per output position. A thread's work is its units' vector multiply-adds (nv mr each,
** padding included; more vectors per tile load less per multiply-add, hence the discount) plus
** the channels it puts channels last, about one multiply-add's time each (wg_share transposes
** every channel its units touch: when the threads share a tile of channels, each transposes it, so
** on the 1x1 of bench_conv, 64 channels and 32 taps, the 4-vector kind took 0.41 ms on 2 threads
** as on 1, and the 2-vector kind 0.22). Every kind computes each element of the result with the
** same operations in the same order, so the choice never changes the result. */
static int wgrad_kind(const ad__wgrad_kernel *wk, int64_t og, int64_t kk, int nth)
{
    int64_t nvec = (og + wk->w - 1) / wk->w;
    int best = 0;
    double best_cost = -1;
    for (int i = 0; i < AD__WGRAD_KINDS; i++) {
        int64_t nv = wk->nv[i], mr = wk->mr[i], cw = nv * wk->w, tt = (kk + mr - 1) / mr;
        int64_t units = (nvec + nv - 1) / nv * tt;
        double cost = 0;
        for (int tid = 0; tid < nth; tid++) { /* wg_share's split */
            int64_t u0 = units * tid / nth, u1 = units * (tid + 1) / nth;
            if (u0 >= u1) continue;
            int64_t chans = ((u1 - 1) / tt + 1 - u0 / tt) * cw;
            double c = (double)((u1 - u0) * nv * mr) / (1 + 0.1 * (double)nv) + (double)chans;
            if (c > cost) cost = c;
        }
        if (best_cost < 0 || cost <= best_cost) best = i, best_cost = cost;
    }
    return best;
}

/* dW [o][cg kh kw] of a convolution by the direct weight-gradient kernel (any stride, dilation,
** padding): xp is the padded input, g the output gradient. */
ad_status ad__wgrad_run(ad_tape *t, ad_dtype dt, const ad__wgrad_kernel *wk, const geom *q, const char *xp,
                        const void *g, void *dw)
{
    size_t es = ad_dtype_size(dt);
    int64_t cg = q->c / q->g, og = q->o / q->g, kk = cg * q->kh * q->kw, ohw = q->oh * q->ow;
    int64_t hp = q->h + 2 * q->ph, wp = q->w + 2 * q->pw;
    int nth = conv_threads(og, kk, q->n * ohw);
    int kind = wgrad_kind(wk, og, kk, nth), nv = wk->nv[kind], mr = wk->mr[kind];
    int64_t cw = (int64_t)nv * wk->w, ogp = (og + cw - 1) / cw * cw, tp = (kk + mr - 1) / mr * mr;
    int64_t bufs, accs;
    if (!ad__mul_ok(ohw, ogp, &bufs) || !ad__mul_ok(tp, ogp, &accs)) return AD_ERR_NOMEM;
    int64_t units = tp / mr * (ogp / cw);
    if (nth > units) nth = (int)units;
    size_t buf_bytes = up64((size_t)bufs * es);
    char *gt = ad__arena_alloc(t, (size_t)nth * buf_bytes + 64), *acc = ad__arena_alloc(t, (size_t)accs * es + 64);
    int64_t *offs = ad__arena_alloc(t, (size_t)tp * sizeof *offs);
    if (!gt || !acc || !offs) return AD_ERR_NOMEM;
    gt = (char *)(((uintptr_t)gt + 63) & ~(uintptr_t)63);
    acc = (char *)(((uintptr_t)acc + 63) & ~(uintptr_t)63);
    for (int64_t c = 0, p = 0; c < cg; c++)
        for (int64_t i = 0; i < q->kh; i++)
            for (int64_t j = 0; j < q->kw; j++) offs[p++] = c * hp * wp + i * q->dh * wp + j * q->dw;
    for (int64_t p = kk; p < tp; p++) offs[p] = 0;
    for (int64_t gi = 0; gi < q->g; gi++) {
        wg_job j = {wk, kind, dt == AD_F64, xp + (size_t)(gi * cg * hp * wp) * es, q->c * hp * wp, q->sh * wp, q->sw,
                    offs, q->n, q->oh, q->ow, (const char *)g + (size_t)(gi * og * ohw) * es, q->o * ohw, og, ogp,
                    acc, tp / mr, ogp / cw, gt, buf_bytes};
        ad__parallel(nth, wg_share, &j);
        /* dW[g og + co][p] = acc[p][co] */
        if (dt == AD_F64) {
            const double *a = (const double *)(const void *)acc;
            double *d = (double *)dw + gi * og * kk;
            for (int64_t co = 0; co < og; co++)
                for (int64_t p = 0; p < kk; p++) d[co * kk + p] = a[p * ogp + co];
        } else {
            const float *a = (const float *)(const void *)acc;
            float *d = (float *)dw + gi * og * kk;
            for (int64_t co = 0; co < og; co++)
                for (int64_t p = 0; p < kk; p++) d[co * kk + p] = a[p * ogp + co];
        }
    }
    return AD_OK;
}

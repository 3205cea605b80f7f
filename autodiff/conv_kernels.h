/* conv_kernels.h: direct-convolution micro-kernels (AVX-512, AVX2), which read the image in place instead of packed panels. */
#ifndef AUTODIFF_CONV_KERNELS_H
#define AUTODIFF_CONV_KERNELS_H

#include "services.h"

/* The most output rows one kernel call computes. */
#define AD__DCONV_MAX_ROWS 3

/*
** A direct kernel computes a tile of MR output channels x nrows output rows x W consecutive
** output columns (one vector of W lanes per row) of a convolution with horizontal stride 1:
**   c[i ldc + r crs + l] = sum_p a[p MR + i] x[offs[p] + r rs + l]   (i < mvalid, r < nrows, l < lanes)
** a holds the weights as MR-tall packed panels (kc steps of MR values), x points at the tile's
** first input element in a padded image, offs[p] is tap p's offset in it (channel, row, column),
** rs the input distance between output rows. Lanes past `lanes` are computed from whatever lies
** there (the buffer must extend W elements past the last tap read) and never stored.
*/
typedef void (*ad__dconv_f32)(int64_t kc, const float *a, const float *x, const int64_t *offs, int64_t rs, float *c,
                              int64_t ldc, int64_t crs, int mvalid, int lanes);
typedef void (*ad__dconv_f64)(int64_t kc, const double *a, const double *x, const int64_t *offs, int64_t rs,
                              double *c, int64_t ldc, int64_t crs, int mvalid, int lanes);

typedef struct ad__dconv_kernel {
    const char *name;                      /* "avx512", "avx2" */
    int mr, w;                             /* channels per tile, lanes per vector */
    ad__dconv_f32 f32[AD__DCONV_MAX_ROWS]; /* [nrows - 1]; exactly one of f32/f64 is set */
    ad__dconv_f64 f64[AD__DCONV_MAX_ROWS];
} ad__dconv_kernel;

/* The direct kernel for this CPU and element type, or NULL (no AVX2 or AVX-512: the packed path). */
AD_INTERNAL const ad__dconv_kernel *ad__dconv_select(bool f64);

/*
** A weight-gradient kernel accumulates, over the oh x ow output positions of one image, a tile of
** MR taps x NV vectors of W output channels:
**   c[t ldc + l] (+)= sum_{oy, ox} x[offs[t] + oy xrs + ox xcs] g[(oy ow + ox) ldg + l]   (t < MR, l < NV W)
** x points at the image's first (padded) input element, offs[t] is tap t's offset in it, g holds the
** output gradient with the channels last (ldg apart per position). Each tap's input is broadcast,
** the channels are the vector lanes, so no lane is idle however narrow the rows are. c is written
** (add false) or added to (add true) in one fixed order: positions in order, then c.
*/
typedef void (*ad__wgrad_f32)(int64_t oh, int64_t ow, const float *x, const int64_t *offs, int64_t xrs, int64_t xcs,
                              const float *g, int64_t ldg, float *c, int64_t ldc, bool add);
typedef void (*ad__wgrad_f64)(int64_t oh, int64_t ow, const double *x, const int64_t *offs, int64_t xrs,
                              int64_t xcs, const double *g, int64_t ldg, double *c, int64_t ldc, bool add);

#define AD__WGRAD_KINDS 3 /* kernels per CPU and type, by the vectors of channels they hold */

typedef struct ad__wgrad_kernel {
    const char *name;
    int w;                             /* lanes per vector */
    int nv[AD__WGRAD_KINDS];           /* vectors of channels per tile, ascending */
    int mr[AD__WGRAD_KINDS];           /* taps per tile */
    ad__wgrad_f32 f32[AD__WGRAD_KINDS]; /* exactly one of f32/f64 is set */
    ad__wgrad_f64 f64[AD__WGRAD_KINDS];
    /* dst[j ldd + i] = src[i lds + j] (i < rows, j < cols): the gradient put channels last */
    void (*tr_f32)(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd);
    void (*tr_f64)(const double *src, int64_t lds, int64_t rows, int64_t cols, double *dst, int64_t ldd);
} ad__wgrad_kernel;

/* The weight-gradient kernel for this CPU and element type, or NULL (the packed path). */
AD_INTERNAL const ad__wgrad_kernel *ad__wgrad_select(bool f64);

/*
** A lane kernel computes a tile of MR output positions x NV vectors of W output channels, the
** channels as the vector lanes (the weight gradient's layout turned round for the forward product):
**   c[row[i] ldc + l] (+)= sum_p a[p NV W + l] x[pos[i] + offs[p]]   (i < MR, l < NV W)
** a holds the weights of the tile's channels packed [kc][NV W] (zero past the last channel), x
** points at the image's first padded element, pos[i] is position i's offset in it (any stride),
** offs[p] tap p's (channel, row and column, any dilation), row[i] its row of c. Each input element
** is broadcast, so no lane is idle however narrow the rows; each output is one in-order sum over
** its taps, the same
** whatever the tile, kind or thread. With add, the sum goes on from c (a later block of taps: the
** same operations in the same order as one call over all the taps).
*/
typedef void (*ad__lconv_f32)(int64_t kc, const float *a, const float *x, const int64_t *offs, const int64_t *pos,
                              float *c, int64_t ldc, const int64_t *row, bool add);
typedef void (*ad__lconv_f64)(int64_t kc, const double *a, const double *x, const int64_t *offs,
                              const int64_t *pos, double *c, int64_t ldc, const int64_t *row, bool add);

#define AD__LCONV_MAX_NV 4

typedef struct ad__lconv_kernel {
    const char *name;
    int w;                               /* lanes per vector */
    int max_nv;                          /* kinds: nv = 1 .. max_nv vectors of channels */
    int mr[AD__LCONV_MAX_NV];            /* positions per tile, by nv - 1 */
    ad__lconv_f32 f32[AD__LCONV_MAX_NV]; /* exactly one of f32/f64 is set */
    ad__lconv_f64 f64[AD__LCONV_MAX_NV];
    /* dst[j ldd + i] = src[i lds + j]: the tiles' channels-last results put back channels first */
    void (*tr_f32)(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd);
    void (*tr_f64)(const double *src, int64_t lds, int64_t rows, int64_t cols, double *dst, int64_t ldd);
} ad__lconv_kernel;

#define AD__LCONV_MAX_MR 8       /* the most positions of a lane kernel's tile */
#define AD__LCONV_KC_BYTES 20480 /* a block of taps' weights, at most (the L1 cache holds them) */

/* The vectors of the channel tile starting at vector v0: as few tiles as the widest kind allows,
** as even as they can be (4 vectors on AVX2, whose widest kind holds 3: 2 + 2, not 3 + 1, whose
** one-vector tile has too few accumulators to hide the multiply-add latency). */
static inline int ad__lconv_nv(int64_t nvec, int max_nv, int64_t v0)
{
    int64_t nt = (nvec + max_nv - 1) / max_nv, base = nvec / nt, rem = nvec % nt;
    return (int)(v0 < rem * (base + 1) ? base + 1 : base);
}

/* The lines of the next chunk's output, fetched a few per kernel call while this chunk computes:
** its transpose then stores into the cache (the stores had missed it: perf put the transposes at
** 11.6% of bench_conv's layer-2 samples, 6.0% with this). */
typedef struct ad__lconv_prefetch {
    const char *base;    /* the chunk's first output element of channel 0 */
    int64_t rows, ld;    /* channels, and the bytes between their rows */
    int64_t len;         /* bytes of each row in the chunk */
    int64_t r, off;      /* the next line: row r, offset off */
} ad__lconv_prefetch;

#define AD__LCONV_PREFETCH 8 /* lines per kernel call */

static inline void ad__lconv_fetch(ad__lconv_prefetch *pf)
{
    for (int i = 0; i < AD__LCONV_PREFETCH && pf->r < pf->rows; i++) {
        const char *row = pf->base + pf->r * pf->ld;
        if (pf->off < pf->len) { /* a line of the row every 64 bytes, then the line of its last byte */
            __builtin_prefetch(row + pf->off, 1, 3);
            pf->off += 64;
        } else {
            __builtin_prefetch(row + pf->len - 1, 1, 3);
            pf->off = 0, pf->r++;
        }
    }
}

/* The lane kernel for this CPU and element type, or NULL (no AVX2 or AVX-512). */
AD_INTERNAL const ad__lconv_kernel *ad__lconv_select(bool f64);

/* The maxima and argmaxes (0 .. 3, row-major in the window) of n 2x2 windows of the row pair r0,
** r1 (2 n elements each), the first maximum winning and NaN over numbers, as ops_conv.c's scalar
** loop; false (nothing written) without AVX-512. */
AD_INTERNAL bool ad__maxpool2_win_f32(const float *r0, const float *r1, int64_t n, float *bv, int8_t *bk);

#endif

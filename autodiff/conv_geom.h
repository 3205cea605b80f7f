/* conv_geom.h: the geometry shared by the convolution (ops_conv.c, conv_lane.c) and pooling (ops_pool.c) ops. */
#ifndef AUTODIFF_CONV_GEOM_H
#define AUTODIFF_CONV_GEOM_H

#include "ad.h"
#include "services.h"

#include <stdint.h>

/* Two 31-bit parameters packed into one attribute slot. */
static inline int64_t pack(int64_t a, int64_t b) { return (a << 32) | b; }
static inline int64_t hi(int64_t v) { return v >> 32; }
static inline int64_t lo(int64_t v) { return v & 0xffffffff; }

/* The geometry of one convolution or pooling: input [n, c, h, w], output [n, o, oh, ow]. */
typedef struct geom {
    int64_t n, c, h, w;    /* input */
    int64_t o, oh, ow;     /* output channels and size */
    int64_t kh, kw;        /* window */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t g;             /* groups (pools: 1) */
} geom;

static inline int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    int64_t span = d * (k - 1) + 1;
    if (in + 2 * p < span) return 0;
    return (in + 2 * p - span) / s + 1;
}

#define CONV_THREAD_FLOPS ((int64_t)1 << 21) /* convolution products from this many multiply-adds use the pool */

/* Threads for a convolution's product of this many multiply-adds. */
static inline int conv_threads(int64_t m, int64_t n, int64_t k)
{
    int want = ad_get_num_threads();
    if (want > AD__MAX_THREADS) want = AD__MAX_THREADS;
    double fl = (double)m * (double)n * (double)k;
    return fl < (double)CONV_THREAD_FLOPS ? 1 : want;
}

/* b rounded up to a multiple of 64 (a cache line). */
static inline size_t up64(size_t b) { return (b + 63) / 64 * 64; }

static inline char *shp(const ad_tensor *x, char *buf) { return ad_shape_str(x->ndim, x->shape, buf, 96); }

#endif

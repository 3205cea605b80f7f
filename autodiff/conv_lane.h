/* conv_lane.h: the convolution's products with the channels as vector lanes (conv_lane.c), for ops_conv.c. */
#ifndef AUTODIFF_CONV_LANE_H
#define AUTODIFF_CONV_LANE_H

#include "conv_geom.h"
#include "conv_kernels.h"
#include "services.h"

/* The lane kernel for a convolution producing m channels from k taps, or NULL when another path
** suits it better (no SIMD kernel, few taps, or channel vectors mostly wasted). */
AD_INTERNAL const ad__lconv_kernel *ad__lconv_for(ad_dtype dt, int64_t m, int64_t k);

/* A forward convolution by the lane kernels: weights w (m x cin kh kw, row stride ldw), input x
** (cin planes of h x wd, images xb apart, padded here as q says), output y [n][m][oh][ow] with
** images yb apart. */
AD_INTERNAL ad_status ad__lconv_run(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const void *w, int64_t ldw,
                                    int64_t m, int64_t cin, const geom *q, const void *x, int64_t xb, int64_t h,
                                    int64_t wd, int64_t n, int64_t oh, int64_t ow, void *y, int64_t yb);

/* The input gradient gig of group g's convolution (weights wg, output gradient gyg, both at the
** group's first channel) by the lane kernels, one phase per residue of the input position modulo
** the strides. */
AD_INTERNAL ad_status ad__lconv_grad_input(ad_tape *t, ad_dtype dt, const ad__lconv_kernel *lk, const geom *q,
                                           const void *wg, const void *gyg, void *gig);

/* dW [o][c/g kh kw] of a convolution by the weight-gradient kernel (any stride, dilation, padding):
** xp is the padded input, g the output gradient. */
AD_INTERNAL ad_status ad__wgrad_run(ad_tape *t, ad_dtype dt, const ad__wgrad_kernel *wk, const geom *q,
                                    const char *xp, const void *g, void *dw);

/* Copies planes [p0, p1) of x ([h, w] each) into out ([h + 2 ph, w + 2 pw] each) with a zero border. */
AD_INTERNAL void ad__pad_planes(bool f64, const void *x, int64_t h, int64_t w, int64_t ph, int64_t pw, int64_t p0,
                                int64_t p1, void *out);

#endif

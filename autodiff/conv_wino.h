/* conv_wino.h: 3x3 and 5x5 stride-1 convolutions in F32 by Winograd's minimal filtering (conv_wino.c), for ops_conv.c. */
#ifndef AUTODIFF_CONV_WINO_H
#define AUTODIFF_CONV_WINO_H

#include "conv_geom.h"
#include "conv_kernels.h"
#include "services.h"

/* The lane kernel that runs q's products by F(2x2, 3x3) or F(2x2, 5x5) (forward, or with input_grad
** the input gradient) with the weights w ([o][c/g][k][k]), or NULL when the direct paths suit q:
** not F32, not 3x3 or 5x5 with stride and dilation 1, fewer than WINO_MIN_C channels on either
** side, (input gradient) padding above k - 1, or a weight that is not finite or is huge (see
** WINO_BIG). */
AD_INTERNAL const ad__lconv_kernel *ad__wino_for(ad_dtype dt, const geom *q, bool input_grad, const void *w);

/* y [n][m][oh][ow] (images yb apart) = the r x r (3 or 5) stride-1 convolution of x ([n][cin][h][wd],
** images xb apart, zero border ph rows and pw columns) with the weights w: output channel co's
** weight from input channel ci at (ky, kx) is w[co sco + ci sci + ky r + kx], or with flip at
** (r - 1 - ky, r - 1 - kx) (the input gradient's transposed, flipped kernel).
** oh = h + 2 ph - r + 1, ow = wd + 2 pw - r + 1. */
AD_INTERNAL ad_status ad__wino_run(ad_tape *t, const ad__lconv_kernel *lk, int r, const float *w, int64_t sco,
                                   int64_t sci, bool flip, int64_t m, int64_t cin, const float *x, int64_t xb, int64_t h,
                                   int64_t wd, int64_t ph, int64_t pw, int64_t n, float *y, int64_t yb);

/* The lane kernel that runs q's weight gradient by F(3x3, 2x2) or F(5x5, 2x2), or NULL (as ad__wino_for). */
AD_INTERNAL const ad__lconv_kernel *ad__wino_wgrad_for(ad_dtype dt, const geom *q);

/* dw [m][cin][r][r] = the weight gradient of the r x r (3 or 5) stride-1 convolution of x ([n][cin][h][wd],
** images xb apart, zero border ph, pw) whose output gradient is gy ([n][m][oh][ow], images gyb apart). */
AD_INTERNAL ad_status ad__wino_wgrad(ad_tape *t, const ad__lconv_kernel *lk, int r, const float *x, int64_t xb,
                                     const float *gy, int64_t gyb, int64_t m, int64_t cin, int64_t h, int64_t wd,
                                     int64_t ph, int64_t pw, int64_t n, float *dw);

#endif

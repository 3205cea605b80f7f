/* conv_wino_tx.h: what the Winograd weight gradient (conv_wino_wgrad.c) shares with the forward and input
** gradient (conv_wino.c): the channel vectors, the input transform, the zero-bordered rows and the check
** that keeps the transforms' sums finite. */
#ifndef AUTODIFF_CONV_WINO_TX_H
#define AUTODIFF_CONV_WINO_TX_H

#include "conv_kernels.h"

#include <stdbool.h>
#include <stdint.h>

#define WINO_MIN_C 16 /* channels on each side at least (fewer: the transforms cost more than they save) */

/* The transforms run on 16 channels at a time as GCC vectors (one AVX-512 register, two AVX2
** ones, four SSE ones: each clone of AD_CLONES splits them as its ISA allows), the last c % 16 as
** scalars; both add and subtract in the same order. */
typedef float wino_v __attribute__((vector_size(64), may_alias, aligned(4)));
#define WV_LD(p) (*(const wino_v *)(const void *)(p))
#define WV_ST(p, v) (*(wino_v *)(void *)(p) = (v))

/* Whether every one of the n floats at v is finite and below WINO_BIG (conv_wino.c) in magnitude. */
AD_INTERNAL bool ad__wino_tame(const float *v, int64_t n);

/* p ([rows][wp][c]) = input rows [iy0, iy0 + rows) of the planes x ([c][h][w]) starting at column pw,
** channels last, zeros where no row or column is; tmp holds rows x w x c floats. */
AD_INTERNAL void ad__wino_border(const ad__lconv_kernel *lk, const float *x, int64_t c, int64_t h, int64_t w,
                                 int64_t iy0, int64_t rows, int64_t pw, int64_t wp, float *p, float *tmp);

/* V = B^T d B of F(2, r) (r = 3 or 5) for nt tiles: tile i's window at p + (2 i) c, rows ld apart, c
** channels each, into v[xi][i][c] (the xi-th matrix ldv floats after the previous). */
AD_INTERNAL void ad__wino_in(int r, const float *p, int64_t ld, int64_t c, int64_t nt, float *v, int64_t ldv);

#endif

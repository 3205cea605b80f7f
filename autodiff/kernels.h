/* kernels.h: loops on tensors shared by the op families: broadcasting, sums to a shape, accumulation,
** and the matrix product (gemm.c; its micro-kernels are in gemm.h); never installed. */
#ifndef AUTODIFF_KERNELS_H
#define AUTODIFF_KERNELS_H

#include "services.h"

/* Broadcast shape of a and b into out (NumPy rules); false if incompatible. */
AD_INTERNAL bool ad__broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                                     int64_t *out);
/* Element strides of `in` seen through the broadcast to (ndim, shape): 0 on broadcast dims. */
AD_INTERNAL void ad__bcast_strides(const ad_tensor *in, int ndim, const int64_t *shape, int64_t *strides);
/* dst (shape of dst) = src broadcast to dst's shape. */
AD_INTERNAL void ad__broadcast_copy(ad_tensor *dst, const ad_tensor *src);
/* dst = src summed down to dst's shape (dst's shape broadcasts to src's). */
AD_INTERNAL void ad__sum_to_kernel(ad_tensor *dst, const ad_tensor *src);
/* dst += src, same size and dtype (any shape). */
AD_INTERNAL void ad__add_into(ad_tensor *dst, const ad_tensor *src);

/* C = alpha * op(A) op(B) + beta * C, row-major; op transposes when the flag is set.
** A is [m,k] (or [k,m] with ta), B is [k,n] (or [n,k] with tb). */
AD_INTERNAL ad_status ad__gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                                   float *c, int64_t ldc);
AD_INTERNAL ad_status ad__gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                                   const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                                   double *c, int64_t ldc);

/* One step of an odometer over the dims [0, nd) of shape: idx moves to the next index in
** row-major order (back to all zeros after the last), and each of the k offsets off[j] by the
** element strides st[j][d] of the dims that change. Inlined: with k constant its loops unroll. */
static AD_ALWAYS_INLINE void ad__odometer_next(int nd, const int64_t *shape, int64_t *idx, int k,
                                               const int64_t *const *st, int64_t *off)
{
    for (int d = nd - 1; d >= 0; d--) {
        for (int j = 0; j < k; j++) off[j] += st[j][d];
        if (++idx[d] < shape[d]) return;
        for (int j = 0; j < k; j++) off[j] -= st[j][d] * shape[d];
        idx[d] = 0;
    }
}

#endif

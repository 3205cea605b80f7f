/* kernels.h: loops on tensors shared by the op families: broadcasting, sums to a shape, accumulation,
** and the matrix product (gemm.c; its micro-kernels are in gemm.h); never installed. */
#ifndef AUTODIFF_KERNELS_H
#define AUTODIFF_KERNELS_H

#include "services.h"

/*
** Elementwise loops on threads. A loop over n independent outputs (an elementwise op, its fast
** VJP, sum_to's outputs) runs on ad__par_threads(n) threads of ad__parallel, each share a range
** of outputs that it alone writes, each output computed exactly as on one thread: the result
** is the same bit for bit for any thread count. Below AD__PAR_MIN elements per share a loop stays
** on the calling thread (no pool call): on the 2-core machine of docs/performance.md a share
** of 2^15 F32 elements (relu, a bias add) takes about 5-10 us, a pool call about 2-5 us.
*/
#ifndef AD__PAR_MIN /* (a build may set it, to measure) */
#define AD__PAR_MIN ((int64_t)1 << 15)
#endif

/* The threads for a loop over n outputs: 1 below 2 AD__PAR_MIN, else up to
** ad_get_num_threads(), at most one per AD__PAR_MIN elements. */
static inline int ad__par_threads(int64_t n)
{
    if (n < 2 * AD__PAR_MIN) return 1;
    int nth = ad_get_num_threads();
    if (nth > AD__MAX_THREADS) nth = AD__MAX_THREADS;
    int64_t most = n / AD__PAR_MIN;
    return most < nth ? (int)most : nth;
}

/* Share tid of nth of the range [0, n): [*lo, *hi), its bounds multiples of 16 elements (whole
** cache lines of F32 or half lines of F64: no two threads write one line but at the bounds'). */
static inline void ad__par_range(int64_t n, int tid, int nth, int64_t *lo, int64_t *hi)
{
    int64_t units = (n + 15) / 16, a = units * tid / nth * 16, b = units * (tid + 1) / nth * 16;
    *lo = a < n ? a : n;
    *hi = tid == nth - 1 || b > n ? n : b;
}

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

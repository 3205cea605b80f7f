/* kernels.h: loops on tensors shared by the op families: broadcasting, sums to a shape, accumulation,
** and the matrix product (gemm.c; its micro-kernels are in gemm.h); never installed. */
#ifndef AUTODIFF_KERNELS_H
#define AUTODIFF_KERNELS_H

#include "services.h"

/*
** Elementwise loops on threads. A loop over n independent outputs (an elementwise op, its fast
** VJP, sum_to's outputs) runs on ad__par_threads(n) threads: ad__par_for hands out its range in
** chunks of about AD__PAR_MIN / 2 elements to whichever thread of ad__parallel's pool asks first,
** each chunk's outputs written by that thread alone and each computed exactly as on one thread, so
** the result is the same bit for bit whoever runs which chunk and for any thread count. (Chunks
** rather than one share per thread: a worker that wakes late, or shares its core with another
** process, takes fewer chunks instead of holding up the call.) Below 2 AD__PAR_MIN elements a loop
** stays on the calling thread, with no pool call: on the project's 2-core machine, F32 relu, a bias
** add and a bias's sum_to of 2^15 elements gained nothing on 2 threads (1.00x, 1.09x, 1.25x, noisy),
** of 2^16 elements 1.38-1.46x, 1.13-1.37x and 1.4-1.55x, of 2^18 to 2^20 relu and the add 1.7-2.3x.
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

/* A loop's body on units [lo, hi) of its range; an AD_CLONES function, so that it keeps the
** vector code of the loop it replaces. */
typedef void (*ad__range_fn)(void *ctx, int64_t lo, int64_t hi);
/* The units in one chunk of a loop whose units hold `per` elements each: about AD__PAR_MIN / 2
** elements, at least one unit, a multiple of 16 when units are single elements (whole cache
** lines of F32: threads write the same line only at a chunk's ends). */
static inline int64_t ad__par_chunk(int64_t per)
{
    int64_t c = AD__PAR_MIN / 2 / (per > 0 ? per : 1);
    if (per <= 1) c = (c + 15) / 16 * 16;
    return c > 0 ? c : 1;
}
/* Runs run(ctx, lo, hi) on chunks (ad__par_chunk(per) units) covering [0, n) once, on nth
** threads of ad__parallel (nth > 1, from ad__par_threads); returns when all are done. */
AD_INTERNAL void ad__par_for(int nth, int64_t n, int64_t per, ad__range_fn run, void *ctx);

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
/* The same with the packed panels' memory (when they do not fit on the threads' stacks) from
** scratch(ctx, bytes), 64-byte aligned, which the caller reclaims after the call (a tape's arena:
** a warmed-up step then allocates nothing), instead of ad__malloc; NULL from it is AD_ERR_NOMEM. */
typedef void *(*ad__scratch_fn)(void *ctx, size_t bytes);
AD_INTERNAL ad_status ad__gemm_f32_ws(ad__scratch_fn scratch, void *ctx, bool ta, bool tb, int64_t m, int64_t n,
                                      int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                                      int64_t ldb, float beta, float *c, int64_t ldc);
AD_INTERNAL ad_status ad__gemm_f64_ws(ad__scratch_fn scratch, void *ctx, bool ta, bool tb, int64_t m, int64_t n,
                                      int64_t k, double alpha, const double *a, int64_t lda, const double *b,
                                      int64_t ldb, double beta, double *c, int64_t ldc);

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

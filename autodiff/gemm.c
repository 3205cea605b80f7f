/* gemm.c: the built-in matrix product kernel, C = alpha op(A) op(B) + beta C, row-major. */
#include "ad_internal.h"

/* A plain loop nest: i-p-j order so the innermost loop runs along rows of B and C. */
#define GEMM_BODY(T)                                                                                     \
    do {                                                                                                 \
        for (int64_t i = 0; i < m; i++) {                                                                \
            T *ci = c + i * ldc;                                                                         \
            if (beta == 0)                                                                               \
                for (int64_t j = 0; j < n; j++) ci[j] = 0;                                               \
            else if (beta != 1)                                                                          \
                for (int64_t j = 0; j < n; j++) ci[j] *= beta;                                           \
            for (int64_t p = 0; p < k; p++) {                                                            \
                T aip = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);                                  \
                if (!tb) {                                                                               \
                    const T *bp = b + p * ldb;                                                           \
                    for (int64_t j = 0; j < n; j++) ci[j] += aip * bp[j];                                \
                } else {                                                                                 \
                    for (int64_t j = 0; j < n; j++) ci[j] += aip * b[j * ldb + p];                       \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    } while (0)

ad_status ad__gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    GEMM_BODY(float);
    return AD_OK;
}

ad_status ad__gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                       int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc)
{
    GEMM_BODY(double);
    return AD_OK;
}

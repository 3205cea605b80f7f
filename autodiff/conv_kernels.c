/* conv_kernels.c: direct-convolution micro-kernels over vectors of output columns (AVX-512, AVX2) and their CPU dispatch. */
#include "conv_kernels.h"

/*
** Why a second kind of kernel: the packed path (conv_gemm.inc) copies every im2col element into
** a panel before the GEMM kernel reads it, and for a layer of 64 output channels that copy costs
** about half as much as the products themselves (perf: pack_im2col 22% of bench_conv's l2_k3
** samples against 42% in the micro-kernel). With horizontal stride 1 the W output columns of a
** vector read W consecutive input elements for every tap, so the kernel can load them straight
** from the (zero-padded) image: nothing is packed but the weights, once per call.
**
** Registers: acc[MR][NROWS] vectors, NROWS input vectors per tap and one broadcast weight:
**   AVX-512 (32 zmm): MR 8, up to 3 rows -> 24 accumulators + 3 + 1;
**   AVX2    (16 ymm): MR 4, up to 3 rows -> 12 accumulators + 3 + 1.
** The tap loop has kc = C kh kw steps (no blocking: C is written once), each NROWS loads, MR
** broadcasts and MR NROWS fused multiply-adds. Results: each output is one in-order sum over
** its taps, the same whichever thread computes it.
*/

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define DK_UNROLL _Pragma("GCC unroll 8")

#define DCONV(NAME, TARGET, T, V, MR, W, NROWS, LOAD, STORE, MSTORE, SET1, FMA, ZERO)                    \
    TARGET static void NAME(int64_t kc, const T *a, const T *x, const int64_t *offs, int64_t rs, T *c,   \
                            int64_t ldc, int64_t crs, int mvalid, int lanes)                             \
    {                                                                                                    \
        V acc[MR][NROWS];                                                                                \
        DK_UNROLL for (int i = 0; i < MR; i++) DK_UNROLL for (int r = 0; r < NROWS; r++) acc[i][r] = ZERO(); \
        for (int64_t p = 0; p < kc; p++, a += MR) {                                                      \
            const T *xp = x + offs[p];                                                                   \
            V b[NROWS];                                                                                  \
            DK_UNROLL for (int r = 0; r < NROWS; r++) b[r] = LOAD(xp + r * rs);                          \
            DK_UNROLL for (int i = 0; i < MR; i++) {                                                     \
                V ai = SET1(a[i]);                                                                       \
                DK_UNROLL for (int r = 0; r < NROWS; r++) acc[i][r] = FMA(ai, b[r], acc[i][r]);          \
            }                                                                                            \
        }                                                                                                \
        for (int i = 0; i < mvalid; i++)                                                                 \
            for (int r = 0; r < NROWS; r++) {                                                            \
                T *cp = c + i * ldc + r * crs;                                                           \
                if (lanes == W)                                                                          \
                    STORE(cp, acc[i][r]);                                                                \
                else                                                                                     \
                    MSTORE(cp, lanes, acc[i][r]);                                                        \
            }                                                                                            \
    }

#define T512 __attribute__((target("avx512f,fma")))
#define T256 __attribute__((target("avx2,fma")))

#define DCONV3(PREFIX, TARGET, T, V, MR, W, LOAD, STORE, MSTORE, SET1, FMA, ZERO)                        \
    DCONV(PREFIX##_1, TARGET, T, V, MR, W, 1, LOAD, STORE, MSTORE, SET1, FMA, ZERO)                      \
    DCONV(PREFIX##_2, TARGET, T, V, MR, W, 2, LOAD, STORE, MSTORE, SET1, FMA, ZERO)                      \
    DCONV(PREFIX##_3, TARGET, T, V, MR, W, 3, LOAD, STORE, MSTORE, SET1, FMA, ZERO)

/* Stores of the first n lanes only (n < W). */
#define MS512_PS(p, n, v) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (n)) - 1), v)
#define MS512_PD(p, n, v) _mm512_mask_storeu_pd(p, (__mmask8)((1u << (n)) - 1), v)
#define MS256_PS(p, n, v) \
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v)
#define MS256_PD(p, n, v) \
    _mm256_maskstore_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)), v)

DCONV3(dk_f32_avx512, T512, float, __m512, 8, 16, _mm512_loadu_ps, _mm512_storeu_ps, MS512_PS, _mm512_set1_ps, _mm512_fmadd_ps,
       _mm512_setzero_ps)
DCONV3(dk_f64_avx512, T512, double, __m512d, 8, 8, _mm512_loadu_pd, _mm512_storeu_pd, MS512_PD, _mm512_set1_pd, _mm512_fmadd_pd,
       _mm512_setzero_pd)
DCONV3(dk_f32_avx2, T256, float, __m256, 4, 8, _mm256_loadu_ps, _mm256_storeu_ps, MS256_PS, _mm256_set1_ps, _mm256_fmadd_ps,
       _mm256_setzero_ps)
DCONV3(dk_f64_avx2, T256, double, __m256d, 4, 4, _mm256_loadu_pd, _mm256_storeu_pd, MS256_PD, _mm256_set1_pd, _mm256_fmadd_pd,
       _mm256_setzero_pd)

static const ad__dconv_kernel k_f32_avx512 = {"avx512", 8, 16, {dk_f32_avx512_1, dk_f32_avx512_2, dk_f32_avx512_3}, {0}};
static const ad__dconv_kernel k_f64_avx512 = {"avx512", 8, 8, {0}, {dk_f64_avx512_1, dk_f64_avx512_2, dk_f64_avx512_3}};
static const ad__dconv_kernel k_f32_avx2 = {"avx2", 4, 8, {dk_f32_avx2_1, dk_f32_avx2_2, dk_f32_avx2_3}, {0}};
static const ad__dconv_kernel k_f64_avx2 = {"avx2", 4, 4, {0}, {dk_f64_avx2_1, dk_f64_avx2_2, dk_f64_avx2_3}};

const ad__dconv_kernel *ad__dconv_select(bool f64)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return f64 ? &k_f64_avx512 : &k_f32_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return f64 ? &k_f64_avx2 : &k_f32_avx2;
    return NULL;
}

#else

const ad__dconv_kernel *ad__dconv_select(bool f64)
{
    (void)f64;
    return NULL;
}

#endif

/* conv_kernels.c: direct-convolution micro-kernels over vectors of output columns (AVX-512, AVX2) and their CPU dispatch. */
#include "conv_kernels.h"

#include <string.h>

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

/*
** The weight gradient's kernel (see conv_kernels.h): MR taps x NV vectors of channels, MR NV
** accumulators; per output position NV vector loads of the gradient (channels last), MR broadcasts
** of the input and MR NV fused multiply-adds, like the packed GEMM kernel but with the input read
** in place (nothing is packed: the taps' offsets stay in registers). The tap tile is small enough
** for those offsets to fit the general registers.
*/
#define WG_UNROLL _Pragma("GCC unroll 24")

#define WGRAD(NAME, TARGET, T, V, MR, NV, W, LOAD, STORE, SET1, FMA, ADD, ZERO)                          \
    TARGET static void NAME(int64_t oh, int64_t ow, const T *x, const int64_t *offs, int64_t xrs,        \
                            int64_t xcs, const T *g, int64_t ldg, T *c, int64_t ldc, bool add)           \
    {                                                                                                    \
        V acc[MR][NV];                                                                                   \
        int64_t o[MR];                                                                                   \
        WG_UNROLL for (int t = 0; t < MR; t++) {                                                         \
            o[t] = offs[t];                                                                              \
            WG_UNROLL for (int v = 0; v < NV; v++) acc[t][v] = ZERO();                                   \
        }                                                                                                \
        for (int64_t oy = 0; oy < oh; oy++) {                                                            \
            const T *xp = x + oy * xrs;                                                                  \
            for (int64_t ox = 0; ox < ow; ox++, g += ldg, xp += xcs) {                                   \
                V b[NV];                                                                                 \
                WG_UNROLL for (int v = 0; v < NV; v++) b[v] = LOAD(g + v * W);                           \
                WG_UNROLL for (int t = 0; t < MR; t++) {                                                 \
                    V a = SET1(xp[o[t]]);                                                                \
                    WG_UNROLL for (int v = 0; v < NV; v++) acc[t][v] = FMA(a, b[v], acc[t][v]);          \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        WG_UNROLL for (int t = 0; t < MR; t++) WG_UNROLL for (int v = 0; v < NV; v++) {                  \
            T *cp = c + t * ldc + v * W;                                                                 \
            STORE(cp, add ? ADD(LOAD(cp), acc[t][v]) : acc[t][v]);                                       \
        }                                                                                                \
    }

/* AVX-512 (32 registers): 1 x 12, 2 x 12, 4 x 6 accumulators; AVX2 (16): 1 x 12, 2 x 6, 3 x 4. */
WGRAD(wg_f32_avx512_1, T512, float, __m512, 12, 1, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
      _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps)
WGRAD(wg_f32_avx512_2, T512, float, __m512, 12, 2, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
      _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps)
WGRAD(wg_f32_avx512_4, T512, float, __m512, 6, 4, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
      _mm512_fmadd_ps, _mm512_add_ps, _mm512_setzero_ps)
WGRAD(wg_f64_avx512_1, T512, double, __m512d, 12, 1, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd,
      _mm512_fmadd_pd, _mm512_add_pd, _mm512_setzero_pd)
WGRAD(wg_f64_avx512_2, T512, double, __m512d, 12, 2, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd,
      _mm512_fmadd_pd, _mm512_add_pd, _mm512_setzero_pd)
WGRAD(wg_f64_avx512_4, T512, double, __m512d, 6, 4, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd,
      _mm512_fmadd_pd, _mm512_add_pd, _mm512_setzero_pd)
WGRAD(wg_f32_avx2_1, T256, float, __m256, 12, 1, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
      _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps)
WGRAD(wg_f32_avx2_2, T256, float, __m256, 6, 2, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
      _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps)
WGRAD(wg_f32_avx2_3, T256, float, __m256, 4, 3, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
      _mm256_fmadd_ps, _mm256_add_ps, _mm256_setzero_ps)
WGRAD(wg_f64_avx2_1, T256, double, __m256d, 12, 1, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd,
      _mm256_fmadd_pd, _mm256_add_pd, _mm256_setzero_pd)
WGRAD(wg_f64_avx2_2, T256, double, __m256d, 6, 2, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd,
      _mm256_fmadd_pd, _mm256_add_pd, _mm256_setzero_pd)
WGRAD(wg_f64_avx2_3, T256, double, __m256d, 4, 3, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd,
      _mm256_fmadd_pd, _mm256_add_pd, _mm256_setzero_pd)

/* Transposes in 8 x 8 (float) and 4 x 4 (double) blocks of AVX registers, the edges one element at
** a time: a scalar transpose took twice the kernel's time on a first layer's 9 taps (perf). */
T256 static void tr_f32_avx2(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst, int64_t ldd)
{
    int64_t i = 0;
    for (; i + 8 <= rows; i += 8) {
        int64_t j = 0;
        for (; j + 8 <= cols; j += 8) {
            const float *s = src + i * lds + j;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds), r2 = _mm256_loadu_ps(s + 2 * lds);
            __m256 r3 = _mm256_loadu_ps(s + 3 * lds), r4 = _mm256_loadu_ps(s + 4 * lds);
            __m256 r5 = _mm256_loadu_ps(s + 5 * lds), r6 = _mm256_loadu_ps(s + 6 * lds);
            __m256 r7 = _mm256_loadu_ps(s + 7 * lds);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + j * ldd + i;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (; j < cols; j++)
            for (int64_t r = i; r < i + 8; r++) dst[j * ldd + r] = src[r * lds + j];
    }
    for (; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * ldd + i] = src[i * lds + j];
}

T256 static void tr_f64_avx2(const double *src, int64_t lds, int64_t rows, int64_t cols, double *dst, int64_t ldd)
{
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        int64_t j = 0;
        for (; j + 4 <= cols; j += 4) {
            const double *s = src + i * lds + j;
            __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lds), r2 = _mm256_loadu_pd(s + 2 * lds);
            __m256d r3 = _mm256_loadu_pd(s + 3 * lds);
            __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            double *d = dst + j * ldd + i;
            _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for (; j < cols; j++)
            for (int64_t r = i; r < i + 4; r++) dst[j * ldd + r] = src[r * lds + j];
    }
    for (; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * ldd + i] = src[i * lds + j];
}

static const ad__wgrad_kernel w_f32_avx512 = {
    "avx512", 16, {1, 2, 4}, {12, 12, 6}, {wg_f32_avx512_1, wg_f32_avx512_2, wg_f32_avx512_4}, {0}, tr_f32_avx2, tr_f64_avx2};
static const ad__wgrad_kernel w_f64_avx512 = {
    "avx512", 8, {1, 2, 4}, {12, 12, 6}, {0}, {wg_f64_avx512_1, wg_f64_avx512_2, wg_f64_avx512_4}, tr_f32_avx2, tr_f64_avx2};
static const ad__wgrad_kernel w_f32_avx2 = {
    "avx2", 8, {1, 2, 3}, {12, 6, 4}, {wg_f32_avx2_1, wg_f32_avx2_2, wg_f32_avx2_3}, {0}, tr_f32_avx2, tr_f64_avx2};
static const ad__wgrad_kernel w_f64_avx2 = {
    "avx2", 4, {1, 2, 3}, {12, 6, 4}, {0}, {wg_f64_avx2_1, wg_f64_avx2_2, wg_f64_avx2_3}, tr_f32_avx2, tr_f64_avx2};

/*
** The lane kernels (see conv_kernels.h): per tap NV vector loads of the packed weights, MR
** broadcasts of the input (one per position, each position's base address held in a register) and
** MR NV fused multiply-adds. The input is read in place, nothing but the weights is packed.
*/
#define LC_UNROLL _Pragma("GCC unroll 8")

#define LCONV(NAME, TARGET, T, V, MR, NV, W, LOAD, STORE, SET1, FMA, ZERO)                               \
    TARGET static void NAME(int64_t kc, const T *a, const T *x, const int64_t *offs, const int64_t *pos, T *c, \
                            int64_t ldc, const int64_t *row, bool add)                                   \
    {                                                                                                    \
        V acc[MR][NV];                                                                                   \
        const T *xp[MR];                                                                                 \
        LC_UNROLL for (int i = 0; i < MR; i++) {                                                         \
            xp[i] = x + pos[i];                                                                          \
            LC_UNROLL for (int v = 0; v < NV; v++)                                                       \
                acc[i][v] = add ? LOAD(c + row[i] * ldc + v * W) : ZERO();                               \
        }                                                                                                \
        for (int64_t p = 0; p < kc; p++, a += NV * W) {                                                  \
            int64_t o = offs[p];                                                                         \
            V b[NV];                                                                                     \
            LC_UNROLL for (int v = 0; v < NV; v++) b[v] = LOAD(a + v * W);                               \
            LC_UNROLL for (int i = 0; i < MR; i++) {                                                     \
                V xi = SET1(xp[i][o]);                                                                   \
                LC_UNROLL for (int v = 0; v < NV; v++) acc[i][v] = FMA(xi, b[v], acc[i][v]);             \
            }                                                                                            \
        }                                                                                                \
        LC_UNROLL for (int i = 0; i < MR; i++) LC_UNROLL for (int v = 0; v < NV; v++)                    \
            STORE(c + row[i] * ldc + v * W, acc[i][v]);                                                  \
    }

#define LCONV_512(T, S, V, W, LOAD, STORE, SET1, FMA, ZERO)                                              \
    LCONV(lc_##S##_avx512_1, T512, T, V, 8, 1, W, LOAD, STORE, SET1, FMA, ZERO)                          \
    LCONV(lc_##S##_avx512_2, T512, T, V, 8, 2, W, LOAD, STORE, SET1, FMA, ZERO)                          \
    LCONV(lc_##S##_avx512_3, T512, T, V, 8, 3, W, LOAD, STORE, SET1, FMA, ZERO)                          \
    LCONV(lc_##S##_avx512_4, T512, T, V, 6, 4, W, LOAD, STORE, SET1, FMA, ZERO)
#define LCONV_256(T, S, V, W, LOAD, STORE, SET1, FMA, ZERO)                                              \
    LCONV(lc_##S##_avx2_1, T256, T, V, 8, 1, W, LOAD, STORE, SET1, FMA, ZERO)                            \
    LCONV(lc_##S##_avx2_2, T256, T, V, 6, 2, W, LOAD, STORE, SET1, FMA, ZERO)                            \
    LCONV(lc_##S##_avx2_3, T256, T, V, 4, 3, W, LOAD, STORE, SET1, FMA, ZERO)

/* AVX-512 (32 registers): 8 x 1, 8 x 2, 8 x 3, 6 x 4 accumulators; AVX2 (16): 8 x 1, 6 x 2, 4 x 3;
** at most 8 positions, whose addresses with the tap's offset, the weights' and the loop's fill the
** general registers. */
LCONV_512(float, f32, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_setzero_ps)
LCONV_512(double, f64, __m512d, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_setzero_pd)
LCONV_256(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_setzero_ps)
LCONV_256(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_setzero_pd)

static const ad__lconv_kernel l_f32_avx512 = {"avx512", 16, 4, {8, 8, 8, 6},
                                              {lc_f32_avx512_1, lc_f32_avx512_2, lc_f32_avx512_3, lc_f32_avx512_4},
                                              {0}, tr_f32_avx2, tr_f64_avx2};
static const ad__lconv_kernel l_f64_avx512 = {"avx512", 8, 4, {8, 8, 8, 6}, {0},
                                              {lc_f64_avx512_1, lc_f64_avx512_2, lc_f64_avx512_3, lc_f64_avx512_4},
                                              tr_f32_avx2, tr_f64_avx2};
static const ad__lconv_kernel l_f32_avx2 = {"avx2", 8, 3, {8, 6, 4, 0}, {lc_f32_avx2_1, lc_f32_avx2_2, lc_f32_avx2_3},
                                            {0}, tr_f32_avx2, tr_f64_avx2};
static const ad__lconv_kernel l_f64_avx2 = {"avx2", 4, 3, {8, 6, 4, 0}, {0},
                                            {lc_f64_avx2_1, lc_f64_avx2_2, lc_f64_avx2_3}, tr_f32_avx2, tr_f64_avx2};

/* 2x2 max pooling's windows, 16 at a time: the row pair's even and odd columns split with two
** permutes, then the scalar loop's comparisons as masks (GCC left that loop scalar: perf put
** maxpool2_f32 at 31% of bench_cnn's samples). */
T512 static void win2_avx512(const float *r0, const float *r1, int64_t n, float *bv, int8_t *bk)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t i = 0; i < n; i += 16) {
        /* a short last group (a 14-wide map's 7 windows) with masked loads and stores: the lanes
        ** past the row read nothing and are never stored */
        int m = n - i < 16 ? (int)(n - i) : 16;
        __mmask16 lo = m >= 8 ? 0xffff : (__mmask16)((1u << (2 * m)) - 1);
        __mmask16 hi = m >= 16 ? 0xffff : m > 8 ? (__mmask16)((1u << (2 * m - 16)) - 1) : 0;
        __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * i), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * i + 16);
        __m512 c0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * i), c1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * i + 16);
        __m512 x[4] = {_mm512_permutex2var_ps(a0, ie, a1), _mm512_permutex2var_ps(a0, io, a1),
                       _mm512_permutex2var_ps(c0, ie, c1), _mm512_permutex2var_ps(c0, io, c1)};
        __m512 b = x[0];
        __m512i k = _mm512_setzero_si512();
        for (int e = 1; e < 4; e++) {
            __mmask16 t = _mm512_cmp_ps_mask(x[e], b, _CMP_GT_OQ) |
                          (_mm512_cmp_ps_mask(x[e], x[e], _CMP_UNORD_Q) & _mm512_cmp_ps_mask(b, b, _CMP_ORD_Q));
            b = _mm512_mask_blend_ps(t, b, x[e]);
            k = _mm512_mask_blend_epi32(t, k, _mm512_set1_epi32(e));
        }
        _mm512_mask_storeu_ps(bv + i, (__mmask16)((1u << m) - 1), b);
        int8_t kb[16];
        _mm_storeu_si128((__m128i *)(void *)kb, _mm512_cvtepi32_epi8(k));
        memcpy(bk + i, kb, (size_t)m);
    }
}

bool ad__maxpool2_win_f32(const float *r0, const float *r1, int64_t n, float *bv, int8_t *bk)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return false;
    win2_avx512(r0, r1, n, bv, bk);
    return true;
}

const ad__wgrad_kernel *ad__wgrad_select(bool f64)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return f64 ? &w_f64_avx512 : &w_f32_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return f64 ? &w_f64_avx2 : &w_f32_avx2;
    return NULL;
}

const ad__lconv_kernel *ad__lconv_select(bool f64)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return f64 ? &l_f64_avx512 : &l_f32_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return f64 ? &l_f64_avx2 : &l_f32_avx2;
    return NULL;
}

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

const ad__lconv_kernel *ad__lconv_select(bool f64)
{
    (void)f64;
    return NULL;
}

const ad__wgrad_kernel *ad__wgrad_select(bool f64)
{
    (void)f64;
    return NULL;
}

bool ad__maxpool2_win_f32(const float *r0, const float *r1, int64_t n, float *bv, int8_t *bk)
{
    (void)r0, (void)r1, (void)n, (void)bv, (void)bk;
    return false;
}

#endif

/* gemm_kernels.c: register-tiled GEMM micro-kernels (AVX-512, AVX2+FMA, portable C) and the CPU dispatch. */
#include "gemm.h"

/*
** Each kernel keeps an MR x NR tile of C in registers for the whole kc loop: per step p it loads
** one row of the packed B~ panel (NR values, NR/W vectors of width W), broadcasts the MR values of
** the packed A~ column one at a time, and does MR * NR/W fused multiply-adds. The tile is as large
** as the register file allows, since the ratio of FMAs to loads grows with it:
**   AVX-512 (32 zmm): F32 12x32, F64 12x16 -> 24 accumulators + 2 B vectors + 1 broadcast.
**   AVX2    (16 ymm): F32  6x16, F64  6x8  -> 12 accumulators + 2 B vectors + 1 broadcast.
** 24 (or 12) independent accumulators cover the FMA latency (4 cycles) times the two FMA pipes.
** The portable kernel is plain C over a small tile that compilers vectorize for the base ISA.
*/

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AD_GEMM_X86 1
#include <immintrin.h>
#endif

#define UNROLL _Pragma("GCC unroll 32")

/* gemm.c computes edge tiles into a stack buffer of AD__GEMM_MAX_TILE elements */
_Static_assert(12 * 32 <= AD__GEMM_MAX_TILE && 6 * 16 <= AD__GEMM_MAX_TILE && 4 * 8 <= AD__GEMM_MAX_TILE,
               "a kernel tile is larger than AD__GEMM_MAX_TILE");

/* ---- portable C: 4 x 8 (F32) and 4 x 4 (F64) ---- */

#define GENERIC_UKR(NAME, T, MR, NR)                                                                     \
    static void NAME(int64_t kc, const T *a, const T *b, T *c, int64_t ldc, T alpha, T beta)           \
    {                                                                                                    \
        T acc[MR][NR] = {{0}};                                                                           \
        for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {                                             \
            UNROLL for (int i = 0; i < MR; i++) {                                                        \
                UNROLL for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];                            \
            }                                                                                            \
        }                                                                                                \
        for (int i = 0; i < MR; i++)                                                                     \
            for (int j = 0; j < NR; j++) {                                                               \
                T v = alpha * acc[i][j];                                                                 \
                c[i * ldc + j] = beta == 0 ? v : beta * c[i * ldc + j] + v;                              \
            }                                                                                            \
    }

/* Skinny products: dot rows with x (in order along p), or accumulate scaled rows of b (along j). */
#define GENERIC_SKINNY(DOT, AXPY, T)                                                                     \
    static void DOT(int64_t m, int64_t k, T alpha, const T *a, int64_t lda, const T *x, T beta, T *y,    \
                    int64_t incy)                                                                        \
    {                                                                                                    \
        for (int64_t i = 0; i < m; i++) {                                                                \
            T s = 0;                                                                                     \
            for (int64_t p = 0; p < k; p++) s += a[i * lda + p] * x[p];                                  \
            y[i * incy] = beta == 0 ? alpha * s : alpha * s + beta * y[i * incy];                        \
        }                                                                                                \
    }                                                                                                    \
    static void AXPY(int64_t n, int64_t k, T alpha, const T *x, int64_t incx, const T *b, int64_t ldb,   \
                     T beta, T *y)                                                                       \
    {                                                                                                    \
        for (int64_t j = 0; j < n; j++) y[j] = beta == 0 ? 0 : beta * y[j];                              \
        for (int64_t p = 0; p < k; p++) {                                                                \
            T xp = alpha * x[p * incx];                                                                  \
            for (int64_t j = 0; j < n; j++) y[j] += xp * b[p * ldb + j];                                 \
        }                                                                                                \
    }

GENERIC_UKR(ukr_f32_generic, float, 4, 8)
GENERIC_UKR(ukr_f64_generic, double, 4, 4)
GENERIC_SKINNY(dot_f32_generic, axpy_f32_generic, float)
GENERIC_SKINNY(dot_f64_generic, axpy_f64_generic, double)

static const ad__gemm_kernel k_f32_generic = {"generic",       4,    8,    128, 256, 2048, ukr_f32_generic, NULL,
                                              dot_f32_generic, NULL, axpy_f32_generic, NULL};
static const ad__gemm_kernel k_f64_generic = {"generic", 4,    4, 128, 128, 2048, NULL, ukr_f64_generic, NULL,
                                              dot_f64_generic, NULL, axpy_f64_generic};

#ifdef AD_GEMM_X86

/*
** The SIMD kernels share one body, written over a vector type V of W lanes with its load, store,
** broadcast, FMA and multiply. acc[i][j] holds C[i][j*W .. j*W+W-1]; the loops are fully
** unrolled so every accumulator lives in a register.
*/
#define SIMD_UKR(NAME, TARGET, T, V, MR, NV, W, LOAD, STORE, SET1, FMA, MUL, ZERO)                       \
    TARGET static void NAME(int64_t kc, const T *a, const T *b, T *c, int64_t ldc, T alpha, T beta)     \
    {                                                                                                    \
        V acc[MR][NV];                                                                                   \
        UNROLL for (int i = 0; i < MR; i++) UNROLL for (int j = 0; j < NV; j++) acc[i][j] = ZERO();      \
        for (int64_t p = 0; p < kc; p++, a += MR, b += NV * W) {                                         \
            V bv[NV];                                                                                    \
            UNROLL for (int j = 0; j < NV; j++) bv[j] = LOAD(b + j * W);                                 \
            UNROLL for (int i = 0; i < MR; i++) {                                                        \
                V ai = SET1(a[i]);                                                                       \
                UNROLL for (int j = 0; j < NV; j++) acc[i][j] = FMA(ai, bv[j], acc[i][j]);               \
            }                                                                                            \
        }                                                                                                \
        V va = SET1(alpha), vb = SET1(beta);                                                             \
        UNROLL for (int i = 0; i < MR; i++) {                                                            \
            UNROLL for (int j = 0; j < NV; j++) {                                                        \
                T *cp = c + i * ldc + j * W;                                                             \
                V v = MUL(va, acc[i][j]);                                                                \
                if (beta != 0) v = FMA(vb, LOAD(cp), v);                                                 \
                STORE(cp, v);                                                                            \
            }                                                                                            \
        }                                                                                                \
    }

/*
** Skinny products with the same vector type. dot: four rows at a time, each with its own vector
** accumulator along p, summed across lanes at the end (lane order fixed, so results are
** reproducible); p past the last full vector is done in scalar. axpy: the row y[j .. j+4W-1]
** stays in four accumulators over all of p; the last columns are done in scalar.
*/
#define SIMD_SKINNY(DOT, AXPY, TARGET, T, V, W, LOAD, STORE, SET1, FMA, MUL, ZERO)                       \
    TARGET static T hsum_##DOT(V v)                                                                      \
    {                                                                                                    \
        T lanes[W], s = 0;                                                                               \
        STORE(lanes, v);                                                                                 \
        for (int l = 0; l < W; l++) s += lanes[l];                                                       \
        return s;                                                                                        \
    }                                                                                                    \
    TARGET static void DOT(int64_t m, int64_t k, T alpha, const T *a, int64_t lda, const T *x, T beta,   \
                           T *y, int64_t incy)                                                           \
    {                                                                                                    \
        int64_t kv = k / W * W, i = 0;                                                                   \
        for (; i + 4 <= m; i += 4) {                                                                     \
            const T *r0 = a + i * lda, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;                   \
            V s0 = ZERO(), s1 = ZERO(), s2 = ZERO(), s3 = ZERO();                                        \
            for (int64_t p = 0; p < kv; p += W) {                                                        \
                V xv = LOAD(x + p);                                                                      \
                s0 = FMA(LOAD(r0 + p), xv, s0);                                                          \
                s1 = FMA(LOAD(r1 + p), xv, s1);                                                          \
                s2 = FMA(LOAD(r2 + p), xv, s2);                                                          \
                s3 = FMA(LOAD(r3 + p), xv, s3);                                                          \
            }                                                                                            \
            T t[4] = {hsum_##DOT(s0), hsum_##DOT(s1), hsum_##DOT(s2), hsum_##DOT(s3)};                   \
            for (int64_t p = kv; p < k; p++) {                                                           \
                t[0] += r0[p] * x[p], t[1] += r1[p] * x[p], t[2] += r2[p] * x[p], t[3] += r3[p] * x[p];  \
            }                                                                                            \
            for (int r = 0; r < 4; r++) {                                                                \
                T *yi = y + (i + r) * incy;                                                              \
                *yi = beta == 0 ? alpha * t[r] : alpha * t[r] + beta * *yi;                              \
            }                                                                                            \
        }                                                                                                \
        for (; i < m; i++) {                                                                             \
            const T *r0 = a + i * lda;                                                                   \
            V s0 = ZERO();                                                                               \
            for (int64_t p = 0; p < kv; p += W) s0 = FMA(LOAD(r0 + p), LOAD(x + p), s0);                 \
            T t = hsum_##DOT(s0);                                                                        \
            for (int64_t p = kv; p < k; p++) t += r0[p] * x[p];                                          \
            T *yi = y + i * incy;                                                                        \
            *yi = beta == 0 ? alpha * t : alpha * t + beta * *yi;                                        \
        }                                                                                                \
    }                                                                                                    \
    TARGET static void AXPY(int64_t n, int64_t k, T alpha, const T *x, int64_t incx, const T *b,         \
                            int64_t ldb, T beta, T *y)                                                   \
    {                                                                                                    \
        V va = SET1(alpha), vb = SET1(beta);                                                             \
        int64_t j = 0;                                                                                   \
        for (; j + 4 * W <= n; j += 4 * W) {                                                             \
            V s0 = ZERO(), s1 = ZERO(), s2 = ZERO(), s3 = ZERO();                                        \
            for (int64_t p = 0; p < k; p++) {                                                            \
                const T *bp = b + p * ldb + j;                                                           \
                V xv = SET1(x[p * incx]);                                                                \
                s0 = FMA(xv, LOAD(bp), s0);                                                              \
                s1 = FMA(xv, LOAD(bp + W), s1);                                                          \
                s2 = FMA(xv, LOAD(bp + 2 * W), s2);                                                      \
                s3 = FMA(xv, LOAD(bp + 3 * W), s3);                                                      \
            }                                                                                            \
            V s[4] = {s0, s1, s2, s3};                                                                   \
            for (int q = 0; q < 4; q++) {                                                                \
                V v = MUL(va, s[q]);                                                                     \
                if (beta != 0) v = FMA(vb, LOAD(y + j + q * W), v);                                      \
                STORE(y + j + q * W, v);                                                                 \
            }                                                                                            \
        }                                                                                                \
        for (; j < n; j++) {                                                                             \
            T t = 0;                                                                                     \
            for (int64_t p = 0; p < k; p++) t += x[p * incx] * b[p * ldb + j];                           \
            y[j] = beta == 0 ? alpha * t : alpha * t + beta * y[j];                                      \
        }                                                                                                \
    }

#define T_AVX512 __attribute__((target("avx512f,fma")))
#define T_AVX2 __attribute__((target("avx2,fma")))

SIMD_UKR(ukr_f32_avx512, T_AVX512, float, __m512, 12, 2, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
         _mm512_fmadd_ps, _mm512_mul_ps, _mm512_setzero_ps)
SIMD_UKR(ukr_f64_avx512, T_AVX512, double, __m512d, 12, 2, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd,
         _mm512_fmadd_pd, _mm512_mul_pd, _mm512_setzero_pd)
SIMD_UKR(ukr_f32_avx2, T_AVX2, float, __m256, 6, 2, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
         _mm256_fmadd_ps, _mm256_mul_ps, _mm256_setzero_ps)
SIMD_UKR(ukr_f64_avx2, T_AVX2, double, __m256d, 6, 2, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd,
         _mm256_fmadd_pd, _mm256_mul_pd, _mm256_setzero_pd)

SIMD_SKINNY(dot_f32_avx512, axpy_f32_avx512, T_AVX512, float, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps,
            _mm512_set1_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_setzero_ps)
SIMD_SKINNY(dot_f64_avx512, axpy_f64_avx512, T_AVX512, double, __m512d, 8, _mm512_loadu_pd, _mm512_storeu_pd,
            _mm512_set1_pd, _mm512_fmadd_pd, _mm512_mul_pd, _mm512_setzero_pd)
SIMD_SKINNY(dot_f32_avx2, axpy_f32_avx2, T_AVX2, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,
            _mm256_set1_ps, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_setzero_ps)
SIMD_SKINNY(dot_f64_avx2, axpy_f64_avx2, T_AVX2, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd,
            _mm256_set1_pd, _mm256_fmadd_pd, _mm256_mul_pd, _mm256_setzero_pd)

static const ad__gemm_kernel k_f32_avx512 = {"avx512",       12,   32, 144, 256, 4096, ukr_f32_avx512, NULL,
                                             dot_f32_avx512, NULL, axpy_f32_avx512, NULL};
static const ad__gemm_kernel k_f64_avx512 = {"avx512", 12,   16, 144, 256, 2048, NULL, ukr_f64_avx512, NULL,
                                             dot_f64_avx512, NULL, axpy_f64_avx512};
static const ad__gemm_kernel k_f32_avx2 = {"avx2",       6,    16, 144, 256, 4096, ukr_f32_avx2, NULL,
                                           dot_f32_avx2, NULL, axpy_f32_avx2, NULL};
static const ad__gemm_kernel k_f64_avx2 = {"avx2", 6,    8, 96, 256, 2048, NULL, ukr_f64_avx2, NULL,
                                           dot_f64_avx2, NULL, axpy_f64_avx2};

/* The CPU's level, from the features libgcc reads once at start (no state of ours). */
static int cpu_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return AD__GEMM_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return AD__GEMM_AVX2;
    return AD__GEMM_GENERIC;
}

const ad__gemm_kernel *ad__gemm_kernel_f32(int level)
{
    int l = cpu_level();
    if (level < l) l = level;
    return l >= AD__GEMM_AVX512 ? &k_f32_avx512 : l == AD__GEMM_AVX2 ? &k_f32_avx2 : &k_f32_generic;
}

const ad__gemm_kernel *ad__gemm_kernel_f64(int level)
{
    int l = cpu_level();
    if (level < l) l = level;
    return l >= AD__GEMM_AVX512 ? &k_f64_avx512 : l == AD__GEMM_AVX2 ? &k_f64_avx2 : &k_f64_generic;
}

#else

const ad__gemm_kernel *ad__gemm_kernel_f32(int level)
{
    (void)level;
    return &k_f32_generic;
}

const ad__gemm_kernel *ad__gemm_kernel_f64(int level)
{
    (void)level;
    return &k_f64_generic;
}

#endif

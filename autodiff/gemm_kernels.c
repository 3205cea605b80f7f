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

GENERIC_UKR(ukr_f32_generic, float, 4, 8)
GENERIC_UKR(ukr_f64_generic, double, 4, 4)

static const ad__gemm_kernel k_f32_generic = {"generic", 4, 8, 128, 256, 2048, ukr_f32_generic, NULL};
static const ad__gemm_kernel k_f64_generic = {"generic", 4, 4, 128, 128, 2048, NULL, ukr_f64_generic};

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

static const ad__gemm_kernel k_f32_avx512 = {"avx512", 12, 32, 144, 256, 4096, ukr_f32_avx512, NULL};
static const ad__gemm_kernel k_f64_avx512 = {"avx512", 12, 16, 144, 256, 2048, NULL, ukr_f64_avx512};
static const ad__gemm_kernel k_f32_avx2 = {"avx2", 6, 16, 144, 256, 4096, ukr_f32_avx2, NULL};
static const ad__gemm_kernel k_f64_avx2 = {"avx2", 6, 8, 96, 256, 2048, NULL, ukr_f64_avx2};

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

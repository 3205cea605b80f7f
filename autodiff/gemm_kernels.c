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

#define K(name) name##_f32_generic
#define T float
#define MR 4
#define NR 8
#include "gemm_generic.inc"

#define K(name) name##_f64_generic
#define T double
#define MR 4
#define NR 4
#include "gemm_generic.inc"

static const ad__gemm_kernel k_f32_generic = {"generic",       4,    8,    128, 256, 2048, ukr_f32_generic, NULL,
                                              dot_f32_generic, NULL, axpy_f32_generic, NULL};
static const ad__gemm_kernel k_f64_generic = {"generic", 4,    4, 128, 128, 2048, NULL, ukr_f64_generic, NULL,
                                              dot_f64_generic, NULL, axpy_f64_generic};

#ifdef AD_GEMM_X86

/* The SIMD kernels (gemm_simd.inc) over each ISA's vector types: the tile is MR rows of two vectors. */
#define T_AVX512 __attribute__((target("avx512f,fma")))
#define T_AVX2 __attribute__((target("avx2,fma")))

/* The lane sums of four accumulators at once, for the skinny dot (gemm_simd.inc): pairs of lanes
** are added within each 128-bit block by unpacking the vectors into each other, then the blocks are
** added, so the four sums share every shuffle and add. A fixed tree, the same for every call. */
T_AVX512 static void hsum4_f32_avx512(__m512 a, __m512 b, __m512 c, __m512 d, float out[4])
{
    /* in each 128-bit block: ab = {a0+a2, b0+b2, a1+a3, b1+b3}, cd likewise, then {a, b, c, d} */
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    __m512d s = _mm512_castps_pd(_mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                               _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd))));
    __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_castpd512_pd256(s)), _mm256_castpd_ps(_mm512_extractf64x4_pd(s, 1)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}
T_AVX512 static void hsum4_f64_avx512(__m512d a, __m512d b, __m512d c, __m512d d, double out[4])
{
    /* in each 128-bit block: ab = {a0+a1, b0+b1}, cd likewise; then the blocks, pairwise twice */
    __m512d ab = _mm512_add_pd(_mm512_unpacklo_pd(a, b), _mm512_unpackhi_pd(a, b));
    __m512d cd = _mm512_add_pd(_mm512_unpacklo_pd(c, d), _mm512_unpackhi_pd(c, d));
    __m512d s = _mm512_add_pd(_mm512_shuffle_f64x2(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f64x2(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512d r = _mm512_add_pd(_mm512_shuffle_f64x2(s, s, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f64x2(s, s, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm256_storeu_pd(out, _mm512_castpd512_pd256(r));
}
T_AVX2 static void hsum4_f32_avx2(__m256 a, __m256 b, __m256 c, __m256 d, float out[4])
{
    __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256d abd = _mm256_castps_pd(ab), cdd = _mm256_castps_pd(cd);
    __m256 s = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(abd, cdd)), _mm256_castpd_ps(_mm256_unpackhi_pd(abd, cdd)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}
T_AVX2 static void hsum4_f64_avx2(__m256d a, __m256d b, __m256d c, __m256d d, double out[4])
{
    __m256d ab = _mm256_add_pd(_mm256_unpacklo_pd(a, b), _mm256_unpackhi_pd(a, b));
    __m256d cd = _mm256_add_pd(_mm256_unpacklo_pd(c, d), _mm256_unpackhi_pd(c, d));
    _mm256_storeu_pd(out, _mm256_add_pd(_mm256_permute2f128_pd(ab, cd, 0x20), _mm256_permute2f128_pd(ab, cd, 0x31)));
}

#define K(name) name##_f32_avx512
#define TARGET T_AVX512
#define T float
#define V __m512
#define MR 12
#define VOP(op) _mm512_##op##_ps
#include "gemm_simd.inc"

#define K(name) name##_f64_avx512
#define TARGET T_AVX512
#define T double
#define V __m512d
#define MR 12
#define VOP(op) _mm512_##op##_pd
#include "gemm_simd.inc"

#define K(name) name##_f32_avx2
#define TARGET T_AVX2
#define T float
#define V __m256
#define MR 6
#define VOP(op) _mm256_##op##_ps
#include "gemm_simd.inc"

#define K(name) name##_f64_avx2
#define TARGET T_AVX2
#define T double
#define V __m256d
#define MR 6
#define VOP(op) _mm256_##op##_pd
#include "gemm_simd.inc"

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

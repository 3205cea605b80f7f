/* gemm.h: the matrix-product micro-kernels and their blocking parameters, shared by gemm.c and gemm_kernels.c. */
#ifndef AUTODIFF_GEMM_H
#define AUTODIFF_GEMM_H

#include "kernels.h"

/* The largest register tile any kernel uses, in elements: sizes the edge-tile stack buffer. */
#define AD__GEMM_MAX_TILE (16 * 32)

/* A micro-kernel computes one MR x NR tile of C from packed panels:
**   C[i][j] = alpha * sum_p A~[p][i] B~[p][j] + beta * C[i][j]   (i < MR, j < NR)
** A~ holds kc steps of MR values (a[p * MR + i]), B~ kc steps of NR values (b[p * NR + j]).
** With beta == 0, C is only written (never read), as in BLAS. */
typedef void (*ad__ukr_f32)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                            float beta);
typedef void (*ad__ukr_f64)(int64_t kc, const double *a, const double *b, double *c, int64_t ldc, double alpha,
                            double beta);

/* Skinny products (one side a vector), which packing would only slow down:
**   dot:  y[i * incy] = alpha * sum_p a[i * lda + p] x[p] + beta * y[i * incy]   (i < m, p < k)
**   axpy: y[j] = alpha * sum_p x[p * incx] b[p * ldb + j] + beta * y[j]          (j < n, p < k)
** As for the micro-kernels, beta == 0 never reads y. */
typedef void (*ad__dot_f32)(int64_t m, int64_t k, float alpha, const float *a, int64_t lda, const float *x,
                            float beta, float *y, int64_t incy);
typedef void (*ad__dot_f64)(int64_t m, int64_t k, double alpha, const double *a, int64_t lda, const double *x,
                            double beta, double *y, int64_t incy);
typedef void (*ad__axpy_f32)(int64_t n, int64_t k, float alpha, const float *x, int64_t incx, const float *b,
                             int64_t ldb, float beta, float *y);
typedef void (*ad__axpy_f64)(int64_t n, int64_t k, double alpha, const double *x, int64_t incx, const double *b,
                             int64_t ldb, double beta, double *y);

/* A kernel with its tile and the cache blocking chosen for it (see gemm.c for why these sizes). */
typedef struct ad__gemm_kernel {
    const char *name; /* "avx512", "avx2", "generic" */
    int mr, nr;       /* register tile */
    int mc, kc, nc;   /* cache blocks: A~ is mc x kc (L2), B~ is kc x nc (L3), a B~ micro-panel kc x nr (L1) */
    ad__ukr_f32 f32;  /* exactly one of f32/f64 is set, and likewise below */
    ad__ukr_f64 f64;
    ad__dot_f32 dot_f32;
    ad__dot_f64 dot_f64;
    ad__axpy_f32 axpy_f32;
    ad__axpy_f64 axpy_f64;
} ad__gemm_kernel;

/* The best kernel this CPU runs, capped at `level` (one of the levels below). The choice depends on the
** CPU's features alone, read each time (no cached state); tests cap the level to cover every path. */
AD_INTERNAL const ad__gemm_kernel *ad__gemm_kernel_f32(int level);
AD_INTERNAL const ad__gemm_kernel *ad__gemm_kernel_f64(int level);

/* Kernel levels: the best the CPU supports, or a cap on it. */
enum { AD__GEMM_GENERIC = 0, AD__GEMM_AVX2 = 1, AD__GEMM_AVX512 = 2, AD__GEMM_BEST = 3 };

/* Which implementation ad__gemm_* uses; a process-wide setting for tests and benchmarks, set by an
** explicit call before products run (like ad_set_num_threads), AD__GEMM_AUTO by default. */
enum {
    AD__GEMM_AUTO = 0,    /* small: plain loop; medium: packed kernel; large: OpenBLAS when built with it */
    AD__GEMM_BUILTIN = 1, /* as AUTO but never OpenBLAS */
    AD__GEMM_PACKED = 2,  /* always the packed kernel, threaded at any size when threads > 1 (tests) */
    AD__GEMM_BLAS = 3     /* OpenBLAS for every non-trivial product (BUILTIN when built without it) */
};
/* Sets the backend and caps the kernel level (AD__GEMM_BEST: no cap). */
AD_INTERNAL void ad__gemm_set_backend(int backend, int level);
/* The level named "avx512", "avx2" or "generic" (the kernels' names), or -1 (benchmarks' --level). */
AD_INTERNAL int ad__gemm_level_named(const char *name);
/* The name of the kernel the built-in path would use now for F32 (or F64). */
AD_INTERNAL const char *ad__gemm_kernel_name(bool f64);
/* true when built with OpenBLAS. */
AD_INTERNAL bool ad__gemm_has_blas(void);

#endif

/* gemm.c: the matrix product C = alpha op(A) op(B) + beta C (row-major): packing, cache blocking, threads, BLAS. */
#include "gemm.h"
#include "threads.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#ifdef AD_HAVE_BLAS
#include <cblas.h>
#endif

/*
** The blocked algorithm (Goto and van de Geijn, "Anatomy of high-performance matrix
** multiplication", 2008; the loop order of BLIS):
**
**   for jc in N by NC:              B~ = op(B)[pc:pc+KC, jc:jc+NC] packed    (L3: KC x NC)
**     for pc in K by KC:
**       pack B~ into NR-wide micro-panels
**       for ic in M by MC:          A~ = op(A)[ic:ic+MC, pc:pc+KC] packed    (L2: MC x KC)
**         pack A~ into MR-tall micro-panels
**         for jr in NC by NR:       one B~ micro-panel, KC x NR, stays in L1
**           for ir in MC by MR:     A~ micro-panels stream from L2
**             micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A~_ir B~_jr
**
** Why these sizes (per kernel in gemm_kernels.c; for AVX-512 F32: MR x NR = 12 x 32, KC = 256,
** MC = 144, NC = 4096): the tile MR x NR is the largest the register file holds (see
** gemm_kernels.c). KC is the length of each micro-kernel call: long enough to amortize loading
** and storing the C tile (2 MR NR KC flops per MR NR stores), short enough that the B~
** micro-panel (KC NR elements, 32 KiB at F32) sits in the 48 KiB L1 next to the A~ micro-panel
** being streamed. MC x KC (144 KiB) fills a fraction of the 1 MiB L2 so A~ stays there while it
** is reused for every NR columns of B~. NC x KC (4 MiB at F32) is sized for the shared L3; for
** the products this engine meets it holds all of N. Packing also turns the four transpose cases
** into one: the kernels only ever read packed, contiguous panels, and edge panels are padded
** with zeros so the kernels always run on full tiles (partial tiles of C go through a buffer).
**
** Threads (ad__parallel's persistent pool, threads.c) split the rows or the columns of C into
** fixed, aligned ranges: whichever cuts the largest of A, B and C (split_cols), so that in a
** training step each thread keeps to the same part of each weight in the forward product, its
** gradient and the optimizer's update (nn/optim.c splits parameters into the same contiguous
** halves), instead of moving it between cores' caches every step. Each element of C is computed
** by one thread with the same blocking as with one thread, so the packed kernel's results are
** identical for any thread count; a split product on OpenBLAS is one call per range, so its
** results depend only on the thread count.
**
** Which path a product takes (thresholds measured on a 2-core Zen 5 with OpenBLAS 0.3.21, with
** OPENBLAS_CORETYPE unset; forced to Haswell, OpenBLAS is slower than the packed kernel from
** 64 x 64 x 64 up):
**   m n k < SMALL_MNK: a plain loop (packing would cost more than the product);
**   m == 1 or n == 1:  the skinny (matrix-vector) kernels, which read A and B in place; they
**                      match OpenBLAS at 256 and are 2-5x faster at 1024, where it runs a GEMM;
**   with OpenBLAS:     cblas_?gemm for everything else, when its kernels are as wide as ours
**                      (blas_fast: not on CPUs newer than its release, where it falls back to
**                      SSE3 unless OPENBLAS_CORETYPE is set): on that machine it is faster than the
**                      packed kernel from 8 x 8 x 8 up (its small-matrix kernels need no packing).
**                      OpenBLAS always runs on one thread: from THREAD_MNK up, with more threads
**                      set, the product is split into one cblas call per thread on the pool.
**                      OpenBLAS's own threads cost more than they save on a small network's
**                      products (bench_mlp at 2 threads: 1.07 s per epoch against 0.68 s at 1),
**                      while the split halves run 1.5-1.7x faster than one call (64 x 256 x 784,
**                      256 x 784 x 64 and 64 x 128 x 256, their times measured alone);
**   otherwise:         the packed kernel, on ad_get_num_threads() threads from THREAD_MNK up
**                      (handing a share to a pool worker costs a few microseconds, against tens
**                      for a product of this size). Each thread packs its own B~: for 2 threads
**                      at 1024^3 the total work grows by about 4%, at 256^3 by far more.
**
** Packing buffers: when one thread's panels fit in STACK_BYTES (products up to 64 x 64 x 64 at
** F32, 48 x 48 x 48 at F64, or larger ones with a short side) they live on that thread's stack,
** so small products, like those of a training step on a small network, never touch the heap
** (a warmed-up tape step allocates nothing). Larger products take one block per call for all
** threads' panels: from the caller's scratch (ad__gemm_*_ws; the matmul ops pass their tape's
** arena, rewound after the call, so a warmed-up step still allocates nothing: bench_mlp's
** products had taken 5 ad__malloc blocks per step) or from ad__malloc. The packed path thus
** needs STACK_BYTES of stack on each thread.
*/

#define SMALL_MNK ((int64_t)512)      /* m n k below this: the plain loop */
#define BLAS_MNK ((int64_t)512)       /* m n k from this on: OpenBLAS, when built with it */
#define THREAD_MNK ((int64_t)1 << 20) /* m n k from this on (64 x 128 x 128): ad_get_num_threads() threads */
#define STACK_BYTES ((size_t)64 << 10) /* packed panels up to this size live on the stack */

/* ---- the process-wide backend choice (set by tests and benchmarks) ---- */

static atomic_int g_backend = AD__GEMM_AUTO;
static atomic_int g_level = AD__GEMM_BEST;

void ad__gemm_set_backend(int backend, int level)
{
    atomic_store_explicit(&g_backend, backend, memory_order_relaxed);
    atomic_store_explicit(&g_level, level, memory_order_relaxed);
}

int ad__gemm_level_named(const char *name)
{
    static const char *const names[] = {[AD__GEMM_GENERIC] = "generic", [AD__GEMM_AVX2] = "avx2",
                                        [AD__GEMM_AVX512] = "avx512"};
    for (int l = 0; name && l < (int)(sizeof names / sizeof names[0]); l++)
        if (!strcmp(name, names[l])) return l;
    return -1;
}

const char *ad__gemm_kernel_name(bool f64)
{
    int level = atomic_load_explicit(&g_level, memory_order_relaxed);
    return f64 ? ad__gemm_kernel_f64(level)->name : ad__gemm_kernel_f32(level)->name;
}

bool ad__gemm_has_blas(void)
{
#ifdef AD_HAVE_BLAS
    return true;
#else
    return false;
#endif
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Whether OpenBLAS runs kernels at least as wide as ours (the automatic path uses it only then).
** OpenBLAS picks its kernels by CPU model; a model newer than its release (OpenBLAS 0.3.21 on a
** 5th-generation Xeon) falls back to Prescott (SSE3), several times slower than the packed AVX-512
** kernel (bench_matmul, F32 n = 1024: 18.5 against 101 GFLOP/s), unless OPENBLAS_CORETYPE names a
** core. The core's name is read at each call (a pointer to OpenBLAS's static string: no state). */
static bool blas_fast(void)
{
#ifdef AD_HAVE_BLAS
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator"};
    const char *core = openblas_get_corename();
    const char *ours = ad__gemm_kernel_name(false);
    if (!core || !strcmp(ours, "generic")) return true;
    bool wide = !strcmp(ours, "avx512");
    const char *const *list = wide ? avx512 : avx2;
    size_t n = wide ? sizeof avx512 / sizeof avx512[0] : sizeof avx2 / sizeof avx2[0];
    for (size_t i = 0; i < n; i++)
        if (!strcmp(core, list[i])) return true;
    return false;
#else
    return false;
#endif
}

/* Packed buffers start on a cache line. */
static void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* Whether threads split C by columns (else by rows), in units of unit_m rows or unit_n columns.
** The side that cuts the largest of the three matrices (A and C by rows, B by columns; by rows
** on a tie) into parts: in a training step each weight is then cut the same way in the forward
** product (B) and in its gradient (C), and the optimizer cuts it likewise (contiguous halves), so
** each part of a weight stays in one core's cache. The other side when this one has fewer units
** than threads and the other more. */
static bool split_cols(int64_t m, int64_t n, int64_t k, int64_t unit_m, int64_t unit_n, int nth)
{
    double sa = (double)m * (double)k, sb = (double)k * (double)n, sc = (double)m * (double)n;
    int64_t um = (m + unit_m - 1) / unit_m, un = (n + unit_n - 1) / unit_n;
    bool cols = sb > sa && sb > sc;
    if (cols && un < nth && um > un) cols = false;
    if (!cols && um < nth && un > um) cols = true;
    return cols;
}

/* The plain loop, packing, the blocked and skinny products and the built-in entry point, written
** once over the element type T (suffix S) in gemm.inc: scale_f32 ... builtin_f32, then _f64. */
#define T float
#define S f32
#include "gemm.inc"
#undef T
#undef S
#define T double
#define S f64
#include "gemm.inc"
#undef T
#undef S

/* The path one product takes. */
typedef enum path { PATH_NONE, PATH_SMALL, PATH_SKINNY, PATH_PACKED, PATH_BLAS } path;

/* true when a product with m == 1 or n == 1 has its vector and output laid out as the skinny
** kernels read them (dense vectors; always so for the engine's contiguous tensors). */
static bool skinny_ok(bool ta, bool tb, int64_t m, int64_t n, int64_t lda, int64_t ldb, int64_t ldc)
{
    if (n == 1) return ta ? ldc == 1 : (tb || ldb == 1);
    if (m == 1) return !tb || !ta || lda == 1;
    return false;
}

/* Checks the arguments and picks the path and thread count: PATH_NONE when only C = beta C is
** left to do (an empty product, or alpha == 0, where A and B are not read, as in BLAS). */
static ad_status plan(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                      bool zero_alpha, path *pa, int *nth)
{
    *nth = 1;
    if (m < 0 || n < 0 || k < 0) return AD_ERR_ARG;
    if (lda < (ta ? m : k) || ldb < (tb ? k : n) || ldc < n) return AD_ERR_ARG;
    if (m == 0 || n == 0 || k == 0 || zero_alpha) {
        *pa = PATH_NONE;
        return AD_OK;
    }
    int64_t mn, mnk;
    if (!ad__mul_ok(m, n, &mn) || !ad__mul_ok(mn, k, &mnk)) mnk = INT64_MAX;
    int backend = atomic_load_explicit(&g_backend, memory_order_relaxed);
    bool blas_ok = ad__gemm_has_blas() && m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX &&
                   lda <= INT32_MAX && ldb <= INT32_MAX && ldc <= INT32_MAX;
    if (backend == AD__GEMM_BLAS && blas_ok)
        *pa = PATH_BLAS;
    else if (backend == AD__GEMM_PACKED)
        *pa = PATH_PACKED;
    else if (mnk < SMALL_MNK)
        *pa = PATH_SMALL;
    else if (skinny_ok(ta, tb, m, n, lda, ldb, ldc))
        *pa = PATH_SKINNY;
    else if (backend == AD__GEMM_AUTO && blas_ok && mnk >= BLAS_MNK && blas_fast())
        *pa = PATH_BLAS;
    else
        *pa = PATH_PACKED;
    int want = ad_get_num_threads();
    if ((*pa == PATH_PACKED && backend == AD__GEMM_PACKED) || ((*pa == PATH_PACKED || *pa == PATH_BLAS) && mnk >= THREAD_MNK))
        *nth = want > AD__MAX_THREADS ? AD__MAX_THREADS : want;
    return AD_OK;
}

#ifdef AD_HAVE_BLAS
#define SPLIT_ALIGN 16 /* split points fall on multiples of this many rows or columns */

/* One product split over ad__parallel: each share is a separate call of single-threaded
** OpenBLAS on a fixed block of C's rows (or columns), so each element of C is computed by one
** call whose shape depends only on the thread count. */
typedef struct blas_job {
    bool f64, ta, tb, split_n;
    int64_t m, n, k, lda, ldb, ldc;
    double alpha, beta; /* exact copies of the F32 values for an F32 product */
    const void *a, *b;
    void *c;
} blas_job;

static void run_blas_share(void *ctx, int tid, int nth)
{
    const blas_job *j = ctx;
    int64_t len = j->split_n ? j->n : j->m, units = (len + SPLIT_ALIGN - 1) / SPLIT_ALIGN;
    int64_t lo = min64(len, units * tid / nth * SPLIT_ALIGN), hi = min64(len, units * (tid + 1) / nth * SPLIT_ALIGN);
    if (lo >= hi) return;
    size_t es = j->f64 ? sizeof(double) : sizeof(float);
    const char *a = j->a, *b = j->b;
    char *c = j->c;
    int64_t m = j->m, n = j->n;
    if (j->split_n) {
        n = hi - lo;
        b += (size_t)(j->tb ? lo * j->ldb : lo) * es;
        c += (size_t)lo * es;
    } else {
        m = hi - lo;
        a += (size_t)(j->ta ? lo : lo * j->lda) * es;
        c += (size_t)(lo * j->ldc) * es;
    }
    enum CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans, tb = j->tb ? CblasTrans : CblasNoTrans;
    if (j->f64)
        cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)j->k, j->alpha, (const double *)(const void *)a,
                    (int)j->lda, (const double *)(const void *)b, (int)j->ldb, j->beta, (double *)(void *)c,
                    (int)j->ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)j->k, (float)j->alpha, (const float *)(const void *)a,
                    (int)j->lda, (const float *)(const void *)b, (int)j->ldb, (float)j->beta, (float *)(void *)c,
                    (int)j->ldc);
}

static void blas_split(bool f64, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void *a,
                       int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc, int nth)
{
    bool split_n = split_cols(m, n, k, SPLIT_ALIGN, SPLIT_ALIGN, nth);
    blas_job j = {f64, ta, tb, split_n, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    ad__parallel(nth, run_blas_share, &j);
}
#endif

/* OpenBLAS takes a buffer of its own for each thread that calls it (128 MiB + 4 KiB from malloc on
** x86-64 builds), outside ad_set_allocator, and when that allocation fails it retries for ever. So
** under an address-space limit (RLIMIT_AS) a product goes to OpenBLAS only when that much per thread
** can be had just now (a probe, not through the allocator: OpenBLAS does not use it either), and to
** the built-in kernel otherwise; without a limit, always. */
#define BLAS_BUFFER_PROBE ((size_t)160 << 20)
static inline bool blas_memory_ok(int nth)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return true;
    if ((size_t)nth > SIZE_MAX / BLAS_BUFFER_PROBE) return false;
    void *p = malloc((size_t)nth * BLAS_BUFFER_PROBE);
    free(p);
    return p != NULL;
}

/* The entry points, one per element type; BLAS is the cblas_?gemm of that type. OpenBLAS always
** runs on one thread: with more, the product is split over the engine's own pool instead. */
#ifdef AD_HAVE_BLAS
#define BLAS_CALL(T, BLASFN)                                                                             \
    do {                                                                                                 \
        if (nth > 1) {                                                                                   \
            blas_split(sizeof(T) == sizeof(double), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nth); \
            break;                                                                                       \
        }                                                                                                \
        if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);                                \
        BLASFN(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, \
               (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);                              \
    } while (0)
#else
#define BLAS_CALL(T, BLASFN) ((void)0)
#endif

#define DEFINE_ENTRY(T, S, BLASFN)                                                                       \
    ad_status ad__gemm_##S(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *a,       \
                           int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc)              \
    {                                                                                                    \
        return ad__gemm_##S##_ws(NULL, NULL, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);       \
    }                                                                                                    \
    ad_status ad__gemm_##S##_ws(ad__scratch_fn scratch, void *sctx, bool ta, bool tb, int64_t m, int64_t n, \
                                int64_t k, T alpha, const T *a, int64_t lda, const T *b, int64_t ldb, T beta, \
                                T *c, int64_t ldc)                                                       \
    {                                                                                                    \
        path pa;                                                                                         \
        int nth;                                                                                         \
        ad_status st = plan(ta, tb, m, n, k, lda, ldb, ldc, alpha == 0, &pa, &nth);                      \
        if (st != AD_OK) return st;                                                                      \
        switch (pa) {                                                                                    \
        case PATH_NONE: scale_##S(m, n, beta, c, ldc); return AD_OK;                                     \
        case PATH_SMALL: small_##S(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); return AD_OK;  \
        case PATH_BLAS:                                                                                  \
            if (!blas_memory_ok(nth)) break; /* the built-in kernel, below */                            \
            BLAS_CALL(T, BLASFN);                                                                        \
            return AD_OK;                                                                                \
        case PATH_SKINNY:                                                                                \
        case PATH_PACKED: break;                                                                         \
        }                                                                                                \
        const ad__gemm_kernel *kr = ad__gemm_kernel_##S(atomic_load_explicit(&g_level, memory_order_relaxed)); \
        if (pa == PATH_SKINNY) {                                                                         \
            skinny_##S(kr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                        \
            return AD_OK;                                                                                \
        }                                                                                                \
        return builtin_##S(kr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nth, scratch, sctx); \
    }

DEFINE_ENTRY(float, f32, cblas_sgemm)
DEFINE_ENTRY(double, f64, cblas_dgemm)

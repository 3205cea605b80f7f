/* test_gemm.c: the matrix-product kernels (plain loop, packed at every CPU level, OpenBLAS, threads) against a naive loop. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "gemm.h"
#include "test_util.h"

/* Shapes (m, n, k) with awkward sizes: 1, 7, 31, 64, 65, 129, 257. */
static const int64_t shapes[][3] = {
    {1, 1, 1},     {7, 31, 65},  {64, 64, 64},  {65, 129, 7},  {1, 257, 65},   {257, 1, 31},   {1, 7, 300},
    {300, 1, 7},
    {31, 7, 257},  {129, 65, 31}, {65, 257, 129}, {257, 129, 64}, {129, 257, 257},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))
/* Under valgrind (AD_TEST_QUICK) only the shapes with m n k below this run. */
#define QUICK_MNK 300000

static const double alphas[] = {1.0, 0.5, -1.5, 0.0};
static const double betas[] = {0.0, 1.0, 2.0, 0.0};

static uint64_t g_seed_state;
static double urand(void)
{
    g_seed_state ^= g_seed_state << 13, g_seed_state ^= g_seed_state >> 7, g_seed_state ^= g_seed_state << 17;
    return (double)(g_seed_state >> 11) / 9007199254740992.0 * 2 - 1;
}

/* A test problem held in double; F32 runs use rounded copies. */
typedef struct prob {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    double alpha, beta;
    double *a, *b, *c0, *ref, *bound;
} prob;

static void prob_init(prob *p, const int64_t *shp, bool ta, bool tb, double alpha, double beta, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->ta = ta, p->tb = tb, p->m = shp[0], p->n = shp[1], p->k = shp[2], p->alpha = alpha, p->beta = beta;
    int64_t ar = ta ? p->k : p->m, ac = ta ? p->m : p->k, br = tb ? p->n : p->k, bc = tb ? p->k : p->n;
    /* odd seeds pad every row (leading dimensions past the widths), even seeds keep rows dense */
    int64_t pad = (int64_t)(seed & 1);
    p->lda = ac + 3 * pad, p->ldb = bc + 5 * pad, p->ldc = p->n + 2 * pad;
    p->a = malloc(sizeof(double) * (size_t)(ar * p->lda));
    p->b = malloc(sizeof(double) * (size_t)(br * p->ldb));
    p->c0 = malloc(sizeof(double) * (size_t)(p->m * p->ldc));
    p->ref = malloc(sizeof(double) * (size_t)(p->m * p->ldc));
    p->bound = malloc(sizeof(double) * (size_t)(p->m * p->ldc));
    ck_assert(p->a && p->b && p->c0 && p->ref && p->bound);
    g_seed_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    /* values exact in F32, so both precisions see the same inputs */
    for (int64_t i = 0; i < ar * p->lda; i++) p->a[i] = (float)urand();
    for (int64_t i = 0; i < br * p->ldb; i++) p->b[i] = (float)urand();
    for (int64_t i = 0; i < p->m * p->ldc; i++) p->c0[i] = (float)urand();
    /* the padding past each row is NaN: a kernel that reads it poisons the result */
    for (int64_t r = 0; r < ar; r++)
        for (int64_t j = ac; j < p->lda; j++) p->a[r * p->lda + j] = NAN;
    for (int64_t r = 0; r < br; r++)
        for (int64_t j = bc; j < p->ldb; j++) p->b[r * p->ldb + j] = NAN;
    /* the naive triple loop in long double, with the scale of each element for the error bound */
    for (int64_t i = 0; i < p->m; i++)
        for (int64_t j = 0; j < p->ldc; j++) {
            int64_t e = i * p->ldc + j;
            if (j >= p->n) {
                p->ref[e] = p->c0[e], p->bound[e] = 0;
                continue;
            }
            long double s = 0, sabs = 0;
            for (int64_t q = 0; q < p->k; q++) {
                double x = ta ? p->a[q * p->lda + i] : p->a[i * p->lda + q];
                double y = tb ? p->b[j * p->ldb + q] : p->b[q * p->ldb + j];
                s += (long double)x * y;
                sabs += fabsl((long double)x * y);
            }
            p->ref[e] = (double)((long double)alpha * s + (beta == 0 ? 0 : (long double)beta * p->c0[e]));
            p->bound[e] = fabs(alpha) * (double)sabs + fabs(beta * p->c0[e]);
        }
}

static void prob_free(prob *p)
{
    free(p->a), free(p->b), free(p->c0), free(p->ref), free(p->bound);
}

/* Runs the product in dtype f64 (or f32) into out (m x ldc doubles); returns the status. */
static ad_status prob_run(const prob *p, bool f64, double *out)
{
    int64_t na = (p->ta ? p->k : p->m) * p->lda, nb = (p->tb ? p->n : p->k) * p->ldb, nc = p->m * p->ldc;
    ad_status st;
    if (f64) {
        memcpy(out, p->c0, sizeof(double) * (size_t)nc);
        return ad__gemm_f64(p->ta, p->tb, p->m, p->n, p->k, p->alpha, p->a, p->lda, p->b, p->ldb, p->beta, out,
                            p->ldc);
    }
    float *a = malloc(sizeof(float) * (size_t)na), *b = malloc(sizeof(float) * (size_t)nb),
          *c = malloc(sizeof(float) * (size_t)nc);
    ck_assert(a && b && c);
    for (int64_t i = 0; i < na; i++) a[i] = (float)p->a[i];
    for (int64_t i = 0; i < nb; i++) b[i] = (float)p->b[i];
    for (int64_t i = 0; i < nc; i++) c[i] = (float)p->c0[i];
    st = ad__gemm_f32(p->ta, p->tb, p->m, p->n, p->k, (float)p->alpha, a, p->lda, b, p->ldb, (float)p->beta, c,
                      p->ldc);
    for (int64_t i = 0; i < nc; i++) out[i] = c[i];
    free(a), free(b), free(c);
    return st;
}

/* Every element within tol of the reference, relative to its scale |alpha| sum|a b| + |beta c|. */
static void check_close(const prob *p, const double *got, double tol, const char *what)
{
    for (int64_t i = 0; i < p->m * p->ldc; i++) {
        double err = fabs(got[i] - p->ref[i]);
        if (!(err <= tol * p->bound[i] + 1e-300) && !(p->bound[i] == 0 && got[i] == p->ref[i]))
            ck_abort_msg("%s: m=%lld n=%lld k=%lld ta=%d tb=%d alpha=%g beta=%g: C[%lld][%lld] = %.17g, "
                         "expected %.17g (bound %.3g)",
                         what, (long long)p->m, (long long)p->n, (long long)p->k, p->ta, p->tb, p->alpha, p->beta,
                         (long long)(i / p->ldc), (long long)(i % p->ldc), got[i], p->ref[i], tol * p->bound[i]);
    }
}

static bool skip_shape(int s) { return tu_quick() && shapes[s][0] * shapes[s][1] * shapes[s][2] > QUICK_MNK; }

/* Runs every transpose case and alpha/beta variant of shape s under the current backend. */
static void sweep(int s, const char *what)
{
    for (int tr = 0; tr < 4; tr++)
        for (int ab = 0; ab < 4; ab++) {
            prob p;
            prob_init(&p, shapes[s], tr & 1, tr & 2, alphas[ab], betas[ab], (uint64_t)(s * 16 + tr * 4 + ab));
            double *out = malloc(sizeof(double) * (size_t)(p.m * p.ldc));
            ck_assert_ptr_nonnull(out);
            for (int f64 = 0; f64 < 2; f64++) {
                ck_assert_int_eq(prob_run(&p, f64, out), AD_OK);
                check_close(&p, out, f64 ? 1e-12 : 1e-5, what);
            }
            free(out);
            prob_free(&p);
        }
}

static void teardown(void)
{
    ad__gemm_set_backend(AD__GEMM_AUTO, AD__GEMM_BEST);
    ad_set_num_threads(1);
}

/* The packed kernel at every level this CPU runs (generic, AVX2, AVX-512), on every shape. */
START_TEST(packed_levels)
{
    if (skip_shape(_i)) return;
    const char *seen[3] = {NULL, NULL, NULL};
    for (int level = AD__GEMM_GENERIC; level <= AD__GEMM_AVX512; level++) {
        ad__gemm_set_backend(AD__GEMM_PACKED, level);
        const char *name = ad__gemm_kernel_name(false);
        bool dup = false;
        for (int j = 0; j < level; j++) dup = dup || (seen[j] && !strcmp(seen[j], name));
        seen[level] = name;
        if (!dup) sweep(_i, name);
    }
}
END_TEST

/* The engine's default path (plain loop for tiny, skinny kernels for vectors, packed or OpenBLAS),
** and the built-in one at every level, which covers the skinny kernels of each level. */
START_TEST(default_path)
{
    if (skip_shape(_i)) return;
    ad__gemm_set_backend(AD__GEMM_AUTO, AD__GEMM_BEST);
    sweep(_i, "auto");
    bool skinny = shapes[_i][0] == 1 || shapes[_i][1] == 1;
    for (int level = skinny ? AD__GEMM_GENERIC : AD__GEMM_BEST; level <= AD__GEMM_BEST; level++) {
        ad__gemm_set_backend(AD__GEMM_BUILTIN, level);
        sweep(_i, ad__gemm_kernel_name(false));
    }
}
END_TEST

/* OpenBLAS on every product agrees with the naive loop (and so with the built-in kernels). */
START_TEST(blas_path)
{
    if (!ad__gemm_has_blas() || skip_shape(_i)) return;
    ad__gemm_set_backend(AD__GEMM_BLAS, AD__GEMM_BEST);
    sweep(_i, "openblas");
}
END_TEST

/* Built-in and OpenBLAS results directly against each other, on one large product. */
START_TEST(blas_vs_builtin)
{
    if (!ad__gemm_has_blas()) return;
    int s = tu_quick() ? 2 : NSHAPES - 1;
    for (int tr = 0; tr < 4; tr++) {
        prob p;
        prob_init(&p, shapes[s], tr & 1, tr & 2, 0.5, 1.0, 77 + (uint64_t)tr);
        double *x = malloc(sizeof(double) * (size_t)(p.m * p.ldc)), *y = malloc(sizeof(double) * (size_t)(p.m * p.ldc));
        ck_assert(x && y);
        for (int f64 = 0; f64 < 2; f64++) {
            ad__gemm_set_backend(AD__GEMM_PACKED, AD__GEMM_BEST);
            ck_assert_int_eq(prob_run(&p, f64, x), AD_OK);
            ad__gemm_set_backend(AD__GEMM_BLAS, AD__GEMM_BEST);
            ck_assert_int_eq(prob_run(&p, f64, y), AD_OK);
            double maxd = 0, maxr = 0;
            for (int64_t i = 0; i < p.m * p.ldc; i++) {
                maxd = fmax(maxd, fabs(x[i] - y[i]));
                maxr = fmax(maxr, fabs(p.ref[i]));
            }
            ck_assert_msg(maxd <= (f64 ? 1e-12 : 1e-5) * maxr, "tr=%d f64=%d: max difference %g of max %g", tr, f64,
                          maxd, maxr);
        }
        free(x), free(y);
        prob_free(&p);
    }
}
END_TEST

/* Threads split C but never change a result: bitwise equal to one thread, for 2, 3 and 5 threads. */
START_TEST(threads_deterministic)
{
    int s = tu_quick() ? 3 : 11; /* {65, 129, 7} or {257, 129, 64} */
    for (int tr = 0; tr < 4; tr++) {
        prob p;
        prob_init(&p, shapes[s], tr & 1, tr & 2, 1.0, tr == 3 ? 1.0 : 0.0, 300 + (uint64_t)tr);
        size_t bytes = sizeof(double) * (size_t)(p.m * p.ldc);
        double *one = malloc(bytes), *many = malloc(bytes);
        ck_assert(one && many);
        ad__gemm_set_backend(AD__GEMM_PACKED, AD__GEMM_BEST);
        for (int f64 = 0; f64 < 2; f64++) {
            ad_set_num_threads(1);
            ck_assert_int_eq(prob_run(&p, f64, one), AD_OK);
            check_close(&p, one, f64 ? 1e-12 : 1e-5, "1 thread");
            for (int nt = 2; nt <= 5; nt += nt == 2 ? 1 : 2) {
                ad_set_num_threads(nt);
                ck_assert_int_eq(ad_get_num_threads(), nt);
                ck_assert_int_eq(prob_run(&p, f64, many), AD_OK);
                ck_assert_msg(!memcmp(one, many, bytes), "tr=%d f64=%d: %d threads differ from 1", tr, f64, nt);
            }
        }
        /* a wide, short product splits the columns instead */
        int64_t wide[3] = {7, 257, 64};
        prob w;
        prob_init(&w, wide, tr & 1, tr & 2, 1.0, 0.0, 400 + (uint64_t)tr);
        size_t wb = sizeof(double) * (size_t)(w.m * w.ldc);
        double *w1 = malloc(wb), *w2 = malloc(wb);
        ck_assert(w1 && w2);
        ad_set_num_threads(1);
        ck_assert_int_eq(prob_run(&w, false, w1), AD_OK);
        ad_set_num_threads(2);
        ck_assert_int_eq(prob_run(&w, false, w2), AD_OK);
        ck_assert(!memcmp(w1, w2, wb));
        check_close(&w, w2, 1e-5, "wide, 2 threads");
        ad_set_num_threads(1);
        free(w1), free(w2), free(one), free(many);
        prob_free(&w);
        prob_free(&p);
    }
}
END_TEST

/* The default path with threads: products from 2^20 m n k up are split over the pool (single-
** threaded OpenBLAS per share when built with it, else the packed kernel), by rows or by columns
** (whichever cuts the largest matrix); every share lands where it belongs, results stay within
** rounding of the reference at every thread count, and repeat bit for bit at a given count. */
START_TEST(threads_split)
{
    /* C largest (rows), B largest (columns), A largest (rows), square */
    static const int64_t split_shapes[][3] = {{257, 129, 64}, {64, 257, 129}, {129, 64, 257}, {110, 110, 110}};
    int nshapes = tu_quick() ? 1 : 4, last_backend = tu_quick() ? AD__GEMM_AUTO : AD__GEMM_BUILTIN;
    for (int backend = AD__GEMM_AUTO; backend <= last_backend; backend++)
        for (int s = 0; s < nshapes; s++)
            for (int tr = 0; tr < 4; tr++) {
                prob p;
                prob_init(&p, split_shapes[s], tr & 1, tr & 2, 1.5, tr == 2 ? 1.0 : 0.0, 500 + (uint64_t)(s * 4 + tr));
                size_t bytes = sizeof(double) * (size_t)(p.m * p.ldc);
                double *x = malloc(bytes), *y = malloc(bytes);
                ck_assert(x && y);
                ad__gemm_set_backend(backend, AD__GEMM_BEST);
                for (int f64 = 0; f64 < 2; f64++)
                    for (int nt = 1; nt <= (tu_quick() ? 2 : 3); nt++) {
                        ad_set_num_threads(nt);
                        ck_assert_int_eq(prob_run(&p, f64, x), AD_OK);
                        check_close(&p, x, f64 ? 1e-12 : 1e-5, nt == 1 ? "split, 1 thread" : "split, threads");
                        ck_assert_int_eq(prob_run(&p, f64, y), AD_OK);
                        ck_assert_msg(!memcmp(x, y, bytes), "s=%d tr=%d f64=%d threads=%d: two runs differ", s, tr,
                                      f64, nt);
                    }
                ad_set_num_threads(1);
                free(x), free(y);
                prob_free(&p);
            }
}
END_TEST

/* BLAS semantics: beta == 0 ignores NaN in C; alpha == 0 does not read A or B; empty products scale C. */
START_TEST(special_values)
{
    for (int backend = AD__GEMM_AUTO; backend <= AD__GEMM_BLAS; backend++) {
        ad__gemm_set_backend(backend, AD__GEMM_BEST);
        for (int64_t sz = 2; sz <= 70; sz += 68) {
            size_t nel = (size_t)(sz * sz);
            float *a = malloc(nel * sizeof(float)), *b = malloc(nel * sizeof(float)), *c = malloc(nel * sizeof(float));
            ck_assert(a && b && c);
            for (size_t i = 0; i < nel; i++) a[i] = 1, b[i] = 2, c[i] = NAN;
            ck_assert_int_eq(ad__gemm_f32(false, false, sz, sz, sz, 1, a, sz, b, sz, 0, c, sz), AD_OK);
            for (size_t i = 0; i < nel; i++) ck_assert_float_eq(c[i], 2.0f * (float)sz);
            for (size_t i = 0; i < nel; i++) a[i] = NAN, c[i] = 3;
            ck_assert_int_eq(ad__gemm_f32(true, true, sz, sz, sz, 0, a, sz, b, sz, 2, c, sz), AD_OK);
            for (size_t i = 0; i < nel; i++) ck_assert_float_eq(c[i], 6.0f);
            ck_assert_int_eq(ad__gemm_f32(false, false, sz, sz, 0, 1, a, 1, b, sz, 0.5f, c, sz), AD_OK);
            for (size_t i = 0; i < nel; i++) ck_assert_float_eq(c[i], 3.0f);
            free(a), free(b), free(c);
        }
        double d = 5;
        ck_assert_int_eq(ad__gemm_f64(false, false, 0, 0, 0, 1, NULL, 0, NULL, 0, 0, &d, 0), AD_OK);
        ck_assert_double_eq(d, 5);
    }
}
END_TEST

START_TEST(bad_arguments)
{
    double a[4] = {0}, b[4] = {0}, c[4] = {0};
    ck_assert_int_eq(ad__gemm_f64(false, false, -1, 2, 2, 1, a, 2, b, 2, 0, c, 2), AD_ERR_ARG);
    ck_assert_int_eq(ad__gemm_f64(false, false, 2, 2, 2, 1, a, 1, b, 2, 0, c, 2), AD_ERR_ARG);
    ck_assert_int_eq(ad__gemm_f64(true, false, 2, 2, 2, 1, a, 1, b, 2, 0, c, 2), AD_ERR_ARG);
    ck_assert_int_eq(ad__gemm_f64(false, true, 2, 2, 2, 1, a, 2, b, 1, 0, c, 2), AD_ERR_ARG);
    ck_assert_int_eq(ad__gemm_f64(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 1), AD_ERR_ARG);
    float fa[4] = {0}, fb[4] = {0}, fc[4] = {0};
    ck_assert_int_eq(ad__gemm_f32(false, false, 2, -2, 2, 1, fa, 2, fb, 2, 0, fc, 2), AD_ERR_ARG);
}
END_TEST

static int g_fail_allocs;
static void *failing_alloc(void *ud, void *p, size_t n)
{
    (void)ud;
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (g_fail_allocs) return NULL;
    return realloc(p, n);
}

/* Large products take their packing buffers from the library's allocator and report NOMEM when it
** fails; small ones pack on the stack and never allocate. */
START_TEST(out_of_memory)
{
    int64_t sz = 100;
    double *a = calloc((size_t)(sz * sz), sizeof(double)), *b = calloc((size_t)(sz * sz), sizeof(double)),
           *c = calloc((size_t)(sz * sz), sizeof(double));
    ck_assert(a && b && c);
    ad_set_allocator(failing_alloc, NULL);
    g_fail_allocs = 1;
    ad__gemm_set_backend(AD__GEMM_PACKED, AD__GEMM_BEST);
    ck_assert_int_eq(ad__gemm_f64(false, false, sz, sz, sz, 1, a, sz, b, sz, 0, c, sz), AD_ERR_NOMEM);
    ad_set_num_threads(2);
    ck_assert_int_eq(ad__gemm_f64(false, true, sz, sz, sz, 1, a, sz, b, sz, 0, c, sz), AD_ERR_NOMEM);
    ck_assert_int_eq(ad__gemm_f64(false, true, 48, 48, 48, 1, a, 48, b, 48, 0, c, 48), AD_OK);
    ad_set_num_threads(1);
    ck_assert_int_eq(ad__gemm_f64(true, false, 48, 48, 48, 1, a, 48, b, 48, 0, c, 48), AD_OK);
    ck_assert_int_eq(ad__gemm_f32(false, false, 64, 64, 64, 1, (float *)a, 64, (float *)b, 64, 0, (float *)c, 64),
                     AD_OK);
    g_fail_allocs = 0;
    ck_assert_int_eq(ad__gemm_f64(false, true, sz, sz, sz, 1, a, sz, b, sz, 0, c, sz), AD_OK);
    ad_set_allocator(NULL, NULL);
    free(a), free(b), free(c);
}
END_TEST

START_TEST(thread_setting)
{
    ck_assert_int_eq(ad_get_num_threads(), 1);
    ad_set_num_threads(0);
    ck_assert_int_eq(ad_get_num_threads(), 1);
    ad_set_num_threads(-4);
    ck_assert_int_eq(ad_get_num_threads(), 1);
    ad_set_num_threads(3);
    ck_assert_int_eq(ad_get_num_threads(), 3);
    ad_set_num_threads(1);
}
END_TEST

static Suite *gemm_suite(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("kernels");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_loop_test(tc, packed_levels, 0, NSHAPES);
    tcase_add_loop_test(tc, default_path, 0, NSHAPES);
    tcase_add_loop_test(tc, blas_path, 0, NSHAPES);
    tcase_add_test(tc, blas_vs_builtin);
    tcase_add_test(tc, threads_deterministic);
    tcase_add_test(tc, threads_split);
    suite_add_tcase(s, tc);
    TCase *te = tcase_create("semantics");
    tcase_add_checked_fixture(te, NULL, teardown);
    tcase_add_test(te, special_values);
    tcase_add_test(te, bad_arguments);
    tcase_add_test(te, out_of_memory);
    tcase_add_test(te, thread_setting);
    suite_add_tcase(s, te);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gemm_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

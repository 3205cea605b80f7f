/* test_util.h: small helpers shared by the engine's Check suites (tensors, random inputs, comparisons). */
#ifndef AUTODIFF_TEST_UTIL_H
#define AUTODIFF_TEST_UTIL_H

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"

/* true when the environment asks for the quick variant (valgrind runs). */
static inline int tu_quick(void) { return getenv("AD_TEST_QUICK") != NULL; }

/* A caller-owned F64 tensor holding `data` (NULL: zeros). Fails the test when out of memory. */
static inline ad_tensor *tu_f64(int ndim, const int64_t *shape, const double *data)
{
    ad_tensor *t = data ? ad_tensor_from(AD_F64, ndim, shape, data) : ad_tensor_new(AD_F64, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* A caller-owned tensor of dtype dt with uniform values in [lo, hi) from seed. */
static inline ad_tensor *tu_rand(ad_dtype dt, int ndim, const int64_t *shape, double lo, double hi, uint64_t seed)
{
    ad_tensor *t = ad_tensor_new(dt, ndim, shape);
    ck_assert_ptr_nonnull(t);
    ad_rng r;
    ad_rng_seed(&r, seed);
    ad_rng_fill_uniform(&r, t, lo, hi);
    return t;
}

/* Uniform magnitudes in [lo, hi) with random signs: values stay away from 0 (kinks of relu, abs, sign). */
static inline ad_tensor *tu_rand_away(int ndim, const int64_t *shape, double lo, double hi, uint64_t seed)
{
    ad_tensor *t = tu_rand(AD_F64, ndim, shape, lo, hi, seed);
    ad_rng r;
    ad_rng_seed(&r, seed ^ 0xabcdefULL);
    for (int64_t i = 0; i < t->size; i++)
        if (ad_rng_u64(&r) & 1) ad_tensor_set(t, i, -ad_tensor_get(t, i));
    return t;
}

/* F32 copy of an F64 tensor (values rounded). */
static inline ad_tensor *tu_to_f32(const ad_tensor *x)
{
    ad_tensor *t = ad_tensor_new(AD_F32, x->ndim, x->shape);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ad_tensor_copy(t, x), AD_OK);
    return t;
}

/* |a - b| <= atol + rtol |b|, NaN equal to NaN, equal infinities equal. */
static inline int tu_close(double a, double b, double atol, double rtol)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b)) return a == b;
    return fabs(a - b) <= atol + rtol * fabs(b);
}

#define TU_ASSERT_CLOSE(a, b, atol, rtol)                                                                              \
    do {                                                                                                               \
        double tu_a_ = (a), tu_b_ = (b);                                                                               \
        ck_assert_msg(tu_close(tu_a_, tu_b_, (atol), (rtol)), "%s = %.17g, expected %s = %.17g", #a, tu_a_, #b,        \
                      tu_b_);                                                                                          \
    } while (0)

/* Asserts that tensor x has the given shape. */
static inline void tu_assert_shape(const ad_tensor *x, int ndim, const int64_t *shape)
{
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(x->ndim, ndim);
    for (int i = 0; i < ndim; i++) ck_assert_int_eq(x->shape[i], shape[i]);
}

/* Asserts every element of x is within tolerance of want[i]. */
static inline void tu_assert_values(const ad_tensor *x, const double *want, double atol, double rtol)
{
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < x->size; i++) {
        double got = ad_tensor_get(x, i);
        ck_assert_msg(tu_close(got, want[i], atol, rtol), "element %lld: got %.17g, expected %.17g", (long long)i, got,
                      want[i]);
    }
}

/* Runs Check on one suite; returns the exit status for main. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif

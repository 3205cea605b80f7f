/* test_tensor.c: tensors (new, from, clone, copy, fill, get, set, shapes) and the random number generator. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "ad.h"
#include "test_util.h"

START_TEST(test_new_zeroed)
{
    ad_tensor *t = ad_tensor_new(AD_F64, AD_SHAPE(2, 3));
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, AD_F64);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], 2);
    ck_assert_int_eq(t->shape[1], 3);
    ck_assert_int_eq(t->size, 6);
    for (int64_t i = 0; i < 6; i++) ck_assert(ad_tensor_get(t, i) == 0.0);
    ck_assert_ptr_nonnull(t->data);
    ck_assert_int_eq((uintptr_t)t->data % 64, 0);
    ad_tensor_free(t);

    ad_tensor *f = ad_tensor_new(AD_F32, AD_SHAPE(5));
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->size, 5);
    ck_assert(((float *)f->data)[4] == 0.0f);
    ad_tensor_free(f);
}
END_TEST

/* Receives what AD_SHAPE expands to. */
static void check_789(int ndim, const int64_t *shape)
{
    ck_assert_int_eq(ndim, 3);
    ck_assert_int_eq(shape[0], 7);
    ck_assert_int_eq(shape[1], 8);
    ck_assert_int_eq(shape[2], 9);
}

START_TEST(test_shape_macro)
{
    check_789(AD_SHAPE(7, 8, 9));
    ad_tensor *t = ad_tensor_new(AD_F64, AD_SHAPE(1, 2, 3, 4, 5, 6, 7, 8));
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 8);
    ck_assert_int_eq(t->size, 40320);
    ad_tensor_free(t);
}
END_TEST

START_TEST(test_scalar_and_empty)
{
    ad_tensor *s = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_int_eq(s->size, 1);
    ad_tensor_set(s, 0, 2.5);
    ck_assert(ad_tensor_get(s, 0) == 2.5);
    ad_tensor_free(s);

    ad_tensor *e = ad_tensor_new(AD_F32, AD_SHAPE(3, 0, 2));
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->size, 0);
    ck_assert(ad_tensor_get(e, 0) == 0.0); /* out of range reads 0 */
    ad_tensor_set(e, 0, 1.0);              /* ignored */
    ad_tensor_fill(e, 3.0);
    ad_tensor *ec = ad_tensor_clone(e);
    ck_assert_ptr_nonnull(ec);
    ck_assert_int_eq(ec->size, 0);
    ck_assert_int_eq(ec->shape[1], 0);
    ad_tensor_free(ec);
    ad_tensor *ef = ad_tensor_from(AD_F64, AD_SHAPE(0), NULL); /* no data needed for no elements */
    ck_assert_ptr_nonnull(ef);
    ad_tensor_free(ef);
    ad_tensor_free(e);
}
END_TEST

START_TEST(test_from_clone_copy)
{
    double d[6] = {1, 2, 3, 4, 5, 6};
    ad_tensor *a = ad_tensor_from(AD_F64, AD_SHAPE(2, 3), d);
    ck_assert_ptr_nonnull(a);
    d[0] = 100; /* from copies */
    ck_assert(ad_tensor_get(a, 0) == 1.0);
    ck_assert(ad_tensor_get(a, 5) == 6.0);
    ck_assert_ptr_null(ad_tensor_from(AD_F64, AD_SHAPE(2), NULL));

    ad_tensor *c = ad_tensor_clone(a);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c->data, a->data);
    ck_assert(ad_shape_equal(a, c));
    ad_tensor_set(c, 1, -7);
    ck_assert(ad_tensor_get(a, 1) == 2.0);
    ck_assert(ad_tensor_get(c, 1) == -7.0);
    ck_assert_ptr_null(ad_tensor_clone(NULL));

    /* copy across dtypes and shapes of the same size */
    ad_tensor *f = ad_tensor_new(AD_F32, AD_SHAPE(6));
    ck_assert_int_eq(ad_tensor_copy(f, a), AD_OK);
    for (int64_t i = 0; i < 6; i++) ck_assert(ad_tensor_get(f, i) == ad_tensor_get(a, i));
    ad_tensor_set(f, 2, 0.1);
    ck_assert_int_eq(ad_tensor_copy(c, f), AD_OK);
    ck_assert(ad_tensor_get(c, 2) == (double)0.1f);
    ad_tensor *bad = ad_tensor_new(AD_F64, AD_SHAPE(5));
    ck_assert_int_eq(ad_tensor_copy(bad, a), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_tensor_copy(NULL, a), AD_ERR_ARG);
    ck_assert_int_eq(ad_tensor_copy(a, NULL), AD_ERR_ARG);

    ad_tensor_fill(a, -1.5);
    for (int64_t i = 0; i < 6; i++) ck_assert(ad_tensor_get(a, i) == -1.5);
    ad_tensor_fill(f, 0.25);
    ck_assert(((float *)f->data)[5] == 0.25f);
    ad_tensor_fill(NULL, 1.0);

    /* get/set out of range */
    ck_assert(ad_tensor_get(a, -1) == 0.0);
    ck_assert(ad_tensor_get(a, 6) == 0.0);
    ck_assert(ad_tensor_get(NULL, 0) == 0.0);
    ad_tensor_set(a, 6, 9.0);
    ad_tensor_set(a, -1, 9.0);
    for (int64_t i = 0; i < 6; i++) ck_assert(ad_tensor_get(a, i) == -1.5);

    ad_tensor_free(bad);
    ad_tensor_free(f);
    ad_tensor_free(c);
    ad_tensor_free(a);
    ad_tensor_free(NULL);
}
END_TEST

START_TEST(test_bad_shapes)
{
    ck_assert_ptr_null(ad_tensor_new(AD_F64, AD_SHAPE(2, -1)));
    ck_assert_ptr_null(ad_tensor_new(AD_F64, -1, NULL));
    ck_assert_ptr_null(ad_tensor_new(AD_F64, 2, NULL));
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_ptr_null(ad_tensor_new(AD_F64, 9, nine));
    ck_assert_ptr_null(ad_tensor_new((ad_dtype)7, AD_SHAPE(2)));
    /* products that overflow int64, or whose byte count would */
    ck_assert_ptr_null(ad_tensor_new(AD_F64, AD_SHAPE(INT64_MAX, 2)));
    ck_assert_ptr_null(ad_tensor_new(AD_F64, AD_SHAPE((int64_t)1 << 32, (int64_t)1 << 32)));
    ck_assert_ptr_null(ad_tensor_new(AD_F64, AD_SHAPE((int64_t)1 << 31, (int64_t)1 << 31, 4)));
    ck_assert_ptr_null(ad_tensor_from(AD_F64, AD_SHAPE(-3), (double[]){1}));
    ck_assert_int_eq(ad_dtype_size(AD_F32), 4);
    ck_assert_int_eq(ad_dtype_size(AD_F64), 8);
    ck_assert_int_eq(ad_dtype_size((ad_dtype)5), 0);
    ck_assert_str_eq(ad_dtype_name(AD_F32), "f32");
    ck_assert_str_eq(ad_dtype_name(AD_F64), "f64");
    ck_assert_str_eq(ad_dtype_name((ad_dtype)5), "?");
}
END_TEST

START_TEST(test_shape_str)
{
    char buf[64];
    ck_assert_str_eq(ad_shape_str(AD_SHAPE(3, 4), buf, sizeof buf), "[3,4]");
    ck_assert_str_eq(ad_shape_str(AD_SCALAR_SHAPE, buf, sizeof buf), "[]");
    ck_assert_str_eq(ad_shape_str(AD_SHAPE(0), buf, sizeof buf), "[0]");
    char small[4];
    ad_shape_str(AD_SHAPE(123, 456), small, sizeof small);
    ck_assert_int_eq(strlen(small), 3); /* truncated, NUL-terminated */
    ad_tensor *a = ad_tensor_new(AD_F64, AD_SHAPE(2, 3)), *b = ad_tensor_new(AD_F32, AD_SHAPE(2, 3)),
              *c = ad_tensor_new(AD_F64, AD_SHAPE(3, 2)), *d = ad_tensor_new(AD_F64, AD_SHAPE(6));
    ck_assert(ad_shape_equal(a, b));
    ck_assert(!ad_shape_equal(a, c));
    ck_assert(!ad_shape_equal(a, d));
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(c);
    ad_tensor_free(d);
}
END_TEST

START_TEST(test_rng_determinism)
{
    ad_rng a, b, c;
    ad_rng_seed(&a, 42);
    ad_rng_seed(&b, 42);
    ad_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = ad_rng_u64(&a), y = ad_rng_u64(&b), z = ad_rng_u64(&c);
        ck_assert(x == y);
        differ += x != z;
    }
    ck_assert_int_gt(differ, 990);
    /* normals and uniforms repeat too, including the cached second normal */
    ad_rng_seed(&a, 7);
    ad_rng_seed(&b, 7);
    for (int i = 0; i < 101; i++) {
        ck_assert(ad_rng_normal(&a) == ad_rng_normal(&b));
        double u = ad_rng_uniform(&a);
        ck_assert(u == ad_rng_uniform(&b));
        ck_assert(u >= 0.0 && u < 1.0);
    }
    /* reseeding restarts the sequence */
    ad_rng_seed(&a, 99);
    uint64_t first = ad_rng_u64(&a);
    ad_rng_u64(&a);
    ad_rng_normal(&a);
    ad_rng_seed(&a, 99);
    ck_assert(ad_rng_u64(&a) == first);
}
END_TEST

START_TEST(test_rng_below)
{
    ad_rng r;
    ad_rng_seed(&r, 1234);
    ck_assert(ad_rng_below(&r, 0) == 0);
    ck_assert(ad_rng_below(&r, 1) == 0);
    /* every value in range, each bucket near n/k (a 6-sigma band) */
    enum { K = 7 };
    int n = tu_quick() ? 7000 : 70000;
    int count[K] = {0};
    for (int i = 0; i < n; i++) {
        uint64_t v = ad_rng_below(&r, K);
        ck_assert(v < K);
        count[v]++;
    }
    double p = 1.0 / K, mean = n * p, sd = sqrt(n * p * (1 - p));
    for (int k = 0; k < K; k++) ck_assert_msg(fabs(count[k] - mean) < 6 * sd, "bucket %d: %d of %d", k, count[k], n);
    /* a range near 2^63 + 1 rejects most of the top half: values must still be in range
    ** and fall in both halves about equally */
    uint64_t big = ((uint64_t)1 << 63) + 1;
    int low = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t v = ad_rng_below(&r, big);
        ck_assert(v < big);
        low += v < big / 2;
    }
    ck_assert_int_gt(low, 800);
    ck_assert_int_lt(low, 1200);
    ck_assert(ad_rng_below(&r, UINT64_MAX) < UINT64_MAX);
}
END_TEST

START_TEST(test_rng_fill)
{
    ad_rng r;
    ad_rng_seed(&r, 5);
    int n = tu_quick() ? 4000 : 40000;
    ad_tensor *u = ad_tensor_new(AD_F64, 1, (int64_t[]){n});
    ad_tensor *g = ad_tensor_new(AD_F32, 1, (int64_t[]){n});
    ad_rng_fill_uniform(&r, u, -2.0, 3.0);
    ad_rng_fill_normal(&r, g, 1.0, 2.0);
    double su = 0, sg = 0, sg2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = ad_tensor_get(u, i);
        ck_assert(v >= -2.0 && v < 3.0);
        su += v;
        double w = ad_tensor_get(g, i);
        sg += w;
        sg2 += w * w;
    }
    double mu = su / n, mg = sg / n, vg = sg2 / n - mg * mg;
    ck_assert_msg(fabs(mu - 0.5) < 6 * 5.0 / sqrt(12.0 * n), "uniform mean %g", mu);
    ck_assert_msg(fabs(mg - 1.0) < 6 * 2.0 / sqrt((double)n), "normal mean %g", mg);
    ck_assert_msg(fabs(vg - 4.0) < 0.2 * 4.0, "normal variance %g", vg);
    ad_rng_fill_uniform(NULL, u, 0, 1);
    ad_rng_fill_normal(&r, NULL, 0, 1);
    ad_tensor_free(u);
    ad_tensor_free(g);
}
END_TEST

static Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_new_zeroed);
    tcase_add_test(core, test_shape_macro);
    tcase_add_test(core, test_scalar_and_empty);
    tcase_add_test(core, test_from_clone_copy);
    tcase_add_test(core, test_shape_str);
    suite_add_tcase(s, core);
    TCase *shapes = tcase_create("shapes");
    tcase_add_test(shapes, test_bad_shapes);
    suite_add_tcase(s, shapes);
    TCase *rng = tcase_create("rng");
    tcase_add_test(rng, test_rng_determinism);
    tcase_add_test(rng, test_rng_below);
    tcase_add_test(rng, test_rng_fill);
    suite_add_tcase(s, rng);
    return s;
}

int main(void) { return tu_run(tensor_suite()); }

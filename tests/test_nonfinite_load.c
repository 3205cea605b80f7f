/* test_nonfinite_load.c: a checkpoint holding NaN or Inf is refused by nn_load (naming the tensor and element,
** changing nothing) and loaded only when asked for (nn_load_ex with NN_LOAD_ALLOW_NONFINITE). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn.h"
#include "test_io_util.h"

static nn_module *mlp(uint64_t seed, ad_rng *rng)
{
    ad_rng_seed(rng, seed);
    nn_module *m = nn_mlp(3, (const int64_t[]){3, 4, 2}, NN_RELU, rng, NULL);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* A NaN weight, an Inf bias, a NaN in Adam's state: each refused, each loadable with the flag. */
START_TEST(nonfinite_values_are_refused)
{
    char dir[256], path[512];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    static const double bad[3] = {NAN, INFINITY, -INFINITY};
    for (int c = 0; c < 3; c++) {
        ad_rng r1, r2;
        nn_module *a = mlp(1, &r1), *b = mlp(2, &r2);
        nn_optim *oa = nn_adam(a, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL), *ob = nn_adam(b, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL);
        nn_param *pa, *pb;
        int np = nn_module_params(a, &pa);
        nn_module_params(b, &pb);
        ad_tensor_set(pa[c % np].value, 1, bad[c]); /* weight, bias, next weight */
        nn_error e;
        ck_assert_msg(nn_save(path, a, oa, &r1, &e) == AD_OK, "%s", e.message);
        double before = ad_tensor_get(pb[0].value, 0);
        ad_rng r2_before = r2;
        ad_status st = nn_load(path, b, ob, &r2, &e);
        ck_assert_msg(st == AD_ERR_NUMERIC, "case %d: %s", c, ad_status_str(st));
        ck_assert_int_eq(e.status, AD_ERR_NUMERIC);
        ck_assert_msg(strstr(e.message, pa[c % np].name) && strstr(e.message, "element 1") && strstr(e.message, path),
                      "%s", e.message);
        ck_assert_double_eq(ad_tensor_get(pb[0].value, 0), before); /* nothing changed */
        ck_assert(memcmp(r2.s, r2_before.s, sizeof r2.s) == 0);
        /* asked for: loaded as it is */
        ck_assert_msg(nn_load_ex(path, b, ob, &r2, NN_LOAD_ALLOW_NONFINITE, &e) == AD_OK, "%s", e.message);
        double got = ad_tensor_get(pb[c % np].value, 1);
        ck_assert(isnan(bad[c]) ? isnan(got) : got == bad[c]);
        nn_optim_free(oa);
        nn_optim_free(ob);
        nn_module_free(a);
        nn_module_free(b);
    }
    tio_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nonfinite_load");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, nonfinite_values_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

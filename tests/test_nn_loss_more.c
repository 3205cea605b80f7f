/* test_nn_loss_more.c: Huber, L1 and label-smoothed cross-entropy: values by hand, gradients at and away from the kinks, errors. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

typedef enum which { HUBER, L1, CE_SMOOTH } which;

typedef struct loss_ctx {
    which w;
    double param;
    const int64_t *labels;
} loss_ctx;

static ad_var loss_fn(ad_tape *t, const ad_var *in, void *ctx)
{
    (void)t;
    const loss_ctx *c = ctx;
    switch (c->w) {
    case HUBER: return nn_loss_huber(in[0], in[1], c->param);
    case L1: return nn_loss_l1(in[0], in[1]);
    case CE_SMOOTH: return nn_loss_cross_entropy_smooth(in[0], c->labels, c->param);
    }
    return in[0];
}

/* Value of the loss and its gradient with respect to y (into gy, may be NULL). */
static double eval_loss(const loss_ctx *c, const ad_tensor *y, const ad_tensor *t, ad_tensor *gy)
{
    ad_tape *tp = ad_tape_new();
    ad_var vy = ad_leaf(tp, y);
    ad_var in[2] = {vy, t ? ad_const(tp, t) : vy};
    ad_var l = loss_fn(tp, in, (void *)c);
    ck_assert_msg(ad_ok(l), "%s", ad_tape_error(tp));
    tu_assert_shape(ad_value(l), 0, NULL);
    double v = ad_item(l);
    ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
    if (gy) ck_assert_int_eq(ad_tensor_copy(gy, ad_grad(vy)), AD_OK);
    ad_tape_free(tp);
    return v;
}

static void check_grad(const loss_ctx *c, ad_tensor *y, ad_tensor *t)
{
    ad_tensor *in[2] = {y, t};
    ad_check_report rep;
    ad_status st = ad_gradcheck(loss_fn, (void *)c, t ? 2 : 1, (const ad_tensor *const *)in, NULL, &rep);
    if (st != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_int_eq(st, AD_OK);
    ck_assert_int_gt(rep.checked, 0);
}

START_TEST(huber_values_and_kinks)
{
    /* d = -3, -1, 0, 0.5, 1 (= delta: the joint), 2 with delta 1 */
    ad_tensor *y = tu_f64(AD_SHAPE(2, 3), (const double[]){-3, -1, 0, 0.5, 1, 2});
    ad_tensor *t = tu_f64(AD_SHAPE(2, 3), NULL);
    ad_tensor *g = tu_f64(AD_SHAPE(2, 3), NULL);
    loss_ctx c = {HUBER, 1.0, NULL};
    /* 2.5 + 0.5 + 0 + 0.125 + 0.5 + 1.5 = 5.125, over 6 */
    TU_ASSERT_CLOSE(eval_loss(&c, y, t, g), 5.125 / 6, 1e-15, 0);
    tu_assert_values(g, (const double[]){-1.0 / 6, -1.0 / 6, 0, 0.5 / 6, 1.0 / 6, 1.0 / 6}, 1e-15, 0);
    /* delta 2.5: everything inside is half the MSE */
    c.param = 2.5;
    TU_ASSERT_CLOSE(eval_loss(&c, y, t, NULL), (9 + 1 + 0 + 0.25 + 1 + 4) / 2.0 / 6 - (3 - 2.5) * (3 - 2.5) / 2 / 6,
                    1e-15, 0);
    /* gradcheck in F64: away from the kinks, and at |d| = delta exactly (first derivative continuous) */
    c.param = 1.0;
    ad_tensor *ya = tu_rand_away(AD_SHAPE(3, 4), 0.1, 3.0, 7);
    check_grad(&c, ya, t = (ad_tensor_free(t), tu_rand(AD_F64, AD_SHAPE(3, 4), -0.05, 0.05, 8)));
    ad_tensor *yk = tu_f64(AD_SHAPE(4), (const double[]){1, -1, 0.25, -2});
    ad_tensor *tk = tu_f64(AD_SHAPE(4), NULL);
    check_grad(&c, yk, tk);
    ad_tensor_free(y);
    ad_tensor_free(t);
    ad_tensor_free(g);
    ad_tensor_free(ya);
    ad_tensor_free(yk);
    ad_tensor_free(tk);
}
END_TEST

START_TEST(l1_values_and_zero)
{
    ad_tensor *y = tu_f64(AD_SHAPE(4), (const double[]){1, -2, 3, 5});
    ad_tensor *t = tu_f64(AD_SHAPE(4), (const double[]){0, 0, 3, 7});
    ad_tensor *g = tu_f64(AD_SHAPE(4), NULL);
    loss_ctx c = {L1, 0, NULL};
    TU_ASSERT_CLOSE(eval_loss(&c, y, t, g), (1 + 2 + 0 + 2) / 4.0, 1e-15, 0);
    tu_assert_values(g, (const double[]){0.25, -0.25, 0, -0.25}, 1e-15, 0); /* 0 where y == t */
    ad_tensor *ya = tu_rand_away(AD_SHAPE(2, 1, 3), 0.1, 2.0, 3), *ta = tu_f64(AD_SHAPE(2, 1, 3), NULL);
    check_grad(&c, ya, ta);
    ad_tensor_free(y);
    ad_tensor_free(t);
    ad_tensor_free(g);
    ad_tensor_free(ya);
    ad_tensor_free(ta);
}
END_TEST

START_TEST(cross_entropy_smoothing)
{
    const int64_t labels[3] = {2, 0, 1};
    ad_tensor *z = tu_rand(AD_F64, AD_SHAPE(3, 4), -2, 2, 5);
    ad_tensor *g = tu_f64(AD_SHAPE(3, 4), NULL);
    double s = 0.1;
    loss_ctx c = {CE_SMOOTH, s, labels};
    /* by hand: per sample, -sum_c q_c log p_c with q = (1 - s) onehot + s / 4 */
    double want = 0, gwant[12];
    for (int i = 0; i < 3; i++) {
        double mx = -INFINITY, zs = 0;
        for (int j = 0; j < 4; j++) mx = fmax(mx, ad_tensor_get(z, i * 4 + j));
        for (int j = 0; j < 4; j++) zs += exp(ad_tensor_get(z, i * 4 + j) - mx);
        for (int j = 0; j < 4; j++) {
            double lp = ad_tensor_get(z, i * 4 + j) - mx - log(zs), q = (j == labels[i] ? 1 - s : 0) + s / 4;
            want -= q * lp / 3;
            gwant[i * 4 + j] = (exp(lp) - q) / 3;
        }
    }
    TU_ASSERT_CLOSE(eval_loss(&c, z, NULL, g), want, 1e-14, 1e-14);
    tu_assert_values(g, gwant, 1e-15, 1e-12);
    check_grad(&c, z, NULL);
    /* smoothing 0 is the plain cross-entropy; logits of 1e4 stay finite */
    c.param = 0;
    ad_tape *tp = ad_tape_new();
    ad_var vz = ad_const(tp, z);
    TU_ASSERT_CLOSE(ad_item(nn_loss_cross_entropy_smooth(vz, labels, 0)), ad_item(nn_loss_cross_entropy(vz, labels)), 1e-15, 0);
    ad_tensor *big = tu_f64(AD_SHAPE(1, 3), (const double[]){1e4, -1e4, 0});
    ck_assert(isfinite(ad_item(nn_loss_cross_entropy_smooth(ad_const(tp, big), (const int64_t[]){1}, 0.2))));
    ad_tape_free(tp);
    ad_tensor_free(big);
    ad_tensor_free(z);
    ad_tensor_free(g);
}
END_TEST

START_TEST(errors_name_the_loss)
{
    ad_tape *t = ad_tape_new();
    ad_var a = ad_full(t, AD_F64, 1, (const int64_t[]){3}, 1.0), b = ad_full(t, AD_F64, 1, (const int64_t[]){4}, 1.0);
    ck_assert(!ad_ok(nn_loss_huber(a, b, 1.0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "nn_loss_huber"));
    ad_tape_reset(t);
    a = ad_full(t, AD_F64, 1, (const int64_t[]){3}, 1.0);
    ck_assert(!ad_ok(nn_loss_huber(a, a, 0.0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    a = ad_full(t, AD_F64, 1, (const int64_t[]){3}, 1.0);
    b = ad_full(t, AD_F32, 1, (const int64_t[]){3}, 1.0);
    ck_assert(!ad_ok(nn_loss_l1(a, b)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "nn_loss_l1"));
    ad_tape_reset(t);
    a = ad_full(t, AD_F64, 2, (const int64_t[]){2, 3}, 1.0);
    ck_assert(!ad_ok(nn_loss_cross_entropy_smooth(a, (const int64_t[]){0, 3}, 0.1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_INDEX);
    ad_tape_reset(t);
    a = ad_full(t, AD_F64, 2, (const int64_t[]){2, 3}, 1.0);
    ck_assert(!ad_ok(nn_loss_cross_entropy_smooth(a, (const int64_t[]){0, 1}, 1.5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_loss_more");
    TCase *c = tcase_create("core");
    tcase_add_test(c, huber_values_and_kinks);
    tcase_add_test(c, l1_values_and_zero);
    tcase_add_test(c, cross_entropy_smoothing);
    tcase_add_test(c, errors_name_the_loss);
    suite_add_tcase(s, c);
    return tu_run(s);
}

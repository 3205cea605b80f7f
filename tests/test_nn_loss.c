/* test_nn_loss.c: losses: values against hand computations, gradchecks in F64, extreme inputs, errors. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

typedef enum which { SE, MSE, BCE, CE } which;

typedef struct loss_ctx {
    which w;
    const int64_t *labels;
} loss_ctx;

static ad_var loss_fn(ad_tape *t, const ad_var *in, void *ctx)
{
    (void)t;
    const loss_ctx *c = ctx;
    switch (c->w) {
    case SE: return nn_loss_squared_error(in[0], in[1]);
    case MSE: return nn_loss_mse(in[0], in[1]);
    case BCE: return nn_loss_bce_with_logits(in[0], in[1]);
    case CE: return nn_loss_cross_entropy(in[0], c->labels);
    }
    return in[0];
}

/* The loss of the given kind on one tape: value and input gradient. */
static double eval_loss(which w, const ad_tensor *y, const ad_tensor *t, const int64_t *labels, ad_tensor *gy)
{
    ad_tape *tp = ad_tape_new();
    ad_var vy = ad_leaf(tp, y);
    ad_var in[2] = {vy, t ? ad_const(tp, t) : vy};
    loss_ctx c = {w, labels};
    ad_var l = loss_fn(tp, in, &c);
    ck_assert_msg(ad_ok(l), "%s", ad_tape_error(tp));
    tu_assert_shape(ad_value(l), 0, NULL);
    double v = ad_item(l);
    ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
    if (gy) ck_assert_int_eq(ad_tensor_copy(gy, ad_grad(vy)), AD_OK);
    ad_tape_free(tp);
    return v;
}

START_TEST(test_squared_error_and_mse_values)
{
    /* 2 samples of 3 outputs; squared differences 1,0,4 and 9,1,0 */
    ad_tensor *y = tu_f64(AD_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    ad_tensor *t = tu_f64(AD_SHAPE(2, 3), (const double[]){0, 2, 5, 1, 4, 6});
    ad_tensor *g = tu_f64(AD_SHAPE(2, 3), NULL);
    /* E = mean over samples of 1/2 sum: (5/2 + 10/2) / 2 = 3.75; dE/dy = (y - t) / 2 */
    TU_ASSERT_CLOSE(eval_loss(SE, y, t, NULL, g), 3.75, 1e-15, 0);
    tu_assert_values(g, (const double[]){0.5, 0, -1, 1.5, 0.5, 0}, 1e-15, 0);
    /* MSE = 15 / 6 = 2.5; dL/dy = 2 (y - t) / 6 */
    TU_ASSERT_CLOSE(eval_loss(MSE, y, t, NULL, g), 2.5, 1e-15, 0);
    tu_assert_values(g, (const double[]){1.0 / 3, 0, -2.0 / 3, 1, 1.0 / 3, 0}, 1e-15, 0);
    ad_tensor_free(y);
    ad_tensor_free(t);
    ad_tensor_free(g);
}
END_TEST

static double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

START_TEST(test_bce_values_and_extremes)
{
    const double z[4] = {0, 2, -3, 0.5}, tt[4] = {0.5, 1, 0, 0.25};
    ad_tensor *y = tu_f64(AD_SHAPE(2, 2), z);
    ad_tensor *t = tu_f64(AD_SHAPE(2, 2), tt);
    ad_tensor *g = tu_f64(AD_SHAPE(2, 2), NULL);
    double want = 0, gw[4];
    for (int i = 0; i < 4; i++) {
        want += (softplus(z[i]) - tt[i] * z[i]) / 4;
        gw[i] = (1 / (1 + exp(-z[i])) - tt[i]) / 4;
    }
    TU_ASSERT_CLOSE(eval_loss(BCE, y, t, NULL, g), want, 1e-15, 1e-14);
    tu_assert_values(g, gw, 1e-15, 1e-13);

    /* logits of +-1000, in both dtypes: finite loss and gradient */
    const double ze[4] = {1000, -1000, 1000, -1000}, te[4] = {1, 1, 0, 0};
    for (int f32 = 0; f32 < 2; f32++) {
        ad_tensor *ye = tu_f64(AD_SHAPE(4), ze), *tg = tu_f64(AD_SHAPE(4), te), *ge = tu_f64(AD_SHAPE(4), NULL);
        if (f32) {
            ad_tensor *a = tu_to_f32(ye), *b = tu_to_f32(tg);
            ad_tensor_free(ye);
            ad_tensor_free(tg);
            ye = a;
            tg = b;
        }
        double v = eval_loss(BCE, ye, tg, NULL, ge);
        ck_assert(isfinite(v));
        TU_ASSERT_CLOSE(v, (0 + 1000 + 1000 + 0) / 4.0, 1e-9, 1e-6);
        tu_assert_values(ge, (const double[]){0, -0.25, 0.25, 0}, 1e-12, 0);
        ad_tensor_free(ye);
        ad_tensor_free(tg);
        ad_tensor_free(ge);
    }
    ad_tensor_free(y);
    ad_tensor_free(t);
    ad_tensor_free(g);
}
END_TEST

START_TEST(test_cross_entropy_values_and_extremes)
{
    ad_tensor *z = tu_f64(AD_SHAPE(2, 3), (const double[]){1, 2, 3, 0, 0, 0});
    ad_tensor *g = tu_f64(AD_SHAPE(2, 3), NULL);
    const int64_t labels[2] = {2, 1};
    double lse = log(exp(1) + exp(2) + exp(3));
    TU_ASSERT_CLOSE(eval_loss(CE, z, NULL, labels, g), ((lse - 3) + log(3.0)) / 2, 1e-15, 1e-14);
    /* dL/dz = (softmax - onehot) / batch */
    double want[6];
    for (int j = 0; j < 3; j++) {
        want[j] = (exp(j + 1 - lse) - (j == 2)) / 2;
        want[3 + j] = (1.0 / 3 - (j == 1)) / 2;
    }
    tu_assert_values(g, want, 1e-15, 1e-13);

    /* logits of +-1e4 in both dtypes */
    for (int f32 = 0; f32 < 2; f32++) {
        ad_tensor *ze = tu_f64(AD_SHAPE(2, 3), (const double[]){1e4, -1e4, 0, -1e4, 1e4, 1e4});
        ad_tensor *ge = tu_f64(AD_SHAPE(2, 3), NULL);
        if (f32) {
            ad_tensor *a = tu_to_f32(ze);
            ad_tensor_free(ze);
            ze = a;
        }
        const int64_t lab[2] = {1, 0};
        /* sample 0: lse = 1e4, loss 2e4; sample 1: lse = 1e4 + log 2, loss 2e4 + log 2 */
        double v = eval_loss(CE, ze, NULL, lab, ge);
        ck_assert(isfinite(v));
        TU_ASSERT_CLOSE(v, 2e4 + log(2.0) / 2, 1e-9, 1e-6);
        tu_assert_values(ge, (const double[]){0.5, -0.5, 0, -0.5, 0.25, 0.25}, 1e-7, 0);
        ad_tensor_free(ze);
        ad_tensor_free(ge);
    }
    ad_tensor_free(z);
    ad_tensor_free(g);
}
END_TEST

/* ---- gradchecks, F64, through ad_gradcheck ---- */

START_TEST(test_gradchecks)
{
    const int64_t labels[4] = {0, 3, 1, 3};
    ad_tensor *y = tu_rand(AD_F64, AD_SHAPE(4, 4), -3, 3, 21);
    ad_tensor *t = tu_rand(AD_F64, AD_SHAPE(4, 4), -1, 1, 22);
    ad_tensor *p = tu_rand(AD_F64, AD_SHAPE(4, 4), 0, 1, 23); /* probabilities for BCE */
    for (int w = SE; w <= CE; w++) {
        loss_ctx c = {(which)w, labels};
        const ad_tensor *in[2] = {y, w == BCE ? p : t};
        ad_check_report rep;
        ad_status st = ad_gradcheck(loss_fn, &c, w == CE ? 1 : 2, in, NULL, &rep);
        if (st != AD_OK) ad_check_report_print(&rep, stderr);
        ck_assert_msg(st == AD_OK, "loss %d fails gradcheck", w);
        /* and second order (e.g. for Hessian-vector products of a loss) */
        st = ad_gradgradcheck(loss_fn, &c, w == CE ? 1 : 2, in, NULL, &rep);
        if (st != AD_OK) ad_check_report_print(&rep, stderr);
        ck_assert_msg(st == AD_OK, "loss %d fails gradgradcheck", w);
    }
    ad_tensor_free(y);
    ad_tensor_free(t);
    ad_tensor_free(p);
}
END_TEST

/* ---- errors recorded on the tape ---- */

START_TEST(test_errors)
{
    ad_tape *tp = ad_tape_new();
    ad_tensor *a = tu_f64(AD_SHAPE(2, 3), NULL), *b = tu_f64(AD_SHAPE(3, 2), NULL), *c = tu_f64(AD_SHAPE(3), NULL);

    ad_var l = nn_loss_mse(ad_const(tp, a), ad_const(tp, b));
    ck_assert(!ad_ok(l));
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_SHAPE);
    ck_assert_str_eq(ad_tape_error(tp), "nn_loss_mse: output [2,3] f64 and target [3,2] f64 differ");

    /* broadcastable but different shapes are still refused */
    ad_tape_reset(tp);
    l = nn_loss_squared_error(ad_const(tp, a), ad_const(tp, c));
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_SHAPE);

    ad_tape_reset(tp);
    l = nn_loss_cross_entropy(ad_const(tp, a), (const int64_t[]){0, 3});
    ck_assert(!ad_ok(l));
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_INDEX);
    ck_assert_str_eq(ad_tape_error(tp), "nn_loss_cross_entropy: label 3 of sample 1 is outside [0, 3)");

    ad_tape_reset(tp);
    l = nn_loss_cross_entropy(ad_const(tp, a), (const int64_t[]){-1, 0});
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_INDEX);

    ad_tape_reset(tp);
    l = nn_loss_cross_entropy(ad_const(tp, c), (const int64_t[]){0, 0, 0});
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_SHAPE);

    ad_tape_reset(tp);
    l = nn_loss_cross_entropy(ad_const(tp, a), NULL);
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_ARG);

    /* a stale var */
    ad_var old = ad_const(tp, a);
    ad_tape_reset(tp);
    l = nn_loss_bce_with_logits(old, ad_const(tp, a));
    ck_assert(!ad_ok(l));
    ck_assert_int_eq(ad_tape_status(tp), AD_ERR_STATE);

    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(c);
    ad_tape_free(tp);
}
END_TEST

static Suite *nn_loss_suite(void)
{
    Suite *s = suite_create("nn_loss");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_squared_error_and_mse_values);
    tcase_add_test(core, test_bce_values_and_extremes);
    tcase_add_test(core, test_cross_entropy_values_and_extremes);
    tcase_add_test(core, test_gradchecks);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_errors);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_loss_suite()); }

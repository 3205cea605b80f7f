/* test_nn_module.c: modules (linear, activations, sequential, MLP), parameter names, initializers, failure safety. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

/* ---- linear ---- */

START_TEST(test_linear_forward)
{
    /* y = x W^T + b, checked against a hand computation */
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *l = nn_linear_ex(3, 2, true, NN_INIT_ZEROS, 0, AD_F64, &rng, NULL);
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(nn_module_kind(l), "linear");
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(l, &ps), 2);
    ck_assert_str_eq(ps[0].name, "weight");
    ck_assert_str_eq(ps[1].name, "bias");
    tu_assert_shape(ps[0].value, AD_SHAPE(2, 3));
    tu_assert_shape(ps[1].value, AD_SHAPE(2));
    const double w[6] = {1, 2, 3, -1, 0.5, 0}, b[2] = {0.25, -2};
    for (int i = 0; i < 6; i++) ad_tensor_set(ps[0].value, i, w[i]);
    for (int i = 0; i < 2; i++) ad_tensor_set(ps[1].value, i, b[i]);
    ck_assert_int_eq(nn_module_num_weights(l), 8);

    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_f64(AD_SHAPE(2, 3), (const double[]){1, 0, -1, 2, 2, 2});
    ad_var y = nn_forward(l, t, ad_const(t, x));
    ck_assert(ad_ok(y));
    tu_assert_shape(ad_value(y), AD_SHAPE(2, 2));
    /* row 0: [1-3+0.25, -1+0+(-2)] ; row 1: [12+0.25, -2+1-2] */
    tu_assert_values(ad_value(y), (const double[]){-1.75, -3, 12.25, -3}, 1e-12, 0);

    /* backward accumulates into the module's grads: dL/dW = gy^T x, dL/db = sum gy */
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    tu_assert_values(ps[0].grad, (const double[]){3, 2, 1, 3, 2, 1}, 1e-12, 0);
    tu_assert_values(ps[1].grad, (const double[]){2, 2}, 1e-12, 0);
    nn_zero_grad(l);
    tu_assert_values(ps[1].grad, (const double[]){0, 0}, 0, 0);

    /* a wrong input width is a shape error on the tape naming the matmul */
    ad_tape_reset(t);
    ad_tensor *bad = tu_f64(AD_SHAPE(2, 4), NULL);
    y = nn_forward(l, t, ad_const(t, bad));
    ck_assert(!ad_ok(y));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "matmul"));

    ad_tensor_free(bad);
    ad_tensor_free(x);
    ad_tape_free(t);
    nn_module_free(l);
}
END_TEST

/* f(x, W, b) = sum(tanh(x W^T + b)) + sum(sin(l(x))) for a module l with fixed weights. */
typedef struct lin_ctx {
    nn_module *l;
} lin_ctx;

static ad_var lin_fn(ad_tape *t, const ad_var *in, void *ctx)
{
    lin_ctx *c = ctx;
    ad_var y = ad_add(ad_matmul_t(in[0], in[1], false, true), in[2]);
    ad_var ym = nn_forward(c->l, t, in[0]);
    return ad_add(ad_sum(ad_tanh(y)), ad_sum(ad_sin(ym)));
}

START_TEST(test_linear_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    lin_ctx c = {nn_linear_ex(4, 3, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, NULL)};
    ck_assert_ptr_nonnull(c.l);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(5, 4), -1, 1, 11);
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 12);
    ad_tensor *b = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 13);
    const ad_tensor *in[3] = {x, w, b};
    ad_check_report rep;
    ad_status st = ad_gradcheck(lin_fn, &c, 3, in, NULL, &rep);
    if (st != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_int_eq(st, AD_OK);
    ad_tensor_free(x);
    ad_tensor_free(w);
    ad_tensor_free(b);
    nn_module_free(c.l);
}
END_TEST

/* ---- activations ---- */

START_TEST(test_activations)
{
    const double xs[4] = {-2, -0.5, 0.5, 3};
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_f64(AD_SHAPE(1, 4), xs);
    for (int a = NN_IDENTITY; a < NN_ACT_COUNT; a++) {
        nn_module *m = nn_activation((nn_act)a, NULL);
        ck_assert_ptr_nonnull(m);
        ck_assert_str_eq(nn_module_kind(m), nn_act_name((nn_act)a));
        nn_act back;
        ck_assert(nn_act_from_name(nn_act_name((nn_act)a), &back));
        ck_assert_int_eq(back, a);
        ck_assert_int_eq(nn_module_params(m, NULL), 0);
        ad_tape_reset(t);
        ad_var y = nn_forward(m, t, ad_const(t, x));
        ck_assert(ad_ok(y));
        double z = 0;
        for (int i = 0; i < 4; i++) z += exp(xs[i]);
        for (int i = 0; i < 4; i++) {
            double v = xs[i], want = 0;
            switch ((nn_act)a) {
            case NN_IDENTITY: want = v; break;
            case NN_SIGMOID: want = 1 / (1 + exp(-v)); break;
            case NN_TANH: want = tanh(v); break;
            case NN_RELU: want = v > 0 ? v : 0; break;
            case NN_LEAKY_RELU: want = v > 0 ? v : 0.01 * v; break;
            case NN_GELU: want = 0.5 * v * (1 + erf(v / sqrt(2.0))); break;
            case NN_SOFTMAX: want = exp(v) / z; break;
            case NN_ACT_COUNT: ck_abort_msg("NN_ACT_COUNT is not an activation");
            }
            TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), i), want, 1e-12, 1e-12);
        }
        nn_module_free(m);
    }
    nn_act a;
    ck_assert(nn_act_from_name("logistic", &a));
    ck_assert_int_eq(a, NN_SIGMOID);
    ck_assert(!nn_act_from_name("swish", &a));
    ck_assert_ptr_null(nn_activation((nn_act)99, NULL));
    nn_module *lk = nn_activation_ex(NN_LEAKY_RELU, 0.2, NULL);
    ad_tape_reset(t);
    ad_var y = nn_forward(lk, t, ad_const(t, x));
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), 0), -0.4, 1e-15, 0);
    nn_module_free(lk);
    ad_tensor_free(x);
    ad_tape_free(t);
}
END_TEST

/* ---- sequential and MLP ---- */

START_TEST(test_mlp_names_and_shapes)
{
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    nn_module *m = nn_mlp(4, (const int64_t[]){6, 5, 4, 3}, NN_TANH, &rng, NULL);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(nn_module_kind(m), "sequential");
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    ck_assert_int_eq(n, 6);
    const char *names[6] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};
    const int64_t shapes[6][2] = {{5, 6}, {5, 0}, {4, 5}, {4, 0}, {3, 4}, {3, 0}};
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(ps[i].name, names[i]);
        ck_assert_ptr_nonnull(ps[i].grad);
        ck_assert_int_eq(ps[i].value->dtype, AD_F32);
        ck_assert_int_eq(ps[i].value->shape[0], shapes[i][0]);
        if (i % 2 == 0) ck_assert_int_eq(ps[i].value->shape[1], shapes[i][1]);
        ck_assert_ptr_eq(nn_module_param(m, names[i]), &ps[i]);
    }
    ck_assert_ptr_null(nn_module_param(m, "1.weight"));
    ck_assert_int_eq(nn_module_num_weights(m), 5 * 6 + 5 + 4 * 5 + 4 + 3 * 4 + 3);

    /* forward of a batch: [7, 6] -> [7, 3] */
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(7, 6), -1, 1, 9);
    ad_var y = nn_forward(m, t, ad_const(t, x));
    ck_assert(ad_ok(y));
    tu_assert_shape(ad_value(y), AD_SHAPE(7, 3));

    /* the same seed gives the same weights; another seed different ones */
    ad_rng_seed(&rng, 5);
    nn_module *m2 = nn_mlp(4, (const int64_t[]){6, 5, 4, 3}, NN_TANH, &rng, NULL);
    nn_param *ps2;
    nn_module_params(m2, &ps2);
    ck_assert_mem_eq(ps[0].value->data, ps2[0].value->data, 30 * sizeof(float));
    ad_rng_seed(&rng, 6);
    nn_module *m3 = nn_mlp(4, (const int64_t[]){6, 5, 4, 3}, NN_TANH, &rng, NULL);
    nn_param *ps3;
    nn_module_params(m3, &ps3);
    ck_assert(memcmp(ps[0].value->data, ps3[0].value->data, 30 * sizeof(float)) != 0);

    /* nesting prefixes the names again */
    nn_module *outer = nn_sequential(2, (nn_module *[]){m2, nn_activation(NN_RELU, NULL)}, NULL);
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(nn_module_param(outer, "0.4.bias"));
    nn_module_set_training(outer, false);
    ck_assert(!nn_module_training(outer));
    ck_assert(!nn_module_training(m2));

    /* bad arguments */
    ck_assert_ptr_null(nn_mlp(1, (const int64_t[]){3}, NN_RELU, &rng, NULL));
    ck_assert_ptr_null(nn_mlp(2, (const int64_t[]){3, 0}, NN_RELU, &rng, NULL));
    ck_assert_ptr_null(nn_linear(0, 3, &rng, NULL));
    ck_assert_ptr_null(nn_sequential(0, NULL, NULL));

    ad_tensor_free(x);
    ad_tape_free(t);
    nn_module_free(outer);
    nn_module_free(m3);
    nn_module_free(m);
}
END_TEST

START_TEST(test_sequential_takes_ownership_on_failure)
{
    /* a NULL among the modules: the others are freed (ASan/valgrind see no leak) */
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *s = nn_sequential(3, (nn_module *[]){nn_linear(2, 2, &rng, NULL), NULL, nn_activation(NN_RELU, NULL)}, NULL);
    ck_assert_ptr_null(s);
    nn_module_free(NULL);
}
END_TEST

/* ---- initializers ---- */

static void moments(const ad_tensor *w, double *mean, double *std, double *maxabs)
{
    double s = 0, s2 = 0, m = 0;
    for (int64_t i = 0; i < w->size; i++) {
        double v = ad_tensor_get(w, i);
        s += v;
        s2 += v * v;
        if (fabs(v) > m) m = fabs(v);
    }
    *mean = s / (double)w->size;
    *std = sqrt(s2 / (double)w->size - *mean * *mean);
    *maxabs = m;
}

START_TEST(test_initializers)
{
    ad_rng rng;
    ad_rng_seed(&rng, 77);
    ad_tensor *w = ad_tensor_new(AD_F64, AD_SHAPE(200, 300));
    int64_t fi, fo;
    ck_assert_int_eq(nn_init_fans(w, &fi, &fo, NULL), AD_OK);
    ck_assert_int_eq(fi, 300);
    ck_assert_int_eq(fo, 200);
    double mean, std, mx;

    ck_assert_int_eq(nn_init_tensor(w, NN_INIT_XAVIER_UNIFORM, 1.0, &rng, NULL), AD_OK);
    moments(w, &mean, &std, &mx);
    double a = sqrt(6.0 / 500.0);
    ck_assert(mx <= a);
    ck_assert(mx > 0.99 * a);
    TU_ASSERT_CLOSE(std, a / sqrt(3.0), 0, 0.02);
    ck_assert(fabs(mean) < 0.005);

    ck_assert_int_eq(nn_init_tensor(w, NN_INIT_XAVIER_NORMAL, 2.0, &rng, NULL), AD_OK);
    moments(w, &mean, &std, &mx);
    TU_ASSERT_CLOSE(std, 2.0 * sqrt(2.0 / 500.0), 0, 0.02);

    ck_assert_int_eq(nn_init_tensor(w, NN_INIT_HE_UNIFORM, 0, &rng, NULL), AD_OK); /* gain 0: sqrt 2 */
    moments(w, &mean, &std, &mx);
    a = sqrt(6.0 / 300.0);
    ck_assert(mx <= a);
    ck_assert(mx > 0.99 * a);

    ck_assert_int_eq(nn_init_tensor(w, NN_INIT_HE_NORMAL, 0, &rng, NULL), AD_OK);
    moments(w, &mean, &std, &mx);
    TU_ASSERT_CLOSE(std, sqrt(2.0 / 300.0), 0, 0.02);

    ck_assert_int_eq(nn_init_tensor(w, NN_INIT_ZEROS, 0, NULL, NULL), AD_OK);
    moments(w, &mean, &std, &mx);
    ck_assert(mx == 0);

    /* a convolution-shaped weight: the receptive field multiplies both fans */
    ad_tensor *k = ad_tensor_new(AD_F32, AD_SHAPE(8, 3, 5, 5));
    ck_assert_int_eq(nn_init_fans(k, &fi, &fo, NULL), AD_OK);
    ck_assert_int_eq(fi, 75);
    ck_assert_int_eq(fo, 200);
    ck_assert_int_eq(nn_init_tensor(k, NN_INIT_HE_UNIFORM, 0, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(nn_init_tensor(NULL, NN_INIT_HE_NORMAL, 0, &rng, NULL), AD_ERR_ARG);

    TU_ASSERT_CLOSE(nn_init_gain(NN_TANH), 5.0 / 3.0, 1e-15, 0);
    TU_ASSERT_CLOSE(nn_init_gain(NN_RELU), sqrt(2.0), 1e-15, 0);
    TU_ASSERT_CLOSE(nn_init_gain(NN_SIGMOID), 1.0, 0, 0);
    ad_tensor_free(k);
    ad_tensor_free(w);
}
END_TEST

/* ---- allocation failure: every allocation of a constructor may fail, nothing leaks ---- */

typedef struct failing_alloc {
    long countdown; /* allocations left before failing; < 0: never fail */
    long live;      /* blocks outstanding */
} failing_alloc;

static void *fail_alloc(void *ud, void *ptr, size_t n)
{
    failing_alloc *f = ud;
    if (n == 0) {
        if (ptr) f->live--;
        free(ptr);
        return NULL;
    }
    if (f->countdown == 0) return NULL;
    if (f->countdown > 0) f->countdown--;
    void *p = realloc(ptr, n);
    if (p && !ptr) f->live++;
    return p;
}

START_TEST(test_construction_failure_sweep)
{
    failing_alloc f = {-1, 0};
    ad_set_allocator(fail_alloc, &f);
    int successes = 0;
    for (long k = 0; k < 400 && successes < 2; k++) {
        f.countdown = k;
        ad_rng rng;
        ad_rng_seed(&rng, 1);
        nn_module *m = nn_mlp(4, (const int64_t[]){5, 4, 3, 2}, NN_RELU, &rng, NULL);
        nn_optim *o = m ? nn_adam(m, 1e-3, 0.9, 0.999, 1e-8, 0, NULL) : NULL;
        nn_optim *s = m ? nn_sgd(m, 0.1, 0.9, 0, true, NULL) : NULL;
        if (m && o && s) successes++;
        nn_optim_free(s);
        nn_optim_free(o);
        nn_module_free(m);
        ck_assert_msg(f.live == 0, "failing allocation %ld leaked %ld blocks", k, f.live);
    }
    ad_set_allocator(NULL, NULL);
    ck_assert_int_eq(successes, 2);
}
END_TEST

static Suite *nn_module_suite(void)
{
    Suite *s = suite_create("nn_module");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_linear_forward);
    tcase_add_test(core, test_linear_gradcheck);
    tcase_add_test(core, test_activations);
    tcase_add_test(core, test_mlp_names_and_shapes);
    tcase_add_test(core, test_sequential_takes_ownership_on_failure);
    tcase_add_test(core, test_initializers);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_construction_failure_sweep);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_module_suite()); }

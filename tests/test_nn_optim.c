/* test_nn_optim.c: optimizers against hand-computed updates (PyTorch's formulas), NaN guards, lr schedules. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

#define NP 3 /* a linear 2 -> 1 with bias: 3 scalars */

/* A F64 linear 2 -> 1 with weights p0 and grads set by hand per step. */
static nn_module *small_module(const double *p0)
{
    nn_module *l = nn_linear_ex(2, 1, true, NN_INIT_ZEROS, 0, AD_F64, NULL, NULL);
    ck_assert_ptr_nonnull(l);
    nn_param *ps;
    nn_module_params(l, &ps);
    ad_tensor_set(ps[0].value, 0, p0[0]);
    ad_tensor_set(ps[0].value, 1, p0[1]);
    ad_tensor_set(ps[1].value, 0, p0[2]);
    return l;
}

static void set_grads(nn_module *l, const double *g)
{
    nn_param *ps;
    nn_module_params(l, &ps);
    ad_tensor_set(ps[0].grad, 0, g[0]);
    ad_tensor_set(ps[0].grad, 1, g[1]);
    ad_tensor_set(ps[1].grad, 0, g[2]);
}

static void get_params(nn_module *l, double *p)
{
    nn_param *ps;
    nn_module_params(l, &ps);
    p[0] = ad_tensor_get(ps[0].value, 0);
    p[1] = ad_tensor_get(ps[0].value, 1);
    p[2] = ad_tensor_get(ps[1].value, 0);
}

static const double P0[NP] = {0.5, -1.0, 0.25};
static const double G[3][NP] = {{0.1, -0.2, 0.3}, {-0.4, 0.05, 0.3}, {0.2, 0.2, -0.1}};

/* The reference SGD, written out as in torch.optim.SGD's documentation. */
static void ref_sgd(double *p, double lr, double mu, double wd, bool nesterov, int steps)
{
    double buf[NP] = {0};
    for (int t = 0; t < steps; t++)
        for (int i = 0; i < NP; i++) {
            double g = G[t][i] + wd * p[i];
            if (mu != 0) {
                buf[i] = t == 0 ? g : mu * buf[i] + g;
                g = nesterov ? g + mu * buf[i] : buf[i];
            }
            p[i] -= lr * g;
        }
}

/* The reference Adam/AdamW, as in torch.optim.Adam's and AdamW's documentation. */
static void ref_adam(double *p, double lr, double b1, double b2, double eps, double wd, bool decoupled, int steps)
{
    double m[NP] = {0}, v[NP] = {0};
    for (int t = 1; t <= steps; t++)
        for (int i = 0; i < NP; i++) {
            double g = G[t - 1][i];
            if (decoupled)
                p[i] -= lr * wd * p[i];
            else
                g += wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            double mhat = m[i] / (1 - pow(b1, t)), vhat = v[i] / (1 - pow(b2, t));
            p[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
}

typedef struct sgd_case {
    double lr, mu, wd;
    bool nesterov;
} sgd_case;

static const sgd_case sgd_cases[] = {
    {0.1, 0, 0, false}, {0.1, 0.9, 0, false}, {0.05, 0.9, 0, true}, {0.1, 0.5, 0.01, false}, {0.2, 0.8, 0.1, true},
};

START_TEST(test_sgd_against_reference)
{
    const sgd_case *c = &sgd_cases[_i];
    nn_module *l = small_module(P0);
    nn_optim *o = nn_sgd(l, c->lr, c->mu, c->wd, c->nesterov, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(nn_optim_name(o), "sgd");
    for (int steps = 1; steps <= 3; steps++) {
        set_grads(l, G[steps - 1]);
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
        double want[NP], got[NP];
        memcpy(want, P0, sizeof want);
        ref_sgd(want, c->lr, c->mu, c->wd, c->nesterov, steps);
        get_params(l, got);
        for (int i = 0; i < NP; i++) TU_ASSERT_CLOSE(got[i], want[i], 1e-15, 1e-14);
    }
    ck_assert_int_eq(nn_optim_steps(o), 3);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_sgd_hand_numbers)
{
    /* two steps with momentum 0.9 written out: p0 = 0.5, g = 0.1 then -0.4, lr 0.1
    ** step 1: buf = 0.1, p = 0.5 - 0.01 = 0.49
    ** step 2: buf = 0.09 - 0.4 = -0.31, p = 0.49 + 0.031 = 0.521 */
    nn_module *l = small_module(P0);
    nn_optim *o = nn_sgd(l, 0.1, 0.9, 0, false, NULL);
    double p[NP];
    set_grads(l, G[0]);
    nn_optim_step(o, NULL);
    get_params(l, p);
    TU_ASSERT_CLOSE(p[0], 0.49, 1e-15, 0);
    set_grads(l, G[1]);
    nn_optim_step(o, NULL);
    get_params(l, p);
    TU_ASSERT_CLOSE(p[0], 0.521, 1e-15, 0);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

typedef struct adam_case {
    double lr, b1, b2, eps, wd;
    bool decoupled;
} adam_case;

static const adam_case adam_cases[] = {
    {1e-3, 0.9, 0.999, 1e-8, 0, false}, {0.1, 0.9, 0.999, 1e-8, 0, false},  {0.01, 0.5, 0.9, 1e-3, 0.1, false},
    {0.01, 0.9, 0.99, 1e-8, 0.1, true}, {0.05, 0.8, 0.999, 1e-6, 0.5, true},
};

START_TEST(test_adam_against_reference)
{
    const adam_case *c = &adam_cases[_i];
    nn_module *l = small_module(P0);
    nn_optim *o = c->decoupled ? nn_adamw(l, c->lr, c->b1, c->b2, c->eps, c->wd, NULL)
                               : nn_adam(l, c->lr, c->b1, c->b2, c->eps, c->wd, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(nn_optim_name(o), c->decoupled ? "adamw" : "adam");
    for (int steps = 1; steps <= 3; steps++) {
        set_grads(l, G[steps - 1]);
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
        double want[NP], got[NP];
        memcpy(want, P0, sizeof want);
        ref_adam(want, c->lr, c->b1, c->b2, c->eps, c->wd, c->decoupled, steps);
        get_params(l, got);
        for (int i = 0; i < NP; i++) TU_ASSERT_CLOSE(got[i], want[i], 1e-15, 1e-13);
    }
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_adam_first_step_is_lr_times_sign)
{
    /* after one step m_hat = g and v_hat = g^2, so p moves by lr g / (|g| + eps) */
    nn_module *l = small_module(P0);
    nn_optim *o = nn_adam(l, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    set_grads(l, G[0]);
    nn_optim_step(o, NULL);
    double p[NP];
    get_params(l, p);
    for (int i = 0; i < NP; i++) TU_ASSERT_CLOSE(p[i], P0[i] - 0.01 * G[0][i] / (fabs(G[0][i]) + 1e-8), 1e-15, 1e-12);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_f32_params)
{
    /* F32 parameters follow the same formulas, rounded once per update */
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_module *l = nn_linear_ex(2, 1, true, NN_INIT_ZEROS, 0, AD_F32, NULL, NULL);
    nn_param *ps;
    nn_module_params(l, &ps);
    ad_tensor_set(ps[0].value, 0, 0.5);
    nn_optim *o = nn_adam(l, 0.01, 0.9, 0.999, 1e-8, 0, NULL);
    ad_tensor_set(ps[0].grad, 0, 0.1);
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
    TU_ASSERT_CLOSE(ad_tensor_get(ps[0].value, 0), 0.49, 1e-7, 0);
    /* a zero gradient leaves the bias where it was */
    TU_ASSERT_CLOSE(ad_tensor_get(ps[1].value, 0), 0.0, 0, 0);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_nonfinite_gradient_refused)
{
    nn_module *l = small_module(P0);
    nn_optim *o = nn_sgd(l, 0.1, 0.9, 0, false, NULL);
    double g[NP] = {0.1, NAN, 0.2};
    set_grads(l, g);
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_ERR_NUMERIC);
    double p[NP];
    get_params(l, p);
    for (int i = 0; i < NP; i++) ck_assert(p[i] == P0[i]);
    ck_assert_int_eq(nn_optim_steps(o), 0);
    g[1] = INFINITY;
    set_grads(l, g);
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_ERR_NUMERIC);
    nn_zero_grad(l);
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
    ck_assert_int_eq(nn_optim_step(NULL, NULL), AD_ERR_ARG);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_bad_hyperparameters)
{
    nn_module *l = small_module(P0);
    ck_assert_ptr_null(nn_sgd(l, -1, 0, 0, false, NULL));
    ck_assert_ptr_null(nn_sgd(l, 0.1, 0, 0, true, NULL)); /* Nesterov needs momentum */
    ck_assert_ptr_null(nn_sgd(l, NAN, 0, 0, false, NULL));
    ck_assert_ptr_null(nn_adam(l, 0.1, 1.0, 0.999, 1e-8, 0, NULL));
    ck_assert_ptr_null(nn_adamw(l, 0.1, 0.9, -0.1, 1e-8, 0, NULL));
    ck_assert_ptr_null(nn_adam(NULL, 0.1, 0.9, 0.999, 1e-8, 0, NULL));
    nn_optim *o = nn_sgd(l, 0.1, 0, 0, false, NULL);
    nn_optim_set_lr(o, 0.5);
    TU_ASSERT_CLOSE(nn_optim_lr(o), 0.5, 0, 0);
    nn_optim_set_lr(o, -1); /* ignored */
    TU_ASSERT_CLOSE(nn_optim_lr(o), 0.5, 0, 0);
    nn_optim_free(o);
    nn_module_free(l);
}
END_TEST

START_TEST(test_schedules)
{
    nn_schedule s = nn_schedule_step(0.1, 3, 0.5);
    TU_ASSERT_CLOSE(nn_schedule_lr(&s, 0), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&s, 2), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&s, 3), 0.05, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&s, 7), 0.025, 1e-17, 0);
    nn_schedule c = nn_schedule_cosine(0.1, 10, 0.001);
    TU_ASSERT_CLOSE(nn_schedule_lr(&c, 0), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&c, 5), 0.001 + 0.099 * 0.5, 1e-15, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&c, 10), 0.001, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_schedule_lr(&c, 20), 0.001, 1e-17, 0);
    double prev = 1;
    for (int e = 0; e <= 10; e++) {
        double lr = nn_schedule_lr(&c, e);
        ck_assert(lr <= prev);
        prev = lr;
    }
    nn_schedule k = {NN_SCHED_CONSTANT, 0.3, 0, 0, 0, 0};
    TU_ASSERT_CLOSE(nn_schedule_lr(&k, 100), 0.3, 0, 0);
}
END_TEST

static Suite *nn_optim_suite(void)
{
    Suite *s = suite_create("nn_optim");
    TCase *core = tcase_create("core");
    tcase_add_loop_test(core, test_sgd_against_reference, 0, (int)(sizeof sgd_cases / sizeof sgd_cases[0]));
    tcase_add_test(core, test_sgd_hand_numbers);
    tcase_add_loop_test(core, test_adam_against_reference, 0, (int)(sizeof adam_cases / sizeof adam_cases[0]));
    tcase_add_test(core, test_adam_first_step_is_lr_times_sign);
    tcase_add_test(core, test_f32_params);
    tcase_add_test(core, test_schedules);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_nonfinite_gradient_refused);
    tcase_add_test(errors, test_bad_hyperparameters);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_optim_suite()); }

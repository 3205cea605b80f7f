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

/* Adam counts each parameter's own updates (PyTorch's per-parameter step): one frozen for five
** steps, then unfrozen, moves as a fresh Adam's first step; one added in a group later, likewise;
** the counts are state ("optim.<name>.step"). */
START_TEST(test_adam_steps_per_parameter)
{
    ad_tensor *v[4], *g[4];
    nn_param ps[4];
    static const char *const names[4] = {"a", "b", "c", "ref"};
    for (int i = 0; i < 4; i++) {
        v[i] = tu_f64(AD_SHAPE(3), (const double[]){1, -2, 0.5});
        g[i] = tu_f64(AD_SHAPE(3), (const double[]){0.5, -0.25, 2});
        ps[i] = (nn_param){names[i], v[i], g[i], true};
    }
    nn_error e = {0};
    for (int kind = 0; kind < 2; kind++) {
        const char *k = kind ? "adamw" : "adam";
        for (int i = 0; i < 4; i++) ad_tensor_copy(v[i], v[3]);
        nn_optim_opts o = nn_optim_defaults(k);
        o.lr = 0.01;
        nn_optim *opt = nn_optim_new(k, 2, (nn_param *[]){&ps[0], &ps[1]}, &o, &e);
        ck_assert_msg(opt != NULL, "%s", e.message);
        ps[1].requires_grad = false;
        for (int s = 0; s < 5; s++) ck_assert_int_eq(nn_optim_step(opt, &e), AD_OK);
        ps[1].requires_grad = true;
        ck_assert_int_eq(nn_optim_add_group(opt, 1, (nn_param *[]){&ps[2]}, 0.01, o.weight_decay, &e), AD_OK);
        ck_assert_int_eq(nn_optim_step(opt, &e), AD_OK);
        /* b and c took their first step: as a fresh optimizer's first step on ref */
        nn_optim *fresh = nn_optim_new(k, 1, (nn_param *[]){&ps[3]}, &o, &e);
        ck_assert_int_eq(nn_optim_step(fresh, &e), AD_OK);
        ck_assert_mem_eq(v[1]->data, v[3]->data, 3 * sizeof(double));
        ck_assert_mem_eq(v[2]->data, v[3]->data, 3 * sizeof(double));
        ck_assert_msg(memcmp(v[0]->data, v[3]->data, 3 * sizeof(double)) != 0, "a took six steps");
        /* the counts, as state */
        const char *sn[16];
        ad_tensor *st[16];
        int n = nn_optim_state(opt, 16, sn, st), seen = 0;
        for (int i = 0; i < n; i++) {
            double want = strcmp(sn[i], "optim.a.step") == 0 ? 6 : strcmp(sn[i], "optim.step") == 0 ? 6 : 1;
            if (strcmp(sn[i] + strlen(sn[i]) - 5, ".step") != 0) continue;
            ck_assert_msg(ad_tensor_get(st[i], 0) == want, "%s: %g", sn[i], ad_tensor_get(st[i], 0));
            seen++;
        }
        ck_assert_int_eq(seen, 4); /* optim.step, a, b, c */
        ck_assert_int_eq(nn_optim_steps(opt), 6);
        nn_optim_free(fresh);
        nn_optim_free(opt);
    }
    for (int i = 0; i < 4; i++) {
        ad_tensor_free(v[i]);
        ad_tensor_free(g[i]);
    }
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
    nn_error e;
    nn_sched_opts o = nn_sched_defaults(0.1, 10);
    o.step_size = 3, o.gamma = 0.5;
    nn_sched *s = nn_sched_new("step", &o, &e);
    ck_assert_msg(s != NULL, "%s", e.message);
    ck_assert_str_eq(nn_sched_name(s), "step");
    TU_ASSERT_CLOSE(nn_sched_lr(s, 0), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 2), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 3), 0.05, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 7), 0.025, 1e-17, 0);
    nn_sched_free(s);
    o = nn_sched_defaults(0.1, 10);
    o.min_lr = 0.001;
    s = nn_sched_new("cosine", &o, &e);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 0), 0.1, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 5), 0.001 + 0.099 * 0.5, 1e-15, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 10), 0.001, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 20), 0.001, 1e-17, 0);
    double prev = 1;
    for (int k = 0; k <= 10; k++) {
        double lr = nn_sched_lr(s, k);
        ck_assert(lr <= prev);
        prev = lr;
    }
    nn_sched_free(s);
    /* warmup: linear up to lr at step W - 1, then cosine down over T - W */
    o = nn_sched_defaults(0.2, 100);
    o.warmup_steps = 10;
    s = nn_sched_new("warmup_cosine", &o, &e);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 0), 0.02, 1e-17, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 4), 0.1, 1e-16, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 9), 0.2, 1e-16, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 10), 0.2, 1e-16, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 55), 0.1, 1e-15, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 100), 0.0, 1e-17, 0);
    nn_sched_free(s);
    /* one-cycle as torch.optim.lr_scheduler.OneCycleLR (cos): max_lr 1, 100 steps, pct_start 0.3 */
    o = nn_sched_defaults(1.0, 100);
    s = nn_sched_new("onecycle", &o, &e);
    ck_assert_msg(s != NULL, "%s", e.message);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 0), 1.0 / 25, 1e-15, 0);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 29), 1.0, 1e-15, 0); /* the peak at pct_start T - 1 */
    TU_ASSERT_CLOSE(nn_sched_lr(s, 99), 1.0 / 25 / 1e4, 1e-15, 0);
    double up = 0, down = 2;
    for (int k = 0; k <= 29; k++) {
        ck_assert(nn_sched_lr(s, k) >= up);
        up = nn_sched_lr(s, k);
    }
    for (int k = 29; k < 100; k++) {
        ck_assert(nn_sched_lr(s, k) <= down);
        down = nn_sched_lr(s, k);
    }
    nn_sched_free(s);
    o = nn_sched_defaults(0.3, 5);
    s = nn_sched_new("constant", &o, &e);
    TU_ASSERT_CLOSE(nn_sched_lr(s, 100), 0.3, 0, 0);
    nn_sched_free(s);
    /* bad ones say why */
    ck_assert_ptr_null(nn_sched_new("linear", &o, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "unknown kind 'linear'"));
    o.warmup_steps = 9;
    ck_assert_ptr_null(nn_sched_new("warmup_cosine", &o, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "warmup_steps"));
    ck_assert(isnan(nn_sched_lr(NULL, 0)));
}
END_TEST


/* The reference RMSprop, as in torch.optim.RMSprop's documentation. */
static void ref_rmsprop(double *p, double lr, double alpha, double eps, double wd, double mu, bool centered, int steps)
{
    double v[NP] = {0}, buf[NP] = {0}, avg[NP] = {0};
    for (int t = 0; t < steps; t++)
        for (int i = 0; i < NP; i++) {
            double g = G[t][i] + wd * p[i];
            v[i] = alpha * v[i] + (1 - alpha) * g * g;
            double den = v[i];
            if (centered) {
                avg[i] = alpha * avg[i] + (1 - alpha) * g;
                den -= avg[i] * avg[i];
            }
            den = sqrt(den) + eps;
            if (mu > 0) {
                buf[i] = mu * buf[i] + g / den;
                p[i] -= lr * buf[i];
            } else {
                p[i] -= lr * g / den;
            }
        }
}

typedef struct rms_case {
    double lr, alpha, eps, wd, mu;
    bool centered;
} rms_case;

static const rms_case rms_cases[] = {
    {0.01, 0.99, 1e-8, 0, 0, false}, {0.05, 0.9, 1e-6, 0.1, 0, false}, {0.01, 0.99, 1e-8, 0, 0.9, false},
    {0.02, 0.95, 1e-8, 0.01, 0.5, true},
};

START_TEST(test_rmsprop_against_reference)
{
    const rms_case *c = &rms_cases[_i];
    nn_module *l = small_module(P0);
    nn_optim_opts o = nn_optim_defaults("rmsprop");
    o.lr = c->lr, o.alpha = c->alpha, o.eps = c->eps, o.weight_decay = c->wd, o.momentum = c->mu;
    o.centered = c->centered;
    nn_error e;
    nn_optim *opt = nn_optim_for("rmsprop", l, &o, &e);
    ck_assert_msg(opt != NULL, "%s", e.message);
    ck_assert_str_eq(nn_optim_name(opt), "rmsprop");
    for (int steps = 1; steps <= 3; steps++) {
        set_grads(l, G[steps - 1]);
        ck_assert_int_eq(nn_optim_step(opt, &e), AD_OK);
        double want[NP], got[NP];
        memcpy(want, P0, sizeof want);
        ref_rmsprop(want, c->lr, c->alpha, c->eps, c->wd, c->mu, c->centered, steps);
        get_params(l, got);
        for (int i = 0; i < NP; i++) TU_ASSERT_CLOSE(got[i], want[i], 1e-15, 1e-13);
    }
    nn_optim_free(opt);
    nn_module_free(l);
}
END_TEST

/* Parameter groups: each its own lr and decay, both scaled alike by nn_optim_set_lr; the
** optimizer works over parameters that belong to no module. */
START_TEST(test_param_groups)
{
    nn_error e;
    ad_tensor *v[2], *g[2];
    nn_param ps[2];
    for (int i = 0; i < 2; i++) {
        v[i] = tu_f64(AD_SHAPE(2), (const double[]){1, -2});
        g[i] = tu_f64(AD_SHAPE(2), (const double[]){0.5, 0.25});
        ps[i] = (nn_param){i ? "fast" : "slow", v[i], g[i], true};
    }
    nn_optim_opts o = nn_optim_defaults("sgd");
    o.lr = 0.1;
    nn_optim *opt = nn_optim_new("sgd", 1, (nn_param *[]){&ps[0]}, &o, &e);
    ck_assert_msg(opt != NULL, "%s", e.message);
    ck_assert_int_eq(nn_optim_add_group(opt, 1, (nn_param *[]){&ps[1]}, 1.0, 0.5, &e), AD_OK);
    ck_assert_int_eq(nn_optim_num_groups(opt), 2);
    ck_assert_int_eq(nn_optim_step(opt, &e), AD_OK);
    /* slow: p -= 0.1 g; fast: p -= 1.0 (g + 0.5 p) */
    tu_assert_values(v[0], (const double[]){1 - 0.05, -2 - 0.025}, 1e-15, 0);
    tu_assert_values(v[1], (const double[]){1 - (0.5 + 0.5), -2 - (0.25 - 1.0)}, 1e-15, 0);
    nn_optim_set_lr(opt, 0.05); /* a schedule halves the base: every group halves */
    TU_ASSERT_CLOSE(nn_optim_group_lr(opt, 1), 0.5, 1e-15, 0);
    ck_assert(isnan(nn_optim_group_lr(opt, 2)));
    /* a parameter twice, a buffer, lbfgs groups: refused, the optimizer unchanged */
    ck_assert_int_eq(nn_optim_add_group(opt, 1, (nn_param *[]){&ps[0]}, 1.0, 0, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "'slow' is given twice"));
    nn_param buf = {"buf", v[0], NULL, false};
    ck_assert_int_eq(nn_optim_add_group(opt, 1, (nn_param *[]){&buf}, 1.0, 0, &e), AD_ERR_ARG);
    ck_assert_int_eq(nn_optim_num_groups(opt), 2);
    nn_param *const *list;
    ck_assert_int_eq(nn_optim_params(opt, &list), 2);
    ck_assert_ptr_eq(list[1], &ps[1]);
    nn_optim_free(opt);
    ck_assert_ptr_null(nn_optim_new("adagrad", 1, (nn_param *[]){&ps[0]}, NULL, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "unknown kind 'adagrad'"));
    opt = nn_optim_new("lbfgs", 1, (nn_param *[]){&ps[0]}, NULL, &e);
    ck_assert_ptr_nonnull(opt);
    ck_assert_int_eq(nn_optim_add_group(opt, 1, (nn_param *[]){&ps[1]}, 1.0, 0, &e), AD_ERR_UNSUPPORTED);
    ck_assert_int_eq(nn_optim_step(opt, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "nn_optim_minimize"));
    nn_optim_free(opt);
    for (int i = 0; i < 2; i++) {
        ad_tensor_free(v[i]);
        ad_tensor_free(g[i]);
    }
}
END_TEST

/* ---- L-BFGS: full-batch problems ---- */

typedef struct rosen {
    nn_param *p; /* x [2], F64 */
    ad_tape *t;
    int evals;
} rosen;

/* f(x) = (1 - x0)^2 + 100 (x1 - x0^2)^2, minimum 0 at (1, 1) */
static ad_status rosen_closure(void *ctx, double *loss, nn_error *err)
{
    rosen *r = ctx;
    r->evals++;
    ad_tape_reset(r->t);
    ad_var x = nn_param_var(r->t, r->p);
    ad_var x0 = ad_slice(x, 0, 0, 1), x1 = ad_slice(x, 0, 1, 2);
    ad_var f = ad_sum(ad_add(ad_square(ad_add_scalar(ad_neg(x0), 1.0)),
                             ad_mul_scalar(ad_square(ad_sub(x1, ad_square(x0))), 100.0)));
    if (ad_backward(f, NULL, 0) != AD_OK) return nn_error_from_tape(err, "rosen", r->t);
    *loss = ad_item(f);
    return AD_OK;
}

START_TEST(test_lbfgs_rosenbrock)
{
    bool line_search = _i == 0;
    ad_tensor *x = tu_f64(AD_SHAPE(2), (const double[]){-1.2, 1.0}), *g = tu_f64(AD_SHAPE(2), NULL);
    nn_param p = {"x", x, g, true};
    rosen r = {&p, ad_tape_new(), 0};
    nn_optim_opts o = nn_optim_defaults("lbfgs");
    o.line_search = line_search;
    o.lr = line_search ? 1.0 : 1e-3; /* a fixed step must be small on this valley */
    o.max_iter = 100;
    o.tolerance_grad = 1e-10;
    o.tolerance_change = 1e-14;
    nn_error e;
    nn_optim *opt = nn_optim_new("lbfgs", 1, (nn_param *[]){&p}, &o, &e);
    ck_assert_msg(opt != NULL, "%s", e.message);
    double loss = NAN;
    int calls = 0;
    for (; calls < (line_search ? 5 : 400) && !(loss < 1e-16); calls++)
        ck_assert_msg(nn_optim_minimize(opt, rosen_closure, &r, &loss, &e) == AD_OK, "%s", e.message);
    if (line_search) {
        /* converged to the minimum in few iterations (the classic start needs about 35) */
        ck_assert_msg(loss < 1e-16, "loss %g after %d calls, %d evaluations", loss, calls, r.evals);
        TU_ASSERT_CLOSE(ad_tensor_get(x, 0), 1.0, 1e-7, 0);
        TU_ASSERT_CLOSE(ad_tensor_get(x, 1), 1.0, 1e-7, 0);
        ck_assert_int_le(nn_optim_steps(opt), 100);
    } else {
        ck_assert_msg(loss < 1e-3, "loss %g after %d calls", loss, calls); /* slower, but downhill */
    }
    nn_optim_free(opt);
    ad_tape_free(r.t);
    ad_tensor_free(x);
    ad_tensor_free(g);
}
END_TEST

/* Least squares through a module: y = x W^T + b fitted exactly from 20 noiseless samples. */
typedef struct lsq {
    nn_module *m;
    ad_tape *t;
    const ad_tensor *x, *y;
} lsq;

static ad_status lsq_closure(void *ctx, double *loss, nn_error *err)
{
    lsq *c = ctx;
    ad_tape_reset(c->t);
    ad_var l = nn_loss_mse(nn_forward(c->m, c->t, ad_const(c->t, c->x)), ad_const(c->t, c->y));
    if (ad_backward(l, NULL, 0) != AD_OK) return nn_error_from_tape(err, "lsq", c->t);
    *loss = ad_item(l);
    return AD_OK;
}

START_TEST(test_lbfgs_least_squares)
{
    ad_rng rng;
    ad_rng_seed(&rng, 8);
    nn_module *m = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, NULL);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(20, 3), -1, 1, 9), *y = tu_f64(AD_SHAPE(20, 2), NULL);
    const double W[2][3] = {{1.5, -2, 0.5}, {0, 3, -1}}, B[2] = {0.25, -0.75};
    for (int i = 0; i < 20; i++)
        for (int k = 0; k < 2; k++) {
            double v = B[k];
            for (int j = 0; j < 3; j++) v += W[k][j] * ad_tensor_get(x, i * 3 + j);
            ad_tensor_set(y, i * 2 + k, v);
        }
    lsq c = {m, ad_tape_new(), x, y};
    nn_error e;
    nn_optim_opts o = nn_optim_defaults("lbfgs");
    o.tolerance_change = 1e-15;
    o.tolerance_grad = 1e-12;
    nn_optim *opt = nn_optim_for("lbfgs", m, &o, &e);
    ck_assert_msg(opt != NULL, "%s", e.message);
    double loss;
    for (int k = 0; k < 3; k++) ck_assert_msg(nn_optim_minimize(opt, lsq_closure, &c, &loss, &e) == AD_OK, "%s", e.message);
    ck_assert_msg(loss < 1e-12, "loss %g", loss);
    for (int k = 0; k < 2; k++) {
        TU_ASSERT_CLOSE(ad_tensor_get(nn_module_param(m, "bias")->value, k), B[k], 1e-5, 0);
        for (int j = 0; j < 3; j++) TU_ASSERT_CLOSE(ad_tensor_get(nn_module_param(m, "weight")->value, k * 3 + j), W[k][j], 1e-5, 0);
    }
    nn_optim_free(opt);
    ad_tape_free(c.t);
    nn_module_free(m);
    ad_tensor_free(x);
    ad_tensor_free(y);
}
END_TEST

/* A closure that fails stops the step with its status and message. */
static ad_status failing_closure(void *ctx, double *loss, nn_error *err)
{
    (void)ctx;
    *loss = NAN;
    return nn_error_set(err, AD_ERR_IO, "failing_closure: no data");
}

START_TEST(test_minimize_errors)
{
    nn_module *l = small_module(P0);
    nn_error e;
    nn_optim *opt = nn_optim_for("lbfgs", l, NULL, &e);
    double loss = 0;
    ck_assert_int_eq(nn_optim_minimize(opt, failing_closure, NULL, &loss, &e), AD_ERR_IO);
    ck_assert_str_eq(e.message, "failing_closure: no data");
    ck_assert(isnan(loss));
    ck_assert_int_eq(nn_optim_minimize(opt, NULL, NULL, &loss, &e), AD_ERR_ARG);
    nn_optim_opts bad = nn_optim_defaults("lbfgs");
    bad.history = 0;
    ck_assert_ptr_null(nn_optim_for("lbfgs", l, &bad, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "history"));
    nn_optim_free(opt);
    nn_module_free(l);
}
END_TEST

/* ---- nn_train_step ---- */

/* mse of a F64 linear 2 -> 1 on rows [r0, r1) of the batch */
static ad_var batch_loss(ad_tape *t, nn_module *m, const ad_tensor *x, const ad_tensor *y, int r0, int r1)
{
    ad_var xv = ad_slice(ad_const(t, x), 0, r0, r1), yv = ad_slice(ad_const(t, y), 0, r0, r1);
    return nn_loss_mse(nn_forward(m, t, xv), yv);
}

/* Accumulating k equal micro-batches gives the update of their union (the mean of means). */
START_TEST(test_train_step_accumulates)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(8, 2), -1, 1, 30), *y = tu_rand(AD_F64, AD_SHAPE(8, 1), -1, 1, 31);
    nn_module *a = small_module(P0), *b = small_module(P0);
    nn_error e;
    nn_optim *oa = nn_sgd(a, 0.1, 0.9, 0.01, false, &e), *ob = nn_sgd(b, 0.1, 0.9, 0.01, false, &e);
    ad_tape *t = ad_tape_new();
    nn_step_opts acc = {.accumulate = 4};
    nn_step_result r;
    for (int step = 0; step < 3; step++) {
        ad_tape_reset(t);
        ck_assert_int_eq(nn_train_step(oa, batch_loss(t, a, x, y, 0, 8), NULL, &r, &e), AD_OK);
        ck_assert(r.updated);
        for (int k = 0; k < 4; k++) {
            ad_tape_reset(t);
            ck_assert_int_eq(nn_train_step(ob, batch_loss(t, b, x, y, 2 * k, 2 * k + 2), &acc, &r, &e), AD_OK);
            ck_assert(r.updated == (k == 3));
        }
    }
    double pa[NP], pb[NP];
    get_params(a, pa);
    get_params(b, pb);
    for (int i = 0; i < NP; i++) TU_ASSERT_CLOSE(pb[i], pa[i], 1e-15, 1e-13);
    ck_assert_int_eq(nn_optim_steps(ob), 3);

    /* clipping reports the norm; a NaN loss is refused, or skipped when asked */
    ad_tape_reset(t);
    nn_step_opts clip = {.clip_norm = 1e-3};
    ck_assert_int_eq(nn_train_step(oa, batch_loss(t, a, x, y, 0, 8), &clip, &r, &e), AD_OK);
    ck_assert(r.grad_norm > 1e-3);
    ad_tape_reset(t);
    ad_var nan_loss = ad_mul_scalar(batch_loss(t, a, x, y, 0, 8), NAN);
    ck_assert_int_eq(nn_train_step(oa, nan_loss, NULL, &r, &e), AD_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(e.message, "the loss is nan"));
    nn_step_opts skip = {.skip_nonfinite = true};
    ck_assert_int_eq(nn_train_step(oa, nan_loss, &skip, &r, &e), AD_OK);
    ck_assert(r.skipped && !r.updated);
    ck_assert_int_eq(nn_train_step(NULL, nan_loss, NULL, NULL, &e), AD_ERR_ARG);

    ad_tape_free(t);
    nn_optim_free(oa);
    nn_optim_free(ob);
    nn_module_free(a);
    nn_module_free(b);
    ad_tensor_free(x);
    ad_tensor_free(y);
}
END_TEST

/* nn_train_step zeroes the gradients before its backward pass, on two threads each its shares of
** the parameters (a weight of 96 x 128, split in two; a bias of 96, whole on the first thread):
** whatever they held before, they come out as the step's own gradient, bit for bit as on one
** thread. lr 0: the parameters stay as they are, so both runs see the same step. */
START_TEST(test_train_step_zeroes_grads_on_threads)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(4, 128), -1, 1, 40), *y = tu_rand(AD_F64, AD_SHAPE(4, 96), -1, 1, 41);
    int saved = ad_get_num_threads();
    ad_tensor *want[2] = {NULL, NULL};
    for (int th = 1; th <= 2; th++) {
        ad_set_num_threads(th);
        ad_rng rng;
        ad_rng_seed(&rng, 5);
        nn_error e;
        nn_module *m = nn_linear_ex(128, 96, true, NN_INIT_XAVIER_UNIFORM, 1.0, AD_F64, &rng, &e);
        ck_assert_ptr_nonnull(m);
        nn_optim *o = nn_sgd(m, 0.0, 0.0, 0.0, false, &e);
        ck_assert_ptr_nonnull(o);
        nn_param *ps;
        int np = nn_module_params(m, &ps);
        ck_assert_int_eq(np, 2);
        for (int i = 0; i < np; i++) ad_tensor_fill(ps[i].grad, 7.0); /* stale */
        ad_tape *t = ad_tape_new();
        ck_assert_int_eq(nn_train_step(o, batch_loss(t, m, x, y, 0, 4), NULL, NULL, &e), AD_OK);
        for (int i = 0; i < np; i++) {
            if (th == 1) {
                want[i] = ad_tensor_clone(ps[i].grad);
                for (int64_t k = 0; k < want[i]->size; k++) ck_assert(fabs(ad_tensor_get(want[i], k)) < 7.0);
            } else {
                for (int64_t k = 0; k < want[i]->size; k++)
                    ck_assert_msg(ad_tensor_get(ps[i].grad, k) == ad_tensor_get(want[i], k), "param %d element %lld", i,
                                  (long long)k);
            }
        }
        ad_tape_free(t);
        nn_optim_free(o);
        nn_module_free(m);
    }
    ad_set_num_threads(saved);
    for (int i = 0; i < 2; i++) ad_tensor_free(want[i]);
    ad_tensor_free(x);
    ad_tensor_free(y);
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
    tcase_add_test(core, test_adam_steps_per_parameter);
    tcase_add_test(core, test_f32_params);
    tcase_add_test(core, test_schedules);
    tcase_add_loop_test(core, test_rmsprop_against_reference, 0, (int)(sizeof rms_cases / sizeof rms_cases[0]));
    tcase_add_test(core, test_param_groups);
    tcase_add_loop_test(core, test_lbfgs_rosenbrock, 0, 2);
    tcase_add_test(core, test_lbfgs_least_squares);
    tcase_add_test(core, test_train_step_accumulates);
    tcase_add_test(core, test_train_step_zeroes_grads_on_threads);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_nonfinite_gradient_refused);
    tcase_add_test(errors, test_bad_hyperparameters);
    tcase_add_test(errors, test_minimize_errors);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_optim_suite()); }

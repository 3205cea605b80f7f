/* test_numeric_faults.c: NaN/Inf during training stops at a named step, anomaly detection names the op, gradient clipping by global norm. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

/* ---- a small classification set held in memory ---- */

typedef struct toy {
    nn_dataset ds;
    float feat[256 * 4];
    int64_t lab[256];
} toy;

/* n rows of 4 features in [-1, 1); the label is which of the first two features is larger. */
static void toy_init(toy *t, int64_t n, uint64_t seed)
{
    ck_assert_int_le(n, 256);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int64_t i = 0; i < n * 4; i++) t->feat[i] = (float)(2 * ad_rng_uniform(&r) - 1);
    for (int64_t i = 0; i < n; i++) t->lab[i] = t->feat[4 * i] > t->feat[4 * i + 1];
    t->ds = (nn_dataset){.n = n, .dim = 4, .nclasses = 2, .pixels_u8 = NULL, .features = t->feat, .labels = t->lab};
}

static nn_module *toy_net(uint64_t seed)
{
    ad_rng r;
    ad_rng_seed(&r, seed);
    nn_module *m = nn_mlp(3, (const int64_t[]){4, 8, 2}, NN_TANH, &r, NULL);
    ck_assert_ptr_nonnull(m);
    return m;
}

static nn_fit_opts quiet_opts(int epochs, int64_t batch)
{
    nn_fit_opts o = nn_fit_defaults();
    o.epochs = epochs;
    o.batch_size = batch;
    o.shuffle = false;
    o.progress = NN_PROGRESS_NONE;
    return o;
}

/* true when every parameter of a and b holds the same bits. */
static bool same_params(nn_module *a, nn_module *b)
{
    nn_param *pa, *pb;
    int na = nn_module_params(a, &pa), nb = nn_module_params(b, &pb);
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (pa[i].value->size != pb[i].value->size ||
            memcmp(pa[i].value->data, pb[i].value->data,
                   (size_t)pa[i].value->size * ad_dtype_size(pa[i].value->dtype)) != 0)
            return false;
    return true;
}

/* ---- training that meets a NaN stops, naming the step, without applying it ---- */

START_TEST(test_nan_input_stops_at_step)
{
    toy t;
    toy_init(&t, 64, 1);
    t.feat[4 * 37 + 2] = NAN; /* row 37: in the 5th batch of 8 */
    nn_module *m = toy_net(2);
    nn_optim *o = nn_sgd(m, 0.1, 0.9, 0.0, false, NULL);
    ck_assert_ptr_nonnull(o);
    nn_fit_opts fo = quiet_opts(1, 8);
    nn_error err = {0};
    ad_status st = nn_fit(m, o, &t.ds, &fo, NULL, &err);
    ck_assert_int_eq(st, AD_ERR_NUMERIC);
    ck_assert_msg(strstr(err.message, "step 5") != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.message, "epoch 1") != NULL, "message: %s", err.message);
    ck_assert_int_eq(nn_optim_steps(o), 4);

    /* the parameters are those of 4 clean steps: the 5th update was not applied */
    nn_module *ref = toy_net(2);
    nn_optim *ro = nn_sgd(ref, 0.1, 0.9, 0.0, false, NULL);
    toy first = t;
    first.ds.features = first.feat;
    first.ds.labels = first.lab;
    first.ds.n = 32;
    ck_assert_int_eq(nn_fit(ref, ro, &first.ds, &fo, NULL, &err), AD_OK);
    ck_assert(same_params(m, ref));
    nn_optim_free(ro);
    nn_module_free(ref);
    nn_optim_free(o);
    nn_module_free(m);
}
END_TEST

/* ---- asked to, nn_fit skips non-finite steps and goes on ---- */

START_TEST(test_nan_input_skipped_when_asked)
{
    toy t;
    toy_init(&t, 64, 1);
    t.feat[4 * 37 + 2] = NAN; /* row 37: in the 5th batch of 8 */
    t.feat[4 * 60 + 0] = INFINITY; /* row 60: in the 8th */
    nn_module *m = toy_net(2);
    nn_optim *o = nn_sgd(m, 0.1, 0.9, 0.0, false, NULL);
    nn_fit_opts fo = quiet_opts(2, 8);
    fo.skip_nonfinite = true;
    nn_epoch_stats last;
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, &t.ds, &fo, &last, &err), AD_OK);
    ck_assert_int_eq(last.skipped, 2);                 /* in each epoch, the two bad batches */
    ck_assert_int_eq(nn_optim_steps(o), 2 * (8 - 2)); /* and only the good ones were applied */
    ck_assert(isfinite(last.train_loss));
    nn_param *p;
    int np = nn_module_params(m, &p);
    for (int i = 0; i < np; i++)
        for (int64_t k = 0; k < p[i].value->size; k++) ck_assert(isfinite(ad_tensor_get(p[i].value, k)));
    nn_optim_free(o);
    nn_module_free(m);
}
END_TEST

/* ---- an epoch of nothing but skipped steps ends the fit ---- */

START_TEST(test_every_step_skipped_stops)
{
    toy t;
    toy_init(&t, 64, 1);
    for (int i = 0; i < 64; i += 8) t.feat[4 * i + 3] = NAN; /* one row in every batch of 8 */
    nn_module *m = toy_net(2), *ref = toy_net(2);
    nn_optim *o = nn_sgd(m, 0.1, 0.9, 0.0, false, NULL);
    nn_fit_opts fo = quiet_opts(3, 8);
    fo.skip_nonfinite = true;
    nn_epoch_stats last = {0};
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, &t.ds, &fo, &last, &err), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(err.message, "every step of epoch 1 (8) was skipped as non-finite") != NULL, "%s", err.message);
    ck_assert_int_eq(last.epoch, 0); /* no epoch was reported */
    ck_assert_int_eq(nn_optim_steps(o), 0);
    ck_assert(same_params(m, ref));
    /* one good batch is enough to go on */
    t.feat[4 * 16 + 3] = 0;
    ck_assert_msg(nn_fit(m, o, &t.ds, &fo, &last, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(last.skipped, 7);
    ck_assert_int_eq(nn_optim_steps(o), 3);
    nn_optim_free(o);
    nn_module_free(ref);
    nn_module_free(m);
}
END_TEST

/* ---- a log that cannot be written stops the fit, before its first step ---- */

START_TEST(test_log_write_failure_stops)
{
    toy t;
    toy_init(&t, 64, 1);
    nn_module *m = toy_net(2), *ref = toy_net(2);
    nn_optim *o = nn_sgd(m, 0.1, 0.9, 0.0, false, NULL);
    nn_fit_opts fo = quiet_opts(2, 8);
    fo.log_path = "/dev/full";
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(m, o, &t.ds, &fo, NULL, &err), AD_ERR_IO);
    ck_assert_msg(strstr(err.message, "cannot write log /dev/full") != NULL, "%s", err.message);
    ck_assert_int_eq(nn_optim_steps(o), 0);
    ck_assert(same_params(m, ref));
    nn_optim_free(o);
    nn_module_free(ref);
    nn_module_free(m);
}
END_TEST

/* clip_norm bounds every update: with SGD (no momentum) and lr 1, each step moves
** the parameters by at most clip_norm in the global norm. */
static double params_dist(nn_module *a, nn_module *b)
{
    nn_param *pa, *pb;
    int n = nn_module_params(a, &pa);
    nn_module_params(b, &pb);
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < pa[i].value->size; k++) {
            double d = ad_tensor_get(pa[i].value, k) - ad_tensor_get(pb[i].value, k);
            s += d * d;
        }
    return sqrt(s);
}

START_TEST(test_fit_clips_updates)
{
    toy t;
    toy_init(&t, 8, 3);
    nn_module *m = toy_net(4), *before = toy_net(4), *free_m = toy_net(4);
    nn_optim *o = nn_sgd(m, 1.0, 0.0, 0.0, false, NULL), *fo_free = nn_sgd(free_m, 1.0, 0.0, 0.0, false, NULL);
    nn_fit_opts fo = quiet_opts(1, 8);
    nn_error err = {0};
    ck_assert_int_eq(nn_fit(free_m, fo_free, &t.ds, &fo, NULL, &err), AD_OK);
    double unclipped = params_dist(free_m, before);
    fo.clip_norm = unclipped / 4;
    ck_assert_int_eq(nn_fit(m, o, &t.ds, &fo, NULL, &err), AD_OK);
    ck_assert_double_eq_tol(params_dist(m, before), unclipped / 4, 1e-4 * unclipped);
    fo.clip_norm = -1;
    ck_assert_int_eq(nn_fit(m, o, &t.ds, &fo, NULL, &err), AD_ERR_ARG);
    ck_assert_msg(strstr(err.message, "clip_norm") != NULL, "message: %s", err.message);
    nn_optim_free(o);
    nn_optim_free(fo_free);
    nn_module_free(m);
    nn_module_free(before);
    nn_module_free(free_m);
}
END_TEST

START_TEST(test_divergence_stops)
{
    /* a linear model, huge inputs and a huge learning rate: the weights overflow
    ** float's range within a few steps, and the loss with them */
    toy t;
    toy_init(&t, 64, 3);
    for (int64_t i = 0; i < 64 * 4; i++) t.feat[i] *= 1e30f;
    ad_rng r;
    ad_rng_seed(&r, 4);
    nn_module *m = nn_mlp(3, (const int64_t[]){4, 8, 2}, NN_IDENTITY, &r, NULL);
    nn_optim *o = nn_sgd(m, 1e30, 0.0, 0.0, false, NULL);
    nn_fit_opts fo = quiet_opts(50, 16);
    nn_error err = {0};
    ad_status st = nn_fit(m, o, &t.ds, &fo, NULL, &err);
    ck_assert_int_eq(st, AD_ERR_NUMERIC);
    ck_assert_msg(strstr(err.message, "step ") != NULL && strstr(err.message, "epoch ") != NULL, "message: %s", err.message);
    ck_assert_int_lt(nn_optim_steps(o), 50 * 4);
    nn_optim_free(o);
    nn_module_free(m);
}
END_TEST

/* The optimizer itself refuses a non-finite gradient and updates nothing. */
START_TEST(test_optimizer_refuses_nonfinite)
{
    nn_module *m = toy_net(5);
    nn_optim *o = nn_adam(m, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL);
    nn_module *ref = toy_net(5);
    nn_param *p;
    int n = nn_module_params(m, &p);
    ck_assert_int_gt(n, 1);
    nn_zero_grad(m);
    ad_tensor_set(p[n - 1].grad, 0, INFINITY);
    ck_assert_int_eq(nn_optim_step(o, NULL), AD_ERR_NUMERIC);
    ck_assert(same_params(m, ref));
    ck_assert_int_eq(nn_optim_steps(o), 0);
    nn_optim_free(o);
    nn_module_free(m);
    nn_module_free(ref);
}
END_TEST

/* ---- anomaly detection names the op ---- */

START_TEST(test_anomaly_names_forward_op)
{
    ad_tape *t = ad_tape_new();
    ad_tape_set_anomaly_detection(t, true);
    nn_module *m = toy_net(6);
    ad_tensor *x = tu_f64(AD_SHAPE(2, 4), (double[]){0.1, 0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8});
    ad_var h = nn_forward(m, t, ad_cast(ad_const(t, x), AD_F32));
    ad_var y = ad_sum(ad_log(ad_sub(h, ad_scalar(t, AD_F32, 100.0)))); /* log of negatives: NaN */
    ck_assert(!ad_ok(y));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NUMERIC);
    ck_assert_msg(strncmp(ad_tape_error(t), "ad_log: ", 8) == 0, "message: %s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "forward") != NULL, "message: %s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "[2,2]") != NULL, "message: %s", ad_tape_error(t));
    ad_tensor_free(x);
    nn_module_free(m);
    ad_tape_free(t);
}
END_TEST

START_TEST(test_anomaly_names_backward_op)
{
    /* sqrt(x) at x = 0: the value is finite, its gradient 1/(2 sqrt x) is not */
    ad_tape *t = ad_tape_new();
    ad_tape_set_anomaly_detection(t, true);
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){0.0, 1.0, 4.0});
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_sum(ad_mul_scalar(ad_sqrt(x), 2.0));
    ck_assert(ad_ok(y));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_ERR_NUMERIC);
    ck_assert_msg(strncmp(ad_tape_error(t), "ad_sqrt: ", 9) == 0, "message: %s", ad_tape_error(t));
    ck_assert_msg(strstr(ad_tape_error(t), "backward") != NULL, "message: %s", ad_tape_error(t));
    /* without anomaly detection the same sweep runs and yields the infinity */
    ad_tape_reset(t);
    ad_tape_set_anomaly_detection(t, false);
    x = ad_leaf(t, xv);
    y = ad_sum(ad_mul_scalar(ad_sqrt(x), 2.0));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert(isinf(ad_tensor_get(ad_grad(x), 0)));
    ad_tensor_free(xv);
    ad_tape_free(t);
}
END_TEST

/* ---- gradient clipping by global norm ---- */

/* An F64 two-layer model whose gradients are set by hand. */
static nn_module *f64_net(void)
{
    ad_rng r;
    ad_rng_seed(&r, 9);
    nn_module *mods[2] = {nn_linear_ex(3, 4, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F64, &r, NULL),
                          nn_linear_ex(4, 2, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F64, &r, NULL)};
    nn_module *m = nn_sequential(2, mods, NULL);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Sets gradient element j of parameter i to scale * (1 + i + j/10) * (-1)^j; returns the sum of squares. */
static double set_grads(nn_module *m, double scale)
{
    nn_param *p;
    int n = nn_module_params(m, &p);
    double ss = 0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i].grad->size; j++) {
            double v = (1 + i + (double)j / 10) * (j % 2 ? -1 : 1);
            ad_tensor_set(p[i].grad, j, scale * v);
            ss += v * v;
        }
    return ss;
}

START_TEST(test_clip_scales_to_max_norm)
{
    nn_module *m = f64_net();
    double ss = set_grads(m, 1.0), norm;
    ck_assert_int_eq(nn_clip_grad_norm(m, 2.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, sqrt(ss), 0, 1e-14);
    /* every gradient scaled by 2 / (norm + 1e-6): the direction is kept, the new norm is 2 */
    double coef = 2.0 / (sqrt(ss) + 1e-6), ss2 = 0;
    nn_param *p;
    int n = nn_module_params(m, &p);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i].grad->size; j++) {
            double want = coef * (1 + i + (double)j / 10) * (j % 2 ? -1 : 1);
            TU_ASSERT_CLOSE(ad_tensor_get(p[i].grad, j), want, 0, 1e-14);
            ss2 += ad_tensor_get(p[i].grad, j) * ad_tensor_get(p[i].grad, j);
        }
    TU_ASSERT_CLOSE(sqrt(ss2), 2.0, 0, 1e-6);
    /* a second call finds the norm at the limit and changes nothing */
    ck_assert_int_eq(nn_clip_grad_norm(m, 2.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, 2.0, 0, 1e-6);
    nn_module_free(m);
}
END_TEST

START_TEST(test_clip_below_limit_untouched)
{
    nn_module *m = f64_net();
    double ss = set_grads(m, 0.01), norm;
    nn_module *ref = f64_net();
    set_grads(ref, 0.01);
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, 0.01 * sqrt(ss), 0, 1e-14);
    nn_param *p, *q;
    int n = nn_module_params(m, &p);
    nn_module_params(ref, &q);
    for (int i = 0; i < n; i++)
        ck_assert(memcmp(p[i].grad->data, q[i].grad->data, (size_t)p[i].grad->size * 8) == 0);
    nn_module_free(m);
    nn_module_free(ref);
}
END_TEST

START_TEST(test_clip_extreme_magnitudes)
{
    /* a naive sum of squares overflows to Inf (1e200^2) or underflows to 0 (1e-200^2) */
    nn_module *m = f64_net();
    double ss = set_grads(m, 1e200), norm;
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, 1e200 * sqrt(ss), 0, 1e-13);
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, 1.0, 0, 1e-6);
    ss = set_grads(m, 1e-200);
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, 1e-200 * sqrt(ss), 0, 1e-13);
    nn_module_free(m);
}
END_TEST

START_TEST(test_clip_f32_model)
{
    nn_module *m = toy_net(11); /* F32 parameters */
    nn_param *p;
    int n = nn_module_params(m, &p);
    double ss = 0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i].grad->size; j++) {
            ad_tensor_set(p[i].grad, j, 3.0);
            ss += 9.0;
        }
    double norm;
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.5, &norm, NULL), AD_OK);
    TU_ASSERT_CLOSE(norm, sqrt(ss), 0, 1e-12);
    float want = (float)(3.0 * 1.5 / (sqrt(ss) + 1e-6));
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i].grad->size; j++) ck_assert(((float *)p[i].grad->data)[j] == want);
    nn_module_free(m);
}
END_TEST

START_TEST(test_clip_nonfinite_and_errors)
{
    nn_module *m = f64_net();
    set_grads(m, 1.0);
    nn_module *ref = f64_net();
    set_grads(ref, 1.0);
    nn_param *p, *q;
    int n = nn_module_params(m, &p);
    nn_module_params(ref, &q);
    double norm;
    ad_tensor_set(p[1].grad, 0, INFINITY);
    ad_tensor_set(q[1].grad, 0, INFINITY);
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_ERR_NUMERIC);
    ck_assert(isinf(norm));
    ad_tensor_set(p[2].grad, 1, NAN);
    ad_tensor_set(q[2].grad, 1, NAN);
    ck_assert_int_eq(nn_clip_grad_norm(m, 1.0, &norm, NULL), AD_ERR_NUMERIC);
    ck_assert(isnan(norm));
    for (int i = 0; i < n; i++) /* nothing scaled (NaN compares by bits) */
        ck_assert(memcmp(p[i].grad->data, q[i].grad->data, (size_t)p[i].grad->size * 8) == 0);
    ck_assert_int_eq(nn_clip_grad_norm(NULL, 1.0, &norm, NULL), AD_ERR_ARG);
    ck_assert_int_eq(nn_clip_grad_norm(m, 0.0, &norm, NULL), AD_ERR_ARG);
    ck_assert_int_eq(nn_clip_grad_norm(m, -1.0, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(nn_clip_grad_norm(m, NAN, NULL, NULL), AD_ERR_ARG);
    nn_module_free(m);
    nn_module_free(ref);
}
END_TEST

/* A training loop that skips the steps whose gradients are not finite, and clips the others. */
START_TEST(test_manual_loop_skips_bad_steps)
{
    toy t;
    toy_init(&t, 64, 12);
    t.feat[4 * 20] = INFINITY; /* batch 3 of 8 (rows 16..23) */
    nn_module *m = toy_net(13);
    nn_optim *o = nn_sgd(m, 0.05, 0.0, 0.0, false, NULL);
    nn_batcher *b = nn_batcher_new(&t.ds, 8, false, 0, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(8, 4));
    int64_t labels[8];
    ad_tape *tp = ad_tape_new();
    int skipped = 0, applied = 0;
    int64_t r;
    while ((r = nn_batcher_next(b, x, NULL, labels)) > 0) {
        ad_tape_reset(tp);
        nn_zero_grad(m);
        ad_var loss = nn_loss_cross_entropy(nn_forward(m, tp, ad_const(tp, x)), labels);
        double norm;
        if (ad_backward(loss, NULL, 0) != AD_OK || !isfinite(ad_item(loss)) ||
            nn_clip_grad_norm(m, 1.0, &norm, NULL) != AD_OK) {
            skipped++;
            continue;
        }
        ck_assert(norm >= 0 && isfinite(norm));
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
        applied++;
    }
    ck_assert_int_eq(skipped, 1);
    ck_assert_int_eq(applied, 7);
    nn_param *p;
    int n = nn_module_params(m, &p);
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i].value->size; j++) ck_assert(isfinite(ad_tensor_get(p[i].value, j)));
    ad_tape_free(tp);
    ad_tensor_free(x);
    nn_batcher_free(b);
    nn_optim_free(o);
    nn_module_free(m);
}
END_TEST

static Suite *numeric_faults_suite(void)
{
    Suite *s = suite_create("numeric_faults");
    TCase *fit = tcase_create("training");
    tcase_add_test(fit, test_nan_input_stops_at_step);
    tcase_add_test(fit, test_nan_input_skipped_when_asked);
    tcase_add_test(fit, test_every_step_skipped_stops);
    tcase_add_test(fit, test_log_write_failure_stops);
    tcase_add_test(fit, test_fit_clips_updates);
    tcase_add_test(fit, test_divergence_stops);
    tcase_add_test(fit, test_optimizer_refuses_nonfinite);
    tcase_add_test(fit, test_manual_loop_skips_bad_steps);
    suite_add_tcase(s, fit);
    TCase *an = tcase_create("anomaly");
    tcase_add_test(an, test_anomaly_names_forward_op);
    tcase_add_test(an, test_anomaly_names_backward_op);
    suite_add_tcase(s, an);
    TCase *clip = tcase_create("clip");
    tcase_add_test(clip, test_clip_scales_to_max_norm);
    tcase_add_test(clip, test_clip_below_limit_untouched);
    tcase_add_test(clip, test_clip_extreme_magnitudes);
    tcase_add_test(clip, test_clip_f32_model);
    tcase_add_test(clip, test_clip_nonfinite_and_errors);
    suite_add_tcase(s, clip);
    return s;
}

int main(void) { return tu_run(numeric_faults_suite()); }

/* test_nn_layers.c: conv/pool/norm/dropout/embedding modules, recurrent cells (against direct loops), the CNN spec, running statistics in checkpoints. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "test_util.h"

/* ---- helpers ---- */

/* Swaps a leaf module's F32 parameters (and buffers) for F64 copies, so gradients can be
** checked in double precision; the module reads its parameter array on every forward. */
static void to_f64(nn_module *m)
{
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    for (int i = 0; i < n; i++) {
        ad_tensor *v = ad_tensor_new(AD_F64, ps[i].value->ndim, ps[i].value->shape);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(ad_tensor_copy(v, ps[i].value), AD_OK);
        ad_tensor_free(ps[i].value);
        ps[i].value = v;
        if (ps[i].grad) {
            ad_tensor_free(ps[i].grad);
            ps[i].grad = ad_tensor_new(AD_F64, v->ndim, v->shape);
            ck_assert_ptr_nonnull(ps[i].grad);
        }
    }
}

/* L = sum(sin(m(x)) * (1 + index / size)): a loss whose gradient reaches every output differently. */
static double loss_of(nn_module *m, const ad_tensor *x, bool backward)
{
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(m, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    const ad_tensor *v = ad_value(y);
    ad_tensor *wt = ad_tensor_new(v->dtype, v->ndim, v->shape);
    for (int64_t i = 0; i < wt->size; i++) ad_tensor_set(wt, i, 1.0 + (double)i / (double)wt->size);
    ad_var l = ad_sum(ad_mul(ad_sin(y), ad_const(t, wt)));
    double r = ad_item(l);
    if (backward) ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
    ad_tape_free(t);
    ad_tensor_free(wt);
    return r;
}

/* Every trainable parameter's gradient after backward against central differences (F64 module). */
static void check_param_grads(nn_module *m, const ad_tensor *x)
{
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    nn_zero_grad(m);
    loss_of(m, x, true);
    const double eps = 1e-6;
    for (int i = 0; i < n; i++) {
        if (!ps[i].grad) continue;
        ad_tensor *v = ps[i].value;
        int64_t stride = v->size > 40 ? v->size / 40 + 1 : 1; /* a sample of large tensors */
        for (int64_t k = 0; k < v->size; k += stride) {
            double orig = ad_tensor_get(v, k);
            ad_tensor_set(v, k, orig + eps);
            double lp = loss_of(m, x, false);
            ad_tensor_set(v, k, orig - eps);
            double lm = loss_of(m, x, false);
            ad_tensor_set(v, k, orig);
            double num = (lp - lm) / (2 * eps), an = ad_tensor_get(ps[i].grad, k);
            ck_assert_msg(fabs(an - num) <= 1e-5 + 1e-3 * fabs(num), "%s[%lld]: analytic %.10g, numeric %.10g",
                          ps[i].name, (long long)k, an, num);
        }
    }
}

/* gradcheck of m with respect to its input (F64). */
static nn_module *g_mod; /* test-only: the module under check */
static ad_var f_module(ad_tape *t, const ad_var *in, void *ctx) { return nn_forward(g_mod, t, in[0]); }
static void check_input_grad(nn_module *m, const ad_tensor *x)
{
    g_mod = m;
    ad_check_report rep;
    ad_status s = ad_gradcheck(f_module, NULL, 1, &x, NULL, &rep);
    if (s != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_msg(s == AD_OK, "gradcheck of %s: %s", nn_module_kind(m), rep.message);
}

/* ---- convolution and shape modules ---- */

START_TEST(test_conv_module)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    nn_module *c = nn_conv2d(3, 4, 3, 2, 1, &rng, NULL);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(nn_module_kind(c), "conv2d");
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(c, &ps), 2);
    ck_assert_str_eq(ps[0].name, "weight");
    ck_assert_str_eq(ps[1].name, "bias");
    tu_assert_shape(ps[0].value, AD_SHAPE(4, 3, 3, 3));
    tu_assert_shape(ps[1].value, AD_SHAPE(4));
    ck_assert_int_eq(nn_module_num_weights(c), 4 * 27 + 4);
    /* He-uniform: |w| <= sqrt(6 / fan_in), not all zero */
    double bound = sqrt(6.0 / 27.0), mx = 0;
    for (int64_t i = 0; i < ps[0].value->size; i++) mx = fmax(mx, fabs(ad_tensor_get(ps[0].value, i)));
    ck_assert(mx > 0.5 * bound && mx <= bound);
    to_f64(c);
    for (int k = 0; k < 4; k++) ad_tensor_set(ps[1].value, k, 0.1 * (k + 1));
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3, 5, 6), -1, 1, 4);
    /* forward = conv2d + bias */
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(c, t, ad_const(t, x));
    ad_var r = ad_conv2d(ad_const(t, x), ad_const(t, ps[0].value), 2, 1, 1, 1);
    ck_assert_msg(ad_ok(y) && ad_ok(r), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(2, 4, 3, 3));
    for (int64_t i = 0; i < ad_value(y)->size; i++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), i), ad_tensor_get(ad_value(r), i) + 0.1 * ((i / 9) % 4 + 1), 1e-14, 1e-13);
    /* a wrong channel count is an error on the tape */
    ad_tensor *bad = tu_f64(AD_SHAPE(1, 2, 5, 5), NULL);
    ck_assert(!ad_ok(nn_forward(c, t, ad_const(t, bad))));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_free(t);
    check_param_grads(c, x);
    check_input_grad(c, x);
    /* bad constructor arguments */
    ck_assert_ptr_null(nn_conv2d(0, 4, 3, 1, 0, &rng, NULL));
    ck_assert_ptr_null(nn_conv2d(3, 4, 3, 0, 0, &rng, NULL));
    ck_assert_ptr_null(nn_conv2d(3, 4, 3, 1, 0, NULL, NULL));
    ad_conv2d_params gp = {1, 1, 0, 0, 1, 1, 2};
    ck_assert_ptr_null(nn_conv2d_ex(3, 4, 3, 3, &gp, true, AD_F32, &rng, NULL)); /* 3 channels in 2 groups */
    nn_module *g2 = nn_conv2d_ex(4, 6, 3, 1, &gp, false, AD_F32, &rng, NULL);
    ck_assert_ptr_nonnull(g2);
    ck_assert_int_eq(nn_module_params(g2, &ps), 1);
    tu_assert_shape(ps[0].value, AD_SHAPE(6, 2, 3, 1));
    nn_module_free(g2);
    nn_module_free(c);
    ad_tensor_free(x);
    ad_tensor_free(bad);
}
END_TEST

START_TEST(test_pool_flatten_reshape)
{
    nn_module *mods[4] = {nn_reshape(3, (const int64_t[]){1, 4, 6}, NULL), nn_max_pool2d(2, 0, 0, NULL), nn_avg_pool2d(3, 1, 1, NULL),
                          nn_flatten(NULL)};
    ck_assert_str_eq(nn_module_kind(mods[1]), "max_pool2d");
    ck_assert_str_eq(nn_module_kind(mods[2]), "avg_pool2d");
    nn_module *s = nn_sequential(4, mods, NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(nn_module_params(s, NULL), 0);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(3, 24), -1, 1, 5);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(s, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(3, 6)); /* [3,1,4,6] -> [3,1,2,3] -> same -> [3,6] */
    /* the max of each 2x2 block, then 3x3 means with zero padding: check one corner by hand */
    double m00 = -INFINITY;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) m00 = fmax(m00, ad_tensor_get(x, i * 6 + j));
    double m01 = -INFINITY, m10 = -INFINITY, m11 = -INFINITY;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            m01 = fmax(m01, ad_tensor_get(x, i * 6 + 2 + j));
            m10 = fmax(m10, ad_tensor_get(x, (2 + i) * 6 + j));
            m11 = fmax(m11, ad_tensor_get(x, (2 + i) * 6 + 2 + j));
        }
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), 0), (m00 + m01 + m10 + m11) / 9.0, 1e-15, 1e-14);
    ad_tape_free(t);
    check_input_grad(s, x);
    ck_assert_ptr_null(nn_max_pool2d(0, 1, 0, NULL));
    ck_assert_ptr_null(nn_avg_pool2d(2, 1, 2, NULL));
    ck_assert_ptr_null(nn_reshape(0, NULL, NULL));
    nn_module_free(s);
    ad_tensor_free(x);
}
END_TEST

/* ---- dropout and normalization ---- */

START_TEST(test_dropout_module)
{
    nn_module *d1 = nn_dropout(0.5, 9, NULL), *d2 = nn_dropout(0.5, 9, NULL);
    ck_assert_ptr_nonnull(d1);
    ck_assert(nn_module_training(d1));
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(4, 100));
    ad_tensor_fill(x, 1.0);
    ad_tape *t = ad_tape_new();
    ad_var xv = ad_const(t, x);
    ad_var a = nn_forward(d1, t, xv), b = nn_forward(d2, t, xv), a2 = nn_forward(d1, t, xv);
    ck_assert(ad_ok(a) && ad_ok(b) && ad_ok(a2));
    ck_assert(memcmp(ad_value(a)->data, ad_value(b)->data, 400 * sizeof(float)) == 0); /* same seed */
    ck_assert(memcmp(ad_value(a)->data, ad_value(a2)->data, 400 * sizeof(float)) != 0); /* the stream moves on */
    double s = ad_item(ad_sum(a));
    ck_assert(s > 300 && s < 500); /* about 200 kept, each 2 */
    nn_module_set_training(d1, false);
    ck_assert(!nn_module_training(d1));
    ck_assert(nn_forward(d1, t, xv).id == xv.id);
    ck_assert_ptr_null(nn_dropout(1.0, 1, NULL));
    ck_assert_ptr_null(nn_dropout(-0.1, 1, NULL));
    ad_tape_free(t);
    nn_module_free(d1);
    nn_module_free(d2);
    ad_tensor_free(x);
}
END_TEST

START_TEST(test_batch_norm_module)
{
    nn_module *bn = nn_batch_norm2d(3, 0.1, 1e-5, NULL);
    ck_assert_ptr_nonnull(bn);
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(bn, &ps), 4);
    const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(ps[i].name, names[i]);
        tu_assert_shape(ps[i].value, AD_SHAPE(3));
        ck_assert(i < 2 ? ps[i].grad != NULL : ps[i].grad == NULL); /* buffers: no gradient */
    }
    ck_assert_double_eq(ad_tensor_get(ps[3].value, 0), 1.0);
    ck_assert_int_eq(nn_module_num_weights(bn), 6);
    /* a batch whose channel k has mean k + 1 */
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(4, 3, 2, 2), -1, 1, 6);
    for (int64_t i = 0; i < x->size; i++) ad_tensor_set(x, i, ad_tensor_get(x, i) + (double)((i / 4) % 3 + 1));
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(bn, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    for (int k = 0; k < 3; k++) {
        double s = 0, ss = 0;
        for (int b = 0; b < 4; b++)
            for (int i = 0; i < 4; i++) s += ad_tensor_get(ad_value(y), (b * 3 + k) * 4 + i);
        for (int b = 0; b < 4; b++)
            for (int i = 0; i < 4; i++) ss += pow(ad_tensor_get(ad_value(y), (b * 3 + k) * 4 + i), 2);
        TU_ASSERT_CLOSE(s / 16, 0.0, 1e-6, 0); /* normalized per channel */
        TU_ASSERT_CLOSE(ss / 16, 1.0, 1e-3, 0);
        TU_ASSERT_CLOSE(ad_tensor_get(ps[2].value, k), 0.1 * (k + 1), 0.06, 0); /* moved 10% toward the mean */
    }
    /* eval mode: the running statistics, so one sample gives a batch-independent answer */
    nn_module_set_training(bn, false);
    ad_tensor *x1 = tu_f64(AD_SHAPE(1, 3, 1, 1), (const double[]){1, 2, 3});
    ad_tensor *x132 = tu_to_f32(x1);
    ad_var ye = nn_forward(bn, t, ad_const(t, x132));
    ck_assert_msg(ad_ok(ye), "%s", ad_tape_error(t));
    for (int k = 0; k < 3; k++) {
        double want = (k + 1 - ad_tensor_get(ps[2].value, k)) / sqrt(ad_tensor_get(ps[3].value, k) + 1e-5);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(ye), k), want, 1e-5, 1e-5);
    }
    ad_tape_free(t);
    /* gradients in training mode, F64 */
    nn_module_set_training(bn, true);
    to_f64(bn);
    ad_tensor *x64 = tu_rand(AD_F64, AD_SHAPE(3, 3, 2, 2), -1, 1, 7);
    nn_module_params(bn, &ps);
    for (int k = 0; k < 3; k++) {
        ad_tensor_set(ps[0].value, k, 0.5 + k);
        ad_tensor_set(ps[1].value, k, 0.1 * k);
    }
    check_param_grads(bn, x64);
    check_input_grad(bn, x64);
    ck_assert_ptr_null(nn_batch_norm2d(0, 0.1, 1e-5, NULL));
    nn_module_free(bn);
    ad_tensor_free(x);
    ad_tensor_free(x1);
    ad_tensor_free(x132);
    ad_tensor_free(x64);
}
END_TEST

START_TEST(test_layer_norm_embedding)
{
    nn_module *ln = nn_layer_norm(1, (const int64_t[]){5}, 1e-5, NULL);
    ck_assert_ptr_nonnull(ln);
    to_f64(ln);
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(ln, &ps), 2);
    for (int k = 0; k < 5; k++) ad_tensor_set(ps[0].value, k, 1.0 + 0.1 * k);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3, 5), -2, 2, 8);
    check_param_grads(ln, x);
    check_input_grad(ln, x);
    nn_module_free(ln);
    ad_tensor_free(x);

    ad_rng rng;
    ad_rng_seed(&rng, 10);
    nn_module *e = nn_embedding(7, 4, &rng, NULL);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(nn_module_params(e, &ps), 1);
    tu_assert_shape(ps[0].value, AD_SHAPE(7, 4));
    ad_tensor *ids = ad_tensor_new(AD_F32, AD_SHAPE(2, 3));
    const double iv[6] = {0, 6, 3, 3, 1, 6};
    for (int i = 0; i < 6; i++) ad_tensor_set(ids, i, iv[i]);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(e, t, ad_const(t, ids));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(2, 3, 4));
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++)
            ck_assert_double_eq(ad_tensor_get(ad_value(y), i * 4 + j), ad_tensor_get(ps[0].value, (int64_t)iv[i] * 4 + j));
    nn_zero_grad(e);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    const double counts[7] = {1, 1, 0, 2, 0, 0, 2};
    for (int r = 0; r < 7; r++) ck_assert_double_eq(ad_tensor_get(ps[0].grad, r * 4 + 1), counts[r]);
    ad_tape_reset(t);
    ad_tensor_set(ids, 2, 2.5);
    ck_assert(!ad_ok(nn_forward(e, t, ad_const(t, ids))));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_INDEX);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "embedding"));
    ad_tape_reset(t);
    ad_tensor_set(ids, 2, 7);
    ck_assert(!ad_ok(nn_forward(e, t, ad_const(t, ids))));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_INDEX);
    ad_tape_free(t);
    nn_module_free(e);
    ad_tensor_free(ids);
}
END_TEST

/* ---- recurrent cells against direct loops ---- */

static double sig(double v) { return 1.0 / (1.0 + exp(-v)); }

/* One step by the textbook formulas, with the module's parameters; kind 0 RNN (tanh), 1 LSTM, 2 GRU. */
static void ref_step(int kind, nn_param *ps, int64_t in, int64_t hd, const double *x, double *h, double *c)
{
    int g = kind == 1 ? 4 : kind == 2 ? 3 : 1;
    double a[64], b[64], hn[16], cn[16];
    for (int64_t r = 0; r < g * hd; r++) {
        a[r] = ad_tensor_get(ps[2].value, r);
        b[r] = ad_tensor_get(ps[3].value, r);
        for (int64_t k = 0; k < in; k++) a[r] += ad_tensor_get(ps[0].value, r * in + k) * x[k];
        for (int64_t k = 0; k < hd; k++) b[r] += ad_tensor_get(ps[1].value, r * hd + k) * h[k];
    }
    for (int64_t j = 0; j < hd; j++) {
        if (kind == 0) {
            hn[j] = tanh(a[j] + b[j]);
        } else if (kind == 1) {
            double i = sig(a[j] + b[j]), f = sig(a[hd + j] + b[hd + j]), gg = tanh(a[2 * hd + j] + b[2 * hd + j]);
            double o = sig(a[3 * hd + j] + b[3 * hd + j]);
            cn[j] = f * c[j] + i * gg;
            hn[j] = o * tanh(cn[j]);
        } else {
            double r = sig(a[j] + b[j]), z = sig(a[hd + j] + b[hd + j]);
            double n = tanh(a[2 * hd + j] + r * b[2 * hd + j]);
            hn[j] = (1 - z) * n + z * h[j];
        }
    }
    for (int64_t j = 0; j < hd; j++) {
        h[j] = hn[j];
        if (kind == 1) c[j] = cn[j];
    }
}

static nn_module *make_cell(int kind, int64_t in, int64_t hd, ad_rng *rng)
{
    return kind == 0 ? nn_rnn_cell(in, hd, NN_TANH, rng, NULL) : kind == 1 ? nn_lstm_cell(in, hd, rng, NULL) : nn_gru_cell(in, hd, rng, NULL);
}

START_TEST(test_cells)
{
    const int kind = _i;
    const int64_t n = 2, steps = 4, in = 3, hd = 4;
    ad_rng rng;
    ad_rng_seed(&rng, 20 + (uint64_t)kind);
    nn_module *cell = make_cell(kind, in, hd, &rng);
    ck_assert_ptr_nonnull(cell);
    const char *kinds[3] = {"rnn_cell", "lstm_cell", "gru_cell"};
    ck_assert_str_eq(nn_module_kind(cell), kinds[kind]);
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(cell, &ps), 4);
    int g = kind == 1 ? 4 : kind == 2 ? 3 : 1;
    ck_assert_str_eq(ps[0].name, "weight_ih");
    ck_assert_str_eq(ps[3].name, "bias_hh");
    tu_assert_shape(ps[0].value, AD_SHAPE(g * hd, in));
    tu_assert_shape(ps[1].value, AD_SHAPE(g * hd, hd));
    if (kind == 1) ck_assert_double_eq(ad_tensor_get(ps[2].value, hd), 1.0); /* forget gate bias */
    to_f64(cell);
    nn_module_params(cell, &ps);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(n, steps, in), -1, 1, 30 + (uint64_t)kind);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(cell, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(n, steps, hd));
    for (int64_t b = 0; b < n; b++) {
        double h[4] = {0}, c[4] = {0};
        for (int64_t s = 0; s < steps; s++) {
            double xs[3];
            for (int k = 0; k < in; k++) xs[k] = ad_tensor_get(x, (b * steps + s) * in + k);
            ref_step(kind, ps, in, hd, xs, h, c);
            for (int64_t j = 0; j < hd; j++)
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), (b * steps + s) * hd + j), h[j], 1e-14, 1e-12);
        }
    }
    /* nn_cell_step, step by step, gives the same states */
    ad_var h = AD_NO_VAR, c = AD_NO_VAR;
    for (int64_t s = 0; s < steps; s++) {
        ad_var xs = ad_reshape(ad_slice(ad_const(t, x), 1, s, s + 1), 2, (const int64_t[]){n, in});
        nn_cell_step(cell, t, xs, &h, &c);
    }
    ck_assert_msg(ad_ok(h), "%s", ad_tape_error(t));
    for (int64_t b = 0; b < n; b++)
        for (int64_t j = 0; j < hd; j++)
            TU_ASSERT_CLOSE(ad_tensor_get(ad_value(h), b * hd + j),
                            ad_tensor_get(ad_value(y), (b * steps + steps - 1) * hd + j), 1e-15, 1e-14);
    /* a sequence of the wrong width */
    ad_tensor *bad = tu_f64(AD_SHAPE(1, 2, 5), NULL);
    ck_assert(!ad_ok(nn_forward(cell, t, ad_const(t, bad))));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_free(t);
    /* backpropagation through time: every weight's gradient, and the input's */
    check_param_grads(cell, x);
    check_input_grad(cell, x);
    nn_module_free(cell);
    ad_tensor_free(x);
    ad_tensor_free(bad);
}
END_TEST

START_TEST(test_long_sequence)
{
    /* thousands of steps: a plain loop records them and backward sweeps them without recursion */
    const int64_t steps = tu_quick() ? 300 : 3000;
    ad_rng rng;
    ad_rng_seed(&rng, 40);
    nn_module *mods[3] = {nn_lstm_cell(1, 3, &rng, NULL), nn_last_step(NULL), nn_linear(3, 1, &rng, NULL)};
    nn_module *net = nn_sequential(3, mods, NULL);
    ck_assert_ptr_nonnull(net);
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(2, steps, 1), -1, 1, 41);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(net, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(2, 1));
    nn_zero_grad(net);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    nn_param *p = nn_module_param(net, "0.weight_hh");
    ck_assert_ptr_nonnull(p);
    double s = 0;
    for (int64_t i = 0; i < p->grad->size; i++) s += fabs(ad_tensor_get(p->grad, i));
    ck_assert(s > 0 && isfinite(s));
    ad_tape_free(t);
    nn_module_free(net);
    ad_tensor_free(x);
}
END_TEST

/* ---- the CNN spec ---- */

START_TEST(test_spec)
{
    ad_rng rng;
    ad_rng_seed(&rng, 50);
    nn_error err = {0};
    nn_module *net = nn_model_from_spec("conv:8:5,pool:2,conv:16:5,pool:2,fc:32,fc:10", 1, 28, 28, &rng, &err);
    ck_assert_msg(net != NULL, "%s", err.message);
    /* reshape, conv, relu, pool, conv, relu, pool, flatten, fc, relu, fc */
    nn_param *ps;
    int np = nn_module_params(net, &ps);
    ck_assert_int_eq(np, 8);
    ck_assert_str_eq(ps[0].name, "1.weight");
    tu_assert_shape(ps[0].value, AD_SHAPE(8, 1, 5, 5));
    tu_assert_shape(nn_module_param(net, "8.weight")->value, AD_SHAPE(32, 16 * 7 * 7));
    tu_assert_shape(nn_module_param(net, "10.weight")->value, AD_SHAPE(10, 32));
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(3, 784), 0, 1, 51);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(net, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(3, 10));
    ad_tape_free(t);
    nn_module_free(net);
    /* the other layer kinds, and strides */
    net = nn_model_from_spec("conv:4:3:2,bn,avgpool:2,dropout:0.25,fc:5", 3, 9, 9, &rng, &err);
    ck_assert_msg(net != NULL, "%s", err.message);
    tu_assert_shape(nn_module_param(net, "7.weight")->value, AD_SHAPE(5, 4 * 2 * 2));
    ck_assert_ptr_nonnull(nn_module_param(net, "3.running_var"));
    nn_module_free(net);
    /* errors name the layer */
    const char *bad[] = {"conv:32", "fc:10,conv:3:3", "pool:64", "", "conv:8:5,,zz", "dropout:1.5,fc:2", "fc:0",
                         "avgpool:2:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = (nn_error){0};
        ck_assert_ptr_null(nn_model_from_spec(bad[i], 1, 28, 28, &rng, &err));
        ck_assert_msg(strstr(err.message, "nn_model_from_spec") != NULL, "spec '%s': message '%s'", bad[i], err.message);
    }
    ck_assert_ptr_null(nn_model_from_spec(NULL, 1, 28, 28, &rng, &err));
    ad_tensor_free(x);
}
END_TEST

/* ---- checkpoints carry the running statistics ---- */

START_TEST(test_checkpoint_running_stats)
{
    ad_rng rng;
    ad_rng_seed(&rng, 60);
    nn_error err = {0};
    char path[64];
    nn_module *a = nn_model_from_spec("conv:4:3,bn,pool:2,fc:3", 2, 6, 6, &rng, &err);
    nn_module *b = nn_model_from_spec("conv:4:3,bn,pool:2,fc:3", 2, 6, 6, &rng, &err);
    ck_assert_msg(a && b, "%s", err.message);
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(5, 72), -1, 2, 61);
    ad_tape *t = ad_tape_new();
    ck_assert(ad_ok(nn_forward(a, t, ad_const(t, x)))); /* training: moves a's running statistics */
    nn_param *rm = nn_module_param(a, "3.running_mean"), *rv = nn_module_param(a, "3.running_var");
    ck_assert_ptr_nonnull(rm);
    ck_assert(ad_tensor_get(rm->value, 0) != 0.0);
    snprintf(path, sizeof path, "/tmp/ad_test_bn_%ld.safetensors", (long)getpid());
    ck_assert_msg(nn_save(path, a, NULL, NULL, &err) == AD_OK, "%s", err.message);
    ck_assert_msg(nn_load(path, b, NULL, NULL, &err) == AD_OK, "%s", err.message);
    unlink(path);
    for (int k = 0; k < 4; k++) {
        ck_assert_double_eq(ad_tensor_get(nn_module_param(b, "3.running_mean")->value, k), ad_tensor_get(rm->value, k));
        ck_assert_double_eq(ad_tensor_get(nn_module_param(b, "3.running_var")->value, k), ad_tensor_get(rv->value, k));
    }
    /* so both give the same answers in eval mode */
    nn_module_set_training(a, false);
    nn_module_set_training(b, false);
    ad_tape_reset(t);
    ad_var ya = nn_forward(a, t, ad_const(t, x)), yb = nn_forward(b, t, ad_const(t, x));
    ck_assert(ad_ok(ya) && ad_ok(yb));
    ck_assert(memcmp(ad_value(ya)->data, ad_value(yb)->data, 15 * sizeof(float)) == 0);
    ad_tape_free(t);
    nn_module_free(a);
    nn_module_free(b);
    ad_tensor_free(x);
}
END_TEST

static Suite *layers_suite(void)
{
    Suite *s = suite_create("nn_layers");
    TCase *c = tcase_create("layers");
    tcase_add_test(c, test_conv_module);
    tcase_add_test(c, test_pool_flatten_reshape);
    tcase_add_test(c, test_dropout_module);
    tcase_add_test(c, test_batch_norm_module);
    tcase_add_test(c, test_layer_norm_embedding);
    tcase_set_timeout(c, 300);
    suite_add_tcase(s, c);
    TCase *r = tcase_create("recurrent");
    tcase_add_loop_test(r, test_cells, 0, 3);
    tcase_add_test(r, test_long_sequence);
    tcase_set_timeout(r, 300);
    suite_add_tcase(s, r);
    TCase *p = tcase_create("spec");
    tcase_add_test(p, test_spec);
    tcase_add_test(p, test_checkpoint_running_stats);
    tcase_set_timeout(p, 300);
    suite_add_tcase(s, p);
    return s;
}

int main(void) { return tu_run(layers_suite()); }

/* test_nn_blocks.c: conv1d, group norm, attention, transformer block and positional modules, and nn_gradcheck_module itself. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

/* nn_gradcheck_module passes on m with input x (and prints the report when it does not). */
static void module_passes(nn_module *m, int n, const ad_tensor *const *in, const bool *wrt, bool fast)
{
    ck_assert_ptr_nonnull(m);
    ad_check_opts o = ad_check_defaults();
    o.fast_mode = fast;
    ad_check_report rep;
    ad_status st = nn_gradcheck_module_n(m, n, in, wrt, &o, &rep);
    if (st != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_msg(st == AD_OK, "%s: %s (%s)", nn_module_kind(m), ad_status_str(st), rep.message);
    ck_assert_int_gt(rep.checked, 0);
}

static ad_tensor *rnd(int nd, const int64_t *shape, uint64_t seed) { return tu_rand(AD_F64, nd, shape, -1, 1, seed); }

START_TEST(conv1d_and_group_norm_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    ad_tensor *x = rnd(AD_SHAPE(2, 4, 6), 2);
    nn_module *c = nn_conv1d(4, 6, 3, 2, 1, 1, 2, true, AD_F64, &rng, NULL);
    module_passes(c, 1, (const ad_tensor *const[]){x}, NULL, false);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(c, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 3, (const int64_t[]){2, 6, 3});
    nn_module *g = nn_group_norm(2, 4, 1e-5, AD_F64, NULL);
    /* non-trivial affine parameters */
    nn_param *ps;
    int np = nn_module_params(g, &ps);
    ck_assert_int_eq(np, 2);
    ad_rng_fill_uniform(&rng, ps[0].value, 0.5, 1.5);
    ad_rng_fill_uniform(&rng, ps[1].value, -0.5, 0.5);
    module_passes(g, 1, (const ad_tensor *const[]){x}, NULL, false);
    ad_tape_free(t);
    nn_module_free(c);
    nn_module_free(g);
    ad_tensor_free(x);
    nn_error e = {AD_OK, ""};
    ck_assert_ptr_null(nn_group_norm(3, 4, 1e-5, AD_F64, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "nn_group_norm"));
    ck_assert_ptr_null(nn_conv1d(4, 6, 3, 1, 0, 1, 4, true, AD_F64, NULL, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "nn_conv1d"));
}
END_TEST

START_TEST(attention_module_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    const int64_t sx[3] = {2, 3, 4}, sk[3] = {2, 5, 4};
    ad_tensor *x = rnd(3, sx, 4), *kv = rnd(3, sk, 5), *mask = rnd(4, (const int64_t[]){2, 1, 1, 5}, 6);
    for (int causal = 0; causal < 2; causal++) {
        nn_module *m = nn_multihead_attention(4, 2, causal, AD_F64, &rng, NULL);
        nn_param *ps;
        nn_module_params(m, &ps);
        ad_rng_fill_uniform(&rng, ps[1].value, -0.3, 0.3); /* biases away from zero */
        module_passes(m, 1, (const ad_tensor *const[]){x}, NULL, false);
        /* cross-attention with an additive mask: every input checked, the mask too */
        module_passes(m, 4, (const ad_tensor *const[]){x, kv, kv, mask}, NULL, false);
        nn_module_free(m);
    }
    ad_tensor_free(x);
    ad_tensor_free(kv);
    ad_tensor_free(mask);
}
END_TEST

/* One head is the plain attention of the projections: out_proj(attention(x Wq^T + bq, ...)). */
START_TEST(attention_module_is_the_composition)
{
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    nn_module *m = nn_multihead_attention(4, 1, true, AD_F64, &rng, NULL);
    nn_module *m2 = nn_multihead_attention(4, 2, false, AD_F64, &rng, NULL);
    ad_tensor *x = rnd(AD_SHAPE(2, 3, 4), 8);
    ad_tape *t = ad_tape_new();
    ad_var vx = ad_const(t, x);
    ad_var y = nn_forward(m, t, vx);
    ad_var w = ad_const(t, nn_module_param(m, "in_proj_weight")->value);
    ad_var b = ad_const(t, nn_module_param(m, "in_proj_bias")->value);
    ad_var p[3];
    for (int i = 0; i < 3; i++)
        p[i] = ad_add(ad_matmul_t(vx, ad_slice(w, 0, 4 * i, 4 * i + 4), false, true), ad_slice(b, 0, 4 * i, 4 * i + 4));
    ad_var z = ad_attention(p[0], p[1], p[2], AD_NO_VAR, true, 0.0);
    z = ad_add(ad_matmul_t(z, ad_const(t, nn_module_param(m, "out_proj.weight")->value), false, true),
               ad_const(t, nn_module_param(m, "out_proj.bias")->value));
    ck_assert_msg(ad_ok(y) && ad_ok(z), "%s", ad_tape_error(t));
    for (int64_t i = 0; i < 24; i++) TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), i), ad_tensor_get(ad_value(z), i), 1e-14, 1e-12);
    /* self-attention through (x) and through (x, x, x) agree */
    ad_var y1 = nn_forward(m2, t, vx), y3 = nn_forward_n(m2, t, 3, (const ad_var[]){vx, vx, vx});
    ck_assert_msg(ad_ok(y1) && ad_ok(y3), "%s", ad_tape_error(t));
    for (int64_t i = 0; i < 24; i++) TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y1), i), ad_tensor_get(ad_value(y3), i), 1e-14, 1e-12);
    /* a wrong width is an error naming the module */
    ad_var bad = ad_full(t, AD_F64, 3, (const int64_t[]){2, 3, 5}, 0.0);
    ck_assert(!ad_ok(nn_forward(m2, t, bad)));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "multihead_attention"));
    ad_tape_free(t);
    nn_module_free(m);
    nn_module_free(m2);
    ad_tensor_free(x);
    nn_error e = {AD_OK, ""};
    ck_assert_ptr_null(nn_multihead_attention(6, 4, false, AD_F64, &rng, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
}
END_TEST

START_TEST(transformer_block_gradcheck_and_modes)
{
    ad_rng rng;
    ad_rng_seed(&rng, 9);
    nn_transformer_opts o = nn_transformer_defaults(4, 2);
    o.d_ff = 6;
    o.dtype = AD_F64;
    o.causal = true;
    nn_module *b = nn_transformer_block(&o, &rng, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(nn_module_param(b, "self_attn.in_proj_weight"));
    ck_assert_ptr_nonnull(nn_module_param(b, "linear2.bias"));
    ck_assert_ptr_nonnull(nn_module_param(b, "norm1.weight"));
    nn_param *ps;
    int np = nn_module_params(b, &ps);
    for (int i = 0; i < np; i++) /* layer norms and biases off their initial 1 and 0 */
        if (strstr(ps[i].name, "norm") || strstr(ps[i].name, "bias"))
            ad_rng_fill_uniform(&rng, ps[i].value, strstr(ps[i].name, "weight") ? 0.5 : -0.5, 1.0);
    ad_tensor *x = rnd(AD_SHAPE(2, 3, 4), 10);
    /* dropout 0.1: training differs from evaluation, which is deterministic */
    ad_tape *t = ad_tape_new();
    ad_var y_train = nn_forward(b, t, ad_const(t, x));
    nn_module_set_training(b, false);
    ad_var y_eval = nn_forward(b, t, ad_const(t, x)), y_eval2 = nn_forward(b, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y_train) && ad_ok(y_eval), "%s", ad_tape_error(t));
    bool differ = false;
    for (int64_t i = 0; i < 24; i++) {
        differ |= ad_tensor_get(ad_value(y_train), i) != ad_tensor_get(ad_value(y_eval), i);
        ck_assert(ad_tensor_get(ad_value(y_eval), i) == ad_tensor_get(ad_value(y_eval2), i));
    }
    ck_assert(differ);
    ad_tape_free(t);
    module_passes(b, 1, (const ad_tensor *const[]){x}, NULL, false);
    module_passes(b, 1, (const ad_tensor *const[]){x}, NULL, true);
    /* with a padding mask as a second, unchecked input */
    ad_tensor *mask = tu_f64(AD_SHAPE(2, 1, 1, 3), (const double[]){0, 0, -INFINITY, 0, -INFINITY, 0});
    module_passes(b, 2, (const ad_tensor *const[]){x, mask}, (const bool[]){true, false}, false);
    nn_module_free(b);
    ad_tensor_free(x);
    ad_tensor_free(mask);
}
END_TEST

START_TEST(positional_embeddings)
{
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    nn_module *l = nn_positional_learned(5, 4, AD_F64, &rng, NULL), *s = nn_positional_sinusoidal(4, NULL);
    ad_tensor *x = rnd(AD_SHAPE(2, 3, 4), 12);
    module_passes(l, 1, (const ad_tensor *const[]){x}, NULL, false);
    module_passes(s, 1, (const ad_tensor *const[]){x}, NULL, false);
    ad_tape *t = ad_tape_new();
    ad_var z = ad_full(t, AD_F64, 3, (const int64_t[]){1, 3, 4}, 0.0);
    ad_var pe = nn_forward(s, t, z);
    ck_assert_msg(ad_ok(pe), "%s", ad_tape_error(t));
    /* PE[p, 2i] = sin(p / 10000^(2i/4)), PE[p, 2i+1] = cos(...) */
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(pe), 0), 0.0, 0, 0);
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(pe), 1), 1.0, 0, 0);
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(pe), 4), sin(1.0), 1e-15, 0);
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(pe), 7), cos(0.01), 1e-15, 0);
    TU_ASSERT_CLOSE(ad_tensor_get(ad_value(pe), 10), sin(0.02), 1e-15, 0);
    /* learned: x + weight[0:T]; a sequence longer than max_len is an error */
    ad_var lz = nn_forward(l, t, z);
    const ad_tensor *w = nn_module_param(l, "weight")->value;
    for (int64_t i = 0; i < 12; i++) ck_assert(ad_tensor_get(ad_value(lz), i) == ad_tensor_get(w, i));
    ad_var long_x = ad_full(t, AD_F64, 3, (const int64_t[]){1, 6, 4}, 0.0);
    ck_assert(!ad_ok(nn_forward(l, t, long_x)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "learned_positional"));
    ad_tape_free(t);
    nn_module_free(l);
    nn_module_free(s);
    ad_tensor_free(x);
}
END_TEST

/* ---- nn_gradcheck_module is not vacuous ---- */

/* y = x * a + detach(b): b's gradient is lost, which the check must report. */
static ad_var lossy_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    return ad_add(ad_mul(in[0], nn_module_var(m, t, 0)), ad_detach(nn_module_var(m, t, 1)));
}
static const nn_module_ops lossy_ops = {.kind = "lossy", .n_inputs = 1, .forward = lossy_forward};

START_TEST(gradcheck_module_catches_a_lost_gradient)
{
    nn_module *m = nn_module_new(&lossy_ops, NULL, NULL);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(nn_module_add_param(m, "a", tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1, 1), true, NULL));
    ck_assert_ptr_nonnull(nn_module_add_param(m, "b", tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1, 2), true, NULL));
    ad_tensor *x = rnd(AD_SHAPE(2, 3), 3);
    ad_check_report rep;
    for (int fast = 0; fast < 2; fast++) {
        ad_check_opts o = ad_check_defaults();
        o.fast_mode = fast;
        ck_assert_int_eq(nn_gradcheck_module(m, x, &o, &rep), AD_ERR_NUMERIC);
        ck_assert_int_eq(rep.status, AD_ERR_NUMERIC);
    }
    ck_assert_ptr_nonnull(strstr(rep.message, "v^T J u"));
    ck_assert_int_eq(nn_gradcheck_module(m, x, NULL, &rep), AD_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(rep.message, "parameter 'b'"));
    TU_ASSERT_CLOSE(rep.analytic, 0.0, 0, 0);
    TU_ASSERT_CLOSE(rep.numeric, 1.0, 1e-8, 0);
    /* freezing b makes the rest pass; the parameters are left as they were */
    double a0 = ad_tensor_get(nn_module_param(m, "a")->value, 0);
    ck_assert_int_eq(nn_module_set_requires_grad(m, "b", false, NULL), AD_OK);
    ck_assert_int_eq(nn_gradcheck_module(m, x, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.checked, (6 + 3) * 6); /* input [2,3] and a [3], against 6 outputs */
    ck_assert(ad_tensor_get(nn_module_param(m, "a")->value, 0) == a0);
    nn_module_free(m);
    /* F32 parameters and inputs are refused, naming them */
    ad_rng rng;
    ad_rng_seed(&rng, 4);
    nn_module *l32 = nn_linear(3, 2, &rng, NULL);
    ck_assert_int_eq(nn_gradcheck_module(l32, x, NULL, &rep), AD_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(rep.message, "weight"));
    nn_module_free(l32);
    nn_module *l64 = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_UNIFORM, 1.0, AD_F64, &rng, NULL);
    ad_tensor *x32 = tu_to_f32(x);
    ck_assert_int_eq(nn_gradcheck_module(l64, x32, NULL, &rep), AD_ERR_DTYPE);
    /* a forward error comes back with its message */
    ad_tensor *xbad = rnd(AD_SHAPE(2, 4), 5);
    ck_assert_int_eq(nn_gradcheck_module(l64, xbad, NULL, &rep), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(rep.message, "forward"));
    /* the grad tensors keep what they held */
    ad_tensor_fill(nn_module_param(l64, "weight")->grad, 7.0);
    ck_assert_int_eq(nn_gradcheck_module(l64, x, NULL, &rep), AD_OK);
    ck_assert(ad_tensor_get(nn_module_param(l64, "weight")->grad, 3) == 7.0);
    nn_module_free(l64);
    ad_tensor_free(x);
    ad_tensor_free(x32);
    ad_tensor_free(xbad);
}
END_TEST

/* The library's other modules in F64: embedding (ids unchecked), layer norm. */
START_TEST(f64_modules_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 13);
    nn_module *e = nn_embedding_ex(5, 3, AD_F64, &rng, NULL);
    ad_tensor *ids = tu_f64(AD_SHAPE(2, 2), (const double[]){0, 4, 2, 2});
    module_passes(e, 1, (const ad_tensor *const[]){ids}, (const bool[]){false}, false);
    nn_module *ln = nn_layer_norm_ex(1, (const int64_t[]){4}, 1e-5, AD_F64, NULL);
    ad_tensor *x = rnd(AD_SHAPE(3, 4), 14);
    nn_param *ps;
    nn_module_params(ln, &ps);
    ad_rng_fill_uniform(&rng, ps[0].value, 0.5, 1.5);
    module_passes(ln, 1, (const ad_tensor *const[]){x}, NULL, false);
    nn_module *tok = nn_tokens_from_image(NULL);
    ad_tensor *img = rnd(AD_SHAPE(2, 3, 2, 2), 15);
    module_passes(tok, 1, (const ad_tensor *const[]){img}, NULL, false);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(tok, t, ad_const(t, img));
    tu_assert_shape(ad_value(y), 3, (const int64_t[]){2, 4, 3});
    ck_assert(ad_tensor_get(ad_value(y), 1 * 3 + 2) == ad_tensor_get(img, 2 * 4 + 1)); /* token 1, channel 2 */
    ad_tape_free(t);
    nn_module_free(tok);
    ad_tensor_free(img);
    nn_module_free(e);
    nn_module_free(ln);
    ad_tensor_free(ids);
    ad_tensor_free(x);
}
END_TEST

/* nn_gradcheck_module passes on m with input x and really checked each of the out outputs against
** every element of the input and of every trainable parameter (full Jacobian mode). */
static void module_checks_all(nn_module *m, const ad_tensor *x, int64_t out)
{
    ck_assert_ptr_nonnull(m);
    ad_check_report rep;
    ad_status st = nn_gradcheck_module(m, x, NULL, &rep);
    if (st != AD_OK) ad_check_report_print(&rep, stderr);
    ck_assert_msg(st == AD_OK, "%s: %s (%s)", nn_module_kind(m), ad_status_str(st), rep.message);
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    int64_t elems = x->size;
    for (int i = 0; i < np; i++)
        if (ps[i].grad) elems += ps[i].value->size;
    ck_assert_int_eq(rep.checked, out * elems);
}

/* The recurrent cells in F64 (_ex): every weight and the input against central differences,
** over several steps, one step and one sample; the F32 cell computes the same function. */
START_TEST(recurrent_cells_f64_gradcheck)
{
    static const int64_t seqs[3][3] = {{2, 3, 2}, {1, 1, 2}, {3, 4, 2}};
    for (int kind = 0; kind < 4; kind++)
        for (int s = 0; s < 3; s++) {
            ad_rng rng;
            ad_rng_seed(&rng, 40 + (uint64_t)kind);
            nn_module *m = kind == 0   ? nn_rnn_cell_ex(2, 3, NN_TANH, AD_F64, &rng, NULL)
                           : kind == 1 ? nn_rnn_cell_ex(2, 3, NN_RELU, AD_F64, &rng, NULL)
                           : kind == 2 ? nn_lstm_cell_ex(2, 3, AD_F64, &rng, NULL)
                                       : nn_gru_cell_ex(2, 3, AD_F64, &rng, NULL);
            ck_assert_ptr_nonnull(m);
            ck_assert_int_eq(nn_module_param(m, "weight_hh")->value->dtype, AD_F64);
            ad_tensor *x = rnd(3, seqs[s], 50 + (uint64_t)s);
            module_checks_all(m, x, seqs[s][0] * seqs[s][1] * 3);
            /* the F32 cell drawn from the same seed: the same weights, rounded, and outputs */
            ad_rng_seed(&rng, 40 + (uint64_t)kind);
            nn_module *m32 = kind == 0   ? nn_rnn_cell(2, 3, NN_TANH, &rng, NULL)
                             : kind == 1 ? nn_rnn_cell(2, 3, NN_RELU, &rng, NULL)
                             : kind == 2 ? nn_lstm_cell(2, 3, &rng, NULL)
                                         : nn_gru_cell(2, 3, &rng, NULL);
            ck_assert_int_eq(nn_module_param(m32, "weight_ih")->value->dtype, AD_F32);
            ad_tensor *x32 = tu_to_f32(x);
            ad_tape *t = ad_tape_new();
            ad_var y = nn_forward(m, t, ad_const(t, x)), y32 = nn_forward(m32, t, ad_const(t, x32));
            ck_assert_msg(ad_ok(y) && ad_ok(y32), "%s", ad_tape_error(t));
            tu_assert_shape(ad_value(y), 3, (const int64_t[]){seqs[s][0], seqs[s][1], 3});
            for (int64_t i = 0; i < ad_value(y)->size; i++)
                TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y32), i), ad_tensor_get(ad_value(y), i), 1e-5, 1e-5);
            ad_tape_free(t);
            ad_tensor_free(x32);
            ad_tensor_free(x);
            nn_module_free(m32);
            nn_module_free(m);
        }
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_error e = {AD_OK, ""};
    ck_assert_ptr_null(nn_lstm_cell_ex(2, 3, (ad_dtype)77, &rng, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "dtype"));
    ck_assert_ptr_null(nn_rnn_cell_ex(2, 3, NN_SIGMOID, AD_F64, &rng, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "tanh or relu"));
}
END_TEST

/* nn_cell_step by hand: x [N, 2 in] is two steps of in features; h (and c) from the inputs' own
** first step, then the second step from the state left by the first; y = h after two steps. */
static ad_var stepper_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    nn_module *cell = nn_module_child(m, 0);
    const ad_tensor *v = ad_value(in[0]);
    int64_t half = v->shape[1] / 2;
    ad_var h = AD_NO_VAR, c = AD_NO_VAR;
    nn_cell_step(cell, t, ad_slice(in[0], 1, 0, half), &h, &c);
    return nn_cell_step(cell, t, ad_slice(in[0], 1, half, 2 * half), &h, &c);
}
static const nn_module_ops stepper_ops = {.kind = "stepper", .n_inputs = 1, .forward = stepper_forward};

START_TEST(cell_step_f64_gradcheck)
{
    for (int kind = 0; kind < 3; kind++) {
        ad_rng rng;
        ad_rng_seed(&rng, 70 + (uint64_t)kind);
        nn_module *cell = kind == 0   ? nn_rnn_cell_ex(2, 3, NN_TANH, AD_F64, &rng, NULL)
                          : kind == 1 ? nn_lstm_cell_ex(2, 3, AD_F64, &rng, NULL)
                                      : nn_gru_cell_ex(2, 3, AD_F64, &rng, NULL);
        nn_module *m = nn_module_new(&stepper_ops, NULL, NULL);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(nn_module_add_child(m, "cell", cell, NULL), AD_OK);
        ad_tensor *x = rnd(AD_SHAPE(2, 4), 80 + (uint64_t)kind);
        module_checks_all(m, x, 2 * 3);
        ad_tensor_free(x);
        nn_module_free(m);
    }
}
END_TEST

/* Batch normalization in F64 (_ex): training (batch statistics) and evaluation (running
** statistics), images and [N, C] rows; the check leaves the running statistics as they were. */
START_TEST(batch_norm_f64_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 60);
    nn_module *bn = nn_batch_norm2d_ex(3, 0.1, 1e-5, AD_F64, NULL);
    ck_assert_ptr_nonnull(bn);
    ad_rng_fill_uniform(&rng, nn_module_param(bn, "weight")->value, 0.5, 1.5);
    ad_rng_fill_uniform(&rng, nn_module_param(bn, "bias")->value, -0.5, 0.5);
    ad_tensor *rm = nn_module_param(bn, "running_mean")->value, *rv = nn_module_param(bn, "running_var")->value;
    ck_assert_int_eq(rm->dtype, AD_F64);
    ck_assert_ptr_null(nn_module_param(bn, "running_mean")->grad); /* a buffer, not checked */
    static const int64_t shapes[3][4] = {{4, 3, 2, 2}, {1, 3, 1, 2}, {5, 3, 0, 0}};
    for (int s = 0; s < 3; s++) {
        ad_tensor *x = rnd(s == 2 ? 2 : 4, shapes[s], 61 + (uint64_t)s);
        nn_module_set_training(bn, true);
        module_checks_all(bn, x, x->size);
        ck_assert(ad_tensor_get(rm, 1) == 0.0 && ad_tensor_get(rv, 1) == 1.0);
        ad_rng_fill_uniform(&rng, rm, -0.5, 0.5);
        ad_rng_fill_uniform(&rng, rv, 0.5, 2.0);
        nn_module_set_training(bn, false);
        module_checks_all(bn, x, x->size);
        ad_tensor_fill(rm, 0.0);
        ad_tensor_fill(rv, 1.0);
        ad_tensor_free(x);
    }
    /* a training forward updates the F64 running statistics */
    ad_tensor *x = rnd(AD_SHAPE(4, 3, 2, 2), 64);
    nn_module_set_training(bn, true);
    ad_tape *t = ad_tape_new();
    ck_assert(ad_ok(nn_forward(bn, t, ad_const(t, x))));
    ck_assert(ad_tensor_get(rm, 0) != 0.0 && ad_tensor_get(rv, 0) != 1.0);
    ad_tape_free(t);
    ad_tensor_free(x);
    nn_module_free(bn);
    nn_error e = {AD_OK, ""};
    ck_assert_ptr_null(nn_batch_norm2d_ex(3, 0.1, 1e-5, (ad_dtype)77, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "dtype"));
    nn_module *b32 = nn_batch_norm2d(3, 0.1, 1e-5, NULL);
    ck_assert_int_eq(nn_module_param(b32, "running_var")->value->dtype, AD_F32);
    nn_module_free(b32);
}
END_TEST

/* The CLI's model spec with attention layers. */
START_TEST(spec_with_attention)
{
    ad_rng rng;
    ad_rng_seed(&rng, 21);
    nn_error e = {AD_OK, ""};
    nn_module *m = nn_model_from_spec("conv:8:3,pool:2,attn:2,attn:4:16,fc:10", 1, 8, 8, &rng, &e);
    ck_assert_msg(m != NULL, "%s", e.message);
    ck_assert_ptr_nonnull(nn_module_param(m, "6.self_attn.in_proj_weight"));
    ck_assert_ptr_nonnull(nn_module_param(m, "5.weight")); /* the position embeddings [16, 8] */
    ck_assert_int_eq(nn_module_param(m, "5.weight")->value->shape[0], 16);
    ck_assert_int_eq(nn_module_param(m, "7.linear1.weight")->value->shape[0], 16);
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(3, 64), 0, 1, 22);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(m, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 2, (const int64_t[]){3, 10});
    ck_assert_int_eq(ad_backward(nn_loss_cross_entropy(y, (const int64_t[]){1, 2, 3}), NULL, 0), AD_OK);
    ad_tape_free(t);
    nn_module_free(m);
    ad_tensor_free(x);
    ck_assert_ptr_null(nn_model_from_spec("conv:8:3,attn:3,fc:10", 1, 8, 8, &rng, &e));
    ck_assert_int_eq(e.status, AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(e.message, "heads"));
    ck_assert_ptr_null(nn_model_from_spec("conv:8:3,attn:2,conv:8:3,fc:10", 1, 8, 8, &rng, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_null(nn_model_from_spec("fc:8,attn:2", 1, 8, 8, &rng, &e));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_blocks");
    TCase *c = tcase_create("modules");
    tcase_set_timeout(c, 600);
    tcase_add_test(c, conv1d_and_group_norm_gradcheck);
    tcase_add_test(c, attention_module_gradcheck);
    tcase_add_test(c, attention_module_is_the_composition);
    tcase_add_test(c, transformer_block_gradcheck_and_modes);
    tcase_add_test(c, positional_embeddings);
    tcase_add_test(c, f64_modules_gradcheck);
    tcase_add_test(c, recurrent_cells_f64_gradcheck);
    tcase_add_test(c, cell_step_f64_gradcheck);
    tcase_add_test(c, batch_norm_f64_gradcheck);
    tcase_add_test(c, spec_with_attention);
    suite_add_tcase(s, c);
    TCase *g = tcase_create("gradcheck_module");
    tcase_add_test(g, gradcheck_module_catches_a_lost_gradient);
    suite_add_tcase(s, g);
    return tu_run(s);
}

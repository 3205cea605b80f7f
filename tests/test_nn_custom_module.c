/* test_nn_custom_module.c: modules written outside the library on nn_module.h: parameters, children, multi-input forward, freezing, containers, the error record. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "test_util.h"

/* ---- the worked example of nn_module.h: y = a * x + b elementwise ---- */

typedef struct affine {
    int64_t n;
} affine;

static int affine_frees; /* counts ops.free calls, to check ownership */

static ad_var affine_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    return ad_add(ad_mul(in[0], nn_module_var(m, t, 0)), nn_module_var(m, t, 1));
}

static void affine_free(nn_module *m)
{
    affine_frees++;
    free(nn_module_state(m));
}

static const nn_module_ops affine_ops = {.kind = "affine", .n_inputs = 1, .forward = affine_forward, .free = affine_free};

static nn_module *affine_new(int64_t n, ad_dtype dt, nn_error *err)
{
    affine *s = malloc(sizeof *s);
    if (!s) {
        nn_error_set(err, AD_ERR_NOMEM, "affine_new: out of memory");
        return NULL;
    }
    s->n = n;
    nn_module *m = nn_module_new(&affine_ops, s, err);
    if (!m) return NULL;
    ad_tensor *a = ad_tensor_new(dt, AD_SHAPE(n)), *b = ad_tensor_new(dt, AD_SHAPE(n));
    if (a) ad_tensor_fill(a, 1.0);
    /* both calls run: each takes its tensor whether or not the other failed */
    bool ok_a = nn_module_add_param(m, "a", a, true, err);
    bool ok_b = nn_module_add_param(m, "b", b, true, err);
    if (!ok_a || !ok_b) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* sum(sin(m(x))) on a fresh tape; the gradient goes into m's grad tensors when backward is set. */
static double affine_loss(nn_module *m, const ad_tensor *x, bool backward)
{
    ad_tape *t = ad_tape_new();
    ad_var y = ad_sum(ad_sin(nn_forward(m, t, ad_const(t, x))));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    double v = ad_item(y);
    if (backward) ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ad_tape_free(t);
    return v;
}

/* Central differences of affine_loss over every element of every parameter of m, against
** the gradients backward left in the grad tensors (float64, PyTorch's default tolerances). */
static void check_param_grads(nn_module *m, const ad_tensor *x)
{
    nn_zero_grad(m);
    affine_loss(m, x, true);
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    for (int p = 0; p < np; p++)
        for (int64_t i = 0; i < ps[p].value->size; i++) {
            double v = ad_tensor_get(ps[p].value, i), eps = 1e-6;
            ad_tensor_set(ps[p].value, i, v + eps);
            double up = affine_loss(m, x, false);
            ad_tensor_set(ps[p].value, i, v - eps);
            double down = affine_loss(m, x, false);
            ad_tensor_set(ps[p].value, i, v);
            double num = (up - down) / (2 * eps), ana = ad_tensor_get(ps[p].grad, i);
            ck_assert_msg(fabs(ana - num) <= 1e-5 + 1e-3 * fabs(num), "%s[%lld]: analytic %.10g, numeric %.10g",
                          ps[p].name, (long long)i, ana, num);
        }
}

START_TEST(test_affine_module)
{
    nn_error e = {0};
    affine_frees = 0;
    nn_module *m = affine_new(3, AD_F64, &e);
    ck_assert_msg(m != NULL, "%s", e.message);
    ck_assert_str_eq(nn_module_kind(m), "affine");
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(m, &ps), 2);
    ck_assert_str_eq(ps[0].name, "a");
    ck_assert_str_eq(ps[1].name, "b");
    ck_assert(ps[0].requires_grad && ps[1].requires_grad);
    ck_assert_int_eq(nn_module_num_weights(m), 6);
    ad_tensor_set(ps[0].value, 1, -2.0);
    ad_tensor_set(ps[1].value, 2, 0.5);

    /* forward broadcasts over a batch [2, 3] */
    ad_tensor *x = tu_f64(AD_SHAPE(2, 3), (const double[]){1, 2, 3, -1, 0.25, 4});
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(m, t, ad_const(t, x));
    ck_assert(ad_ok(y));
    tu_assert_values(ad_value(y), (const double[]){1, -4, 3.5, -1, -0.5, 4.5}, 0, 0);
    ad_tape_free(t);

    /* its parameters' gradients against central differences */
    ad_rng r;
    ad_rng_seed(&r, 3);
    ad_rng_fill_uniform(&r, ps[0].value, -1, 1);
    ad_rng_fill_uniform(&r, ps[1].value, -1, 1);
    check_param_grads(m, x);

    /* and it trains: fit y = 2 x - 1 with SGD through nn_train_step */
    nn_optim_opts oo = nn_optim_defaults("sgd");
    oo.lr = 0.1;
    nn_optim *o = nn_optim_for("sgd", m, &oo, &e);
    ck_assert_msg(o != NULL, "%s", e.message);
    ad_tensor *tx = tu_f64(AD_SHAPE(4, 3), (const double[]){-1, 0, 1, 2, -2, 0.5, 1, 1, -1, 0, 3, 2});
    ad_tensor *ty = tu_f64(AD_SHAPE(4, 3), NULL);
    for (int i = 0; i < 12; i++) ad_tensor_set(ty, i, 2 * ad_tensor_get(tx, i) - 1);
    t = ad_tape_new();
    nn_step_result res;
    for (int s = 0; s < 2000; s++) {
        ad_tape_reset(t);
        ad_var l = nn_loss_mse(nn_forward(m, t, ad_const(t, tx)), ad_const(t, ty));
        ck_assert_msg(nn_train_step(o, l, NULL, &res, &e) == AD_OK, "%s", e.message);
        ck_assert(res.updated);
    }
    ck_assert_msg(res.loss < 1e-8, "loss %g", res.loss);
    for (int i = 0; i < 3; i++) {
        TU_ASSERT_CLOSE(ad_tensor_get(ps[0].value, i), 2.0, 1e-4, 0);
        TU_ASSERT_CLOSE(ad_tensor_get(ps[1].value, i), -1.0, 1e-4, 0);
    }
    ad_tape_free(t);
    nn_optim_free(o);
    nn_module_free(m);
    ck_assert_int_eq(affine_frees, 1);
    ad_tensor_free(x);
    ad_tensor_free(tx);
    ad_tensor_free(ty);
}
END_TEST

/* ---- a container written outside the library, with a child holding a sequential ---- */

static ad_var head_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    /* scale * layers(x) */
    return ad_mul(nn_forward(nn_module_child(m, 0), t, in[0]), nn_module_var(m, t, 0));
}

static const nn_module_ops head_ops = {.kind = "head", .n_inputs = 1, .forward = head_forward};

START_TEST(test_container_names_and_rules)
{
    nn_error e = {0};
    ad_rng rng;
    ad_rng_seed(&rng, 5);
    nn_module *m = nn_module_new(&head_ops, NULL, &e);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(nn_module_add_param(m, "scale", ad_tensor_from(AD_F32, AD_SHAPE(1), (float[]){2}), true, &e));
    nn_module *layers = nn_sequential(3,
                                      (nn_module *[]){nn_linear(4, 3, &rng, &e), nn_activation(NN_TANH, &e),
                                                      nn_linear(3, 2, &rng, &e)},
                                      &e);
    ck_assert_msg(layers != NULL, "%s", e.message);
    ck_assert_int_eq(nn_module_add_child(m, "layers", layers, &e), AD_OK);
    /* own parameters first, then the child's under its name */
    static const char *const want[] = {"scale", "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"};
    nn_param *ps;
    ck_assert_int_eq(nn_module_params(m, &ps), 5);
    for (int i = 0; i < 5; i++) ck_assert_str_eq(ps[i].name, want[i]);
    ck_assert_ptr_eq(nn_module_param(m, "layers.2.bias")->value, nn_module_param(layers, "2.bias")->value);
    ck_assert_int_eq(nn_module_num_children(m), 1);
    ck_assert_ptr_eq(nn_module_child(m, 0), layers);
    ck_assert_str_eq(nn_module_child_name(m, 0), "layers");
    ck_assert_ptr_null(nn_module_child(m, 1));
    ck_assert_int_eq(nn_module_num_weights(m), 1 + 12 + 3 + 6 + 2);

    /* an own parameter added after a child still lists first */
    ck_assert_ptr_nonnull(nn_module_add_buffer(m, "count", ad_tensor_new(AD_F64, AD_SHAPE(1)), &e));
    nn_module_params(m, &ps);
    ck_assert_str_eq(ps[1].name, "count");
    ck_assert_ptr_null(ps[1].grad);
    ck_assert_str_eq(ps[2].name, "layers.0.weight");

    /* the training flag reaches the grandchildren */
    nn_module_set_training(m, false);
    ck_assert(!nn_module_training(nn_module_child(layers, 1)));
    nn_module_set_training(m, true);
    ck_assert(nn_module_training(nn_module_child(layers, 1)));

    /* the rules, each with a message naming the call */
    ck_assert_ptr_null(nn_module_add_param(m, "scale", ad_tensor_new(AD_F32, AD_SHAPE(1)), true, &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "duplicate name 'scale'"));
    ck_assert_ptr_null(nn_module_add_param(m, "a.b", ad_tensor_new(AD_F32, AD_SHAPE(1)), true, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "bad name 'a.b'"));
    ck_assert_ptr_null(nn_module_add_param(m, "layers", ad_tensor_new(AD_F32, AD_SHAPE(1)), true, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "child's name"));
    ck_assert_ptr_null(nn_module_add_param(m, "z", NULL, true, &e));
    ck_assert_int_eq(e.status, AD_ERR_NOMEM);
    /* a module that is already a child takes nothing more */
    ck_assert_ptr_null(nn_module_add_param(layers, "extra", ad_tensor_new(AD_F32, AD_SHAPE(1)), true, &e));
    ck_assert_int_eq(e.status, AD_ERR_STATE);
    ck_assert_int_eq(nn_module_add_child(m, "again", layers, &e), AD_ERR_STATE); /* not freed: it has a parent */
    /* a NULL child (a failed constructor) keeps the constructor's message */
    e = (nn_error){0};
    ck_assert_int_eq(nn_module_add_child(m, "bad", nn_linear(0, 1, &rng, &e), &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "nn_linear"));
    ck_assert_int_eq(nn_module_params(m, NULL), 6);

    /* forward through the child */
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(5, 4), -1, 1, 9);
    ad_var y = nn_forward(m, t, ad_const(t, x));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(5, 2));
    ad_tensor_free(x);
    ad_tape_free(t);
    nn_module_free(m);
}
END_TEST

/* nn_module_new's failures release the state through ops->free */
START_TEST(test_new_failure_frees_state)
{
    nn_error e = {0};
    affine_frees = 0;
    static const nn_module_ops no_forward = {.kind = "broken", .free = affine_free};
    ck_assert_ptr_null(nn_module_new(&no_forward, malloc(8), &e));
    ck_assert_int_eq(e.status, AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "forward"));
    ck_assert_int_eq(affine_frees, 1);
    ck_assert_ptr_null(nn_module_new(NULL, NULL, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "NULL ops"));
    ck_assert_ptr_null(nn_module_new(NULL, NULL, NULL)); /* a NULL record is fine */
}
END_TEST

/* ---- multi-input forward ---- */

static ad_var bilinear_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    /* y = (x0 * x1) W^T */
    return ad_matmul_t(ad_mul(in[0], in[1]), nn_module_var(m, t, 0), false, true);
}

static const nn_module_ops bilinear_ops = {.kind = "bilinear", .n_inputs = 2, .forward = bilinear_forward};

START_TEST(test_forward_n)
{
    nn_error e = {0};
    nn_module *m = nn_module_new(&bilinear_ops, NULL, &e);
    ck_assert_ptr_nonnull(nn_module_add_param(m, "weight", tu_f64(AD_SHAPE(1, 2), (const double[]){1, -1}), true, &e));
    ad_tape *t = ad_tape_new(), *other = ad_tape_new();
    ad_tensor *a = tu_f64(AD_SHAPE(2, 2), (const double[]){1, 2, 3, 4}), *b = tu_f64(AD_SHAPE(2, 2), (const double[]){2, 2, 1, -1});
    ad_var in[2] = {ad_const(t, a), ad_const(t, b)};
    ad_var y = nn_forward_n(m, t, 2, in);
    ck_assert(ad_ok(y));
    tu_assert_values(ad_value(y), (const double[]){2 - 4, 3 + 4}, 0, 0);
    /* the wrong number of inputs, and an input of another tape: errors on the tape */
    ck_assert(!ad_ok(nn_forward(m, t, in[0])));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "nn_forward(bilinear): 1 input given, it takes 2"));
    ad_tape_reset(t);
    ad_tape_clear_error(t);
    in[0] = ad_const(t, a);
    in[1] = ad_const(other, b);
    ck_assert(!ad_ok(nn_forward_n(m, t, 2, in)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "input 1"));
    ad_tape_free(t);
    ad_tape_free(other);
    ad_tensor_free(a);
    ad_tensor_free(b);
    nn_module_free(m);
}
END_TEST

/* ---- residual and parallel ---- */

START_TEST(test_residual_and_parallel)
{
    nn_error e = {0};
    ad_rng rng;
    ad_rng_seed(&rng, 11);
    nn_module *lin = nn_linear_ex(3, 3, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e);
    nn_module *res = nn_residual(lin, &e);
    ck_assert_msg(res != NULL, "%s", e.message);
    ck_assert_str_eq(nn_module_kind(res), "residual");
    ck_assert_ptr_nonnull(nn_module_param(res, "inner.weight"));
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(4, 3), -1, 1, 12);
    ad_tape *t = ad_tape_new();
    ad_var xv = ad_const(t, x);
    ad_var y = nn_forward(res, t, xv), want = ad_add(xv, nn_forward(lin, t, xv));
    for (int64_t i = 0; i < 12; i++) ck_assert(ad_tensor_get(ad_value(y), i) == ad_tensor_get(ad_value(want), i));

    /* parallel: concatenated along the last axis, or summed */
    nn_module *a = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e);
    nn_module *b = nn_linear_ex(3, 5, false, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e);
    nn_module *cat = nn_parallel(2, (nn_module *[]){a, b}, NN_COMBINE_CONCAT, &e);
    ck_assert_msg(cat != NULL, "%s", e.message);
    ad_tape_reset(t);
    xv = ad_const(t, x);
    y = nn_forward(cat, t, xv);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), AD_SHAPE(4, 7));
    ad_var ya = nn_forward(a, t, xv), yb = nn_forward(b, t, xv);
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 2; c++)
            ck_assert(ad_tensor_get(ad_value(y), r * 7 + c) == ad_tensor_get(ad_value(ya), r * 2 + c));
        for (int c = 0; c < 5; c++)
            ck_assert(ad_tensor_get(ad_value(y), r * 7 + 2 + c) == ad_tensor_get(ad_value(yb), r * 5 + c));
    }
    ck_assert_ptr_nonnull(nn_module_param(cat, "1.weight"));
    ck_assert_ptr_null(nn_module_param(cat, "1.bias"));
    nn_module *s1 = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e);
    nn_module *s2 = nn_linear_ex(3, 2, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e);
    nn_module *sum = nn_parallel(2, (nn_module *[]){s1, s2}, NN_COMBINE_SUM, &e);
    ad_tape_reset(t);
    xv = ad_const(t, x);
    y = nn_forward(sum, t, xv);
    want = ad_add(nn_forward(s1, t, xv), nn_forward(s2, t, xv));
    for (int64_t i = 0; i < 8; i++) ck_assert(ad_tensor_get(ad_value(y), i) == ad_tensor_get(ad_value(want), i));
    /* gradients reach both branches: backward of sum(y) gives each bias the row count */
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    tu_assert_values(nn_module_param(sum, "0.bias")->grad, (const double[]){4, 4}, 0, 0);
    tu_assert_values(nn_module_param(sum, "1.bias")->grad, (const double[]){4, 4}, 0, 0);

    /* ownership on failure: the modules given are freed (ASan/valgrind watch) */
    ck_assert_ptr_null(nn_parallel(2, (nn_module *[]){nn_flatten(NULL), NULL}, NN_COMBINE_SUM, NULL));
    ck_assert_ptr_null(nn_parallel(1, (nn_module *[]){nn_flatten(NULL)}, (nn_combine)7, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "nn_combine"));
    ck_assert_ptr_null(nn_residual(NULL, NULL));

    ad_tape_free(t);
    ad_tensor_free(x);
    nn_module_free(res);
    nn_module_free(cat);
    nn_module_free(sum);
}
END_TEST


/* sum(sin(m(x))) for a container m: the input's gradient checked by ad_gradcheck in F64, on a
** residual of a two-layer tanh block and a parallel of (linear, linear) joined both ways. */
static ad_var container_fn(ad_tape *t, const ad_var *in, void *ctx)
{
    return ad_sum(ad_sin(nn_forward(ctx, t, in[0])));
}

START_TEST(test_containers_gradcheck)
{
    ad_rng rng;
    ad_rng_seed(&rng, 31);
    nn_error e = {0};
    nn_module *mods[3];
    mods[0] = nn_residual(nn_sequential(3,
                                        (nn_module *[]){nn_linear_ex(3, 4, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e),
                                                        nn_activation(NN_TANH, &e),
                                                        nn_linear_ex(4, 3, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e)},
                                        &e),
                          &e);
    for (int k = 1; k < 3; k++)
        mods[k] = nn_parallel(2,
                              (nn_module *[]){nn_linear_ex(3, 2, true, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e),
                                              nn_linear_ex(3, 2, false, NN_INIT_XAVIER_NORMAL, 0, AD_F64, &rng, &e)},
                              k == 1 ? NN_COMBINE_CONCAT : NN_COMBINE_SUM, &e);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 32);
    for (int k = 0; k < 3; k++) {
        ck_assert_msg(mods[k] != NULL, "%s", e.message);
        ad_check_report rep;
        ad_status st = ad_gradcheck(container_fn, mods[k], 1, (const ad_tensor *[]){x}, NULL, &rep);
        if (st != AD_OK) ad_check_report_print(&rep, stderr);
        ck_assert_int_eq(st, AD_OK);
        nn_module_free(mods[k]);
    }
    ad_tensor_free(x);
}
END_TEST

/* ---- freezing ---- */

START_TEST(test_freezing)
{
    nn_error e = {0};
    ad_rng rng;
    ad_rng_seed(&rng, 21);
    nn_module *net = nn_mlp(3, (const int64_t[]){3, 4, 2}, NN_TANH, &rng, &e);
    nn_optim *o = nn_optim_for("adam", net, NULL, &e);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(nn_module_set_requires_grad(net, "0", false, &e), AD_OK);
    /* every level sees it: the container's entries and the layer's own */
    ck_assert(!nn_module_param(net, "0.weight")->requires_grad);
    ck_assert(!nn_module_param(net, "0.bias")->requires_grad);
    ck_assert(nn_module_param(net, "2.weight")->requires_grad);
    ck_assert(!nn_module_param(nn_module_child(net, 0), "weight")->requires_grad);

    ad_tensor *w0 = ad_tensor_clone(nn_module_param(net, "0.weight")->value);
    ad_tensor *w2 = ad_tensor_clone(nn_module_param(net, "2.weight")->value);
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(6, 3), -1, 1, 22), *y = tu_rand(AD_F32, AD_SHAPE(6, 2), -1, 1, 23);
    ad_tape *t = ad_tape_new();
    for (int s = 0; s < 3; s++) {
        ad_tape_reset(t);
        ad_var l = nn_loss_mse(nn_forward(net, t, ad_const(t, x)), ad_const(t, y));
        ck_assert_msg(nn_train_step(o, l, NULL, NULL, &e) == AD_OK, "%s", e.message);
    }
    /* the frozen layer has no gradient and did not move; the other did */
    const ad_tensor *g0 = nn_module_param(net, "0.weight")->grad;
    for (int64_t i = 0; i < g0->size; i++) ck_assert(ad_tensor_get(g0, i) == 0.0);
    ck_assert_int_eq(memcmp(w0->data, nn_module_param(net, "0.weight")->value->data, 12 * sizeof(float)), 0);
    ck_assert_int_ne(memcmp(w2->data, nn_module_param(net, "2.weight")->value->data, 8 * sizeof(float)), 0);

    /* unfreezing through the child reaches the container's entries too */
    ck_assert_int_eq(nn_module_set_requires_grad(nn_module_child(net, 0), "weight", true, &e), AD_OK);
    ck_assert(nn_module_param(net, "0.weight")->requires_grad);
    ck_assert(!nn_module_param(net, "0.bias")->requires_grad);
    ck_assert_int_eq(nn_module_set_requires_grad(net, NULL, true, &e), AD_OK); /* everything */
    ck_assert(nn_module_param(net, "0.bias")->requires_grad);
    /* a name that matches nothing, and a prefix that is not a whole component */
    ck_assert_int_eq(nn_module_set_requires_grad(net, "5", false, &e), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(e.message, "'5'"));
    ck_assert_int_eq(nn_module_set_requires_grad(net, "0.w", false, &e), AD_ERR_ARG);

    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(y);
    ad_tensor_free(w0);
    ad_tensor_free(w2);
    nn_optim_free(o);
    nn_module_free(net);
}
END_TEST

/* ---- the error record ---- */

START_TEST(test_error_record)
{
    nn_error e;
    ck_assert_int_eq(nn_error_set(&e, AD_ERR_SHAPE, "f: %d and %s", 3, "x"), AD_ERR_SHAPE);
    ck_assert_int_eq(e.status, AD_ERR_SHAPE);
    ck_assert_str_eq(e.message, "f: 3 and x");
    ck_assert_str_eq(nn_error_str(&e), "f: 3 and x");
    ck_assert_int_eq(nn_error_set(NULL, AD_ERR_IO, "ignored"), AD_ERR_IO);
    /* long messages are cut, NUL-terminated */
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    nn_error_set(&e, AD_ERR_ARG, "%s", big);
    ck_assert_uint_eq(strlen(e.message), sizeof e.message - 1);
    /* an empty message reads as the status's text */
    nn_error_set(&e, AD_ERR_NOMEM, NULL);
    ck_assert_str_eq(nn_error_str(&e), ad_status_str(AD_ERR_NOMEM));
    ck_assert_str_eq(nn_error_str(NULL), "no error");
    /* from a tape */
    ad_tape *t = ad_tape_new();
    ad_tensor *a = tu_f64(AD_SHAPE(2, 3), NULL), *b = tu_f64(AD_SHAPE(2, 3), NULL);
    ck_assert_int_eq(nn_error_from_tape(&e, "fn", t), AD_OK);
    ck_assert(!ad_ok(ad_matmul(ad_const(t, a), ad_const(t, b))));
    ck_assert_int_eq(nn_error_from_tape(&e, "fn", t), AD_ERR_SHAPE);
    ck_assert_msg(strncmp(e.message, "fn: ad_matmul", 13) == 0, "%s", e.message);
    /* constructors say why they fail */
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    ck_assert_ptr_null(nn_mlp(3, (const int64_t[]){4, 0, 2}, NN_RELU, &rng, &e));
    ck_assert_str_eq(e.message, "nn_mlp: layer size 1 is 0; sizes must be >= 1");
    ck_assert_ptr_null(nn_dropout(1.5, 1, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "nn_dropout"));
    ck_assert_ptr_null(nn_activation((nn_act)99, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "unknown activation"));
    ck_assert_ptr_null(nn_conv2d(1, 2, 0, 1, 0, &rng, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "nn_conv2d"));
    ck_assert_ptr_null(nn_lstm_cell(0, 3, &rng, &e));
    ck_assert_ptr_nonnull(strstr(e.message, "nn_lstm_cell"));
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
}
END_TEST

static Suite *custom_suite(void)
{
    Suite *s = suite_create("nn_custom_module");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_affine_module);
    tcase_add_test(tc, test_container_names_and_rules);
    tcase_add_test(tc, test_new_failure_frees_state);
    tcase_add_test(tc, test_forward_n);
    tcase_add_test(tc, test_residual_and_parallel);
    tcase_add_test(tc, test_containers_gradcheck);
    tcase_add_test(tc, test_freezing);
    tcase_add_test(tc, test_error_record);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(custom_suite()); }

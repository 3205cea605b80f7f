/* test_api_edges_nn.c: libautodiff-nn's exported functions called with NULL pointers and invalid vars, one
** entry per export (a table checked against the library's symbol table), each with its defined result. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn.h"
#include "nn_blocks.h"
#include "exports.h"

/*
** The NULL table, as tests/test_api_edges.c's for the engine: one entry per
** function libautodiff-nn exports (nm -D on the built library, at test time),
** calling it with NULL for every pointer (and an invalid var for every var) and
** checking the defined result its header promises: a failure status with err
** filled (the message naming the function), NULL, an invalid var, false, 0, NaN,
** or nothing. Where an argument list mixes pointers, the entry also passes live
** objects with the other pointers NULL. Every call is made with err NULL too,
** which must be as safe. A new exported function without an entry fails
** `every_export_has_an_entry`: add one here.
*/

static const ad_var NV = {0}; /* an invalid var: no tape */

#define BAD(v) ck_assert_msg(!ad_ok(v), "an invalid argument gave a valid var")

/* err holds a failure whose message names fn (its first word, for "nn_x(kind): ..."); then it is reset. */
static void failed(nn_error *err, const char *fn)
{
    ck_assert_msg(err->status != AD_OK, "%s: the failure left err's status AD_OK", fn);
    ck_assert_msg(strncmp(err->message, fn, strlen(fn)) == 0, "%s: message '%s' does not name it", fn, err->message);
    *err = (nn_error){AD_OK, ""};
}

/* A status call: a failure (not AD_OK), err filled naming fn. */
#define FAILS(fn, call)                                                                                               \
    do {                                                                                                              \
        nn_error err = {AD_OK, ""};                                                                                   \
        ck_assert_int_ne(call, AD_OK);                                                                                \
        failed(&err, fn);                                                                                             \
    } while (0)
/* A constructor: NULL, err filled naming fn. */
#define NULLS(fn, call)                                                                                               \
    do {                                                                                                              \
        nn_error err = {AD_OK, ""};                                                                                   \
        ck_assert_ptr_null(call);                                                                                     \
        failed(&err, fn);                                                                                             \
    } while (0)

/* a small live model and its optimizer, for the entries that pass NULL beside valid arguments */
typedef struct live {
    ad_rng rng;
    nn_module *m;
    nn_optim *o;
    ad_tape *t;
} live;

static live live_new(void)
{
    live l;
    ad_rng_seed(&l.rng, 1);
    l.m = nn_linear(2, 3, &l.rng, NULL);
    l.o = nn_sgd(l.m, 0.1, 0, 0, false, NULL);
    l.t = ad_tape_new();
    ck_assert(l.m && l.o && l.t);
    return l;
}

static void live_free(live *l)
{
    nn_optim_free(l->o);
    nn_module_free(l->m);
    ad_tape_free(l->t);
}

/* ---- the entries, by header ---- */

static void e_act(void)
{
    ck_assert_str_eq(nn_act_name((nn_act)99), "?");
    ck_assert(!nn_act_from_name(NULL, NULL));
    ck_assert(nn_act_from_name("relu", NULL)); /* out is optional */
    nn_act a = NN_TANH;
    ck_assert(!nn_act_from_name(NULL, &a));
    ck_assert_int_eq(a, NN_TANH);
    ck_assert_double_eq(nn_init_gain((nn_act)99), 1.0);
    NULLS("nn_activation", nn_activation((nn_act)99, &err));
    NULLS("nn_activation", nn_activation_ex((nn_act)99, 0.1, &err));
    ck_assert_ptr_null(nn_activation((nn_act)99, NULL));
    ck_assert_ptr_null(nn_activation_ex((nn_act)99, 0.1, NULL));
}

static void e_init(void)
{
    FAILS("nn_init_fans", nn_init_fans(NULL, NULL, NULL, &err));
    ck_assert_int_ne(nn_init_fans(NULL, NULL, NULL, NULL), AD_OK);
    ad_tensor *w = ad_tensor_new(AD_F32, AD_SHAPE(3, 2));
    int64_t fi = -1, fo = -1;
    FAILS("nn_init_fans", nn_init_fans(w, NULL, NULL, &err));
    ck_assert_int_eq(nn_init_fans(w, &fi, &fo, NULL), AD_OK);
    ck_assert(fi == 2 && fo == 3);
    FAILS("nn_init_tensor", nn_init_tensor(NULL, NN_INIT_HE_UNIFORM, 1.0, NULL, &err));
    FAILS("nn_init_tensor", nn_init_tensor(w, NN_INIT_HE_UNIFORM, 1.0, NULL, &err));
    ck_assert_int_ne(nn_init_tensor(w, NN_INIT_HE_UNIFORM, 1.0, NULL, NULL), AD_OK);
    ad_tensor_free(w);
}

static void e_modules(void)
{
    NULLS("nn_linear", nn_linear(2, 3, NULL, &err));
    NULLS("nn_linear", nn_linear_ex(2, 3, true, NN_INIT_HE_UNIFORM, 1.0, AD_F32, NULL, &err));
    NULLS("nn_sequential", nn_sequential(2, NULL, &err));
    NULLS("nn_sequential", nn_sequential(2, (nn_module *const[]){NULL, NULL}, &err));
    NULLS("nn_residual", nn_residual(NULL, &err));
    NULLS("nn_parallel", nn_parallel(2, NULL, NN_COMBINE_SUM, &err));
    NULLS("nn_mlp", nn_mlp(3, NULL, NN_RELU, NULL, &err));
    NULLS("nn_mlp", nn_mlp(2, (const int64_t[]){2, 3}, NN_RELU, NULL, &err));
    NULLS("nn_parallel", nn_parallel(2, (nn_module *const[]){NULL, NULL}, NN_COMBINE_SUM, &err));
    NULLS("nn_mlp", nn_mlp(-1, (const int64_t[]){2, 3}, NN_RELU, NULL, &err));
    ck_assert_ptr_null(nn_linear(2, 3, NULL, NULL));
    ck_assert_ptr_null(nn_sequential(2, NULL, NULL));
    ck_assert_ptr_null(nn_residual(NULL, NULL));
    ck_assert_ptr_null(nn_parallel(2, NULL, NN_COMBINE_SUM, NULL));
    ck_assert_ptr_null(nn_mlp(3, NULL, NN_RELU, NULL, NULL));
}

static void e_layers(void)
{
    NULLS("nn_conv2d", nn_conv2d(1, 2, 3, 1, 1, NULL, &err));
    NULLS("nn_conv2d", nn_conv2d_ex(1, 2, 3, 3, NULL, true, AD_F32, NULL, &err));
    NULLS("nn_max_pool2d", nn_max_pool2d(0, 0, 0, &err));
    NULLS("nn_avg_pool2d", nn_avg_pool2d(0, 0, 0, &err));
    NULLS("nn_reshape", nn_reshape(2, NULL, &err));
    NULLS("nn_dropout", nn_dropout(NAN, 1, &err));
    NULLS("nn_batch_norm2d", nn_batch_norm2d(0, 0.1, 1e-5, &err));
    NULLS("nn_layer_norm", nn_layer_norm(1, NULL, 1e-5, &err));
    NULLS("nn_layer_norm", nn_layer_norm_ex(1, NULL, 1e-5, AD_F32, &err));
    NULLS("nn_embedding", nn_embedding(4, 2, NULL, &err));
    NULLS("nn_embedding", nn_embedding_ex(4, 2, AD_F32, NULL, &err));
    NULLS("nn_rnn_cell", nn_rnn_cell(2, 3, NN_TANH, NULL, &err));
    NULLS("nn_lstm_cell", nn_lstm_cell(2, 3, NULL, &err));
    NULLS("nn_gru_cell", nn_gru_cell(2, 3, NULL, &err));
    NULLS("nn_batch_norm2d", nn_batch_norm2d_ex(0, 0.1, 1e-5, AD_F64, &err));
    NULLS("nn_rnn_cell", nn_rnn_cell_ex(2, 3, NN_TANH, AD_F64, NULL, &err));
    NULLS("nn_lstm_cell", nn_lstm_cell_ex(2, 3, AD_F64, NULL, &err));
    NULLS("nn_gru_cell", nn_gru_cell_ex(2, 3, AD_F64, NULL, &err));
    ck_assert_ptr_null(nn_gru_cell_ex(2, 3, AD_F64, NULL, NULL));
    NULLS("nn_model_from_spec", nn_model_from_spec(NULL, 1, 4, 4, NULL, &err));
    ck_assert_ptr_null(nn_conv2d(1, 2, 3, 1, 1, NULL, NULL));
    ck_assert_ptr_null(nn_reshape(2, NULL, NULL));
    ck_assert_ptr_null(nn_layer_norm(1, NULL, 1e-5, NULL));
    ck_assert_ptr_null(nn_lstm_cell(2, 3, NULL, NULL));
    ck_assert_ptr_null(nn_model_from_spec(NULL, 1, 4, 4, NULL, NULL));
    BAD(nn_cell_step(NULL, NULL, NV, NULL, NULL));
    /* the constructors without pointers (besides err) build their module with err NULL */
    nn_module *ms[] = {nn_flatten(NULL), nn_last_step(NULL), nn_tokens_from_image(NULL), nn_dropout(0.5, 1, NULL)};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        ck_assert_ptr_nonnull(ms[i]);
        nn_module_free(ms[i]);
    }
    /* a cell with a live tape and a NULL state: an error on the tape */
    live l = live_new();
    nn_module *cell = nn_rnn_cell(2, 3, NN_TANH, &l.rng, NULL);
    ad_tensor *xv = ad_tensor_new(AD_F32, AD_SHAPE(1, 2));
    BAD(nn_cell_step(cell, l.t, ad_const(l.t, xv), NULL, NULL));
    ck_assert_int_ne(ad_tape_status(l.t), AD_OK);
    BAD(nn_cell_step(cell, NULL, NV, NULL, NULL));
    ad_tensor_free(xv);
    nn_module_free(cell);
    live_free(&l);
}

static void e_losses(void)
{
    BAD(nn_loss_squared_error(NV, NV));
    BAD(nn_loss_mse(NV, NV));
    BAD(nn_loss_bce_with_logits(NV, NV));
    BAD(nn_loss_cross_entropy(NV, NULL));
    BAD(nn_loss_huber(NV, NV, 1.0));
    BAD(nn_loss_l1(NV, NV));
    BAD(nn_loss_cross_entropy_smooth(NV, NULL, 0.1));
    /* live logits, NULL labels: an error on the tape naming the loss */
    ad_tape *t = ad_tape_new();
    ad_tensor *zv = ad_tensor_new(AD_F64, AD_SHAPE(2, 3));
    ad_var z = ad_const(t, zv);
    BAD(nn_loss_cross_entropy(z, NULL));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "cross_entropy"));
    ad_tape_clear_error(t);
    BAD(nn_loss_cross_entropy_smooth(z, NULL, 0.1));
    ck_assert_int_ne(ad_tape_status(t), AD_OK);
    ad_tape_clear_error(t);
    BAD(nn_loss_mse(z, NV));
    ck_assert_int_ne(ad_tape_status(t), AD_OK);
    ad_tensor_free(zv);
    ad_tape_free(t);
}

static void e_optim(void)
{
    nn_optim_opts d = nn_optim_defaults(NULL); /* the common defaults */
    ck_assert(d.lr > 0);
    NULLS("nn_optim_new", nn_optim_new(NULL, 0, NULL, NULL, &err));
    NULLS("nn_optim_new", nn_optim_new("sgd", 2, NULL, NULL, &err));
    NULLS("nn_optim_for", nn_optim_for(NULL, NULL, NULL, &err));
    NULLS("nn_optim_for", nn_optim_for("adam", NULL, NULL, &err));
    FAILS("nn_optim_add_group", nn_optim_add_group(NULL, 0, NULL, 0.1, 0, &err));
    NULLS("nn_optim_for(sgd)", nn_sgd(NULL, 0.1, 0, 0, false, &err)); /* (nn_optim_for's shorthands) */
    NULLS("nn_optim_for(adam)", nn_adam(NULL, 1e-3, 0.9, 0.999, 1e-8, 0, &err));
    NULLS("nn_optim_for(adamw)", nn_adamw(NULL, 1e-3, 0.9, 0.999, 1e-8, 0, &err));
    FAILS("nn_optim_step", nn_optim_step(NULL, &err));
    FAILS("nn_optim_minimize", nn_optim_minimize(NULL, NULL, NULL, NULL, &err));
    ck_assert_ptr_null(nn_optim_new(NULL, 0, NULL, NULL, NULL));
    ck_assert_ptr_null(nn_sgd(NULL, 0.1, 0, 0, false, NULL));
    ck_assert_int_ne(nn_optim_step(NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_optim_minimize(NULL, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_double_eq(nn_optim_lr(NULL), 0.0);
    nn_optim_set_lr(NULL, 0.5);
    ck_assert(isnan(nn_optim_group_lr(NULL, 0)));
    ck_assert_int_eq(nn_optim_num_groups(NULL), 0);
    ck_assert_int_eq(nn_optim_steps(NULL), 0);
    ck_assert_str_eq(nn_optim_name(NULL), "none");
    nn_param *const *ps = (nn_param *const *)&ps;
    ck_assert_int_eq(nn_optim_params(NULL, NULL), 0);
    ck_assert_int_eq(nn_optim_params(NULL, &ps), 0);
    ck_assert_ptr_null(ps);
    nn_optim_free(NULL);
    ck_assert_int_eq(nn_optim_state(NULL, 0, NULL, NULL), 0);
    ck_assert_int_eq(nn_optim_state(NULL, 4, NULL, NULL), 0);
    nn_optim_state_changed(NULL);
    FAILS("nn_clip_grad_norm", nn_clip_grad_norm(NULL, 1.0, NULL, &err));
    ck_assert_int_ne(nn_clip_grad_norm(NULL, 1.0, NULL, NULL), AD_OK);
    FAILS("nn_train_step", nn_train_step(NULL, NV, NULL, NULL, &err));
    ck_assert_int_ne(nn_train_step(NULL, NV, NULL, NULL, NULL), AD_OK);
    /* live: NULL arrays and outputs beside a live optimizer */
    live l = live_new();
    FAILS("nn_optim_add_group", nn_optim_add_group(l.o, 2, NULL, 0.1, 0, &err));
    FAILS("nn_optim(sgd)", nn_optim_add_group(l.o, 1, (nn_param *const[]){NULL}, 0.1, 0, &err)); /* the shared check */
    NULLS("nn_optim(adam)", nn_optim_new("adam", 1, (nn_param *const[]){NULL}, NULL, &err));
    nn_param *p0;
    nn_module_params(l.m, &p0);
    nn_param hollow = {"hollow", NULL, NULL, true}; /* a parameter without tensors */
    NULLS("nn_optim(adam)", nn_optim_new("adam", 1, (nn_param *const[]){&hollow}, NULL, &err));
    NULLS("nn_optim(adam)", nn_optim_new("adam", 2, (nn_param *const[]){&p0[0], NULL}, NULL, &err));
    FAILS("nn_optim_minimize", nn_optim_minimize(l.o, NULL, NULL, NULL, &err));
    ck_assert_int_eq(nn_optim_state(l.o, 4, NULL, NULL), nn_optim_state(l.o, 0, NULL, NULL));
    ck_assert_int_eq(nn_optim_params(l.o, NULL), 2);
    FAILS("nn_train_step", nn_train_step(l.o, NV, NULL, NULL, &err));
    ck_assert_int_eq(nn_clip_grad_norm(l.m, 1.0, NULL, NULL), AD_OK); /* total_norm_out is optional */
    live_free(&l);
}

static void e_sched(void)
{
    nn_sched_opts so = nn_sched_defaults(0.1, 10);
    ck_assert_double_eq(so.lr, 0.1);
    NULLS("nn_sched_new", nn_sched_new(NULL, NULL, &err));
    NULLS("nn_sched_new", nn_sched_new("cosine", NULL, &err));
    ck_assert_ptr_null(nn_sched_new(NULL, NULL, NULL));
    ck_assert(isnan(nn_sched_lr(NULL, 3)));
    ck_assert_str_eq(nn_sched_name(NULL), "none");
    nn_sched_free(NULL);
}

static void e_fit(void)
{
    nn_fit_opts fo = nn_fit_defaults();
    ck_assert_int_gt(fo.epochs, 0);
    FAILS("nn_fit", nn_fit(NULL, NULL, NULL, NULL, NULL, &err));
    FAILS("nn_evaluate", nn_evaluate(NULL, NULL, 0, NULL, NULL, &err));
    ck_assert_int_ne(nn_fit(NULL, NULL, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_evaluate(NULL, NULL, 0, NULL, NULL, NULL), AD_OK);
    live l = live_new();
    FAILS("nn_fit", nn_fit(l.m, l.o, NULL, NULL, NULL, &err));
    FAILS("nn_evaluate", nn_evaluate(l.m, NULL, 0, NULL, NULL, &err));
    live_free(&l);
}

static void e_checkpoints(void)
{
    FAILS("nn_save", nn_save(NULL, NULL, NULL, NULL, &err));
    FAILS("nn_save", nn_save_meta(NULL, NULL, NULL, NULL, 0, NULL, &err));
    FAILS("nn_checkpoint_meta", nn_checkpoint_meta(NULL, NULL, NULL, 0, &err));
    FAILS("nn_load", nn_load(NULL, NULL, NULL, NULL, &err));
    FAILS("nn_load", nn_load_ex(NULL, NULL, NULL, NULL, 0, &err));
    FAILS("nn_load_weights", nn_load_weights(NULL, NULL, NULL, NULL, &err));
    FAILS("nn_save_weights", nn_save_weights(NULL, NULL, NULL, NULL, &err));
    FAILS("nn_safetensors_save", nn_safetensors_save(NULL, 0, NULL, NULL, 0, NULL, &err));
    FAILS("nn_safetensors_load", nn_safetensors_load(NULL, 0, NULL, NULL, &err));
    ck_assert_int_ne(nn_save(NULL, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_checkpoint_meta(NULL, NULL, NULL, 0, NULL), AD_OK);
    ck_assert_int_ne(nn_load(NULL, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_load_weights(NULL, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_safetensors_save(NULL, 0, NULL, NULL, 0, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_safetensors_load(NULL, 0, NULL, NULL, NULL), AD_OK);
    /* a live model and path, the other pointers NULL */
    live l = live_new();
    char path[] = "/tmp/test_api_edges_nn_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FAILS("nn_save", nn_save(path, NULL, NULL, NULL, &err));
    FAILS("nn_save", nn_save_meta(path, l.m, NULL, NULL, 1, NULL, &err));
    FAILS("nn_save", nn_save_meta(path, l.m, NULL, NULL, 1, (const char *const[]){NULL, NULL}, &err));
    FAILS("nn_load", nn_load(path, NULL, NULL, NULL, &err));
    FAILS("nn_load_weights", nn_load_weights(l.m, NULL, NULL, NULL, &err));
    FAILS("nn_save_weights", nn_save_weights(l.m, NULL, NULL, NULL, &err));
    FAILS("nn_safetensors_save", nn_safetensors_save(path, 2, NULL, NULL, 0, NULL, &err));
    FAILS("nn_safetensors_load", nn_safetensors_load(path, 2, NULL, NULL, &err));
    FAILS("nn_safetensors_save", nn_safetensors_save(path, 1, (const char *const[]){NULL},
                                                     (const ad_tensor *const[]){NULL}, 0, NULL, &err));
    FAILS("nn_safetensors_load", nn_safetensors_load(path, 1, (const char *const[]){NULL},
                                                     (ad_tensor *const[]){NULL}, &err));
    ck_assert_int_eq(nn_save(path, l.m, NULL, NULL, NULL), AD_OK); /* optimizer and generator are optional */
    char buf[8] = "x";
    FAILS("nn_checkpoint_meta", nn_checkpoint_meta(path, NULL, buf, sizeof buf, &err));
    ck_assert_str_eq(buf, "");
    FAILS("nn_checkpoint_meta", nn_checkpoint_meta(path, "model", NULL, 8, &err));
    FAILS("nn_checkpoint_meta", nn_checkpoint_meta(path, "model", buf, 0, &err));
    ck_assert_int_eq(nn_load(path, l.m, NULL, NULL, NULL), AD_OK);
    close(fd);
    unlink(path);
    live_free(&l);
}

static void e_data(void)
{
    FAILS("nn_dataset_from_arrays", nn_dataset_from_arrays(2, 2, NULL, NULL, NULL, 0, NULL, true, NULL, &err));
    FAILS("nn_dataset_load_npy", nn_dataset_load_npy(NULL, NULL, true, NULL, &err));
    FAILS("nn_dataset_load_idx", nn_dataset_load_idx(NULL, NULL, NULL, &err));
    FAILS("nn_dataset_load_csv", nn_dataset_load_csv(NULL, 0, false, NULL, &err));
    FAILS("nn_dataset_load_csv_targets", nn_dataset_load_csv_targets(NULL, 0, false, NULL, &err));
    ck_assert_int_ne(nn_dataset_from_arrays(2, 2, NULL, NULL, NULL, 0, NULL, true, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_dataset_load_npy(NULL, NULL, true, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_dataset_load_idx(NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_dataset_load_csv(NULL, 0, false, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_dataset_load_csv_targets(NULL, 0, false, NULL, NULL), AD_OK);
    /* an out pointer with NULL paths: set to NULL */
    nn_dataset *ds = (nn_dataset *)&ds;
    ck_assert_int_ne(nn_dataset_load_csv(NULL, 0, false, &ds, NULL), AD_OK);
    ck_assert_ptr_null(ds);
    ds = (nn_dataset *)&ds;
    ck_assert_int_ne(nn_dataset_load_idx(NULL, NULL, &ds, NULL), AD_OK);
    ck_assert_ptr_null(ds);
    FAILS("nn_dataset_load_npy", nn_dataset_load_npy("x.npy", NULL, true, &ds, &err));
    FAILS("nn_dataset_load_idx", nn_dataset_load_idx("x.idx", NULL, &ds, &err));
    FAILS("nn_dataset_load_csv", nn_dataset_load_csv("x.csv", 0, false, NULL, &err));
    float f1[2] = {1, 2};
    FAILS("nn_dataset_from_arrays", nn_dataset_from_arrays(1, 2, f1, NULL, f1, 1, NULL, true, &ds, &err));
    nn_dataset_free(NULL);
    NULLS("nn_batcher_new", nn_batcher_new(NULL, 4, true, 1, &err));
    NULLS("nn_batcher_new", nn_batcher_new_rows(NULL, 2, NULL, 4, true, 1, &err));
    ck_assert_ptr_null(nn_batcher_new(NULL, 4, true, 1, NULL));
    ck_assert_int_eq(nn_batcher_next(NULL, NULL, NULL, NULL), -1);
    nn_batcher_reset(NULL);
    nn_batcher_reseed(NULL, 1);
    ck_assert_int_eq(nn_batcher_num_batches(NULL), 0);
    nn_batcher_free(NULL);
    /* a live set and batcher, NULL buffers */
    float f[4] = {1, 2, 3, 4};
    int64_t lab[2] = {0, 1};
    ck_assert_int_eq(nn_dataset_from_arrays(2, 2, f, lab, NULL, 0, NULL, false, &ds, NULL), AD_OK);
    nn_batcher *b = nn_batcher_new(ds, 2, true, 1, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(nn_batcher_next(b, NULL, NULL, NULL), -1);
    nn_batcher_free(b);
    nn_dataset_free(ds);
}

static void e_module_api(void)
{
    static const nn_module_ops ops = {.kind = "edge"};
    NULLS("nn_module_new", nn_module_new(NULL, NULL, &err));
    NULLS("nn_module_new", nn_module_new(&ops, NULL, &err)); /* no forward */
    ck_assert_ptr_null(nn_module_new(NULL, NULL, NULL));
    ck_assert_ptr_null(nn_module_state(NULL));
    ck_assert_ptr_null(nn_module_ops_of(NULL));
    NULLS("nn_module_add_param", nn_module_add_param(NULL, NULL, NULL, true, &err));
    NULLS("nn_module_add_buffer", nn_module_add_buffer(NULL, NULL, NULL, &err));
    FAILS("nn_module_add_child", nn_module_add_child(NULL, NULL, NULL, &err));
    ck_assert_ptr_null(nn_module_add_param(NULL, NULL, NULL, true, NULL));
    ck_assert_int_ne(nn_module_add_child(NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_eq(nn_module_num_children(NULL), 0);
    ck_assert_ptr_null(nn_module_child(NULL, 0));
    ck_assert_ptr_null(nn_module_child_name(NULL, 0));
    BAD(nn_param_var(NULL, NULL));
    BAD(nn_module_var(NULL, NULL, 0));
    BAD(nn_forward_n(NULL, NULL, 1, NULL));
    BAD(nn_forward(NULL, NULL, NV));
    nn_param *ps = (nn_param *)&ps;
    ck_assert_int_eq(nn_module_params(NULL, NULL), 0);
    ck_assert_int_eq(nn_module_params(NULL, &ps), 0);
    ck_assert_ptr_null(nn_module_param(NULL, NULL));
    FAILS("nn_module_set_requires_grad", nn_module_set_requires_grad(NULL, NULL, true, &err));
    ck_assert_int_ne(nn_module_set_requires_grad(NULL, NULL, true, NULL), AD_OK);
    ck_assert_int_eq(nn_module_num_weights(NULL), 0);
    ck_assert_str_eq(nn_module_kind(NULL), "?");
    nn_module_set_training(NULL, true);
    ck_assert(!nn_module_training(NULL));
    nn_zero_grad(NULL);
    nn_module_free(NULL);
    /* a live module, the other pointers NULL */
    live l = live_new();
    NULLS("nn_module_add_param", nn_module_add_param(l.m, NULL, NULL, true, &err));
    NULLS("nn_module_add_param", nn_module_add_param(l.m, "w", NULL, true, &err));
    NULLS("nn_module_add_buffer", nn_module_add_buffer(l.m, "b", NULL, &err));
    FAILS("nn_module_add_child", nn_module_add_child(l.m, "c", NULL, &err));
    ck_assert_int_gt(nn_module_params(l.m, NULL), 0);
    ck_assert_ptr_null(nn_module_param(l.m, NULL));
    ck_assert_int_eq(nn_module_set_requires_grad(l.m, NULL, true, NULL), AD_OK); /* NULL: every parameter */
    BAD(nn_param_var(l.t, NULL));
    BAD(nn_module_var(l.m, NULL, 0));
    BAD(nn_forward(l.m, NULL, NV));
    BAD(nn_forward(l.m, l.t, NV));
    BAD(nn_forward_n(l.m, l.t, 1, NULL));
    ck_assert_int_ne(ad_tape_status(l.t), AD_OK);
    ad_tape_clear_error(l.t);
    BAD(nn_forward_n(l.m, l.t, 1, (const ad_var[]){NV}));
    BAD(nn_forward_n(l.m, l.t, 0, NULL));
    BAD(nn_module_var(l.m, l.t, 99));
    BAD(nn_module_var(l.m, l.t, -1));
    nn_param hollow = {"hollow", NULL, NULL, true};
    BAD(nn_param_var(l.t, &hollow));
    ck_assert_ptr_null(nn_module_child(l.m, -1));
    ck_assert_ptr_null(nn_module_child(l.m, 99));
    ck_assert_ptr_null(nn_module_child_name(l.m, 99));
    ck_assert_ptr_null(nn_module_param(l.m, "no such name"));
    live_free(&l);
}

static void e_blocks(void)
{
    NULLS("nn_conv1d", nn_conv1d(1, 2, 3, 1, 1, 1, 1, true, AD_F32, NULL, &err));
    NULLS("nn_group_norm", nn_group_norm(0, 0, 1e-5, AD_F32, &err));
    NULLS("nn_multihead_attention", nn_multihead_attention(4, 2, false, AD_F32, NULL, &err));
    nn_transformer_opts to = nn_transformer_defaults(4, 2);
    NULLS("nn_transformer_block", nn_transformer_block(NULL, NULL, &err));
    NULLS("nn_transformer_block", nn_transformer_block(&to, NULL, &err));
    NULLS("nn_positional_learned", nn_positional_learned(4, 2, AD_F32, NULL, &err));
    NULLS("nn_positional_sinusoidal", nn_positional_sinusoidal(0, &err));
    ck_assert_ptr_null(nn_conv1d(1, 2, 3, 1, 1, 1, 1, true, AD_F32, NULL, NULL));
    ck_assert_ptr_null(nn_transformer_block(NULL, NULL, NULL));
    ck_assert_int_ne(nn_gradcheck_module(NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_gradcheck_module_n(NULL, 1, NULL, NULL, NULL, NULL), AD_OK);
    live l = live_new();
    ck_assert_int_ne(nn_gradcheck_module(l.m, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_gradcheck_module_n(l.m, 1, NULL, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_gradcheck_module_n(l.m, 1, (const ad_tensor *const[]){NULL}, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_gradcheck_module_n(l.m, 0, NULL, NULL, NULL, NULL), AD_OK);
    NULLS("nn_model_from_spec", nn_model_from_spec("fc:3", 1, 4, 4, NULL, &err));
    live_free(&l);
}

static void e_errors(void)
{
    ck_assert_int_eq(nn_error_set(NULL, AD_ERR_ARG, "x"), AD_ERR_ARG);
    nn_error e = {AD_OK, "old"};
    ck_assert_int_eq(nn_error_set(&e, AD_ERR_IO, NULL), AD_ERR_IO);
    ck_assert_int_eq(e.status, AD_ERR_IO);
    ck_assert_str_eq(e.message, "");
    ck_assert_int_ne(nn_error_from_tape(NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(nn_error_from_tape(&e, NULL, NULL), AD_OK);
    ck_assert_ptr_nonnull(nn_error_str(NULL));
    ck_assert_ptr_nonnull(nn_error_str(&e));
    nn_progress_start(NULL, NULL, NULL, 0);
    nn_progress_update(NULL, 0, 0, NAN);
    nn_progress_clear(NULL);
    nn_progress_bar b;
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    nn_progress_start(&b, f, NULL, 3); /* no label: "" */
    nn_progress_update(&b, 1, 8, NAN);
    nn_progress_clear(&b);
    fclose(f);
}

/* ---- the table ---- */

typedef struct entry {
    const char *name;
    void (*run)(void);
} entry;

#define BY(f, fn) {#f, fn}

static const entry table[] = {
    BY(nn_act_name, e_act), BY(nn_act_from_name, e_act), BY(nn_init_gain, e_act), BY(nn_activation, e_act),
    BY(nn_activation_ex, e_act),
    BY(nn_init_fans, e_init), BY(nn_init_tensor, e_init),
    BY(nn_linear, e_modules), BY(nn_linear_ex, e_modules), BY(nn_sequential, e_modules),
    BY(nn_residual, e_modules), BY(nn_parallel, e_modules), BY(nn_mlp, e_modules),
    BY(nn_conv2d, e_layers), BY(nn_conv2d_ex, e_layers), BY(nn_max_pool2d, e_layers), BY(nn_avg_pool2d, e_layers),
    BY(nn_flatten, e_layers), BY(nn_reshape, e_layers), BY(nn_dropout, e_layers), BY(nn_batch_norm2d, e_layers), BY(nn_batch_norm2d_ex, e_layers),
    BY(nn_layer_norm, e_layers), BY(nn_layer_norm_ex, e_layers), BY(nn_embedding, e_layers),
    BY(nn_embedding_ex, e_layers), BY(nn_rnn_cell, e_layers), BY(nn_lstm_cell, e_layers), BY(nn_gru_cell, e_layers),
    BY(nn_rnn_cell_ex, e_layers), BY(nn_lstm_cell_ex, e_layers), BY(nn_gru_cell_ex, e_layers),
    BY(nn_cell_step, e_layers), BY(nn_last_step, e_layers), BY(nn_model_from_spec, e_layers),
    BY(nn_tokens_from_image, e_layers),
    BY(nn_loss_squared_error, e_losses), BY(nn_loss_mse, e_losses), BY(nn_loss_bce_with_logits, e_losses),
    BY(nn_loss_cross_entropy, e_losses), BY(nn_loss_huber, e_losses), BY(nn_loss_l1, e_losses),
    BY(nn_loss_cross_entropy_smooth, e_losses),
    BY(nn_optim_defaults, e_optim), BY(nn_optim_new, e_optim), BY(nn_optim_for, e_optim),
    BY(nn_optim_add_group, e_optim), BY(nn_sgd, e_optim), BY(nn_adam, e_optim), BY(nn_adamw, e_optim),
    BY(nn_optim_step, e_optim), BY(nn_optim_minimize, e_optim), BY(nn_optim_lr, e_optim),
    BY(nn_optim_set_lr, e_optim), BY(nn_optim_group_lr, e_optim), BY(nn_optim_num_groups, e_optim),
    BY(nn_optim_steps, e_optim), BY(nn_optim_name, e_optim), BY(nn_optim_params, e_optim),
    BY(nn_optim_free, e_optim), BY(nn_optim_state, e_optim), BY(nn_optim_state_changed, e_optim),
    BY(nn_clip_grad_norm, e_optim), BY(nn_train_step, e_optim),
    BY(nn_sched_defaults, e_sched), BY(nn_sched_new, e_sched), BY(nn_sched_lr, e_sched),
    BY(nn_sched_name, e_sched), BY(nn_sched_free, e_sched),
    BY(nn_fit_defaults, e_fit), BY(nn_fit, e_fit), BY(nn_evaluate, e_fit),
    BY(nn_save, e_checkpoints), BY(nn_save_meta, e_checkpoints), BY(nn_checkpoint_meta, e_checkpoints),
    BY(nn_load, e_checkpoints), BY(nn_load_ex, e_checkpoints), BY(nn_load_weights, e_checkpoints),
    BY(nn_save_weights, e_checkpoints), BY(nn_safetensors_save, e_checkpoints),
    BY(nn_safetensors_load, e_checkpoints),
    BY(nn_dataset_from_arrays, e_data), BY(nn_dataset_load_npy, e_data), BY(nn_dataset_load_idx, e_data),
    BY(nn_dataset_load_csv, e_data), BY(nn_dataset_load_csv_targets, e_data), BY(nn_dataset_free, e_data),
    BY(nn_batcher_new, e_data), BY(nn_batcher_new_rows, e_data), BY(nn_batcher_next, e_data),
    BY(nn_batcher_reset, e_data), BY(nn_batcher_reseed, e_data), BY(nn_batcher_num_batches, e_data),
    BY(nn_batcher_free, e_data),
    BY(nn_module_new, e_module_api), BY(nn_module_state, e_module_api), BY(nn_module_ops_of, e_module_api),
    BY(nn_module_add_param, e_module_api), BY(nn_module_add_buffer, e_module_api),
    BY(nn_module_add_child, e_module_api), BY(nn_module_num_children, e_module_api),
    BY(nn_module_child, e_module_api), BY(nn_module_child_name, e_module_api), BY(nn_param_var, e_module_api),
    BY(nn_module_var, e_module_api), BY(nn_forward_n, e_module_api), BY(nn_forward, e_module_api),
    BY(nn_module_params, e_module_api), BY(nn_module_param, e_module_api),
    BY(nn_module_set_requires_grad, e_module_api), BY(nn_module_num_weights, e_module_api),
    BY(nn_module_kind, e_module_api), BY(nn_module_set_training, e_module_api),
    BY(nn_module_training, e_module_api), BY(nn_zero_grad, e_module_api), BY(nn_module_free, e_module_api),
    BY(nn_conv1d, e_blocks), BY(nn_group_norm, e_blocks), BY(nn_multihead_attention, e_blocks),
    BY(nn_transformer_defaults, e_blocks), BY(nn_transformer_block, e_blocks),
    BY(nn_positional_learned, e_blocks), BY(nn_positional_sinusoidal, e_blocks),
    BY(nn_gradcheck_module, e_blocks), BY(nn_gradcheck_module_n, e_blocks),
    BY(nn_error_set, e_errors), BY(nn_error_from_tape, e_errors), BY(nn_error_str, e_errors),
    BY(nn_progress_start, e_errors), BY(nn_progress_update, e_errors), BY(nn_progress_clear, e_errors),
};
#define NTABLE ((int)(sizeof table / sizeof table[0]))

START_TEST(null_arguments) { table[_i].run(); }
END_TEST

/* The library's exported functions (nm -D), each with an entry; and no entry for a name it lacks. */
START_TEST(every_export_has_an_entry)
{
    const char *names[NTABLE];
    for (int i = 0; i < NTABLE; i++) names[i] = table[i].name;
    check_exports("NN_LIB", "nn_", "nn__", names, NTABLE, "tests/test_api_edges_nn.c");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_edges_nn");
    TCase *tc = tcase_create("edges");
    tcase_add_loop_test(tc, null_arguments, 0, NTABLE);
    tcase_add_test(tc, every_export_has_an_entry);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed_n = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed_n ? EXIT_FAILURE : EXIT_SUCCESS;
}

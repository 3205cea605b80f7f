/* test_api_edges.c: the public API at its edges: every exported function called with NULL pointers and
** invalid vars (a table checked against the library's symbol table), vars from two tapes, gradients
** through ops whose gradient is 0, and error messages that name the right shapes. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "ad_io.h"
#include "ad_custom.h"
#include "ad_layers.h"
#include "exports.h"

/*
** The NULL table: one entry per function libautodiff exports (nm -D on the built
** library, at test time), each calling it with NULL for every pointer and an
** invalid var for every var, and checking the defined result ad.h promises: a
** failure status, an invalid var, NULL, false, 0, NaN, or nothing. A new exported
** function without an entry fails `every_export_has_an_entry`: add one here.
** Where a function takes a tape or var as well, the entry also passes a live one
** with the other pointers NULL, and checks that the tape's error names the function.
*/

static const ad_var NV = {0}; /* an invalid var: no tape */

/* A live tape with a [2,3] leaf, for the entries that pass NULL beside valid arguments. */
typedef struct live {
    ad_tape *t;
    ad_tensor *v;
    ad_var x;
} live;

static live live_new(void)
{
    live l;
    l.t = ad_tape_new();
    l.v = ad_tensor_new(AD_F64, AD_SHAPE(2, 3));
    ck_assert_ptr_nonnull(l.t);
    ck_assert_ptr_nonnull(l.v);
    l.x = ad_leaf(l.t, l.v);
    return l;
}

/* The tape holds a failure whose message names fn (the _ex variants may use their short name). */
static void live_failed(live *l, const char *fn)
{
    char base[64];
    snprintf(base, sizeof base, "%s", fn);
    size_t bl = strlen(base);
    if (bl > 3 && strcmp(base + bl - 3, "_ex") == 0) base[bl - 3] = '\0';
    ck_assert_msg(ad_tape_status(l->t) != AD_OK, "%s: NULL accepted", fn);
    ck_assert_msg(strstr(ad_tape_error(l->t), base) != NULL, "%s: message '%s' does not name it", fn,
                  ad_tape_error(l->t));
    ad_tape_free(l->t);
    ad_tensor_free(l->v);
}

#define BAD(v) ck_assert_msg(!ad_ok(v), "an invalid var gave a valid one")

static void e_unary(ad_var (*f)(ad_var)) { BAD(f(NV)); }
static void e_binary(ad_var (*f)(ad_var, ad_var))
{
    BAD(f(NV, NV));
    live l = live_new();
    BAD(f(l.x, NV));
    ad_tape_free(l.t);
    ad_tensor_free(l.v);
}

static ad_var fn_const(ad_tape *t, const ad_var *in, void *ctx) { return in[0]; }

static void e_tensor(void)
{
    ck_assert_ptr_null(ad_tensor_new(AD_F64, 2, NULL));
    ck_assert_ptr_null(ad_tensor_from(AD_F64, 2, NULL, NULL));
    ck_assert_ptr_null(ad_tensor_from(AD_F64, AD_SHAPE(2), NULL));
    ck_assert_ptr_null(ad_tensor_clone(NULL));
    ck_assert_int_eq(ad_tensor_copy(NULL, NULL), AD_ERR_ARG);
    ad_tensor_fill(NULL, 1.0);
    ck_assert_double_eq(ad_tensor_get(NULL, 0), 0.0);
    ad_tensor_set(NULL, 0, 1.0);
    ad_tensor_free(NULL);
}

static void e_shape(void)
{
    ad_tensor *a = ad_tensor_new(AD_F64, AD_SHAPE(2));
    ck_assert(!ad_shape_equal(NULL, NULL));
    ck_assert(!ad_shape_equal(a, NULL));
    ck_assert(!ad_shape_equal(NULL, a));
    char buf[16];
    ck_assert_str_eq(ad_shape_str(2, NULL, buf, sizeof buf), "[?]");
    ck_assert_str_eq(ad_shape_str(-1, NULL, buf, sizeof buf), "[?]");
    ck_assert_str_eq(ad_shape_str(0, NULL, buf, sizeof buf), "[]");
    ck_assert_ptr_null(ad_shape_str(2, a->shape, NULL, 16));
    ad_tensor_free(a);
}

static void e_rng(void)
{
    ad_rng_seed(NULL, 1);
    ck_assert_uint_eq(ad_rng_u64(NULL), 0);
    ck_assert_double_eq(ad_rng_uniform(NULL), 0.0);
    ck_assert(isnan(ad_rng_normal(NULL)));
    ck_assert_uint_eq(ad_rng_below(NULL, 10), 0);
    ad_tensor *a = ad_tensor_new(AD_F64, AD_SHAPE(2));
    ad_rng_fill_uniform(NULL, a, 0, 1);
    ad_rng_fill_normal(NULL, a, 0, 1);
    ck_assert_double_eq(ad_tensor_get(a, 0), 0.0); /* untouched */
    ad_rng r;
    ad_rng_seed(&r, 1);
    ad_rng_fill_uniform(&r, NULL, 0, 1);
    ad_rng_fill_normal(&r, NULL, 0, 1);
    ad_tensor_free(a);
}

static void e_tape(void)
{
    ad_tape_free(NULL);
    ad_tape_reset(NULL);
    ck_assert_int_ne(ad_tape_status(NULL), AD_OK);
    ck_assert_ptr_nonnull(ad_tape_error(NULL));
    ad_tape_clear_error(NULL);
    ck_assert(!ad_tape_set_grad_enabled(NULL, true));
    ck_assert(!ad_tape_grad_enabled(NULL));
    ad_tape_set_anomaly_detection(NULL, true);
    ck_assert_uint_eq(ad_tape_node_count(NULL), 0);
    ck_assert_uint_eq(ad_tape_arena_bytes(NULL), 0);
    ck_assert_uint_eq(ad_tape_fingerprint(NULL), 0);
    ck_assert_int_eq(ad_tape_write_dot(NULL, NULL), AD_ERR_ARG);
    ad_tape *t = ad_tape_new();
    ck_assert_int_eq(ad_tape_write_dot(t, NULL), AD_ERR_ARG);
    ad_tape_free(t);
}

static void e_leaves(void)
{
    BAD(ad_const(NULL, NULL));
    BAD(ad_leaf(NULL, NULL));
    BAD(ad_param(NULL, NULL, NULL));
    BAD(ad_scalar(NULL, AD_F64, 1.0));
    BAD(ad_full(NULL, AD_F64, 2, NULL, 1.0));
    static const char *const fns[] = {"ad_const", "ad_leaf", "ad_param", "ad_full"};
    for (int k = 0; k < 4; k++) {
        live l = live_new();
        ad_var v = k == 0   ? ad_const(l.t, NULL)
                   : k == 1 ? ad_leaf(l.t, NULL)
                   : k == 2 ? ad_param(l.t, NULL, NULL)
                            : ad_full(l.t, AD_F64, 2, NULL, 1.0);
        BAD(v);
        live_failed(&l, fns[k]);
    }
    ck_assert(!ad_ok(NV));
    ck_assert_ptr_null(ad_value(NV));
    ck_assert_ptr_null(ad_grad(NV));
    ck_assert(!ad_requires_grad(NV));
    ck_assert(isnan(ad_item(NV)));
}

/* The ops with pointer arguments: NULL beside a live var records an error naming the op. */
static void e_pointer_ops(void)
{
    struct {
        const char *fn;
        int k;
    } cases[] = {{"ad_sum_to", 0},     {"ad_reshape", 1},   {"ad_broadcast_to", 2}, {"ad_concat", 3},
                 {"ad_index_select", 4}, {"ad_index_add", 5}, {"ad_embedding", 6},    {"ad_conv2d_ex", 7},
                 {"ad_max_pool2d_ex", 8}, {"ad_avg_pool2d_ex", 9}, {"ad_dropout", 10}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        live l = live_new();
        ad_var v = NV;
        switch (cases[c].k) {
        case 0: v = ad_sum_to(l.x, 1, NULL); break;
        case 1: v = ad_reshape(l.x, 2, NULL); break;
        case 2: v = ad_broadcast_to(l.x, 2, NULL); break;
        case 3: v = ad_concat(2, NULL, 0); break;
        case 4: v = ad_index_select(l.x, 0, 2, NULL); break;
        case 5: v = ad_index_add(l.x, 0, 2, NULL, 3); break;
        case 6: v = ad_embedding(l.x, 2, NULL); break;
        case 7: v = ad_conv2d_ex(l.x, l.x, NULL); break;
        case 8: v = ad_max_pool2d_ex(l.x, NULL); break;
        case 9: v = ad_avg_pool2d_ex(l.x, NULL); break;
        case 10: v = ad_dropout(l.x, 0.5, true, NULL); break;
        }
        BAD(v);
        if (cases[c].k == 3) { /* no var at all: nowhere to record; the result is invalid */
            ad_tape_free(l.t);
            ad_tensor_free(l.v);
            continue;
        }
        live_failed(&l, cases[c].fn);
    }
}

static void e_other_ops(void)
{
    BAD(ad_add_scalar(NV, 1));
    BAD(ad_mul_scalar(NV, 1));
    BAD(ad_pow_scalar(NV, 2));
    BAD(ad_leaky_relu(NV, 0.1));
    BAD(ad_elu(NV, 1));
    BAD(ad_clamp(NV, 0, 1));
    BAD(ad_sum_axis(NV, 0, false));
    BAD(ad_mean_axis(NV, 0, false));
    BAD(ad_max_axis(NV, 0, false));
    BAD(ad_logsumexp(NV, 0, false));
    BAD(ad_sum_to(NV, 1, NULL));
    BAD(ad_matmul_t(NV, NV, false, false));
    BAD(ad_transpose(NV, 0, 1));
    BAD(ad_reshape(NV, 2, NULL));
    BAD(ad_broadcast_to(NV, 2, NULL));
    BAD(ad_slice(NV, 0, 0, 1));
    BAD(ad_concat(2, NULL, 0));
    BAD(ad_concat(1, &NV, 0));
    BAD(ad_index_select(NV, 0, 1, NULL));
    BAD(ad_index_add(NV, 0, 1, NULL, 2));
    BAD(ad_pad_axis(NV, 0, 0, 2));
    BAD(ad_softmax(NV, 0));
    BAD(ad_log_softmax(NV, 0));
    BAD(ad_cast(NV, AD_F32));
    BAD(ad_conv2d_ex(NV, NV, NULL));
    BAD(ad_conv2d(NV, NV, 1, 0, 1, 1));
    BAD(ad_max_pool2d_ex(NV, NULL));
    BAD(ad_max_pool2d(NV, 2, 2, 0));
    BAD(ad_avg_pool2d_ex(NV, NULL));
    BAD(ad_avg_pool2d(NV, 2, 2, 0));
    BAD(ad_where(NV, NV, NV));
    BAD(ad_masked_fill(NV, NV, 0));
    BAD(ad_dropout(NV, 0.5, true, NULL));
    BAD(ad_batch_norm(NV, NV, NV, NULL, NULL, true, 0.1, 1e-5));
    BAD(ad_layer_norm(NV, NV, NV, 1, 1e-5));
    BAD(ad_embedding(NV, 1, NULL));
    BAD(ad_flatten(NV, 0, -1));
}

static void e_layers(void)
{
    BAD(ad_attention(NV, NV, NV, AD_NO_VAR, false, 1.0));
    BAD(ad_conv_transpose2d_ex(NV, NV, NULL, 0, 0));
    BAD(ad_conv_transpose2d(NV, NV, 1, 0, 0, 1, 1));
    BAD(ad_conv1d(NV, NV, 1, 0, 1, 1));
    BAD(ad_group_norm(NV, 1, NV, NV, 1e-5));
    live l = live_new();
    BAD(ad_conv_transpose2d_ex(l.x, l.x, NULL, 0, 0));
    live_failed(&l, "ad_conv_transpose2d_ex");
}

static void e_custom(void)
{
    ck_assert_uint_eq(ad_tensor_version(NULL), 0);
    ad_tensor_bump_version(NULL);
    BAD(ad_custom(NULL, NULL, 1, NULL));
    ck_assert_int_ne(ad_custom_n(NULL, NULL, 1, NULL, NULL), AD_OK);
    ck_assert_int_ne(ad_custom_check(NULL, NULL, 1, NULL, NULL, NULL), AD_OK);
    ck_assert_int_ne(ad_checkpoint(NULL, NULL, 1, NULL, 1, NULL), AD_OK);
    ck_assert_int_ne(ad_vjp(NULL, NULL, 1, NULL, NULL, NULL, NULL, 0), AD_OK);
    ck_assert_int_ne(ad_jacobian_n(NULL, NULL, 1, NULL, NULL, NULL, 0), AD_OK);
    ck_assert_int_ne(ad_hessian_n(NULL, NULL, 1, NULL, NULL, NULL, 0), AD_OK);
    ck_assert_int_ne(ad_hvp_n(NULL, NULL, 1, NULL, NULL, NULL, NULL, 0), AD_OK);
}

static void e_forward(void)
{
    ck_assert_int_ne(ad_tangents(1, NULL, NULL, 1, NULL, NULL), AD_OK);
    ck_assert_int_ne(ad_tape_replay(NULL, 1, NULL, NULL), AD_OK);
    ck_assert(!ad_branch(NV, (ad_cmp)0, NV));
    ck_assert_int_ne(ad_jacfwd(NULL, NULL, NULL, NULL), AD_OK);
}

static void e_diff(void)
{
    ck_assert_int_ne(ad_backward(NV, NULL, 0), AD_OK);
    ck_assert_int_ne(ad_gradients(NV, 1, NULL, NULL, 0), AD_OK);
    ck_assert_int_ne(ad_gradients_seed(NV, NV, 1, NULL, NULL, 0), AD_OK);
    live l = live_new();
    ck_assert_int_eq(ad_gradients(ad_sum(l.x), 1, NULL, NULL, 0), AD_ERR_ARG);
    live_failed(&l, "ad_gradients");
    l = live_new();
    ck_assert_int_eq(ad_gradients_seed(ad_sum(l.x), NV, 0, NULL, NULL, 0), AD_ERR_ARG);
    live_failed(&l, "ad_gradients_seed");
    ad_check_opts o = ad_check_defaults();
    ck_assert(o.eps > 0);
    ck_assert_int_eq(ad_gradcheck(NULL, NULL, 1, NULL, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_gradgradcheck(NULL, NULL, 1, NULL, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_gradcheck(fn_const, NULL, 1, NULL, NULL, NULL), AD_ERR_ARG);
    ad_check_report_print(NULL, NULL);
    ck_assert_int_eq(ad_jacobian(NULL, NULL, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_hessian(NULL, NULL, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_hvp(NULL, NULL, NULL, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_jvp(NULL, NULL, NULL, NULL, NULL), AD_ERR_ARG);
}

static void e_settings(void)
{
    ad_set_allocator(NULL, NULL); /* NULL: the C library's allocator */
    int n = ad_get_num_threads();
    ad_set_num_threads(n);
    ck_assert_ptr_nonnull(ad_status_str((ad_status)12345));
    ck_assert_ptr_nonnull(ad_dtype_name((ad_dtype)77));
    ck_assert_uint_eq(ad_dtype_size((ad_dtype)77), 0);
}

static void e_files(void)
{
    ck_assert_int_eq(ad_npy_load(NULL, NULL, NULL, 0), AD_ERR_ARG);
    ck_assert_int_eq(ad_npy_save(NULL, NULL, NULL, 0), AD_ERR_ARG);
    ad_tensor *out = (ad_tensor *)&out;
    char err[128];
    ck_assert_int_eq(ad_npy_load(NULL, &out, err, sizeof err), AD_ERR_ARG);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(err, "ad_npy_load"));
}

/* ---- the table ---- */

typedef struct entry {
    const char *name;
    void (*run)(void);
    ad_var (*unary)(ad_var);
    ad_var (*binary)(ad_var, ad_var);
} entry;

#define UN(f) {#f, NULL, f, NULL}
#define BIN(f) {#f, NULL, NULL, f}
#define BY(f, fn) {#f, fn, NULL, NULL}

static const entry table[] = {
    UN(ad_abs), UN(ad_cos), UN(ad_detach), UN(ad_erf), UN(ad_erfc), UN(ad_exp), UN(ad_gelu), UN(ad_log),
    UN(ad_log1p), UN(ad_neg), UN(ad_relu), UN(ad_sigmoid), UN(ad_sign), UN(ad_sin), UN(ad_softplus), UN(ad_sqrt),
    UN(ad_square), UN(ad_sum), UN(ad_mean), UN(ad_tanh),
    BIN(ad_add), BIN(ad_sub), BIN(ad_mul), BIN(ad_div), BIN(ad_pow), BIN(ad_maximum), BIN(ad_minimum),
    BIN(ad_xlogy), BIN(ad_matmul),
    BY(ad_tensor_new, e_tensor), BY(ad_tensor_from, e_tensor), BY(ad_tensor_clone, e_tensor),
    BY(ad_tensor_copy, e_tensor), BY(ad_tensor_fill, e_tensor), BY(ad_tensor_get, e_tensor),
    BY(ad_tensor_set, e_tensor), BY(ad_tensor_free, e_tensor),
    BY(ad_shape_equal, e_shape), BY(ad_shape_str, e_shape),
    BY(ad_rng_seed, e_rng), BY(ad_rng_u64, e_rng), BY(ad_rng_uniform, e_rng), BY(ad_rng_normal, e_rng),
    BY(ad_rng_below, e_rng), BY(ad_rng_fill_uniform, e_rng), BY(ad_rng_fill_normal, e_rng),
    BY(ad_tape_new, e_tape), BY(ad_tape_free, e_tape), BY(ad_tape_reset, e_tape), BY(ad_tape_status, e_tape),
    BY(ad_tape_error, e_tape), BY(ad_tape_clear_error, e_tape), BY(ad_tape_set_grad_enabled, e_tape),
    BY(ad_tape_grad_enabled, e_tape), BY(ad_tape_set_anomaly_detection, e_tape), BY(ad_tape_node_count, e_tape),
    BY(ad_tape_arena_bytes, e_tape), BY(ad_tape_fingerprint, e_tape), BY(ad_tape_write_dot, e_tape),
    BY(ad_const, e_leaves), BY(ad_leaf, e_leaves), BY(ad_param, e_leaves), BY(ad_scalar, e_leaves),
    BY(ad_full, e_leaves), BY(ad_ok, e_leaves), BY(ad_value, e_leaves), BY(ad_grad, e_leaves),
    BY(ad_requires_grad, e_leaves), BY(ad_item, e_leaves),
    BY(ad_add_scalar, e_other_ops), BY(ad_mul_scalar, e_other_ops), BY(ad_pow_scalar, e_other_ops),
    BY(ad_leaky_relu, e_other_ops), BY(ad_elu, e_other_ops), BY(ad_clamp, e_other_ops),
    BY(ad_sum_axis, e_other_ops), BY(ad_mean_axis, e_other_ops), BY(ad_max_axis, e_other_ops),
    BY(ad_logsumexp, e_other_ops), BY(ad_sum_to, e_pointer_ops), BY(ad_matmul_t, e_other_ops),
    BY(ad_transpose, e_other_ops), BY(ad_reshape, e_pointer_ops), BY(ad_broadcast_to, e_pointer_ops),
    BY(ad_slice, e_other_ops), BY(ad_concat, e_pointer_ops), BY(ad_index_select, e_pointer_ops),
    BY(ad_index_add, e_pointer_ops), BY(ad_pad_axis, e_other_ops), BY(ad_softmax, e_other_ops),
    BY(ad_log_softmax, e_other_ops), BY(ad_cast, e_other_ops), BY(ad_conv2d_ex, e_pointer_ops),
    BY(ad_conv2d, e_other_ops), BY(ad_max_pool2d_ex, e_pointer_ops), BY(ad_max_pool2d, e_other_ops),
    BY(ad_avg_pool2d_ex, e_pointer_ops), BY(ad_avg_pool2d, e_other_ops), BY(ad_where, e_other_ops),
    BY(ad_masked_fill, e_other_ops), BY(ad_dropout, e_pointer_ops), BY(ad_batch_norm, e_other_ops),
    BY(ad_layer_norm, e_other_ops), BY(ad_embedding, e_pointer_ops), BY(ad_flatten, e_other_ops),
    BY(ad_backward, e_diff), BY(ad_gradients, e_diff), BY(ad_gradients_seed, e_diff),
    BY(ad_check_defaults, e_diff), BY(ad_gradcheck, e_diff), BY(ad_gradgradcheck, e_diff),
    BY(ad_check_report_print, e_diff), BY(ad_jacobian, e_diff), BY(ad_hessian, e_diff), BY(ad_hvp, e_diff),
    BY(ad_jvp, e_diff),
    BY(ad_set_allocator, e_settings), BY(ad_set_num_threads, e_settings), BY(ad_get_num_threads, e_settings),
    BY(ad_status_str, e_settings), BY(ad_dtype_name, e_settings), BY(ad_dtype_size, e_settings),
    BY(ad_npy_load, e_files), BY(ad_npy_save, e_files),
    BY(ad_attention, e_layers), BY(ad_conv_transpose2d_ex, e_layers), BY(ad_conv_transpose2d, e_layers),
    BY(ad_conv1d, e_layers), BY(ad_group_norm, e_layers),
    BY(ad_tensor_version, e_custom), BY(ad_tensor_bump_version, e_custom), BY(ad_custom, e_custom),
    BY(ad_custom_n, e_custom), BY(ad_custom_check, e_custom), BY(ad_checkpoint, e_custom), BY(ad_vjp, e_custom),
    BY(ad_jacobian_n, e_custom), BY(ad_hessian_n, e_custom), BY(ad_hvp_n, e_custom),
    BY(ad_tangents, e_forward), BY(ad_tape_replay, e_forward), BY(ad_branch, e_forward), BY(ad_jacfwd, e_forward),
};
#define NTABLE ((int)(sizeof table / sizeof table[0]))

START_TEST(null_arguments)
{
    const entry *e = &table[_i];
    if (e->unary) e_unary(e->unary);
    if (e->binary) e_binary(e->binary);
    if (e->run) e->run();
}
END_TEST

/* The library's exported functions (nm -D), each with an entry; and no entry for a name it lacks. */
START_TEST(every_export_has_an_entry)
{
    const char *names[NTABLE];
    for (int i = 0; i < NTABLE; i++) names[i] = table[i].name;
    check_exports("AD_LIB", "ad_", "ad__", names, NTABLE, "tests/test_api_edges.c");
}
END_TEST

/* ---- two tapes, gradients through masks, messages ---- */

START_TEST(gradients_across_tapes)
{
    live a = live_new(), b = live_new();
    ad_var y = ad_sum(a.x), g = NV;
    ck_assert_int_eq(ad_gradients(y, 1, &b.x, &g, 0), AD_ERR_ARG);
    ck_assert(!ad_ok(g));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(a.t), "different tape"));
    ck_assert_int_eq(ad_tape_status(b.t), AD_OK); /* the other tape is untouched */
    ad_tape_clear_error(a.t);
    ad_var seed = ad_scalar(b.t, AD_F64, 1.0);
    ck_assert_int_eq(ad_gradients_seed(y, seed, 1, &a.x, &g, 0), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(a.t), "seed"));
    /* mixed: one x on each tape */
    ad_tape_clear_error(a.t);
    ad_var xs[2] = {a.x, b.x}, gs[2];
    ck_assert_int_eq(ad_gradients(y, 2, xs, gs, 0), AD_ERR_ARG);
    for (int k = 0; k < 2; k++) {
        ad_tape_free(k ? b.t : a.t);
        ad_tensor_free(k ? b.v : a.v);
    }
}
END_TEST

/* sign has gradient 0: a loss through it, from a leaf, gives zeros (not "does not depend on any leaf") */
START_TEST(backward_through_sign)
{
    live l = live_new();
    ad_tensor_fill(l.v, -2.0);
    ad_var y = ad_sum(ad_mul_scalar(ad_sign(l.x), 3.0));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    const ad_tensor *g = ad_grad(l.x);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(g->size, 6);
    for (int i = 0; i < 6; i++) ck_assert_double_eq(ad_tensor_get(g, i), 0.0);
    /* a param: its grad tensor is left as it was (+ 0) */
    ad_tensor *pv = ad_tensor_new(AD_F64, AD_SHAPE(2)), *pg = ad_tensor_new(AD_F64, AD_SHAPE(2));
    ad_tensor_fill(pg, 5.0);
    ad_var p = ad_param(l.t, pv, pg);
    ck_assert_int_eq(ad_backward(ad_sum(ad_sign(p)), NULL, 0), AD_OK);
    ck_assert_double_eq(ad_tensor_get(pg, 1), 5.0);
    /* a constant alone still has nothing to differentiate: the error stays */
    ad_var c = ad_const(l.t, l.v);
    ck_assert_int_eq(ad_backward(ad_sum(ad_sign(c)), NULL, 0), AD_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(l.t), "does not depend"));
    ad_tensor_free(pv);
    ad_tensor_free(pg);
    ad_tape_free(l.t);
    ad_tensor_free(l.v);
}
END_TEST

START_TEST(messages_name_the_right_shapes)
{
    live l = live_new();
    BAD(ad_reshape(l.x, 2, NULL));
    ck_assert_int_eq(ad_tape_status(l.t), AD_ERR_ARG);
    ck_assert_msg(strstr(ad_tape_error(l.t), "NULL") && !strstr(ad_tape_error(l.t), "the most"), "%s",
                  ad_tape_error(l.t));
    ad_tape_clear_error(l.t);
    BAD(ad_reshape(l.x, 9, (const int64_t[9]){1, 1, 1, 1, 1, 1, 1, 2, 3}));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(l.t), "9 dimensions"));
    ad_tape_clear_error(l.t);
    /* layer norm over the last axis (3) with a gamma of [5]: the message wants [3] */
    ad_tensor *gv = ad_tensor_new(AD_F64, AD_SHAPE(5));
    ad_var gamma = ad_leaf(l.t, gv);
    BAD(ad_layer_norm(l.x, gamma, AD_NO_VAR, 1, 1e-5));
    const char *m = ad_tape_error(l.t);
    ck_assert_msg(strstr(m, "gamma [5]") && strstr(m, "want [3]"), "%s", m);
    ad_tensor_free(gv);
    ad_tape_free(l.t);
    ad_tensor_free(l.v);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_edges");
    TCase *tc = tcase_create("edges");
    tcase_add_loop_test(tc, null_arguments, 0, NTABLE);
    tcase_add_test(tc, every_export_has_an_entry);
    tcase_add_test(tc, gradients_across_tapes);
    tcase_add_test(tc, backward_through_sign);
    tcase_add_test(tc, messages_name_the_right_shapes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* test_custom.c: custom ops (both VJP kinds, tuples, masks, higher order, every error path, allocation failure), ad_custom_check, checkpoints, version counters, the functional API over n inputs. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custom.h"
#include "test_custom_ops.h"
#include "test_util.h"

/* ---- helpers ---- */

typedef struct fixture {
    ad_tape *t;
    ad_tensor *xv;
    ad_var x;
} fixture;

static fixture fix(int ndim, const int64_t *shape, const double *data)
{
    fixture f = {ad_tape_new(), tu_f64(ndim, shape, data), AD_NO_VAR};
    ck_assert_ptr_nonnull(f.t);
    f.x = ad_leaf(f.t, f.xv);
    return f;
}
static void unfix(fixture *f)
{
    ad_tape_free(f->t);
    ad_tensor_free(f->xv);
}

static const double x4[4] = {0.5, -1.25, 2.0, 0.75};

/* d/dx sum(op(x)) for a cube op, against 3 x^2 */
static void cube_grad_is_right(const ad_custom_op *op, unsigned flags)
{
    fixture f = fix(AD_SHAPE(2, 2), x4);
    ad_var y = ad_custom(op, NULL, 1, &f.x);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(f.t));
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, flags), AD_OK);
    for (int i = 0; i < 4; i++) TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(f.x), i), 3 * x4[i] * x4[i], 1e-15, 1e-15);
    unfix(&f);
}

/* ---- the two kinds of VJP ---- */

START_TEST(test_vjp_kinds)
{
    cube_grad_is_right(&co_cube, 0);
    cube_grad_is_right(&co_cube, AD_CREATE_GRAPH);
    cube_grad_is_right(&co_cube_raw, 0);
    cube_grad_is_right(&co_cube_raw, AD_CREATE_GRAPH);
    cube_grad_is_right(&co_cube_both, 0);
    cube_grad_is_right(&co_cube_both, AD_CREATE_GRAPH);
    cube_grad_is_right(&co_cube_raw_jvp, AD_CREATE_GRAPH);
}
END_TEST

/* Counts which VJP ran: the raw one in plain passes, the engine-op one under AD_CREATE_GRAPH. */
static int g_raw_calls, g_engine_calls;
static ad_status count_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                           ad_var *gin)
{
    g_engine_calls++;
    return co_cube_vjp(c, n, in, n_out, out, gout, gin);
}
static ad_status count_raw(void *c, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                           const ad_tensor *const *gout, ad_tensor *const *gin)
{
    g_raw_calls++;
    return co_cube_vjp_raw(c, n, in, n_out, out, gout, gin);
}

START_TEST(test_both_kinds_choice)
{
    ad_custom_op op = co_cube_both;
    op.vjp = count_vjp;
    op.vjp_raw = count_raw;
    g_raw_calls = g_engine_calls = 0;
    cube_grad_is_right(&op, 0);
    ck_assert_int_eq(g_raw_calls, 1);
    ck_assert_int_eq(g_engine_calls, 0);
    cube_grad_is_right(&op, AD_CREATE_GRAPH);
    ck_assert_int_eq(g_raw_calls, 1);
    ck_assert_int_eq(g_engine_calls, 1);
}
END_TEST

static ad_var f_cube(ad_tape *t, const ad_var *x, void *c) { return ad_sum(ad_custom(c, NULL, 1, x)); }

START_TEST(test_higher_order)
{
    /* Hessian of sum(x^3) = diag(6 x), through the engine-op VJP */
    ad_tensor *x = tu_f64(AD_SHAPE(4), x4), *h = tu_f64(AD_SHAPE(4, 4), NULL);
    ck_assert_int_eq(ad_hessian(f_cube, (void *)&co_cube, x, h), AD_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) TU_ASSERT_CLOSE(ad_tensor_get(h, i * 4 + j), i == j ? 6 * x4[i] : 0, 1e-14, 1e-14);
    /* a raw VJP with a jvp: the same Hessian */
    ad_tensor_fill(h, 0);
    ck_assert_int_eq(ad_hessian(f_cube, (void *)&co_cube_raw_jvp, x, h), AD_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) TU_ASSERT_CLOSE(ad_tensor_get(h, i * 4 + j), i == j ? 6 * x4[i] : 0, 1e-14, 1e-14);
    /* a raw VJP alone: the second derivative is unsupported, and the op is named */
    ck_assert_int_eq(ad_hessian(f_cube, (void *)&co_cube_raw, x, h), AD_ERR_UNSUPPORTED);
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var g;
    ck_assert_int_eq(ad_gradients(ad_sum(ad_custom(&co_cube_raw, NULL, 1, &f.x)), 1, &f.x, &g, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(g)), NULL, 0), AD_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(ad_tape_error(f.t), "custom op 'cube_raw'") && strstr(ad_tape_error(f.t), "vjp_raw"), "%s",
                  ad_tape_error(f.t));
    unfix(&f);
    /* third order through the engine-op VJP: d3/dx3 sum(x^3) = 6 */
    f = fix(AD_SHAPE(1), x4);
    ad_var g1, g2, g3;
    ck_assert_int_eq(ad_gradients(ad_sum(ad_custom(&co_cube, NULL, 1, &f.x)), 1, &f.x, &g1, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(g1), 1, &f.x, &g2, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(g2), 1, &f.x, &g3, 0), AD_OK);
    ck_assert_double_eq(ad_item(g3), 6.0);
    unfix(&f);
    ad_tensor_free(x);
    ad_tensor_free(h);
}
END_TEST

/* ---- tuple outputs ---- */

START_TEST(test_tuple)
{
    const double d[6] = {0.5, -1, 2, 0.25, 1.5, -0.75};
    const ad_custom_op *ops[2] = {&co_sqsum, &co_sqsum_raw};
    for (int k = 0; k < 2; k++) {
        fixture f = fix(AD_SHAPE(2, 3), d);
        ad_var o[2];
        ck_assert_int_eq(ad_custom_n(ops[k], NULL, 1, &f.x, o), AD_OK);
        tu_assert_shape(ad_value(o[0]), AD_SHAPE(2, 3));
        tu_assert_shape(ad_value(o[1]), AD_SHAPE(2));
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(o[1]), 1), 0.25 + 1.5 - 0.75, 0, 1e-15);
        /* ad_custom returns the first output */
        ad_var first = ad_custom(ops[k], NULL, 1, &f.x);
        tu_assert_shape(ad_value(first), AD_SHAPE(2, 3));
        /* only the second output used: the first's gradient arrives as zeros */
        ck_assert_int_eq(ad_backward(ad_sum(ad_mul(o[1], o[1])), NULL, 0), AD_OK);
        for (int i = 0; i < 6; i++) {
            double row = i < 3 ? 0.5 - 1 + 2 : 0.25 + 1.5 - 0.75;
            TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(f.x), i), 2 * row, 1e-15, 1e-15);
        }
        unfix(&f);
    }
    /* an empty output and a scalar one */
    fixture f = fix(AD_SHAPE(0, 3), NULL);
    ad_var o[2];
    ck_assert_int_eq(ad_custom_n(&co_sqsum, NULL, 1, &f.x, o), AD_OK);
    tu_assert_shape(ad_value(o[1]), AD_SHAPE(0));
    unfix(&f);
}
END_TEST

/* ---- non-differentiable inputs ---- */

START_TEST(test_mask_input)
{
    const double m[4] = {1, 0, 1, 0};
    fixture f = fix(AD_SHAPE(4), x4);
    ad_tensor *mv = tu_f64(AD_SHAPE(4), m);
    ad_var mask = ad_leaf(f.t, mv); /* a leaf, but the op says it takes no gradient */
    ad_var in[2] = {f.x, mask};
    ad_var y = ad_custom(&co_mscale, NULL, 2, in);
    ck_assert(ad_requires_grad(y));
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(f.x), m, 0, 0);
    ck_assert_ptr_null(ad_grad(mask));
    /* only a non-differentiable input needs a gradient: the output needs none */
    ad_tape_reset(f.t);
    ad_var c = ad_const(f.t, f.xv), ml = ad_leaf(f.t, mv), in2[2] = {c, ml};
    ck_assert(!ad_requires_grad(ad_custom(&co_mscale, NULL, 2, in2)));
    unfix(&f);
    ad_tensor_free(mv);
}
END_TEST

/* ---- error paths ---- */

static ad_status fail_shape(void *c, int n, const ad_tensor *const *in, ad_tensor *out) { return AD_ERR_SHAPE; }
static ad_status fail_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out) { return AD_ERR_NUMERIC; }
static ad_status bad_header_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    out[0]->shape[0] = 99;
    return AD_OK;
}
static ad_status shape_nd9(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    *out = *in[0];
    out->ndim = 9;
    return AD_OK;
}
static ad_status shape_neg(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    *out = *in[0];
    out->shape[0] = -2;
    return AD_OK;
}
static ad_status shape_dtype(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    *out = *in[0];
    out->dtype = (ad_dtype)7;
    return AD_OK;
}
static ad_status shape_mixed(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    out[0] = *in[0];
    out[1] = *in[0];
    out[1].dtype = AD_F32;
    return AD_OK;
}
static ad_status vjp_fails(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                           ad_var *gin)
{
    return AD_ERR_NUMERIC;
}
static ad_status vjp_wrong_shape(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                                 ad_var *gin)
{
    gin[0] = ad_sum(gout[0]);
    return AD_OK;
}
static ad_status vjp_wrong_dtype(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                                 ad_var *gin)
{
    gin[0] = ad_cast(gout[0], AD_F32);
    return AD_OK;
}
static ad_tape *g_other;
static ad_status vjp_other_tape(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                                ad_var *gin)
{
    gin[0] = ad_scalar(g_other, AD_F64, 1.0);
    return AD_OK;
}
static ad_status vjp_op_error(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                              ad_var *gin)
{
    gin[0] = ad_reshape(gout[0], 1, (const int64_t[]){3}); /* [4] as [3]: the op records its own error */
    return AD_OK;
}
static ad_status raw_fails(void *c, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                           const ad_tensor *const *gout, ad_tensor *const *gin)
{
    return AD_ERR_IO;
}
static ad_status raw_bad_header(void *c, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                                const ad_tensor *const *gout, ad_tensor *const *gin)
{
    gin[0]->ndim = 0;
    return AD_OK;
}

/* Records op on x4 and runs backward; returns the first failing status; the message must contain want. */
static ad_status run_op(const ad_custom_op *op, int n_out, const char *want)
{
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var o[2] = {AD_NO_VAR, AD_NO_VAR};
    ad_status s = n_out ? ad_custom_n(op, NULL, 1, &f.x, o) : AD_OK;
    if (s == AD_OK) {
        ad_var y = op->n_out > 1 ? ad_add(ad_sum(o[0]), ad_sum(o[1])) : ad_sum(o[0]);
        s = ad_backward(y, NULL, 0);
    }
    if (want) ck_assert_msg(strstr(ad_tape_error(f.t), want), "message \"%s\" lacks \"%s\"", ad_tape_error(f.t), want);
    /* the error is sticky: later ops do nothing */
    ck_assert(!ad_ok(ad_exp(f.x)));
    unfix(&f);
    return s;
}

START_TEST(test_errors_descriptor)
{
    ad_custom_op op = co_cube;
    ck_assert_int_eq(run_op(NULL, 1, "the descriptor is NULL"), AD_ERR_ARG);
    op.name = NULL;
    ck_assert_int_eq(run_op(&op, 1, "no name"), AD_ERR_ARG);
    op = co_cube;
    op.shape = NULL;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube': shape is NULL"), AD_ERR_ARG);
    op = co_cube;
    op.forward = NULL;
    ck_assert_int_eq(run_op(&op, 1, "forward is NULL"), AD_ERR_ARG);
    op = co_cube;
    op.vjp = NULL;
    ck_assert_int_eq(run_op(&op, 1, "neither vjp nor vjp_raw"), AD_ERR_ARG);
    op = co_cube;
    op.n_out = 0;
    ck_assert_int_eq(run_op(&op, 1, "n_out"), AD_ERR_ARG);
    /* arguments */
    fixture f = fix(AD_SHAPE(4), x4);
    ck_assert_int_eq(ad_custom_n(&co_cube, NULL, 0, &f.x, (ad_var[1]){AD_NO_VAR}), AD_ERR_ARG);
    ck_assert_int_eq(ad_custom_n(&co_cube, NULL, 1, NULL, (ad_var[1]){AD_NO_VAR}), AD_ERR_ARG);
    ck_assert(!ad_ok(ad_custom(&co_cube, NULL, 0, NULL)));
    ck_assert_int_eq(ad_custom_n(&co_cube, NULL, 1, &f.x, NULL), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "out is NULL"));
    ad_tape_reset(f.t);
    /* an input from another tape, a stale one */
    ad_tape *t2 = ad_tape_new();
    ad_var other = ad_leaf(t2, f.xv), x = ad_leaf(f.t, f.xv), both[2] = {x, other};
    ck_assert(!ad_ok(ad_custom(&co_mscale, NULL, 2, both)));
    ck_assert_int_eq(ad_tape_status(f.t), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "mscale"));
    ad_tape_reset(f.t);
    ck_assert(!ad_ok(ad_custom(&co_cube, NULL, 1, &x)));
    ck_assert_int_eq(ad_tape_status(f.t), AD_ERR_STATE);
    ad_tape_free(t2);
    unfix(&f);
}
END_TEST

START_TEST(test_errors_forward)
{
    ad_custom_op op = co_cube;
    op.shape = fail_shape;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube': shape failed"), AD_ERR_SHAPE);
    op.shape = shape_nd9;
    ck_assert_int_eq(run_op(&op, 1, "9 dimensions"), AD_ERR_SHAPE);
    op.shape = shape_neg;
    ck_assert_int_eq(run_op(&op, 1, "invalid shape [-2]"), AD_ERR_SHAPE);
    op.shape = shape_dtype;
    ck_assert_int_eq(run_op(&op, 1, "unknown dtype"), AD_ERR_DTYPE);
    op = co_sqsum;
    op.shape = shape_mixed;
    ck_assert_int_eq(run_op(&op, 1, "share a dtype"), AD_ERR_DTYPE);
    op = co_cube;
    op.forward = fail_fwd;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube': forward failed: "), AD_ERR_NUMERIC);
    op.forward = bad_header_fwd;
    ck_assert_int_eq(run_op(&op, 1, "forward changed the header"), AD_ERR_SHAPE);
    /* a sqsum on a 1-D input: its shape callback refuses */
    ck_assert_int_eq(run_op(&co_sqsum, 1, "sqsum"), AD_ERR_SHAPE);
}
END_TEST

START_TEST(test_errors_vjp)
{
    ad_custom_op op = co_cube;
    op.vjp = vjp_fails;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube': vjp failed"), AD_ERR_NUMERIC);
    op.vjp = vjp_wrong_shape;
    ck_assert_int_eq(run_op(&op, 1, "vjp gave 1 as [] f64, expected [4] f64"), AD_ERR_SHAPE);
    op.vjp = vjp_wrong_dtype;
    ck_assert_int_eq(run_op(&op, 1, "expected [4] f64"), AD_ERR_DTYPE);
    g_other = ad_tape_new();
    op.vjp = vjp_other_tape;
    ck_assert_int_eq(run_op(&op, 1, "of another tape"), AD_ERR_ARG);
    ad_tape_free(g_other);
    op.vjp = vjp_op_error;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube': vjp: ad_reshape"), AD_ERR_SHAPE);
    op = co_cube_raw;
    op.vjp_raw = raw_fails;
    ck_assert_int_eq(run_op(&op, 1, "custom op 'cube_raw': vjp_raw failed"), AD_ERR_IO);
    op.vjp_raw = raw_bad_header;
    ck_assert_int_eq(run_op(&op, 1, "vjp_raw changed the header"), AD_ERR_SHAPE);
    /* forward mode without a jvp, through the hook forward mode calls */
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var y = ad_custom(&co_cube_raw, NULL, 1, &f.x), tout, tin = ad_full(f.t, AD_F64, AD_SHAPE(4), 1.0);
    const ad_node *n = ad__node(f.t, y.id);
    ck_assert_int_eq(ad__custom_jvp(f.t, n, y.id, &tin, &tout), AD_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "cube_raw"));
    ad_tape_reset(f.t);
    ad_var x = ad_leaf(f.t, f.xv);
    y = ad_custom(&co_cube, NULL, 1, &x);
    tin = ad_full(f.t, AD_F64, AD_SHAPE(4), 1.0);
    ck_assert_int_eq(ad__custom_jvp(f.t, ad__node(f.t, y.id), y.id, &tin, &tout), AD_OK);
    for (int i = 0; i < 4; i++) TU_ASSERT_CLOSE(ad_tensor_get(ad_value(tout), i), 3 * x4[i] * x4[i], 0, 1e-15);
    /* the tangent rules in forward mode's form: a tuple's outputs slice the packed tangent */
    ad_var x2 = ad_reshape(x, 2, (const int64_t[]){2, 2}), o[2];
    ck_assert_int_eq(ad_custom_n(&co_sqsum, NULL, 1, &x2, o), AD_OK);
    ad_var t2 = ad_full(f.t, AD_F64, AD_SHAPE(2, 2), 1.0);
    ad_var packed = ad__jvp_custom(f.t, ad__node(f.t, o[0].id - 1), o[0].id - 1, &t2);
    tu_assert_shape(ad_value(packed), AD_SHAPE(6));
    ad_var t1 = ad__jvp_custom_out(f.t, ad__node(f.t, o[1].id), o[1].id, &packed);
    const double rowsum[2] = {2, 2}; /* d(sum over a row)/dx . ones */
    tu_assert_values(ad_value(t1), rowsum, 0, 0);
    ad_var none = AD_NO_VAR;
    ck_assert(ad__jvp_custom_out(f.t, ad__node(f.t, o[1].id), o[1].id, &none).id == AD_NO_NODE);
    ck_assert_int_eq(ad_tape_status(f.t), AD_OK);
    unfix(&f);
}
END_TEST

/* ---- names: DOT, anomaly messages, fingerprint ---- */

static ad_status nan_fwd(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    ad_tensor_fill(out[0], 0.0 / 0.0);
    return AD_OK;
}

static ad_status raw_nan(void *c, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                         const ad_tensor *const *gout, ad_tensor *const *gin)
{
    ad_tensor_fill(gin[0], 0.0 / 0.0);
    return AD_OK;
}

START_TEST(test_names)
{
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var o[2];
    ad_var y = ad_custom(&co_cube, NULL, 1, &f.x);
    ad_var x2 = ad_reshape(f.x, 2, (const int64_t[]){2, 2});
    ck_assert_int_eq(ad_custom_n(&co_sqsum, NULL, 1, &x2, o), AD_OK);
    ck_assert(ad_ok(y));
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    ck_assert_int_eq(ad_tape_write_dot(f.t, mf), AD_OK);
    fclose(mf);
    ck_assert_ptr_nonnull(strstr(buf, " cube\\n"));
    ck_assert_ptr_nonnull(strstr(buf, " sqsum\\n"));
    free(buf);
    uint64_t fp1 = ad_tape_fingerprint(f.t);
    /* the same program with another op name: another fingerprint; the same name: the same */
    ad_custom_op renamed = co_cube;
    renamed.name = "cube2";
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    ad_custom(&renamed, NULL, 1, &f.x);
    x2 = ad_reshape(f.x, 2, (const int64_t[]){2, 2});
    ad_custom_n(&co_sqsum, NULL, 1, &x2, o);
    ck_assert_uint_ne(ad_tape_fingerprint(f.t), fp1);
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    ad_custom(&co_cube, NULL, 1, &f.x);
    x2 = ad_reshape(f.x, 2, (const int64_t[]){2, 2});
    ad_custom_n(&co_sqsum, NULL, 1, &x2, o);
    ck_assert_uint_eq(ad_tape_fingerprint(f.t), fp1);
    /* anomaly detection names the op, forward and backward */
    ad_tape_reset(f.t);
    ad_tape_set_anomaly_detection(f.t, true);
    f.x = ad_leaf(f.t, f.xv);
    ad_custom_op bad = co_cube;
    bad.forward = nan_fwd;
    ck_assert(!ad_ok(ad_custom(&bad, NULL, 1, &f.x)));
    ck_assert_int_eq(ad_tape_status(f.t), AD_ERR_NUMERIC);
    ck_assert_msg(strncmp(ad_tape_error(f.t), "cube: non-finite output", 23) == 0, "%s", ad_tape_error(f.t));
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    bad = co_cube_raw;
    bad.vjp_raw = raw_nan;
    y = ad_custom(&bad, NULL, 1, &f.x);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(f.t), "cube_raw: non-finite gradient"), "%s", ad_tape_error(f.t));
    unfix(&f);
}
END_TEST

/* ---- allocation failure inside a custom op ---- */

typedef struct fault {
    long allocs, fail_at, live;
} fault;

static void *fault_fn(void *ud, void *ptr, size_t nsize)
{
    fault *fa = ud;
    if (nsize == 0) {
        if (ptr) fa->live--;
        free(ptr);
        return NULL;
    }
    if (++fa->allocs == fa->fail_at) return NULL;
    void *p = realloc(ptr, nsize);
    if (p && !ptr) fa->live++;
    return p;
}

/* A tape, a custom op of each kind on a big input (so that the arena must grow), backward, and a checkpoint. */
static ad_status alloc_run(void)
{
    ad_tensor *xv = ad_tensor_new(AD_F64, AD_SHAPE(64, 128));
    ad_tape *t = ad_tape_new();
    ad_status s = AD_ERR_NOMEM;
    if (!xv || !t) goto done;
    ad_tensor_fill(xv, 0.5);
    ad_var x = ad_leaf(t, xv), o[2], in[3];
    ad_var y = ad_custom(&co_cube, NULL, 1, &x);
    ad_var z = ad_custom(&co_cube_raw, NULL, 1, &y);
    if (ad_custom_n(&co_sqsum_raw, NULL, 1, &z, o) != AD_OK) goto out;
    in[0] = o[0];
    in[1] = z;
    in[2] = x;
    ad_var c[2];
    if (ad_checkpoint(co_segment, NULL, 3, in, 2, c) != AD_OK) goto out;
    s = ad_backward(ad_add(ad_sum(c[0]), ad_add(ad_sum(c[1]), ad_sum(o[1]))), NULL, 0);
out:
    if (s == AD_OK && ad_grad(x) == NULL) s = AD_ERR_STATE;
    if (s != AD_OK) s = ad_tape_status(t);
done:
    ad_tape_free(t);
    ad_tensor_free(xv);
    return s;
}

START_TEST(test_alloc_failure)
{
    fault probe = {0, 0, 0};
    ad_set_allocator(fault_fn, &probe);
    ck_assert_int_eq(alloc_run(), AD_OK);
    ad_set_allocator(NULL, NULL);
    ck_assert_int_eq(probe.live, 0);
    long failures = 0;
    for (long n = 1; n <= probe.allocs; n++) {
        fault fa = {0, n, 0};
        ad_set_allocator(fault_fn, &fa);
        ad_status s = alloc_run();
        ad_set_allocator(NULL, NULL);
        ck_assert_msg(s == AD_OK || s == AD_ERR_NOMEM, "allocation %ld: %s", n, ad_status_str(s));
        ck_assert_msg(fa.live == 0, "allocation %ld failed: %ld blocks leaked", n, fa.live);
        failures += s == AD_ERR_NOMEM;
    }
    ck_assert_int_gt(failures, 3);
}
END_TEST

/* ---- ad_custom_check and the vacuous-pass flag ---- */

static ad_status vjp_twice(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                           ad_var *gin)
{
    gin[0] = ad_mul_scalar(ad_mul(gout[0], ad_mul_scalar(ad_square(in[0]), 3.0)), 2.0);
    return AD_OK;
}

START_TEST(test_custom_check)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 5), *m = tu_f64(AD_SHAPE(2, 3), (double[]){1, 0, 1, 1, 0, 0});
    ad_check_report rep;
    ck_assert_int_eq(ad_custom_check(&co_cube, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.order, 2);
    ck_assert_int_eq(ad_custom_check(&co_cube_raw, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.order, 1); /* no second order without an engine-op vjp or a jvp */
    ck_assert_int_eq(ad_custom_check(&co_cube_raw_jvp, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.order, 2);
    ck_assert_int_eq(ad_custom_check(&co_sqsum, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_custom_check(&co_sqsum_raw, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_OK);
    const ad_tensor *xm[2] = {x, m};
    ck_assert_int_eq(ad_custom_check(&co_mscale, NULL, 2, xm, NULL, &rep), AD_OK);
    /* a wrong VJP is caught, at the op's input index */
    ad_custom_op wrong = co_cube;
    wrong.vjp = vjp_twice;
    ck_assert_int_eq(ad_custom_check(&wrong, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_ERR_NUMERIC);
    ck_assert_int_eq(rep.order, 1);
    ck_assert_int_eq(rep.input, 0);
    TU_ASSERT_CLOSE(rep.analytic, 2 * rep.numeric, 1e-6, 1e-6);
    /* a wrong VJP with a right tangent rule: the second order through the jvp is right, the first is not */
    wrong = co_cube_raw_jvp;
    wrong.vjp_raw = raw_fails;
    ck_assert_int_eq(ad_custom_check(&wrong, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(rep.message, "vjp_raw failed"));
    /* argument errors */
    ck_assert_int_eq(ad_custom_check(NULL, NULL, 1, (const ad_tensor *const *)&x, NULL, &rep), AD_ERR_ARG);
    ck_assert_int_eq(ad_custom_check(&co_cube, NULL, 0, NULL, NULL, &rep), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(rep.message, "no inputs"));
    ad_tensor_free(x);
    ad_tensor_free(m);
}
END_TEST

static ad_var f_ignores_y(ad_tape *t, const ad_var *x, void *c) { return ad_square(x[0]); }
static ad_var f_linear(ad_tape *t, const ad_var *x, void *c)
{
    return ad_add(ad_sum(ad_mul_scalar(x[0], 2.0)), ad_sum(ad_square(x[1])));
}

START_TEST(test_vacuous)
{
    ad_tensor *in[2] = {tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 1), tu_rand(AD_F64, AD_SHAPE(2), -1, 1, 2)};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_ignores_y, NULL, 2, (const ad_tensor *const *)in, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.independent_input, 1);
    ck_assert_int_eq(rep.independent_count, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    ad_check_report_print(&rep, mf);
    fclose(mf);
    ck_assert_msg(strstr(buf, "warning: the output does not depend on input 1"), "%s", buf);
    free(buf);
    /* fast mode sees it too */
    ad_check_opts o = ad_check_defaults();
    o.fast_mode = true;
    ck_assert_int_eq(ad_gradcheck(f_ignores_y, NULL, 2, (const ad_tensor *const *)in, &o, &rep), AD_OK);
    ck_assert_int_eq(rep.independent_input, 1);
    /* a function of both: no flag */
    ck_assert_int_eq(ad_gradcheck(f_linear, NULL, 2, (const ad_tensor *const *)in, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.independent_input, -1);
    ck_assert_int_eq(rep.independent_count, 0);
    /* second order: the gradient of 2 x + y^2 does not depend on x */
    ck_assert_int_eq(ad_gradgradcheck(f_linear, NULL, 2, (const ad_tensor *const *)in, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.independent_input, 0);
    ad_tensor_free(in[0]);
    ad_tensor_free(in[1]);
}
END_TEST

/* ---- version counters ---- */

START_TEST(test_mutation)
{
    /* the example: z = a * a recorded at a = 0.1, a set to 5 before backward */
    ad_tensor *a = tu_f64(AD_SHAPE(1), (double[]){0.1});
    ad_tape *t = ad_tape_new();
    ad_var av = ad_leaf(t, a);
    ad_var z = ad_mul(av, av);
    uint32_t v0 = ad_tensor_version(a);
    ad_tensor_set(a, 0, 5.0);
    ck_assert_uint_eq(ad_tensor_version(a), v0 + 1);
    ck_assert_int_eq(ad_backward(z, NULL, 0), AD_ERR_STATE);
    const char *msg = ad_tape_error(t);
    ck_assert_msg(strstr(msg, "ad_mul") && strstr(msg, "leaf [1] f64") && strstr(msg, "modified after it was recorded"),
                  "%s", msg);
    ck_assert_ptr_null(ad_grad(av));
    /* recorded again after the change: fine, 2 a = 10 */
    ad_tape_reset(t);
    av = ad_leaf(t, a);
    ck_assert_int_eq(ad_backward(ad_mul(av, av), NULL, 0), AD_OK);
    ck_assert_double_eq(ad_tensor_get(ad_grad(av), 0), 10.0);
    /* every writer bumps: fill, copy, the rng, and an explicit bump after writing ->data */
    ad_tensor *b = tu_f64(AD_SHAPE(1), (double[]){1});
    ad_rng r;
    ad_rng_seed(&r, 1);
    void (*writes[4])(ad_tensor *, ad_tensor *, ad_rng *) = {NULL, NULL, NULL, NULL};
    (void)writes;
    for (int w = 0; w < 4; w++) {
        ad_tape_reset(t);
        av = ad_param(t, a, NULL);
        z = ad_mul(av, av);
        uint32_t before = ad_tensor_version(a);
        if (w == 0) ad_tensor_fill(a, 2.0);
        if (w == 1) ad_tensor_copy(a, b);
        if (w == 2) ad_rng_fill_uniform(&r, a, 0, 1);
        if (w == 3) {
            ((double *)a->data)[0] = 3.0;
            ad_tensor_bump_version(a);
        }
        ck_assert_uint_gt(ad_tensor_version(a), before);
        ck_assert_int_eq(ad_backward(z, NULL, 0), AD_ERR_STATE);
        ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "param"));
    }
    /* writing ->data directly bypasses the counter (documented): no error, a stale value */
    ad_tape_reset(t);
    av = ad_leaf(t, a);
    z = ad_mul(av, av);
    ((double *)a->data)[0] = 4.0;
    ck_assert_int_eq(ad_backward(z, NULL, 0), AD_OK);
    /* a changed constant that only feeds ops needing no gradient is no error */
    ad_tape_reset(t);
    ad_var c = ad_const(t, b), x = ad_leaf(t, a);
    ad_var y = ad_add(x, ad_exp(c));
    ad_tensor_fill(b, 7.0);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    /* ... but one an op needing a gradient takes is, named as a const; ad_gradients checks too */
    ad_tape_reset(t);
    c = ad_const(t, b);
    x = ad_leaf(t, a);
    y = ad_sum(ad_mul(x, c));
    ad_tensor_fill(b, 8.0);
    ad_var g;
    ck_assert_int_eq(ad_gradients(y, 1, &x, &g, 0), AD_ERR_STATE);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_gradients: ad_mul") && strstr(ad_tape_error(t), "const"), "%s",
                  ad_tape_error(t));
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
}
END_TEST

START_TEST(test_second_backward)
{
    /* a second ad_backward on the same graph adds the gradients again (PyTorch's behaviour with retain_graph) */
    ad_tensor *a = tu_f64(AD_SHAPE(2), (double[]){1.5, -2}), *p = tu_f64(AD_SHAPE(2), (double[]){3, 0.5});
    ad_tensor *pg = tu_f64(AD_SHAPE(2), NULL);
    unsigned flags[3] = {0, AD_ACCUMULATE, AD_CREATE_GRAPH};
    for (int k = 0; k < 3; k++) {
        ad_tape *t = ad_tape_new();
        ad_tensor_fill(pg, 0);
        ad_var x = ad_leaf(t, a), w = ad_param(t, p, pg);
        ad_var y = ad_sum(ad_mul(ad_square(x), w)); /* dy/dx = 2 x w, dy/dw = x^2 */
        ck_assert_int_eq(ad_backward(y, NULL, flags[k]), AD_OK);
        ck_assert_int_eq(ad_backward(y, NULL, flags[k]), AD_OK);
        for (int i = 0; i < 2; i++) {
            double xi = ((double *)a->data)[i], wi = ((double *)p->data)[i];
            if (flags[k] != AD_ACCUMULATE) TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), i), 2 * 2 * xi * wi, 0, 1e-15);
            TU_ASSERT_CLOSE(ad_tensor_get(pg, i), 2 * xi * xi, 0, 1e-15);
        }
        ad_tape_free(t);
    }
    ad_tensor_free(a);
    ad_tensor_free(p);
    ad_tensor_free(pg);
}
END_TEST

/* ---- checkpoints ---- */

static const int k_steps[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

/* A chain of `segs` segments of `steps` (<= 20) steps over (h, c, w): plainly, or each segment
** checkpointed (ctx, the step count, must live until backward: a static). */
static ad_var chain(ad_tape *t, ad_var h, ad_var c, ad_var w, int segs, int steps, bool ckpt)
{
    for (int s = 0; s < segs; s++) {
        ad_var in[3] = {h, c, w}, o[2];
        if (ckpt)
            ad_checkpoint(co_segment, (void *)&k_steps[steps], 3, in, 2, o);
        else
            co_segment(t, 3, in, 2, o, (void *)&k_steps[steps]);
        h = o[0];
        c = o[1];
    }
    return ad_add(ad_sum(h), ad_mean(c));
}

static void chain_grads(ad_dtype dt, bool ckpt, unsigned flags, ad_tensor **gout, size_t *arena)
{
    ad_tensor *h0 = tu_rand(dt, AD_SHAPE(3, 4), -1, 1, 11), *c0 = tu_rand(dt, AD_SHAPE(3, 4), 0.9, 1.0, 12);
    ad_tensor *w = tu_rand(dt, AD_SHAPE(4), 0.5, 1.5, 13), *wg = ad_tensor_new(dt, AD_SHAPE(4));
    ad_tape *t = ad_tape_new();
    ad_var h = ad_leaf(t, h0), c = ad_const(t, c0), wv = ad_param(t, w, wg);
    ad_var y = chain(t, h, c, wv, 6, 5, ckpt);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    ck_assert_msg(ad_backward(y, NULL, flags) == AD_OK, "%s", ad_tape_error(t));
    gout[0] = ad_tensor_clone(ad_grad(h));
    gout[1] = wg;
    if (arena) *arena = ad_tape_arena_bytes(t);
    ad_tape_free(t);
    ad_tensor_free(h0);
    ad_tensor_free(c0);
    ad_tensor_free(w);
}

START_TEST(test_checkpoint_bitwise)
{
    ad_dtype dts[2] = {AD_F64, AD_F32};
    unsigned flags[2] = {0, AD_ACCUMULATE};
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < 2; f++) {
            ad_tensor *plain[2], *ck[2];
            chain_grads(dts[d], false, flags[f], plain, NULL);
            chain_grads(dts[d], true, flags[f], ck, NULL);
            for (int k = 0; k < 2; k++) {
                ck_assert_ptr_nonnull(plain[k]);
                ck_assert_ptr_nonnull(ck[k]);
                ck_assert_msg(memcmp(plain[k]->data, ck[k]->data, ad__nbytes(plain[k])) == 0,
                              "%s flags %u: gradient %d differs with checkpoints", ad_dtype_name(dts[d]), flags[f], k);
                ad_tensor_free(plain[k]);
                ad_tensor_free(ck[k]);
            }
        }
}
END_TEST

/* a segment made of two checkpointed halves (checkpoints inside a checkpoint) */
static ad_status seg_nested(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    ad_var mid[3] = {AD_NO_VAR, AD_NO_VAR, in[2]};
    ad_status s = ad_checkpoint(co_segment, (void *)&k_steps[2], 3, in, 2, mid);
    if (s == AD_OK) s = ad_checkpoint(co_segment, (void *)&k_steps[3], 3, mid, 2, out);
    return s;
}

START_TEST(test_checkpoint_nested)
{
    for (int f = 0; f < 2; f++) {
        ad_tensor *h0 = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 31), *c0 = tu_rand(AD_F64, AD_SHAPE(2, 3), 0.9, 1, 32);
        ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1.5, 33), *g[2][2];
        for (int k = 0; k < 2; k++) {
            ad_tape *t = ad_tape_new();
            ad_var h = ad_leaf(t, h0), c = ad_leaf(t, c0), wv = ad_leaf(t, w);
            for (int s = 0; s < 4; s++) {
                ad_var in[3] = {h, c, wv}, o[2];
                if (k)
                    ck_assert_int_eq(ad_checkpoint(seg_nested, NULL, 3, in, 2, o), AD_OK);
                else
                    co_segment(t, 3, in, 2, o, (void *)&k_steps[5]);
                h = o[0];
                c = o[1];
            }
            ck_assert_msg(ad_backward(ad_add(ad_sum(h), ad_sum(c)), NULL, f ? AD_CREATE_GRAPH : 0) == AD_OK, "%s",
                          ad_tape_error(t));
            g[k][0] = ad_tensor_clone(ad_grad(ad__var(t, 0)));
            g[k][1] = ad_tensor_clone(ad_grad(ad__var(t, 2)));
            ad_tape_free(t);
        }
        for (int j = 0; j < 2; j++) {
            ck_assert_msg(memcmp(g[0][j]->data, g[1][j]->data, ad__nbytes(g[0][j])) == 0,
                          "nested checkpoints, flags %d: gradient %d differs", f, j);
            ad_tensor_free(g[0][j]);
            ad_tensor_free(g[1][j]);
        }
        ad_tensor_free(h0);
        ad_tensor_free(c0);
        ad_tensor_free(w);
    }
}
END_TEST

/* A long chain: the checkpointed tape stays smaller. */
START_TEST(test_checkpoint_memory)
{
    ad_tensor *h0 = tu_rand(AD_F64, AD_SHAPE(64, 64), -1, 1, 1), *c0 = tu_rand(AD_F64, AD_SHAPE(64, 64), 0.9, 1, 2);
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(64), 0.5, 1.5, 3);
    size_t bytes[2];
    for (int k = 0; k < 2; k++) {
        ad_tape *t = ad_tape_new();
        ad_var y = chain(t, ad_leaf(t, h0), ad_const(t, c0), ad_leaf(t, w), 20, 20, k == 1);
        ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        bytes[k] = ad_tape_arena_bytes(t);
        ad_tape_free(t);
    }
    ck_assert_msg(bytes[1] * 4 < bytes[0], "arena: %zu bytes with checkpoints, %zu without", bytes[1], bytes[0]);
    ad_tensor_free(h0);
    ad_tensor_free(c0);
    ad_tensor_free(w);
}
END_TEST

static int g_calls;
static ad_status seg_drifts(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    out[0] = ad_add_scalar(in[0], g_calls++ ? 1.0 : 0.0);
    return AD_OK;
}
static ad_status seg_fails(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    out[0] = in[0];
    return *(int *)ctx ? AD_ERR_IO : AD_OK;
}
static ad_status seg_invalid(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    out[0] = ad_reshape(in[0], 1, (const int64_t[]){7}); /* records an error */
    return AD_OK;
}
static ad_status seg_param(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    ad_tensor **pw = ctx;
    out[0] = ad_mul(ad_tanh(in[0]), ad_param(t, pw[0], pw[1])); /* a param joined inside the segment */
    return AD_OK;
}

START_TEST(test_checkpoint_errors)
{
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var y;
    ck_assert_int_eq(ad_checkpoint(NULL, NULL, 1, &f.x, 1, &y), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "fn is NULL"));
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    ck_assert_int_eq(ad_checkpoint(seg_fails, NULL, 1, &f.x, 0, &y), AD_ERR_ARG);
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    ck_assert_int_eq(ad_checkpoint(seg_fails, NULL, 0, NULL, 1, &y), AD_ERR_ARG);
    /* fn failing, forward and at the recomputation */
    int fail = 1;
    ck_assert_int_eq(ad_checkpoint(seg_fails, &fail, 1, &f.x, 1, &y), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "fn failed"));
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    fail = 0;
    ck_assert_int_eq(ad_checkpoint(seg_fails, &fail, 1, &f.x, 1, &y), AD_OK);
    fail = 1;
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(y)), NULL, 0), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "recomputed"));
    /* an op error inside fn */
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    ck_assert_int_eq(ad_checkpoint(seg_invalid, NULL, 1, &f.x, 1, &y), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "ad_reshape"));
    /* a segment that computes something else the second time */
    ad_tape_reset(f.t);
    f.x = ad_leaf(f.t, f.xv);
    g_calls = 0;
    ck_assert_int_eq(ad_checkpoint(seg_drifts, NULL, 1, &f.x, 1, &y), AD_OK);
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(y)), NULL, 0), AD_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(f.t), "differs from the first run"));
    /* a param joined inside the segment gets its gradient (AD_ACCUMULATE and not) */
    for (int k = 0; k < 2; k++) {
        ad_tensor *w = tu_f64(AD_SHAPE(4), (double[]){1, 2, 3, 4}), *wg = tu_f64(AD_SHAPE(4), NULL);
        ad_tensor *pw[2] = {w, wg};
        ad_tape_reset(f.t);
        f.x = ad_leaf(f.t, f.xv);
        ck_assert_int_eq(ad_checkpoint(seg_param, pw, 1, &f.x, 1, &y), AD_OK);
        ck_assert_int_eq(ad_backward(ad_sum(y), NULL, k ? AD_ACCUMULATE : 0), AD_OK);
        for (int i = 0; i < 4; i++) {
            TU_ASSERT_CLOSE(ad_tensor_get(wg, i), tanh(x4[i]), 0, 1e-15);
            double th = tanh(x4[i]);
            TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(f.x), i), (1 - th * th) * (i + 1), 0, 1e-15);
        }
        ad_tensor_free(w);
        ad_tensor_free(wg);
    }
    unfix(&f);
}
END_TEST

/* The forward kernel a replay of the tape calls: fn again on the inputs' current values. */
START_TEST(test_checkpoint_forward_kernel)
{
    fixture f = fix(AD_SHAPE(4), x4);
    ad_var in[3] = {f.x, f.x, f.x}, o[2];
    ck_assert_int_eq(ad_checkpoint(co_segment, NULL, 3, in, 2, o), AD_OK);
    size_t nodes = ad_tape_node_count(f.t);
    for (int i = 0; i < 4; i++) ((double *)f.xv->data)[i] *= 0.5;
    ad_node *n = ad__node(f.t, o[0].id - 1); /* the checkpoint node, just before its outputs */
    ck_assert_int_eq(n->op, AD_OP_CHECKPOINT);
    ck_assert_int_eq(ad__ops[AD_OP_CHECKPOINT].forward(f.t, n), AD_OK);
    ck_assert_uint_eq(ad_tape_node_count(f.t), nodes);
    for (int i = 0; i < 4; i++) {
        double x = 0.5 * x4[i], h = x, c = x;
        for (int k = 0; k < 2; k++) {
            double h2 = tanh(h * x + c);
            c = c * h;
            h = h2;
        }
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(o[0]), i), h, 0, 1e-15);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(o[1]), i), c, 0, 1e-15);
    }
    /* and backward agrees with the new values (the recomputation matches them) */
    ck_assert_int_eq(ad_backward(ad_sum(o[0]), NULL, 0), AD_OK);
    unfix(&f);
}
END_TEST

/* ---- an LSTM unrolled over T steps, checkpointed every sqrt(T) steps: the same gradients bit for bit ---- */

enum { LN = 4, LIN = 3, LH = 8 };

typedef struct lstm {
    ad_var w_ih, w_hh, b; /* [4H, IN], [4H, H], [4H] */
} lstm;

/* one step: [i f g o] = x W_ih^T + h W_hh^T + b; c' = s(f) c + s(i) tanh(g); h' = s(o) tanh(c') */
static void lstm_step(const lstm *m, ad_var x, ad_var *h, ad_var *c)
{
    ad_var g = ad_add(ad_add(ad_matmul_t(x, m->w_ih, false, true), ad_matmul_t(*h, m->w_hh, false, true)), m->b);
    ad_var i = ad_sigmoid(ad_slice(g, 1, 0, LH)), f = ad_sigmoid(ad_slice(g, 1, LH, 2 * LH));
    ad_var gg = ad_tanh(ad_slice(g, 1, 2 * LH, 3 * LH)), o = ad_sigmoid(ad_slice(g, 1, 3 * LH, 4 * LH));
    *c = ad_add(ad_mul(f, *c), ad_mul(i, gg));
    *h = ad_mul(o, ad_tanh(*c));
}

/* segment: in = (h, c, w_ih, w_hh, b, xs [N, L, IN]) -> (h, c) */
static ad_status lstm_segment(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    lstm m = {in[2], in[3], in[4]};
    ad_var h = in[0], c = in[1];
    int64_t len = ad_value(in[5])->shape[1];
    for (int64_t k = 0; k < len; k++)
        lstm_step(&m, ad_reshape(ad_slice(in[5], 1, k, k + 1), 2, (const int64_t[]){LN, LIN}), &h, &c);
    out[0] = h;
    out[1] = c;
    return AD_OK;
}

static void lstm_grads(int T, int every, ad_tensor **g)
{
    ad_tensor *w[3] = {tu_rand(AD_F32, AD_SHAPE(4 * LH, LIN), -0.4, 0.4, 21),
                       tu_rand(AD_F32, AD_SHAPE(4 * LH, LH), -0.4, 0.4, 22),
                       tu_rand(AD_F32, AD_SHAPE(4 * LH), -0.1, 0.1, 23)};
    ad_tensor *xs = tu_rand(AD_F32, AD_SHAPE(LN, T, LIN), 0, 1, 24);
    ad_tape *t = ad_tape_new();
    for (int k = 0; k < 3; k++) g[k] = ad_tensor_new(AD_F32, w[k]->ndim, w[k]->shape);
    lstm m = {ad_param(t, w[0], g[0]), ad_param(t, w[1], g[1]), ad_param(t, w[2], g[2])};
    ad_var x = ad_const(t, xs);
    ad_var h = ad_full(t, AD_F32, AD_SHAPE(LN, LH), 0.0), c = h;
    for (int k0 = 0; k0 < T; k0 += every) {
        int k1 = k0 + every < T ? k0 + every : T;
        ad_var in[6] = {h, c, m.w_ih, m.w_hh, m.b, ad_slice(x, 1, k0, k1)}, o[2];
        if (every > 1) {
            ck_assert_int_eq(ad_checkpoint(lstm_segment, NULL, 6, in, 2, o), AD_OK);
        } else {
            lstm_segment(t, 6, in, 2, o, NULL);
        }
        h = o[0];
        c = o[1];
    }
    ad_var loss = ad_mean(ad_square(ad_add_scalar(ad_sum_axis(h, 1, false), -1.0)));
    ck_assert_msg(ad_backward(loss, NULL, AD_ACCUMULATE) == AD_OK, "%s", ad_tape_error(t));
    ad_tape_free(t);
    for (int k = 0; k < 3; k++) ad_tensor_free(w[k]);
    ad_tensor_free(xs);
}

START_TEST(test_lstm_checkpoint_bitwise)
{
    int T = tu_quick() ? 300 : 3000, every = 1;
    while ((every + 1) * (every + 1) <= T) every++; /* floor(sqrt(T)) */
    ad_tensor *plain[3], *ck[3];
    lstm_grads(T, 1, plain);
    lstm_grads(T, every, ck);
    for (int k = 0; k < 3; k++) {
        ck_assert(ad__all_finite(plain[k]));
        double norm = 0;
        for (int64_t i = 0; i < plain[k]->size; i++) norm += fabs(ad_tensor_get(plain[k], i));
        ck_assert_msg(norm > 0, "parameter %d has a zero gradient", k);
        ck_assert_msg(memcmp(plain[k]->data, ck[k]->data, ad__nbytes(plain[k])) == 0,
                      "T = %d, a checkpoint every %d steps: parameter %d's gradient differs", T, every, k);
        ad_tensor_free(plain[k]);
        ad_tensor_free(ck[k]);
    }
}
END_TEST

static ad_var f_chain(ad_tape *t, const ad_var *x, void *c) { return chain(t, x[0], x[1], x[2], 3, 2, true); }

START_TEST(test_checkpoint_higher)
{
    /* gradcheck and gradgradcheck through checkpoints (the recomputed segment kept under AD_CREATE_GRAPH) */
    ad_tensor *in[3] = {tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 7), tu_rand(AD_F64, AD_SHAPE(2, 3), 0.5, 1, 8),
                        tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1.5, 9)};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_chain, NULL, 3, (const ad_tensor *const *)in, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_chain, NULL, 3, (const ad_tensor *const *)in, NULL, &rep), AD_OK);
    for (int i = 0; i < 3; i++) ad_tensor_free(in[i]);
}
END_TEST

/* ---- the functional API over n inputs ---- */

/* f(a, b) = sum(a^2 * b) + sum(b)^2 with a [2], b [2] */
static ad_var f_ab(ad_tape *t, const ad_var *x, void *c)
{
    return ad_add(ad_sum(ad_mul(ad_square(x[0]), x[1])), ad_square(ad_sum(x[1])));
}
/* g(a, b) = (a * b, a + b^2), concatenated: [4] */
static ad_var g_ab(ad_tape *t, const ad_var *x, void *c)
{
    ad_var p[2] = {ad_mul(x[0], x[1]), ad_add(x[0], ad_square(x[1]))};
    return ad_concat(2, p, 0);
}
static ad_var f_fails(ad_tape *t, const ad_var *x, void *c) { return ad_reshape(x[0], 1, (const int64_t[]){3}); }

START_TEST(test_functional_n)
{
    const double av[2] = {0.5, -1.5}, bv[2] = {2.0, 0.25};
    ad_tensor *a = tu_f64(AD_SHAPE(2), av), *b = tu_f64(AD_SHAPE(2), bv);
    const ad_tensor *x[2] = {a, b};
    char err[256];
    /* vjp of g with v = (1, 2, 3, 4): d/da = v0 b + v2, d/db = v1 a + 2 b v3 */
    ad_tensor *v = tu_f64(AD_SHAPE(4), (double[]){1, 2, 3, 4}), *o[4];
    for (int i = 0; i < 2; i++) o[i] = tu_f64(AD_SHAPE(2), NULL);
    ck_assert_int_eq(ad_vjp(g_ab, NULL, 2, x, v, o, err, sizeof err), AD_OK);
    TU_ASSERT_CLOSE(ad_tensor_get(o[0], 0), 1 * bv[0] + 3, 0, 1e-15);
    TU_ASSERT_CLOSE(ad_tensor_get(o[1], 1), 2 * av[1] + 2 * bv[1] * 4, 0, 1e-15);
    ck_assert_str_eq(err, "");
    /* Jacobian blocks [4, 2] */
    ad_tensor *j[2] = {tu_f64(AD_SHAPE(4, 2), NULL), tu_f64(AD_SHAPE(4, 2), NULL)};
    ck_assert_int_eq(ad_jacobian_n(g_ab, NULL, 2, x, j, err, sizeof err), AD_OK);
    const double ja[8] = {bv[0], 0, 0, bv[1], 1, 0, 0, 1}, jb[8] = {av[0], 0, 0, av[1], 2 * bv[0], 0, 0, 2 * bv[1]};
    tu_assert_values(j[0], ja, 0, 1e-15);
    tu_assert_values(j[1], jb, 0, 1e-15);
    /* Hessian blocks of f: H_aa = diag(2 b), H_ab = diag(2 a), H_bb = 2 (all ones) */
    ad_tensor *h[4];
    for (int i = 0; i < 4; i++) h[i] = tu_f64(AD_SHAPE(2, 2), NULL);
    ck_assert_int_eq(ad_hessian_n(f_ab, NULL, 2, x, h, err, sizeof err), AD_OK);
    const double haa[4] = {2 * bv[0], 0, 0, 2 * bv[1]}, hab[4] = {2 * av[0], 0, 0, 2 * av[1]}, hbb[4] = {2, 2, 2, 2};
    tu_assert_values(h[0], haa, 0, 1e-15);
    tu_assert_values(h[1], hab, 0, 1e-15);
    tu_assert_values(h[2], hab, 0, 1e-15);
    tu_assert_values(h[3], hbb, 0, 1e-15);
    /* HVP with (va, vb) against the blocks */
    ad_tensor *va = tu_f64(AD_SHAPE(2), (double[]){1, -1}), *vb = tu_f64(AD_SHAPE(2), (double[]){0.5, 2});
    const ad_tensor *vv[2] = {va, vb};
    ck_assert_int_eq(ad_hvp_n(f_ab, NULL, 2, x, vv, o, err, sizeof err), AD_OK);
    for (int i = 0; i < 2; i++) {
        double wa = 0, wb = 0;
        for (int k = 0; k < 2; k++) {
            wa += ad_tensor_get(h[0], i * 2 + k) * ad_tensor_get(va, k) +
                  ad_tensor_get(h[1], i * 2 + k) * ad_tensor_get(vb, k);
            wb += ad_tensor_get(h[2], i * 2 + k) * ad_tensor_get(va, k) +
                  ad_tensor_get(h[3], i * 2 + k) * ad_tensor_get(vb, k);
        }
        TU_ASSERT_CLOSE(ad_tensor_get(o[0], i), wa, 1e-15, 1e-15);
        TU_ASSERT_CLOSE(ad_tensor_get(o[1], i), wb, 1e-15, 1e-15);
    }
    /* messages */
    ck_assert_int_eq(ad_jacobian_n(g_ab, NULL, 2, x, h, err, sizeof err), AD_ERR_SHAPE);
    ck_assert_str_eq(err, "ad_jacobian_n: out[0] is [2,2], expected [4,2]");
    ck_assert_int_eq(ad_hessian_n(g_ab, NULL, 2, x, h, err, sizeof err), AD_ERR_SHAPE);
    ck_assert_str_eq(err, "ad_hessian_n: f must return one element, it returned [4]");
    ck_assert_int_eq(ad_vjp(f_fails, NULL, 2, x, v, o, err, sizeof err), AD_ERR_SHAPE);
    ck_assert_msg(strncmp(err, "ad_vjp: ad_reshape", 17) == 0, "%s", err);
    ck_assert_int_eq(ad_vjp(g_ab, NULL, 2, x, a, o, err, sizeof err), AD_ERR_SHAPE);
    ck_assert_str_eq(err, "ad_vjp: v is [2], expected f's output shape [4]");
    ad_tensor *a32 = ad_tensor_new(AD_F32, AD_SHAPE(2));
    const ad_tensor *mixed[2] = {a, a32};
    ck_assert_int_eq(ad_hvp_n(f_ab, NULL, 2, mixed, vv, o, err, sizeof err), AD_ERR_DTYPE);
    ck_assert_str_eq(err, "ad_hvp_n: x[1] is f32 but x[0] is f64: the inputs share one dtype");
    const ad_tensor *with_null[2] = {a, NULL};
    ck_assert_int_eq(ad_hvp_n(f_ab, NULL, 2, with_null, vv, o, err, sizeof err), AD_ERR_ARG);
    ck_assert_str_eq(err, "ad_hvp_n: x[1] is NULL");
    ck_assert_int_eq(ad_hvp_n(NULL, NULL, 2, x, vv, o, NULL, 0), AD_ERR_ARG); /* err may be NULL */
    ck_assert_int_eq(ad_jacobian_n(g_ab, NULL, 0, x, j, err, sizeof err), AD_ERR_ARG);
    ck_assert_str_eq(err, "ad_jacobian_n: n must be at least 1");
    ad_tensor_free(a32);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(v);
    ad_tensor_free(va);
    ad_tensor_free(vb);
    for (int i = 0; i < 2; i++) {
        ad_tensor_free(o[i]);
        ad_tensor_free(j[i]);
    }
    for (int i = 0; i < 4; i++) ad_tensor_free(h[i]);
}
END_TEST

static Suite *custom_suite(void)
{
    Suite *s = suite_create("custom");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_vjp_kinds);
    tcase_add_test(core, test_both_kinds_choice);
    tcase_add_test(core, test_higher_order);
    tcase_add_test(core, test_tuple);
    tcase_add_test(core, test_mask_input);
    tcase_add_test(core, test_names);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_errors_descriptor);
    tcase_add_test(errors, test_errors_forward);
    tcase_add_test(errors, test_errors_vjp);
    tcase_add_test(errors, test_alloc_failure);
    suite_add_tcase(s, errors);
    TCase *check = tcase_create("check");
    tcase_add_test(check, test_custom_check);
    tcase_add_test(check, test_vacuous);
    suite_add_tcase(s, check);
    TCase *mut = tcase_create("mutation");
    tcase_add_test(mut, test_mutation);
    tcase_add_test(mut, test_second_backward);
    suite_add_tcase(s, mut);
    TCase *ck = tcase_create("checkpoint");
    tcase_set_timeout(ck, 600);
    tcase_add_test(ck, test_checkpoint_bitwise);
    tcase_add_test(ck, test_checkpoint_memory);
    tcase_add_test(ck, test_checkpoint_errors);
    tcase_add_test(ck, test_checkpoint_nested);
    tcase_add_test(ck, test_checkpoint_forward_kernel);
    tcase_add_test(ck, test_lstm_checkpoint_bitwise);
    tcase_add_test(ck, test_checkpoint_higher);
    suite_add_tcase(s, ck);
    TCase *fn = tcase_create("functional");
    tcase_add_test(fn, test_functional_n);
    suite_add_tcase(s, fn);
    return s;
}

int main(void) { return tu_run(custom_suite()); }

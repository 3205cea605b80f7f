/* test_ops.c: a table test over the whole op table: forward values against plain C, gradcheck of every VJP. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_io_util.h"
#include "test_ops.h"

/*
** One entry per op id in ops.def, in op_tests[] below (generated from ops.def's test rows). The loop test runs every
** id below AD_OP_COUNT: an op without an entry fails the suite, and so does an
** entry that never builds its op (checked through expect_op). Each entry checks
** forward values against a plain C reference and gradients with ad_gradcheck
** (float64, slow mode) over shapes that broadcast, size-1 dims, scalars and
** empty tensors where the op allows them. Non-differentiable ops check that
** their outputs carry no gradient.
*/

/* ---- the op under test, and the check that its entry really builds it ---- */

static int g_current_op = -1; /* test-only state: the entry being run */
static bool g_seen;

/* Asserts y is a valid var made by op; marks the entry as having built it. */
void expect_op(ad_var y, ad_op op)
{
    ck_assert_msg(ad_ok(y), "%s failed: %s", ad__ops[op].name, y.tape ? ad_tape_error(y.tape) : "no tape");
    ck_assert_msg(ad__node(y.tape, y.id)->op == op, "expected a node of %s, got %s", ad__ops[op].name,
                  ad__ops[ad__node(y.tape, y.id)->op].name);
    if ((int)op == g_current_op) g_seen = true;
}

/* ---- shapes and inputs ---- */

static uint64_t g_seed = 1;

/* Uniform in [lo, hi); with away, magnitudes in [lo, hi) and random signs. */
ad_tensor *input(shp s, double lo, double hi, bool away)
{
    g_seed++;
    return away ? tu_rand_away(s.nd, s.d, lo, hi, g_seed) : tu_rand(AD_F64, s.nd, s.d, lo, hi, g_seed);
}

/* Flat index into `in` of output element `flat` of shape (nd, d), NumPy broadcasting. */
int64_t bcast_index(const ad_tensor *in, int nd, const int64_t *d, int64_t flat)
{
    int64_t idx[AD_MAX_DIMS], off = 0, stride = 1;
    for (int i = nd - 1; i >= 0; i--) {
        idx[i] = flat % d[i];
        flat /= d[i];
    }
    for (int i = in->ndim - 1; i >= 0; i--) {
        int j = nd - in->ndim + i;
        off += (in->shape[i] == 1 ? 0 : idx[j]) * stride;
        stride *= in->shape[i];
    }
    return off;
}

/* ---- gradient checks ---- */

void gc_n(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in)
{
    ad_check_report rep;
    ad_status s = ad_gradcheck(f, ctx, n, in, NULL, &rep);
    if (s != AD_OK) {
        char buf[1024] = "";
        FILE *mf = fmemopen(buf, sizeof buf - 1, "w");
        if (mf) {
            ad_check_report_print(&rep, mf);
            fclose(mf);
        }
        ck_abort_msg("%s: gradcheck returned %s\n%s", what, ad_status_str(s), buf);
    }
    gg_n(what, f, ctx, n, in); /* and the recorded VJP differentiates right as well */
}

void gg_n(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in)
{
    ad_check_report rep;
    ad_status s = ad_gradgradcheck(f, ctx, n, in, NULL, &rep);
    if (s != AD_OK) {
        char buf[1024] = "";
        FILE *mf = fmemopen(buf, sizeof buf - 1, "w");
        if (mf) {
            ad_check_report_print(&rep, mf);
            fclose(mf);
        }
        ck_abort_msg("%s: gradgradcheck returned %s\n%s", what, ad_status_str(s), buf);
    }
}

/* Gradcheck of f over n inputs of the given shapes and ranges; frees the inputs. */
void gc_shapes(const char *what, ad_fn f, void *ctx, int n, const shp *s, double lo, double hi, bool away)
{
    ad_tensor *in[8] = {NULL};
    ck_assert_int_le(n, 8);
    for (int i = 0; i < n; i++) in[i] = input(s[i], lo, hi, away);
    gc_n(what, f, ctx, n, (const ad_tensor *const *)in);
    for (int i = 0; i < n; i++) ad_tensor_free(in[i]);
}

rig rig_new(void)
{
    rig r = {ad_tape_new(), {0}, 0};
    ck_assert_ptr_nonnull(r.t);
    return r;
}
ad_var rig_leaf(rig *r, ad_tensor *v)
{
    ck_assert_int_lt(r->nkeep, 16);
    r->keep[r->nkeep++] = v;
    return ad_leaf(r->t, v);
}
void rig_free(rig *r)
{
    ad_tape_free(r->t);
    for (int i = 0; i < r->nkeep; i++) ad_tensor_free(r->keep[i]);
}

/* Values and gradients of op at the given points, against want / dwant. */
void point_values(ad_var (*build)(ad_var, const double *), const double *p, ad_dtype dt, int n, const double *xs,
                  const double *want, const double *dwant)
{
    rig r = rig_new();
    ad_tensor *x64 = tu_f64(1, (int64_t[]){n}, xs);
    ad_tensor *x = dt == AD_F64 ? x64 : tu_to_f32(x64);
    if (dt != AD_F64) ad_tensor_free(x64);
    ad_var xv = rig_leaf(&r, x);
    ad_var y = build(xv, p);
    ck_assert(ad_ok(y));
    double tol = dt == AD_F64 ? 1e-15 : 1e-6;
    tu_assert_values(ad_value(y), want, tol, tol);
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    ck_assert(ad__all_finite(ad_grad(xv)));
    tu_assert_values(ad_grad(xv), dwant, tol, tol);
    rig_free(&r);
}

ad_var rig_const(rig *r, ad_tensor *v)
{
    ck_assert_int_lt(r->nkeep, 16);
    r->keep[r->nkeep++] = v;
    return ad_const(r->t, v);
}

/* f on f32 copies of the inputs against f on f64 copies of the same rounded values. */
void f32_agrees(const char *what, ad_fn f, void *ctx, int n, const ad_tensor *const *in64, double tol)
{
    ad_tensor *r64[8], *r32[8];
    ad_tape *t = ad_tape_new();
    ad_var x64[8], x32[8];
    ck_assert_int_le(n, 8);
    for (int i = 0; i < n; i++) {
        r32[i] = tu_to_f32(in64[i]);
        r64[i] = ad_tensor_new(AD_F64, in64[i]->ndim, in64[i]->shape);
        ck_assert_int_eq(ad_tensor_copy(r64[i], r32[i]), AD_OK); /* the same rounded values */
        x64[i] = ad_leaf(t, r64[i]);
        x32[i] = ad_leaf(t, r32[i]);
    }
    ad_var y64 = f(t, x64, ctx), y32 = f(t, x32, ctx);
    ck_assert_msg(ad_ok(y64) && ad_ok(y32), "%s: %s", what, ad_tape_error(t));
    const ad_tensor *v64 = ad_value(y64), *v32 = ad_value(y32);
    ck_assert_int_eq(v32->dtype, AD_F32);
    ck_assert(ad_shape_equal(v64, v32));
    for (int64_t i = 0; i < v64->size; i++) {
        double a = ad_tensor_get(v32, i), b = ad_tensor_get(v64, i);
        ck_assert_msg(tu_close(a, b, tol, tol), "%s: element %lld: f32 %.9g, f64 %.17g", what, (long long)i, a, b);
    }
    /* gradients agree as well */
    ad_var g64[8], g32[8];
    ck_assert_int_eq(ad_gradients(ad_sum(ad_square(y64)), n, x64, g64, 0), AD_OK);
    ck_assert_int_eq(ad_gradients(ad_sum(ad_square(y32)), n, x32, g32, 0), AD_OK);
    for (int i = 0; i < n; i++) {
        const ad_tensor *a = ad_value(g32[i]), *b = ad_value(g64[i]);
        ck_assert_int_eq(a->dtype, AD_F32);
        for (int64_t k = 0; k < b->size; k++)
            ck_assert_msg(tu_close(ad_tensor_get(a, k), ad_tensor_get(b, k), 10 * tol, 10 * tol),
                          "%s: gradient %d element %lld: f32 %.9g, f64 %.17g", what, i, (long long)k,
                          ad_tensor_get(a, k), ad_tensor_get(b, k));
    }
    ad_tape_free(t);
    for (int i = 0; i < n; i++) {
        ad_tensor_free(r64[i]);
        ad_tensor_free(r32[i]);
    }
}

/* ================= leaves ================= */

static ad_var f_times_const(ad_tape *t, const ad_var *x, void *c) { return ad_mul(x[0], ad_const(t, c)); }
static ad_var f_identity(ad_tape *t, const ad_var *x, void *c) { return x[0]; }

void t_const(void)
{
    rig r = rig_new();
    ad_tensor *cv = input(SH(2, 3), -1, 1, false);
    ad_var c = rig_const(&r, cv);
    expect_op(c, AD_OP_CONST);
    ck_assert_ptr_eq(ad_value(c)->data, cv->data); /* borrowed, not copied */
    ck_assert(!ad_requires_grad(c));
    ad_var x = rig_leaf(&r, input(SH(2, 3), -1, 1, false));
    ck_assert_int_eq(ad_backward(ad_sum(ad_mul(x, c)), NULL, 0), AD_OK);
    ck_assert_ptr_null(ad_grad(c));
    tu_assert_values(ad_grad(x), cv->data, 0, 0);
    /* a scalar constant and a filled one */
    ad_var s = ad_scalar(r.t, AD_F64, -2.5), f = ad_full(r.t, AD_F64, AD_SHAPE(0, 2), 1.0);
    expect_op(s, AD_OP_CONST);
    expect_op(f, AD_OP_CONST);
    ck_assert(ad_item(s) == -2.5);
    ck_assert_int_eq(ad_value(f)->size, 0);
    rig_free(&r);
    ad_tensor *k = input(SH(3, 1), -1, 1, false); /* multiplied in by f_times_const */
    const shp shapes[] = {SH(3, 4), SH(3, 1)};
    for (int i = 0; i < 2; i++) gc_shapes("x * const", f_times_const, k, 1, &shapes[i], -1, 1, false);
    ad_tensor_free(k);
}

void t_leaf(void)
{
    rig r = rig_new();
    ad_tensor *xv = input(SH(4), -1, 1, false);
    ad_var x = rig_leaf(&r, xv);
    expect_op(x, AD_OP_LEAF);
    ck_assert_ptr_eq(ad_value(x)->data, xv->data);
    ck_assert(ad_requires_grad(x));
    ck_assert_ptr_null(ad_grad(x));
    ck_assert_int_eq(ad_backward(ad_sum(x), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){1, 1, 1, 1}, 0, 0);
    rig_free(&r);
    const shp shapes[] = {SH(2, 3), SCALAR, SH(0)};
    for (int i = 0; i < 3; i++) gc_shapes("identity", f_identity, NULL, 1, &shapes[i], -1, 1, false);
}

void t_param(void)
{
    rig r = rig_new();
    ad_tensor *wv = input(SH(2, 2), -1, 1, false), *wg = ad_tensor_new(AD_F64, AD_SHAPE(2, 2));
    ad_var w = ad_param(r.t, wv, wg);
    expect_op(w, AD_OP_PARAM);
    ck_assert_ptr_eq(ad_value(w)->data, wv->data);
    ck_assert(ad_requires_grad(w));
    ck_assert_int_eq(ad_backward(ad_sum(ad_mul_scalar(ad_square(w), 0.5)), NULL, 0), AD_OK);
    tu_assert_values(wg, wv->data, 0, 1e-15); /* d(w^2 / 2) = w */
    tu_assert_values(ad_grad(w), wv->data, 0, 1e-15);
    rig_free(&r);
    ad_tensor_free(wv);
    ad_tensor_free(wg);
}

/* ================= masks: forward values, and no gradient through them ================= */

/* mask(x) must not require grad, and d/dx sum(x * mask(x)) must be mask(x) exactly. */
static void no_grad_through(ad_var (*mask)(ad_var), ad_op op, const double *xs, const double *want, int n)
{
    rig r = rig_new();
    ad_var x = rig_leaf(&r, tu_f64(1, (int64_t[]){n}, xs));
    ad_var m = mask(x);
    expect_op(m, op);
    ck_assert(!ad_requires_grad(m));
    tu_assert_values(ad_value(m), want, 0, 0);
    ck_assert_int_eq(ad_backward(ad_sum(m), NULL, 0), AD_OK); /* through x: a zero gradient */
    for (int i = 0; i < n; i++) ck_assert_double_eq(ad_tensor_get(ad_grad(x), i), 0.0);
    ck_assert_int_eq(ad_backward(ad_sum(ad_mul(x, m)), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), want, 0, 0);
    /* recorded with AD_CREATE_GRAPH as well */
    ad_var g;
    ck_assert_int_eq(ad_gradients(ad_sum(ad_mul(x, m)), 1, &x, &g, AD_CREATE_GRAPH), AD_OK);
    tu_assert_values(ad_value(g), want, 0, 0);
    ck_assert(!ad_requires_grad(g));
    rig_free(&r);
}

static ad_var m_sign(ad_var x) { return ad_sign(x); }
static ad_var m_step(ad_var x) { return ad__step(x, -0.5, 2.0); }
static ad_var m_inrange(ad_var x) { return ad__inrange(x, -1.0, 1.0); }
static ad_var m_cmp_gt(ad_var x) { return ad__cmp_gt(x, ad_scalar(x.tape, AD_F64, 1.0)); }
static ad_var m_eq(ad_var x) { return ad__eq(x, ad_scalar(x.tape, AD_F64, 1.0)); }
static ad_var f_x_sign(ad_tape *t, const ad_var *x, void *c) { return ad_mul(x[0], ad_sign(x[0])); }

static const double mask_x[5] = {-2.0, -1.0, 0.0, 1.0, 3.0};

void t_sign(void)
{
    no_grad_through(m_sign, AD_OP_SIGN, mask_x, (double[]){-1, -1, 0, 1, 1}, 5);
    /* x sign(x) = |x| away from 0: sign contributes nothing, and numerics agree */
    const shp s = SH(2, 3);
    gc_shapes("x * sign(x)", f_x_sign, NULL, 1, &s, 0.2, 2, true);
    rig r = rig_new();
    ad_var y = ad_sign(rig_leaf(&r, tu_f64(AD_SHAPE(2), (double[]){-0.0, NAN})));
    ck_assert(ad_tensor_get(ad_value(y), 0) == 0.0);
    ck_assert(isnan(ad_tensor_get(ad_value(y), 1)));
    rig_free(&r);
}
void t_step(void) { no_grad_through(m_step, AD_OP_STEP, mask_x, (double[]){-0.5, -0.5, -0.5, 2, 2}, 5); }
void t_inrange(void) { no_grad_through(m_inrange, AD_OP_INRANGE, mask_x, (double[]){0, 1, 1, 1, 0}, 5); }
void t_cmp_gt(void) { no_grad_through(m_cmp_gt, AD_OP_CMP_GT, mask_x, (double[]){0, 0, 0, 0.5, 1}, 5); }
void t_eq(void) { no_grad_through(m_eq, AD_OP_EQ, mask_x, (double[]){0, 0, 0, 1, 0}, 5); }

static ad_var f_x_detach_x(ad_tape *t, const ad_var *x, void *c) { return ad_mul(x[0], ad_detach(x[0])); }

void t_detach(void)
{
    /* detach(x) has x's values and no gradient: d/dx sum(x * detach(x)) = x, not 2x */
    rig r = rig_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(5), mask_x);
    ad_var x = rig_leaf(&r, xv);
    ad_var d = ad_detach(x);
    expect_op(d, AD_OP_DETACH);
    ck_assert(!ad_requires_grad(d));
    tu_assert_values(ad_value(d), mask_x, 0, 0);
    ck_assert_int_eq(ad_backward(ad_sum(ad_mul(x, d)), NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), mask_x, 0, 0);
    rig_free(&r);
    /* so gradcheck sees x*detach(x) as wrong for x^2 */
    ad_tensor *in = input(SH(3), 0.5, 2, false);
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_x_detach_x, NULL, 1, (const ad_tensor *const *)&in, NULL, &rep), AD_ERR_NUMERIC);
    ad_tensor_free(in);
}

/* ================= the table ================= */

typedef void (*op_test)(void);

/* An entry for every op in ops.def: a missing hand-written t_<name> fails the link. */
static const op_test op_tests[AD_OP_COUNT] = {
#define UNARY(...) ENTRY_GENERATED
#define BINARY(...) ENTRY_GENERATED
#define CUSTOM ENTRY_CUSTOM
#define ENTRY_GENERATED(name) t_elementwise
#define ENTRY_CUSTOM(name) t_##name
#define AD_OP(ID, name, nin, family, grad, fast, ...) [AD_OP_##ID] = AD_TEST_ROW(__VA_ARGS__)(name),
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
};

ad_op op_under_test(void) { return (ad_op)g_current_op; }

/* Runs entry _i: it must exist and must build its op at least once. */
START_TEST(test_op)
{
    ck_assert_msg(op_tests[_i] != NULL, "op %s (id %d) has no entry in test_ops.c's op_tests table", ad__ops[_i].name,
                  _i);
    g_current_op = _i;
    g_seen = false;
    op_tests[_i]();
    ck_assert_msg(g_seen, "the entry for %s never built an %s node", ad__ops[_i].name, ad__ops[_i].name);
    g_current_op = -1;
}
END_TEST

/* The table's own shape: every op is named and has a forward kernel and a VJP. */
START_TEST(test_table)
{
    for (int i = 0; i < AD_OP_COUNT; i++) {
        ck_assert_ptr_nonnull(ad__ops[i].name);
        ck_assert_msg(strncmp(ad__ops[i].name, "ad_", 3) == 0, "%s", ad__ops[i].name);
        ck_assert(ad__ops[i].forward != NULL);
        ck_assert(ad__ops[i].vjp != NULL);
        for (int j = 0; j < i; j++) ck_assert_str_ne(ad__ops[i].name, ad__ops[j].name);
    }
    ck_assert(!ad__ops[AD_OP_CONST].differentiable && !ad__ops[AD_OP_SIGN].differentiable &&
              !ad__ops[AD_OP_EQ].differentiable);
    ck_assert(ad__ops[AD_OP_ADD].differentiable && ad__ops[AD_OP_MATMUL].differentiable);
    ck_assert_int_eq(ad__ops[AD_OP_CONCAT].nin, -1);
    ck_assert_int_eq(ad__ops[AD_OP_MATMUL].nin, 2);
}
END_TEST

/* The whole text of the file at $AD_SOURCE_ROOT/path (freed by the caller). */
static char *source_text(const char *path)
{
    const char *root = getenv("AD_SOURCE_ROOT");
    ck_assert_msg(root != NULL, "AD_SOURCE_ROOT is not set (meson test sets it)");
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", root, path);
    size_t n;
    return (char *)tio_read(full, &n);
}

static bool ident_char(char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* Whether word stands in text as a whole identifier, followed by `after` (0: anything). */
static bool has_word(const char *text, const char *word, char after)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        if (p > text && ident_char(p[-1])) continue;
        if (ident_char(p[n])) continue;
        if (after && p[n] != after) continue;
        return true;
    }
    return false;
}

/* Every op with a public front end (ad_<name>( in ad.h) is listed in README.md's API table, as
** ad_<name> or, in a row of short names, <name>. */
START_TEST(test_readme_lists_ops)
{
    char *header = source_text("autodiff/ad.h"), *readme = source_text("README.md");
    /* the API table: the lines of the README that start with '|' */
    size_t len = strlen(readme);
    char *table = calloc(len + 1, 1);
    ck_assert_ptr_nonnull(table);
    for (const char *line = readme; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) + 1 : strlen(line);
        if (line[0] == '|') strncat(table, line, n);
        line += n;
    }
    int listed = 0;
    for (int i = 0; i < AD_OP_COUNT; i++) {
        const char *name = ad__ops[i].name; /* "ad_<name>" */
        if (!has_word(header, name, '(')) continue; /* an internal op */
        ck_assert_msg(has_word(table, name, 0) || has_word(table, name + 3, 0),
                      "%s is declared in ad.h but not listed in README.md's API table", name);
        listed++;
    }
    ck_assert_int_gt(listed, 40);
    free(table);
    free(header);
    free(readme);
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *table = tcase_create("table");
    tcase_add_test(table, test_table);
    tcase_add_test(table, test_readme_lists_ops);
    tcase_add_loop_test(table, test_op, 0, AD_OP_COUNT);
    tcase_set_timeout(table, 300);
    suite_add_tcase(s, table);
    return s;
}

int main(void) { return tu_run(ops_suite()); }

/* test_gradcheck.c: the gradient checker (pass, fail, reports, errors, second order) and closed-form gradients. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "test_util.h"

/* ---- functions under check ---- */

/* x * detach(x): value x^2, but the gradient it reports is x instead of 2x. */
static ad_var f_wrong_square(ad_tape *t, const ad_var *x, void *c) { return ad_mul(x[0], ad_detach(x[0])); }
static ad_var f_square(ad_tape *t, const ad_var *x, void *c) { return ad_mul(x[0], x[0]); }
/* x * sin(y) + exp(x * y), elementwise */
static ad_var f_xsiny(ad_tape *t, const ad_var *x, void *c)
{
    return ad_add(ad_mul(x[0], ad_sin(x[1])), ad_exp(ad_mul(x[0], x[1])));
}
static ad_var f_tanh_mm(ad_tape *t, const ad_var *x, void *c) { return ad_tanh(ad_matmul(x[0], x[1])); }
static ad_var f_tanh(ad_tape *t, const ad_var *x, void *c) { return ad_tanh(x[0]); }
static ad_var f_sigmoid(ad_tape *t, const ad_var *x, void *c) { return ad_sigmoid(x[0]); }
static ad_var f_softmax(ad_tape *t, const ad_var *x, void *c) { return ad_softmax(x[0], -1); }
static ad_var f_matmul(ad_tape *t, const ad_var *x, void *c) { return ad_matmul(x[0], x[1]); }
static ad_var f_pow(ad_tape *t, const ad_var *x, void *c) { return ad_pow(x[0], x[1]); }
static ad_var f_logsumexp(ad_tape *t, const ad_var *x, void *c) { return ad_logsumexp(x[0], 0, false); }
/* A function whose first derivative is right and whose second is not: value and
** gradient of h(x) = x^3, but the gradient is built from detach(x), so the tape
** sees no dependence of the gradient on x (straight-through style):
**   f = detach(x^3) + 3 detach(x)^2 (x - detach(x)). */
static ad_var f_first_order_only(ad_tape *t, const ad_var *x, void *c)
{
    ad_var d = ad_detach(x[0]);
    ad_var value = ad_detach(ad_pow_scalar(x[0], 3.0));
    ad_var slope = ad_mul_scalar(ad_square(d), 3.0);
    return ad_add(value, ad_mul(slope, ad_sub(x[0], d)));
}
static ad_var f_cube(ad_tape *t, const ad_var *x, void *c) { return ad_pow_scalar(x[0], 3.0); }
static ad_var f_bad_shapes(ad_tape *t, const ad_var *x, void *c) { return ad_matmul(x[0], x[0]); }
static ad_var f_invalid(ad_tape *t, const ad_var *x, void *c) { return ad_concat(0, NULL, 0); }
/* Returns one more element each call: the checker must notice. */
static ad_var f_growing(ad_tape *t, const ad_var *x, void *c)
{
    int *calls = c;
    int64_t k = 1 + (*calls)++ % 2;
    return ad_slice(x[0], 0, 0, k);
}
static ad_var f_f32_output(ad_tape *t, const ad_var *x, void *c) { return ad_cast(x[0], AD_F32); }

/* ad_check_report_print into a string (caller frees). */
static char *report_text(const ad_check_report *rep)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    ad_check_report_print(rep, f);
    fclose(f);
    return buf;
}

START_TEST(test_catches_wrong_gradient)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), 0.5, 2.0, 1);
    const ad_tensor *in[1] = {x};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_wrong_square, NULL, 1, in, NULL, &rep), AD_ERR_NUMERIC);
    ck_assert_int_eq(rep.status, AD_ERR_NUMERIC);
    ck_assert_int_eq(rep.order, 1);
    ck_assert_int_eq(rep.input, 0);
    ck_assert(rep.element >= 0 && rep.element < 6);
    ck_assert(rep.output >= 0 && rep.output < 6);
    ck_assert_int_eq(rep.checked, 36);
    /* the worst mismatch is on the diagonal: analytic x, numeric 2x */
    ck_assert_int_eq(rep.element, rep.output);
    double xe = ad_tensor_get(x, rep.element);
    TU_ASSERT_CLOSE(rep.analytic, xe, 0, 1e-12);
    TU_ASSERT_CLOSE(rep.numeric, 2 * xe, 1e-8, 1e-6);
    ck_assert(rep.analytic != rep.numeric);
    TU_ASSERT_CLOSE(rep.abs_err, fabs(rep.analytic - rep.numeric), 0, 1e-12);
    TU_ASSERT_CLOSE(rep.rel_err, rep.abs_err / fabs(rep.numeric), 0, 1e-12);
    char *text = report_text(&rep);
    ck_assert_msg(strstr(text, "FAILED") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "input 0") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "analytic") != NULL && strstr(text, "numeric") != NULL, "%s", text);
    free(text);
    /* fast mode catches it too (v^T J u differs), and says which input */
    ad_check_opts o = ad_check_defaults();
    o.fast_mode = true;
    ck_assert_int_eq(ad_gradcheck(f_wrong_square, NULL, 1, in, &o, &rep), AD_ERR_NUMERIC);
    ck_assert_int_eq(rep.input, 0);
    ck_assert_int_eq(rep.element, -1);
    ck_assert(rep.analytic != rep.numeric);
    text = report_text(&rep);
    ck_assert_msg(strstr(text, "FAILED") != NULL && strstr(text, "v^T J u") != NULL, "%s", text);
    free(text);
    /* the right function passes in both modes */
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, 1, in, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, 1, in, &o, &rep), AD_OK);
    ad_tensor_free(x);
}
END_TEST

START_TEST(test_passes_and_report)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 2), *y = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 3);
    const ad_tensor *in[2] = {x, y};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_xsiny, NULL, 2, in, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.status, AD_OK);
    ck_assert_int_eq(rep.order, 1);
    ck_assert_int_eq(rep.checked, 4 * 8); /* every output element against every input element */
    ck_assert(rep.input == 0 || rep.input == 1);
    ck_assert(rep.abs_err <= 1e-5 + 1e-3 * fabs(rep.numeric));
    ck_assert_str_eq(rep.message, "");
    char *text = report_text(&rep);
    ck_assert_msg(strstr(text, "passed") != NULL && strstr(text, "FAILED") == NULL, "%s", text);
    ck_assert_msg(strstr(text, "32 comparisons") != NULL, "%s", text);
    free(text);
    ck_assert_int_eq(ad_gradcheck(f_xsiny, NULL, 2, in, NULL, NULL), AD_OK); /* rep may be NULL */

    ad_check_opts o = ad_check_defaults();
    ck_assert(o.eps == 1e-6 && o.atol == 1e-5 && o.rtol == 1e-3 && !o.fast_mode);
    o.fast_mode = true;
    ck_assert_int_eq(ad_gradcheck(f_xsiny, NULL, 2, in, &o, &rep), AD_OK);
    ck_assert_int_eq(rep.checked, 2); /* one product per input */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        o.seed = seed;
        ck_assert_int_eq(ad_gradcheck(f_xsiny, NULL, 2, in, &o, NULL), AD_OK);
    }
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(2, 3, 4), -1, 1, 4), *b = tu_rand(AD_F64, AD_SHAPE(4, 5), -1, 1, 5);
    const ad_tensor *mm[2] = {a, b};
    ck_assert_int_eq(ad_gradcheck(f_tanh_mm, NULL, 2, mm, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradcheck(f_tanh_mm, NULL, 2, mm, &o, &rep), AD_OK);
    /* the inputs are left as they were */
    ad_tensor *x0 = tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 2);
    for (int i = 0; i < 4; i++) ck_assert(ad_tensor_get(x, i) == ad_tensor_get(x0, i));
    ad_tensor_free(x0);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(x);
    ad_tensor_free(y);
}
END_TEST

START_TEST(test_errors)
{
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 6);
    ad_tensor *xf = tu_to_f32(x);
    const ad_tensor *in[2] = {x, xf};
    ad_check_report rep;
    ck_assert_int_eq(ad_gradcheck(f_xsiny, NULL, 2, in, NULL, &rep), AD_ERR_DTYPE);
    ck_assert_int_eq(rep.status, AD_ERR_DTYPE);
    ck_assert_int_eq(rep.input, 1);
    ck_assert_msg(strstr(rep.message, "f32") != NULL && strstr(rep.message, "f64") != NULL, "%s", rep.message);
    char *text = report_text(&rep);
    ck_assert_msg(strstr(text, "error") != NULL && strstr(text, rep.message) != NULL, "%s", text);
    free(text);
    ck_assert_int_eq(ad_gradgradcheck(f_xsiny, NULL, 2, in, NULL, &rep), AD_ERR_DTYPE);

    ck_assert_int_eq(ad_gradcheck(NULL, NULL, 1, in, NULL, &rep), AD_ERR_ARG);
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, 1, NULL, NULL, &rep), AD_ERR_ARG);
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, -1, in, NULL, &rep), AD_ERR_ARG);
    ck_assert_int_eq(ad_gradgradcheck(NULL, NULL, 1, in, NULL, &rep), AD_ERR_ARG);
    ad_check_opts o = ad_check_defaults();
    o.eps = 0;
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, 1, in, &o, &rep), AD_ERR_ARG);
    o = ad_check_defaults();
    o.atol = -1;
    ck_assert_int_eq(ad_gradcheck(f_square, NULL, 1, in, &o, &rep), AD_ERR_ARG);
    /* a failing function: its status and message come back */
    ck_assert_int_eq(ad_gradcheck(f_bad_shapes, NULL, 1, in, NULL, &rep), AD_ERR_SHAPE);
    ck_assert_msg(strstr(rep.message, "ad_matmul: inner dimensions differ: [2,3] x [2,3]") != NULL, "%s", rep.message);
    ck_assert_int_eq(ad_gradgradcheck(f_bad_shapes, NULL, 1, in, NULL, &rep), AD_ERR_SHAPE);
    ck_assert_int_eq(ad_gradcheck(f_f32_output, NULL, 1, in, NULL, &rep), AD_ERR_DTYPE);
    ck_assert_int_eq(ad_gradcheck(f_invalid, NULL, 1, in, NULL, &rep), AD_ERR_STATE);
    ck_assert_msg(strstr(rep.message, "invalid var") != NULL, "%s", rep.message);
    ck_assert_int_eq(ad_gradgradcheck(f_invalid, NULL, 1, in, NULL, &rep), AD_ERR_STATE);
    for (int fast = 0; fast < 2; fast++) {
        int calls = 0;
        o = ad_check_defaults();
        o.fast_mode = fast;
        ck_assert_int_eq(ad_gradcheck(f_growing, &calls, 1, in, &o, &rep), AD_ERR_STATE);
        ck_assert_msg(strstr(rep.message, "size changed") != NULL, "%s", rep.message);
    }
    ad_tensor_free(x);
    ad_tensor_free(xf);
}
END_TEST

START_TEST(test_gradgradcheck)
{
    ad_check_report rep;
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 3), -1.5, 1.5, 7);
    const ad_tensor *in1[1] = {x};
    ck_assert_int_eq(ad_gradgradcheck(f_tanh, NULL, 1, in1, NULL, &rep), AD_OK);
    ck_assert_int_eq(rep.order, 2);
    ck_assert_int_gt(rep.checked, 0);
    char *text = report_text(&rep);
    ck_assert_msg(strstr(text, "gradgradcheck: passed") != NULL, "%s", text);
    free(text);
    ck_assert_int_eq(ad_gradgradcheck(f_sigmoid, NULL, 1, in1, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_softmax, NULL, 1, in1, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_logsumexp, NULL, 1, in1, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_xsiny, NULL, 2, (const ad_tensor *[]){x, x}, NULL, &rep), AD_OK);
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 8), *b = tu_rand(AD_F64, AD_SHAPE(4, 2), -1, 1, 9);
    ck_assert_int_eq(ad_gradgradcheck(f_matmul, NULL, 2, (const ad_tensor *[]){a, b}, NULL, &rep), AD_OK);
    ad_tensor *base = tu_rand(AD_F64, AD_SHAPE(2, 3), 0.5, 2.0, 10), *ex = tu_rand(AD_F64, AD_SHAPE(3), 0.5, 2.5, 11);
    ck_assert_int_eq(ad_gradgradcheck(f_pow, NULL, 2, (const ad_tensor *[]){base, ex}, NULL, &rep), AD_OK);
    ad_check_opts o = ad_check_defaults();
    o.fast_mode = true;
    ck_assert_int_eq(ad_gradgradcheck(f_pow, NULL, 2, (const ad_tensor *[]){base, ex}, &o, &rep), AD_OK);

    /* first derivative right, second wrong: gradcheck passes, gradgradcheck must not */
    ad_tensor *p = tu_rand(AD_F64, AD_SHAPE(4), 0.5, 2.0, 12);
    const ad_tensor *inp[1] = {p};
    ck_assert_int_eq(ad_gradcheck(f_first_order_only, NULL, 1, inp, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_first_order_only, NULL, 1, inp, NULL, &rep), AD_ERR_NUMERIC);
    ck_assert_int_eq(rep.order, 2);
    ck_assert_int_eq(rep.input, 0);
    ck_assert(rep.analytic == 0.0); /* the recorded gradient does not depend on x */
    ck_assert(fabs(rep.numeric) > 0.1);
    text = report_text(&rep);
    ck_assert_msg(strstr(text, "gradgradcheck: FAILED") != NULL, "%s", text);
    free(text);
    ck_assert_int_eq(ad_gradgradcheck(f_first_order_only, NULL, 1, inp, &o, &rep), AD_ERR_NUMERIC);
    /* and x^3 written plainly passes both */
    ck_assert_int_eq(ad_gradcheck(f_cube, NULL, 1, inp, NULL, &rep), AD_OK);
    ck_assert_int_eq(ad_gradgradcheck(f_cube, NULL, 1, inp, NULL, &rep), AD_OK);
    ad_tensor_free(p);
    ad_tensor_free(x);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(base);
    ad_tensor_free(ex);
}
END_TEST

/* ---- closed-form gradients ---- */

START_TEST(test_rosenbrock)
{
    /* f(x, y) = (1 - x)^2 + 100 (y - x^2)^2
    ** df/dx = -2 (1 - x) - 400 x (y - x^2), df/dy = 200 (y - x^2)
    ** d2f/dx2 = 2 - 400 (y - x^2) + 800 x^2, d2f/dxdy = -400 x, d2f/dy2 = 200 */
    const double pts[][2] = {{-1.2, 1.0}, {1.0, 1.0}, {0.0, 0.0}, {2.0, -3.0}, {0.3, 0.7}};
    ad_tape *t = ad_tape_new();
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        double px = pts[i][0], py = pts[i][1];
        ad_tensor *xv = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, &px),
                  *yv = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, &py);
        ad_var x = ad_leaf(t, xv), y = ad_leaf(t, yv);
        ad_var a = ad_add_scalar(ad_neg(x), 1.0);
        ad_var b = ad_sub(y, ad_square(x));
        ad_var f = ad_add(ad_square(a), ad_mul_scalar(ad_square(b), 100.0));
        double r = py - px * px;
        TU_ASSERT_CLOSE(ad_item(f), (1 - px) * (1 - px) + 100 * r * r, 0, 1e-14);
        ad_var g[2];
        ck_assert_int_eq(ad_gradients(f, 2, (ad_var[]){x, y}, g, AD_CREATE_GRAPH), AD_OK);
        TU_ASSERT_CLOSE(ad_item(g[0]), -2 * (1 - px) - 400 * px * r, 1e-12, 1e-13);
        TU_ASSERT_CLOSE(ad_item(g[1]), 200 * r, 1e-12, 1e-13);
        /* second derivatives through the recorded gradient */
        ck_assert_int_eq(ad_backward(g[0], NULL, 0), AD_OK);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), 0), 2 - 400 * r + 800 * px * px, 1e-12, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(y), 0), -400 * px, 1e-12, 1e-13);
        /* and the plain backward gives the same first derivatives */
        ad_tape_reset(t);
        x = ad_leaf(t, xv);
        y = ad_leaf(t, yv);
        f = ad_add(ad_square(ad_add_scalar(ad_neg(x), 1.0)), ad_mul_scalar(ad_square(ad_sub(y, ad_square(x))), 100.0));
        ck_assert_int_eq(ad_backward(f, NULL, 0), AD_OK);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), 0), -2 * (1 - px) - 400 * px * r, 1e-12, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(y), 0), 200 * r, 1e-12, 1e-13);
        ad_tape_reset(t);
        ad_tensor_free(xv);
        ad_tensor_free(yv);
    }
    ad_tape_free(t);
}
END_TEST

START_TEST(test_xsiny_closed_form)
{
    /* f = x sin y + e^(x y): df/dx = sin y + y e^(x y), df/dy = x cos y + x e^(x y) */
    const double xs[4] = {0.5, -1.0, 2.0, 0.0}, ys[4] = {2.0, 0.3, -0.7, 1.5};
    ad_tape *t = ad_tape_new();
    ad_tensor *xv = tu_f64(AD_SHAPE(4), xs), *yv = tu_f64(AD_SHAPE(4), ys);
    ad_var x = ad_leaf(t, xv), y = ad_leaf(t, yv);
    ad_var f = ad_sum(ad_add(ad_mul(x, ad_sin(y)), ad_exp(ad_mul(x, y))));
    ck_assert_int_eq(ad_backward(f, NULL, 0), AD_OK);
    for (int i = 0; i < 4; i++) {
        double e = exp(xs[i] * ys[i]);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), i), sin(ys[i]) + ys[i] * e, 1e-14, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(y), i), xs[i] * cos(ys[i]) + xs[i] * e, 1e-14, 1e-13);
    }
    ad_tape_free(t);
    ad_tensor_free(xv);
    ad_tensor_free(yv);
}
END_TEST

START_TEST(test_quadratic_form)
{
    /* f(x) = 1/2 x^T A x + b^T x with a non-symmetric A: grad = 1/2 (A + A^T) x + b;
    ** df/dA = 1/2 x x^T; df/db = x. Built with matmul on a column and a row vector. */
    enum { N = 5 };
    ad_tensor *av = tu_rand(AD_F64, AD_SHAPE(N, N), -1, 1, 21), *xv = tu_rand(AD_F64, AD_SHAPE(N, 1), -1, 1, 22),
              *bv = tu_rand(AD_F64, AD_SHAPE(1, N), -1, 1, 23);
    ad_tensor *ag = ad_tensor_new(AD_F64, AD_SHAPE(N, N));
    ad_tape *t = ad_tape_new();
    ad_var A = ad_param(t, av, ag), x = ad_leaf(t, xv), b = ad_leaf(t, bv);
    ad_var quad = ad_matmul(ad_transpose(x, 0, 1), ad_matmul(A, x)); /* [1,1] */
    ad_var f = ad_sum(ad_add(ad_mul_scalar(quad, 0.5), ad_matmul(b, x)));
    ck_assert_int_eq(ad_backward(f, NULL, 0), AD_OK);
    double fx = 0;
    for (int i = 0; i < N; i++) {
        double gi = ad_tensor_get(bv, i);
        for (int j = 0; j < N; j++) {
            double aij = ad_tensor_get(av, i * N + j), aji = ad_tensor_get(av, j * N + i);
            gi += 0.5 * (aij + aji) * ad_tensor_get(xv, j);
            fx += 0.5 * ad_tensor_get(xv, i) * aij * ad_tensor_get(xv, j);
            TU_ASSERT_CLOSE(ad_tensor_get(ag, i * N + j), 0.5 * ad_tensor_get(xv, i) * ad_tensor_get(xv, j), 1e-15,
                            1e-13);
        }
        fx += ad_tensor_get(bv, i) * ad_tensor_get(xv, i);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), i), gi, 1e-14, 1e-12);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(b), i), ad_tensor_get(xv, i), 0, 1e-15);
    }
    TU_ASSERT_CLOSE(ad_item(f), fx, 1e-14, 1e-12);
    /* the Hessian is 1/2 (A + A^T): row k from the gradient of grad_k */
    ad_tape_reset(t);
    A = ad_const(t, av);
    x = ad_leaf(t, xv);
    f = ad_sum(ad_mul_scalar(ad_matmul(ad_transpose(x, 0, 1), ad_matmul(A, x)), 0.5));
    ad_var g;
    ck_assert_int_eq(ad_gradients(f, 1, &x, &g, AD_CREATE_GRAPH), AD_OK);
    ad_var g2 = ad_slice(g, 0, 2, 3);
    ck_assert_int_eq(ad_backward(ad_sum(g2), NULL, 0), AD_OK);
    for (int j = 0; j < N; j++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_grad(x), j),
                        0.5 * (ad_tensor_get(av, 2 * N + j) + ad_tensor_get(av, j * N + 2)), 1e-15, 1e-13);
    ad_tape_free(t);
    ad_tensor_free(av);
    ad_tensor_free(ag);
    ad_tensor_free(xv);
    ad_tensor_free(bv);
}
END_TEST

/* ---- random expression graphs ----
** Programs of smooth, bounded steps over three inputs of shapes [3,4], [4] and [3,1]:
** operands are picked from every earlier value (so values fan out and gradients
** accumulate), binary steps broadcast, and the result sums several values. Both
** backward paths (the direct one used by gradcheck's sweeps and the recorded one
** used by gradgradcheck) must agree with finite differences. */

enum { PROG_LEN = 14, PROG_OPS = 24 };

typedef struct step_op {
    int op, a, b;
} step_op;

typedef struct program {
    step_op s[PROG_LEN];
    const ad_tensor *w, *w32; /* a [4,4] constant for the matmul step, in f64 and f32 */
} program;

/* a broadcast to [3,4] */
static ad_var full34(ad_var a) { return ad_broadcast_to(a, AD_SHAPE(3, 4)); }

static ad_var apply_step(ad_tape *t, const program *p, const step_op *s, ad_var a, ad_var b)
{
    bool axes = ad_value(a) && ad_value(a)->ndim > 0; /* the axis ops need one */
    switch (s->op) {
    case 0:
        return ad_mul_scalar(ad_add(a, b), 0.5);
    case 1:
        return ad_mul_scalar(ad_sub(a, b), 0.5);
    case 2:
        return ad_mul(a, b);
    case 3:
        return ad_div(a, ad_add_scalar(ad_square(b), 1.0));
    case 4:
        return ad_tanh(a);
    case 5:
        return ad_sin(a);
    case 6:
        return ad_sigmoid(a);
    case 7:
        return ad_square(a);
    case 8:
        return axes ? ad_mean_axis(a, 0, true) : ad_tanh(a);
    case 9:
        return ad_mean(a);
    case 10:
        return axes ? ad_softmax(a, -1) : ad_sigmoid(a);
    case 11:
        return axes ? ad_tanh(ad_logsumexp(a, -1, true)) : ad_sin(a);
    case 12:
        return ad_add_scalar(ad_neg(a), 0.25);
    case 13:
        return ad_mul_scalar(ad_exp(ad_mul_scalar(a, 0.5)), 0.5);
    case 14:
        return ad_mul_scalar(ad_matmul(full34(a), ad_const(t, ad_value(a)->dtype == AD_F32 ? p->w32 : p->w)), 0.5);
    case 15:
        return ad_slice(ad_concat(2, (ad_var[]){full34(a), full34(b)}, -1), -1, 2, 6);
    case 16:
        return ad_index_select(full34(a), 0, 3, (const int64_t[]){2, 0, 2});
    case 17:
        return ad_transpose(ad_reshape(full34(a), AD_SHAPE(4, 3)), 0, 1);
    case 18:
        return ad_pow(ad_sigmoid(a), ad_add_scalar(ad_square(b), 0.5));
    case 19:
        return ad_tanh(ad_log_softmax(full34(a), 0));
    case 20:
        return ad_mul_scalar(ad_gelu(a), 0.5);
    case 21:
        return ad_erf(ad_softplus(b));
    case 22:
        return ad_mul_scalar(ad_sum_to(full34(a), AD_SHAPE(1, 4)), 1.0 / 3.0);
    default:
        return ad_log1p(ad_square(a));
    }
}

static ad_var f_program(ad_tape *t, const ad_var *x, void *c)
{
    const program *p = c;
    ad_var v[3 + PROG_LEN];
    for (int i = 0; i < 3; i++) v[i] = x[i];
    for (int i = 0; i < PROG_LEN; i++) v[3 + i] = apply_step(t, p, &p->s[i], v[p->s[i].a], v[p->s[i].b]);
    ad_var y = v[3 + PROG_LEN - 1];
    for (int i = 3 + PROG_LEN - 4; i < 3 + PROG_LEN - 1; i++) y = ad_add(y, v[i]);
    return ad_add(y, ad_full(t, ad_value(x[0])->dtype, AD_SHAPE(3, 4), 0.0)); /* always [3,4] */
}

/* The program in f32 (inputs rounded to f32) matches it in f64 at the same values: outputs and the gradients of
** sum(y^2) through both backward paths. */
static void f32_matches(const program *p, ad_tensor *const *in, ad_tensor *const *in32, int g)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *r64[3];
    ad_var x64[3], x32[3], g64[3], g32[3], h32[3];
    for (int i = 0; i < 3; i++) {
        r64[i] = ad_tensor_new(AD_F64, in[i]->ndim, in[i]->shape);
        ck_assert_int_eq(ad_tensor_copy(r64[i], in32[i]), AD_OK);
        x64[i] = ad_leaf(t, r64[i]);
        x32[i] = ad_leaf(t, in32[i]);
    }
    ad_var y64 = f_program(t, x64, (void *)p), y32 = f_program(t, x32, (void *)p);
    ck_assert_msg(ad_ok(y32), "graph %d: %s", g, ad_tape_error(t));
    ck_assert_int_eq(ad_value(y32)->dtype, AD_F32);
    ad_var l64 = ad_sum(ad_square(y64)), l32 = ad_sum(ad_square(y32));
    ck_assert_int_eq(ad_gradients(l64, 3, x64, g64, 0), AD_OK);
    ck_assert_int_eq(ad_gradients(l32, 3, x32, g32, 0), AD_OK);
    ck_assert_int_eq(ad_gradients(l32, 3, x32, h32, AD_CREATE_GRAPH), AD_OK);
    const ad_tensor *v64 = ad_value(y64), *v32 = ad_value(y32);
    for (int64_t k = 0; k < v64->size; k++)
        ck_assert_msg(tu_close(ad_tensor_get(v32, k), ad_tensor_get(v64, k), 1e-5, 1e-4), "graph %d: y[%lld] %g vs %g",
                      g, (long long)k, ad_tensor_get(v32, k), ad_tensor_get(v64, k));
    for (int i = 0; i < 3; i++) {
        const ad_tensor *a = ad_value(g32[i]), *b = ad_value(g64[i]), *c = ad_value(h32[i]);
        ck_assert_int_eq(a->dtype, AD_F32);
        for (int64_t k = 0; k < b->size; k++) {
            double ref = ad_tensor_get(b, k);
            ck_assert_msg(tu_close(ad_tensor_get(a, k), ref, 1e-4, 1e-3), "graph %d: grad %d[%lld] %g vs %g", g, i,
                          (long long)k, ad_tensor_get(a, k), ref);
            ck_assert_msg(tu_close(ad_tensor_get(c, k), ref, 1e-4, 1e-3), "graph %d: recorded grad %d[%lld] %g vs %g",
                          g, i, (long long)k, ad_tensor_get(c, k), ref);
        }
    }
    ad_tape_free(t);
    for (int i = 0; i < 3; i++) ad_tensor_free(r64[i]);
}

START_TEST(test_random_graphs)
{
    int graphs = tu_quick() ? 10 : 300;
    ad_tensor *in[3] = {tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 31), tu_rand(AD_F64, AD_SHAPE(4), -1, 1, 32),
                        tu_rand(AD_F64, AD_SHAPE(3, 1), -1, 1, 33)};
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(4, 4), -1, 1, 34), *w32 = tu_to_f32(w);
    ad_tensor *in32[3] = {tu_to_f32(in[0]), tu_to_f32(in[1]), tu_to_f32(in[2])};
    ad_rng rng;
    ad_rng_seed(&rng, 2024);
    for (int g = 0; g < graphs; g++) {
        program p = {.w = w, .w32 = w32};
        for (int i = 0; i < PROG_LEN; i++) {
            p.s[i].op = (int)ad_rng_below(&rng, PROG_OPS);
            p.s[i].a = (int)ad_rng_below(&rng, (uint64_t)(3 + i));
            p.s[i].b = (int)ad_rng_below(&rng, (uint64_t)(3 + i));
        }
        ad_check_report rep;
        ad_status s = ad_gradcheck(f_program, &p, 3, (const ad_tensor *const *)in, NULL, &rep);
        ck_assert_msg(s == AD_OK, "graph %d: gradcheck %s (input %d element %lld: %g vs %g) %s", g, ad_status_str(s),
                      rep.input, (long long)rep.element, rep.analytic, rep.numeric, rep.message);
        s = ad_gradgradcheck(f_program, &p, 3, (const ad_tensor *const *)in, NULL, &rep);
        ck_assert_msg(s == AD_OK, "graph %d: gradgradcheck %s (input %d element %lld: %g vs %g) %s", g,
                      ad_status_str(s), rep.input, (long long)rep.element, rep.analytic, rep.numeric, rep.message);
        f32_matches(&p, in, in32, g);
    }
    for (int i = 0; i < 3; i++) {
        ad_tensor_free(in[i]);
        ad_tensor_free(in32[i]);
    }
    ad_tensor_free(w);
    ad_tensor_free(w32);
}
END_TEST

static Suite *gradcheck_suite(void)
{
    Suite *s = suite_create("gradcheck");
    TCase *check = tcase_create("check");
    tcase_add_test(check, test_catches_wrong_gradient);
    tcase_add_test(check, test_passes_and_report);
    tcase_add_test(check, test_errors);
    tcase_add_test(check, test_gradgradcheck);
    suite_add_tcase(s, check);
    TCase *closed = tcase_create("closed_form");
    tcase_add_test(closed, test_rosenbrock);
    tcase_add_test(closed, test_xsiny_closed_form);
    tcase_add_test(closed, test_quadratic_form);
    suite_add_tcase(s, closed);
    TCase *random = tcase_create("random_graphs");
    tcase_add_test(random, test_random_graphs);
    tcase_set_timeout(random, 300);
    suite_add_tcase(s, random);
    return s;
}

int main(void) { return tu_run(gradcheck_suite()); }

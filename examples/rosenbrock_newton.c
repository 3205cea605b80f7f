/* rosenbrock_newton.c: Newton's method on the Rosenbrock function with ad_hessian, and Newton-CG with ad_hvp. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ad.h"

/*
** f(x) = sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, minimum 0 at x = (1, ..., 1).
**
** Part 1, n = 2, from the classic start (-1.2, 1): Newton's method. Each step
** solves H p = -g with the exact Hessian from ad_hessian (a Cholesky
** factorization; when H is not positive definite, a multiple of I is added
** until it is) and backtracks along p until f decreases enough (Armijo).
**
** Part 2, n = 8: Newton-CG. The Hessian is never formed: conjugate gradients
** solve H p = -g using only products H v from ad_hvp (reverse over reverse).
**
** With an argument, the program also writes the tape of f and its gradient
** (recorded with AD_CREATE_GRAPH) at the start point as Graphviz DOT:
**     rosenbrock_newton graph.dot && dot -Tsvg graph.dot -o graph.svg
** Exits 0 when both parts reach the minimum.
*/

#define NMAX 8

static ad_var rosenbrock(ad_tape *t, const ad_var *x, void *ctx)
{
    (void)t;
    (void)ctx;
    int64_t n = ad_value(x[0])->size;
    ad_var a = ad_slice(x[0], 0, 0, n - 1), b = ad_slice(x[0], 0, 1, n);
    ad_var valley = ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0);
    return ad_sum(ad_add(valley, ad_square(ad_add_scalar(ad_neg(a), 1.0))));
}

/* f at x; NaN on failure. */
static double value(ad_tensor *x)
{
    ad_tape *t = ad_tape_new();
    if (!t) return NAN;
    ad_var xv = ad_const(t, x);
    double f = ad_item(rosenbrock(t, &xv, NULL));
    ad_tape_free(t);
    return f;
}

/* f and its gradient at x (gradient: the 1 x n Jacobian of f). */
static ad_status value_and_grad(ad_tensor *x, double *f, double *g)
{
    int n = (int)x->size;
    ad_tensor *jac = ad_tensor_new(AD_F64, AD_SHAPE(1, n));
    ad_status s = jac ? ad_jacobian(rosenbrock, NULL, x, jac) : AD_ERR_NOMEM;
    if (s == AD_OK) memcpy(g, jac->data, (size_t)n * sizeof *g);
    *f = value(x);
    ad_tensor_free(jac);
    return s == AD_OK && isnan(*f) ? AD_ERR_NUMERIC : s;
}

static double norm(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

/* Solves (H + mu I) p = -g by Cholesky; false when not positive definite. */
static int newton_direction(const double *h, const double *g, double mu, int n, double *p)
{
    double l[NMAX * NMAX] = {0}, y[NMAX];
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = h[i * n + j] + (i == j ? mu : 0.0);
            for (int k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
            if (i == j) {
                if (!(s > 0)) return 0;
                l[i * n + i] = sqrt(s);
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    for (int i = 0; i < n; i++) { /* L y = -g */
        double s = -g[i];
        for (int k = 0; k < i; k++) s -= l[i * n + k] * y[k];
        y[i] = s / l[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) { /* L^T p = y */
        double s = y[i];
        for (int k = i + 1; k < n; k++) s -= l[k * n + i] * p[k];
        p[i] = s / l[i * n + i];
    }
    return 1;
}

/* Backtracking (Armijo) along p from x; returns the accepted step length. */
static double line_search(ad_tensor *x, const double *p, double f0, const double *g, int n)
{
    double *xd = x->data, x0[NMAX], slope = 0, step = 1.0;
    memcpy(x0, xd, (size_t)n * sizeof *x0);
    for (int i = 0; i < n; i++) slope += g[i] * p[i];
    for (int k = 0; k < 60; k++, step *= 0.5) {
        for (int i = 0; i < n; i++) xd[i] = x0[i] + step * p[i];
        if (value(x) <= f0 + 1e-4 * step * slope) return step;
    }
    memcpy(xd, x0, (size_t)n * sizeof *x0);
    return 0;
}

static int newton(void)
{
    const int n = 2;
    ad_tensor *x = ad_tensor_from(AD_F64, AD_SHAPE(2), (double[]){-1.2, 1.0});
    ad_tensor *h = ad_tensor_new(AD_F64, AD_SHAPE(2, 2));
    if (!x || !h) return 1;
    double *xd = x->data, f, g[NMAX], p[NMAX];
    printf("Newton's method, n = 2, Hessian from ad_hessian\n");
    printf(" iter            x1            x2          f(x)        |grad|  step\n");
    int it = 0, ok = 0;
    for (; it < 100; it++) {
        if (value_and_grad(x, &f, g) != AD_OK) break;
        printf("%5d  %12.8f  %12.8f  %12.4e  %12.4e", it, xd[0], xd[1], f, norm(g, n));
        if (norm(g, n) < 1e-10) {
            printf("\n");
            ok = 1;
            break;
        }
        if (ad_hessian(rosenbrock, NULL, x, h) != AD_OK) break;
        double mu = 0;
        while (!newton_direction(h->data, g, mu, n, p)) mu = mu ? 10 * mu : 1e-3;
        double step = line_search(x, p, f, g, n);
        printf("  %.4g%s\n", step, mu ? "  (H + mu I)" : "");
        if (step == 0) break;
    }
    ok = ok && fabs(xd[0] - 1) < 1e-8 && fabs(xd[1] - 1) < 1e-8;
    printf("%s after %d iterations: x = (%.10f, %.10f)\n\n", ok ? "converged" : "FAILED", it, xd[0], xd[1]);
    ad_tensor_free(x);
    ad_tensor_free(h);
    return !ok;
}

/* Conjugate gradients on H p = -g with products from ad_hvp, stopped at negative curvature. */
static ad_status cg_direction(ad_tensor *x, const double *g, int n, double *p, int *iters)
{
    double r[NMAX], d[NMAX], tol = fmin(0.5, sqrt(norm(g, n))) * norm(g, n);
    ad_tensor *dv = ad_tensor_new(AD_F64, 1, (const int64_t[]){n}),
              *hd = ad_tensor_new(AD_F64, 1, (const int64_t[]){n});
    ad_status s = (dv && hd) ? AD_OK : AD_ERR_NOMEM;
    for (int i = 0; i < n; i++) p[i] = 0, r[i] = -g[i], d[i] = r[i];
    *iters = 0;
    for (int k = 0; s == AD_OK && k < 2 * n && norm(r, n) > tol; k++) {
        memcpy(dv->data, d, (size_t)n * sizeof *d);
        s = ad_hvp(rosenbrock, NULL, x, dv, hd);
        if (s != AD_OK) break;
        const double *q = hd->data;
        double dq = 0, rr = 0, rr2 = 0;
        for (int i = 0; i < n; i++) dq += d[i] * q[i], rr += r[i] * r[i];
        if (dq <= 0) { /* negative curvature: fall back to steepest descent on the first step */
            if (k == 0) memcpy(p, r, (size_t)n * sizeof *p);
            break;
        }
        double alpha = rr / dq;
        for (int i = 0; i < n; i++) p[i] += alpha * d[i], r[i] -= alpha * q[i], rr2 += r[i] * r[i];
        for (int i = 0; i < n; i++) d[i] = r[i] + rr2 / rr * d[i];
        (*iters)++;
    }
    ad_tensor_free(dv);
    ad_tensor_free(hd);
    return s;
}

static int newton_cg(void)
{
    const int n = NMAX;
    ad_tensor *x = ad_tensor_new(AD_F64, 1, (const int64_t[]){n});
    if (!x) return 1;
    double *xd = x->data, f, g[NMAX], p[NMAX];
    for (int i = 0; i < n; i++) xd[i] = 0.0;
    printf("Newton-CG, n = %d, Hessian-vector products from ad_hvp (H never formed)\n", n);
    printf(" iter          f(x)        |grad|  CG iters  step\n");
    int it = 0, ok = 0;
    for (; it < 200; it++) {
        if (value_and_grad(x, &f, g) != AD_OK) break;
        printf("%5d  %12.4e  %12.4e", it, f, norm(g, n));
        if (norm(g, n) < 1e-9) {
            printf("\n");
            ok = 1;
            break;
        }
        int cg_iters;
        if (cg_direction(x, g, n, p, &cg_iters) != AD_OK) break;
        double step = line_search(x, p, f, g, n);
        printf("  %8d  %.4g\n", cg_iters, step);
        if (step == 0) break;
    }
    for (int i = 0; i < n; i++) ok = ok && fabs(xd[i] - 1) < 1e-7;
    printf("%s after %d iterations: x =", ok ? "converged" : "FAILED", it);
    for (int i = 0; i < n; i++) printf(" %.8f", xd[i]);
    printf("\n");
    ad_tensor_free(x);
    return !ok;
}

/* The tape of f and its gradient at (-1.2, 1), as DOT. */
static int write_graph(const char *path)
{
    ad_tensor *xv = ad_tensor_from(AD_F64, AD_SHAPE(2), (double[]){-1.2, 1.0});
    ad_tape *t = ad_tape_new();
    FILE *f = fopen(path, "w");
    int bad = !xv || !t || !f;
    if (!bad) {
        ad_var x = ad_leaf(t, xv), g;
        ad_var y = rosenbrock(t, &x, NULL);
        bad = ad_gradients(y, 1, &x, &g, AD_CREATE_GRAPH) != AD_OK || ad_tape_write_dot(t, f) != AD_OK;
        if (bad) fprintf(stderr, "rosenbrock_newton: %s\n", ad_tape_error(t));
    }
    if (f && fclose(f) != 0) bad = 1;
    if (!f) perror(path);
    ad_tape_free(t);
    ad_tensor_free(xv);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc > 1 && write_graph(argv[1])) return 1;
    int bad = newton();
    bad |= newton_cg();
    return bad;
}

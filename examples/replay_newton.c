/* replay_newton.c: Newton's method on a tape recorded once and replayed at every point, the Hessian by forward over reverse. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ad.h"

/*
** f(x) = sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 for N = 24 scalars, written
** element by element (about 170 scalar ops), minimum 0 at x = (1, ..., 1).
**
** The tape of f is recorded once. Every later point, the line search's trial
** points included, is evaluated by ad_tape_replay: the same nodes recomputed in
** place, nothing recorded, nothing allocated. At each iterate the gradient is
** recorded with AD_CREATE_GRAPH and the Hessian's columns are tangents of it
** (ad_tangents seeded with e_j: forward over reverse). A replay drops those
** passes again. Newton's step solves H p = -g (Cholesky, with a multiple of I
** added while H is not positive definite) and backtracks until f decreases
** enough (Armijo).
**
** The whole run is done twice, replaying and recording f again at every point,
** and the two must agree bit for bit. It prints the iterations and the time of
** each. Exits 0 when both reach the minimum with the same iterates.
*/

#define N 24

typedef struct problem {
    ad_tape *t;
    ad_var x[N], f;
    bool replay, recorded;
    int evals;
    double eval_s; /* time spent evaluating f */
} problem;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ad_var rosenbrock(ad_tape *t, const ad_var *x)
{
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i + 1 < N; i++) {
        ad_var d = ad_sub(x[i + 1], ad_square(x[i]));
        ad_var e = ad_add_scalar(ad_neg(x[i]), 1.0);
        acc = ad_add(acc, ad_add(ad_mul_scalar(ad_square(d), 100.0), ad_square(e)));
    }
    return acc;
}

/* f at the point held by vals[0..N): the tape replayed, or recorded again. */
static double evaluate(problem *p, ad_tensor *const *vals)
{
    double t0 = now_s(), f = NAN;
    p->evals++;
    if (p->replay && p->recorded) {
        if (ad_tape_replay(p->t, N, p->x, (const ad_tensor *const *)vals) == AD_OK) f = ad_item(p->f);
    } else {
        ad_tape_reset(p->t);
        for (int i = 0; i < N; i++) p->x[i] = ad_leaf(p->t, vals[i]);
        p->f = rosenbrock(p->t, p->x);
        p->recorded = true;
        if (ad_ok(p->f)) f = ad_item(p->f);
    }
    p->eval_s += now_s() - t0;
    return f;
}

/* g and H (row-major N x N) at the point last evaluated. */
static ad_status derivatives(problem *p, double *g, double *h)
{
    ad_tape *t = p->t;
    ad_var grad[N], seed[N], col[N];
    ad_status s = ad_gradients(p->f, N, p->x, grad, AD_CREATE_GRAPH);
    ad_var zero = ad_scalar(t, AD_F64, 0.0), one = ad_scalar(t, AD_F64, 1.0);
    for (int j = 0; j < N && s == AD_OK; j++) {
        for (int i = 0; i < N; i++) seed[i] = i == j ? one : zero;
        s = ad_tangents(N, p->x, seed, N, grad, col); /* column j of H = d(grad)/dx e_j */
        for (int i = 0; i < N && s == AD_OK; i++) h[i * N + j] = ad_item(col[i]);
    }
    for (int i = 0; i < N && s == AD_OK; i++) g[i] = ad_item(grad[i]);
    return s;
}

/* Solves (H + mu I) p = -g by Cholesky, raising mu until the factorization succeeds. */
static void newton_step(const double *h, const double *g, double *step)
{
    static double l[N * N];
    for (double mu = 0.0;; mu = mu > 0 ? 10 * mu : 1e-6) {
        bool ok = true;
        for (int i = 0; i < N && ok; i++)
            for (int j = 0; j <= i && ok; j++) {
                double s = h[i * N + j] + (i == j ? mu : 0.0);
                for (int k = 0; k < j; k++) s -= l[i * N + k] * l[j * N + k];
                if (i == j) {
                    ok = s > 0;
                    l[i * N + i] = ok ? sqrt(s) : 0;
                } else {
                    l[i * N + j] = s / l[j * N + j];
                }
            }
        if (ok) break;
    }
    double y[N];
    for (int i = 0; i < N; i++) {
        double s = -g[i];
        for (int k = 0; k < i; k++) s -= l[i * N + k] * y[k];
        y[i] = s / l[i * N + i];
    }
    for (int i = N - 1; i >= 0; i--) {
        double s = y[i];
        for (int k = i + 1; k < N; k++) s -= l[k * N + i] * step[k];
        step[i] = s / l[i * N + i];
    }
}

/* Runs Newton from x = 0; x_out gets the last iterate. Returns the iterations, -1 on failure. */
static int newton(problem *p, double *x_out, bool print, double *seconds)
{
    ad_tensor *x[N], *trial[N];
    for (int i = 0; i < N; i++) {
        x[i] = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (const double[]){0.0});
        trial[i] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    }
    static double g[N], h[N * N], step[N];
    double t0 = now_s();
    double f = evaluate(p, x);
    int it = 0, rc = -1;
    for (; it < 200; it++) {
        if (derivatives(p, g, h) != AD_OK) break;
        double gn = 0, slope = 0;
        for (int i = 0; i < N; i++) gn += g[i] * g[i];
        if (print && (it < 4 || it % 5 == 0 || sqrt(gn) < 1e-9))
            printf("  iteration %3d  f = %-12.6g |g| = %.3g\n", it, f, sqrt(gn));
        if (sqrt(gn) < 1e-9) {
            rc = it;
            break;
        }
        newton_step(h, g, step);
        for (int i = 0; i < N; i++) slope += g[i] * step[i];
        double a = 1.0, ft = f;
        for (int k = 0; k < 60; k++, a *= 0.5) { /* Armijo backtracking: each trial point is a replay */
            for (int i = 0; i < N; i++) ad_tensor_set(trial[i], 0, ad_tensor_get(x[i], 0) + a * step[i]);
            ft = evaluate(p, trial);
            if (ft <= f + 1e-4 * a * slope) break;
        }
        for (int i = 0; i < N; i++) ad_tensor_set(x[i], 0, ad_tensor_get(trial[i], 0));
        f = evaluate(p, x); /* the tape back at the accepted point, for its derivatives */
        if (!(f == ft)) break;
    }
    *seconds = now_s() - t0;
    for (int i = 0; i < N; i++) {
        x_out[i] = ad_tensor_get(x[i], 0);
        ad_tensor_free(x[i]);
        ad_tensor_free(trial[i]);
    }
    if (rc < 0) fprintf(stderr, "newton: %s\n", ad_tape_error(p->t));
    return rc;
}

int main(void)
{
    problem rep = {ad_tape_new(), {{0}}, {0}, true, false, 0, 0};
    problem rec = {ad_tape_new(), {{0}}, {0}, false, false, 0, 0};
    if (!rep.t || !rec.t) return 1;
    double xa[N], xb[N], ta, tb;
    printf("Newton's method on the %d-dimensional Rosenbrock function, the tape recorded once and replayed:\n", N);
    int ia = newton(&rep, xa, true, &ta);
    int ib = newton(&rec, xb, false, &tb);
    bool same = ia == ib && memcmp(xa, xb, sizeof xa) == 0;
    double err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(xa[i] - 1.0));
    printf("replayed:        %d iterations, %d evaluations of f: %.1f us each; %.2f ms in all\n", ia, rep.evals,
           1e6 * rep.eval_s / rep.evals, 1e3 * ta);
    printf("recorded again:  %d iterations, %d evaluations of f: %.1f us each; %.2f ms in all\n", ib, rec.evals,
           1e6 * rec.eval_s / rec.evals, 1e3 * tb);
    printf("(the rest of each iteration is the gradient and %d tangent sweeps, the same in both)\n", N);
    printf("same iterates bit for bit: %s; max |x_i - 1| = %.2g\n", same ? "yes" : "NO", err);
    ad_tape_free(rep.t);
    ad_tape_free(rec.t);
    return ia > 0 && same && err < 1e-8 ? 0 : 1;
}

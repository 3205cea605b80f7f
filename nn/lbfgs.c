/* lbfgs.c: full-batch L-BFGS (two-loop recursion) with a strong-Wolfe line search, for nn_optim_minimize. */
#include "optim_internal.h"

#include <math.h>

/*
** The parameters are one vector x (every parameter flattened, in double; a
** frozen one keeps a zero gradient, so it never moves). Each call of
** nn_optim_minimize runs up to opts.max_iter iterations: the direction
** d = -H g from the last `history` pairs (s = x' - x, y = g' - g) by the
** two-loop recursion, H0 = (s.y / y.y) I; then a step t along d, by the
** strong Wolfe conditions (c1 = 1e-4, c2 = 0.9; bracketing, then zoom by
** cubic interpolation, Nocedal & Wright, Algorithms 3.5 and 3.6) or a fixed
** t = lr. The pairs persist across calls.
*/

#define C1 1e-4
#define C2 0.9
#define MAX_LS 25

struct lbfgs_state {
    int64_t n;     /* scalars in x */
    int m, count;  /* history capacity and pairs held; oldest at (head - count) mod m */
    int head;
    double *s, *y; /* m x n each: the data of ts and ty */
    double *rho, *alpha; /* rho: the data of trho */
    /* the history as optimizer state (checkpoints): "optim.lbfgs.s" and ".y" [m, n], ".rho" [m],
    ** ".pairs" [3] = head, count, started (mirrored by nn__lbfgs_state_out / _in) */
    ad_tensor *ts, *ty, *trho, *tpairs;
    double *x, *g, *d, *x0, *g0, *gbest;
    bool started;
    nn_closure fn;
    void *ctx;
    nn_error *err;
    int64_t evals;
};

ad_status nn__lbfgs_check(const nn_optim_opts *o, nn_error *err)
{
    if (!(o->lr > 0) || !isfinite(o->lr) || o->history < 1 || o->history > 1000 || o->max_iter < 1 ||
        !(o->tolerance_grad >= 0) || !(o->tolerance_change >= 0))
        return nn_error_set(err, AD_ERR_ARG,
                            "nn_optim_new(lbfgs): lr %g must be > 0, history %d in [1, 1000], max_iter %d >= 1, "
                            "tolerances >= 0",
                            o->lr, o->history, o->max_iter);
    if (o->weight_decay != 0)
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(lbfgs): no weight decay (add it to the loss)");
    return AD_OK;
}

void nn__lbfgs_free(nn_optim *o)
{
    lbfgs_state *L = o->lbfgs;
    if (!L) return;
    double *bufs[] = {L->alpha, L->x, L->g, L->d, L->x0, L->g0, L->gbest};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ad__free(bufs[i]);
    ad_tensor *ts[] = {L->ts, L->ty, L->trho, L->tpairs};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) ad_tensor_free(ts[i]);
    ad__free(L);
    o->lbfgs = NULL;
}

ad_status nn__lbfgs_init(nn_optim *o, nn_error *err)
{
    lbfgs_state *L = ad__calloc(1, sizeof *L);
    if (!L) return nn_error_set(err, AD_ERR_NOMEM, "nn_optim_new(lbfgs): out of memory");
    o->lbfgs = L;
    for (int i = 0; i < o->n; i++) L->n += o->params[i]->value->size;
    L->m = o->opts.history;
    size_t n = (size_t)(L->n ? L->n : 1), m = (size_t)L->m;
    L->ts = ad_tensor_new(AD_F64, AD_SHAPE(L->m, L->n));
    L->ty = ad_tensor_new(AD_F64, AD_SHAPE(L->m, L->n));
    L->trho = ad_tensor_new(AD_F64, AD_SHAPE(L->m));
    L->tpairs = ad_tensor_new(AD_F64, AD_SHAPE(3));
    L->alpha = ad__malloc(m * sizeof *L->alpha);
    double **vecs[] = {&L->x, &L->g, &L->d, &L->x0, &L->g0, &L->gbest};
    bool ok = L->ts && L->ty && L->trho && L->tpairs && L->alpha;
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) ok = (*vecs[i] = ad__malloc(n * sizeof(double))) && ok;
    if (!ok) return nn_error_set(err, AD_ERR_NOMEM, "nn_optim_new(lbfgs): out of memory for %lld scalars x %d pairs",
                                 (long long)L->n, L->m);
    L->s = L->ts->data;
    L->y = L->ty->data;
    L->rho = L->trho->data;
    static const char *const names[4] = {".s", ".y", ".rho", ".pairs"};
    ad_tensor *ts[4] = {L->ts, L->ty, L->trho, L->tpairs};
    for (int i = 0; i < 4; i++)
        if (!nn__optim_add_state(o, "lbfgs", names[i], ts[i]))
            return nn_error_set(err, AD_ERR_NOMEM, "nn_optim_new(lbfgs): out of memory");
    return AD_OK;
}

void nn__lbfgs_state_out(nn_optim *o)
{
    lbfgs_state *L = o->lbfgs;
    double *p = L->tpairs->data;
    p[0] = L->head, p[1] = L->count, p[2] = L->started;
}

void nn__lbfgs_state_in(nn_optim *o)
{
    lbfgs_state *L = o->lbfgs;
    const double *p = L->tpairs->data;
    bool ok = p[0] >= 0 && p[0] < L->m && p[0] == floor(p[0]) && p[1] >= 0 && p[1] <= L->m && p[1] == floor(p[1]) &&
              (p[2] == 0 || p[2] == 1);
    L->head = ok ? (int)p[0] : 0;
    L->count = ok ? (int)p[1] : 0; /* not a state this optimizer wrote: the history is dropped */
    L->started = ok && p[2] != 0;
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double max_abs(const double *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* x into the parameters (rounded for F32 ones). */
static void scatter(nn_optim *o, const double *x)
{
    int64_t k = 0;
    for (int i = 0; i < o->n; i++) {
        ad_tensor *v = o->params[i]->value;
        for (int64_t j = 0; j < v->size; j++) ad_tensor_set(v, j, x[k++]);
    }
}

/* The parameters into x, or their gradients into g (zero for a frozen parameter). */
static void gather(nn_optim *o, double *out, bool grads)
{
    int64_t k = 0;
    for (int i = 0; i < o->n; i++) {
        const nn_param *p = o->params[i];
        const ad_tensor *v = grads ? p->grad : p->value;
        for (int64_t j = 0; j < v->size; j++) out[k++] = grads && !p->requires_grad ? 0.0 : ad_tensor_get(v, j);
    }
}

/* f and g at x (x is written into the parameters first). */
static ad_status evaluate(nn_optim *o, const double *x, double *f, double *g)
{
    lbfgs_state *L = o->lbfgs;
    scatter(o, x);
    nn__optim_zero_grads(o);
    *f = NAN;
    ad_status st = L->fn(L->ctx, f, L->err);
    L->evals++;
    if (st != AD_OK) return st;
    gather(o, g, true);
    for (int64_t i = 0; i < L->n; i++)
        if (!isfinite(g[i]) || !isfinite(*f))
            return nn_error_set(L->err, AD_ERR_NUMERIC, "nn_optim_minimize(lbfgs): the loss (%g) or its gradient is "
                                "not finite at evaluation %lld", *f, (long long)L->evals);
    return AD_OK;
}

/* The minimizer in [lo, hi] of the cubic through (x1, f1, g1) and (x2, f2, g2), or the middle. */
static double cubic_min(double x1, double f1, double g1, double x2, double f2, double g2, double lo, double hi)
{
    double d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2);
    double disc = d1 * d1 - g1 * g2;
    if (disc >= 0 && x1 != x2) {
        double d2 = sqrt(disc) * (x2 > x1 ? 1 : -1);
        double t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2));
        if (isfinite(t)) return fmin(fmax(t, lo), hi);
    }
    return (lo + hi) / 2;
}

/* phi(t) = f(x0 + t d): value and slope g(x0 + t d).d; the gradient is left in L->g. */
static ad_status phi(nn_optim *o, double t, double *f, double *slope)
{
    lbfgs_state *L = o->lbfgs;
    for (int64_t i = 0; i < L->n; i++) L->x[i] = L->x0[i] + t * L->d[i];
    ad_status st = evaluate(o, L->x, f, L->g);
    *slope = dot(L->g, L->d, L->n);
    return st;
}

/* A step satisfying the strong Wolfe conditions from f0, slope0 (< 0) at x0; on return the
** parameters, L->x and L->g hold the accepted point and *f its value. */
static ad_status wolfe(nn_optim *o, double t, double f0, double slope0, double *f, double *t_out)
{
    lbfgs_state *L = o->lbfgs;
    double t_prev = 0, f_prev = f0, s_prev = slope0;
    double lo = 0, f_lo = f0, s_lo = slope0, hi = 0, f_hi = 0, s_hi = 0;
    double fb = f0, tb = 0; /* the best point seen satisfying sufficient decrease */
    memcpy(L->gbest, L->g0, (size_t)L->n * sizeof *L->gbest);
    bool zoom = false, done = false;
    double fn, sn;
    ad_status st;
    for (int i = 0; i < MAX_LS && !done && !zoom; i++) {
        if ((st = phi(o, t, &fn, &sn)) != AD_OK) return st;
        if (fn <= f0 + C1 * t * slope0 && fn < fb) {
            fb = fn, tb = t;
            memcpy(L->gbest, L->g, (size_t)L->n * sizeof *L->g);
        }
        if (fn > f0 + C1 * t * slope0 || (i > 0 && fn >= f_prev)) {
            lo = t_prev, f_lo = f_prev, s_lo = s_prev, hi = t, f_hi = fn, s_hi = sn, zoom = true;
        } else if (fabs(sn) <= -C2 * slope0) {
            done = true;
        } else if (sn >= 0) {
            lo = t, f_lo = fn, s_lo = sn, hi = t_prev, f_hi = f_prev, s_hi = s_prev, zoom = true;
        } else {
            double next = cubic_min(t_prev, f_prev, s_prev, t, fn, sn, t + 0.01 * (t - t_prev), 10 * t);
            t_prev = t, f_prev = fn, s_prev = sn, t = next;
        }
    }
    for (int i = 0; zoom && !done && i < MAX_LS && fabs(hi - lo) * max_abs(L->d, L->n) > o->opts.tolerance_change;
         i++) {
        double a = fmin(lo, hi), b = fmax(lo, hi), w = b - a;
        t = cubic_min(lo, f_lo, s_lo, hi, f_hi, s_hi, a + 0.1 * w, b - 0.1 * w);
        if ((st = phi(o, t, &fn, &sn)) != AD_OK) return st;
        if (fn <= f0 + C1 * t * slope0 && fn < fb) {
            fb = fn, tb = t;
            memcpy(L->gbest, L->g, (size_t)L->n * sizeof *L->g);
        }
        if (fn > f0 + C1 * t * slope0 || fn >= f_lo) {
            hi = t, f_hi = fn, s_hi = sn;
        } else {
            if (fabs(sn) <= -C2 * slope0) done = true;
            else if (sn * (hi - lo) >= 0) hi = lo, f_hi = f_lo, s_hi = s_lo;
            lo = t, f_lo = fn, s_lo = sn;
        }
    }
    if (!done) { /* not found within the budget: the best sufficient decrease seen (or none: stay) */
        t = tb;
        fn = fb;
        memcpy(L->g, L->gbest, (size_t)L->n * sizeof *L->g);
        for (int64_t i = 0; i < L->n; i++) L->x[i] = L->x0[i] + t * L->d[i];
        scatter(o, L->x);
    }
    *f = fn;
    *t_out = t;
    return AD_OK;
}

/* d = -H g by the two-loop recursion over the stored pairs. */
static void direction(lbfgs_state *L)
{
    for (int64_t i = 0; i < L->n; i++) L->d[i] = -L->g[i];
    for (int k = 0; k < L->count; k++) { /* newest first */
        int j = ((L->head - 1 - k) % L->m + L->m) % L->m;
        const double *s = L->s + (size_t)j * (size_t)L->n, *y = L->y + (size_t)j * (size_t)L->n;
        L->alpha[j] = L->rho[j] * dot(s, L->d, L->n);
        for (int64_t i = 0; i < L->n; i++) L->d[i] -= L->alpha[j] * y[i];
    }
    if (L->count > 0) {
        int j = ((L->head - 1) % L->m + L->m) % L->m;
        const double *y = L->y + (size_t)j * (size_t)L->n;
        double gamma = 1.0 / (L->rho[j] * dot(y, y, L->n));
        for (int64_t i = 0; i < L->n; i++) L->d[i] *= gamma;
    }
    for (int k = L->count - 1; k >= 0; k--) { /* oldest first */
        int j = ((L->head - 1 - k) % L->m + L->m) % L->m;
        const double *s = L->s + (size_t)j * (size_t)L->n, *y = L->y + (size_t)j * (size_t)L->n;
        double beta = L->rho[j] * dot(y, L->d, L->n);
        for (int64_t i = 0; i < L->n; i++) L->d[i] += (L->alpha[j] - beta) * s[i];
    }
}

ad_status nn__lbfgs_step(nn_optim *o, nn_closure fn, void *ctx, double *loss, nn_error *err)
{
    lbfgs_state *L = o->lbfgs;
    const nn_optim_opts *p = &o->opts;
    L->fn = fn, L->ctx = ctx, L->err = err;
    double f;
    gather(o, L->x, false);
    ad_status st = evaluate(o, L->x, &f, L->g);
    if (loss) *loss = f;
    if (st != AD_OK || max_abs(L->g, L->n) <= p->tolerance_grad) return st;
    for (int it = 0; it < p->max_iter; it++) {
        direction(L);
        double slope = dot(L->g, L->d, L->n);
        if (!(slope < -p->tolerance_change)) { /* not a descent direction: forget the pairs, go down the gradient */
            if (L->count == 0) break;
            L->count = 0;
            it--;
            continue;
        }
        double g1 = 0; /* the first step is scaled down to at most lr / |g|_1 */
        for (int64_t i = 0; !L->started && i < L->n; i++) g1 += fabs(L->g[i]);
        double t = L->started ? p->lr : fmin(1.0, 1.0 / g1) * p->lr;
        L->started = true;
        memcpy(L->x0, L->x, (size_t)L->n * sizeof *L->x);
        memcpy(L->g0, L->g, (size_t)L->n * sizeof *L->g);
        double f_new;
        if (p->line_search) {
            st = wolfe(o, t, f, slope, &f_new, &t);
        } else {
            double sl;
            st = phi(o, t, &f_new, &sl);
        }
        if (st != AD_OK) return st;
        /* the new pair s = x - x0, y = g - g0, kept when the curvature s.y is positive */
        double *s = L->s + (size_t)L->head * (size_t)L->n, *y = L->y + (size_t)L->head * (size_t)L->n;
        for (int64_t i = 0; i < L->n; i++) s[i] = L->x[i] - L->x0[i], y[i] = L->g[i] - L->g0[i];
        double sy = dot(s, y, L->n);
        if (sy > 1e-10) {
            L->rho[L->head] = 1.0 / sy;
            L->head = (L->head + 1) % L->m;
            if (L->count < L->m) L->count++;
        }
        double change = fabs(f_new - f), moved = t * max_abs(L->d, L->n);
        f = f_new;
        if (loss) *loss = f;
        o->step++;
        if (max_abs(L->g, L->n) <= p->tolerance_grad || moved <= p->tolerance_change || change < p->tolerance_change)
            break;
    }
    return AD_OK;
}

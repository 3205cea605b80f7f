/* gradcheck.c: checking reverse-mode derivatives against central finite differences. */
#include "tape.h"

#include <math.h>

/*
** Conventions follow PyTorch's gradcheck so its users can read the numbers:
** central differences with step eps, pass when |a - n| <= atol + rtol |n| for
** every element, inputs in float64. The slow mode compares the full Jacobian
** (one reverse sweep per output element, two evaluations of f per input
** element); the fast mode compares v^T J u for random u and v, per input.
*/

ad_check_opts ad_check_defaults(void) { return (ad_check_opts){1e-6, 1e-5, 1e-3, false, 0x5eed}; }

typedef struct checker {
    ad_fn f;
    void *ctx;
    int n;
    ad_tensor **work; /* copies of the inputs, perturbed in place */
    ad_tape *tape;
    ad_var *xs;
    ad_check_opts o;
    ad_check_report *rep;
} checker;

static ad_status fail(checker *c, ad_status s, const char *fmt, const char *detail)
{
    c->rep->status = s;
    snprintf(c->rep->message, sizeof c->rep->message, fmt, detail);
    return s;
}

/* Records f on a fresh tape with leaves over the work tensors. */
static ad_status eval(checker *c, ad_var *y)
{
    ad_tape_reset(c->tape);
    for (int i = 0; i < c->n; i++) c->xs[i] = ad_leaf(c->tape, c->work[i]);
    *y = c->f(c->tape, c->xs, c->ctx);
    if (ad_tape_status(c->tape) != AD_OK)
        return fail(c, ad_tape_status(c->tape), "the function failed: %s", ad_tape_error(c->tape));
    if (!ad_ok(*y)) return fail(c, AD_ERR_STATE, "the function returned an invalid var%s", "");
    if (ad__val(*y)->dtype != AD_F64)
        return fail(c, AD_ERR_DTYPE, "the function's output is %s; gradient checks need f64", "f32");
    return AD_OK;
}

/* Keeps the worst comparison: the largest excess over the tolerance. */
static bool compare(checker *c, double an, double nu, int input, int64_t elem, int64_t out, double *worst)
{
    double abs_err = fabs(an - nu), tol = c->o.atol + c->o.rtol * fabs(nu);
    double excess = abs_err - tol;
    bool bad = !(abs_err <= tol); /* NaN counts as a mismatch */
    if (isnan(excess)) excess = INFINITY;
    c->rep->checked++;
    if (excess > *worst) {
        *worst = excess;
        c->rep->input = input;
        c->rep->element = elem;
        c->rep->output = out;
        c->rep->analytic = an;
        c->rep->numeric = nu;
        c->rep->abs_err = abs_err;
        c->rep->rel_err = nu != 0 ? abs_err / fabs(nu) : (abs_err == 0 ? 0 : INFINITY);
    }
    return !bad;
}

/* Input i's derivatives were all exactly 0, analytic and numeric: a pass says nothing about it. */
static void independent(checker *c, int i)
{
    if (c->rep->independent_count++ == 0) c->rep->independent_input = i;
}

/* f(work) as doubles into buf (m values). */
static ad_status eval_values(checker *c, double *buf, int64_t m)
{
    ad_var y;
    ad_status s = eval(c, &y);
    if (s != AD_OK) return s;
    const ad_tensor *v = ad__val(y);
    if (v->size != m) return fail(c, AD_ERR_STATE, "the function's output size changed between calls%s", "");
    memcpy(buf, v->data, (size_t)m * sizeof(double));
    return AD_OK;
}

static ad_status slow_mode(checker *c, ad_var y, int64_t m, int64_t total)
{
    ad_tape *t = c->tape;
    const ad_tensor *vy = ad__val(y);
    int64_t cells;
    if (!ad__mul_ok(m, total, &cells) || cells > ((int64_t)1 << 27))
        return fail(c, AD_ERR_ARG, "the Jacobian is too large for the slow mode%s; use fast_mode", "");
    double *jac = ad__calloc((size_t)(cells ? cells : 1), sizeof(double));
    double *yp = ad__malloc((size_t)(m ? m : 1) * sizeof(double)), *ym = ad__malloc((size_t)(m ? m : 1) * sizeof(double));
    ad_var *g = ad__malloc((size_t)c->n * sizeof(ad_var));
    ad_status s = AD_OK;
    if (!jac || !yp || !ym || !g) {
        s = fail(c, AD_ERR_NOMEM, "out of memory%s", "");
        goto done;
    }
    /* analytic: row r of the Jacobian from a sweep seeded with e_r */
    for (int64_t r = 0; r < m; r++) {
        ad_mark mk = ad__tape_mark(t);
        ad_var seed = ad_full(t, AD_F64, vy->ndim, vy->shape, 0.0);
        if (seed.id != AD_NO_NODE) ((double *)ad__node(t, seed.id)->value.data)[r] = 1.0;
        s = ad_gradients_seed(y, seed, c->n, c->xs, g, 0);
        if (s != AD_OK) {
            s = fail(c, s, "the backward pass failed: %s", ad_tape_error(t));
            goto done;
        }
        int64_t col = 0;
        for (int i = 0; i < c->n; i++) {
            const ad_tensor *gi = ad__val(g[i]);
            memcpy(jac + r * total + col, gi->data, (size_t)gi->size * sizeof(double));
            col += gi->size;
        }
        ad__tape_rewind(t, mk);
    }
    /* numeric: column j from two evaluations around x_j */
    double worst = -INFINITY;
    bool pass = true;
    int64_t col = 0;
    for (int i = 0; i < c->n; i++) {
        double *x = c->work[i]->data;
        bool dep = false;
        for (int64_t j = 0; j < c->work[i]->size; j++, col++) {
            double x0 = x[j];
            x[j] = x0 + c->o.eps;
            s = eval_values(c, yp, m);
            x[j] = x0 - c->o.eps;
            if (s == AD_OK) s = eval_values(c, ym, m);
            x[j] = x0;
            if (s != AD_OK) goto done;
            for (int64_t r = 0; r < m; r++) {
                double nu = (yp[r] - ym[r]) / (2.0 * c->o.eps);
                if (jac[r * total + col] != 0 || nu != 0) dep = true;
                if (!compare(c, jac[r * total + col], nu, i, j, r, &worst)) pass = false;
            }
        }
        if (!dep && m > 0 && c->work[i]->size > 0) independent(c, i);
    }
    s = pass ? AD_OK : AD_ERR_NUMERIC;
done:
    ad__free(jac);
    ad__free(yp);
    ad__free(ym);
    ad__free(g);
    return s;
}

static ad_status fast_mode(checker *c, ad_var y, int64_t m)
{
    ad_tape *t = c->tape;
    const ad_tensor *vy = ad__val(y);
    ad_rng rng;
    ad_rng_seed(&rng, c->o.seed);
    ad_tensor *v = ad_tensor_new(AD_F64, vy->ndim, vy->shape);
    double *yp = ad__malloc((size_t)(m ? m : 1) * sizeof(double)), *ym = ad__malloc((size_t)(m ? m : 1) * sizeof(double));
    ad_var *g = ad__malloc((size_t)c->n * sizeof(ad_var));
    double *an = ad__calloc((size_t)c->n + 1, sizeof(double));
    ad_tensor **u = ad__calloc((size_t)c->n + 1, sizeof(ad_tensor *));
    ad_status s = AD_OK;
    if (!v || !yp || !ym || !g || !an || !u) {
        s = fail(c, AD_ERR_NOMEM, "out of memory%s", "");
        goto done;
    }
    ad_rng_fill_normal(&rng, v, 0, 1);
    for (int i = 0; i < c->n; i++) {
        u[i] = ad_tensor_new(AD_F64, c->work[i]->ndim, c->work[i]->shape);
        if (!u[i]) {
            s = fail(c, AD_ERR_NOMEM, "out of memory%s", "");
            goto done;
        }
        ad_rng_fill_normal(&rng, u[i], 0, 1);
    }
    /* analytic: g_i = v^T J_i, then (v^T J_i) u_i */
    ad_var seed = ad_const(t, v);
    s = ad_gradients_seed(y, seed, c->n, c->xs, g, 0);
    if (s != AD_OK) {
        s = fail(c, s, "the backward pass failed: %s", ad_tape_error(t));
        goto done;
    }
    for (int i = 0; i < c->n; i++) {
        const double *gi = ad__val(g[i])->data, *ui = u[i]->data;
        for (int64_t j = 0; j < u[i]->size; j++) an[i] += gi[j] * ui[j];
    }
    /* numeric: v^T (f(x + eps u_i) - f(x - eps u_i)) / (2 eps), per input */
    double worst = -INFINITY;
    bool pass = true;
    for (int i = 0; i < c->n; i++) {
        double *x = c->work[i]->data;
        const double *ui = u[i]->data;
        int64_t sz = c->work[i]->size;
        for (int64_t j = 0; j < sz; j++) x[j] += c->o.eps * ui[j];
        s = eval_values(c, yp, m);
        for (int64_t j = 0; j < sz; j++) x[j] -= 2 * c->o.eps * ui[j];
        if (s == AD_OK) s = eval_values(c, ym, m);
        for (int64_t j = 0; j < sz; j++) x[j] += c->o.eps * ui[j];
        if (s != AD_OK) goto done;
        double nu = 0;
        const double *vv = v->data;
        for (int64_t r = 0; r < m; r++) nu += vv[r] * (yp[r] - ym[r]) / (2.0 * c->o.eps);
        if (an[i] == 0 && nu == 0 && m > 0 && sz > 0) independent(c, i);
        if (!compare(c, an[i], nu, i, -1, -1, &worst)) pass = false;
    }
    s = pass ? AD_OK : AD_ERR_NUMERIC;
done:
    for (int i = 0; u && i < c->n; i++) ad_tensor_free(u[i]);
    ad__free(u);
    ad__free(an);
    ad__free(g);
    ad__free(yp);
    ad__free(ym);
    ad_tensor_free(v);
    return s;
}

ad_status ad_gradcheck(ad_fn f, void *ctx, int n, const ad_tensor *const *inputs, const ad_check_opts *opts,
                       ad_check_report *rep)
{
    ad_check_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    *rep = (ad_check_report){.status = AD_OK, .input = -1, .element = -1, .output = -1, .order = 1,
                             .independent_input = -1};
    checker c = {f, ctx, n, NULL, NULL, NULL, opts ? *opts : ad_check_defaults(), rep};
    if (!f || n < 0 || (n > 0 && !inputs)) return fail(&c, AD_ERR_ARG, "ad_gradcheck: %s", !f ? "f is NULL" : "bad inputs");
    if (!(c.o.eps > 0) || !(c.o.atol >= 0) || !(c.o.rtol >= 0))
        return fail(&c, AD_ERR_ARG, "ad_gradcheck: eps must be positive and tolerances non-negative%s", "");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!inputs[i]) return fail(&c, AD_ERR_ARG, "ad_gradcheck: an input is NULL%s", "");
        if (inputs[i]->dtype != AD_F64) {
            rep->input = i;
            return fail(&c, AD_ERR_DTYPE, "ad_gradcheck: input is %s; gradient checks need f64 inputs",
                        ad_dtype_name(inputs[i]->dtype));
        }
        total += inputs[i]->size;
    }
    ad_status s = AD_OK;
    c.work = ad__calloc((size_t)n + 1, sizeof(ad_tensor *));
    c.xs = ad__calloc((size_t)n + 1, sizeof(ad_var));
    c.tape = ad_tape_new();
    if (!c.work || !c.xs || !c.tape) {
        s = fail(&c, AD_ERR_NOMEM, "out of memory%s", "");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        c.work[i] = ad_tensor_clone(inputs[i]);
        if (!c.work[i]) {
            s = fail(&c, AD_ERR_NOMEM, "out of memory%s", "");
            goto done;
        }
    }
    ad_var y;
    s = eval(&c, &y);
    if (s != AD_OK) goto done;
    int64_t m = ad__val(y)->size;
    s = c.o.fast_mode ? fast_mode(&c, y, m) : slow_mode(&c, y, m, total);
done:
    rep->status = s;
    for (int i = 0; c.work && i < n; i++) ad_tensor_free(c.work[i]);
    ad__free(c.work);
    ad__free(c.xs);
    ad_tape_free(c.tape);
    return s;
}

/* ---- second order: gradcheck of x -> v . df/dx, recorded with AD_CREATE_GRAPH ---- */

typedef struct gg_ctx {
    ad_fn f;
    void *ctx;
    int n;
    const ad_tensor *v; /* fixed random dL/dy */
} gg_ctx;

static ad_var first_derivative(ad_tape *t, const ad_var *xs, void *p)
{
    gg_ctx *g = p;
    ad_var y = g->f(t, xs, g->ctx);
    if (!ad_ok(y)) return y;
    ad_var s = ad_sum(ad_mul(y, ad_const(t, g->v)));
    ad_var small[8], *gr = g->n <= 8 ? small : ad__arena_alloc(t, (size_t)g->n * sizeof(ad_var));
    if (!gr) return ad__invalid(t);
    if (ad_gradients(s, g->n, xs, gr, AD_CREATE_GRAPH) != AD_OK) return ad__invalid(t);
    for (int i = 0; i < g->n; i++) gr[i] = ad_reshape(gr[i], 1, (const int64_t[]){-1});
    return ad_concat(g->n, gr, 0);
}

ad_status ad_gradgradcheck(ad_fn f, void *ctx, int n, const ad_tensor *const *inputs, const ad_check_opts *opts,
                           ad_check_report *rep)
{
    ad_check_report local;
    if (!rep) rep = &local;
    *rep = (ad_check_report){.status = AD_OK, .input = -1, .element = -1, .output = -1, .order = 2,
                             .independent_input = -1};
    if (!f || n <= 0 || !inputs) {
        rep->status = AD_ERR_ARG;
        snprintf(rep->message, sizeof rep->message, "ad_gradgradcheck: %s", !f ? "f is NULL" : "no inputs");
        return AD_ERR_ARG;
    }
    /* one probe evaluation for the output's shape */
    ad_tape *t = ad_tape_new();
    ad_var *xs = ad__calloc((size_t)n, sizeof(ad_var));
    ad_tensor *v = NULL;
    ad_status s = AD_OK;
    if (!t || !xs) {
        s = AD_ERR_NOMEM;
        snprintf(rep->message, sizeof rep->message, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) xs[i] = ad_leaf(t, inputs[i]);
    ad_var y = f(t, xs, ctx);
    if (!ad_ok(y)) {
        s = ad_tape_status(t) ? ad_tape_status(t) : AD_ERR_STATE;
        snprintf(rep->message, sizeof rep->message, "the function failed: %s", ad_tape_error(t));
        goto done;
    }
    const ad_tensor *vy = ad__val(y);
    v = ad_tensor_new(AD_F64, vy->ndim, vy->shape);
    if (!v) {
        s = AD_ERR_NOMEM;
        snprintf(rep->message, sizeof rep->message, "out of memory");
        goto done;
    }
    ad_rng rng;
    ad_rng_seed(&rng, (opts ? opts->seed : ad_check_defaults().seed) ^ 0x9e3779b97f4a7c15ULL);
    ad_rng_fill_normal(&rng, v, 0, 1);
    gg_ctx g = {f, ctx, n, v};
    s = ad_gradcheck(first_derivative, &g, n, inputs, opts, rep);
    rep->order = 2;
    goto out;
done:
    rep->status = s;
out:
    ad_tensor_free(v);
    ad__free(xs);
    ad_tape_free(t);
    return s;
}

void ad_check_report_print(const ad_check_report *rep, FILE *f)
{
    if (!rep || !f) return;
    const char *what = rep->order == 2 ? "gradgradcheck" : "gradcheck";
    if (rep->status != AD_OK && rep->status != AD_ERR_NUMERIC) {
        fprintf(f, "%s: error (%s): %s\n", what, ad_status_str(rep->status), rep->message);
        return;
    }
    fprintf(f, "%s: %s after %lld comparison%s\n", what, rep->status == AD_OK ? "passed" : "FAILED",
            (long long)rep->checked, rep->checked == 1 ? "" : "s");
    if (rep->independent_count > 0)
        fprintf(f, "  warning: the %s does not depend on input %d%s (analytic and numeric derivatives all 0): "
                   "the check says nothing about %s\n",
                rep->order == 2 ? "gradient" : "output", rep->independent_input,
                rep->independent_count > 1 ? " and others" : "", rep->independent_count > 1 ? "them" : "it");
    if (rep->input < 0) return;
    if (rep->element >= 0)
        fprintf(f, "  %s at input %d, element %lld, output element %lld:\n",
                rep->status == AD_OK ? "closest to the tolerance" : "worst mismatch", rep->input, (long long)rep->element,
                (long long)rep->output);
    else
        fprintf(f, "  %s at input %d (v^T J u):\n", rep->status == AD_OK ? "closest to the tolerance" : "worst mismatch",
                rep->input);
    fprintf(f, "  analytic %.10g  numeric %.10g  abs error %.3g  rel error %.3g\n", rep->analytic, rep->numeric,
            rep->abs_err, rep->rel_err);
}

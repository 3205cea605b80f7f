/* gradcheck_module.c: a module's gradients with respect to its parameters and its inputs against central differences, in F64. */
#include "services.h"
#include "nn.h"

#include <math.h>
#include <stdio.h>

/*
** The checked tensors ("slots") are the module's own parameter tensors, perturbed
** in place, so the forward really reads every perturbation (a check through
** leaves the module never reads would compare zeros with zeros), and copies of
** the inputs, joined as leaves. The analytic Jacobian comes from one backward
** pass per output element (gradients into the parameters' grad tensors, saved
** before and restored after), the numeric one from two forwards per element.
*/

typedef struct slot {
    ad_tensor *t;
    int input;       /* the input it copies, or -1 */
    const ad_tensor *grad; /* a parameter's grad tensor, or NULL */
    char name[96];
} slot;

typedef struct mcheck {
    nn_module *m;
    int n;
    ad_tensor **in;      /* copies of the inputs */
    const bool *wrt;     /* which inputs are checked (NULL: all) */
    ad_tape *tape;
    ad_var *xs;
    nn_param *params;
    int np;
    ad_tensor **saved;   /* per param: its grad (trainable) or value (buffer) before the check */
    slot *slots;
    int ns;
    ad_check_opts o;
    ad_check_report *rep;
} mcheck;

static ad_status fail(mcheck *c, ad_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ad_status fail(mcheck *c, ad_status s, const char *fmt, ...)
{
    c->rep->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->rep->message, sizeof c->rep->message, fmt, ap);
    va_end(ap);
    return s;
}

static bool checked_input(const mcheck *c, int i) { return !c->wrt || c->wrt[i]; }

/* Records the forward on a fresh tape; buffers (running statistics) are put back afterwards, so
** every evaluation sees the same module. *y is F64. */
static ad_status forward(mcheck *c, ad_var *y)
{
    ad_tape_reset(c->tape);
    for (int i = 0; i < c->n; i++) c->xs[i] = checked_input(c, i) ? ad_leaf(c->tape, c->in[i]) : ad_const(c->tape, c->in[i]);
    *y = nn_forward_n(c->m, c->tape, c->n, c->xs);
    for (int p = 0; p < c->np; p++)
        if (!c->params[p].grad) ad_tensor_copy(c->params[p].value, c->saved[p]);
    if (ad_tape_status(c->tape) != AD_OK)
        return fail(c, ad_tape_status(c->tape), "nn_gradcheck_module: the forward failed: %s", ad_tape_error(c->tape));
    if (ad_value(*y)->dtype != AD_F64)
        return fail(c, AD_ERR_DTYPE, "nn_gradcheck_module: the output is %s, not f64",
                    ad_dtype_name(ad_value(*y)->dtype));
    return AD_OK;
}

/* One backward pass of y with seed; the gradient of slot s into g (element by element, flat). */
static ad_status backward(mcheck *c, ad_var y, const ad_tensor *seed, double *g)
{
    for (int p = 0; p < c->np; p++)
        if (c->params[p].grad) ad_tensor_fill(c->params[p].grad, 0.0);
    ad_status st = ad_backward(y, seed, 0);
    if (st != AD_OK) return fail(c, st, "nn_gradcheck_module: backward failed: %s", ad_tape_error(c->tape));
    int64_t k = 0;
    for (int s = 0; s < c->ns; s++) {
        const slot *sl = &c->slots[s];
        const ad_tensor *gt = sl->input >= 0 ? ad_grad(c->xs[sl->input]) : sl->grad;
        for (int64_t i = 0; i < c->slots[s].t->size; i++) g[k++] = gt ? ad_tensor_get(gt, i) : 0.0;
    }
    return AD_OK;
}

/* Keeps the worst comparison (or on a pass the one closest to its tolerance); false on a mismatch. */
static bool compare(mcheck *c, int s, int64_t elem, int64_t out, double a, double num)
{
    double err = fabs(a - num), tol = c->o.atol + c->o.rtol * fabs(num);
    bool ok = err <= tol; /* NaN fails */
    ad_check_report *r = c->rep;
    double ratio = err / tol, prev = r->abs_err / (c->o.atol + c->o.rtol * fabs(r->numeric));
    if (r->input < 0 || ratio > prev || (isnan(ratio) && !isnan(prev))) {
        r->input = s;
        r->element = elem;
        r->output = out;
        r->analytic = a;
        r->numeric = num;
        r->abs_err = err;
        r->rel_err = num != 0 ? err / fabs(num) : err;
        snprintf(r->message, sizeof r->message, "%s", c->slots[s].name);
    }
    r->checked++;
    return ok;
}

static ad_status run(mcheck *c)
{
    ad_var y;
    ad_status st = forward(c, &y);
    if (st != AD_OK) return st;
    int64_t m_out = ad_value(y)->size, total = 0;
    for (int s = 0; s < c->ns; s++) total += c->slots[s].t->size;
    if (total == 0 || m_out == 0)
        return fail(c, AD_ERR_ARG, "nn_gradcheck_module: nothing to check (%lld elements, %lld outputs)",
                    (long long)total, (long long)m_out);
    const ad_tensor *yv = ad_value(y);
    ad_tensor *seed = ad_tensor_new(AD_F64, yv->ndim, yv->shape), *yp = ad_tensor_new(AD_F64, yv->ndim, yv->shape);
    double *jac = NULL, *g = ad__malloc((size_t)total * sizeof *g);
    int64_t jn = 0;
    bool fast = c->o.fast_mode;
    if (!fast && !ad__mul_ok(m_out, total, &jn)) jn = -1;
    if (!fast && (jn < 0 || jn > ((int64_t)1 << 26)))
        st = fail(c, AD_ERR_ARG, "nn_gradcheck_module: a %lld x %lld Jacobian is too large; use fast_mode",
                  (long long)m_out, (long long)total);
    else if (!seed || !yp || !g || (!fast && !(jac = ad__malloc((size_t)jn * sizeof *jac))))
        st = fail(c, AD_ERR_NOMEM, "nn_gradcheck_module: out of memory");
    ad_rng rng;
    ad_rng_seed(&rng, c->o.seed);
    double eps = c->o.eps;
    if (st == AD_OK && !fast) {
        /* analytic rows, one output element at a time */
        for (int64_t j = 0; j < m_out && st == AD_OK; j++) {
            ad_tensor_fill(seed, 0.0);
            ad_tensor_set(seed, j, 1.0);
            if ((st = forward(c, &y)) == AD_OK) st = backward(c, y, seed, jac + j * total);
        }
        /* numeric columns, one checked element at a time */
        int64_t k = 0;
        bool pass = true;
        for (int s = 0; s < c->ns && st == AD_OK; s++)
            for (int64_t i = 0; i < c->slots[s].t->size && st == AD_OK; i++, k++) {
                ad_tensor *x = c->slots[s].t;
                double orig = ad_tensor_get(x, i);
                ad_tensor_set(x, i, orig + eps);
                if ((st = forward(c, &y)) == AD_OK) ad_tensor_copy(yp, ad_value(y));
                ad_tensor_set(x, i, orig - eps);
                if (st == AD_OK) st = forward(c, &y);
                ad_tensor_set(x, i, orig);
                for (int64_t j = 0; j < m_out && st == AD_OK; j++) {
                    double num = (ad_tensor_get(yp, j) - ad_tensor_get(ad_value(y), j)) / (2 * eps);
                    pass &= compare(c, s, i, j, jac[j * total + k], num);
                }
            }
        if (st == AD_OK && !pass) st = AD_ERR_NUMERIC;
    } else if (st == AD_OK) {
        /* v^T J u for random u (every checked element at once) and v */
        double *u = g, analytic = 0, num = 0;
        for (int64_t j = 0; j < m_out; j++) ad_tensor_set(seed, j, ad_rng_uniform(&rng) * 2 - 1);
        if ((st = forward(c, &y)) == AD_OK) st = backward(c, y, seed, g);
        double *gg = st == AD_OK ? ad__malloc((size_t)total * sizeof *gg) : NULL;
        if (st == AD_OK && !gg) st = fail(c, AD_ERR_NOMEM, "nn_gradcheck_module: out of memory");
        if (st == AD_OK) {
            memcpy(gg, g, (size_t)total * sizeof *gg);
            for (int64_t k = 0; k < total; k++) u[k] = ad_rng_uniform(&rng) * 2 - 1;
            for (int64_t k = 0; k < total; k++) analytic += gg[k] * u[k];
            for (int sign = 1; sign >= -1 && st == AD_OK; sign -= 2) {
                int64_t k = 0;
                for (int s = 0; s < c->ns; s++)
                    for (int64_t i = 0; i < c->slots[s].t->size; i++, k++)
                        ad_tensor_set(c->slots[s].t, i, ad_tensor_get(c->slots[s].t, i) + sign * eps * u[k]);
                if ((st = forward(c, &y)) == AD_OK)
                    for (int64_t j = 0; j < m_out; j++) num += sign * ad_tensor_get(ad_value(y), j) * ad_tensor_get(seed, j);
                k = 0;
                for (int s = 0; s < c->ns; s++)
                    for (int64_t i = 0; i < c->slots[s].t->size; i++, k++)
                        ad_tensor_set(c->slots[s].t, i, ad_tensor_get(c->slots[s].t, i) - sign * eps * u[k]);
            }
            if (st == AD_OK && !compare(c, 0, -1, -1, analytic, num / (2 * eps))) st = AD_ERR_NUMERIC;
            if (st == AD_OK || st == AD_ERR_NUMERIC) snprintf(c->rep->message, sizeof c->rep->message, "v^T J u over all");
        }
        ad__free(gg);
    }
    if (st == AD_ERR_NUMERIC) c->rep->status = st;
    ad_tensor_free(seed);
    ad_tensor_free(yp);
    ad__free(jac);
    ad__free(g);
    return st;
}

ad_status nn_gradcheck_module_n(nn_module *m, int n, const ad_tensor *const *inputs, const bool *wrt_input,
                                const ad_check_opts *opts, ad_check_report *rep)
{
    ad_check_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    rep->input = -1;
    rep->element = rep->output = -1;
    rep->order = 1;
    mcheck c = {m, n, NULL, wrt_input, NULL, NULL, NULL, 0, NULL, NULL, 0, opts ? *opts : ad_check_defaults(), rep};
    if (!m || n < 1 || !inputs) return fail(&c, AD_ERR_ARG, "nn_gradcheck_module: NULL module or inputs");
    if (!(c.o.eps > 0)) return fail(&c, AD_ERR_ARG, "nn_gradcheck_module: eps %g must be > 0", c.o.eps);
    for (int i = 0; i < n; i++) {
        if (!inputs[i]) return fail(&c, AD_ERR_ARG, "nn_gradcheck_module: input %d is NULL", i);
        if (checked_input(&c, i) && inputs[i]->dtype != AD_F64)
            return fail(&c, AD_ERR_DTYPE, "nn_gradcheck_module: input %d is %s, not f64", i,
                        ad_dtype_name(inputs[i]->dtype));
    }
    c.np = nn_module_params(m, &c.params);
    for (int p = 0; p < c.np; p++)
        if (c.params[p].value->dtype != AD_F64)
            return fail(&c, AD_ERR_DTYPE,
                        "nn_gradcheck_module: parameter '%s' is %s: construct the module with AD_F64",
                        c.params[p].name, ad_dtype_name(c.params[p].value->dtype));
    ad_status st = AD_OK;
    c.in = ad__calloc((size_t)n, sizeof *c.in);
    c.xs = ad__calloc((size_t)n, sizeof *c.xs);
    c.saved = ad__calloc((size_t)c.np + 1, sizeof *c.saved);
    c.slots = ad__calloc((size_t)(n + c.np), sizeof *c.slots);
    c.tape = ad_tape_new();
    bool ok = c.in && c.xs && c.saved && c.slots && c.tape;
    for (int i = 0; ok && i < n; i++) ok = (c.in[i] = ad_tensor_clone(inputs[i])) != NULL;
    for (int p = 0; ok && p < c.np; p++)
        ok = (c.saved[p] = ad_tensor_clone(c.params[p].grad ? c.params[p].grad : c.params[p].value)) != NULL;
    if (!ok) {
        st = fail(&c, AD_ERR_NOMEM, "nn_gradcheck_module: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (checked_input(&c, i)) {
            c.slots[c.ns].t = c.in[i];
            c.slots[c.ns].input = i;
            snprintf(c.slots[c.ns++].name, sizeof c.slots[0].name, "input %d", i);
        }
    for (int p = 0; p < c.np; p++)
        if (c.params[p].grad && c.params[p].requires_grad) {
            c.slots[c.ns].t = c.params[p].value;
            c.slots[c.ns].input = -1;
            c.slots[c.ns].grad = c.params[p].grad;
            snprintf(c.slots[c.ns++].name, sizeof c.slots[0].name, "parameter '%s'", c.params[p].name);
        }
    st = run(&c);
done:
    for (int p = 0; c.saved && p < c.np; p++) {
        if (c.saved[p]) ad_tensor_copy(c.params[p].grad ? c.params[p].grad : c.params[p].value, c.saved[p]);
        ad_tensor_free(c.saved[p]);
    }
    for (int i = 0; c.in && i < n; i++) ad_tensor_free(c.in[i]);
    ad__free(c.in);
    ad__free(c.xs);
    ad__free(c.saved);
    ad__free(c.slots);
    ad_tape_free(c.tape);
    if (st == AD_OK) rep->status = AD_OK;
    return st;
}

ad_status nn_gradcheck_module(nn_module *m, const ad_tensor *input, const ad_check_opts *opts, ad_check_report *rep)
{
    return nn_gradcheck_module_n(m, 1, &input, NULL, opts, rep);
}

/* optim.c: optimizers over any list of parameters: a table of kinds (SGD, Adam, AdamW, RMSprop, L-BFGS), parameter groups. */
#include "nn_internal.h"
#include "optim_internal.h"

#include <math.h>
#include <stdio.h>

/* ---- the elementwise updates, once per element type ---- */

#define T float
#define SFX f32
#define SQRT sqrtf
#include "optim_update.inc"
#undef T
#undef SFX
#undef SQRT
#define T double
#define SFX f64
#define SQRT sqrt
#include "optim_update.inc"
#undef T
#undef SFX
#undef SQRT

/* ---- the kinds ---- */

static ad_status check_common(const char *kind, const nn_optim_opts *o, nn_error *err)
{
    if (!(o->lr >= 0) || !isfinite(o->lr))
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(%s): lr %g must be finite and >= 0", kind, o->lr);
    if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(%s): weight_decay %g must be finite and >= 0", kind,
                            o->weight_decay);
    return AD_OK;
}

static ad_status sgd_check(const nn_optim_opts *o, nn_error *err)
{
    if (!(o->momentum >= 0) || !isfinite(o->momentum))
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(sgd): momentum %g must be finite and >= 0", o->momentum);
    if (o->nesterov && o->momentum == 0)
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(sgd): Nesterov needs momentum > 0");
    return check_common("sgd", o, err);
}

static ad_status adam_check(const nn_optim_opts *o, nn_error *err)
{
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps >= 0) || !isfinite(o->eps))
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_new(adam): betas %g, %g must be in [0, 1) and eps %g >= 0",
                            o->beta1, o->beta2, o->eps);
    return check_common("adam", o, err);
}

static ad_status rmsprop_check(const nn_optim_opts *o, nn_error *err)
{
    if (!(o->alpha >= 0 && o->alpha < 1) || !(o->eps > 0) || !isfinite(o->eps) || !(o->momentum >= 0) ||
        !isfinite(o->momentum))
        return nn_error_set(err, AD_ERR_ARG,
                            "nn_optim_new(rmsprop): alpha %g must be in [0, 1), eps %g > 0, momentum %g >= 0", o->alpha,
                            o->eps, o->momentum);
    return check_common("rmsprop", o, err);
}

static bool sgd_slot(const nn_optim_opts *o, int slot) { return slot == 0 && o->momentum != 0; }
static bool rmsprop_slot(const nn_optim_opts *o, int slot)
{
    return slot == 0 || (slot == 1 && o->momentum != 0) || (slot == 2 && o->centered);
}

static const optim_kind kinds[] = {
    {"sgd", 1, {".momentum"}, sgd_check, sgd_slot, sgd_f32, sgd_f64, NULL, NULL, NULL, false, false},
    {"adam", 2, {".m", ".v"}, adam_check, NULL, adam_f32, adam_f64, NULL, NULL, NULL, false, true},
    {"adamw", 2, {".m", ".v"}, adam_check, NULL, adam_f32, adam_f64, NULL, NULL, NULL, true, true},
    {"rmsprop", 3, {".square_avg", ".momentum", ".grad_avg"}, rmsprop_check, rmsprop_slot, rmsprop_f32, rmsprop_f64,
     NULL, NULL, NULL, false, false},
    {"lbfgs", 0, {NULL}, nn__lbfgs_check, NULL, NULL, NULL, nn__lbfgs_step, nn__lbfgs_state_out, nn__lbfgs_state_in,
     false, false},
};
#define NKINDS ((int)(sizeof kinds / sizeof kinds[0]))

static const optim_kind *kind_named(const char *name)
{
    for (int i = 0; name && i < NKINDS; i++)
        if (strcmp(kinds[i].name, name) == 0) return &kinds[i];
    return NULL;
}

nn_optim_opts nn_optim_defaults(const char *kind)
{
    nn_optim_opts o;
    memset(&o, 0, sizeof o);
    o.lr = 1e-3;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.alpha = 0.99;
    o.history = 10;
    o.max_iter = 20;
    o.tolerance_grad = 1e-7;
    o.tolerance_change = 1e-9;
    o.line_search = true;
    if (kind && strcmp(kind, "sgd") == 0) o.lr = 1e-2;
    if (kind && strcmp(kind, "adamw") == 0) o.weight_decay = 1e-2;
    if (kind && strcmp(kind, "rmsprop") == 0) o.lr = 1e-2;
    if (kind && strcmp(kind, "lbfgs") == 0) o.lr = 1.0;
    return o;
}

/* ---- construction ---- */

void nn_optim_free(nn_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        for (int k = 0; k < NN__OPTIM_SLOTS; k++) ad_tensor_free(o->slots[i].s[k]);
        ad_tensor_free(o->slots[i].steps);
    }
    for (int i = 0; i < o->nstate; i++) ad__free(o->state_names[i]);
    if (o->kind && o->kind->step) nn__lbfgs_free(o);
    ad__free(o->state_names);
    ad__free(o->state);
    ad__free(o->slots);
    ad__free(o->params);
    ad__free(o->groups);
    ad_tensor_free(o->step_t);
    ad__free(o);
}

/* Adds params[0..n) to o in group g, with their state tensors. */
static ad_status add_params(nn_optim *o, int g, int n, nn_param *const *params, nn_error *err)
{
    const char *kn = o->kind->name;
    for (int i = 0; i < n; i++) {
        const nn_param *p = params[i];
        if (!p || !p->value || !p->grad || !p->name)
            return nn_error_set(err, AD_ERR_ARG, "nn_optim(%s): parameter %d is NULL or a buffer (no grad)", kn, i);
        if (p->value->dtype != AD_F32 && p->value->dtype != AD_F64)
            return nn_error_set(err, AD_ERR_DTYPE, "nn_optim(%s): '%s' is not F32 or F64", kn, p->name);
        for (int j = 0; j < o->n; j++)
            if (o->params[j]->value == p->value)
                return nn_error_set(err, AD_ERR_ARG, "nn_optim(%s): '%s' is given twice", kn, p->name);
    }
    nn_param **ps = ad__realloc(o->params, (size_t)(o->n + n + 1) * sizeof *ps);
    if (ps) o->params = ps;
    param_slots *sl = ps ? ad__realloc(o->slots, (size_t)(o->n + n + 1) * sizeof *sl) : NULL;
    if (sl) o->slots = sl;
    if (!ps || !sl) return nn_error_set(err, AD_ERR_NOMEM, "nn_optim(%s): out of memory", kn);
    for (int i = 0; i < n; i++) {
        nn_param *p = params[i];
        param_slots *s = &o->slots[o->n];
        memset(s, 0, sizeof *s);
        s->group = g;
        o->params[o->n++] = p;
        for (int k = 0; k < o->kind->nslots; k++) {
            if (o->kind->slot_used && !o->kind->slot_used(&o->opts, k)) continue;
            ad_tensor *t = ad_tensor_new(p->value->dtype, p->value->ndim, p->value->shape);
            if (!t || !nn__optim_add_state(o, p->name, o->kind->slot_suffix[k], t)) {
                ad_tensor_free(t);
                return nn_error_set(err, AD_ERR_NOMEM, "nn_optim(%s): out of memory for the state of '%s'", kn,
                                    p->name);
            }
            s->s[k] = t;
        }
        if (o->kind->param_steps) {
            ad_tensor *t = ad_tensor_new(AD_F64, AD_SHAPE(1));
            if (!t || !nn__optim_add_state(o, p->name, ".step", t)) {
                ad_tensor_free(t);
                return nn_error_set(err, AD_ERR_NOMEM, "nn_optim(%s): out of memory for the state of '%s'", kn,
                                    p->name);
            }
            s->steps = t;
        }
    }
    return AD_OK;
}

nn_optim *nn_optim_new(const char *kind, int n, nn_param *const *params, const nn_optim_opts *opts, nn_error *err)
{
    const optim_kind *k = kind_named(kind);
    if (!k) {
        nn_error_set(err, AD_ERR_ARG, "nn_optim_new: unknown kind '%s' (sgd, adam, adamw, rmsprop, lbfgs)",
                     kind ? kind : "(null)");
        return NULL;
    }
    if (n < 0 || (n > 0 && !params)) {
        nn_error_set(err, AD_ERR_ARG, "nn_optim_new(%s): %d parameters at %p", kind, n, (const void *)params);
        return NULL;
    }
    nn_optim_opts o = opts ? *opts : nn_optim_defaults(kind);
    if (k->check(&o, err) != AD_OK) return NULL;
    nn_optim *opt = ad__calloc(1, sizeof *opt);
    if (opt) {
        opt->kind = k;
        opt->opts = o;
        opt->groups = ad__calloc(1, sizeof *opt->groups);
        opt->step_t = ad_tensor_new(AD_F64, AD_SHAPE(1));
    }
    if (!opt || !opt->groups || !opt->step_t || !nn__optim_add_state(opt, "step", "", opt->step_t)) {
        nn_optim_free(opt);
        nn_error_set(err, AD_ERR_NOMEM, "nn_optim_new(%s): out of memory", kind);
        return NULL;
    }
    opt->ngroups = 1;
    opt->groups[0] = (optim_group){o.lr, o.weight_decay, o.lr};
    if (add_params(opt, 0, n, params, err) != AD_OK || (k->step && nn__lbfgs_init(opt, err) != AD_OK)) {
        nn_optim_free(opt);
        return NULL;
    }
    return opt;
}

ad_status nn_optim_add_group(nn_optim *o, int n, nn_param *const *params, double lr, double weight_decay,
                             nn_error *err)
{
    if (!o || n < 1 || !params)
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_add_group: NULL optimizer or no parameters");
    if (o->kind->step)
        return nn_error_set(err, AD_ERR_UNSUPPORTED, "nn_optim_add_group(%s): one group only", o->kind->name);
    if (!(lr >= 0) || !isfinite(lr) || !(weight_decay >= 0) || !isfinite(weight_decay))
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_add_group(%s): lr %g and weight_decay %g must be finite, >= 0",
                            o->kind->name, lr, weight_decay);
    optim_group *g = ad__realloc(o->groups, (size_t)(o->ngroups + 1) * sizeof *g);
    if (!g) return nn_error_set(err, AD_ERR_NOMEM, "nn_optim_add_group: out of memory");
    o->groups = g;
    int before = o->n, before_state = o->nstate;
    /* the group's lr follows the schedule in proportion to the first group's */
    double scale = o->groups[0].base_lr > 0 ? o->groups[0].lr / o->groups[0].base_lr : 1.0;
    g[o->ngroups] = (optim_group){lr * scale, weight_decay, lr};
    ad_status st = add_params(o, o->ngroups, n, params, err);
    if (st != AD_OK) { /* undo: the optimizer is as it was */
        for (int i = before; i < o->n; i++) {
            for (int k = 0; k < NN__OPTIM_SLOTS; k++) ad_tensor_free(o->slots[i].s[k]);
            ad_tensor_free(o->slots[i].steps);
        }
        for (int i = before_state; i < o->nstate; i++) ad__free(o->state_names[i]);
        o->n = before;
        o->nstate = before_state;
        return st;
    }
    o->ngroups++;
    return AD_OK;
}

nn_optim *nn_optim_for(const char *kind, nn_module *m, const nn_optim_opts *opts, nn_error *err)
{
    if (!m) {
        nn_error_set(err, AD_ERR_ARG, "nn_optim_for(%s): NULL module", kind ? kind : "(null)");
        return NULL;
    }
    nn_param *ps;
    int np = nn_module_params(m, &ps), n = 0;
    nn_param **list = ad__malloc((size_t)(np + 1) * sizeof *list);
    if (!list) {
        nn_error_set(err, AD_ERR_NOMEM, "nn_optim_for: out of memory");
        return NULL;
    }
    for (int i = 0; i < np; i++)
        if (ps[i].grad) list[n++] = &ps[i];
    nn_optim *o = nn_optim_new(kind, n, list, opts, err);
    ad__free(list);
    return o;
}

nn_optim *nn_sgd(nn_module *m, double lr, double momentum, double weight_decay, bool nesterov, nn_error *err)
{
    nn_optim_opts o = nn_optim_defaults("sgd");
    o.lr = lr, o.momentum = momentum, o.weight_decay = weight_decay, o.nesterov = nesterov;
    return nn_optim_for("sgd", m, &o, err);
}

static nn_optim *adam_for(const char *kind, nn_module *m, double lr, double b1, double b2, double eps, double wd,
                          nn_error *err)
{
    nn_optim_opts o = nn_optim_defaults(kind);
    o.lr = lr, o.beta1 = b1, o.beta2 = b2, o.eps = eps, o.weight_decay = wd;
    return nn_optim_for(kind, m, &o, err);
}

nn_optim *nn_adam(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay, nn_error *err)
{
    return adam_for("adam", m, lr, beta1, beta2, eps, weight_decay, err);
}

nn_optim *nn_adamw(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay, nn_error *err)
{
    return adam_for("adamw", m, lr, beta1, beta2, eps, weight_decay, err);
}

/* ---- the elementwise step ---- */

/* With several threads (ad_set_num_threads), each thread checks and updates a fixed, contiguous
** share of every large parameter: the same share at every step, so its moments stay in that
** thread's cache, and the matrix products cut each weight the same way (gemm.c). The updates are
** elementwise, so the result does not depend on the split. */
#define SPLIT_MIN 4096 /* parameters smaller than this stay whole on the first thread */
#define SPLIT_ALIGN 16 /* share boundaries on multiples of this many elements */

typedef struct step_job {
    nn_optim *o;
    const hyper *h;            /* per group */
    bool check;                /* the finite check; else the update */
    bool zero;                 /* (nn__optim_zero_grads) zero the gradients instead */
    bool bad[AD__MAX_THREADS]; /* the check's verdict, per thread */
} step_job;

/* Thread tid's share [lo, hi) of a parameter of n elements. */
static void share(int64_t n, int tid, int nth, int64_t *lo, int64_t *hi)
{
    if (n < SPLIT_MIN) {
        *lo = 0, *hi = tid == 0 ? n : 0;
        return;
    }
    int64_t units = (n + SPLIT_ALIGN - 1) / SPLIT_ALIGN;
    *lo = units * tid / nth * SPLIT_ALIGN;
    *hi = units * (tid + 1) / nth * SPLIT_ALIGN;
    if (*hi > n) *hi = n;
}

static void step_share(void *ctx, int tid, int nth)
{
    step_job *j = ctx;
    nn_optim *o = j->o;
    for (int i = 0; i < o->n; i++) {
        const nn_param *prm = o->params[i];
        if (j->zero) {
            ad_tensor *g = prm->grad;
            int64_t lo, hi;
            share(g ? g->size : 0, tid, nth, &lo, &hi);
            size_t es = g ? ad_dtype_size(g->dtype) : 0;
            if (lo < hi) memset((char *)g->data + (size_t)lo * es, 0, (size_t)(hi - lo) * es); /* +0.0 */
            continue;
        }
        if (!prm->requires_grad) continue;
        ad_tensor *p = prm->value, *g = prm->grad;
        int64_t lo, hi;
        share(p->size, tid, nth, &lo, &hi);
        if (lo >= hi) continue;
        int64_t n = hi - lo;
        if (j->check) {
            ad_tensor part = *g; /* a view of the share, for the check */
            part.data = (char *)g->data + (size_t)lo * ad_dtype_size(g->dtype);
            part.size = n;
            if (!ad__all_finite(&part)) j->bad[tid] = true;
            continue;
        }
        const hyper *h = &j->h[o->slots[i].group];
        hyper own;
        if (o->slots[i].steps) { /* its own count: a parameter unfrozen or added later starts at 1 */
            own = *h;
            own.step = nn__optim_param_steps(&o->slots[i]);
            h = &own;
        }
        if (p->dtype == AD_F32) {
            float *s[NN__OPTIM_SLOTS];
            for (int k = 0; k < NN__OPTIM_SLOTS; k++) s[k] = o->slots[i].s[k] ? (float *)o->slots[i].s[k]->data + lo : NULL;
            o->kind->update_f32(h, (float *)p->data + lo, (const float *)g->data + lo, s, n);
        } else {
            double *s[NN__OPTIM_SLOTS];
            for (int k = 0; k < NN__OPTIM_SLOTS; k++)
                s[k] = o->slots[i].s[k] ? (double *)o->slots[i].s[k]->data + lo : NULL;
            o->kind->update_f64(h, (double *)p->data + lo, (const double *)g->data + lo, s, n);
        }
    }
}

/* Names the first trainable parameter whose gradient holds NaN or Inf. */
static ad_status nonfinite(nn_optim *o, nn_error *err)
{
    for (int i = 0; i < o->n; i++)
        if (o->params[i]->requires_grad && !ad__all_finite(o->params[i]->grad))
            return nn_error_set(err, AD_ERR_NUMERIC, "nn_optim_step(%s): the gradient of '%s' holds NaN or Inf; nothing updated",
                                o->kind->name, o->params[i]->name);
    return nn_error_set(err, AD_ERR_NUMERIC, "nn_optim_step(%s): a gradient holds NaN or Inf; nothing updated",
                        o->kind->name);
}

/* The threads for a pass over o's parameters: 1 when they are few. */
static int step_threads(const nn_optim *o)
{
    int nth = ad_get_num_threads();
    if (nth > 1) {
        int64_t total = 0;
        for (int i = 0; i < o->n; i++) total += o->params[i]->value->size;
        if (total < 2 * SPLIT_MIN) nth = 1;
    }
    return nth > AD__MAX_THREADS ? AD__MAX_THREADS : nth;
}

void nn__optim_zero_grads(nn_optim *o)
{
    for (int i = 0; i < o->n; i++)
        if (o->params[i]->grad) ad_tensor_bump_version(o->params[i]->grad);
    step_job j = {.o = o, .zero = true};
    int nth = step_threads(o);
    if (nth > 1)
        ad__parallel(nth, step_share, &j);
    else
        step_share(&j, 0, 1);
}

ad_status nn_optim_step(nn_optim *o, nn_error *err)
{
    if (!o) return nn_error_set(err, AD_ERR_ARG, "nn_optim_step: NULL optimizer");
    if (o->kind->step)
        return nn_error_set(err, AD_ERR_ARG, "nn_optim_step(%s): needs the loss again and again: use nn_optim_minimize",
                            o->kind->name);
    int nth = step_threads(o);
    enum { FEW = 8 };
    hyper few[FEW], *h = o->ngroups <= FEW ? few : ad__malloc((size_t)o->ngroups * sizeof *h);
    if (!h) return nn_error_set(err, AD_ERR_NOMEM, "nn_optim_step: out of memory");
    step_job j = {.o = o, .h = h, .check = true};
    ad_status st = AD_OK;
    if (nth > 1) {
        ad__parallel(nth, step_share, &j);
        for (int t = 0; t < nth; t++)
            if (j.bad[t]) st = nonfinite(o, err);
    } else {
        step_share(&j, 0, 1);
        if (j.bad[0]) st = nonfinite(o, err);
    }
    if (st == AD_OK) {
        o->step++;
        for (int i = 0; i < o->n; i++) {
            ad_tensor_bump_version(o->params[i]->value); /* written below */
            if (o->slots[i].steps && o->params[i]->requires_grad)
                ((double *)o->slots[i].steps->data)[0] = (double)(nn__optim_param_steps(&o->slots[i]) + 1);
        }
        for (int g = 0; g < o->ngroups; g++)
            h[g] = (hyper){.lr = o->groups[g].lr, .wd = o->groups[g].weight_decay, .momentum = o->opts.momentum,
                           .nesterov = o->opts.nesterov, .beta1 = o->opts.beta1, .beta2 = o->opts.beta2,
                           .eps = o->opts.eps, .alpha = o->opts.alpha, .step = o->step,
                           .decoupled = o->kind->decoupled};
        j.check = false;
        if (nth > 1) ad__parallel(nth, step_share, &j);
        else step_share(&j, 0, 1);
    }
    if (h != few) ad__free(h);
    return st;
}

ad_status nn_optim_minimize(nn_optim *o, nn_closure fn, void *ctx, double *loss, nn_error *err)
{
    if (!o || !fn) return nn_error_set(err, AD_ERR_ARG, "nn_optim_minimize: NULL optimizer or closure");
    if (o->kind->step) {
        ad_status st = o->kind->step(o, fn, ctx, loss, err);
        for (int i = 0; i < o->n; i++) ad_tensor_bump_version(o->params[i]->value); /* it wrote them */
        return st;
    }
    /* a first-order kind: one evaluation, one update */
    nn__optim_zero_grads(o);
    double l = NAN;
    ad_status st = fn(ctx, &l, err);
    if (loss) *loss = l;
    if (st != AD_OK) return st;
    return nn_optim_step(o, err);
}

/* ---- accessors ---- */

double nn_optim_lr(const nn_optim *o) { return o ? o->groups[0].lr : 0.0; }

void nn_optim_set_lr(nn_optim *o, double lr)
{
    if (!o || !(lr >= 0) || !isfinite(lr)) return;
    double base = o->groups[0].base_lr;
    for (int g = 0; g < o->ngroups; g++) o->groups[g].lr = base > 0 ? o->groups[g].base_lr * (lr / base) : lr;
}

double nn_optim_group_lr(const nn_optim *o, int group)
{
    return o && group >= 0 && group < o->ngroups ? o->groups[group].lr : NAN;
}

int nn_optim_num_groups(const nn_optim *o) { return o ? o->ngroups : 0; }
int64_t nn_optim_steps(const nn_optim *o) { return o ? o->step : 0; }
const char *nn_optim_name(const nn_optim *o) { return o ? o->kind->name : "none"; }

int nn_optim_params(const nn_optim *o, nn_param *const **out)
{
    if (out) *out = o ? o->params : NULL;
    return o ? o->n : 0;
}


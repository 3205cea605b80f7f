/* sched.c: learning-rate schedules stepped per optimizer step (nn_sched): constant, step, cosine, warmup_cosine, onecycle. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

#define PI 3.14159265358979323846

typedef enum sched_kind { S_CONSTANT, S_STEP, S_COSINE, S_WARMUP_COSINE, S_ONECYCLE } sched_kind;

static const char *const kind_names[] = {"constant", "step", "cosine", "warmup_cosine", "onecycle"};

struct nn_sched {
    sched_kind kind;
    nn_sched_opts o;
};

nn_sched_opts nn_sched_defaults(double lr, int64_t total_steps)
{
    return (nn_sched_opts){.lr = lr, .total_steps = total_steps, .warmup_steps = total_steps / 20, .min_lr = 0.0,
                           .step_size = total_steps > 3 ? total_steps / 3 : 1, .gamma = 0.1, .pct_start = 0.3,
                           .div_factor = 25.0, .final_div_factor = 1e4};
}

nn_sched *nn_sched_new(const char *kind, const nn_sched_opts *opts, nn_error *err)
{
    int k = -1;
    for (int i = 0; kind && i < (int)(sizeof kind_names / sizeof kind_names[0]); i++)
        if (strcmp(kind, kind_names[i]) == 0) k = i;
    if (k < 0 || !opts) {
        nn_error_set(err, AD_ERR_ARG, "nn_sched_new: %s '%s' (constant, step, cosine, warmup_cosine, onecycle)",
                     opts ? "unknown kind" : "NULL opts for", kind ? kind : "(null)");
        return NULL;
    }
    const nn_sched_opts *o = opts;
    const char *bad = NULL;
    if (!(o->lr >= 0) || !isfinite(o->lr) || !(o->min_lr >= 0) || !isfinite(o->min_lr)) bad = "lr and min_lr must be finite and >= 0";
    else if (k == S_STEP && (o->step_size < 1 || !(o->gamma > 0) || !isfinite(o->gamma)))
        bad = "step needs step_size >= 1 and gamma > 0";
    else if ((k == S_COSINE || k == S_WARMUP_COSINE || k == S_ONECYCLE) && o->total_steps < 1)
        bad = "total_steps must be >= 1";
    else if (k == S_WARMUP_COSINE && (o->warmup_steps < 0 || o->warmup_steps > o->total_steps))
        bad = "warmup_steps must be in [0, total_steps]";
    else if (k == S_ONECYCLE && (!(o->pct_start > 0 && o->pct_start < 1) || !(o->div_factor >= 1) ||
                                 !(o->final_div_factor >= 1) || o->total_steps < 2))
        bad = "onecycle needs pct_start in (0, 1), div factors >= 1 and total_steps >= 2";
    if (bad) {
        nn_error_set(err, AD_ERR_ARG, "nn_sched_new(%s): %s", kind, bad);
        return NULL;
    }
    nn_sched *s = ad__calloc(1, sizeof *s);
    if (!s) {
        nn_error_set(err, AD_ERR_NOMEM, "nn_sched_new: out of memory");
        return NULL;
    }
    s->kind = (sched_kind)k;
    s->o = *o;
    return s;
}

/* From a to b along half a cosine, as frac goes 0 -> 1. */
static double anneal(double a, double b, double frac)
{
    if (frac > 1) frac = 1;
    return b + (a - b) * (1.0 + cos(PI * frac)) / 2.0;
}

double nn_sched_lr(const nn_sched *s, int64_t step)
{
    if (!s) return NAN;
    const nn_sched_opts *o = &s->o;
    if (step < 0) step = 0;
    double T = (double)o->total_steps, t = (double)step;
    switch (s->kind) {
    case S_CONSTANT: return o->lr;
    case S_STEP: return o->lr * pow(o->gamma, (double)(step / o->step_size));
    case S_COSINE: return anneal(o->lr, o->min_lr, t / T);
    case S_WARMUP_COSINE: {
        double w = (double)o->warmup_steps;
        if (t < w) return o->lr * (t + 1) / w; /* linear, reaching lr at the end of the warmup */
        return o->total_steps > o->warmup_steps ? anneal(o->lr, o->min_lr, (t - w) / (T - w)) : o->min_lr;
    }
    case S_ONECYCLE: {
        double initial = o->lr / o->div_factor, final = initial / o->final_div_factor;
        double up = o->pct_start * T - 1; /* the step of the peak */
        if (up < 1) up = 1;
        if (t <= up) return anneal(initial, o->lr, t / up);
        return anneal(o->lr, final, (t - up) / (T - 1 - up > 0 ? T - 1 - up : 1));
    }
    }
    return o->lr;
}

const char *nn_sched_name(const nn_sched *s) { return s ? kind_names[s->kind] : "none"; }

void nn_sched_free(nn_sched *s) { ad__free(s); }

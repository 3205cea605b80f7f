/* optim.c: optimizers bound to a module's parameters (SGD with momentum/Nesterov, Adam, AdamW) and lr schedules. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

#define PI 3.14159265358979323846

typedef enum optim_kind { OPT_SGD, OPT_ADAM, OPT_ADAMW } optim_kind;

struct nn_optim {
    optim_kind kind;
    double lr, momentum, weight_decay, beta1, beta2, eps;
    bool nesterov;
    int64_t step;
    int n;             /* trainable parameters */
    nn_param *params;  /* copies of the module's entries (borrowed tensors) */
    ad_tensor **s1;    /* SGD: momentum buffers (NULL without momentum); Adam: first moments */
    ad_tensor **s2;    /* Adam: second moments */
    ad_tensor *step_t; /* F64 [1]: the step count, for checkpoints */
    int nstate;        /* named state tensors */
    char **state_names;
    ad_tensor **state;
};

static const char *const kind_names[] = {"sgd", "adam", "adamw"};

void nn_optim_free(nn_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->s1) ad_tensor_free(o->s1[i]);
        if (o->s2) ad_tensor_free(o->s2[i]);
    }
    for (int i = 0; i < o->nstate; i++) ad__free(o->state_names[i]);
    ad__free(o->state_names);
    ad__free(o->state);
    ad__free(o->s1);
    ad__free(o->s2);
    ad__free(o->params);
    ad_tensor_free(o->step_t);
    ad__free(o);
}

/* Appends state tensor t as "optim.<name><suffix>". */
static bool add_state(nn_optim *o, const char *name, const char *suffix, ad_tensor *t)
{
    size_t len = strlen("optim.") + strlen(name) + strlen(suffix) + 1;
    char *s = ad__malloc(len);
    if (!s) return false;
    snprintf(s, len, "optim.%s%s", name, suffix);
    o->state_names[o->nstate] = s;
    o->state[o->nstate++] = t;
    return true;
}

/* A zeroed tensor shaped like p, recorded as state "optim.<name><suffix>". */
static ad_tensor *new_state(nn_optim *o, const nn_param *p, const char *suffix)
{
    ad_tensor *t = ad_tensor_new(p->value->dtype, p->value->ndim, p->value->shape);
    if (t && !add_state(o, p->name, suffix, t)) {
        ad_tensor_free(t);
        return NULL;
    }
    return t;
}

static nn_optim *optim_new(nn_module *m, optim_kind kind)
{
    if (!m) return NULL;
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    nn_optim *o = ad__calloc(1, sizeof *o);
    if (!o) return NULL;
    o->kind = kind;
    for (int i = 0; i < np; i++)
        if (ps[i].grad) o->n++;
    int nstate_max = 1 + 2 * o->n;
    o->params = ad__calloc((size_t)o->n + 1, sizeof *o->params);
    o->s1 = ad__calloc((size_t)o->n + 1, sizeof *o->s1);
    o->s2 = ad__calloc((size_t)o->n + 1, sizeof *o->s2);
    o->state_names = ad__calloc((size_t)nstate_max, sizeof *o->state_names);
    o->state = ad__calloc((size_t)nstate_max, sizeof *o->state);
    o->step_t = ad_tensor_new(AD_F64, AD_SHAPE(1));
    if (!o->params || !o->s1 || !o->s2 || !o->state_names || !o->state || !o->step_t) goto fail;
    if (!add_state(o, "step", "", o->step_t)) goto fail;
    for (int i = 0, j = 0; i < np; i++)
        if (ps[i].grad) o->params[j++] = ps[i];
    return o;
fail:
    nn_optim_free(o);
    return NULL;
}

nn_optim *nn_sgd(nn_module *m, double lr, double momentum, double weight_decay, bool nesterov)
{
    if (!(lr >= 0) || !(momentum >= 0) || !(weight_decay >= 0) || (nesterov && momentum == 0)) return NULL;
    nn_optim *o = optim_new(m, OPT_SGD);
    if (!o) return NULL;
    o->lr = lr;
    o->momentum = momentum;
    o->weight_decay = weight_decay;
    o->nesterov = nesterov;
    for (int i = 0; momentum != 0 && i < o->n; i++)
        if (!(o->s1[i] = new_state(o, &o->params[i], ".momentum"))) {
            nn_optim_free(o);
            return NULL;
        }
    return o;
}

static nn_optim *adam_new(nn_module *m, optim_kind kind, double lr, double b1, double b2, double eps, double wd)
{
    if (!(lr >= 0) || !(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1) || !(eps >= 0) || !(wd >= 0)) return NULL;
    nn_optim *o = optim_new(m, kind);
    if (!o) return NULL;
    o->lr = lr;
    o->beta1 = b1;
    o->beta2 = b2;
    o->eps = eps;
    o->weight_decay = wd;
    for (int i = 0; i < o->n; i++)
        if (!(o->s1[i] = new_state(o, &o->params[i], ".m")) || !(o->s2[i] = new_state(o, &o->params[i], ".v"))) {
            nn_optim_free(o);
            return NULL;
        }
    return o;
}

nn_optim *nn_adam(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay)
{
    return adam_new(m, OPT_ADAM, lr, beta1, beta2, eps, weight_decay);
}

nn_optim *nn_adamw(nn_module *m, double lr, double beta1, double beta2, double eps, double weight_decay)
{
    return adam_new(m, OPT_ADAMW, lr, beta1, beta2, eps, weight_decay);
}

/* The updates, written once for both dtypes: T is float or double, the
** arithmetic is in double and rounded once on store. Each case has its own
** loop without branches (GCC does not if-convert arithmetic that may trap),
** so that each vectorizes; AD_CLONES picks AVX-512/AVX2 at run time. */
#define SGD_LOOP(T, BUF, NESTEROV)                                                                       \
    for (int64_t i = 0; i < n; i++) {                                                                    \
        double d = (double)g[i] + wd * (double)p[i];                                                     \
        T b = (T)(BUF);                                                                                  \
        buf[i] = b;                                                                                      \
        d = NESTEROV ? d + mu * (double)b : (double)b;                                                   \
        p[i] = (T)((double)p[i] - lr * d);                                                               \
    }
#define SGD_UPDATE(T)                                                                                    \
    AD_CLONES static void sgd_##T(const nn_optim *o, T *restrict p, const T *restrict g, T *restrict buf, \
                                  int64_t n)                                                             \
    {                                                                                                    \
        const double lr = o->lr, wd = o->weight_decay, mu = o->momentum;                                 \
        if (!buf) {                                                                                      \
            for (int64_t i = 0; i < n; i++) {                                                            \
                double d = (double)g[i] + wd * (double)p[i];                                             \
                p[i] = (T)((double)p[i] - lr * d);                                                       \
            }                                                                                            \
        } else if (o->step == 1) {                                                                       \
            if (o->nesterov)                                                                             \
                SGD_LOOP(T, d, 1)                                                                        \
            else                                                                                         \
                SGD_LOOP(T, d, 0)                                                                        \
        } else {                                                                                         \
            if (o->nesterov)                                                                             \
                SGD_LOOP(T, mu * (double)buf[i] + d, 1)                                                  \
            else                                                                                         \
                SGD_LOOP(T, mu * (double)buf[i] + d, 0)                                                  \
        }                                                                                                \
    }
SGD_UPDATE(float)
SGD_UPDATE(double)

/* Adam's update in T arithmetic (float for F32 parameters, as torch.optim.Adam
** computes, double for F64), branch-free in the loop so that it vectorizes.
** AdamW's decay p *= 1 - lr wd and Adam's g += wd p are both applied through
** their coefficients (the unused one is 1 or 0, exact). */
#define ADAM_UPDATE(T, SQRT)                                                                              \
    AD_CLONES static void adam_##T(const nn_optim *o, T *restrict p, const T *restrict g, T *restrict m, \
                                   T *restrict v, int64_t n)                                             \
    {                                                                                                    \
        bool decoupled = o->kind == OPT_ADAMW;                                                           \
        const T keep = decoupled ? (T)(1.0 - o->lr * o->weight_decay) : (T)1;                            \
        const T l2 = decoupled ? (T)0 : (T)o->weight_decay;                                              \
        const T b1 = (T)o->beta1, b2 = (T)o->beta2, c1 = (T)(1.0 - o->beta1), c2 = (T)(1.0 - o->beta2);  \
        const T step_size = (T)(o->lr / (1.0 - pow(o->beta1, (double)o->step)));                         \
        const T inv_bc2_sqrt = (T)(1.0 / sqrt(1.0 - pow(o->beta2, (double)o->step)));                    \
        const T eps = (T)o->eps;                                                                         \
        for (int64_t i = 0; i < n; i++) {                                                                \
            T pi = p[i] * keep, gi = g[i] + l2 * p[i];                                                   \
            T mi = b1 * m[i] + c1 * gi;                                                                  \
            T vi = b2 * v[i] + c2 * (gi * gi);                                                           \
            m[i] = mi;                                                                                   \
            v[i] = vi;                                                                                   \
            p[i] = pi - step_size * mi / (SQRT(vi) * inv_bc2_sqrt + eps);                                \
        }                                                                                                \
    }
ADAM_UPDATE(float, sqrtf)
ADAM_UPDATE(double, sqrt)

/* With several threads (ad_set_num_threads), each thread checks and updates a fixed, contiguous
** share of every large parameter: the same share at every step, so its moments stay in that
** thread's cache, and the matrix products cut each weight the same way (gemm.c). The updates are
** elementwise, so the result does not depend on the split. */
#define SPLIT_MIN 4096 /* parameters smaller than this stay whole on the first thread */
#define SPLIT_ALIGN 16 /* share boundaries on multiples of this many elements */

typedef struct step_job {
    nn_optim *o;
    bool check;                /* the finite check; else the update */
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
        ad_tensor *p = o->params[i].value, *g = o->params[i].grad;
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
        if (p->dtype == AD_F32) {
            float *pd = (float *)p->data + lo, *gd = (float *)g->data + lo;
            float *s1 = o->s1[i] ? (float *)o->s1[i]->data + lo : NULL;
            if (o->kind == OPT_SGD)
                sgd_float(o, pd, gd, s1, n);
            else
                adam_float(o, pd, gd, s1, (float *)o->s2[i]->data + lo, n);
        } else {
            double *pd = (double *)p->data + lo, *gd = (double *)g->data + lo;
            double *s1 = o->s1[i] ? (double *)o->s1[i]->data + lo : NULL;
            if (o->kind == OPT_SGD)
                sgd_double(o, pd, gd, s1, n);
            else
                adam_double(o, pd, gd, s1, (double *)o->s2[i]->data + lo, n);
        }
    }
}

ad_status nn_optim_step(nn_optim *o)
{
    if (!o) return AD_ERR_ARG;
    int nth = ad_get_num_threads();
    if (nth > 1) {
        int64_t total = 0;
        for (int i = 0; i < o->n; i++) total += o->params[i].value->size;
        if (total < 2 * SPLIT_MIN) nth = 1;
    }
    if (nth > 1) {
        if (nth > AD__MAX_THREADS) nth = AD__MAX_THREADS;
        step_job j = {.o = o, .check = true};
        ad__parallel(nth, step_share, &j);
        for (int t = 0; t < nth; t++)
            if (j.bad[t]) return AD_ERR_NUMERIC;
        o->step++;
        ((double *)o->step_t->data)[0] = (double)o->step;
        j.check = false;
        ad__parallel(nth, step_share, &j);
        return AD_OK;
    }
    for (int i = 0; i < o->n; i++)
        if (!ad__all_finite(o->params[i].grad)) return AD_ERR_NUMERIC;
    o->step++;
    ((double *)o->step_t->data)[0] = (double)o->step;
    for (int i = 0; i < o->n; i++) {
        ad_tensor *p = o->params[i].value, *g = o->params[i].grad;
        bool f32 = p->dtype == AD_F32;
        if (o->kind == OPT_SGD) {
            if (f32)
                sgd_float(o, p->data, g->data, o->s1[i] ? o->s1[i]->data : NULL, p->size);
            else
                sgd_double(o, p->data, g->data, o->s1[i] ? o->s1[i]->data : NULL, p->size);
        } else if (f32) {
            adam_float(o, p->data, g->data, o->s1[i]->data, o->s2[i]->data, p->size);
        } else {
            adam_double(o, p->data, g->data, o->s1[i]->data, o->s2[i]->data, p->size);
        }
    }
    return AD_OK;
}

double nn_optim_lr(const nn_optim *o) { return o ? o->lr : 0.0; }
void nn_optim_set_lr(nn_optim *o, double lr)
{
    if (o && lr >= 0) o->lr = lr;
}
int64_t nn_optim_steps(const nn_optim *o) { return o ? o->step : 0; }
const char *nn_optim_name(const nn_optim *o) { return o ? kind_names[o->kind] : "none"; }

int nn__optim_state_count(const nn_optim *o) { return o ? o->nstate : 0; }

int nn__optim_state(nn_optim *o, const char **names, ad_tensor **tensors)
{
    if (!o) return 0;
    ((double *)o->step_t->data)[0] = (double)o->step;
    for (int i = 0; i < o->nstate; i++) {
        names[i] = o->state_names[i];
        tensors[i] = o->state[i];
    }
    return o->nstate;
}

void nn__optim_sync_step(nn_optim *o)
{
    if (o) o->step = (int64_t)((const double *)o->step_t->data)[0];
}

/* ---- learning-rate schedules ---- */

nn_schedule nn_schedule_step(double base_lr, int64_t step_size, double gamma)
{
    return (nn_schedule){NN_SCHED_STEP, base_lr, step_size, gamma, 0, 0.0};
}

nn_schedule nn_schedule_cosine(double base_lr, int64_t t_max, double eta_min)
{
    return (nn_schedule){NN_SCHED_COSINE, base_lr, 0, 1.0, t_max, eta_min};
}

double nn_schedule_lr(const nn_schedule *s, int64_t epoch)
{
    if (!s) return 0.0;
    if (epoch < 0) epoch = 0;
    switch (s->kind) {
    case NN_SCHED_CONSTANT: break;
    case NN_SCHED_STEP:
        if (s->step_size > 0) return s->base_lr * pow(s->gamma, (double)(epoch / s->step_size));
        break;
    case NN_SCHED_COSINE:
        if (s->t_max <= 0 || epoch >= s->t_max) return s->t_max <= 0 ? s->base_lr : s->eta_min;
        return s->eta_min + (s->base_lr - s->eta_min) * (1.0 + cos(PI * (double)epoch / (double)s->t_max)) / 2.0;
    }
    return s->base_lr;
}

/* optim_state.c: the optimizer's state as named tensors, for checkpoints, custom checkpoint formats and broadcasts. */
#include "optim_internal.h"

/* The counters kept as numbers (the step count, L-BFGS's history position) into their tensors. */
static void mirror_out(nn_optim *o)
{
    ((double *)o->step_t->data)[0] = (double)o->step; /* "optim.step" mirrors the count */
    if (o->kind->state_out) o->kind->state_out(o);
    for (int i = 0; i < o->n; i++) o->slots[i].steps_absent = false;
}

int nn_optim_state(nn_optim *o, int max, const char **names, ad_tensor **tensors)
{
    if (!o) return 0;
    mirror_out(o);
    for (int i = 0; i < o->nstate && i < max; i++) {
        if (names) names[i] = o->state_names[i];
        if (tensors) tensors[i] = o->state[i];
    }
    return o->nstate;
}

void nn_optim_state_changed(nn_optim *o) { nn__optim_sync_step(o); }

int nn__optim_state_count(const nn_optim *o) { return o ? o->nstate : 0; }

int nn__optim_state(nn_optim *o, const char **names, ad_tensor **tensors)
{
    return o ? nn_optim_state(o, o->nstate, names, tensors) : 0;
}

void nn__optim_sync_step(nn_optim *o)
{
    if (!o) return;
    double s = ((const double *)o->step_t->data)[0];
    o->step = s >= 0 && s < 0x1p62 ? (int64_t)s : 0;
    if (o->kind->state_in) o->kind->state_in(o);
    for (int i = 0; i < o->n; i++)
        if (o->slots[i].steps_absent) {
            ((double *)o->slots[i].steps->data)[0] = (double)o->step;
            o->slots[i].steps_absent = false;
        }
}

bool nn__optim_state_absent(nn_optim *o, const char *name, bool absent)
{
    for (int i = 0; absent && o && i < o->n; i++) {
        const char *p = o->params[i]->name;
        size_t l = strlen(p);
        if (o->slots[i].steps && strncmp(name, "optim.", 6) == 0 && strncmp(name + 6, p, l) == 0 &&
            strcmp(name + 6 + l, ".step") == 0)
            return o->slots[i].steps_absent = true;
    }
    return false;
}

int64_t nn__optim_param_steps(const param_slots *s)
{
    double k = ((const double *)s->steps->data)[0];
    return k >= 0 && k < 0x1p52 && k == (double)(int64_t)k ? (int64_t)k : 0;
}

/* Appends state tensor t as "optim.<name><suffix>" (growing the list). */
bool nn__optim_add_state(nn_optim *o, const char *name, const char *suffix, ad_tensor *t)
{
    if (o->nstate == o->state_cap) {
        int cap = o->state_cap ? 2 * o->state_cap : 8;
        char **n = ad__realloc(o->state_names, (size_t)cap * sizeof *n);
        if (n) o->state_names = n;
        ad_tensor **s = n ? ad__realloc(o->state, (size_t)cap * sizeof *s) : NULL;
        if (s) o->state = s;
        if (!n || !s) return false;
        o->state_cap = cap;
    }
    size_t len = strlen("optim.") + strlen(name) + strlen(suffix) + 1;
    char *s = ad__malloc(len);
    if (!s) return false;
    snprintf(s, len, "optim.%s%s", name, suffix);
    o->state_names[o->nstate] = s;
    o->state[o->nstate++] = t;
    return true;
}

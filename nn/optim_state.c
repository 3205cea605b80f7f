/* optim_state.c: the optimizer's state as named tensors, for custom checkpoint formats and broadcasts. */
#include "optim_internal.h"

int nn_optim_state(nn_optim *o, int max, const char **names, ad_tensor **tensors)
{
    if (!o) return 0;
    ((double *)o->step_t->data)[0] = (double)o->step; /* "optim.step" mirrors the count */
    for (int i = 0; i < o->nstate && i < max; i++) {
        if (names) names[i] = o->state_names[i];
        if (tensors) tensors[i] = o->state[i];
    }
    return o->nstate;
}

void nn_optim_state_changed(nn_optim *o) { nn__optim_sync_step(o); }

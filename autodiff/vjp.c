/* vjp.c: the fast backward sweep's gradient slots (vjp.h): the cases the inline ad__gslot and ad__gpass leave out of line, for the fast VJPs in the ops' files. */
#include "vjp.h"
#include "kernels.h"

/* The inline ad__gslot's other case: a slot that shares someone else's data
** (a passed-through gradient) gets its own copy before anything is added in. */
void *ad__gslot_slow(ad_sweep *s, const ad_node *n, int j, bool *fresh)
{
    uint32_t k = n->in[j];
    ad_gbuf *g = &s->gbufs[k];
    size_t bytes = ad__nbytes(&ad__node(s->t, k)->value);
    void *copy = ad__arena_alloc(s->t, bytes);
    if (!copy) return NULL;
    if (bytes) memcpy(copy, g->data, bytes);
    *g = (ad_gbuf){copy, AD_NO_NODE, true};
    *fresh = false;
    return copy;
}

/* The inline ad__gpass's other case: gy added into a slot that holds a gradient already. */
void ad__gpass_slow(ad_sweep *s, const ad_node *n, int j, const ad_tensor *gy)
{
    bool fresh;
    void *buf = ad__gslot(s, n, j, &fresh);
    if (!buf) return;
    ad_tensor dst = *gy;
    dst.data = buf;
    ad__add_into(&dst, gy);
}

/* vjp.h: what the ops' VJPs use: the helpers they share, and the fast sweep's context with its gradient
** slots and the fast VJPs' declarations (vjp.c: the slots' out-of-line cases); never installed. */
#ifndef AUTODIFF_VJP_H
#define AUTODIFF_VJP_H

#include "tape.h"

/* A recorded VJP (see ad_vjp_fn): gy = dL/d(output) as a var, gx[i] = dL/d(input i). */
#define VJP(name) void ad__vjp_##name(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)

/* Whether input i of node n needs a gradient. */
static inline bool ad__needs(const ad_tape *t, const ad_node *n, int i)
{
    /* from the node's own bits: no read of the input node on the sweep's hot path */
    if (i < 8) return (n->in_req >> i) & 1;
    return (ad__node(t, n->in[i])->flags & AD_NODE_REQ_GRAD) != 0;
}
/* g summed over the axes input i was broadcast along, back to input i's shape
** (g itself when the shapes already agree). */
AD_INTERNAL ad_var ad__unbroadcast(ad_tape *t, const ad_node *n, int i, ad_var g);

/* Non-differentiable masks used by VJPs (outputs never need a gradient). */
AD_INTERNAL ad_var ad__step(ad_var x, double lo, double hi);      /* x > 0 ? hi : lo */
AD_INTERNAL ad_var ad__inrange(ad_var x, double lo, double hi);   /* lo <= x <= hi ? 1 : 0 */
AD_INTERNAL ad_var ad__cmp_gt(ad_var a, ad_var b);                /* a > b or a NaN ? 1 : a == b ? 0.5 : 0 */
AD_INTERNAL ad_var ad__eq(ad_var a, ad_var b);                    /* a == b ? 1 : 0 */

/*
** The fast path. A backward pass without AD_CREATE_GRAPH records nothing that
** needs differentiating, so ops may supply a second VJP that works on tensors
** directly: it adds dL/d(input j) into the buffer ad__gslot() hands out,
** computing the same formula as the recorded VJP (tests check both agree).
** It returns false to decline (e.g. for broadcast shapes), and the sweep then
** runs the recorded VJP. Marked FAST in ops.def.
*/
typedef struct ad_gbuf {
    void *data;    /* gradient so far, shaped like the node's value; NULL if none */
    uint32_t node; /* a node whose value holds exactly `data`, or AD_NO_NODE */
    bool owned;    /* allocated by the sweep: may be added into in place */
} ad_gbuf;

/* A fast sweep's scratch state, on the stack of ad_backward / ad_gradients (backward.c). */
typedef struct ad_sweep {
    ad_tape *t;
    ad_gbuf *gbufs;  /* gradient buffers by node id */
    bool accumulate; /* AD_ACCUMULATE: params' slots are their grad tensors */
} ad_sweep;

typedef bool (*ad_fast_vjp_fn)(ad_sweep *s, const ad_node *n, uint32_t self, const ad_tensor *gy);
/* A fast VJP's signature (sw->t is the tape). */
#define FAST_VJP(name) bool ad__fast_##name(ad_sweep *sw, const ad_node *n, uint32_t self, const ad_tensor *gy)

/* The buffer to add input j's gradient into (input j must need a gradient).
** *fresh is true when it holds nothing yet (write, don't add). NULL when out
** of memory (the error is on the tape). Inline but for a slot that shares
** another node's data, which is copied first (ad__gslot_slow). */
AD_INTERNAL void *ad__gslot_slow(ad_sweep *s, const ad_node *n, int j, bool *fresh);
/* (bytes: input j's size in bytes, or more) */
static inline void *ad__gslot_sized(ad_sweep *s, const ad_node *n, int j, size_t bytes, bool *fresh)
{
    ad_gbuf *g = &s->gbufs[n->in[j]];
    if (g->data && g->owned) {
        *fresh = false;
        return g->data;
    }
    if (!g->data) { /* (under AD_ACCUMULATE params' slots are never empty) */
        *g = (ad_gbuf){ad__arena_alloc(s->t, bytes), AD_NO_NODE, true};
        *fresh = true;
        return g->data;
    }
    return ad__gslot_slow(s, n, j, fresh);
}
static inline void *ad__gslot(ad_sweep *s, const ad_node *n, int j, bool *fresh)
{
    return ad__gslot_sized(s, n, j, ad__nbytes(ad__in(s->t, n, j)), fresh);
}
/* ad__gslot for an input of one element (F32 or F64). */
static inline void *ad__gslot1(ad_sweep *s, const ad_node *n, int j, bool *fresh)
{
    return ad__gslot_sized(s, n, j, sizeof(double), fresh);
}
/* Passes gy through unchanged as input j's gradient (same shape): shares it when
** the slot is empty, adds it in otherwise (inline for one element). */
AD_INTERNAL void ad__gpass_slow(ad_sweep *s, const ad_node *n, int j, const ad_tensor *gy);
static inline void ad__gpass(ad_sweep *s, const ad_node *n, int j, const ad_tensor *gy)
{
    ad_gbuf *g = &s->gbufs[n->in[j]];
    if (!g->data) {
        *g = (ad_gbuf){gy->data, AD_NO_NODE, false};
    } else if (g->data && g->owned && gy->size == 1) {
        if (gy->dtype == AD_F64)
            *(double *)g->data += *(const double *)gy->data;
        else
            *(float *)g->data += *(const float *)gy->data;
    } else {
        ad__gpass_slow(s, n, j, gy);
    }
}
/* The fast VJPs of the ops marked FAST in ops.def: declared, and ad__fast_<name> or NULL by op. */
#define AD_FAST_DECL_FAST(name) AD_INTERNAL FAST_VJP(name);
#define AD_FAST_DECL_NOFAST(name)
#define AD_OP(ID, name, nin, family, grad, fast, ...) AD_FAST_DECL_##fast(name)
#include "ops.def"
#undef AD_OP
#define AD_FAST_FN_FAST(name) ad__fast_##name
#define AD_FAST_FN_NOFAST(name) NULL

#endif

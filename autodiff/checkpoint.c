/* checkpoint.c: checkpointed segments: a function recorded as one node, its inside dropped after the forward and recomputed by backward. */
#include "custom.h"
#include "forward.h"

#include <stdio.h>

/*
** ad_checkpoint runs fn with grad recording off, copies its outputs out, rewinds
** the tape to before fn (its intermediates are gone) and records one CHECKPOINT
** node holding the outputs, whose record's replay hook is ad__checkpoint_replay.
** When a sweep reaches that node, backward.c calls the hook to record fn again on
** the same input nodes, sweeps the new nodes in place with the same gradient
** slots, and rewinds them away again (see replay_fast/replay_graph there): the
** VJPs that run, their order and their inputs are those of the plain recording,
** so the gradients are equal bit for bit.
*/

/* Output k of fn checked: a current var of t. */
static bool output_ok(ad_tape *t, const char *what, int k, ad_var v)
{
    if (v.tape == t && v.gen == t->gen && v.id < t->count) return true;
    ad__fail(t, AD_ERR_STATE, "ad_checkpoint: %s output %d is %s", what, k + 1,
             v.tape != t       ? "not a var of the segment's tape"
             : v.gen != t->gen ? "stale"
                               : "an invalid var");
    return false;
}

/* The descriptor every checkpoint node carries (its callbacks are never called). */
static ad_status never_shape(void *c, int n, const ad_tensor *const *in, ad_tensor *out)
{
    (void)c, (void)n, (void)in, (void)out;
    return AD_ERR_UNSUPPORTED;
}
static ad_status never_forward(void *c, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    (void)c, (void)n, (void)in, (void)out;
    return AD_ERR_UNSUPPORTED;
}
static ad_status never_vjp(void *c, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                           ad_var *gin)
{
    (void)c, (void)n, (void)in, (void)n_out, (void)out, (void)gout, (void)gin;
    return AD_ERR_UNSUPPORTED;
}

ad_status ad_checkpoint(ad_fn_n fn, void *ctx, int n, const ad_var *in, int n_out, ad_var *out)
{
    ad_tape *t = NULL;
    for (int j = 0; in && j < n && !t; j++) t = in[j].tape;
    if (!t) return AD_ERR_ARG; /* nowhere to record an error */
    if (out)
        for (int k = 0; k < n_out; k++) out[k] = ad__invalid(t);
    if (t->status != AD_OK) return t->status;
    if (!fn || n_out < 1 || !out) {
        ad__fail(t, AD_ERR_ARG, "ad_checkpoint: %s",
                 !fn         ? "fn is NULL"
                 : n_out < 1 ? "n_out is below 1"
                             : "out is NULL");
        return t->status;
    }
    if (!ad__begin("ad_checkpoint", n, in, &t)) return t->status ? t->status : AD_ERR_ARG;

    ad_var small[8], *o = n_out <= 8 ? small : ad__malloc((size_t)n_out * sizeof *o);
    ad_tensor *vals = ad__calloc((size_t)n_out, sizeof *vals);
    ad_status s = AD_OK;
    if (!o || !vals) {
        ad__fail(t, AD_ERR_NOMEM, "ad_checkpoint: out of memory");
        goto done;
    }
    for (int k = 0; k < n_out; k++) o[k] = AD_NO_VAR;
    ad_mark m = ad__tape_mark(t);
    uint32_t nparams = t->nparams;
    bool was = ad_tape_set_grad_enabled(t, false);
    s = fn(t, n, in, n_out, o, ctx);
    ad_tape_set_grad_enabled(t, was);
    if (s != AD_OK && t->status == AD_OK) ad__fail(t, s, "ad_checkpoint: fn failed: %s", ad_status_str(s));
    for (int k = 0; k < n_out && t->status == AD_OK; k++) {
        if (!output_ok(t, "fn's", k, o[k])) break;
        const ad_tensor *v = ad__val(o[k]);
        vals[k] = *v;
        vals[k].data = ad__malloc(ad__nbytes(v) ? ad__nbytes(v) : 1);
        if (!vals[k].data) {
            ad__fail(t, AD_ERR_NOMEM, "ad_checkpoint: out of memory");
            break;
        }
        if (v->size) memcpy(vals[k].data, v->data, ad__nbytes(v));
    }
    ad__tape_rewind(t, m); /* the segment's inside is dropped here */
    t->nparams = nparams;
    if (t->status != AD_OK) {
        s = t->status;
        goto done;
    }
    const ad_custom_op op = {"checkpoint", n_out, never_shape, never_forward, never_vjp, NULL, NULL, NULL};
    s = ad__custom_record(t, AD_OP_CHECKPOINT, &op, fn, ad__checkpoint_replay, ctx, n, in, vals, out);
done:
    for (int k = 0; vals && k < n_out; k++) ad__free(vals[k].data);
    ad__free(vals);
    if (o != small) ad__free(o);
    return s;
}

/*
** Records checkpoint node n's segment again from its input nodes, with grad on,
** into outs[0..n_out) (an arena array); checks that it computed the same outputs.
*/
ad_status ad__checkpoint_replay(ad_tape *t, const ad_node *n, ad_var **outs)
{
    const ad_custom_rec *r = ad__rec(n);
    ad_var *in = ad__arena_alloc(t, (size_t)r->n * sizeof *in);
    ad_var *o = ad__arena_alloc(t, (size_t)r->n_out * sizeof *o);
    if (!in || !o) return t->status;
    for (int j = 0; j < r->n; j++) in[j] = ad__inv(t, n, j);
    for (int k = 0; k < r->n_out; k++) o[k] = AD_NO_VAR;
    bool was = t->grad_enabled;
    t->grad_enabled = true;
    ad_status s = r->fn(t, r->n, in, r->n_out, o, r->ctx);
    t->grad_enabled = was;
    if (t->status != AD_OK) {
        ad__custom_blame(t, "checkpoint", "recomputing the segment");
        return t->status;
    }
    if (s != AD_OK) {
        ad__fail(t, s, "ad_checkpoint: fn failed when the segment was recomputed: %s", ad_status_str(s));
        return t->status;
    }
    for (int k = 0; k < r->n_out; k++) {
        if (!output_ok(t, "the recomputed", k, o[k])) return t->status;
        const ad_tensor *v = ad__val(o[k]);
        ad_tensor want = r->shapes[k];
        want.data = (char *)n->value.data + (size_t)r->offset[k] * ad_dtype_size(n->value.dtype);
        if (v->dtype != want.dtype || !ad_shape_equal(v, &want) ||
            (v->size && memcmp(v->data, want.data, ad__nbytes(v)) != 0)) {
            ad__fail(t, AD_ERR_STATE,
                     "ad_checkpoint: the recomputed output %d differs from the first run: fn must compute the "
                     "same thing every time (no hidden state, same random numbers)",
                     k + 1);
            return t->status;
        }
    }
    *outs = o;
    return AD_OK;
}

/* The forward kernel, for a replay of the tape: fn runs again (grad off) past the
** tape's end on the node's current inputs, its outputs are copied into the node,
** and its nodes are rewound away, as in ad_checkpoint itself. */
ad_status ad__fwd_checkpoint(ad_tape *t, ad_node *n)
{
    const ad_custom_rec *r = ad__rec(n);
    ad_mark m = ad__tape_mark(t);
    uint32_t nparams = t->nparams;
    ad_var *in = ad__arena_alloc(t, (size_t)r->n * sizeof *in);
    ad_var *o = ad__arena_alloc(t, (size_t)r->n_out * sizeof *o);
    if (!in || !o) return t->status;
    for (int j = 0; j < r->n; j++) in[j] = ad__inv(t, n, j);
    for (int k = 0; k < r->n_out; k++) o[k] = AD_NO_VAR;
    bool was = t->grad_enabled;
    t->grad_enabled = false;
    ad_status s = r->fn(t, r->n, in, r->n_out, o, r->ctx);
    t->grad_enabled = was;
    if (s != AD_OK && t->status == AD_OK) ad__fail(t, s, "ad_checkpoint: fn failed: %s", ad_status_str(s));
    for (int k = 0; k < r->n_out && t->status == AD_OK; k++) {
        if (!output_ok(t, "fn's", k, o[k])) break;
        const ad_tensor *v = ad__val(o[k]);
        if (v->dtype != r->shapes[k].dtype || !ad_shape_equal(v, &r->shapes[k])) {
            ad__fail(t, AD_ERR_STATE, "ad_checkpoint: fn's output %d changed shape or dtype", k + 1);
            break;
        }
        if (v->size)
            memcpy((char *)n->value.data + (size_t)r->offset[k] * ad_dtype_size(v->dtype), v->data, ad__nbytes(v));
    }
    ad__tape_rewind(t, m);
    t->nparams = nparams;
    return t->status;
}

/* The sweeps handle checkpoint nodes themselves (backward.c): this is never reached by them. */
void ad__vjp_checkpoint(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    (void)n, (void)gy, (void)gx;
    ad__fail(t, AD_ERR_STATE, "ad_checkpoint: internal error: node %u reached the generic VJP", self);
}

/*
** The tangent rule (jvp.h) of a checkpointed segment: the segment recorded again from
** the node's inputs (as backward does), the tangents swept through that recording, and
** the outputs' tangents packed as the node's value is (one output: itself).
*/
JVP(checkpoint)
{
    (void)self;
    const ad_custom_rec *r = ad__rec(n);
    ad_var *outs;
    uint32_t first = t->count; /* the segment's new nodes start here: the sweep below covers them only */
    if (ad__checkpoint_replay(t, n, &outs) != AD_OK) return ad__invalid(t);
    ad_var *in = ad__arena_alloc(t, (size_t)r->n * sizeof *in), *tin = ad__arena_alloc(t, (size_t)r->n * sizeof *tin);
    ad_var *tout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *tout);
    if (!in || !tin || !tout) return ad__invalid(t);
    int m = 0; /* each input node once (fn may take one var several times) */
    for (int j = 0; j < r->n; j++) {
        bool seen = false;
        for (int i = 0; i < m && !seen; i++) seen = in[i].id == n->in[j];
        if (seen) continue;
        in[m] = ad__inv(t, n, j);
        tin[m++] = ad__tor0(t, n, tx, j);
    }
    if (ad__tangents_from(first, m, in, tin, r->n_out, outs, tout) != AD_OK) return ad__invalid(t);
    if (r->n_out == 1) return tout[0];
    const int64_t minus1 = -1;
    for (int k = 0; k < r->n_out; k++) tout[k] = ad_reshape(tout[k], 1, &minus1);
    return ad_concat(r->n_out, tout, 0);
}

/* backward.c: the reverse sweep: one pass over the tape from the output back to the leaves. */
#include "backward.h"
#include "kernels.h"

/*
** The tape is in topological order (an op's inputs always have smaller ids), so
** the sweep is a plain loop from the output's id down to 0: no sort, no
** recursion, any depth. grads[i] holds the node id of dL/d(node i) so far; a
** node used several times gets the sum of its gradients. Each VJP is written
** with the engine's own ops, so the sweep appends its work to the tape: with
** AD_CREATE_GRAPH those nodes are differentiable themselves (higher order),
** without it they are recorded with grad disabled and carry no gradient.
*/

typedef struct sweep_args {
    ad_var y, seed;
    unsigned flags;
    bool to_leaves;  /* ad_backward: fill leaf gradients and param grad tensors */
    int n;           /* ad_gradients: which vars to return gradients for */
    const ad_var *xs;
    ad_var *out;
    const ad_tensor *lent; /* ad_backward's seed when the seed var reads it in place (make_seed) */
} sweep_args;

static void accumulate(ad_tape *t, uint32_t *grads, uint32_t k, ad_var g)
{
    if (g.id == AD_NO_NODE) return;
    if (grads[k] == AD_NO_NODE)
        grads[k] = g.id;
    else
        grads[k] = ad_add(ad__var(t, grads[k]), g).id;
}

static void to_leaf(ad_tape *t, ad_node *n, ad_var g)
{
    n->grad = n->grad == AD_NO_NODE ? g.id : ad_add(ad__var(t, n->grad), g).id;
    if ((n->flags & AD_NODE_PARAM) && n->param_grad && t->status == AD_OK) ad__add_into(n->param_grad, ad__val(g));
}

/* A VJP must return each input's shape and dtype; anything else is a bug in the op. */
static bool check_shape(ad_tape *t, const ad_node *n, uint32_t j, ad_var g)
{
    const ad_tensor *want = ad__in(t, n, (int)j), *got = ad__val(g);
    if (ad_shape_equal(want, got) && want->dtype == got->dtype) return true;
    char s1[96], s2[96];
    ad__fail(t, AD_ERR_STATE, "%s: internal error: VJP for input %u gave %s %s, expected %s %s", ad__node_name(t, n),
             j + 1, ad_shape_str(got->ndim, got->shape, s1, 96), ad_dtype_name(got->dtype),
             ad_shape_str(want->ndim, want->shape, s2, 96), ad_dtype_name(want->dtype));
    return false;
}

static void replay_graph(ad_tape *t, const sweep_args *a, uint32_t **grads, uint32_t nslots, uint32_t i);

/* The recorded sweep over nodes hi-1 down to lo; grads has a slot per node id below nslots. */
static void graph_range(ad_tape *t, const sweep_args *a, uint32_t **grads, uint32_t nslots, uint32_t hi,
                        uint32_t lo)
{
    ad_var small[3], *gx = small;
    uint32_t gx_cap = 3;
    for (uint32_t i = hi; i-- > lo && t->status == AD_OK;) {
        if ((*grads)[i] == AD_NO_NODE) continue;
        ad_node *n = ad__node(t, i);
        if (!(n->flags & AD_NODE_REQ_GRAD)) continue;
        ad_var g = ad__var(t, (*grads)[i]);
        if (n->op == AD_OP_LEAF || n->op == AD_OP_PARAM) {
            if (a->to_leaves) to_leaf(t, n, g);
            continue;
        }
        if (n->op == AD_OP_CHECKPOINT) {
            replay_graph(t, a, grads, nslots, i);
            continue;
        }
        if (n->nin > gx_cap) {
            gx = ad__arena_alloc(t, (size_t)n->nin * sizeof *gx);
            if (!gx) break;
            gx_cap = n->nin;
        }
        for (uint32_t j = 0; j < n->nin; j++) gx[j] = ad__invalid(t);
        t->bw_node = i;
        ad__ops[n->op].vjp(t, n, i, g, gx);
        for (uint32_t j = 0; j < n->nin && t->status == AD_OK; j++) {
            if (gx[j].id == AD_NO_NODE) continue;
            if (!check_shape(t, n, j, gx[j])) break;
            accumulate(t, *grads, n->in[j], gx[j]);
        }
    }
}

/* (backward.h) */
bool ad__custom_split(ad_tape *t, const ad_custom_rec *r, ad_var g, ad_var *gout)
{
    if (r->n_out == 1) {
        gout[0] = g;
        return true;
    }
    for (int k = 0; k < r->n_out; k++) {
        const ad_tensor *s = &r->shapes[k];
        gout[k] = ad_reshape(ad_slice(g, 0, r->offset[k], r->offset[k + 1]), s->ndim, s->shape);
    }
    return t->status == AD_OK;
}

/*
** A checkpoint under AD_CREATE_GRAPH: its segment is recorded again (kept: the
** gradients recorded from it are differentiable) and swept with slots for its
** new nodes; its outputs are seeded with the checkpoint's gradient.
*/
static void replay_graph(ad_tape *t, const sweep_args *a, uint32_t **grads, uint32_t nslots, uint32_t i)
{
    const ad_node *n = ad__node(t, i);
    const ad_custom_rec *r = ad__rec(n);
    ad_var *outs, *gout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *gout);
    t->bw_node = i;
    if (!gout || !ad__custom_split(t, r, ad__var(t, (*grads)[i]), gout)) return;
    uint32_t lo = t->count;
    if (r->replay(t, n, &outs) != AD_OK) return;
    uint32_t hi = t->count;
    uint32_t *g2 = ad__arena_alloc(t, (size_t)hi * sizeof *g2);
    if (!g2) return;
    memcpy(g2, *grads, (size_t)nslots * sizeof *g2);
    for (uint32_t k = nslots; k < hi; k++) g2[k] = AD_NO_NODE;
    for (int k = 0; k < r->n_out; k++) accumulate(t, g2, outs[k].id, gout[k]);
    uint32_t *old = *grads;
    *grads = g2;
    graph_range(t, a, grads, hi, hi, lo);
    memcpy(old, g2, (size_t)nslots * sizeof *g2);
    *grads = old;
}

static ad_status sweep_graph(ad_tape *t, const sweep_args *a)
{
    uint32_t top = a->y.id, count = top + 1;
    uint32_t *grads = ad__arena_alloc(t, (size_t)count * sizeof *grads);
    if (!grads) return t->status;
    for (uint32_t i = 0; i < count; i++) grads[i] = AD_NO_NODE;
    grads[top] = a->seed.id;

    bool create = (a->flags & AD_CREATE_GRAPH) != 0;
    bool was_enabled = t->grad_enabled;
    t->grad_enabled = create;
    t->in_backward = true;
    graph_range(t, a, &grads, count, count, 0);
    t->bw_node = AD_NO_NODE;
    for (int i = 0; i < a->n && t->status == AD_OK; i++) {
        uint32_t k = a->xs[i].id;
        a->out[i] = (k < count && grads[k] != AD_NO_NODE) ? ad__var(t, grads[k]) : ad__zeros_like(a->xs[i]);
    }
    t->in_backward = false;
    t->grad_enabled = was_enabled;
    return t->status;
}

/* ---- the fast sweep: gradients as tensors, no graph recorded ---- */

/* Fast VJPs, by op (ops.def's FAST); the functions sit beside their ops' recorded VJPs. */
static const ad_fast_vjp_fn fast_vjps[AD_OP_COUNT] = {
#define AD_OP(ID, name, nin, family, grad, fast, ...) [AD_OP_##ID] = AD_FAST_FN_##fast(name),
#include "ops.def"
#undef AD_OP
};

/* With AD_ACCUMULATE, a param's buffer is its caller's grad tensor itself: its
** gradients are added straight into it, as they arrive (sweep_fast sets it up). */
static inline bool direct(const ad_sweep *s, uint32_t k)
{
    const ad_node *p = ad__node(s->t, k);
    return s->accumulate && (p->flags & AD_NODE_PARAM) && p->param_grad && p->param_grad->data;
}

/* Adds the value of var v (a result of a recorded VJP) into node k's buffer. */
static void adopt(ad_sweep *s, uint32_t k, ad_var v)
{
    ad_gbuf *g = &s->gbufs[k];
    if (!g->data) { /* (under AD_ACCUMULATE a param's slot is never empty) */
        g->data = ad__val(v)->data;
        g->node = v.id;
        g->owned = false;
        return;
    }
    ad_node fake; /* ad__gslot needs a node whose input 0 is k */
    fake.in = &k;
    bool fresh;
    void *buf = ad__gslot(s, &fake, 0, &fresh);
    if (!buf) return;
    ad_tensor dst = ad__node(s->t, k)->value;
    dst.data = buf;
    ad__add_into(&dst, ad__val(v));
}

/* Node k's gradient as a var (wrapping the buffer when no node holds it). */
static ad_var gvar(ad_sweep *s, uint32_t k)
{
    ad_tape *t = s->t;
    ad_gbuf *g = &s->gbufs[k];
    if (g->node == AD_NO_NODE || g->owned) {
        ad_var v = ad__wrap(t, &ad__node(t, k)->value, g->data);
        g->node = v.id;
        g->owned = false; /* others may now read it through the node */
        return v;
    }
    return ad__var(t, g->node);
}

static void check_finite(ad_sweep *s, const ad_node *n, uint32_t i)
{
    ad_tape *t = s->t;
    for (uint32_t j = 0; j < n->nin; j++) {
        const ad_gbuf *g = &s->gbufs[n->in[j]];
        if (!g->data) continue;
        ad_tensor v = ad__node(t, n->in[j])->value;
        v.data = g->data;
        if (!ad__all_finite(&v)) {
            ad__anomaly_fail(t, i);
            return;
        }
    }
}

static void replay_fast(ad_sweep *s, const sweep_args *a, uint32_t nslots, uint32_t i);

/* Leaf n's gradient g, copied into the arena when it is the caller's seed memory (ad_backward
** lends it to the sweep, and a VJP may pass its gradient through unchanged): a leaf's gradient
** outlives the call, the caller's seed need not. */
static ad_var unlent(ad_tape *t, const sweep_args *a, const ad_node *n, ad_var g)
{
    if (!a->lent || g.id == AD_NO_NODE) return g;
    size_t bytes = ad__nbytes(&n->value);
    uintptr_t p = (uintptr_t)ad__val(g)->data, lo = (uintptr_t)a->lent->data, hi = lo + ad__nbytes(a->lent);
    if (bytes == 0 || p + bytes <= lo || p >= hi) return g;
    void *copy = ad__arena_alloc(t, bytes);
    if (!copy) return ad__invalid(t); /* AD_ERR_NOMEM is on the tape */
    memcpy(copy, ad__val(g)->data, bytes);
    return ad__wrap(t, &n->value, copy);
}

/* The fast sweep over nodes hi-1 down to lo; s->gbufs has a slot per node id below nslots. */
static void fast_range(ad_sweep *s, const sweep_args *a, uint32_t nslots, uint32_t hi, uint32_t lo)
{
    ad_tape *t = s->t;
    ad_var small[3], *gx = small;
    uint32_t gx_cap = 3;
    ad_tensor gy1; /* the gradient of a 0-dimensional node: only dtype and data change */
    ad__tensor_init(&gy1, AD_F64, 0, NULL, 1);

    ad_gbuf *gb = s->gbufs; /* (a checkpoint's replay swaps it for a while: reloaded after one) */
    for (uint32_t i = hi; i-- > lo && t->status == AD_OK;) {
        if (!gb[i].data) continue;
        ad_node *n = ad__node(t, i);
        if (!(n->flags & AD_NODE_REQ_GRAD)) continue;
        if (n->op == AD_OP_LEAF || n->op == AD_OP_PARAM) {
            /* a param's own grad tensor already holds its sum (AD_ACCUMULATE) */
            bool done = s->accumulate && n->param_grad && gb[i].data == n->param_grad->data;
            if (a->to_leaves && !done) to_leaf(t, n, unlent(t, a, n, gvar(s, i)));
            continue;
        }
        t->bw_node = i;
        ad_fast_vjp_fn fast = fast_vjps[n->op];
        ad_tensor gyn;
        const ad_tensor *gy = &gy1;
        if (n->value.ndim == 0) {
            gy1.dtype = n->value.dtype;
            gy1.data = gb[i].data;
        } else {
            gyn = n->value;
            gyn.data = gb[i].data;
            gy = &gyn;
        }
        if (!fast || !fast(s, n, i, gy)) {
            if (n->op == AD_OP_CHECKPOINT) { /* (no fast VJP: only the slow path looks) */
                replay_fast(s, a, nslots, i);
                gb = s->gbufs;
                continue;
            }
            if (n->nin > gx_cap) {
                gx = ad__arena_alloc(t, (size_t)n->nin * sizeof *gx);
                if (!gx) break;
                gx_cap = n->nin;
            }
            for (uint32_t j = 0; j < n->nin; j++) gx[j] = ad__invalid(t);
            ad__ops[n->op].vjp(t, n, i, gvar(s, i), gx);
            for (uint32_t j = 0; j < n->nin && t->status == AD_OK; j++) {
                if (gx[j].id == AD_NO_NODE) continue;
                if (!check_shape(t, n, j, gx[j])) break;
                adopt(s, n->in[j], gx[j]);
            }
        }
        if (t->anomaly && t->status == AD_OK) check_finite(s, n, i);
    }
}

/* Adds `data` (shaped like node k) into node k's slot, sharing it when the slot is empty. */
static void seed_slot(ad_sweep *s, uint32_t k, void *data)
{
    ad_gbuf *g = &s->gbufs[k];
    if (!g->data) {
        *g = (ad_gbuf){data, AD_NO_NODE, false};
        return;
    }
    ad_node fake; /* ad__gslot needs a node whose input 0 is k */
    fake.in = &k;
    bool fresh;
    void *buf = ad__gslot(s, &fake, 0, &fresh);
    if (!buf) return;
    ad_tensor dst = ad__node(s->t, k)->value, src = dst;
    dst.data = buf;
    src.data = data;
    ad__add_into(&dst, &src);
}

/*
** A checkpoint in the fast sweep: its segment is recorded again past the tape's
** end, its outputs' slots seeded with the checkpoint's gradient, and the new
** nodes swept here, their VJPs adding into the same slots as they would in the
** plain recording. Then the segment is rewound away; gradients it left in its
** inputs' slots that live in the dropped part of the arena are copied out first
** and back in after (the only copies this costs).
*/
static void replay_fast(ad_sweep *s, const sweep_args *a, uint32_t nslots, uint32_t i)
{
    ad_tape *t = s->t;
    const ad_node *n = ad__node(t, i);
    const ad_custom_rec *r = ad__rec(n);
    ad_mark m = ad__tape_mark(t);
    uint32_t nparams = t->nparams, lo = t->count;
    ad_gbuf *saved = ad__malloc((size_t)n->nin * sizeof *saved + 1);
    void **keep = ad__calloc((size_t)n->nin + 1, sizeof *keep);
    ad_gbuf *old = s->gbufs;
    ad_var *outs;
    if (!saved || !keep) {
        ad__fail(t, AD_ERR_NOMEM, "ad_checkpoint: out of memory");
        goto done;
    }
    for (uint32_t j = 0; j < n->nin; j++) saved[j] = old[n->in[j]];
    if (r->replay(t, n, &outs) != AD_OK) goto done;
    uint32_t hi = t->count;
    ad_gbuf *gb = ad__arena_alloc(t, (size_t)hi * sizeof *gb);
    if (!gb) goto done;
    memcpy(gb, old, (size_t)nslots * sizeof *gb);
    memset(gb + nslots, 0, (size_t)(hi - nslots) * sizeof *gb);
    for (uint32_t k = nparams; s->accumulate && k < t->nparams; k++) { /* params the segment joined */
        uint32_t id = t->params[k];
        if (id >= lo && direct(s, id)) gb[id] = (ad_gbuf){ad__node(t, id)->param_grad->data, AD_NO_NODE, true};
    }
    s->gbufs = gb;
    for (int k = 0; k < r->n_out; k++)
        seed_slot(s, outs[k].id, (char *)old[i].data + (size_t)r->offset[k] * ad_dtype_size(n->value.dtype));
    fast_range(s, a, hi, hi, lo);
    /* inputs whose slot changed may now point into what the rewind drops: keep their bytes */
    for (uint32_t j = 0; j < n->nin && t->status == AD_OK; j++) {
        uint32_t k = n->in[j];
        ad_gbuf *g = &gb[k];
        if (!g->data || (g->data == saved[j].data && g->owned == saved[j].owned && g->node == saved[j].node))
            continue;
        size_t bytes = ad__nbytes(&ad__node(t, k)->value);
        keep[j] = ad__malloc(bytes ? bytes : 1);
        if (!keep[j]) {
            ad__fail(t, AD_ERR_NOMEM, "ad_checkpoint: out of memory");
            break;
        }
        if (bytes) memcpy(keep[j], g->data, bytes);
        *g = (ad_gbuf){NULL, AD_NO_NODE, false};
    }
    memcpy(old, gb, (size_t)nslots * sizeof *gb);
    s->gbufs = old;
    ad__tape_rewind(t, m);
    t->nparams = nparams;
    for (uint32_t j = 0; j < n->nin && t->status == AD_OK; j++) {
        if (!keep[j] || old[n->in[j]].data) continue; /* (an input given twice is kept once) */
        size_t bytes = ad__nbytes(&ad__node(t, n->in[j])->value);
        void *buf = ad__arena_alloc(t, bytes);
        if (!buf) break;
        if (bytes) memcpy(buf, keep[j], bytes);
        old[n->in[j]] = (ad_gbuf){buf, AD_NO_NODE, true};
    }
done:
    s->gbufs = old;
    for (uint32_t j = 0; keep && j < n->nin; j++) ad__free(keep[j]);
    ad__free(keep);
    ad__free(saved);
}

/*
** The reverse sweep of replay's scalar program (replay.c). After a replay of a scalar
** graph, ad_backward sweeps the program's steps instead of the nodes: one F64 gradient
** per node in a dense array, each step adding its fast VJP's one-element formulas into
** its inputs' gradients in the order the fast sweep adds them (input 0, then input 1;
** written when a gradient has none yet, added otherwise), so the gradients are the
** fast sweep's bit for bit; the leaves then get theirs as the fast sweep gives them, in
** the same order, through the same nodes. Taken by ad_backward without AD_CREATE_GRAPH
** and without anomaly detection, when the output is one of the program's steps and every
** differentiable step has its formulas. With AD_ACCUMULATE each param's grad is read into
** its gradient first and written back after, the same additions in the same order; params
** sharing a grad tensor (or more than PLAN_MAX_PARAMS of them) take the fast sweep.
*/
#define PLAN_MAX_PARAMS 64

/* With AD_ACCUMULATE: whether param node p's grad is its gradient's buffer (direct), for a
** scalar param of the program; *fits false when the program cannot take it. */
static bool plan_direct(const ad_node *p, bool *fits)
{
    if (!(p->flags & AD_NODE_PARAM) || !p->param_grad || !p->param_grad->data) return false;
    if (p->value.ndim != 0 || p->value.dtype != AD_F64) return false; /* (no step reads it) */
    *fits = p->param_grad->size == 1 && p->param_grad->dtype == AD_F64;
    return true;
}

static bool plan_fits(ad_tape *t, const sweep_args *a)
{
    if (!a->to_leaves || a->n || t->anomaly || t->plan_state != AD_PLAN_OK || !t->plan_grad) return false;
    uint32_t top = a->y.id;
    if (top >= t->plan_count || t->count < t->plan_count) return false;
    const ad_node *y = ad__node(t, top);
    if (y->op == AD_OP_CONST || y->op == AD_OP_LEAF || y->op == AD_OP_PARAM) return false;
    if (!(a->flags & AD_ACCUMULATE)) return true;
    const void *seen[PLAN_MAX_PARAMS];
    int nseen = 0;
    for (uint32_t k = 0; k < t->nparams; k++) {
        uint32_t id = t->params[k];
        bool fits = true;
        if (id > top || !plan_direct(ad__node(t, id), &fits)) continue;
        if (!fits || nseen == PLAN_MAX_PARAMS) return false;
        const void *d = ad__node(t, id)->param_grad->data;
        for (int j = 0; j < nseen; j++)
            if (seen[j] == d) return false;
        seen[nseen++] = d;
    }
    return true;
}

/* Adds r into gradient k, or writes it there when k has none yet. */
static inline void plan_put(double *g, unsigned char *has, uint32_t k, double r)
{
    if (has[k]) {
        g[k] += r;
    } else {
        g[k] = r;
        has[k] = 1;
    }
}

static ad_status plan_sweep(ad_tape *t, const sweep_args *a)
{
    uint32_t top = a->y.id, count = top + 1;
    bool acc = (a->flags & AD_ACCUMULATE) != 0, fits;
    double *g = ad__arena_alloc(t, (size_t)count * sizeof *g);
    unsigned char *has = g ? ad__arena_alloc(t, count) : NULL;
    if (!has) return t->status; /* AD_ERR_NOMEM is on the tape */
    memset(has, 0, count);
    for (uint32_t k = 0; acc && k < t->nparams; k++) { /* params' grads, read in */
        uint32_t id = t->params[k];
        const ad_node *p = ad__node(t, id);
        if (id > top || !plan_direct(p, &fits)) continue;
        g[id] = *(const double *)p->param_grad->data;
        has[id] = 1;
    }
    g[top] = *(const double *)ad__val(a->seed)->data;
    has[top] = 1;

    bool was_enabled = t->grad_enabled;
    t->grad_enabled = false;
    t->in_backward = true;
    for (const struct ad_replay_step *st = t->steps + t->nsteps; st-- > t->steps;) {
        uint32_t i = st->id;
        if (i > top || !has[i] || !(st->flags & AD_NODE_REQ_GRAD)) continue;
        double gy = g[i], x = *st->a, y = *st->y;
        if (st->kind == AD_STEP_UNARY) {
            plan_put(g, has, st->ia, st->gx(gy, x, y, st->c0));
            continue;
        }
        double b = *st->b;
        if (st->in_req & 1) plan_put(g, has, st->ia, st->ga(gy, x, b, y));
        if (st->in_req & 2) plan_put(g, has, st->ib, st->gb(gy, x, b, y));
    }
    for (uint32_t k = 0; acc && k < t->nparams; k++) { /* params' grads, written back */
        uint32_t id = t->params[k];
        const ad_node *p = ad__node(t, id);
        if (id <= top && plan_direct(p, &fits)) *(double *)p->param_grad->data = g[id];
    }
    for (uint32_t k = t->nplan_leaves; k-- > 0 && t->status == AD_OK;) { /* the others' gradients */
        uint32_t i = t->plan_leaves[k];
        ad_node *n = ad__node(t, i);
        if (i > top || !has[i] || !(n->flags & AD_NODE_REQ_GRAD)) continue;
        if (n->op != AD_OP_LEAF && n->op != AD_OP_PARAM) continue;
        if (acc && plan_direct(n, &fits)) continue;
        to_leaf(t, n, ad__wrap(t, &n->value, &g[i]));
    }
    t->bw_node = AD_NO_NODE;
    t->in_backward = false;
    t->grad_enabled = was_enabled;
    return t->status;
}

static ad_status sweep_fast(ad_tape *t, const sweep_args *a)
{
    if (plan_fits(t, a)) return plan_sweep(t, a);
    uint32_t top = a->y.id, count = top + 1;
    ad_gbuf *gb = ad__arena_alloc(t, (size_t)count * sizeof *gb);
    if (!gb) return t->status;
    memset(gb, 0, (size_t)count * sizeof *gb);
    ad_sweep sw = {t, gb, a->to_leaves && (a->flags & AD_ACCUMULATE)}, *s = &sw;
    /* AD_ACCUMULATE: every param's slot starts as its own grad tensor (a slot that is
    ** not empty is added into), so the inline paths need no param check */
    for (uint32_t k = 0; s->accumulate && k < t->nparams; k++) {
        uint32_t id = t->params[k]; /* (ids past a rewind may be other nodes now: direct() checks) */
        if (id <= top && direct(s, id)) gb[id] = (ad_gbuf){ad__node(t, id)->param_grad->data, AD_NO_NODE, true};
    }
    gb[top] = (ad_gbuf){ad__val(a->seed)->data, a->seed.id, false};

    bool was_enabled = t->grad_enabled;
    t->grad_enabled = false;
    t->in_backward = true;
    fast_range(s, a, count, count, 0);
    gb = s->gbufs;
    t->bw_node = AD_NO_NODE;
    for (int i = 0; i < a->n && t->status == AD_OK; i++) {
        uint32_t k = a->xs[i].id;
        a->out[i] = (k < count && gb[k].data) ? gvar(s, k) : ad__zeros_like(a->xs[i]);
    }
    t->in_backward = false;
    t->grad_enabled = was_enabled;
    return t->status;
}

static ad_status sweep(ad_tape *t, const sweep_args *a)
{
    return (a->flags & AD_CREATE_GRAPH) ? sweep_graph(t, a) : sweep_fast(t, a);
}

/* Whether a seed of the output's dtype and shape; records the error otherwise. */
static bool seed_fits(ad_tape *t, const char *op, const ad_tensor *seed, const ad_tensor *vy)
{
    if (seed->dtype == vy->dtype && ad_shape_equal(seed, vy)) return true;
    char s1[96], s2[96];
    ad__fail(t, seed->dtype != vy->dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE, "%s: seed %s %s does not match output %s %s",
             op, ad_shape_str(seed->ndim, seed->shape, s1, 96), ad_dtype_name(seed->dtype),
             ad_shape_str(vy->ndim, vy->shape, s2, 96), ad_dtype_name(vy->dtype));
    return false;
}

/* make_seed's copy of a large seed on the pool: bytes [lo, hi) (in units of 64 bytes). */
typedef struct seed_copy {
    char *dst;
    const char *src;
    size_t bytes;
} seed_copy;

static void seed_copy_range(void *ctx, int64_t lo, int64_t hi)
{
    const seed_copy *c = ctx;
    size_t a = (size_t)lo * 64, e = (size_t)hi * 64 < c->bytes ? (size_t)hi * 64 : c->bytes;
    memcpy(c->dst + a, c->src + a, e - a);
}

/* A seed var: ones when seed is NULL; else, when lend, the caller's seed read in place (the fast
** sweep only reads it, and copies it where it would reach a leaf: unlent); else a copy in the
** arena (with AD_CREATE_GRAPH the seed var is part of a graph that outlives the call). Reading in
** place saves a pass over memory the size of the output: on the 1x1 convolution of bench_conv
** (3.2 MB of seed) the copy was about 8% of a forward and backward. */
static ad_var make_seed(ad_tape *t, const char *op, ad_var y, const ad_tensor *seed, bool lend)
{
    const ad_tensor *vy = ad__val(y);
    if (!seed) {
        if (vy->size != 1) {
            char s1[96];
            ad__fail(t, AD_ERR_SHAPE, "%s: output %s has %lld elements; pass a seed (dL/dy) for non-scalar outputs",
                     op, ad_shape_str(vy->ndim, vy->shape, s1, 96), (long long)vy->size);
            return ad__invalid(t);
        }
        ad_var one = ad_full(t, vy->dtype, vy->ndim, vy->shape, 1.0);
        if (one.id != AD_NO_NODE) ad__node(t, one.id)->flags |= AD_NODE_BACKWARD;
        return one;
    }
    if (!seed_fits(t, op, seed, vy)) return ad__invalid(t);
    size_t bytes = ad__nbytes(seed);
    if (lend && bytes > 0) {
        /* (a CONST leaf: nothing writes its data; the sweep's slot for it is not owned) */
        ad_var s = ad__wrap(t, vy, (void *)(uintptr_t)seed->data);
        if (s.id != AD_NO_NODE) ad__node(t, s.id)->flags |= AD_NODE_BACKWARD;
        return s;
    }
    /* copied straight into the arena (no fill first: a large seed is one pass over memory, not two) */
    void *data = ad__arena_alloc(t, bytes ? bytes : 1);
    if (!data) return ad__invalid(t); /* AD_ERR_NOMEM is on the tape */
    int nth = ad__par_threads(seed->size);
    if (nth > 1) { /* (a convolution's output gradient: 3.2 MB in bench_conv's second layer) */
        seed_copy c = {data, seed->data, bytes};
        ad__par_for(nth, (int64_t)((bytes + 63) / 64), 64 / (int64_t)ad_dtype_size(seed->dtype), seed_copy_range, &c);
    } else if (bytes) {
        memcpy(data, seed->data, bytes);
    }
    ad_var s = ad__wrap(t, vy, data);
    if (s.id == AD_NO_NODE) return s;
    ad__node(t, s.id)->flags |= AD_NODE_BACKWARD; /* part of the backward pass (DOT, fingerprint) */
    return s;
}

/* y carries no gradient. When it still depends on leaves or params with grad enabled (only
** through ops whose gradient is 0, such as ad_sign), each of them gets a zero gradient, as in
** PyTorch, and this returns true; false when y depends on none (ad_backward's error). */
static bool zero_leaf_grads(ad_tape *t, ad_var y)
{
    uint32_t count = y.id + 1;
    unsigned char *seen = ad__arena_alloc(t, count);
    if (!seen) return true; /* AD_ERR_NOMEM is on the tape */
    memset(seen, 0, count);
    seen[y.id] = 1;
    bool any = false, was_enabled = t->grad_enabled;
    t->grad_enabled = false;
    t->in_backward = true;
    for (uint32_t i = count; i-- > 0 && t->status == AD_OK;) {
        if (!seen[i]) continue;
        ad_node *n = ad__node(t, i);
        if (n->op == AD_OP_LEAF || n->op == AD_OP_PARAM) {
            if (!(n->flags & AD_NODE_REQ_GRAD)) continue;
            any = true;
            if (n->grad == AD_NO_NODE) n->grad = ad__zeros_like(ad__var(t, i)).id; /* a param's grad tensor: + 0 */
            continue;
        }
        for (uint32_t j = 0; j < n->nin; j++) seen[n->in[j]] = 1;
    }
    t->in_backward = false;
    t->grad_enabled = was_enabled;
    return any || t->status != AD_OK;
}

ad_status ad_backward(ad_var y, const ad_tensor *seed, unsigned flags)
{
    ad_tape *t;
    if (!ad__begin("ad_backward", 1, &y, &t)) return t ? (t->status ? t->status : AD_ERR_ARG) : AD_ERR_ARG;
    ad__replay_mark_end(t); /* a replay recomputes what was recorded before this pass */
    if (!ad__req(y)) {
        if (zero_leaf_grads(t, y)) return t->status;
        ad__fail(t, AD_ERR_STATE,
                 "ad_backward: the output does not depend on any leaf or param with grad enabled");
        return t->status;
    }
    if (ad__check_versions(t, y.id, "ad_backward") != AD_OK) return t->status;
    bool lend = seed && !(flags & AD_CREATE_GRAPH);
    ad_var s = make_seed(t, "ad_backward", y, seed, lend);
    if (s.id == AD_NO_NODE) return t->status;
    sweep_args a = {y, s, flags, true, 0, NULL, NULL, lend ? seed : NULL};
    return sweep(t, &a);
}

static ad_status gradients(const char *op, ad_var y, ad_var seed, bool has_seed, int n, const ad_var *xs,
                           ad_var *out, unsigned flags)
{
    ad_tape *t;
    if (!ad__begin(op, 1, &y, &t)) return t ? (t->status ? t->status : AD_ERR_ARG) : AD_ERR_ARG;
    ad__replay_mark_end(t); /* a replay recomputes what was recorded before this pass */
    if (n < 0 || (n > 0 && (!xs || !out))) {
        ad__fail(t, AD_ERR_ARG, "%s: %s", op, n < 0 ? "negative count" : "xs or grads_out is NULL");
        return t->status;
    }
    for (int i = 0; i < n; i++) out[i] = ad__invalid(t);
    for (int i = 0; i < n; i++)
        if (xs[i].tape != t) { /* (ad__begin below checks xs against each other only) */
            ad__fail(t, AD_ERR_ARG, "%s: xs[%d] is %s", op, i,
                     xs[i].tape ? "on a different tape from the output" : "not a var (no tape)");
            return t->status;
        }
    if (n > 0 && !ad__begin(op, n, xs, &t)) return t->status ? t->status : AD_ERR_ARG;
    if (has_seed) {
        if (seed.tape != t) {
            ad__fail(t, AD_ERR_ARG, "%s: the seed is %s", op,
                     seed.tape ? "on a different tape from the output" : "not a var (no tape)");
            return t->status;
        }
        if (!ad__begin(op, 1, &seed, &t)) return t->status ? t->status : AD_ERR_ARG;
        if (!seed_fits(t, op, ad__val(seed), ad__val(y))) return t->status;
    } else {
        seed = make_seed(t, op, y, NULL, false);
        if (seed.id == AD_NO_NODE) return t->status;
    }
    if (ad__check_versions(t, y.id, op) != AD_OK) return t->status;
    sweep_args a = {y, seed, flags, false, n, xs, out, NULL};
    return sweep(t, &a);
}

ad_status ad_gradients(ad_var y, int n, const ad_var *xs, ad_var *grads_out, unsigned flags)
{
    return gradients("ad_gradients", y, ad__invalid(y.tape), false, n, xs, grads_out, flags);
}

ad_status ad_gradients_seed(ad_var y, ad_var seed, int n, const ad_var *xs, ad_var *grads_out, unsigned flags)
{
    return gradients("ad_gradients_seed", y, seed, true, n, xs, grads_out, flags);
}

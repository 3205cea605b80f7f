/* forward.c: forward mode: the tangent sweep over a recorded tape, J v, Jacobians by columns, and H v by forward over reverse. */
#include "forward.h"

/*
** The tape is in topological order, so tangents propagate by one loop forward
** over node ids: tan[i] holds the node id of node i's tangent (AD_NO_NODE for a
** zero tangent). Each node with a tangent on some input gets its op's tangent
** rule (the JVP beside its forward kernel and VJP), written with the engine's
** ops, so the sweep appends its work to the tape: the tangents are vars like
** any other, differentiable again (reverse over forward), and the sweep runs as
** well over nodes a backward pass recorded with AD_CREATE_GRAPH (forward over
** reverse: the tangent of a gradient is a Hessian-vector product).
*/

/* A tangent rule must return its node's shape and dtype; anything else is a bug in the op. */
static bool check_tangent(ad_tape *t, const ad_node *n, ad_var v)
{
    const ad_tensor *got = ad__val(v);
    if (ad_shape_equal(got, &n->value) && got->dtype == n->value.dtype) return true;
    char s1[96], s2[96];
    ad__fail(t, AD_ERR_STATE, "%s: internal error: tangent rule gave %s %s, expected %s %s", ad__ops[n->op].name,
             ad_shape_str(got->ndim, got->shape, s1, 96), ad_dtype_name(got->dtype),
             ad_shape_str(n->value.ndim, n->value.shape, s2, 96), ad_dtype_name(n->value.dtype));
    return false;
}

ad_status ad_tangents(int n, const ad_var *xs, const ad_var *vs, int m, const ad_var *ys, ad_var *out)
{
    return ad__tangents_from(0, n, xs, vs, m, ys, out);
}

ad_status ad__tangents_from(uint32_t first, int n, const ad_var *xs, const ad_var *vs, int m, const ad_var *ys,
                            ad_var *out)
{
    ad_tape *t = NULL;
    const char *op = "ad_tangents";
    if (n < 1 || m < 1 || !xs || !vs || !ys || !out) {
        for (int i = 0; i < n && xs && !t; i++) t = xs[i].tape;
        for (int i = 0; i < m && ys && !t; i++) t = ys[i].tape;
        if (t) ad__fail(t, AD_ERR_ARG, "%s: %s", op, n < 1 || m < 1 ? "no inputs or no outputs" : "a NULL array");
        return AD_ERR_ARG;
    }
    for (int i = 0; i < m; i++) out[i] = ad__invalid(xs[0].tape);
    if (!ad__begin(op, n, xs, &t) || !ad__begin(op, n, vs, &t) || !ad__begin(op, m, ys, &t))
        return t ? (t->status ? t->status : AD_ERR_ARG) : AD_ERR_ARG;
    for (int i = 0; i < n; i++) {
        const ad_tensor *x = ad__val(xs[i]), *v = ad__val(vs[i]);
        if (!ad_shape_equal(x, v) || x->dtype != v->dtype) {
            char s1[96], s2[96];
            ad__fail(t, x->dtype != v->dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE,
                     "%s: tangent %d is %s %s, its input %s %s", op, i + 1, ad_shape_str(v->ndim, v->shape, s1, 96),
                     ad_dtype_name(v->dtype), ad_shape_str(x->ndim, x->shape, s2, 96), ad_dtype_name(x->dtype));
            return t->status;
        }
    }
    ad__replay_mark_end(t);
    uint32_t top = 0, lo = AD_NO_NODE;
    for (int i = 0; i < m; i++) top = ys[i].id > top ? ys[i].id : top;
    for (int i = 0; i < n; i++) lo = xs[i].id < lo ? xs[i].id : lo;
    uint32_t *tan = ad__arena_alloc(t, ((size_t)top + 1) * sizeof *tan);
    if (!tan) return t->status;
    for (uint32_t i = 0; i <= top; i++) tan[i] = AD_NO_NODE;
    for (int i = 0; i < n && t->status == AD_OK; i++) {
        uint32_t k = xs[i].id;
        if (k > top) continue;
        tan[k] = tan[k] == AD_NO_NODE ? vs[i].id : ad_add(ad__var(t, tan[k]), vs[i]).id;
    }
    ad_var small[3], *tx = small;
    uint32_t tx_cap = 3;
    for (uint32_t i = first > lo + 1 ? first : lo + 1; i <= top && t->status == AD_OK; i++) {
        const ad_node *nd = ad__node(t, i);
        if (!ad__jvps[nd->op]) continue; /* leaves, masks, detach: a zero tangent */
        if (tan[i] != AD_NO_NODE) continue; /* one of xs: its tangent is given */
        bool any = false;
        for (uint32_t j = 0; j < nd->nin && !any; j++) any = tan[nd->in[j]] != AD_NO_NODE;
        if (!any) continue;
        if (nd->nin > tx_cap) {
            tx = ad__arena_alloc(t, (size_t)nd->nin * sizeof *tx);
            if (!tx) break;
            tx_cap = nd->nin;
        }
        for (uint32_t j = 0; j < nd->nin; j++) tx[j] = ad__var(t, tan[nd->in[j]]);
        ad_var v = ad__jvps[nd->op](t, nd, i, tx);
        if (t->status != AD_OK) break;
        if (!ad__has(v)) continue;
        if (!check_tangent(t, nd, v)) break;
        tan[i] = v.id;
    }
    for (int i = 0; i < m && t->status == AD_OK; i++) {
        uint32_t k = ys[i].id;
        out[i] = tan[k] != AD_NO_NODE ? ad__var(t, tan[k]) : ad__zeros_like(ys[i]);
    }
    if (t->status != AD_OK)
        for (int i = 0; i < m; i++) out[i] = ad__invalid(t);
    return t->status;
}

/* ---- functions of one tensor ---- */

typedef struct fctx {
    ad_tape *t;
    ad_var x, y;
} fctx;

static bool tensor_ok(const ad_tensor *t)
{
    int64_t size;
    return ad__shape_size(t->ndim, t->shape, &size) && size == t->size && (size == 0 || t->data);
}

/* Validates x and out, builds the tape and records y = f(x) (as functional.c does). */
static ad_status setup(fctx *c, ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *out)
{
    c->t = NULL;
    if (!f || !x || !out) return AD_ERR_ARG;
    if (x->dtype != AD_F32 && x->dtype != AD_F64) return AD_ERR_DTYPE;
    if (out->dtype != x->dtype) return AD_ERR_DTYPE;
    if (!tensor_ok(x) || !tensor_ok(out)) return AD_ERR_SHAPE;
    c->t = ad_tape_new();
    if (!c->t) return AD_ERR_NOMEM;
    c->x = ad_leaf(c->t, x);
    if (!ad_ok(c->x)) return ad_tape_status(c->t);
    c->y = f(c->t, &c->x, ctx);
    if (ad_tape_status(c->t) != AD_OK) return ad_tape_status(c->t);
    if (c->y.tape != c->t || !ad_ok(c->y)) return AD_ERR_STATE;
    return AD_OK;
}

/* A constant var holding src's values (converted to x's dtype), shaped like x. */
static ad_var const_like(ad_tape *t, const ad_tensor *like, const ad_tensor *src)
{
    ad_var s = ad_full(t, like->dtype, like->ndim, like->shape, 0.0);
    if (s.id != AD_NO_NODE && ad_tensor_copy(&ad__node(t, s.id)->value, src) != AD_OK) {
        ad__fail(t, AD_ERR_SHAPE, "internal error: tangent size mismatch");
        return ad__invalid(t);
    }
    return s;
}

/* out's elements [at, at + src->size) with stride `stride` = src's values (any dtype). */
static void put_strided(ad_tensor *out, int64_t at, int64_t stride, const ad_tensor *src)
{
    for (int64_t i = 0; i < src->size; i++) ad_tensor_set(out, at + i * stride, ad_tensor_get(src, i));
}

static ad_status check_v(const ad_tensor *x, const ad_tensor *v)
{
    if (!v) return AD_ERR_ARG;
    if (x && v->dtype != x->dtype) return AD_ERR_DTYPE;
    if (x && (!tensor_ok(v) || !ad_shape_equal(v, x))) return AD_ERR_SHAPE;
    return AD_OK;
}

ad_status ad_jvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out)
{
    ad_status s = check_v(x, v);
    if (s != AD_OK) return s;
    fctx c;
    s = setup(&c, f, ctx, x, out);
    if (s == AD_OK && !ad_shape_equal(out, ad__val(c.y))) s = AD_ERR_SHAPE;
    ad_var tv, ty;
    if (s == AD_OK) {
        tv = const_like(c.t, x, v);
        s = tv.id == AD_NO_NODE ? ad_tape_status(c.t) : ad_tangents(1, &c.x, &tv, 1, &c.y, &ty);
    }
    if (s == AD_OK) put_strided(out, 0, 1, ad__val(ty));
    ad_tape_free(c.t);
    return s;
}

ad_status ad_jacfwd(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out)
{
    fctx c;
    ad_status s = setup(&c, f, ctx, x, out);
    if (s == AD_OK) {
        int64_t m = ad__val(c.y)->size, n = x->size;
        if (out->ndim != 2 || out->shape[0] != m || out->shape[1] != n) s = AD_ERR_SHAPE;
        for (int64_t j = 0; j < n && s == AD_OK; j++) {
            ad_mark mk = ad__tape_mark(c.t);
            ad_var e = ad_full(c.t, x->dtype, x->ndim, x->shape, 0.0), ty;
            if (e.id == AD_NO_NODE) {
                s = ad_tape_status(c.t);
                break;
            }
            ad_tensor_set(&ad__node(c.t, e.id)->value, j, 1.0);
            s = ad_tangents(1, &c.x, &e, 1, &c.y, &ty);
            if (s == AD_OK) put_strided(out, j, n, ad__val(ty)); /* column j */
            ad__tape_rewind(c.t, mk);
        }
    }
    ad_tape_free(c.t);
    return s;
}

ad_status ad_hvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out)
{
    ad_status s = check_v(x, v);
    if (s != AD_OK) return s;
    if (out && x && !ad_shape_equal(out, x)) return AD_ERR_SHAPE;
    fctx c;
    s = setup(&c, f, ctx, x, out);
    ad_var g, tv, hv;
    if (s == AD_OK && ad__val(c.y)->size != 1) s = AD_ERR_SHAPE;
    if (s == AD_OK) s = ad_gradients(c.y, 1, &c.x, &g, AD_CREATE_GRAPH);
    if (s == AD_OK) {
        /* the tangent of the recorded gradient in direction v is H v; nothing differentiates it again */
        ad_tape_set_grad_enabled(c.t, false);
        tv = const_like(c.t, x, v);
        s = tv.id == AD_NO_NODE ? ad_tape_status(c.t) : ad_tangents(1, &c.x, &tv, 1, &g, &hv);
    }
    if (s == AD_OK) put_strided(out, 0, 1, ad__val(hv));
    ad_tape_free(c.t);
    return s;
}

/* functional.c: Jacobians, Hessians, Hessian-vector and Jacobian-vector products of functions of one tensor. */
#include "tape.h"

/*
** Each helper records f once on a private tape with x as a leaf and then runs
** reverse sweeps over that recording:
**   Jacobian  row r = e_r^T J: one sweep per output element, seeded with e_r;
**   Hessian   g = grad f recorded with AD_CREATE_GRAPH, then row i = e_i^T dg/dx;
**   HVP       the same g, one sweep seeded with v: d(g . v)/dx = H v (H is never formed);
**   JVP       the double-VJP trick: g(u) = J^T u is recorded with AD_CREATE_GRAPH
**             for a leaf u shaped like f's output; g is linear in u, so the
**             sweep of g seeded with v gives d(g . v)/du = J v.
** Each row's sweep is rewound afterwards, so the tape stays the size of one
** recording plus one backward pass. Results are written into `out` (x's dtype;
** values converted if f's output has another dtype).
*/

typedef struct fctx {
    ad_tape *t;
    ad_var x, y;
} fctx;

/* true when a caller's tensor is well formed: its shape, size and data agree. */
static bool tensor_ok(const ad_tensor *t)
{
    int64_t size;
    return ad__shape_size(t->ndim, t->shape, &size) && size == t->size && (size == 0 || t->data);
}

/* Validates x and out, builds the tape and records y = f(x). */
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
    /* f must return a valid var of this tape */
    if (c->y.tape != c->t || !ad_ok(c->y)) return AD_ERR_STATE;
    return AD_OK;
}

/* true when out has exactly the given dimensions. */
static bool shape_is(const ad_tensor *out, int ndim, const int64_t *shape)
{
    if (out->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (out->shape[i] != shape[i]) return false;
    return true;
}

/* A constant var holding a copy of src's values, converted to dtype dt and
** shaped like `like`; invalid when out of memory. */
static ad_var const_copy(ad_tape *t, const ad_tensor *like, ad_dtype dt, const ad_tensor *src)
{
    ad_var s = ad_full(t, dt, like->ndim, like->shape, 0.0);
    if (s.id == AD_NO_NODE) return s;
    if (ad_tensor_copy(&ad__node(t, s.id)->value, src) != AD_OK) {
        ad__fail(t, AD_ERR_SHAPE, "internal error: seed size mismatch");
        return ad__invalid(t);
    }
    return s;
}

/* Copies a gradient's values (any dtype) into out's elements [at, at + src->size). */
static void put(ad_tensor *out, int64_t at, const ad_tensor *src)
{
    if (out->dtype == src->dtype) {
        size_t es = ad_dtype_size(src->dtype);
        if (src->size) memcpy((char *)out->data + (size_t)at * es, src->data, ad__nbytes(src));
        return;
    }
    for (int64_t i = 0; i < src->size; i++) ad_tensor_set(out, at + i, ad_tensor_get(src, i));
}

/*
** Rows of d(top)/dx, one sweep per element of top: row r goes to out at
** r * x->size. top is y (Jacobian) or grad f recorded with AD_CREATE_GRAPH
** (Hessian).
*/
static ad_status rows(fctx *c, ad_var top, ad_tensor *out)
{
    ad_tape *t = c->t;
    const ad_tensor *vt = ad__val(top);
    int64_t m = vt->size, n = ad__val(c->x)->size;
    for (int64_t r = 0; r < m; r++) {
        ad_mark mk = ad__tape_mark(t);
        ad_var seed = ad_full(t, vt->dtype, vt->ndim, vt->shape, 0.0);
        if (seed.id == AD_NO_NODE) return ad_tape_status(t);
        ad_tensor_set(&ad__node(t, seed.id)->value, r, 1.0);
        ad_var g;
        ad_status s = ad_gradients_seed(top, seed, 1, &c->x, &g, 0);
        if (s != AD_OK) return s;
        put(out, r * n, ad__val(g));
        ad__tape_rewind(t, mk);
    }
    return AD_OK;
}

/* g = df/dx recorded with AD_CREATE_GRAPH; f must be scalar-valued. */
static ad_status grad_graph(fctx *c, ad_var *g)
{
    if (ad__val(c->y)->size != 1) return AD_ERR_SHAPE;
    return ad_gradients(c->y, 1, &c->x, g, AD_CREATE_GRAPH);
}

ad_status ad_jacobian(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out)
{
    fctx c;
    ad_status s = setup(&c, f, ctx, x, out);
    if (s == AD_OK) {
        const int64_t want[2] = {ad__val(c.y)->size, x->size};
        s = shape_is(out, 2, want) ? rows(&c, c.y, out) : AD_ERR_SHAPE;
    }
    ad_tape_free(c.t);
    return s;
}

ad_status ad_hessian(ad_fn f, void *ctx, const ad_tensor *x, ad_tensor *out)
{
    fctx c;
    ad_status s = setup(&c, f, ctx, x, out);
    if (s == AD_OK) {
        const int64_t want[2] = {x->size, x->size};
        ad_var g;
        if (!shape_is(out, 2, want)) s = AD_ERR_SHAPE;
        if (s == AD_OK) s = grad_graph(&c, &g);
        if (s == AD_OK) s = rows(&c, g, out);
    }
    ad_tape_free(c.t);
    return s;
}

ad_status ad_hvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out)
{
    if (!v) return AD_ERR_ARG;
    if (x && v->dtype != x->dtype) return AD_ERR_DTYPE;
    if (x && (!tensor_ok(v) || !ad_shape_equal(v, x) || (out && !ad_shape_equal(out, x)))) return AD_ERR_SHAPE;
    fctx c;
    ad_status s = setup(&c, f, ctx, x, out);
    ad_var g, hv;
    if (s == AD_OK) s = grad_graph(&c, &g);
    if (s == AD_OK) {
        ad_var seed = const_copy(c.t, ad__val(g), ad__val(g)->dtype, v);
        s = seed.id == AD_NO_NODE ? ad_tape_status(c.t) : ad_gradients_seed(g, seed, 1, &c.x, &hv, 0);
    }
    if (s == AD_OK) put(out, 0, ad__val(hv));
    ad_tape_free(c.t);
    return s;
}

ad_status ad_jvp(ad_fn f, void *ctx, const ad_tensor *x, const ad_tensor *v, ad_tensor *out)
{
    if (!v) return AD_ERR_ARG;
    if (x && v->dtype != x->dtype) return AD_ERR_DTYPE;
    if (x && (!tensor_ok(v) || !ad_shape_equal(v, x))) return AD_ERR_SHAPE;
    fctx c;
    ad_status s = setup(&c, f, ctx, x, out);
    if (s != AD_OK) goto done;
    const ad_tensor *vy = ad__val(c.y);
    if (!ad_shape_equal(out, vy)) {
        s = AD_ERR_SHAPE;
        goto done;
    }
    /* u: a dummy cotangent; g(u) = J^T u is linear in u, so u's values do not matter */
    ad_var zeros = ad_full(c.t, vy->dtype, vy->ndim, vy->shape, 0.0);
    ad_var u = zeros.id == AD_NO_NODE ? zeros : ad_leaf(c.t, ad__val(zeros));
    ad_var g, jv;
    if (!ad_ok(u)) {
        s = ad_tape_status(c.t);
        goto done;
    }
    s = ad_gradients_seed(c.y, u, 1, &c.x, &g, AD_CREATE_GRAPH);
    if (s != AD_OK) goto done;
    ad_var seed = const_copy(c.t, ad__val(g), ad__val(g)->dtype, v);
    s = seed.id == AD_NO_NODE ? ad_tape_status(c.t) : ad_gradients_seed(g, seed, 1, &u, &jv, 0);
    if (s == AD_OK) put(out, 0, ad__val(jv));
done:
    ad_tape_free(c.t);
    return s;
}

/* functional.c: Jacobians, Hessians, Hessian-vector and vector-Jacobian products of functions of one or n tensors by reverse sweeps. */
#include "tape.h"

/*
** Each helper records f once on a private tape with x as a leaf and then runs
** reverse sweeps over that recording:
**   Jacobian  row r = e_r^T J: one sweep per output element, seeded with e_r;
**   Hessian   g = grad f recorded with AD_CREATE_GRAPH, then row i = e_i^T dg/dx;
**   HVP (n)   the same g, one sweep seeded with v: d(g . v)/dx = H v (H is never formed).
** (ad_jvp, ad_jacfwd and ad_hvp of one tensor are forward mode: forward.c.)
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

/* ---- functions of n tensors, with messages ---- */

typedef struct fnctx {
    const char *fn; /* the public function's name, for messages */
    char *err;
    size_t errlen;
    ad_tape *t;
    int n;
    ad_var *x;
    ad_var y;
} fnctx;

static ad_status ferr(fnctx *c, ad_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ad_status ferr(fnctx *c, ad_status s, const char *fmt, ...)
{
    if (!c->err || c->errlen == 0) return s;
    int w = snprintf(c->err, c->errlen, "%s: ", c->fn);
    if (w >= 0 && (size_t)w < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + w, c->errlen - (size_t)w, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* The tape's error as the result (its message after the function's name). */
static ad_status tape_err(fnctx *c)
{
    ad_status s = ad_tape_status(c->t);
    return ferr(c, s ? s : AD_ERR_STATE, "%s", s ? ad_tape_error(c->t) : "f returned an invalid var");
}

/* Validates x[0..n), records y = f(x) on a private tape. */
static ad_status setup_n(fnctx *c, ad_fn f, void *ctx, int n, const ad_tensor *const *x)
{
    c->t = NULL;
    c->x = NULL;
    c->n = n;
    if (c->err && c->errlen) c->err[0] = '\0';
    if (!f) return ferr(c, AD_ERR_ARG, "f is NULL");
    if (n < 1 || !x) return ferr(c, AD_ERR_ARG, "%s", n < 1 ? "n must be at least 1" : "x is NULL");
    for (int i = 0; i < n; i++) {
        if (!x[i]) return ferr(c, AD_ERR_ARG, "x[%d] is NULL", i);
        if (x[i]->dtype != AD_F32 && x[i]->dtype != AD_F64)
            return ferr(c, AD_ERR_DTYPE, "x[%d] has an unknown dtype %d", i, (int)x[i]->dtype);
        if (x[i]->dtype != x[0]->dtype)
            return ferr(c, AD_ERR_DTYPE, "x[%d] is %s but x[0] is %s: the inputs share one dtype", i,
                        ad_dtype_name(x[i]->dtype), ad_dtype_name(x[0]->dtype));
        if (!tensor_ok(x[i])) return ferr(c, AD_ERR_SHAPE, "x[%d]: its shape, size and data do not agree", i);
    }
    c->t = ad_tape_new();
    c->x = ad__calloc((size_t)n, sizeof *c->x);
    if (!c->t || !c->x) return ferr(c, AD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) c->x[i] = ad_leaf(c->t, x[i]);
    if (ad_tape_status(c->t) != AD_OK) return tape_err(c);
    c->y = f(c->t, c->x, ctx);
    if (ad_tape_status(c->t) != AD_OK) return tape_err(c);
    if (c->y.tape != c->t || !ad_ok(c->y))
        return ferr(c, AD_ERR_STATE, "f returned %s", c->y.tape != c->t ? "a var of another tape" : "an invalid var");
    return AD_OK;
}

static void teardown(fnctx *c)
{
    ad_tape_free(c->t);
    ad__free(c->x);
}

/* out must be a well-formed tensor of x's dtype and the given shape. */
static ad_status want_shape(fnctx *c, const char *what, int i, const ad_tensor *out, int ndim, const int64_t *shape)
{
    char s1[96], s2[96];
    const ad_tensor *x0 = ad__val(c->x[0]);
    if (!out) return ferr(c, AD_ERR_ARG, "%s[%d] is NULL", what, i);
    if (out->dtype != x0->dtype)
        return ferr(c, AD_ERR_DTYPE, "%s[%d] is %s, expected %s (the inputs' dtype)", what, i, ad_dtype_name(out->dtype),
                    ad_dtype_name(x0->dtype));
    if (!tensor_ok(out) || !shape_is(out, ndim, shape))
        return ferr(c, AD_ERR_SHAPE, "%s[%d] is %s, expected %s", what, i, ad_shape_str(out->ndim, out->shape, s1, 96),
                    ad_shape_str(ndim, shape, s2, 96));
    return AD_OK;
}

/* f must be scalar-valued (Hessians, HVPs). */
static ad_status want_scalar(fnctx *c)
{
    const ad_tensor *v = ad__val(c->y);
    char s1[96];
    if (v->size == 1) return AD_OK;
    return ferr(c, AD_ERR_SHAPE, "f must return one element, it returned %s", ad_shape_str(v->ndim, v->shape, s1, 96));
}

ad_status ad_vjp(ad_fn f, void *ctx, int n, const ad_tensor *const *x, const ad_tensor *v, ad_tensor *const *out,
                 char *err, size_t errlen)
{
    fnctx c = {"ad_vjp", err, errlen, NULL, 0, NULL, {0}};
    ad_status s = setup_n(&c, f, ctx, n, x);
    ad_var *g = NULL;
    if (s != AD_OK) goto done;
    const ad_tensor *vy = ad__val(c.y);
    s = !out ? ferr(&c, AD_ERR_ARG, "out is NULL") : !v ? ferr(&c, AD_ERR_ARG, "v is NULL") : AD_OK;
    if (s == AD_OK && v->dtype != x[0]->dtype)
        s = ferr(&c, AD_ERR_DTYPE, "v is %s, expected %s", ad_dtype_name(v->dtype), ad_dtype_name(x[0]->dtype));
    if (s == AD_OK && (!tensor_ok(v) || !ad_shape_equal(v, vy))) {
        char s1[96], s2[96];
        s = ferr(&c, AD_ERR_SHAPE, "v is %s, expected f's output shape %s", ad_shape_str(v->ndim, v->shape, s1, 96),
                 ad_shape_str(vy->ndim, vy->shape, s2, 96));
    }
    for (int i = 0; s == AD_OK && i < n; i++) s = want_shape(&c, "out", i, out[i], x[i]->ndim, x[i]->shape);
    if (s != AD_OK) goto done;
    g = ad__calloc((size_t)n, sizeof *g);
    if (!g) {
        s = ferr(&c, AD_ERR_NOMEM, "out of memory");
        goto done;
    }
    ad_var seed = const_copy(c.t, vy, vy->dtype, v);
    if (seed.id == AD_NO_NODE || ad_gradients_seed(c.y, seed, n, c.x, g, 0) != AD_OK) {
        s = tape_err(&c);
        goto done;
    }
    for (int i = 0; i < n; i++) put(out[i], 0, ad__val(g[i]));
done:
    ad__free(g);
    teardown(&c);
    return s;
}

/* Rows of d(top)/dx[j] for every j, one sweep per element r of top: row r goes to
** blocks[j] at r * size(x[j]). */
static ad_status rows_n(fnctx *c, ad_var top, ad_tensor *const *blocks, ad_var *g)
{
    ad_tape *t = c->t;
    const ad_tensor *vt = ad__val(top);
    for (int64_t r = 0; r < vt->size; r++) {
        ad_mark mk = ad__tape_mark(t);
        ad_var seed = ad_full(t, vt->dtype, vt->ndim, vt->shape, 0.0);
        if (seed.id == AD_NO_NODE) return tape_err(c);
        ad_tensor_set(&ad__node(t, seed.id)->value, r, 1.0);
        if (ad_gradients_seed(top, seed, c->n, c->x, g, 0) != AD_OK) return tape_err(c);
        for (int j = 0; j < c->n; j++) put(blocks[j], r * ad__val(c->x[j])->size, ad__val(g[j]));
        ad__tape_rewind(t, mk);
    }
    return AD_OK;
}

ad_status ad_jacobian_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, ad_tensor *const *out, char *err,
                        size_t errlen)
{
    fnctx c = {"ad_jacobian_n", err, errlen, NULL, 0, NULL, {0}};
    ad_status s = setup_n(&c, f, ctx, n, x);
    ad_var *g = NULL;
    if (s == AD_OK && !out) s = ferr(&c, AD_ERR_ARG, "out is NULL");
    for (int i = 0; s == AD_OK && i < n; i++) {
        const int64_t want[2] = {ad__val(c.y)->size, x[i]->size};
        s = want_shape(&c, "out", i, out[i], 2, want);
    }
    if (s == AD_OK && !(g = ad__calloc((size_t)n, sizeof *g))) s = ferr(&c, AD_ERR_NOMEM, "out of memory");
    if (s == AD_OK) s = rows_n(&c, c.y, out, g);
    ad__free(g);
    teardown(&c);
    return s;
}

ad_status ad_hessian_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, ad_tensor *const *out, char *err,
                       size_t errlen)
{
    fnctx c = {"ad_hessian_n", err, errlen, NULL, 0, NULL, {0}};
    ad_status s = setup_n(&c, f, ctx, n, x);
    ad_var *g = NULL, *h = NULL;
    if (s == AD_OK) s = want_scalar(&c);
    if (s == AD_OK && !out) s = ferr(&c, AD_ERR_ARG, "out is NULL");
    for (int i = 0; s == AD_OK && i < n * n; i++) {
        const int64_t want[2] = {x[i / n]->size, x[i % n]->size};
        s = want_shape(&c, "out", i, out[i], 2, want);
    }
    if (s == AD_OK && (!(g = ad__calloc((size_t)n, sizeof *g)) || !(h = ad__calloc((size_t)n, sizeof *h))))
        s = ferr(&c, AD_ERR_NOMEM, "out of memory");
    if (s == AD_OK && ad_gradients(c.y, n, c.x, g, AD_CREATE_GRAPH) != AD_OK) s = tape_err(&c);
    for (int i = 0; s == AD_OK && i < n; i++) s = rows_n(&c, g[i], out + (size_t)i * (size_t)n, h);
    ad__free(g);
    ad__free(h);
    teardown(&c);
    return s;
}

ad_status ad_hvp_n(ad_fn f, void *ctx, int n, const ad_tensor *const *x, const ad_tensor *const *v,
                   ad_tensor *const *out, char *err, size_t errlen)
{
    fnctx c = {"ad_hvp_n", err, errlen, NULL, 0, NULL, {0}};
    ad_status s = setup_n(&c, f, ctx, n, x);
    ad_var *g = NULL;
    if (s == AD_OK) s = want_scalar(&c);
    if (s == AD_OK && (!out || !v)) s = ferr(&c, AD_ERR_ARG, "%s is NULL", !out ? "out" : "v");
    for (int i = 0; s == AD_OK && i < n; i++) {
        s = want_shape(&c, "v", i, v[i], x[i]->ndim, x[i]->shape);
        if (s == AD_OK) s = want_shape(&c, "out", i, out[i], x[i]->ndim, x[i]->shape);
    }
    if (s == AD_OK && !(g = ad__calloc((size_t)n, sizeof *g))) s = ferr(&c, AD_ERR_NOMEM, "out of memory");
    if (s == AD_OK && ad_gradients(c.y, n, c.x, g, AD_CREATE_GRAPH) != AD_OK) s = tape_err(&c);
    if (s == AD_OK) {
        /* s = sum_i g_i . v_i; its gradient is H v */
        ad_var dot = ad_scalar(c.t, ad__val(c.y)->dtype, 0.0);
        for (int i = 0; i < n; i++)
            dot = ad_add(dot, ad_sum(ad_mul(g[i], ad_cast(ad_const(c.t, v[i]), ad__val(g[i])->dtype))));
        if (!ad_ok(dot) || ad_gradients(dot, n, c.x, g, 0) != AD_OK) s = tape_err(&c);
    }
    for (int i = 0; s == AD_OK && i < n; i++) put(out[i], 0, ad__val(g[i]));
    ad__free(g);
    teardown(&c);
    return s;
}

/* custom.c: custom ops: a user's function with its own VJP recorded as one node, its tuple outputs and its tangent rule. */
#include "custom.h"
#include "jvp.h"

#include <stdio.h>

/* ---- errors ---- */

static const char *kind_word(const ad_custom_rec *r) { return r->fn ? "checkpoint" : "custom op"; }

/* Records "custom op 'NAME': ..." on the tape. */
static void cfail(ad_tape *t, const ad_custom_rec *r, ad_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cfail(ad_tape *t, const ad_custom_rec *r, ad_status s, const char *fmt, ...)
{
    if (t->status != AD_OK) return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ad__fail(t, s, "%s '%s': %s", kind_word(r), r->op.name, buf);
}

void ad__custom_blame(ad_tape *t, const char *name, const char *what)
{
    char buf[2 * sizeof t->msg];
    int w = snprintf(buf, sizeof buf, "custom op '%s': ", name);
    if (w < 0 || strncmp(t->msg, buf, (size_t)w) == 0) return; /* named already */
    snprintf(buf + w, sizeof buf - (size_t)w, "%s: %s", what, t->msg);
    memcpy(t->msg, buf, sizeof t->msg - 1);
    t->msg[sizeof t->msg - 1] = '\0';
}

/* A callback's outcome: AD_OK, or the error recorded (the tape's own, prefixed, or the status returned). */
static bool callback_ok(ad_tape *t, const ad_custom_rec *r, ad_status before, ad_status s, const char *what)
{
    if (before == AD_OK && t->status != AD_OK) {
        ad__custom_blame(t, r->op.name, what);
        return false;
    }
    if (s != AD_OK) {
        cfail(t, r, s, "%s failed: %s", what, ad_status_str(s));
        return false;
    }
    return t->status == AD_OK;
}

/* ---- recording ---- */

/* Output k's header viewing `packed` (the node's value or its gradient). */
static ad_tensor view(const ad_custom_rec *r, int k, const ad_tensor *packed)
{
    ad_tensor v = r->shapes[k];
    v.data = (char *)packed->data + (size_t)r->offset[k] * ad_dtype_size(packed->dtype);
    v.flags_ = AD_TENSOR_BORROWED;
    return v;
}

static bool same_header(const ad_tensor *a, const ad_tensor *b)
{
    return a->dtype == b->dtype && a->ndim == b->ndim && a->size == b->size && a->data == b->data &&
           ad_shape_equal(a, b);
}

/* Runs the user's forward into node n's storage (at record time and for replay). */
static ad_status run_forward(ad_tape *t, ad_node *n)
{
    const ad_custom_rec *r = ad__rec(n);
    const ad_tensor **in = ad__arena_alloc(t, (size_t)r->n * sizeof *in);
    ad_tensor *outs = ad__arena_alloc(t, (size_t)r->n_out * sizeof *outs);
    ad_tensor **po = ad__arena_alloc(t, (size_t)r->n_out * sizeof *po);
    if (!in || !outs || !po) return t->status;
    for (int j = 0; j < r->n; j++) in[j] = ad__in(t, n, j);
    for (int k = 0; k < r->n_out; k++) {
        outs[k] = view(r, k, &n->value);
        po[k] = &outs[k];
    }
    ad_status before = t->status;
    ad_status s = r->op.forward(r->ctx, r->n, in, po);
    if (!callback_ok(t, r, before, s, "forward")) return t->status;
    for (int k = 0; k < r->n_out; k++) {
        ad_tensor want = view(r, k, &n->value);
        if (!same_header(&outs[k], &want)) {
            cfail(t, r, AD_ERR_SHAPE, "forward changed the header (dtype, shape or data) of output %d", k + 1);
            return t->status;
        }
    }
    return AD_OK;
}

/* Fills and checks r->shapes from the user's shape() (or from vals, for checkpoints). */
static bool output_shapes(ad_tape *t, ad_custom_rec *r, const ad_var *in, const ad_tensor *vals)
{
    char s1[96];
    if (vals) {
        for (int k = 0; k < r->n_out; k++) r->shapes[k] = vals[k];
    } else {
        const ad_tensor **pin = ad__arena_alloc(t, (size_t)r->n * sizeof *pin);
        if (!pin) return false;
        for (int j = 0; j < r->n; j++) pin[j] = ad__val(in[j]);
        for (int k = 0; k < r->n_out; k++) ad__tensor_init(&r->shapes[k], AD_F64, 0, NULL, 1);
        ad_status before = t->status;
        ad_status s = r->op.shape(r->ctx, r->n, pin, r->shapes);
        if (!callback_ok(t, r, before, s, "shape")) return false;
    }
    for (int k = 0; k < r->n_out; k++) {
        ad_tensor *o = &r->shapes[k];
        int64_t size;
        if (ad_dtype_size(o->dtype) == 0) {
            cfail(t, r, AD_ERR_DTYPE, "shape gave output %d an unknown dtype %d", k + 1, (int)o->dtype);
            return false;
        }
        if (!ad__shape_size(o->ndim, o->shape, &size)) {
            if (o->ndim < 0 || o->ndim > AD_MAX_DIMS)
                cfail(t, r, AD_ERR_SHAPE, "shape gave output %d %d dimensions (0 to %d allowed)", k + 1, o->ndim,
                      AD_MAX_DIMS);
            else
                cfail(t, r, AD_ERR_SHAPE, "shape gave output %d the invalid shape %s", k + 1,
                      ad_shape_str(o->ndim, o->shape, s1, sizeof s1));
            return false;
        }
        if (o->dtype != r->shapes[0].dtype) {
            cfail(t, r, AD_ERR_DTYPE, "output %d is %s but output 1 is %s: the outputs of one op share a dtype", k + 1,
                  ad_dtype_name(o->dtype), ad_dtype_name(r->shapes[0].dtype));
            return false;
        }
        int64_t dims[AD_MAX_DIMS];
        memcpy(dims, o->shape, sizeof dims);
        ad__tensor_init(o, o->dtype, o->ndim, dims, size); /* (data, flags and dims past ndim cleared) */
        if (__builtin_add_overflow(r->offset[k], size, &r->offset[k + 1]) || r->offset[k + 1] > INT64_MAX / 16) {
            cfail(t, r, AD_ERR_SHAPE, "the outputs are too large together");
            return false;
        }
    }
    return true;
}

/* The descriptor's required fields; false after recording AD_ERR_ARG. */
static bool descriptor_ok(ad_tape *t, const char *fn, const ad_custom_op *op)
{
    const char *what = !op                        ? "the descriptor is NULL"
                       : !op->name                ? "the descriptor has no name"
                       : !op->shape               ? "shape is NULL"
                       : !op->forward             ? "forward is NULL"
                       : !op->vjp && !op->vjp_raw ? "neither vjp nor vjp_raw is given"
                       : op->n_out < 1            ? "n_out is below 1"
                                                  : NULL;
    if (!what) return true;
    if (op && op->name)
        ad__fail(t, AD_ERR_ARG, "%s: custom op '%s': %s", fn, op->name, what);
    else
        ad__fail(t, AD_ERR_ARG, "%s: %s", fn, what);
    return false;
}

ad_status ad__custom_record(ad_tape *t, ad_op kind, const ad_custom_op *op, ad_fn_n fn, ad_replay_fn replay,
                            void *ctx, int n, const ad_var *in, const ad_tensor *vals, ad_var *out)
{
    ad_mark m = ad__tape_mark(t);
    ad_custom_rec *r = ad__arena_alloc(t, sizeof *r);
    if (!r) return t->status;
    memset(r, 0, sizeof *r);
    r->op = *op;
    r->ctx = ctx;
    r->fn = fn;
    r->replay = replay;
    r->n = n;
    r->n_out = op->n_out;
    size_t len = strlen(op->name);
    char *name = ad__arena_alloc(t, len + 1);
    r->diff = ad__arena_alloc(t, (size_t)n * sizeof *r->diff);
    r->outs = ad__arena_alloc(t, (size_t)r->n_out * sizeof *r->outs);
    r->offset = ad__arena_alloc(t, ((size_t)r->n_out + 1) * sizeof *r->offset);
    r->shapes = ad__arena_alloc(t, (size_t)r->n_out * sizeof *r->shapes);
    if (!name || !r->diff || !r->outs || !r->offset || !r->shapes) goto fail;
    memcpy(name, op->name, len + 1);
    r->op.name = name;
    r->op.differentiable = r->diff;
    for (int j = 0; j < n; j++) r->diff[j] = op->differentiable ? op->differentiable[j] : true;
    r->offset[0] = 0;
    if (!output_shapes(t, r, in, vals)) goto fail;

    const ad_tensor *o0 = &r->shapes[0];
    int64_t total = r->offset[r->n_out];
    ad_attr attr = {{0, 0}, {r->n_out, 0, 0, 0}, ad__rec_ref(r)};
    uint32_t id;
    ad_node *node = r->n_out == 1 ? ad__emit_node(t, kind, n, in, o0->dtype, o0->ndim, o0->shape, &attr, &id)
                                  : ad__emit_node(t, kind, n, in, o0->dtype, 1, &total, &attr, &id);
    if (!node) goto fail;
    /* only differentiable inputs make the output need a gradient */
    unsigned any = 0;
    for (int j = 0; j < n; j++) {
        bool req = r->diff[j] && ad__req(in[j]);
        any |= req;
        if (j < 8 && !req) node->in_req &= (uint8_t) ~(1u << j);
    }
    node->flags = ad__node_flags(t, kind, any);
    if (vals) {
        for (int k = 0; k < r->n_out; k++) {
            ad_tensor dst = view(r, k, &node->value);
            if (dst.size) memcpy(dst.data, vals[k].data, (size_t)dst.size * ad_dtype_size(dst.dtype));
        }
    } else if (run_forward(t, node) != AD_OK) {
        goto fail;
    }
    ad_var self = ad__emit_done(t, id);
    if (self.id == AD_NO_NODE) goto fail;
    if (r->n_out == 1) {
        r->outs[0] = id;
        out[0] = self;
        return AD_OK;
    }
    for (int k = 0; k < r->n_out; k++) {
        ad_attr a = {{0, 0}, {k, r->offset[k], 0, 0}, ad__rec_ref(r)};
        const ad_tensor *ok = &r->shapes[k];
        out[k] = ad__emit(t, AD_OP_CUSTOM_OUT, 1, &self, ok->dtype, ok->ndim, ok->shape, &a);
        if (out[k].id == AD_NO_NODE) goto fail;
        r->outs[k] = out[k].id;
    }
    return AD_OK;
fail:
    if (t->status == AD_OK) cfail(t, r, AD_ERR_NOMEM, "out of memory");
    ad__tape_rewind(t, m);
    return t->status;
}

ad_status ad_custom_n(const ad_custom_op *op, void *ctx, int n, const ad_var *in, ad_var *out)
{
    const char *fn = "ad_custom";
    ad_tape *t = NULL;
    for (int j = 0; in && j < n && !t; j++) t = in[j].tape;
    if (!t) return AD_ERR_ARG; /* nowhere to record an error */
    int n_out = op && op->n_out > 0 ? op->n_out : 1;
    if (out)
        for (int k = 0; k < n_out; k++) out[k] = ad__invalid(t);
    if (t->status != AD_OK) return t->status;
    if (!descriptor_ok(t, fn, op)) return t->status;
    if (!out) {
        ad__fail(t, AD_ERR_ARG, "%s: custom op '%s': out is NULL", fn, op->name);
        return t->status;
    }
    if (!ad__begin(op->name, n, in, &t)) return t->status ? t->status : AD_ERR_ARG;
    return ad__custom_record(t, AD_OP_CUSTOM, op, NULL, NULL, ctx, n, in, NULL, out);
}

ad_var ad_custom(const ad_custom_op *op, void *ctx, int n, const ad_var *in)
{
    ad_tape *t = NULL;
    for (int j = 0; in && j < n && !t; j++) t = in[j].tape;
    if (!t) return ad__invalid(NULL);
    int n_out = op && op->n_out > 0 ? op->n_out : 1;
    ad_var small[4], *out = n_out <= 4 ? small : ad__arena_alloc(t, (size_t)n_out * sizeof *out);
    if (!out) return ad__invalid(t);
    return ad_custom_n(op, ctx, n, in, out) == AD_OK ? out[0] : ad__invalid(t);
}

/* ---- the forward kernels the op table calls (replay) ---- */

ad_status ad__fwd_custom(ad_tape *t, ad_node *n) { return run_forward(t, n); }

ad_status ad__fwd_custom_out(ad_tape *t, ad_node *n)
{
    const ad_tensor *packed = ad__in(t, n, 0);
    n->value.data = (char *)packed->data + (size_t)n->attr.i[1] * ad_dtype_size(packed->dtype);
    return AD_OK;
}

ad_status ad__fwd_custom_grad(ad_tape *t, ad_node *n)
{
    cfail(t, ad__rec(n), AD_ERR_UNSUPPORTED, "the result of a raw VJP cannot be recomputed");
    return t->status;
}

/* ---- VJPs ---- */

/* Checks a gradient (or tangent) var a callback produced for `want`; false after recording the error. */
static bool var_fits(ad_tape *t, const ad_custom_rec *r, const char *what, int j, ad_var g, const ad_tensor *want)
{
    char s1[96], s2[96];
    if (g.tape != t || g.gen != t->gen || g.id >= t->count) {
        cfail(t, r, AD_ERR_ARG, "%s gave %d a var that is %s", what, j + 1,
              g.tape != t       ? "of another tape"
              : g.gen != t->gen ? "stale"
                                : "past the tape's end");
        return false;
    }
    const ad_tensor *v = ad__val(g);
    if (v->dtype != want->dtype || !ad_shape_equal(v, want)) {
        cfail(t, r, v->dtype != want->dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE, "%s gave %d as %s %s, expected %s %s", what,
              j + 1, ad_shape_str(v->ndim, v->shape, s1, 96), ad_dtype_name(v->dtype),
              ad_shape_str(want->ndim, want->shape, s2, 96), ad_dtype_name(want->dtype));
        return false;
    }
    return true;
}

static void engine_vjp(ad_tape *t, const ad_node *n, const ad_custom_rec *r, ad_var gy, ad_var *gx)
{
    ad_var *vin = ad__arena_alloc(t, (size_t)r->n * sizeof *vin);
    ad_var *gin = ad__arena_alloc(t, (size_t)r->n * sizeof *gin);
    ad_var *vout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *vout);
    ad_var *gout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *gout);
    if (!vin || !gin || !vout || !gout || !ad__custom_split(t, r, gy, gout)) return;
    for (int j = 0; j < r->n; j++) {
        vin[j] = ad__inv(t, n, j);
        gin[j] = AD_NO_VAR;
    }
    for (int k = 0; k < r->n_out; k++) vout[k] = ad__var(t, r->outs[k]);
    ad_status s = r->op.vjp(r->ctx, r->n, vin, r->n_out, vout, gout, gin);
    if (!callback_ok(t, r, AD_OK, s, "vjp")) return;
    for (int j = 0; j < r->n; j++) {
        if (!r->diff[j] || !ad__needs(t, n, j) || gin[j].id == AD_NO_NODE) continue;
        if (!var_fits(t, r, "vjp", j, gin[j], ad__in(t, n, j))) return;
        gx[j] = gin[j];
    }
}

static void raw_vjp(ad_tape *t, const ad_node *n, uint32_t self, const ad_custom_rec *r, ad_var gy, ad_var *gx)
{
    bool graph = t->grad_enabled; /* AD_CREATE_GRAPH: the results must know they came from here */
    int n_in = r->n, n_out = r->n_out;
    const ad_tensor **pin = ad__arena_alloc(t, (size_t)n_in * sizeof *pin);
    ad_tensor *gh = ad__arena_alloc(t, (size_t)n_in * sizeof *gh);
    ad_tensor **pgin = ad__arena_alloc(t, (size_t)n_in * sizeof *pgin);
    ad_tensor *oh = ad__arena_alloc(t, 2 * (size_t)n_out * sizeof *oh);
    const ad_tensor **pout = ad__arena_alloc(t, 2 * (size_t)n_out * sizeof *pout);
    ad_var *xs = graph ? ad__arena_alloc(t, ((size_t)n_in + 1) * sizeof *xs) : NULL;
    uint32_t *ids = ad__arena_alloc(t, (size_t)n_in * sizeof *ids);
    if (!pin || !gh || !pgin || !oh || !pout || (graph && !xs) || !ids) return;
    for (int k = 0; k < n_out; k++) {
        oh[k] = view(r, k, &n->value);
        oh[n_out + k] = view(r, k, ad__val(gy));
        pout[k] = &oh[k];
        pout[n_out + k] = &oh[n_out + k];
    }
    for (int j = 0; j < n_in; j++) {
        pin[j] = ad__in(t, n, j);
        if (graph) xs[j] = ad__inv(t, n, j);
    }
    if (graph) xs[n_in] = gy;
    for (int j = 0; j < n_in; j++) {
        pgin[j] = NULL;
        ids[j] = AD_NO_NODE;
        if (!r->diff[j] || !ad__needs(t, n, j)) continue;
        const ad_tensor *x = pin[j];
        ad_var g;
        if (graph) {
            ad_attr a = {{0, 0}, {j, 0, 0, 0}, ad__rec_ref(r)};
            uint32_t id;
            ad_node *gn = ad__emit_node(t, AD_OP_CUSTOM_GRAD, n_in + 1, xs, x->dtype, x->ndim, x->shape, &a, &id);
            if (!gn) return;
            if (x->size) memset(gn->value.data, 0, ad__nbytes(x));
            g = ad__var(t, id);
        } else {
            g = ad_full(t, x->dtype, x->ndim, x->shape, 0.0);
            if (g.id == AD_NO_NODE) return;
        }
        ids[j] = g.id;
        gh[j] = *ad__val(g);
        pgin[j] = &gh[j];
    }
    ad_status s = r->op.vjp_raw(r->ctx, n_in, pin, n_out, pout, pout + n_out, pgin);
    if (!callback_ok(t, r, AD_OK, s, "vjp_raw")) return;
    for (int j = 0; j < n_in; j++) {
        if (!pgin[j]) continue;
        if (!same_header(pgin[j], ad__val(ad__var(t, ids[j])))) {
            cfail(t, r, AD_ERR_SHAPE, "vjp_raw changed the header (dtype, shape or data) of gin[%d]", j);
            return;
        }
        if (t->anomaly && !ad__all_finite(pgin[j])) {
            ad__anomaly_fail(t, self);
            return;
        }
        gx[j] = ad__var(t, ids[j]);
    }
}

void ad__vjp_custom(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    const ad_custom_rec *r = ad__rec(n);
    /* during a sweep grad is enabled exactly under AD_CREATE_GRAPH */
    if (r->op.vjp && (t->grad_enabled || !r->op.vjp_raw))
        engine_vjp(t, n, r, gy, gx);
    else
        raw_vjp(t, n, self, r, gy, gx);
}

/* output k's gradient g placed into the packed gradient of the custom node */
void ad__vjp_custom_out(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    (void)self;
    const ad_tensor *packed = ad__in(t, n, 0);
    int64_t size = n->value.size;
    gx[0] = ad_pad_axis(ad_reshape(gy, 1, &size), 0, n->attr.i[1], packed->shape[0]);
}

/* Calls the user's jvp with zeros for missing tangents; tout[k] checked against the outputs. */
static bool call_jvp(ad_tape *t, const ad_custom_rec *r, const ad_var *in, const ad_var *tin, ad_var *tout)
{
    ad_var *full = ad__arena_alloc(t, (size_t)r->n * sizeof *full);
    if (!full) return false;
    for (int j = 0; j < r->n; j++) full[j] = tin[j].id != AD_NO_NODE ? tin[j] : ad__zeros_like(in[j]);
    for (int k = 0; k < r->n_out; k++) tout[k] = AD_NO_VAR;
    if (t->status != AD_OK) return false;
    ad_status s = r->op.jvp(r->ctx, r->n, in, full, r->n_out, tout);
    if (!callback_ok(t, r, AD_OK, s, "jvp")) return false;
    for (int k = 0; k < r->n_out; k++) {
        if (tout[k].id == AD_NO_NODE) {
            const ad_tensor *o = &r->shapes[k];
            tout[k] = ad_full(t, o->dtype, o->ndim, o->shape, 0.0);
        } else if (!var_fits(t, r, "jvp", k, tout[k], &r->shapes[k])) {
            return false;
        }
    }
    return t->status == AD_OK;
}

/* The outputs' tangents (or gradients) packed like the node's value: one flat vector. */
static ad_var pack(ad_tape *t, const ad_custom_rec *r, const ad_var *parts)
{
    if (r->n_out == 1) return parts[0];
    ad_var *flat = ad__arena_alloc(t, (size_t)r->n_out * sizeof *flat);
    if (!flat) return ad__invalid(t);
    const int64_t minus1 = -1;
    for (int k = 0; k < r->n_out; k++) flat[k] = ad_reshape(parts[k], 1, &minus1);
    return ad_concat(r->n_out, flat, 0);
}

/*
** The VJP of a raw VJP's result gin_j = J_j(x)^T g (node inputs x_0..x_{n-1}, g),
** given its cotangent w:
**   in g:  J_j w, one jvp with tangent w on input j;
**   in x:  d/dx (g . J_j(x) w), by sweeping that jvp's recording again.
** Without a jvp there is nothing to build it from: AD_ERR_UNSUPPORTED.
*/
void ad__vjp_custom_grad(ad_tape *t, const ad_node *n, uint32_t self, ad_var w, ad_var *gx)
{
    (void)self;
    const ad_custom_rec *r = ad__rec(n);
    int j = (int)n->attr.i[0], n_in = r->n;
    if (!r->op.jvp) {
        cfail(t, r, AD_ERR_UNSUPPORTED,
              "a second derivative needs the derivative of its raw VJP (vjp_raw); give the descriptor an "
              "engine-op vjp or a jvp");
        return;
    }
    ad_var *xs = ad__arena_alloc(t, (size_t)n_in * sizeof *xs), *tin = ad__arena_alloc(t, (size_t)n_in * sizeof *tin);
    ad_var *tout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *tout);
    ad_var *gout = ad__arena_alloc(t, (size_t)r->n_out * sizeof *gout);
    int *which = ad__arena_alloc(t, (size_t)n_in * sizeof *which);
    ad_var *sel = ad__arena_alloc(t, (size_t)n_in * sizeof *sel), *res = ad__arena_alloc(t, (size_t)n_in * sizeof *res);
    if (!xs || !tin || !tout || !gout || !which || !sel || !res) return;
    for (int i = 0; i < n_in; i++) {
        xs[i] = ad__inv(t, n, i);
        tin[i] = i == j ? w : AD_NO_VAR;
    }
    ad_var g = ad__inv(t, n, n_in);
    /* record the jvp with grad on, so that it can be swept in x below */
    bool was = t->grad_enabled, was_bw = t->in_backward;
    uint32_t bw = t->bw_node;
    t->grad_enabled = true;
    bool ok = call_jvp(t, r, xs, tin, tout);
    t->grad_enabled = was;
    if (!ok) return;
    if (ad__needs(t, n, n_in)) gx[n_in] = pack(t, r, tout);
    int m = 0;
    for (int i = 0; i < n_in; i++)
        if (ad__needs(t, n, i) && r->diff[i]) {
            which[m] = i;
            sel[m++] = xs[i];
        }
    if (m == 0 || t->status != AD_OK) return;
    t->grad_enabled = true;
    if (!ad__custom_split(t, r, g, gout)) goto restore;
    ad_var s = ad_scalar(t, ad__val(g)->dtype, 0.0);
    for (int k = 0; k < r->n_out; k++) s = ad_add(s, ad_sum(ad_mul(gout[k], tout[k])));
    if (t->status != AD_OK) goto restore;
    /* a sweep of its own (recorded, so that it does not touch the running sweep's buffers) */
    if (ad_gradients(s, m, sel, res, AD_CREATE_GRAPH) == AD_OK)
        for (int q = 0; q < m; q++) gx[which[q]] = res[q];
restore:
    t->grad_enabled = was;
    t->in_backward = was_bw;
    t->bw_node = bw;
}

/* ---- forward mode ---- */

ad_status ad__custom_jvp(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tin, ad_var *tout)
{
    (void)self;
    const ad_custom_rec *r = ad__rec(n);
    *tout = ad__invalid(t);
    if (t->status != AD_OK) return t->status;
    if (n->op == AD_OP_CUSTOM_OUT) {
        const ad_tensor *v = &n->value;
        if (tin[0].id == AD_NO_NODE) {
            *tout = ad_full(t, v->dtype, v->ndim, v->shape, 0.0);
        } else {
            *tout = ad_reshape(ad_slice(tin[0], 0, n->attr.i[1], n->attr.i[1] + v->size), v->ndim, v->shape);
        }
        return t->status;
    }
    if (n->op != AD_OP_CUSTOM || !r->op.jvp) {
        cfail(t, r, AD_ERR_UNSUPPORTED, "%s",
              n->op == AD_OP_CUSTOM ? "no jvp was given: forward mode is unsupported" : "forward mode is unsupported");
        return t->status;
    }
    ad_var *xs = ad__arena_alloc(t, (size_t)r->n * sizeof *xs),
           *parts = ad__arena_alloc(t, (size_t)r->n_out * sizeof *parts);
    if (!xs || !parts) return t->status;
    for (int j = 0; j < r->n; j++) xs[j] = ad__inv(t, n, j);
    if (call_jvp(t, r, xs, tin, parts)) *tout = pack(t, r, parts);
    return t->status;
}

ad_var ad__jvp_custom(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)
{
    ad_var out;
    return ad__custom_jvp(t, n, self, tx, &out) == AD_OK ? out : ad__invalid(t);
}

ad_var ad__jvp_custom_out(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)
{
    if (tx[0].id == AD_NO_NODE) return ad__invalid(t); /* a zero tangent stays zero */
    return ad__jvp_custom(t, n, self, tx);
}

ad_var ad__jvp_custom_grad(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)
{
    ad_var out;
    ad__custom_jvp(t, n, self, tx, &out); /* records AD_ERR_UNSUPPORTED naming the op */
    return ad__invalid(t);
}

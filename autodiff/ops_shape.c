/* ops_shape.c: ops that move data: transpose, reshape, broadcast (and its adjoint sum_to), slice, concat, gather. */
#include "jvp.h"
#include "vjp.h"
#include "kernels.h"


static char *shp(const ad_tensor *x, char *buf) { return ad_shape_str(x->ndim, x->shape, buf, 96); }

/* Copies [outer, len_src, inner] blocks of src into dst at offset `at` of dst's axis length. */
static void copy_axis_block(ad_tensor *dst, const ad_tensor *src, int axis, int64_t at, bool to_dst)
{
    /* to_dst: dst[.., at:at+len, ..] = src ; else dst = src[.., at:at+len, ..] */
    const ad_tensor *big = to_dst ? dst : src, *small = to_dst ? src : dst;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= big->shape[i];
    for (int i = axis + 1; i < big->ndim; i++) inner *= big->shape[i];
    size_t es = ad_dtype_size(dst->dtype);
    int64_t lb = big->shape[axis], ls = small->shape[axis];
    size_t chunk = (size_t)(ls * inner) * es;
    if (chunk == 0) return;
    for (int64_t o = 0; o < outer; o++) {
        char *pb = (char *)big->data + (size_t)((o * lb + at) * inner) * es;
        char *ps = (char *)small->data + (size_t)(o * ls * inner) * es;
        if (to_dst)
            memcpy(pb, ps, chunk);
        else
            memcpy(ps, pb, chunk);
    }
}

/* ---- transpose ---- */

/* transpose: y = x with axes ax0 and ax1 swapped; VJP: gx = transpose(gy, ax0, ax1) */
ad_var ad_transpose(ad_var x, int ax0, int ax1)
{
    ad_tape *t;
    if (!ad__begin("ad_transpose", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int a0, a1;
    if (!ad__axis(t, "ad_transpose", ax0, v->ndim, &a0) || !ad__axis(t, "ad_transpose", ax1, v->ndim, &a1))
        return ad__invalid(t);
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    shape[a0] = v->shape[a1];
    shape[a1] = v->shape[a0];
    ad_attr a = {{0}, {a0, a1}, NULL};
    return ad__emit(t, AD_OP_TRANSPOSE, 1, &x, v->dtype, v->ndim, shape, &a);
}

#define PERMUTE(T)                                                                                       \
    do {                                                                                                 \
        const T *s = x->data;                                                                            \
        T *d = y->data;                                                                                  \
        int64_t idx[AD_MAX_DIMS] = {0}, off = 0;                                                         \
        for (int64_t i = 0; i < y->size; i++) {                                                          \
            d[i] = s[off];                                                                               \
            ad__odometer_next(y->ndim, y->shape, idx, 1, (const int64_t *const[]){st}, &off);             \
        }                                                                                                \
    } while (0)

ad_status ad__fwd_transpose(ad_tape *t, ad_node *n)
{
    const ad_tensor *x = ad__in(t, n, 0);
    ad_tensor *y = &n->value;
    if (y->size == 0) return AD_OK;
    int64_t xs[AD_MAX_DIMS], st[AD_MAX_DIMS];
    int64_t stride = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        xs[i] = stride;
        stride *= x->shape[i];
    }
    for (int i = 0; i < x->ndim; i++) st[i] = xs[i];
    st[n->attr.i[0]] = xs[n->attr.i[1]];
    st[n->attr.i[1]] = xs[n->attr.i[0]];
    if (x->dtype == AD_F64)
        PERMUTE(double);
    else
        PERMUTE(float);
    return AD_OK;
}
VJP(transpose) { gx[0] = ad_transpose(gy, (int)n->attr.i[0], (int)n->attr.i[1]); }
/* Tangent rules (jvp.h), beside each VJP: TX is the input's tangent. */
#define TX tx[0]
JVP(transpose) { return ad_transpose(TX, (int)n->attr.i[0], (int)n->attr.i[1]); }

/* ---- reshape ---- */

/* reshape: y = x with a new shape of the same size (shares x's data); VJP: gx = reshape(gy, shape of x) */
ad_var ad_reshape(ad_var x, int ndim, const int64_t *shape)
{
    ad_tape *t;
    if (!ad__begin("ad_reshape", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    char s1[96], s2[96];
    if (ndim > 0 && !shape) {
        ad__fail(t, AD_ERR_ARG, "ad_reshape: shape is NULL for %d dimensions", ndim);
        return ad__invalid(t);
    }
    if (ndim < 0 || ndim > AD_MAX_DIMS) {
        ad__fail(t, AD_ERR_SHAPE, "ad_reshape: %d dimensions (0 to %d are allowed)", ndim, AD_MAX_DIMS);
        return ad__invalid(t);
    }
    int64_t out[AD_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (shape[i] < 0 || !ad__mul_ok(known, shape[i], &known)) {
            ad__fail(t, AD_ERR_SHAPE, "ad_reshape: invalid target shape %s for %s", ad_shape_str(ndim, shape, s1, 96),
                     shp(v, s2));
            return ad__invalid(t);
        }
    }
    if (infer >= 0) {
        if (known == 0 || v->size % known != 0) {
            ad__fail(t, AD_ERR_SHAPE, "ad_reshape: cannot infer -1 in %s from %s", ad_shape_str(ndim, shape, s1, 96),
                     shp(v, s2));
            return ad__invalid(t);
        }
        out[infer] = v->size / known;
        known = v->size;
    }
    if (known != v->size) {
        ad__fail(t, AD_ERR_SHAPE, "ad_reshape: cannot reshape %s (%lld elements) to %s", shp(v, s2),
                 (long long)v->size, ad_shape_str(ndim, shape, s1, 96));
        return ad__invalid(t);
    }
    return ad__emit(t, AD_OP_RESHAPE, 1, &x, v->dtype, ndim, out, NULL);
}
ad_status ad__fwd_reshape(ad_tape *t, ad_node *n) { return AD_OK; }
VJP(reshape)
{
    const ad_tensor *x = ad__in(t, n, 0);
    gx[0] = ad_reshape(gy, x->ndim, x->shape);
}
JVP(reshape) { return ad_reshape(TX, n->value.ndim, n->value.shape); }
FAST_VJP(reshape)
{
    ad_tape *t = sw->t;
    ad_tensor g = *ad__in(t, n, 0); /* same data, the input's shape */
    g.data = gy->data;
    ad__gpass(sw, n, 0, &g);
    return true;
}

/* ---- broadcast_to and its adjoint, sum_to ---- */

/* Whether shape `from` broadcasts to shape `to` as it is (NumPy's rules, `to` unchanged); false
** for an invalid shape. */
static bool broadcasts(int nfrom, const int64_t *from, int nto, const int64_t *to)
{
    int64_t size, out[AD_MAX_DIMS];
    int nout;
    if (!ad__shape_size(nfrom, from, &size) || !ad__shape_size(nto, to, &size) || nfrom > nto ||
        !ad__broadcast_shape(nfrom, from, nto, to, &nout, out))
        return false;
    for (int i = 0; i < nout; i++)
        if (out[i] != to[i]) return false;
    return true;
}

/* A caller's shape argument in an error message, or "(bad shape)" where it cannot be printed. */
static const char *shape_arg(int ndim, const int64_t *shape, char *buf)
{
    return ndim >= 0 && ndim <= AD_MAX_DIMS && (ndim == 0 || shape) ? ad_shape_str(ndim, shape, buf, 96) : "(bad shape)";
}

/* The front end of both: x's shape broadcasts to `shape` (broadcast_to), or `shape` to x's (sum_to). */
static ad_var broadcast_front(ad_op op, ad_var x, int ndim, const int64_t *shape)
{
    ad_tape *t;
    if (!ad__begin(ad__ops[op].name, 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    bool expand = op == AD_OP_BROADCAST_TO;
    if (expand ? !broadcasts(v->ndim, v->shape, ndim, shape) : !broadcasts(ndim, shape, v->ndim, v->shape)) {
        char s1[96], s2[96];
        if (expand)
            ad__fail(t, AD_ERR_SHAPE, "ad_broadcast_to: cannot broadcast %s to %s", shp(v, s1), shape_arg(ndim, shape, s2));
        else
            ad__fail(t, AD_ERR_SHAPE, "ad_sum_to: %s does not broadcast to %s", shape_arg(ndim, shape, s1), shp(v, s2));
        return ad__invalid(t);
    }
    return ad__emit(t, op, 1, &x, v->dtype, ndim, shape, NULL);
}

/* broadcast_to: y = x repeated along broadcast axes; VJP: gx = sum_to(gy, shape of x) */
ad_var ad_broadcast_to(ad_var x, int ndim, const int64_t *shape)
{
    return broadcast_front(AD_OP_BROADCAST_TO, x, ndim, shape);
}
ad_status ad__fwd_broadcast_to(ad_tape *t, ad_node *n)
{
    ad__broadcast_copy(&n->value, ad__in(t, n, 0));
    return AD_OK;
}
VJP(broadcast_to)
{
    const ad_tensor *x = ad__in(t, n, 0);
    gx[0] = ad_sum_to(gy, x->ndim, x->shape);
}
JVP(broadcast_to) { return ad_broadcast_to(TX, n->value.ndim, n->value.shape); }

/* (jvp.h) */
ad_var ad__tfit(ad_tape *t, const ad_node *n, ad_var v)
{
    (void)t;
    const ad_tensor *x = ad_value(v);
    if (!x || ad_shape_equal(x, &n->value)) return v;
    return ad_broadcast_to(v, n->value.ndim, n->value.shape);
}

/* sum_to: y = x summed over the axes along which `shape` broadcasts to x; VJP: gx = broadcast(gy) */
ad_var ad_sum_to(ad_var x, int ndim, const int64_t *shape) { return broadcast_front(AD_OP_SUM_TO, x, ndim, shape); }
ad_status ad__fwd_sum_to(ad_tape *t, ad_node *n)
{
    ad__sum_to_kernel(&n->value, ad__in(t, n, 0));
    return AD_OK;
}
VJP(sum_to)
{
    const ad_tensor *x = ad__in(t, n, 0);
    gx[0] = ad_broadcast_to(gy, x->ndim, x->shape);
}
JVP(sum_to) { return ad_sum_to(TX, n->value.ndim, n->value.shape); }

ad_var ad__unbroadcast(ad_tape *t, const ad_node *n, int i, ad_var g)
{
    const ad_tensor *x = ad__in(t, n, i), *gv = ad_value(g);
    if (!gv || ad_shape_equal(gv, x)) return g;
    return ad_sum_to(g, x->ndim, x->shape);
}

/* ---- slice and its adjoint, pad_axis ---- */

/* slice: y = x[.., start:stop, ..]; VJP: gx = pad_axis(gy, axis, start, length of x's axis) */
ad_var ad_slice(ad_var x, int axis, int64_t start, int64_t stop)
{
    ad_tape *t;
    if (!ad__begin("ad_slice", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, "ad_slice", axis, v->ndim, &ax)) return ad__invalid(t);
    int64_t len = v->shape[ax];
    if (start < 0) start += len;
    if (stop < 0) stop += len;
    start = start < 0 ? 0 : (start > len ? len : start);
    stop = stop < start ? start : (stop > len ? len : stop);
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    shape[ax] = stop - start;
    ad_attr a = {{0}, {ax, start, stop}, NULL};
    return ad__emit(t, AD_OP_SLICE, 1, &x, v->dtype, v->ndim, shape, &a);
}
ad_status ad__fwd_slice(ad_tape *t, ad_node *n)
{
    copy_axis_block(&n->value, ad__in(t, n, 0), (int)n->attr.i[0], n->attr.i[1], false);
    return AD_OK;
}
VJP(slice)
{
    int ax = (int)n->attr.i[0];
    gx[0] = ad_pad_axis(gy, ax, n->attr.i[1], ad__in(t, n, 0)->shape[ax]);
}
JVP(slice) { return ad_slice(TX, (int)n->attr.i[0], n->attr.i[1], n->attr.i[2]); }

/* pad_axis: y = zeros with x placed at [start, start + len) of `axis`; VJP: gx = slice(gy, axis, start, start + len) */
ad_var ad_pad_axis(ad_var x, int axis, int64_t start, int64_t size)
{
    ad_tape *t;
    if (!ad__begin("ad_pad_axis", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, "ad_pad_axis", axis, v->ndim, &ax)) return ad__invalid(t);
    if (start < 0 || size < 0 || start > size || v->shape[ax] > size - start) {
        ad__fail(t, AD_ERR_SHAPE, "ad_pad_axis: a length-%lld axis does not fit at %lld in a length-%lld axis",
                 (long long)v->shape[ax], (long long)start, (long long)size);
        return ad__invalid(t);
    }
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    shape[ax] = size;
    ad_attr a = {{0}, {ax, start, size}, NULL};
    return ad__emit(t, AD_OP_PAD_AXIS, 1, &x, v->dtype, v->ndim, shape, &a);
}
ad_status ad__fwd_pad_axis(ad_tape *t, ad_node *n)
{
    if (n->value.size) memset(n->value.data, 0, ad__nbytes(&n->value));
    copy_axis_block(&n->value, ad__in(t, n, 0), (int)n->attr.i[0], n->attr.i[1], true);
    return AD_OK;
}
VJP(pad_axis)
{
    int ax = (int)n->attr.i[0];
    int64_t s = n->attr.i[1];
    gx[0] = ad_slice(gy, ax, s, s + ad__in(t, n, 0)->shape[ax]);
}
JVP(pad_axis) { return ad_pad_axis(TX, (int)n->attr.i[0], n->attr.i[1], n->attr.i[2]); }

/* ---- concat ---- */

/* concat: y = [x_1, ..., x_n] joined along axis; VJP: gx_i = slice of gy at x_i's place */
ad_var ad_concat(int n, const ad_var *xs, int axis)
{
    ad_tape *t;
    if (n <= 0 || !xs) return ad__invalid(NULL); /* no operand names a tape to record on */
    if (!ad__begin("ad_concat", n, xs, &t)) return ad__invalid(t);
    const ad_tensor *v0 = ad__val(xs[0]);
    int ax;
    if (!ad__axis(t, "ad_concat", axis, v0->ndim, &ax)) return ad__invalid(t);
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v0->shape, sizeof shape);
    shape[ax] = 0;
    for (int i = 0; i < n; i++) {
        const ad_tensor *v = ad__val(xs[i]);
        char s1[96], s2[96];
        if (v->dtype != v0->dtype) {
            ad__fail(t, AD_ERR_DTYPE, "ad_concat: input %d is %s, input 1 is %s", i + 1, ad_dtype_name(v->dtype),
                     ad_dtype_name(v0->dtype));
            return ad__invalid(t);
        }
        bool ok = v->ndim == v0->ndim;
        for (int d = 0; ok && d < v->ndim; d++) ok = d == ax || v->shape[d] == v0->shape[d];
        if (!ok) {
            ad__fail(t, AD_ERR_SHAPE, "ad_concat: input %d %s does not match input 1 %s outside axis %d", i + 1,
                     shp(v, s1), shp(v0, s2), axis);
            return ad__invalid(t);
        }
        shape[ax] += v->shape[ax];
    }
    ad_attr a = {{0}, {ax}, NULL};
    return ad__emit(t, AD_OP_CONCAT, n, xs, v0->dtype, v0->ndim, shape, &a);
}
ad_status ad__fwd_concat(ad_tape *t, ad_node *n)
{
    int ax = (int)n->attr.i[0];
    int64_t at = 0;
    for (uint32_t i = 0; i < n->nin; i++) {
        const ad_tensor *x = ad__in(t, n, (int)i);
        copy_axis_block(&n->value, x, ax, at, true);
        at += x->shape[ax];
    }
    return AD_OK;
}
VJP(concat)
{
    int ax = (int)n->attr.i[0];
    int64_t at = 0;
    for (uint32_t i = 0; i < n->nin; i++) {
        int64_t len = ad__in(t, n, (int)i)->shape[ax];
        if (ad__needs(t, n, (int)i)) gx[i] = ad_slice(gy, ax, at, at + len);
        at += len;
    }
}
JVP(concat)
{
    ad_var *parts = ad__arena_alloc(t, n->nin * sizeof *parts);
    if (!parts) return ad__invalid(t);
    for (uint32_t i = 0; i < n->nin; i++) parts[i] = ad__tor0(t, n, tx, (int)i);
    return ad_concat((int)n->nin, parts, (int)n->attr.i[0]);
}

/* ---- index_select and its adjoint, index_add ---- */

/* Validates and copies idx into the arena, negative indices made positive. */
static const int64_t *copy_indices(ad_tape *t, const char *op, int64_t n, const int64_t *idx, int64_t len)
{
    if (n < 0 || (n > 0 && !idx)) {
        ad__fail(t, AD_ERR_ARG, "%s: %s", op, n < 0 ? "negative index count" : "index list is NULL");
        return NULL;
    }
    int64_t *out = ad__arena_alloc(t, (size_t)n * sizeof(int64_t));
    if (!out) return NULL;
    for (int64_t i = 0; i < n; i++) {
        int64_t k = idx[i] < 0 ? idx[i] + len : idx[i];
        if (k < 0 || k >= len) {
            ad__fail(t, AD_ERR_INDEX, "%s: index %lld (position %lld) is out of range for an axis of length %lld", op,
                     (long long)idx[i], (long long)i, (long long)len);
            return NULL;
        }
        out[i] = k;
    }
    return out;
}

/* index_select: y[.., i, ..] = x[.., idx[i], ..]; VJP: gx = index_add(gy, axis, idx, length of x's axis) */
ad_var ad_index_select(ad_var x, int axis, int64_t n, const int64_t *idx)
{
    ad_tape *t;
    if (!ad__begin("ad_index_select", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, "ad_index_select", axis, v->ndim, &ax)) return ad__invalid(t);
    const int64_t *ix = copy_indices(t, "ad_index_select", n, idx, v->shape[ax]);
    if (!ix) return ad__invalid(t);
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    shape[ax] = n;
    ad_attr a = {{0}, {ax, n}, ix};
    return ad__emit(t, AD_OP_INDEX_SELECT, 1, &x, v->dtype, v->ndim, shape, &a);
}

/* Moves rows between x (axis length lx) and y (axis length ly): y[idx[i]] (+)= x[i] or y[i] = x[idx[i]]. */
static void gather_scatter(const ad_node *n, const ad_tensor *x, ad_tensor *y, bool scatter)
{
    int ax = (int)n->attr.i[0];
    int64_t outer = 1, inner = 1, cnt = n->attr.i[1];
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->ndim; i++) inner *= x->shape[i];
    int64_t lx = x->shape[ax], ly = y->shape[ax];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < cnt; i++) {
            int64_t k = n->attr.idx[i];
            if (x->dtype == AD_F64) {
                const double *s = (const double *)x->data + (o * lx + (scatter ? i : k)) * inner;
                double *d = (double *)y->data + (o * ly + (scatter ? k : i)) * inner;
                for (int64_t j = 0; j < inner; j++) d[j] = scatter ? d[j] + s[j] : s[j];
            } else {
                const float *s = (const float *)x->data + (o * lx + (scatter ? i : k)) * inner;
                float *d = (float *)y->data + (o * ly + (scatter ? k : i)) * inner;
                for (int64_t j = 0; j < inner; j++) d[j] = scatter ? d[j] + s[j] : s[j];
            }
        }
}

ad_status ad__fwd_index_select(ad_tape *t, ad_node *n)
{
    gather_scatter(n, ad__in(t, n, 0), &n->value, false);
    return AD_OK;
}
VJP(index_select)
{
    int ax = (int)n->attr.i[0];
    gx[0] = ad_index_add(gy, ax, n->attr.i[1], n->attr.idx, ad__in(t, n, 0)->shape[ax]);
}
JVP(index_select) { return ad_index_select(TX, (int)n->attr.i[0], n->attr.i[1], n->attr.idx); }
/* The fast path: gy's rows added into the gradient buffer at their indices. */
FAST_VJP(index_select)
{
    ad_tape *t = sw->t;
    bool fresh;
    void *buf = ad__gslot(sw, n, 0, &fresh);
    if (!buf) return true;
    ad_tensor gx = *ad__in(t, n, 0);
    gx.data = buf;
    if (fresh && gx.size) memset(buf, 0, ad__nbytes(&gx));
    gather_scatter(n, gy, &gx, true);
    return true;
}

/* index_add: y = zeros (axis length `size`), y[.., idx[i], ..] += x[.., i, ..]; VJP: gx = index_select(gy, axis, idx) */
ad_var ad_index_add(ad_var x, int axis, int64_t n, const int64_t *idx, int64_t size)
{
    ad_tape *t;
    if (!ad__begin("ad_index_add", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    int ax;
    if (!ad__axis(t, "ad_index_add", axis, v->ndim, &ax)) return ad__invalid(t);
    if (v->shape[ax] != n || size < 0) {
        ad__fail(t, AD_ERR_SHAPE, "ad_index_add: %lld indices for an axis of length %lld (target length %lld)",
                 (long long)n, (long long)v->shape[ax], (long long)size);
        return ad__invalid(t);
    }
    const int64_t *ix = copy_indices(t, "ad_index_add", n, idx, size);
    if (!ix) return ad__invalid(t);
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    shape[ax] = size;
    ad_attr a = {{0}, {ax, n}, ix};
    return ad__emit(t, AD_OP_INDEX_ADD, 1, &x, v->dtype, v->ndim, shape, &a);
}
ad_status ad__fwd_index_add(ad_tape *t, ad_node *n)
{
    if (n->value.size) memset(n->value.data, 0, ad__nbytes(&n->value));
    gather_scatter(n, ad__in(t, n, 0), &n->value, true);
    return AD_OK;
}
VJP(index_add) { gx[0] = ad_index_select(gy, (int)n->attr.i[0], n->attr.i[1], n->attr.idx); }
JVP(index_add)
{
    int ax = (int)n->attr.i[0];
    return ad_index_add(TX, ax, n->attr.i[1], n->attr.idx, n->value.shape[ax]);
}

/* ---- cast and detach ---- */

/* cast: y = x converted to dtype; VJP: gx = cast(gy, dtype of x) */
ad_var ad_cast(ad_var x, ad_dtype dtype)
{
    ad_tape *t;
    if (!ad__begin("ad_cast", 1, &x, &t)) return ad__invalid(t);
    if (ad_dtype_size(dtype) == 0) {
        ad__fail(t, AD_ERR_DTYPE, "ad_cast: unknown dtype %d", (int)dtype);
        return ad__invalid(t);
    }
    const ad_tensor *v = ad__val(x);
    return ad__emit(t, AD_OP_CAST, 1, &x, dtype, v->ndim, v->shape, NULL);
}
ad_status ad__fwd_cast(ad_tape *t, ad_node *n) { return ad_tensor_copy(&n->value, ad__in(t, n, 0)); }
VJP(cast) { gx[0] = ad_cast(gy, ad__in(t, n, 0)->dtype); }
JVP(cast) { return ad_cast(TX, n->value.dtype); }

/* detach: y = x (shares x's data), with no gradient flowing back */
ad_var ad_detach(ad_var x)
{
    ad_tape *t;
    if (!ad__begin("ad_detach", 1, &x, &t)) return ad__invalid(t);
    const ad_tensor *v = ad__val(x);
    return ad__emit(t, AD_OP_DETACH, 1, &x, v->dtype, v->ndim, v->shape, NULL);
}
ad_status ad__fwd_detach(ad_tape *t, ad_node *n) { return AD_OK; }
VJP(detach) {}

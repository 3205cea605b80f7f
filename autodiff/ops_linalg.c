/* ops_linalg.c: matrix products, 2-D and batched with NumPy's broadcast batch dimensions. */
#include "jvp.h"
#include "vjp.h"
#include "kernels.h"

/* matmul: y = op(a) @ op(b), op transposing the last two axes when trans_a / trans_b (attr.i[0], i[1]).
** VJP, by case (G = gy), each then summed back over broadcast batch axes:
**   a @ b:      ga = G @ b^T,   gb = a^T @ G
**   a @ b^T:    ga = G @ b,     gb = G^T @ a
**   a^T @ b:    ga = b @ G^T,   gb = a @ G
**   a^T @ b^T:  ga = b^T @ G^T, gb = G^T @ a^T
** All run through the same op with flags, so no transpose is materialized. */
ad_var ad_matmul_t(ad_var a, ad_var b, bool ta, bool tb)
{
    ad_var xs[2] = {a, b};
    ad_tape *t;
    if (!ad__begin("ad_matmul", 2, xs, &t)) return ad__invalid(t);
    const ad_tensor *va = ad__val(a), *vb = ad__val(b);
    char s1[96], s2[96];
    if (va->dtype != vb->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "ad_matmul: dtypes differ: %s and %s", ad_dtype_name(va->dtype),
                 ad_dtype_name(vb->dtype));
        return ad__invalid(t);
    }
    if (va->ndim == 1 || vb->ndim == 1) {
        /* vectors as in numpy.matmul: a [k] is a row [1,k], b [k] a column [k,1]; the unit axis is dropped */
        if (va->ndim < 1 || vb->ndim < 1) goto scalar;
        int64_t ka = va->ndim == 1 ? va->shape[0] : va->shape[va->ndim - (ta ? 2 : 1)];
        int64_t kb = vb->ndim == 1 ? vb->shape[0] : vb->shape[vb->ndim - (tb ? 1 : 2)];
        if (ka != kb) goto inner; /* name the shapes the caller passed, not the reshaped ones */
        ad_var a2 = va->ndim == 1 ? ad_reshape(a, 2, (const int64_t[]){1, va->shape[0]}) : a;
        ad_var b2 = vb->ndim == 1 ? ad_reshape(b, 2, (const int64_t[]){vb->shape[0], 1}) : b;
        ad_var r = ad_matmul_t(a2, b2, va->ndim == 1 ? false : ta, vb->ndim == 1 ? false : tb);
        const ad_tensor *vr = ad_value(r);
        if (!vr) return r;
        int64_t shape[AD_MAX_DIMS];
        int nd = 0;
        for (int i = 0; i < vr->ndim - 2; i++) shape[nd++] = vr->shape[i];
        if (va->ndim != 1) shape[nd++] = vr->shape[vr->ndim - 2];
        if (vb->ndim != 1) shape[nd++] = vr->shape[vr->ndim - 1];
        return ad_reshape(r, nd, shape);
    }
    if (va->ndim < 2 || vb->ndim < 2) {
    scalar:
        ad__fail(t, AD_ERR_SHAPE, "ad_matmul: operands must have at least 1 dimension: %s x %s",
                 ad_shape_str(va->ndim, va->shape, s1, 96), ad_shape_str(vb->ndim, vb->shape, s2, 96));
        return ad__invalid(t);
    }
    int64_t m = va->shape[va->ndim - (ta ? 1 : 2)], ka = va->shape[va->ndim - (ta ? 2 : 1)];
    int64_t kb = vb->shape[vb->ndim - (tb ? 1 : 2)], nn = vb->shape[vb->ndim - (tb ? 2 : 1)];
    if (ka != kb) {
    inner:
        ad__fail(t, AD_ERR_SHAPE, "ad_matmul: inner dimensions differ: %s%s x %s%s",
                 ad_shape_str(va->ndim, va->shape, s1, 96), ta ? "^T" : "", ad_shape_str(vb->ndim, vb->shape, s2, 96),
                 tb ? "^T" : "");
        return ad__invalid(t);
    }
    int64_t shape[AD_MAX_DIMS];
    int nb;
    if (!ad__broadcast_shape(va->ndim - 2, va->shape, vb->ndim - 2, vb->shape, &nb, shape)) {
        ad__fail(t, AD_ERR_SHAPE, "ad_matmul: batch dimensions do not broadcast: %s x %s",
                 ad_shape_str(va->ndim, va->shape, s1, 96), ad_shape_str(vb->ndim, vb->shape, s2, 96));
        return ad__invalid(t);
    }
    shape[nb] = m;
    shape[nb + 1] = nn;
    ad_attr at = {{0}, {ta, tb, ka}, NULL};
    return ad__emit(t, AD_OP_MATMUL, 2, xs, va->dtype, nb + 2, shape, &at);
}

ad_var ad_matmul(ad_var a, ad_var b) { return ad_matmul_t(a, b, false, false); }

/* C = op(A) op(B) + beta C in dt. The packed product's panels, when they outgrow the threads' stacks,
** come from the tape's arena and are given back right after the call (ad__tape_rewind to a mark taken
** at the first request): no heap allocation per step once the arena has grown to the largest
** product's panels, and nothing to do for the products that need none. */
typedef struct arena_scratch {
    ad_tape *t;
    ad_mark mark;
    bool used;
} arena_scratch;

static void *scratch_alloc(void *ctx, size_t bytes)
{
    arena_scratch *s = ctx;
    if (!s->used) s->mark = ad__tape_mark(s->t), s->used = true;
    return ad__arena_alloc(s->t, bytes);
}

static ad_status gemm(ad_tape *t, ad_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                      int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc)
{
    arena_scratch s = {t, {0}, false};
    ad_status st = dt == AD_F64 ? ad__gemm_f64_ws(scratch_alloc, &s, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
                                : ad__gemm_f32_ws(scratch_alloc, &s, ta, tb, m, n, k, 1.0f, a, lda, b, ldb,
                                                  (float)beta, c, ldc);
    if (s.used) ad__tape_rewind(t, s.mark);
    return st;
}

ad_status ad__fwd_matmul(ad_tape *t, ad_node *n)
{
    const ad_tensor *a = ad__in(t, n, 0), *b = ad__in(t, n, 1);
    ad_tensor *y = &n->value;
    bool ta = n->attr.i[0], tb = n->attr.i[1];
    int64_t k = n->attr.i[2];
    int nb = y->ndim - 2;
    int64_t m = y->shape[nb], nn = y->shape[nb + 1];
    int64_t lda = a->shape[a->ndim - 1], ldb = b->shape[b->ndim - 1];
    int64_t sa_mat = a->shape[a->ndim - 2] * lda, sb_mat = b->shape[b->ndim - 2] * ldb;
    if (y->size == 0) return AD_OK;
    /* batch strides, in matrices, with 0 on broadcast batch axes */
    int64_t sa[AD_MAX_DIMS] = {0}, sb[AD_MAX_DIMS] = {0}, idx[AD_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = nb - 1, j = a->ndim - 3; i >= 0; i--, j--) {
        if (j < 0) break;
        sa[i] = a->shape[j] == 1 ? 0 : s;
        s *= a->shape[j];
    }
    s = 1;
    for (int i = nb - 1, j = b->ndim - 3; i >= 0; i--, j--) {
        if (j < 0) break;
        sb[i] = b->shape[j] == 1 ? 0 : s;
        s *= b->shape[j];
    }
    int64_t batches = y->size / (m * nn), oa = 0, ob = 0;
    size_t es = ad_dtype_size(y->dtype);
    for (int64_t bi = 0; bi < batches; bi++) {
        ad_status st = gemm(t, y->dtype, ta, tb, m, nn, k, (const char *)a->data + (size_t)(oa * sa_mat) * es, lda,
                            (const char *)b->data + (size_t)(ob * sb_mat) * es, ldb, 0.0,
                            (char *)y->data + (size_t)(bi * m * nn) * es, nn);
        if (st != AD_OK) return st;
        int64_t off[2] = {oa, ob};
        ad__odometer_next(nb, y->shape, idx, 2, (const int64_t *const[]){sa, sb}, off);
        oa = off[0];
        ob = off[1];
    }
    return AD_OK;
}

void ad__vjp_matmul(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    ad_var a = ad__inv(t, n, 0), b = ad__inv(t, n, 1);
    bool ta = n->attr.i[0], tb = n->attr.i[1];
    if (ad__needs(t, n, 0)) {
        ad_var g = !ta ? ad_matmul_t(gy, b, false, !tb) : ad_matmul_t(b, gy, tb, true);
        gx[0] = ad__unbroadcast(t, n, 0, g);
    }
    if (ad__needs(t, n, 1)) {
        ad_var g = !tb ? ad_matmul_t(a, gy, !ta, false) : ad_matmul_t(gy, a, true, ta);
        gx[1] = ad__unbroadcast(t, n, 1, g);
    }
}
/* tangent (jvp.h): ta @ b + a @ tb, through the same transposes (a batch-broadcast
** operand's term broadcasts as its product does) */
ad_var ad__jvp_matmul(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)
{
    bool ta = n->attr.i[0], tb = n->attr.i[1];
    ad_var a = ad__has(tx[0]) ? ad_matmul_t(tx[0], ad__inv(t, n, 1), ta, tb) : tx[0];
    ad_var b = ad__has(tx[1]) ? ad_matmul_t(ad__inv(t, n, 0), tx[1], ta, tb) : tx[1];
    return ad__tfit(t, n, ad__tsum(a, b));
}

/* The fast path (see vjp.h) for 2-D operands: the products of the
** recorded VJP above, with the same gemm calls, written straight into the
** gradient buffers; when a buffer already holds a gradient (a second use, or a
** param's grad tensor under AD_ACCUMULATE) the product is added in by the gemm
** itself (beta = 1), with no scratch copy. Batched products decline. */

/* C [m,n] (+)= a b^T, the product with an inner dimension of 1 (a weight's gradient
** from a matrix-vector product): one pass over C, a[i * sa] times the row b (stride sb). */
#define OUTER(T)                                                                                         \
    AD_CLONES static void outer_##T(int64_t m, int64_t n, const T *a, int64_t sa, const T *b, int64_t sb, \
                                    bool add, T *restrict c)                                             \
    {                                                                                                    \
        if (sb == 1 && add) {                                                                            \
            for (int64_t i = 0; i < m; i++, c += n) {                                                    \
                const T ai = a[i * sa];                                                                  \
                for (int64_t j = 0; j < n; j++) c[j] += ai * b[j];                                       \
            }                                                                                            \
        } else if (sb == 1) {                                                                            \
            for (int64_t i = 0; i < m; i++, c += n) {                                                    \
                const T ai = a[i * sa];                                                                  \
                for (int64_t j = 0; j < n; j++) c[j] = ai * b[j];                                        \
            }                                                                                            \
        } else {                                                                                         \
            for (int64_t i = 0; i < m; i++, c += n) {                                                    \
                const T ai = a[i * sa];                                                                  \
                for (int64_t j = 0; j < n; j++) c[j] = (add ? c[j] : (T)0) + ai * b[j * sb];             \
            }                                                                                            \
        }                                                                                                \
    }
OUTER(float)
OUTER(double)

static void fast_gemm(ad_sweep *sw, const ad_node *n, int j, bool ta, bool tb, int64_t m, int64_t nn, int64_t k,
                      const void *a, int64_t lda, const void *b, int64_t ldb)
{
    bool fresh;
    ad_tape *t = sw->t;
    void *c = ad__gslot(sw, n, j, &fresh);
    if (!c) return;
    const ad_tensor *x = ad__in(t, n, j);
    if (k == 1) { /* op(A) [m,1]: a[i * (ta ? 1 : lda)]; op(B) [1,n]: b[j * (tb ? ldb : 1)] */
        if (x->dtype == AD_F64)
            outer_double(m, nn, a, ta ? 1 : lda, b, tb ? ldb : 1, !fresh, c);
        else
            outer_float(m, nn, a, ta ? 1 : lda, b, tb ? ldb : 1, !fresh, c);
        return;
    }
    ad_status st = gemm(t, x->dtype, ta, tb, m, nn, k, a, lda, b, ldb, fresh ? 0.0 : 1.0, c, nn);
    if (st != AD_OK) ad__fail(t, st, "ad_matmul: backward: the product failed (%s)", ad_status_str(st));
}

FAST_VJP(matmul)
{
    ad_tape *t = sw->t;
    const ad_tensor *a = ad__in(t, n, 0), *b = ad__in(t, n, 1);
    if (a->ndim != 2 || b->ndim != 2) return false;
    bool ta = n->attr.i[0], tb = n->attr.i[1];
    int64_t m = gy->shape[0], nn = gy->shape[1], k = n->attr.i[2], lda = a->shape[1], ldb = b->shape[1];
    if (gy->size == 0) return false;
    if (ad__needs(t, n, 0)) {
        if (!ta) /* ga [m,k] = G [m,n] @ op(b)^T */
            fast_gemm(sw, n, 0, false, !tb, m, k, nn, gy->data, nn, b->data, ldb);
        else /* ga [k,m] = op(b) [k,n] @ G^T */
            fast_gemm(sw, n, 0, tb, true, k, m, nn, b->data, ldb, gy->data, nn);
    }
    if (ad__needs(t, n, 1) && t->status == AD_OK) {
        if (!tb) /* gb [k,n] = op(a)^T [k,m] @ G */
            fast_gemm(sw, n, 1, !ta, false, k, nn, m, a->data, lda, gy->data, nn);
        else /* gb [n,k] = G^T @ op(a) [m,k] */
            fast_gemm(sw, n, 1, true, ta, nn, k, m, gy->data, nn, a->data, lda);
    }
    return true;
}

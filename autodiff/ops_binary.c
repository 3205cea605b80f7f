/* ops_binary.c: elementwise binary ops with NumPy broadcasting; each forward beside its VJP. */
#include "jvp.h"
#include "vjp.h"
#include "kernels.h"

#include <math.h>

/* ---- the broadcasting driver ----
** An op supplies its formula as an inner loop over one row with strides sa, sb
** in {0, 1}; the driver walks the outer dimensions. */

#define INNER(name, T, EXPR)                                                                             \
    AD_CLONES static void name(T *restrict y, const T *restrict pa, int64_t sa, const T *restrict pb,      \
                               int64_t sb, int64_t n)                                                    \
    {                                                                                                    \
        if (sa == 1 && sb == 1) {                                                                        \
            for (int64_t i = 0; i < n; i++) {                                                            \
                T a = pa[i], b = pb[i];                                                                  \
                y[i] = (EXPR);                                                                           \
            }                                                                                            \
        } else if (sa == 1) {                                                                            \
            T b = pb[0];                                                                                 \
            for (int64_t i = 0; i < n; i++) {                                                            \
                T a = pa[i];                                                                             \
                y[i] = (EXPR);                                                                           \
            }                                                                                            \
        } else if (sb == 1) {                                                                            \
            T a = pa[0];                                                                                 \
            for (int64_t i = 0; i < n; i++) {                                                            \
                T b = pb[i];                                                                             \
                y[i] = (EXPR);                                                                           \
            }                                                                                            \
        } else {                                                                                         \
            T a = pa[0], b = pb[0];                                                                      \
            T r = (EXPR);                                                                                \
            for (int64_t i = 0; i < n; i++) y[i] = r;                                                    \
        }                                                                                                \
    }

typedef void (*inner_f64)(double *, const double *, int64_t, const double *, int64_t, int64_t);
typedef void (*inner_f32)(float *, const float *, int64_t, const float *, int64_t, int64_t);

#define KERNELS(op, EXPR64, EXPR32)                                                                      \
    static inline double op##_one64(double a, double b) { return (EXPR64); }                             \
    static inline float op##_one32(float a, float b) { return (EXPR32); }                                \
    INNER(op##_f64, double, EXPR64)                                                                      \
    INNER(op##_f32, float, EXPR32)

/* A broadcast walk: y's shape with the dims of size 1 dropped and neighbours that every operand
** walks alike merged (a bias [1, C, 1, 1] over [N, C, H, W]: [N, C, H W]), the operands'
** element strides (0 where broadcast; the last one is 0 or 1), and the row kernels. */
typedef struct walk {
    int nd;
    int64_t shape[AD_MAX_DIMS], sa[AD_MAX_DIMS], sb[AD_MAX_DIMS];
    char *y;
    const char *a, *b;
    size_t es;
    bool f64;
    inner_f64 k64;
    inner_f32 k32;
} walk;

static void walk_init(walk *w, ad_tensor *y, const ad_tensor *a, const ad_tensor *b)
{
    int64_t sa[AD_MAX_DIMS], sb[AD_MAX_DIMS];
    ad__bcast_strides(a, y->ndim, y->shape, sa);
    ad__bcast_strides(b, y->ndim, y->shape, sb);
    int nd = 0;
    for (int d = 0; d < y->ndim; d++) {
        if (y->shape[d] == 1) continue;
        int64_t m = y->shape[d];
        if (nd > 0 && w->sa[nd - 1] == sa[d] * m && w->sb[nd - 1] == sb[d] * m) { /* merge into the previous dim */
            w->shape[nd - 1] *= m;
            w->sa[nd - 1] = sa[d];
            w->sb[nd - 1] = sb[d];
            continue;
        }
        w->shape[nd] = m;
        w->sa[nd] = sa[d];
        w->sb[nd] = sb[d];
        nd++;
    }
    if (nd == 0) { /* (one element) */
        w->shape[0] = 1;
        w->sa[0] = w->sb[0] = 0;
        nd = 1;
    }
    w->nd = nd;
    w->y = y->data;
    w->a = a->data;
    w->b = b->data;
    w->es = ad_dtype_size(y->dtype);
    w->f64 = y->dtype == AD_F64;
}

/* Runs the row kernel on n elements of y from element yo, a's from ao and b's from bo. */
static inline void walk_row(const walk *w, int64_t yo, int64_t ao, int64_t bo, int64_t n)
{
    int last = w->nd - 1;
    if (w->f64)
        w->k64((double *)(void *)(w->y + yo * w->es), (const double *)(const void *)(w->a + ao * w->es), w->sa[last],
               (const double *)(const void *)(w->b + bo * w->es), w->sb[last], n);
    else
        w->k32((float *)(void *)(w->y + yo * w->es), (const float *)(const void *)(w->a + ao * w->es), w->sa[last],
               (const float *)(const void *)(w->b + bo * w->es), w->sb[last], n);
}

/* Rows [r0, r1) of the walk (a row: the last dim), in order. */
static void walk_rows(const walk *w, int64_t r0, int64_t r1)
{
    int last = w->nd - 1;
    int64_t inner = w->shape[last], idx[AD_MAX_DIMS] = {0}, off[2] = {0, 0}; /* a's and b's */
    const int64_t *st[2] = {w->sa, w->sb};
    for (int64_t d = last - 1, r = r0; r0 > 0 && d >= 0; d--) { /* row r0's index and offsets */
        idx[d] = r % w->shape[d];
        r /= w->shape[d];
        off[0] += idx[d] * w->sa[d];
        off[1] += idx[d] * w->sb[d];
    }
    for (int64_t r = r0; r < r1; r++) {
        walk_row(w, r * inner, off[0], off[1], inner);
        ad__odometer_next(last, w->shape, idx, 2, st, off);
    }
}

/* A chunk of a walk on threads (ad__par_for): rows [lo, hi), or elements [lo, hi) of a walk of one row. */
static void walk_range(void *ctx, int64_t lo, int64_t hi)
{
    const walk *w = ctx;
    if (w->nd == 1)
        walk_row(w, lo, lo * w->sa[0], lo * w->sb[0], hi - lo);
    else
        walk_rows(w, lo, hi);
}

/* y as one row: a and b each of y's size (stride 1) or of one element (stride 0). */
static void one_row(ad_tensor *y, const ad_tensor *a, int64_t sa, const ad_tensor *b, int64_t sb, inner_f64 f64,
                    inner_f32 f32)
{
    if (y->dtype == AD_F64)
        f64(y->data, a->data, sa, b->data, sb, y->size);
    else
        f32(y->data, a->data, sa, b->data, sb, y->size);
}

/* y = a op b broadcast, by the row kernels f64/f32; on threads from 2 AD__PAR_MIN elements of y
** (ad__par_for), in chunks of y's rows (or of its elements), each element computed as on one thread. */
static void drive(ad_tensor *y, const ad_tensor *a, const ad_tensor *b, inner_f64 f64, inner_f32 f32)
{
    if (y->size == 0) return;
    int nth = ad__par_threads(y->size);
    if (nth == 1) { /* the common shapes without the walk's set-up */
        if (a->size == y->size && b->size == y->size) {
            one_row(y, a, 1, b, 1, f64, f32);
            return;
        }
        if (b->size == 1 && a->size == y->size) {
            one_row(y, a, 1, b, 0, f64, f32);
            return;
        }
        if (a->size == 1 && b->size == y->size) {
            one_row(y, a, 0, b, 1, f64, f32);
            return;
        }
    }
    walk w;
    walk_init(&w, y, a, b);
    w.k64 = f64;
    w.k32 = f32;
    int64_t inner = w.shape[w.nd - 1], rows = y->size / inner;
    if (nth == 1)
        walk_rows(&w, 0, rows);
    else if (w.nd == 1) /* one row: chunks of its elements */
        ad__par_for(nth, inner, 1, walk_range, &w);
    else /* chunks of rows; a thread for each row at most */
        ad__par_for(rows < nth ? (int)rows : nth, rows, inner, walk_range, &w);
}

/* Validated operands of any shape: dtypes, the broadcast shape, the node. */
static ad_var binary_general(ad_tape *t, ad_op op, const ad_var *xs)
{
    const char *name = ad__ops[op].name;
    const ad_tensor *va = ad__val(xs[0]), *vb = ad__val(xs[1]);
    if (va->dtype != vb->dtype) {
        ad__fail(t, AD_ERR_DTYPE, "%s: dtypes differ: %s and %s", name, ad_dtype_name(va->dtype),
                 ad_dtype_name(vb->dtype));
        return ad__invalid(t);
    }
    if (ad_shape_equal(va, vb)) return ad__emit(t, op, 2, xs, va->dtype, va->ndim, va->shape, NULL);
    int nd;
    int64_t shape[AD_MAX_DIMS];
    if (!ad__broadcast_shape(va->ndim, va->shape, vb->ndim, vb->shape, &nd, shape)) {
        char s1[96], s2[96];
        ad__fail(t, AD_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", name,
                 ad_shape_str(va->ndim, va->shape, s1, sizeof s1), ad_shape_str(vb->ndim, vb->shape, s2, sizeof s2));
        return ad__invalid(t);
    }
    return ad__emit(t, op, 2, xs, va->dtype, nd, shape, NULL);
}

/* Two scalars (0-dimensional, one dtype) skip the broadcasting driver: the
** node is recorded inline and the op's one-element formula (ONE(op), from
** KERNELS) computed here. Inlined into each op's front end. */
#define ONE(op) op##_one64, op##_one32
static AD_ALWAYS_INLINE ad_var binary(ad_op op, ad_var x, ad_var z, double (*one64)(double, double),
                                      float (*one32)(float, float))
{
    ad_var xs[2] = {x, z};
    ad_tape *t;
    if (!ad__begin(ad__ops[op].name, 2, xs, &t)) return ad__invalid(t);
    const ad_node *na = ad__node(t, x.id), *nb = ad__node(t, z.id);
    if (na->value.ndim != 0 || nb->value.ndim != 0 || na->value.dtype != nb->value.dtype)
        return binary_general(t, op, xs);
    uint32_t id;
    unsigned in_req = (na->flags & AD_NODE_REQ_GRAD) | (nb->flags & AD_NODE_REQ_GRAD) << 1;
    ad_node *n = ad__emit_scalar(t, op, 2, xs, in_req, na->value.dtype, NULL, &id);
    if (!n) return ad__invalid(t);
    if (n->value.dtype == AD_F64)
        *(double *)n->value.data = one64(*(const double *)na->value.data, *(const double *)nb->value.data);
    else
        *(float *)n->value.data = one32(*(const float *)na->value.data, *(const float *)nb->value.data);
    return ad__emit_done(t, id);
}

/* The fast path (see vjp.h), for inputs of the output's shape only:
** broadcast inputs decline and take the recorded VJP. GA/GB are the formulas
** for each input in terms of g = dL/dy, a, b and y, ordered as in the VJP;
** fast_binary, inlined into each ISA clone of the op's fast VJP, runs them. */
#define FAST_BIN(op, GA, GB)                                                                             \
    static inline double op##_ga64(double g, double a, double b, double y) { return (GA); }              \
    static inline double op##_gb64(double g, double a, double b, double y) { return (GB); }              \
    static inline float op##_ga32(float g, float a, float b, float y) { return (GA); }                   \
    static inline float op##_gb32(float g, float a, float b, float y) { return (GB); }                   \
    AD_CLONES static void op##_grange(void *ctx, int64_t lo, int64_t hi)                                 \
    {                                                                                                    \
        side_loops(ctx, lo, hi, op##_ga64, op##_gb64, op##_ga32, op##_gb32);                             \
    }                                                                                                    \
    AD_CLONES FAST_VJP(op)                                                                               \
    {                                                                                                    \
        return fast_binary(sw, n, gy, op##_ga64, op##_gb64, op##_ga32, op##_gb32, op##_grange);          \
    }

typedef double (*gx64_fn)(double g, double a, double b, double y);
typedef float (*gx32_fn)(float g, float a, float b, float y);

/* One input's gradient over all elements: one loop per case (fresh or accumulating), each vectorized. */
static AD_ALWAYS_INLINE void fast_side64(double *o, bool fresh, const double *gp, const double *ap,
                                         const double *bp, const double *yp, int64_t cnt, gx64_fn gx)
{
    if (fresh)
        for (int64_t i = 0; i < cnt; i++) o[i] = gx(gp[i], ap[i], bp[i], yp[i]);
    else
        for (int64_t i = 0; i < cnt; i++) o[i] += gx(gp[i], ap[i], bp[i], yp[i]);
}
static AD_ALWAYS_INLINE void fast_side32(float *o, bool fresh, const float *gp, const float *ap, const float *bp,
                                         const float *yp, int64_t cnt, gx32_fn gx)
{
    if (fresh)
        for (int64_t i = 0; i < cnt; i++) o[i] = gx(gp[i], ap[i], bp[i], yp[i]);
    else
        for (int64_t i = 0; i < cnt; i++) o[i] += gx(gp[i], ap[i], bp[i], yp[i]);
}

/* One input's gradient, elements [lo, hi): side 0 (a) or 1 (b), written (fresh) or added to. */
typedef struct side_job {
    void *o;
    const void *g, *a, *b, *y;
    int side;
    bool f64, fresh;
} side_job;

static AD_ALWAYS_INLINE void side_loops(const side_job *j, int64_t lo, int64_t hi, gx64_fn ga64, gx64_fn gb64,
                                        gx32_fn ga32, gx32_fn gb32)
{
    int64_t c = hi - lo;
    /* (each call with its own formula, so that each is inlined: four loops) */
    if (j->f64) {
        const double *g = (const double *)j->g + lo, *a = (const double *)j->a + lo, *b = (const double *)j->b + lo,
                     *y = (const double *)j->y + lo;
        if (j->side == 0)
            fast_side64((double *)j->o + lo, j->fresh, g, a, b, y, c, ga64);
        else
            fast_side64((double *)j->o + lo, j->fresh, g, a, b, y, c, gb64);
    } else {
        const float *g = (const float *)j->g + lo, *a = (const float *)j->a + lo, *b = (const float *)j->b + lo,
                    *y = (const float *)j->y + lo;
        if (j->side == 0)
            fast_side32((float *)j->o + lo, j->fresh, g, a, b, y, c, ga32);
        else
            fast_side32((float *)j->o + lo, j->fresh, g, a, b, y, c, gb32);
    }
}

static AD_ALWAYS_INLINE bool fast_binary(ad_sweep *sw, const ad_node *n, const ad_tensor *gy, gx64_fn ga64,
                                         gx64_fn gb64, gx32_fn ga32, gx32_fn gb32,
                                         ad__range_fn range)
{
    ad_tape *t = sw->t;
    const ad_tensor *at = ad__in(t, n, 0), *bt = ad__in(t, n, 1);
    if (gy->ndim == 0) { /* so are both inputs: one element, no loop */
        for (int side = 0; side < 2; side++) {
            if (!ad__needs(t, n, side)) continue;
            bool fresh;
            void *o = ad__gslot1(sw, n, side, &fresh);
            if (!o) return true;
            if (gy->dtype == AD_F64) {
                double g = *(const double *)gy->data, a = *(const double *)at->data, b = *(const double *)bt->data;
                double y = *(const double *)n->value.data, r = side == 0 ? ga64(g, a, b, y) : gb64(g, a, b, y);
                *(double *)o = fresh ? r : *(double *)o + r;
            } else {
                float g = *(const float *)gy->data, a = *(const float *)at->data, b = *(const float *)bt->data;
                float y = *(const float *)n->value.data, r = side == 0 ? ga32(g, a, b, y) : gb32(g, a, b, y);
                *(float *)o = fresh ? r : *(float *)o + r;
            }
        }
        return true;
    }
    if (at->size != gy->size || bt->size != gy->size || at->ndim != gy->ndim || bt->ndim != gy->ndim) return false;
    int nth = ad__par_threads(gy->size);
    for (int side = 0; side < 2; side++) {
        if (!ad__needs(t, n, side)) continue;
        bool fresh;
        void *buf = ad__gslot(sw, n, side, &fresh);
        if (!buf) return true;
        side_job j = {buf, gy->data, at->data, bt->data, n->value.data, side, gy->dtype == AD_F64, fresh};
        if (nth > 1) /* (one call per side: where a and b are one node, side 1 adds to what side 0 wrote) */
            ad__par_for(nth, gy->size, 1, range, &j);
        else
            side_loops(&j, 0, gy->size, ga64, gb64, ga32, gb32);
    }
    return true;
}

/* (one element of one dtype: the one-element formula, as the front end computes it; a
** replay of a scalar graph runs through here) */
#define FWD(op)                                                                                          \
    ad_status ad__fwd_##op(ad_tape *t, ad_node *n)                                                       \
    {                                                                                                    \
        const ad_tensor *a = ad__in(t, n, 0), *b = ad__in(t, n, 1);                                      \
        if (n->value.size == 1 && a->size == 1 && b->size == 1 && a->dtype == b->dtype) {                \
            if (a->dtype == AD_F64)                                                                      \
                *(double *)n->value.data = op##_one64(*(const double *)a->data, *(const double *)b->data); \
            else                                                                                         \
                *(float *)n->value.data = op##_one32(*(const float *)a->data, *(const float *)b->data);  \
            return AD_OK;                                                                                \
        }                                                                                                \
        drive(&n->value, a, b, op##_f64, op##_f32);                                                      \
        return AD_OK;                                                                                    \
    }

/* add: y = a + b; VJP: ga = sum_to(gy), gb = sum_to(gy) */
KERNELS(add, a + b, a + b)
FWD(add)
ad_var ad_add(ad_var a, ad_var b) { return binary(AD_OP_ADD, a, b, ONE(add)); }
void ad__vjp_add(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, gy);
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, gy);
}
/* (jvp.h) */
ad_var ad__tsum(ad_var a, ad_var b)
{
    if (!ad__has(a)) return b;
    if (!ad__has(b)) return a;
    return ad_add(a, b);
}
/* Tangent rules (jvp.h): TA, TB are the operands' tangents (either may be the zero
** tangent), each term broadcast to the output's shape (ad__tfit). */
#define TA tx[0]
#define TB tx[1]
#define A ad__inv(t, n, 0)
#define B ad__inv(t, n, 1)
JVP(add) { return ad__tfit(t, n, ad__tsum(TA, TB)); }
/* fast path: gy passed through, or summed down to a broadcast input's shape
** (a bias) with the kernel of sum_to, as the recorded VJP does */
/* (out of line, so that the pass-through in ad__fast_add stays a small leaf function) */
static __attribute__((noinline)) void add_reduced(ad_sweep *sw, const ad_node *n, int j, const ad_tensor *gy)
{
    ad_tape *t = sw->t;
    const ad_tensor *x = ad__in(t, n, j);
    bool fresh;
    void *buf = ad__gslot(sw, n, j, &fresh);
    ad_tensor sum = *x, acc = *x;
    sum.data = fresh ? buf : ad__arena_alloc(t, ad__nbytes(x));
    if (!buf || !sum.data) return;
    ad__sum_to_kernel(&sum, gy);
    acc.data = buf;
    if (!fresh) ad__add_into(&acc, &sum);
}
FAST_VJP(add)
{
    ad_tape *t = sw->t;
    for (int j = 0; j < 2 && t->status == AD_OK; j++) {
        if (!ad__needs(t, n, j)) continue;
        const ad_tensor *x = ad__in(t, n, j);
        /* a 0-dimensional gy means 0-dimensional inputs: no need to read their shapes */
        if (gy->ndim == 0 || (x->size == gy->size && x->ndim == gy->ndim))
            ad__gpass(sw, n, j, gy);
        else
            add_reduced(sw, n, j, gy);
    }
    return true;
}

/* sub: y = a - b; VJP: ga = sum_to(gy), gb = -sum_to(gy) */
KERNELS(sub, a - b, a - b)
FWD(sub)
ad_var ad_sub(ad_var a, ad_var b) { return binary(AD_OP_SUB, a, b, ONE(sub)); }
void ad__vjp_sub(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, gy);
    if (ad__needs(t, n, 1)) gx[1] = ad_neg(ad__unbroadcast(t, n, 1, gy));
}
JVP(sub) { return ad__tfit(t, n, ad__tsum(TA, ad__has(TB) ? ad_neg(TB) : TB)); }
FAST_BIN(sub, g, -g)

/* mul: y = a * b; VJP: ga = sum_to(gy * b), gb = sum_to(gy * a) */
KERNELS(mul, a *b, a *b)
FWD(mul)
ad_var ad_mul(ad_var a, ad_var b) { return binary(AD_OP_MUL, a, b, ONE(mul)); }
void ad__vjp_mul(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, ad_mul(gy, ad__inv(t, n, 1)));
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, ad_mul(gy, ad__inv(t, n, 0)));
}
JVP(mul)
{
    ad_var a = ad__has(TA) ? ad_mul(TA, B) : TA, b = ad__has(TB) ? ad_mul(A, TB) : TB;
    return ad__tfit(t, n, ad__tsum(a, b));
}
FAST_BIN(mul, g *b, g *a)

/* div: y = a / b; VJP: ga = sum_to(gy / b), gb = sum_to(-gy * y / b) */
KERNELS(div, a / b, a / b)
FWD(div)
ad_var ad_div(ad_var a, ad_var b) { return binary(AD_OP_DIV, a, b, ONE(div)); }
void ad__vjp_div(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    ad_var b = ad__inv(t, n, 1);
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, ad_div(gy, b));
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, ad_neg(ad_mul(gy, ad_div(ad__var(t, self), b))));
}
JVP(div)
{
    ad_var a = ad__has(TA) ? ad_div(TA, B) : TA;
    ad_var b = ad__has(TB) ? ad_neg(ad_mul(TB, ad_div(ad__var(t, self), B))) : TB;
    return ad__tfit(t, n, ad__tsum(a, b));
}
FAST_BIN(div, g / b, -(g * (y / b)))

/* pow: y = a ^ b; VJP: ga = sum_to(gy * b * a^(b-1)), gb = sum_to(gy * xlogy(y, a)), except at
** a = b = 0 (y = 0^0 = 1, constant in a): there both are 0, as PyTorch (the exponent b - 1 becomes 0
** there, so the product is 0 * 1, not 0 * Inf; and xlogy's first operand is 0). Elsewhere xlogy
** makes gb 0 where y is 0, e.g. a = 0 with b > 0, as PyTorch does. */
KERNELS(pow, pow(a, b), powf(a, b))
FWD(pow)
ad_var ad_pow(ad_var a, ad_var b) { return binary(AD_OP_POW, a, b, ONE(pow)); }
/* The partial derivatives of pow at its node: d/da = b a^(b - 1 + zz), d/db = xlogy(y - zz, a), zz being 1
** at a = b = 0 (both 0 there), for the VJP and the tangent rule alike. */
static ad_var pow_zz(ad_var a, ad_var b) { return ad_mul(ad__inrange(a, 0.0, 0.0), ad__inrange(b, 0.0, 0.0)); }
static ad_var pow_da(ad_var a, ad_var b) { return ad_mul(b, ad_pow(a, ad_add_scalar(ad_add(b, pow_zz(a, b)), -1.0))); }
static ad_var pow_db(ad_var a, ad_var b, ad_var y) { return ad_xlogy(ad_sub(y, pow_zz(a, b)), a); }
void ad__vjp_pow(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    ad_var a = ad__inv(t, n, 0), b = ad__inv(t, n, 1);
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, ad_mul(gy, pow_da(a, b)));
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, ad_mul(gy, pow_db(a, b, ad__var(t, self))));
}
JVP(pow)
{
    ad_var a = ad__has(TA) ? ad_mul(TA, pow_da(A, B)) : TA;
    ad_var b = ad__has(TB) ? ad_mul(TB, pow_db(A, B, ad__var(t, self))) : TB;
    return ad__tfit(t, n, ad__tsum(a, b));
}

/* maximum: y = max(a, b), NaN propagates; VJP: ga = sum_to(gy * m), gb = sum_to(gy * (1 - m)),
** m = 1 where a > b, 1/2 on ties, 0 elsewhere; a NaN ranks above every number, so the gradient
** goes to the operand the output came from (a when both are NaN) */
KERNELS(maximum, (a > b || isnan(a)) ? a : b, (a > b || isnan(a)) ? a : b)
FWD(maximum)
ad_var ad_maximum(ad_var a, ad_var b) { return binary(AD_OP_MAXIMUM, a, b, ONE(maximum)); }
static void minmax_vjp(ad_tape *t, const ad_node *n, ad_var gy, ad_var *gx, ad_var m)
{
    ad_var gm = ad_mul(gy, m);
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, gm);
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, ad_sub(gy, gm));
}
/* tangent: ta m + tb (1 - m), the same m */
static ad_var minmax_jvp(ad_tape *t, const ad_node *n, const ad_var *tx, ad_var m)
{
    ad_var a = ad__has(TA) ? ad_mul(TA, m) : TA;
    ad_var b = ad__has(TB) ? ad_mul(TB, ad_add_scalar(ad_neg(m), 1.0)) : TB;
    return ad__tfit(t, n, ad__tsum(a, b));
}
void ad__vjp_maximum(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    minmax_vjp(t, n, gy, gx, ad__cmp_gt(ad__inv(t, n, 0), ad__inv(t, n, 1)));
}
JVP(maximum) { return minmax_jvp(t, n, tx, ad__cmp_gt(A, B)); }

/* minimum: y = min(a, b), NaN propagates; VJP as maximum with m = 1 where a < b: m = cmp_gt(-a, -b),
** so that a NaN (which ranks above every number there) still draws the gradient */
KERNELS(minimum, (a < b || isnan(a)) ? a : b, (a < b || isnan(a)) ? a : b)
FWD(minimum)
ad_var ad_minimum(ad_var a, ad_var b) { return binary(AD_OP_MINIMUM, a, b, ONE(minimum)); }
void ad__vjp_minimum(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    minmax_vjp(t, n, gy, gx, ad__cmp_gt(ad_neg(ad__inv(t, n, 0)), ad_neg(ad__inv(t, n, 1))));
}
JVP(minimum) { return minmax_jvp(t, n, tx, ad__cmp_gt(ad_neg(A), ad_neg(B))); }

/* xlogy: y = x * log(z), 0 where x == 0 (unless z is NaN);
** VJP: gx = sum_to(xlogy(gy * m, z)), gz = sum_to(gy * x / z), where m is 1 except at x = 0 with
** z <= 0 (0 there). y is linear in x, so gx is log z at x = 0 too; at x = 0, z <= 0 it is 0, and a
** zero gy gives 0 even where log z is infinite (PyTorch's convention in both). */
KERNELS(xlogy, (a == 0 && !isnan(b)) ? 0.0 : a * log(b), (a == 0 && !isnan(b)) ? 0.0f : a * logf(b))
FWD(xlogy)
ad_var ad_xlogy(ad_var x, ad_var z) { return binary(AD_OP_XLOGY, x, z, ONE(xlogy)); }
/* m of the VJP above: 0 at x = 0 with z <= 0, 1 elsewhere (the tangent rule's too) */
static ad_var xlogy_m(ad_var x, ad_var z)
{
    return ad_add_scalar(ad_neg(ad_mul(ad__inrange(x, 0.0, 0.0), ad__inrange(z, -INFINITY, 0.0))), 1.0);
}
void ad__vjp_xlogy(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx)
{
    ad_var x = ad__inv(t, n, 0), z = ad__inv(t, n, 1);
    if (ad__needs(t, n, 0)) gx[0] = ad__unbroadcast(t, n, 0, ad_xlogy(ad_mul(gy, xlogy_m(x, z)), z));
    if (ad__needs(t, n, 1)) gx[1] = ad__unbroadcast(t, n, 1, ad_mul(gy, ad_div(x, z)));
}
JVP(xlogy)
{
    ad_var a = ad__has(TA) ? ad_xlogy(ad_mul(TA, xlogy_m(A, B)), B) : TA;
    ad_var b = ad__has(TB) ? ad_mul(TB, ad_div(A, B)) : TB;
    return ad__tfit(t, n, ad__tsum(a, b));
}

/* ---- masks (not differentiable) used by the VJPs above ---- */

/* cmp_gt: y = a > b ? 1 : (a == b ? 1/2 : 0), a NaN a ranking above everything (1) */
KERNELS(cmp_gt, (a > b || isnan(a)) ? 1.0 : (a == b ? 0.5 : 0.0), (a > b || isnan(a)) ? 1.0f : (a == b ? 0.5f : 0.0f))
FWD(cmp_gt)
ad_var ad__cmp_gt(ad_var a, ad_var b) { return binary(AD_OP_CMP_GT, a, b, ONE(cmp_gt)); }
void ad__vjp_cmp_gt(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx) {}

/* eq: y = a == b ? 1 : 0 */
KERNELS(eq, a == b ? 1.0 : 0.0, a == b ? 1.0f : 0.0f)
FWD(eq)
ad_var ad__eq(ad_var a, ad_var b) { return binary(AD_OP_EQ, a, b, ONE(eq)); }
void ad__vjp_eq(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx) {}

/* The one-element F64 formulas of the binary ops, by op (NULL for the others): the steps of
** replay's scalar program (replay.c) call them, so that a replayed node computes exactly what
** the recording and the op's forward computed. */
#define AD_ONE64_binary(ID, name) [AD_OP_##ID] = name##_one64,
const ad_binary64_fn ad__binary_one64[AD_OP_COUNT] = {
#include "one64_table.inc"
};

/* The fast VJPs' one-element F64 formulas, by op and input (ad__binary_grad64, tape.h): add's
** pass gy through (ad__gpass: the same value, written or added). */
static inline double pass_g64(double g, double a, double b, double y)
{
    (void)a;
    (void)b;
    (void)y;
    return g;
}
const ad_binary_grad64_fn ad__binary_grad64[AD_OP_COUNT][2] = {
    [AD_OP_ADD] = {pass_g64, pass_g64},
    [AD_OP_SUB] = {sub_ga64, sub_gb64},
    [AD_OP_MUL] = {mul_ga64, mul_gb64},
    [AD_OP_DIV] = {div_ga64, div_gb64},
};

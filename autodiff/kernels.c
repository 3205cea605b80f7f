/* kernels.c: broadcasting, reduction-to-shape and accumulation loops shared by the op families. */
#include "kernels.h"

#include <stdatomic.h>

/* ad__par_for's job: the next chunk to take, on its own cache line (every thread takes from it). */
typedef struct par_for {
    _Alignas(64) atomic_llong next;
    int64_t n, chunk;
    ad__range_fn run;
    void *ctx;
} par_for;

static void par_for_share(void *ctx, int tid, int nth)
{
    par_for *p = ctx;
    for (;;) {
        int64_t lo = (int64_t)atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed) * p->chunk;
        if (lo >= p->n) return;
        p->run(p->ctx, lo, p->n - lo > p->chunk ? lo + p->chunk : p->n);
    }
}

void ad__par_for(int nth, int64_t n, int64_t per, ad__range_fn run, void *ctx)
{
    par_for p = {.n = n, .chunk = ad__par_chunk(per), .run = run, .ctx = ctx};
    atomic_init(&p.next, 0);
    ad__parallel(nth, par_for_share, &p);
}

bool ad__broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout, int64_t *out)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da == db || db == 1)
            out[i] = da;
        else if (da == 1)
            out[i] = db;
        else
            return false;
    }
    *nout = n;
    return true;
}

void ad__bcast_strides(const ad_tensor *in, int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        int j = in->ndim - ndim + i;
        if (j < 0) {
            strides[i] = 0;
            continue;
        }
        strides[i] = (in->shape[j] == 1 && shape[i] != 1) ? 0 : s;
        s *= in->shape[j];
    }
}

/* The loops of broadcast_copy and sum_to, once per dtype, each compiled for
** AVX-512/AVX2/baseline (AD_CLONES). The innermost dimension's stride is 0
** (broadcast) or 1, and each case has a loop of its own, so that it vectorizes. */
#define BCAST_COPY(T)                                                                                    \
    AD_CLONES static void bcast_copy_##T(ad_tensor *dst, const ad_tensor *src, const int64_t *st)        \
    {                                                                                                    \
        T *d = dst->data;                                                                                \
        const T *s = src->data;                                                                          \
        if (src->size == 1) {                                                                            \
            const T v = s[0];                                                                            \
            for (int64_t i = 0; i < dst->size; i++) d[i] = v;                                            \
            return;                                                                                      \
        }                                                                                                \
        int64_t idx[AD_MAX_DIMS] = {0}, off = 0;                                                         \
        int last = dst->ndim - 1;                                                                        \
        int64_t inner = dst->shape[last], sl = st[last];                                                 \
        for (int64_t o = 0; o < dst->size; o += inner) {                                                 \
            if (sl == 0) {                                                                               \
                const T v = s[off];                                                                      \
                for (int64_t k = 0; k < inner; k++) d[o + k] = v;                                        \
            } else {                                                                                     \
                memcpy(d + o, s + off, (size_t)inner * sizeof(T));                                       \
            }                                                                                            \
            ad__odometer_next(last, dst->shape, idx, 1, &st, &off); /* the outer dims, src's offset */   \
        }                                                                                                \
    }
BCAST_COPY(double)
BCAST_COPY(float)

void ad__broadcast_copy(ad_tensor *dst, const ad_tensor *src)
{
    if (dst->size == 0) return;
    if (dst->ndim == 0 || src->size == dst->size) {
        memcpy(dst->data, src->data, ad__nbytes(dst));
        return;
    }
    int64_t st[AD_MAX_DIMS];
    ad__bcast_strides(src, dst->ndim, dst->shape, st);
    if (dst->dtype == AD_F64)
        bcast_copy_double(dst, src, st);
    else
        bcast_copy_float(dst, src, st);
}

/* A sum_to, on threads in chunks of the outermost dim of src that dst keeps (`split`), so that
** each chunk writes a block of dst of its own and adds each of its outputs' terms in the order one
** thread does. st: dst's element strides in src's index space (0 where dst is broadcast); ss:
** src's own strides. */
typedef struct sum_job {
    ad_tensor *dst;
    const ad_tensor *src;
    int split;
    int64_t rows; /* src's rows (of its last dim) */
    int64_t st[AD_MAX_DIMS], ss[AD_MAX_DIMS];
} sum_job;

/* On threads, the outputs of a chunk are summed in a buffer of its own on the stack when they are
** this few (a bias's, a batch's): they take a += for every row, and two threads writing one cache
** line would pass it to and fro (sum_to of [R, 32, 64] to [1, 32, 1], 2^16 to 2^18 elements, on 2
** threads: 1.3-1.4x the time of 1 thread in place, 0.65-0.77x with the buffer). The same additions
** in the same order. */
#define SUM_LOCAL 256

/* Full sums and sums of broadcast rows are in double for both dtypes (float32
** data keeps its accuracy), in index order, so they stay scalar: vectorizing
** them would reassociate. Rows that keep their axis add elementwise (vectorized).
** sum_chunk_<T> sums indices [k0, k1) of the split dim (a chunk on threads). */
#define SUM_CHUNK(T)                                                                                     \
    AD_CLONES static void sum_chunk_##T(void *ctx, int64_t k0, int64_t k1)                               \
    {                                                                                                    \
        const sum_job *j = ctx;                                                                          \
        T *d = j->dst->data;                                                                             \
        const T *s = j->src->data;                                                                       \
        const int64_t *st = j->st;                                                                       \
        int last = j->src->ndim - 1, sp = j->split;                                                      \
        int64_t shape[AD_MAX_DIMS];                                                                      \
        memcpy(shape, j->src->shape, sizeof shape);                                                      \
        shape[sp] = k1 - k0;                                                                             \
        T local[SUM_LOCAL];                                                                              \
        int64_t blk = (k1 - k0) * st[sp]; /* this chunk's outputs, from d + k0 st[sp] on */              \
        T *o = blk <= SUM_LOCAL ? local : d + k0 * st[sp];                                               \
        memset(o, 0, (size_t)blk * sizeof(T));                                                           \
        int64_t idx[AD_MAX_DIMS] = {0}, off[2] = {k0 * j->ss[sp], 0}; /* src's, o's */                  \
        const int64_t *strides[2] = {j->ss, st};                                                         \
        int64_t inner = shape[last], sl = st[last];                                                      \
        int64_t rows = sp == last ? j->rows : j->rows / j->src->shape[sp] * (k1 - k0);                   \
        for (int64_t r = 0; r < rows; r++) {                                                             \
            const T *sr = s + off[0];                                                                    \
            if (sl == 0) {                                                                               \
                double acc = 0;                                                                          \
                for (int64_t k = 0; k < inner; k++) acc += sr[k];                                        \
                o[off[1]] += (T)acc;                                                                     \
            } else {                                                                                     \
                T *restrict dr = o + off[1];                                                             \
                const T *restrict srr = sr;                                                              \
                for (int64_t k = 0; k < inner; k++) dr[k] += srr[k];                                     \
            }                                                                                            \
            ad__odometer_next(last, shape, idx, 2, strides, off); /* the outer dims */                   \
        }                                                                                                \
        if (o == local) memcpy(d + k0 * st[sp], local, (size_t)blk * sizeof(T));                         \
    }
SUM_CHUNK(double)
SUM_CHUNK(float)

/* sum_to on one thread: the same sums as SUM_CHUNK's, rows walked in place. */
#define SUM_TO(T)                                                                                        \
    AD_CLONES static void sum_to_##T(ad_tensor *dst, const ad_tensor *src, const int64_t *st)            \
    {                                                                                                    \
        T *d = dst->data;                                                                                \
        const T *s = src->data;                                                                          \
        memset(d, 0, (size_t)dst->size * sizeof(T));                                                    \
        int64_t idx[AD_MAX_DIMS] = {0}, off = 0;                                                         \
        int last = src->ndim - 1;                                                                        \
        int64_t inner = src->shape[last], sl = st[last];                                                 \
        for (int64_t o = 0; o < src->size; o += inner) {                                                 \
            if (sl == 0) {                                                                               \
                double acc = 0;                                                                          \
                for (int64_t k = 0; k < inner; k++) acc += s[o + k];                                     \
                d[off] += (T)acc;                                                                        \
            } else {                                                                                     \
                T *restrict dr = d + off;                                                                \
                const T *restrict sr = s + o;                                                            \
                for (int64_t k = 0; k < inner; k++) dr[k] += sr[k];                                      \
            }                                                                                            \
            ad__odometer_next(last, src->shape, idx, 1, &st, &off); /* the outer dims, dst's offset */   \
        }                                                                                                \
    }
SUM_TO(double)
SUM_TO(float)

/* Full sums in double, in index order (a reduction: one thread). */
#define SUM_ALL(T)                                                                                       \
    AD_CLONES static T sum_all_##T(const T *s, int64_t n)                                                \
    {                                                                                                    \
        double acc = 0;                                                                                  \
        for (int64_t i = 0; i < n; i++) acc += s[i];                                                     \
        return (T)acc;                                                                                   \
    }
SUM_ALL(double)
SUM_ALL(float)

void ad__sum_to_kernel(ad_tensor *dst, const ad_tensor *src)
{
    if (dst->size == 0) return;
    if (src->size == dst->size) {
        memcpy(dst->data, src->data, ad__nbytes(dst));
        return;
    }
    if (src->size == 0) {
        memset(dst->data, 0, ad__nbytes(dst));
        return;
    }
    if (dst->size == 1) {
        if (dst->dtype == AD_F64)
            *(double *)dst->data = sum_all_double(src->data, src->size);
        else
            *(float *)dst->data = sum_all_float(src->data, src->size);
        return;
    }
    sum_job j = {dst, src, -1, src->size / src->shape[src->ndim - 1], {0}, {0}};
    ad__bcast_strides(dst, src->ndim, src->shape, j.st);
    int nth = ad__par_threads(src->size);
    if (nth == 1) {
        if (dst->dtype == AD_F64)
            sum_to_double(dst, src, j.st);
        else
            sum_to_float(dst, src, j.st);
        return;
    }
    int last = src->ndim - 1;
    j.ss[last] = 1;
    for (int i = last; i > 0; i--) j.ss[i - 1] = j.ss[i] * src->shape[i];
    for (int i = 0; i <= last && j.split < 0; i++)
        if (j.st[i] != 0 && src->shape[i] > 1) j.split = i;
    /* (dst has more than one element, so it keeps a dim of src longer than 1) */
    int64_t len = src->shape[j.split];
    if (nth > len) nth = (int)len;
    ad__par_for(nth, len, src->size / len, dst->dtype == AD_F64 ? sum_chunk_double : sum_chunk_float, &j);
}

/* d += s elementwise, elements [lo, hi) (d and s may be the same array). */
typedef struct add_job {
    void *d;
    const void *s;
} add_job;
#define ADD_INTO(T)                                                                                      \
    AD_CLONES static void add_into_##T(void *ctx, int64_t lo, int64_t hi)                                \
    {                                                                                                    \
        const add_job *j = ctx;                                                                          \
        T *d = j->d;                                                                                     \
        const T *s = j->s;                                                                               \
        for (int64_t i = lo; i < hi; i++) d[i] += s[i];                                                  \
    }
ADD_INTO(double)
ADD_INTO(float)

void ad__add_into(ad_tensor *dst, const ad_tensor *src)
{
    if (dst->dtype == src->dtype) {
        add_job j = {dst->data, src->data};
        ad__range_fn run = dst->dtype == AD_F64 ? add_into_double : add_into_float;
        int nth = ad__par_threads(dst->size);
        if (nth > 1)
            ad__par_for(nth, dst->size, 1, run, &j);
        else
            run(&j, 0, dst->size);
    } else {
        for (int64_t i = 0; i < dst->size; i++) ad_tensor_set(dst, i, ad_tensor_get(dst, i) + ad_tensor_get(src, i));
    }
}

/* Not finite when all exponent bits are set: tested on the bits, without an
** early exit, so that the loops vectorize. */
AD_CLONES static bool finite_f32(const float *d, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &d[i], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

AD_CLONES static bool finite_f64(const double *d, int64_t n)
{
    uint64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &d[i], sizeof u);
        bad |= (u & 0x7ff0000000000000u) == 0x7ff0000000000000u;
    }
    return !bad;
}

bool ad__all_finite(const ad_tensor *t)
{
    return t->dtype == AD_F64 ? finite_f64(t->data, t->size) : finite_f32(t->data, t->size);
}

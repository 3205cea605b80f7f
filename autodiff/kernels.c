/* kernels.c: broadcasting, reduction-to-shape and accumulation loops shared by the op families. */
#include "kernels.h"

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

/* Full sums and sums of broadcast rows are in double for both dtypes (float32
** data keeps its accuracy), in index order, so they stay scalar: vectorizing
** them would reassociate. Rows that keep their axis add elementwise (vectorized). */
#define SUM_TO(T)                                                                                        \
    AD_CLONES static void sum_to_##T(ad_tensor *dst, const ad_tensor *src, const int64_t *st)            \
    {                                                                                                    \
        T *d = dst->data;                                                                                \
        const T *s = src->data;                                                                          \
        if (dst->size == 1) {                                                                            \
            double acc = 0;                                                                              \
            for (int64_t i = 0; i < src->size; i++) acc += s[i];                                         \
            d[0] = (T)acc;                                                                               \
            return;                                                                                      \
        }                                                                                                \
        memset(d, 0, (size_t)dst->size * sizeof(T));                                                     \
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
    /* strides of dst seen from src's index space: 0 where dst is broadcast */
    int64_t st[AD_MAX_DIMS];
    ad__bcast_strides(dst, src->ndim, src->shape, st);
    if (dst->dtype == AD_F64)
        sum_to_double(dst, src, st);
    else
        sum_to_float(dst, src, st);
}

/* d += s elementwise (d and s may be the same array). */
#define ADD_INTO(T)                                                                                      \
    AD_CLONES static void add_into_##T(T *d, const T *s, int64_t n)                                      \
    {                                                                                                    \
        for (int64_t i = 0; i < n; i++) d[i] += s[i];                                                    \
    }
ADD_INTO(double)
ADD_INTO(float)

void ad__add_into(ad_tensor *dst, const ad_tensor *src)
{
    if (dst->dtype == AD_F64 && src->dtype == AD_F64) {
        add_into_double(dst->data, src->data, dst->size);
    } else if (dst->dtype == AD_F32 && src->dtype == AD_F32) {
        add_into_float(dst->data, src->data, dst->size);
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

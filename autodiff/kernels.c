/* kernels.c: broadcasting, reduction-to-shape and accumulation loops shared by the op families. */
#include "ad_internal.h"

#include <math.h>

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

#define BCAST_COPY(T)                                                                                    \
    do {                                                                                                 \
        T *d = dst->data;                                                                                \
        const T *s = src->data;                                                                          \
        if (src->size == 1) {                                                                            \
            for (int64_t i = 0; i < dst->size; i++) d[i] = s[0];                                         \
            break;                                                                                       \
        }                                                                                                \
        int64_t idx[AD_MAX_DIMS] = {0}, off = 0;                                                         \
        int last = dst->ndim - 1;                                                                        \
        int64_t inner = dst->shape[last], sl = st[last];                                                 \
        for (int64_t o = 0; o < dst->size; o += inner) {                                                 \
            for (int64_t k = 0; k < inner; k++) d[o + k] = s[off + k * sl];                              \
            /* advance the outer odometer, keeping the source offset */                                  \
            for (int dd = last - 1; dd >= 0; dd--) {                                                     \
                off += st[dd];                                                                           \
                if (++idx[dd] < dst->shape[dd]) break;                                                   \
                off -= st[dd] * dst->shape[dd];                                                          \
                idx[dd] = 0;                                                                             \
            }                                                                                            \
        }                                                                                                \
    } while (0)

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
        BCAST_COPY(double);
    else
        BCAST_COPY(float);
}

/* Sums in double for both dtypes: reductions of float32 data keep their accuracy. */
#define SUM_TO(T)                                                                                        \
    do {                                                                                                 \
        T *d = dst->data;                                                                                \
        const T *s = src->data;                                                                          \
        if (dst->size == 1) {                                                                            \
            double acc = 0;                                                                              \
            for (int64_t i = 0; i < src->size; i++) acc += s[i];                                         \
            d[0] = (T)acc;                                                                               \
            break;                                                                                       \
        }                                                                                                \
        for (int64_t i = 0; i < dst->size; i++) d[i] = 0;                                                \
        int64_t idx[AD_MAX_DIMS] = {0}, off = 0;                                                         \
        int last = src->ndim - 1;                                                                        \
        int64_t inner = src->shape[last], sl = st[last];                                                 \
        for (int64_t o = 0; o < src->size; o += inner) {                                                 \
            if (sl == 0) {                                                                               \
                double acc = 0;                                                                          \
                for (int64_t k = 0; k < inner; k++) acc += s[o + k];                                     \
                d[off] += (T)acc;                                                                        \
            } else {                                                                                     \
                for (int64_t k = 0; k < inner; k++) d[off + k] += s[o + k];                              \
            }                                                                                            \
            for (int dd = last - 1; dd >= 0; dd--) {                                                     \
                off += st[dd];                                                                           \
                if (++idx[dd] < src->shape[dd]) break;                                                   \
                off -= st[dd] * src->shape[dd];                                                          \
                idx[dd] = 0;                                                                             \
            }                                                                                            \
        }                                                                                                \
    } while (0)

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
        SUM_TO(double);
    else
        SUM_TO(float);
}

void ad__add_into(ad_tensor *dst, const ad_tensor *src)
{
    if (dst->dtype == AD_F64 && src->dtype == AD_F64) {
        double *d = dst->data;
        const double *s = src->data;
        for (int64_t i = 0; i < dst->size; i++) d[i] += s[i];
    } else if (dst->dtype == AD_F32 && src->dtype == AD_F32) {
        float *d = dst->data;
        const float *s = src->data;
        for (int64_t i = 0; i < dst->size; i++) d[i] += s[i];
    } else {
        for (int64_t i = 0; i < dst->size; i++) ad_tensor_set(dst, i, ad_tensor_get(dst, i) + ad_tensor_get(src, i));
    }
}

bool ad__all_finite(const ad_tensor *t)
{
    if (t->dtype == AD_F64) {
        const double *d = t->data;
        for (int64_t i = 0; i < t->size; i++)
            if (!isfinite(d[i])) return false;
    } else {
        const float *d = t->data;
        for (int64_t i = 0; i < t->size; i++)
            if (!isfinite(d[i])) return false;
    }
    return true;
}

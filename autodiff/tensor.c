/* tensor.c: dense row-major tensors owned by the caller. */
#include "services.h"

#include <inttypes.h>

bool ad__shape_size(int ndim, const int64_t *shape, int64_t *size)
{
    if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim > 0 && !shape)) return false;
    int64_t n = 1;
    /* the overflow check without ad__mul_ok's division: every op's result shape comes here */
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return false;
    /* keep byte counts representable too */
    if (n > INT64_MAX / 16) return false;
    *size = n;
    return true;
}

ad_tensor *ad_tensor_new(ad_dtype dtype, int ndim, const int64_t *shape)
{
    int64_t size;
    if (ad_dtype_size(dtype) == 0 || !ad__shape_size(ndim, shape, &size)) return NULL;
    size_t bytes = (size_t)size * ad_dtype_size(dtype);
    if (bytes > SIZE_MAX - sizeof(ad_tensor) - 64) return NULL;
    /* header and data in one block, data 64-byte aligned */
    size_t head = (sizeof(ad_tensor) + 63) & ~(size_t)63;
    unsigned char *raw = ad__malloc(head + bytes + 64);
    if (!raw) return NULL;
    ad_tensor *t = (ad_tensor *)raw;
    ad__tensor_init(t, dtype, ndim, shape, size);
    uintptr_t p = ((uintptr_t)raw + head + 63) & ~(uintptr_t)63;
    t->data = (void *)p;
    t->flags_ = AD_TENSOR_HEAP;
    memset(t->data, 0, bytes);
    return t;
}

ad_tensor *ad_tensor_from(ad_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
    ad_tensor *t = ad_tensor_new(dtype, ndim, shape);
    if (!t) return NULL;
    if (t->size > 0) {
        if (!data) {
            ad_tensor_free(t);
            return NULL;
        }
        memcpy(t->data, data, ad__nbytes(t));
    }
    return t;
}

ad_tensor *ad_tensor_clone(const ad_tensor *src)
{
    if (!src) return NULL;
    return ad_tensor_from(src->dtype, src->ndim, src->shape, src->data);
}

ad_status ad_tensor_copy(ad_tensor *dst, const ad_tensor *src)
{
    if (!dst || !src) return AD_ERR_ARG;
    if (dst->size != src->size) return AD_ERR_SHAPE;
    dst->version_++;
    if (dst->dtype == src->dtype) {
        if (dst->size) memmove(dst->data, src->data, ad__nbytes(src));
        return AD_OK;
    }
    for (int64_t i = 0; i < src->size; i++) ad_tensor_set(dst, i, ad_tensor_get(src, i));
    return AD_OK;
}

void ad_tensor_fill(ad_tensor *t, double v)
{
    if (!t) return;
    t->version_++;
    if (t->dtype == AD_F64) {
        double *d = t->data;
        for (int64_t i = 0; i < t->size; i++) d[i] = v;
    } else {
        float *d = t->data, f = (float)v;
        for (int64_t i = 0; i < t->size; i++) d[i] = f;
    }
}

double ad_tensor_get(const ad_tensor *t, int64_t i)
{
    if (!t || i < 0 || i >= t->size) return 0.0;
    return t->dtype == AD_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

void ad_tensor_set(ad_tensor *t, int64_t i, double v)
{
    if (!t || i < 0 || i >= t->size) return;
    t->version_++;
    if (t->dtype == AD_F64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

uint32_t ad_tensor_version(const ad_tensor *t) { return t ? t->version_ : 0; }

void ad_tensor_bump_version(ad_tensor *t)
{
    if (t) t->version_++;
}

void ad_tensor_free(ad_tensor *t)
{
    if (t && (t->flags_ & AD_TENSOR_HEAP)) ad__free(t);
}

bool ad_shape_equal(const ad_tensor *a, const ad_tensor *b)
{
    if (!a || !b) return false;
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *ad_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    if (!buf || n == 0) return buf;
    if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim > 0 && !shape)) {
        snprintf(buf, n, "[?]");
        return buf;
    }
    size_t at = 0;
    int w = snprintf(buf, n, "[");
    at = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && at < n; i++) {
        w = snprintf(buf + at, n - at, i ? ",%" PRId64 : "%" PRId64, shape[i]);
        if (w < 0) break;
        at += (size_t)w;
    }
    if (at < n) snprintf(buf + at, n - at, "]");
    buf[n - 1] = '\0';
    return buf;
}

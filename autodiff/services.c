/* services.c: the one allocator every allocation goes through, overflow-safe sizes, status names, dtypes, file error messages. */
#include "services.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* The process-wide settings. They are set once at start by explicit calls
** (like sqlite3_config), never changed behind the caller's back. */
static ad_alloc_fn g_alloc = NULL;
static void *g_alloc_ud = NULL;

void ad_set_allocator(ad_alloc_fn fn, void *ud)
{
    g_alloc = fn;
    g_alloc_ud = ud;
}

void *ad__malloc(size_t n)
{
    if (n == 0) n = 1;
    if (g_alloc) return g_alloc(g_alloc_ud, NULL, n);
    return malloc(n);
}

void *ad__calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *p = ad__malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *ad__realloc(void *p, size_t n)
{
    if (n == 0) n = 1;
    if (g_alloc) return g_alloc(g_alloc_ud, p, n);
    return realloc(p, n);
}

void ad__free(void *p)
{
    if (!p) return;
    if (g_alloc)
        g_alloc(g_alloc_ud, p, 0);
    else
        free(p);
}

bool ad__mul_ok(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return false; /* no division: every product's plan calls it */
    *out = r;
    return true;
}

const char *ad_status_str(ad_status s)
{
    switch (s) {
    case AD_OK: return "ok";
    case AD_ERR_NOMEM: return "out of memory";
    case AD_ERR_ARG: return "invalid argument";
    case AD_ERR_SHAPE: return "shape mismatch";
    case AD_ERR_DTYPE: return "dtype mismatch";
    case AD_ERR_AXIS: return "axis out of range";
    case AD_ERR_INDEX: return "index out of range";
    case AD_ERR_STATE: return "invalid state or stale handle";
    case AD_ERR_NUMERIC: return "numerical error";
    case AD_ERR_IO: return "input/output error";
    case AD_ERR_FORMAT: return "malformed file";
    case AD_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

size_t ad_dtype_size(ad_dtype d)
{
    switch (d) {
    case AD_F32: return 4;
    case AD_F64: return 8;
    }
    return 0;
}

const char *ad_dtype_name(ad_dtype d)
{
    switch (d) {
    case AD_F32: return "f32";
    case AD_F64: return "f64";
    }
    return "?";
}

ad_status ad__file_error(char *err, size_t errlen, ad_status s, const char *fn, const char *path, const char *fmt, ...)
{
    if (err && errlen > 0) {
        int k = snprintf(err, errlen, "%s: %s: ", fn, path ? path : "(null)");
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return s;
}

/* services.h: what the engine lends to its own files and to libautodiff-nn: allocation, sizes, tensor
** headers, error messages, the thread pool; never installed. The only internal header nn/ includes. */
#ifndef AUTODIFF_SERVICES_H
#define AUTODIFF_SERVICES_H

#include "ad.h"

#include <stdarg.h>
#include <string.h>

#define AD_INTERNAL __attribute__((visibility("hidden")))
/* Internal too (never in an installed header), but exported from the shared
** library so that libautodiff-nn allocates through the same allocator and
** records errors on tapes the same way. */
#define AD_SHARED __attribute__((visibility("default")))
/* For the few front ends that must fold into each op (the scalar fast paths). */
#define AD_ALWAYS_INLINE inline __attribute__((always_inline))

/* AD_CLONES before a hot loop kernel compiles it three times (AVX-512, AVX2,
** baseline x86-64) and picks one at load time by the CPU (an ifunc: GCC on
** x86-64 with glibc; elsewhere, or with -DAD_NO_CLONES, it is empty). The
** results are the same bit for bit on every path: FP contraction is off
** (-ffp-contract=off) and no -ffast-math, so the vectorizer keeps the scalar
** order of operations. See docs/performance.md and bench/vectorization-report. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) && \
    !defined(AD_NO_CLONES) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define AD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef AD_CLONES
#define AD_CLONES
#endif

/* ---- allocation: every byte the library takes goes through here (services.c) ---- */

AD_SHARED void *ad__malloc(size_t n);
AD_SHARED void *ad__calloc(size_t count, size_t size);
AD_SHARED void *ad__realloc(void *p, size_t n);
AD_SHARED void ad__free(void *p);
/* a * b into *out; false on overflow (or a negative operand). */
AD_SHARED bool ad__mul_ok(int64_t a, int64_t b, int64_t *out);
static inline bool ad__little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ---- tensor headers (tensor.c) ---- */

enum {
    AD_TENSOR_HEAP = 1u << 0,    /* header and data from ad__malloc, freed by ad_tensor_free */
    AD_TENSOR_BORROWED = 1u << 1 /* data belongs to someone else */
};

/* Checks ndim/shape and computes the element count; false on a bad shape. */
AD_INTERNAL bool ad__shape_size(int ndim, const int64_t *shape, int64_t *size);
/* Sets t's header: dims past ndim are zero, no data yet. */
static inline void ad__tensor_init(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape, int64_t size)
{
    t->dtype = dtype;
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape); /* a constant size: a few stores, no call */
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->size = size;
    t->data = NULL;
    t->flags_ = 0;
    t->version_ = 0;
}
/* The bytes of t's data. */
static inline size_t ad__nbytes(const ad_tensor *t) { return (size_t)t->size * ad_dtype_size(t->dtype); }
/* true when every element is finite (kernels.c). */
AD_SHARED bool ad__all_finite(const ad_tensor *t);

/* ---- errors ---- */

/* Records the first error on the tape (later ones are ignored); tape.c. */
AD_SHARED void ad__fail(ad_tape *t, ad_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The invalid var a failed op returns: on tape t (may be NULL), of its current generation. */
AD_SHARED ad_var ad__no_var(ad_tape *t);
/* n bytes from t's arena, valid until the tape's reset (64-byte aligned from 64
** bytes up); NULL, with AD_ERR_NOMEM on the tape, on failure. */
AD_SHARED void *ad__tape_alloc(ad_tape *t, size_t n);
/* Formats "fn: path: message" into err (may be NULL) for the file readers and
** writers; returns s (services.c). */
AD_SHARED ad_status ad__file_error(char *err, size_t errlen, ad_status s, const char *fn, const char *path,
                                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- files (fileio.c) ---- */

/* Opens path for reading (O_CLOEXEC) without ever blocking or touching what is not a regular file:
** a FIFO, device, socket or directory is refused (AD_ERR_IO, saying what it is) before it is
** opened. On success *fd is the descriptor and *size the file's size. */
AD_SHARED ad_status ad__open_read(const char *fn, const char *path, int *fd, uint64_t *size, char *err,
                                  size_t errlen);
/* AD_OK when path does not exist or is a regular file; AD_ERR_IO when it is anything else (a
** symbolic link, FIFO, device, directory), which a save must not replace. */
AD_SHARED ad_status ad__check_target(const char *fn, const char *path, char *err, size_t errlen);

/* An atomic replacement of a file: ad__save_begin creates a temporary file beside path
** ("<path>.tmp.<pid>", or a further name when that one exists) with O_EXCL | O_NOFOLLOW, taking
** the replaced file's permissions; the caller writes to fd (ad__write_all); ad__save_commit
** fsyncs, closes, renames over path and fsyncs the directory; ad__save_abort removes the
** temporary file. After a failed begin or commit nothing is left to abort. */
typedef struct ad__save {
    int fd;
    bool created; /* tmp exists and is ours to remove */
    char *tmp, *dir;
    const char *path, *fn;
} ad__save;
AD_SHARED ad_status ad__save_begin(ad__save *s, const char *fn, const char *path, char *err, size_t errlen);
AD_SHARED ad_status ad__save_commit(ad__save *s, char *err, size_t errlen);
AD_SHARED void ad__save_abort(ad__save *s);
/* write(2) until done, retrying EINTR and short writes; false with errno set. */
AD_SHARED bool ad__write_all(int fd, const void *buf, size_t n);

/* ---- threads (threads.c) ---- */

/* The most threads one parallel call uses (larger settings are capped to this). */
#define AD__MAX_THREADS 64

/* Runs fn(ctx, tid, nth) for tid = 0 .. nth-1, tid 0 on the calling thread, the others on the
** persistent worker pool (started by the first call with nth > 1), and returns when all are done.
** Work must be split by tid alone, so results never depend on scheduling: a share may run on the
** calling thread instead (a worker that cannot be started, another call using the pool, a call
** from inside fn), with the same result, just slower. Never fails; fn must not fork. */
AD_SHARED void ad__parallel(int nth, void (*fn)(void *ctx, int tid, int nth), void *ctx);

#endif

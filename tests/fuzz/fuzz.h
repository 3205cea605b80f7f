/* fuzz.h: shared declarations of the fuzz targets, their file helpers, seed corpora and the replay driver. */
#ifndef AUTODIFF_FUZZ_H
#define AUTODIFF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry point; each fuzz_<target>.c defines it. Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The target's name ("npy", "idx", ...), defined next to LLVMFuzzerTestOneInput. */
extern const char fz_target[];

/* A path whose file holds exactly data[0..size): an in-memory file (memfd),
** one per slot (0..3), rewritten on every call. NULL if it cannot be made. */
const char *fz_file(int slot, const uint8_t *data, size_t size);

/* A private directory (made once per process on /dev/shm or $TMPDIR, removed
** at exit) for outputs that need a real directory, such as atomic saves. */
const char *fz_dir(void);

/* Removes every entry of fz_dir() (between inputs). */
void fz_dir_clean(void);

/* Reads a whole file into a malloc'ed buffer; NULL on error. */
uint8_t *fz_read_file(const char *path, size_t *size);

/* Calls emit for each seed input of target (a built-in corpus made with the
** library's own writers and by hand). */
typedef void (*fz_emit_fn)(const char *name, const uint8_t *data, size_t size, void *ctx);
void fz_seeds(const char *target, fz_emit_fn emit, void *ctx);

/* A growable byte buffer for building seeds; aborts when out of memory (test code). */
typedef struct fz_buf {
    uint8_t *p;
    size_t n, cap;
} fz_buf;

void fz_put(fz_buf *b, const void *data, size_t n);
void fz_put_str(fz_buf *b, const char *s);
void fz_put_u8(fz_buf *b, unsigned v);
void fz_put_le32(fz_buf *b, uint32_t v);
void fz_put_le64(fz_buf *b, uint64_t v);
void fz_put_be32(fz_buf *b, uint32_t v);
/* Calls emit with b's bytes, then frees and empties b. */
void fz_emit_buf(fz_emit_fn emit, void *ctx, const char *name, fz_buf *b);
/* Emits the contents of the file at path under name, then removes the file. */
void fz_emit_file(fz_emit_fn emit, void *ctx, const char *name, const char *path);

/* A broken invariant in a target: a crash that libFuzzer records. */
#define FZ_CHECK(cond)                                                                                   \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);           \
            abort();                                                                                     \
        }                                                                                                \
    } while (0)

#endif

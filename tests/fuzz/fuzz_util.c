/* fuzz_util.c: in-memory files and a scratch directory for the fuzz targets (test code, process-local state). */
#define _GNU_SOURCE
#include "fuzz.h"

#include <dirent.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_SLOTS 4

static int slot_fd[FZ_SLOTS] = {-1, -1, -1, -1};
static char slot_path[FZ_SLOTS][64];
static char scratch[256];

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t k = pwrite(fd, p + off, n - off, (off_t)off);
        if (k <= 0) return false;
        off += (size_t)k;
    }
    return true;
}

const char *fz_file(int slot, const uint8_t *data, size_t size)
{
    if (slot < 0 || slot >= FZ_SLOTS) return NULL;
    if (slot_fd[slot] < 0) {
        slot_fd[slot] = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (slot_fd[slot] < 0) return NULL;
        snprintf(slot_path[slot], sizeof slot_path[slot], "/proc/self/fd/%d", slot_fd[slot]);
    }
    if (ftruncate(slot_fd[slot], 0) != 0) return NULL;
    if (size && !write_all(slot_fd[slot], data, size)) return NULL;
    return slot_path[slot];
}

void fz_dir_clean(void)
{
    if (!scratch[0]) return;
    DIR *d = opendir(scratch);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", scratch, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void remove_scratch(void)
{
    fz_dir_clean();
    if (scratch[0]) rmdir(scratch);
}

const char *fz_dir(void)
{
    if (scratch[0]) return scratch;
    struct stat sb;
    const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/adfuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(scratch)) {
        scratch[0] = '\0';
        return NULL;
    }
    atexit(remove_scratch);
    return scratch;
}

uint8_t *fz_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        uint8_t *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    fclose(f);
    if (b) *size = n;
    return b;
}

/* ---- building seeds ---- */

void fz_put(fz_buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) abort();
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
}

void fz_put_str(fz_buf *b, const char *s) { fz_put(b, s, strlen(s)); }

void fz_put_u8(fz_buf *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    fz_put(b, &c, 1);
}

void fz_put_le32(fz_buf *b, uint32_t v)
{
    uint8_t c[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fz_put(b, c, 4);
}

void fz_put_le64(fz_buf *b, uint64_t v)
{
    fz_put_le32(b, (uint32_t)v);
    fz_put_le32(b, (uint32_t)(v >> 32));
}

void fz_put_be32(fz_buf *b, uint32_t v)
{
    uint8_t c[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    fz_put(b, c, 4);
}

void fz_emit_buf(fz_emit_fn emit, void *ctx, const char *name, fz_buf *b)
{
    emit(name, b->p, b->n, ctx);
    free(b->p);
    *b = (fz_buf){0};
}

void fz_emit_file(fz_emit_fn emit, void *ctx, const char *name, const char *path)
{
    size_t n;
    uint8_t *d = fz_read_file(path, &n);
    if (!d) abort();
    emit(name, d, n, ctx);
    free(d);
    unlink(path);
}

/* test_io_util.h: helpers for the file-format suites: temporary directories, raw files, Python checks. */
#ifndef AUTODIFF_TEST_IO_UTIL_H
#define AUTODIFF_TEST_IO_UTIL_H

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fresh directory under $TMPDIR (or /tmp), path written into buf. */
static inline void tio_mkdtemp(char *buf, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, n, "%s/adio-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

/* Removes every plain entry of dir, then dir itself. */
static inline void tio_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        if (remove(p) != 0) tio_rmtree(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Writes n bytes to path (creating or truncating it). */
static inline void tio_write(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    if (n) ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* The whole file in a malloc'ed buffer (NUL-terminated, one byte more); *n its size. */
static inline unsigned char *tio_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    ck_assert_int_ge(len, 0);
    rewind(f);
    unsigned char *b = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(b);
    if (len) ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    b[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* true when path exists. */
static inline int tio_exists(const char *path) { return access(path, F_OK) == 0; }

/* true when Debian's Python 3 with NumPy can run the helper scripts. */
static inline int tio_have_numpy(void)
{
    return getenv("AD_TEST_DATA") != NULL && system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Runs "/usr/bin/python3 $AD_TEST_DATA/<script> <args>"; returns its exit status (-1 if not run). */
static inline int tio_python(const char *script, const char *args)
{
    const char *data = getenv("AD_TEST_DATA");
    if (!data) return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/%s' %s", data, script, args);
    int rc = system(cmd);
    return rc == -1 ? -1 : (rc >> 8) & 0xff;
}

/* An allocator for ad_set_allocator that fails the fail_at-th allocation (1-based) and passes the rest on. */
typedef struct tio_failalloc {
    long count, fail_at;
} tio_failalloc;

static inline void *tio_alloc(void *ud, void *ptr, size_t n)
{
    tio_failalloc *f = ud;
    if (n == 0) {
        free(ptr);
        return NULL;
    }
    if (++f->count == f->fail_at) return NULL;
    return realloc(ptr, n);
}

/* Asserts st == want and that the message names the file and contains `what`. */
#define TIO_ASSERT_ERR(st, want, msg, path, what)                                                                      \
    do {                                                                                                               \
        ck_assert_msg((st) == (want), "status %d (%s), expected %d; message: %s", (int)(st), ad_status_str(st),        \
                      (int)(want), (msg));                                                                             \
        ck_assert_msg(strstr((msg), (path)) != NULL, "message does not name %s: %s", (path), (msg));                   \
        ck_assert_msg(strstr((msg), (what)) != NULL, "message lacks \"%s\": %s", (what), (msg));                       \
    } while (0)

#endif

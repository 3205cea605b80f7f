/* test_io_faults.c: saving under injected open/write/fsync/close/rename faults: an error, no temp file, no leaked fd, the old file intact. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "nn.h"
#include "test_io_util.h"
#include "test_util.h"

/*
** The test links the libraries' objects statically with
**   -Wl,--wrap=open64,--wrap=open,--wrap=write,--wrap=fsync,--wrap=close,--wrap=rename
** so that their calls reach the wrappers below, which pass through to the C
** library except for the one call a case picks: the n-th call of one kind
** (counted from when the case arms the injector) gets the fault. The library
** itself carries no test hook.
*/

enum { SC_OPEN, SC_WRITE, SC_FSYNC, SC_CLOSE, SC_RENAME, SC_COUNT };
static const char *const sc_name[SC_COUNT] = {"open", "write", "fsync", "close", "rename"};

typedef enum fault_kind {
    FK_ERRNO, /* fail with errno `err` */
    FK_SHORT, /* write: write half (at least 1 byte) and report it */
    FK_ZERO   /* write: report 0 bytes written */
} fault_kind;

typedef struct injector {
    bool armed;
    long calls[SC_COUNT];
    int sc;     /* the kind of call to fault, -1: none (just count) */
    long index; /* which call of that kind (0-based) */
    fault_kind kind;
    int err;
    bool fired;
    bool renamed; /* a real rename succeeded while armed */
} injector;

/* Test-side state: the wrappers have no other way to reach the case. */
static injector inj = {.sc = -1};

static void arm(int sc, long index, fault_kind kind, int err)
{
    memset(&inj, 0, sizeof inj);
    inj.sc = sc;
    inj.index = index;
    inj.kind = kind;
    inj.err = err;
    inj.armed = true;
}

static void disarm(void) { inj.armed = false; }

/* Counts the call; true when this is the one to fault. */
static bool hit(int sc)
{
    if (!inj.armed) return false;
    long i = inj.calls[sc]++;
    if (sc == inj.sc && i == inj.index) {
        inj.fired = true;
        return true;
    }
    return false;
}

int __real_open64(const char *path, int flags, ...);
int __wrap_open64(const char *path, int flags, ...);
int __real_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...);
ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __real_close(int fd);
int __wrap_close(int fd);
int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);

int __wrap_open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (hit(SC_OPEN)) {
        errno = inj.err;
        return -1;
    }
    return __real_open64(path, flags, mode);
}

int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (hit(SC_OPEN)) {
        errno = inj.err;
        return -1;
    }
    return __real_open(path, flags, mode);
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
    if (hit(SC_WRITE)) {
        if (inj.kind == FK_SHORT) return __real_write(fd, buf, n > 1 ? n / 2 : n);
        if (inj.kind == FK_ZERO) return 0;
        errno = inj.err;
        return -1;
    }
    return __real_write(fd, buf, n);
}

int __wrap_fsync(int fd)
{
    if (hit(SC_FSYNC)) {
        errno = inj.err;
        return -1;
    }
    return __real_fsync(fd);
}

int __wrap_close(int fd)
{
    if (hit(SC_CLOSE)) {
        /* Linux frees the descriptor even when close reports an error */
        __real_close(fd);
        errno = inj.err;
        return -1;
    }
    return __real_close(fd);
}

int __wrap_rename(const char *from, const char *to)
{
    if (hit(SC_RENAME)) {
        errno = inj.err;
        return -1;
    }
    int r = __real_rename(from, to);
    if (r == 0 && inj.armed) inj.renamed = true;
    return r;
}

/* ---- helpers ---- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* Number of entries of dir other than `keep`; the first such name into other. */
static int count_others(const char *dir, const char *keep, char *other, size_t n)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, keep) == 0) continue;
        if (k++ == 0) snprintf(other, n, "%s", e->d_name);
    }
    closedir(d);
    return k;
}

/* ---- what is saved: either raw safetensors or a whole nn checkpoint ---- */

typedef struct subject {
    bool checkpoint; /* nn_save of a model + Adam + rng; otherwise nn_safetensors_save of two tensors */
    ad_tensor *a, *b;
    nn_module *net;
    nn_optim *opt;
    ad_rng rng;
} subject;

static void subject_init(subject *s, bool checkpoint)
{
    memset(s, 0, sizeof *s);
    s->checkpoint = checkpoint;
    ad_rng_seed(&s->rng, 5);
    if (checkpoint) {
        s->net = nn_mlp(3, (const int64_t[]){6, 8, 3}, NN_TANH, &s->rng, NULL);
        ck_assert_ptr_nonnull(s->net);
        s->opt = nn_adam(s->net, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL);
        ck_assert_ptr_nonnull(s->opt);
    } else {
        s->a = tu_rand(AD_F32, AD_SHAPE(40, 30), -1, 1, 1);
        s->b = tu_rand(AD_F64, AD_SHAPE(7), -1, 1, 2);
    }
}

static void subject_free(subject *s)
{
    ad_tensor_free(s->a);
    ad_tensor_free(s->b);
    nn_optim_free(s->opt);
    nn_module_free(s->net);
}

/* Changes every saved value, so that version 2 differs from version 1 in every tensor. */
static void subject_bump(subject *s)
{
    if (s->checkpoint) {
        nn_param *p;
        int n = nn_module_params(s->net, &p);
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < p[i].value->size; j++)
                ad_tensor_set(p[i].value, j, ad_tensor_get(p[i].value, j) + 0.5);
        ad_rng_u64(&s->rng);
    } else {
        for (int64_t j = 0; j < s->a->size; j++) ad_tensor_set(s->a, j, ad_tensor_get(s->a, j) + 0.5);
        for (int64_t j = 0; j < s->b->size; j++) ad_tensor_set(s->b, j, ad_tensor_get(s->b, j) * 2);
    }
}

static ad_status subject_save(subject *s, const char *path, nn_error *err)
{
    if (s->checkpoint) return nn_save(path, s->net, s->opt, &s->rng, err);
    static const char *const names[2] = {"layer.weight", "layer.bias"};
    const ad_tensor *ts[2] = {s->a, s->b};
    static const char *const meta[2] = {"note", "io-fault test"};
    return nn_safetensors_save(path, 2, names, ts, 1, meta, err);
}

/* Loads path and checks it holds s's current values exactly. */
static void subject_verify(subject *s, const char *path)
{
    nn_error err = {0};
    if (s->checkpoint) {
        ad_rng r2 = s->rng;
        ad_rng_seed(&s->rng, 999);
        ck_assert_msg(nn_load(path, s->net, s->opt, &s->rng, &err) == AD_OK, "%s", err.message);
        ck_assert(memcmp(r2.s, s->rng.s, sizeof r2.s) == 0);
        return;
    }
    ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(40, 30)), *b = ad_tensor_new(AD_F64, AD_SHAPE(7));
    static const char *const names[2] = {"layer.weight", "layer.bias"};
    ck_assert_msg(nn_safetensors_load(path, 2, names, (ad_tensor *const[]){a, b}, &err) == AD_OK, "%s", err.message);
    ck_assert(memcmp(a->data, s->a->data, 40 * 30 * 4) == 0);
    ck_assert(memcmp(b->data, s->b->data, 7 * 8) == 0);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

/* ---- the sweep ---- */

typedef struct fault_case {
    int sc;
    fault_kind kind;
    int err;
} fault_case;

static const fault_case cases[] = {
    {SC_OPEN, FK_ERRNO, ENOSPC},  {SC_OPEN, FK_ERRNO, EACCES},  {SC_OPEN, FK_ERRNO, EMFILE},
    {SC_WRITE, FK_ERRNO, ENOSPC}, {SC_WRITE, FK_ERRNO, EIO},    {SC_WRITE, FK_ERRNO, EDQUOT},
    {SC_WRITE, FK_ERRNO, EINTR},  {SC_WRITE, FK_SHORT, 0},      {SC_WRITE, FK_ZERO, 0},
    {SC_FSYNC, FK_ERRNO, EIO},    {SC_FSYNC, FK_ERRNO, ENOSPC}, {SC_FSYNC, FK_ERRNO, EINVAL},
    {SC_CLOSE, FK_ERRNO, EIO},    {SC_CLOSE, FK_ERRNO, ENOSPC}, {SC_CLOSE, FK_ERRNO, EINTR},
    {SC_RENAME, FK_ERRNO, EIO},   {SC_RENAME, FK_ERRNO, ENOSPC}, {SC_RENAME, FK_ERRNO, EXDEV},
};

static const char *fault_str(const fault_case *c)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "%s %s", sc_name[c->sc],
             c->kind == FK_SHORT ? "short" : c->kind == FK_ZERO ? "returns 0" : strerror(c->err));
    return buf;
}

/* Faults that the save rides out (retries, or harmless by the platform's
** rules): it must succeed and write the new version. */
static bool transient(const fault_case *c, bool after_rename)
{
    if (c->sc == SC_WRITE) return c->kind == FK_SHORT || (c->kind == FK_ERRNO && c->err == EINTR);
    /* Linux closes the descriptor even on EINTR; the directory's close after its fsync loses nothing */
    if (c->sc == SC_CLOSE) return c->err == EINTR || after_rename;
    if (c->sc == SC_FSYNC) return c->err == EINVAL && after_rename; /* a directory that cannot be fsynced */
    return false;
}

static void sweep(bool checkpoint)
{
    char dir[256], path[300], other[256];
    nn_error err = {0};
    const char *tmpd = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/adiof-XXXXXX", tmpd && *tmpd ? tmpd : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);

    subject s;
    subject_init(&s, checkpoint);
    /* a clean save counts the calls of each kind */
    ck_assert_msg(subject_save(&s, path, &err) == AD_OK, "%s", err.message);
    arm(-1, 0, FK_ERRNO, 0);
    ck_assert_msg(subject_save(&s, path, &err) == AD_OK, "%s", err.message);
    disarm();
    long ncalls[SC_COUNT];
    memcpy(ncalls, inj.calls, sizeof ncalls);
    ck_assert_int_ge(ncalls[SC_OPEN], 2);   /* the temporary file, the directory */
    ck_assert_int_ge(ncalls[SC_WRITE], 2);
    ck_assert_int_ge(ncalls[SC_FSYNC], 2);  /* the file, the directory */
    ck_assert_int_ge(ncalls[SC_CLOSE], 2);
    ck_assert_int_eq(ncalls[SC_RENAME], 1);

    size_t old_n;
    unsigned char *old = tio_read(path, &old_n);
    long runs = 0, errors = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const fault_case *c = &cases[ci];
        for (long i = 0; i < ncalls[c->sc]; i++) {
            subject_bump(&s);
            int fds = count_fds();
            arm(c->sc, i, c->kind, c->err);
            ad_status st = subject_save(&s, path, &err);
            disarm();
            runs++;
            ck_assert_msg(inj.fired, "%s #%ld: never reached", fault_str(c), i);
            ck_assert_msg(count_fds() == fds, "%s #%ld: %d descriptors leaked", fault_str(c), i, count_fds() - fds);
            ck_assert_msg(count_others(dir, "model.safetensors", other, sizeof other) == 0,
                          "%s #%ld: left %s in the directory", fault_str(c), i, other);
            if (transient(c, inj.renamed)) {
                ck_assert_msg(st == AD_OK, "%s #%ld: %s", fault_str(c), i, err.message);
                ck_assert(inj.renamed);
                subject_verify(&s, path);
            } else {
                errors++;
                ck_assert_msg(st == AD_ERR_IO, "%s #%ld: status %s, %s", fault_str(c), i, ad_status_str(st), err.message);
                ck_assert_msg(strstr(err.message, sc_name[c->sc]) != NULL, "%s #%ld: message: %s", fault_str(c), i, err.message);
                ck_assert_msg(strstr(err.message, path) != NULL, "%s #%ld: message: %s", fault_str(c), i, err.message);
                if (inj.renamed) {
                    /* only the directory's fsync is left after the rename: the new file stands */
                    subject_verify(&s, path);
                } else {
                    size_t n;
                    unsigned char *now = tio_read(path, &n);
                    ck_assert_msg(n == old_n && memcmp(now, old, n) == 0, "%s #%ld: the old file changed",
                                  fault_str(c), i);
                    free(now);
                    continue;
                }
            }
            /* the save went through: it is the old file of the next case */
            free(old);
            old = tio_read(path, &old_n);
        }
    }
    if (getenv("AD_TEST_VERBOSE")) fprintf(stderr, "%s: %ld fault runs, %ld errors\n", checkpoint ? "nn_save" : "nn_safetensors_save", runs, errors);
    ck_assert_int_gt(errors, 20);
    free(old);
    subject_free(&s);
    unlink(path);
    ck_assert_int_eq(rmdir(dir), 0);
}

START_TEST(test_safetensors_save_faults)
{
    sweep(false);
}
END_TEST

START_TEST(test_checkpoint_save_faults)
{
    sweep(true);
}
END_TEST

/* A directory that cannot be written: open fails for real, nothing is left behind. */
START_TEST(test_missing_directory)
{
    subject s;
    subject_init(&s, false);
    nn_error err = {0};
    int fds = count_fds();
    ad_status st = subject_save(&s, "/nonexistent-dir-for-autodiff/x.safetensors", &err);
    ck_assert_int_eq(st, AD_ERR_IO);
    ck_assert_msg(strstr(err.message, "nonexistent-dir-for-autodiff") != NULL, "%s", err.message);
    ck_assert_int_eq(count_fds(), fds);
    subject_free(&s);
}
END_TEST

static Suite *io_faults_suite(void)
{
    Suite *s = suite_create("io_faults");
    TCase *tc = tcase_create("save");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_safetensors_save_faults);
    tcase_add_test(tc, test_checkpoint_save_faults);
    tcase_add_test(tc, test_missing_directory);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(io_faults_suite()); }

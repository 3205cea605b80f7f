/* test_safetensors.c: checkpoint files: round trips, a Python reader, atomic-save failures, malformed files. */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ad.h"
#include "nn_io.h"
#include "test_io_util.h"
#include "test_util.h"

/* The round-trip set, the values safetensors_check.py expects. */
static void make_set(ad_tensor *t[4])
{
    t[0] = ad_tensor_new(AD_F32, AD_SHAPE(3, 4));
    for (int i = 0; i < 12; i++) ad_tensor_set(t[0], i, i * 0.25 - 1);
    t[1] = ad_tensor_new(AD_F64, AD_SHAPE(4));
    for (int i = 0; i < 4; i++) ad_tensor_set(t[1], i, i / 3.0);
    t[2] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    ad_tensor_set(t[2], 0, 7.5);
    t[3] = ad_tensor_new(AD_F32, AD_SHAPE(0, 5));
}

static const char *const set_names[4] = {"w", "b", "s", "e"};
static const char *const set_meta[2] = {"note", "made by test_safetensors"};

static void free_set(ad_tensor *t[4])
{
    for (int i = 0; i < 4; i++) ad_tensor_free(t[i]);
}

START_TEST(test_roundtrip)
{
    char dir[256], path[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    ad_tensor *t[4], *u[4];
    make_set(t);
    ck_assert_msg(nn_safetensors_save(path, 4, set_names, (const ad_tensor *const *)t, 1, set_meta, &err) ==
                      AD_OK,
                  "%s", err.message);
    /* layout: length prefix, padded JSON, the data back to back */
    size_t n;
    unsigned char *raw = tio_read(path, &n);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)raw[i] << (8 * i);
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_int_eq(raw[8], '{');
    ck_assert_uint_eq(n, 8 + hlen + 48 + 32 + 8);
    ck_assert_int_eq(memcmp(raw + 8 + hlen, t[0]->data, 48), 0);
    free(raw);

    for (int i = 0; i < 4; i++) {
        u[i] = ad_tensor_new(t[i]->dtype, t[i]->ndim, t[i]->shape);
        ad_tensor_fill(u[i], 99);
    }
    ck_assert_msg(nn_safetensors_load(path, 4, set_names, u, &err) == AD_OK, "%s", err.message);
    for (int i = 0; i < 4; i++)
        if (t[i]->size)
            ck_assert_int_eq(memcmp(t[i]->data, u[i]->data, (size_t)t[i]->size * ad_dtype_size(t[i]->dtype)), 0);
    /* requested in another order */
    const char *rev[4] = {"e", "s", "b", "w"};
    ad_tensor *urev[4] = {u[3], u[2], u[1], u[0]};
    ck_assert_msg(nn_safetensors_load(path, 4, rev, urev, &err) == AD_OK, "%s", err.message);

    /* no tensors at all is a valid file too */
    ck_assert_int_eq(nn_safetensors_save(path, 0, NULL, NULL, 0, NULL, &err), AD_OK);
    ck_assert_msg(nn_safetensors_load(path, 0, NULL, NULL, &err) == AD_OK, "%s", err.message);

    /* no temporary file is left behind */
    snprintf(path, sizeof path, "%s/ck.safetensors.tmp.%ld", dir, (long)getpid());
    ck_assert(!tio_exists(path));
    free_set(t);
    free_set(u);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_python_reader)
{
    if (!tio_have_numpy()) {
        fprintf(stderr, "test_python_reader: skipped, /usr/bin/python3 with numpy not available\n");
        return;
    }
    char dir[256], path[512], args[600];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    ad_tensor *t[4];
    make_set(t);
    ck_assert_msg(nn_safetensors_save(path, 4, set_names, (const ad_tensor *const *)t, 1, set_meta, &err) ==
                      AD_OK,
                  "%s", err.message);
    snprintf(args, sizeof args, "'%s'", path);
    ck_assert_int_eq(tio_python("safetensors_check.py", args), 0);
    free_set(t);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_save_args)
{
    nn_error err = {0};
    ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(2)), *b = ad_tensor_new(AD_F64, AD_SHAPE(2));
    const ad_tensor *ts[2] = {a, b};
    const char *dup[2] = {"x", "x"}, *resv[2] = {"x", "__metadata__"}, *tab[2] = {"x", "__table__"},
               *empty[2] = {"x", ""}, *badutf[2] = {"x", "\xff\xfe"}, *ok[2] = {"x", "y"};
    const char *path = "/tmp/never-written.safetensors";
    ad_status st = nn_safetensors_save(path, 2, dup, ts, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "duplicate tensor name 'x'");
    st = nn_safetensors_save(path, 2, resv, ts, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "reserved name");
    st = nn_safetensors_save(path, 2, tab, ts, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "reserved name");
    st = nn_safetensors_save(path, 2, empty, ts, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "empty");
    st = nn_safetensors_save(path, 2, badutf, ts, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "UTF-8");
    const char *m1[2] = {"format", "x"}, *m2[2] = {"xxh3:x", "0"}, *m3[4] = {"k", "1", "k", "2"};
    st = nn_safetensors_save(path, 2, ok, ts, 1, m1, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "'format' is reserved");
    st = nn_safetensors_save(path, 2, ok, ts, 1, m2, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "reserved");
    st = nn_safetensors_save(path, 2, ok, ts, 2, m3, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "duplicate metadata key 'k'");
    const ad_tensor *withnull[2] = {a, NULL};
    st = nn_safetensors_save(path, 2, ok, withnull, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "'y'");
    ck_assert_int_eq(nn_safetensors_save(NULL, 2, ok, ts, 0, NULL, &err), AD_ERR_ARG);
    ck_assert_int_eq(nn_safetensors_save(path, -1, ok, ts, 0, NULL, &err), AD_ERR_ARG);
    ck_assert(!tio_exists(path));

    /* load-side argument errors */
    ad_tensor *dst[2] = {a, b};
    st = nn_safetensors_load(path, 2, dup, dst, &err);
    TIO_ASSERT_ERR(st, AD_ERR_ARG, err.message, path, "requested twice");
    ad_tensor *dnull[2] = {a, NULL};
    ck_assert_int_eq(nn_safetensors_load(path, 2, ok, dnull, &err), AD_ERR_ARG);
    ad_tensor_free(a);
    ad_tensor_free(b);
}
END_TEST

/* Saves {"x": [1, 2]} to path; asserts success. */
static void save_x(const char *path, double v0)
{
    nn_error err = {0};
    ad_tensor *x = tu_f64(AD_SHAPE(2), (double[]){v0, 2});
    const char *nm[1] = {"x"};
    ck_assert_msg(nn_safetensors_save(path, 1, nm, (const ad_tensor *const *)&x, 0, NULL, &err) == AD_OK,
                  "%s", err.message);
    ad_tensor_free(x);
}

/* Loads "x" from path and returns its first value. */
static double load_x0(const char *path)
{
    nn_error err = {0};
    ad_tensor *x = tu_f64(AD_SHAPE(2), NULL);
    const char *nm[1] = {"x"};
    ck_assert_msg(nn_safetensors_load(path, 1, nm, &x, &err) == AD_OK, "%s", err.message);
    double v = ad_tensor_get(x, 0);
    ad_tensor_free(x);
    return v;
}

START_TEST(test_save_failures)
{
    char dir[256], path[512], tmp[600];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);

    /* a directory that does not exist: open fails, nothing created */
    snprintf(path, sizeof path, "%s/no/such/dir/ck.safetensors", dir);
    ad_tensor *x = tu_f64(AD_SHAPE(2), (double[]){1, 2});
    const char *nm[1] = {"x"};
    ad_status st = nn_safetensors_save(path, 1, nm, (const ad_tensor *const *)&x, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, path, "open(");
    ck_assert_ptr_nonnull(strstr(err.message, "No such file or directory"));

    /* the target is a directory: refused before anything is created */
    snprintf(path, sizeof path, "%s/adir", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    st = nn_safetensors_save(path, 1, nm, (const ad_tensor *const *)&x, 0, NULL, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, path, "is a directory");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert(!tio_exists(tmp));

    /* a write that fails half-way (file size limit): the old file stays intact */
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    save_x(path, 1.0);
    size_t oldn;
    unsigned char *old = tio_read(path, &oldn);
    ad_tensor *big = ad_tensor_new(AD_F64, AD_SHAPE(4096));
    const char *bn[1] = {"x"};
    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = saved;
    lim.rlim_cur = 4096;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    st = nn_safetensors_save(path, 1, bn, (const ad_tensor *const *)&big, 0, NULL, &err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, path, "write(");
    ck_assert_ptr_nonnull(strstr(err.message, "File too large"));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert(!tio_exists(tmp));
    size_t nown;
    unsigned char *now = tio_read(path, &nown);
    ck_assert_uint_eq(nown, oldn);
    ck_assert_int_eq(memcmp(now, old, oldn), 0);
    ck_assert(load_x0(path) == 1.0);

    /* and a successful save replaces it */
    save_x(path, 3.0);
    ck_assert(load_x0(path) == 3.0);
    free(old);
    free(now);
    ad_tensor_free(big);
    ad_tensor_free(x);
    tio_rmtree(dir);
}
END_TEST

/* ---- malformed files: each made from a valid one ---- */

/* The valid file: "a" F32 [2,3] at [0,24], "b" F64 [2] at [24,40]. */
static void valid_parts(const char *dir, char **header, unsigned char data[40])
{
    char path[512];
    nn_error err = {0};
    snprintf(path, sizeof path, "%s/valid.safetensors", dir);
    ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(2, 3)), *b = ad_tensor_new(AD_F64, AD_SHAPE(2));
    for (int i = 0; i < 6; i++) ad_tensor_set(a, i, i + 0.5);
    ad_tensor_set(b, 0, -1);
    ad_tensor_set(b, 1, 1e300);
    const ad_tensor *ts[2] = {a, b};
    const char *nm[2] = {"a", "b"};
    ck_assert_msg(nn_safetensors_save(path, 2, nm, ts, 0, NULL, &err) == AD_OK, "%s", err.message);
    size_t n;
    unsigned char *raw = tio_read(path, &n);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)raw[i] << (8 * i);
    ck_assert_uint_eq(n, 8 + hlen + 40);
    size_t l = (size_t)hlen;
    while (l > 0 && raw[8 + l - 1] == ' ') l--;
    *header = malloc(l + 1);
    memcpy(*header, raw + 8, l);
    (*header)[l] = '\0';
    memcpy(data, raw + 8 + hlen, 40);
    free(raw);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

/* The table checksum recomputed from the header as nn_io.h and safetensors.c document it. */
typedef struct tent {
    const char *name;
    const char *dtype;
    json_t *shape;
    json_int_t b, e;
} tent;

static int tent_cmp(const void *x, const void *y)
{
    const tent *a = x, *c = y;
    if (a->b != c->b) return a->b < c->b ? -1 : 1;
    if (a->e != c->e) return a->e < c->e ? -1 : 1;
    return strcmp(a->name, c->name);
}

static void table_hex(json_t *root, char out[17])
{
    tent ts[16];
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "__metadata__") == 0 || !json_is_object(v)) continue;
        json_t *of = json_object_get(v, "data_offsets");
        ts[n].name = k;
        ts[n].dtype = json_string_value(json_object_get(v, "dtype"));
        ts[n].shape = json_object_get(v, "shape");
        ts[n].b = json_integer_value(json_array_get(of, 0));
        ts[n].e = json_integer_value(json_array_get(of, 1));
        if (!ts[n].dtype) ts[n].dtype = "";
        n++;
    }
    qsort(ts, (size_t)n, sizeof ts[0], tent_cmp);
    char buf[4096];
    size_t p = 0;
    for (int i = 0; i < n; i++) {
        p += (size_t)snprintf(buf + p, sizeof buf - p, "%s", ts[i].name) + 1;
        p += (size_t)snprintf(buf + p, sizeof buf - p, "%s", ts[i].dtype) + 1;
        for (size_t d = 0; d < json_array_size(ts[i].shape); d++)
            p += (size_t)snprintf(buf + p, sizeof buf - p, d ? ",%" JSON_INTEGER_FORMAT : "%" JSON_INTEGER_FORMAT,
                                  json_integer_value(json_array_get(ts[i].shape, d)));
        p += 1; /* the '\0' snprintf left, or an empty shape's */
        buf[p - 1] = '\0';
        p += (size_t)snprintf(buf + p, sizeof buf - p, "%" JSON_INTEGER_FORMAT, ts[i].b) + 1;
        p += (size_t)snprintf(buf + p, sizeof buf - p, "%" JSON_INTEGER_FORMAT "\n", ts[i].e);
    }
    XXH64_canonical_t c;
    XXH64_canonicalFromHash(&c, XXH3_64bits(buf, p));
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
}

/* Writes length prefix + header (padded with spaces to 8) + data. len_override >= 0 replaces the length. */
static void write_st(const char *path, const char *header, const unsigned char *data, size_t dlen, int64_t len_override)
{
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned char *buf = malloc(8 + padded + dlen);
    uint64_t L = len_override >= 0 ? (uint64_t)len_override : padded;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(L >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    memcpy(buf + 8 + padded, data, dlen);
    tio_write(path, buf, 8 + padded + dlen);
    free(buf);
}

/* Replaces the first `from` in s with `to` (a new string); fails the test if absent. */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    ck_assert_msg(at != NULL, "'%s' not in the header %s", from, s);
    size_t a = (size_t)(at - s), fl = strlen(from), tl = strlen(to);
    char *r = malloc(strlen(s) - fl + tl + 1);
    memcpy(r, s, a);
    memcpy(r + a, to, tl);
    strcpy(r + a + tl, at + fl);
    return r;
}

enum { FIX_TABLE = 1, FLIP_BYTE = 2, TRUNCATE = 4, APPEND = 8 };

typedef struct bad_st {
    const char *name;
    const char *from, *to; /* header edit (NULL: none); to may be a whole header when from is "" */
    unsigned flags;
    int64_t len; /* length prefix override, -1 none */
    int req;     /* which request: 0 a,b; 1 a,b,c; 2 a; 3 a as [3,2]; 4 b as F32 */
    ad_status want;
    const char *what;
} bad_st;

#define A_ENT "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B_ENT "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[24,40]}"

static const bad_st bad_cases[] = {
    {"header length over the cap", NULL, NULL, 0, 200000000, 0, AD_ERR_FORMAT, "over the limit"},
    {"header length past EOF", NULL, NULL, 0, 100000, 0, AD_ERR_FORMAT, "runs past the end of the file"},
    {"invalid JSON", "\"a\":{", "\"a\"::{", 0, -1, 0, AD_ERR_FORMAT, "invalid JSON header"},
    {"not valid UTF-8", "\"a\":{", "\"\xff\":{", 0, -1, 0, AD_ERR_FORMAT, "invalid JSON header"},
    {"JSON not an object", "", "[1, 2, 3]", 0, -1, 0, AD_ERR_FORMAT, "not a JSON object"},
    {"entry not an object", B_ENT, "\"b\":[24,40]", 0, -1, 0, AD_ERR_FORMAT, "tensor 'b': entry is not an object"},
    {"unknown dtype", "\"F32\"", "\"F33\"", 0, -1, 0, AD_ERR_FORMAT, "unknown dtype 'F33'"},
    {"unsupported dtype", "\"F32\"", "\"BF16\"", 0, -1, 0, AD_ERR_UNSUPPORTED, "dtype BF16 is not supported"},
    {"dtype not a string", "\"F32\"", "32", 0, -1, 0, AD_ERR_FORMAT, "dtype is not a string"},
    {"missing dtype", "\"dtype\":\"F32\",", "", 0, -1, 0, AD_ERR_FORMAT, "missing \"dtype\""},
    {"missing shape", "\"shape\":[2,3],", "", 0, -1, 0, AD_ERR_FORMAT, "missing \"shape\""},
    {"missing offsets", ",\"data_offsets\":[0,24]", "", 0, -1, 0, AD_ERR_FORMAT, "missing \"data_offsets\""},
    {"unexpected entry key", "\"shape\":[2,3],", "\"shape\":[2,3],\"x\":1,", 0, -1, 0, AD_ERR_FORMAT,
     "unexpected key 'x'"},
    {"negative dimension", "[2,3]", "[-2,3]", 0, -1, 0, AD_ERR_FORMAT, "negative dimension -2"},
    {"fractional dimension", "[2,3]", "[2.5,3]", 0, -1, 0, AD_ERR_FORMAT, "non-integer"},
    {"shape product overflow", "[2,3]", "[4294967296,4294967296,2,3]", 0, -1, 0, AD_ERR_FORMAT, "overflows"},
    {"nine dimensions", "[2,3]", "[1,1,1,1,1,1,1,2,3]", 0, -1, 0, AD_ERR_UNSUPPORTED, "more than 8 dimensions"},
    {"shape x size != range", "[2,3]", "[2,2]", 0, -1, 0, AD_ERR_FORMAT, "needs 16 bytes, data_offsets span 24"},
    {"offsets not a pair", "[24,40]", "[24,40,56]", 0, -1, 0, AD_ERR_FORMAT, "not [begin, end]"},
    {"negative offset", "[0,24]", "[-24,0]", 0, -1, 0, AD_ERR_FORMAT, "negative data_offsets"},
    {"begin > end", "[24,40]", "[40,24]", 0, -1, 0, AD_ERR_FORMAT, "begin 40 > end 24"},
    {"offsets past the end", "[24,40]", "[32,48]", 0, -1, 0, AD_ERR_FORMAT, "past the end of the data"},
    {"overlapping ranges", B_ENT, "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[16,32]}", 0, -1, 0,
     AD_ERR_FORMAT, "overlaps"},
    {"gap between ranges", B_ENT, "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[32,40]}", 0, -1, 0,
     AD_ERR_FORMAT, "gap of 8 bytes before tensor 'b'"},
    {"trailing bytes", NULL, NULL, APPEND, -1, 0, AD_ERR_FORMAT, "8 trailing bytes"},
    {"truncated file", NULL, NULL, TRUNCATE, -1, 0, AD_ERR_FORMAT, "past the end of the data"},
    {"duplicate names", B_ENT, B_ENT "," B_ENT, 0, -1, 0, AD_ERR_FORMAT, "duplicate"},
    {"missing metadata", "\"__metadata__\"", "\"__nometa__\"", 0, -1, 0, AD_ERR_FORMAT, "'__nometa__'"},
    {"no metadata at all", "", "{" A_ENT "," B_ENT "}", 0, -1, 0, AD_ERR_FORMAT, "no __metadata__"},
    {"metadata not an object", "", "{\"__metadata__\":[]," A_ENT "," B_ENT "}", 0, -1, 0, AD_ERR_FORMAT,
     "__metadata__ is not an object"},
    {"metadata value not a string", "\"version\":\"1\"", "\"version\":1", 0, -1, 0, AD_ERR_FORMAT,
     "value for 'version' is not a string"},
    {"wrong format", "autodiff-checkpoint", "other-format", 0, -1, 0, AD_ERR_FORMAT, "format is 'other-format'"},
    {"missing format", "\"format\":\"autodiff-checkpoint\",", "", 0, -1, 0, AD_ERR_FORMAT, "format is missing"},
    {"wrong version", "\"version\":\"1\"", "\"version\":\"2\"", 0, -1, 0, AD_ERR_UNSUPPORTED,
     "version '2' is not supported"},
    {"missing checksum", "\"xxh3:b\"", "\"other:b\"", 0, -1, 0, AD_ERR_FORMAT, "no checksum for tensor 'b'"},
    {"checksum of an unknown tensor", "\"xxh3:b\"", "\"xxh3:zz\"", 0, -1, 0, AD_ERR_FORMAT,
     "checksum for a tensor 'zz' not in the file"},
    {"missing table checksum", "\"xxh3:__table__\"", "\"xxh3-table\"", 0, -1, 0, AD_ERR_FORMAT, "no table checksum"},
    {"checksum mismatch (one data byte)", NULL, NULL, FLIP_BYTE, -1, 0, AD_ERR_FORMAT,
     "checksum mismatch for tensor 'a'"},
    {"table checksum mismatch", "[2,3]", "[3,2]", 0, -1, 0, AD_ERR_FORMAT, "table checksum mismatch"},
    {"missing tensor", NULL, NULL, 0, -1, 1, AD_ERR_FORMAT, "no tensor 'c' in the file"},
    {"unexpected tensor", NULL, NULL, 0, -1, 2, AD_ERR_FORMAT, "unexpected tensor 'b'"},
    {"wrong shape", NULL, NULL, 0, -1, 3, AD_ERR_SHAPE, "tensor 'a' has shape [2,3] in the file, [3,2] expected"},
    {"wrong dtype", NULL, NULL, 0, -1, 4, AD_ERR_DTYPE, "tensor 'b' is F64 in the file, F32 expected"},
    {"shape mismatch (table fixed)", "[2,3]", "[3,2]", FIX_TABLE, -1, 0, AD_ERR_SHAPE, "[3,2] in the file"},
    {"renamed tensor (table fixed)", "\"b\":{", "\"c\":{", FIX_TABLE, -1, 0, AD_ERR_FORMAT,
     "checksum for a tensor 'b' not in the file"},
};

START_TEST(test_malformed)
{
    const bad_st *c = &bad_cases[_i];
    char dir[256], path[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    char *hdr;
    unsigned char data[48];
    valid_parts(dir, &hdr, data);
    /* the test's own table checksum agrees with the file's */
    json_t *root = json_loads(hdr, 0, NULL);
    ck_assert_ptr_nonnull(root);
    char th[17];
    table_hex(root, th);
    ck_assert_str_eq(th, json_string_value(json_object_get(json_object_get(root, "__metadata__"), "xxh3:__table__")));
    json_decref(root);

    char *h = c->from ? (c->from[0] ? replace(hdr, c->from, c->to) : strdup(c->to)) : strdup(hdr);
    if (c->flags & FIX_TABLE) {
        json_error_t je;
        json_t *r = json_loads(h, 0, &je);
        ck_assert_msg(r != NULL, "%s", je.text);
        table_hex(r, th);
        json_object_set_new(json_object_get(r, "__metadata__"), "xxh3:__table__", json_string(th));
        free(h);
        h = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(r);
    }
    size_t dlen = 40;
    if (c->flags & FLIP_BYTE) data[5] ^= 0x10;
    if (c->flags & TRUNCATE) dlen = 36;
    if (c->flags & APPEND) {
        memset(data + 40, 0, 8);
        dlen = 48;
    }
    write_st(path, h, data, dlen, c->len);
    free(h);
    free(hdr);

    ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(2, 3)), *b = ad_tensor_new(AD_F64, AD_SHAPE(2)),
              *cc = ad_tensor_new(AD_F32, AD_SHAPE(1)), *a32 = ad_tensor_new(AD_F32, AD_SHAPE(3, 2)),
              *b32 = ad_tensor_new(AD_F32, AD_SHAPE(2));
    ad_tensor *all[] = {a, b, cc, a32, b32};
    for (int i = 0; i < 5; i++) ad_tensor_fill(all[i], -42);
    static const char *const r0[] = {"a", "b"}, *const r1[] = {"a", "b", "c"}, *const r2[] = {"a"};
    ad_status st;
    switch (c->req) {
    case 0:
        st = nn_safetensors_load(path, 2, r0, (ad_tensor *[]){a, b}, &err);
        break;
    case 1:
        st = nn_safetensors_load(path, 3, r1, (ad_tensor *[]){a, b, cc}, &err);
        break;
    case 2:
        st = nn_safetensors_load(path, 1, r2, (ad_tensor *[]){a}, &err);
        break;
    case 3:
        st = nn_safetensors_load(path, 2, r0, (ad_tensor *[]){a32, b}, &err);
        break;
    default:
        st = nn_safetensors_load(path, 2, r0, (ad_tensor *[]){a, b32}, &err);
        break;
    }
    ck_assert_msg(strncmp(err.message, "nn_safetensors_load: ", 21) == 0, "%s", err.message);
    TIO_ASSERT_ERR(st, c->want, err.message, path, c->what);
    /* nothing was written into the destinations */
    for (int i = 0; i < 5; i++)
        for (int64_t k = 0; k < all[i]->size; k++) ck_assert(ad_tensor_get(all[i], k) == -42);
    for (int i = 0; i < 5; i++) ad_tensor_free(all[i]);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_short_files)
{
    char dir[256], path[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    ad_tensor *a = ad_tensor_new(AD_F32, AD_SHAPE(2, 3));
    const char *nm[1] = {"a"};
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    tio_write(path, "", 0);
    ad_status st = nn_safetensors_load(path, 1, nm, &a, &err);
    TIO_ASSERT_ERR(st, AD_ERR_FORMAT, err.message, path, "file too short (0 bytes)");
    tio_write(path, "\x10\0\0\0\0", 5);
    st = nn_safetensors_load(path, 1, nm, &a, &err);
    TIO_ASSERT_ERR(st, AD_ERR_FORMAT, err.message, path, "file too short (5 bytes)");
    tio_write(path, "\x00\0\0\0\0\0\0\0", 8);
    st = nn_safetensors_load(path, 1, nm, &a, &err);
    TIO_ASSERT_ERR(st, AD_ERR_FORMAT, err.message, path, "invalid JSON header");
    snprintf(path, sizeof path, "%s/none.safetensors", dir);
    st = nn_safetensors_load(path, 1, nm, &a, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, path, "cannot open: No such file");
    st = nn_safetensors_load(dir, 1, nm, &a, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, dir, "not a regular file");
    ad_tensor_free(a);
    tio_rmtree(dir);
}
END_TEST

/* Every allocation failing in turn: AD_ERR_NOMEM, no dst written, no temporary file left, nothing leaked. */
START_TEST(test_out_of_memory)
{
    char dir[256], path[512], tmp[600];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ad_tensor *t[4], *u[4];
    make_set(t);
    for (int i = 0; i < 4; i++) u[i] = ad_tensor_new(t[i]->dtype, t[i]->ndim, t[i]->shape);
    long k;
    for (k = 1; k < 200; k++) {
        tio_failalloc f = {0, k};
        ad_set_allocator(tio_alloc, &f);
        ad_status st =
            nn_safetensors_save(path, 4, set_names, (const ad_tensor *const *)t, 1, set_meta, &err);
        ad_set_allocator(NULL, NULL);
        ck_assert(!tio_exists(tmp));
        if (st == AD_OK) break;
        ck_assert_msg(st == AD_ERR_NOMEM, "allocation %ld: %s", k, err.message);
        ck_assert(!tio_exists(path));
    }
    ck_assert_int_gt(k, 3);
    for (k = 1; k < 200; k++) {
        for (int i = 0; i < 4; i++) ad_tensor_fill(u[i], -42);
        tio_failalloc f = {0, k};
        ad_set_allocator(tio_alloc, &f);
        ad_status st = nn_safetensors_load(path, 4, set_names, u, &err);
        ad_set_allocator(NULL, NULL);
        if (st == AD_OK) break;
        ck_assert_msg(st == AD_ERR_NOMEM, "allocation %ld: %s", k, err.message);
        TIO_ASSERT_ERR(st, AD_ERR_NOMEM, err.message, path, "out of memory");
        for (int i = 0; i < 4; i++)
            for (int64_t j = 0; j < u[i]->size; j++) ck_assert(ad_tensor_get(u[i], j) == -42);
    }
    ck_assert_int_gt(k, 3);
    ck_assert_int_lt(k, 200);
    ck_assert(ad_tensor_get(u[0], 1) == ad_tensor_get(t[0], 1));
    free_set(t);
    free_set(u);
    tio_rmtree(dir);
}
END_TEST

static Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_python_reader);
    tcase_add_test(tc, test_save_args);
    tcase_add_test(tc, test_save_failures);
    tcase_add_test(tc, test_out_of_memory);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_loop_test(tc, test_malformed, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_short_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(safetensors_suite()); }

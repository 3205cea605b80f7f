/* test_npy.c: .npy save/load round trips, files written by NumPy, and a table of malformed files. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "test_io_util.h"
#include "test_util.h"

/* Saves t, loads it back, asserts dtype, shape and bits are equal. */
static void roundtrip(const char *dir, const ad_tensor *t)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/rt.npy", dir);
    ck_assert_msg(ad_npy_save(path, t, err, sizeof err) == AD_OK, "%s", err);
    size_t n;
    unsigned char *raw = tio_read(path, &n);
    ck_assert_int_eq(memcmp(raw, "\x93NUMPY\x01\x00", 8), 0);
    size_t hlen = raw[8] | (size_t)raw[9] << 8;
    ck_assert_uint_eq((10 + hlen) % 64, 0);
    ck_assert_int_eq(raw[10 + hlen - 1], '\n');
    ck_assert_uint_eq(n, 10 + hlen + (size_t)t->size * ad_dtype_size(t->dtype));
    free(raw);

    ad_tensor *u = NULL;
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    ck_assert_int_eq(u->dtype, t->dtype);
    ck_assert(ad_shape_equal(u, t));
    ck_assert_int_eq(u->size, t->size);
    if (t->size) ck_assert_int_eq(memcmp(u->data, t->data, (size_t)t->size * ad_dtype_size(t->dtype)), 0);
    ad_tensor_free(u);
}

START_TEST(test_roundtrip)
{
    char dir[256];
    tio_mkdtemp(dir, sizeof dir);
    static const int64_t shapes[][3] = {{0, 0, 0}, {5, 0, 0}, {3, 4, 0}, {2, 3, 4}, {0, 0, 0}, {2, 0, 3}};
    static const int ndims[] = {0, 1, 2, 3, 1, 3};
    for (int dt = 0; dt < 2; dt++)
        for (int k = 0; k < 6; k++) {
            ad_tensor *t = tu_rand(dt ? AD_F64 : AD_F32, ndims[k], shapes[k], -3, 3, 100 + (uint64_t)k);
            if (t->size) ad_tensor_set(t, 0, -0.0);
            roundtrip(dir, t);
            ad_tensor_free(t);
        }
    /* special values survive bit for bit */
    ad_tensor *s = tu_f64(AD_SHAPE(4), (double[]){NAN, INFINITY, -INFINITY, 5e-324});
    roundtrip(dir, s);
    ad_tensor_free(s);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_save_errors)
{
    char err[512];
    ad_tensor *t = tu_f64(AD_SHAPE(2), (double[]){1, 2});
    ck_assert_int_eq(ad_npy_save(NULL, t, err, sizeof err), AD_ERR_ARG);
    ck_assert_int_eq(ad_npy_save("/x.npy", NULL, err, sizeof err), AD_ERR_ARG);
    ad_status st = ad_npy_save("/nonexistent-dir-adio/x.npy", t, err, sizeof err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err, "/nonexistent-dir-adio/x.npy", "No such file");
    ad_tensor *u = (ad_tensor *)&err; /* never written */
    ck_assert_int_eq(ad_npy_load(NULL, &u, err, sizeof err), AD_ERR_ARG);
    ck_assert_ptr_null(u);
    ck_assert_int_eq(ad_npy_load("/x.npy", NULL, NULL, 0), AD_ERR_ARG);
    ad_tensor_free(t);
}
END_TEST

/* Files NumPy wrote: big-endian, integer and bool dtypes, version 2.0, a scalar. */
START_TEST(test_numpy_files)
{
    if (!tio_have_numpy()) {
        fprintf(stderr, "test_numpy_files: skipped, /usr/bin/python3 with numpy not available\n");
        return;
    }
    char dir[256], path[512], err[512], args[600];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(args, sizeof args, "make '%s'", dir);
    ck_assert_int_eq(tio_python("npy_tool.py", args), 0);
    ad_tensor *u;

    snprintf(path, sizeof path, "%s/be_f8.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    ck_assert_int_eq(u->dtype, AD_F64);
    tu_assert_shape(u, AD_SHAPE(2, 3));
    tu_assert_values(u, (double[]){-1, -0.5, 0, 0.5, 1, 1.5}, 0, 0);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/be_f4.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    ck_assert_int_eq(u->dtype, AD_F32);
    tu_assert_shape(u, AD_SHAPE(4));
    for (int i = 0; i < 4; i++) ck_assert(((float *)u->data)[i] == (float)(i * 0.25 + 1e-3));
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/le_f4_3d.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    tu_assert_shape(u, AD_SHAPE(2, 3, 4));
    for (int i = 0; i < 24; i++) ck_assert(((float *)u->data)[i] == (float)(i / 3.0));
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/le_i2.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    ck_assert_int_eq(u->dtype, AD_F64);
    tu_assert_values(u, (double[]){-3, 0, 7, 32767}, 0, 0);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/be_u4.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    tu_assert_values(u, (double[]){1, 4000000000.0}, 0, 0);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/bool.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    tu_assert_values(u, (double[]){1, 0, 1}, 0, 0);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/scalar.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    ck_assert_int_eq(u->ndim, 0);
    ck_assert(ad_tensor_get(u, 0) == 2.5);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/v2_f8.npy", dir);
    ck_assert_msg(ad_npy_load(path, &u, err, sizeof err) == AD_OK, "%s", err);
    tu_assert_shape(u, AD_SHAPE(1, 2));
    tu_assert_values(u, (double[]){1.5, -2.0}, 0, 0);
    ad_tensor_free(u);

    snprintf(path, sizeof path, "%s/fortran.npy", dir);
    u = NULL;
    ad_status st = ad_npy_load(path, &u, err, sizeof err);
    TIO_ASSERT_ERR(st, AD_ERR_UNSUPPORTED, err, path, "fortran_order");
    ck_assert_ptr_null(u);

    /* and NumPy reads what we write */
    ad_tensor *t = ad_tensor_new(AD_F32, AD_SHAPE(3, 4));
    for (int i = 0; i < 12; i++) ad_tensor_set(t, i, i / 8.0);
    snprintf(path, sizeof path, "%s/ours.npy", dir);
    ck_assert_msg(ad_npy_save(path, t, err, sizeof err) == AD_OK, "%s", err);
    snprintf(args, sizeof args, "check '%s'", path);
    ck_assert_int_eq(tio_python("npy_tool.py", args), 0);
    ad_tensor_free(t);
    tio_rmtree(dir);
}
END_TEST

/* ---- malformed files, each built from a valid layout ---- */

typedef struct bad_npy {
    const char *name;
    const char *pre;  /* magic + version bytes (8), or NULL for the normal v1 */
    int lenbytes;     /* 2 or 4; 0: the length field is given in `len` verbatim */
    uint32_t len;     /* header length when lenbytes is 0 */
    const char *dict; /* header text before padding; NULL: the raw bytes of `raw` are the whole file */
    int data;         /* data bytes to append */
    int pad_newline;  /* pad with spaces and end with '\n' */
    ad_status want;
    const char *what; /* substring of the message */
} bad_npy;

#define V1 "\x93NUMPY\x01\x00"
#define GOOD_F8(shape) "{'descr': '<f8', 'fortran_order': False, 'shape': " shape ", }"

static const bad_npy bad_cases[] = {
    {"bad magic", "\x93NUMPX\x01\x00", 2, 0, GOOD_F8("(2,)"), 16, 1, AD_ERR_FORMAT, "bad magic"},
    {"version 4", "\x93NUMPY\x04\x00", 4, 0, GOOD_F8("(2,)"), 16, 1, AD_ERR_UNSUPPORTED, "version 4.0"},
    {"version 1.1", "\x93NUMPY\x01\x01", 2, 0, GOOD_F8("(2,)"), 16, 1, AD_ERR_UNSUPPORTED, "version 1.1"},
    {"header past EOF", V1, 0, 60000, GOOD_F8("(2,)"), 16, 1, AD_ERR_FORMAT, "past the end"},
    {"header over cap", "\x93NUMPY\x02\x00", 0, 0x7fffffff, GOOD_F8("(2,)"), 16, 1, AD_ERR_FORMAT, "over the limit"},
    {"not a dict", V1, 2, 0, "[1, 2, 3]", 0, 1, AD_ERR_FORMAT, "not a dict"},
    {"missing shape", V1, 2, 0, "{'descr': '<f8', 'fortran_order': False, }", 8, 1, AD_ERR_FORMAT, "'shape'"},
    {"missing descr", V1, 2, 0, "{'fortran_order': False, 'shape': (1,), }", 8, 1, AD_ERR_FORMAT, "'descr'"},
    {"extra key", V1, 2, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", 8, 1, AD_ERR_FORMAT,
     "unexpected key 'x'"},
    {"duplicate key", V1, 2, 0, "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", 8, 1,
     AD_ERR_FORMAT, "duplicate"},
    {"fortran order", V1, 2, 0, "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }", 16, 1, AD_ERR_UNSUPPORTED,
     "fortran_order True"},
    {"fortran not bool", V1, 2, 0, "{'descr': '<f8', 'fortran_order': 0, 'shape': (2,), }", 16, 1, AD_ERR_FORMAT,
     "fortran_order"},
    {"complex descr", V1, 2, 0, "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 32, 1, AD_ERR_UNSUPPORTED,
     "'<c16'"},
    {"garbage descr", V1, 2, 0, "{'descr': 'zz', 'fortran_order': False, 'shape': (2,), }", 16, 1, AD_ERR_UNSUPPORTED,
     "'zz'"},
    {"negative shape", V1, 2, 0, GOOD_F8("(-2,)"), 16, 1, AD_ERR_FORMAT, "negative dimension"},
    {"huge dimension", V1, 2, 0, GOOD_F8("(99999999999999999999,)"), 16, 1, AD_ERR_FORMAT, "overflows"},
    {"overflowing product", V1, 2, 0, GOOD_F8("(4294967296, 4294967296)"), 16, 1, AD_ERR_FORMAT, "overflows"},
    {"shape not ints", V1, 2, 0, GOOD_F8("(2.5,)"), 16, 1, AD_ERR_FORMAT, "malformed 'shape'"},
    {"1-tuple without comma", V1, 2, 0, GOOD_F8("(2)"), 16, 1, AD_ERR_FORMAT, "not a tuple"},
    {"nine dimensions", V1, 2, 0, GOOD_F8("(1,1,1,1,1,1,1,1,1)"), 8, 1, AD_ERR_UNSUPPORTED, "dimensions"},
    {"truncated data", V1, 2, 0, GOOD_F8("(2,)"), 12, 1, AD_ERR_FORMAT, "truncated"},
    {"trailing junk", V1, 2, 0, GOOD_F8("(2,)"), 20, 1, AD_ERR_FORMAT, "trailing bytes"},
    {"no newline", V1, 2, 0, GOOD_F8("(2,)"), 16, 0, AD_ERR_FORMAT, "newline"},
    {"junk after dict", V1, 2, 0, GOOD_F8("(2,)") " x", 16, 1, AD_ERR_FORMAT, "junk after"},
    {"short preamble", NULL, 0, 0, NULL, 0, 0, AD_ERR_FORMAT, "too short"},
};

/* Writes case c into path. */
static void write_bad(const char *path, const bad_npy *c)
{
    unsigned char buf[4096];
    size_t n = 0;
    if (!c->dict) { /* a 7-byte file */
        tio_write(path, "\x93NUMPY\x01", 7);
        return;
    }
    memcpy(buf, c->pre, 8);
    n = 8;
    size_t lb = c->lenbytes ? (size_t)c->lenbytes : (c->pre[6] == 1 ? 2 : 4);
    size_t dlen = strlen(c->dict);
    size_t hlen = c->pad_newline ? ((8 + lb + dlen + 1 + 63) / 64 * 64 - 8 - lb) : dlen;
    uint32_t field = c->lenbytes ? (uint32_t)hlen : c->len;
    for (size_t i = 0; i < lb; i++) buf[n++] = (unsigned char)(field >> (8 * i));
    memcpy(buf + n, c->dict, dlen);
    if (c->pad_newline) {
        memset(buf + n + dlen, ' ', hlen - dlen - 1);
        buf[n + hlen - 1] = '\n';
    }
    n += hlen;
    for (int i = 0; i < c->data; i++) buf[n++] = (unsigned char)(i * 7);
    tio_write(path, buf, n);
}

START_TEST(test_malformed)
{
    const bad_npy *c = &bad_cases[_i];
    char dir[256], path[512], err[512];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.npy", dir);
    write_bad(path, c);
    ad_tensor *u = (ad_tensor *)&err;
    ad_status st = ad_npy_load(path, &u, err, sizeof err);
    ck_assert_msg(u == NULL, "case %s: out not NULL", c->name);
    ck_assert_msg(strncmp(err, "ad_npy_load: ", 13) == 0, "case %s: %s", c->name, err);
    TIO_ASSERT_ERR(st, c->want, err, path, c->what);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_missing_and_empty)
{
    char dir[256], path[512], err[512];
    tio_mkdtemp(dir, sizeof dir);
    ad_tensor *u;
    snprintf(path, sizeof path, "%s/none.npy", dir);
    ad_status st = ad_npy_load(path, &u, err, sizeof err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err, path, "cannot open");
    snprintf(path, sizeof path, "%s/empty.npy", dir);
    tio_write(path, "", 0);
    st = ad_npy_load(path, &u, err, sizeof err);
    TIO_ASSERT_ERR(st, AD_ERR_FORMAT, err, path, "too short");
    /* a directory is not a file */
    st = ad_npy_load(dir, &u, err, sizeof err);
    ck_assert_int_eq(st, AD_ERR_IO);
    /* a tiny errlen truncates, never overflows; NULL err is fine */
    snprintf(path, sizeof path, "%s/none.npy", dir);
    char small[8];
    ck_assert_int_eq(ad_npy_load(path, &u, small, sizeof small), AD_ERR_IO);
    ck_assert_uint_eq(strlen(small), 7);
    ck_assert_int_eq(ad_npy_load(path, &u, NULL, 0), AD_ERR_IO);
    tio_rmtree(dir);
}
END_TEST

static Suite *npy_suite(void)
{
    Suite *s = suite_create("npy");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_save_errors);
    tcase_add_test(tc, test_numpy_files);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_loop_test(tc, test_malformed, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_missing_and_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(npy_suite()); }

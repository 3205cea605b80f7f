/* test_dataset.c: IDX and CSV loaders (valid files, Fashion-MNIST, malformed-file tables) and the batcher. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ad.h"
#include "nn_io.h"
#include "test_io_util.h"
#include "test_util.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* ---- IDX ---- */

/* Bytes of an IDX file: magic type/ndim, dims, then data. */
static size_t idx_bytes(unsigned char *buf, int type, int ndim, const uint32_t *dims, const unsigned char *data,
                        size_t ndata)
{
    size_t n = 0;
    buf[n++] = 0;
    buf[n++] = 0;
    buf[n++] = (unsigned char)type;
    buf[n++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[n++] = (unsigned char)(dims[i] >> 24);
        buf[n++] = (unsigned char)(dims[i] >> 16);
        buf[n++] = (unsigned char)(dims[i] >> 8);
        buf[n++] = (unsigned char)dims[i];
    }
    memcpy(buf + n, data, ndata);
    return n + ndata;
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static const unsigned char px[30] = {0,  1,  2,  3,  4,  5,  10, 11, 12, 13,  14,  15,  20,  21,  22,
                                     23, 24, 25, 30, 31, 32, 33, 34, 35, 255, 254, 253, 252, 251, 250};
static const unsigned char lab5[5] = {3, 1, 4, 1, 0};

/* Writes the valid 5-image (2x3) set as dir/img(.gz) and dir/lab(.gz). */
static void write_valid_idx(const char *dir, bool gz, char *img, char *lbl, size_t n)
{
    unsigned char buf[256];
    snprintf(img, n, "%s/img%s", dir, gz ? ".gz" : "");
    snprintf(lbl, n, "%s/lab%s", dir, gz ? ".gz" : "");
    size_t k = idx_bytes(buf, 0x08, 3, (uint32_t[]){5, 2, 3}, px, 30);
    if (gz)
        write_gz(img, buf, k);
    else
        tio_write(img, buf, k);
    k = idx_bytes(buf, 0x08, 1, (uint32_t[]){5}, lab5, 5);
    if (gz)
        write_gz(lbl, buf, k);
    else
        tio_write(lbl, buf, k);
}

START_TEST(test_idx_valid)
{
    char dir[256], img[512], lbl[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    for (int gz = 0; gz < 2; gz++) {
        write_valid_idx(dir, gz, img, lbl, sizeof img);
        nn_dataset *ds = NULL;
        ck_assert_msg(nn_dataset_load_idx(img, lbl, &ds, &err) == AD_OK, "%s", err.message);
        ck_assert_int_eq(ds->n, 5);
        ck_assert_int_eq(ds->dim, 6);
        ck_assert_int_eq(ds->nclasses, 5);
        ck_assert_ptr_null(ds->features);
        ck_assert_int_eq(memcmp(ds->pixels_u8, px, 30), 0);
        for (int i = 0; i < 5; i++) ck_assert_int_eq(ds->labels[i], lab5[i]);
        nn_dataset_free(ds);
    }
    nn_dataset_free(NULL);
    tio_rmtree(dir);
}
END_TEST

typedef struct bad_idx {
    const char *name;
    int which; /* 0: the images file is bad, 1: the labels file */
    int gz;    /* write gzipped */
    int type, ndim;
    uint32_t dims[3];
    int ndata; /* data bytes (from px / lab), -1: write `raw` instead */
    const char *raw;
    size_t rawlen;
    ad_status want;
    const char *what;
} bad_idx;

static const bad_idx bad_idx_cases[] = {
    {"bad magic", 0, 0, 0, 0, {0}, -1, "\x01\x02\x08\x03\0\0\0\x05", 8, AD_ERR_FORMAT, "bad magic"},
    {"float element type", 0, 0, 0x0D, 3, {5, 2, 3}, 30, NULL, 0, AD_ERR_FORMAT, "element type code 0x0d"},
    {"int32 labels (> 255)", 1, 0, 0x0C, 1, {5}, 5, NULL, 0, AD_ERR_FORMAT, "element type code 0x0c"},
    {"images with 2 dims", 0, 0, 0x08, 2, {5, 6}, 30, NULL, 0, AD_ERR_FORMAT, "2 dimensions, expected 3"},
    {"labels with 2 dims", 1, 0, 0x08, 2, {5, 1}, 5, NULL, 0, AD_ERR_FORMAT, "2 dimensions, expected 1"},
    {"dims product overflow",
     0,
     0,
     0x08,
     3,
     {0xffffffffu, 0xffffffffu, 0xffffffffu},
     30,
     NULL,
     0,
     AD_ERR_FORMAT,
     "overflow"},
    {"dims beyond plain file", 0, 0, 0x08, 3, {1000, 28, 28}, 30, NULL, 0, AD_ERR_FORMAT, "can hold"},
    {"dims beyond gz bound", 0, 1, 0x08, 3, {0x7fffffffu, 28, 28}, 30, NULL, 0, AD_ERR_FORMAT, "can hold"},
    {"truncated gz", 1, 1, 0x08, 1, {5}, 4, NULL, 0, AD_ERR_FORMAT, "truncated in the label data"},
    {"truncated header", 1, 0, 0, 0, {0}, -1, "\0\0\x08\x01\0\0", 6, AD_ERR_FORMAT, "truncated in the dimensions"},
    {"count mismatch", 1, 0, 0x08, 1, {4}, 4, NULL, 0, AD_ERR_FORMAT, "4 labels for 5 images"},
    {"trailing bytes", 0, 0, 0x08, 3, {5, 2, 2}, 30, NULL, 0, AD_ERR_FORMAT, "trailing bytes"},
    {"empty file", 0, 0, 0, 0, {0}, -1, "", 0, AD_ERR_FORMAT, "empty file"},
    {"garbage text", 0, 0, 0, 0, {0}, -1, "hello, this is not an IDX file\n", 31, AD_ERR_FORMAT, "bad magic"},
    {"corrupt gzip",
     0,
     0,
     0,
     0,
     {0},
     -1,
     "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage-garbage-garbage",
     33,
     AD_ERR_FORMAT,
     "reading the magic number"},
    {"no samples", 0, 0, 0x08, 3, {0, 2, 3}, 0, NULL, 0, AD_ERR_FORMAT, "labels for 0 images"},
};

START_TEST(test_idx_malformed)
{
    const bad_idx *c = &bad_idx_cases[_i];
    char dir[256], img[512], lbl[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    write_valid_idx(dir, false, img, lbl, sizeof img);
    const char *bad = c->which ? lbl : img;
    if (c->ndata < 0) {
        tio_write(bad, c->raw, c->rawlen);
    } else {
        unsigned char buf[256];
        size_t k = idx_bytes(buf, c->type, c->ndim, c->dims, c->which ? lab5 : px, (size_t)c->ndata);
        if (c->gz)
            write_gz(bad, buf, k);
        else
            tio_write(bad, buf, k);
    }
    nn_dataset *ds = (nn_dataset *)&err;
    ad_status st = nn_dataset_load_idx(img, lbl, &ds, &err);
    ck_assert_msg(ds == NULL, "case %s: out set", c->name);
    ck_assert_msg(strncmp(err.message, "nn_dataset_load_idx: ", 21) == 0, "%s", err.message);
    TIO_ASSERT_ERR(st, c->want, err.message, bad, c->what);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_idx_missing)
{
    nn_error err = {0};
    nn_dataset *ds;
    ad_status st = nn_dataset_load_idx("/nonexistent/img.gz", "/nonexistent/lab.gz", &ds, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, "/nonexistent/img.gz", "cannot open");
    ck_assert_int_eq(nn_dataset_load_idx(NULL, "x", &ds, &err), AD_ERR_ARG);
    ck_assert_int_eq(nn_dataset_load_idx("x", "y", NULL, NULL), AD_ERR_ARG);
}
END_TEST

START_TEST(test_fashion_mnist)
{
    const char *img = FMNIST "/t10k-images-idx3-ubyte.gz", *lbl = FMNIST "/t10k-labels-idx1-ubyte.gz";
    if (!tio_exists(img) || !tio_exists(lbl)) {
        fprintf(stderr, "test_fashion_mnist: skipped, dataset-fashion-mnist is not installed\n");
        return;
    }
    nn_error err = {0};
    nn_dataset *ds;
    ck_assert_msg(nn_dataset_load_idx(img, lbl, &ds, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(ds->n, 10000);
    ck_assert_int_eq(ds->dim, 784);
    ck_assert_int_eq(ds->nclasses, 10);
    int64_t counts[10] = {0};
    for (int64_t i = 0; i < ds->n; i++) {
        ck_assert(ds->labels[i] >= 0 && ds->labels[i] < 10);
        counts[ds->labels[i]]++;
    }
    for (int k = 0; k < 10; k++) ck_assert_int_eq(counts[k], 1000);
    /* real images: some ink, some background */
    int64_t zeros = 0, full = 0;
    for (int64_t i = 0; i < 784 * 100; i++) zeros += ds->pixels_u8[i] == 0, full += ds->pixels_u8[i] == 255;
    ck_assert(zeros > 784 * 10 && full > 0);
    nn_dataset_free(ds);

    if (tu_quick()) return;
    ck_assert_msg(nn_dataset_load_idx(FMNIST "/train-images-idx3-ubyte.gz", FMNIST "/train-labels-idx1-ubyte.gz", &ds, &err) == AD_OK,
                  "%s", err.message);
    ck_assert_int_eq(ds->n, 60000);
    ck_assert_int_eq(ds->nclasses, 10);
    nn_dataset_free(ds);
}
END_TEST

/* ---- CSV ---- */

START_TEST(test_csv_valid)
{
    char dir[256], path[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/d.csv", dir);
    const char *text = "a,b,label,c\r\n"
                       "1.5, -2 ,2,3e2\r\n"
                       "\r\n"
                       "0,0.25,0,-1e-3\n"
                       "  \t\n"
                       "7,8,5.0,9"; /* no final newline */
    tio_write(path, text, strlen(text));
    nn_dataset *ds = NULL;
    ck_assert_msg(nn_dataset_load_csv(path, 2, true, &ds, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(ds->n, 3);
    ck_assert_int_eq(ds->dim, 3);
    ck_assert_int_eq(ds->nclasses, 6);
    ck_assert_ptr_null(ds->pixels_u8);
    static const float want[9] = {1.5f, -2, 300, 0, 0.25f, -1e-3f, 7, 8, 9};
    for (int i = 0; i < 9; i++) ck_assert(ds->features[i] == want[i]);
    ck_assert_int_eq(ds->labels[0], 2);
    ck_assert_int_eq(ds->labels[1], 0);
    ck_assert_int_eq(ds->labels[2], 5);
    nn_dataset_free(ds);

    /* label last (-1), no header, a byte order mark; label first (0) */
    const char *t2 = "\xEF\xBB\xBF"
                     "1,2,3\n4,5,6\n";
    tio_write(path, t2, strlen(t2));
    ck_assert_msg(nn_dataset_load_csv(path, -1, false, &ds, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(ds->n, 2);
    ck_assert_int_eq(ds->nclasses, 7);
    ck_assert(ds->features[0] == 1 && ds->features[1] == 2 && ds->features[2] == 4 && ds->features[3] == 5);
    nn_dataset_free(ds);
    ck_assert_msg(nn_dataset_load_csv(path, 0, false, &ds, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(ds->labels[1], 4);
    ck_assert(ds->features[0] == 2 && ds->features[1] == 3);
    nn_dataset_free(ds);
    tio_rmtree(dir);
}
END_TEST

typedef struct bad_csv {
    const char *name;
    const char *text;
    int label_col;
    bool header;
    ad_status want;
    const char *what;
} bad_csv;

static const bad_csv bad_csv_cases[] = {
    {"ragged row", "1,2,0\n3,4\n", -1, false, AD_ERR_FORMAT, "line 2: ragged row: 2 columns"},
    {"header width", "a,b\n1,2,0\n", -1, true, AD_ERR_FORMAT, "ragged row"},
    {"non-numeric", "1,2,0\n3,abc,1\n", -1, false, AD_ERR_FORMAT, "line 2, column 2: not a number: 'abc'"},
    {"number with junk", "1,2x,0\n", -1, false, AD_ERR_FORMAT, "not a number: '2x'"},
    {"huge number", "1,1e400,0\n", -1, false, AD_ERR_FORMAT, "out of range: '1e400'"},
    {"beyond float", "1,1e39,0\n", -1, false, AD_ERR_FORMAT, "out of float range"},
    {"NaN feature", "1,nan,0\n", -1, false, AD_ERR_FORMAT, "non-finite value 'nan'"},
    {"Inf feature", "inf,1,0\n", -1, false, AD_ERR_FORMAT, "non-finite"},
    {"empty cell", "1,,0\n", -1, false, AD_ERR_FORMAT, "column 2: empty cell"},
    {"empty file", "", -1, false, AD_ERR_FORMAT, "empty file"},
    {"blank lines only", "\n \n\r\n", -1, false, AD_ERR_FORMAT, "empty file"},
    {"header only", "a,b,c\n", -1, true, AD_ERR_FORMAT, "header only"},
    {"negative label", "1,2,0\n3,4,-1\n", -1, false, AD_ERR_FORMAT, "line 2, column 3: label -1 is not"},
    {"fractional label", "1,2,1.5\n", -1, false, AD_ERR_FORMAT, "label 1.5 is not an integer"},
    {"huge label", "1,2,1e9\n", -1, false, AD_ERR_FORMAT, "is not an integer in [0,"},
    {"label column too big", "1,2,0\n", 3, false, AD_ERR_ARG, "label column 3 out of range for 3 columns"},
    {"label column too negative", "1,2,0\n", -4, false, AD_ERR_ARG, "label column -4 out of range"},
    {"one column", "1\n2\n", 0, false, AD_ERR_FORMAT, "one column"},
};

START_TEST(test_csv_malformed)
{
    const bad_csv *c = &bad_csv_cases[_i];
    char dir[256], path[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bad.csv", dir);
    tio_write(path, c->text, strlen(c->text));
    nn_dataset *ds = (nn_dataset *)&err;
    ad_status st = nn_dataset_load_csv(path, c->label_col, c->header, &ds, &err);
    ck_assert_msg(ds == NULL, "case %s: out set", c->name);
    TIO_ASSERT_ERR(st, c->want, err.message, path, c->what);
    tio_rmtree(dir);
}
END_TEST

START_TEST(test_csv_missing)
{
    nn_error err = {0};
    nn_dataset *ds;
    ad_status st = nn_dataset_load_csv("/nonexistent/x.csv", 0, false, &ds, &err);
    TIO_ASSERT_ERR(st, AD_ERR_IO, err.message, "/nonexistent/x.csv", "cannot open");
    ck_assert_int_eq(nn_dataset_load_csv(NULL, 0, false, &ds, &err), AD_ERR_ARG);
}
END_TEST

/* ---- the batcher ---- */

/* n rows of dim 2: features (i, -i), label i (so a batch tells which rows it holds). */
static nn_dataset *rows_ds(int64_t n)
{
    nn_dataset *ds = calloc(1, sizeof *ds);
    ds->n = n;
    ds->dim = 2;
    ds->nclasses = n;
    ds->features = malloc((size_t)n * 2 * sizeof(float));
    ds->labels = malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        ds->features[2 * i] = (float)i;
        ds->features[2 * i + 1] = (float)-i;
        ds->labels[i] = i;
    }
    return ds;
}

static void free_rows_ds(nn_dataset *ds)
{
    free(ds->features);
    free(ds->labels);
    free(ds);
}

/* Runs one epoch, writing the visited row order into order[]; returns the batch sizes' count. */
static int epoch(nn_batcher *b, ad_tensor *x, int64_t n, int64_t *order, int64_t *sizes)
{
    int64_t lab[64], got, k = 0;
    int nb = 0;
    while ((got = nn_batcher_next(b, x, NULL, lab)) > 0) {
        sizes[nb++] = got;
        for (int64_t r = 0; r < got; r++) {
            ck_assert(((float *)x->data)[2 * r] == (float)lab[r]);
            ck_assert(((float *)x->data)[2 * r + 1] == (float)-lab[r]);
            order[k++] = lab[r];
        }
    }
    ck_assert_int_eq(got, 0);
    ck_assert_int_eq(k, n);
    /* a permutation: every row exactly once */
    char *seen = calloc((size_t)n, 1);
    for (int64_t i = 0; i < n; i++) {
        ck_assert(order[i] >= 0 && order[i] < n && !seen[order[i]]);
        seen[order[i]] = 1;
    }
    free(seen);
    return nb;
}

START_TEST(test_batcher_order)
{
    enum { N = 103, B = 10 };
    nn_dataset *ds = rows_ds(N);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(B, 2));
    int64_t o1[N], o2[N], o3[N], sizes[16];

    /* no shuffle: file order, batches 10 x 10 then 3 */
    nn_batcher *b = nn_batcher_new(ds, B, false, 0, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(nn_batcher_num_batches(b), 11);
    ck_assert_int_eq(epoch(b, x, N, o1, sizes), 11);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(sizes[i], B);
    ck_assert_int_eq(sizes[10], 3);
    for (int i = 0; i < N; i++) ck_assert_int_eq(o1[i], i);
    ck_assert_int_eq(nn_batcher_next(b, x, NULL, NULL), 0); /* stays at the end */
    nn_batcher_reset(b);
    epoch(b, x, N, o2, sizes);
    ck_assert_int_eq(memcmp(o1, o2, sizeof o1), 0);
    nn_batcher_free(b);

    /* shuffle: same seed, same orders epoch by epoch; epochs differ; seeds differ */
    nn_batcher *s1 = nn_batcher_new(ds, B, true, 42, NULL), *s2 = nn_batcher_new(ds, B, true, 42, NULL),
               *s3 = nn_batcher_new(ds, B, true, 43, NULL);
    epoch(s1, x, N, o1, sizes);
    epoch(s2, x, N, o2, sizes);
    epoch(s3, x, N, o3, sizes);
    ck_assert_int_eq(memcmp(o1, o2, sizeof o1), 0);
    ck_assert_int_ne(memcmp(o1, o3, sizeof o1), 0);
    int64_t identity = 0;
    for (int i = 0; i < N; i++) identity += o1[i] == i;
    ck_assert_int_lt(identity, N / 2);
    int64_t e1[N];
    memcpy(e1, o1, sizeof o1);
    nn_batcher_reset(s1);
    nn_batcher_reset(s2);
    epoch(s1, x, N, o1, sizes);
    epoch(s2, x, N, o2, sizes);
    ck_assert_int_eq(memcmp(o1, o2, sizeof o1), 0);
    ck_assert_int_ne(memcmp(o1, e1, sizeof o1), 0);
    nn_batcher_free(s1);
    nn_batcher_free(s2);
    nn_batcher_free(s3);
    ad_tensor_free(x);
    free_rows_ds(ds);
}
END_TEST

START_TEST(test_batcher_pixels_and_args)
{
    nn_dataset ds = {0};
    uint8_t pix[6] = {0, 255, 51, 102, 1, 254};
    int64_t labels[3] = {0, 1, 2};
    ds.n = 3;
    ds.dim = 2;
    ds.nclasses = 3;
    ds.pixels_u8 = pix;
    ds.labels = labels;
    nn_batcher *b = nn_batcher_new(&ds, 2, false, 0, NULL);
    ck_assert_ptr_nonnull(b);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(2, 2));
    ad_tensor_fill(x, -7);
    int64_t lab[2];
    ck_assert_int_eq(nn_batcher_next(b, x, NULL, lab), 2);
    for (int i = 0; i < 4; i++) ck_assert(((float *)x->data)[i] == (float)pix[i] / 255.0f);
    ck_assert_int_eq(lab[1], 1);
    ck_assert_int_eq(nn_batcher_next(b, x, NULL, lab), 1);
    ck_assert(((float *)x->data)[0] == 1.0f / 255.0f);
    ck_assert(((float *)x->data)[2] == 51.0f / 255.0f); /* the short batch leaves row 1 as it was */
    ck_assert_int_eq(nn_batcher_next(b, x, NULL, lab), 0);

    /* F64 batches, and tensors that do not fit */
    nn_batcher_reset(b);
    ad_tensor *x64 = ad_tensor_new(AD_F64, AD_SHAPE(4, 2));
    ck_assert_int_eq(nn_batcher_next(b, x64, NULL, NULL), 2);
    TU_ASSERT_CLOSE(ad_tensor_get(x64, 2), 51 / 255.0, 0, 1e-15);
    ad_tensor *narrow = ad_tensor_new(AD_F32, AD_SHAPE(2, 3)), *short_ = ad_tensor_new(AD_F32, AD_SHAPE(1, 2)),
              *flat = ad_tensor_new(AD_F32, AD_SHAPE(4));
    ck_assert_int_eq(nn_batcher_next(b, narrow, NULL, NULL), -1);
    ck_assert_int_eq(nn_batcher_next(b, short_, NULL, NULL), -1);
    ck_assert_int_eq(nn_batcher_next(b, flat, NULL, NULL), -1);
    ck_assert_int_eq(nn_batcher_next(NULL, x, NULL, NULL), -1);
    ad_tensor_free(narrow);
    ad_tensor_free(short_);
    ad_tensor_free(flat);
    ad_tensor_free(x64);
    ad_tensor_free(x);
    nn_batcher_free(b);
    nn_batcher_free(NULL);
    nn_batcher_reset(NULL);

    ck_assert_ptr_null(nn_batcher_new(NULL, 2, false, 0, NULL));
    ck_assert_ptr_null(nn_batcher_new(&ds, 0, false, 0, NULL));
    ck_assert_ptr_null(nn_batcher_new(&ds, -1, false, 0, NULL));
    nn_dataset empty = ds;
    empty.n = 0;
    ck_assert_ptr_null(nn_batcher_new(&empty, 2, false, 0, NULL));
    nn_dataset nodata = ds;
    nodata.pixels_u8 = NULL;
    ck_assert_ptr_null(nn_batcher_new(&nodata, 2, false, 0, NULL));
}
END_TEST

/* A batch filled on 3 threads (each its rows, from 16384 elements on) is the batch filled on one, bit
** for bit, with its labels and targets: pixels and float features, into F32 and F64 tensors. */
START_TEST(test_batcher_threads)
{
    enum { N = 200, DIM = 300, B = 64 };
    uint8_t *pix = malloc((size_t)N * DIM);
    float *feat = malloc((size_t)N * DIM * sizeof(float)), targ[N * 2];
    int64_t labels[N];
    ck_assert(pix && feat);
    for (int i = 0; i < N * DIM; i++) {
        pix[i] = (uint8_t)(i * 37 % 251);
        feat[i] = (float)(i % 1009) * 0.25f - 7.0f;
    }
    for (int i = 0; i < N; i++) {
        labels[i] = i % 10;
        targ[2 * i] = (float)i;
        targ[2 * i + 1] = -(float)i * 0.5f;
    }
    nn_dataset pds = {0};
    pds.n = N;
    pds.dim = DIM;
    pds.nclasses = 10;
    pds.pixels_u8 = pix;
    pds.labels = labels;
    nn_dataset *fds = NULL;
    ck_assert_int_eq(nn_dataset_from_arrays(N, DIM, feat, NULL, targ, 1, (const int64_t[]){2}, false, &fds, NULL),
                     AD_OK);
    for (int which = 0; which < 4; which++) {
        const nn_dataset *ds = which < 2 ? &pds : fds;
        ad_dtype dt = which % 2 ? AD_F64 : AD_F32;
        nn_batcher *b[2] = {nn_batcher_new(ds, B, true, 5, NULL), nn_batcher_new(ds, B, true, 5, NULL)};
        ad_tensor *x[2] = {ad_tensor_new(dt, AD_SHAPE(B, DIM)), ad_tensor_new(dt, AD_SHAPE(B, DIM))};
        ad_tensor *y[2] = {ad_tensor_new(dt, AD_SHAPE(B, 2)), ad_tensor_new(dt, AD_SHAPE(B, 2))};
        int64_t lab[2][B];
        ck_assert(b[0] && b[1] && x[0] && x[1] && y[0] && y[1]);
        for (int batch = 0; batch < 4; batch++) {
            int64_t got[2];
            for (int k = 0; k < 2; k++) {
                ad_tensor_fill(x[k], (double)k - 3);
                ad_tensor_fill(y[k], (double)k - 3);
                memset(lab[k], k, sizeof lab[k]);
                ad_set_num_threads(k ? 3 : 1);
                got[k] = nn_batcher_next(b[k], x[k], which < 2 ? NULL : y[k], which < 2 ? lab[k] : NULL);
            }
            ad_set_num_threads(1);
            ck_assert_int_eq(got[0], batch < 3 ? B : N - 3 * B);
            ck_assert_int_eq(got[1], got[0]);
            size_t es = dt == AD_F64 ? 8 : 4;
            ck_assert_int_eq(memcmp(x[0]->data, x[1]->data, (size_t)got[0] * DIM * es), 0);
            if (which < 2) ck_assert_int_eq(memcmp(lab[0], lab[1], (size_t)got[0] * sizeof(int64_t)), 0);
            else ck_assert_int_eq(memcmp(y[0]->data, y[1]->data, (size_t)got[0] * 2 * es), 0);
        }
        for (int k = 0; k < 2; k++) {
            nn_batcher_free(b[k]);
            ad_tensor_free(x[k]);
            ad_tensor_free(y[k]);
        }
    }
    nn_dataset_free(fds);
    free(pix);
    free(feat);
}
END_TEST

/* Every allocation of the loaders and the batcher failing in turn: AD_ERR_NOMEM (or NULL), nothing leaked. */
START_TEST(test_out_of_memory)
{
    char dir[256], img[512], lbl[512], csv[512];
    nn_error err = {0};
    tio_mkdtemp(dir, sizeof dir);
    write_valid_idx(dir, true, img, lbl, sizeof img);
    snprintf(csv, sizeof csv, "%s/d.csv", dir);
    tio_write(csv, "1,2,0\n3,4,1\n", 12);
    for (int which = 0; which < 3; which++) {
        long k;
        for (k = 1; k < 100; k++) {
            tio_failalloc f = {0, k};
            nn_dataset *ds = (nn_dataset *)&f;
            ad_set_allocator(tio_alloc, &f);
            ad_status st = which == 0   ? nn_dataset_load_idx(img, lbl, &ds, &err)
                           : which == 1 ? nn_dataset_load_csv(csv, -1, false, &ds, &err)
                                        : AD_OK;
            nn_batcher *b = NULL;
            if (which == 2) {
                nn_dataset small = {
                    .n = 2, .dim = 1, .nclasses = 2, .features = (float[]){1, 2}, .labels = (int64_t[]){0, 1}};
                b = nn_batcher_new(&small, 1, true, 1, NULL);
                st = b ? AD_OK : AD_ERR_NOMEM;
                nn_batcher_free(b);
                ds = NULL;
            }
            ad_set_allocator(NULL, NULL);
            if (st == AD_OK) {
                nn_dataset_free(ds);
                break;
            }
            ck_assert_msg(st == AD_ERR_NOMEM, "case %d, allocation %ld: %s", which, k, err.message);
            ck_assert_ptr_null(ds);
            if (which < 2) ck_assert_ptr_nonnull(strstr(err.message, "out of memory"));
        }
        ck_assert_int_gt(k, 2); /* at least two allocations were failed and recovered from */
        ck_assert_int_lt(k, 100);
    }
    tio_rmtree(dir);
}
END_TEST

static Suite *dataset_suite(void)
{
    Suite *s = suite_create("dataset");
    TCase *tc = tcase_create("idx");
    tcase_add_test(tc, test_idx_valid);
    tcase_add_loop_test(tc, test_idx_malformed, 0, (int)(sizeof bad_idx_cases / sizeof bad_idx_cases[0]));
    tcase_add_test(tc, test_idx_missing);
    tcase_add_test(tc, test_fashion_mnist);
    suite_add_tcase(s, tc);
    tc = tcase_create("csv");
    tcase_add_test(tc, test_csv_valid);
    tcase_add_loop_test(tc, test_csv_malformed, 0, (int)(sizeof bad_csv_cases / sizeof bad_csv_cases[0]));
    tcase_add_test(tc, test_csv_missing);
    suite_add_tcase(s, tc);
    tc = tcase_create("batcher");
    tcase_add_test(tc, test_batcher_order);
    tcase_add_test(tc, test_batcher_pixels_and_args);
    tcase_add_test(tc, test_batcher_threads);
    tcase_add_test(tc, test_out_of_memory);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(dataset_suite()); }

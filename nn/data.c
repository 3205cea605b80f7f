/* data.c: data sets in memory (from arrays, from .npy files, their lifetime) and the mini-batch iterator over them. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

void nn_dataset_free(nn_dataset *ds)
{
    if (!ds) return;
    if (!ds->borrowed) {
        ad__free(ds->pixels_u8);
        ad__free(ds->features);
        ad__free(ds->labels);
        ad__free(ds->targets);
    }
    ad__free(ds);
}

/* A copy of n elements of size sz, or NULL (n * sz checked by the caller). */
static void *dup_array(const void *src, int64_t n, size_t sz)
{
    void *d = ad__malloc((size_t)(n ? n : 1) * sz);
    if (d && n) memcpy(d, src, (size_t)n * sz);
    return d;
}

ad_status nn_dataset_from_arrays(int64_t n, int64_t dim, const float *features, const int64_t *labels,
                                 const float *targets, int target_ndim, const int64_t *target_shape, bool copy,
                                 nn_dataset **out, nn_error *err)
{
    static const char fn[] = "nn_dataset_from_arrays";
    if (out) *out = NULL;
    if (!out || !features || n < 1 || dim < 1)
        return nn_error_set(err, AD_ERR_ARG, "%s: %s", fn, !out || !features ? "NULL out or features" : "n and dim must be >= 1");
    if (!labels == !targets)
        return nn_error_set(err, AD_ERR_ARG, "%s: give either labels or targets", fn);
    int64_t tsize = 1, cells, tcells = 0;
    if (targets) {
        if (target_ndim < 1 || target_ndim > AD_MAX_DIMS - 1 || !target_shape)
            return nn_error_set(err, AD_ERR_ARG, "%s: a target has 1 to %d axes (target_ndim %d)", fn, AD_MAX_DIMS - 1,
                                target_ndim);
        for (int i = 0; i < target_ndim; i++)
            if (target_shape[i] < 1 || !ad__mul_ok(tsize, target_shape[i], &tsize))
                return nn_error_set(err, AD_ERR_ARG, "%s: target axis %d has size %lld", fn, i,
                                    (long long)target_shape[i]);
    }
    if (!ad__mul_ok(n, dim, &cells) || (targets && !ad__mul_ok(n, tsize, &tcells)) ||
        (uint64_t)cells > SIZE_MAX / sizeof(float) || (uint64_t)tcells > SIZE_MAX / sizeof(float))
        return nn_error_set(err, AD_ERR_ARG, "%s: %lld rows are too many", fn, (long long)n);
    int64_t maxl = -1;
    for (int64_t i = 0; labels && i < n; i++) {
        if (labels[i] < 0) return nn_error_set(err, AD_ERR_ARG, "%s: label %lld of row %lld is negative", fn,
                                               (long long)labels[i], (long long)i);
        if (labels[i] > maxl) maxl = labels[i];
    }
    nn_dataset *ds = ad__calloc(1, sizeof *ds);
    if (!ds) return nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
    ds->n = n;
    ds->dim = dim;
    ds->nclasses = labels ? maxl + 1 : 0;
    if (targets) {
        ds->target_ndim = target_ndim;
        memcpy(ds->target_shape, target_shape, (size_t)target_ndim * sizeof *target_shape);
        ds->target_size = tsize;
    }
    if (!copy) {
        ds->borrowed = true;
        ds->features = (float *)features;
        ds->labels = (int64_t *)labels;
        ds->targets = (float *)targets;
    } else {
        ds->features = dup_array(features, cells, sizeof(float));
        if (labels) ds->labels = dup_array(labels, n, sizeof(int64_t));
        if (targets) ds->targets = dup_array(targets, tcells, sizeof(float));
        if (!ds->features || (labels && !ds->labels) || (targets && !ds->targets)) {
            nn_dataset_free(ds);
            return nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory for %lld rows", fn, (long long)n);
        }
    }
    *out = ds;
    return AD_OK;
}

/* ---- .npy data sets ---- */

/* Every element of t as a float, into a new array (values beyond float range are an error). */
static float *to_floats(const ad_tensor *t, const char *fn, const char *path, nn_error *err)
{
    float *f = ad__malloc((size_t)(t->size ? t->size : 1) * sizeof *f);
    if (!f) {
        nn_error_set(err, AD_ERR_NOMEM, "%s: %s: out of memory", fn, path);
        return NULL;
    }
    for (int64_t i = 0; i < t->size; i++) {
        double v = ad_tensor_get(t, i);
        if (!isfinite(v) || fabs(v) > 3.4028234663852886e38) {
            nn_error_set(err, AD_ERR_FORMAT, "%s: %s: element %lld is %g, not a finite float", fn, path,
                         (long long)i, v);
            ad__free(f);
            return NULL;
        }
        f[i] = (float)v;
    }
    return f;
}

ad_status nn_dataset_load_npy(const char *features_path, const char *targets_path, bool labels, nn_dataset **out,
                              nn_error *err)
{
    static const char fn[] = "nn_dataset_load_npy";
    if (out) *out = NULL;
    if (!features_path || !targets_path || !out)
        return nn_error_set(err, AD_ERR_ARG, "%s: NULL features_path, targets_path or out", fn);
    ad_tensor *x = NULL, *y = NULL;
    nn_dataset *ds = NULL;
    float *feat = NULL, *targ = NULL;
    int64_t *lab = NULL;
    ad_status st = nn__status(err, ad_npy_load(features_path, &x, NN__MSG(err)));
    if (st == AD_OK) st = nn__status(err, ad_npy_load(targets_path, &y, NN__MSG(err)));
    if (st != AD_OK) goto done;
    if (x->ndim < 1 || y->ndim < 1 || x->shape[0] < 1 || x->shape[0] != y->shape[0]) {
        st = nn_error_set(err, AD_ERR_SHAPE, "%s: %s and %s: %lld and %lld rows (they must agree, >= 1)", fn,
                          features_path, targets_path, (long long)(x->ndim ? x->shape[0] : 0),
                          (long long)(y->ndim ? y->shape[0] : 0));
        goto done;
    }
    int64_t n = x->shape[0], dim = n ? x->size / n : 0;
    if (dim < 1 || (labels && y->ndim != 1)) {
        st = nn_error_set(err, AD_ERR_SHAPE, "%s: %s", fn,
                          dim < 1 ? "the features have no columns" : "labels must be a [n] array");
        goto done;
    }
    if (!(feat = to_floats(x, fn, features_path, err))) {
        st = err ? err->status : AD_ERR_NOMEM;
        goto done;
    }
    if (labels) {
        if (!(lab = ad__malloc((size_t)n * sizeof *lab))) {
            st = nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            double v = ad_tensor_get(y, i);
            if (!(v >= 0 && v <= 16777215.0 && v == floor(v))) {
                st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: label %g of row %lld is not an integer in [0, 2^24)",
                                  fn, targets_path, v, (long long)i);
                goto done;
            }
            lab[i] = (int64_t)v;
        }
    } else if (!(targ = to_floats(y, fn, targets_path, err))) {
        st = err ? err->status : AD_ERR_NOMEM;
        goto done;
    }
    int tnd = y->ndim > 1 ? y->ndim - 1 : 1;
    const int64_t one[1] = {1};
    st = nn_dataset_from_arrays(n, dim, feat, lab, targ, tnd, y->ndim > 1 ? y->shape + 1 : one, false, &ds, err);
    if (st != AD_OK) goto done;
    ds->borrowed = false; /* the arrays made here are the data set's */
    feat = NULL, lab = NULL, targ = NULL;
    *out = ds;
done:
    ad__free(feat);
    ad__free(lab);
    ad__free(targ);
    ad_tensor_free(x);
    ad_tensor_free(y);
    return st;
}

/* ---- the batcher ---- */

struct nn_batcher {
    const nn_dataset *ds;
    int64_t batch;
    bool shuffle;
    ad_rng rng;
    int64_t pos;
    int64_t n;      /* rows visited per epoch */
    int64_t *rows;  /* their indices */
    int64_t *perm;  /* this epoch's order: indices into rows */
};

/* Fisher-Yates over the identity when shuffling, the identity otherwise. */
static void batcher_order(nn_batcher *b)
{
    int64_t n = b->n;
    for (int64_t i = 0; i < n; i++) b->perm[i] = i;
    if (!b->shuffle) return;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ad_rng_below(&b->rng, (uint64_t)i + 1);
        int64_t t = b->perm[i];
        b->perm[i] = b->perm[j];
        b->perm[j] = t;
    }
}

nn_batcher *nn_batcher_new_rows(const nn_dataset *ds, int64_t nrows, const int64_t *rows, int64_t batch, bool shuffle,
                                uint64_t seed, nn_error *err)
{
    if (!ds || ds->n <= 0 || ds->dim <= 0 || batch <= 0 || (!ds->labels && !ds->targets) ||
        (!ds->pixels_u8 && !ds->features) || nrows < 1 || (uint64_t)nrows > SIZE_MAX / (2 * sizeof(int64_t))) {
        nn_error_set(err, AD_ERR_ARG, "nn_batcher_new: %s", !ds ? "NULL data set"
                                                          : batch <= 0 ? "the batch size must be >= 1"
                                                          : nrows < 1 ? "no rows"
                                                                       : "the data set is empty or incomplete");
        return NULL;
    }
    for (int64_t i = 0; rows && i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= ds->n) {
            nn_error_set(err, AD_ERR_INDEX, "nn_batcher_new: row %lld is outside [0, %lld)", (long long)rows[i],
                         (long long)ds->n);
            return NULL;
        }
    nn_batcher *b = ad__calloc(1, sizeof *b);
    if (b) b->perm = ad__malloc((size_t)nrows * sizeof(int64_t));
    if (b && b->perm) b->rows = ad__malloc((size_t)nrows * sizeof(int64_t));
    if (!b || !b->perm || !b->rows) {
        nn_batcher_free(b);
        nn_error_set(err, AD_ERR_NOMEM, "nn_batcher_new: out of memory for %lld rows", (long long)nrows);
        return NULL;
    }
    for (int64_t i = 0; i < nrows; i++) b->rows[i] = rows ? rows[i] : i;
    b->ds = ds;
    b->n = nrows;
    b->batch = batch;
    b->shuffle = shuffle;
    ad_rng_seed(&b->rng, seed);
    batcher_order(b);
    return b;
}

nn_batcher *nn_batcher_new(const nn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed, nn_error *err)
{
    return nn_batcher_new_rows(ds, ds ? ds->n : 0, NULL, batch, shuffle, seed, err);
}

/* Pixels to [0, 1]: exact division (not a multiply by 1/255, which rounds differently),
** vectorized, with the ISA picked at run time (AD_CLONES). */
AD_CLONES static void pixels_f32(float *restrict d, const uint8_t *restrict s, int64_t n)
{
    for (int64_t k = 0; k < n; k++) d[k] = (float)s[k] / 255.0f;
}

AD_CLONES static void pixels_f64(double *restrict d, const uint8_t *restrict s, int64_t n)
{
    for (int64_t k = 0; k < n; k++) d[k] = s[k] / 255.0;
}

/* y fits the batch: [>= batch, target_shape...], F32 or F64. */
static bool targets_fit(const nn_batcher *b, const ad_tensor *y)
{
    const nn_dataset *ds = b->ds;
    if (!ds->targets || y->ndim != ds->target_ndim + 1 || y->shape[0] < b->batch ||
        (y->dtype != AD_F32 && y->dtype != AD_F64))
        return false;
    for (int i = 0; i < ds->target_ndim; i++)
        if (y->shape[i + 1] != ds->target_shape[i]) return false;
    return true;
}

/* From this many elements on, a batch's rows are converted on ad_get_num_threads() threads, each
** its contiguous range of rows. The rows lie scattered over the data set (47 MiB of pixels for
** Fashion-MNIST), so a batch costs mostly cache misses, and two threads wait for theirs at once:
** bench_mlp on 2 threads (2-core Zen 5), 64 x 784 pixels per batch: 50-56 us on one thread,
** 30-33 us on two. (Prefetching rows a few ahead changed nothing measurable.) */
#define FILL_THREAD_MIN ((int64_t)16384)

typedef struct fill_job {
    const nn_batcher *b;
    ad_tensor *x, *y;
    int64_t *labels;
    int64_t rows;
} fill_job;

/* Rows [lo, hi) of the batch into x, and their labels or targets. */
static void fill_rows(const fill_job *j, int64_t lo, int64_t hi)
{
    const nn_batcher *b = j->b;
    const nn_dataset *ds = b->ds;
    ad_tensor *x = j->x, *y = j->y;
    int64_t dim = ds->dim, ts = ds->target_size;
    for (int64_t r = lo; r < hi; r++) {
        int64_t src = b->rows[b->perm[b->pos + r]];
        if (j->labels) j->labels[r] = ds->labels[src];
        if (y && y->dtype == AD_F32) memcpy((float *)y->data + r * ts, ds->targets + src * ts, (size_t)ts * sizeof(float));
        else if (y)
            for (int64_t k = 0; k < ts; k++) ((double *)y->data)[r * ts + k] = ds->targets[src * ts + k];
        if (x->dtype == AD_F32) {
            float *d = (float *)x->data + r * dim;
            if (ds->pixels_u8) pixels_f32(d, ds->pixels_u8 + src * dim, dim);
            else memcpy(d, ds->features + src * dim, (size_t)dim * sizeof(float));
        } else {
            double *d = (double *)x->data + r * dim;
            if (ds->pixels_u8) {
                pixels_f64(d, ds->pixels_u8 + src * dim, dim);
            } else {
                const float *s = ds->features + src * dim;
                for (int64_t k = 0; k < dim; k++) d[k] = s[k];
            }
        }
    }
}

static void fill_share(void *ctx, int tid, int nth)
{
    const fill_job *j = ctx;
    fill_rows(j, j->rows * tid / nth, j->rows * (tid + 1) / nth);
}

int64_t nn_batcher_next(nn_batcher *b, ad_tensor *x, ad_tensor *y, int64_t *labels)
{
    if (!b || !x || x->ndim != 2 || x->shape[1] != b->ds->dim || x->shape[0] < b->batch ||
        (x->dtype != AD_F32 && x->dtype != AD_F64) || (y && !targets_fit(b, y)) || (labels && !b->ds->labels))
        return -1;
    const nn_dataset *ds = b->ds;
    int64_t rows = b->n - b->pos < b->batch ? b->n - b->pos : b->batch;
    fill_job j = {b, x, y, labels, rows};
    int nth = ad_get_num_threads();
    if (nth > rows) nth = (int)rows;
    if (nth > 1 && rows * ds->dim >= FILL_THREAD_MIN) ad__parallel(nth, fill_share, &j);
    else fill_rows(&j, 0, rows);
    b->pos += rows;
    ad_tensor_bump_version(x);
    return rows;
}

void nn_batcher_reset(nn_batcher *b)
{
    if (!b) return;
    b->pos = 0;
    if (b->shuffle) batcher_order(b);
}

void nn_batcher_reseed(nn_batcher *b, uint64_t seed)
{
    if (!b) return;
    b->pos = 0;
    ad_rng_seed(&b->rng, seed);
    batcher_order(b);
}

int64_t nn_batcher_num_batches(const nn_batcher *b) { return b ? (b->n + b->batch - 1) / b->batch : 0; }

void nn_batcher_free(nn_batcher *b)
{
    if (!b) return;
    ad__free(b->perm);
    ad__free(b->rows);
    ad__free(b);
}

/* data.c: data sets in memory (their lifetime) and the mini-batch iterator over them. */
#include "nn_internal.h"

void nn_dataset_free(nn_dataset *ds)
{
    if (!ds) return;
    ad__free(ds->pixels_u8);
    ad__free(ds->features);
    ad__free(ds->labels);
    ad__free(ds);
}


/* ---- the batcher ---- */

struct nn_batcher {
    const nn_dataset *ds;
    int64_t batch;
    bool shuffle;
    ad_rng rng;
    int64_t pos;
    int64_t *perm;
};

/* Fisher-Yates over the identity when shuffling, the identity otherwise. */
static void batcher_order(nn_batcher *b)
{
    int64_t n = b->ds->n;
    for (int64_t i = 0; i < n; i++) b->perm[i] = i;
    if (!b->shuffle) return;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ad_rng_below(&b->rng, (uint64_t)i + 1);
        int64_t t = b->perm[i];
        b->perm[i] = b->perm[j];
        b->perm[j] = t;
    }
}

nn_batcher *nn_batcher_new(const nn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed, nn_error *err)
{
    if (!ds || ds->n <= 0 || ds->dim <= 0 || batch <= 0 || !ds->labels || (!ds->pixels_u8 && !ds->features) ||
        (uint64_t)ds->n > SIZE_MAX / sizeof(int64_t)) {
        nn_error_set(err, AD_ERR_ARG, "nn_batcher_new: %s", !ds ? "NULL data set"
                                                          : batch <= 0 ? "the batch size must be >= 1"
                                                                       : "the data set is empty or incomplete");
        return NULL;
    }
    nn_batcher *b = ad__calloc(1, sizeof *b);
    if (b) b->perm = ad__malloc((size_t)ds->n * sizeof(int64_t));
    if (!b || !b->perm) {
        ad__free(b);
        nn_error_set(err, AD_ERR_NOMEM, "nn_batcher_new: out of memory for %lld rows", (long long)ds->n);
        return NULL;
    }
    b->ds = ds;
    b->batch = batch;
    b->shuffle = shuffle;
    ad_rng_seed(&b->rng, seed);
    batcher_order(b);
    return b;
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

int64_t nn_batcher_next(nn_batcher *b, ad_tensor *x, int64_t *labels)
{
    if (!b || !x || x->ndim != 2 || x->shape[1] != b->ds->dim || x->shape[0] < b->batch ||
        (x->dtype != AD_F32 && x->dtype != AD_F64))
        return -1;
    const nn_dataset *ds = b->ds;
    int64_t rows = ds->n - b->pos < b->batch ? ds->n - b->pos : b->batch;
    int64_t dim = ds->dim;
    for (int64_t r = 0; r < rows; r++) {
        int64_t src = b->perm[b->pos + r];
        if (labels) labels[r] = ds->labels[src];
        if (x->dtype == AD_F32) {
            float *d = (float *)x->data + r * dim;
            if (ds->pixels_u8) {
                pixels_f32(d, ds->pixels_u8 + src * dim, dim);
            } else {
                memcpy(d, ds->features + src * dim, (size_t)dim * sizeof(float));
            }
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

int64_t nn_batcher_num_batches(const nn_batcher *b) { return b ? (b->ds->n + b->batch - 1) / b->batch : 0; }

void nn_batcher_free(nn_batcher *b)
{
    if (!b) return;
    ad__free(b->perm);
    ad__free(b);
}

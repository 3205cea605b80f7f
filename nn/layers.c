/* layers.c: modules for convolutional networks on nn_module.h: conv2d, pools, flatten, reshape, dropout, batch/layer norm, embedding. */
#include "nn_internal.h"

#include <math.h>

static ad_var invalid(ad_tape *t) { return (ad_var){t, AD_NO_NODE, 0}; }

/* ---- conv2d: y = conv2d(x, W) + b ---- */

static ad_var conv_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const ad_conv2d_params *p = nn_module_state(m);
    ad_var y = ad_conv2d_ex(in[0], nn_module_var(m, t, 0), p);
    if (m->nown > 1) { /* the bias */
        int64_t o = m->params[1].value->size;
        y = ad_add(y, ad_reshape(nn_module_var(m, t, 1), 4, (const int64_t[]){1, o, 1, 1}));
    }
    return y;
}

static const nn_module_ops conv_ops = {.kind = "conv2d", .n_inputs = 1, .forward = conv_forward, .free = nn__free_state};

nn_module *nn_conv2d_ex(int64_t in, int64_t out, int64_t kh, int64_t kw, const ad_conv2d_params *p, bool bias,
                        ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (in < 1 || out < 1 || kh < 1 || kw < 1 || !p || !rng || (dtype != AD_F32 && dtype != AD_F64) ||
        p->groups < 1 || in % p->groups || out % p->groups || p->stride_h < 1 || p->stride_w < 1 ||
        p->dilation_h < 1 || p->dilation_w < 1 || p->pad_h < 0 || p->pad_w < 0) {
        nn_error_set(err, AD_ERR_ARG,
                     "nn_conv2d: bad arguments (in %lld, out %lld, kernel %lldx%lld; sizes, strides and dilations "
                     "must be >= 1, padding >= 0, groups dividing in and out, dtype F32 or F64, rng and params set)",
                     (long long)in, (long long)out, (long long)kh, (long long)kw);
        return NULL;
    }
    nn_module *m = nn__module_with_state(&conv_ops, sizeof *p, "nn_conv2d", err);
    if (!m) return NULL;
    *(ad_conv2d_params *)nn_module_state(m) = *p;
    ad_status st = nn__add_filled(m, "weight", dtype, 4, (const int64_t[]){out, in / p->groups, kh, kw}, 0, false, err);
    if (st == AD_OK) st = nn_init_tensor(m->params[0].value, NN_INIT_HE_UNIFORM, 0.0, rng, err);
    if (st == AD_OK && bias) st = nn__add_filled(m, "bias", dtype, 1, (const int64_t[]){out}, 0, false, err);
    if (st != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

nn_module *nn_conv2d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, ad_rng *rng, nn_error *err)
{
    ad_conv2d_params p = {stride, stride, padding, padding, 1, 1, 1};
    return nn_conv2d_ex(in, out, k, k, &p, true, AD_F32, rng, err);
}

/* ---- pools, flatten, reshape: no parameters ---- */

typedef struct shape_mod {
    ad_pool2d_params p;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
} shape_mod;

static ad_var maxpool_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    return ad_max_pool2d_ex(in[0], &((shape_mod *)nn_module_state(m))->p);
}
static ad_var avgpool_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    return ad_avg_pool2d_ex(in[0], &((shape_mod *)nn_module_state(m))->p);
}
static ad_var flatten_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const ad_tensor *v = ad_value(in[0]);
    return v && v->ndim <= 2 ? in[0] : ad_flatten(in[0], 1, -1);
}
static ad_var reshape_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const shape_mod *s = nn_module_state(m);
    const ad_tensor *v = ad_value(in[0]);
    int64_t shape[AD_MAX_DIMS];
    shape[0] = v && v->ndim > 0 ? v->shape[0] : 1;
    memcpy(shape + 1, s->shape, (size_t)s->ndim * sizeof *shape);
    return ad_reshape(in[0], s->ndim + 1, shape);
}

#define SHAPE_OPS(NAME, FWD) {.kind = NAME, .n_inputs = 1, .forward = FWD, .free = nn__free_state}
static const nn_module_ops maxpool_ops = SHAPE_OPS("max_pool2d", maxpool_forward);
static const nn_module_ops avgpool_ops = SHAPE_OPS("avg_pool2d", avgpool_forward);
static const nn_module_ops flatten_ops = SHAPE_OPS("flatten", flatten_forward);
static const nn_module_ops reshape_ops = SHAPE_OPS("reshape", reshape_forward);

static nn_module *shape_new(const nn_module_ops *ops, int64_t k, int64_t stride, int64_t padding, nn_error *err)
{
    if ((ops == &maxpool_ops || ops == &avgpool_ops) && (k < 1 || stride < 0 || padding < 0 || 2 * padding > k)) {
        nn_error_set(err, AD_ERR_ARG, "nn_%s: window %lld, stride %lld, padding %lld (k >= 1, stride >= 0, 2 padding <= k)",
                     ops->kind, (long long)k, (long long)stride, (long long)padding);
        return NULL;
    }
    nn_module *m = nn__module_with_state(ops, sizeof(shape_mod), ops->kind, err);
    if (m) ((shape_mod *)nn_module_state(m))->p = (ad_pool2d_params){k, k, stride, stride, padding, padding};
    return m;
}

nn_module *nn_max_pool2d(int64_t k, int64_t stride, int64_t padding, nn_error *err)
{
    return shape_new(&maxpool_ops, k, stride, padding, err);
}
nn_module *nn_avg_pool2d(int64_t k, int64_t stride, int64_t padding, nn_error *err)
{
    return shape_new(&avgpool_ops, k, stride, padding, err);
}
nn_module *nn_flatten(nn_error *err) { return shape_new(&flatten_ops, 0, 0, 0, err); }

nn_module *nn_reshape(int ndim, const int64_t *shape, nn_error *err)
{
    bool ok = ndim >= 1 && ndim < AD_MAX_DIMS && shape;
    for (int i = 0; ok && i < ndim; i++) ok = shape[i] >= 0;
    if (!ok) {
        nn_error_set(err, AD_ERR_ARG, "nn_reshape: %d dimensions (1 to %d, sizes >= 0)", ndim, AD_MAX_DIMS - 1);
        return NULL;
    }
    nn_module *m = shape_new(&reshape_ops, 0, 0, 0, err);
    if (!m) return NULL;
    shape_mod *s = nn_module_state(m);
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    return m;
}

/* ---- dropout ---- */

typedef struct dropout {
    double p;
    ad_rng rng;
} dropout;

static ad_var dropout_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    dropout *d = nn_module_state(m);
    return ad_dropout(in[0], d->p, m->training, &d->rng);
}

static const nn_module_ops dropout_ops = {.kind = "dropout", .n_inputs = 1, .forward = dropout_forward,
                                          .free = nn__free_state};

nn_module *nn_dropout(double p, uint64_t seed, nn_error *err)
{
    if (!(p >= 0.0 && p < 1.0)) {
        nn_error_set(err, AD_ERR_ARG, "nn_dropout: probability %g is not in [0, 1)", p);
        return NULL;
    }
    nn_module *m = nn__module_with_state(&dropout_ops, sizeof(dropout), "nn_dropout", err);
    if (!m) return NULL;
    dropout *d = nn_module_state(m);
    d->p = p;
    ad_rng_seed(&d->rng, seed);
    return m;
}

/* ---- batch and layer normalization ---- */

typedef struct norm {
    double momentum, eps;
    int ndim; /* layer norm: normalized axes */
} norm;

static ad_var batchnorm_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    norm *b = nn_module_state(m);
    return ad_batch_norm(in[0], nn_module_var(m, t, 0), nn_module_var(m, t, 1), m->params[2].value,
                         m->params[3].value, m->training, b->momentum, b->eps);
}

static ad_var layernorm_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    norm *l = nn_module_state(m);
    return ad_layer_norm(in[0], nn_module_var(m, t, 0), nn_module_var(m, t, 1), l->ndim, l->eps);
}

static const nn_module_ops batchnorm_ops = {.kind = "batch_norm2d", .n_inputs = 1, .forward = batchnorm_forward,
                                            .free = nn__free_state};
static const nn_module_ops layernorm_ops = {.kind = "layer_norm", .n_inputs = 1, .forward = layernorm_forward,
                                            .free = nn__free_state};

nn_module *nn_batch_norm2d(int64_t channels, double momentum, double eps, nn_error *err)
{
    return nn_batch_norm2d_ex(channels, momentum, eps, AD_F32, err);
}

nn_module *nn_batch_norm2d_ex(int64_t channels, double momentum, double eps, ad_dtype dtype, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (channels < 1 || !(momentum >= 0.0 && momentum <= 1.0) || !(eps >= 0.0) || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG,
                     "nn_batch_norm2d: channels %lld >= 1, momentum %g in [0, 1], eps %g >= 0, dtype F32 or F64",
                     (long long)channels, momentum, eps);
        return NULL;
    }
    nn_module *m = nn__module_with_state(&batchnorm_ops, sizeof(norm), "nn_batch_norm2d", err);
    if (!m) return NULL;
    norm *b = nn_module_state(m);
    b->momentum = momentum;
    b->eps = eps;
    const int64_t c[1] = {channels};
    if (nn__add_filled(m, "weight", dtype, 1, c, 1.0, false, err) != AD_OK ||
        nn__add_filled(m, "bias", dtype, 1, c, 0.0, false, err) != AD_OK ||
        nn__add_filled(m, "running_mean", dtype, 1, c, 0.0, true, err) != AD_OK ||
        nn__add_filled(m, "running_var", dtype, 1, c, 1.0, true, err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

nn_module *nn_layer_norm(int ndim, const int64_t *shape, double eps, nn_error *err)
{
    return nn_layer_norm_ex(ndim, shape, eps, AD_F32, err);
}

nn_module *nn_layer_norm_ex(int ndim, const int64_t *shape, double eps, ad_dtype dtype, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    bool ok = ndim >= 1 && ndim <= AD_MAX_DIMS && shape && eps >= 0.0 && (dtype == AD_F32 || dtype == AD_F64);
    for (int i = 0; ok && i < ndim; i++) ok = shape[i] >= 1;
    if (!ok) {
        nn_error_set(err, AD_ERR_ARG, "nn_layer_norm: %d axes (1 to %d, sizes >= 1), eps %g >= 0, dtype F32 or F64",
                     ndim, AD_MAX_DIMS, eps);
        return NULL;
    }
    nn_module *m = nn__module_with_state(&layernorm_ops, sizeof(norm), "nn_layer_norm", err);
    if (!m) return NULL;
    norm *l = nn_module_state(m);
    l->eps = eps;
    l->ndim = ndim;
    if (nn__add_filled(m, "weight", dtype, ndim, shape, 1.0, false, err) != AD_OK ||
        nn__add_filled(m, "bias", dtype, ndim, shape, 0.0, false, err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- embedding ---- */

static ad_var embedding_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const ad_tensor *ids = ad_value(in[0]), *w = m->params[0].value;
    if (!ids) return invalid(t);
    int64_t *idx = ids->size ? ad__tape_alloc(t, (size_t)ids->size * sizeof *idx) : NULL;
    if (ids->size && !idx) return invalid(t);
    for (int64_t i = 0; i < ids->size; i++) {
        double v = ad_tensor_get(ids, i);
        if (!(v >= 0 && v < (double)w->shape[0]) || v != floor(v)) {
            ad__fail(t, AD_ERR_INDEX, "nn_forward(embedding): id %g at position %lld is not an integer in [0, %lld)", v,
                     (long long)i, (long long)w->shape[0]);
            return invalid(t);
        }
        idx[i] = (int64_t)v;
    }
    ad_var y = ad_embedding(nn_module_var(m, t, 0), ids->size, idx);
    if (ids->ndim >= AD_MAX_DIMS) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(embedding): the ids have too many dimensions (%d)", ids->ndim);
        return invalid(t);
    }
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, ids->shape, (size_t)ids->ndim * sizeof *shape);
    shape[ids->ndim] = w->shape[1];
    return ad_reshape(y, ids->ndim + 1, shape);
}

static const nn_module_ops embedding_ops = {.kind = "embedding", .n_inputs = 1, .forward = embedding_forward};

nn_module *nn_embedding(int64_t num, int64_t dim, ad_rng *rng, nn_error *err)
{
    return nn_embedding_ex(num, dim, AD_F32, rng, err);
}

nn_module *nn_embedding_ex(int64_t num, int64_t dim, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (num < 1 || dim < 1 || !rng || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG, "nn_embedding: %s", rng ? "sizes must be >= 1, dtype F32 or F64" : "NULL rng");
        return NULL;
    }
    nn_module *m = nn_module_new(&embedding_ops, NULL, err);
    if (!m) return NULL;
    if (nn__add_filled(m, "weight", dtype, 2, (const int64_t[]){num, dim}, 0, false, err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    ad_rng_fill_normal(rng, m->params[0].value, 0.0, 1.0);
    return m;
}

/* layers.c: modules for convolutional networks: conv2d, pools, flatten, reshape, dropout, batch/layer norm, embedding. */
#include "nn_internal.h"

#include <math.h>

/* A parameter with a gradient (or a buffer when with_grad is false), dtype dt, filled with v. */
static ad_status add_tensor(nn_module *m, const char *name, ad_dtype dt, int nd, const int64_t *shape, double v,
                            bool with_grad)
{
    ad_tensor *val = ad_tensor_new(dt, nd, shape), *g = NULL;
    if (with_grad && val && !(g = ad_tensor_new(dt, nd, shape))) {
        ad_tensor_free(val);
        return AD_ERR_NOMEM;
    }
    if (val) ad_tensor_fill(val, v);
    return nn__module_add_param(m, name, val, g);
}

static ad_var invalid(ad_tape *t) { return (ad_var){t, AD_NO_NODE, 0}; }

/* The parameter i of m as a var on t. */
static ad_var param(nn_module *m, ad_tape *t, int i) { return ad_param(t, m->params[i].value, m->params[i].grad); }

void nn_set_training(nn_module *m, bool training) { nn_module_set_training(m, training); }

/* ---- conv2d: y = conv2d(x, W) + b ---- */

typedef struct conv {
    nn_module base;
    ad_conv2d_params p;
    bool bias;
} conv;

static ad_var conv_forward(nn_module *m, ad_tape *t, ad_var x)
{
    conv *c = (conv *)m;
    ad_var w = param(m, t, 0);
    ad_var y = ad_conv2d_ex(x, w, &c->p);
    if (c->bias) {
        int64_t o = m->params[1].value->size;
        y = ad_add(y, ad_reshape(param(m, t, 1), 4, (const int64_t[]){1, o, 1, 1}));
    }
    return y;
}

static const nn_module_vtable conv_vt = {"conv2d", conv_forward, NULL, NULL};

nn_module *nn_conv2d_ex(int64_t in, int64_t out, int64_t kh, int64_t kw, const ad_conv2d_params *p, bool bias,
                        ad_dtype dtype, ad_rng *rng)
{
    if (in < 1 || out < 1 || kh < 1 || kw < 1 || !p || !rng || ad_dtype_size(dtype) == 0 || p->groups < 1 ||
        in % p->groups || out % p->groups || p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 ||
        p->dilation_w < 1 || p->pad_h < 0 || p->pad_w < 0)
        return NULL;
    conv *c = ad__calloc(1, sizeof *c);
    if (!c) return NULL;
    nn__module_init(&c->base, &conv_vt);
    c->p = *p;
    c->bias = bias;
    if (add_tensor(&c->base, "weight", dtype, 4, (const int64_t[]){out, in / p->groups, kh, kw}, 0, true) != AD_OK ||
        nn_init_he_uniform(c->base.params[0].value, 0.0, rng) != AD_OK)
        goto fail;
    if (bias && add_tensor(&c->base, "bias", dtype, 1, (const int64_t[]){out}, 0, true) != AD_OK) goto fail;
    return &c->base;
fail:
    nn_module_free(&c->base);
    return NULL;
}

nn_module *nn_conv2d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, ad_rng *rng)
{
    ad_conv2d_params p = {stride, stride, padding, padding, 1, 1, 1};
    return nn_conv2d_ex(in, out, k, k, &p, true, AD_F32, rng);
}

/* ---- pools, flatten, reshape: no parameters ---- */

typedef struct shape_mod {
    nn_module base;
    ad_pool2d_params p;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
} shape_mod;

static ad_var maxpool_forward(nn_module *m, ad_tape *t, ad_var x) { return ad_max_pool2d_ex(x, &((shape_mod *)m)->p); }
static ad_var avgpool_forward(nn_module *m, ad_tape *t, ad_var x) { return ad_avg_pool2d_ex(x, &((shape_mod *)m)->p); }
static ad_var flatten_forward(nn_module *m, ad_tape *t, ad_var x)
{
    const ad_tensor *v = ad_value(x);
    return v && v->ndim <= 2 ? x : ad_flatten(x, 1, -1);
}
static ad_var reshape_forward(nn_module *m, ad_tape *t, ad_var x)
{
    const shape_mod *s = (const shape_mod *)m;
    const ad_tensor *v = ad_value(x);
    int64_t shape[AD_MAX_DIMS];
    shape[0] = v && v->ndim > 0 ? v->shape[0] : 1;
    memcpy(shape + 1, s->shape, (size_t)s->ndim * sizeof *shape);
    return ad_reshape(x, s->ndim + 1, shape);
}

static const nn_module_vtable maxpool_vt = {"max_pool2d", maxpool_forward, NULL, NULL};
static const nn_module_vtable avgpool_vt = {"avg_pool2d", avgpool_forward, NULL, NULL};
static const nn_module_vtable flatten_vt = {"flatten", flatten_forward, NULL, NULL};
static const nn_module_vtable reshape_vt = {"reshape", reshape_forward, NULL, NULL};

static nn_module *shape_new(const nn_module_vtable *vt, int64_t k, int64_t stride, int64_t padding)
{
    if (vt != &flatten_vt && vt != &reshape_vt && (k < 1 || stride < 0 || padding < 0 || 2 * padding > k)) return NULL;
    shape_mod *s = ad__calloc(1, sizeof *s);
    if (!s) return NULL;
    nn__module_init(&s->base, vt);
    s->p = (ad_pool2d_params){k, k, stride, stride, padding, padding};
    return &s->base;
}

nn_module *nn_max_pool2d(int64_t k, int64_t stride, int64_t padding) { return shape_new(&maxpool_vt, k, stride, padding); }
nn_module *nn_avg_pool2d(int64_t k, int64_t stride, int64_t padding) { return shape_new(&avgpool_vt, k, stride, padding); }
nn_module *nn_flatten(void) { return shape_new(&flatten_vt, 0, 0, 0); }

nn_module *nn_reshape(int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim >= AD_MAX_DIMS || !shape) return NULL;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return NULL;
    shape_mod *s = (shape_mod *)shape_new(&reshape_vt, 0, 0, 0);
    if (!s) return NULL;
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    return &s->base;
}

/* ---- dropout ---- */

typedef struct dropout {
    nn_module base;
    double p;
    ad_rng rng;
} dropout;

static ad_var dropout_forward(nn_module *m, ad_tape *t, ad_var x)
{
    dropout *d = (dropout *)m;
    return ad_dropout(x, d->p, m->training, &d->rng);
}

static const nn_module_vtable dropout_vt = {"dropout", dropout_forward, NULL, NULL};

nn_module *nn_dropout(double p, uint64_t seed)
{
    if (!(p >= 0.0 && p < 1.0)) return NULL;
    dropout *d = ad__calloc(1, sizeof *d);
    if (!d) return NULL;
    nn__module_init(&d->base, &dropout_vt);
    d->p = p;
    ad_rng_seed(&d->rng, seed);
    return &d->base;
}

/* ---- batch and layer normalization ---- */

typedef struct norm {
    nn_module base;
    double momentum, eps;
    int ndim; /* layer norm: normalized axes */
} norm;

static ad_var batchnorm_forward(nn_module *m, ad_tape *t, ad_var x)
{
    norm *b = (norm *)m;
    return ad_batch_norm(x, param(m, t, 0), param(m, t, 1), m->params[2].value, m->params[3].value, m->training,
                         b->momentum, b->eps);
}

static ad_var layernorm_forward(nn_module *m, ad_tape *t, ad_var x)
{
    norm *l = (norm *)m;
    return ad_layer_norm(x, param(m, t, 0), param(m, t, 1), l->ndim, l->eps);
}

static const nn_module_vtable batchnorm_vt = {"batch_norm2d", batchnorm_forward, NULL, NULL};
static const nn_module_vtable layernorm_vt = {"layer_norm", layernorm_forward, NULL, NULL};

nn_module *nn_batch_norm2d(int64_t channels, double momentum, double eps)
{
    if (channels < 1 || !(momentum >= 0.0 && momentum <= 1.0) || !(eps >= 0.0)) return NULL;
    norm *b = ad__calloc(1, sizeof *b);
    if (!b) return NULL;
    nn__module_init(&b->base, &batchnorm_vt);
    b->momentum = momentum;
    b->eps = eps;
    const int64_t c[1] = {channels};
    if (add_tensor(&b->base, "weight", AD_F32, 1, c, 1.0, true) != AD_OK ||
        add_tensor(&b->base, "bias", AD_F32, 1, c, 0.0, true) != AD_OK ||
        add_tensor(&b->base, "running_mean", AD_F32, 1, c, 0.0, false) != AD_OK ||
        add_tensor(&b->base, "running_var", AD_F32, 1, c, 1.0, false) != AD_OK) {
        nn_module_free(&b->base);
        return NULL;
    }
    return &b->base;
}

nn_module *nn_layer_norm(int ndim, const int64_t *shape, double eps)
{
    if (ndim < 1 || ndim > AD_MAX_DIMS || !shape || !(eps >= 0.0)) return NULL;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1) return NULL;
    norm *l = ad__calloc(1, sizeof *l);
    if (!l) return NULL;
    nn__module_init(&l->base, &layernorm_vt);
    l->eps = eps;
    l->ndim = ndim;
    if (add_tensor(&l->base, "weight", AD_F32, ndim, shape, 1.0, true) != AD_OK ||
        add_tensor(&l->base, "bias", AD_F32, ndim, shape, 0.0, true) != AD_OK) {
        nn_module_free(&l->base);
        return NULL;
    }
    return &l->base;
}

/* ---- embedding ---- */

static ad_var embedding_forward(nn_module *m, ad_tape *t, ad_var x)
{
    const ad_tensor *ids = ad_value(x), *w = m->params[0].value;
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
    ad_var y = ad_embedding(param(m, t, 0), ids->size, idx);
    if (ids->ndim >= AD_MAX_DIMS) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(embedding): the ids have too many dimensions (%d)", ids->ndim);
        return invalid(t);
    }
    int64_t shape[AD_MAX_DIMS];
    memcpy(shape, ids->shape, (size_t)ids->ndim * sizeof *shape);
    shape[ids->ndim] = w->shape[1];
    return ad_reshape(y, ids->ndim + 1, shape);
}

static const nn_module_vtable embedding_vt = {"embedding", embedding_forward, NULL, NULL};

nn_module *nn_embedding(int64_t num, int64_t dim, ad_rng *rng)
{
    if (num < 1 || dim < 1 || !rng) return NULL;
    nn_module *m = ad__calloc(1, sizeof *m);
    if (!m) return NULL;
    nn__module_init(m, &embedding_vt);
    if (add_tensor(m, "weight", AD_F32, 2, (const int64_t[]){num, dim}, 0, true) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    ad_rng_fill_normal(rng, m->params[0].value, 0.0, 1.0);
    return m;
}

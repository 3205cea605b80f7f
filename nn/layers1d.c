/* layers1d.c: the 1-D convolution and group normalization modules, on the public module interface. */
#include "services.h"
#include "nn.h"

static void free_state(nn_module *m) { ad__free(nn_module_state(m)); }

/* ---- conv1d: y = conv1d(x, W) + b ---- */

typedef struct conv1d {
    int64_t stride, padding, dilation, groups;
    bool bias;
} conv1d;

static ad_var conv1d_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const conv1d *c = nn_module_state(m);
    ad_var y = ad_conv1d(in[0], nn_module_var(m, t, 0), c->stride, c->padding, c->dilation, c->groups);
    if (c->bias) {
        ad_var b = nn_module_var(m, t, 1);
        const ad_tensor *bv = ad_value(b);
        if (!bv) return ad__no_var(t);
        y = ad_add(y, ad_reshape(b, 2, (const int64_t[]){bv->size, 1}));
    }
    return y;
}

static const nn_module_ops conv1d_ops = {.kind = "conv1d", .n_inputs = 1, .forward = conv1d_forward,
                                         .free = free_state};

nn_module *nn_conv1d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation,
                     int64_t groups, bool bias, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    static const char fn[] = "nn_conv1d";
    if (in < 1 || out < 1 || k < 1 || stride < 1 || padding < 0 || dilation < 1 || groups < 1 || in % groups ||
        out % groups || !rng || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG,
                     "%s: in %lld, out %lld, kernel %lld, stride %lld, padding %lld, dilation %lld, groups %lld (sizes, "
                     "stride, dilation >= 1, padding >= 0, groups dividing in and out, dtype F32 or F64, rng set)",
                     fn, (long long)in, (long long)out, (long long)k, (long long)stride, (long long)padding,
                     (long long)dilation, (long long)groups);
        return NULL;
    }
    conv1d *c = ad__calloc(1, sizeof *c);
    if (!c) {
        nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    *c = (conv1d){stride, padding, dilation, groups, bias};
    nn_module *m = nn_module_new(&conv1d_ops, c, err);
    if (!m) return NULL;
    ad_tensor *w = ad_tensor_new(dtype, AD_SHAPE(out, in / groups, k));
    ad_tensor *b = bias ? ad_tensor_new(dtype, AD_SHAPE(out)) : NULL;
    if (w && nn_init_tensor(w, NN_INIT_HE_UNIFORM, 0.0, rng, err) != AD_OK) {
        ad_tensor_free(w);
        w = NULL;
    }
    bool ok = nn_module_add_param(m, "weight", w, true, err) != NULL;
    if (bias) ok = (nn_module_add_param(m, "bias", b, true, err) != NULL) & ok;
    if (!ok) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- group normalization ---- */

typedef struct group_norm {
    int64_t groups;
    double eps;
} group_norm;

static ad_var group_norm_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const group_norm *g = nn_module_state(m);
    return ad_group_norm(in[0], g->groups, nn_module_var(m, t, 0), nn_module_var(m, t, 1), g->eps);
}

static const nn_module_ops group_norm_ops = {.kind = "group_norm", .n_inputs = 1, .forward = group_norm_forward,
                                             .free = free_state};

nn_module *nn_group_norm(int64_t groups, int64_t channels, double eps, ad_dtype dtype, nn_error *err)
{
    static const char fn[] = "nn_group_norm";
    if (groups < 1 || channels < 1 || channels % groups || !(eps >= 0.0) || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG,
                     "%s: %lld groups of %lld channels, eps %g (groups >= 1 dividing channels, eps >= 0, dtype F32 or "
                     "F64)",
                     fn, (long long)groups, (long long)channels, eps);
        return NULL;
    }
    group_norm *g = ad__calloc(1, sizeof *g);
    if (!g) {
        nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    *g = (group_norm){groups, eps};
    nn_module *m = nn_module_new(&group_norm_ops, g, err);
    if (!m) return NULL;
    ad_tensor *w = ad_tensor_new(dtype, AD_SHAPE(channels)), *b = ad_tensor_new(dtype, AD_SHAPE(channels));
    if (w) ad_tensor_fill(w, 1.0);
    bool ok = nn_module_add_param(m, "weight", w, true, err) != NULL;
    ok = (nn_module_add_param(m, "bias", b, true, err) != NULL) & ok;
    if (!ok) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* attention.c: multi-head attention, the pre-norm transformer block and positional embeddings, on the public module interface. */
#include "services.h"
#include "nn.h"

#include <math.h>

static ad_var invalid(ad_tape *t) { return ad__no_var(t); }
static void free_state(nn_module *m) { ad__free(nn_module_state(m)); }

/* A zeroed state of size bytes, or NULL with "fn: out of memory" in err. */
static void *new_state(size_t size, const char *fn, nn_error *err)
{
    void *s = ad__calloc(1, size);
    if (!s) nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
    return s;
}

/* A parameter of dtype dt and shape, filled by init (NULL: zeros). */
static bool add_param(nn_module *m, const char *name, ad_dtype dt, int nd, const int64_t *shape, nn_init init,
                      ad_rng *rng, nn_error *err)
{
    ad_tensor *v = ad_tensor_new(dt, nd, shape);
    if (v && init != NN_INIT_ZEROS && nn_init_tensor(v, init, 1.0, rng, err) != AD_OK) {
        ad_tensor_free(v);
        return false;
    }
    return nn_module_add_param(m, name, v, true, err) != NULL;
}

/* x must be [N, T, d]: otherwise an error on the tape naming the module. */
static bool seq_ok(ad_tape *t, const char *kind, const char *what, ad_var x, int64_t d)
{
    const ad_tensor *v = ad_value(x);
    if (v && v->ndim == 3 && v->shape[2] == d) return true;
    char s[96];
    if (v)
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(%s): %s %s is not [N, T, %lld]", kind, what,
                 ad_shape_str(v->ndim, v->shape, s, sizeof s), (long long)d);
    return false;
}

/* ---- multi-head attention ---- */

typedef struct mha {
    int64_t d, heads;
    bool causal;
} mha;

/* [N, T, H dh] -> [N, H, T, dh] */
static ad_var split_heads(ad_var x, int64_t heads)
{
    const ad_tensor *v = ad_value(x);
    if (!v) return x;
    int64_t n = v->shape[0], tt = v->shape[1], dh = v->shape[2] / heads;
    return ad_transpose(ad_reshape(x, 4, (const int64_t[]){n, tt, heads, dh}), 1, 2);
}

/*
** Inputs: (x), (x, mask), (query, key, value) or (query, key, value, mask); x, query [N, Tq, d],
** key and value [N, Tk, d]; mask additive, broadcasting to [N, heads, Tq, Tk] (ad_attention).
** q, k, v = the input projections (one product for self-attention), split into heads, attended,
** merged and projected by out_proj.
*/
static ad_var mha_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const mha *s = nn_module_state(m);
    if (n > 4) {
        ad__fail(t, AD_ERR_ARG, "nn_forward(multihead_attention): %d inputs (x [, mask] or q, k, v [, mask])", n);
        return invalid(t);
    }
    bool self = n <= 2;
    ad_var mask = (n == 2 || n == 4) ? in[n - 1] : AD_NO_VAR;
    ad_var w = nn_module_var(m, t, 0), b = nn_module_var(m, t, 1), q, k, v;
    int64_t d = s->d;
    if (self) {
        if (!seq_ok(t, "multihead_attention", "input", in[0], d)) return invalid(t);
        ad_var qkv = ad_add(ad_matmul_t(in[0], w, false, true), b);
        q = ad_slice(qkv, 2, 0, d);
        k = ad_slice(qkv, 2, d, 2 * d);
        v = ad_slice(qkv, 2, 2 * d, 3 * d);
    } else {
        static const char *const what[3] = {"query", "key", "value"};
        for (int i = 0; i < 3; i++)
            if (!seq_ok(t, "multihead_attention", what[i], in[i], d)) return invalid(t);
        ad_var p[3];
        for (int i = 0; i < 3; i++)
            p[i] = ad_add(ad_matmul_t(in[i], ad_slice(w, 0, i * d, (i + 1) * d), false, true),
                          ad_slice(b, 0, i * d, (i + 1) * d));
        q = p[0], k = p[1], v = p[2];
    }
    ad_var y = ad_attention(split_heads(q, s->heads), split_heads(k, s->heads), split_heads(v, s->heads), mask,
                            s->causal, 0.0);
    const ad_tensor *yv = ad_value(y);
    if (!yv) return invalid(t);
    y = ad_reshape(ad_transpose(y, 1, 2), 3, (const int64_t[]){yv->shape[0], yv->shape[2], d});
    return nn_forward(nn_module_child(m, 0), t, y);
}

static const nn_module_ops mha_ops = {.kind = "multihead_attention", .n_inputs = 0, .forward = mha_forward,
                                      .free = free_state};

nn_module *nn_multihead_attention(int64_t d_model, int64_t heads, bool causal, ad_dtype dtype, ad_rng *rng,
                                  nn_error *err)
{
    static const char fn[] = "nn_multihead_attention";
    if (d_model < 1 || heads < 1 || d_model % heads || !rng || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG,
                     "%s: d_model %lld, %lld heads (sizes >= 1, d_model divisible by heads, rng set, dtype F32 or F64)",
                     fn, (long long)d_model, (long long)heads);
        return NULL;
    }
    mha *s = new_state(sizeof *s, fn, err);
    if (!s) return NULL;
    *s = (mha){d_model, heads, causal};
    nn_module *m = nn_module_new(&mha_ops, s, err);
    if (!m) return NULL;
    if (!add_param(m, "in_proj_weight", dtype, 2, (const int64_t[]){3 * d_model, d_model}, NN_INIT_XAVIER_UNIFORM,
                   rng, err) ||
        !add_param(m, "in_proj_bias", dtype, 1, (const int64_t[]){3 * d_model}, NN_INIT_ZEROS, rng, err) ||
        nn_module_add_child(m, "out_proj",
                            nn_linear_ex(d_model, d_model, true, NN_INIT_XAVIER_UNIFORM, 1.0, dtype, rng, err),
                            err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    /* out_proj's bias starts at zero, as PyTorch's */
    ad_tensor_fill(nn_module_param(m, "out_proj.bias")->value, 0.0);
    return m;
}

/* ---- the transformer block: pre-norm, attention and MLP, each on a residual path ---- */

typedef struct block {
    double dropout;
    ad_rng rng;
} block;

enum { NORM1, SELF_ATTN, NORM2, LINEAR1, LINEAR2 };

/* x + dropout(attn(norm1(x)[, mask])), then h + dropout(linear2(gelu(linear1(norm2(h))))) */
static ad_var block_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    block *s = nn_module_state(m);
    if (n > 2) {
        ad__fail(t, AD_ERR_ARG, "nn_forward(transformer_block): %d inputs (x, or x and a mask)", n);
        return invalid(t);
    }
    bool train = nn_module_training(m);
    ad_var x = in[0];
    ad_var a[2] = {nn_forward(nn_module_child(m, NORM1), t, x), n == 2 ? in[1] : AD_NO_VAR};
    ad_var h = ad_add(x, ad_dropout(nn_forward_n(nn_module_child(m, SELF_ATTN), t, n, a), s->dropout, train, &s->rng));
    ad_var f = nn_forward(nn_module_child(m, LINEAR1), t, nn_forward(nn_module_child(m, NORM2), t, h));
    f = nn_forward(nn_module_child(m, LINEAR2), t, ad_gelu(f));
    return ad_add(h, ad_dropout(f, s->dropout, train, &s->rng));
}

static const nn_module_ops block_ops = {.kind = "transformer_block", .n_inputs = 0, .forward = block_forward,
                                        .free = free_state};

nn_transformer_opts nn_transformer_defaults(int64_t d_model, int64_t heads)
{
    return (nn_transformer_opts){d_model, heads, 4 * d_model, 0.1, false, 1e-5, AD_F32, 1};
}

nn_module *nn_transformer_block(const nn_transformer_opts *o, ad_rng *rng, nn_error *err)
{
    static const char fn[] = "nn_transformer_block";
    if (!o || o->d_model < 1 || o->heads < 1 || o->d_model % o->heads || o->d_ff < 1 ||
        !(o->dropout >= 0.0 && o->dropout < 1.0) || !(o->eps >= 0.0) || !rng ||
        (o->dtype != AD_F32 && o->dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG,
                     "%s: bad options (d_model and d_ff >= 1, d_model divisible by heads, dropout in [0, 1), eps >= 0, "
                     "dtype F32 or F64, rng set)",
                     fn);
        return NULL;
    }
    block *s = new_state(sizeof *s, fn, err);
    if (!s) return NULL;
    s->dropout = o->dropout;
    ad_rng_seed(&s->rng, o->seed);
    nn_module *m = nn_module_new(&block_ops, s, err);
    if (!m) return NULL;
    const int64_t d = o->d_model;
    nn_init he = NN_INIT_HE_UNIFORM;
    if (nn_module_add_child(m, "norm1", nn_layer_norm_ex(1, &d, o->eps, o->dtype, err), err) != AD_OK ||
        nn_module_add_child(m, "self_attn", nn_multihead_attention(d, o->heads, o->causal, o->dtype, rng, err), err) !=
            AD_OK ||
        nn_module_add_child(m, "norm2", nn_layer_norm_ex(1, &d, o->eps, o->dtype, err), err) != AD_OK ||
        nn_module_add_child(m, "linear1", nn_linear_ex(d, o->d_ff, true, he, 0.0, o->dtype, rng, err), err) != AD_OK ||
        nn_module_add_child(m, "linear2", nn_linear_ex(o->d_ff, d, true, NN_INIT_XAVIER_UNIFORM, 1.0, o->dtype, rng, err),
                            err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- positional embeddings ---- */

typedef struct positional {
    int64_t max_len, d;
} positional;

/* The positions of x [..., T, d]: T into *len, or false with an error on the tape. */
static bool positions(ad_tape *t, const char *kind, const positional *s, ad_var x, int64_t *len)
{
    const ad_tensor *v = ad_value(x);
    char sh[96];
    if (!v) return false;
    if (v->ndim < 2 || v->shape[v->ndim - 1] != s->d || (s->max_len > 0 && v->shape[v->ndim - 2] > s->max_len)) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(%s): input %s is not [..., T, %lld]%s%lld", kind,
                 ad_shape_str(v->ndim, v->shape, sh, sizeof sh), (long long)s->d,
                 s->max_len > 0 ? " with T <= " : "", (long long)(s->max_len > 0 ? s->max_len : 0));
        return false;
    }
    *len = v->shape[v->ndim - 2];
    return true;
}

/* learned: y = x + weight[0:T] */
static ad_var learned_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    int64_t len;
    if (!positions(t, "learned_positional", nn_module_state(m), in[0], &len)) return invalid(t);
    return ad_add(in[0], ad_slice(nn_module_var(m, t, 0), 0, 0, len));
}

/* sinusoidal: y = x + PE, PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), a constant */
static ad_var sinusoidal_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const positional *s = nn_module_state(m);
    int64_t len;
    if (!positions(t, "sinusoidal_positional", s, in[0], &len)) return invalid(t);
    ad_dtype dt = ad_value(in[0])->dtype;
    int64_t shape[2] = {len, s->d};
    ad_tensor *pe = ad__tape_alloc(t, sizeof *pe);
    void *data = ad__tape_alloc(t, (size_t)(len * s->d) * ad_dtype_size(dt) + 1);
    if (!pe || !data) return invalid(t);
    ad__tensor_init(pe, dt, 2, shape, len * s->d);
    pe->data = data;
    for (int64_t p = 0; p < len; p++)
        for (int64_t i = 0; i < s->d; i++) {
            double ang = (double)p / pow(10000.0, (double)(i - i % 2) / (double)s->d);
            ad_tensor_set(pe, p * s->d + i, i % 2 ? cos(ang) : sin(ang));
        }
    return ad_add(in[0], ad_const(t, pe));
}

static const nn_module_ops learned_ops = {.kind = "learned_positional", .n_inputs = 1, .forward = learned_forward,
                                          .free = free_state};
static const nn_module_ops sinusoidal_ops = {.kind = "sinusoidal_positional", .n_inputs = 1,
                                             .forward = sinusoidal_forward, .free = free_state};

nn_module *nn_positional_learned(int64_t max_len, int64_t d, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    static const char fn[] = "nn_positional_learned";
    if (max_len < 1 || d < 1 || !rng || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG, "%s: max_len %lld, d %lld (>= 1), rng set, dtype F32 or F64", fn,
                     (long long)max_len, (long long)d);
        return NULL;
    }
    positional *s = new_state(sizeof *s, fn, err);
    if (!s) return NULL;
    *s = (positional){max_len, d};
    nn_module *m = nn_module_new(&learned_ops, s, err);
    if (!m) return NULL;
    ad_tensor *w = ad_tensor_new(dtype, AD_SHAPE(max_len, d));
    if (w) ad_rng_fill_normal(rng, w, 0.0, 0.02);
    if (!nn_module_add_param(m, "weight", w, true, err)) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

nn_module *nn_positional_sinusoidal(int64_t d, nn_error *err)
{
    static const char fn[] = "nn_positional_sinusoidal";
    if (d < 1) {
        nn_error_set(err, AD_ERR_ARG, "%s: d %lld must be >= 1", fn, (long long)d);
        return NULL;
    }
    positional *s = new_state(sizeof *s, fn, err);
    if (!s) return NULL;
    *s = (positional){0, d};
    return nn_module_new(&sinusoidal_ops, s, err);
}

/* ---- images as sequences ---- */

/* [N, C, H, W] -> [N, H W, C]: each position a token, its channels the features */
static ad_var tokens_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const ad_tensor *v = ad_value(in[0]);
    char s[96];
    if (!v || v->ndim != 4) {
        if (v)
            ad__fail(t, AD_ERR_SHAPE, "nn_forward(tokens_from_image): input %s is not [N, C, H, W]",
                     ad_shape_str(v->ndim, v->shape, s, sizeof s));
        return invalid(t);
    }
    ad_var x = ad_reshape(in[0], 3, (const int64_t[]){v->shape[0], v->shape[1], v->shape[2] * v->shape[3]});
    return ad_transpose(x, 1, 2);
}

static const nn_module_ops tokens_ops = {.kind = "tokens_from_image", .n_inputs = 1, .forward = tokens_forward};

nn_module *nn_tokens_from_image(nn_error *err) { return nn_module_new(&tokens_ops, NULL, err); }

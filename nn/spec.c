/* spec.c: building a convolutional network from a short text spec such as "conv:32:5,pool:2,fc:1024,fc:10". */
#include "nn_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_LAYERS 256
#define MAX_MODS (3 * MAX_LAYERS + 1)

/* Parses up to `want` colon-separated positive integers after the layer's name; returns how many. */
static int numbers(const char *s, int64_t *out, int want)
{
    int n = 0;
    while (*s == ':' && n < want) {
        char *end;
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        if (end == s + 1 || errno || v < 1 || v > (1 << 24)) return -1;
        out[n++] = v;
        s = end;
    }
    return *s == '\0' ? n : -1;
}

/* The module list so far; freed together on failure. */
typedef struct build {
    nn_module *mods[MAX_MODS];
    int n;
    int64_t c, h, w; /* the shape of one sample after the last module; h = w = 0 once flat */
    int64_t tokens;  /* after an attn layer: a sequence of `tokens` positions of c features (h = w = 0) */
    nn_error *err;
} build;

static bool push(build *b, nn_module *m)
{
    if (!m) return false;
    if (b->n == MAX_MODS) {
        nn_module_free(m);
        return false;
    }
    b->mods[b->n++] = m;
    return true;
}

/* One layer "name[:a[:b]]" of the spec; last: whether it is the final layer. */
static bool layer(build *b, const char *tok, bool last, ad_rng *rng)
{
    char name[16];
    size_t len = strcspn(tok, ":");
    int64_t a[3];
    if (len == 0 || len >= sizeof name) goto bad;
    memcpy(name, tok, len);
    name[len] = '\0';
    int k = numbers(tok + len, a, 3);
    bool image = b->h > 0;
    if (strcmp(name, "conv") == 0 && (k == 2 || k == 3) && image) {
        int64_t s = k == 3 ? a[2] : 1, pad = a[1] / 2;
        int64_t oh = (b->h + 2 * pad - a[1]) / s + 1, ow = (b->w + 2 * pad - a[1]) / s + 1;
        if (b->h + 2 * pad < a[1] || b->w + 2 * pad < a[1]) {
            nn_error_set(b->err, AD_ERR_SHAPE, "nn_model_from_spec: '%s' does not fit a %lldx%lld input", tok,
                    (long long)b->h, (long long)b->w);
            return false;
        }
        if (!push(b, nn_conv2d(b->c, a[0], a[1], s, pad, rng, b->err)) || !push(b, nn_activation(NN_RELU, b->err))) goto nomem;
        b->c = a[0], b->h = oh, b->w = ow;
        return true;
    }
    if ((strcmp(name, "pool") == 0 || strcmp(name, "avgpool") == 0) && k == 1 && image) {
        if (b->h < a[0] || b->w < a[0]) {
            nn_error_set(b->err, AD_ERR_SHAPE, "nn_model_from_spec: '%s' does not fit a %lldx%lld input", tok,
                    (long long)b->h, (long long)b->w);
            return false;
        }
        if (!push(b, name[0] == 'p' ? nn_max_pool2d(a[0], a[0], 0, b->err) : nn_avg_pool2d(a[0], a[0], 0, b->err))) goto nomem;
        b->h /= a[0], b->w /= a[0];
        return true;
    }
    if (strcmp(name, "bn") == 0 && k == 0 && image) {
        if (!push(b, nn_batch_norm2d(b->c, 0.1, 1e-5, b->err))) goto nomem;
        return true;
    }
    if (strcmp(name, "dropout") == 0 && k == -1) {
        char *end;
        double p = strtod(tok + len + 1, &end);
        if (tok[len] != ':' || *end || !(p >= 0 && p < 1)) goto bad;
        if (!push(b, nn_dropout(p, ad_rng_u64(rng), b->err))) goto nomem;
        return true;
    }
    if (strcmp(name, "attn") == 0 && (k == 1 || k == 2) && (image || b->tokens > 0)) {
        if (b->c % a[0]) {
            nn_error_set(b->err, AD_ERR_SHAPE, "nn_model_from_spec: '%s': %lld channels do not split into %lld heads",
                         tok, (long long)b->c, (long long)a[0]);
            return false;
        }
        if (image) { /* positions become tokens, with learned position embeddings */
            b->tokens = b->h * b->w, b->h = b->w = 0;
            if (!push(b, nn_tokens_from_image(b->err)) ||
                !push(b, nn_positional_learned(b->tokens, b->c, AD_F32, rng, b->err)))
                goto nomem;
        }
        nn_transformer_opts o = nn_transformer_defaults(b->c, a[0]);
        o.dropout = 0.0;
        if (k == 2) o.d_ff = a[1];
        if (!push(b, nn_transformer_block(&o, rng, b->err))) goto nomem;
        return true;
    }
    if (strcmp(name, "fc") == 0 && k == 1) {
        int64_t in = b->c * (b->h > 0 ? b->h * b->w : b->tokens > 0 ? b->tokens : 1);
        if ((b->h > 0 || b->tokens > 0) && !push(b, nn_flatten(b->err))) goto nomem;
        b->tokens = 0;
        if (!push(b, nn_linear(in, a[0], rng, b->err))) goto nomem;
        if (!last && !push(b, nn_activation(NN_RELU, b->err))) goto nomem;
        b->c = a[0], b->h = b->w = 0;
        return true;
    }
bad:
    nn_error_set(b->err, AD_ERR_ARG,
            "nn_model_from_spec: bad layer '%s' (conv:C:K[:S], pool:K, avgpool:K, bn, dropout:P, attn:H[:F], "
            "fc:N; conv, pool and bn only before the first fc or attn, attn before the first fc)",
            tok);
    return false;
nomem:
    nn_error_set(b->err, AD_ERR_NOMEM, "nn_model_from_spec: out of memory at '%s'", tok);
    return false;
}

nn_module *nn_model_from_spec(const char *spec, int64_t in_channels, int64_t h, int64_t w, ad_rng *rng,
                              nn_error *err)
{
    if (!spec || !rng || in_channels < 1 || h < 1 || w < 1) {
        nn_error_set(err, AD_ERR_ARG, "nn_model_from_spec: %s", !spec || !rng ? "spec or rng is NULL"
                                                                                 : "the input sizes must be positive");
        return NULL;
    }
    size_t len = strlen(spec);
    char *copy = ad__malloc(len + 1);
    build *b = ad__calloc(1, sizeof *b);
    if (!copy || !b) {
        ad__free(copy);
        ad__free(b);
        nn_error_set(err, AD_ERR_NOMEM, "nn_model_from_spec: out of memory");
        return NULL;
    }
    memcpy(copy, spec, len + 1);
    *b = (build){.c = in_channels, .h = h, .w = w, .err = err};
    bool ok = push(b, nn_reshape(3, (const int64_t[]){in_channels, h, w}, err));
    if (!ok) nn_error_set(err, AD_ERR_NOMEM, "nn_model_from_spec: out of memory");
    int layers = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); ok && tok; tok = strtok_r(NULL, ",", &save)) {
        char *next = save && *save ? save : NULL;
        if (++layers > MAX_LAYERS) {
            nn_error_set(err, AD_ERR_ARG, "nn_model_from_spec: more than %d layers", MAX_LAYERS);
            ok = false;
            break;
        }
        ok = layer(b, tok, next == NULL, rng);
    }
    if (ok && layers == 0) {
        nn_error_set(err, AD_ERR_ARG, "nn_model_from_spec: the spec '%s' has no layers", spec);
        ok = false;
    }
    nn_module *net = NULL;
    if (ok) {
        net = nn_sequential(b->n, b->mods, err); /* takes the modules, also on failure */
    } else {
        for (int i = 0; i < b->n; i++) nn_module_free(b->mods[i]);
    }
    ad__free(copy);
    ad__free(b);
    return net;
}

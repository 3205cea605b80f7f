/* fuzz_schemas.h: the tensor sets the safetensors targets expect (names, dtypes, shapes), shared with the seed corpus. */
#ifndef AUTODIFF_FUZZ_SCHEMAS_H
#define AUTODIFF_FUZZ_SCHEMAS_H

#include "ad.h"
#include "fuzz.h"
#include "nn.h"

#define FZ_SCHEMA_MAX 3

typedef struct fz_schema {
    int n;
    const char *names[FZ_SCHEMA_MAX];
    ad_dtype dtypes[FZ_SCHEMA_MAX];
    int ndim[FZ_SCHEMA_MAX];
    int64_t shape[FZ_SCHEMA_MAX][3];
} fz_schema;

static const fz_schema fz_schemas[] = {
    {2, {"layer.weight", "layer.bias"}, {AD_F32, AD_F64}, {2, 1}, {{4, 3}, {3}}},
    {3, {"a", "b", "c"}, {AD_F64, AD_F32, AD_F32}, {0, 3, 2}, {{0}, {2, 1, 2}, {0, 5}}},
    {0, {NULL}, {AD_F32}, {0}, {{0}}},
};
#define FZ_NSCHEMAS ((int)(sizeof fz_schemas / sizeof fz_schemas[0]))

/* A new zeroed tensor for entry i of sc; aborts when out of memory (test code). */
static inline ad_tensor *fz_schema_tensor(const fz_schema *sc, int i)
{
    ad_tensor *t = ad_tensor_new(sc->dtypes[i], sc->ndim[i], sc->shape[i]);
    if (!t) abort();
    return t;
}

/* The model the checkpoint targets load into: an MLP 4-5-3 (tanh) with Adam, seeded. */
static inline void fz_checkpoint_model(nn_module **m, nn_optim **o, ad_rng *rng)
{
    ad_rng_seed(rng, 17);
    *m = nn_mlp(3, (const int64_t[]){4, 5, 3}, NN_TANH, rng, NULL);
    *o = *m ? nn_adam(*m, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL) : NULL;
    if (!*o) abort();
}

/* FNV-1a over every parameter's bytes. */
static inline uint64_t fz_params_hash(nn_module *m)
{
    nn_param *p;
    int n = nn_module_params(m, &p);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        const unsigned char *b = p[i].value->data;
        size_t k = (size_t)p[i].value->size * ad_dtype_size(p[i].value->dtype);
        for (size_t j = 0; j < k; j++) h = (h ^ b[j]) * 1099511628211ULL;
    }
    return h;
}

#endif

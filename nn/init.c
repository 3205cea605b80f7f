/* init.c: weight initializers (Xavier/Glorot, He/Kaiming; uniform and normal) from an explicit ad_rng. */
#include "nn_internal.h"

#include <math.h>

ad_status nn_init_fans(const ad_tensor *w, int64_t *fan_in, int64_t *fan_out, nn_error *err)
{
    if (!w || !fan_in || !fan_out) return nn_error_set(err, AD_ERR_ARG, "nn_init_fans: NULL argument");
    if (w->ndim < 2) {
        *fan_in = *fan_out = w->size;
        return AD_OK;
    }
    int64_t field = 1;
    for (int d = 2; d < w->ndim; d++) field *= w->shape[d];
    *fan_in = w->shape[1] * field;
    *fan_out = w->shape[0] * field;
    return AD_OK;
}

ad_status nn_init_tensor(ad_tensor *w, nn_init kind, double gain, ad_rng *rng, nn_error *err)
{
    if (!w) return nn_error_set(err, AD_ERR_ARG, "nn_init_tensor: NULL tensor");
    if (kind == NN_INIT_ZEROS) {
        ad_tensor_fill(w, 0.0);
        return AD_OK;
    }
    int64_t fin, fout;
    if (!rng) return nn_error_set(err, AD_ERR_ARG, "nn_init_tensor: NULL rng");
    nn_init_fans(w, &fin, &fout, NULL);
    if (w->size == 0) return AD_OK;
    if (fin < 1 || fout < 1)
        return nn_error_set(err, AD_ERR_ARG, "nn_init_tensor: fan_in %lld and fan_out %lld must be >= 1",
                            (long long)fin, (long long)fout);
    bool xavier = kind == NN_INIT_XAVIER_UNIFORM || kind == NN_INIT_XAVIER_NORMAL;
    if (gain == 0.0) gain = xavier ? 1.0 : sqrt(2.0);
    /* the standard deviation the initializer aims at; a uniform U(-a, a) has std a / sqrt 3 */
    double std = xavier ? gain * sqrt(2.0 / (double)(fin + fout)) : gain / sqrt((double)fin);
    switch (kind) {
    case NN_INIT_XAVIER_UNIFORM:
    case NN_INIT_HE_UNIFORM: ad_rng_fill_uniform(rng, w, -sqrt(3.0) * std, sqrt(3.0) * std); return AD_OK;
    case NN_INIT_XAVIER_NORMAL:
    case NN_INIT_HE_NORMAL: ad_rng_fill_normal(rng, w, 0.0, std); return AD_OK;
    case NN_INIT_ZEROS: break;
    }
    return nn_error_set(err, AD_ERR_ARG, "nn_init_tensor: unknown initializer %d", (int)kind);
}

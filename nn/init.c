/* init.c: weight initializers (Xavier/Glorot, He/Kaiming; uniform and normal) from an explicit ad_rng. */
#include "nn_internal.h"

#include <math.h>

ad_status nn_init_fans(const ad_tensor *w, int64_t *fan_in, int64_t *fan_out)
{
    if (!w || !fan_in || !fan_out) return AD_ERR_ARG;
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

double nn_init_gain(nn_act a)
{
    switch (a) {
    case NN_TANH: return 5.0 / 3.0;
    case NN_RELU:
    case NN_GELU: return sqrt(2.0);
    case NN_LEAKY_RELU: return sqrt(2.0 / (1.0 + 0.01 * 0.01));
    case NN_IDENTITY:
    case NN_SIGMOID:
    case NN_SOFTMAX: break;
    }
    return 1.0;
}

ad_status nn_init_tensor(ad_tensor *w, nn_init kind, double gain, ad_rng *rng)
{
    if (!w) return AD_ERR_ARG;
    if (kind == NN_INIT_ZEROS) {
        ad_tensor_fill(w, 0.0);
        return AD_OK;
    }
    int64_t fin, fout;
    if (!rng || nn_init_fans(w, &fin, &fout) != AD_OK) return AD_ERR_ARG;
    if (w->size == 0) return AD_OK;
    if (fin < 1 || fout < 1) return AD_ERR_ARG;
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
    return AD_ERR_ARG;
}

ad_status nn_init_xavier_uniform(ad_tensor *w, double gain, ad_rng *rng)
{
    return nn_init_tensor(w, NN_INIT_XAVIER_UNIFORM, gain, rng);
}

ad_status nn_init_xavier_normal(ad_tensor *w, double gain, ad_rng *rng)
{
    return nn_init_tensor(w, NN_INIT_XAVIER_NORMAL, gain, rng);
}

ad_status nn_init_he_uniform(ad_tensor *w, double gain, ad_rng *rng)
{
    return nn_init_tensor(w, NN_INIT_HE_UNIFORM, gain, rng);
}

ad_status nn_init_he_normal(ad_tensor *w, double gain, ad_rng *rng)
{
    return nn_init_tensor(w, NN_INIT_HE_NORMAL, gain, rng);
}

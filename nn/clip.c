/* clip.c: gradient clipping by the global norm of a list of parameters' gradients. */
#include "nn_internal.h"

#include <math.h>

/* Parameter i of a list given either as pointers (pp) or as an array (arr). */
#define PARAM(i) (pp ? pp[i] : &arr[i])

/* Visits every element of every gradient of the list (F32 or F64). */
#define FOR_EACH_GRAD(body)                                                                              \
    for (int p_ = 0; p_ < n; p_++) {                                                                     \
        ad_tensor *g_ = PARAM(p_)->grad;                                                                 \
        if (!g_ || !g_->data) continue;                                                                  \
        for (int64_t i_ = 0; i_ < g_->size; i_++) {                                                      \
            double v = g_->dtype == AD_F64 ? ((double *)g_->data)[i_] : (double)((float *)g_->data)[i_]; \
            body;                                                                                        \
        }                                                                                                \
    }

ad_status nn__clip_grads(int n, nn_param *const *pp, const nn_param *arr, double max_norm, double *total_norm_out,
                         nn_error *err)
{
    if (total_norm_out) *total_norm_out = NAN;
    /* the largest magnitude first, so that the sum of squares of the scaled
    ** values can neither overflow nor underflow (as BLAS's nrm2 does) */
    double amax = 0;
    bool nan = false, inf = false;
    FOR_EACH_GRAD({
        if (isnan(v)) nan = true;
        else if (isinf(v)) inf = true;
        else if (fabs(v) > amax) amax = fabs(v);
    })
    if (nan || inf) {
        if (total_norm_out) *total_norm_out = nan ? NAN : INFINITY;
        return nn_error_set(err, AD_ERR_NUMERIC, "nn_clip_grad_norm: a gradient holds %s; nothing scaled",
                            nan ? "NaN" : "Inf");
    }
    double ss = 0;
    if (amax > 0) FOR_EACH_GRAD({ ss += (v / amax) * (v / amax); })
    double norm = amax * sqrt(ss);
    if (total_norm_out) *total_norm_out = norm;

    /* PyTorch's rule: scale by max_norm / (norm + 1e-6) when that is below 1 */
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1) return AD_OK;
    for (int p = 0; p < n; p++) {
        ad_tensor *g = PARAM(p)->grad;
        if (!g || !g->data) continue;
        if (g->dtype == AD_F64) {
            double *d = g->data;
            for (int64_t i = 0; i < g->size; i++) d[i] *= coef;
        } else {
            float *f = g->data;
            for (int64_t i = 0; i < g->size; i++) f[i] = (float)((double)f[i] * coef);
        }
    }
    return AD_OK;
}

ad_status nn_clip_grad_norm(nn_module *m, double max_norm, double *total_norm_out, nn_error *err)
{
    if (total_norm_out) *total_norm_out = NAN;
    if (!m || !(max_norm > 0))
        return nn_error_set(err, AD_ERR_ARG, "nn_clip_grad_norm: %s", m ? "max_norm must be > 0" : "NULL module");
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    return nn__clip_grads(n, NULL, ps, max_norm, total_norm_out, err);
}

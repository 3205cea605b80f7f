/* loss.c: losses as scalar vars (means over the batch), in numerically stable forms. */
#include "nn_internal.h"

#include <inttypes.h>

/* Both vars current and of one shape; otherwise an error on the tape (or the
** ops' own propagation of an earlier one). */
static bool same_shape(const char *fn, ad_var y, ad_var t)
{
    if (!ad_ok(y) || !ad_ok(t)) return false;
    const ad_tensor *a = ad_value(y), *b = ad_value(t);
    if (ad_shape_equal(a, b) && a->dtype == b->dtype) return true;
    char sa[96], sb[96];
    ad__fail(y.tape, ad_shape_equal(a, b) ? AD_ERR_DTYPE : AD_ERR_SHAPE, "%s: output %s %s and target %s %s differ",
             fn, ad_shape_str(a->ndim, a->shape, sa, sizeof sa), ad_dtype_name(a->dtype),
             ad_shape_str(b->ndim, b->shape, sb, sizeof sb), ad_dtype_name(b->dtype));
    return false;
}

/* The invalid var to return after a failure (ops on it keep failing). */
static ad_var failed(ad_var y, ad_var t)
{
    /* an op on the pair records the reason if nothing did yet (stale, foreign handles);
    ** after a recorded error it records nothing more */
    (void)ad_sub(y, t);
    return ad__no_var(y.tape);
}

/* squared error: E = 1/(2B) sum (t - y)^2; VJP (through the ops): dE/dy = (y - t) / B */
ad_var nn_loss_squared_error(ad_var y, ad_var t)
{
    if (!same_shape("nn_loss_squared_error", y, t)) return failed(y, t);
    const ad_tensor *v = ad_value(y);
    double batch = v->ndim > 0 ? (double)v->shape[0] : 1.0;
    if (batch == 0.0) batch = 1.0; /* an empty batch: loss 0 */
    return ad_mul_scalar(ad_sum(ad_square(ad_sub(t, y))), 0.5 / batch);
}

/* mse: L = mean (y - t)^2; VJP: dL/dy = 2 (y - t) / N */
ad_var nn_loss_mse(ad_var y, ad_var t)
{
    if (!same_shape("nn_loss_mse", y, t)) return failed(y, t);
    return ad_mean(ad_square(ad_sub(y, t)));
}

/* bce with logits: L = mean softplus(z) - t z, softplus(z) = log(1 + e^z) computed
** without overflow; VJP: dL/dz = (sigmoid(z) - t) / N, dL/dt = -z / N */
ad_var nn_loss_bce_with_logits(ad_var z, ad_var t)
{
    if (!same_shape("nn_loss_bce_with_logits", z, t)) return failed(z, t);
    return ad_mean(ad_sub(ad_softplus(z), ad_mul(t, z)));
}

/* cross-entropy: L = -1/B sum_i log_softmax(z_i)[label_i]; VJP: dL/dz_i = (softmax(z_i) - onehot_i) / B */
ad_var nn_loss_cross_entropy(ad_var logits, const int64_t *labels)
{
    ad_tape *tp = logits.tape;
    if (!ad_ok(logits)) return ad_log_softmax(logits, -1); /* records why, or propagates */
    const ad_tensor *z = ad_value(logits);
    if (z->ndim != 2) {
        char s[96];
        ad__fail(tp, AD_ERR_SHAPE, "nn_loss_cross_entropy: logits must be [batch, classes], got %s",
                 ad_shape_str(z->ndim, z->shape, s, sizeof s));
        return ad__no_var(tp);
    }
    int64_t b = z->shape[0], c = z->shape[1];
    if (b == 0 || c == 0) {
        ad__fail(tp, AD_ERR_SHAPE, "nn_loss_cross_entropy: empty logits [%" PRId64 ",%" PRId64 "]", b, c);
        return ad__no_var(tp);
    }
    if (!labels) {
        ad__fail(tp, AD_ERR_ARG, "nn_loss_cross_entropy: NULL labels");
        return ad__no_var(tp);
    }
    int64_t *idx = ad__tape_alloc(tp, (size_t)b * sizeof *idx);
    if (!idx) return ad__no_var(tp);
    for (int64_t i = 0; i < b; i++) {
        if (labels[i] < 0 || labels[i] >= c) {
            ad__fail(tp, AD_ERR_INDEX,
                     "nn_loss_cross_entropy: label %" PRId64 " of sample %" PRId64 " is outside [0, %" PRId64 ")",
                     labels[i], i, c);
            return ad__no_var(tp);
        }
        idx[i] = i * c + labels[i];
    }
    ad_var flat = ad_reshape(ad_log_softmax(logits, 1), 1, (const int64_t[]){b * c});
    return ad_neg(ad_mean(ad_index_select(flat, 0, b, idx)));
}

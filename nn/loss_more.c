/* loss_more.c: Huber and L1 regression losses and label-smoothed cross-entropy, composed from engine ops. */
#include "services.h"
#include "nn.h"

#include <inttypes.h>
#include <math.h>

/* y and t current, of one shape and dtype; otherwise an error on the tape (fn named). */
static bool pair_ok(const char *fn, ad_var y, ad_var t)
{
    if (!ad_ok(y) || !ad_ok(t)) {
        (void)ad_sub(y, t); /* records why (stale or foreign handles), or keeps the earlier error */
        return false;
    }
    const ad_tensor *a = ad_value(y), *b = ad_value(t);
    if (ad_shape_equal(a, b) && a->dtype == b->dtype) return true;
    char sa[96], sb[96];
    ad__fail(y.tape, ad_shape_equal(a, b) ? AD_ERR_DTYPE : AD_ERR_SHAPE, "%s: output %s %s and target %s %s differ",
             fn, ad_shape_str(a->ndim, a->shape, sa, sizeof sa), ad_dtype_name(a->dtype),
             ad_shape_str(b->ndim, b->shape, sb, sizeof sb), ad_dtype_name(b->dtype));
    return false;
}

static ad_var no_var(ad_var y, ad_var t) { return ad__no_var(y.tape ? y.tape : t.tape); }

/* huber: l = q^2 / 2 + delta (|d| - q), q = min(|d|, delta), d = y - t; mean over elements.
** VJP (through the ops): dl/dd = d for |d| < delta, delta sign(d) beyond (min's tie shares it: delta at |d| = delta) */
ad_var nn_loss_huber(ad_var y, ad_var t, double delta)
{
    if (!pair_ok("nn_loss_huber", y, t)) return no_var(y, t);
    if (!(delta > 0.0) || !isfinite(delta)) {
        ad__fail(y.tape, AD_ERR_ARG, "nn_loss_huber: delta %g must be > 0 and finite", delta);
        return no_var(y, t);
    }
    ad_var a = ad_abs(ad_sub(y, t));
    ad_var q = ad_minimum(a, ad_scalar(y.tape, ad_value(y)->dtype, delta));
    return ad_mean(ad_add(ad_mul_scalar(ad_square(q), 0.5), ad_mul_scalar(ad_sub(a, q), delta)));
}

/* l1: l = mean |y - t|; VJP: sign(y - t) / N */
ad_var nn_loss_l1(ad_var y, ad_var t)
{
    if (!pair_ok("nn_loss_l1", y, t)) return no_var(y, t);
    return ad_mean(ad_abs(ad_sub(y, t)));
}

/* label-smoothed cross-entropy: l = (1 - s) (-1/B sum_i lsm_i[label_i]) + s (-1/(B C) sum_ic lsm_ic),
** lsm = log_softmax(z) over the classes; VJP: (softmax(z_i) - (1 - s) onehot_i - s / C) / B */
ad_var nn_loss_cross_entropy_smooth(ad_var logits, const int64_t *labels, double smoothing)
{
    static const char fn[] = "nn_loss_cross_entropy_smooth";
    ad_tape *tp = logits.tape;
    if (!ad_ok(logits)) return ad_log_softmax(logits, -1); /* records why, or propagates */
    const ad_tensor *z = ad_value(logits);
    char s[96];
    if (z->ndim != 2 || z->shape[0] == 0 || z->shape[1] == 0) {
        ad__fail(tp, AD_ERR_SHAPE, "%s: logits must be a non-empty [batch, classes], got %s", fn,
                 ad_shape_str(z->ndim, z->shape, s, sizeof s));
        return ad__no_var(tp);
    }
    if (!labels || !(smoothing >= 0.0 && smoothing <= 1.0)) {
        ad__fail(tp, AD_ERR_ARG, "%s: %s", fn, labels ? "smoothing must be in [0, 1]" : "NULL labels");
        return ad__no_var(tp);
    }
    int64_t b = z->shape[0], c = z->shape[1];
    int64_t *idx = ad__tape_alloc(tp, (size_t)b * sizeof *idx);
    if (!idx) return ad__no_var(tp);
    for (int64_t i = 0; i < b; i++) {
        if (labels[i] < 0 || labels[i] >= c) {
            ad__fail(tp, AD_ERR_INDEX, "%s: label %" PRId64 " of sample %" PRId64 " is outside [0, %" PRId64 ")", fn,
                     labels[i], i, c);
            return ad__no_var(tp);
        }
        idx[i] = i * c + labels[i];
    }
    ad_var lsm = ad_log_softmax(logits, 1);
    ad_var nll = ad_neg(ad_mean(ad_index_select(ad_reshape(lsm, 1, (const int64_t[]){b * c}), 0, b, idx)));
    if (smoothing == 0.0) return nll;
    return ad_sub(ad_mul_scalar(nll, 1.0 - smoothing), ad_mul_scalar(ad_mean(lsm), smoothing));
}

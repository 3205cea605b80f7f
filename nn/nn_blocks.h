/* nn_blocks.h: more losses (Huber, L1, label smoothing), attention and transformer modules, weights by name, module gradcheck (included by nn.h). */
#ifndef AUTODIFF_NN_BLOCKS_H
#define AUTODIFF_NN_BLOCKS_H

/*
** The losses follow nn.h's conventions: scalar vars, means over every element
** (or over the batch for cross-entropy), errors recorded on the tape naming the
** loss. They are compositions of engine ops, so their gradients are exact and
** differentiable again.
*/

#ifdef __cplusplus
extern "C" {
#endif

/* ---- more losses ---- */

/* Huber loss (PyTorch's HuberLoss, reduction mean): with d = y - t elementwise,
** l = d^2 / 2 where |d| <= delta, delta (|d| - delta / 2) beyond; the mean over every
** element. Written as q = min(|d|, delta), l = q^2 / 2 + delta (|d| - q), so its
** gradient is d inside, delta sign(d) outside, and continuous at |d| = delta.
** Errors: y and t of different shapes or dtypes, delta not > 0 (AD_ERR_ARG). */
NN_API ad_var nn_loss_huber(ad_var y, ad_var t, double delta);
/* Mean absolute error: mean |y - t| (gradient sign(y - t) / N, 0 where y == t). */
NN_API ad_var nn_loss_l1(ad_var y, ad_var t);
/* Cross-entropy with label smoothing (PyTorch's label_smoothing): the target of
** sample i is (1 - smoothing) onehot(labels[i]) + smoothing / C, so the loss is
** (1 - smoothing) nll + smoothing mean_c(-log_softmax(z_i)_c), averaged over the batch.
** smoothing in [0, 1]; 0 is nn_loss_cross_entropy. Errors as nn_loss_cross_entropy,
** and AD_ERR_ARG for a smoothing outside [0, 1]. */
NN_API ad_var nn_loss_cross_entropy_smooth(ad_var logits, const int64_t *labels, double smoothing);

#ifdef __cplusplus
}
#endif

#endif

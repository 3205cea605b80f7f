/* ad_layers.h: layers composed from the engine's ops: attention, transposed and 1-D convolution, group normalization (included by ad.h). */
#ifndef AUTODIFF_AD_LAYERS_H
#define AUTODIFF_AD_LAYERS_H

/*
** Each function here records ordinary ops (matmul, softmax, where, conv2d and
** its adjoint, reshape, ...), so its gradient is the composition's and can be
** differentiated again (AD_CREATE_GRAPH, ad_gradgradcheck). Errors follow the
** engine's rule: a bad shape, dtype or parameter records a message naming the
** function on the tape and returns an invalid var. Optional vars (mask, gamma,
** beta) are omitted with AD_NO_VAR.
*/

#ifdef __cplusplus
extern "C" {
#endif

/* Scaled dot-product attention: softmax(scale q k^T + mask) v over the last axis.
** q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv] -> [..., Tq, dv]; the batch
** dimensions (...) broadcast as in ad_matmul. scale 0 means 1 / sqrt(d).
** mask (AD_NO_VAR for none) is additive: any shape that broadcasts to
** [..., Tq, Tk], added to the scaled scores; an entry of -INFINITY excludes that
** key for that query (a boolean padding mask `pad`, 1 where a key is padding,
** becomes ad_masked_fill(ad_full(t, dtype, ..., 0), pad, -INFINITY)). The mask
** may itself require a gradient (a learned bias); excluded entries get 0.
** causal: query i sees keys j <= i only (PyTorch's is_causal, aligned at the top
** left, so with Tq <= Tk the last Tk - Tq keys are never seen by the first query).
** Numerically stable: the softmax subtracts each row's maximum. A query whose
** keys are all excluded (or Tk = 0) gets the output 0 and no gradient, never NaN.
** Errors: AD_ERR_SHAPE (ndim < 2, d or Tk disagreeing, batch dimensions or mask
** not broadcasting), AD_ERR_DTYPE (mixed dtypes), AD_ERR_ARG (scale < 0 or not finite). */
AD_API ad_var ad_attention(ad_var q, ad_var k, ad_var v, ad_var mask, bool causal, double scale);

/* Transposed 2-D convolution (PyTorch's conv_transpose2d without bias), the adjoint
** of ad_conv2d: x [N, Cin, H, W], w [Cin, Cout/groups, kh, kw] -> [N, Cout, OH, OW]
** with OH = (H - 1) stride_h - 2 pad_h + dilation_h (kh - 1) + out_pad_h + 1 (likewise
** OW). Requires 0 <= out_pad < stride. Errors as ad_conv2d, and AD_ERR_ARG for a bad
** output padding or an output size below 1. */
AD_API ad_var ad_conv_transpose2d_ex(ad_var x, ad_var w, const ad_conv2d_params *p, int64_t out_pad_h,
                                     int64_t out_pad_w);
/* The same with equal height and width parameters. */
AD_API ad_var ad_conv_transpose2d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t output_padding,
                                  int64_t dilation, int64_t groups);

/* 1-D cross-correlation without bias (PyTorch's conv1d): x [N, C, L], w [O, C/groups, k]
** -> [N, O, OL], OL = (L + 2 padding - dilation (k - 1) - 1) / stride + 1. A conv2d
** of height 1. Errors as ad_conv2d, naming ad_conv1d. */
AD_API ad_var ad_conv1d(ad_var x, ad_var w, int64_t stride, int64_t padding, int64_t dilation, int64_t groups);

/* Group normalization (Wu & He 2018) of x [N, C, ...]: the C channels in `groups`
** groups of C / groups, each sample's group normalized over its channels and the
** trailing axes: y = (x - mean) / sqrt(var + eps) gamma + beta (biased variance,
** gamma and beta [C] or AD_NO_VAR). Errors: AD_ERR_SHAPE (ndim < 2, C not divisible
** by groups, an empty group, gamma/beta not [C]), AD_ERR_ARG (groups < 1, eps < 0). */
AD_API ad_var ad_group_norm(ad_var x, int64_t groups, ad_var gamma, ad_var beta, double eps);

#ifdef __cplusplus
}
#endif

#endif

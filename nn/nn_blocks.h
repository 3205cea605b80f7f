/* nn_blocks.h: more losses (Huber, L1, label smoothing), 1-D convolution, group norm, attention and transformer modules, weights by name, module gradcheck (included by nn.h). */
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

/* ---- 1-D convolution and group normalization ---- */

/* 1-D convolution: x [N, in, L] -> [N, out, OL] (ad_conv1d), "weight" [out, in/groups, k]
** He-uniform, "bias" [out] zeros when bias is set; parameters of dtype (F32 or F64).
** NULL with the reason in err on a bad size, a NULL rng, or out of memory. */
NN_API nn_module *nn_conv1d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation,
                            int64_t groups, bool bias, ad_dtype dtype, ad_rng *rng, nn_error *err);
/* Group normalization of x [N, channels, ...] in `groups` groups (ad_group_norm), "weight"
** [channels] ones and "bias" zeros, of dtype. groups 1 normalizes over everything but N,
** groups = channels is instance normalization. NULL with the reason in err as above. */
NN_API nn_module *nn_group_norm(int64_t groups, int64_t channels, double eps, ad_dtype dtype, nn_error *err);

/* ---- attention and transformers ----
** Sequences are [N, T, d]. Parameter names follow PyTorch's nn.MultiheadAttention and
** nn.TransformerEncoderLayer, so their state_dicts load with nn_load_weights as they are. */

/* Multi-head self- or cross-attention (Vaswani et al. 2017) with parameters "in_proj_weight"
** [3 d, d] (Xavier-uniform: the q, k, v projections stacked), "in_proj_bias" [3 d] zeros and
** the linear "out_proj" (d -> d, bias zeros). nn_forward_n takes (x), (x, mask), (query, key,
** value) or (query, key, value, mask): x, query [N, Tq, d], key and value [N, Tk, d], mask
** additive as in ad_attention, broadcasting to [N, heads, Tq, Tk] (a padding mask is
** [N, 1, 1, Tk]); causal makes every call causal. Returns [N, Tq, d]. NULL with the reason in
** err on a bad size (d_model divisible by heads), a NULL rng, or out of memory. */
NN_API nn_module *nn_multihead_attention(int64_t d_model, int64_t heads, bool causal, ad_dtype dtype, ad_rng *rng,
                                         nn_error *err);

typedef struct nn_transformer_opts {
    int64_t d_model, heads; /* d_model divisible by heads */
    int64_t d_ff;           /* the MLP's hidden width; default 4 d_model */
    double dropout;         /* on each residual branch while training, in [0, 1); default 0.1 */
    bool causal;            /* default false */
    double eps;             /* the layer norms' epsilon; default 1e-5 */
    ad_dtype dtype;         /* default AD_F32 */
    uint64_t seed;          /* the dropout generator's seed; default 1 */
} nn_transformer_opts;

/* The defaults above for a given width and head count. */
NN_API nn_transformer_opts nn_transformer_defaults(int64_t d_model, int64_t heads);
/* A pre-norm transformer block (PyTorch's TransformerEncoderLayer with norm_first, GELU):
**   h = x + dropout(self_attn(norm1(x)[, mask])),  y = h + dropout(linear2(gelu(linear1(norm2(h)))))
** children "norm1", "self_attn", "norm2" (layer norms over d), "linear1" (d -> d_ff), "linear2"
** (d_ff -> d). nn_forward_n takes x [N, T, d] and optionally an additive mask (as
** nn_multihead_attention). Dropout is off in evaluation mode. NULL with the reason in err on
** bad options, a NULL rng, or out of memory. */
NN_API nn_module *nn_transformer_block(const nn_transformer_opts *opts, ad_rng *rng, nn_error *err);

/* Images as sequences: [N, C, H, W] -> [N, H W, C], each position a token of C features
** (row by row), so attention can run over the positions of a feature map. No parameters. */
NN_API nn_module *nn_tokens_from_image(nn_error *err);

/* Learned positional embeddings: y = x + weight[0:T] for x [..., T, d], "weight" [max_len, d]
** N(0, 0.02^2) of dtype. T > max_len is an AD_ERR_SHAPE on the tape. NULL with the reason in err. */
NN_API nn_module *nn_positional_learned(int64_t max_len, int64_t d, ad_dtype dtype, ad_rng *rng, nn_error *err);
/* Sinusoidal positional encodings (Vaswani et al.): y = x + PE, PE[p, 2i] = sin(p / 10000^(2i/d)),
** PE[p, 2i+1] = cos(p / 10000^(2i/d)), a constant in x's dtype, for any T. No parameters. */
NN_API nn_module *nn_positional_sinusoidal(int64_t d, nn_error *err);

/* ---- gradient checking of modules ---- */

/* Checks m's gradients with respect to every trainable parameter and to its input against
** central differences, as ad_gradcheck does (PyTorch's tolerances; opts NULL: defaults;
** fast_mode compares v^T J u). The parameter tensors themselves are perturbed in place (and
** put back), so a gradient the forward pass loses (an ad_detach, a constant where a param
** should be) is a mismatch, never a vacuous pass. Every parameter and the input must be
** AD_F64 (build the module with AD_F64). The module is run in its current mode: put modules
** with randomness (dropout) in evaluation mode first; buffers (running statistics) are
** restored after every evaluation, and the parameters' grad tensors after the check. rep
** (may be NULL): rep->input is the checked tensor (the input first, then the trainable
** parameters in nn_module_params order) and rep->message names it ("parameter 'linear1.weight'").
** Returns AD_OK, AD_ERR_NUMERIC on a mismatch, AD_ERR_DTYPE (an F32 tensor), AD_ERR_ARG
** (NULL arguments, nothing to check, a Jacobian over 2^26 entries without fast_mode),
** AD_ERR_NOMEM, or the error the forward or backward pass recorded. */
NN_API ad_status nn_gradcheck_module(nn_module *m, const ad_tensor *input, const ad_check_opts *opts,
                                     ad_check_report *rep);
/* The same for a module of n inputs; wrt_input[i] false leaves input i unchecked (integer ids,
** a -inf mask; NULL checks all). Checked tensors: the checked inputs in order, then the parameters. */
NN_API ad_status nn_gradcheck_module_n(nn_module *m, int n, const ad_tensor *const *inputs, const bool *wrt_input,
                                       const ad_check_opts *opts, ad_check_report *rep);

/* ---- weights by name: plain safetensors files ---- */

/* Maps a tensor name to another: writes the new name into out (at most len bytes,
** NUL-terminated) and returns true, or returns false to leave the tensor out. */
typedef bool (*nn_name_map_fn)(const char *name, char *out, size_t len, void *ctx);

/* Loads m's parameters and buffers from a safetensors file written by any tool (a PyTorch
** state_dict saved by the safetensors library or by hand; no autodiff metadata needed, and
** __metadata__ is ignored). Each tensor of the file is matched by name to a parameter of m,
** through map(file name -> m's name) when map is not NULL (ctx is passed to it; a tensor it
** leaves out is ignored). F32 and F64 tensors convert to the parameter's dtype. Every
** parameter must be filled, by a tensor of its shape, and every tensor not left out must
** fill one; otherwise nothing is changed and err lists the problems, e.g.
**   "nn_load_weights: w.safetensors: 1 missing (linear2.bias); 1 mis-shaped (linear1.weight
**    [16,8], [8,16] expected); 1 unexpected (pos.weight)"
** Errors: AD_ERR_ARG (NULL m or path), AD_ERR_IO, AD_ERR_FORMAT (a malformed file, missing
** or unexpected names, two tensors mapped to one parameter), AD_ERR_SHAPE (only shapes
** differ), AD_ERR_UNSUPPORTED (a dtype other than F32/F64), AD_ERR_NOMEM. */
NN_API ad_status nn_load_weights(nn_module *m, const char *path, nn_name_map_fn map, void *ctx, nn_error *err);
/* Writes m's parameters and buffers to path as a safetensors file (nn_safetensors_save:
** atomic, with checksums in __metadata__, readable by PyTorch's safetensors and by
** nn_load_weights), under their names or map(m's name -> file name). Errors as
** nn_safetensors_save. */
NN_API ad_status nn_save_weights(nn_module *m, const char *path, nn_name_map_fn map, void *ctx, nn_error *err);

#ifdef __cplusplus
}
#endif

#endif

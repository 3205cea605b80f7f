/* nn_layers.h: convolutional, pooling, normalization, dropout, embedding and recurrent modules (included by nn.h). */
#ifndef AUTODIFF_NN_LAYERS_H
#define AUTODIFF_NN_LAYERS_H

/*
** These modules follow nn.h's conventions: F32 parameters (F64 through the _ex
** constructors, for nn_gradcheck_module) outside the tape,
** joined with nn_param_var() on each forward; constructors return NULL with the
** reason in err (may be NULL) on a bad size or when out of memory; forward
** errors go on the tape. Images are NCHW.
** Parameter names match PyTorch's state_dict keys ("weight", "bias",
** "running_mean", "weight_ih", ...), so checkpoints line up with its modules.
*/

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution and pooling ---- */

/* 2-D convolution with a k x k kernel, stride and zero padding: x [N, in, H, W] -> [N, out, OH, OW];
** weight [out, in, k, k] He-uniform (gain sqrt 2), bias [out] zero. */
NN_API nn_module *nn_conv2d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, ad_rng *rng, nn_error *err);
/* Everything chosen: kernel kh x kw, the convolution's parameters (groups divide in and out),
** bias or not, dtype. */
NN_API nn_module *nn_conv2d_ex(int64_t in, int64_t out, int64_t kh, int64_t kw, const ad_conv2d_params *p, bool bias,
                               ad_dtype dtype, ad_rng *rng, nn_error *err);
/* Max / average pooling over k x k windows (stride 0: k). No parameters. */
NN_API nn_module *nn_max_pool2d(int64_t k, int64_t stride, int64_t padding, nn_error *err);
NN_API nn_module *nn_avg_pool2d(int64_t k, int64_t stride, int64_t padding, nn_error *err);
/* [N, d1, d2, ...] -> [N, d1 d2 ...]. */
NN_API nn_module *nn_flatten(nn_error *err);
/* [N, ...] -> [N, shape...] (e.g. flat pixels [N, 784] to images [N, 1, 28, 28]); ndim <= 7. */
NN_API nn_module *nn_reshape(int ndim, const int64_t *shape, nn_error *err);

/* ---- regularization and normalization ---- */

/* Inverted dropout with probability p in [0, 1); its own generator, seeded with seed. Identity
** in evaluation mode (nn_module_set_training(m, false)). */
NN_API nn_module *nn_dropout(double p, uint64_t seed, nn_error *err);
/* Batch normalization over N, H, W of x [N, C, H, W] (any [N, C, ...] works): "weight" [C]
** ones, "bias" [C] zeros, and the buffers "running_mean" [C] zeros and "running_var" [C] ones,
** which training updates with momentum (PyTorch: 0.1) and evaluation uses; checkpoints carry them. */
NN_API nn_module *nn_batch_norm2d(int64_t channels, double momentum, double eps, nn_error *err);
/* The same with parameters and running statistics of dtype (F32 or F64). */
NN_API nn_module *nn_batch_norm2d_ex(int64_t channels, double momentum, double eps, ad_dtype dtype, nn_error *err);
/* Layer normalization over the last ndim axes, shaped shape: "weight" ones, "bias" zeros. */
NN_API nn_module *nn_layer_norm(int ndim, const int64_t *shape, double eps, nn_error *err);
/* The same with parameters of dtype (F32 or F64). */
NN_API nn_module *nn_layer_norm_ex(int ndim, const int64_t *shape, double eps, ad_dtype dtype, nn_error *err);
/* A lookup table "weight" [num, dim], N(0, 1): the input holds integer ids (any float dtype,
** any shape S), the output is S + [dim]. An id that is not an integer in [0, num) is an
** AD_ERR_INDEX on the tape. */
NN_API nn_module *nn_embedding(int64_t num, int64_t dim, ad_rng *rng, nn_error *err);
/* The same with a table of dtype (F32 or F64). */
NN_API nn_module *nn_embedding_ex(int64_t num, int64_t dim, ad_dtype dtype, ad_rng *rng, nn_error *err);

/* ---- recurrent cells, unrolled over time on the tape ---- */

/*
** A cell's nn_forward takes a sequence x [N, T, in] and returns every hidden
** state [N, T, hidden], starting from zeros; the loop over time is a plain
** loop recording ordinary ops, so backward is backpropagation through time
** for any T. Weights U(-1/sqrt(hidden), 1/sqrt(hidden)) as in PyTorch, named
** "weight_ih" [G hidden, in], "weight_hh" [G hidden, hidden], "bias_ih",
** "bias_hh" [G hidden], G = 1 (RNN), 4 (LSTM: gates i, f, g, o), 3 (GRU: r, z, n).
*/
NN_API nn_module *nn_rnn_cell(int64_t in, int64_t hidden, nn_act act /* NN_TANH or NN_RELU */, ad_rng *rng, nn_error *err);
/* The LSTM's forget-gate biases start at 1 (bias_ih; Jozefowicz et al. 2015), the rest as above. */
NN_API nn_module *nn_lstm_cell(int64_t in, int64_t hidden, ad_rng *rng, nn_error *err);
NN_API nn_module *nn_gru_cell(int64_t in, int64_t hidden, ad_rng *rng, nn_error *err);
/* The same three with weights of dtype (F32 or F64; the state starts as zeros of that dtype). */
NN_API nn_module *nn_rnn_cell_ex(int64_t in, int64_t hidden, nn_act act, ad_dtype dtype, ad_rng *rng, nn_error *err);
NN_API nn_module *nn_lstm_cell_ex(int64_t in, int64_t hidden, ad_dtype dtype, ad_rng *rng, nn_error *err);
NN_API nn_module *nn_gru_cell_ex(int64_t in, int64_t hidden, ad_dtype dtype, ad_rng *rng, nn_error *err);
/* One time step of a cell made above: x [N, in]; *h [N, hidden] (and *c for an LSTM, ignored
** otherwise) are the state, replaced by the new one; pass invalid vars (AD_NO_VAR) for zeros.
** Returns the new h. */
NN_API ad_var nn_cell_step(nn_module *cell, ad_tape *t, ad_var x, ad_var *h, ad_var *c);
/* The last time step of a sequence: [N, T, D] -> [N, D]. */
NN_API nn_module *nn_last_step(nn_error *err);

/* ---- a CNN from a short spec ---- */

/* Builds a network for inputs of in_channels x h x w (given flat [N, c h w] or as [N, c, h, w])
** from comma-separated layers:
**   conv:C:K[:S]  convolution to C channels, K x K, stride S (default 1), padding K/2, then ReLU
**   pool:K        K x K max pooling, stride K      avgpool:K  the same, average
**   bn            batch normalization              dropout:P  dropout (seeded from rng)
**   attn:H[:F]    a pre-norm transformer block (nn_transformer_block, H heads, MLP width F,
**                 default 4 C, no dropout) over the positions as tokens of C features; the
**                 first one turns the feature map into tokens (nn_tokens_from_image) and adds
**                 learned position embeddings
**   fc:N          fully connected to N (flattening first), ReLU unless it is the last layer
** e.g. "conv:32:5,pool:2,conv:64:5,pool:2,fc:1024,fc:10". NULL with a message in err on a
** syntax error, a size that does not fit, or out of memory. */
NN_API nn_module *nn_model_from_spec(const char *spec, int64_t in_channels, int64_t h, int64_t w, ad_rng *rng,
                                     nn_error *err);

#ifdef __cplusplus
}
#endif

#endif

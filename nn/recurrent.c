/* recurrent.c: RNN, LSTM and GRU cells, unrolled over time on the tape (backpropagation through time by a plain loop). */
#include "nn_internal.h"

#include <math.h>

typedef enum cell_kind { CELL_RNN, CELL_LSTM, CELL_GRU } cell_kind;

typedef struct cell {
    cell_kind kind;
    int64_t in, hidden;
    nn_act act; /* RNN only */
} cell;

enum { W_IH, W_HH, B_IH, B_HH };

static ad_var invalid(ad_tape *t) { return (ad_var){t, AD_NO_NODE, 0}; }
static ad_var param(nn_module *m, ad_tape *t, int i) { return nn_module_var(m, t, i); }
static int gates(cell_kind k) { return k == CELL_LSTM ? 4 : k == CELL_GRU ? 3 : 1; }

/* Columns [k H, (k + 1) H) of a [N, G H] gate matrix. */
static ad_var gate(ad_var g, int k, int64_t h) { return ad_slice(g, 1, k * h, (k + 1) * h); }

/*
** One step from xw = x W_ih^T + b_ih [N, G H] and the state h [N, H] (c [N, H] for an LSTM):
**   RNN:  h' = act(xw + h W_hh^T + b_hh)
**   LSTM: [i f g o] = xw + h W_hh^T + b_hh; c' = s(f) c + s(i) tanh(g); h' = s(o) tanh(c')
**   GRU:  [xr xz xn] = xw, [hr hz hn] = h W_hh^T + b_hh; r = s(xr + hr), z = s(xz + hz),
**         n = tanh(xn + r hn); h' = (1 - z) n + z h          (s: the logistic sigmoid)
*/
static ad_var step(cell *c, ad_tape *t, ad_var xw, ad_var w_hh, ad_var b_hh, ad_var *h, ad_var *cs)
{
    int64_t H = c->hidden;
    ad_var hw = ad_add(ad_matmul_t(*h, w_hh, false, true), b_hh);
    switch (c->kind) {
    case CELL_RNN: {
        ad_var a = ad_add(xw, hw);
        *h = nn__act_apply(c->act, a, 0.0);
        return *h;
    }
    case CELL_LSTM: {
        ad_var g = ad_add(xw, hw);
        ad_var i = ad_sigmoid(gate(g, 0, H)), f = ad_sigmoid(gate(g, 1, H));
        ad_var gg = ad_tanh(gate(g, 2, H)), o = ad_sigmoid(gate(g, 3, H));
        *cs = ad_add(ad_mul(f, *cs), ad_mul(i, gg));
        *h = ad_mul(o, ad_tanh(*cs));
        return *h;
    }
    case CELL_GRU: {
        ad_var r = ad_sigmoid(ad_add(gate(xw, 0, H), gate(hw, 0, H)));
        ad_var z = ad_sigmoid(ad_add(gate(xw, 1, H), gate(hw, 1, H)));
        ad_var n = ad_tanh(ad_add(gate(xw, 2, H), ad_mul(r, gate(hw, 2, H))));
        *h = ad_add(ad_mul(ad_add_scalar(ad_neg(z), 1.0), n), ad_mul(z, *h));
        return *h;
    }
    }
    return invalid(t);
}

/* Zeros [n, H] of the parameters' dtype where *v is not a valid var. */
static bool state_or_zeros(nn_module *m, ad_tape *t, int64_t n, ad_var *v)
{
    const cell *c = nn_module_state(m);
    if (v->tape) return true;
    *v = ad_full(t, m->params[0].value->dtype, 2, (const int64_t[]){n, c->hidden}, 0.0);
    return ad_ok(*v);
}

static bool is_cell(const nn_module *m);

ad_var nn_cell_step(nn_module *m, ad_tape *t, ad_var x, ad_var *h, ad_var *cs)
{
    if (!t) return invalid(t);
    if (!m || !is_cell(m) || !h || (((cell *)nn_module_state(m))->kind == CELL_LSTM && !cs)) {
        ad__fail(t, AD_ERR_ARG, "nn_cell_step: not a recurrent cell, or h (c for an LSTM) is NULL");
        return invalid(t);
    }
    cell *c = nn_module_state(m);
    const ad_tensor *v = ad_value(x);
    if (!v || v->ndim != 2 || v->shape[1] != c->in) {
        if (v) {
            char s[96];
            ad__fail(t, AD_ERR_SHAPE, "nn_cell_step(%s): input %s is not [N, %lld]", m->ops->kind,
                     ad_shape_str(v->ndim, v->shape, s, sizeof s), (long long)c->in);
        }
        return invalid(t);
    }
    ad_var dummy = AD_NO_VAR;
    if (!cs) cs = &dummy;
    if (!state_or_zeros(m, t, v->shape[0], h) || (c->kind == CELL_LSTM && !state_or_zeros(m, t, v->shape[0], cs)))
        return invalid(t);
    ad_var xw = ad_add(ad_matmul_t(x, param(m, t, W_IH), false, true), param(m, t, B_IH));
    return step(c, t, xw, param(m, t, W_HH), param(m, t, B_HH), h, cs);
}

/* x [N, T, in] -> every hidden state [N, T, H]: one matrix product for the inputs, then a loop over T. */
static ad_var cell_forward(nn_module *m, ad_tape *t, int nin, const ad_var *in)
{
    ad_var x = in[0];
    cell *c = nn_module_state(m);
    const ad_tensor *v = ad_value(x);
    char s[96];
    if (v->ndim != 3 || v->shape[2] != c->in || v->shape[1] < 1) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(%s): input %s is not a sequence [N, T >= 1, %lld]", m->ops->kind,
                 ad_shape_str(v->ndim, v->shape, s, sizeof s), (long long)c->in);
        return invalid(t);
    }
    int64_t n = v->shape[0], steps = v->shape[1], gh = gates(c->kind) * c->hidden;
    if (steps > INT32_MAX) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(%s): %lld time steps are too many", m->ops->kind, (long long)steps);
        return invalid(t);
    }
    ad_var *hs = ad__tape_alloc(t, (size_t)steps * sizeof *hs);
    if (!hs) return invalid(t);
    ad_var xw = ad_add(ad_matmul_t(x, param(m, t, W_IH), false, true), param(m, t, B_IH)); /* [N, T, G H] */
    ad_var w_hh = param(m, t, W_HH), b_hh = param(m, t, B_HH);
    ad_var h = AD_NO_VAR, cs = AD_NO_VAR;
    if (!state_or_zeros(m, t, n, &h) || (c->kind == CELL_LSTM && !state_or_zeros(m, t, n, &cs))) return invalid(t);
    const int64_t row[2] = {n, gh}, col[3] = {n, 1, c->hidden};
    for (int64_t k = 0; k < steps; k++) {
        ad_var xk = ad_reshape(ad_slice(xw, 1, k, k + 1), 2, row);
        hs[k] = ad_reshape(step(c, t, xk, w_hh, b_hh, &h, &cs), 3, col);
    }
    return steps == 1 ? hs[0] : ad_concat((int)steps, hs, 1);
}

#define CELL_OPS(NAME) {.kind = NAME, .n_inputs = 1, .forward = cell_forward, .free = nn__free_state}
static const nn_module_ops rnn_ops = CELL_OPS("rnn_cell");
static const nn_module_ops lstm_ops = CELL_OPS("lstm_cell");
static const nn_module_ops gru_ops = CELL_OPS("gru_cell");

static bool is_cell(const nn_module *m) { return m->ops == &rnn_ops || m->ops == &lstm_ops || m->ops == &gru_ops; }

static nn_module *cell_new(cell_kind kind, const nn_module_ops *ops, int64_t in, int64_t hidden, nn_act act,
                           ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (in < 1 || hidden < 1 || !rng || hidden > INT32_MAX / 4 || (dtype != AD_F32 && dtype != AD_F64)) {
        nn_error_set(err, AD_ERR_ARG, "nn_%s: %s", ops->kind,
                     !rng                                   ? "NULL rng"
                     : dtype != AD_F32 && dtype != AD_F64 ? "dtype must be F32 or F64"
                                                            : "sizes must be in [1, 2^29)");
        return NULL;
    }
    nn_module *m = nn__module_with_state(ops, sizeof(cell), ops->kind, err);
    if (!m) return NULL;
    cell *c = nn_module_state(m);
    c->kind = kind;
    c->in = in;
    c->hidden = hidden;
    c->act = act;
    int64_t gh = gates(kind) * hidden;
    const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    const int64_t shapes[4][2] = {{gh, in}, {gh, hidden}, {gh, 0}, {gh, 0}};
    double bound = 1.0 / sqrt((double)hidden);
    for (int i = 0; i < 4; i++) {
        if (nn__add_filled(m, names[i], dtype, i < 2 ? 2 : 1, shapes[i], 0.0, false, err) != AD_OK) {
            nn_module_free(m);
            return NULL;
        }
        ad_rng_fill_uniform(rng, m->params[i].value, -bound, bound);
    }
    if (kind == CELL_LSTM) /* forget gate biases at 1 */
        for (int64_t k = hidden; k < 2 * hidden; k++) ad_tensor_set(m->params[B_IH].value, k, 1.0);
    return m;
}

nn_module *nn_rnn_cell_ex(int64_t in, int64_t hidden, nn_act act, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    if (act != NN_TANH && act != NN_RELU) {
        nn_error_set(err, AD_ERR_ARG, "nn_rnn_cell: the activation is %s, not tanh or relu", nn_act_name(act));
        return NULL;
    }
    return cell_new(CELL_RNN, &rnn_ops, in, hidden, act, dtype, rng, err);
}
nn_module *nn_lstm_cell_ex(int64_t in, int64_t hidden, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    return cell_new(CELL_LSTM, &lstm_ops, in, hidden, NN_TANH, dtype, rng, err);
}
nn_module *nn_gru_cell_ex(int64_t in, int64_t hidden, ad_dtype dtype, ad_rng *rng, nn_error *err)
{
    return cell_new(CELL_GRU, &gru_ops, in, hidden, NN_TANH, dtype, rng, err);
}
nn_module *nn_rnn_cell(int64_t in, int64_t hidden, nn_act act, ad_rng *rng, nn_error *err)
{
    return nn_rnn_cell_ex(in, hidden, act, AD_F32, rng, err);
}
nn_module *nn_lstm_cell(int64_t in, int64_t hidden, ad_rng *rng, nn_error *err)
{
    return nn_lstm_cell_ex(in, hidden, AD_F32, rng, err);
}
nn_module *nn_gru_cell(int64_t in, int64_t hidden, ad_rng *rng, nn_error *err)
{
    return nn_gru_cell_ex(in, hidden, AD_F32, rng, err);
}

/* ---- the last time step ---- */

static ad_var last_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    ad_var x = in[0];
    const ad_tensor *v = ad_value(x);
    char s[96];
    if (v->ndim != 3 || v->shape[1] < 1) {
        ad__fail(t, AD_ERR_SHAPE, "nn_forward(last_step): input %s is not a sequence [N, T >= 1, D]",
                 ad_shape_str(v->ndim, v->shape, s, sizeof s));
        return invalid(t);
    }
    return ad_reshape(ad_slice(x, 1, -1, v->shape[1]), 2, (const int64_t[]){v->shape[0], v->shape[2]});
}

static const nn_module_ops last_ops = {.kind = "last_step", .n_inputs = 1, .forward = last_forward};

nn_module *nn_last_step(nn_error *err) { return nn_module_new(&last_ops, NULL, err); }

/* dense.c: the linear layer, activations (one table: name, op, init gain) and the multilayer perceptron. */
#include "nn_internal.h"

#include <math.h>

/* ---- activations: one row each ---- */

static ad_var act_identity(ad_var x, double p) { return (void)p, x; }
static ad_var act_sigmoid(ad_var x, double p) { return (void)p, ad_sigmoid(x); }
static ad_var act_tanh(ad_var x, double p) { return (void)p, ad_tanh(x); }
static ad_var act_relu(ad_var x, double p) { return (void)p, ad_relu(x); }
static ad_var act_leaky_relu(ad_var x, double slope) { return ad_leaky_relu(x, slope); }
static ad_var act_gelu(ad_var x, double p) { return (void)p, ad_gelu(x); }
static ad_var act_softmax(ad_var x, double p) { return (void)p, ad_softmax(x, -1); }

static ad_var activation_forward(nn_module *m, ad_tape *t, int n, const ad_var *in);

typedef struct act_row {
    nn_module_ops ops; /* ops.kind is the activation's name */
    ad_var (*op)(ad_var x, double param);
    double gain;  /* the recommended init gain (PyTorch's calculate_gain) */
    nn_init init; /* nn_mlp's initializer for the layers this activation follows */
} act_row;

#define ACT(A, NAME, OP, GAIN, INIT) [A] = {{NAME, 1, activation_forward, nn__free_state, NULL}, OP, GAIN, INIT}
static const act_row acts[NN_ACT_COUNT] = {
    ACT(NN_IDENTITY, "identity", act_identity, 1.0, NN_INIT_XAVIER_UNIFORM),
    ACT(NN_SIGMOID, "sigmoid", act_sigmoid, 1.0, NN_INIT_XAVIER_UNIFORM),
    ACT(NN_TANH, "tanh", act_tanh, 5.0 / 3.0, NN_INIT_XAVIER_UNIFORM),
    ACT(NN_RELU, "relu", act_relu, 1.4142135623730951 /* sqrt 2 */, NN_INIT_HE_UNIFORM),
    ACT(NN_LEAKY_RELU, "leaky_relu", act_leaky_relu, 1.4141428569978354 /* sqrt(2 / (1 + 0.01^2)) */,
        NN_INIT_HE_UNIFORM),
    ACT(NN_GELU, "gelu", act_gelu, 1.4142135623730951, NN_INIT_HE_UNIFORM),
    ACT(NN_SOFTMAX, "softmax", act_softmax, 1.0, NN_INIT_XAVIER_UNIFORM),
};

static const act_row *act_of(nn_act a) { return (int)a >= 0 && (int)a < NN_ACT_COUNT ? &acts[a] : NULL; }

const char *nn_act_name(nn_act a) { return act_of(a) ? acts[a].ops.kind : "?"; }

double nn_init_gain(nn_act a) { return act_of(a) ? acts[a].gain : 1.0; }

bool nn_act_from_name(const char *name, nn_act *out)
{
    static const struct {
        const char *name;
        nn_act act;
    } aliases[] = {{"logistic", NN_SIGMOID}, {"linear", NN_IDENTITY}, {"none", NN_IDENTITY},
                   {"leaky-relu", NN_LEAKY_RELU}, {"leakyrelu", NN_LEAKY_RELU}};
    if (!name) return false;
    for (int i = 0; i < NN_ACT_COUNT; i++)
        if (strcmp(name, acts[i].ops.kind) == 0) {
            if (out) *out = (nn_act)i;
            return true;
        }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].name) == 0) {
            if (out) *out = aliases[i].act;
            return true;
        }
    return false;
}

ad_var nn__act_apply(nn_act a, ad_var x, double param)
{
    if (!act_of(a)) {
        if (x.tape) ad__fail(x.tape, AD_ERR_ARG, "activation: unknown nn_act %d", (int)a);
        return ad__no_var(x.tape);
    }
    return acts[a].op(x, param);
}

typedef struct activation {
    nn_act act;
    double param;
} activation;

static ad_var activation_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    const activation *a = nn_module_state(m);
    return acts[a->act].op(in[0], a->param);
}

nn_module *nn_activation_ex(nn_act a, double param, nn_error *err)
{
    if (!act_of(a)) {
        nn_error_set(err, AD_ERR_ARG, "nn_activation: unknown activation %d", (int)a);
        return NULL;
    }
    nn_module *m = nn__module_with_state(&acts[a].ops, sizeof(activation), "nn_activation", err);
    if (!m) return NULL;
    activation *s = nn_module_state(m);
    s->act = a;
    s->param = param;
    return m;
}

nn_module *nn_activation(nn_act a, nn_error *err) { return nn_activation_ex(a, 0.01, err); }

/* ---- linear: y = x W^T + b ---- */

static ad_var linear_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    ad_var y = ad_matmul_t(in[0], nn_module_var(m, t, 0), false, true);
    if (m->nown > 1) y = ad_add(y, nn_module_var(m, t, 1)); /* the bias */
    return y;
}

static const nn_module_ops linear_ops = {.kind = "linear", .n_inputs = 1, .forward = linear_forward};

nn_module *nn_linear_ex(int64_t in, int64_t out, bool bias, nn_init init, double gain, ad_dtype dtype, ad_rng *rng,
                        nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (in < 1 || out < 1 || (dtype != AD_F32 && dtype != AD_F64) || (init != NN_INIT_ZEROS && !rng)) {
        nn_error_set(err, AD_ERR_ARG, "nn_linear: %s", in < 1 || out < 1 ? "sizes must be >= 1"
                                                       : !rng && init != NN_INIT_ZEROS ? "NULL rng"
                                                                                       : "dtype must be F32 or F64");
        return NULL;
    }
    nn_module *m = nn_module_new(&linear_ops, NULL, err);
    if (!m) return NULL;
    ad_status st = nn__add_filled(m, "weight", dtype, 2, (const int64_t[]){out, in}, 0.0, false, err);
    if (st == AD_OK) st = nn_init_tensor(m->params[0].value, init, gain, rng, err);
    if (st == AD_OK && bias) st = nn__add_filled(m, "bias", dtype, 1, (const int64_t[]){out}, 0.0, false, err);
    if (st != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

nn_module *nn_linear(int64_t in, int64_t out, ad_rng *rng, nn_error *err)
{
    return nn_linear_ex(in, out, true, NN_INIT_HE_UNIFORM, 0.0, AD_F32, rng, err);
}

/* ---- multilayer perceptron ---- */

nn_module *nn_mlp(int n, const int64_t *sizes, nn_act hidden, ad_rng *rng, nn_error *err)
{
    if (n < 2 || n > 4096 || !sizes || !rng || !act_of(hidden)) {
        nn_error_set(err, AD_ERR_ARG, "nn_mlp: %s",
                     n < 2 || n > 4096 ? "need 2 to 4096 layer sizes"
                     : !sizes || !rng  ? "NULL sizes or rng"
                                       : "unknown hidden activation");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (sizes[i] < 1) {
            nn_error_set(err, AD_ERR_ARG, "nn_mlp: layer size %d is %lld; sizes must be >= 1", i, (long long)sizes[i]);
            return NULL;
        }
    int nmods = 2 * (n - 1) - 1;
    nn_module **mods = ad__calloc((size_t)nmods, sizeof *mods);
    if (!mods) {
        nn_error_set(err, AD_ERR_NOMEM, "nn_mlp: out of memory");
        return NULL;
    }
    for (int i = 0; i + 1 < n; i++) {
        mods[2 * i] = nn_linear_ex(sizes[i], sizes[i + 1], true, acts[hidden].init, acts[hidden].gain, AD_F32, rng, err);
        if (i + 2 < n) mods[2 * i + 1] = nn_activation(hidden, err);
    }
    nn_module *s = nn_sequential(nmods, mods, err); /* frees every module when one is NULL */
    ad__free(mods);
    return s;
}

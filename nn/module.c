/* module.c: modules and their parameters: the base, linear, activations, sequential, MLP. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

/* ---- the base ---- */

void nn__module_init(nn_module *m, const nn_module_vtable *vt)
{
    m->vt = vt;
    m->params = NULL;
    m->nparams = m->params_cap = 0;
    m->owns_tensors = false;
    m->training = true;
}

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ad__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static bool grow_params(nn_module *m)
{
    if (m->nparams < m->params_cap) return true;
    int cap = m->params_cap ? 2 * m->params_cap : 4;
    nn_param *p = ad__realloc(m->params, (size_t)cap * sizeof *p);
    if (!p) return false;
    m->params = p;
    m->params_cap = cap;
    return true;
}

ad_status nn__module_add_param(nn_module *m, const char *name, ad_tensor *value, ad_tensor *grad)
{
    char *nm = NULL;
    if (!value || !grow_params(m) || !(nm = str_dup(name))) {
        ad_tensor_free(value);
        ad_tensor_free(grad);
        return AD_ERR_NOMEM;
    }
    m->owns_tensors = true;
    m->params[m->nparams++] = (nn_param){nm, value, grad};
    return AD_OK;
}

ad_status nn__module_adopt_params(nn_module *m, const char *prefix, nn_module *child)
{
    for (int i = 0; i < child->nparams; i++) {
        const nn_param *p = &child->params[i];
        size_t n = strlen(prefix) + strlen(p->name) + 2;
        char *nm = ad__malloc(n);
        if (!nm || !grow_params(m)) {
            ad__free(nm);
            return AD_ERR_NOMEM;
        }
        snprintf(nm, n, "%s.%s", prefix, p->name);
        m->params[m->nparams++] = (nn_param){nm, p->value, p->grad};
    }
    return AD_OK;
}

void nn_module_free(nn_module *m)
{
    if (!m) return;
    if (m->vt && m->vt->free) m->vt->free(m);
    for (int i = 0; i < m->nparams; i++) {
        ad__free((void *)m->params[i].name);
        if (m->owns_tensors) {
            ad_tensor_free(m->params[i].value);
            ad_tensor_free(m->params[i].grad);
        }
    }
    ad__free(m->params);
    ad__free(m);
}

ad_var nn_forward(nn_module *m, ad_tape *t, ad_var x)
{
    if (!m || !m->vt || !m->vt->forward) {
        if (t) ad__fail(t, AD_ERR_ARG, "nn_forward: NULL module");
        return ad__no_var(t);
    }
    if (!ad_ok(x)) {
        /* an earlier error (kept on the tape), a stale or foreign handle */
        if (t && ad_tape_status(t) == AD_OK) ad__fail(t, AD_ERR_STATE, "nn_forward(%s): invalid input var", m->vt->kind);
        return ad__no_var(t);
    }
    return m->vt->forward(m, t, x);
}

int nn_module_params(nn_module *m, nn_param **out)
{
    if (out) *out = m ? m->params : NULL;
    return m ? m->nparams : 0;
}

nn_param *nn_module_param(nn_module *m, const char *name)
{
    if (!m || !name) return NULL;
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

int64_t nn_module_num_weights(nn_module *m)
{
    int64_t n = 0;
    for (int i = 0; m && i < m->nparams; i++)
        if (m->params[i].grad) n += m->params[i].value->size;
    return n;
}

const char *nn_module_kind(const nn_module *m) { return m && m->vt ? m->vt->kind : "?"; }

void nn_module_set_training(nn_module *m, bool on)
{
    if (!m) return;
    m->training = on;
    if (m->vt->set_training) m->vt->set_training(m, on);
}

bool nn_module_training(const nn_module *m) { return m && m->training; }

void nn_zero_grad(nn_module *m)
{
    for (int i = 0; m && i < m->nparams; i++) {
        ad_tensor *g = m->params[i].grad;
        if (g && g->size) memset(g->data, 0, (size_t)g->size * ad_dtype_size(g->dtype)); /* +0.0: all bits zero */
    }
}

/* ---- linear: y = x W^T + b ---- */

typedef struct linear {
    nn_module base;
    int64_t in, out;
    ad_tensor *w, *wg, *b, *bg; /* owned through base.params */
} linear;

static ad_var linear_forward(nn_module *m, ad_tape *t, ad_var x)
{
    linear *l = (linear *)m;
    ad_var w = ad_param(t, l->w, l->wg);
    ad_var y = ad_matmul_t(x, w, false, true);
    if (l->b) y = ad_add(y, ad_param(t, l->b, l->bg));
    return y;
}

static const nn_module_vtable linear_vt = {"linear", linear_forward, NULL, NULL};

nn_module *nn_linear_ex(int64_t in, int64_t out, bool bias, nn_init init, double gain, ad_dtype dtype, ad_rng *rng)
{
    if (in < 1 || out < 1 || ad_dtype_size(dtype) == 0 || (init != NN_INIT_ZEROS && !rng)) return NULL;
    linear *l = ad__calloc(1, sizeof *l);
    if (!l) return NULL;
    nn__module_init(&l->base, &linear_vt);
    l->in = in;
    l->out = out;
    if (nn__module_add_param(&l->base, "weight", ad_tensor_new(dtype, AD_SHAPE(out, in)),
                             ad_tensor_new(dtype, AD_SHAPE(out, in))) != AD_OK ||
        !l->base.params[0].grad)
        goto fail;
    l->w = l->base.params[0].value;
    l->wg = l->base.params[0].grad;
    if (nn_init_tensor(l->w, init, gain, rng) != AD_OK) goto fail;
    if (bias) {
        if (nn__module_add_param(&l->base, "bias", ad_tensor_new(dtype, AD_SHAPE(out)),
                                 ad_tensor_new(dtype, AD_SHAPE(out))) != AD_OK ||
            !l->base.params[1].grad)
            goto fail;
        l->b = l->base.params[1].value;
        l->bg = l->base.params[1].grad;
    }
    return &l->base;
fail:
    nn_module_free(&l->base);
    return NULL;
}

nn_module *nn_linear(int64_t in, int64_t out, ad_rng *rng)
{
    return nn_linear_ex(in, out, true, NN_INIT_HE_UNIFORM, 0.0, AD_F32, rng);
}

/* ---- activations ---- */

typedef struct activation {
    nn_module base;
    nn_act act;
    double param;
} activation;

static ad_var activation_forward(nn_module *m, ad_tape *t, ad_var x)
{
    const activation *a = (const activation *)m;
    switch (a->act) {
    case NN_IDENTITY: return x;
    case NN_SIGMOID: return ad_sigmoid(x);
    case NN_TANH: return ad_tanh(x);
    case NN_RELU: return ad_relu(x);
    case NN_LEAKY_RELU: return ad_leaky_relu(x, a->param);
    case NN_GELU: return ad_gelu(x);
    case NN_SOFTMAX: return ad_softmax(x, -1);
    }
    ad__fail(t, AD_ERR_ARG, "nn_forward: unknown activation %d", (int)a->act);
    return ad__no_var(t);
}

static const nn_module_vtable act_vts[] = {
    [NN_IDENTITY] = {"identity", activation_forward, NULL, NULL},
    [NN_SIGMOID] = {"sigmoid", activation_forward, NULL, NULL},
    [NN_TANH] = {"tanh", activation_forward, NULL, NULL},
    [NN_RELU] = {"relu", activation_forward, NULL, NULL},
    [NN_LEAKY_RELU] = {"leaky_relu", activation_forward, NULL, NULL},
    [NN_GELU] = {"gelu", activation_forward, NULL, NULL},
    [NN_SOFTMAX] = {"softmax", activation_forward, NULL, NULL},
};
#define NACTS ((int)(sizeof act_vts / sizeof act_vts[0]))

const char *nn_act_name(nn_act a) { return (int)a >= 0 && (int)a < NACTS ? act_vts[a].kind : "?"; }

bool nn_act_from_name(const char *name, nn_act *out)
{
    static const struct {
        const char *name;
        nn_act act;
    } aliases[] = {{"logistic", NN_SIGMOID}, {"linear", NN_IDENTITY}, {"none", NN_IDENTITY},
                   {"leaky-relu", NN_LEAKY_RELU}, {"leakyrelu", NN_LEAKY_RELU}};
    if (!name) return false;
    for (int i = 0; i < NACTS; i++)
        if (strcmp(name, act_vts[i].kind) == 0) {
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

nn_module *nn_activation_ex(nn_act a, double param)
{
    if ((int)a < 0 || (int)a >= NACTS) return NULL;
    activation *m = ad__calloc(1, sizeof *m);
    if (!m) return NULL;
    nn__module_init(&m->base, &act_vts[a]);
    m->act = a;
    m->param = param;
    return &m->base;
}

nn_module *nn_activation(nn_act a) { return nn_activation_ex(a, 0.01); }

/* ---- sequential ---- */

typedef struct sequential {
    nn_module base;
    int n;
    nn_module **mods;
} sequential;

static ad_var sequential_forward(nn_module *m, ad_tape *t, ad_var x)
{
    sequential *s = (sequential *)m;
    for (int i = 0; i < s->n; i++) x = nn_forward(s->mods[i], t, x);
    return x;
}

static void sequential_free(nn_module *m)
{
    sequential *s = (sequential *)m;
    for (int i = 0; i < s->n; i++) nn_module_free(s->mods[i]);
    ad__free(s->mods);
}

static void sequential_set_training(nn_module *m, bool on)
{
    sequential *s = (sequential *)m;
    for (int i = 0; i < s->n; i++) nn_module_set_training(s->mods[i], on);
}

static const nn_module_vtable sequential_vt = {"sequential", sequential_forward, sequential_free,
                                               sequential_set_training};

nn_module *nn_sequential(int n, nn_module *const *mods)
{
    bool ok = n >= 1 && mods;
    for (int i = 0; ok && i < n; i++) ok = mods[i] != NULL;
    sequential *s = ok ? ad__calloc(1, sizeof *s) : NULL;
    nn_module **own = s ? ad__malloc((size_t)n * sizeof *own) : NULL;
    if (!own) {
        for (int i = 0; mods && i < n; i++) nn_module_free(mods[i]);
        ad__free(s);
        return NULL;
    }
    nn__module_init(&s->base, &sequential_vt);
    memcpy(own, mods, (size_t)n * sizeof *own);
    s->mods = own;
    s->n = n;
    for (int i = 0; i < n; i++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%d", i);
        if (nn__module_adopt_params(&s->base, prefix, own[i]) != AD_OK) {
            nn_module_free(&s->base);
            return NULL;
        }
    }
    return &s->base;
}

/* ---- multilayer perceptron ---- */

nn_module *nn_mlp(int n, const int64_t *sizes, nn_act hidden, ad_rng *rng)
{
    if (n < 2 || !sizes || !rng || (int)hidden < 0 || (int)hidden >= NACTS || n > 4096) return NULL;
    for (int i = 0; i < n; i++)
        if (sizes[i] < 1) return NULL;
    bool he = hidden == NN_RELU || hidden == NN_LEAKY_RELU || hidden == NN_GELU;
    nn_init init = he ? NN_INIT_HE_UNIFORM : NN_INIT_XAVIER_UNIFORM;
    double gain = nn_init_gain(hidden);
    int nmods = 2 * (n - 1) - 1;
    nn_module **mods = ad__calloc((size_t)nmods, sizeof *mods);
    if (!mods) return NULL;
    for (int i = 0; i + 1 < n; i++) {
        mods[2 * i] = nn_linear_ex(sizes[i], sizes[i + 1], true, init, gain, AD_F32, rng);
        if (i + 2 < n) mods[2 * i + 1] = nn_activation(hidden);
    }
    nn_module *s = nn_sequential(nmods, mods); /* frees every module when one is NULL */
    ad__free(mods);
    return s;
}

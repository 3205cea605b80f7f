/* module.c: the module interface (nn_module.h): parameters, buffers, children, freezing, forward, training flag. */
#include "nn_internal.h"

#include <stdio.h>

/* ---- construction ---- */

nn_module *nn_module_new(const nn_module_ops *ops, void *state, nn_error *err)
{
    nn_module *m = ops && ops->forward ? ad__calloc(1, sizeof *m) : NULL;
    if (!m) {
        if (ops && ops->free) {
            nn_module tmp = {.ops = ops, .state = state}; /* so that free can reach the state */
            ops->free(&tmp);
        }
        nn_error_set(err, ops && ops->forward ? AD_ERR_NOMEM : AD_ERR_ARG, "nn_module_new: %s",
                     !ops ? "NULL ops" : !ops->forward ? "ops->forward is NULL" : "out of memory");
        return NULL;
    }
    m->ops = ops;
    m->state = state;
    m->training = true;
    return m;
}

void *nn_module_state(const nn_module *m) { return m ? m->state : NULL; }
const nn_module_ops *nn_module_ops_of(const nn_module *m) { return m ? m->ops : NULL; }

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ad__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* "<prefix>.<name>", or a copy of name when prefix is NULL. */
static char *join_name(const char *prefix, const char *name)
{
    if (!prefix) return str_dup(name);
    size_t n = strlen(prefix) + strlen(name) + 2;
    char *s = ad__malloc(n);
    if (s) snprintf(s, n, "%s.%s", prefix, name);
    return s;
}

/* Room for k more entries in the flat list. */
static bool reserve_params(nn_module *m, int k)
{
    if (m->nparams + k <= m->params_cap) return true;
    int cap = m->params_cap ? m->params_cap : 4;
    while (cap < m->nparams + k) cap *= 2;
    nn_param *p = ad__realloc(m->params, (size_t)cap * sizeof *p);
    if (!p) return false;
    m->params = p;
    m->params_cap = cap;
    return true;
}

/* Checks a new own name in m; 0 when fine, else the status (with the message in err). */
static ad_status check_name(nn_module *m, const char *fn, const char *name, nn_error *err)
{
    if (!m) return nn_error_set(err, AD_ERR_ARG, "%s: NULL module", fn);
    if (m->parent)
        return nn_error_set(err, AD_ERR_STATE, "%s(%s): the module is already a child; add '%s' before adding it to a container",
                            fn, m->ops->kind, name ? name : "(null)");
    if (!name || !*name || strchr(name, '.'))
        return nn_error_set(err, AD_ERR_ARG, "%s(%s): bad name '%s' (non-empty, no '.')", fn, m->ops->kind,
                            name ? name : "(null)");
    for (int i = 0; i < m->nown; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return nn_error_set(err, AD_ERR_ARG, "%s(%s): duplicate name '%s'", fn, m->ops->kind, name);
    for (int i = 0; i < m->nchildren; i++)
        if (strcmp(m->child_names[i], name) == 0)
            return nn_error_set(err, AD_ERR_ARG, "%s(%s): '%s' is already a child's name", fn, m->ops->kind, name);
    return AD_OK;
}

/* Inserts an own entry at position m->nown (own entries come before the children's). */
static nn_param *add_own(nn_module *m, const char *fn, const char *name, ad_tensor *value, bool param, bool trainable,
                         nn_error *err)
{
    ad_tensor *grad = NULL;
    char *nm = NULL;
    if (check_name(m, fn, name, err) != AD_OK) goto fail;
    if (!value) {
        nn_error_set(err, AD_ERR_NOMEM, "%s(%s): '%s': no tensor (out of memory?)", fn, m->ops->kind, name);
        goto fail;
    }
    if (value->dtype != AD_F32 && value->dtype != AD_F64) {
        nn_error_set(err, AD_ERR_DTYPE, "%s(%s): '%s' is %s, not F32 or F64", fn, m->ops->kind, name,
                     ad_dtype_name(value->dtype));
        goto fail;
    }
    if ((param && !(grad = ad_tensor_new(value->dtype, value->ndim, value->shape))) || !(nm = str_dup(name)) ||
        !reserve_params(m, 1)) {
        nn_error_set(err, AD_ERR_NOMEM, "%s(%s): out of memory for '%s'", fn, m->ops->kind, name);
        goto fail;
    }
    memmove(&m->params[m->nown + 1], &m->params[m->nown], (size_t)(m->nparams - m->nown) * sizeof *m->params);
    nn_param *p = &m->params[m->nown++];
    *p = (nn_param){nm, value, grad, param && trainable};
    m->nparams++;
    return p;
fail:
    ad__free(nm);
    ad_tensor_free(grad);
    ad_tensor_free(value);
    return NULL;
}

nn_param *nn_module_add_param(nn_module *m, const char *name, ad_tensor *value, bool trainable, nn_error *err)
{
    return add_own(m, "nn_module_add_param", name, value, true, trainable, err);
}

nn_param *nn_module_add_buffer(nn_module *m, const char *name, ad_tensor *value, nn_error *err)
{
    return add_own(m, "nn_module_add_buffer", name, value, false, false, err);
}

ad_status nn_module_add_child(nn_module *m, const char *name, nn_module *child, nn_error *err)
{
    ad_status st = check_name(m, "nn_module_add_child", name, err);
    if (st == AD_OK && !child) /* a failed constructor: keep its message if it left one */
        st = err && err->status != AD_OK ? err->status
                                          : nn_error_set(err, AD_ERR_ARG, "nn_module_add_child: child '%s' is NULL", name);
    if (st == AD_OK && child->parent)
        st = nn_error_set(err, AD_ERR_STATE, "nn_module_add_child: '%s' already has a parent", name);
    if (st == AD_OK && child == m) st = nn_error_set(err, AD_ERR_ARG, "nn_module_add_child: a module is not its own child");
    if (st != AD_OK) {
        if (!child || !child->parent) nn_module_free(child);
        return st;
    }
    char *cname = str_dup(name);
    bool ok = cname && reserve_params(m, child->nparams);
    if (ok && m->nchildren == m->children_cap) {
        int cap = m->children_cap ? 2 * m->children_cap : 4;
        nn_module **c = ad__realloc(m->children, (size_t)cap * sizeof *c);
        char **n = c ? ad__realloc(m->child_names, (size_t)cap * sizeof *n) : NULL;
        if (c) m->children = c;
        if (n) m->child_names = n;
        ok = c && n;
        if (ok) m->children_cap = cap;
    }
    int added = 0;
    while (ok && added < child->nparams) {
        const nn_param *p = &child->params[added];
        char *nm = join_name(name, p->name);
        if (!nm) ok = false;
        else m->params[m->nparams + added++] = (nn_param){nm, p->value, p->grad, p->requires_grad};
    }
    if (!ok) {
        for (int i = 0; i < added; i++) ad__free((void *)m->params[m->nparams + i].name);
        ad__free(cname);
        nn_module_free(child);
        return nn_error_set(err, AD_ERR_NOMEM, "nn_module_add_child: out of memory adding '%s'", name);
    }
    m->nparams += added;
    m->children[m->nchildren] = child;
    m->child_names[m->nchildren++] = cname;
    child->parent = m;
    if (child->training != m->training) nn_module_set_training(child, m->training);
    return AD_OK;
}

int nn_module_num_children(const nn_module *m) { return m ? m->nchildren : 0; }
nn_module *nn_module_child(const nn_module *m, int i) { return m && i >= 0 && i < m->nchildren ? m->children[i] : NULL; }
const char *nn_module_child_name(const nn_module *m, int i)
{
    return m && i >= 0 && i < m->nchildren ? m->child_names[i] : NULL;
}

void nn_module_free(nn_module *m)
{
    if (!m) return;
    if (m->ops && m->ops->free) m->ops->free(m);
    for (int i = 0; i < m->nchildren; i++) {
        m->children[i]->parent = NULL;
        nn_module_free(m->children[i]);
        ad__free(m->child_names[i]);
    }
    for (int i = 0; i < m->nparams; i++) {
        ad__free((void *)m->params[i].name);
        if (i < m->nown) {
            ad_tensor_free(m->params[i].value);
            ad_tensor_free(m->params[i].grad);
        }
    }
    ad__free(m->children);
    ad__free(m->child_names);
    ad__free(m->params);
    ad__free(m);
}

/* ---- the tape side ---- */

ad_var nn_param_var(ad_tape *t, const nn_param *p)
{
    if (!p || !p->value) {
        if (t) ad__fail(t, AD_ERR_ARG, "nn_param_var: NULL parameter");
        return ad__no_var(t);
    }
    return p->grad && p->requires_grad ? ad_param(t, p->value, p->grad) : ad_const(t, p->value);
}

ad_var nn_module_var(nn_module *m, ad_tape *t, int i)
{
    if (!m || i < 0 || i >= m->nparams) {
        if (t) ad__fail(t, AD_ERR_INDEX, "nn_module_var(%s): no parameter %d", nn_module_kind(m), i);
        return ad__no_var(t);
    }
    return nn_param_var(t, &m->params[i]);
}

ad_var nn_forward_n(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    if (!t) return ad__no_var(t);
    if (!m) {
        ad__fail(t, AD_ERR_ARG, "nn_forward: NULL module");
        return ad__no_var(t);
    }
    if (n < 1 || !in || (m->ops->n_inputs > 0 && n != m->ops->n_inputs)) {
        if (ad_tape_status(t) == AD_OK)
            ad__fail(t, AD_ERR_ARG, "nn_forward(%s): %d input%s given, it takes %d", m->ops->kind, in ? n : 0,
                     n == 1 ? "" : "s", m->ops->n_inputs);
        return ad__no_var(t);
    }
    for (int i = 0; i < n; i++)
        if (!ad_ok(in[i]) || in[i].tape != t) {
            /* an earlier error (kept on the tape), a stale or a foreign handle */
            if (ad_tape_status(t) == AD_OK)
                ad__fail(t, AD_ERR_STATE, "nn_forward(%s): input %d is not a valid var of this tape", m->ops->kind, i);
            return ad__no_var(t);
        }
    return m->ops->forward(m, t, n, in);
}

ad_var nn_forward(nn_module *m, ad_tape *t, ad_var x) { return nn_forward_n(m, t, 1, &x); }

/* ---- the parameter list ---- */

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

/* name is pattern, or pattern is empty, or name starts with "pattern." */
static bool name_matches(const char *name, const char *pattern)
{
    size_t n = strlen(pattern);
    return n == 0 || (strncmp(name, pattern, n) == 0 && (name[n] == '\0' || name[n] == '.'));
}

/* Sets requires_grad of every entry holding value, in m and below. */
static void set_flag_below(nn_module *m, const ad_tensor *value, bool on)
{
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].value == value && m->params[i].grad) m->params[i].requires_grad = on;
    for (int i = 0; i < m->nchildren; i++) set_flag_below(m->children[i], value, on);
}

ad_status nn_module_set_requires_grad(nn_module *m, const char *name, bool on, nn_error *err)
{
    if (!m) return nn_error_set(err, AD_ERR_ARG, "nn_module_set_requires_grad: NULL module");
    nn_module *root = m;
    while (root->parent) root = root->parent;
    int hits = 0;
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].grad && name_matches(m->params[i].name, name ? name : "")) {
            set_flag_below(root, m->params[i].value, on);
            hits++;
        }
    if (!hits)
        return nn_error_set(err, AD_ERR_ARG, "nn_module_set_requires_grad(%s): no parameter is called '%s' or starts with '%s.'",
                            m->ops->kind, name ? name : "", name ? name : "");
    return AD_OK;
}

int64_t nn_module_num_weights(nn_module *m)
{
    int64_t n = 0;
    for (int i = 0; m && i < m->nparams; i++)
        if (m->params[i].grad) n += m->params[i].value->size;
    return n;
}

const char *nn_module_kind(const nn_module *m) { return m ? m->ops->kind : "?"; }

void nn_module_set_training(nn_module *m, bool on)
{
    if (!m) return;
    m->training = on;
    for (int i = 0; i < m->nchildren; i++) nn_module_set_training(m->children[i], on);
    if (m->ops->set_training) m->ops->set_training(m, on);
}

bool nn_module_training(const nn_module *m) { return m && m->training; }

void nn_zero_grad(nn_module *m)
{
    for (int i = 0; m && i < m->nparams; i++) {
        ad_tensor *g = m->params[i].grad;
        if (g && g->size) memset(g->data, 0, (size_t)g->size * ad_dtype_size(g->dtype)); /* +0.0: all bits zero */
    }
}

/* ---- helpers for the library's own kinds ---- */

void nn__free_state(nn_module *m) { ad__free(m->state); }

nn_module *nn__module_with_state(const nn_module_ops *ops, size_t size, const char *fn, nn_error *err)
{
    void *s = size ? ad__calloc(1, size) : NULL;
    if (size && !s) {
        nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    nn_module *m = nn_module_new(ops, s, NULL);
    if (!m) nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
    return m;
}

ad_status nn__add_filled(nn_module *m, const char *name, ad_dtype dt, int nd, const int64_t *shape, double v,
                         bool buffer, nn_error *err)
{
    ad_tensor *t = ad_tensor_new(dt, nd, shape);
    if (t) ad_tensor_fill(t, v);
    nn_param *p = buffer ? nn_module_add_buffer(m, name, t, err) : nn_module_add_param(m, name, t, true, err);
    return p ? AD_OK : err ? err->status : AD_ERR_NOMEM;
}

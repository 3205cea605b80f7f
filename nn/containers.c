/* containers.c: modules made of modules: sequential, residual and parallel. */
#include "nn_internal.h"

#include <stdio.h>

/* Adds mods[0..n) as children "0", "1", ... of m; takes them all, also on failure (m is then freed). */
static nn_module *adopt_all(nn_module *m, int n, nn_module *const *mods, nn_error *err)
{
    ad_status st = m ? AD_OK : AD_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        if (st != AD_OK) {
            nn_module_free(mods[i]);
            continue;
        }
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        st = nn_module_add_child(m, name, mods[i], err);
    }
    if (st != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* A NULL module in mods (a failed constructor): frees the others, and reports it unless
** err already holds that constructor's failure. */
static bool any_null(const char *fn, int n, nn_module *const *mods, nn_error *err)
{
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++)
        if (!mods[i]) bad = i;
    if (bad < 0) return false;
    for (int i = 0; i < n; i++) nn_module_free(mods[i]);
    if (err && err->status == AD_OK) nn_error_set(err, AD_ERR_ARG, "%s: module %d is NULL (its constructor failed)", fn, bad);
    return true;
}

/* ---- sequential: mods[0] takes the inputs, each next one the previous output ---- */

static ad_var sequential_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    ad_var x = nn_forward_n(nn_module_child(m, 0), t, n, in);
    for (int i = 1; i < nn_module_num_children(m); i++) x = nn_forward(nn_module_child(m, i), t, x);
    return x;
}

static const nn_module_ops sequential_ops = {.kind = "sequential", .forward = sequential_forward};

nn_module *nn_sequential(int n, nn_module *const *mods, nn_error *err)
{
    if (n < 1 || !mods) {
        for (int i = 0; mods && i < n; i++) nn_module_free(mods[i]);
        nn_error_set(err, AD_ERR_ARG, "nn_sequential: no modules");
        return NULL;
    }
    if (any_null("nn_sequential", n, mods, err)) return NULL;
    return adopt_all(nn_module_new(&sequential_ops, NULL, err), n, mods, err);
}

/* ---- residual: y = x + inner(x) ---- */

static ad_var residual_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    return ad_add(in[0], nn_forward_n(nn_module_child(m, 0), t, n, in));
}

static const nn_module_ops residual_ops = {.kind = "residual", .forward = residual_forward};

nn_module *nn_residual(nn_module *inner, nn_error *err)
{
    if (any_null("nn_residual", 1, &inner, err)) return NULL;
    nn_module *m = nn_module_new(&residual_ops, NULL, err);
    if (!m) {
        nn_module_free(inner);
        return NULL;
    }
    if (nn_module_add_child(m, "inner", inner, err) != AD_OK) {
        nn_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- parallel: every module on the same inputs, outputs joined ---- */

static ad_var parallel_forward(nn_module *m, ad_tape *t, int n, const ad_var *in)
{
    nn_combine how = *(const nn_combine *)nn_module_state(m);
    int k = nn_module_num_children(m);
    ad_var *ys = ad__tape_alloc(t, (size_t)k * sizeof *ys);
    if (!ys) return ad__no_var(t);
    for (int i = 0; i < k; i++) ys[i] = nn_forward_n(nn_module_child(m, i), t, n, in);
    if (how == NN_COMBINE_SUM) {
        ad_var y = ys[0];
        for (int i = 1; i < k; i++) y = ad_add(y, ys[i]);
        return y;
    }
    const ad_tensor *v = ad_value(ys[0]);
    if (!v) return ad__no_var(t);
    return k == 1 ? ys[0] : ad_concat(k, ys, v->ndim - 1);
}

static const nn_module_ops parallel_ops = {.kind = "parallel", .forward = parallel_forward, .free = nn__free_state};

nn_module *nn_parallel(int n, nn_module *const *mods, nn_combine how, nn_error *err)
{
    if (n < 1 || !mods || (how != NN_COMBINE_CONCAT && how != NN_COMBINE_SUM)) {
        for (int i = 0; mods && i < n; i++) nn_module_free(mods[i]);
        nn_error_set(err, AD_ERR_ARG, "nn_parallel: %s", n < 1 || !mods ? "no modules" : "unknown nn_combine");
        return NULL;
    }
    if (any_null("nn_parallel", n, mods, err)) return NULL;
    nn_module *m = nn__module_with_state(&parallel_ops, sizeof(nn_combine), "nn_parallel", err);
    if (m) *(nn_combine *)nn_module_state(m) = how;
    return adopt_all(m, n, mods, err);
}

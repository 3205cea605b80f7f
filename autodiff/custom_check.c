/* custom_check.c: ad_custom_check: a custom op's VJP (and its second order) checked by ad_gradcheck and ad_gradgradcheck. */
#include "tape.h"

#include <stdio.h>

typedef struct check_ctx {
    const ad_custom_op *op;
    void *ctx;
    int n;
    const ad_tensor *const *in; /* all inputs: the non-differentiable ones are used from here */
    const int *pos;             /* checked input k is input pos[k] */
    int m;
} check_ctx;

static ad_var check_fn(ad_tape *t, const ad_var *xs, void *p)
{
    const check_ctx *c = p;
    ad_var *args = ad__arena_alloc(t, (size_t)c->n * sizeof *args);
    ad_var *outs = ad__arena_alloc(t, (size_t)c->op->n_out * sizeof *outs);
    if (!args || !outs) return ad__invalid(t);
    for (int j = 0, k = 0; j < c->n; j++) args[j] = (k < c->m && c->pos[k] == j) ? xs[k++] : ad_const(t, c->in[j]);
    if (ad_custom_n(c->op, c->ctx, c->n, args, outs) != AD_OK) return ad__invalid(t);
    if (c->op->n_out == 1) return outs[0];
    const int64_t minus1 = -1;
    for (int k = 0; k < c->op->n_out; k++) outs[k] = ad_reshape(outs[k], 1, &minus1);
    return ad_concat(c->op->n_out, outs, 0);
}

ad_status ad_custom_check(const ad_custom_op *op, void *ctx, int n, const ad_tensor *const *in,
                          const ad_check_opts *opts, ad_check_report *rep)
{
    ad_check_report local;
    if (!rep) rep = &local;
    *rep = (ad_check_report){.status = AD_OK, .input = -1, .element = -1, .output = -1, .order = 1};
    const char *bad = !op                          ? "the descriptor is NULL"
                      : !op->name                  ? "the descriptor has no name"
                      : !op->shape || !op->forward ? "shape or forward is NULL"
                      : !op->vjp && !op->vjp_raw   ? "neither vjp nor vjp_raw is given"
                      : op->n_out < 1              ? "n_out is below 1"
                      : n < 1 || !in               ? "no inputs"
                                                   : NULL;
    for (int j = 0; !bad && j < n; j++)
        if (!in[j]) bad = "an input is NULL";
    if (bad) {
        rep->status = AD_ERR_ARG;
        snprintf(rep->message, sizeof rep->message, "ad_custom_check: %s", bad);
        return AD_ERR_ARG;
    }
    int *pos = ad__malloc((size_t)n * sizeof *pos);
    const ad_tensor **sub = ad__malloc((size_t)n * sizeof *sub);
    ad_status s;
    if (!pos || !sub) {
        s = rep->status = AD_ERR_NOMEM;
        snprintf(rep->message, sizeof rep->message, "ad_custom_check: out of memory");
        goto done;
    }
    int m = 0;
    for (int j = 0; j < n; j++)
        if (!op->differentiable || op->differentiable[j]) {
            pos[m] = j;
            sub[m++] = in[j];
        }
    check_ctx c = {op, ctx, n, in, pos, m};
    s = ad_gradcheck(check_fn, &c, m, sub, opts, rep);
    if (s == AD_OK && (op->vjp || op->jvp)) s = ad_gradgradcheck(check_fn, &c, m, sub, opts, rep);
    /* report inputs by their index in the op, not among the checked ones */
    if (rep->input >= 0 && rep->input < m) rep->input = pos[rep->input];
    if (rep->independent_input >= 0 && rep->independent_input < m) rep->independent_input = pos[rep->independent_input];
done:
    ad__free(pos);
    ad__free(sub);
    return s;
}

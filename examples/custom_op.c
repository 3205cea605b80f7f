/* custom_op.c: a function the op table lacks, the solution x of A x = b, as a custom op differentiated by the adjoint method. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <autodiff/ad.h>

/*
** x = solve(A, b) for a square A [n, n] and b [n]. Forward: one LU solve
** (Gaussian elimination with partial pivoting, plain C). Its derivative by the
** adjoint method: with g = dL/dx,
**     lambda = A^-T g        (one solve with the transposed matrix)
**     dL/db  = lambda,       dL/dA = -lambda x^T
** The op carries this adjoint twice:
**   vjp_raw  on tensors: one transposed LU solve in C (a black box's adjoint);
**   vjp      with engine ops: lambda = solve(A^T, g) with this same custom op, so
**            under AD_CREATE_GRAPH the VJP is differentiable again (Hessians).
** The program checks the gradients against finite differences (ad_custom_check,
** first and second order) and against the same solve composed from built-in ops
** (Gauss-Jordan elimination written with ad_slice, ad_mul, ad_sub, ...), then
** prints a Hessian-vector product. Exits 0 when everything agrees.
*/

enum { N = 4 };

/* Solves A x = b (A n x n row-major, copied) with partial pivoting; false when singular. */
static bool lu_solve(int n, const double *a_in, const double *b_in, bool transpose, double *x)
{
    double a[N * N], b[N];
    if (n > N) return false;
    for (int i = 0; i < n; i++) {
        b[i] = b_in[i];
        for (int j = 0; j < n; j++) a[i * n + j] = transpose ? a_in[j * n + i] : a_in[i * n + j];
    }
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[p * n + k])) p = i;
        if (a[p * n + k] == 0) return false;
        for (int j = 0; j < n; j++) {
            double s = a[k * n + j];
            a[k * n + j] = a[p * n + j];
            a[p * n + j] = s;
        }
        double s = b[k];
        b[k] = b[p];
        b[p] = s;
        for (int i = k + 1; i < n; i++) {
            double f = a[i * n + k] / a[k * n + k];
            for (int j = k; j < n; j++) a[i * n + j] -= f * a[k * n + j];
            b[i] -= f * b[k];
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < n; j++) s -= a[i * n + j] * x[j];
        x[i] = s / a[i * n + i];
    }
    return true;
}

/* ---- the custom op ---- */

/* x has b's shape and dtype; A must be [n, n] with b [n], both f64. */
static ad_status solve_shape(void *ctx, int n, const ad_tensor *const *in, ad_tensor *out)
{
    const ad_tensor *a = in[0], *b = in[1];
    if (a->ndim != 2 || b->ndim != 1 || a->shape[0] != a->shape[1] || a->shape[0] != b->shape[0] || b->shape[0] > N)
        return AD_ERR_SHAPE;
    if (a->dtype != AD_F64 || b->dtype != AD_F64) return AD_ERR_DTYPE;
    *out = *b;
    return AD_OK;
}

static ad_status solve_forward(void *ctx, int n, const ad_tensor *const *in, ad_tensor *const *out)
{
    return lu_solve((int)in[1]->size, in[0]->data, in[1]->data, false, out[0]->data) ? AD_OK : AD_ERR_NUMERIC;
}

/* the adjoint on tensors: lambda = A^-T g; gb = lambda; gA = -lambda x^T */
static ad_status solve_vjp_raw(void *ctx, int n, const ad_tensor *const *in, int n_out, const ad_tensor *const *out,
                               const ad_tensor *const *gout, ad_tensor *const *gin)
{
    int m = (int)in[1]->size;
    double lambda[N];
    if (!lu_solve(m, in[0]->data, gout[0]->data, true, lambda)) return AD_ERR_NUMERIC;
    const double *x = out[0]->data;
    if (gin[0])
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) ((double *)gin[0]->data)[i * m + j] = -lambda[i] * x[j];
    if (gin[1]) memcpy(gin[1]->data, lambda, (size_t)m * sizeof(double));
    return AD_OK;
}

static const ad_custom_op solve_op; /* defined below: the engine-op VJP calls the op itself */

/* the same adjoint with engine ops: differentiable again */
static ad_status solve_vjp(void *ctx, int n, const ad_var *in, int n_out, const ad_var *out, const ad_var *gout,
                           ad_var *gin)
{
    int64_t m = ad_value(in[1])->shape[0];
    ad_var args[2] = {ad_transpose(in[0], 0, 1), gout[0]};
    ad_var lambda = ad_custom(&solve_op, ctx, 2, args);
    gin[0] = ad_neg(
        ad_matmul(ad_reshape(lambda, 2, (const int64_t[]){m, 1}), ad_reshape(out[0], 2, (const int64_t[]){1, m})));
    gin[1] = lambda;
    return AD_OK;
}

static const ad_custom_op solve_op = {
    .name = "solve",
    .n_out = 1,
    .shape = solve_shape,
    .forward = solve_forward,
    .vjp = solve_vjp,
    .vjp_raw = solve_vjp_raw,
};

/* ---- the same solve composed from built-in ops: Gauss-Jordan without pivoting ---- */

static ad_var solve_composed(ad_tape *t, ad_var a, ad_var b, int64_t n)
{
    ad_var rows[N];
    ad_var aug = ad_concat(2, (ad_var[]){a, ad_reshape(b, 2, (const int64_t[]){n, 1})}, 1); /* [n, n+1] */
    for (int64_t i = 0; i < n; i++) rows[i] = ad_slice(aug, 0, i, i + 1);
    for (int64_t k = 0; k < n; k++) {
        rows[k] = ad_div(rows[k], ad_slice(rows[k], 1, k, k + 1)); /* pivot 1 */
        for (int64_t i = 0; i < n; i++)
            if (i != k) rows[i] = ad_sub(rows[i], ad_mul(ad_slice(rows[i], 1, k, k + 1), rows[k]));
    }
    return ad_reshape(ad_slice(ad_concat((int)n, rows, 0), 1, n, n + 1), 1, &n);
}

/* ---- the function differentiated: L = sum(w * x) + 0.5 |x|^2, x = solve(A, b) ---- */

static const double w[N] = {1.0, -2.0, 0.5, 3.0};

static ad_var loss(ad_tape *t, ad_var x)
{
    ad_var wv = ad_full(t, AD_F64, AD_SHAPE(N), 0.0);
    for (int i = 0; i < N; i++) ((double *)ad_value(wv)->data)[i] = w[i];
    return ad_add(ad_sum(ad_mul(wv, x)), ad_mul_scalar(ad_sum(ad_square(x)), 0.5));
}

static ad_var f_custom(ad_tape *t, const ad_var *in, void *ctx) { return loss(t, ad_custom(&solve_op, ctx, 2, in)); }
static ad_var f_composed(ad_tape *t, const ad_var *in, void *ctx)
{
    return loss(t, solve_composed(t, in[0], in[1], N));
}

int main(void)
{
    /* a well-conditioned A (diagonally dominant: the composed version needs no pivoting) */
    const double a0[N * N] = {4, 1, -0.5, 0.2, 1, 5, 1, -1, 0.3, -1, 3.5, 0.5, 0.1, 0.4, -0.6, 2.5};
    const double b0[N] = {1, -2, 0.5, 3};
    ad_tensor *A = ad_tensor_from(AD_F64, AD_SHAPE(N, N), a0), *b = ad_tensor_from(AD_F64, AD_SHAPE(N), b0);
    ad_tensor *gA[2], *gb[2];
    int status = 0;
    if (!A || !b) return 1;

    /* gradients both ways */
    ad_fn fns[2] = {f_custom, f_composed};
    for (int k = 0; k < 2; k++) {
        ad_tape *t = ad_tape_new();
        ad_var in[2] = {ad_leaf(t, A), ad_leaf(t, b)};
        ad_var l = fns[k](t, in, NULL);
        if (ad_backward(l, NULL, 0) != AD_OK) {
            fprintf(stderr, "custom_op: %s\n", ad_tape_error(t));
            return 1;
        }
        if (k == 0) {
            printf("x = solve(A, b) =");
            for (int i = 0; i < N; i++) printf(" %.6f", ad_tensor_get(ad_value(ad_custom(&solve_op, NULL, 2, in)), i));
            printf("\nL = %.10f\n", ad_item(l));
        }
        gA[k] = ad_tensor_clone(ad_grad(in[0]));
        gb[k] = ad_tensor_clone(ad_grad(in[1]));
        ad_tape_free(t);
    }
    printf("dL/db (adjoint method) =");
    for (int i = 0; i < N; i++) printf(" %.6f", ad_tensor_get(gb[0], i));
    double worst = 0;
    for (int i = 0; i < N * N; i++) worst = fmax(worst, fabs(ad_tensor_get(gA[0], i) - ad_tensor_get(gA[1], i)));
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(ad_tensor_get(gb[0], i) - ad_tensor_get(gb[1], i)));
    printf("\nadjoint method vs composed from built-in ops: largest difference %.2e\n", worst);
    if (!(worst < 1e-12)) status = 1;

    /* finite differences, first and second order, through the library's own checker */
    const ad_tensor *ins[2] = {A, b};
    ad_check_report rep;
    ad_status s = ad_custom_check(&solve_op, NULL, 2, ins, NULL, &rep);
    ad_check_report_print(&rep, stdout);
    if (s != AD_OK || rep.order != 2) status = 1;
    /* and the raw VJP alone: first order only (its second order would need a jvp) */
    ad_custom_op raw_only = solve_op;
    raw_only.vjp = NULL;
    s = ad_custom_check(&raw_only, NULL, 2, ins, NULL, &rep);
    ad_check_report_print(&rep, stdout);
    if (s != AD_OK || rep.order != 1) status = 1;

    /* second order through the custom op: H v for L(b) with A fixed, against the composed one */
    ad_tensor *v = ad_tensor_from(AD_F64, AD_SHAPE(N, N), a0), *hv[2];
    const ad_tensor *vv[2] = {v, b};
    char err[256];
    for (int k = 0; k < 2; k++) {
        hv[k] = ad_tensor_new(AD_F64, AD_SHAPE(N, N));
        ad_tensor *hb = ad_tensor_new(AD_F64, AD_SHAPE(N));
        ad_tensor *outs[2] = {hv[k], hb};
        if (ad_hvp_n(fns[k], NULL, 2, ins, vv, outs, err, sizeof err) != AD_OK) {
            fprintf(stderr, "custom_op: %s\n", err);
            return 1;
        }
        ad_tensor_free(hb);
    }
    worst = 0;
    for (int i = 0; i < N * N; i++) worst = fmax(worst, fabs(ad_tensor_get(hv[0], i) - ad_tensor_get(hv[1], i)));
    printf("Hessian-vector product through the custom op vs composed: largest difference %.2e\n", worst);
    if (!(worst < 1e-10)) status = 1;

    printf("%s\n", status ? "FAILED" : "all checks passed");
    for (int k = 0; k < 2; k++) {
        ad_tensor_free(gA[k]);
        ad_tensor_free(gb[k]);
        ad_tensor_free(hv[k]);
    }
    ad_tensor_free(v);
    ad_tensor_free(A);
    ad_tensor_free(b);
    return status;
}

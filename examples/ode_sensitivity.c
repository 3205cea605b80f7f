/* ode_sensitivity.c: gradients of an ODE's end state with respect to its initial condition and parameters, through 2,000 RK4 steps, with and without checkpointing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <autodiff/ad.h>

/*
** The Lotka-Volterra equations, for a batch of B initial conditions at once:
**     u' = a u - b u v        (prey)
**     v' = d u v - c v        (predators)
** integrated by classical Runge-Kutta (RK4) with step h for S steps, every step
** recorded on the tape (backpropagation through the solver: "discretize then
** differentiate", exact for the discrete solution). The loss is
**     L = mean(u(T)) + 0.5 mean(v(T)^2),
** and one reverse sweep gives dL/d(u0, v0) for every initial condition and
** dL/d(a, b, c, d).
**
** Recording all S steps keeps every intermediate of every step until backward.
** With ad_checkpoint every floor(sqrt(S)) steps only the segment boundaries are
** kept; backward recomputes one segment at a time. The program prints the
** tape's memory both ways, checks that the two gradients are equal bit for
** bit, and checks them against central finite differences of a plain C
** integrator. Exits 0 when all agree.
*/

enum { B = 32, S = 2000 };
static const double H = 0.005; /* t from 0 to 10 */

/* y' = f(y; theta) for y [B, 2], theta [4] = (a, b, c, d) */
static ad_var rhs(ad_var y, ad_var th)
{
    ad_var u = ad_slice(y, 1, 0, 1), v = ad_slice(y, 1, 1, 2), uv = ad_mul(u, v);
    ad_var a = ad_slice(th, 0, 0, 1), b = ad_slice(th, 0, 1, 2), c = ad_slice(th, 0, 2, 3), d = ad_slice(th, 0, 3, 4);
    ad_var du = ad_sub(ad_mul(a, u), ad_mul(b, uv)), dv = ad_sub(ad_mul(d, uv), ad_mul(c, v));
    return ad_concat(2, (ad_var[]){du, dv}, 1);
}

static ad_var rk4(ad_var y, ad_var th)
{
    ad_var k1 = rhs(y, th);
    ad_var k2 = rhs(ad_add(y, ad_mul_scalar(k1, H / 2)), th);
    ad_var k3 = rhs(ad_add(y, ad_mul_scalar(k2, H / 2)), th);
    ad_var k4 = rhs(ad_add(y, ad_mul_scalar(k3, H)), th);
    ad_var sum = ad_add(ad_add(k1, ad_mul_scalar(k2, 2.0)), ad_add(ad_mul_scalar(k3, 2.0), k4));
    return ad_add(y, ad_mul_scalar(sum, H / 6));
}

/* a segment of *(int *)ctx steps: (y, theta) -> y */
static ad_status segment(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    ad_var y = in[0];
    for (int k = 0; k < *(const int *)ctx; k++) y = rk4(y, in[1]);
    out[0] = y;
    return AD_OK;
}

static ad_var end_loss(ad_var y)
{
    return ad_add(ad_mean(ad_slice(y, 1, 0, 1)), ad_mul_scalar(ad_mean(ad_square(ad_slice(y, 1, 1, 2))), 0.5));
}

/* ---- the same integrator in plain C, for finite differences ---- */

static void rhs_c(const double *y, const double *th, double *dy)
{
    dy[0] = th[0] * y[0] - th[1] * y[0] * y[1];
    dy[1] = th[3] * y[0] * y[1] - th[2] * y[1];
}

static double loss_c(const double *y0, const double *th)
{
    double l = 0;
    for (int i = 0; i < B; i++) {
        double y[2] = {y0[2 * i], y0[2 * i + 1]}, k[4][2], tmp[2];
        for (int s = 0; s < S; s++) {
            rhs_c(y, th, k[0]);
            for (int j = 0; j < 2; j++) tmp[j] = y[j] + H / 2 * k[0][j];
            rhs_c(tmp, th, k[1]);
            for (int j = 0; j < 2; j++) tmp[j] = y[j] + H / 2 * k[1][j];
            rhs_c(tmp, th, k[2]);
            for (int j = 0; j < 2; j++) tmp[j] = y[j] + H * k[2][j];
            rhs_c(tmp, th, k[3]);
            for (int j = 0; j < 2; j++) y[j] += H / 6 * (k[0][j] + 2 * k[1][j] + 2 * k[2][j] + k[3][j]);
        }
        l += y[0] / B + 0.5 * y[1] * y[1] / B;
    }
    return l;
}

typedef struct run {
    double loss;
    ad_tensor *g_y0, *g_th;
    size_t arena, nodes;
} run;

static int integrate(const ad_tensor *y0, const ad_tensor *th, int every, run *r)
{
    ad_tape *t = ad_tape_new();
    if (!t) return 1;
    ad_var y = ad_leaf(t, y0), p = ad_leaf(t, th), yl = y;
    int lens[2] = {every, S % every}; /* the segments' ctx: it lives until the backward below is done */
    for (int k0 = 0; k0 < S; k0 += every) {
        const int *len = k0 + every <= S ? &lens[0] : &lens[1];
        ad_var in[2] = {y, p};
        if (every > 1)
            ad_checkpoint(segment, (void *)len, 2, in, 1, &y);
        else
            segment(t, 2, in, 1, &y, (void *)len);
    }
    ad_var l = end_loss(y);
    r->nodes = ad_tape_node_count(t);
    if (ad_backward(l, NULL, 0) != AD_OK) {
        fprintf(stderr, "ode_sensitivity: %s\n", ad_tape_error(t));
        ad_tape_free(t);
        return 1;
    }
    r->loss = ad_item(l);
    r->g_y0 = ad_tensor_clone(ad_grad(yl));
    r->g_th = ad_tensor_clone(ad_grad(p));
    r->arena = ad_tape_arena_bytes(t);
    ad_tape_free(t);
    return !r->g_y0 || !r->g_th;
}

int main(void)
{
    ad_rng rng;
    ad_rng_seed(&rng, 3);
    ad_tensor *y0 = ad_tensor_new(AD_F64, AD_SHAPE(B, 2)),
              *th = ad_tensor_from(AD_F64, AD_SHAPE(4), (double[]){1.1, 0.4, 0.4, 0.1});
    if (!y0 || !th) return 1;
    ad_rng_fill_uniform(&rng, y0, 0.5, 2.0);
    int every = (int)floor(sqrt((double)S));
    run plain = {0}, ck = {0};
    if (integrate(y0, th, 1, &plain) || integrate(y0, th, every, &ck)) return 1;

    printf("Lotka-Volterra, %d initial conditions, %d RK4 steps of %g: L = %.12f\n", B, S, H, plain.loss);
    printf("dL/d(a, b, c, d) = %.8f %.8f %.8f %.8f\n", ad_tensor_get(plain.g_th, 0), ad_tensor_get(plain.g_th, 1),
           ad_tensor_get(plain.g_th, 2), ad_tensor_get(plain.g_th, 3));
    printf("dL/d(u0, v0) of the first initial condition = %.8f %.8f\n", ad_tensor_get(plain.g_y0, 0),
           ad_tensor_get(plain.g_y0, 1));
    printf("tape memory, every step recorded:      %8.1f MiB (%zu nodes)\n", plain.arena / 1048576.0, plain.nodes);
    printf("tape memory, a checkpoint every %2d:    %8.1f MiB (%zu nodes)\n", every, ck.arena / 1048576.0, ck.nodes);
    int status = 0;
    bool same = memcmp(plain.g_th->data, ck.g_th->data, 4 * sizeof(double)) == 0 &&
                memcmp(plain.g_y0->data, ck.g_y0->data, 2 * B * sizeof(double)) == 0 && plain.loss == ck.loss;
    printf("gradients with and without checkpoints equal bit for bit: %s\n", same ? "yes" : "NO");
    if (!same || !(ck.arena * 4 < plain.arena)) status = 1;

    /* central differences of the plain C integrator: every parameter, the first initial condition */
    double worst = 0, eps = 1e-6;
    double *yd = y0->data, *pd = th->data;
    for (int k = 0; k < 6; k++) {
        double *x = k < 4 ? &pd[k] : &yd[k - 4], x0 = *x;
        *x = x0 + eps;
        double lp = loss_c(yd, pd);
        *x = x0 - eps;
        double lm = loss_c(yd, pd);
        *x = x0;
        double fd = (lp - lm) / (2 * eps), an = k < 4 ? ad_tensor_get(plain.g_th, k) : ad_tensor_get(plain.g_y0, k - 4);
        worst = fmax(worst, fabs(fd - an) / fmax(1e-3, fabs(fd)));
    }
    printf("against central differences of a plain C RK4: largest relative error %.2e\n", worst);
    if (!(worst < 1e-6)) status = 1;
    printf("%s\n", status ? "FAILED" : "all checks passed");
    ad_tensor_free(plain.g_y0);
    ad_tensor_free(plain.g_th);
    ad_tensor_free(ck.g_y0);
    ad_tensor_free(ck.g_th);
    ad_tensor_free(y0);
    ad_tensor_free(th);
    return status;
}

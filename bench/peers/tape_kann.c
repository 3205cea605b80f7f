/* tape_kann.c: bench_tape.c's scalar graph (acc += tanh(a*b + c), 2,500 times) on KANN's autodiff, rebuilt and reused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kautodiff.h"

/*
** KANN (see mlp_kann.c for how bench/compare builds it) records a graph of kad_node_t nodes,
** linearizes it with kad_compile, then evaluates and differentiates it (kad_eval_at, kad_grad).
** Two ways to use it, both timed:
**   rebuilt: the graph is built, compiled, run forward and backward and deleted every iteration
**            (what a tape that records each step does: our bench_tape's workload);
**   reused:  built and compiled once, then forward and backward only (KANN's usual way: a static
**            graph whose leaves are overwritten).
** KANN computes in float32 (our scalar graph is float64). Figures: ns per op (10,000 ops: the
** 2,500 x {mul, add, tanh, add}) and ns per node (every node of the compiled graph, leaves
** included), and per node for the graph acc += tanh(a*x_i + c) whose leaf x_i is recorded each
** iteration (rebuilt). Usage: tape_kann [reps (50)] [reused]: with "reused", only the reused graph,
** printed as scalar_graph_10k_ops of the impl kann_reused (the peer of a replayed tape).
*/

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float g_v[3] = {0.1f, 0.2f, 0.3f}, g_g[3], g_zero;

/* Builds the graph; returns its compiled node array (n nodes). */
static kad_node_t **build(int *n)
{
    kad_node_t *a = kad_var(&g_v[0], &g_g[0], 0), *b = kad_var(&g_v[1], &g_g[1], 0);
    kad_node_t *c = kad_var(&g_v[2], &g_g[2], 0), *acc = kad_const(&g_zero, 0);
    for (int i = 0; i < 2500; i++) acc = kad_add(acc, kad_tanh(kad_add(kad_mul(a, b), c)));
    return kad_compile(n, 1, acc);
}

/* The same with a new constant leaf x_i each iteration: acc += tanh(a*x_i + c). */
static float g_x[2500];
static kad_node_t **build_leaves(int *n)
{
    kad_node_t *a = kad_var(&g_v[0], &g_g[0], 0), *c = kad_var(&g_v[2], &g_g[2], 0), *acc = kad_const(&g_zero, 0);
    for (int i = 0; i < 2500; i++) acc = kad_add(acc, kad_tanh(kad_add(kad_mul(a, kad_const(&g_x[i], 0)), c)));
    return kad_compile(n, 1, acc);
}

static const char *g_impl = "kann";

static void emit(const char *name, const char *unit, double *v, int reps)
{
    qsort(v, (size_t)reps, sizeof *v, cmp_double);
    double med = reps % 2 ? v[reps / 2] : 0.5 * (v[reps / 2 - 1] + v[reps / 2]);
    printf("%-28s %12.3f %12.3f %12.3f  %s\n", name, med, v[0], v[reps - 1], unit);
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"unit\":\"%s\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"threads\":1}\n",
           name, g_impl, unit, med, v[0], v[reps - 1]);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50, n = 0;
    int reused_only = argc > 2 && !strcmp(argv[2], "reused");
    if (reps < 3) reps = 3;
    if (reused_only) g_impl = "kann_reused";
    double *t_op = malloc((size_t)reps * sizeof *t_op), *t_node = malloc((size_t)reps * sizeof *t_node);
    double *r_op = malloc((size_t)reps * sizeof *r_op), *r_node = malloc((size_t)reps * sizeof *r_node);
    if (!t_op || !t_node || !r_op || !r_node) return 1;
    for (int r = reused_only ? reps : -2; r < reps; r++) { /* rebuilt each iteration */
        double t0 = now_s();
        kad_node_t **g = build(&n);
        kad_eval_at(n, g, n - 1);
        kad_grad(n, g, n - 1);
        kad_delete(n, g);
        double dt = now_s() - t0;
        if (r >= 0) t_op[r] = dt / 10000 * 1e9, t_node[r] = dt / n * 1e9;
    }
    double *l_node = malloc((size_t)reps * sizeof *l_node);
    if (!l_node) return 1;
    for (int i = 0; i < 2500; i++) g_x[i] = 0.001f * (float)i;
    int nl = 0;
    for (int r = reused_only ? reps : -2; r < reps; r++) { /* leaves recorded each iteration, rebuilt */
        double t0 = now_s();
        kad_node_t **gl = build_leaves(&nl);
        kad_eval_at(nl, gl, nl - 1);
        kad_grad(nl, gl, nl - 1);
        kad_delete(nl, gl);
        if (r >= 0) l_node[r] = (now_s() - t0) / nl * 1e9;
    }
    kad_node_t **g = build(&n);
    for (int r = -2; r < reps; r++) { /* reused */
        double t0 = now_s();
        kad_eval_at(n, g, n - 1);
        kad_grad(n, g, n - 1);
        double dt = now_s() - t0;
        if (r >= 0) r_op[r] = dt / 10000 * 1e9, r_node[r] = dt / n * 1e9;
    }
    printf("# KANN scalar graph: %d nodes (leaves included); gradient of a: %g\n", n, g_g[0]);
    kad_delete(n, g);
    if (reused_only) {
        emit("scalar_graph_10k_ops", "ns/op", r_op, reps);
        free(l_node), free(t_op), free(t_node), free(r_op), free(r_node);
        return 0;
    }
    emit("scalar_graph_10k_ops", "ns/op", t_op, reps);
    emit("scalar_graph_per_node", "ns/node", t_node, reps);
    emit("scalar_graph_reused_10k_ops", "ns/op", r_op, reps);
    emit("scalar_graph_reused_per_node", "ns/node", r_node, reps);
    printf("# a leaf recorded each iteration: %d nodes\n", nl);
    emit("scalar_graph_leaves_per_node", "ns/node", l_node, reps);
    free(l_node);
    free(t_op), free(t_node), free(r_op), free(r_node);
    return 0;
}

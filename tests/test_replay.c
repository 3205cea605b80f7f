/* test_replay.c: ad_tape_replay against recording again (values, gradients, fingerprint), value-dependent ops,
** ad_branch's divergence check, errors, and no heap allocation per replay after warm-up. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tape.h"
#include "test_rows.h"
#include "test_util.h"

/* Every allocation of the library is counted (set in main, before anything is made); while
** g_refuse is set, every new allocation fails. */
static long g_allocs;
static bool g_refuse;
static void *counting_alloc(void *ud, void *ptr, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (g_refuse) return NULL;
    g_allocs++;
    return realloc(ptr, nsize);
}

/* A program recorded on a tape: builds its output from leaves made of in[0..n). */
typedef ad_var (*program)(ad_tape *t, const ad_var *x, void *ctx);

/* Records p at `a`, runs backward, then replays at `b` and runs backward again; the values and leaf gradients
** must be those of a fresh recording at `b`, bit for bit, and the fingerprint that of the first pass. */
static void replay_matches(const char *what, program p, void *ctx, int n, ad_tensor *const *a, ad_tensor *const *b)
{
    ad_tape *t = ad_tape_new(), *f = ad_tape_new();
    ad_var x[4], xf[4];
    for (int i = 0; i < n; i++) x[i] = ad_leaf(t, a[i]);
    ad_var y = p(t, x, ctx);
    ck_assert_msg(ad_ok(y), "%s: %s", what, ad_tape_error(t));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    uint64_t fp = ad_tape_fingerprint(t);
    size_t nodes = ad_tape_node_count(t);
    for (int round = 0; round < 3; round++) {
        ad_tensor *const *v = round % 2 ? a : b; /* b, a, b */
        ck_assert_msg(ad_tape_replay(t, n, x, (const ad_tensor *const *)v) == AD_OK, "%s: %s", what, ad_tape_error(t));
        for (int i = 0; i < n; i++) ck_assert_ptr_null(ad_grad(x[i]));
        ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        ck_assert_uint_eq(ad_tape_fingerprint(t), fp);
        ck_assert_uint_eq(ad_tape_node_count(t), nodes);
        ad_tape_reset(f);
        for (int i = 0; i < n; i++) xf[i] = ad_leaf(f, v[i]);
        ad_var yf = p(f, xf, ctx);
        ck_assert_int_eq(ad_backward(yf, NULL, 0), AD_OK);
        ck_assert_msg(ad_item(y) == ad_item(yf), "%s, round %d: replayed %.17g, recorded %.17g", what, round,
                      ad_item(y), ad_item(yf));
        for (int i = 0; i < n; i++)
            for (int64_t k = 0; k < v[i]->size; k++) {
                double g1 = ad_tensor_get(ad_grad(x[i]), k), g2 = ad_tensor_get(ad_grad(xf[i]), k);
                ck_assert_msg(g1 == g2, "%s, round %d: gradient %d[%lld] replayed %.17g, recorded %.17g", what, round,
                              i, (long long)k, g1, g2);
            }
    }
    ad_tape_free(t);
    ad_tape_free(f);
}

/* ---- programs ---- */

static ad_var p_scalar(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < 50; i++) acc = ad_add(acc, ad_tanh(ad_add(ad_mul(x[0], x[1]), ad_mul_scalar(x[2], i))));
    return ad_div(acc, ad_add_scalar(ad_square(x[0]), 1.0));
}

/* sum(tanh(W @ x + b)), reshaped and broadcast on the way */
static ad_var p_layer(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_var z = ad_add(ad_matmul(x[0], x[1]), x[2]);
    return ad_sum(ad_tanh(ad_reshape(z, AD_SHAPE(-1))));
}

/* value-dependent ops: each chooses again by the new values */
static ad_var p_valuedep(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_var a = ad_relu(x[0]), b = ad_maximum(x[0], x[1]), c = ad_clamp(x[1], -0.3, 0.4), d = ad_abs(x[0]);
    ad_var e = ad_max_axis(ad_mul(x[0], x[1]), 1, true);
    ad_var img = ad_reshape(ad_concat(2, (ad_var[]){x[0], x[1]}, 0), AD_SHAPE(1, 1, 4, 4));
    ad_var pool = ad_max_pool2d(img, 2, 2, 0);
    ad_var w = ad_where(ad_sign(ad_relu(x[1])), x[0], ad_neg(x[0]));
    ad_var s = ad_add(ad_sum(ad_mul(a, b)), ad_sum(ad_square(c)));
    s = ad_add(s, ad_add(ad_sum(ad_mul(d, x[1])), ad_sum(ad_square(e))));
    return ad_add(s, ad_add(ad_sum(ad_square(pool)), ad_sum(ad_mul(w, x[1]))));
}

typedef struct drop_ctx {
    uint64_t seed;
} drop_ctx;

/* dropout: the mask is drawn when recorded and stays (a fresh recording with the same seed draws the same) */
static ad_var p_dropout(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_rng rng;
    ad_rng_seed(&rng, ((drop_ctx *)ctx)->seed);
    return ad_sum(ad_square(ad_dropout(ad_tanh(x[0]), 0.5, true, &rng)));
}

static ad_var p_conv(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_var y = ad_conv2d(x[0], x[1], 1, 1, 1, 1);
    return ad_sum(ad_square(ad_avg_pool2d(ad_relu(y), 2, 2, 0)));
}

START_TEST(test_replay_scalar)
{
    ad_tensor *a[3], *b[3];
    for (int i = 0; i < 3; i++) {
        a[i] = tu_rand(AD_F64, AD_SCALAR_SHAPE, -1, 1, 10 + (uint64_t)i);
        b[i] = tu_rand(AD_F64, AD_SCALAR_SHAPE, -1, 1, 20 + (uint64_t)i);
    }
    replay_matches("scalar graph", p_scalar, NULL, 3, a, b);
    for (int i = 0; i < 3; i++) {
        ad_tensor_free(a[i]);
        ad_tensor_free(b[i]);
    }
}
END_TEST

START_TEST(test_replay_layer)
{
    for (int dt = 0; dt < 2; dt++) {
        ad_dtype d = dt ? AD_F32 : AD_F64;
        ad_tensor *a[3] = {tu_rand(d, AD_SHAPE(6, 5), -1, 1, 1), tu_rand(d, AD_SHAPE(5, 1), -1, 1, 2),
                           tu_rand(d, AD_SHAPE(1), -1, 1, 3)};
        ad_tensor *b[3] = {tu_rand(d, AD_SHAPE(6, 5), -1, 1, 4), tu_rand(d, AD_SHAPE(5, 1), -1, 1, 5),
                           tu_rand(d, AD_SHAPE(1), -1, 1, 6)};
        replay_matches(dt ? "layer f32" : "layer f64", p_layer, NULL, 3, a, b);
        for (int i = 0; i < 3; i++) {
            ad_tensor_free(a[i]);
            ad_tensor_free(b[i]);
        }
    }
}
END_TEST

START_TEST(test_replay_value_dependent)
{
    /* b flips the signs of a: every relu, maximum, clamp, abs, argmax and where chooses differently */
    ad_tensor *a[2] = {tu_rand_away(AD_SHAPE(2, 4), 0.1, 1, 7), tu_rand_away(AD_SHAPE(2, 4), 0.1, 1, 8)};
    ad_tensor *b[2] = {ad_tensor_clone(a[0]), ad_tensor_clone(a[1])};
    for (int i = 0; i < 2; i++)
        for (int64_t k = 0; k < 8; k++) ad_tensor_set(b[i], k, -0.9 * ad_tensor_get(a[i], k));
    replay_matches("value-dependent ops", p_valuedep, NULL, 2, a, b);
    drop_ctx dc = {99};
    replay_matches("dropout", p_dropout, &dc, 1, a, b);
    for (int i = 0; i < 2; i++) {
        ad_tensor_free(a[i]);
        ad_tensor_free(b[i]);
    }
    ad_tensor *ca[2] = {tu_rand(AD_F64, AD_SHAPE(2, 2, 5, 5), -1, 1, 9), tu_rand(AD_F64, AD_SHAPE(3, 2, 3, 3), -1, 1, 10)};
    ad_tensor *cb[2] = {tu_rand(AD_F64, AD_SHAPE(2, 2, 5, 5), -1, 1, 11), tu_rand(AD_F64, AD_SHAPE(3, 2, 3, 3), -1, 1, 12)};
    replay_matches("conv2d, relu, avg_pool2d", p_conv, NULL, 2, ca, cb);
    for (int i = 0; i < 2; i++) {
        ad_tensor_free(ca[i]);
        ad_tensor_free(cb[i]);
    }
}
END_TEST

/* params read their tensors again: an update in place needs no leaf list */
START_TEST(test_replay_params)
{
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 40), *gw = ad_tensor_new(AD_F64, AD_SHAPE(3));
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 41);
    ad_tape *t = ad_tape_new(), *f = ad_tape_new();
    ad_var pw = ad_param(t, w, gw);
    ad_var loss = ad_sum(ad_square(ad_sub(ad_tanh(ad_mul(pw, ad_const(t, x))), ad_scalar(t, AD_F64, 0.25))));
    for (int step = 0; step < 5; step++) {
        if (step > 0) ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
        ad_tensor_fill(gw, 0.0);
        ck_assert_int_eq(ad_backward(loss, NULL, AD_ACCUMULATE), AD_OK);
        /* the same loss and gradient recorded afresh */
        ad_tensor *gf = ad_tensor_new(AD_F64, AD_SHAPE(3));
        ad_tape_reset(f);
        ad_var fw = ad_param(f, w, gf);
        ad_var lf = ad_sum(ad_square(ad_sub(ad_tanh(ad_mul(fw, ad_const(f, x))), ad_scalar(f, AD_F64, 0.25))));
        ck_assert_int_eq(ad_backward(lf, NULL, 0), AD_OK);
        ck_assert(ad_item(loss) == ad_item(lf));
        for (int64_t k = 0; k < 3; k++) ck_assert(ad_tensor_get(gw, k) == ad_tensor_get(gf, k));
        ad_tensor_free(gf);
        for (int64_t k = 0; k < 3; k++) ad_tensor_set(w, k, ad_tensor_get(w, k) - 0.5 * ad_tensor_get(gw, k));
    }
    ad_tape_free(t);
    ad_tape_free(f);
    ad_tensor_free(w);
    ad_tensor_free(gw);
    ad_tensor_free(x);
}
END_TEST

/* y = x > 0 ? x^2 : -x, with the decision recorded */
static ad_var p_branchy(ad_tape *t, const ad_var *x, void *ctx)
{
    ad_var zero = ad_scalar(t, AD_F64, 0.0);
    ad_var u = ad_mul_scalar(x[0], 1.0);
    return ad_branch(u, AD_CMP_GT, zero) ? ad_square(u) : ad_neg(u);
}

START_TEST(test_replay_branch)
{
    ad_tensor *a = tu_f64(AD_SCALAR_SHAPE, (const double[]){1.5}), *b = tu_f64(AD_SCALAR_SHAPE, (const double[]){0.5});
    ad_tensor *c = tu_f64(AD_SCALAR_SHAPE, (const double[]){-2.0});
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, a);
    ad_var y = p_branchy(t, &x, NULL);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert(ad_tensor_get(ad_grad(x), 0) == 3.0);
    /* same side: replays */
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){b}), AD_OK);
    ck_assert(ad_item(y) == 0.25);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert(ad_tensor_get(ad_grad(x), 0) == 1.0);
    /* the other side: stops, naming the node and the comparison */
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){c}), AD_ERR_STATE);
    const char *msg = ad_tape_error(t);
    ck_assert_msg(strstr(msg, "replay diverged at node 3: node 2 > node 1 was true, now false") != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, "-2 > 0") != NULL, "%s", msg);
    /* sticky until the caller records again */
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){a}), AD_ERR_STATE);
    ad_tape_reset(t);
    x = ad_leaf(t, c);
    y = p_branchy(t, &x, NULL);
    ck_assert(ad_item(y) == 2.0);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){c}), AD_OK);
    /* comparisons: all six, and bad operands */
    ad_var one = ad_scalar(t, AD_F64, 1.0), two = ad_scalar(t, AD_F64, 2.0);
    ck_assert(ad_branch(one, AD_CMP_LT, two) && ad_branch(one, AD_CMP_LE, one) && !ad_branch(one, AD_CMP_GT, two));
    ck_assert(ad_branch(two, AD_CMP_GE, one) && ad_branch(one, AD_CMP_EQ, one) && ad_branch(one, AD_CMP_NE, two));
    ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
    ad_var vec = ad_full(t, AD_F64, AD_SHAPE(2), 1.0);
    ck_assert(!ad_branch(vec, AD_CMP_LT, one));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_branch") != NULL, "%s", ad_tape_error(t));
    ad_tape_clear_error(t);
    ck_assert(!ad_branch(one, (ad_cmp)17, two));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(c);
}
END_TEST

START_TEST(test_replay_errors)
{
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(3), -1, 1, 50), *wrong = ad_tensor_new(AD_F64, AD_SHAPE(4));
    ad_tensor *f32 = ad_tensor_new(AD_F32, AD_SHAPE(3));
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, a), y = ad_sum(ad_exp(x));
    ck_assert_int_eq(ad_tape_replay(NULL, 0, NULL, NULL), AD_ERR_ARG);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){wrong}), AD_ERR_SHAPE);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_tape_replay: value 1 is [4]") != NULL, "%s", ad_tape_error(t));
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){f32}), AD_ERR_DTYPE);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tape_replay(t, 1, &y, (const ad_tensor *const[]){a}), AD_ERR_ARG);
    ck_assert_msg(strstr(ad_tape_error(t), "not a leaf") != NULL, "%s", ad_tape_error(t));
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){NULL}), AD_ERR_ARG);
    ad_tape_clear_error(t);
    ck_assert_int_eq(ad_tape_replay(t, 1, NULL, NULL), AD_ERR_ARG);
    ad_tape_clear_error(t);
    /* a stale var */
    ad_var old = x;
    ad_tape_reset(t);
    ad_leaf(t, a);
    ck_assert_int_eq(ad_tape_replay(t, 1, &old, (const ad_tensor *const[]){a}), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(wrong);
    ad_tensor_free(f32);
}
END_TEST

/* a replay drops what a tangent sweep or a backward pass appended, and anomaly detection runs during it */
START_TEST(test_replay_drops_passes)
{
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(3), 0.5, 1, 60), *b = tu_f64(AD_SHAPE(3), (const double[]){1, -1, 2});
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, a), y = ad_sum(ad_log(x)), ty;
    size_t n = ad_tape_node_count(t);
    ck_assert_int_eq(ad_tangents(1, &x, &x, 1, &y, &ty), AD_OK);
    ck_assert_uint_gt(ad_tape_node_count(t), n);
    ck_assert_int_eq(ad_backward(y, NULL, AD_CREATE_GRAPH), AD_OK);
    ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
    ck_assert_uint_eq(ad_tape_node_count(t), n);
    ad_tape_set_anomaly_detection(t, true);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){b}), AD_ERR_NUMERIC);
    ck_assert_msg(strstr(ad_tape_error(t), "ad_log: non-finite output") != NULL, "%s", ad_tape_error(t));
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
}
END_TEST

/* after warm-up, replay + backward allocates nothing from the heap (counted through ad_set_allocator) */
START_TEST(test_replay_no_allocation)
{
    ad_tensor *s[3], *lay[3], *conv[2];
    for (int i = 0; i < 3; i++) s[i] = tu_rand(AD_F64, AD_SCALAR_SHAPE, -1, 1, 70 + (uint64_t)i);
    lay[0] = tu_rand(AD_F32, AD_SHAPE(16, 16), -1, 1, 80);
    lay[1] = tu_rand(AD_F32, AD_SHAPE(16, 1), -1, 1, 81);
    lay[2] = tu_rand(AD_F32, AD_SHAPE(16, 1), -1, 1, 82);
    conv[0] = tu_rand(AD_F64, AD_SHAPE(2, 2, 6, 6), -1, 1, 83);
    conv[1] = tu_rand(AD_F64, AD_SHAPE(3, 2, 3, 3), -1, 1, 84);
    struct {
        program p;
        int n;
        ad_tensor **in;
    } cases[3] = {{p_scalar, 3, s}, {p_layer, 3, lay}, {p_conv, 2, conv}};
    for (int c = 0; c < 3; c++) {
        ad_tape *t = ad_tape_new();
        ad_var x[3];
        for (int i = 0; i < cases[c].n; i++) x[i] = ad_leaf(t, cases[c].in[i]);
        ad_var y = cases[c].p(t, x, NULL);
        ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        for (int warm = 0; warm < 2; warm++) {
            ck_assert_int_eq(ad_tape_replay(t, cases[c].n, x, (const ad_tensor *const *)cases[c].in), AD_OK);
            ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        }
        long before = g_allocs;
        for (int r = 0; r < 10; r++) {
            ck_assert_int_eq(ad_tape_replay(t, cases[c].n, x, (const ad_tensor *const *)cases[c].in), AD_OK);
            ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
        }
        ck_assert_msg(g_allocs == before, "case %d: %ld heap allocations in 10 replays", c, g_allocs - before);
        ad_tape_free(t);
    }
    for (int i = 0; i < 3; i++) ad_tensor_free(s[i]);
    for (int i = 0; i < 3; i++) ad_tensor_free(lay[i]);
    for (int i = 0; i < 2; i++) ad_tensor_free(conv[i]);
}
END_TEST

/* ---- the scalar program (replay.c) and its reverse sweep (backward.c) ---- */

/* Two params over one grad tensor, a leaf, a const, and ops with and without a fast VJP;
** *mid is a node inside. */
static ad_var p_program(ad_tape *t, const ad_var *x, ad_var *mid, bool fast_only)
{
    ad_var u = ad_add(ad_mul(x[0], x[1]), ad_scalar(t, AD_F64, 0.25)), v = ad_div(ad_sin(x[2]), ad_exp(x[3]));
    *mid = ad_sub(ad_tanh(u), ad_square(v));
    ad_var w = fast_only ? ad_sigmoid(*mid) : ad_softplus(*mid);
    return ad_add(ad_mul(w, x[0]), ad_leaky_relu(ad_neg(x[3]), 0.1));
}

/* Values, param grads (accumulated) and leaf grads of p_program recorded at `at`, on a fresh tape. */
typedef struct prog_out {
    double y, mid, gp, gx2, gx3; /* gp: the shared grad tensor of params 0 and 1 */
} prog_out;

/* p_program's inputs on t, valued at[0..4): params 0 and 1 sharing the grad tensor gp, a leaf, a param without one. */
static void prog_inputs(ad_tape *t, const double *at, ad_tensor **v, ad_tensor *gp, ad_var *x)
{
    for (int i = 0; i < 4; i++) v[i] = tu_f64(0, NULL, &at[i]);
    x[0] = ad_param(t, v[0], gp);
    x[1] = ad_param(t, v[1], gp);
    x[2] = ad_leaf(t, v[2]);
    x[3] = ad_param(t, v[3], NULL);
}

static prog_out recorded(const double *at, bool fast_only, bool mid_out, unsigned flags)
{
    ad_tape *f = ad_tape_new();
    ad_tensor *v[4], *gp = ad_tensor_new(AD_F64, 0, NULL);
    ad_var x[4], mid;
    prog_inputs(f, at, v, gp, x);
    ad_var y = p_program(f, x, &mid, fast_only);
    ck_assert_int_eq(ad_backward(mid_out ? mid : y, NULL, flags), AD_OK);
    prog_out o = {ad_item(y), ad_item(mid), ad_tensor_get(gp, 0), ad_tensor_get(ad_grad(x[2]), 0),
                  ad_tensor_get(ad_grad(x[3]), 0)};
    ad_tape_free(f);
    for (int i = 0; i < 4; i++) ad_tensor_free(v[i]);
    ad_tensor_free(gp);
    return o;
}

static bool same(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Replayed values and gradients are those of a fresh recording bit for bit, on both sweeps (the
** program's, and the fast sweep where the program cannot take the pass: a grad tensor shared by two
** params under AD_ACCUMULATE, an op without a fast VJP, anomaly detection), for the output and for
** a node inside, and a second backward pass after one replay adds as the fast sweep does. */
START_TEST(test_replay_program)
{
    const double rec[4] = {0.3, -0.7, 1.1, 0.2}, at[3][4] = {{1.5, 0.25, -2.0, 0.6}, {0, -0.0, 3.0, -1.0},
                                                             {-1e-3, 4.0, 0.5, 2.5}};
    for (int c = 0; c < 16; c++) {
        bool fast_only = c & 1, mid_out = c & 2, anomaly = c & 8;
        unsigned flags = (c & 4) ? AD_ACCUMULATE : 0;
        ad_tape *t = ad_tape_new();
        ad_tensor *v[4], *gp = ad_tensor_new(AD_F64, 0, NULL);
        ad_var x[4], mid;
        prog_inputs(t, rec, v, gp, x);
        ad_tape_set_anomaly_detection(t, anomaly);
        ad_var y = p_program(t, x, &mid, fast_only), out = mid_out ? mid : y;
        ck_assert_int_eq(ad_backward(out, NULL, flags), AD_OK);
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 4; i++) ad_tensor_set(v[i], 0, at[k][i]);
            ad_tensor_set(gp, 0, 0.0);
            ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
            ck_assert_int_eq(t->plan_state, anomaly ? AD_PLAN_NONE : AD_PLAN_OK);
            ck_assert(anomaly || t->plan_grad == fast_only);
            ck_assert_int_eq(ad_backward(out, NULL, flags), AD_OK);
            prog_out r = recorded(at[k], fast_only, mid_out, flags);
            ck_assert_msg(same(ad_item(y), r.y) && same(ad_item(mid), r.mid), "case %d point %d: %.17g %.17g", c, k,
                          ad_item(y), r.y);
            ck_assert_msg(same(ad_tensor_get(gp, 0), r.gp), "case %d point %d: shared grad %.17g, recorded %.17g", c,
                          k, ad_tensor_get(gp, 0), r.gp);
            ck_assert_msg(same(ad_tensor_get(ad_grad(x[2]), 0), r.gx2), "case %d point %d: leaf grad", c, k);
            ck_assert_msg(same(ad_tensor_get(ad_grad(x[3]), 0), r.gx3), "case %d point %d: param grad", c, k);
            /* a second pass on the same replay: the leaf's gradient adds up (an add recorded) */
            ck_assert_int_eq(ad_backward(out, NULL, flags), AD_OK);
            ck_assert_msg(same(ad_tensor_get(ad_grad(x[2]), 0), r.gx2 + r.gx2), "case %d point %d: second pass", c,
                          k);
        }
        ad_tape_free(t);
        for (int i = 0; i < 4; i++) ad_tensor_free(v[i]);
        ad_tensor_free(gp);
    }
}
END_TEST

/* ---- random scalar graphs: the program against fresh recordings ---- */

enum { RG_LEAVES = 4, RG_OPS = 24 };

/* One random graph: each op node applies a row's op to two earlier nodes (leaves included). */
typedef struct rgraph {
    op_row row[RG_OPS];
    int ia[RG_OPS], ib[RG_OPS];
    bool acc; /* odd leaves are params with grad tensors of their own, swept with AD_ACCUMULATE */
} rgraph;

/* Mostly ordinary values, one in eight a singular one. */
static double rg_value(ad_rng *r)
{
    static const double special[] = {0.0, -0.0, 1.0, -1.0, INFINITY, -INFINITY, NAN, 0.5};
    if (ad_rng_below(r, 8) == 0) return special[ad_rng_below(r, sizeof special / sizeof special[0])];
    return ((double)ad_rng_below(r, 40001) - 20000.0) / 8000.0; /* [-2.5, 2.5], with exact ties among them */
}

/* The same bits, or both NaN: which operand's NaN a product or sum of two NaNs passes on is left open by
** IEEE 754, and the compiler may order a commutative operation's operands either way (the program's
** inline a * b gave +NaN where the recorded kernel gave the other operand's -NaN). */
static bool same_num(double a, double b) { return (isnan(a) && isnan(b)) || same(a, b); }

/* Records g on t from the leaf tensors v (params' grads in gv), runs backward; nodes[] gets every var. */
static ad_var rg_record(ad_tape *t, const rgraph *g, ad_tensor *const *v, ad_tensor *const *gv, ad_var *nodes)
{
    for (int i = 0; i < RG_LEAVES; i++) nodes[i] = g->acc && (i & 1) ? ad_param(t, v[i], gv[i]) : ad_leaf(t, v[i]);
    for (int k = 0; k < RG_OPS; k++)
        nodes[RG_LEAVES + k] = op_row_build(&g->row[k], nodes[g->ia[k]], nodes[g->ib[k]]);
    return nodes[RG_LEAVES + RG_OPS - 1];
}

/* A leaf's gradient into *out (0 when it has none); false when it has none. */
static bool rg_grad(const rgraph *g, ad_var x, int i, ad_tensor *const *gv, double *out)
{
    if (g->acc && (i & 1)) {
        *out = ad_tensor_get(gv[i], 0);
        return true;
    }
    const ad_tensor *gx = ad_grad(x);
    *out = gx ? ad_tensor_get(gx, 0) : 0.0;
    return gx != NULL;
}

/* 300 graphs of 24 random elementwise ops (every op with a one-element formula, attributes from its row; in
** half of them only ops with a one-element VJP, so that the backward pass sweeps the steps) on four leaves:
** recorded at one point, then replayed at another (in place, or from new leaf storage) from the program, with
** the backward pass after it; every node's value and every leaf's gradient must be those of a fresh
** recording at the second point, bit for bit, NaNs aside. */
START_TEST(test_replay_program_random)
{
    op_row rows[AD_OP_COUNT], swept[AD_OP_COUNT]; /* every op with a one-element formula; those with its VJP too */
    int nrows = 0, nswept = 0;
    for (int op = 0; op < AD_OP_COUNT; op++) {
        op_row r = op_row_of((ad_op)op);
        if ((r.kind == ROW_UNARY && ad__unary_one64[op]) || (r.kind == ROW_BINARY && ad__binary_one64[op]))
            rows[nrows++] = r;
        if ((r.kind == ROW_UNARY && ad__unary_one64[op] && ad__unary_grad64[op]) ||
            (r.kind == ROW_BINARY && ad__binary_one64[op] && ad__binary_grad64[op][0]))
            swept[nswept++] = r;
    }
    ck_assert_int_ge(nrows, 30);
    ck_assert_int_ge(nswept, 15);
    ad_rng rng;
    ad_rng_seed(&rng, 12345);
    int programs = 0;
    for (int gi = 0; gi < 300; gi++) {
        rgraph g;
        g.acc = gi & 1;
        bool moved = gi & 2, sweep = gi & 4; /* sweep: the backward pass sweeps the program's steps */
        for (int k = 0; k < RG_OPS; k++) {
            g.row[k] = sweep ? swept[ad_rng_below(&rng, (uint64_t)nswept)] : rows[ad_rng_below(&rng, (uint64_t)nrows)];
            g.ia[k] = (int)ad_rng_below(&rng, RG_LEAVES + k);
            g.ib[k] = (int)ad_rng_below(&rng, RG_LEAVES + k);
        }
        double p0[RG_LEAVES], p1[RG_LEAVES];
        ad_tensor *v[RG_LEAVES], *w[RG_LEAVES], *gv[RG_LEAVES], *gf[RG_LEAVES];
        for (int i = 0; i < RG_LEAVES; i++) {
            p0[i] = rg_value(&rng);
            p1[i] = rg_value(&rng);
            v[i] = tu_f64(0, NULL, &p0[i]);
            w[i] = tu_f64(0, NULL, &p1[i]);
            gv[i] = ad_tensor_new(AD_F64, 0, NULL);
            gf[i] = ad_tensor_new(AD_F64, 0, NULL);
        }
        unsigned flags = g.acc ? AD_ACCUMULATE : 0;
        ad_tape *t = ad_tape_new(), *f = ad_tape_new();
        ad_var n1[RG_LEAVES + RG_OPS], n2[RG_LEAVES + RG_OPS];
        ad_var y = rg_record(t, &g, v, gv, n1);
        ck_assert_msg(ad_ok(y), "graph %d: %s", gi, ad_tape_error(t));
        ck_assert_int_eq(ad_backward(y, NULL, flags), AD_OK);
        for (int i = 0; i < RG_LEAVES; i++) ad_tensor_set(gv[i], 0, 0.0);
        if (moved) {
            ck_assert_int_eq(ad_tape_replay(t, RG_LEAVES, n1, (const ad_tensor *const *)w), AD_OK);
        } else {
            for (int i = 0; i < RG_LEAVES; i++) ad_tensor_set(v[i], 0, p1[i]);
            ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
        }
        ck_assert_int_eq(t->plan_state, AD_PLAN_OK);
        ck_assert(!sweep || t->plan_grad);
        programs++;
        ck_assert_int_eq(ad_backward(y, NULL, flags), AD_OK);

        ad_var yf = rg_record(f, &g, w, gf, n2);
        ck_assert_msg(ad_ok(yf), "graph %d: %s", gi, ad_tape_error(f));
        ck_assert_int_eq(ad_backward(yf, NULL, flags), AD_OK);
        for (int k = 0; k < RG_LEAVES + RG_OPS; k++)
            ck_assert_msg(same_num(ad_item(n1[k]), ad_item(n2[k])), "graph %d node %d (%s): replayed %.17g, recorded %.17g",
                          gi, k, k < RG_LEAVES ? "leaf" : ad__ops[g.row[k - RG_LEAVES].op].name, ad_item(n1[k]),
                          ad_item(n2[k]));
        for (int i = 0; i < RG_LEAVES; i++) {
            double a, b;
            bool ha = rg_grad(&g, n1[i], i, gv, &a), hb = rg_grad(&g, n2[i], i, gf, &b);
            ck_assert_msg(ha == hb && same_num(a, b), "graph %d leaf %d: gradient replayed %.17g (%d), recorded %.17g (%d)",
                          gi, i, a, ha, b, hb);
        }
        ad_tape_free(t);
        ad_tape_free(f);
        for (int i = 0; i < RG_LEAVES; i++) {
            ad_tensor_free(v[i]);
            ad_tensor_free(w[i]);
            ad_tensor_free(gv[i]);
            ad_tensor_free(gf[i]);
        }
    }
    ck_assert_int_eq(programs, 300);
}
END_TEST

/* The program follows the nodes it covers: a new recording of as many nodes, other ops, is replayed
** by its own program; gradients asked for with ad_gradients take the fast sweep; a program that
** cannot be allocated leaves the replay to the general loop. */
START_TEST(test_replay_program_rebuilt)
{
    double h = 0.5, q = 2.0;
    ad_tensor *a = tu_f64(0, NULL, &h), *b = tu_f64(0, NULL, &q);
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, a);
    ad_var y = ad_tanh(ad_mul_scalar(x, 3.0));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){b}), AD_OK);
    ck_assert(ad_item(y) == tanh(6.0));
    ad_tape_reset(t);
    x = ad_leaf(t, a);
    y = ad_exp(ad_add_scalar(x, 3.0)); /* as many nodes */
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){b}), AD_OK);
    ck_assert(ad_item(y) == exp(5.0));
    ad_var g;
    ck_assert_int_eq(ad_gradients(y, 1, &x, &g, 0), AD_OK);
    ck_assert(ad_item(g) == exp(5.0));
    /* out of memory for the program (a new tape: a tape keeps its program's arrays across resets):
    ** the general loop replays, and the next replay builds it */
    ad_tape_free(t);
    t = ad_tape_new();
    x = ad_leaf(t, a);
    y = ad_sqrt(ad_add(x, x));
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    g_refuse = true;
    ad_status s = ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){b});
    g_refuse = false;
    ck_assert_int_eq(s, AD_OK);
    ck_assert_int_eq(t->plan_state, AD_PLAN_NONE);
    ck_assert(ad_item(y) == 2.0);
    ck_assert_int_eq(ad_tape_replay(t, 1, &x, (const ad_tensor *const[]){a}), AD_OK);
    ck_assert_int_eq(t->plan_state, AD_PLAN_OK);
    ck_assert(ad_item(y) == 1.0);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    ck_assert(ad_tensor_get(ad_grad(x), 0) == 1.0);
    ad_tape_free(t);
    ad_tensor_free(a);
    ad_tensor_free(b);
}
END_TEST

static Suite *replay_suite(void)
{
    Suite *s = suite_create("replay");
    TCase *tc = tcase_create("replay");
    tcase_add_test(tc, test_replay_scalar);
    tcase_add_test(tc, test_replay_layer);
    tcase_add_test(tc, test_replay_value_dependent);
    tcase_add_test(tc, test_replay_params);
    tcase_add_test(tc, test_replay_branch);
    tcase_add_test(tc, test_replay_errors);
    tcase_add_test(tc, test_replay_drops_passes);
    tcase_add_test(tc, test_replay_no_allocation);
    tcase_add_test(tc, test_replay_program);
    tcase_add_test(tc, test_replay_program_rebuilt);
    tcase_add_test(tc, test_replay_program_random);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    ad_set_allocator(counting_alloc, NULL);
    return tu_run(replay_suite());
}

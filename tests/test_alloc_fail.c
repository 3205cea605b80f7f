/* test_alloc_fail.c: fails the 1st, 2nd, ... Nth allocation of each operation until it completes: NOMEM, no leak, objects still usable. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ad.h"
#include "nn.h"
#include "test_io_util.h"
#include "test_util.h"

/*
** The injected allocator counts every request and fails the fail_at-th one:
** only that one (one_shot, so later requests succeed and the code under test
** must carry the failure forward itself) or that one and all later ones. It
** counts live blocks, so a leak shows up as live != 0 after the operation,
** independently of LeakSanitizer and valgrind.
*/
typedef struct fault_alloc {
    long allocs;  /* requests so far (fresh allocations and reallocations) */
    long live;    /* blocks not yet freed */
    long fail_at; /* 0: never */
    bool one_shot;
    bool failed;  /* a request was refused */
    bool absorbed; /* set by the operation: the refusal hit a step with a documented fallback */
} fault_alloc;

static void *fault_fn(void *ud, void *ptr, size_t nsize)
{
    fault_alloc *fa = ud;
    if (nsize == 0) {
        if (ptr) fa->live--;
        free(ptr);
        return NULL;
    }
    fa->allocs++;
    if (fa->fail_at > 0 && (fa->one_shot ? fa->allocs == fa->fail_at : fa->allocs >= fa->fail_at)) {
        fa->failed = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p && !ptr) fa->live++;
    return p;
}

/* Memory is back: nothing fails any more (to check that objects recover). */
static void heal(fault_alloc *fa) { fa->fail_at = 0; }

/* One operation under test: returns its status; runs with fa installed. */
typedef ad_status (*op_fn)(fault_alloc *fa, void *ctx);

/* Runs op with its n-th allocation failing for n = 1, 2, ... (every stride-th n)
** until a run meets no failure. Each failed run must return AD_ERR_NOMEM and
** leave no block allocated; the clean run must return AD_OK. Returns how many
** runs met a failure. */
static long sweep(const char *name, op_fn op, void *ctx, bool one_shot)
{
    long stride = 1, failures = 0, n;
    /* valgrind runs: probe a spread of points instead of every one */
    if (tu_quick()) {
        fault_alloc probe = {0};
        ad_set_allocator(fault_fn, &probe);
        ck_assert_int_eq(op(&probe, ctx), AD_OK);
        ad_set_allocator(NULL, NULL);
        stride = probe.allocs / 40 + 1;
    }
    for (n = 1; n < 1000000; n += stride) {
        fault_alloc fa = {0};
        fa.fail_at = n;
        fa.one_shot = one_shot;
        ad_set_allocator(fault_fn, &fa);
        ad_status s = op(&fa, ctx);
        ad_set_allocator(NULL, NULL);
        ck_assert_msg(fa.live == 0, "%s: allocation %ld failed (%s): %ld blocks leaked", name, n,
                      one_shot ? "once" : "and all later", fa.live);
        if (!fa.failed) {
            ck_assert_msg(s == AD_OK, "%s: clean run returned %s", name, ad_status_str(s));
            break;
        }
        failures++;
        if (fa.absorbed && s == AD_OK) continue;
        ck_assert_msg(s == AD_ERR_NOMEM, "%s: allocation %ld failed (%s): status %d (%s), expected out of memory",
                      name, n, one_shot ? "once" : "and all later", (int)s, ad_status_str(s));
    }
    ck_assert_msg(n < 1000000, "%s: never completed", name);
    if (getenv("AD_TEST_VERBOSE"))
        fprintf(stderr, "%s (%s): %ld allocation points failed in turn\n", name, one_shot ? "once" : "persistent",
                failures);
    return failures;
}

/* Runs both kinds of sweep and checks that op allocates at least min_points times. */
static void sweep_both(const char *name, op_fn op, void *ctx, long min_points)
{
    long a = sweep(name, op, ctx, false);
    long b = sweep(name, op, ctx, true);
    if (!tu_quick()) {
        ck_assert_msg(a >= min_points, "%s: only %ld allocation points", name, a);
        ck_assert_int_eq(a, b);
    }
}

/* ---- tensors ---- */

static ad_status op_tensors(fault_alloc *fa, void *ctx)
{
    (void)fa;
    (void)ctx;
    ad_status st = AD_OK;
    ad_tensor *a = ad_tensor_new(AD_F64, AD_SHAPE(3, 4));
    ad_tensor *b = ad_tensor_from(AD_F32, AD_SHAPE(2), (float[]){1, 2});
    ad_tensor *c = a ? ad_tensor_clone(a) : NULL;
    ad_tensor *e = ad_tensor_new(AD_F32, AD_SHAPE(0, 5));
    if (!a || !b || !c || !e) st = AD_ERR_NOMEM;
    if (b) ck_assert(ad_tensor_get(b, 1) == 2.0);
    if (c) ck_assert(c->size == 12 && ad_tensor_get(c, 11) == 0.0);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(c);
    ad_tensor_free(e);
    return st;
}

START_TEST(test_tensors)
{
    sweep_both("tensors", op_tensors, NULL, 4);
}
END_TEST

/* ---- tape building and backward ---- */

typedef struct net {
    ad_tensor *x, *w, *b, *wg, *bg; /* input, parameters and their gradients */
    ad_tensor *ref_wg, *ref_bg;     /* gradients of a clean run */
    double ref_y, ref_xg0;
    int chain;                      /* extra nodes so the tape spans several node chunks */
} net;

static ad_var f_many_ops(ad_tape *t, ad_var x, ad_var w, ad_var b, int chain)
{
    static const int64_t idx[3] = {0, 2, 2};
    ad_var h = ad_tanh(ad_add(ad_matmul(x, w), b)); /* [4,3], bias broadcast */
    ad_var s = ad_softmax(h, -1);
    ad_var ls = ad_log_softmax(h, 1);
    ad_var lse = ad_logsumexp(h, 1, true);
    ad_var c = ad_concat(2, (ad_var[]){h, s}, 1);                 /* [4,6] */
    ad_var sl = ad_slice(c, 1, 1, 5);                              /* [4,4] */
    ad_var is = ad_index_select(sl, 0, 3, idx);                    /* [3,4] */
    ad_var m = ad_max_axis(is, 0, false);                          /* [4] */
    ad_var r = ad_reshape(ad_transpose(h, 0, 1), AD_SHAPE(-1));
    ad_var p = ad_pow(ad_add_scalar(ad_abs(x), 1.0), ad_scalar(t, AD_F64, 0.5));
    ad_var q = ad_div(ad_gelu(x), ad_add_scalar(ad_softplus(x), 1.0));
    ad_var u = ad_maximum(ad_elu(x, 1.0), ad_clamp(ad_erf(x), -0.5, 0.5));
    ad_var v = ad_xlogy(ad_sigmoid(x), ad_add_scalar(ad_square(x), 1.0));
    ad_var f32 = ad_cast(ad_mul(ad_leaky_relu(x, 0.1), ad_sqrt(ad_add_scalar(ad_exp(x), 1.0))), AD_F32);
    ad_var y = ad_add(ad_sum(m), ad_mean(ls));
    y = ad_add(y, ad_sum(lse));
    y = ad_add(y, ad_sum(ad_sin(r)));
    y = ad_add(y, ad_mean_axis(ad_sum_axis(p, 0, false), 0, false));
    y = ad_add(y, ad_sum(ad_sub(q, ad_minimum(u, ad_cos(v)))));
    y = ad_add(y, ad_cast(ad_sum(f32), AD_F64));
    y = ad_add(y, ad_sum(ad_log1p(ad_square(ad_relu(b)))));
    for (int i = 0; i < chain; i++) y = ad_add_scalar(ad_mul_scalar(y, 1.0), 0.0);
    return y;
}

/* Records the net on t, backpropagates; returns the status, sets *xg0 to dy/dx[0]. */
static ad_status net_step(ad_tape *t, net *d, double *y_out, double *xg0)
{
    ad_tensor_fill(d->wg, 0);
    ad_tensor_fill(d->bg, 0);
    ad_var x = ad_leaf(t, d->x);
    ad_var y = f_many_ops(t, x, ad_param(t, d->w, d->wg), ad_param(t, d->b, d->bg), d->chain);
    ad_status s = ad_backward(y, NULL, 0);
    if (s == AD_OK) {
        *y_out = ad_item(y);
        *xg0 = ad_tensor_get(ad_grad(x), 0);
    }
    return s;
}

/* x [rows, 5k], w [5k, 3k], b [3k]: big enough sizes spread the step over several arena blocks. */
static void net_init(net *d, int64_t rows, int64_t k, int chain)
{
    d->x = tu_rand(AD_F64, AD_SHAPE(rows, 5 * k), -1, 1, 1);
    d->w = tu_rand(AD_F64, AD_SHAPE(5 * k, 3 * k), -1, 1, 2);
    d->b = tu_rand(AD_F64, AD_SHAPE(3 * k), -1, 1, 3);
    d->wg = tu_f64(AD_SHAPE(5 * k, 3 * k), NULL);
    d->bg = tu_f64(AD_SHAPE(3 * k), NULL);
    d->chain = chain;
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(net_step(t, d, &d->ref_y, &d->ref_xg0) == AD_OK, "%s", ad_tape_error(t));
    ad_tape_free(t);
    d->ref_wg = ad_tensor_clone(d->wg);
    d->ref_bg = ad_tensor_clone(d->bg);
    ck_assert_ptr_nonnull(d->ref_wg);
    ck_assert_ptr_nonnull(d->ref_bg);
}

static void net_free(net *d)
{
    ad_tensor_free(d->x);
    ad_tensor_free(d->w);
    ad_tensor_free(d->b);
    ad_tensor_free(d->wg);
    ad_tensor_free(d->bg);
    ad_tensor_free(d->ref_wg);
    ad_tensor_free(d->ref_bg);
}

static void assert_same(const ad_tensor *a, const ad_tensor *b)
{
    ck_assert_int_eq(a->size, b->size);
    for (int64_t i = 0; i < a->size; i++)
        ck_assert_msg(ad_tensor_get(a, i) == ad_tensor_get(b, i), "element %lld: %.17g != %.17g", (long long)i,
                      ad_tensor_get(a, i), ad_tensor_get(b, i));
}

/* After a failure: the error is sticky and says so; then the reset tape runs
** the step again and gets exactly the clean run's numbers. */
static void recover_and_recheck(fault_alloc *fa, ad_tape *t, net *d)
{
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NOMEM);
    ck_assert_msg(strstr(ad_tape_error(t), "out of memory") != NULL, "message: %s", ad_tape_error(t));
    heal(fa);
    ck_assert(!ad_ok(ad_exp(ad_scalar(t, AD_F64, 1.0))));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NOMEM);
    ad_tape_reset(t);
    double y, xg0;
    ck_assert_msg(net_step(t, d, &y, &xg0) == AD_OK, "after reset: %s", ad_tape_error(t));
    ck_assert(y == d->ref_y && xg0 == d->ref_xg0);
    assert_same(d->wg, d->ref_wg);
    assert_same(d->bg, d->ref_bg);
}

static ad_status op_backward(fault_alloc *fa, void *ctx)
{
    net *d = ctx;
    ad_tape *t = ad_tape_new();
    if (!t) return AD_ERR_NOMEM;
    double y, xg0;
    ad_status s = net_step(t, d, &y, &xg0);
    if (s == AD_OK) {
        ck_assert(y == d->ref_y && xg0 == d->ref_xg0);
        assert_same(d->wg, d->ref_wg);
        assert_same(d->bg, d->ref_bg);
    } else {
        recover_and_recheck(fa, t, d);
    }
    ad_tape_free(t);
    return s;
}

START_TEST(test_backward)
{
    net d;
    net_init(&d, 4, 1, 0);
    sweep_both("tape+backward, small", op_backward, &d, 3);
    net_free(&d);
    net_init(&d, 60, 8, 0);
    sweep_both("tape+backward, several arena blocks", op_backward, &d, 8);
    net_free(&d);
}
END_TEST

START_TEST(test_backward_long_tape)
{
    net d;
    net_init(&d, 4, 1, 1100); /* > 1024 nodes: a second node chunk and a grown chunk table */
    sweep_both("long tape+backward", op_backward, &d, 5);
    net_free(&d);
}
END_TEST

/* A warmed-up tape (arena already grown) fails during a later, bigger step. */
static ad_status op_reuse(fault_alloc *fa, void *ctx)
{
    net *d = ctx;
    ad_tape *t = ad_tape_new();
    if (!t) return AD_ERR_NOMEM;
    int chain = d->chain;
    d->chain = 0;
    double y, xg0;
    ad_status s = net_step(t, d, &y, &xg0);
    d->chain = chain;
    if (s == AD_OK) {
        /* reset merges the arena's blocks into one; when that allocation fails
        ** it keeps the blocks it has, and the step still runs */
        long before = fa->allocs;
        ad_tape_reset(t);
        if (fa->failed && fa->fail_at > before && fa->fail_at <= fa->allocs) fa->absorbed = true;
        s = net_step(t, d, &y, &xg0);
    }
    if (s != AD_OK) recover_and_recheck(fa, t, d);
    ad_tape_free(t);
    return s;
}

START_TEST(test_reuse_after_reset)
{
    net d;
    net_init(&d, 40, 6, 1500);
    sweep_both("reset+bigger step", op_reuse, &d, 5);
    net_free(&d);
}
END_TEST

/* ---- higher order: gradients recorded with AD_CREATE_GRAPH, then differentiated ---- */

static ad_status op_double_backward(fault_alloc *fa, void *ctx)
{
    net *d = ctx;
    ad_tape *t = ad_tape_new();
    if (!t) return AD_ERR_NOMEM;
    ad_var x = ad_leaf(t, d->x);
    ad_tensor_fill(d->wg, 0);
    ad_tensor_fill(d->bg, 0);
    ad_var w = ad_param(t, d->w, d->wg), b = ad_param(t, d->b, d->bg);
    ad_var y = f_many_ops(t, x, w, b, 0);
    ad_var g[2];
    ad_status s = ad_gradients(y, 2, (ad_var[]){x, w}, g, AD_CREATE_GRAPH);
    if (s == AD_OK) {
        ad_var z = ad_add(ad_sum(ad_square(g[0])), ad_sum(ad_mul(g[1], w)));
        s = ad_backward(z, NULL, 0);
    }
    if (s != AD_OK) {
        ck_assert_int_eq(ad_tape_status(t), s);
        heal(fa);
        ad_tape_reset(t);
        double yv, xg0;
        ck_assert_int_eq(net_step(t, d, &yv, &xg0), AD_OK);
        ck_assert(yv == d->ref_y);
    } else {
        ck_assert(isfinite(ad_tensor_get(ad_grad(x), 0)));
    }
    ad_tape_free(t);
    return s;
}

START_TEST(test_double_backward)
{
    net d;
    net_init(&d, 30, 4, 0);
    sweep_both("create_graph+double backward", op_double_backward, &d, 5);
    net_free(&d);
}
END_TEST

/* ---- the gradient checker ---- */

static ad_var f_check(ad_tape *t, const ad_var *in, void *ctx)
{
    (void)ctx;
    ad_var h = ad_tanh(ad_matmul(in[0], in[1]));
    return ad_add(ad_softmax(h, -1), ad_mul(ad_sin(h), ad_exp(ad_mul_scalar(h, 0.5))));
}

typedef struct check_ctx {
    const ad_tensor *in[2];
    bool second, fast;
} check_ctx;

static ad_status op_gradcheck(fault_alloc *fa, void *ctx)
{
    (void)fa;
    check_ctx *c = ctx;
    ad_check_opts o = ad_check_defaults();
    o.fast_mode = c->fast;
    ad_check_report rep;
    memset(&rep, 0xab, sizeof rep);
    ad_status s = c->second ? ad_gradgradcheck(f_check, NULL, 2, c->in, &o, &rep)
                            : ad_gradcheck(f_check, NULL, 2, c->in, &o, &rep);
    ck_assert_int_eq(rep.status, s);
    if (s == AD_ERR_NOMEM) ck_assert_msg(strstr(rep.message, "memory") != NULL, "message: %s", rep.message);
    return s;
}

static void check_sweep(bool second, bool fast, const char *name)
{
    ad_tensor *a = tu_rand(AD_F64, AD_SHAPE(2, 3), -1, 1, 7);
    ad_tensor *b = tu_rand(AD_F64, AD_SHAPE(3, 2), -1, 1, 8);
    check_ctx c = {{a, b}, second, fast};
    sweep_both(name, op_gradcheck, &c, 3);
    ad_tensor_free(a);
    ad_tensor_free(b);
}

START_TEST(test_gradcheck)
{
    check_sweep(false, false, "ad_gradcheck");
    check_sweep(false, true, "ad_gradcheck fast");
}
END_TEST

START_TEST(test_gradgradcheck)
{
    check_sweep(true, false, "ad_gradgradcheck");
    check_sweep(true, true, "ad_gradgradcheck fast");
}
END_TEST

/* ---- .npy files ---- */

typedef struct npy_ctx {
    char path[256];
    const ad_tensor *want;
} npy_ctx;

static ad_status op_npy_load(fault_alloc *fa, void *ctx)
{
    (void)fa;
    npy_ctx *c = ctx;
    ad_tensor *t = (ad_tensor *)(uintptr_t)1;
    nn_error err = {0};
    ad_status s = ad_npy_load(c->path, &t, err.message, sizeof err.message);
    if (s != AD_OK) {
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(err.message, "ad_npy_load") && strstr(err.message, "memory"), "message: %s", err.message);
        return s;
    }
    assert_same(t, c->want);
    ad_tensor_free(t);
    return s;
}

START_TEST(test_npy_load)
{
    npy_ctx c;
    const char *tmp = getenv("TMPDIR");
    snprintf(c.path, sizeof c.path, "%s/adaf-%ld.npy", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(3, 5, 2), -1, 1, 9);
    nn_error err = {0};
    ck_assert_msg(ad_npy_save(c.path, x, err.message, sizeof err.message) == AD_OK, "%s", err.message);
    c.want = x;
    sweep_both("ad_npy_load", op_npy_load, &c, 2);
    ad_tensor_free(x);
    /* a type the loader converts through a second buffer: little-endian int32 */
    static const char head[] = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
    unsigned char file[256];
    size_t hl = sizeof head - 1, total = (10 + hl + 1 + 63) / 64 * 64;
    memcpy(file, "\x93NUMPY\x01\x00", 8);
    file[8] = (unsigned char)(total - 10);
    file[9] = 0;
    memcpy(file + 10, head, hl);
    memset(file + 10 + hl, ' ', total - 10 - hl - 1);
    file[total - 1] = '\n';
    const int32_t vals[3] = {-7, 0, 123456};
    memcpy(file + total, vals, sizeof vals);
    FILE *f = fopen(c.path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(file, 1, total + sizeof vals, f), total + sizeof vals);
    ck_assert_int_eq(fclose(f), 0);
    ad_tensor *xi = tu_f64(AD_SHAPE(3), (double[]){-7, 0, 123456});
    c.want = xi;
    sweep_both("ad_npy_load int32", op_npy_load, &c, 3);
    ad_tensor_free(xi);
    unlink(c.path);
}
END_TEST

/* ---- the network layer: construction, training steps, nn_fit, save and load ---- */

/* A fingerprint of a model's parameters: FNV-1a over their bytes. */
static uint64_t params_fnv(nn_module *m)
{
    nn_param *p;
    int n = nn_module_params(m, &p);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        const unsigned char *b = p[i].value->data;
        size_t k = (size_t)p[i].value->size * ad_dtype_size(p[i].value->dtype);
        for (size_t j = 0; j < k; j++) h = (h ^ b[j]) * 1099511628211ULL;
    }
    return h;
}

typedef struct train_ctx {
    ad_tensor *x;      /* [8, 6] F32 */
    int64_t labels[8];
    int steps;
    uint64_t ref;      /* parameters after `steps` clean steps */
} train_ctx;

static nn_module *train_net(void)
{
    ad_rng r;
    ad_rng_seed(&r, 3);
    return nn_mlp(3, (const int64_t[]){6, 10, 4}, NN_RELU, &r, NULL);
}

/* One step on tape t; the status of the first failure. */
static ad_status train_step(ad_tape *t, nn_module *m, nn_optim *o, train_ctx *c)
{
    ad_tape_reset(t);
    nn_zero_grad(m);
    ad_var loss = nn_loss_cross_entropy(nn_forward(m, t, ad_const(t, c->x)), c->labels);
    ad_status s = ad_backward(loss, NULL, 0);
    if (s != AD_OK) return s;
    return nn_optim_step(o, NULL);
}

/* Builds the model and Adam, runs c->steps steps; a failed step is retried once
** memory is back, and the result must equal the clean run's exactly. */
static ad_status op_train(fault_alloc *fa, void *ctx)
{
    train_ctx *c = ctx;
    nn_module *m = train_net();
    nn_optim *o = m ? nn_adam(m, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL) : NULL;
    ad_tape *t = ad_tape_new();
    ad_status first = AD_OK;
    if (!m || !o || !t) {
        first = AD_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < c->steps; i++) {
        uint64_t before = params_fnv(m);
        int64_t steps_before = nn_optim_steps(o);
        ad_status s = train_step(t, m, o, c);
        if (s != AD_OK) {
            if (first == AD_OK) first = s;
            /* a failed step changes nothing; with memory back it runs */
            ck_assert(params_fnv(m) == before);
            ck_assert_int_eq(nn_optim_steps(o), steps_before);
            heal(fa);
            ck_assert_int_eq(train_step(t, m, o, c), AD_OK);
        }
    }
    ck_assert(params_fnv(m) == c->ref);
done:
    ad_tape_free(t);
    nn_optim_free(o);
    nn_module_free(m);
    return first;
}

static train_ctx train_ctx_make(void)
{
    train_ctx c;
    c.x = tu_rand(AD_F32, AD_SHAPE(8, 6), -1, 1, 4);
    for (int i = 0; i < 8; i++) c.labels[i] = i % 4;
    c.steps = 3;
    fault_alloc none = {0};
    ad_set_allocator(fault_fn, &none);
    c.ref = 0;
    nn_module *m = train_net();
    nn_optim *o = nn_adam(m, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL);
    ad_tape *t = ad_tape_new();
    for (int i = 0; i < c.steps; i++) ck_assert_int_eq(train_step(t, m, o, &c), AD_OK);
    c.ref = params_fnv(m);
    ad_tape_free(t);
    nn_optim_free(o);
    nn_module_free(m);
    ad_set_allocator(NULL, NULL);
    return c;
}

START_TEST(test_nn_train_steps)
{
    train_ctx c = train_ctx_make();
    sweep_both("nn_mlp+nn_adam+training steps", op_train, &c, 8);
    ad_tensor_free(c.x);
}
END_TEST

/* nn_fit over a small data set: a failure anywhere is NOMEM, and the model and
** optimizer train again once memory is back. */
typedef struct fit_ctx {
    nn_dataset ds;
    float feat[40 * 6];
    int64_t lab[40];
} fit_ctx;

static ad_status op_fit(fault_alloc *fa, void *ctx)
{
    fit_ctx *c = ctx;
    nn_module *m = train_net();
    nn_optim *o = m ? nn_sgd(m, 0.1, 0.9, 0.0, false, NULL) : NULL;
    if (!m || !o) {
        nn_optim_free(o);
        nn_module_free(m);
        return AD_ERR_NOMEM;
    }
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = 2;
    fo.batch_size = 16;
    fo.progress = NN_PROGRESS_NONE;
    fo.val = &c->ds;
    nn_error err = {0};
    ad_status s = nn_fit(m, o, &c->ds, &fo, NULL, &err);
    if (s != AD_OK) {
        ck_assert_msg(strstr(err.message, "out of memory") != NULL, "message: %s", err.message);
        heal(fa);
        ck_assert_msg(nn_fit(m, o, &c->ds, &fo, NULL, &err) == AD_OK, "%s", err.message);
    }
    nn_optim_free(o);
    nn_module_free(m);
    return s;
}

START_TEST(test_nn_fit)
{
    fit_ctx c;
    ad_rng r;
    ad_rng_seed(&r, 8);
    for (int i = 0; i < 40 * 6; i++) c.feat[i] = (float)ad_rng_uniform(&r);
    for (int i = 0; i < 40; i++) c.lab[i] = i % 4;
    c.ds = (nn_dataset){.n = 40, .dim = 6, .nclasses = 4, .pixels_u8 = NULL, .features = c.feat, .labels = c.lab};
    sweep_both("nn_fit", op_fit, &c, 4);
}
END_TEST

/* nn_save over an existing checkpoint, nn_load into a model: failures leave the
** file and the model as they were. */
typedef struct ckpt_ctx {
    char path[256];
    nn_module *m, *other; /* other: same architecture, other values */
    nn_optim *o, *other_o;
    ad_rng rng;
    unsigned char *old;
    size_t old_n;
} ckpt_ctx;

static ad_status op_save(fault_alloc *fa, void *ctx)
{
    (void)fa;
    ckpt_ctx *c = ctx;
    nn_error err = {0};
    ad_status s = nn_save(c->path, c->other, c->other_o, &c->rng, &err);
    size_t n;
    unsigned char *now = tio_read(c->path, &n);
    if (s != AD_OK) {
        ck_assert_msg(strstr(err.message, "memory") != NULL, "message: %s", err.message);
        ck_assert(n == c->old_n && memcmp(now, c->old, n) == 0);
    }
    free(now);
    if (s == AD_OK) { /* put the old bytes back for the next sweep (stdio: not the library's allocator) */
        FILE *f = fopen(c->path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(c->old, 1, c->old_n, f), c->old_n);
        ck_assert_int_eq(fclose(f), 0);
    }
    return s;
}

static ad_status op_load(fault_alloc *fa, void *ctx)
{
    (void)fa;
    ckpt_ctx *c = ctx;
    nn_error err = {0};
    uint64_t before = params_fnv(c->other);
    ad_rng r = c->rng;
    ad_status s = nn_load(c->path, c->other, c->other_o, &r, &err);
    if (s != AD_OK) {
        ck_assert_msg(strstr(err.message, "memory") != NULL, "message: %s", err.message);
        ck_assert(params_fnv(c->other) == before);
        ck_assert(memcmp(r.s, c->rng.s, sizeof r.s) == 0 && r.has_spare_ == c->rng.has_spare_);
    } else {
        ck_assert(params_fnv(c->other) == params_fnv(c->m));
        /* scramble it again for the next run */
        nn_param *p;
        int np = nn_module_params(c->other, &p);
        for (int i = 0; i < np; i++) ad_tensor_fill(p[i].value, 0.25);
    }
    return s;
}

START_TEST(test_nn_save_load)
{
    ckpt_ctx c;
    const char *tmp = getenv("TMPDIR");
    snprintf(c.path, sizeof c.path, "%s/adaf-%ld.safetensors", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    c.m = train_net();
    c.o = nn_adam(c.m, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL);
    ad_rng r;
    ad_rng_seed(&r, 99);
    c.other = nn_mlp(3, (const int64_t[]){6, 10, 4}, NN_RELU, &r, NULL);
    c.other_o = nn_adam(c.other, 1e-2, 0.9, 0.999, 1e-8, 0.0, NULL);
    ad_rng_seed(&c.rng, 5);
    nn_error err = {0};
    ck_assert_msg(nn_save(c.path, c.m, c.o, &c.rng, &err) == AD_OK, "%s", err.message);
    c.old = tio_read(c.path, &c.old_n);
    /* saving `other` over the file: any failure keeps the old bytes */
    long a = sweep("nn_save", op_save, &c, false);
    long b = sweep("nn_save", op_save, &c, true);
    if (!tu_quick()) ck_assert(a >= 3 && a == b);
    /* load m's checkpoint into `other` */
    nn_param *p;
    int np = nn_module_params(c.other, &p);
    for (int i = 0; i < np; i++) ad_tensor_fill(p[i].value, 0.25);
    sweep_both("nn_load", op_load, &c, 3);
    free(c.old);
    unlink(c.path);
    nn_optim_free(c.o);
    nn_optim_free(c.other_o);
    nn_module_free(c.m);
    nn_module_free(c.other);
}
END_TEST

static Suite *alloc_fail_suite(void)
{
    Suite *s = suite_create("alloc_fail");
    TCase *eng = tcase_create("engine");
    tcase_set_timeout(eng, 600);
    tcase_add_test(eng, test_tensors);
    tcase_add_test(eng, test_backward);
    tcase_add_test(eng, test_backward_long_tape);
    tcase_add_test(eng, test_reuse_after_reset);
    tcase_add_test(eng, test_double_backward);
    tcase_add_test(eng, test_gradcheck);
    tcase_add_test(eng, test_gradgradcheck);
    tcase_add_test(eng, test_npy_load);
    suite_add_tcase(s, eng);
    TCase *nn = tcase_create("nn");
    tcase_set_timeout(nn, 600);
    tcase_add_test(nn, test_nn_train_steps);
    tcase_add_test(nn, test_nn_fit);
    tcase_add_test(nn, test_nn_save_load);
    suite_add_tcase(s, nn);
    return s;
}

int main(void) { return tu_run(alloc_fail_suite()); }

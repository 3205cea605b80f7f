/* test_nn_checkpoint.c: nn_save/nn_load: round trips, bit-identical resumed training, corrupt files, Python readback. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn.h"
#include "test_util.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/test_nn_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static const int64_t SIZES[3] = {6, 5, 4};

/* One training step on a batch drawn from rng (inputs uniform, labels below 4). */
static void train_steps(nn_module *m, nn_optim *o, ad_rng *rng, ad_tape *t, int steps)
{
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(8, 6));
    int64_t labels[8];
    for (int s = 0; s < steps; s++) {
        ad_rng_fill_uniform(rng, x, -1, 1);
        for (int i = 0; i < 8; i++) labels[i] = (int64_t)ad_rng_below(rng, 4);
        ad_tape_reset(t);
        nn_zero_grad(m);
        ad_var l = nn_loss_cross_entropy(nn_forward(m, t, ad_const(t, x)), labels);
        ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
        ck_assert_int_eq(nn_optim_step(o, NULL), AD_OK);
    }
    ad_tensor_free(x);
}

typedef enum { ADAM, SGD_MOMENTUM, RMSPROP_CENTERED } optkind;

static nn_optim *make_opt(nn_module *m, optkind k)
{
    if (k == RMSPROP_CENTERED) { /* all three of its state tensors: square_avg, momentum, grad_avg */
        nn_optim_opts o = nn_optim_defaults("rmsprop");
        o.momentum = 0.5, o.centered = true, o.weight_decay = 1e-3;
        return nn_optim_for("rmsprop", m, &o, NULL);
    }
    return k == ADAM ? nn_adam(m, 0.01, 0.9, 0.999, 1e-8, 0.01, NULL) : nn_sgd(m, 0.05, 0.9, 1e-3, true, NULL);
}

/* true when every parameter of a and b holds the same bytes. */
static bool same_weights(nn_module *a, nn_module *b)
{
    nn_param *pa, *pb;
    int n = nn_module_params(a, &pa);
    if (n != nn_module_params(b, &pb)) return false;
    for (int i = 0; i < n; i++)
        if (memcmp(pa[i].value->data, pb[i].value->data, (size_t)pa[i].value->size * sizeof(float)) != 0)
            return false;
    return true;
}

START_TEST(test_resume_is_bit_identical)
{
    /* train K steps, save, load into fresh objects, train M more == K + M straight */
    optkind k = (optkind)_i;
    enum { K = 7, M = 9 };
    make_dir();
    char path[128];
    nn_error err = {0};
    path_in(path, sizeof path, "ckpt.safetensors");
    ad_tape *t = ad_tape_new();

    ad_rng r1;
    ad_rng_seed(&r1, 100);
    nn_module *straight = nn_mlp(3, SIZES, NN_TANH, &r1, NULL);
    nn_optim *o1 = make_opt(straight, k);
    train_steps(straight, o1, &r1, t, K + M);

    ad_rng r2;
    ad_rng_seed(&r2, 100);
    nn_module *first = nn_mlp(3, SIZES, NN_TANH, &r2, NULL);
    nn_optim *o2 = make_opt(first, k);
    train_steps(first, o2, &r2, t, K);
    ck_assert_msg(nn_save(path, first, o2, &r2, &err) == AD_OK, "%s", err.message);
    nn_optim_free(o2);
    nn_module_free(first);

    ad_rng r3;
    ad_rng_seed(&r3, 999); /* another seed: everything must come from the file */
    nn_module *resumed = nn_mlp(3, SIZES, NN_TANH, &r3, NULL);
    nn_optim *o3 = make_opt(resumed, k);
    ck_assert_msg(nn_load(path, resumed, o3, &r3, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(nn_optim_steps(o3), K);
    ck_assert(!same_weights(resumed, straight));
    train_steps(resumed, o3, &r3, t, M);
    ck_assert(same_weights(resumed, straight));
    ck_assert_int_eq(nn_optim_steps(o3), K + M);
    ck_assert_mem_eq(&r3.s, &r1.s, sizeof r1.s);

    nn_optim_free(o1);
    nn_optim_free(o3);
    nn_module_free(straight);
    nn_module_free(resumed);
    ad_tape_free(t);
    remove_dir();
}
END_TEST

/* A checkpoint written before Adam's per-parameter step counts (no "optim.<name>.step"): each
** count is taken as "optim.step", so the run resumes as straight through. */
START_TEST(test_adam_checkpoint_without_param_steps)
{
    enum { K = 5, M = 4 };
    make_dir();
    char path[128];
    nn_error err = {0};
    path_in(path, sizeof path, "old.safetensors");
    ad_tape *t = ad_tape_new();
    ad_rng r1;
    ad_rng_seed(&r1, 7);
    nn_module *straight = nn_mlp(3, SIZES, NN_TANH, &r1, NULL);
    nn_optim *o1 = make_opt(straight, ADAM);
    train_steps(straight, o1, &r1, t, K + M);

    ad_rng r2;
    ad_rng_seed(&r2, 7);
    nn_module *first = nn_mlp(3, SIZES, NN_TANH, &r2, NULL);
    nn_optim *o2 = make_opt(first, ADAM);
    train_steps(first, o2, &r2, t, K);
    const char *names[64], *sn[64];
    const ad_tensor *ts[64];
    ad_tensor *st[64];
    nn_param *ps;
    int np = nn_module_params(first, &ps), n = 0, ns = nn_optim_state(o2, 64, sn, st), dropped = 0;
    ck_assert_int_le(np + ns, 64);
    for (int i = 0; i < np; i++) names[n] = ps[i].name, ts[n++] = ps[i].value;
    for (int i = 0; i < ns; i++) {
        size_t l = strlen(sn[i]);
        if (strcmp(sn[i], "optim.step") != 0 && l > 5 && strcmp(sn[i] + l - 5, ".step") == 0) {
            ck_assert(ad_tensor_get(st[i], 0) == K);
            dropped++;
            continue;
        }
        names[n] = sn[i], ts[n++] = st[i];
    }
    ck_assert_int_eq(dropped, np);
    const char *meta[] = {"optimizer", "adam", "model", nn_module_kind(first)};
    ck_assert_msg(nn_safetensors_save(path, n, names, ts, 2, meta, &err) == AD_OK, "%s", err.message);

    ad_rng r3;
    ad_rng_seed(&r3, 999);
    nn_module *resumed = nn_mlp(3, SIZES, NN_TANH, &r3, NULL);
    nn_optim *o3 = make_opt(resumed, ADAM);
    ck_assert_msg(nn_load(path, resumed, o3, NULL, &err) == AD_OK, "%s", err.message);
    ns = nn_optim_state(o3, 64, sn, st);
    for (int i = 0; i < ns; i++)
        if (strcmp(sn[i] + strlen(sn[i]) - 5, ".step") == 0) ck_assert(ad_tensor_get(st[i], 0) == K);
    train_steps(resumed, o3, &r2, t, M); /* the batches from the first run's generator */
    ck_assert(same_weights(resumed, straight));
    /* and a file that lacks other state is still refused */
    ck_assert_msg(nn_safetensors_save(path, n - 1, names, ts, 2, meta, &err) == AD_OK, "%s", err.message);
    ck_assert_int_eq(nn_load(path, resumed, o3, NULL, &err), AD_ERR_FORMAT);

    nn_optim_free(o1);
    nn_optim_free(o2);
    nn_optim_free(o3);
    nn_module_free(straight);
    nn_module_free(first);
    nn_module_free(resumed);
    ad_tape_free(t);
    remove_dir();
}
END_TEST

/* ---- L-BFGS: its (s, y) history travels with the checkpoint ---- */

typedef struct fit_ctx {
    nn_module *m;
    ad_tape *t;
    ad_tensor *x, *y;
} fit_ctx;

/* The closure: the mean squared error of m on (x, y), backpropagated. */
static ad_status fit_closure(void *ctx, double *loss, nn_error *err)
{
    fit_ctx *c = ctx;
    ad_tape_reset(c->t);
    ad_var l = nn_loss_mse(nn_forward(c->m, c->t, ad_const(c->t, c->x)), ad_const(c->t, c->y));
    if (!ad_ok(l) || ad_backward(l, NULL, 0) != AD_OK) return nn_error_from_tape(err, "fit_closure", c->t);
    *loss = ad_item(l);
    return AD_OK;
}

static nn_optim *make_lbfgs(nn_module *m)
{
    nn_optim_opts o = nn_optim_defaults("lbfgs");
    o.history = 4; /* fewer slots than iterations: the ring wraps */
    o.max_iter = 3;
    return nn_optim_for("lbfgs", m, &o, NULL);
}

static void minimize(nn_optim *o, fit_ctx *c, int calls)
{
    for (int i = 0; i < calls; i++) {
        nn_error err = {0};
        double loss;
        ck_assert_msg(nn_optim_minimize(o, fit_closure, c, &loss, &err) == AD_OK, "%s", err.message);
        ck_assert(isfinite(loss));
    }
}

/* The history entry name of o's state, or NULL. */
static ad_tensor *state_named(nn_optim *o, const char *name)
{
    const char *names[64];
    ad_tensor *ts[64];
    int n = nn_optim_state(o, 64, names, ts);
    ck_assert_int_le(n, 64);
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return ts[i];
    return NULL;
}

START_TEST(test_lbfgs_resume_is_bit_identical)
{
    enum { K = 3, M = 3 };
    static const int64_t sizes[3] = {3, 4, 1};
    make_dir();
    char path[128];
    nn_error err = {0};
    path_in(path, sizeof path, "lbfgs.safetensors");
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(16, 3), -1, 1, 7), *y = tu_rand(AD_F32, AD_SHAPE(16, 1), -1, 1, 8);
    fit_ctx c = {NULL, ad_tape_new(), x, y};

    ad_rng r1;
    ad_rng_seed(&r1, 30);
    nn_module *straight = nn_mlp(3, sizes, NN_TANH, &r1, NULL);
    nn_optim *o1 = make_lbfgs(straight);
    c.m = straight;
    minimize(o1, &c, K + M);

    ad_rng r2;
    ad_rng_seed(&r2, 30);
    nn_module *first = nn_mlp(3, sizes, NN_TANH, &r2, NULL);
    nn_optim *o2 = make_lbfgs(first);
    c.m = first;
    minimize(o2, &c, K);
    ad_tensor *pairs = state_named(o2, "optim.lbfgs.pairs");
    ck_assert_ptr_nonnull(pairs);
    ck_assert(ad_tensor_get(pairs, 1) == 4); /* the ring is full */
    ck_assert_int_eq(state_named(o2, "optim.lbfgs.s")->shape[0], 4);
    ck_assert_int_eq(state_named(o2, "optim.lbfgs.s")->shape[1], nn_module_num_weights(first));
    ck_assert_msg(nn_save(path, first, o2, NULL, &err) == AD_OK, "%s", err.message);
    int64_t k_steps = nn_optim_steps(o2);
    ck_assert_int_ge(k_steps, K + 2);
    nn_optim_free(o2);
    nn_module_free(first);

    /* resumed from the file: weights, step count, history, position */
    for (int variant = 0; variant < 2; variant++) {
        ad_rng r3;
        ad_rng_seed(&r3, 999);
        nn_module *resumed = nn_mlp(3, sizes, NN_TANH, &r3, NULL);
        nn_optim *o3 = make_lbfgs(resumed);
        ck_assert_msg(nn_load(path, resumed, o3, NULL, &err) == AD_OK, "%s", err.message);
        ck_assert_int_eq(nn_optim_steps(o3), k_steps);
        if (variant == 1) { /* the history forgotten (what a load gave before): another path */
            ad_tensor_set(state_named(o3, "optim.lbfgs.pairs"), 1, 0.0);
            nn_optim_state_changed(o3);
        }
        c.m = resumed;
        minimize(o3, &c, M);
        ck_assert_msg(same_weights(resumed, straight) == (variant == 0), "variant %d", variant);
        if (variant == 0) ck_assert_int_eq(nn_optim_steps(o3), nn_optim_steps(o1));
        nn_optim_free(o3);
        nn_module_free(resumed);
    }

    /* a position that this optimizer cannot have written drops the history, and it runs on */
    ad_rng r4;
    ad_rng_seed(&r4, 30);
    nn_module *m4 = nn_mlp(3, sizes, NN_TANH, &r4, NULL);
    nn_optim *o4 = make_lbfgs(m4);
    ck_assert_msg(nn_load(path, m4, o4, NULL, &err) == AD_OK, "%s", err.message);
    const double bad[3][3] = {{4, 4, 1}, {0, 5, 1}, {0.5, 2, 1}};
    for (int i = 0; i < 3; i++) {
        ad_tensor *p = state_named(o4, "optim.lbfgs.pairs");
        for (int k = 0; k < 3; k++) ad_tensor_set(p, k, bad[i][k]);
        nn_optim_state_changed(o4);
        nn_optim_state(o4, 0, NULL, NULL); /* mirrors the position back */
        ck_assert(ad_tensor_get(p, 0) == 0 && ad_tensor_get(p, 1) == 0);
    }
    c.m = m4;
    minimize(o4, &c, 1);
    nn_optim_free(o4);
    nn_module_free(m4);

    /* another history length is another optimizer's state: refused, nothing changed */
    ad_rng r5;
    ad_rng_seed(&r5, 30);
    nn_module *m5 = nn_mlp(3, sizes, NN_TANH, &r5, NULL);
    nn_optim *o5 = nn_optim_for("lbfgs", m5, NULL, NULL); /* history 10 */
    ck_assert_int_eq(nn_load(path, m5, o5, NULL, &err), AD_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "optim.lbfgs"));
    ck_assert_int_eq(nn_optim_steps(o5), 0);
    nn_optim_free(o5);
    nn_module_free(m5);

    nn_optim_free(o1);
    nn_module_free(straight);
    ad_tape_free(c.t);
    ad_tensor_free(x);
    ad_tensor_free(y);
    remove_dir();
}
END_TEST

START_TEST(test_rng_state_round_trip)
{
    /* every word's high bits and a cached normal deviate survive */
    make_dir();
    char path[128];
    nn_error err = {0};
    path_in(path, sizeof path, "rng.safetensors");
    ad_rng r;
    ad_rng_seed(&r, 0xfedcba9876543210ULL);
    r.s[0] = UINT64_MAX;
    (void)ad_rng_normal(&r); /* leaves a spare */
    nn_module *m = nn_linear(2, 2, &r, NULL);
    ck_assert_int_eq(nn_save(path, m, NULL, &r, &err), AD_OK);
    ad_rng back;
    ad_rng_seed(&back, 1);
    ck_assert_msg(nn_load(path, m, NULL, &back, &err) == AD_OK, "%s", err.message);
    ck_assert_mem_eq(back.s, r.s, sizeof r.s);
    ck_assert_int_eq(back.has_spare_, r.has_spare_);
    ck_assert(back.spare_ == r.spare_);
    ck_assert(ad_rng_normal(&back) == ad_rng_normal(&r));
    nn_module_free(m);
    remove_dir();
}
END_TEST

/* A checkpoint and a model trained a little, plus a snapshot of its weights. */
typedef struct fixture {
    char path[128];
    nn_module *m;
    nn_optim *o;
    ad_rng rng;
    ad_tape *t;
} fixture;

static void fixture_new(fixture *f)
{
    make_dir();
    path_in(f->path, sizeof f->path, "model.safetensors");
    ad_rng_seed(&f->rng, 5);
    f->m = nn_mlp(3, SIZES, NN_RELU, &f->rng, NULL);
    f->o = make_opt(f->m, ADAM);
    f->t = ad_tape_new();
    train_steps(f->m, f->o, &f->rng, f->t, 3);
    nn_error err = {0};
    ck_assert_int_eq(nn_save(f->path, f->m, f->o, &f->rng, &err), AD_OK);
    train_steps(f->m, f->o, &f->rng, f->t, 2); /* now the model differs from the file */
}

static void fixture_free(fixture *f)
{
    nn_optim_free(f->o);
    nn_module_free(f->m);
    ad_tape_free(f->t);
    remove_dir();
}

/* Expects nn_load(path) to fail with want and leave model, optimizer and rng alone. */
static void expect_load_fails(fixture *f, const char *path, ad_status want)
{
    ad_rng seed = f->rng;
    nn_module *copy;
    ad_rng r;
    ad_rng_seed(&r, 5);
    copy = nn_mlp(3, SIZES, NN_RELU, &r, NULL);
    nn_param *pc, *pm;
    int n = nn_module_params(copy, &pc);
    nn_module_params(f->m, &pm);
    for (int i = 0; i < n; i++) ad_tensor_copy(pc[i].value, pm[i].value);
    int64_t steps = nn_optim_steps(f->o);
    nn_error err = {0};
    ck_assert_int_eq(nn_load(path, f->m, f->o, &f->rng, &err), want);
    ck_assert_msg(strlen(err.message) > 10, "no message");
    ck_assert(same_weights(copy, f->m));
    ck_assert_int_eq(nn_optim_steps(f->o), steps);
    ck_assert_mem_eq(seed.s, f->rng.s, sizeof seed.s);
    ck_assert_int_eq(seed.has_spare_, f->rng.has_spare_);
    nn_module_free(copy);
}

static long file_size(const char *p)
{
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return (long)st.st_size;
}

/* Copies src to dst with byte `at` xor-ed by `flip` (flip 0: none) and cut to `len` bytes (< 0: all). */
static void copy_modified(const char *src, const char *dst, long at, int flip, long len)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    ck_assert(in && out);
    long i = 0;
    int c;
    while ((c = fgetc(in)) != EOF && (len < 0 || i < len)) {
        if (i == at) c ^= flip;
        fputc(c, out);
        i++;
    }
    fclose(in);
    fclose(out);
}

START_TEST(test_corrupt_and_truncated_files)
{
    fixture f;
    fixture_new(&f);
    char bad[160];
    snprintf(bad, sizeof bad, "%s.bad", f.path);
    long size = file_size(f.path);

    copy_modified(f.path, bad, size - 3, 0x40, -1); /* a flipped bit in the data */
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, size / 2, 0x01, -1);
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, 20, 0x20, -1); /* inside the JSON header */
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, -1, 0, size - 1); /* truncated */
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, -1, 0, size / 2);
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, -1, 0, 5);
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    copy_modified(f.path, bad, 7, 0x10, -1); /* a huge header length */
    expect_load_fails(&f, bad, AD_ERR_FORMAT);
    path_in(bad, sizeof bad, "missing.safetensors");
    expect_load_fails(&f, bad, AD_ERR_IO);

    /* the intact file loads, and gives back the saved weights */
    nn_error err = {0};
    ck_assert_int_eq(nn_load(f.path, f.m, f.o, &f.rng, &err), AD_OK);
    ck_assert_int_eq(nn_optim_steps(f.o), 3);
    fixture_free(&f);
}
END_TEST

START_TEST(test_mismatched_models)
{
    fixture f;
    fixture_new(&f);
    nn_error err = {0};
    ad_rng r;
    ad_rng_seed(&r, 1);

    /* another architecture: names or shapes differ, nothing changes */
    nn_module *other = nn_mlp(3, (const int64_t[]){6, 7, 4}, NN_RELU, &r, NULL);
    nn_param *ps;
    nn_module_params(other, &ps);
    float before = ((float *)ps[0].value->data)[0];
    ck_assert_int_eq(nn_load(f.path, other, NULL, NULL, &err), AD_ERR_FORMAT);
    ck_assert(((float *)ps[0].value->data)[0] == before);
    nn_module_free(other);
    other = nn_mlp(4, (const int64_t[]){6, 5, 5, 4}, NN_RELU, &r, NULL);
    ck_assert_int_eq(nn_load(f.path, other, NULL, NULL, &err), AD_ERR_FORMAT);
    nn_module_free(other);

    /* another optimizer kind than the one saved */
    nn_optim *sgd = make_opt(f.m, SGD_MOMENTUM);
    ck_assert_int_eq(nn_load(f.path, f.m, sgd, NULL, &err), AD_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "adam"));
    nn_optim *adamw = nn_adamw(f.m, 0.1, 0.9, 0.999, 1e-8, 0, NULL);
    ck_assert_int_eq(nn_load(f.path, f.m, adamw, NULL, &err), AD_ERR_FORMAT);
    nn_optim_free(adamw);
    nn_optim_free(sgd);

    /* without optimizer or rng: only the weights are taken (evaluation) */
    ad_rng_seed(&r, 5);
    nn_module *fresh = nn_mlp(3, SIZES, NN_RELU, &r, NULL);
    ck_assert_msg(nn_load(f.path, fresh, NULL, NULL, &err) == AD_OK, "%s", err.message);
    ck_assert(!same_weights(fresh, f.m)); /* f.m trained on after saving */
    ck_assert_int_eq(nn_load(f.path, f.m, NULL, NULL, &err), AD_OK);
    ck_assert(same_weights(fresh, f.m));

    /* a file without optimizer state cannot fill one */
    char p2[160];
    path_in(p2, sizeof p2, "weights.safetensors");
    ck_assert_int_eq(nn_save(p2, fresh, NULL, NULL, &err), AD_OK);
    ck_assert_int_eq(nn_load(p2, fresh, f.o, NULL, &err), AD_ERR_FORMAT);
    ck_assert_int_eq(nn_load(p2, fresh, NULL, &r, &err), AD_ERR_FORMAT);
    ck_assert_int_eq(nn_load(p2, fresh, NULL, NULL, &err), AD_OK);

    ck_assert_int_eq(nn_save(NULL, fresh, NULL, NULL, &err), AD_ERR_ARG);
    ck_assert_int_eq(nn_save("/nonexistent-dir/x.safetensors", fresh, NULL, NULL, &err), AD_ERR_IO);
    ck_assert_int_eq(nn_load(p2, NULL, NULL, NULL, &err), AD_ERR_ARG);
    nn_module_free(fresh);
    fixture_free(&f);
}
END_TEST

/* Reads the checkpoint with json + numpy only, and compares every tensor with
** the .npy file written beside it by ad_npy_save. Exit 0: all equal. */
static const char py_check[] =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "path, d = sys.argv[1], sys.argv[2]\n"
    "raw = open(path, 'rb').read()\n"
    "n = struct.unpack('<Q', raw[:8])[0]\n"
    "hdr = json.loads(raw[8:8 + n])\n"
    "meta = hdr.pop('__metadata__')\n"
    "assert meta['format'] == 'autodiff-checkpoint', meta\n"
    "assert meta['optimizer'] == 'adam', meta\n"
    "data = raw[8 + n:]\n"
    "dt = {'F32': '<f4', 'F64': '<f8'}\n"
    "seen = 0\n"
    "for name, e in hdr.items():\n"
    "    a, b = e['data_offsets']\n"
    "    t = np.frombuffer(data[a:b], dtype=dt[e['dtype']]).reshape(e['shape'])\n"
    "    if name.startswith('optim.') or name.startswith('rng.'):\n"
    "        continue\n"
    "    want = np.load(d + '/' + name + '.npy')\n"
    "    assert t.shape == want.shape and t.dtype == want.dtype, (name, t.shape, want.shape)\n"
    "    assert np.array_equal(t, want), name\n"
    "    seen += 1\n"
    "assert seen == 4, seen\n"
    "assert hdr['optim.step']['dtype'] == 'F64'\n"
    "print('python: %d tensors match' % seen)\n";

START_TEST(test_python_reads_checkpoint)
{
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_python_reads_checkpoint: SKIPPED: /usr/bin/python3 with numpy is not available\n");
        return;
    }
    fixture f;
    fixture_new(&f);
    nn_error err = {0};
    ck_assert_int_eq(nn_load(f.path, f.m, f.o, &f.rng, &err), AD_OK); /* the saved weights */
    nn_param *ps;
    int n = nn_module_params(f.m, &ps);
    for (int i = 0; i < n; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s.npy", dir, ps[i].name);
        ck_assert_int_eq(ad_npy_save(p, ps[i].value, err.message, sizeof err.message), AD_OK);
    }
    char script[160], cmd[512];
    path_in(script, sizeof script, "check.py");
    FILE *s = fopen(script, "w");
    ck_assert_ptr_nonnull(s);
    fputs(py_check, s);
    fclose(s);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' '%s'", script, f.path, dir);
    ck_assert_int_eq(system(cmd), 0);
    fixture_free(&f);
}
END_TEST

static Suite *nn_checkpoint_suite(void)
{
    Suite *s = suite_create("nn_checkpoint");
    TCase *core = tcase_create("core");
    tcase_add_loop_test(core, test_resume_is_bit_identical, ADAM, RMSPROP_CENTERED + 1);
    tcase_add_test(core, test_lbfgs_resume_is_bit_identical);
    tcase_add_test(core, test_adam_checkpoint_without_param_steps);
    tcase_add_test(core, test_rng_state_round_trip);
    tcase_add_test(core, test_python_reads_checkpoint);
    suite_add_tcase(s, core);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_corrupt_and_truncated_files);
    tcase_add_test(errors, test_mismatched_models);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) { return tu_run(nn_checkpoint_suite()); }

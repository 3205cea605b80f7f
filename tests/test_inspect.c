/* test_inspect.c: anomaly detection messages, Graphviz DOT export (rendered with dot), tape fingerprints, and
** node slots reused after a reset or a rewind (checked on the tape's internals). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tape.h"
#include "test_util.h"

/* ======================================================================
** anomaly detection
** ====================================================================== */

START_TEST(test_anomaly_forward_log)
{
    double d[12] = {1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12};
    ad_tensor *xv = tu_f64(AD_SHAPE(4, 3), d);
    ad_tape *t = ad_tape_new();
    /* off by default: log(0) is just -inf */
    ad_var x = ad_leaf(t, xv);
    ad_var y = ad_log(x);
    ck_assert(ad_ok(y));
    ck_assert(isinf(ad_tensor_get(ad_value(y), 7)));
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    ad_tape_reset(t);
    ad_tape_set_anomaly_detection(t, true);
    x = ad_leaf(t, xv);
    ad_var a = ad_exp(ad_mul_scalar(x, 0.01)); /* finite: no complaint */
    ck_assert(ad_ok(a));
    y = ad_add(a, ad_log(x)); /* x, mul_scalar, exp, then the log: node 3 */
    ck_assert(!ad_ok(y));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NUMERIC);
    ck_assert_str_eq(ad_tape_error(t), "ad_log: non-finite output at node 3 (input [4,3]) during forward");
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

START_TEST(test_anomaly_forward_div)
{
    ad_tensor *av = tu_f64(AD_SHAPE(2), (double[]){1, 0}), *bv = tu_f64(AD_SHAPE(2), (double[]){2, 0});
    ad_tape *t = ad_tape_new();
    ad_tape_set_anomaly_detection(t, true);
    ad_var a = ad_leaf(t, av), b = ad_leaf(t, bv);
    ad_var s = ad_sin(a);
    ad_var y = ad_div(s, b);
    ck_assert(!ad_ok(y));
    ck_assert_str_eq(ad_tape_error(t), "ad_div: non-finite output at node 3 (inputs [2], [2]) during forward");
    /* later ops do nothing: the error is sticky */
    ck_assert(!ad_ok(ad_exp(a)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_NUMERIC);
    ad_tape_free(t);
    ad_tensor_free(av);
    ad_tensor_free(bv);
}
END_TEST

/* sqrt(x) at x = 0 is finite, its gradient 1 / (2 sqrt x) is not: caught during backward, both sweeps */
START_TEST(test_anomaly_backward)
{
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){4, 0, 1});
    for (int create = 0; create < 2; create++) {
        ad_tape *t = ad_tape_new();
        ad_tape_set_anomaly_detection(t, true);
        ad_var x = ad_leaf(t, xv);
        ad_var y = ad_sum(ad_mul_scalar(ad_sqrt(x), 3.0));
        ck_assert(ad_ok(y));
        ad_status s = ad_backward(y, NULL, create ? AD_CREATE_GRAPH : 0);
        ck_assert_int_eq(s, AD_ERR_NUMERIC);
        ck_assert_str_eq(ad_tape_error(t), "ad_sqrt: non-finite gradient at node 1 (input [3]) during backward");
        ad_tape_free(t);
    }
    /* without detection the gradient is inf and nothing is reported */
    ad_tape *t = ad_tape_new();
    ad_var x = ad_leaf(t, xv);
    ck_assert_int_eq(ad_backward(ad_sum(ad_sqrt(x)), NULL, 0), AD_OK);
    ck_assert(isinf(ad_tensor_get(ad_grad(x), 1)));
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

/* ======================================================================
** DOT export and fingerprints
** ====================================================================== */

/* A small model step: loss = mean(tanh(W x + b)^2), W and b params, x a leaf. */
static ad_var model(ad_tape *t, ad_tensor *w, ad_tensor *b, const ad_tensor *x, int variant)
{
    ad_var W = ad_param(t, w, NULL), B = ad_param(t, b, NULL), X = ad_const(t, x);
    ad_var z = variant == 2 ? ad_add(B, ad_matmul(W, X)) : ad_add(ad_matmul(W, X), B);
    ad_var a = variant == 1 ? ad_sigmoid(z) : ad_tanh(z);
    return ad_mean(ad_square(a));
}

static char *slurp(FILE *f)
{
    fflush(f);
    long len = ftell(f);
    ck_assert(len > 0);
    rewind(f);
    char *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    return buf;
}

START_TEST(test_dot)
{
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3, 2), -1, 1, 20), *b = tu_rand(AD_F64, AD_SHAPE(3, 1), -1, 1, 21);
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(2, 4), -1, 1, 22);
    ad_tape *t = ad_tape_new();
    ad_var loss = model(t, w, b, x, 0);
    ad_var W = ad__var(t, 0), g;
    ck_assert_int_eq(ad_gradients(loss, 1, &W, &g, AD_CREATE_GRAPH), AD_OK);
    char path[] = "/tmp/ad_test_dot_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w+");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ad_tape_write_dot(t, f), AD_OK);
    char *text = slurp(f);
    fclose(f);
    ck_assert_msg(strncmp(text, "digraph", 7) == 0, "%s", text);
    const char *want[] = {"matmul", "tanh", "square", "mean", "param", "const", "(backward)", "[3,2] f64", "n0 -> n3"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "DOT lacks \"%s\":\n%s", want[i], text);
    /* one graphviz node per tape node */
    size_t nodes = 0;
    for (const char *p = text; (p = strstr(p, "[label=")) != NULL; p++) nodes++;
    ck_assert_uint_eq(nodes, ad_tape_node_count(t));
    free(text);
    ck_assert_int_eq(ad_tape_write_dot(NULL, stdout), AD_ERR_ARG);
    ck_assert_int_eq(ad_tape_write_dot(t, NULL), AD_ERR_ARG);
    /* it renders */
    if (system("command -v dot >/dev/null 2>&1") == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o %s.svg 2>&1", path, path);
        ck_assert_int_eq(system(cmd), 0);
        char svg[64];
        snprintf(svg, sizeof svg, "%s.svg", path);
        FILE *s = fopen(svg, "r");
        ck_assert_ptr_nonnull(s);
        fseek(s, 0, SEEK_END);
        char *stext = slurp(s);
        fclose(s);
        ck_assert_msg(strstr(stext, "<svg") != NULL && strstr(stext, "matmul") != NULL, "%.200s", stext);
        free(stext);
        remove(svg);
    } else {
        fprintf(stderr, "test_dot: graphviz 'dot' not found, rendering skipped\n");
    }
    remove(path);
    ad_tape_free(t);
    ad_tensor_free(w);
    ad_tensor_free(b);
    ad_tensor_free(x);
}
END_TEST

/* The fingerprint of model(variant) recorded on shapes n x k with data from seed. */
static uint64_t fp_of(int variant, int64_t k, ad_dtype dt, uint64_t seed, bool backward)
{
    ad_tensor *w = tu_rand(dt, AD_SHAPE(3, 2), -1, 1, seed), *b = tu_rand(dt, AD_SHAPE(3, 1), -1, 1, seed + 1);
    ad_tensor *x = tu_rand(dt, AD_SHAPE(2, k), -1, 1, seed + 2);
    ad_tape *t = ad_tape_new();
    ad_var loss = model(t, w, b, x, variant);
    ck_assert(ad_ok(loss));
    if (backward) ck_assert_int_eq(ad_backward(loss, NULL, 0), AD_OK);
    uint64_t h = ad_tape_fingerprint(t);
    /* the same tape after a reset gives the same fingerprint */
    ad_tape_reset(t);
    ck_assert(ad_ok(loss = model(t, w, b, x, variant)));
    if (backward) ck_assert_int_eq(ad_backward(loss, NULL, 0), AD_OK);
    ck_assert_uint_eq(ad_tape_fingerprint(t), h);
    ad_tape_free(t);
    ad_tensor_free(w);
    ad_tensor_free(b);
    ad_tensor_free(x);
    return h;
}

START_TEST(test_fingerprint)
{
    uint64_t base = fp_of(0, 4, AD_F64, 30, false);
    ck_assert_uint_eq(fp_of(0, 4, AD_F64, 99, false), base); /* other values: equal */
    ck_assert_uint_ne(fp_of(1, 4, AD_F64, 30, false), base); /* sigmoid for tanh: an op */
    ck_assert_uint_ne(fp_of(0, 5, AD_F64, 30, false), base); /* x [2,5]: a shape */
    ck_assert_uint_ne(fp_of(2, 4, AD_F64, 30, false), base); /* b + Wx for Wx + b: the wiring */
    ck_assert_uint_ne(fp_of(0, 4, AD_F32, 30, false), base); /* a dtype */
    uint64_t bw = fp_of(0, 4, AD_F64, 30, true);
    ck_assert_uint_ne(bw, base); /* a backward pass is structure too */
    ck_assert_uint_eq(fp_of(0, 4, AD_F64, 77, true), bw);
    /* an empty tape, and NULL */
    ad_tape *t = ad_tape_new();
    uint64_t empty = ad_tape_fingerprint(t);
    ck_assert_uint_ne(empty, base);
    ad_var c = ad_scalar(t, AD_F64, 1.0);
    ck_assert(ad_ok(c));
    ck_assert_uint_ne(ad_tape_fingerprint(t), empty);
    ck_assert_uint_eq(ad_tape_fingerprint(NULL), 0);
    /* an axis is structure: sum over axis 0 vs axis 1 of a square matrix */
    ad_tensor *m = tu_rand(AD_F64, AD_SHAPE(3, 3), -1, 1, 31);
    uint64_t ax[2];
    for (int a = 0; a < 2; a++) {
        ad_tape_reset(t);
        ck_assert(ad_ok(ad_sum_axis(ad_leaf(t, m), a, false)));
        ax[a] = ad_tape_fingerprint(t);
    }
    ck_assert_uint_ne(ax[0], ax[1]);
    ad_tensor_free(m);
    ad_tape_free(t);
}
END_TEST

/* ======================================================================
** node slots reused: the inline scalar path writes only part of a slot
** marked clean (tape.h, ad__clean_word)
** ====================================================================== */

/* Every slot of t's node storage marked clean is clean; returns how many of the recorded nodes'
** slots are marked. */
static uint32_t assert_marked_clean(const ad_tape *t)
{
    static const ad_attr zero_attr;
    static const int64_t zero_shape[AD_MAX_DIMS];
    uint32_t marked = 0;
    for (size_t c = 0; c < t->nchunks; c++)
        for (uint32_t j = 0; j < AD_NODE_CHUNK; j++) {
            uint32_t id = (uint32_t)(c << AD_NODE_CHUNK_BITS) + j;
            if (!(*ad__clean_word(t->chunks[c], id) & ((uint64_t)1 << (id & 63)))) continue;
            marked += id < t->count;
            const ad_node *n = ad__node(t, id);
            ck_assert_msg(memcmp(&n->attr.f, &zero_attr.f, sizeof n->attr.f) == 0, "slot %u: attr.f", id);
            ck_assert_msg(memcmp(&n->attr.i, &zero_attr.i, sizeof n->attr.i) == 0, "slot %u: attr.i", id);
            ck_assert_msg(n->attr.idx == NULL, "slot %u: attr.idx", id);
            ck_assert_msg(memcmp(n->value.shape, zero_shape, sizeof zero_shape) == 0, "slot %u: shape", id);
            ck_assert_msg(n->value.ndim == 0 && n->value.size == 1, "slot %u: ndim %d, size %lld", id, n->value.ndim,
                          (long long)n->value.size);
            ck_assert_msg(n->in == n->in_small, "slot %u: in", id);
            ck_assert_msg(n->grad == AD_NO_NODE, "slot %u: grad", id);
            ck_assert_msg(n->param_grad == NULL, "slot %u: param_grad", id);
        }
    return marked;
}

/* Records nodes that write every field the scalar path leaves alone: params with grad tensors,
** a concat of five inputs (its input list in the arena), axes, scalars with constants; and when
** bw, a backward pass recorded with AD_CREATE_GRAPH (leaves get their grad). Returns the output. */
static ad_var record_dirty(ad_tape *t, ad_tensor *w, ad_tensor *gw, ad_tensor *x, bool bw)
{
    ad_var wv = ad_param(t, w, gw), xv = ad_leaf(t, x);
    ad_var parts[5];
    for (int i = 0; i < 5; i++) parts[i] = ad_mul_scalar(ad_tanh(ad_add(wv, xv)), 0.5 + i);
    ad_var cat = ad_concat(5, parts, 1);
    ad_var y = ad_sum(ad_sum_axis(ad_pow_scalar(cat, 3.0), 1, true));
    y = ad_add(y, ad_clamp(ad_add_scalar(ad_sum(xv), 2.5), -1.0, 7.0));
    ck_assert(ad_ok(y));
    if (bw) ck_assert_int_eq(ad_backward(y, NULL, AD_CREATE_GRAPH | AD_ACCUMULATE), AD_OK);
    return y;
}

/* acc = sum over i of tanh(a*b + c) * a - b, on scalars: the inline path only */
static ad_var record_scalar(ad_tape *t, ad_tensor **v, ad_tensor **g, int iters, ad_var *abc)
{
    for (int i = 0; i < 3; i++) abc[i] = ad_param(t, v[i], g[i]);
    ad_var acc = ad_scalar(t, AD_F64, 0.0);
    for (int i = 0; i < iters; i++)
        acc = ad_sub(ad_add(acc, ad_mul(ad_tanh(ad_add(ad_mul(abc[0], abc[1]), abc[2])), abc[0])), abc[1]);
    return acc;
}

START_TEST(test_slot_reuse)
{
    ad_tensor *w = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 41), *gw = ad_tensor_new(AD_F64, AD_SHAPE(3, 4));
    ad_tensor *x = tu_rand(AD_F64, AD_SHAPE(3, 4), -1, 1, 42), *v[3], *g[3], *gf[3];
    for (int i = 0; i < 3; i++) {
        v[i] = ad_tensor_from(AD_F64, AD_SCALAR_SHAPE, (const double[]){0.3 * (i + 1)});
        g[i] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
        gf[i] = ad_tensor_new(AD_F64, AD_SCALAR_SHAPE);
    }
    ad_tape *t = ad_tape_new(), *fresh = ad_tape_new();
    ad_var abc[3];
    enum { ITERS = 400, NODES = 4 + 6 * ITERS }; /* 2,404 nodes: three chunks */

    /* a scalar graph marks its slots clean, a tensor graph recorded over them unmarks them */
    ck_assert(ad_ok(record_scalar(t, v, g, ITERS, abc)));
    ck_assert_uint_eq(ad_tape_node_count(t), NODES);
    ck_assert_uint_eq(assert_marked_clean(t), NODES - 4 - 2); /* not the leaves, nor the two that grew the storage */
    ad_tape_reset(t);
    for (int k = 0; k < 40; k++) record_dirty(t, w, gw, x, true);
    ck_assert_uint_gt(ad_tape_node_count(t), NODES); /* every slot of the scalar graph */
    ck_assert_uint_lt(assert_marked_clean(t), NODES / 10); /* (its own scalar adds are marked) */

    /* the scalar graph recorded again over them: the same tape and the same gradients as on a
    ** fresh tape */
    ad_tape_reset(t);
    ad_var y = record_scalar(t, v, g, ITERS, abc);
    ck_assert_uint_eq(assert_marked_clean(t), NODES - 4);
    ck_assert(ad_ok(record_scalar(fresh, v, gf, ITERS, abc)));
    ck_assert_uint_eq(ad_tape_fingerprint(t), ad_tape_fingerprint(fresh));
    ck_assert_int_eq(ad_backward(y, NULL, AD_ACCUMULATE), AD_OK);
    ad_tape_reset(fresh);
    ck_assert_int_eq(ad_backward(record_scalar(fresh, v, gf, ITERS, abc), NULL, AD_ACCUMULATE), AD_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert(ad_tensor_get(g[i], 0) != 0.0);
        ck_assert_msg(ad_tensor_get(g[i], 0) == ad_tensor_get(gf[i], 0), "grad %d: %.17g vs %.17g", i,
                      ad_tensor_get(g[i], 0), ad_tensor_get(gf[i], 0));
    }

    /* slots a rewind dropped: a replay drops a recorded backward pass's nodes, and scalars with
    ** constants (their attr set) are recorded over some; then the plain scalar graph again */
    ad_tape_reset(t);
    y = record_dirty(t, w, gw, x, false);
    uint32_t rec = (uint32_t)ad_tape_node_count(t);
    ck_assert_int_eq(ad_backward(y, NULL, AD_CREATE_GRAPH), AD_OK);
    ck_assert_uint_gt(ad_tape_node_count(t), rec + 20);
    ck_assert_int_eq(ad_tape_replay(t, 0, NULL, NULL), AD_OK);
    ck_assert_uint_eq(ad_tape_node_count(t), rec);
    ad_var s = ad_scalar(t, AD_F64, 0.25);
    for (int i = 0; i < 40; i++) s = ad_mul_scalar(ad_add_scalar(ad_tanh(s), 0.5), 1.5);
    ck_assert(ad_ok(s));
    assert_marked_clean(t);
    ad_tape_reset(t);
    ad_tape_reset(fresh);
    ck_assert(ad_ok(record_scalar(t, v, g, ITERS, abc)));
    ck_assert(ad_ok(record_scalar(fresh, v, gf, ITERS, abc)));
    ck_assert_uint_eq(assert_marked_clean(t), NODES - 4);
    ck_assert_uint_eq(ad_tape_fingerprint(t), ad_tape_fingerprint(fresh));

    ad_tape_free(t);
    ad_tape_free(fresh);
    for (int i = 0; i < 3; i++) ad_tensor_free(v[i]), ad_tensor_free(g[i]), ad_tensor_free(gf[i]);
    ad_tensor_free(w);
    ad_tensor_free(gw);
    ad_tensor_free(x);
}
END_TEST

static Suite *inspect_suite(void)
{
    Suite *s = suite_create("inspect");
    TCase *tc = tcase_create("anomaly");
    tcase_add_test(tc, test_anomaly_forward_log);
    tcase_add_test(tc, test_anomaly_forward_div);
    tcase_add_test(tc, test_anomaly_backward);
    suite_add_tcase(s, tc);
    tc = tcase_create("inspect");
    tcase_add_test(tc, test_dot);
    tcase_add_test(tc, test_fingerprint);
    tcase_add_test(tc, test_slot_reuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(inspect_suite()); }

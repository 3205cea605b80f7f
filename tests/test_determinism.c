/* test_determinism.c: two training runs with the same seed and thread count give bit-identical parameters (XXH3 of all of them). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "nn.h"
#include "test_io_util.h"
#include "test_util.h"

/* XXH3-64 over every parameter's name, dtype, shape and bytes, in order. */
static uint64_t params_hash(nn_module *m)
{
    XXH3_state_t *st = XXH3_createState();
    ck_assert_ptr_nonnull(st);
    ck_assert(XXH3_64bits_reset(st) == XXH_OK);
    nn_param *p;
    int n = nn_module_params(m, &p);
    for (int i = 0; i < n; i++) {
        const ad_tensor *v = p[i].value;
        XXH3_64bits_update(st, p[i].name, strlen(p[i].name) + 1);
        XXH3_64bits_update(st, &v->dtype, sizeof v->dtype);
        XXH3_64bits_update(st, v->shape, (size_t)v->ndim * sizeof v->shape[0]);
        XXH3_64bits_update(st, v->data, (size_t)v->size * ad_dtype_size(v->dtype));
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* A classification set with a nonlinear rule, n rows of dim features. */
typedef struct data {
    nn_dataset ds;
    float *feat;
    int64_t *lab;
} data;

static void data_init(data *d, int64_t n, int64_t dim, uint64_t seed)
{
    d->feat = malloc((size_t)(n * dim) * sizeof *d->feat);
    d->lab = malloc((size_t)n * sizeof *d->lab);
    ck_assert(d->feat && d->lab);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < dim; j++) {
            float v = (float)ad_rng_normal(&r);
            d->feat[i * dim + j] = v;
            s += v * (j % 3 == 0 ? 1.0 : -0.5);
        }
        d->lab[i] = s > 0.5 ? 2 : s > -0.5 ? 1 : 0;
    }
    d->ds = (nn_dataset){.n = n, .dim = dim, .nclasses = 3, .pixels_u8 = NULL, .features = d->feat, .labels = d->lab};
}

static void data_free(data *d)
{
    free(d->feat);
    free(d->lab);
}

typedef struct run_cfg {
    uint64_t init_seed, shuffle_seed;
    int threads;
    bool adam;
} run_cfg;

/* Builds a model from the seed, trains it, and returns the hash of its parameters;
** also saves a checkpoint to ckpt when given. */
static uint64_t train_once(const data *d, const run_cfg *c, const char *ckpt)
{
    bool quick = tu_quick();
    int64_t hidden = quick ? 16 : 192;
    ad_set_num_threads(c->threads);
    ad_rng r;
    ad_rng_seed(&r, c->init_seed);
    nn_module *m = nn_mlp(4, (const int64_t[]){d->ds.dim, hidden, hidden, 3}, NN_GELU, &r, NULL);
    ck_assert_ptr_nonnull(m);
    nn_optim *o = c->adam ? nn_adam(m, 1e-3, 0.9, 0.999, 1e-8, 1e-4, NULL) : nn_sgd(m, 0.05, 0.9, 1e-4, true, NULL);
    ck_assert_ptr_nonnull(o);
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = quick ? 1 : 3;
    fo.batch_size = quick ? 16 : 64;
    fo.seed = c->shuffle_seed;
    fo.shuffle = true;
    fo.progress = NN_PROGRESS_NONE;
    nn_error err = {0};
    ck_assert_msg(nn_fit(m, o, &d->ds, &fo, NULL, &err) == AD_OK, "%s", err.message);
    if (ckpt) ck_assert_msg(nn_save(ckpt, m, o, &r, &err) == AD_OK, "%s", err.message);
    uint64_t h = params_hash(m);
    nn_optim_free(o);
    nn_module_free(m);
    ad_set_num_threads(1);
    return h;
}

static void check_repeatable(int threads, bool adam)
{
    data d;
    data_init(&d, tu_quick() ? 64 : 1024, tu_quick() ? 8 : 96, 42);
    run_cfg c = {7, 11, threads, adam};
    char p1[256], p2[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(p1, sizeof p1, "%s/addet-%ld-a.safetensors", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    snprintf(p2, sizeof p2, "%s/addet-%ld-b.safetensors", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    uint64_t h1 = train_once(&d, &c, p1);
    uint64_t h2 = train_once(&d, &c, p2);
    if (getenv("AD_TEST_VERBOSE"))
        fprintf(stderr, "threads %d, %s: %016llx %016llx\n", threads, adam ? "adam" : "sgd", (unsigned long long)h1,
                (unsigned long long)h2);
    ck_assert_msg(h1 == h2, "threads %d: runs differ: %016llx vs %016llx", threads, (unsigned long long)h1,
                  (unsigned long long)h2);
    /* the checkpoints (parameters, optimizer state, generator) are byte-identical too */
    size_t n1, n2;
    unsigned char *a = tio_read(p1, &n1), *b = tio_read(p2, &n2);
    ck_assert(n1 == n2 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
    unlink(p1);
    unlink(p2);

    /* the hash does see a difference: another shuffling seed, another initialization */
    run_cfg other = c;
    other.shuffle_seed = 12;
    ck_assert(train_once(&d, &other, NULL) != h1);
    other = c;
    other.init_seed = 8;
    ck_assert(train_once(&d, &other, NULL) != h1);
    data_free(&d);
}

START_TEST(test_same_seed_same_bits_1_thread)
{
    check_repeatable(1, true);
}
END_TEST

START_TEST(test_same_seed_same_bits_2_threads)
{
    check_repeatable(2, true);
}
END_TEST

START_TEST(test_same_seed_same_bits_sgd_4_threads)
{
    check_repeatable(4, false);
}
END_TEST

static Suite *determinism_suite(void)
{
    Suite *s = suite_create("determinism");
    TCase *tc = tcase_create("training");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_same_seed_same_bits_1_thread);
    tcase_add_test(tc, test_same_seed_same_bits_2_threads);
    tcase_add_test(tc, test_same_seed_same_bits_sgd_4_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(determinism_suite()); }

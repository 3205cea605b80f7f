/* test_dist.c: data-parallel training over MPI, run under mpirun -np 2: equivalence with one process, repeatability, checkpoints, failures on one rank. */
#include "nn.h"
#include "nn_dist.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
** Every check runs on every rank; a failure prints "rank R: FAIL ..." and the
** program exits 1 after the last check (mpirun then reports it). Usage:
**   test_dist            the checks
**   test_dist kill       rank 1 kills itself (SIGKILL) in the middle of training;
**                        the others must not wait forever (see dist_killed.sh)
*/

static int rank, size, failures;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", rank, __FILE__, __LINE__);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                         \
            fprintf(stderr, "\n");                                                                                \
            failures++;                                                                                           \
        }                                                                                                         \
    } while (0)

enum { N = 96, DIM = 5, CLASSES = 3 };

/* A seeded classification set: three noisy clusters. */
static nn_dataset *make_data(uint64_t seed)
{
    nn_dataset *ds = calloc(1, sizeof *ds);
    ds->n = N;
    ds->dim = DIM;
    ds->nclasses = CLASSES;
    ds->features = malloc(sizeof(float) * N * DIM);
    ds->labels = malloc(sizeof(int64_t) * N);
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int i = 0; i < N; i++) {
        int64_t c = (int64_t)ad_rng_below(&r, CLASSES);
        ds->labels[i] = c;
        for (int j = 0; j < DIM; j++) ds->features[i * DIM + j] = (float)((j % CLASSES == c) + 0.5 * ad_rng_normal(&r));
    }
    return ds;
}

static void free_data(nn_dataset *ds)
{
    free(ds->features);
    free(ds->labels);
    free(ds);
}

typedef struct run {
    nn_module *m;
    nn_optim *opt;
} run;

static run make_run(uint64_t seed)
{
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    run r;
    r.m = nn_mlp(3, (const int64_t[]){DIM, 16, CLASSES}, NN_TANH, &rng, NULL);
    nn_optim_opts o = nn_optim_defaults("adam");
    o.lr = 1e-2;
    r.opt = nn_optim_for("adam", r.m, &o, NULL);
    return r;
}

static void free_run(run *r)
{
    nn_optim_free(r->opt);
    nn_module_free(r->m);
}

static nn_fit_opts fit_opts(int epochs, int64_t batch, uint64_t seed)
{
    nn_fit_opts fo = nn_fit_defaults();
    fo.epochs = epochs;
    fo.batch_size = batch;
    fo.seed = seed;
    fo.progress = NN_PROGRESS_NONE;
    return fo;
}

/* The largest |a - b| / (1 + |b|) over the two modules' parameters; -1 when they differ in shape. */
static double max_rel_diff(nn_module *a, nn_module *b, bool *bits_equal)
{
    nn_param *pa, *pb;
    int na = nn_module_params(a, &pa), nb = nn_module_params(b, &pb);
    if (na != nb) return -1;
    double worst = 0;
    *bits_equal = true;
    for (int i = 0; i < na; i++) {
        if (pa[i].value->size != pb[i].value->size) return -1;
        for (int64_t k = 0; k < pa[i].value->size; k++) {
            double x = ad_tensor_get(pa[i].value, k), y = ad_tensor_get(pb[i].value, k);
            double d = fabs(x - y) / (1 + fabs(y));
            if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
        }
        if (memcmp(pa[i].value->data, pb[i].value->data, (size_t)pa[i].value->size * ad_dtype_size(pa[i].value->dtype)))
            *bits_equal = false;
    }
    return worst;
}

/* Whether m's parameters are bit for bit those of rank 0. */
static bool same_as_rank0(nn_module *m)
{
    nn_param *p;
    int n = nn_module_params(m, &p), same = 1, all;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)p[i].value->size * ad_dtype_size(p[i].value->dtype);
        char *theirs = malloc(bytes);
        memcpy(theirs, p[i].value->data, bytes);
        MPI_Bcast(theirs, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
        if (memcmp(theirs, p[i].value->data, bytes)) same = 0;
        free(theirs);
    }
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all == 1;
}

/* N ranks x batch B trains as one process with batch N B, up to rounding; the same bits every time. */
static void check_equivalence(nn_dist *d, const nn_dataset *ds)
{
    nn_error e = {0};
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        run ref = make_run(3), a = make_run(3), b = make_run(3);
        nn_fit_opts fo = fit_opts(3, 16 * size, 11); /* N = 96 rows: 6 / size global batches per epoch */
        fo.shuffle = shuffle;
        nn_epoch_stats sref, sa;
        CHECK(nn_fit(ref.m, ref.opt, ds, &fo, &sref, &e) == AD_OK, "single process: %s", e.message);
        nn_dist_attach(d, &fo);
        CHECK(nn_fit(a.m, a.opt, ds, &fo, &sa, &e) == AD_OK, "parallel: %s", e.message);
        CHECK(nn_fit(b.m, b.opt, ds, &fo, NULL, &e) == AD_OK, "parallel again: %s", e.message);
        bool bits;
        double diff = max_rel_diff(a.m, ref.m, &bits);
        CHECK(diff >= 0 && diff < 1e-5, "shuffle %d: %d ranks vs one process differ by %g", shuffle, size, diff);
        CHECK(nn_optim_steps(a.opt) == nn_optim_steps(ref.opt), "steps %lld vs %lld",
              (long long)nn_optim_steps(a.opt), (long long)nn_optim_steps(ref.opt));
        /* the epoch's figures are over every rank's samples */
        CHECK(fabs(sa.train_loss - sref.train_loss) < 1e-4 && fabs(sa.train_acc - sref.train_acc) < 1e-9,
              "epoch figures: loss %g vs %g, accuracy %g vs %g", sa.train_loss, sref.train_loss, sa.train_acc,
              sref.train_acc);
        diff = max_rel_diff(a.m, b.m, &bits);
        CHECK(bits, "shuffle %d: two parallel runs differ (by %g)", shuffle, diff);
        CHECK(same_as_rank0(a.m), "the ranks' weights differ");
        /* and the training did something */
        run init = make_run(3);
        CHECK(max_rel_diff(a.m, init.m, &bits) > 1e-3, "the weights did not move");
        free_run(&init);
        free_run(&ref);
        free_run(&a);
        free_run(&b);
    }
}

/* Uneven shares (a last batch of 3 rows on 2 ranks) are weighted by their sizes. */
static void check_uneven(nn_dist *d)
{
    nn_error e = {0};
    nn_dataset *ds = make_data(5);
    ds->n = 35; /* batches of 16, 16, 3 */
    run ref = make_run(4), a = make_run(4);
    nn_fit_opts fo = fit_opts(2, 16, 1);
    fo.shuffle = false;
    CHECK(nn_fit(ref.m, ref.opt, ds, &fo, NULL, &e) == AD_OK, "%s", e.message);
    nn_dist_attach(d, &fo);
    CHECK(nn_fit(a.m, a.opt, ds, &fo, NULL, &e) == AD_OK, "%s", e.message);
    bool bits;
    double diff = max_rel_diff(a.m, ref.m, &bits);
    CHECK(diff >= 0 && diff < 1e-5, "uneven shares: differ by %g", diff);
    free_run(&ref);
    free_run(&a);
    ds->n = N;
    free_data(ds);
}

/* Rank 0 saves; loading broadcasts; resuming gives the bits of the straight run. */
static void check_checkpoint(nn_dist *d, const nn_dataset *ds, const char *path)
{
    nn_error e = {0};
    run straight = make_run(8), first = make_run(8), resumed = make_run(99);
    nn_fit_opts fo = fit_opts(2, 32, 21), fo2 = fit_opts(2, 32, 22);
    nn_dist_attach(d, &fo);
    nn_dist_attach(d, &fo2);
    CHECK(nn_fit(straight.m, straight.opt, ds, &fo, NULL, &e) == AD_OK, "%s", e.message);
    CHECK(nn_fit(straight.m, straight.opt, ds, &fo2, NULL, &e) == AD_OK, "%s", e.message);
    CHECK(nn_fit(first.m, first.opt, ds, &fo, NULL, &e) == AD_OK, "%s", e.message);
    CHECK(nn_dist_save(d, path, first.m, first.opt, NULL, &e) == AD_OK, "save: %s", e.message);
    CHECK(rank != 0 || access(path, F_OK) == 0, "rank 0 wrote no %s", path);
    CHECK(nn_dist_load(d, path, resumed.m, resumed.opt, NULL, &e) == AD_OK, "load: %s", e.message);
    CHECK(nn_optim_steps(resumed.opt) == nn_optim_steps(first.opt), "the step count was not broadcast");
    CHECK(nn_fit(resumed.m, resumed.opt, ds, &fo2, NULL, &e) == AD_OK, "%s", e.message);
    bool bits;
    max_rel_diff(resumed.m, straight.m, &bits);
    CHECK(bits, "resumed training differs from the straight run");
    CHECK(same_as_rank0(resumed.m), "the ranks' weights differ after resuming");

    /* a corrupt checkpoint: rank 0's error on every rank, nothing changed */
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        FILE *f = fopen(path, "r+b");
        fseek(f, -3, SEEK_END);
        fputc('x', f);
        fclose(f);
    }
    run other = make_run(123), other0 = make_run(123);
    ad_status st = nn_dist_load(d, path, other.m, other.opt, NULL, &e);
    CHECK(st == AD_ERR_FORMAT && strstr(e.message, "rank 0:"), "corrupt checkpoint: %s (%s)", ad_status_str(st),
          e.message);
    max_rel_diff(other.m, other0.m, &bits);
    CHECK(bits, "a failed load changed the model");
    /* a missing one */
    st = nn_dist_load(d, "/nonexistent/ck.safetensors", other.m, other.opt, NULL, &e);
    CHECK(st == AD_ERR_IO && strstr(e.message, "rank 0:"), "missing checkpoint: %s (%s)", ad_status_str(st), e.message);
    free_run(&other);
    free_run(&other0);
    free_run(&straight);
    free_run(&first);
    free_run(&resumed);
}

/* A failure on one rank stops every rank, naming it. */
static void check_failures(nn_dist *d, const nn_dataset *ds)
{
    nn_error e = {0};
    /* a file one rank cannot read */
    nn_dataset *mine = NULL;
    const char *path = rank == size - 1 ? "/nonexistent/train.csv" : NULL;
    ad_status st = path ? nn_dataset_load_csv(path, 0, false, &mine, &e) : AD_OK;
    st = nn_dist_check(d, st, &e);
    char want[32];
    snprintf(want, sizeof want, "rank %d: ", size - 1);
    CHECK(st == AD_ERR_IO && strncmp(e.message, want, strlen(want)) == 0 && strstr(e.message, "train.csv"),
          "bad file on one rank: %s (%s)", ad_status_str(st), e.message);
    CHECK(nn_dist_check(d, AD_OK, &e) == AD_OK, "all ranks fine, yet %s", e.message);

    /* NaN in the share of the last rank only: every rank stops with its name */
    nn_dataset *bad = make_data(1);
    bad->features[(N - 1) * DIM] = NAN; /* no shuffling: the last rows go to the last rank */
    run r = make_run(2), r2 = make_run(2);
    nn_fit_opts fo = fit_opts(1, 32, 1);
    fo.shuffle = false;
    nn_dist_attach(d, &fo);
    st = nn_fit(r.m, r.opt, bad, &fo, NULL, &e);
    CHECK(st == AD_ERR_NUMERIC && strstr(e.message, want) && strstr(e.message, "nan"), "NaN on one rank: %s (%s)",
          ad_status_str(st), e.message);
    /* skipped on every rank alike */
    fo.skip_nonfinite = true;
    nn_epoch_stats s;
    st = nn_fit(r2.m, r2.opt, bad, &fo, &s, &e);
    CHECK(st == AD_OK && s.skipped == 1, "skip on every rank: %s, %lld skipped (%s)", ad_status_str(st),
          (long long)s.skipped, e.message);
    CHECK(same_as_rank0(r2.m), "the ranks' weights differ after a skipped step");
    free_run(&r);
    free_run(&r2);
    free_data(bad);

    /* a gradient that is not finite on one rank (the loss is): named too */
    run g = make_run(2);
    nn_param *const *ps;
    nn_optim_params(g.opt, &ps);
    if (rank == size - 1) ad_tensor_set(ps[0]->grad, 0, INFINITY);
    else ad_tensor_fill(ps[0]->grad, 1.0);
    st = nn_dist_allreduce_grads(d, g.m, 1.0 / size, &e);
    CHECK(st == AD_ERR_NUMERIC && strstr(e.message, want), "Inf gradient on one rank: %s (%s)", ad_status_str(st),
          e.message);
    free_run(&g);
    (void)ds;
}

/* Bucketing: gradients spanning several buckets (and F64 beside F32) are summed exactly. */
static void check_buckets(nn_dist *d)
{
    nn_error e = {0};
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    /* 1024 x 1500 weights: 6 MB of F32, two buckets */
    nn_module *m = nn_sequential(2, (nn_module *[]){nn_linear(1500, 1024, &rng, NULL),
                                                    nn_linear_ex(1024, 3, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F64, &rng, NULL)},
                                 NULL);
    nn_param *p;
    int n = nn_module_params(m, &p);
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < p[i].grad->size; k++) ad_tensor_set(p[i].grad, k, (double)(rank + 1) * (double)(k % 1000));
    CHECK(nn_dist_allreduce_grads(d, m, 1.0, &e) == AD_OK, "%s", e.message);
    double total = size * (size + 1) / 2.0;
    int wrong = 0;
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < p[i].grad->size; k++) wrong += ad_tensor_get(p[i].grad, k) != total * (double)(k % 1000);
    CHECK(wrong == 0, "%d gradient elements summed wrong", wrong);
    nn_module_free(m);
}

/* Rank 1 dies in the middle of training; mpirun must end the job. */
static void on_epoch_kill(const nn_epoch_stats *s, void *ctx)
{
    (void)ctx;
    if (rank == 1 && s->epoch == 2) raise(SIGKILL);
}

static int killed_rank(nn_dist *d, const nn_dataset *ds)
{
    nn_error e = {0};
    run r = make_run(1);
    nn_fit_opts fo = fit_opts(1000000, 32, 1);
    fo.on_epoch = on_epoch_kill;
    nn_dist_attach(d, &fo);
    ad_status st = nn_fit(r.m, r.opt, ds, &fo, NULL, &e);
    fprintf(stderr, "rank %d: training returned %s: %s\n", rank, ad_status_str(st), e.message);
    free_run(&r);
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    nn_error e = {0};
    nn_dist *d = nn_dist_new(MPI_COMM_WORLD, &e);
    if (!d) {
        fprintf(stderr, "nn_dist_new: %s\n", e.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    rank = nn_dist_rank(d);
    size = nn_dist_size(d);
    nn_dataset *ds = make_data(1);
    int rc;
    if (argc > 1 && strcmp(argv[1], "kill") == 0) {
        rc = killed_rank(d, ds);
    } else {
        char path[256];
        snprintf(path, sizeof path, "%s/test_dist.%ld.safetensors", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
                 (long)(rank == 0 ? getpid() : 0));
        MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
        CHECK(size >= 2, "run me under mpirun -np 2 (size %d)", size);
        check_equivalence(d, ds);
        check_uneven(d);
        check_buckets(d);
        check_checkpoint(d, ds, path);
        check_failures(d, ds);
        if (rank == 0) remove(path);
        int all;
        MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        if (rank == 0) printf("%s: %d failure%s on %d ranks\n", all ? "FAIL" : "ok", all, all == 1 ? "" : "s", size);
        rc = all != 0;
    }
    free_data(ds);
    nn_dist_free(d);
    MPI_Finalize();
    return rc;
}

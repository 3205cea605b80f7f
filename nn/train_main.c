/* train_main.c: autodiff-train, trains and evaluates an MLP classifier from the command line (Fashion-MNIST by default). */
#include "nn.h"
#include "train_args.h"
#include "train_checks.h"
#include "train_extras.h"
#ifdef AD_HAVE_MPI
#include "nn_dist.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef AD_HAVE_MPI
typedef struct nn_dist nn_dist;
#endif

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Every output path, before the data are loaded (a run must not train for hours to find it
** cannot save). 0 or the exit status. */
static int check_outputs(const config *c)
{
    int rc = 0;
    if (c->save) rc = train_check_output("save", c->save, true);
    if (!rc && c->log) rc = train_check_output("log", c->log, false);
    if (!rc && c->plot) rc = train_check_output("plot", c->plot, false);
    if (!rc && c->draw) rc = train_check_output("draw", c->draw, false);
    return rc;
}

/* dir/name.gz or dir/name, whichever exists (the .gz name if neither). */
static void idx_path(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s.gz", dir, name);
    if (is_file(out)) return;
    snprintf(out, n, "%s/%s", dir, name);
    if (!is_file(out)) snprintf(out, n, "%s/%s.gz", dir, name);
}

/* Loads the training and test sets; 0 or the exit status. */
static int load_data(const config *c, nn_dataset **train, nn_dataset **test)
{
    nn_error err;
    ad_status st;
    if (c->train_npy) {
        for (int i = 0; i < 2; i++) {
            const char *arg = i ? c->test_npy : c->train_npy, *comma = strchr(arg, ',');
            char xp[4096];
            if (!comma || (size_t)(comma - arg) >= sizeof xp || !comma[1])
                return train_usage_error("--train-npy/--test-npy want FEATURES.npy,TARGETS.npy, not '%s'", arg);
            memcpy(xp, arg, (size_t)(comma - arg));
            xp[comma - arg] = 0;
            if (!is_file(xp)) return train_usage_error("cannot open .npy file '%s'", xp);
            if (!is_file(comma + 1)) return train_usage_error("cannot open .npy file '%s'", comma + 1);
            st = nn_dataset_load_npy(xp, comma + 1, !c->regression, i ? test : train, &err);
            if (st != AD_OK) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                return 1;
            }
        }
        return 0;
    }
    if (c->train_csv) {
        for (int i = 0; i < 2; i++) {
            const char *p = i ? c->test_csv : c->train_csv;
            if (!is_file(p)) return train_usage_error("cannot open CSV file '%s'", p);
            st = c->regression ? nn_dataset_load_csv_targets(p, c->label_col, c->csv_header, i ? test : train, &err)
                               : nn_dataset_load_csv(p, c->label_col, c->csv_header, i ? test : train, &err);
            if (st != AD_OK) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                return st == AD_ERR_ARG ? 2 : 1; /* AD_ERR_ARG: --label-col beyond the file's columns */
            }
        }
        return 0;
    }
    const char *dir = c->data ? c->data : DEFAULT_DATA;
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char paths[4][4096];
    for (int i = 0; i < 4; i++) {
        idx_path(paths[i], sizeof paths[i], dir, names[i]);
        if (!is_file(paths[i])) {
            if (!c->data)
                fprintf(stderr,
                        "autodiff-train: Fashion-MNIST is not installed (no %s); install it with "
                        "'apt-get install dataset-fashion-mnist', or give --data DIR or --train-csv/--test-csv\n",
                        paths[i]);
            else
                fprintf(stderr, "autodiff-train: missing data file %s\n", paths[i]);
            return 2;
        }
    }
    for (int i = 0; i < 2; i++) {
        st = nn_dataset_load_idx(paths[2 * i], paths[2 * i + 1], i ? test : train, &err);
        if (st != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            return 1;
        }
    }
    return 0;
}

static nn_optim *make_optim(const config *c, nn_module *m, nn_error *err)
{
    nn_optim_opts o = nn_optim_defaults(c->optimizer);
    o.lr = c->lr;
    o.weight_decay = c->weight_decay;
    if (strcmp(c->optimizer, "sgd") == 0) {
        o.momentum = c->momentum;
        o.nesterov = c->nesterov;
    } else if (train_given(c, "momentum")) { /* rmsprop (check_moot refuses it with the others) */
        o.momentum = c->momentum;
    }
    return nn_optim_for(c->optimizer, m, &o, err);
}

/* Under mpirun, every rank must know that one failed: the rank's own status
** agreed across ranks (rc, or 1 when another rank failed). Without MPI, rc. */
static int agree(nn_dist *d, int rc, const char *what)
{
#ifdef AD_HAVE_MPI
    nn_error e = {AD_OK, ""};
    if (rc) nn_error_set(&e, AD_ERR_IO, "%s", what);
    if (d && nn_dist_check(d, rc ? AD_ERR_IO : AD_OK, &e) != AD_OK) {
        if (!rc && nn_dist_rank(d) == 0) fprintf(stderr, "autodiff-train: stopping: %s\n", e.message);
        return rc ? rc : 1;
    }
#endif
    return rc;
}

/* A failure inside training that other ranks may not share (they would wait
** for this one forever): end them all. Errors already agreed ("rank R: ...")
** reach every rank and need nothing more. */
static void end_others(nn_dist *d, const nn_error *e)
{
#ifdef AD_HAVE_MPI
    if (d && nn_dist_size(d) > 1 && strncmp(e->message, "rank ", 5) != 0) {
        fflush(NULL);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#endif
}

/* Every label (or target) of both sets against the network's outputs, before the first step: a
** label beyond them would stop training at its batch, or at the first epoch's test. 0 or the
** exit status, with a message. */
static int check_targets(const config *c, nn_module *net, const nn_dataset *train, const nn_dataset *test)
{
    nn_error err;
    int64_t outputs = c->model ? train_net_outputs(net, train->dim, &err) : c->layers[c->nlayers - 1];
    if (outputs < 0) {
        fprintf(stderr, "autodiff-train: the model does not run on the data: %s\n", err.message);
        return 1;
    }
    return train_check_sets(train, test, outputs, c->regression);
}

/* --load into net, opt (NULL: the weights alone) and rng (NULL: not restored); under mpirun
** rank 0 reads it and broadcasts. A checkpoint holding NaN or Inf is refused with nn_load's
** message, or with --allow-nonfinite-load loaded and that message printed as a warning. */
static ad_status load_checkpoint(const config *c, nn_dist *d, nn_module *net, nn_optim *opt, ad_rng *rng,
                                 nn_error *err)
{
#ifdef AD_HAVE_MPI
    ad_status st = d ? nn_dist_load(d, c->load, net, opt, rng, err) : nn_load(c->load, net, opt, rng, err);
    int rank = d ? nn_dist_rank(d) : 0;
#else
    (void)d;
    ad_status st = nn_load(c->load, net, opt, rng, err);
    int rank = 0;
#endif
    if (st != AD_ERR_NUMERIC) return st;
    char *tail = strstr(err->message, " (refused; NN_LOAD_ALLOW_NONFINITE loads it)");
    if (tail)
        snprintf(tail, sizeof err->message - (size_t)(tail - err->message), " (%s)",
                 c->allow_nonfinite ? "loaded: --allow-nonfinite-load" : "refused; --allow-nonfinite-load loads it");
    if (!c->allow_nonfinite) return st;
    if (rank == 0) fprintf(stderr, "autodiff-train: warning: %s\n", err->message);
#ifdef AD_HAVE_MPI
    if (d) return nn_dist_load_ex(d, c->load, net, opt, rng, NN_LOAD_ALLOW_NONFINITE, err);
#endif
    return nn_load_ex(c->load, net, opt, rng, NN_LOAD_ALLOW_NONFINITE, err);
}

static int run(const config *c, nn_dist *d)
{
    nn_dataset *train = NULL, *test = NULL;
    nn_module *net = NULL;
    nn_optim *opt = NULL;
    nn_sched *sched = NULL;
    nn_error err;
    int64_t held = 0;
    epoch_log curves = {0};
    int rank = 0;
#ifdef AD_HAVE_MPI
    rank = nn_dist_rank(d);
#endif
    int rc = agree(d, rank == 0 ? check_outputs(c) : 0, "an output cannot be written");
    if (rc) goto done;
    rc = agree(d, load_data(c, &train, &test), "cannot load the data");
    if (rc) goto done;
    rc = 2;
    if (test->dim != train->dim) {
        fprintf(stderr, "autodiff-train: the test set has %" PRId64 " features per sample, the training set %" PRId64
                        "\n", test->dim, train->dim);
        goto done;
    }
    if (!c->model && c->layers[0] != train->dim) {
        fprintf(stderr, "autodiff-train: the first layer has %" PRId64 " inputs, the data %" PRId64 " features\n",
                c->layers[0], train->dim);
        goto done;
    }
    rc = 1;
    ad_rng rng;
    ad_rng_seed(&rng, c->seed);
    if (c->model) {
        int64_t side = (int64_t)llround(sqrt((double)train->dim));
        if (side * side != train->dim || test->dim != train->dim) {
            fprintf(stderr, "autodiff-train: --model needs square one-channel images; the data has %" PRId64
                            " features\n", train->dim);
            rc = 2;
            goto done;
        }
        net = nn_model_from_spec(c->model, 1, side, side, &rng, &err);
        if (!net) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            rc = 2;
            goto done;
        }
    } else {
        net = nn_mlp(c->nlayers, c->layers, c->act, &rng, &err);
    }
    opt = net ? make_optim(c, net, &err) : NULL;
    if (!net || !opt) {
        fprintf(stderr, "autodiff-train: cannot build the model: %s\n", err.message);
        goto done;
    }
    if ((rc = check_targets(c, net, train, test)) != 0) goto done;
    rc = 1;
    int done_epochs = 0, planned = -1; /* the checkpoint's epochs done, and in all (-1: not said) */
    if (c->load) {
        if ((rc = agree(d, rank == 0 && !is_file(c->load) ? 2 : 0, "cannot open the checkpoint")) != 0) {
            if (rank == 0) fprintf(stderr, "autodiff-train: cannot open checkpoint '%s'\n", c->load);
            goto done;
        }
        rc = 1;
        int info[3] = {-1, -1, 0};
        if ((rc = agree(d, rank == 0 ? train_checkpoint_info(c->load, opt, info) : 0, "bad checkpoint")) != 0) goto done;
        rc = 1;
#ifdef AD_HAVE_MPI
        if (d && MPI_Bcast(info, 3, MPI_INT, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
            fprintf(stderr, "autodiff-train: rank %d: MPI_Bcast failed\n", rank);
            goto done;
        }
#endif
        done_epochs = info[0];
        planned = info[1];
        /* a checkpoint that says how far its run went also holds the generator the run goes on with;
        ** --eval-only takes the optimizer's state where it is this optimizer's (--save then keeps it) */
        ad_rng *load_rng = done_epochs >= 0 ? &rng : NULL;
        nn_optim *load_opt = !c->eval_only || info[2] ? opt : NULL;
        ad_status ls = load_checkpoint(c, d, net, load_opt, load_rng, &err);
        if (ls != AD_OK) {
            if (rank == 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
            goto done;
        }
        if (done_epochs < 0) done_epochs = 0; /* weights (and optimizer) only: a new run from them */
    }
    if (c->draw) {
        rc = rank == 0 ? draw_tape(c->draw, net, train, c->batch) : 0;
        goto done;
    }
    if (c->model) {
        printf("model: %s", c->model);
    } else {
        printf("model: %" PRId64, c->layers[0]);
        for (int i = 1; i < c->nlayers; i++) printf("-%" PRId64, c->layers[i]);
        printf(" %s", nn_act_name(c->act));
    }
    printf(", %" PRId64 " weights; %s lr %g; batch %" PRId64 "; %" PRId64 " train / %" PRId64 " test samples",
           nn_module_num_weights(net), c->optimizer, c->lr, c->batch, train->n, test->n);
    held = (int64_t)floor(c->val_split * (double)train->n);
    if (held > 0) printf(" (%" PRId64 " of the train samples held out for validation)", held);
    printf("\n");
    if (fflush(stdout) != 0) { /* before training, not after it */
        fprintf(stderr, "autodiff-train: cannot write the standard output: %s\n", strerror(errno));
        goto done;
    }
    int end_epoch = c->stop_after && c->stop_after < c->epochs ? c->stop_after : c->epochs; /* this part's last */
    if (!c->eval_only && done_epochs > 0) {
        printf("resuming after epoch %d of %d from %s", done_epochs, c->epochs, c->load);
        if (end_epoch <= done_epochs) printf(": no epoch left to train before epoch %d", end_epoch);
        else if (planned >= 0 && planned != c->epochs && strcmp(c->schedule, "none") != 0 && strcmp(c->schedule, "step") != 0)
            printf(" (its run had %d epochs in all: the %s schedule now spans %d)", planned, c->schedule, c->epochs);
        printf("\n");
    }
    if (!c->eval_only && end_epoch > done_epochs) {
        nn_fit_opts fo = nn_fit_defaults();
        int64_t rows = train->n - held, steps_per_epoch = (rows + c->batch - 1) / c->batch;
        int64_t total = steps_per_epoch * c->epochs;
        if (strcmp(c->schedule, "none") != 0) {
            nn_sched_opts so = nn_sched_defaults(c->lr, total);
            if (strcmp(c->schedule, "step") == 0) so.step_size = 5 * steps_per_epoch, so.gamma = 0.5;
            if (c->warmup) so.warmup_steps = c->warmup < total ? c->warmup : total;
            if (!(sched = nn_sched_new(c->schedule, &so, &err))) {
                fprintf(stderr, "autodiff-train: %s\n", err.message);
                rc = 2;
                goto done;
            }
        }
        static const struct {
            const char *name;
            nn_loss_kind kind;
        } losses[] = {{"cross_entropy", NN_LOSS_CROSS_ENTROPY}, {"mse", NN_LOSS_MSE}, {"huber", NN_LOSS_HUBER},
                      {"l1", NN_LOSS_L1}, {"bce", NN_LOSS_BCE_WITH_LOGITS}};
        for (size_t i = 0; c->loss && i < sizeof losses / sizeof losses[0]; i++)
            if (strcmp(c->loss, losses[i].name) == 0) fo.loss = losses[i].kind;
        fo.epochs = c->epochs; /* the schedule above spans all of --epochs, and the labels count them */
        fo.stop_epoch = end_epoch;
        fo.initial_epoch = done_epochs;
        fo.rng = &rng; /* the shuffles, from the generator the checkpoint saves */
        fo.batch_size = c->batch;
        fo.seed = c->seed;
        fo.val_split = c->val_split;
        fo.label_smoothing = c->label_smoothing;
        fo.test = test;
        fo.schedule = sched;
        fo.log_path = rank == 0 ? c->log : NULL;
        fo.out = stdout;
        fo.progress = c->quiet || strcmp(c->progress, "never") == 0 ? NN_PROGRESS_LINES
                      : strcmp(c->progress, "always") == 0      ? NN_PROGRESS_BAR
                                                                : NN_PROGRESS_AUTO;
        if (rank != 0) fo.progress = NN_PROGRESS_NONE;
        if (c->plot) {
            fo.on_epoch = epoch_log_add;
            fo.ctx = &curves;
        }
#ifdef AD_HAVE_MPI
        if (d) nn_dist_attach(d, &fo);
#endif
        fo.clip_norm = c->clip_norm;
        fo.skip_nonfinite = c->skip_nonfinite;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        nn_epoch_stats last;
        if (nn_fit(net, opt, train, &fo, &last, &err) != AD_OK) {
            if (rank == 0 || strncmp(err.message, "rank ", 5) != 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
            end_others(d, &err);
            goto done;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (isnan(last.test_acc))
            printf("final: test loss %.6g, train loss %.6g, %.1f s in all\n", last.test_loss, last.train_loss, secs);
        else
            printf("final: test accuracy %.2f%%, test loss %.4f, train accuracy %.2f%%, %.1f s in all\n",
                   100.0 * last.test_acc, last.test_loss, 100.0 * last.train_acc, secs);
        if (c->plot && rank == 0 && (rc = epoch_log_plot(&curves, c->plot)) != 0) goto done;
        rc = 1;
    } else {
        double loss, acc;
        if (nn_evaluate(net, test, 256, &loss, &acc, &err) != AD_OK) {
            fprintf(stderr, "autodiff-train: %s\n", err.message);
            goto done;
        }
        if (isnan(acc)) printf("test: loss %.6g\n", loss);
        else printf("test: loss %.4f, accuracy %.2f%%\n", loss, 100.0 * acc);
    }
    /* the checkpoint says how far the run went: a later --load goes on from there */
    char epoch_text[16], epochs_text[16];
    snprintf(epoch_text, sizeof epoch_text, "%d", c->eval_only || end_epoch < done_epochs ? done_epochs : end_epoch);
    snprintf(epochs_text, sizeof epochs_text, "%d", c->eval_only && planned >= 0 ? planned : c->epochs);
    const char *const meta[4] = {"epoch", epoch_text, "epochs", epochs_text};
    ad_status ss = c->save && rank == 0 ? nn_save_meta(c->save, net, opt, &rng, 2, meta, &err) : AD_OK;
#ifdef AD_HAVE_MPI
    if (c->save && d) ss = nn_dist_check(d, ss, &err); /* rank 0 saved: every rank learns how that went */
#endif
    if (ss != AD_OK) {
        if (rank == 0) fprintf(stderr, "autodiff-train: %s\n", err.message);
        goto done;
    }
    if (c->save) printf("saved %s\n", c->save);
    rc = 0;
done:
    nn_sched_free(sched);
    epoch_log_free(&curves);
    nn_optim_free(opt);
    nn_module_free(net);
    nn_dataset_free(train);
    nn_dataset_free(test);
    return rc;
}

/* OpenBLAS starts threads of its own when it is loaded, before main, unless OPENBLAS_NUM_THREADS
** says otherwise. The library never uses them (it calls OpenBLAS on one thread, from its own pool),
** and under a memory limit such a thread retries its buffer's allocation for ever while the exit
** waits for it. So the command runs itself again with OPENBLAS_NUM_THREADS=1 when that is not set
** (should the exec fail, it carries on as it is). Setting it from .preinit_array is too early: the
** C library sets up the environment after that. */
static void blas_single_threaded(char **argv)
{
    if (getenv("OPENBLAS_NUM_THREADS") || setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

/* What was printed must have reached the standard output (a full disk, /dev/full): a
** failure to write it fails the command (status 1, with a message when rc was 0; a failure
** already reported has its own). */
static int close_stdout(int rc)
{
    bool bad = ferror(stdout) != 0;
    errno = 0;
    bad |= fclose(stdout) != 0;
    if (bad && !rc) {
        fprintf(stderr, "autodiff-train: cannot write the standard output%s%s\n", errno ? ": " : "",
                errno ? strerror(errno) : "");
        return 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    blas_single_threaded(argv);
    config c = {0};
    c.label_col = 0;
    c.layers[0] = 784;
    c.layers[1] = 256;
    c.layers[2] = 128;
    c.layers[3] = 10;
    c.nlayers = 4;
    c.act = NN_RELU;
    c.optimizer = "adam";
    c.schedule = "cosine";
    c.lr = -1;
    c.momentum = 0.9;
    c.epochs = 12;
    c.batch = 128;
    c.seed = 1;
    c.threads = 2;
    c.progress = "auto";
    int rc = train_parse_args(argc, argv, &c);
    if (rc) return close_stdout(rc < 0 ? 0 : rc);
    if (c.lr < 0) c.lr = strcmp(c.optimizer, "sgd") == 0 ? 0.05 : 1e-3;
    ad_set_num_threads(c.threads);
    nn_dist *d = NULL;
#ifdef AD_HAVE_MPI
    /* started by mpirun (Open MPI, or another launcher through PMI/PMIx): data-parallel */
    bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    if (launched) {
        nn_error e;
        if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
            fprintf(stderr, "autodiff-train: MPI_Init failed\n");
            return 1;
        }
        if (!(d = nn_dist_new(MPI_COMM_WORLD, &e))) {
            fprintf(stderr, "autodiff-train: %s\n", e.message);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (nn_dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout)) { /* rank 0 alone prints */
            fprintf(stderr, "autodiff-train: rank %d: cannot silence its output\n", nn_dist_rank(d));
        }
    }
    rc = run(&c, d);
    if (d) {
        nn_dist_free(d);
        MPI_Finalize();
    }
#else
    rc = run(&c, d);
#endif
    return close_stdout(rc);
}

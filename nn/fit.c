/* fit.c: the training loop (nn_fit) over a data set with any loss, evaluation (nn_evaluate), and one step (nn_train_step). */
#include "nn_internal.h"
#include "optim_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nn_fit_opts nn_fit_defaults(void)
{
    nn_fit_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 10;
    o.batch_size = 64;
    o.seed = 1;
    o.shuffle = true;
    o.progress = NN_PROGRESS_AUTO;
    o.huber_delta = 1.0;
    o.accumulate = 1;
    return o;
}

/* ---- the loss ---- */

typedef struct loss_spec {
    nn_loss_kind kind; /* resolved: never NN_LOSS_AUTO */
    double delta;
    double smoothing; /* cross-entropy's label smoothing */
    nn_loss_fn fn;
    void *ctx;
    nn_module *module;
} loss_spec;

static const char *loss_name(nn_loss_kind k)
{
    static const char *const names[] = {"auto", "cross-entropy", "mse", "huber", "l1", "bce-with-logits"};
    return (int)k >= 0 && (int)k < (int)(sizeof names / sizeof names[0]) ? names[k] : "?";
}

/* The loss for data set ds (its labels or targets decide AUTO); checks they fit. */
static ad_status resolve_loss(const char *fn, const nn_fit_opts *o, const nn_dataset *ds, loss_spec *spec,
                              nn_error *err)
{
    *spec = (loss_spec){o->loss, o->huber_delta, o->label_smoothing, o->loss_fn, o->loss_ctx, o->loss_module};
    if (!(spec->smoothing >= 0 && spec->smoothing < 1))
        return nn_error_set(err, AD_ERR_ARG, "%s: label_smoothing %g must be in [0, 1)", fn, spec->smoothing);
    if (spec->smoothing != 0 && (spec->fn || spec->module))
        return nn_error_set(err, AD_ERR_ARG, "%s: label_smoothing is for the built-in cross-entropy, not a %s", fn,
                            spec->fn ? "loss callback" : "loss module");
    if (spec->fn || spec->module) return AD_OK;
    if ((int)spec->kind < NN_LOSS_AUTO || spec->kind > NN_LOSS_BCE_WITH_LOGITS)
        return nn_error_set(err, AD_ERR_ARG, "%s: unknown loss %d", fn, (int)spec->kind);
    if (spec->kind == NN_LOSS_AUTO) spec->kind = ds->labels ? NN_LOSS_CROSS_ENTROPY : NN_LOSS_MSE;
    if (spec->smoothing != 0 && spec->kind != NN_LOSS_CROSS_ENTROPY)
        return nn_error_set(err, AD_ERR_ARG, "%s: label_smoothing %g needs the cross-entropy loss, not %s", fn,
                            spec->smoothing, loss_name(spec->kind));
    if ((spec->kind == NN_LOSS_CROSS_ENTROPY) != (ds->labels != NULL))
        return nn_error_set(err, AD_ERR_ARG, "%s: the %s loss needs a data set with %s", fn, loss_name(spec->kind),
                            ds->labels ? "float targets, this one has labels" : "labels, this one has float targets");
    if (spec->kind == NN_LOSS_HUBER && !(spec->delta > 0))
        return nn_error_set(err, AD_ERR_ARG, "%s: huber_delta %g must be > 0", fn, spec->delta);
    return AD_OK;
}

/* The loss of the output against a batch (target: a var, or invalid with labels). */
static ad_var record_loss(const loss_spec *s, ad_tape *t, ad_var out, ad_var target, const int64_t *labels)
{
    if (s->fn) return s->fn(out, target, labels, s->ctx);
    if (s->module) return nn_forward_n(s->module, t, 2, (const ad_var[]){out, target});
    switch (s->kind) {
    case NN_LOSS_CROSS_ENTROPY:
        return s->smoothing != 0 ? nn_loss_cross_entropy_smooth(out, labels, s->smoothing)
                                 : nn_loss_cross_entropy(out, labels);
    case NN_LOSS_HUBER: return nn_loss_huber(out, target, s->delta);
    case NN_LOSS_L1: return nn_loss_l1(out, target);
    case NN_LOSS_BCE_WITH_LOGITS: return nn_loss_bce_with_logits(out, target);
    case NN_LOSS_AUTO:
    case NN_LOSS_MSE: break;
    }
    return nn_loss_mse(out, target);
}

/* Right answers in a batch of r rows and how many were judged: classes (argmax of
** [r, c] against labels) or, with binary cross-entropy, elements (logit > 0 against
** target > 0.5); 0 judged otherwise. */
static void count_right(const loss_spec *s, const ad_tensor *out, const ad_tensor *y, const int64_t *labels, int64_t r,
                        int64_t *right, int64_t *judged)
{
    if (labels && out->ndim == 2 && out->shape[0] == r) {
        int64_t c = out->shape[1];
        for (int64_t i = 0; i < r; i++) {
            int64_t best = 0;
            double bv = ad_tensor_get(out, i * c);
            for (int64_t j = 1; j < c; j++) {
                double v = ad_tensor_get(out, i * c + j);
                if (v > bv) bv = v, best = j;
            }
            *right += best == labels[i];
        }
        *judged += r;
    } else if (y && !s->fn && !s->module && s->kind == NN_LOSS_BCE_WITH_LOGITS && out->size == r * (y->size / y->shape[0])) {
        int64_t k = out->size;
        for (int64_t i = 0; i < k; i++) *right += (ad_tensor_get(out, i) > 0) == (ad_tensor_get(y, i) > 0.5);
        *judged += k;
    }
}

/* ---- batches ---- */

/* The buffers one batch is read into: x [bs, dim], y [bs, target...] (sets with
** targets), labels [bs] (sets with labels). */
typedef struct batch {
    ad_tensor *x, *y;
    int64_t *labels;
} batch;

static ad_status batch_new(batch *b, const nn_dataset *ds, int64_t bs)
{
    *b = (batch){0};
    b->x = ad_tensor_new(AD_F32, AD_SHAPE(bs, ds->dim));
    if (ds->targets) {
        int64_t shape[AD_MAX_DIMS];
        shape[0] = bs;
        memcpy(shape + 1, ds->target_shape, (size_t)ds->target_ndim * sizeof *shape);
        b->y = ad_tensor_new(AD_F32, ds->target_ndim + 1, shape);
    } else {
        b->labels = ad__malloc((size_t)bs * sizeof *b->labels);
    }
    return b->x && (b->y || b->labels) ? AD_OK : AD_ERR_NOMEM;
}

static void batch_free(batch *b)
{
    ad_tensor_free(b->x);
    ad_tensor_free(b->y);
    ad__free(b->labels);
}

/* The first r rows of a batch tensor, as a view. */
static ad_tensor rows_view(const ad_tensor *t, int64_t r)
{
    ad_tensor v = *t;
    v.size = t->shape[0] ? t->size / t->shape[0] * r : 0;
    v.shape[0] = r;
    return v;
}

/* Rows [lo, hi) of a batch tensor, as a view (this process's share in data-parallel training). */
static ad_tensor rows_range(const ad_tensor *t, int64_t lo, int64_t hi)
{
    ad_tensor v = rows_view(t, hi - lo);
    if (t->shape[0]) v.data = (char *)t->data + (size_t)(t->size / t->shape[0] * lo) * ad_dtype_size(t->dtype);
    return v;
}

/* Checks a data set; the message names fn. */
static ad_status check_dataset(const char *fn, const nn_dataset *ds, const char *what, nn_error *err)
{
    if (!ds) return nn_error_set(err, AD_ERR_ARG, "%s: NULL %s data set", fn, what);
    if (ds->n < 1 || ds->dim < 1 || (!ds->labels && !ds->targets) || (!ds->pixels_u8 && !ds->features) ||
        (ds->targets && ds->target_size < 1))
        return nn_error_set(err, AD_ERR_ARG, "%s: the %s data set is empty or incomplete", fn, what);
    return AD_OK;
}

/* ---- evaluation ---- */

/* Mean loss and accuracy of m over rows[0..nrows) of ds (NULL rows: all). */
static ad_status evaluate(const char *fn, nn_module *m, const nn_dataset *ds, int64_t nrows, const int64_t *rows,
                          int64_t bs, const loss_spec *spec, double *loss, double *acc, nn_error *err)
{
    if (bs <= 0) bs = 256;
    if (bs > nrows) bs = nrows;
    batch bt;
    ad_status st = batch_new(&bt, ds, bs);
    nn_batcher *b = nn_batcher_new_rows(ds, nrows, rows, bs, false, 0, err);
    ad_tape *t = ad_tape_new();
    if (!b || !t || st != AD_OK) {
        st = b ? nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn) : err ? err->status : AD_ERR_NOMEM;
        goto done;
    }
    ad_tape_set_grad_enabled(t, false);
    bool was_training = nn_module_training(m);
    nn_module_set_training(m, false);
    double loss_sum = 0;
    int64_t right = 0, judged = 0, seen = 0, r;
    while ((r = nn_batcher_next(b, bt.x, bt.y, bt.labels)) > 0) {
        ad_tape_reset(t);
        ad_tensor xv = rows_view(bt.x, r), yv = bt.y ? rows_view(bt.y, r) : (ad_tensor){0};
        ad_var out = nn_forward(m, t, ad_const(t, &xv));
        ad_var l = record_loss(spec, t, out, bt.y ? ad_const(t, &yv) : AD_NO_VAR, bt.labels);
        if (!ad_ok(l)) {
            st = ad_tape_status(t) != AD_OK ? nn_error_from_tape(err, fn, t)
                                            : nn_error_set(err, AD_ERR_STATE, "%s: the loss is not a valid var", fn);
            break;
        }
        loss_sum += ad_item(l) * (double)r;
        count_right(spec, ad_value(out), bt.y ? &yv : NULL, bt.labels, r, &right, &judged);
        seen += r;
    }
    if (st == AD_OK && r < 0) st = nn_error_set(err, AD_ERR_STATE, "%s: the batcher rejected its buffer", fn);
    nn_module_set_training(m, was_training);
    if (st == AD_OK) {
        if (loss) *loss = seen ? loss_sum / (double)seen : NAN;
        if (acc) *acc = judged ? (double)right / (double)judged : NAN;
    }
done:
    ad_tape_free(t);
    nn_batcher_free(b);
    batch_free(&bt);
    return st;
}

ad_status nn_evaluate(nn_module *m, const nn_dataset *ds, int64_t batch_size, double *loss, double *acc,
                      nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (!m) return nn_error_set(err, AD_ERR_ARG, "nn_evaluate: NULL module");
    ad_status st = check_dataset("nn_evaluate", ds, "evaluation", err);
    nn_fit_opts o = nn_fit_defaults();
    loss_spec spec;
    if (st == AD_OK) st = resolve_loss("nn_evaluate", &o, ds, &spec, err);
    if (st != AD_OK) return st;
    return evaluate("nn_evaluate", m, ds, ds->n, NULL, batch_size, &spec, loss, acc, err);
}

/* ---- progress output ---- */

/* "  <what> loss L  <what> acc A%" (the accuracy only where there is one, the whole only where there is a loss) */
static void print_pair(FILE *out, const char *what, double loss, double acc)
{
    if (isnan(loss)) return;
    fprintf(out, "  %s loss %.4f", what, loss);
    if (!isnan(acc)) fprintf(out, "  %s acc %.2f%%", what, 100.0 * acc);
}

static void print_epoch(FILE *out, const nn_epoch_stats *s, int epochs, nn_progress_bar *bar)
{
    if (bar) nn_progress_clear(bar);
    fprintf(out, "epoch %d/%d  loss %.4f", s->epoch, epochs, s->train_loss);
    if (!isnan(s->train_acc)) fprintf(out, "  train acc %.2f%%", 100.0 * s->train_acc);
    print_pair(out, "val", s->val_loss, s->val_acc);
    print_pair(out, "test", s->test_loss, s->test_acc);
    if (s->skipped) fprintf(out, "  (%" PRId64 " non-finite step%s skipped)", s->skipped, s->skipped == 1 ? "" : "s");
    fprintf(out, "  %.1f s\n", s->seconds);
    fflush(out);
}

/* a number, or nothing for NaN */
static void log_num(FILE *log, double v) { isnan(v) ? (void)0 : (void)fprintf(log, "%.9g", v); }

/* 0, or EOF when the line could not be written (errno says why). */
static int log_epoch(FILE *log, const nn_epoch_stats *s)
{
    fprintf(log, "%d,%" PRId64 ",%.9g,%.9g,", s->epoch, s->steps, s->lr, s->train_loss);
    const double v[] = {s->train_acc, s->val_loss, s->val_acc, s->test_loss, s->test_acc};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        log_num(log, v[i]);
        fputc(',', log);
    }
    fprintf(log, "%.6f\n", s->seconds);
    return fflush(log) != 0 || ferror(log) ? EOF : 0;
}

/* ---- training ---- */

/* A seeded split of ds's rows: the last k of a permutation validate, the rest train. */
static ad_status split_rows(const nn_dataset *ds, double frac, uint64_t seed, int64_t **rows, int64_t *ntrain,
                            int64_t *nval, nn_error *err)
{
    int64_t n = ds->n, k = (int64_t)floor(frac * (double)n);
    if (k < 1 || k >= n)
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: val_split %g of %lld rows leaves %s", frac, (long long)n,
                            k < 1 ? "no validation row" : "no training row");
    int64_t *p = ad__malloc((size_t)n * sizeof *p);
    if (!p) return nn_error_set(err, AD_ERR_NOMEM, "nn_fit: out of memory");
    ad_rng r;
    ad_rng_seed(&r, seed ^ 0x5eed5b1175ULL);
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ad_rng_below(&r, (uint64_t)i + 1), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    *rows = p;
    *ntrain = n - k;
    *nval = k;
    return AD_OK;
}

/* The same shape of sample: features, and labels or targets of one shape. */
static ad_status same_kind(const nn_dataset *a, const nn_dataset *b, const char *what, nn_error *err)
{
    bool ok = a->dim == b->dim && !a->labels == !b->labels && a->target_ndim == b->target_ndim;
    for (int i = 0; ok && i < a->target_ndim; i++) ok = a->target_shape[i] == b->target_shape[i];
    if (!ok)
        return nn_error_set(err, AD_ERR_SHAPE, "nn_fit: the %s set's rows (%lld features, %s) differ from training's "
                            "(%lld features, %s)", what, (long long)b->dim, b->labels ? "labels" : "targets",
                            (long long)a->dim, a->labels ? "labels" : "targets");
    return AD_OK;
}

ad_status nn_fit(nn_module *m, nn_optim *opt, const nn_dataset *train, const nn_fit_opts *opts,
                 nn_epoch_stats *last, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    if (!m || !opt) return nn_error_set(err, AD_ERR_ARG, "nn_fit: NULL %s", m ? "optimizer" : "module");
    ad_status st = check_dataset("nn_fit", train, "training", err);
    if (st != AD_OK) return st;
    nn_fit_opts o = opts ? *opts : nn_fit_defaults();
    if (!(o.clip_norm >= 0) || isinf(o.clip_norm))
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: clip_norm %g must be finite and >= 0 (0: off)", o.clip_norm);
    if (o.epochs < 0 || o.batch_size < 1)
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: epochs %d and batch size %" PRId64 " must be >= 0 and >= 1",
                            o.epochs, o.batch_size);
    if (o.initial_epoch < 0 || o.initial_epoch > o.epochs)
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: initial_epoch %d must be in [0, epochs %d]", o.initial_epoch,
                            o.epochs);
    if (o.stop_epoch != 0 && (o.stop_epoch < o.initial_epoch || o.stop_epoch > o.epochs))
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: stop_epoch %d must be 0 or in [initial_epoch %d, epochs %d]",
                            o.stop_epoch, o.initial_epoch, o.epochs);
    if (o.accumulate < 0)
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: accumulate %d must be >= 0 (0 or 1: every batch)", o.accumulate);
    if (!(o.val_split >= 0 && o.val_split < 1))
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: val_split %g must be in [0, 1)", o.val_split);
    loss_spec spec;
    if ((st = resolve_loss("nn_fit", &o, train, &spec, err)) != AD_OK) return st;
    const nn_dataset *sets[2] = {o.val, o.test};
    static const char *const set_names[2] = {"validation", "test"};
    for (int i = 0; i < 2; i++)
        if (sets[i] && ((st = check_dataset("nn_fit", sets[i], set_names[i], err)) != AD_OK ||
                        (st = same_kind(train, sets[i], set_names[i], err)) != AD_OK))
            return st;
    const nn_data_parallel *par = o.parallel;
    if (par && (par->size < 1 || par->rank < 0 || par->rank >= par->size || !par->reduce_grads || !par->reduce_sums))
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: parallel rank %d of %d, or its functions, are not valid",
                            par->rank, par->size);
    nn_step_opts so = {.clip_norm = o.clip_norm, .accumulate = o.accumulate, .skip_nonfinite = o.skip_nonfinite,
                       .parallel = par};
    FILE *out = o.out ? o.out : stderr;
    bool bar = o.progress == NN_PROGRESS_BAR || (o.progress == NN_PROGRESS_AUTO && isatty(fileno(out)));
    bool lines = o.progress != NN_PROGRESS_NONE;

    int64_t *rows = NULL, ntrain = train->n, nval = 0;
    if (!o.val && o.val_split > 0 && (st = split_rows(train, o.val_split, o.seed, &rows, &ntrain, &nval, err)) != AD_OK)
        return st;
    int64_t bs = o.batch_size < ntrain ? o.batch_size : ntrain;
    batch bt;
    st = batch_new(&bt, train, bs);
    nn_batcher *b = st == AD_OK ? nn_batcher_new_rows(train, ntrain, rows, bs, o.shuffle, o.seed, err) : NULL;
    ad_tape *t = ad_tape_new();
    FILE *log = NULL;
    if (!b || !t || st != AD_OK) {
        st = nn_error_set(err, AD_ERR_NOMEM, "nn_fit: out of memory");
        goto done;
    }
    if (o.log_path) {
        if (!(log = fopen(o.log_path, o.initial_epoch ? "a" : "w"))) { /* a resumed run goes on with its log */
            st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot open log %s: %s", o.log_path, strerror(errno));
            goto done;
        }
        if (fseek(log, 0, SEEK_END) != 0 || ftell(log) == 0)
            fprintf(log, "epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds\n");
        if (fflush(log) != 0) { /* a log that cannot be written stops the fit before its first step */
            st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot write log %s: %s", o.log_path, strerror(errno));
            goto done;
        }
    }
    int64_t nbatches = nn_batcher_num_batches(b), r = 0;
    nn_progress_bar pb;
    int end = o.stop_epoch ? o.stop_epoch : o.epochs; /* this call's last epoch */
    for (int e = o.initial_epoch; e < end && st == AD_OK; e++) {
        double t0 = now_seconds();
        if (o.rng && o.shuffle) nn_batcher_reseed(b, ad_rng_u64(o.rng)); /* this epoch's order, from the caller's generator */
        nn_module_set_training(m, true);
        double loss_sum = 0;
        int64_t right = 0, judged = 0, seen = 0, i = 0, skipped = 0;
        char label[32];
        snprintf(label, sizeof label, "epoch %d/%d", e + 1, o.epochs);
        if (bar) nn_progress_start(&pb, out, label, nbatches);
        while ((r = nn_batcher_next(b, bt.x, bt.y, bt.labels)) > 0) {
            i++;
            int64_t lo = 0, rows_all = r; /* this process's share of the batch: rows [lo, lo + r) */
            if (par) {
                if (r < par->size) continue; /* fewer rows than processes: skipped by all */
                lo = r * par->rank / par->size;
                r = r * (par->rank + 1) / par->size - lo;
                so.weight = (double)r / (double)rows_all;
            }
            if (o.schedule) nn_optim_set_lr(opt, nn_sched_lr(o.schedule, nn_optim_steps(opt)));
            ad_tape_reset(t);
            ad_tensor xv = rows_range(bt.x, lo, lo + r), yv = bt.y ? rows_range(bt.y, lo, lo + r) : (ad_tensor){0};
            int64_t *lab = bt.labels ? bt.labels + lo : NULL;
            ad_var outv = nn_forward(m, t, ad_const(t, &xv));
            ad_var loss = record_loss(&spec, t, outv, bt.y ? ad_const(t, &yv) : AD_NO_VAR, lab);
            nn_step_result res;
            int64_t step = nn_optim_steps(opt) + 1;
            if ((st = nn_train_step(opt, loss, &so, &res, err)) != AD_OK) {
                /* the step's own message, placed in training */
                char why[sizeof err->message];
                const char *inner = err->message;
                if (strncmp(inner, "nn_train_step: ", 15) == 0) inner += 15; /* one prefix is enough */
                snprintf(why, sizeof why, "%s", inner);
                nn_error_set(err, st, "nn_fit: epoch %d, step %" PRId64 " (batch %" PRId64 " of %" PRId64 "): %s",
                             e + 1, step, i, nbatches, why);
                break;
            }
            if (res.skipped) {
                skipped++;
                continue;
            }
            loss_sum += res.loss * (double)r;
            count_right(&spec, ad_value(outv), bt.y ? &yv : NULL, lab, r, &right, &judged);
            seen += r;
            if (bar) nn_progress_update(&pb, i, seen * rows_all / r, loss_sum / (double)seen);
        }
        if (st == AD_OK && r < 0) st = nn_error_set(err, AD_ERR_STATE, "nn_fit: the batcher rejected its buffer");
        if (!(o.rng && o.shuffle)) nn_batcher_reset(b); /* (with rng: reseeded as the next epoch starts) */
        if (st == AD_OK && par) { /* the epoch's figures over every process's samples */
            double sums[5] = {loss_sum, (double)right, (double)judged, (double)seen, (double)skipped};
            if ((st = par->reduce_sums(par->ctx, 5, sums, err)) == AD_OK) {
                loss_sum = sums[0];
                right = (int64_t)sums[1];
                judged = (int64_t)sums[2];
                seen = (int64_t)sums[3];
                skipped = (int64_t)sums[4] / par->size;
            }
        }
        if (st == AD_OK && skipped > 0 && seen == 0)
            st = nn_error_set(err, AD_ERR_NUMERIC, "nn_fit: every step of epoch %d (%" PRId64 ") was skipped as non-finite; "
                              "stopped", e + 1, skipped);
        if (st != AD_OK) {
            if (bar) fprintf(out, "\n");
            break;
        }
        nn_epoch_stats s = {e + 1, nn_optim_steps(opt), nn_optim_lr(opt), seen ? loss_sum / (double)seen : NAN,
                            judged ? (double)right / (double)judged : NAN, NAN, NAN, NAN, NAN, 0.0, skipped};
        if (o.val) st = evaluate("nn_fit", m, o.val, o.val->n, NULL, 256, &spec, &s.val_loss, &s.val_acc, err);
        else if (nval) st = evaluate("nn_fit", m, train, nval, rows + ntrain, 256, &spec, &s.val_loss, &s.val_acc, err);
        if (st == AD_OK && o.test)
            st = evaluate("nn_fit", m, o.test, o.test->n, NULL, 256, &spec, &s.test_loss, &s.test_acc, err);
        if (st != AD_OK) break;
        nn_module_set_training(m, true);
        s.seconds = now_seconds() - t0;
        if (lines) print_epoch(out, &s, o.epochs, bar ? &pb : NULL);
        if (log && log_epoch(log, &s) != 0) {
            st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot write log %s at epoch %d: %s", o.log_path, e + 1,
                              strerror(errno));
            break;
        }
        if (last) *last = s;
        if (o.on_epoch) o.on_epoch(&s, o.ctx);
    }
done:
    if (log && (ferror(log) | fclose(log)) != 0 && st == AD_OK)
        st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot write log %s: %s", o.log_path, strerror(errno));
    ad_tape_free(t);
    nn_batcher_free(b);
    batch_free(&bt);
    ad__free(rows);
    return st;
}

/* ---- one step ---- */

ad_status nn_train_step(nn_optim *opt, ad_var loss, const nn_step_opts *opts, nn_step_result *res, nn_error *err)
{
    NN__ERR_OR_LOCAL(err);
    nn_step_opts o = opts ? *opts : (nn_step_opts){.accumulate = 1};
    nn_step_result r = {NAN, false, false, NAN};
    if (res) *res = r;
    if (!opt) return nn_error_set(err, AD_ERR_ARG, "nn_train_step: NULL optimizer");
    if (opt->kind->step)
        return nn_error_set(err, AD_ERR_ARG, "nn_train_step(%s): this kind steps with nn_optim_minimize",
                            opt->kind->name);
    if (o.accumulate < 0 || !(o.clip_norm >= 0) || isinf(o.clip_norm))
        return nn_error_set(err, AD_ERR_ARG, "nn_train_step: accumulate %d must be >= 0, clip_norm %g finite and >= 0",
                            o.accumulate, o.clip_norm);
    int cycle = o.accumulate > 1 ? o.accumulate : 1;
    const nn_data_parallel *par = o.parallel;
    if (par && (cycle > 1 || !par->reduce_grads || !(o.weight >= 0)))
        return nn_error_set(err, AD_ERR_ARG, "nn_train_step: parallel steps need accumulate 0 or 1, a reduce "
                                             "function and a weight >= 0 (got %d, %g)", o.accumulate, o.weight);
    if (!ad_ok(loss)) {
        if (loss.tape && ad_tape_status(loss.tape) != AD_OK) return nn_error_from_tape(err, "nn_train_step", loss.tape);
        return nn_error_set(err, AD_ERR_STATE, "nn_train_step: the loss is not a valid var");
    }
    const ad_tensor *lv = ad_value(loss);
    if (lv->size != 1)
        return nn_error_set(err, AD_ERR_SHAPE, "nn_train_step: the loss has %lld elements, not 1", (long long)lv->size);
    r.loss = ad_tensor_get(lv, 0);
    ad_status st = AD_OK;
    if (!isfinite(r.loss) && par) { /* the other processes wait in the reduction: tell them */
        char why[96];
        snprintf(why, sizeof why, "nn_train_step: the loss is %g", r.loss);
        st = par->reduce_grads(par->ctx, opt->n, opt->params, o.weight, false, why, err);
        opt->pending = 0;
        if (st == AD_ERR_NUMERIC && o.skip_nonfinite) {
            r.skipped = true;
            st = AD_OK;
        }
        if (res) *res = r;
        return st;
    }
    if (!isfinite(r.loss)) {
        opt->pending = 0;
        if (o.skip_nonfinite) {
            r.skipped = true;
            if (res) *res = r;
            return AD_OK;
        }
        return nn_error_set(err, AD_ERR_NUMERIC, "nn_train_step: the loss is %g; stopped before that update", r.loss);
    }
    if (opt->pending == 0) nn__optim_zero_grads(opt);
    if ((st = ad_backward(loss, NULL, AD_ACCUMULATE)) != AD_OK) {
        opt->pending = 0;
        nn_error_from_tape(err, "nn_train_step", loss.tape);
        if (par) { /* release the other processes; the error stays this process's */
            nn_error mine = *err;
            par->reduce_grads(par->ctx, opt->n, opt->params, o.weight, false, mine.message, err);
            *err = mine;
        }
        return st;
    }
    if (++opt->pending < cycle) {
        if (res) *res = r;
        return AD_OK;
    }
    opt->pending = 0;
    if (cycle > 1) /* the mean of the cycle's gradients */
        for (int i = 0; i < opt->n; i++) {
            ad_tensor *g = opt->params[i]->grad;
            for (int64_t k = 0; k < g->size; k++) ad_tensor_set(g, k, ad_tensor_get(g, k) / cycle);
        }
    if (par) st = par->reduce_grads(par->ctx, opt->n, opt->params, o.weight, true, NULL, err);
    if (st == AD_OK && o.clip_norm > 0) st = nn__clip_grads(opt->n, opt->params, NULL, o.clip_norm, &r.grad_norm, err);
    if (st == AD_OK) st = nn_optim_step(opt, err); /* both refuse non-finite gradients and change nothing */
    if (st == AD_ERR_NUMERIC && o.skip_nonfinite) {
        r.skipped = true;
        st = AD_OK;
    } else if (st == AD_OK) {
        r.updated = true;
    }
    if (res) *res = r;
    return st;
}

/* fit.c: the training loop (nn_fit) and evaluation (nn_evaluate) of a classifier over a data set. */
#include "nn_internal.h"
#include "optim_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
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
    return o;
}

/* Rows of logits [r, c] whose largest entry (the first of ties) is the label. */
static int64_t count_correct(const ad_tensor *logits, const int64_t *labels, int64_t r)
{
    int64_t c = logits->shape[1], right = 0;
    for (int64_t i = 0; i < r; i++) {
        int64_t best = 0;
        double bv = ad_tensor_get(logits, i * c);
        for (int64_t j = 1; j < c; j++) {
            double v = ad_tensor_get(logits, i * c + j);
            if (v > bv) {
                bv = v;
                best = j;
            }
        }
        right += best == labels[i];
    }
    return right;
}

/* The x [rows, dim] view of the first r rows of the batch tensor x. */
static ad_tensor rows_view(const ad_tensor *x, int64_t r)
{
    ad_tensor v = *x;
    v.shape[0] = r;
    v.size = r * x->shape[1];
    return v;
}

/* Checks the data set and the logits' fit with it; the message names fn. */
static ad_status check_dataset(const char *fn, const nn_dataset *ds, const char *what, nn_error *err)
{
    if (!ds) return nn_error_set(err, AD_ERR_ARG, "%s: NULL %s data set", fn, what);
    if (ds->n < 1 || ds->dim < 1 || !ds->labels || (!ds->pixels_u8 && !ds->features))
        return nn_error_set(err, AD_ERR_ARG, "%s: the %s data set is empty or incomplete", fn, what);
    return AD_OK;
}

ad_status nn_evaluate(nn_module *m, const nn_dataset *ds, int64_t batch_size, double *loss, double *acc,
                      nn_error *err)
{
    if (!m) return nn_error_set(err, AD_ERR_ARG, "nn_evaluate: NULL module");
    ad_status st = check_dataset("nn_evaluate", ds, "evaluation", err);
    if (st != AD_OK) return st;
    if (batch_size <= 0) batch_size = 256;
    if (batch_size > ds->n) batch_size = ds->n;
    nn_batcher *b = nn_batcher_new(ds, batch_size, false, 0, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(batch_size, ds->dim));
    int64_t *labels = ad__malloc((size_t)batch_size * sizeof *labels);
    ad_tape *t = ad_tape_new();
    if (!b || !x || !labels || !t) {
        st = nn_error_set(err, AD_ERR_NOMEM, "nn_evaluate: out of memory");
        goto done;
    }
    ad_tape_set_grad_enabled(t, false);
    bool was_training = nn_module_training(m);
    nn_module_set_training(m, false);
    double loss_sum = 0;
    int64_t right = 0, seen = 0, r;
    while ((r = nn_batcher_next(b, x, labels)) > 0) {
        ad_tape_reset(t);
        ad_tensor view = rows_view(x, r);
        ad_var logits = nn_forward(m, t, ad_const(t, &view));
        ad_var l = nn_loss_cross_entropy(logits, labels);
        if (!ad_ok(l)) {
            st = nn_error_set(err, ad_tape_status(t), "nn_evaluate: %s", ad_tape_error(t));
            break;
        }
        loss_sum += ad_item(l) * (double)r;
        right += count_correct(ad_value(logits), labels, r);
        seen += r;
    }
    if (st == AD_OK && r < 0) st = nn_error_set(err, AD_ERR_STATE, "nn_evaluate: the batcher rejected its buffer");
    nn_module_set_training(m, was_training);
    if (st == AD_OK) {
        if (loss) *loss = seen ? loss_sum / (double)seen : NAN;
        if (acc) *acc = seen ? (double)right / (double)seen : NAN;
    }
done:
    ad_tape_free(t);
    ad__free(labels);
    ad_tensor_free(x);
    nn_batcher_free(b);
    return st;
}

/* ---- progress output ---- */

static void print_bar(FILE *out, int epoch, int epochs, int64_t done, int64_t total, double loss)
{
    enum { WIDTH = 30 };
    int filled = total > 0 ? (int)(WIDTH * done / total) : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[WIDTH] = 0;
    fprintf(out, "\repoch %d/%d [%s] %3d%% loss %.4f", epoch, epochs, bar,
            total > 0 ? (int)(100 * done / total) : 100, loss);
    fflush(out);
}

static void print_epoch(FILE *out, const nn_epoch_stats *s, int epochs, bool bar)
{
    if (bar) fprintf(out, "\r%*s\r", 70, "");
    fprintf(out, "epoch %d/%d  loss %.4f  train acc %.2f%%", s->epoch, epochs, s->train_loss, 100.0 * s->train_acc);
    if (!isnan(s->val_loss)) fprintf(out, "  val loss %.4f  val acc %.2f%%", s->val_loss, 100.0 * s->val_acc);
    if (s->skipped) fprintf(out, "  (%" PRId64 " non-finite step%s skipped)", s->skipped, s->skipped == 1 ? "" : "s");
    fprintf(out, "  %.1f s\n", s->seconds);
    fflush(out);
}

static void log_epoch(FILE *log, const nn_epoch_stats *s)
{
    fprintf(log, "%d,%" PRId64 ",%.9g,%.9g,%.9g,", s->epoch, s->steps, s->lr, s->train_loss, s->train_acc);
    if (!isnan(s->val_loss)) fprintf(log, "%.9g,%.9g", s->val_loss, s->val_acc);
    else fprintf(log, ",");
    fprintf(log, ",%.6f\n", s->seconds);
    fflush(log);
}

/* ---- training ---- */

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
    if (o.val && (st = check_dataset("nn_fit", o.val, "validation", err)) != AD_OK) return st;
    if (o.val && o.val->dim != train->dim)
        return nn_error_set(err, AD_ERR_SHAPE, "nn_fit: validation rows have %" PRId64 " features, training %" PRId64,
                       o.val->dim, train->dim);
    if (o.accumulate < 0)
        return nn_error_set(err, AD_ERR_ARG, "nn_fit: accumulate %d must be >= 0 (0 or 1: every batch)", o.accumulate);
    nn_step_opts so = {o.clip_norm, o.accumulate, o.skip_nonfinite};
    FILE *out = o.out ? o.out : stderr;
    bool bar = o.progress == NN_PROGRESS_BAR || (o.progress == NN_PROGRESS_AUTO && isatty(fileno(out)));
    bool lines = o.progress != NN_PROGRESS_NONE;
    int64_t bs = o.batch_size < train->n ? o.batch_size : train->n;

    nn_batcher *b = nn_batcher_new(train, bs, o.shuffle, o.seed, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(bs, train->dim));
    int64_t *labels = ad__malloc((size_t)bs * sizeof *labels);
    ad_tape *t = ad_tape_new();
    FILE *log = NULL;
    if (!b || !x || !labels || !t) {
        st = nn_error_set(err, AD_ERR_NOMEM, "nn_fit: out of memory");
        goto done;
    }
    if (o.log_path) {
        if (!(log = fopen(o.log_path, "w"))) {
            st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot open log %s: %s", o.log_path, strerror(errno));
            goto done;
        }
        fprintf(log, "epoch,steps,lr,train_loss,train_acc,val_loss,val_acc,seconds\n");
    }
    int64_t nbatches = nn_batcher_num_batches(b);
    for (int e = 0; e < o.epochs && st == AD_OK; e++) {
        double t0 = now_seconds();
        if (o.schedule) nn_optim_set_lr(opt, nn_schedule_lr(o.schedule, e));
        nn_module_set_training(m, true);
        double loss_sum = 0;
        int64_t right = 0, seen = 0, r, i = 0, skipped = 0;
        while ((r = nn_batcher_next(b, x, labels)) > 0) {
            i++;
            ad_tape_reset(t);
            ad_tensor view = rows_view(x, r);
            ad_var logits = nn_forward(m, t, ad_const(t, &view));
            ad_var loss = nn_loss_cross_entropy(logits, labels);
            nn_step_result res;
            int64_t step = nn_optim_steps(opt) + 1;
            if ((st = nn_train_step(opt, loss, &so, &res, err)) != AD_OK) {
                /* the step's own message, placed in training */
                char why[sizeof err->message];
                snprintf(why, sizeof why, "%s", err->message);
                nn_error_set(err, st, "nn_fit: epoch %d, step %" PRId64 " (batch %" PRId64 " of %" PRId64 "): %s",
                             e + 1, step, i, nbatches, why);
                break;
            }
            if (res.skipped) {
                skipped++;
                continue;
            }
            loss_sum += res.loss * (double)r;
            right += count_correct(ad_value(logits), labels, r);
            seen += r;
            if (bar && (i % 20 == 0 || i == nbatches)) print_bar(out, e + 1, o.epochs, i, nbatches, loss_sum / (double)seen);
        }
        if (st == AD_OK && r < 0) st = nn_error_set(err, AD_ERR_STATE, "nn_fit: the batcher rejected its buffer");
        nn_batcher_reset(b);
        if (st != AD_OK) {
            if (bar) fprintf(out, "\n");
            break;
        }
        nn_epoch_stats s = {e + 1, nn_optim_steps(opt), nn_optim_lr(opt), seen ? loss_sum / (double)seen : NAN,
                            seen ? (double)right / (double)seen : NAN, NAN, NAN, 0.0, skipped};
        if (o.val && (st = nn_evaluate(m, o.val, 256, &s.val_loss, &s.val_acc, err)) != AD_OK) break;
        nn_module_set_training(m, true);
        s.seconds = now_seconds() - t0;
        if (lines) print_epoch(out, &s, o.epochs, bar);
        if (log) log_epoch(log, &s);
        if (last) *last = s;
        if (o.on_epoch) o.on_epoch(&s, o.ctx);
    }
done:
    if (log && fclose(log) != 0 && st == AD_OK)
        st = nn_error_set(err, AD_ERR_IO, "nn_fit: cannot write log %s: %s", o.log_path, strerror(errno));
    ad_tape_free(t);
    ad__free(labels);
    ad_tensor_free(x);
    nn_batcher_free(b);
    return st;
}

/* ---- one step ---- */

ad_status nn_train_step(nn_optim *opt, ad_var loss, const nn_step_opts *opts, nn_step_result *res, nn_error *err)
{
    nn_step_opts o = opts ? *opts : (nn_step_opts){0, 1, false};
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
    if (!ad_ok(loss)) {
        if (loss.tape && ad_tape_status(loss.tape) != AD_OK) return nn_error_from_tape(err, "nn_train_step", loss.tape);
        return nn_error_set(err, AD_ERR_STATE, "nn_train_step: the loss is not a valid var");
    }
    const ad_tensor *lv = ad_value(loss);
    if (lv->size != 1)
        return nn_error_set(err, AD_ERR_SHAPE, "nn_train_step: the loss has %lld elements, not 1", (long long)lv->size);
    r.loss = ad_tensor_get(lv, 0);
    ad_status st = AD_OK;
    if (!isfinite(r.loss)) {
        opt->pending = 0;
        if (o.skip_nonfinite) {
            r.skipped = true;
            if (res) *res = r;
            return AD_OK;
        }
        return nn_error_set(err, AD_ERR_NUMERIC, "nn_train_step: the loss is %g; stopped before that update", r.loss);
    }
    if (opt->pending == 0)
        for (int i = 0; i < opt->n; i++) ad_tensor_fill(opt->params[i]->grad, 0.0);
    if ((st = ad_backward(loss, NULL, AD_ACCUMULATE)) != AD_OK) {
        opt->pending = 0;
        return nn_error_from_tape(err, "nn_train_step", loss.tape);
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
    if (o.clip_norm > 0) st = nn__clip_grads(opt->n, opt->params, NULL, o.clip_norm, &r.grad_norm, err);
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

/* train_extras.c: autodiff-train's pictures: the per-epoch curves as SVG (--plot) and one batch's tape (--draw). */
#include "train_extras.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void epoch_log_add(const nn_epoch_stats *s, void *log)
{
    epoch_log *l = log;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        nn_epoch_stats *e = realloc(l->e, (size_t)cap * sizeof *e);
        if (!e) { /* the plot then fails rather than leave epochs out */
            l->lost = true;
            return;
        }
        l->e = e;
        l->cap = cap;
    }
    l->e[l->n++] = *s;
}

void epoch_log_free(epoch_log *l)
{
    free(l->e);
    *l = (epoch_log){0};
}

/* ---- --plot: two charts in one SVG ---- */

enum { CHART_W = 420, CHART_H = 300, MARGIN_L = 60, MARGIN_R = 20, MARGIN_T = 50, MARGIN_B = 50 };

/* A "nice" step for about 5 ticks over span. */
static double tick_step(double span)
{
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

enum { SERIES = 3 };

/* Series k of the epochs' figures: the field at offset off[k] of epoch i, scaled by mul. */
#define VALUE(i, k) (mul * *(const double *)((const char *)&l->e[i] + off[k]))

/* One chart at x offset ox: train, validation and test series (those with figures), scaled by mul. */
static void chart(FILE *f, const epoch_log *l, int ox, const char *title, const char *ylabel,
                  const size_t off[SERIES], double mul)
{
    static const char *const colors[SERIES] = {"#1f77b4", "#2ca02c", "#ff7f0e"};
    static const char *const names[SERIES] = {"train", "validation", "test"};
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < SERIES; k++)
        for (int i = 0; i < l->n; i++) {
            double v = VALUE(i, k);
            if (isfinite(v)) {
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
    double step = tick_step(hi - lo);
    lo = floor(lo / step) * step;
    hi = ceil(hi / step) * step;
    int pw = CHART_W - MARGIN_L - MARGIN_R, ph = CHART_H - MARGIN_T - MARGIN_B;
    int x0 = ox + MARGIN_L, y0 = MARGIN_T + ph;
    int last = l->n > 1 ? l->e[l->n - 1].epoch : 2, first = l->n > 1 ? l->e[0].epoch : 0;
#define PX(ep) (x0 + (double)pw * ((ep) - first) / (double)(last - first))
#define PY(v) (y0 - (double)ph * ((v) - lo) / (hi - lo))
    fprintf(f, "<text x=\"%d\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n", x0 + pw / 2, title);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", x0, MARGIN_T,
            pw, ph);
    for (double v = lo; v <= hi + step / 2; v += step) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, PY(v), x0 + pw, PY(v));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n", x0 - 6, PY(v) + 4, v);
    }
    int estep = last - first > 10 ? (last - first + 9) / 10 : 1;
    for (int ep = first; ep <= last; ep += estep)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%d</text>\n", PX(ep), y0 + 16,
                ep);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">epoch</text>\n", x0 + pw / 2,
            y0 + 34);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %d %d)\">%s</text>\n",
            ox + 16, MARGIN_T + ph / 2, ox + 16, MARGIN_T + ph / 2, ylabel);
    for (int k = 0, legend = 0; k < SERIES; k++) {
        int shown = 0;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[k]);
        for (int i = 0; i < l->n; i++) {
            double v = VALUE(i, k);
            if (!isfinite(v)) continue;
            fprintf(f, "%s%.1f,%.1f", shown++ ? " " : "", PX(l->e[i].epoch), PY(v));
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < l->n; i++) {
            double v = VALUE(i, k);
            if (isfinite(v))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(l->e[i].epoch), PY(v),
                        colors[k]);
        }
        if (shown) { /* the legend, in a row above the chart */
            int lx = x0 + 90 * legend++;
            fprintf(f,
                    "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>"
                    "<text x=\"%d\" y=\"%d\" font-size=\"12\">%s</text>\n",
                    lx, MARGIN_T - 8, lx + 20, MARGIN_T - 8, colors[k], lx + 25, MARGIN_T - 4, names[k]);
        }
    }
#undef PX
#undef PY
#undef VALUE
}

int epoch_log_plot(const epoch_log *l, const char *path)
{
    if (l->lost) {
        fprintf(stderr, "autodiff-train: cannot write plot %s: out of memory for the epochs' figures\n", path);
        return 1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "autodiff-train: cannot write plot %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            2 * CHART_W, CHART_H, 2 * CHART_W, CHART_H);
    static const size_t loss[SERIES] = {offsetof(nn_epoch_stats, train_loss), offsetof(nn_epoch_stats, val_loss),
                                        offsetof(nn_epoch_stats, test_loss)};
    static const size_t acc[SERIES] = {offsetof(nn_epoch_stats, train_acc), offsetof(nn_epoch_stats, val_acc),
                                       offsetof(nn_epoch_stats, test_acc)};
    chart(f, l, 0, "loss", "loss", loss, 1.0);
    chart(f, l, CHART_W, "accuracy", "accuracy (%)", acc, 100.0);
    fprintf(f, "</svg>\n");
    bool bad = ferror(f) != 0;
    errno = 0;
    bad |= fclose(f) != 0;
    if (bad) {
        fprintf(stderr, "autodiff-train: cannot write plot %s%s%s\n", path, errno ? ": " : "", errno ? strerror(errno) : "");
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* ---- --draw: one batch's tape ---- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Runs dot -Tsvg in -o out; 0 or 1 with a message. */
static int run_dot(const char *in, const char *out)
{
    pid_t pid;
    char *argv[] = {"dot", "-Tsvg", (char *)in, "-o", (char *)out, NULL};
    int e = posix_spawnp(&pid, "dot", NULL, NULL, argv, environ), status = 0;
    if (e != 0) {
        fprintf(stderr, "autodiff-train: cannot run Graphviz's dot for %s: %s (install graphviz, or draw to a .dot file)\n",
                out, strerror(e));
        return 1;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "autodiff-train: dot failed to write %s\n", out);
        return 1;
    }
    return 0;
}

int draw_tape(const char *path, nn_module *net, const nn_dataset *ds, int64_t batch)
{
    int rc = 1;
    int64_t bs = batch < ds->n ? batch : ds->n;
    nn_batcher *b = nn_batcher_new(ds, bs, false, 0, NULL);
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(bs, ds->dim));
    int64_t *labels = malloc((size_t)bs * sizeof *labels);
    ad_tensor *y = NULL; /* a regression set's targets */
    if (ds->targets) {
        int64_t shape[AD_MAX_DIMS];
        shape[0] = bs;
        memcpy(shape + 1, ds->target_shape, (size_t)ds->target_ndim * sizeof *shape);
        y = ad_tensor_new(AD_F32, ds->target_ndim + 1, shape);
    }
    ad_tape *t = ad_tape_new();
    bool svg = ends_with(path, ".svg");
    char dotpath[4096];
    snprintf(dotpath, sizeof dotpath, svg ? "%s.%ld.dot" : "%s", path, (long)getpid());
    FILE *f = NULL;
    if (!b || !x || !labels || !t || (ds->targets && !y)) {
        fprintf(stderr, "autodiff-train: out of memory\n");
        goto done;
    }
    int64_t r = nn_batcher_next(b, x, y, y ? NULL : labels);
    ad_var out = nn_forward(net, t, ad_const(t, x));
    ad_var loss = y ? nn_loss_mse(out, ad_const(t, y)) : nn_loss_cross_entropy(out, labels);
    if (r <= 0 || !ad_ok(loss)) {
        fprintf(stderr, "autodiff-train: --draw: %s\n", r <= 0 ? "no batch" : ad_tape_error(t));
        goto done;
    }
    if (!(f = fopen(dotpath, "w"))) {
        fprintf(stderr, "autodiff-train: cannot write %s: %s\n", dotpath, strerror(errno));
        goto done;
    }
    ad_status st = ad_tape_write_dot(t, f);
    bool bad = st != AD_OK || ferror(f) != 0;
    errno = 0;
    bad |= fclose(f) != 0;
    if (bad) {
        fprintf(stderr, "autodiff-train: cannot write %s%s%s\n", dotpath, errno ? ": " : "", errno ? strerror(errno) : "");
        goto done;
    }
    rc = svg ? run_dot(dotpath, path) : 0;
    if (rc == 0) printf("wrote %s: the tape of one batch of %" PRId64 " (%zu nodes)\n", path, r, ad_tape_node_count(t));
done:
    if (svg) remove(dotpath);
    ad_tape_free(t);
    free(labels);
    ad_tensor_free(y);
    ad_tensor_free(x);
    nn_batcher_free(b);
    return rc;
}

/* progress.c: a one-line progress bar with throughput and time left, redrawn in place on a terminal. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void nn_progress_start(nn_progress_bar *b, FILE *out, const char *label, int64_t total)
{
    if (!b) return;
    b->out = out ? out : stderr;
    snprintf(b->label, sizeof b->label, "%s", label ? label : "");
    b->total = total;
    b->t0 = mono_seconds();
    b->last_draw = -1;
    b->width = 0;
}

/* "1:05" or "1:02:05" */
static void format_duration(char *buf, size_t n, double s)
{
    long v = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
    if (v >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
    else snprintf(buf, n, "%ld:%02ld", v / 60, v % 60);
}

void nn_progress_update(nn_progress_bar *b, int64_t done, int64_t samples, double loss)
{
    enum { WIDTH = 30 };
    if (!b || !b->out) return;
    double now = mono_seconds(), el = now - b->t0;
    bool last = done >= b->total;
    if (!last && b->last_draw >= 0 && now - b->last_draw < 0.1) return;
    b->last_draw = now;
    int filled = b->total > 0 ? (int)(WIDTH * (done < b->total ? done : b->total) / b->total) : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[WIDTH] = 0;
    char line[256], eta[32];
    int n = snprintf(line, sizeof line, "%s [%s] %3d%%", b->label, bar,
                     b->total > 0 ? (int)(100 * (done < b->total ? done : b->total) / b->total) : 100);
    if (!isnan(loss) && n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, "  loss %.4f", loss);
    if (el > 0 && samples > 0 && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "  %.0f samples/s", (double)samples / el);
    if (done > 0 && n < (int)sizeof line) {
        format_duration(eta, sizeof eta, last ? el : el * (double)(b->total - done) / (double)done);
        n += snprintf(line + n, sizeof line - (size_t)n, last ? "  %s" : "  %s left", eta);
    }
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    fprintf(b->out, "\r%s%*s", line, b->width > n ? b->width - n : 0, "");
    b->width = n;
    fflush(b->out);
}

void nn_progress_clear(nn_progress_bar *b)
{
    if (!b || !b->out || !b->width) return;
    fprintf(b->out, "\r%*s\r", b->width, "");
    b->width = 0;
    fflush(b->out);
}

/* dataset.c: data sets from IDX (gzipped or plain) and numeric CSV files. */
#include "nn_internal.h"

#include <errno.h>
#include <unistd.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

/* An argument error before any file is named: "fn: NULL what" into err; returns AD_ERR_ARG.
** (File errors go through ad__file_error: "fn: path: message".) */
static ad_status null_args(char *err, size_t errlen, const char *fn, const char *what)
{
    if (err && errlen > 0) snprintf(err, errlen, "%s: NULL %s", fn, what);
    return AD_ERR_ARG;
}

/* ---- IDX ---- */

#define IDX_UBYTE 0x08
/* Deflate expands at most about 1032:1; a claimed size beyond this cannot be in the file. */
#define GZ_MAX_RATIO 1040u

/* One opened IDX file: its dimensions and the stream positioned at the data. */
typedef struct idx_file {
    gzFile gz;
    int ndim;
    int64_t dims[3];
    int64_t count; /* product of dims */
} idx_file;

/* Reads exactly n bytes; on failure writes a reason ("truncated", zlib's message). */
static ad_status gz_read_all(gzFile gz, void *buf, int64_t n, const char *fn, const char *path, const char *what,
                             char *err, size_t errlen)
{
    unsigned char *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1 << 30) ? 1u << 30 : (unsigned)n;
        int got = gzread(gz, p, chunk);
        if (got < 0) {
            int zerr;
            const char *m = gzerror(gz, &zerr);
            return ad__file_error(err, errlen, zerr == Z_ERRNO ? AD_ERR_IO : AD_ERR_FORMAT, fn, path,
                                  "reading the %s: %s", what, zerr == Z_ERRNO ? strerror(errno) : m);
        }
        if (got == 0) return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "truncated in the %s", what);
        p += got;
        n -= got;
    }
    return AD_OK;
}

/* Opens path and reads its IDX header, checking magic, element type, ndim, and
** that the data size fits what the file can hold. */
static ad_status idx_open(const char *fn, const char *path, int want_ndim, idx_file *f, char *err, size_t errlen)
{
    f->gz = NULL;
    int fd;
    uint64_t fsize;
    ad_status ost = ad__open_read(fn, path, &fd, &fsize, err, errlen); /* never blocks on a FIFO */
    if (ost != AD_OK) return ost;
    errno = 0;
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "cannot open: out of memory");
    }
    gzbuffer(f->gz, 1u << 18);
    unsigned char magic[4];
    if (fsize == 0) return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "empty file");
    ad_status st = gz_read_all(f->gz, magic, 4, fn, path, "magic number", err, errlen);
    if (st != AD_OK) return st;
    if (magic[0] != 0 || magic[1] != 0)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "bad magic %02x%02x%02x%02x: not an IDX file",
                              magic[0], magic[1], magic[2], magic[3]);
    if (magic[2] != IDX_UBYTE)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                              "element type code 0x%02x is not supported (unsigned byte 0x08 is)", magic[2]);
    if (magic[3] != want_ndim)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "%d dimensions, expected %d (magic 0x%08x)",
                              magic[3], want_ndim, 0x800 + want_ndim);
    f->ndim = want_ndim;
    unsigned char d[12];
    st = gz_read_all(f->gz, d, 4 * want_ndim, fn, path, "dimensions", err, errlen);
    if (st != AD_OK) return st;
    f->count = 1;
    for (int i = 0; i < want_ndim; i++) {
        f->dims[i] = (int64_t)d[4 * i] << 24 | (int64_t)d[4 * i + 1] << 16 | (int64_t)d[4 * i + 2] << 8 | d[4 * i + 3];
        if (!ad__mul_ok(f->count, f->dims[i], &f->count))
            return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "dimensions overflow");
    }
    /* what the file can hold: its own size when plain, the deflate ratio bound when compressed */
    uint64_t head = 4 + 4 * (uint64_t)want_ndim;
    uint64_t cap = gzdirect(f->gz) ? (fsize >= head ? fsize - head : 0)
                                   : (fsize > UINT64_MAX / GZ_MAX_RATIO ? UINT64_MAX : fsize * GZ_MAX_RATIO);
    if ((uint64_t)f->count > cap || f->count > INT64_MAX / 16)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                              "dimensions claim %" PRId64 " bytes, more than the %" PRIu64 "-byte file can hold",
                              f->count, fsize);
    return AD_OK;
}

/* After the data: the stream must be at its end. */
static ad_status idx_expect_eof(idx_file *f, const char *fn, const char *path, char *err, size_t errlen)
{
    unsigned char extra;
    int got = gzread(f->gz, &extra, 1);
    if (got < 0) {
        int zerr;
        const char *m = gzerror(f->gz, &zerr);
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "after the data: %s", m);
    }
    if (got > 0) return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "trailing bytes after the data");
    return AD_OK;
}

static ad_status load_idx(const char *images_path, const char *labels_path, nn_dataset **out, char *err,
                              size_t errlen)
{
    static const char fn[] = "nn_dataset_load_idx";
    if (err && errlen) err[0] = '\0';
    if (out) *out = NULL;
    if (!images_path || !labels_path || !out) return null_args(err, errlen, fn, "images_path, labels_path or out");

    idx_file im = {0}, lb = {0};
    nn_dataset *ds = NULL;
    uint8_t *raw_labels = NULL;
    ad_status st = idx_open(fn, images_path, 3, &im, err, errlen);
    if (st != AD_OK) goto done;
    st = idx_open(fn, labels_path, 1, &lb, err, errlen);
    if (st != AD_OK) goto done;
    if (im.dims[0] != lb.dims[0]) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, labels_path,
                            "%" PRId64 " labels for %" PRId64 " images in %s", lb.dims[0], im.dims[0], images_path);
        goto done;
    }
    if (im.dims[0] == 0 || im.dims[1] * im.dims[2] == 0) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, images_path,
                            "no samples (dimensions %" PRId64 "x%" PRId64 "x%" PRId64 ")", im.dims[0], im.dims[1],
                            im.dims[2]);
        goto done;
    }
    ds = ad__calloc(1, sizeof *ds);
    if (ds) {
        ds->n = im.dims[0];
        ds->dim = im.dims[1] * im.dims[2];
        ds->pixels_u8 = ad__malloc((size_t)im.count);
        ds->labels = ad__malloc((size_t)ds->n * sizeof(int64_t));
        raw_labels = ad__malloc((size_t)ds->n);
    }
    if (!ds || !ds->pixels_u8 || !ds->labels || !raw_labels) {
        st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, images_path, "out of memory for %" PRId64 " images",
                            im.dims[0]);
        goto done;
    }
    /* one pass of gzread straight into the buffer */
    st = gz_read_all(im.gz, ds->pixels_u8, im.count, fn, images_path, "pixel data", err, errlen);
    if (st == AD_OK) st = idx_expect_eof(&im, fn, images_path, err, errlen);
    if (st == AD_OK) st = gz_read_all(lb.gz, raw_labels, ds->n, fn, labels_path, "label data", err, errlen);
    if (st == AD_OK) st = idx_expect_eof(&lb, fn, labels_path, err, errlen);
    if (st != AD_OK) goto done;
    int64_t maxl = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        ds->labels[i] = raw_labels[i];
        if (raw_labels[i] > maxl) maxl = raw_labels[i];
    }
    ds->nclasses = maxl + 1;
done:
    if (im.gz) gzclose(im.gz);
    if (lb.gz) gzclose(lb.gz);
    ad__free(raw_labels);
    if (st != AD_OK) {
        nn_dataset_free(ds);
        return st;
    }
    *out = ds;
    return AD_OK;
}

/* ---- CSV ---- */

#define CSV_MAX_LABEL ((1 << 24) - 1)

/* The line [p, end) without its '\r'; returns the start of the next line. */
static const char *next_line(const char *p, const char *end, const char **line_end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    *line_end = (e > p && e[-1] == '\r') ? e - 1 : e;
    return nl ? nl + 1 : end;
}

static bool blank(const char *p, const char *e)
{
    for (; p < e; p++)
        if (*p != ' ' && *p != '\t') return false;
    return true;
}

static int64_t count_cells(const char *p, const char *e)
{
    int64_t n = 1;
    for (; p < e; p++) n += *p == ',';
    return n;
}

/* Parses the cell [p, e) (spaces around it ignored) as a finite double; false with why set. */
static bool parse_cell(const char *p, const char *e, double *v, char *why, size_t whylen)
{
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (p == e) {
        snprintf(why, whylen, "empty cell");
        return false;
    }
    char buf[128];
    size_t n = (size_t)(e - p);
    if (n >= sizeof buf) {
        snprintf(why, whylen, "cell too long for a number (%zu characters)", n);
        return false;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *endp;
    errno = 0;
    double d = strtod(buf, &endp);
    if (endp != buf + n || endp == buf) {
        snprintf(why, whylen, "not a number: '%s'", buf);
        return false;
    }
    if (errno == ERANGE && fabs(d) > 1.0) {
        snprintf(why, whylen, "number out of range: '%s'", buf);
        return false;
    }
    if (!isfinite(d)) {
        snprintf(why, whylen, "non-finite value '%s' (NaN and Inf are not accepted)", buf);
        return false;
    }
    *v = d;
    return true;
}

/*
** A CSV load runs in named phases, each validating one layer before the next reads further:
**   csv_open    the path is a regular file (refused before opening otherwise), read whole
**   csv_shape   the header line, the columns (no ragged row), the data rows, the label column
**   csv_alloc   the data set's arrays, their sizes checked
**   csv_rows    every cell a finite number, features in float range; each row's label cell
**               (csv_label): a class label, an integer in [0, CSV_MAX_LABEL], or a float target
** and only then csv_copy_out hands the data set over. The first failure ends the load and frees all.
*/
typedef struct csv_load {
    const char *fn, *path;
    int label_col;
    bool header, target; /* target: the label column holds a float target (ds->targets, [1]) */
    char *err;
    size_t errlen;
    char *text;              /* the whole file, NUL-terminated */
    const char *start, *end; /* the text after any byte order mark */
    int64_t ncols, nrows, lc; /* lc: the label column, from 0 */
    nn_dataset *ds;
    int64_t maxl; /* the largest label */
} csv_load;

#define CFAIL(L, s, ...) ad__file_error((L)->err, (L)->errlen, s, (L)->fn, (L)->path, __VA_ARGS__)

static ad_status csv_open(csv_load *L)
{
    int fd;
    uint64_t fsize;
    ad_status st = ad__open_read(L->fn, L->path, &fd, &fsize, L->err, L->errlen); /* never blocks on a FIFO */
    if (st != AD_OK) return st;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return CFAIL(L, AD_ERR_NOMEM, "fdopen: %s", strerror(errno));
    }
    size_t len = (size_t)fsize;
    if (fsize >= SIZE_MAX / 2) st = CFAIL(L, AD_ERR_NOMEM, "file too large");
    else if (!(L->text = ad__malloc(len + 1))) st = CFAIL(L, AD_ERR_NOMEM, "out of memory for %zu bytes", len);
    else if (len && fread(L->text, 1, len, f) != len) st = CFAIL(L, AD_ERR_IO, "read error");
    fclose(f);
    if (st != AD_OK) return st;
    L->text[len] = '\0';
    L->start = L->text;
    L->end = L->text + len;
    if (len >= 3 && memcmp(L->text, "\xEF\xBB\xBF", 3) == 0) L->start += 3; /* a UTF-8 byte order mark */
    return AD_OK;
}

static ad_status csv_shape(csv_load *L)
{
    int64_t lineno = 0, first_line = 0;
    L->ncols = -1;
    L->nrows = 0;
    const char *le;
    for (const char *p = L->start; p < L->end;) {
        const char *q = next_line(p, L->end, &le);
        lineno++;
        if (!blank(p, le)) {
            int64_t c = count_cells(p, le);
            if (L->ncols < 0) {
                L->ncols = c;
                first_line = lineno;
            } else if (c != L->ncols) {
                return CFAIL(L, AD_ERR_FORMAT,
                             "line %" PRId64 ": ragged row: %" PRId64 " columns, line %" PRId64 " has %" PRId64,
                             lineno, c, first_line, L->ncols);
            }
            if (!(L->header && first_line == lineno)) L->nrows++;
        }
        p = q;
    }
    if (L->ncols < 0) return CFAIL(L, AD_ERR_FORMAT, "empty file: no rows");
    if (L->nrows == 0) return CFAIL(L, AD_ERR_FORMAT, "no data rows (header only)");
    if (L->ncols < 2) return CFAIL(L, AD_ERR_FORMAT, "one column: need a label and at least one feature");
    L->lc = L->label_col < 0 ? L->ncols + L->label_col : L->label_col;
    if (L->lc < 0 || L->lc >= L->ncols)
        return CFAIL(L, AD_ERR_ARG, "label column %d out of range for %" PRId64 " columns", L->label_col, L->ncols);
    return AD_OK;
}

static ad_status csv_alloc(csv_load *L)
{
    int64_t dim = L->ncols - 1, cells;
    nn_dataset *ds = L->ds = ad__calloc(1, sizeof *ds);
    if (!ds || !ad__mul_ok(L->nrows, dim, &cells) || (uint64_t)cells > SIZE_MAX / sizeof(float))
        return CFAIL(L, AD_ERR_NOMEM, "out of memory");
    ds->n = L->nrows;
    ds->dim = dim;
    ds->features = ad__malloc((size_t)cells * sizeof(float));
    if (L->target) {
        ds->targets = ad__malloc((size_t)L->nrows * sizeof(float));
        ds->target_ndim = 1;
        ds->target_shape[0] = ds->target_size = 1;
    } else {
        ds->labels = ad__malloc((size_t)L->nrows * sizeof(int64_t));
    }
    if (!ds->features || (!ds->labels && !ds->targets))
        return CFAIL(L, AD_ERR_NOMEM, "out of memory for %" PRId64 " x %" PRId64, L->nrows, L->ncols);
    return AD_OK;
}

/* The label cell v of a row (line lineno, column col from 0): a float target, or a class label. */
static ad_status csv_label(csv_load *L, int64_t row, int64_t lineno, int64_t col, double v)
{
    if (L->target) {
        if (fabs(v) > FLT_MAX)
            return CFAIL(L, AD_ERR_FORMAT, "line %" PRId64 ", column %" PRId64 ": target %.17g is out of float range",
                         lineno, col + 1, v);
        L->ds->targets[row] = (float)v;
        return AD_OK;
    }
    if (v < 0 || v != floor(v) || v > CSV_MAX_LABEL)
        return CFAIL(L, AD_ERR_FORMAT, "line %" PRId64 ", column %" PRId64 ": label %.17g is not an integer in [0, %d]",
                     lineno, col + 1, v, CSV_MAX_LABEL);
    L->ds->labels[row] = (int64_t)v;
    if (L->ds->labels[row] > L->maxl) L->maxl = L->ds->labels[row];
    return AD_OK;
}

static ad_status csv_rows(csv_load *L)
{
    int64_t row = 0, lineno = 0, dim = L->ds->dim;
    bool skipped_header = !L->header;
    L->maxl = 0;
    const char *le;
    for (const char *p = L->start; p < L->end;) {
        const char *q = next_line(p, L->end, &le);
        lineno++;
        if (blank(p, le)) {
            p = q;
            continue;
        }
        if (!skipped_header) {
            skipped_header = true;
            p = q;
            continue;
        }
        float *frow = L->ds->features + row * dim;
        const char *c = p;
        for (int64_t col = 0; col < L->ncols; col++) {
            const char *ce = memchr(c, ',', (size_t)(le - c));
            if (!ce) ce = le;
            double v;
            char why[192];
            ad_status st;
            if (!parse_cell(c, ce, &v, why, sizeof why))
                return CFAIL(L, AD_ERR_FORMAT, "line %" PRId64 ", column %" PRId64 ": %s", lineno, col + 1, why);
            if (col == L->lc) {
                if ((st = csv_label(L, row, lineno, col, v)) != AD_OK) return st;
            } else if (fabs(v) > FLT_MAX) {
                return CFAIL(L, AD_ERR_FORMAT, "line %" PRId64 ", column %" PRId64 ": %.17g is out of float range",
                             lineno, col + 1, v);
            } else {
                *frow++ = (float)v;
            }
            c = ce + 1;
        }
        row++;
        p = q;
    }
    return AD_OK;
}

static void csv_copy_out(csv_load *L, nn_dataset **out)
{
    L->ds->nclasses = L->target ? 0 : L->maxl + 1;
    *out = L->ds;
    L->ds = NULL;
}

static ad_status load_csv(const char *path, int label_col, bool header, bool target, nn_dataset **out, char *err,
                          size_t errlen)
{
    const char *fn = target ? "nn_dataset_load_csv_targets" : "nn_dataset_load_csv";
    if (err && errlen) err[0] = '\0';
    if (out) *out = NULL;
    if (!path) return null_args(err, errlen, fn, "path or out");
    if (!out) return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "NULL path or out");
    csv_load L = {.fn = fn, .path = path, .label_col = label_col, .header = header, .target = target,
                  .err = err, .errlen = errlen};
    ad_status st = csv_open(&L);
    if (st == AD_OK) st = csv_shape(&L);
    if (st == AD_OK) st = csv_alloc(&L);
    if (st == AD_OK) st = csv_rows(&L);
    if (st == AD_OK) csv_copy_out(&L, out);
    nn_dataset_free(L.ds);
    ad__free(L.text);
    return st;
}

/* ---- the public entry points: the message goes into the caller's nn_error ---- */

ad_status nn_dataset_load_idx(const char *images_path, const char *labels_path, nn_dataset **out, nn_error *err)
{
    return nn__status(err, load_idx(images_path, labels_path, out, NN__MSG(err)));
}

ad_status nn_dataset_load_csv(const char *path, int label_col, bool header, nn_dataset **out, nn_error *err)
{
    return nn__status(err, load_csv(path, label_col, header, false, out, NN__MSG(err)));
}

ad_status nn_dataset_load_csv_targets(const char *path, int target_col, bool header, nn_dataset **out, nn_error *err)
{
    return nn__status(err, load_csv(path, target_col, header, true, out, NN__MSG(err)));
}

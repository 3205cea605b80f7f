/* npy.c: NumPy .npy files: a strict header parser, a checked loader and a writer. */
#include "services.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_HEADER (1u << 20) /* far above any real header (NumPy itself caps at 10000) */

/* Reverses the byte order of n items of `size` bytes each, in place. */
static void swap_bytes(unsigned char *p, int64_t n, size_t size)
{
    for (int64_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char c = p[a];
            p[a] = p[b];
            p[b] = c;
        }
}

/* ---- the header: a Python dict literal with exactly three keys ---- */

typedef struct npy_header {
    char descr[16];
    int fortran; /* -1 until seen */
    int ndim;    /* -1 until seen */
    int64_t shape[AD_MAX_DIMS];
} npy_header;

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes into buf; false if malformed or too long. */
static bool parse_str(cursor *c, char *buf, size_t n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || (unsigned char)*c->p < 0x20 || k + 1 >= n) return false;
        buf[k++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    buf[k] = '\0';
    return true;
}

/* Parses the dict; on failure writes the reason into why. */
static bool parse_header(const char *text, size_t len, npy_header *h, char *why, size_t whylen)
{
    cursor c = {text, text + len};
    h->descr[0] = '\0';
    h->fortran = -1;
    h->ndim = -1;
    if (!eat(&c, '{')) {
        snprintf(why, whylen, "header is not a dict literal");
        return false;
    }
    for (;;) {
        if (eat(&c, '}')) break;
        char key[32];
        if (!parse_str(&c, key, sizeof key)) {
            snprintf(why, whylen, "header dict: expected a quoted key at byte %td", c.p - text);
            return false;
        }
        if (!eat(&c, ':')) {
            snprintf(why, whylen, "header dict: expected ':' after key '%s'", key);
            return false;
        }
        skip_ws(&c);
        if (strcmp(key, "descr") == 0) {
            if (h->descr[0]) goto dup;
            if (!parse_str(&c, h->descr, sizeof h->descr) || !h->descr[0]) {
                snprintf(why, whylen, "header dict: 'descr' is not a short dtype string");
                return false;
            }
        } else if (strcmp(key, "fortran_order") == 0) {
            if (h->fortran >= 0) goto dup;
            if ((size_t)(c.end - c.p) >= 4 && memcmp(c.p, "True", 4) == 0) {
                h->fortran = 1;
                c.p += 4;
            } else if ((size_t)(c.end - c.p) >= 5 && memcmp(c.p, "False", 5) == 0) {
                h->fortran = 0;
                c.p += 5;
            } else {
                snprintf(why, whylen, "header dict: 'fortran_order' is not True or False");
                return false;
            }
        } else if (strcmp(key, "shape") == 0) {
            if (h->ndim >= 0) goto dup;
            if (!eat(&c, '(')) {
                snprintf(why, whylen, "header dict: 'shape' is not a tuple");
                return false;
            }
            h->ndim = 0;
            bool comma = false; /* a trailing comma after the last dimension */
            for (;;) {
                if (eat(&c, ')')) break;
                skip_ws(&c);
                if (c.p < c.end && *c.p == '-') {
                    snprintf(why, whylen, "negative dimension in 'shape'");
                    return false;
                }
                if (c.p >= c.end || *c.p < '0' || *c.p > '9') {
                    snprintf(why, whylen, "header dict: 'shape' holds something other than integers");
                    return false;
                }
                int64_t v = 0;
                while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                    int d = *c.p++ - '0';
                    if (v > (INT64_MAX - d) / 10) {
                        snprintf(why, whylen, "dimension in 'shape' overflows 64 bits");
                        return false;
                    }
                    v = v * 10 + d;
                }
                if (h->ndim == AD_MAX_DIMS) {
                    snprintf(why, whylen, "more than %d dimensions are not supported", AD_MAX_DIMS);
                    h->ndim = AD_MAX_DIMS + 1; /* tells the caller: unsupported, not malformed */
                    return false;
                }
                h->shape[h->ndim++] = v;
                comma = eat(&c, ',');
                if (comma) continue;
                if (eat(&c, ')')) break;
                snprintf(why, whylen, "header dict: malformed 'shape' tuple");
                return false;
            }
            /* a 1-tuple is written (n,): "(3)" is just an integer in Python */
            if (h->ndim == 1 && !comma) {
                snprintf(why, whylen, "header dict: 'shape' (n) is not a tuple, (n,) is");
                return false;
            }
        } else {
            snprintf(why, whylen, "header dict: unexpected key '%s'", key);
            return false;
        }
        if (eat(&c, ',')) continue;
        if (eat(&c, '}')) break;
        snprintf(why, whylen, "header dict: expected ',' or '}' at byte %td", c.p - text);
        return false;
    }
    skip_ws(&c);
    if (c.p != c.end) {
        snprintf(why, whylen, "junk after the header dict at byte %td", c.p - text);
        return false;
    }
    if (!h->descr[0] || h->fortran < 0 || h->ndim < 0) {
        snprintf(why, whylen, "header dict lacks the key '%s'",
                 !h->descr[0]     ? "descr"
                 : h->fortran < 0 ? "fortran_order"
                                  : "shape");
        return false;
    }
    return true;
dup:
    snprintf(why, whylen, "header dict: duplicate key");
    return false;
}

/* ---- dtypes ---- */

typedef enum { K_FLOAT, K_INT, K_UINT, K_BOOL } npy_kind;

typedef struct npy_dtype {
    npy_kind kind;
    size_t size;
    bool big; /* stored big-endian */
} npy_dtype;

/* Decodes descr; false when it is not one this reader handles. */
static bool decode_descr(const char *d, npy_dtype *t)
{
    if (strlen(d) != 3) return false;
    char order = d[0], k = d[1], sz = d[2];
    if (sz != '1' && sz != '2' && sz != '4' && sz != '8') return false;
    t->size = (size_t)(sz - '0');
    if (order == '|' && t->size != 1) return false;
    if (order != '<' && order != '>' && order != '|' && order != '=') return false;
    t->big = order == '>' || (order == '=' && !ad__little_endian());
    switch (k) {
    case 'f':
        t->kind = K_FLOAT;
        return t->size == 4 || t->size == 8;
    case 'i':
        t->kind = K_INT;
        return true;
    case 'u':
        t->kind = K_UINT;
        return true;
    case 'b':
        t->kind = K_BOOL;
        return t->size == 1;
    default:
        return false;
    }
}

/* Element i of raw integer/bool data (already in host order) as a double. */
static double int_at(const unsigned char *p, npy_dtype t, int64_t i)
{
    p += (size_t)i * t.size;
    switch (t.size) {
    case 1:
        return t.kind == K_INT ? (double)(int8_t)p[0] : t.kind == K_BOOL ? (p[0] != 0) : (double)p[0];
    case 2: {
        uint16_t v;
        memcpy(&v, p, 2);
        return t.kind == K_INT ? (double)(int16_t)v : (double)v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, p, 4);
        return t.kind == K_INT ? (double)(int32_t)v : (double)v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return t.kind == K_INT ? (double)(int64_t)v : (double)v;
    }
    }
}

/* ---- load ---- */

/*
** A load runs in named phases, each validating before the next reads further:
**   npy_open      the path is a regular file (refused before opening otherwise)
**   npy_preamble  magic, version, header length within the file
**   npy_dict      the header text and its dict: descr, fortran_order, shape
**   npy_layout    the dtype is one this reader takes, the element count and byte size fit
**                 and equal what the file holds after the header
**   npy_data      the tensor allocated and filled (integer and bool types widened to F64)
*/
typedef struct npy_load {
    const char *fn, *path;
    char *err;
    size_t errlen;
    FILE *f;
    uint64_t fsize, hlen, pos;
    char *hdr;
    npy_header h;
    npy_dtype dt;
    int64_t count, nbytes;
} npy_load;

#define NFAIL(L, s, ...) ad__file_error((L)->err, (L)->errlen, s, (L)->fn, (L)->path, __VA_ARGS__)

static bool read_exact(FILE *f, void *buf, size_t n) { return n == 0 || fread(buf, 1, n, f) == n; }

static ad_status npy_open(npy_load *L)
{
    int fd;
    ad_status st = ad__open_read(L->fn, L->path, &fd, &L->fsize, L->err, L->errlen);
    if (st != AD_OK) return st;
    L->f = fdopen(fd, "rb");
    if (!L->f) {
        int e = errno;
        close(fd);
        return NFAIL(L, e == ENOMEM ? AD_ERR_NOMEM : AD_ERR_IO, "fdopen: %s", strerror(e));
    }
    return AD_OK;
}

static ad_status npy_preamble(npy_load *L)
{
    unsigned char pre[12];
    if (L->fsize < 10 || !read_exact(L->f, pre, 10))
        return NFAIL(L, AD_ERR_FORMAT, "file too short (%" PRIu64 " bytes) for a .npy preamble", L->fsize);
    if (memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) return NFAIL(L, AD_ERR_FORMAT, "bad magic: not a .npy file");
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return NFAIL(L, AD_ERR_UNSUPPORTED, "unsupported format version %d.%d (1.0, 2.0, 3.0 are)", major, minor);
    if (major == 1) {
        L->hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        L->pos = 10;
    } else {
        if (L->fsize < 12 || !read_exact(L->f, pre + 10, 2))
            return NFAIL(L, AD_ERR_FORMAT, "file too short for a version %d preamble", major);
        L->hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
        L->pos = 12;
    }
    if (L->hlen > NPY_MAX_HEADER)
        return NFAIL(L, AD_ERR_FORMAT, "header length %" PRIu64 " over the limit %u", L->hlen, NPY_MAX_HEADER);
    if (L->hlen > L->fsize - L->pos)
        return NFAIL(L, AD_ERR_FORMAT, "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                     L->hlen, L->fsize);
    return AD_OK;
}

static ad_status npy_dict(npy_load *L)
{
    uint64_t hlen = L->hlen;
    L->hdr = ad__malloc((size_t)hlen + 1);
    if (!L->hdr) return NFAIL(L, AD_ERR_NOMEM, "out of memory for the header");
    if (!read_exact(L->f, L->hdr, (size_t)hlen)) return NFAIL(L, AD_ERR_IO, "read error in the header");
    L->hdr[hlen] = '\0';
    L->pos += hlen;
    if (hlen == 0 || L->hdr[hlen - 1] != '\n') return NFAIL(L, AD_ERR_FORMAT, "header does not end with a newline");
    if (memchr(L->hdr, '\0', (size_t)hlen)) return NFAIL(L, AD_ERR_FORMAT, "NUL byte in the header");
    char why[160];
    if (!parse_header(L->hdr, (size_t)hlen, &L->h, why, sizeof why))
        return NFAIL(L, L->h.ndim > AD_MAX_DIMS ? AD_ERR_UNSUPPORTED : AD_ERR_FORMAT, "%s", why);
    return AD_OK;
}

static ad_status npy_layout(npy_load *L)
{
    if (L->h.fortran) return NFAIL(L, AD_ERR_UNSUPPORTED, "fortran_order True is not supported (C order only)");
    if (!decode_descr(L->h.descr, &L->dt))
        return NFAIL(L, AD_ERR_UNSUPPORTED, "dtype '%s' is not supported (f4, f8, integer and bool types are)",
                     L->h.descr);
    L->count = 1;
    for (int i = 0; i < L->h.ndim; i++)
        if (!ad__mul_ok(L->count, L->h.shape[i], &L->count))
            return NFAIL(L, AD_ERR_FORMAT, "shape's element count overflows");
    if (!ad__mul_ok(L->count, (int64_t)L->dt.size, &L->nbytes) || L->count > INT64_MAX / 16)
        return NFAIL(L, AD_ERR_FORMAT, "data size overflows");
    uint64_t have = L->fsize - L->pos;
    if ((uint64_t)L->nbytes > have)
        return NFAIL(L, AD_ERR_FORMAT, "truncated: shape needs %" PRId64 " data bytes, the file holds %" PRIu64,
                     L->nbytes, have);
    if ((uint64_t)L->nbytes < have)
        return NFAIL(L, AD_ERR_FORMAT, "%" PRIu64 " trailing bytes after the data", have - (uint64_t)L->nbytes);
    return AD_OK;
}

static ad_status npy_data(npy_load *L, ad_tensor **out)
{
    npy_dtype dt = L->dt;
    ad_dtype out_dt = dt.kind == K_FLOAT && dt.size == 4 ? AD_F32 : AD_F64;
    ad_tensor *t = ad_tensor_new(out_dt, L->h.ndim, L->h.shape);
    unsigned char *raw = NULL;
    ad_status st = AD_OK;
    if (!t) return NFAIL(L, AD_ERR_NOMEM, "out of memory for %" PRId64 " elements", L->count);
    bool swap = dt.size > 1 && dt.big == ad__little_endian();
    if (dt.kind == K_FLOAT) {
        if (!read_exact(L->f, t->data, (size_t)L->nbytes)) st = NFAIL(L, AD_ERR_IO, "read error in the data");
        else if (swap) swap_bytes(t->data, L->count, dt.size);
    } else if (!(raw = ad__malloc((size_t)L->nbytes))) {
        st = NFAIL(L, AD_ERR_NOMEM, "out of memory for %" PRId64 " elements", L->count);
    } else if (!read_exact(L->f, raw, (size_t)L->nbytes)) {
        st = NFAIL(L, AD_ERR_IO, "read error in the data");
    } else {
        if (swap) swap_bytes(raw, L->count, dt.size);
        double *d = t->data;
        for (int64_t i = 0; i < L->count; i++) d[i] = int_at(raw, dt, i);
    }
    ad__free(raw);
    if (st != AD_OK) {
        ad_tensor_free(t);
        return st;
    }
    *out = t;
    return AD_OK;
}

ad_status ad_npy_load(const char *path, ad_tensor **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (out) *out = NULL;
    npy_load L = {"ad_npy_load", path, err, errlen, NULL, 0, 0, 0, NULL, {{0}, 0, 0, {0}}, {0, 0, false}, 0, 0};
    if (!path || !out) return NFAIL(&L, AD_ERR_ARG, "NULL path or out");
    ad_status st = npy_open(&L);
    if (st == AD_OK) st = npy_preamble(&L);
    if (st == AD_OK) st = npy_dict(&L);
    if (st == AD_OK) st = npy_layout(&L);
    if (st == AD_OK) st = npy_data(&L, out);
    if (L.f) fclose(L.f);
    ad__free(L.hdr);
    return st;
}

/* ---- save ---- */

ad_status ad_npy_save(const char *path, const ad_tensor *t, char *err, size_t errlen)
{
    static const char fn[] = "ad_npy_save";
    if (err && errlen) err[0] = '\0';
    if (!path || !t) return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "NULL path or tensor");
    if (t->dtype != AD_F32 && t->dtype != AD_F64)
        return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "unknown dtype %d", (int)t->dtype);
    if (t->ndim < 0 || t->ndim > AD_MAX_DIMS || (t->size > 0 && !t->data))
        return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "malformed tensor");

    /* dict, then spaces, then '\n', so that preamble + header is a multiple of 64 */
    char dict[64 + AD_MAX_DIMS * 24];
    int k = snprintf(dict, sizeof dict, "{'descr': '<%s', 'fortran_order': False, 'shape': (",
                     t->dtype == AD_F32 ? "f4" : "f8");
    for (int i = 0; i < t->ndim; i++)
        k += snprintf(dict + k, sizeof dict - (size_t)k, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    k += snprintf(dict + k, sizeof dict - (size_t)k, "%s), }", t->ndim == 1 ? "," : "");
    size_t dlen = (size_t)k;
    int version = dlen + 1 + 10 <= 65535 ? 1 : 2;
    size_t pre = version == 1 ? 10 : 12;
    size_t total = (pre + dlen + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    unsigned char head[sizeof dict + 140];
    memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
    head[6] = (unsigned char)version;
    head[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) head[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(head + pre, dict, dlen);
    memset(head + pre + dlen, ' ', hlen - dlen - 1);
    head[total - 1] = '\n';

    /* a temporary file beside path (never through a link, never over a device or FIFO), then a rename */
    ad__save sv;
    ad_status st = ad__save_begin(&sv, fn, path, err, errlen);
    if (st != AD_OK) return st;
    size_t nbytes = ad__nbytes(t), esize = ad_dtype_size(t->dtype);
    bool ok = ad__write_all(sv.fd, head, total);
    if (ok && nbytes) {
        if (ad__little_endian()) {
            ok = ad__write_all(sv.fd, t->data, nbytes);
        } else {
            const unsigned char *p = t->data;
            for (int64_t i = 0; ok && i < t->size; i++) {
                unsigned char e[8];
                for (size_t b = 0; b < esize; b++) e[b] = p[(size_t)i * esize + esize - 1 - b];
                ok = ad__write_all(sv.fd, e, esize);
            }
        }
    }
    if (!ok) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "write failed: %s", strerror(errno));
        ad__save_abort(&sv);
        return st;
    }
    return ad__save_commit(&sv, err, errlen);
}

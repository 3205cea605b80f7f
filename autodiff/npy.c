/* npy.c: NumPy .npy files: a strict header parser, a checked loader and a writer. */
#include "services.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

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

static bool read_exact(FILE *f, void *buf, size_t n) { return n == 0 || fread(buf, 1, n, f) == n; }

ad_status ad_npy_load(const char *path, ad_tensor **out, char *err, size_t errlen)
{
    static const char fn[] = "ad_npy_load";
    if (err && errlen) err[0] = '\0';
    if (out) *out = NULL;
    if (!path || !out) return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "NULL path or out");

    FILE *f = fopen(path, "rb");
    if (!f) return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "cannot open: %s", strerror(errno));
    ad_status st = AD_OK;
    char *hdr = NULL;
    unsigned char *raw = NULL;
    ad_tensor *t = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "fstat: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "not a regular file");
        goto done;
    }
    uint64_t fsize = (uint64_t)sb.st_size;

    unsigned char pre[12];
    if (fsize < 10 || !read_exact(f, pre, 10)) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                            "file too short (%" PRIu64 " bytes) for a .npy preamble", fsize);
        goto done;
    }
    if (memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "bad magic: not a .npy file");
        goto done;
    }
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0) {
        st = ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path,
                            "unsupported format version %d.%d (1.0, 2.0, 3.0 are)", major, minor);
        goto done;
    }
    uint64_t hlen, pos;
    if (major == 1) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        pos = 10;
    } else {
        if (fsize < 12 || !read_exact(f, pre + 10, 2)) {
            st =
                ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "file too short for a version %d preamble", major);
            goto done;
        }
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
        pos = 12;
    }
    if (hlen > NPY_MAX_HEADER) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "header length %" PRIu64 " over the limit %u", hlen,
                            NPY_MAX_HEADER);
        goto done;
    }
    if (hlen > fsize - pos) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                            "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)", hlen, fsize);
        goto done;
    }
    hdr = ad__malloc((size_t)hlen + 1);
    if (!hdr) {
        st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory for the header");
        goto done;
    }
    if (!read_exact(f, hdr, (size_t)hlen)) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "read error in the header");
        goto done;
    }
    hdr[hlen] = '\0';
    pos += hlen;
    if (hlen == 0 || hdr[hlen - 1] != '\n') {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "header does not end with a newline");
        goto done;
    }
    for (uint64_t i = 0; i < hlen; i++)
        if (hdr[i] == '\0') {
            st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "NUL byte in the header");
            goto done;
        }

    npy_header h;
    char why[160];
    if (!parse_header(hdr, (size_t)hlen, &h, why, sizeof why)) {
        st =
            ad__file_error(err, errlen, h.ndim > AD_MAX_DIMS ? AD_ERR_UNSUPPORTED : AD_ERR_FORMAT, fn, path, "%s", why);
        goto done;
    }
    if (h.fortran) {
        st = ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path,
                            "fortran_order True is not supported (C order only)");
        goto done;
    }
    npy_dtype dt;
    if (!decode_descr(h.descr, &dt)) {
        st = ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path,
                            "dtype '%s' is not supported (f4, f8, integer and bool types are)", h.descr);
        goto done;
    }
    int64_t count = 1, nbytes;
    for (int i = 0; i < h.ndim; i++)
        if (!ad__mul_ok(count, h.shape[i], &count)) {
            st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "shape's element count overflows");
            goto done;
        }
    if (!ad__mul_ok(count, (int64_t)dt.size, &nbytes) || count > INT64_MAX / 16) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "data size overflows");
        goto done;
    }
    if ((uint64_t)nbytes > fsize - pos) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                            "truncated: shape needs %" PRId64 " data bytes, the file holds %" PRIu64, nbytes,
                            fsize - pos);
        goto done;
    }
    if ((uint64_t)nbytes < fsize - pos) {
        st = ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "%" PRIu64 " trailing bytes after the data",
                            fsize - pos - (uint64_t)nbytes);
        goto done;
    }

    ad_dtype out_dt = dt.kind == K_FLOAT && dt.size == 4 ? AD_F32 : AD_F64;
    t = ad_tensor_new(out_dt, h.ndim, h.shape);
    if (!t) {
        st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory for %" PRId64 " elements", count);
        goto done;
    }
    bool swap = dt.size > 1 && dt.big == ad__little_endian();
    if (dt.kind == K_FLOAT) {
        if (!read_exact(f, t->data, (size_t)nbytes)) {
            st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "read error in the data");
            goto done;
        }
        if (swap) swap_bytes(t->data, count, dt.size);
    } else {
        raw = ad__malloc((size_t)nbytes);
        if (!raw) {
            st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory for %" PRId64 " elements", count);
            goto done;
        }
        if (!read_exact(f, raw, (size_t)nbytes)) {
            st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "read error in the data");
            goto done;
        }
        if (swap) swap_bytes(raw, count, dt.size);
        double *d = t->data;
        for (int64_t i = 0; i < count; i++) d[i] = int_at(raw, dt, i);
    }
done:
    fclose(f);
    ad__free(hdr);
    ad__free(raw);
    if (st != AD_OK) {
        ad_tensor_free(t);
        return st;
    }
    *out = t;
    return AD_OK;
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

    FILE *f = fopen(path, "wb");
    if (!f) return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "cannot open for writing: %s", strerror(errno));
    size_t nbytes = ad__nbytes(t), esize = ad_dtype_size(t->dtype);
    bool ok = fwrite(head, 1, total, f) == total;
    if (ok && nbytes) {
        if (ad__little_endian()) {
            ok = fwrite(t->data, 1, nbytes, f) == nbytes;
        } else {
            const unsigned char *p = t->data;
            for (int64_t i = 0; ok && i < t->size; i++) {
                unsigned char e[8];
                for (size_t b = 0; b < esize; b++) e[b] = p[(size_t)i * esize + esize - 1 - b];
                ok = fwrite(e, 1, esize, f) == esize;
            }
        }
    }
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        remove(path);
        return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "write failed: %s", strerror(saved));
    }
    return AD_OK;
}

/* safetensors.c: checkpoint files in the safetensors format, with XXH3 checksums, atomic save, validating load. */
#include "nn_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

#define ST_MAX_HEADER (100u * 1000u * 1000u) /* 100 MB, as the safetensors library allows */
#define ST_FORMAT "autodiff-checkpoint"
#define ST_VERSION "1"
#define ST_SUM_PREFIX "xxh3:"
#define ST_TABLE_KEY "xxh3:__table__"

/* One tensor of the table. */
typedef struct st_entry {
    const char *name;
    ad_dtype dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    int64_t begin, end;
    const ad_tensor *src; /* save: the caller's tensor */
    bool used;            /* load: matched a requested name */
} st_entry;

static const char *st_dtype_name(ad_dtype d) { return d == AD_F32 ? "F32" : "F64"; }

/* The canonical order of the table: by begin, end, then name (bytewise), so
** that zero-size tensors sharing an offset have one order whatever the JSON's. */
static int entry_cmp(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* 16 lowercase hex digits of XXH3-64 in xxHash's canonical (big-endian) form. */
static void hash_hex(XXH64_hash_t h, char out[17])
{
    XXH64_canonical_t c;
    XXH64_canonicalFromHash(&c, h);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[c.digest[i] >> 4];
        out[2 * i + 1] = hex[c.digest[i] & 15];
    }
    out[16] = '\0';
}

/*
** The table checksum "xxh3:__table__" is XXH3-64 (seed 0) of this text, for
** every tensor in the canonical order above:
**     name '\0' dtype '\0' dims '\0' begin '\0' end '\n'
** where dtype is "F32" or "F64", dims the dimensions in decimal joined by ','
** (empty for a scalar), begin and end the data_offsets in decimal. So
** "w" F32 [2,3] at [0,24] gives the 13 bytes "w\0F32\0" "2,3\0" "0\0" "24\n".
** Entries must be sorted already. Returns false when out of memory.
*/
static bool table_hash(const st_entry *e, int64_t n, char out[17])
{
    size_t cap = 1;
    for (int64_t i = 0; i < n; i++) cap += strlen(e[i].name) + 8 + (size_t)(e[i].ndim + 2) * 21;
    char *buf = ad__malloc(cap), *p = buf;
    if (!buf) return false;
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(e[i].name);
        memcpy(p, e[i].name, l + 1);
        p += l + 1;
        memcpy(p, st_dtype_name(e[i].dtype), 4);
        p += 4;
        for (int d = 0; d < e[i].ndim; d++) p += sprintf(p, d ? ",%" PRId64 : "%" PRId64, e[i].shape[d]);
        *p++ = '\0';
        p += sprintf(p, "%" PRId64, e[i].begin) + 1;
        p += sprintf(p, "%" PRId64 "\n", e[i].end);
    }
    hash_hex(XXH3_64bits(buf, (size_t)(p - buf)), out);
    ad__free(buf);
    return true;
}

/* ---- save ---- */

static bool reserved_key(const char *k)
{
    return strcmp(k, "format") == 0 || strcmp(k, "version") == 0 ||
           strncmp(k, ST_SUM_PREFIX, strlen(ST_SUM_PREFIX)) == 0;
}

/* Builds the JSON header (unpadded) into *out; returns a status and sets why. */
static ad_status build_header(const st_entry *ent, int n, int nmeta, const char *const *meta, const char *const *names,
                              char **out, size_t *outlen, const char *fn, const char *path, char *err, size_t errlen)
{
    ad_status st = AD_ERR_NOMEM;
    json_t *root = json_object(), *md = json_object();
    char *text = NULL;
    st_entry *sorted = NULL;
    if (!root || !md) goto nomem;
    if (json_object_set_new(md, "format", json_string(ST_FORMAT)) ||
        json_object_set_new(md, "version", json_string(ST_VERSION)))
        goto nomem;
    for (int i = 0; i < nmeta; i++) {
        json_t *v = json_string(meta[2 * i + 1]);
        if (!v) {
            st = ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "metadata value for '%s' is not valid UTF-8",
                                meta[2 * i]);
            goto out;
        }
        if (json_object_set_new(md, meta[2 * i], v)) {
            st = ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "metadata key '%s' is not valid UTF-8", meta[2 * i]);
            goto out;
        }
    }
    char hex[17], key[64];
    for (int i = 0; i < n; i++) {
        json_t *name = json_string(names[i]); /* validates UTF-8 */
        if (!name) {
            st = ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "tensor name #%d is not valid UTF-8", i);
            goto out;
        }
        json_decref(name);
        hash_hex(XXH3_64bits(ent[i].src->data, ad__nbytes(ent[i].src)), hex);
        size_t kl = strlen(ST_SUM_PREFIX) + strlen(names[i]) + 1;
        char *k = kl <= sizeof key ? key : ad__malloc(kl);
        if (!k) goto nomem;
        snprintf(k, kl, "%s%s", ST_SUM_PREFIX, names[i]);
        int bad = json_object_set_new(md, k, json_string(hex));
        if (k != key) ad__free(k);
        if (bad) goto nomem;
    }
    sorted = ad__malloc(((size_t)n + 1) * sizeof *sorted);
    if (!sorted) goto nomem;
    if (n) memcpy(sorted, ent, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, entry_cmp);
    if (!table_hash(sorted, n, hex) || json_object_set_new(md, ST_TABLE_KEY, json_string(hex))) goto nomem;
    if (json_object_set_new(root, "__metadata__", md)) {
        md = NULL;
        goto nomem;
    }
    md = NULL;
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array(), *e = json_object();
        int bad = !shape || !e;
        for (int d = 0; !bad && d < ent[i].ndim; d++) bad = json_array_append_new(shape, json_integer(ent[i].shape[d]));
        bad = bad || json_object_set_new(e, "dtype", json_string(st_dtype_name(ent[i].dtype)));
        bad = bad || json_object_set(e, "shape", shape);
        bad = bad || json_object_set_new(e, "data_offsets",
                                         json_pack("[II]", (json_int_t)ent[i].begin, (json_int_t)ent[i].end));
        bad = bad || json_object_set(root, names[i], e);
        json_decref(shape);
        json_decref(e);
        if (bad) goto nomem;
    }
    size_t need = json_dumpb(root, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (need == 0 || need > ST_MAX_HEADER - 8) {
        st = ad__file_error(err, errlen, need ? AD_ERR_ARG : AD_ERR_NOMEM, fn, path,
                            "cannot encode the header (%zu bytes)", need);
        goto out;
    }
    size_t padded = (need + 7) / 8 * 8;
    text = ad__malloc(padded);
    if (!text || json_dumpb(root, text, need, JSON_COMPACT | JSON_PRESERVE_ORDER) != need) goto nomem;
    memset(text + need, ' ', padded - need);
    *out = text;
    *outlen = padded;
    text = NULL;
    st = AD_OK;
    goto out;
nomem:
    st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory building the header");
out:
    ad__free(text);
    ad__free(sorted);
    json_decref(md);
    json_decref(root);
    return st;
}

static ad_status save_buf(const char *path, int n, const char *const *names, const ad_tensor *const *tensors,
                              int nmeta, const char *const *meta, char *err, size_t errlen)
{
    static const char fn[] = "nn_safetensors_save";
    if (err && errlen) err[0] = '\0';
    if (!path || n < 0 || (n > 0 && (!names || !tensors)) || nmeta < 0 || (nmeta > 0 && !meta))
        return ad__file_error(err, errlen, AD_ERR_ARG, fn, path,
                              "NULL path, names, tensors or meta, or a negative count");
    if (!ad__little_endian())
        return ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path, "big-endian hosts are not supported");
    for (int i = 0; i < nmeta; i++) {
        if (!meta[2 * i] || !meta[2 * i + 1])
            return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "metadata pair #%d has a NULL string", i);
        if (reserved_key(meta[2 * i]))
            return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "metadata key '%s' is reserved", meta[2 * i]);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[2 * i], meta[2 * j]) == 0)
                return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "duplicate metadata key '%s'", meta[2 * i]);
    }
    for (int i = 0; i < n; i++) {
        const ad_tensor *t = tensors[i];
        if (!names[i] || !names[i][0] || strcmp(names[i], "__metadata__") == 0 || strcmp(names[i], "__table__") == 0)
            return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "tensor #%d: NULL, empty or reserved name", i);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "duplicate tensor name '%s'", names[i]);
        if (!t || t->ndim < 0 || t->ndim > AD_MAX_DIMS || (t->size > 0 && !t->data))
            return ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "tensor '%s': NULL or malformed", names[i]);
        if (t->dtype != AD_F32 && t->dtype != AD_F64)
            return ad__file_error(err, errlen, AD_ERR_DTYPE, fn, path, "tensor '%s': dtype is not F32 or F64",
                                  names[i]);
    }

    ad_status st = AD_OK;
    st_entry *ent = ad__calloc((size_t)n + 1, sizeof *ent);
    char *hdr = NULL;
    ad__save sv = {-1, false, NULL, NULL, path, fn};
    size_t hlen = 0;
    if (!ent) {
        st = ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory");
        goto done;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const ad_tensor *t = tensors[i];
        ent[i].name = names[i];
        ent[i].dtype = t->dtype;
        ent[i].ndim = t->ndim;
        memcpy(ent[i].shape, t->shape, sizeof t->shape);
        ent[i].src = t;
        ent[i].begin = off;
        if ((int64_t)ad__nbytes(t) > INT64_MAX - off) {
            st = ad__file_error(err, errlen, AD_ERR_ARG, fn, path, "total size overflows");
            goto done;
        }
        off += (int64_t)ad__nbytes(t);
        ent[i].end = off;
    }
    st = build_header(ent, n, nmeta, meta, names, &hdr, &hlen, fn, path, err, errlen);
    if (st != AD_OK) goto done;

    /* a temporary file beside path (never through a link, never over a device or FIFO), then a rename */
    st = ad__save_begin(&sv, fn, path, err, errlen);
    if (st != AD_OK) goto done;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = ad__write_all(sv.fd, lenb, 8) && ad__write_all(sv.fd, hdr, hlen);
    for (int i = 0; ok && i < n; i++) ok = ad__write_all(sv.fd, tensors[i]->data, ad__nbytes(tensors[i]));
    if (!ok) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "write(%s): %s", sv.tmp, strerror(errno));
        ad__save_abort(&sv);
        goto done;
    }
    st = ad__save_commit(&sv, err, errlen);
done:
    ad__free(hdr);
    ad__free(ent);
    return st;
}

/* ---- load ---- */

/* read(2) exactly n bytes; false on an error (errno set) or an early end (errno 0). */
static bool read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? 1u << 30 : n;
        ssize_t k = read(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (k == 0) {
            errno = 0;
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static bool known_other_dtype(const char *d)
{
    static const char *const others[] = {"BOOL", "U8",      "I8",      "I16",     "U16",     "F16",     "BF16",
                                         "I32",  "U32",     "I64",     "U64",     "F8_E4M3", "F8_E5M2", "C64",
                                         "F4",   "F6_E2M3", "F6_E3M2", "F8_E8M0", "E8M0"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (strcmp(d, others[i]) == 0) return true;
    return false;
}

/* Validates one table entry against the data area's size. */
static ad_status parse_entry(const char *name, json_t *v, int64_t data_size, st_entry *e, const char *fn,
                             const char *path, char *err, size_t errlen)
{
    e->name = name;
    if (!json_is_object(v))
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': entry is not an object", name);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': unexpected key '%s'", name, k);
    }
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *of = json_object_get(v, "data_offsets");
    if (!dt || !sh || !of)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': missing \"%s\"", name,
                              !dt   ? "dtype"
                              : !sh ? "shape"
                                    : "data_offsets");
    const char *ds = json_string_value(dt);
    if (!ds) return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': dtype is not a string", name);
    if (strcmp(ds, "F32") == 0)
        e->dtype = AD_F32;
    else if (strcmp(ds, "F64") == 0)
        e->dtype = AD_F64;
    else if (known_other_dtype(ds))
        return ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path,
                              "tensor '%s': dtype %s is not supported (F32, F64 are)", name, ds);
    else
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': unknown dtype '%s'", name, ds);
    if (!json_is_array(sh))
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': shape is not an array", name);
    if (json_array_size(sh) > AD_MAX_DIMS)
        return ad__file_error(err, errlen, AD_ERR_UNSUPPORTED, fn, path, "tensor '%s': more than %d dimensions", name,
                              AD_MAX_DIMS);
    e->ndim = (int)json_array_size(sh);
    int64_t count = 1, nbytes;
    for (int d = 0; d < e->ndim; d++) {
        json_t *s = json_array_get(sh, (size_t)d);
        if (!json_is_integer(s))
            return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': shape holds a non-integer", name);
        e->shape[d] = json_integer_value(s);
        if (e->shape[d] < 0)
            return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': negative dimension %" PRId64,
                                  name, e->shape[d]);
        if (!ad__mul_ok(count, e->shape[d], &count))
            return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': shape's element count overflows",
                                  name);
    }
    if (!ad__mul_ok(count, (int64_t)ad_dtype_size(e->dtype), &nbytes) || count > INT64_MAX / 16)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': byte size overflows", name);
    if (!json_is_array(of) || json_array_size(of) != 2 || !json_is_integer(json_array_get(of, 0)) ||
        !json_is_integer(json_array_get(of, 1)))
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': data_offsets is not [begin, end]",
                              name);
    e->begin = json_integer_value(json_array_get(of, 0));
    e->end = json_integer_value(json_array_get(of, 1));
    if (e->begin < 0 || e->end < 0)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path, "tensor '%s': negative data_offsets", name);
    if (e->begin > e->end)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                              "tensor '%s': data_offsets begin %" PRId64 " > end %" PRId64, name, e->begin, e->end);
    if (e->end > data_size)
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                              "tensor '%s': data_offsets end %" PRId64 " past the end of the data (%" PRId64 " bytes)",
                              name, e->end, data_size);
    if (e->end - e->begin != nbytes) {
        char sb[160];
        return ad__file_error(err, errlen, AD_ERR_FORMAT, fn, path,
                              "tensor '%s': shape %s %s needs %" PRId64 " bytes, data_offsets span %" PRId64, name,
                              ad_shape_str(e->ndim, e->shape, sb, sizeof sb), ds, nbytes, e->end - e->begin);
    }
    return AD_OK;
}

/*
** A load runs in named phases, each validating one layer of the file before the
** next reads further; a failure in any leaves every dst untouched:
**   load_open      the path is a regular file (refused before opening otherwise), the header length fits
**   load_header    the header is a JSON object
**   load_table     each tensor entry, and the entries tile the data area exactly
**   load_metadata  format, version, checksum keys, the table checksum
**   load_match     the requested names, dtypes and shapes, and nothing else in the file
**   load_data      the data read (load_bytes), every tensor's checksum
** and only then copy_out writes the destinations. A plain file (any writer,
** nn__safetensors_read_plain) goes through load_open, load_header, load_table
** and load_bytes.
*/
typedef struct st_load {
    const char *fn, *path;
    char *err;
    size_t errlen;
    int fd;
    uint64_t fsize, hlen;
    int64_t data_size;
    char *hdr;
    json_t *root, *md;
    st_entry *ent;
    size_t nent;
    unsigned char *data;
} st_load;

#define LFAIL(L, s, ...) ad__file_error((L)->err, (L)->errlen, s, (L)->fn, (L)->path, __VA_ARGS__)

static ad_status load_args(st_load *L, int n, const char *const *names, ad_tensor *const *dst)
{
    if (!L->path || n < 0 || (n > 0 && (!names || !dst)))
        return LFAIL(L, AD_ERR_ARG, "NULL path, names or dst, or a negative count");
    for (int i = 0; i < n; i++) {
        if (!names[i] || !dst[i]) return LFAIL(L, AD_ERR_ARG, "NULL name or dst #%d", i);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) return LFAIL(L, AD_ERR_ARG, "name '%s' requested twice", names[i]);
    }
    if (!ad__little_endian()) return LFAIL(L, AD_ERR_UNSUPPORTED, "big-endian hosts are not supported");
    return AD_OK;
}

static ad_status load_open(st_load *L)
{
    ad_status st = ad__open_read(L->fn, L->path, &L->fd, &L->fsize, L->err, L->errlen);
    if (st != AD_OK) return st;
    unsigned char lenb[8];
    if (L->fsize < 8)
        return LFAIL(L, AD_ERR_FORMAT, "file too short (%" PRIu64 " bytes) for the header length", L->fsize);
    if (!read_all(L->fd, lenb, 8)) return LFAIL(L, AD_ERR_IO, "read: %s", errno ? strerror(errno) : "file shrank");
    L->hlen = 0;
    for (int i = 0; i < 8; i++) L->hlen |= (uint64_t)lenb[i] << (8 * i);
    if (L->hlen > ST_MAX_HEADER)
        return LFAIL(L, AD_ERR_FORMAT, "header length %" PRIu64 " over the limit of %u bytes", L->hlen, ST_MAX_HEADER);
    if (L->hlen > L->fsize - 8)
        return LFAIL(L, AD_ERR_FORMAT, "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                     L->hlen, L->fsize);
    L->data_size = (int64_t)(L->fsize - 8 - L->hlen);
    return AD_OK;
}

static ad_status load_header(st_load *L)
{
    L->hdr = ad__malloc((size_t)L->hlen + 1);
    if (!L->hdr) return LFAIL(L, AD_ERR_NOMEM, "out of memory for the header");
    if (!read_all(L->fd, L->hdr, (size_t)L->hlen))
        return LFAIL(L, AD_ERR_IO, "read: %s", errno ? strerror(errno) : "file shrank");
    json_error_t jerr;
    L->root = json_loadb(L->hdr, (size_t)L->hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!L->root) return LFAIL(L, AD_ERR_FORMAT, "invalid JSON header: %s (byte %d)", jerr.text, jerr.position);
    if (!json_is_object(L->root)) return LFAIL(L, AD_ERR_FORMAT, "header is not a JSON object");
    L->md = json_object_get(L->root, "__metadata__");
    return AD_OK;
}

static ad_status load_table(st_load *L)
{
    L->nent = json_object_size(L->root) - (L->md ? 1 : 0);
    L->ent = ad__calloc(L->nent + 1, sizeof *L->ent);
    if (!L->ent) return LFAIL(L, AD_ERR_NOMEM, "out of memory for %zu entries", L->nent);
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(L->root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) continue;
        ad_status st = parse_entry(key, val, L->data_size, &L->ent[k++], L->fn, L->path, L->err, L->errlen);
        if (st != AD_OK) return st;
    }
    qsort(L->ent, L->nent, sizeof *L->ent, entry_cmp);
    int64_t pos = 0;
    for (size_t i = 0; i < L->nent; i++) {
        if (L->ent[i].begin < pos)
            return LFAIL(L, AD_ERR_FORMAT, "tensor '%s' overlaps tensor '%s'", L->ent[i].name, L->ent[i - 1].name);
        if (L->ent[i].begin > pos)
            return LFAIL(L, AD_ERR_FORMAT, "gap of %" PRId64 " bytes before tensor '%s'", L->ent[i].begin - pos,
                         L->ent[i].name);
        pos = L->ent[i].end;
    }
    if (pos != L->data_size)
        return LFAIL(L, AD_ERR_FORMAT, "%" PRId64 " trailing bytes after the last tensor", L->data_size - pos);
    return AD_OK;
}

static ad_status load_metadata(st_load *L)
{
    json_t *md = L->md, *val;
    const char *key;
    if (!md || !json_is_object(md))
        return LFAIL(L, AD_ERR_FORMAT, "%s",
                     md ? "__metadata__ is not an object" : "no __metadata__: not an autodiff checkpoint");
    json_object_foreach(md, key, val)
    {
        if (!json_is_string(val)) return LFAIL(L, AD_ERR_FORMAT, "__metadata__ value for '%s' is not a string", key);
    }
    const char *fmt = json_string_value(json_object_get(md, "format"));
    const char *ver = json_string_value(json_object_get(md, "version"));
    if (!fmt || strcmp(fmt, ST_FORMAT) != 0)
        return LFAIL(L, AD_ERR_FORMAT, "metadata format is %s%s%s, expected '" ST_FORMAT "'", fmt ? "'" : "",
                     fmt ? fmt : "missing", fmt ? "'" : "");
    if (!ver || strcmp(ver, ST_VERSION) != 0)
        return LFAIL(L, ver ? AD_ERR_UNSUPPORTED : AD_ERR_FORMAT,
                     "checkpoint version %s%s%s is not supported (expected '" ST_VERSION "')", ver ? "'" : "",
                     ver ? ver : "missing", ver ? "'" : "");
    size_t plen = strlen(ST_SUM_PREFIX);
    json_object_foreach(md, key, val)
    {
        if (strncmp(key, ST_SUM_PREFIX, plen) != 0 || strcmp(key, ST_TABLE_KEY) == 0) continue;
        bool found = false;
        for (size_t i = 0; i < L->nent && !found; i++) found = strcmp(L->ent[i].name, key + plen) == 0;
        if (!found) return LFAIL(L, AD_ERR_FORMAT, "checksum for a tensor '%s' not in the file", key + plen);
    }
    char want[17];
    const char *table_sum = json_string_value(json_object_get(md, ST_TABLE_KEY));
    if (!table_sum) return LFAIL(L, AD_ERR_FORMAT, "no table checksum (" ST_TABLE_KEY ")");
    if (!table_hash(L->ent, (int64_t)L->nent, want)) return LFAIL(L, AD_ERR_NOMEM, "out of memory");
    if (strcmp(table_sum, want) != 0)
        return LFAIL(L, AD_ERR_FORMAT, "table checksum mismatch: the file says %.20s, the table hashes to %s",
                     table_sum, want);
    return AD_OK;
}

static ad_status load_match(st_load *L, int n, const char *const *names, ad_tensor *const *dst)
{
    for (int i = 0; i < n; i++) {
        st_entry *e = NULL;
        for (size_t j = 0; j < L->nent && !e; j++)
            if (strcmp(L->ent[j].name, names[i]) == 0) e = &L->ent[j];
        if (!e) return LFAIL(L, AD_ERR_FORMAT, "no tensor '%s' in the file", names[i]);
        e->used = true;
        if (e->dtype != dst[i]->dtype)
            return LFAIL(L, AD_ERR_DTYPE, "tensor '%s' is %s in the file, %s expected", names[i],
                         st_dtype_name(e->dtype), st_dtype_name(dst[i]->dtype));
        if (e->ndim != dst[i]->ndim || memcmp(e->shape, dst[i]->shape, (size_t)e->ndim * sizeof(int64_t)) != 0) {
            char a[160], b[160];
            return LFAIL(L, AD_ERR_SHAPE, "tensor '%s' has shape %s in the file, %s expected", names[i],
                         ad_shape_str(e->ndim, e->shape, a, sizeof a),
                         ad_shape_str(dst[i]->ndim, dst[i]->shape, b, sizeof b));
        }
        if (dst[i]->size > 0 && !dst[i]->data) return LFAIL(L, AD_ERR_ARG, "dst for '%s' has no data", names[i]);
    }
    for (size_t j = 0; j < L->nent; j++)
        if (!L->ent[j].used) return LFAIL(L, AD_ERR_FORMAT, "unexpected tensor '%s' in the file", L->ent[j].name);
    return AD_OK;
}

/* The data area, read whole (the plain reader stops here). */
static ad_status load_bytes(st_load *L)
{
    L->data = ad__malloc(L->data_size > 0 ? (size_t)L->data_size : 1);
    if (!L->data) return LFAIL(L, AD_ERR_NOMEM, "out of memory for %" PRId64 " data bytes", L->data_size);
    if (!read_all(L->fd, L->data, (size_t)L->data_size))
        return LFAIL(L, errno ? AD_ERR_IO : AD_ERR_FORMAT, "reading the data: %s",
                     errno ? strerror(errno) : "file shrank while reading");
    return AD_OK;
}

static ad_status load_data(st_load *L)
{
    ad_status st = load_bytes(L);
    if (st != AD_OK) return st;
    size_t plen = strlen(ST_SUM_PREFIX);
    char want[17];
    for (size_t j = 0; j < L->nent; j++) {
        char sumkey[512];
        const char *sum = NULL, *name = L->ent[j].name;
        if ((size_t)snprintf(sumkey, sizeof sumkey, "%s%s", ST_SUM_PREFIX, name) < sizeof sumkey)
            sum = json_string_value(json_object_get(L->md, sumkey));
        else {
            size_t kl = plen + strlen(name) + 1;
            char *kk = ad__malloc(kl);
            if (!kk) return LFAIL(L, AD_ERR_NOMEM, "out of memory");
            snprintf(kk, kl, "%s%s", ST_SUM_PREFIX, name);
            sum = json_string_value(json_object_get(L->md, kk));
            ad__free(kk);
        }
        if (!sum) return LFAIL(L, AD_ERR_FORMAT, "no checksum for tensor '%s'", name);
        hash_hex(XXH3_64bits(L->data + L->ent[j].begin, (size_t)(L->ent[j].end - L->ent[j].begin)), want);
        if (strcmp(sum, want) != 0)
            return LFAIL(L, AD_ERR_FORMAT, "checksum mismatch for tensor '%s': the file says %.20s, the data hashes to %s",
                         name, sum, want);
    }
    return AD_OK;
}

static void load_close(st_load *L)
{
    if (L->fd >= 0) close(L->fd);
    ad__free(L->hdr);
    ad__free(L->data);
    ad__free(L->ent);
    json_decref(L->root);
}

static void copy_out(const st_load *L, int n, const char *const *names, ad_tensor *const *dst)
{
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < L->nent; j++)
            if (strcmp(L->ent[j].name, names[i]) == 0) {
                if (L->ent[j].end > L->ent[j].begin)
                    memcpy(dst[i]->data, L->data + L->ent[j].begin, (size_t)(L->ent[j].end - L->ent[j].begin));
                break;
            }
}

static ad_status load_buf(const char *path, int n, const char *const *names, ad_tensor *const *dst, char *err,
                              size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    st_load L = {"nn_safetensors_load", path, err, errlen, -1, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL};
    ad_status st = load_args(&L, n, names, dst);
    if (st == AD_OK) st = load_open(&L);
    if (st == AD_OK) st = load_header(&L);
    if (st == AD_OK) st = load_table(&L);
    if (st == AD_OK) st = load_metadata(&L);
    if (st == AD_OK) st = load_match(&L, n, names, dst);
    if (st == AD_OK) st = load_data(&L);
    if (st == AD_OK) copy_out(&L, n, names, dst);
    load_close(&L);
    return st;
}

/* ---- the public entry points: the message goes into the caller's nn_error ---- */

ad_status nn_safetensors_save(const char *path, int n, const char *const *names, const ad_tensor *const *tensors,
                              int nmeta, const char *const *meta, nn_error *err)
{
    return nn__status(err, save_buf(path, n, names, tensors, nmeta, meta, NN__MSG(err)));
}

ad_status nn_safetensors_load(const char *path, int n, const char *const *names, ad_tensor *const *dst,
                              nn_error *err)
{
    return nn__status(err, load_buf(path, n, names, dst, NN__MSG(err)));
}

/* ---- plain files: the table and data of any safetensors file, metadata ignored (weights.c) ---- */

/* The table in the file's order of data (the entries tile the data area), names and bytes handed
** to out; the data buffer moves from L to out. */
static ad_status plain_out(st_load *L, nn__st_plain *out)
{
    size_t names = 0;
    for (size_t i = 0; i < L->nent; i++) names += strlen(L->ent[i].name) + 1;
    out->t = ad__calloc(L->nent + 1, sizeof *out->t);
    out->names = ad__malloc(names + 1);
    if (!out->t || !out->names) return LFAIL(L, AD_ERR_NOMEM, "out of memory");
    out->data = L->data;
    L->data = NULL;
    char *np = out->names;
    for (size_t i = 0; i < L->nent; i++) {
        nn__st_tensor *t = &out->t[i];
        size_t l = strlen(L->ent[i].name) + 1;
        memcpy(np, L->ent[i].name, l);
        t->name = np;
        np += l;
        t->dtype = L->ent[i].dtype;
        t->ndim = L->ent[i].ndim;
        memcpy(t->shape, L->ent[i].shape, sizeof t->shape);
        t->bytes = out->data + L->ent[i].begin;
    }
    out->n = (int)L->nent;
    return AD_OK;
}

/* The load's phases without metadata, matching or checksums: open, header, table, bytes. */
ad_status nn__safetensors_read_plain(const char *fn, const char *path, nn__st_plain *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    st_load L = {fn, path, err, errlen, -1, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL};
    ad_status st = path ? AD_OK : LFAIL(&L, AD_ERR_ARG, "NULL path");
    if (st == AD_OK && !ad__little_endian()) st = LFAIL(&L, AD_ERR_UNSUPPORTED, "big-endian hosts are not supported");
    if (st == AD_OK) st = load_open(&L);
    if (st == AD_OK) st = load_header(&L);
    if (st == AD_OK) st = load_table(&L);
    if (st == AD_OK) st = load_bytes(&L);
    if (st == AD_OK) st = plain_out(&L, out);
    load_close(&L);
    if (st != AD_OK) nn__safetensors_plain_free(out);
    return st;
}

void nn__safetensors_plain_free(nn__st_plain *p)
{
    ad__free(p->t);
    ad__free(p->names);
    ad__free(p->data);
    memset(p, 0, sizeof *p);
}

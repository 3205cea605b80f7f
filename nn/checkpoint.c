/* checkpoint.c: nn_save/nn_load, a module's parameters, optimizer state and RNG state as one safetensors file. */
#include "nn_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#define RNG_NAME "rng.state"
#define RNG_LEN 10
#define HEADER_CAP (100u << 20) /* the same cap as the file layer's */

/* The RNG's state as F64 values, all exact: 8 32-bit halves (high first), has_spare, spare. */
static void rng_to(const ad_rng *r, double *d)
{
    for (int k = 0; k < 4; k++) {
        d[2 * k] = (double)(r->s[k] >> 32);
        d[2 * k + 1] = (double)(r->s[k] & 0xffffffffu);
    }
    d[8] = r->has_spare_ ? 1.0 : 0.0;
    d[9] = r->spare_;
}

/* The inverse of rng_to; false when d is not a state rng_to could have written. */
static bool rng_from(const double *d, ad_rng *r)
{
    ad_rng out = {{0}, 0.0, 0};
    for (int k = 0; k < 8; k++)
        if (!(d[k] >= 0 && d[k] <= 4294967295.0 && d[k] == floor(d[k]))) return false;
    if (d[8] != 0.0 && d[8] != 1.0) return false;
    if (!isfinite(d[9])) return false;
    for (int k = 0; k < 4; k++) out.s[k] = ((uint64_t)d[2 * k] << 32) | (uint64_t)d[2 * k + 1];
    if (!(out.s[0] | out.s[1] | out.s[2] | out.s[3])) return false; /* xoshiro's one forbidden state */
    out.has_spare_ = d[8] != 0.0;
    out.spare_ = d[9];
    *r = out;
    return true;
}

/* The named tensors of a checkpoint: parameters, optimizer state, the RNG tensor. */
typedef struct entries {
    int n;
    const char **names;
    ad_tensor **t;
} entries;

static bool entries_alloc(entries *e, int cap)
{
    e->n = 0;
    e->names = ad__calloc((size_t)cap, sizeof *e->names);
    e->t = ad__calloc((size_t)cap, sizeof *e->t);
    return e->names && e->t;
}

static void entries_free(entries *e)
{
    ad__free(e->names);
    ad__free(e->t);
}

ad_status nn_save(const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, nn_error *err)
{
    return nn_save_meta(path, m, opt, rng, 0, NULL, err);
}

#define OWN_META 2 /* the pairs nn_save writes itself: "optimizer", "model" */

ad_status nn_save_meta(const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, int nmeta,
                       const char *const *meta, nn_error *err)
{
    if (!path || !m) return nn_error_set(err, AD_ERR_ARG, "nn_save: NULL %s", path ? "module" : "path");
    if (nmeta < 0 || nmeta > 64 || (nmeta && !meta))
        return nn_error_set(err, AD_ERR_ARG, "nn_save: %d metadata pairs%s (0 to 64)", nmeta,
                            nmeta > 0 && !meta ? " in a NULL array" : "");
    for (int i = 0; i < nmeta; i++) {
        if (!meta[2 * i] || !meta[2 * i + 1])
            return nn_error_set(err, AD_ERR_ARG, "nn_save: metadata pair #%d has a NULL string", i);
        if (strcmp(meta[2 * i], "optimizer") == 0 || strcmp(meta[2 * i], "model") == 0)
            return nn_error_set(err, AD_ERR_ARG, "nn_save: metadata key '%s' is nn_save's own", meta[2 * i]);
    }
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    entries e;
    ad_tensor *rt = NULL;
    ad_status st = AD_OK;
    if (!entries_alloc(&e, np + nn__optim_state_count(opt) + 1)) {
        st = nn_error_set(err, AD_ERR_NOMEM, "nn_save: out of memory");
        goto done;
    }
    for (int i = 0; i < np; i++) {
        e.names[e.n] = ps[i].name;
        e.t[e.n++] = ps[i].value;
    }
    e.n += nn__optim_state(opt, e.names + e.n, e.t + e.n);
    if (rng) {
        if (!(rt = ad_tensor_new(AD_F64, AD_SHAPE(RNG_LEN)))) {
            st = nn_error_set(err, AD_ERR_NOMEM, "nn_save: out of memory");
            goto done;
        }
        rng_to(rng, rt->data);
        e.names[e.n] = RNG_NAME;
        e.t[e.n++] = rt;
    }
    const char *all[2 * (OWN_META + 64)] = {"optimizer", nn_optim_name(opt), "model", nn_module_kind(m)};
    if (nmeta) memcpy(all + 2 * OWN_META, meta, 2 * (size_t)nmeta * sizeof *meta);
    st = nn_safetensors_save(path, e.n, e.names, (const ad_tensor *const *)e.t, OWN_META + nmeta, all, err);
done:
    ad_tensor_free(rt);
    entries_free(&e);
    return st;
}

/* Reads the JSON header of a safetensors file (the file layer validates it
** fully again when loading; here only the table of names is needed). */
static ad_status read_header(const char *fn, const char *path, json_t **root, nn_error *err)
{
    int fd;
    uint64_t fsize;
    ad_status ost = ad__open_read(fn, path, &fd, &fsize, NN__MSG(err)); /* never blocks on a FIFO */
    if (ost != AD_OK) return nn__status(err, ost);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return nn_error_set(err, AD_ERR_NOMEM, "%s: %s: fdopen: %s", fn, path, strerror(errno));
    }
    unsigned char len8[8];
    char *buf = NULL;
    ad_status st = AD_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = nn_error_set(err, AD_ERR_IO, "%s: cannot seek in %s", fn, path);
        goto done;
    }
    if (fread(len8, 1, 8, f) != 8) {
        st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: truncated header length", fn, path);
        goto done;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
    if (n == 0 || n > HEADER_CAP || n > (uint64_t)size - 8) {
        st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: header length %llu does not fit the file (%ld bytes)", fn,
                     path, (unsigned long long)n, size);
        goto done;
    }
    if (!(buf = ad__malloc((size_t)n))) {
        st = nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
        goto done;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: truncated header", fn, path);
        goto done;
    }
    json_error_t je;
    *root = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!*root || !json_is_object(*root)) {
        st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: the header is not a JSON object: %s", fn, path,
                     *root ? "another JSON value" : je.text);
        json_decref(*root);
        *root = NULL;
    }
done:
    ad__free(buf);
    fclose(f);
    return st;
}

ad_status nn_checkpoint_meta(const char *path, const char *key, char *buf, size_t n, nn_error *err)
{
    if (buf && n) buf[0] = '\0';
    if (!path || !key || !buf || !n)
        return nn_error_set(err, AD_ERR_ARG, "nn_checkpoint_meta: NULL path, key or buffer, or size 0");
    json_t *root = NULL;
    ad_status st = read_header("nn_checkpoint_meta", path, &root, err);
    if (st != AD_OK) return st;
    json_t *md = json_object_get(root, "__metadata__"), *v = json_object_get(md, key);
    const char *s = json_string_value(v);
    if (!json_is_object(md))
        st = nn_error_set(err, AD_ERR_FORMAT, "nn_checkpoint_meta: %s has no __metadata__: not a checkpoint", path);
    else if (!v)
        st = nn_error_set(err, AD_ERR_INDEX, "nn_checkpoint_meta: %s has no metadata '%s'", path, key);
    else if (!s)
        st = nn_error_set(err, AD_ERR_FORMAT, "nn_checkpoint_meta: %s: metadata '%s' is not a string", path, key);
    else if (strlen(s) >= n)
        st = nn_error_set(err, AD_ERR_ARG, "nn_checkpoint_meta: %s: metadata '%s' has %zu bytes, the buffer %zu", path,
                          key, strlen(s) + 1, n);
    else
        memcpy(buf, s, strlen(s) + 1);
    json_decref(root);
    return st;
}

/* A zeroed tensor with the dtype and shape a header entry declares, for state
** the caller did not ask for (read and dropped); NULL when the entry is bad or
** memory is short (the file layer then reports a bad entry precisely). */
static ad_tensor *tensor_like_entry(json_t *entry)
{
    const char *dt = json_string_value(json_object_get(entry, "dtype"));
    json_t *shape = json_object_get(entry, "shape");
    if (!dt || !json_is_array(shape) || json_array_size(shape) > AD_MAX_DIMS) return NULL;
    ad_dtype dtype;
    if (strcmp(dt, "F32") == 0) dtype = AD_F32;
    else if (strcmp(dt, "F64") == 0) dtype = AD_F64;
    else return NULL;
    int64_t dims[AD_MAX_DIMS], size = 1;
    int nd = (int)json_array_size(shape);
    for (int i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) return NULL;
        dims[i] = json_integer_value(d);
        if (!ad__mul_ok(size, dims[i], &size) || size > ((int64_t)1 << 40)) return NULL;
    }
    return ad_tensor_new(dtype, nd, dims);
}

/* Every value read for the caller's objects (parameters, buffers, optimizer state) is finite: a NaN or
** Inf weight would otherwise train and evaluate to NaN without a word. */
static ad_status check_finite(const char *path, const entries *want, const entries *tmp, nn_error *err)
{
    for (int i = 0; i < want->n; i++) {
        const ad_tensor *t = tmp->t[i];
        if (!want->t[i] || ad__all_finite(t)) continue; /* (NULL: the generator, or state read and dropped) */
        int64_t k = 0;
        while (k < t->size && isfinite(ad_tensor_get(t, k))) k++;
        return nn_error_set(err, AD_ERR_NUMERIC,
                            "nn_load: %s: \"%s\" holds %g at element %lld (refused; NN_LOAD_ALLOW_NONFINITE loads it)",
                            path, want->names[i], ad_tensor_get(t, k), (long long)k);
    }
    return AD_OK;
}

ad_status nn_load(const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, nn_error *err)
{
    return nn_load_ex(path, m, opt, rng, 0, err);
}

ad_status nn_load_ex(const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, unsigned flags, nn_error *err)
{
    if (!path || !m) return nn_error_set(err, AD_ERR_ARG, "nn_load: NULL %s", path ? "module" : "path");
    json_t *root = NULL;
    ad_status st = read_header("nn_load", path, &root, err);
    if (st != AD_OK) return st;
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    int nopt = nn__optim_state_count(opt);
    int cap = np + nopt + 1 + (int)json_object_size(root);
    entries want, tmp; /* where each tensor belongs, and the scratch copy it is read into */
    bool ok = entries_alloc(&want, cap);
    ok = entries_alloc(&tmp, cap) && ok; /* both always run, so both can be freed */
    int rng_at = -1;
    if (!ok) goto nomem;

    /* the optimizer kind must match the one that wrote the state */
    json_t *meta = json_object_get(root, "__metadata__");
    const char *kind = json_string_value(json_object_get(meta, "optimizer"));
    if (opt && kind && strcmp(kind, nn_optim_name(opt)) != 0) {
        st = nn_error_set(err, AD_ERR_FORMAT, "nn_load: %s was saved with optimizer \"%s\", not %s", path, kind,
                     nn_optim_name(opt));
        goto done;
    }
    for (int i = 0; i < np; i++) {
        want.names[want.n] = ps[i].name;
        want.t[want.n++] = ps[i].value;
    }
    int base = want.n, nst = nn__optim_state(opt, want.names + base, want.t + base);
    for (int i = 0; i < nst; i++) /* state newer than the file (Adam's per-parameter steps) is filled in */
        if (!nn__optim_state_absent(opt, want.names[base + i], !json_object_get(root, want.names[base + i])))
            want.names[want.n] = want.names[base + i], want.t[want.n++] = want.t[base + i];
    if (rng || json_object_get(root, RNG_NAME)) {
        rng_at = want.n;
        want.names[want.n] = RNG_NAME;
        want.t[want.n++] = NULL; /* read into scratch only */
    }
    /* state the caller did not ask for is read and dropped */
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (opt || strncmp(key, "optim.", 6) != 0) continue;
        ad_tensor *t = tensor_like_entry(val);
        if (!t) {
            st = nn_error_set(err, AD_ERR_FORMAT, "nn_load: %s: bad or oversized entry \"%s\"", path, key);
            goto done;
        }
        tmp.t[want.n] = t;
        want.names[want.n] = key;
        want.t[want.n++] = NULL;
    }
    for (int i = 0; i < want.n; i++) {
        if (tmp.t[i]) continue;
        if (i == rng_at) tmp.t[i] = ad_tensor_new(AD_F64, AD_SHAPE(RNG_LEN));
        else tmp.t[i] = ad_tensor_new(want.t[i]->dtype, want.t[i]->ndim, want.t[i]->shape);
        if (!tmp.t[i]) goto nomem;
    }
    tmp.n = want.n;
    st = nn_safetensors_load(path, want.n, want.names, tmp.t, err);
    if (st == AD_ERR_SHAPE || st == AD_ERR_DTYPE) st = nn__status(err, AD_ERR_FORMAT); /* a checkpoint of another model */
    if (st != AD_OK) goto done;
    ad_rng r = {{0}, 0.0, 0};
    if (rng_at >= 0 && !rng_from(tmp.t[rng_at]->data, &r)) {
        st = nn_error_set(err, AD_ERR_FORMAT, "nn_load: %s: \"%s\" is not a generator state", path, RNG_NAME);
        goto done;
    }
    if (!(flags & NN_LOAD_ALLOW_NONFINITE) && (st = check_finite(path, &want, &tmp, err)) != AD_OK) goto done;
    /* everything checked: only now the caller's objects change */
    for (int i = 0; i < want.n; i++)
        if (want.t[i]) {
            memcpy(want.t[i]->data, tmp.t[i]->data, ad__nbytes(want.t[i]));
            ad_tensor_bump_version(want.t[i]);
        }
    nn__optim_sync_step(opt);
    if (rng) *rng = r;
    goto done;
nomem:
    st = nn_error_set(err, AD_ERR_NOMEM, "nn_load: out of memory");
done:
    for (int i = 0; tmp.t && i < cap; i++) ad_tensor_free(tmp.t[i]);
    entries_free(&want);
    entries_free(&tmp);
    json_decref(root);
    return st;
}

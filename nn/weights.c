/* weights.c: a module's parameters from and to plain safetensors files, by name (PyTorch state_dicts and the like). */
#include "nn_internal.h"

#include <stdio.h>

/* Appends ", item" (or "item" first) to a bounded list, "..." once it is full. */
static void list_add(char *buf, size_t cap, int *count, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void list_add(char *buf, size_t cap, int *count, const char *fmt, ...)
{
    size_t len = strlen(buf);
    (*count)++;
    if (len + 8 >= cap) return;
    char item[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(item, sizeof item, fmt, ap);
    va_end(ap);
    if (len + strlen(item) + 3 + 4 >= cap) {
        if (!strstr(buf, "...")) snprintf(buf + len, cap - len, "%s...", len ? ", " : "");
        return;
    }
    snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", item);
}

/* Element i of a file tensor's little-endian bytes, as a double. */
static double file_get(const nn__st_tensor *t, int64_t i)
{
    if (t->dtype == AD_F64) {
        double d;
        memcpy(&d, t->bytes + (size_t)i * 8, 8);
        return d;
    }
    float f;
    memcpy(&f, t->bytes + (size_t)i * 4, 4);
    return f;
}

ad_status nn_load_weights(nn_module *m, const char *path, nn_name_map_fn map, void *ctx, nn_error *err)
{
    static const char fn[] = "nn_load_weights";
    NN__ERR_OR_LOCAL(err);
    if (!m || !path) return nn_error_set(err, AD_ERR_ARG, "%s: NULL module or path", fn);
    nn__st_plain f;
    ad_status st = nn__status(err, nn__safetensors_read_plain(fn, path, &f, NN__MSG(err)));
    if (st != AD_OK) return st;
    nn_param *ps;
    int np = nn_module_params(m, &ps);
    int *src = ad__malloc(((size_t)np + 1) * sizeof *src); /* per param: the file tensor filling it, or -1 */
    if (!src) {
        nn__safetensors_plain_free(&f);
        return nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (int p = 0; p < np; p++) src[p] = -1;
    char unexpected[160] = "", shaped[200] = "", missing[160] = "";
    int nu = 0, ns = 0, nm = 0;
    for (int i = 0; i < f.n && st == AD_OK; i++) {
        char name[256];
        const char *want = f.t[i].name;
        if (map) {
            name[0] = '\0';
            if (!map(f.t[i].name, name, sizeof name, ctx)) continue; /* ignored by the caller */
            name[sizeof name - 1] = '\0';
            want = name;
        }
        nn_param *p = nn_module_param(m, want);
        if (!p) {
            list_add(unexpected, sizeof unexpected, &nu, "%s", f.t[i].name);
            continue;
        }
        int k = (int)(p - ps);
        if (src[k] >= 0)
            st = nn_error_set(err, AD_ERR_FORMAT, "%s: %s: '%s' and '%s' both map to parameter '%s'", fn, path,
                              f.t[src[k]].name, f.t[i].name, want);
        src[k] = i;
        const ad_tensor *v = p->value;
        if (f.t[i].ndim != v->ndim || memcmp(f.t[i].shape, v->shape, (size_t)v->ndim * sizeof *v->shape) != 0) {
            char a[96], b[96];
            list_add(shaped, sizeof shaped, &ns, "%s %s, %s expected", f.t[i].name,
                     ad_shape_str(f.t[i].ndim, f.t[i].shape, a, sizeof a), ad_shape_str(v->ndim, v->shape, b, sizeof b));
        }
    }
    for (int p = 0; p < np && st == AD_OK; p++)
        if (src[p] < 0) list_add(missing, sizeof missing, &nm, "%s", ps[p].name);
    if (st == AD_OK && (nu || ns || nm)) {
        char msg[600];
        int at = snprintf(msg, sizeof msg, "%s: %s: ", fn, path);
        if (nm) at += snprintf(msg + at, sizeof msg - (size_t)at, "%d missing (%s)%s", nm, missing, nu || ns ? "; " : "");
        if (ns && at < (int)sizeof msg)
            at += snprintf(msg + at, sizeof msg - (size_t)at, "%d mis-shaped (%s)%s", ns, shaped, nu ? "; " : "");
        if (nu && at < (int)sizeof msg) snprintf(msg + at, sizeof msg - (size_t)at, "%d unexpected (%s)", nu, unexpected);
        st = nn_error_set(err, nm || nu ? AD_ERR_FORMAT : AD_ERR_SHAPE, "%s", msg);
    }
    /* everything matched: only now is the module written (F32 and F64 convert either way) */
    for (int p = 0; p < np && st == AD_OK; p++) {
        const nn__st_tensor *t = &f.t[src[p]];
        ad_tensor *v = ps[p].value;
        if (t->dtype == v->dtype) {
            memcpy(v->data, t->bytes, ad__nbytes(v));
            ad_tensor_bump_version(v);
        } else
            for (int64_t i = 0; i < v->size; i++) ad_tensor_set(v, i, file_get(t, i));
    }
    ad__free(src);
    nn__safetensors_plain_free(&f);
    return st;
}

ad_status nn_save_weights(nn_module *m, const char *path, nn_name_map_fn map, void *ctx, nn_error *err)
{
    static const char fn[] = "nn_save_weights";
    NN__ERR_OR_LOCAL(err);
    if (!m || !path) return nn_error_set(err, AD_ERR_ARG, "%s: NULL module or path", fn);
    nn_param *ps;
    int np = nn_module_params(m, &ps), n = 0;
    const char **names = ad__calloc((size_t)np + 1, sizeof *names);
    const ad_tensor **ts = ad__calloc((size_t)np + 1, sizeof *ts);
    char *buf = ad__malloc((size_t)np * 256 + 1);
    ad_status st = AD_OK;
    if (!names || !ts || !buf) st = nn_error_set(err, AD_ERR_NOMEM, "%s: out of memory", fn);
    for (int p = 0; p < np && st == AD_OK; p++) {
        char *name = buf + (size_t)p * 256;
        if (map) {
            name[0] = '\0';
            if (!map(ps[p].name, name, 256, ctx)) continue; /* left out by the caller */
            name[255] = '\0';
        } else
            snprintf(name, 256, "%s", ps[p].name);
        names[n] = name;
        ts[n++] = ps[p].value;
    }
    if (st == AD_OK) st = nn_safetensors_save(path, n, names, ts, 0, NULL, err);
    ad__free(names);
    ad__free(ts);
    ad__free(buf);
    return st;
}

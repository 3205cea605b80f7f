/* fuzz_roundtrip.c: load -> save -> load must give back the same bits, and saving again the same file (first byte picks .npy, safetensors or checkpoint). */
#include "fuzz.h"

#include <string.h>

#include "fuzz_schemas.h"
#include "nn.h"

const char fz_target[] = "roundtrip";

static bool same_tensor(const ad_tensor *a, const ad_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim || a->size != b->size) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return a->size == 0 || memcmp(a->data, b->data, (size_t)a->size * ad_dtype_size(a->dtype)) == 0;
}

static bool same_file(const char *p, const char *q)
{
    size_t n, m;
    uint8_t *a = fz_read_file(p, &n), *b = fz_read_file(q, &m);
    bool same = a && b && n == m && memcmp(a, b, n) == 0;
    free(a);
    free(b);
    return same;
}

static void npy_roundtrip(const uint8_t *data, size_t size)
{
    const char *in = fz_file(0, data, size), *dir = fz_dir();
    if (!in || !dir) return;
    ad_tensor *t = NULL, *t2 = NULL;
    char err[256], p1[512], p2[512];
    if (ad_npy_load(in, &t, err, sizeof err) != AD_OK) return;
    snprintf(p1, sizeof p1, "%s/rt1.npy", dir);
    snprintf(p2, sizeof p2, "%s/rt2.npy", dir);
    FZ_CHECK(ad_npy_save(p1, t, err, sizeof err) == AD_OK);
    FZ_CHECK(ad_npy_load(p1, &t2, err, sizeof err) == AD_OK);
    FZ_CHECK(same_tensor(t, t2));
    FZ_CHECK(ad_npy_save(p2, t2, err, sizeof err) == AD_OK);
    FZ_CHECK(same_file(p1, p2));
    ad_tensor_free(t);
    ad_tensor_free(t2);
    fz_dir_clean();
}

static void safetensors_roundtrip(const uint8_t *data, size_t size)
{
    const char *in = fz_file(0, data, size), *dir = fz_dir();
    if (!in || !dir) return;
    nn_error err;
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/rt1.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/rt2.safetensors", dir);
    for (int k = 0; k < FZ_NSCHEMAS; k++) {
        const fz_schema *sc = &fz_schemas[k];
        ad_tensor *a[FZ_SCHEMA_MAX], *b[FZ_SCHEMA_MAX];
        for (int i = 0; i < sc->n; i++) {
            a[i] = fz_schema_tensor(sc, i);
            b[i] = fz_schema_tensor(sc, i);
        }
        if (nn_safetensors_load(in, sc->n, sc->names, a, &err) == AD_OK) {
            FZ_CHECK(nn_safetensors_save(p1, sc->n, sc->names, (const ad_tensor *const *)a, 0, NULL, &err) == AD_OK);
            FZ_CHECK(nn_safetensors_load(p1, sc->n, sc->names, b, &err) == AD_OK);
            for (int i = 0; i < sc->n; i++) FZ_CHECK(same_tensor(a[i], b[i]));
            FZ_CHECK(nn_safetensors_save(p2, sc->n, sc->names, (const ad_tensor *const *)b, 0, NULL, &err) == AD_OK);
            FZ_CHECK(same_file(p1, p2));
            fz_dir_clean();
        }
        for (int i = 0; i < sc->n; i++) {
            ad_tensor_free(a[i]);
            ad_tensor_free(b[i]);
        }
    }
}

static void checkpoint_roundtrip(const uint8_t *data, size_t size)
{
    const char *in = fz_file(0, data, size), *dir = fz_dir();
    if (!in || !dir) return;
    nn_error err;
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/rt1.ckpt", dir);
    snprintf(p2, sizeof p2, "%s/rt2.ckpt", dir);
    nn_module *m, *m2;
    nn_optim *o, *o2;
    ad_rng r, r2;
    fz_checkpoint_model(&m, &o, &r);
    fz_checkpoint_model(&m2, &o2, &r2);
    if (nn_load(in, m, o, &r, &err) == AD_OK) {
        FZ_CHECK(nn_save(p1, m, o, &r, &err) == AD_OK);
        FZ_CHECK(nn_load(p1, m2, o2, &r2, &err) == AD_OK);
        FZ_CHECK(fz_params_hash(m) == fz_params_hash(m2));
        FZ_CHECK(nn_optim_steps(o) == nn_optim_steps(o2));
        FZ_CHECK(memcmp(r.s, r2.s, sizeof r.s) == 0 && r.has_spare_ == r2.has_spare_);
        FZ_CHECK(!r.has_spare_ || memcmp(&r.spare_, &r2.spare_, sizeof r.spare_) == 0);
        FZ_CHECK(nn_save(p2, m2, o2, &r2, &err) == AD_OK);
        FZ_CHECK(same_file(p1, p2));
        fz_dir_clean();
    }
    nn_optim_free(o);
    nn_optim_free(o2);
    nn_module_free(m);
    nn_module_free(m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0: npy_roundtrip(data + 1, size - 1); break;
    case 1: safetensors_roundtrip(data + 1, size - 1); break;
    default: checkpoint_roundtrip(data + 1, size - 1); break;
    }
    return 0;
}

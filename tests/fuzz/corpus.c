/* corpus.c: the built-in seed inputs of every fuzz target: valid files from the library's writers and hand-made variants. */
#include "fuzz.h"

#include <string.h>

#include "ad.h"

/* ---- .npy ---- */

/* A hand-made .npy: version major, header dict text, then `data` (nd bytes). */
static void npy_raw(fz_buf *b, int major, const char *dict, const void *data, size_t nd)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64, hl = total - pre;
    fz_put_str(b, "\x93NUMPY");
    fz_put_u8(b, (unsigned)major);
    fz_put_u8(b, 0);
    if (major == 1) {
        fz_put_u8(b, hl & 0xff);
        fz_put_u8(b, (hl >> 8) & 0xff);
    } else {
        fz_put_le32(b, (uint32_t)hl);
    }
    fz_put_str(b, dict);
    for (size_t i = dl; i + 1 < hl; i++) fz_put_u8(b, ' ');
    fz_put_u8(b, '\n');
    fz_put(b, data, nd);
}

/* Emits the file ad_npy_save writes for t. */
static void npy_saved(fz_emit_fn emit, void *ctx, const char *name, ad_tensor *t)
{
    const char *dir = fz_dir();
    if (!dir || !t) abort();
    char path[512];
    snprintf(path, sizeof path, "%s/seed.npy", dir);
    if (ad_npy_save(path, t, NULL, 0) != AD_OK) abort();
    fz_emit_file(emit, ctx, name, path);
    ad_tensor_free(t);
}

static ad_tensor *ramp(ad_dtype dt, int ndim, const int64_t *shape)
{
    ad_tensor *t = ad_tensor_new(dt, ndim, shape);
    if (!t) abort();
    for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, 0.25 * (double)i - 1.0);
    return t;
}

static void seeds_npy(fz_emit_fn emit, void *ctx)
{
    npy_saved(emit, ctx, "f32-2x3", ramp(AD_F32, AD_SHAPE(2, 3)));
    npy_saved(emit, ctx, "f64-4", ramp(AD_F64, AD_SHAPE(4)));
    npy_saved(emit, ctx, "f64-scalar", ramp(AD_F64, AD_SCALAR_SHAPE));
    npy_saved(emit, ctx, "f32-empty", ramp(AD_F32, AD_SHAPE(0, 3)));
    npy_saved(emit, ctx, "f32-2x1x2x1x2", ramp(AD_F32, AD_SHAPE(2, 1, 2, 1, 2)));
    fz_buf b = {0};
    static const uint8_t bytes[16] = {1, 0, 2, 0, 0xff, 0xff, 0, 0x80, 7, 0, 0, 0, 0, 0, 0, 0x40};
    npy_raw(&b, 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), }", bytes, 8);
    fz_emit_buf(emit, ctx, "i2", &b);
    npy_raw(&b, 1, "{'descr': '>u4', 'fortran_order': False, 'shape': (4,), }", bytes, 16);
    fz_emit_buf(emit, ctx, "u4-big", &b);
    npy_raw(&b, 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", bytes, 3);
    fz_emit_buf(emit, ctx, "bool", &b);
    npy_raw(&b, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (16,), }", bytes, 16);
    fz_emit_buf(emit, ctx, "u1", &b);
    npy_raw(&b, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", bytes, 16);
    fz_emit_buf(emit, ctx, "i8", &b);
    npy_raw(&b, 2, "{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }", bytes, 16);
    fz_emit_buf(emit, ctx, "f8-big-v2", &b);
    npy_raw(&b, 3, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 2), }", bytes, 16);
    fz_emit_buf(emit, ctx, "f4-v3", &b);
    npy_raw(&b, 1, "{'shape': (), 'fortran_order': False, 'descr': '<f8'}", bytes, 8);
    fz_emit_buf(emit, ctx, "keys-reordered", &b);
    npy_raw(&b, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", bytes, 16);
    fz_emit_buf(emit, ctx, "fortran", &b);
}

/* ---- dispatch ---- */

#ifdef FZ_WITH_NN
/* corpus_nn.c: the targets of libautodiff-nn's formats. */
void fz_seeds_nn(const char *target, fz_emit_fn emit, void *ctx);
#endif

void fz_seeds(const char *target, fz_emit_fn emit, void *ctx)
{
    if (strcmp(target, "npy") == 0) seeds_npy(emit, ctx);
#ifdef FZ_WITH_NN
    else fz_seeds_nn(target, emit, ctx);
#endif
}

/* corpus_nn.c: seed inputs of the fuzz targets for libautodiff-nn's formats (IDX, CSV, safetensors, checkpoints) and the round trip. */
#include "fuzz.h"

#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fuzz_schemas.h"
#include "nn.h"

void fz_seeds_nn(const char *target, fz_emit_fn emit, void *ctx);

/* ---- IDX pairs: input = u32 LE length of the image file, the image file, the label file ---- */

static void idx_pair(fz_emit_fn emit, void *ctx, const char *name, uint32_t n, uint32_t rows, uint32_t cols,
                     uint32_t label_n, uint32_t img_magic, int extra)
{
    fz_buf img = {0}, lab = {0}, b = {0};
    fz_put_be32(&img, img_magic);
    fz_put_be32(&img, n);
    fz_put_be32(&img, rows);
    fz_put_be32(&img, cols);
    for (uint32_t i = 0; i < n * rows * cols; i++) fz_put_u8(&img, (i * 37u) & 0xff);
    for (int i = 0; i < extra; i++) fz_put_u8(&img, 0);
    fz_put_be32(&lab, 0x00000801);
    fz_put_be32(&lab, label_n);
    for (uint32_t i = 0; i < label_n; i++) fz_put_u8(&lab, i % 10);
    fz_put_le32(&b, (uint32_t)img.n);
    fz_put(&b, img.p, img.n);
    fz_put(&b, lab.p, lab.n);
    free(img.p);
    free(lab.p);
    fz_emit_buf(emit, ctx, name, &b);
}

/* Gzips b's bytes (through a file in fz_dir, zlib's gz writer) into out. */
static void gzip_buf(const fz_buf *b, fz_buf *out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/seed.gz", fz_dir());
    gzFile g = gzopen(path, "wb9");
    if (!g || (b->n && gzwrite(g, b->p, (unsigned)b->n) != (int)b->n) || gzclose(g) != Z_OK) abort();
    size_t n;
    uint8_t *d = fz_read_file(path, &n);
    if (!d) abort();
    fz_put(out, d, n);
    free(d);
    unlink(path);
}

static void idx_gz_pair(fz_emit_fn emit, void *ctx, const char *name, int gz_images)
{
    fz_buf img = {0}, lab = {0}, zimg = {0}, zlab = {0}, b = {0};
    fz_put_be32(&img, 0x00000803);
    fz_put_be32(&img, 4);
    fz_put_be32(&img, 3);
    fz_put_be32(&img, 3);
    for (unsigned i = 0; i < 36; i++) fz_put_u8(&img, i < 18 ? 0 : 200);
    fz_put_be32(&lab, 0x00000801);
    fz_put_be32(&lab, 4);
    for (unsigned i = 0; i < 4; i++) fz_put_u8(&lab, i);
    if (gz_images) gzip_buf(&img, &zimg);
    else fz_put(&zimg, img.p, img.n);
    gzip_buf(&lab, &zlab);
    fz_put_le32(&b, (uint32_t)zimg.n);
    fz_put(&b, zimg.p, zimg.n);
    fz_put(&b, zlab.p, zlab.n);
    free(img.p);
    free(lab.p);
    free(zimg.p);
    free(zlab.p);
    fz_emit_buf(emit, ctx, name, &b);
}

static void seeds_idx(fz_emit_fn emit, void *ctx)
{
    idx_pair(emit, ctx, "3x4x4", 3, 4, 4, 3, 0x00000803, 0);
    idx_pair(emit, ctx, "1x1x1", 1, 1, 1, 1, 0x00000803, 0);
    idx_pair(emit, ctx, "10x2x3", 10, 2, 3, 10, 0x00000803, 0);
    idx_pair(emit, ctx, "count-mismatch", 2, 2, 2, 3, 0x00000803, 0);
    idx_pair(emit, ctx, "trailing", 2, 2, 2, 2, 0x00000803, 3);
    idx_pair(emit, ctx, "bad-magic", 2, 2, 2, 2, 0x00000903, 0);
    /* gzipped, as Fashion-MNIST ships: both files, then only the labels */
    idx_gz_pair(emit, ctx, "gz-both", 1);
    idx_gz_pair(emit, ctx, "gz-labels", 0);
}

/* ---- CSV: input = a flags byte (bits 0-2: label column + 4, so -4 .. 3; bit 3: header line), then the text ---- */

static void csv_seed(fz_emit_fn emit, void *ctx, const char *name, int label_col, int header, const char *text)
{
    fz_buf b = {0};
    fz_put_u8(&b, (unsigned)((label_col + 4) & 7) | (header ? 8u : 0u));
    fz_put_str(&b, text);
    fz_emit_buf(emit, ctx, name, &b);
}

static void seeds_csv(fz_emit_fn emit, void *ctx)
{
    csv_seed(emit, ctx, "iris-like", -1, 1,
             "sepal_length,sepal_width,petal_length,petal_width,species\n"
             "5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,0\n7.0,3.2,4.7,1.4,1\n6.3,3.3,6.0,2.5,2\n");
    csv_seed(emit, ctx, "label-first", 0, 0, "1,0.5,-2e3\r\n0, 1.25 ,\t3\r\n\r\n2,1e-3,4.0\r\n");
    csv_seed(emit, ctx, "two-cols", 1, 0, "0.5,1\n-0.25,0\n");
    csv_seed(emit, ctx, "label-float", -1, 0, "1,2,3.0\n4,5,1.0\n");
    csv_seed(emit, ctx, "ragged", -1, 0, "1,2,3\n4,5\n");
    csv_seed(emit, ctx, "nan", -1, 0, "nan,1\ninf,0\n1e400,1\n");
    csv_seed(emit, ctx, "big-label", -2, 0, "0.1,16777215,7\n0.2,3,8\n");
}

/* ---- safetensors: one file per schema from the library's writer, plus variants ---- */

static void st_saved(fz_emit_fn emit, void *ctx, const char *name, int k, int nmeta, const char *const *meta)
{
    const fz_schema *sc = &fz_schemas[k];
    ad_tensor *t[FZ_SCHEMA_MAX];
    for (int i = 0; i < sc->n; i++) {
        t[i] = fz_schema_tensor(sc, i);
        for (int64_t j = 0; j < t[i]->size; j++) ad_tensor_set(t[i], j, 0.5 * (double)j - (double)i);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/seed.safetensors", fz_dir());
    if (nn_safetensors_save(path, sc->n, sc->names, (const ad_tensor *const *)t, nmeta, meta, NULL) != AD_OK)
        abort();
    fz_emit_file(emit, ctx, name, path);
    for (int i = 0; i < sc->n; i++) ad_tensor_free(t[i]);
}

static void seeds_safetensors(fz_emit_fn emit, void *ctx)
{
    static const char *const meta[4] = {"epoch", "3", "note", "caf\xc3\xa9 \"quoted\" \\ line\nbreak"};
    for (int k = 0; k < FZ_NSCHEMAS; k++) {
        char name[32];
        snprintf(name, sizeof name, "schema%d", k);
        st_saved(emit, ctx, name, k, 0, NULL);
        snprintf(name, sizeof name, "schema%d-meta", k);
        st_saved(emit, ctx, name, k, 2, meta);
    }
    /* hand-made: no metadata at all (a file another writer could produce) */
    static const char json[] = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    fz_buf b = {0};
    fz_put_le64(&b, sizeof json - 1);
    fz_put_str(&b, json);
    fz_put(&b, "\0\0\x80\x3f", 4);
    fz_emit_buf(emit, ctx, "no-metadata", &b);
}

/* ---- checkpoints: nn_save of the target's model with Adam state, after a few steps ---- */

static void seeds_checkpoint(fz_emit_fn emit, void *ctx)
{
    nn_module *m;
    nn_optim *o;
    ad_rng rng;
    fz_checkpoint_model(&m, &o, &rng);
    char path[512];
    snprintf(path, sizeof path, "%s/seed.ckpt", fz_dir());
    if (nn_save(path, m, o, &rng, NULL) != AD_OK) abort();
    fz_emit_file(emit, ctx, "adam-step0", path);
    /* one training step, so that the Adam moments are non-zero */
    ad_tape *t = ad_tape_new();
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(2, 4));
    if (!t || !x) abort();
    ad_rng_fill_uniform(&rng, x, -1, 1);
    nn_zero_grad(m);
    ad_var loss = nn_loss_cross_entropy(nn_forward(m, t, ad_const(t, x)), (const int64_t[]){0, 2});
    if (ad_backward(loss, NULL, 0) != AD_OK || nn_optim_step(o, NULL) != AD_OK) abort();
    if (nn_save(path, m, o, &rng, NULL) != AD_OK) abort();
    fz_emit_file(emit, ctx, "adam-step1", path);
    if (nn_save(path, m, NULL, NULL, NULL) != AD_OK) abort();
    fz_emit_file(emit, ctx, "params-only", path);
    ad_tensor_free(x);
    ad_tape_free(t);
    nn_optim_free(o);
    nn_module_free(m);
}

/* ---- the round trip: a selector byte, then a .npy (0), safetensors (1) or checkpoint (2) file ---- */

typedef struct prefixed {
    fz_emit_fn emit;
    void *ctx;
    uint8_t tag;
} prefixed;

static void emit_prefixed(const char *name, const uint8_t *data, size_t size, void *ctx)
{
    prefixed *p = ctx;
    fz_buf b = {0};
    fz_put_u8(&b, p->tag);
    fz_put(&b, data, size);
    char n2[128];
    snprintf(n2, sizeof n2, "%s-%s", p->tag == 0 ? "npy" : p->tag == 1 ? "st" : "ckpt", name);
    fz_emit_buf(p->emit, p->ctx, n2, &b);
}

void fz_seeds_nn(const char *target, fz_emit_fn emit, void *ctx)
{
    if (strcmp(target, "idx") == 0) {
        seeds_idx(emit, ctx);
    } else if (strcmp(target, "csv") == 0) {
        seeds_csv(emit, ctx);
    } else if (strcmp(target, "safetensors") == 0) {
        seeds_safetensors(emit, ctx);
    } else if (strcmp(target, "checkpoint") == 0) {
        seeds_checkpoint(emit, ctx);
    } else if (strcmp(target, "roundtrip") == 0) {
        prefixed p = {emit, ctx, 0};
        fz_seeds("npy", emit_prefixed, &p);
        p.tag = 1;
        seeds_safetensors(emit_prefixed, &p);
        p.tag = 2;
        seeds_checkpoint(emit_prefixed, &p);
    }
}

/* test_nn_weights.c: weights by name: a PyTorch transformer layer's state_dict loaded and run, round trips, the errors' lists. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "nn.h"
#include "test_io_util.h"
#include "test_util.h"

/* A block shaped like the one torch_weights.py writes: d 8, 2 heads, d_ff 16, no dropout. */
static nn_module *block(ad_dtype dt, bool causal, int64_t d_ff, uint64_t seed)
{
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    nn_transformer_opts o = nn_transformer_defaults(8, 2);
    o.d_ff = d_ff;
    o.dropout = 0.0;
    o.causal = causal;
    o.dtype = dt;
    nn_error e = {AD_OK, ""};
    nn_module *m = nn_transformer_block(&o, &rng, &e);
    ck_assert_msg(m != NULL, "%s", e.message);
    nn_module_set_training(m, false);
    return m;
}

/* The block's output for x (converted to the block's dtype), as a new F64 tensor. */
static ad_tensor *run(nn_module *m, const ad_tensor *x)
{
    ad_dtype dt = nn_module_param(m, "norm1.weight")->value->dtype;
    ad_tensor *xx = ad_tensor_new(dt, x->ndim, x->shape);
    ck_assert_int_eq(ad_tensor_copy(xx, x), AD_OK);
    ad_tape *t = ad_tape_new();
    ad_var y = nn_forward(m, t, ad_const(t, xx));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    ad_tensor *out = ad_tensor_new(AD_F64, ad_value(y)->ndim, ad_value(y)->shape);
    ck_assert_int_eq(ad_tensor_copy(out, ad_value(y)), AD_OK);
    ad_tape_free(t);
    ad_tensor_free(xx);
    return out;
}

static ad_tensor *npy(const char *dir, const char *name)
{
    char p[600], err[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ad_tensor *t = NULL;
    ck_assert_msg(ad_npy_load(p, &t, err, sizeof err) == AD_OK, "%s", err);
    return t;
}

/* max |a - b| over the elements, and whether every one is within atol + rtol |b|. */
static bool close_all(const ad_tensor *a, const ad_tensor *b, double atol, double rtol, double *maxdiff)
{
    ck_assert_int_eq(a->size, b->size);
    bool ok = true;
    *maxdiff = 0;
    for (int64_t i = 0; i < a->size; i++) {
        double d = fabs(ad_tensor_get(a, i) - ad_tensor_get(b, i));
        *maxdiff = fmax(*maxdiff, d);
        ok &= d <= atol + rtol * fabs(ad_tensor_get(b, i));
    }
    return ok;
}

START_TEST(pytorch_transformer_layer)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "pytorch_transformer_layer: no /usr/bin/python3, skipped\n");
        return;
    }
    const char *data = getenv("AD_TEST_DATA");
    ck_assert_ptr_nonnull(data);
    char dir[256], cmd[1024], path[600];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/torch_weights.py %s", data, dir);
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
        fprintf(stderr, "pytorch_transformer_layer: python3 has no torch, skipped\n");
        tio_rmtree(dir);
        return;
    }
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s failed (%d)", cmd, rc);
    snprintf(path, sizeof path, "%s/block.safetensors", dir);
    ad_tensor *x = npy(dir, "x.npy"), *y = npy(dir, "y.npy"), *yc = npy(dir, "yc.npy");
    for (int dt = 0; dt < 2; dt++)
        for (int causal = 0; causal < 2; causal++) {
            nn_module *m = block(dt ? AD_F64 : AD_F32, causal, 16, 5);
            nn_error e = {AD_OK, ""};
            ck_assert_msg(nn_load_weights(m, path, NULL, NULL, &e) == AD_OK, "%s", e.message);
            ad_tensor *out = run(m, x);
            double md;
            /* PyTorch computed in F32: agreement within F32 rounding of a few dozen operations */
            bool ok = close_all(out, causal ? yc : y, 1e-5, 1e-4, &md);
            fprintf(stderr, "transformer layer vs PyTorch (%s, %s): max |difference| %.3g\n", dt ? "f64" : "f32",
                    causal ? "causal" : "full", md);
            ck_assert_msg(ok, "max difference %g", md);
            /* and not by accident: a block with its own initial weights is far off */
            nn_module *fresh = block(dt ? AD_F64 : AD_F32, causal, 16, 5);
            ad_tensor *other = run(fresh, x);
            ck_assert(!close_all(other, causal ? yc : y, 1e-2, 0, &md));
            /* our own export loads back into the fresh block and gives the same bits */
            snprintf(path + strlen(dir), sizeof path - strlen(dir), "/ours.safetensors");
            ck_assert_msg(nn_save_weights(m, path, NULL, NULL, &e) == AD_OK, "%s", e.message);
            ck_assert_msg(nn_load_weights(fresh, path, NULL, NULL, &e) == AD_OK, "%s", e.message);
            ad_tensor *again = run(fresh, x);
            for (int64_t i = 0; i < out->size; i++) ck_assert(ad_tensor_get(out, i) == ad_tensor_get(again, i));
            snprintf(path + strlen(dir), sizeof path - strlen(dir), "/block.safetensors");
            ad_tensor_free(out);
            ad_tensor_free(other);
            ad_tensor_free(again);
            nn_module_free(m);
            nn_module_free(fresh);
        }
    ad_tensor_free(x);
    ad_tensor_free(y);
    ad_tensor_free(yc);
    tio_rmtree(dir);
}
END_TEST

/* "model.<name>" in the file; "extra.*" left out. */
static bool strip_model(const char *name, char *out, size_t len, void *ctx)
{
    (void)ctx;
    if (strncmp(name, "extra.", 6) == 0) return false;
    snprintf(out, len, "%s", strncmp(name, "model.", 6) == 0 ? name + 6 : name);
    return true;
}
static bool add_model(const char *name, char *out, size_t len, void *ctx)
{
    (void)ctx;
    snprintf(out, len, "model.%s", name);
    return true;
}

START_TEST(names_are_mapped_and_problems_listed)
{
    char dir[256], path[600], path2[600];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/w2.safetensors", dir);
    nn_module *a = block(AD_F32, false, 16, 1), *b = block(AD_F32, false, 16, 2);
    nn_error e = {AD_OK, ""};
    /* written under "model.*", read back through the map */
    ck_assert_int_eq(nn_save_weights(a, path, add_model, NULL, &e), AD_OK);
    ck_assert_int_eq(nn_load_weights(b, path, NULL, NULL, &e), AD_ERR_FORMAT); /* every name unexpected */
    ck_assert_ptr_nonnull(strstr(e.message, "missing"));
    ck_assert_ptr_nonnull(strstr(e.message, "unexpected (model."));
    ck_assert_int_eq(nn_load_weights(b, path, strip_model, NULL, &e), AD_OK);
    ck_assert(ad_tensor_get(nn_module_param(b, "linear1.weight")->value, 3) ==
              ad_tensor_get(nn_module_param(a, "linear1.weight")->value, 3));
    /* a file missing one tensor, with one extra, and a module with other shapes */
    nn_param *ps;
    int np = nn_module_params(a, &ps);
    const char *names[64];
    const ad_tensor *ts[64];
    int n = 0;
    for (int i = 0; i < np; i++)
        if (strcmp(ps[i].name, "linear2.bias") != 0) names[n] = ps[i].name, ts[n++] = ps[i].value;
    ad_tensor *extra = ad_tensor_new(AD_F32, AD_SHAPE(2));
    names[n] = "pos.weight", ts[n++] = extra;
    ck_assert_int_eq(nn_safetensors_save(path2, n, names, ts, 0, NULL, &e), AD_OK);
    nn_module *c = block(AD_F32, false, 12, 3); /* linear1 [12, 8], linear2 [8, 12] */
    double before = ad_tensor_get(nn_module_param(c, "norm1.weight")->value, 0);
    ck_assert_int_eq(nn_load_weights(c, path2, NULL, NULL, &e), AD_ERR_FORMAT);
    fprintf(stderr, "%s\n", e.message);
    ck_assert_ptr_nonnull(strstr(e.message, "1 missing (linear2.bias)"));
    ck_assert_ptr_nonnull(strstr(e.message, "mis-shaped (linear1.weight [16,8], [12,8] expected"));
    ck_assert_ptr_nonnull(strstr(e.message, "1 unexpected (pos.weight)"));
    ck_assert(ad_tensor_get(nn_module_param(c, "norm1.weight")->value, 0) == before); /* nothing written */
    /* only shapes differ: AD_ERR_SHAPE */
    ck_assert_int_eq(nn_load_weights(c, path, strip_model, NULL, &e), AD_ERR_SHAPE);
    /* F32 file into an F64 module: converted */
    nn_module *d64 = block(AD_F64, false, 16, 4);
    ck_assert_int_eq(nn_load_weights(d64, path, strip_model, NULL, &e), AD_OK);
    ck_assert(ad_tensor_get(nn_module_param(d64, "linear1.weight")->value, 5) ==
              ad_tensor_get(nn_module_param(a, "linear1.weight")->value, 5));
    /* not a safetensors file, no file */
    char junk[600];
    snprintf(junk, sizeof junk, "%s/junk", dir);
    tio_write(junk, "hello, this is not a safetensors file", 37);
    ck_assert_int_eq(nn_load_weights(b, junk, NULL, NULL, &e), AD_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.message, "nn_load_weights"));
    snprintf(junk, sizeof junk, "%s/none", dir);
    ck_assert_int_eq(nn_load_weights(b, junk, NULL, NULL, &e), AD_ERR_IO);
    ck_assert_int_eq(nn_load_weights(NULL, path, NULL, NULL, &e), AD_ERR_ARG);
    nn_module_free(a);
    nn_module_free(b);
    nn_module_free(c);
    nn_module_free(d64);
    ad_tensor_free(extra);
    tio_rmtree(dir);
}
END_TEST

/* Writes a plain safetensors file: the 8-byte length, the header, then nbytes of data 0, 1, 2, ... */
static void write_plain(const char *path, const char *header, size_t nbytes)
{
    size_t h = strlen(header), n = 8 + h + nbytes;
    unsigned char *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < nbytes; i++) buf[8 + h + i] = (unsigned char)i;
    tio_write(path, buf, n);
    free(buf);
}

/* Plain files written by hand: read when the entries tile the data area, refused with the
** reason otherwise (the load's own checks: gaps, overlaps, trailing bytes, a header past the end,
** a FIFO never opened). */
START_TEST(plain_files_by_hand)
{
    char dir[256], path[600];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/p.safetensors", dir);
    nn_module *m = nn_linear_ex(1, 2, true, NN_INIT_ZEROS, 0, AD_F32, NULL, NULL);
    ck_assert_ptr_nonnull(m);
    nn_error e = {AD_OK, ""};
    /* bias first in the data, metadata of any kind ignored */
    write_plain(path,
                "{\"__metadata__\":{\"by\":\"hand\"},\"weight\":{\"dtype\":\"F32\",\"shape\":[2,1],"
                "\"data_offsets\":[8,16]},\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                16);
    ck_assert_msg(nn_load_weights(m, path, NULL, NULL, &e) == AD_OK, "%s", e.message);
    float w0;
    const unsigned char wb[4] = {8, 9, 10, 11};
    memcpy(&w0, wb, 4);
    ck_assert(ad_tensor_get(nn_module_param(m, "weight")->value, 0) == (double)w0);
    static const struct {
        const char *header;
        size_t nbytes;
        ad_status st;
        const char *why;
    } bad[] = {
        {"{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
         "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         20, AD_ERR_FORMAT, "gap of 4 bytes"},
        {"{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
         "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, AD_ERR_FORMAT, "overlaps"},
        {"{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
         "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         17, AD_ERR_FORMAT, "1 trailing bytes"},
        {"{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
         "\"bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,16]}}",
         16, AD_ERR_FORMAT, "needs 12 bytes"},
        {"{\"weight\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[0,4]}}", 4, AD_ERR_UNSUPPORTED, "BF16"},
        {"[1, 2]", 0, AD_ERR_FORMAT, "not a JSON object"},
        {"{\"weight\":", 0, AD_ERR_FORMAT, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_plain(path, bad[i].header, bad[i].nbytes);
        ck_assert_int_eq(nn_load_weights(m, path, NULL, NULL, &e), bad[i].st);
        ck_assert_msg(strstr(e.message, bad[i].why) && strstr(e.message, "nn_load_weights"), "%zu: %s", i, e.message);
    }
    /* a header length past the end of the file */
    tio_write(path, "\x40\0\0\0\0\0\0\0{}", 10);
    ck_assert_int_eq(nn_load_weights(m, path, NULL, NULL, &e), AD_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.message, "past the end"));
    /* a FIFO is refused without waiting for a writer */
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_eq(nn_load_weights(m, path, NULL, NULL, &e), AD_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.message, "not a regular file"));
    nn_module_free(m);
    tio_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn_weights");
    TCase *c = tcase_create("weights");
    tcase_set_timeout(c, 300);
    tcase_add_test(c, pytorch_transformer_layer);
    tcase_add_test(c, names_are_mapped_and_problems_listed);
    tcase_add_test(c, plain_files_by_hand);
    suite_add_tcase(s, c);
    return tu_run(s);
}

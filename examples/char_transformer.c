/* char_transformer.c: a small causal transformer trained on a licence text, held-out bits per character against a unigram baseline, and sampling with a temperature. */
/*
** Usage: char_transformer [--steps N] [--temperature T] [--seed S] [FILE]
**
** FILE (default /usr/share/common-licenses/GPL-3, which every Debian machine has) is read
** as bytes; every tenth block of 1024 bytes is held out, the rest is for training. The model
** predicts each next character from the ones before it in a window of --ctx (32) characters:
** an embedding of each character
** and of each position (width --dim, 32), --layers (2) pre-norm transformer blocks (causal
** self-attention, 4 heads, GELU MLP), a final layer norm and a linear map back to the characters. It is trained
** with AdamW on random windows, then it reports the held-out cross-entropy in bits per
** character next to a unigram model's (character frequencies of the training part), and
** samples text with the given temperature (logits / T before the softmax).
** The exit status is 0 when the transformer beats the unigram baseline by half a bit per
** character, so the short default run is also a test.
*/
#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { HEADS = 4, BATCH = 16, BLOCK = 1024 };

/* the model's size: --dim, --ctx, --layers */
static int64_t DIM = 32, CTX = 32;
static int LAYERS = 2;

typedef struct text {
    unsigned char *bytes;
    int64_t n;
    int vocab;       /* distinct bytes */
    int id[256];     /* byte -> id, -1 when absent */
    unsigned char ch[256]; /* id -> byte */
} text;

static int read_text(const char *path, text *tx)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    tx->bytes = malloc(cap);
    size_t k;
    while (tx->bytes && (k = fread(tx->bytes + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            unsigned char *b = realloc(tx->bytes, cap *= 2);
            if (!b) free(tx->bytes);
            tx->bytes = b;
        }
    }
    fclose(f);
    if (!tx->bytes) return -1;
    tx->n = (int64_t)n;
    memset(tx->id, -1, sizeof tx->id);
    tx->vocab = 0;
    for (size_t i = 0; i < n; i++)
        if (tx->id[tx->bytes[i]] < 0) {
            tx->ch[tx->vocab] = tx->bytes[i];
            tx->id[tx->bytes[i]] = tx->vocab++;
        }
    return 0;
}

/* The network: ids [B, T] -> logits [B, T, vocab]. */
static nn_module *build(int vocab, ad_rng *rng, nn_error *err)
{
    nn_module *mods[16 + 4];
    int k = 0;
    mods[k++] = nn_embedding_ex(vocab, DIM, AD_F32, rng, err);
    mods[k++] = nn_positional_learned(CTX, DIM, AD_F32, rng, err);
    for (int l = 0; l < LAYERS; l++) {
        nn_transformer_opts o = nn_transformer_defaults(DIM, HEADS);
        o.causal = true;
        o.dropout = 0.0;
        o.seed = 100 + (uint64_t)l;
        mods[k++] = nn_transformer_block(&o, rng, err);
    }
    mods[k++] = nn_layer_norm(1, (const int64_t[]){DIM}, 1e-5, err);
    mods[k++] = nn_linear(DIM, vocab, rng, err);
    nn_module *m = nn_sequential(k, mods, err);
    if (m) {
        /* embeddings start small, as GPT-2's (nn_embedding draws N(0, 1)) */
        nn_param *e = nn_module_param(m, "0.weight");
        for (int64_t i = 0; i < e->value->size; i++) ad_tensor_set(e->value, i, 0.02 * ad_tensor_get(e->value, i));
    }
    return m;
}

/* Mean cross-entropy (nats) of the next-character predictions for the first b windows of ids.
** rows is the caller's scratch header: the tape borrows it until the next reset. */
static double window_loss(nn_module *m, ad_tape *t, const ad_tensor *ids, ad_tensor *rows, const int64_t *labels,
                          int64_t b, ad_var *loss_out)
{
    ad_tape_reset(t);
    *rows = *ids; /* the first b rows: a header over the same data */
    rows->shape[0] = b;
    rows->size = b * CTX;
    ad_var logits = nn_forward(m, t, ad_const(t, rows));
    const ad_tensor *lv = ad_value(logits);
    if (!lv) return NAN;
    ad_var loss = nn_loss_cross_entropy(ad_reshape(logits, 2, (const int64_t[]){b * CTX, lv->shape[2]}), labels);
    if (loss_out) *loss_out = loss;
    return ad_item(loss);
}

static void fill_window(const text *tx, int64_t start, ad_tensor *ids, int64_t row, int64_t *labels)
{
    for (int64_t j = 0; j < CTX; j++) {
        ad_tensor_set(ids, row * CTX + j, tx->id[tx->bytes[start + j]]);
        labels[row * CTX + j] = tx->id[tx->bytes[start + j + 1]];
    }
}

int main(int argc, char **argv)
{
    const char *path = "/usr/share/common-licenses/GPL-3";
    long steps = 200;
    double temperature = 0.8;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--temperature") && i + 1 < argc)
            temperature = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            DIM = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            CTX = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            LAYERS = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--steps N] [--temperature T] [--seed S] [--dim D] [--ctx T] [--layers L] [FILE]\n",
                    argv[0]);
            return 2;
        } else
            path = argv[i];
    }
    if (steps < 1 || !(temperature > 0) || DIM < HEADS || DIM % HEADS || CTX < 2 || CTX > 1024 || LAYERS < 1 ||
        LAYERS > 16) {
        fprintf(stderr, "char_transformer: need --steps >= 1, --temperature > 0, --dim a multiple of %d, --ctx in "
                        "[2, 1024], --layers in [1, 16]\n", HEADS);
        return 2;
    }
    text tx;
    if (read_text(path, &tx) != 0 || tx.n < 20 * CTX) {
        fprintf(stderr, "char_transformer: cannot read %s, or it is shorter than %lld bytes\n", path, (long long)(20 * CTX));
        return 2;
    }
    /* every tenth block of BLOCK characters is held out: train and held-out texts side by side */
    unsigned char *all = tx.bytes;
    tx.bytes = malloc((size_t)tx.n);
    if (!tx.bytes) return 1;
    int64_t split = 0, ho = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < tx.n; i++)
            if ((i / BLOCK % 10 == 9) == (pass == 1)) tx.bytes[pass ? split + ho++ : split++] = all[i];
    free(all);
    ad_rng rng;
    ad_rng_seed(&rng, seed);
    nn_error err = {AD_OK, ""};
    nn_module *m = build(tx.vocab, &rng, &err);
    nn_optim_opts oo = nn_optim_defaults("adamw");
    oo.lr = 3e-3;
    oo.weight_decay = 0.01;
    nn_optim *opt = m ? nn_optim_for("adamw", m, &oo, &err) : NULL;
    ad_tape *t = ad_tape_new();
    ad_tensor *ids = ad_tensor_new(AD_F32, AD_SHAPE(BATCH, CTX));
    int64_t *labels = malloc((size_t)(BATCH * CTX) * sizeof *labels);
    if (!m || !opt || !t || !ids || !labels) {
        fprintf(stderr, "char_transformer: %s\n", err.message[0] ? err.message : "out of memory");
        return 1;
    }
    printf("%s: %lld characters (%d distinct), %lld for training, %lld held out (every tenth block of %d)\n", path,
           (long long)tx.n, tx.vocab, (long long)split, (long long)(tx.n - split), BLOCK);
    printf("model: %d blocks of width %lld, %d heads, context %lld, %lld weights; adamw lr %g, batch %d, %ld steps\n",
           LAYERS, (long long)DIM, HEADS, (long long)CTX, (long long)nn_module_num_weights(m), oo.lr, BATCH, steps);

    ad_tensor rows;
    clock_t c0 = clock();
    double avg = NAN;
    nn_step_opts so = {.clip_norm = 1.0};
    for (long s = 1; s <= steps; s++) {
        /* linear warmup over the first 10% of the steps, then cosine decay */
        double warm = steps / 10.0 + 1, frac = (s - warm) / (steps - warm + 1);
        nn_optim_set_lr(opt, s < warm ? oo.lr * s / warm : oo.lr * 0.5 * (1 + cos(acos(-1.0) * frac)));
        for (int64_t b = 0; b < BATCH; b++)
            fill_window(&tx, (int64_t)ad_rng_below(&rng, (uint64_t)(split - CTX - 1)), ids, b, labels);
        ad_var loss;
        window_loss(m, t, ids, &rows, labels, BATCH, &loss);
        nn_step_result res;
        if (nn_train_step(opt, loss, &so, &res, &err) != AD_OK) {
            fprintf(stderr, "char_transformer: step %ld: %s\n", s, err.message);
            return 1;
        }
        avg = isnan(avg) ? res.loss : 0.95 * avg + 0.05 * res.loss;
        if (s % 100 == 0 || s == steps)
            printf("step %5ld  loss %.3f bits/char (running mean)  %.1f s\n", s, avg / log(2.0),
                   (double)(clock() - c0) / CLOCKS_PER_SEC);
    }

    /* held out: every non-overlapping window of the held-out text, each character predicted from those before it
    ** in its window; the unigram model: add-one smoothed frequencies of the training part */
    nn_module_set_training(m, false);
    ad_tape_set_grad_enabled(t, false);
    double nats = 0;
    int64_t count = 0, row = 0;
    for (int64_t start = split; start + CTX + 1 <= tx.n; start += CTX) {
        fill_window(&tx, start, ids, row++, labels);
        if (row == BATCH || start + 2 * CTX + 1 > tx.n) {
            nats += window_loss(m, t, ids, &rows, labels, row, NULL) * (double)(row * CTX);
            count += row * CTX;
            row = 0;
        }
    }
    double bpc = nats / (double)count / log(2.0);
    double freq[256] = {0}, uni = 0;
    for (int64_t i = 0; i < split; i++) freq[tx.id[tx.bytes[i]]] += 1;
    for (int64_t i = split; i < tx.n; i++) uni -= log2((freq[tx.id[tx.bytes[i]]] + 1) / (double)(split + tx.vocab));
    uni /= (double)(tx.n - split);
    printf("held out: %.3f bits per character (unigram baseline %.3f) over %lld characters\n", bpc, uni,
           (long long)count);

    /* sampling: the context grows to CTX characters, then slides */
    const char *prompt = "This License";
    unsigned char out[1024 + 400];
    int len = 0;
    for (const char *p = prompt; *p && tx.id[(unsigned char)*p] >= 0; p++) out[len++] = (unsigned char)*p;
    ad_tensor *one = ad_tensor_new(AD_F32, AD_SHAPE(1, CTX));
    double *prob = malloc((size_t)tx.vocab * sizeof *prob);
    for (int k = 0; k < 300 && one && prob; k++) {
        int from = len > CTX ? len - CTX : 0, n = len - from;
        ad_tensor_fill(one, 0.0);
        for (int j = 0; j < n; j++) ad_tensor_set(one, j, tx.id[out[from + j]]);
        ad_tape_reset(t);
        ad_var logits = nn_forward(m, t, ad_const(t, one)); /* causal: positions past n do not matter */
        if (!ad_ok(logits)) break;
        const ad_tensor *lv = ad_value(logits);
        double mx = -INFINITY, z = 0;
        for (int c = 0; c < tx.vocab; c++) mx = fmax(mx, ad_tensor_get(lv, (int64_t)(n - 1) * tx.vocab + c));
        for (int c = 0; c < tx.vocab; c++)
            z += prob[c] = exp((ad_tensor_get(lv, (int64_t)(n - 1) * tx.vocab + c) - mx) / temperature);
        double u = ad_rng_uniform(&rng) * z;
        int c = 0;
        while (c < tx.vocab - 1 && (u -= prob[c]) > 0) c++;
        if (len == (int)sizeof out) {
            memmove(out, out + 1, sizeof out - 1);
            len--;
        }
        out[len++] = tx.ch[c];
    }
    printf("sample (temperature %g):\n%.*s\n", temperature, len, (const char *)out);
    int status = bpc < uni - 0.5 ? 0 : 1;
    if (status) printf("char_transformer: the model did not beat the unigram baseline by 0.5 bits\n");
    free(prob);
    ad_tensor_free(one);
    free(labels);
    ad_tensor_free(ids);
    ad_tape_free(t);
    nn_optim_free(opt);
    nn_module_free(m);
    free(tx.bytes);
    return status;
}

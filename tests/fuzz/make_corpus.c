/* make_corpus.c: writes the seed corpora of the fuzz targets: make_corpus OUTDIR TARGET... creates OUTDIR/TARGET/<seed>. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

typedef struct out_dir {
    char path[1024];
    int count, bad;
} out_dir;

static void write_seed(const char *name, const uint8_t *data, size_t size, void *ctx)
{
    out_dir *o = ctx;
    char p[1200];
    snprintf(p, sizeof p, "%s/seed-%s", o->path, name);
    FILE *f = fopen(p, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "make_corpus: cannot write %s\n", p);
        o->bad = 1;
        return;
    }
    o->count++;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: make_corpus OUTDIR TARGET...\n");
        return 2;
    }
    if (mkdir(argv[1], 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_corpus: cannot create %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int bad = 0;
    for (int i = 2; i < argc; i++) {
        out_dir o = {.count = 0, .bad = 0};
        snprintf(o.path, sizeof o.path, "%s/%s", argv[1], argv[i]);
        if (mkdir(o.path, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "make_corpus: cannot create %s: %s\n", o.path, strerror(errno));
            return 1;
        }
        fz_seeds(argv[i], write_seed, &o);
        if (o.count == 0) fprintf(stderr, "make_corpus: no seeds for target %s\n", argv[i]);
        printf("%s: %d seeds\n", o.path, o.count);
        bad |= o.bad | (o.count == 0);
    }
    return bad;
}

/* fuzz_idx.c: fuzz target for nn_dataset_load_idx: input = u32 LE image-file length, the image file, the label file. */
#include "fuzz.h"

#include <string.h>

#include "nn.h"

const char fz_target[] = "idx";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    size_t split = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    data += 4;
    size -= 4;
    if (split > size) split = size;
    const char *images = fz_file(0, data, split);
    const char *labels = fz_file(1, data + split, size - split);
    if (!images || !labels) return 0;
    static nn_dataset sentinel;
    nn_dataset *ds = &sentinel; /* the loader must set it to NULL on failure */
    nn_error err = {0};
    ad_status s = nn_dataset_load_idx(images, labels, &ds, &err);
    if (s != AD_OK) {
        FZ_CHECK(ds == NULL);
        FZ_CHECK(s < 0 && s != AD_ERR_ARG);
        FZ_CHECK(strncmp(err.message, "nn_dataset_load_idx: ", 21) == 0);
        return 0;
    }
    FZ_CHECK(ds != NULL && ds->n > 0 && ds->dim > 0);
    FZ_CHECK(ds->pixels_u8 != NULL && ds->features == NULL && ds->labels != NULL);
    int64_t maxl = -1;
    unsigned sum = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        FZ_CHECK(ds->labels[i] >= 0 && ds->labels[i] < 256);
        if (ds->labels[i] > maxl) maxl = ds->labels[i];
    }
    FZ_CHECK(ds->nclasses == maxl + 1);
    /* every pixel is readable (ASan checks the buffer's extent) */
    for (int64_t i = 0; i < ds->n * ds->dim; i++) sum += ds->pixels_u8[i];
    volatile unsigned sink = sum;
    (void)sink;
    nn_dataset_free(ds);
    return 0;
}

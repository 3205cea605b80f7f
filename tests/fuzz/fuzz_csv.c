/* fuzz_csv.c: fuzz target for nn_dataset_load_csv: input = a flags byte (label column, header), then the CSV text. */
#include "fuzz.h"

#include <math.h>
#include <string.h>

#include "nn.h"

const char fz_target[] = "csv";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int label_col = (data[0] & 7) - 4; /* -4 .. 3 */
    bool header = (data[0] & 8) != 0;
    const char *path = fz_file(0, data + 1, size - 1);
    if (!path) return 0;
    static nn_dataset sentinel;
    nn_dataset *ds = &sentinel;
    nn_error err = {0};
    ad_status s = nn_dataset_load_csv(path, label_col, header, &ds, &err);
    if (s != AD_OK) {
        FZ_CHECK(ds == NULL);
        FZ_CHECK(s < 0);
        FZ_CHECK(strncmp(err.message, "nn_dataset_load_csv: ", 21) == 0);
        return 0;
    }
    FZ_CHECK(ds != NULL && ds->n > 0 && ds->dim > 0);
    FZ_CHECK(ds->features != NULL && ds->pixels_u8 == NULL && ds->labels != NULL);
    FZ_CHECK((size_t)(ds->n * (ds->dim + 1)) <= size); /* every cell took at least one byte */
    int64_t maxl = -1;
    for (int64_t i = 0; i < ds->n; i++) {
        FZ_CHECK(ds->labels[i] >= 0 && ds->labels[i] < (1 << 24));
        if (ds->labels[i] > maxl) maxl = ds->labels[i];
    }
    FZ_CHECK(ds->nclasses == maxl + 1);
    for (int64_t i = 0; i < ds->n * ds->dim; i++) FZ_CHECK(isfinite(ds->features[i]));
    nn_dataset_free(ds);
    return 0;
}

/* fuzz_npy.c: fuzz target for ad_npy_load: any input either loads into a consistent tensor or fails with a message. */
#include "fuzz.h"

#include <string.h>

#include "ad.h"

const char fz_target[] = "npy";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_file(0, data, size);
    if (!path) return 0;
    static ad_tensor sentinel;
    ad_tensor *t = &sentinel; /* the loader must set it to NULL on failure */
    char err[256];
    ad_status s = ad_npy_load(path, &t, err, sizeof err);
    if (s != AD_OK) {
        FZ_CHECK(t == NULL);
        FZ_CHECK(s < 0 && s != AD_ERR_ARG);
        FZ_CHECK(strncmp(err, "ad_npy_load: ", 13) == 0);
        return 0;
    }
    FZ_CHECK(t != NULL);
    FZ_CHECK(t->dtype == AD_F32 || t->dtype == AD_F64);
    FZ_CHECK(t->ndim >= 0 && t->ndim <= AD_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    FZ_CHECK(n == t->size);
    /* the data fits in the file: every element is readable */
    double acc = 0;
    for (int64_t i = 0; i < t->size; i++) acc += ad_tensor_get(t, i) != 0;
    FZ_CHECK(acc <= (double)t->size);
    FZ_CHECK((size_t)t->size <= size);
    ad_tensor_free(t);
    return 0;
}

/* fuzz_safetensors.c: fuzz target for nn_safetensors_load against a few expected tensor sets: a failure writes no destination. */
#include "fuzz.h"

#include <string.h>

#include "fuzz_schemas.h"
#include "nn.h"

const char fz_target[] = "safetensors";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_file(0, data, size);
    if (!path) return 0;
    for (int k = 0; k < FZ_NSCHEMAS; k++) {
        const fz_schema *sc = &fz_schemas[k];
        ad_tensor *dst[FZ_SCHEMA_MAX];
        for (int i = 0; i < sc->n; i++) {
            dst[i] = fz_schema_tensor(sc, i);
            for (int64_t j = 0; j < dst[i]->size; j++) ad_tensor_set(dst[i], j, 12345.0);
        }
        nn_error err = {0};
        ad_status s = nn_safetensors_load(path, sc->n, sc->names, dst, &err);
        if (s != AD_OK) {
            FZ_CHECK(s < 0 && s != AD_ERR_ARG);
            FZ_CHECK(strncmp(err.message, "nn_safetensors_load: ", 21) == 0);
            /* nothing was written into any destination */
            for (int i = 0; i < sc->n; i++)
                for (int64_t j = 0; j < dst[i]->size; j++) FZ_CHECK(ad_tensor_get(dst[i], j) == 12345.0);
        }
        for (int i = 0; i < sc->n; i++) ad_tensor_free(dst[i]);
    }
    return 0;
}

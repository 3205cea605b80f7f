/* fuzz_checkpoint.c: fuzz target for nn_load (model, Adam state, generator): a failure leaves all three untouched. */
#include "fuzz.h"

#include <string.h>

#include "fuzz_schemas.h"
#include "nn.h"

const char fz_target[] = "checkpoint";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_file(0, data, size);
    if (!path) return 0;
    nn_module *m;
    nn_optim *o;
    ad_rng rng;
    fz_checkpoint_model(&m, &o, &rng);
    uint64_t before = fz_params_hash(m);
    int64_t steps = nn_optim_steps(o);
    ad_rng r = rng;
    nn_error err = {0};
    ad_status s = nn_load(path, m, o, &r, &err);
    if (s != AD_OK) {
        FZ_CHECK(s < 0 && s != AD_ERR_ARG);
        FZ_CHECK(strstr(err.message, path) != NULL); /* nn_load's message, or the safetensors layer's */
        FZ_CHECK(fz_params_hash(m) == before);
        FZ_CHECK(nn_optim_steps(o) == steps);
        FZ_CHECK(memcmp(r.s, rng.s, sizeof r.s) == 0 && r.has_spare_ == rng.has_spare_);
    }
    nn_optim_free(o);
    nn_module_free(m);
    return 0;
}

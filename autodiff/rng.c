/* rng.c: xoshiro256** (Blackman and Vigna), seeded through splitmix64; no global state. */
#include "services.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ad_rng_seed(ad_rng *rng, uint64_t seed)
{
    if (!rng) return;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
    rng->spare_ = 0.0;
    rng->has_spare_ = 0;
}

uint64_t ad_rng_u64(ad_rng *rng)
{
    if (!rng) return 0;
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ad_rng_uniform(ad_rng *rng) { return rng ? (double)(ad_rng_u64(rng) >> 11) * 0x1.0p-53 : 0.0; }

double ad_rng_normal(ad_rng *rng)
{
    if (!rng) return NAN;
    if (rng->has_spare_) {
        rng->has_spare_ = 0;
        return rng->spare_;
    }
    /* Box-Muller on (0, 1]: u1 never 0, so log is finite */
    double u1 = 1.0 - ad_rng_uniform(rng), u2 = ad_rng_uniform(rng);
    double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586476925 * u2;
    rng->spare_ = r * sin(th);
    rng->has_spare_ = 1;
    return r * cos(th);
}

uint64_t ad_rng_below(ad_rng *rng, uint64_t n)
{
    if (n == 0 || !rng) return 0;
    /* rejection sampling removes the modulo bias */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = ad_rng_u64(rng);
    while (x >= limit);
    return x % n;
}

void ad_rng_fill_uniform(ad_rng *rng, ad_tensor *t, double lo, double hi)
{
    if (!rng || !t) return;
    for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, lo + (hi - lo) * ad_rng_uniform(rng));
}

void ad_rng_fill_normal(ad_rng *rng, ad_tensor *t, double mean, double std)
{
    if (!rng || !t) return;
    for (int64_t i = 0; i < t->size; i++) ad_tensor_set(t, i, mean + std * ad_rng_normal(rng));
}

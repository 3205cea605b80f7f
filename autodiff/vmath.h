/* vmath.h: vectorizable float32 exp, tanh and sigmoid computed in double; double tanh (internal, never installed). */
#ifndef AUTODIFF_VMATH_H
#define AUTODIFF_VMATH_H

#include "services.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/*
** libm's expf/tanhf are calls the vectorizer cannot see through. These element
** functions are branch-free straight-line double arithmetic (selects, integer
** shifts through memcpy bit casts, copysign), so a loop over them vectorizes,
** and with FP contraction off (-ffp-contract=off, project-wide) every ISA clone
** (AD_CLONES) rounds exactly as the scalar code: the same bits everywhere.
**
** Method: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in a high
** part with 21 trailing zero bits, so k ln2_hi and x - k ln2_hi are exact),
** e^r - 1 = r q(r) with q a degree-8 polynomial (Chebyshev-node fit of
** (e^r - 1)/r on [-ln2/2, ln2/2], relative error < 1e-13), and 2^k built
** directly in the exponent bits. The double result is within ~1e-13 of the
** true value, so after the one rounding to float it is the correctly rounded
** float except in rare near-halfway cases, and never more than 1 ulp off
** (tests/test_vmath.c measures this against libm's double functions).
**
** Float inputs are clamped to where the float result is already saturated
** (|x| <= 200 for exp, so 2^k stays a normal double, k in [-289, 289]); the
** float overflow to +Inf and underflow to 0 (through subnormals, rounded
** once) then happen in the final conversion, as for libm. NaN in, NaN out.
*/

#define AD__VM_LOG2E 1.4426950408889634074
#define AD__VM_LN2_HI 6.93147180369123816490e-01 /* 0x3fe62e42fee00000 */
#define AD__VM_LN2_LO 1.90821492927058770002e-10 /* ln2 - ln2_hi */
#define AD__VM_SHIFT 6755399441055744.0          /* 1.5 * 2^52: adding it rounds to an integer in the low bits */

/* e^r - 1 for |r| <= ln2/2 (a little beyond is fine): r q(r). */
static inline double ad__vm_em1r(double r)
{
    double q = 2.762511557828763e-06;
    q = q * r + 2.4876178959085513e-05;
    q = q * r + 0.00019841208732536384;
    q = q * r + 0.001388882165071769;
    q = q * r + 0.008333333353729397;
    q = q * r + 0.0416666668910917;
    q = q * r + 0.1666666666664829;
    q = q * r + 0.49999999999797773;
    q = q * r + 1.0;
    return r * q;
}

/* x = k ln2 + r for |x| <= 1000 (or NaN): returns r and sets *scale = 2^k. */
static inline double ad__vm_reduce(double x, double *scale)
{
    double kd = x * AD__VM_LOG2E + AD__VM_SHIFT; /* k = round(x / ln2) sits in kd's low mantissa bits */
    double k = kd - AD__VM_SHIFT;
    uint64_t bits;
    memcpy(&bits, &kd, sizeof bits);
    bits = (bits << 52) + ((uint64_t)1023 << 52); /* the biased exponent k + 1023 (SHIFT's low bits are 0) */
    memcpy(scale, &bits, sizeof bits);
    return (x - k * AD__VM_LN2_HI) - k * AD__VM_LN2_LO;
}

/* e^x for |x| <= 1000, or NaN, in double (relative error ~1e-13). */
static inline double ad__vm_exp_d(double x)
{
    double s, r = ad__vm_reduce(x, &s);
    return s * (1.0 + ad__vm_em1r(r));
}

/* x with its magnitude clamped to lim's (lim > 0), its sign kept; NaN stays
** NaN (and comes out of the formulas NaN). Integer operations on the bits, no
** select: a select with a constant arm (x > lim ? lim : x) is folded through
** the whole formula by the optimizer, and the branch it leaves in the loop
** stops vectorization. */
static inline double ad__vm_clamp(float x, float lim)
{
    uint32_t b, l;
    memcpy(&b, &x, sizeof b);
    memcpy(&l, &lim, sizeof l);
    uint32_t a = b & 0x7fffffffu;
    uint32_t nan = 0u - (uint32_t)(a > 0x7f800000u); /* all ones for NaN */
    uint32_t m = a < l ? a : l;
    b = (b & 0x80000000u) | (m & ~nan) | (a & nan);
    float c;
    memcpy(&c, &b, sizeof c);
    return c;
}

/* e^x as float: +Inf above ~88.72, 0 below ~-103.97, NaN for NaN. */
static inline float ad__vm_expf(float x) { return (float)ad__vm_exp_d(ad__vm_clamp(x, 200.0f)); }

/* tanh x as float: (e^2t - 1) / (e^2t + 1) at t = |x|, with x's sign put back
** (so tanh(-0) = -0). e^2t - 1 is formed as 2^k (e^r - 1) + (2^k - 1), which
** keeps its relative accuracy for small t (k = 0: just e^r - 1) and loses at most
** a bit or so in the sum for k >= 1. +-1 for |x| >= ~9.01 (clamped at 20, where
** the double quotient is already 1), NaN for NaN. */
static inline float ad__vm_tanhf(float x)
{
    double t = fabs(ad__vm_clamp(x, 20.0f));
    double s, r = ad__vm_reduce(t + t, &s);
    double e = s * ad__vm_em1r(r) + (s - 1.0);
    float y = (float)(e / (e + 2.0));
    uint32_t yb, xb;
    memcpy(&yb, &y, sizeof yb);
    memcpy(&xb, &x, sizeof xb);
    yb |= xb & 0x80000000u; /* y >= 0 (+0 at x = 0) */
    memcpy(&y, &yb, sizeof y);
    return y;
}

/* tanh x in double. Below |x| = 0.625 an odd polynomial, x + (x z) P(z) with z = x^2 and P of
** degree 11 (a Chebyshev fit, made with mpmath, of (tanh(sqrt z) / sqrt z - 1) / z on [0, 0.390625];
** its error there is 4e-18 against |P| >= 0.32, and z P(z) is at most 0.13 against the 1 it is
** added to), evaluated by Estrin's scheme, x z formed beside it: a chain of dependent calls takes
** 8.1 ns each on the project's Zen 5, against 21 ns for libm's tanh, which goes through expm1.
** Measured against x87 tanhl over 2 x 10^7 inputs below 0.625 (tests/test_vmath.c repeats it on
** fewer): at most 0.97 ulp, where glibc documents 2 ulp for its tanh. Below 2^-27, x itself
** (tanh x rounds to x there, and -0 stays -0); from 0.625 on, NaN and infinities included,
** libm's tanh. */
static inline double ad__tanh_d(double x)
{
    double a = fabs(x);
    if (!(a < 0.625)) return tanh(x);
    if (a < 0x1p-27) return x;
    double z = x * x, z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
    double p01 = -0.3333333333333333 + 0.13333333333333042 * z;
    double p23 = -0.05396825396789699 + 0.021869488519008305 * z;
    double p45 = -0.008863235103240878 + 0.0035921217511549622 * z;
    double p67 = -0.0014557754120478055 + 0.0005896606577757043 * z;
    double p89 = -0.0002375906496055562 + 9.257116129556769e-05 * z;
    double pab = -3.12011014257974e-05 + 6.485163482793113e-06 * z;
    double p03 = p01 + p23 * z2, p47 = p45 + p67 * z2, p8b = p89 + pab * z2;
    double p = (p03 + p47 * z4) + p8b * z8;
    return x + (x * z) * p;
}

/* sigmoid x = 1 / (1 + e^-x) as float. In double, e^-x cannot overflow for
** |x| <= 200 (the clamp, far past float's saturation at 0 and 1), so the one
** formula is stable for both signs (1 / (1 + e) is relatively accurate for any
** e >= 0) and needs no sign split. NaN for NaN. */
static inline float ad__vm_sigmoidf(float x) { return (float)(1.0 / (1.0 + ad__vm_exp_d(-ad__vm_clamp(x, 200.0f)))); }

/* The loops: y[i] = f(x[i]) for i < n, vectorized, with the ISA picked at run
** time (AD_CLONES); y and x do not overlap. */
#define AD__VM_LOOP(name, F)                                                                                           \
    AD_CLONES static inline void name(float *restrict y, const float *restrict x, int64_t n)                           \
    {                                                                                                                  \
        for (int64_t i = 0; i < n; i++) y[i] = F(x[i]);                                                                \
    }
AD__VM_LOOP(ad__vexp_f32, ad__vm_expf)
AD__VM_LOOP(ad__vtanh_f32, ad__vm_tanhf)
AD__VM_LOOP(ad__vsigmoid_f32, ad__vm_sigmoidf)
#undef AD__VM_LOOP

#endif

/* test_vmath.c: vmath.h float32 exp/tanh/sigmoid: within 1 ulp of libm, edge values, same bits per ISA; double tanh. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test_util.h"
#include "vmath.h"

/*
** The reference is libm's double function rounded to float (the correctly
** rounded float value but in rare double-rounding cases). Over all 2^32 float
** inputs the loops here differ from it in 24 (exp), 68 (tanh) and 30 (sigmoid)
** inputs, each by 1 ulp; these tests sweep every 97th bit pattern in
** [-100, 100] (every 9973rd when AD_TEST_QUICK is set) and the edge cases.
*/

typedef enum { EXP, TANH, SIGMOID, NFN } fn;
static const char *const fn_names[] = {"exp", "tanh", "sigmoid"};

static float ref(fn f, float x)
{
    double d = x;
    switch (f) {
    case EXP:
        return (float)exp(d);
    case TANH:
        return (float)tanh(d);
    default:
        return (float)(d >= 0 ? 1.0 / (1.0 + exp(-d)) : exp(d) / (1.0 + exp(d)));
    }
}

/* The vector loops (AD_CLONES: the best clone for this CPU). */
static void vloop(fn f, float *y, const float *x, int64_t n)
{
    switch (f) {
    case EXP:
        ad__vexp_f32(y, x, n);
        break;
    case TANH:
        ad__vtanh_f32(y, x, n);
        break;
    default:
        ad__vsigmoid_f32(y, x, n);
        break;
    }
}

/* One element per call, never vectorized: the scalar code of the baseline ISA. */
__attribute__((noinline)) static float one(fn f, float x)
{
    switch (f) {
    case EXP:
        return ad__vm_expf(x);
    case TANH:
        return ad__vm_tanhf(x);
    default:
        return ad__vm_sigmoidf(x);
    }
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Floats in order as integers (-0 and +0 both 0): the distance in ulps. */
static int64_t ordinal(float f)
{
    uint32_t b = bits(f);
    return b & 0x80000000u ? -(int64_t)(b & 0x7fffffffu) : (int64_t)b;
}

/* Same bits, or both NaN. */
static int same(float a, float b) { return (isnan(a) && isnan(b)) || bits(a) == bits(b); }

/* Checks y = f(x) element by element against libm: NaN exactly where libm
** gives NaN, infinities and zeros (with their signs) exactly where libm's are,
** and at most 1 ulp elsewhere. Returns how many elements differ at all. */
static int64_t check_against_libm(fn f, const float *x, const float *y, int64_t n)
{
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) {
        float r = ref(f, x[i]);
        if (isnan(r) || isnan(y[i])) {
            ck_assert_msg(isnan(r) && isnan(y[i]), "%s(%a) = %a, libm %a", fn_names[f], x[i], y[i], r);
            continue;
        }
        if (bits(r) == bits(y[i])) continue;
        differ++;
        ck_assert_msg(!isinf(r) && !isinf(y[i]) && r != 0 && y[i] != 0, "%s(%a) = %a, libm %a", fn_names[f], x[i], y[i],
                      r);
        int64_t d = ordinal(y[i]) - ordinal(r);
        ck_assert_msg(d >= -1 && d <= 1, "%s(%a) = %a, libm %a: %lld ulp", fn_names[f], x[i], y[i], r, (long long)d);
    }
    return differ;
}

/* Every stride-th float bit pattern in [-100, 100], in chunks through the vector loop. */
START_TEST(sweep_within_one_ulp)
{
    fn f = (fn)_i;
    enum { CHUNK = 4096 };
    static float x[CHUNK], y[CHUNK];
    const uint32_t stride = tu_quick() ? 9973 : 97, top = bits(100.0f);
    int64_t total = 0, differ = 0;
    for (int sign = 0; sign < 2; sign++) {
        uint32_t b = 0;
        while (b <= top) {
            int64_t n = 0;
            for (; n < CHUNK && b <= top; n++, b += stride) x[n] = from_bits(b | (sign ? 0x80000000u : 0));
            vloop(f, y, x, n);
            differ += check_against_libm(f, x, y, n);
            total += n;
        }
    }
    ck_assert_int_gt(total, 1000);
    ck_assert_msg(differ * 100000 <= total, "%s: %lld of %lld inputs differ from libm", fn_names[f], (long long)differ,
                  (long long)total);
}
END_TEST

/* Evenly spaced values in [-25, 25] (where the bit-pattern sweep is thin, and
** where the polynomial's whole range is used): all within 1 ulp, and the result
** differs from libm's in about 1 input in 10^6 (from a relative error near 1e-13;
** one of 3e-12 already gives 1 in 3 10^4, and fails here). */
START_TEST(grid_rarely_differs)
{
    fn f = (fn)_i;
    enum { CHUNK = 4096 };
    static float x[CHUNK], y[CHUNK];
    const int64_t total = tu_quick() ? 40000 : 4000000;
    int64_t differ = 0;
    for (int64_t i = 0; i < total; i += CHUNK) {
        int64_t n = total - i < CHUNK ? total - i : CHUNK;
        for (int64_t k = 0; k < n; k++) x[k] = (float)(-25.0 + 50.0 * ((double)(i + k) + 0.5) / (double)total);
        vloop(f, y, x, n);
        differ += check_against_libm(f, x, y, n);
    }
    ck_assert_msg(differ * 100000 <= total, "%s: %lld of %lld inputs differ from libm", fn_names[f], (long long)differ,
                  (long long)total);
}
END_TEST

/* Zeros, subnormals, the limits, infinities, NaNs, and runs of consecutive floats
** across each function's overflow, underflow and saturation thresholds. */
static int64_t edge_inputs(float *x)
{
    static const float sp[] = {0.0f,    -0.0f,    1e-45f,   -1e-45f,   1e-40f,     -1e-40f,     FLT_MIN,    -FLT_MIN,
                               1e-20f,  -1e-20f,  1.0f,     -1.0f,     0.3465736f, -0.3465736f, 0.6931472f, 0.5f,
                               FLT_MAX, -FLT_MAX, INFINITY, -INFINITY, NAN,        -NAN,        199.99f,    200.0f,
                               200.01f, 1e10f,    -1e10f,   20.0f,     21.0f,      -21.0f};
    int64_t n = 0;
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) x[n++] = sp[i];
    x[n++] = from_bits(0x7f800001u); /* a signaling NaN's bits */
    x[n++] = from_bits(0xffc12345u); /* a negative NaN with a payload */
    /* exp: overflow near 88.7228, FLT_MIN near -87.3365, 0 near -103.972; tanh: 1 near
    ** 9.0109; sigmoid: 1 near 16.636, subnormal and 0 near -87.3 and -103.97 */
    static const float around[] = {88.72284f, -87.33655f, -103.97208f, 9.010913f, 16.635532f, -16.635532f, -9.010913f};
    for (size_t i = 0; i < sizeof around / sizeof around[0]; i++) {
        uint32_t c = bits(around[i]);
        for (uint32_t k = c - 300; k <= c + 300; k++) x[n++] = from_bits(k);
    }
    return n;
}

START_TEST(edge_cases_like_libm)
{
    fn f = (fn)_i;
    static float x[8192], y[8192];
    int64_t n = edge_inputs(x);
    vloop(f, y, x, n);
    check_against_libm(f, x, y, n);
    /* and exactly, the values the ops document */
    float z[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f, 1000.0f, -1000.0f}, w[7];
    vloop(f, w, z, 7);
    if (f == EXP) {
        ck_assert(isinf(w[0]) && w[0] > 0);
        ck_assert(bits(w[1]) == 0 && bits(w[6]) == 0); /* +0 */
        ck_assert(isinf(w[5]) && w[5] > 0);
        ck_assert(w[3] == 1.0f && w[4] == 1.0f);
    } else if (f == TANH) {
        ck_assert(w[0] == 1.0f && w[1] == -1.0f && w[5] == 1.0f && w[6] == -1.0f);
        ck_assert(bits(w[3]) == 0x80000000u && bits(w[4]) == 0); /* tanh(-0) = -0 */
        ck_assert(bits(one(TANH, 1e-45f)) == bits(1e-45f) && bits(one(TANH, -1e-40f)) == bits(-1e-40f));
    } else {
        ck_assert(w[0] == 1.0f && bits(w[1]) == 0 && w[5] == 1.0f && bits(w[6]) == 0);
        ck_assert(w[3] == 0.5f && w[4] == 0.5f);
    }
    ck_assert(isnan(w[2]));
}
END_TEST

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ISA_LOOPS 1
/* The same loop compiled for each ISA level, called directly (the clone dispatch
** picks only one of them on a given CPU). */
#define ISA_LOOP(name, TARGET)                                                                                         \
    __attribute__((target(TARGET), noinline)) static void name(fn f, float *restrict y, const float *restrict x,       \
                                                               int64_t n)                                              \
    {                                                                                                                  \
        if (f == EXP)                                                                                                  \
            for (int64_t i = 0; i < n; i++) y[i] = ad__vm_expf(x[i]);                                                  \
        else if (f == TANH)                                                                                            \
            for (int64_t i = 0; i < n; i++) y[i] = ad__vm_tanhf(x[i]);                                                 \
        else                                                                                                           \
            for (int64_t i = 0; i < n; i++) y[i] = ad__vm_sigmoidf(x[i]);                                              \
    }
ISA_LOOP(loop_v4, "arch=x86-64-v4")
ISA_LOOP(loop_v3, "arch=x86-64-v3")
ISA_LOOP(loop_base, "arch=x86-64")
#endif

/* The vector loops give the scalar code's bits, on every ISA this CPU runs,
** for edge cases and random inputs of every length up to 70 (the vector tails). */
START_TEST(same_bits_on_every_isa)
{
    fn f = (fn)_i;
    static float x[8192 + 4096], y[8192 + 4096], s[8192 + 4096];
    int64_t n = edge_inputs(x);
    ad_rng r;
    ad_rng_seed(&r, 7 + (uint64_t)f);
    for (int k = 0; k < 4096; k++) x[n++] = from_bits((uint32_t)ad_rng_u64(&r)); /* any bits */
    for (int64_t i = 0; i < n; i++) s[i] = one(f, x[i]);
    int variants = 1;
#ifdef ISA_LOOPS
    variants = 4;
#endif
    for (int v = 0; v < variants; v++) {
#ifdef ISA_LOOPS
        if (v == 1 && !__builtin_cpu_supports("x86-64-v4")) continue; /* valgrind hides AVX-512 */
        if (v == 2 && !__builtin_cpu_supports("x86-64-v3")) continue;
#endif
        for (int64_t len = 1; len <= 70; len++)
            for (int64_t at = 0; at + len <= n; at += 997) {
                memset(y + at, 0, (size_t)len * sizeof *y);
#ifdef ISA_LOOPS
                if (v == 1)
                    loop_v4(f, y + at, x + at, len);
                else if (v == 2)
                    loop_v3(f, y + at, x + at, len);
                else if (v == 3)
                    loop_base(f, y + at, x + at, len);
                else
#endif
                    vloop(f, y + at, x + at, len);
                for (int64_t i = at; i < at + len; i++)
                    ck_assert_msg(same(y[i], s[i]), "%s variant %d: (%a) = %a, scalar %a", fn_names[f], v, x[i], y[i],
                                  s[i]);
            }
    }
    vloop(f, y, x, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(same(y[i], s[i]), "%s: (%a) = %a, scalar %a", fn_names[f], x[i], y[i], s[i]);
}
END_TEST

/* The F32 ops ad_exp/ad_tanh/ad_sigmoid compute these functions, for tensors and for scalars. */
START_TEST(ops_use_them)
{
    fn f = (fn)_i;
    static float x[8192];
    int64_t n = edge_inputs(x);
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    ad_tensor *xv = ad_tensor_from(AD_F32, 1, &n, x);
    ck_assert_ptr_nonnull(xv);
    ad_var xs = ad_const(t, xv);
    ad_var y = f == EXP ? ad_exp(xs) : f == TANH ? ad_tanh(xs) : ad_sigmoid(xs);
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    const float *yd = ad_value(y)->data;
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(same(yd[i], one(f, x[i])), "ad_%s F32 (%a) = %a, vmath %a", fn_names[f], x[i], yd[i],
                      one(f, x[i]));
    for (int64_t i = 0; i < n; i += 37) {
        ad_var s = ad_scalar(t, AD_F32, x[i]);
        ad_var v = f == EXP ? ad_exp(s) : f == TANH ? ad_tanh(s) : ad_sigmoid(s);
        ck_assert_int_eq(ad_tape_status(t), AD_OK);
        float got = *(const float *)ad_value(v)->data;
        ck_assert_msg(same(got, one(f, x[i])), "ad_%s F32 scalar (%a) = %a, vmath %a", fn_names[f], x[i], got,
                      one(f, x[i]));
    }
    ad_tensor_free(xv);
    ad_tape_free(t);
}
END_TEST

/* ---- ad__tanh_d: double tanh, its own polynomial below |x| = 0.625 ---- */

/* |got - want| in units of the last place of want's double (a subnormal's ulp below DBL_MIN). */
static double ulps(double got, long double want)
{
    double w = (double)want, u = nextafter(fabs(w), INFINITY) - fabs(w);
    return (double)(fabsl((long double)got - want) / (long double)u);
}

/* x87's 64-bit long double arithmetic is really there (under valgrind it is done in double). */
static bool long_double_is_wide(void)
{
    volatile long double one = 1.0L, tiny = 0x1p-60L;
    return LDBL_MANT_DIG >= 64 && one + tiny != one;
}

/* Inputs below 0.625 in magnitude: uniform, near the boundary, and spread over small exponents. */
static double tanh_input(ad_rng *r, int k)
{
    double u = ad_rng_uniform(r);
    switch (k % 4) {
    case 0:
        return 0.625 * u;
    case 1:
        return -0.625 * u;
    case 2:
        return 0.625 - 0.05 * u;
    default:
        return 0.625 * ldexp(u, -(int)(ad_rng_uniform(r) * 40.0)) * (k & 4 ? -1 : 1);
    }
}

START_TEST(tanh_double)
{
    ad_rng r;
    ad_rng_seed(&r, 11);
    int n = tu_quick() ? 20000 : 400000;
    bool wide = long_double_is_wide();
    double sum_lib = 0;
    for (int k = 0; k < n; k++) {
        double x = tanh_input(&r, k), y = ad__tanh_d(x);
        ck_assert(fabs(x) < 0.625);
        if (wide) { /* against tanhl: within 1 ulp (the comment in vmath.h: 0.97 at most in 2 x 10^7) */
            double e = ulps(y, tanhl((long double)x));
            ck_assert_msg(e <= 1.0, "tanh(%a) = %a: %.3f ulp from tanhl", x, y, e);
        }
        double d = ulps(y, tanh(x)); /* libm's is within 2 ulp (glibc), ours within 1 */
        sum_lib += d;
        ck_assert_msg(d <= 3.0, "tanh(%a) = %a, libm %a", x, y, tanh(x));
    }
    ck_assert_msg(sum_lib / n < 0.5, "mean distance from libm %.3f ulp", sum_lib / n);
    /* libm's own from 0.625 on, the input itself below 2^-27, signs and special values */
    const double same_as_libm[] = {0.625, -0.625, 0.7, 1.0, -3.5, 19.0, 22.0, 30.0, -1000.0, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof same_as_libm / sizeof same_as_libm[0]; i++)
        ck_assert(ad__tanh_d(same_as_libm[i]) == tanh(same_as_libm[i]));
    ck_assert(isnan(ad__tanh_d(NAN)));
    const double tiny[] = {0x1p-28, -0x1p-28, 1e-300, -1e-300, 0x1p-1074, -0x1p-1074, DBL_MIN};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) ck_assert(ad__tanh_d(tiny[i]) == tiny[i]);
    ck_assert(signbit(ad__tanh_d(-0.0)) && ad__tanh_d(-0.0) == 0 && !signbit(ad__tanh_d(0.0)));
    ck_assert(ad__tanh_d(-0.3) == -ad__tanh_d(0.3)); /* odd */
    double below = nextafter(0.625, 0);              /* the polynomial's last input: continuous with libm's side */
    ck_assert(ulps(ad__tanh_d(below), tanh(0.625)) <= 3.0 && ad__tanh_d(below) <= tanh(0.625));
}
END_TEST

/* The F64 op ad_tanh computes it, for tensors and for scalars. */
START_TEST(tanh_double_in_ops)
{
    enum { N = 257 };
    double x[N];
    ad_rng r;
    ad_rng_seed(&r, 12);
    for (int k = 0; k < N; k++) x[k] = (k % 3 == 0 ? 3.0 : 0.7) * (2.0 * ad_rng_uniform(&r) - 1.0);
    ad_tape *t = ad_tape_new();
    ck_assert_ptr_nonnull(t);
    int64_t n = N;
    ad_tensor *xv = ad_tensor_from(AD_F64, 1, &n, x);
    ck_assert_ptr_nonnull(xv);
    const double *yd = ad_value(ad_tanh(ad_const(t, xv)))->data;
    ck_assert_int_eq(ad_tape_status(t), AD_OK);
    for (int k = 0; k < N; k++) {
        ck_assert_msg(yd[k] == ad__tanh_d(x[k]), "ad_tanh F64 (%a) = %a, vmath %a", x[k], yd[k], ad__tanh_d(x[k]));
        double s = *(const double *)ad_value(ad_tanh(ad_scalar(t, AD_F64, x[k])))->data;
        ck_assert_msg(s == ad__tanh_d(x[k]), "ad_tanh F64 scalar (%a) = %a, vmath %a", x[k], s, ad__tanh_d(x[k]));
    }
    ad_tensor_free(xv);
    ad_tape_free(t);
}
END_TEST

static Suite *vmath_suite(void)
{
    Suite *s = suite_create("vmath");
    TCase *tc = tcase_create("accuracy");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, sweep_within_one_ulp, 0, NFN);
    tcase_add_loop_test(tc, grid_rarely_differs, 0, NFN);
    tcase_add_loop_test(tc, edge_cases_like_libm, 0, NFN);
    suite_add_tcase(s, tc);
    tc = tcase_create("vector");
    tcase_add_loop_test(tc, same_bits_on_every_isa, 0, NFN);
    tcase_add_loop_test(tc, ops_use_them, 0, NFN);
    suite_add_tcase(s, tc);
    tc = tcase_create("double");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tanh_double);
    tcase_add_test(tc, tanh_double_in_ops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(vmath_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* test_conv.c: convolution, pooling, where, dropout, normalization, embedding, flatten: values against direct loops, gradchecks. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad_nnops.h"
#include "test_util.h"

/* ---- helpers ---- */

#define GC(fn, ctx, n, ins)                                                                              \
    do {                                                                                                 \
        ad_check_report rep_;                                                                            \
        ad_status st_ = ad_gradcheck(fn, ctx, n, (const ad_tensor *const *)(ins), NULL, &rep_);          \
        if (st_ != AD_OK) ad_check_report_print(&rep_, stderr);                                          \
        ck_assert_msg(st_ == AD_OK, "gradcheck of %s failed: %s (input %d, element %lld: %g vs %g)", #fn, \
                      rep_.message, rep_.input, (long long)rep_.element, rep_.analytic, rep_.numeric);    \
    } while (0)

#define GGC(fn, ctx, n, ins)                                                                             \
    do {                                                                                                 \
        ad_check_report rep_;                                                                            \
        ad_status st_ = ad_gradgradcheck(fn, ctx, n, (const ad_tensor *const *)(ins), NULL, &rep_);      \
        if (st_ != AD_OK) ad_check_report_print(&rep_, stderr);                                          \
        ck_assert_msg(st_ == AD_OK, "gradgradcheck of %s failed: %s (input %d, element %lld: %g vs %g)", \
                      #fn, rep_.message, rep_.input, (long long)rep_.element, rep_.analytic, rep_.numeric); \
    } while (0)

static ad_tensor *rnd(int ndim, const int64_t *shape, uint64_t seed) { return tu_rand(AD_F64, ndim, shape, -1, 1, seed); }

/* ---- convolution ---- */

typedef struct conv_case {
    int64_t n, c, h, w, o, kh, kw;
    ad_conv2d_params p;
} conv_case;

static const conv_case conv_cases[] = {
    {2, 3, 5, 5, 4, 3, 3, {1, 1, 0, 0, 1, 1, 1}}, /* plain */
    {2, 3, 6, 7, 4, 3, 3, {2, 2, 1, 1, 1, 1, 1}}, /* stride 2, padding 1 */
    {1, 2, 7, 7, 3, 3, 3, {1, 1, 1, 1, 2, 2, 1}}, /* dilation 2 */
    {2, 4, 5, 5, 6, 3, 3, {1, 1, 1, 1, 1, 1, 2}}, /* groups 2 */
    {2, 3, 4, 4, 5, 1, 1, {1, 1, 0, 0, 1, 1, 1}}, /* 1x1: the direct path */
    {1, 3, 5, 5, 2, 1, 1, {2, 2, 0, 0, 1, 1, 1}}, /* 1x1 with stride */
    {1, 2, 5, 7, 3, 2, 4, {2, 1, 1, 2, 1, 2, 1}}, /* non-square everything */
    {1, 3, 5, 4, 3, 3, 2, {1, 2, 1, 0, 1, 1, 3}}, /* depthwise */
    {3, 1, 4, 4, 2, 4, 4, {1, 1, 0, 0, 1, 1, 1}}, /* kernel as large as the image */
    /* rows wide enough for the direct kernels (a vector of output columns; x86-64 with AVX2 or
    ** AVX-512), with a partial vector, a partial channel tile, several images and row groups */
    {1, 8, 4, 13, 8, 3, 3, {1, 1, 1, 1, 1, 1, 1}},  /* forward and input gradient direct */
    {1, 8, 5, 12, 6, 3, 3, {2, 1, 1, 1, 1, 1, 1}},  /* vertical stride 2 */
    {1, 8, 3, 14, 8, 3, 3, {1, 1, 2, 2, 2, 2, 1}},  /* dilation 2 */
    {2, 8, 2, 13, 8, 1, 1, {1, 1, 0, 0, 1, 1, 1}},  /* 1x1, no padding, two images */
};
#define NCONV ((int)(sizeof conv_cases / sizeof conv_cases[0]))

/* y[n,o,oy,ox] by the definition, one multiply-add at a time. */
static void naive_conv(const conv_case *k, const ad_tensor *x, const ad_tensor *w, double *y, int64_t oh, int64_t ow)
{
    const ad_conv2d_params *p = &k->p;
    int64_t cg = k->c / p->groups, og = k->o / p->groups;
    for (int64_t b = 0; b < k->n; b++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double s = 0;
                    int64_t g = o / og;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iy = oy * p->stride_h - p->pad_h + i * p->dilation_h;
                                int64_t ix = ox * p->stride_w - p->pad_w + j * p->dilation_w;
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                                s += ad_tensor_get(w, ((o * cg + c) * k->kh + i) * k->kw + j) *
                                     ad_tensor_get(x, ((b * k->c + g * cg + c) * k->h + iy) * k->w + ix);
                            }
                    y[((b * k->o + o) * oh + oy) * ow + ox] = s;
                }
}

static ad_var f_conv(ad_tape *t, const ad_var *in, void *ctx)
{
    return ad_conv2d_ex(in[0], in[1], &((const conv_case *)ctx)->p);
}

/* sum(conv(x, w)^2): second derivatives in both inputs */
static ad_var f_conv_sq(ad_tape *t, const ad_var *in, void *ctx)
{
    return ad_sum(ad_square(ad_conv2d_ex(in[0], in[1], &((const conv_case *)ctx)->p)));
}

static ad_tensor *conv_x(const conv_case *k, uint64_t seed) { return rnd(AD_SHAPE(k->n, k->c, k->h, k->w), seed); }
static ad_tensor *conv_w(const conv_case *k, uint64_t seed)
{
    return rnd(AD_SHAPE(k->o, k->c / k->p.groups, k->kh, k->kw), seed);
}

START_TEST(conv_forward_matches_direct)
{
    const conv_case *k = &conv_cases[_i];
    ad_tensor *x = conv_x(k, 10 + (uint64_t)_i), *w = conv_w(k, 20 + (uint64_t)_i);
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *xx = dt ? tu_to_f32(x) : x, *ww = dt ? tu_to_f32(w) : w;
        ad_tape *t = ad_tape_new();
        ad_var y = ad_conv2d_ex(ad_const(t, xx), ad_const(t, ww), &k->p);
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        const ad_tensor *v = ad_value(y);
        ck_assert_int_eq(v->dtype, dt ? AD_F32 : AD_F64);
        int64_t oh = v->shape[2], ow = v->shape[3];
        ck_assert_int_eq(oh, (k->h + 2 * k->p.pad_h - k->p.dilation_h * (k->kh - 1) - 1) / k->p.stride_h + 1);
        ck_assert_int_eq(ow, (k->w + 2 * k->p.pad_w - k->p.dilation_w * (k->kw - 1) - 1) / k->p.stride_w + 1);
        tu_assert_shape(v, 4, (const int64_t[]){k->n, k->o, oh, ow});
        double *want = malloc((size_t)v->size * sizeof *want);
        naive_conv(k, x, w, want, oh, ow);
        tu_assert_values(v, want, dt ? 1e-5 : 1e-13, dt ? 1e-5 : 1e-12);
        free(want);
        ad_tape_free(t);
        if (dt) {
            ad_tensor_free(xx);
            ad_tensor_free(ww);
        }
    }
    ad_tensor_free(x);
    ad_tensor_free(w);
}
END_TEST

START_TEST(conv_gradcheck)
{
    const conv_case *k = &conv_cases[_i];
    ad_tensor *in[2] = {conv_x(k, 30 + (uint64_t)_i), conv_w(k, 40 + (uint64_t)_i)};
    GC(f_conv, (void *)k, 2, in);
    ad_tensor_free(in[0]);
    ad_tensor_free(in[1]);
}
END_TEST

START_TEST(conv_gradgradcheck)
{
    const conv_case *k = &conv_cases[_i];
    ad_tensor *in[2] = {conv_x(k, 50 + (uint64_t)_i), conv_w(k, 60 + (uint64_t)_i)};
    GGC(f_conv_sq, (void *)k, 2, in);
    if (!tu_quick()) GGC(f_conv, (void *)k, 2, in);
    ad_tensor_free(in[0]);
    ad_tensor_free(in[1]);
}
END_TEST

/* The adjoint ops checked on their own: inputs g and w / x and g. */
static ad_var f_grad_input(ad_tape *t, const ad_var *in, void *ctx)
{
    const conv_case *k = ctx;
    return ad__conv2d_grad_input(in[0], in[1], k->h, k->w, &k->p);
}
static ad_var f_grad_weight(ad_tape *t, const ad_var *in, void *ctx)
{
    const conv_case *k = ctx;
    return ad__conv2d_grad_weight(in[0], in[1], k->kh, k->kw, &k->p);
}
/* squared so the second derivative is not identically zero */
static ad_var f_grad_input_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_grad_input(t, in, ctx))); }
static ad_var f_grad_weight_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_grad_weight(t, in, ctx))); }

START_TEST(conv_adjoints)
{
    const conv_case *k = &conv_cases[_i];
    ad_tensor *x = conv_x(k, 70 + (uint64_t)_i), *w = conv_w(k, 80 + (uint64_t)_i);
    ad_tape *t = ad_tape_new();
    ad_var y = ad_conv2d_ex(ad_const(t, x), ad_const(t, w), &k->p);
    ck_assert(ad_ok(y));
    const ad_tensor *vy = ad_value(y);
    ad_tensor *g = rnd(vy->ndim, vy->shape, 90 + (uint64_t)_i);
    /* <g, conv(x, w)> = <grad_input(g, w), x> = <grad_weight(x, g), w> */
    ad_var gi = ad__conv2d_grad_input(ad_const(t, g), ad_const(t, w), k->h, k->w, &k->p);
    ad_var gw = ad__conv2d_grad_weight(ad_const(t, x), ad_const(t, g), k->kh, k->kw, &k->p);
    ck_assert_msg(ad_ok(gi) && ad_ok(gw), "%s", ad_tape_error(t));
    double a = 0, b = 0, c = 0;
    for (int64_t i = 0; i < vy->size; i++) a += ad_tensor_get(g, i) * ad_tensor_get(vy, i);
    for (int64_t i = 0; i < x->size; i++) b += ad_tensor_get(ad_value(gi), i) * ad_tensor_get(x, i);
    for (int64_t i = 0; i < w->size; i++) c += ad_tensor_get(ad_value(gw), i) * ad_tensor_get(w, i);
    TU_ASSERT_CLOSE(b, a, 1e-12, 1e-12);
    TU_ASSERT_CLOSE(c, a, 1e-12, 1e-12);
    ad_tape_free(t);
    ad_tensor *in1[2] = {g, w}, *in2[2] = {x, g};
    GC(f_grad_input, (void *)k, 2, in1);
    GC(f_grad_weight, (void *)k, 2, in2);
    GGC(f_grad_input_sq, (void *)k, 2, in1);
    GGC(f_grad_weight_sq, (void *)k, 2, in2);
    ad_tensor_free(x);
    ad_tensor_free(w);
    ad_tensor_free(g);
}
END_TEST

START_TEST(conv_errors)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_f64(AD_SHAPE(1, 3, 5, 5), NULL), *w = tu_f64(AD_SHAPE(4, 2, 3, 3), NULL);
    ad_tensor *x3 = tu_f64(AD_SHAPE(3, 5, 5), NULL), *wf = ad_tensor_new(AD_F32, AD_SHAPE(4, 3, 3, 3));
    ad_tensor *wbig = tu_f64(AD_SHAPE(4, 3, 7, 7), NULL);
    /* channels do not match */
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, w), 1, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_conv2d"));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "[4,2,3,3]"));
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x3), ad_const(t, w), 1, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, wf), 1, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_DTYPE);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, w), 0, 0, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, w), 1, -1, 1, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, w), 1, 0, 1, 2))); /* 3 channels, 2 groups */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, wbig), 1, 0, 1, 1))); /* kernel larger than image */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "does not fit"));
    ad_tape_reset(t);
    ck_assert(ad_ok(ad_conv2d(ad_const(t, x), ad_const(t, wbig), 1, 1, 1, 1))); /* fits with padding */
    ck_assert(!ad_ok(ad_conv2d_ex(ad_const(t, x), ad_const(t, wbig), NULL)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(w);
    ad_tensor_free(x3);
    ad_tensor_free(wf);
    ad_tensor_free(wbig);
}
END_TEST

/* A small CNN's gradients agree between the fast sweep and a recorded (AD_CREATE_GRAPH) one, F32. */
START_TEST(conv_fast_and_recorded_agree)
{
    ad_tensor *x = tu_rand(AD_F32, AD_SHAPE(2, 2, 8, 8), -1, 1, 5), *w1 = tu_rand(AD_F32, AD_SHAPE(4, 2, 3, 3), -1, 1, 6);
    ad_tensor *w2 = tu_rand(AD_F32, AD_SHAPE(3, 4, 3, 3), -1, 1, 7);
    ad_tensor *g[2][2];
    for (int mode = 0; mode < 2; mode++) {
        ad_tape *t = ad_tape_new();
        g[mode][0] = ad_tensor_new(AD_F32, AD_SHAPE(4, 2, 3, 3));
        g[mode][1] = ad_tensor_new(AD_F32, AD_SHAPE(3, 4, 3, 3));
        ad_var h = ad_relu(ad_conv2d(ad_const(t, x), ad_param(t, w1, g[mode][0]), 1, 1, 1, 1));
        h = ad_max_pool2d(h, 2, 2, 0);
        h = ad_avg_pool2d(ad_conv2d(h, ad_param(t, w2, g[mode][1]), 1, 1, 1, 1), 2, 0, 0);
        ad_var loss = ad_sum(ad_square(h));
        ck_assert_int_eq(ad_backward(loss, NULL, mode ? AD_CREATE_GRAPH : 0), AD_OK);
        ad_tape_free(t);
    }
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < g[0][k]->size; i++)
            TU_ASSERT_CLOSE(ad_tensor_get(g[0][k], i), ad_tensor_get(g[1][k], i), 1e-6, 1e-6);
    for (int k = 0; k < 2; k++) {
        ad_tensor_free(g[0][k]);
        ad_tensor_free(g[1][k]);
    }
    ad_tensor_free(x);
    ad_tensor_free(w1);
    ad_tensor_free(w2);
}
END_TEST

/* Wider shapes for the SIMD paths, F32 and F64 against sums by the definition: the weight gradient's
** kernel (channels as vector lanes: counts that fill 1, 2, 3, 4 vectors or part of one, tap counts
** that leave a partial tile, the transposes' edges), the stride-2 forward, padding, dilation,
** groups, one image; and the same bits from 1 and 2 threads. Small: the suite runs under valgrind. */
static const conv_case wide_cases[] = {
    {2, 5, 9, 11, 40, 3, 3, {1, 1, 1, 1, 1, 1, 1}},   /* 40 channels: 2.5 vectors of 16, 5 of 8 */
    {1, 3, 8, 17, 64, 3, 3, {2, 2, 1, 1, 1, 1, 1}},   /* stride 2, one image, 64 channels */
    {2, 4, 10, 35, 20, 3, 3, {2, 2, 1, 1, 1, 1, 1}},  /* stride 2, output rows wider than a vector */
    {1, 6, 7, 9, 18, 5, 5, {1, 2, 2, 2, 1, 1, 1}},    /* 5x5, strides 1 x 2, 150 taps */
    {2, 4, 9, 33, 16, 3, 3, {2, 2, 1, 1, 1, 1, 1}},   /* stride 2, 17 wide: a vector and one */
    {1, 2, 6, 10, 9, 3, 3, {1, 1, 2, 2, 2, 2, 1}},    /* dilation 2, 9 channels */
    {2, 8, 5, 13, 24, 3, 3, {2, 2, 1, 1, 1, 1, 2}},   /* groups 2, stride 2 */
    {1, 1, 12, 30, 32, 3, 3, {1, 1, 1, 1, 1, 1, 1}},  /* a first layer: one channel, 9 taps */
    {2, 3, 6, 16, 8, 1, 1, {2, 2, 0, 0, 1, 1, 1}},    /* 1x1 with stride 2 */
    {2, 8, 12, 20, 64, 3, 3, {1, 1, 1, 1, 1, 1, 1}},  /* large enough for two threads */
    {2, 8, 24, 40, 64, 3, 3, {2, 2, 1, 1, 1, 1, 1}},  /* the same with stride 2 */
    {2, 1, 60, 62, 32, 3, 3, {1, 1, 1, 1, 1, 1, 1}},  /* a first layer on two threads: another tile shape */
    {2, 32, 23, 23, 64, 1, 1, {1, 1, 0, 0, 1, 1, 1}}, /* a 1x1 on two threads: another weight-gradient tile */
    /* the lane kernels (64 taps or more, channels as vector lanes): 40 channels in tiles of 3 + 2
    ** vectors of 8 or one of 3 x 16, 99 positions (a partial tile); stride 2; dilation 2 with 28
    ** channels; groups of 16 channels, whose input gradient takes the lane path too */
    {2, 8, 9, 11, 40, 3, 3, {1, 1, 1, 1, 1, 1, 1}},
    {1, 8, 10, 35, 48, 3, 3, {2, 2, 1, 1, 1, 1, 1}},
    {2, 16, 7, 9, 28, 3, 3, {1, 1, 1, 1, 2, 2, 1}},
    {1, 32, 6, 10, 32, 3, 3, {1, 1, 1, 1, 1, 1, 2}},
    /* input gradients of strided convolutions by the lane kernels, a phase per residue of the input
    ** position: stride 2 on odd sizes; a 1x1 with stride 2, whose odd rows and columns get no tap
    ** (zeros); strides 3 x 2 with unequal padding and a dilated height */
    {2, 16, 9, 13, 24, 3, 3, {2, 2, 1, 1, 1, 1, 1}},
    {1, 16, 10, 11, 64, 1, 1, {2, 2, 0, 0, 1, 1, 1}},
    {1, 16, 11, 12, 8, 3, 3, {3, 2, 1, 2, 2, 1, 1}},
    {2, 16, 24, 40, 32, 3, 3, {2, 2, 1, 1, 1, 1, 1}}, /* the phases on two threads (2.2 M multiply-adds) */
    /* 3x3 with stride 1 in F32, 16 channels or more on both sides: Winograd's F(2x2, 3x3) for the
    ** forward and the input gradient (F64 takes the lane kernels): two threads; odd output sizes
    ** (half-filled last tiles) with 17 input channels (the transforms' scalar tail); padding 2, so
    ** the input gradient reads gy without a border, and one image in blocks of tile rows;
    ** unequal padding; groups of 16 */
    {3, 16, 14, 14, 32, 3, 3, {1, 1, 1, 1, 1, 1, 1}},
    {2, 17, 13, 11, 40, 3, 3, {1, 1, 0, 0, 1, 1, 1}},
    {1, 32, 9, 7, 16, 3, 3, {1, 1, 2, 2, 1, 1, 1}},
    {1, 16, 8, 6, 24, 3, 3, {1, 1, 0, 2, 1, 1, 1}},
    {2, 32, 10, 9, 32, 3, 3, {1, 1, 1, 1, 1, 1, 2}},
    {16, 16, 8, 8, 16, 3, 3, {1, 1, 1, 1, 1, 1, 1}}, /* 16 small images: two to a unit of work */
    /* 5x5 with stride 1 in F32: F(2x2, 5x5), the same ways; padding 4 for the input gradient */
    {3, 16, 14, 14, 32, 5, 5, {1, 1, 2, 2, 1, 1, 1}},
    {2, 17, 13, 11, 40, 5, 5, {1, 1, 0, 0, 1, 1, 1}},
    {1, 32, 9, 7, 16, 5, 5, {1, 1, 4, 4, 1, 1, 1}},
    {1, 16, 8, 10, 24, 5, 5, {1, 1, 1, 3, 1, 1, 1}},
    {16, 16, 8, 8, 16, 5, 5, {1, 1, 2, 2, 1, 1, 1}},
};
#define NWIDE ((int)(sizeof wide_cases / sizeof wide_cases[0]))

/* y, and the adjoints for the output gradient g (gi, gw), by their definitions in F64. */
static void naive_conv_all(const conv_case *k, const ad_tensor *x, const ad_tensor *w, const ad_tensor *g, double *y,
                           double *gi, double *gw, int64_t oh, int64_t ow)
{
    const ad_conv2d_params *p = &k->p;
    int64_t cg = k->c / p->groups, og = k->o / p->groups;
    memset(gi, 0, (size_t)x->size * sizeof *gi);
    memset(gw, 0, (size_t)w->size * sizeof *gw);
    for (int64_t b = 0; b < k->n; b++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    int64_t yi = ((b * k->o + o) * oh + oy) * ow + ox;
                    double s = 0, gv = ad_tensor_get(g, yi);
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iy = oy * p->stride_h - p->pad_h + i * p->dilation_h;
                                int64_t ix = ox * p->stride_w - p->pad_w + j * p->dilation_w;
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                int64_t xi = ((b * k->c + o / og * cg + c) * k->h + iy) * k->w + ix;
                                s += ad_tensor_get(w, wi) * ad_tensor_get(x, xi);
                                gi[xi] += ad_tensor_get(w, wi) * gv;
                                gw[wi] += ad_tensor_get(x, xi) * gv;
                            }
                    y[yi] = s;
                }
}

START_TEST(conv_wide_paths)
{
    const conv_case *k = &wide_cases[_i];
    ad_tensor *x = conv_x(k, 110 + (uint64_t)_i), *w = conv_w(k, 120 + (uint64_t)_i);
    int64_t oh = (k->h + 2 * k->p.pad_h - k->p.dilation_h * (k->kh - 1) - 1) / k->p.stride_h + 1;
    int64_t ow = (k->w + 2 * k->p.pad_w - k->p.dilation_w * (k->kw - 1) - 1) / k->p.stride_w + 1;
    ad_tensor *g = rnd(AD_SHAPE(k->n, k->o, oh, ow), 130 + (uint64_t)_i);
    double *want[3] = {malloc((size_t)g->size * sizeof(double)), malloc((size_t)x->size * sizeof(double)),
                       malloc((size_t)w->size * sizeof(double))};
    naive_conv_all(k, x, w, g, want[0], want[1], want[2], oh, ow);
    int saved = ad_get_num_threads();
    /* two threads only where the products are large enough to use them (2^21 multiply-adds) */
    int64_t macs = k->n * k->o * oh * ow * (k->c / k->p.groups) * k->kh * k->kw;
    int runs = macs >= ((int64_t)1 << 21) ? 2 : 1;
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *xx = dt ? tu_to_f32(x) : x, *ww = dt ? tu_to_f32(w) : w, *gg = dt ? tu_to_f32(g) : g;
        ad_tensor *got[2][3] = {{NULL}};
        for (int th = 0; th < runs; th++) {
            ad_set_num_threads(th + 1);
            ad_tape *t = ad_tape_new();
            ad_var r[3] = {ad_conv2d_ex(ad_const(t, xx), ad_const(t, ww), &k->p),
                           ad__conv2d_grad_input(ad_const(t, gg), ad_const(t, ww), k->h, k->w, &k->p),
                           ad__conv2d_grad_weight(ad_const(t, xx), ad_const(t, gg), k->kh, k->kw, &k->p)};
            for (int o = 0; o < 3; o++) {
                ck_assert_msg(ad_ok(r[o]), "%s", ad_tape_error(t));
                got[th][o] = ad_tensor_clone(ad_value(r[o]));
                ck_assert_ptr_nonnull(got[th][o]);
            }
            ad_tape_free(t);
        }
        for (int o = 0; o < 3; o++) {
            /* one assertion per tensor: Check records every assertion's location with a write() */
            int64_t bad = -1;
            for (int64_t i = 0; i < got[0][o]->size && bad < 0; i++)
                if (!tu_close(ad_tensor_get(got[0][o], i), want[o][i], dt ? 1e-4 : 1e-12, dt ? 1e-4 : 1e-12)) bad = i;
            ck_assert_msg(bad < 0, "case %d, %s, result %d, element %lld: %.17g, expected %.17g", _i,
                          dt ? "F32" : "F64", o, (long long)bad, bad < 0 ? 0 : ad_tensor_get(got[0][o], bad),
                          bad < 0 ? 0 : want[o][bad]);
            if (runs == 2)
                ck_assert_msg(memcmp(got[0][o]->data, got[1][o]->data, (size_t)got[0][o]->size * (dt ? 4 : 8)) == 0,
                              "case %d, %s, result %d: 1 and 2 threads differ", _i, dt ? "F32" : "F64", o);
            ad_tensor_free(got[0][o]);
            ad_tensor_free(got[1][o]);
        }
        if (dt) {
            ad_tensor_free(xx);
            ad_tensor_free(ww);
            ad_tensor_free(gg);
        }
    }
    ad_set_num_threads(saved);
    for (int o = 0; o < 3; o++) free(want[o]);
    ad_tensor_free(x);
    ad_tensor_free(w);
    ad_tensor_free(g);
}
END_TEST

/* Infinities, NaNs and huge values in 3x3 and 5x5 stride-1 F32 convolutions with 16 channels
** (Winograd's F(2x2, r x r) and F(r x r, 2x2), whose transforms would subtract an infinity from
** itself): the results of F64's direct sums, the same infinities and NaNs, for the forward, the
** input gradient and the weight gradient; the images that hold one (also beside a tame image in the
** same unit of work), and weights with one, are computed directly. */
START_TEST(conv_winograd_special_values)
{
    const int64_t c = 16, h = 8, wd = 8, o = 16;
    for (int kase = 0; kase < 5; kase++) {
        /* cases 3 and 4: 16 images (two to a unit of work, one of them tame), 5x5 */
        int64_t n = kase < 3 ? 1 : 16, k = kase == 4 ? 5 : 3;
        ad_conv2d_params p = {1, 1, k / 2, k / 2, 1, 1, 1};
        ad_tensor *x = rnd(AD_SHAPE(n, c, h, wd), 310), *w = rnd(AD_SHAPE(o, c, k, k), 311);
        ad_tensor *g = rnd(AD_SHAPE(n, o, h, wd), 312);
        double *xd = x->data, *wdd = w->data, *gd = g->data;
        if (kase == 0 || kase >= 3) { /* the input: +inf, -inf, NaN, a huge finite value (in image 5) */
            xd += kase >= 3 ? 5 * c * h * wd : 0;
            xd[(0 * h + 2) * wd + 3] = INFINITY;
            xd[(5 * h + 6) * wd + 1] = -INFINITY;
            xd[(9 * h + 4) * wd + 4] = NAN;
            xd[(3 * h + 7) * wd + 7] = 3e38;
        } else if (kase == 1) { /* the output gradient (the input gradient's input) */
            gd[(2 * h + 0) * wd + 5] = INFINITY;
            gd[(7 * h + 3) * wd + 3] = -INFINITY;
            gd[(11 * h + 7) * wd + 0] = NAN;
        } else { /* a weight */
            wdd[(4 * c + 2) * k * k + 4] = INFINITY;
        }
        ad_tensor *x32 = tu_to_f32(x), *w32 = tu_to_f32(w), *g32 = tu_to_f32(g);
        ad_tape *t = ad_tape_new();
        ad_var r[6] = {ad_conv2d_ex(ad_const(t, x), ad_const(t, w), &p),
                       ad__conv2d_grad_input(ad_const(t, g), ad_const(t, w), h, wd, &p),
                       ad__conv2d_grad_weight(ad_const(t, x), ad_const(t, g), k, k, &p),
                       ad_conv2d_ex(ad_const(t, x32), ad_const(t, w32), &p),
                       ad__conv2d_grad_input(ad_const(t, g32), ad_const(t, w32), h, wd, &p),
                       ad__conv2d_grad_weight(ad_const(t, x32), ad_const(t, g32), k, k, &p)};
        for (int e = 0; e < 6; e++) ck_assert_msg(ad_ok(r[e]), "%s", ad_tape_error(t));
        int specials = 0;
        for (int e = 0; e < 3; e++) {
            const ad_tensor *want = ad_value(r[e]), *got = ad_value(r[e + 3]);
            int64_t bad = -1;
            for (int64_t i = 0; i < want->size && bad < 0; i++) {
                double a = ad_tensor_get(got, i), b = ad_tensor_get(want, i);
                if (isnan(b) || isinf(b)) specials++;
                bool same = isnan(b) ? isnan(a) : isinf(b) ? a == b : tu_close(a, b, 1e-4, 1e-4);
                if (!same) bad = i;
            }
            ck_assert_msg(bad < 0, "case %d, result %d, element %lld: %.9g, expected %.9g", kase, e, (long long)bad,
                          bad < 0 ? 0 : ad_tensor_get(got, bad), bad < 0 ? 0 : ad_tensor_get(want, bad));
        }
        ck_assert_int_gt(specials, 10); /* the infinities and NaNs reached the outputs */
        ad_tape_free(t);
        ad_tensor_free(x32);
        ad_tensor_free(w32);
        ad_tensor_free(g32);
        ad_tensor_free(x);
        ad_tensor_free(w);
        ad_tensor_free(g);
    }
}
END_TEST

/* ---- pooling ---- */

typedef struct pool_case {
    int64_t n, c, h, w;
    ad_pool2d_params p;
} pool_case;

static const pool_case pool_cases[] = {
    {2, 2, 4, 4, {2, 2, 2, 2, 0, 0}}, /* the classic 2x2 */
    {1, 3, 5, 5, {3, 3, 2, 2, 1, 1}}, /* overlapping, padded */
    {2, 1, 5, 6, {3, 2, 1, 2, 1, 0}}, /* non-square */
    {1, 2, 3, 3, {1, 1, 1, 1, 0, 0}}, /* 1x1: identity */
    {1, 1, 7, 5, {2, 3, 0, 0, 1, 1}}, /* stride 0: the kernel size */
};
#define NPOOL ((int)(sizeof pool_cases / sizeof pool_cases[0]))

static void naive_pool(const pool_case *k, const ad_tensor *x, double *y, int64_t oh, int64_t ow, bool avg)
{
    const ad_pool2d_params *p = &k->p;
    int64_t sh = p->stride_h ? p->stride_h : p->kernel_h, sw = p->stride_w ? p->stride_w : p->kernel_w;
    for (int64_t pl = 0; pl < k->n * k->c; pl++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
                double s = 0, m = -INFINITY;
                for (int64_t i = 0; i < p->kernel_h; i++)
                    for (int64_t j = 0; j < p->kernel_w; j++) {
                        int64_t iy = oy * sh - p->pad_h + i, ix = ox * sw - p->pad_w + j;
                        if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                        double v = ad_tensor_get(x, (pl * k->h + iy) * k->w + ix);
                        s += v;
                        m = v > m ? v : m;
                    }
                y[(pl * oh + oy) * ow + ox] = avg ? s / (double)(p->kernel_h * p->kernel_w) : m;
            }
}

static ad_var f_maxpool(ad_tape *t, const ad_var *in, void *ctx) { return ad_max_pool2d_ex(in[0], &((const pool_case *)ctx)->p); }
static ad_var f_avgpool(ad_tape *t, const ad_var *in, void *ctx) { return ad_avg_pool2d_ex(in[0], &((const pool_case *)ctx)->p); }
static ad_var f_maxpool_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_maxpool(t, in, ctx))); }
static ad_var f_avgpool_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_avgpool(t, in, ctx))); }

/* the adjoints, with x a fixed constant passed through ctx where it only selects */
typedef struct pool_ctx {
    const pool_case *k;
    const ad_tensor *x;
} pool_ctx;
static ad_var f_maxgrad(ad_tape *t, const ad_var *in, void *ctx)
{
    const pool_ctx *c = ctx;
    return ad__max_pool2d_grad(ad_const(t, c->x), in[0], &c->k->p);
}
static ad_var f_maxselect(ad_tape *t, const ad_var *in, void *ctx)
{
    const pool_ctx *c = ctx;
    return ad__max_pool2d_select(ad_const(t, c->x), in[0], &c->k->p);
}
static ad_var f_maxgrad_both(ad_tape *t, const ad_var *in, void *ctx)
{
    const pool_ctx *c = ctx;
    return ad_sum(ad_square(ad__max_pool2d_grad(in[0], in[1], &c->k->p)));
}
static ad_var f_avggrad(ad_tape *t, const ad_var *in, void *ctx)
{
    const pool_ctx *c = ctx;
    return ad__avg_pool2d_grad(in[0], c->k->h, c->k->w, &c->k->p);
}
static ad_var f_avggrad_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_avggrad(t, in, ctx))); }

START_TEST(pool_forward_and_grads)
{
    const pool_case *k = &pool_cases[_i];
    ad_tensor *x = rnd(AD_SHAPE(k->n, k->c, k->h, k->w), 100 + (uint64_t)_i); /* distinct values: no ties */
    ad_tape *t = ad_tape_new();
    for (int avg = 0; avg < 2; avg++) {
        ad_var y = avg ? ad_avg_pool2d_ex(ad_const(t, x), &k->p) : ad_max_pool2d_ex(ad_const(t, x), &k->p);
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        const ad_tensor *v = ad_value(y);
        double *want = malloc((size_t)v->size * sizeof *want);
        naive_pool(k, x, want, v->shape[2], v->shape[3], avg);
        tu_assert_values(v, want, 1e-14, 1e-13);
        free(want);
        /* F32 agrees */
        ad_tensor *x32 = tu_to_f32(x);
        ad_var y32 = avg ? ad_avg_pool2d_ex(ad_const(t, x32), &k->p) : ad_max_pool2d_ex(ad_const(t, x32), &k->p);
        ck_assert(ad_ok(y32));
        for (int64_t i = 0; i < v->size; i++)
            TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y32), i), ad_tensor_get(v, i), 1e-6, 1e-6);
        ad_tensor_free(x32);
    }
    ad_tensor *in[1] = {x};
    GC(f_maxpool, (void *)k, 1, in);
    GC(f_avgpool, (void *)k, 1, in);
    GGC(f_maxpool_sq, (void *)k, 1, in);
    GGC(f_avgpool_sq, (void *)k, 1, in);
    /* the adjoint ops */
    ad_var yv = ad_max_pool2d_ex(ad_const(t, x), &k->p);
    ad_tensor *gp = rnd(ad_value(yv)->ndim, ad_value(yv)->shape, 200 + (uint64_t)_i);
    ad_tensor *gx = rnd(AD_SHAPE(k->n, k->c, k->h, k->w), 300 + (uint64_t)_i);
    pool_ctx pc = {k, x};
    ad_tensor *ing[1] = {gp}, *inx[1] = {gx}, *both[2] = {x, gp};
    GC(f_maxgrad, &pc, 1, ing);
    GC(f_maxselect, &pc, 1, inx);
    GC(f_avggrad, &pc, 1, ing);
    GGC(f_maxgrad_both, &pc, 2, both);
    GGC(f_avggrad_sq, &pc, 1, ing);
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(gp);
    ad_tensor_free(gx);
}
END_TEST

/* The 2x2 stride-2 window has its own loop: values, ties and NaN against the rule written out
** (the first maximum in row-major order wins; a NaN beats any number), in F32 and F64. */
START_TEST(maxpool_2x2_fast_path)
{
    const double v[] = {1, 3, 3, 0, 2, 2, NAN, 1, 5, 5, 5, 5, -1, 4, 4, 4, 0, NAN, 7, 7, NAN, NAN, -3, 8};
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *x64 = tu_f64(AD_SHAPE(1, 2, 2, 6), v), *x = dt ? tu_to_f32(x64) : x64;
        ad_tape *t = ad_tape_new();
        ad_var xl = ad_leaf(t, x);
        ad_var y = ad_max_pool2d(xl, 2, 2, 0);
        ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
        ck_assert_int_eq(ad_backward(ad_sum(ad_mul_scalar(y, 1.0)), NULL, 0), AD_OK);
        for (int c = 0; c < 2; c++)
            for (int ox = 0; ox < 3; ox++) {
                int best = c * 12 + 2 * ox;
                for (int k = 1; k < 4; k++) {
                    int i = c * 12 + (k / 2) * 6 + 2 * ox + k % 2;
                    if (v[i] > v[best] || (isnan(v[i]) && !isnan(v[best]))) best = i;
                }
                double got = ad_tensor_get(ad_value(y), c * 3 + ox);
                ck_assert(isnan(v[best]) ? isnan(got) : got == v[best]);
                for (int k = 0; k < 4; k++) {
                    int i = c * 12 + (k / 2) * 6 + 2 * ox + k % 2;
                    ck_assert_double_eq(ad_tensor_get(ad_grad(xl), i), i == best ? 1.0 : 0.0);
                }
            }
        ad_tape_free(t);
        if (dt) ad_tensor_free(x);
        ad_tensor_free(x64);
    }
}
END_TEST

/* The 2x2 fast path on rows of more than one vector of windows (16 on AVX-512, then a tail), odd
** sizes, ties and NaNs: values, the adjoint and the select against the first-maximum rule. */
START_TEST(maxpool_2x2_wide_rows)
{
    const int64_t n = 2, c = 2, h = 5, w = 41, oh = 2, ow = 20;
    ad_tensor *x64 = tu_rand(AD_F64, AD_SHAPE(n, c, h, w), -1, 1, 77);
    for (int64_t i = 0; i < x64->size; i++) { /* ties (values in steps of 1/4) and some NaNs */
        double v = floor(ad_tensor_get(x64, i) * 4) / 4;
        ad_tensor_set(x64, i, i % 23 == 5 ? NAN : v);
    }
    ad_tensor *g64 = tu_rand(AD_F64, AD_SHAPE(n, c, oh, ow), -1, 1, 78), *gx64 = tu_rand(AD_F64, AD_SHAPE(n, c, h, w), -1, 1, 79);
    ad_pool2d_params p = {2, 2, 2, 2, 0, 0};
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *x = dt ? tu_to_f32(x64) : x64, *g = dt ? tu_to_f32(g64) : g64, *gx = dt ? tu_to_f32(gx64) : gx64;
        ad_tape *t = ad_tape_new();
        ad_var y = ad_max_pool2d_ex(ad_const(t, x), &p);
        ad_var gi = ad__max_pool2d_grad(ad_const(t, x), ad_const(t, g), &p);
        ad_var sel = ad__max_pool2d_select(ad_const(t, x), ad_const(t, gx), &p);
        ck_assert_msg(ad_ok(y) && ad_ok(gi) && ad_ok(sel), "%s", ad_tape_error(t));
        int bad = 0;
        for (int64_t pl = 0; pl < n * c; pl++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    int64_t best = -1;
                    for (int k = 0; k < 4; k++) {
                        int64_t i = (pl * h + 2 * oy + k / 2) * w + 2 * ox + k % 2;
                        double v = ad_tensor_get(x, i), b = best < 0 ? 0 : ad_tensor_get(x, best);
                        if (best < 0 || v > b || (isnan(v) && !isnan(b))) best = i;
                    }
                    int64_t o = (pl * oh + oy) * ow + ox;
                    double want = ad_tensor_get(x, best), got = ad_tensor_get(ad_value(y), o);
                    bad += !(isnan(want) ? isnan(got) : got == want);
                    bad += ad_tensor_get(ad_value(sel), o) != ad_tensor_get(gx, best);
                    for (int k = 0; k < 4; k++) {
                        int64_t i = (pl * h + 2 * oy + k / 2) * w + 2 * ox + k % 2;
                        bad += ad_tensor_get(ad_value(gi), i) != (i == best ? ad_tensor_get(g, o) : 0.0);
                    }
                }
        for (int64_t pl = 0; pl < n * c; pl++) /* the last row and column lie in no window */
            for (int64_t i = 0; i < h * w; i++)
                if (i / w == h - 1 || i % w == w - 1) bad += ad_tensor_get(ad_value(gi), pl * h * w + i) != 0.0;
        ck_assert_msg(bad == 0, "%s: %d elements differ from the first-maximum rule", dt ? "F32" : "F64", bad);
        ad_tape_free(t);
        if (dt) {
            ad_tensor_free(x);
            ad_tensor_free(g);
            ad_tensor_free(gx);
        }
    }
    ad_tensor_free(x64);
    ad_tensor_free(g64);
    ad_tensor_free(gx64);
}
END_TEST

/* Max pooling large enough to split its planes over two threads (2^16 inputs or more): the 2x2
** fast path and a padded 3x3 window with stride 2, values on a coarse grid (ties) and NaNs, F32 and
** F64. Forward against the definition (first maximum, NaN winning), and the forward, the adjoint and
** the select op the same bits from 1 and 2 threads. */
START_TEST(maxpool_two_threads)
{
    static const ad_pool2d_params ps[2] = {{2, 2, 2, 2, 0, 0}, {3, 3, 2, 2, 1, 1}};
    const ad_pool2d_params *p = &ps[_i];
    ad_tensor *x64 = rnd(AD_SHAPE(3, 7, 56, 58), 900 + (uint64_t)_i);
    for (int64_t i = 0; i < x64->size; i++) {
        double v = floor(ad_tensor_get(x64, i) * 4) / 4;
        ad_tensor_set(x64, i, i % 997 == 5 ? NAN : v);
    }
    int64_t oh = (56 + 2 * p->pad_h - p->kernel_h) / p->stride_h + 1;
    int64_t ow = (58 + 2 * p->pad_w - p->kernel_w) / p->stride_w + 1;
    ad_tensor *g64 = rnd(AD_SHAPE(3, 7, oh, ow), 910 + (uint64_t)_i);
    int saved = ad_get_num_threads();
    for (int dt = 0; dt < 2; dt++) {
        ad_tensor *x = dt ? tu_to_f32(x64) : x64, *g = dt ? tu_to_f32(g64) : g64;
        ad_tensor *got[2][3] = {{NULL}};
        for (int th = 0; th < 2; th++) {
            ad_set_num_threads(th + 1);
            ad_tape *t = ad_tape_new();
            ad_var xv = ad_const(t, x);
            ad_var r[3] = {ad_max_pool2d_ex(xv, p), ad__max_pool2d_grad(xv, ad_const(t, g), p),
                           ad__max_pool2d_select(xv, ad_const(t, x), p)};
            for (int o = 0; o < 3; o++) {
                ck_assert_msg(ad_ok(r[o]), "%s", ad_tape_error(t));
                got[th][o] = ad_tensor_clone(ad_value(r[o]));
            }
            ad_tape_free(t);
        }
        int64_t bad = -1;
        for (int64_t pl = 0; pl < 21 && bad < 0; pl++)
            for (int64_t oy = 0; oy < oh && bad < 0; oy++)
                for (int64_t ox = 0; ox < ow && bad < 0; ox++) {
                    double best = 0;
                    bool any = false;
                    for (int64_t i = 0; i < p->kernel_h; i++)
                        for (int64_t j = 0; j < p->kernel_w; j++) {
                            int64_t iy = oy * p->stride_h - p->pad_h + i, ix = ox * p->stride_w - p->pad_w + j;
                            if (iy < 0 || iy >= 56 || ix < 0 || ix >= 58) continue;
                            double v = ad_tensor_get(x, (pl * 56 + iy) * 58 + ix);
                            if (!any || v > best || (isnan(v) && !isnan(best))) best = v, any = true;
                        }
                    int64_t o = (pl * oh + oy) * ow + ox;
                    double y = ad_tensor_get(got[0][0], o), s = ad_tensor_get(got[0][2], o);
                    if (!(isnan(best) ? isnan(y) && isnan(s) : y == best && s == best)) bad = o;
                }
        ck_assert_msg(bad < 0, "window %lld: not the definition's maximum (%s)", (long long)bad, dt ? "F32" : "F64");
        for (int o = 0; o < 3; o++) {
            ck_assert_msg(memcmp(got[0][o]->data, got[1][o]->data, (size_t)got[0][o]->size * (dt ? 4 : 8)) == 0,
                          "window %d, %s, result %d: 1 and 2 threads differ", _i, dt ? "F32" : "F64", o);
            ad_tensor_free(got[0][o]);
            ad_tensor_free(got[1][o]);
        }
        if (dt) {
            ad_tensor_free(x);
            ad_tensor_free(g);
        }
    }
    ad_set_num_threads(saved);
    ad_tensor_free(x64);
    ad_tensor_free(g64);
}
END_TEST

START_TEST(maxpool_ties_and_errors)
{
    /* ties: the whole gradient goes to the first maximum of each window */
    ad_tape *t = ad_tape_new();
    ad_tensor *x = tu_f64(AD_SHAPE(1, 1, 2, 2), (double[]){1, 3, 3, 0});
    ad_var xl = ad_leaf(t, x);
    ad_var y = ad_max_pool2d(xl, 2, 2, 0);
    ck_assert_double_eq(ad_item(y), 3.0);
    ck_assert_int_eq(ad_backward(y, NULL, 0), AD_OK);
    tu_assert_values(ad_grad(xl), (double[]){0, 1, 0, 0}, 0, 0);
    /* errors */
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_max_pool2d(ad_const(t, x), 2, 2, 2))); /* padding over half the kernel */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_max_pool2d"));
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_avg_pool2d(ad_const(t, x), 3, 1, 0))); /* window larger than the image */
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    ad_tensor *x2 = tu_f64(AD_SHAPE(2, 2), NULL);
    ck_assert(!ad_ok(ad_avg_pool2d(ad_const(t, x2), 1, 1, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "4-D"));
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_max_pool2d(ad_const(t, x), 0, 1, 0)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor_free(x);
    ad_tensor_free(x2);
}
END_TEST

/* ---- where and masking ---- */

static ad_tensor *g_cond; /* test-only: the mask for the where functions */
static ad_var f_where(ad_tape *t, const ad_var *in, void *ctx) { return ad_where(ad_const(t, g_cond), in[0], in[1]); }
static ad_var f_where_sq(ad_tape *t, const ad_var *in, void *ctx)
{
    return ad_sum(ad_square(ad_where(ad_const(t, g_cond), ad_mul(in[0], in[1]), in[1])));
}

START_TEST(where_values_grads)
{
    /* cond [2,1,3] broadcasts against a [4,1] and b [3] to [2,4,3] */
    g_cond = tu_f64(AD_SHAPE(2, 1, 3), (double[]){1, 0, 2, 0, 0, -1});
    ad_tensor *a = rnd(AD_SHAPE(4, 1), 1), *b = rnd(AD_SHAPE(3), 2);
    ad_tape *t = ad_tape_new();
    ad_var y = ad_where(ad_const(t, g_cond), ad_const(t, a), ad_const(t, b));
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 3, (const int64_t[]){2, 4, 3});
    for (int64_t i = 0; i < 2; i++)
        for (int64_t r = 0; r < 4; r++)
            for (int64_t c = 0; c < 3; c++) {
                double cv = ad_tensor_get(g_cond, i * 3 + c);
                double want = cv != 0 ? ad_tensor_get(a, r) : ad_tensor_get(b, c);
                ck_assert_double_eq(ad_tensor_get(ad_value(y), (i * 4 + r) * 3 + c), want);
            }
    ad_tensor *in[2] = {a, b};
    GC(f_where, NULL, 2, in);
    ad_tensor *a2 = rnd(AD_SHAPE(2, 4, 3), 3), *b2 = rnd(AD_SHAPE(4, 3), 4);
    ad_tensor *in2[2] = {a2, b2};
    GGC(f_where_sq, NULL, 2, in2);
    /* NaN in the branch not taken reaches neither the value nor the gradient */
    ad_tape_reset(t);
    ad_tensor *xv = tu_f64(AD_SHAPE(3), (double[]){-1, 0, 4});
    ad_tensor *mv = tu_f64(AD_SHAPE(3), (double[]){0, 1, 0}), *m0 = tu_f64(AD_SHAPE(3), (double[]){0, 0, 1});
    ad_var x = ad_leaf(t, xv);
    ad_var s = ad_sqrt(ad_where(ad_const(t, m0), x, ad_scalar(t, AD_F64, 1.0))); /* sqrt(-1) never taken */
    ad_var m = ad_masked_fill(ad_square(x), ad_const(t, mv), 0.0);
    ad_var l = ad_add(ad_sum(s), ad_sum(m));
    ck_assert_msg(ad_ok(l), "%s", ad_tape_error(t));
    TU_ASSERT_CLOSE(ad_item(l), 1 + 1 + 2 + 1 + 16, 0, 1e-15);
    ck_assert_int_eq(ad_backward(l, NULL, 0), AD_OK);
    tu_assert_values(ad_grad(x), (double[]){-2, 0, 0.25 + 8}, 1e-15, 1e-15);
    ad_tape_free(t);
    ad_tensor_free(g_cond);
    ad_tensor_free(a);
    ad_tensor_free(b);
    ad_tensor_free(a2);
    ad_tensor_free(b2);
    ad_tensor_free(xv);
    ad_tensor_free(mv);
    ad_tensor_free(m0);
}
END_TEST

/* ---- dropout ---- */

START_TEST(dropout_behaviour)
{
    int64_t n = tu_quick() ? 4000 : 40000;
    ad_tensor *xv = ad_tensor_new(AD_F64, AD_SHAPE(n));
    ad_tensor_fill(xv, 2.0);
    ad_tape *t = ad_tape_new();
    ad_rng r1, r2;
    ad_rng_seed(&r1, 42);
    ad_rng_seed(&r2, 42);
    ad_var x = ad_leaf(t, xv);
    ad_var y1 = ad_dropout(x, 0.25, true, &r1), y2 = ad_dropout(x, 0.25, true, &r2);
    ck_assert(ad_ok(y1) && ad_ok(y2));
    int64_t zeros = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = ad_tensor_get(ad_value(y1), i);
        ck_assert_double_eq(a, ad_tensor_get(ad_value(y2), i)); /* same seed, same mask */
        ck_assert(a == 0.0 || fabs(a - 2.0 / 0.75) < 1e-15);    /* inverted scaling */
        zeros += a == 0.0;
    }
    double frac = (double)zeros / (double)n;
    ck_assert_msg(fabs(frac - 0.25) < 0.02, "dropped fraction %g", frac);
    /* the gradient is the mask */
    ck_assert_int_eq(ad_backward(ad_sum(y1), NULL, 0), AD_OK);
    for (int64_t i = 0; i < n; i++)
        ck_assert_double_eq(ad_tensor_get(ad_grad(x), i), ad_tensor_get(ad_value(y1), i) / 2.0);
    /* the next draw differs */
    ad_var y3 = ad_dropout(x, 0.25, true, &r1);
    ck_assert(memcmp(ad_value(y3)->data, ad_value(y1)->data, (size_t)n * sizeof(double)) != 0);
    /* not training, or p = 0: x itself */
    ad_var e = ad_dropout(x, 0.5, false, NULL);
    ck_assert(e.id == x.id);
    ck_assert(ad_dropout(x, 0.0, true, &r1).id == x.id);
    /* p = 1 drops everything */
    ad_var z = ad_dropout(x, 1.0, true, &r1);
    ck_assert_double_eq(ad_item(ad_sum(ad_abs(z))), 0.0);
    /* errors */
    ck_assert(!ad_ok(ad_dropout(x, 1.5, true, &r1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    x = ad_leaf(t, xv);
    ck_assert(!ad_ok(ad_dropout(x, 0.5, true, NULL)));
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "rng"));
    ad_tape_free(t);
    ad_tensor_free(xv);
}
END_TEST

/* ---- normalization ---- */

/* Direct per-channel statistics of x [N, C, L] normalized, times gamma plus beta. */
static void naive_bn(const ad_tensor *x, const ad_tensor *gm, const ad_tensor *bt, double eps, double *y)
{
    int64_t n = x->shape[0], c = x->shape[1], l = x->size / (n * c);
    for (int64_t k = 0; k < c; k++) {
        double s = 0, ss = 0;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < l; i++) s += ad_tensor_get(x, (b * c + k) * l + i);
        double mean = s / (double)(n * l);
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < l; i++) {
                double d = ad_tensor_get(x, (b * c + k) * l + i) - mean;
                ss += d * d;
            }
        double inv = 1.0 / sqrt(ss / (double)(n * l) + eps);
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < l; i++) {
                int64_t at = (b * c + k) * l + i;
                y[at] = (ad_tensor_get(x, at) - mean) * inv * ad_tensor_get(gm, k) + ad_tensor_get(bt, k);
            }
    }
}

static ad_var f_bn(ad_tape *t, const ad_var *in, void *ctx)
{
    return ad_batch_norm(in[0], in[1], in[2], NULL, NULL, true, 0.1, 1e-5);
}
static ad_var f_bn_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(ad_sin(f_bn(t, in, ctx)))); }

START_TEST(batch_norm_values_grads_running)
{
    ad_tensor *x = rnd(AD_SHAPE(3, 2, 2, 3), 7), *gm = rnd(AD_SHAPE(2), 8), *bt = rnd(AD_SHAPE(2), 9);
    ad_tensor *rm = tu_f64(AD_SHAPE(2), (double[]){0.5, -0.5}), *rv = tu_f64(AD_SHAPE(2), (double[]){1.0, 2.0});
    ad_tape *t = ad_tape_new();
    ad_var y = ad_batch_norm(ad_const(t, x), ad_const(t, gm), ad_const(t, bt), rm, rv, true, 0.1, 1e-5);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 4, x->shape);
    double want[36];
    naive_bn(x, gm, bt, 1e-5, want);
    tu_assert_values(ad_value(y), want, 1e-12, 1e-12);
    /* running statistics moved 10% toward the batch's (unbiased variance) */
    for (int64_t k = 0; k < 2; k++) {
        double s = 0, ss = 0;
        for (int64_t b = 0; b < 3; b++)
            for (int64_t i = 0; i < 6; i++) s += ad_tensor_get(x, (b * 2 + k) * 6 + i);
        double mean = s / 18;
        for (int64_t b = 0; b < 3; b++)
            for (int64_t i = 0; i < 6; i++) ss += pow(ad_tensor_get(x, (b * 2 + k) * 6 + i) - mean, 2);
        TU_ASSERT_CLOSE(ad_tensor_get(rm, k), 0.9 * (k ? -0.5 : 0.5) + 0.1 * mean, 1e-14, 1e-13);
        TU_ASSERT_CLOSE(ad_tensor_get(rv, k), 0.9 * (k ? 2.0 : 1.0) + 0.1 * ss / 17, 1e-14, 1e-13);
    }
    /* eval mode uses them */
    ad_var ye = ad_batch_norm(ad_const(t, x), ad_const(t, gm), AD_NO_VAR, rm, rv, false, 0.1, 1e-5);
    ck_assert_msg(ad_ok(ye), "%s", ad_tape_error(t));
    for (int64_t i = 0; i < x->size; i++) {
        int64_t k = (i / 6) % 2;
        double w = (ad_tensor_get(x, i) - ad_tensor_get(rm, k)) / sqrt(ad_tensor_get(rv, k) + 1e-5) * ad_tensor_get(gm, k);
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(ye), i), w, 1e-14, 1e-13);
    }
    /* errors */
    ck_assert(!ad_ok(ad_batch_norm(ad_const(t, x), AD_NO_VAR, AD_NO_VAR, NULL, NULL, false, 0.1, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_batch_norm(ad_const(t, x), ad_const(t, x), AD_NO_VAR, NULL, NULL, true, 0.1, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "gamma"));
    ad_tape_free(t);
    ad_tensor *in[3] = {x, gm, bt};
    GC(f_bn, NULL, 3, in);
    GGC(f_bn_sq, NULL, 3, in);
    ad_tensor_free(x);
    ad_tensor_free(gm);
    ad_tensor_free(bt);
    ad_tensor_free(rm);
    ad_tensor_free(rv);
}
END_TEST

static ad_var f_ln(ad_tape *t, const ad_var *in, void *ctx) { return ad_layer_norm(in[0], in[1], in[2], 2, 1e-5); }
static ad_var f_ln_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(ad_sin(f_ln(t, in, ctx)))); }

START_TEST(layer_norm_values_grads)
{
    ad_tensor *x = rnd(AD_SHAPE(2, 3, 2, 2), 11), *gm = rnd(AD_SHAPE(2, 2), 12), *bt = rnd(AD_SHAPE(2, 2), 13);
    ad_tape *t = ad_tape_new();
    ad_var y = ad_layer_norm(ad_const(t, x), ad_const(t, gm), ad_const(t, bt), 2, 1e-5);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    for (int64_t r = 0; r < 6; r++) {
        double s = 0, ss = 0;
        for (int64_t i = 0; i < 4; i++) s += ad_tensor_get(x, r * 4 + i);
        for (int64_t i = 0; i < 4; i++) ss += pow(ad_tensor_get(x, r * 4 + i) - s / 4, 2);
        for (int64_t i = 0; i < 4; i++) {
            double w = (ad_tensor_get(x, r * 4 + i) - s / 4) / sqrt(ss / 4 + 1e-5) * ad_tensor_get(gm, i) +
                       ad_tensor_get(bt, i);
            TU_ASSERT_CLOSE(ad_tensor_get(ad_value(y), r * 4 + i), w, 1e-13, 1e-12);
        }
    }
    /* layer norm over [C, L] of a batch of one equals batch norm of the transposed data: both are
    ** the same normalization, so the two compositions must agree */
    ad_tensor *x1 = rnd(AD_SHAPE(1, 6), 14);
    ad_var ln = ad_layer_norm(ad_const(t, x1), AD_NO_VAR, AD_NO_VAR, 1, 1e-5);
    ad_var bn = ad_batch_norm(ad_reshape(ad_const(t, x1), 3, (const int64_t[]){6, 1, 1}), AD_NO_VAR, AD_NO_VAR, NULL,
                              NULL, true, 0.1, 1e-5);
    ck_assert_msg(ad_ok(ln) && ad_ok(bn), "%s", ad_tape_error(t));
    for (int64_t i = 0; i < 6; i++)
        TU_ASSERT_CLOSE(ad_tensor_get(ad_value(ln), i), ad_tensor_get(ad_value(bn), i), 1e-14, 1e-13);
    ck_assert(!ad_ok(ad_layer_norm(ad_const(t, x), ad_const(t, x), AD_NO_VAR, 2, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_SHAPE);
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_layer_norm(ad_const(t, x), AD_NO_VAR, AD_NO_VAR, 5, 1e-5)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_ARG);
    ad_tape_free(t);
    ad_tensor *in[3] = {x, gm, bt};
    GC(f_ln, NULL, 3, in);
    GGC(f_ln_sq, NULL, 3, in);
    ad_tensor_free(x);
    ad_tensor_free(x1);
    ad_tensor_free(gm);
    ad_tensor_free(bt);
}
END_TEST

/* ---- embedding and flatten ---- */

static const int64_t emb_idx[5] = {2, 0, 2, 3, 2};
static ad_var f_emb(ad_tape *t, const ad_var *in, void *ctx) { return ad_embedding(in[0], 5, emb_idx); }
static ad_var f_emb_sq(ad_tape *t, const ad_var *in, void *ctx) { return ad_sum(ad_square(f_emb(t, in, ctx))); }

START_TEST(embedding_and_flatten)
{
    ad_tensor *w = rnd(AD_SHAPE(4, 3), 21);
    ad_tape *t = ad_tape_new();
    ad_var wl = ad_leaf(t, w);
    ad_var y = ad_embedding(wl, 5, emb_idx);
    ck_assert_msg(ad_ok(y), "%s", ad_tape_error(t));
    tu_assert_shape(ad_value(y), 2, (const int64_t[]){5, 3});
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_double_eq(ad_tensor_get(ad_value(y), i * 3 + j), ad_tensor_get(w, emb_idx[i] * 3 + j));
    ck_assert_int_eq(ad_backward(ad_sum(y), NULL, 0), AD_OK);
    /* row 2 used three times, row 1 never */
    tu_assert_values(ad_grad(wl), (double[]){1, 1, 1, 0, 0, 0, 3, 3, 3, 1, 1, 1}, 0, 0);
    ck_assert(!ad_ok(ad_embedding(wl, 1, (const int64_t[]){4})));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_INDEX);
    ck_assert_ptr_nonnull(strstr(ad_tape_error(t), "ad_embedding"));
    ad_tape_reset(t);
    ck_assert(!ad_ok(ad_embedding(ad_leaf(t, w), 1, (const int64_t[]){-1})));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_INDEX);
    ad_tape_reset(t);
    /* flatten */
    ad_tensor *x = rnd(AD_SHAPE(2, 3, 4, 5), 22);
    ad_var xv = ad_leaf(t, x);
    tu_assert_shape(ad_value(ad_flatten(xv, 1, -1)), 2, (const int64_t[]){2, 60});
    tu_assert_shape(ad_value(ad_flatten(xv, 1, 2)), 3, (const int64_t[]){2, 12, 5});
    tu_assert_shape(ad_value(ad_flatten(xv, 0, -1)), 1, (const int64_t[]){120});
    ad_var f = ad_flatten(xv, 1, -1);
    ck_assert_int_eq(ad_backward(ad_sum(ad_square(f)), NULL, 0), AD_OK);
    for (int64_t i = 0; i < x->size; i++) ck_assert_double_eq(ad_tensor_get(ad_grad(xv), i), 2 * ad_tensor_get(x, i));
    ck_assert(!ad_ok(ad_flatten(xv, 2, 1)));
    ck_assert_int_eq(ad_tape_status(t), AD_ERR_AXIS);
    ad_tape_free(t);
    ad_tensor *in[1] = {w};
    GC(f_emb, NULL, 1, in);
    GGC(f_emb_sq, NULL, 1, in);
    ad_tensor_free(w);
    ad_tensor_free(x);
}
END_TEST

static Suite *conv_suite(void)
{
    Suite *s = suite_create("conv");
    TCase *c = tcase_create("conv2d");
    tcase_add_loop_test(c, conv_forward_matches_direct, 0, NCONV);
    tcase_add_loop_test(c, conv_gradcheck, 0, NCONV);
    tcase_add_loop_test(c, conv_gradgradcheck, 0, NCONV);
    tcase_add_loop_test(c, conv_adjoints, 0, NCONV);
    tcase_add_test(c, conv_errors);
    tcase_add_test(c, conv_fast_and_recorded_agree);
    tcase_add_loop_test(c, conv_wide_paths, 0, NWIDE);
    tcase_add_test(c, conv_winograd_special_values);
    tcase_set_timeout(c, 600);
    suite_add_tcase(s, c);
    TCase *p = tcase_create("pool");
    tcase_add_loop_test(p, pool_forward_and_grads, 0, NPOOL);
    tcase_add_test(p, maxpool_2x2_fast_path);
    tcase_add_test(p, maxpool_2x2_wide_rows);
    tcase_add_test(p, maxpool_ties_and_errors);
    tcase_add_loop_test(p, maxpool_two_threads, 0, 2);
    tcase_set_timeout(p, 600);
    suite_add_tcase(s, p);
    TCase *m = tcase_create("nn");
    tcase_add_test(m, where_values_grads);
    tcase_add_test(m, dropout_behaviour);
    tcase_add_test(m, batch_norm_values_grads_running);
    tcase_add_test(m, layer_norm_values_grads);
    tcase_add_test(m, embedding_and_flatten);
    tcase_set_timeout(m, 600);
    suite_add_tcase(s, m);
    return s;
}

int main(void) { return tu_run(conv_suite()); }

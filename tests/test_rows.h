/* test_rows.h: the test rows of ops.def as values, for the tests generated from them (test_ops, test_higher,
** test_fastpath). */
#ifndef AUTODIFF_TEST_ROWS_H
#define AUTODIFF_TEST_ROWS_H

#include <math.h>

#include "tape.h"

/*
** An elementwise op's row: UNARY(build, ref, p0, p1, lo, hi, domain, order2) or
** BINARY(build, ref, alo, ahi, blo, bhi, bdomain, order2) in ops.def. Other ops are CUSTOM:
** their tests are written by hand. Each field is read by a switch generated from the list, so
** an op added to ops.def with an elementwise row is tested everywhere with no other edit; and
** its build expression calls the public front end, so a missing ad.h line fails the build.
*/
typedef enum op_row_kind { ROW_CUSTOM, ROW_UNARY, ROW_BINARY } op_row_kind;

typedef struct op_row {
    ad_op op;
    op_row_kind kind;
    double p[2];     /* unary: the attributes given to build and ref */
    double lo, hi;   /* unary: the input's range; binary: a's */
    bool away;       /* unary: magnitudes in [lo, hi) with random signs (off a kink at 0) */
    double blo, bhi; /* binary: b's range */
    bool baway;      /* binary: b's magnitudes in [blo, bhi), random signs */
    bool squared;    /* the second-order check squares the op's result (ops linear in pieces) */
    bool fast;       /* the op has a fast VJP */
} op_row;

/* The row's tokens as values. */
#define ROW_DOMAIN_PLAIN false
#define ROW_DOMAIN_AWAY true
#define ROW_ORDER2_AS_IS false
#define ROW_ORDER2_SQUARED true

/* op's row (kind ROW_CUSTOM for a hand-tested op). */
static inline op_row op_row_of(ad_op op)
{
    op_row r = {op, ROW_CUSTOM, {0, 0}, 0, 0, false, 0, 0, false, false, false};
    switch (op) {
#define UNARY(build, ref, p0, p1, lo_, hi_, domain, order2)                                                            \
    r.kind = ROW_UNARY;                                                                                                \
    r.p[0] = p0;                                                                                                       \
    r.p[1] = p1;                                                                                                       \
    r.lo = lo_;                                                                                                        \
    r.hi = hi_;                                                                                                        \
    r.away = ROW_DOMAIN_##domain;                                                                                      \
    r.squared = ROW_ORDER2_##order2;                                                                                   \
    break;
#define BINARY(build, ref, alo, ahi, blo_, bhi_, bdomain, order2)                                                      \
    r.kind = ROW_BINARY;                                                                                               \
    r.lo = alo;                                                                                                        \
    r.hi = ahi;                                                                                                        \
    r.blo = blo_;                                                                                                      \
    r.bhi = bhi_;                                                                                                      \
    r.baway = ROW_DOMAIN_##bdomain;                                                                                    \
    r.squared = ROW_ORDER2_##order2;                                                                                   \
    break;
#define CUSTOM break;
#define AD_OP(ID, name, nin, family, grad, fastvjp, ...)                                                               \
    case AD_OP_##ID:                                                                                                   \
        r.fast = AD_FAST_ROW_##fastvjp;                                                                                \
        AD_TEST_ROW(__VA_ARGS__)
#define AD_FAST_ROW_FAST true
#define AD_FAST_ROW_NOFAST false
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
    default:
        break;
    }
    return r;
}

/* The row's build expression on vars x (and y for a binary op); attributes from the row. */
static inline ad_var op_row_build(const op_row *row, ad_var x, ad_var y)
{
    const double *p = row->p;
    (void)p;
    (void)y;
    switch (row->op) {
#define UNARY(build, ...) return build;
#define BINARY(build, ...) return build;
#define CUSTOM break;
#define AD_OP(ID, name, nin, family, grad, fast, ...)                                                                  \
    case AD_OP_##ID:                                                                                                   \
        AD_TEST_ROW(__VA_ARGS__)
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
    default:
        break;
    }
    return (ad_var){x.tape, AD_NO_NODE, 0};
}

/* The row's reference value in plain C at a (and b for a binary op). */
static inline double op_row_ref(const op_row *row, double a, double b)
{
    const double *p = row->p;
    (void)p;
    (void)b;
    switch (row->op) {
#define UNARY(build, ref, ...) return ref;
#define BINARY(build, ref, ...) return ref;
#define CUSTOM break;
#define AD_OP(ID, name, nin, family, grad, fast, ...)                                                                  \
    case AD_OP_##ID:                                                                                                   \
        AD_TEST_ROW(__VA_ARGS__)
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
    default:
        break;
    }
    return NAN;
}

/* The function the second-order check differentiates: the op, squared when the row says so. */
static inline ad_var op_row_order2(const op_row *row, ad_var x, ad_var y)
{
    ad_var v = op_row_build(row, x, y);
    return row->squared ? ad_square(v) : v;
}

#endif

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

/* What op_row_switch does with op's row: fill in the row, build the op on vars, or compute the
** reference value. */
typedef enum op_row_mode { ROW_FILL, ROW_BUILD, ROW_REF } op_row_mode;

/* Sets a row's fields: v holds p[0], p[1], lo, hi, blo, bhi. */
static inline void row_set(op_row *row, op_row_kind kind, const double *v, bool away, bool baway, bool squared)
{
    row->kind = kind;
    row->p[0] = v[0];
    row->p[1] = v[1];
    row->lo = v[2];
    row->hi = v[3];
    row->blo = v[4];
    row->bhi = v[5];
    row->away = away;
    row->baway = baway;
    row->squared = squared;
}

/* The one switch over ops.def's test rows: with ROW_FILL, *row from op's row (kind ROW_CUSTOM for a
** hand-tested op); with ROW_BUILD, the op on vars x (and y for a binary op) with row's attributes;
** with ROW_REF, its reference value in plain C at a (and b) into *ref. */
static inline ad_var op_row_switch(op_row_mode mode, op_row *row, ad_var x, ad_var y, double a, double b,
                                   double *ref)
{
    const double *p = row->p;
    (void)p, (void)y, (void)a, (void)b;
    switch (row->op) {
#define ROW_CASE(kind, v, away, baway, order2, value, build)                                             \
    if (mode == ROW_FILL) {                                                                              \
        row_set(row, kind, v, away, baway, ROW_ORDER2_##order2);                                         \
        break;                                                                                           \
    }                                                                                                    \
    if (mode == ROW_REF) {                                                                               \
        *ref = (value);                                                                                  \
        break;                                                                                           \
    }                                                                                                    \
    return (build);
#define UNARY(build, value, p0, p1, lo_, hi_, domain, order2)                                            \
    ROW_CASE(ROW_UNARY, ((double[]){p0, p1, lo_, hi_, 0, 0}), ROW_DOMAIN_##domain, false, order2, value, build)
#define BINARY(build, value, alo, ahi, blo_, bhi_, bdomain, order2)                                      \
    ROW_CASE(ROW_BINARY, ((double[]){0, 0, alo, ahi, blo_, bhi_}), false, ROW_DOMAIN_##bdomain, order2, value, build)
#define CUSTOM break;
#define AD_OP(ID, name, nin, family, grad, fastvjp, ...)                                                 \
    case AD_OP_##ID:                                                                                     \
        row->fast = AD_FAST_ROW_##fastvjp;                                                               \
        AD_TEST_ROW(__VA_ARGS__)
#define AD_FAST_ROW_FAST true
#define AD_FAST_ROW_NOFAST false
#include "ops.def"
#undef AD_OP
#undef UNARY
#undef BINARY
#undef CUSTOM
#undef ROW_CASE
#undef AD_FAST_ROW_FAST
#undef AD_FAST_ROW_NOFAST
    default:
        break;
    }
    return (ad_var){x.tape, AD_NO_NODE, 0};
}

/* op's row (kind ROW_CUSTOM for a hand-tested op). */
static inline op_row op_row_of(ad_op op)
{
    op_row r = {op, ROW_CUSTOM, {0, 0}, 0, 0, false, 0, 0, false, false, false};
    op_row_switch(ROW_FILL, &r, AD_NO_VAR, AD_NO_VAR, 0, 0, NULL);
    return r;
}

/* The row's build expression on vars x (and y for a binary op). */
static inline ad_var op_row_build(const op_row *row, ad_var x, ad_var y)
{
    op_row r = *row;
    return op_row_switch(ROW_BUILD, &r, x, y, 0, 0, NULL);
}

/* The row's reference value in plain C at a (and b for a binary op). */
static inline double op_row_ref(const op_row *row, double a, double b)
{
    op_row r = *row;
    double v = NAN;
    op_row_switch(ROW_REF, &r, AD_NO_VAR, AD_NO_VAR, a, b, &v);
    return v;
}

/* The function the second-order check differentiates: the op, squared when the row says so. */
static inline ad_var op_row_order2(const op_row *row, ad_var x, ad_var y)
{
    ad_var v = op_row_build(row, x, y);
    return row->squared ? ad_square(v) : v;
}

#endif

/* backward.h: what the backward sweep (backward.c) offers the files above it; never installed. */
#ifndef AUTODIFF_BACKWARD_H
#define AUTODIFF_BACKWARD_H

#include "vjp.h"

/* The packed gradient g of a multi-output custom or checkpoint node (tape.h's
** ad_custom_rec), split into one var per output (gout[k], shaped like output k);
** g itself for one output. */
AD_INTERNAL bool ad__custom_split(ad_tape *t, const ad_custom_rec *r, ad_var g, ad_var *gout);

#endif

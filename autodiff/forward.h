/* forward.h: what the forward sweep (forward.c) offers the files above it; never installed. */
#ifndef AUTODIFF_FORWARD_H
#define AUTODIFF_FORWARD_H

#include "jvp.h"

/* ad_tangents sweeping only nodes from `first` on (a recomputed segment's, whose
** inputs are earlier nodes): nodes before it get no tangent but the xs. */
AD_INTERNAL ad_status ad__tangents_from(uint32_t first, int n, const ad_var *xs, const ad_var *vs, int m,
                                        const ad_var *ys, ad_var *out);

#endif

/* jvp.h: what the ops' tangent rules (JVPs) are and what they use; never installed. */
#ifndef AUTODIFF_JVP_H
#define AUTODIFF_JVP_H

#include "tape.h"

/*
** A tangent rule: given the tangents tx[i] of node n's inputs (vars; an invalid
** var, id AD_NO_NODE, stands for a zero tangent, and at least one is valid),
** returns the tangent of n's output, shaped and typed like it, or an invalid var
** for a zero tangent. Written with the engine's own ops like the VJPs, so a
** tangent sweep is recorded on the tape and can be differentiated again
** (reverse over forward), and it runs over recorded VJPs too (forward over
** reverse). Each op's rule sits beside its forward kernel and VJP; ops.def's
** tangent column says which ops have one (JVP: declared here, a missing one
** fails the link) and which have a zero tangent by definition (NOJVP).
*/
typedef ad_var (*ad_jvp_fn)(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
#define JVP(name) ad_var ad__jvp_##name(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx)

#define AD_JVP_DECL_JVP(name) AD_INTERNAL JVP(name);
#define AD_JVP_DECL_NOJVP(name)
#define AD_OP(ID, name, nin, family, grad, fast, test, tangent) AD_JVP_DECL_##tangent(name)
#include "ops.def"
#undef AD_OP

/* The rules by op, from ops.def (op_table.c); NULL for a NOJVP op. */
AD_INTERNAL extern const ad_jvp_fn ad__jvps[AD_OP_COUNT];

/* true when a tangent is given (not the zero tangent). */
static inline bool ad__has(ad_var v) { return v.id != AD_NO_NODE; }
/* a + b where either may be the zero tangent (invalid var); beside ad_add (ops_binary.c). */
AD_INTERNAL ad_var ad__tsum(ad_var a, ad_var b);
/* v broadcast to node n's output shape when it is not that shape already
** (the tangent of one operand of a broadcasting op). Invalid stays invalid.
** Beside ad_broadcast_to (ops_shape.c). */
AD_INTERNAL ad_var ad__tfit(ad_tape *t, const ad_node *n, ad_var v);
/* The tangent of input i, or zeros shaped like input i when it has none. */
static inline ad_var ad__tor0(ad_tape *t, const ad_node *n, const ad_var *tx, int i)
{
    return ad__has(tx[i]) ? tx[i] : ad__zeros_like(ad__inv(t, n, i));
}

#endif

/* custom.h: what custom.c shares with checkpoint.c (recording a custom node, naming it in errors) and the
** custom nodes' tangent rules; the record itself is in tape.h; never installed. */
#ifndef AUTODIFF_CUSTOM_H
#define AUTODIFF_CUSTOM_H

#include "backward.h"
#include "kernels.h"

/* The custom op's tangent rule, for forward mode: tout = d(node)/d(inputs) tin,
** where tin[j] (a var, or AD_NO_VAR for a zero tangent) is input j's tangent.
** AD_ERR_UNSUPPORTED (recorded, naming the op) for an op given without jvp. */
AD_INTERNAL ad_status ad__custom_jvp(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tin,
                                     ad_var *tout);
/* The same as the tangent rules forward mode's table (jvp.h's JVP(name)) takes:
** the tangent of node n's output from its inputs' tangents tx (an invalid var: zero),
** an invalid var for a zero tangent or after recording an error. A raw VJP's result
** has none: AD_ERR_UNSUPPORTED naming the op. A checkpoint's is in checkpoint.c (the
** segment recorded again and swept). */
AD_INTERNAL ad_var ad__jvp_custom(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
AD_INTERNAL ad_var ad__jvp_custom_out(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
AD_INTERNAL ad_var ad__jvp_custom_grad(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
/* Builds the record and the node(s) for op (or, with fn and replay set, a checkpoint
** whose outputs are `vals`). Shared by ad_custom_n and ad_checkpoint. */
AD_INTERNAL ad_status ad__custom_record(ad_tape *t, ad_op kind, const ad_custom_op *op, ad_fn_n fn,
                                        ad_replay_fn replay, void *ctx, int n, const ad_var *in,
                                        const ad_tensor *vals, ad_var *out);
/* A checkpoint's replay hook (tape.h's ad_replay_fn). */
AD_INTERNAL ad_status ad__checkpoint_replay(ad_tape *t, const ad_node *n, ad_var **outs);
/* Prefixes the tape's current error message with "custom op 'NAME': " once. */
AD_INTERNAL void ad__custom_blame(ad_tape *t, const char *name, const char *what);

#endif

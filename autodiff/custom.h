/* custom.h: the record behind a custom-op or checkpoint node, and the hooks the tape, the sweep and the inspectors call; never installed. */
#ifndef AUTODIFF_CUSTOM_H
#define AUTODIFF_CUSTOM_H

#include "backward.h"
#include "kernels.h"

/*
** A custom op (or a checkpointed segment) of n inputs and n_out outputs is one
** node, op CUSTOM (CHECKPOINT), whose attr.idx holds its record's address in the
** arena (converted to const int64_t * and back, which C allows: the record is
** 16-byte aligned; nothing reads it as integers).
** With one output the node's value is that output. With several, the node's
** value is all outputs flattened and packed one after the other (offsets in
** the record), and each output is a CUSTOM_OUT node that views its part of the
** packed data (attr.i[0] its index, attr.i[1] its offset); its VJP pads its
** gradient back into the packed shape, so the custom node's gradient holds
** every output's gradient when its own VJP runs.
*/
typedef struct ad_custom_rec {
    ad_custom_op op;    /* a copy of the caller's descriptor (name copied too) */
    void *ctx;          /* borrowed */
    ad_fn_n fn;         /* checkpoints: the segment */
    int n, n_out;
    bool *diff;         /* per input (a copy; all true when the descriptor had NULL) */
    uint32_t *outs;     /* node ids of the outputs (the node itself when n_out == 1) */
    int64_t *offset;    /* n_out + 1 element offsets into the packed value */
    ad_tensor *shapes;  /* n_out output headers (data NULL) */
} ad_custom_rec;

static inline const ad_custom_rec *ad__rec(const ad_node *n) { return (const ad_custom_rec *)(const void *)n->attr.idx; }
static inline const int64_t *ad__rec_ref(const ad_custom_rec *r) { return (const int64_t *)(const void *)r; }
static inline bool ad__is_custom(const ad_node *n)
{
    return n->op == AD_OP_CUSTOM || n->op == AD_OP_CUSTOM_OUT || n->op == AD_OP_CUSTOM_GRAD ||
           n->op == AD_OP_CHECKPOINT;
}
/* The name errors, DOT and anomaly messages show for node n: the op table's
** ("ad_matmul") or a custom op's own ("solve"). */
AD_INTERNAL const char *ad__node_name(const ad_tape *t, const ad_node *n);
/* The custom op's tangent rule, for forward mode: tout = d(node)/d(inputs) tin,
** where tin[j] (a var, or AD_NO_VAR for a zero tangent) is input j's tangent.
** AD_ERR_UNSUPPORTED (recorded, naming the op) for an op given without jvp. */
AD_INTERNAL ad_status ad__custom_jvp(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tin,
                                     ad_var *tout);
/* The same as the tangent rules forward mode's table (forward.h's JVP(name)) takes:
** the tangent of node n's output from its inputs' tangents tx (an invalid var: zero),
** an invalid var for a zero tangent or after recording an error. A raw VJP's result
** has none: AD_ERR_UNSUPPORTED naming the op. A checkpoint's is in checkpoint.c (the
** segment recorded again and swept). */
AD_INTERNAL ad_var ad__jvp_custom(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
AD_INTERNAL ad_var ad__jvp_custom_out(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
AD_INTERNAL ad_var ad__jvp_custom_grad(ad_tape *t, const ad_node *n, uint32_t self, const ad_var *tx);
/* The packed gradient of a multi-output node, split into one var per output
** (gout[k], shaped like output k); g itself for one output. */
AD_INTERNAL bool ad__custom_split(ad_tape *t, const ad_custom_rec *r, ad_var g, ad_var *gout);
/* Builds the record and the node(s) for op (or, with fn set, a checkpoint whose
** outputs are `vals`). Shared by ad_custom_n and ad_checkpoint. */
AD_INTERNAL ad_status ad__custom_record(ad_tape *t, ad_op kind, const ad_custom_op *op, ad_fn_n fn, void *ctx,
                                        int n, const ad_var *in, const ad_tensor *vals, ad_var *out);
/* Records checkpoint node n's segment again from its input nodes (grad on) and
** checks it computed the same outputs; *outs (arena) gets its n_out outputs. */
AD_INTERNAL ad_status ad__checkpoint_replay(ad_tape *t, const ad_node *n, ad_var **outs);
/* Prefixes the tape's current error message with "custom op 'NAME': " once. */
AD_INTERNAL void ad__custom_blame(ad_tape *t, const char *name, const char *what);

#endif

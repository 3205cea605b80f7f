/* tape.h: the tape's internals: nodes, the arena, recording (emit) and the op table; never installed. */
#ifndef AUTODIFF_TAPE_H
#define AUTODIFF_TAPE_H

#include "services.h"

/* ---- the op enum, from the op list ---- */

/* ops.def's readers: the test row (the first column past fast; it is macro-expanded before it is
** picked, so a reader's row macros keep the commas of their expansion inside parentheses), and
** grad's value as a bool. */
#define AD_FIRST(a, ...) a
#define AD_TEST_ROW(...) AD_FIRST(__VA_ARGS__, ~)
#define AD_GRAD_GRAD true
#define AD_GRAD_NOGRAD false

typedef enum ad_op {
#define AD_OP(ID, name, ...) AD_OP_##ID,
#include "ops.def"
#undef AD_OP
    AD_OP_COUNT
} ad_op;

/* Per-op attributes; which fields mean what is said next to each op. */
typedef struct ad_attr {
    double f[2];       /* scalar constants: c, slope, alpha, lo/hi */
    int64_t i[4];      /* axes, flags, bounds, sizes */
    const int64_t *idx; /* index lists, copied into the arena (custom ops: their record, custom.h) */
} ad_attr;

enum {
    AD_NODE_REQ_GRAD = 1u << 0, /* depends on a leaf/param with grad enabled */
    AD_NODE_LEAF = 1u << 1,     /* made by ad_leaf */
    AD_NODE_PARAM = 1u << 2,    /* made by ad_param */
    AD_NODE_BACKWARD = 1u << 3  /* recorded by a backward pass */
};

typedef struct ad_node {
    ad_tensor value;       /* data in the arena, or borrowed for leaves and constants */
    uint16_t op;
    uint8_t flags;
    uint8_t in_req;        /* bit i: input i (i < 8) requires a gradient (its REQ_GRAD, which never changes) */
    uint32_t nin;
    uint32_t grad;         /* leaves: node id of the gradient after backward, or AD_NO_NODE */
    uint32_t in_small[3];
    uint32_t *in;          /* in_small, or an arena array when nin > 3 */
    ad_tensor *param_grad; /* params: the caller's gradient tensor */
    ad_attr attr;
} ad_node;

#define AD_NODE_CHUNK_BITS 10
#define AD_NODE_CHUNK (1u << AD_NODE_CHUNK_BITS)

typedef struct ad_arena_block {
    struct ad_arena_block *next;
    size_t cap, used;
    unsigned char *mem; /* aligned start */
} ad_arena_block;

/* A comparison ad_branch recorded (replay.c), checked again by every replay. */
struct ad_branch {
    uint32_t a, b;   /* the compared nodes (one element each) */
    uint32_t pos;    /* the tape's length when recorded: checked before node pos is recomputed */
    uint8_t cmp;     /* ad_cmp */
    uint8_t result;  /* what the comparison gave when recorded */
};

struct ad_tape {
    ad_node **chunks;  /* node storage: stable addresses, kept across resets */
    size_t nchunks, chunks_cap;
    uint32_t count;    /* nodes recorded */
    uint32_t gen;      /* bumped by every reset: stale handles are detected */
    ad_arena_block *blocks; /* first block, the one in use is `cur` */
    ad_arena_block *cur;
    size_t arena_total;     /* bytes of all blocks */
    size_t arena_peak_use;  /* bytes used since the last reset (sum over blocks) */
    ad_status status;
    bool grad_enabled;
    bool anomaly;
    bool in_backward; /* a backward sweep is recording: new nodes are marked AD_NODE_BACKWARD */
    uint32_t bw_node; /* during backward: the node whose VJP is running (named by anomaly errors) */
    uint32_t *params; /* ids of the params recorded with a grad tensor since the reset */
    uint32_t nparams, params_cap; /* (the array is kept across resets) */
    uint32_t *borrowed; /* ids of the leaves, params and consts over a caller's tensor (version checks) */
    uint32_t nborrowed, borrowed_cap;
    /* replay (replay.c): where the recording ended, set by the first backward pass or
    ** tangent sweep since the reset, and the comparisons ad_branch recorded */
    bool rec_marked;
    uint32_t rec_count;
    struct ad_arena_block *rec_block;
    size_t rec_used;
    struct ad_branch *branches; /* (the array is kept across resets) */
    uint32_t nbranches, branches_cap;
    /* replay's scalar program (replay.c): for a recording made only of one-element F64
    ** elementwise ops over leaves, one step per op node; kept, for nodes 0 .. plan_count-1,
    ** until those nodes change (a reset, or a rewind below plan_count); arrays kept across resets */
    struct ad_replay_step *steps;
    uint32_t *plan_leaves; /* the leaf, param and const nodes among them */
    uint32_t nsteps, steps_cap, nplan_leaves, plan_leaves_cap;
    uint32_t plan_count;
    uint8_t plan_state; /* AD_PLAN_NONE (not built), AD_PLAN_OK, AD_PLAN_NO (those nodes have none) */
    bool plan_grad;     /* every differentiable step has its gradient's formulas */
    char msg[320];
};

static inline ad_node *ad__node(const ad_tape *t, uint32_t id)
{
    return &t->chunks[id >> AD_NODE_CHUNK_BITS][id & (AD_NODE_CHUNK - 1)];
}
/* Node slots are kept across resets. A slot is "clean" when it holds a zero attr and value.shape,
** value.ndim 0 and value.size 1, in == in_small, grad AD_NO_NODE and param_grad NULL: all
** ad__emit_scalar would write there for a result without attributes, which it then skips. Each
** chunk's clean bits (one per slot, a set bit: clean) follow its nodes; ad__emit_scalar sets a
** slot's bit after writing those fields, and every other recording (tape.c's node_alloc) clears it
** before it writes any. */
static inline uint64_t *ad__clean_word(ad_node *chunk, uint32_t id)
{
    return (uint64_t *)(void *)(chunk + AD_NODE_CHUNK) + ((id & (AD_NODE_CHUNK - 1)) >> 6);
}
static inline ad_var ad__var(ad_tape *t, uint32_t id) { return (ad_var){t, id, t->gen}; }
static inline ad_var ad__invalid(ad_tape *t) { return (ad_var){t, AD_NO_NODE, t ? t->gen : 0}; }
static inline const ad_tensor *ad__val(ad_var v) { return &ad__node(v.tape, v.id)->value; }
static inline bool ad__req(ad_var v) { return (ad__node(v.tape, v.id)->flags & AD_NODE_REQ_GRAD) != 0; }

/* Arena memory, valid until reset: 64-byte aligned from 64 bytes up (16 below);
** NULL (and NOMEM on the tape) on failure. The common case is inline. */
AD_INTERNAL void *ad__arena_alloc_slow(ad_tape *t, size_t n);
static inline void *ad__arena_alloc(ad_tape *t, size_t n)
{
    ad_arena_block *b = t->cur;
    if (b && n <= ((size_t)1 << 30)) {
        size_t align = n >= 64 ? 64 : 16;
        size_t at = (b->used + align - 1) & ~(align - 1), need = (n + 15) & ~(size_t)15;
        if (at <= b->cap && b->cap - at >= need) {
            b->used = at + need;
            return b->mem + at;
        }
    }
    return ad__arena_alloc_slow(t, n);
}
/* Position in the arena and node list, to drop what was recorded after it. */
typedef struct ad_mark {
    uint32_t count;
    ad_arena_block *block;
    size_t used;
} ad_mark;
AD_INTERNAL ad_mark ad__tape_mark(const ad_tape *t);
AD_INTERNAL void ad__tape_rewind(ad_tape *t, ad_mark m);
/* The tape's length when ad_branch recorded comparison i. */
AD_INTERNAL uint32_t ad__branch_pos(const ad_tape *t, uint32_t i);
/* Notes where the recording ends (once per reset): ad_tape_replay recomputes the
** nodes before it and drops those after (a backward pass's, a tangent sweep's). */
static inline void ad__replay_mark_end(ad_tape *t)
{
    if (t->rec_marked) return;
    t->rec_marked = true;
    t->rec_count = t->count;
    t->rec_block = t->cur;
    t->rec_used = t->cur ? t->cur->used : 0;
}

/* Validates op inputs: same live tape, current handles, no error yet. On false
** the var to return is ad__invalid(*t) (*t may be NULL). */
AD_INTERNAL bool ad__begin_slow(const char *op, int n, const ad_var *xs, ad_tape **t);
static inline bool ad__begin(const char *op, int n, const ad_var *xs, ad_tape **tp)
{
    ad_tape *t = n > 0 ? xs[0].tape : NULL;
    if (t && t->status == AD_OK) {
        bool ok = true;
        for (int i = 0; i < n; i++) ok &= xs[i].tape == t && xs[i].gen == t->gen && xs[i].id < t->count;
        if (ok) {
            *tp = t;
            return true;
        }
    }
    return ad__begin_slow(op, n, xs, tp);
}
/* Appends a node for op with inputs xs, output dtype/shape, and runs its forward
** kernel. Returns the var, or an invalid one after recording an error. */
AD_INTERNAL ad_var ad__emit(ad_tape *t, ad_op op, int nin, const ad_var *xs, ad_dtype dtype, int ndim,
                            const int64_t *shape, const ad_attr *attr);
/* ad__emit's first half, for front ends that compute small results themselves:
** appends the node and its value storage but runs no kernel. Returns the node
** (its id in *id), or NULL after recording an error. The caller fills the
** value, then returns ad__emit_done(t, *id) (below). */
AD_INTERNAL ad_node *ad__emit_node(ad_tape *t, ad_op op, int nin, const ad_var *xs, ad_dtype dtype, int ndim,
                                   const int64_t *shape, const ad_attr *attr, uint32_t *id);
/* The caller's tensor a leaf, param or const node borrows (its attr.idx holds the
** address), NULL for other nodes; and the check ad_backward/ad_gradients run on
** the borrowed tensors of nodes 0..top (tape.c): AD_ERR_STATE, naming the op that
** takes it and the tensor, for one written since it was recorded. */
static inline const ad_tensor *ad__borrowed(const ad_node *n)
{
    bool leafy = n->op == AD_OP_LEAF || n->op == AD_OP_PARAM || n->op == AD_OP_CONST;
    return leafy ? (const ad_tensor *)(const void *)n->attr.idx : NULL;
}
AD_INTERNAL ad_status ad__check_versions(ad_tape *t, uint32_t top, const char *fn);
/* Records anomaly detection's AD_ERR_NUMERIC for node id, naming its op, index and
** input shapes; during backward, for the node whose VJP is running (t->bw_node). */
AD_INTERNAL void ad__anomaly_fail(ad_tape *t, uint32_t id);
/* Normalizes axis into [0, ndim) (ndim 0 accepts 0 and -1 as axis 0 of a scalar
** only when allow_scalar); false (and an AD_ERR_AXIS error) when out of range. */
AD_INTERNAL bool ad__axis(ad_tape *t, const char *op, int axis, int ndim, int *out);

/* ---- the op table ---- */

typedef ad_status (*ad_fwd_fn)(ad_tape *t, ad_node *n);
/* Given gy = dL/d(output) as a var, sets gx[i] to dL/d(input i) for each input
** that needs it (ad__needs), using the engine's own ops so that the pass can be
** recorded; inputs that need no gradient are left as AD_NO_NODE. */
typedef void (*ad_vjp_fn)(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx);

typedef struct ad_op_info {
    const char *name;
    int nin; /* -1: variadic */
    ad_fwd_fn forward;
    ad_vjp_fn vjp;
    bool differentiable; /* false: outputs never carry a gradient (masks, leaves): ops.def's NOGRAD */
} ad_op_info;

enum { AD_PLAN_NONE, AD_PLAN_OK, AD_PLAN_NO };

/* The one-element F64 formulas of the unary and binary families, by op (NULL for
** other ops; ops_unary.c, ops_binary.c): c0, c1 are a unary op's attributes. */
typedef double (*ad_unary64_fn)(double x, double c0, double c1);
typedef double (*ad_binary64_fn)(double a, double b);
AD_INTERNAL extern const ad_unary64_fn ad__unary_one64[AD_OP_COUNT];
AD_INTERNAL extern const ad_binary64_fn ad__binary_one64[AD_OP_COUNT];
/* Their fast VJPs' formulas on one F64 element, by op (NULL for ops without a fast VJP):
** g = dL/dy, x (or a, b) the inputs, y the output, c0 the first attribute; the binary
** table gives input 0's then input 1's. */
typedef double (*ad_unary_grad64_fn)(double g, double x, double y, double c0);
typedef double (*ad_binary_grad64_fn)(double g, double a, double b, double y);
AD_INTERNAL extern const ad_unary_grad64_fn ad__unary_grad64[AD_OP_COUNT];
AD_INTERNAL extern const ad_binary_grad64_fn ad__binary_grad64[AD_OP_COUNT][2];

/* One step of replay's scalar program (replay.c; its reverse sweep: backward.c): node id,
** one F64 element, computed from its inputs' (ia, ib: b == a and ib == ia for a unary op). */
enum { AD_STEP_ADD, AD_STEP_SUB, AD_STEP_MUL, AD_STEP_DIV, AD_STEP_BINARY, AD_STEP_UNARY };
struct ad_replay_step {
    double *y;
    const double *a, *b;
    double c0, c1;
    union {
        ad_unary64_fn un;
        ad_binary64_fn bin;
    } f;
    ad_unary_grad64_fn gx;      /* unary: the gradient's formula */
    ad_binary_grad64_fn ga, gb; /* binary */
    uint32_t id, ia, ib;
    uint8_t kind, flags, in_req; /* (flags and in_req: the node's) */
    uint8_t leaf_in;             /* bit 0: input a is a leaf, param or const; bit 1: input b */
};

/* The table, from ops.def (op_table.c). */
AD_INTERNAL extern const ad_op_info ad__ops[AD_OP_COUNT];

/* Each op's forward kernel and recorded VJP, side by side in its family's file. */
#define AD_OP(ID, name, ...)                                                                             \
    AD_INTERNAL ad_status ad__fwd_##name(ad_tape *t, ad_node *n);                                         \
    AD_INTERNAL void ad__vjp_##name(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx);
#include "ops.def"
#undef AD_OP

/* The flags of a new node of op whose inputs requiring a gradient are the bits of in_req. */
static inline uint8_t ad__node_flags(const ad_tape *t, ad_op op, unsigned in_req)
{
    unsigned f = t->in_backward ? AD_NODE_BACKWARD : 0;
    if (in_req && t->grad_enabled && op != AD_OP_DETACH && ad__ops[op].differentiable)
        f |= AD_NODE_REQ_GRAD;
    return (uint8_t)f;
}

/* ad__emit_node for a 0-dimensional result of at most 3 inputs (in_req: bit i
** set when input i requires a gradient, as ad_node's in_req), inline while the
** tape's current node chunk and arena block have room (ad__emit_node otherwise,
** which grows them or records the error). attr may be NULL, and should be for a zero
** one: a clean slot (ad__clean_word) is then written only in part. */
static AD_ALWAYS_INLINE ad_node *ad__emit_scalar(ad_tape *t, ad_op op, int nin, const ad_var *xs,
                                                 unsigned in_req, ad_dtype dtype, const ad_attr *attr,
                                                 uint32_t *id)
{
    uint32_t k = t->count;
    ad_arena_block *b = t->cur;
    if (nin > 3 || (k >> AD_NODE_CHUNK_BITS) >= t->nchunks || k >= AD_NO_NODE - 1 || !b)
        return ad__emit_node(t, op, nin, xs, dtype, 0, NULL, attr, id);
    size_t at = b->used; /* (always a multiple of 16) */
    if (at > b->cap || b->cap - at < 16) return ad__emit_node(t, op, nin, xs, dtype, 0, NULL, attr, id);
    b->used = at + 16;
    ad_node *chunk = t->chunks[k >> AD_NODE_CHUNK_BITS], *n = &chunk[k & (AD_NODE_CHUNK - 1)];
    t->count = k + 1;
    *id = k;
    for (int i = 0; i < nin; i++) n->in_small[i] = xs[i].id;
    /* op, flags, in_req and nin in one 8-byte store (ad_node keeps them adjacent, in this order) */
    struct {
        uint16_t op;
        uint8_t flags, in_req;
        uint32_t nin;
    } head = {(uint16_t)op, ad__node_flags(t, op, in_req), (uint8_t)in_req, (uint32_t)nin};
    _Static_assert(offsetof(ad_node, flags) == offsetof(ad_node, op) + 2 &&
                       offsetof(ad_node, in_req) == offsetof(ad_node, op) + 3 &&
                       offsetof(ad_node, nin) == offsetof(ad_node, op) + 4 && sizeof head == 8,
                   "ad_node's op, flags, in_req and nin are written as one");
    memcpy(&n->op, &head, sizeof head);
    uint64_t *clean = ad__clean_word(chunk, k), bit = (uint64_t)1 << (k & 63);
    if (attr || !(*clean & bit)) { /* (a slot without attributes is then clean) */
        n->in = n->in_small;
        n->grad = AD_NO_NODE;
        n->param_grad = NULL;
        n->attr = attr ? *attr : (ad_attr){{0, 0}, {0, 0, 0, 0}, NULL};
        memset(n->value.shape, 0, sizeof n->value.shape);
        n->value.ndim = 0;
        n->value.size = 1;
        *clean = attr ? *clean & ~bit : *clean | bit;
    }
    n->value.dtype = dtype;
    n->value.data = b->mem + at;
    n->value.flags_ = 0;
    n->value.version_ = 0; /* (a kernel's ad_tensor_set on a value bumps it, so it is not kept clean) */
    return n;
}

/* ad__emit's last step: anomaly detection on node id's value, then its var. */
static inline ad_var ad__emit_done(ad_tape *t, uint32_t id)
{
    if (t->anomaly && !ad__all_finite(&ad__node(t, id)->value)) {
        ad__anomaly_fail(t, id);
        return ad__invalid(t);
    }
    return ad__var(t, id);
}

/* Input i of node n: its value, and as a var. */
static inline const ad_tensor *ad__in(const ad_tape *t, const ad_node *n, int i)
{
    return &ad__node(t, n->in[i])->value;
}
static inline ad_var ad__inv(ad_tape *t, const ad_node *n, int i) { return ad__var(t, n->in[i]); }

/* A constant node whose value borrows `data`, shaped like `like`. */
AD_INTERNAL ad_var ad__wrap(ad_tape *t, const ad_tensor *like, void *data);
/* Zeros like x (a constant var). */
AD_INTERNAL ad_var ad__zeros_like(ad_var x);

/* ---- custom-op and checkpoint nodes (custom.c, checkpoint.c) ---- */

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
/* A checkpoint's hook, set by whoever records the node (checkpoint.c): records the
** segment of node n again from its inputs, grad on, and checks it computed the same
** outputs; *outs (arena) gets its n_out outputs. The sweeps call it when they reach
** the node, so that they name no file above them. */
typedef ad_status (*ad_replay_fn)(ad_tape *t, const ad_node *n, ad_var **outs);

typedef struct ad_custom_rec {
    ad_custom_op op;    /* a copy of the caller's descriptor (name copied too) */
    void *ctx;          /* borrowed */
    ad_fn_n fn;         /* checkpoints: the segment */
    int n, n_out;
    bool *diff;         /* per input (a copy; all true when the descriptor had NULL) */
    uint32_t *outs;     /* node ids of the outputs (the node itself when n_out == 1) */
    int64_t *offset;    /* n_out + 1 element offsets into the packed value */
    ad_tensor *shapes;  /* n_out output headers (data NULL) */
    ad_replay_fn replay; /* checkpoints: the segment recorded again (below) */
} ad_custom_rec;

static inline const ad_custom_rec *ad__rec(const ad_node *n) { return (const ad_custom_rec *)(const void *)n->attr.idx; }
static inline const int64_t *ad__rec_ref(const ad_custom_rec *r) { return (const int64_t *)(const void *)r; }
static inline bool ad__is_custom(const ad_node *n)
{
    return n->op == AD_OP_CUSTOM || n->op == AD_OP_CUSTOM_OUT || n->op == AD_OP_CUSTOM_GRAD ||
           n->op == AD_OP_CHECKPOINT;
}
/* The name errors, DOT and anomaly messages show for node n: the op table's
** ("ad_matmul") or a custom op's own, from its record ("solve"). */
AD_INTERNAL const char *ad__node_name(const ad_tape *t, const ad_node *n);

#endif

/* ad_internal.h: the tape's internals shared by the engine's files; never installed. */
#ifndef AUTODIFF_AD_INTERNAL_H
#define AUTODIFF_AD_INTERNAL_H

#include "ad.h"

#include <stdarg.h>
#include <string.h>

#define AD_INTERNAL __attribute__((visibility("hidden")))
/* Internal too (never in an installed header), but exported from the shared
** library so that libautodiff-nn allocates through the same allocator and
** records errors on tapes the same way. */
#define AD_SHARED __attribute__((visibility("default")))
/* For the few front ends that must fold into each op (the scalar fast paths). */
#define AD_ALWAYS_INLINE inline __attribute__((always_inline))

/* AD_CLONES before a hot loop kernel compiles it three times (AVX-512, AVX2,
** baseline x86-64) and picks one at load time by the CPU (an ifunc: GCC on
** x86-64 with glibc; elsewhere, or with -DAD_NO_CLONES, it is empty). The
** results are the same bit for bit on every path: FP contraction is off
** (-ffp-contract=off) and no -ffast-math, so the vectorizer keeps the scalar
** order of operations. See docs/performance.md and bench/vectorization-report. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) && \
    !defined(AD_NO_CLONES) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define AD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef AD_CLONES
#define AD_CLONES
#endif

/* ---- allocation: every byte the library takes goes through here ---- */

AD_SHARED void *ad__malloc(size_t n);
AD_SHARED void *ad__calloc(size_t count, size_t size);
AD_SHARED void *ad__realloc(void *p, size_t n);
AD_SHARED void ad__free(void *p);
/* a * b into *out; false on overflow (or a negative operand). */
AD_SHARED bool ad__mul_ok(int64_t a, int64_t b, int64_t *out);
/* Formats "fn: path: message" into err (may be NULL) for the file readers and
** writers; returns s. */
AD_SHARED ad_status ad__file_error(char *err, size_t errlen, ad_status s, const char *fn, const char *path,
                                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static inline bool ad__little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ---- tensors ---- */

enum {
    AD_TENSOR_HEAP = 1u << 0,    /* header and data from ad__malloc, freed by ad_tensor_free */
    AD_TENSOR_BORROWED = 1u << 1 /* data belongs to someone else */
};

/* Checks ndim/shape and computes the element count; false on a bad shape. */
AD_INTERNAL bool ad__shape_size(int ndim, const int64_t *shape, int64_t *size);
/* Sets t's header: dims past ndim are zero, no data yet. */
static inline void ad__tensor_init(ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape, int64_t size)
{
    t->dtype = dtype;
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape); /* a constant size: a few stores, no call */
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->size = size;
    t->data = NULL;
    t->flags_ = 0;
}
static inline size_t ad__dsize(ad_dtype d) { return d == AD_F64 ? 8 : 4; }
static inline size_t ad__nbytes(const ad_tensor *t) { return (size_t)t->size * ad__dsize(t->dtype); }

/* ---- the op enum, from the op list ---- */

typedef enum ad_op {
#define AD_OP(ID, name, nin, family) AD_OP_##ID,
#include "ops.def"
#undef AD_OP
    AD_OP_COUNT
} ad_op;

/* Per-op attributes; which fields mean what is said next to each op. */
typedef struct ad_attr {
    double f[2];       /* scalar constants: c, slope, alpha, lo/hi */
    int64_t i[4];      /* axes, flags, bounds, sizes */
    const int64_t *idx; /* index lists, copied into the arena */
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
    bool in_backward;
    bool accumulate;  /* during a fast backward with AD_ACCUMULATE */
    uint32_t *params; /* ids of the params recorded with a grad tensor since the reset */
    uint32_t nparams, params_cap; /* (the array is kept across resets) */
    uint32_t bw_node; /* during backward: the node whose VJP is running */
    struct ad_gbuf *gbufs; /* during a backward without AD_CREATE_GRAPH: gradient buffers by node */
    char msg[320];
};

static inline ad_node *ad__node(const ad_tape *t, uint32_t id)
{
    return &t->chunks[id >> AD_NODE_CHUNK_BITS][id & (AD_NODE_CHUNK - 1)];
}
static inline ad_var ad__var(ad_tape *t, uint32_t id) { return (ad_var){t, id, t->gen}; }
static inline ad_var ad__invalid(ad_tape *t) { return (ad_var){t, AD_NO_NODE, t ? t->gen : 0}; }
static inline const ad_tensor *ad__val(ad_var v) { return &ad__node(v.tape, v.id)->value; }
static inline bool ad__req(ad_var v) { return (ad__node(v.tape, v.id)->flags & AD_NODE_REQ_GRAD) != 0; }

/* Arena memory, valid until reset: 64-byte aligned from 64 bytes up (16 below);
** NULL (and NOMEM on the tape) on failure. The common case is inline. */
AD_SHARED void *ad__arena_alloc_slow(ad_tape *t, size_t n);
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

/* Records the first error on the tape (later ones are ignored). */
AD_SHARED void ad__fail(ad_tape *t, ad_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
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
    bool differentiable; /* false: outputs never carry a gradient (masks, leaves) */
} ad_op_info;

/* Which op families carry gradients (the last column of ops.def). */
#define AD_FAMILY_DIFF_leaf false
#define AD_FAMILY_DIFF_mask false
#define AD_FAMILY_DIFF_binary true
#define AD_FAMILY_DIFF_unary true
#define AD_FAMILY_DIFF_reduce true
#define AD_FAMILY_DIFF_linalg true
#define AD_FAMILY_DIFF_shape true
#define AD_FAMILY_DIFF_nn true

AD_INTERNAL extern const ad_op_info ad__ops[AD_OP_COUNT];

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
** which grows them or records the error). attr may be NULL. */
static AD_ALWAYS_INLINE ad_node *ad__emit_scalar(ad_tape *t, ad_op op, int nin, const ad_var *xs,
                                                 unsigned in_req, ad_dtype dtype, const ad_attr *attr,
                                                 uint32_t *id)
{
    uint32_t k = t->count;
    ad_arena_block *b = t->cur;
    if (nin > 3 || (k >> AD_NODE_CHUNK_BITS) >= t->nchunks || k >= AD_NO_NODE - 1 || !b)
        return ad__emit_node(t, op, nin, xs, dtype, 0, NULL, attr, id);
    size_t at = (b->used + 15) & ~(size_t)15;
    if (at > b->cap || b->cap - at < 16) return ad__emit_node(t, op, nin, xs, dtype, 0, NULL, attr, id);
    b->used = at + 16;
    ad_node *n = ad__node(t, k);
    t->count = k + 1;
    *id = k;
    for (int i = 0; i < nin; i++) n->in_small[i] = xs[i].id;
    n->in = n->in_small;
    n->op = (uint16_t)op;
    n->nin = (uint32_t)nin;
    n->flags = ad__node_flags(t, op, in_req);
    n->in_req = (uint8_t)in_req;
    n->grad = AD_NO_NODE;
    n->param_grad = NULL;
    n->attr = attr ? *attr : (ad_attr){{0, 0}, {0, 0, 0, 0}, NULL};
    ad__tensor_init(&n->value, dtype, 0, NULL, 1);
    n->value.data = b->mem + at;
    return n;
}

/*
** The fast path. A backward pass without AD_CREATE_GRAPH records nothing that
** needs differentiating, so ops may supply a second VJP that works on tensors
** directly: it adds dL/d(input j) into the buffer ad__gslot() hands out,
** computing the same formula as the recorded VJP (tests check both agree).
** It returns false to decline (e.g. for broadcast shapes), and the sweep then
** runs the recorded VJP. Registered in backward.c's table.
*/
typedef bool (*ad_fast_vjp_fn)(ad_tape *t, const ad_node *n, uint32_t self, const ad_tensor *gy);

typedef struct ad_gbuf {
    void *data;    /* gradient so far, shaped like the node's value; NULL if none */
    uint32_t node; /* a node whose value holds exactly `data`, or AD_NO_NODE */
    bool owned;    /* allocated by the sweep: may be added into in place */
} ad_gbuf;

/* The buffer to add input j's gradient into (input j must need a gradient).
** *fresh is true when it holds nothing yet (write, don't add). NULL when out
** of memory (the error is on the tape). Inline but for a slot that shares
** another node's data, which is copied first (ad__gslot_slow). */
AD_INTERNAL void *ad__gslot_slow(ad_tape *t, const ad_node *n, int j, bool *fresh);
/* (bytes: input j's size in bytes, or more) */
static inline void *ad__gslot_sized(ad_tape *t, const ad_node *n, int j, size_t bytes, bool *fresh)
{
    ad_gbuf *g = &t->gbufs[n->in[j]];
    if (g->data && g->owned) {
        *fresh = false;
        return g->data;
    }
    if (!g->data) { /* (under AD_ACCUMULATE params' slots are never empty) */
        *g = (ad_gbuf){ad__arena_alloc(t, bytes), AD_NO_NODE, true};
        *fresh = true;
        return g->data;
    }
    return ad__gslot_slow(t, n, j, fresh);
}
static inline void *ad__gslot(ad_tape *t, const ad_node *n, int j, bool *fresh)
{
    return ad__gslot_sized(t, n, j, ad__nbytes(&ad__node(t, n->in[j])->value), fresh);
}
/* ad__gslot for an input of one element (F32 or F64). */
static inline void *ad__gslot1(ad_tape *t, const ad_node *n, int j, bool *fresh)
{
    return ad__gslot_sized(t, n, j, sizeof(double), fresh);
}
/* Passes gy through unchanged as input j's gradient (same shape): shares it when
** the slot is empty, adds it in otherwise (inline for one element). */
AD_INTERNAL void ad__gpass_slow(ad_tape *t, const ad_node *n, int j, const ad_tensor *gy);
static inline void ad__gpass(ad_tape *t, const ad_node *n, int j, const ad_tensor *gy)
{
    ad_gbuf *g = &t->gbufs[n->in[j]];
    if (!g->data) {
        *g = (ad_gbuf){gy->data, AD_NO_NODE, false};
    } else if (g->data && g->owned && gy->size == 1) {
        if (gy->dtype == AD_F64)
            *(double *)g->data += *(const double *)gy->data;
        else
            *(float *)g->data += *(const float *)gy->data;
    } else {
        ad__gpass_slow(t, n, j, gy);
    }
}
#define AD_FAST_VJPS(X)                                                                                  \
    X(add) X(sub) X(mul) X(div) X(add_scalar) X(mul_scalar) X(neg) X(exp) X(log) X(sqrt) X(square) X(sin) \
    X(cos) X(tanh) X(sigmoid) X(relu) X(leaky_relu) X(sum) X(mean) X(reshape) X(matmul) X(log_softmax)       \
    X(index_select)
#define AD_DECLARE_FAST(name) AD_INTERNAL bool ad__fast_##name(ad_tape *t, const ad_node *n, uint32_t self, const ad_tensor *gy);
AD_FAST_VJPS(AD_DECLARE_FAST)
#undef AD_DECLARE_FAST
/* A constant node whose value borrows `data`, shaped like `like`. */
AD_INTERNAL ad_var ad__wrap(ad_tape *t, const ad_tensor *like, void *data);

#define AD_OP(ID, name, nin, family)                                                                     \
    AD_INTERNAL ad_status ad__fwd_##name(ad_tape *t, ad_node *n);                                         \
    AD_INTERNAL void ad__vjp_##name(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx);
#include "ops.def"
#undef AD_OP

static inline const ad_tensor *ad__in(const ad_tape *t, const ad_node *n, int i)
{
    return &ad__node(t, n->in[i])->value;
}
static inline ad_var ad__inv(ad_tape *t, const ad_node *n, int i) { return ad__var(t, n->in[i]); }
static inline bool ad__needs(const ad_tape *t, const ad_node *n, int i)
{
    /* from the node's own bits: no read of the input node on the sweep's hot path */
    if (i < 8) return (n->in_req >> i) & 1;
    return (ad__node(t, n->in[i])->flags & AD_NODE_REQ_GRAD) != 0;
}
/* g summed over the axes input i was broadcast along, back to input i's shape
** (g itself when the shapes already agree). */
static inline ad_var ad__unbroadcast(ad_tape *t, const ad_node *n, int i, ad_var g)
{
    const ad_tensor *x = ad__in(t, n, i), *gv = ad_value(g);
    if (!gv || ad_shape_equal(gv, x)) return g;
    return ad_sum_to(g, x->ndim, x->shape);
}

/* ---- kernels shared between families ---- */

/* Broadcast shape of a and b into out (NumPy rules); false if incompatible. */
AD_INTERNAL bool ad__broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                                     int64_t *out);
/* Element strides of `in` seen through the broadcast to (ndim, shape): 0 on broadcast dims. */
AD_INTERNAL void ad__bcast_strides(const ad_tensor *in, int ndim, const int64_t *shape, int64_t *strides);
/* dst (shape of dst) = src broadcast to dst's shape. */
AD_INTERNAL void ad__broadcast_copy(ad_tensor *dst, const ad_tensor *src);
/* dst = src summed down to dst's shape (dst's shape broadcasts to src's). */
AD_INTERNAL void ad__sum_to_kernel(ad_tensor *dst, const ad_tensor *src);
/* dst += src, same size and dtype (any shape). */
AD_INTERNAL void ad__add_into(ad_tensor *dst, const ad_tensor *src);
/* true when every element is finite. */
AD_SHARED bool ad__all_finite(const ad_tensor *t); /* (nn/optim.c checks gradients with it) */
/* ad__emit's last step: anomaly detection on node id's value, then its var. */
static inline ad_var ad__emit_done(ad_tape *t, uint32_t id)
{
    if (t->anomaly && !ad__all_finite(&ad__node(t, id)->value)) {
        ad__anomaly_fail(t, id);
        return ad__invalid(t);
    }
    return ad__var(t, id);
}

/* C = alpha * op(A) op(B) + beta * C, row-major; op transposes when the flag is set.
** A is [m,k] (or [k,m] with ta), B is [k,n] (or [n,k] with tb). */
AD_INTERNAL ad_status ad__gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                                   float *c, int64_t ldc);
AD_INTERNAL ad_status ad__gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                                   const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                                   double *c, int64_t ldc);

/* Zeros like x (a constant var). */
AD_INTERNAL ad_var ad__zeros_like(ad_var x);
/* Non-differentiable masks used by VJPs (outputs never need a gradient). */
AD_INTERNAL ad_var ad__step(ad_var x, double lo, double hi);      /* x > 0 ? hi : lo */
AD_INTERNAL ad_var ad__inrange(ad_var x, double lo, double hi);   /* lo <= x <= hi ? 1 : 0 */
AD_INTERNAL ad_var ad__cmp_gt(ad_var a, ad_var b);                /* a > b ? 1 : a == b ? 0.5 : 0 */
AD_INTERNAL ad_var ad__eq(ad_var a, ad_var b);                    /* a == b ? 1 : 0 */

/* Iterates a shape with an odometer: advance idx (row-major), returns false at the end. */
static inline bool ad__next_index(int ndim, const int64_t *shape, int64_t *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return true;
        idx[d] = 0;
    }
    return false;
}

#endif

/* tape.c: the Wengert list: node storage, the arena, sticky errors, recording and leaves. */
#include "tape.h"

#include <math.h>
#include <stdio.h>

#define ARENA_MIN_BLOCK ((size_t)64 << 10)
#define ARENA_ALIGN ((size_t)64)
#define NODE_ALIGN ((size_t)64)

/* ---- the arena ----
** A list of blocks, bump-allocated. Reset rewinds to the first block; if the
** last cycle needed several blocks they are merged into one of the total size,
** so that a repeated step of the same size allocates nothing afterwards. */

static ad_arena_block *block_new(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(ad_arena_block) - 2 * ARENA_ALIGN) return NULL;
    unsigned char *raw = ad__malloc(sizeof(ad_arena_block) + cap + ARENA_ALIGN);
    if (!raw) return NULL;
    ad_arena_block *b = (ad_arena_block *)raw;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    uintptr_t p = ((uintptr_t)(raw + sizeof(ad_arena_block)) + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    b->mem = (unsigned char *)p;
    return b;
}

void *ad__arena_alloc_slow(ad_tape *t, size_t n)
{
    /* small values (scalars) pack at 16 bytes; anything vectorizable starts on a cache line */
    size_t align = n >= ARENA_ALIGN ? ARENA_ALIGN : 16;
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n) goto nomem;
    for (;;) {
        ad_arena_block *b = t->cur;
        if (b) {
            size_t at = (b->used + align - 1) & ~(align - 1);
            if (at <= b->cap && b->cap - at >= need) {
                b->used = at + need;
                return b->mem + at;
            }
        }
        /* the next kept block, if it is big enough; blocks past cur are empty */
        if (b && b->next && b->next->cap >= need) {
            t->cur = b->next;
            t->cur->used = 0;
            continue;
        }
        size_t cap = b ? b->cap * 2 : ARENA_MIN_BLOCK;
        if (cap < need) cap = need;
        ad_arena_block *nb = block_new(cap);
        if (!nb) goto nomem;
        t->arena_total += cap;
        if (b) {
            nb->next = b->next;
            b->next = nb;
        } else {
            t->blocks = nb;
        }
        t->cur = nb;
    }
nomem:
    ad__fail(t, AD_ERR_NOMEM, "out of memory: the tape's arena could not grow by %zu bytes", n);
    return NULL;
}

static void arena_free_all(ad_tape *t)
{
    ad_arena_block *b = t->blocks;
    while (b) {
        ad_arena_block *nx = b->next;
        ad__free(b);
        b = nx;
    }
    t->blocks = t->cur = NULL;
    t->arena_total = 0;
}

static void arena_reset(ad_tape *t)
{
    if (t->blocks && t->blocks->next && t->cur != t->blocks) {
        ad_arena_block *one = block_new(t->arena_total);
        if (one) {
            size_t total = t->arena_total;
            arena_free_all(t);
            t->blocks = one;
            t->arena_total = total;
        }
    }
    t->cur = t->blocks;
    if (t->cur) t->cur->used = 0;
}

ad_mark ad__tape_mark(const ad_tape *t)
{
    return (ad_mark){t->count, t->cur, t->cur ? t->cur->used : 0};
}

uint32_t ad__branch_pos(const ad_tape *t, uint32_t i) { return t->branches[i].pos; }

void ad__tape_rewind(ad_tape *t, ad_mark m)
{
    t->count = m.count;
    if (t->rec_marked && t->rec_count > m.count) t->rec_marked = false; /* the recording's end is gone */
    while (t->nbranches && ad__branch_pos(t, t->nbranches - 1) > m.count) t->nbranches--;
    if (m.count < t->plan_count) t->plan_state = AD_PLAN_NONE; /* nodes replay's program covers may change */
    t->cur = m.block ? m.block : t->blocks;
    if (t->cur) t->cur->used = m.block ? m.used : 0;
}

/* ---- the tape ---- */

ad_tape *ad_tape_new(void)
{
    ad_tape *t = ad__calloc(1, sizeof *t);
    if (!t) return NULL;
    t->grad_enabled = true;
    return t;
}

void ad_tape_free(ad_tape *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nchunks; i++) {
        void *raw;
        memcpy(&raw, (unsigned char *)t->chunks[i] - sizeof raw, sizeof raw);
        ad__free(raw);
    }
    ad__free(t->chunks);
    ad__free(t->params);
    ad__free(t->borrowed);
    ad__free(t->branches);
    ad__free(t->steps);
    ad__free(t->plan_leaves);
    arena_free_all(t);
    ad__free(t);
}

void ad_tape_reset(ad_tape *t)
{
    if (!t) return;
    t->count = 0;
    t->nparams = 0;
    t->nborrowed = 0;
    t->nbranches = 0;
    t->rec_marked = false;
    t->plan_state = AD_PLAN_NONE;
    t->gen++;
    t->status = AD_OK;
    t->msg[0] = '\0';
    t->in_backward = false;
    arena_reset(t);
}

ad_status ad_tape_status(const ad_tape *t) { return t ? t->status : AD_ERR_ARG; }
const char *ad_tape_error(const ad_tape *t) { return t ? t->msg : "no tape"; }

void ad_tape_clear_error(ad_tape *t)
{
    if (!t) return;
    t->status = AD_OK;
    t->msg[0] = '\0';
}

bool ad_tape_set_grad_enabled(ad_tape *t, bool on)
{
    if (!t) return false;
    bool old = t->grad_enabled;
    t->grad_enabled = on;
    return old;
}

bool ad_tape_grad_enabled(const ad_tape *t) { return t && t->grad_enabled; }
void ad_tape_set_anomaly_detection(ad_tape *t, bool on)
{
    if (t) t->anomaly = on;
}
size_t ad_tape_node_count(const ad_tape *t) { return t ? t->count : 0; }
size_t ad_tape_arena_bytes(const ad_tape *t) { return t ? t->arena_total : 0; }

void ad__fail(ad_tape *t, ad_status s, const char *fmt, ...)
{
    if (!t || t->status != AD_OK) return;
    t->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
}

/* Grows the node storage by a chunk when the next node needs one; false
** (NOMEM recorded) on failure. */
static bool node_grow(ad_tape *t)
{
    if (t->count >= AD_NO_NODE - 1) {
        ad__fail(t, AD_ERR_NOMEM, "out of memory: the tape holds the most nodes it can (%u)", t->count);
        return false;
    }
    size_t chunk = t->count >> AD_NODE_CHUNK_BITS;
    if (chunk < t->nchunks) return true;
    if (t->nchunks == t->chunks_cap) {
        size_t ncap = t->chunks_cap ? t->chunks_cap * 2 : 16;
        ad_node **nc = ad__realloc(t->chunks, ncap * sizeof *nc);
        if (!nc) goto nomem;
        t->chunks = nc;
        t->chunks_cap = ncap;
    }
    /* on a cache line (malloc gives 16 bytes): a node's hot fields then span two
    ** lines, not three; the block's own address sits just before the chunk */
    /* the nodes, then their clean bits (tape.h's ad__clean_word), none set */
    const size_t nodes = AD_NODE_CHUNK * sizeof(ad_node), bits = AD_NODE_CHUNK / 8;
    unsigned char *raw = ad__malloc(nodes + bits + NODE_ALIGN);
    if (!raw) goto nomem;
    unsigned char *c = (unsigned char *)(((uintptr_t)raw + NODE_ALIGN) & ~(uintptr_t)(NODE_ALIGN - 1));
    memcpy(c - sizeof raw, &raw, sizeof raw);
    memset(c + nodes, 0, bits);
    t->chunks[t->nchunks++] = (ad_node *)(void *)c;
    return true;
nomem:
    ad__fail(t, AD_ERR_NOMEM, "out of memory: the tape could not grow past %u nodes", t->count);
    return false;
}

/* A new node slot; NULL (NOMEM recorded) on failure. */
static inline ad_node *node_alloc(ad_tape *t, uint32_t *id)
{
    if ((t->count >> AD_NODE_CHUNK_BITS) >= t->nchunks || t->count >= AD_NO_NODE - 1) {
        if (!node_grow(t)) return NULL;
    }
    *id = t->count++;
    ad_node *chunk = t->chunks[*id >> AD_NODE_CHUNK_BITS], *n = &chunk[*id & (AD_NODE_CHUNK - 1)];
    *ad__clean_word(chunk, *id) &= ~((uint64_t)1 << (*id & 63)); /* the caller may write anything */
    /* field by field: a memset of the whole node costs more than the op itself on scalars */
    n->op = 0;
    n->flags = 0;
    n->in_req = 0;
    n->nin = 0;
    n->grad = AD_NO_NODE;
    n->in = n->in_small;
    n->param_grad = NULL;
    return n;
}

bool ad__begin_slow(const char *op, int n, const ad_var *xs, ad_tape **tp)
{
    ad_tape *t = NULL;
    for (int i = 0; i < n && !t; i++) t = xs[i].tape;
    *tp = t;
    if (!t) return false; /* nowhere to record an error: the result is invalid */
    if (t->status != AD_OK) return false;
    for (int i = 0; i < n; i++) {
        if (xs[i].tape != t) {
            ad__fail(t, AD_ERR_ARG, "%s: operand %d is %s", op, i + 1,
                     xs[i].tape ? "on a different tape" : "not a var (no tape)");
            return false;
        }
        if (xs[i].gen != t->gen) {
            ad__fail(t, AD_ERR_STATE, "%s: operand %d is a stale handle (from before ad_tape_reset)", op, i + 1);
            return false;
        }
        if (xs[i].id == AD_NO_NODE) {
            ad__fail(t, AD_ERR_ARG, "%s: operand %d is an invalid var", op, i + 1);
            return false;
        }
        if (xs[i].id >= t->count) {
            ad__fail(t, AD_ERR_STATE, "%s: operand %d refers to node %u, past the tape's end (%u)", op, i + 1,
                     xs[i].id, t->count);
            return false;
        }
    }
    return true;
}

bool ad__axis(ad_tape *t, const char *op, int axis, int ndim, int *out)
{
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        ad__fail(t, AD_ERR_AXIS, "%s: axis %d is out of range for a tensor of %d dimension%s", op, axis, ndim,
                 ndim == 1 ? "" : "s");
        return false;
    }
    *out = a;
    return true;
}

void ad__anomaly_fail(ad_tape *t, uint32_t id)
{
    if (t->in_backward && t->bw_node < t->count) id = t->bw_node;
    const ad_node *n = ad__node(t, id);
    char shapes[160] = "", one[48];
    size_t at = 0;
    for (int i = 0; i < (int)n->nin && at < sizeof shapes - 1; i++) {
        const ad_tensor *x = ad__in(t, n, i);
        ad_shape_str(x->ndim, x->shape, one, sizeof one);
        int w = snprintf(shapes + at, sizeof shapes - at, "%s%s", i ? ", " : "", one);
        if (w < 0) break;
        at += (size_t)w;
    }
    ad__fail(t, AD_ERR_NUMERIC, "%s: non-finite %s at node %u (input%s %s) during %s", ad__node_name(t, n),
             t->in_backward ? "gradient" : "output", id, n->nin == 1 ? "" : "s", n->nin ? shapes : "none",
             t->in_backward ? "backward" : "forward");
}

const char *ad__node_name(const ad_tape *t, const ad_node *n)
{
    (void)t;
    if (ad__is_custom(n) && n->attr.idx) return ad__rec(n)->op.name;
    return n->op < AD_OP_COUNT ? ad__ops[n->op].name : "?";
}

/*
** The check behind ad_tensor_version's promise: every leaf, param or const node
** up to `top` whose caller's tensor was written since it was recorded is an error
** if an op that needs a gradient takes it (conservative: whether or not its VJP
** reads the value). Only a changed tensor costs a scan for its user.
*/
ad_status ad__check_versions(ad_tape *t, uint32_t top, const char *fn)
{
    for (uint32_t k = 0; k < t->nborrowed; k++) {
        uint32_t id = t->borrowed[k];
        if (id > top || id >= t->count) continue; /* (ids past a rewind may be other nodes: ad__borrowed checks) */
        const ad_node *n = ad__node(t, id);
        const ad_tensor *src = ad__borrowed(n);
        if (!src || src->version_ == n->value.version_) continue;
        for (uint32_t c = id + 1; c <= top; c++) {
            const ad_node *u = ad__node(t, c);
            if (!(u->flags & AD_NODE_REQ_GRAD)) continue;
            for (uint32_t j = 0; j < u->nin; j++) {
                if (u->in[j] != id) continue;
                char s[96];
                const char *kind = n->op == AD_OP_LEAF ? "leaf" : n->op == AD_OP_PARAM ? "param" : "const";
                ad__fail(t, AD_ERR_STATE,
                         "%s: %s (node %u) takes as input %u the %s %s %s (node %u, tensor at %p), which was "
                         "modified after it was recorded (version %u, now %u); record the graph again after "
                         "changing it",
                         fn, ad__node_name(t, u), c, j + 1, kind, ad_shape_str(src->ndim, src->shape, s, sizeof s),
                         ad_dtype_name(src->dtype), id, (const void *)src, (unsigned)n->value.version_,
                         (unsigned)src->version_);
                return t->status;
            }
        }
    }
    return AD_OK;
}

static const ad_attr no_attr = {{0, 0}, {0, 0, 0, 0}, NULL};

/* ad__emit_node's work; m: where to rewind to on failure. */
static inline ad_node *emit_node(ad_tape *t, ad_op op, int nin, const ad_var *xs, ad_dtype dtype, int ndim,
                                 const int64_t *shape, const ad_attr *attr, uint32_t *id, ad_mark m)
{
    int64_t size = 1;
    if (ndim != 0 && !ad__shape_size(ndim, shape, &size)) {
        ad__fail(t, AD_ERR_SHAPE, "%s: the result's shape is too large", ad__ops[op].name);
        return NULL;
    }
    ad_node *n = node_alloc(t, id);
    if (!n) return NULL;
    n->op = (uint16_t)op;
    n->nin = (uint32_t)nin;
    if (nin > 3) {
        n->in = ad__arena_alloc(t, (size_t)nin * sizeof(uint32_t));
        if (!n->in) goto fail;
    }
    unsigned in_req = 0, any = 0;
    for (int i = 0; i < nin; i++) {
        n->in[i] = xs[i].id;
        unsigned r = ad__node(t, xs[i].id)->flags & AD_NODE_REQ_GRAD;
        any |= r;
        if (i < 8) in_req |= r << i;
    }
    n->flags = ad__node_flags(t, op, any);
    n->in_req = (uint8_t)in_req;
    n->attr = attr ? *attr : no_attr;
    ad__tensor_init(&n->value, dtype, ndim, shape, size);
    if (op == AD_OP_RESHAPE || op == AD_OP_DETACH || op == AD_OP_CUSTOM_OUT) {
        /* values on the tape never change, so these share their input's data */
        n->value.data = ad__val(xs[0])->data;
    } else {
        n->value.data = ad__arena_alloc(t, (size_t)size * ad_dtype_size(dtype));
        if (!n->value.data) goto fail;
    }
    return n;
fail:
    if (t->status == AD_OK) ad__fail(t, AD_ERR_NOMEM, "%s: out of memory", ad__ops[op].name);
    ad__tape_rewind(t, m);
    return NULL;
}

ad_node *ad__emit_node(ad_tape *t, ad_op op, int nin, const ad_var *xs, ad_dtype dtype, int ndim,
                       const int64_t *shape, const ad_attr *attr, uint32_t *id)
{
    return emit_node(t, op, nin, xs, dtype, ndim, shape, attr, id, ad__tape_mark(t));
}

ad_var ad__emit(ad_tape *t, ad_op op, int nin, const ad_var *xs, ad_dtype dtype, int ndim, const int64_t *shape,
                const ad_attr *attr)
{
    uint32_t id;
    ad_mark m = ad__tape_mark(t);
    ad_node *n = emit_node(t, op, nin, xs, dtype, ndim, shape, attr, &id, m);
    if (!n) return ad__invalid(t);
    if (ad__ops[op].forward(t, n) != AD_OK) {
        if (t->status == AD_OK) ad__fail(t, AD_ERR_NOMEM, "%s: out of memory", ad__ops[op].name);
        ad__tape_rewind(t, m);
        return ad__invalid(t);
    }
    return ad__emit_done(t, id);
}

/* ---- leaves ---- */

static bool leaf_ok(ad_tape *t, const char *op, const ad_tensor *v)
{
    if (!t) return false;
    if (t->status != AD_OK) return false;
    if (!v) {
        ad__fail(t, AD_ERR_ARG, "%s: value is NULL", op);
        return false;
    }
    int64_t size;
    if (ad_dtype_size(v->dtype) == 0) {
        ad__fail(t, AD_ERR_DTYPE, "%s: unknown dtype %d", op, (int)v->dtype);
        return false;
    }
    if (!ad__shape_size(v->ndim, v->shape, &size) || size != v->size || (size > 0 && !v->data)) {
        ad__fail(t, AD_ERR_SHAPE, "%s: the tensor's shape, size and data do not agree", op);
        return false;
    }
    return true;
}

static ad_var leaf_new(ad_tape *t, ad_op op, const ad_tensor *v, unsigned flags)
{
    uint32_t id;
    ad_node *n = node_alloc(t, &id);
    if (!n) return ad__invalid(t);
    n->op = (uint16_t)op;
    n->value = *v;
    n->value.flags_ = AD_TENSOR_BORROWED;
    n->flags = (uint8_t)flags;
    n->attr = (ad_attr){{0}, {0}, NULL};
    if (t->in_backward) n->flags |= AD_NODE_BACKWARD;
    return ad__var(t, id);
}

/* A leaf over the caller's tensor src: remembered with its version (in the node's
** copy of the header) for ad__check_versions. */
static ad_var borrow(ad_tape *t, ad_op op, const ad_tensor *src, unsigned flags)
{
    if (t->nborrowed == t->borrowed_cap) {
        uint32_t cap = t->borrowed_cap ? 2 * t->borrowed_cap : 16;
        uint32_t *p = cap > t->borrowed_cap ? ad__realloc(t->borrowed, (size_t)cap * sizeof *p) : NULL;
        if (!p) {
            ad__fail(t, AD_ERR_NOMEM, "%s: out of memory", ad__ops[op].name);
            return ad__invalid(t);
        }
        t->borrowed = p;
        t->borrowed_cap = cap;
    }
    ad_var v = leaf_new(t, op, src, flags);
    if (v.id != AD_NO_NODE) {
        ad__node(t, v.id)->attr.idx = (const int64_t *)(const void *)src;
        t->borrowed[t->nborrowed++] = v.id;
    }
    return v;
}

ad_var ad__wrap(ad_tape *t, const ad_tensor *like, void *data)
{
    ad_tensor v = *like;
    v.data = data;
    return leaf_new(t, AD_OP_CONST, &v, 0);
}

ad_var ad_const(ad_tape *t, const ad_tensor *value)
{
    if (!leaf_ok(t, "ad_const", value)) return ad__invalid(t);
    return borrow(t, AD_OP_CONST, value, 0);
}

ad_var ad_leaf(ad_tape *t, const ad_tensor *value)
{
    if (!leaf_ok(t, "ad_leaf", value)) return ad__invalid(t);
    return borrow(t, AD_OP_LEAF, value, AD_NODE_LEAF | (t->grad_enabled ? AD_NODE_REQ_GRAD : 0));
}

ad_var ad_param(ad_tape *t, ad_tensor *value, ad_tensor *grad)
{
    if (!leaf_ok(t, "ad_param", value)) return ad__invalid(t);
    if (grad && (grad->dtype != value->dtype || !ad_shape_equal(grad, value))) {
        char a[96], b[96];
        ad__fail(t, grad->dtype != value->dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE,
                 "ad_param: grad %s %s does not match value %s %s", ad_shape_str(grad->ndim, grad->shape, a, 96),
                 ad_dtype_name(grad->dtype), ad_shape_str(value->ndim, value->shape, b, 96),
                 ad_dtype_name(value->dtype));
        return ad__invalid(t);
    }
    if (grad && t->nparams == t->params_cap) { /* the list ad_backward's AD_ACCUMULATE starts from */
        uint32_t cap = t->params_cap ? 2 * t->params_cap : 16;
        uint32_t *p = cap > t->params_cap ? ad__realloc(t->params, (size_t)cap * sizeof *p) : NULL;
        if (!p) {
            ad__fail(t, AD_ERR_NOMEM, "ad_param: out of memory");
            return ad__invalid(t);
        }
        t->params = p;
        t->params_cap = cap;
    }
    ad_var v = borrow(t, AD_OP_PARAM, value, AD_NODE_PARAM | (t->grad_enabled ? AD_NODE_REQ_GRAD : 0));
    if (v.id != AD_NO_NODE) {
        ad__node(t, v.id)->param_grad = grad;
        if (grad) t->params[t->nparams++] = v.id;
    }
    return v;
}

ad_var ad_full(ad_tape *t, ad_dtype dtype, int ndim, const int64_t *shape, double v)
{
    if (!t || t->status != AD_OK) return ad__invalid(t);
    int64_t size;
    if (ad_dtype_size(dtype) == 0) {
        ad__fail(t, AD_ERR_DTYPE, "ad_full: unknown dtype %d", (int)dtype);
        return ad__invalid(t);
    }
    if (!ad__shape_size(ndim, shape, &size)) {
        ad__fail(t, AD_ERR_SHAPE, "ad_full: invalid shape");
        return ad__invalid(t);
    }
    ad_mark m = ad__tape_mark(t);
    uint32_t id;
    ad_node *n = node_alloc(t, &id);
    if (!n) return ad__invalid(t);
    n->op = AD_OP_CONST;
    n->attr = (ad_attr){{0}, {0}, NULL};
    if (t->in_backward) n->flags |= AD_NODE_BACKWARD;
    ad__tensor_init(&n->value, dtype, ndim, shape, size);
    n->value.data = ad__arena_alloc(t, (size_t)size * ad_dtype_size(dtype));
    if (!n->value.data) {
        ad__tape_rewind(t, m);
        return ad__invalid(t);
    }
    ad_tensor_fill(&n->value, v);
    return ad__var(t, id);
}

ad_var ad_scalar(ad_tape *t, ad_dtype dtype, double v) { return ad_full(t, dtype, 0, NULL, v); }

ad_var ad__no_var(ad_tape *t) { return ad__invalid(t); }

void *ad__tape_alloc(ad_tape *t, size_t n) { return ad__arena_alloc(t, n); }

ad_var ad__zeros_like(ad_var x)
{
    const ad_tensor *v = ad__val(x);
    return ad_full(x.tape, v->dtype, v->ndim, v->shape, 0.0);
}

static bool var_live(ad_var v)
{
    return v.tape && v.id != AD_NO_NODE && v.gen == v.tape->gen && v.id < v.tape->count;
}

bool ad_ok(ad_var v) { return var_live(v) && v.tape->status == AD_OK; }
const ad_tensor *ad_value(ad_var v) { return var_live(v) ? ad__val(v) : NULL; }
bool ad_requires_grad(ad_var v) { return var_live(v) && ad__req(v); }

double ad_item(ad_var v)
{
    const ad_tensor *x = ad_value(v);
    return x && x->size > 0 ? ad_tensor_get(x, 0) : (double)NAN;
}

const ad_tensor *ad_grad(ad_var v)
{
    if (!var_live(v)) return NULL;
    const ad_node *n = ad__node(v.tape, v.id);
    if (n->grad == AD_NO_NODE || n->grad >= v.tape->count) return NULL;
    return &ad__node(v.tape, n->grad)->value;
}

/* A node keeps its op in 16 bits. */
_Static_assert(AD_OP_COUNT <= UINT16_MAX + 1, "ad_node.op is too narrow for the op list");

/* Leaves have no kernel and no VJP: their values come from the caller, and the
** sweep stops at them (backward.c hands them their gradient). */
ad_status ad__fwd_const(ad_tape *t, ad_node *n) { return AD_OK; }
ad_status ad__fwd_leaf(ad_tape *t, ad_node *n) { return AD_OK; }
ad_status ad__fwd_param(ad_tape *t, ad_node *n) { return AD_OK; }
void ad__vjp_const(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx) {}
void ad__vjp_leaf(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx) {}
void ad__vjp_param(ad_tape *t, const ad_node *n, uint32_t self, ad_var gy, ad_var *gx) {}

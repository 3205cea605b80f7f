/* replay.c: re-evaluating a recorded tape on new leaf values in place, and the recorded comparisons that guard it. */
#include "tape.h"

#include <math.h>

/*
** A recorded tape is a straight-line program: each node's op, inputs,
** attributes and output storage are fixed. Replaying it with new values for
** some leaves is one loop forward over the nodes calling each op's forward
** kernel on the storage it already has: no node is created, nothing is
** allocated (a kernel's scratch space, e.g. convolution's columns, comes from
** the arena past the tape's end and is given back after each node).
**
** What is replayed: the nodes recorded before the first backward pass (or
** tangent sweep) since the last reset; the nodes those passes appended are
** dropped, so a replay followed by ad_backward costs what the first backward
** did, from the same arena memory.
**
** What a replay cannot see is control flow of the C program that recorded the
** tape. Decisions taken on values must go through ad_branch, which records the
** comparison; a replay whose comparison comes out the other way stops there
** with AD_ERR_STATE, and the caller records the tape again. Ops whose result
** depends on values element by element (relu, maximum, clamp, max_axis, max
** pooling's argmax, where) need no such guard: their kernels choose again on
** every replay. Values fixed at recording stay fixed: constants, a dropout
** mask (drawn once, when recorded), index lists, scalar attributes.
*/

typedef struct ad_branch branch; /* (tape.h) */

static const char *const cmp_sym[] = {"<", "<=", ">", ">=", "==", "!="};

/* The symbol of a recorded comparison (recorded ones are always in range). */
static const char *cmp_name(unsigned cmp)
{
    return cmp < sizeof cmp_sym / sizeof cmp_sym[0] ? cmp_sym[cmp] : "?";
}

static bool compare(double a, ad_cmp c, double b)
{
    switch (c) {
    case AD_CMP_LT: return a < b;
    case AD_CMP_LE: return a <= b;
    case AD_CMP_GT: return a > b;
    case AD_CMP_GE: return a >= b;
    case AD_CMP_EQ: return a == b;
    case AD_CMP_NE: return a != b;
    }
    return false;
}

static double first(const ad_tape *t, uint32_t id) { return ad_tensor_get(&ad__node(t, id)->value, 0); }

bool ad_branch(ad_var a, ad_cmp cmp, ad_var b)
{
    ad_var xs[2] = {a, b};
    ad_tape *t;
    if (!ad__begin("ad_branch", 2, xs, &t)) return false;
    if ((unsigned)cmp > AD_CMP_NE) {
        ad__fail(t, AD_ERR_ARG, "ad_branch: unknown comparison %d", (int)cmp);
        return false;
    }
    const ad_tensor *va = ad__val(a), *vb = ad__val(b);
    if (va->size != 1 || vb->size != 1) {
        char s1[96], s2[96];
        ad__fail(t, AD_ERR_SHAPE, "ad_branch: compares one element with one element, got %s and %s",
                 ad_shape_str(va->ndim, va->shape, s1, 96), ad_shape_str(vb->ndim, vb->shape, s2, 96));
        return false;
    }
    bool r = compare(first(t, a.id), cmp, first(t, b.id));
    if (t->nbranches == t->branches_cap) {
        uint32_t cap = t->branches_cap ? 2 * t->branches_cap : 16;
        branch *p = cap > t->branches_cap ? ad__realloc(t->branches, (size_t)cap * sizeof *p) : NULL;
        if (!p) {
            ad__fail(t, AD_ERR_NOMEM, "ad_branch: out of memory");
            return r;
        }
        t->branches = p;
        t->branches_cap = cap;
    }
    t->branches[t->nbranches++] = (branch){a.id, b.id, t->count, (uint8_t)cmp, r};
    return r;
}

/* false (and the error on the tape) when branch k comes out differently now. */
static bool branch_holds(ad_tape *t, const branch *k)
{
    double a = first(t, k->a), b = first(t, k->b);
    bool r = compare(a, (ad_cmp)k->cmp, b);
    if (r == (bool)k->result) return true;
    ad__fail(t, AD_ERR_STATE,
             "ad_tape_replay: replay diverged at node %u: node %u %s node %u was %s, now %s (%g %s %g); "
             "record the tape again",
             k->pos, k->a, cmp_name(k->cmp), k->b, k->result ? "true" : "false", r ? "true" : "false", a,
             cmp_name(k->cmp), b);
    return false;
}

/* Checks the new values before anything changes. */
static bool leaves_ok(ad_tape *t, int n, const ad_var *leaves, const ad_tensor *const *values)
{
    for (int i = 0; i < n; i++) {
        ad_var v = leaves[i];
        if (v.tape != t || v.gen != t->gen || v.id >= t->count) {
            ad__fail(t, AD_ERR_ARG, "ad_tape_replay: leaf %d is not a live var of this tape", i + 1);
            return false;
        }
        const ad_node *nd = ad__node(t, v.id);
        if (nd->op != AD_OP_LEAF && nd->op != AD_OP_PARAM && nd->op != AD_OP_CONST) {
            ad__fail(t, AD_ERR_ARG, "ad_tape_replay: leaf %d is node %u, an %s, not a leaf, param or constant", i + 1,
                     v.id, ad__ops[nd->op].name);
            return false;
        }
        const ad_tensor *x = values[i];
        if (!x) {
            ad__fail(t, AD_ERR_ARG, "ad_tape_replay: value %d is NULL", i + 1);
            return false;
        }
        if (x->dtype != nd->value.dtype || !ad_shape_equal(x, &nd->value) || (x->size > 0 && !x->data)) {
            char s1[96], s2[96];
            ad__fail(t, x->dtype != nd->value.dtype ? AD_ERR_DTYPE : AD_ERR_SHAPE,
                     "ad_tape_replay: value %d is %s %s, its leaf (node %u) was recorded as %s %s", i + 1,
                     ad_shape_str(x->ndim, x->shape, s1, 96), ad_dtype_name(x->dtype), v.id,
                     ad_shape_str(nd->value.ndim, nd->value.shape, s2, 96), ad_dtype_name(nd->value.dtype));
            return false;
        }
    }
    return true;
}

ad_status ad_tape_replay(ad_tape *t, int n, const ad_var *leaves, const ad_tensor *const *values)
{
    if (!t) return AD_ERR_ARG;
    if (t->status != AD_OK) return t->status;
    if (n < 0 || (n > 0 && (!leaves || !values))) {
        ad__fail(t, AD_ERR_ARG, "ad_tape_replay: %s", n < 0 ? "negative count" : "leaves or values is NULL");
        return t->status;
    }
    if (t->in_backward) {
        ad__fail(t, AD_ERR_STATE, "ad_tape_replay: called during a backward pass");
        return t->status;
    }
    if (!leaves_ok(t, n, leaves, values)) return t->status;
    if (t->rec_marked) { /* drop the passes run since the recording */
        if (t->rec_count <= t->count) ad__tape_rewind(t, (ad_mark){t->rec_count, t->rec_block, t->rec_used});
        t->rec_marked = false;
    }
    for (int i = 0; i < n; i++) { /* borrowed, as ad_leaf borrows: the node now reads values[i] */
        ad_node *nd = ad__node(t, leaves[i].id);
        nd->value.data = values[i]->data;
        nd->attr.idx = (const int64_t *)(const void *)values[i];
    }
    const ad_mark scratch = ad__tape_mark(t);
    const uint32_t count = t->count, nb = t->nbranches;
    uint32_t next = 0; /* the next comparison to check */
    for (uint32_t i = 0; i < count; i++) {
        while (next < nb && t->branches[next].pos <= i)
            if (!branch_holds(t, &t->branches[next++])) return t->status;
        ad_node *nd = ad__node(t, i);
        switch (nd->op) {
        case AD_OP_CONST:
        case AD_OP_LEAF:
        case AD_OP_PARAM: {
            const ad_tensor *src = ad__borrowed(nd); /* read again now: its current version is the one used */
            if (src) nd->value.version_ = src->version_;
            if (nd->op != AD_OP_CONST) nd->grad = AD_NO_NODE; /* the next backward pass gives it again */
            continue;
        }
        case AD_OP_RESHAPE:
        case AD_OP_DETACH: /* views of their input, whose storage may have been swapped */
            nd->value.data = ad__node(t, nd->in[0])->value.data;
            continue;
        default:
            break;
        }
        ad_status s = ad__ops[nd->op].forward(t, nd);
        if (s != AD_OK) {
            if (t->status == AD_OK) ad__fail(t, s, "%s: out of memory during replay (node %u)", ad__ops[nd->op].name, i);
            return t->status;
        }
        if (t->cur != scratch.block || (t->cur && t->cur->used != scratch.used)) ad__tape_rewind(t, scratch);
        if (t->anomaly && !ad__all_finite(&nd->value)) {
            ad__anomaly_fail(t, i);
            return t->status;
        }
    }
    while (next < nb)
        if (!branch_holds(t, &t->branches[next++])) return t->status;
    return AD_OK;
}

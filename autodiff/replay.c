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

/*
** The scalar program. A recording made only of leaves, params, consts and unary or
** binary elementwise ops on 0-dimensional F64 values (a scalar graph, as ADOL-C and
** CppAD tapes are) is replayed from a compact list of steps, one per op node, holding
** the addresses of its value and its inputs' values and the op's one-element formula:
** the loop reads one step after the other instead of following each input through the
** node table, and adds, subtracts, multiplies and divides without a call. The steps also
** hold what a reverse sweep needs (backward.c runs one over them after a replay). Each
** step computes what the op's forward computes on one element (the same formula, or the
** same IEEE operation), so the values are the same bit for bit (only a NaN's sign or
** payload may differ where both operands are NaN). The program is built by the
** first replay of such a recording and kept until the nodes it covers change; a replay
** that gives leaves new storage points the steps reading leaves there. It is not used
** under anomaly detection (the general loop checks each node). The general loop below
** does the rest.
*/
static bool one_f64(const ad_tensor *v) { return v->ndim == 0 && v->dtype == AD_F64 && v->data; }

static bool is_leaf(const ad_node *nd) { return nd->op == AD_OP_CONST || nd->op == AD_OP_LEAF || nd->op == AD_OP_PARAM; }

/* Whether node nd can be a step: a unary or binary op on one F64 element. */
static bool steppable(const ad_tape *t, const ad_node *nd)
{
    bool un = ad__unary_one64[nd->op] != NULL, bin = ad__binary_one64[nd->op] != NULL;
    if (!(un && nd->nin == 1) && !(bin && nd->nin == 2)) return false;
    if (!one_f64(&nd->value) || !one_f64(ad__in(t, nd, 0))) return false;
    return un || one_f64(ad__in(t, nd, 1));
}

/* Grows a plan array to hold n items (kept across resets). */
static bool plan_fit(void **arr, uint32_t *cap, uint32_t n, size_t item)
{
    if (n <= *cap) return true;
    void *p = ad__realloc(*arr, (size_t)n * item);
    if (!p) return false;
    *arr = p;
    *cap = n;
    return true;
}

/* The program of nodes [0, count): AD_PLAN_OK, AD_PLAN_NO when a node cannot be a step, or
** AD_PLAN_NONE when out of memory (nothing recorded on the tape: the general loop runs). */
static uint8_t plan_build(ad_tape *t, uint32_t count)
{
    uint32_t nleaves = 0;
    for (uint32_t i = 0; i < count; i++) {
        const ad_node *nd = ad__node(t, i);
        if (is_leaf(nd))
            nleaves++;
        else if (!steppable(t, nd))
            return AD_PLAN_NO;
    }
    if (!plan_fit((void **)&t->steps, &t->steps_cap, count - nleaves, sizeof *t->steps) ||
        !plan_fit((void **)&t->plan_leaves, &t->plan_leaves_cap, nleaves, sizeof *t->plan_leaves))
        return AD_PLAN_NONE;
    t->nsteps = t->nplan_leaves = 0;
    t->plan_grad = true;
    for (uint32_t i = 0; i < count; i++) {
        ad_node *nd = ad__node(t, i);
        if (is_leaf(nd)) {
            t->plan_leaves[t->nplan_leaves++] = i;
            continue;
        }
        struct ad_replay_step *s = &t->steps[t->nsteps++];
        s->y = nd->value.data;
        s->a = ad__in(t, nd, 0)->data;
        s->b = nd->nin == 2 ? ad__in(t, nd, 1)->data : s->a;
        s->c0 = nd->attr.f[0];
        s->c1 = nd->attr.f[1];
        s->id = i;
        s->ia = nd->in[0];
        s->ib = nd->in[nd->nin - 1];
        s->leaf_in = (uint8_t)(is_leaf(ad__node(t, s->ia)) | is_leaf(ad__node(t, s->ib)) << 1);
        s->flags = nd->flags;
        s->in_req = nd->in_req;
        s->gx = ad__unary_grad64[nd->op];
        s->ga = ad__binary_grad64[nd->op][0];
        s->gb = ad__binary_grad64[nd->op][1];
        if ((nd->nin == 1 ? !s->gx : !s->ga) && ad__ops[nd->op].differentiable) t->plan_grad = false;
        switch (nd->op) {
        case AD_OP_ADD: s->kind = AD_STEP_ADD; break;
        case AD_OP_SUB: s->kind = AD_STEP_SUB; break;
        case AD_OP_MUL: s->kind = AD_STEP_MUL; break;
        case AD_OP_DIV: s->kind = AD_STEP_DIV; break;
        default:
            if (nd->nin == 2) {
                s->kind = AD_STEP_BINARY;
                s->f.bin = ad__binary_one64[nd->op];
            } else {
                s->kind = AD_STEP_UNARY;
                s->f.un = ad__unary_one64[nd->op];
            }
        }
    }
    return AD_PLAN_OK;
}

/* After a replay gave leaves new storage: the steps read their inputs' values where they are now. */
static void plan_refresh(ad_tape *t)
{
    for (struct ad_replay_step *s = t->steps, *end = s + t->nsteps; s < end; s++) {
        if (s->leaf_in & 1) s->a = ad__node(t, s->ia)->value.data;
        if (s->leaf_in & 2) s->b = ad__node(t, s->ib)->value.data;
    }
}

/* Read a leaf's borrowed tensor again and clear its gradient, as the general loop does. */
static void leaf_again(ad_node *nd)
{
    const ad_tensor *src = ad__borrowed(nd); /* read again now: its current version is the one used */
    if (src) nd->value.version_ = src->version_;
    if (nd->op != AD_OP_CONST) nd->grad = AD_NO_NODE; /* the next backward pass gives it again */
}

static ad_status plan_run(ad_tape *t)
{
    for (uint32_t k = 0; k < t->nplan_leaves; k++) leaf_again(ad__node(t, t->plan_leaves[k]));
    const branch *br = t->branches;
    const uint32_t nb = t->nbranches;
    uint32_t next = 0;
    const struct ad_replay_step *s = t->steps, *end = s + t->nsteps;
    for (; s < end; s++) {
        while (next < nb && br[next].pos <= s->id)
            if (!branch_holds(t, &br[next++])) return t->status;
        switch (s->kind) {
        case AD_STEP_ADD: *s->y = *s->a + *s->b; break;
        case AD_STEP_SUB: *s->y = *s->a - *s->b; break;
        case AD_STEP_MUL: *s->y = *s->a * *s->b; break;
        case AD_STEP_DIV: *s->y = *s->a / *s->b; break;
        case AD_STEP_BINARY: *s->y = s->f.bin(*s->a, *s->b); break;
        default: *s->y = s->f.un(*s->a, s->c0, s->c1); break;
        }
    }
    while (next < nb)
        if (!branch_holds(t, &br[next++])) return t->status;
    return AD_OK;
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
    bool moved = false; /* a leaf given new storage: the steps' addresses of leaves are stale */
    for (int i = 0; i < n; i++) { /* borrowed, as ad_leaf borrows: the node now reads values[i] */
        ad_node *nd = ad__node(t, leaves[i].id);
        moved |= nd->value.data != values[i]->data;
        nd->value.data = values[i]->data;
        nd->attr.idx = (const int64_t *)(const void *)values[i];
    }
    const uint32_t count = t->count, nb = t->nbranches;
    if (t->plan_count != count) t->plan_state = AD_PLAN_NONE;
    if (moved && t->plan_state == AD_PLAN_OK) plan_refresh(t);
    if (!t->anomaly && t->plan_state == AD_PLAN_NONE) {
        t->plan_state = plan_build(t, count);
        t->plan_count = count;
    }
    if (!t->anomaly && t->plan_state == AD_PLAN_OK) return plan_run(t);
    const ad_mark scratch = ad__tape_mark(t);
    uint32_t next = 0; /* the next comparison to check */
    for (uint32_t i = 0; i < count; i++) {
        while (next < nb && t->branches[next].pos <= i)
            if (!branch_holds(t, &t->branches[next++])) return t->status;
        ad_node *nd = ad__node(t, i);
        switch (nd->op) {
        case AD_OP_CONST:
        case AD_OP_LEAF:
        case AD_OP_PARAM:
            leaf_again(nd);
            continue;
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

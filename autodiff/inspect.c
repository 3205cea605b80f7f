/* inspect.c: seeing the tape: Graphviz DOT export and a structural XXH3 fingerprint. */
#include "tape.h"

#include <inttypes.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack: no allocation outside ad__malloc */
#include <xxhash.h>

/* The op's name without the "ad_" prefix ("matmul"). */
static const char *short_name(const ad_tape *t, const ad_node *n)
{
    const char *s = ad__node_name(t, n);
    return strncmp(s, "ad_", 3) == 0 ? s + 3 : s;
}

/*
** DOT: one node per tape node, labelled "#id op" over "shape dtype"; edges run
** from each input to its user. Leaves are ellipses (params filled, consts
** grey), nodes recorded by a backward pass are dashed and orange, so the
** graph of a create_graph pass stands out from the forward one.
*/
ad_status ad_tape_write_dot(const ad_tape *t, FILE *f)
{
    if (!t || !f) return AD_ERR_ARG;
    fprintf(f,
            "digraph tape {\n"
            "  graph [rankdir=TB, fontname=\"Helvetica\", label=\"autodiff tape: %" PRIu32
            " nodes (* needs a gradient; dashed: recorded by a backward pass)\"];\n"
            "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\", fontsize=11];\n"
            "  edge [arrowsize=0.6];\n",
            t->count);
    for (uint32_t i = 0; i < t->count; i++) {
        const ad_node *n = ad__node(t, i);
        char shape[96];
        ad_shape_str(n->value.ndim, n->value.shape, shape, sizeof shape);
        bool bw = (n->flags & AD_NODE_BACKWARD) != 0;
        const char *kind = NULL, *fill = "white", *extra = "";
        if (n->op == AD_OP_PARAM) {
            kind = "param";
            fill = "#9ecae1";
            extra = ", shape=ellipse, peripheries=2";
        } else if (n->op == AD_OP_LEAF) {
            kind = "leaf";
            fill = "#c7e9c0";
            extra = ", shape=ellipse";
        } else if (n->op == AD_OP_CUSTOM || n->op == AD_OP_CHECKPOINT) {
            fill = "#dadaeb"; /* a user's function: named, drawn apart */
            extra = n->op == AD_OP_CUSTOM ? ", shape=component" : ", shape=box3d";
        } else if (n->op == AD_OP_CONST) {
            kind = "const";
            fill = "#eeeeee";
            extra = ", shape=ellipse";
        }
        if (bw) fill = "#fdd0a2";
        fprintf(f, "  n%" PRIu32 " [label=\"#%" PRIu32 " %s%s\\n%s %s%s\", fillcolor=\"%s\"%s%s];\n", i, i,
                kind ? kind : short_name(t, n), bw ? " (backward)" : "", shape, ad_dtype_name(n->value.dtype),
                (n->flags & AD_NODE_REQ_GRAD) ? " *" : "", fill, extra,
                bw ? ", style=\"rounded,filled,dashed\", color=\"#e6550d\"" : "");
        for (uint32_t j = 0; j < n->nin; j++)
            fprintf(f, "  n%" PRIu32 " -> n%" PRIu32 "%s;\n", n->in[j], i,
                    bw ? " [style=dashed, color=\"#e6550d\"]" : "");
    }
    fprintf(f, "}\n");
    return ferror(f) ? AD_ERR_IO : AD_OK;
}

/*
** The fingerprint hashes, for every node in order: its op, flags (leaf,
** param, requires-grad, backward), dtype, shape, input node ids and integer
** attributes (axes, bounds, sizes). Values are left out: the data of leaves
** and constants, scalar attributes such as a slope, and index lists, which are
** usually data (labels).
*/
uint64_t ad_tape_fingerprint(const ad_tape *t)
{
    if (!t) return 0;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    uint32_t count = t->count;
    XXH3_64bits_update(&st, &count, sizeof count);
    for (uint32_t i = 0; i < count; i++) {
        const ad_node *n = ad__node(t, i);
        /* a fixed-layout record per node, so that no padding bytes are hashed */
        int64_t rec[4 + AD_MAX_DIMS + 4];
        int k = 0;
        rec[k++] = n->op;
        rec[k++] = n->flags;
        rec[k++] = ((int64_t)n->value.dtype << 8) | n->value.ndim;
        rec[k++] = n->nin;
        for (int d = 0; d < n->value.ndim && d < AD_MAX_DIMS; d++) rec[k++] = n->value.shape[d];
        for (int a = 0; a < 4; a++) rec[k++] = n->attr.i[a];
        XXH3_64bits_update(&st, rec, (size_t)k * sizeof rec[0]);
        if (n->nin) XXH3_64bits_update(&st, n->in, n->nin * sizeof n->in[0]);
        if (ad__is_custom(n) && n->attr.idx) { /* a custom op is its name */
            const char *name = ad__rec(n)->op.name;
            XXH3_64bits_update(&st, name, strlen(name));
        }
    }
    return XXH3_64bits_digest(&st);
}

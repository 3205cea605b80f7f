/* op_table.c: ops.def's rows bound to their functions: each op's forward kernel and recorded VJP (ad__ops) and its tangent rule (ad__jvps). */
#include "jvp.h"

/*
** The one file that names every op's functions, those of custom.c and
** checkpoint.c included: the tape, the sweeps and replay reach an op through
** these tables (data), never by name, so none of them calls a file above it.
** It defines no function; nothing calls into it.
*/

const ad_op_info ad__ops[AD_OP_COUNT] = {
#define AD_OP(ID, name, nin, family, grad, ...) \
    [AD_OP_##ID] = {"ad_" #name, nin, ad__fwd_##name, ad__vjp_##name, AD_GRAD_##grad},
#include "ops.def"
#undef AD_OP
};

/* The tangent rules, from ops.def's tangent column: a JVP op without its rule does not link. */
#define AD_JVP_FN_JVP(name) ad__jvp_##name
#define AD_JVP_FN_NOJVP(name) NULL
const ad_jvp_fn ad__jvps[AD_OP_COUNT] = {
#define AD_OP(ID, name, nin, family, grad, fast, test, tangent) [AD_OP_##ID] = AD_JVP_FN_##tangent(name),
#include "ops.def"
#undef AD_OP
};

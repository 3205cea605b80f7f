/* nn_dist.c: data-parallel training over MPI: bucketed gradient all-reduce in a fixed order, errors agreed across ranks, rank-0 checkpoints. */
#include "nn_dist.h"

#include "services.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct nn_dist {
    MPI_Comm comm;
    int rank, size;
    nn_data_parallel par;
    void *buf; /* one bucket: NN_DIST_BUCKET_BYTES */
};

/* AD_ERR_IO with MPI's own words for rc, naming what failed. */
static ad_status mpi_error(nn_error *err, int rc, const char *what)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) len = 0;
    s[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return nn_error_set(err, AD_ERR_IO, "%s: MPI error: %s", what, len ? s : "unknown");
}

static ad_status reduce_grads(void *ctx, int n, nn_param *const *params, double weight, bool local_ok,
                              const char *why, nn_error *err);
static ad_status reduce_sums(void *ctx, int n, double *v, nn_error *err);

nn_dist *nn_dist_new(MPI_Comm comm, nn_error *err)
{
    int up = 0;
    if (MPI_Initialized(&up) != MPI_SUCCESS || !up) {
        nn_error_set(err, AD_ERR_STATE, "nn_dist_new: MPI is not initialised (call MPI_Init first)");
        return NULL;
    }
    nn_dist *d = ad__malloc(sizeof *d);
    void *buf = ad__malloc(NN_DIST_BUCKET_BYTES);
    if (!d || !buf) {
        ad__free(d);
        ad__free(buf);
        nn_error_set(err, AD_ERR_NOMEM, "nn_dist_new: out of memory");
        return NULL;
    }
    memset(d, 0, sizeof *d);
    d->buf = buf;
    int rc = MPI_Comm_dup(comm, &d->comm);
    if (rc != MPI_SUCCESS) {
        ad__free(buf);
        ad__free(d);
        mpi_error(err, rc, "nn_dist_new: MPI_Comm_dup");
        return NULL;
    }
    /* failures come back as return codes, reported as errors, never an abort of ours */
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    d->par = (nn_data_parallel){d->rank, d->size, reduce_grads, reduce_sums, d};
    return d;
}

void nn_dist_free(nn_dist *d)
{
    if (!d) return;
    MPI_Comm_free(&d->comm);
    ad__free(d->buf);
    ad__free(d);
}

int nn_dist_rank(const nn_dist *d) { return d ? d->rank : 0; }
int nn_dist_size(const nn_dist *d) { return d ? d->size : 1; }

ad_status nn_dist_check(nn_dist *d, ad_status local, nn_error *err)
{
    if (!d) return nn_error_set(err, AD_ERR_ARG, "nn_dist_check: NULL nn_dist");
    int mine = local != AD_OK ? d->rank : d->size, first;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm);
    if (rc != MPI_SUCCESS) return mpi_error(err, rc, "nn_dist_check: MPI_Allreduce");
    if (first == d->size) return AD_OK;
    /* the failing rank's status and message, to everyone */
    struct {
        int status;
        char message[sizeof err->message];
    } what;
    memset(&what, 0, sizeof what);
    if (d->rank == first) {
        what.status = local;
        snprintf(what.message, sizeof what.message, "%s", err && err->message[0] ? err->message : ad_status_str(local));
    }
    rc = MPI_Bcast(&what, (int)sizeof what, MPI_BYTE, first, d->comm);
    if (rc != MPI_SUCCESS) return mpi_error(err, rc, "nn_dist_check: MPI_Bcast");
    what.message[sizeof what.message - 1] = 0;
    if (strncmp(what.message, "rank ", 5) == 0) /* already names its rank */
        return nn_error_set(err, (ad_status)what.status, "%s", what.message);
    return nn_error_set(err, (ad_status)what.status, "rank %d: %s", first, what.message);
}

/* ---- gradients: flat buckets, parameters in the optimizer's order ---- */

static bool trainable(const nn_param *p) { return p->grad && p->requires_grad && p->grad->size > 0; }

/* Moves (*pi, *po) to the next element of a trainable gradient (or to n). */
static void skip_frozen(nn_param *const *params, int n, int *pi, int64_t *po)
{
    while (*pi < n && (!trainable(params[*pi]) || *po >= params[*pi]->grad->size)) {
        (*pi)++;
        *po = 0;
    }
}

/* buf[j] = g[j] w for k elements; true when one of g is NaN or Inf */
static bool scale_f32(float *restrict buf, const float *restrict g, int64_t k, float w)
{
    float z = 0; /* stays 0 unless an element is NaN or Inf */
    for (int64_t j = 0; j < k; j++) {
        buf[j] = g[j] * w;
        z += g[j] - g[j];
    }
    return z != 0;
}

static bool scale_f64(double *restrict buf, const double *restrict g, int64_t k, double w)
{
    double z = 0;
    for (int64_t j = 0; j < k; j++) {
        buf[j] = g[j] * w;
        z += g[j] - g[j];
    }
    return z != 0;
}

/*
** Copies gradients of dtype dt from (*pi, *po) on into buf (pack: multiplied
** by w, zeros when !ok; *bad set when one is not finite) or back out of it, up
** to cap elements, stopping at a gradient of another dtype. Advances
** (*pi, *po) and returns the element count.
*/
static size_t walk(nn_param *const *params, int n, int *pi, int64_t *po, ad_dtype dt, void *buf, size_t cap,
                   bool pack, bool ok, double w, bool *bad)
{
    size_t used = 0, es = ad_dtype_size(dt);
    skip_frozen(params, n, pi, po);
    while (*pi < n && used < cap && params[*pi]->grad->dtype == dt) {
        ad_tensor *g = params[*pi]->grad;
        int64_t k = g->size - *po;
        if ((size_t)k > cap - used) k = (int64_t)(cap - used);
        char *gp = (char *)g->data + (size_t)*po * es, *bp = (char *)buf + used * es;
        if (!pack) memcpy(gp, bp, (size_t)k * es);
        else if (!ok) memset(bp, 0, (size_t)k * es);
        else if (dt == AD_F32 ? scale_f32((float *)bp, (const float *)gp, k, (float)w)
                              : scale_f64((double *)bp, (const double *)gp, k, w))
            *bad = true;
        used += (size_t)k;
        *po += k;
        skip_frozen(params, n, pi, po);
    }
    return used;
}

/* The lowest rank with bad set, and its reason, on every rank. */
static ad_status name_bad_rank(nn_dist *d, bool bad, const char *why, nn_error *err)
{
    int mine = bad ? d->rank : d->size, first;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm);
    if (rc != MPI_SUCCESS) return mpi_error(err, rc, "nn_dist: MPI_Allreduce");
    char msg[160] = {0};
    if (d->rank == first) snprintf(msg, sizeof msg, "%s", why ? why : "a gradient holds NaN or Inf");
    if (first < d->size && (rc = MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, d->comm)) != MPI_SUCCESS)
        return mpi_error(err, rc, "nn_dist: MPI_Bcast");
    msg[sizeof msg - 1] = 0;
    return nn_error_set(err, AD_ERR_NUMERIC, "rank %d: %s; stopped before that update", first, msg);
}

static ad_status reduce_grads(void *ctx, int n, nn_param *const *params, double weight, bool local_ok,
                              const char *why, nn_error *err)
{
    nn_dist *d = ctx;
    bool bad = !local_ok;
    double flag = 0;
    int i = 0;
    int64_t off = 0;
    skip_frozen(params, n, &i, &off);
    for (bool last = false; !last;) {
        /* one bucket: gradients of one dtype, and after the last of them the "bad" count */
        ad_dtype dt = i < n ? params[i]->grad->dtype : AD_F64;
        if (dt != AD_F32 && dt != AD_F64)
            return nn_error_set(err, AD_ERR_DTYPE, "nn_dist: gradient of %s is %s", params[i]->name, ad_dtype_name(dt));
        size_t es = dt == AD_F32 ? sizeof(float) : sizeof(double), cap = NN_DIST_BUCKET_BYTES / es - 1, used;
        int i0 = i;
        int64_t off0 = off;
        used = walk(params, n, &i, &off, dt, d->buf, cap, true, local_ok, weight, &bad);
        last = i >= n;
        size_t count = used;
        if (last) { /* ranks whose loss or gradients were not finite */
            if (dt == AD_F32) ((float *)d->buf)[count++] = bad ? 1.0f : 0.0f;
            else ((double *)d->buf)[count++] = bad ? 1.0 : 0.0;
        }
        int rc = MPI_Allreduce(MPI_IN_PLACE, d->buf, (int)count, dt == AD_F32 ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM,
                               d->comm);
        if (rc != MPI_SUCCESS) return mpi_error(err, rc, "nn_dist: gradient MPI_Allreduce");
        if (last) flag = dt == AD_F32 ? ((float *)d->buf)[used] : ((double *)d->buf)[used];
        walk(params, n, &i0, &off0, dt, d->buf, used, false, true, 1.0, &bad);
    }
    if (flag != 0) return name_bad_rank(d, bad, why, err);
    return AD_OK;
}

static ad_status reduce_sums(void *ctx, int n, double *v, nn_error *err)
{
    nn_dist *d = ctx;
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
    return rc == MPI_SUCCESS ? AD_OK : mpi_error(err, rc, "nn_dist: MPI_Allreduce of the epoch's sums");
}

ad_status nn_dist_allreduce_grads(nn_dist *d, nn_module *m, double weight, nn_error *err)
{
    if (!d || !m) return nn_error_set(err, AD_ERR_ARG, "nn_dist_allreduce_grads: NULL %s", d ? "module" : "nn_dist");
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    nn_param **pp = ad__malloc((size_t)(n > 0 ? n : 1) * sizeof *pp);
    if (!pp) return nn_error_set(err, AD_ERR_NOMEM, "nn_dist_allreduce_grads: out of memory");
    for (int i = 0; i < n; i++) pp[i] = &ps[i];
    ad_status st = reduce_grads(d, n, pp, weight, true, NULL, err);
    ad__free(pp);
    return st;
}

/* ---- broadcast, checkpoints ---- */

static ad_status bcast_tensor(nn_dist *d, ad_tensor *t, nn_error *err)
{
    size_t bytes = (size_t)t->size * ad_dtype_size(t->dtype);
    for (size_t off = 0; off < bytes;) { /* in pieces that fit an int count */
        size_t k = bytes - off < ((size_t)1 << 30) ? bytes - off : ((size_t)1 << 30);
        int rc = MPI_Bcast((char *)t->data + off, (int)k, MPI_BYTE, 0, d->comm);
        if (rc != MPI_SUCCESS) return mpi_error(err, rc, "nn_dist_broadcast: MPI_Bcast");
        off += k;
    }
    return AD_OK;
}

ad_status nn_dist_broadcast(nn_dist *d, nn_module *m, nn_optim *opt, nn_error *err)
{
    if (!d || !m) return nn_error_set(err, AD_ERR_ARG, "nn_dist_broadcast: NULL %s", d ? "module" : "nn_dist");
    nn_param *ps;
    int n = nn_module_params(m, &ps);
    ad_status st = AD_OK;
    for (int i = 0; i < n && st == AD_OK; i++) st = bcast_tensor(d, ps[i].value, err);
    int ns = nn_optim_state(opt, 0, NULL, NULL);
    ad_tensor **ts = ns > 0 ? ad__malloc((size_t)ns * sizeof *ts) : NULL;
    if (ns > 0 && !ts && st == AD_OK) st = nn_error_set(err, AD_ERR_NOMEM, "nn_dist_broadcast: out of memory");
    /* every rank has the same optimizer, so the same count: the loop stays collective */
    if (ts) nn_optim_state(opt, ns, NULL, ts);
    for (int i = 0; ts && i < ns && st == AD_OK; i++) st = bcast_tensor(d, ts[i], err);
    if (ts && st == AD_OK) nn_optim_state_changed(opt);
    ad__free(ts);
    return st;
}

ad_status nn_dist_save(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng, nn_error *err)
{
    if (!d) return nn_error_set(err, AD_ERR_ARG, "nn_dist_save: NULL nn_dist");
    ad_status st = d->rank == 0 ? nn_save(path, m, opt, rng, err) : AD_OK;
    return nn_dist_check(d, st, err);
}

ad_status nn_dist_load(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, nn_error *err)
{
    return nn_dist_load_ex(d, path, m, opt, rng, 0, err);
}

ad_status nn_dist_load_ex(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, ad_rng *rng, unsigned flags,
                          nn_error *err)
{
    if (!d) return nn_error_set(err, AD_ERR_ARG, "nn_dist_load: NULL nn_dist");
    ad_status st = d->rank == 0 ? nn_load_ex(path, m, opt, rng, flags, err) : AD_OK;
    if ((st = nn_dist_check(d, st, err)) != AD_OK) return st;
    st = nn_dist_broadcast(d, m, opt, err);
    if (st == AD_OK && rng) {
        int rc = MPI_Bcast(rng, (int)sizeof *rng, MPI_BYTE, 0, d->comm);
        if (rc != MPI_SUCCESS) st = mpi_error(err, rc, "nn_dist_load: MPI_Bcast");
    }
    return st;
}

void nn_dist_attach(nn_dist *d, nn_fit_opts *fo)
{
    if (fo) fo->parallel = d ? &d->par : NULL;
}

nn_step_opts nn_dist_step_opts(nn_dist *d, double weight)
{
    return (nn_step_opts){.accumulate = 1, .parallel = d ? &d->par : NULL, .weight = weight};
}

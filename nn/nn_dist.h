/* nn_dist.h: data-parallel training over MPI (libautodiff-mpi, built with -Dmpi): gradient all-reduce, agreement on errors, rank-0 checkpoints. */
#ifndef AUTODIFF_NN_DIST_H
#define AUTODIFF_NN_DIST_H

/*
** Every rank (process) holds the whole model; each global batch is split into
** one contiguous share per rank; after backward the gradients of every
** trainable parameter are averaged across ranks (weighted by the shares'
** sizes) and every rank applies the same update. With equal shares this is
** one process training on the whole global batch, up to float rounding.
**
**     MPI_Init(&argc, &argv);
**     nn_error e;
**     nn_dist *d = nn_dist_new(MPI_COMM_WORLD, &e);
**     ... every rank builds the same model from the same seed ...
**     nn_fit_opts fo = nn_fit_defaults();
**     fo.batch_size = 64;           // the global batch: 32 rows per rank on 2 ranks
**     nn_dist_attach(d, &fo);       // nn_fit shards the batches and reduces gradients
**     if (nn_dist_rank(d) != 0) fo.progress = NN_PROGRESS_NONE;
**     st = nn_fit(net, opt, train, &fo, &last, &e);    // same weights on every rank
**     st = nn_dist_save(d, "run.safetensors", net, opt, NULL, &e);  // rank 0 writes
**     nn_dist_free(d);
**     MPI_Finalize();
**
** Hand-written loops pass nn_dist_step_opts(d, weight) to nn_train_step.
**
** Determinism: the gradients are packed into flat buckets (of
** NN_DIST_BUCKET_BYTES) in the optimizer's parameter order and reduced with
** MPI_Allreduce on a communicator of fixed size; the same run on the same
** number of ranks gives the same bits. Batch normalization's running
** statistics are per rank (each rank's own share); the weights stay identical.
**
** Errors are collective: every function here is called by every rank, and a
** failure on any rank (a file it cannot read, a NaN loss) makes every rank
** return an error whose message names the rank ("rank 1: nn_train_step: the
** loss is nan ..."). The communicator's MPI error handler is MPI_ERRORS_RETURN,
** so an MPI failure is an AD_ERR_IO with MPI's message, never an abort by the
** library. A rank that dies (killed, crashed) is noticed by mpirun, which ends
** the others and names the rank.
*/

#include <mpi.h>

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_dist nn_dist;

/* The size of one flat buffer of gradients reduced by one MPI_Allreduce. */
#define NN_DIST_BUCKET_BYTES ((size_t)4 << 20)

/* Data-parallel training over comm (duplicated; MPI must be initialised).
** NULL with a message on failure (AD_ERR_NOMEM, AD_ERR_IO for MPI). */
NN_API nn_dist *nn_dist_new(MPI_Comm comm, nn_error *err);
/* Frees d (not collective; MPI stays initialised). NULL is fine. */
NN_API void nn_dist_free(nn_dist *d);
NN_API int nn_dist_rank(const nn_dist *d);
NN_API int nn_dist_size(const nn_dist *d);

/* Collective: every rank gives its own status (and message in err when it
** failed). Returns AD_OK when every rank did; otherwise every rank returns the
** failing status of the lowest failing rank, with err set to
** "rank R: <its message>". */
NN_API ad_status nn_dist_check(nn_dist *d, ad_status local, nn_error *err);

/* Collective: averages the gradients of m's trainable parameters across ranks,
** each rank's weighted by weight (its share of the global batch; 1/size for
** equal shares): grad = sum over ranks of weight_r grad_r. AD_ERR_NUMERIC on
** every rank when a gradient on some rank holds NaN or Inf (named). */
NN_API ad_status nn_dist_allreduce_grads(nn_dist *d, nn_module *m, double weight, nn_error *err);

/* Collective: copies rank 0's parameters and buffers of m, and opt's state
** (opt may be NULL), to every rank. */
NN_API ad_status nn_dist_broadcast(nn_dist *d, nn_module *m, nn_optim *opt, nn_error *err);

/* Collective: rank 0 saves the checkpoint (nn_save, atomically); every rank
** returns its status. */
NN_API ad_status nn_dist_save(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, const ad_rng *rng,
                              nn_error *err);
/* Collective: rank 0 loads the checkpoint (nn_load, fully validated) and
** broadcasts the parameters, buffers, optimizer state and rng state (m, opt
** and rng as in nn_load); on failure every rank returns rank 0's error and
** nothing changed on any rank. */
NN_API ad_status nn_dist_load(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, ad_rng *rng,
                              nn_error *err);
/* nn_dist_load with nn_load_ex's flags (NN_LOAD_ALLOW_NONFINITE). */
NN_API ad_status nn_dist_load_ex(nn_dist *d, const char *path, nn_module *m, nn_optim *opt, ad_rng *rng,
                                 unsigned flags, nn_error *err);

/* Makes nn_fit train data-parallel with d: each rank takes its share of every
** global batch of fo->batch_size rows and the gradients are reduced before each
** update; the epoch's loss and accuracy are over all ranks' samples. A last
** batch with fewer rows than ranks is skipped. Validation runs on every rank. */
NN_API void nn_dist_attach(nn_dist *d, nn_fit_opts *fo);

/* Step options for nn_train_step in a hand-written loop: gradients reduced
** with weight as in nn_dist_allreduce_grads (clip_norm 0, accumulate 1). */
NN_API nn_step_opts nn_dist_step_opts(nn_dist *d, double weight);

#ifdef __cplusplus
}
#endif

#endif

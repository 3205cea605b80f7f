/* train_checks.h: autodiff-train's checks before it loads or trains (train_checks.c). */
#ifndef AUTODIFF_TRAIN_CHECKS_H
#define AUTODIFF_TRAIN_CHECKS_H

#include "nn.h"

/* An output that --opt names: its directory exists and can be written; what path holds now is a
** regular file for a checkpoint, anything writable but a directory otherwise. 0, or 2 with a message. */
int train_check_output(const char *opt, const char *path, bool checkpoint);
/* What a checkpoint holds besides the weights: info[0] the epochs its run had done (-1: none),
** info[1] the epochs that run was to have in all (-1: none), info[2] whether its optimizer state
** is opt's kind; 0 or the exit status, with a message. */
int train_checkpoint_info(const char *path, const nn_optim *opt, int info[3]);
/* The width of net's output for one sample of dim features (a forward pass on zeros, evaluation
** mode, gradients off); -1 with a message in err when it does not run. */
int64_t train_net_outputs(nn_module *net, int64_t dim, nn_error *err);
/* Every label (or target) of both sets against the network's outputs. 0, or 2 with a message. */
int train_check_sets(const nn_dataset *train, const nn_dataset *test, int64_t outputs, bool regression);

#endif

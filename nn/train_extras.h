/* train_extras.h: autodiff-train's pictures: the per-epoch curves as SVG (--plot) and one batch's tape (--draw). */
#ifndef AUTODIFF_TRAIN_EXTRAS_H
#define AUTODIFF_TRAIN_EXTRAS_H

#include "nn.h"

/* The epochs' figures, collected by epoch_log_add (an nn_fit on_epoch callback). */
typedef struct epoch_log {
    nn_epoch_stats *e;
    int n, cap;
    bool lost; /* an epoch was dropped (out of memory): the plot fails */
} epoch_log;

void epoch_log_add(const nn_epoch_stats *s, void *log);
void epoch_log_free(epoch_log *l);
/* Writes two charts, loss and accuracy per epoch (train and test), as one SVG
** file; 0, or 1 with a message on stderr. */
int epoch_log_plot(const epoch_log *l, const char *path);
/* Records net's forward pass and cross-entropy loss on the first batch rows of
** ds and writes the tape as DOT, or as SVG through Graphviz's dot when path
** ends in ".svg"; 0, or 1 with a message on stderr. */
int draw_tape(const char *path, nn_module *net, const nn_dataset *ds, int64_t batch);

#endif

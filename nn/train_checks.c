/* train_checks.c: autodiff-train's checks before it loads or trains: output paths, what a checkpoint
** holds besides its weights, and the data against the network's outputs. */
#include "train_checks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a non-regular file is, for a message. */
static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISLNK(m) ? "a symbolic link" : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m) || S_ISBLK(m) ? "a device" : "not a regular file";
}

/* An output that --opt names, checked before anything is loaded or trained: its directory
** exists and can be written (a checkpoint's temporary file, --draw's DOT file beside an SVG
** go there); what path holds now is a regular file for a checkpoint (nn_save replaces nothing
** else; a symbolic link neither), and for a log or a picture anything writable but a directory
** (a FIFO, a terminal or /dev/stdout are fine there). 0, or 2 with a message. */
int train_check_output(const char *opt, const char *path, bool checkpoint)
{
    struct stat st;
    if ((checkpoint ? lstat(path, &st) : stat(path, &st)) == 0) {
        const char *bad = checkpoint && !S_ISREG(st.st_mode) ? file_kind(st.st_mode)
                          : S_ISDIR(st.st_mode)                ? "a directory"
                                                                : NULL;
        if (bad) {
            fprintf(stderr, "autodiff-train: --%s %s: it is %s%s\n", opt, path, bad,
                    checkpoint ? " (a checkpoint replaces only a regular file)" : "");
            return 2;
        }
        if (access(path, W_OK) != 0) {
            fprintf(stderr, "autodiff-train: --%s %s: cannot write it: %s\n", opt, path, strerror(errno));
            return 2;
        }
    } else if (errno != ENOENT && errno != ENOTDIR) { /* ENOTDIR: the directory check below says which */
        fprintf(stderr, "autodiff-train: --%s %s: %s\n", opt, path, strerror(errno));
        return 2;
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir) {
        fprintf(stderr, "autodiff-train: --%s %s: the name is too long\n", opt, path);
        return 2;
    }
    memcpy(dir, slash ? path : ".", n);
    dir[n] = 0;
    const char *why = stat(dir, &st) != 0 ? (errno == ENOENT ? "does not exist" : strerror(errno))
                      : !S_ISDIR(st.st_mode) ? "is not a directory"
                                             : NULL;
    if (why) {
        fprintf(stderr, "autodiff-train: --%s %s: %s %s\n", opt, path, dir, why);
        return 2;
    }
    if (access(dir, W_OK | X_OK) != 0 && (checkpoint || access(path, F_OK) != 0)) {
        fprintf(stderr, "autodiff-train: --%s %s: cannot write in %s: %s\n", opt, path, dir, strerror(errno));
        return 2;
    }
    return 0;
}

/* A count of epochs in a checkpoint's metadata key: *v, or -1 when the key is not there; 0 or the exit status. */
static int meta_epochs(const char *path, const char *key, int *v)
{
    char buf[32], *end;
    nn_error err;
    *v = -1;
    ad_status st = nn_checkpoint_meta(path, key, buf, sizeof buf, &err);
    if (st == AD_ERR_INDEX) return 0;
    if (st != AD_OK) {
        fprintf(stderr, "autodiff-train: %s\n", err.message);
        return 1;
    }
    errno = 0;
    long n = strtol(buf, &end, 10);
    if (errno || end == buf || *end || n < 0 || n > 1000000) {
        fprintf(stderr, "autodiff-train: %s: its \"%s\" is '%s', not a count of epochs\n", path, key, buf);
        return 1;
    }
    *v = (int)n;
    return 0;
}

/* What a checkpoint holds besides the weights: info[0] the epochs its run had done ("epoch"; -1 when it
** has none: saved by another program), info[1] the epochs that run was to have in all ("epochs"; -1: none),
** info[2] whether its optimizer state is opt's kind; 0 or the exit status. */
int train_checkpoint_info(const char *path, const nn_optim *opt, int info[3])
{
    char buf[32];
    nn_error err;
    info[2] = nn_checkpoint_meta(path, "optimizer", buf, sizeof buf, &err) == AD_OK && strcmp(buf, nn_optim_name(opt)) == 0;
    int rc = meta_epochs(path, "epoch", &info[0]);
    return rc ? rc : meta_epochs(path, "epochs", &info[1]);
}

/* The width of net's output for one sample of dim features: a forward pass on zeros in
** evaluation mode with gradients off; -1 with a message in err when it does not run. */
int64_t train_net_outputs(nn_module *net, int64_t dim, nn_error *err)
{
    ad_tape *t = ad_tape_new();
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(1, dim));
    int64_t w = -1;
    if (!t || !x) {
        nn_error_set(err, AD_ERR_NOMEM, "out of memory");
    } else {
        ad_tape_set_grad_enabled(t, false);
        bool training = nn_module_training(net);
        nn_module_set_training(net, false);
        ad_var y = nn_forward(net, t, ad_const(t, x));
        nn_module_set_training(net, training);
        if (!ad_ok(y)) nn_error_set(err, ad_tape_status(t), "%s", ad_tape_error(t));
        else if (ad_value(y)->ndim != 2) nn_error_set(err, AD_ERR_SHAPE, "the output has %d axes, not 2", ad_value(y)->ndim);
        else w = ad_value(y)->shape[1];
    }
    ad_tensor_free(x);
    ad_tape_free(t);
    return w;
}

/* Every label (or target) of both sets against outputs, the network's width. 0, or 2 with a message. */
int train_check_sets(const nn_dataset *train, const nn_dataset *test, int64_t outputs, bool regression)
{
    const nn_dataset *sets[2] = {train, test};
    static const char *const names[2] = {"training", "test"};
    for (int i = 0; i < 2; i++) {
        const nn_dataset *s = sets[i];
        if (!regression && s->nclasses > outputs) {
            fprintf(stderr, "autodiff-train: the %s set has %" PRId64 " classes (labels 0 to %" PRId64 "), the network %"
                            PRId64 " outputs\n", names[i], s->nclasses, s->nclasses - 1, outputs);
            return 2;
        }
        if (regression && (s->target_ndim != 1 || s->target_size != outputs)) {
            fprintf(stderr, "autodiff-train: the %s set's targets have %" PRId64 " values per sample%s, the network %"
                            PRId64 " outputs\n", names[i], s->target_size, s->target_ndim != 1 ? " (not a vector)" : "",
                    outputs);
            return 2;
        }
    }
    return 0;
}

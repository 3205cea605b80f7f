/* nn_io.h: data sets (IDX, CSV), mini-batching, and safetensors checkpoint files (included by nn.h). */
#ifndef AUTODIFF_NN_IO_H
#define AUTODIFF_NN_IO_H

#include "ad.h"
#include "nn_error.h"

#ifdef __cplusplus
extern "C" {
#endif


/*
** Every file is untrusted: sizes are checked with overflow-safe arithmetic and
** against the file before anything is allocated. A failing call returns an
** ad_status and fills err (may be NULL; see nn_error.h) with it and a message
** naming the function, the file and the problem, e.g.
**   "nn_dataset_load_csv: iris.csv:7: 3 columns, the first row has 5".
** Nothing is returned (*out stays NULL) on failure and nothing leaks.
*/

/* ---- data sets ---- */

/* n samples of dim features, each with an integer class label in
** [0, nclasses) (classification) or a float target of any shape (regression,
** binary and multi-label targets). Exactly one of pixels_u8 (IDX images, kept
** as bytes and scaled by 1/255 per batch) and features is non-NULL; both are
** row-major n x dim. Exactly one of labels and targets is non-NULL. */
typedef struct nn_dataset {
    int64_t n, dim;
    int64_t nclasses;   /* max label + 1; 0 with float targets */
    uint8_t *pixels_u8; /* n*dim, or NULL */
    float *features;    /* n*dim, or NULL */
    int64_t *labels;    /* n, or NULL */
    float *targets;     /* n*target_size, row-major, or NULL */
    int target_ndim;    /* the shape of one sample's target (0 with labels) */
    int64_t target_shape[AD_MAX_DIMS - 1];
    int64_t target_size; /* the product of target_shape (0 with labels) */
    bool borrowed;      /* the arrays are the caller's (nn_dataset_from_arrays with copy false) */
} nn_dataset;

/* A data set over arrays in memory: n rows of dim features (row-major F32),
** and either labels[n] (integers >= 0; nclasses = max + 1) or targets
** [n, target_shape...] (F32, target_ndim >= 1 axes). copy true: the arrays are
** copied (the caller may free them at once); copy false: they are borrowed and
** must outlive the data set, which nn_dataset_free then leaves alone.
** Errors: AD_ERR_ARG (NULL arrays, both or neither of labels and targets, a
** negative label, sizes < 1), AD_ERR_NOMEM. */
NN_API ad_status nn_dataset_from_arrays(int64_t n, int64_t dim, const float *features, const int64_t *labels,
                                        const float *targets, int target_ndim, const int64_t *target_shape,
                                        bool copy, nn_dataset **out, nn_error *err);

/* A data set from two .npy files (ad_npy_load: F32 or F64, C order): features
** [n, d...] (flattened to dim = d...) and targets [n] or [n, t...]. labels true:
** the targets are class labels (integers >= 0, at most 2^24); else float
** targets, shaped t... ([1] for a [n] file). Errors: those of ad_npy_load
** (AD_ERR_IO, AD_ERR_FORMAT ...), AD_ERR_SHAPE when the row counts differ, or
** a file has no rows, AD_ERR_FORMAT for a label that is not an integer. */
NN_API ad_status nn_dataset_load_npy(const char *features_path, const char *targets_path, bool labels,
                                     nn_dataset **out, nn_error *err);

/* Loads an IDX image file (magic 0x00000803: unsigned bytes, [n, rows, cols],
** dim = rows*cols) and an IDX label file (magic 0x00000801: unsigned bytes, [n])
** with the same n > 0, gzipped or plain (zlib reads both), such as Fashion-MNIST's
** train-images-idx3-ubyte.gz. The whole of each file is read, and trailing bytes
** after the data are an error. *out is the caller's (nn_dataset_free).
** Errors: AD_ERR_ARG, AD_ERR_IO (cannot open/read), AD_ERR_FORMAT (bad magic,
** wrong element type or dimension count, a size that overflows or exceeds what
** the file can hold, truncation, counts that differ), AD_ERR_NOMEM. */
NN_API ad_status nn_dataset_load_idx(const char *images_path, const char *labels_path, nn_dataset **out, nn_error *err);

/* Loads a numeric CSV file: comma-separated cells (spaces and tabs around a
** cell are ignored), one sample per line, '\n' or "\r\n" line ends, blank lines
** skipped, a leading UTF-8 byte order mark ignored. label_col is the column
** holding the class label (negative counts from the end: -1 is the last
** column); it must hold non-negative integers (written as integers, e.g. "3",
** or "3.0"), at most 2^24 - 1; nclasses = max + 1.
** The other columns become the features (finite numbers within float range;
** NaN, Inf, "1e400" and empty cells are errors). header: skip the first line
** (which must have the same number of cells). Every row needs the same number
** of cells, at least two. Errors: AD_ERR_ARG (NULL argument, label_col out of
** range for the file's columns), AD_ERR_IO, AD_ERR_FORMAT (messages give the
** line and column), AD_ERR_NOMEM. */
NN_API ad_status nn_dataset_load_csv(const char *path, int label_col, bool header, nn_dataset **out, nn_error *err);

/* The same for regression: target_col holds a float target (any finite number
** within float range; the data set's targets, shaped [1]) instead of a label. */
NN_API ad_status nn_dataset_load_csv_targets(const char *path, int target_col, bool header, nn_dataset **out,
                                             nn_error *err);

/* Frees a data set from a loader. NULL is fine. */
NN_API void nn_dataset_free(nn_dataset *ds);

/* ---- mini-batches ---- */

typedef struct nn_batcher nn_batcher;

/* An iterator over ds in batches of `batch` rows; ds is borrowed (must outlive
** the batcher). shuffle: each epoch visits the rows in a random permutation
** drawn from an ad_rng seeded with `seed` (the same seed gives the same sequence
** of orders); otherwise in file order. NULL on a NULL or empty ds, batch <= 0,
** or no memory. */
NN_API nn_batcher *nn_batcher_new(const nn_dataset *ds, int64_t batch, bool shuffle, uint64_t seed, nn_error *err);
/* The same over the rows rows[0..nrows) of ds only (copied), e.g. one side of a
** train/validation split. */
NN_API nn_batcher *nn_batcher_new_rows(const nn_dataset *ds, int64_t nrows, const int64_t *rows, int64_t batch,
                                       bool shuffle, uint64_t seed, nn_error *err);

/* Fills the next batch: x is caller-owned, 2-D [rows >= batch, dim], AD_F32 or
** AD_F64 (pixels are scaled by 1/255); y (may be NULL) receives the float
** targets, shaped [rows >= batch, target_shape...], F32 or F64; labels (may be
** NULL) receives the labels. Returns the number of rows filled (the last batch
** of an epoch may be short; rows past it are left untouched), 0 at the end of
** the epoch, -1 when x or y does not fit (wrong dtype, shape, or fewer than
** `batch` rows), or y or labels is asked of a set that has none. */
NN_API int64_t nn_batcher_next(nn_batcher *b, ad_tensor *x, ad_tensor *y, int64_t *labels);

/* Starts the next epoch (a new permutation when shuffling). */
NN_API void nn_batcher_reset(nn_batcher *b);
/* Starts the next epoch with its order drawn from a generator seeded with seed
** (when shuffling; file order otherwise): the order depends on seed alone, not
** on the epochs before. To resume a run in the same order, draw each epoch's
** seed from a generator that is saved with the model (nn_save), as nn_fit does
** with nn_fit_opts.rng. NULL: nothing. */
NN_API void nn_batcher_reseed(nn_batcher *b, uint64_t seed);

/* Number of batches per epoch: ceil(rows / batch). */
NN_API int64_t nn_batcher_num_batches(const nn_batcher *b);

NN_API void nn_batcher_free(nn_batcher *b);

/* ---- safetensors checkpoints ----
**
** The file is standard safetensors (loadable with PyTorch / the safetensors
** library): an 8-byte little-endian header length N, N bytes of JSON padded
** with spaces to a multiple of 8, then the tensors' bytes (little-endian,
** C order) back to back. The JSON maps each tensor name to
** {"dtype": "F32"|"F64", "shape": [...], "data_offsets": [begin, end]}
** (offsets relative to the data start) and "__metadata__" to string pairs:
**   "format": "autodiff-checkpoint", "version": "1",
**   "xxh3:<name>": XXH3-64 of the tensor's bytes as 16 lowercase hex digits
**                  (xxHash's canonical, big-endian form), one per tensor,
**   "xxh3:__table__": XXH3-64 of the tensor table (see safetensors.c),
** and the caller's own pairs.
*/

/* Saves n tensors under the given names (in that order), with nmeta extra
** metadata pairs: meta[2i] is a key, meta[2i+1] its value (UTF-8 strings; keys
** "format", "version" and "xxh3:..." are reserved). Names must be non-empty,
** distinct, valid UTF-8, not "__metadata__" nor "__table__". Atomic: the file
** is written to "<path>.tmp.<pid>" in the same directory, fsynced, renamed
** over path, and the directory fsynced; a crash or failure leaves the old file
** (if any) as it was (except a failing directory fsync, reported after the
** rename, when the new file is already in place). Errors: AD_ERR_ARG, AD_ERR_DTYPE (not F32/F64),
** AD_ERR_IO (message names the path, the failing call and strerror; the
** temporary file is removed), AD_ERR_NOMEM, AD_ERR_UNSUPPORTED (a big-endian host). */
NN_API ad_status nn_safetensors_save(const char *path, int n, const char *const *names, const ad_tensor *const *tensors,
                                     int nmeta, const char *const *meta, nn_error *err);

/* Loads the n named tensors into dst[i] (caller-owned, with the expected shape
** and dtype). Everything is validated before any dst is written: header length
** (at most 100 MB and within the file), JSON syntax (no duplicate keys),
** every entry (known dtype, shape, offsets), shape x dtype size equal to the
** byte range, ranges sorted, contiguous and covering the data exactly, the
** metadata's format and version, every checksum, the file holding exactly the
** requested names. Errors: AD_ERR_ARG (NULL or duplicate names), AD_ERR_IO
** (cannot open/read), AD_ERR_FORMAT (malformed file, missing or unexpected
** tensor, checksum mismatch), AD_ERR_SHAPE / AD_ERR_DTYPE (a tensor's shape or
** dtype differs from dst's), AD_ERR_UNSUPPORTED (a valid dtype other than F32/F64),
** AD_ERR_NOMEM. On failure no dst has been modified. */
NN_API ad_status nn_safetensors_load(const char *path, int n, const char *const *names, ad_tensor *const *dst,
                                     nn_error *err);

#ifdef __cplusplus
}
#endif

#endif

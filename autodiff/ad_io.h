/* ad_io.h: reading and writing tensors as NumPy .npy files (included by ad.h). */
#ifndef AUTODIFF_AD_IO_H
#define AUTODIFF_AD_IO_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
** The .npy format (NumPy's NEP 1): the magic "\x93NUMPY", a major and minor
** version byte, the header length (2 bytes little-endian in version 1.0, 4 bytes
** in 2.0 and 3.0), an ASCII header holding a Python dict literal
**     {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
** padded with spaces and ended by '\n', then the raw data in C order.
**
** Files are untrusted: every size is checked with overflow-safe arithmetic and
** against the file's size before anything is allocated, and the data must end
** exactly at the end of the file. Error messages name the function, the file
** and the problem, e.g. "ad_npy_load: x.npy: fortran_order True is not supported".
*/

/* Reads a .npy file (versions 1.0, 2.0, 3.0) into a new tensor owned by the
** caller (*out; free with ad_tensor_free). dtypes: '<f4' '>f4' give AD_F32,
** '<f8' '>f8' give AD_F64 (big-endian data is byte-swapped); the integer and
** bool dtypes ('|u1' '|i1' '|b1' and '<i2' ... '>u8') are converted to AD_F64
** (64-bit integers beyond 2^53 round). At most AD_MAX_DIMS dimensions, C order
** only. Errors: AD_ERR_ARG (NULL path or out), AD_ERR_IO (cannot open or read),
** AD_ERR_FORMAT (a malformed file), AD_ERR_UNSUPPORTED (a valid file this
** reader does not handle: fortran_order True, another dtype, a newer version,
** too many dimensions), AD_ERR_NOMEM. On failure *out is NULL. err (may be NULL)
** receives a NUL-terminated message of at most errlen bytes. */
AD_API ad_status ad_npy_load(const char *path, ad_tensor **out, char *err, size_t errlen);

/* Writes t as .npy version 1.0 ('<f4' or '<f8', little-endian, C order; 2.0 if
** the header would not fit version 1.0's 2-byte length), the header padded with
** spaces so the data starts at a multiple of 64 bytes. Overwrites path. Errors:
** AD_ERR_ARG (NULL argument, bad dtype), AD_ERR_IO (open/write/close failed,
** message with strerror; a partly written file is removed). */
AD_API ad_status ad_npy_save(const char *path, const ad_tensor *t, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif

/* nn_error.h: libautodiff-nn's one error record (a status and a message) and its formatter (included by nn.h). */
#ifndef AUTODIFF_NN_ERROR_H
#define AUTODIFF_NN_ERROR_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NN_API
#if defined(_WIN32) && defined(NN_BUILDING_LIBRARY)
#define NN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define NN_API __attribute__((visibility("default")))
#else
#define NN_API
#endif
#endif

/*
** Every nn function that can fail outside a tape takes a last argument
** `nn_error *err` (NULL: the caller does not want the details). On failure it
** returns its failure value (an ad_status other than AD_OK, or NULL) and fills
** *err with the same status and a message naming the function and the cause:
**
**     nn_error e;
**     nn_module *net = nn_mlp(3, (const int64_t[]){784, 0, 10}, NN_RELU, &rng, &e);
**     if (!net) fprintf(stderr, "%s\n", e.message);
**         // nn_mlp: layer size 1 is 0; sizes must be >= 1
**
** On success *err is left as it was. What happens on a tape (a forward pass,
** a loss) is reported on the tape, as everywhere in the engine: ad_tape_status
** and ad_tape_error; nn_error_from_tape copies it into a record.
*/
typedef struct nn_error {
    ad_status status;  /* AD_OK, or the failure's status */
    char message[256]; /* "function: cause", NUL-terminated (truncated if longer) */
} nn_error;

/* The formatter: when e is not NULL, sets e->status = s and e->message from
** the printf-style fmt. Returns s, so that `return nn_error_set(err, AD_ERR_ARG, ...)`
** reports and returns at once. For user modules and callbacks as for the library. */
NN_API ad_status nn_error_set(nn_error *e, ad_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Copies the tape's status and message into e, prefixed by "fn: " when fn is
** not NULL; returns the status (AD_OK leaves e untouched). */
NN_API ad_status nn_error_from_tape(nn_error *e, const char *fn, const ad_tape *t);

/* e's message, or the status's generic text (ad_status_str) when the message is
** empty; "no error" for NULL. */
NN_API const char *nn_error_str(const nn_error *e);

#ifdef __cplusplus
}
#endif

#endif

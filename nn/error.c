/* error.c: nn_error, libautodiff-nn's one error record, and its formatter. */
#include "nn_internal.h"

#include <stdarg.h>
#include <stdio.h>

ad_status nn_error_set(nn_error *e, ad_status s, const char *fmt, ...)
{
    if (!e) return s;
    e->status = s;
    e->message[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
    }
    return s;
}

ad_status nn_error_from_tape(nn_error *e, const char *fn, const ad_tape *t)
{
    ad_status s = t ? ad_tape_status(t) : AD_ERR_ARG;
    if (s == AD_OK) return s;
    const char *msg = t ? ad_tape_error(t) : "NULL tape";
    if (fn) return nn_error_set(e, s, "%s: %s", fn, msg);
    return nn_error_set(e, s, "%s", msg);
}

const char *nn_error_str(const nn_error *e)
{
    if (!e) return "no error";
    return e->message[0] ? e->message : ad_status_str(e->status);
}

ad_status nn__status(nn_error *err, ad_status s)
{
    if (err && s != AD_OK) err->status = s;
    return s;
}

/*
 * err.c — status codes and the per-thread detail message behind jvdb_strerror()/jvdb_errmsg().
 *
 * Every failing call in the library sets a human-readable message here at the place that knows what
 * went wrong (file, offset, field, index), and returns a JVDB_E* code that callers pass upward
 * unchanged.  The message lives in thread-local storage so concurrent callers never see each other's.
 */
#include "core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_message[1024];

const char *jvdb_strerror(int code)
{
    switch (code) {
    case JVDB_OK: return "ok";
    case JVDB_EINVAL: return "invalid argument";
    case JVDB_ENOTFOUND: return "not found";
    case JVDB_EEXISTS: return "already exists";
    case JVDB_ELOCKED: return "data directory locked";
    case JVDB_EIO: return "I/O error";
    case JVDB_ENOSPC: return "no space left on device";
    case JVDB_ECORRUPT: return "data corrupted";
    case JVDB_ENOMEM: return "out of memory";
    case JVDB_EBUSY: return "busy";
    case JVDB_EFAILED: return "database failed after an I/O error";
    case JVDB_EREADONLY: return "opened read-only";
    default: return "unknown error";
    }
}

const char *jvdb_errmsg(void) { return err_message; }

void err_clear(void) { err_message[0] = '\0'; }

int err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_message, sizeof err_message, fmt, ap);
    va_end(ap);
    return code;
}

int err_errno(int errnum, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(err_message, sizeof err_message, "%s: %s", what, strerror(errnum));
    switch (errnum) {
    case ENOSPC:
    case EDQUOT: return JVDB_ENOSPC;
    case ENOMEM: return JVDB_ENOMEM;
    case ENOENT: return JVDB_ENOTFOUND;
    case EEXIST: return JVDB_EEXISTS;
    default: return JVDB_EIO;
    }
}

#ifndef JVDB_CORE_ERR_H
#define JVDB_CORE_ERR_H
#include "jvdb.h"

/* Records `code` and a printf-style detail message for this thread; returns `code` so callers can
 * write `return err_set(JVDB_EINVAL, "...")`. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Maps an errno value to a status code and a message "<what>: <strerror>". */
int err_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_clear(void);
#endif

#ifndef JVDB_TEST_UTIL_H
#define JVDB_TEST_UTIL_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "jvdb.h"

/* A fresh temporary directory (removed by tu_rmdir). */
char *tu_tempdir(void);
void tu_rmdir(char *dir);
/* The repository a backup test uses: "<dir>/repo", or, when JVDB_TEST_REPO is set (test_backup_s3.py points it at
 * an s3rver bucket), a fresh "<JVDB_TEST_REPO>/<tag>-<dir's suffix>-<n>" so tests never see each other's backups.
 * Returns 1 for S3 (tests that reach into files skip there), else 0. */
int tu_repo_spec(const char *dir, const char *tag, char *out, size_t cap);
/* Deterministic vector for (id number, version). */
void tu_vector(float *v, uint32_t dim, uint64_t n, uint64_t version);
/* Creates a database with small segments. */
jvdb_db *tu_create(jvdb_env *env, const char *name, uint32_t dim, jvdb_metric metric, uint64_t seg_max);
/* Asserts the status and that the message contains `needle`. */
#define assert_err(call, code, needle)                                                                      \
    do {                                                                                                    \
        int rc_ = (call);                                                                                   \
        if (rc_ != (code)) fail_msg("%s returned %d (%s), expected %d", #call, rc_, jvdb_errmsg(), (code)); \
        if (!strstr(jvdb_errmsg(), (needle)))                                                               \
            fail_msg("%s: message '%s' does not mention '%s'", #call, jvdb_errmsg(), (needle));             \
    } while (0)
#define assert_ok(call)                                                              \
    do {                                                                             \
        int rc_ = (call);                                                            \
        if (rc_ != JVDB_OK) fail_msg("%s failed: %d %s", #call, rc_, jvdb_errmsg()); \
    } while (0)
/* Size of a file, or -1. */
long long tu_file_size(const char *path);
#endif

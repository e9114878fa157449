/* test_util.c — helpers shared by the unit tests: temporary directories and deterministic data. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"

char *tu_tempdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/jvdb-test-XXXXXX", base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

void tu_rmdir(char *dir)
{
    fs_remove_tree(dir);
    free(dir);
}

void tu_vector(float *v, uint32_t dim, uint64_t n, uint64_t version)
{
    uint64_t x = n * 0x9E3779B97F4A7C15ull + version * 0xBF58476D1CE4E5B9ull + 1;
    for (uint32_t i = 0; i < dim; i++) {
        x ^= x >> 30;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 27;
        v[i] = (float)((double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}

jvdb_db *tu_create(jvdb_env *env, const char *name, uint32_t dim, jvdb_metric metric, uint64_t seg_max)
{
    jvdb_db_options o;
    jvdb_db_options_init(&o, dim);
    o.metric = metric;
    if (seg_max) o.segment_max_bytes = seg_max;
    jvdb_db *db = NULL;
    assert_ok(jvdb_db_create(env, name, &o, &db));
    return db;
}

long long tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int tu_repo_spec(const char *dir, const char *tag, char *out, size_t cap)
{
    static int seq;
    const char *base = getenv("JVDB_TEST_REPO");
    if (!base || !*base) {
        snprintf(out, cap, "%s/repo", dir);
        return 0;
    }
    const char *suffix = strrchr(dir, '-');
    snprintf(out, cap, "%s/%s%s%s-%d", base, tag, *tag ? "-" : "", suffix ? suffix + 1 : "x", seq++);
    return !strncmp(base, "s3://", 5);
}

/*
 * repo.c — opening a backup repository from the string an operator types: "s3://bucket/prefix"
 * selects the S3 implementation (repo_s3.c), anything else is a directory (repo_fs.c).  Both sit
 * behind struct repo_ops (backup.h), so the chain logic in backup.c never knows which it talks to.
 */
#include "backup/backup.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

/* Opens the repository `spec` names without the encryption layer: s3://bucket/prefix (trailing slashes
 * dropped, empty segments refused) or a directory, with or without file://. */
static int repo_open_kind(const char *spec, const jvdb_repo_options *opts, jvdb_repo **out)
{
    err_clear();
    *out = NULL;
    if (!spec || !*spec) return err_set(JVDB_EINVAL, "no backup repository given (a directory or s3://bucket/prefix)");
    if (!strncmp(spec, "s3://", 5)) {
        const char *b = spec + 5, *slash = strchr(b, '/');
        size_t bl = slash ? (size_t)(slash - b) : strlen(b);
        char *bucket = strndup(b, bl);
        char *prefix = strdup(slash ? slash + 1 : "");
        if (!bucket || !prefix) {
            free(bucket);
            free(prefix);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        /* No empty path segments: "s3://b/x/" and "s3://b/x" name the same place. */
        size_t pl = strlen(prefix);
        while (pl && prefix[pl - 1] == '/') prefix[--pl] = '\0';
        int rc = strstr(prefix, "//") || prefix[0] == '/'
                     ? err_set(JVDB_EINVAL, "S3 repository %s: the prefix has an empty path segment", spec)
                     : repo_s3_open(bucket, prefix, opts, out);
        free(bucket);
        free(prefix);
        return rc;
    }
    if (!strncmp(spec, "file://", 7)) spec += 7;
    return repo_fs_open(spec, out);
}

void jvdb_repo_close(jvdb_repo *repo)
{
    if (repo) repo->ops->close(repo);
}

/* Every repository goes through the encryption layer (crypt.c): with a key it encrypts and signs,
 * without one it refuses an encrypted repository with a clear message. */
int jvdb_repo_open(const char *spec, const jvdb_repo_options *opts, jvdb_repo **out)
{
    jvdb_repo *inner = NULL;
    int rc = repo_open_kind(spec, opts, &inner);
    if (rc) return rc;
    const char *key = opts && opts->key_file && *opts->key_file ? opts->key_file : getenv("JVDB_REPO_KEY_FILE");
    return repo_crypt_wrap(inner, key && *key ? key : NULL, out);
}

struct repo_after {
    const char *after;
    repo_obj_fn fn;
    void *arg;
};

/* obj_list callback of repo_obj_list_after's fallback: passes on the names after `after`. */
static int repo_after_fn(void *arg, const char *name, int64_t size)
{
    struct repo_after *a = arg;
    return strcmp(name, a->after) > 0 ? a->fn(a->arg, name, size) : 0;
}

int repo_obj_list_after(jvdb_repo *r, const char *db, const char *prefix, const char *after, repo_obj_fn fn, void *arg)
{
    if (r->ops->obj_list_after) return r->ops->obj_list_after(r, db, prefix, after, fn, arg);
    struct repo_after a = { after, fn, arg };
    return r->ops->obj_list(r, db, prefix, repo_after_fn, &a);
}

int jvdb_repo_databases(jvdb_repo *repo, char ***names, size_t *count)
{
    err_clear();
    *names = NULL;
    *count = 0;
    if (!repo) return err_set(JVDB_EINVAL, "no repository");
    return repo->ops->list_databases(repo, names, count);
}

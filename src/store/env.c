/*
 * env.c — the data directory: its lock, its databases directory, and the open database handles.
 *
 * One process at a time owns a data directory, enforced with flock(LOCK_EX) on <data>/LOCK (which
 * also records the owner's pid so the refusal can name it).  Database handles are opened once and
 * cached here; they live until the database is dropped or the environment closes.
 *
 * Create and drop are each one rename inside <data>/databases: create builds ".tmp-<name>-<pid>"
 * completely and renames it into place; drop renames the directory to ".drop-..." before removing
 * it.  Leftovers of either, after a crash, are removed at the next open.
 */
#include "jvdb.h"

#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "store/db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* A database being loaded by one thread; the node lives on that thread's stack. */
struct env_loading {
    const char *name;
    struct env_loading *next;
};

struct jvdb_env {
    char *path;
    char *dbdir;
    int lock_fd;
    pthread_mutex_t mu;
    pthread_cond_t released;            /* an env_db_acquire holder let go, or a load finished */
    jvdb_db **dbs;
    size_t ndbs, cap;
    struct env_loading *loading;        /* databases loaded right now, without the mutex */
};

const char *jvdb_env_path(const jvdb_env *env) { return env->path; }

static int env_lock(jvdb_env *env)
{
    char *lock = fs_join(env->path, "LOCK");
    if (!lock) return err_set(JVDB_ENOMEM, "out of memory");
    env->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (env->lock_fd < 0) {
        int rc = err_errno(errno, "cannot open %s", lock);
        free(lock);
        return rc;
    }
    if (flock(env->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(env->lock_fd, pid, sizeof pid - 1, 0);
        if (n > 0) pid[n] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        int rc = (e == EWOULDBLOCK)
                     ? err_set(JVDB_ELOCKED, "data directory %s is locked by pid %s (another jvdb process has it open)",
                               env->path, *pid ? pid : "unknown")
                     : err_errno(e, "cannot lock %s", lock);
        free(lock);
        return rc;
    }
    free(lock);
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(env->lock_fd, 0) < 0 || pwrite(env->lock_fd, pid, (size_t)n, 0) != n)
        log_warn("cannot record the pid in %s/LOCK: %s", env->path, strerror(errno));
    return JVDB_OK;
}

/* Removes what an interrupted create or drop left behind. */
static int env_clean(jvdb_env *env)
{
    DIR *d = opendir(env->dbdir);
    if (!d) return err_errno(errno, "cannot list %s", env->dbdir);
    struct dirent *e;
    int rc = JVDB_OK;
    while ((e = readdir(d)) != NULL && rc == JVDB_OK) {
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".drop-", 6) && strncmp(e->d_name, ".build-", 7)) continue;
        char *p = fs_join(env->dbdir, e->d_name);
        if (!p) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        log_info("removing leftover %s", p);
        rc = fs_remove_tree(p);
        free(p);
    }
    closedir(d);
    return rc;
}

int jvdb_env_open(const char *path, jvdb_env **out)
{
    err_clear();
    if (!path || !*path) return err_set(JVDB_EINVAL, "data directory path is empty");
    jvdb_env *env = calloc(1, sizeof *env);
    if (!env) return err_set(JVDB_ENOMEM, "out of memory");
    env->lock_fd = -1;
    pthread_mutex_init(&env->mu, NULL);
    pthread_cond_init(&env->released, NULL);
    int rc;
    env->path = strdup(path);
    env->dbdir = fs_join(path, "databases");
    if (!env->path || !env->dbdir) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = fs_mkdir(path)) || (rc = env_lock(env)) || (rc = fs_mkdir(env->dbdir)) || (rc = env_clean(env))) goto fail;
    *out = env;
    return JVDB_OK;
fail:
    if (env->lock_fd >= 0) close(env->lock_fd);
    free(env->path);
    free(env->dbdir);
    pthread_mutex_destroy(&env->mu);
    pthread_cond_destroy(&env->released);
    free(env);
    return rc;
}

void jvdb_env_close(jvdb_env *env)
{
    if (!env) return;
    for (size_t i = 0; i < env->ndbs; i++) db_close(env->dbs[i]);
    free(env->dbs);
    if (env->lock_fd >= 0) close(env->lock_fd);   /* releases the flock */
    free(env->path);
    free(env->dbdir);
    pthread_mutex_destroy(&env->mu);
    pthread_cond_destroy(&env->released);
    free(env);
}

static int env_check_name(const char *name)
{
    if (!db_name_valid(name))
        return err_set(JVDB_EINVAL, "database name '%s' is not allowed (use 1 to %d characters of A-Z a-z 0-9 _ -)",
                       name ? name : "", JVDB_MAX_NAME_LEN);
    return JVDB_OK;
}

static jvdb_db *env_find_open(jvdb_env *env, const char *name)
{
    for (size_t i = 0; i < env->ndbs; i++)
        if (!strcmp(jvdb_db_name(env->dbs[i]), name)) return env->dbs[i];
    return NULL;
}

static int env_is_loading(const jvdb_env *env, const char *name)
{
    for (const struct env_loading *l = env->loading; l; l = l->next)
        if (!strcmp(l->name, name)) return 1;
    return 0;
}

/* Waits (env->mu held) until no thread is loading `name`: opens, drops, creates and replaces of a
 * database never overlap its load. */
static void env_wait_loading(jvdb_env *env, const char *name)
{
    while (env_is_loading(env, name)) pthread_cond_wait(&env->released, &env->mu);
}

static int env_open_locked(jvdb_env *env, const char *name, jvdb_db **out)
{
    env_wait_loading(env, name);
    jvdb_db *db = env_find_open(env, name);
    if (db) {
        *out = db;
        return JVDB_OK;
    }
    char *dir = fs_join(env->dbdir, name);
    if (!dir) return err_set(JVDB_ENOMEM, "out of memory");
    char *mf = fs_join(dir, "MANIFEST");
    int exists = mf && fs_exists(mf);
    free(mf);
    if (!exists) {
        free(dir);
        return err_set(JVDB_ENOTFOUND, "database '%s' does not exist", name);
    }
    /* Loading reads every segment (seconds for a large database), so it runs without the mutex:
     * opening one database never stalls the handles of the others.  Whoever wants this one
     * meanwhile waits in env_wait_loading. */
    struct env_loading me = {name, env->loading};
    env->loading = &me;
    pthread_mutex_unlock(&env->mu);
    int rc = db_load(env, dir, &db);
    free(dir);
    pthread_mutex_lock(&env->mu);
    for (struct env_loading **pp = &env->loading; *pp; pp = &(*pp)->next)
        if (*pp == &me) {
            *pp = me.next;
            break;
        }
    pthread_cond_broadcast(&env->released);
    if (rc) return rc;
    if (env->ndbs == env->cap) {
        size_t ncap = env->cap ? env->cap * 2 : 8;
        jvdb_db **n = realloc(env->dbs, ncap * sizeof *n);
        if (!n) {
            db_close(db);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        env->dbs = n;
        env->cap = ncap;
    }
    env->dbs[env->ndbs++] = db;
    *out = db;
    return JVDB_OK;
}

int jvdb_db_open(jvdb_env *env, const char *name, jvdb_db **out)
{
    err_clear();
    int rc = env_check_name(name);
    if (rc) return rc;
    pthread_mutex_lock(&env->mu);
    rc = env_open_locked(env, name, out);
    pthread_mutex_unlock(&env->mu);
    return rc;
}

int env_db_acquire(jvdb_env *env, const char *name, jvdb_db **out)
{
    pthread_mutex_lock(&env->mu);
    int rc = env_open_locked(env, name, out);
    if (rc == JVDB_OK && atomic_load(&(*out)->dropping)) rc = err_set(JVDB_ENOTFOUND, "database '%s' is being dropped", name);
    if (rc == JVDB_OK) (*out)->env_refs++;
    pthread_mutex_unlock(&env->mu);
    return rc;
}

void env_db_release(jvdb_env *env, jvdb_db *db)
{
    pthread_mutex_lock(&env->mu);
    db->env_refs--;
    pthread_cond_broadcast(&env->released);
    pthread_mutex_unlock(&env->mu);
}

/* Marks an open database as going away and waits until no background job holds it; env->mu held.
 * A running compaction is not waited for (it can take minutes): the caller gets JVDB_EBUSY. */
static int env_retire_locked(jvdb_env *env, jvdb_db *db, const char *name)
{
    atomic_store(&db->dropping, true);
    while (db->env_refs > 0) {
        if (atomic_load(&db->compacting)) {
            atomic_store(&db->dropping, false);
            return err_set(JVDB_EBUSY, "database '%s' is being compacted; try again when it finishes", name);
        }
        pthread_cond_wait(&env->released, &env->mu);
    }
    return JVDB_OK;
}

int jvdb_db_create(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **out)
{
    err_clear();
    int rc = env_check_name(name);
    if (rc) return rc;
    if (!opts) return err_set(JVDB_EINVAL, "options are missing");
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    char *dir = fs_join(env->dbdir, name);
    if (!dir) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else if (fs_exists(dir)) {
        rc = err_set(JVDB_EEXISTS, "database '%s' already exists", name);
    } else if ((rc = db_create_dir(env->dbdir, name, name, opts)) == JVDB_OK) {
        jvdb_db *db;
        rc = env_open_locked(env, name, &db);
        if (rc == JVDB_OK && out) *out = db;
    }
    free(dir);
    pthread_mutex_unlock(&env->mu);
    return rc;
}

int jvdb_db_drop(jvdb_env *env, const char *name)
{
    err_clear();
    int rc = env_check_name(name);
    if (rc) return rc;
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    char *dir = fs_join(env->dbdir, name);
    char dropname[160];
    static unsigned drop_seq;
    snprintf(dropname, sizeof dropname, ".drop-%s-%d-%u", name, (int)getpid(), drop_seq++);
    char *gone = fs_join(env->dbdir, dropname);
    if (!dir || !gone) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    char *mf = fs_join(dir, "MANIFEST");
    int exists = mf && fs_exists(mf);
    free(mf);
    if (!exists) {
        rc = err_set(JVDB_ENOTFOUND, "database '%s' does not exist", name);
        goto out;
    }
    jvdb_db *open_db = env_find_open(env, name);
    if (open_db && (rc = env_retire_locked(env, open_db, name))) goto out;
    /* The rename is the commit point: after it the database is gone, whatever happens next. */
    if (io_rename(dir, gone) < 0) {
        rc = err_errno(errno, "cannot remove database '%s'", name);
        if (open_db) atomic_store(&open_db->dropping, false);
        goto out;
    }
    io_fsync_dir(env->dbdir);
    for (size_t i = 0; i < env->ndbs; i++) {
        if (strcmp(jvdb_db_name(env->dbs[i]), name) != 0) continue;
        db_close(env->dbs[i]);
        env->dbs[i] = env->dbs[--env->ndbs];
        break;
    }
    /* The files go after the mutex is let go: removing a large tree must not stall every other
     * database's open and acquire (the renamed directory is invisible already). */
    pthread_mutex_unlock(&env->mu);
    rc = fs_remove_tree(gone);
    free(dir);
    free(gone);
    return rc;
out:
    free(dir);
    free(gone);
    pthread_mutex_unlock(&env->mu);
    return rc;
}

static int env_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int jvdb_db_list(jvdb_env *env, char ***names, size_t *count)
{
    err_clear();
    *names = NULL;
    *count = 0;
    DIR *d = opendir(env->dbdir);
    if (!d) return err_errno(errno, "cannot list %s", env->dbdir);
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = JVDB_OK;
    while ((e = readdir(d)) != NULL) {
        if (!db_name_valid(e->d_name)) continue;
        char *dir = fs_join(env->dbdir, e->d_name);
        char *mf = dir ? fs_join(dir, "MANIFEST") : NULL;
        int ok = mf && fs_exists(mf);
        free(dir);
        free(mf);
        if (!ok) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = err_set(JVDB_ENOMEM, "out of memory");
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name))) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) {
        jvdb_free_names(v, n);
        return rc;
    }
    if (n) qsort(v, n, sizeof *v, env_cmp_names);
    *names = v;
    *count = n;
    return JVDB_OK;
}

void jvdb_free_names(char **names, size_t count)
{
    for (size_t i = 0; i < count; i++) free(names[i]);
    free(names);
}

void jvdb_free(void *p) { free(p); }

/* ---------------------------------------------------------------- building out of sight */

static unsigned env_build_seq;

int env_build_begin(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **built)
{
    err_clear();
    int rc = env_check_name(name);
    if (rc) return rc;
    char dirname[160];
    pthread_mutex_lock(&env->mu);
    snprintf(dirname, sizeof dirname, ".build-%s-%d-%u", name, (int)getpid(), env_build_seq++);
    pthread_mutex_unlock(&env->mu);
    if ((rc = db_create_dir(env->dbdir, dirname, name, opts))) return rc;
    char *dir = fs_join(env->dbdir, dirname);
    if (!dir) return err_set(JVDB_ENOMEM, "out of memory");
    rc = db_load(env, dir, built);
    if (rc) fs_remove_tree(dir);
    free(dir);
    return rc;
}

void env_build_abort(jvdb_env *env, jvdb_db *built)
{
    (void)env;
    char *dir = strdup(built->dir);
    db_close(built);
    if (dir) fs_remove_tree(dir);
    free(dir);
}

int env_build_publish(jvdb_env *env, jvdb_db *built, const char *name, int replace, jvdb_db **out)
{
    err_clear();
    int rc = JVDB_OK;
    char *from = strdup(built->dir);
    char *to = fs_join(env->dbdir, name);
    if (!from || !to) {
        free(from);
        free(to);
        env_build_abort(env, built);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    /* Everything of the new database is durable before it becomes visible. */
    db_close(built);
    jvdb_db *old = NULL;   /* set before any `goto fail`, which reads it */
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    char *mf = fs_join(to, "MANIFEST");
    int exists = mf && fs_exists(mf);
    free(mf);
    if (exists && !replace) {
        rc = err_set(JVDB_EEXISTS, "database '%s' already exists (replace it explicitly)", name);
        goto fail;
    }
    old = env_find_open(env, name);
    if (old && (rc = env_retire_locked(env, old, name))) goto fail;
    io_crash_point("publish.before_rename");
    if (exists) {
        /* The commit point of a replace: both directories trade places in one step. */
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE) < 0) {
            rc = err_errno(errno, "cannot swap %s and %s", from, to);
            goto fail;
        }
    } else if (io_rename(from, to) < 0) {
        rc = err_errno(errno, "cannot rename %s to %s", from, to);
        goto fail;
    }
    io_fsync_dir(env->dbdir);
    io_crash_point("publish.after_rename");
    if (old) {
        for (size_t i = 0; i < env->ndbs; i++) {
            if (env->dbs[i] != old) continue;
            db_close(old);
            env->dbs[i] = env->dbs[--env->ndbs];
            break;
        }
    }
    rc = env_open_locked(env, name, out);
    pthread_mutex_unlock(&env->mu);
    /* The old database, now under the build name, is removed outside the mutex (as by a drop). */
    if (exists) fs_remove_tree(from);
    free(from);
    free(to);
    return rc;
fail:
    if (old) atomic_store(&old->dropping, false);
    pthread_mutex_unlock(&env->mu);
    fs_remove_tree(from);
    free(from);
    free(to);
    return rc;
}

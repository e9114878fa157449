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
 *
 * A database directory is "damaged" when its MANIFEST is missing: it is not listed as a database
 * but by jvdb_db_list_damaged, opening it says what the directory holds, creating the name says it
 * exists, and drop removes it.  A read-only environment (jvdb_env_open_readonly) changes nothing on
 * disk: shared flock, no clean-up, databases loaded in DB_MODE_READONLY.
 *
 * env->mu guards the handle list and the names being repaired; it is never held across the
 * recursive removal of a dropped directory or a repair, so other databases open meanwhile.
 */
#include "jvdb.h"

#include "core/grow.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "store/db_impl.h"
#include "store/kdckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
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
    pthread_cond_t released; /* an env_db_acquire holder let go, or a load finished */
    jvdb_db **dbs;
    size_t ndbs, cap;
    bool readonly;
    char **busy; /* names under repair: opens fail with JVDB_EBUSY */
    size_t nbusy;
    struct env_loading *loading; /* databases loaded right now, without the mutex */
};

const char *jvdb_env_path(const jvdb_env *env) { return env->path; }

/* Exclusive for a writer (which records its pid in LOCK), shared for read-only opens, which write
 * nothing; a read-only open of a directory without LOCK (never opened by a writer) locks nothing. */
static int env_lock(jvdb_env *env)
{
    char *lock = fs_join(env->path, "LOCK");
    if (!lock) return err_set(JVDB_ENOMEM, "out of memory");
    env->lock_fd = env->readonly ? open(lock, O_RDONLY | O_CLOEXEC) : open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (env->lock_fd < 0) {
        int rc = env->readonly && errno == ENOENT ? JVDB_OK : err_errno(errno, "cannot open %s", lock);
        free(lock);
        return rc;
    }
    if (flock(env->lock_fd, (env->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(env->lock_fd, pid, sizeof pid - 1, 0);
        if (n > 0) pid[n] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        int rc;
        if (e != EWOULDBLOCK) rc = err_errno(e, "cannot lock %s", lock);
        else if (!env->readonly && flock(env->lock_fd, LOCK_SH | LOCK_NB) == 0) {
            flock(env->lock_fd, LOCK_UN);
            rc = err_set(JVDB_ELOCKED,
                         "data directory %s is open read-only by another jvdb process (a read-only command); try again "
                         "when it finishes",
                         env->path);
        } else
            rc = err_set(JVDB_ELOCKED, "data directory %s is locked by pid %s (another jvdb process has it open)",
                         env->path, *pid ? pid : "unknown");
        free(lock);
        return rc;
    }
    free(lock);
    if (env->readonly) return JVDB_OK;
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
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".drop-", 6) && strncmp(e->d_name, ".build-", 7))
            continue;
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

/* Opens the data directory for writing (creating it) or read-only (changing nothing). */
static int env_open(const char *path, bool readonly, jvdb_env **out)
{
    err_clear();
    if (!path || !*path) return err_set(JVDB_EINVAL, "data directory path is empty");
    if (readonly && !fs_exists(path)) return err_set(JVDB_ENOTFOUND, "data directory %s does not exist", path);
    jvdb_env *env = calloc(1, sizeof *env);
    if (!env) return err_set(JVDB_ENOMEM, "out of memory");
    env->lock_fd = -1;
    env->readonly = readonly;
    pthread_mutex_init(&env->mu, NULL);
    pthread_cond_init(&env->released, NULL); /* waited on without a timeout: any clock will do */
    int rc;
    env->path = strdup(path);
    env->dbdir = fs_join(path, "databases");
    if (!env->path || !env->dbdir) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    if (readonly) {
        if ((rc = env_lock(env))) goto fail;
    } else if ((rc = fs_mkdir(path)) || (rc = env_lock(env)) || (rc = fs_mkdir(env->dbdir)) || (rc = env_clean(env))) {
        goto fail;
    }
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

int jvdb_env_open(const char *path, jvdb_env **out) { return env_open(path, false, out); }
int jvdb_env_open_readonly(const char *path, jvdb_env **out) { return env_open(path, true, out); }

void jvdb_env_close(jvdb_env *env)
{
    if (!env) return;
    for (size_t i = 0; i < env->ndbs; i++) db_close(env->dbs[i]);
    free(env->dbs);
    if (env->lock_fd >= 0) close(env->lock_fd); /* releases the flock */
    free(env->path);
    free(env->dbdir);
    free(env->busy);
    pthread_mutex_destroy(&env->mu);
    pthread_cond_destroy(&env->released);
    free(env);
}

/* JVDB_EREADONLY for calls that would change a read-only environment. */
static int env_check_writable(const jvdb_env *env)
{
    if (!env->readonly) return JVDB_OK;
    return err_set(JVDB_EREADONLY, "data directory %s was opened read-only", env->path);
}

/* What a database directory without MANIFEST holds, for the messages that call it damaged. */
static void env_describe_damage(const char *dir, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "its MANIFEST is missing");
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (count < 8 && n < cap)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", count ? ", " : "; the directory holds ", e->d_name);
        count++;
    }
    closedir(d);
    if (count == 0 && n < cap) snprintf(buf + n, cap - n, "; the directory is empty");
    else if (count > 8 && n < cap) snprintf(buf + n, cap - n, " and %d more", count - 8);
}

/* 1 when <databases>/<name> is a directory without MANIFEST. */
static int env_is_damaged(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) return 0;
    char *mf = fs_join(dir, "MANIFEST");
    int missing = mf && !fs_exists(mf);
    free(mf);
    return missing;
}

/* Whether `name` is being repaired; env->mu held. */
static int env_is_busy_locked(const jvdb_env *env, const char *name)
{
    for (size_t i = 0; i < env->nbusy; i++)
        if (!strcmp(env->busy[i], name)) return 1;
    return 0;
}

/* Refuses a database name outside 1..JVDB_MAX_NAME_LEN characters of [A-Za-z0-9_-]: it becomes a
 * directory name, so it can never be a path. */
static int env_check_name(const char *name)
{
    if (!db_name_valid(name))
        return err_set(JVDB_EINVAL, "database name '%s' is not allowed (use 1 to %d characters of A-Z a-z 0-9 _ -)",
                       name ? name : "", JVDB_MAX_NAME_LEN);
    return JVDB_OK;
}

/* The open handle of `name` in this environment, or NULL; env->mu held. */
static jvdb_db *env_find_open(jvdb_env *env, const char *name)
{
    for (size_t i = 0; i < env->ndbs; i++)
        if (!strcmp(jvdb_db_name(env->dbs[i]), name)) return env->dbs[i];
    return NULL;
}

/* Whether a thread is loading `name` right now (out of the mutex, see env_open_locked); env->mu held. */
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

/* The handle of `name`: the open one, or loaded now (with env->mu released for the load) and registered.
 * Refuses a database under repair, a missing one, and a damaged one (directory without MANIFEST). */
static int env_open_locked(jvdb_env *env, const char *name, jvdb_db **out)
{
    env_wait_loading(env, name);
    jvdb_db *db = env_find_open(env, name);
    if (db) {
        *out = db;
        return JVDB_OK;
    }
    if (env_is_busy_locked(env, name)) return err_set(JVDB_EBUSY, "database '%s' is being repaired", name);
    char *dir = fs_join(env->dbdir, name);
    if (!dir) return err_set(JVDB_ENOMEM, "out of memory");
    char *mf = fs_join(dir, "MANIFEST");
    int exists = mf && fs_exists(mf);
    free(mf);
    if (!exists) {
        int rc;
        if (env_is_damaged(dir)) {
            char what[768];
            env_describe_damage(dir, what, sizeof what);
            rc = err_set(JVDB_ECORRUPT, "database '%s' is damaged: %s (drop it, or put its MANIFEST back)", name, what);
        } else {
            rc = err_set(JVDB_ENOTFOUND, "database '%s' does not exist", name);
        }
        free(dir);
        return rc;
    }
    /* Loading reads every segment (seconds for a large database), so it runs without the mutex:
     * opening one database never stalls the handles of the others.  Whoever wants this one
     * meanwhile waits in env_wait_loading. */
    struct env_loading me = { name, env->loading };
    env->loading = &me;
    pthread_mutex_unlock(&env->mu);
    int rc = db_load(env, dir, env->readonly ? DB_MODE_READONLY : DB_MODE_WRITE, &db);
    free(dir);
    pthread_mutex_lock(&env->mu);
    for (struct env_loading **pp = &env->loading; *pp; pp = &(*pp)->next)
        if (*pp == &me) {
            *pp = me.next;
            break;
        }
    pthread_cond_broadcast(&env->released);
    if (rc) return rc;
    jvdb_db **n = grow_array(env->dbs, &env->cap, env->ndbs + 1, sizeof *n, 8);
    if (!n) {
        db_close(db);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    env->dbs = n;
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
    if (rc == JVDB_OK && atomic_load(&(*out)->dropping))
        rc = err_set(JVDB_ENOTFOUND, "database '%s' is being dropped", name);
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

/* Around the rename of a retired database's directory (env->mu held, `dropping` set): hold 1 lets
 * its background writers that address files by path (keydir checkpoint, graph save) end in this
 * directory, since after the rename the path names another database's; hold 0, after a rename that
 * failed, lets them go on (kdckpt's thread is started again). */
static void env_hold_writers(jvdb_db *db, const char *name, int hold)
{
    db_ext_hold(db, hold);
    if (kdckpt_hold(db, hold) != JVDB_OK) /* it only checkpoints at close then */
        log_warn("database '%s': %s", name, jvdb_errmsg());
}

/* Undoes env_retire_locked and the hold after a drop's or a replace's rename failed: the database
 * serves again and its background writers go on; the failure `rc` keeps its message. */
static void env_unretire(jvdb_db *db, const char *name, int rc)
{
    atomic_store(&db->dropping, false);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    env_hold_writers(db, name, 0);
    err_set(rc, "%s", msg);
}

int jvdb_db_create(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **out)
{
    err_clear();
    int rc = env_check_name(name);
    if (rc) return rc;
    if (!opts) return err_set(JVDB_EINVAL, "options are missing");
    if ((rc = env_check_writable(env))) return rc;
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    char *dir = fs_join(env->dbdir, name);
    if (!dir) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else if (env_is_damaged(dir)) {
        char what[768];
        env_describe_damage(dir, what, sizeof what);
        rc = err_set(JVDB_EEXISTS, "database '%s' exists but is damaged: %s (drop it first)", name, what);
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
    if ((rc = env_check_writable(env))) return rc;
    char *dir = fs_join(env->dbdir, name);
    char *gone = NULL;
    jvdb_db *closing = NULL;
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    char dropname[160];
    static unsigned drop_seq;
    snprintf(dropname, sizeof dropname, ".drop-%s-%d-%u", name, (int)getpid(), drop_seq++);
    if (dir) gone = fs_join(env->dbdir, dropname);
    if (!dir || !gone) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto unlock;
    }
    if (env_is_busy_locked(env, name)) {
        rc = err_set(JVDB_EBUSY, "database '%s' is being repaired", name);
        goto unlock;
    }
    char *mf = fs_join(dir, "MANIFEST");
    int exists = (mf && fs_exists(mf)) || env_is_damaged(dir);
    free(mf);
    if (!exists) {
        rc = err_set(JVDB_ENOTFOUND, "database '%s' does not exist", name);
        goto unlock;
    }
    jvdb_db *open_db = env_find_open(env, name);
    if (open_db && (rc = env_retire_locked(env, open_db, name))) goto unlock;
    /* A keydir checkpoint or graph save already under way finishes now, in this directory: after the
     * rename its path would name a database created again under the same name (env_hold_writers). */
    if (open_db) env_hold_writers(open_db, name, 1);
    /* The rename is the commit point: after it the database is gone, whatever happens next. */
    io_crash_point("db.drop.before_rename");
    if (io_rename(dir, gone) < 0) {
        rc = err_errno(errno, "cannot remove database '%s'", name);
        if (open_db) env_unretire(open_db, name, rc);
        goto unlock;
    }
    for (size_t i = 0; i < env->ndbs; i++) {
        if (env->dbs[i] != open_db) continue;
        closing = open_db;
        env->dbs[i] = env->dbs[--env->ndbs];
        break;
    }
unlock:
    pthread_mutex_unlock(&env->mu);
    /* Out of the mutex: nobody can reach the handle or the directory any more, and removing a big
     * database must not hold up opening the others. */
    if (rc == JVDB_OK) {
        io_crash_point("db.drop.after_rename");
        /* Until the rename is durable, emptying the directory could leave a half database under its
         * name after a power cut: the files stay for the next open's clean-up instead. */
        if (io_fsync_dir(env->dbdir) < 0)
            rc = err_errno(errno,
                           "database '%s' is dropped but the drop may not survive a crash (cannot sync %s); its files "
                           "are removed at the next open",
                           name, env->dbdir);
        if (closing) db_close(closing);
        if (rc == JVDB_OK) rc = fs_remove_tree(gone);
    }
    free(dir);
    free(gone);
    return rc;
}

int jvdb_db_repair(jvdb_env *env, const char *name, jvdb_repair_fn on_drop, void *arg, jvdb_repair_result *out)
{
    err_clear();
    jvdb_repair_result none;
    if (!out) out = &none;
    memset(out, 0, sizeof *out);
    int rc = env_check_name(name);
    if (rc) return rc;
    if ((rc = env_check_writable(env))) return rc;
    char *dir = fs_join(env->dbdir, name);
    char *claim = strdup(name);
    char **nb = NULL;
    if (!dir || !claim) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_lock(&env->mu);
    env_wait_loading(env, name);
    /* A handle in use may point into the very segments repair replaces. */
    if (env_find_open(env, name) || env_is_busy_locked(env, name)) {
        rc = err_set(JVDB_EBUSY, "database '%s' is open or being repaired; repair it when nothing uses it", name);
    } else if (!(nb = realloc(env->busy, (env->nbusy + 1) * sizeof *nb))) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else {
        env->busy = nb;
        env->busy[env->nbusy++] = claim;
        claim = NULL;
    }
    pthread_mutex_unlock(&env->mu);
    if (rc) goto out;
    char *mf = fs_join(dir, "MANIFEST");
    int exists = mf && fs_exists(mf);
    free(mf);
    if (!exists && env_is_damaged(dir)) {
        char what[768];
        env_describe_damage(dir, what, sizeof what);
        rc = err_set(JVDB_ECORRUPT, "database '%s' cannot be repaired: %s (drop it, or put its MANIFEST back)", name,
                     what);
    } else if (!exists) {
        rc = err_set(JVDB_ENOTFOUND, "database '%s' does not exist", name);
    } else {
        rc = db_repair_dir(env, dir, on_drop, arg, out);
    }
    pthread_mutex_lock(&env->mu);
    for (size_t i = 0; i < env->nbusy; i++) {
        if (strcmp(env->busy[i], name) != 0) continue;
        free(env->busy[i]);
        env->busy[i] = env->busy[--env->nbusy];
        break;
    }
    pthread_mutex_unlock(&env->mu);
out:
    free(dir);
    free(claim);
    return rc;
}

static int env_cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Database directories with (damaged = 0) or without (damaged = 1) a MANIFEST. */
static int env_list(jvdb_env *env, int damaged, char ***names, size_t *count)
{
    err_clear();
    *names = NULL;
    *count = 0;
    DIR *d = opendir(env->dbdir);
    if (!d && errno == ENOENT && env->readonly) return JVDB_OK; /* never opened for writing */
    if (!d) return err_errno(errno, "cannot list %s", env->dbdir);
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = JVDB_OK;
    while ((e = readdir(d)) != NULL) {
        if (!db_name_valid(e->d_name)) continue;
        char *dir = fs_join(env->dbdir, e->d_name);
        char *mf = dir ? fs_join(dir, "MANIFEST") : NULL;
        int ok = damaged ? dir && env_is_damaged(dir) : mf && fs_exists(mf);
        free(dir);
        free(mf);
        if (!ok) continue;
        char **nv = grow_array(v, &cap, n + 1, sizeof *nv, 16);
        if (!nv) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        v = nv;
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

int jvdb_db_list(jvdb_env *env, char ***names, size_t *count) { return env_list(env, 0, names, count); }
int jvdb_db_list_damaged(jvdb_env *env, char ***names, size_t *count) { return env_list(env, 1, names, count); }

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
    if ((rc = env_check_writable(env))) return rc;
    char dirname[160];
    pthread_mutex_lock(&env->mu);
    snprintf(dirname, sizeof dirname, ".build-%s-%d-%u", name, (int)getpid(), env_build_seq++);
    pthread_mutex_unlock(&env->mu);
    if ((rc = db_create_dir(env->dbdir, dirname, name, opts))) return rc;
    char *dir = fs_join(env->dbdir, dirname);
    if (!dir) return err_set(JVDB_ENOMEM, "out of memory");
    rc = db_load(env, dir, DB_MODE_WRITE, built);
    /* No periodic keydir checkpoint while it grows: each would sync and rewrite every entry so far;
     * publish writes the one the published database opens with. */
    if (!rc && (rc = kdckpt_hold(*built, 1))) {
        db_close(*built);
        *built = NULL;
    }
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

/* Makes the built handle the open handle of `name`, whose directory is now `to` (env->mu held, after
 * the rename): what the build holds in memory (its keydir above all) is what an open would rebuild
 * from the files, so the published database is not closed and read again. */
static int env_adopt_built(jvdb_env *env, jvdb_db *built, const char *name, const char *to, jvdb_db **out)
{
    jvdb_db **n = db_move_dir(built, to) ? NULL : grow_array(env->dbs, &env->cap, env->ndbs + 1, sizeof *n, 8);
    if (!n) {
        /* Published all the same: close the handle and open the database anew. */
        db_close(built);
        err_clear();
        return env_open_locked(env, name, out);
    }
    env->dbs = n;
    env->dbs[env->ndbs++] = built;
    *out = built;
    if (kdckpt_hold(built, 0) != JVDB_OK) /* it only checkpoints at close then */
        log_warn("database '%s': %s", name, jvdb_errmsg());
    err_clear();
    return JVDB_OK;
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
    /* Everything of the new database is durable before it becomes visible, its keydir checkpoint
     * included (what close would write), so the handle can be kept instead of closed and reopened. */
    if ((rc = db_sync_all(built))) {
        env_build_abort(env, built);
        free(from);
        free(to);
        return rc;
    }
    if (kdckpt_flush(built, "restore") != JVDB_OK)
        log_warn("database '%s': no keydir checkpoint for the restored database: %s", name, jvdb_errmsg());
    err_clear();
    jvdb_db *old = NULL; /* set before any `goto fail`, which reads it */
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
    /* Its background keydir checkpoint or graph save, if one is under way, ends now in its own
     * directory: after the swap that path names the restored database's, where its KEYDIR would be
     * loaded over the restored segments at the next open, its ext.hnsw installed over the restored
     * graph (`dropping` keeps another from starting). */
    if (old) env_hold_writers(old, name, 1);
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
    rc = env_adopt_built(env, built, name, to, out);
    pthread_mutex_unlock(&env->mu);
    /* The old database, now under the build name, is removed outside the mutex (as by a drop). */
    if (exists) fs_remove_tree(from);
    free(from);
    free(to);
    return rc;
fail:
    if (old) env_unretire(old, name, rc);
    pthread_mutex_unlock(&env->mu);
    db_close(built);
    fs_remove_tree(from);
    free(from);
    free(to);
    return rc;
}

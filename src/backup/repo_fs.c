/*
 * repo_fs.c — a backup repository in a local (or mounted) directory.
 *
 *   <dir>/<database>/<backup-id>/backup.json
 *   <dir>/<database>/<backup-id>/data.jvb.zst
 *   <dir>/<database>/.tmp-<backup-id>-<pid>/    a backup being written
 *   <dir>/<database>/.del-<backup-id>-<pid>/    a backup being deleted
 *   <dir>/jvdb-repo.json                        an encrypted repository's marker (crypt.c)
 *   <dir>/<database>/log/...                    backup log objects and the lease (wal.c), each file
 *                                               written whole (temp, fsync, rename, fsync dir)
 *
 * Visibility is one rename each way.  A backup is written completely into its .tmp directory (data
 * fdatasynced, backup.json fsynced, directory fsynced) and then renamed to its id, so a crash at
 * any moment leaves either no backup or a whole one; the .tmp leftover is invisible and removed by
 * a later cleanup.  Deletion renames the backup away first, so a half-deleted backup is never
 * listed, and it is also what makes two concurrent deletes of one backup safe: only one rename of
 * <id> can succeed, the other finds it gone and reports the backup not found.  All writes go
 * through core/io so the crash tests can stop the process at each step.
 *
 * Only a backup being written creates directories (the repository itself, mkdir -p, then the
 * database's folder).  Every other operation on a repository directory that does not exist fails
 * with "repository <dir> does not exist": a mistyped path must never be created by a read.
 */
#include "backup/backup.h"

#include "core/grow.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "store/db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct repo_fs {
    struct jvdb_repo base;
    char *dir;
};

/* Joins "a/b/c" (or "a/b" when c is NULL) into a malloc'd path; NULL when out of memory. */
static char *fs_path3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + (c ? strlen(c) : 0) + 3;
    char *p = malloc(n);
    if (!p) return NULL;
    if (c) snprintf(p, n, "%s/%s/%s", a, b, c);
    else snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* JVDB_OK when the repository directory exists; never creates it. */
static int repo_fs_present(const struct repo_fs *f)
{
    struct stat st;
    if (stat(f->dir, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return err_set(JVDB_ENOTFOUND, "repository %s does not exist", f->dir);
        return err_errno(errno, "cannot read repository %s", f->dir);
    }
    if (!S_ISDIR(st.st_mode)) return err_set(JVDB_EINVAL, "repository %s is not a directory", f->dir);
    return JVDB_OK;
}

static int repo_fs_cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists the databases with backups in the repository (its valid directory names). */
static int repo_fs_list_databases(jvdb_repo *r, char ***names, size_t *n)
{
    struct repo_fs *f = (struct repo_fs *)r;
    *names = NULL;
    *n = 0;
    int prc = repo_fs_present(f);
    if (prc) return prc;
    DIR *d = opendir(f->dir);
    if (!d) return err_errno(errno, "cannot read repository %s", f->dir);
    size_t cap = 0;
    int rc = JVDB_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!db_name_valid(e->d_name)) continue;
        char **nn = grow_array(*names, &cap, *n + 1, sizeof *nn, 16);
        if (!nn) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        *names = nn;
        if (!((*names)[*n] = strdup(e->d_name))) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (rc) {
        jvdb_free_names(*names, *n);
        *names = NULL;
        *n = 0;
        return rc;
    }
    if (*n) qsort(*names, *n, sizeof **names, repo_fs_cmp_names);
    return JVDB_OK;
}

/* Lists the backups of one database that have their metadata, with the size of their data. */
static int repo_fs_list_backups(jvdb_repo *r, const char *db, struct repo_entry **out, size_t *n)
{
    struct repo_fs *f = (struct repo_fs *)r;
    *out = NULL;
    *n = 0;
    int prc = repo_fs_present(f);
    if (prc) return prc;
    char *dbdir = fs_path3(f->dir, db, NULL);
    if (!dbdir) return err_set(JVDB_ENOMEM, "out of memory");
    DIR *d = opendir(dbdir);
    if (!d) {
        int e = errno;
        free(dbdir);
        return e == ENOENT ? JVDB_OK : err_errno(e, "cannot read repository %s/%s", f->dir, db);
    }
    size_t cap = 0;
    int rc = JVDB_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!backup_id_valid(e->d_name)) continue;
        char *meta = fs_path3(dbdir, e->d_name, BACKUP_META_NAME), *data = fs_path3(dbdir, e->d_name, BACKUP_DATA_NAME);
        struct stat st;
        int has_meta = meta && stat(meta, &st) == 0;
        int64_t size = data && stat(data, &st) == 0 ? (int64_t)st.st_size : -1;
        free(meta);
        free(data);
        if (!has_meta) continue;
        struct repo_entry *ne = grow_array(*out, &cap, *n + 1, sizeof *ne, 16);
        if (!ne) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        *out = ne;
        snprintf((*out)[*n].id, sizeof(*out)[*n].id, "%.63s", e->d_name);
        (*out)[*n].data_size = size;
        (*n)++;
    }
    closedir(d);
    free(dbdir);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* repo_ops read_meta: the whole backup.json of a committed backup. */
static int repo_fs_read_meta(jvdb_repo *r, const char *db, const char *id, char **buf, size_t *len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    int prc = repo_fs_present(f);
    if (prc) return prc;
    char *dbdir = fs_path3(f->dir, db, NULL);
    char *p = dbdir ? fs_path3(dbdir, id, BACKUP_META_NAME) : NULL;
    free(dbdir);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = fs_read_file(p, buf, len);
    free(p);
    return rc;
}

struct repo_fs_reader {
    struct repo_reader base;
    int fd;
    char *path;
};

/* repo_reader read: up to cap bytes of the data file (retrying EINTR); 0 at its end. */
static int repo_fs_read(struct repo_reader *rr, void *buf, size_t cap, size_t *got)
{
    struct repo_fs_reader *r = (struct repo_fs_reader *)rr;
    for (;;) {
        ssize_t n = read(r->fd, buf, cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return err_errno(errno, "cannot read %s", r->path);
        *got = (size_t)n;
        return JVDB_OK;
    }
}

/* repo_reader close: closes the data file and frees the reader. */
static void repo_fs_reader_close(struct repo_reader *rr)
{
    struct repo_fs_reader *r = (struct repo_fs_reader *)rr;
    close(r->fd);
    free(r->path);
    free(r);
}

/* repo_ops open_data: opens a committed backup's data.jvb.zst for one sequential read. */
static int repo_fs_open_data(jvdb_repo *rp, const char *db, const char *id, struct repo_reader **out)
{
    struct repo_fs *f = (struct repo_fs *)rp;
    int prc = repo_fs_present(f);
    if (prc) return prc;
    struct repo_fs_reader *r = calloc(1, sizeof *r);
    char *dbdir = fs_path3(f->dir, db, NULL);
    if (r && dbdir) r->path = fs_path3(dbdir, id, BACKUP_DATA_NAME);
    free(dbdir);
    if (!r || !r->path) {
        if (r) free(r->path);
        free(r);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int rc = err_errno(errno, "backup %s of '%s': cannot open %s", id, db, r->path);
        free(r->path);
        free(r);
        return rc;
    }
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    r->base.read = repo_fs_read;
    r->base.close = repo_fs_reader_close;
    *out = &r->base;
    return JVDB_OK;
}

struct repo_fs_stage {
    struct repo_stage base;
    char *dbdir, *tmp, *final, *data;
    int fd;
    uint64_t written, kicked;
};

/* Start writing back every 16 MiB as it comes, so the final fdatasync waits for the tail only and
 * the disk works while the next megabytes are being compressed. */
#define REPO_FS_KICK (16u << 20)

/* repo_stage write: appends to the staged data file, starting write-back every REPO_FS_KICK bytes. */
static int repo_fs_stage_write(struct repo_stage *s, const void *buf, size_t len)
{
    struct repo_fs_stage *st = (struct repo_fs_stage *)s;
    if (io_write_all(st->fd, buf, len) < 0) return err_errno(errno, "cannot write %s", st->data);
    st->written += len;
    if (st->written - st->kicked >= REPO_FS_KICK) {
        sync_file_range(st->fd, (off_t)st->kicked, (off_t)(st->written - st->kicked), SYNC_FILE_RANGE_WRITE);
        st->kicked = st->written;
    }
    return JVDB_OK;
}

/* repo_stage commit: syncs the data file, writes and syncs backup.json, then renames the staging directory
 * to the backup's id (the commit point) and syncs the database folder. */
static int repo_fs_stage_commit(struct repo_stage *s, const char *meta, size_t len)
{
    struct repo_fs_stage *st = (struct repo_fs_stage *)s;
    if (io_fdatasync(st->fd) < 0) return err_errno(errno, "cannot sync %s", st->data);
    io_close(st->fd);
    st->fd = -1;
    char *mp = fs_join(st->tmp, BACKUP_META_NAME);
    if (!mp) return err_set(JVDB_ENOMEM, "out of memory");
    int fd = io_open(mp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int rc = JVDB_OK;
    if (fd < 0 || io_write_all(fd, meta, len) < 0 || io_fsync(fd) < 0) rc = err_errno(errno, "cannot write %s", mp);
    if (fd >= 0) io_close(fd);
    free(mp);
    if (rc) return rc;
    if (io_fsync_dir(st->tmp) < 0) return err_errno(errno, "cannot sync directory %s", st->tmp);
    io_crash_point("backup.before_publish");
    /* The commit point: the backup appears whole under its id. */
    if (renameat2(AT_FDCWD, st->tmp, AT_FDCWD, st->final, RENAME_NOREPLACE) < 0)
        return err_errno(errno, "cannot rename %s to %s", st->tmp, st->final);
    free(st->tmp);
    st->tmp = NULL;
    if (io_fsync_dir(st->dbdir) < 0) return err_errno(errno, "cannot sync directory %s", st->dbdir);
    io_crash_point("backup.after_publish");
    return JVDB_OK;
}

/* An extra object is a file beside data.jvb.zst in the staging directory, fsynced now; the commit's
 * directory fsync and rename publish it with the rest. */
static int repo_fs_stage_put_extra(struct repo_stage *s, const char *name, const void *buf, size_t len)
{
    struct repo_fs_stage *st = (struct repo_fs_stage *)s;
    char *p = fs_join(st->tmp, name);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    int fd = io_open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = JVDB_OK;
    if (fd < 0 || io_write_all(fd, buf, len) < 0 || io_fsync(fd) < 0) rc = err_errno(errno, "cannot write %s", p);
    if (fd >= 0) io_close(fd);
    free(p);
    return rc;
}

/* repo_ops read_extra: an extra object of a committed backup, JVDB_ENOTFOUND when it carries none. */
static int repo_fs_read_extra(jvdb_repo *r, const char *db, const char *id, const char *name, char **buf, size_t *len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    char *dbdir = fs_path3(f->dir, db, NULL);
    char *p = dbdir ? fs_path3(dbdir, id, name) : NULL;
    free(dbdir);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    int rc =
        fs_exists(p) ? fs_read_file(p, buf, len) : err_set(JVDB_ENOTFOUND, "backup %s of '%s' has no %s", id, db, name);
    free(p);
    return rc;
}

/* repo_stage abort (and the end of a committed stage): removes what is left of the staging directory. */
static void repo_fs_stage_abort(struct repo_stage *s)
{
    struct repo_fs_stage *st = (struct repo_fs_stage *)s;
    if (st->fd >= 0) io_close(st->fd);
    if (st->tmp) fs_remove_tree(st->tmp);
    free(st->dbdir);
    free(st->tmp);
    free(st->final);
    free(st->data);
    free(st);
}

/* repo_ops stage_begin: creates the repository and database folders if needed (the only operation that
 * may) and a fresh .tmp-<id>-<pid> directory with an empty data file. */
static int repo_fs_stage_begin(jvdb_repo *r, const char *db, const char *id, struct repo_stage **out)
{
    struct repo_fs *f = (struct repo_fs *)r;
    struct repo_fs_stage *st = calloc(1, sizeof *st);
    if (!st) return err_set(JVDB_ENOMEM, "out of memory");
    st->fd = -1;
    st->base.write = repo_fs_stage_write;
    st->base.commit = repo_fs_stage_commit;
    st->base.abort = repo_fs_stage_abort;
    st->base.put_extra = repo_fs_stage_put_extra;
    char tmpname[BACKUP_ID_MAX + 32];
    snprintf(tmpname, sizeof tmpname, ".tmp-%s-%d", id, (int)getpid());
    st->dbdir = fs_path3(f->dir, db, NULL);
    if (st->dbdir) {
        st->tmp = fs_join(st->dbdir, tmpname);
        st->final = fs_join(st->dbdir, id);
    }
    if (st->tmp) st->data = fs_join(st->tmp, BACKUP_DATA_NAME);
    int rc = JVDB_OK;
    if (!st->data || !st->final) rc = err_set(JVDB_ENOMEM, "out of memory");
    int created = !rc && !fs_exists(st->dbdir);
    if (!rc) rc = fs_mkdir(st->dbdir);
    if (!rc && created && io_fsync_dir(f->dir) < 0) rc = err_errno(errno, "cannot sync directory %s", f->dir);
    if (!rc) fs_remove_tree(st->tmp);
    if (!rc) rc = fs_mkdir(st->tmp);
    if (!rc && (st->fd = io_open(st->data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        rc = err_errno(errno, "cannot create %s", st->data);
    if (rc) {
        repo_fs_stage_abort(&st->base);
        return rc;
    }
    *out = &st->base;
    return JVDB_OK;
}

/* repo_ops remove: renames the backup to .del-* (the step that makes it invisible, and that only one of
 * two concurrent deletes wins), then removes the renamed tree. */
static int repo_fs_remove(jvdb_repo *r, const char *db, const char *id)
{
    static _Atomic unsigned seq;
    struct repo_fs *f = (struct repo_fs *)r;
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char gone[BACKUP_ID_MAX + 48];
    snprintf(gone, sizeof gone, ".del-%s-%d-%u", id, (int)getpid(), seq++);
    char *dbdir = fs_path3(f->dir, db, NULL);
    char *from = dbdir ? fs_join(dbdir, id) : NULL, *to = dbdir ? fs_join(dbdir, gone) : NULL;
    if (!from || !to) rc = err_set(JVDB_ENOMEM, "out of memory");
    /* The one step that decides who deletes it: of two concurrent deletes, one rename fails. */
    else if (io_crash_point("backup.delete.before_rename"), io_rename(from, to) < 0)
        rc = errno == ENOENT
                 ? err_set(JVDB_ENOTFOUND, "backup %s of '%s' not found in repository %s (deleted meanwhile)", id, db,
                           f->dir)
                 : err_errno(errno, "backup %s of '%s': cannot remove %s", id, db, from);
    else if (io_crash_point("backup.delete.after_rename"), io_fsync_dir(dbdir) < 0)
        rc = err_errno(errno, "cannot sync directory %s", dbdir);
    else rc = fs_remove_tree(to);
    free(dbdir);
    free(from);
    free(to);
    return rc;
}

/* Removes temp files of log object and lease writes that died before their rename (<db>/log/<inc>/NAME.*.tmp,
 * <db>/log/LEASE.*.tmp)
 * once they are older than max_age_s, so no live write can own them. */
static void repo_fs_cleanup_log(const char *dbdir, int64_t max_age_s)
{
    char *logdir = fs_join(dbdir, "log");
    DIR *d = logdir ? opendir(logdir) : NULL;
    struct dirent *e;
    time_t now = time(NULL);
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *inc = fs_join(logdir, e->d_name);
        size_t en = strlen(e->d_name);
        struct stat lst;
        if (inc && en > 4 && !strcmp(e->d_name + en - 4, ".tmp")) { /* a lease write's */
            if (stat(inc, &lst) == 0 && now - lst.st_mtime >= max_age_s) io_unlink(inc);
            free(inc);
            continue;
        }
        DIR *di = inc ? opendir(inc) : NULL;
        struct dirent *o;
        while (di && (o = readdir(di))) {
            size_t n = strlen(o->d_name);
            if (n < 5 || strcmp(o->d_name + n - 4, ".tmp")) continue;
            char *p = fs_join(inc, o->d_name);
            struct stat st;
            if (p && stat(p, &st) == 0 && now - st.st_mtime >= max_age_s) io_unlink(p);
            free(p);
        }
        if (di) closedir(di);
        free(inc);
    }
    if (d) closedir(d);
    free(logdir);
}

/* repo_ops cleanup: removes every .del-* leftover of `db`, and .tmp-* leftovers and log temp files not modified for
 * max_age_s seconds (a younger one may belong to a write in progress). */
static void repo_fs_cleanup(jvdb_repo *r, const char *db, int64_t max_age_s)
{
    struct repo_fs *f = (struct repo_fs *)r;
    char *dbdir = fs_path3(f->dir, db, NULL);
    if (dbdir) repo_fs_cleanup_log(dbdir, max_age_s);
    DIR *d = dbdir ? opendir(dbdir) : NULL;
    if (!d) {
        free(dbdir);
        return;
    }
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".del-", 5)) continue;
        char *p = fs_join(dbdir, e->d_name);
        struct stat st;
        /* A .del- is never needed again, whatever its age (a concurrent remover tolerates ENOENT). */
        int del = e->d_name[1] == 'd';
        if (p && (del || (stat(p, &st) == 0 && now - st.st_mtime >= max_age_s))) fs_remove_tree(p);
        free(p);
    }
    closedir(d);
    free(dbdir);
}

/* repo_ops close: frees the handle (it holds no open files). */
static void repo_fs_close(jvdb_repo *r)
{
    struct repo_fs *f = (struct repo_fs *)r;
    free(f->dir);
    free(f->base.spec);
    free(f);
}

/* mkdir -p, so `--repo /backups/jvdb` works on a fresh disk. */
static int repo_fs_mkdirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = JVDB_OK;
    for (char *s = p + 1; *s && !rc; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) rc = err_errno(errno, "cannot create repository directory %s", p);
        *s = '/';
    }
    if (!rc && mkdir(p, 0755) < 0 && errno != EEXIST) rc = err_errno(errno, "cannot create repository directory %s", p);
    free(p);
    return rc;
}

/* Creates the repository directory if it is missing (backup create only). */
static int repo_fs_init(jvdb_repo *r)
{
    struct repo_fs *f = (struct repo_fs *)r;
    int rc = repo_fs_present(f);
    if (rc != JVDB_ENOTFOUND) return rc;
    err_clear();
    if ((rc = repo_fs_mkdirs(f->dir))) return rc;
    return repo_fs_present(f);
}

/* <dir>/<name>: a repository-wide object (the encryption marker, crypt.c). */
static int repo_fs_read_object(jvdb_repo *r, const char *name, char **buf, size_t *len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char *p = fs_path3(f->dir, name, NULL);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    rc = fs_read_file(p, buf, len);
    free(p);
    return rc;
}

/* repo_ops write_object: replaces <dir>/<name> atomically (temporary file, fsync, rename). */
static int repo_fs_write_object(jvdb_repo *r, const char *name, const void *buf, size_t len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char *p = fs_path3(f->dir, name, NULL);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    rc = fs_replace_file(p, buf, len, "backup.repo_object");
    free(p);
    return rc;
}

/* ------------------------------------------------------------------ objects of a database (wal.c) */

/* Whether a relative object name is safe to join to a path: segments of [A-Za-z0-9._-], none empty,
 * none starting with a dot (so never "..", never a temp file). */
static int repo_fs_obj_name_ok(const char *name)
{
    if (!*name || strlen(name) > 512) return 0;
    for (const char *seg = name; *seg;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (n == 0 || seg[0] == '.') return 0;
        for (size_t i = 0; i < n; i++) {
            char c = seg[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == '-'))
                return 0;
        }
        seg += n;
        if (*seg == '/') seg++;
    }
    return 1;
}

struct fs_walk {
    const char *prefix;
    repo_obj_fn fn;
    void *arg;
    const char *after; /* obj_list_after: only names that sort after this one (NULL: all) */
};

/* Whether relative name r (a directory when dir) can hold or be a name sorting after w->after. */
static int repo_fs_walk_wanted(const struct fs_walk *w, const char *r, int dir)
{
    if (!w->after) return 1;
    if (!dir) return strcmp(r, w->after) > 0;
    /* A directory: everything below it starts with "r/"; wanted unless all of that sorts before. */
    size_t n = strlen(r);
    int c = strncmp(r, w->after, n);
    return c > 0 || (c == 0 && (w->after[n] == '\0' || (unsigned char)w->after[n] <= '/'));
}

/* Calls w->fn for every regular file below `path` (relative name `rel`) that starts with the prefix;
 * dot-files and *.tmp (temp files of a write under way) are skipped. */
static int repo_fs_walk(struct fs_walk *w, const char *path, const char *rel, int depth)
{
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT || errno == ENOTDIR ? JVDB_OK : err_errno(errno, "cannot read %s", path);
    int rc = JVDB_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        size_t dl = strlen(e->d_name);
        if (e->d_name[0] == '.' || (dl > 4 && !strcmp(e->d_name + dl - 4, ".tmp"))) continue;
        if (w->after && e->d_type != DT_UNKNOWN) {
            /* Names at or before `after` are skipped by the name alone: no allocation, no stat for a
             * log's history. */
            char rb[1024];
            int rn = snprintf(rb, sizeof rb, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
            if (rn > 0 && (size_t)rn < sizeof rb && !repo_fs_walk_wanted(w, rb, e->d_type == DT_DIR)) continue;
        }
        size_t rl = strlen(rel) + strlen(e->d_name) + 2;
        char *r = malloc(rl), *p = fs_join(path, e->d_name);
        if (!r || !p) {
            free(r);
            free(p);
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        snprintf(r, rl, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        struct stat st;
        size_t pl = strlen(w->prefix), n = strlen(r);
        /* Descend only where the prefix can still match. */
        int relevant = !strncmp(r, w->prefix, n < pl ? n : pl);
        if (relevant && stat(p, &st) == 0 && repo_fs_walk_wanted(w, r, S_ISDIR(st.st_mode))) {
            if (S_ISDIR(st.st_mode) && depth < 8) rc = repo_fs_walk(w, p, r, depth + 1);
            else if (S_ISREG(st.st_mode) && n >= pl) rc = w->fn(w->arg, r, (int64_t)st.st_size);
        }
        free(r);
        free(p);
    }
    closedir(d);
    return rc;
}

/* Lists the objects below the database folder whose names start with `prefix` and sort after `after`. */
static int repo_fs_obj_list_after(jvdb_repo *r, const char *db, const char *prefix, const char *after, repo_obj_fn fn,
                                  void *arg)
{
    struct repo_fs *f = (struct repo_fs *)r;
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char *dbdir = fs_path3(f->dir, db, NULL);
    if (!dbdir) return err_set(JVDB_ENOMEM, "out of memory");
    struct fs_walk w = { prefix, fn, arg, after };
    rc = repo_fs_walk(&w, dbdir, "", 0);
    free(dbdir);
    return rc;
}

/* Lists the objects below the database folder whose names start with `prefix`. */
static int repo_fs_obj_list(jvdb_repo *r, const char *db, const char *prefix, repo_obj_fn fn, void *arg)
{
    return repo_fs_obj_list_after(r, db, prefix, NULL, fn, arg);
}

/* Creates the directories of `name` below the database folder (each new one made durable in its
 * parent), so the object's own rename has a home. */
static int repo_fs_obj_dirs(const char *dbdir, const char *name)
{
    char *p = fs_join(dbdir, name);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = JVDB_OK;
    size_t base = strlen(dbdir);
    for (char *s = p + base + 1; *s && !rc; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (!fs_exists(p)) {
            if ((rc = fs_mkdir(p))) break;
            char *slash = strrchr(p, '/');
            *slash = '\0';
            if (io_fsync_dir(p) < 0) rc = err_errno(errno, "cannot sync directory %s", p);
            *slash = '/';
        }
        *s = '/';
    }
    free(p);
    return rc;
}

/* Writes an object of the database folder whole and atomically. */
static int repo_fs_obj_put(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    if (!repo_fs_obj_name_ok(name)) return err_set(JVDB_EINVAL, "'%s' is not a repository object name", name);
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char *dbdir = fs_path3(f->dir, db, NULL);
    char *p = dbdir ? fs_join(dbdir, name) : NULL;
    if (!p) rc = err_set(JVDB_ENOMEM, "out of memory");
    int created = !rc && !fs_exists(dbdir);
    if (!rc) rc = fs_mkdir(dbdir);
    if (!rc && created && io_fsync_dir(f->dir) < 0) rc = err_errno(errno, "cannot sync directory %s", f->dir);
    if (!rc) rc = repo_fs_obj_dirs(dbdir, name);
    /* temp file, fsync, rename, fsync directory: the object appears whole or not at all */
    size_t nl = strlen(name);
    int lease = nl >= 5 && !strcmp(name + nl - 5, "LEASE");
    /* A temp name of its own: two primaries may write the lease (or one object name) at once. */
    if (!rc) rc = fs_replace_file_unique(p, buf, len, lease ? "ship.lease" : "ship.object");
    free(dbdir);
    free(p);
    return rc;
}

/* The path of object `name` of database `db` (malloc'd), once the name and the repository are good. */
static int repo_fs_obj_path(struct repo_fs *f, const char *db, const char *name, char **path)
{
    *path = NULL;
    if (!repo_fs_obj_name_ok(name)) return err_set(JVDB_EINVAL, "'%s' is not a repository object name", name);
    int rc = repo_fs_present(f);
    if (rc) return rc;
    char *dbdir = fs_path3(f->dir, db, NULL);
    *path = dbdir ? fs_join(dbdir, name) : NULL;
    free(dbdir);
    return *path ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
}

/* Reads an object of the database folder whole. */
static int repo_fs_obj_get(jvdb_repo *r, const char *db, const char *name, char **buf, size_t *len)
{
    char *p;
    int rc = repo_fs_obj_path((struct repo_fs *)r, db, name, &p);
    if (!rc) rc = fs_read_file(p, buf, len);
    free(p);
    return rc;
}

/* Removes an object of the database folder (absent: fine). */
static int repo_fs_obj_delete(jvdb_repo *r, const char *db, const char *name)
{
    char *p;
    int rc = repo_fs_obj_path((struct repo_fs *)r, db, name, &p);
    if (rc) return rc;
    if (io_unlink(p) < 0) rc = errno == ENOENT ? JVDB_OK : err_errno(errno, "cannot remove %s", p);
    else {
        char *slash = strrchr(p, '/');
        *slash = '\0';
        if (io_fsync_dir(p) < 0) rc = err_errno(errno, "cannot sync directory %s", p);
    }
    free(p);
    return rc;
}

/* Creates an object of the database folder only if it does not exist: the bytes go to a temp file of their own
 * (synced), which link(2) puts under the name atomically or not at all (EEXIST: another writer has it). */
static int repo_fs_obj_create(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len)
{
    struct repo_fs *f = (struct repo_fs *)r;
    if (!repo_fs_obj_name_ok(name)) return err_set(JVDB_EINVAL, "'%s' is not a repository object name", name);
    int rc = repo_fs_present(f);
    if (rc) return rc;
    static _Atomic unsigned seq;
    char *dbdir = fs_path3(f->dir, db, NULL);
    char *p = dbdir ? fs_join(dbdir, name) : NULL;
    char *tmp = p ? malloc(strlen(p) + 64) : NULL;
    if (!tmp) rc = err_set(JVDB_ENOMEM, "out of memory");
    int created = !rc && !fs_exists(dbdir);
    if (!rc) rc = fs_mkdir(dbdir);
    if (!rc && created && io_fsync_dir(f->dir) < 0) rc = err_errno(errno, "cannot sync directory %s", f->dir);
    if (!rc) rc = repo_fs_obj_dirs(dbdir, name);
    if (!rc) {
        snprintf(tmp, strlen(p) + 64, "%s.%ld-%u.tmp", p, (long)getpid(), atomic_fetch_add(&seq, 1));
        int fd = io_open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) rc = err_errno(errno, "cannot create %s", tmp);
        else {
            if (io_write_all(fd, buf, len) < 0 || io_fsync(fd) < 0) rc = err_errno(errno, "cannot write %s", tmp);
            io_close(fd);
            if (!rc && link(tmp, p) < 0)
                rc = errno == EEXIST ? err_set(JVDB_EEXISTS, "%s exists", p)
                                     : err_errno(errno, "cannot link %s to %s", tmp, p);
            io_unlink(tmp); /* a crash before this leaves a .tmp for repo_fs_cleanup_log */
            if (!rc) {
                io_crash_point("ship.claim.after_link");
                char *slash = strrchr(p, '/');
                *slash = '\0';
                if (io_fsync_dir(p) < 0) rc = err_errno(errno, "cannot sync directory %s", p);
            }
        }
    }
    free(tmp);
    free(dbdir);
    free(p);
    return rc;
}

static const struct repo_ops repo_fs_ops = {
    "filesystem",        repo_fs_init,         repo_fs_list_databases, repo_fs_list_backups,   repo_fs_read_meta,
    repo_fs_open_data,   repo_fs_stage_begin,  repo_fs_remove,         repo_fs_cleanup,        repo_fs_close,
    repo_fs_read_object, repo_fs_write_object, repo_fs_read_extra,     repo_fs_obj_list,       repo_fs_obj_put,
    repo_fs_obj_get,     repo_fs_obj_delete,   repo_fs_obj_create,     repo_fs_obj_list_after,
};

int repo_fs_open(const char *dir, jvdb_repo **out)
{
    if (!*dir) return err_set(JVDB_EINVAL, "the repository path is empty");
    /* Nothing is created here: a missing directory is reported by the first operation that reads
     * it, and created by the first backup. */
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        return err_set(JVDB_EINVAL, "repository %s is not a directory", dir);
    struct repo_fs *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = strdup(dir)) || !(f->base.spec = strdup(dir))) {
        if (f) free(f->dir);
        free(f);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    size_t n = strlen(f->dir);
    while (n > 1 && f->dir[n - 1] == '/') f->dir[--n] = '\0';
    f->base.ops = &repo_fs_ops;
    *out = &f->base;
    return JVDB_OK;
}

/*
 * fs.c — file replacement and directory helpers built on core/io.
 *
 * fs_replace_file is the only way a small metadata file (a MANIFEST, a backup.json) is ever changed:
 * the new content is complete and durable under a temporary name before one rename makes it current,
 * and the directory is fsynced so the rename itself survives a power cut.
 */
#include "core/fs.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *fs_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* The directory part of path as a new string (dirname(3) may modify its argument). */
static char *fs_dirname(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

int fs_replace_file(const char *path, const void *data, size_t len, const char *crash_label)
{
    return fs_replace_file_mode(path, data, len, 0644, crash_label);
}

/* Writes `tmp` (created anew with `mode`), fsyncs it and renames it over `path`, with the crash points. */
static int fs_replace_via(const char *path, const char *tmp, const void *data, size_t len, unsigned mode,
                          const char *crash_label)
{
    char point[160];
    int fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, (mode_t)mode);
    if (fd < 0) return err_errno(errno, "cannot create %s", tmp);
    if (io_write_all(fd, data, len) < 0 || io_fsync(fd) < 0) {
        int e = errno;
        io_close(fd);
        unlink(tmp);
        return err_errno(e, "cannot write %s", tmp);
    }
    io_close(fd);
    snprintf(point, sizeof point, "%s.before_rename", crash_label);
    io_crash_point(point);
    if (io_rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return err_errno(e, "cannot rename %s to %s", tmp, path);
    }
    snprintf(point, sizeof point, "%s.after_rename", crash_label);
    io_crash_point(point);
    return JVDB_OK;
}

/* fsyncs the directory of `path` (the rename into it made durable). */
static int fs_sync_parent(const char *path)
{
    char *dir = fs_dirname(path);
    if (!dir) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = io_fsync_dir(dir);
    int e = errno;
    free(dir);
    if (rc < 0) return err_errno(e, "cannot fsync directory of %s", path);
    return JVDB_OK;
}

int fs_replace_file_mode(const char *path, const void *data, size_t len, unsigned mode, const char *crash_label)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp); /* a .tmp left by a crash would keep its own mode through O_CREAT */
    int rc = fs_replace_via(path, tmp, data, len, mode, crash_label);
    return rc ? rc : fs_sync_parent(path);
}

int fs_replace_file_unique(const char *path, const void *data, size_t len, const char *crash_label)
{
    static _Atomic unsigned seq;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%ld-%u-%llx.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1),
             (unsigned long long)clock_mono_ns());
    int rc = fs_replace_via(path, tmp, data, len, 0644, crash_label);
    return rc ? rc : fs_sync_parent(path);
}

int fs_read_file(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_errno(errno, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return err_errno(e, "cannot stat %s", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return err_set(JVDB_ENOMEM, "out of memory reading %s", path);
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return err_errno(e, "cannot read %s", path);
        }
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return JVDB_OK;
}

int fs_mkdir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) return err_errno(errno, "cannot create directory %s", path);
    return JVDB_OK;
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fs_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) return JVDB_OK;
        if (errno == ENOTDIR) {
            if (io_unlink(path) < 0 && errno != ENOENT) return err_errno(errno, "cannot remove %s", path);
            return JVDB_OK;
        }
        return err_errno(errno, "cannot open directory %s", path);
    }
    struct dirent *e;
    int rc = JVDB_OK;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *child = fs_join(path, e->d_name);
        if (!child) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        rc = fs_remove_tree(child);
        free(child);
        if (rc) break;
    }
    closedir(d);
    if (rc) return rc;
    if (rmdir(path) < 0 && errno != ENOENT) return err_errno(errno, "cannot remove directory %s", path);
    return JVDB_OK;
}

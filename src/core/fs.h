#ifndef JVDB_CORE_FS_H
#define JVDB_CORE_FS_H
#include <stddef.h>
/* Status-code returning file-system helpers (they set the error message). */

/* Atomic replace: writes `<path>.tmp`, fsyncs it, renames it over `path`, fsyncs the directory.
 * `crash_label` names the crash points "<label>.before_rename" and "<label>.after_rename". */
int fs_replace_file(const char *path, const void *data, size_t len, const char *crash_label);
/* The same with the file's permissions set on the temporary file before the rename, so the new file
 * never exists with other permissions (fs_replace_file uses 0644). */
int fs_replace_file_mode(const char *path, const void *data, size_t len, unsigned mode, const char *crash_label);
/* fs_replace_file through a temporary name of its own ("<path>.<pid>-<n>-<ns>.tmp") instead of the shared
 * "<path>.tmp": for files that several processes may replace at once (a backup repository's lease),
 * where one writer's temp file must not be cut or renamed by another. */
int fs_replace_file_unique(const char *path, const void *data, size_t len, const char *crash_label);
/* Reads a whole file into a malloc'd NUL-terminated buffer. */
int fs_read_file(const char *path, char **data, size_t *len);
int fs_mkdir(const char *path);       /* ok if it exists */
int fs_remove_tree(const char *path); /* rm -rf */
int fs_exists(const char *path);
/* Joins a directory and a name into a malloc'd path. */
char *fs_join(const char *dir, const char *name);
#endif

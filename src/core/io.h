#ifndef JVDB_CORE_IO_H
#define JVDB_CORE_IO_H
/*
 * The I/O seam.  Every write, sync, rename, truncate and unlink the library does goes through these
 * functions so that tests can inject failures (ENOSPC, EIO, short writes) and arm named crash points.
 * They follow the system-call convention: 0 (or an fd) on success, -1 with errno set on failure.
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum io_op { IO_OP_OPEN, IO_OP_WRITE, IO_OP_SYNC, IO_OP_RENAME, IO_OP_TRUNCATE, IO_OP_UNLINK, IO_OP_COUNT };

int io_open(const char *path, int flags, mode_t mode);
/* Writes all of buf at off (retrying partial writes); on failure some prefix may have been written. */
int io_pwrite_all(int fd, const void *buf, size_t len, off_t off);
int io_write_all(int fd, const void *buf, size_t len);
struct iovec;
/* Writes all of the n buffers, in order, at off (retrying partial writes; the array is consumed:
 * its entries may be changed); on failure some prefix may have been written. */
int io_pwritev_all(int fd, struct iovec *iov, int n, off_t off);
int io_fdatasync(int fd);
int io_fsync(int fd);
int io_rename(const char *from, const char *to);
int io_ftruncate(int fd, off_t len);
int io_unlink(const char *path);
int io_close(int fd);
/* fsync of a directory, so that creations, renames and unlinks in it are durable. */
int io_fsync_dir(const char *dir);

/* Test hooks, compiled only with JVDB_TEST_HOOKS (CMake option; ON in the test builds, OFF in
 * Release) as SQLite's SQLITE_TEST: without it io_fault_arm/io_fault_clear do not exist, crash
 * points compile to nothing and neither environment variable is read. */
#ifdef JVDB_TEST_HOOKS
/* Fault injection (tests).  The call of `op` that comes after `skip` more successful calls fails
 * with `errnum`; with `short_write`, a write first writes half its bytes.  `sticky` keeps failing
 * every later call too, until io_fault_clear().  The environment variable JVDB_FAULT=op:ERRNO:skip
 * (op = open|write|sync|rename|truncate|unlink, ERRNO = ENOSPC|EIO) arms one fault at start-up. */
void io_fault_arm(enum io_op op, unsigned skip, int errnum, bool short_write, bool sticky);
void io_fault_clear(void);

/* Crash points: with JVDB_CRASH_AT=name (or name:N for the N-th time it is reached) the process kills
 * itself with SIGKILL there, which is what a power cut looks like to the files of this process. */
void io_crash_point(const char *name);
/* Calls fn(name, arg) at every crash point reached, armed or not (tests stall a commit point with
 * it, e.g. a MANIFEST write in progress); fn NULL removes it. */
void io_point_hook_set(void (*fn)(const char *name, void *arg), void *arg);
#else
static inline void io_crash_point(const char *name) { (void)name; }
#endif
#endif

/*
 * io.c — the one place where the library touches files for writing (docs/ARCHITECTURE.md 2, "core").
 *
 * Like SQLite's os layer, it exists so that tests can make the file system misbehave: a fault armed
 * here makes the next write/sync/rename fail exactly as the kernel would, and a crash point kills the
 * process at a commit point.  Both exist only in test builds (JVDB_TEST_HOOKS): a Release build
 * has no fault state, reads neither JVDB_FAULT nor JVDB_CRASH_AT, and its checks compile away.
 */
#include "core/io.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef JVDB_TEST_HOOKS
struct io_fault {
    atomic_int armed; /* 0 = none, 1 = armed */
    atomic_int op;
    atomic_int remaining; /* successful calls still allowed before failing */
    atomic_int errnum;
    atomic_int short_write;
    atomic_int sticky;
};

static struct io_fault fault;
static atomic_int env_checked;

/* The errno an injected fault returns, by name (ENOSPC, EIO, EDQUOT; EIO for any other). */
static int io_errno_from_name(const char *s)
{
    if (!strcmp(s, "ENOSPC")) return ENOSPC;
    if (!strcmp(s, "EIO")) return EIO;
    if (!strcmp(s, "EDQUOT")) return EDQUOT;
    return EIO;
}

/* Arms the fault that JVDB_FAULT=op:ERRNO[:skip] describes, once per process (test builds only). */
static void io_fault_from_env(void)
{
    if (atomic_exchange(&env_checked, 1)) return;
    const char *spec = getenv("JVDB_FAULT");
    if (!spec || !*spec) return;
    static const char *ops[] = { "open", "write", "sync", "rename", "truncate", "unlink" };
    char buf[128];
    strncpy(buf, spec, sizeof buf - 1);
    buf[sizeof buf - 1] = '\0';
    char *save = NULL;
    char *op = strtok_r(buf, ":", &save);
    char *en = strtok_r(NULL, ":", &save);
    char *skip = strtok_r(NULL, ":", &save);
    if (!op || !en) return;
    for (int i = 0; i < IO_OP_COUNT; i++) {
        if (!strcmp(op, ops[i])) {
            io_fault_arm((enum io_op)i, skip ? (unsigned)atoi(skip) : 0, io_errno_from_name(en), false, true);
        }
    }
}

void io_fault_arm(enum io_op op, unsigned skip, int errnum, bool short_write, bool sticky)
{
    atomic_store(&fault.armed, 0);
    atomic_store(&fault.op, (int)op);
    atomic_store(&fault.remaining, (int)skip);
    atomic_store(&fault.errnum, errnum);
    atomic_store(&fault.short_write, short_write);
    atomic_store(&fault.sticky, sticky);
    atomic_store(&fault.armed, 1);
}

void io_fault_clear(void) { atomic_store(&fault.armed, 0); }

/* Returns the errno to fail with, or 0 to proceed. */
static int io_fault_check(enum io_op op, int *short_write)
{
    if (!atomic_load_explicit(&env_checked, memory_order_relaxed)) io_fault_from_env();
    if (!atomic_load_explicit(&fault.armed, memory_order_relaxed)) return 0;
    if (atomic_load(&fault.op) != (int)op) return 0;
    if (atomic_fetch_sub(&fault.remaining, 1) > 0) return 0;
    if (!atomic_load(&fault.sticky)) atomic_store(&fault.armed, 0);
    if (short_write) *short_write = atomic_load(&fault.short_write);
    return atomic_load(&fault.errnum);
}
#else
/* Without test hooks nothing is ever armed. */
static inline int io_fault_check(enum io_op op, int *short_write)
{
    (void)op;
    (void)short_write;
    return 0;
}
#endif

int io_open(const char *path, int flags, mode_t mode)
{
    int e = io_fault_check(IO_OP_OPEN, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    int fd;
    do fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

int io_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    int short_write = 0;
    int e = io_fault_check(IO_OP_WRITE, &short_write);
    if (e) {
        /* A real ENOSPC usually arrives after part of the data went in: imitate that. */
        if (short_write && len > 1) {
            ssize_t n = pwrite(fd, buf, len / 2, off);
            (void)n;
        }
        errno = e;
        return -1;
    }
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int io_pwritev_all(int fd, struct iovec *iov, int n, off_t off)
{
    int short_write = 0;
    int e = io_fault_check(IO_OP_WRITE, &short_write);
    if (e) {
        /* As io_pwrite_all: part of the data goes in before the failure. */
        if (short_write && n > 1) {
            ssize_t w = pwritev(fd, iov, n / 2, off);
            (void)w;
        }
        errno = e;
        return -1;
    }
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        off += w;
        /* Skip what went in; a buffer written in part is resumed where it stopped. */
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int io_write_all(int fd, const void *buf, size_t len)
{
    int short_write = 0;
    int e = io_fault_check(IO_OP_WRITE, &short_write);
    if (e) {
        errno = e;
        return -1;
    }
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int io_fdatasync(int fd)
{
    int e = io_fault_check(IO_OP_SYNC, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    return fdatasync(fd);
}

int io_fsync(int fd)
{
    int e = io_fault_check(IO_OP_SYNC, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    return fsync(fd);
}

int io_rename(const char *from, const char *to)
{
    int e = io_fault_check(IO_OP_RENAME, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    return rename(from, to);
}

int io_ftruncate(int fd, off_t len)
{
    int e = io_fault_check(IO_OP_TRUNCATE, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    return ftruncate(fd, len);
}

int io_unlink(const char *path)
{
    int e = io_fault_check(IO_OP_UNLINK, NULL);
    if (e) {
        errno = e;
        return -1;
    }
    return unlink(path);
}

int io_close(int fd) { return close(fd); }

int io_fsync_dir(const char *dir)
{
    int fd = io_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) return -1;
    int rc = io_fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

#ifdef JVDB_TEST_HOOKS
/* Crash points are parsed once; the common case (none armed) is a single load. */
static char crash_name[128];
static atomic_int crash_nth;
static atomic_int crash_state; /* 0 unparsed, 1 none, 2 armed */

static void (*_Atomic point_hook)(const char *name, void *arg);
static void *_Atomic point_hook_arg;

void io_point_hook_set(void (*fn)(const char *name, void *arg), void *arg)
{
    atomic_store(&point_hook_arg, arg);
    atomic_store(&point_hook, fn);
}

void io_crash_point(const char *name)
{
    void (*hook)(const char *, void *) = atomic_load(&point_hook);
    if (hook) hook(name, atomic_load(&point_hook_arg));
    int st = atomic_load_explicit(&crash_state, memory_order_acquire);
    if (st == 0) {
        const char *spec = getenv("JVDB_CRASH_AT");
        if (spec && *spec) {
            strncpy(crash_name, spec, sizeof crash_name - 1);
            char *colon = strchr(crash_name, ':');
            int nth = 1;
            if (colon) {
                *colon = '\0';
                nth = atoi(colon + 1);
            }
            atomic_store(&crash_nth, nth > 0 ? nth : 1);
            st = 2;
        } else {
            st = 1;
        }
        atomic_store_explicit(&crash_state, st, memory_order_release);
    }
    if (st != 2 || strcmp(name, crash_name) != 0) return;
    if (atomic_fetch_sub(&crash_nth, 1) == 1) raise(SIGKILL);
}
#endif

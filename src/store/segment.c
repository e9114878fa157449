/*
 * segment.c — segment files: creation, header check, mapping and lifetime (docs/FORMAT.md, "Segment file").
 *
 * Writes go to the file with pwrite (by the database's writer); reads go through the read-only
 * MAP_SHARED mapping, which the kernel keeps coherent with those writes.  The mapping reserves more
 * address space than the file holds so that it never has to move while the file grows: a pointer
 * handed to a reader or to the slot table stays valid until the segment's last reference goes.
 * Random reads of a few records (a search's re-rank and results) go through pread instead
 * (seg_copy_out), so that they do not grow the process's mapped RSS.
 * A segment replaced by compaction is "retired": it disappears (munmap, close, unlink) only when
 * the last pin on it is released, so a reader that started before the swap finishes safely.
 */
#include "store/segment.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define SEG_TRUNCATE_STEP ((off_t)32 << 20)
/* seg_copy_out reads items whose bytes lie within this span with one pread: cheaper than a call each. */
#define SEG_COPY_SPAN     8192u

char *seg_path(const char *dir, uint64_t no)
{
    char name[32];
    snprintf(name, sizeof name, "%010llu.seg", (unsigned long long)no);
    return fs_join(dir, name);
}

/* A mapping length: want rounded up to whole pages, at least one page. */
static uint64_t seg_round_reserve(uint64_t want)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (want < page) want = page;
    return (want + page - 1) / page * page;
}

/* Maps the segment read-only with room to grow to reserve, so appends do not remap. */
static int seg_map(struct segment *s, uint64_t reserve)
{
    s->map_len = seg_round_reserve(reserve > s->size ? reserve : s->size);
    void *m = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED) return err_errno(errno, "cannot map %s (%llu bytes)", s->path, (unsigned long long)s->map_len);
    s->map = m;
    return JVDB_OK;
}

/* A segment struct for number no in dir, not yet opened (one reference). */
static struct segment *seg_alloc(const char *dir, uint64_t no)
{
    struct segment *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->path = seg_path(dir, no);
    if (!s->path) {
        free(s);
        return NULL;
    }
    s->no = no;
    s->fd = -1;
    atomic_init(&s->refs, 1);
    atomic_init(&s->retired, false);
    return s;
}

/* Unmaps, closes and frees a segment. */
static void seg_free(struct segment *s)
{
    if (s->map) munmap((void *)s->map, s->map_len);
    if (s->fd >= 0) close(s->fd);
    free(s->path);
    free(s);
}

int seg_create(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out)
{
    struct segment *s = seg_alloc(dir, no);
    if (!s) return err_set(JVDB_ENOMEM, "out of memory");
    s->fd = io_open(s->path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (s->fd < 0) {
        int rc = err_errno(errno, "cannot create segment %s", s->path);
        seg_free(s);
        return rc;
    }
    struct seg_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SEG_MAGIC, 8);
    h.version = SEG_FORMAT_VERSION;
    h.dim = dim;
    h.seg_no = no;
    h.created_ns = clock_wall_ns();
    h.checksum = XXH3_64bits(&h, offsetof(struct seg_header, checksum));
    if (io_pwrite_all(s->fd, &h, sizeof h, 0) < 0 || io_fdatasync(s->fd) < 0 || io_fsync_dir(dir) < 0) {
        int rc = err_errno(errno, "cannot write segment %s", s->path);
        unlink(s->path);
        seg_free(s);
        return rc;
    }
    s->size = SEG_HEADER_SIZE;
    int rc = seg_map(s, reserve);
    if (rc) {
        unlink(s->path);
        seg_free(s);
        return rc;
    }
    *out = s;
    return JVDB_OK;
}

/* Opens an existing segment and checks its header (magic, checksum, version, dimension, number) before mapping it. */
static int seg_open_flags(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, int flags, struct segment **out)
{
    struct segment *s = seg_alloc(dir, no);
    if (!s) return err_set(JVDB_ENOMEM, "out of memory");
    s->fd = io_open(s->path, flags, 0);
    if (s->fd < 0) {
        int rc = errno == ENOENT ? err_set(JVDB_ECORRUPT, "segment %s named in the MANIFEST is missing", s->path)
                                 : err_errno(errno, "cannot open segment %s", s->path);
        seg_free(s);
        return rc;
    }
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        int rc = err_errno(errno, "cannot stat %s", s->path);
        seg_free(s);
        return rc;
    }
    struct seg_header h;
    ssize_t n = pread(s->fd, &h, sizeof h, 0);
    const char *why = NULL;
    if (n != (ssize_t)sizeof h) why = "file shorter than its 64-byte header";
    else if (memcmp(h.magic, SEG_MAGIC, 8) != 0) why = "bad magic";
    else if (h.checksum != XXH3_64bits(&h, offsetof(struct seg_header, checksum))) why = "header checksum mismatch";
    else if (h.version != SEG_FORMAT_VERSION) why = "unsupported format version";
    else if (h.dim != dim) why = "dimension differs from the MANIFEST";
    else if (h.seg_no != no) why = "segment number differs from its file name";
    if (why) {
        int rc = err_set(JVDB_ECORRUPT, "corrupt segment %s at offset 0: %s", s->path, why);
        seg_free(s);
        return rc;
    }
    s->size = (uint64_t)st.st_size;
    int rc = seg_map(s, reserve);
    if (rc) {
        seg_free(s);
        return rc;
    }
    *out = s;
    return JVDB_OK;
}

int seg_open(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out)
{
    return seg_open_flags(dir, no, dim, reserve, O_RDWR, out);
}

int seg_open_readonly(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out)
{
    return seg_open_flags(dir, no, dim, reserve, O_RDONLY, out);
}

/* qsort order of seg_copy items: by source address. */
static int seg_copy_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct seg_copy *)a)->src, y = (uintptr_t)((const struct seg_copy *)b)->src;
    return x < y ? -1 : x > y;
}

/* Reads len bytes at off of fd in full (pread may return less when interrupted); 0 or -1 with errno. */
static int seg_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO; /* the record is inside the file: a short file is damage */
            return -1;
        }
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

int seg_copy_out(struct segment *const *segs, size_t nsegs, struct seg_copy *items, size_t n)
{
    if (n > 1) qsort(items, n, sizeof *items, seg_copy_cmp);
    uint8_t span[SEG_COPY_SPAN];
    const struct segment *s = NULL;
    for (size_t i = 0; i < n;) {
        const uint8_t *src = items[i].src;
        if (!s || src < s->map || src >= s->map + s->map_len) {
            s = NULL;
            for (size_t j = 0; j < nsegs && !s; j++)
                if (segs[j]->map && src >= segs[j]->map && src < segs[j]->map + segs[j]->map_len) s = segs[j];
        }
        if (!s) { /* retired meanwhile: still mapped for the caller's read section */
            memcpy(items[i].dst, src, items[i].len);
            i++;
            continue;
        }
        /* Items i..j-1 end within SEG_COPY_SPAN bytes of src, all in s: one read. */
        size_t j = i + 1;
        const uint8_t *end = src + items[i].len;
        while (items[i].len <= SEG_COPY_SPAN && j < n && items[j].src >= src &&
               items[j].src + items[j].len <= src + SEG_COPY_SPAN &&
               items[j].src + items[j].len <= s->map + s->map_len) {
            if (items[j].src + items[j].len > end) end = items[j].src + items[j].len;
            j++;
        }
        uint64_t off = (uint64_t)(src - s->map);
        if (j == i + 1) {
            if (seg_pread_all(s->fd, items[i].dst, items[i].len, off)) return -1;
        } else {
            if (seg_pread_all(s->fd, span, (size_t)(end - src), off)) return -1;
            for (size_t t = i; t < j; t++) memcpy(items[t].dst, span + (items[t].src - src), items[t].len);
        }
        i = j;
    }
    return 0;
}

void seg_ref(struct segment *s) { atomic_fetch_add(&s->refs, 1); }

void seg_unref(struct segment *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    if (atomic_load(&s->retired)) {
        /* Freeing a large file's blocks in one journal commit holds up every fdatasync on the
         * filesystem, the writers' too: give them back in steps first (the file is an orphan
         * already, so a crash meanwhile only leaves a shorter orphan, removed at open). */
        if (s->map) munmap((void *)s->map, s->map_len);
        s->map = NULL;
        if (s->fd >= 0) {
            struct stat st;
            if (fstat(s->fd, &st) == 0)
                for (off_t len = st.st_size - SEG_TRUNCATE_STEP; len > 0; len -= SEG_TRUNCATE_STEP)
                    if (ftruncate(s->fd, len) < 0) break;
        }
        if (io_unlink(s->path) < 0 && errno != ENOENT)
            log_warn("cannot remove retired segment %s: %s (it is deleted at next open)", s->path, strerror(errno));
    }
    seg_free(s);
}

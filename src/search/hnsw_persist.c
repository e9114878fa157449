/*
 * hnsw_persist.c — the HNSW graph file (writer, verifying reader, loader) and the vacuum that removes
 * deleted nodes.  Format: docs/FORMAT.md, "HNSW graph file".
 *
 * Scheme: a checkpoint plus a delta, with catch-up at open.  A checkpoint is a complete graph written
 * with the atomic-replace rule (<path>.tmp, fsync, rename, directory fsync), so the file on disk is
 * always either the previous complete graph or the new one, never a mix; a torn .tmp is never read.
 * Between checkpoints, saves append one checksummed batch of the changed nodes to <path>.log (the
 * delta), which names its checkpoint by the checkpoint's header checksum; a torn batch ends the replay
 * and is written over by the next append.  Before either is published the records the nodes name are
 * made durable (the caller's durable hook), so no published (id, LSN) can be lost and reissued.
 * Nodes carry the id and LSN of the record they were linked for; the loader keeps a node only when
 * the keydir's newest record for that id has that very LSN, and indexes everything else that is live
 * again (the catch-up).  So whatever happened after the save (writes, deletes, compactions that
 * moved records, a crash anywhere), the loaded graph can miss vectors but never names a record it
 * was not built from.
 *
 * Invariant of the reader: every index it hands out (node, link target, level, count, id bytes) has
 * been bounds-checked against the file; a file that fails any check is refused whole (JVDB_ECORRUPT).
 */
#include "search/hnsw_persist.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/bytes.h"
#include "core/err.h"
#include "core/io.h"
#include "core/log.h"
#include "search/hnsw_internal.h"

#define HF_MAGIC        "JVDBHNSW"
#define HF_END_MAGIC    "JVDBHEND"
#define HF_HEADER_SIZE  80u
#define HF_BLOCK_TAG    0x4b4c424eu /* "NBLK" */
#define HF_BLOCK_HEAD   16u
#define HF_TRAILER_SIZE 24u
#define HF_BLOCK_NODES  4096u
#define HF_NODE_FIXED   12u /* lsn 8, id_len 2, level 1, flags 1 */
#define HF_FLAG_DEAD    1u

/* ---------------------------------------------------------------- writer */

struct hf_buf {
    uint8_t *b;
    size_t len, cap;
};

/* Makes room for `more` bytes in the block buffer, doubling it (first 64 KiB). */
static int hf_reserve(struct hf_buf *b, size_t more)
{
    if (b->len + more <= b->cap) return JVDB_OK;
    size_t ncap = b->cap ? b->cap : 65536;
    while (ncap < b->len + more) ncap *= 2;
    uint8_t *n = realloc(b->b, ncap);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory writing the HNSW graph file");
    b->b = n;
    b->cap = ncap;
    return JVDB_OK;
}

/* Writes all n bytes to the temporary file `tmp`, or an error naming it. */
static int hf_write(int fd, const void *p, size_t n, const char *tmp)
{
    if (io_write_all(fd, p, n) < 0) return err_errno(errno, "cannot write %s", tmp);
    return JVDB_OK;
}

/* Fsyncs the directory holding `path`: the last step of the atomic replace, making the rename durable. */
static int hf_dir_sync(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = io_fsync_dir(dirname(copy));
    int e = errno;
    free(copy);
    return rc < 0 ? err_errno(e, "cannot fsync the directory of %s", path) : JVDB_OK;
}

/* Bytes of one node's row in a file of this graph. */
static uint32_t hf_row_bytes(uint32_t dim, int sq8) { return sq8 ? sq8_row_bytes(dim) : 4u * dim; }

/* Bytes of slot s's link lists in a file: per level a count and the targets. */
static size_t hf_lists_bytes(const struct hnsw *h, uint32_t s)
{
    size_t links = 0;
    for (int l = 0; l <= h->level[s]; l++) links += 4u + 4u * hnsw_links(h, s, l)[0];
    return links;
}

/* Writes slot s's link lists at p (targets numbered through map); returns the end. */
static uint8_t *hf_put_lists(uint8_t *p, const struct hnsw *h, uint32_t s, const uint32_t *map)
{
    for (int l = 0; l <= h->level[s]; l++) {
        const uint32_t *li = hnsw_links(h, s, l);
        bytes_put32(p, li[0]);
        p += 4;
        for (uint32_t i = 1; i <= li[0]; i++, p += 4) bytes_put32(p, map[li[i]]);
    }
    return p;
}

/* Appends slot s's node (fixed part, id, row, lists with targets through map) to b; the identity comes
 * from ident, and a node without a row, deleted, or that ident refuses is written dead. */
static int hf_put_node(struct hf_buf *b, const struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t s,
                       const uint32_t *map, hnsw_ident_fn ident, void *ctx)
{
    uint32_t row_bytes = hf_row_bytes(h->dim, h->p.sq8);
    const char *id = NULL;
    uint16_t id_len = 0;
    uint64_t nlsn = 0;
    const float *row = hnsw_vec(slots, nslots, s);
    int live = row && !h->deleted[s] && ident(ctx, s, &id, &id_len, &nlsn);
    if (!live) {
        id_len = 0;
        nlsn = 0;
    }
    size_t links = hf_lists_bytes(h, s);
    int rc = hf_reserve(b, HF_NODE_FIXED + id_len + row_bytes + links);
    if (rc) return rc;
    uint8_t *p = b->b + b->len;
    bytes_put64(p, nlsn);
    memcpy(p + 8, &id_len, 2);
    p[10] = h->level[s];
    p[11] = live ? 0 : HF_FLAG_DEAD;
    p += HF_NODE_FIXED;
    if (id_len) memcpy(p, id, id_len);
    p += id_len;
    if (row) memcpy(p, row, row_bytes);
    else memset(p, 0, row_bytes);
    p += row_bytes;
    b->len = (size_t)(hf_put_lists(p, h, s, map) - b->b);
    return JVDB_OK;
}

void hnsw_numbering_free(struct hnsw_numbering *num)
{
    free(num->no);
    memset(num, 0, sizeof *num);
}

int hnsw_numbering_reserve(struct hnsw_numbering *num, uint32_t need)
{
    if (need <= num->cap) return JVDB_OK;
    uint32_t *n = realloc(num->no, (size_t)need * sizeof *n);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory numbering the HNSW graph");
    for (uint32_t s = num->cap; s < need; s++) n[s] = HNSW_FILE_NONE;
    num->no = n;
    num->cap = need;
    return JVDB_OK;
}

/* "<path>.log": the delta file beside the checkpoint `path`. */
static void hf_delta_path(char *out, size_t n, const char *path) { snprintf(out, n, "%s.log", path); }

int hnsw_save(const struct hnsw *h, const float *const *slots, uint32_t nslots, const void *extra, uint32_t extra_len,
              const char *path, uint64_t lsn, hnsw_ident_fn ident, hnsw_lock_fn lockfn, hnsw_durable_fn durable,
              void *ctx, struct hnsw_numbering *num, uint64_t *written)
{
    if (extra_len > HNSW_FILE_MAX_EXTRA) return err_set(JVDB_EINVAL, "HNSW graph file: extra section too large");
    uint32_t *idx = NULL;
    if (h->cap && !(idx = malloc((size_t)h->cap * sizeof *idx)))
        return err_set(JVDB_ENOMEM, "out of memory writing the HNSW graph file");
    uint32_t n = 0;
    for (uint32_t s = 0; s < h->cap; s++) idx[s] = h->level[s] == HNSW_ABSENT ? HNSW_FILE_NONE : n++;

    uint8_t head[HF_HEADER_SIZE] = { 0 };
    memcpy(head, HF_MAGIC, 8);
    bytes_put32(head + 8, HNSW_FILE_VERSION);
    bytes_put32(head + 12, HF_HEADER_SIZE);
    bytes_put32(head + 16, h->dim);
    bytes_put32(head + 20, (uint32_t)h->metric);
    bytes_put32(head + 24, h->p.M);
    bytes_put32(head + 28, h->p.ef_construction);
    bytes_put32(head + 32, h->p.ef_search);
    bytes_put32(head + 36, n);
    bytes_put32(head + 40, h->entry == HNSW_NONE ? HNSW_FILE_NONE : idx[h->entry]);
    bytes_put32(head + 44, (uint32_t)h->max_level);
    bytes_put64(head + 48, lsn);
    bytes_put64(head + 56, h->rng);
    bytes_put32(head + 64, h->p.sq8 ? 1u : 0u);
    bytes_put32(head + 68, extra_len);
    bytes_put64(head + 72, XXH3_64bits(head, 72));

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(idx);
        return err_errno(errno, "cannot create %s", tmp);
    }
    struct hf_buf b = { 0 };
    uint64_t total = HF_HEADER_SIZE;
    uint32_t nblocks = 0;
    int rc = hf_write(fd, head, sizeof head, tmp);
    uint8_t xsum[8];
    bytes_put64(xsum, XXH3_64bits(extra, extra_len));
    if (rc == JVDB_OK && extra_len) rc = hf_write(fd, extra, extra_len, tmp);
    if (rc == JVDB_OK) rc = hf_write(fd, xsum, sizeof xsum, tmp);
    total += (uint64_t)extra_len + sizeof xsum;
    uint32_t s = 0, first = 0;
    while (rc == JVDB_OK && first < n) {
        b.len = 0;
        if ((rc = hf_reserve(&b, HF_BLOCK_HEAD))) break;
        b.len = HF_BLOCK_HEAD;
        uint32_t count = 0;
        if (lockfn) lockfn(ctx, 1);
        for (; s < h->cap && count < HF_BLOCK_NODES; s++) {
            if (h->level[s] == HNSW_ABSENT) continue;
            if ((rc = hf_put_node(&b, h, slots, nslots, s, idx, ident, ctx))) break;
            count++;
        }
        if (lockfn) lockfn(ctx, 0);
        if (rc) break;
        bytes_put32(b.b, HF_BLOCK_TAG);
        bytes_put32(b.b + 4, first);
        bytes_put32(b.b + 8, count);
        bytes_put32(b.b + 12, (uint32_t)(b.len - HF_BLOCK_HEAD));
        if ((rc = hf_reserve(&b, 8))) break;
        bytes_put64(b.b + b.len, XXH3_64bits(b.b, b.len));
        b.len += 8;
        rc = hf_write(fd, b.b, b.len, tmp);
        total += b.len;
        first += count;
        nblocks++;
    }
    free(b.b);
    if (rc == JVDB_OK) {
        uint8_t tr[HF_TRAILER_SIZE];
        memcpy(tr, HF_END_MAGIC, 8);
        bytes_put32(tr + 8, n);
        bytes_put32(tr + 12, nblocks);
        bytes_put64(tr + 16, XXH3_64bits(tr, 16));
        rc = hf_write(fd, tr, sizeof tr, tmp);
        total += sizeof tr;
    }
    if (rc == JVDB_OK && io_fsync(fd) < 0) rc = err_errno(errno, "cannot fsync %s", tmp);
    io_close(fd);
    /* The file names records by (id, LSN): they must not be lost to a power cut (and their LSNs
     * reissued) once it is in place. */
    if (rc == JVDB_OK && durable) rc = durable(ctx);
    if (rc == JVDB_OK) {
        io_crash_point("hnsw.save.before_rename");
        if (io_rename(tmp, path) < 0) rc = err_errno(errno, "cannot rename %s to %s", tmp, path);
    }
    if (rc) {
        free(idx);
        unlink(tmp);
        return rc;
    }
    io_crash_point("hnsw.save.after_rename");
    if ((rc = hf_dir_sync(path))) {
        free(idx);
        return rc;
    }
    /* The old delta extends the old checkpoint (its tag says so, and the loader ignores it): removing
     * it only saves reading it. */
    io_crash_point("hnsw.save.before_delta_unlink");
    char dpath[4096];
    hf_delta_path(dpath, sizeof dpath, path);
    if (io_unlink(dpath) < 0 && errno != ENOENT) log_warn("cannot remove %s: %s", dpath, strerror(errno));
    if (num) {
        free(num->no);
        num->no = idx;
        num->cap = h->cap;
        num->count = n;
        num->tag = bytes_get64(head + 72);
        num->ckpt_bytes = total;
        num->delta_len = 0;
        num->batches = 0;
        num->valid = 1;
        idx = NULL;
    }
    free(idx);
    if (written) *written = total;
    return JVDB_OK;
}

/* ---------------------------------------------------------------- delta writer */

#define HD_MAGIC       "JVDBHNSD"
#define HD_HEADER_SIZE 48u
#define HD_BATCH_TAG   0x54414244u /* "DBAT" */
#define HD_BATCH_HEAD  48u
#define HD_REC_NODE    1u
#define HD_REC_LINKS   2u

/* Appends a links record for slot s: its number, level, deletion flag and lists (targets numbered). */
static int hd_put_links(struct hf_buf *b, const struct hnsw *h, uint32_t s, const uint32_t *map)
{
    size_t links = hf_lists_bytes(h, s);
    int rc = hf_reserve(b, 7 + links);
    if (rc) return rc;
    uint8_t *p = b->b + b->len;
    p[0] = HD_REC_LINKS;
    bytes_put32(p + 1, map[s]);
    p[5] = h->level[s];
    p[6] = h->deleted[s] ? HF_FLAG_DEAD : 0;
    p += 7;
    b->len = (size_t)(hf_put_lists(p, h, s, map) - b->b);
    return JVDB_OK;
}

/* Builds the batch in b: new nodes numbered from num->count (*after receives the new count), then a
 * record per changed node.  Identities are read under lockfn, HF_BLOCK_NODES nodes at a time. */
static int hd_build(struct hnsw *h, const float *const *slots, uint32_t nslots, uint64_t lsn, hnsw_ident_fn ident,
                    hnsw_lock_fn lockfn, void *ctx, struct hnsw_numbering *num, struct hf_buf *b, uint32_t *after)
{
    uint32_t count = num->count, nrec = 0;
    for (uint32_t s = 0; s < h->cap; s++)
        if (h->level[s] != HNSW_ABSENT && num->no[s] == HNSW_FILE_NONE) {
            if (count == HNSW_FILE_NONE - 1) return err_set(JVDB_EINVAL, "HNSW graph delta: too many nodes");
            num->no[s] = count++;
        }
    *after = count;
    int rc = hf_reserve(b, HD_BATCH_HEAD);
    if (rc) return rc;
    b->len = HD_BATCH_HEAD;
    uint32_t inblock = 0;
    if (lockfn) lockfn(ctx, 1);
    for (uint32_t s = 0; s < h->cap && rc == JVDB_OK; s++) {
        if (h->level[s] == HNSW_ABSENT) continue;
        int fresh = num->no[s] >= num->count;
        if (!fresh && !h->dirty[s]) continue;
        if (fresh || (h->dirty[s] & HNSW_DIRTY_NODE)) {
            if ((rc = hf_reserve(b, 5))) break;
            b->b[b->len] = HD_REC_NODE;
            bytes_put32(b->b + b->len + 1, num->no[s]);
            b->len += 5;
            rc = hf_put_node(b, h, slots, nslots, s, num->no, ident, ctx);
        } else {
            rc = hd_put_links(b, h, s, num->no);
        }
        nrec++;
        if (lockfn && ++inblock == HF_BLOCK_NODES) {
            lockfn(ctx, 0); /* writers get in between blocks of records */
            lockfn(ctx, 1);
            inblock = 0;
        }
    }
    if (lockfn) lockfn(ctx, 0);
    if (rc) return rc;
    uint8_t *hd = b->b;
    bytes_put32(hd, HD_BATCH_TAG);
    bytes_put32(hd + 4, num->batches);
    bytes_put32(hd + 8, num->count);
    bytes_put32(hd + 12, count);
    bytes_put32(hd + 16, nrec);
    bytes_put32(hd + 20, (uint32_t)(b->len - HD_BATCH_HEAD));
    bytes_put64(hd + 24, lsn);
    bytes_put64(hd + 32, h->rng);
    bytes_put32(hd + 40, h->entry == HNSW_NONE ? HNSW_FILE_NONE : num->no[h->entry]);
    bytes_put32(hd + 44, (uint32_t)h->max_level);
    if ((rc = hf_reserve(b, 8))) return rc;
    bytes_put64(b->b + b->len, XXH3_64bits(b->b, b->len));
    b->len += 8;
    return JVDB_OK;
}

int hnsw_delta_append(struct hnsw *h, const float *const *slots, uint32_t nslots, const char *dpath, uint64_t lsn,
                      hnsw_ident_fn ident, hnsw_lock_fn lockfn, hnsw_durable_fn durable, void *ctx,
                      struct hnsw_numbering *num, uint64_t *written)
{
    if (!num->valid) return err_set(JVDB_EINVAL, "HNSW graph delta: no checkpoint to extend");
    int rc = hnsw_numbering_reserve(num, h->cap);
    if (rc) return rc;
    struct hf_buf b = { 0 };
    uint32_t after = num->count;
    int create = num->delta_len == 0;
    uint8_t head[HD_HEADER_SIZE] = { 0 };
    if (create) {
        memcpy(head, HD_MAGIC, 8);
        bytes_put32(head + 8, HNSW_DELTA_VERSION);
        bytes_put32(head + 12, HD_HEADER_SIZE);
        bytes_put64(head + 16, num->tag);
        bytes_put32(head + 24, h->dim);
        bytes_put32(head + 28, hf_row_bytes(h->dim, h->p.sq8));
        bytes_put32(head + 32, num->count);
        bytes_put64(head + 40, XXH3_64bits(head, 40));
    }
    uint64_t at = create ? HD_HEADER_SIZE : num->delta_len;
    int fd = -1;
    rc = hd_build(h, slots, nslots, lsn, ident, lockfn, ctx, num, &b, &after);
    /* Before a byte of the batch is written: the kernel may write the delta's pages back at any time,
     * and they must never reach the disk ahead of the records they name. */
    if (rc == JVDB_OK && durable) rc = durable(ctx);
    if (rc == JVDB_OK) {
        fd = io_open(dpath, O_WRONLY | O_CREAT | (create ? O_TRUNC : 0) | O_CLOEXEC, 0644);
        if (fd < 0) rc = err_errno(errno, "cannot open %s", dpath);
    }
    if (rc == JVDB_OK && create && io_pwrite_all(fd, head, sizeof head, 0) < 0)
        rc = err_errno(errno, "cannot write %s", dpath);
    if (rc == JVDB_OK && io_pwrite_all(fd, b.b, b.len, (off_t)at) < 0) rc = err_errno(errno, "cannot write %s", dpath);
    /* A torn batch left by a crash may lie beyond: never let its bytes follow this one. */
    if (rc == JVDB_OK && io_ftruncate(fd, (off_t)(at + b.len)) < 0) rc = err_errno(errno, "cannot truncate %s", dpath);
    if (rc == JVDB_OK) {
        io_crash_point("hnsw.delta.before_sync");
        if (io_fdatasync(fd) < 0) rc = err_errno(errno, "cannot fsync %s", dpath);
    }
    if (fd >= 0) io_close(fd);
    if (rc == JVDB_OK && create) rc = hf_dir_sync(dpath);
    if (rc) {
        /* Numbers handed out for this batch go back; the bytes written, if any, are a tail the reader
         * refuses and the next append overwrites (it starts at the old end). */
        for (uint32_t s = 0; s < h->cap; s++)
            if (num->no[s] != HNSW_FILE_NONE && num->no[s] >= num->count) num->no[s] = HNSW_FILE_NONE;
        free(b.b);
        return rc;
    }
    io_crash_point("hnsw.delta.after_sync");
    num->count = after;
    num->delta_len = at + b.len;
    num->batches++;
    memset(h->dirty, 0, h->cap);
    if (written) *written = b.len + (create ? HD_HEADER_SIZE : 0);
    free(b.b);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- reader */

/* Fails the parse as ECORRUPT with what is wrong and the byte offset where it was found. */
static int hf_bad(const char *why, uint64_t at)
{
    return err_set(JVDB_ECORRUPT, "HNSW graph file: %s (at byte %llu)", why, (unsigned long long)at);
}

void hnsw_file_free(struct hnsw_file *f)
{
    free(f->nodes);
    f->nodes = NULL;
    free(f->xlinks);
    f->xlinks = NULL;
    f->nxlinks = f->xlinks_cap = 0;
}

static int hf_parse_nodes(const uint8_t *b, size_t len, struct hnsw_file *out, uint32_t M0, uint32_t done,
                          uint32_t nblocks, size_t off, size_t end);

#define HF_DROP_BATCH (4u << 20) /* bytes gathered before one madvise */

void hnsw_file_drop(const struct hnsw_file *f, size_t *mark, const void *upto)
{
    /* Only the checkpoint's own mapping: nodes a delta replaced point into the delta's bytes. */
    if (!f->mapped || (const uint8_t *)upto < f->base || (const uint8_t *)upto > f->base + f->len) return;
    long page = sysconf(_SC_PAGESIZE); /* no cached static: index threads of several databases load at once */
    if (page <= 0) page = 4096;
    size_t to = (size_t)((const uint8_t *)upto - f->base) & ~((size_t)page - 1);
    if (to <= *mark || to - *mark < HF_DROP_BATCH) return;
    /* Advice only: a failure leaves the pages resident, nothing else. */
    (void)madvise((void *)(uintptr_t)(f->base + *mark), to - *mark, MADV_DONTNEED);
    *mark = to;
}

/* Parses the whole file; mapped says whether verified pages may be dropped as it goes. */
static int hf_parse(const void *buf, size_t len, struct hnsw_file *out, int mapped)
{
    int rc = hnsw_file_parse_header(buf, len, out);
    if (rc) return rc;
    out->base = buf;
    out->len = len;
    out->mapped = mapped;
    const uint8_t *b = buf;
    if (out->nnodes && !(out->nodes = calloc(out->nnodes, sizeof *out->nodes)))
        return err_set(JVDB_ENOMEM, "out of memory reading the HNSW graph file");
    uint32_t M0 = 2 * out->p.M, done = 0, nblocks = 0;
    size_t end = len - HF_TRAILER_SIZE;
    if (out->extra_len > end - HF_HEADER_SIZE || end - HF_HEADER_SIZE - out->extra_len < 8) {
        hnsw_file_free(out);
        return hf_bad("extra section longer than the file", 68);
    }
    out->extra = b + HF_HEADER_SIZE;
    if (bytes_get64(out->extra + out->extra_len) != XXH3_64bits(out->extra, out->extra_len)) {
        hnsw_file_free(out);
        return hf_bad("extra section checksum mismatch", HF_HEADER_SIZE);
    }
    size_t off = HF_HEADER_SIZE + (size_t)out->extra_len + 8;
    return hf_parse_nodes(b, len, out, M0, done, nblocks, off, end);
}

int hnsw_file_parse(const void *buf, size_t len, struct hnsw_file *out) { return hf_parse(buf, len, out, 0); }

int hnsw_file_parse_mapped(const void *map, size_t len, struct hnsw_file *out) { return hf_parse(map, len, out, 1); }

int hnsw_file_parse_header(const void *buf, size_t len, struct hnsw_file *out)
{
    memset(out, 0, sizeof *out);
    const uint8_t *b = buf;
    if (len < HF_HEADER_SIZE + HF_TRAILER_SIZE) return hf_bad("file too short", len);
    if (memcmp(b, HF_MAGIC, 8)) return hf_bad("not an HNSW graph file (bad magic)", 0);
    if (bytes_get32(b + 8) != HNSW_FILE_VERSION) {
        return err_set(JVDB_ECORRUPT, "HNSW graph file: format version %u, this build reads %u", bytes_get32(b + 8),
                       HNSW_FILE_VERSION);
    }
    if (bytes_get32(b + 12) != HF_HEADER_SIZE) return hf_bad("unexpected header size", 12);
    if (bytes_get64(b + 72) != XXH3_64bits(b, 72)) return hf_bad("header checksum mismatch", 72);
    out->tag = bytes_get64(b + 72);
    out->dim = bytes_get32(b + 16);
    uint32_t metric = bytes_get32(b + 20);
    out->p.M = bytes_get32(b + 24);
    out->p.ef_construction = bytes_get32(b + 28);
    out->p.ef_search = bytes_get32(b + 32);
    out->nnodes = bytes_get32(b + 36);
    out->entry = bytes_get32(b + 40);
    out->max_level = (int)bytes_get32(b + 44);
    out->lsn = bytes_get64(b + 48);
    out->p.seed = bytes_get64(b + 56);
    uint32_t rows = bytes_get32(b + 64);
    out->extra_len = bytes_get32(b + 68);
    if (rows > 1) return hf_bad("unknown row kind", 64);
    if (out->extra_len > HNSW_FILE_MAX_EXTRA) return hf_bad("extra section too large", 68);
    out->p.sq8 = (int)rows;
    if (out->dim < 1 || out->dim > 65536) return hf_bad("dimension out of range", 16);
    out->row_bytes = hf_row_bytes(out->dim, out->p.sq8);
    if (metric > JVDB_METRIC_DOT) return hf_bad("unknown metric", 20);
    out->metric = (jvdb_metric)metric;
    if (out->p.M < 2 || out->p.M > HNSW_MAX_M) return hf_bad("M out of range", 24);
    if (out->p.ef_construction < 1 || out->p.ef_construction > HNSW_MAX_EF_CONSTRUCTION)
        return hf_bad("ef_construction out of range", 28);
    if (out->p.ef_search < 1 || out->p.ef_search > HNSW_MAX_EF) return hf_bad("ef_search out of range", 32);
    /* Every node takes at least HF_NODE_FIXED + 4 bytes: a count that cannot fit is refused before
     * anything is allocated for it. */
    if ((uint64_t)out->nnodes * (HF_NODE_FIXED + 4 + out->row_bytes) > len)
        return hf_bad("node count larger than the file", 36);
    if (out->nnodes == 0 ? (out->entry != HNSW_FILE_NONE || out->max_level != -1)
                         : (out->entry >= out->nnodes || out->max_level < 0 || out->max_level >= HNSW_MAX_LEVEL))
        return hf_bad("bad entry point", 40);
    return JVDB_OK;
}

/* Checks level + 1 link lists at *pp (before pe): counts within M (M0 at level 0), targets below
 * `limit` and not `self`; moves *pp past them. */
static int hf_check_links(const uint8_t *b, const uint8_t **pp, const uint8_t *pe, const struct hnsw_file *out,
                          uint32_t M0, int level, uint32_t self, uint32_t limit)
{
    const uint8_t *p = *pp;
    for (int l = 0; l <= level; l++) {
        if (pe - p < 4) return hf_bad("truncated link list", (size_t)(p - b));
        uint32_t c = bytes_get32(p);
        if (c > (l ? out->p.M : M0)) return hf_bad("link list longer than M allows", (size_t)(p - b));
        p += 4;
        if ((size_t)(pe - p) < 4u * c) return hf_bad("truncated link list", (size_t)(p - b));
        for (uint32_t i = 0; i < c; i++, p += 4) {
            uint32_t t = bytes_get32(p);
            if (t >= limit || t == self) return hf_bad("link to a node that does not exist", (size_t)(p - b));
        }
    }
    *pp = p;
    return JVDB_OK;
}

/* Reads one node (fixed part, id, row, lists) at *pp into nd, bounds-checking all of it against pe
 * and its links against `limit` nodes; moves *pp past it.  `b` is the start of the bytes (for the
 * offsets in errors). */
static int hf_parse_node(const uint8_t *b, const uint8_t **pp, const uint8_t *pe, const struct hnsw_file *out,
                         uint32_t M0, uint32_t self, uint32_t limit, struct hnsw_file_node *nd)
{
    const uint8_t *p = *pp;
    if (pe - p < (ptrdiff_t)HF_NODE_FIXED) return hf_bad("truncated node", (size_t)(p - b));
    nd->lsn = bytes_get64(p);
    memcpy(&nd->id_len, p + 8, 2);
    nd->level = p[10];
    nd->xl = HNSW_FILE_NONE;
    uint8_t flags = p[11];
    if (flags & ~HF_FLAG_DEAD) return hf_bad("unknown node flags", (size_t)(p - b));
    nd->dead = flags & HF_FLAG_DEAD;
    if (nd->level >= HNSW_MAX_LEVEL) return hf_bad("node level out of range", (size_t)(p - b));
    if (!nd->dead && nd->id_len == 0) return hf_bad("live node without an id", (size_t)(p - b));
    p += HF_NODE_FIXED;
    if (pe - p < nd->id_len) return hf_bad("truncated id", (size_t)(p - b));
    nd->id = (const char *)p;
    p += nd->id_len;
    if ((size_t)(pe - p) < out->row_bytes) return hf_bad("truncated row", (size_t)(p - b));
    p += out->row_bytes;
    int rc = hf_check_links(b, &p, pe, out, M0, nd->level, self, limit);
    if (rc) return rc;
    *pp = p;
    return JVDB_OK;
}

/* Reads the node blocks in [off, end) and the trailer, checking each block's tag, node range and checksum
 * and bounds-checking every node's id, row, levels and links; on any failure frees out's nodes. */
static int hf_parse_nodes(const uint8_t *b, size_t len, struct hnsw_file *out, uint32_t M0, uint32_t done,
                          uint32_t nblocks, size_t off, size_t end)
{
    (void)len;
    int rc = JVDB_OK;
    size_t mark = 0;
    while (done < out->nnodes) {
        if (end - off < HF_BLOCK_HEAD + 8) {
            rc = hf_bad("truncated block", off);
            break;
        }
        const uint8_t *bh = b + off;
        uint32_t first = bytes_get32(bh + 4), count = bytes_get32(bh + 8), plen = bytes_get32(bh + 12);
        if (bytes_get32(bh) != HF_BLOCK_TAG) {
            rc = hf_bad("bad block tag", off);
            break;
        }
        if (first != done || count == 0 || count > out->nnodes - done) {
            rc = hf_bad("bad block node range", off);
            break;
        }
        if (plen > end - off - HF_BLOCK_HEAD - 8) {
            rc = hf_bad("block longer than the file", off);
            break;
        }
        if (bytes_get64(bh + HF_BLOCK_HEAD + plen) != XXH3_64bits(bh, HF_BLOCK_HEAD + plen)) {
            rc = hf_bad("block checksum mismatch", off);
            break;
        }
        const uint8_t *p = bh + HF_BLOCK_HEAD, *pe = p + plen;
        for (uint32_t k = 0; k < count && rc == JVDB_OK; k++)
            rc = hf_parse_node(b, &p, pe, out, M0, done + k, out->nnodes, &out->nodes[done + k]);
        if (rc) break;
        if (p != pe) {
            rc = hf_bad("block has bytes after its last node", (size_t)(p - b));
            break;
        }
        done += count;
        nblocks++;
        off += HF_BLOCK_HEAD + plen + 8;
        hnsw_file_drop(out, &mark, b + off);
    }
    if (rc == JVDB_OK && off != end) rc = hf_bad("unexpected bytes before the trailer", off);
    if (rc == JVDB_OK) {
        const uint8_t *t = b + end;
        if (memcmp(t, HF_END_MAGIC, 8) || bytes_get32(t + 8) != out->nnodes || bytes_get32(t + 12) != nblocks ||
            bytes_get64(t + 16) != XXH3_64bits(t, 16))
            rc = hf_bad("bad trailer (file incomplete?)", end);
    }
    if (rc == JVDB_OK && out->nnodes && out->nodes[out->entry].level != out->max_level)
        rc = hf_bad("entry point is not on the top level", 40);
    if (rc) hnsw_file_free(out);
    return rc;
}

/* ---------------------------------------------------------------- delta reader */

/* Applies one batch's records (payload [p, pe), checksum already verified) to f, checking every
 * rule the writer keeps; numbers first..after-1 are appended by node records in order. */
static int hd_apply_batch(struct hnsw_file *f, const uint8_t *b, const uint8_t *p, const uint8_t *pe, uint32_t nrec,
                          uint32_t after)
{
    uint32_t M0 = 2 * f->p.M;
    if (after > f->nnodes) {
        struct hnsw_file_node *n = realloc(f->nodes, (size_t)after * sizeof *n);
        if (!n) return err_set(JVDB_ENOMEM, "out of memory reading the HNSW graph delta");
        f->nodes = n;
    }
    uint32_t count = f->nnodes;
    for (uint32_t r = 0; r < nrec; r++) {
        if (pe - p < 5) return hf_bad("delta: truncated record", (size_t)(p - b));
        uint8_t type = p[0];
        uint32_t no = bytes_get32(p + 1);
        p += 5;
        if (type == HD_REC_NODE) {
            if (no > count || no >= after) return hf_bad("delta: node number out of order", (size_t)(p - b));
            int rc = hf_parse_node(b, &p, pe, f, M0, no, after, &f->nodes[no]);
            if (rc) return rc;
            if (no == count) count++;
        } else if (type == HD_REC_LINKS) {
            if (no >= count) return hf_bad("delta: links of a node that does not exist", (size_t)(p - b));
            if (pe - p < 2) return hf_bad("delta: truncated record", (size_t)(p - b));
            struct hnsw_file_node *nd = &f->nodes[no];
            if (p[0] != nd->level) return hf_bad("delta: links at another level than the node's", (size_t)(p - b));
            if (p[1] & ~HF_FLAG_DEAD) return hf_bad("unknown node flags", (size_t)(p - b));
            uint8_t flags = p[1];
            p += 2;
            const uint8_t *lists = p;
            int rc = hf_check_links(b, &p, pe, f, M0, nd->level, no, after);
            if (rc) return rc;
            if (f->nxlinks == f->xlinks_cap) {
                uint32_t ncap = f->xlinks_cap ? 2 * f->xlinks_cap : 1024;
                const uint8_t **x = realloc(f->xlinks, (size_t)ncap * sizeof *x);
                if (!x) return err_set(JVDB_ENOMEM, "out of memory reading the HNSW graph delta");
                f->xlinks = x;
                f->xlinks_cap = ncap;
            }
            f->xlinks[f->nxlinks] = lists;
            nd->xl = f->nxlinks++;
            nd->dead |= flags & HF_FLAG_DEAD; /* never revives: an identity comes only with a node record */
        } else {
            return hf_bad("delta: unknown record type", (size_t)(p - 5 - b));
        }
        f->nnodes = count; /* links checked against `after` may only name nodes this batch defines */
    }
    if (p != pe) return hf_bad("delta: bytes after the batch's last record", (size_t)(p - b));
    if (count != after) return hf_bad("delta: batch defines fewer nodes than it says", (size_t)(p - b));
    return JVDB_OK;
}

/* 1 when the delta's header names checkpoint f (tag, dimension, row size, node count) and checks out. */
static int hd_header_ok(const struct hnsw_file *f, const uint8_t *b, size_t len)
{
    return len >= HD_HEADER_SIZE && !memcmp(b, HD_MAGIC, 8) && bytes_get32(b + 8) == HNSW_DELTA_VERSION &&
           bytes_get32(b + 12) == HD_HEADER_SIZE && bytes_get64(b + 40) == XXH3_64bits(b, 40) &&
           bytes_get64(b + 16) == f->tag && bytes_get32(b + 24) == f->dim && bytes_get32(b + 28) == f->row_bytes &&
           bytes_get32(b + 32) == f->nnodes;
}

void hnsw_delta_scan(struct hnsw_file *f, const void *buf, size_t len, size_t *good_len)
{
    const uint8_t *b = buf;
    *good_len = 0;
    if (!hd_header_ok(f, b, len)) return;
    size_t off = HD_HEADER_SIZE;
    for (uint32_t seq = 0; len - off >= HD_BATCH_HEAD + 8; seq++) {
        const uint8_t *bh = b + off;
        uint32_t plen = bytes_get32(bh + 20);
        if (bytes_get32(bh) != HD_BATCH_TAG || plen > len - off - HD_BATCH_HEAD - 8 || bytes_get32(bh + 4) != seq ||
            bytes_get64(bh + HD_BATCH_HEAD + plen) != XXH3_64bits(bh, HD_BATCH_HEAD + (size_t)plen))
            break;
        f->nnodes = bytes_get32(bh + 12);
        f->lsn = bytes_get64(bh + 24);
        off += HD_BATCH_HEAD + (size_t)plen + 8;
    }
    *good_len = off;
}

int hnsw_delta_apply(struct hnsw_file *f, const void *buf, size_t len, size_t *good_len, uint32_t *batches)
{
    const uint8_t *b = buf;
    *good_len = 0;
    *batches = 0;
    /* Not a delta of this checkpoint (another one's, left by a crash before its removal; or torn at
     * its very start): ignored whole, and rewritten by the next append. */
    if (!hd_header_ok(f, b, len)) return JVDB_OK;
    size_t off = HD_HEADER_SIZE;
    *good_len = off;
    uint32_t seq = 0;
    for (;;) {
        if (len - off < HD_BATCH_HEAD + 8) break;
        const uint8_t *bh = b + off;
        uint32_t plen = bytes_get32(bh + 20);
        if (bytes_get32(bh) != HD_BATCH_TAG || plen > len - off - HD_BATCH_HEAD - 8 ||
            bytes_get64(bh + HD_BATCH_HEAD + plen) != XXH3_64bits(bh, HD_BATCH_HEAD + (size_t)plen))
            break; /* a torn tail: the batches before it stand */
        uint32_t first = bytes_get32(bh + 8), after = bytes_get32(bh + 12), nrec = bytes_get32(bh + 16);
        uint32_t entry = bytes_get32(bh + 40);
        int max_level = (int)bytes_get32(bh + 44);
        if (bytes_get32(bh + 4) != seq || first != f->nnodes || after < first || after == HNSW_FILE_NONE)
            return hf_bad("delta: batch out of sequence", off);
        int rc = hd_apply_batch(f, b, bh + HD_BATCH_HEAD, bh + HD_BATCH_HEAD + plen, nrec, after);
        if (rc) return rc;
        if (entry == HNSW_FILE_NONE ? max_level != -1
                                    : entry >= after || max_level < 0 || f->nodes[entry].level != max_level)
            return hf_bad("delta: bad entry point", off + 40);
        f->entry = entry;
        f->max_level = max_level;
        f->lsn = bytes_get64(bh + 24);
        f->p.seed = bytes_get64(bh + 32);
        off += HD_BATCH_HEAD + (size_t)plen + 8;
        *good_len = off;
        *batches = ++seq;
    }
    return JVDB_OK;
}

/* Appends f's node i, as a checkpoint stores it, to the block buffer. */
static int hf_fold_node(struct hf_buf *b, const struct hnsw_file *f, uint32_t i)
{
    const struct hnsw_file_node *nd = &f->nodes[i];
    const uint8_t *l0 = hnsw_file_links(f, nd), *le = l0;
    for (int l = 0; l <= nd->level; l++) le += 4 + 4 * (size_t)bytes_get32(le);
    size_t links = (size_t)(le - l0);
    int rc = hf_reserve(b, HF_NODE_FIXED + nd->id_len + f->row_bytes + links);
    if (rc) return rc;
    uint8_t *p = b->b + b->len;
    bytes_put64(p, nd->lsn);
    memcpy(p + 8, &nd->id_len, 2);
    p[10] = nd->level;
    p[11] = nd->dead ? HF_FLAG_DEAD : 0;
    p += HF_NODE_FIXED;
    memcpy(p, nd->id, nd->id_len);
    p += nd->id_len;
    memcpy(p, hnsw_file_row(f, nd), f->row_bytes);
    p += f->row_bytes;
    memcpy(p, l0, links);
    b->len = (size_t)(p + links - b->b);
    return JVDB_OK;
}

int hnsw_file_fold(const void *ckpt, size_t ckpt_len, const void *delta, size_t delta_len, uint8_t **out,
                   size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    struct hnsw_file f;
    int rc = hnsw_file_parse(ckpt, ckpt_len, &f);
    if (rc) return rc;
    size_t good;
    uint32_t batches;
    if ((rc = hnsw_delta_apply(&f, delta, delta_len, &good, &batches))) {
        hnsw_file_free(&f);
        return rc;
    }
    struct hf_buf b = { 0 };
    if ((rc = hf_reserve(&b, HF_HEADER_SIZE + (size_t)f.extra_len + 8))) goto out;
    memcpy(b.b, ckpt, HF_HEADER_SIZE);
    bytes_put32(b.b + 36, f.nnodes);
    bytes_put32(b.b + 40, f.entry);
    bytes_put32(b.b + 44, (uint32_t)f.max_level);
    bytes_put64(b.b + 48, f.lsn);
    bytes_put64(b.b + 56, f.p.seed);
    bytes_put64(b.b + 72, XXH3_64bits(b.b, 72));
    memcpy(b.b + HF_HEADER_SIZE, f.extra, (size_t)f.extra_len + 8); /* the extra section and its checksum */
    b.len = HF_HEADER_SIZE + (size_t)f.extra_len + 8;
    uint32_t nblocks = 0;
    for (uint32_t first = 0; first < f.nnodes && rc == JVDB_OK; nblocks++) {
        size_t bh = b.len;
        if ((rc = hf_reserve(&b, HF_BLOCK_HEAD))) break;
        b.len += HF_BLOCK_HEAD;
        uint32_t count = f.nnodes - first < HF_BLOCK_NODES ? f.nnodes - first : HF_BLOCK_NODES;
        for (uint32_t k = 0; k < count && rc == JVDB_OK; k++) rc = hf_fold_node(&b, &f, first + k);
        if (rc || (rc = hf_reserve(&b, 8))) break;
        bytes_put32(b.b + bh, HF_BLOCK_TAG);
        bytes_put32(b.b + bh + 4, first);
        bytes_put32(b.b + bh + 8, count);
        bytes_put32(b.b + bh + 12, (uint32_t)(b.len - bh - HF_BLOCK_HEAD));
        bytes_put64(b.b + b.len, XXH3_64bits(b.b + bh, b.len - bh));
        b.len += 8;
        first += count;
    }
    if (rc == JVDB_OK && (rc = hf_reserve(&b, HF_TRAILER_SIZE)) == JVDB_OK) {
        uint8_t *tr = b.b + b.len;
        memcpy(tr, HF_END_MAGIC, 8);
        bytes_put32(tr + 8, f.nnodes);
        bytes_put32(tr + 12, nblocks);
        bytes_put64(tr + 16, XXH3_64bits(tr, 16));
        b.len += HF_TRAILER_SIZE;
    }
out:
    hnsw_file_free(&f);
    if (rc) {
        free(b.b);
        return rc;
    }
    *out = b.b;
    *out_len = b.len;
    return JVDB_OK;
}

uint64_t hnsw_delta_estimate(const struct hnsw *h, const struct hnsw_numbering *num, uint64_t node_bytes)
{
    uint64_t bytes = HD_BATCH_HEAD + 8;
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT) continue;
        int fresh = s >= num->cap || num->no[s] == HNSW_FILE_NONE;
        if (fresh || (h->dirty[s] & HNSW_DIRTY_NODE)) bytes += 5 + node_bytes;
        else if (h->dirty[s]) bytes += 7 + 4u * (h->level[s] + 1u) + 4u * hnsw_links(h, s, 0)[0];
    }
    return bytes;
}

int hnsw_restructured(const struct hnsw *h) { return h->restructured; }

uint32_t hnsw_capacity(const struct hnsw *h) { return h->cap; }

void hnsw_dirty_clear(struct hnsw *h)
{
    if (h->cap) memset(h->dirty, 0, h->cap);
    h->restructured = 0;
}

/* ---------------------------------------------------------------- repair (loader and vacuum) */

struct repair {
    const struct hnsw *h;
    struct dist_space sp;
    const float *const *slots;
    uint32_t nslots;
    uint32_t *cand;
    struct topk_item *items;
    uint32_t ncand, cap;
};

/* Prepares a repair of graph h: its distance space and candidate buffers sized for the worst case (a list
 * plus the lists of each of its lost links). */
static int repair_init(struct repair *r, const struct hnsw *h, const float *const *slots, uint32_t nslots)
{
    memset(r, 0, sizeof *r);
    r->h = h;
    r->slots = slots;
    r->nslots = nslots;
    int rc = hnsw_space(h, &r->sp);
    if (rc) return rc;
    /* A list and, for each of its lost links, that node's list: at most M0 + M0 * M0 candidates. */
    r->cap = h->M0 + h->M0 * h->M0;
    r->cand = malloc((size_t)r->cap * sizeof *r->cand);
    r->items = malloc((size_t)r->cap * sizeof *r->items);
    if (!r->cand || !r->items) {
        free(r->cand);
        free(r->items);
        return err_set(JVDB_ENOMEM, "out of memory repairing the HNSW graph");
    }
    return JVDB_OK;
}

/* Frees the candidate buffers. */
static void repair_free(struct repair *r)
{
    free(r->cand);
    free(r->items);
}

/* Adds slot s to the candidates, once, never `self`, and only while there is room. */
static void repair_add(struct repair *r, uint32_t self, uint32_t s)
{
    if (s == self || r->ncand >= r->cap) return;
    for (uint32_t i = 0; i < r->ncand; i++)
        if (r->cand[i] == s) return;
    r->cand[r->ncand++] = s;
}

/* qsort order of candidates: nearest first, equal distances by slot (topk_less), so the choice is repeatable. */
static int item_cmp(const void *a, const void *b)
{
    struct topk_item x = *(const struct topk_item *)a, y = *(const struct topk_item *)b;
    return topk_less(x, y) ? -1 : topk_less(y, x) ? 1 : 0;
}

/* Chooses `self`'s level-`level` list (capacity max) among r->cand with the build's heuristic.
 * Without a vector for `self` the candidates are kept in their order up to max. */
static void repair_choose(struct repair *r, uint32_t self, int level, uint32_t max)
{
    uint32_t *links = hnsw_links(r->h, self, level);
    const float *base = hnsw_vec(r->slots, r->nslots, self);
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->ncand; i++) {
        const float *v = hnsw_vec(r->slots, r->nslots, r->cand[i]);
        if (base && !v) continue;
        r->items[n].slot = r->cand[i];
        r->items[n].dist = base ? r->sp.dist(base, v, r->h->dim) : (float)i;
        n++;
    }
    qsort(r->items, n, sizeof *r->items, item_cmp);
    uint32_t kept = base ? hnsw_select(r->h, &r->sp, r->slots, r->nslots, r->items, n, max) : (n < max ? n : max);
    for (uint32_t i = 0; i < kept; i++) links[i + 1] = r->items[i].slot;
    links[0] = kept;
}

/* ---------------------------------------------------------------- loader */

/* Where a file node's level-`level` link list starts: the lists are stored in level order, each a count
 * and that many node numbers (already bounds-checked by the parse). */
static const uint8_t *hf_node_links(const struct hnsw_file *f, const struct hnsw_file_node *nd, int level)
{
    const uint8_t *p = hnsw_file_links(f, nd);
    for (int l = 0; l < level; l++) p += 4 + 4 * (size_t)bytes_get32(p);
    return p;
}

int hnsw_from_file(const struct hnsw_file *f, const uint32_t *map, const float *const *slots, uint32_t nslots,
                   struct hnsw **out)
{
    *out = NULL;
    struct hnsw *h;
    int rc = hnsw_create(f->dim, f->metric, &f->p, &h);
    if (rc) return rc;
    uint32_t need = 0;
    for (uint32_t i = 0; i < f->nnodes; i++)
        if (map[i] != HNSW_FILE_NONE && map[i] + 1 > need) need = map[i] + 1;
    if (need && (rc = hnsw_reserve(h, need))) goto fail;

    for (uint32_t i = 0; i < f->nnodes; i++) {
        uint32_t s = map[i];
        if (s == HNSW_FILE_NONE) continue;
        if (h->level[s] != HNSW_ABSENT) {
            rc = err_set(JVDB_ECORRUPT, "HNSW graph file: two nodes stand for slot %u", s);
            goto fail;
        }
        uint8_t lv = f->nodes[i].level;
        if (lv > 0 && !(h->upper[s] = calloc((size_t)lv * h->up_stride, sizeof(uint32_t)))) {
            rc = err_set(JVDB_ENOMEM, "out of memory loading the HNSW graph");
            goto fail;
        }
        h->level[s] = lv;
        h->nodes++;
    }

    struct repair r;
    if ((rc = repair_init(&r, h, slots, nslots))) goto fail;
    size_t mark = 0;
    for (uint32_t i = 0; i < f->nnodes; i++) {
        const struct hnsw_file_node *nd = &f->nodes[i];
        hnsw_file_drop(f, &mark, nd->id);
        uint32_t s = map[i];
        if (s == HNSW_FILE_NONE) continue;
        for (int l = 0; l <= nd->level; l++) {
            const uint8_t *p = hf_node_links(f, nd, l);
            uint32_t c = bytes_get32(p), kept = 0, lost = 0;
            uint32_t *links = hnsw_links(h, s, l);
            for (uint32_t k = 0; k < c; k++) {
                uint32_t t = bytes_get32(p + 4 + 4 * (size_t)k), mt = map[t];
                /* A link at level l must reach a node that has level l; a file that says otherwise
                 * loses that link rather than pointing the search at lists that do not exist.  A
                 * kept node's level is read from the graph's small level array (set from the file
                 * above), not from f->nodes: at a million nodes that is a cache miss per link. */
                if (mt == HNSW_FILE_NONE) {
                    lost += l == 0 || f->nodes[t].level >= l;
                    continue;
                }
                if (l && h->level[mt] < l) continue;
                links[++kept] = mt;
            }
            links[0] = kept;
            if (!lost) continue;
            /* Dropped neighbours: refill from their own lists, pgvector-vacuum style. */
            r.ncand = 0;
            for (uint32_t k = 1; k <= kept; k++) repair_add(&r, s, links[k]);
            for (uint32_t k = 0; k < c; k++) {
                uint32_t t = bytes_get32(p + 4 + 4 * (size_t)k);
                if (map[t] != HNSW_FILE_NONE || f->nodes[t].level < l) continue;
                const uint8_t *q = hf_node_links(f, &f->nodes[t], l);
                uint32_t qc = bytes_get32(q);
                for (uint32_t j = 0; j < qc; j++) {
                    uint32_t u = bytes_get32(q + 4 + 4 * (size_t)j);
                    if (map[u] != HNSW_FILE_NONE && f->nodes[u].level >= l) repair_add(&r, s, map[u]);
                }
            }
            repair_choose(&r, s, l, l ? h->p.M : h->M0);
        }
    }
    repair_free(&r);

    if (f->nnodes && map[f->entry] != HNSW_FILE_NONE) {
        h->entry = map[f->entry];
        h->max_level = f->nodes[f->entry].level;
    } else {
        for (uint32_t s = 0; s < h->cap; s++)
            if (h->level[s] != HNSW_ABSENT && (int)h->level[s] > h->max_level) {
                h->entry = s;
                h->max_level = h->level[s];
            }
    }
    *out = h;
    return JVDB_OK;
fail:
    hnsw_free(h);
    return rc;
}

/* ---------------------------------------------------------------- vacuum */

int hnsw_vacuum(struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t *removed)
{
    *removed = 0;
    if (h->ndeleted == 0) return JVDB_OK;
    struct repair r;
    int rc = repair_init(&r, h, slots, nslots);
    if (rc) return rc;
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT || h->deleted[s]) continue;
        for (int l = 0; l <= h->level[s]; l++) {
            uint32_t *links = hnsw_links(h, s, l);
            uint32_t c = links[0], lost = 0;
            for (uint32_t k = 1; k <= c; k++) lost += h->deleted[links[k]];
            if (!lost) continue;
            r.ncand = 0;
            for (uint32_t k = 1; k <= c; k++) {
                uint32_t t = links[k];
                if (!h->deleted[t]) {
                    repair_add(&r, s, t);
                    continue;
                }
                const uint32_t *tl = hnsw_links(h, t, l);
                for (uint32_t j = 1; j <= tl[0]; j++)
                    if (!h->deleted[tl[j]]) repair_add(&r, s, tl[j]);
            }
            repair_choose(&r, s, l, l ? h->p.M : h->M0);
        }
    }
    repair_free(&r);
    int entry_gone = h->entry != HNSW_NONE && h->deleted[h->entry];
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT || !h->deleted[s]) continue;
        free(h->upper[s]);
        h->upper[s] = NULL;
        h->level[s] = HNSW_ABSENT;
        h->l0[(size_t)s * h->l0_stride] = 0;
        h->deleted[s] = 0;
        h->nodes--;
        h->ndeleted--;
        (*removed)++;
        h->restructured = 1;
    }
    if (entry_gone) {
        h->entry = HNSW_NONE;
        h->max_level = -1;
        for (uint32_t s = 0; s < h->cap; s++)
            if (h->level[s] != HNSW_ABSENT && (int)h->level[s] > h->max_level) {
                h->entry = s;
                h->max_level = h->level[s];
            }
    }
    return JVDB_OK;
}

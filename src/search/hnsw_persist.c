/*
 * hnsw_persist.c — the HNSW graph file (writer, verifying reader, loader) and the vacuum that removes
 * deleted nodes.  Format: docs/FORMAT.md, "HNSW graph file".
 *
 * Scheme: checkpoints alone, with catch-up at open.  A checkpoint is a complete graph written with
 * the atomic-replace rule (<path>.tmp, fsync, rename, directory fsync), so the file on disk is always
 * either the previous complete graph or the new one, never a mix; a torn .tmp is never read.  Nodes
 * carry the id and LSN of the record they were linked for; the loader keeps a node only when the
 * keydir's newest record for that id has that very LSN, and indexes everything else that is live
 * again (the catch-up).  So whatever happened after the checkpoint (writes, deletes, compactions that
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

int hnsw_save(const struct hnsw *h, const float *const *slots, uint32_t nslots, const void *extra, uint32_t extra_len,
              const char *path, uint64_t lsn, hnsw_ident_fn ident, hnsw_lock_fn lockfn, void *ctx, uint64_t *written)
{
    if (extra_len > HNSW_FILE_MAX_EXTRA) return err_set(JVDB_EINVAL, "HNSW graph file: extra section too large");
    uint32_t row_bytes = hf_row_bytes(h->dim, h->p.sq8);
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
            const char *id = NULL;
            uint16_t id_len = 0;
            uint64_t nlsn = 0;
            const float *row = hnsw_vec(slots, nslots, s);
            int live = row && !h->deleted[s] && ident(ctx, s, &id, &id_len, &nlsn);
            if (!live) {
                id_len = 0;
                nlsn = 0;
            }
            size_t links = 0;
            for (int l = 0; l <= h->level[s]; l++) links += 4u + 4u * hnsw_links(h, s, l)[0];
            if ((rc = hf_reserve(&b, HF_NODE_FIXED + id_len + row_bytes + links))) break;
            uint8_t *p = b.b + b.len;
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
            for (int l = 0; l <= h->level[s]; l++) {
                const uint32_t *li = hnsw_links(h, s, l);
                bytes_put32(p, li[0]);
                p += 4;
                for (uint32_t i = 1; i <= li[0]; i++, p += 4) bytes_put32(p, idx[li[i]]);
            }
            b.len = (size_t)(p - b.b);
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
    free(idx);
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
    if (rc == JVDB_OK) {
        io_crash_point("hnsw.save.before_rename");
        if (io_rename(tmp, path) < 0) rc = err_errno(errno, "cannot rename %s to %s", tmp, path);
    }
    if (rc) {
        unlink(tmp);
        return rc;
    }
    io_crash_point("hnsw.save.after_rename");
    if ((rc = hf_dir_sync(path))) return rc;
    if (written) *written = total;
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
}

static int hf_parse_nodes(const uint8_t *b, size_t len, struct hnsw_file *out, uint32_t M0, uint32_t done,
                          uint32_t nblocks, size_t off, size_t end);

#define HF_DROP_BATCH (4u << 20) /* bytes gathered before one madvise */

void hnsw_file_drop(const struct hnsw_file *f, size_t *mark, const void *upto)
{
    if (!f->mapped) return;
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

/* Reads the node blocks in [off, end) and the trailer, checking each block's tag, node range and checksum
 * and bounds-checking every node's id, row, levels and links; on any failure frees out's nodes. */
static int hf_parse_nodes(const uint8_t *b, size_t len, struct hnsw_file *out, uint32_t M0, uint32_t done,
                          uint32_t nblocks, size_t off, size_t end)
{
    (void)len;
    int rc = JVDB_OK;
    const uint32_t f_row_bytes = out->row_bytes;
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
        for (uint32_t k = 0; k < count && rc == JVDB_OK; k++) {
            struct hnsw_file_node *nd = &out->nodes[done + k];
            if (pe - p < (ptrdiff_t)HF_NODE_FIXED) {
                rc = hf_bad("truncated node", (size_t)(p - b));
                break;
            }
            nd->lsn = bytes_get64(p);
            memcpy(&nd->id_len, p + 8, 2);
            nd->level = p[10];
            uint8_t flags = p[11];
            if (flags & ~HF_FLAG_DEAD) {
                rc = hf_bad("unknown node flags", (size_t)(p - b));
                break;
            }
            nd->dead = flags & HF_FLAG_DEAD;
            if (nd->level >= HNSW_MAX_LEVEL) {
                rc = hf_bad("node level out of range", (size_t)(p - b));
                break;
            }
            if (!nd->dead && nd->id_len == 0) {
                rc = hf_bad("live node without an id", (size_t)(p - b));
                break;
            }
            p += HF_NODE_FIXED;
            if (pe - p < nd->id_len) {
                rc = hf_bad("truncated id", (size_t)(p - b));
                break;
            }
            nd->id = (const char *)p;
            p += nd->id_len;
            if ((size_t)(pe - p) < f_row_bytes) {
                rc = hf_bad("truncated row", (size_t)(p - b));
                break;
            }
            p += f_row_bytes;
            for (int l = 0; l <= nd->level; l++) {
                if (pe - p < 4) {
                    rc = hf_bad("truncated link list", (size_t)(p - b));
                    break;
                }
                uint32_t c = bytes_get32(p);
                if (c > (l ? out->p.M : M0)) {
                    rc = hf_bad("link list longer than M allows", (size_t)(p - b));
                    break;
                }
                p += 4;
                if ((size_t)(pe - p) < 4u * c) {
                    rc = hf_bad("truncated link list", (size_t)(p - b));
                    break;
                }
                for (uint32_t i = 0; i < c; i++, p += 4) {
                    uint32_t t = bytes_get32(p);
                    if (t >= out->nnodes || t == done + k) {
                        rc = hf_bad("link to a node that does not exist", (size_t)(p - b));
                        break;
                    }
                }
                if (rc) break;
            }
        }
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

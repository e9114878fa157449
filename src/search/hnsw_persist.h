/*
 * hnsw_persist.h — the HNSW graph on disk (docs/FORMAT.md, "HNSW graph file").
 *
 * The file names nodes by the identity of the record they were built from (id and LSN), never by
 * slot or location: slots are handed out anew at every open and compaction moves records, while a
 * record's id and LSN never change.  The loader maps each node back to a slot through the caller (the
 * keydir) and drops the nodes whose record is gone or newer than the node, so a loaded graph can
 * miss vectors (they are then indexed again) but never returns a record it was not built from.
 */
#ifndef JVDB_SEARCH_HNSW_PERSIST_H
#define JVDB_SEARCH_HNSW_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "search/hnsw.h"

#define HNSW_FILE_NAME     "ext.hnsw"
#define HNSW_FILE_VERSION  3u
#define HNSW_DELTA_NAME    "ext.hnsw.log" /* the changes since ext.hnsw (docs/FORMAT.md, "HNSW graph delta") */
#define HNSW_DELTA_VERSION 1u

/* 24 bytes per node (a million-node file is loaded with this array beside it): the row and the links
 * follow the id in the file, hnsw_file_row / hnsw_file_links find them. */
struct hnsw_file_node {
    uint64_t lsn;
    const char *id; /* into the file's bytes; not NUL-terminated */
    uint16_t id_len;
    uint8_t level;
    uint8_t dead; /* kept only for its links (repairing its neighbours at load) */
    uint32_t xl;  /* links replaced by a delta: index into hnsw_file.xlinks; HNSW_FILE_NONE: after the row */
};

struct hnsw_file {
    uint32_t dim;
    jvdb_metric metric;
    struct hnsw_params p; /* seed = the level generator's state when the file was written */
    uint64_t lsn;         /* every record with an LSN up to this one was reconciled */
    uint32_t nnodes;
    uint32_t entry; /* node index, HNSW_FILE_NONE when empty */
    int max_level;
    uint32_t row_bytes;   /* per node: sq8_row_bytes(dim) when p.sq8, else 4 * dim */
    const uint8_t *extra; /* the owner's checksummed bytes (search.c: the quantiser) */
    uint32_t extra_len;
    struct hnsw_file_node *nodes;
    const uint8_t *base;    /* the bytes parsed */
    size_t len;             /* of base */
    int mapped;             /* base is a page-aligned mapping whose pages may be dropped (hnsw_file_drop) */
    uint64_t tag;           /* the checkpoint's header checksum: a delta names the checkpoint it extends by it */
    const uint8_t **xlinks; /* link lists a delta replaced (into the delta's bytes) */
    uint32_t nxlinks, xlinks_cap;
};

/* The node's navigation row, row_bytes bytes (unaligned, in the file). */
static inline const uint8_t *hnsw_file_row(const struct hnsw_file *f, const struct hnsw_file_node *nd)
{
    (void)f;
    return (const uint8_t *)nd->id + nd->id_len;
}

#define HNSW_FILE_NONE UINT32_MAX

/* The node's level + 1 link lists, level 0 first: u32 count, count u32 node indices. */
static inline const uint8_t *hnsw_file_links(const struct hnsw_file *f, const struct hnsw_file_node *nd)
{
    return nd->xl != HNSW_FILE_NONE ? f->xlinks[nd->xl] : hnsw_file_row(f, nd) + f->row_bytes;
}

/* Verifies and indexes a whole graph file held in memory (`buf` must outlive `out`).
 * JVDB_ECORRUPT with the reason (bad magic, version, checksum, bounds), JVDB_ENOMEM. */
int hnsw_file_parse(const void *buf, size_t len, struct hnsw_file *out);
/* The same over a read-only mapping of the whole file (page-aligned): pages are dropped from the
 * process (madvise DONTNEED; they stay in the page cache) as soon as they are verified, so a file
 * bigger than the graph it holds never has to be resident at once.  Later passes over the file
 * (the caller's, hnsw_from_file) drop what they are done with through hnsw_file_drop. */
int hnsw_file_parse_mapped(const void *map, size_t len, struct hnsw_file *out);
/* For a pass that walks the file forward: drops the pages between *mark and `upto` once a few MiB
 * have gathered (nothing for a file not parsed by hnsw_file_parse_mapped).  Start a pass with
 * *mark = 0.  Pages dropped are read again from the page cache if touched later. */
void hnsw_file_drop(const struct hnsw_file *f, size_t *mark, const void *upto);
void hnsw_file_free(struct hnsw_file *f);
/* Verifies the header alone (magic, version, checksum, ranges): fills f's scalar fields, no nodes and
 * no extra.  `buf` holds at least the 80-byte header; `len` is the whole file's size. */
int hnsw_file_parse_header(const void *buf, size_t len, struct hnsw_file *out);

/* Builds a graph from a parsed file: node i becomes slot map[i] (HNSW_FILE_NONE drops it).  A node that
 * loses links to dropped nodes gets its list refilled from theirs (as pgvector's vacuum does), with
 * the vectors read through the slot table.  JVDB_ECORRUPT if two nodes map to one slot, JVDB_ENOMEM. */
int hnsw_from_file(const struct hnsw_file *f, const uint32_t *map, const float *const *slots, uint32_t nslots,
                   struct hnsw **out);

/* Identity of the record a node stands for, for the writer: returns 1 and fills id/lsn, or 0 when
 * the node should be written as dead (its record is gone or changed since it was linked). */
typedef int (*hnsw_ident_fn)(void *ctx, uint32_t slot, const char **id, uint16_t *id_len, uint64_t *lsn);
/* Called with 1 before and 0 after each block's identities are read (the caller's lock), so that no
 * lock is held across the file writes. */
typedef void (*hnsw_lock_fn)(void *ctx, int lock);

/* Called once every node's identity has been read and before the file that names them is published
 * (renamed into place, or a delta batch written): makes every record the nodes name durable, so no
 * (id, LSN) in a published graph can be lost and reissued by a power cut.  NULL: nothing to do. */
typedef int (*hnsw_durable_fn)(void *ctx);

/* Where the graph's nodes stand in the files on disk: the checkpoint's node numbers, then the ones
 * the delta appended.  Kept by the caller beside the graph; hnsw_save starts it afresh, a delta
 * append extends it, the loader (search.c) fills it from the merged file. */
struct hnsw_numbering {
    uint32_t *no; /* per slot: node number in the files, HNSW_FILE_NONE when none yet */
    uint32_t cap;
    uint32_t count;      /* numbers handed out */
    uint64_t tag;        /* the checkpoint's header checksum */
    uint64_t ckpt_bytes; /* the checkpoint's size */
    uint64_t delta_len;  /* good bytes of the delta file; 0: none (the next append creates it) */
    uint32_t batches;    /* in the delta file */
    int valid;           /* 0: no checkpoint matches the graph; only a full save may follow */
};
void hnsw_numbering_free(struct hnsw_numbering *num);
/* Sizes num->no for slots [0, need) (new entries HNSW_FILE_NONE).  JVDB_ENOMEM. */
int hnsw_numbering_reserve(struct hnsw_numbering *num, uint32_t need);

/* Writes the graph to `path` with the atomic-replace rule (<path>.tmp, fsync, durable(ctx), rename,
 * directory fsync, then the old delta <path>.log removed), crash points "hnsw.save.before_rename" /
 * "hnsw.save.after_rename" / "hnsw.save.before_delta_unlink", with each node's row from the slot
 * table (a node without one is written dead) and `extra` (at most HNSW_FILE_MAX_EXTRA bytes) beside
 * the header.  The caller keeps the graph and rows unchanged during the call.  *written receives the
 * file size if not NULL; `num` (may be NULL) is set to the new file's numbering. */
int hnsw_save(const struct hnsw *h, const float *const *slots, uint32_t nslots, const void *extra, uint32_t extra_len,
              const char *path, uint64_t lsn, hnsw_ident_fn ident, hnsw_lock_fn lockfn, hnsw_durable_fn durable,
              void *ctx, struct hnsw_numbering *num, uint64_t *written);

/* Appends one batch to the delta file `dpath` (created with its header when num->delta_len is 0):
 * every node changed since the last save (hnsw_dirty), new nodes numbered after num->count.  The batch
 * is built, durable(ctx) called before any of it is written, then it is written, the file cut after
 * it and fdatasynced;
 * crash points "hnsw.delta.before_sync" / "hnsw.delta.after_sync".  The graph's dirty marks are
 * cleared on success.  On failure num is as before (the batch, if partly on disk, is a torn tail the
 * reader ignores and the next append overwrites).  *written receives the batch's size. */
int hnsw_delta_append(struct hnsw *h, const float *const *slots, uint32_t nslots, const char *dpath, uint64_t lsn,
                      hnsw_ident_fn ident, hnsw_lock_fn lockfn, hnsw_durable_fn durable, void *ctx,
                      struct hnsw_numbering *num, uint64_t *written);

/* Replays a delta file over a parsed checkpoint: node identities, rows and link lists it replaced,
 * nodes it appended, and the entry point, level generator and LSN of its last complete batch.  Torn
 * or damaged batches at the tail end the replay there (*good_len = the bytes up to the last complete
 * batch; 0 when the file is not a delta of this checkpoint, which is then ignored whole).  `buf` must
 * outlive f.  JVDB_ECORRUPT when a batch whose checksum holds breaks a rule (f is then half-changed:
 * parse the checkpoint again), JVDB_ENOMEM. */
int hnsw_delta_apply(struct hnsw_file *f, const void *buf, size_t len, size_t *good_len, uint32_t *batches);

/* For status only: with f from hnsw_file_parse_header, moves f->nnodes and f->lsn to those of the
 * delta's last complete batch (checksums checked, records not read); *good_len as for apply. */
void hnsw_delta_scan(struct hnsw_file *f, const void *buf, size_t len, size_t *good_len);

/* A checkpoint (whole file in memory) with its delta folded in, as one checkpoint file in *out
 * (malloc'd, *out_len bytes): what a backup carries.  Nodes keep their numbers. */
int hnsw_file_fold(const void *ckpt, size_t ckpt_len, const void *delta, size_t delta_len, uint8_t **out,
                   size_t *out_len);

#define HNSW_FILE_MAX_EXTRA (1u << 24)

/* About the bytes the next delta append would write: changed nodes' lists, and `node_bytes` for
 * each node written whole (new or re-made). */
uint64_t hnsw_delta_estimate(const struct hnsw *h, const struct hnsw_numbering *num, uint64_t node_bytes);
/* 1 when nodes were removed since the last save (vacuum, rebuild): the next save must be full. */
int hnsw_restructured(const struct hnsw *h);
/* Slots [0, capacity) have room in the graph's arrays. */
uint32_t hnsw_capacity(const struct hnsw *h);
/* After a full save: nothing is changed since. */
void hnsw_dirty_clear(struct hnsw *h);

/* Removes nodes marked deleted, repairing the lists that pointed at them; the graph stays usable
 * throughout.  Returns how many nodes were removed.  JVDB_ENOMEM leaves the graph as it was. */
int hnsw_vacuum(struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t *removed);

#endif

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

#define HNSW_FILE_NAME    "ext.hnsw"
#define HNSW_FILE_VERSION 3u

/* 24 bytes per node (a million-node file is loaded with this array beside it): the row and the links
 * follow the id in the file, hnsw_file_row / hnsw_file_links find them. */
struct hnsw_file_node {
    uint64_t lsn;
    const char *id; /* into the file's bytes; not NUL-terminated */
    uint16_t id_len;
    uint8_t level;
    uint8_t dead; /* kept only for its links (repairing its neighbours at load) */
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
    const uint8_t *base; /* the bytes parsed */
    int mapped;          /* base is a page-aligned mapping whose pages may be dropped (hnsw_file_drop) */
};

/* The node's navigation row, row_bytes bytes (unaligned, in the file). */
static inline const uint8_t *hnsw_file_row(const struct hnsw_file *f, const struct hnsw_file_node *nd)
{
    (void)f;
    return (const uint8_t *)nd->id + nd->id_len;
}

/* The node's level + 1 link lists, level 0 first: u32 count, count u32 node indices. */
static inline const uint8_t *hnsw_file_links(const struct hnsw_file *f, const struct hnsw_file_node *nd)
{
    return hnsw_file_row(f, nd) + f->row_bytes;
}

#define HNSW_FILE_NONE UINT32_MAX

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

/* Writes the graph to `path` with the atomic-replace rule (<path>.tmp, fsync, rename, directory
 * fsync), crash points "hnsw.save.before_rename" / "hnsw.save.after_rename", with each node's row
 * from the slot table (a node without one is written dead) and `extra` (at most HNSW_FILE_MAX_EXTRA
 * bytes) beside the header.  The caller keeps the graph and rows unchanged during the call.
 * *written receives the file size if not NULL. */
int hnsw_save(const struct hnsw *h, const float *const *slots, uint32_t nslots, const void *extra, uint32_t extra_len,
              const char *path, uint64_t lsn, hnsw_ident_fn ident, hnsw_lock_fn lockfn, void *ctx, uint64_t *written);

#define HNSW_FILE_MAX_EXTRA (1u << 24)

/* Removes nodes marked deleted, repairing the lists that pointed at them; the graph stays usable
 * throughout.  Returns how many nodes were removed.  JVDB_ENOMEM leaves the graph as it was. */
int hnsw_vacuum(struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t *removed);

#endif

#ifndef JVDB_STORE_KDCKPT_H
#define JVDB_STORE_KDCKPT_H
/*
 * The keydir checkpoint ("KEYDIR" beside the segments; docs/FORMAT.md, "Keydir checkpoint"): the
 * newest version of every id (record location, LSN, kind, slot) as of one LSN, so that an open reads
 * only the records written after it instead of every record of every segment.
 */
#include <stddef.h>
#include <stdint.h>

#include "jvdb.h"

#define KDCKPT_FILE            "KEYDIR"
#define KDCKPT_MAGIC           "JVDBKDC1"
#define KDCKPT_END_MAGIC       "JVDBKDCE"
#define KDCKPT_VERSION         2u /* entries are images of struct kd_entry */
#define KDCKPT_VERSION_OLD     1u /* still read: entries of 32 bytes plus the id */
#define KDCKPT_HEADER_SIZE     64u
#define KDCKPT_SEG_SIZE        40u
#define KDCKPT_BLOCK_HEAD      16u
#define KDCKPT_ENTRY_FIXED     48u
#define KDCKPT_ENTRY_FIXED_OLD 32u
#define KDCKPT_BLOCK_TAG       0x4c42444bu /* "KDBL" */
#define KDCKPT_MAX_BLOCK       (16u << 20)
#define KDCKPT_MAX_SEGS        1000000u

struct kdckpt_seg {
    uint64_t no;
    uint64_t covered;          /* bytes of the file (header included) the checkpoint covers */
    uint64_t records;          /* records in [0, covered) */
    uint64_t min_lsn, max_lsn; /* their LSN range (0,0: none) */
};

struct kdckpt_header {
    uint32_t version, dim;
    uint64_t lsn; /* complete up to this LSN */
    uint64_t entries;
    uint32_t nsegs, nslots;
    int64_t created_ns;
    uint64_t file_bytes; /* the file's size (not a field of the file) */
};

struct kdckpt_entry {
    uint64_t lsn, offset;
    uint32_t seg; /* index into the segment table */
    uint32_t rec_len, slot;
    uint16_t id_len;
    uint8_t kind;
    const char *id;
    uint64_t hash; /* keydir_hash of the id */
    uint8_t *img;  /* the entry's bytes in memory the sink's `block` gave (NULL: in the reader's own) */
};

/* What the reader hands its caller, each only after the checksum covering it verified. */
struct kdckpt_sink {
    void *ctx;
    int (*begin)(void *ctx, const struct kdckpt_header *h, const struct kdckpt_seg *segs);
    int (*entry)(void *ctx, const struct kdckpt_entry *e);
    /* Optional: an entry that `entry` will get a few calls from now (cache prefetching). */
    void (*ahead)(void *ctx, const struct kdckpt_entry *e);
    /* Optional: memory (8-aligned) for a current-format block's payload of `bytes` bytes, the
     * sink's to keep; NULL: the reader's own buffer.  Its entries then carry `img`. */
    void *(*block)(void *ctx, size_t bytes);
};

/* Reads a checkpoint from fd (untrusted: fuzzed), checking every field against the header and the
 * segment table; `dim` is the database's.  JVDB_ECORRUPT with the reason (or an error a sink
 * returned); a file of another version or dimension is JVDB_ECORRUPT too. */
int kdckpt_read(int fd, uint32_t dim, const struct kdckpt_sink *sink);

struct jvdb_db;
/* At open, before any segment is scanned (db->segs pushed, none applied): loads KEYDIR into the
 * keydir and the segments' accounting and sets from[i], where scanning db->segs[i] resumes, and
 * *lsn.  Returns 1 when loaded, 0 when there is no usable checkpoint (the reason is logged; the
 * keydir is left empty and every from[i] is the segment start), or an error (out of memory). */
int kdckpt_load(struct jvdb_db *db, uint64_t *from, uint64_t *lsn);
/* After a successful open for writing: starts the background checkpointer.  `scanned` is how many
 * segment bytes the open read record by record (what a checkpoint would have saved). */
int kdckpt_start(struct jvdb_db *db, uint64_t scanned);
/* Stops the background checkpointer (hold) or starts it again, keeping what it knows: a database
 * built out of sight (env_build_begin) takes no periodic checkpoint, only the one kdckpt_flush
 * writes before it is published.  A no-op on a read-only open. */
int kdckpt_hold(struct jvdb_db *db, int hold);
/* Writes a checkpoint now when close would (the database changed since the last one, or none was
 * written and it is large enough); JVDB_OK when none is due. */
int kdckpt_flush(struct jvdb_db *db, const char *why);
/* At close: stops the checkpointer and, when this session changed the database (or its open had
 * to scan much), writes a last checkpoint. */
void kdckpt_stop(struct jvdb_db *db, int final);
/* Writes a checkpoint now (the checkpointer and close use it; tests too).  JVDB_EBUSY when a
 * compaction moved records while it was being taken (try again later). */
int kdckpt_write(struct jvdb_db *db, const char *why);
#endif

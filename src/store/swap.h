#ifndef JVDB_STORE_SWAP_H
#define JVDB_STORE_SWAP_H
/*
 * What the store offers the jobs that work on whole segments (compaction, backups): sealing on
 * demand, pinning sealed segments, listing the records the keydir points at, writing new sealed
 * segment files, and swapping segments in the MANIFEST as one commit.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "store/db.h"

struct db_pinned {
    struct segment **segs;
    size_t n;
};

/* Seals the active segment if it holds any record (docs/ARCHITECTURE.md 7, compaction step 1). */
int db_seal(jvdb_db *db);
/* Pins the sealed segments for which choose() returns non-zero (all of them if choose is NULL). */
int db_pin_sealed(jvdb_db *db, int (*choose)(void *ctx, const struct segment *s), void *ctx, struct db_pinned *out);
void db_unpin(struct db_pinned *p);

struct db_live_rec {
    struct segment *seg;
    uint64_t offset;
    uint64_t lsn;
    uint32_t len;
    uint32_t hits;
    uint8_t kind;
    uint8_t keep; /* must be copied whatever the tombstone rule says: an older version readers
                        * may still reach, or a tombstone older versions still hang from */
};
/* The records of the pinned segments some version in the keydir points at (live puts and kept
 * tombstones, in file order; listed without a lock, writers going on), and the smallest LSN of any record in a sealed segment that is not pinned (UINT64_MAX if none). */
int db_live_records(jvdb_db *db, const struct db_pinned *p, struct db_live_rec **out, size_t *n,
                    uint64_t *min_lsn_outside);
/* A consistent view at one LSN (the visible one), taken without any lock: the records (live puts
 * and kept tombstones) with LSN > from_lsn that are current at `lsn`, and pins on every segment
 * they are in (the active one included: records below its size at snapshot time never change).
 * Records are listed in hash order; sort them if order matters. */
struct db_snapshot {
    uint64_t lsn;
    struct db_pinned pins;
    struct db_live_rec *recs;
    size_t n;
    uint32_t dim;
};
int db_snapshot(jvdb_db *db, uint64_t from_lsn, struct db_snapshot *out);
void db_snapshot_free(struct db_snapshot *s);

/* Halves every access count, so "hot" means recently hot. */
void db_decay_hits(jvdb_db *db);

/* A new sealed segment file written outside the database's locks: "<N>.seg.tmp", then published
 * as "<N>.seg" by segw_finish (fsync, rename, fsync dir).  Unreferenced by the MANIFEST until
 * db_swap, so a crash before that leaves an orphan that the next open deletes. */
struct segw {
    jvdb_db *db;
    uint64_t no;
    int fd;
    char *tmp_path;
    uint64_t size;
    uint64_t records, min_lsn, max_lsn;
    char *buf;
    size_t buf_len;
    /* Records appended by reference (segw_append_ref): pieces of pinned mappings, written with one
     * pwritev per batch; contiguous records share an entry. */
    struct iovec *iov;
    int iov_n;
    size_t iov_bytes;
    uint64_t written;        /* bytes in the file */
    uint64_t writeback_from; /* writeback started for the bytes before this */
};
int segw_begin(jvdb_db *db, struct segw *w);
/* Appends one record verbatim (its checksum stays valid); *offset receives its place. */
int segw_append(struct segw *w, const void *rec, uint32_t len, uint64_t lsn, uint64_t *offset);
/* The same without copying: `rec` must stay valid (its segment pinned) until segw_finish or
 * segw_abort; records lying back to back in memory go out in one piece. */
int segw_append_ref(struct segw *w, const void *rec, uint32_t len, uint64_t lsn, uint64_t *offset);
/* Publishes the file and opens it as a sealed segment. */
int segw_finish(struct segw *w, struct segment **out);
/* Removes the temporary file (abandoned job). */
void segw_abort(struct segw *w);

struct db_move {
    struct segment *from;
    uint64_t from_off;
    struct segment *to;
    uint64_t to_off;
};
/* The commit (docs/ARCHITECTURE.md 7, compaction step 5): a MANIFEST naming `outs` instead of `ins` replaces the old one;
 * then keydir entries still pointing at a moved record follow it, tombstones in `drops` that are
 * still current are forgotten, and the inputs are retired (unlinked when their last pin goes).
 * On failure nothing changed. */
int db_swap(jvdb_db *db, const struct db_pinned *ins, struct segment **outs, size_t nouts, const struct db_move *moves,
            size_t nmoves, const struct db_live_rec *drops, size_t ndrops);
#endif

#ifndef JVDB_BACKUP_WAL_H
#define JVDB_BACKUP_WAL_H
/*
 * Backup log objects (docs/FORMAT.md, "Backup log objects"): the continuous part of a repository's
 * recovery history, written by jvdb_backup_ship (wal.c) and read by point-in-time restore and
 * replicas.  This is the contract between the two sides (/work/wal-contract.md); the shipper owns it.
 *
 *   <repo>/<database>/log/<incarnation>/<lsn_from:020>-<lsn_to:020>-<first_time_ns:019>-
 *       <last_time_ns:019>-<epoch:010>.jvl        every record with an LSN in (lsn_from, lsn_to]
 *   <repo>/<database>/log/LEASE                    the fencing lease (JSON)
 *   <repo>/<database>/log/EPOCH-<epoch:010>[.<claimed_ns:019>-<16 hex>]   one claim of a fencing epoch (JSON)
 *
 * An object's bytes are a backup archive of type 4 (ARCHIVE_TYPE_LOG): whole batches, records
 * verbatim from the segments (batch flag and time_ns kept), ascending LSN, sealed in an encrypted
 * repository with "<database>/log/<name>" as the additional data.
 */
#include <stddef.h>
#include <stdint.h>

#include "backup/backup.h"

#define WAL_DIR        "log"
#define WAL_LEASE_NAME "log/LEASE"
#define WAL_NAME_MAX   160
#define WAL_EPOCH_MAX  10000000000ull /* epochs are 10 digits in names: a lease's is below this */

struct wal_entry {
    char name[WAL_NAME_MAX]; /* object name under <database>/log/: "<incarnation>/<...>.jvl" */
    int64_t incarnation;
    uint64_t lsn_from, lsn_to;
    int64_t first_time_ns, last_time_ns;
    uint64_t epoch;
    int64_t size; /* stored bytes, -1 unknown */
};

/* Log objects of one database (all incarnations), sorted by (incarnation, lsn_from, epoch desc,
 * lsn_to desc); malloc'd (free()).  Names that do not parse are ignored.  A repository or database
 * without a log gives n = 0. */
int wal_list(jvdb_repo *r, const char *db, struct wal_entry **out, size_t *n);
/* wal_list of only the objects whose name (under log/) sorts after `after`, e.g. "<incarnation>/
 * <lsn:020>": names are fixed-width within an incarnation, so that is every object starting at or
 * above that LSN, then those of later incarnations (same number of digits).  A poll's cost. */
int wal_list_after(jvdb_repo *r, const char *db, const char *after, struct wal_entry **out, size_t *n);
/* The contiguous path from base_lsn (a backup's lsn_to) in one incarnation: out[] indexes into ents
 * (sorted as wal_list sorts them), following highest-epoch objects; stops at the first gap.  The
 * first object starts at base_lsn or, when none does, is the one that spans it (lsn_from < base_lsn
 * < lsn_to: the reader skips records at or below base_lsn); every next one starts where the
 * previous ends; where several do, the highest epoch (then the longest) is taken.  An object whose
 * epoch is lower than that of an object starting at or before it is fenced and never taken.
 * *idx is malloc'd (NULL when k = 0). */
int wal_path(const struct wal_entry *ents, size_t n, int64_t incarnation, uint64_t base_lsn, size_t **idx, size_t *k);
/* Reads one object, verified completely before fn sees a record (zstd checksum, header fields
 * against the entry, every record rec_check + archive_check_record, LSN order and range, the first
 * and last record's time_ns against the name, the last record ending a batch, the trailer), then
 * calls fn with whole records in LSN order. */
int wal_read(jvdb_repo *r, const char *db, const struct wal_entry *e, uint32_t dim, jvdb_metric metric,
             archive_chunk_fn fn, void *arg);

/* "<incarnation>/<lsn_from:020>-...-<epoch:010>.jvl" / its parse (0 when it is one). */
void wal_name(char out[WAL_NAME_MAX], int64_t incarnation, uint64_t lsn_from, uint64_t lsn_to, int64_t first_ns,
              int64_t last_ns, uint64_t epoch);
int wal_parse_name(const char *name, struct wal_entry *e);

/* ------------------------------------------------------------------ the fencing lease */

struct wal_lease {
    char owner[128]; /* "<hostname>:<pid>:<16 hex random>" */
    uint64_t epoch;
    int64_t renewed_ns; /* 0: released */
};
/* JVDB_ENOTFOUND when the database has no lease; JVDB_ECORRUPT when it is not a lease. */
int wal_lease_read(jvdb_repo *r, const char *db, struct wal_lease *out);
/* Writes the lease whole (one atomic object write). */
int wal_lease_write(jvdb_repo *r, const char *db, const struct wal_lease *l);
/* Takes the lease of `db` for `owner` with the next epoch: JVDB_EBUSY when another owner renewed it less than
 * lease_ns ago (unless `force`), or when another taker claimed that epoch at the same time ("fenced: ...").
 * Each epoch is first claimed in the repository (log/EPOCH-<epoch:010>, created exclusively; on a store
 * without exclusive create, log/EPOCH-<epoch:010>.<claimed_ns>-<random>, held only by a claim listed alone), so
 * no two owners ever hold one epoch; an epoch claimed more than lease_ns ago by a taker that never wrote the
 * lease (or any claimed one, with `force`) is skipped.  The lease is then written with renewed_ns 0 when
 * `release`, else now.  *prev: the lease read first (zeroed when there was none).  Crash points
 * "ship.after_claim", "ship.after_lease". */
int wal_lease_take(jvdb_repo *r, const char *db, const char *owner, int64_t lease_ns, int force, int release,
                   struct wal_lease *prev, uint64_t *epoch);
/* A fresh owner name for this process: "<hostname>:<pid>:<16 hex random>". */
void wal_owner_name(char out[128]);

/* ------------------------------------------------------------------ writing (the shipper) */

/* A log object's bytes built in memory (one object is one atomic write); kept by the shipper from one
 * shipment to the next so that its pages are not faulted in afresh every time. */
struct wal_buf {
    char *p;
    size_t len, cap;
};

/* Builds the log object holding recs[0..n) (verbatim, ascending LSN, whole batches, lsn_from < first LSN,
 * last LSN = lsn_to) into buf (replacing what it held) and names it in *out.  Touches no repository, so the
 * shipper runs it inside the read section straight from the mapped records. */
int wal_encode(const char *db, int64_t incarnation, uint64_t epoch, uint64_t lsn_from, uint32_t dim, jvdb_metric metric,
               int level, const void *const *recs, size_t n, struct wal_buf *buf, struct wal_entry *out);
/* Writes an object wal_encode built, atomically.  Crash points "ship.before_object", "ship.after_object". */
int wal_put(jvdb_repo *r, const char *db, const struct wal_buf *buf, const struct wal_entry *e);
/* wal_encode then wal_put. */
int wal_write(jvdb_repo *r, const char *db, int64_t incarnation, uint64_t epoch, uint64_t lsn_from, uint32_t dim,
              jvdb_metric metric, int level, const void *const *recs, size_t n, struct wal_entry *out);

/* The lsn_to of every restorable backup of `db` in incarnation `inc`, ascending (malloc'd). */
int backup_bases(jvdb_repo *repo, const char *db, int64_t inc, uint64_t **lsns, size_t *n);

#endif

#ifndef JVDB_STORE_DB_H
#define JVDB_STORE_DB_H
/*
 * What the store offers the layers above it (search, compact, backup) about one database.  The
 * object itself (struct jvdb_db) is opaque outside src/store (store/db_impl.h): those layers go
 * through the functions below, so the locking rules live in one place.
 *
 * Readers take no lock: inside a read section (store/readpath.h) they read the published segment
 * list, the keydir and mapped records as of their snapshot LSN, db_snapshot_lsn(), taken when they
 * start.  Nothing they can reach is freed or unmapped before they leave.  Writers serialise among
 * themselves only (store/db_impl.h has the lock order).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "jvdb.h"
#include "store/keydir.h"
#include "store/readpath.h"
#include "store/manifest.h"
#include "store/segment.h"

/* How db_load treats the files (docs/FORMAT.md, "Recovery at open"):
 *   WRITE     the normal open: orphans are removed and a torn tail is cut (its bytes kept aside in
 *             <seg>.torn-<offset>); damage anywhere else refuses the open.
 *   READONLY  nothing on disk changes: orphans stay, a torn tail is only ignored in memory, and
 *             every write, seal and MANIFEST change fails with JVDB_EREADONLY.
 *   SALVAGE   for repair: read-only too, but a bad record never refuses the open; it is recorded in
 *             db->bad and the scan resumes at the next record that verifies. */
enum db_mode { DB_MODE_WRITE = 0, DB_MODE_READONLY, DB_MODE_SALVAGE };

/* An immutable list of the segments (ascending by number), replaced whole under write_mu. */
struct db_seglist {
    size_t n;
    struct segment *active;
    struct segment *segs[];
};

/* One write of a batch, already validated (the vector is stored as given, for every metric). */
struct db_op {
    unsigned kind; /* REC_KIND_PUT or REC_KIND_DELETE */
    const char *id;
    size_t id_len;
    const float *vector;
    const char *meta;
    size_t meta_len;
    uint64_t if_lsn; /* DB_WRITE_BULK: apply only if the id's newest LSN is this (0 = any) */
};

/* Appends ops as one all-or-nothing batch and waits for durability as the sync mode says.
 * Deletes of ids that are not live fail with JVDB_ENOTFOUND (checked under the writer lock). */
int db_write(jvdb_db *db, const struct db_op *ops, size_t n, uint64_t *last_lsn);
/* The same with flags.  DB_WRITE_BULK (the ids of ops are distinct): a delete of an id that is not
 * live, and an op whose if_lsn is not the id's newest LSN, are dropped from the batch instead of
 * failing it; *applied (optional) receives how many ops were written (0: nothing written, JVDB_OK). */
#define DB_WRITE_BULK 1u
int db_write_ops(jvdb_db *db, const struct db_op *ops, size_t n, unsigned flags, uint64_t *last_lsn, size_t *applied);

/* Appends records that were written elsewhere (a backup being restored), keeping their LSNs and
 * contents: each is validated (rec_check against this database's dimension), its batch flag is
 * rewritten so the whole call is one all-or-nothing batch, and the LSN counter moves past the
 * largest.  `recs` is a sequence of whole records, 64-byte aligned in total. */
int db_append_raw(jvdb_db *db, const void *recs, size_t len);
/* The same without the fdatasync each call makes: for a database built out of sight
 * (env_build_begin), which is synced once before env_build_publish makes it visible. */
int db_append_raw_unsynced(jvdb_db *db, const void *recs, size_t len);
/* The same for records the caller already verified with rec_check (a restore's archive reader does,
 * checksums included): appended from `recs` itself, which gets the batch flags (resealing only a
 * record whose flags change), without a copy or a second check. */
int db_append_raw_checked_unsynced(jvdb_db *db, void *recs, size_t len);

/* Starts the kernel's write-back of the active segment's bytes appended since (*seg_no, *from) and
 * moves that mark to the end (a restore's build is written with sync off and made durable by one
 * fdatasync at the end; kicking as it goes overlaps the writing with decoding).  The segment is read
 * under write_mu; the kick runs outside it. */
void db_start_writeback(jvdb_db *db, uint64_t *seg_no, uint64_t *from);

/* Opens (recovers) a database directory in `mode` / closes it. */
int db_load(jvdb_env *env, const char *dir, enum db_mode mode, jvdb_db **out);
/* JVDB_EREADONLY with a message when db was not opened for writing (callers that change files). */
int db_check_writable(const jvdb_db *db);
/* Copies bytes [off, off+len) of s durably to "<segment>.<kind>-<off>" (kind "torn" or "bad"; a
 * file of that name with the same bytes is reused, one with other bytes gets a ".<k>" suffix) and
 * returns the malloc'd path.  Such files are never treated as orphans. */
int db_set_aside(const struct segment *s, uint64_t off, uint64_t len, const char *kind, char **saved);
void db_close(jvdb_db *db);
/* Creates a new database directory atomically as <databases>/<dirname>, for database `name`. */
int db_create_dir(const char *databases_dir, const char *dirname, const char *name, const jvdb_db_options *opts);

/* The work of jvdb_db_repair on one database directory nobody has open (repair.c). */
int db_repair_dir(jvdb_env *env, const char *dir, jvdb_repair_fn on_drop, void *arg, jvdb_repair_result *out);

/* Background jobs (the compactor) hold a database through these, so that a drop or a replace
 * waits for them to let go instead of freeing the handle under them.  Acquire fails with
 * JVDB_ENOTFOUND for a database being dropped. */
int env_db_acquire(jvdb_env *env, const char *name, jvdb_db **out);
void env_db_release(jvdb_env *env, jvdb_db *db);

/* Building a database out of sight (restore): it lives in <databases>/.build-<name>-<pid>-<n>
 * (deleted at open if left over) until env_build_publish makes it `name` with one rename, or, when
 * `replace` is set and `name` exists, one renameat2(RENAME_EXCHANGE) that swaps the two directories
 * atomically; the old one is then removed.  The build takes no periodic keydir checkpoint;
 * publish syncs it, writes one, and keeps the built handle as the published database's (*out),
 * without closing and reopening it; abort closes it.  Handles to a replaced database become invalid. */
int env_build_begin(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **built);
int env_build_publish(jvdb_env *env, jvdb_db *built, const char *name, int replace, jvdb_db **out);
void env_build_abort(jvdb_env *env, jvdb_db *built);
/* ---- readers (inside a read section, store/readpath.h) */
/* The LSN to read at: every batch up to it is published (and, with sync=always, durable). */
uint64_t db_snapshot_lsn(const jvdb_db *db);
/* The published segment list; valid until the read section ends. */
const struct db_seglist *db_segments(const jvdb_db *db);
/* The keydir, for keydir_find / keydir_slots / keydir_visible (never its writer functions). */
const struct keydir *db_keydir(const jvdb_db *db);
/* The backup log (src/backup/wal.c, logscan.c): calls fn for every record, superseded or not, with
 * after < LSN <= upto in the published segments, in file order (segments ascending by number; a
 * sealed segment whose max_lsn is at or below `after` is skipped unread).  Compaction copies
 * records with their old LSNs, so callers that need LSN order sort.  The records stay valid until
 * the read section ends; fn returning non-zero stops the walk (that value is returned). */
struct rec_header;
typedef int (*db_rec_fn)(void *arg, const struct rec_header *rec);
int db_records_after(const jvdb_db *db, uint64_t after, uint64_t upto, db_rec_fn fn, void *arg);

/* ---- settings and state for the layers above (each call takes what lock it needs) */
uint64_t db_segment_max(jvdb_db *db);
uint64_t db_backup_horizon(jvdb_db *db);
int64_t db_created_ns(const jvdb_db *db);
/* When it was last compacted (its creation time if never). */
int64_t db_last_compaction_ns(jvdb_db *db);
/* A deep copy of MANIFEST extra `key` (the whole extra object when key is NULL; an empty object
 * if there is none), or NULL when the key is absent.  The caller owns the reference.  It and
 * db_backup_horizon read the MANIFEST on disk (never a change still being written). */
json_t *db_manifest_extra(jvdb_db *db, const char *key);
/* One compaction per database: claim returns 0 when one is running already. */
int db_compaction_claim(jvdb_db *db);
void db_compaction_release(jvdb_db *db);
int db_is_dropping(const jvdb_db *db);
/* The database's directory (fixed at load). */
const char *db_dir(const jvdb_db *db);
/* After the directory of a database no thread but the caller uses was renamed to `dir` (a build
 * being published): its handle, and each segment's path (a retired segment is unlinked by it),
 * follow.  Changes nothing when out of memory. */
int db_move_dir(jvdb_db *db, const char *dir);
/* Whether its files may be changed now: opened for writing, not failed, not being dropped
 * (a check without an error message, for layers that only skip optional files). */
int db_writable(const jvdb_db *db);
/* Takes / releases the writer lock (write_mu) around a short in-memory step that must see no write
 * meanwhile and cannot be one call (db_as_writer); never across I/O. */
void db_writer_enter(jvdb_db *db);
void db_writer_exit(jvdb_db *db);
/* Per-database state of an upper layer (the search index), freed by ext_free when the database
 * closes.  db_ext is an acquire load; db_set_ext publishes (release). */
void *db_ext(const jvdb_db *db);
void db_set_ext(jvdb_db *db, void *ext, void (*ext_free)(void *ext));
/* The upper layer's hold (set before db_set_ext publishes ext): hold 1 returns once no file write
 * of it is under way and none starts while the database is `dropping` (a drop or replace is about to
 * rename its directory); hold 0 lets them go on after a rename that failed.  db_ext_hold calls it
 * when ext is attached. */
void db_set_ext_hold(jvdb_db *db, void (*ext_hold)(void *ext, int hold));
void db_ext_hold(jvdb_db *db, int hold);
/* Runs fn(ctx) as the writer (write_mu held): keydir hooks see no write meanwhile. */
int db_as_writer(jvdb_db *db, int (*fn)(void *ctx), void *ctx);
/* Sets the keydir's slot hook (NULL hook: removes it if ctx is the current one); write_mu held
 * by the caller through db_as_writer, or taken here when `locked` is 0. */
void db_set_slot_hook(jvdb_db *db, kd_slot_hook hook, void *ctx, int locked);
/* Restore's last step on a database being built: the LSN counter moves to at least lsn_to and
 * `extra` (may be NULL) is merged into the MANIFEST extras, persisted. */
int db_restore_finish(jvdb_db *built, uint64_t lsn_to, json_t *extra);
/* Publishes segs/active as the readers' segment list (write_mu held); the old one is deferred. */
int db_publish_segs(jvdb_db *db);
/* Runs the deferred work that is due (trims of superseded versions, frees); write_mu held. */
void db_gc_locked(jvdb_db *db);
/* Waits (up to timeout_ms) until every version superseded at or below the visible LSN has been
 * unlinked, so that tombstones in sealed segments stand alone (compaction, before listing). */
void db_settle(jvdb_db *db, unsigned timeout_ms);
/* Makes everything appended so far durable. */
int db_sync_all(jvdb_db *db);
/* Seals the active segment and starts a new one; write_mu must be held. */
int db_roll_locked(jvdb_db *db, uint64_t min_reserve);
/* Writes db->m after setting lsn_floor; write_mu must be held (a seal: db_manifest_commit_locked). */
int db_store_manifest_locked(jvdb_db *db);
/* Writes `next` as the MANIFEST with write_mu held, for the commit points whose in-memory change may
 * be used only once the file says so (seal, compaction's swap, the format mark): waits for the
 * MANIFEST write in progress, if any, then writes (never skipped).  Every other change goes through
 * db_set_manifest_extra / db_set_backup_horizon / jvdb_db_set_sync, whose I/O no writer waits for. */
int db_manifest_commit_locked(jvdb_db *db, struct manifest *next);

int db_name_valid(const char *name);
/* Sets (value non-NULL, reference stolen) or removes one key of the MANIFEST that upper layers own
 * ("compaction", "index"), persisting it; on failure the old value stays.  The file is written
 * outside write_mu: writers never wait for it; concurrent changes are ordered, the newest wins. */
int db_set_manifest_extra(jvdb_db *db, const char *key, json_t *value);

/* Continuous backup (src/backup/wal.c) records in MANIFEST extra "log_shipping" {"incarnation",
 * "shipped_lsn"} the LSN up to which the repository's log holds every write; compaction takes no
 * sealed segment holding a record above it.  db_ship_pin: that LSN for this incarnation, or
 * UINT64_MAX when nothing is shipped (logscan.c). */
#define DB_SHIP_PIN_KEY "log_shipping"
uint64_t db_ship_pin(jvdb_db *db);

/* Persists the backup horizon (LSN of the newest full backup; compaction keeps tombstones above). */
int db_set_backup_horizon(jvdb_db *db, uint64_t lsn);
#endif

#ifndef JVDB_STORE_DB_H
#define JVDB_STORE_DB_H
/*
 * The database object shared by the store and the layers above it (search, compact, backup).
 *
 * Locking, outermost first:
 *   write_mu  one writer at a time: LSN assignment, appends, seals, MANIFEST changes.
 *   lock      rwlock over the keydir, the segment list and segment sizes.  Readers hold it shared
 *             while they touch mapped records; writers hold it exclusively only to apply records
 *             that are already in the file (a pointer swap, not I/O).
 *   sync_mu   group-commit state.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "jvdb.h"
#include "store/keydir.h"
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

/* A byte range of a segment that recovery could not use (SALVAGE mode). */
struct db_bad {
    struct segment *seg;
    uint64_t off, len;
    char why[96];
};

struct jvdb_db {
    jvdb_env *env;
    char *dir;
    struct manifest m;                  /* guarded by write_mu, except: name, dim and metric never
                                         * change after open and are read without a lock (so never
                                         * assign the whole struct); sync and sync_interval_ms are
                                         * also written with atomics for the flusher */
    pthread_mutex_t write_mu;
    pthread_rwlock_t lock;
    struct keydir kd;
    struct segment **segs;              /* every segment, ascending by number */
    size_t nsegs, segs_cap;
    struct segment *active;             /* the one appended to (write_mu to change, lock to read) */
    uint64_t last_lsn;                  /* guarded by write_mu; read with relaxed atomics */

    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool sync_running;
    uint64_t synced_seg, synced_off;    /* everything up to here is on stable storage */

    pthread_t flusher;                  /* sync=interval background fdatasync */
    bool flusher_started;
    bool stopping;                      /* guarded by sync_mu */

    atomic_bool compacting;             /* one compaction per database at a time (src/compact) */
    int env_refs;                       /* env_db_acquire holders (the env's mutex guards it) */
    atomic_bool dropping;               /* being dropped or replaced: background jobs keep off */
    atomic_bool failed;                 /* an I/O failure left the file state unknown: no more writes */
    char failed_msg[512];
    enum db_mode mode;                  /* fixed at load */
    struct db_bad *bad;                 /* SALVAGE: what the scan skipped, in file order */
    size_t nbad;

    /* Upper layers attach per-database state here (the search index), freed through the hook. */
    void *ext;
    void (*ext_free)(void *ext);
};

/* One write of a batch, already validated (the vector is stored as given, for every metric). */
struct db_op {
    unsigned kind;                      /* REC_KIND_PUT or REC_KIND_DELETE */
    const char *id;
    size_t id_len;
    const float *vector;
    const char *meta;
    size_t meta_len;
};

/* Appends ops as one all-or-nothing batch and waits for durability as the sync mode says.
 * Deletes of ids that are not live fail with JVDB_ENOTFOUND (checked under the writer lock). */
int db_write(jvdb_db *db, const struct db_op *ops, size_t n, uint64_t *last_lsn);

/* Appends records that were written elsewhere (a backup being restored), keeping their LSNs and
 * contents: each is validated (rec_check against this database's dimension), its batch flag is
 * rewritten so the whole call is one all-or-nothing batch, and the LSN counter moves past the
 * largest.  `recs` is a sequence of whole records, 64-byte aligned in total. */
int db_append_raw(jvdb_db *db, const void *recs, size_t len);

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
 * atomically; the old one is then removed.  The built handle is closed by publish and abort; the
 * published database is opened anew (*out). Handles to a replaced database become invalid. */
int env_build_begin(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **built);
int env_build_publish(jvdb_env *env, jvdb_db *built, const char *name, int replace, jvdb_db **out);
void env_build_abort(jvdb_env *env, jvdb_db *built);
/* Makes everything appended so far durable. */
int db_sync_all(jvdb_db *db);
/* Seals the active segment and starts a new one; write_mu must be held. */
int db_roll_locked(jvdb_db *db, uint64_t min_reserve);
/* Writes db->m after setting lsn_floor; write_mu must be held. */
int db_store_manifest_locked(jvdb_db *db);

int db_name_valid(const char *name);
/* Sets (value non-NULL, reference stolen) or removes one key of the MANIFEST that upper layers own
 * ("compaction", "index"), persisting it; on failure the old value stays. */
int db_set_manifest_extra(jvdb_db *db, const char *key, json_t *value);

/* Persists the backup horizon (LSN of the newest full backup; compaction keeps tombstones above). */
int db_set_backup_horizon(jvdb_db *db, uint64_t lsn);
#endif

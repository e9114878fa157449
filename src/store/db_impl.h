#ifndef JVDB_STORE_DB_IMPL_H
#define JVDB_STORE_DB_IMPL_H
/*
 * struct jvdb_db: private to src/store.  Layers above use store/db.h.
 *
 * Locking, outermost first:
 *   write_mu  one writer at a time: LSN assignment, appends, seals, changes of `m` (in memory),
 *             applying records to the keydir, publishing segment lists, running deferred frees (gc).
 *   manifest_mu  serialises MANIFEST file replacements and is held across their I/O, so a writer
 *             never takes it on its path except for a seal (db.c "MANIFEST writes").
 *   mview_mu  the view of the newest MANIFEST on disk that layers above read (a leaf).
 *   pub_mu    orders publishers of `visible` (a leaf).
 *   sync_mu   group-commit state.
 * Readers take no lock (store/readpath.h).  In debug builds db_writer_held() asserts ownership.
 */
#include <assert.h>

#include "store/db.h"

/* A byte range of a segment that recovery could not use (SALVAGE mode). */
struct db_bad {
    struct segment *seg;
    uint64_t off, len;
    char why[96];
};

struct jvdb_db {
    jvdb_env *env;
    char *dir;
    struct manifest m; /* guarded by write_mu, except: name, dim and metric never
                                         * change after open and are read without a lock (so never
                                         * assign the whole struct); sync and sync_interval_ms are
                                         * also written with atomics for the flusher */
    pthread_mutex_t write_mu;
    unsigned long write_owner; /* debug builds: pthread_self() of write_mu's holder, else 0 */
    unsigned long write_locks; /* debug builds: times write_mu was taken (tests count them) */
    /* MANIFEST writes (db.c "MANIFEST writes"): a copy of `m` taken at generation m_gen is the
     * whole state as of then, so the newest generation on disk holds every older change. */
    pthread_mutex_t manifest_mu;
    uint64_t m_gen;         /* write_mu: bumped at every change of m */
    uint64_t m_durable_gen; /* manifest_mu: the generation of the MANIFEST on disk */
    uint64_t m_undo_gen;    /* write_mu + manifest_mu: copies older than this may hold an undone change */
    pthread_mutex_t mview_mu;
    json_t *mview_extra;    /* mview_mu: extras of the MANIFEST on disk (replaced whole, never changed) */
    uint64_t mview_horizon; /* mview_mu: its backup horizon */
    struct keydir kd;
    struct rp_domain gc;   /* deferred frees (write_mu) */
    struct segment **segs; /* write_mu: every segment, ascending by number */
    size_t nsegs, segs_cap;
    struct segment *active;  /* write_mu: the one appended to */
    struct db_seglist *segl; /* atomic: what readers see of segs/active */
    uint64_t last_lsn;       /* guarded by write_mu; read with relaxed atomics */
    int64_t last_stamp_ns;   /* write_mu: time_ns of the newest batch (a new one is never earlier) */
    uint64_t visible;        /* atomic: readers see records up to this LSN (see db.c) */
    uint64_t visible_live;   /* atomic: live vectors at `visible` (jvdb_count) */
    pthread_mutex_t pub_mu;  /* orders publishers of visible (a leaf; readers never take it) */

    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool sync_running;
    uint64_t synced_seg, synced_off; /* everything up to here is on stable storage */

    pthread_t flusher; /* sync=interval background fdatasync */
    bool flusher_started;
    bool stopping; /* guarded by sync_mu */

    atomic_bool compacting; /* one compaction per database at a time (src/compact) */
    int env_refs;           /* env_db_acquire holders (the env's mutex guards it) */
    atomic_bool dropping;   /* being dropped or replaced: background jobs keep off */
    atomic_bool failed;     /* an I/O failure left the file state unknown: no more writes */
    char failed_msg[512];
    enum db_mode mode;  /* fixed at load */
    struct db_bad *bad; /* SALVAGE: what the scan skipped, in file order */
    size_t nbad;

    struct kdckpt *kc; /* the keydir checkpoint's state (store/kdckpt.c) */

    /* Upper layers attach per-database state here (the search index), freed through the hook. */
    void *ext;
    void (*ext_free)(void *ext);
    void (*ext_hold)(void *ext, int hold); /* db_set_ext_hold */
};

/* write_mu with its owner noted, so that functions that need it can assert they have it (debug
 * builds; the owner is an atomic so that a failed check is not itself a data race). */
static inline void db_write_lock(jvdb_db *db)
{
    pthread_mutex_lock(&db->write_mu);
#ifndef NDEBUG
    __atomic_store_n(&db->write_owner, (unsigned long)pthread_self(), __ATOMIC_RELAXED);
    __atomic_store_n(&db->write_locks, db->write_locks + 1, __ATOMIC_RELAXED);
#endif
}
static inline void db_write_unlock(jvdb_db *db)
{
#ifndef NDEBUG
    __atomic_store_n(&db->write_owner, 0ul, __ATOMIC_RELAXED);
#endif
    pthread_mutex_unlock(&db->write_mu);
}
static inline int db_writer_held(const jvdb_db *db)
{
#ifndef NDEBUG
    return __atomic_load_n(&db->write_owner, __ATOMIC_RELAXED) == (unsigned long)pthread_self();
#else
    (void)db;
    return 1;
#endif
}
#endif

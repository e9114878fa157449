/*
 * ship.c — continuous backup in the server (`serve --backup-repo R --backup-continuous D`): one
 * thread ships the log of every database to R every D (jvdb_backup_ship, src/backup/wal.c), keeps
 * each database's lag for /metrics and the stats, and prunes by time (--backup-retention).
 *
 * Writers never wait for it: a shipment reads the records inside a read section and compresses them
 * into the log object there, before any repository I/O, and takes no database lock.  When R is
 * unreachable the shipment fails, writes go on, the backlog stays in the database (compaction keeps
 * it: the MANIFEST's shipped LSN) and is shipped when R answers again; past --backup-backlog-bytes
 * the gap is given up (logged at error) and covered by an incremental backup when R is back.  Retention: by time
 * (--backup-retention), and with retention by count the log from before the oldest backup left.
 * Log folding (--backup-log-fold-bytes / --backup-log-fold-objects): once the log after the newest
 * backup passes either, the shipper takes an incremental backup (the chain's usual kind, read from
 * the segments like any backup: writers never wait), so restore --latest applies only the log after
 * it.  The log itself goes on unbroken (the next object starts where the last one ended and spans the
 * new backup), so every point stays restorable from older backups too; the objects the new backup
 * covers go with retention by time once they are older than the window.
 * Each database's shipper holds the fencing lease <R>/<db>/log/LEASE (taken at the first shipment,
 * re-checked before each, renewed every third of --backup-lease, released at a clean stop); one that
 * finds another owner there stops shipping that database, says so at error level and shows
 * jvdb_backup_ship_fenced 1.
 *
 * The repository lock (backup_repo_lock, never waited for: busy only delays that step to the next tick)
 * is taken only where shipping changes the chain: a backup the shipment makes (the first of an
 * incarnation, a re-base, a fold), a log starting on a bare backup until its first object lands, and
 * retention.  Plain log objects need no lock -- their names are unique per LSN range and epoch, and
 * nothing else writes or deletes them but retention -- so a stalled or failing repository never makes a
 * backup delete or verify answer REPOSITORY_BUSY.  The figures are guarded by `mu`, never held across
 * I/O; the shippers and the repository handle belong to the thread.
 */
#include "server/srv.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* How much the shipping thread is niced below the server's writers. */
#define SHIP_NICE               5
/* Retention runs at most this often (it lists the repository). */
#define SHIP_RETENTION_EVERY_NS (60ll * 1000000000ll)

struct ship_db {
    char name[JVDB_MAX_NAME_LEN + 1];
    jvdb_shipper *shipper;   /* the thread's */
    struct ship_figures fig; /* guarded by mu */
    int failing;             /* the last shipment failed (logged once) */
    int seen;                /* listed at this tick */
    int64_t retained_ns;     /* last retention pass */
    /* Log folding (the thread's): the log after the newest backup as last counted. */
    int fold_known;                     /* the figures below are counted (else: read the repository's window) */
    int64_t fold_inc;                   /* the incarnation they are about */
    char fold_base[JVDB_BACKUP_ID_MAX]; /* the newest backup, where restore --latest starts */
    uint64_t fold_bytes;                /* record bytes shipped after it by this server (a restart counts from 0) */
    uint64_t fold_objects;              /* log objects after it */
    int64_t fold_retry_ns;              /* after a failed fold: not again before this */
};

struct ship_state {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    int started;
    struct ship_db *dbs; /* the array is guarded by mu; shipper fields belong to the thread */
    size_t n, cap;
    jvdb_repo *repo; /* the thread's */
};

/* The entry of database `name`, appended when new; NULL when out of memory.  Caller holds mu. */
static struct ship_db *ship_entry(struct ship_state *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->dbs[i].name, name)) return &t->dbs[i];
    struct ship_db *nv = grow_array(t->dbs, &t->cap, t->n + 1, sizeof *nv, 8);
    if (!nv) return NULL;
    t->dbs = nv;
    struct ship_db *e = &t->dbs[t->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* Retention for one database: log objects and backups older than the window go, except what a
 * restore to any point inside it needs (the newest backup from before it, its chain, and the log
 * after it).  With retention by count (--backup-keep*), which prunes backups after scheduled ones,
 * the log before the oldest backup left goes too: no restore can start before it. */
static void ship_retain(struct server *s, struct ship_state *t, const char *name)
{
    int64_t window = s->cfg.backup_retention_ms ? clock_wall_ns() - (int64_t)s->cfg.backup_retention_ms * 1000000 : 0;
    if (s->cfg.backup_keep || s->cfg.backup_keep_daily || s->cfg.backup_keep_weekly) {
        jvdb_backup_info *v = NULL;
        size_t n = 0;
        if (jvdb_backup_list(t->repo, name, &v, &n) == JVDB_OK)
            for (size_t i = 0; i < n; i++)
                if (v[i].restorable) {
                    if (v[i].created_ns > window) window = v[i].created_ns;
                    break;
                }
        jvdb_free(v);
    }
    if (!window) return;
    jvdb_retention_result rr;
    int rc = jvdb_backup_retain(t->repo, name, window, 0, &rr);
    if (rc != JVDB_OK) {
        log_warn("retention of the backups of '%s' failed: %s", name, jvdb_errmsg());
        return;
    }
    if (rr.log_objects_deleted || rr.backups_deleted)
        log_info("retention of '%s': %" PRIu64 " log objects (%" PRIu64 " covered by a newer backup) and %" PRIu64
                 " backups pruned",
                 name, rr.log_objects_deleted, rr.log_objects_covered, rr.backups_deleted);
}

struct ship_taken {
    struct server *s;
};

/* jvdb_ship_options.repo_lock: the repository lock, without waiting (0 when taken). */
static int ship_repo_lock(void *arg) { return backup_repo_lock(((struct ship_taken *)arg)->s, 0); }

/* jvdb_ship_options.repo_unlock. */
static void ship_repo_unlock(void *arg) { backup_repo_unlock(((struct ship_taken *)arg)->s); }

/* jvdb_ship_options.on_backup: the shipment's own backups count like the others (metrics, the
 * scheduler's clock). */
static void ship_on_backup(void *arg, const jvdb_backup_info *info)
{
    struct ship_taken *tk = arg;
    backup_note_taken(tk->s, info, "continuous backup");
}

/* Counts the log after the newest backup of `name` from the repository's restorable window: the
 * objects a restore of the latest point applies.  0, or -1 when there is no window (yet). */
static int ship_fold_count(struct ship_state *t, const char *name, struct ship_db *e)
{
    jvdb_restore_window w;
    if (jvdb_backup_window(t->repo, name, &w) != JVDB_OK) {
        err_clear();
        e->fold_known = 0;
        return -1;
    }
    if (!e->fold_known || strcmp(e->fold_base, w.latest_backup) || e->fold_inc != w.incarnation) e->fold_bytes = 0;
    e->fold_known = 1;
    e->fold_inc = w.incarnation;
    snprintf(e->fold_base, sizeof e->fold_base, "%s", w.latest_backup);
    e->fold_objects = w.log_objects;
    return 0;
}

/* After a shipment: an incremental backup of `db` when the log after its newest backup passed
 * --backup-log-fold-bytes or --backup-log-fold-objects (the backup under the repository lock). */
static void ship_fold(struct server *s, struct ship_state *t, const char *name, jvdb_db *db, const jvdb_ship_result *r,
                      const char *description)
{
    uint64_t max_bytes = s->cfg.backup_fold_bytes, max_objects = s->cfg.backup_fold_objects;
    if (!max_bytes && !max_objects) return;
    pthread_mutex_lock(&t->mu);
    struct ship_db *e = ship_entry(t, name);
    pthread_mutex_unlock(&t->mu);
    if (!e) return;
    /* The shipment made a backup itself (note), or nothing is counted yet: read the repository. */
    int counted = !e->fold_known || r->note[0];
    if (counted && ship_fold_count(t, name, e)) return;
    e->fold_bytes += r->bytes;                   /* a backup the shipment made came before its objects */
    if (!counted) e->fold_objects += r->objects; /* (else the repository's count holds them) */
    int by_bytes = max_bytes && e->fold_bytes >= max_bytes;
    int by_objects = max_objects && e->fold_objects >= max_objects;
    if ((!by_bytes && !by_objects) || clock_wall_ns() < e->fold_retry_ns) return;
    /* Another backup (scheduled, API, another process) may have been made since: count again. */
    uint64_t bytes = e->fold_bytes;
    if (ship_fold_count(t, name, e)) return;
    if (!e->fold_bytes) e->fold_bytes = bytes; /* same base: the bytes stay ours */
    by_bytes = max_bytes && e->fold_bytes >= max_bytes;
    by_objects = max_objects && e->fold_objects >= max_objects;
    if (!by_bytes && !by_objects) return;
    char why[256];
    if (by_bytes)
        snprintf(why, sizeof why,
                 "%" PRIu64 " bytes of log records after backup %s (--backup-log-fold-bytes %" PRIu64 ")",
                 e->fold_bytes, e->fold_base, max_bytes);
    else
        snprintf(why, sizeof why, "%" PRIu64 " log objects after backup %s (--backup-log-fold-objects %" PRIu64 ")",
                 e->fold_objects, e->fold_base, max_objects);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    bo.type = JVDB_BACKUP_INCREMENTAL;
    bo.database_description = description;
    jvdb_backup_info info;
    if (backup_repo_lock(s, 0)) return; /* a backup, prune or delete under way: the next shipment folds */
    int64_t t0 = clock_mono_ns();
    int rc = jvdb_backup_create(db, t->repo, &bo, &info);
    backup_repo_unlock(s);
    if (rc != JVDB_OK) {
        /* Shipping goes on; the fold is tried again in a minute, not at every tick. */
        backup_note_failed(s, name, JVDB_BACKUP_INCREMENTAL, (double)(clock_mono_ns() - t0) / 1e9);
        log_warn("continuous backup of '%s': folding the log into an incremental backup failed (%s): %s; retrying "
                 "in %d s",
                 name, why, jvdb_errmsg(), (int)(SHIP_RETENTION_EVERY_NS / 1000000000));
        e->fold_known = 0;
        e->fold_retry_ns = clock_wall_ns() + SHIP_RETENTION_EVERY_NS;
        return;
    }
    log_info("continuous backup of '%s': %s: folded into incremental backup %s (LSN %" PRIu64
             "); restore --latest starts from it",
             name, why, info.id, info.lsn_to);
    backup_note_taken(s, &info, "log fold");
    snprintf(e->fold_base, sizeof e->fold_base, "%s", info.id);
    e->fold_bytes = e->fold_objects = 0;
}

/* One shipment of one database, with its figures and log lines. */
static void ship_db_once(struct server *s, struct ship_state *t, const char *name)
{
    pthread_mutex_lock(&t->mu);
    struct ship_db *e = ship_entry(t, name);
    if (e) e->seen = 1;
    jvdb_shipper *sh = e ? e->shipper : NULL;
    pthread_mutex_unlock(&t->mu);
    if (!e) return;
    if (!sh) {
        if (jvdb_shipper_new(NULL, &sh) != JVDB_OK) return;
        pthread_mutex_lock(&t->mu);
        e = ship_entry(t, name);
        if (e) e->shipper = sh;
        pthread_mutex_unlock(&t->mu);
        if (!e) {
            jvdb_shipper_free(sh, NULL, NULL);
            return;
        }
    }
    jvdb_db *db = NULL;
    if (srv_db_hold(s, name, &db) != JVDB_OK) return;
    /* A backup the shipment makes carries the description, as backup_run's do. */
    struct dbmeta dm;
    pthread_mutex_lock(&s->meta_mu);
    dbmeta_load(s, name, &dm);
    pthread_mutex_unlock(&s->meta_mu);
    struct ship_taken tk = { s };
    jvdb_ship_options o = { 0 };
    o.shipper = sh;
    o.lease_ns = (int64_t)s->cfg.backup_lease_ms * 1000000;
    o.backlog_limit = s->cfg.backup_backlog_bytes;
    o.database_description = dm.description;
    o.on_backup = ship_on_backup;
    o.on_backup_arg = &tk;
    o.repo_lock = ship_repo_lock;
    o.repo_unlock = ship_repo_unlock;
    o.repo_lock_arg = &tk;
    jvdb_ship_result r;
    int rc = jvdb_backup_ship(db, t->repo, &o, &r);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    if (rc == JVDB_OK) ship_fold(s, t, name, db, &r, dm.description);
    srv_db_unhold(s, db);
    dbmeta_free(&dm);
    int retain = 0;
    int64_t now = clock_wall_ns();
    pthread_mutex_lock(&t->mu);
    e = ship_entry(t, name);
    int was_failing = e ? e->failing : 0;
    if (e) {
        e->fig.pending_bytes = r.pending_bytes;
        e->fig.lag_s = r.lag_seconds;
        if (r.shipped_lsn) e->fig.shipped_lsn = r.shipped_lsn;
        e->fig.fenced = r.fenced;
        e->fig.overflow = r.overflow;
        if (rc == JVDB_OK) e->fig.last_ok_ns = now;
        if (!r.deferred) e->failing = rc != JVDB_OK;
        /* every minute, or twice per window (every 20 shipments by count) when that is sooner */
        int64_t every = s->cfg.backup_retention_ms ? (int64_t)s->cfg.backup_retention_ms * 500000
                                                   : (int64_t)s->cfg.backup_continuous_ms * 20000000;
        if (every > SHIP_RETENTION_EVERY_NS) every = SHIP_RETENTION_EVERY_NS;
        int rules =
            s->cfg.backup_retention_ms || s->cfg.backup_keep || s->cfg.backup_keep_daily || s->cfg.backup_keep_weekly;
        retain = rc == JVDB_OK && rules && now - e->retained_ns >= every;
    }
    pthread_mutex_unlock(&t->mu);
    /* Retention deletes backups and log objects: under the repository lock (busy: the next shipment). */
    if (retain && backup_repo_lock(s, 0) == 0) {
        ship_retain(s, t, name);
        backup_repo_unlock(s);
        pthread_mutex_lock(&t->mu);
        if ((e = ship_entry(t, name))) e->retained_ns = now;
        pthread_mutex_unlock(&t->mu);
    }
    if (r.deferred) {
        log_debug("continuous backup of '%s': %s", name, msg);
    } else if (rc != JVDB_OK && !was_failing) {
        if (r.fenced) log_error("continuous backup of '%s' is not shipping: %s", name, msg);
        else
            log_error("continuous backup of '%s' failed: %s; writes go on, %" PRIu64
                      " bytes wait to be shipped (retrying every %.3f s)",
                      name, msg, r.pending_bytes, (double)s->cfg.backup_continuous_ms / 1000);
    } else if (rc == JVDB_OK && was_failing) {
        log_info("continuous backup of '%s' resumed: shipped up to LSN %" PRIu64, name, r.shipped_lsn);
    }
    if (r.note[0]) log_info("continuous backup of '%s': %s", name, r.note);
    if (r.objects)
        log_debug("continuous backup of '%s': %u objects, %" PRIu64 " records, LSN up to %" PRIu64, name, r.objects,
                  r.records, r.shipped_lsn);
}

/* One round over every database; entries of databases that are gone are dropped (their lease
 * released). */
static void ship_tick(struct server *s, struct ship_state *t)
{
    if (!t->repo && backup_repo_open(s, &t->repo) != JVDB_OK) {
        log_warn("continuous backup: cannot open repository '%s': %s", s->cfg.backup_repo, jvdb_errmsg());
        t->repo = NULL;
        return;
    }
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++) t->dbs[i].seen = 0;
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&t->mu);
        int stop = t->stopping;
        pthread_mutex_unlock(&t->mu);
        if (stop) break;
        ship_db_once(s, t, names[i]);
    }
    jvdb_free_names(names, n);
    for (;;) {
        jvdb_shipper *gone = NULL;
        char gname[JVDB_MAX_NAME_LEN + 1];
        pthread_mutex_lock(&t->mu);
        for (size_t i = 0; i < t->n && !gone && !t->stopping; i++)
            if (!t->dbs[i].seen) {
                gone = t->dbs[i].shipper;
                snprintf(gname, sizeof gname, "%s", t->dbs[i].name);
                t->dbs[i] = t->dbs[--t->n];
                if (!gone) i--; /* nothing to release: look at the moved entry */
            }
        pthread_mutex_unlock(&t->mu);
        if (!gone) break;
        jvdb_shipper_free(gone, t->repo, gname);
    }
}

/* The thread: a round every --backup-continuous, measured from the start of the previous one. */
static void *ship_main(void *arg)
{
    struct server *s = arg;
    struct ship_state *t = s->ship;
    /* Shipping is background work: on a busy CPU the writers it copies come first (it catches up once they
     * pause; the lag shows in /metrics).  Linux nices a thread by its id. */
    id_t tid = (id_t)gettid();
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && setpriority(PRIO_PROCESS, tid, nice_now + SHIP_NICE > 19 ? 19 : nice_now + SHIP_NICE) != 0)
        log_debug("continuous backup: cannot lower the shipping thread's priority: %s", strerror(errno));
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        pthread_mutex_unlock(&t->mu);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        ship_tick(s, t);
        uint64_t ms = s->cfg.backup_continuous_ms;
        dl.tv_sec += (time_t)(ms / 1000);
        dl.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&t->mu);
        if (!t->stopping) pthread_cond_timedwait(&t->cv, &t->mu, &dl);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Shipping is off: no database keeps records back for a log nobody ships. */
static void ship_forget_all(struct server *s)
{
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    for (size_t i = 0; i < n; i++) {
        jvdb_db *db = NULL;
        if (srv_db_hold(s, names[i], &db) != JVDB_OK) continue;
        if (jvdb_backup_ship_forget(db) != JVDB_OK)
            log_warn("'%s': cannot drop the shipped LSN of continuous backup: %s", names[i], jvdb_errmsg());
        srv_db_unhold(s, db);
    }
    jvdb_free_names(names, n);
}

int ship_start(struct server *s)
{
    if (!s->cfg.backup_continuous_ms) {
        ship_forget_all(s);
        return 0;
    }
    struct ship_state *t = calloc(1, sizeof *t);
    if (!t) return -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    s->ship = t;
    if (pthread_create(&t->thread, NULL, ship_main, s) != 0) {
        log_error("cannot start the continuous backup thread");
        ship_stop(s);
        return -1;
    }
    t->started = 1;
    log_info("continuous backup: shipping every %.3f s to %s (backlog kept up to %" PRIu64
             " bytes, lease %.1f s, retention %.0f s (0 = keep all))",
             (double)s->cfg.backup_continuous_ms / 1000, s->cfg.backup_repo, s->cfg.backup_backlog_bytes,
             (double)s->cfg.backup_lease_ms / 1000, (double)s->cfg.backup_retention_ms / 1000);
    return 0;
}

void ship_stop(struct server *s)
{
    struct ship_state *t = s->ship;
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->stopping = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->started) pthread_join(t->thread, NULL);
    for (size_t i = 0; i < t->n; i++) jvdb_shipper_free(t->dbs[i].shipper, t->repo, t->dbs[i].name);
    jvdb_repo_close(t->repo);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->dbs);
    free(t);
    s->ship = NULL;
}

int ship_figures_of(struct server *s, const char *name, struct ship_figures *out)
{
    struct ship_state *t = s->ship;
    memset(out, 0, sizeof *out);
    if (!t) return 0;
    int found = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n && !found; i++)
        if (!strcmp(t->dbs[i].name, name)) {
            *out = t->dbs[i].fig;
            found = 1;
        }
    pthread_mutex_unlock(&t->mu);
    return found;
}

size_t ship_figures_all(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], struct ship_figures *out, size_t cap)
{
    struct ship_state *t = s->ship;
    if (!t) return 0;
    pthread_mutex_lock(&t->mu);
    size_t n = t->n < cap ? t->n : cap;
    for (size_t i = 0; i < n; i++) {
        memcpy(names[i], t->dbs[i].name, sizeof names[i]);
        out[i] = t->dbs[i].fig;
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}

void ship_write_stats(struct server *s, struct jw *w, const char *name)
{
    if (!s->ship) return;
    struct ship_figures f;
    ship_figures_of(s, name, &f);
    jw_kdouble(w, "backupShipLagSeconds", f.lag_s);
    jw_kuint(w, "backupShipPendingBytes", f.pending_bytes);
    jw_kuint(w, "backupShippedLsn", f.shipped_lsn);
    jw_kbool(w, "backupShipFenced", f.fenced);
    jw_kbool(w, "backupShipOverflow", f.overflow);
}

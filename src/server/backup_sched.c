/*
 * backup_sched.c — scheduled backups: a full backup of every database every F
 * (--backup-full-every), incremental ones every I in between (--backup-incremental-every), and
 * after each, pruning by the retention rules (--backup-keep, --backup-keep-daily, --backup-keep-weekly);
 * GET /v1/backups/schedule.
 *
 * The schedule is a function of the repository's state, so it is predictable: a full backup is
 * due F after the newest full backup in the repository (at once when there is none), an
 * incremental one I after the newest backup of any kind.  The state is read from the repository
 * at start-up and follows every backup the server takes, whoever asked for it (backup_run calls
 * sched_note through backup_on_taken), so an API backup counts and restarts neither repeat nor forget anything.  A due
 * backup of a database whose newest LSN is the one its last backup ended at is skipped (an empty
 * backup protects nothing) without moving the clock: it stays due and is taken at the first
 * change, so a full backup is never postponed by idleness into an ever-growing chain.  Every skip
 * is logged at info, once per due backup.  A failed backup is retried after a pause.
 *
 * Restore drills (--backup-drill-every D): every database with a backup is drilled at start-up
 * and then every D (jvdb_backup_drill: its newest backup restored into $TMPDIR and checked against
 * the live database), one at a time, holding the repository like a backup so a prune cannot delete
 * the chain under it; the last result of each is kept for /metrics and the schedule route.  A
 * failed drill is logged at error with why; one that could not run (no backup yet) is not a result.
 *
 * One thread looks at every database twice a second; the per-database state is guarded by `mu`,
 * which is never held across a backup or any I/O.
 */
#include "server/srv.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHED_TICK_MS  500
#define SCHED_RETRY_NS (5 * 1000000000LL)

struct sched_db {
    char name[JVDB_MAX_NAME_LEN + 1];
    int64_t last_full_ns;    /* creation time of the newest full backup (0 = none) */
    int64_t last_any_ns;     /* creation time of the newest backup of any type */
    int64_t next_try_ns;     /* after a failure: not before this */
    int64_t skip_logged_ns;  /* the due time whose skip was last logged */
    uint64_t last_lsn;       /* LSN the newest backup ends at */
    int known;               /* last_lsn is meaningful */
    int waiting;             /* due, but nothing changed since the newest backup */
    int64_t drill_at_ns;     /* when the last drill ran (0 = none yet) */
    jvdb_drill_report drill; /* its result, when drill_at_ns */
};

struct backup_sched {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    int started;          /* the thread exists (to join) */
    struct sched_db *dbs; /* guarded by mu */
    size_t n, cap;
};

/* Called with mu held. */
static struct sched_db *sched_entry(struct backup_sched *b, const char *name)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->dbs[i].name, name)) return &b->dbs[i];
    struct sched_db *nd = grow_array(b->dbs, &b->cap, b->n + 1, sizeof *nd, 8);
    if (!nd) return NULL;
    b->dbs = nd;
    struct sched_db *e = &b->dbs[b->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* backup_newest callback at start-up: seeds a database's state from its newest backup and newest full one. */
static void sched_learn(void *arg, const jvdb_backup_info *newest, const jvdb_backup_info *newest_full)
{
    struct backup_sched *b = arg;
    pthread_mutex_lock(&b->mu);
    struct sched_db *e = sched_entry(b, newest->database);
    if (e) {
        e->last_any_ns = newest->created_ns;
        e->last_full_ns = newest_full ? newest_full->created_ns : 0;
        e->last_lsn = newest->lsn_to;
        e->known = 1;
    }
    pthread_mutex_unlock(&b->mu);
}

void sched_note(struct server *s, const jvdb_backup_info *info)
{
    struct backup_sched *b = s->sched;
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    struct sched_db *e = sched_entry(b, info->database);
    if (e && info->created_ns >= e->last_any_ns) {
        e->last_any_ns = info->created_ns;
        if (info->type == JVDB_BACKUP_FULL) e->last_full_ns = info->created_ns; /* also a fallback to full */
        e->last_lsn = info->lsn_to;
        e->known = 1;
        e->waiting = 0;
        e->next_try_ns = 0;
    }
    pthread_mutex_unlock(&b->mu);
}

/* When each kind is next due for a database in state e (0 = that kind is not scheduled). */
static void sched_next(const struct server *s, const struct sched_db *e, int64_t *full_at, int64_t *incr_at)
{
    int64_t full = (int64_t)s->cfg.backup_full_every_ms * 1000000,
            incr = (int64_t)s->cfg.backup_incr_every_ms * 1000000;
    *full_at = !full ? 0 : e->last_full_ns ? e->last_full_ns + full : 1;
    /* Before any backup, the first one is a full one (an incremental would fall back to full). */
    *incr_at = !incr ? 0 : e->last_any_ns ? e->last_any_ns + incr : 1;
}

/* The backup due for one database now, or 0; *due_ns is when it became due. */
static jvdb_backup_type sched_due(const struct server *s, const struct sched_db *e, int64_t now, int64_t *due_ns)
{
    int64_t full_at, incr_at;
    sched_next(s, e, &full_at, &incr_at);
    if (now < e->next_try_ns) return 0;
    if (full_at && now >= full_at) {
        *due_ns = full_at;
        return JVDB_BACKUP_FULL;
    }
    if (incr_at && now >= incr_at) {
        *due_ns = incr_at;
        return JVDB_BACKUP_INCREMENTAL;
    }
    return 0;
}

/* Takes one due backup of `name` and prunes after it; skips it (still due, logged once) when nothing changed
 * since the newest backup, and after a failure waits SCHED_RETRY_NS before the next try. */
static void sched_one(struct server *s, const char *name, jvdb_backup_type type, int64_t due_ns)
{
    struct backup_sched *b = s->sched;
    jvdb_db *db;
    /* Held like a request holds it: a drop of this database waits for the backup, no other does. */
    if (srv_db_hold(s, name, &db) != JVDB_OK) return; /* dropped meanwhile */
    jvdb_stats st;
    int have = jvdb_stats_get(db, &st) == JVDB_OK;
    pthread_mutex_lock(&b->mu);
    struct sched_db *e = sched_entry(b, name);
    int idle = e && have && e->known && st.last_lsn == e->last_lsn;
    int log_it = idle && e->skip_logged_ns != due_ns;
    uint64_t lsn = e ? e->last_lsn : 0;
    if (e) {
        e->waiting = idle;
        if (log_it) e->skip_logged_ns = due_ns;
    }
    pthread_mutex_unlock(&b->mu);
    if (idle) {
        srv_db_unhold(s, db);
        if (log_it)
            log_info(
                "scheduled %s backup of '%s' skipped: nothing changed since LSN %llu (its newest backup); it stays "
                "due and is taken at the next change",
                jvdb_backup_type_name(type), name, (unsigned long long)lsn);
        return;
    }
    jvdb_backup_options o;
    jvdb_backup_options_init(&o);
    o.type = type;
    o.description = "scheduled";
    jvdb_backup_info info;
    srv_db_unhold(s, db); /* backup_run holds it again after the repository mutex (lock order in srv.h) */
    int rc = backup_run(s, name, &o, &info, "scheduler"); /* success updates the state via sched_note */
    if (rc != JVDB_OK) {
        pthread_mutex_lock(&b->mu);
        if ((e = sched_entry(b, name))) e->next_try_ns = clock_wall_ns() + SCHED_RETRY_NS;
        pthread_mutex_unlock(&b->mu);
        return;
    }
    size_t deleted;
    backup_prune(s, name, &deleted);
}

/* Whether a restore drill of this database is due now. */
static int sched_drill_due(const struct server *s, const struct sched_db *e, int64_t now)
{
    uint64_t every = s->cfg.backup_drill_every_ms;
    if (!every || !e->known || now < e->next_try_ns) return 0;
    return !e->drill_at_ns || now >= e->drill_at_ns + (int64_t)every * 1000000;
}

/* Runs one restore drill of `name` and keeps its result; logs a failure at error. */
static void sched_drill(struct server *s, const char *name)
{
    struct backup_sched *b = s->sched;
    jvdb_drill_report r;
    int rc = backup_drill_run(s, name, &r);
    int64_t now = clock_wall_ns();
    pthread_mutex_lock(&b->mu);
    struct sched_db *e = sched_entry(b, name);
    if (e && rc == JVDB_OK) {
        e->drill_at_ns = now;
        e->drill = r;
    } else if (e) {
        e->next_try_ns = now + SCHED_RETRY_NS;
    }
    pthread_mutex_unlock(&b->mu);
    if (rc != JVDB_OK) log_error("restore drill of '%s' could not run: %s", name, jvdb_errmsg());
    else if (!r.passed) log_error("restore drill of '%s' FAILED (backup %s): %s", name, r.backup_id, r.failure);
    else
        log_info("restore drill of '%s' passed: backup %s (LSN %llu) restored in %.2f s, %llu records identical, "
                 "%llu changed since",
                 name, r.backup_id, (unsigned long long)r.backup_lsn, r.restore_seconds,
                 (unsigned long long)r.checked_records, (unsigned long long)r.changed_since);
}

size_t sched_drill_results(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], int64_t *at_ns,
                           jvdb_drill_report *out, size_t cap)
{
    struct backup_sched *b = s->sched;
    if (!b) return 0;
    size_t n = 0;
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->n && n < cap; i++) {
        if (!b->dbs[i].drill_at_ns) continue;
        memcpy(names[n], b->dbs[i].name, sizeof names[n]);
        at_ns[n] = b->dbs[i].drill_at_ns;
        out[n++] = b->dbs[i].drill;
    }
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* One pass over the databases: runs each due backup, else each due drill, one at a time and with mu
 * released; stops early when the server is stopping. */
static void sched_tick(struct server *s)
{
    struct backup_sched *b = s->sched;
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&b->mu);
        int stop = b->stopping;
        struct sched_db *e = stop ? NULL : sched_entry(b, names[i]);
        int64_t due_ns = 0;
        jvdb_backup_type type = e ? sched_due(s, e, clock_wall_ns(), &due_ns) : 0;
        int drill = e && !type && sched_drill_due(s, e, clock_wall_ns());
        pthread_mutex_unlock(&b->mu);
        if (stop || !e) break;
        if (type) sched_one(s, names[i], type, due_ns);
        else if (drill) sched_drill(s, names[i]);
    }
    jvdb_free_names(names, n);
}

void route_backup_schedule(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    if (!s->cfg.backup_repo) {
        http_error(rs, 409, "NO_BACKUP_REPOSITORY",
                   "no backup repository is configured (start the server with --backup-repo DIR)");
        return;
    }
    struct backup_sched *b = s->sched;
    char **names = NULL;
    size_t n = 0;
    int rc = jvdb_db_list(s->env, &names, &n);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    int64_t now = clock_wall_ns();
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kbool(&w, "enabled", b != NULL);
    jw_key(&w, "fullEverySeconds");
    if (s->cfg.backup_full_every_ms) jw_double(&w, (double)s->cfg.backup_full_every_ms / 1000);
    else jw_null(&w);
    jw_key(&w, "incrementalEverySeconds");
    if (s->cfg.backup_incr_every_ms) jw_double(&w, (double)s->cfg.backup_incr_every_ms / 1000);
    else jw_null(&w);
    jw_kuint(&w, "keep", s->cfg.backup_keep);
    jw_kuint(&w, "keepDaily", s->cfg.backup_keep_daily);
    jw_kuint(&w, "keepWeekly", s->cfg.backup_keep_weekly);
    jw_key(&w, "drillEverySeconds");
    if (s->cfg.backup_drill_every_ms) jw_double(&w, (double)s->cfg.backup_drill_every_ms / 1000);
    else jw_null(&w);
    jw_key(&w, "databases");
    jw_arr(&w);
    for (size_t i = 0; b && i < n; i++) {
        struct sched_db e;
        memset(&e, 0, sizeof e);
        pthread_mutex_lock(&b->mu);
        struct sched_db *p = sched_entry(b, names[i]);
        if (p) e = *p;
        pthread_mutex_unlock(&b->mu);
        int64_t full_at, incr_at;
        sched_next(s, &e, &full_at, &incr_at);
        /* "Due at once" is shown as now, and a retry pause postpones both. */
        if (full_at == 1) full_at = now;
        if (incr_at == 1) incr_at = now;
        if (full_at && full_at < e.next_try_ns) full_at = e.next_try_ns;
        if (incr_at && incr_at < e.next_try_ns) incr_at = e.next_try_ns;
        jw_obj(&w);
        jw_kstr(&w, "databaseId", names[i]);
        jw_key(&w, "lastBackup");
        if (e.last_any_ns) jw_time(&w, e.last_any_ns);
        else jw_null(&w);
        jw_key(&w, "lastFullBackup");
        if (e.last_full_ns) jw_time(&w, e.last_full_ns);
        else jw_null(&w);
        jw_key(&w, "nextFull");
        if (full_at) jw_time(&w, full_at);
        else jw_null(&w);
        jw_key(&w, "nextIncremental");
        if (incr_at) jw_time(&w, incr_at);
        else jw_null(&w);
        jw_kbool(&w, "waitingForChanges", e.waiting);
        jw_key(&w, "nextDrill");
        if (s->cfg.backup_drill_every_ms && e.known)
            jw_time(&w, e.drill_at_ns ? e.drill_at_ns + (int64_t)s->cfg.backup_drill_every_ms * 1000000 : now);
        else jw_null(&w);
        jw_key(&w, "lastDrill");
        if (e.drill_at_ns) {
            jw_obj(&w);
            jw_key(&w, "at");
            jw_time(&w, e.drill_at_ns);
            jw_kstr(&w, "backupId", e.drill.backup_id);
            jw_kbool(&w, "passed", e.drill.passed);
            jw_kstr(&w, "failure", e.drill.failure);
            jw_obj_end(&w);
        } else {
            jw_null(&w);
        }
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    jvdb_free_names(names, n);
    http_reply_json(rs, 200, &w);
}

/* The scheduler thread: a pass every SCHED_TICK_MS until sched_stop wakes it to end. */
static void *sched_main(void *arg)
{
    struct server *s = arg;
    struct backup_sched *b = s->sched;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        pthread_mutex_unlock(&b->mu);
        sched_tick(s);
        pthread_mutex_lock(&b->mu);
        if (b->stopping) break;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += SCHED_TICK_MS * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->cv, &b->mu, &dl);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int sched_start(struct server *s)
{
    if (!s->cfg.backup_repo ||
        (!s->cfg.backup_full_every_ms && !s->cfg.backup_incr_every_ms && !s->cfg.backup_drill_every_ms))
        return 0;
    struct backup_sched *b = calloc(1, sizeof *b);
    if (!b) return -1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    s->sched = b;
    backup_on_taken(s, sched_note); /* every backup, whoever takes it, moves the schedule */
    if (backup_newest(s, sched_learn, b) != JVDB_OK) {
        log_error("cannot read backup repository '%s': %s", s->cfg.backup_repo, jvdb_errmsg());
        sched_stop(s);
        return -1;
    }
    if (pthread_create(&b->thread, NULL, sched_main, s) != 0) {
        log_error("cannot start the backup scheduler thread");
        sched_stop(s);
        return -1;
    }
    b->started = 1;
    log_info("backup scheduler: full every %.1f s, incremental every %.1f s, keep %u (0 = all), daily %u, weekly %u, "
             "restore drill every %.1f s, repository %s",
             (double)s->cfg.backup_full_every_ms / 1000, (double)s->cfg.backup_incr_every_ms / 1000, s->cfg.backup_keep,
             s->cfg.backup_keep_daily, s->cfg.backup_keep_weekly, (double)s->cfg.backup_drill_every_ms / 1000,
             s->cfg.backup_repo);
    return 0;
}

void sched_stop(struct server *s)
{
    struct backup_sched *b = s->sched;
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->started) pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b->dbs);
    free(b);
    s->sched = NULL;
}

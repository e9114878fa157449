/*
 * backup_sched.c — scheduled backups: a full backup of every database every F
 * (--backup-full-every), incremental ones every I in between (--backup-incremental-every), and
 * after each, pruning to the newest N restorable points (--backup-keep).
 *
 * One thread looks at every database twice a second.  Times are start-to-start and survive
 * restarts: at start-up they are read from the repository (the newest backup and the newest full
 * backup of each database), so a restart neither repeats a backup that was just taken nor forgets
 * one that is due.  A database whose newest LSN is the one its last backup ended at is skipped (an
 * empty backup protects nothing), and a failed backup is retried after a pause rather than in a
 * tight loop.  Every backup goes through backup_run() (routes_backup.c), so it is logged, counted
 * in /metrics and serialised with backups asked for over HTTP.
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHED_TICK_MS 500
#define SCHED_RETRY_NS (5 * 1000000000LL)

struct sched_db {
    char name[JVDB_MAX_NAME_LEN + 1];
    int64_t last_full_ns;            /* start of the newest full backup (0 = none) */
    int64_t last_any_ns;             /* start of the newest backup of any type */
    int64_t next_try_ns;             /* after a failure: not before this */
    uint64_t last_lsn;               /* LSN the newest backup ends at */
    int known;                       /* last_lsn is meaningful */
};

struct backup_sched {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    int started;                     /* the thread exists (to join) */
    struct sched_db *dbs;            /* used by the scheduler thread only (and start-up before it) */
    size_t n, cap;
};

static struct sched_db *sched_entry(backup_sched *b, const char *name)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->dbs[i].name, name)) return &b->dbs[i];
    if (b->n == b->cap) {
        size_t ncap = b->cap ? 2 * b->cap : 8;
        struct sched_db *nd = realloc(b->dbs, ncap * sizeof *nd);
        if (!nd) return NULL;
        b->dbs = nd;
        b->cap = ncap;
    }
    struct sched_db *e = &b->dbs[b->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

static void sched_learn(void *arg, const jvdb_backup_info *newest, const jvdb_backup_info *newest_full)
{
    struct sched_db *e = sched_entry(arg, newest->database);
    if (!e) return;
    e->last_any_ns = newest->created_ns;
    e->last_full_ns = newest_full ? newest_full->created_ns : 0;
    e->last_lsn = newest->lsn_to;
    e->known = 1;
}

/* The backup due for one database now, or 0. */
static jvdb_backup_type sched_due(const server *s, const struct sched_db *e, int64_t now)
{
    int64_t full = (int64_t)s->cfg.backup_full_every_ms * 1000000, incr = (int64_t)s->cfg.backup_incr_every_ms * 1000000;
    if (now < e->next_try_ns) return 0;
    if (full && (!e->last_full_ns || now - e->last_full_ns >= full)) return JVDB_BACKUP_FULL;
    if (incr && now - e->last_any_ns >= incr) return JVDB_BACKUP_INCREMENTAL;
    return 0;
}

static void sched_one(server *s, struct sched_db *e, jvdb_backup_type type, int64_t now)
{
    jvdb_db *db;
    /* Held like a request holds it, and let go before backup_run, which holds it again after the
     * repository mutex (the lock order in srv.h). */
    if (srv_db_hold(s, e->name, &db) != JVDB_OK) return;   /* dropped meanwhile */
    jvdb_stats st;
    int unchanged = jvdb_stats_get(db, &st) == JVDB_OK && e->known && st.last_lsn == e->last_lsn;
    srv_db_unhold(s, db);
    if (unchanged) {
        log_debug("scheduled %s backup of '%s' skipped: nothing changed since LSN %llu", jvdb_backup_type_name(type),
                  e->name, (unsigned long long)e->last_lsn);
        e->last_any_ns = now;
        if (type == JVDB_BACKUP_FULL) e->last_full_ns = now;
        return;
    }
    jvdb_backup_options o;
    jvdb_backup_options_init(&o);
    o.type = type;
    o.description = "scheduled";
    jvdb_backup_info info;
    int rc = backup_run(s, e->name, &o, &info, "scheduler");
    if (rc != JVDB_OK) {
        e->next_try_ns = now + SCHED_RETRY_NS;
        return;
    }
    e->last_any_ns = now;
    if (info.type == JVDB_BACKUP_FULL) e->last_full_ns = now;   /* also when an incremental fell back to full */
    e->last_lsn = info.lsn_to;
    e->known = 1;
    if (s->cfg.backup_keep) {
        size_t deleted;
        backup_prune(s, e->name, s->cfg.backup_keep, &deleted);
    }
}

static void sched_tick(server *s)
{
    backup_sched *b = s->sched;
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&b->mu);
        int stop = b->stopping;
        pthread_mutex_unlock(&b->mu);
        if (stop) break;
        struct sched_db *e = sched_entry(b, names[i]);
        if (!e) break;
        int64_t now = clock_wall_ns();
        jvdb_backup_type type = sched_due(s, e, now);
        if (type) sched_one(s, e, type, now);
    }
    jvdb_free_names(names, n);
}

static void *sched_main(void *arg)
{
    server *s = arg;
    backup_sched *b = s->sched;
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

int sched_start(server *s)
{
    if (!s->cfg.backup_repo || (!s->cfg.backup_full_every_ms && !s->cfg.backup_incr_every_ms)) return 0;
    backup_sched *b = calloc(1, sizeof *b);
    if (!b) return -1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    s->sched = b;
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
    log_info("backup scheduler: full every %.1f s, incremental every %.1f s, keep %u (0 = all), repository %s",
             (double)s->cfg.backup_full_every_ms / 1000, (double)s->cfg.backup_incr_every_ms / 1000, s->cfg.backup_keep,
             s->cfg.backup_repo);
    return 0;
}

void sched_stop(server *s)
{
    backup_sched *b = s->sched;
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

/*
 * backup_log.c — the server's side of the backup repository: the one path every backup takes,
 * whether asked for over HTTP (routes_backup.c) or by the scheduler (backup_sched.c): backup_run(),
 * which logs it and counts it for /metrics; pruning, restore drills, the newest backup of every
 * database, and the statistics /metrics reads.
 *
 * Repository handles are opened per operation, since the library allows one thread per handle,
 * and every operation that reads a whole chain or changes the repository (create, delete, prune,
 * verify, restore, drill) runs under one mutex (repo_mu, backup_repo_lock): chains are computed
 * from what is in the repository, so two of them at once could pick the same parent or delete
 * what the other is reading.  The statistics are guarded by `mu`, never held across I/O.
 *
 * Shared state: routes, the scheduler and metrics.c call it; it calls no route and not the
 * scheduler (a taken backup is reported through the backup_on_taken hook).
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/grow.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What this server knows of one database's backups: its counters and newest success. */
struct backup_db {
    char name[JVDB_MAX_NAME_LEN + 1];
    int64_t last_ns; /* newest successful backup, seeded from the repository */
    struct backup_totals totals[4][2];
};

struct backup_log {
    pthread_mutex_t repo_mu; /* one chain-reading or repository-changing operation at a time */
    pthread_mutex_t mu;      /* the statistics below */
    struct backup_totals totals[4][2];
    struct backup_db *dbs;
    size_t ndbs, capdbs;
    void (*on_taken)(struct server *s, const jvdb_backup_info *info); /* backup_on_taken */
};

/* The configured repository, with its key file when one was given. */
int backup_repo_open(struct server *s, jvdb_repo **out)
{
    jvdb_repo_options o = { 0 };
    o.key_file = s->cfg.backup_repo_key_file;
    return jvdb_repo_open(s->cfg.backup_repo, &o, out);
}

/* The entry of database `name`, appended when new; NULL when out of memory.  Caller holds l->mu. */
static struct backup_db *backup_db_entry(struct backup_log *l, const char *name)
{
    for (size_t i = 0; i < l->ndbs; i++)
        if (!strcmp(l->dbs[i].name, name)) return &l->dbs[i];
    struct backup_db *n = grow_array(l->dbs, &l->capdbs, l->ndbs + 1, sizeof *n, 8);
    if (!n) return NULL;
    l->dbs = n;
    struct backup_db *e = &l->dbs[l->ndbs++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* backup_newest callback: seeds a database's newest success from the repository. */
static void backup_seed(void *arg, const jvdb_backup_info *newest, const jvdb_backup_info *newest_full)
{
    (void)newest_full;
    struct server *s = arg;
    struct backup_log *l = s->backups;
    pthread_mutex_lock(&l->mu);
    struct backup_db *e = backup_db_entry(l, newest->database);
    if (e && newest->created_ns > e->last_ns) e->last_ns = newest->created_ns;
    pthread_mutex_unlock(&l->mu);
}

int backup_init(struct server *s)
{
    struct backup_log *l = calloc(1, sizeof *l);
    if (!l) return -1;
    pthread_mutex_init(&l->repo_mu, NULL);
    pthread_mutex_init(&l->mu, NULL);
    s->backups = l;
    if (!s->cfg.backup_repo) return 0;
    jvdb_repo *repo;
    if (backup_repo_open(s, &repo) != JVDB_OK) {
        log_error("cannot open backup repository '%s': %s", s->cfg.backup_repo, jvdb_errmsg());
        return -1;
    }
    jvdb_repo_close(repo);
    /* jvdb_backup_last_success_timestamp_seconds starts from the repository, so an alert on "no
     * backup for 25 h" is not blind after a restart.  This also checks the key: a wrong one (or a
     * key on a plain repository, or none on an encrypted one) stops the start; an unreachable
     * repository only warns, as the backup routes will report it. */
    int rc = backup_newest(s, backup_seed, s);
    if (rc == JVDB_EINVAL || rc == JVDB_ECORRUPT) {
        log_error("backup repository '%s': %s", s->cfg.backup_repo, jvdb_errmsg());
        return -1;
    }
    if (rc != JVDB_OK)
        log_warn("cannot read backup repository '%s' at start-up: %s", s->cfg.backup_repo, jvdb_errmsg());
    return 0;
}

void backup_free(struct server *s)
{
    struct backup_log *l = s->backups;
    if (!l) return;
    pthread_mutex_destroy(&l->repo_mu);
    pthread_mutex_destroy(&l->mu);
    free(l->dbs);
    free(l);
    s->backups = NULL;
}

/* Counts one finished backup, in the server's totals and in its database's. */
static void backup_count(struct server *s, const char *name, jvdb_backup_type type, int failed, double secs,
                         const jvdb_backup_info *info)
{
    struct backup_log *l = s->backups;
    if ((int)type < 1 || (int)type > 3) type = JVDB_BACKUP_FULL;
    pthread_mutex_lock(&l->mu);
    struct backup_db *e = backup_db_entry(l, name);
    struct backup_totals *sums[2] = { &l->totals[type][failed ? 1 : 0], e ? &e->totals[type][failed ? 1 : 0] : NULL };
    for (int k = 0; k < 2 && sums[k]; k++) {
        sums[k]->count++;
        sums[k]->seconds += secs;
        if (!failed) {
            sums[k]->raw_bytes += info->raw_bytes;
            sums[k]->stored_bytes += info->stored_bytes;
        }
    }
    if (e && !failed) e->last_ns = info->created_ns;
    pthread_mutex_unlock(&l->mu);
}

void backup_log_totals(struct server *s, struct backup_totals out[4][2])
{
    struct backup_log *l = s->backups;
    pthread_mutex_lock(&l->mu);
    memcpy(out, l->totals, sizeof l->totals);
    pthread_mutex_unlock(&l->mu);
}

size_t backup_log_last(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], int64_t *times, size_t cap)
{
    struct backup_log *l = s->backups;
    pthread_mutex_lock(&l->mu);
    size_t n = 0;
    for (size_t i = 0; i < l->ndbs && n < cap; i++) {
        if (!l->dbs[i].last_ns) continue;
        memcpy(names[n], l->dbs[i].name, sizeof names[n]);
        times[n++] = l->dbs[i].last_ns;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

size_t backup_log_databases(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1],
                            struct backup_totals (*totals)[4][2], size_t cap)
{
    struct backup_log *l = s->backups;
    pthread_mutex_lock(&l->mu);
    size_t n = l->ndbs < cap ? l->ndbs : cap;
    for (size_t i = 0; i < n; i++) {
        memcpy(names[i], l->dbs[i].name, sizeof names[i]);
        memcpy(totals[i], l->dbs[i].totals, sizeof totals[i]);
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Takes the repository mutex: waits when `wait`, else returns -1 at once when someone holds it. */
int backup_repo_lock(struct server *s, int wait)
{
    if (wait) return pthread_mutex_lock(&s->backups->repo_mu) ? -1 : 0;
    return pthread_mutex_trylock(&s->backups->repo_mu) ? -1 : 0;
}

int backup_run(struct server *s, const char *name, const jvdb_backup_options *opts, jvdb_backup_info *info,
               const char *origin)
{
    return backup_run_mode(s, name, opts, info, origin, 1);
}

int backup_run_mode(struct server *s, const char *name, const jvdb_backup_options *opts, jvdb_backup_info *info,
                    const char *origin, int wait)
{
    memset(info, 0, sizeof *info);
    /* The backup carries the database's description with its settings, so a restore brings it back. */
    jvdb_backup_options bo = *opts;
    const jvdb_backup_options *o = &bo;
    struct dbmeta dm;
    pthread_mutex_lock(&s->meta_mu);
    dbmeta_load(s, name, &dm);
    pthread_mutex_unlock(&s->meta_mu);
    bo.database_description = dm.description;
    if (backup_repo_lock(s, wait)) {
        dbmeta_free(&dm);
        return BACKUP_REPO_BUSY;
    }
    jvdb_db *db = NULL;
    int rc = srv_db_hold(s, name, &db); /* after the mutex: see the lock order in srv.h */
    if (rc != JVDB_OK) {                /* no such database (or being dropped): not a failed backup */
        pthread_mutex_unlock(&s->backups->repo_mu);
        dbmeta_free(&dm);
        return rc;
    }
    int64_t t0 = clock_mono_ns();
    jvdb_repo *repo = NULL;
    rc = backup_repo_open(s, &repo);
    if (rc == JVDB_OK) rc = jvdb_backup_create(db, repo, o, info);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    jvdb_repo_close(repo);
    srv_db_unhold(s, db);
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    pthread_mutex_unlock(&s->backups->repo_mu);
    dbmeta_free(&dm);
    if (rc == JVDB_OK) {
        backup_count(s, name, info->type, 0, secs, info);
        if (s->backups->on_taken) s->backups->on_taken(s, info);
        log_info("backup %s of '%s' (%s, %s): %" PRIu64 " puts, %" PRIu64 " deletes, LSN %" PRIu64 "..%" PRIu64
                 ", %" PRIu64 " bytes stored, %.3f s%s%s",
                 info->id, name, jvdb_backup_type_name(info->type), origin, info->put_count, info->delete_count,
                 info->lsn_from, info->lsn_to, info->stored_bytes, secs, *info->note ? "; " : "", info->note);
    } else {
        backup_count(s, name, o->type, 1, secs, info);
        log_warn("%s backup of '%s' (%s) failed: %s", jvdb_backup_type_name(o->type), name, origin, msg);
    }
    /* The caller reads the message through jvdb_errmsg(); closing the repository may have
     * replaced it. */
    if (rc != JVDB_OK) err_set(rc, "%s", msg);
    return rc;
}

int backup_prune(struct server *s, const char *db_name, size_t *deleted)
{
    *deleted = 0;
    jvdb_prune_options po = { s->cfg.backup_keep, s->cfg.backup_keep_daily, s->cfg.backup_keep_weekly, 0 };
    if (!po.keep_last && !po.keep_daily && !po.keep_weekly) return JVDB_OK;
    pthread_mutex_lock(&s->backups->repo_mu);
    jvdb_repo *repo = NULL;
    int rc = backup_repo_open(s, &repo);
    jvdb_backup_info *gone = NULL;
    size_t n = 0;
    if (rc == JVDB_OK) rc = jvdb_backup_prune_ex(repo, db_name, &po, &gone, &n);
    if (rc == JVDB_OK) {
        for (size_t i = 0; i < n; i++) log_info("pruned backup %s of '%s'", gone[i].id, db_name);
        *deleted = n;
    } else {
        log_warn("pruning the backups of '%s' failed: %s", db_name, jvdb_errmsg());
    }
    jvdb_free(gone);
    jvdb_repo_close(repo);
    pthread_mutex_unlock(&s->backups->repo_mu);
    return rc;
}

int backup_newest(struct server *s,
                  void (*fn)(void *arg, const jvdb_backup_info *newest, const jvdb_backup_info *newest_full), void *arg)
{
    jvdb_repo *repo = NULL;
    int rc = backup_repo_open(s, &repo);
    jvdb_backup_info *all = NULL;
    size_t n = 0;
    if (rc == JVDB_OK) rc = jvdb_backup_list(repo, NULL, &all, &n);
    jvdb_repo_close(repo);
    /* A repository that does not exist yet has no backups; the first one creates it. */
    if (rc == JVDB_ENOTFOUND) return JVDB_OK;
    if (rc != JVDB_OK) return rc;
    /* Oldest first per database: the last of a run of one database is its newest. */
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && !strcmp(all[i + 1].database, all[i].database)) continue;
        const jvdb_backup_info *full = NULL;
        for (size_t k = 0; k <= i; k++)
            if (!strcmp(all[k].database, all[i].database) && all[k].type == JVDB_BACKUP_FULL) full = &all[k];
        fn(arg, &all[i], full);
    }
    jvdb_free(all);
    return JVDB_OK;
}

int backup_drill_run(struct server *s, const char *name, jvdb_drill_report *out)
{
    pthread_mutex_lock(&s->backups->repo_mu);
    jvdb_db *db = NULL;
    int rc = srv_db_hold(s, name, &db); /* after the mutex: see the lock order in srv.h */
    if (rc != JVDB_OK) {
        pthread_mutex_unlock(&s->backups->repo_mu);
        return rc;
    }
    jvdb_repo *repo = NULL;
    rc = backup_repo_open(s, &repo);
    if (rc == JVDB_OK) rc = jvdb_backup_drill(repo, name, db, NULL, out);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    jvdb_repo_close(repo);
    srv_db_unhold(s, db);
    pthread_mutex_unlock(&s->backups->repo_mu);
    if (rc != JVDB_OK) err_set(rc, "%s", msg); /* closing the repository may have replaced it */
    return rc;
}

void backup_repo_unlock(struct server *s) { pthread_mutex_unlock(&s->backups->repo_mu); }

void backup_note_taken(struct server *s, const jvdb_backup_info *info, const char *origin)
{
    backup_count(s, info->database, info->type, 0, 0, info);
    if (s->backups->on_taken) s->backups->on_taken(s, info);
    log_info("backup %s of '%s' (%s, %s): LSN %" PRIu64 "..%" PRIu64 ", %" PRIu64 " bytes stored", info->id,
             info->database, jvdb_backup_type_name(info->type), origin, info->lsn_from, info->lsn_to,
             info->stored_bytes);
}

void backup_note_failed(struct server *s, const char *name, jvdb_backup_type type, double secs)
{
    backup_count(s, name, type, 1, secs, NULL);
}

void backup_on_taken(struct server *s, void (*fn)(struct server *s, const jvdb_backup_info *info))
{
    s->backups->on_taken = fn;
}

/*
 * follow.c — read replicas (issue 13): `jvdb serve --data D --follow R` restores the newest state of
 * every database in repository R (jvdb_backup_restore with replica = 1), then tails R's log every
 * --follow-interval, applying what the primary shipped (jvdb_backup_follow); a database that is a
 * new incarnation in R, or whose log has a gap, is re-seeded from R; databases created in R later
 * appear.  While following, the server refuses every write route (403 READ_ONLY, routes.c asks
 * follow_read_only).  POST /v1/admin/promote (or a start without --follow on a replica's data
 * directory) stops following, fences the old primary (the lease in R with epoch + 1, wal.c) and
 * makes the server a writable primary whose databases continue their source's history.
 *
 * A poll costs what is new, not the repository's history: each database lists only its log after
 * the replica's LSN (jvdb_backup_follow_ex log_only); backups are listed, with the whole log, at
 * most every FOLLOW_FULL_NS or when that listing cannot decide.  A damaged log object (checksum or
 * authentication failure) stops a database: it keeps serving its last good state, is reported as
 * stuck (replicationError in stats, jvdb_replica_stuck in /metrics) and retried with a backoff up
 * to FOLLOW_RETRY_MAX_NS; as soon as a restorable backup covers past the damage (the primary's
 * next backup, or a re-based log), it is re-seeded from the newest one and goes on following.
 *
 * Invariant: only the follow thread writes to the databases while following, and only whole
 * batches of the source (the library's guarantee), so a replica killed at any moment restarts at a
 * batch boundary and continues from its own last LSN.  The per-database state shown as
 * replicationLagSeconds lives under `mu`, which is never held across I/O.
 */
#include "server/srv.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Backups and the whole log are looked at this often per database (and whenever the log after the
 * replica cannot decide alone); a poll in between lists only the log after the replica. */
#define FOLLOW_FULL_NS      (10 * 1000000000LL)
/* A database stuck behind a damaged log object is retried after 1 s, doubling up to this. */
#define FOLLOW_RETRY_MIN_NS (1000000000LL)
#define FOLLOW_RETRY_MAX_NS (60 * 1000000000LL)

/* What the replica knows of one database. */
struct follow_db {
    char name[JVDB_MAX_NAME_LEN + 1];
    uint64_t lsn, repo_lsn;
    int64_t last_time_ns; /* acknowledgement time of the newest batch applied (or of the seed's point) */
    int caught_up;        /* nothing in the repository beyond what is applied */
    uint64_t reseeds;
    int warned;           /* an error about it was logged (once until it works again) */
    int64_t next_full_ns; /* monotonic: when the next poll lists backups and the whole log */
    int stuck;            /* behind the damaged log object bad_object */
    char bad_object[JVDB_LOG_NAME_MAX];
    uint64_t bad_lsn_to;     /* a backup reaching this LSN gets past it */
    char stuck_reason[512];  /* for stats and /metrics */
    int64_t retry_ns;        /* monotonic: the next attempt while stuck */
    int64_t backoff_ns;      /* the wait after the next failed attempt */
    uint64_t stuck_attempts; /* attempts since it got stuck */
};

struct follow_state {
    jvdb_repo *repo;
    pthread_t thread;
    int started;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int stop;
    atomic_int following; /* 1: a replica, writes refused */
    int promoted;
    struct follow_db *dbs;
    size_t n, cap;
};

/* The entry of `name` (created when new); NULL when out of memory.  mu held. */
static struct follow_db *follow_entry(struct follow_state *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->dbs[i].name, name)) return &f->dbs[i];
    struct follow_db *nd = grow_array(f->dbs, &f->cap, f->n + 1, sizeof *nd, 8);
    if (!nd) return NULL;
    f->dbs = nd;
    struct follow_db *e = &f->dbs[f->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* Records what one step did for `name`. */
static void follow_note(struct server *s, const char *name, uint64_t lsn, uint64_t repo_lsn, int64_t time_ns,
                        int reseeded)
{
    struct follow_state *f = s->follow;
    pthread_mutex_lock(&f->mu);
    struct follow_db *e = follow_entry(f, name);
    if (e) {
        e->lsn = lsn;
        e->repo_lsn = repo_lsn > lsn ? repo_lsn : lsn;
        if (time_ns) e->last_time_ns = time_ns;
        e->caught_up = lsn >= repo_lsn;
        e->reseeds += reseeded != 0;
        e->warned = 0;
        if (e->stuck)
            log_info("replica: '%s' is no longer stuck (at LSN %" PRIu64 " after %" PRIu64 " attempts)", name, lsn,
                     e->stuck_attempts);
        e->stuck = 0;
        e->stuck_reason[0] = e->bad_object[0] = '\0';
        e->stuck_attempts = 0;
    }
    pthread_mutex_unlock(&f->mu);
}

/* Schedules a stuck database's next attempt after its backoff, then doubles the backoff (bounded).  mu held. */
static void follow_backoff(struct follow_db *e, int64_t now)
{
    e->retry_ns = now + e->backoff_ns;
    e->backoff_ns = e->backoff_ns * 2 > FOLLOW_RETRY_MAX_NS ? FOLLOW_RETRY_MAX_NS : e->backoff_ns * 2;
}

/* Marks `name` stuck behind the damaged object fr names (or still stuck: one more failed attempt),
 * scheduling the next attempt with a doubling backoff.  Logged at the first failure only. */
static void follow_stuck(struct server *s, const char *name, const jvdb_follow_result *fr, const char *msg)
{
    struct follow_state *f = s->follow;
    int64_t now = clock_mono_ns(), interval = (int64_t)s->cfg.follow_interval_ms * 1000000;
    pthread_mutex_lock(&f->mu);
    struct follow_db *e = follow_entry(f, name);
    int first = e && !e->stuck;
    if (e) {
        if (first) e->backoff_ns = interval > FOLLOW_RETRY_MIN_NS ? interval : FOLLOW_RETRY_MIN_NS;
        e->stuck = 1;
        e->stuck_attempts++;
        e->lsn = fr->lsn;
        e->caught_up = 0;
        if (fr->repo_lsn > e->repo_lsn) e->repo_lsn = fr->repo_lsn;
        snprintf(e->bad_object, sizeof e->bad_object, "%s", fr->bad_object);
        e->bad_lsn_to = fr->bad_lsn_to;
        snprintf(e->stuck_reason, sizeof e->stuck_reason,
                 "damaged log object %s: %s; serving LSN %" PRIu64 " until a backup covers LSN %" PRIu64,
                 fr->bad_object, msg, fr->lsn, fr->bad_lsn_to);
        follow_backoff(e, now);
    }
    pthread_mutex_unlock(&f->mu);
    if (first)
        log_error("replica: '%s' is stuck at LSN %" PRIu64 " behind damaged log object %s (%s); serving its last "
                  "good state, retrying with a backoff up to %d s and re-seeding once a backup covers LSN %" PRIu64,
                  name, fr->lsn, fr->bad_object, msg, (int)(FOLLOW_RETRY_MAX_NS / 1000000000LL), fr->bad_lsn_to);
}

/* A stuck database's attempt failed another way (its re-seed, the repository): the next one waits
 * out the backoff too, so a stuck replica never retries faster than that. */
static void follow_defer(struct server *s, const char *name)
{
    struct follow_state *f = s->follow;
    pthread_mutex_lock(&f->mu);
    struct follow_db *e = follow_entry(f, name);
    if (e && e->stuck) {
        e->stuck_attempts++;
        follow_backoff(e, clock_mono_ns());
    }
    pthread_mutex_unlock(&f->mu);
}

/* Whether `name` is stuck and its next attempt is not due yet; *full set when this poll should list
 * backups and the whole log (due, or stuck: the damage may have been repaired or passed). */
static int follow_wait(struct server *s, const char *name, int *full, uint64_t *bad_lsn_to)
{
    struct follow_state *f = s->follow;
    int64_t now = clock_mono_ns();
    pthread_mutex_lock(&f->mu);
    struct follow_db *e = follow_entry(f, name);
    int wait = e && e->stuck && now < e->retry_ns;
    *full = !e || e->stuck || now >= e->next_full_ns;
    *bad_lsn_to = e && e->stuck ? e->bad_lsn_to : 0;
    if (e && *full && !wait) e->next_full_ns = now + FOLLOW_FULL_NS;
    pthread_mutex_unlock(&f->mu);
    return wait;
}

/* Whether a restorable backup of `name` reaches bad_lsn_to (any incarnation newer than the
 * replica's counts too): a re-seed from the newest gets past a damaged log object. */
static int follow_backup_past(struct server *s, const char *name, int64_t inc, uint64_t bad_lsn_to, char *id,
                              size_t cap)
{
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    if (jvdb_backup_list(s->follow->repo, name, &v, &n)) return 0;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].restorable && (v[i].incarnation > inc || (v[i].incarnation == inc && v[i].lsn_to >= bad_lsn_to))) {
            found = 1;
            snprintf(id, cap, "%s", v[i].id);
        }
    jvdb_free(v);
    return found;
}

/* Logs a failure about `name` once until it works again. */
static void follow_warn(struct server *s, const char *name, const char *what, const char *msg)
{
    struct follow_state *f = s->follow;
    pthread_mutex_lock(&f->mu);
    struct follow_db *e = follow_entry(f, name);
    int first = e && !e->warned;
    if (e) e->warned = 1;
    pthread_mutex_unlock(&f->mu);
    if (first) log_error("replica: %s '%s': %s (retrying every poll)", what, name, msg);
}

/* The lsn_to of the newest restorable backup of `name` in the repository (of its newest
 * incarnation), 0 when none. */
static uint64_t follow_newest_base(struct server *s, const char *name)
{
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    if (jvdb_backup_list(s->follow->repo, name, &v, &n)) return 0;
    uint64_t lsn = 0;
    int64_t inc = INT64_MIN;
    for (size_t i = 0; i < n; i++)
        if (v[i].restorable && (v[i].incarnation > inc || (v[i].incarnation == inc && v[i].lsn_to > lsn))) {
            inc = v[i].incarnation;
            lsn = v[i].lsn_to;
        }
    jvdb_free(v);
    return lsn;
}

/* Restores the newest state of `name` from the repository as a replica (replacing what is there),
 * with the description it carries. */
static int follow_seed(struct server *s, const char *name, const char *why)
{
    jvdb_restore_result res;
    jvdb_restore_options ro = { .force = 1, .result = &res, .database = name, .latest = 1, .replica = 1 };
    int64_t t0 = clock_mono_ns();
    int rc = jvdb_backup_restore(s->env, s->follow->repo, NULL, &ro, NULL);
    uint64_t base = 0;
    if (rc == JVDB_ECORRUPT && (base = follow_newest_base(s, name))) {
        /* The log after the newest backup is damaged: start from that backup alone; the follow
         * then applies the good log after it and stops, reported stuck, at the damaged object. */
        log_warn("replica: cannot seed '%s' at its newest point (%s); seeding from its newest backup (LSN %" PRIu64
                 ") and following the log from there",
                 name, jvdb_errmsg(), base);
        ro.latest = 0;
        ro.to_lsn = base;
        rc = jvdb_backup_restore(s->env, s->follow->repo, NULL, &ro, NULL);
    }
    if (rc) {
        follow_warn(s, name, "cannot seed", jvdb_errmsg());
        return rc;
    }
    dbmeta_restored(s, &res);
    jvdb_free(res.database_description);
    /* The seed's point in time: its last batch from the log, else the backup's creation. */
    follow_note(s, name, res.lsn, res.lsn, res.time_ns ? res.time_ns : res.backup.created_ns, 1);
    log_info("replica: seeded '%s' (%s) from backup %s and %u log objects: LSN %" PRIu64 ", %" PRIu64
             " vectors, in %.3f s",
             name, why, res.backup.id, res.log_objects, res.lsn, res.vectors, (double)(clock_mono_ns() - t0) / 1e9);
    return JVDB_OK;
}

/* One database, one step: seed it when missing or when it cannot go on, else apply the log (only the
 * log after the replica, unless a full look is due); a stuck one waits for its retry, and is
 * re-seeded as soon as a backup covers past its damaged object. */
static void follow_one(struct server *s, const char *name)
{
    jvdb_db *db = NULL;
    int rc = srv_db_hold(s, name, &db);
    if (rc == JVDB_ENOTFOUND) {
        follow_seed(s, name, "new in the repository");
        return;
    }
    if (rc) {
        follow_warn(s, name, "cannot open", jvdb_errmsg());
        return;
    }
    int full;
    uint64_t bad_lsn_to;
    if (follow_wait(s, name, &full, &bad_lsn_to)) {
        srv_db_unhold(s, db);
        return;
    }
    int64_t inc = 0;
    char id[JVDB_BACKUP_ID_MAX];
    if (bad_lsn_to && jvdb_backup_replica_of(db, NULL, &inc) == JVDB_OK &&
        follow_backup_past(s, name, inc, bad_lsn_to, id, sizeof id)) {
        srv_db_unhold(s, db);
        log_info("replica: re-seeding '%s' past its damaged log object: backup %s reaches LSN %" PRIu64, name, id,
                 bad_lsn_to);
        if (follow_seed(s, name, "past a damaged log object")) follow_defer(s, name);
        return;
    }
    jvdb_follow_result fr;
    jvdb_follow_options fo = { .log_only = !full };
    rc = jvdb_backup_follow_ex(db, s->follow->repo, &fo, &fr);
    srv_db_unhold(s, db);
    if (rc == JVDB_ECORRUPT && fr.bad_object[0]) {
        follow_stuck(s, name, &fr, jvdb_errmsg());
        return;
    }
    if (rc == JVDB_ENOTFOUND) {
        /* A database of that name that is not a replica: never overwritten. */
        follow_warn(s, name, "not following", "a local database of that name is not a replica of the repository");
        return;
    }
    if (rc) {
        follow_warn(s, name, "cannot apply the log of", jvdb_errmsg());
        follow_defer(s, name);
        return;
    }
    if (fr.reseed) {
        log_info("replica: re-seeding '%s': %s", name, fr.reason);
        if (follow_seed(s, name, "re-seeded")) follow_defer(s, name);
        return;
    }
    follow_note(s, name, fr.lsn, fr.repo_lsn, fr.last_time_ns, 0);
}

/* Whether `name` is followed already (or a local database of that name exists). */
static int follow_known(struct server *s, const char *name)
{
    jvdb_db *db = NULL;
    if (srv_db_hold(s, name, &db)) return 0;
    srv_db_unhold(s, db);
    return 1;
}

/* Whether database `name` of the repository has a restorable backup (what a seed needs). */
static int follow_seedable(struct server *s, const char *name)
{
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    if (jvdb_backup_list(s->follow->repo, name, &v, &n)) return 0;
    int any = 0;
    for (size_t i = 0; i < n; i++) any |= v[i].restorable;
    jvdb_free(v);
    return any;
}

/* One poll: every database of the repository; one not here yet only once it has a restorable backup. */
static void follow_poll(struct server *s)
{
    char **names = NULL;
    size_t n = 0;
    if (jvdb_repo_databases(s->follow->repo, &names, &n)) {
        follow_warn(s, "*", "cannot list the repository for", jvdb_errmsg());
        return;
    }
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&s->follow->mu);
        int stop = s->follow->stop;
        pthread_mutex_unlock(&s->follow->mu);
        if (stop) break;
        if (!follow_known(s, names[i]) && !follow_seedable(s, names[i])) continue;
        follow_one(s, names[i]);
    }
    jvdb_free_names(names, n);
}

/* The tail thread: polls until stopped (a stop or a promote). */
static void *follow_main(void *arg)
{
    struct server *s = arg;
    struct follow_state *f = s->follow;
    int64_t interval = (int64_t)s->cfg.follow_interval_ms * 1000000;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        pthread_mutex_unlock(&f->mu);
        follow_poll(s);
        pthread_mutex_lock(&f->mu);
        if (!f->stop) clock_cond_wait_ns(&f->cv, &f->mu, interval);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Fences the old primary of db's source in the repository (the lease with the next epoch): R when
 * following, else the backup repository (none configured: nothing to fence). */
static int follow_fence(struct server *s, jvdb_db *db)
{
    char source[JVDB_MAX_NAME_LEN + 1];
    int rc = jvdb_backup_replica_of(db, source, NULL);
    if (rc) return rc;
    jvdb_repo *repo = s->follow->repo;
    if (!repo && s->cfg.backup_repo && (rc = backup_repo_open(s, &repo))) return rc;
    if (!repo) {
        log_warn("'%s' was a replica; no repository to fence its old primary in (no --backup-repo)", source);
        return JVDB_OK;
    }
    rc = jvdb_backup_fence(repo, source, NULL);
    if (repo != s->follow->repo) jvdb_repo_close(repo);
    return rc;
}

/* Makes every replica database of this data directory a primary (a promote, or a start without
 * --follow on a former replica's directory), fencing the old primary in the repository. */
static int follow_make_primary(struct server *s, char *msg, size_t cap)
{
    char **names;
    size_t n;
    int rc = jvdb_db_list(s->env, &names, &n);
    if (rc) {
        snprintf(msg, cap, "%s", jvdb_errmsg());
        return rc;
    }
    size_t done = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        jvdb_db *db;
        if ((rc = srv_db_hold(s, names[i], &db))) break;
        if (jvdb_backup_replica_of(db, NULL, NULL) == JVDB_OK) {
            rc = follow_fence(s, db);
            if (!rc) rc = jvdb_backup_promote(db);
            done += rc == JVDB_OK;
        }
        srv_db_unhold(s, db);
    }
    if (rc) snprintf(msg, cap, "%s", jvdb_errmsg());
    else snprintf(msg, cap, "%zu database%s promoted", done, done == 1 ? "" : "s");
    jvdb_free_names(names, n);
    return rc;
}

int follow_start(struct server *s)
{
    struct follow_state *f = calloc(1, sizeof *f);
    if (!f) return -1;
    pthread_mutex_init(&f->mu, NULL);
    clock_cond_init(&f->cv);
    s->follow = f;
    char msg[512];
    if (!s->cfg.follow_repo) {
        /* A former replica started as a primary: its databases continue their history. */
        if (follow_make_primary(s, msg, sizeof msg)) {
            log_error("cannot make the former replica's databases primaries: %s", msg);
            return -1;
        }
        if (strncmp(msg, "0 ", 2)) log_info("started without --follow on a replica's data directory: %s", msg);
        return 0;
    }
    jvdb_repo_options o = { 0 };
    o.key_file = s->cfg.backup_repo_key_file;
    if (jvdb_repo_open(s->cfg.follow_repo, &o, &f->repo)) {
        log_error("--follow %s: %s", s->cfg.follow_repo, jvdb_errmsg());
        return -1;
    }
    /* A mistyped repository is an error now, not a replica that waits for it forever. */
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    if (jvdb_backup_list(f->repo, NULL, &v, &n)) {
        log_error("--follow %s: %s", s->cfg.follow_repo, jvdb_errmsg());
        return -1;
    }
    jvdb_free(v);
    atomic_store(&f->following, 1);
    log_info("replica of %s: seeding every database, then following its log every %.3f s (writes are refused)",
             s->cfg.follow_repo, (double)s->cfg.follow_interval_ms / 1000.0);
    follow_poll(s); /* the newest state of everything before serving */
    if (pthread_create(&f->thread, NULL, follow_main, s)) {
        log_error("cannot start the replica's follow thread");
        return -1;
    }
    f->started = 1;
    return 0;
}

/* Stops the tail thread and waits for it (its current step finishes). */
static void follow_join(struct follow_state *f)
{
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->cv);
    int started = f->started;
    f->started = 0;
    pthread_mutex_unlock(&f->mu);
    if (started) pthread_join(f->thread, NULL);
}

void follow_stop(struct server *s)
{
    struct follow_state *f = s->follow;
    if (!f) return;
    follow_join(f);
    jvdb_repo_close(f->repo);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->dbs);
    free(f);
    s->follow = NULL;
}

int follow_read_only(struct server *s) { return s->follow && atomic_load(&s->follow->following); }

int follow_promote(struct server *s, char *msg, size_t cap)
{
    struct follow_state *f = s->follow;
    if (!follow_read_only(s)) {
        snprintf(msg, cap, "this server is not a replica (it was started without --follow, or promoted already)");
        return JVDB_EINVAL;
    }
    follow_join(f); /* no apply runs from here on */
    int rc = follow_make_primary(s, msg, cap);
    if (rc) {
        /* Still a replica: it goes on following. */
        pthread_mutex_lock(&f->mu);
        f->stop = 0;
        f->started = pthread_create(&f->thread, NULL, follow_main, s) == 0;
        pthread_mutex_unlock(&f->mu);
        return rc;
    }
    atomic_store(&f->following, 0);
    pthread_mutex_lock(&f->mu);
    f->promoted = 1;
    pthread_mutex_unlock(&f->mu);
    log_info("promoted: no longer following %s; the server is writable (%s)", s->cfg.follow_repo, msg);
    return JVDB_OK;
}

int follow_lag(struct server *s, const char *name, double *lag)
{
    struct follow_state *f = s->follow;
    if (!follow_read_only(s)) return 0;
    int found = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->dbs[i].name, name)) continue;
        found = 1;
        int64_t d = clock_wall_ns() - f->dbs[i].last_time_ns;
        *lag = f->dbs[i].caught_up || !f->dbs[i].last_time_ns || d < 0 ? 0.0 : (double)d / 1e9;
    }
    pthread_mutex_unlock(&f->mu);
    return found;
}

char *follow_metrics(struct server *s)
{
    struct follow_state *f = s->follow;
    if (!follow_read_only(s)) return NULL;
    pthread_mutex_lock(&f->mu);
    size_t cap = 1024 + f->n * (4 * JVDB_MAX_NAME_LEN + JVDB_LOG_NAME_MAX + 300), len = 0;
    char *t = malloc(cap);
    if (t) {
        len += (size_t)snprintf(t + len, cap - len,
                                "# HELP jvdb_replication_lag_seconds Now minus the acknowledgement time of the newest "
                                "batch a replica applied, by database (0 when caught up with the repository).\n"
                                "# TYPE jvdb_replication_lag_seconds gauge\n");
        for (size_t i = 0; i < f->n; i++) {
            int64_t d = clock_wall_ns() - f->dbs[i].last_time_ns;
            double lag = f->dbs[i].caught_up || !f->dbs[i].last_time_ns || d < 0 ? 0.0 : (double)d / 1e9;
            len += (size_t)snprintf(t + len, cap - len, "jvdb_replication_lag_seconds{database=\"%s\"} %.3f\n",
                                    f->dbs[i].name, lag);
        }
        len += (size_t)snprintf(t + len, cap - len,
                                "# HELP jvdb_replication_applied_lsn The last LSN a replica applied, by database.\n"
                                "# TYPE jvdb_replication_applied_lsn gauge\n");
        for (size_t i = 0; i < f->n; i++)
            len += (size_t)snprintf(t + len, cap - len, "jvdb_replication_applied_lsn{database=\"%s\"} %" PRIu64 "\n",
                                    f->dbs[i].name, f->dbs[i].lsn);
        len +=
            (size_t)snprintf(t + len, cap - len,
                             "# HELP jvdb_replica_stuck 1 while a replica's database cannot go on past a damaged log "
                             "object (it serves its last good state until a backup covers past it); reason says why, "
                             "object names the log object.\n"
                             "# TYPE jvdb_replica_stuck gauge\n");
        for (size_t i = 0; i < f->n; i++)
            len += (size_t)snprintf(t + len, cap - len,
                                    "jvdb_replica_stuck{database=\"%s\",reason=\"%s\",object=\"%s\"} %d\n",
                                    f->dbs[i].name, f->dbs[i].stuck ? "damaged_log_object" : "",
                                    f->dbs[i].stuck ? f->dbs[i].bad_object : "", f->dbs[i].stuck);
    }
    pthread_mutex_unlock(&f->mu);
    return t;
}

int follow_error(struct server *s, const char *name, char *msg, size_t cap)
{
    struct follow_state *f = s->follow;
    if (!follow_read_only(s)) return 0;
    int stuck = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->dbs[i].name, name) && f->dbs[i].stuck) {
            stuck = 1;
            snprintf(msg, cap, "%s", f->dbs[i].stuck_reason);
        }
    pthread_mutex_unlock(&f->mu);
    return stuck;
}

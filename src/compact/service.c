/*
 * service.c — the background compactor (docs/ARCHITECTURE.md 7): a small pool of threads that looks at every
 * database of an environment every check interval, compacts those the policy picks, runs forced
 * requests at once, and keeps statistics and event callbacks.
 *
 * Scheduling is one queue of database names under one mutex.  A thread that finds the check time
 * passed scans the databases and queues those that need work; every thread takes names off the
 * queue.  The queue never holds a name twice, and a job first claims its database (compact_claim):
 * a database already being compacted by someone else (a forced REST or CLI compaction) is skipped
 * quietly, because the work is being done — it is neither an event nor a failure.  Between full checks the service
 * glances at each open database's dead ratio every second (a few additions per database), so a
 * database that crosses the ratio is handled within a second rather than a whole interval.
 *
 * Stopping sets the cancel flag that running compactions poll; they abandon their copy, remove
 * their temporary files, and the threads exit.
 */
#include "compact/compact.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "store/db.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLBACKS 8
#define MAX_THREADS   64
#define GLANCE_MS     1000

struct job {
    char name[JVDB_MAX_NAME_LEN + 1];
    int full;
    int forced;
};

struct db_record {
    char name[JVDB_MAX_NAME_LEN + 1];
    jvdb_compactor_totals totals;
    jvdb_compact_stats last;
};

struct jvdb_compactor {
    jvdb_env *env;
    jvdb_compactor_options opts;
    pthread_t threads[MAX_THREADS];
    uint32_t nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    volatile int cancel;
    int64_t next_check_ns;
    int64_t next_glance_ns;
    struct job *queue;
    size_t nqueue, capqueue;
    char running[MAX_THREADS][JVDB_MAX_NAME_LEN + 1]; /* per thread: the database it compacts */
    struct db_record *dbs;
    size_t ndbs, capdbs;
    jvdb_compactor_totals totals;
    struct {
        jvdb_compact_event_fn fn;
        void *arg;
    } callbacks[MAX_CALLBACKS];
    int ncallbacks;
};

void jvdb_compactor_options_init(jvdb_compactor_options *o)
{
    memset(o, 0, sizeof *o);
    o->threads = 1;
    o->check_interval_ms = 60000;
    jvdb_compact_policy_init(&o->policy);
}

/* The service's record of a database by name, added when missing; NULL when out of memory. */
static struct db_record *service_record(jvdb_compactor *c, const char *name)
{
    for (size_t i = 0; i < c->ndbs; i++)
        if (!strcmp(c->dbs[i].name, name)) return &c->dbs[i];
    struct db_record *n = grow_array(c->dbs, &c->capdbs, c->ndbs + 1, sizeof *n, 8);
    if (!n) return NULL;
    c->dbs = n;
    struct db_record *r = &c->dbs[c->ndbs++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

/* Queues a job unless that database is already queued (a forced or full request upgrades it). */
static int service_enqueue(jvdb_compactor *c, const char *name, int full, int forced)
{
    for (size_t i = 0; i < c->nqueue; i++) {
        if (!strcmp(c->queue[i].name, name)) {
            c->queue[i].full |= full;
            c->queue[i].forced |= forced;
            return JVDB_OK;
        }
    }
    struct job *n = grow_array(c->queue, &c->capqueue, c->nqueue + 1, sizeof *n, 8);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    c->queue = n;
    struct job *j = &c->queue[c->nqueue++];
    snprintf(j->name, sizeof j->name, "%s", name);
    j->full = full;
    j->forced = forced;
    return JVDB_OK;
}

static void service_compact(jvdb_compactor *c, const struct job *job, jvdb_db *db);

void compact_totals_add(jvdb_compactor_totals *t, const jvdb_compact_stats *st)
{
    t->compactions++;
    t->bytes_before += st->bytes_before;
    t->bytes_after += st->bytes_after;
    t->bytes_reclaimed += st->bytes_reclaimed;
    t->records_copied += st->records_copied;
    t->records_dropped += st->records_dropped;
    t->seconds += st->seconds;
}

/* Calls every registered event callback, outside the lock (callbacks are only added, so the count read under it
 * stays valid). */
static void service_emit(jvdb_compactor *c, const char *name, jvdb_compact_event ev, const jvdb_compact_stats *st,
                         int status, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    int n = c->ncallbacks;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) c->callbacks[i].fn(c->callbacks[i].arg, name, ev, st, status, msg);
}

/* The policy to judge db by: NULL (its own) when it has one, else the compactor's default. */
static const jvdb_compact_policy *service_policy(jvdb_compactor *c, jvdb_db *db)
{
    return compact_db_has_policy(db) ? NULL : &c->opts.policy;
}

/* Scans every database (full = the whole policy, else only the cheap dead-ratio glance); mu held. */
static void service_scan(jvdb_compactor *c, int full_check)
{
    char **names;
    size_t n;
    pthread_mutex_unlock(&c->mu);
    if (jvdb_db_list(c->env, &names, &n) != JVDB_OK) {
        pthread_mutex_lock(&c->mu);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        jvdb_db *db;
        if (env_db_acquire(c->env, names[i], &db) != JVDB_OK) continue;
        jvdb_compact_trigger why = JVDB_TRIGGER_NONE;
        int due;
        if (full_check) {
            due = jvdb_needs_compaction(db, service_policy(c, db), &why, NULL, 0);
        } else {
            jvdb_compact_policy p;
            compact_resolve_policy(db, service_policy(c, db), &p);
            jvdb_stats st;
            due = jvdb_stats_get(db, &st) == JVDB_OK && st.dead_ratio >= p.dead_ratio &&
                  jvdb_needs_compaction(db, &p, &why, NULL, 0);
        }
        env_db_release(c->env, db);
        if (due) {
            pthread_mutex_lock(&c->mu);
            service_enqueue(c, names[i], 0, 0);
            pthread_mutex_unlock(&c->mu);
        }
    }
    jvdb_free_names(names, n);
    pthread_mutex_lock(&c->mu);
}

/* Runs one queued job on the database it names, unless the database was dropped meanwhile. */
static void service_run_job(jvdb_compactor *c, const struct job *job)
{
    jvdb_db *db;
    if (env_db_acquire(c->env, job->name, &db) != JVDB_OK) return; /* dropped meanwhile */
    service_compact(c, job, db);
    env_db_release(c->env, db);
}

/* Compacts one database if it still needs it (or the job was forced) and no other compaction holds it, then adds
 * the result to the totals and tells the callbacks; a cancelled run is not a failure. */
static void service_compact(jvdb_compactor *c, const struct job *job, jvdb_db *db)
{
    if (db_is_dropping(db)) return;
    jvdb_compact_options o = {
        .full = job->full, .force = job->forced, .policy = service_policy(c, db), .cancel = &c->cancel
    };
    jvdb_compact_trigger why;
    if (!job->forced && !jvdb_needs_compaction(db, o.policy, &why, NULL, 0)) return;
    if (!compact_claim(db)) {
        log_info("compaction of '%s' skipped: another compaction of it is running", job->name);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->totals.running++;
    pthread_mutex_unlock(&c->mu);
    service_emit(c, job->name, JVDB_COMPACT_START, NULL, JVDB_OK, "");
    jvdb_compact_stats st;
    err_clear();
    int rc = compact_claimed(db, &o, &st);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", rc ? jvdb_errmsg() : "");
    pthread_mutex_lock(&c->mu);
    c->totals.running--;
    struct db_record *r = service_record(c, job->name);
    if (rc == JVDB_OK && st.trigger != JVDB_TRIGGER_NONE) {
        compact_totals_add(&c->totals, &st);
        if (r) {
            compact_totals_add(&r->totals, &st);
            r->last = st;
        }
    } else if (rc != JVDB_OK && !(rc == JVDB_EBUSY && c->cancel)) {
        c->totals.failures++;
        if (r) r->totals.failures++;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == JVDB_OK) {
        if (st.trigger != JVDB_TRIGGER_NONE) service_emit(c, job->name, JVDB_COMPACT_FINISH, &st, JVDB_OK, "");
    } else if (rc == JVDB_EBUSY && __atomic_load_n(&c->cancel, __ATOMIC_RELAXED)) {
        log_info("compaction of '%s' abandoned: the compactor is stopping", job->name);
    } else {
        log_warn("compaction of '%s' failed: %s", job->name, msg);
        service_emit(c, job->name, JVDB_COMPACT_FAIL, NULL, rc, msg);
    }
}

/* A compactor thread: scans the databases at each check (and glances between checks), and runs queued jobs, never
 * two on the same database at once. */
static void *service_main(void *arg)
{
    jvdb_compactor *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        int64_t now = clock_mono_ns();
        if (c->nqueue == 0 && now >= c->next_check_ns) {
            c->next_check_ns = now + (int64_t)c->opts.check_interval_ms * 1000000;
            c->next_glance_ns = now + (int64_t)GLANCE_MS * 1000000;
            service_scan(c, 1);
            continue;
        }
        if (c->nqueue == 0 && now >= c->next_glance_ns) {
            c->next_glance_ns = now + (int64_t)GLANCE_MS * 1000000;
            service_scan(c, 0);
            continue;
        }
        if (c->nqueue == 0) {
            int64_t wake = c->next_check_ns < c->next_glance_ns ? c->next_check_ns : c->next_glance_ns;
            clock_cond_wait_until(&c->cv, &c->mu, wake);
            continue;
        }
        /* Take the first queued database that no other thread is compacting. */
        size_t pick = c->nqueue;
        for (size_t i = 0; i < c->nqueue && pick == c->nqueue; i++) {
            int busy = 0;
            for (uint32_t t = 0; t < MAX_THREADS; t++) busy |= !strcmp(c->running[t], c->queue[i].name);
            if (!busy) pick = i;
        }
        if (pick == c->nqueue) {
            pthread_cond_wait(&c->cv, &c->mu);
            continue;
        }
        struct job job = c->queue[pick];
        memmove(c->queue + pick, c->queue + pick + 1, (c->nqueue - pick - 1) * sizeof *c->queue);
        c->nqueue--;
        uint32_t me = 0;
        while (me < MAX_THREADS - 1 && c->running[me][0]) me++;
        snprintf(c->running[me], sizeof c->running[me], "%s", job.name);
        pthread_mutex_unlock(&c->mu);
        service_run_job(c, &job);
        pthread_mutex_lock(&c->mu);
        c->running[me][0] = '\0';
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int jvdb_compactor_start(jvdb_env *env, const jvdb_compactor_options *opts, jvdb_compactor **out)
{
    err_clear();
    jvdb_compactor *c = calloc(1, sizeof *c);
    if (!c) return err_set(JVDB_ENOMEM, "out of memory");
    c->env = env;
    if (opts) c->opts = *opts;
    else jvdb_compactor_options_init(&c->opts);
    if (c->opts.threads == 0) c->opts.threads = 1;
    if (c->opts.threads > MAX_THREADS) c->opts.threads = MAX_THREADS;
    if (c->opts.check_interval_ms == 0) c->opts.check_interval_ms = 60000;
    pthread_mutex_init(&c->mu, NULL);
    clock_cond_init(&c->cv);
    int64_t now = clock_mono_ns();
    c->next_check_ns = now + (int64_t)c->opts.check_interval_ms * 1000000;
    c->next_glance_ns = now + (int64_t)GLANCE_MS * 1000000;
    for (uint32_t i = 0; i < c->opts.threads; i++) {
        if (pthread_create(&c->threads[i], NULL, service_main, c) != 0) {
            jvdb_compactor_stop(c);
            return err_set(JVDB_ENOMEM, "cannot start compactor thread %u", i);
        }
        c->nthreads++;
    }
    *out = c;
    return JVDB_OK;
}

int jvdb_compactor_on_event(jvdb_compactor *c, jvdb_compact_event_fn fn, void *arg)
{
    pthread_mutex_lock(&c->mu);
    int rc = JVDB_OK;
    if (c->ncallbacks == MAX_CALLBACKS) {
        rc = err_set(JVDB_EINVAL, "at most %d compaction callbacks", MAX_CALLBACKS);
    } else {
        c->callbacks[c->ncallbacks].fn = fn;
        c->callbacks[c->ncallbacks].arg = arg;
        c->ncallbacks++;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int jvdb_compactor_force(jvdb_compactor *c, const char *db_name, int full)
{
    err_clear();
    jvdb_db *db;
    int rc = jvdb_db_open(c->env, db_name, &db);
    if (rc) return rc;
    pthread_mutex_lock(&c->mu);
    rc = service_enqueue(c, db_name, full, 1);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void jvdb_compactor_poke(jvdb_compactor *c)
{
    pthread_mutex_lock(&c->mu);
    c->next_check_ns = 0;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int jvdb_compactor_stats(jvdb_compactor *c, const char *db_name, jvdb_compactor_totals *totals,
                         jvdb_compact_stats *last)
{
    err_clear();
    pthread_mutex_lock(&c->mu);
    int rc = JVDB_OK;
    if (!db_name) {
        if (totals) *totals = c->totals;
        if (last) memset(last, 0, sizeof *last);
    } else {
        struct db_record *r = NULL;
        for (size_t i = 0; i < c->ndbs; i++)
            if (!strcmp(c->dbs[i].name, db_name)) r = &c->dbs[i];
        if (totals) {
            if (r) *totals = r->totals;
            else memset(totals, 0, sizeof *totals);
        }
        if (last) {
            if (r) *last = r->last;
            else memset(last, 0, sizeof *last);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void jvdb_compactor_stop(jvdb_compactor *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    __atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED); /* polled by running compactions without mu */
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    for (uint32_t i = 0; i < c->nthreads; i++) pthread_join(c->threads[i], NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->queue);
    free(c->dbs);
    free(c);
}

/*
 * ready.c — GET /readyz: whether this server is ready for traffic, for load balancers and
 * orchestrators (GET /health only says the process is alive).
 *
 * Ready means: every database that existed at start has been opened (recovery done) and its
 * index has caught up with the vectors stored (nothing pending: searches use the graph, not the
 * exact fallback).  A thread started with the server does that work, one database after the
 * other, and leaves a one-line reason for /readyz to give with its 503 ("opening database 'a'
 * (1 of 3)", "index of database 'b' is catching up: 5123 vectors pending (2 of 3)").
 *
 * Invariants:
 *  (1) The thread never holds a database for more than one bounded wait (READY_WAIT_MS): a drop
 *      of that database waits for its holders, and must not wait for a whole index build.
 *  (2) Once every database has been opened, the answer stays 200 (later writes make vectors
 *      pending again: that is normal service, not unreadiness) — except for a database that
 *      failed to open, which keeps the answer 503 until it opens or is dropped.  Failed ones are
 *      tried again by /readyz itself, at most every READY_RETRY_NS (recovery of a large database
 *      is not free, and probes come every few seconds).
 *  (3) Stopping is prompt: the thread looks at `stop` between waits.
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/grow.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READY_WAIT_MS    200
#define READY_RETRY_NS   (30 * 1000000000ll)
#define READY_REASON_MAX 600

struct ready_state {
    pthread_mutex_t mu; /* guards everything below; never held across a library call */
    int stop;
    int done;                      /* every database has been looked at once */
    char reason[READY_REASON_MAX]; /* why not ready yet, while !done */
    struct ready_failed {
        char *name, *why;
    } * failed; /* databases that could not be opened, and why */
    size_t nfailed, capfailed;
    int64_t retry_after_ns; /* monotonic: when /readyz may try the failed ones again */
    size_t total;
    pthread_t thread;
    int started;
};

static void ready_set_reason(struct ready_state *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets the reason /readyz gives while not ready. */
static void ready_set_reason(struct ready_state *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&r->mu);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    pthread_mutex_unlock(&r->mu);
    va_end(ap);
}

/* Whether the server asked the warm-up to stop. */
static int ready_stopping(struct ready_state *r)
{
    pthread_mutex_lock(&r->mu);
    int st = r->stop;
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* Records a database that failed to open, and why (/readyz stays 503 while any is listed); out of memory drops the
 * entry. */
static void ready_add_failed(struct ready_state *r, const char *name, const char *why)
{
    pthread_mutex_lock(&r->mu);
    struct ready_failed *f = grow_array(r->failed, &r->capfailed, r->nfailed + 1, sizeof *f, 4);
    if (f) {
        r->failed = f;
        f[r->nfailed] = (struct ready_failed){ strdup(name), strdup(why ? why : "") };
        if (f[r->nfailed].name && f[r->nfailed].why) r->nfailed++;
        else {
            free(f[r->nfailed].name);
            free(f[r->nfailed].why);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* Opens one database and waits, in bounded steps (invariant 1), for its index to catch up. */
static void ready_warm_one(struct server *s, struct ready_state *r, const char *name, size_t i, size_t n)
{
    ready_set_reason(r, "opening database '%s' (%zu of %zu)", name, i + 1, n);
    for (;;) {
        jvdb_db *db = NULL;
        int rc = srv_db_hold(s, name, &db);
        if (rc == JVDB_ENOTFOUND) return; /* dropped meanwhile */
        if (rc != JVDB_OK) {
            log_error("readiness: database '%s' cannot be opened: %s", name, jvdb_errmsg());
            ready_add_failed(r, name, jvdb_errmsg());
            return;
        }
        jvdb_index_status st;
        rc = jvdb_db_index_status(db, &st); /* starts the index thread */
        if (rc == JVDB_OK && st.pending)
            ready_set_reason(r, "index of database '%s' is catching up: %llu vectors pending (%zu of %zu)", name,
                             (unsigned long long)st.pending, i + 1, n);
        rc = rc == JVDB_OK ? jvdb_db_index_wait(db, READY_WAIT_MS) : rc;
        srv_db_unhold(s, db);
        if (rc != JVDB_EBUSY || ready_stopping(r)) return;
    }
}

/* The warm-up thread: opens every database and waits for its index in turn, then marks the server ready unless it
 * was stopped. */
static void *ready_main(void *arg)
{
    struct server *s = arg;
    struct ready_state *r = s->ready;
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) {
        ready_add_failed(r, "*", jvdb_errmsg());
        n = 0;
    }
    pthread_mutex_lock(&r->mu);
    r->total = n;
    pthread_mutex_unlock(&r->mu);
    int64_t t0 = clock_mono_ns();
    for (size_t i = 0; i < n && !ready_stopping(r); i++) ready_warm_one(s, r, names[i], i, n);
    jvdb_free_names(names, n);
    pthread_mutex_lock(&r->mu);
    int stopped = r->stop;
    r->done = !stopped;
    r->retry_after_ns = clock_mono_ns() + READY_RETRY_NS;
    size_t failed = r->nfailed;
    pthread_mutex_unlock(&r->mu);
    if (!stopped)
        log_info("ready: %zu databases opened and indexed in %.1f s%s", n - failed,
                 (double)(clock_mono_ns() - t0) / 1e9, failed ? " (some failed to open: /readyz answers 503)" : "");
    return NULL;
}

int ready_start(struct server *s)
{
    struct ready_state *r = calloc(1, sizeof *r);
    if (!r) return -1;
    pthread_mutex_init(&r->mu, NULL);
    snprintf(r->reason, sizeof r->reason, "starting");
    s->ready = r;
    if (pthread_create(&r->thread, NULL, ready_main, s)) {
        log_error("cannot start the readiness thread");
        return -1;
    }
    r->started = 1;
    return 0;
}

void ready_stop(struct server *s)
{
    struct ready_state *r = s->ready;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    if (r->started) pthread_join(r->thread, NULL);
    for (size_t i = 0; i < r->nfailed; i++) {
        free(r->failed[i].name);
        free(r->failed[i].why);
    }
    free(r->failed);
    pthread_mutex_destroy(&r->mu);
    free(r);
    s->ready = NULL;
}

/* Invariant 2: tries the failed databases again; those that open or are gone leave the list. */
static void ready_retry_failed(struct server *s, struct ready_state *r)
{
    pthread_mutex_lock(&r->mu);
    int due = r->nfailed && clock_mono_ns() >= r->retry_after_ns;
    if (due) r->retry_after_ns = clock_mono_ns() + READY_RETRY_NS;
    size_t n = due ? r->nfailed : 0;
    char **names = n ? calloc(n, sizeof *names) : NULL;
    for (size_t i = 0; names && i < n; i++) names[i] = strdup(r->failed[i].name);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; names && i < n; i++) {
        jvdb_db *db = NULL;
        int rc = names[i] ? srv_db_hold(s, names[i], &db) : JVDB_ENOMEM;
        if (rc == JVDB_OK) srv_db_unhold(s, db);
        if (rc != JVDB_OK && rc != JVDB_ENOTFOUND) continue;
        pthread_mutex_lock(&r->mu);
        for (size_t k = 0; k < r->nfailed; k++) {
            if (strcmp(r->failed[k].name, names[i])) continue;
            free(r->failed[k].name);
            free(r->failed[k].why);
            r->failed[k] = r->failed[r->nfailed - 1];
            r->nfailed--;
            break;
        }
        pthread_mutex_unlock(&r->mu);
    }
    for (size_t i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

void route_readyz(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    struct ready_state *r = s->ready;
    if (!r) {
        http_error(rs, 503, "NOT_READY", "starting");
        return;
    }
    ready_retry_failed(s, r);
    pthread_mutex_lock(&r->mu);
    int done = r->done;
    size_t total = r->total, nfailed = r->nfailed;
    char reason[READY_REASON_MAX + 200];
    if (!done) snprintf(reason, sizeof reason, "%s", r->reason);
    else if (nfailed)
        snprintf(reason, sizeof reason, "database '%s' cannot be opened: %s%s", r->failed[0].name, r->failed[0].why,
                 nfailed > 1 ? " (and others)" : "");
    pthread_mutex_unlock(&r->mu);
    if (!done || nfailed) {
        rs->retry_after_s = 1;
        http_error(rs, 503, "NOT_READY", "%s", reason);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "status", "ready");
    jw_kuint(&w, "databases", total);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

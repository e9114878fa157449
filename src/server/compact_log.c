/*
 * compact_log.c — the totals of compactions run through the API (POST .../compact, and its jobs):
 * per database and over all, with the statistics of each database's last run, for GET
 * /v1/compaction, the database object and /metrics; and the compactor's event hook.
 *
 * Invariant: the background service keeps its own totals in the library; this log counts only
 * API runs, so every report adds the two without counting a run twice.  All state is guarded by
 * `mu`, never held across I/O.  Shared state: routes and metrics.c call it, it calls nothing of
 * src/server.
 */
#include "server/srv.h"

#include "compact/compact.h"
#include "core/grow.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct compact_rec {
    char name[JVDB_MAX_NAME_LEN + 1];
    jvdb_compactor_totals totals;
    jvdb_compact_stats last;
};

struct compact_log {
    pthread_mutex_t mu;
    jvdb_compactor_totals all;
    struct compact_rec *recs;
    size_t n, cap;
};

int compact_log_init(struct server *s)
{
    struct compact_log *l = calloc(1, sizeof *l);
    if (!l) return -1;
    pthread_mutex_init(&l->mu, NULL);
    s->compactions = l;
    return 0;
}

void compact_log_free(struct server *s)
{
    struct compact_log *l = s->compactions;
    if (!l) return;
    pthread_mutex_destroy(&l->mu);
    free(l->recs);
    free(l);
    s->compactions = NULL;
}

void compact_log_record(struct server *s, const char *name, const jvdb_compact_stats *st, int failed)
{
    struct compact_log *l = s->compactions;
    pthread_mutex_lock(&l->mu);
    struct compact_rec *r = NULL;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->recs[i].name, name)) r = &l->recs[i];
    struct compact_rec *nr = r ? NULL : grow_array(l->recs, &l->cap, l->n + 1, sizeof *nr, 8);
    if (nr) {
        l->recs = nr;
        r = &l->recs[l->n++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", name);
    }
    if (failed) {
        l->all.failures++;
        if (r) r->totals.failures++;
    } else {
        compact_totals_add(&l->all, st);
        if (r) {
            compact_totals_add(&r->totals, st);
            r->last = *st;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

/* Adds totals b into a (the server's log and the library's background compactor, for one report). */
static void compact_sum(jvdb_compactor_totals *a, const jvdb_compactor_totals *b)
{
    a->compactions += b->compactions;
    a->failures += b->failures;
    a->bytes_before += b->bytes_before;
    a->bytes_after += b->bytes_after;
    a->bytes_reclaimed += b->bytes_reclaimed;
    a->records_copied += b->records_copied;
    a->records_dropped += b->records_dropped;
    a->seconds += b->seconds;
    a->running += b->running;
}

void compact_log_totals(struct server *s, const char *name, jvdb_compactor_totals *t, jvdb_compact_stats *last)
{
    jvdb_compactor_totals svc = { 0 };
    jvdb_compact_stats svc_last = { 0 };
    if (s->compactor) jvdb_compactor_stats(s->compactor, name, &svc, &svc_last);
    struct compact_log *l = s->compactions;
    memset(t, 0, sizeof *t);
    jvdb_compact_stats api_last = { 0 };
    pthread_mutex_lock(&l->mu);
    if (!name) {
        *t = l->all;
    } else {
        for (size_t i = 0; i < l->n; i++) {
            if (strcmp(l->recs[i].name, name)) continue;
            *t = l->recs[i].totals;
            api_last = l->recs[i].last;
        }
    }
    pthread_mutex_unlock(&l->mu);
    compact_sum(t, &svc);
    if (last) *last = api_last.finished_ns >= svc_last.finished_ns ? api_last : svc_last;
}

void compact_log_event(void *arg, const char *db_name, jvdb_compact_event ev, const jvdb_compact_stats *st, int status,
                       const char *message)
{
    (void)arg;
    (void)st;
    (void)status;
    (void)message;
    /* The library already logs every finished and failed compaction (with its numbers); the
     * start of a background run is the one event nobody else reports. */
    if (ev == JVDB_COMPACT_START) log_info("background compaction of '%s' started", db_name);
}

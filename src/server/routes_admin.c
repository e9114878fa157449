/*
 * routes_admin.c — health, status, shutdown, /metrics, and the persistence admin API for
 * compaction: per-database storage statistics, compaction on request, and the compaction service's
 * state.
 *
 * Compactions asked for over HTTP run on the request's thread through jvdb_compact() (the caller
 * gets the result when it is done) with the server's cancel flag, so a stop abandons them cleanly;
 * with {"async": true} the same code runs as a job (jobs.c) with the job's cancel flag.  Index
 * rebuilds (POST .../index/rebuild) work the same way.
 * The background service keeps its own totals; compact_log.c keeps the same totals for API runs
 * and every report adds the two.  The library logs each finished compaction.
 */
#include "server/jobs.h"
#include "server/srv.h"

#include "core/clock.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- JSON pieces */

/* Writes one compaction's result as the JSON object of API.md (camelCase keys, finishedAt null if unset). */
static void route_write_compact_stats(struct jw *w, const jvdb_compact_stats *st)
{
    jw_obj(w);
    jw_kstr(w, "trigger", jvdb_compact_trigger_name(st->trigger));
    jw_kbool(w, "full", st->full);
    jw_kuint(w, "segmentsIn", st->segments_in);
    jw_kuint(w, "segmentsOut", st->segments_out);
    jw_kuint(w, "bytesBefore", st->bytes_before);
    jw_kuint(w, "bytesAfter", st->bytes_after);
    jw_kuint(w, "bytesReclaimed", st->bytes_reclaimed);
    jw_kuint(w, "recordsCopied", st->records_copied);
    jw_kuint(w, "recordsDropped", st->records_dropped);
    jw_kuint(w, "tombstonesDropped", st->tombstones_dropped);
    jw_kdouble(w, "seconds", st->seconds);
    jw_key(w, "finishedAt");
    if (st->finished_ns) jw_time(w, st->finished_ns);
    else jw_null(w);
    jw_obj_end(w);
}

/* Writes compaction totals (of a database or of the server) as a JSON object. */
static void route_write_totals(struct jw *w, const jvdb_compactor_totals *t)
{
    jw_obj(w);
    jw_kuint(w, "compactions", t->compactions);
    jw_kuint(w, "failures", t->failures);
    jw_kuint(w, "bytesBefore", t->bytes_before);
    jw_kuint(w, "bytesAfter", t->bytes_after);
    jw_kuint(w, "bytesReclaimed", t->bytes_reclaimed);
    jw_kuint(w, "recordsCopied", t->records_copied);
    jw_kuint(w, "recordsDropped", t->records_dropped);
    jw_kdouble(w, "seconds", t->seconds);
    jw_obj_end(w);
}

/* {"due", "trigger", "reason", "totals", "lastRun"} for one database. */
static void route_write_compaction_state(struct server *s, struct jw *w, jvdb_db *db)
{
    jvdb_compact_trigger why = JVDB_TRIGGER_NONE;
    char reason[256] = "";
    int due = jvdb_needs_compaction(db, NULL, &why, reason, sizeof reason);
    jvdb_compactor_totals t;
    jvdb_compact_stats last;
    compact_log_totals(s, jvdb_db_name(db), &t, &last);
    jw_obj(w);
    jw_kbool(w, "due", due == 1);
    jw_kstr(w, "trigger", jvdb_compact_trigger_name(why));
    jw_kstr(w, "reason", reason);
    jw_key(w, "totals");
    route_write_totals(w, &t);
    jw_key(w, "lastRun");
    if (last.finished_ns) route_write_compact_stats(w, &last);
    else jw_null(w);
    jw_obj_end(w);
}

/* ---------------------------------------------------------------- routes */

void route_health(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    struct jw w;
    jw_init(&w);
    /* The original JadeVectorDB's fields: status "healthy", timestamp (ms since the epoch) and
     * checks.  The checks say only what holds while this answers: the data directory is open
     * (held by this process) and HTTP is served; readiness of each database is /readyz's. */
    int stopping = atomic_load(&s->stopping);
    jw_obj(&w);
    jw_kstr(&w, "status", stopping ? "stopping" : "healthy");
    jw_kstr(&w, "version", JVDB_VERSION);
    jw_kint(&w, "timestamp", clock_wall_ns() / 1000000);
    jw_key(&w, "checks");
    jw_obj(&w);
    jw_kstr(&w, "database", "ok");
    jw_kstr(&w, "network", stopping ? "stopping" : "ok");
    jw_obj_end(&w);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

void route_status(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    jvdb_stats sum = { 0 };
    size_t n = 0;
    char **names = NULL;
    if (jvdb_db_list(s->env, &names, &n) == JVDB_OK) {
        for (size_t i = 0; i < n; i++) {
            jvdb_db *db;
            jvdb_stats st;
            if (srv_db_hold(s, names[i], &db) != JVDB_OK) continue; /* dropped meanwhile */
            int rc = jvdb_stats_get(db, &st);
            srv_db_unhold(s, db);
            if (rc != JVDB_OK) continue;
            sum.live_records += st.live_records;
            sum.file_bytes += st.file_bytes;
            sum.live_bytes += st.live_bytes;
            sum.dead_bytes += st.dead_bytes;
            sum.segments += st.segments;
        }
        jvdb_free_names(names, n);
    }
    jvdb_compactor_totals ct;
    compact_log_totals(s, NULL, &ct, NULL);

    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "status", atomic_load(&s->stopping) ? "stopping" : "ok");
    jw_kstr(&w, "version", JVDB_VERSION);
    jw_kdouble(&w, "uptimeSeconds", (double)(clock_mono_ns() - s->started_mono_ns) / 1e9);
    jw_key(&w, "startedAt");
    jw_time(&w, s->started_wall_ns);
    jw_kstr(&w, "dataDirectory", s->cfg.data_dir);
    jw_kbool(&w, "authentication", auth_enabled(s));
    jw_kuint(&w, "databases", n);
    jw_key(&w, "totals");
    jw_obj(&w);
    jw_kuint(&w, "vectors", sum.live_records);
    jw_kuint(&w, "fileBytes", sum.file_bytes);
    jw_kuint(&w, "liveBytes", sum.live_bytes);
    jw_kuint(&w, "deadBytes", sum.dead_bytes);
    jw_kuint(&w, "segments", sum.segments);
    jw_obj_end(&w);
    jw_key(&w, "compaction");
    jw_obj(&w);
    jw_kuint(&w, "running", (uint64_t)ct.running);
    jw_kuint(&w, "compactions", ct.compactions);
    jw_kuint(&w, "bytesReclaimed", ct.bytes_reclaimed);
    jw_obj_end(&w);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

void route_shutdown(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "status", "stopping");
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
    /* The main thread stops accepting and then waits for in-flight requests, this one included, so
     * the answer still goes out. */
    log_info("shutdown requested over HTTP");
    server_request_stop(s);
}

void route_promote(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    char msg[512];
    int rc = follow_promote(s, msg, sizeof msg);
    if (rc == JVDB_EINVAL) {
        http_error(rs, 409, "NOT_A_REPLICA", "%s", msg);
        return;
    }
    if (rc) {
        http_error(rs, 500, "PROMOTE_FAILED", "the promote failed, the server is still a replica: %s", msg);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "status", "primary");
    jw_kstr(&w, "message", msg);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

void route_metrics(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    size_t len = 0;
    char *text = metrics_render(s, &len);
    if (!text) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory rendering metrics");
        return;
    }
    http_reply_text(rs, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

void route_db_stats(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "databaseId", jvdb_db_name(db));
    route_write_stats(&w, db);
    ship_write_stats(s, &w, jvdb_db_name(db));
    double lag;
    if (follow_lag(s, jvdb_db_name(db), &lag)) jw_kdouble(&w, "replicationLagSeconds", lag);
    char ferr[512];
    if (follow_error(s, jvdb_db_name(db), ferr, sizeof ferr)) jw_kstr(&w, "replicationError", ferr);
    jw_key(&w, "compaction");
    route_write_compaction_state(s, &w, db);
    /* The HNSW graph is built by a background thread: how far it has got (pending vectors are
     * searched exactly meanwhile, so results are complete, only slower). */
    jvdb_index_status ix;
    if (jvdb_db_index_status(db, &ix) == JVDB_OK) {
        jw_key(&w, "index");
        jw_obj(&w);
        jw_kstr(&w, "type", ix.type == JVDB_INDEX_FLAT ? "FLAT" : "HNSW");
        jw_kuint(&w, "nodes", ix.nodes);
        jw_kuint(&w, "deletedNodes", ix.deleted_nodes);
        jw_kuint(&w, "pending", ix.pending);
        jw_kuint(&w, "memoryBytes", ix.memory_bytes);
        /* Readiness (issue 11): loading the saved graph, catching up, rebuilding (and why), ready. */
        jw_kstr(&w, "state", jvdb_index_state_name(ix.state));
        jw_kuint(&w, "loadedNodes", ix.loaded_nodes);
        jw_kuint(&w, "savedLsn", ix.saved_lsn);
        jw_kstr(&w, "reason", ix.reason);
        jw_obj_end(&w);
    }
    jw_obj_end(&w);
    route_db_release(s, db);
    http_reply_json(rs, 200, &w);
}

/* What one compaction needs, asked for now or as a job. */
struct compact_req {
    char name[JVDB_MAX_NAME_LEN + 1];
    jvdb_compact_options o;
};

/* Compacts database `name` and writes the answer; j is the job running it (NULL: the request's
 * own thread, cancelled by a stop). */
static void compact_exec(struct server *s, const char *name_in, jvdb_compact_options o, struct job *j,
                         struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, name_in, rs);
    if (!db) return;
    o.cancel = j ? job_cancel_flag(j) : &s->cancel;
    if (j) {
        o.progress = job_compact_progress;
        o.progress_arg = j;
    }
    jvdb_compact_stats st;
    memset(&st, 0, sizeof st);
    char reason[256] = "";
    jvdb_compact_trigger why = JVDB_TRIGGER_NONE;
    jvdb_needs_compaction(db, NULL, &why, reason, sizeof reason);
    if (j) job_set_cancellable(j, 1); /* jvdb_compact polls the flag and stops cleanly */
    int rc = jvdb_compact(db, &o, &st);
    if (j) job_set_cancellable(j, 0);
    const char *name = jvdb_db_name(db);
    if (rc == JVDB_OK && st.trigger != JVDB_TRIGGER_NONE) {
        compact_log_record(s, name, &st, 0);
    } else if (rc != JVDB_OK && rc != JVDB_EBUSY) {
        compact_log_record(s, name, &st, 1);
        log_warn("compaction of '%s' requested over HTTP failed: %s", name, jvdb_errmsg());
    }
    if (rc == JVDB_EBUSY && __atomic_load_n(o.cancel, __ATOMIC_RELAXED)) {
        route_db_release(s, db);
        if (j) http_error(rs, 409, "CANCELLED", "compaction of '%s' cancelled; nothing was changed", name_in);
        else http_error(rs, 503, "SHUTTING_DOWN", "compaction of '%s' abandoned: the server is shutting down", name_in);
        return;
    }
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        route_db_release(s, db);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "databaseId", name);
    jw_kbool(&w, "compacted", st.trigger != JVDB_TRIGGER_NONE);
    if (st.trigger == JVDB_TRIGGER_NONE)
        jw_kstr(&w, "reason", *reason ? reason : "the compaction policy does not ask for it (send {\"force\": true})");
    jw_key(&w, "result");
    route_write_compact_stats(&w, &st);
    jw_key(&w, "stats");
    jw_obj(&w);
    route_write_stats(&w, db);
    jw_obj_end(&w);
    jw_obj_end(&w);
    route_db_release(s, db);
    http_reply_json(rs, 200, &w);
}

/* A compaction job's work. */
static void compact_job(struct server *s, struct job *j, void *arg, struct http_resp *rs)
{
    struct compact_req *c = arg;
    compact_exec(s, c->name, c->o, j, rs);
}

/* 0 when database `name` exists now (a job for it may be queued), else -1 after answering. */
static int route_db_exists(struct server *s, const char *name, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, name, rs);
    if (!db) return -1;
    route_db_release(s, db);
    return 0;
}

void route_db_compact(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    static const char *const fields[] = { "force", "full", "async", NULL };
    json_t *body = route_body_opt(s, rq, rs, fields);
    if (!body) return;
    char err[256];
    jvdb_compact_options o = { 0 };
    int async = 0;
    if (jr_bool(body, "force", &o.force, err, sizeof err) < 0 || jr_bool(body, "full", &o.full, err, sizeof err) < 0 ||
        jr_bool(body, "async", &async, err, sizeof err) < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        json_decref(body);
        return;
    }
    json_decref(body);
    if (!async) {
        compact_exec(s, rq->params[0], o, NULL, rs);
        return;
    }
    if (route_db_exists(s, rq->params[0], rs)) return;
    struct compact_req *c = calloc(1, sizeof *c);
    if (!c) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    snprintf(c->name, sizeof c->name, "%s", rq->params[0]);
    c->o = o;
    jobs_submit(s, rs, JOB_COMPACT, c->name, 0, compact_job, c, free);
}

/* Rebuilds the HNSW graph of `name` and waits for it; j is the job running it (NULL: the request's
 * thread).  A stop ends the wait (the rebuild itself belongs to the database and goes on). */
static void rebuild_exec(struct server *s, const char *name, struct job *j, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, name, rs);
    if (!db) return;
    int64_t t0 = clock_mono_ns();
    jvdb_index_options io;
    jvdb_db_get_index(db, &io);
    int rc = jvdb_db_index_rebuild(db);
    while (rc == JVDB_OK) {
        rc = jvdb_db_index_wait(db, 200);
        if (rc != JVDB_EBUSY) break;
        rc = JVDB_OK;
        jvdb_index_status ix;
        if (j && jvdb_db_index_status(db, &ix) == JVDB_OK) job_progress(j, ix.nodes, ix.nodes + ix.pending);
        if (atomic_load(&s->stopping)) {
            route_db_release(s, db);
            http_error(rs, 503, "INTERRUPTED",
                       "interrupted by a restart of the server: the index of '%s' is rebuilt again when it opens",
                       name);
            return;
        }
    }
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        route_db_release(s, db);
        return;
    }
    jvdb_index_status ix;
    memset(&ix, 0, sizeof ix);
    jvdb_db_index_status(db, &ix);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "databaseId", jvdb_db_name(db));
    jw_kstr(&w, "type", io.type == JVDB_INDEX_FLAT ? "FLAT" : "HNSW");
    jw_kbool(&w, "rebuilt", io.type == JVDB_INDEX_HNSW);
    if (io.type != JVDB_INDEX_HNSW)
        jw_kstr(&w, "reason", "the index is FLAT (exact scan): there is no graph to rebuild");
    jw_kuint(&w, "nodes", ix.nodes);
    jw_kstr(&w, "state", jvdb_index_state_name(ix.state));
    jw_kdouble(&w, "seconds", (double)(clock_mono_ns() - t0) / 1e9);
    jw_obj_end(&w);
    route_db_release(s, db);
    http_reply_json(rs, 200, &w);
}

/* An index rebuild job's work (arg: the database name). */
static void rebuild_job(struct server *s, struct job *j, void *arg, struct http_resp *rs)
{
    rebuild_exec(s, arg, j, rs);
}

void route_index_rebuild(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    static const char *const fields[] = { "async", NULL };
    json_t *body = route_body_opt(s, rq, rs, fields);
    if (!body) return;
    char err[256];
    int async = 0;
    int bad = jr_bool(body, "async", &async, err, sizeof err) < 0;
    json_decref(body);
    if (bad) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        return;
    }
    if (!async) {
        rebuild_exec(s, rq->params[0], NULL, rs);
        return;
    }
    if (route_db_exists(s, rq->params[0], rs)) return;
    char *name = strdup(rq->params[0]);
    if (!name) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    jobs_submit(s, rs, JOB_REBUILD, name, 0, rebuild_job, name, free);
}

void route_compaction(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    jvdb_compactor_totals t;
    compact_log_totals(s, NULL, &t, NULL);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "state", !s->compactor ? "off" : atomic_load(&s->stopping) ? "stopping" : "running");
    jw_kuint(&w, "threads", s->cfg.compaction_threads);
    jw_kuint(&w, "checkIntervalMs", s->cfg.compaction_interval_ms);
    jw_kuint(&w, "running", (uint64_t)t.running);
    jw_key(&w, "totals");
    route_write_totals(&w, &t);
    jw_key(&w, "databases");
    jw_arr(&w);
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) == JVDB_OK) {
        for (size_t i = 0; i < n; i++) {
            jvdb_db *db;
            if (srv_db_hold(s, names[i], &db) != JVDB_OK) continue; /* dropped meanwhile */
            jw_obj(&w);
            jw_kstr(&w, "databaseId", names[i]);
            jw_key(&w, "compaction");
            route_write_compaction_state(s, &w, db);
            jw_obj_end(&w);
            srv_db_unhold(s, db);
        }
        jvdb_free_names(names, n);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

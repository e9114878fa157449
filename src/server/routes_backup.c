/*
 * routes_backup.c — the backup half of the admin API (create, list, show, delete, verify, restore).
 * Every backup goes through backup_run() and every repository-wide operation through the mutex of
 * backup_log.c, which this file only calls.
 *
 * Repository handles are opened per operation, since the library allows one thread per handle,
 * and every operation that reads a whole chain or changes the repository (create, delete, prune,
 * verify, restore) runs under one mutex: chains are computed from what is in the repository, so
 * two of them at once could pick the same parent or delete what the other is reading.  Listing and
 * showing only read metadata that appears by an atomic rename, so they do not wait.  A request
 * never waits for that mutex behind another operation's I/O: it answers 409 REPOSITORY_BUSY at
 * once; with {"async": true} the operation becomes a job (jobs.c) whose thread waits instead, and
 * jobs on the repository run one at a time.
 *
 * A restore that replaces a database goes through the library's replace path, which marks that
 * one database and waits for the requests holding it (request.c); no server-wide lock is taken.
 *
 * Names and ids from the request go to the library as given (it applies the create rule, so nothing
 * is ever truncated or defaulted), and every answer is built from what the library reports it did.
 * The configured repository is not created at start-up: until the first backup creates it, the
 * read-only routes answer 404 "repository ... does not exist", like the CLI.
 */
#include "server/jobs.h"
#include "server/srv.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The repository for one operation, or NULL after answering (409 when none is configured). */
static jvdb_repo *backup_open(struct server *s, struct http_resp *rs)
{
    if (!s->cfg.backup_repo) {
        http_error(rs, 409, "NO_BACKUP_REPOSITORY",
                   "no backup repository is configured (start the server with --backup-repo DIR)");
        return NULL;
    }
    jvdb_repo *repo = NULL;
    int rc = backup_repo_open(s, &repo);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return NULL;
    }
    return repo;
}

/* The 409 a request gets instead of waiting behind another repository operation. */
static void backup_busy(struct http_resp *rs)
{
    rs->retry_after_s = 1;
    http_error(rs, 409, "REPOSITORY_BUSY",
               "the backup repository is busy with another backup, verify, restore or delete; try again when it is "
               "done, or send {\"async\": true} to queue this one as a job");
}

/* ---------------------------------------------------------------- JSON */

/* Writes a backup's description as the JSON object of API.md, with the deprecated created_at beside
 * createdAt and `note` only when there is one. */
static void route_write_backup(struct jw *w, const jvdb_backup_info *b)
{
    jw_obj(w);
    jw_kstr(w, "backupId", b->id);
    jw_kstr(w, "databaseId", b->database);
    jw_kstr(w, "type", jvdb_backup_type_name(b->type));
    jw_key(w, "parent");
    if (*b->parent) jw_str(w, b->parent);
    else jw_null(w);
    jw_kuint(w, "lsnFrom", b->lsn_from);
    jw_kuint(w, "lsnTo", b->lsn_to);
    jw_key(w, "createdAt");
    jw_time(w, b->created_ns);
    jw_key(w, "created_at"); /* deprecated spelling, kept for clients of earlier releases (API.md) */
    jw_time(w, b->created_ns);
    jw_kuint(w, "putCount", b->put_count);
    jw_kuint(w, "deleteCount", b->delete_count);
    jw_kuint(w, "rawBytes", b->raw_bytes);
    jw_kuint(w, "storedBytes", b->stored_bytes);
    jw_kstr(w, "sha256", b->sha256);
    jw_kuint(w, "vectorDimension", b->dim);
    jw_kstr(w, "distanceMetric",
            b->metric == JVDB_METRIC_COSINE ? "cosine"
            : b->metric == JVDB_METRIC_DOT  ? "dot"
                                            : "euclidean");
    jw_kint(w, "compressionLevel", b->compression_level);
    jw_kuint(w, "formatVersion", b->format_version);
    jw_kstr(w, "description", b->description);
    jw_kuint(w, "chainLength", b->chain_length);
    jw_kbool(w, "restorable", b->restorable);
    jw_kstr(w, "status", b->status);
    if (*b->note) jw_kstr(w, "note", b->note);
    jw_obj_end(w);
}

/* Answers with one backup's JSON object and the given status. */
static void route_reply_backup(struct http_resp *rs, int status, const jvdb_backup_info *b)
{
    struct jw w;
    jw_init(&w);
    route_write_backup(&w, b);
    http_reply_json(rs, status, &w);
}

/* ---------------------------------------------------------------- routes */

/* What one backup needs, asked for now or as a job (the strings are copies). */
struct backup_req {
    char name[JVDB_MAX_NAME_LEN + 1];
    jvdb_backup_options o;
    char *description;
};

/* Frees a backup_req. */
static void backup_req_free(void *arg)
{
    struct backup_req *b = arg;
    if (!b) return;
    free(b->description);
    free(b);
}

/* Takes one backup and writes the answer; j is the job running it (NULL: the request's thread,
 * which answers REPOSITORY_BUSY rather than wait). */
static void backup_create_exec(struct server *s, struct backup_req *b, struct job *j, struct http_resp *rs)
{
    jvdb_backup_options o = b->o;
    o.description = b->description;
    if (j) {
        o.progress = job_backup_progress;
        o.progress_arg = j;
        o.cancel = job_cancel_flag(j);
        job_set_cancellable(j, 1); /* the library stops cleanly: nothing reaches the repository */
    }
    jvdb_backup_info info;
    int rc = backup_run_mode(s, b->name, &o, &info, j ? "job" : "api", j != NULL); /* holds the database itself */
    if (j) job_set_cancellable(j, 0);
    if (rc == BACKUP_REPO_BUSY) backup_busy(rs);
    else if (rc != JVDB_OK) http_lib_error(rs, rc);
    else route_reply_backup(rs, 201, &info);
}

/* A backup job's work. */
static void backup_create_job(struct server *s, struct job *j, void *arg, struct http_resp *rs)
{
    backup_create_exec(s, arg, j, rs);
}

void route_backup_create(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    if (!s->cfg.backup_repo) {
        backup_open(s, rs);
        return;
    }
    json_t *body =
        route_body_opt(s, rq, rs, (const char *const[]){ "type", "description", "compressionLevel", "async", NULL });
    if (!body) return;
    char err[512];
    struct backup_req *b = calloc(1, sizeof *b);
    if (!b) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        json_decref(body);
        return;
    }
    jvdb_backup_options_init(&b->o);
    const char *type = NULL, *desc = NULL;
    uint64_t level = 0;
    int r, async = 0;
    if (jr_string(body, "type", &type, err, sizeof err) < 0 ||
        jr_string(body, "description", &desc, err, sizeof err) < 0 ||
        (r = jr_uint(body, "compressionLevel", 1, 19, &level, err, sizeof err)) < 0 ||
        jr_bool(body, "async", &async, err, sizeof err) < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        goto out;
    }
    if (type && jvdb_backup_type_parse(type, &b->o.type) != JVDB_OK) {
        http_error(rs, 400, "INVALID_ARGUMENT", "type '%s' is not one of full, incremental, differential", type);
        goto out;
    }
    if (level) b->o.level = (int)level;
    snprintf(b->name, sizeof b->name, "%s", rq->params[0]);
    if (desc && !(b->description = strdup(desc))) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        goto out;
    }
    if (!async) {
        backup_create_exec(s, b, NULL, rs);
        goto out;
    }
    jvdb_db *db = route_db_acquire(s, b->name, rs); /* 404 now rather than a failed job */
    if (!db) goto out;
    route_db_release(s, db);
    jobs_submit(s, rs, JOB_BACKUP, b->name, 1, backup_create_job, b, backup_req_free);
    b = NULL;
out:
    backup_req_free(b);
    json_decref(body);
}

/* Answers with the backups of one database, or of all when db_name is NULL, and their total. */
static void backup_list_reply(struct server *s, const char *db_name, struct http_resp *rs)
{
    jvdb_repo *repo = backup_open(s, rs);
    if (!repo) return;
    jvdb_backup_info *all = NULL;
    size_t n = 0;
    int rc = jvdb_backup_list(repo, db_name, &all, &n);
    if (rc != JVDB_OK) {
        jvdb_repo_close(repo);
        http_lib_error(rs, rc);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    if (db_name) jw_kstr(&w, "databaseId", db_name);
    jw_kuint(&w, "total", n);
    jw_key(&w, "backups");
    jw_arr(&w);
    for (size_t i = 0; i < n; i++) route_write_backup(&w, &all[i]);
    jw_arr_end(&w);
    jw_key(&w, "windows");
    jw_arr(&w);
    /* The restorable window of each database with a restorable backup (listed together, oldest first). */
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && !strcmp(all[i + 1].database, all[i].database)) continue;
        int any = 0;
        for (size_t j = i + 1; j-- > 0 && !strcmp(all[j].database, all[i].database);) any |= all[j].restorable;
        jvdb_restore_window win;
        if (!any || jvdb_backup_window(repo, all[i].database, &win)) continue;
        char a[64], b[64];
        clock_format_rfc3339(win.earliest_time_ns, a, sizeof a);
        clock_format_rfc3339(win.latest_time_ns, b, sizeof b);
        jw_obj(&w);
        jw_kstr(&w, "databaseId", win.database);
        jw_kint(&w, "incarnation", win.incarnation);
        jw_kstr(&w, "earliestTime", a);
        jw_kstr(&w, "latestTime", b);
        jw_kuint(&w, "earliestLsn", win.earliest_lsn);
        jw_kuint(&w, "latestLsn", win.latest_lsn);
        jw_kuint(&w, "backups", win.backups);
        jw_kuint(&w, "logObjects", win.log_objects);
        jw_kstr(&w, "latestBackup", win.latest_backup);
        jw_key(&w, "spans");
        jw_arr(&w);
        for (uint32_t k = 0; k < win.nspans; k++) {
            const jvdb_restore_span *sp = &win.spans[k];
            clock_format_rfc3339(sp->earliest_time_ns, a, sizeof a);
            clock_format_rfc3339(sp->latest_time_ns, b, sizeof b);
            jw_obj(&w);
            jw_kuint(&w, "earliestLsn", sp->earliest_lsn);
            jw_kuint(&w, "latestLsn", sp->latest_lsn);
            jw_kstr(&w, "earliestTime", a);
            jw_kstr(&w, "latestTime", b);
            jw_kstr(&w, "backup", sp->backup);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
        jw_kuint(&w, "spansOmitted", win.spans_omitted);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    jvdb_free(all);
    jvdb_repo_close(repo);
    http_reply_json(rs, 200, &w);
}

void route_backup_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    backup_list_reply(s, rq->params[0], rs);
}

void route_backup_list_all(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    backup_list_reply(s, NULL, rs);
}

void route_backup_show(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_repo *repo = backup_open(s, rs);
    if (!repo) return;
    jvdb_backup_info info;
    int rc = jvdb_backup_show(repo, rq->params[0], &info);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else route_reply_backup(rs, 200, &info);
    jvdb_repo_close(repo);
}

void route_backup_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    int cascade = 0;
    if (route_query_bool(rq, rs, "cascade", &cascade) < 0) return;
    if (backup_repo_lock(s, 0)) {
        backup_busy(rs);
        return;
    }
    jvdb_repo *repo = backup_open(s, rs);
    if (!repo) {
        backup_repo_unlock(s);
        return;
    }
    jvdb_backup_info *gone = NULL;
    size_t n = 0;
    int rc = jvdb_backup_delete(repo, rq->params[0], cascade, &gone, &n);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
    } else {
        struct jw w;
        jw_init(&w);
        jw_obj(&w);
        jw_kuint(&w, "count", n);
        jw_key(&w, "deleted");
        jw_arr(&w);
        for (size_t i = 0; i < n; i++) {
            log_info("deleted backup %s of '%s' (api%s)", gone[i].id, gone[i].database, cascade ? ", cascade" : "");
            jw_str(&w, gone[i].id);
        }
        jw_arr_end(&w);
        jw_obj_end(&w);
        http_reply_json(rs, 200, &w);
    }
    jvdb_free(gone);
    jvdb_repo_close(repo);
    backup_repo_unlock(s);
}

/* Verifies backup `id` and writes the answer; j is the job running it (NULL: the request's thread,
 * which answers REPOSITORY_BUSY rather than wait). */
static void verify_exec(struct server *s, const char *id, struct job *j, struct http_resp *rs)
{
    if (backup_repo_lock(s, j != NULL)) {
        backup_busy(rs);
        return;
    }
    jvdb_repo *repo = backup_open(s, rs);
    if (!repo) {
        backup_repo_unlock(s);
        return;
    }
    int64_t t0 = clock_mono_ns();
    int rc = jvdb_backup_verify(repo, id, j ? job_backup_progress : NULL, j);
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    jvdb_backup_info info;
    memset(&info, 0, sizeof info);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    if (rc == JVDB_OK || rc == JVDB_ECORRUPT) jvdb_backup_show(repo, id, &info);
    jvdb_repo_close(repo);
    backup_repo_unlock(s);
    if (rc != JVDB_OK && rc != JVDB_ECORRUPT) {
        http_lib_error_msg(rs, rc, msg);
        return;
    }
    /* A corrupt backup is a successful verification with a bad result: 200, valid false. */
    if (rc == JVDB_OK) log_info("verified backup %s: chain of %u, %.3f s", id, info.chain_length, secs);
    else log_warn("backup %s failed verification: %s", id, msg);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "backupId", id);
    jw_kbool(&w, "valid", rc == JVDB_OK);
    if (rc == JVDB_OK) jw_kuint(&w, "chainLength", info.chain_length);
    else jw_kstr(&w, "message", msg);
    jw_kdouble(&w, "seconds", secs);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

/* A verify job's work (arg: the backup id). */
static void verify_job(struct server *s, struct job *j, void *arg, struct http_resp *rs) { verify_exec(s, arg, j, rs); }

/* The backup `id` as the repository lists it (the database a job on it is about), or -1 after
 * answering (no repository, no such backup). */
static int backup_lookup(struct server *s, const char *id, jvdb_backup_info *info, struct http_resp *rs)
{
    jvdb_repo *repo = backup_open(s, rs);
    if (!repo) return -1;
    int rc = jvdb_backup_show(repo, id, info);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    jvdb_repo_close(repo);
    return rc == JVDB_OK ? 0 : -1;
}

void route_backup_verify(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body_opt(s, rq, rs, (const char *const[]){ "async", NULL });
    if (!body) return;
    char err[512];
    int async = 0;
    int bad = jr_bool(body, "async", &async, err, sizeof err) < 0;
    json_decref(body);
    if (bad) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        return;
    }
    if (!async) {
        verify_exec(s, rq->params[0], NULL, rs);
        return;
    }
    jvdb_backup_info info;
    if (backup_lookup(s, rq->params[0], &info, rs)) return;
    char *id = strdup(rq->params[0]);
    if (!id) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    jobs_submit(s, rs, JOB_VERIFY, info.database, 1, verify_job, id, free);
}

/* What one restore needs, asked for now or as a job (copies).  A point-in-time restore (a target
 * given) names the database: by `database`, or by the database of the backup id in the path. */
struct restore_req {
    char id[JVDB_BACKUP_ID_MAX + JVDB_MAX_NAME_LEN + 2];
    char *target;
    int force;
    char database[JVDB_MAX_NAME_LEN + 1]; /* "" = restore backup `id` */
    uint64_t to_lsn;
    int64_t to_time_ns;
    int latest;
};

/* The restore itself, repository lock held.  The answer is built from what the library did
 * (jvdb_restore_result), never from what the request asked for; the restored database is held by
 * name for the answer, so a drop meanwhile waits for it. */
static void route_backup_restore_run(struct server *s, const struct restore_req *r, struct http_resp *rs,
                                     jvdb_repo *repo, struct job *j)
{
    jvdb_restore_result res;
    const char *id = r->database[0] ? NULL : r->id, *target = r->target;
    jvdb_restore_options ro = { .as_name = target,
                                .force = r->force,
                                .result = &res,
                                .database = r->database[0] ? r->database : NULL,
                                .to_lsn = r->to_lsn,
                                .to_time_ns = r->to_time_ns,
                                .latest = r->latest };
    if (j) {
        ro.progress = job_backup_progress;
        ro.progress_arg = j;
    }
    jvdb_db *db = NULL;
    int64_t t0 = clock_mono_ns();
    int rc = jvdb_backup_restore(s->env, repo, id, &ro, NULL);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    if ((rc = srv_db_hold(s, res.database, &db)) != JVDB_OK) { /* dropped already */
        jvdb_free(res.database_description);
        http_lib_error(rs, rc);
        return;
    }
    log_info("restored backup %s (chain of %u) into '%s'%s in %.3f s", res.backup.id, res.backup.chain_length,
             res.database, res.replaced ? ", replacing it" : "", (double)(clock_mono_ns() - t0) / 1e9);
    dbmeta_restored(s, &res);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "databaseId", res.database);
    jw_kstr(&w, "backupId", res.backup.id);
    jw_kuint(&w, "chainLength", res.backup.chain_length);
    jw_kuint(&w, "lsn", res.lsn);
    jw_kuint(&w, "logObjects", res.log_objects);
    jw_kuint(&w, "logRecords", res.log_records);
    jw_key(&w, "time");
    if (res.time_ns) jw_time(&w, res.time_ns);
    else jw_null(&w);
    jw_kbool(&w, "replaced", res.replaced);
    jw_kbool(&w, "settingsRestored", res.has_settings);
    jw_key(&w, "stats");
    jw_obj(&w);
    route_write_stats(&w, db);
    jw_obj_end(&w);
    jw_obj_end(&w);
    http_reply_json(rs, res.replaced ? 200 : 201, &w);
    srv_db_unhold(s, db);
}

/* Frees a restore_req. */
static void restore_req_free(void *arg)
{
    struct restore_req *r = arg;
    if (!r) return;
    free(r->target);
    free(r);
}

/* Restores and writes the answer; j is the job running it (NULL: the request's thread, which
 * answers REPOSITORY_BUSY rather than wait). */
static void restore_exec(struct server *s, const struct restore_req *r, struct job *j, struct http_resp *rs)
{
    if (backup_repo_lock(s, j != NULL)) {
        backup_busy(rs);
        return;
    }
    jvdb_repo *repo = backup_open(s, rs);
    if (repo) {
        route_backup_restore_run(s, r, rs, repo, j);
        jvdb_repo_close(repo);
    }
    backup_repo_unlock(s);
}

/* A restore job's work. */
static void restore_job(struct server *s, struct job *j, void *arg, struct http_resp *rs)
{
    restore_exec(s, arg, j, rs);
}

/* Whether s has the shape of a backup id ("YYYYMMDDTHHMMSSZ-..."), which no restore by database
 * name is taken for. */
static int route_looks_like_backup_id(const char *s)
{
    if (strlen(s) < 18 || s[8] != 'T' || s[15] != 'Z' || s[16] != '-') return 0;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9')) return 0;
    return 1;
}

void route_backup_restore(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body_opt(
        s, rq, rs, (const char *const[]){ "targetDatabase", "force", "async", "toTime", "toLsn", "latest", NULL });
    if (!body) return;
    char err[512];
    const char *target = NULL, *to_time = NULL;
    int force = 0, async = 0, latest = 0;
    uint64_t to_lsn = 0;
    int64_t to_time_ns = 0;
    struct restore_req *r = NULL;
    if (jr_string(body, "targetDatabase", &target, err, sizeof err) < 0 ||
        jr_bool(body, "force", &force, err, sizeof err) < 0 || jr_bool(body, "async", &async, err, sizeof err) < 0 ||
        jr_string(body, "toTime", &to_time, err, sizeof err) < 0 ||
        jr_uint(body, "toLsn", 1, INT64_MAX, &to_lsn, err, sizeof err) < 0 ||
        jr_bool(body, "latest", &latest, err, sizeof err) < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        goto out;
    }
    if (to_time && (clock_parse_rfc3339(to_time, &to_time_ns) || to_time_ns <= 0)) {
        http_error(rs, 400, "INVALID_ARGUMENT",
                   "toTime '%.100s' is not an RFC 3339 time (such as 2026-11-29T21:00:00.5Z)", to_time);
        goto out;
    }
    if ((to_lsn != 0) + (to_time != NULL) + (latest != 0) > 1) {
        http_error(rs, 400, "INVALID_ARGUMENT", "give at most one of toTime, toLsn and latest");
        goto out;
    }
    if (strlen(rq->params[0]) >= sizeof r->id) {
        http_error(rs, 404, "NOT_FOUND", "backup '%.100s...' does not exist (the id is too long)", rq->params[0]);
        goto out;
    }
    if (!(r = calloc(1, sizeof *r)) || (target && !(r->target = strdup(target)))) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        goto out;
    }
    snprintf(r->id, sizeof r->id, "%s", rq->params[0]);
    r->force = force;
    r->to_lsn = to_lsn;
    r->to_time_ns = to_time_ns;
    r->latest = latest;
    if (to_lsn || to_time || latest) {
        /* A point in time of a database: named in the path, or the database of the backup named. */
        const char *slash = strchr(r->id, '/');
        if (slash && (size_t)(slash - r->id) <= JVDB_MAX_NAME_LEN)
            snprintf(r->database, sizeof r->database, "%.*s", (int)(slash - r->id), r->id);
        else if (!slash && !route_looks_like_backup_id(r->id)) {
            if (route_name_check(rs, "database", r->id)) goto out;
            memcpy(r->database, r->id, strlen(r->id) + 1); /* a valid name fits */
        } else {
            jvdb_backup_info bi;
            if (backup_lookup(s, r->id, &bi, rs)) goto out;
            snprintf(r->database, sizeof r->database, "%s", bi.database);
        }
        if (route_name_check(rs, "database", r->database)) goto out;
    }
    if (!async) {
        restore_exec(s, r, NULL, rs);
        goto out;
    }
    jvdb_backup_info info;
    if (r->database[0]) snprintf(info.database, sizeof info.database, "%s", r->database);
    else if (backup_lookup(s, r->id, &info, rs)) goto out;
    if (target && route_name_check(rs, "target database", target)) goto out;
    jobs_submit(s, rs, JOB_RESTORE, target ? target : info.database, 1, restore_job, r, restore_req_free);
    r = NULL;
out:
    restore_req_free(r);
    json_decref(body);
}

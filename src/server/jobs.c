/*
 * jobs.c — the server's background jobs (issue 12): a bounded queue, JOBS_WORKERS job threads, a
 * bounded history, the /v1/jobs routes, and the durable record <data>/server/jobs.state.
 *
 * Invariants:
 *  (1) Every job the server answered 202 for is in jobs.state before the answer goes out (the file
 *      is replaced whole through fs_replace_file, crash points "server.jobs.before_rename" and
 *      "server.jobs.after_rename"); a job becomes runnable only once its record is durable.  A
 *      job found queued or running at start-up was cut by a restart: it is marked failed with
 *      error INTERRUPTED, never run again behind the user's back.
 *  (2) jobs->mu guards the table and is never held across I/O or a job's work: the file is written
 *      from a snapshot taken under it, under file_mu, which only writers of the file wait on.  A
 *      snapshot older than one already written is not written (the newest state wins).
 *  (3) Jobs that use the backup repository run one at a time, and so do jobs on one database; the
 *      job threads pick the oldest queued job that conflicts with no running one.
 *  (4) A running job is cancelled only through the flag its operation polls, and only while it
 *      said it can stop cleanly (compaction, backup create); anything else answers 409 and runs to
 *      its end.
 */
#include "server/jobs.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/grow.h"
#include "core/io.h"
#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED } job_status;

static const char *const job_kind_names[] = { "compact", "backup", "verify", "restore", "rebuild" };
static const char *const job_status_names[] = { "queued", "running", "succeeded", "failed", "cancelled" };

struct job {
    char id[48];
    job_kind kind;
    char database[JVDB_MAX_NAME_LEN + 1];
    job_status status;
    atomic_uint progress_ppm; /* parts per million; written by the job's thread */
    char *result;             /* JSON object text of the answer (succeeded) */
    char *err_code, *err_msg; /* failed or cancelled */
    int err_http;
    int64_t created_ns, started_ns, finished_ns;
    volatile int cancel; /* polled by the operation (atomic accesses) */
    int cancel_user;     /* DELETE asked (else a stop did) */
    int cancellable;
    int repo;
    int durable; /* its queued record is in the file: runnable (invariant 1) */
    job_fn fn;
    void *arg;
    void (*arg_free)(void *);
    struct jobs_state *owner;
};

struct jobs_state {
    pthread_mutex_t mu; /* everything below but the file fields (invariant 2) */
    pthread_cond_t cv;  /* a job became runnable, or a stop */
    struct job **v;     /* oldest first */
    size_t n, cap;
    uint64_t next_seq;
    uint64_t gen; /* snapshots taken */
    int stopping;
    pthread_t threads[JOBS_WORKERS];
    int nthreads;
    pthread_mutex_t file_mu; /* the file; held across its write, by writers only */
    uint64_t gen_written;    /* under file_mu */
    char *path;
};

/* ---------------------------------------------------------------- records */

/* Frees one job and its work argument. */
static void job_free(struct job *j)
{
    if (!j) return;
    if (j->arg && j->arg_free) j->arg_free(j->arg);
    free(j->result);
    free(j->err_code);
    free(j->err_msg);
    free(j);
}

/* Sets a failed or cancelled job's error (copies). */
static void job_set_error(struct job *j, const char *code, const char *msg, int http)
{
    free(j->err_code);
    free(j->err_msg);
    j->err_code = strdup(code ? code : "INTERNAL");
    j->err_msg = strdup(msg ? msg : "");
    j->err_http = http;
}

/* Removes entry i from the table (not freed). */
static void jobs_remove_at(struct jobs_state *js, size_t i)
{
    memmove(&js->v[i], &js->v[i + 1], (js->n - i - 1) * sizeof *js->v);
    js->n--;
}

/* Drops the oldest finished jobs beyond JOBS_HISTORY (mu held). */
static void jobs_trim(struct jobs_state *js)
{
    size_t finished = 0;
    for (size_t i = 0; i < js->n; i++) finished += js->v[i]->status >= JOB_SUCCEEDED;
    for (size_t i = 0; i < js->n && finished > JOBS_HISTORY;) {
        if (js->v[i]->status >= JOB_SUCCEEDED) {
            job_free(js->v[i]);
            jobs_remove_at(js, i);
            finished--;
        } else {
            i++;
        }
    }
}

/* Appends a job to the table (mu held); -1 when out of memory. */
static int jobs_append(struct jobs_state *js, struct job *j)
{
    struct job **nv = grow_array(js->v, &js->cap, js->n + 1, sizeof *nv, 32);
    if (!nv) return -1;
    js->v = nv;
    js->v[js->n++] = j;
    return 0;
}

/* The job with this id (mu held), or NULL. */
static struct job *jobs_find(struct jobs_state *js, const char *id)
{
    for (size_t i = 0; i < js->n; i++)
        if (!strcmp(js->v[i]->id, id)) return js->v[i];
    return NULL;
}

/* The progress shown: 1 once succeeded, below 1 while running. */
static double job_progress_value(const struct job *j)
{
    if (j->status == JOB_SUCCEEDED) return 1.0;
    double p = (double)atomic_load(&((struct job *)j)->progress_ppm) / 1e6;
    if (j->status == JOB_RUNNING && p > 0.99) p = 0.99;
    return p;
}

/* ---------------------------------------------------------------- the file (invariant 1) */

/* jobs.state as text, from the table (mu held); NULL when out of memory. */
static char *jobs_dump_locked(struct jobs_state *js)
{
    json_t *doc = json_object(), *arr = json_array();
    if (!doc || !arr) {
        json_decref(doc);
        json_decref(arr);
        return NULL;
    }
    json_object_set_new(doc, "version", json_integer(1));
    json_object_set_new(doc, "nextSeq", json_integer((json_int_t)js->next_seq));
    for (size_t i = 0; i < js->n; i++) {
        struct job *j = js->v[i];
        json_t *o = json_object();
        if (!o) continue;
        json_object_set_new(o, "jobId", json_string(j->id));
        json_object_set_new(o, "kind", json_string(job_kind_names[j->kind]));
        json_object_set_new(o, "database", json_string(j->database));
        json_object_set_new(o, "status", json_string(job_status_names[j->status]));
        json_object_set_new(o, "progress", json_real(job_progress_value(j)));
        if (j->result) {
            json_t *r = json_loads(j->result, 0, NULL);
            if (r) json_object_set_new(o, "result", r);
        }
        if (j->err_code) {
            json_object_set_new(o, "error",
                                json_pack("{s:s, s:s, s:i}", "code", j->err_code, "message",
                                          j->err_msg ? j->err_msg : "", "httpStatus", j->err_http));
        }
        json_object_set_new(o, "createdNs", json_integer(j->created_ns));
        json_object_set_new(o, "startedNs", json_integer(j->started_ns));
        json_object_set_new(o, "finishedNs", json_integer(j->finished_ns));
        json_array_append_new(arr, o);
    }
    json_object_set_new(doc, "jobs", arr);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) return NULL;
    size_t len = strlen(text);
    char *out = malloc(len + 2);
    if (out) {
        memcpy(out, text, len);
        out[len] = '\n';
        out[len + 1] = 0;
    }
    free(text);
    return out;
}

/* Writes the table to jobs.state (invariant 2).  Returns a JVDB status. */
static int jobs_persist(struct jobs_state *js)
{
    pthread_mutex_lock(&js->mu);
    uint64_t gen = ++js->gen;
    char *text = jobs_dump_locked(js);
    pthread_mutex_unlock(&js->mu);
    if (!text) {
        log_warn("cannot record the jobs: out of memory");
        return JVDB_ENOMEM;
    }
    int rc = JVDB_OK;
    pthread_mutex_lock(&js->file_mu);
    if (gen > js->gen_written) {
        rc = fs_replace_file(js->path, text, strlen(text), "server.jobs");
        if (rc == JVDB_OK) js->gen_written = gen;
        else log_warn("cannot write %s: %s", js->path, jvdb_errmsg());
    }
    pthread_mutex_unlock(&js->file_mu);
    free(text);
    return rc;
}

/* The kind or status named `name` in `names` (n of them), or -1. */
static int jobs_name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

/* Renames the unreadable `path` to `aside` and syncs their directory, so the set-aside is durable. */
static int jobs_set_aside(const char *path, const char *aside)
{
    if (io_rename(path, aside) < 0) return err_errno(errno, "cannot rename %s to %s", path, aside);
    io_crash_point("server.jobs.after_set_aside");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    if (io_fsync_dir(slash ? dir : ".") < 0) return err_errno(errno, "cannot sync directory %s", slash ? dir : ".");
    return JVDB_OK;
}

/* Reads jobs.state; marks the jobs a restart cut (invariant 1).  Returns how many it marked, -1
 * when the file is unreadable (then set aside, logged). */
static int jobs_load(struct jobs_state *js)
{
    if (!fs_exists(js->path)) return 0;
    json_error_t je;
    json_t *doc = json_load_file(js->path, 0, &je);
    json_t *arr = doc ? json_object_get(doc, "jobs") : NULL;
    if (!doc || !json_is_array(arr)) {
        char aside[4096];
        snprintf(aside, sizeof aside, "%s.unreadable", js->path);
        const char *why = doc ? "no \"jobs\" list" : je.text;
        if (jobs_set_aside(js->path, aside) == JVDB_OK)
            log_warn("job records %s are unreadable (%s); set aside as %s, starting with no job history", js->path, why,
                     aside);
        else
            log_warn("job records %s are unreadable (%s) and could not be set aside (%s); starting with no job "
                     "history, the next job record replaces the file",
                     js->path, why, jvdb_errmsg());
        json_decref(doc);
        return -1;
    }
    json_int_t seq = json_integer_value(json_object_get(doc, "nextSeq"));
    js->next_seq = seq > 0 ? (uint64_t)seq : 1;
    int marked = 0;
    int64_t now = clock_wall_ns();
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *id = json_string_value(json_object_get(o, "jobId"));
        int kind = jobs_name_index(job_kind_names, 5, json_string_value(json_object_get(o, "kind")));
        int status = jobs_name_index(job_status_names, 5, json_string_value(json_object_get(o, "status")));
        const char *db = json_string_value(json_object_get(o, "database"));
        if (!id || strlen(id) >= sizeof((struct job *)0)->id || kind < 0 || status < 0) {
            log_warn("job record %zu of %s is not a job; skipped", i, js->path);
            continue;
        }
        struct job *j = calloc(1, sizeof *j);
        if (!j) break;
        snprintf(j->id, sizeof j->id, "%s", id);
        snprintf(j->database, sizeof j->database, "%s", db ? db : "");
        j->kind = (job_kind)kind;
        j->status = (job_status)status;
        double p = json_number_value(json_object_get(o, "progress"));
        atomic_store(&j->progress_ppm, (unsigned)(p >= 0 && p <= 1 ? p * 1e6 : 0));
        j->created_ns = json_integer_value(json_object_get(o, "createdNs"));
        j->started_ns = json_integer_value(json_object_get(o, "startedNs"));
        j->finished_ns = json_integer_value(json_object_get(o, "finishedNs"));
        json_t *r = json_object_get(o, "result");
        if (json_is_object(r)) j->result = json_dumps(r, JSON_COMPACT);
        json_t *e = json_object_get(o, "error");
        if (json_is_object(e))
            job_set_error(j, json_string_value(json_object_get(e, "code")),
                          json_string_value(json_object_get(e, "message")),
                          (int)json_integer_value(json_object_get(e, "httpStatus")));
        if (j->status == JOB_QUEUED || j->status == JOB_RUNNING) {
            job_set_error(j, "INTERRUPTED",
                          j->status == JOB_RUNNING
                              ? "interrupted by a restart of the server while it was running; "
                                "nothing of it was kept (run it again)"
                              : "interrupted by a restart of the server before it started (run it again)",
                          503);
            j->status = JOB_FAILED;
            j->finished_ns = now;
            marked++;
            log_warn("job %s (%s of '%s') was cut by a restart: marked failed", j->id, job_kind_names[j->kind],
                     j->database);
        }
        if (jobs_append(js, j)) {
            job_free(j);
            break;
        }
    }
    json_decref(doc);
    jobs_trim(js);
    return marked;
}

/* ---------------------------------------------------------------- the job threads */

/* Whether a running job conflicts with j (invariant 3; mu held). */
static int jobs_conflicts(struct jobs_state *js, const struct job *j)
{
    for (size_t i = 0; i < js->n; i++) {
        const struct job *r = js->v[i];
        if (r->status != JOB_RUNNING) continue;
        if (r->repo && j->repo) return 1;
        if (*r->database && !strcmp(r->database, j->database)) return 1;
    }
    return 0;
}

/* The oldest runnable job (mu held), or NULL. */
static struct job *jobs_next(struct jobs_state *js)
{
    for (size_t i = 0; i < js->n; i++) {
        struct job *j = js->v[i];
        if (j->status == JOB_QUEUED && j->durable && !jobs_conflicts(js, j)) return j;
    }
    return NULL;
}

/* Records what a job's work answered (mu held). */
static void jobs_finish_locked(struct job *j, struct http_resp *rs)
{
    j->finished_ns = clock_wall_ns();
    j->cancellable = 0;
    if (rs->status >= 200 && rs->status < 300) {
        j->status = JOB_SUCCEEDED;
        j->result = rs->body && rs->len ? strndup(rs->body, rs->len) : strdup("{}");
        atomic_store(&j->progress_ppm, 1000000u);
        return;
    }
    if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED)) {
        if (j->cancel_user) {
            j->status = JOB_CANCELLED;
            job_set_error(j, "CANCELLED",
                          "cancelled by DELETE /v1/jobs while it ran; it stopped cleanly and nothing was changed", 409);
        } else {
            j->status = JOB_FAILED;
            job_set_error(j, "INTERRUPTED",
                          "interrupted by a restart of the server (the server stopped while it ran; "
                          "nothing of it was kept)",
                          503);
        }
        return;
    }
    j->status = JOB_FAILED;
    json_t *e = rs->body ? json_loadb(rs->body, rs->len, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(e, "error"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    job_set_error(j, code ? code : "INTERNAL", msg ? msg : "the job failed without a message",
                  rs->status ? rs->status : 500);
    json_decref(e);
}

/* One job thread: runs runnable jobs until the stop. */
static void *jobs_worker(void *arg)
{
    struct server *s = arg;
    struct jobs_state *js = s->jobs;
    pthread_mutex_lock(&js->mu);
    for (;;) {
        struct job *j = NULL;
        while (!js->stopping && !(j = jobs_next(js))) pthread_cond_wait(&js->cv, &js->mu);
        if (js->stopping) break;
        j->status = JOB_RUNNING;
        j->started_ns = clock_wall_ns();
        pthread_mutex_unlock(&js->mu);
        jobs_persist(js);
        log_info("job %s started: %s of '%s'", j->id, job_kind_names[j->kind], j->database);
        struct http_resp rs;
        memset(&rs, 0, sizeof rs);
        j->fn(s, j, j->arg, &rs);
        pthread_mutex_lock(&js->mu);
        jobs_finish_locked(j, &rs);
        free(rs.body);
        if (j->arg_free) j->arg_free(j->arg);
        j->arg = NULL;
        log_info("job %s %s (%s of '%s'%s%s)", j->id, job_status_names[j->status], job_kind_names[j->kind], j->database,
                 j->err_msg ? ": " : "", j->err_msg ? j->err_msg : "");
        jobs_trim(js);
        pthread_cond_broadcast(&js->cv); /* what conflicted with it may run now */
        pthread_mutex_unlock(&js->mu);
        jobs_persist(js);
        pthread_mutex_lock(&js->mu);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

int jobs_init(struct server *s)
{
    struct jobs_state *js = calloc(1, sizeof *js);
    if (!js) return -1;
    pthread_mutex_init(&js->mu, NULL);
    pthread_mutex_init(&js->file_mu, NULL);
    pthread_cond_init(&js->cv, NULL);
    js->next_seq = 1;
    /* Not "*.json": those are per-database files (dbmeta_prune drops any whose database is gone). */
    js->path = fs_join(s->meta_dir, "jobs.state");
    s->jobs = js;
    if (!js->path) return -1;
    int marked = jobs_load(js);
    if (marked > 0 && jobs_persist(js) != JVDB_OK) return -1;
    for (int i = 0; i < JOBS_WORKERS; i++) {
        if (pthread_create(&js->threads[i], NULL, jobs_worker, s) != 0) {
            log_error("cannot start a job thread");
            return -1;
        }
        js->nthreads++;
    }
    return 0;
}

void jobs_stop(struct server *s)
{
    struct jobs_state *js = s->jobs;
    if (!js) return;
    pthread_mutex_lock(&js->mu);
    js->stopping = 1;
    for (size_t i = 0; i < js->n; i++)
        if (js->v[i]->status == JOB_RUNNING && js->v[i]->cancellable)
            __atomic_store_n(&js->v[i]->cancel, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&js->cv);
    pthread_mutex_unlock(&js->mu);
    for (int i = 0; i < js->nthreads; i++) pthread_join(js->threads[i], NULL);
    js->nthreads = 0;
}

void jobs_free(struct server *s)
{
    struct jobs_state *js = s->jobs;
    if (!js) return;
    jobs_stop(s);
    for (size_t i = 0; i < js->n; i++) job_free(js->v[i]);
    free(js->v);
    free(js->path);
    pthread_mutex_destroy(&js->mu);
    pthread_mutex_destroy(&js->file_mu);
    pthread_cond_destroy(&js->cv);
    free(js);
    s->jobs = NULL;
}

/* ---------------------------------------------------------------- the job's side */

void job_progress(struct job *j, uint64_t done, uint64_t total)
{
    if (!j || !total) return;
    if (done > total) done = total;
    atomic_store(&j->progress_ppm, (unsigned)((double)done / (double)total * 1e6));
}

void job_backup_progress(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records)
{
    (void)phase;
    (void)records;
    job_progress(arg, done, total);
}

void job_compact_progress(void *arg, uint64_t done, uint64_t total) { job_progress(arg, done, total); }

const volatile int *job_cancel_flag(struct job *j) { return &j->cancel; }

void job_set_cancellable(struct job *j, int yes)
{
    pthread_mutex_lock(&j->owner->mu);
    j->cancellable = yes;
    /* A stop that came before this could not ask it: ask now. */
    if (yes && j->owner->stopping) __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&j->owner->mu);
}

/* ---------------------------------------------------------------- JSON */

/* The job object of the API (mu held). */
static void job_write(struct jw *w, const struct job *j)
{
    jw_obj(w);
    jw_kstr(w, "jobId", j->id);
    jw_kstr(w, "kind", job_kind_names[j->kind]);
    jw_kstr(w, "database", j->database);
    jw_kstr(w, "status", job_status_names[j->status]);
    jw_kdouble(w, "progress", job_progress_value(j));
    if (j->status == JOB_SUCCEEDED && j->result) {
        jw_key(w, "result");
        jw_json(w, j->result);
    }
    if (j->err_code && (j->status == JOB_FAILED || j->status == JOB_CANCELLED)) {
        jw_key(w, "error");
        jw_obj(w);
        jw_kstr(w, "code", j->err_code);
        jw_kstr(w, "message", j->err_msg ? j->err_msg : "");
        jw_kint(w, "httpStatus", j->err_http);
        jw_obj_end(w);
    }
    jw_kbool(w, "cancellable", j->status == JOB_QUEUED || (j->status == JOB_RUNNING && j->cancellable));
    jw_key(w, "createdAt");
    jw_time(w, j->created_ns);
    jw_key(w, "startedAt");
    if (j->started_ns) jw_time(w, j->started_ns);
    else jw_null(w);
    jw_key(w, "finishedAt");
    if (j->finished_ns) jw_time(w, j->finished_ns);
    else jw_null(w);
    jw_obj_end(w);
}

/* The job table, or NULL after answering 503 JOBS_UNAVAILABLE (before jobs_init or once jobs_free ran). */
static struct jobs_state *jobs_available(struct server *s, struct http_resp *rs)
{
    if (!s->jobs) http_error(rs, 503, "JOBS_UNAVAILABLE", "background jobs are not available in this process");
    return s->jobs;
}

void jobs_submit(struct server *s, struct http_resp *rs, job_kind kind, const char *database, int repo, job_fn fn,
                 void *arg, void (*arg_free)(void *))
{
    struct jobs_state *js = jobs_available(s, rs);
    if (!js) {
        if (arg_free) arg_free(arg);
        return;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        if (arg_free) arg_free(arg);
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    j->kind = kind;
    j->owner = js;
    snprintf(j->database, sizeof j->database, "%s", database ? database : "");
    j->repo = repo;
    j->fn = fn;
    j->arg = arg;
    j->arg_free = arg_free;
    j->created_ns = clock_wall_ns();
    pthread_mutex_lock(&js->mu);
    size_t queued = 0;
    for (size_t i = 0; i < js->n; i++) queued += js->v[i]->status == JOB_QUEUED;
    if (js->stopping || queued >= JOBS_QUEUE_MAX || jobs_append(js, j)) {
        int stopping = js->stopping;
        pthread_mutex_unlock(&js->mu);
        job_free(j);
        if (stopping) {
            http_error(rs, 503, "SHUTTING_DOWN", "the server is shutting down; no new jobs are taken");
        } else if (queued >= JOBS_QUEUE_MAX) {
            rs->retry_after_s = 5;
            http_error(rs, 429, "TOO_MANY_JOBS",
                       "%zu jobs are already queued (the limit); try again when some have run", queued);
        } else {
            http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        }
        return;
    }
    char t[32];
    jw_time_fmt(j->created_ns, t);
    /* "job-20261130T001500Z-7": sorts by time; the sequence goes on across restarts (nextSeq). */
    char stamp[32];
    size_t k = 0;
    for (const char *c = t; *c && k + 1 < sizeof stamp; c++)
        if (*c != '-' && *c != ':') stamp[k++] = *c;
    stamp[k] = 0;
    snprintf(j->id, sizeof j->id, "job-%s-%" PRIu64, stamp, js->next_seq++);
    jobs_trim(js);
    pthread_mutex_unlock(&js->mu);

    int rc = jobs_persist(js); /* invariant 1: durable before the 202 */
    pthread_mutex_lock(&js->mu);
    if (rc != JVDB_OK) {
        for (size_t i = 0; i < js->n; i++)
            if (js->v[i] == j) jobs_remove_at(js, i);
        pthread_mutex_unlock(&js->mu);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
        job_free(j);
        http_lib_error_msg(rs, rc, msg);
        return;
    }
    j->durable = 1;
    pthread_cond_broadcast(&js->cv);
    struct jw w;
    jw_init(&w);
    job_write(&w, j);
    log_info("job %s queued: %s of '%s'", j->id, job_kind_names[kind], j->database);
    pthread_mutex_unlock(&js->mu);
    http_reply_json(rs, 202, &w);
}

/* ---------------------------------------------------------------- routes */

/* Which of the jobs' databases the request's key may see: keep[i] for v[i] (mu held). */
static int jobs_visible(struct server *s, struct jobs_state *js, const struct http_req *rq, unsigned char *keep)
{
    char **names = calloc(js->n ? js->n : 1, sizeof *names);
    if (!names) return -1;
    size_t n = 0;
    for (size_t i = 0; i < js->n; i++) {
        names[n] = strdup(js->v[i]->database);
        if (!names[n]) break;
        n++;
    }
    size_t all = n;
    auth_filter_dbs(s, rq, names, &n);
    memset(keep, 0, js->n);
    for (size_t i = 0; i < all; i++)
        for (size_t k = 0; k < n; k++)
            if (!strcmp(js->v[i]->database, names[k])) keep[i] = 1;
    for (size_t k = 0; k < n; k++) free(names[k]);
    free(names);
    return 0;
}

void route_jobs_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    struct jobs_state *js = s->jobs;
    char dbq[HTTP_QUERY_MAX + 1], stq[HTTP_QUERY_MAX + 1], kq[HTTP_QUERY_MAX + 1];
    const char *db = http_query(rq, "database", dbq, sizeof dbq);
    const char *st = http_query(rq, "status", stq, sizeof stq);
    const char *kind = http_query(rq, "kind", kq, sizeof kq);
    int want_st = st ? jobs_name_index(job_status_names, 5, st) : -1;
    int want_kind = kind ? jobs_name_index(job_kind_names, 5, kind) : -1;
    if (st && want_st < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT",
                   "status '%.100s' is not one of queued, running, succeeded, failed, cancelled", st);
        return;
    }
    if (kind && want_kind < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "kind '%.100s' is not one of compact, backup, verify, restore, rebuild",
                   kind);
        return;
    }
    if (!jobs_available(s, rs)) return;
    pthread_mutex_lock(&js->mu);
    unsigned char *keep = malloc(js->n ? js->n : 1);
    if (!keep || jobs_visible(s, js, rq, keep)) {
        pthread_mutex_unlock(&js->mu);
        free(keep);
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "jobs");
    jw_arr(&w);
    size_t total = 0;
    for (size_t i = js->n; i-- > 0;) { /* newest first */
        const struct job *j = js->v[i];
        if (!keep[i] || (db && strcmp(db, j->database)) || (want_st >= 0 && (int)j->status != want_st) ||
            (want_kind >= 0 && (int)j->kind != want_kind))
            continue;
        job_write(&w, j);
        total++;
    }
    jw_arr_end(&w);
    jw_kuint(&w, "total", total);
    jw_kuint(&w, "historyLimit", JOBS_HISTORY);
    jw_obj_end(&w);
    pthread_mutex_unlock(&js->mu);
    free(keep);
    http_reply_json(rs, 200, &w);
}

/* The job named by the path that the key may see (mu held), or NULL after answering 404. */
static struct job *jobs_lookup(struct server *s, struct jobs_state *js, struct http_req *rq, struct http_resp *rs)
{
    struct job *j = jobs_find(js, rq->params[0]);
    if (j) {
        char *one = strdup(j->database);
        size_t n = one ? 1 : 0;
        if (one) auth_filter_dbs(s, rq, &one, &n);
        if (n) free(one);
        if (!n) j = NULL; /* another database's job: as if it did not exist */
    }
    if (!j)
        http_error(rs, 404, "NOT_FOUND", "job '%.100s' does not exist (finished jobs are kept: the newest %d)",
                   rq->params[0], JOBS_HISTORY);
    return j;
}

void route_job_get(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    struct jobs_state *js = jobs_available(s, rs);
    if (!js) return;
    pthread_mutex_lock(&js->mu);
    struct job *j = jobs_lookup(s, js, rq, rs);
    if (j) {
        struct jw w;
        jw_init(&w);
        job_write(&w, j);
        http_reply_json(rs, 200, &w);
    }
    pthread_mutex_unlock(&js->mu);
}

void route_job_cancel(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    struct jobs_state *js = jobs_available(s, rs);
    if (!js) return;
    pthread_mutex_lock(&js->mu);
    struct job *j = jobs_lookup(s, js, rq, rs);
    if (!j) {
        pthread_mutex_unlock(&js->mu);
        return;
    }
    int persist = 0, status = 200;
    if (j->status == JOB_QUEUED) {
        j->status = JOB_CANCELLED;
        j->finished_ns = clock_wall_ns();
        job_set_error(j, "CANCELLED", "cancelled by DELETE /v1/jobs before it started", 409);
        persist = 1;
        log_info("job %s cancelled before it started", j->id);
    } else if (j->status == JOB_RUNNING && j->cancellable) {
        j->cancel_user = 1;
        __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
        status = 202; /* it stops at its next check; GET shows "cancelled" then */
        log_info("job %s: cancel requested", j->id);
    } else if (j->status == JOB_RUNNING) {
        http_error(rs, 409, "JOB_NOT_CANCELLABLE",
                   "job %s (%s of '%s') is running and cannot be stopped cleanly now; it runs to its end", j->id,
                   job_kind_names[j->kind], j->database);
        pthread_mutex_unlock(&js->mu);
        return;
    } else {
        http_error(rs, 409, "JOB_FINISHED", "job %s has already %s", j->id, job_status_names[j->status]);
        pthread_mutex_unlock(&js->mu);
        return;
    }
    struct jw w;
    jw_init(&w);
    job_write(&w, j);
    pthread_mutex_unlock(&js->mu);
    if (persist) jobs_persist(js);
    http_reply_json(rs, status, &w);
}

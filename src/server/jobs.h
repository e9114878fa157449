/*
 * jobs.h — long operations run in the background (issue 12): compaction, backup create / verify /
 * restore and index rebuild accept {"async": true}, answer 202 {"jobId": ...} at once and run on a
 * job thread; /v1/jobs reports them, DELETE cancels them where they can stop cleanly.
 *
 * A job's work is the synchronous route's own code: a job_fn writes the answer the route would
 * have written into an http_resp, and the job keeps it (2xx: "result"; else "error").
 */
#ifndef JVDB_SERVER_JOBS_H
#define JVDB_SERVER_JOBS_H

#include "server/srv.h"

typedef enum { JOB_COMPACT = 0, JOB_BACKUP = 1, JOB_VERIFY = 2, JOB_RESTORE = 3, JOB_REBUILD = 4 } job_kind;

struct job;

/* The work of one job, on a job thread; `arg` is what jobs_submit was given. */
typedef void (*job_fn)(struct server *s, struct job *j, void *arg, struct http_resp *rs);

/* Job threads per server, queued jobs accepted at once, finished jobs remembered. */
#define JOBS_WORKERS   2
#define JOBS_QUEUE_MAX 16
#define JOBS_HISTORY   100

/* Loads <data>/server/jobs.state (a job queued or running when the server last stopped is marked
 * failed, "interrupted by a restart") and starts the job threads.  0, or -1 after logging. */
int jobs_init(struct server *s);
/* Asks running jobs that can stop to stop, and waits for the job threads (a backup being taken
 * finishes first).  Queued jobs stay queued in the file: the next start marks them interrupted. */
void jobs_stop(struct server *s);
void jobs_free(struct server *s);

/* Queues a job and answers 202 {"jobId", "kind", "database", "status"},
 * or 429 when JOBS_QUEUE_MAX jobs are waiting, 503 while stopping.  `database` is the database
 * the job is about (what a key limited to databases must be allowed).  `repo`: the job uses the
 * backup repository (such jobs run one at a time).  `arg` (malloc'd) is freed with arg_free once
 * the job is done or was refused. */
void jobs_submit(struct server *s, struct http_resp *rs, job_kind kind, const char *database, int repo, job_fn fn,
                 void *arg, void (*arg_free)(void *));

/* From the job's own thread. */
/* Progress: done of total (ignored when total is 0); shown as 0..1, 1 only once finished. */
void job_progress(struct job *j, uint64_t done, uint64_t total);
/* The flag a cancellable operation polls (compaction, backup): set by DELETE /v1/jobs/ID or a stop. */
const volatile int *job_cancel_flag(struct job *j);
/* Marks whether DELETE may stop the job now (it polls job_cancel_flag). */
void job_set_cancellable(struct job *j, int yes);
/* A jvdb_backup_progress_fn reporting into the job given as arg. */
void job_backup_progress(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records);
/* The compaction's progress hook (jvdb_compact_options.progress) reporting into the job `arg`. */
void job_compact_progress(void *arg, uint64_t done, uint64_t total);

/* GET /v1/jobs, GET /v1/jobs/{jobId}, DELETE /v1/jobs/{jobId}. */
void route_jobs_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_job_get(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_job_cancel(struct server *s, struct http_req *rq, struct http_resp *rs);

#endif

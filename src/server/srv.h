/*
 * srv.h — what the server's files share: configuration, the server object, the request/response
 * pair every route works on, and the prototypes of each part (http, routes, auth, metrics,
 * per-database server metadata).
 *
 * Layering inside src/server, bottom to top; a file calls only files below it, so the files form
 * no cycle (checked by tests/style/server_deps.py, test style.server_deps):
 *   jsonio.c, config.c, keys.c, dbmeta.c, binbatch.c   leaves
 *   reply.c       writing answers (http_reply_json, http_error, http_lib_error)
 *   http.c        the transport: owns the sockets and hands each complete request to
 *                 s->routes->dispatch, after the key check and before the metrics observation it
 *                 was given by server.c (http_hooks), so it names no route, auth.c nor metrics.c
 *   request.c     reading the request (body, query arguments, names) and holding its database
 *   auth.c, compact_log.c, backup_log.c (shared state: the repository, its log), backup_sched.c,
 *   metrics.c, ready.c, jobs.c
 *   routes_*.c    the routes; they talk to the library only through jvdb.h, write their answers
 *                 with jsonio.h and reply.c, and never touch MHD
 *   routes.c      the route table (routes_main), given to the layers below through s->routes
 *   server.c      start and stop of every part
 * Long operations asked for with {"async": true} run the same route code on a job thread (jobs.c).
 */
#ifndef JVDB_SERVER_SRV_H
#define JVDB_SERVER_SRV_H

#include "jvdb.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/jsonio.h"

/* ---- configuration (config.c) ---- */

struct server_config {
    char *data_dir;
    char *listen; /* "HOST:PORT" as given */
    char host[256];
    uint16_t port;                   /* 0 = any free port (the log line says which) */
    unsigned threads;                /* HTTP worker threads */
    char *api_key;                   /* NULL = no authentication */
    uint64_t max_body;               /* bytes; larger bodies get 413 */
    uint64_t max_buffered;           /* bytes of bodies + their decoding estimate, all connections */
    unsigned max_connections;        /* open client connections (RLIMIT_NOFILE is raised to fit) */
    int max_connections_set;         /* given explicitly: failing to fit it is an error, not a warning */
    unsigned max_conn_per_ip;        /* 0 = no per-address limit */
    uint64_t header_timeout_ms;      /* a new connection's request head must be complete by then */
    unsigned idle_timeout_s;         /* inactivity limit; also the wait for the next request head */
    unsigned max_depth;              /* JSON nesting limit of request bodies */
    uint64_t compaction_interval_ms; /* how often the compactor looks at every database; 0 = no compactor */
    unsigned compaction_threads;
    double shutdown_timeout_s; /* how long a stop waits for in-flight requests */
    char *log_level;
    int log_json;                   /* --log-format json */
    char *backup_repo;              /* directory or s3://bucket/prefix; NULL = no backups */
    char *backup_repo_key_file;     /* --repo-key-file; NULL = $JVDB_REPO_KEY_FILE, else plain */
    uint64_t backup_full_every_ms;  /* scheduler: 0 = no scheduled full backups */
    uint64_t backup_incr_every_ms;  /* scheduler: 0 = no scheduled incremental backups */
    unsigned backup_keep;           /* scheduler: prune to this many restorable points (0 = keep all) */
    unsigned backup_keep_daily;     /* scheduler: also keep the newest point of each of the last N days */
    unsigned backup_keep_weekly;    /* scheduler: ... and of each of the last N ISO weeks */
    uint64_t backup_drill_every_ms; /* scheduler: restore drill of every database; 0 = none */
    uint64_t backup_continuous_ms;  /* ship the log of every database this often (ship.c); 0 = off */
    uint64_t backup_backlog_bytes;  /* unshipped bytes kept while the repository fails (default 1 GiB) */
    uint64_t backup_lease_ms;       /* the fencing lease's time (default 30 s) */
    uint64_t backup_retention_ms;   /* log objects and backups older than this are pruned; 0 = keep */
    uint64_t backup_fold_bytes;     /* log bytes after the newest backup that make an incremental; 0 = never */
    uint64_t backup_fold_objects;   /* ... or log objects (ship.c); 0 = never */
    int backup_fold_set;            /* bit 0: --backup-log-fold-bytes given, bit 1: -objects (else defaults) */
    char *follow_repo;              /* --follow R: a read replica of repository R (follow.c) */
    uint64_t follow_interval_ms;    /* --follow-interval: how often the replica polls R */
    char *tls_cert;                 /* PEM certificate chain; NULL = plain HTTP */
    char *tls_key;                  /* PEM private key (both or neither) */
    char **cors_origins;            /* --cors-origin, repeatable; "*" = any origin */
    size_t ncors;
};

/* Fills defaults, reads --config FILE (if given) and then the flags, which win over the file.
 * Returns 0, 1 when --help was printed, or 2 after printing a usage error. */
int config_load(struct server_config *c, int argc, char **argv, const char *data_dir);
void config_free(struct server_config *c);
/* "250ms", "30s", "5m", "2h", "1d", or plain seconds -> milliseconds. */
int config_parse_duration(const char *s, uint64_t *ms);
/* "1048576", "512KiB", "64MiB", "1GiB" (also K/M/G, KB/MB/GB as powers of 1024). */
int config_parse_size(const char *s, uint64_t *bytes);

/* ---- the server object (server.c) ---- */

struct metrics;
struct http_server;
struct compact_log;
struct backup_log;
struct backup_sched;
struct ship_state;
struct auth_state;
struct ready_state;
struct jobs_state;
struct srv_routes;

struct server {
    struct server_config cfg;
    jvdb_env *env;
    jvdb_compactor *compactor;
    pthread_mutex_t meta_mu; /* serialises read-modify-write of server metadata files */
    struct metrics *metrics;
    struct http_server *http;
    struct compact_log *compactions; /* compactions run through the API (routes_admin.c) */
    struct backup_log *backups;      /* backup repository access and statistics (routes_backup.c) */
    struct backup_sched *sched;      /* scheduled backups (backup_sched.c) */
    struct ship_state *ship;         /* continuous backup: the log shipper (ship.c) */
    struct auth_state *auth;         /* API keys (auth.c) */
    struct ready_state *ready;       /* readiness: databases opened, indexes caught up (ready.c) */
    struct jobs_state *jobs;         /* background jobs, /v1/jobs (jobs.c) */
    struct follow_state *follow;     /* read replica state (follow.c) */
    const struct srv_routes *routes; /* the route table (routes.c), set by server.c before anything starts */
    char *meta_dir;                  /* <data>/server */
    int64_t started_wall_ns, started_mono_ns;
    atomic_int stopping; /* set once a stop has begun */
    volatile int cancel; /* handed to jvdb_compact so a stop abandons API compactions */
    pthread_t main_thread;
};

/* Asks the main thread to stop gracefully (from a request thread; defined in http.c). */
void server_request_stop(struct server *s);

/* ---- requests and responses ---- */

#define HTTP_MAX_PARAMS 4

struct http_req {
    const char *method;
    const char *path; /* as received (percent-escaped) */
    const char *body;
    size_t body_len;
    void *conn;                    /* the MHD connection, for headers and query arguments */
    char *params[HTTP_MAX_PARAMS]; /* decoded {id} / {vid} segments of the matched route */
    int nparams;
};

struct http_resp {
    int status; /* 0 until a route answers */
    char *body; /* malloc'd */
    size_t len;
    const char *content_type; /* default application/json */
    const char *allow;        /* Allow header for 405 */
    int close;                /* ask the client to close the connection */
    int auth_challenge;       /* add WWW-Authenticate */
    int retry_after_s;        /* add Retry-After (0 = none) */
    int preflight;            /* a CORS preflight answer: add the Allow-* headers */
    /* A streamed answer (no body): http.c calls stream for the next bytes (at most max into buf;
     * returns how many, -1 at the end, -2 to cut the answer on an error) while it sends them, chunked,
     * then stream_free once, whether the answer was sent whole or the client went away. */
    long (*stream)(void *arg, char *buf, size_t max);
    void (*stream_free)(void *arg);
    void *stream_arg;
};

/* Longest query-argument value accepted (decoded bytes); longer ones get 400 before any route runs. */
#define HTTP_QUERY_MAX 1024

/* Header or query-argument lookups on the request (http.c).  Query values are percent-decoded
 * into buf; returns NULL when absent.  http.c has already answered 400 to a request with an
 * argument that is badly escaped, holds a NUL, is repeated or is longer than HTTP_QUERY_MAX, so
 * with a buffer of HTTP_QUERY_MAX + 1 bytes NULL means absent. */
const char *http_header(const struct http_req *rq, const char *name);
const char *http_query(const struct http_req *rq, const char *name, char *buf, size_t cap);
/* Percent-decodes in place; returns the new length, or -1 for a bad escape. */
long http_unescape(char *s, int plus_is_space);

/* Response helpers (reply.c: the bottom of src/server, anything may answer through it). */
void http_reply_json(struct http_resp *rs, int status, struct jw *w);
void http_reply_text(struct http_resp *rs, int status, const char *content_type, char *text, size_t len);
void http_error(struct http_resp *rs, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Maps a library status code and jvdb_errmsg() to an error response. */
void http_lib_error(struct http_resp *rs, int rc);
/* The same with a message saved earlier (when other library calls came in between). */
void http_lib_error_msg(struct http_resp *rs, int rc, const char *msg);

/* ---- routing (routes.c) ---- */

typedef void (*route_fn)(struct server *s, struct http_req *rq, struct http_resp *rs);

/* The route table as the files below routes.c see it (http.c, auth.c, metrics.c): they reach it
 * through s->routes, so none of them depends on routes.c, which names every route. */
struct srv_routes {
    int (*count)(void);
    const char *(*label)(int i);
    const char *(*method)(int i);
    int (*find)(const char *method, const char *path);
    int (*dispatch)(struct server *s, struct http_req *rq, struct http_resp *rs);
};
extern const struct srv_routes routes_main; /* route_count, route_label, ... below */

/* Finds the route for method + path and runs it (the API key was checked by http.c before the
 * body was read).  Returns the route's index for metrics (route_count() when nothing matched). */
int route_dispatch(struct server *s, struct http_req *rq, struct http_resp *rs);
int route_count(void);
const char *route_label(int i); /* "/v1/databases/{id}/vectors" */
const char *route_method(int i);
/* The route that would serve method + path, without running it (metrics for early answers). */
int route_find(const char *method, const char *path);

/* ---- reading the request and holding its database (request.c) ---- */

/* Database handles for the length of one request: checks the name (400), then holds the database
 * through the library's reference count, so a drop of it waits for this request and a drop of any
 * other database does not touch it.  On failure writes the error response and returns NULL. */
jvdb_db *route_db_acquire(struct server *s, const char *name, struct http_resp *rs);
void route_db_release(struct server *s, jvdb_db *db);
/* The same without a response (metrics, status, the scheduler): a JVDB status. */
int srv_db_hold(struct server *s, const char *name, jvdb_db **out);
void srv_db_unhold(struct server *s, jvdb_db *db);
/* 0 when `name` is a valid database name, else -1 after answering 400 ("<what> name '...' is not
 * allowed ..."): the same rule as create, checked before anything is cut or looked up. */
int route_name_check(struct http_resp *rs, const char *what, const char *name);

/* The request body as a JSON object whose keys are all in `fields` (NULL-terminated), or NULL
 * after answering 400 (an unknown field is named).  route_body_opt accepts an empty body as {}. */
json_t *route_body(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields);
json_t *route_body_opt(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields);
/* route_body for a body whose array `key` is decoded straight into floats (*floats, *n; NULL and 0
 * when the array is absent or not plain numbers, then it stays in the tree for the general reader).
 * The caller frees *floats, also when the answer is NULL (then it is already NULL). */
json_t *route_body_floats(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields,
                          const char *key, float **floats, uint32_t *n);

/* Query arguments: 1 present and valid, 0 absent, -1 after answering 400. */
int route_query_uint(struct http_req *rq, struct http_resp *rs, const char *name, uint64_t *out);
int route_query_bool(struct http_req *rq, struct http_resp *rs, const char *name, int *out);

/* ---- the routes ---- */

/* Databases (routes_db.c) */
void route_db_create(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_get(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_update(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_delete(struct server *s, struct http_req *rq, struct http_resp *rs);
/* Vectors (routes_vectors.c) */
void route_vec_put(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_batch(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_batch_get(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_get(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_update(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_delete(struct server *s, struct http_req *rq, struct http_resp *rs);
/* routes_bulk.c */
void route_vec_delete_many(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_count(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_patch(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_set_metadata(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_scroll(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_vec_export(struct server *s, struct http_req *rq, struct http_resp *rs); /* routes_export.c */
/* Payload index declarations (routes_payload.c) */
void route_payload_put(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_payload_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_payload_delete(struct server *s, struct http_req *rq, struct http_resp *rs);
/* Search (routes_search.c) */
void route_search(struct server *s, struct http_req *rq, struct http_resp *rs); /* also .../search/advanced */
void route_search_batch(struct server *s, struct http_req *rq, struct http_resp *rs);
/* The original's index routes, mapped onto the database's one index (routes_db.c) */
void route_index_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_index_get(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_index_create(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_index_update(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_index_delete(struct server *s, struct http_req *rq, struct http_resp *rs);
/* Administration (routes_admin.c) */
void route_health(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_status(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_shutdown(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_promote(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_stats(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_db_compact(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_compaction(struct server *s, struct http_req *rq, struct http_resp *rs);
/* POST /v1/databases/{id}/index/rebuild: builds the HNSW graph again (sync or {"async": true}). */
void route_index_rebuild(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_metrics(struct server *s, struct http_req *rq, struct http_resp *rs);

/* Writes the storage statistics object of one database (shared by stats, compact and the
 * database object). */
void route_write_stats(struct jw *w, jvdb_db *db);

/* ---- compactions run through the API (compact_log.c) ---- */

int compact_log_init(struct server *s);
void compact_log_free(struct server *s);
/* Counts one API-run compaction of database `name` (failed: it did not finish). */
void compact_log_record(struct server *s, const char *name, const jvdb_compact_stats *st, int failed);
/* Totals over API-run compactions: one database or all (name NULL). */
void compact_log_totals(struct server *s, const char *name, jvdb_compactor_totals *t, jvdb_compact_stats *last);
/* Logs a compactor event (registered with jvdb_compactor_on_event). */
void compact_log_event(void *arg, const char *db_name, jvdb_compact_event ev, const jvdb_compact_stats *st, int status,
                       const char *message);

/* ---- backups (routes_backup.c; the repository and its log: backup_log.c; backup_sched.c) ---- */

void route_backup_create(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_backup_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_backup_show(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_backup_delete(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_backup_verify(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_backup_restore(struct server *s, struct http_req *rq, struct http_resp *rs);

/* Opens the configured repository once to check it (start-up fails on a bad one). */
int backup_init(struct server *s);
void backup_free(struct server *s);
/* One backup of database `name`: serialised with every other change to the repository, logged,
 * counted for /metrics.  `origin` ("api", "scheduler") goes into the log line.  Returns a JVDB
 * status (message in jvdb_errmsg()).  Lock order: the repository mutex first, then the database
 * (held here, not by the caller) — a restore holds the mutex while it waits for the holders of
 * the database it replaces, so a holder must never wait for the mutex. */
int backup_run(struct server *s, const char *name, const jvdb_backup_options *o, jvdb_backup_info *info,
               const char *origin);
/* Prunes a database's backups by the configured retention (--backup-keep, --backup-keep-daily,
 * --backup-keep-weekly; serialised like backup_run).  Nothing to do when none is set. */
int backup_prune(struct server *s, const char *db_name, size_t *deleted);
/* backup_run's answer when the repository is busy and the caller would not wait (not a JVDB code). */
#define BACKUP_REPO_BUSY 1
/* backup_run, waiting for the repository or not (BACKUP_REPO_BUSY). */
int backup_run_mode(struct server *s, const char *name, const jvdb_backup_options *opts, jvdb_backup_info *info,
                    const char *origin, int wait);
/* The configured repository, with its key file when one was given. */
int backup_repo_open(struct server *s, jvdb_repo **out);
/* Takes the repository mutex: waits when `wait`, else returns -1 at once when someone holds it. */
int backup_repo_lock(struct server *s, int wait);
void backup_repo_unlock(struct server *s);
/* A backup taken elsewhere in the server (the log shipper's, ship.c): counted and reported like one
 * backup_run took, without its time. */
void backup_note_taken(struct server *s, const jvdb_backup_info *info, const char *origin);
/* A backup of `name` taken elsewhere in the server that failed after `secs`: counted as failed. */
void backup_note_failed(struct server *s, const char *name, jvdb_backup_type type, double secs);
/* fn is called after every successful backup (the scheduler follows the repository's state). */
void backup_on_taken(struct server *s, void (*fn)(struct server *s, const jvdb_backup_info *info));
/* The newest backup of every database in the repository: fn(arg, info) once per database. */
int backup_newest(struct server *s,
                  void (*fn)(void *arg, const jvdb_backup_info *newest, const jvdb_backup_info *newest_full),
                  void *arg);

struct backup_totals {
    uint64_t count;
    double seconds;
    uint64_t raw_bytes, stored_bytes;
};
/* Indexed [jvdb_backup_type][0 = succeeded, 1 = failed]. */
void backup_log_totals(struct server *s, struct backup_totals out[4][2]);
/* Last successful backup time per database (up to cap); returns how many. */
size_t backup_log_last(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], int64_t *times, size_t cap);
/* Backup totals per database this server has backed up (up to cap); returns how many. */
size_t backup_log_databases(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1],
                            struct backup_totals (*totals)[4][2], size_t cap);

/* One restore drill of database `name` on the configured repository (held like a backup, so a
 * prune waits), with the live database as the source. */
int backup_drill_run(struct server *s, const char *name, jvdb_drill_report *out);

int sched_start(struct server *s);
/* The last restore drill of each database that had one (up to cap); returns how many. */
size_t sched_drill_results(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], int64_t *at_ns,
                           jvdb_drill_report *out, size_t cap);
/* A backup was taken (by anyone): the schedule follows the repository's state. */
void sched_note(struct server *s, const jvdb_backup_info *info);
/* GET /v1/backups/schedule: next due time per database and kind. */
void route_backup_schedule(struct server *s, struct http_req *rq, struct http_resp *rs);
/* GET /v1/backups: every backup in the repository. */
void route_backup_list_all(struct server *s, struct http_req *rq, struct http_resp *rs);
/* Stops the scheduler; a backup it is taking finishes first. */
void sched_stop(struct server *s);

/* ---- continuous backup (ship.c) ---- */

/* Starts the shipper thread (--backup-continuous D); without it, removes every database's shipped
 * LSN from its MANIFEST so compaction is not held back by a log nobody ships.  -1 on failure. */
int ship_start(struct server *s);
/* Stops the thread (a shipment under way finishes) and releases the leases it holds. */
void ship_stop(struct server *s);
/* What /metrics and the stats say of one database's log shipping. */
struct ship_figures {
    double lag_s;           /* age of the oldest acknowledged write not yet shipped (0 when none) */
    uint64_t pending_bytes; /* record bytes acknowledged and not shipped */
    uint64_t shipped_lsn;   /* the repository's log holds every write up to here */
    int fenced;             /* another primary holds the lease: not shipping */
    int overflow;           /* past --backup-backlog-bytes: the gap will be an incremental backup */
    int64_t last_ok_ns;     /* last successful shipment (0 = none) */
};
/* 1 and *out for a database the shipper knows, else 0 (shipping off, or not seen yet). */
int ship_figures_of(struct server *s, const char *name, struct ship_figures *out);
/* Every database's figures (up to cap); returns how many. */
size_t ship_figures_all(struct server *s, char (*names)[JVDB_MAX_NAME_LEN + 1], struct ship_figures *out, size_t cap);
/* The shipping fields of a database's stats (camelCase, after route_write_stats); none when off. */
void ship_write_stats(struct server *s, struct jw *w, const char *name);

/* ---- authentication (auth.c) ---- */

/* Loads the bootstrap key and the key file; -1 (after a message) when the file cannot be read. */
int auth_init(struct server *s);
void auth_free(struct server *s);
/* Re-reads the key file (force: even when its stat is unchanged).  0, or -1 when it cannot be
 * read (the keys loaded before stay in force). */
int auth_reload(struct server *s, int force);
/* 1 when any key exists (bootstrap or file): every route but /health and /readyz needs one. */
int auth_enabled(struct server *s);
/* 1 when method + path needs no key (/health, /readyz). */
int auth_route_public(struct server *s, const char *method, const char *path);
/* Whether the request's key may use route `route` (route_find's index): 0, or -1 after writing
 * the 401 or 403 answer.  `who` receives what the access log shows: "-" (no key needed or none
 * configured), "bootstrap", or the key id; never the key. */
int auth_check(struct server *s, const struct http_req *rq, int route, struct http_resp *rs, char who[17]);
/* Drops (and frees) the names the request's key may not see, keeping the order: the database
 * list of a key limited to databases. */
void auth_filter_dbs(struct server *s, const struct http_req *rq, char **names, size_t *n);

/* ---- API keys over REST (routes_keys.c) ---- */

void route_keys_create(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_keys_list(struct server *s, struct http_req *rq, struct http_resp *rs);
void route_keys_delete(struct server *s, struct http_req *rq, struct http_resp *rs);

/* ---- readiness (ready.c) ---- */

/* Starts the thread that opens every database and waits for its index to catch up. */
int ready_start(struct server *s);
/* Stops it (promptly: waits are bounded) and frees the state. */
void ready_stop(struct server *s);
void route_readyz(struct server *s, struct http_req *rq, struct http_resp *rs);

/* ---- metrics (metrics.c) ---- */

int metrics_init(struct server *s);
void metrics_free(struct server *s);
/* One finished request: route index (route_count() = unmatched, then counted by method), status,
 * microseconds. */
void metrics_observe(struct server *s, int route, const char *method, int status, uint64_t us);
/* Prometheus text exposition of everything (malloc'd). */
char *metrics_render(struct server *s, size_t *len);

/* ---- read replicas (follow.c) ---- */

/* With --follow: seeds every database from the repository and starts following it; without: makes
 * the databases a former replica left primaries (fencing their old primary).  0 or -1 (logged). */
int follow_start(struct server *s);
void follow_stop(struct server *s);
/* 1 while the server is a replica: every write route answers 403 READ_ONLY. */
int follow_read_only(struct server *s);
/* POST /v1/admin/promote: stops following, fences the old primary, makes the server writable.
 * JVDB_OK, or an error with msg saying why (the server stays a replica then). */
int follow_promote(struct server *s, char *msg, size_t cap);
/* A replica's lag for database `name` (now minus the time of the newest batch applied, 0 when
 * caught up); returns 0 when the server is no replica or does not follow that database. */
int follow_lag(struct server *s, const char *name, double *lag);
/* The replica's Prometheus lines (malloc'd), or NULL when not a replica. */
char *follow_metrics(struct server *s);
/* 1 with why (msg) when replica database `name` is stuck behind a damaged log object. */
int follow_error(struct server *s, const char *name, char *msg, size_t cap);

/* ---- per-database server metadata (dbmeta.c) ---- */

struct dbmeta {
    char *description; /* malloc'd, never NULL after dbmeta_load */
    int64_t created_ns, updated_ns;
};

int dbmeta_init(struct server *s);
/* Reads <data>/server/<name>.json; a missing file gives defaults (times from the database
 * directory).  Returns 0 or -1 (message in err). */
int dbmeta_load(struct server *s, const char *name, struct dbmeta *out);
/* Atomic replace: tmp file, fsync, rename, fsync dir.  Returns a JVDB status code. */
int dbmeta_save(struct server *s, const char *name, const struct dbmeta *m);
void dbmeta_remove(struct server *s, const char *name);
void dbmeta_free(struct dbmeta *m);
/* After a restore into res->database: its times, and the description the backup carried (taken
 * from res; an older backup keeps the current one), under meta_mu. */
void dbmeta_restored(struct server *s, jvdb_restore_result *res);
/* Drops metadata files of databases that no longer exist (dropped while the server was down). */
void dbmeta_prune(struct server *s);

/* ---- HTTP glue (http.c) ---- */

/* What the transport calls upward, given at start by server.c so http.c depends on neither auth.c
 * nor metrics.c (the route table comes through s->routes). */
struct http_hooks {
    /* auth_check: 0, or -1 after writing the 401/403 answer. */
    int (*check)(struct server *s, const struct http_req *rq, int route, struct http_resp *rs, char who[17]);
    /* metrics_observe: one finished request. */
    void (*observe)(struct server *s, int route, const char *method, int status, uint64_t us);
};

int http_start(struct server *s, const struct http_hooks *hooks);
/* Stops accepting, waits (bounded) for in-flight requests, closes every connection. */
void http_stop(struct server *s);
uint16_t http_port(struct server *s);
/* Requests whose headers have arrived and that have not completed (the /metrics gauge). */
long http_inflight(struct server *s);
/* Reads --tls-cert / --tls-key again (SIGHUP); new handshakes use them, live connections keep
 * theirs.  0, or -1 (logged) with the previous certificate still in use. */
int http_tls_reload(struct server *s);

#endif

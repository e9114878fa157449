/*
 * routes.c — the route table, matching (404 / 405 with Allow), the error-response helpers every
 * route uses, and database handles held for the length of one request.
 *
 * A pattern is a list of path segments where "{...}" matches any one non-empty segment; captured
 * segments are percent-decoded into rq->params in order.  When several patterns match a path the
 * table order decides, so literal routes (".../vectors/batch") come before the parameter route
 * (".../vectors/{vid}") — but only for their own methods: GET .../vectors/batch still reads the
 * vector whose id is "batch".
 *
 * Handles: jvdb_db_drop() frees a database's handle, so a request that holds one must not overlap
 * a drop.  Every route that uses a handle holds the catalog lock for reading; DELETE of a database
 * takes it for writing (routes_db.c).
 */
#include "server/srv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route_def {
    const char *method;
    const char *pattern;
    route_fn fn;
} route_def;

static const route_def route_table[] = {
    {"GET", "/health", route_health},
    {"GET", "/status", route_status},
    {"GET", "/metrics", route_metrics},
    {"POST", "/v1/admin/shutdown", route_shutdown},
    {"GET", "/v1/compaction", route_compaction},
    {"POST", "/v1/databases", route_db_create},
    {"GET", "/v1/databases", route_db_list},
    {"GET", "/v1/databases/{id}", route_db_get},
    {"PUT", "/v1/databases/{id}", route_db_update},
    {"DELETE", "/v1/databases/{id}", route_db_delete},
    {"GET", "/v1/databases/{id}/stats", route_db_stats},
    {"POST", "/v1/databases/{id}/compact", route_db_compact},
    {"POST", "/v1/databases/{id}/search", route_search},
    {"POST", "/v1/databases/{id}/backups", route_backup_create},
    {"GET", "/v1/databases/{id}/backups", route_backup_list},
    {"GET", "/v1/backups/{bid}", route_backup_show},
    {"DELETE", "/v1/backups/{bid}", route_backup_delete},
    {"POST", "/v1/backups/{bid}/verify", route_backup_verify},
    {"POST", "/v1/backups/{bid}/restore", route_backup_restore},
    {"POST", "/v1/databases/{id}/vectors", route_vec_put},
    {"POST", "/v1/databases/{id}/vectors/batch", route_vec_batch},
    {"POST", "/v1/databases/{id}/vectors/batch-get", route_vec_batch_get},
    {"GET", "/v1/databases/{id}/vectors/{vid}", route_vec_get},
    {"PUT", "/v1/databases/{id}/vectors/{vid}", route_vec_update},
    {"DELETE", "/v1/databases/{id}/vectors/{vid}", route_vec_delete},
};

#define ROUTE_N ((int)(sizeof route_table / sizeof route_table[0]))

int route_count(void) { return ROUTE_N; }
const char *route_label(int i) { return i >= 0 && i < ROUTE_N ? route_table[i].pattern : "unmatched"; }
const char *route_method(int i) { return i >= 0 && i < ROUTE_N ? route_table[i].method : ""; }

/* Whether `path` fits `pattern`; captured segments (still escaped) go to caps as (start, length). */
static int route_match(const char *pattern, const char *path, const char **caps, size_t *caplen, int *ncaps)
{
    const char *p = pattern, *u = path;
    *ncaps = 0;
    while (*p && *u) {
        if (*p != '/' || *u != '/') return 0;
        p++;
        u++;
        const char *pe = strchr(p, '/'), *ue = strchr(u, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        size_t ul = ue ? (size_t)(ue - u) : strlen(u);
        if (pl && p[0] == '{') {
            if (ul == 0 || *ncaps >= HTTP_MAX_PARAMS) return 0;
            caps[*ncaps] = u;
            caplen[(*ncaps)++] = ul;
        } else if (pl != ul || memcmp(p, u, pl) != 0) {
            return 0;
        }
        p += pl;
        u += ul;
    }
    return !*p && !*u;
}

static int route_method_fits(const char *want, const char *method)
{
    return !strcmp(want, method) || (!strcmp(method, "HEAD") && !strcmp(want, "GET"));
}

int route_find(const char *method, const char *path)
{
    const char *caps[HTTP_MAX_PARAMS];
    size_t caplen[HTTP_MAX_PARAMS];
    int n;
    for (int i = 0; i < ROUTE_N; i++)
        if (route_method_fits(route_table[i].method, method) && route_match(route_table[i].pattern, path, caps, caplen, &n))
            return i;
    return ROUTE_N;
}

int route_dispatch(server *s, http_req *rq, http_resp *rs)
{
    const char *caps[HTTP_MAX_PARAMS];
    size_t caplen[HTTP_MAX_PARAMS];
    int ncaps;
    char allow[128] = "";
    int path_known = 0;
    for (int i = 0; i < ROUTE_N; i++) {
        if (!route_match(route_table[i].pattern, rq->path, caps, caplen, &ncaps)) continue;
        if (!route_method_fits(route_table[i].method, rq->method)) {
            if (!strstr(allow, route_table[i].method)) {
                if (*allow) strcat(allow, ", ");
                strcat(allow, route_table[i].method);
            }
            path_known = 1;
            continue;
        }
        for (int k = 0; k < ncaps; k++) {
            char *seg = strndup(caps[k], caplen[k]);
            if (!seg) {
                http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
                return i;
            }
            rq->params[rq->nparams++] = seg;
            long n = http_unescape(seg, 0);
            if (n < 0 || (size_t)n != strlen(seg)) {
                http_error(rs, 400, "INVALID_ARGUMENT", "path segment '%.*s' has a bad percent-escape", (int)caplen[k],
                           caps[k]);
                return i;
            }
        }
        route_table[i].fn(s, rq, rs);
        return i;
    }
    if (path_known) {
        static _Thread_local char allow_hdr[128];
        snprintf(allow_hdr, sizeof allow_hdr, "%s", allow);
        rs->allow = allow_hdr;
        http_error(rs, 405, "METHOD_NOT_ALLOWED", "method %s is not allowed on %s (allowed: %s)", rq->method, rq->path,
                   allow);
        return ROUTE_N;   /* counted as unmatched: the table has no (method, route) pair for it */
    }
    http_error(rs, 404, "NOT_FOUND", "no route for %s %s", rq->method, rq->path);
    return ROUTE_N;
}

/* ---------------------------------------------------------------- responses */

void http_reply_json(http_resp *rs, int status, jw *w)
{
    size_t len = 0;
    char *body = jw_take(w, &len);
    if (!body) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory writing the response");
        return;
    }
    free(rs->body);
    rs->status = status;
    rs->body = body;
    rs->len = len;
    rs->content_type = "application/json";
}

void http_reply_text(http_resp *rs, int status, const char *content_type, char *text, size_t len)
{
    free(rs->body);
    rs->status = status;
    rs->body = text;
    rs->len = len;
    rs->content_type = content_type;
}

void http_error(http_resp *rs, int status, const char *code, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "error", code);
    jw_kstr(&w, "message", msg);
    jw_obj_end(&w);
    free(rs->body);
    rs->body = jw_take(&w, &rs->len);
    rs->status = status;
    rs->content_type = "application/json";
}

void http_lib_error(http_resp *rs, int rc) { http_lib_error_msg(rs, rc, jvdb_errmsg()); }

void http_lib_error_msg(http_resp *rs, int rc, const char *msg)
{
    if (!msg || !*msg) msg = jvdb_strerror(rc);
    switch (rc) {
    case JVDB_EINVAL: http_error(rs, 400, "INVALID_ARGUMENT", "%s", msg); break;
    case JVDB_ENOTFOUND: http_error(rs, 404, "NOT_FOUND", "%s", msg); break;
    case JVDB_EEXISTS: http_error(rs, 409, "ALREADY_EXISTS", "%s", msg); break;
    case JVDB_EBUSY: http_error(rs, 409, "BUSY", "%s", msg); break;
    case JVDB_ELOCKED: http_error(rs, 409, "LOCKED", "%s", msg); break;
    case JVDB_ENOSPC: http_error(rs, 500, "NO_SPACE", "%s", msg); break;
    case JVDB_ECORRUPT: http_error(rs, 500, "CORRUPT", "%s", msg); break;
    case JVDB_ENOMEM: http_error(rs, 500, "OUT_OF_MEMORY", "%s", msg); break;
    case JVDB_EFAILED: http_error(rs, 500, "DATABASE_FAILED", "%s", msg); break;
    case JVDB_EIO: http_error(rs, 500, "IO_ERROR", "%s", msg); break;
    default: http_error(rs, 500, "INTERNAL", "%s", msg); break;
    }
}

json_t *route_body(server *s, http_req *rq, http_resp *rs)
{
    char err[512];
    json_t *doc = jr_parse_object(rq->body, rq->body_len, s->cfg.max_depth, err, sizeof err);
    if (!doc) http_error(rs, 400, "INVALID_JSON", "%s", err);
    return doc;
}

json_t *route_body_opt(server *s, http_req *rq, http_resp *rs)
{
    size_t i = 0;
    while (i < rq->body_len && (rq->body[i] == ' ' || rq->body[i] == '\n' || rq->body[i] == '\r' || rq->body[i] == '\t'))
        i++;
    if (i == rq->body_len) return json_object();
    return route_body(s, rq, rs);
}

int route_query_uint(http_req *rq, http_resp *rs, const char *name, uint64_t *out)
{
    char buf[HTTP_QUERY_MAX + 1];
    const char *q = http_query(rq, name, buf, sizeof buf);
    if (!q) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(q, &end, 10);
    if (*q < '0' || *q > '9' || *end || errno) {
        http_error(rs, 400, "INVALID_ARGUMENT", "query argument '%s' must be a non-negative integer, not '%.100s'", name, q);
        return -1;
    }
    *out = v;
    return 1;
}

int route_query_bool(http_req *rq, http_resp *rs, const char *name, int *out)
{
    char buf[HTTP_QUERY_MAX + 1];
    const char *q = http_query(rq, name, buf, sizeof buf);
    if (!q) return 0;
    if (!strcmp(q, "true") || !strcmp(q, "1") || !*q) *out = 1;
    else if (!strcmp(q, "false") || !strcmp(q, "0")) *out = 0;
    else {
        http_error(rs, 400, "INVALID_ARGUMENT", "query argument '%s' must be true or false, not '%.100s'", name, q);
        return -1;
    }
    return 1;
}

/* ---------------------------------------------------------------- handles */

jvdb_db *route_db_acquire(server *s, const char *name, http_resp *rs)
{
    pthread_rwlock_rdlock(&s->catalog);
    jvdb_db *db = NULL;
    int rc = jvdb_db_open(s->env, name, &db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        pthread_rwlock_unlock(&s->catalog);
        return NULL;
    }
    return db;
}

void route_db_release(server *s) { pthread_rwlock_unlock(&s->catalog); }

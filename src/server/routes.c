/*
 * routes.c — the route table and matching (404 / 405 with Allow).  The top of src/server's
 * request path: it names every route_* function, and nothing below it names the table (http.c,
 * auth.c and metrics.c reach it through s->routes, set by server.c), so no file cycle runs through
 * it (tests/style/server_deps.py).
 *
 * A pattern is a list of path segments where "{...}" matches any one non-empty segment; captured
 * segments are percent-decoded into rq->params in order.  When several patterns match a path the
 * table order decides, so literal routes (".../vectors/batch") come before the parameter route
 * (".../vectors/{vid}") — but only for their own methods: GET .../vectors/batch still reads the
 * vector whose id is "batch".
 *
 * Names and bodies: every {id} under /v1/databases is checked with the library's rule for names
 * before the route runs (400, never cut short), and every body is checked against the fields its
 * route knows (400 naming an unknown field); routes that take no body accept only an empty one.
 */
#include "server/jobs.h"
#include "server/srv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct route_def {
    const char *method;
    const char *pattern;
    route_fn fn;
    int body; /* 1: the route reads its body (and checks its fields) */
};

static const struct route_def route_table[] = {
    { "GET", "/health", route_health, 0 },
    { "GET", "/readyz", route_readyz, 0 },
    { "GET", "/status", route_status, 0 },
    { "GET", "/metrics", route_metrics, 0 },
    { "POST", "/v1/admin/shutdown", route_shutdown, 0 },
    { "POST", "/v1/admin/promote", route_promote, 0 },
    { "GET", "/v1/compaction", route_compaction, 0 },
    { "POST", "/v1/databases", route_db_create, 1 },
    { "GET", "/v1/databases", route_db_list, 0 },
    { "GET", "/v1/databases/{id}", route_db_get, 0 },
    { "PUT", "/v1/databases/{id}", route_db_update, 1 },
    { "DELETE", "/v1/databases/{id}", route_db_delete, 0 },
    { "GET", "/v1/databases/{id}/stats", route_db_stats, 0 },
    { "POST", "/v1/databases/{id}/compact", route_db_compact, 1 },
    { "POST", "/v1/databases/{id}/index/rebuild", route_index_rebuild, 1 },
    { "POST", "/v1/databases/{id}/search", route_search, 1 },
    { "POST", "/v1/databases/{id}/search/advanced", route_search, 1 },
    { "POST", "/v1/databases/{id}/search/batch", route_search_batch, 1 },
    { "GET", "/v1/databases/{id}/indexes", route_index_list, 0 },
    { "POST", "/v1/databases/{id}/indexes", route_index_create, 1 },
    { "GET", "/v1/databases/{id}/indexes/{iid}", route_index_get, 0 },
    { "PUT", "/v1/databases/{id}/indexes/{iid}", route_index_update, 1 },
    { "DELETE", "/v1/databases/{id}/indexes/{iid}", route_index_delete, 0 },
    { "POST", "/v1/databases/{id}/backups", route_backup_create, 1 },
    { "GET", "/v1/databases/{id}/backups", route_backup_list, 0 },
    { "GET", "/v1/backups", route_backup_list_all, 0 },
    { "GET", "/v1/backups/schedule", route_backup_schedule, 0 }, /* before {bid}: first match wins */
    { "GET", "/v1/backups/{bid}", route_backup_show, 0 },
    { "DELETE", "/v1/backups/{bid}", route_backup_delete, 0 },
    { "POST", "/v1/backups/{bid}/verify", route_backup_verify, 1 },
    { "POST", "/v1/backups/{bid}/restore", route_backup_restore, 1 },
    { "POST", "/v1/databases/{id}/vectors", route_vec_put, 1 },
    { "GET", "/v1/databases/{id}/vectors", route_vec_list, 0 },
    { "GET", "/v1/databases/{id}/export", route_vec_export, 0 },
    { "POST", "/v1/databases/{id}/vectors/batch", route_vec_batch, 1 },
    { "POST", "/v1/databases/{id}/vectors/batch-get", route_vec_batch_get, 1 },
    { "POST", "/v1/databases/{id}/vectors/delete", route_vec_delete_many, 1 },
    { "POST", "/v1/databases/{id}/vectors/count", route_vec_count, 1 },
    { "POST", "/v1/databases/{id}/vectors/metadata", route_vec_set_metadata, 1 },
    { "POST", "/v1/databases/{id}/vectors/scroll", route_vec_scroll, 1 },
    { "GET", "/v1/databases/{id}/vectors/{vid}", route_vec_get, 0 },
    { "PUT", "/v1/databases/{id}/vectors/{vid}", route_vec_update, 1 },
    { "PATCH", "/v1/databases/{id}/vectors/{vid}", route_vec_patch, 1 },
    { "DELETE", "/v1/databases/{id}/vectors/{vid}", route_vec_delete, 0 },
    { "GET", "/v1/jobs", route_jobs_list, 0 },
    { "GET", "/v1/jobs/{jid}", route_job_get, 0 },
    { "DELETE", "/v1/jobs/{jid}", route_job_cancel, 0 },
    { "GET", "/v1/databases/{id}/payload-indexes", route_payload_list, 0 },
    { "PUT", "/v1/databases/{id}/payload-indexes/{field}", route_payload_put, 1 },
    { "DELETE", "/v1/databases/{id}/payload-indexes/{field}", route_payload_delete, 0 },
    { "POST", "/v1/api-keys", route_keys_create, 1 },
    { "GET", "/v1/api-keys", route_keys_list, 0 },
    { "DELETE", "/v1/api-keys/{key_id}", route_keys_delete, 0 },
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

/* The routes a replica serves besides GET: reads with a body, and the server's own administration. */
static int route_replica_allows(const struct route_def *r)
{
    static const char *const reads[] = { "/v1/admin/shutdown",
                                         "/v1/admin/promote",
                                         "/v1/databases/{id}/search",
                                         "/v1/databases/{id}/search/advanced",
                                         "/v1/databases/{id}/search/batch",
                                         "/v1/databases/{id}/vectors/batch-get",
                                         "/v1/databases/{id}/vectors/count",
                                         "/v1/databases/{id}/vectors/scroll",
                                         "/v1/backups/{bid}/verify",
                                         "/v1/jobs/{jid}",
                                         "/v1/api-keys",
                                         "/v1/api-keys/{key_id}",
                                         NULL };
    if (!strcmp(r->method, "GET")) return 1;
    for (int i = 0; reads[i]; i++)
        if (!strcmp(r->pattern, reads[i])) return 1;
    return 0;
}

/* Whether a request's method matches a route's (HEAD is served by the GET route). */
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
        if (route_method_fits(route_table[i].method, method) &&
            route_match(route_table[i].pattern, path, caps, caplen, &n))
            return i;
    return ROUTE_N;
}

/* What every route may rely on before it runs: a valid database name in {id} and, when the route
 * takes no body, an empty one (or "{}").  Returns 0, or -1 after answering 400. */
static int route_check_request(struct server *s, struct http_req *rq, struct http_resp *rs, const struct route_def *r)
{
    if (!strncmp(r->pattern, "/v1/databases/{id}", 18) && rq->nparams > 0 &&
        route_name_check(rs, "database", rq->params[0]))
        return -1;
    if (!r->body) {
        static const char *const none[] = { NULL };
        json_t *b = route_body_opt(s, rq, rs, none);
        if (!b) return -1;
        json_decref(b);
    }
    return 0;
}

int route_dispatch(struct server *s, struct http_req *rq, struct http_resp *rs)
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
        if (route_check_request(s, rq, rs, &route_table[i])) return i;
        if (follow_read_only(s) && !route_replica_allows(&route_table[i])) {
            http_error(rs, 403, "READ_ONLY",
                       "this server is a read replica of %s: %s %s is a write (send it to the primary, or promote "
                       "this server with POST /v1/admin/promote)",
                       s->cfg.follow_repo, rq->method, route_table[i].pattern);
            return i;
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
        return ROUTE_N; /* counted as unmatched: the table has no (method, route) pair for it */
    }
    http_error(rs, 404, "NOT_FOUND", "no route for %s %s", rq->method, rq->path);
    return ROUTE_N;
}

const struct srv_routes routes_main = { route_count, route_label, route_method, route_find, route_dispatch };

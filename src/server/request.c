/*
 * request.c — what a route reads from its request and holds for it: the body checked against the
 * fields the route knows, query arguments, database names, and database handles held for the
 * length of one request (or by the metrics, readiness and scheduler threads).
 *
 * Invariants: a body is refused with 400 naming an unknown field before its values build a tree;
 * a database name is checked with the library's rule before anything is looked up; a handle is the
 * library's reference count (env_db_acquire), never a server-wide lock.  This file calls only
 * reply.c, http.c's request accessors and the library, never a route.
 *
 * Handles: a drop or a replacing restore marks that one database, refuses new holders (404 "being
 * dropped") and waits for the holders it has; requests on every other database, and /health, go on
 * as if nothing happened.  Lock order, so that no two waits form a cycle: the backup repository
 * mutex, then a database hold, then meta_mu; a request holding a database never waits for the
 * repository mutex (a replacing restore holds it while it waits for that database's holders).
 */
#include "server/srv.h"

#include "store/db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int route_name_check(struct http_resp *rs, const char *what, const char *name)
{
    if (db_name_valid(name)) return 0;
    size_t n = strlen(name);
    http_error(rs, 400, "INVALID_ARGUMENT",
               "%s name '%.*s%s' is not allowed (use 1 to %d characters of A-Z a-z 0-9 _ -)", what,
               n > 80 ? 80 : (int)n, name, n > 80 ? "..." : "", JVDB_MAX_NAME_LEN);
    return -1;
}

json_t *route_body(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields)
{
    char err[512];
    /* Unknown top-level fields are refused before the parse, so their values never build a tree. */
    if (jr_prescan_keys(rq->body, rq->body_len, fields, err, sizeof err)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        return NULL;
    }
    json_t *doc = jr_parse_object(rq->body, rq->body_len, s->cfg.max_depth, err, sizeof err);
    if (!doc) {
        http_error(rs, 400, "INVALID_JSON", "%s", err);
        return NULL;
    }
    if (jr_only(doc, "", fields, err, sizeof err)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

json_t *route_body_floats(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields,
                          const char *key, float **floats, uint32_t *n)
{
    /* The array's numbers skip jansson (a node each would be about a third of a search's own cost
     * for 128 floats); jansson parses the rest of a copy where the array is now empty. */
    *floats = NULL;
    *n = 0;
    char *copy = jf_take_floats(rq->body, rq->body_len, key, floats, n);
    struct http_req stripped = *rq;
    if (copy) stripped.body = copy;
    json_t *body = route_body(s, &stripped, rs, fields);
    free(copy);
    if (!body) {
        free(*floats);
        *floats = NULL;
        *n = 0;
    }
    return body;
}

json_t *route_body_opt(struct server *s, struct http_req *rq, struct http_resp *rs, const char *const *fields)
{
    size_t i = 0;
    while (i < rq->body_len &&
           (rq->body[i] == ' ' || rq->body[i] == '\n' || rq->body[i] == '\r' || rq->body[i] == '\t'))
        i++;
    if (i == rq->body_len) return json_object();
    return route_body(s, rq, rs, fields);
}

int route_query_uint(struct http_req *rq, struct http_resp *rs, const char *name, uint64_t *out)
{
    char buf[HTTP_QUERY_MAX + 1];
    const char *q = http_query(rq, name, buf, sizeof buf);
    if (!q) return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(q, &end, 10);
    if (*q < '0' || *q > '9' || *end || errno) {
        http_error(rs, 400, "INVALID_ARGUMENT", "query argument '%s' must be a non-negative integer, not '%.100s'",
                   name, q);
        return -1;
    }
    *out = v;
    return 1;
}

int route_query_bool(struct http_req *rq, struct http_resp *rs, const char *name, int *out)
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

int srv_db_hold(struct server *s, const char *name, jvdb_db **out)
{
    if (!db_name_valid(name)) return jvdb_db_open(s->env, name, out); /* the library's own message for a bad name */
    return env_db_acquire(s->env, name, out);
}

void srv_db_unhold(struct server *s, jvdb_db *db)
{
    if (db) env_db_release(s->env, db);
}

jvdb_db *route_db_acquire(struct server *s, const char *name, struct http_resp *rs)
{
    if (route_name_check(rs, "database", name)) return NULL;
    jvdb_db *db = NULL;
    int rc = srv_db_hold(s, name, &db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return NULL;
    }
    return db;
}

void route_db_release(struct server *s, jvdb_db *db) { srv_db_unhold(s, db); }

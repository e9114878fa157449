/*
 * routes_bulk.c — operations on many vectors (issue 12):
 *   POST  /v1/databases/{id}/vectors/delete   {"ids": [...]} | {"filters": {...}}  -> {"deleted": n}
 *   POST  /v1/databases/{id}/vectors/count    {"filters": {...}} (optional)        -> {"count": n}
 *   PATCH /v1/databases/{id}/vectors/{vid}    {"metadata": {...}}  merge           -> {"id", "lsn"}
 *   POST  /v1/databases/{id}/vectors/metadata {"filters": {...}, "metadata": {...}} -> {"updated": n}
 *   POST  /v1/databases/{id}/vectors/scroll   {"limit", "cursor", "filters", ...} -> {"vectors", "nextCursor"}
 *   GET   /v1/databases/{id}/vectors?limit=&offset=                          -> {"total", "limit", "offset", "vectors"}
 *
 * Every body is checked whole (unknown fields, shapes, the filter compiled) before the database is
 * held, so a refused request changes nothing.  A filtered delete or update with an empty filter is
 * refused: "every vector" must be said by deleting the database, never by a typo'd filter.
 */
#include "server/srv.h"

#include "search/filter.h"

#include <stdlib.h>
#include <string.h>

static const char *const bulk_delete_fields[] = { "ids", "filters", NULL };
static const char *const bulk_count_fields[] = { "filters", NULL };
static const char *const bulk_patch_fields[] = { "metadata", NULL };
static const char *const bulk_setmeta_fields[] = { "filters", "metadata", NULL };

/* Compiles body's "filters" (NULL when absent or null).  required: an absent or empty one is 400.
 * Returns 0, or -1 after answering. */
static int bulk_filter(struct http_resp *rs, json_t *body, int required, jvdb_filter **out)
{
    *out = NULL;
    json_t *f = json_object_get(body, "filters");
    if (!f || json_is_null(f)) {
        if (!required) return 0;
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'filters' is required");
        return -1;
    }
    if (!json_is_object(f)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'filters' must be a JSON object");
        return -1;
    }
    if (required && json_object_size(f) == 0) {
        http_error(rs, 400, "INVALID_ARGUMENT",
                   "field 'filters' is empty: it would select every vector (delete the database to remove them all)");
        return -1;
    }
    int rc = filter_from_json(f, out);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return -1;
    }
    return 0;
}

/* Answers {"<key>": n}. */
static void bulk_reply_n(struct http_resp *rs, const char *key, uint64_t n)
{
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kuint(&w, key, n);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

/* The ids of body["ids"] as C strings pointing into the body, or -1 after answering. */
static int bulk_ids(struct http_resp *rs, json_t *ids, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!json_is_array(ids)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'ids' must be an array of strings");
        return -1;
    }
    size_t count = json_array_size(ids);
    const char **v = malloc((count ? count : 1) * sizeof *v);
    if (!v) {
        http_lib_error(rs, JVDB_ENOMEM);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *id = json_array_get(ids, i);
        if (!json_is_string(id) || strlen(json_string_value(id)) != json_string_length(id)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "ids[%zu] must be a string without NUL", i);
            free(v);
            return -1;
        }
        v[i] = json_string_value(id);
    }
    *out = v;
    *n = count;
    return 0;
}

void route_vec_delete_many(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, bulk_delete_fields);
    if (!body) return;
    json_t *ids = json_object_get(body, "ids");
    json_t *f = json_object_get(body, "filters");
    const char **idv = NULL;
    size_t n = 0;
    jvdb_filter *filter = NULL;
    if ((ids != NULL) == (f != NULL)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "give exactly one of 'ids' and 'filters'");
        goto out;
    }
    if (ids ? bulk_ids(rs, ids, &idv, &n) : bulk_filter(rs, body, 1, &filter)) goto out;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    uint64_t deleted = 0;
    int rc = ids ? jvdb_delete_ids(db, idv, n, &deleted, NULL) : jvdb_delete_filtered(db, filter, &deleted);
    route_db_release(s, db);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else bulk_reply_n(rs, "deleted", deleted);
out:
    free(idv);
    jvdb_filter_free(filter);
    json_decref(body);
}

void route_vec_count(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body_opt(s, rq, rs, bulk_count_fields);
    if (!body) return;
    jvdb_filter *filter = NULL;
    if (bulk_filter(rs, body, 0, &filter)) goto out;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    uint64_t n = 0;
    int rc = jvdb_count_filtered(db, filter, &n);
    route_db_release(s, db);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else bulk_reply_n(rs, "count", n);
out:
    jvdb_filter_free(filter);
    json_decref(body);
}

/* body["metadata"] as JSON text (malloc'd), or NULL after answering. */
static char *bulk_patch_text(struct http_resp *rs, json_t *body)
{
    json_t *m = json_object_get(body, "metadata");
    if (!json_is_object(m)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'metadata' %s", m ? "must be a JSON object" : "is required");
        return NULL;
    }
    char *text = json_dumps(m, JSON_COMPACT);
    if (!text) http_lib_error(rs, JVDB_ENOMEM);
    return text;
}

void route_vec_patch(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, bulk_patch_fields);
    if (!body) return;
    char *patch = bulk_patch_text(rs, body);
    if (!patch) goto out;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    uint64_t lsn = 0;
    int rc = jvdb_update_metadata(db, rq->params[1], patch, &lsn);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        goto out;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "id", rq->params[1]);
    jw_kuint(&w, "lsn", lsn);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
out:
    free(patch);
    json_decref(body);
}

void route_vec_set_metadata(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, bulk_setmeta_fields);
    if (!body) return;
    jvdb_filter *filter = NULL;
    char *patch = NULL;
    if (bulk_filter(rs, body, 1, &filter) || !(patch = bulk_patch_text(rs, body))) goto out;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    uint64_t n = 0;
    int rc = jvdb_update_metadata_filtered(db, filter, patch, &n);
    route_db_release(s, db);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else bulk_reply_n(rs, "updated", n);
out:
    free(patch);
    jvdb_filter_free(filter);
    json_decref(body);
}

/* ---------------------------------------------------------------- reading a collection back */

static const char *const bulk_scroll_fields[] = {
    "limit", "cursor", "filters", "includeValues", "includeMetadata", NULL
};

/* The cursor is the hex of the last id returned: opaque to clients, any id fits a JSON string. */
static char *bulk_cursor_encode(const char *id)
{
    size_t n = strlen(id);
    char *c = malloc(2 * n + 1);
    if (!c) return NULL;
    for (size_t i = 0; i < n; i++) snprintf(c + 2 * i, 3, "%02x", (unsigned char)id[i]);
    c[2 * n] = '\0';
    return c;
}

/* Decodes a scroll cursor back to the id it names; NULL for anything bulk_cursor_encode could not have made. */
static char *bulk_cursor_decode(const char *c)
{
    size_t n = strlen(c);
    if (n == 0 || n % 2 || n / 2 > JVDB_MAX_ID_LEN) return NULL;
    char *id = malloc(n / 2 + 1);
    if (!id) return NULL;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(c + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdef", c[2 * i]) ||
            !strchr("0123456789abcdef", c[2 * i + 1]) || v == 0) {
            free(id);
            return NULL;
        }
        id[i] = (char)v;
    }
    id[n / 2] = '\0';
    return id;
}

/* Writes the vectors of ids (those still live) as {"id", "values"?, "metadata"?} objects. */
static int bulk_write_vectors(struct jw *w, jvdb_db *db, char **ids, size_t n, int values, int metadata)
{
    float *buf = malloc(jvdb_db_dim(db) * sizeof *buf);
    if (!buf) return JVDB_ENOMEM;
    jw_arr(w);
    int rc = JVDB_OK;
    for (size_t i = 0; i < n && rc == JVDB_OK; i++) {
        char *meta = NULL;
        int r = jvdb_get(db, ids[i], buf, metadata ? &meta : NULL);
        if (r == JVDB_ENOTFOUND) continue; /* deleted since the page was chosen */
        if (r != JVDB_OK) {
            rc = r;
            break;
        }
        jw_obj(w);
        jw_kstr(w, "id", ids[i]);
        if (values) {
            jw_key(w, "values");
            jw_floats(w, buf, jvdb_db_dim(db));
        }
        if (metadata) {
            jw_key(w, "metadata");
            jw_json(w, meta);
        }
        jw_obj_end(w);
        jvdb_free(meta);
    }
    jw_arr_end(w);
    free(buf);
    return rc;
}

void route_vec_scroll(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body_opt(s, rq, rs, bulk_scroll_fields);
    if (!body) return;
    jvdb_filter *filter = NULL;
    char *after = NULL, **ids = NULL;
    size_t n = 0;
    char err[256];
    int values = 0, metadata = 1, r;
    json_t *lim = json_object_get(body, "limit");
    json_int_t limit = 100;
    if (lim && (!json_is_integer(lim) || json_integer_value(lim) < 1 || json_integer_value(lim) > JVDB_SCROLL_MAX)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'limit' must be an integer from 1 to %u", JVDB_SCROLL_MAX);
        goto out;
    }
    if (lim) limit = json_integer_value(lim);
    json_t *cur = json_object_get(body, "cursor");
    if (cur && !json_is_null(cur) && (!json_is_string(cur) || !(after = bulk_cursor_decode(json_string_value(cur))))) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'cursor' must be a nextCursor this route returned");
        goto out;
    }
    if ((r = jr_bool(body, "includeValues", &values, err, sizeof err)) < 0 ||
        (r = jr_bool(body, "includeMetadata", &metadata, err, sizeof err)) < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        goto out;
    }
    if (bulk_filter(rs, body, 0, &filter)) goto out;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    int more = 0;
    int rc = jvdb_scroll_ids(db, filter, after, (size_t)limit, &ids, &n, &more);
    struct jw w;
    jw_init(&w);
    if (rc == JVDB_OK) {
        jw_obj(&w);
        jw_key(&w, "vectors");
        rc = bulk_write_vectors(&w, db, ids, n, values, metadata);
    }
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        jw_free(&w);
        http_lib_error(rs, rc);
        goto out;
    }
    jw_key(&w, "nextCursor");
    char *next = more && n ? bulk_cursor_encode(ids[n - 1]) : NULL;
    if (next) jw_str(&w, next);
    else jw_null(&w);
    free(next);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
out:
    jvdb_scroll_ids_free(ids, n);
    free(after);
    jvdb_filter_free(filter);
    json_decref(body);
}

/* The original JadeVectorDB's listing: GET .../vectors?limit=&offset= (ids in order, with values
 * and metadata).  Offsets shift under concurrent writes; scroll's cursor does not. */
void route_vec_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    uint64_t offset = 0, limit = 100;
    if (route_query_uint(rq, rs, "offset", &offset) < 0 || route_query_uint(rq, rs, "limit", &limit) < 0) return;
    if (limit < 1 || limit > JVDB_SCROLL_MAX || offset > JVDB_SCROLL_MAX - limit) {
        http_error(rs, 400, "INVALID_ARGUMENT",
                   "limit must be 1 to %u and offset + limit at most %u (vectors/scroll reads any size)",
                   JVDB_SCROLL_MAX, JVDB_SCROLL_MAX);
        return;
    }
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    char **ids = NULL;
    size_t n = 0;
    uint64_t total = jvdb_count(db);
    int rc = jvdb_scroll_ids(db, NULL, NULL, (size_t)(offset + limit), &ids, &n, NULL);
    struct jw w;
    jw_init(&w);
    if (rc == JVDB_OK) {
        jw_obj(&w);
        jw_kuint(&w, "total", total);
        jw_kuint(&w, "limit", limit);
        jw_kuint(&w, "offset", offset);
        jw_key(&w, "vectors");
        size_t from = offset < n ? (size_t)offset : n;
        rc = bulk_write_vectors(&w, db, ids + from, n - from, 1, 1);
    }
    route_db_release(s, db);
    jvdb_scroll_ids_free(ids, n);
    if (rc != JVDB_OK) {
        jw_free(&w);
        http_lib_error(rs, rc);
        return;
    }
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

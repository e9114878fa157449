/*
 * routes_payload.c — payload index declarations over REST (issue 12; docs/API.md "Payload indexes"):
 *
 *   PUT    /v1/databases/{id}/payload-indexes/{field}   {"type": "keyword" | "numeric"}
 *   GET    /v1/databases/{id}/payload-indexes
 *   DELETE /v1/databases/{id}/payload-indexes/{field}
 *
 * The field is one path segment, percent-decoded (dots name nested fields, as in filters).  These
 * routes only declare; the library builds and uses the indexes (src/search/payload.c).  Invariant:
 * a request that is refused changes nothing (the library checks the field and type before it
 * writes the MANIFEST).
 */
#include "server/srv.h"

#include <stdlib.h>

static const char *const payload_put_fields[] = { "type", NULL };

/* Writes one declaration as {"field", "type"}. */
static void payload_write(struct jw *w, const char *field, jvdb_payload_type type)
{
    jw_obj(w);
    jw_kstr(w, "field", field);
    jw_kstr(w, "type", jvdb_payload_type_name(type));
    jw_obj_end(w);
}

void route_payload_put(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, payload_put_fields);
    if (!body) return;
    json_t *t = json_object_get(body, "type");
    jvdb_payload_type type;
    if (!json_is_string(t)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'type' %s (keyword or numeric)",
                   t ? "must be a string" : "is required");
    } else if (jvdb_payload_type_parse(json_string_value(t), &type) != JVDB_OK) {
        http_lib_error(rs, JVDB_EINVAL);
    } else {
        jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
        if (db) {
            int rc = jvdb_db_payload_index_create(db, rq->params[1], type);
            route_db_release(s, db);
            if (rc != JVDB_OK) {
                http_lib_error(rs, rc);
            } else {
                struct jw w;
                jw_init(&w);
                payload_write(&w, rq->params[1], type);
                http_reply_json(rs, 200, &w);
            }
        }
    }
    json_decref(body);
}

void route_payload_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    jvdb_payload_index *v = NULL;
    size_t n = 0;
    int rc = jvdb_db_payload_index_list(db, &v, &n);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "payloadIndexes");
    jw_arr(&w);
    for (size_t i = 0; i < n; i++) payload_write(&w, v[i].field, v[i].type);
    jw_arr_end(&w);
    jw_obj_end(&w);
    jvdb_free(v);
    http_reply_json(rs, 200, &w);
}

void route_payload_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    int rc = jvdb_db_payload_index_drop(db, rq->params[1]);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "field", rq->params[1]);
    jw_kbool(&w, "deleted", 1);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

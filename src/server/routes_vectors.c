/*
 * routes_vectors.c — /v1/databases/{id}/vectors: put one, put a batch (all or nothing), get many,
 * get / update / delete one.
 *
 * Request vectors are turned into jvdb_record values here (JSON numbers to float32, metadata
 * objects back to compact JSON text) and validated by the library, whose messages already name the
 * field and, for batches, the record ("record 3: vector has 3 values but database 'docs' has
 * dimension 4").  The server's own shape checks use the same "record N: " wording, and a batch
 * error carries the index as a number too ({"error", "message", "index"}).
 *
 * Batches of the common shape are decoded by jf_batch (jsonio.c) without building a jansson tree,
 * which halves the cost of a large batch; anything else takes the general path.  Debug builds run
 * both on every fast-path batch and abort if they disagree.
 */
#include "server/srv.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One decoded request vector; the strings it points at belong to it. */
typedef struct vec_in {
    const char *id;
    float *values;
    uint32_t n;
    char *meta;                      /* compact JSON text, NULL for none */
} vec_in;

static void vec_in_free(vec_in *v)
{
    free(v->values);
    free(v->meta);
    memset(v, 0, sizeof *v);
}

/* `where` is "" for a single vector, "record N: " inside a batch. */
static int route_parse_id(json_t *o, const char *key, const char *where, const char **id, char *err, size_t cap)
{
    json_t *j = json_object_get(o, key);
    if (!j) {
        snprintf(err, cap, "%sfield '%s' is required", where, key);
        return -1;
    }
    if (!json_is_string(j)) {
        snprintf(err, cap, "%sfield '%s' must be a string", where, key);
        return -1;
    }
    *id = json_string_value(j);
    return 0;
}

/* metadata: absent or null = none; otherwise an object. */
static int route_parse_meta(json_t *o, const char *where, char **meta, char *err, size_t cap)
{
    json_t *m = json_object_get(o, "metadata");
    *meta = NULL;
    if (!m || json_is_null(m)) return 0;
    if (!json_is_object(m)) {
        snprintf(err, cap, "%sfield 'metadata' must be a JSON object", where);
        return -1;
    }
    *meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!*meta) {
        snprintf(err, cap, "%sout of memory encoding metadata", where);
        return -1;
    }
    return 0;
}

static int route_parse_values(json_t *o, const char *where, vec_in *v, char *err, size_t cap)
{
    json_t *vals = json_object_get(o, "values");
    if (!vals) {
        snprintf(err, cap, "%sfield 'values' is required", where);
        return -1;
    }
    char what[64];
    snprintf(what, sizeof what, "%svalues", where);
    return jr_floats(vals, what, JVDB_MAX_DIM, &v->values, &v->n, err, cap) < 0 ? -1 : 0;
}

static int route_parse_vector(json_t *o, const char *where, vec_in *v, char *err, size_t cap)
{
    memset(v, 0, sizeof *v);
    if (!json_is_object(o)) {
        snprintf(err, cap, "%sa vector must be a JSON object", where);
        return -1;
    }
    if (route_parse_id(o, "id", where, &v->id, err, cap) || route_parse_values(o, where, v, err, cap) ||
        route_parse_meta(o, where, &v->meta, err, cap)) {
        vec_in_free(v);
        return -1;
    }
    return 0;
}

/* 400 with the batch index as a number beside the message. */
static void route_batch_error(http_resp *rs, long index, const char *msg)
{
    jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "error", "INVALID_ARGUMENT");
    jw_kstr(&w, "message", msg);
    if (index >= 0) jw_kint(&w, "index", index);
    jw_obj_end(&w);
    http_reply_json(rs, 400, &w);
}

static void route_write_lsn_reply(http_resp *rs, int status, const char *id, uint64_t lsn)
{
    jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "id", id);
    jw_kuint(&w, "lsn", lsn);
    jw_obj_end(&w);
    http_reply_json(rs, status, &w);
}

void route_vec_put(server *s, http_req *rq, http_resp *rs)
{
    json_t *body = route_body(s, rq, rs);
    if (!body) return;
    char err[512];
    vec_in v;
    if (route_parse_vector(body, "", &v, err, sizeof err)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        json_decref(body);
        return;
    }
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (db) {
        uint64_t lsn = 0;
        int rc = jvdb_put(db, v.id, v.values, v.n, v.meta, &lsn);
        route_db_release(s);
        if (rc != JVDB_OK) http_lib_error(rs, rc);
        else route_write_lsn_reply(rs, 201, v.id, lsn);
    }
    vec_in_free(&v);
    json_decref(body);
}

/* Stores a decoded batch; answers 201 or the error naming the record. */
static void route_store_batch(server *s, http_req *rq, http_resp *rs, const jvdb_record *recs, size_t n)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    uint64_t lsn = 0;
    int rc = jvdb_put_batch(db, recs, n, &lsn);
    route_db_release(s);
    if (rc == JVDB_EINVAL) {
        /* The library names the record as "record N: ..."; repeat N as a number. */
        const char *msg = jvdb_errmsg();
        long idx = -1;
        if (sscanf(msg, "record %ld:", &idx) != 1) idx = n == 1 ? 0 : -1;
        route_batch_error(rs, idx, msg);
    } else if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
    } else {
        jw w;
        jw_init(&w);
        jw_obj(&w);
        jw_kuint(&w, "count", n);
        jw_kuint(&w, "lsn", lsn);
        jw_obj_end(&w);
        http_reply_json(rs, 201, &w);
    }
}

/* The general path: jansson, with a message naming the record for every shape error.  On success
 * recs[i] point into vs[i]. */
static int route_parse_batch(server *s, http_req *rq, http_resp *rs, vec_in **vs_out, jvdb_record **recs_out, size_t *count)
{
    json_t *body = route_body(s, rq, rs);
    if (!body) return -1;
    json_t *arr = json_object_get(body, "vectors");
    size_t n = json_array_size(arr);
    vec_in *vs = NULL;
    jvdb_record *recs = NULL;
    if (!json_is_array(arr) || n == 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", arr && json_is_array(arr) ? "field 'vectors' is empty"
                                                                          : "field 'vectors' must be an array of vectors");
        goto fail;
    }
    vs = calloc(n, sizeof *vs);
    recs = calloc(n, sizeof *recs);
    if (!vs || !recs) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory for a batch of %zu vectors", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char where[48], err[512];
        snprintf(where, sizeof where, "record %zu: ", i);
        if (route_parse_vector(json_array_get(arr, i), where, &vs[i], err, sizeof err)) {
            route_batch_error(rs, (long)i, err);
            goto fail;
        }
        /* The id points into the jansson tree: keep a copy, the tree goes below. */
        vs[i].id = strdup(vs[i].id);
        if (!vs[i].id) {
            http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
            goto fail;
        }
        recs[i] = (jvdb_record){vs[i].id, vs[i].values, vs[i].n, vs[i].meta};
    }
    json_decref(body);
    *vs_out = vs;
    *recs_out = recs;
    *count = n;
    return 0;
fail:
    if (vs)
        for (size_t i = 0; i < n; i++) {
            free((char *)vs[i].id);
            vec_in_free(&vs[i]);
        }
    free(vs);
    free(recs);
    json_decref(body);
    return -1;
}

static void route_free_batch(vec_in *vs, jvdb_record *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)vs[i].id);
        vec_in_free(&vs[i]);
    }
    free(vs);
    free(recs);
}

#ifndef NDEBUG
/* Debug builds (the sanitizer test runs) decode every fast-path batch the general way too and stop
 * hard on any difference, so the e2e suites prove the two paths agree. */
static void route_check_fast(server *s, http_req *rq, const jf_vector *fv, size_t n)
{
    http_resp tmp = {0};
    vec_in *vs;
    jvdb_record *recs;
    size_t m;
    if (route_parse_batch(s, rq, &tmp, &vs, &recs, &m)) {
        log_error("fast batch parse accepted a body the general path refuses: %.*s", (int)tmp.len, tmp.body);
        abort();
    }
    free(tmp.body);
    int same = m == n;
    for (size_t i = 0; same && i < n; i++) {
        same = !strcmp(fv[i].id, recs[i].id) && fv[i].n == recs[i].dim &&
               !memcmp(fv[i].values, recs[i].vector, fv[i].n * sizeof(float)) &&
               (fv[i].meta ? recs[i].meta_json && !strcmp(fv[i].meta, recs[i].meta_json) : !recs[i].meta_json);
        if (!same) log_error("fast batch parse differs from the general path at record %zu", i);
    }
    route_free_batch(vs, recs, m);
    if (!same) abort();
}
#endif

void route_vec_batch(server *s, http_req *rq, http_resp *rs)
{
    jf_vector *fv = NULL;
    size_t n = 0;
    if (jf_batch(rq->body, rq->body_len, s->cfg.max_depth, &fv, &n)) {
        log_debug("batch of %zu vectors decoded on the fast path", n);
#ifndef NDEBUG
        route_check_fast(s, rq, fv, n);
#endif
        jvdb_record *recs = calloc(n, sizeof *recs);
        if (!recs) {
            http_error(rs, 500, "OUT_OF_MEMORY", "out of memory for a batch of %zu vectors", n);
        } else {
            for (size_t i = 0; i < n; i++) recs[i] = (jvdb_record){fv[i].id, fv[i].values, fv[i].n, fv[i].meta};
            route_store_batch(s, rq, rs, recs, n);
        }
        free(recs);
        jf_batch_free(fv, n);
        return;
    }
    vec_in *vs;
    jvdb_record *recs;
    if (route_parse_batch(s, rq, rs, &vs, &recs, &n)) return;
    route_store_batch(s, rq, rs, recs, n);
    route_free_batch(vs, recs, n);
}

/* Writes {"id", "values", "metadata"} of one stored vector, or returns the library status. */
static int route_write_vector(jw *w, jvdb_db *db, const char *id, float *buf)
{
    char *meta = NULL;
    int rc = jvdb_get(db, id, buf, &meta);
    if (rc != JVDB_OK) return rc;
    jw_obj(w);
    jw_kstr(w, "id", id);
    jw_key(w, "values");
    jw_floats(w, buf, jvdb_db_dim(db));
    jw_key(w, "metadata");
    jw_raw(w, meta, meta ? strlen(meta) : 0);
    jw_obj_end(w);
    jvdb_free(meta);
    return JVDB_OK;
}

void route_vec_get(server *s, http_req *rq, http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    float *buf = malloc(jvdb_db_dim(db) * sizeof *buf);
    jw w;
    jw_init(&w);
    int rc = buf ? route_write_vector(&w, db, rq->params[1], buf) : JVDB_ENOMEM;
    route_db_release(s);
    free(buf);
    if (rc != JVDB_OK) {
        jw_free(&w);
        http_lib_error(rs, rc);
        return;
    }
    http_reply_json(rs, 200, &w);
}

void route_vec_batch_get(server *s, http_req *rq, http_resp *rs)
{
    json_t *body = route_body(s, rq, rs);
    if (!body) return;
    json_t *ids = json_object_get(body, "ids");
    if (!json_is_array(ids)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'ids' must be an array of strings");
        json_decref(body);
        return;
    }
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *id = json_array_get(ids, i);
        if (!json_is_string(id)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "ids[%zu] must be a string", i);
            json_decref(body);
            return;
        }
    }
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) {
        json_decref(body);
        return;
    }
    float *buf = malloc(jvdb_db_dim(db) * sizeof *buf);
    json_t *missing = json_array();
    jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "vectors");
    jw_arr(&w);
    size_t found = 0;
    int rc = buf && missing ? JVDB_OK : JVDB_ENOMEM;
    for (size_t i = 0; rc == JVDB_OK && i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        int r = route_write_vector(&w, db, id, buf);
        if (r == JVDB_OK) found++;
        else if (r == JVDB_ENOTFOUND || r == JVDB_EINVAL) json_array_append(missing, json_array_get(ids, i));
        else rc = r;
    }
    route_db_release(s);
    free(buf);
    if (rc != JVDB_OK) {
        jw_free(&w);
        http_lib_error(rs, rc);
    } else {
        jw_arr_end(&w);
        jw_kuint(&w, "count", found);
        jw_key(&w, "notFound");
        jw_arr(&w);
        for (size_t i = 0; i < json_array_size(missing); i++) jw_str(&w, json_string_value(json_array_get(missing, i)));
        jw_arr_end(&w);
        jw_obj_end(&w);
        http_reply_json(rs, 200, &w);
    }
    json_decref(missing);
    json_decref(body);
}

void route_vec_update(server *s, http_req *rq, http_resp *rs)
{
    json_t *body = route_body(s, rq, rs);
    if (!body) return;
    const char *vid = rq->params[1];
    char err[512];
    vec_in v = {.id = vid};
    const char *body_id = NULL;
    json_t *vals = json_object_get(body, "values");
    json_t *meta = json_object_get(body, "metadata");
    if (json_object_get(body, "id") && route_parse_id(body, "id", "", &body_id, err, sizeof err)) goto bad;
    if (body_id && strcmp(body_id, vid)) {
        snprintf(err, sizeof err, "the body's id '%s' differs from the id in the path '%s'", body_id, vid);
        goto bad;
    }
    if (!vals && !meta) {
        snprintf(err, sizeof err, "nothing to update: give 'values', 'metadata' or both");
        goto bad;
    }
    if (vals && route_parse_values(body, "", &v, err, sizeof err)) goto bad;
    if (meta && route_parse_meta(body, "", &v.meta, err, sizeof err)) goto bad;

    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    /* An update of one part keeps the other: read the current vector first (404 when absent).
     * Two concurrent partial updates of one id are last-writer-wins. */
    float *cur = malloc(jvdb_db_dim(db) * sizeof *cur);
    char *cur_meta = NULL;
    int rc = cur ? jvdb_get(db, vid, cur, meta ? NULL : &cur_meta) : JVDB_ENOMEM;
    uint64_t lsn = 0;
    if (rc == JVDB_OK) {
        const float *nv = vals ? v.values : cur;
        uint32_t nn = vals ? v.n : jvdb_db_dim(db);
        rc = jvdb_put(db, vid, nv, nn, meta ? v.meta : cur_meta, &lsn);
    }
    route_db_release(s);
    free(cur);
    jvdb_free(cur_meta);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else route_write_lsn_reply(rs, 200, vid, lsn);
    goto out;
bad:
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
out:
    vec_in_free(&v);
    json_decref(body);
}

void route_vec_delete(server *s, http_req *rq, http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    uint64_t lsn = 0;
    int rc = jvdb_delete(db, rq->params[1], &lsn);
    route_db_release(s);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "id", rq->params[1]);
    jw_kbool(&w, "deleted", 1);
    jw_kuint(&w, "lsn", lsn);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

/*
 * routes_vectors.c — /v1/databases/{id}/vectors: put one, put a batch (all or nothing), get many,
 * get / update / delete one.
 *
 * Request vectors are decoded by jsonio.c (jr_vector, jr_batch: JSON numbers to float32, metadata
 * objects back to compact JSON text, unknown fields refused by name) and validated by the library,
 * whose messages already name the field and, for batches, the record ("record 3: vector has 3
 * values but database 'docs' has dimension 4").  The server's own shape checks use the same
 * "record N: " wording, and a batch error carries the index as a number too ({"error", "message",
 * "index"}).  Stored metadata goes back out through jw_json, never as raw text.
 *
 * Batches of the common shape are decoded by jf_batch (jsonio.c) without building a jansson tree,
 * which halves the cost of a large batch; anything else takes the general path.  Debug builds run
 * both on every fast-path batch and abort if they disagree (and fuzz_http_body holds them to it).
 * A database is held (route_db_acquire) only around the library calls, not while bodies are parsed.
 */
#include "server/srv.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const vec_update_fields[] = {"id", "values", "metadata", NULL};
static const char *const vec_ids_fields[] = {"ids", "vectorIds", NULL};   /* vectorIds: JadeVectorDB's name */

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
    json_t *body = route_body(s, rq, rs, jr_vector_fields);
    if (!body) return;
    char err[512];
    jf_vector v;
    if (jr_vector(body, "", &v, err, sizeof err)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        json_decref(body);
        return;
    }
    json_decref(body);
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (db) {
        uint64_t lsn = 0;
        int rc = jvdb_put(db, v.id, v.values, v.n, v.meta, &lsn);
        route_db_release(s, db);
        if (rc != JVDB_OK) http_lib_error(rs, rc);
        else route_write_lsn_reply(rs, 201, v.id, lsn);
    }
    jf_vector_free(&v);
}

/* Stores a decoded batch; answers 201 or the error naming the record. */
static void route_store_batch(server *s, http_req *rq, http_resp *rs, const jvdb_record *recs, size_t n)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    uint64_t lsn = 0;
    int rc = jvdb_put_batch(db, recs, n, &lsn);
    route_db_release(s, db);
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

/* The general path: jansson, with a message naming the record for every shape error. */
static int route_parse_batch(server *s, http_req *rq, http_resp *rs, jf_vector **out, size_t *count)
{
    json_t *body = route_body(s, rq, rs, jr_batch_fields);
    if (!body) return -1;
    char err[512];
    long index;
    int rc = jr_batch(body, out, count, &index, err, sizeof err);
    json_decref(body);
    if (rc) route_batch_error(rs, index, err);
    return rc;
}

#ifndef NDEBUG
/* Debug builds (the sanitizer test runs) decode every fast-path batch the general way too and stop
 * hard on any difference, so the e2e suites prove the two paths agree (tests/fuzz/fuzz_http_body.c
 * does the same on generated bodies). */
static void route_check_fast(server *s, http_req *rq, const jf_vector *fv, size_t n)
{
    http_resp tmp = {0};
    jf_vector *gv;
    size_t m;
    if (route_parse_batch(s, rq, &tmp, &gv, &m)) {
        log_error("fast batch parse accepted a body the general path refuses: %.*s", (int)tmp.len, tmp.body);
        abort();
    }
    free(tmp.body);
    int same = m == n;
    for (size_t i = 0; same && i < n; i++) {
        same = !strcmp(fv[i].id, gv[i].id) && fv[i].n == gv[i].n &&
               !memcmp(fv[i].values, gv[i].values, fv[i].n * sizeof(float)) &&
               (fv[i].meta ? gv[i].meta && !strcmp(fv[i].meta, gv[i].meta) : !gv[i].meta);
        if (!same) log_error("fast batch parse differs from the general path at record %zu", i);
    }
    jf_batch_free(gv, m);
    if (!same) abort();
}
#endif

/* Stores decoded vectors (the fast and the general path meet here). */
static void route_store_vectors(server *s, http_req *rq, http_resp *rs, const jf_vector *v, size_t n)
{
    jvdb_record *recs = calloc(n, sizeof *recs);
    if (!recs) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory for a batch of %zu vectors", n);
        return;
    }
    for (size_t i = 0; i < n; i++) recs[i] = (jvdb_record){v[i].id, v[i].values, v[i].n, v[i].meta};
    route_store_batch(s, rq, rs, recs, n);
    free(recs);
}

void route_vec_batch(server *s, http_req *rq, http_resp *rs)
{
    jf_vector *fv = NULL;
    size_t n = 0;
    char err[512];
    long index = -1;
    /* Unknown top-level fields are refused before either decoder looks at the body. */
    if (jr_prescan_keys(rq->body, rq->body_len, jr_batch_fields, err, sizeof err)) {
        route_batch_error(rs, -1, err);
        return;
    }
    int fast = jf_batch(rq->body, rq->body_len, s->cfg.max_depth, &fv, &n, &index, err, sizeof err);
    if (fast < 0) {
        route_batch_error(rs, index, err);
        return;
    }
    if (fast) {
        log_debug("batch of %zu vectors decoded on the fast path", n);
#ifndef NDEBUG
        route_check_fast(s, rq, fv, n);
#endif
    } else if (route_parse_batch(s, rq, rs, &fv, &n)) {
        return;
    }
    route_store_vectors(s, rq, rs, fv, n);
    jf_batch_free(fv, n);
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
    if (jw_json(w, meta)) log_warn("vector '%s' of '%s' has stored metadata that is not a JSON object; answered null", id,
                                   jvdb_db_name(db));
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
    route_db_release(s, db);
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
    json_t *body = route_body(s, rq, rs, vec_ids_fields);
    if (!body) return;
    json_t *ids = json_object_get(body, "ids");
    const char *field = "ids";
    if (ids && json_object_get(body, "vectorIds")) {
        http_error(rs, 400, "INVALID_ARGUMENT", "give 'ids' or its alias 'vectorIds', not both");
        json_decref(body);
        return;
    }
    if (!ids && (ids = json_object_get(body, "vectorIds"))) field = "vectorIds";
    if (!json_is_array(ids)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field '%s' %s", field, ids ? "must be an array of strings" : "is required");
        json_decref(body);
        return;
    }
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *id = json_array_get(ids, i);
        if (!json_is_string(id)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "%s[%zu] must be a string", field, i);
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
    route_db_release(s, db);
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
    json_t *body = route_body(s, rq, rs, vec_update_fields);
    if (!body) return;
    const char *vid = rq->params[1];
    char err[512];
    jf_vector v = {0};
    const char *body_id = NULL;
    json_t *vals = json_object_get(body, "values");
    json_t *meta = json_object_get(body, "metadata");
    if (jr_string(body, "id", &body_id, err, sizeof err) < 0) goto bad;
    if (body_id && strcmp(body_id, vid)) {
        snprintf(err, sizeof err, "the body's id '%s' differs from the id in the path '%s'", body_id, vid);
        goto bad;
    }
    if (!vals && !meta) {
        snprintf(err, sizeof err, "nothing to update: give 'values', 'metadata' or both");
        goto bad;
    }
    if (vals && jr_floats(vals, "values", JVDB_MAX_DIM, &v.values, &v.n, err, sizeof err) < 0) goto bad;
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta)) {
            snprintf(err, sizeof err, "field 'metadata' must be a JSON object");
            goto bad;
        }
        if (!(v.meta = json_dumps(meta, JSON_COMPACT | JSON_ENCODE_ANY))) {
            snprintf(err, sizeof err, "out of memory encoding metadata");
            goto bad;
        }
    }

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
    route_db_release(s, db);
    free(cur);
    jvdb_free(cur_meta);
    if (rc != JVDB_OK) http_lib_error(rs, rc);
    else route_write_lsn_reply(rs, 200, vid, lsn);
    goto out;
bad:
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
out:
    jf_vector_free(&v);
    json_decref(body);
}

void route_vec_delete(server *s, http_req *rq, http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    uint64_t lsn = 0;
    int rc = jvdb_delete(db, rq->params[1], &lsn);
    route_db_release(s, db);
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

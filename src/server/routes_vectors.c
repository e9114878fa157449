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
 * PUT of an absent vector creates it when the body has values (the original's behaviour).
 * Single POSTs (jf_vector_one) and the values of PUTs (jf_take_floats) take the same fast number
 * decoder; application/octet-stream batches are decoded by binbatch.c.
 */
#include "server/srv.h"
#include "server/binbatch.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const vec_update_fields[] = { "id", "values", "metadata", NULL };
/* vectorIds and vector_ids: the original JadeVectorDB's names for ids (its server reads all three);
 * includeValues / includeVectorData (aliases) and includeMetadata choose what each vector shows. */
static const char *const vec_ids_fields[] = {
    "ids", "vectorIds", "vector_ids", "includeValues", "includeVectorData", "includeMetadata", NULL
};

/* 400 with the batch index as a number beside the message. */
static void route_batch_error(struct http_resp *rs, long index, const char *msg)
{
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "error", "INVALID_ARGUMENT");
    jw_kstr(&w, "message", msg);
    if (index >= 0) jw_kint(&w, "index", index);
    jw_obj_end(&w);
    http_reply_json(rs, 400, &w);
}

/* Answers {"id", "lsn"}: the id written and the log position that acknowledges it. */
static void route_write_lsn_reply(struct http_resp *rs, int status, const char *id, uint64_t lsn)
{
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "id", id);
    jw_kuint(&w, "lsn", lsn);
    jw_obj_end(&w);
    http_reply_json(rs, status, &w);
}

/* The general path for one vector body: jansson, every message.  0 or -1 (answered). */
static int route_parse_vector(struct server *s, struct http_req *rq, struct http_resp *rs, struct jf_vector *v)
{
    json_t *body = route_body(s, rq, rs, jr_vector_fields);
    if (!body) return -1;
    char err[512];
    int rc = jr_vector(body, "", v, err, sizeof err);
    if (rc) http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
    json_decref(body);
    return rc;
}

void route_vec_put(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    char err[512];
    struct jf_vector v;
    /* Unknown fields first (as route_body does), then the fast decoder, else the general path. */
    if (jr_prescan_keys(rq->body, rq->body_len, jr_vector_fields, err, sizeof err)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        return;
    }
    if (jf_vector_one(rq->body, rq->body_len, s->cfg.max_depth, &v)) {
#ifndef NDEBUG
        /* As for batches: debug builds decode it the general way too and stop on any difference. */
        struct http_resp tmp = { 0 };
        struct jf_vector g;
        if (route_parse_vector(s, rq, &tmp, &g) || strcmp(g.id, v.id) || g.n != v.n ||
            memcmp(g.values, v.values, v.n * sizeof(float)) || !g.meta != !v.meta ||
            (g.meta && strcmp(g.meta, v.meta))) {
            log_error("fast vector parse differs from the general path: %.*s", (int)tmp.len, tmp.body ? tmp.body : "");
            abort();
        }
        jf_vector_free(&g);
        free(tmp.body);
#endif
    } else if (route_parse_vector(s, rq, rs, &v)) {
        return;
    }
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
static void route_store_batch(struct server *s, struct http_req *rq, struct http_resp *rs, const jvdb_record *recs,
                              size_t n)
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
        struct jw w;
        jw_init(&w);
        jw_obj(&w);
        jw_kuint(&w, "count", n);
        jw_kuint(&w, "lsn", lsn);
        jw_obj_end(&w);
        http_reply_json(rs, 201, &w);
    }
}

/* The general path: jansson, with a message naming the record for every shape error. */
static int route_parse_batch(struct server *s, struct http_req *rq, struct http_resp *rs, struct jf_vector **out,
                             size_t *count)
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
static void route_check_fast(struct server *s, struct http_req *rq, const struct jf_vector *fv, size_t n)
{
    struct http_resp tmp = { 0 };
    struct jf_vector *gv;
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
static void route_store_vectors(struct server *s, struct http_req *rq, struct http_resp *rs, const struct jf_vector *v,
                                size_t n)
{
    jvdb_record *recs = calloc(n, sizeof *recs);
    if (!recs) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory for a batch of %zu vectors", n);
        return;
    }
    for (size_t i = 0; i < n; i++) recs[i] = (jvdb_record){ v[i].id, v[i].values, v[i].n, v[i].meta };
    route_store_batch(s, rq, rs, recs, n);
    free(recs);
}

void route_vec_batch(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    struct jf_vector *fv = NULL;
    size_t n = 0;
    char err[512];
    long index = -1;
    /* application/octet-stream: the binary layout of binbatch.h (no decimal numbers at all). */
    const char *ctype = http_header(rq, "Content-Type");
    if (ctype && !strncasecmp(ctype, "application/octet-stream", 24)) {
        if (jb_decode((const unsigned char *)rq->body, rq->body_len, s->cfg.max_depth, &fv, &n, &index, err,
                      sizeof err)) {
            route_batch_error(rs, index, err);
            return;
        }
        log_debug("binary batch of %zu vectors", n);
        route_store_vectors(s, rq, rs, fv, n);
        jf_batch_free(fv, n);
        return;
    }
    /* Unknown top-level fields are refused before any other fault.  The fast decoder takes only
     * bodies whose one top-level key is "vectors", so the prescan (a pass over the whole body) is
     * needed only when it does not take the body. */
    int fast = jf_batch(rq->body, rq->body_len, s->cfg.max_depth, &fv, &n, &index, err, sizeof err);
    if (fast <= 0) {
        char perr[512];
        if (jr_prescan_keys(rq->body, rq->body_len, jr_batch_fields, perr, sizeof perr)) {
            route_batch_error(rs, -1, perr);
            return;
        }
    }
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

/* Writes {"id", "values"?, "metadata"?} of one stored vector, or returns the library status. */
static int route_write_vector_parts(struct jw *w, jvdb_db *db, const char *id, float *buf, int values, int metadata)
{
    char *meta = NULL;
    int rc = jvdb_get(db, id, buf, metadata ? &meta : NULL);
    if (rc != JVDB_OK) return rc;
    jw_obj(w);
    jw_kstr(w, "id", id);
    if (values) {
        jw_key(w, "values");
        jw_floats(w, buf, jvdb_db_dim(db));
    }
    if (metadata) {
        jw_key(w, "metadata");
        if (jw_json(w, meta))
            log_warn("vector '%s' of '%s' has stored metadata that is not a JSON object; answered null", id,
                     jvdb_db_name(db));
    }
    jw_obj_end(w);
    jvdb_free(meta);
    return JVDB_OK;
}

/* The whole vector: {"id", "values", "metadata"}. */
static int route_write_vector(struct jw *w, jvdb_db *db, const char *id, float *buf)
{
    return route_write_vector_parts(w, db, id, buf, 1, 1);
}

void route_vec_get(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    float *buf = malloc(jvdb_db_dim(db) * sizeof *buf);
    struct jw w;
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

void route_vec_batch_get(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, vec_ids_fields);
    if (!body) return;
    static const char *const id_keys[] = { "ids", "vectorIds", "vector_ids" };
    json_t *ids = NULL;
    const char *field = "ids";
    char err[512];
    for (size_t k = 0; k < 3; k++) {
        json_t *v = json_object_get(body, id_keys[k]);
        if (!v) continue;
        if (ids) {
            http_error(rs, 400, "INVALID_ARGUMENT",
                       "give one of 'ids', 'vectorIds', 'vector_ids', not both '%s' and '%s'", field, id_keys[k]);
            json_decref(body);
            return;
        }
        ids = v;
        field = id_keys[k];
    }
    if (!json_is_array(ids)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field '%s' %s", field,
                   ids ? "must be an array of strings" : "is required");
        json_decref(body);
        return;
    }
    /* Values and metadata by default; includeValues false gives metadata only (retrieval). */
    int want_values = 1, want_meta = 1, vd = -1, iv = -1;
    if (jr_bool(body, "includeVectorData", &vd, err, sizeof err) < 0 ||
        jr_bool(body, "includeValues", &iv, err, sizeof err) < 0 ||
        jr_bool(body, "includeMetadata", &want_meta, err, sizeof err) < 0) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        json_decref(body);
        return;
    }
    if (vd >= 0 && iv >= 0 && vd != iv) {
        http_error(rs, 400, "INVALID_ARGUMENT", "'includeVectorData' and its alias 'includeValues' disagree; give one");
        json_decref(body);
        return;
    }
    if (vd >= 0) want_values = vd;
    else if (iv >= 0) want_values = iv;
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
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_key(&w, "vectors");
    jw_arr(&w);
    size_t found = 0;
    int rc = buf && missing ? JVDB_OK : JVDB_ENOMEM;
    for (size_t i = 0; rc == JVDB_OK && i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        int r = route_write_vector_parts(&w, db, id, buf, want_values, want_meta);
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

void route_vec_update(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    float *pre;
    uint32_t pre_n;
    json_t *body = route_body_floats(s, rq, rs, vec_update_fields, "values", &pre, &pre_n);
    if (!body) return;
    const char *vid = rq->params[1];
    char err[512];
    struct jf_vector v = { .values = pre, .n = pre_n };
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
    if (vals && !pre && jr_floats(vals, "values", JVDB_MAX_DIM, &v.values, &v.n, err, sizeof err) < 0) goto bad;
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
    /* An update of one part keeps the other: read the current vector first.  An absent vector is
     * created when the body has its values, as the original JadeVectorDB does (its client expects
     * 200 either way; "created" tells them apart); without values it is 404.  Two concurrent
     * partial updates of one id are last-writer-wins. */
    float *cur = malloc(jvdb_db_dim(db) * sizeof *cur);
    char *cur_meta = NULL;
    int rc = cur ? jvdb_get(db, vid, cur, meta ? NULL : &cur_meta) : JVDB_ENOMEM;
    int created = 0;
    uint64_t lsn = 0;
    if (rc == JVDB_ENOTFOUND && vals) {
        created = 1;
        rc = jvdb_put(db, vid, v.values, v.n, v.meta, &lsn);
    } else if (rc == JVDB_OK) {
        const float *nv = vals ? v.values : cur;
        uint32_t nn = vals ? v.n : jvdb_db_dim(db);
        rc = jvdb_put(db, vid, nv, nn, meta ? v.meta : cur_meta, &lsn);
    }
    route_db_release(s, db);
    free(cur);
    jvdb_free(cur_meta);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
    } else {
        struct jw w;
        jw_init(&w);
        jw_obj(&w);
        jw_kstr(&w, "id", vid);
        jw_kuint(&w, "lsn", lsn);
        jw_kbool(&w, "created", created);
        jw_obj_end(&w);
        http_reply_json(rs, 200, &w);
    }
    goto out;
bad:
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
out:
    jf_vector_free(&v);
    json_decref(body);
}

void route_vec_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
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
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "id", rq->params[1]);
    jw_kbool(&w, "deleted", 1);
    jw_kuint(&w, "lsn", lsn);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

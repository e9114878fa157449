/*
 * routes_search.c — POST /v1/databases/{id}/search (also reached as .../search/advanced, the
 * original JadeVectorDB client's route) and POST .../search/batch: k nearest neighbours of one or
 * many query vectors, optionally grouped by a metadata field.
 *
 * Fields: the JadeVectorDB v1 ones (queryVector, topK, threshold, filters, includeMetadata,
 * includeVectorData, and includeValues, the original's alias of includeVectorData) plus ef, exact,
 * groupBy and groupSize.  Every other field is refused by name, in a batch with the query's index.
 *
 * Answers are shaped for retrieval: metadata comes with every hit unless includeMetadata is false,
 * as {"vectorId", "score", "vector": {"metadata", "values"?}} — the original's "vector" object
 * without its copy of the id.  groupBy keeps the first `groupSize` hits of each distinct value of
 * a metadata field (dotted paths reach nested objects, dots always separate as in filters; a list
 * value puts the hit in the group of each element, as Qdrant's search groups do); a hit whose
 * field is missing or null belongs to no group and is left out.  Grouping widens the search until every group it answers is full or the
 * candidates run out, so the groups are those of the best hits the search could find.
 *
 * Filters arrive as a JSON object and are handed to the library's filter parser as text, so the
 * server and the library accept exactly the same filter language.  Scores are the library's:
 * squared Euclidean distance for euclidean databases (smaller is better), cosine similarity and
 * inner product (larger is better).  One topK limit, JVDB_MAX_K, serves REST, CLI and library.
 */
#include "server/srv.h"

#include "core/grow.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_MAX_GROUP      1000    /* groupSize */
#define SEARCH_BATCH_MAX      1000    /* queries in one batch */
#define SEARCH_BATCH_MAX_HITS 1000000 /* sum of topK x groupSize over a batch: bounds the answer */

/* Everything else is refused by name: a misspelt "filter" must never run an unfiltered search. */
static const char *const search_fields[] = { "queryVector",       "topK",          "ef",
                                             "threshold",         "exact",         "includeMetadata",
                                             "includeVectorData", "includeValues", "filters",
                                             "groupBy",           "groupSize",     NULL };
static const char *const batch_fields[] = { "queries", NULL };

struct search_req {
    float *query;
    uint32_t dim;
    jvdb_search_params p;
    jvdb_filter *filter;
    int want_meta, want_values; /* what the answer shows (p may fetch more for grouping) */
    char *group_by;             /* NULL: no grouping */
    uint32_t group_size;
};

/* Frees a parsed search request and zeroes it. */
static void search_req_free(struct search_req *q)
{
    free(q->query);
    free(q->group_by);
    jvdb_filter_free(q->filter);
    memset(q, 0, sizeof *q);
}

/* Fills q from one query object; returns 0, or -1 with err set (400). */
static int route_parse_search(json_t *body, struct search_req *q, float *pre, uint32_t pre_n, char *err, size_t cap)
{
    uint64_t u;
    double d;
    int b, r;
    memset(q, 0, sizeof *q);
    jvdb_search_params_init(&q->p);
    q->want_meta = 1; /* retrieval needs the metadata: opt out with includeMetadata false */
    q->group_size = 1;
    json_t *qv = json_object_get(body, "queryVector");
    if (!qv) {
        free(pre);
        snprintf(err, cap, "field 'queryVector' is required");
        return -1;
    }
    /* pre: the query already decoded by jf_take_floats (its place in body holds an empty array). */
    if (pre) {
        q->query = pre;
        q->dim = pre_n;
    } else if (jr_floats(qv, "queryVector", JVDB_MAX_DIM, &q->query, &q->dim, err, cap) < 0) {
        goto bad;
    }
    if ((r = jr_uint(body, "topK", 1, JVDB_MAX_K, &u, err, cap)) < 0) goto bad;
    if (r) q->p.k = (uint32_t)u;
    if ((r = jr_uint(body, "ef", 1, 1u << 20, &u, err, cap)) < 0) goto bad;
    if (r) q->p.ef = (uint32_t)u;
    if ((r = jr_number(body, "threshold", &d, err, cap)) < 0) goto bad;
    if (r) {
        q->p.has_threshold = 1;
        q->p.threshold = (float)d;
    }
    if ((r = jr_bool(body, "exact", &b, err, cap)) < 0) goto bad;
    if (r) q->p.exact = b;
    if ((r = jr_bool(body, "includeMetadata", &b, err, cap)) < 0) goto bad;
    if (r) q->want_meta = b;
    /* includeValues is the original client's name for includeVectorData; both may come (the
     * original client always sends includeValues) but they must agree. */
    int vd = -1, iv = -1;
    if ((r = jr_bool(body, "includeVectorData", &vd, err, cap)) < 0) goto bad;
    if ((r = jr_bool(body, "includeValues", &iv, err, cap)) < 0) goto bad;
    if (vd >= 0 && iv >= 0 && vd != iv) {
        snprintf(err, cap, "'includeVectorData' and its alias 'includeValues' disagree; give one");
        goto bad;
    }
    q->want_values = vd >= 0 ? vd : iv >= 0 ? iv : 0;
    const char *gb = NULL;
    if ((r = jr_string(body, "groupBy", &gb, err, cap)) < 0) goto bad;
    if (r) {
        if (!*gb || strlen(gb) > 1024) {
            snprintf(err, cap, "field 'groupBy' must name a metadata field (1 to 1024 characters)");
            goto bad;
        }
        if (!(q->group_by = strdup(gb))) {
            snprintf(err, cap, "out of memory");
            goto bad;
        }
    }
    if ((r = jr_uint(body, "groupSize", 1, SEARCH_MAX_GROUP, &u, err, cap)) < 0) goto bad;
    if (r) {
        if (!q->group_by) {
            snprintf(err, cap, "field 'groupSize' needs 'groupBy'");
            goto bad;
        }
        q->group_size = (uint32_t)u;
    }
    if (q->group_by && (uint64_t)q->p.k * q->group_size > JVDB_MAX_K) {
        snprintf(err, cap, "topK x groupSize is %llu; at most %d hits can be answered",
                 (unsigned long long)q->p.k * q->group_size, JVDB_MAX_K);
        goto bad;
    }
    q->p.include_metadata = q->want_meta || q->group_by != NULL;
    q->p.include_vectors = q->want_values;
    json_t *f = json_object_get(body, "filters");
    if (f && !json_is_null(f)) {
        if (!json_is_object(f)) {
            snprintf(err, cap, "field 'filters' must be a JSON object");
            goto bad;
        }
        if (json_object_size(f) > 0) {
            char *text = json_dumps(f, JSON_COMPACT);
            int rc = text ? jvdb_filter_parse(text, &q->filter) : JVDB_ENOMEM;
            free(text);
            if (rc != JVDB_OK) {
                snprintf(err, cap, "%s", jvdb_errmsg());
                goto bad;
            }
            q->p.filter = q->filter;
        }
    }
    return 0;
bad:
    search_req_free(q);
    return -1;
}

/* Writes one hit: id, score and (when asked) the vector object with metadata and values. */
static void route_write_hit(struct jw *w, const jvdb_result *r, uint32_t dim, const struct search_req *q)
{
    jw_obj(w);
    jw_kstr(w, "vectorId", r->id);
    jw_key(w, "score");
    jw_float(w, r->score);
    if (q->want_values || q->want_meta) {
        jw_key(w, "vector");
        jw_obj(w);
        if (q->want_values) {
            jw_key(w, "values");
            if (r->vector) jw_floats(w, r->vector, dim);
            else jw_null(w);
        }
        if (q->want_meta) {
            jw_key(w, "metadata");
            if (jw_json(w, r->meta_json))
                log_warn("search result '%s' has stored metadata that is not a JSON object; answered null", r->id);
        }
        jw_obj_end(w);
    }
    jw_obj_end(w);
}

/* ---------------------------------------------------------------- groups */

struct search_group {
    char *key; /* the value as compact JSON: equal values, equal keys */
    json_t *value;
    size_t *hits; /* indexes into the results, best first */
    uint32_t n;
};

struct search_groups {
    struct search_group *g;
    size_t n, cap;
};

/* Frees grouped search results: each group's key, value and hits. */
static void search_groups_free(struct search_groups *gs)
{
    for (size_t i = 0; i < gs->n; i++) {
        free(gs->g[i].key);
        json_decref(gs->g[i].value);
        free(gs->g[i].hits);
    }
    free(gs->g);
    memset(gs, 0, sizeof *gs);
}

/* The value at dotted `path` in a metadata object, or NULL.  Dots always separate, as in filters. */
static json_t *route_meta_path(json_t *meta, const char *path)
{
    json_t *cur = meta;
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        char seg[1025];
        if (!json_is_object(cur) || l >= sizeof seg) return NULL;
        memcpy(seg, p, l);
        seg[l] = 0;
        cur = json_object_get(cur, seg);
        if (!dot || !cur) return cur;
        p = dot + 1;
    }
}

/* Adds hit `i` to the group of `value` (creating it while fewer than `max_groups` exist).
 * Returns 0, or -1 when out of memory. */
static int route_group_add(struct search_groups *gs, json_t *value, size_t i, const struct search_req *q,
                           size_t max_groups)
{
    char *key = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    if (!key) return -1;
    struct search_group *g = NULL;
    for (size_t k = 0; k < gs->n && !g; k++)
        if (!strcmp(gs->g[k].key, key)) g = &gs->g[k];
    if (!g) {
        if (gs->n >= max_groups) {
            free(key);
            return 0;
        }
        struct search_group *ng = grow_array(gs->g, &gs->cap, gs->n + 1, sizeof *ng, 8);
        if (!ng) {
            free(key);
            return -1;
        }
        gs->g = ng;
        g = &gs->g[gs->n];
        *g = (struct search_group){ key, json_incref(value), calloc(q->group_size, sizeof(size_t)), 0 };
        if (!g->hits) {
            free(key);
            json_decref(value);
            return -1;
        }
        gs->n++;
    } else {
        free(key);
    }
    if (g->n < q->group_size && (g->n == 0 || g->hits[g->n - 1] != i)) g->hits[g->n++] = i;
    return 0;
}

/* Writes a group's value: scalars as themselves, an object as itself, a nested list as its text. */
static void route_write_value(struct jw *w, json_t *v, const char *key)
{
    if (json_is_string(v)) jw_str(w, json_string_value(v));
    else if (json_is_integer(v)) jw_int(w, json_integer_value(v));
    else if (json_is_real(v)) jw_double(w, json_real_value(v));
    else if (json_is_boolean(v)) jw_bool(w, json_is_true(v));
    else if (json_is_object(v)) jw_json(w, key);
    else jw_str(w, key);
}

/* Groups results in score order: the first topK distinct values, each with its best groupSize
 * hits.  *full is set when every one of the topK groups has groupSize hits. */
static int route_group(const jvdb_result *res, size_t n, const struct search_req *q, struct search_groups *gs,
                       int *full)
{
    memset(gs, 0, sizeof *gs);
    for (size_t i = 0; i < n; i++) {
        if (!res[i].meta_json) continue;
        json_t *meta = json_loads(res[i].meta_json, 0, NULL);
        json_t *v = meta ? route_meta_path(meta, q->group_by) : NULL;
        int rc = 0;
        if (json_is_array(v)) {
            for (size_t k = 0; k < json_array_size(v) && !rc; k++) {
                json_t *e = json_array_get(v, k);
                if (!json_is_null(e)) rc = route_group_add(gs, e, i, q, q->p.k);
            }
        } else if (v && !json_is_null(v)) {
            rc = route_group_add(gs, v, i, q, q->p.k);
        }
        json_decref(meta);
        if (rc) {
            search_groups_free(gs);
            return JVDB_ENOMEM;
        }
    }
    *full = gs->n == q->p.k;
    for (size_t k = 0; k < gs->n && *full; k++) *full = gs->g[k].n == q->group_size;
    return JVDB_OK;
}

/* ---------------------------------------------------------------- one query */

/* Runs query q on db and writes its answer object ({"count", "results"} or {"count", "groups"}).
 * Returns the library status (nothing written on error). */
static int route_run_query(jvdb_db *db, const struct search_req *q, struct jw *w)
{
    uint32_t dim = jvdb_db_dim(db);
    jvdb_result *res = NULL;
    size_t n = 0;
    if (!q->group_by) {
        int rc = jvdb_search(db, q->query, q->dim, &q->p, &res, &n);
        if (rc != JVDB_OK) return rc;
        jw_obj(w);
        jw_kuint(w, "count", n);
        jw_key(w, "results");
        jw_arr(w);
        for (size_t i = 0; i < n; i++) route_write_hit(w, &res[i], dim, q);
        jw_arr_end(w);
        jw_obj_end(w);
        jvdb_results_free(res, n);
        return JVDB_OK;
    }
    /* Widen until the groups are full, the candidates run out (fewer than asked came back) or
     * the limit is reached. */
    jvdb_search_params p = q->p;
    uint64_t want = (uint64_t)q->p.k * q->group_size * 4;
    struct search_groups gs = { 0 };
    for (;;) {
        p.k = (uint32_t)(want < JVDB_MAX_K ? want : JVDB_MAX_K);
        int rc = jvdb_search(db, q->query, q->dim, &p, &res, &n);
        if (rc != JVDB_OK) return rc;
        int full = 0;
        if ((rc = route_group(res, n, q, &gs, &full)) != JVDB_OK) {
            jvdb_results_free(res, n);
            return rc;
        }
        if (full || n < p.k || p.k == JVDB_MAX_K) break;
        search_groups_free(&gs);
        jvdb_results_free(res, n);
        res = NULL;
        want *= 4;
    }
    jw_obj(w);
    jw_kuint(w, "count", gs.n);
    jw_key(w, "groups");
    jw_arr(w);
    for (size_t k = 0; k < gs.n; k++) {
        jw_obj(w);
        jw_key(w, "value");
        route_write_value(w, gs.g[k].value, gs.g[k].key);
        jw_key(w, "hits");
        jw_arr(w);
        for (uint32_t h = 0; h < gs.g[k].n; h++) route_write_hit(w, &res[gs.g[k].hits[h]], dim, q);
        jw_arr_end(w);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_obj_end(w);
    search_groups_free(&gs);
    jvdb_results_free(res, n);
    return JVDB_OK;
}

void route_search(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    float *pre;
    uint32_t pre_n;
    json_t *body = route_body_floats(s, rq, rs, search_fields, "queryVector", &pre, &pre_n);
    if (!body) return;
    struct search_req q;
    char err[512];
#ifndef NDEBUG
    /* Debug builds decode the query the general way too and stop on any difference. */
    if (pre) {
        json_t *g = jr_parse_object(rq->body, rq->body_len, s->cfg.max_depth, err, sizeof err);
        float *gv = NULL;
        uint32_t gn = 0;
        if (!g ||
            jr_floats(json_object_get(g, "queryVector"), "queryVector", JVDB_MAX_DIM, &gv, &gn, err, sizeof err) < 0 ||
            gn != pre_n || memcmp(gv, pre, gn * sizeof(float))) {
            log_error("fast queryVector decode differs from the general path");
            abort();
        }
        free(gv);
        json_decref(g);
    }
#endif
    int bad = route_parse_search(body, &q, pre, pre_n, err, sizeof err);
    json_decref(body);
    if (bad) {
        http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        return;
    }
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) {
        search_req_free(&q);
        return;
    }
    struct jw w;
    jw_init(&w);
    int rc = route_run_query(db, &q, &w);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        jw_free(&w);
        http_lib_error(rs, rc);
    } else {
        http_reply_json(rs, 200, &w);
    }
    search_req_free(&q);
}

void route_search_batch(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, batch_fields);
    if (!body) return;
    char err[512], msg[640];
    json_t *qs = json_object_get(body, "queries");
    size_t nq = json_array_size(qs);
    struct search_req *reqs = NULL;
    size_t parsed = 0;
    if (!json_is_array(qs) || nq == 0 || nq > SEARCH_BATCH_MAX) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'queries' %s",
                   !qs                  ? "is required"
                   : !json_is_array(qs) ? "must be an array of search objects"
                                        : "must hold 1 to 1000 searches");
        goto out;
    }
    if (!(reqs = calloc(nq, sizeof *reqs))) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        goto out;
    }
    uint64_t hits = 0;
    for (; parsed < nq; parsed++) {
        json_t *o = json_array_get(qs, parsed);
        char where[48];
        snprintf(where, sizeof where, "queries[%zu]: ", parsed);
        if (!json_is_object(o)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "queries[%zu] must be a search object", parsed);
            goto out;
        }
        if (jr_only(o, where, search_fields, err, sizeof err) ||
            route_parse_search(o, &reqs[parsed], NULL, 0, err, sizeof err)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "%s%s", strncmp(err, where, strlen(where)) ? where : "", err);
            goto out;
        }
        hits += (uint64_t)reqs[parsed].p.k * reqs[parsed].group_size;
    }
    if (hits > SEARCH_BATCH_MAX_HITS) {
        http_error(rs, 400, "INVALID_ARGUMENT",
                   "the batch asks for %llu hits (topK x groupSize summed); the limit is %d", (unsigned long long)hits,
                   SEARCH_BATCH_MAX_HITS);
        goto out;
    }
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) goto out;
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kuint(&w, "count", nq);
    jw_key(&w, "results");
    jw_arr(&w);
    int rc = JVDB_OK;
    size_t i = 0;
    for (; i < nq && rc == JVDB_OK; i++) rc = route_run_query(db, &reqs[i], &w);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        jw_free(&w);
        snprintf(msg, sizeof msg, "queries[%zu]: %s", i - 1, jvdb_errmsg());
        http_lib_error_msg(rs, rc, msg);
        goto out;
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
out:
    for (size_t k = 0; k < parsed && reqs; k++) search_req_free(&reqs[k]);
    free(reqs);
    json_decref(body);
}

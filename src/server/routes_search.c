/*
 * routes_search.c — POST /v1/databases/{id}/search: k nearest neighbours of a query vector, with
 * the JadeVectorDB v1 fields (queryVector, topK, threshold, filters, includeMetadata,
 * includeVectorData) plus ef and exact.
 *
 * Filters arrive as a JSON object and are handed to the library's filter parser as text, so the
 * server and the library accept exactly the same filter language and the messages for a bad filter
 * come from the one place that knows it.  Scores are the library's: squared Euclidean distance for
 * euclidean databases (smaller is better), cosine similarity and inner product (larger is better).
 */
#include "server/srv.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_MAX_K 10000

/* Everything else is refused by name: a misspelt "filter" must never run an unfiltered search. */
static const char *const search_fields[] = {"queryVector", "topK", "ef", "threshold", "exact", "includeMetadata",
                                            "includeVectorData", "filters", NULL};

typedef struct search_req {
    float *query;
    uint32_t dim;
    jvdb_search_params p;
    jvdb_filter *filter;
} search_req;

static void search_req_free(search_req *q)
{
    free(q->query);
    jvdb_filter_free(q->filter);
}

/* Fills q from the body; returns 0, or -1 after answering 400. */
static int route_parse_search(json_t *body, search_req *q, http_resp *rs)
{
    char err[512];
    uint64_t u;
    double d;
    int b, r;
    memset(q, 0, sizeof *q);
    jvdb_search_params_init(&q->p);
    json_t *qv = json_object_get(body, "queryVector");
    if (!qv) {
        http_error(rs, 400, "INVALID_ARGUMENT", "field 'queryVector' is required");
        return -1;
    }
    if (jr_floats(qv, "queryVector", JVDB_MAX_DIM, &q->query, &q->dim, err, sizeof err) < 0) goto bad;
    if ((r = jr_uint(body, "topK", 1, SEARCH_MAX_K, &u, err, sizeof err)) < 0) goto bad;
    if (r) q->p.k = (uint32_t)u;
    if ((r = jr_uint(body, "ef", 1, 1u << 20, &u, err, sizeof err)) < 0) goto bad;
    if (r) q->p.ef = (uint32_t)u;
    if ((r = jr_number(body, "threshold", &d, err, sizeof err)) < 0) goto bad;
    if (r) {
        q->p.has_threshold = 1;
        q->p.threshold = (float)d;
    }
    if ((r = jr_bool(body, "exact", &b, err, sizeof err)) < 0) goto bad;
    if (r) q->p.exact = b;
    if ((r = jr_bool(body, "includeMetadata", &b, err, sizeof err)) < 0) goto bad;
    if (r) q->p.include_metadata = b;
    if ((r = jr_bool(body, "includeVectorData", &b, err, sizeof err)) < 0) goto bad;
    if (r) q->p.include_vectors = b;
    json_t *f = json_object_get(body, "filters");
    if (f && !json_is_null(f)) {
        if (!json_is_object(f)) {
            snprintf(err, sizeof err, "field 'filters' must be a JSON object");
            goto bad;
        }
        if (json_object_size(f) > 0) {
            char *text = json_dumps(f, JSON_COMPACT);
            int rc = text ? jvdb_filter_parse(text, &q->filter) : JVDB_ENOMEM;
            free(text);
            if (rc != JVDB_OK) {
                http_lib_error(rs, rc);
                search_req_free(q);
                return -1;
            }
            q->p.filter = q->filter;
        }
    }
    return 0;
bad:
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
    search_req_free(q);
    return -1;
}

static void route_write_results(jw *w, const jvdb_result *res, size_t n, uint32_t dim, const jvdb_search_params *p)
{
    jw_obj(w);
    jw_kuint(w, "count", n);
    jw_key(w, "results");
    jw_arr(w);
    for (size_t i = 0; i < n; i++) {
        jw_obj(w);
        jw_kstr(w, "vectorId", res[i].id);
        jw_key(w, "score");
        jw_float(w, res[i].score);
        if (p->include_vectors || p->include_metadata) {
            jw_key(w, "vector");
            jw_obj(w);
            jw_kstr(w, "id", res[i].id);
            if (p->include_vectors) {
                jw_key(w, "values");
                if (res[i].vector) jw_floats(w, res[i].vector, dim);
                else jw_null(w);
            }
            if (p->include_metadata) {
                jw_key(w, "metadata");
                if (jw_json(w, res[i].meta_json))
                    log_warn("search result '%s' has stored metadata that is not a JSON object; answered null", res[i].id);
            }
            jw_obj_end(w);
        }
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_obj_end(w);
}

void route_search(server *s, http_req *rq, http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, search_fields);
    if (!body) return;
    search_req q;
    int bad = route_parse_search(body, &q, rs);
    json_decref(body);
    if (bad) return;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) {
        search_req_free(&q);
        return;
    }
    jvdb_result *res = NULL;
    size_t n = 0;
    int rc = jvdb_search(db, q.query, q.dim, &q.p, &res, &n);
    uint32_t dim = jvdb_db_dim(db);
    route_db_release(s, db);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
    } else {
        jw w;
        jw_init(&w);
        route_write_results(&w, res, n, dim, &q.p);
        http_reply_json(rs, 200, &w);
    }
    jvdb_results_free(res, n);
    search_req_free(&q);
}

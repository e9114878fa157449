/*
 * routes_db.c — /v1/databases: create, list, show, update, drop (JadeVectorDB v1 field names).
 *
 * The database id is its name (docs/FORMAT.md, "Data directory").  What the object shows comes from two owners: the
 * library (dimension, metric, durability, compaction policy, statistics) and the server's metadata
 * file (description, created_at, updated_at; dbmeta.c).  Settings are validated completely before
 * any is applied, so a rejected update changes nothing.
 */
#include "server/srv.h"

#include "core/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *route_metric_name(jvdb_metric m)
{
    /* The v1 API says "euclidean" for what the library calls l2. */
    switch (m) {
    case JVDB_METRIC_COSINE: return "cosine";
    case JVDB_METRIC_DOT: return "dot";
    default: return "euclidean";
    }
}

void route_write_stats(struct jw *w, jvdb_db *db)
{
    jvdb_stats st;
    if (jvdb_stats_get(db, &st) != JVDB_OK) memset(&st, 0, sizeof st);
    jw_kuint(w, "vectorCount", st.live_records);
    jw_kuint(w, "liveRecords", st.live_records);
    jw_kuint(w, "deadRecords", st.dead_records);
    jw_kuint(w, "tombstones", st.tombstones);
    jw_kuint(w, "fileBytes", st.file_bytes);
    jw_kuint(w, "liveBytes", st.live_bytes);
    jw_kuint(w, "deadBytes", st.dead_bytes);
    jw_kdouble(w, "deadRatio", st.dead_ratio);
    jw_kuint(w, "segments", st.segments);
    jw_kuint(w, "lastLsn", st.last_lsn);
    jw_kuint(w, "backupHorizon", st.backup_horizon);
}

static void route_write_policy(struct jw *w, const jvdb_compact_policy *p)
{
    jw_obj(w);
    jw_kdouble(w, "deadRatio", p->dead_ratio);
    jw_kuint(w, "largeBytes", p->large_bytes);
    jw_kdouble(w, "largeMinDeadRatio", p->large_min_dead_ratio);
    jw_kint(w, "maxAgeSeconds", p->max_age_s);
    jw_kuint(w, "minRecords", p->min_records);
    jw_kdouble(w, "maxSeconds", p->max_seconds);
    jw_kdouble(w, "segmentDeadRatio", p->segment_dead_ratio);
    jw_obj_end(w);
}

/* The database object of GET /v1/databases/{id}, also returned by create and update. */
static void route_write_db(struct server *s, struct jw *w, jvdb_db *db)
{
    const char *name = jvdb_db_name(db);
    struct dbmeta m;
    dbmeta_load(s, name, &m);
    jvdb_db_options o;
    jvdb_db_get_options(db, &o);
    char sync[32];
    jvdb_sync_name(o.sync, o.sync_interval_ms, sync, sizeof sync);
    jvdb_compact_policy pol;
    jvdb_db_get_compact_policy(db, &pol);
    jvdb_index_options ix;
    jvdb_db_get_index(db, &ix);

    jw_obj(w);
    jw_kstr(w, "databaseId", name);
    jw_kstr(w, "name", name);
    jw_kstr(w, "description", m.description);
    jw_kuint(w, "vectorDimension", o.dim);
    jw_kstr(w, "distanceMetric", route_metric_name(o.metric));
    jw_kstr(w, "indexType", ix.type == JVDB_INDEX_FLAT ? "FLAT" : "HNSW");
    jw_key(w, "indexParameters");
    jw_obj(w);
    jw_kuint(w, "m", ix.m);
    jw_kuint(w, "efConstruction", ix.ef_construction);
    jw_kuint(w, "efSearch", ix.ef_search);
    jw_obj_end(w);
    jw_kstr(w, "sync", sync);
    jw_key(w, "compactionPolicy");
    route_write_policy(w, &pol);
    /* camelCase like every other field; created_at / updated_at stay (deprecated, docs/API.md)
     * because clients written against earlier releases read them. */
    jw_key(w, "createdAt");
    jw_time(w, m.created_ns);
    jw_key(w, "updatedAt");
    jw_time(w, m.updated_ns);
    jw_key(w, "created_at");
    jw_time(w, m.created_ns);
    jw_key(w, "updated_at");
    jw_time(w, m.updated_ns);
    jw_key(w, "stats");
    jw_obj(w);
    route_write_stats(w, db);
    ship_write_stats(s, w, name);
    jw_obj_end(w);
    jw_obj_end(w);
    dbmeta_free(&m);
}

/* The answer of create and update: the database object, or the error that stopped them. */
static void route_reply_db(struct server *s, struct http_resp *rs, jvdb_db *db, int rc, int status)
{
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    struct jw w;
    jw_init(&w);
    route_write_db(s, &w, db);
    http_reply_json(rs, status, &w);
}

/* ---------------------------------------------------------------- settings shared by create and update */

/* The fields each route knows.  dimension and metric are the original JadeVectorDB's spellings of
 * vectorDimension and distanceMetric (its user guide uses them); update also takes back the
 * read-only fields of the object GET returns, so a client can send back what it read. */
static const char *const db_create_fields[] = {
    "name",   "description", "vectorDimension", "dimension", "distanceMetric",
    "metric", "indexType",   "indexParameters", "sync",      "compactionPolicy",
    NULL
};
static const char *const db_update_fields[] = {
    "name",       "description", "vectorDimension", "dimension",  "distanceMetric",
    "metric",     "indexType",   "indexParameters", "sync",       "compactionPolicy",
    "databaseId", "createdAt",   "updatedAt",       "created_at", "updated_at",
    "stats",      NULL
};

/* Which spelling of a field the body uses: `primary`, `alias` or NULL; -1 (err set) for both. */
static int route_alias(json_t *body, const char *primary, const char *alias, const char **key, char *err, size_t cap)
{
    int p = json_object_get(body, primary) != NULL, a = json_object_get(body, alias) != NULL;
    if (p && a) {
        snprintf(err, cap, "give '%s' or its alias '%s', not both", primary, alias);
        return -1;
    }
    *key = a ? alias : primary;
    return 0;
}

struct db_settings {
    const char *description; /* NULL = unchanged */
    int has_sync;
    jvdb_sync_mode sync;
    uint32_t sync_ms;
    int has_policy;
    jvdb_compact_policy policy;
    int has_index;
    jvdb_index_options index;
};

/* indexType and indexParameters amend `o`; sets *given when either is present. */
static int route_parse_index(json_t *body, jvdb_index_options *o, int *given, char *err, size_t cap)
{
    const char *type = NULL;
    int r = jr_string(body, "indexType", &type, err, cap);
    if (r < 0) return -1;
    if (r) {
        if (!strcasecmp(type, "HNSW")) o->type = JVDB_INDEX_HNSW;
        else if (!strcasecmp(type, "FLAT")) o->type = JVDB_INDEX_FLAT;
        else {
            snprintf(err, cap, "indexType '%s' is not one of HNSW, FLAT", type);
            return -1;
        }
        *given = 1;
    }
    json_t *p = json_object_get(body, "indexParameters");
    if (!p) return 0;
    if (!json_is_object(p)) {
        snprintf(err, cap, "field 'indexParameters' must be an object");
        return -1;
    }
    static const char *const fields[] = { "m", "efConstruction", "efSearch", NULL };
    if (jr_only(p, "indexParameters: ", fields, err, cap)) return -1;
    uint64_t u;
    if ((r = jr_uint(p, "m", 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->m = (uint32_t)u;
    if ((r = jr_uint(p, "efConstruction", 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->ef_construction = (uint32_t)u;
    if ((r = jr_uint(p, "efSearch", 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->ef_search = (uint32_t)u;
    *given = 1;
    return 0;
}

/* Fields of compactionPolicy, each optional: it amends `p`. */
static int route_parse_policy(json_t *obj, jvdb_compact_policy *p, char *err, size_t cap)
{
    if (!json_is_object(obj)) {
        snprintf(err, cap, "field 'compactionPolicy' must be an object");
        return -1;
    }
    double d;
    uint64_t u;
    int r;
    static const char *const fields[] = { "deadRatio",  "largeBytes", "largeMinDeadRatio", "maxAgeSeconds",
                                          "minRecords", "maxSeconds", "segmentDeadRatio",  NULL };
    if (jr_only(obj, "compactionPolicy: ", fields, err, cap)) return -1;
    struct {
        const char *k;
        double *dst;
        double lo, hi;
    } ratios[] = { { "deadRatio", &p->dead_ratio, 0, 1 },
                   { "largeMinDeadRatio", &p->large_min_dead_ratio, 0, 1 },
                   { "segmentDeadRatio", &p->segment_dead_ratio, 0, 1 },
                   { "maxSeconds", &p->max_seconds, 0, 1e9 } };
    for (size_t i = 0; i < sizeof ratios / sizeof ratios[0]; i++) {
        if ((r = jr_number(obj, ratios[i].k, &d, err, cap)) < 0) return -1;
        if (r == 0) continue;
        if (!(d >= ratios[i].lo && d <= ratios[i].hi)) {
            snprintf(err, cap, "compactionPolicy.%s is %g; it must be from %g to %g", ratios[i].k, d, ratios[i].lo,
                     ratios[i].hi);
            return -1;
        }
        *ratios[i].dst = d;
    }
    if ((r = jr_uint(obj, "largeBytes", 0, UINT64_MAX >> 1, &u, err, cap)) < 0) return -1;
    if (r) p->large_bytes = u;
    if ((r = jr_uint(obj, "minRecords", 0, UINT64_MAX >> 1, &u, err, cap)) < 0) return -1;
    if (r) p->min_records = u;
    if ((r = jr_uint(obj, "maxAgeSeconds", 0, INT64_MAX >> 1, &u, err, cap)) < 0) return -1;
    if (r) p->max_age_s = (int64_t)u;
    return 0;
}

static int route_parse_settings(json_t *body, jvdb_db *db, struct db_settings *st, char *err, size_t cap)
{
    memset(st, 0, sizeof *st);
    if (jr_string(body, "description", &st->description, err, cap) < 0) return -1;
    if (st->description && strlen(st->description) > 65536) {
        snprintf(err, cap, "description is %zu bytes; the limit is 65536", strlen(st->description));
        return -1;
    }
    const char *sync = NULL;
    int r = jr_string(body, "sync", &sync, err, cap);
    if (r < 0) return -1;
    if (r) {
        if (jvdb_sync_parse(sync, &st->sync, &st->sync_ms) != JVDB_OK) {
            snprintf(err, cap, "%s", jvdb_errmsg());
            return -1;
        }
        st->has_sync = 1;
    }
    json_t *pol = json_object_get(body, "compactionPolicy");
    if (pol) {
        if (db) jvdb_db_get_compact_policy(db, &st->policy);
        else jvdb_compact_policy_init(&st->policy);
        if (route_parse_policy(pol, &st->policy, err, cap)) return -1;
        st->has_policy = 1;
    }
    if (db) jvdb_db_get_index(db, &st->index);
    else jvdb_index_options_init(&st->index);
    return route_parse_index(body, &st->index, &st->has_index, err, cap);
}

/* Applies what the library keeps.  Errors come with jvdb_errmsg(). */
static int route_apply_settings(jvdb_db *db, const struct db_settings *st)
{
    int rc = JVDB_OK;
    if (st->has_sync && (rc = jvdb_db_set_sync(db, st->sync, st->sync_ms))) return rc;
    if (st->has_policy && (rc = jvdb_db_set_compact_policy(db, &st->policy))) return rc;
    if (st->has_index) {
        /* Changing index settings rebuilds the index: skip it when nothing changes. */
        jvdb_index_options cur;
        jvdb_db_get_index(db, &cur);
        if (cur.type != st->index.type || cur.m != st->index.m || cur.ef_construction != st->index.ef_construction ||
            cur.ef_search != st->index.ef_search)
            rc = jvdb_db_set_index(db, &st->index);
    }
    return rc;
}

/* ---------------------------------------------------------------- routes */

/* Removes the server metadata of a dropped database, unless a create of the same name came in
 * between (its file is then the new database's).  meta_mu orders this against that create's save. */
static void route_dbmeta_forget(struct server *s, const char *name)
{
    pthread_mutex_lock(&s->meta_mu);
    jvdb_db *db;
    if (srv_db_hold(s, name, &db) == JVDB_OK) srv_db_unhold(s, db);
    else dbmeta_remove(s, name);
    pthread_mutex_unlock(&s->meta_mu);
}

void route_db_create(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, db_create_fields);
    if (!body) return;
    char err[512] = "";
    const char *name = NULL, *metric_s = NULL, *dim_key, *metric_key;
    uint64_t dim = 0;
    struct db_settings st;
    int r;
    if ((r = jr_string(body, "name", &name, err, sizeof err)) <= 0) {
        if (r == 0) snprintf(err, sizeof err, "field 'name' is required");
        goto bad;
    }
    if (route_name_check(rs, "database", name)) {
        json_decref(body);
        return;
    }
    if (route_alias(body, "vectorDimension", "dimension", &dim_key, err, sizeof err) ||
        route_alias(body, "distanceMetric", "metric", &metric_key, err, sizeof err))
        goto bad;
    if ((r = jr_uint(body, dim_key, 1, JVDB_MAX_DIM, &dim, err, sizeof err)) <= 0) {
        if (r == 0) snprintf(err, sizeof err, "field 'vectorDimension' is required");
        goto bad;
    }
    if (jr_string(body, metric_key, &metric_s, err, sizeof err) < 0) goto bad;
    jvdb_db_options o;
    jvdb_db_options_init(&o, (uint32_t)dim);
    /* JadeVectorDB's default metric is cosine (the library's is l2). */
    o.metric = JVDB_METRIC_COSINE;
    if (metric_s && jvdb_metric_parse(metric_s, &o.metric) != JVDB_OK) {
        snprintf(err, sizeof err, "%s '%s' is not one of cosine, euclidean, dot, l2 (any case; l2 = euclidean)",
                 metric_key, metric_s);
        goto bad;
    }
    if (route_parse_settings(body, NULL, &st, err, sizeof err)) goto bad;
    if (st.has_sync) {
        o.sync = st.sync;
        o.sync_interval_ms = st.sync_ms;
    }

    /* A create either succeeds whole or leaves nothing: when the settings fail, the new database
     * is dropped again (the drop waits for any request that found it meanwhile). */
    int rc = jvdb_db_create(s->env, name, &o, NULL);
    jvdb_db *db = NULL;
    if (rc == JVDB_OK) rc = srv_db_hold(s, name, &db);
    if (rc == JVDB_OK) {
        st.has_sync = 0; /* given to the create already */
        rc = route_apply_settings(db, &st);
        if (rc == JVDB_OK) {
            struct dbmeta m = { 0 };
            m.description = (char *)(st.description ? st.description : "");
            m.created_ns = m.updated_ns = clock_wall_ns();
            pthread_mutex_lock(&s->meta_mu);
            rc = dbmeta_save(s, name, &m);
            pthread_mutex_unlock(&s->meta_mu);
        }
        if (rc != JVDB_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
            srv_db_unhold(s, db);
            jvdb_db_drop(s->env, name);
            route_dbmeta_forget(s, name);
            http_lib_error_msg(rs, rc, msg);
            json_decref(body);
            return;
        }
    }
    route_reply_db(s, rs, db, rc, 201);
    srv_db_unhold(s, db);
    json_decref(body);
    return;
bad:
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
    json_decref(body);
}

void route_db_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    uint64_t offset = 0, limit = UINT64_MAX;
    if (route_query_uint(rq, rs, "offset", &offset) < 0 || route_query_uint(rq, rs, "limit", &limit) < 0) return;
    char **names = NULL;
    size_t n = 0;
    int rc = jvdb_db_list(s->env, &names, &n);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    auth_filter_dbs(s, rq, names, &n); /* a key limited to databases sees only those */
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kuint(&w, "total", n);
    jw_key(&w, "databases");
    jw_arr(&w);
    for (size_t i = offset; i < n && i - offset < limit; i++) {
        jvdb_db *db;
        if (srv_db_hold(s, names[i], &db) != JVDB_OK) continue; /* dropped meanwhile */
        route_write_db(s, &w, db);
        srv_db_unhold(s, db);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    jvdb_free_names(names, n);
    http_reply_json(rs, 200, &w);
}

void route_db_get(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    struct jw w;
    jw_init(&w);
    route_write_db(s, &w, db);
    route_db_release(s, db);
    http_reply_json(rs, 200, &w);
}

void route_db_update(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, db_update_fields);
    if (!body) return;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) {
        json_decref(body);
        return;
    }
    char err[512] = "";
    struct db_settings st;
    const char *str;
    uint64_t u;
    int r;
    /* Fields that cannot change are accepted when they repeat the current value, so a client can
     * send back the object it read. */
    const char *dim_key, *metric_key;
    static const char *const same_name[] = { "name", "databaseId" };
    for (size_t i = 0; i < 2; i++) {
        if ((r = jr_string(body, same_name[i], &str, err, sizeof err)) < 0) goto bad;
        if (r && strcmp(str, jvdb_db_name(db))) {
            snprintf(err, sizeof err, "a database cannot be renamed ('%s' to '%s')", jvdb_db_name(db), str);
            goto bad;
        }
    }
    if (route_alias(body, "vectorDimension", "dimension", &dim_key, err, sizeof err) ||
        route_alias(body, "distanceMetric", "metric", &metric_key, err, sizeof err))
        goto bad;
    if ((r = jr_uint(body, dim_key, 1, JVDB_MAX_DIM, &u, err, sizeof err)) < 0) goto bad;
    if (r && u != jvdb_db_dim(db)) {
        snprintf(err, sizeof err, "vectorDimension cannot change (database '%s' has dimension %u)", jvdb_db_name(db),
                 jvdb_db_dim(db));
        goto bad;
    }
    if ((r = jr_string(body, metric_key, &str, err, sizeof err)) < 0) goto bad;
    if (r) {
        jvdb_metric m;
        if (jvdb_metric_parse(str, &m) != JVDB_OK) {
            snprintf(err, sizeof err, "%s '%s' is not one of cosine, euclidean, dot, l2 (any case; l2 = euclidean)",
                     metric_key, str);
            goto bad;
        }
        if (m != jvdb_db_metric(db)) {
            snprintf(err, sizeof err, "distanceMetric cannot change (database '%s' uses %s)", jvdb_db_name(db),
                     route_metric_name(jvdb_db_metric(db)));
            goto bad;
        }
    }
    if (route_parse_settings(body, db, &st, err, sizeof err)) goto bad;
    int rc = route_apply_settings(db, &st);
    if (rc == JVDB_OK) {
        pthread_mutex_lock(&s->meta_mu);
        struct dbmeta m;
        dbmeta_load(s, rq->params[0], &m);
        if (st.description) {
            free(m.description);
            m.description = strdup(st.description);
        }
        m.updated_ns = clock_wall_ns();
        rc = dbmeta_save(s, rq->params[0], &m);
        dbmeta_free(&m);
        pthread_mutex_unlock(&s->meta_mu);
    }
    route_reply_db(s, rs, db, rc, 200);
    route_db_release(s, db);
    json_decref(body);
    return;
bad:
    route_db_release(s, db);
    http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
    json_decref(body);
}

void route_db_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    /* The library marks the database, refuses new holders and waits for the requests that hold it
     * (only those: no server-wide lock is taken, so every other database goes on being served). */
    int rc = jvdb_db_drop(s->env, rq->params[0]);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    route_dbmeta_forget(s, rq->params[0]);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "databaseId", rq->params[0]);
    jw_kbool(&w, "deleted", 1);
    jw_obj_end(&w);
    http_reply_json(rs, 200, &w);
}

/* ---------------------------------------------------------------- /indexes (the original's index routes) */

/* A database has exactly one index, so the original JadeVectorDB's index routes are mapped onto
 * it: the list shows it under the fixed id "primary", create and update change its type and
 * parameters (a rebuild, as PUT /v1/databases/{id} with indexType does), delete falls back to
 * FLAT (exact search).  The original's "name" is accepted and not kept; "M" is its spelling of m. */
#define ROUTE_INDEX_ID "primary"

static const char *const index_create_fields[] = { "type", "indexType", "name", "parameters", NULL };
static const char *const index_update_fields[] = { "type", "indexType", "parameters", NULL };

/* The index object of the /indexes routes. */
static void route_write_index(struct jw *w, jvdb_db *db, const char *status)
{
    jvdb_index_options ix;
    jvdb_db_get_index(db, &ix);
    jw_obj(w);
    jw_kstr(w, "indexId", ROUTE_INDEX_ID);
    jw_kstr(w, "databaseId", jvdb_db_name(db));
    jw_kstr(w, "type", ix.type == JVDB_INDEX_FLAT ? "FLAT" : "HNSW");
    if (status) {
        jw_kstr(w, "status", status);
    } else if (ix.type == JVDB_INDEX_FLAT) {
        jw_kstr(w, "status", "ready");
    } else {
        /* Only reported, never started: listing must not build a graph. */
        jvdb_index_status st;
        int rc = jvdb_db_index_status_if_attached(db, &st);
        jw_kstr(w, "status", rc == JVDB_OK ? jvdb_index_state_name(st.state) : "not_loaded");
    }
    jw_key(w, "parameters");
    jw_obj(w);
    if (ix.type == JVDB_INDEX_HNSW) {
        jw_kuint(w, "M", ix.m);
        jw_kuint(w, "efConstruction", ix.ef_construction);
        jw_kuint(w, "efSearch", ix.ef_search);
    }
    jw_obj_end(w);
    jw_obj_end(w);
}

/* The index settings a create or update body asks for, amending `o`; -1 with err set. */
static int route_parse_index_body(json_t *body, jvdb_index_options *o, int need_type, char *err, size_t cap)
{
    const char *key, *type = NULL;
    if (route_alias(body, "type", "indexType", &key, err, cap)) return -1;
    int r = jr_string(body, key, &type, err, cap);
    if (r < 0) return -1;
    if (!r && need_type) {
        snprintf(err, cap, "field 'type' is required (HNSW or FLAT)");
        return -1;
    }
    if (r) {
        if (!strcasecmp(type, "HNSW")) o->type = JVDB_INDEX_HNSW;
        else if (!strcasecmp(type, "FLAT")) o->type = JVDB_INDEX_FLAT;
        else {
            snprintf(err, cap, "index type '%s' is not supported (HNSW or FLAT; a database has one index)", type);
            return -1;
        }
    }
    const char *name = NULL;
    if (jr_string(body, "name", &name, err, cap) < 0) return -1;
    json_t *p = json_object_get(body, "parameters");
    if (!p || json_is_null(p)) return 0;
    if (!json_is_object(p)) {
        snprintf(err, cap, "field 'parameters' must be an object");
        return -1;
    }
    static const char *const fields[] = { "M", "m", "efConstruction", "efSearch", NULL };
    if (jr_only(p, "parameters: ", fields, err, cap)) return -1;
    /* Ranges are the library's (jvdb_db_set_index names the bad one). */
    if (o->type == JVDB_INDEX_FLAT && json_object_size(p) > 0) {
        snprintf(err, cap, "a FLAT index takes no parameters (M, efConstruction and efSearch are HNSW's)");
        return -1;
    }
    const char *mkey;
    if (route_alias(p, "M", "m", &mkey, err, cap)) return -1;
    uint64_t u;
    if ((r = jr_uint(p, mkey, 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->m = (uint32_t)u;
    if ((r = jr_uint(p, "efConstruction", 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->ef_construction = (uint32_t)u;
    if ((r = jr_uint(p, "efSearch", 0, UINT32_MAX, &u, err, cap)) < 0) return -1;
    if (r) o->ef_search = (uint32_t)u;
    return 0;
}

/* Records a settings change in the database's updated time (as PUT /v1/databases/{id} does). */
static int route_touch_meta(struct server *s, const char *name)
{
    pthread_mutex_lock(&s->meta_mu);
    struct dbmeta m;
    dbmeta_load(s, name, &m);
    m.updated_ns = clock_wall_ns();
    int rc = dbmeta_save(s, name, &m);
    dbmeta_free(&m);
    pthread_mutex_unlock(&s->meta_mu);
    return rc;
}

/* Applies index settings (a rebuild only when they change) and answers the index object. */
static void route_index_apply(struct server *s, struct http_resp *rs, jvdb_db *db, const jvdb_index_options *o,
                              int status, const char *word)
{
    struct db_settings st = { 0 };
    st.has_index = 1;
    st.index = *o;
    int rc = route_apply_settings(db, &st);
    if (rc == JVDB_OK) rc = route_touch_meta(s, jvdb_db_name(db));
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        return;
    }
    struct jw w;
    jw_init(&w);
    route_write_index(&w, db, word);
    http_reply_json(rs, status, &w);
}

/* 404 unless {indexId} is the database's one index; returns 0 when it is. */
static int route_index_id_check(struct http_resp *rs, jvdb_db *db, const char *id)
{
    if (!strcmp(id, ROUTE_INDEX_ID)) return 0;
    http_error(rs, 404, "NOT_FOUND", "index '%.200s' not found: database '%s' has one index, '%s'", id,
               jvdb_db_name(db), ROUTE_INDEX_ID);
    return -1;
}

void route_index_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kuint(&w, "count", 1);
    jw_key(&w, "indexes");
    jw_arr(&w);
    route_write_index(&w, db, NULL);
    jw_arr_end(&w);
    jw_obj_end(&w);
    route_db_release(s, db);
    http_reply_json(rs, 200, &w);
}

void route_index_get(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    if (!route_index_id_check(rs, db, rq->params[1])) {
        struct jw w;
        jw_init(&w);
        route_write_index(&w, db, NULL);
        http_reply_json(rs, 200, &w);
    }
    route_db_release(s, db);
}

void route_index_create(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, index_create_fields);
    if (!body) return;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (db) {
        char err[512];
        jvdb_index_options o;
        /* Parameters not given take the library's defaults, as a new index would. */
        jvdb_index_options_init(&o);
        if (route_parse_index_body(body, &o, 1, err, sizeof err)) http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        else route_index_apply(s, rs, db, &o, 201, NULL);
        route_db_release(s, db);
    }
    json_decref(body);
}

void route_index_update(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    json_t *body = route_body(s, rq, rs, index_update_fields);
    if (!body) return;
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (db && !route_index_id_check(rs, db, rq->params[1])) {
        char err[512];
        jvdb_index_options o;
        jvdb_db_get_index(db, &o); /* an update amends what is there */
        if (route_parse_index_body(body, &o, 0, err, sizeof err)) http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        else route_index_apply(s, rs, db, &o, 200, NULL);
    }
    route_db_release(s, db);
    json_decref(body);
}

void route_index_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    if (!route_index_id_check(rs, db, rq->params[1])) {
        jvdb_index_options o;
        jvdb_db_get_index(db, &o);
        o.type = JVDB_INDEX_FLAT; /* no index left: every search is an exact scan */
        route_index_apply(s, rs, db, &o, 200, "deleted");
    }
    route_db_release(s, db);
}

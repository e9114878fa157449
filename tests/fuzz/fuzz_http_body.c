/*
 * fuzz_http_body.c — libFuzzer target for every decoder of REST request bodies (src/server): the
 * bytes come straight from the network.
 *
 * Input: one selector byte, then the body.  Every input is checked twice:
 *   1. The batch decoders.  The hand-written fast path (jf_batch) and the general jansson path
 *      (jr_parse_object + jr_batch) must accept the same bodies with the same values; when the fast
 *      path refuses (an unknown field in a vector), the general path must refuse too, with the same
 *      message and index whenever the body is otherwise valid JSON.  The top-level key prescan
 *      (jr_prescan_keys) may only refuse what jr_only refuses after a parse, with the same message.
 *   2. One route, picked by the selector byte, run through route_dispatch on a real data directory:
 *      whatever the body, the answer is a status below 500 and a JSON object, with "error" and
 *      "message" strings when it is an error.  That covers the decoders of every route that reads a
 *      body (create and update of databases with their nested settings, vectors, batches, batch-get,
 *      search with filters, compaction, backups and restore).
 *   3. The binary batch decoder (binbatch.c) on the same bytes: a refusal hands nothing out and has
 *      a message; an accepted body decodes to vectors whose values are the body's bytes.  A body
 *      that starts with its magic "JVB1" also goes to the batch route as application/octet-stream.
 * Databases a body created are dropped after each input, so inputs stay independent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/fs.h"
#include "server/binbatch.h"
#include "server/srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the parts of http.c and server.c that routes use, without a network ---- */

static int fuzz_octet; /* set while a body is sent as application/octet-stream */

const char *http_header(const struct http_req *rq, const char *name)
{
    (void)rq;
    return fuzz_octet && !strcasecmp(name, "Content-Type") ? "application/octet-stream" : NULL;
}

const char *http_query(const struct http_req *rq, const char *name, char *buf, size_t cap)
{
    (void)rq;
    (void)name;
    (void)buf;
    (void)cap;
    return NULL;
}

long http_unescape(char *s, int plus_is_space)
{
    (void)plus_is_space;
    return (long)strlen(s); /* the paths below have no escapes */
}

void server_request_stop(struct server *s) { (void)s; }
/* Routes of files this target does not link (no request body decoder of their own to fuzz here). */
void route_readyz(struct server *s, struct http_req *rq, struct http_resp *rs) { (void)s, (void)rq, (void)rs; }
void route_keys_create(struct server *s, struct http_req *rq, struct http_resp *rs) { (void)s, (void)rq, (void)rs; }
void route_keys_list(struct server *s, struct http_req *rq, struct http_resp *rs) { (void)s, (void)rq, (void)rs; }
void route_keys_delete(struct server *s, struct http_req *rq, struct http_resp *rs) { (void)s, (void)rq, (void)rs; }
int auth_enabled(struct server *s)
{
    (void)s;
    return 0;
}
long http_inflight(struct server *s)
{
    (void)s;
    return 0;
}
void auth_filter_dbs(struct server *s, const struct http_req *rq, char **names, size_t *n)
{
    (void)s, (void)rq, (void)names, (void)n;
}

/* ---- 1. the batch decoders against each other ---- */

static int fuzz_same(const struct jf_vector *a, const struct jf_vector *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a[i].id, b[i].id) || a[i].n != b[i].n || memcmp(a[i].values, b[i].values, a[i].n * sizeof(float)))
            return 0;
        if (!a[i].meta != !b[i].meta || (a[i].meta && strcmp(a[i].meta, b[i].meta))) return 0;
    }
    return 1;
}

static void fuzz_batch_decoders(const char *body, size_t len)
{
    static const char *const batch_fields[] = { "vectors", NULL };
    char ferr[512] = "", gerr[512] = "", perr[512] = "";
    long findex = -1, gindex = -1;
    struct jf_vector *fv = NULL, *gv = NULL;
    size_t fn = 0, gn = 0;
    int fast = jf_batch(body, len, 32, &fv, &fn, &findex, ferr, sizeof ferr);
    int pre = jr_prescan_keys(body, len, batch_fields, perr, sizeof perr);
    json_t *doc = jr_parse_object(body, len, 32, gerr, sizeof gerr);
    int general = -1, top_ok = 0;
    if (doc) {
        char oerr[512];
        top_ok = !jr_only(doc, "", batch_fields, oerr, sizeof oerr);
        if (pre && (top_ok || strcmp(perr, oerr))) abort(); /* the prescan may only refuse what jr_only does */
        general = jr_batch(doc, &gv, &gn, &gindex, gerr, sizeof gerr);
        json_decref(doc);
    }
    if (fast == 1) {
        if (pre) abort(); /* the fast path took a body with another top-level key */
        if (general != 0 || gn != fn || !fuzz_same(fv, gv, fn)) abort();
    } else if (fast < 0) {
        if (general == 0) abort(); /* the fast path refused what the general path takes */
        /* Same answer whenever the body is valid JSON whose only fault is in its vectors (the route
         * runs the prescan first, so a top-level field never reaches the fast path). */
        if (top_ok && (gindex != findex || strcmp(ferr, gerr))) abort();
    }
    jf_batch_free(fv, fn);
    jf_batch_free(gv, gn);
}

/* ---- 3. the binary batch decoder (binbatch.c): bounds, and what it accepts is well formed ---- */

/* Decodes the bytes as a binary batch and checks what came out against the bytes. */
static void fuzz_binary_decoder(const unsigned char *body, size_t len)
{
    char err[512] = "";
    long index = -2;
    struct jf_vector *v = NULL;
    size_t n = 0;
    if (jb_decode(body, len, 32, &v, &n, &index, err, sizeof err)) {
        if (!err[0] || index < -1 || v || n) abort(); /* a message, and nothing handed out */
        return;
    }
    uint32_t dim = n ? v[0].n : 0;
    size_t bytes = JB_HEADER_LEN;
    for (size_t i = 0; i < n; i++) {
        size_t idn = strlen(v[i].id);
        if (!idn || v[i].n != dim || !v[i].values) abort();
        if (memcmp(v[i].values, body + JB_HEADER_LEN + i * (size_t)dim * 4, (size_t)dim * 4)) abort();
        bytes += (size_t)dim * 4 + 2 + idn;
    }
    if (!n || bytes > len) abort();
    jf_batch_free(v, n);
}

/* ---- 2. every route that reads a body ---- */

static const struct {
    const char *method, *path;
} fuzz_routes[] = {
    { "POST", "/v1/databases" },
    { "PUT", "/v1/databases/f" },
    { "POST", "/v1/databases/f/vectors" },
    { "POST", "/v1/databases/f/vectors/batch" },
    { "POST", "/v1/databases/f/vectors/batch-get" },
    { "PUT", "/v1/databases/f/vectors/v1" },
    { "POST", "/v1/databases/f/search" },
    { "POST", "/v1/databases/f/compact" },
    { "POST", "/v1/databases/f/backups" },
    { "POST", "/v1/backups/b1/restore" },
    { "DELETE", "/v1/databases/f/vectors/v2" }, /* routes without a body must refuse one */
    { "POST", "/v1/admin/shutdown" },
};
#define FUZZ_NROUTES (sizeof fuzz_routes / sizeof fuzz_routes[0])

static struct server fuzz_srv;
static char fuzz_dir[256];

static void fuzz_cleanup(void)
{
    jvdb_env_close(fuzz_srv.env);
    fs_remove_tree(fuzz_dir);
}

static int fuzz_init(void)
{
    snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/jvdb-fuzz-http-%d", (int)getpid());
    fs_remove_tree(fuzz_dir);
    struct server *s = &fuzz_srv;
    s->cfg.data_dir = fuzz_dir;
    s->cfg.max_depth = 32;
    s->cfg.max_body = 1 << 20;
    s->routes = &routes_main;
    pthread_mutex_init(&s->meta_mu, NULL);
    jvdb_db_options o;
    jvdb_db_options_init(&o, 4);
    o.sync = JVDB_SYNC_NEVER;
    if (jvdb_env_open(fuzz_dir, &s->env) || dbmeta_init(s) || metrics_init(s) || compact_log_init(s) ||
        backup_init(s) || jvdb_db_create(s->env, "f", &o, NULL)) {
        fprintf(stderr, "fuzz_http_body: cannot set up %s: %s\n", fuzz_dir, jvdb_errmsg());
        abort();
    }
    float v[4] = { 1, 2, 3, 4 };
    jvdb_db *db;
    if (jvdb_db_open(s->env, "f", &db) || jvdb_put(db, "v1", v, 4, "{\"lang\":\"en\"}", NULL)) abort();
    atexit(fuzz_cleanup);
    return 0;
}

/* Drops every database but "f" (what a create body made). */
static void fuzz_reset(void)
{
    char **names;
    size_t n;
    if (jvdb_db_list(fuzz_srv.env, &names, &n)) return;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], "f")) {
            jvdb_db_drop(fuzz_srv.env, names[i]);
            dbmeta_remove(&fuzz_srv, names[i]);
        }
    jvdb_free_names(names, n);
}

static void fuzz_route(unsigned which, const char *body, size_t len)
{
    struct http_req rq = { 0 };
    struct http_resp rs = { 0 };
    rq.method = fuzz_routes[which].method;
    rq.path = fuzz_routes[which].path;
    rq.body = body;
    rq.body_len = len;
    route_dispatch(&fuzz_srv, &rq, &rs);
    for (int i = 0; i < rq.nparams; i++) free(rq.params[i]);
    if (rs.status < 200 || rs.status >= 500) {
        fprintf(stderr, "%s %s answered %d: %.*s\n", rq.method, rq.path, rs.status, (int)rs.len, rs.body);
        abort();
    }
    json_t *ans = json_loadb(rs.body, rs.len, 0, NULL);
    if (!json_is_object(ans)) abort();
    if (rs.status >= 400 &&
        (!json_is_string(json_object_get(ans, "error")) || !json_is_string(json_object_get(ans, "message"))))
        abort();
    json_decref(ans);
    free(rs.body);
    if (which == 0) fuzz_reset();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) ready = !fuzz_init();
    if (size == 0) return 0;
    /* The decoders read a NUL-terminated copy, as http.c hands them one. */
    char *body = malloc(size);
    if (!body) return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = 0;
    fuzz_batch_decoders(body, size - 1);
    fuzz_route(data[0] % FUZZ_NROUTES, body, size - 1);
    /* A body that looks binary also goes to the batch route as application/octet-stream. */
    fuzz_binary_decoder((const unsigned char *)body, size - 1);
    if (size - 1 >= 4 && !memcmp(body, JB_MAGIC, 4)) {
        fuzz_octet = 1;
        fuzz_route(3, body, size - 1);
        fuzz_octet = 0;
    }
    free(body);
    return 0;
}

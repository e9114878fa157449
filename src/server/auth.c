/*
 * auth.c — who may do what: API keys (the bootstrap --api-key / JVDB_API_KEY, which is admin, and
 * the scoped keys of <data>/server/api-keys, keys.c), the role each route needs, and the 401/403
 * answers.  Checked by http.c on the request head, before any body is read.
 *
 * Rules (docs/API.md, "Authentication and roles"):
 *  (1) With no key at all (no bootstrap key, an empty key file) every route is open.  Once any key
 *      exists, every route but /health and /readyz needs one: 401 without a valid key (missing,
 *      unknown, revoked or expired), 403 with a valid key whose role or databases do not cover
 *      the request.
 *  (2) Roles are ordered read < write < admin.  A route's role comes from auth_roles below; a
 *      route missing from it needs admin, so a route added later is closed until someone decides.
 *  (3) A key limited to databases may only use routes on one of them (/v1/databases/{id}/...);
 *      routes over every database (lists, /status, /metrics, keys, shutdown) need an unlimited key.
 *      The database list and the job routes are open to it, filtered to its databases.
 *  (4) The key set a request is checked against is a snapshot swapped under a write lock that is
 *      never held across I/O: the file is read first, then swapped in.  It is re-read when a REST
 *      route changes it, on SIGHUP, and when its stat (inode, size, mtime) changes, looked at most
 *      once a second by whichever request comes first: `jvdb keys revoke` on a running server
 *      takes effect within a second.  A file that cannot be read keeps the previous set (logged).
 *  (5) Comparisons never leak how much of a guess was right: the offered key is hashed and its
 *      digest compared with every stored digest with CRYPTO_memcmp.
 */
#include "server/keys.h"
#include "server/srv.h"

#include "core/clock.h"
#include "core/log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define AUTH_RECHECK_NS 1000000000ll

struct auth_state {
    pthread_rwlock_t mu; /* guards keys (invariant 4) */
    struct key_set keys;
    unsigned char boot_hash[32];
    int have_boot;
    pthread_mutex_t reload_mu; /* one reload at a time; never taken by requests that do not reload */
    struct stat seen;          /* the key file as last loaded (st_ino 0: absent) */
    atomic_llong next_check_ns;
    atomic_int nkeys; /* keys.n, readable without the lock */
};

/* ---------------------------------------------------------------- route roles (invariant 2) */

struct auth_role_def {
    const char *method;
    const char *pattern;
    key_role role; /* KEY_ROLE_NONE: no key needed */
};

static const struct auth_role_def auth_roles[] = {
    { "GET", "/health", KEY_ROLE_NONE },
    { "GET", "/readyz", KEY_ROLE_NONE },
    { "GET", "/status", KEY_ROLE_READ },
    { "GET", "/metrics", KEY_ROLE_READ },
    { "GET", "/v1/databases", KEY_ROLE_READ }, /* filtered for limited keys: auth_filter_dbs */
    { "GET", "/v1/databases/{id}", KEY_ROLE_READ },
    { "GET", "/v1/databases/{id}/stats", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/search", KEY_ROLE_READ },
    { "GET", "/v1/databases/{id}/export", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/search/advanced", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/search/batch", KEY_ROLE_READ },
    { "GET", "/v1/databases/{id}/indexes", KEY_ROLE_READ }, /* changing the index is admin, as PUT of the db */
    { "GET", "/v1/databases/{id}/indexes/{iid}", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/vectors/batch-get", KEY_ROLE_READ },
    { "GET", "/v1/databases/{id}/vectors/{vid}", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/vectors", KEY_ROLE_WRITE },
    { "POST", "/v1/databases/{id}/vectors/batch", KEY_ROLE_WRITE },
    { "PUT", "/v1/databases/{id}/vectors/{vid}", KEY_ROLE_WRITE },
    { "DELETE", "/v1/databases/{id}/vectors/{vid}", KEY_ROLE_WRITE },
    /* issue 12's data routes: reading and counting are reads, every change a write */
    { "GET", "/v1/databases/{id}/vectors", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/vectors/count", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/vectors/scroll", KEY_ROLE_READ },
    { "POST", "/v1/databases/{id}/vectors/delete", KEY_ROLE_WRITE },
    { "POST", "/v1/databases/{id}/vectors/metadata", KEY_ROLE_WRITE },
    { "PATCH", "/v1/databases/{id}/vectors/{vid}", KEY_ROLE_WRITE },
    /* payload index declarations (routes_payload.c) */
    { "GET", "/v1/databases/{id}/payload-indexes", KEY_ROLE_READ },
    { "PUT", "/v1/databases/{id}/payload-indexes/{field}", KEY_ROLE_WRITE },
    { "DELETE", "/v1/databases/{id}/payload-indexes/{field}", KEY_ROLE_WRITE },
};

/* The role route `route` needs; unmatched paths (404/405) need any valid key. */
static key_role auth_route_role(const struct srv_routes *rt, int route, int *public_route)
{
    *public_route = 0;
    if (route >= rt->count()) return KEY_ROLE_READ;
    const char *m = rt->method(route), *p = rt->label(route);
    for (size_t i = 0; i < sizeof auth_roles / sizeof auth_roles[0]; i++) {
        if (strcmp(auth_roles[i].method, m) || strcmp(auth_roles[i].pattern, p)) continue;
        *public_route = auth_roles[i].role == KEY_ROLE_NONE;
        return auth_roles[i].role;
    }
    return KEY_ROLE_ADMIN;
}

int auth_route_public(struct server *s, const char *method, const char *path)
{
    int pub;
    auth_route_role(s->routes, s->routes->find(method, path), &pub);
    return pub;
}

/* The database a /v1/databases/{id}... path is about, decoded into buf; NULL for other routes. */
static const char *auth_route_db(const struct srv_routes *rt, int route, const char *path, char *buf, size_t cap)
{
    if (route >= rt->count() || strncmp(rt->label(route), "/v1/databases/{id}", 18)) return NULL;
    const char *seg = path + 14; /* after "/v1/databases/" */
    size_t n = strcspn(seg, "/");
    /* Decoded whole, never cut: a prefix of a longer name could be a name the key may use. */
    if (n >= cap) {
        snprintf(buf, cap, "%s", "/"); /* no database is named that: matches no key's list */
        return buf;
    }
    memcpy(buf, seg, n);
    buf[n] = 0;
    if (http_unescape(buf, 0) < 0) snprintf(buf, cap, "%s", "/");
    return buf;
}

/* ---------------------------------------------------------------- the key set (invariant 4) */

/* The key file's stat, all zero when it is missing, so a deleted file counts as a change. */
static void auth_stat(struct server *s, struct stat *st)
{
    char *path = keys_file_path(s->cfg.data_dir);
    if (!path || stat(path, st) != 0) memset(st, 0, sizeof *st);
    free(path);
}

/* Whether two stats describe the same key file version (inode, device, size and mtime to the nanosecond). */
static int auth_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

int auth_reload(struct server *s, int force)
{
    struct auth_state *a = s->auth;
    pthread_mutex_lock(&a->reload_mu);
    struct stat st;
    auth_stat(s, &st);
    int rc = 0;
    if (force || !auth_same_file(&st, &a->seen)) {
        struct key_set fresh;
        char err[600];
        if (keys_load(s->cfg.data_dir, &fresh, err, sizeof err)) {
            log_error("API keys: %s; keeping the %d keys loaded before", err, atomic_load(&a->nkeys));
            rc = -1;
        } else {
            pthread_rwlock_wrlock(&a->mu);
            struct key_set old = a->keys;
            a->keys = fresh;
            atomic_store(&a->nkeys, (int)fresh.n);
            pthread_rwlock_unlock(&a->mu);
            if (old.n != fresh.n || force) log_info("API keys: %zu loaded from the key file", fresh.n);
            keys_free(&old);
        }
        a->seen = st; /* a bad file is not retried every second; a new change or SIGHUP retries */
    }
    pthread_mutex_unlock(&a->reload_mu);
    return rc;
}

/* Invariant 4: whichever request first finds the recheck time passed looks at the file. */
static void auth_maybe_reload(struct server *s)
{
    struct auth_state *a = s->auth;
    long long now = clock_mono_ns(), due = atomic_load(&a->next_check_ns);
    if (now < due || !atomic_compare_exchange_strong(&a->next_check_ns, &due, now + AUTH_RECHECK_NS)) return;
    auth_reload(s, 0);
}

int auth_init(struct server *s)
{
    struct auth_state *a = calloc(1, sizeof *a);
    if (!a) return -1;
    pthread_rwlock_init(&a->mu, NULL);
    pthread_mutex_init(&a->reload_mu, NULL);
    if (s->cfg.api_key) {
        if (keys_hash(s->cfg.api_key, a->boot_hash)) {
            free(a);
            return -1;
        }
        a->have_boot = 1;
    }
    s->auth = a;
    atomic_store(&a->next_check_ns, clock_mono_ns() + AUTH_RECHECK_NS);
    if (auth_reload(s, 1)) {
        fprintf(stderr, "jvdb serve: the API key file cannot be read (see the log above); fix or remove it\n");
        return -1;
    }
    return 0;
}

void auth_free(struct server *s)
{
    struct auth_state *a = s->auth;
    if (!a) return;
    keys_free(&a->keys);
    pthread_rwlock_destroy(&a->mu);
    pthread_mutex_destroy(&a->reload_mu);
    OPENSSL_cleanse(a->boot_hash, sizeof a->boot_hash);
    free(a);
    s->auth = NULL;
}

int auth_enabled(struct server *s) { return s->auth && (s->auth->have_boot || atomic_load(&s->auth->nkeys) > 0); }

/* ---------------------------------------------------------------- the check */

/* The key the request offers, or NULL: X-API-Key first, then a Bearer authorization. */
static const char *auth_offered(const struct http_req *rq)
{
    const char *k = http_header(rq, "X-API-Key");
    if (k) return k;
    const char *a = http_header(rq, "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7) != 0) return NULL;
    a += 7;
    while (*a == ' ') a++;
    return a;
}

/* Answers 401 with the challenge header and a message saying what was wrong: the given reason, a bad key, a
 * malformed Authorization header or no key at all. */
static void auth_unauthorized(const struct http_req *rq, struct http_resp *rs, const char *why)
{
    rs->auth_challenge = 1;
    if (why) http_error(rs, 401, "UNAUTHORIZED", "%s", why);
    else if (auth_offered(rq)) http_error(rs, 401, "UNAUTHORIZED", "the API key is not valid");
    else if (http_header(rq, "Authorization"))
        http_error(rs, 401, "UNAUTHORIZED", "the Authorization header must be 'Bearer KEY'");
    else
        http_error(rs, 401, "UNAUTHORIZED",
                   "an API key is required: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'");
}

/* What a stored key may do on this request: 0, or 401/403 written. */
static int auth_key_allows(const struct srv_routes *rt, const struct key_entry *e, const struct http_req *rq, int route,
                           key_role need, struct http_resp *rs)
{
    int64_t now = (int64_t)time(NULL);
    if (e->expires_s && e->expires_s <= now) {
        char t[32];
        keys_time_text(e->expires_s, t);
        char why[128];
        snprintf(why, sizeof why, "the API key %s expired at %s", e->id, t);
        auth_unauthorized(rq, rs, why);
        return -1;
    }
    if (e->role < need) {
        http_error(rs, 403, "FORBIDDEN", "API key %s has the %s role; %s %s needs the %s role", e->id,
                   key_role_name(e->role), rq->method, rt->label(route), key_role_name(need));
        return -1;
    }
    char name[3 * JVDB_MAX_NAME_LEN + 1]; /* the longest escaped form of a valid name */
    const char *db = auth_route_db(rt, route, rq->path, name, sizeof name);
    /* No route (404/405 follows) or the database list (filtered): no database to check. */
    /* The job routes filter too (jobs.c): a limited key sees its own databases' jobs. */
    int nodb = route >= rt->count() ||
               (!strcmp(rt->label(route), "/v1/databases") && !strcmp(rt->method(route), "GET")) ||
               !strncmp(rt->label(route), "/v1/jobs", 8);
    if (!nodb && !keys_allows_db(e, db)) {
        if (db) http_error(rs, 403, "FORBIDDEN", "API key %s is limited to other databases than '%s'", e->id, db);
        else
            http_error(rs, 403, "FORBIDDEN", "API key %s is limited to %zu database(s); %s %s spans every database",
                       e->id, e->ndb, rq->method, rt->label(route));
        return -1;
    }
    return 0;
}

int auth_check(struct server *s, const struct http_req *rq, int route, struct http_resp *rs, char who[KEY_ID_LEN + 1])
{
    snprintf(who, KEY_ID_LEN + 1, "-");
    int pub;
    key_role need = auth_route_role(s->routes, route, &pub);
    auth_maybe_reload(s);
    if (pub || !auth_enabled(s)) return 0;
    const char *k = auth_offered(rq);
    if (!k) {
        auth_unauthorized(rq, rs, NULL);
        return -1;
    }
    unsigned char h[32];
    if (keys_hash(k, h)) {
        http_error(rs, 500, "INTERNAL", "cannot hash the API key");
        return -1;
    }
    struct auth_state *a = s->auth;
    if (a->have_boot && CRYPTO_memcmp(h, a->boot_hash, 32) == 0) {
        snprintf(who, KEY_ID_LEN + 1, "bootstrap");
        return 0;
    }
    pthread_rwlock_rdlock(&a->mu);
    const struct key_entry *e = keys_match(&a->keys, h);
    int rc = -1;
    if (!e) auth_unauthorized(rq, rs, NULL);
    else if ((rc = auth_key_allows(s->routes, e, rq, route, need, rs)) == 0 || rs->status == 403)
        snprintf(who, KEY_ID_LEN + 1, "%s", e->id);
    pthread_rwlock_unlock(&a->mu);
    return rc;
}

void auth_filter_dbs(struct server *s, const struct http_req *rq, char **names, size_t *n)
{
    const char *k = auth_enabled(s) ? auth_offered(rq) : NULL;
    unsigned char h[32];
    if (!k || keys_hash(k, h)) return; /* no key needed, or the check already refused it */
    struct auth_state *a = s->auth;
    pthread_rwlock_rdlock(&a->mu);
    const struct key_entry *e = keys_match(&a->keys, h);
    int boot = a->have_boot && CRYPTO_memcmp(h, a->boot_hash, 32) == 0;
    size_t w = 0;
    for (size_t i = 0; i < *n; i++) {
        if (boot || (e && keys_allows_db(e, names[i]))) names[w++] = names[i];
        else free(names[i]);
    }
    *n = w;
    pthread_rwlock_unlock(&a->mu);
}

/*
 * cli_remote.c — the jvdb CLI as an HTTP client (libcurl) of a running server: over the server's
 * unix socket <data>/jvdb.sock when `jvdb serve` holds the data directory, or over HTTP(S) to
 * --server URL / $JVDB_SERVER with --api-key / $JVDB_API_KEY.
 *
 * Invariant: a command run here prints what it would print run locally, and exits with the same
 * code.  The command files keep their own argument checks (so usage errors are the same, exit 2,
 * before any request) and their own printing: the functions below return the structures the
 * library would have filled (jvdb_result, jvdb_compact_stats, a count) wherever the command prints
 * from one, and print the rest (stats, db info) with the same lines.  Every failure the server
 * reports is its message on one line, exit 1, as a library failure is.  Each command maps onto the
 * documented REST routes (docs/API.md); what has no route (repair, local-only options) is refused
 * with a sentence saying so, before anything is sent.
 */
#include "cli/cli_remote.h"
#include "core/grow.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

struct cli_remote {
    CURL *curl;
    char *base; /* "http://host:port" (no trailing '/'), "http://localhost" on the socket */
    char *sock; /* the unix socket, or NULL */
    struct curl_slist *hdrs;
    char where[1200]; /* "the server at URL" / "the server on SOCKET", for messages */
    char err[4096];   /* the last failure's message */
};

/* "cmd" or "cmd sub" pairs that work through a server. */
static const char *const rem_supported[] = {
    "stats",          "put",         "get",         "delete",        "count",       "search",    "compact",
    "import",         "export",      "db create",   "db list",       "db info",     "db drop",   "backup create",
    "backup restore", "backup list", "backup show", "backup verify", "keys create", "keys list", "keys revoke",
};

/* Beside a server on the data directory these still run here: they never open the data directory
 * (keys edit the key file the server watches; these backup commands use only the repository).
 * Backup list/show/verify without a repository (no --repo, no $JVDB_BACKUP_REPO) ask the server
 * about its own. */
static const char *const rem_local_ok[] = {
    "keys create", "keys list",     "keys revoke",   "backup list",
    "backup show", "backup verify", "backup delete", "backup prune",
};

/* Whether a server answers on the unix socket `path`: connect() alone, nothing is sent. */
static bool rem_probe(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) return false;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

void cli_remote_free(struct cli_ctx *ctx)
{
    struct cli_remote *r = ctx->remote;
    if (!r) return;
    if (r->curl) curl_easy_cleanup(r->curl);
    curl_slist_free_all(r->hdrs);
    free(r->base);
    free(r->sock);
    free(r);
    ctx->remote = NULL;
    curl_global_cleanup();
}

int cli_remote_setup(struct cli_ctx *ctx, const char *url, const char *api_key, int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "help")) return 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 0; /* help needs nobody */
    if (!url) url = getenv("JVDB_SERVER");
    if (url && !*url) url = NULL;
    if (!api_key) api_key = getenv("JVDB_API_KEY");
    if (api_key && !*api_key) api_key = NULL;
    char what[64];
    bool group = argc > 1 && (!strcmp(argv[0], "db") || !strcmp(argv[0], "backup") || !strcmp(argv[0], "keys"));
    snprintf(what, sizeof what, "%.20s%s%.20s", argv[0], group ? " " : "", group ? argv[1] : "");
    char sock[200] = "";
    if (!url) {
        bool repo = getenv("JVDB_BACKUP_REPO") && *getenv("JVDB_BACKUP_REPO");
        for (int i = 1; i < argc; i++)
            if (!strcmp(argv[i], "--repo") || !strncmp(argv[i], "--repo=", 7)) repo = true;
        bool server_repo =
            !repo && (!strcmp(what, "backup list") || !strcmp(what, "backup show") || !strcmp(what, "backup verify"));
        for (size_t i = 0; i < sizeof rem_local_ok / sizeof rem_local_ok[0]; i++)
            if (!strcmp(rem_local_ok[i], what) && !server_repo) return 0;
        int n = snprintf(sock, sizeof sock, "%s/jvdb.sock", ctx->data_dir);
        if (n < 0 || (size_t)n >= sizeof sock || !rem_probe(sock)) return 0; /* too long: the server made none */
    }
    bool ok = false;
    for (size_t i = 0; i < sizeof rem_supported / sizeof rem_supported[0]; i++)
        if (!strcmp(rem_supported[i], what)) ok = true;
    if (!ok) {
        if (url)
            return cli_fail("'%s' cannot work through a server (--server %s): the REST API has no route for it; "
                            "run it on the server's machine",
                            what, url);
        return cli_fail("'%s' cannot work through the server running on %s: it needs the data directory to itself; "
                        "stop the server first",
                        what, ctx->data_dir);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return cli_fail("cannot initialise libcurl");
    struct cli_remote *r = calloc(1, sizeof *r);
    if (!r) return cli_fail("out of memory");
    ctx->remote = r;
    r->curl = curl_easy_init();
    if (!r->curl) return cli_fail("cannot initialise libcurl");
    if (url) {
        size_t n = strlen(url);
        while (n && url[n - 1] == '/') n--;
        if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
            return cli_usage_error(NULL, "--server '%s' is not an http:// or https:// URL", url);
        r->base = strndup(url, n);
        snprintf(r->where, sizeof r->where, "the server at %.*s", (int)(n > 1100 ? 1100 : n), url);
    } else {
        r->base = strdup("http://localhost");
        r->sock = strdup(sock);
        snprintf(r->where, sizeof r->where, "the server on %s", sock);
    }
    if (!r->base || (!url && !r->sock)) return cli_fail("out of memory");
    r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    r->hdrs = curl_slist_append(r->hdrs, "Expect:"); /* no 100-continue round trip before each body */
    if (api_key && url) {
        char h[1100];
        if (strlen(api_key) > 1000) return cli_usage_error(NULL, "the API key is longer than 1000 characters");
        snprintf(h, sizeof h, "X-API-Key: %s", api_key);
        r->hdrs = curl_slist_append(r->hdrs, h);
    }
    return 0;
}

const char *cli_remote_errmsg(struct cli_ctx *ctx) { return ctx->remote ? ctx->remote->err : ""; }

struct rem_buf {
    char *p;
    size_t n, cap;
};

/* libcurl write callback: appends the answer's bytes. */
static size_t rem_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct rem_buf *b = arg;
    size_t n = size * nmemb;
    char *p = grow_array(b->p, &b->cap, b->n + n + 1, 1, 4096);
    if (!p) return 0;
    b->p = p;
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

/* One request with `text` (taken and freed, may be NULL) as its JSON body; a 2xx answer is parsed
 * into *out (when out is not NULL).  Any failure leaves its message in r->err and, unless `quiet`,
 * prints it: returns 0 or CLI_EXIT_FAIL. */
static int rem_send(struct cli_ctx *ctx, const char *method, const char *path, char *text, size_t text_len,
                    json_t **out, bool quiet)
{
    struct cli_remote *r = ctx->remote;
    if (out) *out = NULL;
    size_t ulen = strlen(r->base) + strlen(path) + 1;
    char *url = malloc(ulen);
    if (!url) {
        free(text);
        return cli_fail("out of memory");
    }
    snprintf(url, ulen, "%s%s", r->base, path);
    struct rem_buf b = { 0 };
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (r->sock) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, r->sock);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    if (text) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)text_len);
    } else if (!strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    CURLcode cc = curl_easy_perform(c);
    free(url);
    free(text);
    long status = 0;
    int rc = 0;
    if (cc != CURLE_OK) {
        snprintf(r->err, sizeof r->err, "cannot reach %s: %s", r->where, curl_easy_strerror(cc));
        rc = CLI_EXIT_FAIL;
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        json_error_t je;
        json_t *doc = b.p ? json_loads(b.p, JSON_DECODE_ANY, &je) : NULL;
        if (status >= 200 && status < 300) {
            if (!doc) {
                snprintf(r->err, sizeof r->err, "%s answered %ld with a body that is not JSON", r->where, status);
                rc = CLI_EXIT_FAIL;
            } else if (out) {
                *out = doc;
                doc = NULL;
            }
        } else {
            const char *m = json_string_value(json_object_get(doc, "message"));
            if (m) snprintf(r->err, sizeof r->err, "%s", m);
            else snprintf(r->err, sizeof r->err, "%s answered HTTP %ld", r->where, status);
            if (status == 401 || status == 403)
                snprintf(r->err + strlen(r->err), sizeof r->err - strlen(r->err),
                         " (%s; give --api-key or JVDB_API_KEY)", r->where);
            rc = CLI_EXIT_FAIL;
        }
        json_decref(doc);
    }
    free(b.p);
    if (rc && !quiet) cli_fail("%s", r->err);
    return rc;
}

/* rem_send with `body` (stolen, may be NULL) dumped as its JSON. */
static int rem_call_q(struct cli_ctx *ctx, const char *method, const char *path, json_t *body, json_t **out, bool quiet)
{
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(body);
        if (!text) {
            if (out) *out = NULL;
            snprintf(ctx->remote->err, sizeof ctx->remote->err, "out of memory");
            return quiet ? CLI_EXIT_FAIL : cli_fail("%s", ctx->remote->err);
        }
    }
    return rem_send(ctx, method, path, text, text ? strlen(text) : 0, out, quiet);
}

/* rem_call_q that prints its failure. */
static int rem_call(struct cli_ctx *ctx, const char *method, const char *path, json_t *body, json_t **out)
{
    return rem_call_q(ctx, method, path, body, out, false);
}

/* prefix + seg + suffix with seg percent-escaped (names and ids may hold '/'); NULL when out of memory. */
static char *rem_path(struct cli_ctx *ctx, const char *prefix, const char *seg, const char *suffix)
{
    char *e = curl_easy_escape(ctx->remote->curl, seg, 0);
    if (!e) return NULL;
    size_t n = strlen(prefix) + strlen(e) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", prefix, e, suffix);
    curl_free(e);
    return p;
}

/* "/v1/databases/NAME" + suffix, NAME percent-escaped; NULL when out of memory. */
static char *rem_db_path(struct cli_ctx *ctx, const char *name, const char *suffix)
{
    return rem_path(ctx, "/v1/databases/", name, suffix);
}

/* "/v1/databases/NAME/vectors/ID", both escaped (an id may hold '/'). */
static char *rem_vec_path(struct cli_ctx *ctx, const char *name, const char *id)
{
    char *suffix = rem_path(ctx, "/vectors/", id, "");
    char *p = suffix ? rem_db_path(ctx, name, suffix) : NULL;
    free(suffix);
    return p;
}

/* Method + database path + suffix, with the path built and freed here. */
static int rem_db_call(struct cli_ctx *ctx, const char *method, const char *name, const char *suffix, json_t *body,
                       json_t **out)
{
    char *p = rem_db_path(ctx, name, suffix);
    if (!p) {
        json_decref(body);
        return cli_fail("out of memory");
    }
    int rc = rem_call(ctx, method, p, body, out);
    free(p);
    return rc;
}

/* o[key] as an unsigned count; 0 when absent or not one. */
static uint64_t rem_u64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* o[key] as a string; dflt when absent or not one. */
static const char *rem_str(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

/* A parsed filter as the server takes it ("filters"); NULL when none. */
static json_t *rem_filter(const char *filter_json)
{
    return filter_json ? json_loads(filter_json, JSON_REJECT_DUPLICATES, NULL) : NULL;
}

/* Writes `j` as compact JSON with each real in its shortest exact form (jansson writes 17 digits:
 * 0.1 would come back as 0.10000000000000001).  Strings and integers as jansson writes them. */
static void rem_dump(json_t *j, FILE *f)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_real(j)) {
        double d = json_real_value(j);
        char buf[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, d);
            if (strtod(buf, NULL) == d) break;
        }
        /* A real stays a real when read back ("1e+300" and "2.5" do; "3" would not). */
        fputs(buf, f);
        if (!strpbrk(buf, ".eEni")) fputs(".0", f);
    } else if (json_is_object(j)) {
        bool first = true;
        putc('{', f);
        json_object_foreach(j, k, v)
        {
            if (!first) putc(',', f);
            first = false;
            json_t *key = json_string(k);
            json_dumpf(key, f, JSON_ENCODE_ANY);
            json_decref(key);
            putc(':', f);
            rem_dump(v, f);
        }
        putc('}', f);
    } else if (json_is_array(j)) {
        putc('[', f);
        json_array_foreach(j, i, v)
        {
            if (i) putc(',', f);
            rem_dump(v, f);
        }
        putc(']', f);
    } else {
        json_dumpf(j, f, JSON_ENCODE_ANY | JSON_COMPACT);
    }
}

/* ---------------------------------------------------------------- stats and databases */

/* The CLI's stats object (cli_stats_json's keys) from the server's /stats answer. */
static json_t *rem_stats_json(json_t *s)
{
    json_t *c = json_object_get(s, "compaction"), *ix = json_object_get(s, "index");
    json_t *idx = json_object();
    if (json_is_object(ix)) {
        json_object_set_new(idx, "state", json_string(rem_str(ix, "state", "")));
        json_object_set_new(idx, "nodes", json_integer((json_int_t)rem_u64(ix, "nodes")));
        json_object_set_new(idx, "pending", json_integer((json_int_t)rem_u64(ix, "pending")));
        json_object_set_new(idx, "reason", json_string(rem_str(ix, "reason", "")));
    }
    json_t *dr = json_object_get(s, "deadRatio");
    json_t *o = json_pack(
        "{sIsIsIsIsIsIsfsIsIsIs{sbssss}so}", "liveRecords", (json_int_t)rem_u64(s, "liveRecords"), "deadRecords",
        (json_int_t)rem_u64(s, "deadRecords"), "tombstones", (json_int_t)rem_u64(s, "tombstones"), "fileBytes",
        (json_int_t)rem_u64(s, "fileBytes"), "liveBytes", (json_int_t)rem_u64(s, "liveBytes"), "deadBytes",
        (json_int_t)rem_u64(s, "deadBytes"), "deadRatio", json_is_number(dr) ? json_number_value(dr) : 0.0, "segments",
        (json_int_t)rem_u64(s, "segments"), "lastLsn", (json_int_t)rem_u64(s, "lastLsn"), "backupHorizon",
        (json_int_t)rem_u64(s, "backupHorizon"), "compaction", "due", json_is_true(json_object_get(c, "due")),
        "trigger", rem_str(c, "trigger", "none"), "reason", rem_str(c, "reason", ""), "index", idx);
    cli_json_add_deprecated(o, cli_stats_deprecated);
    return o;
}

/* The same lines as cli_stats_print; the saved graph's line is the server's business, not shown. */
static void rem_stats_print(json_t *j)
{
    static const char *const keys[] = { "liveRecords", "deadRecords", "tombstones", "fileBytes", "liveBytes",
                                        "deadBytes",   "deadRatio",   "segments",   "lastLsn",   "backupHorizon" };
    static const char *const labels[] = {
        "live_records", "dead_records", "tombstones", "file_bytes", "live_bytes",
        "dead_bytes",   "dead_ratio",   "segments",   "last_lsn",   "backup_horizon"
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        char label[32];
        snprintf(label, sizeof label, "%s:", labels[i]);
        if (json_is_real(v)) printf("%-17s%.4f\n", label, json_real_value(v));
        else printf("%-17s%llu\n", label, (unsigned long long)json_integer_value(v));
    }
    json_t *c = json_object_get(j, "compaction");
    if (json_is_true(json_object_get(c, "due")))
        printf("compaction:      due (%s: %s)\n", rem_str(c, "trigger", ""), rem_str(c, "reason", ""));
    else printf("compaction:      not due (%s)\n", rem_str(c, "reason", ""));
    json_t *ix = json_object_get(j, "index");
    const char *reason = rem_str(ix, "reason", "");
    if (json_object_get(ix, "state"))
        printf("index:           %s, %llu nodes, %llu pending%s%s\n", rem_str(ix, "state", ""),
               (unsigned long long)rem_u64(ix, "nodes"), (unsigned long long)rem_u64(ix, "pending"),
               *reason ? "; rebuilt because: " : "", reason);
}

/* GET .../stats as the CLI's stats object. */
static int rem_get_stats(struct cli_ctx *ctx, const char *name, json_t **out)
{
    json_t *s;
    int rc = rem_db_call(ctx, "GET", name, "/stats", NULL, &s);
    if (rc) return rc;
    *out = rem_stats_json(s);
    json_decref(s);
    return *out ? 0 : cli_fail("out of memory");
}

int cli_remote_stats(struct cli_ctx *ctx, const char *name)
{
    json_t *st;
    int rc = rem_get_stats(ctx, name, &st);
    if (rc) return rc;
    if (ctx->json) return cli_print_json(st);
    rem_stats_print(st);
    json_decref(st);
    return CLI_EXIT_OK;
}

int cli_remote_db_list(struct cli_ctx *ctx)
{
    json_t *doc;
    int rc = rem_call(ctx, "GET", "/v1/databases", NULL, &doc);
    if (rc) return rc;
    json_t *names = json_array(), *d;
    size_t i;
    json_array_foreach(json_object_get(doc, "databases"), i, d)
        json_array_append_new(names, json_string(rem_str(d, "name", "")));
    json_decref(doc);
    if (ctx->json) return cli_print_json(json_pack("{so}", "databases", names));
    json_array_foreach(names, i, d) puts(json_string_value(d));
    json_decref(names);
    return CLI_EXIT_OK;
}

/* The CLI's database object (cli_db_object) from the server's, with `count` and `stats` when
 * given; the segment size is a storage setting the REST API does not show, so it is left out. */
static json_t *rem_db_json(json_t *d, const uint64_t *count, json_t *stats)
{
    jvdb_metric m = JVDB_METRIC_L2;
    jvdb_metric_parse(rem_str(d, "distanceMetric", "l2"), &m);
    return cli_db_object(rem_str(d, "name", ""), (uint32_t)rem_u64(d, "vectorDimension"), m, rem_str(d, "sync", ""), 0,
                         count, stats);
}

/* cli_db_print's lines. */
static void rem_db_print(json_t *j)
{
    printf("name:              %s\n", rem_str(j, "name", ""));
    printf("dim:               %llu\n", (unsigned long long)rem_u64(j, "vectorDimension"));
    printf("metric:            %s\n", rem_str(j, "metric", ""));
    printf("sync:              %s\n", rem_str(j, "sync", ""));
    printf("segment_max_bytes: (a storage setting the server does not report)\n");
}

int cli_remote_db_info(struct cli_ctx *ctx, const char *name)
{
    json_t *d, *st;
    int rc = rem_db_call(ctx, "GET", name, "", NULL, &d);
    if (rc) return rc;
    if ((rc = rem_get_stats(ctx, name, &st))) {
        json_decref(d);
        return rc;
    }
    uint64_t count = rem_u64(json_object_get(d, "stats"), "vectorCount");
    if (ctx->json) {
        json_t *doc = rem_db_json(d, &count, st);
        json_decref(d);
        return cli_print_json(doc);
    }
    json_t *doc = rem_db_json(d, NULL, NULL);
    json_decref(d);
    rem_db_print(doc);
    printf("count:             %llu\n", (unsigned long long)count);
    printf("\n");
    rem_stats_print(st);
    json_decref(doc);
    json_decref(st);
    return CLI_EXIT_OK;
}

int cli_remote_db_create(struct cli_ctx *ctx, const char *name, uint32_t dim, jvdb_metric metric, const char *sync)
{
    json_t *body = json_pack("{sssIss}", "name", name, "vectorDimension", (json_int_t)dim, "distanceMetric",
                             jvdb_metric_name(metric));
    if (sync) json_object_set_new(body, "sync", json_string(sync));
    json_t *d;
    int rc = rem_call(ctx, "POST", "/v1/databases", body, &d);
    if (rc) return rc;
    json_t *doc = rem_db_json(d, NULL, NULL);
    json_decref(d);
    if (ctx->json) return cli_print_json(doc);
    printf("created database '%s'\n", rem_str(doc, "name", name));
    rem_db_print(doc);
    json_decref(doc);
    return CLI_EXIT_OK;
}

int cli_remote_db_drop(struct cli_ctx *ctx, const char *name)
{
    int rc = rem_db_call(ctx, "DELETE", name, "", NULL, NULL);
    if (rc) return rc;
    if (ctx->json) return cli_print_json(json_pack("{ss}", "dropped", name));
    printf("dropped database '%s'\n", name);
    return CLI_EXIT_OK;
}

/* ---------------------------------------------------------------- vectors */

int cli_remote_dim(struct cli_ctx *ctx, const char *name, uint32_t *dim)
{
    json_t *d;
    int rc = rem_db_call(ctx, "GET", name, "", NULL, &d);
    if (rc) return rc;
    *dim = (uint32_t)rem_u64(d, "vectorDimension");
    json_decref(d);
    return 0;
}

/* values as a JSON array of their shortest decimals (cli_json_floats). */
static json_t *rem_vector(const float *v, size_t n)
{
    return cli_json_floats(v, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
}

int cli_remote_put(struct cli_ctx *ctx, const char *name, const char *id, const float *v, size_t n, const char *meta,
                   uint64_t *lsn)
{
    json_t *body = json_pack("{soso}", "id", cli_json_id(id, strlen(id)), "values", rem_vector(v, n));
    if (meta) json_object_set_new(body, "metadata", json_loads(meta, JSON_REJECT_DUPLICATES, NULL));
    json_t *a;
    int rc = rem_db_call(ctx, "POST", name, "/vectors", body, &a);
    if (rc) return rc;
    *lsn = rem_u64(a, "lsn");
    json_decref(a);
    return 0;
}

/* Values for the server to read back: "%.9g" always gives the same float32, in one formatting
 * (cli_write_floats looks for the shortest text, which costs three conversions a value). */
static void rem_write_floats(FILE *f, const float *v, uint32_t dim)
{
    char buf[32];
    for (uint32_t i = 0; i < dim; i++) {
        if (i) putc(',', f);
        if (v[i] == 0 && signbit(v[i])) {
            fputs("-0.0", f); /* "-0" reads back as the integer 0, without its sign */
            continue;
        }
        int n = snprintf(buf, sizeof buf, "%.9g", (double)v[i]);
        fwrite(buf, 1, (size_t)n, f);
    }
}

int cli_remote_put_batch(struct cli_ctx *ctx, const char *name, const jvdb_record *recs, size_t n)
{
    struct cli_remote *r = ctx->remote;
    /* Written as text, not built as a tree: the values are most of an import's time otherwise. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    fputs("{\"vectors\":[", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",{\"id\":" : "{\"id\":", f);
        json_t *id = cli_json_id(recs[i].id, strlen(recs[i].id));
        json_dumpf(id, f, JSON_ENCODE_ANY);
        json_decref(id);
        fputs(",\"values\":[", f);
        rem_write_floats(f, recs[i].vector, recs[i].dim);
        putc(']', f);
        if (recs[i].meta_json) {
            /* Not JSON: sent as a string, so the server refuses the record with its own message. */
            json_t *m = json_loads(recs[i].meta_json, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
            if (!m) m = json_string(recs[i].meta_json);
            fputs(",\"metadata\":", f);
            rem_dump(m, f);
            json_decref(m);
        }
        putc('}', f);
    }
    fputs("]}", f);
    if (fclose(f) != 0 || !text) {
        free(text);
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    char *p = rem_db_path(ctx, name, "/vectors/batch");
    if (!p) {
        free(text);
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    int rc = rem_send(ctx, "POST", p, text, len, NULL, true);
    free(p);
    return rc ? -1 : 0;
}

/* Copies a JSON array of numbers into floats; false when it is not one of `dim` numbers. */
static bool rem_floats(json_t *a, float *v, uint32_t dim)
{
    if (!json_is_array(a) || json_array_size(a) != dim) return false;
    for (uint32_t i = 0; i < dim; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_number(x)) return false;
        v[i] = (float)json_number_value(x);
    }
    return true;
}

/* Metadata as compact JSON text (what the library stores), NULL for none. */
static char *rem_meta_text(json_t *m)
{
    if (!m || json_is_null(m)) return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    rem_dump(m, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int cli_remote_get(struct cli_ctx *ctx, const char *name, const char *id, float **v, uint32_t *dim, char **meta)
{
    char *p = rem_vec_path(ctx, name, id);
    if (!p) return cli_fail("out of memory");
    json_t *a;
    int rc = rem_call(ctx, "GET", p, NULL, &a);
    free(p);
    if (rc) return rc;
    json_t *vals = json_object_get(a, "values");
    *dim = (uint32_t)json_array_size(vals);
    *v = malloc((*dim ? *dim : 1) * sizeof **v);
    if (!*v || !rem_floats(vals, *v, *dim)) {
        free(*v);
        *v = NULL;
        json_decref(a);
        return cli_fail("%s answered a vector that is not a list of numbers", ctx->remote->where);
    }
    *meta = rem_meta_text(json_object_get(a, "metadata"));
    json_decref(a);
    return 0;
}

int cli_remote_delete(struct cli_ctx *ctx, const char *name, const char *const *ids, size_t n, const char *filter_json,
                      uint64_t *deleted)
{
    json_t *body;
    if (filter_json) {
        body = json_pack("{so}", "filters", rem_filter(filter_json));
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, cli_json_id(ids[i], strlen(ids[i])));
        body = json_pack("{so}", "ids", arr);
    }
    json_t *a;
    int rc = rem_db_call(ctx, "POST", name, "/vectors/delete", body, &a);
    if (rc) return rc;
    *deleted = rem_u64(a, "deleted");
    json_decref(a);
    return 0;
}

int cli_remote_count(struct cli_ctx *ctx, const char *name, const char *filter_json, uint64_t *count)
{
    json_t *body = json_object();
    if (filter_json) json_object_set_new(body, "filters", rem_filter(filter_json));
    json_t *a;
    int rc = rem_db_call(ctx, "POST", name, "/vectors/count", body, &a);
    if (rc) return rc;
    *count = rem_u64(a, "count");
    json_decref(a);
    return 0;
}

int cli_remote_search(struct cli_ctx *ctx, const char *name, const float *q, uint32_t dim, const jvdb_search_params *p,
                      const char *filter_json, jvdb_result **res, size_t *n)
{
    *res = NULL;
    *n = 0;
    json_t *body =
        json_pack("{sosIsbsbsb}", "queryVector", rem_vector(q, dim), "topK", (json_int_t)p->k, "includeMetadata",
                  (int)p->include_metadata, "includeVectorData", (int)p->include_vectors, "exact", (int)p->exact);
    if (p->ef && !p->exact) json_object_set_new(body, "ef", json_integer((json_int_t)p->ef));
    if (p->has_threshold) {
        char buf[32];
        json_object_set_new(body, "threshold", json_real(strtod(cli_format_float(p->threshold, buf), NULL)));
    }
    if (filter_json) json_object_set_new(body, "filters", rem_filter(filter_json));
    json_t *a;
    int rc = rem_db_call(ctx, "POST", name, "/search", body, &a);
    if (rc) return rc;
    json_t *arr = json_object_get(a, "results");
    size_t cnt = json_array_size(arr);
    jvdb_result *out = calloc(cnt ? cnt : 1, sizeof *out);
    if (!out) {
        json_decref(a);
        return cli_fail("out of memory");
    }
    for (size_t i = 0; i < cnt; i++) {
        json_t *o = json_array_get(arr, i), *vec = json_object_get(o, "vector");
        out[i].id = strdup(rem_str(o, "vectorId", ""));
        out[i].score = (float)json_number_value(json_object_get(o, "score"));
        if (p->include_vectors) {
            out[i].vector = malloc((dim ? dim : 1) * sizeof(float));
            if (out[i].vector && !rem_floats(json_object_get(vec, "values"), out[i].vector, dim))
                memset(out[i].vector, 0, dim * sizeof(float));
        }
        if (p->include_metadata) out[i].meta_json = rem_meta_text(json_object_get(vec, "metadata"));
    }
    json_decref(a);
    *res = out;
    *n = cnt;
    return 0;
}

/* The trigger of its name (jvdb_compact_trigger_name's inverse). */
static jvdb_compact_trigger rem_trigger(const char *s)
{
    for (int t = JVDB_TRIGGER_NONE; t <= JVDB_TRIGGER_AGE; t++)
        if (!strcmp(jvdb_compact_trigger_name((jvdb_compact_trigger)t), s)) return (jvdb_compact_trigger)t;
    return JVDB_TRIGGER_NONE;
}

int cli_remote_compact(struct cli_ctx *ctx, const char *name, bool force, bool full, jvdb_compact_stats *st,
                       char *reason, size_t cap)
{
    /* Asked first, as the local command does, so the output can say why it ran. */
    json_t *s;
    int rc = rem_db_call(ctx, "GET", name, "/stats", NULL, &s);
    if (rc) return rc;
    json_t *c = json_object_get(s, "compaction");
    bool due = json_is_true(json_object_get(c, "due"));
    snprintf(reason, cap, "%s%s", !due && force ? "forced; " : "", rem_str(c, "reason", ""));
    json_decref(s);
    json_t *a;
    if ((rc = rem_db_call(ctx, "POST", name, "/compact", json_pack("{sbsb}", "force", force, "full", full), &a)))
        return rc;
    json_t *r = json_object_get(a, "result");
    memset(st, 0, sizeof *st);
    st->trigger =
        json_is_true(json_object_get(a, "compacted")) ? rem_trigger(rem_str(r, "trigger", "")) : JVDB_TRIGGER_NONE;
    st->full = json_is_true(json_object_get(r, "full"));
    st->segments_in = (uint32_t)rem_u64(r, "segmentsIn");
    st->segments_out = (uint32_t)rem_u64(r, "segmentsOut");
    st->bytes_before = rem_u64(r, "bytesBefore");
    st->bytes_after = rem_u64(r, "bytesAfter");
    st->bytes_reclaimed = rem_u64(r, "bytesReclaimed");
    st->records_copied = rem_u64(r, "recordsCopied");
    st->records_dropped = rem_u64(r, "recordsDropped");
    st->tombstones_dropped = rem_u64(r, "tombstonesDropped");
    st->seconds = json_number_value(json_object_get(r, "seconds"));
    json_decref(a);
    return 0;
}

int cli_remote_iterate(struct cli_ctx *ctx, const char *name, jvdb_iter_fn fn, void *arg)
{
    uint32_t dim;
    int rc = cli_remote_dim(ctx, name, &dim);
    if (rc) return -1;
    float *v = malloc((dim ? dim : 1) * sizeof *v);
    if (!v) {
        cli_fail("out of memory");
        return -1;
    }
    char *cursor = NULL;
    for (;;) {
        json_t *body = json_pack("{sIsbsb}", "limit", (json_int_t)1000, "includeValues", 1, "includeMetadata", 1);
        if (cursor) json_object_set_new(body, "cursor", json_string(cursor));
        json_t *a;
        if (rem_db_call(ctx, "POST", name, "/vectors/scroll", body, &a)) {
            rc = -1;
            break;
        }
        json_t *o;
        size_t i;
        json_array_foreach(json_object_get(a, "vectors"), i, o)
        {
            const char *id = rem_str(o, "id", "");
            if (!rem_floats(json_object_get(o, "values"), v, dim)) {
                cli_fail("%s answered vector '%s' without %u values", ctx->remote->where, id, dim);
                rc = -1;
                break;
            }
            char *meta = rem_meta_text(json_object_get(o, "metadata"));
            rc = fn(arg, id, strlen(id), v, meta, meta ? strlen(meta) : 0, 0);
            free(meta);
            if (rc) break;
        }
        free(cursor);
        cursor = NULL;
        const char *next = rem_str(a, "nextCursor", NULL);
        if (!rc && next) cursor = strdup(next);
        json_decref(a);
        if (rc || !cursor) break;
    }
    free(cursor);
    free(v);
    return rc;
}

/* ---------------------------------------------------------------- backups (the server's repository) */

/* Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ", as ns; 0 when it is not that. */
static int64_t rem_time_ns(const char *s)
{
    struct tm tm = { 0 };
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
    return end && !*end ? (int64_t)timegm(&tm) * 1000000000 : 0;
}

/* A backup's metadata as the library gives it, from the server's JSON object. */
static void rem_backup_info(json_t *o, jvdb_backup_info *b)
{
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", rem_str(o, "backupId", ""));
    snprintf(b->database, sizeof b->database, "%s", rem_str(o, "databaseId", ""));
    jvdb_backup_type_parse(rem_str(o, "type", "full"), &b->type);
    snprintf(b->parent, sizeof b->parent, "%s", rem_str(o, "parent", ""));
    b->lsn_from = rem_u64(o, "lsnFrom");
    b->lsn_to = rem_u64(o, "lsnTo");
    /* createdAt, or the backup object's name of before (created_at) */
    b->created_ns = rem_time_ns(rem_str(o, "createdAt", rem_str(o, "created_at", NULL)));
    b->put_count = rem_u64(o, "putCount");
    b->delete_count = rem_u64(o, "deleteCount");
    b->raw_bytes = rem_u64(o, "rawBytes");
    b->stored_bytes = rem_u64(o, "storedBytes");
    snprintf(b->sha256, sizeof b->sha256, "%s", rem_str(o, "sha256", ""));
    b->dim = (uint32_t)rem_u64(o, "vectorDimension");
    jvdb_metric_parse(rem_str(o, "distanceMetric", "l2"), &b->metric);
    b->compression_level = (int)rem_u64(o, "compressionLevel");
    b->format_version = (uint32_t)rem_u64(o, "formatVersion");
    snprintf(b->description, sizeof b->description, "%s", rem_str(o, "description", ""));
    b->chain_length = (uint32_t)rem_u64(o, "chainLength");
    b->restorable = json_is_true(json_object_get(o, "restorable"));
    snprintf(b->status, sizeof b->status, "%s", rem_str(o, "status", ""));
    snprintf(b->note, sizeof b->note, "%s", rem_str(o, "note", ""));
}

/* "/v1/backups/ID" + suffix, ID escaped ("DB/ID" becomes "DB%2FID"). */
static char *rem_backup_path(struct cli_ctx *ctx, const char *id, const char *suffix)
{
    return rem_path(ctx, "/v1/backups/", id, suffix);
}

int cli_remote_backup_create(struct cli_ctx *ctx, const char *name, const char *type, const char *description,
                             int level, jvdb_backup_info *out)
{
    json_t *body = json_object();
    if (type) json_object_set_new(body, "type", json_string(type));
    if (description) json_object_set_new(body, "description", json_string(description));
    if (level) json_object_set_new(body, "compressionLevel", json_integer(level));
    json_t *a;
    int rc = rem_db_call(ctx, "POST", name, "/backups", body, &a);
    if (rc) return rc;
    rem_backup_info(a, out);
    json_decref(a);
    return 0;
}

int cli_remote_backup_list(struct cli_ctx *ctx, const char *name, jvdb_backup_info **v, size_t *n, json_t **windows)
{
    json_t *a;
    int rc = name ? rem_db_call(ctx, "GET", name, "/backups", NULL, &a) : rem_call(ctx, "GET", "/v1/backups", NULL, &a);
    if (rc) return rc;
    json_t *arr = json_object_get(a, "backups"), *o;
    size_t i;
    *n = json_array_size(arr);
    *v = calloc(*n ? *n : 1, sizeof **v);
    if (!*v) {
        json_decref(a);
        return cli_fail("out of memory");
    }
    json_array_foreach(arr, i, o)
    {
        rem_backup_info(o, &(*v)[i]);
        /* GET /v1/databases/{id}/backups leaves the database out of each entry. */
        if (!(*v)[i].database[0] && name) snprintf((*v)[i].database, sizeof(*v)[i].database, "%s", name);
    }
    if (windows) {
        json_t *w = json_object_get(a, "windows");
        *windows = json_is_array(w) ? json_incref(w) : json_array();
    }
    json_decref(a);
    return 0;
}

int cli_remote_backup_show(struct cli_ctx *ctx, const char *id, jvdb_backup_info *out)
{
    char *p = rem_backup_path(ctx, id, "");
    if (!p) return cli_fail("out of memory");
    json_t *a;
    int rc = rem_call(ctx, "GET", p, NULL, &a);
    free(p);
    if (rc) return rc;
    rem_backup_info(a, out);
    json_decref(a);
    return 0;
}

int cli_remote_backup_verify(struct cli_ctx *ctx, const char *id)
{
    char *p = rem_backup_path(ctx, id, "/verify");
    if (!p) return cli_fail("out of memory");
    json_t *a;
    int rc = rem_call(ctx, "POST", p, NULL, &a);
    free(p);
    if (rc) return rc;
    /* A bad backup is a successful check with a bad result: the message names what is wrong. */
    if (!json_is_true(json_object_get(a, "valid"))) rc = cli_fail("%s", rem_str(a, "message", "the backup is damaged"));
    json_decref(a);
    return rc;
}

int cli_remote_backup_restore(struct cli_ctx *ctx, const char *id, const char *as, bool force, json_t *target,
                              json_t **answer)
{
    json_t *body = target ? target : json_object();
    if (as) json_object_set_new(body, "targetDatabase", json_string(as));
    if (force) json_object_set_new(body, "force", json_true());
    char *p = rem_backup_path(ctx, id, "/restore");
    if (!p) {
        json_decref(body);
        return cli_fail("out of memory");
    }
    int rc = rem_call(ctx, "POST", p, body, answer);
    free(p);
    return rc;
}

/* ---------------------------------------------------------------- API keys (--server only) */

int cli_remote_keys_create(struct cli_ctx *ctx, const char *role, const char *const *dbs, size_t ndb, int64_t expires_s,
                           const char *description)
{
    json_t *body = json_pack("{ss}", "role", role);
    if (ndb) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ndb; i++) json_array_append_new(arr, json_string(dbs[i]));
        json_object_set_new(body, "databases", arr);
    }
    if (expires_s) {
        char t[32];
        time_t e = (time_t)expires_s;
        struct tm tm;
        gmtime_r(&e, &tm);
        strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(body, "expiresAt", json_string(t));
    }
    if (description) json_object_set_new(body, "description", json_string(description));
    json_t *a;
    int rc = rem_call(ctx, "POST", "/v1/api-keys", body, &a);
    if (rc) return rc;
    const char *key = rem_str(a, "apiKey", "");
    if (ctx->json) {
        /* The key last (and its deprecated name after it), as the local command prints it. */
        json_t *k = json_incref(json_object_get(a, "apiKey"));
        json_object_del(a, "apiKey");
        json_object_del(a, "api_key");
        json_object_set_new(a, "apiKey", k ? k : json_string(""));
        cli_json_add_deprecated(a, (const char *const[]){ "apiKey", NULL });
        return cli_print_json(a);
    }
    printf("%s\n", key);
    fprintf(stderr, "API key %s created (role %s); it is shown only this once.\n", rem_str(a, "keyId", ""),
            rem_str(a, "role", ""));
    json_decref(a);
    return CLI_EXIT_OK;
}

int cli_remote_keys_list(struct cli_ctx *ctx)
{
    json_t *a;
    int rc = rem_call(ctx, "GET", "/v1/api-keys", NULL, &a);
    if (rc) return rc;
    if (ctx->json) return cli_print_json(a); /* apiKeys and api_keys, as the local command prints */
    json_t *arr = json_object_get(a, "apiKeys"), *k;
    size_t i;
    if (!json_array_size(arr)) printf("no API keys\n");
    /* The lines of cli_keys_print. */
    json_array_foreach(arr, i, k)
    {
        printf("%s  %-5s  ", rem_str(k, "keyId", ""), rem_str(k, "role", ""));
        json_t *dbs = json_object_get(k, "databases"), *d;
        size_t j;
        if (!json_array_size(dbs)) printf("all databases");
        json_array_foreach(dbs, j, d) printf("%s%s", j ? "," : "", json_string_value(d));
        printf("  created %s  expires %s%s", rem_str(k, "createdAt", ""), rem_str(k, "expiresAt", "never"),
               json_is_true(json_object_get(k, "expired")) ? " (expired)" : "");
        const char *desc = rem_str(k, "description", "");
        if (*desc) printf("  \"%s\"", desc);
        putchar('\n');
    }
    json_decref(a);
    return CLI_EXIT_OK;
}

int cli_remote_keys_revoke(struct cli_ctx *ctx, const char *id)
{
    char *p = rem_path(ctx, "/v1/api-keys/", id, "");
    if (!p) return cli_fail("out of memory");
    int rc = rem_call(ctx, "DELETE", p, NULL, NULL);
    free(p);
    if (rc) return rc;
    if (ctx->json) {
        json_t *o = json_pack("{s:s, s:b}", "keyId", id, "revoked", 1);
        cli_json_add_deprecated(o, (const char *const[]){ "keyId", NULL });
        return cli_print_json(o);
    }
    printf("API key %s revoked\n", id);
    return CLI_EXIT_OK;
}

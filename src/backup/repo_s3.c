/*
 * repo_s3.c — a backup repository in S3-compatible object storage, over libcurl.
 *
 * Keys mirror the filesystem layout under the bucket prefix:
 *   <prefix>/<database>/<backup-id>/data.jvb.zst   written first (multipart when large)
 *   <prefix>/<database>/<backup-id>/backup.json    written last: its presence is the commit
 *   <prefix>/<database>/log/...                    backup log objects and the lease (wal.c), one PUT each
 * Listing shows only backups that have a backup.json, so a backup interrupted at any point is
 * invisible; deletion removes backup.json first for the same reason.  Orphaned data objects (a
 * create that died between the two PUTs) are removed by cleanup once they are old enough that no
 * live create can own them.
 *
 * Requests are signed by libcurl itself (CURLOPT_AWS_SIGV4); we only supply the payload hash
 * header and query strings that are already in canonical form (parameters sorted, values
 * URI-encoded, "=" always present), which is what SigV4 signs whatever the curl version does with
 * them.  Paths are addressed path-style (endpoint/bucket/key), which AWS, MinIO, Ceph and s3rver
 * all accept.  Transient failures (connection errors, 5xx, 429) are retried with backoff.
 *
 * A jvdb_repo handle is used by one thread at a time: it keeps one curl handle so connections are
 * reused between requests.
 */
#include "backup/backup.h"

#include "core/err.h"
#include "core/io.h"
#include "store/db.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define S3_DEFAULT_PART (16u << 20)
#define S3_MIN_PART     (5u << 20)
#define S3_READ_CHUNK   (8u << 20)
#define S3_MAX_META     (1u << 20)
#define S3_TRIES        4
#define S3_LIST_DONE    1 /* a listing callback's "stop here, all is found" */

struct repo_s3 {
    struct jvdb_repo base;
    char *endpoint, *bucket, *prefix, *region, *access, *secret, *token;
    char sigv4[160];
    uint64_t part_size;
    CURL *curl;
};

/* ------------------------------------------------------------------ small helpers */

struct s3_buf {
    char *p;
    size_t len, cap, limit;
    char *direct; /* when set, the body goes here (ranged reads) */
    size_t direct_cap;
};

/* Appends n bytes and keeps the buffer NUL-terminated, doubling its capacity as needed; -1 when out of memory. */
static int s3_buf_add(struct s3_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) return -1;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* AWS URI encoding: everything but unreserved characters (and '/' in paths when keep_slash). */
static int s3_encode(struct s3_buf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~' || (keep_slash && c == '/')) {
            if (s3_buf_add(b, (const char *)&c, 1)) return -1;
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            if (s3_buf_add(b, e, 3)) return -1;
        }
    }
    return 0;
}

/* curl write callback: collects the body into the caller's buffer (ranged reads) or a growing one; returning
 * 0 past its size or `limit` makes curl fail with CURLE_WRITE_ERROR, which s3_do does not retry. */
static size_t s3_on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct s3_buf *b = arg;
    size_t len = sz * n;
    if (b->direct) {
        if (b->len + len > b->direct_cap) return 0;
        memcpy(b->direct + b->len, p, len);
        b->len += len;
        return len;
    }
    if (b->limit && b->len + len > b->limit) return 0;
    return s3_buf_add(b, p, len) ? 0 : len;
}

struct s3_resp {
    long status;
    struct s3_buf body;
    char etag[128];
    int64_t length;
};

/* curl header callback: keeps the ETag and Content-Length of the answer. */
static size_t s3_on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct s3_resp *r = arg;
    size_t len = sz * n;
    char line[256];
    size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p, k);
    line[k] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (!strncasecmp(line, "etag:", 5)) {
        const char *v = line + 5;
        while (*v == ' ') v++;
        snprintf(r->etag, sizeof r->etag, "%.127s", v);
    } else if (!strncasecmp(line, "content-length:", 15)) {
        r->length = strtoll(line + 15, NULL, 10);
    }
    return len;
}

/* Text between <tag> and </tag> at or after *from; advances *from past it.  Returns 0 if found. */
static int xml_get(const char *doc, const char **from, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = strstr(*from, open);
    if (!a) return -1;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b) return -1;
    /* Decode the five predefined entities; keys of ours never need more. */
    size_t k = 0;
    for (const char *p = a; p < b && k + 1 < cap; p++) {
        static const struct {
            const char *e;
            char c;
        } ents[] = { { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' } };
        char c = *p;
        if (c == '&')
            for (size_t i = 0; i < 5; i++)
                if (!strncmp(p, ents[i].e, strlen(ents[i].e))) {
                    c = ents[i].c;
                    p += strlen(ents[i].e) - 1;
                    break;
                }
        out[k++] = c;
    }
    out[k] = '\0';
    *from = b + strlen(close);
    (void)doc;
    return 0;
}

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static void s3_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ------------------------------------------------------------------ one request */

struct s3_req {
    const char *method; /* GET, HEAD, PUT, POST, DELETE */
    const char *key;    /* full object key, or NULL for the bucket */
    const char *query;  /* canonical query string or NULL */
    const void *body;
    size_t body_len;
    const char *range; /* "bytes=a-b" or NULL */
    char *direct;      /* GET body into this buffer */
    size_t direct_cap;
    size_t limit; /* refuse bodies larger than this (0 = no limit) */
};

/* Turns a failed request into an error: curl's own message, or the HTTP status with S3's Code and Message;
 * 404 is JVDB_ENOTFOUND, and NoSuchBucket says the repository does not exist. */
static int s3_error(struct repo_s3 *s, const struct s3_req *q, struct s3_resp *r, CURLcode cc, const char *curl_err)
{
    if (cc != CURLE_OK)
        return err_set(JVDB_EIO, "S3 %s %s/%s failed: %s", q->method, s->bucket, q->key ? q->key : "",
                       curl_err[0] ? curl_err : curl_easy_strerror(cc));
    char code[128] = "", msg[256] = "";
    if (r->body.p) {
        const char *f = r->body.p;
        xml_get(r->body.p, &f, "Code", code, sizeof code);
        f = r->body.p;
        xml_get(r->body.p, &f, "Message", msg, sizeof msg);
    }
    int rc = r->status == 404 ? JVDB_ENOTFOUND : JVDB_EIO;
    if (!strcmp(code, "NoSuchBucket"))
        return err_set(JVDB_ENOTFOUND, "repository %s does not exist (S3 %s %s: HTTP %ld NoSuchBucket)", s->base.spec,
                       q->method, s->bucket, r->status);
    return err_set(rc, "S3 %s %s/%s: HTTP %ld%s%s%s%s", q->method, s->bucket, q->key ? q->key : "", r->status,
                   code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
}

/* Performs one request on the handle's curl connection (curl signs it, SigV4, with our payload hash header);
 * retries transient failures (connection errors, 5xx, 429) up to S3_TRIES times with doubling waits. */
static int s3_do(struct repo_s3 *s, const struct s3_req *q, struct s3_resp *r)
{
    struct s3_buf url = { 0 };
    int rc = JVDB_OK;
    if (s3_buf_add(&url, s->endpoint, strlen(s->endpoint)) || s3_buf_add(&url, "/", 1) ||
        s3_encode(&url, s->bucket, 0) || s3_buf_add(&url, "/", 1) || (q->key && s3_encode(&url, q->key, 1)) ||
        (q->query && (s3_buf_add(&url, "?", 1) || s3_buf_add(&url, q->query, strlen(q->query))))) {
        free(url.p);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    char payload[65], hdr[128], tok[4096];
    sha256_hex(q->body ? q->body : "", q->body_len, payload);
    for (int attempt = 0; attempt < S3_TRIES; attempt++) {
        memset(r, 0, sizeof *r);
        r->length = -1;
        r->body.direct = q->direct;
        r->body.direct_cap = q->direct_cap;
        r->body.limit = q->limit;
        struct curl_slist *h = NULL;
        snprintf(hdr, sizeof hdr, "x-amz-content-sha256: %s", payload);
        h = curl_slist_append(h, hdr);
        h = curl_slist_append(h, "Expect:");
        if (q->body) h = curl_slist_append(h, "Content-Type: application/octet-stream");
        if (q->range) {
            snprintf(hdr, sizeof hdr, "Range: %s", q->range);
            h = curl_slist_append(h, hdr);
        }
        if (s->token) {
            snprintf(tok, sizeof tok, "x-amz-security-token: %s", s->token);
            h = curl_slist_append(h, tok);
        }
        CURL *c = s->curl;
        curl_easy_reset(c);
        char curl_err[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(c, CURLOPT_URL, url.p);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 120L);
        curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(c, CURLOPT_USERNAME, s->access ? s->access : "");
        curl_easy_setopt(c, CURLOPT_PASSWORD, s->secret ? s->secret : "");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s3_on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s3_on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        if (!strcmp(q->method, "HEAD")) {
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        } else if (q->body || !strcmp(q->method, "POST") || !strcmp(q->method, "PUT")) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body ? q->body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
        } else if (strcmp(q->method, "GET")) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
        }
        CURLcode cc = curl_easy_perform(c);
        curl_slist_free_all(h);
        if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        int transient = cc != CURLE_OK || r->status >= 500 || r->status == 429;
        if (cc == CURLE_WRITE_ERROR) transient = 0; /* our own size limit */
        if (!transient && r->status >= 200 && r->status < 300) {
            rc = JVDB_OK;
            break;
        }
        rc = s3_error(s, q, r, cc, curl_err);
        if (!transient || attempt + 1 == S3_TRIES) break;
        if (!q->direct) free(r->body.p);
        usleep((useconds_t)(200000u << attempt));
    }
    free(url.p);
    if (rc && !q->direct) {
        free(r->body.p);
        r->body.p = NULL;
    }
    return rc;
}

/* Frees the answer's body unless it went into the caller's buffer. */
static void s3_resp_free(struct s3_resp *r)
{
    if (!r->body.direct) free(r->body.p);
    r->body.p = NULL;
}

/* ------------------------------------------------------------------ keys */

/* The object key "<prefix>/<db>/<id>/<name>", leaving out the NULL parts; NULL when out of memory. */
static char *s3_key(struct repo_s3 *s, const char *db, const char *id, const char *name)
{
    struct s3_buf b = { 0 };
    int e = 0;
    if (s->prefix[0]) e |= s3_buf_add(&b, s->prefix, strlen(s->prefix)) | s3_buf_add(&b, "/", 1);
    if (db) e |= s3_buf_add(&b, db, strlen(db)) | s3_buf_add(&b, "/", 1);
    if (id) e |= s3_buf_add(&b, id, strlen(id)) | s3_buf_add(&b, "/", 1);
    if (name) e |= s3_buf_add(&b, name, strlen(name));
    if (e || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Calls fn for every object (key, size, last-modified) or, with a delimiter, common prefix (size -1). */
typedef int (*s3_list_fn)(void *arg, const char *key, int64_t size, int64_t mtime_s);

/* Seconds since the epoch of a listing's LastModified (ISO 8601, UTC); 0 when unreadable. */
static int64_t s3_parse_time(const char *s)
{
    struct tm tm = { 0 };
    if (sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

/* Lists keys below `prefix` (after `start_after` when not NULL: keys come sorted). */
static int s3_list_from(struct repo_s3 *s, const char *prefix, const char *start_after, int delimit, s3_list_fn fn,
                        void *arg)
{
    char token[1024] = "";
    for (;;) {
        struct s3_buf q = { 0 };
        int e = 0;
        if (token[0]) e |= s3_buf_add(&q, "continuation-token=", 19) | s3_encode(&q, token, 0) | s3_buf_add(&q, "&", 1);
        if (delimit) e |= s3_buf_add(&q, "delimiter=%2F&", 14);
        e |= s3_buf_add(&q, "list-type=2&prefix=", 19) | s3_encode(&q, prefix, 0);
        if (start_after && !token[0]) e |= s3_buf_add(&q, "&start-after=", 13) | s3_encode(&q, start_after, 0);
        if (e) {
            free(q.p);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        struct s3_req req = { .method = "GET", .query = q.p, .limit = 64u << 20 };
        struct s3_resp r;
        int rc = s3_do(s, &req, &r);
        free(q.p);
        if (rc) return rc;
        const char *p = r.body.p ? r.body.p : "";
        char block[8192], key[1100], val[64];
        const char *f = p;
        while (!rc && xml_get(p, &f, "Contents", block, sizeof block) == 0) {
            const char *g = block;
            if (xml_get(block, &g, "Key", key, sizeof key)) continue;
            g = block;
            int64_t size = xml_get(block, &g, "Size", val, sizeof val) == 0 ? strtoll(val, NULL, 10) : 0;
            g = block;
            int64_t mt = xml_get(block, &g, "LastModified", val, sizeof val) == 0 ? s3_parse_time(val) : 0;
            rc = fn(arg, key, size, mt);
        }
        f = p;
        while (!rc && xml_get(p, &f, "CommonPrefixes", block, sizeof block) == 0) {
            const char *g = block;
            if (xml_get(block, &g, "Prefix", key, sizeof key) == 0) rc = fn(arg, key, -1, 0);
        }
        f = p;
        int more = xml_get(p, &f, "IsTruncated", val, sizeof val) == 0 && !strcmp(val, "true");
        f = p;
        if (more && xml_get(p, &f, "NextContinuationToken", token, sizeof token)) more = 0;
        s3_resp_free(&r);
        if (rc || !more) return rc;
    }
}

/* Lists every key under `prefix` (ListObjectsV2, following continuation tokens), calling fn with each key, its size
 * and modification time, and with each common prefix (size -1) when `delimit` is set. */
static int s3_list(struct repo_s3 *s, const char *prefix, int delimit, s3_list_fn fn, void *arg)
{
    return s3_list_from(s, prefix, NULL, delimit, fn, arg);
}

/* ------------------------------------------------------------------ listing */

struct s3_names {
    char **v;
    size_t n, cap;
    size_t skip; /* length of the listed prefix */
};

/* The first database name among the listed keys: the first path segment of a key below the prefix
 * that is a valid name; S3_LIST_DONE once found. */
static int s3_collect_db(void *arg, const char *key, int64_t size, int64_t mtime)
{
    (void)mtime;
    (void)size;
    struct s3_names *a = arg;
    if (strlen(key) <= a->skip) return 0;
    const char *rest = key + a->skip, *slash = strchr(rest, '/');
    if (!slash || slash - rest > JVDB_MAX_NAME_LEN) return 0;
    char name[JVDB_MAX_NAME_LEN + 1];
    snprintf(name, sizeof name, "%.*s", (int)(slash - rest), rest);
    if (!db_name_valid(name)) return 0;
    if (a->n == a->cap) {
        char **nv = realloc(a->v, (a->cap = a->cap ? a->cap * 2 : 16) * sizeof *nv);
        if (!nv) return err_set(JVDB_ENOMEM, "out of memory");
        a->v = nv;
    }
    if (!(a->v[a->n] = strdup(name))) return err_set(JVDB_ENOMEM, "out of memory");
    a->n++;
    return S3_LIST_DONE;
}

static int s3_cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Database names are the first path segment of the keys below the prefix.  A delimiter listing
 * would be the natural way, but some S3 implementations (s3rver among them) report common prefixes
 * only one level above objects; so each request stops at the first key of a database and the next
 * starts after all of its keys ("<name>0" sorts after "<name>/..." and before any longer name that
 * could follow), which keeps a listing at one request per database however long its backup log. */
static int repo_s3_list_databases(jvdb_repo *r, char ***names, size_t *n)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *pre = s3_key(s, NULL, NULL, "");
    if (!pre) return err_set(JVDB_ENOMEM, "out of memory");
    struct s3_names a = { .skip = strlen(pre) };
    char *after = NULL;
    int rc = JVDB_OK;
    for (;;) {
        size_t before = a.n;
        rc = s3_list_from(s, pre, after, 0, s3_collect_db, &a);
        if (rc == S3_LIST_DONE) rc = JVDB_OK;
        if (rc || a.n == before) break;
        free(after);
        size_t l = strlen(pre) + strlen(a.v[a.n - 1]) + 2;
        if (!(after = malloc(l))) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
        snprintf(after, l, "%s%s0", pre, a.v[a.n - 1]);
    }
    free(after);
    free(pre);
    if (rc) {
        jvdb_free_names(a.v, a.n);
        return rc;
    }
    if (a.n) qsort(a.v, a.n, sizeof *a.v, s3_cmp_names);
    /* Sorted keys make names distinct, but be safe against a store that does not sort. */
    size_t k = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (k && !strcmp(a.v[k - 1], a.v[i])) free(a.v[i]);
        else a.v[k++] = a.v[i];
    }
    a.n = k;
    *names = a.v;
    *n = a.n;
    return JVDB_OK;
}

/* Per-id view of the objects under one database. */
struct s3_obj {
    char id[BACKUP_ID_MAX];
    int has_meta;
    int64_t data_size;
    int64_t mtime;
};
struct s3_objs {
    struct s3_obj *v;
    size_t n, cap, skip;
};

/* s3_list callback: groups the keys of one database by backup id, noting backup.json, the data size and age. */
static int s3_collect_obj(void *arg, const char *key, int64_t size, int64_t mtime)
{
    struct s3_objs *a = arg;
    if (strlen(key) <= a->skip) return 0;
    const char *rest = key + a->skip, *slash = strchr(rest, '/');
    /* Keys come sorted and backup ids start with a digit: from the backup log (wal.c) on, which may
     * hold many thousands of objects, there is no backup left to find. */
    if (!strncmp(rest, "log/", 4)) return S3_LIST_DONE;
    if (!slash || (size_t)(slash - rest) >= BACKUP_ID_MAX) return 0;
    char id[BACKUP_ID_MAX];
    snprintf(id, sizeof id, "%.*s", (int)(slash - rest), rest);
    if (!backup_id_valid(id)) return 0;
    struct s3_obj *o = NULL;
    for (size_t i = a->n; i-- > 0;)
        if (!strcmp(a->v[i].id, id)) {
            o = &a->v[i];
            break;
        }
    if (!o) {
        if (a->n == a->cap) {
            struct s3_obj *nv = realloc(a->v, (a->cap = a->cap ? a->cap * 2 : 16) * sizeof *nv);
            if (!nv) return err_set(JVDB_ENOMEM, "out of memory");
            a->v = nv;
        }
        o = &a->v[a->n++];
        memset(o, 0, sizeof *o);
        snprintf(o->id, sizeof o->id, "%s", id);
        o->data_size = -1;
    }
    if (!strcmp(slash + 1, BACKUP_META_NAME)) o->has_meta = 1;
    else if (!strcmp(slash + 1, BACKUP_DATA_NAME)) o->data_size = size;
    if (mtime > o->mtime) o->mtime = mtime;
    return 0;
}

/* Every backup id with objects under `db`, committed or not (cleanup needs the orphans too). */
static int s3_objects(struct repo_s3 *s, const char *db, struct s3_objs *a)
{
    memset(a, 0, sizeof *a);
    char *pre = s3_key(s, db, NULL, "");
    if (!pre) return err_set(JVDB_ENOMEM, "out of memory");
    a->skip = strlen(pre);
    int rc = s3_list(s, pre, 0, s3_collect_obj, a);
    if (rc == S3_LIST_DONE) rc = JVDB_OK;
    free(pre);
    if (rc) free(a->v);
    return rc;
}

/* repo_ops list_backups: the ids under `db` that have a backup.json (the commit), with their data sizes. */
static int repo_s3_list_backups(jvdb_repo *r, const char *db, struct repo_entry **out, size_t *n)
{
    struct s3_objs a;
    int rc = s3_objects((struct repo_s3 *)r, db, &a);
    *out = NULL;
    *n = 0;
    if (rc) return rc;
    struct repo_entry *v = malloc((a.n ? a.n : 1) * sizeof *v);
    if (!v) {
        free(a.v);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < a.n; i++) {
        if (!a.v[i].has_meta) continue;
        snprintf(v[*n].id, sizeof v[*n].id, "%s", a.v[i].id);
        v[*n].data_size = a.v[i].data_size;
        (*n)++;
    }
    free(a.v);
    *out = v;
    return JVDB_OK;
}

/* GETs a whole object (at most `limit` bytes, 0 = any) into a malloc'd buffer; takes `key` (NULL:
 * out of memory) and frees it. */
static int s3_get_whole(struct repo_s3 *s, char *key, size_t limit, char **buf, size_t *len)
{
    if (!key) return err_set(JVDB_ENOMEM, "out of memory");
    struct s3_req q = { .method = "GET", .key = key, .limit = limit };
    struct s3_resp resp;
    int rc = s3_do(s, &q, &resp);
    free(key);
    if (rc) return rc;
    if (!resp.body.p && s3_buf_add(&resp.body, "", 0)) return err_set(JVDB_ENOMEM, "out of memory");
    *buf = resp.body.p;
    *len = resp.body.len;
    return JVDB_OK;
}

/* repo_ops read_meta: GETs backup.json, refusing one over S3_MAX_META bytes. */
static int repo_s3_read_meta(jvdb_repo *r, const char *db, const char *id, char **buf, size_t *len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    return s3_get_whole(s, s3_key(s, db, id, BACKUP_META_NAME), S3_MAX_META, buf, len);
}

/* ------------------------------------------------------------------ reading data */

struct s3_reader {
    struct repo_reader base;
    struct repo_s3 *s;
    char *key;
    uint64_t size, pos;
    char *chunk;
    size_t chunk_len, chunk_pos;
};

/* repo_reader read: serves the object in S3_READ_CHUNK ranged GETs, so a retry repeats one chunk and not the
 * whole download; a short answer means the object changed while being read. */
static int s3_reader_read(struct repo_reader *rr, void *buf, size_t cap, size_t *got)
{
    struct s3_reader *r = (struct s3_reader *)rr;
    if (r->chunk_pos == r->chunk_len) {
        if (r->pos >= r->size) {
            *got = 0;
            return JVDB_OK;
        }
        uint64_t end = r->pos + S3_READ_CHUNK < r->size ? r->pos + S3_READ_CHUNK : r->size;
        char range[80];
        snprintf(range, sizeof range, "bytes=%llu-%llu", (unsigned long long)r->pos, (unsigned long long)end - 1);
        struct s3_req q = {
            .method = "GET", .key = r->key, .range = range, .direct = r->chunk, .direct_cap = S3_READ_CHUNK
        };
        struct s3_resp resp;
        int rc = s3_do(r->s, &q, &resp);
        if (rc) return rc;
        if (resp.body.len != end - r->pos)
            return err_set(JVDB_EIO, "S3 GET %s: asked for %llu bytes, got %zu (object changed while read?)", r->key,
                           (unsigned long long)(end - r->pos), resp.body.len);
        r->chunk_len = resp.body.len;
        r->chunk_pos = 0;
        r->pos = end;
    }
    size_t take = r->chunk_len - r->chunk_pos < cap ? r->chunk_len - r->chunk_pos : cap;
    memcpy(buf, r->chunk + r->chunk_pos, take);
    r->chunk_pos += take;
    *got = take;
    return JVDB_OK;
}

/* repo_reader close: frees the reader and its chunk buffer. */
static void s3_reader_close(struct repo_reader *rr)
{
    struct s3_reader *r = (struct s3_reader *)rr;
    free(r->key);
    free(r->chunk);
    free(r);
}

/* repo_ops open_data: learns the data object's size with a HEAD, so reads know where it ends. */
static int repo_s3_open_data(jvdb_repo *rp, const char *db, const char *id, struct repo_reader **out)
{
    struct repo_s3 *s = (struct repo_s3 *)rp;
    struct s3_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->key = s3_key(s, db, id, BACKUP_DATA_NAME)) || !(r->chunk = malloc(S3_READ_CHUNK))) {
        if (r) free(r->key);
        free(r);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    struct s3_req q = { .method = "HEAD", .key = r->key };
    struct s3_resp resp;
    int rc = s3_do(s, &q, &resp);
    s3_resp_free(&resp);
    if (!rc && resp.length < 0) rc = err_set(JVDB_EIO, "S3 HEAD %s: no Content-Length", r->key);
    if (rc) {
        if (rc == JVDB_ENOTFOUND)
            rc = err_set(JVDB_ENOTFOUND, "backup %s of '%s': %s is missing", id, db, BACKUP_DATA_NAME);
        s3_reader_close(&r->base);
        return rc;
    }
    r->s = s;
    r->size = (uint64_t)resp.length;
    r->base.read = s3_reader_read;
    r->base.close = s3_reader_close;
    *out = &r->base;
    return JVDB_OK;
}

/* ------------------------------------------------------------------ writing */

struct s3_stage {
    struct repo_stage base;
    struct repo_s3 *s;
    char *data_key, *meta_key;
    char *extra_key; /* the last extra object put (index.hnsw), deleted again on abort */
    char *buf;
    size_t len, cap;
    char upload_id[512];
    char **etags;
    size_t nparts, parts_cap;
    int data_written;
};

/* Uploads the buffered bytes as the next part of a multipart upload (starting the upload on the first
 * call) and keeps the part's ETag for the completion. */
static int s3_upload_part(struct s3_stage *st)
{
    struct repo_s3 *s = st->s;
    struct s3_resp resp;
    int rc;
    if (!st->upload_id[0]) {
        struct s3_req q = { .method = "POST", .key = st->data_key, .query = "uploads=", .limit = 1u << 20 };
        if ((rc = s3_do(s, &q, &resp))) return rc;
        const char *f = resp.body.p ? resp.body.p : "";
        if (xml_get(f, &f, "UploadId", st->upload_id, sizeof st->upload_id)) st->upload_id[0] = '\0';
        s3_resp_free(&resp);
        if (!st->upload_id[0])
            return err_set(JVDB_EIO, "S3 multipart upload of %s: no UploadId in the answer", st->data_key);
    }
    struct s3_buf query = { 0 };
    char num[32];
    snprintf(num, sizeof num, "partNumber=%zu&uploadId=", st->nparts + 1);
    if (s3_buf_add(&query, num, strlen(num)) || s3_encode(&query, st->upload_id, 0)) {
        free(query.p);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    struct s3_req q = {
        .method = "PUT", .key = st->data_key, .query = query.p, .body = st->buf, .body_len = st->len, .limit = 1u << 20
    };
    rc = s3_do(s, &q, &resp);
    free(query.p);
    if (rc) return rc;
    s3_resp_free(&resp);
    if (!resp.etag[0])
        return err_set(JVDB_EIO, "S3 upload of part %zu of %s: no ETag in the answer", st->nparts + 1, st->data_key);
    if (st->nparts == st->parts_cap) {
        char **ne = realloc(st->etags, (st->parts_cap = st->parts_cap ? st->parts_cap * 2 : 16) * sizeof *ne);
        if (!ne) return err_set(JVDB_ENOMEM, "out of memory");
        st->etags = ne;
    }
    if (!(st->etags[st->nparts] = strdup(resp.etag))) return err_set(JVDB_ENOMEM, "out of memory");
    st->nparts++;
    st->len = 0;
    return JVDB_OK;
}

/* repo_stage write: buffers bytes and uploads each full part_size buffer as one part. */
static int s3_stage_write(struct repo_stage *rs, const void *buf, size_t len)
{
    struct s3_stage *st = (struct s3_stage *)rs;
    const char *p = buf;
    while (len) {
        size_t take = st->cap - st->len < len ? st->cap - st->len : len;
        memcpy(st->buf + st->len, p, take);
        st->len += take;
        p += take;
        len -= take;
        if (st->len == st->cap) {
            int rc = s3_upload_part(st);
            if (rc) return rc;
        }
    }
    return JVDB_OK;
}

/* PUTs a whole object in one request. */
static int s3_put_small(struct repo_s3 *s, const char *key, const void *body, size_t len)
{
    struct s3_req q = { .method = "PUT", .key = key, .body = body, .body_len = len, .limit = 1u << 20 };
    struct s3_resp resp;
    int rc = s3_do(s, &q, &resp);
    if (!rc) s3_resp_free(&resp);
    return rc;
}

/* DELETEs one key; a key already absent counts as deleted. */
static int s3_delete_key(struct repo_s3 *s, const char *key)
{
    struct s3_req q = { .method = "DELETE", .key = key, .limit = 1u << 20 };
    struct s3_resp resp;
    int rc = s3_do(s, &q, &resp);
    if (!rc) s3_resp_free(&resp);
    return rc == JVDB_ENOTFOUND ? JVDB_OK : rc;
}

/* repo_stage commit: finishes the data object (completing the multipart upload, or one PUT when it fit in a
 * part), then PUTs backup.json, whose appearance is the commit point. */
static int s3_stage_commit(struct repo_stage *rs, const char *meta, size_t len)
{
    struct s3_stage *st = (struct s3_stage *)rs;
    struct repo_s3 *s = st->s;
    int rc;
    if (st->upload_id[0]) {
        if (st->len && (rc = s3_upload_part(st))) return rc;
        struct s3_buf x = { 0 };
        int e = s3_buf_add(&x, "<CompleteMultipartUpload>", 25);
        for (size_t i = 0; i < st->nparts; i++) {
            char part[256];
            snprintf(part, sizeof part, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag></Part>", i + 1,
                     st->etags[i]);
            e |= s3_buf_add(&x, part, strlen(part));
        }
        e |= s3_buf_add(&x, "</CompleteMultipartUpload>", 26);
        struct s3_buf query = { 0 };
        e |= s3_buf_add(&query, "uploadId=", 9) | s3_encode(&query, st->upload_id, 0);
        if (e) {
            free(x.p);
            free(query.p);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        struct s3_req q = {
            .method = "POST", .key = st->data_key, .query = query.p, .body = x.p, .body_len = x.len, .limit = 1u << 20
        };
        struct s3_resp resp;
        rc = s3_do(s, &q, &resp);
        free(x.p);
        free(query.p);
        if (rc) return rc;
        /* CompleteMultipartUpload can answer 200 with an error document. */
        const char *f = resp.body.p ? resp.body.p : "";
        char code[128];
        int failed = strstr(f, "<Error>") && xml_get(f, &f, "Code", code, sizeof code) == 0;
        s3_resp_free(&resp);
        if (failed) return err_set(JVDB_EIO, "S3 completing the upload of %s failed: %s", st->data_key, code);
        st->upload_id[0] = '\0';
    } else if ((rc = s3_put_small(s, st->data_key, st->buf, st->len))) {
        return rc;
    }
    st->data_written = 1;
    io_crash_point("backup.before_publish");
    /* The commit point: backup.json appears, and with it the backup. */
    if ((rc = s3_put_small(s, st->meta_key, meta, len))) return rc;
    st->data_written = 0;
    free(st->extra_key); /* published with the backup: abort must leave it */
    st->extra_key = NULL;
    io_crash_point("backup.after_publish");
    return JVDB_OK;
}

/* repo_stage abort (and the end of a committed stage): aborts an unfinished multipart upload, deletes the
 * data and extra objects of an uncommitted backup, and frees the stage. */
static void s3_stage_abort(struct repo_stage *rs)
{
    struct s3_stage *st = (struct s3_stage *)rs;
    if (st->upload_id[0]) {
        struct s3_buf query = { 0 };
        if (!s3_buf_add(&query, "uploadId=", 9) && !s3_encode(&query, st->upload_id, 0)) {
            struct s3_req q = { .method = "DELETE", .key = st->data_key, .query = query.p, .limit = 1u << 20 };
            struct s3_resp resp;
            if (!s3_do(st->s, &q, &resp)) s3_resp_free(&resp);
        }
        free(query.p);
    }
    if (st->data_written) s3_delete_key(st->s, st->data_key);
    if (st->extra_key) s3_delete_key(st->s, st->extra_key);
    free(st->extra_key);
    for (size_t i = 0; i < st->nparts; i++) free(st->etags[i]);
    free(st->etags);
    free(st->buf);
    free(st->data_key);
    free(st->meta_key);
    free(st);
}

/* An extra object (the HNSW graph) is put beside data.jvb.zst before the commit; backup.json, put
 * last, publishes it with the rest, and an abort deletes it. */
static int s3_stage_put_extra(struct repo_stage *rs, const char *name, const void *buf, size_t len)
{
    struct s3_stage *st = (struct s3_stage *)rs;
    size_t dir = strlen(st->data_key) - strlen(BACKUP_DATA_NAME);
    char *key = malloc(dir + strlen(name) + 1);
    if (!key) return err_set(JVDB_ENOMEM, "out of memory");
    memcpy(key, st->data_key, dir);
    strcpy(key + dir, name);
    free(st->extra_key);
    st->extra_key = key;
    return s3_put_small(st->s, key, buf, len);
}

/* repo_ops read_extra: GETs an extra object of a backup whole (JVDB_ENOTFOUND when it has none). */
static int repo_s3_read_extra(jvdb_repo *r, const char *db, const char *id, const char *name, char **buf, size_t *len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    return s3_get_whole(s, s3_key(s, db, id, name), 0, buf, len);
}

/* repo_ops stage_begin: a stage with one part_size buffer; nothing is sent until the first part fills. */
static int repo_s3_stage_begin(jvdb_repo *r, const char *db, const char *id, struct repo_stage **out)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    struct s3_stage *st = calloc(1, sizeof *st);
    if (!st) return err_set(JVDB_ENOMEM, "out of memory");
    st->s = s;
    st->cap = s->part_size;
    st->buf = malloc(st->cap);
    st->data_key = s3_key(s, db, id, BACKUP_DATA_NAME);
    st->meta_key = s3_key(s, db, id, BACKUP_META_NAME);
    st->base.write = s3_stage_write;
    st->base.commit = s3_stage_commit;
    st->base.abort = s3_stage_abort;
    st->base.put_extra = s3_stage_put_extra;
    if (!st->buf || !st->data_key || !st->meta_key) {
        s3_stage_abort(&st->base);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    *out = &st->base;
    return JVDB_OK;
}

/* repo_ops remove: checks that backup.json exists, then deletes it first (making the backup invisible),
 * then its data and graph objects. */
static int repo_s3_remove(jvdb_repo *r, const char *db, const char *id)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    /* S3 deletes succeed on absent keys, so a delete that lost a race would report success: look
     * first.  (Within one server the backup mutex serialises deletes; across processes S3 offers
     * no atomic delete-if-present, so two may still both succeed there.) */
    char *buf = NULL;
    size_t len = 0;
    int rc = repo_s3_read_meta(r, db, id, &buf, &len);
    free(buf);
    if (rc == JVDB_ENOTFOUND && !strstr(jvdb_errmsg(), "does not exist"))
        return err_set(JVDB_ENOTFOUND, "backup %s of '%s' not found in repository %s (deleted meanwhile)", id, db,
                       s->base.spec);
    if (rc) return rc;
    char *mk = s3_key(s, db, id, BACKUP_META_NAME), *dk = s3_key(s, db, id, BACKUP_DATA_NAME);
    char *ik = s3_key(s, db, id, BACKUP_INDEX_NAME);
    rc = !mk || !dk || !ik ? err_set(JVDB_ENOMEM, "out of memory") : s3_delete_key(s, mk);
    if (!rc) rc = s3_delete_key(s, dk);
    if (!rc) rc = s3_delete_key(s, ik); /* absent when the backup carries no graph: fine */
    free(mk);
    free(dk);
    free(ik);
    return rc;
}

/* repo_ops cleanup: deletes the data and graph objects of backups that never got a backup.json (a create
 * that died) once they are max_age_s old, so no create still running owns them. */
static void repo_s3_cleanup(jvdb_repo *r, const char *db, int64_t max_age_s)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    struct s3_objs a;
    if (s3_objects(s, db, &a)) return;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < a.n; i++) {
        if (a.v[i].has_meta || a.v[i].data_size < 0 || now - a.v[i].mtime < max_age_s) continue;
        char *dk = s3_key(s, db, a.v[i].id, BACKUP_DATA_NAME), *ik = s3_key(s, db, a.v[i].id, BACKUP_INDEX_NAME);
        if (dk) s3_delete_key(s, dk);
        if (ik) s3_delete_key(s, ik);
        free(dk);
        free(ik);
    }
    free(a.v);
}

/* repo_ops close: releases the curl handle and frees the repository's settings. */
static void repo_s3_close(jvdb_repo *r)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    if (s->curl) curl_easy_cleanup(s->curl);
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->access);
    free(s->secret);
    free(s->token);
    free(s->base.spec);
    free(s);
}

/* Buckets are made by their owner, never by us; a prefix needs no creating. */
static int repo_s3_init(jvdb_repo *r)
{
    (void)r;
    return JVDB_OK;
}

/* <prefix>/<name>: a repository-wide object (the encryption marker, crypt.c).  Listing never
 * mistakes it for a database: database names are the segment before a '/'. */
static int repo_s3_read_object(jvdb_repo *r, const char *name, char **buf, size_t *len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    return s3_get_whole(s, s3_key(s, NULL, NULL, name), S3_MAX_META, buf, len);
}

/* repo_ops write_object: PUTs <prefix>/<name>, which S3 replaces atomically. */
static int repo_s3_write_object(jvdb_repo *r, const char *name, const void *buf, size_t len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *key = s3_key(s, NULL, NULL, name);
    if (!key) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = s3_put_small(s, key, buf, len);
    free(key);
    return rc;
}

/* ------------------------------------------------------------------ objects of a database (wal.c) */

struct s3_objlist {
    size_t skip; /* length of "<prefix>/<database>/" */
    repo_obj_fn fn;
    void *arg;
};

/* Hands each listed key to the caller with the database folder cut off. */
static int s3_collect_named(void *arg, const char *key, int64_t size, int64_t mtime)
{
    (void)mtime;
    struct s3_objlist *a = arg;
    if (strlen(key) <= a->skip || size < 0) return 0;
    return a->fn(a->arg, key + a->skip, size);
}

/* Lists the keys below the database folder that start with `prefix`. */
static int repo_s3_obj_list(jvdb_repo *r, const char *db, const char *prefix, repo_obj_fn fn, void *arg)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *dbp = s3_key(s, db, NULL, ""), *pre = s3_key(s, db, NULL, prefix);
    int rc = JVDB_OK;
    if (!dbp || !pre) rc = err_set(JVDB_ENOMEM, "out of memory");
    else {
        struct s3_objlist a = { strlen(dbp), fn, arg };
        rc = s3_list(s, pre, 0, s3_collect_named, &a);
    }
    free(dbp);
    free(pre);
    return rc;
}

/* Lists the keys below the database folder that start with `prefix` and sort after `after`: one
 * ListObjectsV2 with start-after, so a poll of a long log returns only what is new. */
static int repo_s3_obj_list_after(jvdb_repo *r, const char *db, const char *prefix, const char *after, repo_obj_fn fn,
                                  void *arg)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *dbp = s3_key(s, db, NULL, ""), *pre = s3_key(s, db, NULL, prefix), *from = s3_key(s, db, NULL, after);
    int rc = JVDB_OK;
    if (!dbp || !pre || !from) rc = err_set(JVDB_ENOMEM, "out of memory");
    else {
        struct s3_objlist a = { strlen(dbp), fn, arg };
        rc = s3_list_from(s, pre, from, 0, s3_collect_named, &a);
    }
    free(dbp);
    free(pre);
    free(from);
    return rc;
}

/* Writes an object of the database folder with one PUT. */
static int repo_s3_obj_put(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *key = s3_key(s, db, NULL, name);
    if (!key) return err_set(JVDB_ENOMEM, "out of memory");
    /* One PUT: S3 shows an object whole or not at all. */
    int rc = s3_put_small(s, key, buf, len);
    free(key);
    return rc;
}

/* Reads an object of the database folder whole. */
static int repo_s3_obj_get(jvdb_repo *r, const char *db, const char *name, char **buf, size_t *len)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    return s3_get_whole(s, s3_key(s, db, NULL, name), 0, buf, len);
}

/* Deletes an object of the database folder (absent: fine). */
static int repo_s3_obj_delete(jvdb_repo *r, const char *db, const char *name)
{
    struct repo_s3 *s = (struct repo_s3 *)r;
    char *key = s3_key(s, db, NULL, name);
    if (!key) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = s3_delete_key(s, key);
    free(key);
    return rc;
}

static const struct repo_ops repo_s3_ops = {
    "s3",
    repo_s3_init,
    repo_s3_list_databases,
    repo_s3_list_backups,
    repo_s3_read_meta,
    repo_s3_open_data,
    repo_s3_stage_begin,
    repo_s3_remove,
    repo_s3_cleanup,
    repo_s3_close,
    repo_s3_read_object,
    repo_s3_write_object,
    repo_s3_read_extra,
    repo_s3_obj_list,
    repo_s3_obj_put,
    repo_s3_obj_get,
    repo_s3_obj_delete,
    /* No exclusive create: a conditional PUT (If-None-Match: *) is ignored by stores that do not know it
     * (s3rver 3.7.1 checks it on GET only) and would overwrite silently; fencing epochs are claimed by
     * listing instead (wal.c). */
    NULL,
    repo_s3_obj_list_after,
};

/* The first non-empty of the given value, then environment variables env1 and env2, copied; NULL if none. */
static char *s3_pick(const char *given, const char *env1, const char *env2)
{
    const char *v = given;
    if (!v || !*v) v = env1 ? getenv(env1) : NULL;
    if ((!v || !*v) && env2) v = getenv(env2);
    return v && *v ? strdup(v) : NULL;
}

int repo_s3_open(const char *bucket, const char *prefix, const jvdb_repo_options *opts, jvdb_repo **out)
{
    jvdb_repo_options none = { 0 };
    if (!opts) opts = &none;
    if (!*bucket) return err_set(JVDB_EINVAL, "S3 repository: the bucket name is empty (write s3://bucket/prefix)");
    pthread_once(&s3_once, s3_global_init);
    struct repo_s3 *s = calloc(1, sizeof *s);
    if (!s) return err_set(JVDB_ENOMEM, "out of memory");
    s->base.ops = &repo_s3_ops;
    s->bucket = strdup(bucket);
    s->prefix = strdup(prefix);
    s->region = s3_pick(opts->region, "AWS_REGION", "AWS_DEFAULT_REGION");
    if (!s->region) s->region = strdup("us-east-1");
    s->endpoint = s3_pick(opts->endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
    s->access = s3_pick(opts->access_key, "AWS_ACCESS_KEY_ID", NULL);
    s->secret = s3_pick(opts->secret_key, "AWS_SECRET_ACCESS_KEY", NULL);
    s->token = s3_pick(opts->session_token, "AWS_SESSION_TOKEN", NULL);
    s->part_size = opts->part_size ? opts->part_size : S3_DEFAULT_PART;
    if (s->part_size < S3_MIN_PART) s->part_size = S3_MIN_PART;
    if (!s->endpoint && s->region) {
        char ep[256];
        snprintf(ep, sizeof ep, "https://s3.%s.amazonaws.com", s->region);
        s->endpoint = strdup(ep);
    }
    size_t bl = strlen(bucket) + strlen(prefix) + 8;
    s->base.spec = malloc(bl);
    if (s->base.spec) snprintf(s->base.spec, bl, "s3://%s%s%s", bucket, *prefix ? "/" : "", prefix);
    s->curl = curl_easy_init();
    if (!s->bucket || !s->prefix || !s->region || !s->endpoint || !s->base.spec || !s->curl) {
        repo_s3_close(&s->base);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    size_t el = strlen(s->endpoint);
    while (el && s->endpoint[el - 1] == '/') s->endpoint[--el] = '\0';
    if (!s->access || !s->secret) {
        repo_s3_close(&s->base);
        return err_set(JVDB_EINVAL,
                       "S3 repository s3://%s: no credentials (give access and secret keys, or set "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                       bucket);
    }
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", s->region);
    *out = &s->base;
    return JVDB_OK;
}

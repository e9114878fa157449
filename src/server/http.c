/*
 * http.c — the libmicrohttpd glue: the daemon (internal thread pool), per-request state, body
 * accumulation with the size and memory limits, answers that can be given before the body arrives
 * (400 for ambiguous framing or query arguments, 401, 413, 503 while stopping or out of budget),
 * request-head deadlines, one log line and one metrics observation per finished request, and the
 * graceful stop (stop accepting, wait for in-flight requests, close).
 *
 * MHD calls the access handler several times per request: once when the headers are in, once per
 * piece of body, and once more when the body is complete; only the last call may answer (except
 * the first, which may answer early, after which MHD discards the body and closes the connection).
 * Routes run synchronously on the pool thread: they block in the library (fdatasync shared by group
 * commit), which is why the pool is larger than the core count.
 *
 * URLs are split and percent-decoded here, per path segment, rather than by MHD: MHD's own decoding
 * would turn an id containing "%2F" into a '/' and change the route.
 *
 * What this file guarantees against hostile clients (docs/API.md, "Limits"):
 *  (1) Framing is never ambiguous: a request with Content-Length and Transfer-Encoding together,
 *      Content-Length values that disagree, or a transfer coding other than a single "chunked" is
 *      answered 400/501 with Connection: close before any body is read (RFC 9112 6.1, 6.3).
 *  (2) A connection that has not delivered a complete request head within --header-timeout of
 *      being accepted (or within --idle-timeout of its previous answer, when kept alive) is shut
 *      down, however slowly it trickles bytes: MHD's own timeout only measures inactivity.
 *  (3) Request bodies held in memory, over all connections, never exceed --max-buffered; a body
 *      that would pass it is dropped and answered 503.  Bytes are charged as they arrive; before a
 *      route runs, an estimate of what decoding the body may allocate is charged too (413 when it
 *      could never fit), and both stay charged until the request has been answered: so the budget
 *      bounds the memory of bodies and of the trees routes decode from them, not only bytes.
 *  (4) Every error answer is the documented JSON, including the ones MHD builds itself (see
 *      "MHD's own error answers" below).
 *  (5) With --tls-cert/--tls-key the port speaks only TLS (MHD over GnuTLS): a plain-HTTP client
 *      gets no answer, its handshake fails and the connection is closed.  The certificate is handed
 *      to GnuTLS per handshake by a callback, so SIGHUP can swap in a renewed one without a restart;
 *      a handshake keeps the credentials it was given (old ones are freed only at stop).
 *  (6) The key check (auth.c) and CORS preflights are answered on the request head, before any
 *      body is read; the access log names the key id that made each request, never the key.
 *  (7) Every request has an id: the client's X-Request-Id when it is a short token
 *      ([A-Za-z0-9._:-]{1,64}), else one made here (unique across restarts); it is echoed in the
 *      X-Request-Id answer header and written in the access log line (a field with --log-format json).
 *  (8) A second daemon serves the same routes on the unix socket <data>/jvdb.sock (mode 0600, the
 *      server's user only), so the jvdb CLI can work while the server holds the data directory.
 *      Whoever can open that socket could open the data directory's files: requests on it are
 *      admin without a key (docs/CLI.md).  A stale socket left by a crash is replaced at start;
 *      the socket is removed at a clean stop, before the directory is released.
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/grow.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define HTTP_LOG_PATH_MAX 512
#define HTTP_REAP_TICK_MS 100 /* how late past its deadline a stalled connection may be closed */

/* A connection waiting for a complete request head, on one of the two deadline lists. */
struct http_conn {
    struct http_conn *prev, *next;
    int fd;
    int list;            /* HTTP_WAIT_NEW, HTTP_WAIT_NEXT, or -1 while a request is in */
    int64_t deadline_ns; /* monotonic */
};

enum { HTTP_WAIT_NEW, HTTP_WAIT_NEXT, HTTP_WAIT_LISTS };

struct http_server {
    struct http_hooks hooks; /* the key check and the metrics observation, given by server.c */
    struct MHD_Daemon *daemon;
    struct MHD_Daemon *local; /* the unix-socket daemon (invariant 8), NULL when none */
    char local_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    atomic_long inflight; /* requests whose headers arrived and that have not completed */
    pthread_mutex_t mu;
    pthread_cond_t idle;           /* signalled when inflight drops to zero while stopping */
    atomic_uint_fast64_t buffered; /* request body bytes held, over all connections (invariant 3) */
    /* Invariant 2.  Each list is ordered by deadline because every entry of a list gets the same
     * delay from "now"; the reaper only ever looks at the heads.  conn_mu is also what makes the
     * reaper's shutdown() safe: MHD reports a connection closed (which takes conn_mu) before it
     * closes the socket, so a descriptor found on a list under conn_mu is still that connection's. */
    pthread_mutex_t conn_mu;
    pthread_cond_t conn_cv;
    struct http_conn *head[HTTP_WAIT_LISTS], *tail[HTTP_WAIT_LISTS];
    int64_t wait_ns[HTTP_WAIT_LISTS];
    int reaper_stop;
    int reaper_started;
    pthread_t reaper;
    atomic_uint_fast64_t reaped; /* connections shut down for a late request head */
    int tls;                     /* the port speaks TLS (invariant 5) */
    uint64_t reqid_base;         /* random at start: request ids differ across restarts */
    atomic_uint_fast64_t reqid_next;
};

/* Per-request state: MHD's con_cls. */
struct http_call {
    int64_t start_ns;
    int local; /* came through the local socket (invariant 8: its file mode is the check) */
    char method[16];
    char *path; /* copy for the log line, which is written after MHD frees the URL */
    char *body;
    size_t len, cap;
    uint64_t charged; /* bytes counted in http_server.buffered for this request */
    int too_large;    /* the body passed the limit: it is discarded, the answer is 413 */
    int over_budget;  /* the body would pass --max-buffered: discarded, the answer is 503 */
    uint64_t expect;  /* the Content-Length, 0 when none (chunked) */
    int status;       /* the answer's status, 0 while none */
    int route;
    char who[17];     /* the key id (or "-", "bootstrap") for the access log */
    const char *cors; /* the allowed Origin to echo in the answer, or NULL */
    char reqid[65];   /* invariant 7 */
};

/* ---------------------------------------------------------------- request accessors */

const char *http_header(const struct http_req *rq, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)rq->conn, MHD_HEADER_KIND, name);
}

/* The value of one hex digit, or -1. */
static int http_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long http_unescape(char *s, int plus_is_space)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '%') {
            int hi = http_hexval(r[1]), lo = hi >= 0 ? http_hexval(r[2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else if (*r == '+' && plus_is_space) {
            *w++ = ' ';
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
    return (long)(w - s);
}

const char *http_query(const struct http_req *rq, const char *name, char *buf, size_t cap)
{
    const char *v = MHD_lookup_connection_value((struct MHD_Connection *)rq->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v) return NULL;
    if (strlen(v) >= cap) return NULL;
    strcpy(buf, v);
    long n = http_unescape(buf, 1);
    if (n < 0 || (size_t)n != strlen(buf)) return NULL; /* a bad escape or an embedded NUL */
    return buf;
}

/* ---------------------------------------------------------------- query arguments */

#define HTTP_QUERY_ARGS_MAX 32
#define HTTP_QUERY_KEY_MAX  64

struct http_args_check {
    char keys[HTTP_QUERY_ARGS_MAX][HTTP_QUERY_KEY_MAX + 1];
    int n;
    struct http_resp *rs; /* set to the 400 answer by the first bad argument */
};

/* Decodes one key or value into buf; 0, or -1 after writing the 400 that names the argument. */
static int http_arg_decode(struct http_args_check *st, const char *key_shown, const char *what, const char *raw,
                           char *buf, size_t max)
{
    size_t rl = strlen(raw);
    char tmp[HTTP_QUERY_MAX * 3 + 1];
    if (rl >= sizeof tmp) {
        http_error(st->rs, 400, "INVALID_ARGUMENT", "query argument '%.64s' has a %s of %zu bytes; the limit is %d",
                   key_shown, what, rl, (int)max);
        return -1;
    }
    memcpy(tmp, raw, rl + 1);
    long n = http_unescape(tmp, 1);
    if (n < 0) {
        http_error(st->rs, 400, "INVALID_ARGUMENT", "query argument '%.64s' has a bad percent-escape in its %s",
                   key_shown, what);
        return -1;
    }
    if ((size_t)n != strlen(tmp)) {
        http_error(st->rs, 400, "INVALID_ARGUMENT", "query argument '%.64s' has a NUL byte (%%00) in its %s", key_shown,
                   what);
        return -1;
    }
    if ((size_t)n > max) {
        http_error(st->rs, 400, "INVALID_ARGUMENT", "query argument '%.64s' has a %s of %ld bytes; the limit is %d",
                   key_shown, what, n, (int)max);
        return -1;
    }
    if (buf) memcpy(buf, tmp, (size_t)n + 1);
    return 0;
}

/* MHD_get_connection_values callback: every argument decodes cleanly, fits, and comes once. */
static enum MHD_Result http_arg_check(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct http_args_check *st = cls;
    if (st->n >= HTTP_QUERY_ARGS_MAX) {
        http_error(st->rs, 400, "INVALID_ARGUMENT", "more than %d query arguments", HTTP_QUERY_ARGS_MAX);
        return MHD_NO;
    }
    char *k = st->keys[st->n];
    if (http_arg_decode(st, key, "name", key, k, HTTP_QUERY_KEY_MAX)) return MHD_NO;
    for (int i = 0; i < st->n; i++) {
        if (!strcmp(st->keys[i], k)) {
            http_error(st->rs, 400, "INVALID_ARGUMENT", "query argument '%s' is given more than once", k);
            return MHD_NO;
        }
    }
    if (value && http_arg_decode(st, k, "value", value, NULL, HTTP_QUERY_MAX)) return MHD_NO;
    st->n++;
    return MHD_YES;
}

/* 1 after writing a 400 for a query argument that is badly escaped, holds a NUL, is too long or
 * is repeated: routes then only ever see arguments http_query() can return whole. */
static int http_bad_args(struct MHD_Connection *conn, struct http_resp *rs)
{
    struct http_args_check *st = calloc(1, sizeof *st);
    if (!st) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return 1;
    }
    st->rs = rs;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, http_arg_check, st);
    free(st);
    return rs->status != 0;
}

/* MHD would decode the URL before we see it; keep it as sent (see the file comment). */
static size_t http_keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---------------------------------------------------------------- MHD's own error answers */

/* MHD answers some malformed requests itself, before the access handler runs or in the middle of a
 * body: a bad request line (400), a request line or headers larger than its 32 KiB buffer (414,
 * 431), a bad Content-Length (400, 413), bad chunked framing (400, 413), an unsupported HTTP
 * version (505).  libmicrohttpd 0.9.75 has no option to change those answers: they are
 * compile-time HTML pages, queued through the library's own exported MHD_create_response_from_buffer
 * and MHD_queue_response.  Those calls go through the library's PLT, so the definitions below,
 * being in the executable, are the ones it calls (ELF symbol interposition, as malloc replacements
 * work).  They pass everything through to the library, except a response made from one of MHD's
 * HTML pages: that one is swapped, when queued, for the documented {"error","message"} JSON of the
 * same status.  If a later libmicrohttpd stopped calling through its PLT the pages would simply be
 * HTML again; the e2e test test_adversarial_http.py notices. */

typedef struct MHD_Response *(*http_create_fn)(size_t, void *, enum MHD_ResponseMemoryMode);
typedef enum MHD_Result (*http_queue_fn)(struct MHD_Connection *, unsigned int, struct MHD_Response *);

static http_create_fn http_real_create;
static http_queue_fn http_real_queue;
static pthread_once_t http_real_once = PTHREAD_ONCE_INIT;
/* The HTML response MHD just made on this thread, and its text, until MHD queues it. */
static _Thread_local struct MHD_Response *http_mhd_page;
static _Thread_local const char *http_mhd_page_text;

/* Finds libmicrohttpd's own response functions behind the executable's interposed definitions (once). */
static void http_resolve_real(void)
{
    /* dlsym hands back an object pointer; POSIX guarantees it converts to a function pointer. */
    void *c = dlsym(RTLD_NEXT, "MHD_create_response_from_buffer");
    void *q = dlsym(RTLD_NEXT, "MHD_queue_response");
    memcpy(&http_real_create, &c, sizeof c);
    memcpy(&http_real_queue, &q, sizeof q);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer, enum MHD_ResponseMemoryMode mode)
{
    pthread_once(&http_real_once, http_resolve_real);
    if (!http_real_create) return NULL;
    struct MHD_Response *r = http_real_create(size, buffer, mode);
    if (r && mode == MHD_RESPMEM_PERSISTENT && buffer && size >= 6 && !memcmp(buffer, "<html>", 6)) {
        http_mhd_page = r;
        http_mhd_page_text = buffer;
    }
    return r;
}

/* The error code and message of MHD's answer with this status and page text. */
static void http_mhd_error(struct http_resp *rs, unsigned status, const char *page)
{
    switch (status) {
    case 400:
        if (strstr(page, "chunked"))
            http_error(rs, 400, "BAD_REQUEST", "the chunked body is malformed (bad chunk size or chunk framing)");
        else if (strstr(page, "Content-Length"))
            http_error(rs, 400, "BAD_REQUEST", "the Content-Length header is not a decimal number");
        else if (strstr(page, "Host")) http_error(rs, 400, "BAD_REQUEST", "an HTTP/1.1 request needs a Host header");
        else http_error(rs, 400, "BAD_REQUEST", "the request line or a header line is malformed");
        break;
    case 413:
        if (strstr(page, "chunk size"))
            http_error(rs, 413, "PAYLOAD_TOO_LARGE", "a chunk of the chunked body is larger than the server accepts");
        else http_error(rs, 413, "PAYLOAD_TOO_LARGE", "the Content-Length is larger than the server accepts");
        break;
    case 414:
        http_error(rs, 414, "URI_TOO_LONG",
                   "the request line is longer than the server's request-head buffer (32 KiB)");
        break;
    case 431:
        http_error(rs, 431, "HEADERS_TOO_LARGE",
                   "the request headers are larger than the server's request-head buffer "
                   "(32 KiB)");
        break;
    case 505: http_error(rs, 505, "HTTP_VERSION_NOT_SUPPORTED", "only HTTP/1.0 and HTTP/1.1 are served"); break;
    default: http_error(rs, (int)status, "INTERNAL", "the HTTP layer failed to process the request"); break;
    }
}

/* libmicrohttpd 0.9.75 sends the status line and headers of its answer to a bad Content-Length
 * twice (after queueing it, its state machine goes on as if no answer were queued), which leaves
 * the client a garbled answer.  For that one case the JSON answer is written to the socket here,
 * whole (a few hundred bytes into the empty send buffer of a connection that has not been answered
 * yet), and MHD_NO makes MHD close the connection instead of sending anything itself. */
static enum MHD_Result http_answer_and_close(struct MHD_Connection *connection, struct http_resp *rs)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      rs->status, rs->status == 413 ? "Content Too Large" : "Bad Request", rs->len);
    /* Over TLS the socket carries records, not text: close without an answer. */
    const union MHD_ConnectionInfo *tls = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (tls && tls->tls_session) i = NULL;
    if (i && rs->body && hn > 0 && (size_t)hn < sizeof head) {
        struct iovec iov[2] = { { head, (size_t)hn }, { rs->body, rs->len } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        if (sendmsg(i->connect_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            log_debug("http: cannot answer: %s", strerror(errno));
    }
    free(rs->body);
    return MHD_NO;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
    pthread_once(&http_real_once, http_resolve_real);
    if (!http_real_queue) return MHD_NO;
    if (!response || response != http_mhd_page) return http_real_queue(connection, status_code, response);
    const char *page = http_mhd_page_text;
    http_mhd_page = NULL;
    http_mhd_page_text = NULL;
    struct http_resp rs = { 0 };
    http_mhd_error(&rs, status_code, page);
    if (strstr(page, "Content-Length")) return http_answer_and_close(connection, &rs);
    struct MHD_Response *json = rs.body ? http_real_create(rs.len, rs.body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!json) {
        free(rs.body);
        return http_real_queue(connection, status_code, response); /* the HTML page, then */
    }
    MHD_add_response_header(json, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(json, MHD_HTTP_HEADER_CONNECTION, "close");
    /* MHD destroys its own page after this returns; the queued JSON holds its own reference. */
    enum MHD_Result ret = http_real_queue(connection, status_code, json);
    MHD_destroy_response(json);
    return ret;
}

/* ---------------------------------------------------------------- CORS */

/* The configured origin that admits this request's Origin header, or NULL. */
static const char *http_cors_match(struct server *s, struct MHD_Connection *conn)
{
    if (!s->cfg.ncors) return NULL;
    const char *o = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!o) return NULL;
    for (size_t i = 0; i < s->cfg.ncors; i++) {
        if (!strcmp(s->cfg.cors_origins[i], "*")) return "*";
        if (!strcasecmp(s->cfg.cors_origins[i], o)) return s->cfg.cors_origins[i];
    }
    return NULL;
}

/* Answers a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method): 204 with the
 * permissions for an allowed origin, 403 for another one.  Preflights carry no credentials, so they
 * are answered before the key check.  Returns 0 when the request is not a preflight. */
static int http_preflight(struct server *s, struct MHD_Connection *conn, struct http_call *call, struct http_resp *rs)
{
    if (strcmp(call->method, "OPTIONS") != 0 || !s->cfg.ncors) return 0;
    const char *o = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *m = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
    if (!o || !m) return 0;
    if (!call->cors) {
        http_error(rs, 403, "FORBIDDEN", "origin '%.200s' is not allowed (--cors-origin)", o);
        return 1;
    }
    http_reply_text(rs, 204, "text/plain", strdup(""), 0);
    rs->preflight = 1;
    return 1;
}

/* Adds the CORS headers of an answer to an allowed origin. */
static void http_cors_headers(struct MHD_Response *r, struct http_call *call, const struct http_resp *rs)
{
    if (!call->cors) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", call->cors);
    if (strcmp(call->cors, "*") != 0) MHD_add_response_header(r, "Vary", "Origin");
    if (rs->preflight) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-API-Key");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    } else {
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate");
    }
}

/* ---------------------------------------------------------------- answering */

/* A streamed answer's producer, as libmicrohttpd calls it. */
struct http_stream {
    long (*fn)(void *arg, char *buf, size_t max);
    void (*free)(void *arg);
    void *arg;
};

/* libmicrohttpd's content reader: the route's producer (-1 end, -2 error map onto MHD's codes). */
static ssize_t http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct http_stream *st = cls;
    long n = st->fn(st->arg, buf, max);
    if (n == -1) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return (ssize_t)n;
}

/* libmicrohttpd is done with a streamed answer (sent whole, or the connection went away). */
static void http_stream_free(void *cls)
{
    struct http_stream *st = cls;
    st->free(st->arg);
    free(st);
}

/* The response object of a streamed answer (chunked, 64 KiB blocks); NULL when out of memory, after
 * freeing the producer. */
static struct MHD_Response *http_stream_response(struct http_resp *rs)
{
    struct http_stream *st = malloc(sizeof *st);
    struct MHD_Response *r = NULL;
    if (st) {
        *st = (struct http_stream){ rs->stream, rs->stream_free, rs->stream_arg };
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, http_stream_read, st, http_stream_free);
        if (!r) free(st);
    }
    if (!r) rs->stream_free(rs->stream_arg);
    rs->stream = NULL;
    return r;
}

/* Queues a route's answer: the buffer or stream, with content type, Allow, Connection, WWW-Authenticate, Retry-
 * After, CORS and request-id headers; a route that gave none answers 500. */
static enum MHD_Result http_send(struct MHD_Connection *conn, struct http_call *call, struct http_resp *rs)
{
    if (!rs->status) http_error(rs, 500, "INTERNAL", "the route gave no answer");
    struct MHD_Response *r = NULL;
    if (rs->stream) {
        if (!(r = http_stream_response(rs))) return MHD_NO;
        goto headers;
    }
    if (!rs->body) {
        /* Every answer has a body; only an allocation failure gets here. */
        rs->body = strdup("{\"error\":\"OUT_OF_MEMORY\",\"message\":\"out of memory\"}");
        rs->len = rs->body ? strlen(rs->body) : 0;
        rs->status = 500;
        if (!rs->body) return MHD_NO;
    }
    r = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(rs->body);
        return MHD_NO;
    }
    rs->body = NULL;
headers:
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type ? rs->content_type : "application/json");
    if (rs->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
    if (rs->close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (rs->auth_challenge) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"jvdb\"");
    http_cors_headers(r, call, rs);
    if (rs->retry_after_s) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", rs->retry_after_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    MHD_add_response_header(r, "X-Request-Id", call->reqid);
    call->status = rs->status;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---------------------------------------------------------------- framing (invariant 1) */

struct http_framing {
    int n_cl, n_te;
    int cl_differ;
    char cl[32]; /* the first Content-Length, as sent (truncated) */
    char te[64]; /* the first Transfer-Encoding */
};

/* Header iterator: counts Content-Length and Transfer-Encoding headers and notes conflicting lengths, for the
 * smuggling checks. */
static enum MHD_Result http_framing_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct http_framing *f = cls;
    if (!value) value = "";
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (f->n_cl++ == 0) snprintf(f->cl, sizeof f->cl, "%s", value);
        else if (strcmp(f->cl, value) != 0) f->cl_differ = 1;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        if (f->n_te++ == 0) snprintf(f->te, sizeof f->te, "%s", value);
    }
    return MHD_YES;
}

/* 1 after writing the answer to a request whose body length is ambiguous (RFC 9112 6.1, 6.3):
 * MHD 0.9.75 would take the first Content-Length, or let Transfer-Encoding silently win over it,
 * where a proxy in front may have read the other — the root of request smuggling. */
static int http_bad_framing(struct MHD_Connection *conn, const char *version, struct http_resp *rs)
{
    struct http_framing f = { 0 };
    MHD_get_connection_values(conn, MHD_HEADER_KIND, http_framing_header, &f);
    if (f.n_te && f.n_cl)
        http_error(rs, 400, "BAD_REQUEST", "the request has both Content-Length and Transfer-Encoding; send one");
    else if (f.cl_differ) http_error(rs, 400, "BAD_REQUEST", "the request has Content-Length headers that disagree");
    else if (f.n_te > 1 || (f.n_te && strcasecmp(f.te, "chunked") != 0))
        http_error(rs, 501, "NOT_IMPLEMENTED", "Transfer-Encoding '%s' is not supported; only 'chunked' is",
                   f.n_te > 1 ? "(several headers)" : f.te);
    else if (f.n_te && !strcmp(version, MHD_HTTP_VERSION_1_0))
        http_error(rs, 400, "BAD_REQUEST", "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    else return 0;
    rs->close = 1;
    return 1;
}

/* ---------------------------------------------------------------- body memory (invariant 3) */

/* Charges n more bytes to the global budget; 0, or -1 when they do not fit. */
static int http_charge(struct server *s, struct http_call *call, uint64_t n)
{
    atomic_uint_fast64_t *b = &s->http->buffered;
    uint64_t cur = atomic_load(b);
    do {
        if (cur + n > s->cfg.max_buffered) return -1;
    } while (!atomic_compare_exchange_weak(b, &cur, cur + n));
    call->charged += n;
    return 0;
}

/* Returns the bytes the call had charged against --max-buffered. */
static void http_uncharge(struct server *s, struct http_call *call)
{
    if (call->charged) atomic_fetch_sub(&s->http->buffered, call->charged);
    call->charged = 0;
}

/* Answers 503 SERVER_BUSY (closing the connection, Retry-After 1) when the body buffer budget is spent. */
static void http_busy(struct server *s, struct http_resp *rs)
{
    rs->close = 1;
    rs->retry_after_s = 1;
    http_error(rs, 503, "SERVER_BUSY",
               "the memory for request bodies (--max-buffered, %" PRIu64 " bytes) is in use; try again shortly",
               s->cfg.max_buffered);
}

/* Takes one piece of body: keeps it, or drops the whole body once it passes a limit. */
static int http_take_body(struct server *s, struct http_call *call, const char *data, size_t n)
{
    if (call->too_large || call->over_budget) return 0;
    if (call->len + n > s->cfg.max_body) {
        /* A chunked body with no Content-Length: read and drop the rest, answer 413 at the end. */
        call->too_large = 1;
    } else if (http_charge(s, call, n)) {
        call->over_budget = 1;
    } else {
        /* A Content-Length body is allocated once at its full size (the first capacity: untouched
         * pages cost no memory until data arrives); a chunked one grows by doubling. */
        char *nb =
            grow_array(call->body, &call->cap, call->len + n + 1, 1, call->expect ? (size_t)call->expect + 1 : 4096);
        if (!nb) return -1;
        call->body = nb;
        memcpy(call->body + call->len, data, n);
        call->len += n;
        call->body[call->len] = 0;
        return 0;
    }
    free(call->body);
    call->body = NULL;
    call->cap = 0;
    http_uncharge(s, call);
    return 0;
}

/* What decoding the body as JSON may cost in memory, from one pass over its bytes: a jansson tree
 * takes about 42 bytes per number or literal, 90 + twice the length per string (the lexer's buffer
 * and the copy), 230 per object and 140 per
 * array (measured with libjansson 2.14; the weights below round up).  A 32 MiB body of "{}," would
 * otherwise decode into 2.5 GB; this is what lets the budget bound decoded trees, not only bytes. */
static uint64_t http_decode_cost(const char *b, size_t n)
{
    uint64_t cost = 0;
    int in_str = 0, in_tok = 0;
    size_t slen = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') {
                in_str = 0;
                cost += 96 + 2 * (uint64_t)slen; /* the lexer's buffer, then the string's copy */
            }
            slen++;
            continue;
        }
        switch (ch) {
        case '"': in_str = 1, slen = 0, in_tok = 0; break;
        case '{': cost += 240, in_tok = 0; break;
        case '[': cost += 144, in_tok = 0; break;
        case ',':
        case ':':
        case ']':
        case '}':
        case ' ':
        case '\t':
        case '\r':
        case '\n': in_tok = 0; break;
        default:
            if (!in_tok) cost += 48;
            in_tok = 1;
        }
    }
    return cost;
}

/* Charges the decoding estimate before a route runs: 0, or 1 after writing 413 (it could never fit)
 * or 503 (it does not fit now). */
static int http_charge_decode(struct server *s, struct http_call *call, struct http_resp *rs)
{
    if (!call->len) return 0;
    uint64_t cost = http_decode_cost(call->body, call->len);
    if (cost + call->charged > s->cfg.max_buffered) {
        rs->close = 1;
        http_error(rs, 413, "PAYLOAD_TOO_LARGE",
                   "decoding this body of %zu bytes would take about %" PRIu64 " MiB of memory; the limit "
                   "(--max-buffered) is %" PRIu64 " MiB",
                   call->len, (cost + call->charged + (1 << 20) - 1) >> 20, s->cfg.max_buffered >> 20);
        return 1;
    }
    if (http_charge(s, call, cost)) {
        http_busy(s, rs);
        return 1;
    }
    return 0;
}

/* Answers given on the first call, before any body is read. */
static int http_early_answer(struct server *s, struct MHD_Connection *conn, struct http_call *call, const char *url,
                             const char *version, struct http_resp *rs)
{
    struct http_req rq = { .method = call->method, .path = url, .conn = conn };
    if (http_bad_framing(conn, version, rs)) return 1;
    if (atomic_load(&s->stopping)) {
        rs->close = 1;
        http_error(rs, 503, "SHUTTING_DOWN", "the server is shutting down");
        return 1;
    }
    if (http_preflight(s, conn, call, rs)) return 1;
    if (call->local) {
        snprintf(call->who, sizeof call->who, "local"); /* invariant 8: the socket's mode is the check */
    } else if (s->http->hooks.check(s, &rq, call->route, rs, call->who)) {
        rs->close = 1; /* the body, if any, is not read */
        return 1;
    }
    if (http_bad_args(conn, rs)) {
        rs->close = 1;
        return 1;
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == ERANGE || n > s->cfg.max_body) {
            rs->close = 1;
            http_error(rs, 413, "PAYLOAD_TOO_LARGE", "request body of %s bytes exceeds the limit of %" PRIu64 " bytes",
                       cl, s->cfg.max_body);
            return 1;
        }
        /* Refuse now rather than after reading it, when the body cannot fit in the budget as it stands. */
        if (atomic_load(&s->http->buffered) + n > s->cfg.max_buffered) {
            http_busy(s, rs);
            return 1;
        }
        call->expect = n;
    }
    return 0;
}

static void http_head_done(struct server *s, struct MHD_Connection *conn);

/* Invariant 7: the client's id when it is a short token, else a fresh one. */
static void http_request_id(struct server *s, struct MHD_Connection *conn, struct http_call *call)
{
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    if (n && n < sizeof call->reqid &&
        strspn(given, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n) {
        memcpy(call->reqid, given, n + 1);
        return;
    }
    uint64_t id = s->http->reqid_base + atomic_fetch_add(&s->http->reqid_next, 1);
    snprintf(call->reqid, sizeof call->reqid, "%016" PRIx64, id);
}

/* MHD's request callback: on the first call sets up the call (route, CORS, request id) and may answer early; then
 * buffers the body; at the end runs the route and sends its answer. */
static enum MHD_Result http_handle(struct server *s, int local, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    struct http_call *call = *con_cls;
    if (!call) {
        http_head_done(s, conn);
        call = calloc(1, sizeof *call);
        if (!call) return MHD_NO;
        call->start_ns = clock_mono_ns();
        snprintf(call->method, sizeof call->method, "%s", method);
        size_t ulen = strnlen(url, HTTP_LOG_PATH_MAX);
        call->path = strndup(url, ulen);
        call->route = s->routes->find(method, url);
        call->cors = http_cors_match(s, conn);
        http_request_id(s, conn, call);
        snprintf(call->who, sizeof call->who, "-");
        call->local = local;
        *con_cls = call;
        atomic_fetch_add(&s->http->inflight, 1);
        struct http_resp rs = { 0 };
        if (http_early_answer(s, conn, call, url, version, &rs)) return http_send(conn, call, &rs);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return http_take_body(s, call, upload_data, n) ? MHD_NO : MHD_YES;
    }
    struct http_resp rs = { 0 };
    if (call->too_large) {
        rs.close = 1;
        http_error(&rs, 413, "PAYLOAD_TOO_LARGE", "request body exceeds the limit of %" PRIu64 " bytes",
                   s->cfg.max_body);
    } else if (call->over_budget) {
        http_busy(s, &rs);
    } else if (http_charge_decode(s, call, &rs)) {
        /* answered */
    } else {
        struct http_req rq = { .method = method, .path = url, .body = call->body, .body_len = call->len, .conn = conn };
        call->route = s->routes->dispatch(s, &rq, &rs);
        for (int i = 0; i < rq.nparams; i++) free(rq.params[i]);
    }
    return http_send(conn, call, &rs);
}

/* libmicrohttpd's request callback of the TCP daemon. */
static enum MHD_Result http_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    return http_handle(cls, 0, conn, url, method, version, upload_data, upload_data_size, con_cls);
}

/* The same for the local socket's daemon: its requests are marked local when they start, without
 * reading the daemon pointer, which the main thread may still be storing (invariant 8). */
static enum MHD_Result http_handler_local(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                          const char *version, const char *upload_data, size_t *upload_data_size,
                                          void **con_cls)
{
    return http_handle(cls, 1, conn, url, method, version, upload_data, upload_data_size, con_cls);
}

/* ---------------------------------------------------------------- request-head deadlines (invariant 2) */

/* Takes a connection off its deadline list (conn_mu held); a no-op when on none. */
static void http_conn_unlist(struct http_server *h, struct http_conn *c)
{
    if (c->list < 0) return;
    if (c->prev) c->prev->next = c->next;
    else h->head[c->list] = c->next;
    if (c->next) c->next->prev = c->prev;
    else h->tail[c->list] = c->prev;
    c->prev = c->next = NULL;
    c->list = -1;
}

/* Puts the connection at the end of a list: its request head is due wait_ns[list] from now. */
static void http_conn_list(struct http_server *h, struct http_conn *c, int list)
{
    pthread_mutex_lock(&h->conn_mu);
    http_conn_unlist(h, c);
    c->list = list;
    c->deadline_ns = clock_mono_ns() + h->wait_ns[list];
    c->prev = h->tail[list];
    if (c->prev) c->prev->next = c;
    else h->head[list] = c;
    h->tail[list] = c;
    pthread_mutex_unlock(&h->conn_mu);
}

/* The deadline record of an MHD connection, or NULL when none could be made. */
static struct http_conn *http_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

/* The access handler's first call: the request head is complete, its deadline no longer applies. */
static void http_head_done(struct server *s, struct MHD_Connection *conn)
{
    struct http_conn *c = http_conn_of(conn);
    if (!c) return;
    /* ACK the head now.  A client that writes the head and the body in two sends (Nagle on) holds
     * the body until the head is acknowledged, and on a kept-alive connection Linux delays that
     * ACK up to 40 ms: every request with a body took 40-50 ms instead of 0.2 (issue 12).  Setting
     * TCP_QUICKACK sends a pending ACK at once; it fails harmlessly on a unix socket. */
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    pthread_mutex_lock(&s->http->conn_mu);
    http_conn_unlist(s->http, c);
    pthread_mutex_unlock(&s->http->conn_mu);
}

/* MHD connection callback: a new connection joins the list that waits for a first request head; a closed one leaves
 * its list and is freed. */
static void http_notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                             enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    struct http_server *h = s->http;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *i = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http_conn *c = calloc(1, sizeof *c);
        if (!c || !i) {
            free(c); /* no deadline for this one; MHD's idle timeout still applies */
            return;
        }
        c->fd = i->connect_fd;
        c->list = -1;
        *socket_context = c;
        http_conn_list(h, c, HTTP_WAIT_NEW);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct http_conn *c = *socket_context;
        if (!c) return;
        *socket_context = NULL;
        pthread_mutex_lock(&h->conn_mu);
        http_conn_unlist(h, c);
        pthread_mutex_unlock(&h->conn_mu);
        free(c);
    }
}

/* Shuts down every connection whose request head is overdue; MHD then sees the end of the stream
 * and closes it in its own thread.  shutdown() under conn_mu: see struct http_server. */
static void *http_reaper(void *arg)
{
    struct http_server *h = arg;
    pthread_mutex_lock(&h->conn_mu);
    while (!h->reaper_stop) {
        int64_t now = clock_mono_ns();
        for (int l = 0; l < HTTP_WAIT_LISTS; l++) {
            while (h->head[l] && h->head[l]->deadline_ns <= now) {
                struct http_conn *c = h->head[l];
                http_conn_unlist(h, c);
                shutdown(c->fd, SHUT_RDWR);
                atomic_fetch_add(&h->reaped, 1);
            }
        }
        clock_cond_wait_ns(&h->conn_cv, &h->conn_mu, HTTP_REAP_TICK_MS * 1000000ll);
    }
    pthread_mutex_unlock(&h->conn_mu);
    return NULL;
}

/* ---------------------------------------------------------------- completion */

/* MHD completion callback: logs the request (or its abort) with its duration, feeds the metrics, frees the call and
 * wakes a stop waiting for the last request. */
static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct http_call *call = *con_cls;
    if (!call) return;
    *con_cls = NULL;
    /* A kept-alive connection now waits for its next request head (closed ones leave the list at
     * once, in http_notify_conn). */
    struct http_conn *c = http_conn_of(conn);
    if (c) http_conn_list(s->http, c, HTTP_WAIT_NEXT);
    uint64_t us = (uint64_t)((clock_mono_ns() - call->start_ns) / 1000);
    const char *path = call->path ? call->path : "?";
    char fields[HTTP_LOG_PATH_MAX * 6 + 256] = "";
    if (log_is_json()) {
        char epath[HTTP_LOG_PATH_MAX * 6 + 1], emethod[100];
        log_json_escape(epath, sizeof epath, path);
        log_json_escape(emethod, sizeof emethod, call->method);
        snprintf(fields, sizeof fields,
                 "\"request_id\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"duration_us\":%" PRIu64
                 ",\"key\":\"%s\"",
                 call->reqid, emethod, epath, call->status, us, call->who);
    }
    if (call->status) {
        log_fields(LOG_INFO, fields, "%s %s %d key=%s req=%s %" PRIu64 "us", call->method, path, call->status,
                   call->who, call->reqid, us);
        s->http->hooks.observe(s, call->route, call->method, call->status, us);
    } else {
        /* The client went away (or the server stopped) before an answer was ready. */
        log_fields(LOG_INFO, fields, "%s %s aborted(%d) key=%s req=%s %" PRIu64 "us", call->method, path, (int)toe,
                   call->who, call->reqid, us);
    }
    http_uncharge(s, call);
    free(call->path);
    free(call->body);
    free(call);
    struct http_server *h = s->http;
    if (atomic_fetch_sub(&h->inflight, 1) == 1 && atomic_load(&s->stopping)) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->idle);
        pthread_mutex_unlock(&h->mu);
    }
}

/* Routes libmicrohttpd's own messages into the server log as warnings, without their line ending. */
static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_warn("http: %s", msg);
}

/* ---------------------------------------------------------------- TLS (invariant 5) */

#define HTTP_TLS_MAX_CHAIN  16
/* GnuTLS's defaults without TLS 1.0 and 1.1 (RFC 8996 deprecates them; every client of this API
 * speaks 1.2 or 1.3). */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* One loaded certificate chain and key.  Never freed before the daemon stops: GnuTLS keeps the
 * pointers the callback hands it for the length of a session. */
struct http_tls_cred {
    struct http_tls_cred *older;
    gnutls_pcert_st pcert[HTTP_TLS_MAX_CHAIN];
    unsigned npcert;
    gnutls_privkey_t key;
};

/* The callback has no user pointer; there is one daemon per process. */
static _Atomic(struct http_tls_cred *) http_tls_current;
static pthread_mutex_t http_tls_mu = PTHREAD_MUTEX_INITIALIZER; /* serialises loads and the list */

/* GnuTLS certificate callback: hands each handshake the current certificate and key, so a reload takes effect for
 * new connections without a restart. */
static int http_tls_retrieve(gnutls_session_t sess, const gnutls_datum_t *req_ca_dn, int nreqs,
                             const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
                             unsigned int *pcert_length, gnutls_privkey_t *privkey)
{
    (void)sess, (void)req_ca_dn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    struct http_tls_cred *c = atomic_load(&http_tls_current);
    if (!c) return -1;
    *pcert = c->pcert;
    *pcert_length = c->npcert;
    *privkey = c->key;
    return 0;
}

/* Frees a loaded certificate chain and key. */
static void http_tls_cred_free(struct http_tls_cred *c)
{
    for (unsigned i = 0; i < c->npcert; i++) gnutls_pcert_deinit(&c->pcert[i]);
    if (c->key) gnutls_privkey_deinit(c->key);
    free(c);
}

/* Reads the certificate chain and its key; NULL after writing why into err. */
static struct http_tls_cred *http_tls_load(const char *cert, const char *key, char *err, size_t cap)
{
    for (int i = 0; i < 2; i++) {
        const char *f = i ? key : cert;
        if (access(f, R_OK) != 0) {
            snprintf(err, cap, "cannot read %s '%s': %s", i ? "--tls-key" : "--tls-cert", f, strerror(errno));
            return NULL;
        }
    }
    /* GnuTLS's own pairing check says plainly when the key is not the certificate's. */
    gnutls_certificate_credentials_t cc;
    if (gnutls_certificate_allocate_credentials(&cc) < 0) return snprintf(err, cap, "out of memory"), NULL;
    int r = gnutls_certificate_set_x509_key_file(cc, cert, key, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(cc);
    if (r < 0) {
        snprintf(err, cap, "cannot use certificate '%s' with key '%s': %s", cert, key, gnutls_strerror(r));
        return NULL;
    }
    struct http_tls_cred *c = calloc(1, sizeof *c);
    if (!c) return snprintf(err, cap, "out of memory"), NULL;
    c->npcert = HTTP_TLS_MAX_CHAIN;
    gnutls_datum_t kd = { NULL, 0 };
    r = gnutls_pcert_list_import_x509_file(c->pcert, &c->npcert, cert, GNUTLS_X509_FMT_PEM, NULL, NULL, 0);
    if (r < 0) c->npcert = 0;
    if (r >= 0) r = gnutls_load_file(key, &kd);
    if (r >= 0) r = gnutls_privkey_init(&c->key);
    if (r >= 0) r = gnutls_privkey_import_x509_raw(c->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_free(kd.data);
    if (r < 0) {
        snprintf(err, cap, "cannot load certificate '%s' and key '%s': %s", cert, key, gnutls_strerror(r));
        http_tls_cred_free(c);
        return NULL;
    }
    return c;
}

/* Loads the configured files and makes them the ones new handshakes get. */
static int http_tls_install(struct server *s)
{
    char err[600];
    struct http_tls_cred *c = http_tls_load(s->cfg.tls_cert, s->cfg.tls_key, err, sizeof err);
    if (!c) {
        log_error("TLS: %s", err);
        return -1;
    }
    pthread_mutex_lock(&http_tls_mu);
    c->older = atomic_load(&http_tls_current);
    atomic_store(&http_tls_current, c);
    pthread_mutex_unlock(&http_tls_mu);
    return 0;
}

int http_tls_reload(struct server *s)
{
    if (!s->cfg.tls_cert) return 0;
    if (http_tls_install(s)) {
        log_error("TLS: keeping the certificate loaded before");
        return -1;
    }
    log_info("TLS: certificate '%s' reloaded", s->cfg.tls_cert);
    return 0;
}

/* After the daemon has stopped: no session can use any of them any more. */
static void http_tls_free_all(void)
{
    pthread_mutex_lock(&http_tls_mu);
    struct http_tls_cred *c = atomic_exchange(&http_tls_current, NULL);
    pthread_mutex_unlock(&http_tls_mu);
    while (c) {
        struct http_tls_cred *o = c->older;
        http_tls_cred_free(c);
        c = o;
    }
}

/* ---------------------------------------------------------------- start / stop */

/* Invariant 8: binds <data>/jvdb.sock (0600) and serves it with its own daemon, a thread per
 * connection (a CLI compaction must not hold a pool thread of the TCP port).  A socket that cannot
 * be made is logged and skipped: the TCP port still serves, and the CLI says to use --server. */
static void http_start_local(struct server *s)
{
    struct http_server *h = s->http;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/jvdb.sock", s->cfg.data_dir);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        log_warn("no local socket: '%s/jvdb.sock' is longer than %zu bytes; the CLI needs --server while this "
                 "server runs",
                 s->cfg.data_dir, sizeof sa.sun_path - 1);
        return;
    }
    struct stat st;
    if (lstat(sa.sun_path, &st) == 0) {
        /* We hold the data directory's lock, so a socket here is a dead server's. */
        if (!S_ISSOCK(st.st_mode)) {
            log_warn("no local socket: '%s' exists and is not a socket", sa.sun_path);
            return;
        }
        if (unlink(sa.sun_path)) {
            log_warn("no local socket: cannot remove the stale '%s': %s", sa.sun_path, strerror(errno));
            return;
        }
        log_info("replaced the stale local socket '%s'", sa.sun_path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("no local socket: %s", strerror(errno));
        return;
    }
    /* Linux gives the socket file the mode of the socket's inode (less the umask): 0600 from its
     * first instant, with no window where another user could connect. */
    if (fchmod(fd, 0600) || bind(fd, (struct sockaddr *)&sa, sizeof sa) || chmod(sa.sun_path, 0600) || listen(fd, 64)) {
        log_warn("no local socket at '%s': %s", sa.sun_path, strerror(errno));
        close(fd);
        unlink(sa.sun_path);
        return;
    }
    h->local = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, http_handler_local, s, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, http_completed, s, MHD_OPTION_NOTIFY_CONNECTION, http_notify_conn, s,
        MHD_OPTION_UNESCAPE_CALLBACK, http_keep_escaped, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
    if (!h->local) {
        log_warn("no local socket: libmicrohttpd cannot serve '%s'", sa.sun_path);
        close(fd);
        unlink(sa.sun_path);
        return;
    }
    memcpy(h->local_path, sa.sun_path, sizeof sa.sun_path);
    log_info("local socket %s (admin for the user who can open it; used by the jvdb CLI)", h->local_path);
}

int http_start(struct server *s, const struct http_hooks *hooks)
{
    pthread_once(&http_real_once, http_resolve_real);
    if (!http_real_create || !http_real_queue) {
        log_error("cannot find libmicrohttpd's response functions: %s", dlerror());
        return -1;
    }
    struct http_server *h = calloc(1, sizeof *h);
    if (!h) return -1;
    h->hooks = *hooks;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->conn_mu, NULL);
    if (clock_cond_init(&h->idle) || clock_cond_init(&h->conn_cv)) {
        log_error("cannot make the HTTP server's condition variables");
        pthread_mutex_destroy(&h->conn_mu);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return -1;
    }
    h->wait_ns[HTTP_WAIT_NEW] = (int64_t)s->cfg.header_timeout_ms * 1000000;
    if (getrandom(&h->reqid_base, sizeof h->reqid_base, GRND_NONBLOCK) != sizeof h->reqid_base)
        h->reqid_base = (uint64_t)clock_wall_ns();
    h->wait_ns[HTTP_WAIT_NEXT] = (int64_t)s->cfg.idle_timeout_s * 1000000000;
    s->http = h;
    if (pthread_create(&h->reaper, NULL, http_reaper, h)) {
        log_error("cannot start the connection reaper thread");
        return -1;
    }
    h->reaper_started = 1;

    struct addrinfo hints = { 0 }, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)s->cfg.port);
    int gai = getaddrinfo(s->cfg.host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        log_error("cannot resolve listen address '%s': %s", s->cfg.host, gai_strerror(gai));
        return -1;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (s->cfg.tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            log_error("this libmicrohttpd was built without TLS support: --tls-cert cannot be used");
            freeaddrinfo(ai);
            return -1;
        }
        if (http_tls_install(s)) {
            freeaddrinfo(ai);
            return -1;
        }
        flags |= MHD_USE_TLS;
        h->tls = 1;
    }
    /* The certificate callback only counts with MHD_USE_TLS; without it MHD ignores the option. */
    gnutls_certificate_retrieve_function2 *cert_cb = h->tls ? http_tls_retrieve : NULL;
    /* MHD splits the connection limit evenly over the pool's threads; the per-IP limit is global. */
    h->daemon =
        MHD_start_daemon(flags, s->cfg.port, NULL, NULL, http_handler, s, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log,
                         NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.threads,
                         MHD_OPTION_NOTIFY_COMPLETED, http_completed, s, MHD_OPTION_NOTIFY_CONNECTION, http_notify_conn,
                         s, MHD_OPTION_UNESCAPE_CALLBACK, http_keep_escaped, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)s->cfg.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)s->cfg.max_conn_per_ip,
                         h->tls ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END, cert_cb, MHD_OPTION_HTTPS_PRIORITIES,
                         HTTP_TLS_PRIORITIES, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        log_error("cannot listen on %s (address in use, or not allowed)", s->cfg.listen);
        return -1;
    }
    http_start_local(s);
    return 0;
}

/* Here rather than in server.c: routes ask for the stop, and server.c (which names every part)
 * must stay above them. */
void server_request_stop(struct server *s) { pthread_kill(s->main_thread, SIGTERM); }

long http_inflight(struct server *s) { return s->http ? atomic_load(&s->http->inflight) : 0; }

uint16_t http_port(struct server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : s->cfg.port;
}

void http_stop(struct server *s)
{
    struct http_server *h = s->http;
    if (!h) return;
    if (h->daemon) {
        /* No new connections; requests already on open connections still run (new ones get 503). */
        MHD_socket ls = MHD_quiesce_daemon(h->daemon);
        if (ls != MHD_INVALID_SOCKET) close(ls);
        if (h->local) {
            /* Gone before the lock is released: a CLI started now opens the directory itself. */
            ls = MHD_quiesce_daemon(h->local);
            if (ls != MHD_INVALID_SOCKET) close(ls);
            unlink(h->local_path);
        }
        int64_t end_ns = clock_mono_ns() + (int64_t)(s->cfg.shutdown_timeout_s * 1e9);
        pthread_mutex_lock(&h->mu);
        while (atomic_load(&h->inflight) > 0) {
            if (clock_cond_wait_until(&h->idle, &h->mu, end_ns) == ETIMEDOUT) {
                log_warn("stopping with %ld requests still in flight after %.0f s", atomic_load(&h->inflight),
                         s->cfg.shutdown_timeout_s);
                break;
            }
        }
        pthread_mutex_unlock(&h->mu);
        MHD_stop_daemon(h->daemon);
        h->daemon = NULL;
        if (h->local) MHD_stop_daemon(h->local);
        h->local = NULL;
    }
    if (h->reaper_started) {
        pthread_mutex_lock(&h->conn_mu);
        h->reaper_stop = 1;
        pthread_cond_signal(&h->conn_cv);
        pthread_mutex_unlock(&h->conn_mu);
        pthread_join(h->reaper, NULL);
    }
    if (atomic_load(&h->reaped))
        log_info("%" PRIu64 " connections were closed for not sending a complete request head in time",
                 (uint64_t)atomic_load(&h->reaped));
    http_tls_free_all();
    pthread_cond_destroy(&h->conn_cv);
    pthread_mutex_destroy(&h->conn_mu);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
    s->http = NULL;
}

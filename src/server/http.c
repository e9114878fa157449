/*
 * http.c — the libmicrohttpd glue: the daemon (internal thread pool), per-request state, body
 * accumulation with the size limit, answers that can be given before the body arrives (401, 413,
 * 503 while stopping), one log line and one metrics observation per finished request, and the
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
 */
#include "server/srv.h"

#include "core/clock.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HTTP_LOG_PATH_MAX 512

struct http_server {
    struct MHD_Daemon *daemon;
    atomic_long inflight;            /* requests whose headers arrived and that have not completed */
    pthread_mutex_t mu;
    pthread_cond_t idle;             /* signalled when inflight drops to zero while stopping */
};

/* Per-request state: MHD's con_cls. */
struct http_call {
    int64_t start_ns;
    char method[16];
    char *path;                      /* copy for the log line, which is written after MHD frees the URL */
    char *body;
    size_t len, cap;
    int too_large;                   /* the body passed the limit: it is discarded, the answer is 413 */
    int status;                      /* the answer's status, 0 while none */
    int route;
};

/* ---------------------------------------------------------------- request accessors */

const char *http_header(const http_req *rq, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)rq->conn, MHD_HEADER_KIND, name);
}

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

const char *http_query(const http_req *rq, const char *name, char *buf, size_t cap)
{
    const char *v = MHD_lookup_connection_value((struct MHD_Connection *)rq->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v) return NULL;
    if (strlen(v) >= cap) return NULL;
    strcpy(buf, v);
    long n = http_unescape(buf, 1);
    if (n < 0 || (size_t)n != strlen(buf)) return NULL;   /* a bad escape or an embedded NUL */
    return buf;
}

/* MHD would decode the URL before we see it; keep it as sent (see the file comment). */
static size_t http_keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---------------------------------------------------------------- answering */

static enum MHD_Result http_send(struct MHD_Connection *conn, struct http_call *call, http_resp *rs)
{
    if (!rs->status) http_error(rs, 500, "INTERNAL", "the route gave no answer");
    if (!rs->body) {
        /* Every answer has a body; only an allocation failure gets here. */
        rs->body = strdup("{\"error\":\"OUT_OF_MEMORY\",\"message\":\"out of memory\"}");
        rs->len = rs->body ? strlen(rs->body) : 0;
        rs->status = 500;
        if (!rs->body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(rs->body);
        return MHD_NO;
    }
    rs->body = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type ? rs->content_type : "application/json");
    if (rs->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
    if (rs->close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (rs->auth_challenge) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"jvdb\"");
    call->status = rs->status;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Answers given on the first call, before any body is read. */
static int http_early_answer(server *s, struct MHD_Connection *conn, struct http_call *call, const char *url,
                             http_resp *rs)
{
    http_req rq = {.method = call->method, .path = url, .conn = conn};
    if (atomic_load(&s->stopping)) {
        rs->close = 1;
        http_error(rs, 503, "SHUTTING_DOWN", "the server is shutting down");
        return 1;
    }
    if (strcmp(url, "/health") != 0 && !auth_ok(s, &rq)) {
        auth_reject(s, &rq, rs);
        rs->close = 1;   /* the body, if any, is not read */
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
    }
    return 0;
}

static enum MHD_Result http_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    server *s = cls;
    struct http_call *call = *con_cls;
    if (!call) {
        call = calloc(1, sizeof *call);
        if (!call) return MHD_NO;
        call->start_ns = clock_mono_ns();
        snprintf(call->method, sizeof call->method, "%s", method);
        size_t ulen = strnlen(url, HTTP_LOG_PATH_MAX);
        call->path = strndup(url, ulen);
        call->route = route_find(method, url);
        *con_cls = call;
        atomic_fetch_add(&s->http->inflight, 1);
        http_resp rs = {0};
        if (http_early_answer(s, conn, call, url, &rs)) return http_send(conn, call, &rs);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (call->too_large) return MHD_YES;
        if (call->len + n > s->cfg.max_body) {
            /* A chunked body with no Content-Length: read and drop the rest, answer 413 at the end. */
            call->too_large = 1;
            free(call->body);
            call->body = NULL;
            call->len += n;
            return MHD_YES;
        }
        if (call->len + n + 1 > call->cap) {
            size_t ncap = call->cap ? call->cap : 4096;
            while (ncap < call->len + n + 1) ncap *= 2;
            char *nb = realloc(call->body, ncap);
            if (!nb) return MHD_NO;
            call->body = nb;
            call->cap = ncap;
        }
        memcpy(call->body + call->len, upload_data, n);
        call->len += n;
        call->body[call->len] = 0;
        return MHD_YES;
    }
    http_resp rs = {0};
    if (call->too_large) {
        rs.close = 1;
        http_error(&rs, 413, "PAYLOAD_TOO_LARGE", "request body exceeds the limit of %" PRIu64 " bytes", s->cfg.max_body);
    } else {
        http_req rq = {.method = method, .path = url, .body = call->body, .body_len = call->len, .conn = conn};
        call->route = route_dispatch(s, &rq, &rs);
        for (int i = 0; i < rq.nparams; i++) free(rq.params[i]);
    }
    return http_send(conn, call, &rs);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    server *s = cls;
    struct http_call *call = *con_cls;
    if (!call) return;
    *con_cls = NULL;
    uint64_t us = (uint64_t)((clock_mono_ns() - call->start_ns) / 1000);
    const char *path = call->path ? call->path : "?";
    if (call->status) {
        log_info("%s %s %d %" PRIu64 "us", call->method, path, call->status, us);
        metrics_observe(s, call->route, call->status, us);
    } else {
        /* The client went away (or the server stopped) before an answer was ready. */
        log_info("%s %s aborted(%d) %" PRIu64 "us", call->method, path, (int)toe, us);
    }
    free(call->path);
    free(call->body);
    free(call);
    http_server *h = s->http;
    if (atomic_fetch_sub(&h->inflight, 1) == 1 && atomic_load(&s->stopping)) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->idle);
        pthread_mutex_unlock(&h->mu);
    }
}

static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_warn("http: %s", msg);
}

/* ---------------------------------------------------------------- start / stop */

int http_start(server *s)
{
    http_server *h = calloc(1, sizeof *h);
    if (!h) return -1;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->idle, NULL);
    s->http = h;

    struct addrinfo hints = {0}, *ai = NULL;
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
    h->daemon = MHD_start_daemon(
        flags, s->cfg.port, NULL, NULL, http_handler, s, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.threads, MHD_OPTION_NOTIFY_COMPLETED, http_completed, s,
        MHD_OPTION_UNESCAPE_CALLBACK, http_keep_escaped, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        log_error("cannot listen on %s (address in use, or not allowed)", s->cfg.listen);
        return -1;
    }
    return 0;
}

uint16_t http_port(server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : s->cfg.port;
}

void http_stop(server *s)
{
    http_server *h = s->http;
    if (!h) return;
    if (h->daemon) {
        /* No new connections; requests already on open connections still run (new ones get 503). */
        MHD_socket ls = MHD_quiesce_daemon(h->daemon);
        if (ls != MHD_INVALID_SOCKET) close(ls);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        int64_t end_ns = (int64_t)dl.tv_sec * 1000000000 + dl.tv_nsec + (int64_t)(s->cfg.shutdown_timeout_s * 1e9);
        dl.tv_sec = (time_t)(end_ns / 1000000000);
        dl.tv_nsec = (long)(end_ns % 1000000000);
        pthread_mutex_lock(&h->mu);
        while (atomic_load(&h->inflight) > 0) {
            if (pthread_cond_timedwait(&h->idle, &h->mu, &dl) == ETIMEDOUT) {
                log_warn("stopping with %ld requests still in flight after %.0f s", atomic_load(&h->inflight),
                         s->cfg.shutdown_timeout_s);
                break;
            }
        }
        pthread_mutex_unlock(&h->mu);
        MHD_stop_daemon(h->daemon);
        h->daemon = NULL;
    }
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
    s->http = NULL;
}

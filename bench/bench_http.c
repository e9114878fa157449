/*
 * bench_http.c — owns issue 6's measurement: what the REST server costs beside calling the library
 * in-process, for the same work on the same generated data.
 *
 *   ingest: the data set in batches, one writer, jvdb_put_batch in-process beside
 *           POST /v1/databases/{id}/vectors/batch over one keep-alive loopback connection, with
 *           JSON bodies and (issue 12) again with binary ones (application/octet-stream);
 *   search: the same queries (top-k, the HNSW index fully built on both sides), from C threads
 *           in-process beside C keep-alive HTTP clients, per-query latency and total QPS; after a
 *           warm-up of each side, the measured queries go in chunks of BH_CHUNK that alternate
 *           between the sides, so a shared machine's changing load weighs on both alike.
 *
 * The server is the real `jvdb serve` (--jvdb PATH), started on port 0 in a data directory of its
 * own, so everything a client pays is in the numbers: JSON encoding of the request is done before
 * the clock starts (a client has its data ready), decoding the answer is not (only the status and
 * the count are looked at, as a cheap client would).  The two sides never run at once, and
 * the in-process side's index is complete before the server starts so its background
 * thread steals nothing from the HTTP side.
 *
 * The HTTP client is a minimal HTTP/1.1 one written here (request with Content-Length, answer read
 * by Content-Length), enough for a server that always sends Content-Length.
 *
 * With --tls-cert/--tls-key (issue 14) the server is started with them and every client connection
 * is TLS (OpenSSL, the certificate checked as the trust anchor), handshake done when the connection
 * is opened, before any clock starts: keep-alive clients pay the per-record cost, not handshakes.
 *
 * Output: one JSON object on stdout, which bench/run-http parses.
 */
#include "bench_util.h"
#include "jvdb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a tiny keep-alive client */

typedef struct bh_conn {
    int fd;
    uint16_t port;
    char *buf;
    size_t cap;
    SSL *ssl; /* NULL: plain HTTP */
} bh_conn;

static SSL_CTX *bh_tls; /* set by --tls-cert: every connection speaks TLS */

static void bh_tls_init(const char *cafile)
{
    bh_tls = SSL_CTX_new(TLS_client_method());
    if (!bh_tls || SSL_CTX_load_verify_locations(bh_tls, cafile, NULL) != 1)
        bench_die(0, "TLS client: cannot load %s", cafile);
    SSL_CTX_set_verify(bh_tls, SSL_VERIFY_PEER, NULL);
}

static void bh_tls_connect(bh_conn *c)
{
    c->ssl = SSL_new(bh_tls);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) bench_die(0, "TLS client: SSL_new");
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    if (SSL_connect(c->ssl) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        bench_die(0, "TLS handshake with 127.0.0.1:%u failed: %s", c->port, e);
    }
}

/* write/read through TLS when the connection has it. */
static ssize_t bh_io_write(bh_conn *c, const void *p, size_t n)
{
    if (!c->ssl) return write(c->fd, p, n);
    int w = SSL_write(c->ssl, p, (int)n);
    return w > 0 ? w : -1;
}

static ssize_t bh_io_read(bh_conn *c, void *p, size_t n)
{
    if (!c->ssl) return read(c->fd, p, n);
    int r = SSL_read(c->ssl, p, (int)n);
    return r > 0 ? r : (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
}

static void bh_connect(bh_conn *c, uint16_t port)
{
    c->port = port;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) bench_die(errno, "socket");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) bench_die(errno, "connect to 127.0.0.1:%u", port);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bh_tls) bh_tls_connect(c);
    if (!c->buf) {
        c->cap = 1 << 16;
        c->buf = malloc(c->cap);
        if (!c->buf) bench_die(ENOMEM, "client buffer");
    }
}

static void bh_close(bh_conn *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

static void bh_send_all(bh_conn *c, struct iovec *iov, int n)
{
    if (c->ssl) {
        for (int i = 0; i < n; i++)
            for (size_t off = 0; off < iov[i].iov_len;) {
                ssize_t w = bh_io_write(c, (char *)iov[i].iov_base + off, iov[i].iov_len - off);
                if (w <= 0) bench_die(0, "TLS send to the server failed");
                off += (size_t)w;
            }
        return;
    }
    int fd = c->fd;
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            bench_die(errno, "send to the server");
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
}

/* One request with a body of the given type; returns the status and leaves the body (NUL-terminated) at *body. */
static int bh_request_ct(bh_conn *c, const char *method, const char *path, const char *ctype, const char *body,
                         size_t len, const char **out)
{
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", method,
                      path, ctype, len);
    struct iovec iov[2] = { { head, (size_t)hl }, { (void *)body, len } };
    bh_send_all(c, iov, len ? 2 : 1);
    size_t have = 0, need = 0, hdr = 0;
    for (;;) {
        if (have + 1 >= c->cap) {
            c->cap *= 2;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) bench_die(ENOMEM, "client buffer");
        }
        ssize_t r = bh_io_read(c, c->buf + have, c->cap - have - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) bench_die(r < 0 ? errno : 0, "the server closed the connection");
        have += (size_t)r;
        c->buf[have] = 0;
        if (!hdr) {
            char *e = strstr(c->buf, "\r\n\r\n");
            if (!e) continue;
            hdr = (size_t)(e - c->buf) + 4;
            const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
            if (!cl || cl > e) bench_die(0, "an answer without Content-Length");
            need = hdr + strtoull(cl + 17, NULL, 10);
        }
        if (have >= need) break;
    }
    *out = c->buf + hdr;
    return atoi(c->buf + 9);
}

/* One request with a JSON body. */
static int bh_request(bh_conn *c, const char *method, const char *path, const char *body, size_t len, const char **out)
{
    return bh_request_ct(c, method, path, "application/json", body, len, out);
}

/* ---------------------------------------------------------------- the server */

typedef struct bh_server {
    pid_t pid;
    uint16_t port;
} bh_server;

static const char *bh_tls_cert, *bh_tls_key;

static void bh_server_start(bh_server *s, const char *jvdb, const char *dir, const char *threads)
{
    int out[2];
    if (pipe(out) < 0) bench_die(errno, "pipe");
    char logpath[4200];
    snprintf(logpath, sizeof logpath, "%s.log", dir);
    s->pid = fork();
    if (s->pid < 0) bench_die(errno, "fork");
    if (s->pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        FILE *log = fopen(logpath, "w");
        if (log) dup2(fileno(log), 2);
        char *argv[] = { (char *)jvdb,    "--data", (char *)dir, "serve", "--listen", "127.0.0.1:0", "--threads",
                         (char *)threads, NULL,     NULL,        NULL,    NULL,       NULL };
        if (bh_tls_cert) {
            argv[8] = "--tls-cert", argv[9] = (char *)bh_tls_cert;
            argv[10] = "--tls-key", argv[11] = (char *)bh_tls_key;
        }
        execv(jvdb, argv);
        _exit(127);
    }
    close(out[1]);
    char line[256];
    size_t n = 0;
    while (n + 1 < sizeof line) {
        ssize_t r = read(out[0], line + n, 1);
        if (r <= 0) bench_die(0, "the server did not start (see %s)", logpath);
        if (line[n++] == '\n') break;
    }
    line[n] = 0;
    close(out[0]);
    const char *colon = strrchr(line, ':');
    const char *want = bh_tls_cert ? "listening on https://" : "listening on http://";
    if (strncmp(line, want, strlen(want)) || !colon) bench_die(0, "unexpected server output: %s", line);
    s->port = (uint16_t)atoi(colon + 1);
}

/* CPU seconds (user + system) the server process has used: what a request costs the server,
 * which contention on a shared machine distorts far less than wall-clock throughput does. */
static double bh_server_cpu(const bh_server *s)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void bh_server_stop(bh_server *s)
{
    bh_conn c = { .fd = -1 };
    bh_connect(&c, s->port);
    const char *body;
    bh_request(&c, "POST", "/v1/admin/shutdown", "", 0, &body);
    bh_close(&c);
    int st;
    waitpid(s->pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bench_die(0, "the server did not stop cleanly (status %d)", st);
}

/* ---------------------------------------------------------------- JSON encoding (before the clock) */

typedef struct bh_text {
    char *p;
    size_t len, cap;
} bh_text;

static void bh_put(bh_text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        if (!t->p) bench_die(ENOMEM, "request bodies");
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
}

static void bh_puts(bh_text *t, const char *s) { bh_put(t, s, strlen(s)); }

static void bh_floats(bh_text *t, const float *v, uint32_t dim)
{
    char num[32];
    bh_puts(t, "[");
    for (uint32_t k = 0; k < dim; k++) {
        int n = snprintf(num, sizeof num, k ? ",%.9g" : "%.9g", (double)v[k]);
        bh_put(t, num, (size_t)n);
    }
    bh_puts(t, "]");
}

/* ---------------------------------------------------------------- ingest */

static double bh_ingest_inproc(jvdb_db *db, const bench_data *d, uint32_t batch)
{
    jvdb_record *recs = malloc(batch * sizeof *recs);
    if (!recs) bench_die(ENOMEM, "records");
    double t0 = bench_now();
    for (uint64_t first = 0; first < d->n; first += batch) {
        size_t cnt = first + batch <= d->n ? batch : (size_t)(d->n - first);
        for (size_t i = 0; i < cnt; i++)
            recs[i] = (jvdb_record){ d->ids[first + i], d->vectors + (first + i) * d->dim, d->dim,
                                     d->metas ? d->metas[first + i] : NULL };
        int rc = jvdb_put_batch(db, recs, cnt, NULL);
        if (rc) bench_die(0, "put_batch: %s", jvdb_errmsg());
    }
    double secs = bench_now() - t0;
    free(recs);
    return secs;
}

static double bh_ingest_http(uint16_t port, const bench_data *d, uint32_t batch)
{
    uint64_t nb = (d->n + batch - 1) / batch;
    bh_text *bodies = calloc(nb, sizeof *bodies);
    if (!bodies) bench_die(ENOMEM, "bodies");
    for (uint64_t b = 0; b < nb; b++) {
        bh_puts(&bodies[b], "{\"vectors\":[");
        for (uint64_t r = b * batch; r < d->n && r < (b + 1) * batch; r++) {
            bh_puts(&bodies[b], r > b * batch ? ",{\"id\":\"" : "{\"id\":\"");
            bh_puts(&bodies[b], d->ids[r]);
            bh_puts(&bodies[b], "\",\"values\":");
            bh_floats(&bodies[b], d->vectors + r * d->dim, d->dim);
            if (d->metas) {
                bh_puts(&bodies[b], ",\"metadata\":");
                bh_puts(&bodies[b], d->metas[r]);
            }
            bh_puts(&bodies[b], "}");
        }
        bh_puts(&bodies[b], "]}");
    }
    bh_conn c = { .fd = -1 };
    bh_connect(&c, port);
    const char *resp;
    double t0 = bench_now();
    for (uint64_t b = 0; b < nb; b++) {
        int st = bh_request(&c, "POST", "/v1/databases/bench/vectors/batch", bodies[b].p, bodies[b].len, &resp);
        if (st != 201) bench_die(0, "batch %llu: HTTP %d %s", (unsigned long long)b, st, resp);
    }
    double secs = bench_now() - t0;
    bh_close(&c);
    for (uint64_t b = 0; b < nb; b++) free(bodies[b].p);
    free(bodies);
    return secs;
}

/* Appends a little-endian u32 / u16. */
static void bh_u32(bh_text *t, uint32_t v)
{
    unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24) };
    bh_put(t, (const char *)b, 4);
}

/* Ingest with binary bodies (Content-Type: application/octet-stream, src/server/binbatch.h) into
 * database `name`: header, float32 values, length-prefixed ids, the metadata sidecar. */
static double bh_ingest_http_bin(uint16_t port, const char *name, const bench_data *d, uint32_t batch)
{
    uint64_t nb = (d->n + batch - 1) / batch;
    bh_text *bodies = calloc(nb, sizeof *bodies);
    if (!bodies) bench_die(ENOMEM, "bodies");
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t first = b * batch, cnt = first + batch <= d->n ? batch : d->n - first;
        bh_text meta = { 0 };
        if (d->metas) {
            bh_puts(&meta, "[");
            for (uint64_t r = first; r < first + cnt; r++) {
                if (r > first) bh_puts(&meta, ",");
                bh_puts(&meta, d->metas[r]);
            }
            bh_puts(&meta, "]");
        }
        bh_put(&bodies[b], "JVB1", 4);
        bh_u32(&bodies[b], (uint32_t)cnt);
        bh_u32(&bodies[b], d->dim);
        bh_u32(&bodies[b], (uint32_t)meta.len);
        bh_put(&bodies[b], (const char *)(d->vectors + first * d->dim), cnt * d->dim * sizeof(float)); /* x86: LE */
        for (uint64_t r = first; r < first + cnt; r++) {
            size_t n = strlen(d->ids[r]);
            unsigned char l[2] = { (unsigned char)n, (unsigned char)(n >> 8) };
            bh_put(&bodies[b], (const char *)l, 2);
            bh_put(&bodies[b], d->ids[r], n);
        }
        if (meta.len) bh_put(&bodies[b], meta.p, meta.len);
        free(meta.p);
    }
    char path[128];
    snprintf(path, sizeof path, "/v1/databases/%s/vectors/batch", name);
    bh_conn c = { .fd = -1 };
    bh_connect(&c, port);
    const char *resp;
    double t0 = bench_now();
    for (uint64_t b = 0; b < nb; b++) {
        int st = bh_request_ct(&c, "POST", path, "application/octet-stream", bodies[b].p, bodies[b].len, &resp);
        if (st != 201) bench_die(0, "binary batch %llu: HTTP %d %s", (unsigned long long)b, st, resp);
    }
    double secs = bench_now() - t0;
    bh_close(&c);
    for (uint64_t b = 0; b < nb; b++) free(bodies[b].p);
    free(bodies);
    return secs;
}

/* ---------------------------------------------------------------- search */

#define BH_CHUNK 100 /* queries per interleaved chunk */

typedef struct bh_search {
    jvdb_db *db; /* in-process, or NULL for HTTP */
    uint16_t port;
    const float *queries;
    char **bodies; /* HTTP request bodies, one per query */
    uint32_t dim, k, nq, nthreads;
    double *lat;          /* seconds, per query */
    uint32_t first, last; /* the queries [first, last) of this run */
} bh_search;

typedef struct bh_worker {
    bh_search *s;
    uint32_t t;
} bh_worker;

static void *bh_search_main(void *arg)
{
    bh_worker *w = arg;
    bh_search *s = w->s;
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    p.k = s->k; /* everything else as the server leaves it: the same search on both sides */
    bh_conn c = { .fd = -1 };
    if (!s->db) bh_connect(&c, s->port);
    char want[32];
    snprintf(want, sizeof want, "\"count\":%u", s->k);
    for (uint32_t i = s->first + w->t; i < s->last; i += s->nthreads) {
        double t0 = bench_now();
        if (s->db) {
            jvdb_result *res;
            size_t n;
            if (jvdb_search(s->db, s->queries + (size_t)i * s->dim, s->dim, &p, &res, &n))
                bench_die(0, "search: %s", jvdb_errmsg());
            if (n != s->k) bench_die(0, "search gave %zu results", n);
            jvdb_results_free(res, n);
        } else {
            const char *resp;
            int st = bh_request(&c, "POST", "/v1/databases/bench/search", s->bodies[i], strlen(s->bodies[i]), &resp);
            if (st != 200 || !strstr(resp, want)) bench_die(0, "search %u: HTTP %d %.200s", i, st, resp);
        }
        s->lat[i] = bench_now() - t0;
    }
    if (!s->db) bh_close(&c);
    return NULL;
}

/* Runs queries [first, last) from nthreads threads; returns the seconds it took. */
static double bh_search_span(bh_search *s, uint32_t first, uint32_t last)
{
    pthread_t tid[256];
    bh_worker w[256];
    s->first = first;
    s->last = last;
    double t0 = bench_now();
    for (uint32_t t = 0; t < s->nthreads; t++) {
        w[t] = (bh_worker){ s, t };
        if (pthread_create(&tid[t], NULL, bh_search_main, &w[t])) bench_die(errno, "pthread_create");
    }
    for (uint32_t t = 0; t < s->nthreads; t++) pthread_join(tid[t], NULL);
    return bench_now() - t0;
}

/* p50 / p99 (ms) of a side's per-query latencies. */
static void bh_search_pct(const bh_search *s, double *p50, double *p99)
{
    double *copy = malloc(s->nq * sizeof *copy);
    if (!copy) bench_die(ENOMEM, "latencies");
    memcpy(copy, s->lat, s->nq * sizeof *copy);
    *p50 = bench_percentile(copy, s->nq, 50) * 1e3;
    *p99 = bench_percentile(copy, s->nq, 99) * 1e3;
    free(copy);
}

/* Runs every query from nthreads threads; returns QPS and fills p50/p99 (ms). */
static double bh_search_run(bh_search *s, double *p50, double *p99)
{
    pthread_t tid[256];
    bh_worker w[256];
    s->first = 0;
    s->last = s->nq;
    double t0 = bench_now();
    for (uint32_t t = 0; t < s->nthreads; t++) {
        w[t] = (bh_worker){ s, t };
        if (pthread_create(&tid[t], NULL, bh_search_main, &w[t])) bench_die(errno, "pthread_create");
    }
    for (uint32_t t = 0; t < s->nthreads; t++) pthread_join(tid[t], NULL);
    double secs = bench_now() - t0;
    double *copy = malloc(s->nq * sizeof *copy);
    if (!copy) bench_die(ENOMEM, "latencies");
    memcpy(copy, s->lat, s->nq * sizeof *copy);
    *p50 = bench_percentile(copy, s->nq, 50) * 1e3;
    *p99 = bench_percentile(copy, s->nq, 99) * 1e3;
    free(copy);
    return s->nq / secs;
}

static void bh_wait_index_http(uint16_t port)
{
    bh_conn c = { .fd = -1 };
    bh_connect(&c, port);
    double t0 = bench_now();
    for (;;) {
        const char *resp;
        int st = bh_request(&c, "GET", "/v1/databases/bench/stats", "", 0, &resp);
        if (st != 200) bench_die(0, "stats: HTTP %d %s", st, resp);
        if (strstr(resp, "\"pending\":0,")) break;
        if (bench_now() - t0 > 3600) bench_die(0, "the server's index was not built within an hour");
        usleep(100000);
    }
    bh_close(&c);
}

/* ---------------------------------------------------------------- main */

static void bh_usage(void)
{
    printf("usage: bench_http --jvdb PATH --dir DIR [options]\n"
           "  --jvdb PATH       the jvdb program (its `serve` is measured)\n"
           "%s"
           "  --queries Q       search queries per run (default 2000)\n"
           "  --k K             results per query (default 10)\n"
           "  --clients LIST    concurrent searchers, comma-separated (default 1,4)\n"
           "  --server-threads N  HTTP worker threads of the server (default 8)\n"
           "  --index hnsw|flat index of both databases (default hnsw)\n"
           "  --tls-cert FILE --tls-key FILE  serve HTTPS with these; clients use TLS (FILE is their CA)\n",
           bench_common_usage());
}

int main(int argc, char **argv)
{
    bench_opts o;
    bench_opts_default(&o);
    o.data.n = 100000;
    const char *jvdb = NULL, *clients = "1,4", *server_threads = "8", *index = "HNSW";
    uint32_t nq = 2000, k = 10;
    for (int i = 1; i < argc; i++) {
        if (bench_parse_common(argc, argv, &i, &o)) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            bh_usage();
            return 0;
        }
        if (i + 1 >= argc) bench_die(0, "unknown option or missing value: %s", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--jvdb")) jvdb = v;
        else if (!strcmp(a, "--queries")) nq = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--k")) k = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--clients")) clients = v;
        else if (!strcmp(a, "--server-threads")) server_threads = v;
        else if (!strcmp(a, "--index")) index = !strcasecmp(v, "flat") ? "FLAT" : "HNSW";
        else if (!strcmp(a, "--tls-cert")) bh_tls_cert = v;
        else if (!strcmp(a, "--tls-key")) bh_tls_key = v;
        else bench_die(0, "unknown option %s", a);
    }
    if (!jvdb || !o.dir || !nq || !k) {
        bh_usage();
        return 2;
    }
    if (!bh_tls_cert != !bh_tls_key) bench_die(0, "--tls-cert and --tls-key go together");
    if (bh_tls_cert) bh_tls_init(bh_tls_cert);
    signal(SIGPIPE, SIG_IGN);
    bench_make_dir(o.dir);
    char inproc_dir[4096], http_dir[4096];
    snprintf(inproc_dir, sizeof inproc_dir, "%s/inproc", o.dir);
    snprintf(http_dir, sizeof http_dir, "%s/http", o.dir);

    bench_data d;
    bench_data_make(&o, &d);
    dg_gen *g;
    if (dg_open(&o.data, &g)) bench_die(errno, "datagen");
    float *queries = malloc((size_t)nq * d.dim * sizeof *queries);
    char **bodies = malloc(nq * sizeof *bodies);
    if (!queries || !bodies) bench_die(ENOMEM, "queries");
    for (uint32_t i = 0; i < nq; i++) {
        dg_query(g, i, queries + (size_t)i * d.dim);
        bh_text t = { 0 };
        bh_puts(&t, "{\"queryVector\":");
        bh_floats(&t, queries + (size_t)i * d.dim, d.dim);
        char tail[64];
        snprintf(tail, sizeof tail, ",\"topK\":%u}", k);
        bh_puts(&t, tail);
        bodies[i] = t.p;
    }
    dg_close(g);

    /* In-process: ingest, then the complete index. */
    jvdb_env *env;
    jvdb_db *db;
    jvdb_db_options dopt;
    jvdb_db_options_init(&dopt, d.dim);
    if (jvdb_env_open(inproc_dir, &env) || jvdb_db_create(env, "bench", &dopt, &db)) bench_die(0, "%s", jvdb_errmsg());
    /* As the server does: index settings are set only when they differ from the defaults (which
     * starts the index thread); otherwise the HNSW thread starts with the first search or status
     * call, after the ingest on both sides. */
    if (!strcmp(index, "FLAT")) {
        jvdb_index_options ixo;
        jvdb_index_options_init(&ixo);
        ixo.type = JVDB_INDEX_FLAT;
        if (jvdb_db_set_index(db, &ixo)) bench_die(0, "set_index: %s", jvdb_errmsg());
    }
    double ingest_in = bh_ingest_inproc(db, &d, o.batch);
    double t0 = bench_now();
    if (jvdb_db_index_wait(db, 3600000)) bench_die(0, "index: %s", jvdb_errmsg());
    double index_in = bench_now() - t0;

    /* The server: the same. */
    bh_server srv;
    bh_server_start(&srv, jvdb, http_dir, server_threads);
    {
        bh_conn c = { .fd = -1 };
        bh_connect(&c, srv.port);
        char body[256];
        const char *resp;
        /* "bench" takes the JSON batches (and then the searches), "benchbin" the binary ones. */
        for (int b = 0; b < 2; b++) {
            snprintf(body, sizeof body,
                     "{\"name\":\"%s\",\"vectorDimension\":%u,\"distanceMetric\":\"euclidean\",\"indexType\":\"%s\"}",
                     b ? "benchbin" : "bench", d.dim, index);
            int st = bh_request(&c, "POST", "/v1/databases", body, strlen(body), &resp);
            if (st != 201) bench_die(0, "create: HTTP %d %s", st, resp);
        }
        bh_close(&c);
    }
    double cpu0 = bh_server_cpu(&srv);
    double ingest_http = bh_ingest_http(srv.port, &d, o.batch);
    double ingest_cpu = bh_server_cpu(&srv) - cpu0;
    cpu0 = bh_server_cpu(&srv);
    double ingest_bin = bh_ingest_http_bin(srv.port, "benchbin", &d, o.batch);
    double ingest_bin_cpu = bh_server_cpu(&srv) - cpu0;
    t0 = bench_now();
    bh_wait_index_http(srv.port);
    double index_http = bench_now() - t0;

    bench_json_begin();
    bench_json_common(&o, &d);
    bench_json_int("queries", nq);
    bench_json_int("k", k);
    bench_json_str("server_threads", server_threads);
    bench_json_str("index", index);
    bench_json_int("tls", bh_tls_cert != NULL);
    bench_json_num("ingest_inproc_s", ingest_in);
    bench_json_num("ingest_http_s", ingest_http);
    bench_json_num("ingest_inproc_vps", (double)d.n / ingest_in);
    bench_json_num("ingest_http_vps", (double)d.n / ingest_http);
    bench_json_num("ingest_http_server_cpu_s", ingest_cpu);
    bench_json_num("ingest_http_bin_s", ingest_bin);
    bench_json_num("ingest_http_bin_vps", (double)d.n / ingest_bin);
    bench_json_num("ingest_http_bin_server_cpu_s", ingest_bin_cpu);
    bench_json_num("index_inproc_s", index_in);
    bench_json_num("index_http_wait_s", index_http);

    /* Searches, alternating sides for each client count. */
    double *lat = malloc(nq * sizeof *lat), *lat_http = malloc(nq * sizeof *lat_http);
    if (!lat || !lat_http) bench_die(ENOMEM, "latencies");
    char list[256];
    snprintf(list, sizeof list, "%s", clients);
    for (char *save, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t nt = (uint32_t)atoi(tok);
        if (nt < 1 || nt > 256) bench_die(0, "bad client count %s", tok);
        bh_search in = { db, 0, queries, NULL, d.dim, k, nq, nt, lat, 0, 0 };
        bh_search ht = { NULL, srv.port, queries, bodies, d.dim, k, nq, nt, lat_http, 0, 0 };
        bh_search *sides[2] = { &in, &ht };
        static const char *names[2] = { "inproc", "http" };
        double p50, p99;
        for (int k2 = 0; k2 < 2; k2++) bh_search_run(sides[k2], &p50, &p99); /* warm-up: caches, connections */
        /* Measured interleaved (issue 12): chunks of queries alternate between the sides, the
         * first side alternating too, so a shared machine's load moves both sides' numbers alike. */
        double secs[2] = { 0, 0 }, c0 = bh_server_cpu(&srv);
        for (uint32_t f = 0, j = 0; f < nq; f += BH_CHUNK, j++) {
            uint32_t l = f + BH_CHUNK < nq ? f + BH_CHUNK : nq;
            for (int h = 0; h < 2; h++) {
                int k2 = (int)((j + (uint32_t)h) & 1);
                secs[k2] += bh_search_span(sides[k2], f, l);
            }
        }
        double server_cpu = bh_server_cpu(&srv) - c0; /* only the HTTP chunks use the server */
        for (int k2 = 0; k2 < 2; k2++) {
            double qps = nq / secs[k2];
            bh_search_pct(sides[k2], &p50, &p99);
            char key[64];
            if (k2) {
                snprintf(key, sizeof key, "search_http_c%u_server_cpu_us_per_query", nt);
                bench_json_num(key, server_cpu * 1e6 / nq);
            }
            snprintf(key, sizeof key, "search_%s_c%u_qps", names[k2], nt);
            bench_json_num(key, qps);
            snprintf(key, sizeof key, "search_%s_c%u_p50_ms", names[k2], nt);
            bench_json_num(key, p50);
            snprintf(key, sizeof key, "search_%s_c%u_p99_ms", names[k2], nt);
            bench_json_num(key, p99);
        }
    }
    bench_json_end();

    bh_server_stop(&srv);
    jvdb_env_close(env);
    for (uint32_t i = 0; i < nq; i++) free(bodies[i]);
    free(bodies);
    free(queries);
    free(lat);
    free(lat_http);
    bench_data_free(&d);
    if (bh_tls) SSL_CTX_free(bh_tls);
    return 0;
}

/*
 * metrics.c — GET /metrics in the Prometheus text format (version 0.0.4).
 *
 * Backups are counted by backup_run() (routes_backup.c) and read here.
 *
 * Request metrics are counted on the hot path with relaxed atomics only (no lock): a counter per
 * (route, status) and a latency histogram per route, both indexed by the route table's position
 * (routes.c), plus one slot per method for requests no route matched (so a scan of PUTs and a
 * scan of GETs are told apart).  Everything else — per-database sizes, LSNs and index state,
 * compaction totals, the process's memory, descriptors and CPU (/proc/self) — is read when the
 * endpoint is scraped, so it costs nothing between scrapes and can never drift from the truth.
 */
#include "server/srv.h"

#include "core/clock.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Methods of unmatched requests get their own slots; anything else is "other". */
static const char *const metrics_methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other" };
#define METRICS_NMETHOD ((int)(sizeof metrics_methods / sizeof metrics_methods[0]))

static const int metrics_statuses[] = { 200, 201, 202, 400, 401, 404, 405, 409, 413, 500, 503 };
#define METRICS_NSTATUS ((int)(sizeof metrics_statuses / sizeof metrics_statuses[0]) + 1) /* + other */

/* Upper bounds in microseconds (rendered in seconds). */
static const uint64_t metrics_buckets_us[] = { 100,   250,    500,    1000,   2500,    5000,    10000,   25000,
                                               50000, 100000, 250000, 500000, 1000000, 2500000, 10000000 };
#define METRICS_NBUCKET ((int)(sizeof metrics_buckets_us / sizeof metrics_buckets_us[0]) + 1) /* + +Inf */

struct metrics_route {
    atomic_uint_fast64_t by_status[METRICS_NSTATUS];
    atomic_uint_fast64_t bucket[METRICS_NBUCKET];
    atomic_uint_fast64_t sum_us;
    atomic_uint_fast64_t count;
};

struct metrics {
    int nroutes; /* s->routes->count() + METRICS_NMETHOD (unmatched, by method) */
    struct metrics_route *routes;
};

int metrics_init(struct server *s)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return -1;
    m->nroutes = s->routes->count() + METRICS_NMETHOD;
    m->routes = calloc((size_t)m->nroutes, sizeof *m->routes);
    if (!m->routes) {
        free(m);
        return -1;
    }
    s->metrics = m;
    return 0;
}

void metrics_free(struct server *s)
{
    if (!s->metrics) return;
    free(s->metrics->routes);
    free(s->metrics);
    s->metrics = NULL;
}

/* The route label and method of slot r. */
static const char *metrics_slot_route(const struct srv_routes *rt, int r)
{
    return r < rt->count() ? rt->label(r) : "unmatched";
}
/* The method of slot r: the route's, or the method an unmatched slot counts. */
static const char *metrics_slot_method(const struct srv_routes *rt, int r)
{
    return r < rt->count() ? rt->method(r) : metrics_methods[r - rt->count()];
}

void metrics_observe(struct server *s, int route, const char *method, int status, uint64_t us)
{
    struct metrics *m = s->metrics;
    if (!m) return;
    if (route < 0 || route >= s->routes->count()) {
        int mi = METRICS_NMETHOD - 1;
        for (int i = 0; i < METRICS_NMETHOD - 1; i++)
            if (method && !strcmp(method, metrics_methods[i])) mi = i;
        route = s->routes->count() + mi;
    }
    struct metrics_route *r = &m->routes[route];
    int si = METRICS_NSTATUS - 1;
    for (int i = 0; i < METRICS_NSTATUS - 1; i++)
        if (metrics_statuses[i] == status) si = i;
    int b = 0;
    while (b < METRICS_NBUCKET - 1 && us > metrics_buckets_us[b]) b++;
    atomic_fetch_add_explicit(&r->by_status[si], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);
}

/* ---------------------------------------------------------------- rendering */

struct mbuf {
    char *p;
    size_t len, cap;
    int oom;
};

__attribute__((format(printf, 2, 3))) static void mb_printf(struct mbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* Writes a metric family's # HELP and # TYPE lines, which Prometheus wants before its samples. */
static void mb_head(struct mbuf *b, const char *name, const char *type, const char *help)
{
    mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The HTTP families: requests by route, method and status, the latency histogram by route (cumulative
 * buckets), and the requests in flight.  Series still at zero are left out. */
static void metrics_render_requests(struct server *s, struct mbuf *b)
{
    struct metrics *m = s->metrics;
    mb_head(b, "jvdb_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    for (int r = 0; r < m->nroutes; r++) {
        for (int i = 0; i < METRICS_NSTATUS; i++) {
            uint64_t v = atomic_load_explicit(&m->routes[r].by_status[i], memory_order_relaxed);
            if (!v) continue;
            char st[8];
            if (i < METRICS_NSTATUS - 1) snprintf(st, sizeof st, "%d", metrics_statuses[i]);
            else snprintf(st, sizeof st, "other");
            mb_printf(b, "jvdb_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                      metrics_slot_route(s->routes, r), metrics_slot_method(s->routes, r), st, v);
        }
    }
    mb_head(b, "jvdb_http_request_duration_seconds", "histogram",
            "Time from request headers to the end of the answer, by route.");
    for (int r = 0; r < m->nroutes; r++) {
        struct metrics_route *mr = &m->routes[r];
        uint64_t count = atomic_load_explicit(&mr->count, memory_order_relaxed);
        if (!count) continue;
        uint64_t cum = 0;
        for (int i = 0; i < METRICS_NBUCKET; i++) {
            cum += atomic_load_explicit(&mr->bucket[i], memory_order_relaxed);
            if (i < METRICS_NBUCKET - 1)
                mb_printf(
                    b, "jvdb_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                    metrics_slot_route(s->routes, r), metrics_slot_method(s->routes, r),
                    (double)metrics_buckets_us[i] / 1e6, cum);
            else
                mb_printf(b,
                          "jvdb_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"+Inf\"} %" PRIu64
                          "\n",
                          metrics_slot_route(s->routes, r), metrics_slot_method(s->routes, r), cum);
        }
        mb_printf(b, "jvdb_http_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.6f\n",
                  metrics_slot_route(s->routes, r), metrics_slot_method(s->routes, r),
                  (double)atomic_load_explicit(&mr->sum_us, memory_order_relaxed) / 1e6);
        mb_printf(b, "jvdb_http_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %" PRIu64 "\n",
                  metrics_slot_route(s->routes, r), metrics_slot_method(s->routes, r), cum);
    }
    mb_head(b, "jvdb_http_requests_in_flight", "gauge",
            "Requests whose headers have arrived and that are not answered yet.");
    mb_printf(b, "jvdb_http_requests_in_flight %ld\n", http_inflight(s));
}

/* Per-database index state: graph size, memory, and how far it lags the stored vectors. */
static void metrics_render_indexes(struct mbuf *b, char **names, const jvdb_index_status *ix, size_t n)
{
    static const struct {
        const char *name, *help;
    } g[] = {
        { "jvdb_index_nodes", "Nodes of the HNSW graph, deleted ones included (0 for FLAT)." },
        { "jvdb_index_deleted_nodes", "Graph nodes of deleted vectors, not yet rebuilt away." },
        { "jvdb_index_pending_vectors", "Stored vectors not yet in the graph (searched exactly meanwhile)." },
        { "jvdb_index_memory_bytes", "Memory of the graph (vectors excluded)." },
    };
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
        mb_head(b, g[k].name, "gauge", g[k].help);
        for (size_t i = 0; i < n; i++) {
            uint64_t v = k == 0   ? ix[i].nodes
                         : k == 1 ? ix[i].deleted_nodes
                         : k == 2 ? ix[i].pending
                                  : ix[i].memory_bytes;
            mb_printf(b, "%s{database=\"%s\"} %" PRIu64 "\n", g[k].name, names[i], v);
        }
    }
    mb_head(b, "jvdb_index_info", "gauge", "The index type of each database and whether it has caught up (state).");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_index_info{database=\"%s\",type=\"%s\",state=\"%s\"} 1\n", names[i],
                  ix[i].type == JVDB_INDEX_FLAT ? "flat" : "hnsw", ix[i].pending ? "catching_up" : "ready");
}

/* Compaction totals (background and API) with a database label; the unlabelled series below
 * stay the sums, as before. */
static void metrics_render_db_compaction(struct server *s, struct mbuf *b, char **names, size_t n)
{
    jvdb_compactor_totals *t = calloc(n ? n : 1, sizeof *t);
    if (!t) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) compact_log_totals(s, names[i], &t[i], NULL);
    mb_head(b, "jvdb_database_compactions_total", "counter", "Compactions finished, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_database_compactions_total{database=\"%s\"} %" PRIu64 "\n", names[i], t[i].compactions);
    mb_head(b, "jvdb_database_compaction_failures_total", "counter", "Compactions that failed, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_database_compaction_failures_total{database=\"%s\"} %" PRIu64 "\n", names[i], t[i].failures);
    mb_head(b, "jvdb_database_compaction_bytes_reclaimed_total", "counter",
            "Bytes given back by compaction, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_database_compaction_bytes_reclaimed_total{database=\"%s\"} %" PRIu64 "\n", names[i],
                  t[i].bytes_reclaimed);
    mb_head(b, "jvdb_database_compaction_seconds_total", "counter", "Time spent compacting, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_database_compaction_seconds_total{database=\"%s\"} %.6f\n", names[i], t[i].seconds);
    free(t);
}

/* The per-database gauges (size, dead bytes, segments, LSN, index readiness) and the per-database index and
 * compaction families; each database is held while read, and one dropped meanwhile shows zeros. */
static void metrics_render_databases(struct server *s, struct mbuf *b)
{
    char **names = NULL;
    size_t n = 0;
    if (jvdb_db_list(s->env, &names, &n) != JVDB_OK) return;
    jvdb_stats *st = calloc(n ? n : 1, sizeof *st);
    jvdb_index_status *ix = calloc(n ? n : 1, sizeof *ix);
    if (!st || !ix) {
        b->oom = 1;
        free(st);
        st = NULL;
    } else {
        for (size_t i = 0; i < n; i++) {
            jvdb_db *db;
            if (srv_db_hold(s, names[i], &db) != JVDB_OK) continue; /* dropped meanwhile: zeros */
            jvdb_stats_get(db, &st[i]);
            jvdb_db_index_status(db, &ix[i]);
            srv_db_unhold(s, db);
        }
    }
    if (st) {
        static const struct {
            const char *name, *help;
        } g[] = {
            { "jvdb_database_vectors", "Live vectors in the database." },
            { "jvdb_database_dead_ratio", "Dead bytes over file bytes (what compaction can reclaim)." },
            { "jvdb_database_file_bytes", "Bytes of all segment files." },
            { "jvdb_database_dead_bytes", "Bytes of overwritten and deleted records." },
            { "jvdb_database_segments", "Segment files." },
            { "jvdb_database_last_lsn", "Log sequence number of the newest write." },
        };
        for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
            mb_head(b, g[k].name, "gauge", g[k].help);
            for (size_t i = 0; i < n; i++) {
                double v = k == 0   ? (double)st[i].live_records
                           : k == 1 ? st[i].dead_ratio
                           : k == 2 ? (double)st[i].file_bytes
                           : k == 3 ? (double)st[i].dead_bytes
                           : k == 4 ? (double)st[i].segments
                                    : (double)st[i].last_lsn;
                mb_printf(b, "%s{database=\"%s\"} %.17g\n", g[k].name, names[i], v);
            }
        }
        metrics_render_indexes(b, names, ix, n);
        metrics_render_db_compaction(s, b, names, n);
    }
    /* Index readiness, from the statuses read above (zeros for a database dropped meanwhile). */
    static const struct {
        const char *name, *help;
    } gi[] = {
        { "jvdb_index_state", "HNSW index state: 0 ready, 1 loading the saved graph, 2 catching up, 3 rebuilding." },
        { "jvdb_index_pending", "Vectors written but not yet in the HNSW graph (searched exactly meanwhile)." },
    };
    for (size_t k = 0; st && k < sizeof gi / sizeof gi[0]; k++) {
        mb_head(b, gi[k].name, "gauge", gi[k].help);
        for (size_t i = 0; i < n; i++) {
            unsigned long long v = k == 0 ? (unsigned long long)ix[i].state : ix[i].pending;
            mb_printf(b, "%s{database=\"%s\"} %llu\n", gi[k].name, names[i], v);
        }
    }
    free(st);
    free(ix);
    jvdb_free_names(names, n);
}

/* The server-wide compaction counters (background and API runs alike) and the running gauge. */
static void metrics_render_compaction(struct server *s, struct mbuf *b)
{
    jvdb_compactor_totals t;
    compact_log_totals(s, NULL, &t, NULL);
    mb_head(b, "jvdb_compactions_total", "counter", "Compactions finished (background and API).");
    mb_printf(b, "jvdb_compactions_total %" PRIu64 "\n", t.compactions);
    mb_head(b, "jvdb_compaction_failures_total", "counter", "Compactions that failed.");
    mb_printf(b, "jvdb_compaction_failures_total %" PRIu64 "\n", t.failures);
    mb_head(b, "jvdb_compaction_bytes_reclaimed_total", "counter", "Bytes given back by compaction.");
    mb_printf(b, "jvdb_compaction_bytes_reclaimed_total %" PRIu64 "\n", t.bytes_reclaimed);
    mb_head(b, "jvdb_compaction_records_copied_total", "counter", "Live records copied by compaction.");
    mb_printf(b, "jvdb_compaction_records_copied_total %" PRIu64 "\n", t.records_copied);
    mb_head(b, "jvdb_compaction_seconds_total", "counter", "Time spent compacting.");
    mb_printf(b, "jvdb_compaction_seconds_total %.6f\n", t.seconds);
    mb_head(b, "jvdb_compactions_running", "gauge", "Background compactions in progress.");
    mb_printf(b, "jvdb_compactions_running %d\n", t.running);
}

/* Backup totals with a database label (databases this server backed up since it started); the
 * series without it stay the sums over every database. */
static void metrics_render_db_backups(struct server *s, struct mbuf *b)
{
    enum { cap = 256 };
    char(*names)[JVDB_MAX_NAME_LEN + 1] = malloc(cap * sizeof *names);
    struct backup_totals(*t)[4][2] = malloc(cap * sizeof *t);
    if (!names || !t) {
        free(names);
        free(t);
        b->oom = 1;
        return;
    }
    size_t n = backup_log_databases(s, names, t, cap);
    static const char *result[2] = { "ok", "failed" };
    mb_head(b, "jvdb_database_backups_total", "counter", "Backups taken, by database, type and result.");
    for (size_t i = 0; i < n; i++)
        for (int ty = 1; ty <= 3; ty++)
            for (int r = 0; r < 2; r++)
                mb_printf(b, "jvdb_database_backups_total{database=\"%s\",type=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                          names[i], jvdb_backup_type_name((jvdb_backup_type)ty), result[r], t[i][ty][r].count);
    mb_head(b, "jvdb_database_backup_seconds_total", "counter", "Time spent taking backups, by database and result.");
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < 2; r++) {
            double secs = 0;
            for (int ty = 1; ty <= 3; ty++) secs += t[i][ty][r].seconds;
            mb_printf(b, "jvdb_database_backup_seconds_total{database=\"%s\",result=\"%s\"} %.6f\n", names[i],
                      result[r], secs);
        }
    mb_head(b, "jvdb_database_backup_stored_bytes_total", "counter",
            "Compressed bytes stored in the repository, by database.");
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = 0;
        for (int ty = 1; ty <= 3; ty++) bytes += t[i][ty][0].stored_bytes;
        mb_printf(b, "jvdb_database_backup_stored_bytes_total{database=\"%s\"} %" PRIu64 "\n", names[i], bytes);
    }
    free(names);
    free(t);
}

/* The last restore drill of each database (--backup-drill-every). */
static void metrics_render_drills(struct server *s, struct mbuf *b)
{
    enum { cap = 256 };
    char(*names)[JVDB_MAX_NAME_LEN + 1] = malloc(cap * sizeof *names);
    int64_t *at = malloc(cap * sizeof *at);
    jvdb_drill_report *r = malloc(cap * sizeof *r);
    size_t n = names && at && r ? sched_drill_results(s, names, at, r, cap) : 0;
    if (!names || !at || !r) b->oom = 1;
    mb_head(b, "jvdb_backup_drill_timestamp_seconds", "gauge", "Unix time of the last restore drill, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_drill_timestamp_seconds{database=\"%s\"} %.3f\n", names[i], (double)at[i] / 1e9);
    mb_head(b, "jvdb_backup_drill_passed", "gauge", "1 if the last restore drill passed, 0 if it failed, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_drill_passed{database=\"%s\"} %d\n", names[i], r[i].passed ? 1 : 0);
    mb_head(b, "jvdb_backup_drill_restore_seconds", "gauge", "Restore time of the last restore drill, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_drill_restore_seconds{database=\"%s\"} %.6f\n", names[i], r[i].restore_seconds);
    mb_head(b, "jvdb_backup_drill_records_checked", "gauge",
            "Records the last restore drill found identical to the live database, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_drill_records_checked{database=\"%s\"} %" PRIu64 "\n", names[i],
                  r[i].checked_records);
    free(names);
    free(at);
    free(r);
}

/* Continuous backup (ship.c): per database, how far the repository's log is behind. */
static void metrics_render_ship(struct server *s, struct mbuf *b)
{
    enum { cap = 256 };
    char(*names)[JVDB_MAX_NAME_LEN + 1] = malloc(cap * sizeof *names);
    struct ship_figures *f = malloc(cap * sizeof *f);
    size_t n = names && f ? ship_figures_all(s, names, f, cap) : 0;
    if (!names || !f) b->oom = 1;
    mb_head(b, "jvdb_backup_ship_lag_seconds", "gauge",
            "Age of the oldest acknowledged write not yet in the repository's log, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_ship_lag_seconds{database=\"%s\"} %.6f\n", names[i], f[i].lag_s);
    mb_head(b, "jvdb_backup_ship_pending_bytes", "gauge",
            "Record bytes acknowledged and not yet shipped, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_ship_pending_bytes{database=\"%s\"} %" PRIu64 "\n", names[i], f[i].pending_bytes);
    mb_head(b, "jvdb_backup_ship_shipped_lsn", "gauge", "The repository's log holds every write up to this LSN.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_ship_shipped_lsn{database=\"%s\"} %" PRIu64 "\n", names[i], f[i].shipped_lsn);
    mb_head(b, "jvdb_backup_ship_fenced", "gauge", "1 when another primary holds the log's lease (not shipping).");
    for (size_t i = 0; i < n; i++) mb_printf(b, "jvdb_backup_ship_fenced{database=\"%s\"} %d\n", names[i], f[i].fenced);
    mb_head(b, "jvdb_backup_ship_last_success_timestamp_seconds", "gauge", "Unix time of the last shipment.");
    for (size_t i = 0; i < n; i++)
        if (f[i].last_ok_ns)
            mb_printf(b, "jvdb_backup_ship_last_success_timestamp_seconds{database=\"%s\"} %.3f\n", names[i],
                      (double)f[i].last_ok_ns / 1e9);
    free(names);
    free(f);
}

/* The backup families: counts, time and bytes by type and result, the per-database and drill families, and
 * the time of each database's newest successful backup taken by this server. */
static void metrics_render_backups(struct server *s, struct mbuf *b)
{
    struct backup_totals t[4][2];
    backup_log_totals(s, t);
    static const char *result[2] = { "ok", "failed" };
    mb_head(b, "jvdb_backups_total", "counter", "Backups taken, by type and result.");
    for (int ty = 1; ty <= 3; ty++)
        for (int r = 0; r < 2; r++)
            mb_printf(b, "jvdb_backups_total{type=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                      jvdb_backup_type_name((jvdb_backup_type)ty), result[r], t[ty][r].count);
    mb_head(b, "jvdb_backup_seconds_total", "counter", "Time spent taking backups, by type and result.");
    for (int ty = 1; ty <= 3; ty++)
        for (int r = 0; r < 2; r++)
            mb_printf(b, "jvdb_backup_seconds_total{type=\"%s\",result=\"%s\"} %.6f\n",
                      jvdb_backup_type_name((jvdb_backup_type)ty), result[r], t[ty][r].seconds);
    mb_head(b, "jvdb_backup_raw_bytes_total", "counter", "Record bytes written to backups, by type.");
    for (int ty = 1; ty <= 3; ty++)
        mb_printf(b, "jvdb_backup_raw_bytes_total{type=\"%s\"} %" PRIu64 "\n",
                  jvdb_backup_type_name((jvdb_backup_type)ty), t[ty][0].raw_bytes);
    mb_head(b, "jvdb_backup_stored_bytes_total", "counter", "Compressed bytes stored in the repository, by type.");
    for (int ty = 1; ty <= 3; ty++)
        mb_printf(b, "jvdb_backup_stored_bytes_total{type=\"%s\"} %" PRIu64 "\n",
                  jvdb_backup_type_name((jvdb_backup_type)ty), t[ty][0].stored_bytes);
    metrics_render_db_backups(s, b);
    metrics_render_drills(s, b);
    if (s->ship) metrics_render_ship(s, b);
    char names[256][JVDB_MAX_NAME_LEN + 1];
    int64_t times[256];
    size_t n = backup_log_last(s, names, times, 256);
    mb_head(b, "jvdb_backup_last_success_timestamp_seconds", "gauge",
            "Unix time of the newest successful backup taken by this server, by database.");
    for (size_t i = 0; i < n; i++)
        mb_printf(b, "jvdb_backup_last_success_timestamp_seconds{database=\"%s\"} %.3f\n", names[i],
                  (double)times[i] / 1e9);
}

/* The process_* family of the Prometheus client libraries, from /proc/self and getrusage. */
static void metrics_render_process(struct server *s, struct mbuf *b)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsz = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsz, &rss) != 2) vsz = rss = 0;
        fclose(f);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu =
        (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') fds++;
    if (d) closedir(d), fds--; /* the descriptor of the listing itself */
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (double)rl.rlim_cur : -1;
    mb_head(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    mb_printf(b, "process_cpu_seconds_total %.6f\n", cpu);
    mb_head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    mb_printf(b, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    mb_head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    mb_printf(b, "process_virtual_memory_bytes %llu\n", vsz * (unsigned long long)page);
    mb_head(b, "process_open_fds", "gauge", "Open file descriptors.");
    mb_printf(b, "process_open_fds %ld\n", fds);
    mb_head(b, "process_max_fds", "gauge", "The open-file limit (RLIMIT_NOFILE soft limit).");
    mb_printf(b, "process_max_fds %.0f\n", maxfds);
    mb_head(b, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
    mb_printf(b, "process_start_time_seconds %.3f\n", (double)s->started_wall_ns / 1e9);
}

char *metrics_render(struct server *s, size_t *len)
{
    struct mbuf b = { malloc(16384), 0, 16384, 0 };
    if (!b.p) return NULL;
    b.p[0] = 0;
    mb_head(&b, "jvdb_build_info", "gauge", "Version of the running server.");
    mb_printf(&b, "jvdb_build_info{version=\"%s\"} 1\n", JVDB_VERSION);
    mb_head(&b, "jvdb_uptime_seconds", "gauge", "Seconds since the server started.");
    mb_printf(&b, "jvdb_uptime_seconds %.3f\n", (double)(clock_mono_ns() - s->started_mono_ns) / 1e9);
    metrics_render_requests(s, &b);
    metrics_render_databases(s, &b);
    metrics_render_compaction(s, &b);
    metrics_render_backups(s, &b);
    char *replica = follow_metrics(s);
    if (replica) mb_printf(&b, "%s", replica);
    free(replica);
    metrics_render_process(s, &b);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

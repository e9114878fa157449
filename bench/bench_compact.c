/*
 * bench_compact.c — owns libjvdb's side of issue 4's measurement: one database of the generated
 * vectors with a fraction deleted, compacted, in one of two phases (one per process, so each starts
 * from a freshly built database):
 *
 *   --phase time     compaction alone: its time, the bytes reclaimed, and the output file that
 *                    bench/run-compact copies with `cp` + `sync` as the yardstick; then every row is
 *                    read back (live ones byte-identical, deleted ones absent).
 *   --phase latency  get, put and search latency with no compaction running (the idle window);
 *                    optionally the same load while exact scans run back to back on one thread
 *                    (the scan window, --scan-seconds) and exact-scan throughput with one and two
 *                    scanning threads and nothing else (--scaling-seconds); then the same load while
 *                    a compaction runs: only operations due between the compaction's start and end
 *                    count as "during".  --timeline writes every operation of the compaction window
 *                    (with a second before and after it) for bench/run-compact's latency chart.
 *
 * The load is paced (--get-rate, --put-rate, --search-rate per second, one thread each) rather than
 * flat out: on a two-core machine an unpaced reader would take a whole core from the compaction and
 * measure CPU sharing instead of what the library's locks and I/O do to a request.  Two latencies are kept per
 * operation: service time (the call alone) and response time (from when the fixed schedule said it
 * was due, which is what a client sees when a stall holds up the requests behind it).  A get checks
 * the vector it got against the generated row, so a missing or wrong live record during compaction
 * is counted, not just timed.
 *
 * The read side is both jvdb_get of random live ids and jvdb_search (k = 10) of queries from
 * datagen's query stream: exact (one scan thread, the CLI's default) or through the HNSW graph,
 * which is built, and waited for, before the idle window.
 *
 * Output: one JSON object on stdout (bench/run-compact parses it).
 */
#include "bench_compact.h"
#include "bench_util.h"

#include "jvdb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_copts {
    bench_opts b;
    double delete_frac;
    const char *phase; /* "time" or "latency" */
    double idle_s;     /* length of the idle latency window */
    double get_rate, put_rate;
    const char *sync;   /* the database's sync mode while latency is measured */
    const char *search; /* "exact", "hnsw" or "none" */
    double search_rate;
    double scan_s;             /* length of the window with back-to-back exact scans (0: none) */
    double scaling_s;          /* per thread count, exact-scan throughput alone (0: not measured) */
    const char *timeline;      /* file for every operation of the compaction window, or NULL */
    const char *scan_timeline; /* the same for the scan window, with each scan's start and end */
    uint32_t ef_construction;  /* HNSW build effort; 0 = the database's default */
} bench_copts;

static void bench_usage(void)
{
    fprintf(stderr,
            "usage: bench_compact --dir DIR --phase time|latency [options]\n"
            "%s"
            "  --delete-frac F   fraction of the rows deleted before compacting (default 0.4)\n"
            "  --idle-seconds S  latency phase: length of the window without compaction (default 5)\n"
            "  --get-rate R      latency phase: gets per second (default 2000)\n"
            "  --put-rate R      latency phase: puts per second (default 100)\n"
            "  --sync MODE       latency phase: the database's sync mode for the puts (default always)\n"
            "  --search KIND     latency phase: exact, hnsw or none (default exact)\n"
            "  --search-rate R   latency phase: searches per second (default 4)\n"
            "  --scan-seconds S  latency phase: a window of the same load with exact scans back to\n"
            "                    back on one thread (default 0: none)\n"
            "  --scaling-seconds S  latency phase: exact-scan queries per second with 1 and 2\n"
            "                    scanning threads, S seconds each, nothing else running (default 0)\n"
            "  --timeline FILE   latency phase: write every operation of the compaction window\n"
            "  --scan-timeline FILE  the same for the scan window (\"scan\" lines: each scan)\n"
            "  --ef-construction N  latency phase, --search hnsw: the graph's build effort (default:\n"
            "                    the database's, 200); a smaller one builds a 600,000-node graph in a\n"
            "                    fraction of the time, and a search's cost depends on ef, not on it\n",
            bench_common_usage());
    exit(2);
}

static double bench_parse_pos(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0)) bench_die(0, "bad value '%s' for %s", s, opt);
    return v;
}

static void bench_parse(int argc, char **argv, bench_copts *o)
{
    bench_opts_default(&o->b);
    o->delete_frac = 0.4;
    o->phase = NULL;
    o->idle_s = 5;
    o->get_rate = 2000;
    o->put_rate = 100;
    o->sync = "always";
    o->search = "exact";
    o->search_rate = 4;
    o->scan_s = 0;
    o->scaling_s = 0;
    o->timeline = NULL;
    o->scan_timeline = NULL;
    o->ef_construction = 0;
    for (int i = 1; i < argc; i++) {
        if (bench_parse_common(argc, argv, &i, &o->b)) continue;
        const char *a = argv[i];
        if (i + 1 >= argc) bench_usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--phase")) o->phase = v;
        else if (!strcmp(a, "--delete-frac")) o->delete_frac = bench_parse_pos(a, v);
        else if (!strcmp(a, "--idle-seconds")) o->idle_s = bench_parse_pos(a, v);
        else if (!strcmp(a, "--get-rate")) o->get_rate = bench_parse_pos(a, v);
        else if (!strcmp(a, "--put-rate")) o->put_rate = bench_parse_pos(a, v);
        else if (!strcmp(a, "--sync")) o->sync = v;
        else if (!strcmp(a, "--search")) o->search = v;
        else if (!strcmp(a, "--search-rate")) o->search_rate = bench_parse_pos(a, v);
        else if (!strcmp(a, "--scan-seconds")) o->scan_s = bench_parse_pos(a, v);
        else if (!strcmp(a, "--scaling-seconds")) o->scaling_s = bench_parse_pos(a, v);
        else if (!strcmp(a, "--timeline")) o->timeline = v;
        else if (!strcmp(a, "--scan-timeline")) o->scan_timeline = v;
        else if (!strcmp(a, "--ef-construction")) o->ef_construction = (uint32_t)bench_parse_pos(a, v);
        else bench_usage();
    }
    if (!o->b.dir || !o->phase || (strcmp(o->phase, "time") && strcmp(o->phase, "latency"))) bench_usage();
    if (o->delete_frac > 1) bench_die(0, "--delete-frac must be at most 1");
    if (strcmp(o->search, "exact") && strcmp(o->search, "hnsw") && strcmp(o->search, "none"))
        bench_die(0, "--search must be exact, hnsw or none");
    if (strcmp(o->b.meta, "none") != 0) bench_die(0, "the SQLite peer stores no metadata: use --meta none");
}

static void bench_check(int rc, const char *what)
{
    if (rc != JVDB_OK) bench_die(0, "%s: %s (%s)", what, jvdb_strerror(rc), jvdb_errmsg());
}

/* ---------------------------------------------------------------- the database */

typedef struct bench_built {
    jvdb_env *env;
    jvdb_db *db;
    uint32_t *live_rows; /* rows still present, for the readers and the check */
    uint64_t nlive, ndeleted;
    double load_s, delete_s;
} bench_built;

/* Loads every row, then deletes the chosen fraction, with sync never (the load is not what is
 * measured) and one jvdb_sync at the end so the compaction starts with nothing dirty of ours. */
static void bench_build(const bench_copts *o, const bench_data *d, bench_built *b)
{
    memset(b, 0, sizeof *b);
    char path[4096];
    snprintf(path, sizeof path, "%s/jvdb", o->b.dir);
    bench_check(jvdb_env_open(path, &b->env), "open the data directory");
    jvdb_db_drop(b->env, "bench"); /* a leftover of an interrupted run */
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, d->dim);
    dbo.sync = JVDB_SYNC_NEVER;
    bench_check(jvdb_db_create(b->env, "bench", &dbo, &b->db), "create the database");

    jvdb_record *recs = malloc(o->b.batch * sizeof *recs);
    b->live_rows = malloc(d->n * sizeof *b->live_rows);
    if (!recs || !b->live_rows) bench_die(ENOMEM, "out of memory");
    double t0 = bench_now();
    for (uint64_t first = 0; first < d->n; first += o->b.batch) {
        uint64_t end = first + o->b.batch < d->n ? first + o->b.batch : d->n;
        for (uint64_t r = first; r < end; r++)
            recs[r - first] = (jvdb_record){ d->ids[r], d->vectors + r * d->dim, d->dim, NULL };
        bench_check(jvdb_put_batch(b->db, recs, end - first, NULL), "put_batch");
    }
    bench_check(jvdb_sync(b->db), "sync");
    b->load_s = bench_now() - t0;
    free(recs);

    t0 = bench_now();
    for (uint64_t r = 0; r < d->n; r++) {
        if (bench_cd_deleted(o->b.data.seed, r, o->delete_frac)) {
            bench_check(jvdb_delete(b->db, d->ids[r], NULL), "delete");
            b->ndeleted++;
        } else {
            b->live_rows[b->nlive++] = (uint32_t)r;
        }
    }
    bench_check(jvdb_sync(b->db), "sync");
    b->delete_s = bench_now() - t0;
    /* Settle: no dirty pages of the load left for the compaction's fdatasync to wait for. */
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

static void bench_built_close(bench_built *b)
{
    jvdb_env_close(b->env);
    free(b->live_rows);
}

/* Reads every row back: live ones must be byte-identical, deleted ones absent. */
static int bench_verify(const bench_copts *o, const bench_data *d, jvdb_db *db)
{
    float *v = malloc(d->dim * sizeof *v);
    uint64_t bad = 0;
    for (uint64_t r = 0; r < d->n; r++) {
        int rc = jvdb_get(db, d->ids[r], v, NULL);
        if (bench_cd_deleted(o->b.data.seed, r, o->delete_frac)) bad += rc != JVDB_ENOTFOUND;
        else bad += rc != JVDB_OK || memcmp(v, d->vectors + r * d->dim, d->dim * sizeof *v) != 0;
    }
    free(v);
    if (bad) fprintf(stderr, "bench: %llu rows read back wrong after compaction\n", (unsigned long long)bad);
    return bad == 0;
}

/* The biggest segment file after compaction: the output (a single one below the 1 GiB segment
 * size), which run-compact copies as the cp + sync yardstick. */
static void bench_largest_segment(const char *dir, char *out, size_t size, uint64_t *bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/jvdb/databases/bench", dir);
    DIR *dh = opendir(path);
    if (!dh) bench_die(errno, "cannot list %s", path);
    *bytes = 0;
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".seg")) continue;
        char p[4096 + 256 + 2];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        uint64_t s = bench_file_size(p);
        if (s > *bytes && strlen(p) < size) {
            *bytes = s;
            memcpy(out, p, strlen(p) + 1);
        }
    }
    closedir(dh);
}

/* "<prefix>_<name>" fields: the result line groups its many numbers by step and window. */
static void bench_json_pint(const char *prefix, const char *name, long long v)
{
    char k[96];
    snprintf(k, sizeof k, "%s_%s", prefix, name);
    bench_json_int(k, v);
}

static void bench_json_pnum(const char *prefix, const char *name, double v)
{
    char k[96];
    snprintf(k, sizeof k, "%s_%s", prefix, name);
    bench_json_num(k, v);
}

static void bench_json_stats(const char *prefix, const jvdb_stats *st)
{
    bench_json_pint(prefix, "file_bytes", (long long)st->file_bytes);
    bench_json_pint(prefix, "live_bytes", (long long)st->live_bytes);
    bench_json_pint(prefix, "dead_bytes", (long long)st->dead_bytes);
    bench_json_pnum(prefix, "dead_ratio", st->dead_ratio);
}

static void bench_json_compact(const char *prefix, const jvdb_compact_stats *cs, double wall_s)
{
    char k[64];
    snprintf(k, sizeof k, "%s_trigger", prefix);
    bench_json_str(k, jvdb_compact_trigger_name(cs->trigger));
    bench_json_pnum(prefix, "s", cs->seconds);
    bench_json_pnum(prefix, "wall_s", wall_s);
    const struct {
        const char *name;
        uint64_t v;
    } f[] = { { "bytes_before", cs->bytes_before },       { "bytes_after", cs->bytes_after },
              { "bytes_reclaimed", cs->bytes_reclaimed }, { "records_copied", cs->records_copied },
              { "records_dropped", cs->records_dropped }, { "tombstones_dropped", cs->tombstones_dropped },
              { "segments_in", cs->segments_in },         { "segments_out", cs->segments_out } };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) bench_json_pint(prefix, f[i].name, (long long)f[i].v);
}

/* What the process used during the compaction; involuntary context switches show how much the
 * other work on the machine took the CPU away. */
static void bench_json_compact_region(const bench_region *r)
{
    bench_json_pnum("compact", "user_s", r->user_s);
    bench_json_pnum("compact", "sys_s", r->sys_s);
    bench_json_pint("compact", "minor_faults", r->minor_faults);
    bench_json_pint("compact", "voluntary_cs", r->vol_cs);
    bench_json_pint("compact", "involuntary_cs", r->invol_cs);
    bench_json_pint("compact", "proc_write_bytes", r->write_bytes);
}

static void bench_compact_once(jvdb_db *db, jvdb_compact_stats *cs, double *wall)
{
    /* full: every sealed segment, as an operator's `jvdb compact --full` would; the policy's own
     * trigger (dead ratio) fires, nothing is forced. */
    jvdb_compact_options co = { .full = 1 };
    double t0 = bench_now();
    bench_check(jvdb_compact(db, &co, cs), "compact");
    *wall = bench_now() - t0;
    if (cs->trigger == JVDB_TRIGGER_NONE) bench_die(0, "the policy did not ask for a compaction");
}

static int bench_phase_time(const bench_copts *o, const bench_data *d)
{
    bench_built b;
    bench_build(o, d, &b);
    jvdb_stats before, after;
    bench_check(jvdb_stats_get(b.db, &before), "stats");

    jvdb_compact_stats cs;
    double wall;
    bench_region reg;
    bench_region_begin(&reg);
    bench_compact_once(b.db, &cs, &wall);
    bench_region_end(&reg);
    bench_check(jvdb_stats_get(b.db, &after), "stats");

    char out_path[4096];
    uint64_t out_bytes;
    bench_largest_segment(o->b.dir, out_path, sizeof out_path, &out_bytes);
    int ok = bench_verify(o, d, b.db) && jvdb_count(b.db) == b.nlive && after.dead_bytes == 0;

    bench_json_begin();
    bench_json_str("engine", "jvdb");
    bench_json_str("phase", "time");
    bench_json_common(&o->b, d);
    bench_json_num("delete_frac", o->delete_frac);
    bench_json_int("live", (long long)b.nlive);
    bench_json_int("deleted", (long long)b.ndeleted);
    bench_json_num("load_s", b.load_s);
    bench_json_num("delete_s", b.delete_s);
    bench_json_stats("before", &before);
    bench_json_stats("after", &after);
    bench_json_compact("compact", &cs, wall);
    bench_json_compact_region(&reg);
    bench_json_str("output_path", out_path);
    bench_json_int("output_bytes", (long long)out_bytes);
    bench_json_str("verify", ok ? "ok" : "FAILED");
    bench_json_end();
    bench_built_close(&b);
    return ok ? 0 : 1;
}

/* ---------------------------------------------------------------- paced load */

enum { BENCH_GET, BENCH_PUT, BENCH_SEARCH, BENCH_NKINDS };
static const char *const bench_kind_name[BENCH_NKINDS] = { "get", "put", "search" };

typedef struct bench_worker {
    int kind;
    double rate;
    jvdb_db *db;
    const bench_data *d;
    const bench_built *b;
    atomic_int *stop;
    uint64_t rng;
    uint64_t next_new;     /* puts: number of the next new id */
    const char *tag;       /* puts: keeps ids of the two windows apart */
    const dg_gen *queries; /* searches: datagen's query stream */
    int exact;             /* searches: scan instead of the graph */
    /* Per operation: when it was due, how long the call took (service time) and how long after it
     * was due it finished (response time). */
    double *t_due, *service, *response;
    /* Whether the call slept (a voluntary context switch: a lock, a futex, I/O) as opposed to being
     * merely preempted: on a machine whose CPUs are oversubscribed this tells a wait in the library
     * from a thread that was not running. */
    unsigned char *blocked;
    size_t n, cap;
    uint64_t missing, wrong, errors;
} bench_worker;

static uint64_t bench_rand(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return bench_cd_mix(*s);
}

static void bench_sleep_until(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Open loop on a fixed schedule: operation k is due at start + k / rate whatever happened before.
 * A call that stalls makes the ones due meanwhile run late, back to back, and their response time
 * counts from when they were due, as a client's would; timing only the calls that ran would hide a
 * stall behind a single slow sample ("coordinated omission"). */
static void *bench_worker_main(void *arg)
{
    bench_worker *w = arg;
    const bench_data *d = w->d;
    float *v = malloc(d->dim * sizeof *v);
    char id[64];
    double interval = 1.0 / w->rate, start = bench_now();
    for (uint64_t k = 0; !atomic_load(w->stop); k++) {
        double due = start + (double)k * interval;
        bench_sleep_until(due);
        struct rusage ru0, ru1;
        getrusage(RUSAGE_THREAD, &ru0);
        double t0 = bench_now();
        int rc;
        if (w->kind == BENCH_GET) {
            uint32_t row = w->b->live_rows[bench_rand(&w->rng) % w->b->nlive];
            rc = jvdb_get(w->db, d->ids[row], v, NULL);
            if (rc == JVDB_ENOTFOUND) w->missing++;
            else if (rc) w->errors++;
            else if (memcmp(v, d->vectors + (uint64_t)row * d->dim, d->dim * sizeof *v)) w->wrong++;
        } else if (w->kind == BENCH_SEARCH) {
            dg_query(w->queries, bench_rand(&w->rng) % 10000, v);
            jvdb_search_params sp;
            jvdb_search_params_init(&sp);
            sp.k = 10;
            sp.exact = w->exact;
            sp.threads = 1; /* one core for the scan, one for the compaction */
            jvdb_result *res;
            size_t cnt;
            rc = jvdb_search(w->db, v, d->dim, &sp, &res, &cnt);
            if (rc) w->errors++;
            else {
                /* Far more live vectors than k: a short answer means records went missing. */
                if (cnt != sp.k) w->missing++;
                jvdb_results_free(res, cnt);
            }
        } else {
            uint64_t nk = w->next_new++;
            snprintf(id, sizeof id, "new-%s-%llu", w->tag, (unsigned long long)nk);
            rc = jvdb_put(w->db, id, d->vectors + (nk % d->n) * d->dim, d->dim, NULL, NULL);
            if (rc) w->errors++;
        }
        double t1 = bench_now();
        getrusage(RUSAGE_THREAD, &ru1);
        if (w->n < w->cap) {
            w->blocked[w->n] = ru1.ru_nvcsw > ru0.ru_nvcsw;
            w->t_due[w->n] = due;
            w->service[w->n] = t1 - t0;
            w->response[w->n++] = t1 - due;
        }
    }
    free(v);
    return NULL;
}

typedef struct bench_load {
    atomic_int stop;
    bench_worker w[BENCH_NKINDS];
    pthread_t tid[BENCH_NKINDS];
} bench_load;

static void bench_load_start(bench_load *l, const bench_copts *o, const bench_data *d, const bench_built *b,
                             const dg_gen *queries, const char *tag, double max_s)
{
    atomic_store(&l->stop, 0);
    for (int i = 0; i < BENCH_NKINDS; i++) {
        bench_worker *w = &l->w[i];
        memset(w, 0, sizeof *w);
        w->kind = i;
        w->rate = i == BENCH_GET              ? o->get_rate
                  : i == BENCH_PUT            ? o->put_rate
                  : strcmp(o->search, "none") ? o->search_rate
                                              : 0;
        w->queries = queries;
        w->exact = !strcmp(o->search, "exact");
        w->db = b->db;
        w->d = d;
        w->b = b;
        w->stop = &l->stop;
        w->rng = 0x5eed0000ull + (uint64_t)i + (uint64_t)tag[0];
        w->tag = tag;
        w->cap = (size_t)(w->rate * max_s) + 1024;
        w->t_due = malloc(w->cap * sizeof *w->t_due);
        w->service = malloc(w->cap * sizeof *w->service);
        w->response = malloc(w->cap * sizeof *w->response);
        w->blocked = malloc(w->cap);
        if (!w->t_due || !w->service || !w->response || !w->blocked) bench_die(ENOMEM, "out of memory");
        if (w->rate > 0 && pthread_create(&l->tid[i], NULL, bench_worker_main, w) != 0)
            bench_die(errno, "pthread_create");
    }
}

static void bench_load_stop(bench_load *l)
{
    atomic_store(&l->stop, 1);
    for (int i = 0; i < BENCH_NKINDS; i++)
        if (l->w[i].rate > 0) pthread_join(l->tid[i], NULL);
}

/* Percentiles of one latency array over the operations due in [from, to], as JSON fields
 * "<prefix>_p50_ms" etc. */
static void bench_json_pcts(const char *prefix, const bench_worker *w, const double *lat, double from, double to)
{
    double *sel = malloc((w->n ? w->n : 1) * sizeof *sel);
    size_t k = 0, slow = 0, blocked = 0, blocked_slow = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->t_due[i] >= from && w->t_due[i] <= to) {
            sel[k++] = lat[i];
            slow += lat[i] > 0.010;
            blocked += w->blocked[i];
            blocked_slow += w->blocked[i] && w->service[i] > 0.010;
        }
    /* Calls that slept, and those of them whose call took over 10 ms. */
    bench_json_pint(prefix, "blocked", (long long)blocked);
    bench_json_pint(prefix, "blocked_over_10ms", (long long)blocked_slow);
    bench_json_pint(prefix, "ops", (long long)k);
    static const struct {
        const char *name;
        double p;
    } ps[] = { { "p50_ms", 50 }, { "p99_ms", 99 }, { "p999_ms", 99.9 }, { "max_ms", 100 } };
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        bench_json_pnum(prefix, ps[i].name, 1e3 * bench_percentile(sel, k, ps[i].p));
    bench_json_pint(prefix, "over_10ms", (long long)slow);
    free(sel);
}

/* "<window>_<op>_svc_*" (the call alone) and "<window>_<op>_resp_*" (from when it was due). */
static void bench_json_window(const char *prefix, const bench_worker *w, double from, double to)
{
    char p[64];
    snprintf(p, sizeof p, "%s_svc", prefix);
    bench_json_pcts(p, w, w->service, from, to);
    snprintf(p, sizeof p, "%s_resp", prefix);
    bench_json_pcts(p, w, w->response, from, to);
}

static void bench_json_worker_errors(const char *prefix, const bench_worker *w)
{
    bench_json_pint(prefix, "missing", (long long)w->missing);
    bench_json_pint(prefix, "wrong", (long long)w->wrong);
    bench_json_pint(prefix, "errors", (long long)w->errors);
}

static void bench_load_free(bench_load *l)
{
    for (int i = 0; i < BENCH_NKINDS; i++) {
        free(l->w[i].t_due);
        free(l->w[i].service);
        free(l->w[i].response);
        free(l->w[i].blocked);
    }
}

/* ---------------------------------------------------------------- back-to-back exact scans */

/* One thread issuing exact searches (k = 10) one after another, as fast as they complete: the
 * heaviest reader there is, which holds whatever a scan holds for as long as it can. */
typedef struct bench_scanner {
    jvdb_db *db;
    const bench_data *d;
    const dg_gen *queries;
    atomic_int *stop;
    uint32_t threads; /* the scan's own threads (jvdb_search_params.threads) */
    uint64_t rng;
    uint64_t done, errors, missing;
    double busy_s;                     /* the scans' times added up */
    double t_start[4096], t_end[4096]; /* the first scans' start and end, for the timeline */
    pthread_t tid;
} bench_scanner;

static void *bench_scanner_main(void *arg)
{
    bench_scanner *s = arg;
    float *v = malloc(s->d->dim * sizeof *v);
    if (!v) bench_die(ENOMEM, "out of memory");
    while (!atomic_load(s->stop)) {
        dg_query(s->queries, bench_rand(&s->rng) % 10000, v);
        jvdb_search_params sp;
        jvdb_search_params_init(&sp);
        sp.k = 10;
        sp.exact = 1;
        sp.threads = s->threads;
        jvdb_result *res;
        size_t cnt;
        double t0 = bench_now();
        int rc = jvdb_search(s->db, v, s->d->dim, &sp, &res, &cnt);
        double t1 = bench_now();
        s->busy_s += t1 - t0;
        if (s->done < 4096) {
            s->t_start[s->done] = t0;
            s->t_end[s->done] = t1;
        }
        if (rc) s->errors++;
        else {
            if (cnt != sp.k) s->missing++;
            jvdb_results_free(res, cnt);
        }
        s->done++;
    }
    free(v);
    return NULL;
}

static void bench_scanners_start(bench_scanner *s, size_t n, uint32_t threads, jvdb_db *db, const bench_data *d,
                                 const dg_gen *queries, atomic_int *stop)
{
    atomic_store(stop, 0);
    for (size_t i = 0; i < n; i++) {
        s[i] = (bench_scanner){
            .db = db, .d = d, .queries = queries, .stop = stop, .threads = threads, .rng = 0x5ca40000ull + i
        };
        if (pthread_create(&s[i].tid, NULL, bench_scanner_main, &s[i]) != 0) bench_die(errno, "pthread_create");
    }
}

static void bench_scanners_stop(bench_scanner *s, size_t n, atomic_int *stop)
{
    atomic_store(stop, 1);
    for (size_t i = 0; i < n; i++) pthread_join(s[i].tid, NULL);
}

/* Exact-scan throughput with nothing else running: `clients` threads each scanning with `threads`
 * scan threads, for about `secs`; queries per second over the whole time, the last scans included. */
typedef struct bench_scaling {
    double qps;
    uint64_t scans, bad;
} bench_scaling;

static bench_scaling bench_scan_throughput(jvdb_db *db, const bench_data *d, const dg_gen *queries, size_t clients,
                                           uint32_t threads, double secs)
{
    static bench_scanner s[2];
    atomic_int stop;
    double t0 = bench_now();
    bench_scanners_start(s, clients, threads, db, d, queries, &stop);
    bench_sleep_until(t0 + secs);
    bench_scanners_stop(s, clients, &stop);
    double t1 = bench_now();
    bench_scaling r = { 0 };
    for (size_t i = 0; i < clients; i++) {
        r.scans += s[i].done;
        r.bad += s[i].errors + s[i].missing;
    }
    r.qps = (double)r.scans / (t1 - t0);
    return r;
}

/* Every operation of the compaction window's load, for the latency-over-time chart: seconds since
 * the load started (when it was due), service and response time in ms. */
static void bench_write_timeline(const char *path, const bench_load *l, double t0, double c0, double c1,
                                 const bench_scanner *sc)
{
    FILE *f = fopen(path, "w");
    if (!f) bench_die(errno, "cannot write %s", path);
    fprintf(f, "# compact_start %.6f compact_end %.6f\n# kind due_s service_ms response_ms\n", c0 - t0, c1 - t0);
    for (uint64_t k = 0; sc && k < sc->done && k < 4096; k++)
        fprintf(f, "scan %.6f %.4f %.4f\n", sc->t_start[k] - t0, 1e3 * (sc->t_end[k] - sc->t_start[k]),
                1e3 * (sc->t_end[k] - sc->t_start[k]));
    for (int i = 0; i < BENCH_NKINDS; i++) {
        const bench_worker *w = &l->w[i];
        for (size_t k = 0; k < w->n; k++)
            fprintf(f, "%s %.6f %.4f %.4f\n", bench_kind_name[i], w->t_due[k] - t0, 1e3 * w->service[k],
                    1e3 * w->response[k]);
    }
    if (fclose(f) != 0) bench_die(errno, "cannot write %s", path);
}

static int bench_phase_latency(const bench_copts *o, const bench_data *d)
{
    bench_built b;
    bench_build(o, d, &b);
    jvdb_sync_mode mode;
    uint32_t interval_ms;
    if (jvdb_sync_parse(o->sync, &mode, &interval_ms)) bench_die(0, "bad --sync '%s'", o->sync);
    bench_check(jvdb_db_set_sync(b.db, mode, interval_ms), "set sync");
    dg_gen *queries;
    if (dg_open(&o->b.data, &queries) < 0) bench_die(errno, "cannot set up the query generator");
    /* The graph must be complete before anything is measured: vectors it has not taken in are
     * searched exactly, which would make the windows measure different work. */
    double index_s = 0;
    if (!strcmp(o->search, "hnsw")) {
        double t = bench_now();
        if (o->ef_construction) {
            jvdb_index_options io;
            jvdb_db_get_index(b.db, &io);
            io.ef_construction = o->ef_construction;
            bench_check(jvdb_db_set_index(b.db, &io), "set the HNSW build effort");
        }
        bench_check(jvdb_db_index_wait(b.db, UINT32_MAX), "build the HNSW graph");
        index_s = bench_now() - t;
    }

    /* Idle window: the same load, no compaction. */
    bench_load idle;
    bench_load_start(&idle, o, d, &b, queries, "idle", o->idle_s + 5);
    double i0 = bench_now();
    bench_sleep_until(i0 + o->idle_s);
    double i1 = bench_now();
    bench_load_stop(&idle);

    /* Scan window: the same load while one thread runs exact scans back to back (started first,
     * so the window opens with a scan already under way). */
    bench_load scan;
    bench_scanner scanner;
    atomic_int scan_stop;
    double s0 = 0, s1 = 0;
    if (o->scan_s > 0) {
        bench_scanners_start(&scanner, 1, 1, b.db, d, queries, &scan_stop);
        bench_sleep_until(bench_now() + 0.2);
        bench_load_start(&scan, o, d, &b, queries, "scan", o->scan_s + 5);
        s0 = bench_now();
        bench_sleep_until(s0 + o->scan_s);
        s1 = bench_now();
        bench_load_stop(&scan);
        bench_scanners_stop(&scanner, 1, &scan_stop);
    }

    /* Exact-scan throughput alone: does a second scanning thread double it (memory bandwidth and
     * cores permitting), or do scans hold each other up? */
    bench_scaling sc1 = { 0 }, sc2c = { 0 }, sc2t = { 0 };
    if (o->scaling_s > 0) {
        sc1 = bench_scan_throughput(b.db, d, queries, 1, 1, o->scaling_s);
        sc2c = bench_scan_throughput(b.db, d, queries, 2, 1, o->scaling_s);
        sc2t = bench_scan_throughput(b.db, d, queries, 1, 2, o->scaling_s);
    }

    /* During: the load runs a second alone, then the compaction runs under it, then a second more
     * (for the chart; only the operations due while the compaction ran count as "during"). */
    bench_load during;
    bench_load_start(&during, o, d, &b, queries, "during", 600);
    double t_during = bench_now();
    bench_sleep_until(t_during + 1.0);
    jvdb_compact_stats cs;
    double wall;
    double c0 = bench_now();
    bench_compact_once(b.db, &cs, &wall);
    double c1 = bench_now();
    bench_sleep_until(c1 + 1.0);
    bench_load_stop(&during);
    if (o->timeline) bench_write_timeline(o->timeline, &during, t_during, c0, c1, NULL);
    if (o->scan_timeline && o->scan_s > 0) bench_write_timeline(o->scan_timeline, &scan, s0, s0, s1, &scanner);

    int ok = 1;
    for (int i = 0; i < BENCH_NKINDS; i++) {
        ok &= idle.w[i].missing + idle.w[i].wrong + idle.w[i].errors == 0;
        ok &= during.w[i].missing + during.w[i].wrong + during.w[i].errors == 0;
        if (o->scan_s > 0) ok &= scan.w[i].missing + scan.w[i].wrong + scan.w[i].errors == 0;
    }
    if (o->scan_s > 0) ok &= scanner.errors + scanner.missing == 0;
    ok &= sc1.bad + sc2c.bad + sc2t.bad == 0;
    /* Every put of every window must be there after the compaction. */
    uint64_t want = b.nlive + idle.w[1].next_new + during.w[1].next_new + (o->scan_s > 0 ? scan.w[1].next_new : 0);
    ok &= jvdb_count(b.db) == want;

    bench_json_begin();
    bench_json_str("engine", "jvdb");
    bench_json_str("phase", "latency");
    bench_json_common(&o->b, d);
    bench_json_num("delete_frac", o->delete_frac);
    bench_json_str("search", o->search);
    bench_json_num("index_build_s", index_s);
    if (!strcmp(o->search, "hnsw")) {
        jvdb_index_options io;
        jvdb_db_get_index(b.db, &io);
        bench_json_int("hnsw_m", io.m);
        bench_json_int("hnsw_ef_construction", io.ef_construction);
        bench_json_int("hnsw_ef_search", io.ef_search);
    }
    bench_json_str("sync", o->sync);
    bench_json_num("get_rate", o->get_rate);
    bench_json_num("put_rate", o->put_rate);
    bench_json_num("search_rate", strcmp(o->search, "none") ? o->search_rate : 0);
    bench_json_num("idle_s", i1 - i0);
    bench_json_compact("compact", &cs, wall);
    for (int i = 0; i < BENCH_NKINDS; i++) {
        char p[32];
        snprintf(p, sizeof p, "idle_%s", bench_kind_name[i]);
        bench_json_window(p, &idle.w[i], i0, i1);
        bench_json_worker_errors(p, &idle.w[i]);
        snprintf(p, sizeof p, "during_%s", bench_kind_name[i]);
        bench_json_window(p, &during.w[i], c0, c1);
        bench_json_worker_errors(p, &during.w[i]);
        if (o->scan_s > 0) {
            snprintf(p, sizeof p, "scan_%s", bench_kind_name[i]);
            bench_json_window(p, &scan.w[i], s0, s1);
            bench_json_worker_errors(p, &scan.w[i]);
        }
    }
    bench_json_num("scan_s", s1 - s0);
    if (o->scan_s > 0) {
        bench_json_int("scan_scans", (long long)scanner.done);
        bench_json_num("scan_scan_mean_ms", scanner.done ? 1e3 * scanner.busy_s / (double)scanner.done : 0);
    }
    bench_json_num("scaling_s", o->scaling_s);
    if (o->scaling_s > 0) {
        bench_json_num("scaling_qps_1", sc1.qps);
        bench_json_num("scaling_qps_2clients", sc2c.qps);
        bench_json_num("scaling_qps_2threads", sc2t.qps);
        bench_json_int("scaling_scans", (long long)(sc1.scans + sc2c.scans + sc2t.scans));
    }
    bench_json_str("verify", ok ? "ok" : "FAILED");
    bench_json_end();
    bench_load_free(&idle);
    bench_load_free(&during);
    if (o->scan_s > 0) bench_load_free(&scan);
    dg_close(queries);
    bench_built_close(&b);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    bench_copts o;
    bench_parse(argc, argv, &o);
    bench_make_dir(o.b.dir);
    bench_data d;
    bench_data_make(&o.b, &d);
    int rc = !strcmp(o.phase, "time") ? bench_phase_time(&o, &d) : bench_phase_latency(&o, &d);
    bench_data_free(&d);
    return rc;
}

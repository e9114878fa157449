/*
 * bench_search.c — owns libjvdb's side of issue 3's search measurement (bench/run-search): on the
 * .fvecs files that bench_datagen wrote (the same bytes search_peers.py gives FAISS and hnswlib),
 * it measures through the public API only:
 *
 *   build    ingest with jvdb_put_batch (sync=never) into a database whose HNSW index is attached
 *            before the first write, so the graph is built while the vectors arrive; the clock runs
 *            from the first write until jvdb_db_index_wait returns
 *   exact    jvdb_search with exact=1, threads=1, one query per call: QPS and recall@k
 *   curve    jvdb_search through the graph for each ef: recall@k against the ground truth and QPS
 *
 * (each query set runs --passes times and the fastest pass gives the QPS: see bench_queries)
 *   loaded   close (the graph is saved), reopen and time until the saved graph is loaded, then the
 *            curve on the graph loaded from disk; RSS with it ready (VmRSS, RssAnon, RssFile)
 *   cycles   10 rounds of "delete 10 % of the vectors, put them back, full compaction", then the
 *            curve on the graph that went through them (the data ends as it began, so the ground
 *            truth still holds)
 *   rebuild  close, remove the saved graph, reopen and time the pure build of the graph from the
 *            stored vectors, then the curve again on that graph
 *
 * Recall is measured against the ground truth file (ivecs, k ids per query) that search_peers.py
 * computed with FAISS, so neither engine grades itself.  QPS is given for wall time and for this
 * process's CPU time: on a shared machine the second is the steadier one (the index thread is idle
 * while queries run, so process CPU is the query thread's).
 *
 * Output: one JSON object per step and point on stdout, parsed by bench/run-search.
 */
#include "bench_util.h"
#include "datagen.h"
#include "jvdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_EFS    32
#define BENCH_MAX_PASSES 100

typedef struct bench_search_opts {
    const char *base, *queries, *gt, *dir;
    const char *db; /* database name (--db; "bench"): the curve step can run on an existing database */
    uint32_t m, efc, k;
    uint32_t efs[BENCH_MAX_EFS];
    size_t nefs;
    uint32_t batch;
    uint64_t nq;     /* queries used (0 = all in the file) */
    uint32_t passes; /* times each query set is run; the fastest pass is reported */
    const char *steps;
} bench_search_opts;

typedef struct bench_set {
    float *base, *queries;
    uint64_t n, nq;
    uint32_t dim;
    int32_t *gt; /* nq * gt_k */
    uint32_t gt_k;
    char *id_buf;
    char **ids;
} bench_set;

static double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bench_usage(void)
{
    fprintf(stderr,
            "usage: bench_search --base B.fvecs --queries Q.fvecs --gt GT.ivecs --dir DIR [options]\n"
            "  --m M            HNSW links per node (16)\n"
            "  --efc N          HNSW ef_construction (200)\n"
            "  --efs LIST       ef values of the recall/QPS curve (16,32,64,128,256,512)\n"
            "  --k K            neighbours per query, <= the ground truth's (10)\n"
            "  --nq N           use the first N queries (all)\n"
            "  --batch N        rows per put_batch (1000)\n"
            "  --passes N       runs of the query set per point; the fastest is reported (3)\n"
            "  --steps LIST     of build,exact,curve,rebuild (all four)\n"
            "  --db NAME        database in DIR (bench); without build, an existing one with ids = row numbers\n"
            "DIR must not hold a database 'bench' yet.\n");
    exit(2);
}

static uint64_t bench_arg_u64(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || *s == '-') bench_die(0, "%s '%s' is not a number", opt, s);
    return v;
}

static void bench_parse(int argc, char **argv, bench_search_opts *o)
{
    static const uint32_t efs[] = { 16, 32, 64, 128, 256, 512 };
    memset(o, 0, sizeof *o);
    o->m = 16;
    o->efc = 200;
    o->k = 10;
    o->batch = 1000;
    o->passes = 3;
    o->db = "bench";
    o->steps = "build,exact,curve,loaded,cycles,rebuild";
    memcpy(o->efs, efs, sizeof efs);
    o->nefs = sizeof efs / sizeof efs[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) bench_usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--base")) o->base = v;
        else if (!strcmp(a, "--queries")) o->queries = v;
        else if (!strcmp(a, "--gt")) o->gt = v;
        else if (!strcmp(a, "--dir")) o->dir = v;
        else if (!strcmp(a, "--m")) o->m = (uint32_t)bench_arg_u64(a, v);
        else if (!strcmp(a, "--efc")) o->efc = (uint32_t)bench_arg_u64(a, v);
        else if (!strcmp(a, "--k")) o->k = (uint32_t)bench_arg_u64(a, v);
        else if (!strcmp(a, "--nq")) o->nq = bench_arg_u64(a, v);
        else if (!strcmp(a, "--batch")) o->batch = (uint32_t)bench_arg_u64(a, v);
        else if (!strcmp(a, "--passes")) o->passes = (uint32_t)bench_arg_u64(a, v);
        else if (!strcmp(a, "--steps")) o->steps = v;
        else if (!strcmp(a, "--db")) o->db = v;
        else if (!strcmp(a, "--efs")) {
            o->nefs = 0;
            for (const char *p = v; *p;) {
                char *end;
                unsigned long e = strtoul(p, &end, 10);
                if (end == p || e == 0 || o->nefs == BENCH_MAX_EFS)
                    bench_die(0, "--efs '%s' is not a list of ef values", v);
                o->efs[o->nefs++] = (uint32_t)e;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') bench_die(0, "--efs '%s' is not a list of ef values", v);
            }
        } else bench_usage();
    }
    if (!o->base || !o->queries || !o->gt || !o->dir || o->k == 0 || o->batch == 0 || o->passes == 0 ||
        o->passes > BENCH_MAX_PASSES)
        bench_usage();
}

static int bench_step(const bench_search_opts *o, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = o->steps; (p = strstr(p, name)); p += len)
        if ((p == o->steps || p[-1] == ',') && (p[len] == ',' || p[len] == '\0')) return 1;
    return 0;
}

/* ivecs: per row an int32 count, then that many int32 ids; every row must have the same count. */
static void bench_read_gt(const char *path, bench_set *s)
{
    FILE *f = fopen(path, "rb");
    if (!f) bench_die(errno, "cannot open %s", path);
    int32_t k;
    uint64_t rows = 0;
    s->gt = malloc(s->nq * sizeof(int32_t) * 1024); /* room for the longest row allowed */
    if (!s->gt) bench_die(ENOMEM, "ground truth");
    while (rows < s->nq && fread(&k, sizeof k, 1, f) == 1) {
        if (k <= 0 || k > 1024 || (rows && (uint32_t)k != s->gt_k))
            bench_die(0, "%s: bad row %llu", path, (unsigned long long)rows);
        s->gt_k = (uint32_t)k;
        if (fread(s->gt + rows * s->gt_k, sizeof(int32_t), s->gt_k, f) != s->gt_k) bench_die(0, "%s: cut short", path);
        rows++;
    }
    fclose(f);
    if (rows < s->nq)
        bench_die(0, "%s has %llu rows for %llu queries", path, (unsigned long long)rows, (unsigned long long)s->nq);
}

static void bench_load(const bench_search_opts *o, bench_set *s)
{
    uint32_t qdim;
    if (dg_read_fvecs(o->base, &s->base, &s->n, &s->dim)) bench_die(errno, "cannot read %s", o->base);
    if (dg_read_fvecs(o->queries, &s->queries, &s->nq, &qdim)) bench_die(errno, "cannot read %s", o->queries);
    if (qdim != s->dim) bench_die(0, "queries have dimension %u, base %u", qdim, s->dim);
    if (o->nq && o->nq < s->nq) s->nq = o->nq;
    bench_read_gt(o->gt, s);
    if (o->k > s->gt_k) bench_die(0, "--k %u is more than the ground truth's %u", o->k, s->gt_k);
    /* Ids are the row numbers in decimal, so a result id reads straight back as a row. */
    s->id_buf = malloc(s->n * 12);
    s->ids = malloc(s->n * sizeof *s->ids);
    if (!s->id_buf || !s->ids) bench_die(ENOMEM, "ids");
    char *p = s->id_buf;
    for (uint64_t i = 0; i < s->n; i++) {
        s->ids[i] = p;
        p += snprintf(p, 12, "%llu", (unsigned long long)i) + 1;
    }
}

static void bench_open(const char *dir, const char *name, jvdb_env **env, jvdb_db **db)
{
    int rc = jvdb_env_open(dir, env);
    if (rc) bench_die(0, "open %s: %s", dir, jvdb_errmsg());
    if ((rc = jvdb_db_open(*env, name, db))) bench_die(0, "open database %s: %s", name, jvdb_errmsg());
}

static void bench_json_index(jvdb_db *db)
{
    jvdb_index_status st;
    if (jvdb_db_index_status(db, &st)) bench_die(0, "index status: %s", jvdb_errmsg());
    bench_json_int("nodes", (long long)st.nodes);
    bench_json_int("pending", (long long)st.pending);
    bench_json_int("graph_bytes", (long long)st.memory_bytes);
}

static void bench_json_head(const char *step, const bench_search_opts *o, const bench_set *s)
{
    bench_json_begin();
    bench_json_str("engine", "jvdb");
    bench_json_str("step", step);
    bench_json_str("build_type", BENCH_BUILD_TYPE);
    bench_json_int("n", (long long)s->n);
    bench_json_int("dim", s->dim);
    bench_json_int("nq", (long long)s->nq);
    bench_json_int("m", o->m);
    bench_json_int("ef_construction", o->efc);
}

/* Ingest into an index that is already attached, then wait for the graph to take everything in. */
static jvdb_db *bench_build(const bench_search_opts *o, const bench_set *s, jvdb_env *env)
{
    jvdb_db_options dopts;
    jvdb_db_options_init(&dopts, s->dim);
    dopts.metric = JVDB_METRIC_L2;
    dopts.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    if (jvdb_db_create(env, o->db, &dopts, &db)) bench_die(0, "create: %s", jvdb_errmsg());
    jvdb_index_options io;
    jvdb_index_options_init(&io);
    io.m = o->m;
    io.ef_construction = o->efc;
    /* Also attaches the index and starts its thread, so the graph grows while the rows arrive. */
    if (jvdb_db_set_index(db, &io)) bench_die(0, "set index: %s", jvdb_errmsg());

    jvdb_record *recs = malloc(o->batch * sizeof *recs);
    if (!recs) bench_die(ENOMEM, "batch");
    bench_region r;
    bench_region_begin(&r);
    for (uint64_t first = 0; first < s->n; first += o->batch) {
        size_t cnt = first + o->batch <= s->n ? o->batch : (size_t)(s->n - first);
        for (size_t i = 0; i < cnt; i++)
            recs[i] = (jvdb_record){ s->ids[first + i], s->base + (first + i) * s->dim, s->dim, NULL };
        if (jvdb_put_batch(db, recs, cnt, NULL)) bench_die(0, "put_batch: %s", jvdb_errmsg());
    }
    double ingest_s = bench_now() - r.t0;
    jvdb_index_status st;
    jvdb_db_index_status(db, &st);
    if (jvdb_db_index_wait(db, UINT32_MAX)) bench_die(0, "index wait: %s", jvdb_errmsg());
    bench_region_end(&r);
    free(recs);
    bench_json_head("build", o, s);
    bench_json_num("ingest_s", ingest_s);
    bench_json_num("total_s", r.seconds);
    bench_json_num("user_s", r.user_s);
    bench_json_num("sys_s", r.sys_s);
    bench_json_int("pending_after_ingest", (long long)st.pending);
    bench_json_int("involuntary_cs", r.invol_cs);
    bench_json_index(db);
    bench_json_end();
    return db;
}

/* Runs the query set o->passes times with `p` and prints recall@k and, from the fastest pass, QPS
 * (wall and CPU) and latency percentiles, plus every pass's QPS.  Other processes on the machine can
 * only ever slow a pass down, so the fastest pass is the one closest to the engine's own speed. */
static void bench_queries(const char *step, const char *graph, const bench_search_opts *o, const bench_set *s,
                          jvdb_db *db, const jvdb_search_params *p)
{
    double *lat = malloc(s->nq * sizeof *lat), *best_lat = malloc(s->nq * sizeof *lat);
    double pass_qps[BENCH_MAX_PASSES], best_wall = 0, best_cpu = 0;
    if (!lat || !best_lat) bench_die(ENOMEM, "latencies");
    uint64_t hits = 0;
    for (uint32_t pass = 0; pass < o->passes; pass++) {
        bench_perf_enable();
        double c0 = bench_cpu_now(), t0 = bench_now();
        for (uint64_t i = 0; i < s->nq; i++) {
            jvdb_result *res;
            size_t n;
            double q0 = bench_now();
            if (jvdb_search(db, s->queries + i * s->dim, s->dim, p, &res, &n))
                bench_die(0, "search: %s", jvdb_errmsg());
            lat[i] = bench_now() - q0;
            /* Scoring the answer is outside the timed call but inside the loop: it is tiny next to
             * a search and keeps the results from being freed unread. */
            const int32_t *truth = s->gt + i * s->gt_k;
            for (size_t j = 0; pass == 0 && j < n; j++) {
                long id = strtol(res[j].id, NULL, 10);
                for (uint32_t t = 0; t < o->k; t++)
                    if (truth[t] == id) {
                        hits++;
                        break;
                    }
            }
            jvdb_results_free(res, n);
        }
        double wall = bench_now() - t0, cpu = bench_cpu_now() - c0;
        bench_perf_disable();
        pass_qps[pass] = (double)s->nq / wall;
        if (pass == 0 || wall < best_wall) {
            best_wall = wall;
            memcpy(best_lat, lat, s->nq * sizeof *lat);
        }
        if (pass == 0 || cpu < best_cpu) best_cpu = cpu;
    }
    bench_json_head(step, o, s);
    if (graph) bench_json_str("graph", graph);
    bench_json_int("ef", p->exact ? 0 : p->ef);
    bench_json_int("k", o->k);
    bench_json_num("recall", (double)hits / ((double)s->nq * o->k));
    bench_json_int("passes", o->passes);
    bench_json_num("seconds", best_wall);
    bench_json_num("cpu_seconds", best_cpu);
    bench_json_num("qps", (double)s->nq / best_wall);
    bench_json_num("cpu_qps", (double)s->nq / best_cpu);
    bench_json_num("qps_median_pass", bench_percentile(pass_qps, o->passes, 50));
    bench_json_num("p50_ms", 1e3 * bench_percentile(best_lat, s->nq, 50));
    bench_json_num("p99_ms", 1e3 * bench_percentile(best_lat, s->nq, 99));
    bench_json_end();
    free(lat);
    free(best_lat);
}

static void bench_curve(const char *graph, const bench_search_opts *o, const bench_set *s, jvdb_db *db)
{
    for (size_t e = 0; e < o->nefs; e++) {
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.k = o->k;
        p.ef = o->efs[e];
        p.include_metadata = 0;
        bench_queries("hnsw", graph, o, s, db, &p);
    }
}

int main(int argc, char **argv)
{
    bench_search_opts o;
    bench_parse(argc, argv, &o);
    bench_set s = { 0 };
    bench_load(&o, &s);
    bench_make_dir(o.dir);

    jvdb_env *env;
    jvdb_db *db;
    if (jvdb_env_open(o.dir, &env)) bench_die(0, "open %s: %s", o.dir, jvdb_errmsg());
    if (bench_step(&o, "build")) {
        db = bench_build(&o, &s, env);
    } else {
        jvdb_env_close(env);
        bench_open(o.dir, o.db, &env, &db);
        /* An existing database's saved graph loads in the background: the curve needs it ready. */
        if (bench_step(&o, "curve") && jvdb_db_index_wait(db, UINT32_MAX))
            bench_die(0, "index wait: %s", jvdb_errmsg());
    }
    if (bench_step(&o, "exact")) {
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.k = o.k;
        p.exact = 1;
        p.threads = 1;
        bench_queries("exact", NULL, &o, &s, db, &p);
    }
    if (bench_step(&o, "curve")) bench_curve("ingest", &o, &s, db);
    if (bench_step(&o, "loaded")) {
        /* A clean close saves the graph; the reopen loads it. */
        jvdb_env_close(env);
        double t0 = bench_now();
        bench_open(o.dir, o.db, &env, &db);
        if (jvdb_db_index_wait(db, UINT32_MAX)) bench_die(0, "index wait: %s", jvdb_errmsg());
        double ready_s = bench_now() - t0;
        jvdb_index_status st;
        jvdb_db_index_status(db, &st);
        bench_json_head("loaded", &o, &s);
        bench_json_num("ready_s", ready_s);
        bench_json_int("loaded_nodes", (long long)st.loaded_nodes);
        bench_json_int("rss_kb", bench_proc_status_kb("VmRSS"));
        bench_json_int("rss_anon_kb", bench_proc_status_kb("RssAnon"));
        bench_json_int("rss_file_kb", bench_proc_status_kb("RssFile"));
        bench_json_index(db);
        bench_json_end();
        bench_curve("loaded", &o, &s, db);
    }
    if (bench_step(&o, "cycles")) {
        uint64_t rng = 0x5eed;
        char *gone = calloc(s.n, 1);
        if (!gone) bench_die(ENOMEM, "cycles");
        double t0 = bench_now();
        for (int round = 0; round < 10; round++) {
            memset(gone, 0, s.n);
            for (uint64_t k = 0; k < s.n / 10;) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t i = (rng >> 17) % s.n;
                if (gone[i]) continue;
                gone[i] = 1;
                k++;
                if (jvdb_delete(db, s.ids[i], NULL)) bench_die(0, "delete: %s", jvdb_errmsg());
            }
            for (uint64_t i = 0; i < s.n; i++)
                if (gone[i] && jvdb_put(db, s.ids[i], s.base + i * s.dim, s.dim, NULL, NULL))
                    bench_die(0, "put: %s", jvdb_errmsg());
            jvdb_compact_options co = { .full = 1, .force = 1 };
            jvdb_compact_stats cs;
            if (jvdb_compact(db, &co, &cs)) bench_die(0, "compact: %s", jvdb_errmsg());
            if (jvdb_db_index_wait(db, UINT32_MAX)) bench_die(0, "index wait: %s", jvdb_errmsg());
        }
        free(gone);
        bench_json_head("cycles", &o, &s);
        bench_json_num("seconds", bench_now() - t0);
        bench_json_index(db);
        bench_json_end();
        bench_curve("cycled", &o, &s, db);
    }
    if (bench_step(&o, "rebuild")) {
        /* Without the saved graph a reopen builds it from the stored vectors: the pure build,
         * nothing else running. */
        jvdb_env_close(env);
        char path[4096];
        snprintf(path, sizeof path, "%s/databases/%s/ext.hnsw", o.dir, o.db);
        if (unlink(path) != 0 && errno != ENOENT) bench_die(errno, "remove %s", path);
        double t0 = bench_now();
        bench_open(o.dir, o.db, &env, &db);
        double open_s = bench_now() - t0;
        bench_region r;
        bench_region_begin(&r);
        if (jvdb_db_index_wait(db, UINT32_MAX)) bench_die(0, "index wait: %s", jvdb_errmsg());
        bench_region_end(&r);
        bench_json_head("rebuild", &o, &s);
        bench_json_num("open_s", open_s);
        bench_json_num("build_s", r.seconds);
        bench_json_num("user_s", r.user_s);
        bench_json_num("sys_s", r.sys_s);
        bench_json_int("involuntary_cs", r.invol_cs);
        bench_json_index(db);
        bench_json_end();
        bench_curve("rebuilt", &o, &s, db);
    }
    jvdb_env_close(env);
    free(s.base);
    free(s.queries);
    free(s.gt);
    free(s.id_buf);
    free(s.ids);
    return 0;
}

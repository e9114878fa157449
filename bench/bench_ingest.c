/*
 * bench_ingest.c — owns libjvdb's side of the ingest measurement of issue 2: bulk import of the
 * generated vectors with jvdb_put_batch (sync=always by default) and, as a separate process, the
 * time and memory to open (recover) the resulting database.
 *
 * Open is a separate invocation (--open) on purpose: the importing process holds the data set and
 * a warm keydir, so its resident memory says nothing about what a fresh open costs, and the driver
 * needs to drop the page cache between the two to measure a cold-ish open.
 *
 * Output: one JSON object on stdout, which bench/run-ingest parses.
 */
#include "bench_util.h"
#include "jvdb.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ingest_ctx {
    jvdb_db *db;
    const bench_data *data;
    uint32_t batch;
    uint64_t nbatches;
    atomic_uint_fast64_t next; /* next batch number to take */
    double *latency;           /* seconds, per batch */
    atomic_int failed;
} ingest_ctx;

static void *ingest_worker(void *arg)
{
    ingest_ctx *c = arg;
    const bench_data *d = c->data;
    jvdb_record *recs = malloc(c->batch * sizeof *recs);
    if (!recs) {
        atomic_store(&c->failed, 1);
        return NULL;
    }
    for (;;) {
        uint64_t b = atomic_fetch_add(&c->next, 1);
        if (b >= c->nbatches || atomic_load(&c->failed)) break;
        uint64_t first = b * c->batch;
        size_t cnt = first + c->batch <= d->n ? c->batch : (size_t)(d->n - first);
        for (size_t i = 0; i < cnt; i++) {
            recs[i].id = d->ids[first + i];
            recs[i].vector = d->vectors + (first + i) * d->dim;
            recs[i].dim = d->dim;
            recs[i].meta_json = d->metas ? d->metas[first + i] : NULL;
        }
        double t0 = bench_now();
        int rc = jvdb_put_batch(c->db, recs, cnt, NULL);
        c->latency[b] = bench_now() - t0;
        if (rc) {
            fprintf(stderr, "bench_ingest: put_batch %llu failed: %s: %s\n", (unsigned long long)b, jvdb_strerror(rc),
                    jvdb_errmsg());
            atomic_store(&c->failed, 1);
        }
    }
    free(recs);
    return NULL;
}

/* Reads back a deterministic sample and compares bytes: a fast benchmark that stored the wrong
 * thing would be worthless. */
static int verify_sample(jvdb_db *db, const bench_data *d, uint64_t samples)
{
    float *got = malloc(d->dim * sizeof *got);
    if (!got) return -1;
    int bad = 0;
    for (uint64_t k = 0; k < samples && !bad; k++) {
        uint64_t r = (k * 0x9e3779b97f4a7c15ull) % d->n;
        if (jvdb_get(db, d->ids[r], got, NULL) != JVDB_OK ||
            memcmp(got, d->vectors + r * d->dim, d->dim * sizeof *got) != 0)
            bad = 1;
    }
    free(got);
    return bad ? -1 : 0;
}

static int run_ingest(const bench_opts *o, const char *db_name, const char *sync, unsigned threads)
{
    jvdb_db_options dopt;
    jvdb_db_options_init(&dopt, o->data.dim);
    if (jvdb_sync_parse(sync, &dopt.sync, &dopt.sync_interval_ms) != JVDB_OK) bench_die(0, "%s", jvdb_errmsg());

    bench_data d;
    bench_data_make(o, &d);

    jvdb_env *env;
    jvdb_db *db;
    int rc = jvdb_env_open(o->dir, &env);
    if (rc) bench_die(0, "cannot open %s: %s", o->dir, jvdb_errmsg());
    if ((rc = jvdb_db_create(env, db_name, &dopt, &db))) bench_die(0, "cannot create %s: %s", db_name, jvdb_errmsg());

    ingest_ctx c;
    memset(&c, 0, sizeof c);
    c.db = db;
    c.data = &d;
    c.batch = o->batch;
    c.nbatches = (d.n + o->batch - 1) / o->batch;
    atomic_init(&c.next, 0);
    atomic_init(&c.failed, 0);
    c.latency = calloc(c.nbatches, sizeof *c.latency);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (!c.latency || !tids) bench_die(ENOMEM, "calloc");

    bench_region reg;
    bench_region_begin(&reg);
    for (unsigned t = 1; t < threads; t++)
        if (pthread_create(&tids[t], NULL, ingest_worker, &c) != 0) bench_die(errno, "pthread_create");
    ingest_worker(&c);
    for (unsigned t = 1; t < threads; t++) pthread_join(tids[t], NULL);
    bench_region_end(&reg);
    double secs = reg.seconds;
    if (atomic_load(&c.failed)) bench_die(0, "ingest failed");

    jvdb_stats st;
    if (jvdb_stats_get(db, &st)) bench_die(0, "stats: %s", jvdb_errmsg());
    uint64_t count = jvdb_count(db);
    int verified = count == d.n && verify_sample(db, &d, 10000) == 0;
    jvdb_env_close(env);

    bench_json_begin();
    bench_json_str("engine", "jvdb");
    bench_json_str("mode", "ingest");
    bench_json_common(o, &d);
    bench_json_str("sync", sync);
    bench_json_int("threads", threads);
    bench_json_region(&reg);
    bench_json_num("vectors_per_s", (double)d.n / secs);
    bench_json_int("segment_bytes", (long long)st.file_bytes);
    bench_json_int("segments", st.segments);
    bench_json_num("mb_per_s", (double)st.file_bytes / 1e6 / secs);
    bench_json_num("batch_p50_ms", 1e3 * bench_percentile(c.latency, c.nbatches, 50));
    bench_json_num("batch_p99_ms", 1e3 * bench_percentile(c.latency, c.nbatches, 99));
    bench_json_num("batch_max_ms", 1e3 * bench_percentile(c.latency, c.nbatches, 100));
    bench_json_int("count", (long long)count);
    bench_json_str("verify", verified ? "ok" : "FAILED");
    bench_json_end();
    free(c.latency);
    free(tids);
    bench_data_free(&d);
    return verified ? 0 : 1;
}

static int run_open(const bench_opts *o, const char *db_name)
{
    double t0 = bench_now();
    jvdb_env *env;
    jvdb_db *db;
    if (jvdb_env_open(o->dir, &env)) bench_die(0, "cannot open %s: %s", o->dir, jvdb_errmsg());
    double t_env = bench_now();
    if (jvdb_db_open(env, db_name, &db)) bench_die(0, "cannot open %s: %s", db_name, jvdb_errmsg());
    double t1 = bench_now();
    /* Read the memory figures before anything else touches the heap or the mapping. */
    long rss = bench_proc_status_kb("VmRSS"), hwm = bench_proc_status_kb("VmHWM");
    long anon = bench_proc_status_kb("RssAnon"), file = bench_proc_status_kb("RssFile");
    jvdb_stats st;
    if (jvdb_stats_get(db, &st)) bench_die(0, "stats: %s", jvdb_errmsg());
    uint64_t count = jvdb_count(db);
    jvdb_env_close(env);

    bench_json_begin();
    bench_json_str("engine", "jvdb");
    bench_json_str("mode", "open");
    bench_json_common(o, NULL);
    bench_json_num("open_s", t1 - t0);
    bench_json_num("env_open_s", t_env - t0);
    bench_json_int("count", (long long)count);
    bench_json_int("segment_bytes", (long long)st.file_bytes);
    bench_json_int("vm_rss_kb", rss);
    bench_json_int("vm_hwm_kb", hwm);
    bench_json_int("rss_anon_kb", anon);
    bench_json_int("rss_file_kb", file);
    bench_json_end();
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_ingest --dir DATA [options]          import, print one JSON line\n"
            "       bench_ingest --open --dir DATA [--db NAME]  open (recover) an imported database\n"
            "%s"
            "  --db NAME         database name (default bench)\n"
            "  --sync S          always | never | interval:<ms> (default always)\n"
            "  --threads T       concurrent importers sharing the batches (default 1)\n",
            bench_common_usage());
    exit(2);
}

int main(int argc, char **argv)
{
    bench_opts o;
    bench_opts_default(&o);
    const char *db_name = "bench", *sync = "always";
    unsigned threads = 1;
    int open_mode = 0;
    for (int i = 1; i < argc; i++) {
        if (bench_parse_common(argc, argv, &i, &o)) continue;
        if (!strcmp(argv[i], "--open")) open_mode = 1;
        else if (!strcmp(argv[i], "--db") && i + 1 < argc) db_name = argv[++i];
        else if (!strcmp(argv[i], "--sync") && i + 1 < argc) sync = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = (unsigned)atoi(argv[++i]);
        else usage();
    }
    if (!o.dir || threads < 1 || threads > 64) usage();
    if (open_mode) return run_open(&o, db_name);
    bench_make_dir(o.dir);
    return run_ingest(&o, db_name, sync, threads);
}

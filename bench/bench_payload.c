/*
 * bench_payload.c — owns issue 12's filtered-search measurement (bench/run-payload): search latency
 * with a filter answered by a payload index, against the same search unfiltered, at 10% and 1%
 * selectivity, keyword and numeric, and the same filters on fields without an index.
 *
 * Data: datagen's clustered vectors (n x dim); vector i carries
 *   {"k10": "yes"|"no", "k1": ..., "n": i % 1000, "u10": ..., "u1": ..., "un": i % 1000}
 * where k10 is "yes" for i % 10 == 0 and k1 for i % 100 == 0 (uncorrelated with the clusters, the hard
 * case for a graph walk); k10/k1/n have payload indexes (keyword, keyword, numeric), u10/u1/un are the
 * same values without one.  Filters: {"k10": "yes"}, {"n": {"$lt": 100}} (10%), {"k1": "yes"},
 * {"n": {"$lt": 10}} (1%), and their u* twins.
 *
 * Each round runs every query of every case once (cases interleaved per query, so load changes on
 * the shared machine hit all cases alike) and takes each case's median latency; the report gives the
 * median over rounds of those medians and of the per-round ratio filtered / unfiltered.  Recall@k of
 * the indexed filtered graph search is measured against the exact filtered answer.  Two more cases
 * force the planner's two paths at 10% (graph with the index as predicate, exact scan of the
 * candidates) to show where they cross.
 *
 * Output: one JSON object per case on stdout (bench/run-payload turns them into the report).
 */
#include "bench_util.h"
#include "datagen.h"
#include "jvdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* search.c's planner thresholds (search/payload.h), to force either path in the two extra cases. */
extern uint32_t search_payload_scan_min;
extern double search_payload_scan_share;

enum { C_NONE, C_K10, C_N10, C_K1, C_N1, C_U10, C_UN10, C_U1, C_UN1, C_GRAPH10, C_SCAN10, NCASES };
static const char *case_name[NCASES] = {
    "unfiltered",          "keyword 10% indexed",      "numeric 10% indexed",    "keyword 1% indexed",
    "numeric 1% indexed",  "keyword 10% no index",     "numeric 10% no index",   "keyword 1% no index",
    "numeric 1% no index", "keyword 10% forced graph", "keyword 10% forced scan"
};
static const char *case_filter[NCASES] = { NULL,
                                           "{\"k10\": \"yes\"}",
                                           "{\"n\": {\"$lt\": 100}}",
                                           "{\"k1\": \"yes\"}",
                                           "{\"n\": {\"$lt\": 10}}",
                                           "{\"u10\": \"yes\"}",
                                           "{\"un\": {\"$lt\": 100}}",
                                           "{\"u1\": \"yes\"}",
                                           "{\"un\": {\"$lt\": 10}}",
                                           "{\"k10\": \"yes\"}",
                                           "{\"k10\": \"yes\"}" };

/* Sorts doubles ascending (qsort). */
static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v). */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Whether case c filters on a field without an index. */
static int unindexed(int c) { return c >= C_U10 && c <= C_UN1; }

/* Queries per round of case c: the unindexed cases parse every candidate's metadata (hundreds of
 * milliseconds a query at 1%), so they run the first 20 only. */
static uint32_t case_queries(int c, uint32_t nq) { return unindexed(c) && nq > 20 ? 20 : nq; }

/* Dies with the library's message when rc is not JVDB_OK. */
static void check(int rc, const char *what)
{
    if (rc == JVDB_OK) return;
    fprintf(stderr, "bench_payload: %s: %s\n", what, jvdb_errmsg());
    exit(1);
}

/* One search of case c; returns its latency in seconds and the ids (k of them at most) in ids. */
static double run_case(jvdb_db *db, int c, jvdb_filter *const *f, const float *q, uint32_t dim, uint32_t k, int exact,
                       char ids[][32], size_t *nids)
{
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    p.k = k;
    p.filter = f[c];
    p.exact = exact;
    p.threads = 1;
    uint32_t keep_min = search_payload_scan_min;
    double keep_share = search_payload_scan_share;
    if (c == C_GRAPH10) {
        search_payload_scan_min = 0;
        search_payload_scan_share = 0.0;
    } else if (c == C_SCAN10) {
        search_payload_scan_min = UINT32_MAX;
    }
    jvdb_result *r;
    size_t n;
    double t0 = bench_now();
    check(jvdb_search(db, q, dim, &p, &r, &n), "search");
    double t = bench_now() - t0;
    search_payload_scan_min = keep_min;
    search_payload_scan_share = keep_share;
    if (ids) {
        for (size_t i = 0; i < n; i++) snprintf(ids[i], 32, "%s", r[i].id);
        *nids = n;
    }
    jvdb_results_free(r, n);
    return t;
}

int main(int argc, char **argv)
{
    uint64_t n = 100000;
    uint32_t dim = 128, k = 10, nq = 200, rounds = 3;
    const char *dir = "/tmp/jvdb-bench-payload";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) dim = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc) nq = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--k") && i + 1 < argc) k = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_payload [--n N] [--dim D] [--queries Q] [--rounds R] [--k K] [--dir DIR]\n");
            return 2;
        }
    }
    if (!n || !dim || !nq || !rounds || !k || k > 1000) {
        fprintf(stderr, "bench_payload: --n, --dim, --queries, --rounds must be positive and --k 1..1000\n");
        return 2;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    dg_spec spec;
    dg_spec_default(&spec);
    spec.n = n;
    spec.dim = dim;
    dg_gen *g;
    if (dg_open(&spec, &g)) return 1;
    jvdb_env *env;
    check(jvdb_env_open(dir, &env), "open");
    jvdb_db_options o;
    jvdb_db_options_init(&o, dim);
    o.metric = JVDB_METRIC_L2;
    o.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    check(jvdb_db_create(env, "b", &o, &db), "create");
    check(jvdb_db_payload_index_create(db, "k10", JVDB_PAYLOAD_KEYWORD), "index");
    check(jvdb_db_payload_index_create(db, "k1", JVDB_PAYLOAD_KEYWORD), "index");
    check(jvdb_db_payload_index_create(db, "n", JVDB_PAYLOAD_NUMERIC), "index");
    enum { BATCH = 1000 };
    float *vec = malloc((size_t)BATCH * dim * sizeof *vec);
    static char idb[BATCH][24], metab[BATCH][160];
    jvdb_record recs[BATCH];
    double t0 = bench_now();
    for (uint64_t first = 0; first < n; first += BATCH) {
        uint64_t cnt = n - first < BATCH ? n - first : BATCH;
        dg_rows(g, first, cnt, vec);
        for (uint64_t j = 0; j < cnt; j++) {
            uint64_t i = first + j;
            const char *y10 = i % 10 == 0 ? "yes" : "no", *y1 = i % 100 == 0 ? "yes" : "no";
            snprintf(idb[j], sizeof idb[j], "v%llu", (unsigned long long)i);
            snprintf(metab[j], sizeof metab[j],
                     "{\"k10\":\"%s\",\"k1\":\"%s\",\"n\":%u,\"u10\":\"%s\",\"u1\":\"%s\",\"un\":%u}", y10, y1,
                     (unsigned)(i % 1000), y10, y1, (unsigned)(i % 1000));
            recs[j] = (jvdb_record){ idb[j], vec + j * dim, dim, metab[j] };
        }
        check(jvdb_put_batch(db, recs, cnt, NULL), "put");
    }
    check(jvdb_db_index_wait(db, 3600 * 1000), "index wait");
    double build = bench_now() - t0;
    jvdb_filter *f[NCASES] = { 0 };
    for (int c = 1; c < NCASES; c++) check(jvdb_filter_parse(case_filter[c], &f[c]), "filter");
    float *qs = malloc((size_t)nq * dim * sizeof *qs);
    for (uint32_t i = 0; i < nq; i++) dg_query(g, i, qs + (size_t)i * dim);
    /* Warm-up: builds the payload indexes from the records (the first filtered search does it). */
    double tw = bench_now();
    run_case(db, C_K10, f, qs, dim, k, 0, NULL, NULL);
    double warm = bench_now() - tw;
    for (uint32_t i = 0; i < nq && i < 20; i++)
        for (int c = 0; c < NCASES; c++) run_case(db, c, f, qs + (size_t)i * dim, dim, k, 0, NULL, NULL);

    double *lat = malloc((size_t)nq * sizeof *lat);
    double med[NCASES][64], ratio[NCASES][64];
    double *all = malloc((size_t)NCASES * nq * sizeof *all);
    if (rounds > 64) rounds = 64;
    for (uint32_t r = 0; r < rounds; r++) {
        for (uint32_t i = 0; i < nq; i++)
            for (int c = 0; c < NCASES; c++)
                if (i < case_queries(c, nq))
                    all[(size_t)c * nq + i] = run_case(db, c, f, qs + (size_t)i * dim, dim, k, 0, NULL, NULL);
        for (int c = 0; c < NCASES; c++) {
            memcpy(lat, all + (size_t)c * nq, case_queries(c, nq) * sizeof *lat);
            med[c][r] = median(lat, case_queries(c, nq));
        }
        for (int c = 0; c < NCASES; c++) ratio[c][r] = med[c][r] / med[C_NONE][r];
    }
    /* Recall@k of the indexed graph-path answers against the exact filtered answer. */
    double recall[NCASES] = { 0 };
    char(*a)[32] = malloc((size_t)k * 32), (*b)[32] = malloc((size_t)k * 32);
    for (int c = 0; c < NCASES; c++) {
        if (!f[c] || unindexed(c)) continue;
        uint64_t hit = 0, want = 0;
        for (uint32_t i = 0; i < nq; i++) {
            size_t na = 0, nb = 0;
            run_case(db, c, f, qs + (size_t)i * dim, dim, k, 0, a, &na);
            run_case(db, c, f, qs + (size_t)i * dim, dim, k, 1, b, &nb);
            want += nb;
            for (size_t x = 0; x < na; x++)
                for (size_t y = 0; y < nb; y++) hit += !strcmp(a[x], b[y]);
        }
        recall[c] = want ? (double)hit / (double)want : 1.0;
    }
    printf("{\"setup\": {\"n\": %llu, \"dim\": %u, \"k\": %u, \"queries\": %u, \"rounds\": %u, \"ingest_and_graph_s\": "
           "%.2f, "
           "\"first_filtered_search_s\": %.3f}}\n",
           (unsigned long long)n, dim, k, nq, rounds, build, warm);
    for (int c = 0; c < NCASES; c++) {
        double m = median(med[c], rounds), rt = median(ratio[c], rounds);
        printf(
            "{\"case\": \"%s\", \"filter\": %s, \"queries\": %u, \"median_ms\": %.4f, \"ratio_to_unfiltered\": %.3f, "
            "\"recall\": %.4f, \"rounds_ms\": [",
            case_name[c], f[c] ? case_filter[c] : "null", case_queries(c, nq), m * 1e3, rt,
            unindexed(c) ? -1.0
            : c          ? recall[c]
                         : 1.0);
        for (uint32_t r = 0; r < rounds; r++) printf("%s%.4f", r ? ", " : "", med[c][r] * 1e3);
        printf("]}\n");
    }
    for (int c = 0; c < NCASES; c++) jvdb_filter_free(f[c]);
    free(a);
    free(b);
    free(all);
    free(lat);
    free(qs);
    free(vec);
    jvdb_env_close(env);
    dg_close(g);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}

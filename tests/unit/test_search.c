/* test_search.c — jvdb_search over real databases (issue 3): exact equals a reference for every
 * metric, HNSW recall on clustered data (also after deletes and a reopen), filters, that results
 * are complete while the graph is still catching up, and that HNSW searches read the segments
 * without mapping their pages (issue 11). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "store/db.h"
#include "store/readpath.h"
#include "test_util.h"

#define DIM 24

static float *make_clustered(int n, uint32_t dim, unsigned seed)
{
    float *v = malloc((size_t)n * dim * sizeof *v);
    enum { CLUSTERS = 50 };
    static float centers[CLUSTERS][64];
    for (int c = 0; c < CLUSTERS; c++) tu_vector(centers[c], dim, 1000000u + (uint64_t)c + seed, 0);
    for (int i = 0; i < n; i++) {
        float noise[64];
        tu_vector(noise, dim, (uint64_t)i, seed);
        /* Points lie at varied distances from their centre, as real embeddings do, rather than on
         * one thin shell where every neighbour is about equally far. */
        float radius = 0.05f + 0.5f * (float)(((unsigned)i * 7919u) % 1000) / 1000.0f;
        for (uint32_t d = 0; d < dim; d++) v[(size_t)i * dim + d] = centers[i % CLUSTERS][d] + radius * noise[d];
    }
    return v;
}

static double ref_score(jvdb_metric m, const float *a, const float *b, uint32_t dim)
{
    double s = 0, na = 0, nb = 0;
    for (uint32_t i = 0; i < dim; i++) {
        if (m == JVDB_METRIC_L2) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        else s += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (m == JVDB_METRIC_COSINE) s /= sqrt(na) * sqrt(nb);
    return s;
}

struct scored {
    double s;
    int i;
};

static jvdb_metric sort_metric;
static int cmp_scored(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    double dx = sort_metric == JVDB_METRIC_L2 ? x->s : -x->s, dy = sort_metric == JVDB_METRIC_L2 ? y->s : -y->s;
    return dx < dy ? -1 : dx > dy ? 1 : x->i - y->i;
}

/* Indices of the true top k (and the k-th score, for tie tolerance). */
static void reference_topk(jvdb_metric m, const float *data, int n, const int *alive, const float *q, int k, int *out,
                           double *kth)
{
    struct scored *all = malloc((size_t)n * sizeof *all);
    int live = 0;
    for (int i = 0; i < n; i++)
        if (!alive || alive[i]) all[live++] = (struct scored){ ref_score(m, q, data + (size_t)i * DIM, DIM), i };
    sort_metric = m;
    qsort(all, (size_t)live, sizeof *all, cmp_scored);
    for (int j = 0; j < k && j < live; j++) out[j] = all[j].i;
    *kth = all[(k < live ? k : live) - 1].s;
    free(all);
}

static jvdb_db *load(jvdb_env *env, const char *name, jvdb_metric m, const float *data, int n)
{
    jvdb_db *db = tu_create(env, name, DIM, m, 0);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    enum { B = 500 };
    jvdb_record recs[B];
    static char ids[B][16], metas[B][64];
    for (int i = 0; i < n; i += B) {
        int cnt = n - i < B ? n - i : B;
        for (int j = 0; j < cnt; j++) {
            snprintf(ids[j], sizeof ids[j], "v%d", i + j);
            snprintf(metas[j], sizeof metas[j], "{\"group\":%d,\"name\":\"n%d\",\"even\":%s}", (i + j) % 10, i + j,
                     (i + j) % 2 ? "false" : "true");
            recs[j] = (jvdb_record){ ids[j], data + (size_t)(i + j) * DIM, DIM, metas[j] };
        }
        assert_ok(jvdb_put_batch(db, recs, (size_t)cnt, NULL));
    }
    return db;
}

static int id_num(const char *id) { return atoi(id + 1); }

static void test_exact_matches_reference(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { N = 3000, K = 10 };
    float *data = make_clustered(N, DIM, 1);
    const jvdb_metric metrics[] = { JVDB_METRIC_L2, JVDB_METRIC_COSINE, JVDB_METRIC_DOT };
    const char *names[] = { "l2", "cos", "dot" };
    for (int mi = 0; mi < 3; mi++) {
        jvdb_db *db = load(env, names[mi], metrics[mi], data, N);
        for (int qi = 0; qi < 20; qi++) {
            float q[DIM];
            tu_vector(q, DIM, 777 + (uint64_t)qi, 3);
            jvdb_search_params p;
            jvdb_search_params_init(&p);
            p.k = K;
            p.exact = 1;
            p.include_vectors = 1;
            p.include_metadata = 1;
            jvdb_result *r;
            size_t n;
            assert_ok(jvdb_search(db, q, DIM, &p, &r, &n));
            assert_int_equal(n, K);
            int want[K];
            double kth;
            reference_topk(metrics[mi], data, N, NULL, q, K, want, &kth);
            for (int j = 0; j < K; j++) {
                int got = id_num(r[j].id);
                double s = ref_score(metrics[mi], q, data + (size_t)got * DIM, DIM);
                assert_true(fabs(s - r[j].score) <= 1e-3 * (1 + fabs(s)));
                int in = 0;
                for (int w = 0; w < K; w++) in |= want[w] == got;
                /* Only a tie with the k-th score may swap an id. */
                if (!in) assert_true(fabs(s - kth) <= 1e-4 * (1 + fabs(kth)));
                assert_non_null(r[j].vector);
                assert_non_null(strstr(r[j].meta_json, "\"group\""));
                if (j)
                    assert_true(metrics[mi] == JVDB_METRIC_L2 ? r[j].score >= r[j - 1].score
                                                              : r[j].score <= r[j - 1].score);
            }
            jvdb_results_free(r, n);
        }
    }
    free(data);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

static double recall_at_10(jvdb_db *db, const float *data, int n, const int *alive, int exact)
{
    int hits = 0, total = 0;
    for (int qi = 0; qi < 100; qi++) {
        const float *q = data + (size_t)((qi * 97) % n) * DIM;
        float qq[DIM];
        for (int d = 0; d < DIM; d++) qq[d] = q[d] + 0.01f;
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.exact = exact;
        jvdb_result *r;
        size_t cnt;
        assert_ok(jvdb_search(db, qq, DIM, &p, &r, &cnt));
        int want[10];
        double kth;
        reference_topk(JVDB_METRIC_L2, data, n, alive, qq, 10, want, &kth);
        for (size_t j = 0; j < cnt; j++)
            for (int w = 0; w < 10; w++) hits += id_num(r[j].id) == want[w];
        total += 10;
        jvdb_results_free(r, cnt);
    }
    return (double)hits / total;
}

static void test_hnsw_recall(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { N = 20000 };
    float *data = make_clustered(N, DIM, 2);
    jvdb_db *db = load(env, "h", JVDB_METRIC_L2, data, N);
    jvdb_index_options io;
    jvdb_index_options_init(&io);
    io.ef_construction = 100;
    io.ef_search = 256; /* a third of the queries fall where vectors were deleted: hard ones */
    assert_ok(jvdb_db_set_index(db, &io));
    /* Before the graph has everything, answers are still complete (pending vectors are scanned). */
    assert_true(recall_at_10(db, data, N, NULL, 0) >= 0.95);
    assert_ok(jvdb_db_index_wait(db, 600000));
    jvdb_index_status st;
    assert_ok(jvdb_db_index_status(db, &st));
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.nodes, N);
    double r1 = recall_at_10(db, data, N, NULL, 0);
    print_message("recall@10 %.3f on %d vectors\n", r1, N);
    assert_true(r1 >= 0.95);

    /* Delete 30%. */
    int *alive = malloc(N * sizeof *alive);
    char id[16];
    for (int i = 0; i < N; i++) {
        alive[i] = i % 10 >= 3;
        if (!alive[i]) {
            snprintf(id, sizeof id, "v%d", i);
            assert_ok(jvdb_delete(db, id, NULL));
        }
    }
    assert_ok(jvdb_db_index_wait(db, 600000));
    double r2 = recall_at_10(db, data, N, alive, 0);
    print_message("recall@10 %.3f after deleting 30%%\n", r2);
    assert_true(r2 >= 0.95);
    jvdb_env_close(env);

    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "h", &db));
    jvdb_index_options got;
    jvdb_db_get_index(db, &got);
    assert_int_equal(got.ef_construction, 100);
    assert_ok(jvdb_db_index_wait(db, 600000));
    double r3 = recall_at_10(db, data, N, alive, 0);
    print_message("recall@10 %.3f after reopening\n", r3);
    assert_true(r3 >= 0.95);
    assert_true(recall_at_10(db, data, N, alive, 1) == 1.0);
    free(alive);
    free(data);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

static void test_filters(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { N = 4000 };
    float *data = make_clustered(N, DIM, 3);
    jvdb_db *db = load(env, "f", JVDB_METRIC_L2, data, N);
    assert_ok(jvdb_db_index_wait(db, 600000));
    struct {
        const char *filter;
        int (*match)(int i);
        int expect_k;
    } cases[] = {
        { "{\"group\": 3}", NULL, 10 },
        { "{\"group\": {\"$in\": [1, 2]}, \"even\": true}", NULL, 10 },
        { "{\"group\": {\"$gte\": 7, \"$lt\": 9}}", NULL, 10 },
        { "{\"group\": {\"$ne\": 0}}", NULL, 10 },
        { "{\"name\": \"n1234\"}", NULL, 1 },
        { "{\"name\": {\"$in\": [\"n5\", \"n77\", \"n3999\"]}}", NULL, 3 },
        { "{\"missing\": 1}", NULL, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        jvdb_filter *f;
        assert_ok(jvdb_filter_parse(cases[c].filter, &f));
        for (int exact = 0; exact < 2; exact++) {
            jvdb_search_params p;
            jvdb_search_params_init(&p);
            p.filter = f;
            p.exact = exact;
            p.include_metadata = 1;
            jvdb_result *r;
            size_t n;
            assert_ok(jvdb_search(db, data, DIM, &p, &r, &n));
            if ((int)n != cases[c].expect_k)
                fail_msg("filter %s (exact %d): %zu results, want %d", cases[c].filter, exact, n, cases[c].expect_k);
            for (size_t j = 0; j < n; j++) {
                int i = id_num(r[j].id);
                char meta[64];
                snprintf(meta, sizeof meta, "{\"group\":%d,\"name\":\"n%d\",\"even\":%s}", i % 10, i,
                         i % 2 ? "false" : "true");
                assert_string_equal(r[j].meta_json, meta);
                int g = i % 10;
                switch (c) {
                case 0: assert_int_equal(g, 3); break;
                case 1: assert_true((g == 1 || g == 2) && i % 2 == 0); break;
                case 2: assert_true(g == 7 || g == 8); break;
                case 3: assert_true(g != 0); break;
                case 4: assert_int_equal(i, 1234); break;
                default: break;
                }
            }
            jvdb_results_free(r, n);
        }
        jvdb_filter_free(f);
    }
    jvdb_filter *f;
    assert_err(jvdb_filter_parse("[1]", &f), JVDB_EINVAL, "must be a JSON object");
    assert_err(jvdb_filter_parse("{\"a\": {\"$near\": 1}}", &f), JVDB_EINVAL, "unknown operator '$near'");
    assert_err(jvdb_filter_parse("{\"a\": {\"$in\": 1}}", &f), JVDB_EINVAL, "$in needs an array");
    assert_err(jvdb_filter_parse("{\"a\": {\"$gt\": \"x\"}}", &f), JVDB_EINVAL, "$gt needs a number");
    assert_err(jvdb_filter_parse("{\"a\": ", &f), JVDB_EINVAL, "not valid JSON");
    /* Query errors. */
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    jvdb_result *r;
    size_t n;
    assert_err(jvdb_search(db, data, DIM - 1, &p, &r, &n), JVDB_EINVAL,
               "query has 23 values but database 'f' has dimension 24");
    float bad[DIM];
    memcpy(bad, data, sizeof bad);
    bad[5] = NAN;
    assert_err(jvdb_search(db, bad, DIM, &p, &r, &n), JVDB_EINVAL, "query value 5 is NaN");
    p.k = 0;
    assert_err(jvdb_search(db, data, DIM, &p, &r, &n), JVDB_EINVAL, "out of range");
    /* Threshold: only results at least that good. */
    jvdb_search_params_init(&p);
    p.has_threshold = 1;
    p.threshold = 0.0f;
    p.k = 5;
    assert_ok(jvdb_search(db, data, DIM, &p, &r, &n));
    assert_int_equal(n, 1);
    assert_string_equal(r[0].id, "v0");
    jvdb_results_free(r, n);
    free(data);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* KiB of the process's RSS in the mappings that begin at the segments' map addresses (/proc/self/smaps). */
static long segments_rss_kb(jvdb_db *db)
{
    uintptr_t starts[64];
    size_t ns = 0;
    rp_enter();
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n && ns < 64; i++) starts[ns++] = (uintptr_t)l->segs[i]->map;
    rp_exit();
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    long kb = 0;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        long v;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = 0;
            for (size_t i = 0; i < ns; i++) in |= lo == starts[i];
        } else if (in && sscanf(line, "Rss: %ld kB", &v) == 1) {
            kb += v;
        }
    }
    fclose(f);
    return kb;
}

/* Unmaps (MADV_DONTNEED; the page cache keeps them) every page of the segment mappings. */
static void segments_drop(jvdb_db *db)
{
    rp_enter();
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n; i++)
        assert_int_equal(madvise((void *)l->segs[i]->map, l->segs[i]->map_len, MADV_DONTNEED), 0);
    rp_exit();
}

/* Issue 11: a stream of HNSW searches (re-rank, vectors and metadata of the results) must not map
 * the segments' pages: read through the mapping, each touch left 16 pages of page cache in RSS
 * (fault-around), and a query stream brought the whole file in (1.75x raw vectors at 1M). */
static void test_hnsw_reads_leave_segments_unmapped(void **state)
{
    (void)state;
    assert_ok(jvdb_set_search_reads(JVDB_READS_PREAD)); /* the default reads through the mapping */
    assert_int_equal(jvdb_set_search_reads((jvdb_search_reads)7), JVDB_EINVAL);
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { N = 20000 };
    float *data = make_clustered(N, DIM, 4);
    jvdb_db *db = load(env, "m", JVDB_METRIC_L2, data, N);
    jvdb_index_options io;
    jvdb_index_options_init(&io);
    io.ef_construction = 64;
    assert_ok(jvdb_db_set_index(db, &io));
    assert_ok(jvdb_db_index_wait(db, 600000));
    segments_drop(db);
    long before = segments_rss_kb(db);
    int hits = 0;
    for (int qi = 0; qi < 400; qi++) {
        int row = (qi * 7919) % N;
        float q[DIM];
        for (int d = 0; d < DIM; d++) q[d] = data[(size_t)row * DIM + d] + 0.001f;
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.ef = 64;
        p.include_vectors = 1;
        p.include_metadata = 1;
        jvdb_result *r;
        size_t n;
        assert_ok(jvdb_search(db, q, DIM, &p, &r, &n));
        assert_int_equal(n, 10);
        for (size_t j = 0; j < n; j++) {
            int got = id_num(r[j].id);
            hits += got == row;
            /* The copies are the stored record's: vector, metadata, score. */
            assert_memory_equal(r[j].vector, data + (size_t)got * DIM, DIM * sizeof(float));
            char want[64];
            snprintf(want, sizeof want, "\"name\":\"n%d\"", got);
            assert_non_null(strstr(r[j].meta_json, want));
            assert_true(fabs(ref_score(JVDB_METRIC_L2, q, r[j].vector, DIM) - r[j].score) <= 1e-3);
        }
        jvdb_results_free(r, n);
    }
    long after = segments_rss_kb(db);
    print_message("segment pages mapped: %ld KiB before, %ld KiB after 400 searches (%d of 400 found their row)\n",
                  before, after, hits);
    assert_true(hits >= 390);
    assert_true(after - before <= 64); /* was every page of the file (3.8 MiB) */
    /* An exact scan still reads the mapping (sequential: fault-around is what it wants). */
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    p.exact = 1;
    p.threads = 1;
    jvdb_result *r;
    size_t n;
    assert_ok(jvdb_search(db, data, DIM, &p, &r, &n));
    jvdb_results_free(r, n);
    assert_true(segments_rss_kb(db) > after + 1024);
    /* The default reads through the mapping: the same searches map pages there (the mode decides). */
    assert_ok(jvdb_set_search_reads(JVDB_READS_MAPPED));
    segments_drop(db);
    long mapped_before = segments_rss_kb(db);
    for (int qi = 0; qi < 100; qi++) {
        jvdb_search_params_init(&p);
        p.k = 10;
        assert_ok(jvdb_search(db, data + (size_t)((qi * 7919) % N) * DIM, DIM, &p, &r, &n));
        jvdb_results_free(r, n);
    }
    assert_true(segments_rss_kb(db) > mapped_before + 64);
    free(data);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* The re-rank reads only candidates whose code bound can still beat the k-th distance: with the
 * whole database in the ef window, the HNSW answer must be the exact one, also on rows whose
 * magnitudes (and so steps) differ by 1e4. */
static void test_rerank_bounds_keep_exact_answers(void **state)
{
    (void)state;
    assert_ok(jvdb_set_search_reads(JVDB_READS_PREAD)); /* the bounds are the pread path's */
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { N = 400 };
    float *data = make_clustered(N, DIM, 5);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < DIM; d++) data[(size_t)i * DIM + d] *= (float)pow(10.0, (i % 5) - 2);
    jvdb_db *db = load(env, "b", JVDB_METRIC_L2, data, N);
    jvdb_index_options io;
    jvdb_index_options_init(&io);
    assert_ok(jvdb_db_set_index(db, &io));
    assert_ok(jvdb_db_index_wait(db, 600000));
    for (int qi = 0; qi < 50; qi++) {
        float q[DIM];
        for (int d = 0; d < DIM; d++) q[d] = data[(size_t)((qi * 37) % N) * DIM + d] * 1.01f + 0.001f * (float)d;
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.ef = 1000;
        jvdb_result *r, *x;
        size_t n, xn;
        assert_ok(jvdb_search(db, q, DIM, &p, &r, &n));
        p.exact = 1;
        assert_ok(jvdb_search(db, q, DIM, &p, &x, &xn));
        assert_int_equal(n, xn);
        for (size_t j = 0; j < n; j++) assert_true(fabs(r[j].score - x[j].score) <= 1e-4 * (1 + fabs(x[j].score)));
        jvdb_results_free(r, n);
        jvdb_results_free(x, xn);
    }
    free(data);
    jvdb_env_close(env);
    tu_rmdir(dir);
    assert_ok(jvdb_set_search_reads(JVDB_READS_MAPPED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_matches_reference),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_hnsw_recall),
        cmocka_unit_test(test_hnsw_reads_leave_segments_unmapped),
        cmocka_unit_test(test_rerank_bounds_keep_exact_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

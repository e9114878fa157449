/* test_stored_values.c — vectors are stored exactly as given, for every metric (issue 12, item 1):
 * put/get, batch puts, search results with include_vectors, reopen and backup/restore give back the
 * same bits; cosine search scores equal a double-precision reference for the exact scan and the HNSW
 * graph, whatever the vectors' lengths (down to 1e-30 and up to 1e15); and a database written by the
 * earlier version (cosine vectors stored normalised, MANIFEST format 1) opens, searches right, stays
 * format 1 while only read, and becomes format 2 at its first put: both imitated here and as that
 * version really wrote it (fixtures/cosine-format1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/manifest.h"
#include "test_util.h"

#define DIM       24
#define N         1500
/* float32 sums of 24 terms against the double reference, for scores in [-1, 1] */
#define SCORE_TOL 5e-6

/* Double-precision reference score of query q against stored vector v. */
static double ref_score(jvdb_metric m, const float *q, const float *v, uint32_t dim)
{
    double s = 0, qq = 0, vv = 0;
    for (uint32_t i = 0; i < dim; i++) {
        if (m == JVDB_METRIC_L2) s += ((double)q[i] - v[i]) * ((double)q[i] - v[i]);
        else s += (double)q[i] * v[i];
        qq += (double)q[i] * q[i];
        vv += (double)v[i] * v[i];
    }
    return m == JVDB_METRIC_COSINE ? s / (sqrt(qq) * sqrt(vv)) : s;
}

/* What the earlier version stored for a cosine put (db_check_vector before issue 12). */
static void old_normalise(const float *v, float *out, uint32_t dim)
{
    double sum = 0;
    for (uint32_t i = 0; i < dim; i++) sum += (double)v[i] * v[i];
    double inv = 1.0 / sqrt(sum);
    for (uint32_t i = 0; i < dim; i++) out[i] = (float)(v[i] * inv);
}

/* Clustered vectors, each scaled by 10^e with e spread over [-30, 15]: cosine must not care. */
static float *make_scaled(int n, uint32_t dim, unsigned seed)
{
    float *v = malloc((size_t)n * dim * sizeof *v);
    float centres[20][DIM];
    for (int c = 0; c < 20; c++) tu_vector(centres[c], dim, 7000u + (uint64_t)c + seed, 0);
    for (int i = 0; i < n; i++) {
        float noise[DIM];
        tu_vector(noise, dim, (uint64_t)i, seed);
        double scale = pow(10.0, -30.0 + 45.0 * (double)(((unsigned)i * 7919u) % 1000) / 999.0);
        for (uint32_t d = 0; d < dim; d++)
            v[(size_t)i * dim + d] = (float)((centres[i % 20][d] + 0.4f * noise[d]) * scale);
    }
    return v;
}

static void put_all(jvdb_db *db, const float *data, int n, uint32_t dim)
{
    char ids[64][16];
    jvdb_record recs[64];
    for (int i = 0; i < n;) {
        int k = 0;
        for (; k < 64 && i < n; k++, i++) {
            snprintf(ids[k], sizeof ids[k], "v%d", i);
            recs[k] = (jvdb_record){ ids[k], data + (size_t)i * dim, dim, NULL };
        }
        assert_ok(jvdb_put_batch(db, recs, (size_t)k, NULL));
    }
}

/* Every stored vector comes back with the very bits it was put with. */
static void check_bits(jvdb_db *db, const float *data, int n, uint32_t dim)
{
    float got[DIM];
    char id[16];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "v%d", i);
        assert_ok(jvdb_get(db, id, got, NULL));
        if (memcmp(got, data + (size_t)i * dim, dim * sizeof(float)) != 0)
            fail_msg("%s: get returned other bits than were put (first value %a, put %a)", id, got[0],
                     data[(size_t)i * dim]);
    }
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Searches `nq` queries (exact or through the graph) and checks every returned score against the
 * double reference for its vector; for exact, the ids are the reference's top k (up to ties);
 * include_vectors returns the stored bits.  Returns recall@10 against the reference. */
static double check_search(jvdb_db *db, jvdb_metric m, const float *data, int n, uint32_t dim, int exact, int nq)
{
    int hits = 0;
    for (int qi = 0; qi < nq; qi++) {
        float q[DIM];
        tu_vector(q, dim, 900000u + (uint64_t)qi, 3);
        /* Queries near stored points, at their own arbitrary scale. */
        const float *near = data + (size_t)((qi * 37) % n) * dim;
        double nn = 0;
        for (uint32_t d = 0; d < dim; d++) nn += (double)near[d] * near[d];
        for (uint32_t d = 0; d < dim; d++) q[d] = (float)(near[d] / sqrt(nn) * 3.0 + 0.05 * q[d]);
        double *ref = malloc((size_t)n * sizeof *ref);
        for (int i = 0; i < n; i++) ref[i] = ref_score(m, q, data + (size_t)i * dim, dim);
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.k = 10;
        p.exact = exact;
        p.include_vectors = 1;
        p.threads = 1;
        jvdb_result *r;
        size_t cnt;
        assert_ok(jvdb_search(db, q, dim, &p, &r, &cnt));
        assert_int_equal(cnt, 10);
        /* The reference's 10th best score. */
        double *sorted = malloc((size_t)n * sizeof *sorted);
        memcpy(sorted, ref, (size_t)n * sizeof *sorted);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_desc);
        double kth = sorted[9];
        free(sorted);
        for (size_t i = 0; i < cnt; i++) {
            int idx = atoi(r[i].id + 1);
            const float *v = data + (size_t)idx * dim;
            if (fabs(r[i].score - ref[idx]) > SCORE_TOL)
                fail_msg("%s search, query %d, rank %zu (%s): score %.9g but the reference is %.9g",
                         exact ? "exact" : "hnsw", qi, i, r[i].id, r[i].score, ref[idx]);
            if (memcmp(r[i].vector, v, dim * sizeof(float)) != 0)
                fail_msg("%s: include_vectors returned other bits", r[i].id);
            if (ref[idx] >= kth - SCORE_TOL) hits++;
            else if (exact)
                fail_msg("exact search, query %d: %s (score %.9g) is not in the top 10 (10th %.9g)", qi, r[i].id,
                         ref[idx], kth);
        }
        jvdb_results_free(r, cnt);
        free(ref);
    }
    return hits / (10.0 * nq);
}

static void test_round_trip_every_metric(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    /* Awkward values: a plain integer vector, -0.0, denormals, the magnitude bound's neighbourhood. */
    float awkward[4][4] = { { 1, 2, 3, 4 },
                            { -0.0f, 1e-45f, 0x1p-149f, 3.5f },
                            { 4.5e18f, -4.5e18f, 1e-45f, 0 },
                            { 1e-30f, -2e-30f, 3e-30f, 0 } };
    jvdb_metric metrics[3] = { JVDB_METRIC_L2, JVDB_METRIC_COSINE, JVDB_METRIC_DOT };
    for (int mi = 0; mi < 3; mi++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", mi);
        jvdb_db *db = tu_create(env, name, 4, metrics[mi], 0);
        for (int i = 0; i < 4; i++) {
            char id[8];
            snprintf(id, sizeof id, "v%d", i);
            assert_ok(jvdb_put(db, id, awkward[i], 4, NULL, NULL));
        }
        check_bits(db, &awkward[0][0], 4, 4);
    }
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    for (int mi = 0; mi < 3; mi++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", mi);
        jvdb_db *db;
        assert_ok(jvdb_db_open(env, name, &db));
        check_bits(db, &awkward[0][0], 4, 4);
    }
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Cosine scores of vectors of every length, exact and HNSW, before and after a reopen (which
 * rebuilds the graph from the stored vectors). */
static void test_cosine_scores_match_reference(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "c", DIM, JVDB_METRIC_COSINE, 0);
    float *data = make_scaled(N, DIM, 11);
    put_all(db, data, N, DIM);
    check_bits(db, data, N, DIM);
    check_search(db, JVDB_METRIC_COSINE, data, N, DIM, 1, 30);
    assert_ok(jvdb_db_index_wait(db, 120000));
    double recall = check_search(db, JVDB_METRIC_COSINE, data, N, DIM, 0, 30);
    assert_true(recall >= 0.9);
    jvdb_env_close(env);

    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "c", &db));
    check_bits(db, data, N, DIM);
    check_search(db, JVDB_METRIC_COSINE, data, N, DIM, 1, 10);
    assert_ok(jvdb_db_index_wait(db, 120000));
    assert_true(check_search(db, JVDB_METRIC_COSINE, data, N, DIM, 0, 10) >= 0.9);
    jvdb_env_close(env);
    free(data);
    tu_rmdir(dir);
}

static uint32_t manifest_format_of(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/databases/%s", dir, name);
    struct manifest m;
    assert_ok(manifest_load(path, &m));
    uint32_t f = m.format;
    manifest_free(&m);
    return f;
}

/* Rewrites a database's MANIFEST as the earlier version wrote it (format 1). */
static void make_format_1(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/databases/%s", dir, name);
    struct manifest m;
    assert_ok(manifest_load(path, &m));
    m.format = 1;
    assert_ok(manifest_store(path, &m));
    manifest_free(&m);
}

/* A cosine database of the earlier version: its vectors are unit length and its MANIFEST says
 * format 1.  It opens and searches right as it is, read-only opens and searches leave it format 1,
 * a put stores the new vector as given and makes it format 2; backups of it restore, before and
 * after. */
static void test_old_format_database(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char *repo_dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    enum { OLD_N = 600 };
    float *orig = make_scaled(OLD_N + 100, DIM, 5);
    float *stored = malloc((size_t)(OLD_N + 100) * DIM * sizeof *stored);
    for (int i = 0; i < OLD_N; i++) old_normalise(orig + (size_t)i * DIM, stored + (size_t)i * DIM, DIM);
    memcpy(stored + (size_t)OLD_N * DIM, orig + (size_t)OLD_N * DIM, 100 * DIM * sizeof(float));
    jvdb_db *db = tu_create(env, "old", DIM, JVDB_METRIC_COSINE, 0);
    put_all(db, stored, OLD_N, DIM);
    jvdb_env_close(env);
    assert_int_equal(manifest_format_of(dir, "old"), 2);
    make_format_1(dir, "old");

    /* Read-only: opens and searches, changes nothing. */
    assert_ok(jvdb_env_open_readonly(dir, &env));
    assert_ok(jvdb_db_open(env, "old", &db));
    check_bits(db, stored, OLD_N, DIM);
    check_search(db, JVDB_METRIC_COSINE, stored, OLD_N, DIM, 1, 5);
    jvdb_env_close(env);
    assert_int_equal(manifest_format_of(dir, "old"), 1);

    /* Writable: searching (graph included) and backing up still leave format 1. */
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "old", &db));
    check_search(db, JVDB_METRIC_COSINE, stored, OLD_N, DIM, 1, 5);
    assert_ok(jvdb_db_index_wait(db, 120000));
    assert_true(check_search(db, JVDB_METRIC_COSINE, stored, OLD_N, DIM, 0, 10) >= 0.9);
    jvdb_repo *repo;
    assert_ok(jvdb_repo_open(repo_dir, NULL, &repo));
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    jvdb_backup_info old_full;
    assert_ok(jvdb_backup_create(db, repo, &bo, &old_full));
    assert_int_equal(manifest_format_of(dir, "old"), 1);

    /* The first put marks it format 2; new vectors come back as given, old ones as they were kept. */
    char ids[100][16];
    jvdb_record recs[100];
    for (int i = 0; i < 100; i++) {
        snprintf(ids[i], sizeof ids[i], "v%d", OLD_N + i);
        recs[i] = (jvdb_record){ ids[i], stored + (size_t)(OLD_N + i) * DIM, DIM, NULL };
    }
    assert_ok(jvdb_put_batch(db, recs, 100, NULL));
    assert_int_equal(manifest_format_of(dir, "old"), 2);
    check_bits(db, stored, OLD_N + 100, DIM);
    check_search(db, JVDB_METRIC_COSINE, stored, OLD_N + 100, DIM, 1, 10);
    assert_ok(jvdb_db_index_wait(db, 120000));
    assert_true(check_search(db, JVDB_METRIC_COSINE, stored, OLD_N + 100, DIM, 0, 10) >= 0.9);
    bo.type = JVDB_BACKUP_INCREMENTAL;
    jvdb_backup_info inc;
    assert_ok(jvdb_backup_create(db, repo, &bo, &inc));

    /* Restores: the old full backup alone (unit vectors) and the chain (mixed), bit for bit. */
    jvdb_restore_options ro = { .as_name = "from_old" };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(env, repo, old_full.id, &ro, &r));
    assert_int_equal(jvdb_count(r), OLD_N);
    check_bits(r, stored, OLD_N, DIM);
    check_search(r, JVDB_METRIC_COSINE, stored, OLD_N, DIM, 1, 5);
    ro.as_name = "from_chain";
    assert_ok(jvdb_backup_restore(env, repo, inc.id, &ro, &r));
    assert_int_equal(jvdb_count(r), OLD_N + 100);
    check_bits(r, stored, OLD_N + 100, DIM);
    check_search(r, JVDB_METRIC_COSINE, stored, OLD_N + 100, DIM, 1, 5);
    jvdb_repo_close(repo);
    jvdb_env_close(env);
    assert_int_equal(manifest_format_of(dir, "from_old"), 2);
    free(orig);
    free(stored);
    tu_rmdir(dir);
    tu_rmdir(repo_dir);
}

/* Copies fixture file `rel` (under JVDB_FIXTURES) to dir/rel. */
static void copy_fixture(const char *dir, const char *rel)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/%s", JVDB_FIXTURES, rel);
    snprintf(to, sizeof to, "%s/%s", dir, rel);
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) fail_msg("cannot copy %s to %s", from, to);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* A data directory the earlier version really wrote (fixtures/cosine-format1/README.md): its
 * vectors are the unit vectors that version computed, it searches by the original directions, and
 * the first put stores as given and moves it to format 2. */
static void test_format1_fixture(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/databases", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/databases/old", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    copy_fixture(dir, "databases/old/MANIFEST");
    copy_fixture(dir, "databases/old/0000000001.seg");
    assert_int_equal(manifest_format_of(dir, "old"), 1);

    float orig[5][4] = {
        { 1, 2, 3, 4 }, { -3, 0.5f, 1e-30f, 7 }, { 1e15f, 2e15f, -1e15f, 0 }, { 0.001f, 0, 0, 0.002f }, { 4, 3, 2, 1 }
    };
    float unit[5][4];
    for (int i = 0; i < 5; i++) old_normalise(orig[i], unit[i], 4);
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db;
    assert_ok(jvdb_db_open(env, "old", &db));
    assert_int_equal(jvdb_count(db), 5);
    float got[4];
    char *meta = NULL;
    static const char *const ids[5] = { "a", "b", "c", "d", "e" };
    for (int i = 0; i < 5; i++) {
        assert_ok(jvdb_get(db, ids[i], got, i == 0 ? &meta : NULL));
        assert_memory_equal(got, unit[i], sizeof got);
    }
    assert_string_equal(meta, "{\"k\":1}");
    jvdb_free(meta);
    /* Scores are the cosines of the original vectors, exact and through the graph. */
    float q[4] = { 2, 1, 0.5f, 3 };
    for (int exact = 1; exact >= 0; exact--) {
        if (!exact) assert_ok(jvdb_db_index_wait(db, 60000));
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.exact = exact;
        jvdb_result *r;
        size_t cnt;
        assert_ok(jvdb_search(db, q, 4, &p, &r, &cnt));
        assert_int_equal(cnt, 5);
        for (size_t i = 0; i < cnt; i++) {
            int idx = r[i].id[0] - 'a';
            double want = ref_score(JVDB_METRIC_COSINE, q, orig[idx], 4);
            if (fabs(r[i].score - want) > SCORE_TOL) fail_msg("%s: score %.9g, cosine %.9g", r[i].id, r[i].score, want);
            if (i > 0) assert_true(r[i].score <= r[i - 1].score);
        }
        jvdb_results_free(r, cnt);
    }
    assert_int_equal(manifest_format_of(dir, "old"), 1);
    float f[4] = { 5, 6, 7, 8 };
    assert_ok(jvdb_put(db, "f", f, 4, NULL, NULL));
    assert_int_equal(manifest_format_of(dir, "old"), 2);
    assert_ok(jvdb_get(db, "f", got, NULL));
    assert_memory_equal(got, f, sizeof got);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_metric),
        cmocka_unit_test(test_cosine_scores_match_reference),
        cmocka_unit_test(test_old_format_database),
        cmocka_unit_test(test_format1_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_filter.c — metadata filters (issue 12): every documented rule (lists contain, dotted paths,
 * $and/$or/$not, $exists, $contains, numeric strings in ranges, strict equality) checked by exact
 * and HNSW search against a brute-force reference over the same data, and the compile errors; the
 * bulk writes (counts, merges that lose no concurrent update) and scroll order. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DIM 16
#define N   3000
#define K   40

static float data[N * DIM];

/* The metadata of vector i: lists, nested objects, a list of objects, numbers written as strings. */
static void meta_of(int i, char *buf, size_t cap)
{
    char opt[32] = "";
    if (i % 12 == 0) snprintf(opt, sizeof opt, ",\"opt\":null");
    else if (i % 6 == 0) snprintf(opt, sizeof opt, ",\"opt\":%d", i);
    snprintf(buf, cap,
             "{\"n\":%d,\"s\":\"%d\",\"tags\":[\"t%d\",\"t%d\"],\"m\":{\"lang\":\"%s\",\"deep\":{\"x\":%d}},"
             "\"items\":[{\"k\":%d},{\"k\":%d}],\"title\":\"doc number %d\"%s}",
             i, i, i % 3, i % 5 + 10, i % 2 ? "en" : "fr", i % 7, i % 4, i % 4 + 1, i, opt);
}

static int starts12(int i)
{
    char b[16];
    snprintf(b, sizeof b, "%d", i);
    return !strncmp(b, "12", 2);
}

/* Each filter beside the predicate it must equal. */
static int truth(int c, int i)
{
    switch (c) {
    case 0: return i % 3 == 1;
    case 1: return i % 3 == 0 || i % 5 == 2;
    case 2: return i % 2 == 1;
    case 3: return i % 7 >= 5;
    case 4: return i > 100 && i <= 200;
    case 5: return 0;
    case 6: return i % 2 == 0 || i % 5 == 1;
    case 7:
    case 8: return i % 3 != 1;
    case 9: return i % 6 == 0;
    case 10: return i % 6 != 0;
    case 11: return i % 4 == 2 || i % 4 == 3;
    case 12: return starts12(i);
    case 13: return i % 3 == 2;
    case 14: return i < 1000 && (i % 3 == 0 || i % 7 == 0);
    case 15: return i % 3 == 2;
    case 16: return i % 12 == 0;
    case 17: return i >= 10 && i < 20;
    case 18: return i == 150;
    case 19: return i % 2 == 1 && !(i % 4 == 3);
    default: return 1;
    }
}

static const char *filters[] = {
    "{\"tags\": \"t1\"}",
    "{\"tags\": {\"$in\": [\"t0\", \"t12\"]}}",
    "{\"m.lang\": \"en\"}",
    "{\"m.deep.x\": {\"$gte\": 5}}",
    "{\"s\": {\"$gt\": 100, \"$lte\": 200}}",
    "{\"s\": 150}",
    "{\"$or\": [{\"m.lang\": \"fr\"}, {\"tags\": \"t11\"}]}",
    "{\"$not\": {\"tags\": \"t1\"}}",
    "{\"tags\": {\"$ne\": \"t1\"}}",
    "{\"opt\": {\"$exists\": true}}",
    "{\"opt\": {\"$exists\": false}}",
    "{\"items.k\": 3}",
    "{\"title\": {\"$contains\": \"number 12\"}}",
    "{\"tags\": {\"$contains\": \"t2\"}}",
    "{\"$and\": [{\"n\": {\"$lt\": 1000}}, {\"$or\": [{\"tags\": \"t0\"}, {\"m.deep.x\": 0}]}]}",
    "{\"tags\": {\"$nin\": [\"t0\", \"t1\"]}}",
    "{\"opt\": null}",
    "{\"n\": {\"$gte\": 10}, \"$not\": {\"n\": {\"$gte\": 20}}}",
    "{\"s\": \"150\"}",
    "{\"m.lang\": \"en\", \"$not\": {\"items.k\": 4}}",
};

static int cmp_d(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static int id_num(const char *id) { return atoi(id + 1); }

static void check_case(jvdb_db *db, int c, const float *q)
{
    jvdb_filter *f;
    assert_ok(jvdb_filter_parse(filters[c], &f));
    /* Brute force: the K nearest (l2) among the vectors the predicate accepts. */
    double(*ref)[2] = malloc(N * sizeof *ref);
    int nref = 0;
    for (int i = 0; i < N; i++) {
        if (!truth(c, i)) continue;
        double s = 0;
        for (int d = 0; d < DIM; d++) s += ((double)q[d] - data[i * DIM + d]) * ((double)q[d] - data[i * DIM + d]);
        ref[nref][0] = s;
        ref[nref++][1] = i;
    }
    qsort(ref, (size_t)nref, sizeof *ref, cmp_d);
    int want = nref < K ? nref : K;
    uint64_t counted;
    assert_ok(jvdb_count_filtered(db, f, &counted));
    if ((int)counted != nref)
        fail_msg("filter %s: count %llu, reference %d", filters[c], (unsigned long long)counted, nref);
    for (int exact = 0; exact < 2; exact++) {
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.filter = f;
        p.exact = exact;
        p.k = K;
        jvdb_result *r;
        size_t n;
        assert_ok(jvdb_search(db, q, DIM, &p, &r, &n));
        if ((int)n != want) fail_msg("filter %s (exact %d): %zu results, reference %d", filters[c], exact, n, want);
        int hits = 0;
        for (size_t j = 0; j < n; j++) {
            int i = id_num(r[j].id);
            if (!truth(c, i)) fail_msg("filter %s (exact %d): v%d does not satisfy it", filters[c], exact, i);
            for (int t = 0; t < want; t++) hits += (int)ref[t][1] == i;
            if (exact && (int)ref[j][1] != i)
                fail_msg("filter %s: result %zu is v%d, reference v%d", filters[c], j, i, (int)ref[j][1]);
        }
        if (!exact && hits < want * 8 / 10) fail_msg("filter %s: HNSW recall %d/%d", filters[c], hits, want);
        jvdb_results_free(r, n);
    }
    free(ref);
    jvdb_filter_free(f);
}

static void test_filter_reference(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "f", DIM, JVDB_METRIC_L2, 0);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    static char ids[N][16], metas[N][256];
    static jvdb_record recs[N];
    for (int i = 0; i < N; i++) {
        tu_vector(data + i * DIM, DIM, (uint64_t)i, 7);
        snprintf(ids[i], sizeof ids[i], "v%d", i);
        meta_of(i, metas[i], sizeof metas[i]);
        recs[i] = (jvdb_record){ ids[i], data + i * DIM, DIM, metas[i] };
    }
    assert_ok(jvdb_put_batch(db, recs, N, NULL));
    assert_ok(jvdb_db_index_wait(db, 600000));
    float q[DIM];
    for (int c = 0; c < (int)(sizeof filters / sizeof filters[0]); c++) {
        for (int qi = 0; qi < 3; qi++) {
            tu_vector(q, DIM, 900000u + (uint64_t)qi, 3);
            check_case(db, c, q);
        }
    }
    jvdb_env_close(env);
    tu_rmdir(dir);
}

static void test_filter_errors(void **state)
{
    (void)state;
    jvdb_filter *f;
    assert_err(jvdb_filter_parse("{\"$or\": []}", &f), JVDB_EINVAL, "$or needs a non-empty array of filter objects");
    assert_err(jvdb_filter_parse("{\"$and\": {\"a\": 1}}", &f), JVDB_EINVAL, "$and needs a non-empty array");
    assert_err(jvdb_filter_parse("{\"$or\": [{\"a\": 1}, 2]}", &f), JVDB_EINVAL, "$or item 1 is not a filter object");
    assert_err(jvdb_filter_parse("{\"$not\": [1]}", &f), JVDB_EINVAL, "$not needs a filter object");
    assert_err(jvdb_filter_parse("{\"$nor\": []}", &f), JVDB_EINVAL, "'$nor' is not a field or $and/$or/$not");
    assert_err(jvdb_filter_parse("{\"a\": {\"$or\": []}}", &f), JVDB_EINVAL, "$or goes at the level of fields");
    assert_err(jvdb_filter_parse("{\"m\": {\"lang\": \"en\"}}", &f), JVDB_EINVAL,
               "'lang' is not an operator (a nested field is written \"m.lang\")");
    assert_err(jvdb_filter_parse("{\"a..b\": 1}", &f), JVDB_EINVAL, "field path 'a..b' has an empty part");
    assert_err(jvdb_filter_parse("{\"\": 1}", &f), JVDB_EINVAL, "a field name is empty");
    assert_err(jvdb_filter_parse("{\"a\": {\"$exists\": 1}}", &f), JVDB_EINVAL, "$exists needs true or false");
    assert_err(jvdb_filter_parse("{\"a\": {\"$contains\": [1]}}", &f), JVDB_EINVAL,
               "$contains needs a string, number, boolean or null");
    assert_err(jvdb_filter_parse("{\"a\": [1, 2]}", &f), JVDB_EINVAL, "a list is not a value to match");
    assert_err(jvdb_filter_parse("{\"a\": {\"$gt\": \"5\"}}", &f), JVDB_EINVAL, "$gt needs a number");
    assert_err(jvdb_filter_parse("{\"a\": {\"$regex\": \"x\"}}", &f), JVDB_EINVAL, "unknown operator '$regex'");
    /* Nesting is bounded: a request body cannot make the matcher recurse without end. */
    char deep[2048] = "";
    for (int i = 0; i < 40; i++) strcat(deep, "{\"$not\":");
    strcat(deep, "{\"a\":1}");
    for (int i = 0; i < 40; i++) strcat(deep, "}");
    assert_err(jvdb_filter_parse(deep, &f), JVDB_EINVAL, "nested deeper than 32 levels");
    /* {} is no condition. */
    assert_ok(jvdb_filter_parse("{}", &f));
    jvdb_filter_free(f);
}

/* Bulk writes: counts, duplicates, bad input changing nothing, merges. */
static void test_bulk_library(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "b", 4, JVDB_METRIC_L2, 0);
    float v[4] = { 1, 2, 3, 4 };
    char id[16], meta[64];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "v%d", i);
        snprintf(meta, sizeof meta, "{\"g\":%d,\"tags\":[\"t%d\"]}", i % 4, i % 2);
        assert_ok(jvdb_put(db, id, v, 4, meta, NULL));
    }
    const char *ids[] = { "v1", "v2", "v2", "zz", "v3" };
    uint64_t n, lsn;
    assert_ok(jvdb_delete_ids(db, ids, 5, &n, &lsn));
    assert_int_equal(n, 3);
    assert_true(lsn > 0);
    assert_int_equal(jvdb_count(db), 17);
    assert_ok(jvdb_delete_ids(db, ids, 5, &n, &lsn));
    assert_int_equal(n, 0);
    assert_int_equal(lsn, 0);
    const char *bad[] = { "v4", "" };
    assert_err(jvdb_delete_ids(db, bad, 2, &n, NULL), JVDB_EINVAL, "id 1: ");
    assert_int_equal(jvdb_count(db), 17);
    /* Filtered delete and count. */
    jvdb_filter *f;
    assert_ok(jvdb_filter_parse("{\"g\": 0}", &f));
    assert_ok(jvdb_count_filtered(db, f, &n));
    assert_int_equal(n, 5);
    assert_ok(jvdb_delete_filtered(db, f, &n));
    assert_int_equal(n, 5);
    assert_ok(jvdb_count_filtered(db, f, &n));
    assert_int_equal(n, 0);
    jvdb_filter_free(f);
    /* Merge: keys replace, objects merge, null removes; the vector stays. */
    assert_ok(jvdb_update_metadata(db, "v5", "{\"g\": null, \"m\": {\"a\": 1}, \"x\": \"y\"}", &lsn));
    assert_ok(jvdb_update_metadata(db, "v5", "{\"m\": {\"b\": 2}}", NULL));
    char *got;
    float back[4];
    assert_ok(jvdb_get(db, "v5", back, &got));
    assert_string_equal(got, "{\"tags\":[\"t1\"],\"m\":{\"a\":1,\"b\":2},\"x\":\"y\"}");
    assert_memory_equal(back, v, sizeof v);
    jvdb_free(got);
    assert_err(jvdb_update_metadata(db, "nope", "{}", NULL), JVDB_ENOTFOUND, "not found");
    assert_err(jvdb_update_metadata(db, "v5", "[1]", NULL), JVDB_EINVAL, "must be a JSON object");
    assert_ok(jvdb_filter_parse("{\"tags\": \"t1\"}", &f));
    assert_ok(jvdb_update_metadata_filtered(db, f, "{\"odd\": true}", &n));
    assert_int_equal(n, 8); /* v5 v7 v9 v11 v13 v15 v17 v19 (v1 v3 deleted) */
    jvdb_filter_free(f);
    assert_ok(jvdb_filter_parse("{\"odd\": true}", &f));
    assert_ok(jvdb_count_filtered(db, f, &n));
    assert_int_equal(n, 8);
    jvdb_filter_free(f);
    /* Scroll: id order, cursor = last id, the end says so. */
    char **page;
    size_t np;
    int more;
    assert_ok(jvdb_scroll_ids(db, NULL, NULL, 5, &page, &np, &more));
    assert_int_equal(np, 5);
    assert_true(more);
    assert_string_equal(page[0], "v10");
    assert_string_equal(page[4], "v15"); /* v12 went with g == 0 */
    jvdb_scroll_ids_free(page, np);
    assert_ok(jvdb_scroll_ids(db, NULL, "v6", 5, &page, &np, &more));
    assert_int_equal(np, 2);
    assert_false(more);
    assert_string_equal(page[0], "v7");
    assert_string_equal(page[1], "v9"); /* v8 went with g == 0 */
    jvdb_scroll_ids_free(page, np);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

struct merger {
    jvdb_db *db;
    const char *key;
    int last;
};

static void *merge_thread(void *arg)
{
    struct merger *m = arg;
    char patch[64];
    for (int i = 1; i <= 200; i++) {
        snprintf(patch, sizeof patch, "{\"%s\": %d}", m->key, i);
        if (jvdb_update_metadata(m->db, "x", patch, NULL) != JVDB_OK) return NULL;
        m->last = i;
    }
    return NULL;
}

/* Two writers merging different keys into one vector: neither loses the other's update. */
static void test_merge_concurrent(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "m", 4, JVDB_METRIC_L2, 0);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    float v[4] = { 1, 2, 3, 4 };
    assert_ok(jvdb_put(db, "x", v, 4, "{}", NULL));
    struct merger a = { db, "a", 0 }, b = { db, "b", 0 };
    pthread_t ta, tb;
    pthread_create(&ta, NULL, merge_thread, &a);
    pthread_create(&tb, NULL, merge_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.last, 200);
    assert_int_equal(b.last, 200);
    char *got;
    assert_ok(jvdb_get(db, "x", NULL, &got));
    assert_true(strstr(got, "\"a\":200") && strstr(got, "\"b\":200"));
    jvdb_free(got);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_errors),
        cmocka_unit_test(test_bulk_library),
        cmocka_unit_test(test_merge_concurrent),
        cmocka_unit_test(test_filter_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

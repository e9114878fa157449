/* test_payload.c — payload indexes (issue 12): a model check of filtered search with indexes against
 * filter_match over the stored metadata (random metadata of every shape filter.c knows, random
 * filters), through writes, metadata merges, deletes, declarations made and dropped on a live
 * database, compaction and reopening; searches racing writers; declarations persisted and refused
 * when bad. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* filter.c's matcher: the reference every indexed answer must equal. */
int filter_match(const jvdb_filter *f, const char *meta, size_t meta_len);
/* search.c's planner thresholds (search/payload.h): 0 and 0.0 force the graph. */
extern uint32_t search_payload_scan_min;
extern double search_payload_scan_share;

#define DIM 8
#define N   2500

static char metas[N][512];
static int live[N];
static float vecs[N * DIM];
static unsigned rng = 12345;

/* A small deterministic random generator (the test must fail the same way twice). */
static unsigned rnd(unsigned n)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 8) % n;
}

static const char *kw[] = { "a", "b", "c", "d", "e", "f", "g", "h" };

/* A value for a numeric-ish field: numbers, numeric strings, other strings, lists, null, booleans. */
static void num_value(char *b, size_t cap)
{
    switch (rnd(9)) {
    case 0: snprintf(b, cap, "\"%u\"", rnd(100)); break;
    case 1: snprintf(b, cap, "\"%u.5\"", rnd(100)); break;
    case 2: snprintf(b, cap, "\"x%u\"", rnd(5)); break;
    case 3: snprintf(b, cap, "[%u, \"%u\", [%u]]", rnd(100), rnd(100), rnd(100)); break;
    case 4: snprintf(b, cap, "null"); break;
    case 5: snprintf(b, cap, "true"); break;
    case 6: snprintf(b, cap, "%u.25", rnd(100)); break;
    default: snprintf(b, cap, "%u", rnd(100)); break;
    }
}

/* A value for a keyword-ish field: strings, lists of them (with strays), numbers, objects. */
static void kw_value(char *b, size_t cap)
{
    switch (rnd(8)) {
    case 0: snprintf(b, cap, "[\"%s\", \"%s\", 3, null, [\"%s\"]]", kw[rnd(8)], kw[rnd(8)], kw[rnd(8)]); break;
    case 1: snprintf(b, cap, "%u", rnd(3)); break;
    case 2: snprintf(b, cap, "{\"%s\": 1}", kw[rnd(8)]); break;
    case 3: snprintf(b, cap, "null"); break;
    case 4: snprintf(b, cap, "[]"); break;
    default: snprintf(b, cap, "\"%s\"", kw[rnd(8)]); break;
    }
}

/* Random metadata for vector i (sometimes none, sometimes empty). */
static void make_meta(int i, char *out, size_t cap)
{
    (void)i;
    unsigned shape = rnd(20);
    if (shape == 0) {
        out[0] = '\0';
        return;
    }
    if (shape == 1) {
        snprintf(out, cap, "{}");
        return;
    }
    char cat[96], tags[96], price[96], mlang[96], mn[96], parts[400] = "";
    kw_value(cat, sizeof cat);
    kw_value(tags, sizeof tags);
    num_value(price, sizeof price);
    kw_value(mlang, sizeof mlang);
    num_value(mn, sizeof mn);
    size_t o = 0;
    if (rnd(6)) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"cat\":%s", cat);
    if (rnd(4)) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"tags\":%s", tags);
    if (rnd(5)) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"price\":%s", price);
    if (rnd(3) == 0) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"m\":[{\"lang\":%s},{\"n\":%s}]", mlang, mn);
    else if (rnd(2)) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"m\":{\"lang\":%s,\"n\":%s}", mlang, mn);
    if (rnd(100) == 0) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"rare\":\"r\"");
    if (rnd(2)) o += (size_t)snprintf(parts + o, sizeof parts - o, ",\"other\":\"%s\"", kw[rnd(8)]);
    snprintf(out, cap, "{%s}", o ? parts + 1 : "");
}

static const char *fields[] = { "cat", "tags", "price", "m.lang", "m.n", "rare", "other", "m" };

/* A random operand of any scalar type. */
static void operand(char *b, size_t cap)
{
    switch (rnd(7)) {
    case 0: snprintf(b, cap, "%u", rnd(100)); break;
    case 1: snprintf(b, cap, "\"%u\"", rnd(100)); break;
    case 2: snprintf(b, cap, "null"); break;
    case 3: snprintf(b, cap, "true"); break;
    case 4: snprintf(b, cap, "%u.5", rnd(100)); break;
    default: snprintf(b, cap, "\"%s\"", rnd(10) ? kw[rnd(8)] : "r"); break;
    }
}

/* snprintf through a va_list: generated filters nest, so their lengths are not known when compiling
 * (a nesting too long for the buffer is cut, and the filter then fails to parse and is skipped). */
static void fmt_into(char *b, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_into(char *b, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, cap, fmt, ap);
    va_end(ap);
}

/* A random condition object {"field": ...} (or a logical one, up to `depth` levels). */
static void make_filter(char *b, size_t cap, int depth)
{
    unsigned k = depth > 0 ? rnd(10) : 5 + rnd(5);
    if (k < 2) {
        char x[700], y[700];
        make_filter(x, sizeof x, depth - 1);
        make_filter(y, sizeof y, depth - 1);
        fmt_into(b, cap, "{\"%s\": [%s, %s]}", k ? "$or" : "$and", x, y);
        return;
    }
    if (k == 2) {
        char x[700];
        make_filter(x, sizeof x, depth - 1);
        fmt_into(b, cap, "{\"$not\": %s}", x);
        return;
    }
    if (k == 3) {
        /* two keys: ANDed */
        char x[700], y[700];
        make_filter(x, sizeof x, depth - 1);
        make_filter(y, sizeof y, depth - 1);
        x[strlen(x) - 1] = '\0';
        fmt_into(b, cap, "%s, %s", x, y + 1);
        return;
    }
    const char *f = fields[rnd(8)];
    char v[64], w[64];
    operand(v, sizeof v);
    operand(w, sizeof w);
    switch (rnd(12)) {
    case 0: fmt_into(b, cap, "{\"%s\": %s}", f, v); break;
    case 1: fmt_into(b, cap, "{\"%s\": {\"$in\": [\"%s\", \"%s\"]}}", f, kw[rnd(8)], kw[rnd(8)]); break;
    case 2: fmt_into(b, cap, "{\"%s\": {\"$in\": [%s, %s]}}", f, v, w); break;
    case 3: fmt_into(b, cap, "{\"%s\": {\"$ne\": %s}}", f, v); break;
    case 4: fmt_into(b, cap, "{\"%s\": {\"$nin\": [%s, %s]}}", f, v, w); break;
    case 5: fmt_into(b, cap, "{\"%s\": {\"$gt\": %u}}", f, rnd(100)); break;
    case 6: fmt_into(b, cap, "{\"%s\": {\"$gte\": %u.5, \"$lt\": %u}}", f, rnd(50), 40 + rnd(60)); break;
    case 7: fmt_into(b, cap, "{\"%s\": {\"$lte\": %u}}", f, rnd(100)); break;
    case 8: fmt_into(b, cap, "{\"%s\": {\"$exists\": %s}}", f, rnd(2) ? "true" : "false"); break;
    case 9: fmt_into(b, cap, "{\"%s\": {\"$contains\": %s}}", f, v); break;
    case 10: fmt_into(b, cap, "{\"%s\": {\"$eq\": %s}}", f, v); break;
    default: fmt_into(b, cap, "{\"%s\": \"%s\"}", f, kw[rnd(8)]); break;
    }
}

/* Writes vector i with fresh metadata. */
static void put_one(jvdb_db *db, int i)
{
    char id[16];
    snprintf(id, sizeof id, "v%d", i);
    make_meta(i, metas[i], sizeof metas[i]);
    assert_ok(jvdb_put(db, id, vecs + i * DIM, DIM, metas[i][0] ? metas[i] : NULL, NULL));
    live[i] = 1;
}

/* Every answer of filter `js` equals filter_match over the model: an exact search for all of them,
 * and a graph search of k whose results all belong and are as many as they can be. */
static void check_filter(jvdb_db *db, const char *js)
{
    jvdb_filter *f;
    /* Two keys of one object may come out the same ("$and" twice): JSON refuses that, fine. */
    int prc = jvdb_filter_parse(js, &f);
    if (prc != JVDB_OK && (strstr(jvdb_errmsg(), "duplicate object key") || strlen(js) >= 2047)) return;
    if (prc != JVDB_OK) fail_msg("generated filter %s does not parse: %s", js, jvdb_errmsg());
    static char want[N];
    int nwant = 0;
    for (int i = 0; i < N; i++) {
        want[i] = live[i] && filter_match(f, metas[i], strlen(metas[i]));
        nwant += want[i];
    }
    float q[DIM];
    tu_vector(q, DIM, rnd(100000), 5);
    /* 0: the graph with the index as predicate (forced), 1: exact, 2: the planner's choice. */
    for (int mode = 0; mode < 3; mode++) {
        int exact = mode == 1;
        uint32_t keep_min = search_payload_scan_min;
        double keep_share = search_payload_scan_share;
        if (mode == 0) {
            search_payload_scan_min = 0;
            search_payload_scan_share = 0.0;
        }
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.filter = f;
        p.exact = exact;
        p.k = exact ? N : 10;
        jvdb_result *r;
        size_t n;
        assert_ok(jvdb_search(db, q, DIM, &p, &r, &n));
        search_payload_scan_min = keep_min;
        search_payload_scan_share = keep_share;
        size_t expect = exact ? (size_t)nwant : (nwant < 10 ? (size_t)nwant : 10);
        if (n != expect) fail_msg("filter %s (mode %d): %zu results, model %zu", js, mode, n, expect);
        for (size_t j = 0; j < n; j++) {
            int i = atoi(r[j].id + 1);
            if (!want[i]) fail_msg("filter %s (mode %d): v%d (%s) does not satisfy it", js, mode, i, metas[i]);
        }
        jvdb_results_free(r, n);
    }
    jvdb_filter_free(f);
}

/* Checks `rounds` random filters plus fixed selective and broad ones on every indexed field. */
static void check_many(jvdb_db *db, int rounds)
{
    static const char *fixed[] = {
        "{\"rare\": \"r\"}",
        "{\"cat\": \"a\"}",
        "{\"tags\": {\"$in\": [\"b\", \"c\"]}}",
        "{\"price\": {\"$gte\": 10, \"$lt\": 12}}",
        "{\"price\": {\"$gt\": 5}}",
        "{\"price\": 7}",
        "{\"price\": \"7\"}",
        "{\"m.lang\": \"d\"}",
        "{\"m.n\": {\"$lte\": 3}}",
        "{\"cat\": {\"$ne\": \"a\"}}",
        "{\"$not\": {\"rare\": {\"$exists\": true}}}",
        "{\"tags\": {\"$nin\": [\"a\"]}}",
        "{\"$or\": [{\"rare\": \"r\"}, {\"price\": {\"$lt\": 1}}]}",
        "{\"cat\": \"a\", \"other\": \"b\"}",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_filter(db, fixed[i]);
    for (int r = 0; r < rounds; r++) {
        char js[2048];
        make_filter(js, sizeof js, 3);
        check_filter(db, js);
    }
}

static void declare_all(jvdb_db *db)
{
    assert_ok(jvdb_db_payload_index_create(db, "cat", JVDB_PAYLOAD_KEYWORD));
    assert_ok(jvdb_db_payload_index_create(db, "tags", JVDB_PAYLOAD_KEYWORD));
    assert_ok(jvdb_db_payload_index_create(db, "price", JVDB_PAYLOAD_NUMERIC));
    assert_ok(jvdb_db_payload_index_create(db, "m.lang", JVDB_PAYLOAD_KEYWORD));
    assert_ok(jvdb_db_payload_index_create(db, "m.n", JVDB_PAYLOAD_NUMERIC));
    assert_ok(jvdb_db_payload_index_create(db, "rare", JVDB_PAYLOAD_KEYWORD));
}

static void test_payload_model(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "p", DIM, JVDB_METRIC_L2, 64 * 1024);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    for (int i = 0; i < N; i++) tu_vector(vecs + i * DIM, DIM, (uint64_t)i, 1);
    for (int i = 0; i < N / 2; i++) put_one(db, i);
    /* Indexes declared on a database whose search index is already attached and holds data. */
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    jvdb_result *r;
    size_t n;
    assert_ok(jvdb_search(db, vecs, DIM, &p, &r, &n));
    jvdb_results_free(r, n);
    declare_all(db);
    check_many(db, 40);
    for (int i = N / 2; i < N; i++) put_one(db, i);
    check_many(db, 40);
    /* Metadata rewritten, merged and removed, vectors deleted: no wait between writes and searches. */
    for (int round = 0; round < 3; round++) {
        for (int t = 0; t < 300; t++) {
            int i = (int)rnd(N);
            char id[16];
            snprintf(id, sizeof id, "v%d", i);
            unsigned what = rnd(4);
            if (what == 0 && live[i]) {
                assert_ok(jvdb_delete(db, id, NULL));
                live[i] = 0;
            } else if (what == 1 && live[i] && metas[i][0] == '{') {
                char patch[64];
                snprintf(patch, sizeof patch, "{\"cat\": \"%s\", \"price\": %u}", kw[rnd(8)], rnd(100));
                assert_ok(jvdb_update_metadata(db, id, patch, NULL));
                char *got = NULL;
                float v[DIM];
                assert_ok(jvdb_get(db, id, v, &got));
                snprintf(metas[i], sizeof metas[i], "%s", got ? got : "");
                jvdb_free(got);
            } else {
                put_one(db, i);
            }
        }
        check_many(db, 40);
    }
    /* Dropping an index: still the same answers (now from metadata). */
    assert_ok(jvdb_db_payload_index_drop(db, "price"));
    check_many(db, 20);
    assert_ok(jvdb_db_payload_index_create(db, "price", JVDB_PAYLOAD_NUMERIC));
    /* Re-typing a field: its cells start over. */
    assert_ok(jvdb_db_payload_index_create(db, "cat", JVDB_PAYLOAD_NUMERIC));
    check_many(db, 20);
    assert_ok(jvdb_db_payload_index_create(db, "cat", JVDB_PAYLOAD_KEYWORD));
    /* Compaction moves records; the indexes stay right. */
    jvdb_compact_options co = { .full = 1, .force = 1 };
    jvdb_compact_stats cs;
    assert_ok(jvdb_compact(db, &co, &cs));
    assert_true(cs.records_copied > 0);
    check_many(db, 30);
    /* Reopened: the declarations are persisted, the contents rebuilt from the records. */
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "p", &db));
    jvdb_payload_index *ls;
    size_t nls;
    assert_ok(jvdb_db_payload_index_list(db, &ls, &nls));
    assert_int_equal(nls, 6);
    assert_string_equal(ls[0].field, "cat");
    assert_int_equal(ls[0].type, JVDB_PAYLOAD_KEYWORD);
    assert_string_equal(ls[3].field, "price");
    assert_int_equal(ls[3].type, JVDB_PAYLOAD_NUMERIC);
    jvdb_free(ls);
    check_many(db, 40);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

struct race {
    jvdb_db *db;
    atomic_int stop;
};

/* Rewrites metadata of the first 200 vectors without pause (cat flips between "a" and "b"). */
static void *race_writer(void *arg)
{
    struct race *ra = arg;
    for (unsigned t = 0; !atomic_load(&ra->stop); t++) {
        char id[16], meta[64];
        snprintf(id, sizeof id, "v%u", t % 200);
        snprintf(meta, sizeof meta, "{\"cat\": \"%s\", \"price\": %u}", t % 2 ? "a" : "b", t % 100);
        if (jvdb_put(ra->db, id, vecs + (t % 200) * DIM, DIM, meta, NULL) != JVDB_OK) break;
    }
    return NULL;
}

/* Searches racing a writer: every answer satisfies the filter on the metadata it came with. */
static void test_payload_race(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "r", DIM, JVDB_METRIC_L2, 0);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    for (int i = 0; i < 1000; i++) {
        tu_vector(vecs + i * DIM, DIM, (uint64_t)i, 2);
        char id[16], meta[64];
        snprintf(id, sizeof id, "v%d", i);
        snprintf(meta, sizeof meta, "{\"cat\": \"%s\", \"price\": %d}", i < 200 ? "a" : "c", i % 100);
        assert_ok(jvdb_put(db, id, vecs + i * DIM, DIM, meta, NULL));
    }
    assert_ok(jvdb_db_payload_index_create(db, "cat", JVDB_PAYLOAD_KEYWORD));
    assert_ok(jvdb_db_payload_index_create(db, "price", JVDB_PAYLOAD_NUMERIC));
    struct race ra = { db, 0 };
    atomic_init(&ra.stop, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, race_writer, &ra), 0);
    const char *fs[] = { "{\"cat\": \"a\"}", "{\"cat\": \"b\", \"price\": {\"$lt\": 50}}",
                         "{\"cat\": {\"$ne\": \"c\"}}" };
    for (int t = 0; t < 300; t++) {
        jvdb_filter *f;
        assert_ok(jvdb_filter_parse(fs[t % 3], &f));
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.filter = f;
        p.k = 20;
        p.exact = t % 2;
        p.include_metadata = 1;
        jvdb_result *r;
        size_t n;
        assert_ok(jvdb_search(db, vecs, DIM, &p, &r, &n));
        for (size_t j = 0; j < n; j++)
            if (!r[j].meta_json || !filter_match(f, r[j].meta_json, strlen(r[j].meta_json)))
                fail_msg("filter %s: %s came with %s", fs[t % 3], r[j].id, r[j].meta_json ? r[j].meta_json : "(none)");
        /* The 800 "c" vectors never change: $ne "c" finds only the racing 200, a full page always. */
        if (t % 3 == 2 && n != 20) fail_msg("filter %s: %zu results", fs[2], n);
        jvdb_results_free(r, n);
        jvdb_filter_free(f);
    }
    atomic_store(&ra.stop, 1);
    pthread_join(th, NULL);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Bad declarations are refused with a reason and change nothing. */
static void test_payload_errors(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "e", DIM, JVDB_METRIC_L2, 0);
    jvdb_payload_type t;
    assert_err(jvdb_payload_type_parse("text", &t), JVDB_EINVAL, "use keyword or numeric");
    assert_ok(jvdb_payload_type_parse("NUMERIC", &t));
    assert_int_equal(t, JVDB_PAYLOAD_NUMERIC);
    assert_err(jvdb_db_payload_index_create(db, "", JVDB_PAYLOAD_KEYWORD), JVDB_EINVAL, "field name is empty");
    assert_err(jvdb_db_payload_index_create(db, "a..b", JVDB_PAYLOAD_KEYWORD), JVDB_EINVAL, "has an empty part");
    assert_err(jvdb_db_payload_index_create(db, "a.", JVDB_PAYLOAD_KEYWORD), JVDB_EINVAL, "has an empty part");
    assert_err(jvdb_db_payload_index_create(db, "$or", JVDB_PAYLOAD_KEYWORD), JVDB_EINVAL, "starts with '$'");
    assert_err(jvdb_db_payload_index_create(db, "a", (jvdb_payload_type)7), JVDB_EINVAL, "unknown");
    assert_err(jvdb_db_payload_index_drop(db, "a"), JVDB_ENOTFOUND, "no payload index on 'a'");
    for (int i = 0; i < JVDB_PAYLOAD_MAX_INDEXES; i++) {
        char f[16];
        snprintf(f, sizeof f, "f%02d", i);
        assert_ok(jvdb_db_payload_index_create(db, f, JVDB_PAYLOAD_KEYWORD));
    }
    assert_ok(jvdb_db_payload_index_create(db, "f00", JVDB_PAYLOAD_KEYWORD)); /* the same again: a no-op */
    assert_err(jvdb_db_payload_index_create(db, "g", JVDB_PAYLOAD_KEYWORD), JVDB_EINVAL, "payload indexes already");
    jvdb_payload_index *ls;
    size_t n;
    assert_ok(jvdb_db_payload_index_list(db, &ls, &n));
    assert_int_equal(n, JVDB_PAYLOAD_MAX_INDEXES);
    jvdb_free(ls);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload_errors),
        cmocka_unit_test(test_payload_model),
        cmocka_unit_test(test_payload_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

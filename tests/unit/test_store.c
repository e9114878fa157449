/* test_store.c — round trips of every public storage call and every input error (issue 2). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/db.h"
#include "test_util.h"

static void test_env_lock(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env, *env2 = NULL;
    assert_ok(jvdb_env_open(dir, &env));
    char pid[64];
    snprintf(pid, sizeof pid, "locked by pid %d", (int)getpid());
    assert_err(jvdb_env_open(dir, &env2), JVDB_ELOCKED, pid);
    assert_null(env2);
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env2));
    jvdb_env_close(env2);
    assert_err(jvdb_env_open("", &env2), JVDB_EINVAL, "empty");
    tu_rmdir(dir);
}

static void test_db_lifecycle(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db_options o;
    jvdb_db_options_init(&o, 4);
    jvdb_db *db = NULL;
    assert_err(jvdb_db_create(env, "../evil", &o, &db), JVDB_EINVAL, "not allowed");
    assert_err(jvdb_db_create(env, "", &o, &db), JVDB_EINVAL, "not allowed");
    assert_err(jvdb_db_create(env, "a b", &o, &db), JVDB_EINVAL, "not allowed");
    char longname[80];
    memset(longname, 'x', 65);
    longname[65] = '\0';
    assert_err(jvdb_db_create(env, longname, &o, &db), JVDB_EINVAL, "not allowed");
    longname[64] = '\0';
    assert_ok(jvdb_db_create(env, longname, &o, &db));
    o.dim = 0;
    assert_err(jvdb_db_create(env, "zero", &o, &db), JVDB_EINVAL, "dimension 0");
    o.dim = JVDB_MAX_DIM + 1;
    assert_err(jvdb_db_create(env, "huge", &o, &db), JVDB_EINVAL, "out of range");
    o.dim = 3;
    o.metric = JVDB_METRIC_COSINE;
    o.sync = JVDB_SYNC_INTERVAL;
    o.sync_interval_ms = 50;
    assert_ok(jvdb_db_create(env, "docs", &o, &db));
    assert_err(jvdb_db_create(env, "docs", &o, &db), JVDB_EEXISTS, "already exists");
    char **names;
    size_t n;
    assert_ok(jvdb_db_list(env, &names, &n));
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "docs");
    jvdb_free_names(names, n);
    assert_err(jvdb_db_open(env, "nope", &db), JVDB_ENOTFOUND, "does not exist");
    assert_err(jvdb_db_drop(env, "nope"), JVDB_ENOTFOUND, "does not exist");
    jvdb_env_close(env);

    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "docs", &db));
    jvdb_db_options got;
    jvdb_db_get_options(db, &got);
    assert_int_equal(got.dim, 3);
    assert_int_equal(got.metric, JVDB_METRIC_COSINE);
    assert_int_equal(got.sync, JVDB_SYNC_INTERVAL);
    assert_int_equal(got.sync_interval_ms, 50);
    assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
    assert_err(jvdb_db_set_sync(db, JVDB_SYNC_INTERVAL, 0), JVDB_EINVAL, "interval");
    assert_ok(jvdb_db_drop(env, "docs"));
    assert_err(jvdb_db_open(env, "docs", &db), JVDB_ENOTFOUND, "does not exist");
    assert_ok(jvdb_db_list(env, &names, &n));
    assert_int_equal(n, 1);
    jvdb_free_names(names, n);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

static void test_parse_helpers(void **state)
{
    (void)state;
    jvdb_metric m;
    jvdb_sync_mode s;
    uint32_t ms = 0;
    assert_ok(jvdb_metric_parse("euclidean", &m));
    assert_int_equal(m, JVDB_METRIC_L2);
    assert_err(jvdb_metric_parse("manhattan", &m), JVDB_EINVAL, "unknown metric 'manhattan'");
    assert_ok(jvdb_sync_parse("interval:250", &s, &ms));
    assert_int_equal(s, JVDB_SYNC_INTERVAL);
    assert_int_equal(ms, 250);
    assert_err(jvdb_sync_parse("interval:abc", &s, &ms), JVDB_EINVAL, "bad sync interval");
    assert_err(jvdb_sync_parse("sometimes", &s, &ms), JVDB_EINVAL, "unknown sync mode");
    assert_string_equal(jvdb_strerror(JVDB_ELOCKED), "data directory locked");
}

struct collect {
    int n;
    int with_meta;
};

static int collect_fn(void *arg, const char *id, size_t id_len, const float *v, const char *meta, size_t meta_len,
                      uint64_t lsn)
{
    (void)id;
    (void)v;
    (void)lsn;
    struct collect *c = arg;
    assert_true(id_len > 0);
    c->n++;
    if (meta_len) {
        assert_non_null(meta);
        c->with_meta++;
    }
    return 0;
}

static void test_vectors_round_trip(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "v", 8, JVDB_METRIC_L2, 0);
    float v[8], out[8];
    tu_vector(v, 8, 1, 0);
    uint64_t lsn = 0, lsn2 = 0;
    assert_ok(jvdb_put(db, "a", v, 8, "{\"tag\":\"x\",\"n\":1}", &lsn));
    assert_int_equal(lsn, 1);
    char *meta = NULL;
    assert_ok(jvdb_get(db, "a", out, &meta));
    assert_memory_equal(v, out, sizeof v);
    assert_string_equal(meta, "{\"tag\":\"x\",\"n\":1}");
    jvdb_free(meta);
    /* overwrite */
    tu_vector(v, 8, 1, 1);
    assert_ok(jvdb_put(db, "a", v, 8, NULL, &lsn2));
    assert_true(lsn2 > lsn);
    assert_ok(jvdb_get(db, "a", out, &meta));
    assert_memory_equal(v, out, sizeof v);
    assert_null(meta);
    assert_int_equal(jvdb_count(db), 1);
    /* batch */
    jvdb_record recs[5];
    float vs[5][8];
    char ids[5][8];
    for (int i = 0; i < 5; i++) {
        tu_vector(vs[i], 8, 10 + (uint64_t)i, 0);
        snprintf(ids[i], sizeof ids[i], "b%d", i);
        recs[i] = (jvdb_record){ ids[i], vs[i], 8, i % 2 ? "{\"odd\":true}" : NULL };
    }
    assert_ok(jvdb_put_batch(db, recs, 5, &lsn));
    assert_int_equal(jvdb_count(db), 6);
    struct collect c = { 0, 0 };
    assert_ok(jvdb_iterate(db, collect_fn, &c));
    assert_int_equal(c.n, 6);
    assert_int_equal(c.with_meta, 2);
    /* delete */
    assert_ok(jvdb_delete(db, "b2", &lsn));
    assert_err(jvdb_get(db, "b2", out, NULL), JVDB_ENOTFOUND, "'b2' not found");
    assert_err(jvdb_delete(db, "b2", NULL), JVDB_ENOTFOUND, "not found");
    assert_int_equal(jvdb_count(db), 5);
    jvdb_stats st;
    assert_ok(jvdb_stats_get(db, &st));
    assert_int_equal(st.live_records, 5);
    assert_int_equal(st.last_lsn, lsn);
    assert_int_equal(st.dead_records, 3); /* first version of a, b2's put, b2's tombstone */
    assert_int_equal(st.tombstones, 1);
    assert_true(st.dead_bytes > 0 && st.dead_ratio > 0 && st.dead_ratio < 1);
    assert_int_equal(st.segments, 1);
    jvdb_env_close(env);

    /* Everything survives a reopen, including the LSN counter. */
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "v", &db));
    assert_int_equal(jvdb_count(db), 5);
    jvdb_stats st2;
    assert_ok(jvdb_stats_get(db, &st2));
    assert_int_equal(st2.last_lsn, st.last_lsn);
    assert_int_equal(st2.dead_bytes, st.dead_bytes);
    assert_ok(jvdb_get(db, "b3", out, &meta));
    assert_memory_equal(vs[3], out, sizeof out);
    assert_string_equal(meta, "{\"odd\":true}");
    jvdb_free(meta);
    assert_ok(jvdb_put(db, "c", v, 8, NULL, &lsn2));
    assert_int_equal(lsn2, st.last_lsn + 1);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Each bad input gets its own clear message and writes nothing. */
static void test_bad_input_changes_nothing(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "e", 4, JVDB_METRIC_L2, 0);
    float v[4] = { 1, 2, 3, 4 };
    assert_ok(jvdb_put(db, "keep", v, 4, NULL, NULL));
    jvdb_stats before, after;
    assert_ok(jvdb_stats_get(db, &before));

    assert_err(jvdb_put(db, "x", v, 3, NULL, NULL), JVDB_EINVAL,
               "vector has 3 values but database 'e' has dimension 4");
    float nan_v[4] = { 1, NAN, 3, 4 };
    assert_err(jvdb_put(db, "x", nan_v, 4, NULL, NULL), JVDB_EINVAL, "value 1 is NaN");
    float inf_v[4] = { 1, 2, INFINITY, 4 };
    assert_err(jvdb_put(db, "x", inf_v, 4, NULL, NULL), JVDB_EINVAL, "value 2 is infinite");
    assert_err(jvdb_put(db, "", v, 4, NULL, NULL), JVDB_EINVAL, "id is empty");
    assert_err(jvdb_put(db, NULL, v, 4, NULL, NULL), JVDB_EINVAL, "id is missing");
    char longid[JVDB_MAX_ID_LEN + 2];
    memset(longid, 'i', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_err(jvdb_put(db, longid, v, 4, NULL, NULL), JVDB_EINVAL, "limit is 1024");
    assert_err(jvdb_put(db, "x", v, 4, "{\"a\":", NULL), JVDB_EINVAL, "metadata is not valid JSON");
    assert_err(jvdb_put(db, "x", v, 4, "[1,2]", NULL), JVDB_EINVAL, "metadata must be a JSON object");
    assert_err(jvdb_put(db, "x", v, 4, "", NULL), JVDB_EINVAL, "metadata is not valid JSON");
    assert_err(jvdb_put(db, "x", NULL, 4, NULL, NULL), JVDB_EINVAL, "vector is missing");
    assert_err(jvdb_delete(db, "ghost", NULL), JVDB_ENOTFOUND, "'ghost' not found");
    assert_err(jvdb_put_batch(db, NULL, 0, NULL), JVDB_EINVAL, "batch is empty");

    /* A batch with one bad record stores none of them, and names the bad one. */
    jvdb_record recs[4] = {
        { "b0", v, 4, NULL }, { "b1", v, 4, NULL }, { "b2", v, 4, "{\"x\":1}" }, { "b3", nan_v, 4, NULL }
    };
    assert_err(jvdb_put_batch(db, recs, 4, NULL), JVDB_EINVAL, "record 3: vector value 1 is NaN");
    recs[3].vector = v;
    recs[2].meta_json = "42";
    assert_err(jvdb_put_batch(db, recs, 4, NULL), JVDB_EINVAL, "record 2: metadata must be a JSON object");

    assert_ok(jvdb_stats_get(db, &after));
    assert_memory_equal(&before, &after, sizeof before);
    assert_int_equal(jvdb_count(db), 1);
    assert_err(jvdb_get(db, "b0", NULL, NULL), JVDB_ENOTFOUND, "not found");

    /* Cosine databases store the vector as given, and refuse the zero vector (no direction). */
    jvdb_db *cos = tu_create(env, "cos", 2, JVDB_METRIC_COSINE, 0);
    float zero[2] = { 0, 0 }, three_four[2] = { 3, 4 }, out[2];
    assert_err(jvdb_put(cos, "z", zero, 2, NULL, NULL), JVDB_EINVAL,
               "a zero vector has no direction, so cosine database 'cos' cannot store it");
    assert_ok(jvdb_put(cos, "n", three_four, 2, NULL, NULL));
    assert_ok(jvdb_get(cos, "n", out, NULL));
    assert_memory_equal(out, three_four, sizeof out);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Batches in one call may overwrite and delete what earlier records of the same batch wrote. */
static void test_segments_seal(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "s", 16, JVDB_METRIC_L2, 4096);
    float v[16];
    char id[32];
    for (int i = 0; i < 300; i++) {
        tu_vector(v, 16, (uint64_t)i, 0);
        snprintf(id, sizeof id, "id-%d", i);
        assert_ok(jvdb_put(db, id, v, 16, "{\"k\":1}", NULL));
    }
    jvdb_stats st;
    assert_ok(jvdb_stats_get(db, &st));
    assert_true(st.segments > 10);
    /* A batch bigger than a whole segment still goes in, whole, in a segment of its own. */
    enum { BIG = 100 };
    jvdb_record recs[BIG];
    static float bv[BIG][16];
    static char bid[BIG][16];
    for (int i = 0; i < BIG; i++) {
        tu_vector(bv[i], 16, 1000 + (uint64_t)i, 0);
        snprintf(bid[i], sizeof bid[i], "big-%d", i);
        recs[i] = (jvdb_record){ bid[i], bv[i], 16, NULL };
    }
    assert_ok(jvdb_put_batch(db, recs, BIG, NULL));
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "s", &db));
    assert_int_equal(jvdb_count(db), 300 + BIG);
    float out[16];
    for (int i = 0; i < 300; i++) {
        tu_vector(v, 16, (uint64_t)i, 0);
        snprintf(id, sizeof id, "id-%d", i);
        assert_ok(jvdb_get(db, id, out, NULL));
        assert_memory_equal(v, out, sizeof v);
    }
    assert_ok(jvdb_get(db, "big-99", out, NULL));
    assert_memory_equal(bv[99], out, sizeof out);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Concurrent writers share fdatasyncs and every acknowledged write survives. */
struct writer_arg {
    jvdb_db *db;
    int t;
};

static void *writer_main(void *p)
{
    struct writer_arg *a = p;
    float v[8];
    char id[32];
    for (int i = 0; i < 200; i++) {
        tu_vector(v, 8, (uint64_t)(a->t * 1000 + i), 0);
        snprintf(id, sizeof id, "t%d-%d", a->t, i);
        if (jvdb_put(a->db, id, v, 8, NULL, NULL) != JVDB_OK) return (void *)1;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "g", 8, JVDB_METRIC_L2, 8192);
    pthread_t th[4];
    struct writer_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (struct writer_arg){ db, t };
        pthread_create(&th[t], NULL, writer_main, &args[t]);
    }
    for (int t = 0; t < 4; t++) {
        void *r;
        pthread_join(th[t], &r);
        assert_null(r);
    }
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "g", &db));
    assert_int_equal(jvdb_count(db), 800);
    float v[8], out[8];
    tu_vector(v, 8, 3 * 1000 + 199, 0);
    assert_ok(jvdb_get(db, "t3-199", out, NULL));
    assert_memory_equal(v, out, sizeof v);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

struct drop_job {
    jvdb_env *env;
    int rc;
    atomic_int done;
};

static void *drop_main(void *arg)
{
    struct drop_job *j = arg;
    j->rc = jvdb_db_drop(j->env, "held");
    atomic_store(&j->done, 1);
    return NULL;
}

/* The contract per-request handles rely on: a drop waits for env_db_acquire holders, acquire fails
 * while the drop is pending, and other databases open and are created meanwhile (the drop does not
 * sit on the environment's mutex). */
static void test_drop_waits_for_holders(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    tu_create(env, "held", 4, JVDB_METRIC_L2, 0);
    tu_create(env, "other", 4, JVDB_METRIC_L2, 0);
    jvdb_db *h, *o;
    assert_ok(env_db_acquire(env, "held", &h));
    struct drop_job j = { env, 1, 0 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drop_main, &j), 0);
    usleep(150 * 1000);
    assert_int_equal(atomic_load(&j.done), 0);
    assert_err(env_db_acquire(env, "held", &o), JVDB_ENOTFOUND, "being dropped");
    assert_ok(jvdb_db_open(env, "other", &o));
    tu_create(env, "third", 4, JVDB_METRIC_L2, 0);
    env_db_release(env, h);
    pthread_join(t, NULL);
    assert_ok(j.rc);
    assert_err(jvdb_db_open(env, "held", &o), JVDB_ENOTFOUND, "does not exist");
    char p[1024];
    snprintf(p, sizeof p, "%s/databases/held", dir);
    assert_int_equal(tu_file_size(p), -1);
    jvdb_env_close(env);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_lock),
        cmocka_unit_test(test_db_lifecycle),
        cmocka_unit_test(test_parse_helpers),
        cmocka_unit_test(test_vectors_round_trip),
        cmocka_unit_test(test_bad_input_changes_nothing),
        cmocka_unit_test(test_segments_seal),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_drop_waits_for_holders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

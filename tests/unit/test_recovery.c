/* test_recovery.c — recovery at open: torn tails, half batches, corruption, orphans (issue 2). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

static char *seg_file(const char *dir, const char *db, int no)
{
    char *p = malloc(1024);
    snprintf(p, 1024, "%s/databases/%s/%010d.seg", dir, db, no);
    return p;
}

static void append_bytes(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void flip_byte(const char *path, long long off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void fill(jvdb_db *db, int from, int to, uint32_t dim)
{
    float v[64];
    char id[32];
    for (int i = from; i < to; i++) {
        tu_vector(v, dim, (uint64_t)i, 0);
        snprintf(id, sizeof id, "k%d", i);
        assert_ok(jvdb_put(db, id, v, dim, "{\"m\":true}", NULL));
    }
}

static void check(jvdb_db *db, int from, int to, uint32_t dim)
{
    float v[64], out[64];
    char id[32];
    for (int i = from; i < to; i++) {
        tu_vector(v, dim, (uint64_t)i, 0);
        snprintf(id, sizeof id, "k%d", i);
        assert_ok(jvdb_get(db, id, out, NULL));
        assert_memory_equal(v, out, dim * sizeof(float));
    }
}

static void test_torn_tail_truncated(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "t", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 50, 8);
    jvdb_env_close(env);
    char *seg = seg_file(dir, "t", 1);
    long long good = tu_file_size(seg);
    char junk[100];
    memset(junk, 0xAB, sizeof junk);
    append_bytes(seg, junk, sizeof junk);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "t", &db));
    assert_int_equal(jvdb_count(db), 50);
    check(db, 0, 50, 8);
    assert_int_equal(tu_file_size(seg), good);
    /* The database goes on accepting writes after the truncation. */
    fill(db, 50, 60, 8);
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "t", &db));
    check(db, 0, 60, 8);
    jvdb_env_close(env);
    free(seg);
    tu_rmdir(dir);
}

/* A batch cut anywhere disappears whole; earlier batches stay. */
static void test_half_batch_dropped(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "b", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 10, 8);
    char *seg = seg_file(dir, "b", 1);
    long long before_batch = tu_file_size(seg);
    jvdb_record recs[6];
    float vs[6][8];
    char ids[6][16];
    for (int i = 0; i < 6; i++) {
        tu_vector(vs[i], 8, 100 + (uint64_t)i, 0);
        snprintf(ids[i], sizeof ids[i], "batch%d", i);
        recs[i] = (jvdb_record){ids[i], vs[i], 8, NULL};
    }
    assert_ok(jvdb_put_batch(db, recs, 6, NULL));
    jvdb_env_close(env);
    long long full = tu_file_size(seg);
    /* Cut at every record boundary inside the batch and in the middle of records. */
    for (long long cut = before_batch + 64; cut < full; cut += 96) {
        assert_int_equal(truncate(seg, cut), 0);
        assert_ok(jvdb_env_open(dir, &env));
        assert_ok(jvdb_db_open(env, "b", &db));
        assert_int_equal(jvdb_count(db), 10);
        assert_err(jvdb_get(db, "batch0", NULL, NULL), JVDB_ENOTFOUND, "not found");
        assert_int_equal(tu_file_size(seg), before_batch);
        /* Put the batch back for the next cut. */
        assert_ok(jvdb_put_batch(db, recs, 6, NULL));
        assert_int_equal(jvdb_count(db), 16);
        jvdb_env_close(env);
    }
    free(seg);
    tu_rmdir(dir);
}

static void test_sealed_corruption_reported(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "c", 16, JVDB_METRIC_L2, 4096);
    fill(db, 0, 100, 16);
    jvdb_env_close(env);
    char *seg = seg_file(dir, "c", 2);
    /* Offset 64 + 64 + 5: inside the vector of the first record of a sealed segment. */
    flip_byte(seg, 64 + 64 + 5);
    jvdb_env *env2;
    assert_ok(jvdb_env_open(dir, &env2));
    char want[1200];
    snprintf(want, sizeof want, "corrupt record in %s at offset 64: checksum mismatch", seg);
    assert_err(jvdb_db_open(env2, "c", &db), JVDB_ECORRUPT, want);
    /* A damaged segment header is reported too. */
    flip_byte(seg, 64 + 64 + 5);
    flip_byte(seg, 20);
    assert_err(jvdb_db_open(env2, "c", &db), JVDB_ECORRUPT, "at offset 0");
    flip_byte(seg, 20);
    assert_ok(jvdb_db_open(env2, "c", &db));
    check(db, 0, 100, 16);
    jvdb_env_close(env2);
    free(seg);
    tu_rmdir(dir);
}

static void test_orphans_and_leftovers_removed(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "o", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 5, 8);
    jvdb_env_close(env);
    char p[1024];
    const char *orphans[] = {"0000000099.seg", "0000000099.seg.tmp", "MANIFEST.tmp"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/databases/o/%s", dir, orphans[i]);
        append_bytes(p, "x", 1);
    }
    snprintf(p, sizeof p, "%s/databases/.tmp-half-123", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/databases/.drop-gone-1-0", dir);
    mkdir(p, 0755);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "o", &db));
    check(db, 0, 5, 8);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/databases/o/%s", dir, orphans[i]);
        assert_int_equal(tu_file_size(p), -1);
    }
    snprintf(p, sizeof p, "%s/databases/.tmp-half-123", dir);
    assert_int_equal(tu_file_size(p), -1);
    jvdb_env_close(env);

    /* A segment named by the MANIFEST but missing is an error, not silent data loss. */
    snprintf(p, sizeof p, "%s/databases/o/0000000001.seg", dir);
    assert_int_equal(unlink(p), 0);
    assert_ok(jvdb_env_open(dir, &env));
    assert_err(jvdb_db_open(env, "o", &db), JVDB_ECORRUPT, "missing");
    jvdb_env_close(env);
    tu_rmdir(dir);
}

static void test_damaged_manifest(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    tu_create(env, "m", 8, JVDB_METRIC_L2, 0);
    jvdb_env_close(env);
    char p[1024];
    snprintf(p, sizeof p, "%s/databases/m/MANIFEST", dir);
    flip_byte(p, 10);
    assert_ok(jvdb_env_open(dir, &env));
    assert_err(jvdb_db_open(env, "m", &db), JVDB_ECORRUPT, "checksum mismatch");
    jvdb_env_close(env);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torn_tail_truncated),
        cmocka_unit_test(test_half_batch_dropped),
        cmocka_unit_test(test_sealed_corruption_reported),
        cmocka_unit_test(test_orphans_and_leftovers_removed),
        cmocka_unit_test(test_damaged_manifest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_recovery.c — recovery at open: torn tails, half batches, corruption, orphans (issue 2);
 * damage in the active segment, read-only opens, repair, missing MANIFEST (issue 9). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
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
    /* The cut bytes are kept aside, not destroyed. */
    char torn[1200];
    snprintf(torn, sizeof torn, "%s.torn-%lld", seg, good);
    assert_int_equal(tu_file_size(torn), (long long)sizeof junk);
    /* The database goes on accepting writes after the truncation. */
    fill(db, 50, 60, 8);
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "t", &db));
    check(db, 0, 60, 8);
    jvdb_env_close(env);
    /* The set-aside file is the operator's: later opens keep it. */
    assert_int_equal(tu_file_size(torn), (long long)sizeof junk);
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
        recs[i] = (jvdb_record){ ids[i], vs[i], 8, NULL };
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
    const char *orphans[] = { "0000000099.seg", "0000000099.seg.tmp", "MANIFEST.tmp" };
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

/* ---------------------------------------------------------------- issue 9 */

/* A digest of every file under dir (names, sizes, contents), to prove that nothing changed. */
static uint64_t digest_acc;
static int digest_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    uint64_t h = 1469598103934665603ull;
    for (const char *p = path; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ (uint64_t)st->st_size) * 1099511628211ull;
    if (type == FTW_F) {
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        int c;
        while ((c = getc(f)) != EOF) h = (h ^ (unsigned char)c) * 1099511628211ull;
        fclose(f);
    }
    digest_acc += h * 0x9e3779b97f4a7c15ull; /* order-independent */
    return 0;
}

static uint64_t dir_digest(const char *dir)
{
    digest_acc = 0;
    assert_int_equal(nftw(dir, digest_one, 16, FTW_PHYS), 0);
    return digest_acc;
}

/* Offset of record number k (from 0) of a segment file, walking the record lengths. */
static long long record_offset(const char *seg, int k)
{
    int fd = open(seg, O_RDONLY);
    assert_true(fd >= 0);
    long long off = 64;
    for (int i = 0; i < k; i++) {
        uint32_t len;
        assert_int_equal(pread(fd, &len, 4, off + 24), 4);
        off += len;
    }
    close(fd);
    return off;
}

/* One flipped byte in the middle of the active segment: the open refuses naming file and offset,
 * changes nothing on disk (read-write and read-only alike), and no acknowledged write is cut. */
static void test_active_damage_refused(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "a", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 200, 8);
    jvdb_env_close(env);
    char *seg = seg_file(dir, "a", 1);
    long long bad = record_offset(seg, 100);
    flip_byte(seg, bad + 64 + 3);
    uint64_t before = dir_digest(dir);
    char want[1200];
    snprintf(want, sizeof want, "corrupt record in %s at offset %lld: checksum mismatch", seg, bad);
    assert_ok(jvdb_env_open(dir, &env));
    assert_err(jvdb_db_open(env, "a", &db), JVDB_ECORRUPT, want);
    assert_err(jvdb_db_open(env, "a", &db), JVDB_ECORRUPT, "a valid record follows");
    jvdb_env_close(env);
    assert_ok(jvdb_env_open_readonly(dir, &env));
    assert_err(jvdb_db_open(env, "a", &db), JVDB_ECORRUPT, want);
    jvdb_env_close(env);
    /* LOCK was written by the read-write open before the digest; nothing else may differ. */
    assert_true(dir_digest(dir) == before);
    free(seg);
    tu_rmdir(dir);
}

/* With sync=always only the last batch can be torn: a bad record whose intact header says its batch
 * ended, with bytes after it, is damage even when nothing valid follows.  With sync=never it is a
 * tail like any other. */
static void test_sync_always_only_last_batch_torn(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    for (int mode = 0; mode < 2; mode++) {
        const char *name = mode == 0 ? "always" : "never";
        assert_ok(jvdb_env_open(dir, &env));
        db = tu_create(env, name, 8, JVDB_METRIC_L2, 0);
        if (mode == 1) assert_ok(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0));
        fill(db, 0, 10, 8);
        jvdb_env_close(env);
        char *seg = seg_file(dir, name, 1);
        long long last = record_offset(seg, 9);
        flip_byte(seg, last + 64 + 1);
        char junk[40];
        memset(junk, 0xCD, sizeof junk);
        append_bytes(seg, junk, sizeof junk);
        long long size = tu_file_size(seg);
        assert_ok(jvdb_env_open(dir, &env));
        if (mode == 0) {
            assert_err(jvdb_db_open(env, name, &db), JVDB_ECORRUPT, "only the last batch can be torn");
            assert_int_equal(tu_file_size(seg), size);
        } else {
            assert_ok(jvdb_db_open(env, name, &db));
            assert_int_equal(jvdb_count(db), 9);
            assert_int_equal(tu_file_size(seg), last);
        }
        jvdb_env_close(env);
        free(seg);
    }
    tu_rmdir(dir);
}

/* A read-only open of a database with a torn tail reads up to the last complete batch and changes
 * nothing; writes through it are refused. */
static void test_readonly_changes_nothing(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "r", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 30, 8);
    jvdb_env_close(env);
    char *seg = seg_file(dir, "r", 1);
    char junk[100];
    memset(junk, 0xAB, sizeof junk);
    append_bytes(seg, junk, sizeof junk);
    char p[1024];
    snprintf(p, sizeof p, "%s/databases/r/0000000077.seg", dir); /* an orphan stays too */
    append_bytes(p, "x", 1);
    uint64_t before = dir_digest(dir);
    assert_ok(jvdb_env_open_readonly(dir, &env));
    assert_ok(jvdb_db_open(env, "r", &db));
    assert_int_equal(jvdb_count(db), 30);
    check(db, 0, 30, 8);
    float v[8] = { 0 };
    assert_err(jvdb_put(db, "new", v, 8, NULL, NULL), JVDB_EREADONLY, "read-only");
    assert_err(jvdb_delete(db, "k1", NULL), JVDB_EREADONLY, "read-only");
    assert_err(jvdb_db_set_sync(db, JVDB_SYNC_NEVER, 0), JVDB_EREADONLY, "read-only");
    jvdb_db_options o;
    jvdb_db_options_init(&o, 8);
    assert_err(jvdb_db_create(env, "new", &o, NULL), JVDB_EREADONLY, "read-only");
    assert_err(jvdb_db_drop(env, "r"), JVDB_EREADONLY, "read-only");
    assert_err(jvdb_db_repair(env, "r", NULL, NULL, NULL), JVDB_EREADONLY, "read-only");
    /* Two read-only opens coexist; a writer is refused while one is open. */
    jvdb_env *env2;
    assert_ok(jvdb_env_open_readonly(dir, &env2));
    jvdb_env_close(env2);
    assert_err(jvdb_env_open(dir, &env2), JVDB_ELOCKED, "read-only");
    jvdb_env_close(env);
    assert_true(dir_digest(dir) == before);
    /* A data directory that does not exist is not created. */
    snprintf(p, sizeof p, "%s/nothing-here", dir);
    assert_err(jvdb_env_open_readonly(p, &env), JVDB_ENOTFOUND, "does not exist");
    assert_int_equal(tu_file_size(p), -1);
    free(seg);
    tu_rmdir(dir);
}

struct drops {
    int n;
    char file[1024];
    unsigned long long off, len;
    char kept[1200];
};

static void on_drop(void *arg, const char *file, uint64_t offset, uint64_t length, const char *why, const char *kept)
{
    (void)why;
    struct drops *d = arg;
    if (d->n++ == 0) {
        snprintf(d->file, sizeof d->file, "%s", file);
        d->off = offset;
        d->len = length;
        snprintf(d->kept, sizeof d->kept, "%s", kept);
    }
}

/* Repair keeps every record that verifies (across sealed and active segments), sets the damaged
 * bytes aside, and the database opens again. */
static void test_repair_salvages(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "s", 8, JVDB_METRIC_L2, 8192);
    fill(db, 0, 300, 8);
    assert_ok(jvdb_delete(db, "k7", NULL));
    jvdb_stats st;
    assert_ok(jvdb_stats_get(db, &st));
    assert_true(st.segments >= 3);
    jvdb_env_close(env);
    /* Damage one record of the active segment and one of the first sealed segment. */
    char *act = seg_file(dir, "s", (int)st.segments);
    char *first = seg_file(dir, "s", 1);
    long long bad_act = record_offset(act, 2);
    flip_byte(act, bad_act + 64 + 2);
    flip_byte(first, record_offset(first, 5) + 64 + 2);
    assert_ok(jvdb_env_open(dir, &env));
    assert_err(jvdb_db_open(env, "s", &db), JVDB_ECORRUPT, "corrupt record");
    struct drops d = { 0 };
    jvdb_repair_result r;
    assert_ok(jvdb_db_repair(env, "s", on_drop, &d, &r));
    assert_int_equal(d.n, 2);
    assert_int_equal(r.ranges_dropped, 2);
    assert_true(r.changed);
    assert_string_equal(d.file, first);
    assert_int_equal(tu_file_size(d.kept), (long long)d.len);
    /* 300 puts, one deleted (its tombstone is current), two records lost to the damage. */
    assert_ok(jvdb_db_open(env, "s", &db));
    assert_int_equal(jvdb_count(db), 297);
    assert_int_equal(r.records_kept, 298);
    int missing = 0;
    for (int i = 0; i < 300; i++) {
        char id[32];
        snprintf(id, sizeof id, "k%d", i);
        if (jvdb_get(db, id, NULL, NULL) != JVDB_OK) missing++;
    }
    assert_int_equal(missing, 3);
    fill(db, 300, 310, 8); /* writable again */
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "s", &db));
    assert_int_equal(jvdb_count(db), 307);
    /* A healthy database: repair changes nothing (and an open one is busy). */
    assert_err(jvdb_db_repair(env, "s", NULL, NULL, &r), JVDB_EBUSY, "open");
    jvdb_env_close(env);
    assert_ok(jvdb_env_open(dir, &env));
    uint64_t before = dir_digest(dir);
    assert_ok(jvdb_db_repair(env, "s", NULL, NULL, &r));
    assert_false(r.changed);
    assert_true(dir_digest(dir) == before);
    assert_err(jvdb_db_repair(env, "nope", NULL, NULL, &r), JVDB_ENOTFOUND, "does not exist");
    jvdb_env_close(env);
    free(act);
    free(first);
    tu_rmdir(dir);
}

/* A database directory without MANIFEST is reported as damaged, not as absent, and drop removes it. */
static void test_missing_manifest_is_damaged(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    db = tu_create(env, "lost", 8, JVDB_METRIC_L2, 0);
    fill(db, 0, 5, 8);
    tu_create(env, "fine", 8, JVDB_METRIC_L2, 0);
    jvdb_env_close(env);
    char p[1024];
    snprintf(p, sizeof p, "%s/databases/lost/MANIFEST", dir);
    assert_int_equal(unlink(p), 0);
    assert_ok(jvdb_env_open(dir, &env));
    char **names;
    size_t n;
    assert_ok(jvdb_db_list(env, &names, &n));
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "fine");
    jvdb_free_names(names, n);
    assert_ok(jvdb_db_list_damaged(env, &names, &n));
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "lost");
    jvdb_free_names(names, n);
    assert_err(jvdb_db_open(env, "lost", &db), JVDB_ECORRUPT, "database 'lost' is damaged: its MANIFEST is missing");
    assert_err(jvdb_db_open(env, "lost", &db), JVDB_ECORRUPT, "0000000001.seg");
    jvdb_db_options o;
    jvdb_db_options_init(&o, 8);
    assert_err(jvdb_db_create(env, "lost", &o, &db), JVDB_EEXISTS, "exists but is damaged");
    assert_err(jvdb_db_repair(env, "lost", NULL, NULL, NULL), JVDB_ECORRUPT, "MANIFEST is missing");
    assert_ok(jvdb_db_drop(env, "lost"));
    snprintf(p, sizeof p, "%s/databases/lost", dir);
    assert_int_equal(tu_file_size(p), -1);
    assert_ok(jvdb_db_list_damaged(env, &names, &n));
    assert_int_equal(n, 0);
    jvdb_free_names(names, n);
    assert_err(jvdb_db_open(env, "lost", &db), JVDB_ENOTFOUND, "does not exist");
    assert_ok(jvdb_db_create(env, "lost", &o, &db));
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
        cmocka_unit_test(test_active_damage_refused),
        cmocka_unit_test(test_sync_always_only_last_batch_torn),
        cmocka_unit_test(test_readonly_changes_nothing),
        cmocka_unit_test(test_repair_salvages),
        cmocka_unit_test(test_missing_manifest_is_damaged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

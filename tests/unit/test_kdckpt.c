/* test_kdckpt.c — the keydir checkpoint (KEYDIR, issue 11 "open must not read every record"): an
 * open with a valid checkpoint never reads the sealed records it covers, replays what came after it,
 * and falls back to reading every record when it is missing, damaged, of another version or stale;
 * read-only opens never write it. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_util.h"

#define DIM 8
#define N   400

static char *path_in(const char *dir, const char *name)
{
    char *p = malloc(1024);
    snprintf(p, 1024, "%s/databases/t/%s", dir, name);
    return p;
}

/* Outside the database directory, where an open would remove it as an orphan. */
static char *aside(const char *dir)
{
    char *p = malloc(1024);
    snprintf(p, 1024, "%s.KEYDIR.old", dir);
    return p;
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

/* Reads a whole (small) file into buf; returns its size. */
static size_t read_all(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    assert_true(n > 64 && n < cap);
    return n;
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

/* The model: version[i] (0: absent) of id k<i>. */
static int version[2 * N];

static void put(jvdb_db *db, int i, int ver)
{
    float v[DIM];
    char id[32];
    tu_vector(v, DIM, (uint64_t)i, (uint64_t)ver);
    snprintf(id, sizeof id, "k%d", i);
    assert_ok(jvdb_put(db, id, v, DIM, NULL, NULL));
    version[i] = ver;
}

static void del(jvdb_db *db, int i)
{
    char id[32];
    snprintf(id, sizeof id, "k%d", i);
    assert_ok(jvdb_delete(db, id, NULL));
    version[i] = 0;
}

/* Every id of the model reads back as the model says, and the live count matches. */
static void check(jvdb_db *db, int upto)
{
    float v[DIM], out[DIM];
    char id[32];
    uint64_t live = 0;
    for (int i = 0; i < upto; i++) {
        snprintf(id, sizeof id, "k%d", i);
        if (!version[i]) {
            assert_int_equal(jvdb_get(db, id, out, NULL), JVDB_ENOTFOUND);
            continue;
        }
        live++;
        tu_vector(v, DIM, (uint64_t)i, (uint64_t)version[i]);
        assert_ok(jvdb_get(db, id, out, NULL));
        assert_memory_equal(v, out, sizeof v);
    }
    assert_int_equal(jvdb_count(db), live);
}

static void same_stats(const jvdb_stats *a, const jvdb_stats *b)
{
    assert_int_equal(a->live_records, b->live_records);
    assert_int_equal(a->dead_records, b->dead_records);
    assert_int_equal(a->tombstones, b->tombstones);
    assert_int_equal(a->file_bytes, b->file_bytes);
    assert_int_equal(a->live_bytes, b->live_bytes);
    assert_int_equal(a->segments, b->segments);
    assert_int_equal(a->last_lsn, b->last_lsn);
}

/* A database over several segments with replaced and deleted ids, closed cleanly; *st its stats. */
static char *make(jvdb_stats *st)
{
    memset(version, 0, sizeof version);
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "t", DIM, JVDB_METRIC_L2, 8192);
    for (int i = 0; i < N; i++) put(db, i, 1);
    for (int i = 0; i < N; i += 3) put(db, i, 2);
    for (int i = 1; i < N; i += 7) del(db, i);
    assert_ok(jvdb_stats_get(db, st));
    assert_true(st->segments >= 4);
    jvdb_env_close(env);
    return dir;
}

static jvdb_db *reopen(const char *dir, jvdb_env **env)
{
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, env));
    assert_ok(jvdb_db_open(*env, "t", &db));
    return db;
}

/* Offset in segment 1 of the first record of id k0 (superseded by its version 2: dead). */
static long long dead_record_offset(const char *seg)
{
    (void)seg;
    return 64; /* k0 version 1 is the database's first record */
}

static void test_open_reads_no_covered_record(void **state)
{
    (void)state;
    jvdb_stats before, after;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR"), *seg = path_in(dir, "0000000001.seg");
    assert_true(tu_file_size(kd) > 0);
    /* Damage a dead record in a sealed segment: reading every record would refuse the open. */
    flip_byte(seg, dead_record_offset(seg) + 64 + 2);
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    check(db, N);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(&before, &after);
    jvdb_env_close(env);
    /* Without the checkpoint the damage is found (verification is the full scan's job). */
    assert_int_equal(unlink(kd), 0);
    assert_ok(jvdb_env_open(dir, &env));
    assert_err(jvdb_db_open(env, "t", &db), JVDB_ECORRUPT, "corrupt record");
    jvdb_env_close(env);
    free(kd);
    free(seg);
    tu_rmdir(dir);
}

static void test_replays_records_after_checkpoint(void **state)
{
    (void)state;
    jvdb_stats before, after;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR"), *old = aside(dir);
    copy_file(kd, old);
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    for (int i = N; i < N + 300; i++) put(db, i, 1);
    for (int i = 2; i < N; i += 5) {
        if (version[i]) del(db, i);
        else put(db, i, 3);
    }
    for (int i = 0; i < N; i += 11) put(db, i, 4);
    assert_ok(jvdb_stats_get(db, &before));
    jvdb_env_close(env);
    /* A checkpoint older than the data (what a SIGKILL leaves): the rest is replayed. */
    assert_int_equal(rename(old, kd), 0);
    db = reopen(dir, &env);
    check(db, N + 300);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(&before, &after);
    /* Writes go on where they left off. */
    put(db, N + 300, 1);
    check(db, N + 301);
    jvdb_env_close(env);
    db = reopen(dir, &env);
    check(db, N + 301);
    jvdb_env_close(env);
    free(kd);
    free(old);
    tu_rmdir(dir);
}

/* Sets a 64-byte header's version field and its checksum. */
static void set_version_buf(unsigned char *h, uint32_t v)
{
    memcpy(h + 8, &v, 4);
    uint64_t ck = XXH3_64bits(h, 56);
    memcpy(h + 56, &ck, 8);
}

/* Rewrites the header's version field and its checksum. */
static void set_version(const char *path, uint32_t v)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char h[64];
    assert_int_equal(pread(fd, h, 64, 0), 64);
    set_version_buf(h, v);
    assert_int_equal(pwrite(fd, h, 64, 0), 64);
    close(fd);
}

static void test_falls_back_when_unusable(void **state)
{
    (void)state;
    for (int round = 0; round < 4; round++) {
        jvdb_stats before, after;
        char *dir = make(&before);
        char *kd = path_in(dir, "KEYDIR");
        long long size = tu_file_size(kd);
        assert_true(size > 200);
        if (round == 0) flip_byte(kd, size / 2);                      /* damaged block */
        if (round == 1) assert_int_equal(truncate(kd, size - 30), 0); /* cut short */
        if (round == 2) set_version(kd, 99);                          /* another version */
        if (round == 3) flip_byte(kd, 20);                            /* damaged header */
        jvdb_env *env;
        jvdb_db *db = reopen(dir, &env);
        check(db, N);
        assert_ok(jvdb_stats_get(db, &after));
        same_stats(&before, &after);
        jvdb_env_close(env);
        free(kd);
        tu_rmdir(dir);
    }
}

static void test_stale_after_compaction(void **state)
{
    (void)state;
    jvdb_stats before, after;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR"), *old = aside(dir);
    copy_file(kd, old);
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    jvdb_compact_options o = { .full = 1, .force = 1 };
    jvdb_compact_stats cs;
    assert_ok(jvdb_compact(db, &o, &cs));
    assert_true(cs.segments_in > 0);
    assert_ok(jvdb_stats_get(db, &before));
    jvdb_env_close(env);
    /* The new checkpoint names the compacted segments and is used... */
    db = reopen(dir, &env);
    check(db, N);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(&before, &after);
    jvdb_env_close(env);
    /* ...and the old one, naming segments that are gone, is refused. */
    assert_int_equal(rename(old, kd), 0);
    db = reopen(dir, &env);
    check(db, N);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(&before, &after);
    jvdb_env_close(env);
    free(kd);
    free(old);
    tu_rmdir(dir);
}

/* A read-only open of the database in dir holds the model and the stats `before`. */
static void check_readonly(const char *dir, const jvdb_stats *before)
{
    jvdb_env *env;
    jvdb_db *db;
    jvdb_stats after;
    assert_ok(jvdb_env_open_readonly(dir, &env));
    assert_ok(jvdb_db_open(env, "t", &db));
    check(db, N);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(before, &after);
    jvdb_env_close(env);
}

static void test_readonly_never_writes(void **state)
{
    (void)state;
    jvdb_stats before;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR");
    assert_int_equal(unlink(kd), 0);
    check_readonly(dir, &before);
    assert_int_equal(tu_file_size(kd), -1);
    /* A writing open without writes still leaves one, for the next open. */
    jvdb_env *env;
    reopen(dir, &env);
    jvdb_env_close(env);
    assert_true(tu_file_size(kd) > 0);
    free(kd);
    tu_rmdir(dir);
}

/* Rewrites KEYDIR (current format) as a format-1 file, the layout sessions before the arena
 * keydir wrote: entries of 32 bytes plus the id instead of images of the in-memory entry. */
static void to_format1(const char *path)
{
    static unsigned char in[1 << 22], out[1 << 22];
    size_t n = read_all(path, in, sizeof in);
    uint32_t v, nsegs;
    memcpy(&v, in + 8, 4);
    assert_int_equal(v, 2);
    memcpy(&nsegs, in + 32, 4);
    size_t off = 64 + (size_t)nsegs * 40 + 8, o = off;
    memcpy(out, in, off);
    set_version_buf(out, 1);
    while (memcmp(in + off, "JVDBKDCE", 8) != 0) {
        uint32_t count, bytes;
        memcpy(&count, in + off + 4, 4);
        memcpy(&bytes, in + off + 8, 4);
        size_t bo = o, p = off + 16;
        o += 16;
        for (uint32_t k = 0; k < count; k++) {
            const unsigned char *e = in + p;
            uint16_t id_len;
            memcpy(&id_len, e + 44, 2);
            memcpy(out + o, e + 24, 8);      /* LSN */
            memcpy(out + o + 8, e, 8);       /* offset */
            memcpy(out + o + 16, e + 16, 4); /* segment index */
            memcpy(out + o + 20, e + 32, 8); /* record length, slot */
            memcpy(out + o + 28, e + 44, 3); /* id length, kind */
            out[o + 31] = 0;
            memcpy(out + o + 32, e + 48, id_len);
            o += 32 + id_len;
            p += 48 + ((id_len + 7u) & ~7u);
        }
        assert_int_equal(p, off + 16 + bytes);
        uint32_t nbytes = (uint32_t)(o - bo - 16);
        memcpy(out + bo, in + off, 16);
        memcpy(out + bo + 8, &nbytes, 4);
        uint64_t ck = XXH3_64bits(out + bo, 16 + (size_t)nbytes);
        memcpy(out + o, &ck, 8);
        o += 8;
        off = p + 8;
    }
    memcpy(out + o, in + off, 24); /* trailer */
    o += 24;
    assert_int_equal(off + 24, n);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, o, f), o);
    fclose(f);
}

static uint32_t file_version(const char *path)
{
    unsigned char h[12];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(h, 1, 12, f), 12);
    fclose(f);
    uint32_t v;
    memcpy(&v, h + 8, 4);
    return v;
}

/* A format-1 KEYDIR (written before the arena keydir) still loads, covered records unread, and the
 * first open for writing replaces it with the current format. */
static void test_old_format_loads_and_is_rewritten(void **state)
{
    (void)state;
    jvdb_stats before;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR"), *seg = path_in(dir, "0000000001.seg");
    to_format1(kd);
    assert_int_equal(file_version(kd), 1);
    /* Reading every record would refuse the open: only a loaded checkpoint gets past this. */
    flip_byte(seg, dead_record_offset(seg) + 64 + 2);
    check_readonly(dir, &before);
    assert_int_equal(file_version(kd), 1); /* a read-only open never writes */
    /* Writing over loaded entries (old versions superseded and deleted). */
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    for (int i = 0; i < N; i += 2) {
        if (version[i]) del(db, i);
        else put(db, i, 5);
    }
    check(db, N);
    jvdb_env_close(env);
    assert_int_equal(file_version(kd), 2);
    db = reopen(dir, &env);
    check(db, N);
    jvdb_env_close(env);
    free(kd);
    free(seg);
    tu_rmdir(dir);
}

/* Checks that KEYDIR lists its puts in ascending slot order, each slot once, before every
 * tombstone (so that a load writes the slot arrays front to back); returns the puts listed. */
static uint32_t check_slot_order(const char *path)
{
    static unsigned char in[1 << 22];
    read_all(path, in, sizeof in);
    uint32_t nsegs, puts = 0;
    memcpy(&nsegs, in + 32, 4);
    size_t off = 64 + (size_t)nsegs * 40 + 8;
    int64_t last = -1;
    int tombstones = 0;
    while (memcmp(in + off, "JVDBKDCE", 8) != 0) {
        uint32_t count, bytes;
        memcpy(&count, in + off + 4, 4);
        memcpy(&bytes, in + off + 8, 4);
        size_t p = off + 16;
        for (uint32_t k = 0; k < count; k++) {
            uint16_t id_len;
            uint32_t slot;
            memcpy(&id_len, in + p + 44, 2);
            memcpy(&slot, in + p + 36, 4);
            if (in[p + 46] == 1) {
                assert_false(tombstones);
                assert_true((int64_t)slot > last);
                last = slot;
                puts++;
            } else {
                tombstones++;
            }
            p += 48 + ((id_len + 7u) & ~7u);
        }
        off = p + 8;
    }
    assert_true(tombstones > 0);
    return puts;
}

/* The checkpoint lists puts in slot order, also after deletes freed slots that later puts reused
 * (slot order then differs from insertion order), and such a file loads back exactly. */
static void test_puts_in_slot_order(void **state)
{
    (void)state;
    jvdb_stats before;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR");
    assert_int_equal(check_slot_order(kd), before.live_records);
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    for (int i = N; i < N + N / 4; i++) put(db, i, 1); /* reuses the deleted ids' slots */
    for (int i = 2; i < N; i += 11)
        if (version[i]) del(db, i);
    for (int i = 0; i < N; i += 5) put(db, i, 9);
    jvdb_stats mid;
    assert_ok(jvdb_stats_get(db, &mid));
    jvdb_env_close(env);
    assert_int_equal(check_slot_order(kd), mid.live_records);
    db = reopen(dir, &env);
    check(db, N + N / 4);
    jvdb_env_close(env);
    free(kd);
    tu_rmdir(dir);
}

/* A KEYDIR naming one id twice (its checksums made right again) is refused whole and the open
 * reads every record instead (a big load finds duplicates in its inserter thread, after the
 * loading thread has moved on: the refusal must still come, and free what was built). */
static void test_id_twice_refused(void **state)
{
    (void)state;
    jvdb_stats before, after;
    char *dir = make(&before);
    char *kd = path_in(dir, "KEYDIR");
    static unsigned char in[1 << 22];
    size_t n = read_all(kd, in, sizeof in);
    uint32_t nsegs, count, bytes;
    memcpy(&nsegs, in + 32, 4);
    size_t off = 64 + (size_t)nsegs * 40 + 8, p = off + 16, first = 0;
    memcpy(&count, in + off + 4, 4);
    memcpy(&bytes, in + off + 8, 4);
    int done = 0;
    for (uint32_t k = 0; k < count && !done; k++) {
        uint16_t id_len;
        memcpy(&id_len, in + p + 44, 2);
        if (!first) first = p;
        else if (!memcmp(in + first + 44, in + p + 44, 2)) {
            memcpy(in + p + 48, in + first + 48, id_len); /* the id of the first entry of that length */
            done = 1;
        }
        p += 48 + ((id_len + 7u) & ~7u);
    }
    assert_true(done);
    uint64_t ck = XXH3_64bits(in + off, 16 + (size_t)bytes);
    memcpy(in + off + 16 + bytes, &ck, 8);
    FILE *f = fopen(kd, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(in, 1, n, f), n);
    fclose(f);
    jvdb_env *env;
    jvdb_db *db = reopen(dir, &env);
    check(db, N);
    assert_ok(jvdb_stats_get(db, &after));
    same_stats(&before, &after);
    jvdb_env_close(env);
    free(kd);
    tu_rmdir(dir);
}

struct compactor {
    jvdb_db *db;
    atomic_int stop;
    int runs;
};

/* Compacts the database over and over until told to stop. */
static void *compact_loop(void *arg)
{
    struct compactor *c = arg;
    while (!atomic_load(&c->stop)) {
        /* Full runs only: a partial run whose inputs hold no live record reaches
         * qsort(NULL, 0, ...) in compact.c (UBSan; reported, not ours to change here). */
        jvdb_compact_options o = { .full = 1, .force = 1 };
        jvdb_compact_stats cs;
        if (jvdb_compact(c->db, &o, &cs) == JVDB_OK) c->runs++;
        usleep(1000);
    }
    return NULL;
}

/* Checkpoints taken in the background while writes and compactions go on: each reopen, from
 * whatever checkpoint was last written plus the records after it, equals the model. */
static void test_checkpoints_beside_writes_and_compactions(void **state)
{
    (void)state;
    memset(version, 0, sizeof version);
    char *dir = tu_tempdir();
    char *kd = path_in(dir, "KEYDIR");
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "t", DIM, JVDB_METRIC_L2, 8192);
    for (int round = 0; round < 3; round++) {
        struct compactor c = { db, 0, 0 };
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, compact_loop, &c), 0);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int k = 0;; k++) {
            int i = (k * 7919 + round * 13) % N;
            if (version[i] && k % 4 == 0) del(db, i);
            else put(db, i, round * 100000 + k + 1);
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (t.tv_sec - t0.tv_sec >= 2 && k > 500) break;
        }
        atomic_store(&c.stop, 1);
        pthread_join(th, NULL);
        assert_true(c.runs > 0);
        check(db, N);
        jvdb_env_close(env);
        assert_true(tu_file_size(kd) > 0);
        db = reopen(dir, &env);
        check(db, N);
    }
    jvdb_env_close(env);
    free(kd);
    tu_rmdir(dir);
}

int main(void)
{
    /* Every database here is tiny: checkpoint from the first byte. */
    setenv("JVDB_KDCKPT_BYTES", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_reads_no_covered_record),
        cmocka_unit_test(test_replays_records_after_checkpoint),
        cmocka_unit_test(test_falls_back_when_unusable),
        cmocka_unit_test(test_stale_after_compaction),
        cmocka_unit_test(test_readonly_never_writes),
        cmocka_unit_test(test_old_format_loads_and_is_rewritten),
        cmocka_unit_test(test_puts_in_slot_order),
        cmocka_unit_test(test_id_twice_refused),
        cmocka_unit_test(test_checkpoints_beside_writes_and_compactions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

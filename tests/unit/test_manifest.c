/* test_manifest.c — MANIFEST serialisation round trip, unknown keys kept, damage detected; MANIFEST
 * writes that no writer waits for, ordered so that the newest state wins. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/io.h"
#include "store/db.h"
#include "store/manifest.h"
#include "test_util.h"

static void test_round_trip(void **state)
{
    (void)state;
    struct manifest m;
    memset(&m, 0, sizeof m);
    strcpy(m.name, "db1");
    m.dim = 128;
    m.metric = JVDB_METRIC_DOT;
    m.sync = JVDB_SYNC_INTERVAL;
    m.sync_interval_ms = 200;
    m.segment_max_bytes = 1 << 20;
    uint64_t segs[] = { 3, 7, 9 };
    m.segments = segs;
    m.nsegments = 3;
    m.next_segment = 10;
    m.active = 7;
    m.lsn_floor = 12345;
    m.backup_horizon = 99;
    m.extra = json_pack("{s:i}", "future_field", 5);
    char *text;
    size_t len;
    assert_ok(manifest_serialize(&m, &text, &len));
    json_decref(m.extra);
    struct manifest back;
    assert_ok(manifest_parse(text, len, "test", &back));
    assert_string_equal(back.name, "db1");
    assert_int_equal(back.dim, 128);
    assert_int_equal(back.metric, JVDB_METRIC_DOT);
    assert_int_equal(back.sync, JVDB_SYNC_INTERVAL);
    assert_int_equal(back.sync_interval_ms, 200);
    assert_int_equal(back.nsegments, 3);
    assert_int_equal(back.segments[2], 9);
    assert_int_equal(back.active, 7);
    assert_int_equal(back.lsn_floor, 12345);
    assert_int_equal(back.backup_horizon, 99);
    assert_int_equal(json_integer_value(json_object_get(back.extra, "future_field")), 5);
    manifest_free(&back);
    /* Every single-byte change is caught. */
    for (size_t i = 0; i < len; i++) {
        text[i] ^= 1;
        assert_int_not_equal(manifest_parse(text, len, "test", &back), JVDB_OK);
        text[i] ^= 1;
    }
    free(text);
}

static void test_rejects_nonsense(void **state)
{
    (void)state;
    struct manifest m;
    assert_err(manifest_parse("{}", 2, "M", &m), JVDB_ECORRUPT, "no checksum line");
    const char *body = "{\"format\":1}";
    char buf[256];
    snprintf(buf, sizeof buf, "%s\nxxh3:0000000000000000\n", body);
    assert_err(manifest_parse(buf, strlen(buf), "M", &m), JVDB_ECORRUPT, "checksum mismatch");
}

/* Serialises a one-segment manifest of `metric` written as `format` (0 = the default) and parses it. */
static int format_round_trip(jvdb_metric metric, uint32_t format, struct manifest *back, char **text)
{
    struct manifest m;
    memset(&m, 0, sizeof m);
    strcpy(m.name, "f");
    m.dim = 4;
    m.metric = metric;
    m.format = format;
    m.segment_max_bytes = 1 << 20;
    uint64_t seg = 1;
    m.segments = &seg;
    m.nsegments = 1;
    m.active = 1;
    m.next_segment = 2;
    size_t len;
    assert_ok(manifest_serialize(&m, text, &len));
    return manifest_parse(*text, len, "M", back);
}

/* Format 2 marks cosine databases whose vectors are stored as given; l2 and dot stay format 1, which
 * every version reads; a format-1 cosine database (normalised vectors) keeps its number until the
 * store marks it; a format this version does not know is refused with the range it reads. */
static void test_format_versions(void **state)
{
    (void)state;
    struct manifest back;
    char *text;
    assert_ok(format_round_trip(JVDB_METRIC_COSINE, 0, &back, &text));
    assert_non_null(strstr(text, "\"format\":2,"));
    assert_int_equal(back.format, 2);
    manifest_free(&back);
    free(text);
    assert_ok(format_round_trip(JVDB_METRIC_DOT, 0, &back, &text));
    assert_non_null(strstr(text, "\"format\":1,"));
    assert_int_equal(back.format, 1);
    manifest_free(&back);
    free(text);
    assert_ok(format_round_trip(JVDB_METRIC_COSINE, 1, &back, &text));
    assert_int_equal(back.format, 1);
    assert_int_equal(back.metric, JVDB_METRIC_COSINE);
    manifest_free(&back);
    free(text);
    assert_int_equal(manifest_format_for(JVDB_METRIC_COSINE), 2);
    assert_int_equal(manifest_format_for(JVDB_METRIC_L2), 1);
    assert_err(format_round_trip(JVDB_METRIC_L2, 3, &back, &text), JVDB_ECORRUPT,
               "M: unsupported format 3 (this version reads 1 to 2)");
    free(text);
}

/* A MANIFEST write held at its rename (the file is written and fsynced, not yet renamed). */
struct stall {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, entered, released;
};
static struct stall stall = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 };

/* Monotonic seconds. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits on s->cv until *flag is set or `secs` pass (s->mu held). */
static void stall_wait(struct stall *s, const int *flag, int secs)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += secs;
    while (!*flag && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT) {
    }
}

/* Crash-point hook: holds the first MANIFEST write after arming at its rename until released (3 s at most). */
static void stall_hook(const char *name, void *arg)
{
    struct stall *s = arg;
    if (strcmp(name, "manifest.before_rename") != 0) return;
    pthread_mutex_lock(&s->mu);
    if (s->armed) {
        s->armed = 0;
        s->entered = 1;
        pthread_cond_broadcast(&s->cv);
        stall_wait(s, &s->released, 3); /* the old code's writers waited these 3 s */
    }
    pthread_mutex_unlock(&s->mu);
}

struct mwriter {
    jvdb_db *db;
    int horizon; /* 0: set the shipped-LSN pin; else move the backup horizon to this */
    int rc;
};

/* Thread: one MANIFEST change (the pin or the horizon). */
static void *mwriter_main(void *arg)
{
    struct mwriter *w = arg;
    w->rc = w->horizon ? db_set_backup_horizon(w->db, (uint64_t)w->horizon)
                       : db_set_manifest_extra(w->db, DB_SHIP_PIN_KEY,
                                               json_pack("{s:s, s:I}", "incarnation", "t", "shipped_lsn", 42));
    return NULL;
}

/* The shipped-LSN pin readers see (`none` when there is none). */
static long long pin_seen(jvdb_db *db, long long none)
{
    json_t *pin = db_manifest_extra(db, DB_SHIP_PIN_KEY);
    long long v = pin ? (long long)json_integer_value(json_object_get(pin, "shipped_lsn")) : none;
    if (pin) json_decref(pin);
    return v;
}

/* The shipped-LSN pin read back from a reopened database's MANIFEST (-1: none). */
static long long pin_on_disk(const char *dir, uint64_t *horizon)
{
    jvdb_env *env;
    jvdb_db *db;
    assert_ok(jvdb_env_open(dir, &env));
    assert_ok(jvdb_db_open(env, "m", &db));
    long long v = pin_seen(db, -1);
    *horizon = db_backup_horizon(db);
    jvdb_env_close(env);
    return v;
}

/* A put finishes while a MANIFEST write (the shipper's pin) is stalled in its I/O; readers see the
 * old pin until the new one is durable; a second MANIFEST writer waits for the first and the newest
 * state (both changes) wins; a failed write leaves the old value, in memory and on disk. */
static void test_writer_not_blocked_by_manifest_write(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "m", 4, JVDB_METRIC_L2, 0);
    float v[4] = { 1, 2, 3, 4 };
    assert_ok(jvdb_put(db, "a", v, 4, NULL, NULL));

    stall.armed = 1;
    io_point_hook_set(stall_hook, &stall);
    struct mwriter pin = { db, 0, -1 }, hor = { db, 77, -1 };
    pthread_t tp, th;
    assert_int_equal(pthread_create(&tp, NULL, mwriter_main, &pin), 0);
    pthread_mutex_lock(&stall.mu);
    stall_wait(&stall, &stall.entered, 10);
    int entered = stall.entered;
    pthread_mutex_unlock(&stall.mu);
    assert_true(entered);

    double t0 = now_s();
    assert_ok(jvdb_put(db, "b", v, 4, NULL, NULL));
    double put_s = now_s() - t0;
    long long seen = pin_seen(db, -1);
    uint64_t h_seen = db_backup_horizon(db);
    assert_int_equal(pthread_create(&th, NULL, mwriter_main, &hor), 0);
    assert_ok(jvdb_put(db, "c", v, 4, NULL, NULL));
    double both_s = now_s() - t0;

    pthread_mutex_lock(&stall.mu);
    stall.released = 1;
    pthread_cond_broadcast(&stall.cv);
    pthread_mutex_unlock(&stall.mu);
    pthread_join(tp, NULL);
    pthread_join(th, NULL);
    io_point_hook_set(NULL, NULL);
    if (put_s > 1.0 || both_s > 1.5)
        fail_msg("a put waited for the MANIFEST write: %.3f s (%.3f s with a second writer)", put_s, both_s);
    assert_int_equal(seen, -1); /* not durable yet: the old value (none) */
    assert_int_equal(h_seen, 0);
    assert_int_equal(pin.rc, JVDB_OK);
    assert_int_equal(hor.rc, JVDB_OK);
    assert_int_equal(pin_seen(db, -1), 42);
    assert_int_equal(db_backup_horizon(db), 77);

    /* A failed write: the old value stays, in memory and on disk. */
    io_fault_arm(IO_OP_RENAME, 0, ENOSPC, false, false);
    assert_int_not_equal(db_set_backup_horizon(db, 99), JVDB_OK);
    io_fault_clear();
    assert_int_equal(db_backup_horizon(db), 77);
    assert_ok(db_set_manifest_extra(db, "other", json_integer(1)));
    assert_int_equal(jvdb_count(db), 3);
    jvdb_env_close(env);
    uint64_t horizon;
    assert_int_equal(pin_on_disk(dir, &horizon), 42);
    assert_int_equal(horizon, 77);
    tu_rmdir(dir);
}

/* The race test's shared state. */
struct race {
    jvdb_db *db;
    atomic_int stop, done;
    atomic_int puts;                    /* puts acknowledged so far */
    atomic_int pause, idle;             /* the compactor stays off while the pin write is stalled */
    atomic_int stall_armed, stall_puts; /* puts acknowledged while it was (-1: not yet) */
    int rc[8];
};
/* Set in the threads whose MANIFEST writes may be stalled (a seal's or a swap's may not: they hold write_mu). */
static _Thread_local int race_stall_here;

/* Crash-point hook: sleeps 1 s in the armed MANIFEST write, counting the puts acknowledged meanwhile. */
static void race_hook(const char *name, void *arg)
{
    struct race *r = arg;
    if (strcmp(name, "manifest.before_rename") != 0 || !race_stall_here || !atomic_exchange(&r->stall_armed, 0)) return;
    int before = atomic_load(&r->puts);
    struct timespec one = { 1, 0 };
    nanosleep(&one, NULL);
    atomic_store(&r->stall_puts, atomic_load(&r->puts) - before);
    atomic_store(&r->pause, 0);
}

/* Puts vectors until told to stop (the compactor seals on the way). */
static void *race_put(void *arg)
{
    struct race *r = arg;
    static atomic_int who;
    int me = atomic_fetch_add(&who, 1);
    float v[4];
    char id[32];
    for (int i = 0; !atomic_load(&r->stop) && !r->rc[me]; i++) {
        snprintf(id, sizeof id, "w%d-%d", me, i);
        tu_vector(v, 4, (uint64_t)i, (uint64_t)me);
        r->rc[me] = jvdb_put(r->db, id, v, 4, NULL, NULL);
        if (atomic_fetch_add(&r->puts, 1) % 16 == 15) {
            struct timespec ms = { 0, 1000000 }; /* a steady load, not a flood to re-read at the end */
            nanosleep(&ms, NULL);
        }
    }
    return NULL;
}

/* Raises the pin 1..60; from the 20th, the next pin or horizon write (this one may be skipped: a
 * newer MANIFEST holding it is on disk) is stalled 1 s in its I/O while the writers must go on (the
 * compactor paused and segments large: a seal or a swap would wait for it, holding write_mu). */
static void *race_pin(void *arg)
{
    struct race *r = arg;
    race_stall_here = 1;
    for (int i = 1; i <= 60 && !r->rc[4]; i++) {
        int stall = i == 20;
        if (stall) {
            atomic_store(&r->pause, 1);
            for (int k = 0; k < 30000 && !atomic_load(&r->idle); k++) {
                struct timespec ms = { 0, 1000000 };
                nanosleep(&ms, NULL);
            }
            atomic_store(&r->stall_armed, 1);
        }
        r->rc[4] = db_set_manifest_extra(r->db, DB_SHIP_PIN_KEY,
                                         json_pack("{s:s, s:i}", "incarnation", "t", "shipped_lsn", i));
    }
    return NULL;
}

/* Moves the horizon 1..60. */
static void *race_horizon(void *arg)
{
    struct race *r = arg;
    race_stall_here = 1;
    for (int i = 1; i <= 60 && !r->rc[5]; i++) r->rc[5] = db_set_backup_horizon(r->db, (uint64_t)i);
    return NULL;
}

/* Compacts now and then (its swap commits a MANIFEST under write_mu). */
static void *race_compact(void *arg)
{
    struct race *r = arg;
    jvdb_compact_options o = { .full = 1, .force = 1 };
    while (!atomic_load(&r->done)) {
        atomic_store(&r->idle, atomic_load(&r->pause));
        if (atomic_load(&r->idle)) {
            struct timespec ms = { 0, 1000000 };
            nanosleep(&ms, NULL);
            continue;
        }
        jvdb_compact_stats st;
        int rc = jvdb_compact(r->db, &o, &st);
        if (rc != JVDB_OK && rc != JVDB_EBUSY) r->rc[6] = rc;
        struct timespec ms = { 0, 20000000 };
        nanosleep(&ms, NULL);
    }
    return NULL;
}

/* Readers never see the pin or the horizon go back. */
static void *race_read(void *arg)
{
    struct race *r = arg;
    long long last_pin = 0;
    uint64_t last_h = 0;
    while (!atomic_load(&r->done)) {
        long long pv = pin_seen(r->db, 0);
        uint64_t h = db_backup_horizon(r->db);
        if (pv < last_pin || h < last_h) r->rc[7] = JVDB_ECORRUPT;
        last_pin = pv;
        last_h = h;
    }
    return NULL;
}

/* Writers, seals, compactions, pin and horizon writers and readers at once (run under TSan by
 * `make tsan`): nothing lost, the newest pin and horizon are what the reopened MANIFEST says. */
static void test_manifest_writers_race(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db_options o;
    jvdb_db_options_init(&o, 4);
    o.sync = JVDB_SYNC_NEVER;
    struct race r = { .db = NULL, .stall_puts = -1 };
    assert_ok(jvdb_db_create(env, "m", &o, &r.db));
    io_point_hook_set(race_hook, &r);
    pthread_t t[7];
    void *(*fns[7])(void *) = { race_put, race_put, race_pin, race_horizon, race_compact, race_read, race_read };
    for (int i = 0; i < 7; i++) assert_int_equal(pthread_create(&t[i], NULL, fns[i], &r), 0);
    pthread_join(t[2], NULL);
    pthread_join(t[3], NULL);
    atomic_store(&r.stop, 1);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    atomic_store(&r.done, 1);
    for (int i = 4; i < 7; i++) pthread_join(t[i], NULL);
    io_point_hook_set(NULL, NULL);
    /* The old code held write_mu across the write: not one put in that second. */
    if (atomic_load(&r.stall_puts) <= 0) fail_msg("puts acknowledged during a 1 s MANIFEST write: %d", r.stall_puts);
    for (int i = 0; i < 8; i++)
        if (r.rc[i]) fail_msg("thread %d: %d %s", i, r.rc[i], jvdb_errmsg());
    uint64_t puts = (uint64_t)atomic_load(&r.puts);
    assert_int_equal(jvdb_count(r.db), puts);
    jvdb_env_close(env);
    uint64_t horizon;
    assert_int_equal(pin_on_disk(dir, &horizon), 60);
    assert_int_equal(horizon, 60);
    jvdb_env *env2;
    jvdb_db *db2;
    assert_ok(jvdb_env_open(dir, &env2));
    assert_ok(jvdb_db_open(env2, "m", &db2));
    assert_int_equal(jvdb_count(db2), puts);
    jvdb_env_close(env2);
    tu_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rejects_nonsense),
        cmocka_unit_test(test_format_versions),
        cmocka_unit_test(test_writer_not_blocked_by_manifest_write),
        cmocka_unit_test(test_manifest_writers_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

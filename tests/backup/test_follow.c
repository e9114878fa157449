/*
 * test_follow.c — a replica's poll (issue 13): jvdb_backup_follow_ex with log_only lists only the log
 * objects named from the replica's LSN on, applies exactly what the full check applies, falls back
 * to the full check on a gap and on a newer incarnation, names a damaged object (bad_object), and
 * costs what is new rather than the repository's history: with JVDB_FOLLOW_POLL_OBJECTS (10,000
 * by default on a directory, 1,100 on S3: more than one listing page) log objects behind the
 * replica, a poll is timed both ways and printed ("follow-poll: ..."; bench/results/follow-poll.md).
 * The repository is a directory, or S3 under backup.s3 (tu_repo_spec).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/wal.h"
#include "core/clock.h"
#include "test_util.h"

#define DIM 4

struct fx {
    char *dir;
    char data[512], data2[512];
    char repo_spec[640];
    int s3;
    jvdb_env *env, *renv;
    jvdb_repo *repo;
    jvdb_db *db;
};

/* A primary's and a replica's data directories and a repository. */
static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->data2, sizeof f->data2, "%s/replica", f->dir);
    f->s3 = tu_repo_spec(f->dir, "follow", f->repo_spec, sizeof f->repo_spec);
    assert_ok(jvdb_env_open(f->data, &f->env));
    assert_ok(jvdb_env_open(f->data2, &f->renv));
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &f->repo));
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.sync = JVDB_SYNC_NEVER;
    assert_ok(jvdb_db_create(f->env, "p", &o, &f->db));
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    jvdb_repo_close(f->repo);
    jvdb_env_close(f->renv);
    jvdb_env_close(f->env);
    tu_rmdir(f->dir);
    free(f);
    return 0;
}

/* n batches of one put each (ids cycle through 50). */
static void writes(struct fx *f, int n)
{
    static int seq;
    for (int i = 0; i < n; i++, seq++) {
        float v[DIM];
        char id[32];
        tu_vector(v, DIM, (uint64_t)(seq % 50), (uint64_t)seq);
        snprintf(id, sizeof id, "v%d", seq % 50);
        assert_ok(jvdb_put(f->db, id, v, DIM, NULL, NULL));
    }
}

/* Ships what the primary wrote; returns its last LSN. */
static uint64_t ship(struct fx *f)
{
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(f->db, f->repo, NULL, &r));
    return r.shipped_lsn;
}

/* The replica of "p", seeded from the repository. */
static jvdb_db *seed(struct fx *f)
{
    jvdb_restore_options ro = { .database = "p", .replica = 1, .latest = 1, .force = 1 };
    jvdb_db *rep;
    assert_ok(jvdb_backup_restore(f->renv, f->repo, NULL, &ro, &rep));
    return rep;
}

/* One poll, log only or full. */
static int poll_once(jvdb_db *rep, struct fx *f, int log_only, jvdb_follow_result *fr)
{
    jvdb_follow_options o = { .log_only = log_only };
    return jvdb_backup_follow_ex(rep, f->repo, &o, fr);
}

/* The log of "p" (wal_list). */
static struct wal_entry *log_of(struct fx *f, size_t *n)
{
    struct wal_entry *e;
    assert_ok(wal_list(f->repo, "p", &e, n));
    return e;
}

static void test_log_only_follows(void **state)
{
    struct fx *f = *state;
    writes(f, 5);
    ship(f); /* the full backup */
    writes(f, 5);
    ship(f);
    jvdb_db *rep = seed(f);
    jvdb_follow_result fr;
    assert_ok(poll_once(rep, f, 1, &fr));
    assert_int_equal(fr.full, 0);
    assert_int_equal(fr.records, 0);
    for (int round = 0; round < 4; round++) {
        writes(f, 3 + round);
        uint64_t lsn = ship(f);
        if (round == 2) {
            writes(f, 2);
            lsn = ship(f); /* two objects in one poll */
        }
        assert_ok(poll_once(rep, f, 1, &fr));
        assert_int_equal(fr.full, 0);
        assert_false(fr.reseed);
        assert_int_equal(fr.lsn, lsn);
        assert_int_equal(fr.repo_lsn, lsn);
        assert_int_equal(fr.objects, round == 2 ? 2 : 1);
        assert_int_equal(fr.records, round == 2 ? 7 : 3 + (uint64_t)round);
    }
    /* Nothing new: nothing applied, still log only. */
    assert_ok(poll_once(rep, f, 1, &fr));
    assert_int_equal(fr.full, 0);
    assert_int_equal(fr.records, 0);
    /* A damaged object is named (not read past), with the LSN a backup must reach. */
    writes(f, 4);
    ship(f);
    size_t n;
    struct wal_entry *e = log_of(f, &n);
    char path[WAL_NAME_MAX + 8], *buf;
    size_t len;
    snprintf(path, sizeof path, "log/%s", e[n - 1].name);
    assert_ok(f->repo->ops->obj_get(f->repo, "p", path, &buf, &len));
    buf[len / 2] ^= 0x20;
    assert_ok(f->repo->ops->obj_put(f->repo, "p", path, buf, len));
    jvdb_stats st;
    assert_ok(jvdb_stats_get(rep, &st));
    assert_int_equal(poll_once(rep, f, 1, &fr), JVDB_ECORRUPT);
    assert_string_equal(fr.bad_object, e[n - 1].name);
    assert_int_equal(fr.bad_lsn_to, e[n - 1].lsn_to);
    assert_int_equal(fr.lsn, st.last_lsn);
    buf[len / 2] ^= 0x20;
    assert_ok(f->repo->ops->obj_put(f->repo, "p", path, buf, len));
    assert_ok(poll_once(rep, f, 1, &fr));
    assert_int_equal(fr.lsn, e[n - 1].lsn_to);
    free(buf);
    free(e);
}

/* A gap after the replica, and a newer incarnation: log only cannot decide them, the full check does. */
static void test_log_only_falls_back(void **state)
{
    struct fx *f = *state;
    writes(f, 5);
    ship(f);
    jvdb_db *rep = seed(f);
    writes(f, 3);
    ship(f);
    writes(f, 3);
    ship(f);
    size_t n;
    struct wal_entry *e = log_of(f, &n);
    assert_int_equal(n, 2);
    char path[WAL_NAME_MAX + 8];
    snprintf(path, sizeof path, "log/%s", e[0].name);
    assert_ok(f->repo->ops->obj_delete(f->repo, "p", path));
    jvdb_follow_result fr;
    assert_ok(poll_once(rep, f, 1, &fr));
    assert_int_equal(fr.full, 1);
    assert_true(fr.reseed);
    assert_non_null(strstr(fr.reason, "gap"));
    free(e);
    /* The database made again on the primary: a newer incarnation. */
    rep = seed(f);
    assert_ok(jvdb_db_drop(f->env, "p"));
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.sync = JVDB_SYNC_NEVER;
    assert_ok(jvdb_db_create(f->env, "p", &o, &f->db));
    writes(f, 2);
    ship(f);
    writes(f, 2);
    ship(f);
    assert_ok(poll_once(rep, f, 1, &fr));
    assert_int_equal(fr.full, 1);
    assert_true(fr.reseed);
    assert_non_null(strstr(fr.reason, "newer database"));
}

/* Writes an empty file of `name` under the database's log in a directory repository (no fsync: a
 * history the polls never read, laid down fast). */
static void fake_object(struct fx *f, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/p/log/%s", f->repo_spec, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    close(fd);
}

/* Median of v[0..n) (sorts it). */
static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* A poll's cost with a long history behind the replica: the old full listing (every object and
 * backup) against log only (the names after the replica's LSN).  History objects are named below
 * the full backup's LSN, so neither way reads them: what differs is only the listing. */
static void test_poll_cost(void **state)
{
    struct fx *f = *state;
    const char *env = getenv("JVDB_FOLLOW_POLL_OBJECTS");
    int hist = env ? atoi(env) : f->s3 ? 1100 : 10000; /* S3: past one listing page */
    writes(f, hist + 10);
    ship(f); /* the full backup: LSN hist + 10 */
    writes(f, 3);
    ship(f);
    size_t n;
    struct wal_entry *e = log_of(f, &n);
    assert_int_equal(n, 1);
    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < hist; i++) {
        char name[WAL_NAME_MAX];
        wal_name(name, e[0].incarnation, (uint64_t)i, (uint64_t)i + 1, e[0].first_time_ns, e[0].first_time_ns,
                 e[0].epoch);
        if (f->s3) {
            char path[WAL_NAME_MAX + 8];
            snprintf(path, sizeof path, "log/%s", name);
            assert_ok(f->repo->ops->obj_put(f->repo, "p", path, "", 0));
        } else fake_object(f, name);
    }
    double made = (double)(clock_mono_ns() - t0) / 1e9;
    free(e);
    jvdb_db *rep = seed(f);
    jvdb_follow_result fr;
    enum { ROUNDS = 5 };
    int rounds = f->s3 ? 3 : ROUNDS; /* a full poll of S3 takes seconds */
    double t_old[2][ROUNDS], t_new[2][ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int fresh = 0; fresh < 2; fresh++) /* 0: nothing new; 1: one new object */
            for (int way = 0; way < 2; way++) {
                if (fresh) {
                    writes(f, 2);
                    ship(f);
                }
                int64_t a = clock_mono_ns();
                assert_ok(poll_once(rep, f, way, &fr));
                double s = (double)(clock_mono_ns() - a) / 1e6;
                assert_int_equal(fr.full, !way);
                assert_int_equal(fr.objects, (uint64_t)fresh);
                (way ? t_new : t_old)[fresh][r] = s;
            }
    double o0 = median(t_old[0], rounds), n0 = median(t_new[0], rounds);
    double o1 = median(t_old[1], rounds), n1 = median(t_new[1], rounds);
    printf("follow-poll: repo=%s objects=%d (laid down in %.1f s) rounds=%d median ms: idle old %.2f new %.2f "
           "(%.1fx); one new object old %.2f new %.2f (%.1fx)\n",
           f->s3 ? "s3" : "directory", hist + 1, made, rounds, o0, n0, o0 / n0, o1, n1, o1 / n1);
    /* Log only must not do the full listing's work: a loose bound a busy machine still meets. */
    assert_true(n0 < o0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_log_only_follows, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_only_falls_back, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_poll_cost, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

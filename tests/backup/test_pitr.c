/*
 * test_pitr.c — point-in-time restore and read replicas (issue 13) through the public API: a model
 * of the database after every batch (with the wall-clock interval each batch was acknowledged in),
 * log objects shipped after every few batches (jvdb_backup_ship), then restores to many random LSNs
 * and times compared with the model exactly (a batch is never split); the restorable window and
 * targets outside it; a tampered log object caught; a replica (jvdb_backup_follow) that follows,
 * resumes from its own last LSN without repeating anything, and asks for a re-seed when the
 * database in the repository is a new incarnation.
 *
 * The repository is a temporary directory (the tamper test reaches into its files), or S3 when
 * JVDB_TEST_REPO is set, where the file-level test is skipped.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "backup/wal.h"
#include "store/record.h"
#include "test_util.h"

#define DIM     8
#define NIDS    48
#define BATCHES 160

/* ------------------------------------------------------------------ model */

struct point {
    uint64_t lsn;   /* last LSN of the batch */
    int64_t t0, t1; /* the batch was acknowledged within [t0, t1] */
    int ver[NIDS];  /* the database after it (0 = absent) */
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void vec_for(float *v, int id, int ver)
{
    tu_vector(v, DIM, (uint64_t)id, (uint64_t)ver);
    v[0] = (float)id;
}

static void meta_for(char *buf, size_t cap, int id, int ver) { snprintf(buf, cap, "{\"id\":%d,\"ver\":%d}", id, ver); }

/* One batch of 1..4 random puts and deletes; *p is the state after it. */
static void write_batch(jvdb_db *db, int *ver, int *next_ver, struct point *p)
{
    jvdb_record recs[4];
    float vecs[4][DIM];
    char ids[4][16], metas[4][64];
    int n = 1 + (int)rnd(4), used[NIDS] = { 0 };
    p->t0 = now_ns();
    if (rnd(5) == 0) {
        /* A delete of a live id (alone: a batch of deletes is another call). */
        for (int tries = 0; tries < NIDS; tries++) {
            int id = (int)rnd(NIDS);
            if (!ver[id]) continue;
            snprintf(ids[0], sizeof ids[0], "v-%d", id);
            assert_ok(jvdb_delete(db, ids[0], &p->lsn));
            ver[id] = 0;
            goto done;
        }
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        int id = (int)rnd(NIDS);
        if (used[id]) continue;
        used[id] = 1;
        int v = ++*next_ver;
        snprintf(ids[k], sizeof ids[k], "v-%d", id);
        vec_for(vecs[k], id, v);
        meta_for(metas[k], sizeof metas[k], id, v);
        recs[k] = (jvdb_record){ ids[k], vecs[k], DIM, metas[k] };
        ver[id] = v;
        k++;
    }
    assert_ok(jvdb_put_batch(db, recs, (size_t)k, &p->lsn));
done:
    p->t1 = now_ns();
    memcpy(p->ver, ver, sizeof p->ver);
}

static void check_state(jvdb_db *db, const int *ver, const char *what)
{
    uint64_t live = 0;
    for (int id = 0; id < NIDS; id++) {
        char k[16], mb[64];
        float got[DIM], want[DIM];
        char *meta = NULL;
        snprintf(k, sizeof k, "v-%d", id);
        int rc = jvdb_get(db, k, got, &meta);
        if (!ver[id]) {
            if (rc != JVDB_ENOTFOUND) fail_msg("%s: %s should be absent (rc %d)", what, k, rc);
            continue;
        }
        live++;
        if (rc) fail_msg("%s: %s missing: %s", what, k, jvdb_errmsg());
        vec_for(want, id, ver[id]);
        meta_for(mb, sizeof mb, id, ver[id]);
        if (memcmp(got, want, sizeof want) || !meta || strcmp(meta, mb))
            fail_msg("%s: %s differs (want version %d, metadata %s)", what, k, ver[id], meta ? meta : "(none)");
        jvdb_free(meta);
    }
    if (jvdb_count(db) != live)
        fail_msg("%s: count %llu, want %llu", what, (unsigned long long)jvdb_count(db), (unsigned long long)live);
}

/* ------------------------------------------------------------------ fixture */

struct fx {
    char *dir;
    char data[512], data2[512], repo_spec[640];
    int s3;
    jvdb_env *env;
    jvdb_repo *repo;
    jvdb_db *db;
    struct point pts[BATCHES + 1]; /* pts[0]: the first backup */
    size_t npts;
    uint64_t base_lsn; /* the first backup's LSN */
    int64_t base_ns;   /* ... and time (after it was made) */
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->data2, sizeof f->data2, "%s/replica", f->dir);
    f->s3 = tu_repo_spec(f->dir, "pitr", f->repo_spec, sizeof f->repo_spec);
    assert_ok(jvdb_env_open(f->data, &f->env));
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &f->repo));
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    jvdb_repo_close(f->repo);
    jvdb_env_close(f->env);
    tu_rmdir(f->dir);
    free(f);
    return 0;
}

static void ship(struct fx *f)
{
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(f->db, f->repo, NULL, &r));
}

static void backup(struct fx *f, jvdb_backup_type type)
{
    jvdb_backup_options o;
    jvdb_backup_options_init(&o);
    o.type = type;
    jvdb_backup_info info;
    assert_ok(jvdb_backup_create(f->db, f->repo, &o, &info));
}

/* The history: a full backup, then BATCHES batches, log shipped after every few, an incremental
 * backup twice on the way; the model after each batch in f->pts. */
static void build_history(struct fx *f)
{
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.sync = JVDB_SYNC_NEVER;
    assert_ok(jvdb_db_create(f->env, "hist", &o, &f->db));
    int ver[NIDS] = { 0 }, next = 0;
    struct point p;
    for (int i = 0; i < 10; i++) write_batch(f->db, ver, &next, &p);
    backup(f, JVDB_BACKUP_FULL);
    jvdb_stats st;
    assert_ok(jvdb_stats_get(f->db, &st));
    f->base_lsn = st.last_lsn;
    f->base_ns = now_ns();
    f->pts[0] = p;
    f->pts[0].lsn = st.last_lsn;
    f->npts = 1;
    for (int i = 0; i < BATCHES; i++) {
        write_batch(f->db, ver, &next, &f->pts[f->npts++]);
        if (rnd(4) == 0) ship(f);
        if (i == BATCHES / 3 || i == 2 * BATCHES / 3) {
            ship(f);
            backup(f, JVDB_BACKUP_INCREMENTAL);
        }
        /* Batches apart in time, so a target between two of them is unambiguous. */
        if (rnd(3) == 0) usleep(300);
    }
    ship(f);
}

/* Restores "hist" at a target as "at" and returns it (the caller drops it). */
static int restore_at(struct fx *f, uint64_t lsn, int64_t t, int latest, jvdb_db **out, jvdb_restore_result *res)
{
    jvdb_restore_options ro = { .as_name = "at", .force = 1, .result = res, .database = "hist" };
    ro.to_lsn = lsn;
    ro.to_time_ns = t;
    ro.latest = latest;
    int rc = jvdb_backup_restore(f->env, f->repo, NULL, &ro, out);
    if (!rc) jvdb_free(res->database_description);
    return rc;
}

/* ------------------------------------------------------------------ tests */

static void test_restore_to_points(void **state)
{
    struct fx *f = *state;
    build_history(f);
    jvdb_restore_result res;
    jvdb_db *r;
    /* latest = everything. */
    assert_ok(restore_at(f, 0, 0, 1, &r, &res));
    check_state(r, f->pts[f->npts - 1].ver, "latest");
    assert_int_equal(res.lsn, f->pts[f->npts - 1].lsn);
    assert_true(res.log_objects > 0);
    /* Many random LSNs: exactly the batches whose last LSN is <= N. */
    uint64_t first = f->pts[0].lsn, last = f->pts[f->npts - 1].lsn;
    for (int round = 0; round < 40; round++) {
        uint64_t n = first + rnd((uint32_t)(last - first + 1));
        size_t k = 0;
        while (k + 1 < f->npts && f->pts[k + 1].lsn <= n) k++;
        char what[64];
        snprintf(what, sizeof what, "to LSN %llu", (unsigned long long)n);
        assert_ok(restore_at(f, n, 0, 0, &r, &res));
        check_state(r, f->pts[k].ver, what);
        if (res.lsn != f->pts[k].lsn)
            fail_msg("%s: restored to LSN %llu, want %llu", what, (unsigned long long)res.lsn,
                     (unsigned long long)f->pts[k].lsn);
    }
    /* Many random times between two batches: exactly the batches acknowledged by then. */
    for (int round = 0; round < 40; round++) {
        size_t k = 1 + rnd((uint32_t)(f->npts - 2));
        if (f->pts[k + 1].t0 <= f->pts[k].t1) continue; /* no gap between them */
        int64_t t = f->pts[k].t1 + (f->pts[k + 1].t0 - f->pts[k].t1) / 2;
        char what[64];
        snprintf(what, sizeof what, "to time after batch %zu", k);
        assert_ok(restore_at(f, 0, t, 0, &r, &res));
        check_state(r, f->pts[k].ver, what);
        assert_int_equal(res.lsn, f->pts[k].lsn);
    }
    /* Outside the window: a clear error naming it; nothing restored. */
    assert_ok(jvdb_db_drop(f->env, "at"));
    assert_int_equal(restore_at(f, last + 5, 0, 0, &r, &res), JVDB_ENOTFOUND);
    assert_non_null(strstr(jvdb_errmsg(), "outside the restorable window of 'hist'"));
    assert_int_equal(restore_at(f, 0, f->base_ns - 3600 * 1000000000ll, 0, &r, &res), JVDB_ENOTFOUND);
    assert_non_null(strstr(jvdb_errmsg(), "restorable window"));
    assert_int_equal(restore_at(f, 0, now_ns() + 3600 * 1000000000ll, 0, &r, &res), JVDB_ENOTFOUND);
    assert_int_equal(restore_at(f, 3, 0, 1, &r, &res), JVDB_EINVAL); /* two targets */
    jvdb_restore_window w;
    assert_ok(jvdb_backup_window(f->repo, "hist", &w));
    assert_int_equal(w.latest_lsn, last);
    assert_int_equal(w.earliest_lsn, first);
    assert_int_equal(w.backups, 3);
}

/* Every log object file under dir (recursively), into names[] (at most cap). */
static size_t find_logs(const char *dir, char (*names)[1024], size_t cap, size_t n)
{
    DIR *d = opendir(dir);
    if (!d) return n;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t l = strlen(e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        if (S_ISDIR(st.st_mode)) n = find_logs(p, names, cap, n);
        else if (l > 4 && !strcmp(e->d_name + l - 4, ".jvl")) snprintf(names[n++], sizeof names[0], "%s", p);
    }
    closedir(d);
    return n;
}

static int name_cmp(const void *a, const void *b) { return strcmp(strrchr(a, '/'), strrchr(b, '/')); }

/* Flips one bit of the byte in the middle of a file. */
static void flip_middle(const char *path)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long off = ftell(fp) / 2;
    fseek(fp, off, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, off, SEEK_SET);
    fputc(c ^ 0x20, fp);
    fclose(fp);
}

static void test_tampered_log(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    build_history(f);
    char names[64][1024];
    size_t n = find_logs(f->repo_spec, names, 64, 0);
    assert_true(n > 2);
    qsort(names, n, sizeof names[0], name_cmp);
    /* One byte of the last object (on the way to latest), then of the first (on the way to an early
     * LSN): each restore fails and creates nothing. */
    const size_t victims[2] = { n - 1, 0 };
    for (int v = 0; v < 2; v++) {
        const char *victim = names[victims[v]];
        flip_middle(victim);
        unsigned long long to = 0;
        const char *base = strrchr(victim, '/') + 1;
        sscanf(base + 21, "%llu", &to); /* "<from:020>-<to:020>-..." */
        jvdb_restore_result res;
        jvdb_db *r = NULL;
        int rc = restore_at(f, v ? to : 0, 0, !v, &r, &res);
        if (rc != JVDB_ECORRUPT) fail_msg("restore with a flipped byte in %s: rc %d (%s)", victim, rc, jvdb_errmsg());
        assert_non_null(strstr(jvdb_errmsg(), "nothing was written"));
        jvdb_db *x;
        assert_int_equal(jvdb_db_open(f->env, "at", &x), JVDB_ENOTFOUND);
        flip_middle(victim); /* back as it was: the next one is the only damage */
    }
}

static void test_follow(void **state)
{
    struct fx *f = *state;
    build_history(f);
    jvdb_env *renv;
    assert_ok(jvdb_env_open(f->data2, &renv));
    jvdb_restore_options ro = { .database = "hist", .replica = 1 };
    jvdb_db *rep;
    assert_ok(jvdb_backup_restore(renv, f->repo, NULL, &ro, &rep));
    check_state(rep, f->pts[f->npts - 1].ver, "replica seeded");
    char src[JVDB_MAX_NAME_LEN + 1];
    int64_t inc;
    assert_ok(jvdb_backup_replica_of(rep, src, &inc));
    assert_string_equal(src, "hist");
    jvdb_follow_result fr;
    assert_ok(jvdb_backup_follow(rep, f->repo, &fr));
    assert_int_equal(fr.records, 0);
    assert_false(fr.reseed);
    /* More writes on the primary, shipped: the replica follows, batch for batch. */
    int ver[NIDS], next = 100000;
    memcpy(ver, f->pts[f->npts - 1].ver, sizeof ver);
    struct point p;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 7; i++) write_batch(f->db, ver, &next, &p);
        ship(f);
        assert_ok(jvdb_backup_follow(rep, f->repo, &fr));
        assert_false(fr.reseed);
        assert_int_equal(fr.lsn, p.lsn);
        assert_int_equal(fr.repo_lsn, p.lsn);
        assert_true(fr.last_time_ns >= p.t0 && fr.last_time_ns <= p.t1);
        check_state(rep, ver, "replica following");
    }
    /* Closed and reopened (a restart): it goes on from its own last LSN, nothing repeated. */
    jvdb_env_close(renv);
    assert_ok(jvdb_env_open(f->data2, &renv));
    assert_ok(jvdb_db_open(renv, "hist", &rep));
    for (int i = 0; i < 3; i++) write_batch(f->db, ver, &next, &p);
    ship(f);
    jvdb_stats before;
    assert_ok(jvdb_stats_get(rep, &before));
    assert_ok(jvdb_backup_follow(rep, f->repo, &fr));
    assert_int_equal(fr.lsn, p.lsn);
    /* Every record after its last LSN, once: as many records as LSNs. */
    assert_int_equal(fr.records, p.lsn - before.last_lsn);
    check_state(rep, ver, "replica after a restart");
    assert_ok(jvdb_backup_follow(rep, f->repo, &fr));
    assert_int_equal(fr.records, 0);
    /* A new database of that name in the repository: the replica must be re-seeded. */
    assert_ok(jvdb_db_drop(f->env, "hist"));
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    assert_ok(jvdb_db_create(f->env, "hist", &o, &f->db));
    int ver2[NIDS] = { 0 };
    write_batch(f->db, ver2, &next, &p);
    backup(f, JVDB_BACKUP_FULL);
    assert_ok(jvdb_backup_follow(rep, f->repo, &fr));
    assert_true(fr.reseed);
    assert_non_null(strstr(fr.reason, "newer database"));
    /* A promoted replica is a primary that keeps its source's history. */
    assert_ok(jvdb_backup_promote(rep));
    assert_int_equal(jvdb_backup_replica_of(rep, NULL, NULL), JVDB_ENOTFOUND);
    assert_int_equal(jvdb_backup_follow(rep, f->repo, &fr), JVDB_ENOTFOUND);
    jvdb_env_close(renv);
}

/* An encrypted repository (issue 13: "encrypted repositories pass the same suite"): the log is
 * sealed, and restores to points and a replica read it back exactly. */
static void test_encrypted(void **state)
{
    struct fx *f = *state;
    char key[600];
    snprintf(key, sizeof key, "%s/repo.key", f->dir);
    FILE *fp = fopen(key, "w");
    assert_non_null(fp);
    fputs("pitr-test-key-0123456789abcdef0123456789abcdef\n", fp);
    fclose(fp);
    jvdb_repo_close(f->repo);
    jvdb_repo_options o = { 0 };
    o.key_file = key;
    assert_ok(jvdb_repo_open(f->repo_spec, &o, &f->repo));
    build_history(f);
    jvdb_restore_result res;
    jvdb_db *r;
    assert_ok(restore_at(f, 0, 0, 1, &r, &res));
    check_state(r, f->pts[f->npts - 1].ver, "encrypted, latest");
    assert_true(res.log_objects > 0);
    for (int round = 0; round < 10; round++) {
        size_t k = 1 + rnd((uint32_t)(f->npts - 1));
        assert_ok(restore_at(f, f->pts[k].lsn, 0, 0, &r, &res));
        check_state(r, f->pts[k].ver, "encrypted, to an LSN");
    }
    /* Without the key: a clear error, never garbage. */
    jvdb_repo *plain;
    int rc = jvdb_repo_open(f->repo_spec, NULL, &plain);
    if (rc == JVDB_OK) {
        jvdb_restore_options ro = { .as_name = "nokey", .database = "hist" };
        rc = jvdb_backup_restore(f->env, plain, NULL, &ro, &r);
        jvdb_repo_close(plain);
    }
    assert_int_not_equal(rc, JVDB_OK);
}

/* One of the concurrent writers of test_times_rise_with_lsns. */
static void *stamp_writer(void *arg)
{
    jvdb_db *db = arg;
    float v[DIM];
    char id[32];
    for (int i = 0; i < 400; i++) {
        snprintf(id, sizeof id, "t%p-%d", (void *)&v, i);
        tu_vector(v, DIM, (uint64_t)i, 1);
        assert_ok(jvdb_put(db, id, v, DIM, NULL, NULL));
    }
    return NULL;
}

struct stamp_check {
    uint64_t lsn;
    int64_t time_ns;
    uint64_t records, backwards;
};

/* Counts records whose time_ns is earlier than that of a record before them in LSN order. */
static int stamp_chunk(void *arg, const void *recs, size_t len, size_t nrecs)
{
    struct stamp_check *c = arg;
    (void)nrecs;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        if (h->time_ns < c->time_ns) c->backwards++;
        c->time_ns = h->time_ns;
        c->lsn = h->lsn;
        c->records++;
        off += h->total_len;
    }
    return 0;
}

/* Batches written concurrently carry times that rise with their LSNs (each is stamped when it takes
 * its LSNs), so the batches acknowledged by a time T are a prefix of the log. */
static void test_times_rise_with_lsns(void **state)
{
    struct fx *f = *state;
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.sync = JVDB_SYNC_NEVER;
    assert_ok(jvdb_db_create(f->env, "stamps", &o, &f->db));
    backup(f, JVDB_BACKUP_FULL);
    pthread_t th[6];
    for (int i = 0; i < 6; i++) assert_int_equal(pthread_create(&th[i], NULL, stamp_writer, f->db), 0);
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    ship(f);
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "stamps", &ents, &n));
    struct stamp_check c = { 0, 0, 0, 0 };
    for (size_t i = 0; i < n; i++) assert_ok(wal_read(f->repo, "stamps", &ents[i], DIM, o.metric, stamp_chunk, &c));
    free(ents);
    assert_int_equal(c.records, 2400);
    if (c.backwards)
        fail_msg("%llu of 2400 records carry a time before that of an earlier LSN", (unsigned long long)c.backwards);
}

/* Retention or a log fold removed the log between the first two backups (covered by the second),
 * keeping only the first object after the full backup: the window is two spans (the old one and the
 * one that reaches the latest point), restores inside both equal the model, a target in the hole fails
 * naming the nearest restorable points, and jvdb_backup_verify_log reports the same window. */
static void test_window_with_hole(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    build_history(f);
    jvdb_backup_info *bk;
    size_t nb;
    assert_ok(jvdb_backup_list(f->repo, "hist", &bk, &nb));
    assert_int_equal(nb, 3);
    const uint64_t b1 = bk[0].lsn_to, b2 = bk[1].lsn_to, last = f->pts[f->npts - 1].lsn;
    char b2_id[JVDB_BACKUP_ID_MAX];
    snprintf(b2_id, sizeof b2_id, "%s", bk[1].id);
    jvdb_free(bk);
    static char names[256][1024];
    size_t n = find_logs(f->repo_spec, names, 256, 0), removed = 0;
    qsort(names, n, sizeof names[0], name_cmp);
    unsigned long long keep_to = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned long long from = 0, to = 0;
        sscanf(strrchr(names[i], '/') + 1, "%llu-%llu", &from, &to);
        if (i == 0) keep_to = to;
        else if (to <= b2) removed += unlink(names[i]) == 0;
    }
    assert_true(removed > 0);
    assert_true(keep_to > b1 && keep_to < b2);

    jvdb_restore_window w;
    assert_ok(jvdb_backup_window(f->repo, "hist", &w));
    assert_int_equal(w.nspans, 2);
    assert_int_equal(w.spans_omitted, 0);
    assert_int_equal(w.spans[0].earliest_lsn, b1);
    assert_int_equal(w.spans[0].latest_lsn, keep_to);
    assert_int_equal(w.spans[1].earliest_lsn, b2);
    assert_int_equal(w.spans[1].latest_lsn, last);
    assert_string_equal(w.spans[1].backup, b2_id);
    assert_int_equal(w.earliest_lsn, b2); /* the contiguous span that reaches the latest point */
    assert_int_equal(w.latest_lsn, last);
    assert_int_equal(w.backups, 3);

    jvdb_restore_result res;
    jvdb_db *r;
    char what[64], near[96];
    snprintf(near, sizeof near, "nearest restorable points are LSN %llu", keep_to);
    int holes = 0, inside = 0;
    for (size_t k = 0; k < f->npts; k++) {
        const uint64_t lsn = f->pts[k].lsn;
        if (lsn > keep_to && lsn < b2) { /* in the hole: by LSN and by a time inside the batch */
            snprintf(what, sizeof what, "LSN %llu in the hole", (unsigned long long)lsn);
            if (restore_at(f, lsn, 0, 0, &r, &res) != JVDB_ENOTFOUND) fail_msg("%s: restored", what);
            if (!strstr(jvdb_errmsg(), "cannot be restored") || !strstr(jvdb_errmsg(), near))
                fail_msg("%s: %s", what, jvdb_errmsg());
            if (holes++ % 3 == 0 && f->pts[k].t1 > w.spans[0].latest_time_ns &&
                f->pts[k].t1 < w.spans[1].earliest_time_ns) {
                assert_int_equal(restore_at(f, 0, f->pts[k].t1, 0, &r, &res), JVDB_ENOTFOUND);
                assert_non_null(strstr(jvdb_errmsg(), "cannot be restored"));
            }
            jvdb_db *x;
            assert_int_equal(jvdb_db_open(f->env, "at", &x), JVDB_ENOTFOUND);
            continue;
        }
        if (lsn < b1 || (inside++ % 4 && lsn != keep_to && lsn != b2 && lsn != last)) continue;
        snprintf(what, sizeof what, "to LSN %llu", (unsigned long long)lsn);
        assert_ok(restore_at(f, lsn, 0, 0, &r, &res));
        check_state(r, f->pts[k].ver, what);
        assert_int_equal(res.lsn, lsn);
        assert_ok(jvdb_db_drop(f->env, "at"));
    }
    assert_true(holes > 0);
    /* Before everything: outside, and the message lists the old span too. */
    assert_int_equal(restore_at(f, b1 - 1, 0, 0, &r, &res), JVDB_ENOTFOUND);
    assert_non_null(strstr(jvdb_errmsg(), "outside the restorable window of 'hist'"));
    assert_non_null(strstr(jvdb_errmsg(), "restorable: LSN"));

    /* verify_log: the same window (one rule), its hole a note. */
    jvdb_log_verify_result lv;
    assert_ok(jvdb_backup_verify_log(f->repo, "hist", NULL, NULL, &lv));
    assert_int_equal(lv.holes, 1);
    assert_int_equal(lv.window.nspans, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(lv.window.spans[i].earliest_lsn, w.spans[i].earliest_lsn);
        assert_int_equal(lv.window.spans[i].latest_lsn, w.spans[i].latest_lsn);
    }
    assert_int_equal(lv.window.earliest_lsn, w.earliest_lsn);
    assert_int_equal(lv.window.latest_lsn, w.latest_lsn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restore_to_points, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_log, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_follow, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_times_rise_with_lsns, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_window_with_hole, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

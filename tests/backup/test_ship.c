/*
 * test_ship.c — continuous backup, the shipping side (issue 13): log objects written by
 * jvdb_backup_ship and read back with wal_list / wal_path / wal_read (src/backup/wal.h).
 *
 * The property checked everywhere: following the log from its base backup gives every record with
 * an LSN after the base exactly once, in order, byte for byte as the database wrote it (superseded
 * versions and tombstones included), whole batches only.  Also: the lease fences a second shipper,
 * a repository failing in the middle of a shipment (before or after the object lands) leaves no gap
 * and no duplicate, compaction before shipping re-bases the log on an incremental, a changed byte
 * is caught, backup readers refuse a log archive, encrypted repositories seal objects to their path.
 *
 * Like test_backup.c, JVDB_TEST_REPO=s3://... runs it against S3 (cases reaching into files skip).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/wal.h"
#include "core/err.h"
#include "store/db.h"
#include "store/readpath.h"
#include "store/record.h"
#include "test_util.h"

#define DIM 8

struct fx {
    char *dir;
    char data[512];
    char repo_spec[640];
    int s3;
    jvdb_env *env;
    jvdb_repo *repo;
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    f->s3 = tu_repo_spec(f->dir, "ship", f->repo_spec, sizeof f->repo_spec);
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

static jvdb_db *mkdb(struct fx *f, const char *name, uint64_t seg_max)
{
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.sync = JVDB_SYNC_NEVER;
    if (seg_max) o.segment_max_bytes = seg_max;
    jvdb_db *db;
    assert_ok(jvdb_db_create(f->env, name, &o, &db));
    return db;
}

/* A batch of `n` puts of ids base..base+n-1 (version ver). */
static void put_batch(jvdb_db *db, int base, int n, int ver)
{
    jvdb_record recs[16];
    float v[16][DIM];
    char ids[16][32];
    for (int i = 0; i < n; i++) {
        tu_vector(v[i], DIM, (uint64_t)(base + i), (uint64_t)ver);
        snprintf(ids[i], sizeof ids[i], "id-%d", base + i);
        recs[i] = (jvdb_record){ ids[i], v[i], DIM, ver % 2 ? "{\"v\":1}" : NULL };
    }
    assert_ok(jvdb_put_batch(db, recs, (size_t)n, NULL));
}

static void del(jvdb_db *db, int id)
{
    char k[32];
    snprintf(k, sizeof k, "id-%d", id);
    assert_ok(jvdb_delete(db, k, NULL));
}

/* Some traffic: batches, overwrites, deletes. */
static void traffic(jvdb_db *db, int round)
{
    for (int b = 0; b < 6; b++) put_batch(db, b * 5, 1 + (b + round) % 5, round);
    del(db, round % 5);
    put_batch(db, 0, 3, round + 1);
}

static uint64_t visible(jvdb_db *db)
{
    rp_enter();
    uint64_t v = db_snapshot_lsn(db);
    rp_exit();
    return v;
}

/* Reads the log along its path from `base` and checks it against the database's own records: every
 * LSN in (base, upto] exactly once, in order, identical bytes, whole batches.  Returns the records. */
struct follow {
    jvdb_db *db;
    uint64_t next; /* the LSN expected next */
    uint64_t records;
    unsigned last_flags;
};

struct find_ctx {
    uint64_t lsn;
    const struct rec_header *found;
};

/* db_records_after callback: remembers the record with the wanted LSN. */
static int find_fn(void *arg, const struct rec_header *h)
{
    struct find_ctx *c = arg;
    if (h->lsn == c->lsn) c->found = h;
    return 0;
}

/* wal_read callback: every record is the database's record of that LSN, in dense order. */
static int follow_fn(void *arg, const void *recs, size_t len, size_t nrecs)
{
    (void)nrecs;
    struct follow *fo = arg;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        if (h->lsn < fo->next) { /* a spanning first object: records at or below the base are skipped */
            off += h->total_len;
            continue;
        }
        if (h->lsn != fo->next)
            fail_msg("log record LSN %llu, expected %llu", (unsigned long long)h->lsn, (unsigned long long)fo->next);
        struct find_ctx c = { h->lsn, NULL };
        rp_enter();
        assert_ok(db_records_after(fo->db, h->lsn - 1, h->lsn, find_fn, &c));
        if (!c.found) fail_msg("LSN %llu is not in the database", (unsigned long long)h->lsn);
        if (c.found->total_len != h->total_len || memcmp(c.found, h, h->total_len))
            fail_msg("LSN %llu differs from the database's record", (unsigned long long)h->lsn);
        rp_exit();
        fo->next++;
        fo->records++;
        fo->last_flags = h->flags;
        off += h->total_len;
    }
    return 0;
}

static uint64_t check_log(struct fx *f, jvdb_db *db, uint64_t base, uint64_t upto)
{
    struct wal_entry *ents;
    size_t n, *idx, k;
    assert_ok(wal_list(f->repo, jvdb_db_name(db), &ents, &n));
    assert_ok(wal_path(ents, n, db_created_ns(db), base, &idx, &k));
    struct follow fo = { db, base + 1, 0, 0 };
    for (size_t i = 0; i < k; i++) {
        const struct wal_entry *e = &ents[idx[i]];
        assert_true(e->size > 0);
        assert_ok(wal_read(f->repo, jvdb_db_name(db), e, DIM, JVDB_METRIC_L2, follow_fn, &fo));
        assert_int_equal(fo.next - 1, e->lsn_to);
        assert_false(fo.last_flags & REC_FLAG_MORE);
    }
    if (fo.next - 1 != upto)
        fail_msg("the log from %llu ends at %llu, expected %llu", (unsigned long long)base,
                 (unsigned long long)fo.next - 1, (unsigned long long)upto);
    free(idx);
    free(ents);
    return fo.records;
}

/* The lsn_to of the newest backup of the database (the log's base in these tests). */
static uint64_t newest_backup_lsn(struct fx *f, const char *db)
{
    jvdb_backup_info *v;
    size_t n;
    assert_ok(jvdb_backup_list(f->repo, db, &v, &n));
    assert_true(n > 0);
    uint64_t lsn = v[n - 1].lsn_to;
    jvdb_free(v);
    return lsn;
}

/* ------------------------------------------------------------------ cases */

/* First shipment makes a full backup; then every write, superseded or deleted, is in the log. */
static void test_ship_basic(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "s", 0);
    traffic(db, 1);
    jvdb_shipper *sh;
    assert_ok(jvdb_shipper_new(NULL, &sh));
    jvdb_ship_options o = { .shipper = sh };
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_non_null(strstr(r.note, "made full backup"));
    uint64_t base = newest_backup_lsn(f, "s");
    assert_int_equal(r.shipped_lsn, base);
    assert_int_equal(r.objects, 0);
    for (int round = 2; round < 6; round++) {
        traffic(db, round);
        assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
        assert_int_equal(r.objects, 1);
        assert_int_equal(r.shipped_lsn, visible(db));
        assert_int_equal(r.pending_bytes, 0);
        assert_true(r.stored_bytes > 0 && r.stored_bytes < r.bytes);
    }
    /* nothing new: nothing written */
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_int_equal(r.objects, 0);
    uint64_t recs = check_log(f, db, base, visible(db));
    assert_int_equal(recs, visible(db) - base);
    /* pending is reported before shipping */
    traffic(db, 9);
    uint64_t shipped = r.shipped_lsn;
    jvdb_shipper_free(sh, f->repo, "s");
    /* a new shipper (a restart) finds the log's end by listing and continues it */
    assert_ok(jvdb_shipper_new(NULL, &sh));
    o.shipper = sh;
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_int_equal(r.objects, 1);
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "s", &ents, &n));
    assert_int_equal(ents[n - 1].lsn_from, shipped);
    assert_int_equal(ents[n - 1].epoch, 2); /* the released lease was taken with epoch + 1 */
    free(ents);
    check_log(f, db, base, visible(db));
    /* small objects: a shipment of many batches makes several, each whole batches */
    traffic(db, 10);
    traffic(db, 11);
    o.max_object_bytes = 1;
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_true(r.objects > 5);
    check_log(f, db, base, visible(db));
    /* the repository-wide listing finds every database however many log objects one holds (S3: one
     * request per database, starting after the previous one's keys) */
    jvdb_db *db2 = mkdb(f, "s2", 0), *db3 = mkdb(f, "r", 0);
    traffic(db2, 1);
    traffic(db3, 1);
    assert_ok(jvdb_backup_ship(db2, f->repo, NULL, &r));
    assert_ok(jvdb_backup_ship(db3, f->repo, NULL, &r));
    char **names;
    size_t nn;
    assert_ok(f->repo->ops->list_databases(f->repo, &names, &nn));
    assert_int_equal(nn, 3);
    assert_string_equal(names[0], "r");
    assert_string_equal(names[1], "s");
    assert_string_equal(names[2], "s2");
    jvdb_free_names(names, nn);
    if (!f->s3) {
        /* the temp file of a write that died before its rename goes once it is old */
        char tmp[1200];
        snprintf(tmp, sizeof tmp, "%s/s/log/%lld/x.jvl.tmp", f->repo_spec, (long long)db_created_ns(db));
        FILE *fp = fopen(tmp, "w");
        assert_non_null(fp);
        fclose(fp);
        struct timespec old[2] = { { time(NULL) - 7200, 0 }, { time(NULL) - 7200, 0 } };
        assert_int_equal(utimensat(AT_FDCWD, tmp, old, 0), 0);
        jvdb_retention_result rr;
        assert_ok(jvdb_backup_retain(f->repo, "s", 1, 0, &rr));
        assert_int_equal(rr.backups_deleted + rr.log_objects_deleted, 0); /* nothing older than a 1970 window */
        assert_int_equal(access(tmp, F_OK), -1);
    }
    jvdb_shipper_free(sh, f->repo, "s");
}

struct loader {
    jvdb_db *db;
    atomic_int stop;
};

/* Writes traffic rounds until told to stop. */
static void *loader_main(void *arg)
{
    struct loader *l = arg;
    for (int round = 20; !atomic_load(&l->stop); round++) traffic(l->db, round);
    return NULL;
}

/* Shipping, writing and compacting at once (what the server does): the log is still every write
 * once, and TSan sees the shipper read segments the writer appends to and compaction swaps. */
static void test_ship_under_load(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "load", 8192);
    traffic(db, 1);
    jvdb_shipper *sh;
    assert_ok(jvdb_shipper_new(NULL, &sh));
    jvdb_ship_options o = { .shipper = sh };
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    uint64_t base = r.shipped_lsn;
    struct loader l = { db, 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, loader_main, &l), 0);
    jvdb_compact_options co = { 0 };
    co.force = 1;
    for (int i = 0; i < 40; i++) {
        assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
        if (i % 5 == 4) {
            int rc = jvdb_compact(db, &co, NULL);
            if (rc != JVDB_OK && rc != JVDB_EBUSY) fail_msg("compaction: %s", jvdb_errmsg());
        }
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_string_equal(r.note, "");
    check_log(f, db, base, visible(db));
    jvdb_shipper_free(sh, f->repo, "load");
}

/* Names: parse/format round trip, and what is refused. */
static void test_names(void **state)
{
    (void)state;
    char name[WAL_NAME_MAX];
    wal_name(name, 1764460800123456789ll, 5, 17, 1000, 2000, 3);
    assert_string_equal(name, "1764460800123456789/00000000000000000005-00000000000000000017-0000000000000001000-"
                              "0000000000000002000-0000000003.jvl");
    struct wal_entry e;
    assert_int_equal(wal_parse_name(name, &e), 0);
    assert_int_equal(e.lsn_from, 5);
    assert_int_equal(e.lsn_to, 17);
    assert_int_equal(e.epoch, 3);
    assert_int_equal(e.first_time_ns, 1000);
    assert_true(wal_parse_name("1/00000000000000000005-00000000000000000005-0000000000000001000-0000000000000002000-"
                               "0000000003.jvl",
                               &e) != 0); /* empty range */
    assert_true(wal_parse_name("LEASE", &e) != 0);
    assert_true(wal_parse_name("1/x.jvl", &e) != 0);
    /* the path: highest epoch wins where two start together, lower epochs ignored afterwards */
    struct wal_entry v[5];
    wal_name(name, 7, 10, 20, 1, 2, 1);
    wal_parse_name(name, &v[0]);
    wal_name(name, 7, 20, 30, 3, 4, 1);
    wal_parse_name(name, &v[1]);
    wal_name(name, 7, 20, 25, 3, 4, 2);
    wal_parse_name(name, &v[2]);
    wal_name(name, 7, 25, 40, 5, 6, 2);
    wal_parse_name(name, &v[3]);
    wal_name(name, 7, 30, 50, 5, 6, 1); /* continues the fenced epoch 1: ignored */
    wal_parse_name(name, &v[4]);
    struct wal_entry sorted[5];
    memcpy(sorted, v, sizeof v);
    size_t *idx, k;
    /* as wal_list sorts: (incarnation, lsn_from, epoch desc) */
    struct wal_entry t = sorted[1];
    sorted[1] = sorted[2];
    sorted[2] = t;
    assert_ok(wal_path(sorted, 5, 7, 10, &idx, &k));
    assert_int_equal(k, 3);
    assert_int_equal(sorted[idx[2]].lsn_to, 40);
    free(idx);
    /* a base in the middle of an object: that object spans it */
    assert_ok(wal_path(sorted, 5, 7, 15, &idx, &k));
    assert_int_equal(k, 3);
    assert_int_equal(sorted[idx[0]].lsn_from, 10);
    free(idx);
    /* another incarnation, or a base after the end: nothing */
    assert_ok(wal_path(sorted, 5, 8, 10, &idx, &k));
    assert_int_equal(k, 0);
    assert_ok(wal_path(sorted, 5, 7, 40, &idx, &k));
    assert_int_equal(k, 0); /* 30-50 is of epoch 1, fenced by 20-25 of epoch 2 */
    assert_ok(wal_path(sorted, 5, 7, 30, &idx, &k));
    assert_int_equal(k, 1);
    assert_int_equal(sorted[idx[0]].lsn_from, 25);
    free(idx);
}

/* A repository that fails on command: before writing an object, or after it landed. */
struct faulty {
    struct jvdb_repo base;
    struct repo_ops ops;
    jvdb_repo *inner;
    int fail_before, fail_after; /* fail the next put of a .jvl this way */
};

static int faulty_put(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len)
{
    struct faulty *fr = (struct faulty *)r;
    int obj = strstr(name, ".jvl") != NULL;
    if (obj && fr->fail_before) {
        fr->fail_before = 0;
        return err_set(JVDB_EIO, "injected: %s not written", name);
    }
    int rc = fr->inner->ops->obj_put(fr->inner, db, name, buf, len);
    if (!rc && obj && fr->fail_after) {
        fr->fail_after = 0;
        return err_set(JVDB_EIO, "injected: %s written, but the answer was lost", name); /* a timed-out PUT */
    }
    return rc;
}

/* Each repo op of the wrapper forwards to the real repository. */
static int fw_init(jvdb_repo *r) { return ((struct faulty *)r)->inner->ops->init(((struct faulty *)r)->inner); }
static int fw_list_databases(jvdb_repo *r, char ***names, size_t *n)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->list_databases(in, names, n);
}
static int fw_list_backups(jvdb_repo *r, const char *db, struct repo_entry **out, size_t *n)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->list_backups(in, db, out, n);
}
static int fw_read_meta(jvdb_repo *r, const char *db, const char *id, char **buf, size_t *len)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->read_meta(in, db, id, buf, len);
}
static int fw_open_data(jvdb_repo *r, const char *db, const char *id, struct repo_reader **out)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->open_data(in, db, id, out);
}
static int fw_stage_begin(jvdb_repo *r, const char *db, const char *id, struct repo_stage **out)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->stage_begin(in, db, id, out);
}
static void fw_cleanup(jvdb_repo *r, const char *db, int64_t age)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    in->ops->cleanup(in, db, age);
}
static int fw_obj_list(jvdb_repo *r, const char *db, const char *prefix, repo_obj_fn fn, void *arg)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->obj_list(in, db, prefix, fn, arg);
}
static int fw_obj_get(jvdb_repo *r, const char *db, const char *name, char **buf, size_t *len)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->obj_get(in, db, name, buf, len);
}

static int fw_obj_delete(jvdb_repo *r, const char *db, const char *name)
{
    jvdb_repo *in = ((struct faulty *)r)->inner;
    return in->ops->obj_delete(in, db, name);
}

/* Wraps `inner`: every op forwards, obj_put fails on command, and there is no exclusive create (like a store
 * that cannot promise one: the lease's epochs are then claimed by listing). */
static void faulty_init(struct faulty *fr, jvdb_repo *inner)
{
    memset(fr, 0, sizeof *fr);
    fr->inner = inner;
    fr->ops = *inner->ops;
    fr->ops.init = fw_init;
    fr->ops.list_databases = fw_list_databases;
    fr->ops.list_backups = fw_list_backups;
    fr->ops.read_meta = fw_read_meta;
    fr->ops.open_data = fw_open_data;
    fr->ops.stage_begin = fw_stage_begin;
    fr->ops.cleanup = fw_cleanup;
    fr->ops.obj_list = fw_obj_list;
    fr->ops.obj_get = fw_obj_get;
    fr->ops.obj_put = faulty_put;
    fr->ops.obj_delete = fw_obj_delete;
    fr->ops.obj_create = NULL;
    fr->base.ops = &fr->ops;
    fr->base.spec = inner->spec;
}

/* A repository failing in the middle of shipments, either way: no gap, no duplicate. */
static void test_ship_faults(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "fault", 0);
    struct faulty fr;
    faulty_init(&fr, f->repo);
    jvdb_shipper *sh;
    assert_ok(jvdb_shipper_new(NULL, &sh));
    jvdb_ship_options o = { .shipper = sh };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, &fr.base, &o, &r));
    uint64_t base = r.shipped_lsn;
    for (int round = 2; round < 12; round++) {
        traffic(db, round);
        if (round % 3 == 0) fr.fail_before = 1;
        if (round % 3 == 1) fr.fail_after = 1;
        int rc = jvdb_backup_ship(db, &fr.base, &o, &r);
        if (round % 3 == 2) assert_ok(rc);
        else {
            assert_int_equal(rc, JVDB_EIO);
            /* the failed shipment still reports its backlog */
            assert_true(r.pending_bytes > 0);
            assert_true(r.oldest_unshipped_ns > 0);
            assert_true(r.lag_seconds > 0);
        }
    }
    assert_ok(jvdb_backup_ship(db, &fr.base, &o, &r));
    assert_int_equal(r.shipped_lsn, visible(db));
    check_log(f, db, base, visible(db));
    /* and there is no second object starting where another does */
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "fault", &ents, &n));
    for (size_t i = 1; i < n; i++) assert_true(ents[i].lsn_from != ents[i - 1].lsn_from);
    free(ents);
    jvdb_shipper_free(sh, f->repo, "fault");
}

/* A backlog past its limit while the repository fails: the gap becomes an incremental backup. */
static void test_ship_backlog_overflow(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "over", 0);
    struct faulty fr;
    faulty_init(&fr, f->repo);
    jvdb_shipper *sh;
    assert_ok(jvdb_shipper_new(NULL, &sh));
    jvdb_ship_options o = { .shipper = sh, .backlog_limit = 1000 };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, &fr.base, &o, &r));
    traffic(db, 2);
    fr.fail_before = 1;
    assert_int_equal(jvdb_backup_ship(db, &fr.base, &o, &r), JVDB_EIO);
    assert_int_equal(r.overflow, 1);
    json_t *pin = db_manifest_extra(db, "log_shipping");
    assert_null(pin); /* compaction is free again */
    traffic(db, 3);
    assert_ok(jvdb_backup_ship(db, &fr.base, &o, &r));
    assert_non_null(strstr(r.note, "incremental"));
    assert_int_equal(r.overflow, 0);
    uint64_t base = newest_backup_lsn(f, "over");
    traffic(db, 4);
    assert_ok(jvdb_backup_ship(db, &fr.base, &o, &r));
    check_log(f, db, base, visible(db));
    pin = db_manifest_extra(db, "log_shipping");
    assert_non_null(pin);
    json_decref(pin);
    jvdb_shipper_free(sh, f->repo, "over");
}

/* Compaction before shipping started dropped superseded records: the log re-bases on an
 * incremental instead of leaving a hole. */
static void test_ship_gap_rebases(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "gap", 4096);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    jvdb_backup_info bi;
    traffic(db, 1);
    assert_ok(jvdb_backup_create(db, f->repo, &bo, &bi));
    for (int i = 0; i < 5; i++) traffic(db, 2 + i);
    jvdb_compact_options co = { 0 };
    co.force = 1;
    co.full = 1;
    jvdb_compact_stats cs;
    assert_ok(jvdb_compact(db, &co, &cs));
    assert_true(cs.records_dropped > 0);
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    assert_non_null(strstr(r.note, "compacted away"));
    uint64_t base = newest_backup_lsn(f, "gap");
    assert_true(base > bi.lsn_to);
    traffic(db, 8);
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    check_log(f, db, base, visible(db));
}

/* Compaction between shipments keeps what the log still needs (the MANIFEST's shipped LSN), and
 * still reclaims what it has shipped. */
static void test_compaction_keeps_log(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "keep", 4096);
    for (int i = 1; i < 6; i++) traffic(db, i);
    jvdb_shipper *sh;
    assert_ok(jvdb_shipper_new(NULL, &sh));
    jvdb_ship_options o = { .shipper = sh };
    jvdb_ship_result r;
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    uint64_t base = r.shipped_lsn;
    assert_int_equal(db_ship_pin(db), base); /* recorded when shipping starts */
    jvdb_compact_options co = { 0 };
    co.force = 1;
    co.full = 1;
    jvdb_compact_stats cs;
    for (int round = 6; round < 12; round++) {
        traffic(db, round);
        if (round % 2) assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
        assert_ok(jvdb_compact(db, &co, &cs));
        if (round == 6) assert_true(cs.records_dropped > 0); /* what was shipped before still goes */
    }
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_string_equal(r.note, ""); /* no re-base: nothing was missing */
    check_log(f, db, base, visible(db));
    /* a pin of another incarnation holds nothing back */
    json_t *other = json_pack("{s:I, s:I}", "shipped_lsn", (json_int_t)1, "incarnation", (json_int_t)7);
    assert_ok(db_set_manifest_extra(db, DB_SHIP_PIN_KEY, other));
    assert_int_equal(db_ship_pin(db), UINT64_MAX);
    jvdb_shipper_free(sh, f->repo, "keep");
}

/* The lease: a second shipper is refused while the first holds it; after it expires the second
 * takes it (epoch + 1) and the first, at its next shipment, finds itself fenced for good. */
static void test_ship_lease(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "lease", 0);
    jvdb_shipper *a, *b;
    assert_ok(jvdb_shipper_new("host-a:1:0000000000000001", &a));
    assert_ok(jvdb_shipper_new("host-b:2:0000000000000002", &b));
    jvdb_ship_options oa = { .shipper = a, .lease_ns = 300000000ll }, ob = { .shipper = b, .lease_ns = 300000000ll };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    traffic(db, 2);
    assert_err(jvdb_backup_ship(db, f->repo, &ob, &r), JVDB_EBUSY, "host-a:1:0000000000000001");
    assert_int_equal(r.fenced, 1);
    struct wal_lease l;
    assert_ok(wal_lease_read(f->repo, "lease", &l));
    assert_int_equal(l.epoch, 1);
    struct timespec ts = { 0, 400000000 };
    nanosleep(&ts, NULL);
    assert_ok(jvdb_backup_ship(db, f->repo, &ob, &r));
    assert_int_equal(r.objects, 1);
    assert_ok(wal_lease_read(f->repo, "lease", &l));
    assert_int_equal(l.epoch, 2);
    assert_string_equal(l.owner, "host-b:2:0000000000000002");
    traffic(db, 3);
    assert_err(jvdb_backup_ship(db, f->repo, &oa, &r), JVDB_EBUSY, "host-b:2:0000000000000002");
    assert_int_equal(r.fenced, 1);
    assert_err(jvdb_backup_ship(db, f->repo, &oa, &r), JVDB_EBUSY, "stopped");
    assert_ok(jvdb_backup_ship(db, f->repo, &ob, &r));
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "lease", &ents, &n));
    assert_int_equal(n, 2);
    assert_int_equal(ents[1].epoch, 2);
    free(ents);
    jvdb_shipper_free(a, f->repo, "lease"); /* fenced: leaves b's lease alone */
    assert_ok(wal_lease_read(f->repo, "lease", &l));
    assert_true(l.renewed_ns > 0);
    jvdb_shipper_free(b, f->repo, "lease");
    assert_ok(wal_lease_read(f->repo, "lease", &l));
    assert_int_equal(l.renewed_ns, 0);
}

/* A lease removed by hand while its holder ships is written back, not read as a takeover: shipping goes on
 * under the same epoch (it used to fence the holder for good). */
static void test_ship_lease_removed(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "gone", 0);
    jvdb_shipper *a;
    assert_ok(jvdb_shipper_new("host-a:1:0000000000000001", &a));
    jvdb_ship_options o = { .shipper = a, .lease_ns = 300000000ll };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_ok(f->repo->ops->obj_delete(f->repo, "gone", WAL_LEASE_NAME));
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_int_equal(r.fenced, 0);
    assert_int_equal(r.objects, 1);
    struct wal_lease l;
    assert_ok(wal_lease_read(f->repo, "gone", &l));
    assert_string_equal(l.owner, "host-a:1:0000000000000001");
    assert_int_equal(l.epoch, 1);
    check_log(f, db, newest_backup_lsn(f, "gone"), visible(db));
    jvdb_shipper_free(a, f->repo, "gone");
}

/* A copy of the database from before some shipped writes (same incarnation: a data directory put
 * back from a snapshot, or writes lost by sync=never in a crash) writes on and ships: the log goes
 * on from the last object it agrees with, under a new epoch, and the path then is its history. */
static void test_ship_divergent_copy(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    jvdb_db *db = mkdb(f, "div", 0);
    jvdb_shipper *a, *b;
    assert_ok(jvdb_shipper_new("host-a:1:00000000000000aa", &a));
    assert_ok(jvdb_shipper_new("host-b:2:00000000000000bb", &b));
    jvdb_ship_options oa = { .shipper = a, .lease_ns = 1000 }, ob = { .shipper = b, .lease_ns = 1000 };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    uint64_t base = r.shipped_lsn;
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    uint64_t agreed = r.shipped_lsn;
    assert_ok(jvdb_sync(db));
    char cmd[2048], copy[700];
    snprintf(copy, sizeof copy, "%s/copy", f->dir);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", f->data, copy);
    assert_int_equal(system(cmd), 0);
    for (int i = 3; i < 6; i++) {
        traffic(db, i);
        assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    }
    jvdb_env *env2;
    jvdb_db *db2;
    assert_ok(jvdb_env_open(copy, &env2));
    assert_ok(jvdb_db_open(env2, "div", &db2));
    assert_int_equal(visible(db2), agreed);
    for (int i = 7; i < 14; i++) traffic(db2, i); /* other writes under LSNs the log already holds */
    assert_true(visible(db2) > r.shipped_lsn);
    assert_ok(jvdb_backup_ship(db2, f->repo, &ob, &r));
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "div", &ents, &n));
    int from_agreed = 0;
    for (size_t i = 0; i < n; i++) from_agreed |= ents[i].epoch == 2 && ents[i].lsn_from == agreed;
    assert_true(from_agreed);
    free(ents);
    check_log(f, db2, base, visible(db2)); /* every record is the copy's own */
    jvdb_shipper_free(a, NULL, NULL);
    jvdb_shipper_free(b, f->repo, "div");
    jvdb_env_close(env2);
}

/* A shipper fenced for good (another primary took the lease) ships no more: its shipped LSN leaves
 * the MANIFEST, so compaction is not held back for as long as it takes writes (review fix). */
static void test_fenced_unpins(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "unpin", 0);
    jvdb_shipper *a;
    assert_ok(jvdb_shipper_new("host-a:1:00000000000000a1", &a));
    jvdb_ship_options oa = { .shipper = a };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    assert_int_equal(db_ship_pin(db), r.shipped_lsn);
    struct wal_lease l;
    assert_ok(wal_lease_read(f->repo, "unpin", &l));
    struct wal_lease other = { "host-b:2:00000000000000b2", l.epoch + 1, l.renewed_ns };
    assert_ok(wal_lease_write(f->repo, "unpin", &other)); /* a promote elsewhere */
    traffic(db, 2);
    assert_err(jvdb_backup_ship(db, f->repo, &oa, &r), JVDB_EBUSY, "host-b:2:00000000000000b2");
    assert_int_equal(r.fenced, 1);
    assert_int_equal(db_ship_pin(db), UINT64_MAX);
    jvdb_shipper_free(a, f->repo, "unpin");
}

/* db_records_after callback: keeps the first 8 records by LSN (1..8). */
static int keep_fn(void *arg, const struct rec_header *h)
{
    const struct rec_header **v = arg;
    if (h->lsn >= 1 && h->lsn <= 8) v[h->lsn - 1] = h;
    return 0;
}

/* A log object missing an LSN inside its range is refused by wal_read (the archive reader checks
 * ascending order only), and a lease whose epoch would not fit an object name is damaged. */
static void test_reader_checks(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "dense", 0);
    for (int i = 0; i < 5; i++) put_batch(db, i, 1, 0); /* LSNs 1..5, one record per batch */
    const struct rec_header *v[8] = { 0 };
    assert_ok(f->repo->ops->init(f->repo));
    rp_enter();
    assert_ok(db_records_after(db, 0, 5, keep_fn, v));
    const void *recs[3] = { v[0], v[1], v[3] }; /* LSN 3 left out */
    struct wal_entry e;
    int rc = wal_write(f->repo, "dense", db_created_ns(db), 1, 0, DIM, jvdb_db_metric(db), 1, recs, 3, &e);
    rp_exit();
    assert_ok(rc);
    assert_err(wal_read(f->repo, "dense", &e, DIM, jvdb_db_metric(db), NULL, NULL), JVDB_ECORRUPT, "not dense");
    struct wal_lease big = { "host-c:3:00000000000000c3", WAL_EPOCH_MAX, 0 }, l;
    assert_ok(wal_lease_write(f->repo, "dense", &big));
    assert_err(wal_lease_read(f->repo, "dense", &l), JVDB_ECORRUPT, "epoch in 0..");
    assert_err(jvdb_backup_ship(db, f->repo, NULL, NULL), JVDB_ECORRUPT, "damaged");
    big.epoch = 1;
    big.renewed_ns = INT64_MIN; /* "now - renewed_ns" would overflow */
    assert_ok(wal_lease_write(f->repo, "dense", &big));
    assert_err(wal_lease_read(f->repo, "dense", &l), JVDB_ECORRUPT, "renewed_ns >= 0");
    big.renewed_ns = 0;
    big.epoch = WAL_EPOCH_MAX - 1; /* readable, but no successor fits a name */
    assert_ok(wal_lease_write(f->repo, "dense", &big));
    assert_err(jvdb_backup_ship(db, f->repo, NULL, NULL), JVDB_ECORRUPT, "the last one");
}

struct lease_writer {
    jvdb_repo *repo;
    const char *owner;
    atomic_int *failed;
};

/* Thread: writes the lease 300 times as `owner`, counting failed writes. */
static void *lease_writer_main(void *arg)
{
    struct lease_writer *w = arg;
    for (int i = 0; i < 300; i++) {
        struct wal_lease l = { "", (uint64_t)i, 1 };
        snprintf(l.owner, sizeof l.owner, "%s", w->owner);
        if (wal_lease_write(w->repo, "race", &l) != JVDB_OK) atomic_fetch_add(w->failed, 1);
    }
    return NULL;
}

/* Two primaries writing the lease of a directory repository at once (the case it exists for): every
 * write succeeds and the lease is always one whole writer's JSON.  With one shared "LEASE.tmp", one
 * writer's unlink or O_TRUNC cut the other's temp file before its rename (review fix). */
static void test_lease_writers_race(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    assert_ok(f->repo->ops->init(f->repo));
    atomic_int failed = 0;
    struct lease_writer a = { f->repo, "host-a:1:00000000000000a1", &failed };
    struct lease_writer b = { f->repo, "host-b:2:00000000000000b2", &failed };
    jvdb_repo *rb;
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &rb)); /* a handle of its own, as another process has */
    b.repo = rb;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, lease_writer_main, &a);
    pthread_create(&tb, NULL, lease_writer_main, &b);
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        struct wal_lease l;
        int rc = wal_lease_read(f->repo, "race", &l);
        bad += rc != JVDB_OK && rc != JVDB_ENOTFOUND;
        err_clear();
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    jvdb_repo_close(rb);
    assert_int_equal(atomic_load(&failed), 0);
    assert_int_equal(bad, 0);
}

struct taker {
    jvdb_repo *repo;
    char owner[64];
    pthread_barrier_t *go;
    const char *db;
    int rounds;
    int rc[64];
    uint64_t epoch[64];
    char msg[64][160];
};

/* Thread: at each round, after the barrier, tries to take the lease of "claim" (as a second primary starting
 * at the same moment would); notes what it got and what it said. */
static void *taker_main(void *arg)
{
    struct taker *t = arg;
    for (int i = 0; i < t->rounds; i++) {
        pthread_barrier_wait(t->go);
        t->epoch[i] = 0;
        t->rc[i] = wal_lease_take(t->repo, t->db, t->owner, 60ll * 1000000000ll, 0, 0, NULL, &t->epoch[i]);
        snprintf(t->msg[i], sizeof t->msg[i], "%s", t->rc[i] ? jvdb_errmsg() : "");
        err_clear();
        pthread_barrier_wait(t->go);
    }
    return NULL;
}

/* Two takers racing for one repository's lease `rounds` times, each through a handle of its own (wrapped in
 * `wrap` when given: a store without exclusive create).  Exactly one wins each round (at most one, and one in
 * nearly every round, when claims are decided by listing); the loser is refused with a message that says so;
 * the winners' epochs rise by one per round (never one epoch twice). */
static void lease_race(struct fx *f, const char *db, int rounds, int listing)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 3);
    struct taker *t = calloc(2, sizeof *t);
    struct faulty *fw = calloc(2, sizeof *fw);
    jvdb_repo *inner[2];
    for (int i = 0; i < 2; i++) {
        assert_ok(jvdb_repo_open(f->repo_spec, NULL, &inner[i]));
        t[i].repo = inner[i];
        if (listing) {
            faulty_init(&fw[i], inner[i]);
            t[i].repo = &fw[i].base;
        }
        snprintf(t[i].owner, sizeof t[i].owner, "host-%c:%d:00000000000000%02x", 'a' + i, i + 1, i);
        t[i].go = &go;
        t[i].db = db;
        t[i].rounds = rounds;
    }
    if (!listing) assert_non_null(t[0].repo->ops->obj_create);
    else assert_null(t[0].repo->ops->obj_create);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, taker_main, &t[i]);
    int none = 0;
    uint64_t last = 0;
    for (int r = 0; r < rounds; r++) {
        pthread_barrier_wait(&go); /* both take */
        pthread_barrier_wait(&go); /* both done */
        int won = (t[0].rc[r] == JVDB_OK) + (t[1].rc[r] == JVDB_OK);
        if (won == 2)
            fail_msg("round %d: both took the lease, epochs %llu and %llu", r, (unsigned long long)t[0].epoch[r],
                     (unsigned long long)t[1].epoch[r]);
        for (int i = 0; i < 2; i++)
            if (t[i].rc[r]) {
                assert_int_equal(t[i].rc[r], JVDB_EBUSY);
                if (!strstr(t[i].msg[r], "fenced") && !strstr(t[i].msg[r], "not shipping"))
                    fail_msg("round %d: the loser said '%s'", r, t[i].msg[r]);
            }
        if (won == 0) {
            none++;
            continue;
        }
        int w = t[0].rc[r] == JVDB_OK ? 0 : 1;
        assert_true(t[w].epoch[r] > last);
        last = t[w].epoch[r];
        struct wal_lease l;
        assert_ok(wal_lease_read(f->repo, db, &l));
        assert_string_equal(l.owner, t[w].owner);
        assert_int_equal(l.epoch, last);
        l.renewed_ns = 0; /* released: both may take it in the next round */
        assert_ok(wal_lease_write(f->repo, db, &l));
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    if (listing) assert_true(none <= rounds / 4);
    else assert_int_equal(none, 0);
    print_message("lease race (%s): %d rounds, %d without a winner, last epoch %llu\n",
                  listing ? "claims by listing" : "exclusive create", rounds, none, (unsigned long long)last);
    for (int i = 0; i < 2; i++) jvdb_repo_close(inner[i]);
    free(fw);
    free(t);
    pthread_barrier_destroy(&go);
}

/* A lease written back to a lower epoch after ours (a slower taker's late write, or an old holder's renewal racing
 * our takeover) does not fence us: our claimed epoch is the authority and goes back; the one who wrote the
 * lower epoch finds itself fenced at its next check. */
static void test_lease_lower_epoch_written_back(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "low", 0);
    assert_ok(f->repo->ops->init(f->repo));
    jvdb_shipper *a;
    assert_ok(jvdb_shipper_new("host-a:1:0000000000000001", &a));
    jvdb_ship_options o = { .shipper = a, .lease_ns = 60ll * 1000000000ll };
    jvdb_ship_result r;
    struct wal_lease l = { "", 0, 0 };
    snprintf(l.owner, sizeof l.owner, "host-old:9:0000000000000009");
    l.epoch = 4;
    l.renewed_ns = 0; /* an old holder that stopped */
    assert_ok(wal_lease_write(f->repo, "low", &l));
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_ok(wal_lease_read(f->repo, "low", &l));
    assert_int_equal(l.epoch, 5);
    /* the old holder's renewal lands after our takeover */
    snprintf(l.owner, sizeof l.owner, "host-old:9:0000000000000009");
    l.epoch = 4;
    l.renewed_ns = 1;
    assert_ok(wal_lease_write(f->repo, "low", &l));
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, &o, &r));
    assert_int_equal(r.fenced, 0);
    assert_int_equal(r.objects, 1);
    assert_ok(wal_lease_read(f->repo, "low", &l));
    assert_int_equal(l.epoch, 5);
    assert_string_equal(l.owner, "host-a:1:0000000000000001");
    jvdb_shipper_free(a, f->repo, "low");
}

/* A taker that claimed an epoch and died before writing the lease: while its claim is fresh, a takeover is refused
 * (it may be at work), once older than the lease time the next taker claims the epoch after it.  A promote
 * (force) never waits. */
static void test_lease_dead_claim(void **state)
{
    struct fx *f = *state;
    assert_ok(f->repo->ops->init(f->repo));
    uint64_t e = 0;
    assert_ok(wal_lease_take(f->repo, "dead", "host-a:1:00000000000000a1", 1000000000ll, 0, 1, NULL, &e));
    assert_int_equal(e, 1);
    /* host-b claims epoch 2 and dies before its lease write */
    jvdb_repo *rb;
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &rb));
    assert_ok(wal_lease_take(rb, "dead", "host-b:2:00000000000000b2", 1000000000ll, 0, 1, NULL, &e));
    assert_int_equal(e, 2);
    struct wal_lease l = { "", 1, 0 };
    snprintf(l.owner, sizeof l.owner, "host-a:1:00000000000000a1");
    assert_ok(wal_lease_write(f->repo, "dead", &l)); /* as if b's lease write never happened */
    assert_err(wal_lease_take(f->repo, "dead", "host-c:3:00000000000000c3", 1000000000ll, 0, 0, NULL, &e), JVDB_EBUSY,
               "fenced: epoch 2");
    struct timespec ts = { 1, 100000000 };
    nanosleep(&ts, NULL);
    assert_ok(wal_lease_take(f->repo, "dead", "host-c:3:00000000000000c3", 1000000000ll, 0, 0, NULL, &e));
    assert_int_equal(e, 3);
    assert_ok(wal_lease_take(f->repo, "dead", "host-d:4:00000000000000d4", 60ll * 1000000000ll, 1, 1, NULL, &e));
    assert_int_equal(e, 4);
    jvdb_repo_close(rb);
}

/* Two primaries starting at the same moment, many times, on the repository under test (a directory: exclusive
 * create; S3: claims decided by listing), and on a directory seen through a store without exclusive create:
 * never both hold the lease (the old read-then-write takeover let both believe they held one epoch). */
static void test_lease_take_race(void **state)
{
    struct fx *f = *state;
    assert_ok(f->repo->ops->init(f->repo));
    int s3 = f->s3;
    lease_race(f, "claim", s3 ? 12 : 40, s3);
    if (!s3) lease_race(f, "claim2", 24, 1);
}

/* A backup made after the log's last object (the scheduler's, or the CLI's while the server was
 * down) does not make a restarted shipper jump to it: the log goes on from its own end, so a
 * reader or replica coming from the first base finds no gap (review fix). */
static void test_restart_after_backup(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "rb", 0);
    jvdb_shipper *a;
    assert_ok(jvdb_shipper_new(NULL, &a));
    jvdb_ship_options oa = { .shipper = a };
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r)); /* the full backup: the log's base */
    uint64_t base = r.shipped_lsn;
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    uint64_t end = r.shipped_lsn;
    jvdb_shipper_free(a, f->repo, "rb");
    traffic(db, 3);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    bo.type = JVDB_BACKUP_INCREMENTAL;
    jvdb_backup_info info;
    assert_ok(jvdb_backup_create(db, f->repo, &bo, &info));
    assert_true(info.lsn_to > end);
    traffic(db, 4);
    assert_ok(jvdb_shipper_new(NULL, &a));
    oa.shipper = a;
    assert_ok(jvdb_backup_ship(db, f->repo, &oa, &r));
    assert_string_equal(r.note, "");
    check_log(f, db, base, visible(db)); /* from the first base, every LSN once */
    jvdb_shipper_free(a, f->repo, "rb");
}

/* Any changed byte of an object is caught, and backup readers refuse a log archive. */
static void test_tamper_and_type(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "t", 0);
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "t", &ents, &n));
    assert_int_equal(n, 1);
    char path[WAL_NAME_MAX + 8], *buf;
    size_t len;
    snprintf(path, sizeof path, "log/%s", ents[0].name);
    assert_ok(f->repo->ops->obj_get(f->repo, "t", path, &buf, &len));
    /* a full backup's reader refuses the bytes: the header's type is 4 */
    struct backup_meta m;
    memset(&m, 0, sizeof m);
    m.type = JVDB_BACKUP_INCREMENTAL;
    m.dim = DIM;
    m.lsn_from = ents[0].lsn_from;
    m.lsn_to = ents[0].lsn_to;
    struct repo_reader *rd = repo_mem_reader(buf, len);
    struct archive_read_result res;
    assert_err(archive_read(rd, &m, NULL, NULL, NULL, &res), JVDB_ECORRUPT, "header does not match");
    rd->close(rd);
    /* every byte flipped in turn is caught, unless zstd decodes the same records from it (a plain
     * repository keeps no hash of the stored bytes; an encrypted one authenticates every byte) */
    int caught = 0, tried = 0;
    for (size_t i = 0; i < len; i += f->s3 ? 1 + len / 40 : 1 + len / 300) {
        tried++;
        buf[i] ^= 0x20;
        assert_ok(f->repo->ops->obj_put(f->repo, "t", path, buf, len));
        struct follow fo = { db, ents[0].lsn_from + 1, 0, 0 };
        int rc = wal_read(f->repo, "t", &ents[0], DIM, JVDB_METRIC_L2, follow_fn, &fo);
        if (rc != JVDB_ECORRUPT && rc != JVDB_OK)
            fail_msg("byte %zu flipped: wal_read returned %d (%s)", i, rc, jvdb_errmsg());
        caught += rc == JVDB_ECORRUPT;
        buf[i] ^= 0x20;
    }
    assert_true(caught > tried * 9 / 10);
    assert_ok(f->repo->ops->obj_put(f->repo, "t", path, buf, len));
    assert_ok(wal_read(f->repo, "t", &ents[0], DIM, JVDB_METRIC_L2, NULL, NULL));
    /* a name whose times or range lie */
    struct wal_entry e = ents[0];
    e.last_time_ns++;
    char path2[WAL_NAME_MAX + 8];
    wal_name(e.name, e.incarnation, e.lsn_from, e.lsn_to, e.first_time_ns, e.last_time_ns, e.epoch);
    snprintf(path2, sizeof path2, "log/%s", e.name);
    assert_ok(f->repo->ops->obj_put(f->repo, "t", path2, buf, len));
    assert_err(wal_read(f->repo, "t", &e, DIM, JVDB_METRIC_L2, NULL, NULL), JVDB_ECORRUPT, "times");
    e = ents[0];
    e.lsn_to--;
    wal_name(e.name, e.incarnation, e.lsn_from, e.lsn_to, e.first_time_ns, e.last_time_ns, e.epoch);
    snprintf(path2, sizeof path2, "log/%s", e.name);
    assert_ok(f->repo->ops->obj_put(f->repo, "t", path2, buf, len));
    assert_err(wal_read(f->repo, "t", &e, DIM, JVDB_METRIC_L2, NULL, NULL), JVDB_ECORRUPT, "name");
    free(buf);
    free(ents);
}

/* Encrypted: objects are sealed (no record bytes in the clear) and bound to their path. */
static void test_encrypted(void **state)
{
    struct fx *f = *state;
    char key[600];
    snprintf(key, sizeof key, "%s/repo.key", f->dir);
    FILE *fp = fopen(key, "w");
    assert_non_null(fp);
    fputs("0123456789abcdef0123456789abcdef0123456789abcdef\n", fp);
    fclose(fp);
    jvdb_repo_close(f->repo);
    jvdb_repo_options ro = { 0 };
    ro.key_file = key;
    assert_ok(jvdb_repo_open(f->repo_spec, &ro, &f->repo));
    jvdb_db *db = mkdb(f, "enc", 0);
    jvdb_ship_result r;
    traffic(db, 1);
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    uint64_t base = r.shipped_lsn;
    traffic(db, 2);
    assert_ok(jvdb_backup_ship(db, f->repo, NULL, &r));
    check_log(f, db, base, visible(db));
    struct wal_entry *ents;
    size_t n;
    assert_ok(wal_list(f->repo, "enc", &ents, &n));
    char path[WAL_NAME_MAX + 8], *buf;
    size_t len;
    snprintf(path, sizeof path, "log/%s", ents[0].name);
    jvdb_repo *inner = repo_crypt_inner(f->repo);
    assert_ok(inner->ops->obj_get(inner, "enc", path, &buf, &len));
    assert_memory_equal(buf, "JVDBENC1", 8);
    assert_null(memmem(buf, len, "id-1", 4));
    /* moved to another name (a forged range): authentication fails */
    struct wal_entry e = ents[0];
    e.lsn_from = 0;
    wal_name(e.name, e.incarnation, e.lsn_from, e.lsn_to, e.first_time_ns, e.last_time_ns, e.epoch);
    char path2[WAL_NAME_MAX + 8];
    snprintf(path2, sizeof path2, "log/%s", e.name);
    assert_ok(inner->ops->obj_put(inner, "enc", path2, buf, len));
    assert_err(wal_read(f->repo, "enc", &e, DIM, JVDB_METRIC_L2, NULL, NULL), JVDB_ECORRUPT, "authentication");
    /* without the key: a clear error */
    jvdb_repo *plain;
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &plain));
    struct wal_entry *pe;
    size_t pn;
    assert_err(wal_list(plain, "enc", &pe, &pn), JVDB_EINVAL, "encrypted");
    jvdb_repo_close(plain);
    free(buf);
    free(ents);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_ship_basic, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_faults, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_under_load, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_backlog_overflow, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_gap_rebases, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_log, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_lease, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_lease_removed, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ship_divergent_copy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fenced_unpins, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reader_checks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_writers_race, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_take_race, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_lower_epoch_written_back, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_dead_claim, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restart_after_backup, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_tamper_and_type, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

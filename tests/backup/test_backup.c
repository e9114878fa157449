/*
 * test_backup.c — backups of issue 5 through the public API (plus the archive reader, to look
 * inside an archive): the seed's manual checklist, deletes travelling through chains (with and
 * without compaction in between), differential backups, fallbacks to full, consistency under
 * concurrent writers, corruption of any byte, delete/prune never leaving a broken backup listed.
 *
 * The repository is a temporary directory, or, when JVDB_TEST_REPO is set (test_backup_s3.py
 * sets it to an s3rver bucket), S3: the tests that need to reach into files directly are skipped
 * there.  Every restored database is compared with an in-memory model: vectors byte for byte,
 * metadata string for string, and the live count.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "core/io.h"
#include "store/record.h"
#include "test_util.h"

#include <errno.h>
#include <math.h>

#define DIM  16
#define NIDS 240

/* ------------------------------------------------------------------ model */

struct model {
    int ver[NIDS]; /* 0 = absent */
};

static void vec_for(float *v, int id, int ver)
{
    tu_vector(v, DIM, (uint64_t)id, (uint64_t)ver);
    v[0] = (float)id;
}

/* Every third version has no metadata, so "none" round-trips too. */
static const char *meta_for(char *buf, size_t cap, int id, int ver)
{
    if (ver % 3 == 0) return NULL;
    snprintf(buf, cap, "{\"id\":%d,\"ver\":%d,\"s\":\"caf\\u00e9 %d\"}", id, ver, id * ver);
    return buf;
}

static void key_for(char *k, size_t cap, int id) { snprintf(k, cap, "vec-%d", id); }

static uint64_t m_put(jvdb_db *db, struct model *m, int id, int ver)
{
    float v[DIM];
    char k[32], mb[128];
    vec_for(v, id, ver);
    key_for(k, sizeof k, id);
    uint64_t lsn;
    assert_ok(jvdb_put(db, k, v, DIM, meta_for(mb, sizeof mb, id, ver), &lsn));
    if (m) m->ver[id] = ver;
    return lsn;
}

static uint64_t m_del(jvdb_db *db, struct model *m, int id)
{
    char k[32];
    key_for(k, sizeof k, id);
    uint64_t lsn;
    assert_ok(jvdb_delete(db, k, &lsn));
    if (m) m->ver[id] = 0;
    return lsn;
}

static void check_model(jvdb_db *db, const struct model *m, const char *what)
{
    uint64_t live = 0;
    for (int id = 0; id < NIDS; id++) {
        char k[32], mb[128];
        float got[DIM], want[DIM];
        char *meta = NULL;
        key_for(k, sizeof k, id);
        int rc = jvdb_get(db, k, got, &meta);
        if (!m->ver[id]) {
            if (rc != JVDB_ENOTFOUND) fail_msg("%s: %s should be absent (rc %d)", what, k, rc);
            continue;
        }
        live++;
        if (rc) fail_msg("%s: %s missing: %s", what, k, jvdb_errmsg());
        vec_for(want, id, m->ver[id]);
        if (memcmp(got, want, sizeof want)) fail_msg("%s: %s vector differs (version %d)", what, k, m->ver[id]);
        const char *wm = meta_for(mb, sizeof mb, id, m->ver[id]);
        if ((wm == NULL) != (meta == NULL) || (wm && strcmp(wm, meta)))
            fail_msg("%s: %s metadata '%s', want '%s'", what, k, meta ? meta : "(none)", wm ? wm : "(none)");
        jvdb_free(meta);
    }
    if (jvdb_count(db) != live)
        fail_msg("%s: count %llu, want %llu", what, (unsigned long long)jvdb_count(db), (unsigned long long)live);
}

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* ------------------------------------------------------------------ fixture */

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
    f->s3 = tu_repo_spec(f->dir, "", f->repo_spec, sizeof f->repo_spec);
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

static jvdb_backup_info backup(struct fx *f, jvdb_db *db, jvdb_backup_type type, jvdb_backup_type expect)
{
    jvdb_backup_options o;
    jvdb_backup_options_init(&o);
    o.type = type;
    jvdb_backup_info info;
    assert_ok(jvdb_backup_create(db, f->repo, &o, &info));
    if (info.type != expect)
        fail_msg("asked for a %s backup, expected %s, got %s (note: %s)", jvdb_backup_type_name(type),
                 jvdb_backup_type_name(expect), jvdb_backup_type_name(info.type), info.note);
    return info;
}

/* Restores under a scratch name, compares with the model, drops it again. */
static void restore_check(struct fx *f, const char *id, const struct model *m, const char *what)
{
    jvdb_restore_options ro = { .as_name = "scratch" };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(f->env, f->repo, id, &ro, &r));
    check_model(r, m, what);
    assert_ok(jvdb_db_drop(f->env, "scratch"));
}

/* Ids and kinds inside an archive, via the archive reader. */
struct idset {
    char ids[NIDS * 2][32];
    int kinds[NIDS * 2];
    size_t n;
};

static int collect_ids(void *arg, const void *recs, size_t len, size_t nrecs)
{
    struct idset *s = arg;
    (void)nrecs;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const void *)((const char *)recs + off);
        assert_true(s->n < NIDS * 2);
        snprintf(s->ids[s->n], sizeof s->ids[s->n], "%.*s", (int)h->id_len, rec_id(h, DIM));
        s->kinds[s->n++] = h->kind;
        off += h->total_len;
    }
    return 0;
}

static void archive_ids(struct fx *f, const char *db, const char *id, struct idset *s)
{
    memset(s, 0, sizeof *s);
    char *buf;
    size_t len;
    struct backup_meta m;
    assert_ok(f->repo->ops->read_meta(f->repo, db, id, &buf, &len));
    assert_ok(meta_parse(buf, len, "test", &m, NULL, NULL));
    free(buf);
    struct repo_reader *rd;
    assert_ok(f->repo->ops->open_data(f->repo, db, id, &rd));
    struct archive_read_result res;
    assert_ok(archive_read(rd, &m, collect_ids, s, NULL, &res));
    rd->close(rd);
}

static int idset_has(const struct idset *s, const char *id, int kind)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->ids[i], id) && s->kinds[i] == kind) return 1;
    return 0;
}

/* ------------------------------------------------------------------ the seed's checklist */

static void test_checklist(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "docs", 0);
    for (int i = 0; i < 100; i++) m_put(db, &m, i, 1);
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    assert_int_equal(full.put_count, 100);
    assert_int_equal(full.delete_count, 0);
    struct model at_full = m;

    /* The backup file and its metadata exist. */
    if (!f->s3) {
        char p[1024];
        snprintf(p, sizeof p, "%s/docs/%s/backup.json", f->repo_spec, full.id);
        assert_true(tu_file_size(p) > 0);
        snprintf(p, sizeof p, "%s/docs/%s/data.jvb.zst", f->repo_spec, full.id);
        assert_int_equal(tu_file_size(p), (long long)full.stored_bytes);
    }
    jvdb_backup_info shown;
    assert_ok(jvdb_backup_show(f->repo, full.id, &shown));
    assert_string_equal(shown.sha256, full.sha256);
    assert_true(shown.restorable);
    assert_int_equal(shown.dim, DIM);

    /* Add and modify; the incremental holds exactly those changes. */
    for (int i = 100; i < 110; i++) m_put(db, &m, i, 1);
    for (int i = 0; i < 5; i++) m_put(db, &m, i, 2);
    jvdb_backup_info inc = backup(f, db, JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL);
    assert_string_equal(inc.parent, full.id);
    assert_int_equal(inc.lsn_from, full.lsn_to);
    assert_int_equal(inc.put_count, 15);
    assert_int_equal(inc.delete_count, 0);
    struct idset s;
    archive_ids(f, "docs", inc.id, &s);
    assert_int_equal(s.n, 15);
    for (int i = 0; i < 110; i++) {
        char k[32];
        key_for(k, sizeof k, i);
        assert_int_equal(idset_has(&s, k, 1), i < 5 || i >= 100);
    }

    /* Delete everything, then restore over it. */
    for (int i = 0; i < 110; i++) m_del(db, NULL, i);
    assert_int_equal(jvdb_count(db), 0);
    jvdb_restore_options ro = { 0 };
    jvdb_db *r;
    assert_err(jvdb_backup_restore(f->env, f->repo, inc.id, &ro, &r), JVDB_EEXISTS, "already exists");
    ro.force = 1;
    assert_ok(jvdb_backup_restore(f->env, f->repo, inc.id, &ro, &r));
    check_model(r, &m, "restored incremental");
    restore_check(f, full.id, &at_full, "restored full");

    /* History in order. */
    jvdb_backup_info *list;
    size_t n;
    assert_ok(jvdb_backup_list(f->repo, "docs", &list, &n));
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, full.id);
    assert_string_equal(list[1].id, inc.id);
    assert_string_equal(list[1].parent, full.id);
    assert_true(list[0].created_ns <= list[1].created_ns);
    assert_true(list[0].restorable && list[1].restorable);
    assert_int_equal(list[1].chain_length, 2);
    jvdb_free(list);
    assert_ok(jvdb_backup_verify(f->repo, inc.id, NULL, NULL));
}

/* ------------------------------------------------------------------ chains */

static void chain_run(struct fx *f, int compact)
{
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "chain", 16 * 1024);
    for (int i = 0; i < NIDS / 2; i++) m_put(db, &m, i, 1);
    enum { POINTS = 7 };
    struct model snap[POINTS];
    jvdb_backup_info pts[POINTS];
    pts[0] = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    snap[0] = m;
    int victim = 3; /* present at point 1, deleted before point 2 */
    for (int p = 1; p < POINTS; p++) {
        for (int k = 0; k < 60; k++) {
            int id = (int)rnd(NIDS), op = (int)rnd(10);
            if (p == 2 && k == 0 && m.ver[victim]) m_del(db, &m, victim);
            if (id == victim) continue;
            if (op < 3 && m.ver[id]) m_del(db, &m, id);
            else m_put(db, &m, id, m.ver[id] + 1 + (int)rnd(3));
        }
        if (p == 1 && !m.ver[victim]) m_put(db, &m, victim, 5);
        if (compact) {
            jvdb_compact_options co = { .full = 1, .force = 1 };
            jvdb_compact_stats cs;
            assert_ok(jvdb_compact(db, &co, &cs));
        }
        jvdb_backup_type t = p == POINTS - 1 ? JVDB_BACKUP_DIFFERENTIAL : JVDB_BACKUP_INCREMENTAL;
        pts[p] = backup(f, db, t, t);
        snap[p] = m;
        if (t == JVDB_BACKUP_DIFFERENTIAL) assert_string_equal(pts[p].parent, pts[0].id);
        else assert_string_equal(pts[p].parent, pts[p - 1].id);
    }
    assert_true(snap[1].ver[victim] != 0);
    assert_true(snap[2].ver[victim] == 0);
    for (int p = 0; p < POINTS; p++) {
        char what[64];
        snprintf(what, sizeof what, "point %d%s", p, compact ? " (compacted)" : "");
        restore_check(f, pts[p].id, &snap[p], what);
    }
    /* The victim's delete travelled in the incremental that followed it. */
    struct idset s;
    archive_ids(f, "chain", pts[2].id, &s);
    char vk[32];
    key_for(vk, sizeof vk, victim);
    if (!snap[2].ver[victim]) assert_true(idset_has(&s, vk, 2));
}

static void test_chain(void **state) { chain_run(*state, 0); }
static void test_chain_with_compaction(void **state) { chain_run(*state, 1); }

/* ------------------------------------------------------------------ fallbacks */

static void test_fallback_to_full(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "fb", 0);
    for (int i = 0; i < 20; i++) m_put(db, &m, i, 1);
    jvdb_backup_options o;
    jvdb_backup_options_init(&o);
    o.type = JVDB_BACKUP_INCREMENTAL;
    jvdb_backup_info a;
    assert_ok(jvdb_backup_create(db, f->repo, &o, &a));
    assert_int_equal(a.type, JVDB_BACKUP_FULL);
    assert_non_null(strstr(a.note, "no earlier backup"));

    /* A full backup elsewhere moves the horizon past this repository's chain. */
    char other[700];
    snprintf(other, sizeof other, "%s-other", f->repo_spec);
    jvdb_repo *r2;
    assert_ok(jvdb_repo_open(other, NULL, &r2));
    m_put(db, &m, 1, 2);
    m_del(db, &m, 2);
    jvdb_backup_info b;
    jvdb_backup_options full;
    jvdb_backup_options_init(&full);
    assert_ok(jvdb_backup_create(db, r2, &full, &b));
    jvdb_stats st;
    assert_ok(jvdb_stats_get(db, &st));
    assert_int_equal(st.backup_horizon, b.lsn_to);
    m_put(db, &m, 3, 2);
    assert_ok(jvdb_backup_create(db, f->repo, &o, &a));
    assert_int_equal(a.type, JVDB_BACKUP_FULL);
    assert_non_null(strstr(a.note, "backup horizon"));
    restore_check(f, a.id, &m, "fallback full");
    /* ... and an incremental on top of that works again. */
    m_del(db, &m, 4);
    jvdb_backup_info c = backup(f, db, JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL);
    restore_check(f, c.id, &m, "incremental after fallback");
    jvdb_repo_close(r2);

    /* A restored database is a new one: it never continues the old chain. */
    jvdb_restore_options ro = { .as_name = "fb", .force = 1 };
    assert_ok(jvdb_backup_restore(f->env, f->repo, c.id, &ro, &db));
    check_model(db, &m, "restored in place");
    m_put(db, &m, 5, 9);
    assert_ok(jvdb_backup_create(db, f->repo, &o, &a));
    assert_int_equal(a.type, JVDB_BACKUP_FULL);
    assert_true(a.note[0] != '\0');
    restore_check(f, a.id, &m, "after restore");
    /* LSNs continue past the restored backup. */
    assert_ok(jvdb_stats_get(db, &st));
    assert_true(st.last_lsn > c.lsn_to);

    /* The parent became unreadable: full again. */
    if (!f->s3) {
        char p[1024];
        snprintf(p, sizeof p, "%s/fb/%s/data.jvb.zst", f->repo_spec, a.id);
        assert_int_equal(truncate(p, 10), 0);
        m_put(db, &m, 6, 9);
        jvdb_backup_info d;
        assert_ok(jvdb_backup_create(db, f->repo, &o, &d));
        assert_int_equal(d.type, JVDB_BACKUP_FULL);
        assert_non_null(strstr(d.note, "cannot be used as a parent"));
    }
}

/* ------------------------------------------------------------------ consistency under load */

#define WRITERS        2
#define OPS_PER_WRITER 1500

struct wlog {
    uint64_t lsn;
    int id, ver; /* ver 0 = delete */
};

struct writer {
    jvdb_db *db;
    int no;
    struct wlog log[OPS_PER_WRITER];
    int n;
    atomic_int *stop;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    int ver[NIDS] = { 0 };
    uint64_t x = 12345 + (uint64_t)w->no;
    for (int i = 0; i < OPS_PER_WRITER; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        /* Each writer owns the ids congruent to its number, so its log alone decides them. */
        int id = (int)((x >> 33) % (NIDS / WRITERS)) * WRITERS + w->no;
        struct wlog *l = &w->log[w->n];
        if (ver[id] && (x >> 20) % 4 == 0) {
            l->lsn = m_del(w->db, NULL, id);
            l->ver = ver[id] = 0;
        } else {
            ver[id]++;
            l->lsn = m_put(w->db, NULL, id, ver[id]);
            l->ver = ver[id];
        }
        l->id = id;
        w->n++;
    }
    return NULL;
}

static void model_at(struct writer *ws, uint64_t lsn, struct model *m)
{
    memset(m, 0, sizeof *m);
    for (int t = 0; t < WRITERS; t++)
        for (int i = 0; i < ws[t].n; i++) /* each writer's log is in LSN order */
            if (ws[t].log[i].lsn <= lsn) m->ver[ws[t].log[i].id] = ws[t].log[i].ver;
}

static void test_consistent_under_load(void **state)
{
    struct fx *f = *state;
    jvdb_db *db = mkdb(f, "load", 32 * 1024);
    static struct writer ws[WRITERS];
    pthread_t th[WRITERS];
    for (int t = 0; t < WRITERS; t++) {
        memset(&ws[t], 0, sizeof ws[t]);
        ws[t].db = db;
        ws[t].no = t;
        pthread_create(&th[t], NULL, writer_main, &ws[t]);
    }
    jvdb_backup_info pts[4];
    int np = 0;
    /* A full backup of nothing (the writers not started yet: a loaded machine) moves no horizon, and
     * the incrementals after it would be full. */
    for (jvdb_stats st; jvdb_stats_get(db, &st) == JVDB_OK && st.last_lsn == 0;) usleep(1000);
    while (np < 4) {
        usleep(20000);
        jvdb_backup_type t = np == 0 ? JVDB_BACKUP_FULL : JVDB_BACKUP_INCREMENTAL;
        pts[np++] = backup(f, db, t, t);
    }
    for (int t = 0; t < WRITERS; t++) pthread_join(th[t], NULL);
    int mid = 0;
    for (int p = 0; p < np; p++) {
        struct model m;
        model_at(ws, pts[p].lsn_to, &m);
        int ops_before = 0;
        for (int t = 0; t < WRITERS; t++)
            for (int i = 0; i < ws[t].n; i++) ops_before += ws[t].log[i].lsn <= pts[p].lsn_to;
        mid += ops_before > 0 && ops_before < WRITERS * OPS_PER_WRITER;
        char what[64];
        snprintf(what, sizeof what, "backup %d at lsn %llu", p, (unsigned long long)pts[p].lsn_to);
        restore_check(f, pts[p].id, &m, what);
    }
    /* At least one backup really ran in the middle of the writes. */
    assert_true(mid > 0);
}

/* ------------------------------------------------------------------ corruption */

static void list_dir(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        strncat(out, e->d_name, cap - strlen(out) - 2);
        strncat(out, "|", cap - strlen(out) - 1);
    }
    closedir(d);
}

static void flip(const char *path, long off)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, off, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, off, SEEK_SET);
    fputc(c ^ 0x20, fp);
    fclose(fp);
}

static void test_corruption(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "docs", 0);
    for (int i = 0; i < 60; i++) m_put(db, &m, i, 1);
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    for (int i = 0; i < 10; i++) m_put(db, &m, i, 2);
    m_del(db, &m, 30);
    jvdb_backup_info inc = backup(f, db, JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL);
    char dbdir[600], before[4096], after[4096];
    snprintf(dbdir, sizeof dbdir, "%s/databases", f->data);
    list_dir(dbdir, before, sizeof before);

    const jvdb_backup_info *bs[2] = { &full, &inc };
    const char *files[2] = { "data.jvb.zst", "backup.json" };
    int cases = 0;
    for (int b = 0; b < 2; b++)
        for (int fi = 0; fi < 2; fi++) {
            char p[1024];
            snprintf(p, sizeof p, "%s/docs/%s/%s", f->repo_spec, bs[b]->id, files[fi]);
            long len = tu_file_size(p);
            assert_true(len > 0);
            long offs[] = {
                0, 1, 9, len / 3, len / 2, len - 2, len - 1, (long)rnd((uint32_t)len), (long)rnd((uint32_t)len)
            };
            for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
                flip(p, offs[k]);
                cases++;
                int rc = jvdb_backup_verify(f->repo, inc.id, NULL, NULL);
                if (rc == JVDB_OK) fail_msg("verify passed with byte %ld of %s flipped", offs[k], p);
                if (!strstr(jvdb_errmsg(), bs[b]->id))
                    fail_msg("verify message does not name %s: %s", bs[b]->id, jvdb_errmsg());
                jvdb_restore_options ro = { .as_name = "fresh" };
                jvdb_db *r;
                rc = jvdb_backup_restore(f->env, f->repo, inc.id, &ro, &r);
                if (rc == JVDB_OK) fail_msg("restore passed with byte %ld of %s flipped", offs[k], p);
                if (!strstr(jvdb_errmsg(), bs[b]->id))
                    fail_msg("restore message does not name %s: %s", bs[b]->id, jvdb_errmsg());
                ro.as_name = NULL;
                ro.force = 1;
                assert_int_not_equal(jvdb_backup_restore(f->env, f->repo, inc.id, &ro, &r), JVDB_OK);
                /* Nothing written: no new database, no leftovers, the old one as it was. */
                list_dir(dbdir, after, sizeof after);
                assert_string_equal(before, after);
                check_model(db, &m, "database after a refused restore");
                flip(p, offs[k]);
            }
        }
    assert_int_equal(cases, 36);
    assert_ok(jvdb_backup_verify(f->repo, inc.id, NULL, NULL));
    restore_check(f, inc.id, &m, "after undoing the flips");
}

/* ------------------------------------------------------------------ delete and prune */

static void assert_all_listed_restorable(struct fx *f, const char *db, size_t want)
{
    jvdb_backup_info *v;
    size_t n;
    assert_ok(jvdb_backup_list(f->repo, db, &v, &n));
    if (want != (size_t)-1) assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        if (!v[i].restorable) fail_msg("backup %s is listed but not restorable: %s", v[i].id, v[i].status);
        assert_ok(jvdb_backup_verify(f->repo, v[i].id, NULL, NULL));
    }
    jvdb_free(v);
}

static void test_delete_and_prune(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "ret", 0);
    /* F0 I1 I2 F3 I4 D5 I6 */
    jvdb_backup_type plan[] = { JVDB_BACKUP_FULL,       JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL,
                                JVDB_BACKUP_FULL,       JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_DIFFERENTIAL,
                                JVDB_BACKUP_INCREMENTAL };
    jvdb_backup_info b[7];
    struct model snap[7];
    for (int i = 0; i < 7; i++) {
        for (int k = 0; k < 10; k++) m_put(db, &m, (int)rnd(NIDS), i + 1);
        b[i] = backup(f, db, plan[i], plan[i]);
        snap[i] = m;
    }
    assert_string_equal(b[5].parent, b[3].id);
    assert_string_equal(b[6].parent, b[5].id);

    jvdb_backup_info *del;
    size_t n;
    assert_err(jvdb_backup_delete(f->repo, b[1].id, 0, &del, &n), JVDB_EBUSY, b[2].id);
    assert_all_listed_restorable(f, "ret", 7);
    assert_ok(jvdb_backup_delete(f->repo, b[1].id, 1, &del, &n));
    assert_int_equal(n, 2);
    assert_string_equal(del[0].id, b[2].id); /* the dependant first */
    assert_string_equal(del[1].id, b[1].id);
    jvdb_free(del);
    assert_all_listed_restorable(f, "ret", 5);
    assert_ok(jvdb_backup_delete(f->repo, b[4].id, 0, &del, &n));
    jvdb_free(del);
    assert_all_listed_restorable(f, "ret", 4); /* F0 F3 D5 I6 */

    /* Keep the two newest points: I6 and D5, and F3 they depend on. */
    assert_ok(jvdb_backup_prune(f->repo, "ret", 2, &del, &n));
    assert_int_equal(n, 1);
    assert_string_equal(del[0].id, b[0].id);
    jvdb_free(del);
    assert_all_listed_restorable(f, "ret", 3);
    restore_check(f, b[6].id, &snap[6], "I6 after prune");
    restore_check(f, b[5].id, &snap[5], "D5 after prune");

    /* A broken backup is listed as such, and pruning removes it and what hangs on it. */
    if (!f->s3) {
        char p[1024];
        snprintf(p, sizeof p, "%s/ret/%s/data.jvb.zst", f->repo_spec, b[5].id);
        assert_int_equal(unlink(p), 0);
        jvdb_backup_info info;
        assert_ok(jvdb_backup_show(f->repo, b[6].id, &info));
        assert_false(info.restorable);
        assert_non_null(strstr(info.status, b[5].id));
        assert_ok(jvdb_backup_prune(f->repo, "ret", 1, &del, &n));
        assert_int_equal(n, 2);
        jvdb_free(del);
        assert_all_listed_restorable(f, "ret", 1);
    }
    assert_err(jvdb_backup_prune(f->repo, "ret", 0, &del, &n), JVDB_EINVAL, "at least one");
    assert_err(jvdb_backup_delete(f->repo, "20990101T000000Z-full-1", 0, &del, &n), JVDB_ENOTFOUND, "not found");
}

/* ------------------------------------------------------------------ S3 multipart */

static void test_large_archive(void **state)
{
    struct fx *f = *state;
    /* Random floats hardly compress: about 12 MiB of archive, more than two 5 MiB parts. */
    jvdb_db_options o;
    jvdb_db_options_init(&o, 1024);
    o.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    assert_ok(jvdb_db_create(f->env, "big", &o, &db));
    static float v[1024];
    for (int i = 0; i < 3000; i++) {
        char k[32];
        tu_vector(v, 1024, (uint64_t)i, 7);
        snprintf(k, sizeof k, "b%d", i);
        assert_ok(jvdb_put(db, k, v, 1024, NULL, NULL));
    }
    jvdb_repo_options ro = { 0 };
    ro.part_size = 5u << 20;
    jvdb_repo *repo;
    assert_ok(jvdb_repo_open(f->repo_spec, &ro, &repo));
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    bo.threads = 2;
    jvdb_backup_info info;
    assert_ok(jvdb_backup_create(db, repo, &bo, &info));
    assert_true(info.stored_bytes > (10u << 20));
    assert_ok(jvdb_backup_verify(repo, info.id, NULL, NULL));
    jvdb_restore_options rs = { .as_name = "big2" };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(f->env, repo, info.id, &rs, &r));
    assert_int_equal(jvdb_count(r), 3000);
    static float got[1024];
    for (int i = 0; i < 3000; i += 499) {
        char k[32];
        tu_vector(v, 1024, (uint64_t)i, 7);
        snprintf(k, sizeof k, "b%d", i);
        assert_ok(jvdb_get(r, k, got, NULL));
        assert_memory_equal(got, v, sizeof v);
    }
    jvdb_repo_close(repo);
}

/* ------------------------------------------------------------------ issue 9: forged archives */

/* When set, the creation time forge_backup writes (retention tests). */
static int64_t forge_created_ns;

/* One record a forger put into an archive. */
struct forged {
    const char *id;
    size_t id_len;
    float vec[DIM];
    const char *meta; /* NULL = none */
    size_t meta_len;
};

/* Writes full backup `id` of database `db` holding `n` records, recomputing every checksum the
 * format has -- each record's XXH3 (rec_seal), the stream XXH3 and the trailer's, the zstd frame
 * checksum, the SHA-256 of the data in backup.json, backup.json's meta_sha256 -- as a forger who
 * knows docs/FORMAT.md would.  Only checks of the records' contents can tell it from a real one. */
static void forge_backup(struct fx *f, const char *db, const char *id, jvdb_metric metric, int64_t incarnation,
                         const struct forged *recs, size_t n)
{
    struct backup_meta m;
    memset(&m, 0, sizeof m);
    snprintf(m.id, sizeof m.id, "%s", id);
    snprintf(m.database, sizeof m.database, "%s", db);
    m.type = JVDB_BACKUP_FULL;
    m.lsn_to = n;
    m.created_ns = forge_created_ns ? forge_created_ns : 1893456000000000000ll; /* 2030-01-01 */
    m.put_count = n;
    m.dim = DIM;
    m.metric = metric;
    m.level = 1;
    m.format_version = BACKUP_FORMAT_VERSION;
    m.incarnation = incarnation;
    snprintf(m.description, sizeof m.description, "forged");
    struct backup_settings st = { JVDB_SYNC_ALWAYS, 1000, 1u << 30, json_object(), strdup("") };
    char *bufs[8];
    uint32_t lens[8];
    uint64_t bytes = 0;
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        lens[i] = (uint32_t)rec_size(DIM, REC_KIND_PUT, recs[i].id_len, recs[i].meta_len);
        bufs[i] = calloc(1, lens[i]);
        rec_encode(bufs[i], DIM, REC_KIND_PUT, recs[i].id, recs[i].id_len, recs[i].vec, recs[i].meta, recs[i].meta_len,
                   1);
        rec_seal(bufs[i], i + 1, 0);
        bytes += lens[i];
    }
    assert_ok(f->repo->ops->init(f->repo));
    struct repo_stage *stage;
    assert_ok(f->repo->ops->stage_begin(f->repo, db, id, &stage));
    struct archive_header ah = { DIM, metric, JVDB_BACKUP_FULL, 0, n, n, bytes };
    struct archive_writer *w;
    assert_ok(archive_writer_open(stage, &ah, 1, 0, "forge", &w));
    for (size_t i = 0; i < n; i++) assert_ok(archive_writer_add(w, bufs[i], lens[i]));
    assert_ok(archive_writer_finish(w, &m.raw_bytes, &m.stored_bytes, m.sha256));
    char *meta;
    size_t meta_len;
    assert_ok(meta_serialize(&m, &st, &meta, &meta_len));
    assert_ok(stage->commit(stage, meta, meta_len));
    free(meta);
    archive_writer_free(w);
    stage->abort(stage);
    backup_settings_free(&st);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
}

static void forged_vec(float *v, float x)
{
    for (int i = 0; i < DIM; i++) v[i] = x;
}

/* Restore must enforce every invariant put enforces, whatever the checksums say (issue 9 item 3). */
static void test_forged_records(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "docs", 0);
    for (int i = 0; i < 20; i++) m_put(db, &m, i, 1);
    jvdb_backup_info real = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    char dbdir[600], before[4096], after[4096];
    snprintf(dbdir, sizeof dbdir, "%s/databases", f->data);
    list_dir(dbdir, before, sizeof before);

    static char long_id[2001];
    memset(long_id, 'x', 2000);
    static const char nul_meta[] = "{\"a\":\"x\0y\"}";
    struct {
        const char *id;
        size_t id_len;
        float x; /* every vector value */
        const char *meta;
        size_t meta_len;
        const char *want; /* in the message */
    } cases[] = {
        { "m1", 2, 0.5f, "{not json", 9, "metadata is not valid JSON" },
        { "m2", 2, 0.5f, "[1,2]", 5, "metadata must be a JSON object" },
        { "m3", 2, 0.5f, "\"str\"", 5, "metadata must be a JSON object" },
        { "m4", 2, 0.5f, nul_meta, sizeof nul_meta - 1, "NUL" },
        { "v1", 2, NAN, NULL, 0, "NaN" },
        { "v2", 2, INFINITY, NULL, 0, "infinite" },
        { "v3", 2, 1e30f, NULL, 0, "vector" },
        { "a\0b", 3, 0.5f, NULL, 0, "id" },
        { "\xff\xfe", 2, 0.5f, NULL, 0, "UTF-8" },
        { "line\nbreak", 10, 0.5f, NULL, 0, "control" },
        { long_id, 2000, 0.5f, NULL, 0, "2000 bytes" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct forged r[2] = { { "fine", 4, { 0 }, "{\"ok\":1}", 8 },
                               { cases[k].id, cases[k].id_len, { 0 }, cases[k].meta, cases[k].meta_len } };
        forged_vec(r[0].vec, 0.25f);
        forged_vec(r[1].vec, cases[k].x);
        char id[64];
        snprintf(id, sizeof id, "20300101T000000Z-full-%zu", 900 + k);
        forge_backup(f, "docs", id, JVDB_METRIC_L2, 1, r, 2);
        /* The catalog sees nothing wrong: every checksum is right. */
        jvdb_backup_info info;
        assert_ok(jvdb_backup_show(f->repo, id, &info));
        assert_true(info.restorable);
        int rc = jvdb_backup_verify(f->repo, id, NULL, NULL);
        if (rc != JVDB_ECORRUPT) fail_msg("case %zu: verify of a forged record returned %d: %s", k, rc, jvdb_errmsg());
        const char *msg = jvdb_errmsg();
        if (!strstr(msg, id) || !strstr(msg, "record 2") || !strstr(msg, cases[k].want))
            fail_msg("case %zu: verify message lacks the backup, the record or '%s': %s", k, cases[k].want, msg);
        jvdb_restore_options ro = { .as_name = "victim" };
        jvdb_db *r2;
        rc = jvdb_backup_restore(f->env, f->repo, id, &ro, &r2);
        if (rc == JVDB_OK) fail_msg("case %zu: restore accepted a forged record", k);
        msg = jvdb_errmsg();
        if (!strstr(msg, id) || !strstr(msg, "record 2") || !strstr(msg, cases[k].want) ||
            !strstr(msg, "nothing was written"))
            fail_msg("case %zu: restore message lacks the backup, the record or the reason: %s", k, msg);
        ro.as_name = NULL;
        ro.force = 1;
        assert_int_equal(jvdb_backup_restore(f->env, f->repo, id, &ro, &r2), JVDB_ECORRUPT);
        list_dir(dbdir, after, sizeof after);
        assert_string_equal(before, after);
        check_model(db, &m, "database after refusing a forged backup");
    }
    /* A cosine database refuses the zero vector (no direction): so does restore.  Its vectors are
     * otherwise stored as given, of any length, and a backup holding one restores it bit for bit. */
    /* (no database "cos" needs to exist: a full backup stands alone) */
    struct forged c1 = { "c", 1, { 0 }, NULL, 0 };
    forged_vec(c1.vec, 0.0f);
    forge_backup(f, "cos", "20300101T000000Z-full-950", JVDB_METRIC_COSINE, 1, &c1, 1);
    assert_int_equal(jvdb_backup_verify(f->repo, "20300101T000000Z-full-950", NULL, NULL), JVDB_ECORRUPT);
    assert_non_null(strstr(jvdb_errmsg(), "a zero vector has no direction, so a cosine database cannot store it"));
    forged_vec(c1.vec, 3.0f);
    forge_backup(f, "cos", "20300101T000000Z-full-951", JVDB_METRIC_COSINE, 1, &c1, 1);
    assert_ok(jvdb_backup_verify(f->repo, "20300101T000000Z-full-951", NULL, NULL));
    jvdb_restore_options cro = { .as_name = "cos3" };
    jvdb_db *c3;
    assert_ok(jvdb_backup_restore(f->env, f->repo, "20300101T000000Z-full-951", &cro, &c3));
    float c3v[DIM];
    assert_ok(jvdb_get(c3, "c", c3v, NULL));
    assert_memory_equal(c3v, c1.vec, sizeof c3v);
    /* The harness itself is right: the same forgery with valid contents verifies and restores. */
    struct forged ok[2] = { { "fine", 4, { 0 }, "{\"ok\":1}", 8 }, { "caf\xc3\xa9", 5, { 0 }, NULL, 0 } };
    forged_vec(ok[0].vec, 0.25f);
    forged_vec(ok[1].vec, -2.0f);
    forge_backup(f, "docs", "20300101T000000Z-full-999", JVDB_METRIC_L2, 1, ok, 2);
    assert_ok(jvdb_backup_verify(f->repo, "20300101T000000Z-full-999", NULL, NULL));
    jvdb_restore_options ro = { .as_name = "good" };
    jvdb_db *g;
    assert_ok(jvdb_backup_restore(f->env, f->repo, "20300101T000000Z-full-999", &ro, &g));
    assert_int_equal(jvdb_count(g), 2);
    char *meta = NULL;
    float v[DIM];
    assert_ok(jvdb_get(g, "fine", v, &meta));
    assert_string_equal(meta, "{\"ok\":1}");
    jvdb_free(meta);
    assert_ok(jvdb_backup_verify(f->repo, real.id, NULL, NULL));
}

/* ------------------------------------------------------------------ issue 9: settings travel */

static void test_settings_restored(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.metric = JVDB_METRIC_DOT;
    o.sync = JVDB_SYNC_INTERVAL;
    o.sync_interval_ms = 250;
    o.segment_max_bytes = 1u << 20;
    jvdb_db *db;
    assert_ok(jvdb_db_create(f->env, "conf", &o, &db));
    jvdb_index_options ix;
    jvdb_index_options_init(&ix);
    ix.m = 24;
    ix.ef_construction = 150;
    ix.ef_search = 77;
    assert_ok(jvdb_db_set_index(db, &ix));
    jvdb_compact_policy pol;
    jvdb_compact_policy_init(&pol);
    pol.dead_ratio = 0.55;
    pol.min_records = 7;
    assert_ok(jvdb_db_set_compact_policy(db, &pol));
    for (int i = 0; i < 30; i++) m_put(db, &m, i, 1);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    bo.database_description = "the configured one \xc3\xa9";
    jvdb_backup_info info;
    assert_ok(jvdb_backup_create(db, f->repo, &bo, &info));

    /* Into a new name, and over an existing database with other settings: the backup's win. */
    jvdb_db *other = mkdb(f, "plain", 0);
    (void)other;
    const char *targets[] = { "copy", "plain" };
    for (int t = 0; t < 2; t++) {
        jvdb_restore_result res;
        jvdb_restore_options ro = { .as_name = targets[t], .force = 1, .result = &res };
        jvdb_db *r;
        assert_ok(jvdb_backup_restore(f->env, f->repo, info.id, &ro, &r));
        assert_string_equal(res.database, targets[t]);
        assert_int_equal(res.replaced, t == 1);
        assert_int_equal(res.has_settings, 1);
        assert_int_equal(res.vectors, 30);
        assert_string_equal(res.backup.id, info.id);
        assert_string_equal(res.database_description, "the configured one \xc3\xa9");
        jvdb_free(res.database_description);
        jvdb_db_options got;
        jvdb_db_get_options(r, &got);
        assert_int_equal(got.metric, JVDB_METRIC_DOT);
        assert_int_equal(got.sync, JVDB_SYNC_INTERVAL);
        assert_int_equal(got.sync_interval_ms, 250);
        assert_int_equal(got.segment_max_bytes, 1u << 20);
        jvdb_index_options gi;
        jvdb_db_get_index(r, &gi);
        assert_int_equal(gi.type, JVDB_INDEX_HNSW);
        assert_int_equal(gi.m, 24);
        assert_int_equal(gi.ef_construction, 150);
        assert_int_equal(gi.ef_search, 77);
        jvdb_compact_policy gp;
        jvdb_db_get_compact_policy(r, &gp);
        assert_true(gp.dead_ratio == 0.55 && gp.min_records == 7);
        check_model(r, &m, "restored with settings");
    }
    /* They survive a reopen (they are in the MANIFEST, not only in memory). */
    jvdb_env_close(f->env);
    assert_ok(jvdb_env_open(f->data, &f->env));
    jvdb_db *r;
    assert_ok(jvdb_db_open(f->env, "copy", &r));
    jvdb_index_options gi;
    jvdb_db_get_index(r, &gi);
    assert_int_equal(gi.ef_search, 77);
    jvdb_db_options got;
    jvdb_db_get_options(r, &got);
    assert_int_equal(got.sync_interval_ms, 250);

    if (f->s3) return;
    /* A format 1 backup (no settings) is still listed, verified and restored, with defaults. */
    char p[1024], *buf;
    size_t len;
    snprintf(p, sizeof p, "%s/conf/%s/backup.json", f->repo_spec, info.id);
    assert_ok(f->repo->ops->read_meta(f->repo, "conf", info.id, &buf, &len));
    struct backup_meta bm;
    assert_ok(meta_parse(buf, len, "test", &bm, NULL, NULL));
    free(buf);
    bm.format_version = 1;
    assert_ok(meta_serialize(&bm, NULL, &buf, &len));
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    assert_null(strstr(buf, "settings"));
    free(buf);
    assert_ok(jvdb_backup_verify(f->repo, info.id, NULL, NULL));
    jvdb_restore_result res;
    jvdb_restore_options ro = { .as_name = "old", .result = &res };
    assert_ok(jvdb_backup_restore(f->env, f->repo, info.id, &ro, &r));
    assert_int_equal(res.has_settings, 0);
    assert_null(res.database_description);
    jvdb_db_get_options(r, &got);
    assert_int_equal(got.sync, JVDB_SYNC_ALWAYS);
    jvdb_db_get_index(r, &gi);
    assert_int_equal(gi.m, 16);
    check_model(r, &m, "restored from format 1");
}

/* ------------------------------------------------------------------ issue 9: names, repositories, deletes */

static void test_restore_names(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "orig", 0);
    for (int i = 0; i < 10; i++) m_put(db, &m, i, 1);
    jvdb_backup_info info = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    char longname[80];
    memset(longname, 'a', 70);
    longname[70] = '\0';
    /* An existing database named by the first 64 characters must not be the one replaced. */
    longname[64] = '\0';
    jvdb_db *victim = mkdb(f, longname, 0);
    m_put(victim, NULL, 1, 5);
    longname[64] = 'a';
    const char *bad[] = { "", longname, "bad name", "../x", "a/b" };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        jvdb_restore_result res;
        jvdb_restore_options ro = { .as_name = bad[k], .force = 1, .result = &res };
        jvdb_db *r;
        assert_int_equal(jvdb_backup_restore(f->env, f->repo, info.id, &ro, &r), JVDB_EINVAL);
        assert_non_null(strstr(jvdb_errmsg(), "invalid database name"));
    }
    /* Backup ids are not cut short either: "DB/" + a 70-character id is not an id. */
    char spec[160];
    snprintf(spec, sizeof spec, "orig/%s%s", info.id, "111111111111111111111111111111111111111111111111111111");
    jvdb_backup_info shown;
    assert_int_equal(jvdb_backup_show(f->repo, spec, &shown), JVDB_EINVAL);
    assert_non_null(strstr(jvdb_errmsg(), "is not a backup id"));
    /* Nothing was replaced: neither the original nor the 64-character one. */
    check_model(db, &m, "original after refused restores");
    longname[64] = '\0';
    jvdb_db *v2;
    assert_ok(jvdb_db_open(f->env, longname, &v2));
    assert_int_equal(jvdb_count(v2), 1);
}

static void test_repo_not_created_by_reads(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    char where[700];
    snprintf(where, sizeof where, "%s/no/such/repo", f->dir);
    jvdb_repo *repo;
    assert_ok(jvdb_repo_open(where, NULL, &repo));
    jvdb_backup_info *v = NULL, info;
    size_t n;
    char want[800];
    snprintf(want, sizeof want, "repository %s does not exist", where);
#define EXPECT_MISSING(call)                                                                  \
    do {                                                                                      \
        assert_int_equal((call), JVDB_ENOTFOUND);                                             \
        if (!strstr(jvdb_errmsg(), want)) fail_msg("%s: message '%s'", #call, jvdb_errmsg()); \
    } while (0)
    EXPECT_MISSING(jvdb_backup_list(repo, NULL, &v, &n));
    EXPECT_MISSING(jvdb_backup_list(repo, "docs", &v, &n));
    EXPECT_MISSING(jvdb_backup_show(repo, "20250101T000000Z-full-1", &info));
    EXPECT_MISSING(jvdb_backup_show(repo, "docs/20250101T000000Z-full-1", &info));
    EXPECT_MISSING(jvdb_backup_verify(repo, "docs/20250101T000000Z-full-1", NULL, NULL));
    EXPECT_MISSING(jvdb_backup_delete(repo, "docs/20250101T000000Z-full-1", 1, NULL, NULL));
    EXPECT_MISSING(jvdb_backup_prune(repo, "docs", 1, NULL, NULL));
    jvdb_restore_options ro = { .as_name = "x" };
    jvdb_db *r;
    EXPECT_MISSING(jvdb_backup_restore(f->env, repo, "docs/20250101T000000Z-full-1", &ro, &r));
#undef EXPECT_MISSING
    char parent[700];
    snprintf(parent, sizeof parent, "%s/no", f->dir);
    struct stat st;
    assert_int_equal(stat(parent, &st), -1);
    /* Only a backup creates the repository. */
    jvdb_db *db = mkdb(f, "docs", 0);
    m_put(db, NULL, 1, 1);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    assert_ok(jvdb_backup_create(db, repo, &bo, &info));
    assert_ok(jvdb_backup_list(repo, NULL, &v, &n));
    assert_int_equal(n, 1);
    jvdb_free(v);
    jvdb_repo_close(repo);
}

#define DELETERS 4

struct deleter {
    struct fx *f;
    const char *id;
    pthread_barrier_t *go;
    int rc;
};

static void *deleter_main(void *arg)
{
    struct deleter *d = arg;
    jvdb_repo *repo;
    if (jvdb_repo_open(d->f->repo_spec, NULL, &repo)) {
        d->rc = -1;
        return NULL;
    }
    pthread_barrier_wait(d->go);
    d->rc = jvdb_backup_delete(repo, d->id, 0, NULL, NULL);
    jvdb_repo_close(repo);
    return NULL;
}

/* Concurrent deletes of one backup: exactly one succeeds, the others find it gone. */
static void test_concurrent_delete(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip(); /* S3 deletes are idempotent; the server serialises its own */
    jvdb_db *db = mkdb(f, "del", 0);
    for (int round = 0; round < 20; round++) {
        m_put(db, NULL, round, 1);
        jvdb_backup_info info = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, DELETERS);
        struct deleter d[DELETERS];
        pthread_t t[DELETERS];
        for (int i = 0; i < DELETERS; i++) {
            d[i] = (struct deleter){ f, info.id, &go, 0 };
            pthread_create(&t[i], NULL, deleter_main, &d[i]);
        }
        int ok = 0;
        for (int i = 0; i < DELETERS; i++) {
            pthread_join(t[i], NULL);
            if (d[i].rc == JVDB_OK) ok++;
            else if (d[i].rc != JVDB_ENOTFOUND) fail_msg("round %d: a concurrent delete returned %d", round, d[i].rc);
        }
        pthread_barrier_destroy(&go);
        if (ok != 1) fail_msg("round %d: %d concurrent deletes of %s succeeded", round, ok, info.id);
        jvdb_backup_info *v;
        size_t n;
        assert_ok(jvdb_backup_list(f->repo, "del", &v, &n));
        assert_int_equal(n, 0);
        jvdb_free(v);
    }
}

/* ------------------------------------------------------------------ issue 13: encrypted repositories */

/* A key file of `n` characters derived from `seed`. */
static void key_file(const struct fx *f, const char *name, char seed, size_t n, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", f->dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (size_t i = 0; i < n; i++) fputc('A' + (seed + (int)i * 7) % 26, fp);
    fputc('\n', fp);
    fclose(fp);
}

static int repo_open_key(const char *spec, const char *key, jvdb_repo **out)
{
    jvdb_repo_options o = { 0 };
    o.key_file = key;
    return jvdb_repo_open(spec, &o, out);
}

/* Reopens the fixture's (still empty) repository with a key: every helper then goes through it. */
static void fx_encrypt(struct fx *f, char *key, size_t cap)
{
    key_file(f, "repo.key", 1, 48, key, cap);
    jvdb_repo_close(f->repo);
    assert_ok(repo_open_key(f->repo_spec, key, &f->repo));
}

static void expect_open_error(const char *spec, const char *key, int want_rc, const char *want_msg)
{
    jvdb_repo *r;
    int rc = repo_open_key(spec, key, &r);
    if (!rc) {
        jvdb_backup_info *v = NULL;
        size_t n = 0;
        rc = jvdb_backup_list(r, NULL, &v, &n);
        jvdb_free(v);
        jvdb_repo_close(r);
    }
    if (rc != want_rc || !strstr(jvdb_errmsg(), want_msg))
        fail_msg("repository %s with key %s: want %d '%s', got %d: %s", spec, key ? key : "(none)", want_rc, want_msg,
                 rc, jvdb_errmsg());
}

/* Round trip through an encrypted repository (directory or S3), and every way of opening it wrongly. */
static void test_encrypted_repo(void **state)
{
    struct fx *f = *state;
    char key[600], other[600], shortk[600];
    unsetenv("JVDB_REPO_KEY_FILE");
    fx_encrypt(f, key, sizeof key);
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "docs", 0);
    for (int i = 0; i < 80; i++) m_put(db, &m, i, 1);
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    for (int i = 0; i < 20; i++) m_put(db, &m, i, 2);
    m_del(db, &m, 50);
    jvdb_backup_info inc = backup(f, db, JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL);
    assert_ok(jvdb_backup_verify(f->repo, inc.id, NULL, NULL));
    assert_all_listed_restorable(f, "docs", 2);
    restore_check(f, inc.id, &m, "encrypted chain");
    (void)full;

    /* No key, another key, a short key: clear errors, never garbage. */
    expect_open_error(f->repo_spec, NULL, JVDB_EINVAL, "is encrypted: give its key file");
    key_file(f, "other.key", 5, 48, other, sizeof other);
    expect_open_error(f->repo_spec, other, JVDB_EINVAL, "does not open repository");
    key_file(f, "short.key", 5, 20, shortk, sizeof shortk);
    expect_open_error(f->repo_spec, shortk, JVDB_EINVAL, "at least 32");
    /* The environment variable is the default key file. */
    setenv("JVDB_REPO_KEY_FILE", key, 1);
    jvdb_repo *viaenv;
    assert_ok(jvdb_repo_open(f->repo_spec, NULL, &viaenv));
    assert_ok(jvdb_backup_verify(viaenv, inc.id, NULL, NULL));
    jvdb_repo_close(viaenv);
    unsetenv("JVDB_REPO_KEY_FILE");

    /* A key on a plain repository that holds backups. */
    char plain[700];
    snprintf(plain, sizeof plain, "%s-plain", f->repo_spec);
    jvdb_repo *pr;
    assert_ok(jvdb_repo_open(plain, NULL, &pr));
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    jvdb_backup_info pi;
    assert_ok(jvdb_backup_create(db, pr, &bo, &pi));
    jvdb_repo_close(pr);
    expect_open_error(plain, key, JVDB_EINVAL, "is not encrypted");

    /* A forger without the key who recomputes every plain checksum (issue 9's attack) is caught:
     * the backup is not signed. */
    jvdb_repo *keyed = f->repo;
    f->repo = repo_crypt_inner(keyed);
    struct forged r[1] = { { "fine", 4, { 0 }, "{\"ok\":1}", 8 } };
    forged_vec(r[0].vec, 0.25f);
    forge_backup(f, "docs", "20300101T000000Z-full-999", JVDB_METRIC_L2, 1, r, 1);
    f->repo = keyed;
    int rc = jvdb_backup_verify(f->repo, "docs/20300101T000000Z-full-999", NULL, NULL);
    if (rc != JVDB_ECORRUPT || !strstr(jvdb_errmsg(), "not signed"))
        fail_msg("verify of a keyless forgery: %d %s", rc, jvdb_errmsg());
    jvdb_restore_options ro = { .as_name = "forged" };
    jvdb_db *out;
    assert_int_equal(jvdb_backup_restore(f->env, f->repo, "docs/20300101T000000Z-full-999", &ro, &out), JVDB_ECORRUPT);
}

static void copy_file(const char *from, const char *to)
{
    char *buf;
    size_t len;
    FILE *fp = fopen(from, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc(len + 1);
    assert_int_equal(fread(buf, 1, len, fp), len);
    fclose(fp);
    fp = fopen(to, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    free(buf);
}

/* Verify of `id` fails, naming backup `bad` (the one tampered with). */
static void expect_bad(struct fx *f, const char *id, const char *bad, const char *what)
{
    int rc = jvdb_backup_verify(f->repo, id, NULL, NULL);
    if (rc == JVDB_OK) fail_msg("verify passed with %s", what);
    if (!strstr(jvdb_errmsg(), bad)) fail_msg("verify message does not name %s (%s): %s", bad, what, jvdb_errmsg());
}

/* Any byte of any object of an encrypted repository changed, chunks cut, dropped, reordered or
 * swapped between backups: verify fails and names the backup. */
static void test_encrypted_tamper(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    char key[600];
    unsetenv("JVDB_REPO_KEY_FILE");
    fx_encrypt(f, key, sizeof key);
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "docs", 0);
    for (int i = 0; i < 12; i++) m_put(db, &m, i, 1);
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    m_put(db, &m, 3, 2);
    jvdb_backup_info inc = backup(f, db, JVDB_BACKUP_INCREMENTAL, JVDB_BACKUP_INCREMENTAL);

    /* Every byte of every backup object. */
    const jvdb_backup_info *bs[2] = { &full, &inc };
    const char *files[2] = { "data.jvb.zst", "backup.json" };
    long cases = 0;
    for (int b = 0; b < 2; b++)
        for (int fi = 0; fi < 2; fi++) {
            char p[1024];
            snprintf(p, sizeof p, "%s/docs/%s/%s", f->repo_spec, bs[b]->id, files[fi]);
            long len = tu_file_size(p);
            assert_true(len > 0);
            for (long off = 0; off < len; off++) {
                flip(p, off);
                char what[1200];
                snprintf(what, sizeof what, "byte %ld of %s flipped", off, p);
                expect_bad(f, inc.id, bs[b]->id, what);
                flip(p, off);
                cases++;
            }
        }
    /* Every byte of the marker (read afresh by every new handle). */
    char mk[700];
    snprintf(mk, sizeof mk, "%s/jvdb-repo.json", f->repo_spec);
    long mlen = tu_file_size(mk);
    assert_true(mlen > 100);
    for (long off = 0; off < mlen; off++) {
        flip(mk, off);
        jvdb_repo *r;
        int rc = repo_open_key(f->repo_spec, key, &r);
        if (!rc) {
            rc = jvdb_backup_verify(r, inc.id, NULL, NULL);
            jvdb_repo_close(r);
        }
        if (rc == JVDB_OK) fail_msg("verify passed with byte %ld of the marker flipped", off);
        flip(mk, off);
        cases++;
    }
    assert_ok(jvdb_backup_verify(f->repo, inc.id, NULL, NULL));

    /* One backup's archive or metadata put in place of another's: the first is not bound to its id. */
    char a[1024], b2[1024], saved[1024];
    snprintf(a, sizeof a, "%s/docs/%s/backup.json", f->repo_spec, full.id);
    snprintf(b2, sizeof b2, "%s/docs/%s/backup.json", f->repo_spec, inc.id);
    snprintf(saved, sizeof saved, "%s/saved", f->dir);
    copy_file(b2, saved);
    copy_file(a, b2);
    expect_bad(f, inc.id, inc.id, "the full backup's backup.json in place of the incremental's");
    copy_file(saved, b2);
    snprintf(a, sizeof a, "%s/docs/%s/data.jvb.zst", f->repo_spec, full.id);
    snprintf(b2, sizeof b2, "%s/docs/%s/data.jvb.zst", f->repo_spec, inc.id);
    copy_file(b2, saved);
    copy_file(a, b2);
    expect_bad(f, inc.id, inc.id, "the full backup's archive in place of the incremental's");
    copy_file(saved, b2);
    assert_ok(jvdb_backup_verify(f->repo, inc.id, NULL, NULL));
    restore_check(f, inc.id, &m, "after undoing the tampering");
    assert_true(cases > 1000);
}

/* A marker whose key_check is shorter than a digest (an attacker's, on a shared bucket): a clear
 * error, not a read past the string (the key check was compared over 65 bytes unconditionally). */
static void test_encrypted_marker_short_check(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    char key[600];
    unsetenv("JVDB_REPO_KEY_FILE");
    fx_encrypt(f, key, sizeof key);
    jvdb_db *db = mkdb(f, "docs", 0);
    struct model m = { 0 };
    m_put(db, &m, 1, 1);
    (void)backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    char mk[700];
    snprintf(mk, sizeof mk, "%s/jvdb-repo.json", f->repo_spec);
    FILE *fp = fopen(mk, "wb");
    assert_non_null(fp);
    fputs("{\"chunk_size\":1048576,\"cipher\":\"aes-256-gcm\",\"format\":1,\"kdf\":\"hkdf-sha256\","
          "\"key_check\":\"ab\",\"mac\":\"hmac-sha256\",\"salt\":\"000102030405060708090a0b0c0d0e0f\"}\n",
          fp);
    fclose(fp);
    expect_open_error(f->repo_spec, key, JVDB_EINVAL, "does not open repository");
}

/* An archive of several chunks: cut at a chunk boundary, a chunk dropped, two swapped, bytes
 * appended -- each fails authentication, though every chunk on its own is genuine. */
static void test_encrypted_chunks(void **state)
{
    struct fx *f = *state;
    if (f->s3) skip();
    char key[600];
    unsetenv("JVDB_REPO_KEY_FILE");
    fx_encrypt(f, key, sizeof key);
    jvdb_db *db = mkdb(f, "big", 0);
    for (int i = 0; i < 48000; i++) {
        float v[DIM];
        char k[32];
        tu_vector(v, DIM, (uint64_t)i, 7);
        snprintf(k, sizeof k, "big-%d", i);
        assert_ok(jvdb_put(db, k, v, DIM, NULL, NULL));
    }
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    assert_ok(jvdb_backup_verify(f->repo, full.id, NULL, NULL));
    char p[1024], orig[1024];
    snprintf(p, sizeof p, "%s/big/%s/data.jvb.zst", f->repo_spec, full.id);
    snprintf(orig, sizeof orig, "%s/orig", f->dir);
    copy_file(p, orig);
    FILE *fp = fopen(orig, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    const long hdr = 32, ch = (1l << 20) + 16;
    if (len < hdr + 2 * ch + 17) {
        free(buf);
        fail_msg("the archive (%ld bytes) has fewer than 3 chunks", len);
    }
    struct {
        const char *what;
        long cut;                /* keep bytes [0, cut) ... */
        long skip_from, skip_to; /* ... minus this range */
        int swap;                /* swap chunks 0 and 1 */
        int append;
    } cases[] = {
        { "cut after chunk 0", hdr + ch, 0, 0, 0, 0 },
        { "cut after chunk 1", hdr + 2 * ch, 0, 0, 0, 0 },
        { "chunk 1 dropped", len, hdr + ch, hdr + 2 * ch, 0, 0 },
        { "chunks 0 and 1 swapped", len, 0, 0, 1, 0 },
        { "a byte appended", len, 0, 0, 0, 1 },
        { "the last byte cut", len - 1, 0, 0, 0, 0 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fp = fopen(p, "wb");
        assert_non_null(fp);
        if (cases[k].swap) {
            fwrite(buf, 1, (size_t)hdr, fp);
            fwrite(buf + hdr + ch, 1, (size_t)ch, fp);
            fwrite(buf + hdr, 1, (size_t)ch, fp);
            fwrite(buf + hdr + 2 * ch, 1, (size_t)(len - hdr - 2 * ch), fp);
        } else {
            long s0 = cases[k].skip_to ? cases[k].skip_from : cases[k].cut;
            fwrite(buf, 1, (size_t)s0, fp);
            if (cases[k].skip_to) fwrite(buf + cases[k].skip_to, 1, (size_t)(cases[k].cut - cases[k].skip_to), fp);
            if (cases[k].append) fputc(0, fp);
        }
        fclose(fp);
        expect_bad(f, full.id, full.id, cases[k].what);
    }
    copy_file(orig, p);
    assert_ok(jvdb_backup_verify(f->repo, full.id, NULL, NULL));
    free(buf);
}

/* ------------------------------------------------------------------ issue 13: calendar retention */

static void prune_expect(struct fx *f, jvdb_prune_options o, const char *want)
{
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    o.dry_run = 1;
    assert_ok(jvdb_backup_prune_ex(f->repo, "cal", &o, &v, &n));
    char got[512] = "";
    for (size_t i = 0; i < n; i++) {
        char t[8];
        snprintf(t, sizeof t, "%s%c", i ? " " : "", v[i].id[strlen(v[i].id) - 1]);
        strcat(got, t);
    }
    jvdb_free(v);
    if (strcmp(got, want))
        fail_msg("prune last %u daily %u weekly %u would delete [%s], expected [%s]", o.keep_last, o.keep_daily,
                 o.keep_weekly, got, want);
}

/* restic's semantics: the newest backup of each of the last N days / ISO weeks that have one. */
static void test_prune_calendar(void **state)
{
    struct fx *f = *state;
    /* 2030-01-01 is a Tuesday: backups 0-2 fall in ISO week 1, 3-4 in week 2. */
    static const struct {
        const char *id;
        int64_t s;
    } bs[] = {
        { "20300101T100000Z-full-0", 1893492000 }, { "20300101T120000Z-full-1", 1893499200 },
        { "20300102T090000Z-full-2", 1893574800 }, { "20300107T090000Z-full-3", 1894006800 },
        { "20300108T090000Z-full-4", 1894093200 },
    };
    struct forged r[1] = { { "fine", 4, { 0 }, "{\"ok\":1}", 8 } };
    forged_vec(r[0].vec, 0.25f);
    for (size_t i = 0; i < 5; i++) {
        forge_created_ns = bs[i].s * 1000000000ll;
        forge_backup(f, "cal", bs[i].id, JVDB_METRIC_L2, 1, r, 1);
    }
    forge_created_ns = 0;
    prune_expect(f, (jvdb_prune_options){ 1, 0, 0, 0 }, "3 2 1 0");
    prune_expect(f, (jvdb_prune_options){ 0, 2, 0, 0 }, "2 1 0");
    prune_expect(f, (jvdb_prune_options){ 0, 3, 0, 0 }, "1 0");
    prune_expect(f, (jvdb_prune_options){ 0, 4, 0, 0 }, "0");
    prune_expect(f, (jvdb_prune_options){ 0, 0, 2, 0 }, "3 1 0");
    prune_expect(f, (jvdb_prune_options){ 0, 0, 1, 0 }, "3 2 1 0");
    prune_expect(f, (jvdb_prune_options){ 2, 0, 2, 0 }, "1 0");
    prune_expect(f, (jvdb_prune_options){ 0, 1, 2, 0 }, "3 1 0");
    /* Nothing was deleted by the dry runs; a real run deletes exactly what the dry run named. */
    jvdb_backup_info *v;
    size_t n;
    assert_ok(jvdb_backup_list(f->repo, "cal", &v, &n));
    assert_int_equal(n, 5);
    jvdb_free(v);
    jvdb_prune_options o = { 0, 0, 2, 0 };
    assert_ok(jvdb_backup_prune_ex(f->repo, "cal", &o, &v, &n));
    assert_int_equal(n, 3);
    jvdb_free(v);
    assert_ok(jvdb_backup_list(f->repo, "cal", &v, &n));
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, bs[2].id);
    assert_string_equal(v[1].id, bs[4].id);
    jvdb_free(v);
    o = (jvdb_prune_options){ 0, 0, 0, 0 };
    assert_int_equal(jvdb_backup_prune_ex(f->repo, "cal", &o, NULL, NULL), JVDB_EINVAL);
}

/* A progress callback that asks the backup to stop at its first report (arg: the cancel flag). */
static void cancel_at_first_report(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records)
{
    (void)phase, (void)done, (void)total, (void)records;
    __atomic_store_n((int *)arg, 1, __ATOMIC_RELAXED);
}

/* Lines of the keydir checkpoint's log about database "kept": writes and loads. */
struct ckpt_log {
    pthread_mutex_t mu;
    int wrote, loaded;
    char reason[64];
};

/* Log callback counting the checkpoint lines of "kept". */
static void ckpt_log_fn(void *user, jvdb_log_level level, const char *msg)
{
    struct ckpt_log *c = user;
    (void)level;
    if (!strstr(msg, "database 'kept'")) return;
    pthread_mutex_lock(&c->mu);
    const char *w = strstr(msg, "wrote the keydir checkpoint (");
    if (w) {
        c->wrote++;
        snprintf(c->reason, sizeof c->reason, "%.*s", (int)strcspn(w + 29, ")"), w + 29);
    }
    if (strstr(msg, "loaded the keydir checkpoint")) c->loaded++;
    pthread_mutex_unlock(&c->mu);
}

/* The .seg files in a database's directory. */
static int seg_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".seg") != NULL;
    closedir(d);
    return n;
}

/* A restore hands over what it built: the database being built takes no periodic keydir
 * checkpoint, gets exactly one before it is published, and is not reopened (its keydir is not
 * loaded again); the handle it returns lives in the published directory, so the files a compaction
 * of it replaces are removed there, and the database reopens from that checkpoint. */
static void test_restore_keeps_what_it_built(void **state)
{
    struct fx *f = *state;
    setenv("JVDB_KDCKPT_BYTES", "1", 1);
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "src", 4096);
    for (int i = 0; i < NIDS; i++) m_put(db, &m, i, 1);
    for (int i = 0; i < NIDS; i += 2) m_put(db, &m, i, 2);
    jvdb_backup_info full = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    struct ckpt_log c = { .mu = PTHREAD_MUTEX_INITIALIZER };
    jvdb_set_log_level(JVDB_LOG_INFO);
    jvdb_set_log_callback(ckpt_log_fn, &c);
    jvdb_restore_options ro = { .as_name = "kept" };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(f->env, f->repo, full.id, &ro, &r));
    jvdb_set_log_callback(NULL, NULL);
    if (c.wrote != 1 || c.loaded != 0 || strcmp(c.reason, "restore"))
        fail_msg("restore wrote %d keydir checkpoints (last: %s) and loaded %d; want 1 (restore) and 0", c.wrote,
                 c.reason, c.loaded);
    check_model(r, &m, "restored");
    char dir[1200], kd[1300];
    snprintf(dir, sizeof dir, "%s/databases/kept", f->data);
    snprintf(kd, sizeof kd, "%s/KEYDIR", dir);
    assert_true(tu_file_size(kd) > 0);
    jvdb_stats st;
    assert_ok(jvdb_stats_get(r, &st));
    assert_int_equal(seg_files(dir), (int)st.segments);
    for (int i = 0; i < NIDS; i += 3) m_put(r, &m, i, 7); /* new segments (4 KiB each) to compact */
    jvdb_compact_options co = { .full = 1, .force = 1 };
    jvdb_compact_stats cs;
    assert_ok(jvdb_compact(r, &co, &cs));
    assert_true(cs.segments_in > 1);
    check_model(r, &m, "compacted");
    assert_ok(jvdb_stats_get(r, &st));
    /* The replaced segments go when their last reader does (at the latest at close), by path. */
    jvdb_env_close(f->env);
    assert_int_equal(seg_files(dir), (int)st.segments);
    assert_ok(jvdb_env_open(f->data, &f->env));
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    jvdb_set_log_callback(ckpt_log_fn, &c);
    assert_ok(jvdb_db_open(f->env, "kept", &r));
    jvdb_set_log_callback(NULL, NULL);
    assert_int_equal(c.loaded, 1);
    check_model(r, &m, "reopened");
    unsetenv("JVDB_KDCKPT_BYTES");
}

/* Stalls the first keydir checkpoint a background thread starts, before it opens its file, until
 * the publish of a restore has swapped the directories (or 2 s pass). */
struct kc_stall {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t main;
    int armed, stalled, released;
    const char *at; /* the io point it stalls at (NULL: kdckpt.before_open) */
};

/* io_point_hook: see struct kc_stall. */
static void kc_stall_hook(const char *name, void *arg)
{
    struct kc_stall *s = arg;
    pthread_mutex_lock(&s->mu);
    if (!strcmp(name, s->at ? s->at : "kdckpt.before_open") && s->armed && !pthread_equal(pthread_self(), s->main)) {
        s->armed = 0;
        s->stalled = 1;
        pthread_cond_broadcast(&s->cv);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        while (!s->released && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
        }
    } else if (!strcmp(name, "publish.after_rename")) {
        s->released = 1;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/* Waits up to 10 s for the stall to catch its thread; whether it did. */
static int kc_wait_stalled(struct kc_stall *s)
{
    pthread_mutex_lock(&s->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (!s->stalled && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
    }
    int stalled = s->stalled;
    pthread_mutex_unlock(&s->mu);
    if (!stalled) io_point_hook_set(NULL, NULL);
    return stalled;
}

/* A restore replacing an open database while that database's background keydir checkpoint is under
 * way: the checkpoint must end in the old directory before the swap.  Finishing after it, it wrote
 * the old database's KEYDIR (its ids at offsets of its own segments) into the restored directory,
 * and the next open loaded it over the restored segments. */
static void test_restore_replace_during_checkpoint(void **state)
{
    struct fx *f = *state;
    setenv("JVDB_KDCKPT_BYTES", "1", 1);
    struct model m = { 0 }, old = { 0 };
    jvdb_db *src = mkdb(f, "ksrc", 0);
    for (int i = 0; i < NIDS; i++) m_put(src, &m, i, 1);
    jvdb_backup_info full = backup(f, src, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    assert_ok(jvdb_db_drop(f->env, "ksrc")); /* its checkpointer gone: only the target's runs below */
    struct kc_stall s = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .armed = 1 };
    s.main = pthread_self();
    io_point_hook_set(kc_stall_hook, &s);
    jvdb_db *tgt = mkdb(f, "ktgt", 0);
    for (int i = NIDS - 8; i < NIDS; i++) m_put(tgt, &old, i, 5);
    if (!kc_wait_stalled(&s)) fail_msg("the target's keydir checkpointer never started a checkpoint");
    jvdb_restore_options ro = { .as_name = "ktgt", .force = 1 };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(f->env, f->repo, full.id, &ro, &r));
    io_point_hook_set(NULL, NULL);
    check_model(r, &m, "restored over an open database");
    jvdb_env_close(f->env);
    assert_ok(jvdb_env_open(f->data, &f->env));
    assert_ok(jvdb_db_open(f->env, "ktgt", &r));
    check_model(r, &m, "reopened after the replace");
    unsetenv("JVDB_KDCKPT_BYTES");
}

/* The drop side of the same race: the dropped database's checkpoint stalled past the drop's rename,
 * while the name is created again (from the hook at db.drop.after_rename, before the old handle is
 * closed), then released. */
struct drop_race {
    struct kc_stall st;
    struct fx *f;
    struct model m;
    jvdb_db *again;
    const char *name; /* the database dropped and created again (NULL: kdrop) */
};

/* io_point_hook: stalls the dropped database's checkpointer, recreates the name after the drop's rename. */
static void drop_race_hook(const char *name, void *arg)
{
    struct drop_race *d = arg;
    if (!strcmp(name, "db.drop.after_rename") && pthread_equal(pthread_self(), d->st.main) && !d->again) {
        setenv("JVDB_KDCKPT_BYTES", "1000000000", 1); /* the new database takes no checkpoint of its own */
        d->again = mkdb(d->f, d->name ? d->name : "kdrop", 0);
        for (int i = 0; i < NIDS; i++) m_put(d->again, &d->m, i, 9);
        pthread_mutex_lock(&d->st.mu);
        d->st.released = 1;
        pthread_cond_broadcast(&d->st.cv);
        pthread_mutex_unlock(&d->st.mu);
        return;
    }
    if (strcmp(name, d->st.at ? d->st.at : "kdckpt.before_open") || pthread_equal(pthread_self(), d->st.main)) return;
    pthread_mutex_lock(&d->st.mu);
    if (d->st.armed) {
        d->st.armed = 0;
        d->st.stalled = 1;
        pthread_cond_broadcast(&d->st.cv);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        while (!d->st.released && pthread_cond_timedwait(&d->st.cv, &d->st.mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&d->st.mu);
}

/* A drop while the database's keydir checkpoint is under way: the checkpoint ends in the dropped
 * directory.  Finishing after the rename, it wrote the dropped database's KEYDIR into a database
 * created again under the name, whose next open after a crash would load it over its own segments. */
static void test_drop_during_checkpoint(void **state)
{
    struct fx *f = *state;
    setenv("JVDB_KDCKPT_BYTES", "1", 1);
    struct drop_race d = { .st = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .armed = 1 },
                           .f = f };
    d.st.main = pthread_self();
    struct model old = { 0 };
    io_point_hook_set(drop_race_hook, &d);
    jvdb_db *db = mkdb(f, "kdrop", 0);
    for (int i = 0; i < NIDS / 2; i++) m_put(db, &old, i, 5);
    if (!kc_wait_stalled(&d.st)) fail_msg("the keydir checkpointer never started a checkpoint");
    assert_ok(jvdb_db_drop(f->env, "kdrop"));
    io_point_hook_set(NULL, NULL);
    unsetenv("JVDB_KDCKPT_BYTES");
    assert_non_null(d.again);
    char keydir[1200];
    snprintf(keydir, sizeof keydir, "%s/databases/kdrop/KEYDIR", f->data);
    struct stat sb;
    assert_int_equal(stat(keydir, &sb), -1); /* the new database has written none; the old one must not */
    check_model(d.again, &d.m, "created again after a drop");
}

/* Asserts that the database `name` has no graph file (ext.hnsw, its .tmp or its delta). */
static void assert_no_graph(struct fx *f, const char *name, const char *what)
{
    static const char *const files[] = { "ext.hnsw", "ext.hnsw.tmp", "ext.hnsw.log" };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/databases/%s/%s", f->data, name, files[i]);
        struct stat sb;
        if (stat(path, &sb) == 0) fail_msg("%s: %s exists (the old database's graph save ended there)", what, path);
    }
}

/* The graph's side of test_restore_replace_during_checkpoint: the replaced database's index thread
 * stalled in a graph save (hnsw.save.before_open) until the directories are swapped.  The save opens
 * its files by path, so finishing after the swap it wrote the old graph as the restored database's
 * ext.hnsw (the backup carries none), and the next open installed the old nodes whose (id, LSN)
 * the restored history happens to reuse, with the old vectors' rows. */
static void test_restore_replace_during_graph_save(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 }, old = { 0 };
    jvdb_db *src = mkdb(f, "gsrc", 0);
    for (int i = 0; i < NIDS; i++) m_put(src, &m, i, 1);
    jvdb_backup_info full = backup(f, src, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL); /* no index: no graph */
    assert_ok(jvdb_db_drop(f->env, "gsrc"));
    struct kc_stall s = {
        .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .armed = 1, .at = "hnsw.save.before_open"
    };
    s.main = pthread_self();
    io_point_hook_set(kc_stall_hook, &s);
    setenv("JVDB_INDEX_SAVE_SECONDS", "0", 1); /* its index thread saves as soon as it is idle */
    jvdb_db *tgt = mkdb(f, "gtgt", 0);
    /* The ids and LSNs the restored database gives its first 8 records, other vectors: its loader
     * would keep these nodes of the old graph (a node is matched by id and LSN). */
    for (int i = 0; i < 8; i++) m_put(tgt, &old, i, 5);
    assert_ok(jvdb_db_index_wait(tgt, 10000));
    unsetenv("JVDB_INDEX_SAVE_SECONDS");
    if (!kc_wait_stalled(&s)) fail_msg("the target's index thread never started a graph save");
    jvdb_restore_options ro = { .as_name = "gtgt", .force = 1 };
    jvdb_db *r;
    assert_ok(jvdb_backup_restore(f->env, f->repo, full.id, &ro, &r));
    io_point_hook_set(NULL, NULL);
    assert_no_graph(f, "gtgt", "restored over an open database");
    check_model(r, &m, "restored over an open database");
    jvdb_env_close(f->env);
    assert_ok(jvdb_env_open(f->data, &f->env));
    assert_ok(jvdb_db_open(f->env, "gtgt", &r));
    assert_ok(jvdb_db_index_wait(r, 10000));
    jvdb_index_status st;
    assert_ok(jvdb_db_index_status(r, &st));
    assert_int_equal(st.loaded_nodes, 0); /* built from the restored vectors, none from the old graph */
    check_model(r, &m, "reopened after the replace");
}

/* The graph's side of test_drop_during_checkpoint: the dropped database's graph save stalled past the
 * drop's rename while the name is created again, then released. */
static void test_drop_during_graph_save(void **state)
{
    struct fx *f = *state;
    struct drop_race d = { .st = { .mu = PTHREAD_MUTEX_INITIALIZER,
                                   .cv = PTHREAD_COND_INITIALIZER,
                                   .armed = 1,
                                   .at = "hnsw.save.before_open" },
                           .f = f,
                           .name = "gdrop" };
    d.st.main = pthread_self();
    struct model old = { 0 };
    io_point_hook_set(drop_race_hook, &d);
    setenv("JVDB_INDEX_SAVE_SECONDS", "0", 1);
    jvdb_db *db = mkdb(f, "gdrop", 0);
    for (int i = 0; i < NIDS / 2; i++) m_put(db, &old, i, 5);
    assert_ok(jvdb_db_index_wait(db, 10000));
    unsetenv("JVDB_INDEX_SAVE_SECONDS");
    if (!kc_wait_stalled(&d.st)) fail_msg("the index thread never started a graph save");
    assert_ok(jvdb_db_drop(f->env, "gdrop"));
    io_point_hook_set(NULL, NULL);
    unsetenv("JVDB_KDCKPT_BYTES");
    assert_non_null(d.again);
    assert_no_graph(f, "gdrop", "created again after a drop"); /* it has no index: only the old one could */
    check_model(d.again, &d.m, "created again after a drop");
}

/* Waits up to 10 s for the index of db to have saved past LSN `after`; the saved LSN. */
static uint64_t wait_graph_saved(jvdb_db *db, uint64_t after)
{
    jvdb_index_status st = { 0 };
    for (int i = 0; i < 1000; i++) {
        assert_ok(jvdb_db_index_status(db, &st));
        if (st.saved_lsn > after) break;
        usleep(10000);
    }
    return st.saved_lsn;
}

struct drop_fail {
    jvdb_db *db;
    struct model *m;
};

/* io_point_hook: at the drop's rename (database marked, saves held) changes the graph, then makes
 * the rename fail. */
static void drop_fail_hook(const char *name, void *arg)
{
    struct drop_fail *d = arg;
    if (strcmp(name, "db.drop.before_rename") || !d->db) return;
    for (int i = NIDS / 2; i < NIDS / 2 + 8; i++) m_put(d->db, d->m, i, 6);
    assert_ok(jvdb_db_index_wait(d->db, 10000));
    d->db = NULL;
    io_fault_arm(IO_OP_RENAME, 0, EIO, false, false);
}

/* A drop that fails after holding the graph saves lets them go on: the changes made meanwhile are
 * saved without waiting for another write (the index thread, which skipped its save while the
 * database was marked, is woken). */
static void test_failed_drop_resumes_graph_saves(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    setenv("JVDB_INDEX_SAVE_SECONDS", "0", 1);
    jvdb_db *db = mkdb(f, "gfail", 0);
    for (int i = 0; i < NIDS / 2; i++) m_put(db, &m, i, 5);
    assert_ok(jvdb_db_index_wait(db, 10000));
    unsetenv("JVDB_INDEX_SAVE_SECONDS");
    uint64_t saved = wait_graph_saved(db, 0);
    assert_true(saved > 0);
    struct drop_fail d = { db, &m };
    io_point_hook_set(drop_fail_hook, &d);
    int rc = jvdb_db_drop(f->env, "gfail");
    io_point_hook_set(NULL, NULL);
    io_fault_clear();
    assert_int_not_equal(rc, JVDB_OK);
    assert_null(d.db);
    if (wait_graph_saved(db, saved) <= saved) fail_msg("the graph changed during the failed drop was never saved");
    check_model(db, &m, "after a failed drop");
}

/* jvdb_backup_options.cancel: a backup cancelled before it starts or midway fails with EBUSY and
 * leaves nothing in the repository; the next backup is whole. */
static void test_cancelled_backup(void **state)
{
    struct fx *f = *state;
    struct model m = { 0 };
    jvdb_db *db = mkdb(f, "cancel", 0);
    for (int i = 0; i < NIDS; i++) m_put(db, &m, i, 1);
    for (int round = 0; round < 2; round++) {
        volatile int cancel = round == 0; /* round 0: already set; round 1: set by the first report */
        jvdb_backup_options o;
        jvdb_backup_options_init(&o);
        o.cancel = &cancel;
        if (round == 1) {
            o.progress = cancel_at_first_report;
            o.progress_arg = (void *)&cancel;
        }
        jvdb_backup_info info;
        assert_err(jvdb_backup_create(db, f->repo, &o, &info), JVDB_EBUSY, "was cancelled");
        jvdb_backup_info *all = NULL;
        size_t n = 99;
        int rc = jvdb_backup_list(f->repo, "cancel", &all, &n);
        assert_true(rc == JVDB_OK || rc == JVDB_ENOTFOUND);
        assert_int_equal(rc == JVDB_OK ? n : 0, 0);
        jvdb_free(all);
    }
    jvdb_backup_info b = backup(f, db, JVDB_BACKUP_FULL, JVDB_BACKUP_FULL);
    assert_int_equal(b.put_count, NIDS);
    assert_ok(jvdb_backup_verify(f->repo, b.id, NULL, NULL));
    restore_check(f, b.id, &m, "after two cancelled backups");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checklist, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_chain, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_chain_with_compaction, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fallback_to_full, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_consistent_under_load, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_corruption, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_prune, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_large_archive, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_forged_records, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_settings_restored, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_names, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_repo_not_created_by_reads, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_delete, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted_repo, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted_tamper, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted_chunks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_encrypted_marker_short_check, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_calendar, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_backup, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_keeps_what_it_built, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_replace_during_checkpoint, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_drop_during_checkpoint, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_replace_during_graph_save, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_drop_during_graph_save, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failed_drop_resumes_graph_saves, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

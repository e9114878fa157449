/*
 * logverify.c — jvdb_backup_verify_log: the log half of `jvdb backup verify` (docs/FORMAT.md
 * "Backup log objects").  Every log object of a database is read through wal_read (checked
 * completely: zstd or GCM, records, LSN order and range, name fields), and the log paths a restore
 * can take (wal_path from every restorable backup's lsn_to) are followed to find what none reaches.
 *
 * Invariant: reads only.  An object counts as intact only after wal_read checked every byte a reader
 * would use; one no restore can ever take is a failure unless the format says why it is left out
 * (fenced, superseded at the same LSN, or wholly before the restorable window).
 */
#include "backup/backup.h"
#include "backup/wal.h"

#include "core/err.h"
#include "store/db.h"
#include "store/record.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One database's log and backups while verifying. */
struct lv {
    jvdb_repo *repo;
    const char *db;
    struct wal_entry *ents;
    size_t n;
    unsigned char *reached; /* per object: some backup's path takes it */
    unsigned char *bad;     /* per object: it failed its checks */
    jvdb_backup_info *bk;
    size_t nb;
    jvdb_log_verify_fn report;
    void *arg;
    jvdb_log_verify_result *out;
    char first[1024]; /* the first failure, for the error */
};

/* wal_read callback: counts the records of an object. */
static int lv_count_fn(void *arg, const void *recs, size_t len, size_t nrecs)
{
    (void)recs;
    (void)len;
    *(uint64_t *)arg += nrecs;
    return 0;
}

/* Hands one finding to the caller and keeps the first failure for the error message. */
static void lv_say(struct lv *v, int fail, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (fail && !v->first[0]) snprintf(v->first, sizeof v->first, "%s", msg);
    if (v->report) v->report(v->arg, fail, msg);
}

/* A backup of incarnation inc (a restorable one first), or NULL: what gives the log's dimension. */
static const jvdb_backup_info *lv_backup_of(const struct lv *v, int64_t inc)
{
    const jvdb_backup_info *any = NULL;
    for (size_t i = 0; i < v->nb; i++)
        if (v->bk[i].incarnation == inc) {
            if (v->bk[i].restorable) return &v->bk[i];
            if (!any) any = &v->bk[i];
        }
    return any;
}

/* Whether incarnation inc has log objects (without any, backups alone are its history: no holes to tell). */
static int lv_has_log(const struct lv *v, int64_t inc)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->ents[i].incarnation == inc) return 1;
    return 0;
}

/* Whether incarnation inc has a restorable backup: a base its log can be restored from. */
static int lv_has_base(const struct lv *v, int64_t inc)
{
    for (size_t b = 0; b < v->nb; b++)
        if (v->bk[b].restorable && v->bk[b].incarnation == inc) return 1;
    return 0;
}

/* Reports, once per incarnation (at its first object i), log objects no restorable backup can start
 * from: that log cannot be restored, which verify calls a failure, not a gap per object. */
static void lv_no_base(struct lv *v, size_t i)
{
    const struct wal_entry *e = &v->ents[i];
    v->out->no_base++;
    if (i && v->ents[i - 1].incarnation == e->incarnation) return; /* said at the first one */
    uint32_t k = 0;
    uint64_t last = e->lsn_to;
    for (size_t j = i; j < v->n && v->ents[j].incarnation == e->incarnation; j++, k++)
        if (v->ents[j].lsn_to > last) last = v->ents[j].lsn_to;
    lv_say(v, 1,
           "'%s' has %u log object%s of incarnation %lld (LSN %llu..%llu) but no restorable backup of it: that log "
           "cannot be restored (a restore starts from a backup; take one, e.g. jvdb backup create)",
           v->db, k, k == 1 ? "" : "s", (long long)e->incarnation, (unsigned long long)e->lsn_from + 1,
           (unsigned long long)last);
}

/* Follows the log from every restorable backup, marking what is reached. */
static int lv_paths(struct lv *v)
{
    for (size_t b = 0; b < v->nb; b++) {
        const jvdb_backup_info *bi = &v->bk[b];
        if (!bi->restorable) continue;
        size_t *idx = NULL, k = 0;
        int rc = wal_path(v->ents, v->n, bi->incarnation, bi->lsn_to, &idx, &k);
        if (rc) return rc;
        for (size_t j = 0; j < k; j++) v->reached[idx[j]] = 1;
        free(idx);
    }
    return JVDB_OK;
}

/* Why an object no path takes is left out (NULL: it should have been reached: a gap). */
static const char *lv_unused_why(const struct lv *v, size_t i, char *buf, size_t cap)
{
    const struct wal_entry *e = &v->ents[i];
    uint64_t min_base = UINT64_MAX;
    int64_t newest_inc = INT64_MIN;
    for (size_t b = 0; b < v->nb; b++) {
        if (!v->bk[b].restorable) continue;
        if (v->bk[b].incarnation > newest_inc) newest_inc = v->bk[b].incarnation;
        if (v->bk[b].incarnation == e->incarnation && v->bk[b].lsn_to < min_base) min_base = v->bk[b].lsn_to;
    }
    for (size_t j = 0; j < v->n; j++) {
        const struct wal_entry *o = &v->ents[j];
        if (o->incarnation != e->incarnation || o->lsn_from > e->lsn_from) continue;
        if (o->epoch > e->epoch) {
            snprintf(buf, cap, "fenced: %s has a higher epoch", o->name);
            return buf;
        }
        if (v->reached[j] && o->lsn_from == e->lsn_from) {
            snprintf(buf, cap, "superseded by %s, which starts at the same LSN", o->name);
            return buf;
        }
    }
    if (min_base != UINT64_MAX && e->lsn_to <= min_base)
        return "before the restorable window (its oldest backup covers it)";
    if (min_base == UINT64_MAX && newest_inc > e->incarnation)
        return "of an earlier incarnation without a restorable backup";
    return NULL;
}

/* The end of the object or backup nearest below LSN at in incarnation inc: where a gap before `at` starts (at
 * itself when an object ends there: the gap is before that one). */
static uint64_t lv_gap_start(const struct lv *v, int64_t inc, uint64_t at)
{
    uint64_t g = 0;
    for (size_t b = 0; b < v->nb; b++)
        if (v->bk[b].restorable && v->bk[b].incarnation == inc && v->bk[b].lsn_to <= at && v->bk[b].lsn_to > g)
            g = v->bk[b].lsn_to;
    for (size_t j = 0; j < v->n; j++)
        if (v->ents[j].incarnation == inc && v->ents[j].lsn_to <= at && v->ents[j].lsn_to > g) g = v->ents[j].lsn_to;
    return g;
}

/* Reads and checks every object, then classifies those no path takes. */
static int lv_objects(struct lv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        const struct wal_entry *e = &v->ents[i];
        const jvdb_backup_info *bi = lv_backup_of(v, e->incarnation);
        if (!bi) {
            v->out->unchecked++;
            /* once per incarnation: a log left without backups can hold thousands of objects */
            if (!i || v->ents[i - 1].incarnation != e->incarnation)
                lv_say(v, 0,
                       "log objects of '%s' from %s (LSN %llu..%llu) on not read: no backup of incarnation %lld "
                       "gives their dimension",
                       v->db, e->name, (unsigned long long)e->lsn_from + 1, (unsigned long long)e->lsn_to,
                       (long long)e->incarnation);
        } else {
            uint64_t recs = 0;
            int rc = wal_read(v->repo, v->db, e, bi->dim, bi->metric, lv_count_fn, &recs);
            if (rc == JVDB_ECORRUPT || rc == JVDB_ENOTFOUND) {
                v->out->bad++;
                v->bad[i] = 1;
                lv_say(v, 1, "%s", jvdb_errmsg());
                err_clear();
                continue;
            }
            if (rc) return rc; /* the repository failed: no verdict */
            v->out->log_objects++;
            v->out->log_records += recs;
            if (e->size > 0) v->out->log_bytes += (uint64_t)e->size;
        }
        if (v->reached[i]) continue;
        char why[WAL_NAME_MAX + 80];
        const char *w = lv_unused_why(v, i, why, sizeof why);
        if (w) {
            v->out->unused++;
            lv_say(v, 0, "log object %s of '%s' (LSN %llu..%llu) is not on a restore path: %s", e->name, v->db,
                   (unsigned long long)e->lsn_from + 1, (unsigned long long)e->lsn_to, w);
            continue;
        }
        if (!lv_has_base(v, e->incarnation)) {
            lv_no_base(v, i);
            continue;
        }
        v->out->unreachable++;
        uint64_t g = lv_gap_start(v, e->incarnation, e->lsn_from);
        char gap[96];
        if (g < e->lsn_from)
            snprintf(gap, sizeof gap, "the log has a gap at LSN %llu..%llu", (unsigned long long)g + 1,
                     (unsigned long long)e->lsn_from);
        else snprintf(gap, sizeof gap, "it follows an object no backup reaches either");
        lv_say(v, 1, "log object %s of '%s' (LSN %llu..%llu) is not reached from any backup: %s", e->name, v->db,
               (unsigned long long)e->lsn_from + 1, (unsigned long long)e->lsn_to, gap);
    }
    return JVDB_OK;
}

/* Recomputes the window (backup_window_spans, as jvdb_backup_window does) with every log path cut
 * before its first bad object: what a restore can really reach; notes its holes. */
static int lv_window(struct lv *v)
{
    jvdb_restore_window *w = &v->out->window;
    if (!v->out->has_window) return JVDB_OK;
    struct window_reach *rs = calloc(v->nb ? v->nb : 1, sizeof *rs);
    if (!rs) return err_set(JVDB_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t b = 0; b < v->nb; b++) { /* jvdb_backup_list: oldest first */
        const jvdb_backup_info *bi = &v->bk[b];
        if (!bi->restorable || bi->incarnation != w->incarnation) continue;
        size_t *idx = NULL, k = 0, j = 0;
        int rc = wal_path(v->ents, v->n, bi->incarnation, bi->lsn_to, &idx, &k);
        if (rc) {
            free(rs);
            return rc;
        }
        while (j < k && !v->bad[idx[j]]) j++;
        struct window_reach *r = &rs[n++];
        *r = (struct window_reach){ .lsn0 = bi->lsn_to,
                                    .lsn1 = bi->lsn_to,
                                    .t0 = bi->created_ns,
                                    .t1 = bi->created_ns,
                                    .id = bi->id,
                                    .log_objects = (uint32_t)j,
                                    .base = (int)b };
        if (j && v->ents[idx[j - 1]].lsn_to > r->lsn1) {
            r->lsn1 = v->ents[idx[j - 1]].lsn_to;
            r->t1 = v->ents[idx[j - 1]].last_time_ns;
        }
        free(idx);
    }
    backup_window_spans(w, rs, n);
    free(rs);
    /* Holes: LSNs between the spans (the log was re-based on a backup, or retention removed it). */
    if (!lv_has_log(v, w->incarnation)) return JVDB_OK;
    for (uint32_t i = 0; i + 1 < w->nspans; i++) {
        v->out->holes++;
        lv_say(v, 0, "'%s': LSN %llu..%llu cannot be restored to: the log stops at LSN %llu and goes on from backup %s",
               v->db, (unsigned long long)w->spans[i].latest_lsn + 1,
               (unsigned long long)w->spans[i + 1].earliest_lsn - 1, (unsigned long long)w->spans[i].latest_lsn,
               w->spans[i + 1].backup);
    }
    return JVDB_OK;
}

int jvdb_backup_verify_log(jvdb_repo *repo, const char *db_name, jvdb_log_verify_fn report, void *arg,
                           jvdb_log_verify_result *out)
{
    err_clear();
    jvdb_log_verify_result res;
    memset(&res, 0, sizeof res);
    if (out) memset(out, 0, sizeof *out);
    if (!db_name || !db_name_valid(db_name)) return err_set(JVDB_EINVAL, "invalid database name '%.100s'", db_name);
    struct lv v = { .db = db_name, .report = report, .arg = arg, .out = &res, .repo = repo };
    int rc = jvdb_backup_list(repo, db_name, &v.bk, &v.nb);
    if (!rc) {
        if (!(rc = jvdb_backup_window(repo, db_name, &res.window))) res.has_window = 1;
        else if (rc == JVDB_ENOTFOUND) { /* no restorable backup: every object is outside a window */ err_clear();
            rc = JVDB_OK;
        }
    }
    if (!rc) rc = wal_list(repo, db_name, &v.ents, &v.n);
    if (!rc && !v.nb && !v.n)
        rc = err_set(JVDB_ENOTFOUND, "no backup or log object of '%s' in repository %s", db_name, repo->spec);
    if (!rc && (!(v.reached = calloc(v.n ? v.n : 1, 1)) || !(v.bad = calloc(v.n ? v.n : 1, 1))))
        rc = err_set(JVDB_ENOMEM, "out of memory");
    if (!rc) rc = lv_paths(&v);
    if (!rc) rc = lv_objects(&v);
    if (!rc) rc = lv_window(&v);
    if (!rc && (res.bad || res.unreachable || res.no_base))
        rc = err_set(JVDB_ECORRUPT, "%s (%u bad, %u unreachable, %u without a backup of %zu log objects of '%s')",
                     v.first, res.bad, res.unreachable, res.no_base, v.n, db_name);
    free(v.reached);
    free(v.bad);
    free(v.ents);
    jvdb_free(v.bk);
    if (out) *out = res;
    return rc;
}

/*
 * pitr.c — the log side of restores and replicas (docs/ARCHITECTURE.md 7): applying the records of
 * the repository's log objects (wal.c) to a database, whole batches at a time, up to a target;
 * jvdb_backup_follow, which continues a replica from its last LSN; and the replica mark a restore
 * leaves in the MANIFEST ("replica": the source database and its incarnation), which a promote
 * removes (the promoted database is a new incarnation, with backups and a log of its own).
 *
 * Invariant: a database this file writes to only ever gains whole batches of the source, in LSN
 * order, each group of them appended with one db_append_raw (synced, one batch on disk): a crash
 * leaves it at a batch boundary of the source, so its last LSN says exactly where to go on.  A
 * target is met at a batch boundary: a batch whose last LSN is above to_lsn, or acknowledged after
 * to_time_ns, ends the apply with it and everything after it left out.
 */
#include "backup/backup.h"
#include "backup/wal.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/io.h"
#include "core/grow.h"
#include "core/log.h"
#include "store/db.h"
#include "store/record.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(WAL_NAME_MAX == JVDB_LOG_NAME_MAX, "a log object name fits jvdb_follow_result");

/* Groups of whole batches are appended when they reach this size (and at the end of an object). */
#define PITR_FLUSH_BYTES (8u << 20)

/* The MANIFEST key of a replica (a database jvdb_backup_follow continues). */
#define PITR_REPLICA_KEY "replica"

void log_apply_init(struct log_apply *la, jvdb_db *db, uint32_t dim, uint64_t after)
{
    memset(la, 0, sizeof *la);
    la->db = db;
    la->dim = dim;
    la->after = after;
    la->lsn = after;
}

void log_apply_free(struct log_apply *la)
{
    free(la->buf);
    la->buf = NULL;
    la->cap = la->len = la->acc = 0;
}

/* Appends the accepted whole batches held so far as one raw batch, keeping a partial one. */
static int log_apply_flush_acc(struct log_apply *la)
{
    if (!la->acc) return JVDB_OK;
    int rc = la->unsynced ? db_append_raw_unsynced(la->db, la->buf, la->acc) : db_append_raw(la->db, la->buf, la->acc);
    if (rc) return rc;
    memmove(la->buf, la->buf + la->acc, la->len - la->acc);
    la->len -= la->acc;
    la->acc = 0;
    return JVDB_OK;
}

int log_apply_chunk(void *arg, const void *recs, size_t len, size_t nrecs)
{
    struct log_apply *la = arg;
    (void)nrecs;
    if (la->done) return LOG_APPLY_REACHED;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        off += h->total_len;
        if (h->lsn <= la->after) continue; /* already there (a backup or an earlier apply ends inside) */
        if (h->lsn <= la->seen)
            return err_set(JVDB_ECORRUPT, "log record LSN %llu follows LSN %llu: out of order",
                           (unsigned long long)h->lsn, (unsigned long long)la->seen);
        la->seen = h->lsn;
        if (la->len == la->acc) la->batch_time = h->time_ns; /* the first record of a batch */
        char *nb = grow_array(la->buf, &la->cap, la->len + h->total_len, 1, 1u << 20);
        if (!nb) return err_set(JVDB_ENOMEM, "out of memory holding a batch of the log");
        la->buf = nb;
        memcpy(la->buf + la->len, h, h->total_len);
        la->len += h->total_len;
        la->pending_records++;
        if (h->flags & REC_FLAG_MORE) continue;
        /* A batch is complete: it is in, or it is where the target stops the apply. */
        if ((la->to_lsn && h->lsn > la->to_lsn) || (la->to_time_ns && la->batch_time > la->to_time_ns)) {
            la->len = la->acc;
            la->pending_records = 0;
            la->done = 1;
            return LOG_APPLY_REACHED;
        }
        la->acc = la->len;
        la->lsn = h->lsn;
        la->time_ns = la->batch_time;
        la->records += la->pending_records;
        la->pending_records = 0;
        la->batches++;
        if (la->acc >= PITR_FLUSH_BYTES) {
            int rc = log_apply_flush_acc(la);
            if (rc) return rc;
        }
    }
    return 0;
}

int log_apply_object(jvdb_repo *repo, const char *db, const struct wal_entry *e, jvdb_metric metric,
                     struct log_apply *la)
{
    int rc = wal_read(repo, db, e, la->dim, metric, log_apply_chunk, la);
    if (rc == LOG_APPLY_REACHED) rc = JVDB_OK;
    else if (!rc && la->len != la->acc)
        rc = err_set(JVDB_ECORRUPT, "log object %s of '%s' ends inside a batch", e->name, db);
    if (!rc) rc = log_apply_flush_acc(la);
    if (!rc) la->objects++;
    la->len = la->acc; /* nothing partial survives an object */
    la->pending_records = 0;
    return rc;
}

/* ------------------------------------------------------------------ replica marks */

json_t *pitr_replica_mark(const char *source, int64_t incarnation)
{
    json_t *m = json_object();
    if (m)
        json_object_set_new(m, PITR_REPLICA_KEY,
                            json_pack("{sssI}", "database", source, "incarnation", (json_int_t)incarnation));
    return m;
}

int jvdb_backup_replica_of(jvdb_db *db, char source[JVDB_MAX_NAME_LEN + 1], int64_t *incarnation)
{
    err_clear();
    json_t *r = db_manifest_extra(db, PITR_REPLICA_KEY);
    const char *src = json_string_value(json_object_get(r, "database"));
    json_t *inc = json_object_get(r, "incarnation");
    int rc = JVDB_OK;
    if (!r) rc = err_set(JVDB_ENOTFOUND, "database '%s' is not a replica", jvdb_db_name(db));
    else if (!src || !db_name_valid(src) || !json_is_integer(inc))
        rc = err_set(JVDB_ECORRUPT, "database '%s': its MANIFEST's replica mark is malformed", jvdb_db_name(db));
    else {
        if (source) snprintf(source, JVDB_MAX_NAME_LEN + 1, "%s", src);
        if (incarnation) *incarnation = (int64_t)json_integer_value(inc);
    }
    json_decref(r);
    return rc;
}

int jvdb_backup_promote(jvdb_db *db)
{
    int64_t inc;
    int rc = jvdb_backup_replica_of(db, NULL, &inc);
    if (rc == JVDB_ENOTFOUND) {
        err_clear();
        return JVDB_OK; /* a primary already */
    }
    if (rc) return rc;
    /* The commit point of a promote is this MANIFEST change; the fence before it is redone by the next
     * promote or start without --follow (tests/crash/test_promote_crash.py). */
    io_crash_point("promote.before_manifest");
    if ((rc = db_set_manifest_extra(db, PITR_REPLICA_KEY, NULL))) return rc;
    io_crash_point("promote.after_manifest");
    log_info("database '%s' is no longer a replica of incarnation %lld: a primary of its own", jvdb_db_name(db),
             (long long)inc);
    return JVDB_OK;
}

int jvdb_backup_fence(jvdb_repo *repo, const char *db_name, uint64_t *epoch)
{
    err_clear();
    if (!db_name_valid(db_name)) return err_set(JVDB_EINVAL, "invalid database name '%.100s'", db_name);
    struct wal_lease l;
    char owner[128];
    wal_owner_name(owner);
    uint64_t mine = 0;
    /* Taken and released at once: the new epoch fences the old primary, and the promoted server's own shipper
     * (when it ships) can take the lease without waiting out a lease time. */
    int rc = wal_lease_take(repo, db_name, owner, 0, 1, 1, &l, &mine);
    if (rc) return rc;
    if (epoch) *epoch = mine;
    log_info("took the backup log lease of '%s' from %s: epoch %llu (its shipping stops at its next shipment)", db_name,
             l.owner[0] ? l.owner : "(nobody)", (unsigned long long)mine);
    return JVDB_OK;
}

/* ------------------------------------------------------------------ follow */

/* Applies the objects idx[0..k) of ents to the replica through la; a failure names where it stopped,
 * and a damaged object (JVDB_ECORRUPT: checksum, authentication, contents) is named in res. */
static int follow_apply(jvdb_repo *repo, const char *source, const struct wal_entry *ents, const size_t *idx, size_t k,
                        jvdb_metric metric, struct log_apply *la, jvdb_follow_result *res)
{
    int rc = JVDB_OK;
    size_t j = 0;
    for (; j < k && !rc; j++) rc = log_apply_object(repo, source, &ents[idx[j]], metric, la);
    if (rc) {
        const struct wal_entry *e = &ents[idx[j - 1]];
        if (rc == JVDB_ECORRUPT) {
            snprintf(res->bad_object, sizeof res->bad_object, "%s", e->name);
            res->bad_lsn_to = e->lsn_to;
        }
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
        rc = err_set(rc, "following '%s' stopped at LSN %llu: %s", source, (unsigned long long)la->lsn, msg);
    }
    res->lsn = la->lsn;
    if (la->batches) res->last_time_ns = la->time_ns;
    res->records = la->records;
    res->batches = la->batches;
    res->objects = la->objects;
    return rc;
}

/* The poll's cheap step: only the log objects named from the replica's LSN on (one listing that
 * skips the history by name).  *handled 0 when it cannot decide alone (nothing new continues the
 * replica, yet something lies beyond it or in a newer incarnation): the full check follows. */
static int follow_log_only(jvdb_db *replica, jvdb_repo *repo, const char *source, int64_t inc, uint64_t lsn,
                           jvdb_follow_result *res, int *handled)
{
    *handled = 0;
    char after[WAL_NAME_MAX];
    snprintf(after, sizeof after, "%lld/%020llu", (long long)inc, (unsigned long long)(lsn ? lsn - 1 : 0));
    struct wal_entry *ents = NULL;
    size_t n = 0, *idx = NULL, k = 0;
    int rc = wal_list_after(repo, source, after, &ents, &n);
    uint64_t log_end = lsn;
    int newer = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (ents[i].incarnation > inc) newer = 1;
        if (ents[i].incarnation == inc && ents[i].lsn_to > log_end) log_end = ents[i].lsn_to;
    }
    if (!rc) rc = wal_path(ents, n, inc, lsn, &idx, &k);
    /* Decided here when nothing newer exists and the path reaches everything listed. */
    if (!rc && !newer && (k ? ents[idx[k - 1]].lsn_to : lsn) >= log_end) {
        *handled = 1;
        res->repo_lsn = log_end;
        struct log_apply la;
        log_apply_init(&la, replica, jvdb_db_dim(replica), lsn);
        rc = follow_apply(repo, source, ents, idx, k, jvdb_db_metric(replica), &la, res);
        log_apply_free(&la);
    }
    free(idx);
    free(ents);
    return rc;
}

/* jvdb_backup_follow_ex's full check: every log object and backup of the source. */
static int follow_full(jvdb_db *replica, jvdb_repo *repo, const char *source, int64_t inc, uint64_t lsn,
                       jvdb_follow_result *res)
{
    struct wal_entry *ents = NULL;
    size_t n = 0, *idx = NULL, k = 0;
    struct log_apply la;
    log_apply_init(&la, replica, jvdb_db_dim(replica), lsn);
    int rc = wal_list(repo, source, &ents, &n);
    if (rc) goto out;
    /* What the repository knows beyond this replica: another incarnation, or LSNs the log
     * cannot bring it to (a gap: only a restore of a newer backup can). */
    int64_t newest_inc = inc;
    uint64_t log_end = 0, bk_end = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].incarnation > newest_inc) newest_inc = ents[i].incarnation;
        if (ents[i].incarnation == inc && ents[i].lsn_to > log_end) log_end = ents[i].lsn_to;
    }
    jvdb_backup_info *bk = NULL;
    size_t nb = 0;
    if ((rc = jvdb_backup_list(repo, source, &bk, &nb))) goto out;
    for (size_t i = 0; i < nb; i++) {
        if (!bk[i].restorable) continue;
        if (bk[i].incarnation > newest_inc) newest_inc = bk[i].incarnation;
        if (bk[i].incarnation == inc && bk[i].lsn_to > bk_end) bk_end = bk[i].lsn_to;
    }
    jvdb_free(bk);
    res->repo_lsn = log_end > bk_end ? log_end : bk_end;
    if (res->repo_lsn < lsn) res->repo_lsn = lsn;
    if (newest_inc != inc) {
        res->reseed = 1;
        snprintf(res->reason, sizeof res->reason,
                 "'%s' in the repository is a newer database of that name (incarnation %lld, this replica follows "
                 "%lld)",
                 source, (long long)newest_inc, (long long)inc);
        goto out;
    }
    if ((rc = wal_path(ents, n, inc, lsn, &idx, &k))) goto out;
    rc = follow_apply(repo, source, ents, idx, k, jvdb_db_metric(replica), &la, res);
    /* A gap: the log goes on beyond a point it cannot be followed to.  A backup beyond the replica
     * with no log at all (a repository without shipping) is reached the same way, by a re-seed; a
     * backup beyond a log that lags behind it is not (the log catches up). */
    if (!rc && (log_end > res->lsn || (!log_end && bk_end > res->lsn))) {
        res->reseed = 1;
        snprintf(res->reason, sizeof res->reason,
                 log_end ? "the log of '%s' has a gap after LSN %llu (it goes on to LSN %llu)"
                         : "'%s' has no log after LSN %llu, and a backup reaches LSN %llu",
                 source, (unsigned long long)res->lsn, (unsigned long long)(log_end ? log_end : bk_end));
    }
out:
    log_apply_free(&la);
    free(idx);
    free(ents);
    return rc;
}

int jvdb_backup_follow_ex(jvdb_db *replica, jvdb_repo *repo, const jvdb_follow_options *opts, jvdb_follow_result *out)
{
    err_clear();
    jvdb_follow_result res;
    memset(&res, 0, sizeof res);
    char source[JVDB_MAX_NAME_LEN + 1];
    int64_t inc;
    int rc = jvdb_backup_replica_of(replica, source, &inc);
    if (rc) return rc;
    jvdb_stats st;
    if ((rc = jvdb_stats_get(replica, &st))) return rc;
    res.lsn = st.last_lsn;
    res.repo_lsn = st.last_lsn;
    res.incarnation = inc;
    int handled = 0;
    if (opts && opts->log_only) rc = follow_log_only(replica, repo, source, inc, st.last_lsn, &res, &handled);
    if (!rc && !handled) {
        res.full = 1;
        rc = follow_full(replica, repo, source, inc, st.last_lsn, &res);
    }
    if (out) *out = res;
    return rc;
}

int jvdb_backup_follow(jvdb_db *replica, jvdb_repo *repo, jvdb_follow_result *out)
{
    return jvdb_backup_follow_ex(replica, repo, NULL, out);
}

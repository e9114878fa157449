/*
 * repair.c — salvaging a database that recovery refuses to open (jvdb_db_repair, `jvdb db repair`).
 *
 * Invariant: repair destroys nothing and commits once.  The damaged state stays the truth until a
 * single MANIFEST rename names the repaired segments; before that rename every damaged byte range
 * has been copied, durably, to "<segment>.bad-<offset>" (never taken for an orphan), and the
 * repaired segments are complete and fsynced.  A crash before the rename leaves the old state plus
 * orphans (removed at the next open); after it, the new state plus the old segments as orphans.
 * Running repair again after a crash gives the same result: set-aside copies with the same bytes
 * are reused, not duplicated.
 *
 * What is kept: the database is loaded in DB_MODE_SALVAGE, which applies every record whose
 * checksum verifies (resuming at the next record that verifies after damage), so "newest LSN wins"
 * picks each id's state exactly as a normal open would from the surviving records.  Those current
 * records (live puts and tombstones) are rewritten in LSN order into new sealed segments, followed
 * by an empty active segment.  An incomplete batch at the very end of the active segment is the
 * torn tail a normal open would cut: it is set aside too.
 */
#include "store/db_impl.h"

#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "store/record.h"
#include "store/swap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Orders records by LSN, the order they were written in. */
static int repair_cmp_lsn(const void *a, const void *b)
{
    const struct db_live_rec *x = a, *y = b;
    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

/* Copies each damaged range aside and reports it. */
static int repair_set_aside(jvdb_db *db, jvdb_repair_fn on_drop, void *arg, jvdb_repair_result *out)
{
    for (size_t i = 0; i < db->nbad; i++) {
        const struct db_bad *b = &db->bad[i];
        char *saved;
        int rc = db_set_aside(b->seg, b->off, b->len, "bad", &saved);
        if (rc) return rc;
        log_warn("repair: dropping %" PRIu64 " bytes at offset %" PRIu64 " of %s (%s); kept in %s", b->len, b->off,
                 b->seg->path, b->why, saved);
        if (on_drop) on_drop(arg, b->seg->path, b->off, b->len, b->why, saved);
        free(saved);
        out->ranges_dropped++;
        out->bytes_dropped += b->len;
    }
    return JVDB_OK;
}

/* Writes the current records, in LSN order, into new sealed segments; their numbers go to *nos. */
static int repair_write(jvdb_db *db, uint64_t **nos, size_t *n)
{
    struct db_snapshot snap;
    int rc = db_snapshot(db, 0, &snap);
    if (rc) return rc;
    qsort(snap.recs, snap.n, sizeof *snap.recs, repair_cmp_lsn);
    *nos = malloc((snap.n + 1) * sizeof **nos);
    *n = 0;
    if (!*nos) {
        db_snapshot_free(&snap);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    struct segw w;
    int open = 0;
    for (size_t i = 0; i < snap.n && rc == JVDB_OK; i++) {
        const struct db_live_rec *r = &snap.recs[i];
        if (open && w.records && w.size + r->len > db->m.segment_max_bytes) {
            struct segment *s;
            open = 0;
            if ((rc = segw_finish(&w, &s))) break;
            (*nos)[(*n)++] = s->no;
            seg_unref(s);
        }
        if (!open) {
            if ((rc = segw_begin(db, &w))) break;
            open = 1;
        }
        uint64_t off;
        rc = segw_append(&w, r->seg->map + r->offset, r->len, r->lsn, &off);
    }
    if (rc == JVDB_OK && open) {
        struct segment *s;
        open = 0;
        if ((rc = segw_finish(&w, &s)) == JVDB_OK) {
            (*nos)[(*n)++] = s->no;
            seg_unref(s);
        }
    }
    if (open || rc) segw_abort(&w);
    db_snapshot_free(&snap);
    return rc;
}

/* The commit: a MANIFEST naming the repaired segments plus a new empty active one. */
static int repair_commit(jvdb_db *db, uint64_t *nos, size_t n)
{
    struct segment *act;
    uint64_t act_no = db->m.next_segment++;
    int rc = seg_create(db->dir, act_no, db->m.dim, 4096, &act);
    if (rc) return rc;
    seg_unref(act);
    struct manifest next;
    if ((rc = manifest_copy(&db->m, &next))) return rc;
    free(next.segments);
    nos[n++] = act_no;
    next.segments = nos;
    next.nsegments = n;
    next.active = act_no;
    next.next_segment = db->m.next_segment;
    /* LSNs never go back, not even below a damaged record a backup may already hold. */
    if (db->last_lsn > next.lsn_floor) next.lsn_floor = db->last_lsn;
    if (next.backup_horizon > next.lsn_floor) next.lsn_floor = next.backup_horizon;
    io_crash_point("repair.before_manifest");
    rc = manifest_store(db->dir, &next);
    next.segments = NULL; /* still owned by the caller */
    next.nsegments = 0;
    manifest_free(&next);
    if (rc) return rc;
    io_crash_point("repair.after_manifest");
    /* The old segments are orphans now; removing them here only saves the next open the work. */
    for (size_t i = 0; i < db->nsegs; i++)
        if (io_unlink(db->segs[i]->path) < 0 && errno != ENOENT)
            log_warn("repair: cannot remove %s: %s (it is deleted at next open)", db->segs[i]->path, strerror(errno));
    io_fsync_dir(db->dir);
    return JVDB_OK;
}

int db_repair_dir(jvdb_env *env, const char *dir, jvdb_repair_fn on_drop, void *arg, jvdb_repair_result *out)
{
    memset(out, 0, sizeof *out);
    jvdb_db *db;
    int rc = db_load(env, dir, DB_MODE_SALVAGE, &db);
    if (rc) return rc;
    for (size_t i = 0; i < db->nsegs; i++) out->records_read += db->segs[i]->records;
    out->records_kept = db->kd.count;
    if (db->nbad == 0) {
        log_info("repair of '%s': nothing is damaged; nothing changed", db->m.name);
        db_close(db);
        return JVDB_OK;
    }
    uint64_t *nos = NULL;
    size_t n = 0;
    if ((rc = repair_set_aside(db, on_drop, arg, out)) == JVDB_OK && (rc = repair_write(db, &nos, &n)) == JVDB_OK)
        rc = repair_commit(db, nos, n);
    free(nos);
    if (rc == JVDB_OK) {
        out->changed = 1;
        log_warn("repaired '%s': kept %" PRIu64 " current records (%" PRIu64 " read), dropped %" PRIu64
                 " damaged range(s) of %" PRIu64 " bytes",
                 db->m.name, out->records_kept, out->records_read, out->ranges_dropped, out->bytes_dropped);
    }
    db_close(db);
    return rc;
}

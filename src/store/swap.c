/*
 * swap.c — the primitives segment-level jobs build on (DESIGN.md 3: "store knows nothing of
 * search, compaction policy or backups; it offers snapshots, pinned segments, record iteration,
 * atomic manifest swap").
 *
 * Correctness of the swap rests on two facts.  First, nothing is ever appended to a sealed
 * segment, so the set of keydir entries pointing into the inputs can only shrink while a job copies
 * them (an overwrite or delete moves an entry to the active segment).  Second, the MANIFEST rename
 * is the single commit point: before it the inputs are the truth and the outputs are orphans; after
 * it the outputs are the truth and the inputs are orphans; both kinds of orphan are deleted at open,
 * and "newest LSN wins" makes any record present in both harmless.
 */
#include "store/swap.h"

#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "store/record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define SEGW_BUF (1u << 20)

int db_seal(jvdb_db *db)
{
    pthread_mutex_lock(&db->write_mu);
    int rc = db_check_writable(db);
    if (rc == JVDB_OK && atomic_load(&db->failed)) rc = err_set(JVDB_EFAILED, "database '%s' refuses writes after an I/O failure; reopen it", db->m.name);
    else if (rc == JVDB_OK && db->active->size > SEG_HEADER_SIZE) rc = db_roll_locked(db, 0);
    pthread_mutex_unlock(&db->write_mu);
    return rc;
}

int db_pin_sealed(jvdb_db *db, int (*choose)(void *ctx, const struct segment *s), void *ctx, struct db_pinned *out)
{
    out->n = 0;
    pthread_rwlock_rdlock(&db->lock);
    out->segs = malloc((db->nsegs ? db->nsegs : 1) * sizeof *out->segs);
    if (!out->segs) {
        pthread_rwlock_unlock(&db->lock);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        if (s == db->active || (choose && !choose(ctx, s))) continue;
        seg_ref(s);
        out->segs[out->n++] = s;
    }
    pthread_rwlock_unlock(&db->lock);
    return JVDB_OK;
}

void db_unpin(struct db_pinned *p)
{
    for (size_t i = 0; i < p->n; i++) seg_unref(p->segs[i]);
    free(p->segs);
    p->segs = NULL;
    p->n = 0;
}

static int pinned_has(const struct db_pinned *p, const struct segment *s)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->segs[i] == s) return 1;
    return 0;
}

int db_live_records(jvdb_db *db, const struct db_pinned *p, struct db_live_rec **out, size_t *n, uint64_t *min_lsn_outside)
{
    *out = NULL;
    *n = 0;
    pthread_rwlock_rdlock(&db->lock);
    uint64_t want = 0;
    for (size_t i = 0; i < p->n; i++) want += p->segs[i]->live_records + p->segs[i]->records;  /* upper bound */
    *min_lsn_outside = UINT64_MAX;
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        if (s == db->active || pinned_has(p, s) || s->records == 0) continue;
        if (s->min_lsn < *min_lsn_outside) *min_lsn_outside = s->min_lsn;
    }
    struct db_live_rec *v = malloc((want ? want : 1) * sizeof *v);
    if (!v) {
        pthread_rwlock_unlock(&db->lock);
        return err_set(JVDB_ENOMEM, "out of memory listing %llu records", (unsigned long long)want);
    }
    size_t k = 0;
    const struct keydir *kd = &db->kd;
    for (size_t i = 0; i < kd->cap && k < want; i++) {
        const struct kd_entry *e = kd->table[i].e;
        if (!e || !pinned_has(p, e->seg)) continue;
        v[k++] = (struct db_live_rec){e->seg, e->offset, e->lsn, e->rec_len, __atomic_load_n(&e->hits, __ATOMIC_RELAXED), e->kind};
    }
    pthread_rwlock_unlock(&db->lock);
    *out = v;
    *n = k;
    return JVDB_OK;
}

int db_snapshot(jvdb_db *db, uint64_t from_lsn, struct db_snapshot *out)
{
    memset(out, 0, sizeof *out);
    out->dim = db->m.dim;
    /* write_mu: no writer is between its append and its keydir update, so the keydir is exactly
     * the state at last_lsn. */
    pthread_mutex_lock(&db->write_mu);
    pthread_rwlock_rdlock(&db->lock);
    out->lsn = db->last_lsn;
    size_t cap = db->kd.count ? db->kd.count : 1;
    out->recs = malloc(cap * sizeof *out->recs);
    out->pins.segs = malloc((db->nsegs ? db->nsegs : 1) * sizeof *out->pins.segs);
    int rc = JVDB_OK;
    if (!out->recs || !out->pins.segs) {
        rc = err_set(JVDB_ENOMEM, "out of memory taking a snapshot of %zu records", cap);
    } else {
        for (size_t i = 0; i < db->nsegs; i++) {
            seg_ref(db->segs[i]);
            out->pins.segs[out->pins.n++] = db->segs[i];
        }
        for (size_t i = 0; i < db->kd.cap; i++) {
            const struct kd_entry *e = db->kd.table[i].e;
            if (!e || e->lsn <= from_lsn) continue;
            out->recs[out->n++] = (struct db_live_rec){e->seg, e->offset, e->lsn, e->rec_len, 0, e->kind};
        }
    }
    pthread_rwlock_unlock(&db->lock);
    pthread_mutex_unlock(&db->write_mu);
    if (rc) db_snapshot_free(out);
    return rc;
}

void db_snapshot_free(struct db_snapshot *s)
{
    db_unpin(&s->pins);
    free(s->recs);
    s->recs = NULL;
    s->n = 0;
}

void db_decay_hits(jvdb_db *db)
{
    pthread_rwlock_rdlock(&db->lock);
    for (size_t i = 0; i < db->kd.cap; i++) {
        struct kd_entry *e = db->kd.table[i].e;
        if (e) __atomic_store_n(&e->hits, __atomic_load_n(&e->hits, __ATOMIC_RELAXED) / 2, __ATOMIC_RELAXED);
    }
    pthread_rwlock_unlock(&db->lock);
}

/* ---------------------------------------------------------------- new segment files */

int segw_begin(jvdb_db *db, struct segw *w)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->fd = -1;
    if (db->mode == DB_MODE_READONLY) return db_check_writable(db);   /* salvage writes repairs */
    pthread_mutex_lock(&db->write_mu);
    w->no = db->m.next_segment++;   /* persisted by the next MANIFEST write; orphans cover a crash */
    pthread_mutex_unlock(&db->write_mu);
    char *final = seg_path(db->dir, w->no);
    if (!final) return err_set(JVDB_ENOMEM, "out of memory");
    w->tmp_path = malloc(strlen(final) + 5);
    if (!w->tmp_path) {
        free(final);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    sprintf(w->tmp_path, "%s.tmp", final);
    free(final);
    w->buf = aligned_alloc(4096, SEGW_BUF);
    if (!w->buf) return err_set(JVDB_ENOMEM, "out of memory");
    w->fd = io_open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) return err_errno(errno, "cannot create %s", w->tmp_path);
    struct seg_header *h = (struct seg_header *)w->buf;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, SEG_MAGIC, 8);
    h->version = SEG_FORMAT_VERSION;
    h->dim = db->m.dim;
    h->seg_no = w->no;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->created_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    h->checksum = XXH3_64bits(h, offsetof(struct seg_header, checksum));
    w->buf_len = SEG_HEADER_SIZE;
    w->size = SEG_HEADER_SIZE;
    return JVDB_OK;
}

static int segw_flush(struct segw *w)
{
    if (!w->buf_len) return JVDB_OK;
    if (io_write_all(w->fd, w->buf, w->buf_len) < 0) return err_errno(errno, "cannot write %s", w->tmp_path);
    w->buf_len = 0;
    return JVDB_OK;
}

int segw_append(struct segw *w, const void *rec, uint32_t len, uint64_t lsn, uint64_t *offset)
{
    if (w->buf_len + len > SEGW_BUF) {
        int rc = segw_flush(w);
        if (rc) return rc;
    }
    *offset = w->size;
    if (len > SEGW_BUF) {
        if (io_write_all(w->fd, rec, len) < 0) return err_errno(errno, "cannot write %s", w->tmp_path);
    } else {
        memcpy(w->buf + w->buf_len, rec, len);
        w->buf_len += len;
    }
    w->size += len;
    w->records++;
    if (w->min_lsn == 0 || lsn < w->min_lsn) w->min_lsn = lsn;
    if (lsn > w->max_lsn) w->max_lsn = lsn;
    return JVDB_OK;
}

int segw_finish(struct segw *w, struct segment **out)
{
    int rc = segw_flush(w);
    if (rc) return rc;
    if (io_fdatasync(w->fd) < 0) return err_errno(errno, "cannot sync %s", w->tmp_path);
    io_close(w->fd);
    w->fd = -1;
    io_crash_point("segw.before_rename");
    char *final = seg_path(w->db->dir, w->no);
    if (!final) return err_set(JVDB_ENOMEM, "out of memory");
    if (io_rename(w->tmp_path, final) < 0) {
        rc = err_errno(errno, "cannot rename %s", w->tmp_path);
        free(final);
        return rc;
    }
    free(final);
    if (io_fsync_dir(w->db->dir) < 0) return err_errno(errno, "cannot fsync %s", w->db->dir);
    struct segment *s;
    if ((rc = seg_open(w->db->dir, w->no, w->db->m.dim, 0, &s))) return rc;
    s->sealed = true;
    s->records = w->records;
    s->min_lsn = w->min_lsn;
    s->max_lsn = w->max_lsn;
    free(w->buf);
    free(w->tmp_path);
    w->buf = w->tmp_path = NULL;
    *out = s;
    return JVDB_OK;
}

void segw_abort(struct segw *w)
{
    if (w->fd >= 0) io_close(w->fd);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->buf);
    free(w->tmp_path);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

/* ---------------------------------------------------------------- the swap */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_seg(const void *a, const void *b)
{
    const struct segment *x = *(struct segment *const *)a, *y = *(struct segment *const *)b;
    return x->no < y->no ? -1 : x->no > y->no;
}

/* Adds the outputs to the segment list (they hold records from now on); lock held exclusively. */
static int swap_add_outputs(jvdb_db *db, struct segment **outs, size_t nouts)
{
    struct segment **n = malloc((db->nsegs + nouts) * sizeof *n);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    memcpy(n, db->segs, db->nsegs * sizeof *n);
    memcpy(n + db->nsegs, outs, nouts * sizeof *n);
    qsort(n, db->nsegs + nouts, sizeof *n, cmp_seg);
    free(db->segs);
    db->segs = n;
    db->nsegs += nouts;
    db->segs_cap = db->nsegs;
    return JVDB_OK;
}

/* Takes the inputs out of the segment list and retires them; lock held exclusively. */
static void swap_retire_inputs(jvdb_db *db, const struct db_pinned *ins)
{
    size_t n = 0;
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        if (!pinned_has(ins, s)) {
            db->segs[n++] = s;
            continue;
        }
        if (s->live_records)
            log_error("swap: %s still holds %llu live records after the swap", s->path, (unsigned long long)s->live_records);
        atomic_store(&s->retired, true);
        seg_unref(s);   /* the database's reference; the caller's pin still holds it */
    }
    db->nsegs = n;
}

#define SWAP_CHUNK 4096

int db_swap(jvdb_db *db, const struct db_pinned *ins, struct segment **outs, size_t nouts,
            const struct db_move *moves, size_t nmoves, const struct db_live_rec *drops, size_t ndrops)
{
    int wrc = db_check_writable(db);
    if (wrc) return wrc;
    pthread_mutex_lock(&db->write_mu);
    struct manifest next;
    int rc = manifest_copy(&db->m, &next);
    if (rc) goto unlock;
    size_t k = 0;
    uint64_t *segs = malloc((db->m.nsegments + nouts) * sizeof *segs);
    if (!segs) {
        manifest_free(&next);
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto unlock;
    }
    for (size_t i = 0; i < db->m.nsegments; i++) {
        int is_input = 0;
        for (size_t j = 0; j < ins->n; j++) is_input |= ins->segs[j]->no == db->m.segments[i];
        if (!is_input) segs[k++] = db->m.segments[i];
    }
    for (size_t j = 0; j < nouts; j++) segs[k++] = outs[j]->no;
    qsort(segs, k, sizeof *segs, cmp_u64);
    free(next.segments);
    next.segments = segs;
    next.nsegments = k;
    next.lsn_floor = db->last_lsn;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    next.last_compaction_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    pthread_rwlock_wrlock(&db->lock);
    rc = swap_add_outputs(db, outs, nouts);
    pthread_rwlock_unlock(&db->lock);
    if (rc) {
        manifest_free(&next);
        goto unlock;
    }
    io_crash_point("swap.before_manifest");
    /* The commit point. */
    if ((rc = manifest_store(db->dir, &next))) {
        manifest_free(&next);
        pthread_rwlock_wrlock(&db->lock);
        size_t n = 0;
        for (size_t i = 0; i < db->nsegs; i++) {
            int is_output = 0;
            for (size_t j = 0; j < nouts; j++) is_output |= db->segs[i] == outs[j];
            if (!is_output) db->segs[n++] = db->segs[i];
        }
        db->nsegs = n;
        pthread_rwlock_unlock(&db->lock);
        goto unlock;
    }
    io_crash_point("swap.after_manifest");
    /* Only the fields the swap changed: a whole-struct copy would also rewrite name and dim, which
     * readers use without any lock (jvdb_get's messages, jvdb_db_dim), and the sync interval, which
     * the flusher reads with atomics; same bytes, but a data race all the same. */
    manifest_free(&db->m);
    db->m.segments = next.segments;
    db->m.nsegments = next.nsegments;
    db->m.lsn_floor = next.lsn_floor;
    db->m.last_compaction_ns = next.last_compaction_ns;
    db->m.extra = next.extra;
    pthread_mutex_unlock(&db->write_mu);

    /* After the commit the keydir follows the copies, a chunk at a time, so that neither readers
     * nor writers wait for a whole database's worth of lookups.  In between, some entries point at
     * the inputs and some at the outputs: both hold the same bytes and both stay mapped until the
     * inputs are retired below, and an entry a writer moved meanwhile no longer matches its old
     * place, so it is left alone. */
    uint32_t dim = db->m.dim;
    for (size_t base = 0; base < nmoves; base += SWAP_CHUNK) {
        pthread_rwlock_wrlock(&db->lock);
        for (size_t i = base; i < nmoves && i < base + SWAP_CHUNK; i++) {
            const struct rec_header *h = (const struct rec_header *)(moves[i].from->map + moves[i].from_off);
            struct kd_entry *e = keydir_find(&db->kd, rec_id(h, dim), h->id_len);
            if (e && e->seg == moves[i].from && e->offset == moves[i].from_off)
                keydir_move(&db->kd, e, moves[i].to, moves[i].to_off, dim);
        }
        pthread_rwlock_unlock(&db->lock);
    }
    for (size_t base = 0; base < ndrops; base += SWAP_CHUNK) {
        pthread_rwlock_wrlock(&db->lock);
        for (size_t i = base; i < ndrops && i < base + SWAP_CHUNK; i++) {
            const struct rec_header *h = (const struct rec_header *)(drops[i].seg->map + drops[i].offset);
            struct kd_entry *e = keydir_find(&db->kd, rec_id(h, dim), h->id_len);
            if (e && e->seg == drops[i].seg && e->offset == drops[i].offset) keydir_remove(&db->kd, e);
        }
        pthread_rwlock_unlock(&db->lock);
    }
    pthread_rwlock_wrlock(&db->lock);
    swap_retire_inputs(db, ins);
    pthread_rwlock_unlock(&db->lock);
    return JVDB_OK;
unlock:
    pthread_mutex_unlock(&db->write_mu);
    return rc;
}

/*
 * swap.c — the primitives segment-level jobs build on (docs/ARCHITECTURE.md 2: "store knows nothing of
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
#include "store/db_impl.h"

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
    db_write_lock(db);
    int rc = db_check_writable(db);
    if (rc == JVDB_OK && atomic_load(&db->failed)) rc = err_set(JVDB_EFAILED, "database '%s' refuses writes after an I/O failure; reopen it", db->m.name);
    else if (rc == JVDB_OK && db->active->size > SEG_HEADER_SIZE) rc = db_roll_locked(db, 0);
    db_write_unlock(db);
    return rc;
}

int db_pin_sealed(jvdb_db *db, int (*choose)(void *ctx, const struct segment *s), void *ctx, struct db_pinned *out)
{
    out->n = 0;
    /* Lock-free: inside a read section the database's own reference on every listed segment
     * cannot go (it is dropped after a grace period), so taking ours is safe. */
    rp_enter();
    const struct db_seglist *l = db_segments(db);
    out->segs = malloc((l->n ? l->n : 1) * sizeof *out->segs);
    if (!out->segs) {
        rp_exit();
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < l->n; i++) {
        struct segment *s = l->segs[i];
        if (s == l->active || (choose && !choose(ctx, s))) continue;
        seg_ref(s);
        out->segs[out->n++] = s;
    }
    rp_exit();
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

static int live_push(struct db_live_rec **v, size_t *n, size_t *cap, const struct db_live_rec *r)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4096;
        struct db_live_rec *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv) return err_set(JVDB_ENOMEM, "out of memory listing %zu records", ncap);
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = *r;
    return JVDB_OK;
}

#define LIST_SECTION 4096   /* records per read section while listing */

int db_live_records(jvdb_db *db, const struct db_pinned *p, struct db_live_rec **out, size_t *n, uint64_t *min_lsn_outside)
{
    *out = NULL;
    *n = 0;
    *min_lsn_outside = UINT64_MAX;
    rp_enter();
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n; i++) {
        struct segment *s = l->segs[i];
        if (s == l->active || pinned_has(p, s) || __atomic_load_n(&s->records, __ATOMIC_RELAXED) == 0) continue;
        uint64_t mn = __atomic_load_n(&s->min_lsn, __ATOMIC_RELAXED);
        if (mn < *min_lsn_outside) *min_lsn_outside = mn;
    }
    rp_exit();
    /* No database-wide lock: the inputs are sealed and pinned, so their bytes never change; walk
     * them in file order and keep each record some version of its id still points at.  Versions
     * only ever get added for records in the active segment, so one pass sees all that matter. */
    struct db_live_rec *v = NULL;
    size_t k = 0, cap = 0;
    uint32_t dim = db->m.dim;
    int rc = JVDB_OK;
    for (size_t i = 0; i < p->n && rc == JVDB_OK; i++) {
        struct segment *s = p->segs[i];
        uint64_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
        unsigned in_section = 0;
        rp_enter();
        for (uint64_t off = SEG_HEADER_SIZE; off + REC_HEADER_SIZE <= size && rc == JVDB_OK;) {
            const uint8_t *rec = s->map + off;
            const struct rec_header *h = (const struct rec_header *)rec;
            if (h->total_len < REC_HEADER_SIZE || off + h->total_len > size) break;   /* salvage leftovers */
            const struct kd_entry *head = keydir_find(&db->kd, rec_id(h, dim), h->id_len);
            const struct kd_entry *e = head;
            while (e && keydir_record(e) != h) e = __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE);
            if (e) {
                /* keep: an older version readers may still reach, or a tombstone older versions
                 * still hang from: copied whatever the tombstone rule says. */
                int keep = e != head || __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE) != NULL;
                struct db_live_rec r = {s, off, h->lsn, h->total_len, __atomic_load_n(&e->hits, __ATOMIC_RELAXED), h->kind, (uint8_t)keep};
                rc = live_push(&v, &k, &cap, &r);
            }
            off += h->total_len;
            if (++in_section == LIST_SECTION) {
                /* Let reclamation move on between sections. */
                rp_exit();
                rp_enter();
                in_section = 0;
            }
        }
        rp_exit();
    }
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return JVDB_OK;
}

/* The pinned segment whose mapping holds `p` (NULL: none). */
static struct segment *pins_find(const struct db_pinned *pins, const void *p)
{
    for (size_t i = 0; i < pins->n; i++) {
        const struct segment *s = pins->segs[i];
        if ((const uint8_t *)p >= s->map && (const uint8_t *)p < s->map + s->map_len) return pins->segs[i];
    }
    return NULL;
}

int db_snapshot(jvdb_db *db, uint64_t from_lsn, struct db_snapshot *out)
{
    memset(out, 0, sizeof *out);
    out->dim = db->m.dim;
    /* One read section: the state as of the visible LSN, writers going on meanwhile. */
    rp_enter();
    out->lsn = db_snapshot_lsn(db);
    const struct db_seglist *l = db_segments(db);
    size_t cap = 1024, pcap = l->n + 4;
    out->recs = malloc(cap * sizeof *out->recs);
    out->pins.segs = malloc(pcap * sizeof *out->pins.segs);
    int rc = JVDB_OK;
    if (!out->recs || !out->pins.segs) {
        rc = err_set(JVDB_ENOMEM, "out of memory taking a snapshot");
        goto done;
    }
    for (size_t i = 0; i < l->n; i++) {
        seg_ref(l->segs[i]);
        out->pins.segs[out->pins.n++] = l->segs[i];
    }
    const struct kd_table *t = __atomic_load_n(&db->kd.table, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < t->cap; i++) {
        const struct kd_entry *head = __atomic_load_n(&t->b[i].e, __ATOMIC_ACQUIRE);
        if (!head || head == KD_DEAD) continue;
        const struct kd_entry *e = keydir_visible(head, out->lsn);
        if (!e || e->lsn <= from_lsn) continue;
        const uint8_t *rec = (const uint8_t *)keydir_record(e);
        struct segment *s = pins_find(&out->pins, rec);
        if (!s) {
            /* Repointed by a compaction that committed after we listed the segments: its output is
             * in the current list (and mapped: we are in a read section). */
            const struct db_seglist *now = db_segments(db);
            for (size_t j = 0; j < now->n && !s; j++)
                if (rec >= now->segs[j]->map && rec < now->segs[j]->map + now->segs[j]->map_len) s = now->segs[j];
            if (!s) {
                /* Impossible while the read section holds every mapping; skipping the record would make
                 * a backup silently miss a vector, so the snapshot fails instead. */
                rc = err_set(JVDB_ECORRUPT, "snapshot of '%s': the record with LSN %llu is in no mapped segment",
                             jvdb_db_name(db), (unsigned long long)e->lsn);
                goto done;
            }
            if (out->pins.n == pcap) {
                struct segment **np = realloc(out->pins.segs, (pcap *= 2) * sizeof *np);
                if (!np) {
                    rc = err_set(JVDB_ENOMEM, "out of memory");
                    goto done;
                }
                out->pins.segs = np;
            }
            seg_ref(s);
            out->pins.segs[out->pins.n++] = s;
        }
        struct db_live_rec r = {s, (uint64_t)(rec - s->map), e->lsn, e->rec_len, 0, e->kind, 0};
        if (out->n == cap) {
            struct db_live_rec *nr = realloc(out->recs, (cap *= 2) * sizeof *nr);
            if (!nr) {
                rc = err_set(JVDB_ENOMEM, "out of memory taking a snapshot of %zu records", cap);
                goto done;
            }
            out->recs = nr;
        }
        out->recs[out->n++] = r;
    }
done:
    rp_exit();
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
    rp_enter();
    const struct kd_table *t = __atomic_load_n(&db->kd.table, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < t->cap; i++) {
        struct kd_entry *e = __atomic_load_n(&t->b[i].e, __ATOMIC_ACQUIRE);
        if (e && e != KD_DEAD) __atomic_store_n(&e->hits, __atomic_load_n(&e->hits, __ATOMIC_RELAXED) / 2, __ATOMIC_RELAXED);
    }
    rp_exit();
}

/* ---------------------------------------------------------------- new segment files */

int segw_begin(jvdb_db *db, struct segw *w)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->fd = -1;
    if (db->mode == DB_MODE_READONLY) return db_check_writable(db);   /* salvage writes repairs */
    db_write_lock(db);
    w->no = db->m.next_segment++;   /* persisted by the next MANIFEST write; orphans cover a crash */
    db_write_unlock(db);
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
    /* Start writeback of what was just written (asynchronous), so dirty data stays bounded and the
     * final fdatasync, which the writers' own fdatasyncs queue behind, has little left to do. */
    sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
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

/* Adds the outputs to the segment list (they hold records from now on); write_mu held. */
static int swap_add_outputs(jvdb_db *db, struct segment **outs, size_t nouts)
{
    assert(db_writer_held(db));
    struct segment **n = malloc((db->nsegs + nouts) * sizeof *n);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    memcpy(n, db->segs, db->nsegs * sizeof *n);
    if (nouts) memcpy(n + db->nsegs, outs, nouts * sizeof *n);   /* a compaction may keep nothing: outs NULL */
    qsort(n, db->nsegs + nouts, sizeof *n, cmp_seg);
    struct segment **old = db->segs;
    size_t old_n = db->nsegs, old_cap = db->segs_cap;
    db->segs = n;
    db->nsegs += nouts;
    db->segs_cap = db->nsegs;
    int rc = db_publish_segs(db);
    if (rc) {
        free(n);
        db->segs = old;
        db->nsegs = old_n;
        db->segs_cap = old_cap;
        return rc;
    }
    free(old);
    return JVDB_OK;
}

/* The inputs taken out of the list, whose database references go once no reader can hold a
 * pointer into them.  Guarded by write_mu (the deferred callback runs under it too). */
struct swap_retired {
    int passed, abandoned;
    size_t n;
    struct segment *segs[];
};

static void swap_retired_fn(void *ctx, void *arg)
{
    (void)ctx;
    struct swap_retired *r = arg;
    r->passed = 1;
    if (!r->abandoned) return;
    /* The swap stopped waiting (a reader held on too long): drop the references here. */
    for (size_t i = 0; i < r->n; i++) seg_unref(r->segs[i]);
    free(r);
}

/* Takes the inputs out of the segment list and retires them; write_mu held.  The database's
 * reference goes after a grace period, so a reader still holding a pointer into an input (an
 * entry it loaded before the repointing) reads valid memory; the file goes with the last pin.
 * Returns the set to release (swap_release_inputs), NULL if there is none. */
static struct swap_retired *swap_retire_inputs(jvdb_db *db, const struct db_pinned *ins)
{
    assert(db_writer_held(db));
    size_t n = 0, nret = 0;
    struct swap_retired *r = malloc(sizeof *r + (ins->n ? ins->n : 1) * sizeof r->segs[0]);
    struct segment **ret = r ? r->segs : NULL;
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        if (!pinned_has(ins, s)) {
            db->segs[n++] = s;
            continue;
        }
        if (__atomic_load_n(&s->live_records, __ATOMIC_RELAXED))
            log_error("swap: %s still holds %llu live records after the swap", s->path,
                      (unsigned long long)__atomic_load_n(&s->live_records, __ATOMIC_RELAXED));
        atomic_store(&s->retired, true);
        if (ret) ret[nret++] = s;
        else log_error("swap: out of memory: %s stays mapped until close", s->path);
    }
    db->nsegs = n;
    if (db_publish_segs(db)) log_error("swap: out of memory publishing the segment list; readers see the old one");
    if (!r) return NULL;
    r->passed = r->abandoned = 0;
    r->n = nret;
    rp_defer(&db->gc, swap_retired_fn, NULL, r);
    return r;
}

/* Waits (outside every lock but for brief polls) until no reader can hold a pointer into the
 * retired inputs, then drops the database's references, so that unmapping, truncating and
 * unlinking them happens in the compaction's thread when its pins go, never under write_mu. */
static void swap_release_inputs(jvdb_db *db, struct swap_retired *r)
{
    if (!r) return;
    for (unsigned waited = 0;; waited++) {
        db_write_lock(db);
        rp_poll(&db->gc);
        int passed = r->passed;
        if (!passed && waited >= 10000) r->abandoned = 1;   /* 10 s: let the callback do it */
        db_write_unlock(db);
        if (passed) break;
        if (waited >= 10000) {
            log_warn("swap: a reader held on for 10 s; the replaced segments go when it leaves");
            return;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < r->n; i++) seg_unref(r->segs[i]);
    free(r);
}

#define SWAP_CHUNK 1024

/* A mutex is not fair: re-taking write_mu at once after a chunk would let the swap starve the
 * writers that queued meanwhile (bench/results/compaction.md, prototype (a)). */
static void swap_pause(void)
{
    const struct timespec pause = {0, 20000};
    nanosleep(&pause, NULL);
}

int db_swap(jvdb_db *db, const struct db_pinned *ins, struct segment **outs, size_t nouts,
            const struct db_move *moves, size_t nmoves, const struct db_live_rec *drops, size_t ndrops)
{
    int wrc = db_check_writable(db);
    if (wrc) return wrc;
    db_write_lock(db);
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
    rc = swap_add_outputs(db, outs, nouts);
    if (rc) {
        manifest_free(&next);
        goto unlock;
    }
    io_crash_point("swap.before_manifest");
    /* The commit point. */
    if ((rc = manifest_store(db->dir, &next))) {
        manifest_free(&next);
        size_t n = 0;
        for (size_t i = 0; i < db->nsegs; i++) {
            int is_output = 0;
            for (size_t j = 0; j < nouts; j++) is_output |= db->segs[i] == outs[j];
            if (!is_output) db->segs[n++] = db->segs[i];
        }
        db->nsegs = n;
        if (db_publish_segs(db)) log_error("swap: out of memory publishing the segment list");
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
    db_write_unlock(db);

    /* After the commit the keydir follows the copies, a chunk at a time under write_mu: readers
     * never wait (each repointing is one release store of an identical record's address), and
     * writers wait at most one chunk.  In between, some versions point at the inputs and some at
     * the outputs: both hold the same bytes and both stay mapped until the inputs are retired
     * below; a version a writer superseded meanwhile is still found through its successor. */
    uint32_t dim = db->m.dim;
    for (size_t base = 0; base < nmoves; base += SWAP_CHUNK) {
        db_write_lock(db);
        for (size_t i = base; i < nmoves && i < base + SWAP_CHUNK; i++)
            keydir_repoint(&db->kd, moves[i].from->map + moves[i].from_off, moves[i].to, moves[i].to_off, dim);
        db_write_unlock(db);
        swap_pause();
    }
    for (size_t base = 0; base < ndrops; base += SWAP_CHUNK) {
        db_write_lock(db);
        for (size_t i = base; i < ndrops && i < base + SWAP_CHUNK; i++)
            keydir_drop_tombstone(&db->kd, drops[i].seg->map + drops[i].offset, dim);
        db_write_unlock(db);
        swap_pause();
    }
    db_write_lock(db);
    struct swap_retired *r = swap_retire_inputs(db, ins);
    db_gc_locked(db);
    db_write_unlock(db);
    swap_release_inputs(db, r);
    return JVDB_OK;
unlock:
    db_write_unlock(db);
    return rc;
}

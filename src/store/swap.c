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
 *
 * Repointing after the commit takes no lock that writers wait for.  Each version still pointing at
 * an input record is switched to the identical copy with a compare-and-swap on its rec; a put's
 * live count moves with a compare-and-swap on its seg, which a superseding writer takes with an
 * exchange, so exactly one of the two moves it; a slot's vector with a compare-and-swap from the
 * input's address (that record's alone), so a slot a writer changed or reused keeps the writer's
 * value.  A slot table a writer grew meanwhile (it copies under write_mu) is caught under write_mu
 * by its capacity, and the slots are repeated on it.  Only forgetting dropped tombstones (bucket
 * table and slot free list: the writer's) takes write_mu, 256 at a time.
 */
#include "store/swap.h"
#include "store/db_impl.h"

#include "core/clock.h"
#include "core/grow.h"
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

#define SEGW_BUF       (1u << 20)
#define SEGW_IOV       1024       /* pieces per pwritev (IOV_MAX) */
#define SEGW_WRITEBACK (4u << 20) /* start writeback every this many bytes */

int db_seal(jvdb_db *db)
{
    db_write_lock(db);
    int rc = db_check_writable(db);
    if (rc == JVDB_OK && atomic_load(&db->failed))
        rc = err_set(JVDB_EFAILED, "database '%s' refuses writes after an I/O failure; reopen it", db->m.name);
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

/* Whether the pinned set holds segment s. */
static int pinned_has(const struct db_pinned *p, const struct segment *s)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->segs[i] == s) return 1;
    return 0;
}

/* Appends one record to a listing. */
static int live_push(struct db_live_rec **v, size_t *n, size_t *cap, const struct db_live_rec *r)
{
    struct db_live_rec *nv = grow_array(*v, cap, *n + 1, sizeof *nv, 4096);
    if (!nv) return err_set(JVDB_ENOMEM, "out of memory listing %zu records", *n + 1);
    *v = nv;
    (*v)[(*n)++] = *r;
    return JVDB_OK;
}

#define LIST_SECTION 4096 /* records per read section while listing */
#define LIST_BATCH   32   /* records looked up together while listing */

int db_live_records(jvdb_db *db, const struct db_pinned *p, struct db_live_rec **out, size_t *n,
                    uint64_t *min_lsn_outside)
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
    /* Sized once from the inputs' record counts (an upper bound: the inputs are sealed). */
    size_t k = 0, cap = 0;
    for (size_t i = 0; i < p->n; i++) cap += __atomic_load_n(&p->segs[i]->records, __ATOMIC_RELAXED);
    struct db_live_rec *v = malloc((cap ? cap : 1) * sizeof *v);
    if (!v) return err_set(JVDB_ENOMEM, "out of memory listing %zu records", cap);
    uint32_t dim = db->m.dim;
    int rc = JVDB_OK;
    for (size_t i = 0; i < p->n && rc == JVDB_OK; i++) {
        struct segment *s = p->segs[i];
        uint64_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
        unsigned in_section = 0;
        int end = 0;
        uint64_t off = SEG_HEADER_SIZE;
        rp_enter();
        while (!end && rc == JVDB_OK && off + REC_HEADER_SIZE <= size) {
            /* A batch at a time: hash the ids and fetch their buckets, then their entries, then look
             * them up, so the keydir's cache misses overlap instead of coming one after another. */
            struct {
                uint64_t off, hash;
            } b[LIST_BATCH];
            int nb = 0;
            while (nb < LIST_BATCH && off + REC_HEADER_SIZE <= size) {
                const struct rec_header *h = (const struct rec_header *)(s->map + off);
                if (h->total_len < REC_HEADER_SIZE || off + h->total_len > size) {
                    end = 1; /* salvage leftovers */
                    break;
                }
                b[nb].off = off;
                b[nb].hash = keydir_hash(rec_id(h, dim), h->id_len);
                keydir_prefetch(&db->kd, b[nb++].hash, 0);
                off += h->total_len;
            }
            for (int j = 0; j < nb; j++) keydir_prefetch(&db->kd, b[j].hash, 1);
            for (int j = 0; j < nb && rc == JVDB_OK; j++) {
                const struct rec_header *h = (const struct rec_header *)(s->map + b[j].off);
                const struct kd_entry *head = keydir_find_hashed(&db->kd, rec_id(h, dim), h->id_len, b[j].hash);
                const struct kd_entry *e = head;
                while (e && keydir_record(e) != h) e = __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE);
                if (!e) continue;
                /* keep: an older version readers may still reach, or a tombstone older versions
                 * still hang from: copied whatever the tombstone rule says. */
                int keep = e != head || __atomic_load_n(&e->prev, __ATOMIC_ACQUIRE) != NULL;
                struct db_live_rec r = {
                    s,       b[j].off,     h->lsn, h->total_len, __atomic_load_n(&e->hits, __ATOMIC_RELAXED),
                    h->kind, (uint8_t)keep
                };
                rc = live_push(&v, &k, &cap, &r);
            }
            if ((in_section += (unsigned)nb) >= LIST_SECTION) {
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
        const struct kd_entry *head = keydir_bucket(t, i);
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
            struct segment **np = grow_array(out->pins.segs, &pcap, out->pins.n + 1, sizeof *np, 16);
            if (!np) {
                rc = err_set(JVDB_ENOMEM, "out of memory");
                goto done;
            }
            out->pins.segs = np;
            seg_ref(s);
            out->pins.segs[out->pins.n++] = s;
        }
        struct db_live_rec r = { s, (uint64_t)(rec - s->map), e->lsn, e->rec_len, 0, e->kind, 0 };
        struct db_live_rec *nr = grow_array(out->recs, &cap, out->n + 1, sizeof *nr, 1024);
        if (!nr) {
            rc = err_set(JVDB_ENOMEM, "out of memory taking a snapshot of %zu records", out->n + 1);
            goto done;
        }
        out->recs = nr;
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
        struct kd_entry *e = keydir_bucket(t, i);
        if (e && e != KD_DEAD)
            __atomic_store_n(&e->hits, __atomic_load_n(&e->hits, __ATOMIC_RELAXED) / 2, __ATOMIC_RELAXED);
    }
    rp_exit();
}

/* ---------------------------------------------------------------- new segment files */

int segw_begin(jvdb_db *db, struct segw *w)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->fd = -1;
    if (db->mode == DB_MODE_READONLY) return db_check_writable(db); /* salvage writes repairs */
    db_write_lock(db);
    w->no = db->m.next_segment++; /* persisted by the next MANIFEST write; orphans cover a crash */
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
    h->created_ns = clock_wall_ns();
    h->checksum = XXH3_64bits(h, offsetof(struct seg_header, checksum));
    w->buf_len = SEG_HEADER_SIZE;
    w->size = SEG_HEADER_SIZE;
    return JVDB_OK;
}

/* Writes what is pending (the copy buffer, or the pieces appended by reference) at the end of the
 * file, and starts writeback of every full step written so far. */
static int segw_flush(struct segw *w)
{
    if (w->buf_len) {
        if (io_pwrite_all(w->fd, w->buf, w->buf_len, (off_t)w->written) < 0)
            return err_errno(errno, "cannot write %s", w->tmp_path);
        w->written += w->buf_len;
        w->buf_len = 0;
    }
    if (w->iov_n) {
        if (io_pwritev_all(w->fd, w->iov, w->iov_n, (off_t)w->written) < 0)
            return err_errno(errno, "cannot write %s", w->tmp_path);
        w->written += w->iov_bytes;
        w->iov_n = 0;
        w->iov_bytes = 0;
    }
    /* Start writeback of what was just written (asynchronous, and only the new range), so dirty
     * data stays bounded and the final fdatasync, which the writers' own fdatasyncs queue behind,
     * has little left to do. */
    if (w->written - w->writeback_from >= SEGW_WRITEBACK) {
        sync_file_range(w->fd, (off_t)w->writeback_from, (off_t)(w->written - w->writeback_from),
                        SYNC_FILE_RANGE_WRITE);
        w->writeback_from = w->written;
    }
    return JVDB_OK;
}

/* Keeps the output's LSN range and counts for the segment opened at the end. */
static void segw_note(struct segw *w, uint32_t len, uint64_t lsn)
{
    w->size += len;
    w->records++;
    if (w->min_lsn == 0 || lsn < w->min_lsn) w->min_lsn = lsn;
    if (lsn > w->max_lsn) w->max_lsn = lsn;
}

int segw_append(struct segw *w, const void *rec, uint32_t len, uint64_t lsn, uint64_t *offset)
{
    if (w->iov_n || w->buf_len + len > SEGW_BUF) {
        int rc = segw_flush(w);
        if (rc) return rc;
    }
    *offset = w->size;
    if (len > SEGW_BUF) {
        if (io_pwrite_all(w->fd, rec, len, (off_t)w->written) < 0)
            return err_errno(errno, "cannot write %s", w->tmp_path);
        w->written += len;
    } else {
        memcpy(w->buf + w->buf_len, rec, len);
        w->buf_len += len;
    }
    segw_note(w, len, lsn);
    return JVDB_OK;
}

int segw_append_ref(struct segw *w, const void *rec, uint32_t len, uint64_t lsn, uint64_t *offset)
{
    if (w->buf_len || w->iov_bytes >= SEGW_BUF) {
        int rc = segw_flush(w);
        if (rc) return rc;
    }
    if (!w->iov) {
        w->iov = malloc(SEGW_IOV * sizeof *w->iov);
        if (!w->iov) return err_set(JVDB_ENOMEM, "out of memory");
    }
    struct iovec *last = w->iov_n ? &w->iov[w->iov_n - 1] : NULL;
    if (last && (const char *)last->iov_base + last->iov_len == (const char *)rec) {
        last->iov_len += len;
    } else {
        if (w->iov_n == SEGW_IOV) {
            int rc = segw_flush(w);
            if (rc) return rc;
        }
        w->iov[w->iov_n++] = (struct iovec){ (void *)rec, len };
    }
    w->iov_bytes += len;
    *offset = w->size;
    segw_note(w, len, lsn);
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
    free(w->iov);
    w->buf = w->tmp_path = NULL;
    w->iov = NULL;
    *out = s;
    return JVDB_OK;
}

void segw_abort(struct segw *w)
{
    if (w->fd >= 0) io_close(w->fd);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->buf);
    free(w->tmp_path);
    free(w->iov);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

/* ---------------------------------------------------------------- the swap */

/* qsort order of uint64_t. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* qsort order of segments by number. */
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
    if (nouts) memcpy(n + db->nsegs, outs, nouts * sizeof *n); /* a compaction may keep nothing: outs NULL */
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

/* Deferred callback once no reader can hold a pointer into the swapped-out inputs: marks it passed, and drops their
 * references itself if the swap stopped waiting. */
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
        if (!passed && waited >= 10000) r->abandoned = 1; /* 10 s: let the callback do it */
        db_write_unlock(db);
        if (passed) break;
        if (waited >= 10000) {
            log_warn("swap: a reader held on for 10 s; the replaced segments go when it leaves");
            return;
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < r->n; i++) seg_unref(r->segs[i]);
    free(r);
}

#define SWAP_CHUNK       256  /* tombstones forgotten per hold of write_mu */
#define SWAP_PAUSE_EVERY 64   /* chunks between two sleeps */
#define SWAP_SECTION     4096 /* repointings per read section (a multiple of SWAP_BATCH) */
#define SWAP_BATCH       32   /* ids hashed and fetched together */

/* Hashes the ids of n moved (or dropped) records and has their keydir buckets, then entries,
 * fetched into cache, so the look-ups that follow overlap their misses (inside a read section). */
static void swap_prefetch(jvdb_db *db, uint64_t *hash, size_t n, const struct db_move *moves,
                          const struct db_live_rec *drops, uint32_t dim)
{
    for (size_t j = 0; j < n; j++) {
        const struct rec_header *h = (const struct rec_header *)(moves ? moves[j].from->map + moves[j].from_off
                                                                       : drops[j].seg->map + drops[j].offset);
        hash[j] = keydir_hash(rec_id(h, dim), h->id_len);
        keydir_prefetch(&db->kd, hash[j], 0);
    }
    for (size_t j = 0; j < n; j++) keydir_prefetch(&db->kd, hash[j], 1);
}

/* Whether the slot table still has `cap` entries, i.e. no writer replaced it (it is replaced only
 * to grow, under write_mu, copying what it holds then): the repointing pass that began with it
 * changed the table that stays current. */
static int swap_slots_current(jvdb_db *db, uint32_t cap)
{
    db_write_lock(db);
    int same = db->kd.slots->cap == cap;
    db_write_unlock(db);
    return same;
}

/* The capacity of the current slot table (inside a read section). */
static uint32_t swap_slots_cap(jvdb_db *db) { return __atomic_load_n(&db->kd.slots, __ATOMIC_ACQUIRE)->cap; }

/* Repoints every move (keydir_repoint), in read sections, then makes sure no slot table a writer
 * grew meanwhile kept a vector of an input: the slots are repeated on the newer table. */
static void swap_repoint_all(jvdb_db *db, const struct db_move *moves, size_t nmoves, uint32_t dim)
{
    rp_enter();
    uint32_t cap = swap_slots_cap(db);
    uint64_t hash[SWAP_BATCH];
    for (size_t base = 0; base < nmoves; base += SWAP_BATCH) {
        size_t nb = nmoves - base < SWAP_BATCH ? nmoves - base : SWAP_BATCH;
        if (base % SWAP_SECTION == 0 && base) {
            rp_exit(); /* let reclamation move on */
            rp_enter();
        }
        swap_prefetch(db, hash, nb, &moves[base], NULL, dim);
        for (size_t j = 0; j < nb; j++) {
            const struct db_move *m = &moves[base + j];
            keydir_repoint(&db->kd, m->from->map + m->from_off, m->from, m->to, m->to_off, dim, hash[j]);
        }
    }
    rp_exit();
    while (!swap_slots_current(db, cap)) {
        rp_enter();
        cap = swap_slots_cap(db);
        for (size_t i = 0; i < nmoves; i++) {
            if (i % SWAP_SECTION == SWAP_SECTION - 1) {
                rp_exit();
                rp_enter();
            }
            struct kd_slots *sl = __atomic_load_n(&db->kd.slots, __ATOMIC_ACQUIRE);
            const uint8_t *from = moves[i].from->map + moves[i].from_off, *to = moves[i].to->map + moves[i].to_off;
            const struct rec_header *h = (const struct rec_header *)from;
            for (struct kd_entry *v = keydir_find(&db->kd, rec_id(h, dim), h->id_len); v;
                 v = __atomic_load_n(&v->prev, __ATOMIC_ACQUIRE))
                if (v->kind == REC_KIND_PUT && v->slot != KD_NO_SLOT &&
                    keydir_record(v) == (const struct rec_header *)to)
                    keydir_repoint_slot(sl, v->slot, from, to);
        }
        rp_exit();
    }
}

/* A mutex is not fair: re-taking write_mu at once after a chunk would let the swap starve the
 * writers that queued meanwhile (bench/results/compaction.md, prototype (a)). */
static void swap_pause(void)
{
    const struct timespec pause = { 0, 20000 };
    nanosleep(&pause, NULL);
}

int db_swap(jvdb_db *db, const struct db_pinned *ins, struct segment **outs, size_t nouts, const struct db_move *moves,
            size_t nmoves, const struct db_live_rec *drops, size_t ndrops)
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
    next.last_compaction_ns = clock_wall_ns();
    rc = swap_add_outputs(db, outs, nouts);
    if (rc) {
        manifest_free(&next);
        goto unlock;
    }
    io_crash_point("swap.before_manifest");
    /* The commit point, under write_mu: the swap is one step for writers (db_manifest_commit_locked). */
    if ((rc = db_manifest_commit_locked(db, &next))) {
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

    /* After the commit the keydir follows the copies without write_mu: each version still pointing
     * at a moved record is switched to the identical copy with a compare-and-swap (one a writer
     * superseded meanwhile keeps the writer's version), so neither readers nor writers ever wait
     * for this.  In between, some versions point at the inputs and some at the outputs: both hold
     * the same bytes and both stay mapped until the inputs are retired below. */
    uint32_t dim = db->m.dim;
    swap_repoint_all(db, moves, nmoves, dim);
    /* Forgetting a tombstone changes the bucket table and the slots, which only write_mu's holder
     * may: a chunk at a time, its ids hashed and fetched into cache before taking the lock, so a
     * writer waits a few tens of microseconds at most. */
    uint64_t hash[SWAP_CHUNK];
    for (size_t base = 0, chunks = 0; base < ndrops; base += SWAP_CHUNK, chunks++) {
        size_t nb = ndrops - base < SWAP_CHUNK ? ndrops - base : SWAP_CHUNK;
        rp_enter();
        swap_prefetch(db, hash, nb, NULL, &drops[base], dim);
        rp_exit();
        db_write_lock(db);
        for (size_t j = 0; j < nb; j++)
            keydir_drop_tombstone(&db->kd, drops[base + j].seg->map + drops[base + j].offset, dim, hash[j]);
        db_write_unlock(db);
        /* The hashing between chunks leaves a woken writer its turn most times; a sleep now and
         * then makes sure of it (each sleep costs a scheduler slice on a busy machine). */
        if (chunks % SWAP_PAUSE_EVERY == SWAP_PAUSE_EVERY - 1) swap_pause();
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

/*
 * compact.c — compaction of one database (docs/ARCHITECTURE.md 7, steps 1 to 6), reads and writes going on.
 *
 *   1. seal the active segment (db_seal), so every record that exists now is in a sealed file;
 *   2. choose the inputs (all sealed segments, or those past the policy) and pin them;
 *   3. list the records the keydir points at in them, order them hottest first then in file order,
 *      and copy them as raw bytes (checksums stay valid) into new segment files "<N>.seg.tmp";
 *   4. fsync, rename to "<N>.seg", fsync the directory (segw_finish);
 *   5. db_swap: the MANIFEST naming the outputs instead of the inputs is the commit point; then the
 *      keydir follows the records that nobody overwrote or deleted meanwhile;
 *   6. unpin: the inputs disappear when the last reader lets go.
 *
 * Tombstones.  A tombstone may be left behind only when no record it shadows can survive anywhere:
 * every sealed segment outside the inputs holds only records newer than it (their smallest LSN is
 * above the tombstone's; positions mean nothing since compaction outputs carry old LSNs), and it is
 * at or below the backup horizon so incremental backups still find their deletes.  With no backup
 * ever taken, the horizon does not hold tombstones back.  Continuous backup (src/backup/wal.c) needs
 * every record, superseded or not, above the LSN it has shipped: a sealed segment holding one is
 * never an input (compact_choose, db_ship_pin).
 *
 * A cancelled or timed-out run removes its temporary and finished-but-uncommitted files and changes
 * nothing; a crash at any point is covered by the orphan rule of recovery.
 */
#include "compact/compact.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/io.h"
#include "core/log.h"
#include "store/db.h"
#include "store/record.h"
#include "store/swap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct choose_ctx {
    const jvdb_compact_policy *policy;
    uint64_t segment_max;
    int full;
    int small_count;
    uint64_t shipped; /* continuous backup: segments with records above it stay (db_ship_pin) */
};

/* db_pin_sealed chooser: every sealed segment in a full run, else those the policy wants; never one
 * holding records the backup log has not shipped yet. */
static int compact_choose(void *arg, const struct segment *s)
{
    struct choose_ctx *c = arg;
    if (__atomic_load_n(&s->max_lsn, __ATOMIC_RELAXED) > c->shipped) return 0;
    return c->full || compact_segment_wanted(c->policy, c->segment_max, s, c->small_count);
}

/* qsort order: more hits first, then segment and file order. */
static int compact_order(const void *a, const void *b)
{
    const struct db_live_rec *x = a, *y = b;
    if (x->hits != y->hits) return x->hits > y->hits ? -1 : 1;
    if (x->seg->no != y->seg->no) return x->seg->no < y->seg->no ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Hot records (read since the last compaction) first, hottest first; the rest keep the listing's
 * order, which is file order already: a full sort of a million records cost more than the
 * copy saves.  Falls back to sorting everything when the hot ones cannot be set aside. */
static void compact_sort(struct db_live_rec *recs, size_t n)
{
    size_t hot = 0;
    for (size_t i = 0; i < n; i++) hot += recs[i].hits > 0;
    if (hot == 0) return;
    struct db_live_rec *h = malloc(hot * sizeof *h);
    if (!h) {
        qsort(recs, n, sizeof *recs, compact_order);
        return;
    }
    size_t j = n, k = 0;
    for (size_t i = n; i-- > 0;) {
        if (recs[i].hits > 0) h[k++] = recs[i];
        else recs[--j] = recs[i];
    }
    qsort(h, hot, sizeof *h, compact_order);
    memcpy(recs, h, hot * sizeof *h);
    free(h);
}

struct outputs {
    struct segment **segs;
    size_t n, cap;
};

/* Retires and drops every output segment not yet swapped in. */
static void outputs_discard(struct outputs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        atomic_store(&o->segs[i]->retired, true);
        seg_unref(o->segs[i]);
    }
    free(o->segs);
    memset(o, 0, sizeof *o);
}

/* Appends a finished output segment to the list. */
static int outputs_push(struct outputs *o, struct segment *s)
{
    struct segment **n = grow_array(o->segs, &o->cap, o->n + 1, sizeof *n, 4);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    o->segs = n;
    o->segs[o->n++] = s;
    return JVDB_OK;
}

/* Publishes the output being written and adds it to the list; on failure nothing of it remains. */
static int outputs_finish(struct outputs *o, struct segw *w)
{
    struct segment *s;
    int rc = segw_finish(w, &s);
    if (rc) {
        segw_abort(w);
        return rc;
    }
    if ((rc = outputs_push(o, s))) {
        atomic_store(&s->retired, true);
        seg_unref(s);
    }
    return rc;
}

static uint64_t compact_file_bytes(jvdb_db *db)
{
    jvdb_stats st;
    jvdb_stats_get(db, &st);
    return st.file_bytes;
}

/* JVDB_EBUSY (with the message) when the run must stop: cancelled, or past its time limit. */
static int compact_should_stop(jvdb_db *db, const jvdb_compact_options *opts, const jvdb_compact_policy *policy,
                               int64_t t0)
{
    /* Set by another thread (a compactor or server stopping) with an atomic store. */
    if (opts->cancel && __atomic_load_n(opts->cancel, __ATOMIC_RELAXED))
        return err_set(JVDB_EBUSY, "compaction of '%s' was cancelled", jvdb_db_name(db));
    if (policy->max_seconds > 0 && (double)(clock_mono_ns() - t0) / 1e9 > policy->max_seconds)
        return err_set(JVDB_EBUSY, "compaction of '%s' stopped after its limit of %.1f s", jvdb_db_name(db),
                       policy->max_seconds);
    return JVDB_OK;
}

/* What one run works on, from the pinned inputs to the outputs it copied them into. */
struct compact_plan {
    struct db_pinned in;      /* the input segments, pinned */
    struct choose_ctx cc;     /* how they were chosen */
    size_t sealed;            /* sealed segments when the run began */
    uint64_t horizon;         /* backup horizon: tombstones above it stay */
    struct db_live_rec *recs; /* the live records of the inputs, in copy order */
    size_t nrecs;
    uint64_t min_outside;      /* smallest LSN of the sealed segments left outside */
    struct db_move *moves;     /* records copied, and where to */
    uint32_t *move_out;        /* output index of each move */
    struct db_live_rec *drops; /* tombstones dropped */
    size_t nmoves, ndrops;
    struct outputs out; /* the finished output segments */
    uint64_t hot_bytes; /* bytes of hot records leading the first output */
};

/* Frees the plan; unless the swap took them, the outputs are discarded as well. */
static void compact_plan_free(struct compact_plan *p, int swapped)
{
    if (swapped) free(p->out.segs); /* the database holds the outputs now */
    else outputs_discard(&p->out);
    free(p->moves);
    free(p->move_out);
    free(p->drops);
    free(p->recs);
    db_unpin(&p->in);
}

/* Steps 1-2: seals the active segment and pins the inputs (all sealed segments when a trigger
 * fired for the whole database but no single segment passes the policy). */
static int compact_pick_inputs(jvdb_db *db, const jvdb_compact_options *opts, const jvdb_compact_policy *policy,
                               jvdb_compact_stats *st, struct compact_plan *p)
{
    int rc = db_seal(db);
    if (rc) return rc;
    io_crash_point("compact.after_seal");
    uint64_t segment_max = db_segment_max(db);
    p->cc = (struct choose_ctx){ policy, segment_max, opts->full, 0, db_ship_pin(db) };
    rp_enter();
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n; i++) {
        if (l->segs[i] == l->active) continue;
        p->sealed++;
        if (__atomic_load_n(&l->segs[i]->size, __ATOMIC_ACQUIRE) < segment_max / 4) p->cc.small_count++;
    }
    rp_exit();
    /* Versions superseded before the seal are unlinked once no reader needs them: wait briefly for
     * that, so tombstones in the inputs stand alone and may be dropped (a reader holding on past
     * the wait only means those tombstones are copied this time). */
    db_settle(db, 2000);
    if ((rc = db_pin_sealed(db, compact_choose, &p->cc, &p->in))) return rc;
    if (p->in.n == 0 && st->trigger != JVDB_TRIGGER_NONE) {
        db_unpin(&p->in);
        p->cc.full = 1;
        if ((rc = db_pin_sealed(db, compact_choose, &p->cc, &p->in))) return rc;
    }
    st->full = p->in.n == p->sealed;
    st->segments_in = (uint32_t)p->in.n;
    return JVDB_OK;
}

/* Whether a tombstone may be dropped: it shadows nothing that survives outside the inputs, and
 * incremental backups no longer need it (see the head of this file). */
static int compact_droppable(const struct compact_plan *p, const struct db_live_rec *r)
{
    return r->kind == REC_KIND_DELETE && !r->keep && r->lsn < p->min_outside &&
           (p->horizon == 0 || r->lsn <= p->horizon);
}

/* Step 3, the list: the live records of the inputs in copy order.  A partial run that would mostly
 * rewrite tombstones pinned by older segments left outside reclaims (almost) nothing, and the
 * policy would ask for it again at every check: it takes every sealed segment instead. */
static int compact_list(jvdb_db *db, jvdb_compact_stats *st, struct compact_plan *p)
{
    p->horizon = db_backup_horizon(db);
    int rc = db_live_records(db, &p->in, &p->recs, &p->nrecs, &p->min_outside);
    if (rc) return rc;
    if (!p->cc.full) {
        uint64_t in_bytes = 0, keep_bytes = 0;
        int blocked = 0;
        for (size_t i = 0; i < p->in.n; i++) in_bytes += p->in.segs[i]->size - SEG_HEADER_SIZE;
        for (size_t i = 0; i < p->nrecs; i++) {
            const struct db_live_rec *r = &p->recs[i];
            if (!compact_droppable(p, r)) keep_bytes += r->len;
            blocked |=
                r->kind == REC_KIND_DELETE && r->lsn >= p->min_outside && (p->horizon == 0 || r->lsn <= p->horizon);
        }
        if (blocked && (in_bytes - keep_bytes) * 20 < in_bytes) {
            free(p->recs);
            p->recs = NULL;
            p->nrecs = 0;
            db_unpin(&p->in);
            p->cc.full = 1;
            if ((rc = db_pin_sealed(db, compact_choose, &p->cc, &p->in))) return rc;
            st->full = 1;
            st->segments_in = (uint32_t)p->in.n;
            if ((rc = db_live_records(db, &p->in, &p->recs, &p->nrecs, &p->min_outside))) return rc;
        }
    }
    compact_sort(p->recs, p->nrecs);
    db_decay_hits(db);
    return JVDB_OK;
}

/* Steps 3-4, the copy: writes the records to keep into finished output segments, noting each move
 * and each dropped tombstone; stops (JVDB_EBUSY) when cancelled or past the time limit. */
static int compact_copy(jvdb_db *db, const jvdb_compact_options *opts, const jvdb_compact_policy *policy, int64_t t0,
                        struct compact_plan *p)
{
    size_t nrecs = p->nrecs, room = nrecs ? nrecs : 1;
    p->moves = malloc(room * sizeof *p->moves);
    p->move_out = malloc(room * sizeof *p->move_out);
    p->drops = malloc(room * sizeof *p->drops);
    if (!p->moves || !p->drops || !p->move_out)
        return err_set(JVDB_ENOMEM, "out of memory planning a compaction of %zu records", nrecs);
    uint64_t segment_max = p->cc.segment_max;
    struct segw w;
    int writing = 0, rc = JVDB_OK;
    for (size_t i = 0; i < nrecs; i++) {
        const struct db_live_rec *r = &p->recs[i];
        if (compact_droppable(p, r)) {
            p->drops[p->ndrops++] = *r;
            continue;
        }
        if ((i & 1023) == 0 && (rc = compact_should_stop(db, opts, policy, t0))) break;
        if ((i & 1023) == 0 && opts->progress) opts->progress(opts->progress_arg, i, nrecs);
        if (writing && w.size > SEG_HEADER_SIZE && w.size + r->len > segment_max) {
            writing = 0;
            if ((rc = outputs_finish(&p->out, &w))) break;
        }
        if (!writing) {
            if ((rc = segw_begin(db, &w))) {
                segw_abort(&w);
                break;
            }
            writing = 1;
        }
        uint64_t off;
        if ((rc = segw_append_ref(&w, r->seg->map + r->offset, r->len, r->lsn, &off))) break;
        if (r->hits > 0 && p->out.n == 0) p->hot_bytes = off + r->len;
        /* The output's segment exists only once it is finished: `to` is filled in below. */
        p->move_out[p->nmoves] = (uint32_t)p->out.n;
        p->moves[p->nmoves++] = (struct db_move){ r->seg, r->offset, NULL, off };
    }
    if (writing) {
        if (rc) segw_abort(&w);
        else rc = outputs_finish(&p->out, &w);
    }
    if (rc) return rc;
    for (size_t i = 0; i < p->nmoves; i++) p->moves[i].to = p->out.segs[p->move_out[i]];
    return JVDB_OK;
}

/* Steps 5-6, the swap: commits the outputs in place of the inputs and fills in the statistics. */
static int compact_swap(jvdb_db *db, const jvdb_compact_options *opts, const jvdb_compact_policy *policy, int64_t t0,
                        jvdb_compact_stats *st, struct compact_plan *p)
{
    uint64_t input_bytes = 0, input_records = 0;
    for (size_t i = 0; i < p->in.n; i++) {
        input_bytes += p->in.segs[i]->size;
        input_records += p->in.segs[i]->records;
    }
    int rc = compact_should_stop(db, opts, policy, t0);
    if (rc) return rc;
    io_crash_point("compact.before_swap");
    if ((rc = db_swap(db, &p->in, p->out.segs, p->out.n, p->moves, p->nmoves, p->drops, p->ndrops))) return rc;
    io_crash_point("compact.after_swap");
    uint64_t output_bytes = 0;
    for (size_t i = 0; i < p->out.n; i++) output_bytes += p->out.segs[i]->size;
    /* The hottest records lead the first output: ask the kernel to have them in memory. */
    if (p->hot_bytes && p->out.n) madvise((void *)p->out.segs[0]->map, p->hot_bytes, MADV_WILLNEED);
    st->segments_out = (uint32_t)p->out.n;
    st->records_copied = p->nmoves;
    st->records_dropped = input_records - p->nmoves;
    st->tombstones_dropped = p->ndrops;
    st->bytes_reclaimed = input_bytes > output_bytes ? input_bytes - output_bytes : 0;
    return JVDB_OK;
}

/* One run: picks the inputs, lists their live records, copies them, swaps the outputs in. */
static int compact_run(jvdb_db *db, const jvdb_compact_options *opts, const jvdb_compact_policy *policy,
                       jvdb_compact_stats *st, int64_t t0)
{
    struct compact_plan p = { 0 };
    int rc = compact_pick_inputs(db, opts, policy, st, &p);
    if (!rc && p.in.n > 0 && !(rc = compact_list(db, st, &p)) && !(rc = compact_copy(db, opts, policy, t0, &p)))
        rc = compact_swap(db, opts, policy, t0, st, &p);
    compact_plan_free(&p, rc == JVDB_OK && p.in.n > 0);
    return rc;
}

int compact_claim(jvdb_db *db) { return db_compaction_claim(db); }

int compact_claimed(jvdb_db *db, const jvdb_compact_options *opts, jvdb_compact_stats *out)
{
    jvdb_compact_options none = { 0 };
    if (!opts) opts = &none;
    jvdb_compact_stats st;
    memset(&st, 0, sizeof st);
    jvdb_compact_policy policy;
    compact_resolve_policy(db, opts->policy, &policy);
    int64_t t0 = clock_mono_ns();
    jvdb_compact_trigger why;
    char reason[160];
    if (!jvdb_needs_compaction(db, &policy, &why, reason, sizeof reason) && !opts->force) {
        db_compaction_release(db);
        if (out) *out = st;
        return JVDB_OK;
    }
    st.trigger = why != JVDB_TRIGGER_NONE ? why : JVDB_TRIGGER_FORCED;
    st.bytes_before = compact_file_bytes(db);
    int rc = compact_run(db, opts, &policy, &st, t0);
    db_compaction_release(db);
    if (rc) return rc;
    st.bytes_after = compact_file_bytes(db);
    st.seconds = (double)(clock_mono_ns() - t0) / 1e9;
    st.finished_ns = clock_wall_ns();
    log_info(
        "compacted '%s' (%s): %u -> %u segments, %llu records copied, %llu dropped, %llu bytes reclaimed in %.3f s",
        jvdb_db_name(db), jvdb_compact_trigger_name(st.trigger), st.segments_in, st.segments_out,
        (unsigned long long)st.records_copied, (unsigned long long)st.records_dropped,
        (unsigned long long)st.bytes_reclaimed, st.seconds);
    if (out) *out = st;
    return JVDB_OK;
}

int jvdb_compact(jvdb_db *db, const jvdb_compact_options *opts, jvdb_compact_stats *out)
{
    err_clear();
    if (!compact_claim(db)) return err_set(JVDB_EBUSY, "a compaction of '%s' is already running", jvdb_db_name(db));
    return compact_claimed(db, opts, out);
}

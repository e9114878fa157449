/*
 * db.c — one database: recovery at open, the write path with group commit, and reads.
 *
 * Write path (db_write): validate and encode outside every lock; under write_mu assign LSNs, seal
 * the active segment if the batch does not fit, pwrite the whole batch at the tail in one call, then
 * apply it to the keydir (new versions, invisible to readers: they read at `visible`).  Durability
 * comes after: with sync=always the caller waits in db_sync_upto until an fdatasync that started
 * after its pwrite has finished.  Whoever finds no sync running becomes the leader and syncs
 * everything written so far, so N concurrent writers share one fdatasync (group commit).
 *
 * Publishing (readers see only durable writes).  Readers read at the LSN `visible`.  With
 * sync=always it moves only after an fdatasync: the sync leader notes the last applied LSN (under
 * write_mu, with the end of the file it syncs) and, once the sync returns, raises `visible` to it
 * with one release store, so a batch becomes visible whole, and only once a power cut cannot take
 * it back (PostgreSQL's rule: a commit is visible after its WAL flush).  It costs the writer nothing:
 * it waits for that sync anyway.  With sync=interval and sync=never a batch is published as soon as
 * it is applied: readers may see a write that a power cut then loses, as the modes promise.
 *
 * Why a batch is atomic: it is one pwrite whose records all carry the "more follow" flag but the last;
 * recovery drops a trailing run of flagged records, so a batch cut by a crash disappears whole.
 *
 * Failure rule: if a pwrite fails we truncate the tail back and report the error (nothing was
 * applied).  If an fdatasync fails, or the truncate does, the kernel may have dropped dirty pages and
 * we cannot know what the file holds: the database refuses further writes (JVDB_EFAILED) until it is
 * reopened, when recovery re-reads the truth from disk.  That is the lesson of PostgreSQL's fsyncgate.
 *
 * Recovery rule (docs/FORMAT.md): only the last, incomplete batch of the active segment may be cut,
 * and its bytes are copied to <seg>.torn-<offset> first; a bad record that anything valid follows
 * (or, with sync=always, that is not in the final batch) is damage and refuses the open, changing
 * nothing.  Read-only and salvage loads (enum db_mode) never write a byte of the database.
 */
#include "store/db_impl.h"
#include "store/kdckpt.h"
#include "store/validate.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "store/record.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <unistd.h>

#define DB_DEFAULT_SEGMENT_MAX (1ull << 30)

/* ---------------------------------------------------------------- options and names */

void jvdb_db_options_init(jvdb_db_options *opts, uint32_t dim)
{
    memset(opts, 0, sizeof *opts);
    opts->dim = dim;
    opts->metric = JVDB_METRIC_L2;
    opts->sync = JVDB_SYNC_ALWAYS;
    opts->sync_interval_ms = 1000;
    opts->segment_max_bytes = DB_DEFAULT_SEGMENT_MAX;
}

int jvdb_metric_parse(const char *s, jvdb_metric *out)
{
    if (!s) return err_set(JVDB_EINVAL, "metric is missing");
    /* Case-insensitive: "COSINE" and "L2" are what users of other databases type. */
    if (!strcasecmp(s, "l2") || !strcasecmp(s, "euclidean")) *out = JVDB_METRIC_L2;
    else if (!strcasecmp(s, "cosine")) *out = JVDB_METRIC_COSINE;
    else if (!strcasecmp(s, "dot")) *out = JVDB_METRIC_DOT;
    else return err_set(JVDB_EINVAL, "unknown metric '%s' (expected l2 (also euclidean), cosine or dot)", s);
    return JVDB_OK;
}

const char *jvdb_metric_name(jvdb_metric m)
{
    switch (m) {
    case JVDB_METRIC_COSINE: return "cosine";
    case JVDB_METRIC_DOT: return "dot";
    default: return "l2";
    }
}

const char *jvdb_sync_name(jvdb_sync_mode mode, uint32_t interval_ms, char *buf, size_t cap)
{
    if (mode == JVDB_SYNC_INTERVAL) snprintf(buf, cap, "interval:%u", interval_ms);
    else snprintf(buf, cap, "%s", mode == JVDB_SYNC_NEVER ? "never" : "always");
    return buf;
}

int jvdb_sync_parse(const char *s, jvdb_sync_mode *mode, uint32_t *interval_ms)
{
    if (!s) return err_set(JVDB_EINVAL, "sync mode is missing");
    if (!strcmp(s, "always")) {
        *mode = JVDB_SYNC_ALWAYS;
    } else if (!strcmp(s, "never")) {
        *mode = JVDB_SYNC_NEVER;
    } else if (!strncmp(s, "interval:", 9)) {
        char *end;
        errno = 0;
        unsigned long ms = strtoul(s + 9, &end, 10);
        if (errno || end == s + 9 || *end || ms == 0 || ms > 3600000 || !isdigit((unsigned char)s[9]))
            return err_set(JVDB_EINVAL, "bad sync interval in '%s' (expected interval:<1..3600000 ms>)", s);
        *mode = JVDB_SYNC_INTERVAL;
        if (interval_ms) *interval_ms = (uint32_t)ms;
    } else {
        return err_set(JVDB_EINVAL, "unknown sync mode '%s' (expected always, never or interval:<ms>)", s);
    }
    return JVDB_OK;
}

int db_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > JVDB_MAX_NAME_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-') return 0;
    return 1;
}

const char *jvdb_db_name(const jvdb_db *db) { return db->m.name; }
uint32_t jvdb_db_dim(const jvdb_db *db) { return db->m.dim; }
jvdb_metric jvdb_db_metric(const jvdb_db *db) { return db->m.metric; }

void jvdb_db_get_options(const jvdb_db *db, jvdb_db_options *out)
{
    jvdb_db *mdb = (jvdb_db *)db;
    db_write_lock(mdb);
    out->dim = db->m.dim;
    out->metric = db->m.metric;
    out->sync = db->m.sync;
    out->sync_interval_ms = db->m.sync_interval_ms;
    out->segment_max_bytes = db->m.segment_max_bytes;
    db_write_unlock(mdb);
}

/* Refuses options out of range: dimension, metric, sync mode and interval, segment size (0 = default). */
static int db_check_options(const jvdb_db_options *o)
{
    if (o->dim < 1 || o->dim > JVDB_MAX_DIM)
        return err_set(JVDB_EINVAL, "dimension %u is out of range (1..%d)", o->dim, JVDB_MAX_DIM);
    if (o->metric > JVDB_METRIC_DOT) return err_set(JVDB_EINVAL, "unknown metric %d", (int)o->metric);
    if (o->sync > JVDB_SYNC_NEVER) return err_set(JVDB_EINVAL, "unknown sync mode %d", (int)o->sync);
    if (o->sync == JVDB_SYNC_INTERVAL && (o->sync_interval_ms == 0 || o->sync_interval_ms > 3600000))
        return err_set(JVDB_EINVAL, "sync interval %u ms is out of range (1..3600000)", o->sync_interval_ms);
    if (o->segment_max_bytes && o->segment_max_bytes < 4096)
        return err_set(JVDB_EINVAL, "segment_max_bytes %" PRIu64 " is below the minimum of 4096", o->segment_max_bytes);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- creation */

int db_create_dir(const char *databases_dir, const char *dirname, const char *name, const jvdb_db_options *opts)
{
    int rc = db_check_options(opts);
    if (rc) return rc;
    char tmpname[160];
    snprintf(tmpname, sizeof tmpname, ".tmp-%s-%d", name, (int)getpid());
    char *tmp = fs_join(databases_dir, tmpname);
    char *final = fs_join(databases_dir, dirname);
    if (!tmp || !final) {
        free(tmp);
        free(final);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    struct manifest m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", name);
    m.dim = opts->dim;
    m.metric = opts->metric;
    m.format = manifest_format_for(opts->metric);
    m.sync = opts->sync;
    m.sync_interval_ms = opts->sync_interval_ms ? opts->sync_interval_ms : 1000;
    m.segment_max_bytes = opts->segment_max_bytes ? opts->segment_max_bytes : DB_DEFAULT_SEGMENT_MAX;
    m.created_ns = clock_wall_ns();
    uint64_t first = 1;
    m.segments = &first;
    m.nsegments = 1;
    m.active = 1;
    m.next_segment = 2;
    struct segment *seg = NULL;
    fs_remove_tree(tmp);
    if ((rc = fs_mkdir(tmp))) goto out;
    if ((rc = seg_create(tmp, 1, m.dim, 4096, &seg))) goto out;
    seg_unref(seg);
    if ((rc = manifest_store(tmp, &m))) goto out;
    io_crash_point("create.before_rename");
    /* The rename publishes the complete directory; a crash before it leaves a .tmp-* directory that
     * the next open of the environment removes. */
    if (io_rename(tmp, final) < 0) {
        rc = errno == ENOTEMPTY || errno == EEXIST ? err_set(JVDB_EEXISTS, "database '%s' already exists", name)
                                                   : err_errno(errno, "cannot rename %s to %s", tmp, final);
        goto out;
    }
    if (io_fsync_dir(databases_dir) < 0) rc = err_errno(errno, "cannot fsync %s", databases_dir);
out:
    if (rc) fs_remove_tree(tmp);
    free(tmp);
    free(final);
    return rc;
}

/* ---------------------------------------------------------------- recovery */

/* Appends a segment to the database's list of open segments. */
static int db_segs_push(jvdb_db *db, struct segment *s)
{
    struct segment **n = grow_array(db->segs, &db->segs_cap, db->nsegs + 1, sizeof *n, 8);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    db->segs = n;
    db->segs[db->nsegs++] = s;
    return JVDB_OK;
}

/* The address space to map an active segment with: a full segment plus its header, or `min` when one record
 * needs more, so appends never have to remap while readers use the mapping. */
static uint64_t db_reserve(const jvdb_db *db, uint64_t min)
{
    uint64_t r = db->m.segment_max_bytes + SEG_HEADER_SIZE;
    return r > min ? r : min;
}

/* Whether `n` is bytes recovery or repair set aside: "<10 digits>.seg.torn-<offset>[.<k>]" or
 * "<10 digits>.seg.bad-<offset>[.<k>]".  They are the operator's, never orphans. */
static int db_is_set_aside(const char *n)
{
    if (strlen(n) < 15 || strspn(n, "0123456789") != 10 || strncmp(n + 10, ".seg.", 5) != 0) return 0;
    const char *t = n + 15;
    if (!strncmp(t, "torn-", 5)) t += 5;
    else if (!strncmp(t, "bad-", 4)) t += 4;
    else return 0;
    return *t && strspn(t, "0123456789.") == strlen(t) && t[strlen(t) - 1] != '.';
}

/* Removes every file in the directory that the MANIFEST does not name: outputs of an interrupted
 * compaction, inputs that a committed compaction had not unlinked yet, half-written temporaries. */
static int db_remove_orphans(jvdb_db *db)
{
    DIR *d = opendir(db->dir);
    if (!d) return err_errno(errno, "cannot list %s", db->dir);
    struct dirent *e;
    int removed = 0;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "MANIFEST") || !strcmp(n, KDCKPT_FILE)) continue;
        int keep = 0;
        unsigned long long no;
        char tail[8];
        if (sscanf(n, "%llu.%7s", &no, tail) == 2 && !strcmp(tail, "seg") && strlen(n) == 14) {
            for (size_t i = 0; i < db->m.nsegments; i++) keep |= db->m.segments[i] == no;
        }
        if (!strncmp(n, "ext.", 4)) keep = 1; /* files owned by upper layers, which clean them */
        if (db_is_set_aside(n)) keep = 1;
        if (keep) continue;
        char *p = fs_join(db->dir, n);
        if (!p) {
            closedir(d);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        log_info("removing orphan file %s", p);
        int rc = fs_remove_tree(p);
        free(p);
        if (rc) {
            closedir(d);
            return rc;
        }
        removed++;
    }
    closedir(d);
    if (removed && io_fsync_dir(db->dir) < 0) return err_errno(errno, "cannot fsync %s", db->dir);
    return JVDB_OK;
}

/* The first offset at or after `from`, in 64-byte steps (every record starts on one), where a
 * whole record verifies; 0 when none does. */
static uint64_t db_next_valid(const struct segment *s, uint64_t from, uint32_t dim)
{
    for (uint64_t p = from; p + REC_HEADER_SIZE <= s->size; p += REC_ALIGN) {
        const char *why;
        if (rec_check(s->map + p, s->size - p, dim, &why) == REC_OK) return p;
    }
    return 0;
}

/* With sync=always a batch is acknowledged only once it is on disk, so only the batch being written
 * when the process died can be torn.  A bad record whose header is intact (only its checksum
 * fails) says where it ends and whether its batch goes on: if the batch ended there and the file
 * goes on, the damage is not in the final batch. */
static int db_bad_before_final_batch(const struct segment *s, uint64_t off, const char *why)
{
    if (strcmp(why, "checksum mismatch") != 0) return 0;
    const struct rec_header *h = (const struct rec_header *)(s->map + off);
    return !(h->flags & REC_FLAG_MORE) && off + h->total_len < s->size;
}

/* Applies the whole records in [from, to) of s to the keydir. */
static int db_apply_range(jvdb_db *db, struct segment *s, uint64_t from, uint64_t to)
{
    for (uint64_t p = from; p < to;) {
        int rc = keydir_apply(&db->kd, s, p, db->m.dim);
        if (rc) return rc;
        p += ((const struct rec_header *)(s->map + p))->total_len;
    }
    return JVDB_OK;
}

/* Records a range the salvage scan skipped. */
static int db_note_bad(jvdb_db *db, struct segment *s, uint64_t off, uint64_t len, const char *why)
{
    struct db_bad *n = realloc(db->bad, (db->nbad + 1) * sizeof *n);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    db->bad = n;
    n[db->nbad].seg = s;
    n[db->nbad].off = off;
    n[db->nbad].len = len;
    snprintf(n[db->nbad].why, sizeof n[db->nbad].why, "%s", why);
    db->nbad++;
    return JVDB_OK;
}

/* Copies bytes [off, off+len) of segment s to "<seg>.<kind>-<off>", durably (file and directory),
 * and returns that path in *saved.  A file of that name already holding the same bytes is a copy
 * whose follow-up a crash prevented and is reused; one holding other bytes gets a numbered sibling. */
int db_set_aside(const struct segment *s, uint64_t off, uint64_t len, const char *kind, char **saved)
{
    size_t cap = strlen(s->path) + 64;
    char *path = malloc(cap);
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    for (unsigned k = 0;; k++) {
        if (k == 0) snprintf(path, cap, "%s.%s-%" PRIu64, s->path, kind, off);
        else snprintf(path, cap, "%s.%s-%" PRIu64 ".%u", s->path, kind, off, k);
        char *have;
        size_t have_len;
        if (!fs_exists(path)) break;
        if (fs_read_file(path, &have, &have_len) == JVDB_OK) {
            int same = have_len == len && !memcmp(have, s->map + off, len);
            free(have);
            if (same) {
                *saved = path;
                return JVDB_OK;
            }
        }
    }
    int rc = fs_replace_file(path, s->map + off, len, "setaside");
    if (rc) {
        free(path);
        return rc;
    }
    *saved = path;
    return JVDB_OK;
}

/* The end of the active segment from `start` on is an incomplete batch (a write cut by a crash). */
static int db_torn_tail(jvdb_db *db, struct segment *s, uint64_t start, const char *why)
{
    uint64_t len = s->size - start;
    if (db->mode == DB_MODE_SALVAGE) {
        char what[96];
        snprintf(what, sizeof what, "torn tail (an incomplete last batch: %s)", why);
        int rc = db_note_bad(db, s, start, len, what);
        if (rc == JVDB_OK) s->size = start;
        return rc;
    }
    if (db->mode == DB_MODE_READONLY) {
        log_warn("%s: ignoring a torn tail of %" PRIu64 " bytes at offset %" PRIu64
                 " (read-only open: the file is left as it is)",
                 s->path, len, start);
        s->size = start;
        return JVDB_OK;
    }
    /* The bytes are kept before they are cut: should the guess "torn write" be wrong, nothing is
     * destroyed.  A crash between the two leaves the tail in place, and the next open saves the
     * same bytes under the same name again. */
    char *saved;
    int rc = db_set_aside(s, start, len, "torn", &saved);
    if (rc) return rc;
    io_crash_point("recovery.before_truncate");
    if (io_ftruncate(s->fd, (off_t)start) < 0 || io_fdatasync(s->fd) < 0) {
        rc = err_errno(errno, "cannot truncate the torn tail of %s", s->path);
        free(saved);
        return rc;
    }
    log_warn("%s: cut a torn tail of %" PRIu64 " bytes at offset %" PRIu64
             " (an unacknowledged write cut by a crash: %s); the bytes are kept in %s",
             s->path, len, start, why, saved);
    free(saved);
    s->size = start;
    return JVDB_OK;
}

/* Applies the records of one segment (docs/FORMAT.md, "Recovery at open").  In the active segment
 * a bad or short record followed by nothing that verifies is a torn tail: the incomplete batch it
 * belongs to is dropped.  A bad record anything valid follows, or any bad record in a sealed
 * segment, is damage: the open fails naming file and offset (salvage mode notes it and goes on). */
static int db_scan_segment(jvdb_db *db, struct segment *s, uint64_t from, uint64_t *max_lsn)
{
    uint64_t off = from;        /* past what the keydir checkpoint covers (kdckpt.c) */
    uint64_t batch_start = off; /* first record of the batch being read (active segment) */
    uint32_t dim = db->m.dim;
    const char *tail_why = "the last batch has no final record";
    int rc;
    while (off < s->size) {
        const char *why = "record cut short";
        enum rec_check c = rec_check(s->map + off, s->size - off, dim, &why);
        if (c != REC_OK) {
            uint64_t next = db_next_valid(s, off + REC_ALIGN, dim);
            if (db->mode == DB_MODE_SALVAGE) {
                if (!next && !s->sealed) {
                    tail_why = why;
                    break;
                }
                if (!s->sealed && (rc = db_apply_range(db, s, batch_start, off))) return rc;
                uint64_t end = next ? next : s->size;
                if ((rc = db_note_bad(db, s, off, end - off, why))) return rc;
                off = batch_start = end;
                continue;
            }
            if (s->sealed)
                return err_set(JVDB_ECORRUPT, "corrupt record in %s at offset %" PRIu64 ": %s", s->path, off, why);
            if (next)
                return err_set(JVDB_ECORRUPT,
                               "corrupt record in %s at offset %" PRIu64
                               ": %s (a valid record follows at offset %" PRIu64
                               ": this is damage, not a write cut by a crash)",
                               s->path, off, why, next);
            if (db->m.sync == JVDB_SYNC_ALWAYS && db_bad_before_final_batch(s, off, why))
                return err_set(JVDB_ECORRUPT,
                               "corrupt record in %s at offset %" PRIu64
                               ": %s (its batch ended before the end of the file, "
                               "and with sync=always only the last batch can be torn)",
                               s->path, off, why);
            tail_why = why;
            break;
        }
        const struct rec_header *h = (const struct rec_header *)(s->map + off);
        if (h->lsn > *max_lsn) *max_lsn = h->lsn;
        uint64_t next = off + h->total_len;
        if (s->sealed) {
            if ((rc = keydir_apply(&db->kd, s, off, dim))) return rc;
        } else if (!(h->flags & REC_FLAG_MORE)) {
            /* The batch is complete: apply all of it. */
            if ((rc = db_apply_range(db, s, batch_start, next))) return rc;
            batch_start = next;
        }
        off = next;
    }
    if (!s->sealed && batch_start < s->size) return db_torn_tail(db, s, batch_start, tail_why);
    return JVDB_OK;
}

static void *db_flusher_main(void *arg);

/* Publishes segs/active as the readers' segment list; the old list goes after a grace period. */
int db_publish_segs(jvdb_db *db)
{
    assert(db_writer_held(db) || !db->segl); /* at load nobody else has the handle yet */
    struct db_seglist *l = malloc(sizeof *l + (db->nsegs ? db->nsegs : 1) * sizeof l->segs[0]);
    if (!l) return err_set(JVDB_ENOMEM, "out of memory");
    l->n = db->nsegs;
    l->active = db->active;
    memcpy(l->segs, db->segs, db->nsegs * sizeof l->segs[0]);
    struct db_seglist *old = db->segl;
    __atomic_store_n(&db->segl, l, __ATOMIC_RELEASE);
    if (old) rp_defer(&db->gc, rp_free_fn, NULL, old);
    return JVDB_OK;
}

/* Raises `visible` to lsn (it never goes back), with the live count at lsn (read under write_mu
 * together with lsn).  pub_mu orders publishers (the sync leader, a seal, a lazy writer), never
 * readers. */
static void db_publish(jvdb_db *db, uint64_t lsn, uint64_t live)
{
    pthread_mutex_lock(&db->pub_mu);
    if (lsn > __atomic_load_n(&db->visible, __ATOMIC_RELAXED)) {
        __atomic_store_n(&db->visible_live, live, __ATOMIC_RELAXED);
        __atomic_store_n(&db->visible, lsn, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&db->pub_mu);
}

static uint64_t db_live_now(const jvdb_db *db) { return __atomic_load_n(&db->kd.live, __ATOMIC_RELAXED); }

void db_gc_locked(jvdb_db *db)
{
    assert(db_writer_held(db));
    keydir_trim(&db->kd, db_snapshot_lsn(db));
    rp_poll(&db->gc);
}

void db_settle(jvdb_db *db, unsigned timeout_ms)
{
    db_write_lock(db);
    db_gc_locked(db);
    uint64_t target = db->kd.trim_deferred_upto;
    db_write_unlock(db);
    for (unsigned waited = 0;; waited++) {
        db_write_lock(db);
        rp_poll(&db->gc);
        int done = db->kd.trim_done_upto >= target;
        db_write_unlock(db);
        if (done || waited >= timeout_ms) return;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

/* ---------------------------------------------------------------- what the layers above use */

uint64_t db_snapshot_lsn(const jvdb_db *db)
{
    assert(rp_inside() || db_writer_held(db));
    return __atomic_load_n(&db->visible, __ATOMIC_ACQUIRE);
}

const struct db_seglist *db_segments(const jvdb_db *db)
{
    assert(rp_inside() || db_writer_held(db));
    return __atomic_load_n(&db->segl, __ATOMIC_ACQUIRE);
}

const struct keydir *db_keydir(const jvdb_db *db) { return &db->kd; }

uint64_t db_segment_max(jvdb_db *db)
{
    db_write_lock(db);
    uint64_t v = db->m.segment_max_bytes;
    db_write_unlock(db);
    return v;
}

uint64_t db_backup_horizon(jvdb_db *db)
{
    pthread_mutex_lock(&db->mview_mu);
    uint64_t v = db->mview_horizon;
    pthread_mutex_unlock(&db->mview_mu);
    return v;
}

int64_t db_created_ns(const jvdb_db *db) { return db->m.created_ns; }

int64_t db_last_compaction_ns(jvdb_db *db)
{
    db_write_lock(db);
    int64_t v = db->m.last_compaction_ns ? db->m.last_compaction_ns : db->m.created_ns;
    db_write_unlock(db);
    return v;
}

json_t *db_manifest_extra(jvdb_db *db, const char *key)
{
    /* The view of the file on disk, not db->m: a value a crash could still take back is never seen. */
    pthread_mutex_lock(&db->mview_mu);
    json_t *x = db->mview_extra, *v;
    if (!key) v = x ? json_deep_copy(x) : json_object();
    else v = x && json_object_get(x, key) ? json_deep_copy(json_object_get(x, key)) : NULL;
    pthread_mutex_unlock(&db->mview_mu);
    return v;
}

int db_compaction_claim(jvdb_db *db) { return !atomic_exchange(&db->compacting, true); }
void db_compaction_release(jvdb_db *db) { atomic_store(&db->compacting, false); }
int db_is_dropping(const jvdb_db *db) { return atomic_load(&((jvdb_db *)db)->dropping); }
const char *db_dir(const jvdb_db *db) { return db->dir; }

int db_move_dir(jvdb_db *db, const char *dir)
{
    char *d = strdup(dir);
    char **paths = calloc(db->nsegs ? db->nsegs : 1, sizeof *paths);
    int ok = d && paths;
    for (size_t i = 0; ok && i < db->nsegs; i++) ok = (paths[i] = seg_path(dir, db->segs[i]->no)) != NULL;
    if (!ok) {
        for (size_t i = 0; paths && i < db->nsegs; i++) free(paths[i]);
        free(paths);
        free(d);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    db_write_lock(db);
    free(db->dir);
    db->dir = d;
    for (size_t i = 0; i < db->nsegs; i++) {
        free(db->segs[i]->path);
        db->segs[i]->path = paths[i];
    }
    db_write_unlock(db);
    free(paths);
    return JVDB_OK;
}
int db_writable(const jvdb_db *db)
{
    return db->mode == DB_MODE_WRITE && !atomic_load(&((jvdb_db *)db)->failed) && !db_is_dropping(db);
}
void db_writer_enter(jvdb_db *db) { db_write_lock(db); }
void db_writer_exit(jvdb_db *db) { db_write_unlock(db); }
void *db_ext(const jvdb_db *db) { return __atomic_load_n(&((jvdb_db *)db)->ext, __ATOMIC_ACQUIRE); }

void db_set_ext(jvdb_db *db, void *ext, void (*ext_free)(void *ext))
{
    db->ext_free = ext_free;
    __atomic_store_n(&db->ext, ext, __ATOMIC_RELEASE);
}

void db_set_ext_hold(jvdb_db *db, void (*ext_hold)(void *ext, int hold)) { db->ext_hold = ext_hold; }

void db_ext_hold(jvdb_db *db, int hold)
{
    void *ext = db_ext(db);
    if (ext && db->ext_hold) db->ext_hold(ext, hold);
}

int db_as_writer(jvdb_db *db, int (*fn)(void *ctx), void *ctx)
{
    db_write_lock(db);
    int rc = fn(ctx);
    db_write_unlock(db);
    return rc;
}

void db_set_slot_hook(jvdb_db *db, kd_slot_hook hook, void *ctx, int locked)
{
    if (!locked) db_write_lock(db);
    assert(db_writer_held(db));
    if (hook) {
        db->kd.hook = hook;
        db->kd.hook_ctx = ctx;
    } else if (db->kd.hook_ctx == ctx) {
        db->kd.hook = NULL;
        db->kd.hook_ctx = NULL;
    }
    if (!locked) db_write_unlock(db);
}

/* ---------------------------------------------------------------- MANIFEST writes
 *
 * No writer waits for a MANIFEST's I/O (docs/ARCHITECTURE.md, "Locks"): a change is made to db->m
 * and a copy taken under write_mu (microseconds); the copy is written (temporary file, fsync,
 * rename, directory fsync) holding only manifest_mu, which orders the file replacements.  Every
 * change bumps m_gen and a copy is the whole state as of its generation, so a writer that finds a
 * newer generation on disk skips its older copy (the newer one holds its change) and the newest
 * state always wins.  Layers above read the extras and the horizon from the view of the file on
 * disk (mview_*), published with it, so they never act on a value a crash could take back (the
 * shipper's pin, the backup horizon).
 *
 * Seals, compaction's swap and the format mark commit under write_mu instead
 * (db_manifest_commit_locked): what they change in memory may be used only once the file says so
 * (a writer appends to a new segment only once a MANIFEST names it; a swap's inputs go only once
 * the MANIFEST naming its outputs is durable, and the swap is one step for writers), so they wait
 * for at most one write in progress and skip none. */

/* Internal (not a JVDB_E* code): the copy may hold a change undone since; take a new one. */
#define DB_MANIFEST_STALE 1

/* Replaces the readers' view with m's extras and horizon (manifest_mu held, m just made durable);
 * takes m->extra when `steal`.  Out of memory keeps the older view, which is allowed. */
static void db_mview_publish(jvdb_db *db, struct manifest *m, int steal)
{
    json_t *x = m->extra;
    if (steal) m->extra = NULL;
    else if (x && !(x = json_deep_copy(x))) return;
    pthread_mutex_lock(&db->mview_mu);
    json_t *old = db->mview_extra;
    db->mview_extra = x;
    db->mview_horizon = m->backup_horizon;
    pthread_mutex_unlock(&db->mview_mu);
    if (old) json_decref(old);
}

/* Writes `copy` (db->m at generation gen, freed here) unless a newer generation is on disk
 * already; takes manifest_mu, and no other lock, across the I/O. */
static int db_manifest_write(jvdb_db *db, struct manifest *copy, uint64_t gen)
{
    pthread_mutex_lock(&db->manifest_mu);
    int rc = JVDB_OK;
    if (gen <= db->m_durable_gen) rc = JVDB_OK;
    else if (gen < db->m_undo_gen) rc = DB_MANIFEST_STALE;
    else if ((rc = manifest_store(db->dir, copy)) == JVDB_OK) {
        db->m_durable_gen = gen;
        db_mview_publish(db, copy, 1);
    }
    pthread_mutex_unlock(&db->manifest_mu);
    manifest_free(copy);
    return rc;
}

/* One MANIFEST change that writers do not wait for: apply(db, ctx) changes db->m under write_mu,
 * the state is written outside it.  Returns once a MANIFEST holding the change is durable.  When
 * the write fails and no later MANIFEST holding the change reached the disk, undo(db, ctx) takes it
 * back (write_mu and manifest_mu held) and copies taken meanwhile are marked stale: the old value
 * stays, on disk and in memory. */
static int db_manifest_change(jvdb_db *db, int (*apply)(jvdb_db *db, void *ctx), void (*undo)(jvdb_db *db, void *ctx),
                              void *ctx)
{
    db_write_lock(db);
    int rc = db_check_writable(db);
    if (rc == JVDB_OK) rc = apply(db, ctx);
    if (rc) {
        db_write_unlock(db);
        return rc;
    }
    uint64_t mine = ++db->m_gen;
    for (;;) {
        struct manifest copy;
        db->m.lsn_floor = db->last_lsn;
        uint64_t gen = db->m_gen;
        rc = manifest_copy(&db->m, &copy);
        db_write_unlock(db);
        if (rc == JVDB_OK) rc = db_manifest_write(db, &copy, gen);
        if (rc != DB_MANIFEST_STALE) break;
        db_write_lock(db);
    }
    if (rc == JVDB_OK) return rc;
    db_write_lock(db);
    pthread_mutex_lock(&db->manifest_mu);
    if (db->m_durable_gen >= mine) rc = JVDB_OK; /* a later writer's MANIFEST holds it */
    else {
        undo(db, ctx);
        db->m_undo_gen = ++db->m_gen;
    }
    pthread_mutex_unlock(&db->manifest_mu);
    db_write_unlock(db);
    return rc;
}

int db_manifest_commit_locked(jvdb_db *db, struct manifest *next)
{
    assert(db_writer_held(db));
    int rc = db_check_writable(db);
    if (rc) return rc;
    /* Above every copy taken so far and every undo mark: never skipped, never stale. */
    uint64_t gen = ++db->m_gen;
    pthread_mutex_lock(&db->manifest_mu);
    if ((rc = manifest_store(db->dir, next)) == JVDB_OK) {
        db->m_durable_gen = gen;
        db_mview_publish(db, next, 0);
    }
    pthread_mutex_unlock(&db->manifest_mu);
    return rc;
}

/* What a restore's last step changes: the LSN counter and the merged extras. */
struct db_restore_change {
    uint64_t lsn_to;
    json_t *extra;
};

/* Applies a db_restore_change to the built database (write_mu held). */
static int db_restore_apply(jvdb_db *built, void *ctx)
{
    struct db_restore_change *c = ctx;
    if (built->last_lsn < c->lsn_to) built->last_lsn = c->lsn_to;
    if (!c->extra || !json_object_size(c->extra)) return JVDB_OK;
    if (!built->m.extra) built->m.extra = json_object();
    return !built->m.extra || json_object_update(built->m.extra, c->extra) ? err_set(JVDB_ENOMEM, "out of memory")
                                                                           : JVDB_OK;
}

/* Nothing to take back: a restore whose last step failed throws the built database away. */
static void db_restore_undo(jvdb_db *built, void *ctx)
{
    (void)built;
    (void)ctx;
}

int db_restore_finish(jvdb_db *built, uint64_t lsn_to, json_t *extra)
{
    struct db_restore_change c = { lsn_to, extra };
    return db_manifest_change(built, db_restore_apply, db_restore_undo, &c);
}

/* Frees the handle and everything it holds, with no sync: the end of close (after its final sync) and of an
 * open that failed.  Deferred reclamations run first, since no reader is left. */
static void db_free(jvdb_db *db)
{
    if (db->ext && db->ext_free) db->ext_free(db->ext);
    kdckpt_stop(db, 0);
    /* No reader is left: everything deferred can go now (trims first: they reach the keydir). */
    rp_drain(&db->gc);
    keydir_free(&db->kd);
    for (size_t i = 0; i < db->nsegs; i++) seg_unref(db->segs[i]);
    free(db->segs);
    free(db->segl);
    free(db->bad);
    manifest_free(&db->m);
    if (db->mview_extra) json_decref(db->mview_extra);
    pthread_mutex_destroy(&db->manifest_mu);
    pthread_mutex_destroy(&db->mview_mu);
    pthread_mutex_destroy(&db->write_mu);
    pthread_mutex_destroy(&db->pub_mu);
    pthread_mutex_destroy(&db->sync_mu);
    pthread_cond_destroy(&db->sync_cv);
    free(db->dir);
    free(db);
}

/* Starts the interval-sync thread of a database opened for writing in JVDB_SYNC_INTERVAL mode, once. */
static int db_start_flusher(jvdb_db *db)
{
    if (db->mode != DB_MODE_WRITE) return JVDB_OK;
    if (db->m.sync != JVDB_SYNC_INTERVAL || db->flusher_started) return JVDB_OK;
    if (pthread_create(&db->flusher, NULL, db_flusher_main, db) != 0)
        return err_set(JVDB_ENOMEM, "cannot start the sync thread of '%s'", db->m.name);
    db->flusher_started = true;
    return JVDB_OK;
}

int db_check_writable(const jvdb_db *db)
{
    if (db->mode == DB_MODE_WRITE) return JVDB_OK;
    return err_set(JVDB_EREADONLY, "database '%s' was opened read-only; nothing can be written to it", db->m.name);
}

int db_load(jvdb_env *env, const char *dir, enum db_mode mode, jvdb_db **out)
{
    jvdb_db *db = calloc(1, sizeof *db);
    if (!db) return err_set(JVDB_ENOMEM, "out of memory");
    uint64_t *from = NULL; /* per segment: where reading its records starts */
    db->env = env;
    db->mode = mode;
    pthread_mutex_init(&db->write_mu, NULL);
    pthread_mutex_init(&db->pub_mu, NULL);
    pthread_mutex_init(&db->manifest_mu, NULL);
    pthread_mutex_init(&db->mview_mu, NULL);
    rp_domain_init(&db->gc);
    pthread_mutex_init(&db->sync_mu, NULL);
    clock_cond_init(&db->sync_cv);
    int rc;
    db->dir = strdup(dir);
    if (!db->dir) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = keydir_init(&db->kd, &db->gc))) goto fail;
    if ((rc = manifest_load(dir, &db->m))) goto fail;
    db->mview_horizon = db->m.backup_horizon;
    if (db->m.extra && !(db->mview_extra = json_deep_copy(db->m.extra))) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    /* A read-only open only ignores orphans: it reads nothing but what the MANIFEST names. */
    if (mode != DB_MODE_READONLY && (rc = db_remove_orphans(db))) goto fail;
    uint64_t max_lsn = 0, scanned = 0;
    for (size_t i = 0; i < db->m.nsegments; i++) {
        int active = db->m.segments[i] == db->m.active;
        struct segment *s;
        uint64_t reserve = active ? db_reserve(db, 0) : 0;
        rc = mode == DB_MODE_WRITE ? seg_open(dir, db->m.segments[i], db->m.dim, reserve, &s)
                                   : seg_open_readonly(dir, db->m.segments[i], db->m.dim, reserve, &s);
        if (rc) goto fail;
        s->sealed = !active;
        if ((rc = db_segs_push(db, s))) {
            seg_unref(s);
            goto fail;
        }
        if (active) db->active = s;
    }
    /* The keydir checkpoint, when valid, stands for every record below from[i]: only what lies past
     * it is read (salvage reads everything: it is looking for damage). */
    from = calloc(db->nsegs ? db->nsegs : 1, sizeof *from);
    if (!from) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < db->nsegs; i++) from[i] = SEG_HEADER_SIZE;
    if (mode != DB_MODE_SALVAGE && (rc = kdckpt_load(db, from, &max_lsn)) < 0) goto fail;
    for (size_t i = 0; i < db->nsegs; i++) {
        scanned += db->segs[i]->size - from[i];
        if ((rc = db_scan_segment(db, db->segs[i], from[i], &max_lsn))) goto fail;
    }
    free(from);
    from = NULL;
    db->last_lsn = max_lsn > db->m.lsn_floor ? max_lsn : db->m.lsn_floor;
    /* Loading kept no history (no reader could need it); from now on readers may come. */
    db->kd.history = true;
    db->visible = db->last_lsn;
    db->visible_live = db->kd.live;
    if ((rc = db_publish_segs(db))) goto fail;
    db->synced_seg = db->active->no;
    db->synced_off = db->active->size;
    if ((rc = db_start_flusher(db))) goto fail;
    if ((rc = kdckpt_start(db, scanned))) goto fail;
    *out = db;
    return JVDB_OK;
fail:
    free(from);
    db_free(db);
    return rc;
}

/* ---------------------------------------------------------------- durability */

/* Puts the database in the failed state (see "Failure rule" above): the first failure's message is kept
 * and logged, and every later write is refused with it.  Returns rc, so callers can `return db_fail(...)`. */
static int db_fail(jvdb_db *db, int rc)
{
    if (!atomic_exchange(&db->failed, true)) {
        snprintf(db->failed_msg, sizeof db->failed_msg, "%s", jvdb_errmsg());
        log_error("database '%s' stops accepting writes after an I/O failure: %s", db->m.name, db->failed_msg);
    }
    return rc;
}

/* The JVDB_EFAILED error of a write refused because an earlier I/O failure left the files in doubt. */
static int db_failed_error(jvdb_db *db)
{
    return err_set(JVDB_EFAILED, "database '%s' refuses writes after an earlier I/O failure (%s); reopen it",
                   db->m.name, db->failed_msg);
}

/* Waits until (seg_no, off) is durable, leading an fdatasync when none is running. */
static int db_sync_upto(jvdb_db *db, uint64_t seg_no, uint64_t off)
{
    pthread_mutex_lock(&db->sync_mu);
    for (;;) {
        if (db->synced_seg > seg_no || (db->synced_seg == seg_no && db->synced_off >= off)) {
            pthread_mutex_unlock(&db->sync_mu);
            return JVDB_OK;
        }
        if (atomic_load(&db->failed)) {
            pthread_mutex_unlock(&db->sync_mu);
            return db_failed_error(db);
        }
        if (!db->sync_running) break;
        pthread_cond_wait(&db->sync_cv, &db->sync_mu);
    }
    db->sync_running = true;
    pthread_mutex_unlock(&db->sync_mu);

    /* Everything written before this point is covered by the sync below. */
    db_write_lock(db);
    struct segment *s = db->active;
    seg_ref(s);
    uint64_t target_no = s->no, target_off = s->size;
    uint64_t target_lsn = db->last_lsn; /* every batch up to it is in the file below target_off */
    uint64_t target_live = db_live_now(db);
    db_write_unlock(db);

    int rc = JVDB_OK;
    if (io_fdatasync(s->fd) < 0) rc = db_fail(db, err_errno(errno, "fdatasync of %s failed", s->path));
    seg_unref(s);
    /* Durable: readers may see it now (before anyone is told it is synced). */
    if (rc == JVDB_OK) db_publish(db, target_lsn, target_live);

    pthread_mutex_lock(&db->sync_mu);
    db->sync_running = false;
    if (rc == JVDB_OK && (target_no > db->synced_seg || (target_no == db->synced_seg && target_off > db->synced_off))) {
        db->synced_seg = target_no;
        db->synced_off = target_off;
    }
    pthread_cond_broadcast(&db->sync_cv);
    pthread_mutex_unlock(&db->sync_mu);
    if (rc) return rc;
    /* The target may not reach our write if another writer sealed meanwhile; loop to be sure. */
    return db_sync_upto(db, seg_no, off);
}

int db_sync_all(jvdb_db *db)
{
    db_write_lock(db);
    struct segment *s = db->active;
    uint64_t no = s->no, off = s->size;
    db_write_unlock(db);
    return db_sync_upto(db, no, off);
}

int jvdb_sync(jvdb_db *db) { return db_sync_all(db); }

/* The flusher thread: syncs every sync interval (CLOCK_MONOTONIC) until the database stops. */
static void *db_flusher_main(void *arg)
{
    jvdb_db *db = arg;
    pthread_mutex_lock(&db->sync_mu);
    while (!db->stopping) {
        /* jvdb_db_set_sync changes the interval under write_mu, which this thread does not hold. */
        uint32_t ms = __atomic_load_n(&db->m.sync_interval_ms, __ATOMIC_RELAXED);
        if (!ms) ms = 1000;
        clock_cond_wait_ns(&db->sync_cv, &db->sync_mu, (int64_t)ms * 1000000);
        if (db->stopping) break;
        pthread_mutex_unlock(&db->sync_mu);
        if (!atomic_load(&db->failed)) db_sync_all(db);
        pthread_mutex_lock(&db->sync_mu);
    }
    pthread_mutex_unlock(&db->sync_mu);
    return NULL;
}

/* ---------------------------------------------------------------- sealing */

int db_store_manifest_locked(jvdb_db *db)
{
    assert(db_writer_held(db));
    int rc = db_check_writable(db);
    if (rc) return rc;
    db->m.lsn_floor = db->last_lsn;
    return db_manifest_commit_locked(db, &db->m);
}

int db_roll_locked(jvdb_db *db, uint64_t min_reserve)
{
    assert(db_writer_held(db));
    struct segment *old = db->active;
    /* The sealed segment must be entirely durable before anything lands in its successor, so that
     * "synced up to (segment, offset)" also covers every older segment. */
    if (io_fdatasync(old->fd) < 0) return db_fail(db, err_errno(errno, "fdatasync of %s failed", old->path));
    struct segment *s;
    uint64_t no = db->m.next_segment;
    int rc = seg_create(db->dir, no, db->m.dim, db_reserve(db, min_reserve + SEG_HEADER_SIZE), &s);
    if (rc) return rc;
    io_crash_point("seal.before_manifest");
    uint64_t *segs = realloc(db->m.segments, (db->m.nsegments + 1) * sizeof *segs);
    if (!segs) {
        unlink(s->path);
        seg_unref(s);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    db->m.segments = segs;
    db->m.segments[db->m.nsegments++] = no;
    db->m.next_segment = no + 1;
    db->m.active = no;
    /* Commit point: once the MANIFEST names the new segment it is the active one. */
    if ((rc = db_store_manifest_locked(db))) {
        db->m.nsegments--;
        db->m.next_segment = no;
        db->m.active = old->no;
        unlink(s->path);
        seg_unref(s);
        return rc;
    }
    io_crash_point("seal.after_manifest");
    /* Everything applied so far is in the old segment, which is durable now. */
    db_publish(db, db->last_lsn, db_live_now(db));
    rc = db_segs_push(db, s);
    if (rc == JVDB_OK) {
        old->sealed = true;
        db->active = s;
        if ((rc = db_publish_segs(db))) db->active = old;
    }
    if (rc) {
        seg_unref(s);
        return db_fail(db, rc);
    }
    pthread_mutex_lock(&db->sync_mu);
    if (db->synced_seg < old->no || (db->synced_seg == old->no && db->synced_off < old->size)) {
        db->synced_seg = old->no;
        db->synced_off = old->size;
    }
    pthread_mutex_unlock(&db->sync_mu);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- the write path */

/* Each writing thread keeps its encode buffer between batches: a batch of a thousand 128-d vectors
 * is 640 KB, and allocating that afresh means an mmap, page faults and an munmap per batch.  Buffers
 * above DB_KEEP_BUF go back at once so one huge batch does not pin memory for the thread's life. */
#define DB_KEEP_BUF (8u << 20)
static pthread_key_t db_buf_key;
static pthread_once_t db_buf_once = PTHREAD_ONCE_INIT;
struct db_buf {
    char *p;
    size_t cap;
};

/* pthread key destructor: frees a thread's kept encode buffer when the thread exits. */
static void db_buf_free(void *arg)
{
    struct db_buf *b = arg;
    free(b->p);
    free(b);
}

static void db_buf_init(void) { pthread_key_create(&db_buf_key, db_buf_free); }

/* An encode buffer of at least len bytes, REC_ALIGN-aligned: the thread's kept one, grown as needed, or a
 * fresh one above DB_KEEP_BUF; NULL when out of memory. */
static char *db_buf_get(size_t len)
{
    pthread_once(&db_buf_once, db_buf_init);
    if (len > DB_KEEP_BUF) return aligned_alloc(REC_ALIGN, rec_align(len));
    struct db_buf *b = pthread_getspecific(db_buf_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        pthread_setspecific(db_buf_key, b);
    }
    if (b->cap < len) {
        free(b->p);
        b->cap = rec_align(len);
        if (!(b->p = aligned_alloc(REC_ALIGN, b->cap))) b->cap = 0;
    }
    return b->p;
}

/* Gives back a buffer of db_buf_get: frees only the large ones, the thread keeps the rest. */
static void db_buf_put(char *p, size_t len)
{
    if (len > DB_KEEP_BUF) free(p);
}

/* DB_WRITE_BULK: which ops still apply (keep[i]), under write_mu; *total shrinks by the dropped. */
static void db_bulk_keep_locked(jvdb_db *db, const struct db_op *ops, size_t n, const char *buf, uint8_t *keep,
                                size_t *total, size_t *kept)
{
    *kept = 0;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = ((const struct rec_header *)(buf + off))->total_len;
        off += len;
        /* The newest version, published or not: only writers change it, and we are the writer. */
        struct kd_entry *e = keydir_find(&db->kd, ops[i].id, ops[i].id_len);
        int live = e && e->kind == REC_KIND_PUT;
        keep[i] = (ops[i].kind == REC_KIND_PUT || live) && (!ops[i].if_lsn || (live && e->lsn == ops[i].if_lsn));
        if (keep[i]) (*kept)++;
        else *total -= len;
    }
}

int db_write(jvdb_db *db, const struct db_op *ops, size_t n, uint64_t *last_lsn)
{
    return db_write_ops(db, ops, n, 0, last_lsn, NULL);
}

/* The append tail of both writes (db_write_ops, db_append_raw), write_mu held: puts the sealed batch
 * at the end of the active segment (a fresh one when it does not fit, big enough for a batch larger
 * than the segment size), then indexes its records; *seg gets the segment written.  A failed write is
 * cut back out of the file so the tail stays clean; bytes in the file that the index could not take
 * fail the database (state unknown). */
static int db_append_locked(jvdb_db *db, const char *buf, size_t len, struct segment **seg)
{
    struct segment *s = db->active;
    int rc;
    if ((s->size > SEG_HEADER_SIZE && s->size + len > db->m.segment_max_bytes) || s->size + len > s->map_len) {
        if ((rc = db_roll_locked(db, len))) return rc;
        s = db->active;
    }
    uint64_t start = s->size;
    io_crash_point("write.before_append");
    if (io_pwrite_all(s->fd, buf, len, (off_t)start) < 0) {
        rc = err_errno(errno, "cannot append %zu bytes to %s", len, s->path);
        int saved_rc = rc;
        char saved_msg[1024];
        snprintf(saved_msg, sizeof saved_msg, "%s", jvdb_errmsg());
        if (io_ftruncate(s->fd, (off_t)start) < 0)
            db_fail(db, err_errno(errno, "cannot truncate %s after a failed write", s->path));
        return err_set(saved_rc, "%s", saved_msg);
    }
    io_crash_point("write.after_append");
    __atomic_store_n(&s->size, start + len, __ATOMIC_RELEASE);
    rc = JVDB_OK;
    for (size_t p = 0; p < len && !rc;) {
        const struct rec_header *h = (const struct rec_header *)(buf + p);
        rc = keydir_apply_copy(&db->kd, s, start + p, h, db->m.dim);
        p += h->total_len;
    }
    if (rc) db_fail(db, rc);
    *seg = s;
    return rc;
}

int db_write_ops(jvdb_db *db, const struct db_op *ops, size_t n, unsigned flags, uint64_t *last_lsn, size_t *applied)
{
    if (applied) *applied = 0;
    if (n == 0) return err_set(JVDB_EINVAL, "empty batch");
    uint32_t dim = db->m.dim;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += rec_size(dim, ops[i].kind, ops[i].id_len, ops[i].meta_len);
    if (total > UINT32_MAX) return err_set(JVDB_EINVAL, "batch of %zu bytes is too large (limit 4 GiB)", total);
    char *buf = db_buf_get(total);
    if (!buf) return err_set(JVDB_ENOMEM, "out of memory encoding a batch of %zu bytes", total);
    size_t buf_len = total; /* DB_WRITE_BULK may shrink total; the buffer's fate follows its size */
    uint8_t *keep = NULL;   /* DB_WRITE_BULK: which ops still apply (before any goto unlock) */
    int64_t now = clock_wall_ns();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        rec_encode(buf + off, dim, ops[i].kind, ops[i].id, ops[i].id_len, ops[i].vector, ops[i].meta, ops[i].meta_len,
                   now);
        off += ((struct rec_header *)(buf + off))->total_len;
    }

    int rc = db_check_writable(db);
    db_write_lock(db);
    if (rc) goto unlock;
    if (atomic_load(&db->failed)) {
        rc = db_failed_error(db);
        goto unlock;
    }
    size_t kept = n;
    if (flags & DB_WRITE_BULK) {
        /* Liveness and if_lsn are decided here because only writers change them. */
        if (!(keep = malloc(n))) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            goto unlock;
        }
        db_bulk_keep_locked(db, ops, n, buf, keep, &total, &kept);
        if (kept == 0) goto unlock;
        if (kept < n) {
            size_t src = 0, dst = 0;
            for (size_t i = 0; i < n; i++) {
                uint32_t len = ((struct rec_header *)(buf + src))->total_len;
                if (keep[i]) {
                    memmove(buf + dst, buf + src, len);
                    dst += len;
                }
                src += len;
            }
        }
        n = kept;
    }
    /* Deletes must name live vectors: checked here because only writers change liveness. */
    for (size_t i = 0; i < n && !keep; i++) {
        if (ops[i].kind != REC_KIND_DELETE) continue;
        /* The newest version, published or not: only writers change it, and we are the writer. */
        struct kd_entry *e = keydir_find(&db->kd, ops[i].id, ops[i].id_len);
        int live = e && e->kind == REC_KIND_PUT;
        /* Earlier ops of the same batch may create or delete the id. */
        for (size_t j = 0; j < i; j++)
            if (ops[j].id_len == ops[i].id_len && !memcmp(ops[j].id, ops[i].id, ops[i].id_len))
                live = ops[j].kind == REC_KIND_PUT;
        if (!live) {
            rc = err_set(JVDB_ENOTFOUND, "vector '%.*s' not found in database '%s'", (int)ops[i].id_len, ops[i].id,
                         db->m.name);
            goto unlock;
        }
    }
    uint64_t lsn = db->last_lsn;
    /* A batch's time is taken with its LSNs, under write_mu, and never before the previous batch's:
     * times rise with LSNs, so "the batches acknowledged by T" is a prefix of the log (point-in-time
     * restore, src/backup/pitr.c), whatever the order writers encoded their batches in. */
    int64_t stamp = clock_wall_ns();
    if (stamp < db->last_stamp_ns) stamp = db->last_stamp_ns;
    db->last_stamp_ns = stamp;
    off = 0;
    for (size_t i = 0; i < n; i++) {
        ((struct rec_header *)(buf + off))->time_ns = stamp;
        rec_seal(buf + off, ++lsn, i + 1 < n ? REC_FLAG_MORE : 0);
        off += ((struct rec_header *)(buf + off))->total_len;
    }
    struct segment *s;
    if ((rc = db_append_locked(db, buf, total, &s))) goto unlock;
    __atomic_store_n(&db->last_lsn, lsn, __ATOMIC_RELEASE);
    uint64_t seg_no = s->no, end = s->size;
    bool wait_sync = db->m.sync == JVDB_SYNC_ALWAYS; /* read under write_mu, which guards it */
    /* Lazy modes publish at once; sync=always publishes after the sync (db_sync_upto). */
    if (!wait_sync) db_publish(db, lsn, db_live_now(db));
    db_gc_locked(db);
    db_write_unlock(db);
    db_buf_put(buf, buf_len);
    free(keep);
    if (wait_sync && (rc = db_sync_upto(db, seg_no, end))) return rc;
    if (last_lsn) *last_lsn = lsn;
    if (applied) *applied = n;
    return JVDB_OK;
unlock:
    db_write_unlock(db);
    db_buf_put(buf, buf_len);
    free(keep);
    return rc;
}

/* Appends the records in buf (the caller's, sealed in place with the batch flags), synced or (for a
 * hidden build) not.  `checked`: every record already passed rec_check (a restore's archive reader
 * checked it), so it is not checked again, and resealed only when its flags change. */
static int db_append_raw_buf(jvdb_db *db, char *buf, size_t len, int sync, int checked)
{
    uint64_t max_lsn = 0;
    int64_t max_time = 0;
    int rc = JVDB_OK;
    for (size_t off = 0; off < len;) {
        const char *why = "record cut short";
        if (!checked && rec_check(buf + off, len - off, db->m.dim, &why) != REC_OK)
            return err_set(JVDB_ECORRUPT, "record at offset %zu of the batch is bad: %s", off, why);
        struct rec_header *h = (struct rec_header *)(buf + off);
        size_t next = off + h->total_len;
        unsigned flags = next < len ? REC_FLAG_MORE : 0;
        if (!checked || h->flags != flags) rec_seal(h, h->lsn, flags);
        if (h->lsn > max_lsn) max_lsn = h->lsn;
        if (h->time_ns > max_time) max_time = h->time_ns;
        off = next;
    }
    db_write_lock(db);
    if (max_time > db->last_stamp_ns) db->last_stamp_ns = max_time; /* later batches come after these */
    if (atomic_load(&db->failed)) {
        rc = db_failed_error(db);
        db_write_unlock(db);
        return rc;
    }
    struct segment *s;
    if ((rc = db_append_locked(db, buf, len, &s))) {
        db_write_unlock(db);
        return rc;
    }
    if (max_lsn > db->last_lsn) __atomic_store_n(&db->last_lsn, max_lsn, __ATOMIC_RELEASE);
    uint64_t seg_no = s->no, end = s->size, publish = db->last_lsn, publish_live = db_live_now(db);
    db_write_unlock(db);
    /* Synced (a replica acknowledges nothing it could lose), then published. */
    rc = sync ? db_sync_upto(db, seg_no, end) : JVDB_OK;
    if (rc == JVDB_OK) db_publish(db, publish, publish_live);
    return rc;
}

/* db_append_raw, synced or (for a hidden build) not: on a copy, checked. */
static int db_append_raw_mode(jvdb_db *db, const void *recs, size_t len, int sync)
{
    if (len == 0) return JVDB_OK;
    int wrc = db_check_writable(db);
    if (wrc) return wrc;
    if (len > UINT32_MAX) return err_set(JVDB_EINVAL, "raw batch of %zu bytes is too large", len);
    char *buf = aligned_alloc(REC_ALIGN, rec_align(len));
    if (!buf) return err_set(JVDB_ENOMEM, "out of memory");
    memcpy(buf, recs, len);
    int rc = db_append_raw_buf(db, buf, len, sync, 0);
    free(buf);
    return rc;
}

int db_append_raw_checked_unsynced(jvdb_db *db, void *recs, size_t len)
{
    if (len == 0) return JVDB_OK;
    int rc = db_check_writable(db);
    if (rc) return rc;
    if (len > UINT32_MAX) return err_set(JVDB_EINVAL, "raw batch of %zu bytes is too large", len);
    return db_append_raw_buf(db, recs, len, 0, 1);
}

int db_append_raw(jvdb_db *db, const void *recs, size_t len) { return db_append_raw_mode(db, recs, len, 1); }

int db_append_raw_unsynced(jvdb_db *db, const void *recs, size_t len) { return db_append_raw_mode(db, recs, len, 0); }

/* ---------------------------------------------------------------- validation and public writes */

/* Ids reach here as C strings: the length is where the first NUL is. */
static int db_check_id(const char *id, const char *where) { return rec_check_id(id, id ? strlen(id) : 0, where); }

/* Checks a vector, which is then stored exactly as given (for every metric).  Cosine refuses the
 * zero vector: it has no direction, so no similarity to anything.  The norm is summed in double,
 * so a vector of tiny but non-zero values is accepted (search copes with it, distance.c). */
static int db_check_vector(const jvdb_db *db, const float *v, uint32_t dim, const char *where)
{
    if (!v) return err_set(JVDB_EINVAL, "%svector is missing", where);
    if (dim != db->m.dim)
        return err_set(JVDB_EINVAL, "%svector has %u values but database '%s' has dimension %u", where, dim, db->m.name,
                       db->m.dim);
    return rec_check_vector(v, dim, db->m.metric, db->m.name, where);
}

/* Checks one record for a put: its id, its vector against the database, its metadata JSON. */
static int db_check_record(const jvdb_db *db, const jvdb_record *r, const char *where)
{
    int rc;
    if ((rc = db_check_id(r->id, where)) || (rc = db_check_vector(db, r->vector, r->dim, where)) ||
        (rc = rec_check_meta(r->meta_json, r->meta_json ? strlen(r->meta_json) : 0, where)))
        return rc;
    return JVDB_OK;
}

/* A cosine database written by a version that stored vectors normalised (MANIFEST format 1) is
 * marked format 2 before its first as-given vector, so that such a version refuses it from then on
 * instead of searching it as if every vector were unit length (docs/FORMAT.md).  Writers check the
 * format without the lock, so 2 is published only once the MANIFEST saying so is durable: a writer
 * that sees 2 can never put an as-given vector into a database whose file still says 1. */
static int db_mark_as_given(jvdb_db *db)
{
    if (db->m.metric != JVDB_METRIC_COSINE ||
        __atomic_load_n(&db->m.format, __ATOMIC_ACQUIRE) >= MANIFEST_FORMAT_AS_GIVEN)
        return JVDB_OK;
    db_write_lock(db);
    int rc = JVDB_OK;
    if (db->m.format < MANIFEST_FORMAT_AS_GIVEN && (rc = db_check_writable(db)) == JVDB_OK) {
        struct manifest next;
        db->m.lsn_floor = db->last_lsn;
        if ((rc = manifest_copy(&db->m, &next)) == JVDB_OK) {
            next.format = MANIFEST_FORMAT_AS_GIVEN;
            rc = db_manifest_commit_locked(db, &next);
            manifest_free(&next);
        }
        if (rc == JVDB_OK) __atomic_store_n(&db->m.format, (uint32_t)MANIFEST_FORMAT_AS_GIVEN, __ATOMIC_RELEASE);
    }
    db_write_unlock(db);
    return rc;
}

int jvdb_put(jvdb_db *db, const char *id, const float *vector, uint32_t dim, const char *meta_json, uint64_t *lsn_out)
{
    jvdb_record r = { id, vector, dim, meta_json };
    return jvdb_put_batch(db, &r, 1, lsn_out);
}

int jvdb_put_batch(jvdb_db *db, const jvdb_record *records, size_t count, uint64_t *last_lsn_out)
{
    err_clear();
    if (!db) return err_set(JVDB_EINVAL, "database handle is NULL");
    if (count == 0 || !records) return err_set(JVDB_EINVAL, "batch is empty");
    struct db_op *ops = calloc(count, sizeof *ops);
    if (!ops) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = JVDB_OK;
    for (size_t i = 0; i < count; i++) {
        if ((rc = db_check_record(db, &records[i], ""))) {
            /* Only a failure pays for naming the record. */
            char where[48];
            snprintf(where, sizeof where, "record %zu: ", i);
            if (count > 1) rc = db_check_record(db, &records[i], where);
            goto out;
        }
        ops[i].kind = REC_KIND_PUT;
        ops[i].id = records[i].id;
        ops[i].id_len = strlen(records[i].id);
        ops[i].vector = records[i].vector;
        ops[i].meta = records[i].meta_json;
        ops[i].meta_len = records[i].meta_json ? strlen(records[i].meta_json) : 0;
    }
    if ((rc = db_mark_as_given(db))) goto out;
    rc = db_write(db, ops, count, last_lsn_out);
out:
    free(ops);
    return rc;
}

int jvdb_delete(jvdb_db *db, const char *id, uint64_t *lsn_out)
{
    err_clear();
    if (!db) return err_set(JVDB_EINVAL, "database handle is NULL");
    int rc = db_check_id(id, "");
    if (rc) return rc;
    struct db_op op = { REC_KIND_DELETE, id, strlen(id), NULL, NULL, 0, 0 };
    return db_write(db, &op, 1, lsn_out);
}

/* ---------------------------------------------------------------- reads */

int jvdb_get(jvdb_db *db, const char *id, float *vector_out, char **meta_out)
{
    err_clear();
    if (!db) return err_set(JVDB_EINVAL, "database handle is NULL");
    int rc = db_check_id(id, "");
    if (rc) return rc;
    if (meta_out) *meta_out = NULL;
    rp_enter();
    /* The snapshot before the table (see jvdb_search): C leaves argument order open. */
    uint64_t snap = db_snapshot_lsn(db);
    const struct kd_entry *e = keydir_visible(keydir_find(&db->kd, id, strlen(id)), snap);
    if (!e || e->kind != REC_KIND_PUT) {
        rp_exit();
        return err_set(JVDB_ENOTFOUND, "vector '%s' not found in database '%s'", id, db->m.name);
    }
    __atomic_fetch_add((uint32_t *)&e->hits, 1, __ATOMIC_RELAXED);
    const struct rec_header *h = keydir_record(e);
    if (vector_out) memcpy(vector_out, rec_vector(h), (size_t)db->m.dim * sizeof(float));
    if (meta_out && h->meta_len) {
        char *m = malloc(h->meta_len + 1);
        if (!m) {
            rp_exit();
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        memcpy(m, rec_meta(h, db->m.dim), h->meta_len);
        m[h->meta_len] = '\0';
        *meta_out = m;
    }
    rp_exit();
    return JVDB_OK;
}

uint64_t jvdb_count(jvdb_db *db)
{
    /* As readers see it: the count at the visible LSN. */
    return __atomic_load_n(&db->visible_live, __ATOMIC_RELAXED);
}

int jvdb_iterate(jvdb_db *db, jvdb_iter_fn fn, void *arg)
{
    err_clear();
    if (!db || !fn) return err_set(JVDB_EINVAL, "database handle or callback is NULL");
    int rc = JVDB_OK;
    /* One snapshot for the whole walk: every vector as of one published batch. */
    rp_enter();
    uint64_t snap = db_snapshot_lsn(db);
    uint32_t nslots;
    const struct kd_slots *sl = keydir_slots(&db->kd, &nslots);
    for (uint32_t s = 0; s < nslots && rc == 0; s++) {
        const struct kd_entry *e = NULL;
        if (!keydir_slot_vector(sl, s, snap, db->m.dim, &e) || !e) continue;
        const struct rec_header *h = keydir_record(e);
        rc = fn(arg, e->id, e->id_len, rec_vector(h), h->meta_len ? rec_meta(h, db->m.dim) : NULL, h->meta_len, e->lsn);
    }
    rp_exit();
    return rc;
}

int jvdb_stats_get(jvdb_db *db, jvdb_stats *out)
{
    err_clear();
    if (!db || !out) return err_set(JVDB_EINVAL, "database handle or output is NULL");
    memset(out, 0, sizeof *out);
    rp_enter();
    uint64_t records = 0;
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n; i++) {
        const struct segment *s = l->segs[i];
        out->file_bytes += __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
        out->live_bytes += __atomic_load_n(&s->live_bytes, __ATOMIC_RELAXED);
        records += __atomic_load_n(&s->records, __ATOMIC_RELAXED);
    }
    out->segments = (uint32_t)l->n;
    out->live_records = __atomic_load_n(&db->visible_live, __ATOMIC_RELAXED);
    out->tombstones = __atomic_load_n(&db->kd.tombstones, __ATOMIC_RELAXED);
    out->dead_records = records > out->live_records ? records - out->live_records : 0;
    rp_exit();
    if (out->live_bytes + out->segments * (uint64_t)SEG_HEADER_SIZE > out->file_bytes)
        out->live_bytes = out->file_bytes - out->segments * (uint64_t)SEG_HEADER_SIZE;
    out->dead_bytes = out->file_bytes - out->live_bytes - out->segments * (uint64_t)SEG_HEADER_SIZE;
    out->dead_ratio = out->file_bytes ? (double)out->dead_bytes / (double)out->file_bytes : 0.0;
    out->last_lsn = __atomic_load_n(&db->last_lsn, __ATOMIC_ACQUIRE);
    out->backup_horizon = db_backup_horizon(db);
    return JVDB_OK;
}

/* A sync mode change: the new mode and interval, and the old ones for undo. */
struct db_sync_change {
    jvdb_sync_mode mode, old_mode;
    uint32_t ms, old_ms;
};

/* Sets the sync mode (write_mu held; atomics for the flusher, which reads it without the lock). */
static int db_sync_apply(jvdb_db *db, void *ctx)
{
    struct db_sync_change *c = ctx;
    c->old_mode = db->m.sync;
    c->old_ms = db->m.sync_interval_ms;
    __atomic_store_n(&db->m.sync, c->mode, __ATOMIC_RELAXED);
    __atomic_store_n(&db->m.sync_interval_ms, c->ms, __ATOMIC_RELAXED);
    return JVDB_OK;
}

/* Puts the old sync mode back unless another change replaced this one meanwhile. */
static void db_sync_undo(jvdb_db *db, void *ctx)
{
    struct db_sync_change *c = ctx;
    if (db->m.sync != c->mode || db->m.sync_interval_ms != c->ms) return;
    __atomic_store_n(&db->m.sync, c->old_mode, __ATOMIC_RELAXED);
    __atomic_store_n(&db->m.sync_interval_ms, c->old_ms, __ATOMIC_RELAXED);
}

int jvdb_db_set_sync(jvdb_db *db, jvdb_sync_mode mode, uint32_t interval_ms)
{
    err_clear();
    jvdb_db_options o;
    jvdb_db_get_options(db, &o);
    o.sync = mode;
    if (mode == JVDB_SYNC_INTERVAL) o.sync_interval_ms = interval_ms;
    int rc = db_check_options(&o);
    if (rc) return rc;
    struct db_sync_change c = { .mode = mode, .ms = o.sync_interval_ms };
    if ((rc = db_manifest_change(db, db_sync_apply, db_sync_undo, &c))) return rc;
    db_write_lock(db);
    rc = db_start_flusher(db);
    db_write_unlock(db);
    /* Leaving a lazy mode: make what was written under it durable now. */
    if (rc == JVDB_OK && mode == JVDB_SYNC_ALWAYS) rc = db_sync_all(db);
    return rc;
}

/* One extras key set or removed, with the value it replaced (for undo). */
struct db_extra_change {
    const char *key;
    json_t *value, *old;
};

/* Sets or removes the key (write_mu held), keeping a reference on the old value. */
static int db_extra_apply(jvdb_db *db, void *ctx)
{
    struct db_extra_change *c = ctx;
    if (!db->m.extra && !(db->m.extra = json_object())) return err_set(JVDB_ENOMEM, "out of memory");
    c->old = json_object_get(db->m.extra, c->key);
    if (c->old) json_incref(c->old);
    if (!c->value) json_object_del(db->m.extra, c->key);
    else if (json_object_set(db->m.extra, c->key, c->value)) return err_set(JVDB_ENOMEM, "out of memory");
    return JVDB_OK;
}

/* Puts the old value back unless the key holds another change's value by now. */
static void db_extra_undo(jvdb_db *db, void *ctx)
{
    struct db_extra_change *c = ctx;
    if (json_object_get(db->m.extra, c->key) != c->value) return;
    if (c->old) json_object_set(db->m.extra, c->key, c->old);
    else json_object_del(db->m.extra, c->key);
}

int db_set_manifest_extra(jvdb_db *db, const char *key, json_t *value)
{
    struct db_extra_change c = { key, value, NULL };
    int rc = db_manifest_change(db, db_extra_apply, db_extra_undo, &c);
    /* Under write_mu: the last reference may be these, and other threads read the values under it. */
    db_write_lock(db);
    if (c.old) json_decref(c.old);
    if (value) json_decref(value);
    db_write_unlock(db);
    return rc;
}

/* A backup horizon move, with the horizon it replaced. */
struct db_horizon_change {
    uint64_t lsn, old;
};

/* Moves the horizon (write_mu held). */
static int db_horizon_apply(jvdb_db *db, void *ctx)
{
    struct db_horizon_change *c = ctx;
    c->old = db->m.backup_horizon;
    db->m.backup_horizon = c->lsn;
    return JVDB_OK;
}

/* Puts the old horizon back unless another move replaced this one meanwhile. */
static void db_horizon_undo(jvdb_db *db, void *ctx)
{
    struct db_horizon_change *c = ctx;
    if (db->m.backup_horizon == c->lsn) db->m.backup_horizon = c->old;
}

int db_set_backup_horizon(jvdb_db *db, uint64_t lsn)
{
    struct db_horizon_change c = { lsn, 0 };
    return db_manifest_change(db, db_horizon_apply, db_horizon_undo, &c);
}

void db_close(jvdb_db *db)
{
    if (!db) return;
    if (db->flusher_started) {
        pthread_mutex_lock(&db->sync_mu);
        db->stopping = true;
        pthread_cond_broadcast(&db->sync_cv);
        pthread_mutex_unlock(&db->sync_mu);
        pthread_join(db->flusher, NULL);
    }
    if (db->mode == DB_MODE_WRITE && !atomic_load(&db->failed) && db_sync_all(db) != JVDB_OK)
        log_error("final sync of database '%s' failed: %s", db->m.name, jvdb_errmsg());
    kdckpt_stop(db, 1);
    db_free(db);
}

void db_start_writeback(jvdb_db *db, uint64_t *seg_no, uint64_t *from)
{
    db_write_lock(db);
    struct segment *s = db->active;
    uint64_t no = s->no, size = s->size;
    int fd = s->fd;
    db_write_unlock(db);
    if (no != *seg_no) {
        *seg_no = no;
        *from = 0;
    }
    if (size > *from) sync_file_range(fd, (off_t)*from, (off_t)(size - *from), SYNC_FILE_RANGE_WRITE);
    *from = size;
}

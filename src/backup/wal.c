/*
 * wal.c — backup log objects (wal.h, docs/FORMAT.md "Backup log objects"): naming, listing, the
 * contiguous path a reader follows, verified reading, the fencing lease, and the shipper behind
 * jvdb_backup_ship.
 *
 * The invariant the shipper keeps: the objects of one incarnation, followed from a backup's lsn_to,
 * hold every record with an LSN after it exactly once, in whole batches, up to the shipped LSN.
 *   - No gap: an object always starts where the repository's log ends (the shipper's memory of that
 *     is dropped after any failure and found again by listing), and holds LSNs lsn_from+1 ..
 *     lsn_to without a hole (LSNs are dense; a hole means compaction dropped a record, and the log
 *     is then re-based on a new incremental backup instead).
 *   - No duplicate: an object is one atomic write, and a write whose outcome is unknown (an error
 *     after the bytes may have landed) is followed by a fresh listing, so the next object starts
 *     after it if it exists.
 *   - One writer: each fencing epoch is claimed once in the repository (exclusive create, or a claim listed
 *     alone), so no two shippers hold one epoch; each shipment re-reads the lease, and a higher epoch there
 *     stops this shipper.
 * Records are read from the segments inside a read section, and the object is compressed from them
 * there; the repository write comes after it, so writers never wait for a shipment and no lock is
 * held across I/O.
 */
#include "backup/wal.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/io.h"
#include "core/log.h"
#include "store/db.h"
#include "store/readpath.h"
#include "store/record.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define WAL_DEFAULT_OBJECT (64u << 20)
#define WAL_DEFAULT_LEASE  (30ll * 1000000000ll)
/* A fast zstd level: on the bench's vector records -5 compresses at about twice the speed of -1 and four
 * times level 1's, for 0.6% and 8% more bytes (random float32 hardly compresses at any level); a fold into
 * an incremental backup compresses them again at the backup's level. */
#define WAL_DEFAULT_LEVEL  (-5)
/* The shipped LSN goes to the MANIFEST at most this often (an fsync under the writer lock). */
#define WAL_PIN_EVERY_NS   (30ll * 1000000000ll)

/* ------------------------------------------------------------------ names */

void wal_name(char out[WAL_NAME_MAX], int64_t incarnation, uint64_t lsn_from, uint64_t lsn_to, int64_t first_ns,
              int64_t last_ns, uint64_t epoch)
{
    snprintf(out, WAL_NAME_MAX,
             "%" PRId64 "/%020" PRIu64 "-%020" PRIu64 "-%019" PRId64 "-%019" PRId64 "-%010" PRIu64 ".jvl", incarnation,
             lsn_from, lsn_to, first_ns, last_ns, epoch);
}

/* Parses exactly `width` decimal digits at *p into *v and moves past them. */
static int wal_digits(const char **p, int width, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < width; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return -1;
        if (x > (UINT64_MAX - 9) / 10) return -1;
        x = x * 10 + (uint64_t)(c - '0');
    }
    *p += width;
    *v = x;
    return 0;
}

int wal_parse_name(const char *name, struct wal_entry *e)
{
    memset(e, 0, sizeof *e);
    if (strlen(name) >= WAL_NAME_MAX) return -1;
    const char *p = name, *slash = strchr(name, '/');
    if (!slash || slash == name || slash - name > 19) return -1;
    uint64_t inc, from, to, first, last, epoch;
    if (wal_digits(&p, (int)(slash - name), &inc) || *p++ != '/') return -1;
    if (wal_digits(&p, 20, &from) || *p++ != '-' || wal_digits(&p, 20, &to) || *p++ != '-' ||
        wal_digits(&p, 19, &first) || *p++ != '-' || wal_digits(&p, 19, &last) || *p++ != '-' ||
        wal_digits(&p, 10, &epoch) || strcmp(p, ".jvl"))
        return -1;
    if (inc > INT64_MAX || first > INT64_MAX || last > INT64_MAX || from >= to || first > last) return -1;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->incarnation = (int64_t)inc;
    e->lsn_from = from;
    e->lsn_to = to;
    e->first_time_ns = (int64_t)first;
    e->last_time_ns = (int64_t)last;
    e->epoch = epoch;
    e->size = -1;
    return 0;
}

/* ------------------------------------------------------------------ listing and the path */

struct wal_collect {
    struct wal_entry *v;
    size_t n, cap;
};

/* obj_list callback: keeps every object under log/ whose name parses. */
static int wal_collect_fn(void *arg, const char *name, int64_t size)
{
    struct wal_collect *c = arg;
    if (strncmp(name, WAL_DIR "/", 4)) return 0;
    struct wal_entry e;
    if (wal_parse_name(name + 4, &e)) return 0;
    e.size = size;
    struct wal_entry *nv = grow_array(c->v, &c->cap, c->n + 1, sizeof *nv, 64);
    if (!nv) return err_set(JVDB_ENOMEM, "out of memory listing the backup log");
    c->v = nv;
    c->v[c->n++] = e;
    return 0;
}

/* wal_list's order: incarnation, lsn_from, epoch descending, lsn_to descending. */
static int wal_cmp(const void *a, const void *b)
{
    const struct wal_entry *x = a, *y = b;
    if (x->incarnation != y->incarnation) return x->incarnation < y->incarnation ? -1 : 1;
    if (x->lsn_from != y->lsn_from) return x->lsn_from < y->lsn_from ? -1 : 1;
    if (x->epoch != y->epoch) return x->epoch > y->epoch ? -1 : 1;
    if (x->lsn_to != y->lsn_to) return x->lsn_to > y->lsn_to ? -1 : 1;
    return strcmp(x->name, y->name);
}

int wal_list(jvdb_repo *r, const char *db, struct wal_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct wal_collect c = { 0 };
    int rc = r->ops->obj_list(r, db, WAL_DIR "/", wal_collect_fn, &c);
    if (rc) {
        free(c.v);
        return rc;
    }
    if (c.n) qsort(c.v, c.n, sizeof *c.v, wal_cmp);
    *out = c.v;
    *n = c.n;
    return JVDB_OK;
}

int wal_list_after(jvdb_repo *r, const char *db, const char *after, struct wal_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char from[WAL_NAME_MAX + 8];
    snprintf(from, sizeof from, WAL_DIR "/%s", after);
    struct wal_collect c = { 0 };
    int rc = repo_obj_list_after(r, db, WAL_DIR "/", from, wal_collect_fn, &c);
    if (rc) {
        free(c.v);
        return rc;
    }
    if (c.n) qsort(c.v, c.n, sizeof *c.v, wal_cmp);
    *out = c.v;
    *n = c.n;
    return JVDB_OK;
}

/* First index of ents (sorted as wal_list sorts) at or after (inc, lsn_from). */
static size_t wal_lower(const struct wal_entry *ents, size_t n, int64_t inc, uint64_t lsn_from)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct wal_entry *e = &ents[mid];
        if (e->incarnation < inc || (e->incarnation == inc && e->lsn_from < lsn_from)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int wal_path(const struct wal_entry *ents, size_t n, int64_t incarnation, uint64_t base_lsn, size_t **idx, size_t *k)
{
    *idx = NULL;
    *k = 0;
    size_t lo = wal_lower(ents, n, incarnation, 0), hi = wal_lower(ents, n, incarnation, UINT64_MAX);
    if (lo == hi) return JVDB_OK;
    /* Fenced objects: one whose epoch is below that of an object starting at or before it (a
     * newer primary took over from there).  One pass, as ents come by lsn_from, epoch first. */
    unsigned char *dead = calloc(hi - lo, 1);
    if (!dead) return err_set(JVDB_ENOMEM, "out of memory following the backup log");
    uint64_t max_epoch = 0;
    for (size_t i = lo; i < hi; i++) {
        if (ents[i].epoch < max_epoch) dead[i - lo] = 1;
        else max_epoch = ents[i].epoch;
    }
    size_t cap = 0, best = SIZE_MAX;
    /* The first object starts at the base or spans it: the live one starting nearest at or below the base (the highest
     * epoch among those starting there), as the rest of the path is followed from its end. */
    for (size_t i = lo; i < hi && ents[i].lsn_from <= base_lsn; i++)
        if (!dead[i - lo] && ents[i].lsn_to > base_lsn &&
            (best == SIZE_MAX || ents[i].lsn_from > ents[best].lsn_from ||
             (ents[i].lsn_from == ents[best].lsn_from && ents[i].epoch > ents[best].epoch)))
            best = i;
    int rc = JVDB_OK;
    while (best != SIZE_MAX) {
        size_t *nv = grow_array(*idx, &cap, *k + 1, sizeof *nv, 64);
        if (!nv) {
            rc = err_set(JVDB_ENOMEM, "out of memory following the backup log");
            break;
        }
        *idx = nv;
        (*idx)[(*k)++] = best;
        /* The next starts where this one ends: the first live one there has the highest epoch. */
        uint64_t cur = ents[best].lsn_to;
        best = SIZE_MAX;
        for (size_t i = wal_lower(ents, n, incarnation, cur); i < hi && ents[i].lsn_from == cur; i++)
            if (!dead[i - lo]) {
                best = i;
                break;
            }
    }
    free(dead);
    if (rc) {
        free(*idx);
        *idx = NULL;
        *k = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ reading one object */

struct wal_check {
    const struct wal_entry *e;
    uint64_t records, last_lsn; /* last_lsn starts at the entry's lsn_from */
    int64_t first_ns, last_ns;
    unsigned last_flags;
    const char *bad;
};

/* First pass over an object: what the archive reader cannot know (times, batches). */
static int wal_check_fn(void *arg, const void *recs, size_t len, size_t nrecs)
{
    (void)nrecs;
    struct wal_check *c = arg;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        /* The archive reader checks ascending order only: a missing LSN would be a silent gap. */
        if (h->lsn != c->last_lsn + 1 && !c->bad) c->bad = "its LSNs are not dense (a record is missing)";
        if (c->records == 0) c->first_ns = h->time_ns;
        else if ((c->last_flags & REC_FLAG_MORE) && h->time_ns != c->last_ns && !c->bad)
            c->bad = "two records of one batch carry different times";
        c->records++;
        c->last_ns = h->time_ns;
        c->last_flags = h->flags;
        c->last_lsn = h->lsn;
        off += h->total_len;
    }
    return 0;
}

int wal_read(jvdb_repo *r, const char *db, const struct wal_entry *e, uint32_t dim, jvdb_metric metric,
             archive_chunk_fn fn, void *arg)
{
    char path[WAL_NAME_MAX + 8], what[WAL_NAME_MAX + JVDB_MAX_NAME_LEN + 40];
    snprintf(path, sizeof path, "%s/%s", WAL_DIR, e->name);
    snprintf(what, sizeof what, "log object %s of '%s'", e->name, db);
    char *buf = NULL;
    size_t len = 0;
    int rc = r->ops->obj_get(r, db, path, &buf, &len);
    if (rc) return rc;
    struct backup_meta m;
    memset(&m, 0, sizeof m);
    snprintf(m.database, sizeof m.database, "%s", db);
    m.type = (jvdb_backup_type)ARCHIVE_TYPE_LOG;
    m.dim = dim;
    m.metric = metric;
    m.lsn_from = e->lsn_from;
    m.lsn_to = e->lsn_to;
    struct wal_check ck = { .e = e, .last_lsn = e->lsn_from };
    struct archive_read_result res;
    struct repo_reader *rd = repo_mem_reader(buf, len);
    rc = rd ? archive_read_as(rd, &m, what, wal_check_fn, &ck, NULL, &res) : err_set(JVDB_ENOMEM, "out of memory");
    if (rd) rd->close(rd);
    if (!rc) {
        const char *bad = ck.bad;
        if (!bad && ck.records == 0) bad = "it holds no record";
        if (!bad && ck.last_lsn != e->lsn_to) bad = "its last record is not at lsn_to";
        if (!bad && (ck.last_flags & REC_FLAG_MORE)) bad = "it ends inside a batch";
        if (!bad && (ck.first_ns != e->first_time_ns || ck.last_ns != e->last_time_ns))
            bad = "the times of its first and last records do not match its name";
        if (bad) rc = err_set(JVDB_ECORRUPT, "%s is corrupt: %s", what, bad);
    }
    if (!rc && fn) {
        rd = repo_mem_reader(buf, len);
        rc = rd ? archive_read_as(rd, &m, what, fn, arg, NULL, &res) : err_set(JVDB_ENOMEM, "out of memory");
        if (rd) rd->close(rd);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ the lease */

void wal_owner_name(char out[128])
{
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd) rnd = (uint64_t)clock_mono_ns() ^ (uint64_t)getpid();
    snprintf(out, 128, "%s:%d:%016" PRIx64, host, (int)getpid(), rnd);
}

/* A lease is one short JSON object; anything longer is not one (and is not parsed). */
#define WAL_LEASE_MAX_BYTES 4096

/* Parses the lease's JSON into *out; 0, or -1 with why in `why`. */
static int wal_lease_parse(const char *buf, size_t len, struct wal_lease *out, char *why, size_t whylen)
{
    if (len > WAL_LEASE_MAX_BYTES) {
        snprintf(why, whylen, "%zu bytes, where a lease is at most %d", len, WAL_LEASE_MAX_BYTES);
        return -1;
    }
    json_error_t je;
    json_t *doc = json_loadb(buf, len, 0, &je);
    if (!doc) {
        snprintf(why, whylen, "%zu bytes, not JSON: %s", len, je.text);
        return -1;
    }
    const char *owner = json_string_value(json_object_get(doc, "owner"));
    json_t *ep = json_object_get(doc, "epoch"), *rn = json_object_get(doc, "renewed_ns");
    /* An epoch past WAL_EPOCH_MAX would name objects wal_parse_name ignores: a log nobody sees. */
    if (!owner || strlen(owner) >= sizeof out->owner || !json_is_integer(ep) || !json_is_integer(rn) ||
        json_integer_value(ep) < 0 || (uint64_t)json_integer_value(ep) >= WAL_EPOCH_MAX || json_integer_value(rn) < 0) {
        json_decref(doc);
        snprintf(why, whylen,
                 "it needs a string owner of at most %zu bytes, an integer epoch in 0..%llu and an integer "
                 "renewed_ns >= 0",
                 sizeof out->owner - 1, (unsigned long long)WAL_EPOCH_MAX - 1);
        return -1;
    }
    snprintf(out->owner, sizeof out->owner, "%s", owner);
    out->epoch = (uint64_t)json_integer_value(ep);
    out->renewed_ns = (int64_t)json_integer_value(rn);
    json_decref(doc);
    return 0;
}

int wal_lease_read(jvdb_repo *r, const char *db, struct wal_lease *out)
{
    char why[200] = "";
    /* A store that is not atomic for a replaced object (s3rver answers a PUT before the file is written) may
     * show a lease mid-write right after its PUT: a few short retries tell that from a damaged lease. */
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt) usleep(50000u << attempt);
        memset(out, 0, sizeof *out);
        char *buf = NULL;
        size_t len = 0;
        int rc = r->ops->obj_get(r, db, WAL_LEASE_NAME, &buf, &len);
        if (rc) return rc;
        int bad = wal_lease_parse(buf, len, out, why, sizeof why);
        free(buf);
        if (!bad) return JVDB_OK;
    }
    return err_set(JVDB_ECORRUPT, "the backup log lease of '%s' (%s) is damaged: %s", db, WAL_LEASE_NAME, why);
}

/* wal_lease_read, with a database that has no lease yet read as the empty lease (no owner, epoch 0). */
static int wal_lease_read_or_none(jvdb_repo *r, const char *db, struct wal_lease *out)
{
    int rc = wal_lease_read(r, db, out);
    if (rc != JVDB_ENOTFOUND) return rc;
    err_clear();
    memset(out, 0, sizeof *out);
    return JVDB_OK;
}

int wal_lease_write(jvdb_repo *r, const char *db, const struct wal_lease *l)
{
    json_t *doc = json_pack("{s:s, s:I, s:I}", "owner", l->owner, "epoch", (json_int_t)l->epoch, "renewed_ns",
                            (json_int_t)l->renewed_ns);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = r->ops->obj_put(r, db, WAL_LEASE_NAME, text, strlen(text));
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ claiming an epoch */

/* Where a claim of epoch k lives: "log/EPOCH-<k:010>" (created exclusively), or with ".<claimed_ns:019>-<16 hex>"
 * after it, one object per claimant, where the store offers no exclusive create. */
#define WAL_CLAIM_PREFIX "log/EPOCH-"
#define WAL_CLAIM_STALE  1 /* wal_claim: epoch k was claimed by a taker that never took the lease; try k + 1 */
#define WAL_CLAIM_TRIES  4 /* listing claims: attempts at one epoch when every claimant backed off */

struct wal_claims {
    char mine[96];  /* our claim's name ("" = none yet) */
    int have_mine;  /* listed */
    size_t others;  /* claims by someone else (of the highest epoch listed) */
    uint64_t epoch; /* the highest epoch listed */
    char other[96]; /* one of its claims */
    int64_t newest; /* the newest claim time among them (INT64_MIN: an exclusive claim, its time inside) */
};

/* obj_list callback: the claims of the highest epoch listed, ours apart (a listed claim's time is in its name). */
static int wal_claims_fn(void *arg, const char *name, int64_t size)
{
    (void)size;
    struct wal_claims *c = arg;
    if (!strcmp(name, c->mine)) {
        c->have_mine = 1;
        return 0;
    }
    const char *p = name + strlen(WAL_CLAIM_PREFIX);
    uint64_t k;
    if (strlen(name) >= sizeof c->other || strncmp(name, WAL_CLAIM_PREFIX, strlen(WAL_CLAIM_PREFIX)) ||
        wal_digits(&p, 10, &k) || (*p && *p != '.') || (*p && p[1] == '\0'))
        return 0;
    int64_t ns = *p ? strtoll(p + 1, NULL, 10) : INT64_MIN;
    if (c->others && k < c->epoch) return 0;
    if (!c->others || k > c->epoch) {
        c->others = 0;
        c->epoch = k;
        c->newest = ns;
    }
    if (ns == INT64_MIN || (c->newest != INT64_MIN && ns > c->newest)) c->newest = ns;
    if (!c->others || ns == INT64_MIN) snprintf(c->other, sizeof c->other, "%s", name);
    c->others++;
    return 0;
}

/* Lists the claims of epoch k (all epochs when k is 0) into *c, keeping c->mine. */
static int wal_claims_list(jvdb_repo *r, const char *db, uint64_t k, struct wal_claims *c)
{
    char prefix[64];
    if (k) snprintf(prefix, sizeof prefix, WAL_CLAIM_PREFIX "%010" PRIu64, k);
    else snprintf(prefix, sizeof prefix, WAL_CLAIM_PREFIX);
    c->have_mine = 0;
    c->others = 0;
    c->epoch = 0;
    c->other[0] = '\0';
    c->newest = 0;
    return r->ops->obj_list(r, db, prefix, wal_claims_fn, c);
}

/* The owner and time of claim object `name` ("(unreadable)" and 0 when it cannot be read). */
static void wal_claim_read(jvdb_repo *r, const char *db, const char *name, char out[128], int64_t *at)
{
    char *buf = NULL;
    size_t len = 0;
    snprintf(out, 128, "(unreadable)");
    *at = 0;
    if (r->ops->obj_get(r, db, name, &buf, &len) == JVDB_OK) {
        json_t *doc = json_loadb(buf, len, 0, NULL);
        const char *o = json_string_value(json_object_get(doc, "owner"));
        if (o) snprintf(out, 128, "%s", o);
        *at = (int64_t)json_integer_value(json_object_get(doc, "claimed_ns"));
        json_decref(doc);
    }
    free(buf);
    err_clear();
}

/* The newest time a claim of c->epoch was made (an exclusive claim's is read from it). */
static int64_t wal_claims_newest(jvdb_repo *r, const char *db, const struct wal_claims *c)
{
    if (c->newest != INT64_MIN) return c->newest;
    char owner[128];
    int64_t at;
    wal_claim_read(r, db, c->other, owner, &at);
    return at;
}

/* The claim's JSON: {"claimed_ns": now, "owner": owner} (malloc'd). */
static char *wal_claim_text(const char *owner, int64_t now)
{
    json_t *doc = json_pack("{s:s, s:I}", "owner", owner, "claimed_ns", (json_int_t)now);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) err_set(JVDB_ENOMEM, "out of memory");
    return text;
}

/* Claims epoch k with an exclusive create: 0 when ours, WAL_CLAIM_STALE when a taker claimed it long ago and
 * never took the lease (or `force`), JVDB_EBUSY naming who claimed it at the same time. */
static int wal_claim_exclusive(jvdb_repo *r, const char *db, const char *owner, uint64_t k, int64_t now,
                               int64_t lease_ns, int force)
{
    char name[64];
    snprintf(name, sizeof name, WAL_CLAIM_PREFIX "%010" PRIu64, k);
    char *text = wal_claim_text(owner, now);
    if (!text) return JVDB_ENOMEM;
    int rc = r->ops->obj_create(r, db, name, text, strlen(text));
    free(text);
    if (rc != JVDB_EEXISTS) return rc;
    err_clear();
    char other[128];
    int64_t at;
    wal_claim_read(r, db, name, other, &at);
    if (!strcmp(other, owner)) return JVDB_OK; /* ours, from an attempt whose answer was lost */
    if (force || now - at >= lease_ns) return WAL_CLAIM_STALE;
    return err_set(JVDB_EBUSY, "fenced: epoch %llu of the backup log of '%s' was claimed by %s at the same time",
                   (unsigned long long)k, db, other);
}

/* Claims epoch k on a store without exclusive create: every claimant writes an object of its own and lists the
 * epoch's claims; it holds the epoch only if its claim is the only one listed.  Two claimants cannot both see
 * only their own (each lists after its claim is visible, and claims stay visible), so at most one wins; when
 * both see both, both back off (their claims removed) and try again after a random pause. */
static int wal_claim_listing(jvdb_repo *r, const char *db, const char *owner, uint64_t k, int64_t now, int64_t lease_ns,
                             int force)
{
    struct wal_claims c;
    memset(&c, 0, sizeof c);
    for (int attempt = 0; attempt < WAL_CLAIM_TRIES; attempt++) {
        c.mine[0] = '\0';
        int rc = wal_claims_list(r, db, k, &c);
        if (rc) return rc;
        if (c.others) {
            if (force || now - wal_claims_newest(r, db, &c) >= lease_ns) return WAL_CLAIM_STALE;
            char other[128];
            int64_t at;
            wal_claim_read(r, db, c.other, other, &at);
            return err_set(JVDB_EBUSY,
                           "fenced: epoch %llu of the backup log of '%s' was claimed by %s at the same time",
                           (unsigned long long)k, db, other);
        }
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd) rnd = (uint64_t)clock_mono_ns();
        int64_t at = clock_wall_ns();
        snprintf(c.mine, sizeof c.mine, WAL_CLAIM_PREFIX "%010" PRIu64 ".%019" PRId64 "-%016" PRIx64, k, at, rnd);
        char *text = wal_claim_text(owner, at);
        if (!text) return JVDB_ENOMEM;
        rc = r->ops->obj_put(r, db, c.mine, text, strlen(text));
        free(text);
        if (rc) return rc;
        /* A store may answer a PUT before the object lists (s3rver): our own claim must show first. */
        for (int seen = 0; !rc && seen < 5; seen++) {
            if (seen) usleep(20000u << seen);
            rc = wal_claims_list(r, db, k, &c);
            if (c.have_mine) break;
        }
        if (rc) return rc;
        if (!c.have_mine)
            return err_set(JVDB_EIO, "the backup log of '%s': our claim of epoch %llu (%s) does not show in a listing",
                           db, (unsigned long long)k, c.mine);
        if (!c.others) return JVDB_OK;
        /* Contended: back off.  Whoever saw only its own claim holds the epoch, and its claim stays listed. */
        r->ops->obj_delete(r, db, c.mine);
        err_clear();
        usleep(10000u + (unsigned)(rnd % 90000u));
        now = clock_wall_ns();
    }
    return err_set(JVDB_EBUSY, "fenced: epoch %llu of the backup log of '%s' stayed contended; not shipping",
                   (unsigned long long)k, db);
}

int wal_lease_take(jvdb_repo *r, const char *db, const char *owner, int64_t lease_ns, int force, int release,
                   struct wal_lease *prev, uint64_t *epoch)
{
    struct wal_lease l;
    int rc = wal_lease_read_or_none(r, db, &l);
    if (rc) return rc;
    if (prev) *prev = l;
    int64_t now = clock_wall_ns();
    if (!force && l.owner[0] && strcmp(l.owner, owner) && l.renewed_ns && now - l.renewed_ns < lease_ns)
        return err_set(JVDB_EBUSY,
                       "the backup log of '%s' is shipped by %s (lease renewed %.1f s ago, epoch %llu); not shipping",
                       db, l.owner, (double)(now - l.renewed_ns) / 1e9, (unsigned long long)l.epoch);
    /* Each epoch is claimed once in the repository: two takers that read the same lease cannot both get it.
     * Past the lease's epoch, the highest claimed one tells a taker at work (fresh: we lose) from one that
     * died before writing the lease, or a lease removed by hand (stale: the epoch after it). */
    uint64_t k = l.epoch + 1;
    struct wal_claims all;
    memset(&all, 0, sizeof all);
    if ((rc = wal_claims_list(r, db, 0, &all))) return rc;
    if (all.others && all.epoch >= k) {
        if (!force && now - wal_claims_newest(r, db, &all) < lease_ns) {
            char other[128];
            int64_t at;
            wal_claim_read(r, db, all.other, other, &at);
            if (strcmp(other, owner))
                return err_set(JVDB_EBUSY,
                               "fenced: epoch %llu of the backup log of '%s' was claimed by %s at the same time",
                               (unsigned long long)all.epoch, db, other);
        }
        k = all.epoch + 1;
    }
    for (;; k++) {
        if (k >= WAL_EPOCH_MAX)
            return err_set(JVDB_ECORRUPT,
                           "the backup log lease of '%s' is at epoch %llu, the last one log object names hold", db,
                           (unsigned long long)k - 1);
        rc = r->ops->obj_create ? wal_claim_exclusive(r, db, owner, k, now, lease_ns, force)
                                : wal_claim_listing(r, db, owner, k, now, lease_ns, force);
        if (rc != WAL_CLAIM_STALE) break;
    }
    if (rc) return rc;
    io_crash_point("ship.after_claim");
    struct wal_lease mine;
    memset(&mine, 0, sizeof mine);
    snprintf(mine.owner, sizeof mine.owner, "%s", owner);
    mine.epoch = k;
    mine.renewed_ns = release ? 0 : now;
    if ((rc = wal_lease_write(r, db, &mine))) return rc;
    io_crash_point("ship.after_lease");
    *epoch = k;
    return JVDB_OK;
}

/* ------------------------------------------------------------------ writing one object */

/* A stage that appends the archive to a wal_buf. */
struct mem_stage {
    struct repo_stage base;
    struct wal_buf *b;
};

/* Appends archive bytes to the buffer. */
static int mem_stage_write(struct repo_stage *s, const void *buf, size_t len)
{
    struct wal_buf *b = ((struct mem_stage *)s)->b;
    char *np = grow_array(b->p, &b->cap, b->len + len, 1, 1u << 16);
    if (!np) return err_set(JVDB_ENOMEM, "out of memory writing a log object");
    b->p = np;
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return JVDB_OK;
}

int wal_encode(const char *db, int64_t incarnation, uint64_t epoch, uint64_t lsn_from, uint32_t dim, jvdb_metric metric,
               int level, const void *const *recs, size_t n, struct wal_buf *buf, struct wal_entry *out)
{
    if (n == 0) return err_set(JVDB_EINVAL, "an empty log object");
    const struct rec_header *first = recs[0], *last = recs[n - 1];
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += ((const struct rec_header *)recs[i])->total_len;
    memset(out, 0, sizeof *out);
    wal_name(out->name, incarnation, lsn_from, last->lsn, first->time_ns, last->time_ns, epoch);
    out->incarnation = incarnation;
    out->lsn_from = lsn_from;
    out->lsn_to = last->lsn;
    out->first_time_ns = first->time_ns;
    out->last_time_ns = last->time_ns;
    out->epoch = epoch;
    char what[WAL_NAME_MAX + JVDB_MAX_NAME_LEN + 40];
    snprintf(what, sizeof what, "log object %s of '%s'", out->name, db);
    /* Room for the whole object up front (zstd's bound for incompressible input): no regrowth copies. */
    size_t want = (size_t)bytes + (size_t)bytes / 128 + (1u << 16);
    char *np = grow_array(buf->p, &buf->cap, want, 1, want);
    if (!np) return err_set(JVDB_ENOMEM, "out of memory writing %s", what);
    buf->p = np;
    buf->len = 0;
    struct mem_stage st = { .base = { .write = mem_stage_write }, .b = buf };
    struct archive_header ah = { dim, metric, (jvdb_backup_type)ARCHIVE_TYPE_LOG, lsn_from, last->lsn, n, bytes };
    struct archive_writer *w = NULL;
    uint64_t raw = 0, stored = 0;
    char sha[65];
    int rc = archive_writer_open(&st.base, &ah, level, 0, what, &w);
    if (!rc) archive_writer_no_sha(w);
    for (size_t i = 0; !rc && i < n; i++)
        rc = archive_writer_add(w, recs[i], ((const struct rec_header *)recs[i])->total_len);
    if (!rc) rc = archive_writer_finish(w, &raw, &stored, sha);
    archive_writer_free(w);
    out->size = (int64_t)stored;
    return rc;
}

int wal_put(jvdb_repo *r, const char *db, const struct wal_buf *buf, const struct wal_entry *e)
{
    char path[WAL_NAME_MAX + 8];
    snprintf(path, sizeof path, "%s/%s", WAL_DIR, e->name);
    io_crash_point("ship.before_object");
    int rc = r->ops->obj_put(r, db, path, buf->p, buf->len);
    if (!rc) io_crash_point("ship.after_object");
    return rc;
}

int wal_write(jvdb_repo *r, const char *db, int64_t incarnation, uint64_t epoch, uint64_t lsn_from, uint32_t dim,
              jvdb_metric metric, int level, const void *const *recs, size_t n, struct wal_entry *out)
{
    struct wal_buf b = { 0 };
    int rc = wal_encode(db, incarnation, epoch, lsn_from, dim, metric, level, recs, n, &b, out);
    if (!rc) rc = wal_put(r, db, &b, out);
    free(b.p);
    return rc;
}

/* ------------------------------------------------------------------ the shipper */

struct jvdb_shipper {
    char owner[128];
    uint64_t epoch;     /* of the lease we hold; 0 = none taken */
    int64_t renewed_ns; /* our last renewal */
    int lost;           /* another owner took the lease: we stop for good */
    int64_t inc;        /* the incarnation what follows is about */
    int known;          /* end is where the repository's log ends (else: list to find it) */
    uint64_t end;       /* ... and without `known`, a lower bound of it (for the backlog figures) */
    int have_end;
    int overflow;                  /* the backlog passed its limit: re-base on an incremental */
    uint64_t base_after;           /* a restorable backup newer than `end` (0: none): where the log goes on
                                    * when the records after `end` turn out to be gone */
    int64_t pin_ns;                /* when the shipped LSN last went to the MANIFEST (0 = not since start) */
    int contacted;                 /* the repository answered once: a directory that vanishes later is an outage, never
                     * re-created */
    const jvdb_ship_options *call; /* this call's options (during jvdb_backup_ship) */
    int repo_held;                 /* this call holds call->repo_lock (released when it returns) */
    struct wal_buf buf;            /* the object being written; kept while the database keeps shipping */
};

int jvdb_shipper_new(const char *owner, jvdb_shipper **out)
{
    err_clear();
    *out = NULL;
    if (owner && (!*owner || strlen(owner) >= 128)) return err_set(JVDB_EINVAL, "a lease owner is 1 to 127 bytes");
    jvdb_shipper *s = calloc(1, sizeof *s);
    if (!s) return err_set(JVDB_ENOMEM, "out of memory");
    if (owner) snprintf(s->owner, sizeof s->owner, "%s", owner);
    else wal_owner_name(s->owner);
    *out = s;
    return JVDB_OK;
}

/* Gives the lease up (renewed_ns 0) if we still hold it, so a successor takes it at once. */
static void ship_release(jvdb_shipper *s, jvdb_repo *repo, const char *db)
{
    if (!s->epoch || s->lost || !repo || !db) return;
    struct wal_lease l;
    if (wal_lease_read(repo, db, &l) == JVDB_OK && !strcmp(l.owner, s->owner) && l.epoch == s->epoch) {
        l.renewed_ns = 0;
        wal_lease_write(repo, db, &l);
    }
    s->epoch = 0;
    err_clear();
}

void jvdb_shipper_free(jvdb_shipper *s, jvdb_repo *repo, const char *db_name)
{
    if (!s) return;
    ship_release(s, repo, db_name);
    free(s->buf.p);
    free(s);
}

/* Takes, re-checks or renews the lease; JVDB_EBUSY (out->fenced) when another owner holds it. */
static int ship_lease(jvdb_shipper *s, jvdb_repo *repo, const char *db, int64_t lease_ns, jvdb_ship_result *out)
{
    struct wal_lease l;
    if (s->lost) {
        out->fenced = 1;
        return err_set(JVDB_EBUSY, "shipping of '%s' stopped: another primary took the backup log lease", db);
    }
    int64_t now = clock_wall_ns();
    if (!s->epoch) {
        uint64_t epoch = 0;
        int rc = wal_lease_take(repo, db, s->owner, lease_ns, 0, 0, NULL, &epoch);
        if (rc) {
            out->fenced = rc == JVDB_EBUSY;
            return rc;
        }
        s->epoch = epoch;
        s->renewed_ns = now;
        s->known = 0; /* whoever shipped before us may have moved the log's end */
        return JVDB_OK;
    }
    int rc = wal_lease_read_or_none(repo, db, &l);
    if (rc) return rc;
    if (l.epoch < s->epoch) {
        /* Our claim of the epoch is the authority: a lease removed by hand (or lost with the repository's
         * folder), or a lower epoch written after ours by a slower taker (or an old holder's renewal), is
         * not a takeover: ours goes back, and that writer finds itself fenced. */
        log_warn("backup log of '%s': the lease (%s) is %s; writing ours (epoch %llu) back", db, WAL_LEASE_NAME,
                 l.owner[0] ? "at an older epoch" : "gone", (unsigned long long)s->epoch);
        snprintf(l.owner, sizeof l.owner, "%s", s->owner);
        l.epoch = s->epoch;
        l.renewed_ns = now;
        if ((rc = wal_lease_write(repo, db, &l))) return rc;
        s->renewed_ns = now;
        return JVDB_OK;
    }
    if (strcmp(l.owner, s->owner) || l.epoch != s->epoch) {
        s->lost = 1;
        out->fenced = 1;
        log_error("backup log of '%s': fenced: %s took the lease (epoch %llu); this server stops shipping", db,
                  l.owner[0] ? l.owner : "(nobody)", (unsigned long long)l.epoch);
        return err_set(JVDB_EBUSY, "shipping of '%s' stopped: %s holds the backup log lease (epoch %llu)", db,
                       l.owner[0] ? l.owner : "(nobody)", (unsigned long long)l.epoch);
    }
    if (now - s->renewed_ns >= lease_ns / 3) {
        l.renewed_ns = now;
        if ((rc = wal_lease_write(repo, db, &l))) return rc;
        s->renewed_ns = now;
    }
    return JVDB_OK;
}

struct ship_scan {
    const struct rec_header **v;
    size_t n, cap;
    uint64_t bytes;
    int64_t oldest_ns;
    uint64_t oldest_lsn;
    int collect;
    uint64_t limit; /* collecting: stop at the first batch end past this many bytes while LSNs rise (0: never) */
    int stopped;    /* ... and it did */
};

#define SHIP_STOP 2 /* ship_scan_fn: enough collected for one object (never returned to a caller) */

/* db_records_after callback: counts (and, when collecting, keeps) each record. */
static int ship_scan_fn(void *arg, const struct rec_header *h)
{
    struct ship_scan *s = arg;
    s->bytes += h->total_len;
    if (!s->oldest_lsn || h->lsn < s->oldest_lsn) {
        s->oldest_lsn = h->lsn;
        s->oldest_ns = h->time_ns;
    }
    if (!s->collect) return 0;
    if (s->limit && s->n && h->lsn <= s->v[s->n - 1]->lsn) s->limit = 0; /* out of order: scan it all */
    const struct rec_header **nv = grow_array(s->v, &s->cap, s->n + 1, sizeof *nv, 4096);
    if (!nv) return err_set(JVDB_ENOMEM, "out of memory collecting the records to ship");
    s->v = nv;
    s->v[s->n++] = h;
    if (s->limit && s->bytes >= s->limit && !(h->flags & REC_FLAG_MORE)) {
        s->stopped = 1;
        return SHIP_STOP;
    }
    return 0;
}

/* qsort order of collected records: by LSN. */
static int ship_lsn_cmp(const void *a, const void *b)
{
    uint64_t x = (*(const struct rec_header *const *)a)->lsn, y = (*(const struct rec_header *const *)b)->lsn;
    return x < y ? -1 : x > y;
}

/* Bytes and age of what is acknowledged after `after` (what the log does not hold yet). */
static void ship_pending(jvdb_db *db, uint64_t after, jvdb_ship_result *out)
{
    struct ship_scan sc = { 0 };
    rp_enter();
    uint64_t upto = db_snapshot_lsn(db);
    int rc = db_records_after(db, after, upto, ship_scan_fn, &sc);
    rp_exit();
    if (rc) {
        err_clear();
        return;
    }
    out->pending_bytes = sc.bytes;
    out->oldest_unshipped_ns = sc.oldest_lsn ? sc.oldest_ns : 0;
}

/* Takes the caller's repository lock for the rest of this call (held once taken); JVDB_EBUSY with out->deferred
 * when it is busy. */
static int ship_hold_repo(jvdb_shipper *s, jvdb_ship_result *out, const char *db, const char *what)
{
    if (s->repo_held || !s->call->repo_lock) return JVDB_OK;
    if (s->call->repo_lock(s->call->repo_lock_arg)) {
        out->deferred = 1;
        return err_set(JVDB_EBUSY,
                       "backup log of '%s': the repository is busy (a backup, prune or delete): %s waits "
                       "for the next shipment",
                       db, what);
    }
    s->repo_held = 1;
    return JVDB_OK;
}

/* Makes a backup of `type` and records in *lsn where it ends (the log continues from there). */
static int ship_backup(jvdb_db *db, jvdb_repo *repo, jvdb_shipper *s, jvdb_backup_type type, const char *why,
                       uint64_t *lsn, jvdb_ship_result *out)
{
    int rc = ship_hold_repo(s, out, jvdb_db_name(db), "the backup the log continues from");
    if (rc) return rc;
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    bo.type = type;
    bo.database_description = s->call->database_description;
    jvdb_backup_info info;
    rc = jvdb_backup_create(db, repo, &bo, &info);
    if (rc) return rc;
    *lsn = info.lsn_to;
    snprintf(out->note, sizeof out->note, "%s: made %s backup %s (LSN %llu) and the log continues from it", why,
             info.type == JVDB_BACKUP_FULL ? "full" : "incremental", info.id, (unsigned long long)info.lsn_to);
    log_info("backup log of '%s': %s", jvdb_db_name(db), out->note);
    if (s->call->on_backup) s->call->on_backup(s->call->on_backup_arg, &info);
    return JVDB_OK;
}

struct ship_probe {
    uint64_t lsn;
    int64_t time_ns;
    int differs;
};

/* db_records_after callback: notes whether the record with the probed LSN was another write. */
static int ship_probe_fn(void *arg, const struct rec_header *h)
{
    struct ship_probe *p = arg;
    if (h->lsn == p->lsn && h->time_ns != p->time_ns) p->differs = 1;
    return 0;
}

/* Whether the database's history agrees with a log object ending at `lsn` with a write of time
 * `time_ns`: false when the database holds another write under that LSN (it lost unsynced writes
 * in a crash after they were shipped, with sync=never or interval, and issued their LSNs again).  A
 * record compacted away since cannot be compared, and is taken as agreeing. */
static int ship_agrees(jvdb_db *db, uint64_t lsn, int64_t time_ns)
{
    struct ship_probe p = { lsn, time_ns, 0 };
    rp_enter();
    int rc = db_records_after(db, lsn - 1, lsn, ship_probe_fn, &p);
    rp_exit();
    err_clear();
    return rc || !p.differs;
}

/* Finds where the log continues: the end of the longest path of this incarnation's log from one of
 * its backups that the database has reached and agrees with; a full backup first when there is none. */
static int ship_find_end(jvdb_db *db, jvdb_repo *repo, jvdb_shipper *s, jvdb_ship_result *out)
{
    const char *name = jvdb_db_name(db);
    rp_enter();
    uint64_t snap = db_snapshot_lsn(db);
    rp_exit();
    if (s->overflow) {
        int rc = ship_backup(db, repo, s, JVDB_BACKUP_INCREMENTAL, "the backlog passed its limit", &s->end, out);
        if (rc) return rc;
        s->overflow = 0;
        s->known = s->have_end = 1;
        return JVDB_OK;
    }
    struct wal_entry *ents = NULL;
    size_t n = 0, nb = 0;
    uint64_t *bases = NULL;
    int rc = wal_list(repo, name, &ents, &n);
    if (!rc) rc = backup_bases(repo, name, s->inc, &bases, &nb);
    /* The log continues from the furthest end of a path even when a newer backup exists (one the
     * scheduler or the CLI made after the last object): starting over at that backup would leave
     * its records out of the log, a gap for a reader or replica coming from an older base.  When
     * the records after that end are gone, ship_one finds the hole and re-bases (SHIP_GAP). */
    uint64_t best = 0, best_base = 0;
    int found = 0, found_base = 0;
    for (size_t b = 0; !rc && b < nb; b++) {
        if (bases[b] <= snap && (!found_base || bases[b] > best_base)) {
            best_base = bases[b];
            found_base = 1;
        }
        size_t *idx = NULL, k = 0;
        if ((rc = wal_path(ents, n, s->inc, bases[b], &idx, &k))) break;
        /* From the path's end back: the furthest end the database agrees with is usually the last
         * one, and each probe scans the segments after it (forward, a long log cost one scan per
         * object at every restart). */
        for (size_t i = k; i-- > 0;) {
            uint64_t to = ents[idx[i]].lsn_to;
            if (to > snap) continue;
            if (found && to <= best) break;
            /* Past where the database diverged from the log, the log is not its history: a new
             * epoch's object starting earlier fences the rest. */
            if (ship_agrees(db, to, ents[idx[i]].last_time_ns)) {
                best = to;
                found = 1;
                break;
            }
        }
        free(idx);
    }
    if (!found && found_base) {
        /* A log starting on a bare backup: held until its first object lands, so a delete of that backup
         * cannot come in between and leave the log without a base. */
        if (!rc) rc = ship_hold_repo(s, out, name, "starting the log on a backup");
        best = best_base;
        found = 1;
    }
    s->base_after = found_base && best_base > best ? best_base : 0;
    free(ents);
    free(bases);
    if (rc) return rc;
    if (!found) {
        rc = ship_backup(db, repo, s, JVDB_BACKUP_FULL, "no backup of this database incarnation to continue", &best,
                         out);
        if (rc) return rc;
    }
    s->end = best;
    s->known = s->have_end = 1;
    return JVDB_OK;
}

#define SHIP_GAP 1 /* ship_pass: the records after the log's end are not all in the database */

/* Whether a record of the database's own segments has a sound shape (kind, id, lengths).  Its checksum and
 * contents are not verified again: the store wrote and checked them, the shipper copies them verbatim, and
 * every reader of the log verifies each record (wal_read) -- hashing every shipped byte here cost the
 * shipper as much CPU as compressing it. */
static int ship_rec_shape(const struct rec_header *h, uint32_t dim, const char **why)
{
    if (h->kind != REC_KIND_PUT && h->kind != REC_KIND_DELETE) *why = "unknown record kind";
    else if (h->id_len == 0) *why = "empty id";
    else if (rec_size(dim, h->kind, h->id_len, h->meta_len) != h->total_len)
        *why = "length fields disagree with the record length";
    else return 1;
    return 0;
}

/* One object's worth: collects the records after s->end up to `target` inside a read section, checks
 * they are dense and whole batches, and builds the object of up to max_bytes of them there, compressing
 * straight from the mapped segments (no copy); the repository write comes after the read section. */
static int ship_one(jvdb_db *db, jvdb_repo *repo, jvdb_shipper *s, const jvdb_ship_options *o, uint64_t target,
                    jvdb_ship_result *out, int *done)
{
    const char *name = jvdb_db_name(db);
    uint32_t dim = jvdb_db_dim(db);
    /* A large backlog is read one object at a time: the scan stops once an object's worth of whole batches
     * came in rising LSN order (else it reads everything after the log's end, as it must to sort). */
    struct ship_scan sc = { .collect = 1, .limit = o->max_object_bytes };
    struct wal_entry e = { 0 };
    uint64_t shipped_bytes = 0;
    *done = 1;
    /* The read section lasts while the object is compressed: it makes no writer or reader wait, it only
     * holds back the freeing of what was unpublished meanwhile (readpath.c). */
    rp_enter();
    int rc = db_records_after(db, s->end, target, ship_scan_fn, &sc);
    if (rc == SHIP_STOP) rc = JVDB_OK;
    if (!rc && sc.stopped && (sc.v[0]->lsn != s->end + 1 || sc.v[sc.n - 1]->lsn != s->end + sc.n)) {
        /* Not a dense run from the log's end (a hole, or records elsewhere): read all of it. */
        sc.n = 0;
        sc.limit = 0;
        sc.stopped = 0;
        rc = db_records_after(db, s->end, target, ship_scan_fn, &sc);
    }
    size_t k = 0;
    if (!rc && sc.n) {
        /* Segments hold records in LSN order nearly always (compaction output aside): sort only when not. */
        size_t up = 1;
        while (up < sc.n && sc.v[up - 1]->lsn <= sc.v[up]->lsn) up++;
        if (up < sc.n) qsort(sc.v, sc.n, sizeof *sc.v, ship_lsn_cmp);
        /* Dense LSNs from end+1 (a copy of one record in two segments counts once). */
        size_t m = 0;
        for (size_t i = 0; i < sc.n; i++)
            if (!m || sc.v[i]->lsn != sc.v[m - 1]->lsn) sc.v[m++] = sc.v[i];
        sc.n = m;
        for (size_t i = 0; i < sc.n && !rc; i++)
            if (sc.v[i]->lsn != s->end + 1 + i) rc = SHIP_GAP;
        if (!rc && !sc.stopped && sc.v[sc.n - 1]->lsn != target) rc = SHIP_GAP;
        /* Whole batches, up to max_bytes (at least one batch). */
        uint64_t bytes = 0;
        size_t cut = 0;
        for (size_t i = 0; !rc && i < sc.n; i++) {
            bytes += sc.v[i]->total_len;
            if (sc.v[i]->flags & REC_FLAG_MORE) continue;
            cut = i + 1;
            if (bytes >= o->max_object_bytes) break;
        }
        k = cut;
        *done = k == sc.n && !sc.stopped;
        if (!rc && k == 0)
            rc = err_set(JVDB_EIO, "backup log of '%s': the records after LSN %llu end inside a batch", name,
                         (unsigned long long)s->end);
        for (size_t i = 0; !rc && i < k; i++) {
            const char *why = "cut short";
            if (!ship_rec_shape(sc.v[i], dim, &why))
                rc = err_set(JVDB_ECORRUPT, "backup log of '%s': the record with LSN %llu is damaged (%s); not shipped",
                             name, (unsigned long long)sc.v[i]->lsn, why);
            shipped_bytes += sc.v[i]->total_len;
        }
        if (!rc && k)
            rc = wal_encode(name, s->inc, s->epoch, s->end, dim, jvdb_db_metric(db), o->level,
                            (const void *const *)sc.v, k, &s->buf, &e);
    }
    rp_exit();
    free(sc.v);
    if (!rc && k) {
        rc = wal_put(repo, name, &s->buf, &e);
        if (!rc) {
            s->end = e.lsn_to;
            out->objects++;
            out->records += k;
            out->bytes += shipped_bytes;
            out->stored_bytes += (uint64_t)e.size;
            snprintf(out->object, sizeof out->object, "%s", e.name);
        } else {
            s->known = 0; /* the object may or may not be there: list again next time */
        }
    }
    return rc;
}

/* Records the shipped LSN in the MANIFEST (compaction keeps what the log still needs, compact.c):
 * when shipping starts, then at most every WAL_PIN_EVERY_NS. */
static void ship_pin(jvdb_db *db, jvdb_shipper *s, int force)
{
    int64_t now = clock_mono_ns();
    if (!force && s->pin_ns && now - s->pin_ns < WAL_PIN_EVERY_NS) return;
    json_t *v = json_pack("{s:I, s:I}", "shipped_lsn", (json_int_t)s->end, "incarnation", (json_int_t)s->inc);
    io_crash_point("ship.before_pin");
    if (v && db_set_manifest_extra(db, DB_SHIP_PIN_KEY, v) == JVDB_OK) {
        s->pin_ns = now;
        io_crash_point("ship.after_pin");
    } else
        log_warn("backup log of '%s': cannot record the shipped LSN in the MANIFEST: %s", jvdb_db_name(db),
                 jvdb_errmsg());
    err_clear();
}

int jvdb_backup_ship(jvdb_db *db, jvdb_repo *repo, const jvdb_ship_options *opts, jvdb_ship_result *out)
{
    err_clear();
    jvdb_ship_result none;
    if (!out) out = &none;
    memset(out, 0, sizeof *out);
    jvdb_ship_options o;
    if (opts) o = *opts;
    else memset(&o, 0, sizeof o);
    if (!o.lease_ns) o.lease_ns = WAL_DEFAULT_LEASE;
    if (!o.max_object_bytes) o.max_object_bytes = WAL_DEFAULT_OBJECT;
    if (!o.level) o.level = WAL_DEFAULT_LEVEL;
    if (o.level < -7 || o.level > 19) return err_set(JVDB_EINVAL, "compression level %d is outside -7..19", o.level);
    if (o.lease_ns < 0) return err_set(JVDB_EINVAL, "the lease time must be positive");
    jvdb_shipper local, *s = o.shipper;
    if (!s) {
        memset(&local, 0, sizeof local);
        wal_owner_name(local.owner);
        s = &local;
    }
    const char *name = jvdb_db_name(db);
    int64_t inc = db_created_ns(db);
    s->call = &o;
    s->repo_held = 0;
    if (s->inc != inc) {
        s->inc = inc;
        s->known = 0;
        s->overflow = 0;
        s->pin_ns = 0;
        /* Until the repository answers, the MANIFEST's shipped LSN bounds what is pending. */
        json_t *pin = db_manifest_extra(db, DB_SHIP_PIN_KEY);
        json_t *pl = json_object_get(pin, "shipped_lsn"), *pi = json_object_get(pin, "incarnation");
        s->have_end = json_is_integer(pl) && json_is_integer(pi) && json_integer_value(pi) == inc;
        s->end = s->have_end ? (uint64_t)json_integer_value(pl) : 0;
        json_decref(pin);
    }
    /* Only the first contact may create the repository (like a first backup). */
    int rc = s->contacted ? JVDB_OK : repo->ops->init(repo);
    if (!rc) rc = ship_lease(s, repo, name, o.lease_ns, out);
    if (!rc) s->contacted = 1;
    int started = !s->known;
    if (!rc && (!s->known || s->overflow)) rc = ship_find_end(db, repo, s, out);
    if (!rc && o.shipper && (started || !s->pin_ns)) ship_pin(db, s, 1);
    uint64_t target = 0;
    if (!rc) {
        rp_enter();
        target = db_snapshot_lsn(db);
        rp_exit();
    }
    for (int rebased = 0, done = 0; !rc && !done && s->end < target;) {
        rc = ship_one(db, repo, s, &o, target, out, &done);
        if (rc == SHIP_GAP && s->base_after > s->end) {
            /* The records after the log's end are gone, but a backup made since (an earlier re-base, or
             * one the scheduler made) covers them: the log goes on from it rather than from yet another
             * incremental (which every restart, or every call without a shipper, would otherwise make). */
            snprintf(out->note, sizeof out->note,
                     "records after the log's end (LSN %llu) were compacted away: the log continues from the "
                     "backup at LSN %llu",
                     (unsigned long long)s->end, (unsigned long long)s->base_after);
            log_info("backup log of '%s': %s", name, out->note);
            s->end = s->base_after;
            s->base_after = 0;
            rc = JVDB_OK;
            done = 0;
        } else if (rc == SHIP_GAP && !rebased) {
            /* Compaction dropped records the log needed (before shipping started): an incremental
             * backup covers the gap, and the log continues from it. */
            rebased = 1;
            done = 0;
            rc = ship_backup(db, repo, s, JVDB_BACKUP_INCREMENTAL, "records after the log's end were compacted away",
                             &s->end, out);
            if (!rc) {
                rp_enter();
                target = db_snapshot_lsn(db);
                rp_exit();
            }
        } else if (rc == SHIP_GAP) {
            rc = err_set(JVDB_EIO, "backup log of '%s': records after LSN %llu are missing even after a backup", name,
                         (unsigned long long)s->end);
        }
    }
    /* What waits is counted once, after the shipment (before it, the scan read the whole backlog a second
     * time); a failed one counts from the last end the repository is known to hold. */
    if (!rc || s->have_end) ship_pending(db, s->end, out);
    if (!rc) {
        out->shipped_lsn = s->end;
        if (o.shipper) ship_pin(db, s, 0);
    } else if (s->lost && o.shipper) {
        /* Fenced for good: this server ships no more, so its shipped LSN must not hold compaction
         * back (the segments would pile up for as long as it takes writes). */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
        json_t *pin = db_manifest_extra(db, DB_SHIP_PIN_KEY);
        if (pin && db_set_manifest_extra(db, DB_SHIP_PIN_KEY, NULL) != JVDB_OK)
            log_warn("backup log of '%s': cannot drop the shipped LSN from the MANIFEST: %s", name, jvdb_errmsg());
        json_decref(pin);
        s->pin_ns = 0;
        err_set(rc, "%s", msg);
    } else if (out->pending_bytes && o.backlog_limit && out->pending_bytes > o.backlog_limit && !s->overflow &&
               !s->lost && !out->deferred) {
        /* Holding the database's segments for a log the repository cannot take is not bounded: give
         * the gap up (compaction may reclaim it) and cover it with an incremental backup later. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
        s->overflow = 1;
        out->overflow = 1;
        log_error("backup log of '%s': %llu bytes not shipped, past the backlog limit of %llu; giving the log up for "
                  "them: an incremental backup will cover the gap when the repository is back (%s)",
                  name, (unsigned long long)out->pending_bytes, (unsigned long long)o.backlog_limit, msg);
        if (o.shipper && db_set_manifest_extra(db, DB_SHIP_PIN_KEY, NULL) != JVDB_OK)
            log_warn("backup log of '%s': cannot drop the shipped LSN from the MANIFEST", name);
        s->pin_ns = 0;
        err_set(rc, "%s", msg);
    } else if (s->known) {
        out->shipped_lsn = s->end;
    }
    if (s->overflow) out->overflow = 1;
    if (s == &local || !out->objects) {
        /* An idle database (or a one-off call) keeps no buffer; a shipping one reuses its pages. */
        free(s->buf.p);
        memset(&s->buf, 0, sizeof s->buf);
    }
    if (s->repo_held) {
        s->repo_held = 0;
        o.repo_unlock(o.repo_lock_arg);
    }
    int64_t now = clock_wall_ns();
    if (out->pending_bytes && out->oldest_unshipped_ns && now > out->oldest_unshipped_ns)
        out->lag_seconds = (double)(now - out->oldest_unshipped_ns) / 1e9;
    if (s == &local) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
        ship_release(s, repo, name);
        if (rc) err_set(rc, "%s", msg);
    }
    return rc;
}

int jvdb_backup_ship_forget(jvdb_db *db)
{
    err_clear();
    json_t *pin = db_manifest_extra(db, DB_SHIP_PIN_KEY);
    if (!pin) return JVDB_OK;
    json_decref(pin);
    return db_set_manifest_extra(db, DB_SHIP_PIN_KEY, NULL);
}

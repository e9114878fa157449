/*
 * payload.c — payload indexes (issue 12): the declared fields of a database's metadata, held as
 * columns by slot, so that a filtered search knows which slots its filter can accept without
 * parsing their metadata, and how many.
 *
 * What it owns.  The declarations live in the MANIFEST extra "payload_indexes" ({"field": "keyword"
 * | "numeric"}, docs/FORMAT.md); the contents only in memory, per attached search index: for every
 * slot and field, the values a filter on that path would compare (payload_collect walks the path as
 * filter.c's filter_path_any does: through lists of objects, and into a leaf list's elements),
 * interned strings for keyword fields, numbers for numeric ones (a string holding a JSON number
 * counts, rule (3) of filter.c, remembered as not genuine so that equality stays exact in type).
 *
 * Why columns rebuilt from the records, not a persisted inverted index.  A write changes one slot's
 * values in O(values) with no posting list to search or rewrite, and evaluating a condition is one
 * pass over a dense array (tens of microseconds per 100,000 slots: bench/results/payload-index.md),
 * small beside a search.  Rebuilding costs one metadata parse per vector, the price of one unindexed
 * filtered scan, paid by the first filtered search after the open (or after a declaration); a
 * persisted copy would need its own LSN, catch-up and crash point for that saving.  Compaction moves
 * records without changing them (the values and LSNs stay right) and a restore opens a new handle,
 * which builds anew.
 *
 * Invariants.
 *  (1) Writers never wait for this index: the keydir hook (write_mu held) only queues the slot under
 *      pend_mu, a leaf held for O(1) steps.  Searches bring the index up to date themselves (the
 *      drain, under `lock` exclusive); plans read it under `lock` shared.
 *  (2) lsn[s] is the LSN of the version of slot s the columns describe, read from the slot's owner
 *      after its pending bit was cleared (the keydir changes a slot before its hook runs, so a later
 *      write queues the slot again).  A search drains after taking its snapshot S, so every version
 *      visible at S was queued before the drain: where lsn[s] <= S the columns are exactly the version
 *      S sees, and the slots with lsn[s] > S (written since) are candidates to verify.
 *  (3) A plan is a superset: conditions the index cannot answer (other operators, operand types,
 *      fields) count as "maybe" and their candidates are verified with filter_match, so answers are
 *      those of filter.c with or without an index (tests/unit/test_payload.c checks it at random).
 *  (4) Out of memory while draining marks the index broken: plans are no longer used (searches fall
 *      back to filter_match), never wrong.
 */
#include "search/payload.h"

#include "core/grow.h"
#include "core/err.h"
#include "core/log.h"
#include "search/filter.h"
#include "search/filter_internal.h"
#include "store/db.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PAYLOAD_EXTRA "payload_indexes"

struct pl_val {
    double num;      /* numeric fields */
    uint32_t kw;     /* keyword fields: interned string id */
    uint8_t genuine; /* numeric: a JSON number (not a numeric string) */
};

/* A slot's values past its first (most slots have one value or none). */
struct pl_more {
    uint32_t n;
    struct pl_val v[];
};

/* Per-slot flags of a field. */
#define PLF_EXISTS  1u /* the path resolves (a null or an object counts, as for $exists) */
#define PLF_FIRST   2u /* kw[s] / num[s] hold a value */
#define PLF_GENUINE 4u /* numeric: that value is a JSON number, not a numeric string */
#define PLF_MORE    8u /* more[s] holds the other values */

/* A field's columns, cap entries each: a condition is one pass over flags and kw (5 bytes a slot)
 * or num (9), dense so that the pass runs at memory speed. */
struct pl_field {
    char *path;
    char **segs;
    size_t nsegs;
    jvdb_payload_type type;
    uint8_t *flags;
    uint32_t *kw; /* keyword fields */
    double *num;  /* numeric fields */
    struct pl_more **more;
};

struct pl_kw {
    char *s; /* NULL: empty bucket */
    uint64_t hash;
    uint32_t id;
};

struct payload_index {
    jvdb_db *db;
    pthread_rwlock_t lock; /* exclusive: drains and declarations; shared: plans */
    struct pl_field *fields;
    size_t nfields;
    uint32_t cap;     /* slots the per-slot arrays hold */
    uint64_t *lsn;    /* per slot, invariant (2) */
    uint64_t *live;   /* bitmap: the described version holds a vector */
    uint64_t max_lsn; /* the largest lsn[s]: no slot is unsure for a snapshot at or past it */
    struct pl_kw *kw; /* interned keyword strings (open addressing, power-of-two size) */
    size_t kw_cap, kw_n;
    int broken; /* invariant (4) */

    pthread_mutex_t pend_mu; /* leaf: the queue of slots to re-read, and the counters below */
    int active;              /* some field is declared (the hook queues only then); written with
                                * both pend_mu and the database's write_mu held */
    uint64_t queued_seq;     /* pushes so far */
    uint64_t drained_seq;    /* queued_seq when the last drain took the queue */
    uint64_t need_seq;       /* queued_seq after the last queue_all: plans wait for a drain past it */
    uint8_t *pending_bit;
    uint32_t bits_cap;
    uint32_t *pending;
    uint32_t npending, pcap;
};

const char *jvdb_payload_type_name(jvdb_payload_type t) { return t == JVDB_PAYLOAD_NUMERIC ? "numeric" : "keyword"; }

int jvdb_payload_type_parse(const char *s, jvdb_payload_type *out)
{
    if (s && !strcasecmp(s, "keyword")) *out = JVDB_PAYLOAD_KEYWORD;
    else if (s && !strcasecmp(s, "numeric")) *out = JVDB_PAYLOAD_NUMERIC;
    else return err_set(JVDB_EINVAL, "payload index type '%s' is unknown (use keyword or numeric)", s ? s : "");
    return JVDB_OK;
}

/* Checks a field path with filter.c's rules (non-empty dot-separated parts, at most
 * FILTER_MAX_SEGS of them), plus a length limit and no leading '$' (those keys are operators). */
static int payload_check_path(const char *field)
{
    if (!field || !field[0]) return err_set(JVDB_EINVAL, "payload index: the field name is empty");
    size_t len = strlen(field);
    if (len > JVDB_PAYLOAD_MAX_FIELD)
        return err_set(JVDB_EINVAL, "payload index: field name is longer than %d bytes", JVDB_PAYLOAD_MAX_FIELD);
    if (field[0] == '$')
        return err_set(JVDB_EINVAL, "payload index: field '%s' starts with '$' (filters read that as an operator)",
                       field);
    size_t parts = 1;
    for (size_t i = 0; i < len; i++) {
        if (field[i] != '.') continue;
        parts++;
        if (i == 0 || i + 1 == len || field[i + 1] == '.')
            return err_set(JVDB_EINVAL,
                           "payload index: field path '%s' has an empty part (dots separate nested fields)", field);
    }
    if (field[len - 1] == '.')
        return err_set(JVDB_EINVAL, "payload index: field path '%s' has an empty part (dots separate nested fields)",
                       field);
    if (parts > FILTER_MAX_SEGS)
        return err_set(JVDB_EINVAL, "payload index: field path '%s' is deeper than %d parts", field, FILTER_MAX_SEGS);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- fields */

/* Empties slot s of field f. */
static void cell_clear(struct pl_field *f, uint32_t s)
{
    if (f->flags[s] & PLF_MORE) free(f->more[s]);
    f->more[s] = NULL;
    f->flags[s] = 0;
}

/* Sizes f's columns for ncap slots (new ones empty); JVDB_ENOMEM leaves the old sizes usable. */
static int field_grow(struct pl_field *f, uint32_t cap, uint32_t ncap)
{
    uint8_t *nf = realloc(f->flags, ncap);
    if (!nf) return JVDB_ENOMEM;
    f->flags = nf;
    memset(nf + cap, 0, ncap - cap);
    struct pl_more **nm = realloc(f->more, ncap * sizeof *nm);
    if (!nm) return JVDB_ENOMEM;
    f->more = nm;
    memset(nm + cap, 0, (ncap - cap) * sizeof *nm);
    if (f->type == JVDB_PAYLOAD_KEYWORD) {
        uint32_t *nk = realloc(f->kw, ncap * sizeof *nk);
        if (!nk) return JVDB_ENOMEM;
        f->kw = nk;
    } else {
        double *nn = realloc(f->num, ncap * sizeof *nn);
        if (!nn) return JVDB_ENOMEM;
        f->num = nn;
    }
    return JVDB_OK;
}

/* Frees one field and its columns (cap slots). */
static void field_free(struct pl_field *f, uint32_t cap)
{
    if (f->flags)
        for (uint32_t s = 0; s < cap; s++) cell_clear(f, s);
    free(f->flags);
    free(f->more);
    free(f->kw);
    free(f->num);
    for (size_t i = 0; i < f->nsegs; i++) free(f->segs[i]);
    free(f->segs);
    free(f->path);
}

/* Fills f for `path` with cap empty slots (path already checked). */
static int field_init(struct pl_field *f, const char *path, jvdb_payload_type type, uint32_t cap)
{
    memset(f, 0, sizeof *f);
    f->type = type;
    if (!(f->path = strdup(path)) || !(f->segs = calloc(FILTER_MAX_SEGS, sizeof *f->segs))) return JVDB_ENOMEM;
    for (const char *p = path;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!(f->segs[f->nsegs++] = strndup(p, len))) return JVDB_ENOMEM;
        if (!dot) break;
        p = dot + 1;
    }
    return cap ? field_grow(f, 0, cap) : JVDB_OK;
}

/* The declarations in the MANIFEST, as a JSON object (never NULL unless out of memory). */
static json_t *payload_decls(jvdb_db *db)
{
    json_t *x = db_manifest_extra(db, PAYLOAD_EXTRA);
    if (json_is_object(x)) return x;
    json_decref(x);
    return json_object();
}

/* payload_reload with `lock` held exclusive. */
static int payload_reload_locked(struct payload_index *pl)
{
    json_t *d = payload_decls(pl->db);
    if (!d) return err_set(JVDB_ENOMEM, "out of memory");
    size_t n = json_object_size(d);
    struct pl_field *nf = calloc(n ? n : 1, sizeof *nf);
    if (!nf) {
        json_decref(d);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    size_t k = 0;
    const char *path;
    json_t *t;
    int rc = JVDB_OK;
    json_object_foreach(d, path, t)
    {
        jvdb_payload_type type;
        /* A declaration this build cannot read (edited by hand) is skipped, not fatal. */
        if (!json_is_string(t) || payload_check_path(path) || jvdb_payload_type_parse(json_string_value(t), &type)) {
            log_error("payload index '%s' of '%s' is not understood; ignored", path, jvdb_db_name(pl->db));
            err_clear();
            continue;
        }
        /* An unchanged field keeps its columns; a new or re-typed one starts empty (the caller queues all). */
        size_t j = 0;
        while (j < pl->nfields &&
               (!pl->fields[j].path || strcmp(pl->fields[j].path, path) || pl->fields[j].type != type))
            j++;
        if (j < pl->nfields) {
            nf[k++] = pl->fields[j];
            pl->fields[j].path = NULL;
            pl->fields[j].segs = NULL;
            pl->fields[j].nsegs = 0;
            pl->fields[j].flags = NULL;
            pl->fields[j].more = NULL;
            pl->fields[j].kw = NULL;
            pl->fields[j].num = NULL;
        } else if (field_init(&nf[k++], path, type, pl->cap) != JVDB_OK) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            break;
        }
    }
    if (rc) {
        for (size_t i = 0; i < k; i++) field_free(&nf[i], pl->cap);
        free(nf);
        __atomic_store_n(&pl->broken, 1, __ATOMIC_RELAXED);
    } else {
        for (size_t i = 0; i < pl->nfields; i++) field_free(&pl->fields[i], pl->cap);
        free(pl->fields);
        pl->fields = nf;
        pl->nfields = k;
    }
    json_decref(d);
    return rc;
}

int payload_reload(struct payload_index *pl)
{
    pthread_rwlock_wrlock(&pl->lock);
    int rc = payload_reload_locked(pl);
    pthread_rwlock_unlock(&pl->lock);
    return rc;
}

struct payload_index *payload_new(jvdb_db *db)
{
    struct payload_index *pl = calloc(1, sizeof *pl);
    if (!pl) return NULL;
    pl->db = db;
    pthread_rwlock_init(&pl->lock, NULL);
    pthread_mutex_init(&pl->pend_mu, NULL);
    if (payload_reload(pl) != JVDB_OK) {
        payload_free(pl);
        return NULL;
    }
    return pl;
}

void payload_free(struct payload_index *pl)
{
    if (!pl) return;
    for (size_t i = 0; i < pl->nfields; i++) field_free(&pl->fields[i], pl->cap);
    free(pl->fields);
    free(pl->lsn);
    free(pl->live);
    for (size_t i = 0; i < pl->kw_cap; i++) free(pl->kw[i].s);
    free(pl->kw);
    free(pl->pending_bit);
    free(pl->pending);
    pthread_rwlock_destroy(&pl->lock);
    pthread_mutex_destroy(&pl->pend_mu);
    free(pl);
}

/* ---------------------------------------------------------------- the queue (writers) */

/* Queues slot; pend_mu held.  On out of memory the index is marked broken (plans stop). */
static void pending_push(struct payload_index *pl, uint32_t slot)
{
    if (slot >= pl->bits_cap) {
        uint32_t ncap = pl->bits_cap ? pl->bits_cap : 1024;
        while (ncap <= slot) ncap *= 2;
        uint8_t *nb = realloc(pl->pending_bit, ncap);
        if (!nb) goto oom;
        memset(nb + pl->bits_cap, 0, ncap - pl->bits_cap);
        pl->pending_bit = nb;
        pl->bits_cap = ncap;
    }
    if (pl->pending_bit[slot]) return;
    uint32_t *np = grow_array32(pl->pending, &pl->pcap, (size_t)pl->npending + 1, sizeof *np, 1024);
    if (!np) goto oom;
    pl->pending = np;
    pl->pending_bit[slot] = 1;
    pl->pending[pl->npending++] = slot;
    pl->queued_seq++;
    return;
oom:
    __atomic_store_n(&pl->broken, 1, __ATOMIC_RELAXED);
    log_error("payload indexes of '%s': out of memory queueing slot %u; filters are checked on metadata",
              jvdb_db_name(pl->db), slot);
}

void payload_slot_hook(struct payload_index *pl, uint32_t slot)
{
    /* `active` changes only in payload_queue_all, as the writer too: no pend_mu to read it here. */
    if (!pl->active) return;
    pthread_mutex_lock(&pl->pend_mu);
    pending_push(pl, slot);
    pthread_mutex_unlock(&pl->pend_mu);
}

void payload_queue_all(struct payload_index *pl)
{
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(pl->db), &n);
    pthread_mutex_lock(&pl->pend_mu);
    /* nfields is stable here: declarations change it under `lock` before calling this as the writer. */
    pl->active = pl->nfields > 0;
    if (pl->active)
        for (uint32_t s = 0; s < n; s++)
            if (__atomic_load_n(&sl->owner[s], __ATOMIC_ACQUIRE)) pending_push(pl, s);
    pl->need_seq = pl->queued_seq;
    pthread_mutex_unlock(&pl->pend_mu);
}

/* ---------------------------------------------------------------- the drain (searches) */

/* Interns a keyword string; its id, or UINT32_MAX on out of memory.  `lock` exclusive. */
static uint32_t kw_intern(struct payload_index *pl, const char *s)
{
    size_t len = strlen(s);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    if ((pl->kw_n + 1) * 10 > pl->kw_cap * 7) {
        size_t ncap = pl->kw_cap ? pl->kw_cap * 2 : 256;
        struct pl_kw *nt = calloc(ncap, sizeof *nt);
        if (!nt) return UINT32_MAX;
        for (size_t i = 0; i < pl->kw_cap; i++) {
            if (!pl->kw[i].s) continue;
            size_t p = pl->kw[i].hash & (ncap - 1);
            while (nt[p].s) p = (p + 1) & (ncap - 1);
            nt[p] = pl->kw[i];
        }
        free(pl->kw);
        pl->kw = nt;
        pl->kw_cap = ncap;
    }
    size_t p = h & (pl->kw_cap - 1);
    for (; pl->kw[p].s; p = (p + 1) & (pl->kw_cap - 1))
        if (pl->kw[p].hash == h && !strcmp(pl->kw[p].s, s)) return pl->kw[p].id;
    if (!(pl->kw[p].s = strdup(s))) return UINT32_MAX;
    pl->kw[p].hash = h;
    pl->kw[p].id = (uint32_t)pl->kw_n++;
    return pl->kw[p].id;
}

/* The id of an interned string, or UINT32_MAX when no slot ever held it.  `lock` held. */
static uint32_t kw_find(const struct payload_index *pl, const char *s)
{
    if (!pl->kw_cap) return UINT32_MAX;
    uint64_t h = 1469598103934665603ull;
    for (const char *c = s; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    for (size_t p = h & (pl->kw_cap - 1); pl->kw[p].s; p = (p + 1) & (pl->kw_cap - 1))
        if (pl->kw[p].hash == h && !strcmp(pl->kw[p].s, s)) return pl->kw[p].id;
    return UINT32_MAX;
}

/* Values of one cell being built. */
struct pl_build {
    struct pl_val *v;
    uint32_t n, cap;
    int exists, oom;
};

/* Adds the value a leaf (or a leaf list's element) stands for in field f, if any. */
static void build_leaf(struct payload_index *pl, const struct pl_field *f, struct pl_build *b, const json_t *v)
{
    struct pl_val x = { 0 };
    if (f->type == JVDB_PAYLOAD_KEYWORD) {
        if (!json_is_string(v)) return;
        if ((x.kw = kw_intern(pl, json_string_value(v))) == UINT32_MAX) {
            b->oom = 1;
            return;
        }
    } else {
        if (!filter_numeric(v, &x.num)) return;
        x.genuine = json_is_number(v);
    }
    struct pl_val *nv = grow_array32(b->v, &b->cap, (size_t)b->n + 1, sizeof *nv, 8);
    if (!nv) {
        b->oom = 1;
        return;
    }
    b->v = nv;
    b->v[b->n++] = x;
}

/* Collects the values at f's path from segment i on under v, as filter.c's filter_path_any visits
 * them: lists in the middle of a path are searched for objects, a leaf is a value and, when it is a
 * list, so is each of its elements that is not a list. */
static void build_path(struct payload_index *pl, const struct pl_field *f, struct pl_build *b, const json_t *v,
                       size_t i)
{
    if (i == f->nsegs) {
        b->exists = 1;
        build_leaf(pl, f, b, v);
        if (json_is_array(v)) {
            size_t k;
            json_t *x;
            json_array_foreach(v, k, x) if (!json_is_array(x)) build_leaf(pl, f, b, x);
        }
        return;
    }
    if (json_is_object(v)) {
        const json_t *next = json_object_get(v, f->segs[i]);
        if (next) build_path(pl, f, b, next, i + 1);
    } else if (json_is_array(v)) {
        size_t k;
        json_t *x;
        json_array_foreach(v, k, x) if (json_is_object(x)) build_path(pl, f, b, x, i);
    }
}

/* Grows the per-slot arrays to hold slot; `lock` exclusive. */
static int payload_grow(struct payload_index *pl, uint32_t slot)
{
    if (slot < pl->cap) return JVDB_OK;
    uint32_t ncap = pl->cap ? pl->cap : 4096;
    while (ncap <= slot) ncap *= 2;
    uint64_t *nl = realloc(pl->lsn, ncap * sizeof *nl);
    if (!nl) return JVDB_ENOMEM;
    pl->lsn = nl;
    memset(nl + pl->cap, 0, (ncap - pl->cap) * sizeof *nl);
    uint64_t *nv = realloc(pl->live, ncap / 64 * sizeof *nv);
    if (!nv) return JVDB_ENOMEM;
    pl->live = nv;
    memset(nv + pl->cap / 64, 0, (ncap - pl->cap) / 64 * sizeof *nv);
    for (size_t i = 0; i < pl->nfields; i++)
        if (field_grow(&pl->fields[i], pl->cap, ncap)) return JVDB_ENOMEM;
    pl->cap = ncap;
    return JVDB_OK;
}

/* Re-reads one slot's newest version into the columns; `lock` exclusive, in a read section. */
static int payload_refresh(struct payload_index *pl, uint32_t slot, struct pl_build *b)
{
    if (payload_grow(pl, slot)) return JVDB_ENOMEM;
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(pl->db), &n);
    const struct kd_entry *e = slot < n ? __atomic_load_n(&sl->owner[slot], __ATOMIC_ACQUIRE) : NULL;
    json_t *doc = NULL;
    int live = e && e->kind == REC_KIND_PUT;
    if (live) {
        const struct rec_header *h = keydir_record(e);
        /* The same parse as filter_match: what it cannot read as an object has no fields. */
        if (h->meta_len) doc = json_loadb(rec_meta(h, jvdb_db_dim(pl->db)), h->meta_len, 0, NULL);
        if (!json_is_object(doc)) {
            json_decref(doc);
            doc = NULL;
        }
    }
    int rc = JVDB_OK;
    for (size_t i = 0; i < pl->nfields; i++) {
        struct pl_field *f = &pl->fields[i];
        cell_clear(f, slot);
        if (!doc) continue;
        b->n = 0;
        b->exists = 0;
        b->oom = 0;
        build_path(pl, f, b, doc, 0);
        if (b->oom) {
            rc = JVDB_ENOMEM;
            break;
        }
        uint8_t fl = b->exists ? PLF_EXISTS : 0;
        if (b->n) {
            fl |= PLF_FIRST | (b->v[0].genuine ? PLF_GENUINE : 0);
            if (f->type == JVDB_PAYLOAD_KEYWORD) f->kw[slot] = b->v[0].kw;
            else f->num[slot] = b->v[0].num;
        }
        if (b->n > 1) {
            struct pl_more *m = malloc(sizeof *m + (b->n - 1) * sizeof m->v[0]);
            if (!m) {
                f->flags[slot] = fl;
                rc = JVDB_ENOMEM;
                break;
            }
            m->n = b->n - 1;
            memcpy(m->v, b->v + 1, m->n * sizeof m->v[0]);
            f->more[slot] = m;
            fl |= PLF_MORE;
        }
        f->flags[slot] = fl;
    }
    json_decref(doc);
    pl->lsn[slot] = e ? e->lsn : 0;
    if (pl->lsn[slot] > pl->max_lsn) pl->max_lsn = pl->lsn[slot];
    if (live) pl->live[slot / 64] |= 1ull << (slot % 64);
    else pl->live[slot / 64] &= ~(1ull << (slot % 64));
    return rc;
}

/* Takes in every queued slot (invariant 2); `lock` exclusive, in a read section. */
static void payload_drain(struct payload_index *pl)
{
    pthread_mutex_lock(&pl->pend_mu);
    uint32_t *q = pl->pending, nq = pl->npending;
    /* Bits go as the slots leave the queue: a write after this queues the slot again. */
    for (uint32_t i = 0; i < nq; i++) pl->pending_bit[q[i]] = 0;
    pl->pending = NULL;
    pl->npending = pl->pcap = 0;
    pl->drained_seq = pl->queued_seq;
    pthread_mutex_unlock(&pl->pend_mu);
    struct pl_build b = { 0 };
    for (uint32_t i = 0; i < nq && !__atomic_load_n(&pl->broken, __ATOMIC_RELAXED); i++) {
        if (payload_refresh(pl, q[i], &b) != JVDB_OK) {
            __atomic_store_n(&pl->broken, 1, __ATOMIC_RELAXED);
            log_error("payload indexes of '%s': out of memory; filters are checked on metadata", jvdb_db_name(pl->db));
        }
    }
    free(b.v);
    free(q);
}

/* ---------------------------------------------------------------- plans */

/* Whether the index of field f can answer condition c exactly (operator and operand types). */
static int cond_supported(const struct pl_field *f, const struct filter_node *c)
{
    int kw = f->type == JVDB_PAYLOAD_KEYWORD;
    switch (c->op) {
    case OP_EXISTS: return 1;
    case OP_EQ:
    case OP_NE: return kw ? json_is_string(c->value) : json_is_number(c->value);
    case OP_IN:
    case OP_NIN: {
        size_t i;
        json_t *x;
        json_array_foreach(c->value, i, x) if (kw ? !json_is_string(x) : !json_is_number(x)) return 0;
        return 1;
    }
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE: return !kw;
    default: return 0;
    }
}

/* Whether one stored value satisfies c's positive form (see filter_value_holds). */
static int val_holds(const struct pl_field *f, const struct filter_node *c, const struct pl_val *v, const uint32_t *ids,
                     size_t nids)
{
    if (f->type == JVDB_PAYLOAD_KEYWORD) {
        for (size_t i = 0; i < nids; i++)
            if (ids[i] == v->kw) return 1;
        return 0;
    }
    switch (c->op) {
    case OP_EQ:
    case OP_NE: return v->genuine && v->num == json_number_value(c->value);
    case OP_IN:
    case OP_NIN: {
        if (!v->genuine) return 0;
        size_t i;
        json_t *x;
        json_array_foreach(c->value, i, x) if (v->num == json_number_value(x)) return 1;
        return 0;
    }
    case OP_GT: return v->num > json_number_value(c->value);
    case OP_GTE: return v->num >= json_number_value(c->value);
    case OP_LT: return v->num < json_number_value(c->value);
    default: return v->num <= json_number_value(c->value);
    }
}

/* Whether a op b for the range operator op. */
static inline int range_holds(enum filter_op op, double a, double b)
{
    return op == OP_GT ? a > b : op == OP_GTE ? a >= b : op == OP_LT ? a < b : a <= b;
}

/* The positive form of a range condition on a numeric field into out (zeroed): the hot loop of
 * numeric filters, kept free of calls. */
static void eval_range(const struct pl_field *f, const struct filter_node *c, uint32_t lim, uint64_t *out)
{
    double b = json_number_value(c->value);
    enum filter_op op = c->op;
    for (uint32_t s = 0; s < lim; s++) {
        uint8_t fl = f->flags[s];
        if (!(fl & PLF_FIRST)) continue;
        int any = range_holds(op, f->num[s], b);
        if (!any && (fl & PLF_MORE))
            for (uint32_t k = 0; !any && k < f->more[s]->n; k++) any = range_holds(op, f->more[s]->v[k].num, b);
        if (any) out[s / 64] |= 1ull << (s % 64);
    }
}

/* Whether id is one of ids[0..n). */
static inline int kw_in(uint32_t id, const uint32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

/* The positive form of equality / $in on a keyword field into out (zeroed): some value's interned
 * id is among ids (none when no slot ever held the operand). */
static void eval_keyword(const struct pl_field *f, const uint32_t *ids, size_t nids, uint32_t lim, uint64_t *out)
{
    if (!nids) return;
    for (uint32_t s = 0; s < lim; s++) {
        uint8_t fl = f->flags[s];
        if (!(fl & PLF_FIRST)) continue;
        int any = kw_in(f->kw[s], ids, nids);
        if (!any && (fl & PLF_MORE))
            for (uint32_t k = 0; !any && k < f->more[s]->n; k++) any = kw_in(f->more[s]->v[k].kw, ids, nids);
        if (any) out[s / 64] |= 1ull << (s % 64);
    }
}

/* Evaluates a condition on an indexed field into out (nw words over the index's view). */
static int eval_cond(const struct payload_index *pl, const struct pl_field *f, const struct filter_node *c,
                     uint32_t nslots, uint64_t *out)
{
    size_t nw = (nslots + 63) / 64;
    memset(out, 0, nw * sizeof *out);
    uint32_t ids[64];
    size_t nids = 0;
    if (f->type == JVDB_PAYLOAD_KEYWORD && c->op != OP_EXISTS) {
        if (c->op == OP_IN || c->op == OP_NIN) {
            size_t i;
            json_t *x;
            if (json_array_size(c->value) > 64) return 0; /* long lists: leave it to the metadata */
            json_array_foreach(c->value, i, x)
            {
                uint32_t id = kw_find(pl, json_string_value(x));
                if (id != UINT32_MAX) ids[nids++] = id;
            }
        } else {
            uint32_t id = kw_find(pl, json_string_value(c->value));
            if (id != UINT32_MAX) ids[nids++] = id;
        }
    }
    uint32_t lim = nslots < pl->cap ? nslots : pl->cap;
    if (f->type == JVDB_PAYLOAD_NUMERIC && c->op >= OP_GT && c->op <= OP_LTE) {
        eval_range(f, c, lim, out);
        lim = 0;
    } else if (f->type == JVDB_PAYLOAD_KEYWORD && c->op != OP_EXISTS) {
        eval_keyword(f, ids, nids, lim, out);
        lim = 0;
    }
    for (uint32_t s = 0; s < lim; s++) {
        uint8_t fl = f->flags[s];
        if (!(fl & PLF_EXISTS)) continue;
        int any = c->op == OP_EXISTS;
        if (!any && (fl & PLF_FIRST)) {
            struct pl_val first = { f->type == JVDB_PAYLOAD_NUMERIC ? f->num[s] : 0,
                                    f->type == JVDB_PAYLOAD_KEYWORD ? f->kw[s] : 0,
                                    (uint8_t)((fl & PLF_GENUINE) != 0) };
            any = val_holds(f, c, &first, ids, nids);
        }
        if (!any && (fl & PLF_MORE))
            for (uint32_t k = 0; !any && k < f->more[s]->n; k++) any = val_holds(f, c, &f->more[s]->v[k], ids, nids);
        if (any) out[s / 64] |= 1ull << (s % 64);
    }
    int negated = c->op == OP_NE || c->op == OP_NIN || (c->op == OP_EXISTS && json_is_false(c->value));
    if (negated)
        for (size_t w = 0; w < nw; w++) out[w] = ~out[w] & (w < pl->cap / 64 ? pl->live[w] : 0);
    return 1;
}

/* Evaluates node into out (nw words): returns 0 when the index cannot bound it, else 1 with *exact
 * saying whether out is the node's answer (1) or a superset of it (0), over the index's view. */
static int eval_node(const struct payload_index *pl, const struct filter_node *n, uint32_t nslots, uint64_t *out,
                     int *exact)
{
    size_t nw = (nslots + 63) / 64;
    *exact = 1;
    if (n->kind == NODE_COND) {
        for (size_t i = 0; i < pl->nfields; i++)
            if (!strcmp(pl->fields[i].path, n->path) && cond_supported(&pl->fields[i], n))
                return eval_cond(pl, &pl->fields[i], n, nslots, out);
        return 0;
    }
    uint64_t *tmp = malloc(nw ? nw * sizeof *tmp : 1);
    if (!tmp) return 0;
    int known = 0, kx;
    if (n->kind == NODE_NOT) {
        known = eval_node(pl, n->kids[0], nslots, tmp, &kx) && kx;
        if (known)
            for (size_t w = 0; w < nw; w++) out[w] = ~tmp[w] & (w < pl->cap / 64 ? pl->live[w] : 0);
    } else if (n->kind == NODE_AND) {
        for (size_t i = 0; i < n->n; i++) {
            if (!eval_node(pl, n->kids[i], nslots, tmp, &kx)) {
                *exact = 0;
                continue;
            }
            if (!known) memcpy(out, tmp, nw * sizeof *out);
            else
                for (size_t w = 0; w < nw; w++) out[w] &= tmp[w];
            known = 1;
            *exact &= kx;
        }
    } else {
        known = 1;
        memset(out, 0, nw * sizeof *out);
        for (size_t i = 0; known && i < n->n; i++) {
            known = eval_node(pl, n->kids[i], nslots, tmp, &kx);
            for (size_t w = 0; known && w < nw; w++) out[w] |= tmp[w];
            *exact &= kx;
        }
    }
    free(tmp);
    return known;
}

int payload_plan_make(struct payload_index *pl, const jvdb_filter *f, uint64_t snap, uint32_t nslots,
                      struct payload_plan *out)
{
    memset(out, 0, sizeof *out);
    if (!f || !f->root || f->root->n == 0 || !nslots) return JVDB_OK;
    pthread_mutex_lock(&pl->pend_mu);
    /* Every write visible at snap was queued by now (invariant 2): the plan waits for a drain past it. */
    uint64_t target = pl->queued_seq;
    int active = pl->active;
    pthread_mutex_unlock(&pl->pend_mu);
    if (!active) return JVDB_OK;
    size_t nw = (nslots + 63) / 64;
    out->cand = malloc(nw * sizeof *out->cand);
    out->verify = malloc(nw * sizeof *out->verify);
    if (!out->cand || !out->verify) {
        payload_plan_free(out);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (;;) {
        pthread_rwlock_rdlock(&pl->lock);
        pthread_mutex_lock(&pl->pend_mu);
        /* need_seq is read under `lock`: a declaration changes the fields and queues every slot
         * under it exclusively, so fields we see are never newer than the queue we wait for. */
        int ready = pl->drained_seq >= target && pl->drained_seq >= pl->need_seq;
        pthread_mutex_unlock(&pl->pend_mu);
        if (ready) break;
        pthread_rwlock_unlock(&pl->lock);
        pthread_rwlock_wrlock(&pl->lock);
        payload_drain(pl);
        pthread_rwlock_unlock(&pl->lock);
    }
    int exact = 0;
    int used = !__atomic_load_n(&pl->broken, __ATOMIC_RELAXED) && eval_node(pl, f->root, nslots, out->cand, &exact);
    if (used) {
        /* Invariant (2): slots written after the snapshot are described at a later version. */
        uint32_t lim = nslots < pl->cap ? nslots : pl->cap;
        if (pl->max_lsn <= snap) lim = 0; /* nothing written since: every slot is described at snap */
        for (size_t w = 0; w < nw; w++) {
            uint64_t unsure = 0;
            for (uint32_t s = (uint32_t)w * 64; s < lim && s < (uint32_t)w * 64 + 64; s++)
                if (pl->lsn[s] > snap) unsure |= 1ull << (s % 64);
            out->cand[w] |= unsure;
            out->verify[w] = exact ? unsure : out->cand[w];
            out->ncand += (uint32_t)__builtin_popcountll(out->cand[w]);
            if (w < pl->cap / 64) out->nlive += (uint32_t)__builtin_popcountll(pl->live[w]);
        }
        /* The tail of the last word past nslots is never looked at (payload_plan_test checks nslots). */
    }
    pthread_rwlock_unlock(&pl->lock);
    if (!used) {
        payload_plan_free(out);
        return JVDB_OK;
    }
    out->used = 1;
    out->nslots = nslots;
    return JVDB_OK;
}

void payload_plan_free(struct payload_plan *p)
{
    free(p->cand);
    free(p->verify);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- declarations (jvdb.h) */

static pthread_mutex_t payload_decl_mu = PTHREAD_MUTEX_INITIALIZER;

/* Queues every slot as the writer (db_as_writer callback). */
static int payload_queue_all_cb(void *arg)
{
    payload_queue_all(arg);
    return JVDB_OK;
}

/* Writes the declarations `d` (stolen) and brings an attached index in line; payload_decl_mu held. */
static int payload_store(jvdb_db *db, json_t *d)
{
    int rc = db_set_manifest_extra(db, PAYLOAD_EXTRA, json_object_size(d) ? d : NULL);
    if (!json_object_size(d)) json_decref(d);
    if (rc) return rc;
    struct payload_index *pl = search_payload_attached(db);
    if (!pl) return JVDB_OK;
    /* New fields start empty: every slot is queued before any plan can see them (need_seq). */
    pthread_rwlock_wrlock(&pl->lock);
    rc = payload_reload_locked(pl);
    if (rc == JVDB_OK) rc = db_as_writer(db, payload_queue_all_cb, pl);
    pthread_rwlock_unlock(&pl->lock);
    return rc;
}

int jvdb_db_payload_index_create(jvdb_db *db, const char *field, jvdb_payload_type type)
{
    err_clear();
    if (!db) return err_set(JVDB_EINVAL, "database is NULL");
    int rc = payload_check_path(field);
    if (rc) return rc;
    if (type != JVDB_PAYLOAD_KEYWORD && type != JVDB_PAYLOAD_NUMERIC)
        return err_set(JVDB_EINVAL, "payload index type %d is unknown (use keyword or numeric)", (int)type);
    if ((rc = db_check_writable(db))) return rc;
    pthread_mutex_lock(&payload_decl_mu);
    json_t *d = payload_decls(db);
    if (!d) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else {
        json_t *have = json_object_get(d, field);
        if (have && json_is_string(have) && !strcmp(json_string_value(have), jvdb_payload_type_name(type))) {
            json_decref(d); /* already so */
        } else if (!have && json_object_size(d) >= JVDB_PAYLOAD_MAX_INDEXES) {
            json_decref(d);
            rc = err_set(JVDB_EINVAL, "database '%s' has %d payload indexes already (the most it may have)",
                         jvdb_db_name(db), JVDB_PAYLOAD_MAX_INDEXES);
        } else if (json_object_set_new(d, field, json_string(jvdb_payload_type_name(type)))) {
            json_decref(d);
            rc = err_set(JVDB_ENOMEM, "out of memory");
        } else {
            rc = payload_store(db, d);
        }
    }
    pthread_mutex_unlock(&payload_decl_mu);
    return rc;
}

int jvdb_db_payload_index_drop(jvdb_db *db, const char *field)
{
    err_clear();
    if (!db || !field) return err_set(JVDB_EINVAL, "database or field is NULL");
    int rc = db_check_writable(db);
    if (rc) return rc;
    pthread_mutex_lock(&payload_decl_mu);
    json_t *d = payload_decls(db);
    if (!d) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else if (!json_object_get(d, field)) {
        json_decref(d);
        rc = err_set(JVDB_ENOTFOUND, "database '%s' has no payload index on '%s'", jvdb_db_name(db), field);
    } else {
        json_object_del(d, field);
        rc = payload_store(db, d);
    }
    pthread_mutex_unlock(&payload_decl_mu);
    return rc;
}

/* Orders indexes by field name. */
static int payload_cmp(const void *a, const void *b)
{
    return strcmp(((const jvdb_payload_index *)a)->field, ((const jvdb_payload_index *)b)->field);
}

int jvdb_db_payload_index_list(jvdb_db *db, jvdb_payload_index **out, size_t *n)
{
    err_clear();
    if (!db || !out || !n) return err_set(JVDB_EINVAL, "database or output is NULL");
    *out = NULL;
    *n = 0;
    json_t *d = payload_decls(db);
    if (!d) return err_set(JVDB_ENOMEM, "out of memory");
    jvdb_payload_index *v = calloc(json_object_size(d) ? json_object_size(d) : 1, sizeof *v);
    if (!v) {
        json_decref(d);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    size_t k = 0;
    const char *path;
    json_t *t;
    json_object_foreach(d, path, t)
    {
        jvdb_payload_type type;
        if (!json_is_string(t) || payload_check_path(path) || jvdb_payload_type_parse(json_string_value(t), &type)) {
            err_clear();
            continue;
        }
        snprintf(v[k].field, sizeof v[k].field, "%s", path);
        v[k++].type = type;
    }
    json_decref(d);
    qsort(v, k, sizeof *v, payload_cmp);
    *out = v;
    *n = k;
    return JVDB_OK;
}

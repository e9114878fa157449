/*
 * search.c — a database's search index and jvdb_search (DESIGN.md 7): ties the store's slot table to
 * the HNSW graph (hnsw*.c) and the exact scan (flat.c).
 *
 * Writes never wait for the graph.  The keydir calls our slot hook (under the database's write_mu)
 * whenever a slot gains, changes or loses its vector; the hook only marks the slot "pending" and
 * queues it.  A background thread per database takes pending slots a few at a time and reconciles
 * the graph with the slot table (insert, re-link, or mark deleted).  A search answers from the graph
 * for settled slots and scans the pending ones exactly, then merges: results are always complete,
 * and ingest runs at storage speed while the graph catches up behind it.
 *
 * Locks, in order: the index rwlock (graph changes exclusive, searches shared), then the database's
 * write_mu (only to attach the hook and to queue every slot for a fresh graph), then the pending
 * mutex (a leaf).  The store itself is read without locks, in a read section at one snapshot LSN
 * (store/readpath.h): a search copies the pending set under the pending mutex when it starts, and
 * every slot it returns is resolved to the version its snapshot sees.
 *
 * The graph reads its own copies of the vectors (nav), not the store's slot table: a deleted vector
 * vanishes from the slot table at once, but its node must stay navigable until the next rebuild, or
 * the graph falls apart around deletions.  The copies are contiguous per block of slots, which also
 * helps the graph's cache behaviour; they cost one more float per dimension and vector.  For cosine
 * the copies are normalised (the store keeps vectors as given), so the graph compares by inner product
 * as before; exact scans (flat.c) read the stored vectors and divide by their norms.
 *
 * The graph is rebuilt when its deleted share passes REBUILD_SHARE: a fresh empty graph replaces it
 * and every live slot becomes pending, so neither searches nor writers ever wait for a rebuild.
 * After a reopen the graph is rebuilt the same way, in the background, from the live slots.
 */
#include "search/distance.h"
#include "search/filter.h"
#include "search/flat.h"
#include "search/hnsw.h"

#include "core/err.h"
#include "core/log.h"
#include "store/db.h"
#include "store/record.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INDEX_CHUNK 16
#define REBUILD_SHARE 0.30
#define REBUILD_MIN_NODES 1000
#define MAX_K 100000
#define SELECTIVE_SAMPLE 256
#define NAV_BLOCK 4096

struct search_index {
    jvdb_db *db;
    pthread_rwlock_t lock;
    hnsw *graph;                  /* NULL for FLAT */
    const float **nav;            /* slot -> the graph's copy of its vector (NULL: not a node) */
    uint32_t nav_cap;
    float **nav_blocks;           /* NAV_BLOCK vectors each */
    uint32_t nav_nblocks;
    jvdb_index_options opts;
    pthread_mutex_t pend_mu;
    pthread_cond_t pend_cv;       /* work for the thread, or pending drained (waiters) */
    uint8_t *pending_bit;         /* per slot */
    uint32_t bits_cap;
    uint32_t *pending;            /* queue of slots whose bit is set */
    uint32_t npending, cap;
    pthread_t thread;
    int thread_started;
    int stop;
};

static pthread_mutex_t search_attach_mu = PTHREAD_MUTEX_INITIALIZER;

void jvdb_index_options_init(jvdb_index_options *o)
{
    o->type = JVDB_INDEX_HNSW;
    o->m = HNSW_DEFAULT_M;
    o->ef_construction = HNSW_DEFAULT_EF_CONSTRUCTION;
    o->ef_search = HNSW_DEFAULT_EF_SEARCH;
}

void jvdb_search_params_init(jvdb_search_params *p)
{
    memset(p, 0, sizeof *p);
    p->k = 10;
}

static int index_check_options(const jvdb_index_options *o)
{
    if (o->type != JVDB_INDEX_HNSW && o->type != JVDB_INDEX_FLAT) return err_set(JVDB_EINVAL, "unknown index type %d", (int)o->type);
    if (o->type == JVDB_INDEX_HNSW) {
        if (o->m < 2 || o->m > HNSW_MAX_M) return err_set(JVDB_EINVAL, "HNSW M %u is out of range (2..%d)", o->m, HNSW_MAX_M);
        if (o->ef_construction < 1 || o->ef_construction > 100000)
            return err_set(JVDB_EINVAL, "HNSW ef_construction %u is out of range (1..100000)", o->ef_construction);
        if (o->ef_search < 1 || o->ef_search > HNSW_MAX_EF)
            return err_set(JVDB_EINVAL, "HNSW ef_search %u is out of range (1..%d)", o->ef_search, HNSW_MAX_EF);
    }
    return JVDB_OK;
}

/* The settings kept in the MANIFEST under "index". */
static void index_options_from_manifest(jvdb_db *db, jvdb_index_options *o)
{
    jvdb_index_options_init(o);
    json_t *x = db_manifest_extra(db, "index");
    if (!json_is_object(x)) {
        json_decref(x);
        return;
    }
    json_t *v;
    if ((v = json_object_get(x, "type")) && json_is_string(v)) o->type = strcmp(json_string_value(v), "flat") ? JVDB_INDEX_HNSW : JVDB_INDEX_FLAT;
    if ((v = json_object_get(x, "m")) && json_is_integer(v)) o->m = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(x, "ef_construction")) && json_is_integer(v)) o->ef_construction = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(x, "ef_search")) && json_is_integer(v)) o->ef_search = (uint32_t)json_integer_value(v);
    json_decref(x);
    if (index_check_options(o) != JVDB_OK) jvdb_index_options_init(o);
}

void jvdb_db_get_index(jvdb_db *db, jvdb_index_options *out)
{
    index_options_from_manifest(db, out);
}

/* ---------------------------------------------------------------- pending slots */

/* Keydir hook: write_mu held.  Only queues; the index thread does the work. */
static void index_slot_hook(void *ctx, uint32_t slot, int added)
{
    (void)added;
    struct search_index *ix = ctx;
    pthread_mutex_lock(&ix->pend_mu);
    if (slot >= ix->bits_cap) {
        uint32_t ncap = ix->bits_cap ? ix->bits_cap : 1024;
        while (ncap <= slot) ncap *= 2;
        uint8_t *nb = realloc(ix->pending_bit, ncap);
        if (!nb) goto oom;
        memset(nb + ix->bits_cap, 0, ncap - ix->bits_cap);
        ix->pending_bit = nb;
        ix->bits_cap = ncap;
    }
    if (!ix->pending_bit[slot]) {
        if (ix->npending == ix->cap) {
            uint32_t ncap = ix->cap ? ix->cap * 2 : 1024;
            uint32_t *np = realloc(ix->pending, ncap * sizeof *np);
            if (!np) goto oom;
            ix->pending = np;
            ix->cap = ncap;
        }
        ix->pending_bit[slot] = 1;
        ix->pending[ix->npending++] = slot;
        pthread_cond_broadcast(&ix->pend_cv);
    }
    pthread_mutex_unlock(&ix->pend_mu);
    return;
oom:
    /* Without memory to queue the slot the graph would silently miss it: fall back to exact search
     * for this database until the next rebuild. */
    log_error("search index of '%s': out of memory queueing slot %u; searches use exact scan", jvdb_db_name(ix->db), slot);
    ix->opts.type = JVDB_INDEX_FLAT;
    pthread_mutex_unlock(&ix->pend_mu);
}

/* Queues every live slot (a fresh graph); write_mu held, so no slot changes meanwhile. */
static void index_queue_all(struct search_index *ix)
{
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    for (uint32_t s = 0; s < n; s++)
        if (__atomic_load_n(&sl->vec[s], __ATOMIC_ACQUIRE)) index_slot_hook(ix, s, 1);
}

/* Gives `slot` a place for the graph's copy of its vector. */
static float *index_nav_slot(struct search_index *ix, uint32_t slot)
{
    uint32_t dim = jvdb_db_dim(ix->db);
    if (slot >= ix->nav_cap) {
        uint32_t ncap = ix->nav_cap ? ix->nav_cap : NAV_BLOCK;
        while (ncap <= slot) ncap *= 2;
        const float **n = realloc(ix->nav, ncap * sizeof *n);
        if (!n) return NULL;
        memset(n + ix->nav_cap, 0, (ncap - ix->nav_cap) * sizeof *n);
        ix->nav = n;
        ix->nav_cap = ncap;
    }
    uint32_t b = slot / NAV_BLOCK;
    if (b >= ix->nav_nblocks) {
        float **nb = realloc(ix->nav_blocks, (b + 1) * sizeof *nb);
        if (!nb) return NULL;
        memset(nb + ix->nav_nblocks, 0, (b + 1 - ix->nav_nblocks) * sizeof *nb);
        ix->nav_blocks = nb;
        ix->nav_nblocks = b + 1;
    }
    if (!ix->nav_blocks[b] && !(ix->nav_blocks[b] = aligned_alloc(64, (size_t)NAV_BLOCK * dim * sizeof(float) + 64)))
        return NULL;
    return ix->nav_blocks[b] + (size_t)(slot % NAV_BLOCK) * dim;
}

/* In a read section: the newest vector of the slot (the graph follows the writers, published or
 * not; searches resolve every answer at their own snapshot). */
static void index_reconcile(struct search_index *ix, uint32_t slot)
{
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    const float *v = slot < n ? __atomic_load_n(&sl->vec[slot], __ATOMIC_ACQUIRE) : NULL;
    if (!v) {
        /* The node keeps its copy, so searches can still walk through it. */
        if (hnsw_contains(ix->graph, slot) && !hnsw_is_deleted(ix->graph, slot)) hnsw_mark_deleted(ix->graph, slot);
        return;
    }
    float *copy = index_nav_slot(ix, slot);
    if (!copy) {
        log_error("search index of '%s': out of memory for slot %u; it is searched exactly until a rebuild", jvdb_db_name(ix->db), slot);
        return;
    }
    memcpy(copy, v, (size_t)jvdb_db_dim(ix->db) * sizeof(float));
    /* Put refuses the zero vector for cosine, so this fails only on a record no put wrote. */
    if (jvdb_db_metric(ix->db) == JVDB_METRIC_COSINE && dist_normalize(copy, jvdb_db_dim(ix->db)) != JVDB_OK) {
        log_error("search index of '%s': slot %u: %s; it is left out of the graph", jvdb_db_name(ix->db), slot, jvdb_errmsg());
        if (hnsw_contains(ix->graph, slot) && !hnsw_is_deleted(ix->graph, slot)) hnsw_mark_deleted(ix->graph, slot);
        return;
    }
    ix->nav[slot] = copy;
    if (hnsw_insert(ix->graph, ix->nav, ix->nav_cap, slot) != JVDB_OK)
        log_error("search index of '%s': cannot insert slot %u: %s", jvdb_db_name(ix->db), slot, jvdb_errmsg());
}

/* Replaces the graph by an empty one and queues every live slot: the non-blocking rebuild. */
static int index_reset_graph(struct search_index *ix)
{
    hnsw *fresh = NULL;
    if (ix->opts.type == JVDB_INDEX_HNSW) {
        hnsw_params p;
        hnsw_params_init(&p);
        p.M = ix->opts.m;
        p.ef_construction = ix->opts.ef_construction;
        p.ef_search = ix->opts.ef_search;
        int rc = hnsw_create(jvdb_db_dim(ix->db), jvdb_db_metric(ix->db), &p, &fresh);
        if (rc) return rc;
    }
    hnsw_free(ix->graph);
    ix->graph = fresh;
    if (ix->nav) memset(ix->nav, 0, ix->nav_cap * sizeof *ix->nav);
    pthread_mutex_lock(&ix->pend_mu);
    for (uint32_t i = 0; i < ix->npending; i++) ix->pending_bit[ix->pending[i]] = 0;
    ix->npending = 0;
    pthread_mutex_unlock(&ix->pend_mu);
    if (fresh) index_queue_all(ix);
    return JVDB_OK;
}

static int index_reset_graph_cb(void *ix) { return index_reset_graph(ix); }

/* As the writer: a fresh graph with every slot queued, and the hook set, with no write between. */
static int index_attach_cb(void *arg)
{
    struct search_index *ix = arg;
    int rc = index_reset_graph(ix);
    if (rc == JVDB_OK) db_set_slot_hook(ix->db, index_slot_hook, ix, 1);
    return rc;
}

static void *index_thread_main(void *arg)
{
    struct search_index *ix = arg;
    jvdb_db *db = ix->db;
    uint32_t chunk[INDEX_CHUNK];
    pthread_mutex_lock(&ix->pend_mu);
    for (;;) {
        while (!ix->stop && ix->npending == 0) pthread_cond_wait(&ix->pend_cv, &ix->pend_mu);
        if (ix->stop) break;
        pthread_mutex_unlock(&ix->pend_mu);

        pthread_rwlock_wrlock(&ix->lock);
        rp_enter();
        pthread_mutex_lock(&ix->pend_mu);
        uint32_t n = 0;
        /* The bit goes as the slot leaves the queue (pending mutex held): a write after this
         * queues the slot again, so the graph never keeps a vector older than the slot's. */
        while (n < INDEX_CHUNK && ix->npending > 0) {
            chunk[n] = ix->pending[--ix->npending];
            ix->pending_bit[chunk[n++]] = 0;
        }
        pthread_mutex_unlock(&ix->pend_mu);
        if (ix->graph)
            for (uint32_t i = 0; i < n; i++) index_reconcile(ix, chunk[i]);
        int rebuild = ix->graph && hnsw_node_count(ix->graph) >= REBUILD_MIN_NODES &&
                      hnsw_deleted_share(ix->graph) > REBUILD_SHARE;
        rp_exit();
        if (rebuild) {
            /* Queuing every slot runs as the writer, as the hook does. */
            log_info("search index of '%s': %.0f%% of the graph is deleted; rebuilding in the background",
                     jvdb_db_name(db), 100 * hnsw_deleted_share(ix->graph));
            if (db_as_writer(db, index_reset_graph_cb, ix) != JVDB_OK)
                log_error("search index of '%s': rebuild failed: %s", jvdb_db_name(db), jvdb_errmsg());
        }
        pthread_rwlock_unlock(&ix->lock);
        pthread_mutex_lock(&ix->pend_mu);
        if (ix->npending == 0) pthread_cond_broadcast(&ix->pend_cv);
    }
    pthread_mutex_unlock(&ix->pend_mu);
    return NULL;
}

static void index_free(void *arg)
{
    struct search_index *ix = arg;
    if (ix->thread_started) {
        pthread_mutex_lock(&ix->pend_mu);
        ix->stop = 1;
        pthread_cond_broadcast(&ix->pend_cv);
        pthread_mutex_unlock(&ix->pend_mu);
        pthread_join(ix->thread, NULL);
    }
    db_set_slot_hook(ix->db, NULL, ix, 0);
    hnsw_free(ix->graph);
    for (uint32_t b = 0; b < ix->nav_nblocks; b++) free(ix->nav_blocks[b]);
    free(ix->nav_blocks);
    free(ix->nav);
    free(ix->pending_bit);
    free(ix->pending);
    pthread_rwlock_destroy(&ix->lock);
    pthread_mutex_destroy(&ix->pend_mu);
    pthread_cond_destroy(&ix->pend_cv);
    free(ix);
}

/* The database's index, created on first use: hooked into the keydir and filled in the background. */
static int index_get(jvdb_db *db, struct search_index **out)
{
    /* Every query comes through here: once attached, no lock. */
    struct search_index *have = db_ext(db);
    if (have) {
        *out = have;
        return JVDB_OK;
    }
    pthread_mutex_lock(&search_attach_mu);
    if (db_ext(db)) {
        *out = db_ext(db);
        pthread_mutex_unlock(&search_attach_mu);
        return JVDB_OK;
    }
    struct search_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        pthread_mutex_unlock(&search_attach_mu);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    ix->db = db;
    pthread_rwlock_init(&ix->lock, NULL);
    pthread_mutex_init(&ix->pend_mu, NULL);
    pthread_cond_init(&ix->pend_cv, NULL);
    jvdb_db_get_index(db, &ix->opts);
    int rc = db_as_writer(db, index_attach_cb, ix);
    if (rc == JVDB_OK && pthread_create(&ix->thread, NULL, index_thread_main, ix) != 0)
        rc = err_set(JVDB_ENOMEM, "cannot start the index thread of '%s'", jvdb_db_name(db));
    if (rc) {
        index_free(ix);
        pthread_mutex_unlock(&search_attach_mu);
        return rc;
    }
    ix->thread_started = 1;
    db_set_ext(db, ix, index_free);
    pthread_mutex_unlock(&search_attach_mu);
    *out = ix;
    return JVDB_OK;
}

/* The database's index if one is attached already, else NULL; never starts one. */
static struct search_index *index_attached(jvdb_db *db)
{
    pthread_mutex_lock(&search_attach_mu);
    struct search_index *ix = db_ext(db);
    pthread_mutex_unlock(&search_attach_mu);
    return ix;
}

int jvdb_db_set_index(jvdb_db *db, const jvdb_index_options *o)
{
    err_clear();
    int rc = index_check_options(o);
    if (rc) return rc;
    json_t *x = json_pack("{s:s, s:i, s:i, s:i}", "type", o->type == JVDB_INDEX_FLAT ? "flat" : "hnsw", "m", (int)o->m,
                          "ef_construction", (int)o->ef_construction, "ef_search", (int)o->ef_search);
    if (!x) return err_set(JVDB_ENOMEM, "out of memory");
    if ((rc = db_set_manifest_extra(db, "index", x))) return rc;
    struct search_index *ix;
    if ((rc = index_get(db, &ix))) return rc;
    pthread_rwlock_wrlock(&ix->lock);
    int graph_changes = ix->opts.type != o->type || ix->opts.m != o->m || ix->opts.ef_construction != o->ef_construction;
    ix->opts = *o;
    if (graph_changes) {
        rc = db_as_writer(db, index_reset_graph_cb, ix);
    } else if (ix->graph) {
        rc = hnsw_set_ef_search(ix->graph, o->ef_search);
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int jvdb_db_index_status(jvdb_db *db, jvdb_index_status *out)
{
    err_clear();
    struct search_index *ix;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ix->lock);
    out->type = ix->opts.type;
    if (ix->graph) {
        out->nodes = hnsw_node_count(ix->graph);
        out->deleted_nodes = out->nodes - hnsw_live_count(ix->graph);
        out->memory_bytes = hnsw_memory_bytes(ix->graph);
    }
    pthread_mutex_lock(&ix->pend_mu);
    out->pending = ix->npending;
    pthread_mutex_unlock(&ix->pend_mu);
    pthread_rwlock_unlock(&ix->lock);
    return JVDB_OK;
}

int jvdb_db_index_wait(jvdb_db *db, uint32_t timeout_ms)
{
    err_clear();
    struct search_index *ix;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ix->pend_mu);
    while (ix->npending > 0 && rc == JVDB_OK)
        if (pthread_cond_timedwait(&ix->pend_cv, &ix->pend_mu, &deadline) != 0 && ix->npending > 0)
            rc = err_set(JVDB_EBUSY, "the index of '%s' still has %u vectors to take in", jvdb_db_name(db), ix->npending);
    pthread_mutex_unlock(&ix->pend_mu);
    if (rc) return rc;
    /* The last chunk is taken off the queue before it is in the graph: wait for the thread to let go. */
    pthread_rwlock_rdlock(&ix->lock);
    pthread_rwlock_unlock(&ix->lock);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- queries */

struct accept_ctx {
    const jvdb_db *db;
    const jvdb_filter *filter;
    const uint8_t *pending_bit;    /* skip pending slots (the graph's view of them is stale): a
                                    * private copy, one bit per slot */
    uint32_t bits_cap;
    const uint32_t *map;           /* pending scan: index in the packed array -> slot */
    const struct kd_slots *sl;     /* the slot table and snapshot the search reads at */
    uint32_t nslots;
    uint64_t snap;
};

/* The version of slot's vector the search's snapshot sees (NULL: none). */
static const struct kd_entry *slot_entry(const struct accept_ctx *c, uint32_t slot)
{
    const struct kd_entry *e = NULL;
    if (slot >= c->nslots || !keydir_slot_vector(c->sl, slot, c->snap, jvdb_db_dim(c->db), &e)) return NULL;
    return e;
}

static int accept_slot(const struct accept_ctx *c, uint32_t slot)
{
    if (c->pending_bit && slot < c->bits_cap && (c->pending_bit[slot / 8] >> (slot % 8) & 1)) return 0;
    const struct kd_entry *e = slot_entry(c, slot);
    if (!e) return 0;
    if (!c->filter) return 1;
    const struct rec_header *h = keydir_record(e);
    return filter_match(c->filter, h->meta_len ? rec_meta(h, jvdb_db_dim(c->db)) : NULL, h->meta_len);
}

static const float *resolve_slot(void *ctx, uint32_t slot)
{
    const struct accept_ctx *c = ctx;
    return slot < c->nslots ? keydir_slot_vector(c->sl, slot, c->snap, jvdb_db_dim(c->db), NULL) : NULL;
}

static int accept_graph(void *ctx, uint32_t slot) { return accept_slot(ctx, slot); }

static int accept_mapped(void *ctx, uint32_t i)
{
    const struct accept_ctx *c = ctx;
    return accept_slot(c, c->map[i]);
}

/* Share of live slots the filter accepts, estimated on an evenly spread sample. */
static double filter_selectivity(const struct accept_ctx *base, const jvdb_filter *f)
{
    uint32_t seen = 0, hit = 0;
    uint32_t step = base->nslots / SELECTIVE_SAMPLE + 1;
    struct accept_ctx c = *base;
    c.filter = f;
    c.pending_bit = NULL;
    for (uint32_t s = 0; s < c.nslots && seen < SELECTIVE_SAMPLE; s += step) {
        if (!slot_entry(&c, s)) continue;
        seen++;
        hit += (uint32_t)accept_slot(&c, s);
    }
    return seen ? (double)hit / seen : 1.0;
}

static int better(jvdb_metric m, float a, float b) { return m == JVDB_METRIC_L2 ? a < b : a > b; }

/* Merges two best-first lists into `out` (at most k). */
static uint32_t merge_results(jvdb_metric m, uint32_t k, const uint32_t *as, const float *ad, uint32_t an,
                              const uint32_t *bs, const float *bd, uint32_t bn, uint32_t *os, float *od)
{
    uint32_t i = 0, j = 0, n = 0;
    while (n < k && (i < an || j < bn)) {
        if (j >= bn || (i < an && !better(m, bd[j], ad[i]))) {
            os[n] = as[i];
            od[n++] = ad[i++];
        } else {
            os[n] = bs[j];
            od[n++] = bd[j++];
        }
    }
    return n;
}

void jvdb_results_free(jvdb_result *r, size_t n)
{
    if (!r) return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].id);
        free(r[i].vector);
        free(r[i].meta_json);
    }
    free(r);
}

/* Builds the answers for the slots found, each as the search's snapshot sees it; *count may end
 * below n when a slot has no version there (a graph answer that was never accepted). */
static int results_build(const jvdb_db *db, const struct accept_ctx *ac, const jvdb_search_params *p, const uint32_t *slots,
                         const float *scores, uint32_t n, jvdb_result **out, uint32_t *count)
{
    jvdb_result *r = calloc(n ? n : 1, sizeof *r);
    if (!r) return err_set(JVDB_ENOMEM, "out of memory");
    uint32_t i = 0;
    for (uint32_t j = 0; j < n; j++) {
        const struct kd_entry *e = slot_entry(ac, slots[j]);
        if (!e) continue;
        const struct rec_header *h = keydir_record(e);
        __atomic_fetch_add((uint32_t *)&e->hits, 1, __ATOMIC_RELAXED);
        float score = scores[j];
        r[i].score = score;
        r[i].id = malloc((size_t)e->id_len + 1);
        if (!r[i].id) goto oom;
        memcpy(r[i].id, e->id, e->id_len);
        r[i].id[e->id_len] = '\0';
        if (p->include_vectors) {
            r[i].vector = malloc((size_t)jvdb_db_dim(db) * sizeof(float));
            if (!r[i].vector) goto oom;
            memcpy(r[i].vector, rec_vector(h), (size_t)jvdb_db_dim(db) * sizeof(float));
        }
        if (p->include_metadata && h->meta_len) {
            r[i].meta_json = malloc((size_t)h->meta_len + 1);
            if (!r[i].meta_json) goto oom;
            memcpy(r[i].meta_json, rec_meta(h, jvdb_db_dim(db)), h->meta_len);
            r[i].meta_json[h->meta_len] = '\0';
        }
        i++;
    }
    *out = r;
    *count = i;
    return JVDB_OK;
oom:
    jvdb_results_free(r, n);
    return err_set(JVDB_ENOMEM, "out of memory");
}

/* Exact scan of the pending slots only (`pend`, copied when the search began, packed into a
 * small pointer array of the vectors the snapshot sees). */
static int search_pending(const jvdb_db *db, const uint32_t *pend, uint32_t npend, const float *q, const flat_params *base,
                          struct accept_ctx *ac, uint32_t *slots, float *scores, uint32_t *n)
{
    *n = 0;
    if (npend == 0) return JVDB_OK;
    const float **vecs = malloc(npend * sizeof *vecs);
    if (!vecs) return err_set(JVDB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < npend; i++) vecs[i] = resolve_slot(ac, pend[i]);
    struct accept_ctx pc = *ac;
    pc.pending_bit = NULL;
    pc.map = pend;
    flat_params fp = *base;
    fp.accept = pc.filter ? accept_mapped : NULL;
    fp.accept_ctx = &pc;
    int rc = flat_search(vecs, npend, jvdb_db_dim(db), q, &fp, slots, scores, n);
    for (uint32_t i = 0; rc == JVDB_OK && i < *n; i++) slots[i] = pend[slots[i]];
    free(vecs);
    return rc;
}

/* The pending set as the search starts: the queue and a bitmap of it (private copies: the hook
 * changes both under the pending mutex while searches run). */
static int pending_copy(struct search_index *ix, uint32_t nslots, uint32_t **pend, uint32_t *npend, uint8_t **bits)
{
    *pend = NULL;
    *bits = NULL;
    pthread_mutex_lock(&ix->pend_mu);
    *npend = ix->npending;
    int rc = JVDB_OK;
    if (*npend) {
        *pend = malloc(*npend * sizeof **pend);
        *bits = calloc((size_t)nslots / 8 + 1, 1);
        if (!*pend || !*bits) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
        } else {
            memcpy(*pend, ix->pending, *npend * sizeof **pend);
            for (uint32_t i = 0; i < *npend; i++)
                if ((*pend)[i] < nslots) (*bits)[(*pend)[i] / 8] |= (uint8_t)(1u << ((*pend)[i] % 8));
        }
    }
    pthread_mutex_unlock(&ix->pend_mu);
    if (rc) {
        free(*pend);
        free(*bits);
        *pend = NULL;
        *bits = NULL;
    }
    return rc;
}

int jvdb_search(jvdb_db *db, const float *query, uint32_t dim, const jvdb_search_params *params, jvdb_result **results,
                size_t *count)
{
    err_clear();
    if (!db || !query || !results || !count) return err_set(JVDB_EINVAL, "database, query or output is NULL");
    *results = NULL;
    *count = 0;
    jvdb_search_params p;
    if (params) p = *params;
    else jvdb_search_params_init(&p);
    if (dim != jvdb_db_dim(db))
        return err_set(JVDB_EINVAL, "query has %u values but database '%s' has dimension %u", dim, jvdb_db_name(db), jvdb_db_dim(db));
    if (p.k == 0 || p.k > MAX_K) return err_set(JVDB_EINVAL, "k (topK) %u is out of range (1..%d)", p.k, MAX_K);
    if (p.ef > HNSW_MAX_EF) return err_set(JVDB_EINVAL, "ef %u is out of range (1..%d)", p.ef, HNSW_MAX_EF);
    float *q = malloc((size_t)dim * sizeof *q);
    uint32_t *slots = malloc(3 * (size_t)p.k * sizeof *slots);
    float *scores = malloc(3 * (size_t)p.k * sizeof *scores);
    if (!q || !slots || !scores) {
        free(q);
        free(slots);
        free(scores);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    int rc = dist_query_prepare(jvdb_db_metric(db), query, dim, q);
    struct search_index *ix = NULL;
    /* An exact search needs no graph, and attaching the index starts a thread that builds one from
     * every vector: a process that only asks for exact answers (a one-shot `jvdb search`, the exact
     * benchmark) would give a core to a graph it never uses.  So it scans without attaching one. */
    if (rc == JVDB_OK && p.exact) ix = index_attached(db);
    else if (rc == JVDB_OK) rc = index_get(db, &ix);
    if (rc) goto out;

    if (ix) pthread_rwlock_rdlock(&ix->lock);
    /* One read section, one snapshot: no lock a writer waits for, and every answer as of the
     * same published batch. */
    rp_enter();
    /* The snapshot first, then the table: a table replaced after the snapshot (grown) holds every
     * batch the snapshot covers, one replaced before it might not. */
    uint64_t snap = db_snapshot_lsn(db);
    uint32_t nslots;
    const struct kd_slots *sl = keydir_slots(db_keydir(db), &nslots);
    uint32_t *pend = NULL, npend = 0;
    uint8_t *pbits = NULL;
    jvdb_result *r = NULL;
    flat_params fp;
    flat_params_init(&fp);
    fp.metric = jvdb_db_metric(db);
    fp.k = p.k;
    fp.threads = p.threads;
    fp.use_threshold = p.has_threshold;
    fp.threshold = p.threshold;
    struct accept_ctx ac = {db, p.filter, NULL, 0, NULL, sl, nslots, snap};
    uint32_t n = 0;
    int exact = p.exact || !ix || !ix->graph || ix->opts.type == JVDB_INDEX_FLAT;
    /* A very selective filter would make the graph search widen and give up: scan instead. */
    if (!exact && p.filter && filter_selectivity(&ac, p.filter) < 0.02) exact = 1;
    if (!exact && (rc = pending_copy(ix, nslots, &pend, &npend, &pbits))) goto unlock;
    if (!exact) {
        ac.pending_bit = pbits;
        ac.bits_cap = pbits ? nslots : 0;
        hnsw_query hq;
        hnsw_query_init(&hq);
        hq.k = p.k;
        hq.ef = p.ef;
        /* Always: a node's slot may hold nothing at this snapshot (deleted, or not yet visible). */
        hq.accept = accept_graph;
        hq.accept_ctx = &ac;
        hq.use_threshold = p.has_threshold;
        hq.threshold = p.threshold;
        hnsw_search_info info;
        uint32_t gn = 0, pn = 0;
        rc = hnsw_search(ix->graph, ix->nav, ix->nav_cap, q, &hq, slots, scores, &gn, &info);
        if (rc == JVDB_OK && !info.complete) {
            exact = 1;   /* filters or deletions hid too much of the graph */
        } else if (rc == JVDB_OK) {
            rc = search_pending(db, pend, npend, q, &fp, &ac, slots + p.k, scores + p.k, &pn);
            if (rc == JVDB_OK)
                n = merge_results(jvdb_db_metric(db), p.k, slots, scores, gn, slots + p.k, scores + p.k, pn, slots + 2 * p.k,
                                  scores + 2 * p.k);
            memmove(slots, slots + 2 * p.k, n * sizeof *slots);
            memmove(scores, scores + 2 * p.k, n * sizeof *scores);
        }
    }
    if (rc == JVDB_OK && exact) {
        ac.pending_bit = NULL;
        fp.accept = p.filter ? accept_graph : NULL;
        fp.accept_ctx = &ac;
        fp.slot_lsn = sl->lsn;
        fp.snap = snap;
        fp.resolve = resolve_slot;
        fp.resolve_ctx = &ac;
        rc = flat_search(sl->vec, nslots, dim, q, &fp, slots, scores, &n);
    }
    if (rc == JVDB_OK) rc = results_build(db, &ac, &p, slots, scores, n, &r, &n);
unlock:
    rp_exit();
    free(pend);
    free(pbits);
    if (ix) pthread_rwlock_unlock(&ix->lock);
    if (rc == JVDB_OK) {
        *results = r;
        *count = n;
    }
out:
    free(q);
    free(slots);
    free(scores);
    return rc;
}

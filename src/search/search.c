/*
 * search.c — a database's search index and jvdb_search (docs/ARCHITECTURE.md 4, 7): ties the store's slot table to
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
 * write_mu (to attach the hook, to queue every slot for a fresh graph, and for the saved graph one
 * block of nodes at a time, in memory only: naming them at a save, matching them at a load, then
 * the catch-up), then the pending mutex (a leaf).  The store itself is read without locks, in a read section at one snapshot LSN
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
 * Deleted nodes are removed by a vacuum (hnsw_persist.c) when their share passes VACUUM_SHARE: the
 * lists that pointed at them are refilled from theirs, at a cost bounded by the nodes next to
 * deleted ones, so recall holds over any number of delete/insert/compact rounds without rebuilds.
 *
 * The graph is durable (docs/ARCHITECTURE.md 7): the index thread checkpoints it to ext.hnsw (hnsw_persist.c
 * says why checkpoints plus catch-up suffice) when it is idle after SAVE_CHANGES changes or
 * SAVE_SECONDS, and at close.  On attach the thread loads that file in the background (searches are
 * exact meanwhile), keeps the nodes whose record is still the keydir's newest for its id, and queues
 * every other live slot: the catch-up.  A missing, damaged or other-format file means a rebuild from
 * every live slot, with the reason logged and shown in the index status.  Saving holds the index
 * lock shared (searches go on) and the database's write_mu only while one block's ids are copied
 * (the keydir changes a slot before its hook queues it, so only the writer lock makes "not pending"
 * mean "the node holds the owner's vector"), so writers never wait for the file.
 */
#include "search/distance.h"
#include "search/filter.h"
#include "search/flat.h"
#include "search/hnsw.h"
#include "search/hnsw_persist.h"
#include "search/payload.h"
#include "search/sq8.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/grow.h"
#include "core/io.h"
#include "core/log.h"
#include "store/db.h"
#include "store/record.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#define INDEX_CHUNK 16
#define INDEX_CHUNK_PER_THREAD \
    64 /* a parallel batch: enough per thread to pay for starting it, few
                                     * enough that searches wait for the index lock only briefly */
#define VACUUM_SHARE       0.10
#define VACUUM_MIN_NODES   1000
#define SAVE_CHANGES       50000
#define SAVE_SECONDS       30
/* A save appends the changed nodes to the delta file until it would pass this share of the
 * checkpoint's size; then the graph is written whole again (and the delta removed). */
#define DELTA_FOLD_SHARE   0.25
#define LOAD_CHUNK         4096
#define LOAD_AHEAD         32 /* nodes between a bucket's prefetch and its find */
#define SELECTIVE_SAMPLE   256
#define NAV_BLOCK          4096
/* Filtered searches scan their payload candidates exactly up to this many, or this share of the
 * live vectors (search_plan_scan). */
#define PAYLOAD_SCAN_MIN   4096
#define PAYLOAD_SCAN_SHARE 0.03
#define QUANT_SAMPLE       4096 /* vectors read from the slot table to fit the quantiser */

struct search_index {
    jvdb_db *db;
    pthread_rwlock_t lock;
    struct hnsw *graph; /* NULL for FLAT */
    const float **nav;  /* slot -> the graph's sq8 row of its vector (NULL: not a node) */
    uint32_t nav_cap;
    int8_t **nav_blocks; /* NAV_BLOCK rows each */
    uint32_t nav_nblocks, nav_blocks_cap;
    uint32_t row_bytes;     /* sq8_row_bytes(dim) */
    struct sq8_quant quant; /* codes every row; untrained until the first row (index lock) */
    float *vbuf;            /* the index thread's dim-float work vector */
    jvdb_index_options opts;
    pthread_mutex_t pend_mu;
    pthread_cond_t pend_cv; /* work for the thread, or pending drained (waiters) */
    uint8_t *pending_bit;   /* per slot */
    uint32_t bits_cap;
    uint32_t *pending; /* queue of slots whose bit is set */
    uint32_t npending, cap;
    pthread_t thread;
    int thread_started;
    int stop;

    /* Durability (ix->lock guards these unless noted). */
    int loading;             /* the thread has yet to load the saved graph (pend_mu too) */
    int rebuilding;          /* the graph was started empty; pending drains it (pend_mu too) */
    char why[160];           /* reason of the rebuild */
    uint64_t gen;            /* bumped by every reset, so a load in progress knows it is stale */
    pthread_mutex_t save_mu; /* one save at a time (they share the .tmp name) */
    uint64_t dirty;          /* graph changes since the last save */
    int64_t last_save_ns;    /* clock_mono_ns() of the last save (or attach) */
    int64_t save_every_ns;   /* SAVE_SECONDS, or JVDB_INDEX_SAVE_SECONDS (index_save_every) */
    uint64_t saved_lsn;
    uint64_t loaded_nodes;
    /* The graph's node numbers in ext.hnsw + ext.hnsw.log: savers change it under save_mu with the
     * index lock shared, the loader and resets under the index lock exclusive. */
    struct hnsw_numbering num;
    struct payload_index *pl; /* payload indexes (payload.c): fed by the keydir hook, used to plan */
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

/* Refuses index options outside the limits of hnsw.h, saying which. */
static int index_check_options(const jvdb_index_options *o)
{
    if (o->type != JVDB_INDEX_HNSW && o->type != JVDB_INDEX_FLAT)
        return err_set(JVDB_EINVAL, "unknown index type %d", (int)o->type);
    if (o->type == JVDB_INDEX_HNSW) {
        if (o->m < 2 || o->m > HNSW_MAX_M)
            return err_set(JVDB_EINVAL, "HNSW M %u is out of range (2..%d)", o->m, HNSW_MAX_M);
        if (o->ef_construction < 1 || o->ef_construction > HNSW_MAX_EF_CONSTRUCTION)
            return err_set(JVDB_EINVAL, "HNSW ef_construction %u is out of range (1..%d)", o->ef_construction,
                           HNSW_MAX_EF_CONSTRUCTION);
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
    if ((v = json_object_get(x, "type")) && json_is_string(v))
        o->type = strcmp(json_string_value(v), "flat") ? JVDB_INDEX_HNSW : JVDB_INDEX_FLAT;
    if ((v = json_object_get(x, "m")) && json_is_integer(v)) o->m = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(x, "ef_construction")) && json_is_integer(v))
        o->ef_construction = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(x, "ef_search")) && json_is_integer(v)) o->ef_search = (uint32_t)json_integer_value(v);
    json_decref(x);
    if (index_check_options(o) != JVDB_OK) jvdb_index_options_init(o);
}

void jvdb_db_get_index(jvdb_db *db, jvdb_index_options *out) { index_options_from_manifest(db, out); }

/* ---------------------------------------------------------------- pending slots */

/* Keydir hook: write_mu held.  Only queues; the index thread does the work. */
static void index_slot_hook(void *ctx, uint32_t slot, int added)
{
    (void)added;
    struct search_index *ix = ctx;
    pthread_mutex_lock(&ix->pend_mu);
    if (slot >= ix->bits_cap) {
        uint32_t old = ix->bits_cap;
        uint8_t *nb = grow_array32(ix->pending_bit, &ix->bits_cap, (size_t)slot + 1, 1, 1024);
        if (!nb) goto oom;
        memset(nb + old, 0, ix->bits_cap - old);
        ix->pending_bit = nb;
    }
    if (!ix->pending_bit[slot]) {
        uint32_t *np = grow_array32(ix->pending, &ix->cap, (size_t)ix->npending + 1, sizeof *np, 1024);
        if (!np) goto oom;
        ix->pending = np;
        ix->pending_bit[slot] = 1;
        ix->pending[ix->npending++] = slot;
        pthread_cond_broadcast(&ix->pend_cv);
    }
    pthread_mutex_unlock(&ix->pend_mu);
    return;
oom:
    /* Without memory to queue the slot the graph would silently miss it: fall back to exact search
     * for this database until the next rebuild. */
    log_error("search index of '%s': out of memory queueing slot %u; searches use exact scan", jvdb_db_name(ix->db),
              slot);
    ix->opts.type = JVDB_INDEX_FLAT;
    pthread_mutex_unlock(&ix->pend_mu);
}

/* The keydir's hook: payload indexes re-read the slot, the graph queues it. */
static void index_keydir_hook(void *ctx, uint32_t slot, int added)
{
    struct search_index *ix = ctx;
    if (ix->pl) payload_slot_hook(ix->pl, slot);
    index_slot_hook(ctx, slot, added);
}

/* Queues every live slot (a fresh graph); write_mu held, so no slot changes meanwhile. */
static void index_queue_all(struct search_index *ix)
{
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    for (uint32_t s = 0; s < n; s++)
        if (__atomic_load_n(&sl->vec[s], __ATOMIC_ACQUIRE)) index_slot_hook(ix, s, 1);
}

/* Gives `slot` a place for the graph's row of its vector. */
static int8_t *index_nav_slot(struct search_index *ix, uint32_t slot)
{
    if (slot >= ix->nav_cap) {
        uint32_t old = ix->nav_cap;
        const float **n = grow_array32(ix->nav, &ix->nav_cap, (size_t)slot + 1, sizeof *n, NAV_BLOCK);
        if (!n) return NULL;
        memset(n + old, 0, (ix->nav_cap - old) * sizeof *n);
        ix->nav = n;
    }
    uint32_t b = slot / NAV_BLOCK;
    if (b >= ix->nav_nblocks) {
        int8_t **nb = grow_array32(ix->nav_blocks, &ix->nav_blocks_cap, (size_t)b + 1, sizeof *nb, 16);
        if (!nb) return NULL;
        memset(nb + ix->nav_nblocks, 0, (b + 1 - ix->nav_nblocks) * sizeof *nb);
        ix->nav_blocks = nb;
        ix->nav_nblocks = b + 1;
    }
    if (!ix->nav_blocks[b] && !(ix->nav_blocks[b] = aligned_alloc(64, (size_t)NAV_BLOCK * ix->row_bytes + 64)))
        return NULL;
    return ix->nav_blocks[b] + (size_t)(slot % NAV_BLOCK) * ix->row_bytes;
}

/* Copies slot's vector into `out` as the graph sees it (normalised for cosine); 0 if it has none. */
static int index_vector_of(struct search_index *ix, const struct kd_slots *sl, uint32_t n, uint32_t slot, float *out)
{
    const float *v = slot < n ? __atomic_load_n(&sl->vec[slot], __ATOMIC_ACQUIRE) : NULL;
    if (!v) return 0;
    memcpy(out, v, (size_t)jvdb_db_dim(ix->db) * sizeof(float));
    return jvdb_db_metric(ix->db) != JVDB_METRIC_COSINE || dist_normalize(out, jvdb_db_dim(ix->db)) == JVDB_OK;
}

/* Fits the quantiser's centres to an evenly spread sample of the live vectors and `x` (the first
 * vector to code), and re-codes every row made with the old ones.  Index write lock held, in a read
 * section.  Rows are re-coded from their codes, not their vectors: deleted nodes have none left. */
static int index_quant_fit(struct search_index *ix, const float *x)
{
    uint32_t dim = jvdb_db_dim(ix->db), n;
    struct sq8_trainer t;
    struct sq8_quant nq;
    float *tmp = malloc((size_t)dim * sizeof *tmp);
    if (!tmp) return err_set(JVDB_ENOMEM, "out of memory");
    if (sq8_trainer_init(&t, dim, QUANT_SAMPLE + 1)) {
        free(tmp);
        return JVDB_ENOMEM;
    }
    if (sq8_init(&nq, dim)) {
        sq8_trainer_free(&t);
        free(tmp);
        return JVDB_ENOMEM;
    }
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    uint32_t step = n / QUANT_SAMPLE + 1;
    for (uint32_t s = 0; s < n; s += step)
        if (index_vector_of(ix, sl, n, s, tmp)) sq8_trainer_add(&t, tmp);
    sq8_trainer_add(&t, x);
    int rc = sq8_trainer_finish(&t, jvdb_db_metric(ix->db), &nq);
    sq8_trainer_free(&t);
    if (rc) {
        sq8_free(&nq);
        free(tmp);
        return rc;
    }
    if (ix->quant.trained)
        for (uint32_t s = 0; s < ix->nav_cap; s++)
            if (ix->nav[s]) {
                sq8_decode(&ix->quant, (const int8_t *)ix->nav[s], tmp);
                sq8_encode(&nq, tmp, (int8_t *)ix->nav[s]);
            }
    free(tmp);
    log_debug("search index of '%s': quantiser fitted to %u vectors", jvdb_db_name(ix->db), t.n);
    sq8_free(&ix->quant);
    ix->quant = nq;
    return JVDB_OK;
}

/* Build threads (jvdb_set_index_threads): 0 = not set yet (JVDB_INDEX_THREADS decides at first use). */
static uint32_t index_threads_setting;

int jvdb_set_index_threads(uint32_t threads)
{
    err_clear();
    if (threads > HNSW_MAX_THREADS)
        return err_set(JVDB_EINVAL, "%u index threads is too many (at most %d; 0 = every core)", threads,
                       HNSW_MAX_THREADS);
    uint32_t n = threads ? threads : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    __atomic_store_n(&index_threads_setting, n < 1 ? 1 : n > HNSW_MAX_THREADS ? HNSW_MAX_THREADS : n, __ATOMIC_RELAXED);
    return JVDB_OK;
}

/* Seconds between the index thread's saves: SAVE_SECONDS, or JVDB_INDEX_SAVE_SECONDS (tests). */
static int64_t index_save_every(void)
{
    const char *env = getenv("JVDB_INDEX_SAVE_SECONDS");
    if (!env || !*env) return SAVE_SECONDS;
    char *end = NULL;
    unsigned long v = strtoul(env, &end, 10);
    if (!*end && v <= 86400) return (int64_t)v;
    log_warn("JVDB_INDEX_SAVE_SECONDS=%s is not 0..86400; the index saves every %d s", env, SAVE_SECONDS);
    return SAVE_SECONDS;
}

/* Threads for the next batch: the setting, else JVDB_INDEX_THREADS (a bad value is logged and means 1). */
static uint32_t index_threads(void)
{
    uint32_t n = __atomic_load_n(&index_threads_setting, __ATOMIC_RELAXED);
    if (n) return n;
    const char *env = getenv("JVDB_INDEX_THREADS");
    char *end = NULL;
    unsigned long v = env && *env ? strtoul(env, &end, 10) : 1;
    if (env && *env && (*end || v > HNSW_MAX_THREADS)) {
        log_warn("JVDB_INDEX_THREADS=%s is not 0..%d; the index uses 1 thread", env, HNSW_MAX_THREADS);
        v = 1;
    }
    jvdb_set_index_threads((uint32_t)v);
    return __atomic_load_n(&index_threads_setting, __ATOMIC_RELAXED);
}

/* In a read section: the newest vector of the slot (the graph follows the writers, published or
 * not; searches resolve every answer at their own snapshot).  A slot to (re-)insert gets its row
 * and is returned 1, for the caller to insert with the rest of its batch. */
static int index_reconcile(struct search_index *ix, uint32_t slot)
{
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    const float *v = slot < n ? __atomic_load_n(&sl->vec[slot], __ATOMIC_ACQUIRE) : NULL;
    if (!v) {
        /* The node keeps its copy, so searches can still walk through it. */
        if (hnsw_contains(ix->graph, slot) && !hnsw_is_deleted(ix->graph, slot)) {
            hnsw_mark_deleted(ix->graph, slot);
            __atomic_fetch_add(&ix->dirty, 1, __ATOMIC_RELAXED);
        }
        return 0;
    }
    /* Put refuses the zero vector for cosine, so this fails only on a record no put wrote. */
    if (!index_vector_of(ix, sl, n, slot, ix->vbuf)) {
        log_error("search index of '%s': slot %u: %s; it is left out of the graph", jvdb_db_name(ix->db), slot,
                  jvdb_errmsg());
        if (hnsw_contains(ix->graph, slot) && !hnsw_is_deleted(ix->graph, slot)) hnsw_mark_deleted(ix->graph, slot);
        return 0;
    }
    /* The first row fits the centres; every row carries its own step, so no vector is ever out of
     * range and the centres never change afterwards. */
    if (!ix->quant.trained) {
        if (index_quant_fit(ix, ix->vbuf) != JVDB_OK)
            log_error("search index of '%s': cannot fit the quantiser: %s", jvdb_db_name(ix->db), jvdb_errmsg());
        if (!ix->quant.trained) return 0;
    }
    int8_t *row = index_nav_slot(ix, slot);
    if (!row) {
        log_error("search index of '%s': out of memory for slot %u; it is searched exactly until a rebuild",
                  jvdb_db_name(ix->db), slot);
        return 0;
    }
    sq8_encode(&ix->quant, ix->vbuf, row);
    ix->nav[slot] = (const float *)row;
    __atomic_fetch_add(&ix->dirty, 1, __ATOMIC_RELAXED);
    return 1;
}

/* Replaces the graph by an empty one and queues every live slot: the non-blocking rebuild.
 * Index write lock and database write lock held; `why` is shown in the status until it is done. */
static int index_reset_graph(struct search_index *ix, const char *why)
{
    struct hnsw *fresh = NULL;
    if (ix->opts.type == JVDB_INDEX_HNSW) {
        struct hnsw_params p;
        hnsw_params_init(&p);
        p.M = ix->opts.m;
        p.ef_construction = ix->opts.ef_construction;
        p.ef_search = ix->opts.ef_search;
        p.sq8 = 1;
        int rc = hnsw_create(jvdb_db_dim(ix->db), jvdb_db_metric(ix->db), &p, &fresh);
        if (rc) return rc;
    }
    hnsw_free(ix->graph);
    ix->graph = fresh;
    ix->gen++;
    ix->num.valid = 0; /* the files describe another graph: the next save is a full one */
    __atomic_fetch_add(&ix->dirty, 1, __ATOMIC_RELAXED);
    ix->loaded_nodes = 0;
    snprintf(ix->why, sizeof ix->why, "%s", why);
    if (ix->nav) memset(ix->nav, 0, ix->nav_cap * sizeof *ix->nav);
    ix->quant.trained = 0; /* refitted to the vectors at the first row */
    pthread_mutex_lock(&ix->pend_mu);
    for (uint32_t i = 0; i < ix->npending; i++) ix->pending_bit[ix->pending[i]] = 0;
    ix->npending = 0;
    ix->rebuilding = fresh != NULL;
    pthread_mutex_unlock(&ix->pend_mu);
    if (fresh) index_queue_all(ix);
    /* Only now: a waiter must not see "not loading, nothing pending" before the queue is filled. */
    pthread_mutex_lock(&ix->pend_mu);
    ix->loading = 0;
    pthread_cond_broadcast(&ix->pend_cv);
    pthread_mutex_unlock(&ix->pend_mu);
    return JVDB_OK;
}

/* ---------------------------------------------------------------- the graph file */

static int index_writable(const jvdb_db *db) { return db_writable(db); }

struct save_ctx {
    struct search_index *ix;
};

/* Graph-save callback: holds the database's writer position while one block of nodes is copied (ids and vectors
 * then stay those of one moment), and releases it before the block is written. */
static void save_lock(void *ctx, int lock)
{
    struct search_index *ix = ((struct save_ctx *)ctx)->ix;
    if (lock) db_writer_enter(ix->db);
    else db_writer_exit(ix->db);
}

/* Writer lock held (save_lock, one block of nodes at a time, no I/O): the node stands for the slot's
 * record only when the slot is settled, i.e. the graph has taken in the slot's current vector.  The
 * keydir changes a slot before its hook queues it, so only the writer lock makes "not pending" mean
 * "the graph's copy is the owner's vector"; a read section would not. */
static int save_ident(void *ctx, uint32_t slot, const char **id, uint16_t *id_len, uint64_t *lsn)
{
    struct search_index *ix = ((struct save_ctx *)ctx)->ix;
    uint32_t n;
    const struct kd_slots *sl = keydir_slots(db_keydir(ix->db), &n);
    /* Compaction repoints sl->vec without the writer lock (a CAS from one copy to another, never to
     * NULL): read it atomically. */
    if (slot >= n || !__atomic_load_n(&sl->vec[slot], __ATOMIC_ACQUIRE) || !sl->owner[slot]) return 0;
    pthread_mutex_lock(&ix->pend_mu);
    int pending = slot < ix->bits_cap && ix->pending_bit[slot];
    pthread_mutex_unlock(&ix->pend_mu);
    if (pending) return 0;
    const struct kd_entry *e = sl->owner[slot];
    *id = e->id;
    *id_len = e->id_len;
    *lsn = e->lsn;
    return 1;
}

/* Graph-save callback, before the file naming the nodes is published: every record appended so far
 * (so every one a node names) made durable, as the keydir checkpoint does (kdckpt.c). */
static int save_durable(void *ctx) { return db_sync_all(((struct save_ctx *)ctx)->ix->db); }

/* Whether the next save must write the whole graph: no checkpoint it extends, nodes removed, or the
 * delta would pass DELTA_FOLD_SHARE of the checkpoint.  save_mu held. */
static int index_save_full(struct search_index *ix)
{
    const struct hnsw_numbering *num = &ix->num;
    if (!num->valid || hnsw_restructured(ix->graph) || !num->count) return 1;
    uint64_t est = hnsw_delta_estimate(ix->graph, num, num->ckpt_bytes / num->count);
    return (double)(num->delta_len + est) > DELTA_FOLD_SHARE * (double)num->ckpt_bytes;
}

/* Writes the graph file; index lock held (shared or exclusive), so the graph does not change. */
static int index_save_locked(struct search_index *ix)
{
    jvdb_db *db = ix->db;
    if (!index_writable(db)) return JVDB_OK;
    if (!ix->graph) {
        /* FLAT, or still loading: nothing to save, and nothing to retry until the graph changes. */
        pthread_mutex_lock(&ix->pend_mu);
        if (!ix->loading) __atomic_store_n(&ix->dirty, 0, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&ix->pend_mu);
        return JVDB_OK;
    }
    char *path = fs_join(db_dir(db), HNSW_FILE_NAME);
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    /* Every record up to this LSN that is live and settled is in the graph; later ones are caught up
     * at open whatever this says, since nodes are matched record by record. */
    rp_enter();
    pthread_mutex_lock(&ix->pend_mu);
    uint64_t lsn = ix->npending ? 0 : db_snapshot_lsn(db);
    pthread_mutex_unlock(&ix->pend_mu);
    rp_exit();
    int64_t t0 = clock_mono_ns();
    pthread_mutex_lock(&ix->save_mu);
    /* Checked again under save_mu: index_hold takes save_mu once the database is marked `dropping`,
     * so a save that passed the first check before the mark ends before the rename, and any later
     * one stops here. */
    if (!index_writable(db)) {
        pthread_mutex_unlock(&ix->save_mu);
        free(path);
        return JVDB_OK;
    }
    io_crash_point("hnsw.save.before_open"); /* not a commit point: tests stall a save here */
    uint64_t dirty = __atomic_load_n(&ix->dirty, __ATOMIC_RELAXED), bytes = 0;
    struct save_ctx sc = { ix };
    int full = index_save_full(ix), rc;
    if (full) {
        /* The quantiser's centres go beside the header. */
        uint32_t dim = jvdb_db_dim(db), xlen = 4 * dim;
        uint8_t *extra = malloc(xlen);
        rc = extra ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
        if (extra) {
            memcpy(extra, ix->quant.centre, (size_t)dim * 4);
            rc = hnsw_save(ix->graph, ix->nav, ix->nav_cap, extra, xlen, path, lsn, save_ident, save_lock, save_durable,
                           &sc, &ix->num, &bytes);
            free(extra);
        }
        if (rc == JVDB_OK) hnsw_dirty_clear(ix->graph);
    } else {
        char *dpath = fs_join(db_dir(db), HNSW_DELTA_NAME);
        rc = dpath ? hnsw_delta_append(ix->graph, ix->nav, ix->nav_cap, dpath, lsn, save_ident, save_lock, save_durable,
                                       &sc, &ix->num, &bytes)
                   : err_set(JVDB_ENOMEM, "out of memory");
        free(dpath);
    }
    int64_t t1 = clock_mono_ns();
    free(path);
    if (rc) {
        pthread_mutex_unlock(&ix->save_mu);
        log_error("search index of '%s': cannot save the graph: %s", jvdb_db_name(db), jvdb_errmsg());
        return rc;
    }
    __atomic_fetch_sub(&ix->dirty, dirty, __ATOMIC_RELAXED);
    __atomic_store_n(&ix->last_save_ns, clock_mono_ns(), __ATOMIC_RELAXED);
    if (lsn) __atomic_store_n(&ix->saved_lsn, lsn, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&ix->save_mu);
    log_debug("search index of '%s': saved %u nodes (%s, %llu bytes) in %.3f s", jvdb_db_name(db),
              hnsw_node_count(ix->graph), full ? "whole graph" : "delta", (unsigned long long)bytes,
              (double)(t1 - t0) / 1e9);
    return JVDB_OK;
}

/* Reads the delta file beside the checkpoint and replays it over f (*buf keeps its bytes, which f's
 * nodes point into, until f is freed).  A delta of another checkpoint, or torn, counts as absent from
 * where it stops; one that breaks the format's rules is ignored whole with a warning, f parsed from
 * the checkpoint again (the checkpoint alone is a complete graph: the rest is caught up). */
static int index_load_delta(jvdb_db *db, const void *map, size_t len, struct hnsw_file *f, char **buf, size_t *buf_len,
                            size_t *good, uint32_t *batches)
{
    *buf = NULL;
    *good = 0;
    *batches = 0;
    char *dpath = fs_join(db_dir(db), HNSW_DELTA_NAME);
    if (!dpath) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = fs_exists(dpath) ? fs_read_file(dpath, buf, buf_len) : JVDB_OK;
    if (rc) {
        log_warn("search index of '%s': cannot read %s (%s); its changes are caught up instead", jvdb_db_name(db),
                 dpath, jvdb_errmsg());
        free(dpath);
        return JVDB_OK;
    }
    if (*buf && (rc = hnsw_delta_apply(f, *buf, *buf_len, good, batches)) != JVDB_OK) {
        log_warn("search index of '%s': %s is damaged (%s); its changes are caught up instead", jvdb_db_name(db), dpath,
                 jvdb_errmsg());
        free(*buf);
        *buf = NULL;
        *good = 0;
        *batches = 0;
        hnsw_file_free(f);
        rc = rc == JVDB_ENOMEM ? rc : hnsw_file_parse_mapped(map, len, f);
    }
    free(dpath);
    return rc;
}

/* Maps the saved graph's nodes to slots (writer lock, a chunk at a time, so writers get in
 * between; what they change is queued by the hook) and copies their vectors.  Index write lock held
 * per chunk too: the copies live in ix->nav.  Returns JVDB_OK with *g, or the reason in why. */
static int index_load_graph(struct search_index *ix, const jvdb_index_options *opts, struct hnsw **g, uint64_t gen,
                            struct hnsw_numbering *num, char *why, size_t whylen)
{
    jvdb_db *db = ix->db;
    *g = NULL;
    char *path = fs_join(db_dir(db), HNSW_FILE_NAME);
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(why, whylen, e == ENOENT ? "no saved graph" : "cannot open the saved graph: %s", strerror(e));
        free(path);
        return e == ENOENT ? JVDB_ENOTFOUND : JVDB_EIO;
    }
    free(path);
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0) map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(why, whylen, "cannot read the saved graph");
        return JVDB_EIO;
    }
    /* Read ahead into the page cache (not into the process: verified pages are dropped as the passes
     * over the file go, so it is never resident whole beside the graph it becomes). */
    madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL | MADV_WILLNEED);
    struct hnsw_file f;
    uint32_t *slot_of = NULL;
    uint64_t *hashes = NULL;
    size_t mark = 0;
    int rc = hnsw_file_parse_mapped(map, (size_t)st.st_size, &f);
    if (rc) {
        snprintf(why, whylen, "saved graph is damaged: %s", jvdb_errmsg());
        munmap(map, (size_t)st.st_size);
        return rc;
    }
    char *delta = NULL;
    size_t delta_len = 0, delta_good = 0;
    uint32_t batches = 0;
    if ((rc = index_load_delta(db, map, (size_t)st.st_size, &f, &delta, &delta_len, &delta_good, &batches))) {
        snprintf(why, whylen, "saved graph is damaged: %s", jvdb_errmsg());
        munmap(map, (size_t)st.st_size);
        return rc;
    }
    if (f.dim != jvdb_db_dim(db) || f.metric != jvdb_db_metric(db) || f.p.M != opts->m ||
        f.p.ef_construction != opts->ef_construction) {
        snprintf(why, whylen, "saved graph was built with other settings (dim %u, M %u, ef_construction %u)", f.dim,
                 f.p.M, f.p.ef_construction);
        rc = JVDB_EINVAL;
        goto out;
    }
    int centres_ok = f.extra_len == 4 * f.dim;
    for (uint32_t d = 0; centres_ok && d < f.dim; d++) {
        float c;
        memcpy(&c, f.extra + 4 * (size_t)d, 4);
        centres_ok = isfinite(c);
    }
    if (!f.p.sq8 || f.row_bytes != sq8_row_bytes(f.dim) || !centres_ok) {
        snprintf(why, whylen, "saved graph has no usable quantiser (rows of %u bytes)", f.row_bytes);
        rc = JVDB_EINVAL;
        goto out;
    }
    f.p.ef_search = opts->ef_search;
    hashes = malloc(LOAD_CHUNK * sizeof *hashes);
    if (!hashes || (f.nnodes && !(slot_of = malloc((size_t)f.nnodes * sizeof *slot_of)))) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        snprintf(why, whylen, "out of memory loading the saved graph");
        goto out;
    }
    for (uint32_t i = 0; i < f.nnodes && rc == JVDB_OK;) {
        pthread_rwlock_wrlock(&ix->lock);
        if (i == 0 && ix->gen == gen) {
            /* No graph yet (searches are exact), so no row is coded otherwise: take the file's quantiser. */
            ix->quant.trained = 1;
            memcpy(ix->quant.centre, f.extra, (size_t)f.dim * 4);
        }
        /* As the writer: a node's slot (a writer field) and the slot's vector cannot change under us,
         * and a write after this chunk queues the slot through the hook. */
        db_writer_enter(db);
        uint32_t nsl;
        const struct keydir *kd = db_keydir(db);
        const struct kd_slots *sl = keydir_slots(kd, &nsl);
        if (ix->gen != gen) rc = JVDB_EBUSY;
        uint32_t first = i, end = i + LOAD_CHUNK < f.nnodes ? i + LOAD_CHUNK : f.nnodes;
        /* The lookups are cache misses in a table far bigger than the cache: hash the chunk's ids,
         * then fetch buckets and entries a few nodes ahead of the finds. */
        for (uint32_t k = first; k < end; k++) hashes[k - first] = keydir_hash(f.nodes[k].id, f.nodes[k].id_len);
        for (uint32_t k = first; k < end && k < first + LOAD_AHEAD; k++) keydir_prefetch(kd, hashes[k - first], 0);
        for (; rc == JVDB_OK && i < end; i++) {
            const struct hnsw_file_node *nd = &f.nodes[i];
            if (i + LOAD_AHEAD < end) keydir_prefetch(kd, hashes[i + LOAD_AHEAD - first], 0);
            if (i + LOAD_AHEAD / 2 < end) keydir_prefetch(kd, hashes[i + LOAD_AHEAD / 2 - first], 1);
            slot_of[i] = HNSW_FILE_NONE;
            if (nd->dead) continue;
            /* A graph can only miss, never invent: the node is kept only for the id's newest record. */
            const struct kd_entry *e = keydir_find_hashed(kd, nd->id, nd->id_len, hashes[i - first]);
            if (!e || e->slot == KD_NO_SLOT || e->lsn != nd->lsn || e->slot >= nsl || !sl->vec[e->slot] ||
                sl->owner[e->slot] != e)
                continue;
            int8_t *row = index_nav_slot(ix, e->slot);
            if (!row) {
                rc = JVDB_ENOMEM;
                snprintf(why, whylen, "out of memory loading the saved graph");
                break;
            }
            /* The file's row: the segments' pages are not touched to load a graph. */
            memcpy(row, hnsw_file_row(&f, nd), ix->row_bytes);
            if (!sq8_row_valid((const int8_t *)row, f.dim)) {
                rc = JVDB_ECORRUPT;
                snprintf(why, whylen, "saved graph is damaged: node %u has an invalid navigation row", i);
                break;
            }
            ix->nav[e->slot] = (const float *)row;
            slot_of[i] = e->slot;
        }
        db_writer_exit(db);
        pthread_rwlock_unlock(&ix->lock);
        if (i < f.nnodes) hnsw_file_drop(&f, &mark, f.nodes[i].id);
    }
    if (rc == JVDB_EBUSY) snprintf(why, whylen, "settings changed while loading");
    if (rc == JVDB_OK) {
        pthread_rwlock_rdlock(&ix->lock);
        rc = hnsw_from_file(&f, slot_of, ix->nav, ix->nav_cap, g);
        pthread_rwlock_unlock(&ix->lock);
        if (rc) snprintf(why, whylen, "saved graph is damaged: %s", jvdb_errmsg());
    }
    if (rc == JVDB_OK) __atomic_store_n(&ix->saved_lsn, f.lsn, __ATOMIC_RELAXED);
    /* Where each node stands in the files, so the next save appends only what changes. */
    if (rc == JVDB_OK && (rc = hnsw_numbering_reserve(num, hnsw_capacity(*g))) == JVDB_OK) {
        for (uint32_t i = 0; i < f.nnodes; i++)
            if (slot_of[i] != HNSW_FILE_NONE) num->no[slot_of[i]] = i;
        num->count = f.nnodes;
        num->tag = f.tag;
        num->ckpt_bytes = (uint64_t)st.st_size;
        num->delta_len = delta_good;
        num->batches = batches;
        num->valid = 1;
    } else if (rc == JVDB_ENOMEM) {
        hnsw_free(*g);
        *g = NULL;
        snprintf(why, whylen, "out of memory loading the saved graph");
    }
out:
    free(hashes);
    free(slot_of);
    hnsw_file_free(&f);
    free(delta);
    munmap(map, (size_t)st.st_size);
    return rc;
}

/* The thread's first job: the saved graph plus catch-up, or a rebuild saying why. */
static void index_load(struct search_index *ix)
{
    jvdb_db *db = ix->db;
    int64_t t0 = clock_mono_ns();
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t gen = ix->gen;
    jvdb_index_options opts = ix->opts; /* set_index changes them under the write lock (and gen) */
    pthread_rwlock_unlock(&ix->lock);
    char why[160] = "";
    struct hnsw *g = NULL;
    struct hnsw_numbering num = { 0 };
    int rc = index_load_graph(ix, &opts, &g, gen, &num, why, sizeof why);
    pthread_rwlock_wrlock(&ix->lock);
    if (ix->gen != gen) {
        /* set_index reset the graph meanwhile: that one stands. */
        hnsw_free(g);
        hnsw_numbering_free(&num);
        pthread_rwlock_unlock(&ix->lock);
        return;
    }
    hnsw_numbering_free(&ix->num);
    ix->num = num; /* invalid (zeroed) unless the load worked */
    db_writer_enter(db);
    if (rc == JVDB_OK) {
        hnsw_free(ix->graph);
        ix->graph = g;
        hnsw_set_ef_search(g, ix->opts.ef_search); /* set_index may have changed only ef meanwhile */
        ix->loaded_nodes = hnsw_node_count(g);
        ix->why[0] = '\0';
        /* Catch-up: every live slot the graph does not hold (written after the save, replaced, or
         * not settled when it was saved).  Slots the hook queued during the load stay queued. */
        uint32_t nsl;
        const struct kd_slots *sl = keydir_slots(db_keydir(db), &nsl);
        for (uint32_t s = 0; s < nsl; s++)
            if (sl->vec[s] && !hnsw_contains(g, s)) index_slot_hook(ix, s, 1);
        pthread_mutex_lock(&ix->pend_mu);
        ix->loading = 0;
        uint32_t catchup = ix->npending;
        pthread_cond_broadcast(&ix->pend_cv);
        pthread_mutex_unlock(&ix->pend_mu);
        int64_t t1 = clock_mono_ns();
        log_info("search index of '%s': loaded the saved graph (%u nodes) in %.3f s; %u vectors to catch up",
                 jvdb_db_name(db), hnsw_node_count(g), (double)(t1 - t0) / 1e9, catchup);
    } else {
        if (__atomic_load_n(&db_keydir(db)->live, __ATOMIC_RELAXED) > 0 || rc != JVDB_ENOTFOUND)
            log_info("search index of '%s': %s; rebuilding it in the background", jvdb_db_name(db), why);
        if (index_reset_graph(ix, why) != JVDB_OK)
            log_error("search index of '%s': rebuild failed: %s", jvdb_db_name(db), jvdb_errmsg());
    }
    db_writer_exit(db);
    pthread_rwlock_unlock(&ix->lock);
}

struct reset_arg {
    struct search_index *ix;
    const char *why;
};

/* db_as_writer callback: drops the graph and queues every live vector again. */
static int index_reset_graph_cb(void *arg)
{
    struct reset_arg *a = arg;
    return index_reset_graph(a->ix, a->why);
}

/* As the writer: the hook set (and, when the saved graph cannot be used, a fresh graph with every slot
 * queued), with no write between. */
static int index_attach_cb(void *arg)
{
    struct search_index *ix = arg;
    int rc = index_writable(ix->db) ? JVDB_OK : index_reset_graph(ix, "");
    if (rc == JVDB_OK) {
        if (ix->pl) payload_queue_all(ix->pl);
        db_set_slot_hook(ix->db, index_keydir_hook, ix, 1);
    }
    return rc;
}

/* The index thread: loads the saved graph, then inserts queued slots in chunks (in parallel when asked), vacuums a
 * graph with many deleted nodes, and saves the graph when idle with enough unsaved changes or time. */
static void *index_thread_main(void *arg)
{
    struct search_index *ix = arg;
    jvdb_db *db = ix->db;
    uint32_t *chunk = malloc((size_t)INDEX_CHUNK_PER_THREAD * HNSW_MAX_THREADS * sizeof *chunk);
    if (!chunk) {
        log_error("search index of '%s': out of memory starting the index thread", jvdb_db_name(db));
        return NULL;
    }
    pthread_mutex_lock(&ix->pend_mu);
    int loading = ix->loading;
    pthread_mutex_unlock(&ix->pend_mu);
    if (loading) index_load(ix);
    pthread_mutex_lock(&ix->pend_mu);
    for (;;) {
        while (!ix->stop && ix->npending == 0) {
            ix->rebuilding = 0;
            if (__atomic_load_n(&ix->dirty, __ATOMIC_RELAXED) && index_writable(db)) {
                /* Idle with unsaved changes: checkpoint after enough of them or enough time. */
                uint64_t dirty = __atomic_load_n(&ix->dirty, __ATOMIC_RELAXED);
                int64_t due = __atomic_load_n(&ix->last_save_ns, __ATOMIC_RELAXED) + ix->save_every_ns;
                if (dirty >= SAVE_CHANGES || clock_mono_ns() >= due) {
                    pthread_mutex_unlock(&ix->pend_mu);
                    pthread_rwlock_rdlock(&ix->lock);
                    if (index_save_locked(ix) != JVDB_OK)
                        __atomic_store_n(&ix->last_save_ns, clock_mono_ns(),
                                         __ATOMIC_RELAXED); /* retry later, not in a loop */
                    pthread_rwlock_unlock(&ix->lock);
                    pthread_mutex_lock(&ix->pend_mu);
                    continue;
                }
                clock_cond_wait_until(&ix->pend_cv, &ix->pend_mu, due);
                continue;
            }
            pthread_cond_wait(&ix->pend_cv, &ix->pend_mu);
        }
        if (ix->stop) break;
        pthread_mutex_unlock(&ix->pend_mu);

        pthread_rwlock_wrlock(&ix->lock);
        rp_enter();
        pthread_mutex_lock(&ix->pend_mu);
        uint32_t n = 0, threads = index_threads();
        uint32_t take = threads > 1 ? INDEX_CHUNK_PER_THREAD * threads : INDEX_CHUNK;
        /* The bit goes as the slot leaves the queue (pending mutex held): a write after this
         * queues the slot again, so the graph never keeps a vector older than the slot's. */
        while (n < take && ix->npending > 0) {
            chunk[n] = ix->pending[--ix->npending];
            ix->pending_bit[chunk[n++]] = 0;
        }
        pthread_mutex_unlock(&ix->pend_mu);
        if (ix->graph) {
            /* Rows first (one thread: the quantiser may be fitted), then the links, in parallel
             * when asked: the queue holds each slot once, so the batch's slots are distinct. */
            uint32_t ins = 0;
            for (uint32_t i = 0; i < n; i++)
                if (index_reconcile(ix, chunk[i])) chunk[ins++] = chunk[i];
            if (ins && hnsw_insert_batch(ix->graph, ix->nav, ix->nav_cap, chunk, ins, threads) != JVDB_OK)
                log_error("search index of '%s': cannot insert %s: %s", jvdb_db_name(db),
                          ins > 1 ? "some vectors" : "a vector", jvdb_errmsg());
        }
        int vacuum =
            ix->graph && hnsw_node_count(ix->graph) >= VACUUM_MIN_NODES && hnsw_deleted_share(ix->graph) > VACUUM_SHARE;
        rp_exit();
        if (vacuum) {
            /* Only the graph and its own vector copies are read: the database stays open to all. */
            uint32_t removed = 0;
            if (hnsw_vacuum(ix->graph, ix->nav, ix->nav_cap, &removed) != JVDB_OK)
                log_error("search index of '%s': vacuum failed: %s", jvdb_db_name(db), jvdb_errmsg());
            else __atomic_fetch_add(&ix->dirty, removed, __ATOMIC_RELAXED);
        }
        pthread_rwlock_unlock(&ix->lock);
        pthread_mutex_lock(&ix->pend_mu);
        if (ix->npending == 0) pthread_cond_broadcast(&ix->pend_cv);
    }
    pthread_mutex_unlock(&ix->pend_mu);
    free(chunk);
    return NULL;
}

/* Stops the index thread, saves unsaved changes on a clean close, and frees the index. */
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
    /* Clean close: checkpoint whatever changed, so the next open only loads. */
    if (__atomic_load_n(&ix->dirty, __ATOMIC_RELAXED) && !ix->loading) index_save_locked(ix);
    db_set_slot_hook(ix->db, NULL, ix, 0);
    payload_free(ix->pl);
    hnsw_free(ix->graph);
    hnsw_numbering_free(&ix->num);
    for (uint32_t b = 0; b < ix->nav_nblocks; b++) free(ix->nav_blocks[b]);
    free(ix->nav_blocks);
    free(ix->nav);
    sq8_free(&ix->quant);
    free(ix->vbuf);
    free(ix->pending_bit);
    free(ix->pending);
    pthread_rwlock_destroy(&ix->lock);
    pthread_mutex_destroy(&ix->pend_mu);
    pthread_mutex_destroy(&ix->save_mu);
    pthread_cond_destroy(&ix->pend_cv);
    free(ix);
}

/* db_set_ext_hold: the graph files are opened by path (db_dir), so a save under way when a drop or a
 * replace renames the directory would finish in the directory that then bears the name.  Waiting for
 * save_mu is enough and simpler than saving through a directory fd: every save takes it and checks
 * `dropping` under it (index_save_locked), and no other thread writes these files.  Release wakes
 * the index thread, which skipped its saves while the database was marked, to save again. */
static void index_hold(void *ext, int hold)
{
    struct search_index *ix = ext;
    if (hold) {
        pthread_mutex_lock(&ix->save_mu);
        pthread_mutex_unlock(&ix->save_mu);
        return;
    }
    pthread_mutex_lock(&ix->pend_mu);
    pthread_cond_broadcast(&ix->pend_cv);
    pthread_mutex_unlock(&ix->pend_mu);
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
    ix->last_save_ns = clock_mono_ns();
    ix->save_every_ns = index_save_every() * 1000000000ll;
    ix->row_bytes = sq8_row_bytes(jvdb_db_dim(db));
    if (sq8_init(&ix->quant, jvdb_db_dim(db)) || !(ix->vbuf = malloc((size_t)jvdb_db_dim(db) * sizeof(float)))) {
        sq8_free(&ix->quant);
        free(ix);
        pthread_mutex_unlock(&search_attach_mu);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    pthread_rwlock_init(&ix->lock, NULL);
    pthread_mutex_init(&ix->pend_mu, NULL);
    pthread_mutex_init(&ix->save_mu, NULL);
    clock_cond_init(&ix->pend_cv); /* timed waits below measure CLOCK_MONOTONIC */
    jvdb_db_get_index(db, &ix->opts);
    if (!(ix->pl = payload_new(db))) {
        pthread_mutex_unlock(&search_attach_mu);
        index_free(ix);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    /* HNSW: the thread loads the saved graph first; until then searches are exact and the hook queues
     * what changes meanwhile.  FLAT: no graph. */
    if (ix->opts.type == JVDB_INDEX_HNSW) ix->loading = 1;
    if (index_writable(db)) {
        /* A save cut short by a crash leaves its temporary file; the saved graph is intact. */
        char *tmp = fs_join(db_dir(db), HNSW_FILE_NAME ".tmp");
        if (tmp) unlink(tmp);
        free(tmp);
    }
    int rc = db_as_writer(db, index_attach_cb, ix);
    if (rc == JVDB_OK && pthread_create(&ix->thread, NULL, index_thread_main, ix) != 0)
        rc = err_set(JVDB_ENOMEM, "cannot start the index thread of '%s'", jvdb_db_name(db));
    if (rc) {
        index_free(ix);
        pthread_mutex_unlock(&search_attach_mu);
        return rc;
    }
    ix->thread_started = 1;
    db_set_ext_hold(db, index_hold);
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

struct payload_index *search_payload_attached(jvdb_db *db)
{
    struct search_index *ix = index_attached(db);
    return ix ? ix->pl : NULL;
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
    struct search_index *ix = NULL;
    if ((rc = index_get(db, &ix))) return rc;
    pthread_rwlock_wrlock(&ix->lock);
    int graph_changes =
        ix->opts.type != o->type || ix->opts.m != o->m || ix->opts.ef_construction != o->ef_construction;
    ix->opts = *o;
    if (graph_changes) {
        struct reset_arg ra = { ix, "index settings changed" };
        rc = db_as_writer(db, index_reset_graph_cb, &ra);
    } else if (ix->graph) {
        rc = hnsw_set_ef_search(ix->graph, o->ef_search);
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int jvdb_db_index_rebuild(jvdb_db *db)
{
    err_clear();
    struct search_index *ix = NULL;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    pthread_rwlock_wrlock(&ix->lock);
    if (ix->opts.type == JVDB_INDEX_HNSW) {
        struct reset_arg ra = { ix, "rebuild requested" };
        rc = db_as_writer(db, index_reset_graph_cb, &ra);
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int jvdb_db_index_save(jvdb_db *db)
{
    err_clear();
    struct search_index *ix = NULL;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    pthread_rwlock_rdlock(&ix->lock);
    rc = index_save_locked(ix);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

const char *jvdb_index_state_name(jvdb_index_state s)
{
    switch (s) {
    case JVDB_INDEX_READY: return "ready";
    case JVDB_INDEX_LOADING: return "loading";
    case JVDB_INDEX_CATCHING_UP: return "catching_up";
    case JVDB_INDEX_REBUILDING: return "rebuilding";
    }
    return "unknown";
}

static void index_status_of(struct search_index *ix, jvdb_index_status *out);

int jvdb_db_index_status(jvdb_db *db, jvdb_index_status *out)
{
    err_clear();
    struct search_index *ix = NULL;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    index_status_of(ix, out);
    return JVDB_OK;
}

int jvdb_db_index_status_if_attached(jvdb_db *db, jvdb_index_status *out)
{
    err_clear();
    struct search_index *ix = index_attached(db);
    if (!ix) return err_set(JVDB_ENOTFOUND, "the index of '%s' is not loaded in this process", jvdb_db_name(db));
    index_status_of(ix, out);
    return JVDB_OK;
}

int jvdb_db_index_saved(jvdb_db *db, jvdb_index_saved *out)
{
    err_clear();
    memset(out, 0, sizeof *out);
    char *path = fs_join(db_dir(db), HNSW_FILE_NAME);
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) {
        if (errno != ENOENT)
            snprintf(out->problem, sizeof out->problem, "cannot open the saved graph: %s", strerror(errno));
        return JVDB_OK;
    }
    out->present = 1;
    uint8_t head[80];
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 ? pread(fd, head, sizeof head, 0) : -1;
    close(fd);
    struct hnsw_file f;
    if (got != (ssize_t)sizeof head || hnsw_file_parse_header(head, (size_t)st.st_size, &f) != JVDB_OK) {
        snprintf(out->problem, sizeof out->problem, "%s",
                 got == (ssize_t)sizeof head ? jvdb_errmsg() : "file too short");
        return JVDB_OK;
    }
    out->file_bytes = (uint64_t)st.st_size;
    /* The delta beside it, if it extends this checkpoint: its last complete batch is what loads. */
    char *dpath = fs_join(db_dir(db), HNSW_DELTA_NAME), *delta = NULL;
    size_t dlen = 0, good = 0;
    if (dpath && fs_exists(dpath) && fs_read_file(dpath, &delta, &dlen) == JVDB_OK) {
        hnsw_delta_scan(&f, delta, dlen, &good);
        out->file_bytes += good;
    }
    err_clear();
    free(delta);
    free(dpath);
    out->nodes = f.nnodes;
    out->lsn = f.lsn;
    jvdb_index_options o;
    jvdb_db_get_index(db, &o);
    if (f.dim != jvdb_db_dim(db) || f.metric != jvdb_db_metric(db) || f.p.M != o.m ||
        f.p.ef_construction != o.ef_construction)
        snprintf(out->problem, sizeof out->problem, "built with other settings (M %u, ef_construction %u)", f.p.M,
                 f.p.ef_construction);
    rp_enter();
    uint32_t nsl;
    const struct kd_slots *sl = keydir_slots(db_keydir(db), &nsl);
    for (uint32_t s = 0; s < nsl; s++)
        if (__atomic_load_n(&sl->owner[s], __ATOMIC_ACQUIRE) && __atomic_load_n(&sl->lsn[s], __ATOMIC_ACQUIRE) > f.lsn)
            out->behind++;
    rp_exit();
    return JVDB_OK;
}

/* Fills the public index status: state, node counts, memory and pending vectors (every live vector while loading). */
static void index_status_of(struct search_index *ix, jvdb_index_status *out)
{
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ix->lock);
    out->type = ix->opts.type;
    if (ix->graph) {
        out->nodes = hnsw_node_count(ix->graph);
        out->deleted_nodes = out->nodes - hnsw_live_count(ix->graph);
        out->memory_bytes = hnsw_memory_bytes(ix->graph) + (uint64_t)ix->nav_nblocks * NAV_BLOCK * ix->row_bytes +
                            (uint64_t)ix->nav_cap * sizeof *ix->nav;
    }
    out->loaded_nodes = ix->loaded_nodes;
    out->saved_lsn = __atomic_load_n(&ix->saved_lsn, __ATOMIC_RELAXED);
    /* While the saved graph loads nothing is in a graph yet: every live vector counts as pending, so
     * "pending 0" keeps meaning "the graph answers for everything". */
    uint64_t live = __atomic_load_n(&db_keydir(ix->db)->live, __ATOMIC_RELAXED);
    pthread_mutex_lock(&ix->pend_mu);
    out->pending = ix->loading ? (live > ix->npending ? live : ix->npending) : ix->npending;
    if (ix->loading) out->state = JVDB_INDEX_LOADING;
    else if (ix->rebuilding && ix->npending) out->state = JVDB_INDEX_REBUILDING;
    else if (ix->npending) out->state = JVDB_INDEX_CATCHING_UP;
    else out->state = JVDB_INDEX_READY;
    snprintf(out->reason, sizeof out->reason, "%s", ix->why);
    pthread_mutex_unlock(&ix->pend_mu);
    pthread_rwlock_unlock(&ix->lock);
}

int jvdb_db_index_wait(jvdb_db *db, uint32_t timeout_ms)
{
    err_clear();
    struct search_index *ix = NULL;
    int rc = index_get(db, &ix);
    if (rc) return rc;
    int64_t deadline = clock_mono_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&ix->pend_mu);
    while ((ix->npending > 0 || ix->loading) && rc == JVDB_OK)
        if (clock_cond_wait_until(&ix->pend_cv, &ix->pend_mu, deadline) != 0 && (ix->npending > 0 || ix->loading))
            rc = err_set(JVDB_EBUSY, "the index of '%s' still has %u vectors to take in%s", jvdb_db_name(db),
                         ix->npending, ix->loading ? " (loading the saved graph)" : "");
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
    const uint8_t *pending_bit; /* skip pending slots (the graph's view of them is stale): a
                                    * private copy, one bit per slot */
    uint32_t bits_cap;
    const uint32_t *map;       /* pending scan: index in the packed array -> slot */
    const struct kd_slots *sl; /* the slot table and snapshot the search reads at */
    uint32_t nslots;
    uint64_t snap;
    const struct payload_plan *plan; /* the payload indexes' answer for the filter (NULL: none) */
};

/* The version of slot's vector the search's snapshot sees (NULL: none). */
static const struct kd_entry *slot_entry(const struct accept_ctx *c, uint32_t slot)
{
    const struct kd_entry *e = NULL;
    if (slot >= c->nslots || !keydir_slot_vector(c->sl, slot, c->snap, jvdb_db_dim(c->db), &e)) return NULL;
    return e;
}

/* Whether a slot may be a result: not waiting for the graph, live, and matching the filter (by the payload plan
 * when it can decide). */
static int accept_slot(const struct accept_ctx *c, uint32_t slot)
{
    if (c->pending_bit && slot < c->bits_cap && (c->pending_bit[slot / 8] >> (slot % 8) & 1)) return 0;
    const struct kd_entry *e = slot_entry(c, slot);
    if (!e) return 0;
    if (!c->filter) return 1;
    if (c->plan) {
        int t = payload_plan_test(c->plan, slot);
        if (t != 2) return t;
    }
    const struct rec_header *h = keydir_record(e);
    return filter_match(c->filter, h->meta_len ? rec_meta(h, jvdb_db_dim(c->db)) : NULL, h->meta_len);
}

/* The vector a slot held as of the search's snapshot, for slots written after it. */
static const float *resolve_slot(void *ctx, uint32_t slot)
{
    const struct accept_ctx *c = ctx;
    return slot < c->nslots ? keydir_slot_vector(c->sl, slot, c->snap, jvdb_db_dim(c->db), NULL) : NULL;
}

static int accept_graph(void *ctx, uint32_t slot) { return accept_slot(ctx, slot); }

/* accept_slot for the i-th candidate of a payload plan's list. */
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

/* How searches read the vectors they re-rank and return (jvdb_set_search_reads): -1 = not set yet
 * (JVDB_RERANK_READS decides at first use), else a jvdb_search_reads value. */
static int search_reads = -1;

int jvdb_set_search_reads(jvdb_search_reads mode)
{
    if (mode != JVDB_READS_MAPPED && mode != JVDB_READS_PREAD)
        return err_set(JVDB_EINVAL, "search reads must be JVDB_READS_MAPPED or JVDB_READS_PREAD, not %d", (int)mode);
    __atomic_store_n(&search_reads, (int)mode, __ATOMIC_RELAXED);
    return JVDB_OK;
}

/* Whether the re-rank and results read the segments through their mappings (the default: no
 * syscall per vector, but every page touched stays in RSS) rather than with pread; until
 * jvdb_set_search_reads is called JVDB_RERANK_READS (map or pread) decides, read once, a bad value
 * logged and meaning map. */
static int search_reads_mapped(void)
{
    int m = __atomic_load_n(&search_reads, __ATOMIC_RELAXED);
    if (m >= 0) return m == JVDB_READS_MAPPED;
    const char *env = getenv("JVDB_RERANK_READS");
    m = env && !strcmp(env, "pread") ? JVDB_READS_PREAD : JVDB_READS_MAPPED;
    if (env && *env && strcmp(env, "map") && strcmp(env, "pread"))
        log_warn("JVDB_RERANK_READS=%s is not map or pread; searches read vectors through the mapping", env);
    /* Threads racing here all compute the same; a setter that ran meanwhile wins. */
    int unset = -1;
    __atomic_compare_exchange_n(&search_reads, &unset, m, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return __atomic_load_n(&search_reads, __ATOMIC_RELAXED) == JVDB_READS_MAPPED;
}

/* Records (results) or vectors (re-rank) read per seg_copy_out call: bounds the per-query buffer. */
#define RERANK_CHUNK 64

/* Copies n records or vectors out of the segments by pread (seg_copy_out; items in any order), not
 * through the mapping: reads of random records through the long-lived segment mappings leave 16
 * pages mapped each (the kernel's fault-around), which a query stream turns into the whole file in
 * the process's RSS (bench/results/search-rerank-rss.md). */
static int search_copy_out(const jvdb_db *db, struct seg_copy *items, size_t n)
{
    if (search_reads_mapped()) {
        for (size_t i = 0; i < n; i++) memcpy(items[i].dst, items[i].src, items[i].len);
        return JVDB_OK;
    }
    const struct db_seglist *l = db_segments(db);
    if (seg_copy_out(l->segs, l->n, items, n)) return err_errno(errno, "cannot read records of '%s'", jvdb_db_name(db));
    return JVDB_OK;
}

/* Builds the answers for the slots found, each as the search's snapshot sees it; *count may end
 * below n when a slot has no version there (a graph answer that was never accepted).  The records
 * are read (search_copy_out) only when vectors or metadata are asked for. */
static int results_build(const jvdb_db *db, const struct accept_ctx *ac, const jvdb_search_params *p,
                         const uint32_t *slots, const float *scores, uint32_t n, jvdb_result **out, uint32_t *count)
{
    jvdb_result *r = calloc(n ? n : 1, sizeof *r);
    const struct kd_entry **ents = malloc((n ? n : 1) * sizeof *ents);
    struct seg_copy *items = malloc((n ? n : 1) * sizeof *items);
    uint8_t *recs = NULL;
    int rc = JVDB_OK;
    if (!r || !ents || !items) goto oom;
    uint32_t m = 0;
    size_t bytes = 0;
    for (uint32_t j = 0; j < n; j++) {
        const struct kd_entry *e = slot_entry(ac, slots[j]);
        if (!e) continue;
        ents[m] = e;
        r[m].score = scores[j];
        bytes += rec_align(e->rec_len);
        m++;
    }
    int want = p->include_vectors || p->include_metadata;
    if (want && !(recs = aligned_alloc(REC_ALIGN, bytes ? bytes : REC_ALIGN))) goto oom;
    size_t at = 0;
    for (uint32_t i = 0; want && i < m; i++) {
        items[i] = (struct seg_copy){ (const uint8_t *)keydir_record(ents[i]), recs + at, ents[i]->rec_len };
        at += rec_align(ents[i]->rec_len);
    }
    if (want && (rc = search_copy_out(db, items, m))) goto fail;
    at = 0;
    for (uint32_t i = 0; i < m; i++) {
        const struct kd_entry *e = ents[i];
        const struct rec_header *h = want ? (const struct rec_header *)(recs + at) : NULL;
        if (want) at += rec_align(e->rec_len);
        __atomic_fetch_add((uint32_t *)&e->hits, 1, __ATOMIC_RELAXED);
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
    }
    free(ents);
    free(items);
    free(recs);
    *out = r;
    *count = m;
    return JVDB_OK;
oom:
    rc = err_set(JVDB_ENOMEM, "out of memory");
fail:
    jvdb_results_free(r, n);
    free(ents);
    free(items);
    free(recs);
    return rc;
}

/* A re-rank candidate: its slot and a lower bound of its exact distance. */
struct rr_cand {
    float lb;
    uint32_t slot;
};

/* qsort order of re-rank candidates: by lower bound, then slot. */
static int rr_cand_cmp(const void *a, const void *b)
{
    const struct rr_cand *x = a, *y = b;
    return x->lb < y->lb ? -1 : x->lb > y->lb ? 1 : (x->slot > y->slot) - (x->slot < y->slot);
}

/* Lower bounds of the exact l2 distances of the candidates from their code rows, so that the
 * re-rank reads only the vectors that can still make the top k.  A row codes x as x^ with one step
 * s per row and codes rounded to the nearest (sq8.h: no clipping, step = max|x - centre| / 127), so
 * |x - x^| <= s sqrt(dim) / 2; the code distance is |q^ - x^| exactly (centres cancel) and
 * |q - q^| is measured, hence |q - x| >= |q^ - x^| - |q - q^| - s sqrt(dim) / 2.  A row with step
 * 0 (a vector at the centre, or one too large to code) gets no bound.  Bounds are shaved by 1e-4
 * relative for float rounding.  Only when the row is the graph's copy of the vector the snapshot
 * sees can the bound be wrong (a slot re-coded after the search's snapshot and drained from the
 * pending set before its copy): the candidate is then missed, never invented. */
static void rerank_bounds(const struct search_index *ix, const int8_t *qrow, const float *q, float *tmp,
                          struct rr_cand *c, uint32_t n)
{
    uint32_t dim = ix->quant.dim;
    struct dist_space cs;
    if (dist_space_init_sq8(&cs, JVDB_METRIC_L2, dim)) return;
    sq8_decode(&ix->quant, qrow, tmp);
    double eq = 0;
    for (uint32_t d = 0; d < dim; d++) eq += ((double)q[d] - tmp[d]) * ((double)q[d] - tmp[d]);
    eq = sqrt(eq);
    double half = 0.5 * (1.0 + 1e-3) * sqrt((double)dim);
    for (uint32_t i = 0; i < n; i++) {
        const int8_t *row = c[i].slot < ix->nav_cap ? (const int8_t *)ix->nav[c[i].slot] : NULL;
        float step = row ? sq8_row_step(row, dim) : 0.0f;
        if (!row || !(step > 0.0f)) continue;
        double r = sqrt((double)cs.dist((const float *)qrow, (const float *)row, dim)) - eq - half * step;
        c[i].lb = r > 0 ? (float)(r * r * (1.0 - 1e-4)) : 0.0f;
    }
}

/* Re-ranks the graph's candidates (slots, approximate order) by their full vectors as the search's
 * snapshot sees them, copied out of the segments (search_copy_out) inside the lock-free read
 * section: the best k (within the threshold, if any) go to out_slots / out_scores, best first.
 * Each copy is a pread, so for l2 the candidates go by the lower bound their code rows give
 * (rerank_bounds), the k most promising read together, then one at a time until the next bound
 * cannot beat the k-th distance found (at ef 64 on 1M, 48 of 64 candidates are read).  With
 * JVDB_RERANK_READS=map every candidate is scored straight from the mapping, as before pread. */
static int rerank(const jvdb_db *db, const struct search_index *ix, const int8_t *qrow, struct accept_ctx *ac,
                  const float *q, const jvdb_search_params *p, const uint32_t *cand, uint32_t ncand,
                  uint32_t *out_slots, float *out_scores, uint32_t *out_n)
{
    *out_n = 0;
    struct dist_space sp;
    uint32_t dim = jvdb_db_dim(db);
    int rc = dist_space_init_stored(&sp, jvdb_db_metric(db), dim);
    if (rc) return rc;
    struct topk best;
    if (topk_init(&best, p->k)) return err_set(JVDB_ENOMEM, "out of memory");
    float *buf = aligned_alloc(64, (size_t)RERANK_CHUNK * dim * sizeof(float));
    struct rr_cand *c = malloc((ncand ? ncand : 1) * sizeof *c);
    struct seg_copy items[RERANK_CHUNK];
    uint32_t which[RERANK_CHUNK];
    if (!buf || !c) rc = err_set(JVDB_ENOMEM, "out of memory");
    float limit = p->has_threshold ? dist_from_score(jvdb_db_metric(db), p->threshold) : INFINITY;
    if (rc == JVDB_OK && search_reads_mapped()) {
        /* Reads are free once mapped: every candidate, straight from the mapping, none copied. */
        for (uint32_t i = 0; i < ncand; i++) {
            const float *v = resolve_slot(ac, cand[i]);
            if (i + 1 < ncand) dist_prefetch(resolve_slot(ac, cand[i + 1]), dim, 8);
            if (!v) continue;
            float d = sp.dist(q, v, dim);
            if (d <= limit && d < topk_bound(&best)) topk_push(&best, d, cand[i]);
        }
        ncand = 0;
    }
    for (uint32_t i = 0; rc == JVDB_OK && i < ncand; i++) c[i] = (struct rr_cand){ 0.0f, cand[i] };
    if (rc == JVDB_OK && jvdb_db_metric(db) == JVDB_METRIC_L2 && ix->quant.trained) {
        rerank_bounds(ix, qrow, q, buf, c, ncand);
        qsort(c, ncand, sizeof *c, rr_cand_cmp);
    }
    /* The first round reads k candidates (or a chunk when there are no bounds), later ones one. */
    uint32_t round = jvdb_db_metric(db) == JVDB_METRIC_L2 ? p->k : RERANK_CHUNK;
    for (uint32_t i = 0; rc == JVDB_OK && i < ncand;) {
        uint32_t m = 0;
        for (; i < ncand && m < round && m < RERANK_CHUNK; i++) {
            if (c[i].lb > limit || c[i].lb >= topk_bound(&best)) break;
            const float *v = resolve_slot(ac, c[i].slot);
            if (!v) continue;
            items[m] = (struct seg_copy){ (const uint8_t *)v, buf + (size_t)m * dim, dim * (uint32_t)sizeof(float) };
            which[m++] = c[i].slot;
        }
        if (m == 0) break; /* every later bound is as high */
        if ((rc = search_copy_out(db, items, m))) break;
        for (uint32_t t = 0; t < m; t++) {
            float d = sp.dist(q, buf + (size_t)t * dim, dim);
            if (d <= limit && d < topk_bound(&best)) topk_push(&best, d, which[t]);
        }
        if (jvdb_db_metric(db) == JVDB_METRIC_L2) round = 1;
    }
    uint32_t n = rc ? 0 : topk_sort(&best);
    for (uint32_t i = 0; i < n; i++) {
        out_slots[i] = best.items[i].slot;
        out_scores[i] = dist_score(jvdb_db_metric(db), best.items[i].dist);
    }
    *out_n = n;
    free(buf);
    free(c);
    topk_free(&best);
    return rc;
}

/* Exact scan of the pending slots only (`pend`, copied when the search began, packed into a
 * small pointer array of the vectors the snapshot sees). */
static int search_pending(const jvdb_db *db, const uint32_t *pend, uint32_t npend, const float *q,
                          const struct flat_params *base, struct accept_ctx *ac, uint32_t *slots, float *scores,
                          uint32_t *n)
{
    *n = 0;
    if (npend == 0) return JVDB_OK;
    const float **vecs = malloc(npend * sizeof *vecs);
    if (!vecs) return err_set(JVDB_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < npend; i++) vecs[i] = resolve_slot(ac, pend[i]);
    struct accept_ctx pc = *ac;
    pc.pending_bit = NULL;
    pc.map = pend;
    struct flat_params fp = *base;
    fp.accept = pc.filter ? accept_mapped : NULL;
    fp.accept_ctx = &pc;
    int rc = flat_search(vecs, npend, jvdb_db_dim(db), q, &fp, slots, scores, n);
    for (uint32_t i = 0; rc == JVDB_OK && i < *n; i++) slots[i] = pend[slots[i]];
    free(vecs);
    return rc;
}

/* Whether a filtered search should scan its payload candidates exactly rather than walk the graph:
 * a scan costs one distance per candidate, the graph about ef * M per query, more as the filter
 * rejects more of the nodes it meets (bench/results/payload-index.md measured where they cross). */
uint32_t search_payload_scan_min = PAYLOAD_SCAN_MIN;
double search_payload_scan_share = PAYLOAD_SCAN_SHARE;

/* Whether the payload plan's candidates are few enough (in count or share of the live vectors) that scanning them
 * exactly beats the graph. */
static int search_plan_scan(const struct payload_plan *plan, const jvdb_search_params *p)
{
    uint64_t limit = __atomic_load_n(&search_payload_scan_min, __ATOMIC_RELAXED);
    if (limit && (uint64_t)p->k * 8 > limit) limit = (uint64_t)p->k * 8;
    return plan->ncand <= limit || (double)plan->ncand < search_payload_scan_share * plan->nlive;
}

/* The ef of a graph search whose filter the payload plan counted: wide enough that the ef nearest
 * nodes hold about 1.5 k accepted ones, so hnsw_search need not find out by a first pass that fails. */
static uint32_t search_plan_ef(const struct payload_plan *plan, const jvdb_search_params *p, uint32_t ef_default)
{
    uint32_t ef = p->ef ? p->ef : ef_default;
    double share = plan->nlive ? (double)plan->ncand / plan->nlive : 1.0;
    double want = share > 0 ? 1.5 * p->k / share : HNSW_MAX_EF;
    if (want > HNSW_MAX_EF) want = HNSW_MAX_EF;
    return want > ef ? (uint32_t)want : ef;
}

/* Exact scan of the payload plan's candidates, each resolved at the search's snapshot. */
static int search_candidates(const jvdb_db *db, const struct payload_plan *plan, const float *q,
                             const struct flat_params *base, struct accept_ctx *ac, uint32_t *slots, float *scores,
                             uint32_t *n)
{
    *n = 0;
    uint32_t *cand = malloc((plan->ncand ? plan->ncand : 1) * sizeof *cand), nc = 0;
    if (!cand) return err_set(JVDB_ENOMEM, "out of memory");
    for (uint32_t w = 0; w < (plan->nslots + 63) / 64; w++)
        for (uint64_t bits = plan->cand[w]; bits; bits &= bits - 1) {
            uint32_t s = w * 64 + (uint32_t)__builtin_ctzll(bits);
            if (s < plan->nslots && nc < plan->ncand) cand[nc++] = s;
        }
    int rc = search_pending(db, cand, nc, q, base, ac, slots, scores, n);
    free(cand);
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
        return err_set(JVDB_EINVAL, "query has %u values but database '%s' has dimension %u", dim, jvdb_db_name(db),
                       jvdb_db_dim(db));
    if (p.k == 0 || p.k > JVDB_MAX_K)
        return err_set(JVDB_EINVAL, "k (topK) %u is out of range (1..%d)", p.k, JVDB_MAX_K);
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
    struct flat_params fp;
    flat_params_init(&fp);
    fp.metric = jvdb_db_metric(db);
    fp.k = p.k;
    fp.threads = p.threads;
    fp.use_threshold = p.has_threshold;
    fp.threshold = p.threshold;
    struct accept_ctx ac = { db, p.filter, NULL, 0, NULL, sl, nslots, snap, NULL };
    uint32_t n = 0;
    struct payload_plan plan;
    memset(&plan, 0, sizeof plan);
    if (p.filter && ix && ix->pl && (rc = payload_plan_make(ix->pl, p.filter, snap, nslots, &plan))) goto unlock;
    if (plan.used) ac.plan = &plan;
    int exact = p.exact || !ix || !ix->graph || ix->opts.type == JVDB_INDEX_FLAT;
    /* A very selective filter would make the graph search widen and give up: scan instead.  Payload
     * indexes count the candidates (search_plan_scan); without them a sample estimates the share. */
    if (!exact && plan.used) exact = search_plan_scan(&plan, &p);
    else if (!exact && p.filter && filter_selectivity(&ac, p.filter) < 0.02) exact = 1;
    if (!exact && (rc = pending_copy(ix, nslots, &pend, &npend, &pbits))) goto unlock;
    if (!exact) {
        ac.pending_bit = pbits;
        ac.bits_cap = pbits ? nslots : 0;
        struct hnsw_query hq;
        hnsw_query_init(&hq);
        hq.k = p.k;
        hq.ef = p.ef;
        if (plan.used) hq.ef = search_plan_ef(&plan, &p, ix->opts.ef_search);
        /* Always: a node's slot may hold nothing at this snapshot (deleted, or not yet visible). */
        hq.accept = accept_graph;
        hq.accept_ctx = &ac;
        /* The graph ranks by codes: it hands over the ef window (at least 2k) and the full vectors
         * decide, the threshold included. */
        uint32_t ef = p.ef ? p.ef : ix->opts.ef_search;
        hq.candidates = ef > 2 * p.k ? ef : 2 * p.k;
        struct hnsw_search_info info = { .complete = 1 };
        uint32_t gn = 0, pn = 0, cn = 0;
        uint32_t *cand = malloc((size_t)hq.candidates * sizeof *cand);
        void *qrow = aligned_alloc(16, ix->row_bytes);
        if (!cand || !qrow) rc = err_set(JVDB_ENOMEM, "out of memory");
        else if (ix->quant.trained) {
            sq8_encode(&ix->quant, q, qrow);
            rc = hnsw_search(ix->graph, ix->nav, ix->nav_cap, qrow, &hq, cand, NULL, &cn, &info);
        }
        if (rc == JVDB_OK && info.complete) rc = rerank(db, ix, qrow, &ac, q, &p, cand, cn, slots, scores, &gn);
        free(cand);
        free(qrow);
        if (rc == JVDB_OK && !info.complete) {
            exact = 1; /* filters or deletions hid too much of the graph */
        } else if (rc == JVDB_OK) {
            rc = search_pending(db, pend, npend, q, &fp, &ac, slots + p.k, scores + p.k, &pn);
            if (rc == JVDB_OK)
                n = merge_results(jvdb_db_metric(db), p.k, slots, scores, gn, slots + p.k, scores + p.k, pn,
                                  slots + 2 * p.k, scores + 2 * p.k);
            memmove(slots, slots + 2 * p.k, n * sizeof *slots);
            memmove(scores, scores + 2 * p.k, n * sizeof *scores);
        }
    }
    if (rc == JVDB_OK && exact && plan.used) {
        /* Only the candidates the payload indexes leave, packed (as the pending scan). */
        ac.pending_bit = NULL;
        rc = search_candidates(db, &plan, q, &fp, &ac, slots, scores, &n);
    } else if (rc == JVDB_OK && exact) {
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
    payload_plan_free(&plan);
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

/*
 * hnsw.c — lifecycle of an HNSW index: parameters, creation and freeing, deletion marks, counters,
 * and the pool of per-search scratch memory.
 *
 * Graph construction lives in hnsw_build.c and queries in hnsw_search.c; the layout they share is
 * described in hnsw_internal.h.  The scratch pool is process-wide rather than per index or per thread:
 * its size follows the number of searches actually running at once, not the number of threads a
 * server happens to have, and a scratch grows to the largest index it has served.
 */
#include "search/hnsw_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

void hnsw_params_init(struct hnsw_params *p)
{
    p->M = HNSW_DEFAULT_M;
    p->ef_construction = HNSW_DEFAULT_EF_CONSTRUCTION;
    p->ef_search = HNSW_DEFAULT_EF_SEARCH;
    p->seed = 0x6a766462686e7377ull;
    p->sq8 = 0;
}

void hnsw_query_init(struct hnsw_query *q)
{
    memset(q, 0, sizeof *q);
    q->k = 10;
}

/* Refuses parameters outside the limits of hnsw.h (M, ef_construction, ef_search), saying which. */
static int hnsw_check_params(const struct hnsw_params *p)
{
    if (p->M < 2 || p->M > HNSW_MAX_M)
        return err_set(JVDB_EINVAL, "HNSW M must be between 2 and %d, not %u", HNSW_MAX_M, p->M);
    if (p->ef_construction < 1 || p->ef_construction > HNSW_MAX_EF_CONSTRUCTION)
        return err_set(JVDB_EINVAL, "HNSW ef_construction must be between 1 and %d, not %u", HNSW_MAX_EF_CONSTRUCTION,
                       p->ef_construction);
    if (p->ef_search < 1 || p->ef_search > HNSW_MAX_EF)
        return err_set(JVDB_EINVAL, "HNSW ef_search must be between 1 and %d, not %u", HNSW_MAX_EF, p->ef_search);
    return JVDB_OK;
}

int hnsw_create(uint32_t dim, jvdb_metric metric, const struct hnsw_params *p, struct hnsw **out)
{
    *out = NULL;
    struct dist_space sp;
    int rc = dist_space_init(&sp, metric, dim);
    if (rc) return rc;
    rc = hnsw_check_params(p);
    if (rc) return rc;
    struct hnsw *h = calloc(1, sizeof *h);
    if (!h) return err_set(JVDB_ENOMEM, "out of memory for an HNSW index");
    h->dim = dim;
    h->metric = metric;
    h->p = *p;
    h->M0 = 2 * p->M;
    h->l0_stride = h->M0 + 1;
    h->up_stride = p->M + 1;
    h->level_mult = 1.0 / log((double)p->M);
    h->rng = p->seed;
    h->entry = HNSW_NONE;
    h->max_level = -1;
    pthread_mutex_init(&h->emu, NULL);
    *out = h;
    return JVDB_OK;
}

void hnsw_free(struct hnsw *h)
{
    if (!h) return;
    if (h->upper) {
        for (uint32_t s = 0; s < h->cap; s++) free(h->upper[s]);
    }
    free(h->upper);
    free(h->l0);
    free(h->level);
    free(h->deleted);
    free(h->dirty);
    free(h->lk);
    pthread_mutex_destroy(&h->emu);
    free(h);
}

int hnsw_mark_deleted(struct hnsw *h, uint32_t slot)
{
    if (slot >= h->cap || h->level[slot] == HNSW_ABSENT)
        return err_set(JVDB_ENOTFOUND, "slot %u is not in the HNSW index", slot);
    if (!h->deleted[slot]) {
        h->deleted[slot] = 1;
        h->ndeleted++;
        h->dirty[slot] |= HNSW_DIRTY_LINKS;
    }
    return JVDB_OK;
}

int hnsw_set_ef_search(struct hnsw *h, uint32_t ef_search)
{
    if (ef_search < 1 || ef_search > HNSW_MAX_EF)
        return err_set(JVDB_EINVAL, "HNSW ef_search must be between 1 and %d, not %u", HNSW_MAX_EF, ef_search);
    h->p.ef_search = ef_search;
    return JVDB_OK;
}

void hnsw_get_params(const struct hnsw *h, struct hnsw_params *out) { *out = h->p; }

uint32_t hnsw_node_count(const struct hnsw *h) { return h->nodes; }

uint32_t hnsw_live_count(const struct hnsw *h) { return h->nodes - h->ndeleted; }

double hnsw_deleted_share(const struct hnsw *h) { return h->nodes ? (double)h->ndeleted / (double)h->nodes : 0.0; }

int hnsw_contains(const struct hnsw *h, uint32_t slot) { return slot < h->cap && h->level[slot] != HNSW_ABSENT; }

int hnsw_is_deleted(const struct hnsw *h, uint32_t slot) { return hnsw_contains(h, slot) && h->deleted[slot]; }

size_t hnsw_memory_bytes(const struct hnsw *h)
{
    size_t bytes = sizeof *h + (size_t)h->cap * (h->l0_stride * sizeof(uint32_t) + sizeof(uint32_t *) + 2);
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] != HNSW_ABSENT && h->level[s] > 0)
            bytes += (size_t)h->level[s] * h->up_stride * sizeof(uint32_t);
    }
    return bytes;
}

uint32_t hnsw_start_node(const struct hnsw *h, const float *const *slots, uint32_t nslots)
{
    /* Atomic: a parallel batch moves the entry point (under emu) while other inserts start. */
    uint32_t entry = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
    if (entry == HNSW_NONE || hnsw_vec(slots, nslots, entry)) return entry;
    /* The entry point's vector is gone (the store freed a deleted record before a rebuild): any node
     * on the highest level that still has a vector serves, at the cost of one scan. */
    uint32_t best = HNSW_NONE;
    int best_level = -1;
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] != HNSW_ABSENT && (int)h->level[s] > best_level && hnsw_vec(slots, nslots, s)) {
            best = s;
            best_level = h->level[s];
        }
    }
    return best;
}

/* ---- scratch pool ---- */

static pthread_mutex_t hnsw_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hnsw_scratch *hnsw_pool;

/* Frees a search scratch: visit tags, candidate queue, navigation and result lists, query copy. */
static void hnsw_scratch_destroy(struct hnsw_scratch *sc)
{
    free(sc->tags);
    topk_queue_free(&sc->cand);
    topk_free(&sc->nav);
    topk_free(&sc->res);
    free(sc->query);
    free(sc->gvec);
    free(sc->gid);
    free(sc->gdist);
    free(sc);
}

/* Grows a scratch to the graph's capacity (visit tags zeroed for the new nodes). */
static int hnsw_scratch_fit(struct hnsw_scratch *sc, const struct hnsw *h)
{
    if (sc->ntags < h->cap) {
        uint16_t *t = realloc(sc->tags, (size_t)h->cap * sizeof *t);
        if (!t) return JVDB_ENOMEM;
        memset(t + sc->ntags, 0, (size_t)(h->cap - sc->ntags) * sizeof *t);
        sc->tags = t;
        sc->ntags = h->cap;
    }
    /* Room for a float query or a code row (sq8_row_bytes(dim) <= 4 * max(dim, 4) bytes). */
    uint32_t qneed = h->dim < 4 ? 4 : h->dim;
    if (sc->query_cap < qneed) {
        float *q = realloc(sc->query, (size_t)qneed * sizeof *q);
        if (!q) return JVDB_ENOMEM;
        sc->query = q;
        sc->query_cap = qneed;
    }
    if (sc->gcap < h->M0) {
        const float **v = realloc(sc->gvec, (size_t)h->M0 * sizeof *v);
        if (v) sc->gvec = v;
        uint32_t *id = realloc(sc->gid, (size_t)h->M0 * sizeof *id);
        if (id) sc->gid = id;
        float *d = realloc(sc->gdist, (size_t)h->M0 * sizeof *d);
        if (d) sc->gdist = d;
        if (!v || !id || !d) return JVDB_ENOMEM;
        sc->gcap = h->M0;
    }
    return JVDB_OK;
}

struct hnsw_scratch *hnsw_scratch_take(const struct hnsw *h)
{
    pthread_mutex_lock(&hnsw_pool_lock);
    struct hnsw_scratch *sc = hnsw_pool;
    if (sc) hnsw_pool = sc->next;
    pthread_mutex_unlock(&hnsw_pool_lock);

    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc || topk_queue_init(&sc->cand, 256) || topk_init(&sc->nav, 64) || topk_init(&sc->res, 16)) {
            if (sc) hnsw_scratch_destroy(sc);
            err_set(JVDB_ENOMEM, "out of memory for HNSW search scratch");
            return NULL;
        }
        sc->epoch = 1;
    }
    if (hnsw_scratch_fit(sc, h)) {
        hnsw_scratch_give(sc);
        err_set(JVDB_ENOMEM, "out of memory for HNSW search scratch (%u slots)", h->cap);
        return NULL;
    }
    sc->ndist = 0;
    sc->next = NULL;
    return sc;
}

void hnsw_scratch_give(struct hnsw_scratch *sc)
{
    if (!sc) return;
    pthread_mutex_lock(&hnsw_pool_lock);
    sc->next = hnsw_pool;
    hnsw_pool = sc;
    pthread_mutex_unlock(&hnsw_pool_lock);
}

void hnsw_scratch_new_epoch(struct hnsw_scratch *sc)
{
    if (++sc->epoch == 0) {
        /* 65535 searches since the last clear: wipe the marks rather than let an old one alias. */
        memset(sc->tags, 0, (size_t)sc->ntags * sizeof *sc->tags);
        sc->epoch = 1;
    }
}

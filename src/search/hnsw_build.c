/*
 * hnsw_build.c — changing the HNSW graph: inserting (or re-linking) a node, the heuristic neighbour
 * selection, and the rebuild from live nodes.
 *
 * Insertion follows the HNSW paper: draw a level, walk greedily down to it, then on each level from
 * there to 0 run a layer search with ef_construction, keep M neighbours chosen by the heuristic
 * (a candidate is kept only if it is closer to the new node than to every neighbour kept so far, which
 * spreads links over directions instead of bunching them in one cluster), and link back from each
 * neighbour, re-running the heuristic on a neighbour whose list is full.
 *
 * Re-linking a slot that is already a node (reused after deletion, or given a new vector) searches
 * first and overwrites its lists afterwards, so a node that is the entry point can still be navigated
 * through while its new neighbours are found; it keeps its level.  Incoming links chosen for its old
 * vector stay; they only add a few long-range edges and are dropped as neighbours' lists fill up.
 */
#include "search/hnsw_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/grow.h"

/* The next number of the graph's level generator (splitmix64). */
static uint64_t hnsw_next_random(struct hnsw *h)
{
    /* splitmix64: tiny state, good enough to draw levels, and reproducible from the seed. */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Draws a new node's top level: exponentially distributed with the graph's multiplier, capped. */
static int hnsw_random_level(struct hnsw *h)
{
    double u = (double)((hnsw_next_random(h) >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    double l = -log(u) * h->level_mult;
    return l >= HNSW_MAX_LEVEL - 1 ? HNSW_MAX_LEVEL - 1 : (int)l;
}

int hnsw_reserve(struct hnsw *h, uint32_t need)
{
    if (need <= h->cap) return JVDB_OK;
    if (need > UINT32_MAX - 1) return err_set(JVDB_EINVAL, "slot %u is beyond what the HNSW index can hold", need - 1);

    /* Five arrays, one capacity: each grows with its own copy of h->cap (all reach the same size).
     * Only once every one has may h->cap move; a failure leaves larger arrays behind, which is
     * harmless.  Slots stay below UINT32_MAX - 1 and the capacity at most UINT32_MAX (grow_array32), so
     * HNSW_NONE is never a slot. */
    size_t first = need > 1024 ? need : 1024; /* a loaded graph's arrays are sized to it exactly */
    uint32_t cap = h->cap;
    uint32_t *l0 = grow_array32(h->l0, &cap, need, (size_t)h->l0_stride * sizeof *l0, first);
    if (!l0) goto nomem;
    h->l0 = l0;
    uint32_t c = h->cap;
    uint32_t **upper = grow_array32(h->upper, &c, need, sizeof *upper, first);
    if (!upper) goto nomem;
    h->upper = upper;
    uint8_t **bytes[4] = { &h->level, &h->deleted, &h->lk, &h->dirty };
    for (int i = 0; i < 4; i++) {
        c = h->cap;
        uint8_t *p = grow_array32(*bytes[i], &c, need, 1, first);
        if (!p) goto nomem;
        *bytes[i] = p;
    }

    size_t add = (size_t)(cap - h->cap);
    memset(h->l0 + (size_t)h->cap * h->l0_stride, 0, add * h->l0_stride * sizeof *l0);
    memset(h->upper + h->cap, 0, add * sizeof *upper);
    memset(h->level + h->cap, HNSW_ABSENT, add);
    memset(h->deleted + h->cap, 0, add);
    memset(h->lk + h->cap, 0, add);
    memset(h->dirty + h->cap, 0, add);
    h->cap = (uint32_t)cap;
    return JVDB_OK;
nomem:
    return err_set(JVDB_ENOMEM, "out of memory growing the HNSW index to %u slots", need);
}

/* Heuristic selection: `cand` is sorted closest first (distance to the node being linked); the kept
 * ones are moved to the front.  Returns how many were kept (at most max). */
uint32_t hnsw_select(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                     struct topk_item *cand, uint32_t n, uint32_t max)
{
    if (n <= max) return n;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n && kept < max; i++) {
        const float *v = hnsw_vec(slots, nslots, cand[i].slot);
        int good = 1;
        for (uint32_t j = 0; j < kept && good; j++) {
            const float *w = hnsw_vec(slots, nslots, cand[j].slot);
            good = sp->dist(v, w, h->dim) >= cand[i].dist;
        }
        if (good) cand[kept++] = cand[i];
    }
    return kept;
}

static int hnsw_link_back_locked(struct hnsw *h, const struct dist_space *sp, const float *const *slots,
                                 uint32_t nslots, struct hnsw_scratch *sc, uint32_t from, uint32_t to, float d,
                                 int level);

/* Offers `to` (at distance d) to `from`'s list on `level`, re-choosing the list when it is full. */
static int hnsw_link_back(struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                          struct hnsw_scratch *sc, uint32_t from, uint32_t to, float d, int level)
{
    hnsw_lock(h, from);
    int rc = hnsw_link_back_locked(h, sp, slots, nslots, sc, from, to, d, level);
    hnsw_unlock(h, from);
    return rc;
}

/* hnsw_link_back with `from`'s list lock held (in a parallel batch). */
static int hnsw_link_back_locked(struct hnsw *h, const struct dist_space *sp, const float *const *slots,
                                 uint32_t nslots, struct hnsw_scratch *sc, uint32_t from, uint32_t to, float d,
                                 int level)
{
    uint32_t *links = hnsw_links(h, from, level);
    uint32_t cnt = links[0], max = level ? h->p.M : h->M0;
    for (uint32_t i = 1; i <= cnt; i++) {
        if (links[i] == to) return JVDB_OK;
    }
    __atomic_fetch_or(&h->dirty[from], HNSW_DIRTY_LINKS, __ATOMIC_RELAXED); /* a failing insert may mark it too */
    if (cnt < max) {
        links[cnt + 1] = to;
        links[0] = cnt + 1;
        return JVDB_OK;
    }
    const float *base = hnsw_vec(slots, nslots, from);
    if (!base) return JVDB_OK; /* cannot weigh its links without its vector; it keeps the ones it has */

    /* Full: choose among the old links and the new one as if `from` were being inserted.  Links to
     * nodes whose vector is gone score +inf and fall out first. */
    for (uint32_t i = 0; i < cnt; i++) sc->gvec[i] = hnsw_vec(slots, nslots, links[i + 1]);
    sp->batch(base, sc->gvec, cnt, h->dim, sc->gdist);
    if (topk_reset(&sc->res, cnt + 1)) return JVDB_ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        if (sc->gvec[i]) topk_push(&sc->res, sc->gdist[i], links[i + 1]);
    }
    topk_push(&sc->res, d, to);
    uint32_t n = topk_sort(&sc->res);
    uint32_t kept = hnsw_select(h, sp, slots, nslots, sc->res.items, n, max);
    for (uint32_t i = 0; i < kept; i++) links[i + 1] = sc->res.items[i].slot;
    links[0] = kept;
    return JVDB_OK;
}

/* Links a node at one level: searches that level from the entry point, picks its neighbours,
 * adds the reverse links; the nearest found becomes the entry point of the level below. */
static int hnsw_link_level(struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                           struct hnsw_scratch *sc, uint32_t slot, int level, uint32_t *ep, float *ep_dist)
{
    const float *v = hnsw_vec(slots, nslots, slot);
    struct hnsw_layer_opts o = { .level = level, .ef = h->p.ef_construction, .exclude = slot };
    int rc = hnsw_search_layer(h, sp, slots, nslots, sc, v, *ep, *ep_dist, &o);
    if (rc) return rc;
    uint32_t n = topk_sort(&sc->nav);
    if (n == 0) return JVDB_OK;
    *ep = sc->nav.items[0].slot;
    *ep_dist = sc->nav.items[0].dist;

    uint32_t kept = hnsw_select(h, sp, slots, nslots, sc->nav.items, n, h->p.M);
    uint32_t *links = hnsw_links(h, slot, level);
    hnsw_lock(h, slot);
    for (uint32_t i = 0; i < kept; i++) links[i + 1] = sc->nav.items[i].slot;
    links[0] = kept;
    hnsw_unlock(h, slot);
    /* sc->nav stays intact below: hnsw_link_back works in sc->res and the gather buffers. */
    for (uint32_t i = 0; i < kept; i++) {
        rc = hnsw_link_back(h, sp, slots, nslots, sc, sc->nav.items[i].slot, slot, sc->nav.items[i].dist, level);
        if (rc) return rc;
    }
    return JVDB_OK;
}

/* Makes `slot` a node (a fresh one draws its level and gets its lists) and clears its deletion mark,
 * before it is linked; *level receives its level.  Single-threaded.  JVDB_ENOMEM. */
static int hnsw_node_prepare(struct hnsw *h, uint32_t slot, int *level)
{
    int fresh = h->level[slot] == HNSW_ABSENT;
    int lv = fresh ? hnsw_random_level(h) : h->level[slot];
    if (fresh) {
        if (lv > 0) {
            h->upper[slot] = calloc((size_t)lv * h->up_stride, sizeof(uint32_t));
            if (!h->upper[slot]) return err_set(JVDB_ENOMEM, "out of memory for HNSW links");
        }
        hnsw_links(h, slot, 0)[0] = 0;
        /* A node from now on: nothing links to it yet, so no search reaches it before it is linked. */
        h->level[slot] = (uint8_t)lv;
        h->nodes++;
    }
    if (h->deleted[slot]) {
        h->deleted[slot] = 0;
        h->ndeleted--;
    }
    h->dirty[slot] |= HNSW_DIRTY_NODE;
    *level = lv;
    return JVDB_OK;
}

/* Marks a node whose linking failed as deleted: links already made to it stay valid, it is never
 * returned, and a vacuum or rebuild drops it. */
static void hnsw_node_failed(struct hnsw *h, uint32_t slot)
{
    if (h->par) pthread_mutex_lock(&h->emu);
    if (!h->deleted[slot]) {
        h->deleted[slot] = 1;
        h->ndeleted++;
    }
    __atomic_fetch_or(&h->dirty[slot], HNSW_DIRTY_LINKS, __ATOMIC_RELAXED);
    if (h->par) pthread_mutex_unlock(&h->emu);
}

/* Links a prepared node into the graph on its levels; may run in several threads at once during a
 * parallel batch.  JVDB_ENOMEM. */
static int hnsw_node_link(struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                          uint32_t slot, int level)
{
    if (h->par) pthread_mutex_lock(&h->emu);
    int first = h->entry == HNSW_NONE || (h->nodes == 1 && h->entry == slot);
    int max_level = h->max_level;
    if (first) {
        __atomic_store_n(&h->entry, slot, __ATOMIC_RELEASE);
        h->max_level = level;
    }
    if (h->par) pthread_mutex_unlock(&h->emu);
    if (first) return JVDB_OK;

    struct hnsw_scratch *sc = hnsw_scratch_take(h);
    if (!sc) return JVDB_ENOMEM;
    const float *v = slots[slot];
    float ep_dist;
    uint32_t ep = hnsw_descend(h, sp, slots, nslots, sc, v, level, slot, &ep_dist);
    int rc = JVDB_OK;
    if (ep != HNSW_NONE) {
        int top = level < max_level ? level : max_level;
        if (h->level[ep] < top) top = h->level[ep]; /* started below the top (entry point vector gone) */
        for (int l = top; l >= 0 && rc == JVDB_OK; l--)
            rc = hnsw_link_level(h, sp, slots, nslots, sc, slot, l, &ep, &ep_dist);
    }
    hnsw_scratch_give(sc);
    if (rc) return err_set(JVDB_ENOMEM, "out of memory linking slot %u into the HNSW index", slot);
    if (h->par) pthread_mutex_lock(&h->emu);
    if (level > h->max_level) {
        __atomic_store_n(&h->entry, slot, __ATOMIC_RELEASE);
        h->max_level = level;
    }
    if (h->par) pthread_mutex_unlock(&h->emu);
    return JVDB_OK;
}

int hnsw_insert(struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t slot)
{
    if (!hnsw_vec(slots, nslots, slot)) return err_set(JVDB_EINVAL, "slot %u has no vector to index", slot);
    struct dist_space sp;
    int rc = hnsw_space(h, &sp);
    if (rc) return rc;
    rc = hnsw_reserve(h, slot + 1);
    if (rc) return rc;
    int level;
    if ((rc = hnsw_node_prepare(h, slot, &level))) return rc;
    if ((rc = hnsw_node_link(h, &sp, slots, nslots, slot, level))) hnsw_node_failed(h, slot);
    return rc;
}

struct hnsw_par {
    struct hnsw *h;
    const float *const *slots;
    uint32_t nslots;
    const uint32_t *list;
    const int *levels; /* -1: not prepared, skip */
    uint32_t n;
    uint32_t next; /* atomic: the next list index to take */
    int rc;        /* first failure (under h->emu) */
};

/* One thread of a parallel batch: links list entries until none is left. */
static void *hnsw_par_worker(void *arg)
{
    struct hnsw_par *p = arg;
    struct dist_space sp;
    if (hnsw_space(p->h, &sp)) return NULL;
    for (;;) {
        uint32_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->n) break;
        if (p->levels[i] < 0) continue;
        int rc = hnsw_node_link(p->h, &sp, p->slots, p->nslots, p->list[i], p->levels[i]);
        if (rc) {
            hnsw_node_failed(p->h, p->list[i]);
            pthread_mutex_lock(&p->h->emu);
            if (!p->rc) p->rc = rc;
            pthread_mutex_unlock(&p->h->emu);
        }
    }
    return NULL;
}

int hnsw_insert_batch(struct hnsw *h, const float *const *slots, uint32_t nslots, const uint32_t *list, uint32_t n,
                      uint32_t threads)
{
    int first_rc = JVDB_OK;
    uint32_t i = 0;
    if (threads > HNSW_MAX_THREADS) threads = HNSW_MAX_THREADS;
    /* Alone, or while the graph has no entry point to start parallel inserts from: one by one. */
    for (; i < n && (threads <= 1 || n - i < 2 * threads || h->entry == HNSW_NONE); i++) {
        int rc = hnsw_insert(h, slots, nslots, list[i]);
        if (rc && !first_rc) first_rc = rc;
    }
    if (i == n) return first_rc;
    uint32_t need = 0;
    for (uint32_t j = i; j < n; j++)
        if (list[j] + 1 > need) need = list[j] + 1;
    int rc = hnsw_reserve(h, need);
    int *levels = rc ? NULL : malloc((size_t)(n - i) * sizeof *levels);
    if (!levels) return rc ? rc : err_set(JVDB_ENOMEM, "out of memory for a parallel HNSW batch");
    /* Levels are drawn here, in list order, so the level sequence does not depend on the threads. */
    for (uint32_t j = i; j < n; j++) {
        levels[j - i] = -1;
        if (!hnsw_vec(slots, nslots, list[j])) {
            rc = err_set(JVDB_EINVAL, "slot %u has no vector to index", list[j]);
        } else if ((rc = hnsw_node_prepare(h, list[j], &levels[j - i])) != JVDB_OK) {
            levels[j - i] = -1;
        }
        if (rc && !first_rc) first_rc = rc;
        rc = JVDB_OK;
    }
    struct hnsw_par p = { h, slots, nslots, list + i, levels, n - i, 0, JVDB_OK };
    pthread_t tid[HNSW_MAX_THREADS];
    uint32_t started = 0;
    h->par = 1;
    while (started + 1 < threads && pthread_create(&tid[started], NULL, hnsw_par_worker, &p) == 0) started++;
    hnsw_par_worker(&p); /* the caller is one of the threads */
    for (uint32_t t = 0; t < started; t++) pthread_join(tid[t], NULL);
    h->par = 0;
    free(levels);
    return first_rc ? first_rc : p.rc;
}

int hnsw_rebuild(struct hnsw *h, const float *const *slots, uint32_t nslots)
{
    struct hnsw *fresh;
    int rc = hnsw_create(h->dim, h->metric, &h->p, &fresh);
    if (rc) return rc;
    /* Continue the level sequence rather than replay it, so a rebuilt graph is not a copy of the
     * first one's level structure for different nodes. */
    fresh->rng = h->rng;
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT || h->deleted[s] || !hnsw_vec(slots, nslots, s)) continue;
        rc = hnsw_insert(fresh, slots, nslots, s);
        if (rc) {
            hnsw_free(fresh);
            return rc;
        }
    }
    /* Swap contents so the caller's pointer stays valid. */
    struct hnsw tmp = *h;
    *h = *fresh;
    *fresh = tmp;
    hnsw_free(fresh);
    h->restructured = 1;
    return JVDB_OK;
}

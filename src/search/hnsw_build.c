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

static uint64_t hnsw_next_random(hnsw *h)
{
    /* splitmix64: tiny state, good enough to draw levels, and reproducible from the seed. */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int hnsw_random_level(hnsw *h)
{
    double u = (double)((hnsw_next_random(h) >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    double l = -log(u) * h->level_mult;
    return l >= HNSW_MAX_LEVEL - 1 ? HNSW_MAX_LEVEL - 1 : (int)l;
}

int hnsw_reserve(hnsw *h, uint32_t need)
{
    if (need <= h->cap)
        return JVDB_OK;
    uint64_t cap = h->cap ? (uint64_t)h->cap * 2 : 1024;
    if (cap < need)
        cap = need;
    if (cap > UINT32_MAX - 1)
        cap = UINT32_MAX - 1; /* HNSW_NONE must stay out of range */
    if (cap < need)
        return err_set(JVDB_EINVAL, "slot %u is beyond what the HNSW index can hold", need - 1);

    uint32_t *l0 = realloc(h->l0, (size_t)cap * h->l0_stride * sizeof *l0);
    if (!l0)
        goto nomem;
    h->l0 = l0;
    uint32_t **upper = realloc(h->upper, (size_t)cap * sizeof *upper);
    if (!upper)
        goto nomem;
    h->upper = upper;
    uint8_t *level = realloc(h->level, (size_t)cap);
    if (!level)
        goto nomem;
    h->level = level;
    uint8_t *deleted = realloc(h->deleted, (size_t)cap);
    if (!deleted)
        goto nomem;
    h->deleted = deleted;

    /* Only now that every array has the new size may cap move; a failure above leaves larger
     * arrays behind, which is harmless. */
    size_t add = (size_t)(cap - h->cap);
    memset(h->l0 + (size_t)h->cap * h->l0_stride, 0, add * h->l0_stride * sizeof *l0);
    memset(h->upper + h->cap, 0, add * sizeof *upper);
    memset(h->level + h->cap, HNSW_ABSENT, add);
    memset(h->deleted + h->cap, 0, add);
    h->cap = (uint32_t)cap;
    return JVDB_OK;
nomem:
    return err_set(JVDB_ENOMEM, "out of memory growing the HNSW index to %llu slots",
                   (unsigned long long)cap);
}

/* Heuristic selection: `cand` is sorted closest first (distance to the node being linked); the kept
 * ones are moved to the front.  Returns how many were kept (at most max). */
uint32_t hnsw_select(const hnsw *h, const dist_space *sp, const float *const *slots,
                            uint32_t nslots, topk_item *cand, uint32_t n, uint32_t max)
{
    if (n <= max)
        return n;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n && kept < max; i++) {
        const float *v = hnsw_vec(slots, nslots, cand[i].slot);
        int good = 1;
        for (uint32_t j = 0; j < kept && good; j++) {
            const float *w = hnsw_vec(slots, nslots, cand[j].slot);
            good = sp->dist(v, w, h->dim) >= cand[i].dist;
        }
        if (good)
            cand[kept++] = cand[i];
    }
    return kept;
}

static int hnsw_link_back(hnsw *h, const dist_space *sp, const float *const *slots, uint32_t nslots,
                          hnsw_scratch *sc, uint32_t from, uint32_t to, float d, int level)
{
    uint32_t *links = hnsw_links(h, from, level);
    uint32_t cnt = links[0], max = level ? h->p.M : h->M0;
    for (uint32_t i = 1; i <= cnt; i++) {
        if (links[i] == to)
            return JVDB_OK;
    }
    if (cnt < max) {
        links[cnt + 1] = to;
        links[0] = cnt + 1;
        return JVDB_OK;
    }
    const float *base = hnsw_vec(slots, nslots, from);
    if (!base)
        return JVDB_OK; /* cannot weigh its links without its vector; it keeps the ones it has */

    /* Full: choose among the old links and the new one as if `from` were being inserted.  Links to
     * nodes whose vector is gone score +inf and fall out first. */
    for (uint32_t i = 0; i < cnt; i++)
        sc->gvec[i] = hnsw_vec(slots, nslots, links[i + 1]);
    sp->batch(base, sc->gvec, cnt, h->dim, sc->gdist);
    if (topk_reset(&sc->res, cnt + 1))
        return JVDB_ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        if (sc->gvec[i])
            topk_push(&sc->res, sc->gdist[i], links[i + 1]);
    }
    topk_push(&sc->res, d, to);
    uint32_t n = topk_sort(&sc->res);
    uint32_t kept = hnsw_select(h, sp, slots, nslots, sc->res.items, n, max);
    for (uint32_t i = 0; i < kept; i++)
        links[i + 1] = sc->res.items[i].slot;
    links[0] = kept;
    return JVDB_OK;
}

static int hnsw_link_level(hnsw *h, const dist_space *sp, const float *const *slots, uint32_t nslots,
                           hnsw_scratch *sc, uint32_t slot, int level, uint32_t *ep, float *ep_dist)
{
    const float *v = hnsw_vec(slots, nslots, slot);
    hnsw_layer_opts o = { .level = level, .ef = h->p.ef_construction, .exclude = slot };
    int rc = hnsw_search_layer(h, sp, slots, nslots, sc, v, *ep, *ep_dist, &o);
    if (rc)
        return rc;
    uint32_t n = topk_sort(&sc->nav);
    if (n == 0)
        return JVDB_OK;
    *ep = sc->nav.items[0].slot;
    *ep_dist = sc->nav.items[0].dist;

    uint32_t kept = hnsw_select(h, sp, slots, nslots, sc->nav.items, n, h->p.M);
    uint32_t *links = hnsw_links(h, slot, level);
    for (uint32_t i = 0; i < kept; i++)
        links[i + 1] = sc->nav.items[i].slot;
    links[0] = kept;
    /* sc->nav stays intact below: hnsw_link_back works in sc->res and the gather buffers. */
    for (uint32_t i = 0; i < kept; i++) {
        rc = hnsw_link_back(h, sp, slots, nslots, sc, sc->nav.items[i].slot, slot, sc->nav.items[i].dist,
                            level);
        if (rc)
            return rc;
    }
    return JVDB_OK;
}

int hnsw_insert(hnsw *h, const float *const *slots, uint32_t nslots, uint32_t slot)
{
    if (!hnsw_vec(slots, nslots, slot))
        return err_set(JVDB_EINVAL, "slot %u has no vector to index", slot);
    dist_space sp;
    int rc = hnsw_space(h, &sp);
    if (rc)
        return rc;
    rc = hnsw_reserve(h, slot + 1);
    if (rc)
        return rc;

    int fresh = h->level[slot] == HNSW_ABSENT;
    int level = fresh ? hnsw_random_level(h) : h->level[slot];
    if (fresh && level > 0) {
        h->upper[slot] = calloc((size_t)level * h->up_stride, sizeof(uint32_t));
        if (!h->upper[slot])
            return err_set(JVDB_ENOMEM, "out of memory for HNSW links");
    }
    if (fresh)
        hnsw_links(h, slot, 0)[0] = 0;

    if (h->entry == HNSW_NONE || (h->nodes == 1 && h->entry == slot)) {
        h->entry = slot;
        h->max_level = level;
        goto done;
    }

    hnsw_scratch *sc = hnsw_scratch_take(h);
    if (!sc) {
        rc = JVDB_ENOMEM;
        goto fail;
    }
    const float *v = slots[slot];
    float ep_dist;
    uint32_t ep = hnsw_descend(h, &sp, slots, nslots, sc, v, level, slot, &ep_dist);
    if (ep != HNSW_NONE) {
        int top = level < h->max_level ? level : h->max_level;
        if (h->level[ep] < top)
            top = h->level[ep]; /* started below the top (entry point vector gone) */
        /* Set now so that neighbours linking back see a node, not an absent slot. */
        h->level[slot] = (uint8_t)level;
        for (int l = top; l >= 0; l--) {
            rc = hnsw_link_level(h, &sp, slots, nslots, sc, slot, l, &ep, &ep_dist);
            if (rc) {
                hnsw_scratch_give(sc);
                rc = err_set(JVDB_ENOMEM, "out of memory linking slot %u into the HNSW index", slot);
                goto fail;
            }
        }
    }
    hnsw_scratch_give(sc);
    if (level > h->max_level) {
        h->entry = slot;
        h->max_level = level;
    }

done:
    h->level[slot] = (uint8_t)level;
    if (fresh)
        h->nodes++;
    if (h->deleted[slot]) {
        h->deleted[slot] = 0;
        h->ndeleted--;
    }
    return JVDB_OK;

fail:
    if (fresh) {
        /* Links already made to the half-inserted node stay valid pointers into the graph; keep it
         * as a deleted node so it is never returned and a rebuild drops it. */
        h->level[slot] = (uint8_t)level;
        h->nodes++;
        if (!h->deleted[slot]) {
            h->deleted[slot] = 1;
            h->ndeleted++;
        }
    }
    return rc;
}

int hnsw_rebuild(hnsw *h, const float *const *slots, uint32_t nslots)
{
    hnsw *fresh;
    int rc = hnsw_create(h->dim, h->metric, &h->p, &fresh);
    if (rc)
        return rc;
    /* Continue the level sequence rather than replay it, so a rebuilt graph is not a copy of the
     * first one's level structure for different nodes. */
    fresh->rng = h->rng;
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT || h->deleted[s] || !hnsw_vec(slots, nslots, s))
            continue;
        rc = hnsw_insert(fresh, slots, nslots, s);
        if (rc) {
            hnsw_free(fresh);
            return rc;
        }
    }
    /* Swap contents so the caller's pointer stays valid. */
    hnsw tmp = *h;
    *h = *fresh;
    *fresh = tmp;
    hnsw_free(fresh);
    return JVDB_OK;
}

/*
 * hnsw_search.c — walking the HNSW graph: the greedy descent through the upper levels, the best-first
 * layer search (shared with insertion in hnsw_build.c), and hnsw_search() with its filter widening.
 *
 * Two heaps with different jobs.  `nav` holds the ef nearest nodes seen, deleted or filtered out or
 * not, and alone decides when a layer search stops; `res` holds the k best nodes that are live and
 * accepted.  Keeping them apart bounds the work of a filtered search by ef (a filter that rejects
 * most nodes cannot make the search crawl the whole graph), and the k accepted nodes found among the
 * ef nearest are the true nearest accepted ones as far as the ef nearest are right.  When the ef window
 * holds too few accepted nodes, hnsw_search widens ef (by the selectivity it observed) and searches
 * again, up to ef_max, then reports incompleteness if it still lacks k results, so the caller can fall
 * back to exact search.
 *
 * Expanding a node gathers its unvisited neighbours' vector pointers first and scores them with one
 * batch-kernel call, which prefetches the scattered vectors ahead of the arithmetic.
 */
#include "search/hnsw_internal.h"

#include <math.h>
#include <string.h>

#include "core/err.h"

/* Prefetch the link list of the node most likely to be expanded next. */
static inline void hnsw_prefetch_links(const struct hnsw *h, const struct hnsw_scratch *sc, int level)
{
    if (sc->cand.n > 0) {
        const uint32_t *l = hnsw_links(h, topk_queue_top(&sc->cand).slot, level);
        __builtin_prefetch(l, 0, 3);
        __builtin_prefetch(l + 16, 0, 3);
    }
}

/* Collects the unvisited neighbours of `node` that have vectors; scores them into sc->gdist.
 * Returns how many. */
static inline uint32_t hnsw_expand(const struct hnsw *h, const struct dist_space *sp, const float *const *slots,
                                   uint32_t nslots, struct hnsw_scratch *sc, const float *query, uint32_t node,
                                   int level)
{
    uint32_t buf[1 + 2 * HNSW_MAX_M];
    const uint32_t *links = hnsw_links_read(h, node, level, buf);
    uint32_t cnt = links[0], m = 0;
    for (uint32_t i = 1; i <= cnt; i++) {
        __builtin_prefetch(&sc->tags[links[i]], 1, 3);
        if (links[i] < nslots) __builtin_prefetch(&slots[links[i]], 0, 3);
    }
    for (uint32_t i = 1; i <= cnt; i++) {
        uint32_t nb = links[i];
        if (!hnsw_visit(sc, nb)) continue;
        const float *v = hnsw_vec(slots, nslots, nb);
        if (!v) continue;
        dist_prefetch(v, h->dim, 8);
        sc->gvec[m] = v;
        sc->gid[m++] = nb;
    }
    if (m) {
        sp->batch(query, sc->gvec, m, h->dim, sc->gdist);
        sc->ndist += m;
    }
    return m;
}

static inline void hnsw_offer_result(const struct hnsw *h, struct hnsw_scratch *sc, const struct hnsw_layer_opts *o,
                                     float d, uint32_t slot)
{
    if (d > topk_bound(&sc->res) || h->deleted[slot]) return;
    if (o->accept && !o->accept(o->accept_ctx, slot)) return;
    topk_push(&sc->res, d, slot);
}

/* How many nodes of the ef window are live and accepted. */
static uint32_t hnsw_accepted_in_nav(const struct hnsw *h, const struct hnsw_scratch *sc,
                                     const struct hnsw_layer_opts *o)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < sc->nav.n; i++) {
        uint32_t s = sc->nav.items[i].slot;
        if (!h->deleted[s] && (!o->accept || o->accept(o->accept_ctx, s))) n++;
    }
    return n;
}

int hnsw_search_layer(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                      struct hnsw_scratch *sc, const float *query, uint32_t ep, float ep_dist,
                      const struct hnsw_layer_opts *o)
{
    hnsw_scratch_new_epoch(sc);
    topk_queue_clear(&sc->cand);
    if (topk_reset(&sc->nav, o->ef)) return JVDB_ENOMEM;

    hnsw_visit(sc, ep);
    if (topk_queue_push(&sc->cand, ep_dist, ep)) return JVDB_ENOMEM;
    if (ep != o->exclude) topk_push(&sc->nav, ep_dist, ep);
    if (o->collect) hnsw_offer_result(h, sc, o, ep_dist, ep);

    while (sc->cand.n > 0) {
        struct topk_item c = topk_queue_top(&sc->cand);
        if (c.dist > topk_bound(&sc->nav)) break;
        topk_queue_pop(&sc->cand);
        hnsw_prefetch_links(h, sc, o->level);
        uint32_t m = hnsw_expand(h, sp, slots, nslots, sc, query, c.slot, o->level);
        float bound = topk_bound(&sc->nav);
        for (uint32_t i = 0; i < m; i++) {
            float d = sc->gdist[i];
            uint32_t nb = sc->gid[i];
            if (d < bound) {
                if (topk_queue_push(&sc->cand, d, nb)) return JVDB_ENOMEM;
                if (nb != o->exclude) {
                    topk_push(&sc->nav, d, nb);
                    bound = topk_bound(&sc->nav);
                }
            }
            /* Offered whether or not it was near enough for nav: with a filter, nav may be full of
             * rejected nodes while res still has room. */
            if (o->collect) hnsw_offer_result(h, sc, o, d, nb);
        }
    }
    return JVDB_OK;
}

uint32_t hnsw_descend(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                      struct hnsw_scratch *sc, const float *query, int stop, uint32_t exclude, float *dist)
{
    uint32_t cur = hnsw_start_node(h, slots, nslots);
    if (cur == HNSW_NONE) return HNSW_NONE;
    /* The node being re-linked starts infinitely far so the walk leaves it at once. */
    float curd = cur == exclude ? INFINITY : sp->dist(query, hnsw_vec(slots, nslots, cur), h->dim);
    sc->ndist++;
    uint32_t buf[1 + 2 * HNSW_MAX_M];
    for (int level = h->level[cur]; level > stop; level--) {
        for (int moved = 1; moved;) {
            moved = 0;
            const uint32_t *links = hnsw_links_read(h, cur, level, buf);
            uint32_t cnt = links[0], m = 0;
            for (uint32_t i = 1; i <= cnt; i++) {
                const float *v = hnsw_vec(slots, nslots, links[i]);
                if (v && links[i] != exclude) {
                    sc->gvec[m] = v;
                    sc->gid[m++] = links[i];
                }
            }
            if (m == 0) break;
            sp->batch(query, sc->gvec, m, h->dim, sc->gdist);
            sc->ndist += m;
            for (uint32_t i = 0; i < m; i++) {
                if (sc->gdist[i] < curd) {
                    curd = sc->gdist[i];
                    cur = sc->gid[i];
                    moved = 1;
                }
            }
        }
    }
    *dist = curd;
    return cur;
}

int hnsw_search(const struct hnsw *h, const float *const *slots, uint32_t nslots, const float *query,
                const struct hnsw_query *q, uint32_t *out_slots, float *out_scores, uint32_t *out_n,
                struct hnsw_search_info *info)
{
    struct hnsw_search_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    info->complete = 1;
    *out_n = 0;
    if (!query) return err_set(JVDB_EINVAL, "HNSW search needs a query");
    if (q->use_threshold && !isfinite(q->threshold))
        return err_set(JVDB_EINVAL, "search threshold must be a finite number");
    if (q->ef > HNSW_MAX_EF || q->ef_max > HNSW_MAX_EF)
        return err_set(JVDB_EINVAL, "ef must be at most %d", HNSW_MAX_EF);

    struct dist_space sp;
    int rc = hnsw_space(h, &sp);
    if (rc) return rc;
    struct hnsw_scratch *sc = hnsw_scratch_take(h);
    if (!sc) return JVDB_ENOMEM;
    if (h->p.sq8) memcpy(sc->query, query, sq8_row_bytes(h->dim)); /* coded by the caller */
    else rc = dist_query_prepare(h->metric, query, h->dim, sc->query);
    if (rc || q->k == 0 || h->nodes == h->ndeleted) goto out;

    float ep_dist;
    uint32_t ep = hnsw_descend(h, &sp, slots, nslots, sc, sc->query, 0, HNSW_NONE, &ep_dist);
    if (ep == HNSW_NONE) goto out;

    /* More results than live nodes cannot exist; sizing heaps by them keeps a huge k cheap. */
    uint32_t k = q->k < h->nodes - h->ndeleted ? q->k : h->nodes - h->ndeleted;
    uint32_t ef = q->ef ? q->ef : h->p.ef_search;
    if (ef < k) ef = k;
    uint32_t ef_max = q->ef_max ? q->ef_max : (ef <= HNSW_MAX_EF / 32 ? 32 * ef : HNSW_MAX_EF);
    if (ef_max < ef) ef_max = ef;
    uint32_t kout = q->candidates > k ? q->candidates : k;
    if (kout > h->nodes - h->ndeleted) kout = h->nodes - h->ndeleted;
    if (topk_reset(&sc->res, kout)) {
        rc = err_set(JVDB_ENOMEM, "out of memory for %u HNSW results", kout);
        goto out;
    }
    struct hnsw_layer_opts o = {
        .level = 0,
        .ef = ef,
        .exclude = HNSW_NONE,
        .collect = 1,
        .accept = q->accept,
        .accept_ctx = q->accept_ctx,
    };
    /* Accepted nodes wanted inside the ef window: an unfiltered search has ef of them; asking a
     * filtered one for min(ef, 2k) keeps its k-th result well inside the window, where the graph
     * search is accurate, without paying ef/selectivity. */
    uint32_t need = (uint64_t)ef < 2 * (uint64_t)k ? ef : 2 * k;
    for (;;) {
        topk_clear(&sc->res);
        rc = hnsw_search_layer(h, &sp, slots, nslots, sc, sc->query, ep, ep_dist, &o);
        if (rc) {
            rc = err_set(JVDB_ENOMEM, "out of memory in HNSW search (ef %u)", o.ef);
            goto out;
        }
        info->rounds++;
        info->ef_used = o.ef;
        uint32_t accepted = hnsw_accepted_in_nav(h, sc, &o);
        if (accepted >= need) break;
        /* An ef beyond the node count never fills nav, so that round examined every reachable node. */
        if (o.ef >= h->nodes) break;
        if (o.ef >= ef_max) {
            info->complete = sc->res.n >= k;
            break;
        }
        /* Jump straight to the ef the observed selectivity calls for (with a margin), at least
         * doubling so a poor estimate costs a few rounds, not many. */
        double want = (double)o.ef * need * 1.25 / (accepted ? accepted : 1);
        if (want < 2.0 * o.ef) want = 2.0 * o.ef;
        o.ef = want >= ef_max ? ef_max : (uint32_t)want;
    }

    float limit = q->use_threshold ? dist_from_score(h->metric, q->threshold) : INFINITY;
    uint32_t n = topk_sort(&sc->res);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n && sc->res.items[i].dist <= limit; i++, kept++) {
        if (out_slots) out_slots[i] = sc->res.items[i].slot;
        if (out_scores) out_scores[i] = dist_score(h->metric, sc->res.items[i].dist);
    }
    *out_n = kept;

out:
    info->distances = sc->ndist;
    hnsw_scratch_give(sc);
    return rc;
}

/*
 * hnsw_internal.h — the HNSW graph layout and the helpers shared by hnsw.c (lifecycle, deletion,
 * scratch pool), hnsw_build.c (insert, neighbour selection, rebuild) and hnsw_search.c (layer search,
 * queries).  Not for use outside src/search.
 *
 * Layout.  Level 0, where every node lives and searches spend nearly all their time, is one array of
 * fixed-stride link lists indexed by slot: l0[slot * l0_stride] is the count, followed by up to
 * M0 = 2M neighbour slots, so expanding a node touches one or two cache lines and no pointer.  Levels
 * above 0 hold about 1/M of the nodes and are allocated per node (upper[slot], level-1 .. level-1
 * lists of stride M+1).  level[slot] is HNSW_ABSENT for slots that are not nodes.
 */
#ifndef JVDB_SEARCH_HNSW_INTERNAL_H
#define JVDB_SEARCH_HNSW_INTERNAL_H

#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "search/distance.h"
#include "search/sq8.h"
#include "search/hnsw.h"
#include "search/topk.h"

#define HNSW_ABSENT    0xFFu
#define HNSW_MAX_LEVEL 32
#define HNSW_NONE      UINT32_MAX

#define HNSW_DIRTY_LINKS 1u /* its lists or deletion mark changed */
#define HNSW_DIRTY_NODE  2u /* (re)made for a new vector: identity and row changed too */

struct hnsw {
    uint32_t dim;
    jvdb_metric metric;
    struct hnsw_params p;
    uint32_t M0;        /* level-0 link capacity, 2M */
    uint32_t l0_stride; /* M0 + 1 */
    uint32_t up_stride; /* M + 1 */
    double level_mult;  /* 1 / ln(M): level = floor(-ln(U) * level_mult) */
    uint64_t rng;

    uint32_t cap; /* slots [0, cap) have room in the arrays below */
    uint32_t *l0;
    uint32_t **upper;
    uint8_t *level;
    uint8_t *deleted;
    /* What changed since the graph was last saved (HNSW_DIRTY_*), for the delta file: set where a
     * node is (re)made or its lists or deletion mark change, cleared by a save. */
    uint8_t *dirty;
    int restructured; /* nodes were removed (vacuum, rebuild): only a full save describes the graph */

    uint32_t entry; /* HNSW_NONE when empty */
    int max_level;  /* -1 when empty */
    uint32_t nodes;
    uint32_t ndeleted;

    /* Parallel insertion (hnsw_insert_batch): while par is set, several threads link nodes at once;
     * a node's link lists are read and written only under its spin lock lk[slot], and entry /
     * max_level / deletion marks change only under emu.  Outside a batch par is 0 and nothing locks. */
    int par;
    uint8_t *lk;
    pthread_mutex_t emu;
};

/* Takes slot's link-list lock during a parallel batch (a no-op otherwise). */
static inline void hnsw_lock(const struct hnsw *h, uint32_t slot)
{
    if (!h->par) return;
    for (unsigned spins = 0; __atomic_exchange_n(&h->lk[slot], 1, __ATOMIC_ACQUIRE); spins++) {
        while (__atomic_load_n(&h->lk[slot], __ATOMIC_RELAXED))
            if (++spins > 64) sched_yield(); /* the holder may be descheduled on a shared machine */
    }
}

static inline void hnsw_unlock(const struct hnsw *h, uint32_t slot)
{
    if (h->par) __atomic_store_n(&h->lk[slot], 0, __ATOMIC_RELEASE);
}

static inline uint32_t *hnsw_links(const struct hnsw *h, uint32_t slot, int level)
{
    if (level == 0) return h->l0 + (size_t)slot * h->l0_stride;
    return h->upper[slot] + (size_t)(level - 1) * h->up_stride;
}

/* A node's list on `level`, copied under its lock into buf (1 + M0 entries) during a parallel batch;
 * the list itself otherwise. */
static inline const uint32_t *hnsw_links_read(const struct hnsw *h, uint32_t slot, int level, uint32_t *buf)
{
    const uint32_t *l = hnsw_links(h, slot, level);
    if (!h->par) return l;
    hnsw_lock(h, slot);
    uint32_t c = l[0];
    for (uint32_t i = 0; i <= c; i++) buf[i] = l[i];
    hnsw_unlock(h, slot);
    return buf;
}

static inline const float *hnsw_vec(const float *const *slots, uint32_t nslots, uint32_t slot)
{
    return slot < nslots ? slots[slot] : NULL;
}

/* The distance space of h's rows: float vectors or sq8 code rows.  JVDB_EINVAL. */
static inline int hnsw_space(const struct hnsw *h, struct dist_space *sp)
{
    return h->p.sq8 ? dist_space_init_sq8(sp, h->metric, h->dim) : dist_space_init(sp, h->metric, h->dim);
}

/* Per-search working memory, pooled so concurrent searches never share it and the index stays
 * read-only under the caller's read lock. */
struct hnsw_scratch {
    uint16_t *tags; /* visited marks: tags[slot] == epoch */
    uint32_t ntags;
    uint16_t epoch;
    struct topk_queue cand; /* candidates to expand, closest first */
    struct topk nav;        /* the ef nearest seen: decides when a layer search stops */
    struct topk res;        /* accepted live results (queries only) */
    float *query;           /* prepared copy of the query */
    uint32_t query_cap;
    const float **gvec; /* gathered neighbour vectors of one expansion ... */
    uint32_t *gid;      /* ... their slots ... */
    float *gdist;       /* ... and distances */
    uint32_t gcap;
    uint64_t ndist;            /* distance evaluations since the scratch was taken */
    struct hnsw_scratch *next; /* pool free list */
};

/* A scratch sized for h (visited marks for h->cap slots, a dim-float query buffer, gather buffers
 * for M0 links); NULL with JVDB_ENOMEM set. */
struct hnsw_scratch *hnsw_scratch_take(const struct hnsw *h);
void hnsw_scratch_give(struct hnsw_scratch *sc);

/* Starts a fresh visited set. */
void hnsw_scratch_new_epoch(struct hnsw_scratch *sc);

/* 1 the first time `slot` is seen in this epoch. */
static inline int hnsw_visit(struct hnsw_scratch *sc, uint32_t slot)
{
    if (sc->tags[slot] == sc->epoch) return 0;
    sc->tags[slot] = sc->epoch;
    return 1;
}

/* What a layer search does besides finding the ef nearest nodes. */
struct hnsw_layer_opts {
    int level;
    uint32_t ef;
    uint32_t exclude; /* never enters sc->nav (the node being re-linked) or HNSW_NONE */
    int collect;      /* offer live, accepted nodes to sc->res */
    topk_accept_fn accept;
    void *accept_ctx;
};

/* Best-first search of one level from entry point `ep` (distance `ep_dist`) for `query`; leaves the
 * ef nearest in sc->nav (unsorted).  JVDB_ENOMEM. */
int hnsw_search_layer(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                      struct hnsw_scratch *sc, const float *query, uint32_t ep, float ep_dist,
                      const struct hnsw_layer_opts *o);

/* Greedy walk down from the top level to level `stop` + 1, returning the closest node found (and its
 * distance in *dist).  `exclude` is walked through but never chosen. */
uint32_t hnsw_descend(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                      struct hnsw_scratch *sc, const float *query, int stop, uint32_t exclude, float *dist);

/* A node to start searches from: the entry point, or when its vector is gone the highest node that
 * still has one.  HNSW_NONE if no node has a vector. */
uint32_t hnsw_start_node(const struct hnsw *h, const float *const *slots, uint32_t nslots);

/* Heuristic neighbour selection (hnsw_build.c): `cand` sorted closest first; the kept ones (at most
 * max) are moved to the front and counted.  Also used by the loader's and vacuum's repairs. */
uint32_t hnsw_select(const struct hnsw *h, const struct dist_space *sp, const float *const *slots, uint32_t nslots,
                     struct topk_item *cand, uint32_t n, uint32_t max);

/* Grows the arrays to hold slots [0, need).  JVDB_EINVAL, JVDB_ENOMEM. */
int hnsw_reserve(struct hnsw *h, uint32_t need);

#endif

/*
 * hnsw.h — HNSW approximate nearest-neighbour index over the store's slot numbers.
 *
 * The index holds only the graph: nodes are slot numbers, and vectors are read through the slot table
 * (`const float *const *slots`, NULL = empty) that the caller passes to every call, because the store
 * may grow or move that table between calls.  Vectors are never copied; for cosine they must be unit
 * length (the graph compares them by inner product: search.c hands it normalised copies).  Scores follow distance.h
 * (l2: squared distance, smaller is better; cosine/dot: similarity / inner product, larger is better).
 *
 * Locking contract: the caller serialises hnsw_insert / hnsw_mark_deleted / hnsw_rebuild /
 * hnsw_set_ef_search (write lock) against everything else; any number of hnsw_search calls may run at
 * once (read lock).  A search keeps its working memory in a scratch taken from a pool, not in the index.
 *
 * Deletion marks a node: it stays in the graph for navigation (its vector must then stay readable
 * through the slot table; a NULL vector is tolerated but the node is skipped and navigation suffers)
 * and never appears in results.  hnsw_deleted_share() tells the caller when hnsw_rebuild() is due.
 * Inserting a slot that is already a node (deleted or not, e.g. a reused slot or a replaced vector)
 * re-links it for the vector now in that slot.
 *
 * Filtered search (accept callback) is answered from the ef nearest nodes; when fewer than min(ef, 2k)
 * of those are live and accepted, ef is widened (by the share of accepted nodes seen) and the search
 * repeated, up to ef_max.  If it still finds fewer than k and the graph was not exhausted, the result
 * says so (info.complete = 0) and the caller should fall back to exact search (flat_search).  For a
 * filter expected to match under about min(ef, 2k) / ef_max of the nodes (1% with the defaults and
 * k = 10) the caller should go to exact search directly: the widening would give up anyway, after
 * costing more than a filtered scan, which only scores the matches.
 */
#ifndef JVDB_SEARCH_HNSW_H
#define JVDB_SEARCH_HNSW_H

#include <stddef.h>
#include <stdint.h>

#include "jvdb.h"
#include "search/topk.h"

struct hnsw;

#define HNSW_DEFAULT_M               16
#define HNSW_DEFAULT_EF_CONSTRUCTION 200
#define HNSW_DEFAULT_EF_SEARCH       64
/* The limits of the parameters, for every path that takes them (library options, REST, CLI, the
 * graph file's header): one place. */
#define HNSW_MAX_M                   256
#define HNSW_MAX_EF_CONSTRUCTION     100000
#define HNSW_MAX_EF                  1000000

struct hnsw_params {
    uint32_t M;               /* links per node per level (level 0: 2M); 2..HNSW_MAX_M */
    uint32_t ef_construction; /* candidate list size while inserting; >= 1 */
    uint32_t ef_search;       /* default candidate list size of a search; >= 1 */
    uint64_t seed;            /* level generator seed: the same inserts give the same graph */
    int sq8;                  /* 1: the slot table holds sq8 code rows (sq8.h) cast to const float *,
                                  * and queries come coded the same way; 0: float vectors */
};

void hnsw_params_init(struct hnsw_params *p);

/* JVDB_EINVAL for out-of-range parameters or dim, JVDB_ENOMEM. */
int hnsw_create(uint32_t dim, jvdb_metric metric, const struct hnsw_params *p, struct hnsw **out);
void hnsw_free(struct hnsw *h);

/* Adds slots[slot] (not NULL, slot < nslots) as a node, or re-links it if it is one already
 * (clearing a deletion mark).  JVDB_EINVAL, JVDB_ENOMEM; a failed insert leaves the index usable. */
int hnsw_insert(struct hnsw *h, const float *const *slots, uint32_t nslots, uint32_t slot);

#define HNSW_MAX_THREADS 256

/* hnsw_insert for each of list's n slots (distinct, each with a vector), linked by `threads` threads
 * at once (the caller's and threads - 1 more; 1 = one by one, as hnsw_insert).  The levels are drawn
 * in list order, so only the order in which links are made depends on the threads.  The caller holds
 * the graph exclusively, as for hnsw_insert.  Returns the first failure (JVDB_EINVAL, JVDB_ENOMEM);
 * the other slots are still inserted, and a slot whose linking failed is left marked deleted. */
int hnsw_insert_batch(struct hnsw *h, const float *const *slots, uint32_t nslots, const uint32_t *list, uint32_t n,
                      uint32_t threads);

/* JVDB_ENOTFOUND if slot is not a node; marking twice is fine. */
int hnsw_mark_deleted(struct hnsw *h, uint32_t slot);

/* Rebuilds the graph from the live nodes (not deleted, vector not NULL), dropping everything else.
 * On failure (JVDB_ENOMEM) the old graph is kept unchanged. */
int hnsw_rebuild(struct hnsw *h, const float *const *slots, uint32_t nslots);

struct hnsw_query {
    uint32_t k;
    uint32_t ef;           /* 0 = the index's ef_search; raised to k when smaller */
    uint32_t ef_max;       /* widening limit when filters/deletions hide results; 0 = 32 * ef */
    topk_accept_fn accept; /* NULL = every live node */
    void *accept_ctx;
    int use_threshold; /* only results whose score is at least as good as threshold */
    float threshold;
    uint32_t candidates; /* return up to this many (> k) best nodes, for the caller to re-rank
                                  * with full vectors; 0 = k.  Widening still counts k. */
};

/* k 10, index ef, default ef_max, no filter, no threshold. */
void hnsw_query_init(struct hnsw_query *q);

struct hnsw_search_info {
    uint32_t ef_used;   /* ef of the last round */
    uint32_t rounds;    /* 1 + number of widenings */
    uint64_t distances; /* distance evaluations, all rounds */
    int complete;       /* 1: k accepted results found (before threshold), or every
                                  * reachable node was examined; 0: fall back to exact search */
};

/* Approximate k nearest live, accepted nodes of `query` (cosine: normalised on a private copy; an sq8
 * graph takes the query as a code row, coded by the caller, and scores in code units).
 * Writes up to k slots/scores best first (either array may be NULL), the count to *out_n, and
 * details to *info if not NULL.  JVDB_EINVAL, JVDB_ENOMEM. */
int hnsw_search(const struct hnsw *h, const float *const *slots, uint32_t nslots, const float *query,
                const struct hnsw_query *q, uint32_t *out_slots, float *out_scores, uint32_t *out_n,
                struct hnsw_search_info *info);

/* Setting taken by searches that pass ef 0.  JVDB_EINVAL when 0 or above HNSW_MAX_EF. */
int hnsw_set_ef_search(struct hnsw *h, uint32_t ef_search);
void hnsw_get_params(const struct hnsw *h, struct hnsw_params *out);

uint32_t hnsw_node_count(const struct hnsw *h); /* nodes including deleted ones */
uint32_t hnsw_live_count(const struct hnsw *h); /* nodes not marked deleted */
/* deleted / nodes, 0 for an empty index: rebuild when it passes the caller's threshold. */
double hnsw_deleted_share(const struct hnsw *h);
int hnsw_contains(const struct hnsw *h, uint32_t slot); /* a node, deleted or not */
int hnsw_is_deleted(const struct hnsw *h, uint32_t slot);
/* Memory held by the graph (not the vectors). */
size_t hnsw_memory_bytes(const struct hnsw *h);

#endif

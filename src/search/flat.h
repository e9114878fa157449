/*
 * flat.h — exact search: scan every slot of the store's slot table, keep the k best.
 *
 * The slot table is the store's array of vector pointers (NULL = empty slot); the scan never copies
 * vectors, and they are read as stored: for cosine they may have any non-zero length.  Scores follow
 * distance.h: l2 = squared distance (smaller is better), cosine = similarity, dot = inner product
 * (larger is better).
 */
#ifndef JVDB_SEARCH_FLAT_H
#define JVDB_SEARCH_FLAT_H

#include <stdint.h>

#include "jvdb.h"
#include "search/topk.h"

struct flat_params {
    jvdb_metric metric;
    uint32_t k;
    uint32_t threads;      /* 0 = number of online cores; small tables use fewer */
    topk_accept_fn accept; /* NULL = every non-empty slot; called from several threads */
    void *accept_ctx;
    int use_threshold; /* if set, only results whose score is at least as good as threshold */
    float threshold;   /* l2: score <= threshold; cosine/dot: score >= threshold */
    /* Snapshot reads of a table writers change meanwhile (the store's slot table): slot s is read
     * as slots[s] when slot_lsn[s] <= snap, else as resolve(resolve_ctx, s).  NULL slot_lsn: the
     * table is private to the caller.  The table is always read with atomic loads. */
    const uint64_t *slot_lsn;
    uint64_t snap;
    const float *(*resolve)(void *ctx, uint32_t slot);
    void *resolve_ctx;
};

/* Fills defaults: L2, k 10, threads 0, no filter, no threshold. */
void flat_params_init(struct flat_params *p);

/* Searches slots[0..nslots) for the p->k best matches of `query` (dim floats; for cosine it is
 * normalised on a private copy, so it need not be unit length but must not be zero).  Writes up to
 * k slots and scores, best first (ties: lower slot first), to out_slots/out_scores (either may be
 * NULL) and their number to *out_n.  JVDB_EINVAL on bad arguments, JVDB_ENOMEM. */
int flat_search(const float *const *slots, uint32_t nslots, uint32_t dim, const float *query,
                const struct flat_params *p, uint32_t *out_slots, float *out_scores, uint32_t *out_n);

/* How many threads flat_search would use for this table (for benchmarks and stats). */
uint32_t flat_threads_for(uint32_t nslots, uint32_t dim, uint32_t threads);

#endif

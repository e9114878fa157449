#ifndef JVDB_SEARCH_PAYLOAD_H
#define JVDB_SEARCH_PAYLOAD_H
/*
 * Payload indexes (payload.c): per-field columns of metadata values, by slot, that let a filtered
 * search skip parsing metadata.  Owned by the search index (search.c), which forwards its keydir
 * hook and asks for a plan per filtered search.
 */
#include <stdint.h>

#include "jvdb.h"

struct payload_index;

/* A payload index for db with the MANIFEST's declarations; NULL on out of memory. */
struct payload_index *payload_new(jvdb_db *db);
void payload_free(struct payload_index *pl);
/* Keydir hook (write_mu held): the slot gained, changed or lost its vector. */
void payload_slot_hook(struct payload_index *pl, uint32_t slot);
/* Writer lock held: queues every slot that holds a vector (attaching, or a new declaration). */
void payload_queue_all(struct payload_index *pl);

/* What the index says about one filtered search at snapshot `snap`, one bit per slot below nslots:
 * `cand` holds every slot the filter may accept there (a superset), `verify` the candidates whose
 * answer the index cannot give (the filter is checked on their metadata). */
struct payload_plan {
    int used; /* 0: the index cannot help this filter (cand and verify are NULL) */
    uint32_t nslots;
    uint64_t *cand, *verify;
    uint32_t ncand; /* bits set in cand */
    uint32_t nlive; /* slots holding a vector in the index's view */
};
/* Inside a read section, snapshot taken before the call: brings the index up to date with the
 * slots written so far and evaluates the filter.  JVDB_OK with used = 0 when no condition of the
 * filter is on an indexed field. */
int payload_plan_make(struct payload_index *pl, const jvdb_filter *f, uint64_t snap, uint32_t nslots,
                      struct payload_plan *out);
void payload_plan_free(struct payload_plan *p);
/* 0: the filter rejects the slot; 1: accepts it; 2: check the metadata. */
static inline int payload_plan_test(const struct payload_plan *p, uint32_t slot)
{
    if (slot >= p->nslots || !(p->cand[slot / 64] >> (slot % 64) & 1)) return 0;
    return (p->verify[slot / 64] >> (slot % 64) & 1) ? 2 : 1;
}

/* search.c's planner thresholds (search_plan_scan): a filtered search scans its candidates exactly
 * when there are at most scan_min of them (or k * 8) or below scan_share of the live vectors, else it
 * walks the graph.  Variables only so that tests and benchmarks can force either path (set them
 * before searching; 0 and 0.0 force the graph). */
extern uint32_t search_payload_scan_min;
extern double search_payload_scan_share;

/* search.c: the payload index of db's search index when one is attached, else NULL. */
struct payload_index *search_payload_attached(jvdb_db *db);
/* payload.c: re-reads the declarations from the MANIFEST into an attached index (create/drop). */
int payload_reload(struct payload_index *pl);
#endif

/*
 * search_testutil.h — helpers shared by the search tests and the search benchmark: a seeded random
 * generator, clustered data sets held in a slot table like the store's, a plain reference top-k
 * (double precision, no heap, no threads, no SIMD) and recall.
 */
#ifndef JVDB_TESTS_SEARCH_TESTUTIL_H
#define JVDB_TESTS_SEARCH_TESTUTIL_H

#include <stdint.h>

#include "jvdb.h"

typedef struct tu_rng {
    uint64_t s;
} tu_rng;

uint64_t tu_next(tu_rng *r);
double tu_uniform(tu_rng *r); /* [0, 1) */
double tu_gauss(tu_rng *r);   /* standard normal */

/* n vectors of dimension dim around `clusters` random centres (spread 1, noise sigma), in one block;
 * slots[i] points at vector i.  For cosine the vectors are normalised, as the HNSW graph needs (the
 * store keeps them as given; search.c normalises the graph's copies). */
typedef struct tu_data {
    uint32_t n, dim;
    float *block;
    const float **slots;
} tu_data;

void tu_data_make(tu_data *d, uint32_t n, uint32_t dim, uint32_t clusters, double sigma, uint64_t seed,
                  jvdb_metric metric);
void tu_data_free(tu_data *d);
/* A query near a random data point. */
void tu_query(const tu_data *d, tu_rng *r, double sigma, float *q);

/* Reference exact top-k over slots (NULL skipped, accept filter, optional score threshold); writes
 * slots and scores best first, returns the count.  Cosine is the true cosine (vectors of any length). */
uint32_t tu_reference(const float *const *slots, uint32_t nslots, uint32_t dim, jvdb_metric metric, const float *query,
                      uint32_t k, int (*accept)(void *, uint32_t), void *ctx, int use_threshold, float threshold,
                      uint32_t *out_slots, double *out_scores);

/* |a ∩ b| for result lists of lengths na and nb. */
uint32_t tu_overlap(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb);

double tu_now(void); /* monotonic seconds */
/* This thread's CPU seconds: steadier than wall time on a busy machine. */
double tu_cpu_now(void);

#endif

/*
 * distance.h — distance kernels for the three metrics, in scalar, AVX2+FMA and AVX-512F versions
 * picked once at start-up.
 *
 * Convention (every search in src/search follows it):
 *   - Internally a search always MINIMISES a "distance" d:
 *         l2      d = squared Euclidean distance  sum (a_i - b_i)^2
 *         dot     d = - sum a_i b_i
 *         cosine  d = - (q . v) / |v|  for the query q normalised to unit length (dist_query_prepare)
 *                     and a vector v of any non-zero length: the store keeps vectors exactly as given.
 *                     Two spaces compute it: the "stored" space (dist_space_init_stored: the exact
 *                     scan over the store's vectors) sums |v|^2 beside q . v in the same pass; the
 *                     plain space (dist_space_init: the HNSW graph, whose own copies of the vectors
 *                     are normalised when they are made) is the bare inner product, d = - q . v.
 *   - What callers see is a SCORE:
 *         l2      score = d                (squared distance; smaller is better, >= 0)
 *         dot     score = -d               (inner product; larger is better)
 *         cosine  score = -d               (cosine similarity in [-1, 1]; larger is better)
 *     dist_score() / dist_from_score() convert; a score threshold t ("at least that good") becomes the
 *     distance bound d <= dist_from_score(metric, t).
 *
 * Kernels come as a table per instruction set.  dist_active() is the table chosen at start-up: the best
 * the CPU supports, unless the environment variable JVDB_SIMD=scalar|avx2|avx512 asks for a lower one
 * (tests and benchmarks).  Hot loops fill a dist_space once (dist_space_init) and call through its
 * pointers.
 */
#ifndef JVDB_SEARCH_DISTANCE_H
#define JVDB_SEARCH_DISTANCE_H

#include <stdint.h>

#include "jvdb.h"

typedef enum { DIST_SIMD_SCALAR = 0, DIST_SIMD_AVX2 = 1, DIST_SIMD_AVX512 = 2 } dist_simd;
#define DIST_SIMD_COUNT 3

/* d = f(a, b) over dim floats. */
typedef float (*dist_pair_fn)(const float *a, const float *b, uint32_t dim);
/* out[i] = f(q, vecs[i]) for i < n; a NULL vecs[i] (empty slot) gives +INFINITY. */
typedef void (*dist_batch_fn)(const float *q, const float *const *vecs, uint32_t n, uint32_t dim, float *out);

struct dist_kernels {
    dist_simd level;
    const char *name;  /* "scalar", "avx2", "avx512" */
    dist_pair_fn l2sq; /* sum (a_i - b_i)^2 */
    dist_pair_fn nip;  /* - sum a_i b_i (negated so that smaller is better) */
    dist_pair_fn ncos; /* - (a . b) / |b| for a unit a; |b| summed alongside (distance.c) */
    dist_batch_fn l2sq_batch;
    dist_batch_fn nip_batch;
    dist_batch_fn ncos_batch;
};

/* The kernels of one instruction set, or NULL when this CPU cannot run them. */
const struct dist_kernels *dist_kernels_get(dist_simd level);
/* The table chosen at start-up (thread-safe, cheap). */
const struct dist_kernels *dist_active(void);
/* Replaces the active table (tests, benchmarks); JVDB_EINVAL if the CPU lacks `level`.  Not to be
 * called while searches run. */
int dist_set_active(dist_simd level);
/* "scalar" | "avx2" | "avx512" -> level; JVDB_EINVAL otherwise. */
int dist_simd_parse(const char *s, dist_simd *out);

/* The distance of one metric with the active kernels: what flat and HNSW search call. */
struct dist_space {
    jvdb_metric metric;
    uint32_t dim;
    dist_pair_fn dist;
    dist_batch_fn batch;
};

/* The space over vectors that are unit length for cosine (the HNSW graph's normalised copies).
 * JVDB_EINVAL for an unknown metric or dim 0. */
int dist_space_init(struct dist_space *sp, jvdb_metric metric, uint32_t dim);
/* The space over vectors as the store keeps them (any non-zero length for cosine): what exact scans
 * use.  Identical to dist_space_init for l2 and dot.  Queries are prepared (dist_query_prepare). */
int dist_space_init_stored(struct dist_space *sp, jvdb_metric metric, uint32_t dim);

static inline float dist_score(jvdb_metric metric, float d) { return metric == JVDB_METRIC_L2 ? d : -d; }

static inline float dist_from_score(jvdb_metric metric, float score)
{
    return metric == JVDB_METRIC_L2 ? score : -score;
}

/* Scales v to unit length.  JVDB_EINVAL (with a message) when its norm is zero or not finite
 * (NaN / infinite components); v is unchanged then. */
int dist_normalize(float *v, uint32_t dim);

/* Copies a caller's query into `out` (dim floats), refusing NaN/infinite components and, for cosine,
 * normalising it (in double), which both cosine spaces above expect.  JVDB_EINVAL with a message. */
int dist_query_prepare(jvdb_metric metric, const float *query, uint32_t dim, float *out);

/* Hint the cache to fetch the first `lines` cache lines of v (at most the whole vector). */
static inline void dist_prefetch(const float *v, uint32_t dim, uint32_t lines)
{
    if (!v) return;
    const char *p = (const char *)v;
    uint32_t have = (dim * (uint32_t)sizeof(float) + 63) / 64;
    if (lines > have) lines = have;
    for (uint32_t i = 0; i < lines; i++) __builtin_prefetch(p + 64 * (size_t)i, 0, 3);
}

#endif

/*
 * sq8.h — 8-bit scalar quantisation of the vectors the HNSW graph navigates on.
 *
 * A code row holds one signed byte per dimension, x[d] ~ centre[d] + scale * code[d] with code in
 * [-SQ8_MAX, SQ8_MAX], padded with zeros to sq8_row_bytes(dim) (a multiple of 16, so rows stay aligned
 * for the float-pointer handles the graph passes around).  One scale for every dimension keeps the
 * distances free of per-dimension weights: for l2 the centres cancel (|a - b|^2 = scale^2 * sum
 * (ca - cb)^2) and for dot and cosine the centres are 0 (a . b = scale^2 * sum ca cb), so the kernels
 * compare rows in code units and need no context.  The graph only compares these distances with one
 * another; callers re-rank its candidates with the full vectors.
 */
#ifndef JVDB_SEARCH_SQ8_H
#define JVDB_SEARCH_SQ8_H

#include <stdint.h>

#include "search/distance.h"

#define SQ8_MAX 127

struct sq8_quant {
    uint32_t dim;
    float scale;   /* > 0 once trained; 0 = untrained */
    float *centre; /* dim values; all 0 for dot and cosine */
};

/* Bytes of one code row. */
static inline uint32_t sq8_row_bytes(uint32_t dim) { return (dim + 15u) & ~15u; }

/* The distance space over code rows (row pointers cast to const float *): l2 sum (ca - cb)^2, dot and
 * cosine - sum ca cb.  JVDB_EINVAL for an unknown metric or dim 0. */
int dist_space_init_sq8(struct dist_space *sp, jvdb_metric metric, uint32_t dim);

/* An untrained quantiser for dim values.  JVDB_ENOMEM. */
int sq8_init(struct sq8_quant *q, uint32_t dim);
void sq8_free(struct sq8_quant *q);
int sq8_copy(struct sq8_quant *dst, const struct sq8_quant *src);

/* Running per-dimension range of training vectors. */
struct sq8_trainer {
    uint32_t dim, n;
    float *lo, *hi;
};

int sq8_trainer_init(struct sq8_trainer *t, uint32_t dim);
void sq8_trainer_add(struct sq8_trainer *t, const float *x);
void sq8_trainer_free(struct sq8_trainer *t);
/* Sets q from the range seen (l2: centres at mid-range; dot/cosine: centres 0), widened by `margin`
 * (1.1 = 10 % room for values not seen yet), and never finer than `min_scale`. */
void sq8_trainer_finish(const struct sq8_trainer *t, jvdb_metric metric, float margin, float min_scale,
                        struct sq8_quant *q);

/* How far x reaches beyond what q can code: max over d of |x[d] - centre[d]| / (scale * SQ8_MAX);
 * <= 1 means every value fits. */
float sq8_reach(const struct sq8_quant *q, const float *x);
/* Codes x (values beyond the range are clamped) into a row of sq8_row_bytes(dim) bytes. */
void sq8_encode(const struct sq8_quant *q, const float *x, int8_t *row);
/* Re-codes a row made with `from` for `to`. */
void sq8_recode(const struct sq8_quant *from, const struct sq8_quant *to, int8_t *row);

#endif

/*
 * sq8.h — 8-bit scalar quantisation of the vectors the HNSW graph navigates on.
 *
 * A code row holds one signed byte per dimension and a per-vector step: x[d] ~ centre[d] + step *
 * code[d] with code in [-SQ8_MAX, SQ8_MAX], where step = max_d |x[d] - centre[d]| / SQ8_MAX is the
 * row's own (so a vector of any magnitude uses the whole code range: one scale for the whole
 * database coded small vectors as all zeros).  Layout of sq8_row_bytes(dim) bytes (a multiple of 16,
 * so rows stay aligned for the float-pointer handles the graph passes around): the codes, zero
 * padding, then at row_bytes - 8 the step (float) and sum code^2 (int32).  Centres are per dimension
 * and shared (l2: mid-range of a sample; dot and cosine: 0), so the kernels need no context:
 *     l2      |a - b|^2 ~ sa^2 Na + sb^2 Nb - 2 sa sb sum ca cb   (the centres cancel)
 *     dot     - a . b  ~ - sa sb sum ca cb
 * The graph only compares these distances with one another; callers re-rank its candidates with the
 * full vectors.
 */
#ifndef JVDB_SEARCH_SQ8_H
#define JVDB_SEARCH_SQ8_H

#include <stdint.h>

#include "search/distance.h"

#define SQ8_MAX 127

struct sq8_quant {
    uint32_t dim;
    int trained;   /* 0 until the centres are fitted */
    float *centre; /* dim values; all 0 for dot and cosine */
};

/* Bytes of one code row: the codes and the 8-byte step/sum trailer, rounded up to 16. */
static inline uint32_t sq8_row_bytes(uint32_t dim) { return (dim + 8u + 15u) & ~15u; }

/* The distance space over code rows (row pointers cast to const float *): l2 and dot/cosine as
 * above.  JVDB_EINVAL for an unknown metric or dim 0. */
int dist_space_init_sq8(struct dist_space *sp, jvdb_metric metric, uint32_t dim);

/* An untrained quantiser for dim values.  JVDB_ENOMEM. */
int sq8_init(struct sq8_quant *q, uint32_t dim);
void sq8_free(struct sq8_quant *q);

/* Training vectors kept for their per-dimension medians. */
struct sq8_trainer {
    uint32_t dim, n, cap;
    float *vals; /* n rows of dim */
};

/* Room for `cap` training vectors (later ones are ignored).  JVDB_ENOMEM. */
int sq8_trainer_init(struct sq8_trainer *t, uint32_t dim, uint32_t cap);
void sq8_trainer_add(struct sq8_trainer *t, const float *x);
void sq8_trainer_free(struct sq8_trainer *t);
/* Sets q's centres (l2: the per-dimension median of what was seen, which stays inside the bulk of
 * the data however wide its magnitudes range, where mid-range or mean would sit far from the small
 * vectors and code them all alike; dot/cosine: 0) and marks it trained.  JVDB_ENOMEM. */
int sq8_trainer_finish(const struct sq8_trainer *t, jvdb_metric metric, struct sq8_quant *q);

/* Codes x into a row of sq8_row_bytes(dim) bytes. */
void sq8_encode(const struct sq8_quant *q, const float *x, int8_t *row);
/* The vector a row stands for (dim floats). */
void sq8_decode(const struct sq8_quant *q, const int8_t *row, float *out);
/* 1 if a row (from a file) is one sq8_encode could have made: codes in range, padding zero, a
 * finite step >= 0 and the sum of squared codes its trailer says. */
int sq8_row_valid(const int8_t *row, uint32_t dim);
/* The step of a row (0 for a row at the centre). */
float sq8_row_step(const int8_t *row, uint32_t dim);

#endif

#ifndef JVDB_BENCH_DATAGEN_H
#define JVDB_BENCH_DATAGEN_H
/*
 * datagen — deterministic clustered vectors for the benchmarks.
 *
 * The data set is a mixture of `clusters` isotropic gaussians: centre coordinates are N(0, 1),
 * a row is its centre plus N(0, sigma^2) noise per coordinate, and a row's cluster is drawn
 * uniformly.  Every row is a pure function of (seed, row number): nothing depends on the rows
 * before it, so any slice can be regenerated on its own (two benchmark programs, or a search
 * benchmark computing ground truth, see the same bytes without sharing a file).  Queries come from
 * a separate stream of the same distribution, so they are never copies of stored rows.
 *
 * Determinism: integers are bit-exact everywhere; floats use only +, *, sqrt and the libm log, cos
 * and sin of Box-Muller, so a given seed gives identical vectors on any machine with the same libm
 * (and in practice across glibc versions, whose log/cos are accurate to within an ulp).
 */
#include <stddef.h>
#include <stdint.h>

typedef struct dg_spec {
    uint64_t n;        /* rows in the data set */
    uint32_t dim;      /* coordinates per row */
    uint32_t clusters; /* number of gaussian clusters, >= 1 */
    uint64_t seed;
    float sigma; /* per-coordinate standard deviation around the centre */
} dg_spec;

typedef struct dg_gen dg_gen;

/* The defaults of issue 2's measurement: 1,000,000 x 128, 1,000 clusters, seed 42, sigma 0.35. */
void dg_spec_default(dg_spec *s);

/* Computes the cluster centres.  Returns 0, or -1 with errno set (EINVAL, ENOMEM). */
int dg_open(const dg_spec *spec, dg_gen **out);
void dg_close(dg_gen *g);
const dg_spec *dg_get_spec(const dg_gen *g);

/* Writes row `row` (dim floats) to `out` and returns its cluster number. */
uint32_t dg_row(const dg_gen *g, uint64_t row, float *out);
/* Writes rows [first, first + count) contiguously to `out` (count * dim floats). */
void dg_rows(const dg_gen *g, uint64_t first, uint64_t count, float *out);
/* Query `i` of the query stream (independent of the rows, same distribution). */
uint32_t dg_query(const dg_gen *g, uint64_t i, float *out);
const float *dg_centre(const dg_gen *g, uint32_t cluster);

/* Writes all n rows as .fvecs (per row: int32 dim, then dim float32, little endian).
 * Returns 0, or -1 with errno set. */
int dg_write_fvecs(const dg_gen *g, const char *path);
/* Writes queries 0..count-1 as .fvecs. */
int dg_write_queries_fvecs(const dg_gen *g, uint64_t count, const char *path);
/* Reads a whole .fvecs file into a malloc'd array (free with free()).  Returns 0, or -1 with errno
 * set (EINVAL for a malformed file: rows of differing dimension or a cut-short row). */
int dg_read_fvecs(const char *path, float **vectors, uint64_t *n, uint32_t *dim);

#endif

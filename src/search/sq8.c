/*
 * sq8.c — the 8-bit scalar quantiser of the HNSW graph's navigation rows and its distance kernels
 * (sq8.h says what a row means).
 *
 * Invariant: a row is only ever compared with rows coded with the same centres; whoever changes the
 * centres re-codes every row first (sq8_decode + sq8_encode).  A row's step and sum of squared codes
 * travel with it, so rows of very different magnitudes compare correctly.  The kernels accumulate the
 * code products in 32-bit integers over chunks of SQ8_CHUNK dimensions, which cannot overflow
 * (127^2 * 16384 < 2^31), combine in double (steps up to ~1e19 squared stay finite), and are compiled
 * twice from one body: plainly and with AVX2 enabled, where gcc vectorises the byte loops.
 */
#include "search/sq8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define SQ8_CHUNK 16384u

/* The step and sum of squared codes from a row's trailer. */
static inline void sq8_trailer(const int8_t *row, uint32_t dim, double *step, double *sum)
{
    float st;
    int32_t n;
    memcpy(&st, row + sq8_row_bytes(dim) - 8, 4);
    memcpy(&n, row + sq8_row_bytes(dim) - 4, 4);
    *step = st;
    *sum = n;
}

#define SQ8_BODIES(sfx, attr)                                                                                         \
    attr static int64_t sq8_dot_##sfx(const int8_t *a, const int8_t *b, uint32_t dim)                                 \
    {                                                                                                                 \
        int64_t tot = 0;                                                                                              \
        for (uint32_t o = 0; o < dim; o += SQ8_CHUNK) {                                                               \
            uint32_t e = dim - o < SQ8_CHUNK ? dim : o + SQ8_CHUNK;                                                   \
            int32_t acc = 0;                                                                                          \
            for (uint32_t i = o; i < e; i++) acc += (int32_t)a[i] * (int32_t)b[i];                                    \
            tot += acc;                                                                                               \
        }                                                                                                             \
        return tot;                                                                                                   \
    }                                                                                                                 \
    attr static float sq8_l2_##sfx(const float *pa, const float *pb, uint32_t dim)                                    \
    {                                                                                                                 \
        const int8_t *a = (const int8_t *)pa, *b = (const int8_t *)pb;                                                \
        double sa, na, sb, nb;                                                                                        \
        sq8_trailer(a, dim, &sa, &na);                                                                                \
        sq8_trailer(b, dim, &sb, &nb);                                                                                \
        double d = sa * sa * na + sb * sb * nb - 2.0 * sa * sb * (double)sq8_dot_##sfx(a, b, dim);                    \
        return d > 0.0 ? (float)d : 0.0f;                                                                             \
    }                                                                                                                 \
    attr static float sq8_nip_##sfx(const float *pa, const float *pb, uint32_t dim)                                   \
    {                                                                                                                 \
        const int8_t *a = (const int8_t *)pa, *b = (const int8_t *)pb;                                                \
        double sa, na, sb, nb;                                                                                        \
        sq8_trailer(a, dim, &sa, &na);                                                                                \
        sq8_trailer(b, dim, &sb, &nb);                                                                                \
        return (float)(-sa * sb * (double)sq8_dot_##sfx(a, b, dim));                                                  \
    }                                                                                                                 \
    attr static void sq8_l2_batch_##sfx(const float *q, const float *const *v, uint32_t n, uint32_t dim, float *out)  \
    {                                                                                                                 \
        for (uint32_t i = 0; i < n; i++) {                                                                            \
            if (i + 2 < n && v[i + 2]) __builtin_prefetch(v[i + 2], 0, 3);                                            \
            out[i] = v[i] ? sq8_l2_##sfx(q, v[i], dim) : INFINITY;                                                    \
        }                                                                                                             \
    }                                                                                                                 \
    attr static void sq8_nip_batch_##sfx(const float *q, const float *const *v, uint32_t n, uint32_t dim, float *out) \
    {                                                                                                                 \
        for (uint32_t i = 0; i < n; i++) {                                                                            \
            if (i + 2 < n && v[i + 2]) __builtin_prefetch(v[i + 2], 0, 3);                                            \
            out[i] = v[i] ? sq8_nip_##sfx(q, v[i], dim) : INFINITY;                                                   \
        }                                                                                                             \
    }

SQ8_BODIES(scalar, )
#if defined(__x86_64__) || defined(__i386__)
#define SQ8_X86 1
SQ8_BODIES(avx2, __attribute__((target("avx2"))))
#else
#define SQ8_X86 0
#endif

int dist_space_init_sq8(struct dist_space *sp, jvdb_metric metric, uint32_t dim)
{
    if (dim == 0) return err_set(JVDB_EINVAL, "dimension must be at least 1");
    if (metric != JVDB_METRIC_L2 && metric != JVDB_METRIC_COSINE && metric != JVDB_METRIC_DOT)
        return err_set(JVDB_EINVAL, "unknown metric %d", (int)metric);
    sp->metric = metric;
    sp->dim = dim;
    int l2 = metric == JVDB_METRIC_L2;
#if SQ8_X86
    /* Follows the float kernels' choice, so JVDB_SIMD=scalar also reaches these. */
    if (dist_active()->level >= DIST_SIMD_AVX2) {
        sp->dist = l2 ? sq8_l2_avx2 : sq8_nip_avx2;
        sp->batch = l2 ? sq8_l2_batch_avx2 : sq8_nip_batch_avx2;
        return JVDB_OK;
    }
#endif
    sp->dist = l2 ? sq8_l2_scalar : sq8_nip_scalar;
    sp->batch = l2 ? sq8_l2_batch_scalar : sq8_nip_batch_scalar;
    return JVDB_OK;
}

int sq8_init(struct sq8_quant *q, uint32_t dim)
{
    q->dim = dim;
    q->trained = 0;
    q->centre = calloc(dim ? dim : 1, sizeof *q->centre);
    return q->centre ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
}

void sq8_free(struct sq8_quant *q)
{
    free(q->centre);
    q->centre = NULL;
    q->trained = 0;
}

int sq8_trainer_init(struct sq8_trainer *t, uint32_t dim, uint32_t cap)
{
    t->dim = dim;
    t->n = 0;
    t->cap = cap;
    t->vals = malloc((size_t)(cap ? cap : 1) * (dim ? dim : 1) * sizeof *t->vals);
    return t->vals ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
}

void sq8_trainer_add(struct sq8_trainer *t, const float *x)
{
    if (t->n >= t->cap) return;
    memcpy(t->vals + (size_t)t->n++ * t->dim, x, (size_t)t->dim * sizeof *x);
}

void sq8_trainer_free(struct sq8_trainer *t)
{
    free(t->vals);
    t->vals = NULL;
}

/* qsort order of floats. */
static int sq8_float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int sq8_trainer_finish(const struct sq8_trainer *t, jvdb_metric metric, struct sq8_quant *q)
{
    float *col = NULL;
    if (metric == JVDB_METRIC_L2 && t->n && !(col = malloc((size_t)t->n * sizeof *col)))
        return err_set(JVDB_ENOMEM, "out of memory");
    for (uint32_t d = 0; d < t->dim; d++) {
        q->centre[d] = 0.0f;
        if (!col) continue;
        for (uint32_t i = 0; i < t->n; i++) col[i] = t->vals[(size_t)i * t->dim + d];
        qsort(col, t->n, sizeof *col, sq8_float_cmp);
        q->centre[d] = col[t->n / 2];
    }
    free(col);
    q->trained = 1;
    return JVDB_OK;
}

void sq8_encode(const struct sq8_quant *q, const float *x, int8_t *row)
{
    double worst = 0.0;
    for (uint32_t d = 0; d < q->dim; d++) {
        double r = fabs((double)x[d] - (double)q->centre[d]);
        if (r > worst) worst = r;
    }
    float step = (float)(worst / SQ8_MAX);
    /* A step that rounds to 0 or cannot be inverted codes the row as the centre. */
    double inv = step > 0.0f && isfinite(step) ? 1.0 / (double)step : 0.0;
    if (!(inv > 0.0) || !isfinite(inv)) step = 0.0f, inv = 0.0;
    int32_t sum = 0;
    uint32_t rb = sq8_row_bytes(q->dim), d = 0;
    for (; d < q->dim; d++) {
        double v = ((double)x[d] - (double)q->centre[d]) * inv;
        int c = v >= SQ8_MAX ? SQ8_MAX : v <= -SQ8_MAX ? -SQ8_MAX : v == v ? (int)lrint(v) : 0;
        row[d] = (int8_t)c;
        sum += c * c;
    }
    for (; d < rb - 8; d++) row[d] = 0;
    memcpy(row + rb - 8, &step, 4);
    memcpy(row + rb - 4, &sum, 4);
}

void sq8_decode(const struct sq8_quant *q, const int8_t *row, float *out)
{
    float step = sq8_row_step(row, q->dim);
    for (uint32_t d = 0; d < q->dim; d++) out[d] = q->centre[d] + step * (float)row[d];
}

int sq8_row_valid(const int8_t *row, uint32_t dim)
{
    uint32_t rb = sq8_row_bytes(dim);
    int32_t sum = 0, n;
    int bad = 0;
    /* Branch-free, so the compiler vectorises it: every node of a loaded graph passes here. */
    for (uint32_t d = 0; d < dim; d++) {
        bad |= row[d] < -SQ8_MAX;
        sum += (int32_t)row[d] * row[d];
    }
    for (uint32_t d = dim; d < rb - 8; d++) bad |= row[d] != 0;
    if (bad) return 0;
    float step = sq8_row_step(row, dim);
    memcpy(&n, row + rb - 4, 4);
    return isfinite(step) && step >= 0.0f && n == sum;
}

float sq8_row_step(const int8_t *row, uint32_t dim)
{
    float step;
    memcpy(&step, row + sq8_row_bytes(dim) - 8, 4);
    return step;
}

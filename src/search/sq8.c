/*
 * sq8.c — the 8-bit scalar quantiser of the HNSW graph's navigation rows and its distance kernels
 * (sq8.h says what a row means).
 *
 * Invariant: a row is only ever compared with rows coded by the same quantiser; whoever changes the
 * quantiser re-codes every row first (sq8_recode).  The kernels accumulate in 32-bit integers over
 * chunks of SQ8_CHUNK dimensions, which cannot overflow (254^2 * 16384 < 2^31), and are compiled
 * twice from one body: plainly and with AVX2 enabled, where gcc vectorises the byte loops.
 */
#include "search/sq8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define SQ8_CHUNK 16384u

#define SQ8_BODIES(sfx, attr)                                                                                         \
    attr static float sq8_l2_##sfx(const float *pa, const float *pb, uint32_t dim)                                    \
    {                                                                                                                 \
        const int8_t *a = (const int8_t *)pa, *b = (const int8_t *)pb;                                                \
        int64_t tot = 0;                                                                                              \
        for (uint32_t o = 0; o < dim; o += SQ8_CHUNK) {                                                               \
            uint32_t e = dim - o < SQ8_CHUNK ? dim : o + SQ8_CHUNK;                                                   \
            int32_t acc = 0;                                                                                          \
            for (uint32_t i = o; i < e; i++) {                                                                        \
                int32_t d = (int32_t)a[i] - (int32_t)b[i];                                                            \
                acc += d * d;                                                                                         \
            }                                                                                                         \
            tot += acc;                                                                                               \
        }                                                                                                             \
        return (float)tot;                                                                                            \
    }                                                                                                                 \
    attr static float sq8_nip_##sfx(const float *pa, const float *pb, uint32_t dim)                                   \
    {                                                                                                                 \
        const int8_t *a = (const int8_t *)pa, *b = (const int8_t *)pb;                                                \
        int64_t tot = 0;                                                                                              \
        for (uint32_t o = 0; o < dim; o += SQ8_CHUNK) {                                                               \
            uint32_t e = dim - o < SQ8_CHUNK ? dim : o + SQ8_CHUNK;                                                   \
            int32_t acc = 0;                                                                                          \
            for (uint32_t i = o; i < e; i++) acc += (int32_t)a[i] * (int32_t)b[i];                                    \
            tot += acc;                                                                                               \
        }                                                                                                             \
        return -(float)tot;                                                                                           \
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
    q->scale = 0.0f;
    q->centre = calloc(dim ? dim : 1, sizeof *q->centre);
    return q->centre ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
}

void sq8_free(struct sq8_quant *q)
{
    free(q->centre);
    q->centre = NULL;
    q->scale = 0.0f;
}

int sq8_copy(struct sq8_quant *dst, const struct sq8_quant *src)
{
    int rc = sq8_init(dst, src->dim);
    if (rc) return rc;
    dst->scale = src->scale;
    memcpy(dst->centre, src->centre, (size_t)src->dim * sizeof *src->centre);
    return JVDB_OK;
}

int sq8_trainer_init(struct sq8_trainer *t, uint32_t dim)
{
    t->dim = dim;
    t->n = 0;
    t->lo = malloc((size_t)(dim ? dim : 1) * sizeof *t->lo);
    t->hi = malloc((size_t)(dim ? dim : 1) * sizeof *t->hi);
    if (!t->lo || !t->hi) {
        sq8_trainer_free(t);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    return JVDB_OK;
}

void sq8_trainer_add(struct sq8_trainer *t, const float *x)
{
    if (t->n++ == 0) {
        memcpy(t->lo, x, (size_t)t->dim * sizeof *x);
        memcpy(t->hi, x, (size_t)t->dim * sizeof *x);
        return;
    }
    for (uint32_t d = 0; d < t->dim; d++) {
        if (x[d] < t->lo[d]) t->lo[d] = x[d];
        if (x[d] > t->hi[d]) t->hi[d] = x[d];
    }
}

void sq8_trainer_free(struct sq8_trainer *t)
{
    free(t->lo);
    free(t->hi);
    t->lo = t->hi = NULL;
}

void sq8_trainer_finish(const struct sq8_trainer *t, jvdb_metric metric, float margin, float min_scale,
                        struct sq8_quant *q)
{
    double half = 0.0;
    for (uint32_t d = 0; d < t->dim; d++) {
        double c = 0.0, h;
        if (t->n && metric == JVDB_METRIC_L2) {
            c = ((double)t->lo[d] + (double)t->hi[d]) / 2.0;
            h = ((double)t->hi[d] - (double)t->lo[d]) / 2.0;
        } else {
            h = t->n ? fmax(fabs((double)t->lo[d]), fabs((double)t->hi[d])) : 0.0;
        }
        q->centre[d] = (float)c;
        if (h > half) half = h;
    }
    double s = half * margin / SQ8_MAX;
    if (!(s >= min_scale)) s = min_scale;
    if (!(s > 0.0) || !isfinite(s)) s = 1e-30;
    q->scale = (float)s;
}

float sq8_reach(const struct sq8_quant *q, const float *x)
{
    float worst = 0.0f;
    for (uint32_t d = 0; d < q->dim; d++) {
        float r = fabsf(x[d] - q->centre[d]);
        if (r > worst) worst = r;
    }
    return worst / (q->scale * SQ8_MAX);
}

/* Nearest code of a value already expressed in steps from the centre, clamped. */
static int8_t sq8_code(float steps)
{
    if (!(steps > -SQ8_MAX)) return steps != steps ? 0 : -SQ8_MAX;
    if (steps >= SQ8_MAX) return SQ8_MAX;
    return (int8_t)lrintf(steps);
}

void sq8_encode(const struct sq8_quant *q, const float *x, int8_t *row)
{
    float inv = 1.0f / q->scale;
    uint32_t d = 0;
    for (; d < q->dim; d++) row[d] = sq8_code((x[d] - q->centre[d]) * inv);
    for (; d < sq8_row_bytes(q->dim); d++) row[d] = 0;
}

void sq8_recode(const struct sq8_quant *from, const struct sq8_quant *to, int8_t *row)
{
    float inv = 1.0f / to->scale;
    for (uint32_t d = 0; d < to->dim; d++)
        row[d] = sq8_code((from->centre[d] + from->scale * (float)row[d] - to->centre[d]) * inv);
}

/*
 * search_testutil.c — data generation, reference search and timing for the search tests and the
 * search benchmark (see search_testutil.h).  The reference is deliberately naive so that it shares
 * no code, and no rounding, with the library's kernels and heaps.
 */
#include "search_testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t tu_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double tu_uniform(tu_rng *r) { return (double)(tu_next(r) >> 11) * 0x1.0p-53; }

double tu_gauss(tu_rng *r)
{
    double u = tu_uniform(r), v = tu_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

static void tu_normalize(float *v, uint32_t dim)
{
    double ss = 0;
    for (uint32_t i = 0; i < dim; i++) ss += (double)v[i] * v[i];
    double inv = ss > 0 ? 1.0 / sqrt(ss) : 1.0;
    for (uint32_t i = 0; i < dim; i++) v[i] = (float)(v[i] * inv);
}

void tu_data_make(tu_data *d, uint32_t n, uint32_t dim, uint32_t clusters, double sigma, uint64_t seed,
                  jvdb_metric metric)
{
    tu_rng r = { seed };
    float *centres = malloc((size_t)clusters * dim * sizeof *centres);
    for (size_t i = 0; i < (size_t)clusters * dim; i++) centres[i] = (float)tu_gauss(&r);
    d->n = n;
    d->dim = dim;
    d->block = malloc((size_t)n * dim * sizeof *d->block);
    d->slots = malloc((size_t)(n ? n : 1) * sizeof *d->slots);
    for (uint32_t i = 0; i < n; i++) {
        const float *c = centres + (size_t)(tu_next(&r) % clusters) * dim;
        float *v = d->block + (size_t)i * dim;
        for (uint32_t j = 0; j < dim; j++) v[j] = c[j] + (float)(sigma * tu_gauss(&r));
        if (metric == JVDB_METRIC_COSINE) tu_normalize(v, dim);
        d->slots[i] = v;
    }
    free(centres);
}

void tu_data_free(tu_data *d)
{
    free(d->block);
    free(d->slots);
    memset(d, 0, sizeof *d);
}

void tu_query(const tu_data *d, tu_rng *r, double sigma, float *q)
{
    const float *base = d->block + (size_t)(tu_next(r) % d->n) * d->dim;
    for (uint32_t j = 0; j < d->dim; j++) q[j] = base[j] + (float)(sigma * tu_gauss(r));
}

typedef struct tu_hit {
    double dist;
    uint32_t slot;
} tu_hit;

static int tu_hit_cmp(const void *a, const void *b)
{
    const tu_hit *x = a, *y = b;
    if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

uint32_t tu_reference(const float *const *slots, uint32_t nslots, uint32_t dim, jvdb_metric metric, const float *query,
                      uint32_t k, int (*accept)(void *, uint32_t), void *ctx, int use_threshold, float threshold,
                      uint32_t *out_slots, double *out_scores)
{
    float *q = malloc(dim * sizeof *q);
    memcpy(q, query, dim * sizeof *q);
    if (metric == JVDB_METRIC_COSINE) tu_normalize(q, dim);
    tu_hit *all = malloc((size_t)(nslots ? nslots : 1) * sizeof *all);
    uint32_t n = 0;
    for (uint32_t s = 0; s < nslots; s++) {
        if (!slots[s] || (accept && !accept(ctx, s))) continue;
        double acc = 0, vv = 0;
        for (uint32_t j = 0; j < dim; j++) {
            if (metric == JVDB_METRIC_L2) {
                double t = (double)slots[s][j] - q[j];
                acc += t * t;
            } else {
                acc += (double)slots[s][j] * q[j];
            }
            vv += (double)slots[s][j] * slots[s][j];
        }
        /* The store keeps cosine vectors as given: divide by their length (0 for a zero one). */
        if (metric == JVDB_METRIC_COSINE) acc = vv > 0 ? acc / sqrt(vv) : 0;
        double score = acc, dist = metric == JVDB_METRIC_L2 ? acc : -acc;
        if (use_threshold && (metric == JVDB_METRIC_L2 ? score > threshold : score < threshold)) continue;
        all[n].dist = dist;
        all[n++].slot = s;
    }
    qsort(all, n, sizeof *all, tu_hit_cmp);
    if (n > k) n = k;
    for (uint32_t i = 0; i < n; i++) {
        out_slots[i] = all[i].slot;
        if (out_scores) out_scores[i] = metric == JVDB_METRIC_L2 ? all[i].dist : -all[i].dist;
    }
    free(all);
    free(q);
    return n;
}

uint32_t tu_overlap(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
    uint32_t hits = 0;
    for (uint32_t i = 0; i < na; i++) {
        for (uint32_t j = 0; j < nb; j++) {
            if (a[i] == b[j]) {
                hits++;
                break;
            }
        }
    }
    return hits;
}

double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double tu_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

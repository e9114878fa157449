/*
 * datagen.c — owns the benchmarks' synthetic data: clustered gaussian vectors generated from a seed,
 * in memory or as .fvecs files (see datagen.h for the distribution and the determinism promise).
 *
 * Randomness is splitmix64 keyed by (seed, stream, index): each row, query and centre has its own
 * counter-based stream, which is what lets any row be produced without producing the ones before it.
 */
#include "datagen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "datagen writes .fvecs by copying memory, which is only right on little-endian machines"
#endif

enum { DG_STREAM_CENTRE = 1, DG_STREAM_ROW = 2, DG_STREAM_QUERY = 3 };

#define DG_GOLDEN 0x9e3779b97f4a7c15ull

struct dg_gen {
    dg_spec spec;
    float *centres; /* clusters * dim */
};

/* splitmix64's output function: a bijective mix with full avalanche. */
static uint64_t dg_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t s;
} dg_rng;

static dg_rng dg_stream(uint64_t seed, uint64_t stream, uint64_t index)
{
    /* Mixing twice keeps nearby (stream, index) pairs from starting on overlapping sequences. */
    dg_rng r = { dg_mix(dg_mix(seed ^ dg_mix(stream)) + index * DG_GOLDEN) };
    return r;
}

static uint64_t dg_next(dg_rng *r)
{
    r->s += DG_GOLDEN;
    return dg_mix(r->s);
}

/* Uniform in (0, 1]: never 0, so log() in Box-Muller stays finite. */
static double dg_unit(dg_rng *r) { return (double)((dg_next(r) >> 11) + 1) * 0x1.0p-53; }

/* out[i] = base[i] + scale * N(0,1) for i < dim (base may be NULL for 0). */
static void dg_gauss(dg_rng *r, const float *base, float scale, uint32_t dim, float *out)
{
    const double two_pi = 6.283185307179586476925;
    for (uint32_t i = 0; i < dim; i += 2) {
        double rad = sqrt(-2.0 * log(dg_unit(r)));
        double ang = two_pi * dg_unit(r);
        double z0 = rad * cos(ang), z1 = rad * sin(ang);
        out[i] = (base ? base[i] : 0.0f) + scale * (float)z0;
        if (i + 1 < dim) out[i + 1] = (base ? base[i + 1] : 0.0f) + scale * (float)z1;
    }
}

void dg_spec_default(dg_spec *s)
{
    s->n = 1000000;
    s->dim = 128;
    s->clusters = 1000;
    s->seed = 42;
    s->sigma = 0.35f;
}

int dg_open(const dg_spec *spec, dg_gen **out)
{
    if (spec->dim == 0 || spec->clusters == 0 || !(spec->sigma >= 0.0f)) {
        errno = EINVAL;
        return -1;
    }
    dg_gen *g = calloc(1, sizeof *g);
    if (!g) return -1;
    g->spec = *spec;
    g->centres = malloc((size_t)spec->clusters * spec->dim * sizeof(float));
    if (!g->centres) {
        free(g);
        return -1;
    }
    for (uint32_t c = 0; c < spec->clusters; c++) {
        dg_rng r = dg_stream(spec->seed, DG_STREAM_CENTRE, c);
        dg_gauss(&r, NULL, 1.0f, spec->dim, g->centres + (size_t)c * spec->dim);
    }
    *out = g;
    return 0;
}

void dg_close(dg_gen *g)
{
    if (!g) return;
    free(g->centres);
    free(g);
}

const dg_spec *dg_get_spec(const dg_gen *g) { return &g->spec; }

const float *dg_centre(const dg_gen *g, uint32_t cluster)
{
    return g->centres + (size_t)(cluster % g->spec.clusters) * g->spec.dim;
}

static uint32_t dg_draw(const dg_gen *g, uint64_t stream, uint64_t index, float *out)
{
    dg_rng r = dg_stream(g->spec.seed, stream, index);
    uint32_t c = (uint32_t)(dg_next(&r) % g->spec.clusters);
    dg_gauss(&r, dg_centre(g, c), g->spec.sigma, g->spec.dim, out);
    return c;
}

uint32_t dg_row(const dg_gen *g, uint64_t row, float *out) { return dg_draw(g, DG_STREAM_ROW, row, out); }

uint32_t dg_query(const dg_gen *g, uint64_t i, float *out) { return dg_draw(g, DG_STREAM_QUERY, i, out); }

void dg_rows(const dg_gen *g, uint64_t first, uint64_t count, float *out)
{
    for (uint64_t i = 0; i < count; i++) dg_row(g, first + i, out + i * g->spec.dim);
}

/* Writes rows 0..count-1 of one stream (draw = dg_row or dg_query) as .fvecs. */
static int dg_write_stream(const dg_gen *g, uint32_t (*draw)(const dg_gen *, uint64_t, float *), uint64_t count,
                           const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint32_t dim = g->spec.dim;
    int32_t d = (int32_t)dim;
    float *row = malloc((size_t)dim * sizeof(float));
    int ok = row != NULL;
    for (uint64_t i = 0; ok && i < count; i++) {
        draw(g, i, row);
        ok = fwrite(&d, sizeof d, 1, f) == 1 && fwrite(row, sizeof(float), dim, f) == dim;
    }
    int saved = errno;
    free(row);
    if (fclose(f) != 0) ok = 0;
    else errno = saved;
    if (!ok) {
        saved = errno;
        remove(path);
        errno = saved;
        return -1;
    }
    return 0;
}

int dg_write_fvecs(const dg_gen *g, const char *path) { return dg_write_stream(g, dg_row, g->spec.n, path); }

int dg_write_queries_fvecs(const dg_gen *g, uint64_t count, const char *path)
{
    return dg_write_stream(g, dg_query, count, path);
}

int dg_read_fvecs(const char *path, float **vectors, uint64_t *n, uint32_t *dim)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int32_t d = 0;
    float *v = NULL;
    uint64_t rows = 0, cap = 0;
    int err = 0;
    uint32_t want = 0;
    for (;;) {
        size_t got = fread(&d, sizeof d, 1, f);
        if (got != 1) {
            if (ferror(f)) err = errno ? errno : EIO;
            break;
        }
        if (d <= 0 || (want && (uint32_t)d != want)) {
            err = EINVAL;
            break;
        }
        want = (uint32_t)d;
        if (rows == cap) {
            cap = cap ? cap * 2 : 1024;
            float *nv = realloc(v, cap * want * sizeof(float));
            if (!nv) {
                err = ENOMEM;
                break;
            }
            v = nv;
        }
        if (fread(v + rows * want, sizeof(float), want, f) != want) {
            err = ferror(f) ? (errno ? errno : EIO) : EINVAL; /* EOF inside a row: cut short */
            break;
        }
        rows++;
    }
    fclose(f);
    if (err) {
        free(v);
        errno = err;
        return -1;
    }
    *vectors = v;
    *n = rows;
    *dim = want;
    return 0;
}

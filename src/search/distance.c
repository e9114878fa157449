/*
 * distance.c — owns the distance kernels and the start-up choice between them.
 *
 * Three primitives cover all three metrics: squared L2, negated inner product (dot, and cosine between
 * unit vectors: the HNSW graph's normalised copies), and negated cosine of a unit query and a vector of
 * any length (the exact scan over vectors stored as given), which accumulates the vector's squared norm
 * beside the inner product in the same pass, so it reads each vector once and needs no per-slot state
 * (see distance.h for the sign convention).  Each exists as a pair kernel (one vector against another:
 * HNSW neighbour selection) and a batch kernel (one query against an array of vector pointers, NULL =
 * empty slot: the exact-scan and HNSW-expansion hot loops).  The batch kernel
 * scores four vectors per pass so each query register load serves four vectors, and prefetches the
 * next four, which matters because the vectors behind the pointers are scattered over mmapped segments.
 *
 * SIMD code is compiled per function with __attribute__((target)), never with global -m flags, so the
 * library runs on any x86-64 (and builds scalar-only elsewhere); the CPU is asked once, at the first
 * dist_active() call.  Tails (dim not a multiple of the vector width) use masked loads, which neither
 * fault nor read past the vector.  The generic bodies are always_inline with a constant `mode`, so
 * each metric gets its own straight-line code without a copy of the loop per metric.
 *
 * Cosine against a stored vector divides by its norm, summed in float32: exact enough while the
 * squared norm is a normal float far above the denormal range.  Below DIST_COS_MIN_SQ (a vector whose
 * components are all around 1e-15 or smaller, which put accepts as long as it is not zero) the float
 * sums lose their precision or vanish, so that vector is scored again in double (dist_cos_exact): a
 * branch that is never taken for ordinary data.
 */
#include "search/distance.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "store/validate.h"

#if defined(__x86_64__) || defined(__i386__)
#define DIST_X86 1
#include <immintrin.h>
#else
#define DIST_X86 0
#endif

#define DIST_INLINE static inline __attribute__((always_inline))

/* ---- scalar ---- */

/* What a generic kernel body computes; always a compile-time constant. */
enum { DIST_NIP = 0, DIST_L2 = 1, DIST_COS = 2 };

/* Squared norms below this (2^-100) are re-summed in double: see the file comment. */
#define DIST_COS_MIN_SQ 0x1p-100f

/* -(q . v) / |v| in double, for vectors too small for the float32 sums; 0 for a zero vector (no
 * direction: put refuses those for cosine, so only a caller's own table can hold one). */
static __attribute__((noinline)) float dist_cos_exact(const float *q, const float *v, uint32_t dim)
{
    double dot = 0.0, vv = 0.0;
    for (uint32_t i = 0; i < dim; i++) {
        dot += (double)q[i] * (double)v[i];
        vv += (double)v[i] * (double)v[i];
    }
    return vv > 0.0 ? (float)(-dot / sqrt(vv)) : 0.f;
}

/* The cosine distance from the float sums, or from the double fallback when they are too small. */
DIST_INLINE float dist_cos_finish(float dot, float vv, const float *q, const float *v, uint32_t dim)
{
    if (__builtin_expect(vv >= DIST_COS_MIN_SQ, 1)) return -dot / sqrtf(vv);
    return dist_cos_exact(q, v, dim);
}

DIST_INLINE float dist_pair_scalar(const float *a, const float *b, uint32_t dim, int mode)
{
    /* Four partial sums break the dependency chain; the order differs from the SIMD kernels, which
     * is why the tests compare them within a tolerance rather than bit for bit. */
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    uint32_t i = 0;
    if (mode == DIST_L2) {
        for (; i + 4 <= dim; i += 4) {
            float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
            float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
            s0 += d0 * d0;
            s1 += d1 * d1;
            s2 += d2 * d2;
            s3 += d3 * d3;
        }
        for (; i < dim; i++) {
            float d = a[i] - b[i];
            s0 += d * d;
        }
        return (s0 + s1) + (s2 + s3);
    }
    if (mode == DIST_COS) {
        /* a is the unit query, b the stored vector: s sums a.b, t sums b.b. */
        float t0 = 0.f, t1 = 0.f;
        for (; i + 2 <= dim; i += 2) {
            s0 += a[i] * b[i];
            s1 += a[i + 1] * b[i + 1];
            t0 += b[i] * b[i];
            t1 += b[i + 1] * b[i + 1];
        }
        for (; i < dim; i++) {
            s0 += a[i] * b[i];
            t0 += b[i] * b[i];
        }
        return dist_cos_finish(s0 + s1, t0 + t1, a, b, dim);
    }
    for (; i + 4 <= dim; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < dim; i++) s0 += a[i] * b[i];
    return -((s0 + s1) + (s2 + s3));
}

DIST_INLINE void dist_four_scalar(const float *q, const float *const *p, uint32_t dim, float *out, int mode)
{
    for (int j = 0; j < 4; j++) out[j] = dist_pair_scalar(q, p[j], dim, mode);
}

/* The glue is the same for every instruction set: the batch driver, which scores groups of four
 * with the set's four-vector kernel while prefetching the next group, and the wrappers that fix the
 * `mode`.  One macro writes it for all three so they cannot drift apart; the arithmetic itself
 * stays spelled out per set above and below. */
#define DIST_DEFINE_KERNELS(isa, TARGET, LEVEL)                                                                        \
    DIST_INLINE TARGET void dist_batch_##isa(const float *q, const float *const *vecs, uint32_t n, uint32_t dim,       \
                                             float *out, int mode)                                                     \
    {                                                                                                                  \
        uint32_t i = 0;                                                                                                \
        for (; i + 4 <= n; i += 4) {                                                                                   \
            for (uint32_t j = i + 4; j < i + 8 && j < n; j++) dist_prefetch(vecs[j], dim, 4);                          \
            if (vecs[i] && vecs[i + 1] && vecs[i + 2] && vecs[i + 3]) {                                                \
                dist_four_##isa(q, vecs + i, dim, out + i, mode);                                                      \
                continue;                                                                                              \
            }                                                                                                          \
            for (uint32_t j = i; j < i + 4; j++) out[j] = vecs[j] ? dist_pair_##isa(q, vecs[j], dim, mode) : INFINITY; \
        }                                                                                                              \
        for (; i < n; i++) out[i] = vecs[i] ? dist_pair_##isa(q, vecs[i], dim, mode) : INFINITY;                       \
    }                                                                                                                  \
    static TARGET float dist_l2sq_##isa(const float *a, const float *b, uint32_t dim)                                  \
    {                                                                                                                  \
        return dist_pair_##isa(a, b, dim, DIST_L2);                                                                    \
    }                                                                                                                  \
    static TARGET float dist_nip_##isa(const float *a, const float *b, uint32_t dim)                                   \
    {                                                                                                                  \
        return dist_pair_##isa(a, b, dim, DIST_NIP);                                                                   \
    }                                                                                                                  \
    static TARGET float dist_ncos_##isa(const float *a, const float *b, uint32_t dim)                                  \
    {                                                                                                                  \
        return dist_pair_##isa(a, b, dim, DIST_COS);                                                                   \
    }                                                                                                                  \
    static TARGET void dist_l2sq_batch_##isa(const float *q, const float *const *vecs, uint32_t n, uint32_t dim,       \
                                             float *out)                                                               \
    {                                                                                                                  \
        dist_batch_##isa(q, vecs, n, dim, out, DIST_L2);                                                               \
    }                                                                                                                  \
    static TARGET void dist_nip_batch_##isa(const float *q, const float *const *vecs, uint32_t n, uint32_t dim,        \
                                            float *out)                                                                \
    {                                                                                                                  \
        dist_batch_##isa(q, vecs, n, dim, out, DIST_NIP);                                                              \
    }                                                                                                                  \
    static TARGET void dist_ncos_batch_##isa(const float *q, const float *const *vecs, uint32_t n, uint32_t dim,       \
                                             float *out)                                                               \
    {                                                                                                                  \
        dist_batch_##isa(q, vecs, n, dim, out, DIST_COS);                                                              \
    }                                                                                                                  \
    static const struct dist_kernels dist_table_##isa = {                                                              \
        LEVEL,                                                                                                         \
        #isa,                                                                                                          \
        dist_l2sq_##isa,                                                                                               \
        dist_nip_##isa,                                                                                                \
        dist_ncos_##isa,                                                                                               \
        dist_l2sq_batch_##isa,                                                                                         \
        dist_nip_batch_##isa,                                                                                          \
        dist_ncos_batch_##isa,                                                                                         \
    };

#define DIST_NO_TARGET
DIST_DEFINE_KERNELS(scalar, DIST_NO_TARGET, DIST_SIMD_SCALAR)

#if DIST_X86

/* ---- AVX2 + FMA ---- */

#define DIST_AVX2 __attribute__((target("avx2,fma")))

/* A window of 8 ones then 8 zeros: loading at offset 8 - rem gives a mask of `rem` leading lanes. */
static const int32_t dist_mask8[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };

/* One step of l2 or nip (cosine keeps two sums and is written out where it is used). */
DIST_INLINE DIST_AVX2 __m256 dist_acc256(__m256 acc, __m256 a, __m256 b, int mode)
{
    if (mode == DIST_L2) {
        __m256 d = _mm256_sub_ps(a, b);
        return _mm256_fmadd_ps(d, d, acc);
    }
    return _mm256_fmadd_ps(a, b, acc);
}

DIST_INLINE DIST_AVX2 float dist_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

DIST_INLINE DIST_AVX2 __m256i dist_tail256(uint32_t rem)
{
    return _mm256_loadu_si256((const __m256i *)(dist_mask8 + 8 - rem));
}

/* Cosine of unit query a and stored vector b: inner product and b's squared norm in one pass. */
DIST_INLINE DIST_AVX2 float dist_cos_avx2(const float *a, const float *b, uint32_t dim)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
    uint32_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 b0 = _mm256_loadu_ps(b + i), b1 = _mm256_loadu_ps(b + i + 8);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), b1, s1);
        t0 = _mm256_fmadd_ps(b0, b0, t0);
        t1 = _mm256_fmadd_ps(b1, b1, t1);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256 b0 = _mm256_loadu_ps(b + i);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, s0);
        t0 = _mm256_fmadd_ps(b0, b0, t0);
    }
    if (i < dim) {
        __m256i m = dist_tail256(dim - i);
        __m256 b0 = _mm256_maskload_ps(b + i, m);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), b0, s1);
        t1 = _mm256_fmadd_ps(b0, b0, t1);
    }
    return dist_cos_finish(dist_hsum256(_mm256_add_ps(s0, s1)), dist_hsum256(_mm256_add_ps(t0, t1)), a, b, dim);
}

DIST_INLINE DIST_AVX2 float dist_pair_avx2(const float *a, const float *b, uint32_t dim, int mode)
{
    if (mode == DIST_COS) return dist_cos_avx2(a, b, dim);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    uint32_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        s0 = dist_acc256(s0, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), mode);
        s1 = dist_acc256(s1, _mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), mode);
        s2 = dist_acc256(s2, _mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), mode);
        s3 = dist_acc256(s3, _mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), mode);
    }
    for (; i + 8 <= dim; i += 8) s0 = dist_acc256(s0, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), mode);
    if (i < dim) {
        __m256i m = dist_tail256(dim - i);
        s1 = dist_acc256(s1, _mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), mode);
    }
    float r = dist_hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return mode == DIST_L2 ? r : -r;
}

/* Four stored vectors against a unit query: four inner products and four squared norms. */
DIST_INLINE DIST_AVX2 void dist_four_cos_avx2(const float *q, const float *const *p, uint32_t dim, float *out)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
    __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
    uint32_t i = 0;
    for (; i + 8 <= dim; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        __m256 v0 = _mm256_loadu_ps(p[0] + i), v1 = _mm256_loadu_ps(p[1] + i);
        __m256 v2 = _mm256_loadu_ps(p[2] + i), v3 = _mm256_loadu_ps(p[3] + i);
        s0 = _mm256_fmadd_ps(v0, qv, s0);
        s1 = _mm256_fmadd_ps(v1, qv, s1);
        s2 = _mm256_fmadd_ps(v2, qv, s2);
        s3 = _mm256_fmadd_ps(v3, qv, s3);
        t0 = _mm256_fmadd_ps(v0, v0, t0);
        t1 = _mm256_fmadd_ps(v1, v1, t1);
        t2 = _mm256_fmadd_ps(v2, v2, t2);
        t3 = _mm256_fmadd_ps(v3, v3, t3);
    }
    if (i < dim) {
        __m256i m = dist_tail256(dim - i);
        __m256 qv = _mm256_maskload_ps(q + i, m);
        __m256 v0 = _mm256_maskload_ps(p[0] + i, m), v1 = _mm256_maskload_ps(p[1] + i, m);
        __m256 v2 = _mm256_maskload_ps(p[2] + i, m), v3 = _mm256_maskload_ps(p[3] + i, m);
        s0 = _mm256_fmadd_ps(v0, qv, s0);
        s1 = _mm256_fmadd_ps(v1, qv, s1);
        s2 = _mm256_fmadd_ps(v2, qv, s2);
        s3 = _mm256_fmadd_ps(v3, qv, s3);
        t0 = _mm256_fmadd_ps(v0, v0, t0);
        t1 = _mm256_fmadd_ps(v1, v1, t1);
        t2 = _mm256_fmadd_ps(v2, v2, t2);
        t3 = _mm256_fmadd_ps(v3, v3, t3);
    }
    out[0] = dist_cos_finish(dist_hsum256(s0), dist_hsum256(t0), q, p[0], dim);
    out[1] = dist_cos_finish(dist_hsum256(s1), dist_hsum256(t1), q, p[1], dim);
    out[2] = dist_cos_finish(dist_hsum256(s2), dist_hsum256(t2), q, p[2], dim);
    out[3] = dist_cos_finish(dist_hsum256(s3), dist_hsum256(t3), q, p[3], dim);
}

DIST_INLINE DIST_AVX2 void dist_four_avx2(const float *q, const float *const *p, uint32_t dim, float *out, int mode)
{
    if (mode == DIST_COS) {
        dist_four_cos_avx2(q, p, dim, out);
        return;
    }
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    uint32_t i = 0;
    for (; i + 8 <= dim; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        s0 = dist_acc256(s0, _mm256_loadu_ps(p[0] + i), qv, mode);
        s1 = dist_acc256(s1, _mm256_loadu_ps(p[1] + i), qv, mode);
        s2 = dist_acc256(s2, _mm256_loadu_ps(p[2] + i), qv, mode);
        s3 = dist_acc256(s3, _mm256_loadu_ps(p[3] + i), qv, mode);
    }
    if (i < dim) {
        __m256i m = dist_tail256(dim - i);
        __m256 qv = _mm256_maskload_ps(q + i, m);
        s0 = dist_acc256(s0, _mm256_maskload_ps(p[0] + i, m), qv, mode);
        s1 = dist_acc256(s1, _mm256_maskload_ps(p[1] + i, m), qv, mode);
        s2 = dist_acc256(s2, _mm256_maskload_ps(p[2] + i, m), qv, mode);
        s3 = dist_acc256(s3, _mm256_maskload_ps(p[3] + i, m), qv, mode);
    }
    float sign = mode == DIST_L2 ? 1.f : -1.f;
    out[0] = sign * dist_hsum256(s0);
    out[1] = sign * dist_hsum256(s1);
    out[2] = sign * dist_hsum256(s2);
    out[3] = sign * dist_hsum256(s3);
}

DIST_DEFINE_KERNELS(avx2, DIST_AVX2, DIST_SIMD_AVX2)

/* ---- AVX-512F ---- */

#define DIST_AVX512 __attribute__((target("avx512f")))

/* One step of l2 or nip (cosine keeps two sums and is written out where it is used). */
DIST_INLINE DIST_AVX512 __m512 dist_acc512(__m512 acc, __m512 a, __m512 b, int mode)
{
    if (mode == DIST_L2) {
        __m512 d = _mm512_sub_ps(a, b);
        return _mm512_fmadd_ps(d, d, acc);
    }
    return _mm512_fmadd_ps(a, b, acc);
}

/* Cosine of unit query a and stored vector b: inner product and b's squared norm in one pass. */
DIST_INLINE DIST_AVX512 float dist_cos_avx512(const float *a, const float *b, uint32_t dim)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
    uint32_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m512 b0 = _mm512_loadu_ps(b + i), b1 = _mm512_loadu_ps(b + i + 16);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), b0, s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), b1, s1);
        t0 = _mm512_fmadd_ps(b0, b0, t0);
        t1 = _mm512_fmadd_ps(b1, b1, t1);
    }
    for (; i + 16 <= dim; i += 16) {
        __m512 b0 = _mm512_loadu_ps(b + i);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), b0, s0);
        t0 = _mm512_fmadd_ps(b0, b0, t0);
    }
    if (i < dim) {
        __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
        __m512 b0 = _mm512_maskz_loadu_ps(m, b + i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), b0, s1);
        t1 = _mm512_fmadd_ps(b0, b0, t1);
    }
    return dist_cos_finish(_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)), _mm512_reduce_add_ps(_mm512_add_ps(t0, t1)), a,
                           b, dim);
}

DIST_INLINE DIST_AVX512 float dist_pair_avx512(const float *a, const float *b, uint32_t dim, int mode)
{
    if (mode == DIST_COS) return dist_cos_avx512(a, b, dim);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    uint32_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        s0 = dist_acc512(s0, _mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), mode);
        s1 = dist_acc512(s1, _mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), mode);
        s2 = dist_acc512(s2, _mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), mode);
        s3 = dist_acc512(s3, _mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), mode);
    }
    for (; i + 16 <= dim; i += 16) s0 = dist_acc512(s0, _mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), mode);
    if (i < dim) {
        __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
        s1 = dist_acc512(s1, _mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), mode);
    }
    float r = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    return mode == DIST_L2 ? r : -r;
}

/* Four stored vectors against a unit query: four inner products and four squared norms. */
DIST_INLINE DIST_AVX512 void dist_four_cos_avx512(const float *q, const float *const *p, uint32_t dim, float *out)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
    __m512 t2 = _mm512_setzero_ps(), t3 = _mm512_setzero_ps();
    uint32_t i = 0;
    for (; i < dim; i += 16) {
        __mmask16 m = dim - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (dim - i)) - 1u);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
        __m512 v0 = _mm512_maskz_loadu_ps(m, p[0] + i), v1 = _mm512_maskz_loadu_ps(m, p[1] + i);
        __m512 v2 = _mm512_maskz_loadu_ps(m, p[2] + i), v3 = _mm512_maskz_loadu_ps(m, p[3] + i);
        s0 = _mm512_fmadd_ps(v0, qv, s0);
        s1 = _mm512_fmadd_ps(v1, qv, s1);
        s2 = _mm512_fmadd_ps(v2, qv, s2);
        s3 = _mm512_fmadd_ps(v3, qv, s3);
        t0 = _mm512_fmadd_ps(v0, v0, t0);
        t1 = _mm512_fmadd_ps(v1, v1, t1);
        t2 = _mm512_fmadd_ps(v2, v2, t2);
        t3 = _mm512_fmadd_ps(v3, v3, t3);
    }
    out[0] = dist_cos_finish(_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(t0), q, p[0], dim);
    out[1] = dist_cos_finish(_mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(t1), q, p[1], dim);
    out[2] = dist_cos_finish(_mm512_reduce_add_ps(s2), _mm512_reduce_add_ps(t2), q, p[2], dim);
    out[3] = dist_cos_finish(_mm512_reduce_add_ps(s3), _mm512_reduce_add_ps(t3), q, p[3], dim);
}

DIST_INLINE DIST_AVX512 void dist_four_avx512(const float *q, const float *const *p, uint32_t dim, float *out, int mode)
{
    if (mode == DIST_COS) {
        dist_four_cos_avx512(q, p, dim, out);
        return;
    }
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    uint32_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m512 qv = _mm512_loadu_ps(q + i);
        s0 = dist_acc512(s0, _mm512_loadu_ps(p[0] + i), qv, mode);
        s1 = dist_acc512(s1, _mm512_loadu_ps(p[1] + i), qv, mode);
        s2 = dist_acc512(s2, _mm512_loadu_ps(p[2] + i), qv, mode);
        s3 = dist_acc512(s3, _mm512_loadu_ps(p[3] + i), qv, mode);
    }
    if (i < dim) {
        __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
        s0 = dist_acc512(s0, _mm512_maskz_loadu_ps(m, p[0] + i), qv, mode);
        s1 = dist_acc512(s1, _mm512_maskz_loadu_ps(m, p[1] + i), qv, mode);
        s2 = dist_acc512(s2, _mm512_maskz_loadu_ps(m, p[2] + i), qv, mode);
        s3 = dist_acc512(s3, _mm512_maskz_loadu_ps(m, p[3] + i), qv, mode);
    }
    float sign = mode == DIST_L2 ? 1.f : -1.f;
    out[0] = sign * _mm512_reduce_add_ps(s0);
    out[1] = sign * _mm512_reduce_add_ps(s1);
    out[2] = sign * _mm512_reduce_add_ps(s2);
    out[3] = sign * _mm512_reduce_add_ps(s3);
}

DIST_DEFINE_KERNELS(avx512, DIST_AVX512, DIST_SIMD_AVX512)

#endif /* DIST_X86 */

/* ---- dispatch ---- */

/* Whether this CPU runs the kernels of a SIMD level (AVX2 needs FMA too). */
static int dist_cpu_has(dist_simd level)
{
#if DIST_X86
    __builtin_cpu_init();
    switch (level) {
    case DIST_SIMD_SCALAR: return 1;
    case DIST_SIMD_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case DIST_SIMD_AVX512: return __builtin_cpu_supports("avx512f");
    }
    return 0;
#else
    return level == DIST_SIMD_SCALAR;
#endif
}

const struct dist_kernels *dist_kernels_get(dist_simd level)
{
    if (!dist_cpu_has(level)) return NULL;
    switch (level) {
    case DIST_SIMD_SCALAR: return &dist_table_scalar;
#if DIST_X86
    case DIST_SIMD_AVX2: return &dist_table_avx2;
    case DIST_SIMD_AVX512: return &dist_table_avx512;
#else
    default: break;
#endif
    }
    return NULL;
}

int dist_simd_parse(const char *s, dist_simd *out)
{
    static const char *const names[DIST_SIMD_COUNT] = { "scalar", "avx2", "avx512" };
    for (int i = 0; s && i < DIST_SIMD_COUNT; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (dist_simd)i;
            return JVDB_OK;
        }
    }
    return err_set(JVDB_EINVAL, "unknown SIMD level '%s' (expected scalar, avx2 or avx512)", s ? s : "");
}

static _Atomic(const struct dist_kernels *) dist_current;
static pthread_once_t dist_once = PTHREAD_ONCE_INIT;

/* Picks the kernels once: the CPU's best level, lowered (never raised) by JVDB_SIMD, with a warning for a value it
 * cannot honour. */
static void dist_choose(void)
{
    int best = DIST_SIMD_SCALAR;
    for (int l = DIST_SIMD_COUNT - 1; l > DIST_SIMD_SCALAR; l--) {
        if (dist_cpu_has((dist_simd)l)) {
            best = l;
            break;
        }
    }
    const char *env = getenv("JVDB_SIMD");
    if (env && *env) {
        dist_simd want = DIST_SIMD_SCALAR;
        if (dist_simd_parse(env, &want) != JVDB_OK)
            log_warn("JVDB_SIMD=%s is not scalar, avx2 or avx512; using the CPU's best", env);
        else if ((int)want > best)
            log_warn("JVDB_SIMD=%s is not supported by this CPU; using %s", env,
                     dist_kernels_get((dist_simd)best)->name);
        else best = (int)want;
    }
    atomic_store_explicit(&dist_current, dist_kernels_get((dist_simd)best), memory_order_release);
}

const struct dist_kernels *dist_active(void)
{
    pthread_once(&dist_once, dist_choose);
    return atomic_load_explicit(&dist_current, memory_order_acquire);
}

int dist_set_active(dist_simd level)
{
    pthread_once(&dist_once, dist_choose);
    const struct dist_kernels *k = dist_kernels_get(level);
    if (!k)
        return err_set(JVDB_EINVAL, "this CPU cannot run the %s kernels",
                       level == DIST_SIMD_AVX512 ? "avx512" : "avx2");
    atomic_store_explicit(&dist_current, k, memory_order_release);
    return JVDB_OK;
}

/* Sets a metric's distance and batch kernels for dim.  Cosine over the store's vectors (stored: any length) divides
 * by |v| in the same pass; over the graph's unit-length copies it is the bare inner product. */
static int dist_space_fill(struct dist_space *sp, jvdb_metric metric, uint32_t dim, int stored)
{
    if (dim == 0) return err_set(JVDB_EINVAL, "dimension must be at least 1");
    const struct dist_kernels *k = dist_active();
    sp->metric = metric;
    sp->dim = dim;
    switch (metric) {
    case JVDB_METRIC_L2:
        sp->dist = k->l2sq;
        sp->batch = k->l2sq_batch;
        return JVDB_OK;
    case JVDB_METRIC_COSINE:
        sp->dist = stored ? k->ncos : k->nip;
        sp->batch = stored ? k->ncos_batch : k->nip_batch;
        return JVDB_OK;
    case JVDB_METRIC_DOT:
        sp->dist = k->nip;
        sp->batch = k->nip_batch;
        return JVDB_OK;
    }
    return err_set(JVDB_EINVAL, "unknown metric %d", (int)metric);
}

int dist_space_init(struct dist_space *sp, jvdb_metric metric, uint32_t dim)
{
    return dist_space_fill(sp, metric, dim, 0);
}

int dist_space_init_stored(struct dist_space *sp, jvdb_metric metric, uint32_t dim)
{
    return dist_space_fill(sp, metric, dim, 1);
}

int dist_normalize(float *v, uint32_t dim)
{
    /* Summed in double: float squares of large finite components could overflow to infinity and a
     * valid vector would be refused. */
    double ss = 0.0;
    for (uint32_t i = 0; i < dim; i++) ss += (double)v[i] * (double)v[i];
    if (!isfinite(ss)) return err_set(JVDB_EINVAL, "vector has a NaN or infinite component and cannot be normalised");
    if (ss == 0.0) return err_set(JVDB_EINVAL, "vector has zero length and cannot be normalised for cosine");
    double inv = 1.0 / sqrt(ss);
    for (uint32_t i = 0; i < dim; i++) v[i] = (float)((double)v[i] * inv);
    return JVDB_OK;
}

int dist_query_prepare(jvdb_metric metric, const float *query, uint32_t dim, float *out)
{
    /* The same bound as stored vectors (validate.h), so a score never overflows float32. */
    int rc = rec_check_values(query, dim, "query", "");
    if (rc) return rc;
    memcpy(out, query, (size_t)dim * sizeof *out);
    if (metric == JVDB_METRIC_COSINE) return dist_normalize(out, dim);
    return JVDB_OK;
}

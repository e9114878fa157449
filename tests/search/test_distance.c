/*
 * test_distance.c — the distance kernels: every instruction set this CPU runs agrees with a double
 * precision reference and with the others on dims 1..300 (odd ones and tails included), batch kernels
 * agree with pair kernels and report empty slots as +inf, the start-up choice honours JVDB_SIMD, and
 * normalisation refuses what cannot be normalised.  The cosine kernels of stored vectors (any length,
 * from denormal components to the magnitude bound) equal the double cosine.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/mman.h>
#include <unistd.h>

#include "search/distance.h"
#include "search_testutil.h"

enum { MAX_DIM = 300 };

/* float kernels sum in a different order from each other and from the reference; the error is
 * bounded by a few ulps of the sum of absolute terms. */
static double tol_for(double abs_terms) { return 1e-5 * abs_terms + 1e-6; }

static void fill(tu_rng *r, float *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) v[i] = (float)(4.0 * tu_uniform(r) - 2.0);
}

static void reference(const float *a, const float *b, uint32_t dim, double *l2, double *ip, double *abs_l2,
                      double *abs_ip)
{
    *l2 = *ip = *abs_l2 = *abs_ip = 0;
    for (uint32_t i = 0; i < dim; i++) {
        double d = (double)a[i] - b[i];
        *l2 += d * d;
        *abs_l2 += d * d;
        *ip += (double)a[i] * b[i];
        *abs_ip += fabs((double)a[i] * b[i]);
    }
}

static void test_pair_kernels_agree(void **state)
{
    (void)state;
    tu_rng r = { 1 };
    int levels = 0;
    for (int lv = 0; lv < DIST_SIMD_COUNT; lv++) {
        const struct dist_kernels *k = dist_kernels_get((dist_simd)lv);
        if (!k) continue;
        levels++;
        for (uint32_t dim = 1; dim <= MAX_DIM; dim++) {
            /* Exact-size heap blocks so ASan sees any full-width load past the end; offset 1 float
             * makes the vectors unaligned. */
            float *a = malloc((dim + 1) * sizeof *a), *b = malloc((dim + 1) * sizeof *b);
            fill(&r, a, dim + 1);
            fill(&r, b, dim + 1);
            for (int off = 0; off <= 1; off++) {
                uint32_t n = dim + 1 - (uint32_t)off;
                double l2, ip, al2, aip;
                reference(a + off, b + off, n, &l2, &ip, &al2, &aip);
                float got_l2 = k->l2sq(a + off, b + off, n);
                float got_nip = k->nip(a + off, b + off, n);
                if (fabs(got_l2 - l2) > tol_for(al2) || fabs(-got_nip - ip) > tol_for(aip))
                    fail_msg("%s dim %u: l2 %g vs %g, ip %g vs %g", k->name, n, got_l2, l2, -got_nip, ip);
                /* Against scalar too: what the tests of higher levels really promise. */
                const struct dist_kernels *s = dist_kernels_get(DIST_SIMD_SCALAR);
                assert_true(fabs(got_l2 - s->l2sq(a + off, b + off, n)) <= 2 * tol_for(al2));
                assert_true(fabs(got_nip - s->nip(a + off, b + off, n)) <= 2 * tol_for(aip));
            }
            free(a);
            free(b);
        }
    }
    assert_true(levels >= 1);
}

static void test_batch_kernels_agree(void **state)
{
    (void)state;
    tu_rng r = { 2 };
    enum { NV = 13 };
    for (int lv = 0; lv < DIST_SIMD_COUNT; lv++) {
        const struct dist_kernels *k = dist_kernels_get((dist_simd)lv);
        if (!k) continue;
        for (uint32_t dim = 1; dim <= MAX_DIM; dim += (dim < 40 ? 1 : 7)) {
            float *q = malloc(dim * sizeof *q);
            float *store[NV];
            const float *vecs[NV];
            fill(&r, q, dim);
            for (int i = 0; i < NV; i++) {
                store[i] = malloc(dim * sizeof(float));
                fill(&r, store[i], dim);
                /* Some empty slots, including inside a group of four and at the end. */
                vecs[i] = (i % 5 == 2 || i == NV - 1) ? NULL : store[i];
            }
            for (uint32_t n = 0; n <= NV; n++) {
                float l2[NV + 1], nip[NV + 1];
                l2[n] = nip[n] = 12345.f; /* must stay untouched */
                k->l2sq_batch(q, vecs, n, dim, l2);
                k->nip_batch(q, vecs, n, dim, nip);
                assert_true(l2[n] == 12345.f && nip[n] == 12345.f);
                for (uint32_t i = 0; i < n; i++) {
                    if (!vecs[i]) {
                        assert_true(isinf(l2[i]) && l2[i] > 0);
                        assert_true(isinf(nip[i]) && nip[i] > 0);
                        continue;
                    }
                    double rl2, rip, al2, aip;
                    reference(q, vecs[i], dim, &rl2, &rip, &al2, &aip);
                    if (fabs(l2[i] - rl2) > tol_for(al2) || fabs(-nip[i] - rip) > tol_for(aip))
                        fail_msg("%s batch dim %u n %u i %u", k->name, dim, n, i);
                }
            }
            for (int i = 0; i < NV; i++) free(store[i]);
            free(q);
        }
    }
}

/* Masked tail loads are invisible to ASan; a guard page is not.  Every vector ends exactly where an
 * inaccessible page begins, so reading one float too many faults. */
static void test_tail_stops_at_vector_end(void **state)
{
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = 2 * page;
    char *map = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + len - page, page, PROT_NONE), 0);
    assert_int_equal(mprotect(map + 2 * len - page, page, PROT_NONE), 0);
    float *end_a = (float *)(map + len - page), *end_b = (float *)(map + 2 * len - page);
    tu_rng r = { 3 };
    for (uint32_t dim = 1; dim <= MAX_DIM; dim++) {
        float *a = end_a - dim, *b = end_b - dim;
        fill(&r, a, dim);
        fill(&r, b, dim);
        const float *vecs[5] = { b, b, b, b, b };
        float out[5];
        for (int lv = 0; lv < DIST_SIMD_COUNT; lv++) {
            const struct dist_kernels *k = dist_kernels_get((dist_simd)lv);
            if (!k) continue;
            float d = k->l2sq(a, b, dim) + k->nip(a, b, dim) + k->l2sq(b, a, dim) + k->ncos(a, b, dim);
            assert_false(isnan(d));
            k->l2sq_batch(a, vecs, 5, dim, out);
            k->nip_batch(a, vecs, 5, dim, out);
            k->ncos_batch(a, vecs, 5, dim, out);
        }
    }
    munmap(map, 2 * len);
}

static void test_active_honours_env(void **state)
{
    (void)state;
    const struct dist_kernels *active = dist_active();
    assert_non_null(active);
    const char *env = getenv("JVDB_SIMD");
    dist_simd want;
    if (env && dist_simd_parse(env, &want) == JVDB_OK) {
        if (dist_kernels_get(want)) assert_int_equal(active->level, want);
        else assert_true(active->level < want); /* fell back to what the CPU has */
    } else {
        /* No override: the best level the CPU supports. */
        for (int lv = DIST_SIMD_COUNT - 1; lv >= 0; lv--) {
            if (dist_kernels_get((dist_simd)lv)) {
                assert_int_equal(active->level, lv);
                break;
            }
        }
    }
    assert_int_equal(dist_simd_parse("avx9", &want), JVDB_EINVAL);
    assert_int_equal(dist_simd_parse("scalar", &want), JVDB_OK);
    assert_int_equal(want, DIST_SIMD_SCALAR);
    /* Switching and back. */
    assert_int_equal(dist_set_active(DIST_SIMD_SCALAR), JVDB_OK);
    assert_int_equal(dist_active()->level, DIST_SIMD_SCALAR);
    assert_int_equal(dist_set_active(active->level), JVDB_OK);
    if (!dist_kernels_get(DIST_SIMD_AVX512)) assert_int_equal(dist_set_active(DIST_SIMD_AVX512), JVDB_EINVAL);
}

static void test_space_and_scores(void **state)
{
    (void)state;
    float a[3] = { 1, 2, 3 }, b[3] = { 4, 6, 3 };
    struct dist_space sp;
    assert_int_equal(dist_space_init(&sp, JVDB_METRIC_L2, 3), JVDB_OK);
    assert_float_equal(sp.dist(a, b, 3), 25.f, 1e-6);
    assert_float_equal(dist_score(JVDB_METRIC_L2, 25.f), 25.f, 0);
    assert_int_equal(dist_space_init(&sp, JVDB_METRIC_DOT, 3), JVDB_OK);
    assert_float_equal(sp.dist(a, b, 3), -25.f, 1e-6);
    assert_float_equal(dist_score(JVDB_METRIC_DOT, sp.dist(a, b, 3)), 25.f, 1e-6);
    /* A threshold in score units maps to a distance bound and back. */
    assert_float_equal(dist_from_score(JVDB_METRIC_COSINE, 0.8f), -0.8f, 0);
    assert_float_equal(dist_score(JVDB_METRIC_COSINE, dist_from_score(JVDB_METRIC_COSINE, 0.8f)), 0.8f, 0);
    assert_int_equal(dist_space_init(&sp, JVDB_METRIC_L2, 0), JVDB_EINVAL);
    assert_int_equal(dist_space_init(&sp, (jvdb_metric)7, 3), JVDB_EINVAL);
}

static void test_normalize(void **state)
{
    (void)state;
    float v[5] = { 3, 0, 4, 0, 0 };
    assert_int_equal(dist_normalize(v, 5), JVDB_OK);
    assert_float_equal(v[0], 0.6f, 1e-6);
    assert_float_equal(v[2], 0.8f, 1e-6);

    float zero[4] = { 0, 0, 0, 0 };
    assert_int_equal(dist_normalize(zero, 4), JVDB_EINVAL);
    assert_true(zero[0] == 0.f);
    assert_non_null(strstr(jvdb_errmsg(), "zero"));

    float bad[3] = { 1, NAN, 2 };
    assert_int_equal(dist_normalize(bad, 3), JVDB_EINVAL);
    assert_float_equal(bad[0], 1.f, 0);
    float inf[2] = { INFINITY, 1 };
    assert_int_equal(dist_normalize(inf, 2), JVDB_EINVAL);

    /* Squares overflow float but not the double sum: still a valid direction. */
    float big[2] = { 3e30f, 4e30f };
    assert_int_equal(dist_normalize(big, 2), JVDB_OK);
    assert_float_equal(big[0], 0.6f, 1e-6);

    float q[3] = { 0, 0, 2 }, out[4];
    assert_int_equal(dist_query_prepare(JVDB_METRIC_COSINE, q, 3, out), JVDB_OK);
    assert_float_equal(out[2], 1.f, 1e-6);
    assert_int_equal(dist_query_prepare(JVDB_METRIC_DOT, q, 3, out), JVDB_OK);
    assert_float_equal(out[2], 2.f, 0);
    float nq[2] = { NAN, 0 };
    assert_int_equal(dist_query_prepare(JVDB_METRIC_L2, nq, 2, out), JVDB_EINVAL);
    assert_int_equal(dist_query_prepare(JVDB_METRIC_COSINE, zero, 4, out), JVDB_EINVAL);
}

/* Double cosine of a (any length) and b (any non-zero length). */
static double ref_cos(const float *a, const float *b, uint32_t dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (uint32_t i = 0; i < dim; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb));
}

/* The store keeps cosine vectors as given: the ncos kernels divide by the stored vector's norm,
 * which they sum in the same pass, and fall back to double for vectors too small for float sums.
 * Every level, pair and batch, for lengths from 1e-44 (denormal components) to 1e18. */
static void test_cosine_of_stored_vectors(void **state)
{
    (void)state;
    tu_rng r = { 4 };
    enum { NV = 9 };
    static const double scales[] = { 1e-44, 1e-40, 1e-30, 1e-20, 1e-15, 1e-3, 1, 1e3, 1e15, 1e17 };
    for (int lv = 0; lv < DIST_SIMD_COUNT; lv++) {
        const struct dist_kernels *k = dist_kernels_get((dist_simd)lv);
        if (!k) continue;
        for (uint32_t dim = 1; dim <= MAX_DIM; dim += (dim < 40 ? 1 : 11)) {
            float *q = malloc(dim * sizeof *q);
            float *store[NV];
            const float *vecs[NV];
            fill(&r, q, dim);
            assert_int_equal(dist_query_prepare(JVDB_METRIC_COSINE, q, dim, q), JVDB_OK);
            for (int i = 0; i < NV; i++) {
                store[i] = malloc(dim * sizeof(float));
                double sc = scales[(dim + (uint32_t)i) % (sizeof scales / sizeof *scales)];
                int nonzero = 0;
                for (uint32_t j = 0; j < dim; j++) {
                    store[i][j] = (float)((4.0 * tu_uniform(&r) - 2.0) * sc);
                    nonzero |= store[i][j] != 0.f;
                }
                if (!nonzero) store[i][0] = 0x1p-149f; /* the store refuses zero vectors for cosine */
                vecs[i] = i == 6 ? NULL : store[i];
            }
            float out[NV];
            k->ncos_batch(q, vecs, NV, dim, out);
            for (int i = 0; i < NV; i++) {
                if (!vecs[i]) {
                    assert_true(isinf(out[i]) && out[i] > 0);
                    continue;
                }
                double want = ref_cos(q, store[i], dim);
                float pair = k->ncos(q, store[i], dim);
                if (fabs(-out[i] - want) > 1e-5 || fabs(-pair - want) > 1e-5)
                    fail_msg("%s dim %u vector %d (|v| ~ %g): cosine %.9g (batch) %.9g (pair), reference %.9g", k->name,
                             dim, i, fabs(store[i][0]), -out[i], -pair, want);
            }
            for (int i = 0; i < NV; i++) free(store[i]);
            free(q);
        }
    }
    /* The spaces: stored vectors for exact scans, unit vectors (bare inner product) for the graph. */
    float a[2] = { 0.6f, 0.8f }, b[2] = { 30, 40 };
    struct dist_space sp;
    assert_int_equal(dist_space_init_stored(&sp, JVDB_METRIC_COSINE, 2), JVDB_OK);
    assert_float_equal(sp.dist(a, b, 2), -1.f, 1e-6);
    assert_int_equal(dist_space_init(&sp, JVDB_METRIC_COSINE, 2), JVDB_OK);
    assert_float_equal(sp.dist(a, b, 2), -50.f, 1e-4);
    assert_int_equal(dist_space_init_stored(&sp, JVDB_METRIC_DOT, 2), JVDB_OK);
    assert_float_equal(sp.dist(a, b, 2), -50.f, 1e-4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cosine_of_stored_vectors),
        cmocka_unit_test(test_pair_kernels_agree),
        cmocka_unit_test(test_batch_kernels_agree),
        cmocka_unit_test(test_tail_stops_at_vector_end),
        cmocka_unit_test(test_active_honours_env),
        cmocka_unit_test(test_space_and_scores),
        cmocka_unit_test(test_normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

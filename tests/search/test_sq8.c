/*
 * test_sq8.c — the graph's 8-bit scalar quantiser (src/search/sq8.c): codes round-trip within half of
 * the row's own step whatever the vector's magnitude, re-centred rows decode to their vectors, rows a
 * file could carry are checked, the kernels equal a double reference on every instruction set (tails
 * and dimensions past one accumulation chunk included) and rank like the float distances they stand
 * for, also when the vectors span many orders of magnitude (one scale for all rows coded the small
 * ones as zeros).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "search/sq8.h"
#include "search_testutil.h"

/* A trained quantiser over n random vectors in [lo, lo + width)^dim. */
static void train(struct sq8_quant *q, jvdb_metric m, uint32_t dim, float lo, float width, tu_rng *r, float *buf,
                  uint32_t n)
{
    struct sq8_trainer t;
    assert_int_equal(sq8_trainer_init(&t, dim, n), JVDB_OK);
    assert_int_equal(sq8_init(q, dim), JVDB_OK);
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t d = 0; d < dim; d++) buf[(size_t)i * dim + d] = lo + width * (float)tu_uniform(r);
        sq8_trainer_add(&t, buf + (size_t)i * dim);
    }
    assert_int_equal(sq8_trainer_finish(&t, m, q), JVDB_OK);
    sq8_trainer_free(&t);
}

static void test_round_trip(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 7;
    enum { DIM = 37, N = 50 };
    float buf[N * DIM], out[DIM];
    struct sq8_quant q;
    train(&q, JVDB_METRIC_L2, DIM, 100.0f, 3.0f, &r, buf, N);
    assert_true(q.trained);
    int8_t row[sq8_row_bytes(DIM)];
    assert_int_equal(sizeof row % 16, 0);
    for (uint32_t i = 0; i < N; i++) {
        const float *x = buf + (size_t)i * DIM;
        sq8_encode(&q, x, row);
        assert_true(sq8_row_valid(row, DIM));
        float step = sq8_row_step(row, DIM);
        sq8_decode(&q, row, out);
        for (uint32_t d = 0; d < DIM; d++) assert_true(fabsf(out[d] - x[d]) <= 0.5f * step * 1.001f + 1e-5f);
        for (uint32_t d = DIM; d < sizeof row - 8; d++) assert_int_equal(row[d], 0);
    }
    /* Far outside the training range and at any magnitude: nothing clamps, the step follows the row. */
    static const float mags[] = { 1e-30f, 1e-6f, 1.0f, 1e6f, 1e18f };
    for (size_t k = 0; k < sizeof mags / sizeof *mags; k++) {
        float x[DIM];
        for (uint32_t d = 0; d < DIM; d++) x[d] = q.centre[d] + mags[k] * (float)(tu_uniform(&r) * 2 - 1);
        sq8_encode(&q, x, row);
        assert_true(sq8_row_valid(row, DIM));
        sq8_decode(&q, row, out);
        float worst = 0.0f;
        for (uint32_t d = 0; d < DIM; d++) worst = fmaxf(worst, fabsf(x[d] - q.centre[d]));
        for (uint32_t d = 0; d < DIM; d++)
            assert_true(fabsf(out[d] - x[d]) <= worst / SQ8_MAX * 0.501f + 1e-4f * fabsf(q.centre[d]));
    }
    /* A row a file could carry: a bad code, a bad sum, a non-finite step or dirty padding is refused. */
    sq8_encode(&q, buf, row);
    int8_t bad[sizeof row];
    memcpy(bad, row, sizeof row);
    bad[0] = -128;
    assert_false(sq8_row_valid(bad, DIM));
    memcpy(bad, row, sizeof row);
    bad[sizeof row - 4] ^= 1;
    assert_false(sq8_row_valid(bad, DIM));
    memcpy(bad, row, sizeof row);
    float nan = NAN;
    memcpy(bad + sizeof row - 8, &nan, 4);
    assert_false(sq8_row_valid(bad, DIM));
    memcpy(bad, row, sizeof row);
    bad[DIM] = 1;
    assert_false(sq8_row_valid(bad, DIM));
    sq8_free(&q);
}

/* A row with random codes (the extremes every fifth dimension) and the given step. */
static void make_row(int8_t *row, uint32_t dim, float step, int sign, tu_rng *r)
{
    uint32_t rb = sq8_row_bytes(dim);
    int32_t sum = 0;
    for (uint32_t i = 0; i < rb - 8; i++) {
        row[i] = i < dim ? (int8_t)(i % 5 == 0 ? sign * SQ8_MAX : (int)(tu_uniform(r) * 255) - 127) : 0;
        sum += (int32_t)row[i] * row[i];
    }
    memcpy(row + rb - 8, &step, 4);
    memcpy(row + rb - 4, &sum, 4);
}

static void test_kernels(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 11;
    static const uint32_t dims[] = { 1, 3, 15, 16, 17, 31, 128, 129, 300, 16384, 16400, 40000 };
    for (size_t k = 0; k < sizeof dims / sizeof *dims; k++) {
        uint32_t dim = dims[k], rb = sq8_row_bytes(dim);
        int8_t *a = aligned_alloc(16, rb), *b = aligned_alloc(16, rb);
        assert_non_null(a);
        assert_non_null(b);
        float sa = 0.5f, sb = k % 2 ? 0.5f : 3e-3f;
        make_row(a, dim, sa, 1, &r);
        make_row(b, dim, sb, -1, &r);
        double l2 = 0, ip = 0, mag = 0;
        for (uint32_t i = 0; i < dim; i++) {
            double x = (double)sa * a[i], y = (double)sb * b[i];
            l2 += (x - y) * (x - y);
            ip += x * y;
            mag += x * x + y * y;
        }
        for (int lvl = DIST_SIMD_SCALAR; lvl <= DIST_SIMD_AVX2; lvl++) {
            if (dist_set_active((dist_simd)lvl) != JVDB_OK) continue;
            struct dist_space sp;
            assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, dim), JVDB_OK);
            assert_float_equal(sp.dist((const float *)a, (const float *)b, dim), l2, 1e-6 * mag);
            const float *rows[3] = { (const float *)b, NULL, (const float *)a };
            float out[3];
            sp.batch((const float *)a, rows, 3, dim, out);
            assert_float_equal(out[0], l2, 1e-6 * mag);
            assert_true(isinf(out[1]));
            assert_float_equal(out[2], 0.0f, 0.0);
            assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_COSINE, dim), JVDB_OK);
            assert_float_equal(sp.dist((const float *)a, (const float *)b, dim), -ip, 1e-6 * mag);
        }
        free(a);
        free(b);
    }
    struct dist_space sp;
    assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, 0), JVDB_EINVAL);
    assert_int_equal(dist_space_init_sq8(&sp, (jvdb_metric)7, 4), JVDB_EINVAL);
}

/* Over n vectors of DIM floats: how many of 20 queries find their float-nearest vector among the 3
 * nearest by code. */
static uint32_t ranking_hits(const struct sq8_quant *q, const float *buf, uint32_t n, const float *queries)
{
    enum { DIM = 64 };
    int8_t *rows = aligned_alloc(16, (size_t)n * sq8_row_bytes(DIM));
    assert_non_null(rows);
    for (uint32_t i = 0; i < n; i++) sq8_encode(q, buf + (size_t)i * DIM, rows + (size_t)i * sq8_row_bytes(DIM));
    struct dist_space sp;
    assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, DIM), JVDB_OK);
    uint32_t hits = 0;
    for (uint32_t qi = 0; qi < 20; qi++) {
        const float *query = queries + (size_t)qi * DIM;
        _Alignas(16) int8_t qrow[sq8_row_bytes(DIM)];
        sq8_encode(q, query, qrow);
        uint32_t best = 0;
        double bestd = INFINITY;
        for (uint32_t i = 0; i < n; i++) {
            double d = 0;
            for (uint32_t k = 0; k < DIM; k++)
                d += (double)(query[k] - buf[i * DIM + k]) * (query[k] - buf[i * DIM + k]);
            if (d < bestd) {
                bestd = d;
                best = i;
            }
        }
#define ROW(i) ((const float *)(rows + (size_t)(i)*sq8_row_bytes(DIM)))
        float cb = sp.dist((const float *)qrow, ROW(best), DIM);
        uint32_t closer = 0;
        for (uint32_t i = 0; i < n; i++) closer += sp.dist((const float *)qrow, ROW(i), DIM) < cb;
#undef ROW
        hits += closer < 3;
    }
    free(rows);
    return hits;
}

/* Codes rank like the float vectors: the nearest of 200 by float L2 is among the 3 nearest by code. */
static void test_ranking(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 13;
    enum { DIM = 64, N = 200 };
    static float buf[N * DIM], queries[20 * DIM];
    struct sq8_quant q;
    train(&q, JVDB_METRIC_L2, DIM, -1.0f, 2.0f, &r, buf, N);
    for (uint32_t i = 0; i < 20 * DIM; i++) queries[i] = -1.0f + 2.0f * (float)tu_uniform(&r);
    assert_int_equal(ranking_hits(&q, buf, N, queries), 20);
    sq8_free(&q);
}

/* The same over vectors whose magnitudes span 1e-4 .. 1e4 (ten groups; queries near members of
 * every group): one scale for all rows ranked the small groups at random. */
static void test_ranking_wide_range(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 17;
    enum { DIM = 64, N = 400 };
    static float buf[N * DIM], queries[20 * DIM];
    struct sq8_quant q;
    struct sq8_trainer t;
    assert_int_equal(sq8_trainer_init(&t, DIM, N), JVDB_OK);
    assert_int_equal(sq8_init(&q, DIM), JVDB_OK);
    for (uint32_t i = 0; i < N; i++) {
        double mag = pow(10.0, -4.0 + 8.0 * (double)(i % 10) / 9.0);
        for (uint32_t d = 0; d < DIM; d++) buf[(size_t)i * DIM + d] = (float)(mag * tu_gauss(&r));
        sq8_trainer_add(&t, buf + (size_t)i * DIM);
    }
    assert_int_equal(sq8_trainer_finish(&t, JVDB_METRIC_L2, &q), JVDB_OK);
    sq8_trainer_free(&t);
    for (uint32_t qi = 0; qi < 20; qi++) {
        const float *x = buf + (size_t)(qi * 17 % N) * DIM;
        double mag = pow(10.0, -4.0 + 8.0 * (double)((qi * 17 % N) % 10) / 9.0);
        for (uint32_t d = 0; d < DIM; d++) queries[qi * DIM + d] = x[d] + (float)(0.05 * mag * tu_gauss(&r));
    }
    uint32_t hits = ranking_hits(&q, buf, N, queries);
    sq8_free(&q);
    assert_int_equal(hits, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_ranking),
        cmocka_unit_test(test_ranking_wide_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

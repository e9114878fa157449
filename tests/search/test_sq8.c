/*
 * test_sq8.c — the graph's 8-bit scalar quantiser (src/search/sq8.c): codes round-trip within half a
 * step, out-of-range values clamp, a refit re-codes rows for the new range, the kernels equal an
 * integer reference on every instruction set (tails and dimensions past one accumulation chunk
 * included) and rank like the float distances they stand for.
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
    assert_int_equal(sq8_trainer_init(&t, dim), JVDB_OK);
    assert_int_equal(sq8_init(q, dim), JVDB_OK);
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t d = 0; d < dim; d++) buf[(size_t)i * dim + d] = lo + width * (float)tu_uniform(r);
        sq8_trainer_add(&t, buf + (size_t)i * dim);
    }
    sq8_trainer_finish(&t, m, 1.0f, 0.0f, q);
    sq8_trainer_free(&t);
}

static void test_round_trip_and_clamp(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 7;
    enum { DIM = 37, N = 50 };
    float buf[N * DIM];
    struct sq8_quant q;
    train(&q, JVDB_METRIC_L2, DIM, 100.0f, 3.0f, &r, buf, N);
    assert_true(q.scale > 0.0f);
    int8_t row[sq8_row_bytes(DIM)];
    for (uint32_t i = 0; i < N; i++) {
        const float *x = buf + (size_t)i * DIM;
        assert_true(sq8_reach(&q, x) <= 1.0f + 1e-6f);
        sq8_encode(&q, x, row);
        for (uint32_t d = 0; d < DIM; d++)
            assert_true(fabsf(q.centre[d] + q.scale * row[d] - x[d]) <= 0.5f * q.scale * 1.001f);
        for (uint32_t d = DIM; d < sq8_row_bytes(DIM); d++) assert_int_equal(row[d], 0);
    }
    /* A value far outside the range clamps to the end code, and reach says how far out it is. */
    float far[DIM];
    memcpy(far, buf, sizeof far);
    far[3] = 1000.0f;
    far[4] = -1000.0f;
    assert_true(sq8_reach(&q, far) > 10.0f);
    sq8_encode(&q, far, row);
    assert_int_equal(row[3], SQ8_MAX);
    assert_int_equal(row[4], -SQ8_MAX);
    /* Refit wider: re-coded rows still decode to their vectors, within the new step. */
    struct sq8_quant wide;
    assert_int_equal(sq8_copy(&wide, &q), JVDB_OK);
    wide.scale = q.scale * 3.0f;
    sq8_encode(&q, buf, row);
    sq8_recode(&q, &wide, row);
    for (uint32_t d = 0; d < DIM; d++)
        assert_true(fabsf(wide.centre[d] + wide.scale * row[d] - buf[d]) <= 0.5f * q.scale + 0.5f * wide.scale + 1e-4f);
    sq8_free(&wide);
    sq8_free(&q);
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
        for (uint32_t i = 0; i < rb; i++) {
            /* The extremes too: the accumulators must hold 254^2 per dimension. */
            a[i] = i < dim ? (int8_t)(i % 5 == 0 ? SQ8_MAX : (int)(tu_uniform(&r) * 255) - 127) : 0;
            b[i] = i < dim ? (int8_t)(i % 5 == 0 ? -SQ8_MAX : (int)(tu_uniform(&r) * 255) - 127) : 0;
        }
        int64_t l2 = 0, ip = 0;
        for (uint32_t i = 0; i < dim; i++) {
            l2 += (int64_t)(a[i] - b[i]) * (a[i] - b[i]);
            ip += (int64_t)a[i] * b[i];
        }
        for (int lvl = DIST_SIMD_SCALAR; lvl <= DIST_SIMD_AVX2; lvl++) {
            if (dist_set_active((dist_simd)lvl) != JVDB_OK) continue;
            struct dist_space sp;
            assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, dim), JVDB_OK);
            assert_float_equal(sp.dist((const float *)a, (const float *)b, dim), (float)l2, 1e-6 * (double)l2 + 0.5);
            const float *rows[3] = { (const float *)b, NULL, (const float *)a };
            float out[3];
            sp.batch((const float *)a, rows, 3, dim, out);
            assert_float_equal(out[0], (float)l2, 1e-6 * (double)l2 + 0.5);
            assert_true(isinf(out[1]));
            assert_float_equal(out[2], 0.0f, 0.0);
            assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_COSINE, dim), JVDB_OK);
            assert_float_equal(sp.dist((const float *)a, (const float *)b, dim), -(float)ip,
                               1e-6 * fabs((double)ip) + 0.5);
        }
        free(a);
        free(b);
    }
    struct dist_space sp;
    assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, 0), JVDB_EINVAL);
    assert_int_equal(dist_space_init_sq8(&sp, (jvdb_metric)7, 4), JVDB_EINVAL);
}

/* Codes rank like the float vectors: the nearest of 200 by float L2 is among the 3 nearest by code. */
static void test_ranking(void **state)
{
    (void)state;
    tu_rng r;
    r.s = 13;
    enum { DIM = 64, N = 200 };
    static float buf[N * DIM];
    struct sq8_quant q;
    train(&q, JVDB_METRIC_L2, DIM, -1.0f, 2.0f, &r, buf, N);
    static int8_t rows[N][64];
    for (uint32_t i = 0; i < N; i++) sq8_encode(&q, buf + (size_t)i * DIM, rows[i]);
    struct dist_space sp;
    assert_int_equal(dist_space_init_sq8(&sp, JVDB_METRIC_L2, DIM), JVDB_OK);
    for (uint32_t qi = 0; qi < 20; qi++) {
        float query[DIM];
        int8_t qrow[64];
        for (uint32_t d = 0; d < DIM; d++) query[d] = -1.0f + 2.0f * (float)tu_uniform(&r);
        sq8_encode(&q, query, qrow);
        uint32_t best = 0;
        double bestd = INFINITY;
        for (uint32_t i = 0; i < N; i++) {
            double d = 0;
            for (uint32_t k = 0; k < DIM; k++)
                d += (double)(query[k] - buf[i * DIM + k]) * (query[k] - buf[i * DIM + k]);
            if (d < bestd) {
                bestd = d;
                best = i;
            }
        }
        float cb = sp.dist((const float *)qrow, (const float *)rows[best], DIM);
        uint32_t closer = 0;
        for (uint32_t i = 0; i < N; i++) closer += sp.dist((const float *)qrow, (const float *)rows[i], DIM) < cb;
        assert_true(closer < 3);
    }
    sq8_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_clamp),
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_ranking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

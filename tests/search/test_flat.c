/*
 * test_flat.c — the top-k heaps and exact search.  Exact search must return exactly the true top-k of
 * a plain reference implementation (double precision, sort everything) for every metric, however the
 * scan is split across threads, with empty slots, filters and thresholds.  Float kernels round
 * differently from the reference, so an id may differ from the reference only where the reference
 * itself has a near-tie at that rank.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "search/distance.h"
#include "search/flat.h"
#include "search/topk.h"
#include "search_testutil.h"

static const jvdb_metric metrics[] = { JVDB_METRIC_L2, JVDB_METRIC_COSINE, JVDB_METRIC_DOT };

/* ---- topk ---- */

static int item_cmp(const void *a, const void *b)
{
    const struct topk_item *x = a, *y = b;
    return topk_less(*x, *y) ? -1 : topk_less(*y, *x) ? 1 : 0;
}

static void test_topk_matches_sort(void **state)
{
    (void)state;
    tu_rng r = { 11 };
    for (uint32_t cap = 0; cap <= 40; cap += 3) {
        for (uint32_t n = 0; n <= 200; n += 17) {
            struct topk h;
            assert_int_equal(topk_init(&h, cap), 0);
            struct topk_item *all = malloc((n + 1) * sizeof *all);
            for (uint32_t i = 0; i < n; i++) {
                /* Few distinct distances: lots of ties, which must break by slot. */
                all[i].dist = (float)(tu_next(&r) % 16);
                all[i].slot = (uint32_t)(tu_next(&r) % 1000);
                topk_push(&h, all[i].dist, all[i].slot);
            }
            qsort(all, n, sizeof *all, item_cmp);
            uint32_t want = n < cap ? n : cap;
            assert_int_equal(topk_sort(&h), want);
            for (uint32_t i = 0; i < want; i++) {
                assert_true(h.items[i].dist == all[i].dist);
                assert_int_equal(h.items[i].slot, all[i].slot);
            }
            free(all);
            topk_free(&h);
        }
    }
}

static void test_topk_merge_bound_nan(void **state)
{
    (void)state;
    struct topk a, b;
    assert_int_equal(topk_init(&a, 3), 0);
    assert_int_equal(topk_init(&b, 3), 0);
    assert_true(isinf(topk_bound(&a)));
    topk_push(&a, 5, 1);
    topk_push(&a, 1, 2);
    topk_push(&a, 3, 3);
    assert_true(topk_full(&a));
    assert_float_equal(topk_bound(&a), 5, 0);
    assert_int_equal(topk_push(&a, NAN, 9), 0);
    assert_int_equal(topk_push(&a, 6, 9), 0);
    topk_push(&b, 2, 4);
    topk_push(&b, 0.5f, 5);
    topk_merge(&a, &b);
    assert_int_equal(topk_sort(&a), 3);
    assert_int_equal(a.items[0].slot, 5);
    assert_int_equal(a.items[1].slot, 2);
    assert_int_equal(a.items[2].slot, 4);
    topk_pop_worst(&b);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.items[0].slot, 5);
    assert_int_equal(topk_reset(&b, 50), 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.cap, 50);
    topk_free(&a);
    topk_free(&b);
}

static void test_topk_queue_order(void **state)
{
    (void)state;
    struct topk_queue q;
    assert_int_equal(topk_queue_init(&q, 1), 0);
    tu_rng r = { 12 };
    for (uint32_t i = 0; i < 1000; i++) assert_int_equal(topk_queue_push(&q, (float)(tu_next(&r) % 100), i), 0);
    struct topk_item prev = topk_queue_pop(&q);
    while (q.n > 0) {
        struct topk_item x = topk_queue_pop(&q);
        assert_false(topk_less(x, prev));
        prev = x;
    }
    topk_queue_free(&q);
}

/* ---- exact search ---- */

static double true_score(const float *v, const float *query, uint32_t dim, jvdb_metric m)
{
    double qn = 0, vn = 0, acc = 0;
    for (uint32_t i = 0; i < dim; i++) {
        qn += (double)query[i] * query[i];
        vn += (double)v[i] * v[i];
    }
    qn = m == JVDB_METRIC_COSINE ? sqrt(qn) : 1.0;
    for (uint32_t i = 0; i < dim; i++) {
        double q = query[i] / qn;
        acc += m == JVDB_METRIC_L2 ? (v[i] - q) * (v[i] - q) : v[i] * q;
    }
    /* Cosine vectors are stored as given, of any length. */
    return m == JVDB_METRIC_COSINE ? acc / sqrt(vn) : acc;
}

/* Asserts that (got, n) is the true top-k: same count, same ids rank by rank except at near-ties of
 * the reference (computed with k + 1 entries so a tie at rank k is seen), scores matching. */
static void check_exact(const float *const *slots, uint32_t nslots, uint32_t dim, jvdb_metric m, const float *query,
                        uint32_t k, int (*accept)(void *, uint32_t), void *ctx, int use_thr, float thr,
                        const uint32_t *got, const float *scores, uint32_t n)
{
    uint32_t *ref = malloc((k + 2) * sizeof *ref);
    double *ref_s = malloc((k + 2) * sizeof *ref_s);
    uint32_t rn = tu_reference(slots, nslots, dim, m, query, k + 1, accept, ctx, use_thr, thr, ref, ref_s);
    uint32_t want = rn < k ? rn : k;
    double scale = 1e-4 * (1.0 + fabs(rn ? ref_s[0] : 0.0));
    if (n != want) {
        /* Only acceptable when a result sits on the threshold itself. */
        assert_true(use_thr);
        assert_true(n + 1 == want || n == want + 1);
        assert_true(fabs((n > want ? scores[want] : ref_s[n]) - thr) <= scale);
        free(ref);
        free(ref_s);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        assert_non_null(slots[got[i]]);
        if (accept) assert_true(accept(ctx, got[i]));
        double actual = true_score(slots[got[i]], query, dim, m);
        if (fabs(actual - ref_s[i]) > scale || fabs(scores[i] - ref_s[i]) > scale)
            fail_msg("rank %u: slot %u score %g (true %g), reference slot %u score %g", i, got[i], scores[i], actual,
                     ref[i], ref_s[i]);
        if (got[i] != ref[i]) {
            int tie = (i > 0 && fabs(ref_s[i - 1] - ref_s[i]) <= scale) ||
                      (i + 1 < rn && fabs(ref_s[i + 1] - ref_s[i]) <= scale);
            if (!tie) fail_msg("rank %u: slot %u but reference has slot %u (score %g)", i, got[i], ref[i], ref_s[i]);
        }
    }
    free(ref);
    free(ref_s);
}

static int accept_mod7(void *ctx, uint32_t slot)
{
    (void)ctx;
    return slot % 7 == 3;
}

static int accept_set(void *ctx, uint32_t slot)
{
    const uint8_t *set = ctx;
    return set[slot];
}

static void run_exact_case(uint32_t n, uint32_t dim, jvdb_metric m, uint32_t k, uint32_t threads, uint64_t seed)
{
    tu_data d;
    tu_data_make(&d, n, dim, n / 50 + 1, 0.5, seed, m);
    /* Empty slots, as deletions leave them. */
    for (uint32_t s = 0; s < n; s += 9) d.slots[s] = NULL;
    /* The store keeps cosine vectors as given: spread their lengths from 1e-30 to 1e15 (the scan
     * must score directions only, and fall back to double sums for the tiny ones). */
    if (m == JVDB_METRIC_COSINE) {
        tu_rng sr = { seed + 2 };
        for (uint32_t s = 0; s < n; s++) {
            float sc = (float)pow(10.0, -30.0 + 45.0 * tu_uniform(&sr));
            for (uint32_t j = 0; j < dim; j++) d.block[(size_t)s * dim + j] *= sc;
        }
    }
    tu_rng r = { seed + 1 };
    float *q = malloc(dim * sizeof *q);
    uint32_t *got = malloc((k + 1) * sizeof *got);
    float *scores = malloc((k + 1) * sizeof *scores);
    for (int round = 0; round < 4; round++) {
        if (n) tu_query(&d, &r, 0.3, q);
        else q[0] = 1.f;
        if (m == JVDB_METRIC_COSINE) q[0] += 3.f; /* not unit length: flat_search must normalise it */
        struct flat_params p;
        flat_params_init(&p);
        p.metric = m;
        p.k = k;
        p.threads = threads;
        uint32_t cnt;
        assert_int_equal(flat_search(d.slots, n, dim, q, &p, got, scores, &cnt), 0);
        check_exact(d.slots, n, dim, m, q, k, NULL, NULL, 0, 0, got, scores, cnt);

        p.accept = accept_mod7;
        assert_int_equal(flat_search(d.slots, n, dim, q, &p, got, scores, &cnt), 0);
        check_exact(d.slots, n, dim, m, q, k, accept_mod7, NULL, 0, 0, got, scores, cnt);

        /* Threshold at the reference's middle score: only results at least that good. */
        if (cnt >= 2) {
            p.accept = NULL;
            p.use_threshold = 1;
            p.threshold = scores[cnt / 2];
            float thr = p.threshold;
            assert_int_equal(flat_search(d.slots, n, dim, q, &p, got, scores, &cnt), 0);
            for (uint32_t i = 0; i < cnt; i++) assert_true(m == JVDB_METRIC_L2 ? scores[i] <= thr : scores[i] >= thr);
            check_exact(d.slots, n, dim, m, q, k, NULL, NULL, 1, thr, got, scores, cnt);
        }
    }
    free(q);
    free(got);
    free(scores);
    tu_data_free(&d);
}

static void test_exact_small(void **state)
{
    (void)state;
    static const uint32_t dims[] = { 1, 3, 7, 16, 33, 100 };
    static const uint32_t ns[] = { 0, 1, 5, 64, 1001 };
    static const uint32_t ks[] = { 1, 10, 2000 };
    uint64_t seed = 100;
    for (size_t mi = 0; mi < 3; mi++)
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
                for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++)
                    run_exact_case(ns[ni], dims[di], metrics[mi], ks[ki], 1, seed++);
}

static void test_exact_threads(void **state)
{
    (void)state;
    /* Big enough that flat_threads_for really splits the table. */
    assert_true(flat_threads_for(20011, 64, 3) == 3);
    assert_true(flat_threads_for(100, 64, 8) == 1);
    assert_true(flat_threads_for(20011, 64, 0) >= 1);
    uint64_t seed = 500;
    for (size_t mi = 0; mi < 3; mi++) {
        run_exact_case(20011, 64, metrics[mi], 10, 3, seed++);
        run_exact_case(20011, 64, metrics[mi], 100, 4, seed++);
        run_exact_case(20011, 64, metrics[mi], 7, 0, seed++);
    }
}

/* The same answer whatever the split and kernel: ties break by slot, so even exact duplicates give
 * one order. */
static void test_exact_deterministic_with_duplicates(void **state)
{
    (void)state;
    enum { N = 30000, DIM = 24, K = 50 };
    tu_data d;
    tu_data_make(&d, N, DIM, 10, 0.1, 77, JVDB_METRIC_L2);
    for (uint32_t s = 0; s < N; s++) d.slots[s] = d.block + (size_t)(s % 97) * DIM; /* every vector 300+ times */
    float q[DIM];
    tu_rng r = { 78 };
    tu_query(&d, &r, 0.1, q);
    uint32_t base[K], got[K], n1, n2;
    struct flat_params p;
    flat_params_init(&p);
    p.k = K;
    p.threads = 1;
    assert_int_equal(flat_search(d.slots, N, DIM, q, &p, base, NULL, &n1), 0);
    assert_int_equal(n1, K);
    for (uint32_t i = 1; i < K; i++) assert_true(base[i] > base[i - 1] || d.slots[base[i]] != d.slots[base[i - 1]]);
    for (uint32_t t = 2; t <= 5; t++) {
        p.threads = t;
        assert_int_equal(flat_search(d.slots, N, DIM, q, &p, got, NULL, &n2), 0);
        assert_memory_equal(base, got, sizeof base);
    }
    tu_data_free(&d);
}

static void test_exact_filter_counts(void **state)
{
    (void)state;
    enum { N = 5000, DIM = 8 };
    tu_data d;
    tu_data_make(&d, N, DIM, 20, 0.5, 90, JVDB_METRIC_DOT);
    uint8_t *set = calloc(N, 1);
    float q[DIM] = { 1, 0, 0, 0, 0, 0, 0, 1 };
    uint32_t got[20];
    float sc[20];
    struct flat_params p;
    flat_params_init(&p);
    p.metric = JVDB_METRIC_DOT;
    p.k = 20;
    p.accept = accept_set;
    p.accept_ctx = set;
    uint32_t n;
    /* No match, few matches, many: k of them whenever k exist, and only matches. */
    assert_int_equal(flat_search(d.slots, N, DIM, q, &p, got, sc, &n), 0);
    assert_int_equal(n, 0);
    set[4999] = set[0] = set[2500] = 1;
    assert_int_equal(flat_search(d.slots, N, DIM, q, &p, got, sc, &n), 0);
    assert_int_equal(n, 3);
    for (uint32_t s = 0; s < N; s += 37) set[s] = 1;
    assert_int_equal(flat_search(d.slots, N, DIM, q, &p, got, sc, &n), 0);
    assert_int_equal(n, 20);
    for (uint32_t i = 0; i < n; i++) assert_true(set[got[i]]);
    check_exact(d.slots, N, DIM, JVDB_METRIC_DOT, q, 20, accept_set, set, 0, 0, got, sc, n);
    free(set);
    tu_data_free(&d);
}

static void test_exact_bad_input(void **state)
{
    (void)state;
    float v[4] = { 1, 2, 3, 4 }, zero[4] = { 0 }, nan[4] = { 0, NAN, 0, 0 };
    const float *slots[2] = { v, v };
    uint32_t got[2], n = 99;
    struct flat_params p;
    flat_params_init(&p);
    p.metric = JVDB_METRIC_COSINE;
    assert_int_equal(flat_search(slots, 2, 4, zero, &p, got, NULL, &n), JVDB_EINVAL);
    assert_int_equal(n, 0);
    p.metric = JVDB_METRIC_L2;
    assert_int_equal(flat_search(slots, 2, 4, nan, &p, got, NULL, &n), JVDB_EINVAL);
    assert_int_equal(flat_search(slots, 2, 0, v, &p, got, NULL, &n), JVDB_EINVAL);
    p.use_threshold = 1;
    p.threshold = NAN;
    assert_int_equal(flat_search(slots, 2, 4, v, &p, got, NULL, &n), JVDB_EINVAL);
    p.use_threshold = 0;
    p.k = 0;
    assert_int_equal(flat_search(slots, 2, 4, v, &p, got, NULL, &n), JVDB_OK);
    assert_int_equal(n, 0);
    p.k = 5;
    assert_int_equal(flat_search(slots, 2, 4, v, &p, got, NULL, &n), JVDB_OK);
    assert_int_equal(n, 2);
    assert_int_equal(got[0], 0); /* equal distances: lower slot first */
    assert_int_equal(got[1], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_matches_sort),   cmocka_unit_test(test_topk_merge_bound_nan),
        cmocka_unit_test(test_topk_queue_order),    cmocka_unit_test(test_exact_small),
        cmocka_unit_test(test_exact_threads),       cmocka_unit_test(test_exact_deterministic_with_duplicates),
        cmocka_unit_test(test_exact_filter_counts), cmocka_unit_test(test_exact_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

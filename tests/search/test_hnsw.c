/*
 * test_hnsw.c — the HNSW index: recall@10 >= 0.95 against exact search on 20,000 clustered vectors,
 * still after marking 30% deleted and after the rebuild; every metric; filters return only matches and
 * k of them when k exist (widening, or reporting incompleteness for the exact fallback); slot reuse;
 * concurrent searches; edge cases and errors.  Sized for Debug + ASan (dim 32); bench_search measures
 * larger sets.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "search/flat.h"
#include "search/hnsw.h"
#include "search/hnsw_internal.h"
#include "search_testutil.h"

enum { K = 10 };

static struct hnsw *build(const tu_data *d, jvdb_metric m, const struct hnsw_params *hp)
{
    struct hnsw_params def;
    hnsw_params_init(&def);
    struct hnsw *h;
    assert_int_equal(hnsw_create(d->dim, m, hp ? hp : &def, &h), 0);
    for (uint32_t s = 0; s < d->n; s++) {
        if (d->slots[s]) assert_int_equal(hnsw_insert(h, d->slots, d->n, s), 0);
    }
    return h;
}

static uint32_t exact(const float *const *slots, uint32_t n, uint32_t dim, jvdb_metric m, const float *q, uint32_t k,
                      topk_accept_fn accept, void *ctx, uint32_t *out)
{
    struct flat_params p;
    flat_params_init(&p);
    p.metric = m;
    p.k = k;
    p.accept = accept;
    p.accept_ctx = ctx;
    uint32_t cnt;
    assert_int_equal(flat_search(slots, n, dim, q, &p, out, NULL, &cnt), 0);
    return cnt;
}

/* Mean recall@k of HNSW against exact search over `truth_slots` (the live view of the table), while
 * HNSW reads vectors through `slots`.  Also checks that nothing deleted or rejected is returned. */
static double recall(const struct hnsw *h, const float *const *slots, const float *const *truth_slots, uint32_t n,
                     uint32_t dim, jvdb_metric m, uint32_t nq, uint64_t seed, uint32_t ef, topk_accept_fn accept,
                     void *ctx)
{
    tu_rng r = { seed };
    float *q = malloc(dim * sizeof *q);
    uint64_t hits = 0, total = 0;
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t s0;
        do s0 = (uint32_t)(tu_next(&r) % n);
        while (!truth_slots[s0]);
        for (uint32_t j = 0; j < dim; j++) q[j] = truth_slots[s0][j] + (float)(0.3 * tu_gauss(&r));
        uint32_t want[K], got[K], nw, ng;
        nw = exact(truth_slots, n, dim, m, q, K, accept, ctx, want);
        struct hnsw_query hq;
        hnsw_query_init(&hq);
        hq.k = K;
        hq.ef = ef;
        hq.accept = accept;
        hq.accept_ctx = ctx;
        assert_int_equal(hnsw_search(h, slots, n, q, &hq, got, NULL, &ng, NULL), 0);
        for (uint32_t j = 0; j < ng; j++) {
            assert_non_null(truth_slots[got[j]]);
            assert_false(hnsw_is_deleted(h, got[j]));
            if (accept) assert_true(accept(ctx, got[j]));
        }
        hits += tu_overlap(got, ng, want, nw);
        total += nw;
    }
    free(q);
    return total ? (double)hits / (double)total : 1.0;
}

static void test_recall_delete_rebuild(void **state)
{
    (void)state;
    enum { N = 20000, DIM = 32, NQ = 200 };
    tu_data d;
    tu_data_make(&d, N, DIM, N / 100, 0.5, 2024, JVDB_METRIC_L2);
    struct hnsw *h = build(&d, JVDB_METRIC_L2, NULL);
    assert_int_equal(hnsw_node_count(h), N);

    double r0 = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, NQ, 1, 0, NULL, NULL);
    print_message("recall@10 built (ef 64):            %.4f\n", r0);
    assert_true(r0 >= 0.95);

    /* Delete 30% at random. */
    const float **live = malloc(N * sizeof *live);
    tu_rng r = { 5 };
    for (uint32_t s = 0; s < N; s++) {
        live[s] = d.slots[s];
        if (tu_uniform(&r) < 0.3) {
            assert_int_equal(hnsw_mark_deleted(h, s), 0);
            assert_int_equal(hnsw_mark_deleted(h, s), 0); /* twice is fine */
            live[s] = NULL;
        }
    }
    double share = hnsw_deleted_share(h);
    assert_true(share > 0.28 && share < 0.32);
    assert_int_equal(hnsw_live_count(h), (uint32_t)lround((1 - share) * N));

    /* Deleted vectors still readable (the store keeps them until the rebuild). */
    double r1 = recall(h, d.slots, live, N, DIM, JVDB_METRIC_L2, NQ, 2, 0, NULL, NULL);
    print_message("recall@10 after deleting 30%%:       %.4f\n", r1);
    assert_true(r1 >= 0.95);

    /* Deleted vectors already gone from the slot table: degraded navigation, still sound. */
    double r2 = recall(h, live, live, N, DIM, JVDB_METRIC_L2, NQ, 3, 0, NULL, NULL);
    print_message("recall@10 deleted vectors freed:    %.4f\n", r2);
    assert_true(r2 >= 0.80);

    assert_int_equal(hnsw_rebuild(h, live, N), 0);
    assert_int_equal(hnsw_node_count(h), hnsw_live_count(h));
    assert_true(hnsw_deleted_share(h) == 0.0);
    for (uint32_t s = 0; s < N; s++) assert_int_equal(hnsw_contains(h, s), live[s] != NULL);
    double r3 = recall(h, live, live, N, DIM, JVDB_METRIC_L2, NQ, 4, 0, NULL, NULL);
    print_message("recall@10 after rebuild:            %.4f\n", r3);
    assert_true(r3 >= 0.95);

    hnsw_free(h);
    free(live);
    tu_data_free(&d);
}

static void test_metrics(void **state)
{
    (void)state;
    enum { N = 4000, DIM = 20 };
    static const jvdb_metric ms[] = { JVDB_METRIC_L2, JVDB_METRIC_COSINE, JVDB_METRIC_DOT };
    static const char *const names[] = { "l2", "cosine", "dot" };
    for (int i = 0; i < 3; i++) {
        tu_data d;
        tu_data_make(&d, N, DIM, 40, 0.5, 31 + (uint64_t)i, ms[i]);
        struct hnsw *h = build(&d, ms[i], NULL);
        double r = recall(h, d.slots, d.slots, N, DIM, ms[i], 100, 9, 0, NULL, NULL);
        print_message("recall@10 %-6s:                    %.4f\n", names[i], r);
        assert_true(r >= 0.95);

        /* Scores: sorted best first, and the metric's own units. */
        float q[DIM], scores[K];
        uint32_t got[K], n;
        memcpy(q, d.slots[17], sizeof q);
        struct hnsw_query hq;
        hnsw_query_init(&hq);
        assert_int_equal(hnsw_search(h, d.slots, N, q, &hq, got, scores, &n, NULL), 0);
        assert_int_equal(n, K);
        for (uint32_t j = 1; j < n; j++)
            assert_true(ms[i] == JVDB_METRIC_L2 ? scores[j] >= scores[j - 1] : scores[j] <= scores[j - 1]);
        if (ms[i] != JVDB_METRIC_DOT) {
            assert_int_equal(got[0], 17);
            assert_float_equal(scores[0], ms[i] == JVDB_METRIC_L2 ? 0.f : 1.f, 1e-4);
        }
        /* Threshold: only results at least that good. */
        hq.use_threshold = 1;
        hq.threshold = scores[4];
        uint32_t n2;
        assert_int_equal(hnsw_search(h, d.slots, N, q, &hq, got, scores, &n2, NULL), 0);
        assert_true(n2 >= 5 && n2 <= K);
        for (uint32_t j = 0; j < n2; j++)
            assert_true(ms[i] == JVDB_METRIC_L2 ? scores[j] <= hq.threshold : scores[j] >= hq.threshold);
        hnsw_free(h);
        tu_data_free(&d);
    }
}

typedef struct filt {
    uint32_t mod, rem;
} filt;

static int accept_mod(void *ctx, uint32_t slot)
{
    const filt *f = ctx;
    return slot % f->mod == f->rem;
}

static void test_filters(void **state)
{
    (void)state;
    enum { N = 10000, DIM = 16 };
    tu_data d;
    tu_data_make(&d, N, DIM, 100, 0.5, 77, JVDB_METRIC_L2);
    struct hnsw *h = build(&d, JVDB_METRIC_L2, NULL);

    /* Selectivity 50%, 10%: filtered recall stays high. */
    filt half = { 2, 1 }, tenth = { 10, 3 };
    double rh = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, 100, 21, 0, accept_mod, &half);
    double rt = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, 100, 22, 0, accept_mod, &tenth);
    print_message("filtered recall@10: 50%% %.4f, 10%% %.4f\n", rh, rt);
    assert_true(rh >= 0.95 && rt >= 0.95);

    /* From 1% down to fewer matches than k: only matches, and k of them whenever k exist, either
     * straight from HNSW or through the exact fallback when HNSW says it is incomplete. */
    static const uint32_t mods[] = { 100, 500, 2000, 5000, 20000 };
    tu_rng r = { 23 };
    float q[DIM];
    for (size_t i = 0; i < sizeof mods / sizeof *mods; i++) {
        filt f = { mods[i], 7 };
        uint32_t matches = (N - 7 + mods[i] - 1) / mods[i];
        uint32_t want = matches < K ? matches : K;
        for (int round = 0; round < 20; round++) {
            tu_query(&d, &r, 0.3, q);
            struct hnsw_query hq;
            hnsw_query_init(&hq);
            hq.accept = accept_mod;
            hq.accept_ctx = &f;
            struct hnsw_search_info info;
            uint32_t got[K], n;
            assert_int_equal(hnsw_search(h, d.slots, N, q, &hq, got, NULL, &n, &info), 0);
            for (uint32_t j = 0; j < n; j++) assert_true(accept_mod(&f, got[j]));
            if (info.complete) {
                assert_int_equal(n, want);
            } else {
                assert_true(n < K);
                assert_int_equal(info.ef_used, 32 * HNSW_DEFAULT_EF_SEARCH);
                assert_false(info.complete);
                n = exact(d.slots, N, DIM, JVDB_METRIC_L2, q, K, accept_mod, &f, got);
                assert_int_equal(n, want);
            }
            if (round == 0)
                print_message("filter 1/%-5u: %u results, ef %u after %u rounds, %llu distances%s\n", mods[i], n,
                              info.ef_used, info.rounds, (unsigned long long)info.distances,
                              info.complete ? "" : ", exact fallback");
        }
    }
    hnsw_free(h);
    tu_data_free(&d);
}

static void test_slot_reuse(void **state)
{
    (void)state;
    enum { N = 3000, DIM = 12 };
    tu_data d;
    tu_data_make(&d, N, DIM, 30, 0.5, 88, JVDB_METRIC_L2);
    struct hnsw *h = build(&d, JVDB_METRIC_L2, NULL);
    float fresh[3][DIM];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < DIM; j++) fresh[i][j] = 20.f + 5.f * (float)i + (float)j; /* far from every cluster */

    /* 1) deleted slot reused for a new vector; 2) the entry point re-linked with a new vector;
     * 3) a live node given a new vector. */
    uint32_t targets[3] = { 123, h->entry, 2500 };
    assert_int_equal(hnsw_mark_deleted(h, targets[0]), 0);
    for (int i = 0; i < 3; i++) {
        uint32_t s = targets[i];
        d.slots[s] = fresh[i];
        assert_int_equal(hnsw_insert(h, d.slots, N, s), 0);
        assert_false(hnsw_is_deleted(h, s));
    }
    assert_int_equal(hnsw_node_count(h), N);
    assert_int_equal(hnsw_live_count(h), N);
    for (int i = 0; i < 3; i++) {
        uint32_t got[K], n;
        float sc[K];
        struct hnsw_query hq;
        hnsw_query_init(&hq);
        assert_int_equal(hnsw_search(h, d.slots, N, fresh[i], &hq, got, sc, &n, NULL), 0);
        assert_int_equal(got[0], targets[i]);
        assert_float_equal(sc[0], 0.f, 1e-6);
    }
    /* And the old neighbourhoods are still found. */
    double r = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, 50, 41, 0, NULL, NULL);
    print_message("recall@10 after re-linking:         %.4f\n", r);
    assert_true(r >= 0.95);
    hnsw_free(h);
    tu_data_free(&d);
}

typedef struct conc {
    const struct hnsw *h;
    const tu_data *d;
    const float *queries;
    uint32_t nq;
    const uint32_t *expect;
    int mismatches;
} conc;

static void *conc_run(void *arg)
{
    conc *c = arg;
    for (int rep = 0; rep < 3; rep++) {
        for (uint32_t i = 0; i < c->nq; i++) {
            struct hnsw_query hq;
            hnsw_query_init(&hq);
            uint32_t got[K], n;
            if (hnsw_search(c->h, c->d->slots, c->d->n, c->queries + (size_t)i * c->d->dim, &hq, got, NULL, &n, NULL) !=
                    0 ||
                n != K || memcmp(got, c->expect + (size_t)i * K, sizeof got) != 0)
                c->mismatches++;
        }
    }
    return NULL;
}

static void test_concurrent_searches(void **state)
{
    (void)state;
    enum { N = 3000, DIM = 16, NQ = 60, T = 4 };
    tu_data d;
    tu_data_make(&d, N, DIM, 30, 0.5, 99, JVDB_METRIC_COSINE);
    struct hnsw *h = build(&d, JVDB_METRIC_COSINE, NULL);
    float *queries = malloc(NQ * DIM * sizeof *queries);
    uint32_t *expect = malloc(NQ * K * sizeof *expect);
    tu_rng r = { 100 };
    for (uint32_t i = 0; i < NQ; i++) {
        tu_query(&d, &r, 0.3, queries + i * DIM);
        struct hnsw_query hq;
        hnsw_query_init(&hq);
        uint32_t n;
        assert_int_equal(hnsw_search(h, d.slots, N, queries + i * DIM, &hq, expect + i * K, NULL, &n, NULL), 0);
        assert_int_equal(n, K);
    }
    pthread_t tid[T];
    conc c[T];
    for (int t = 0; t < T; t++) {
        c[t] = (conc){ h, &d, queries, NQ, expect, 0 };
        assert_int_equal(pthread_create(&tid[t], NULL, conc_run, &c[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(tid[t], NULL);
        assert_int_equal(c[t].mismatches, 0);
    }
    free(queries);
    free(expect);
    hnsw_free(h);
    tu_data_free(&d);
}

static void test_edges_and_errors(void **state)
{
    (void)state;
    struct hnsw_params p;
    hnsw_params_init(&p);
    assert_int_equal(p.M, 16);
    assert_int_equal(p.ef_construction, 200);
    assert_int_equal(p.ef_search, 64);
    struct hnsw *h;
    p.M = 1;
    assert_int_equal(hnsw_create(4, JVDB_METRIC_L2, &p, &h), JVDB_EINVAL);
    p.M = 16;
    p.ef_construction = 0;
    assert_int_equal(hnsw_create(4, JVDB_METRIC_L2, &p, &h), JVDB_EINVAL);
    p.ef_construction = 200;
    assert_int_equal(hnsw_create(0, JVDB_METRIC_L2, &p, &h), JVDB_EINVAL);
    assert_int_equal(hnsw_create(4, JVDB_METRIC_L2, &p, &h), 0);

    float v[6][4] = {
        { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 }, { 1, 1, 0, 0 }, { 0, 0, 0, 0 },
    };
    const float *slots[8] = { v[0], v[1], NULL, v[3], v[4], NULL, NULL, v[2] };
    uint32_t got[K], n = 99;
    struct hnsw_query hq;
    hnsw_query_init(&hq);
    struct hnsw_search_info info;

    /* Empty index. */
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 0);
    assert_true(info.complete);
    assert_true(hnsw_deleted_share(h) == 0.0);

    /* Errors. */
    assert_int_equal(hnsw_insert(h, slots, 8, 2), JVDB_EINVAL); /* empty slot */
    assert_int_equal(hnsw_insert(h, slots, 8, 9), JVDB_EINVAL); /* beyond the table */
    assert_int_equal(hnsw_mark_deleted(h, 0), JVDB_ENOTFOUND);
    assert_int_equal(hnsw_set_ef_search(h, 0), JVDB_EINVAL);

    /* One node, then a few; k larger than what exists returns everything, complete. */
    assert_int_equal(hnsw_insert(h, slots, 8, 7), 0);
    assert_int_equal(hnsw_search(h, slots, 8, v[2], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 1);
    assert_int_equal(got[0], 7);
    assert_int_equal(hnsw_insert(h, slots, 8, 7), 0); /* re-link the only node */
    for (uint32_t s = 0; s < 5; s++) {
        if (slots[s]) assert_int_equal(hnsw_insert(h, slots, 8, s), 0);
    }
    assert_int_equal(hnsw_node_count(h), 5);
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 5);
    assert_true(info.complete);
    assert_int_equal(got[0], 0);

    hq.k = 4000000000u; /* far more than exist: everything, without a k-sized allocation */
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 5);
    hq.k = 5;

    /* Deleted nodes vanish from results; all deleted gives nothing. */
    assert_int_equal(hnsw_mark_deleted(h, 0), 0);
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 4);
    for (uint32_t i = 0; i < n; i++) assert_int_not_equal(got[i], 0);
    uint32_t all[] = { 1, 3, 4, 7 };
    for (int i = 0; i < 4; i++) assert_int_equal(hnsw_mark_deleted(h, all[i]), 0);
    assert_true(hnsw_deleted_share(h) == 1.0);
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 0);
    assert_true(info.complete);
    assert_int_equal(hnsw_rebuild(h, slots, 8), 0);
    assert_int_equal(hnsw_node_count(h), 0);
    assert_int_equal(hnsw_insert(h, slots, 8, 4), 0);
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, &info), 0);
    assert_int_equal(n, 1);

    /* Bad queries. */
    float nanq[4] = { NAN, 0, 0, 0 };
    assert_int_equal(hnsw_search(h, slots, 8, nanq, &hq, got, NULL, &n, NULL), JVDB_EINVAL);
    hq.ef = HNSW_MAX_EF + 1;
    assert_int_equal(hnsw_search(h, slots, 8, v[0], &hq, got, NULL, &n, NULL), JVDB_EINVAL);
    hnsw_free(h);

    assert_int_equal(hnsw_create(4, JVDB_METRIC_COSINE, &p, &h), 0);
    assert_int_equal(hnsw_insert(h, slots, 8, 0), 0);
    hnsw_query_init(&hq);
    assert_int_equal(hnsw_search(h, slots, 8, v[5], &hq, got, NULL, &n, NULL), JVDB_EINVAL); /* zero */
    assert_int_equal(hnsw_set_ef_search(h, 100), 0);
    hnsw_get_params(h, &p);
    assert_int_equal(p.ef_search, 100);
    assert_true(hnsw_memory_bytes(h) > 0);
    hnsw_free(h);
    hnsw_free(NULL);
}

/* Parallel batches (hnsw_insert_batch with 4 threads, 512 slots each, as the index thread gives them)
 * build a graph as good as the sequential one, and a parallel re-link of existing nodes keeps it so. */
static void test_parallel_build(void **state)
{
    (void)state;
    enum { N = 12000, DIM = 32, NQ = 200, BATCH = 512 };
    tu_data d;
    tu_data_make(&d, N, DIM, N / 100, 0.5, 4242, JVDB_METRIC_L2);
    struct hnsw_params p;
    hnsw_params_init(&p);
    struct hnsw *h;
    assert_int_equal(hnsw_create(DIM, JVDB_METRIC_L2, &p, &h), 0);
    uint32_t *list = malloc(N * sizeof *list);
    assert_non_null(list);
    for (uint32_t s = 0; s < N; s++) list[s] = s;
    for (uint32_t i = 0; i < N; i += BATCH)
        assert_int_equal(hnsw_insert_batch(h, d.slots, N, list + i, N - i < BATCH ? N - i : BATCH, 4), 0);
    assert_int_equal(hnsw_node_count(h), N);
    assert_int_equal(hnsw_live_count(h), N);
    assert_int_equal(h->par, 0);
    double r0 = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, NQ, 5, 0, NULL, NULL);
    print_message("recall@10 parallel build (4 threads): %.4f\n", r0);
    assert_true(r0 >= 0.95);
    /* Re-linking 2,000 existing nodes at once, one of them a deleted one. */
    assert_int_equal(hnsw_mark_deleted(h, 7), 0);
    assert_int_equal(hnsw_insert_batch(h, d.slots, N, list, 2000, 4), 0);
    assert_false(hnsw_is_deleted(h, 7));
    assert_int_equal(hnsw_node_count(h), N);
    double r1 = recall(h, d.slots, d.slots, N, DIM, JVDB_METRIC_L2, NQ, 6, 0, NULL, NULL);
    print_message("recall@10 after a parallel re-link:    %.4f\n", r1);
    assert_true(r1 >= 0.95);
    /* Every list is within bounds and names nodes. */
    for (uint32_t s = 0; s < N; s++)
        for (int l = 0; l <= h->level[s]; l++) {
            const uint32_t *li = hnsw_links(h, s, l);
            assert_true(li[0] <= (l ? p.M : 2 * p.M));
            for (uint32_t j = 1; j <= li[0]; j++) assert_true(li[j] < N && li[j] != s && h->level[li[j]] >= l);
        }
    /* A slot without a vector is refused, the others still go in. */
    struct hnsw *g;
    assert_int_equal(hnsw_create(DIM, JVDB_METRIC_L2, &p, &g), 0);
    const float **holes = malloc(N * sizeof *holes);
    assert_non_null(holes);
    memcpy(holes, d.slots, N * sizeof *holes);
    holes[100] = NULL;
    assert_int_equal(hnsw_insert_batch(g, holes, N, list, 400, 2), JVDB_EINVAL);
    assert_int_equal(hnsw_node_count(g), 399);
    hnsw_free(g);
    free(holes);
    free(list);
    hnsw_free(h);
    tu_data_free(&d);
}

/* The same seed and inserts give the same graph, hence the same answers. */
static void test_deterministic(void **state)
{
    (void)state;
    enum { N = 2000, DIM = 8 };
    tu_data d;
    tu_data_make(&d, N, DIM, 20, 0.5, 55, JVDB_METRIC_L2);
    struct hnsw *a = build(&d, JVDB_METRIC_L2, NULL), *b = build(&d, JVDB_METRIC_L2, NULL);
    assert_int_equal(a->entry, b->entry);
    assert_memory_equal(a->l0, b->l0, (size_t)N * a->l0_stride * sizeof(uint32_t));
    hnsw_free(a);
    hnsw_free(b);
    tu_data_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edges_and_errors),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_slot_reuse),
        cmocka_unit_test(test_concurrent_searches),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_recall_delete_rebuild),
        cmocka_unit_test(test_parallel_build),
    };
    /* The TSan smoke set of `make test` runs only the concurrent searches (the rest is single-threaded
     * and takes minutes under TSan); `make tsan` runs everything. */
    const char *only = getenv("JVDB_TEST_FILTER");
    if (only && *only) cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

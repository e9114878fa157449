/*
 * bench_search.c — measures the search module alone on generated clustered data: exact-scan QPS,
 * HNSW build time and recall@k / QPS for several ef, then the same after marking a share deleted and
 * after a rebuild.  One query at a time.  Not a test (never registered with CTest); the product
 * benchmarks against FAISS and hnswlib live in bench/.
 *
 * usage: bench_search [n] [dim] [queries] [M] [ef_construction] [metric] [flat_threads] [simd]
 * environment: BENCH_SIGMA (cluster spread, default 0.35; larger overlaps clusters and makes the
 * set harder), BENCH_DUMP=file (write base and queries as raw float32 for the peers), BENCH_EXACT_ONLY=1
 * (stop after the exact scan).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search/distance.h"
#include "search/flat.h"
#include "search/hnsw.h"
#include "search_testutil.h"

enum { K = 10 };

static void bench_hnsw_curve(const char *label, const struct hnsw *h, const tu_data *d, const float *queries,
                             uint32_t nq, const uint32_t *truth)
{
    static const uint32_t efs[] = { 10, 16, 24, 32, 48, 64, 96, 128, 200, 300 };
    for (size_t e = 0; e < sizeof efs / sizeof efs[0]; e++) {
        struct hnsw_query q;
        hnsw_query_init(&q);
        q.k = K;
        q.ef = efs[e];
        uint64_t hits = 0, dists = 0;
        double t0 = tu_now(), c0 = tu_cpu_now();
        for (uint32_t i = 0; i < nq; i++) {
            uint32_t got[K], n;
            struct hnsw_search_info info;
            hnsw_search(h, d->slots, d->n, queries + (size_t)i * d->dim, &q, got, NULL, &n, &info);
            hits += tu_overlap(got, n, truth + (size_t)i * K, K);
            dists += info.distances;
        }
        double dt = tu_now() - t0, ct = tu_cpu_now() - c0;
        printf("%-10s ef=%-4u recall@10=%.4f  qps=%9.0f  cpu-qps=%9.0f  dist/query=%llu\n", label, efs[e],
               (double)hits / ((double)nq * K), nq / dt, nq / ct, (unsigned long long)(dists / nq));
    }
}

static void bench_truth(const tu_data *d, jvdb_metric metric, const float *queries, uint32_t nq, uint32_t threads,
                        uint32_t *truth)
{
    struct flat_params fp;
    flat_params_init(&fp);
    fp.metric = metric;
    fp.k = K;
    fp.threads = threads;
    double t0 = tu_now(), c0 = tu_cpu_now();
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t n;
        flat_search(d->slots, d->n, d->dim, queries + (size_t)i * d->dim, &fp, truth + (size_t)i * K, NULL, &n);
    }
    double dt = tu_now() - t0, ct = tu_cpu_now() - c0;
    printf("exact      threads=%u qps=%.1f (%.3f ms/query)  cpu-qps=%.1f (calling thread)\n",
           flat_threads_for(d->n, d->dim, threads), nq / dt, dt * 1e3 / nq, nq / ct);
}

int main(int argc, char **argv)
{
    uint32_t n = argc > 1 ? (uint32_t)atoi(argv[1]) : 100000;
    uint32_t dim = argc > 2 ? (uint32_t)atoi(argv[2]) : 128;
    uint32_t nq = argc > 3 ? (uint32_t)atoi(argv[3]) : 1000;
    struct hnsw_params hp;
    hnsw_params_init(&hp);
    if (argc > 4) hp.M = (uint32_t)atoi(argv[4]);
    if (argc > 5) hp.ef_construction = (uint32_t)atoi(argv[5]);
    jvdb_metric metric = JVDB_METRIC_L2;
    if (argc > 6)
        metric = !strcmp(argv[6], "cosine") ? JVDB_METRIC_COSINE
                 : !strcmp(argv[6], "dot")  ? JVDB_METRIC_DOT
                                            : JVDB_METRIC_L2;
    uint32_t threads = argc > 7 ? (uint32_t)atoi(argv[7]) : 1;
    if (argc > 8) {
        dist_simd lv;
        if (dist_simd_parse(argv[8], &lv) || dist_set_active(lv)) {
            fprintf(stderr, "bad simd level %s\n", argv[8]);
            return 2;
        }
    }
    double sigma = getenv("BENCH_SIGMA") ? atof(getenv("BENCH_SIGMA")) : 0.35;
    printf("n=%u dim=%u sigma=%.2f queries=%u M=%u ef_construction=%u metric=%s kernels=%s\n", n, dim, sigma, nq, hp.M,
           hp.ef_construction, argc > 6 ? argv[6] : "l2", dist_active()->name);

    tu_data d;
    tu_data_make(&d, n, dim, n / 100 + 1, sigma, 42, metric);
    float *queries = malloc((size_t)nq * dim * sizeof *queries);
    tu_rng r = { 7 };
    for (uint32_t i = 0; i < nq; i++) tu_query(&d, &r, 0.2, queries + (size_t)i * dim);
    const char *dump = getenv("BENCH_DUMP");
    if (dump) {
        /* Raw float32 base then queries, for running the peers on identical data. */
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(d.block, sizeof(float) * dim, n, f) != n ||
            fwrite(queries, sizeof(float) * dim, nq, f) != nq || fclose(f) != 0) {
            perror(dump);
            return 1;
        }
    }
    uint32_t *truth = malloc((size_t)nq * K * sizeof *truth);
    bench_truth(&d, metric, queries, nq, threads, truth);

    if (getenv("BENCH_EXACT_ONLY")) {
        free(truth);
        free(queries);
        tu_data_free(&d);
        return 0;
    }

    struct hnsw *h;
    hnsw_create(dim, metric, &hp, &h);
    double t0 = tu_now(), c0 = tu_cpu_now();
    for (uint32_t s = 0; s < n; s++) hnsw_insert(h, d.slots, n, s);
    printf("build      %.2f s wall, %.2f s cpu, graph %.1f MiB\n", tu_now() - t0, tu_cpu_now() - c0,
           hnsw_memory_bytes(h) / 1048576.0);
    bench_hnsw_curve("hnsw", h, &d, queries, nq, truth);

    /* Delete 30%: the store would keep deleted vectors readable until the rebuild. */
    tu_rng dr = { 99 };
    for (uint32_t s = 0; s < n; s++) {
        if (tu_uniform(&dr) < 0.3) hnsw_mark_deleted(h, s);
    }
    const float **live = malloc((size_t)n * sizeof *live);
    for (uint32_t s = 0; s < n; s++) live[s] = hnsw_is_deleted(h, s) ? NULL : d.slots[s];
    tu_data ld = d;
    ld.slots = live;
    bench_truth(&ld, metric, queries, nq, threads, truth);
    bench_hnsw_curve("deleted30", h, &d, queries, nq, truth);
    t0 = tu_now();
    c0 = tu_cpu_now();
    hnsw_rebuild(h, d.slots, n);
    printf("rebuild    %.2f s wall, %.2f s cpu (%u live)\n", tu_now() - t0, tu_cpu_now() - c0, hnsw_live_count(h));
    bench_hnsw_curve("rebuilt", h, &ld, queries, nq, truth);

    hnsw_free(h);
    free(live);
    free(truth);
    free(queries);
    tu_data_free(&d);
    return 0;
}

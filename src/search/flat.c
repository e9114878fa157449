/*
 * flat.c — exact search over the store's slot table.
 *
 * The table is cut into one contiguous range per thread; each thread scores its range with the batch
 * kernel and keeps its own bounded heap, and the heaps are merged at the end, so threads share nothing
 * while scanning.  A range is walked in chunks: without a filter the chunk of the slot table itself is
 * handed to the batch kernel (NULL slots come back as +inf); with a filter the accepted pointers of the
 * chunk are gathered first, so rejected vectors are never read.  Threads are started per call: a scan
 * big enough to be split costs far more than starting them, and smaller scans run on the caller's
 * thread alone.
 *
 * The table holds vectors exactly as stored, so cosine is scored in the "stored" space (distance.h):
 * each vector's norm is summed in the same pass as its inner product with the unit query, which keeps
 * the scan one read per vector and needs no per-slot state that the store would have to keep in step.
 */
#include "search/flat.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/err.h"
#include "search/distance.h"

enum { FLAT_CHUNK = 256 };

/* Below this many floats (about 1 MiB of vectors) per thread, another thread costs more than its
 * share of the scan. */
#define FLAT_MIN_FLOATS_PER_THREAD (1u << 18)
#define FLAT_MAX_THREADS           256u

struct flat_job {
    const float *const *slots;
    uint32_t begin, end;
    const struct dist_space *sp;
    const float *query;
    const struct flat_params *p;
    float limit; /* threshold as a distance; +inf without one */
    struct topk heap;
};

void flat_params_init(struct flat_params *p)
{
    p->metric = JVDB_METRIC_L2;
    p->k = 10;
    p->threads = 0;
    p->accept = NULL;
    p->accept_ctx = NULL;
    p->slot_lsn = NULL;
    p->snap = 0;
    p->resolve = NULL;
    p->resolve_ctx = NULL;
    p->use_threshold = 0;
    p->threshold = 0.f;
}

uint32_t flat_threads_for(uint32_t nslots, uint32_t dim, uint32_t threads)
{
    if (threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (uint32_t)cores : 1u;
    }
    if (threads > FLAT_MAX_THREADS) threads = FLAT_MAX_THREADS;
    uint64_t work = (uint64_t)nslots * dim / FLAT_MIN_FLOATS_PER_THREAD;
    if (work < threads) threads = work > 0 ? (uint32_t)work : 1u;
    return threads;
}

/* Scans one thread's range of slots in chunks: gathers the live, accepted vectors as of the snapshot and keeps the
 * nearest in the thread's heap. */
static void flat_scan(struct flat_job *j)
{
    const float *gathered[FLAT_CHUNK];
    uint32_t ids[FLAT_CHUNK];
    float d[FLAT_CHUNK];
    const struct flat_params *p = j->p;
    uint32_t dim = j->sp->dim;

    for (uint32_t s = j->begin; s < j->end; s += FLAT_CHUNK) {
        uint32_t m = j->end - s < FLAT_CHUNK ? j->end - s : FLAT_CHUNK;
        /* Gathered always: the table's pointers are loaded once each, atomically (writers store
         * them concurrently), and slots changed after the snapshot are resolved to its version. */
        const float *const *vecs = gathered;
        const uint32_t *idmap = ids;
        uint32_t cnt = 0;
        for (uint32_t i = 0; i < m; i++) {
            const float *v = __atomic_load_n(&j->slots[s + i], __ATOMIC_ACQUIRE);
            if (p->slot_lsn && __atomic_load_n(&p->slot_lsn[s + i], __ATOMIC_ACQUIRE) > p->snap)
                v = p->resolve(p->resolve_ctx, s + i);
            if (v && (!p->accept || p->accept(p->accept_ctx, s + i))) {
                gathered[cnt] = v;
                ids[cnt++] = s + i;
            }
        }
        m = cnt;
        if (m == 0) continue;
        j->sp->batch(j->query, vecs, m, dim, d);
        float bound = fminf(topk_bound(&j->heap), j->limit);
        for (uint32_t i = 0; i < m; i++) {
            if (d[i] > bound || !vecs[i]) continue;
            if (topk_push(&j->heap, d[i], idmap ? idmap[i] : s + i)) bound = fminf(topk_bound(&j->heap), j->limit);
        }
    }
}

/* pthread entry for flat_scan. */
static void *flat_thread(void *arg)
{
    flat_scan(arg);
    return NULL;
}

int flat_search(const float *const *slots, uint32_t nslots, uint32_t dim, const float *query,
                const struct flat_params *p, uint32_t *out_slots, float *out_scores, uint32_t *out_n)
{
    *out_n = 0;
    if (!query || (nslots > 0 && !slots)) return err_set(JVDB_EINVAL, "exact search needs a query and a slot table");
    if (p->use_threshold && !isfinite(p->threshold))
        return err_set(JVDB_EINVAL, "search threshold must be a finite number");

    struct dist_space sp;
    int rc = dist_space_init_stored(&sp, p->metric, dim);
    if (rc) return rc;
    float *q = malloc((size_t)dim * sizeof *q);
    if (!q) return err_set(JVDB_ENOMEM, "out of memory for a query of dimension %u", dim);
    rc = dist_query_prepare(p->metric, query, dim, q);
    if (rc || p->k == 0 || nslots == 0) {
        free(q);
        return rc;
    }

    uint32_t cap = p->k < nslots ? p->k : nslots;
    uint32_t nthreads = flat_threads_for(nslots, dim, p->threads);
    struct flat_job *jobs = calloc(nthreads, sizeof *jobs);
    pthread_t *tids = calloc(nthreads, sizeof *tids);
    uint8_t *started = calloc(nthreads, 1);
    if (!jobs || !tids || !started) {
        rc = err_set(JVDB_ENOMEM, "out of memory for %u search threads", nthreads);
        goto out;
    }
    float limit = p->use_threshold ? dist_from_score(p->metric, p->threshold) : INFINITY;
    for (uint32_t t = 0; t < nthreads; t++) {
        jobs[t].slots = slots;
        jobs[t].begin = (uint32_t)((uint64_t)nslots * t / nthreads);
        jobs[t].end = (uint32_t)((uint64_t)nslots * (t + 1) / nthreads);
        jobs[t].sp = &sp;
        jobs[t].query = q;
        jobs[t].p = p;
        jobs[t].limit = limit;
        rc = topk_init(&jobs[t].heap, cap);
        if (rc) goto out;
    }
    /* A thread that cannot be started is not an error: its range is scanned here instead. */
    for (uint32_t t = 1; t < nthreads; t++) started[t] = pthread_create(&tids[t], NULL, flat_thread, &jobs[t]) == 0;
    flat_scan(&jobs[0]);
    for (uint32_t t = 1; t < nthreads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else flat_scan(&jobs[t]);
        topk_merge(&jobs[0].heap, &jobs[t].heap);
    }

    uint32_t n = topk_sort(&jobs[0].heap);
    for (uint32_t i = 0; i < n; i++) {
        if (out_slots) out_slots[i] = jobs[0].heap.items[i].slot;
        if (out_scores) out_scores[i] = dist_score(p->metric, jobs[0].heap.items[i].dist);
    }
    *out_n = n;

out:
    if (jobs) {
        for (uint32_t t = 0; t < nthreads; t++) topk_free(&jobs[t].heap);
    }
    free(jobs);
    free(tids);
    free(started);
    free(q);
    return rc;
}

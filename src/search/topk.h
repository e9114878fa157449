/*
 * topk.h — result heaps shared by exact and HNSW search.
 *
 * topk:       bounded max-heap keeping the `cap` best (smallest distance) items seen; its root is the
 *             worst item kept, so "is this candidate good enough?" is one comparison with topk_bound().
 * topk_queue: growable min-heap, the HNSW candidate queue (closest first).
 *
 * Items are ordered by (distance, slot): ties break towards the lower slot, which makes results
 * deterministic however the scan is split across threads, and exact search comparable one-to-one with
 * a reference implementation.  Push/pop are inline because they sit in the innermost search loops.
 */
#ifndef JVDB_SEARCH_TOPK_H
#define JVDB_SEARCH_TOPK_H

#include <math.h>
#include <stdint.h>

/* Filter callback: non-zero when `slot` may appear in results.  Called from search threads
 * concurrently, so it must only read shared state. */
typedef int (*topk_accept_fn)(void *ctx, uint32_t slot);

struct topk_item {
    float dist;
    uint32_t slot;
};

static inline int topk_less(struct topk_item a, struct topk_item b)
{
    return a.dist < b.dist || (a.dist == b.dist && a.slot < b.slot);
}

struct topk {
    struct topk_item *items;
    uint32_t n;
    uint32_t cap;
};

/* JVDB_ENOMEM on failure.  cap 0 is allowed (keeps nothing). */
int topk_init(struct topk *h, uint32_t cap);
/* Changes the bound (emptying the heap); JVDB_ENOMEM if it must grow and cannot. */
int topk_reset(struct topk *h, uint32_t cap);
void topk_free(struct topk *h);

static inline void topk_clear(struct topk *h) { h->n = 0; }

static inline int topk_full(const struct topk *h) { return h->n >= h->cap; }

/* Distance a candidate must beat (be <=, ties resolved by slot) to enter; +inf while not full. */
static inline float topk_bound(const struct topk *h) { return h->n < h->cap ? INFINITY : h->items[0].dist; }

static inline void topk_sift_down_max(struct topk_item *a, uint32_t n, uint32_t i)
{
    struct topk_item x = a[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && topk_less(a[c], a[c + 1])) c++;
        if (!topk_less(x, a[c])) break;
        a[i] = a[c];
        i = c;
    }
    a[i] = x;
}

/* Offers an item; returns 1 if it was kept.  NaN distances are refused. */
static inline int topk_push(struct topk *h, float dist, uint32_t slot)
{
    struct topk_item x = { dist, slot };
    if (dist != dist) return 0;
    if (h->n < h->cap) {
        uint32_t i = h->n++;
        while (i > 0) {
            uint32_t p = (i - 1) / 2;
            if (!topk_less(h->items[p], x)) break;
            h->items[i] = h->items[p];
            i = p;
        }
        h->items[i] = x;
        return 1;
    }
    if (h->cap == 0 || !topk_less(x, h->items[0])) return 0;
    h->items[0] = x;
    topk_sift_down_max(h->items, h->n, 0);
    return 1;
}

/* Removes the worst item kept (the root). */
static inline void topk_pop_worst(struct topk *h)
{
    if (h->n == 0) return;
    h->items[0] = h->items[--h->n];
    if (h->n > 0) topk_sift_down_max(h->items, h->n, 0);
}

/* Offers every item of src to dst. */
void topk_merge(struct topk *dst, const struct topk *src);
/* Sorts the items best first, in place (the heap order is gone: push nothing more before
 * topk_clear).  Returns the count. */
uint32_t topk_sort(struct topk *h);

struct topk_queue {
    struct topk_item *items;
    uint32_t n;
    uint32_t cap;
};

int topk_queue_init(struct topk_queue *q, uint32_t cap);
void topk_queue_free(struct topk_queue *q);
/* Slow path of topk_queue_push: doubles the array.  JVDB_ENOMEM on failure. */
int topk_queue_grow(struct topk_queue *q);

static inline void topk_queue_clear(struct topk_queue *q) { q->n = 0; }

/* Returns 0 or JVDB_ENOMEM. */
static inline int topk_queue_push(struct topk_queue *q, float dist, uint32_t slot)
{
    if (q->n == q->cap) {
        int rc = topk_queue_grow(q);
        if (rc) return rc;
    }
    struct topk_item x = { dist, slot };
    uint32_t i = q->n++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!topk_less(x, q->items[p])) break;
        q->items[i] = q->items[p];
        i = p;
    }
    q->items[i] = x;
    return 0;
}

/* The closest item; q must not be empty. */
static inline struct topk_item topk_queue_top(const struct topk_queue *q) { return q->items[0]; }

static inline struct topk_item topk_queue_pop(struct topk_queue *q)
{
    struct topk_item top = q->items[0];
    struct topk_item x = q->items[--q->n];
    uint32_t n = q->n, i = 0;
    if (n == 0) return top;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && topk_less(q->items[c + 1], q->items[c])) c++;
        if (!topk_less(q->items[c], x)) break;
        q->items[i] = q->items[c];
        i = c;
    }
    q->items[i] = x;
    return top;
}

#endif

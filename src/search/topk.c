/*
 * topk.c — allocation, merging and final ordering for the result heaps of topk.h.
 *
 * The per-item operations live inline in the header (they are the inner loop of every search); this
 * file holds what runs once per search or per thread: growing, merging the per-thread heaps of an
 * exact scan, and turning a heap into a best-first list.
 */
#include "search/topk.h"

#include <stdlib.h>

#include "core/grow.h"
#include "core/err.h"

int topk_init(struct topk *h, uint32_t cap)
{
    h->n = 0;
    h->cap = cap;
    h->items = malloc((cap ? cap : 1) * sizeof *h->items);
    if (!h->items) return err_set(JVDB_ENOMEM, "out of memory for a top-%u result heap", cap);
    return JVDB_OK;
}

int topk_reset(struct topk *h, uint32_t cap)
{
    h->n = 0;
    if (cap > h->cap || !h->items) {
        struct topk_item *p = realloc(h->items, (cap ? cap : 1) * sizeof *p);
        if (!p) return err_set(JVDB_ENOMEM, "out of memory for a top-%u result heap", cap);
        h->items = p;
    }
    h->cap = cap;
    return JVDB_OK;
}

void topk_free(struct topk *h)
{
    free(h->items);
    h->items = NULL;
    h->n = h->cap = 0;
}

void topk_merge(struct topk *dst, const struct topk *src)
{
    for (uint32_t i = 0; i < src->n; i++) topk_push(dst, src->items[i].dist, src->items[i].slot);
}

uint32_t topk_sort(struct topk *h)
{
    /* Heapsort in place: repeatedly move the worst item to the end of the shrinking heap, which
     * leaves the array best first without a second buffer. */
    uint32_t n = h->n;
    for (uint32_t end = n; end > 1; end--) {
        struct topk_item worst = h->items[0];
        h->items[0] = h->items[end - 1];
        h->items[end - 1] = worst;
        topk_sift_down_max(h->items, end - 1, 0);
    }
    return n;
}

int topk_queue_init(struct topk_queue *q, uint32_t cap)
{
    q->n = 0;
    q->cap = cap ? cap : 16;
    q->items = malloc(q->cap * sizeof *q->items);
    if (!q->items) {
        q->cap = 0;
        return err_set(JVDB_ENOMEM, "out of memory for a search queue");
    }
    return JVDB_OK;
}

void topk_queue_free(struct topk_queue *q)
{
    free(q->items);
    q->items = NULL;
    q->n = q->cap = 0;
}

int topk_queue_grow(struct topk_queue *q)
{
    struct topk_item *p = grow_array32(q->items, &q->cap, (size_t)q->cap + 1, sizeof *p, 16);
    if (!p) return err_set(JVDB_ENOMEM, "out of memory growing a search queue of %u", q->cap);
    q->items = p;
    return JVDB_OK;
}

/*
 * select.c — operations on the vectors a filter selects (issue 12): count, delete, metadata merge,
 * and scroll (pages in id order).
 *
 * Invariants:
 *  (1) Selection reads one consistent snapshot (jvdb_iterate); the write is one all-or-nothing batch
 *      whose ops carry the LSN each vector had in that snapshot (db_write_ops, if_lsn), so a vector
 *      written again in between is left as its newer writer made it, never deleted or overwritten
 *      on the strength of metadata it no longer has.
 *  (2) The counts returned are the ops written, not the ops planned.
 *  (3) Scroll pages follow id order and a cursor is the last id returned, so a vector that exists
 *      throughout a scroll is returned exactly once, whatever is written meanwhile; one written or
 *      deleted during it may or may not appear.
 */
#include "core/grow.h"
#include "core/err.h"
#include "search/filter.h"
#include "store/bulk.h"
#include "store/db.h"
#include "store/record.h"

#include <stdlib.h>
#include <string.h>

struct select_ctx {
    const jvdb_filter *filter;
    uint32_t dim;
    const json_t *patch; /* NULL: count or delete */
    uint64_t count;
    struct db_op *ops;
    size_t n, cap;
    int collect;
    int rc;
};

/* Keeps a copy of what the op needs, since the snapshot's pointers die with the iteration. */
static int select_collect(struct select_ctx *c, const char *id, size_t id_len, const float *vec, const char *meta,
                          size_t meta_len, uint64_t lsn)
{
    struct db_op *o = grow_array(c->ops, &c->cap, c->n + 1, sizeof *o, 256);
    if (!o) return c->rc = err_set(JVDB_ENOMEM, "out of memory");
    c->ops = o;
    struct db_op *op = &c->ops[c->n];
    memset(op, 0, sizeof *op);
    char *idc = strndup(id, id_len);
    if (!idc) return c->rc = err_set(JVDB_ENOMEM, "out of memory");
    op->id = idc;
    op->id_len = id_len;
    op->if_lsn = lsn;
    op->kind = REC_KIND_DELETE;
    c->n++;
    if (!c->patch) return 0;
    op->kind = REC_KIND_PUT;
    float *v = malloc((size_t)c->dim * sizeof *v);
    if (!v) return c->rc = err_set(JVDB_ENOMEM, "out of memory");
    memcpy(v, vec, (size_t)c->dim * sizeof *v);
    op->vector = v;
    char *merged;
    if ((c->rc = bulk_merge_meta(meta, meta_len, c->patch, &merged))) return c->rc;
    op->meta = merged;
    op->meta_len = merged ? strlen(merged) : 0;
    return 0;
}

/* Scan callback of select: counts the records matching the filter and copies them when asked. */
static int select_visit(void *arg, const char *id, size_t id_len, const float *vector, const char *meta_json,
                        size_t meta_len, uint64_t lsn)
{
    struct select_ctx *c = arg;
    if (!filter_match(c->filter, meta_json, meta_len)) return 0;
    c->count++;
    return c->collect ? select_collect(c, id, id_len, vector, meta_json, meta_len, lsn) : 0;
}

/* Frees the records select copied. */
static void select_free(struct select_ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free((char *)c->ops[i].id);
        free((float *)c->ops[i].vector);
        free((char *)c->ops[i].meta);
    }
    free(c->ops);
}

int jvdb_count_filtered(jvdb_db *db, const jvdb_filter *filter, uint64_t *out)
{
    err_clear();
    if (!db || !out) return err_set(JVDB_EINVAL, "database handle or output is NULL");
    *out = 0;
    if (!filter) {
        *out = jvdb_count(db);
        return JVDB_OK;
    }
    struct select_ctx c = { .filter = filter };
    int rc = jvdb_iterate(db, select_visit, &c);
    if (rc) return rc;
    *out = c.count;
    return JVDB_OK;
}

/* Selects, then writes one batch; *done receives the ops written. */
static int select_apply(jvdb_db *db, const jvdb_filter *filter, const json_t *patch, uint64_t *done)
{
    struct select_ctx c = { .filter = filter, .dim = jvdb_db_dim(db), .patch = patch, .collect = 1 };
    int rc = jvdb_iterate(db, select_visit, &c);
    if (rc == JVDB_OK && c.rc) rc = c.rc;
    size_t applied = 0;
    if (rc == JVDB_OK && c.n) rc = db_write_ops(db, c.ops, c.n, DB_WRITE_BULK, NULL, &applied);
    if (rc == JVDB_OK && done) *done = applied;
    select_free(&c);
    return rc;
}

int jvdb_delete_filtered(jvdb_db *db, const jvdb_filter *filter, uint64_t *deleted)
{
    err_clear();
    if (deleted) *deleted = 0;
    if (!db || !filter) return err_set(JVDB_EINVAL, "database handle or filter is NULL");
    return select_apply(db, filter, NULL, deleted);
}

int jvdb_update_metadata_filtered(jvdb_db *db, const jvdb_filter *filter, const char *patch_json, uint64_t *updated)
{
    err_clear();
    if (updated) *updated = 0;
    if (!db || !filter) return err_set(JVDB_EINVAL, "database handle or filter is NULL");
    json_t *patch;
    int rc = bulk_parse_patch(patch_json, &patch);
    if (rc) return rc;
    rc = select_apply(db, filter, patch, updated);
    json_decref(patch);
    return rc;
}

/* ---------------------------------------------------------------- scroll */

struct scroll_id {
    char *id;
    size_t len;
};

struct scroll_ctx {
    const jvdb_filter *filter;
    const char *after;
    size_t after_len;
    struct scroll_id *heap; /* max-heap by id: the cap smallest ids seen so far */
    size_t n, cap;
    int rc;
};

/* Byte order of ids (UTF-8, so code point order), a prefix first. */
static int scroll_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* Heap order of scroll ids (scroll_cmp). */
static int scroll_less(const struct scroll_id *x, const struct scroll_id *y)
{
    return scroll_cmp(x->id, x->len, y->id, y->len) < 0;
}

/* Restores the max-heap below i. */
static void scroll_sift_down(struct scroll_id *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < n && scroll_less(&h[big], &h[l])) big = l;
        if (r < n && scroll_less(&h[big], &h[r])) big = r;
        if (big == i) return;
        struct scroll_id t = h[i];
        h[i] = h[big];
        h[big] = t;
        i = big;
    }
}

/* Scan callback of scroll: keeps the cap smallest matching ids after the cursor in a max-heap, replacing its top
 * when a smaller one comes. */
static int scroll_visit(void *arg, const char *id, size_t id_len, const float *vector, const char *meta_json,
                        size_t meta_len, uint64_t lsn)
{
    (void)vector;
    (void)lsn;
    struct scroll_ctx *c = arg;
    if (c->after && scroll_cmp(id, id_len, c->after, c->after_len) <= 0) return 0;
    if (c->n == c->cap && scroll_cmp(id, id_len, c->heap[0].id, c->heap[0].len) >= 0) return 0;
    if (!filter_match(c->filter, meta_json, meta_len)) return 0;
    char *copy = strndup(id, id_len);
    if (!copy) return c->rc = err_set(JVDB_ENOMEM, "out of memory");
    if (c->n == c->cap) {
        free(c->heap[0].id);
        c->heap[0] = (struct scroll_id){ copy, id_len };
        scroll_sift_down(c->heap, c->n, 0);
        return 0;
    }
    size_t i = c->n++;
    c->heap[i] = (struct scroll_id){ copy, id_len };
    while (i && scroll_less(&c->heap[(i - 1) / 2], &c->heap[i])) {
        struct scroll_id t = c->heap[i];
        c->heap[i] = c->heap[(i - 1) / 2];
        c->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static int scroll_sort_cmp(const void *a, const void *b) { return scroll_less(a, b) ? -1 : scroll_less(b, a); }

int jvdb_scroll_ids(jvdb_db *db, const jvdb_filter *filter, const char *after, size_t limit, char ***ids_out,
                    size_t *n_out, int *more)
{
    err_clear();
    if (!db || !ids_out || !n_out) return err_set(JVDB_EINVAL, "database handle or output is NULL");
    *ids_out = NULL;
    *n_out = 0;
    if (more) *more = 0;
    if (limit == 0 || limit > JVDB_SCROLL_MAX)
        return err_set(JVDB_EINVAL, "limit %zu is out of range (1 to %u)", limit, JVDB_SCROLL_MAX);
    /* One more than asked, to know whether another page exists. */
    struct scroll_ctx c = {
        .filter = filter, .after = after, .after_len = after ? strlen(after) : 0, .cap = limit + 1
    };
    if (!(c.heap = malloc(c.cap * sizeof *c.heap))) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = jvdb_iterate(db, scroll_visit, &c);
    if (rc == JVDB_OK && c.rc) rc = c.rc;
    char **ids = NULL;
    if (rc == JVDB_OK && !(ids = malloc((c.n ? c.n : 1) * sizeof *ids))) rc = err_set(JVDB_ENOMEM, "out of memory");
    if (rc != JVDB_OK) {
        for (size_t i = 0; i < c.n; i++) free(c.heap[i].id);
        free(c.heap);
        return rc;
    }
    qsort(c.heap, c.n, sizeof *c.heap, scroll_sort_cmp);
    size_t n = c.n > limit ? limit : c.n;
    for (size_t i = 0; i < c.n; i++) {
        if (i < n) ids[i] = c.heap[i].id;
        else free(c.heap[i].id);
    }
    if (more) *more = c.n > limit;
    free(c.heap);
    *ids_out = ids;
    *n_out = n;
    return JVDB_OK;
}

void jvdb_scroll_ids_free(char **ids, size_t n)
{
    if (!ids) return;
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

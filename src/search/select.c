/*
 * select.c — operations on the vectors a filter selects (issue 12): count, delete, metadata merge.
 *
 * Invariants:
 *  (1) Selection reads one consistent snapshot (jvdb_iterate); the write is one all-or-nothing batch
 *      whose ops carry the LSN each vector had in that snapshot (db_write_ops, if_lsn), so a vector
 *      written again in between is left as its newer writer made it, never deleted or overwritten
 *      on the strength of metadata it no longer has.
 *  (2) The counts returned are the ops written, not the ops planned.
 */
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
    const json_t *patch;         /* NULL: count or delete */
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
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct db_op *o = realloc(c->ops, cap * sizeof *o);
        if (!o) return c->rc = err_set(JVDB_ENOMEM, "out of memory");
        c->ops = o;
        c->cap = cap;
    }
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

static int select_visit(void *arg, const char *id, size_t id_len, const float *vector, const char *meta_json,
                        size_t meta_len, uint64_t lsn)
{
    struct select_ctx *c = arg;
    if (!filter_match(c->filter, meta_json, meta_len)) return 0;
    c->count++;
    return c->collect ? select_collect(c, id, id_len, vector, meta_json, meta_len, lsn) : 0;
}

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
    struct select_ctx c = {.filter = filter};
    int rc = jvdb_iterate(db, select_visit, &c);
    if (rc) return rc;
    *out = c.count;
    return JVDB_OK;
}

/* Selects, then writes one batch; *done receives the ops written. */
static int select_apply(jvdb_db *db, const jvdb_filter *filter, const json_t *patch, uint64_t *done)
{
    struct select_ctx c = {.filter = filter, .dim = jvdb_db_dim(db), .patch = patch, .collect = 1};
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

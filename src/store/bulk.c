/*
 * bulk.c — writes of many vectors at once (issue 12): delete by ids and metadata merge.
 *
 * Invariants:
 *  (1) A bulk delete is one all-or-nothing batch (db_write_ops); which ids are live is decided
 *      under the writer lock, so a missing id is a no-op counted as such, never a failure, and the
 *      count returned is exactly the number of tombstones written.
 *  (2) A metadata merge never loses a concurrent write: it rewrites the vector only if the id's
 *      newest LSN is still the one it read (if_lsn), and otherwise reads again.
 *  (3) Ids are deduplicated before the write, so db_write_ops' bulk path never sees an id twice.
 */
#include "store/bulk.h"

#include "core/err.h"
#include "store/db_impl.h"
#include "store/readpath.h"
#include "store/record.h"
#include "store/validate.h"

#include <stdlib.h>
#include <string.h>

/* Conflicting writers on one id: each retry means another writer changed it in between. */
#define BULK_MERGE_RETRIES 64

/* qsort order of C strings. */
static int bulk_cmp_str(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

int jvdb_delete_ids(jvdb_db *db, const char *const *ids, size_t count, uint64_t *deleted, uint64_t *last_lsn)
{
    err_clear();
    if (deleted) *deleted = 0;
    if (last_lsn) *last_lsn = 0;
    if (!db) return err_set(JVDB_EINVAL, "database handle is NULL");
    if (count == 0) return JVDB_OK;
    if (!ids) return err_set(JVDB_EINVAL, "ids is NULL");
    int rc;
    for (size_t i = 0; i < count; i++) {
        char where[48];
        snprintf(where, sizeof where, "id %zu: ", i);
        if ((rc = rec_check_id(ids[i], ids[i] ? strlen(ids[i]) : 0, where))) return rc;
    }
    const char **sorted = malloc(count * sizeof *sorted);
    struct db_op *ops = calloc(count, sizeof *ops);
    if (!sorted || !ops) {
        free(sorted);
        free(ops);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    memcpy(sorted, ids, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, bulk_cmp_str);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (i && !strcmp(sorted[i], sorted[i - 1])) continue;
        ops[n++] = (struct db_op){ .kind = REC_KIND_DELETE, .id = sorted[i], .id_len = strlen(sorted[i]) };
    }
    size_t applied = 0;
    rc = db_write_ops(db, ops, n, DB_WRITE_BULK, last_lsn, &applied);
    if (rc == JVDB_OK && deleted) *deleted = applied;
    free(sorted);
    free(ops);
    return rc;
}

/* RFC 7396 on jansson trees: target is modified in place. */
static int bulk_merge(json_t *target, const json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(target, k);
            continue;
        }
        json_t *cur = json_object_get(target, k);
        if (json_is_object(v) && json_is_object(cur)) {
            if (bulk_merge(cur, v)) return -1;
            continue;
        }
        if (json_is_object(v)) {
            json_t *fresh = json_object();
            if (!fresh || bulk_merge(fresh, v) || json_object_set_new(target, k, fresh)) return -1;
            continue;
        }
        if (json_object_set(target, k, v)) return -1;
    }
    return 0;
}

int bulk_merge_meta(const char *meta, size_t meta_len, const json_t *patch, char **out)
{
    *out = NULL;
    json_t *doc = meta_len ? json_loadb(meta, meta_len, 0, NULL) : json_object();
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    if (!doc || bulk_merge(doc, patch)) {
        json_decref(doc);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    if (json_object_size(doc) > 0 && !(*out = json_dumps(doc, JSON_COMPACT))) {
        json_decref(doc);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    json_decref(doc);
    if (*out) {
        int rc = rec_check_meta(*out, strlen(*out), "merged ");
        if (rc) {
            free(*out);
            *out = NULL;
            return rc;
        }
    }
    return JVDB_OK;
}

int bulk_parse_patch(const char *patch_json, json_t **out)
{
    *out = NULL;
    if (!patch_json) return err_set(JVDB_EINVAL, "metadata patch is missing");
    json_error_t jerr;
    json_t *p = json_loads(patch_json, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!p)
        return err_set(JVDB_EINVAL, "metadata patch is not valid JSON (line %d, column %d): %s", jerr.line, jerr.column,
                       jerr.text);
    if (!json_is_object(p)) {
        json_decref(p);
        return err_set(JVDB_EINVAL, "metadata patch must be a JSON object");
    }
    *out = p;
    return JVDB_OK;
}

/* Reads id's newest vector, metadata and LSN (copies).  Newest, not the published snapshot: a merge
 * based on a write whose sync is still in flight is itself later in the log, so it can never be
 * durable without it; and the writer's if_lsn check compares against the newest too, so basing the
 * merge on the snapshot would fail that check until the sync ends. */
static int bulk_read(jvdb_db *db, const char *id, float *vec, char **meta, size_t *meta_len, uint64_t *lsn)
{
    *meta = NULL;
    *meta_len = 0;
    int rc = JVDB_OK;
    rp_enter();
    const struct kd_entry *e = keydir_find(&db->kd, id, strlen(id));
    if (!e || e->kind != REC_KIND_PUT) {
        rc = err_set(JVDB_ENOTFOUND, "vector '%s' not found in database '%s'", id, db->m.name);
        goto out;
    }
    const struct rec_header *h = keydir_record(e);
    memcpy(vec, rec_vector(h), (size_t)db->m.dim * sizeof(float));
    *lsn = e->lsn;
    if (h->meta_len) {
        if (!(*meta = malloc(h->meta_len))) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(*meta, rec_meta(h, db->m.dim), h->meta_len);
        *meta_len = h->meta_len;
    }
out:
    rp_exit();
    return rc;
}

int jvdb_update_metadata(jvdb_db *db, const char *id, const char *patch_json, uint64_t *lsn_out)
{
    err_clear();
    if (!db) return err_set(JVDB_EINVAL, "database handle is NULL");
    int rc = rec_check_id(id, id ? strlen(id) : 0, "");
    if (rc) return rc;
    json_t *patch;
    if ((rc = bulk_parse_patch(patch_json, &patch))) return rc;
    float *vec = malloc((size_t)db->m.dim * sizeof *vec);
    if (!vec) {
        json_decref(patch);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (int attempt = 0;; attempt++) {
        char *meta, *merged;
        size_t meta_len;
        uint64_t lsn = 0;
        if ((rc = bulk_read(db, id, vec, &meta, &meta_len, &lsn))) break;
        rc = bulk_merge_meta(meta, meta_len, patch, &merged);
        free(meta);
        if (rc) break;
        struct db_op op = { .kind = REC_KIND_PUT,
                            .id = id,
                            .id_len = strlen(id),
                            .vector = vec,
                            .meta = merged,
                            .meta_len = merged ? strlen(merged) : 0,
                            .if_lsn = lsn };
        size_t applied = 0;
        rc = db_write_ops(db, &op, 1, DB_WRITE_BULK, lsn_out, &applied);
        free(merged);
        if (rc || applied) break;
        if (attempt == BULK_MERGE_RETRIES) {
            rc = err_set(JVDB_EBUSY, "vector '%s' kept changing while its metadata was merged", id);
            break;
        }
    }
    free(vec);
    json_decref(patch);
    return rc;
}

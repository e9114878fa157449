/*
 * manifest.c — reading and writing the MANIFEST (docs/FORMAT.md).
 *
 * The file is one line of JSON followed by a line "xxh3:<16 hex digits>" holding the XXH3-64 of the
 * JSON line: JSON keeps it readable and extensible (unknown keys survive a rewrite), the checksum
 * turns a damaged file into a clear error instead of a wrong database.  It is only ever replaced
 * whole through fs_replace_file, whose rename is the commit point of seals, compactions, horizon
 * moves and setting changes.
 */
#include "store/manifest.h"

#include "core/err.h"
#include "core/fs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char *const manifest_known_keys[] = {
    "format",     "name",     "dim",    "metric",       "sync",      "sync_interval_ms", "segment_max_bytes",
    "created_ns", "segments", "active", "next_segment", "lsn_floor", "backup_horizon",   "last_compaction_ns",
    NULL
};

uint32_t manifest_format_for(jvdb_metric metric)
{
    return metric == JVDB_METRIC_COSINE ? MANIFEST_FORMAT_AS_GIVEN : MANIFEST_FORMAT_MIN;
}

int manifest_key_known(const char *key)
{
    for (int i = 0; manifest_known_keys[i]; i++)
        if (!strcmp(key, manifest_known_keys[i])) return 1;
    return 0;
}

void manifest_free(struct manifest *m)
{
    free(m->segments);
    m->segments = NULL;
    m->nsegments = 0;
    if (m->extra) json_decref(m->extra);
    m->extra = NULL;
}

/* Reads a non-negative integer field of the MANIFEST; a missing required or malformed one is corruption. */
static int manifest_u64(json_t *doc, const char *key, const char *what, uint64_t *out, int required)
{
    json_t *v = json_object_get(doc, key);
    if (!v) {
        if (!required) return JVDB_OK;
        return err_set(JVDB_ECORRUPT, "%s: missing \"%s\"", what, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return err_set(JVDB_ECORRUPT, "%s: \"%s\" is not a non-negative integer", what, key);
    *out = (uint64_t)json_integer_value(v);
    return JVDB_OK;
}

int manifest_parse(const char *data, size_t len, const char *what, struct manifest *out)
{
    memset(out, 0, sizeof *out);
    const char *nl = memchr(data, '\n', len);
    if (!nl) return err_set(JVDB_ECORRUPT, "%s: no checksum line", what);
    size_t json_len = (size_t)(nl - data);
    const char *sum = nl + 1;
    size_t sum_len = len - json_len - 1;
    char expect[32];
    snprintf(expect, sizeof expect, "xxh3:%016" PRIx64 "\n", (uint64_t)XXH3_64bits(data, json_len));
    if (sum_len != strlen(expect) || memcmp(sum, expect, sum_len) != 0)
        return err_set(JVDB_ECORRUPT, "%s: checksum mismatch (the file is damaged)", what);

    json_error_t jerr;
    json_t *doc = json_loadb(data, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) return err_set(JVDB_ECORRUPT, "%s: invalid JSON at column %d: %s", what, jerr.column, jerr.text);
    int rc = JVDB_ECORRUPT;
    if (!json_is_object(doc)) {
        err_set(rc, "%s: not a JSON object", what);
        goto fail;
    }
    uint64_t format = 0, dim = 0, sync = 0, interval = 0, metric = 0;
    uint64_t created = 0, last_compaction = 0;
    if ((rc = manifest_u64(doc, "format", what, &format, 1))) goto fail;
    rc = JVDB_ECORRUPT;
    if (format < MANIFEST_FORMAT_MIN || format > MANIFEST_FORMAT_VERSION) {
        err_set(rc, "%s: unsupported format %" PRIu64 " (this version reads %d to %d)", what, format,
                MANIFEST_FORMAT_MIN, MANIFEST_FORMAT_VERSION);
        goto fail;
    }
    out->format = (uint32_t)format;
    json_t *name = json_object_get(doc, "name");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > JVDB_MAX_NAME_LEN) {
        err_set(rc, "%s: bad \"name\"", what);
        goto fail;
    }
    memcpy(out->name, json_string_value(name), json_string_length(name) + 1);
    json_t *metric_v = json_object_get(doc, "metric");
    json_t *sync_v = json_object_get(doc, "sync");
    if (!json_is_string(metric_v) || jvdb_metric_parse(json_string_value(metric_v), &out->metric) != JVDB_OK) {
        err_set(rc, "%s: bad \"metric\"", what);
        goto fail;
    }
    if (!json_is_string(sync_v) || jvdb_sync_parse(json_string_value(sync_v), &out->sync, NULL) != JVDB_OK) {
        err_set(rc, "%s: bad \"sync\"", what);
        goto fail;
    }
    (void)metric;
    (void)sync;
    if ((rc = manifest_u64(doc, "dim", what, &dim, 1)) ||
        (rc = manifest_u64(doc, "sync_interval_ms", what, &interval, 1)) ||
        (rc = manifest_u64(doc, "segment_max_bytes", what, &out->segment_max_bytes, 1)) ||
        (rc = manifest_u64(doc, "created_ns", what, &created, 0)) ||
        (rc = manifest_u64(doc, "next_segment", what, &out->next_segment, 1)) ||
        (rc = manifest_u64(doc, "active", what, &out->active, 1)) ||
        (rc = manifest_u64(doc, "lsn_floor", what, &out->lsn_floor, 0)) ||
        (rc = manifest_u64(doc, "backup_horizon", what, &out->backup_horizon, 0)) ||
        (rc = manifest_u64(doc, "last_compaction_ns", what, &last_compaction, 0)))
        goto fail;
    rc = JVDB_ECORRUPT;
    if (dim < 1 || dim > JVDB_MAX_DIM) {
        err_set(rc, "%s: dimension %" PRIu64 " out of range", what, dim);
        goto fail;
    }
    if (interval > UINT32_MAX || out->segment_max_bytes < 4096) {
        err_set(rc, "%s: bad sync interval or segment size", what);
        goto fail;
    }
    out->dim = (uint32_t)dim;
    out->sync_interval_ms = (uint32_t)interval;
    out->created_ns = (int64_t)created;
    out->last_compaction_ns = (int64_t)last_compaction;
    json_t *segs = json_object_get(doc, "segments");
    if (!json_is_array(segs) || json_array_size(segs) == 0 || json_array_size(segs) > 1000000) {
        err_set(rc, "%s: \"segments\" must be a non-empty array", what);
        goto fail;
    }
    out->nsegments = json_array_size(segs);
    out->segments = calloc(out->nsegments, sizeof *out->segments);
    if (!out->segments) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < out->nsegments; i++) {
        json_t *v = json_array_get(segs, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
            (i > 0 && (uint64_t)json_integer_value(v) <= out->segments[i - 1])) {
            err_set(rc, "%s: \"segments\" must be ascending positive numbers", what);
            goto fail;
        }
        out->segments[i] = (uint64_t)json_integer_value(v);
    }
    if (out->next_segment <= out->segments[out->nsegments - 1]) {
        err_set(rc, "%s: \"next_segment\" is not above every segment", what);
        goto fail;
    }
    int active_listed = 0;
    for (size_t i = 0; i < out->nsegments; i++) active_listed |= out->segments[i] == out->active;
    if (!active_listed) {
        err_set(rc, "%s: the active segment is not in \"segments\"", what);
        goto fail;
    }
    out->extra = json_object();
    if (!out->extra) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(doc, key, val)
    {
        int known = 0;
        for (int i = 0; manifest_known_keys[i]; i++) known |= !strcmp(key, manifest_known_keys[i]);
        if (!known) json_object_set(out->extra, key, val);
    }
    json_decref(doc);
    return JVDB_OK;
fail:
    json_decref(doc);
    manifest_free(out);
    return rc;
}

int manifest_serialize(const struct manifest *m, char **data, size_t *len)
{
    char syncbuf[32];
    json_t *doc = m->extra ? json_deep_copy(m->extra) : json_object();
    json_t *segs = json_array();
    if (!doc || !segs) goto oom;
    for (size_t i = 0; i < m->nsegments; i++)
        if (json_array_append_new(segs, json_integer((json_int_t)m->segments[i]))) goto oom;
    json_t *known =
        json_pack("{s:i, s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I}", "format",
                  (int)(m->format ? m->format : manifest_format_for(m->metric)), "name", m->name, "dim",
                  (json_int_t)m->dim, "metric", jvdb_metric_name(m->metric), "sync",
                  jvdb_sync_name(m->sync, m->sync_interval_ms, syncbuf, sizeof syncbuf), "sync_interval_ms",
                  (json_int_t)m->sync_interval_ms, "segment_max_bytes", (json_int_t)m->segment_max_bytes, "created_ns",
                  (json_int_t)m->created_ns, "segments", segs, "active", (json_int_t)m->active, "next_segment",
                  (json_int_t)m->next_segment, "lsn_floor", (json_int_t)m->lsn_floor, "backup_horizon",
                  (json_int_t)m->backup_horizon, "last_compaction_ns", (json_int_t)m->last_compaction_ns);
    segs = NULL;
    if (!known || json_object_update(doc, known)) {
        json_decref(known);
        goto oom;
    }
    json_decref(known);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text) return err_set(JVDB_ENOMEM, "out of memory");
    size_t tl = strlen(text);
    char *out = malloc(tl + 32);
    if (!out) {
        free(text);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    memcpy(out, text, tl);
    int n = snprintf(out + tl, 32, "\nxxh3:%016" PRIx64 "\n", (uint64_t)XXH3_64bits(text, tl));
    free(text);
    *data = out;
    *len = tl + (size_t)n;
    return JVDB_OK;
oom:
    json_decref(segs);
    json_decref(doc);
    return err_set(JVDB_ENOMEM, "out of memory");
}

int manifest_load(const char *dir, struct manifest *out)
{
    char *path = fs_join(dir, "MANIFEST");
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    char *data;
    size_t len;
    int rc = fs_read_file(path, &data, &len);
    if (rc == JVDB_OK) {
        rc = manifest_parse(data, len, path, out);
        free(data);
    }
    free(path);
    return rc;
}

int manifest_store(const char *dir, const struct manifest *m)
{
    char *data;
    size_t len;
    int rc = manifest_serialize(m, &data, &len);
    if (rc) return rc;
    char *path = fs_join(dir, "MANIFEST");
    if (!path) {
        free(data);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    rc = fs_replace_file(path, data, len, "manifest");
    free(path);
    free(data);
    return rc;
}

int manifest_copy(const struct manifest *src, struct manifest *dst)
{
    *dst = *src;
    dst->segments = malloc((src->nsegments ? src->nsegments : 1) * sizeof *dst->segments);
    dst->extra = src->extra ? json_deep_copy(src->extra) : NULL;
    if (!dst->segments || (src->extra && !dst->extra)) {
        manifest_free(dst);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    memcpy(dst->segments, src->segments, src->nsegments * sizeof *dst->segments);
    return JVDB_OK;
}

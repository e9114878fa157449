/*
 * meta.c — backup.json, the metadata of one backup (docs/FORMAT.md, "Backup metadata").
 *
 * The file is one line of canonical JSON (compact, keys sorted) plus a newline.  It carries
 * "meta_sha256", the SHA-256 of the canonical JSON of every other key, and the parser insists that
 * the bytes it was given are exactly the canonical form of what it parsed.  Together these make
 * any changed byte an error, even one that would still be valid JSON with a plausible value (a
 * digit of a count, a space for a newline): a backup whose metadata lies must never be restored.
 *
 * This parser reads untrusted bytes (a repository anyone may have touched) and is fuzzed; every
 * field is range-checked before anything else looks at it.  That includes "settings" (format 2),
 * which a restore writes into the new database's MANIFEST: the same rules as the store's own.
 */
#include "backup/backup.h"

#include "core/err.h"
#include "store/db.h"
#include "store/manifest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const type_names[] = { NULL, "full", "incremental", "differential" };

const char *backup_type_name(jvdb_backup_type t)
{
    return t >= JVDB_BACKUP_FULL && t <= JVDB_BACKUP_DIFFERENTIAL ? type_names[t] : "unknown";
}

int backup_type_parse(const char *s, jvdb_backup_type *out)
{
    for (int t = JVDB_BACKUP_FULL; t <= JVDB_BACKUP_DIFFERENTIAL; t++)
        if (s && !strcmp(s, type_names[t])) {
            *out = (jvdb_backup_type)t;
            return JVDB_OK;
        }
    return err_set(JVDB_EINVAL, "unknown backup type '%s' (full, incremental or differential)", s ? s : "");
}

/* "2024-05-01T12:00:00.123Z": readable, and exact to the millisecond. */
static void meta_format_time(int64_t ns, char *buf, size_t cap)
{
    time_t secs = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char day[64];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%.24s.%03dZ", day, (int)(ns % 1000000000 / 1000000));
}

/* Reads the exact form meta_format_time writes ("2024-05-01T12:00:00.123Z", UTC) into nanoseconds since the
 * epoch; -1 for anything else, trailing bytes and out-of-range fields included. */
static int meta_parse_time(const char *s, int64_t *ns)
{
    struct tm tm = { 0 };
    int ms, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &ms, &n) != 7 ||
        n != 24 || s[n])
        return -1;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60 || ms < 0 || tm.tm_year < 1970 || tm.tm_year > 9999)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *ns = (int64_t)timegm(&tm) * 1000000000 + (int64_t)ms * 1000000;
    return 0;
}

/* Everything but meta_sha256. */
static json_t *meta_body(const struct backup_meta *m)
{
    char when[40];
    meta_format_time(m->created_ns, when, sizeof when);
    json_t *desc = json_string(m->description);
    if (!desc) return NULL;
    return json_pack("{s:i, s:s, s:s, s:s, s:o, s:I, s:I, s:s, s:I, s:I, s:{s:I, s:I}, s:s, s:i, s:s, "
                     "s:{s:s, s:i}, s:o, s:I}",
                     "format_version", (int)m->format_version, "id", m->id, "database", m->database, "type",
                     backup_type_name(m->type), "parent", m->parent[0] ? json_string(m->parent) : json_null(),
                     "lsn_from", (json_int_t)m->lsn_from, "lsn_to", (json_int_t)m->lsn_to, "created_at", when,
                     "put_count", (json_int_t)m->put_count, "delete_count", (json_int_t)m->delete_count, "bytes", "raw",
                     (json_int_t)m->raw_bytes, "stored", (json_int_t)m->stored_bytes, "sha256", m->sha256, "dimension",
                     (int)m->dim, "metric", jvdb_metric_name(m->metric), "compression", "algorithm", "zstd", "level",
                     m->level, "description", desc, "incarnation", (json_int_t)m->incarnation);
}

#define META_DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

void backup_settings_free(struct backup_settings *s)
{
    json_decref(s->manifest);
    free(s->description);
    memset(s, 0, sizeof *s);
}

/* backup.json "settings" from the captured settings (NULL on out of memory or non-UTF-8 text). */
static json_t *meta_settings_json(const struct backup_settings *st)
{
    char sync[32];
    jvdb_sync_name(st->sync, st->sync_interval_ms, sync, sizeof sync);
    json_t *man = st->manifest ? json_deep_copy(st->manifest) : json_object();
    json_t *desc = json_string(st->description ? st->description : "");
    if (!man || !desc) {
        json_decref(man);
        json_decref(desc);
        return NULL;
    }
    return json_pack("{s:o, s:o, s:I, s:s, s:I}", "database_description", desc, "manifest", man, "segment_max_bytes",
                     (json_int_t)st->segment_max_bytes, "sync", sync, "sync_interval_ms",
                     (json_int_t)st->sync_interval_ms);
}

int meta_serialize(const struct backup_meta *m, const struct backup_settings *settings, char **out, size_t *len)
{
    json_t *doc = meta_body(m);
    if (!doc) return err_set(JVDB_EINVAL, "backup %s: description is not valid UTF-8", m->id);
    if (m->format_version >= 2) {
        json_t *st = settings ? meta_settings_json(settings) : NULL;
        if (!st || json_object_set_new(doc, "settings", st)) {
            json_decref(doc);
            return err_set(JVDB_EINVAL, "backup %s: the database's settings cannot be written (description not UTF-8?)",
                           m->id);
        }
    }
    char *body = json_dumps(doc, META_DUMP_FLAGS);
    char hex[65];
    if (body) sha256_hex(body, strlen(body), hex);
    free(body);
    if (!body || json_object_set_new(doc, "meta_sha256", json_string(hex))) {
        json_decref(doc);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    char *text = json_dumps(doc, META_DUMP_FLAGS);
    json_decref(doc);
    if (!text) return err_set(JVDB_ENOMEM, "out of memory");
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    buf[n] = '\n';
    buf[n + 1] = '\0';
    *out = buf;
    *len = n + 1;
    return JVDB_OK;
}

/* Checks "settings" with the store's own rules; fills *out (owned) when given.  Returns the name of
 * the first bad field, or NULL. */
static const char *meta_settings_parse(json_t *st, struct backup_settings *out)
{
    json_error_t jerr;
    const char *sync, *desc;
    json_int_t seg = 0, ms = 0;
    json_t *man;
    if (!json_is_object(st) ||
        json_unpack_ex(st, &jerr, JSON_STRICT, "{s:s, s:o, s:I, s:s, s:I}", "database_description", &desc, "manifest",
                       &man, "segment_max_bytes", &seg, "sync", &sync, "sync_interval_ms", &ms))
        return "settings";
    jvdb_sync_mode mode;
    uint32_t interval = 0;
    if (jvdb_sync_parse(sync, &mode, &interval)) {
        err_clear();
        return "settings.sync";
    }
    if (ms < 0 || ms > 3600000 || (mode == JVDB_SYNC_INTERVAL && (json_int_t)interval != ms))
        return "settings.sync_interval_ms";
    if (seg < 4096) return "settings.segment_max_bytes";
    if (strlen(desc) > BACKUP_DB_DESC_MAX) return "settings.database_description";
    if (!json_is_object(man)) return "settings.manifest";
    const char *key;
    json_t *val;
    json_object_foreach(man, key, val)
    {
        /* The store's own keys come from the backup's other fields, never from here; the keys other
         * modules keep there are objects. */
        if (manifest_key_known(key)) return "settings.manifest";
        if ((!strcmp(key, "index") || !strcmp(key, "compaction")) && !json_is_object(val)) return "settings.manifest";
    }
    if (!out) return NULL;
    out->sync = mode;
    out->sync_interval_ms = (uint32_t)ms;
    out->segment_max_bytes = (uint64_t)seg;
    out->manifest = json_deep_copy(man);
    out->description = strdup(desc);
    if (!out->manifest || !out->description) {
        backup_settings_free(out);
        return "settings (out of memory)";
    }
    return NULL;
}

/* Whether s is exactly n lowercase hex digits (the form of the checksums backup.json records). */
static int meta_is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* Ids are "YYYYMMDDTHHMMSSZ-<type>-<n>"; checked so that an id can never carry a path. */
static int meta_id_valid(const char *id, jvdb_backup_type *type)
{
    size_t n = strlen(id);
    if (n < 19 || n >= BACKUP_ID_MAX) return 0;
    for (int i = 0; i < 16; i++) {
        char c = id[i];
        if (i == 8 ? c != 'T' : i == 15 ? c != 'Z' : (c < '0' || c > '9')) return 0;
    }
    if (id[16] != '-') return 0;
    const char *t = id + 17, *dash = strchr(t, '-');
    if (!dash || !dash[1]) return 0;
    for (const char *p = dash + 1; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    for (int k = JVDB_BACKUP_FULL; k <= JVDB_BACKUP_DIFFERENTIAL; k++)
        if ((size_t)(dash - t) == strlen(type_names[k]) && !strncmp(t, type_names[k], (size_t)(dash - t))) {
            if (type) *type = (jvdb_backup_type)k;
            return 1;
        }
    return 0;
}

int backup_id_valid(const char *id) { return meta_id_valid(id, NULL); }

int meta_parse(const char *buf, size_t len, const char *what, struct backup_meta *out, struct backup_settings *settings,
               int *has_settings)
{
    memset(out, 0, sizeof *out);
    if (settings) memset(settings, 0, sizeof *settings);
    if (has_settings) *has_settings = 0;
    json_t *st = NULL;
    json_error_t jerr;
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return err_set(JVDB_ECORRUPT, "%s: backup.json is not valid JSON (line %d, column %d): %s", what, jerr.line,
                       jerr.column, jerr.text);
    int rc = JVDB_OK;
    if (!json_is_object(doc)) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json is not a JSON object", what);
        goto out;
    }
    /* Byte-exactness first: everything after this looks at values we know were written by us. */
    char *canon = json_dumps(doc, META_DUMP_FLAGS);
    if (!canon) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    size_t cn = strlen(canon);
    int same = cn + 1 == len && !memcmp(canon, buf, cn) && buf[cn] == '\n';
    free(canon);
    if (!same) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json has been altered (its bytes are not the form it was written in)",
                     what);
        goto out;
    }
    const char *stored_sum = json_string_value(json_object_get(doc, "meta_sha256"));
    if (!stored_sum || !meta_is_hex(stored_sum, 64)) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json has no valid meta_sha256", what);
        goto out;
    }
    char want[65];
    snprintf(want, sizeof want, "%s", stored_sum);
    json_object_del(doc, "meta_sha256");
    char *body = json_dumps(doc, META_DUMP_FLAGS);
    if (!body) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    char got[65];
    sha256_hex(body, strlen(body), got);
    free(body);
    if (strcmp(got, want)) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json checksum mismatch (meta_sha256 %s, content hashes to %s)", what,
                     want, got);
        goto out;
    }

    /* "settings" is checked on its own below; the strict unpack covers the rest. */
    if ((st = json_object_get(doc, "settings"))) {
        json_incref(st);
        json_object_del(doc, "settings");
    }
    json_int_t fv = 0, from = 0, to = 0, puts = 0, dels = 0, raw = 0, stored = 0, dim = 0, inc = 0;
    int level = 0;
    const char *id, *dbn, *type, *when, *sha, *metric, *alg, *desc;
    json_t *parent;
    if (json_unpack_ex(
            doc, &jerr, JSON_STRICT,
            "{s:I, s:s, s:s, s:s, s:o, s:I, s:I, s:s, s:I, s:I, s:{s:I, s:I}, s:s, s:I, s:s, s:{s:s, s:i}, s:s, s:I}",
            "format_version", &fv, "id", &id, "database", &dbn, "type", &type, "parent", &parent, "lsn_from", &from,
            "lsn_to", &to, "created_at", &when, "put_count", &puts, "delete_count", &dels, "bytes", "raw", &raw,
            "stored", &stored, "sha256", &sha, "dimension", &dim, "metric", &metric, "compression", "algorithm", &alg,
            "level", &level, "description", &desc, "incarnation", &inc)) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json: %s", what, jerr.text);
        goto out;
    }
    const char *bad = NULL;
    if (fv < 1 || fv > BACKUP_FORMAT_VERSION) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json has format_version %lld; this version reads 1 to %d", what,
                     (long long)fv, BACKUP_FORMAT_VERSION);
        goto out;
    }
    if ((fv >= 2) != (st != NULL)) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json %s", what, st ? "of format 1 has settings" : "has no settings");
        goto out;
    }
    if (backup_type_parse(type, &out->type)) bad = "type";
    else if (!meta_id_valid(id, NULL) || strlen(id) >= sizeof out->id) bad = "id";
    else if (!db_name_valid(dbn)) bad = "database";
    else if (from < 0 || to < 0 || from > to) bad = "lsn range";
    else if (puts < 0 || dels < 0 || raw < 0 || stored < 0 || inc < 0) bad = "a count";
    else if (!meta_is_hex(sha, 64)) bad = "sha256";
    else if (dim < 1 || dim > JVDB_MAX_DIM) bad = "dimension";
    else if (jvdb_metric_parse(metric, &out->metric)) bad = "metric";
    else if (strcmp(alg, "zstd") || level < -7 || level > 22) bad = "compression";
    else if (strlen(desc) > JVDB_BACKUP_DESC_MAX) bad = "description";
    else if (meta_parse_time(when, &out->created_ns)) bad = "created_at";
    else if (out->type == JVDB_BACKUP_FULL ? !json_is_null(parent) || from != 0 || dels != 0
                                           : !json_is_string(parent) || !meta_id_valid(json_string_value(parent), NULL))
        bad = "parent";
    if (!bad && st) bad = meta_settings_parse(st, settings);
    if (bad) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json has an invalid %s", what, bad);
        goto out;
    }
    if (has_settings) *has_settings = st != NULL;
    jvdb_backup_type id_type;
    meta_id_valid(id, &id_type);
    if (id_type != out->type) {
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json id %s does not match its type %s", what, id, type);
        goto out;
    }
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->database, sizeof out->database, "%s", dbn);
    if (json_is_string(parent)) snprintf(out->parent, sizeof out->parent, "%s", json_string_value(parent));
    out->format_version = (uint32_t)fv;
    out->lsn_from = (uint64_t)from;
    out->lsn_to = (uint64_t)to;
    out->put_count = (uint64_t)puts;
    out->delete_count = (uint64_t)dels;
    out->raw_bytes = (uint64_t)raw;
    out->stored_bytes = (uint64_t)stored;
    snprintf(out->sha256, sizeof out->sha256, "%s", sha);
    out->dim = (uint32_t)dim;
    out->level = level;
    out->incarnation = inc;
    snprintf(out->description, sizeof out->description, "%s", desc);
out:
    if (rc && settings) backup_settings_free(settings);
    json_decref(st);
    json_decref(doc);
    return rc;
}

void meta_to_info(const struct backup_meta *m, jvdb_backup_info *info)
{
    memset(info, 0, sizeof *info);
    snprintf(info->id, sizeof info->id, "%s", m->id);
    snprintf(info->database, sizeof info->database, "%s", m->database);
    info->type = m->type;
    snprintf(info->parent, sizeof info->parent, "%s", m->parent);
    info->lsn_from = m->lsn_from;
    info->lsn_to = m->lsn_to;
    info->created_ns = m->created_ns;
    info->put_count = m->put_count;
    info->delete_count = m->delete_count;
    info->raw_bytes = m->raw_bytes;
    info->stored_bytes = m->stored_bytes;
    memcpy(info->sha256, m->sha256, sizeof info->sha256);
    info->dim = m->dim;
    info->metric = m->metric;
    info->compression_level = m->level;
    info->format_version = m->format_version;
    info->incarnation = m->incarnation;
    snprintf(info->description, sizeof info->description, "%s", m->description);
}

#ifndef JVDB_STORE_MANIFEST_H
#define JVDB_STORE_MANIFEST_H
/*
 * The MANIFEST: a database's durable description (settings, the ordered list of segment files, the
 * backup horizon).  Replacing it is the commit point of every structural change.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jvdb.h"

/* Format 1: every version reads it.  Format 2 (cosine databases only) says the vectors are stored
 * as given, not normalised: a version that read format 1 only would search them wrongly, so it must
 * refuse the database.  l2 and dot databases stay format 1 (nothing changed for them); a format-1
 * cosine database written by an older version becomes format 2 at its first put (db.c). */
#define MANIFEST_FORMAT_MIN      1
#define MANIFEST_FORMAT_VERSION  2
#define MANIFEST_FORMAT_AS_GIVEN 2

struct manifest {
    uint32_t format; /* 0 = not set: written as manifest_format_for(metric) */
    char name[JVDB_MAX_NAME_LEN + 1];
    uint32_t dim;
    jvdb_metric metric;
    jvdb_sync_mode sync;
    uint32_t sync_interval_ms;
    uint64_t segment_max_bytes;
    int64_t created_ns;
    uint64_t *segments; /* ascending */
    size_t nsegments;
    uint64_t active; /* the one segment that is appended to (any of the list) */
    uint64_t next_segment;
    uint64_t lsn_floor;      /* every LSN ever issued is <= max(lsn_floor, LSNs in segments) */
    uint64_t backup_horizon; /* LSN of the newest full backup; 0 = none */
    int64_t last_compaction_ns;
    json_t *extra; /* keys this version does not know, kept as they are */
};

/* The format a new database of this metric is created with. */
uint32_t manifest_format_for(jvdb_metric metric);
/* Whether `key` is one of the MANIFEST's own keys (the rest are kept in `extra`). */
int manifest_key_known(const char *key);
/* Parses MANIFEST bytes (untrusted: fuzzed).  `what` names the file in error messages. */
int manifest_parse(const char *data, size_t len, const char *what, struct manifest *out);
/* Serialises; the caller frees *data. */
int manifest_serialize(const struct manifest *m, char **data, size_t *len);
int manifest_load(const char *dir, struct manifest *out);
/* Atomically replaces <dir>/MANIFEST (crash points "manifest.before_rename"/"manifest.after_rename"). */
int manifest_store(const char *dir, const struct manifest *m);
int manifest_copy(const struct manifest *src, struct manifest *dst);
void manifest_free(struct manifest *m);
#endif

#ifndef JVDB_BACKUP_BACKUP_H
#define JVDB_BACKUP_BACKUP_H
/*
 * Internal interfaces of src/backup (docs/ARCHITECTURE.md 7), shared by its files:
 *
 *   repo.c / repo_fs.c / repo_s3.c   where backups live: a directory or S3-compatible storage
 *   archive.c                        the record stream inside data.jvb.zst: write and read/check
 *   meta.c                           backup.json: build, serialise, parse (untrusted input)
 *   backup.c                         the operations of jvdb.h: chains, create, verify, restore,
 *                                    delete, prune
 *
 * Layering: backup uses store (snapshots, raw append, hidden build + publish) and core; nothing
 * below it knows backups exist, except the backup horizon the store persists for it.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jvdb.h"

/* 2 adds "settings" (the database's settings, applied by restore); 1 is still read. */
#define BACKUP_FORMAT_VERSION 2
#define BACKUP_DB_DESC_MAX    65536
#define BACKUP_ID_MAX         64
#define BACKUP_DATA_NAME      "data.jvb.zst"
#define BACKUP_META_NAME      "backup.json"

/* ------------------------------------------------------------------ repository */

#define BACKUP_INDEX_NAME "index.hnsw" /* the HNSW graph carried beside the data (optional) */

/* One committed backup as the repository lists it: its id and the size of its data object
 * (-1 when the object is missing, which makes the backup unrestorable). */
struct repo_entry {
    char id[BACKUP_ID_MAX];
    int64_t data_size;
};

/* A sequential reader of one data object. */
struct repo_reader {
    /* Reads up to cap bytes; *got == 0 means the end.  Sets the error message on failure. */
    int (*read)(struct repo_reader *r, void *buf, size_t cap, size_t *got);
    void (*close)(struct repo_reader *r);
};

/* A backup being written: the data object is streamed in, then commit writes backup.json and makes
 * the backup visible as one step (the filesystem renames a staging directory; S3 writes the
 * metadata object last, and listing only shows backups that have one). */
struct repo_stage {
    int (*write)(struct repo_stage *s, const void *buf, size_t len);
    int (*commit)(struct repo_stage *s, const char *meta, size_t len);
    /* Optional (NULL when the repository cannot): stores a small extra object of the backup, such as
     * the HNSW graph ("index.hnsw"), durable before commit. */
    int (*put_extra)(struct repo_stage *s, const char *name, const void *buf, size_t len);
    void (*abort)(struct repo_stage *s); /* also frees a committed stage */
};

/* obj_list's callback: one object's name (relative to the database folder) and stored size; non-zero
 * stops the listing and is returned. */
typedef int (*repo_obj_fn)(void *arg, const char *name, int64_t size);

struct repo_ops {
    const char *kind; /* "filesystem" or "s3" */
    /* Creates the repository if it does not exist; only backup create calls it.  Every other
     * operation on a missing repository fails with JVDB_ENOTFOUND "repository ... does not exist". */
    int (*init)(jvdb_repo *r);
    /* Database folders in the repository (sorted, malloc'd; free with jvdb_free_names). */
    int (*list_databases)(jvdb_repo *r, char ***names, size_t *n);
    /* Committed backups of one database, in no particular order (malloc'd). */
    int (*list_backups)(jvdb_repo *r, const char *db, struct repo_entry **out, size_t *n);
    int (*read_meta)(jvdb_repo *r, const char *db, const char *id, char **buf, size_t *len);
    int (*open_data)(jvdb_repo *r, const char *db, const char *id, struct repo_reader **out);
    int (*stage_begin)(jvdb_repo *r, const char *db, const char *id, struct repo_stage **out);
    /* Makes the backup invisible first (so it is never listed half-deleted), then removes it. */
    int (*remove)(jvdb_repo *r, const char *db, const char *id);
    /* Removes leftovers of interrupted creates and deletes older than max_age_s seconds. */
    void (*cleanup)(jvdb_repo *r, const char *db, int64_t max_age_s);
    void (*close)(jvdb_repo *r);
    /* A repository-wide object beside the database folders (JVDB_ENOTFOUND when absent), written
     * whole and atomically; crypt.c keeps the encryption marker there. */
    int (*read_object)(jvdb_repo *r, const char *name, char **buf, size_t *len);
    int (*write_object)(jvdb_repo *r, const char *name, const void *buf, size_t len);
    /* Optional: reads an extra object of a committed backup whole; JVDB_ENOTFOUND when it has none. */
    int (*read_extra)(jvdb_repo *r, const char *db, const char *id, const char *name, char **buf, size_t *len);
    /* Objects under a database folder named by a relative path ("log/<incarnation>/<file>", wal.c),
     * each written whole and atomically (filesystem: temp file, fsync, rename, fsync directory; S3:
     * one PUT), so a reader never sees half of one.  obj_list calls fn for every object whose name
     * starts with `prefix` (stored size; no particular order); JVDB_OK with no calls when there is
     * none.  obj_get: JVDB_ENOTFOUND when absent; obj_delete: JVDB_OK when absent.  The encryption
     * layer seals *.jvl objects with "<database>/<name>" as the additional data. */
    int (*obj_list)(jvdb_repo *r, const char *db, const char *prefix, repo_obj_fn fn, void *arg);
    int (*obj_put)(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len);
    int (*obj_get)(jvdb_repo *r, const char *db, const char *name, char **buf, size_t *len);
    int (*obj_delete)(jvdb_repo *r, const char *db, const char *name);
    /* Optional (NULL when the store cannot promise it): creates object `name` only if no object of that name
     * exists, atomically against any other writer (filesystem: link(2) of a synced temp file), JVDB_EEXISTS
     * when one does.  wal.c claims fencing epochs with it; without it a claim is decided by listing. */
    int (*obj_create)(jvdb_repo *r, const char *db, const char *name, const void *buf, size_t len);
    /* Optional (NULL: callers fall back to obj_list): obj_list of only the names that sort after
     * `after` (byte order), so a reader polling a long log pays for what is new, not for its history:
     * S3 ListObjectsV2 start-after; a directory skips older names before any stat. */
    int (*obj_list_after)(jvdb_repo *r, const char *db, const char *prefix, const char *after, repo_obj_fn fn,
                          void *arg);
};

struct jvdb_repo {
    const struct repo_ops *ops;
    char *spec; /* as given, for messages */
};

/* r->ops->obj_list_after, or obj_list with the names at or before `after` left out when the
 * repository has no cheaper way (repo.c). */
int repo_obj_list_after(jvdb_repo *r, const char *db, const char *prefix, const char *after, repo_obj_fn fn, void *arg);

int repo_fs_open(const char *dir, jvdb_repo **out);
int repo_s3_open(const char *bucket, const char *prefix, const jvdb_repo_options *opts, jvdb_repo **out);
/* Wraps an opened repository in the encryption layer (crypt.c), which takes ownership of it.
 * key_file NULL: a plain repository, and a clear error on an encrypted one. */
int repo_crypt_wrap(jvdb_repo *inner, const char *key_file, jvdb_repo **out);
/* The repository under the layer (tests: a forger without the key writes there). */
jvdb_repo *repo_crypt_inner(jvdb_repo *r);

/* ------------------------------------------------------------------ backup.json */

struct backup_meta {
    char id[BACKUP_ID_MAX];
    char database[JVDB_MAX_NAME_LEN + 1];
    jvdb_backup_type type;
    char parent[BACKUP_ID_MAX]; /* "" for a full backup */
    uint64_t lsn_from, lsn_to;
    int64_t created_ns;
    uint64_t put_count, delete_count;
    uint64_t raw_bytes, stored_bytes;
    char sha256[65]; /* of the stored (compressed) data, lowercase hex */
    uint32_t dim;
    jvdb_metric metric;
    int level; /* zstd level */
    uint32_t format_version;
    int64_t incarnation; /* the database's MANIFEST created_ns */
    char description[JVDB_BACKUP_DESC_MAX + 1];
};

/* The database's settings a backup carries (backup.json "settings", format_version 2) and a restore
 * applies.  A version 1 backup has none: restore then uses the defaults. */
struct backup_settings {
    jvdb_sync_mode sync;
    uint32_t sync_interval_ms;
    uint64_t segment_max_bytes;
    json_t *manifest;  /* the MANIFEST's other keys ("index", "compaction", ...); owned */
    char *description; /* the server's description of the database; owned, never NULL */
};
void backup_settings_free(struct backup_settings *s);

/* Canonical serialisation (compact, sorted keys, "meta_sha256" over the rest, newline).  `settings`
 * is written when m->format_version >= 2 (and must then be given). */
int meta_serialize(const struct backup_meta *m, const struct backup_settings *settings, char **out, size_t *len);
/* Parses and checks backup.json bytes: the file must be exactly its canonical form and its
 * meta_sha256 must match, so any changed byte is caught.  `what` prefixes error messages.  The
 * settings are always checked; they are returned in *settings (when not NULL; zeroed for a version
 * 1 backup, whose *has_settings is 0) for the caller to free. */
int meta_parse(const char *buf, size_t len, const char *what, struct backup_meta *out, struct backup_settings *settings,
               int *has_settings);
const char *backup_type_name(jvdb_backup_type t);
int backup_type_parse(const char *s, jvdb_backup_type *out);
void meta_to_info(const struct backup_meta *m, jvdb_backup_info *info);
/* Whether a string has the shape of a backup id (so it can never carry a path). */
int backup_id_valid(const char *id);

/* ------------------------------------------------------------------ archive */

/* SHA-256 helper over libcrypto's EVP interface. */
struct sha256_ctx;
struct sha256_ctx *sha256_new(void);
void sha256_update(struct sha256_ctx *c, const void *p, size_t n);
void sha256_final_hex(struct sha256_ctx *c, char hex[65]); /* also frees */
void sha256_free(struct sha256_ctx *c);
void sha256_hex(const void *p, size_t n, char hex[65]);

/* The archive type byte of a backup log object (wal.c): not a jvdb_backup_type, so no backup.json can
 * name it and the backup readers refuse such an archive ("header does not match"). */
#define ARCHIVE_TYPE_LOG 4

/* The uncompressed stream header fields. */
struct archive_header {
    uint32_t dim;
    jvdb_metric metric;
    jvdb_backup_type type;
    uint64_t lsn_from, lsn_to;
    uint64_t records, record_bytes;
};

/* Writer: header, records, trailer -> zstd -> SHA-256 -> stage. */
struct archive_writer;
int archive_writer_open(struct repo_stage *stage, const struct archive_header *h, int level, uint32_t threads,
                        const char *what, struct archive_writer **out);
/* Skips the SHA-256 of the stored bytes (finish then gives ""): for a log object, which keeps no hash of
 * its stored bytes (docs/FORMAT.md "Backup log objects"); every checksum inside the stream stays. */
void archive_writer_no_sha(struct archive_writer *w);
/* Appends one record (already validated by the caller). */
int archive_writer_add(struct archive_writer *w, const void *rec, uint32_t len);
/* Writes the trailer and flushes; fills raw/stored sizes and the SHA-256 of the stored bytes. */
int archive_writer_finish(struct archive_writer *w, uint64_t *raw, uint64_t *stored, char sha[65]);
void archive_writer_free(struct archive_writer *w);

/* Reader callbacks: whole records, back to back, 64-byte aligned, already checked (rec_check, LSN
 * range and order).  Return non-zero to stop (that value is returned). */
typedef int (*archive_chunk_fn)(void *arg, const void *recs, size_t len, size_t nrecs);

struct archive_read_result {
    uint64_t raw_bytes, stored_bytes;
    uint64_t puts, deletes;
    char sha256[65];
};
/* Reads one archive completely, checking everything that can be checked from its bytes: SHA-256
 * of the stored bytes against expect->sha256 (when non-empty), zstd framing, header fields
 * against expect, every record's checksum and LSN, the trailer's counts and stream checksum. */
struct archive_progress {
    jvdb_backup_progress_fn fn;
    void *arg;
    const char *phase;
    uint64_t base, total, records; /* a chain reports bytes over all its archives */
};
/* Checks one record's contents against what put accepts (store/validate.h: id alphabet and length,
 * metadata a JSON object, a finite vector of bounded norm; not zero for cosine).  JVDB_ECORRUPT
 * names `what`, record number `recno`, its LSN and id, and the reason. */
int archive_check_record(const void *rec, uint32_t dim, jvdb_metric metric, const char *what, uint64_t recno);
int archive_read(struct repo_reader *rd, const struct backup_meta *expect, archive_chunk_fn fn, void *arg,
                 const struct archive_progress *progress, struct archive_read_result *res);
/* The same for an archive described by `expect` only in part: a log object (expect->type
 * ARCHIVE_TYPE_LOG) has no backup.json, so its counts and sizes (zero in expect) are not compared;
 * everything else is checked as above, tombstones allowed.  `what` names it in messages. */
int archive_read_as(struct repo_reader *rd, const struct backup_meta *expect, const char *what, archive_chunk_fn fn,
                    void *arg, struct archive_progress const *progress, struct archive_read_result *res);
/* A reader over bytes in memory (not copied; they must outlive it).  NULL when out of memory. */
struct repo_reader *repo_mem_reader(const void *buf, size_t len);

/* ------------------------------------------------------------------ log apply (pitr.c) */

struct wal_entry;
/* Returned by log_apply_chunk (through wal_read) when the target is reached: not an error. */
#define LOG_APPLY_REACHED 1
/* Applies log records to a database in whole batches of the source, up to a target (0 = none):
 * a batch whose last LSN is above to_lsn, or whose time_ns is after to_time_ns, stops it. */
struct log_apply {
    jvdb_db *db;
    uint32_t dim;
    uint64_t after;     /* records at or below this LSN are already there: skipped */
    uint64_t to_lsn;    /* 0 = no LSN target */
    int64_t to_time_ns; /* 0 = no time target */
    char *buf;          /* records held: whole accepted batches (acc bytes), then a partial one */
    size_t cap, len, acc;
    uint64_t seen;      /* LSN of the last record read (order check) */
    int64_t batch_time; /* time_ns of the batch being read */
    uint64_t pending_records;
    uint64_t lsn;    /* last LSN of the last batch applied (after, until one is) */
    int64_t time_ns; /* its time_ns */
    uint64_t records, batches, objects;
    int done;     /* the target was reached */
    int unsynced; /* db is a hidden build: appends are not synced one by one */
};
void log_apply_init(struct log_apply *la, jvdb_db *db, uint32_t dim, uint64_t after);
void log_apply_free(struct log_apply *la);
/* archive_chunk_fn collecting and appending whole batches. */
int log_apply_chunk(void *arg, const void *recs, size_t len, size_t nrecs);
/* Reads one log object (fully verified by wal_read) and appends its batches up to the target. */
int log_apply_object(jvdb_repo *repo, const char *db, const struct wal_entry *e, jvdb_metric metric,
                     struct log_apply *la);
/* Where a restore from one backup can get to: LSN lsn0 (the backup's lsn_to) .. lsn1 (where its log
 * path ends), with their times.  backup_window_spans merges them into a window. */
struct window_reach {
    uint64_t lsn0, lsn1;
    int64_t t0, t1;
    const char *id;
    uint32_t log_objects;
    int base; /* the caller's index of the backup */
};
/* Fills w's spans, its contiguous span to the latest point (earliest/latest, latest_backup,
 * log_objects) from the reaches of n backups (oldest first; sorted and merged in place); returns the
 * `base` of the backup a restore of the latest point starts from (on a tie the newest), -1 if n is 0.  The one rule for jvdb_backup_window,
 * restore planning and jvdb_backup_verify_log. */
int backup_window_spans(jvdb_restore_window *w, struct window_reach *rs, size_t n);
/* The MANIFEST extras a restore for a replica adds (the source database and its incarnation). */
json_t *pitr_replica_mark(const char *source, int64_t incarnation);

#endif

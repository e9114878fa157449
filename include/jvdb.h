/*
 * jvdb.h — the public C API of libjvdb, JadeVectorDB's embeddable storage and search library.
 *
 * Shape: two opaque handles.  A jvdb_env is an open data directory (one process at a time holds it,
 * enforced with flock on <data>/LOCK).  A jvdb_db is one database (collection) inside it: a fixed
 * dimension, a metric and a durability mode.  Database handles belong to their environment: they stay
 * valid until jvdb_db_drop() of that database or jvdb_env_close(), and are safe to share between
 * threads (any number of readers, writers serialised internally).
 *
 * Every call that can fail returns an int status: JVDB_OK (0) or a negative JVDB_E* code.
 * jvdb_strerror(code) names the code; jvdb_errmsg() returns this thread's detail message for the
 * most recent failure ("vector has 3 values but database 'docs' has dimension 4").  A failed call
 * changes nothing.
 *
 * Durability and visibility: with sync "always" (the default) a write call returns only after its
 * records are on stable storage (concurrent writers share one fdatasync), and readers see a batch
 * only once that fdatasync has returned: nothing a reader saw can be lost by a power cut.  With
 * "interval" and "never" a batch is visible as soon as it is written to the file (before any sync):
 * a power cut may lose up to the last interval (or everything not yet written back by the kernel),
 * including writes readers have seen.  In every mode a reader sees whole batches only (never part
 * of one), and each read (a get, a search, an iteration) sees one consistent state as of the latest
 * published batch when it started.  Reads never wait for writes, compactions or backups, and
 * writes never wait for reads.
 */
#ifndef JVDB_H
#define JVDB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported functions.  libjvdb.so is built with hidden visibility: only what carries JVDB_API is
 * visible to a program that loads it (`nm -D --defined-only libjvdb.so` lists only jvdb_*), so the
 * library's internal names cannot collide with an application's.  Every function declared here
 * must carry it (tests/unit/check_exports.py fails otherwise). */
#if defined(__GNUC__) || defined(__clang__)
#define JVDB_API __attribute__((visibility("default")))
#else
#define JVDB_API
#endif

/* ---- version ---- */

/* The version of this header.  The library's own version is jvdb_version() / jvdb_version_number();
 * a program that loads libjvdb.so at run time compares JVDB_VERSION_NUMBER with
 * jvdb_version_number() to detect a mismatch.  CMakeLists.txt reads the three numbers from here. */
#define JVDB_VERSION_MAJOR  0
#define JVDB_VERSION_MINOR  1
#define JVDB_VERSION_PATCH  0
#define JVDB_VERSION_NUMBER (JVDB_VERSION_MAJOR * 1000000 + JVDB_VERSION_MINOR * 1000 + JVDB_VERSION_PATCH)
#define JVDB_STRINGIFY_(x)  #x
#define JVDB_STRINGIFY(x)   JVDB_STRINGIFY_(x)
#define JVDB_VERSION \
    JVDB_STRINGIFY(JVDB_VERSION_MAJOR) "." JVDB_STRINGIFY(JVDB_VERSION_MINOR) "." JVDB_STRINGIFY(JVDB_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH" (static storage, never NULL). */
JVDB_API const char *jvdb_version(void);
/* The library's version as MAJOR * 1000000 + MINOR * 1000 + PATCH (SQLite's number form). */
JVDB_API int jvdb_version_number(void);

/* ---- logging ---- */

/* The library logs what it does on its own (a torn tail cut at open, leftovers removed, compaction
 * and index progress) as one line per event.  By default a line goes to stderr with a UTC timestamp
 * and its level; the threshold is JVDB_LOG=debug|info|warn|error from the environment (default
 * warn) or jvdb_set_log_level().  An embedding application owns logging by installing a callback:
 * it then receives every line at or above the threshold, and nothing is written to stderr. */
typedef enum { JVDB_LOG_DEBUG = 0, JVDB_LOG_INFO = 1, JVDB_LOG_WARN = 2, JVDB_LOG_ERROR = 3 } jvdb_log_level;
/* `message` is one line (no timestamp, no newline), valid only during the call.  The callback may
 * run on any thread, several at once (a library worker, or the caller of any jvdb_* function), so
 * it must be thread-safe; it must not call libjvdb. */
typedef void (*jvdb_log_fn)(void *user, jvdb_log_level level, const char *message);
/* Installs fn (with its `user` pointer) for every later line; NULL restores the stderr default.
 * When it returns, no thread is still inside the previous callback, so its `user` may be freed. */
JVDB_API void jvdb_set_log_callback(jvdb_log_fn fn, void *user);
/* Lines below `level` are dropped (overrides JVDB_LOG).  JVDB_EINVAL for a value that is not a
 * jvdb_log_level (the threshold is then unchanged). */
JVDB_API int jvdb_set_log_level(jvdb_log_level level);

/* Status codes. */
#define JVDB_OK        0
#define JVDB_EINVAL    (-1)  /* bad argument: dimension, NaN, id, metadata, name, option */
#define JVDB_ENOTFOUND (-2)  /* no such database or vector */
#define JVDB_EEXISTS   (-3)  /* database already exists */
#define JVDB_ELOCKED   (-4)  /* data directory held by another process */
#define JVDB_EIO       (-5)  /* the operating system reported an I/O error */
#define JVDB_ENOSPC    (-6)  /* no space left on the device */
#define JVDB_ECORRUPT  (-7)  /* on-disk data failed a checksum or format check */
#define JVDB_ENOMEM    (-8)  /* out of memory */
#define JVDB_EBUSY     (-9)  /* operation conflicts with one in progress */
#define JVDB_EFAILED   (-10) /* database refuses writes after an earlier I/O failure; reopen it */
#define JVDB_EREADONLY (-11) /* the environment was opened read-only (jvdb_env_open_readonly) */

JVDB_API const char *jvdb_strerror(int code);
/* Detail message of this thread's last failed call; "" if none.  Valid until the thread's next call. */
JVDB_API const char *jvdb_errmsg(void);

typedef struct jvdb_env jvdb_env;
typedef struct jvdb_db jvdb_db;

typedef enum { JVDB_METRIC_L2 = 0, JVDB_METRIC_COSINE = 1, JVDB_METRIC_DOT = 2 } jvdb_metric;
typedef enum { JVDB_SYNC_ALWAYS = 0, JVDB_SYNC_INTERVAL = 1, JVDB_SYNC_NEVER = 2 } jvdb_sync_mode;

#define JVDB_MAX_DIM      65536
#define JVDB_MAX_ID_LEN   1024
#define JVDB_MAX_META_LEN (16u * 1024 * 1024)
#define JVDB_MAX_NAME_LEN 64
/* The most results one search returns (k, REST topK, CLI --k): one limit for every interface. */
#define JVDB_MAX_K        100000

/* ---- environment (data directory) ---- */

/* Opens (creating if needed) the data directory `path`.  Fails with JVDB_ELOCKED, message
 * "data directory ... is locked by pid N", when another process has it open. */
JVDB_API int jvdb_env_open(const char *path, jvdb_env **out);
/* Closes every database (final fdatasync) and releases the lock.  NULL is allowed. */
JVDB_API void jvdb_env_close(jvdb_env *env);
JVDB_API const char *jvdb_env_path(const jvdb_env *env);
/* Opens an existing data directory without changing anything in it: no file is created, removed,
 * truncated or written (not even <data>/LOCK, which is held with a shared flock, so read-only opens
 * coexist with each other but not with a writer).  Databases open as recovery finds them, except
 * that a torn tail is ignored in memory instead of being cut; every call that would write fails
 * with JVDB_EREADONLY.  JVDB_ENOTFOUND when the directory does not exist. */
JVDB_API int jvdb_env_open_readonly(const char *path, jvdb_env **out);

/* ---- damage (docs/FORMAT.md, "Recovery at open") ---- */

/* Names of database directories that cannot be opened because their MANIFEST is missing (sorted;
 * free with jvdb_free_names).  jvdb_db_open of one fails with JVDB_ECORRUPT naming what the
 * directory holds; jvdb_db_drop removes it. */
JVDB_API int jvdb_db_list_damaged(jvdb_env *env, char ***names, size_t *count);

typedef struct jvdb_repair_result {
    uint64_t records_kept;   /* records that verified and are current (live puts, tombstones) */
    uint64_t records_read;   /* every record that verified, superseded ones included */
    uint64_t ranges_dropped; /* damaged byte ranges set aside */
    uint64_t bytes_dropped;
    int changed; /* 0: nothing was damaged and nothing changed */
} jvdb_repair_result;
/* Called once per damaged range: the segment file, the range and what was wrong with it; `kept`
 * is the file the bytes were copied to before being dropped (<segment>.bad-<offset>). */
typedef void (*jvdb_repair_fn)(void *arg, const char *file, uint64_t offset, uint64_t length, const char *why,
                               const char *kept);
/* Salvages database `name` when recovery refuses to open it: every record of every segment whose
 * checksum verifies is kept (the newest LSN of each id wins, as at open), each damaged range is
 * copied aside and reported through on_drop (may be NULL), and the repaired state replaces the old
 * one with a single MANIFEST rename (a crash leaves either state).  The database must not be in
 * use (JVDB_EBUSY).  A missing or damaged MANIFEST, or a damaged segment header, is reported
 * (JVDB_ECORRUPT), not repaired.  Open the database again afterwards. */
JVDB_API int jvdb_db_repair(jvdb_env *env, const char *name, jvdb_repair_fn on_drop, void *arg,
                            jvdb_repair_result *out);

/* ---- databases ---- */

typedef struct jvdb_db_options {
    uint32_t dim;               /* 1..JVDB_MAX_DIM, required */
    jvdb_metric metric;         /* default L2 */
    jvdb_sync_mode sync;        /* default ALWAYS */
    uint32_t sync_interval_ms;  /* for JVDB_SYNC_INTERVAL; default 1000 */
    uint64_t segment_max_bytes; /* seal the active segment past this size; 0 = default (1 GiB) */
} jvdb_db_options;

/* Fills defaults (everything but dim). */
JVDB_API void jvdb_db_options_init(jvdb_db_options *opts, uint32_t dim);

/* Parses "l2" | "euclidean" | "cosine" | "dot" (any case) / "always" | "never" | "interval:<ms>". */
JVDB_API int jvdb_metric_parse(const char *s, jvdb_metric *out);
JVDB_API const char *jvdb_metric_name(jvdb_metric m);
JVDB_API int jvdb_sync_parse(const char *s, jvdb_sync_mode *mode, uint32_t *interval_ms);
/* The text jvdb_sync_parse reads back: "always", "never" or "interval:<ms>", written into buf (at
 * least 24 bytes for every value); returns buf. */
JVDB_API const char *jvdb_sync_name(jvdb_sync_mode mode, uint32_t interval_ms, char *buf, size_t cap);

/* Database names match [A-Za-z0-9_-]{1,64}. */
JVDB_API int jvdb_db_create(jvdb_env *env, const char *name, const jvdb_db_options *opts, jvdb_db **out);
/* Opens a database.  Recovery reads
 * only the records written after the database's keydir checkpoint (KEYDIR, docs/FORMAT.md), or every
 * record when there is no usable one (the log says why); a database opened for writing keeps the
 * checkpoint current in the background and at close (environment JVDB_KDCKPT_BYTES: the segment
 * bytes below which none is kept and the growth between two, default 64 MiB). */
JVDB_API int jvdb_db_open(jvdb_env *env, const char *name, jvdb_db **out);
/* Removes the database and its files; its handle becomes invalid.  One rename commits it: after a
 * crash the database is there whole or gone (its files removed at the next open).  When the data
 * directory cannot be synced after that rename, the database is gone but the call fails (the drop
 * may not survive a power cut) and its files wait for the next open. */
JVDB_API int jvdb_db_drop(jvdb_env *env, const char *name);
/* Names of all databases, sorted; free with jvdb_free_names. */
JVDB_API int jvdb_db_list(jvdb_env *env, char ***names, size_t *count);
JVDB_API void jvdb_free_names(char **names, size_t count);

JVDB_API const char *jvdb_db_name(const jvdb_db *db);
JVDB_API uint32_t jvdb_db_dim(const jvdb_db *db);
JVDB_API jvdb_metric jvdb_db_metric(const jvdb_db *db);
/* Changes the durability mode (persisted). */
JVDB_API int jvdb_db_set_sync(jvdb_db *db, jvdb_sync_mode mode, uint32_t interval_ms);
JVDB_API void jvdb_db_get_options(const jvdb_db *db, jvdb_db_options *out);

/* ---- vectors ---- */

/* Inserts or replaces vector `id` (1..JVDB_MAX_ID_LEN bytes of valid UTF-8 with no control character,
 * U+0000-U+001F and U+007F-U+009F: what other vector databases accept, and what every export format
 * round-trips).  `vector` has `dim` finite floats, which must equal the database's dimension, and a
 * magnitude (Euclidean norm) of at most about 6.5e18, so that no distance or inner product between
 * two vectors overflows float32; queries obey the same bound.  It is stored exactly as given, for
 * every metric (get, search and backups return the same bits); a cosine database refuses the zero
 * vector, which has no direction, and scores by the vectors' directions whatever their lengths.
 * `meta_json` is NULL or a JSON object.  On success *lsn_out (if not NULL) receives the write's log
 * sequence number. */
JVDB_API int jvdb_put(jvdb_db *db, const char *id, const float *vector, uint32_t dim, const char *meta_json,
                      uint64_t *lsn_out);

typedef struct jvdb_record {
    const char *id;
    const float *vector;
    uint32_t dim;          /* number of floats in vector */
    const char *meta_json; /* NULL for none */
} jvdb_record;

/* All or nothing: either every record is stored, or (after a bad record or a failure) none is.
 * A validation error names the index of the first bad record. */
JVDB_API int jvdb_put_batch(jvdb_db *db, const jvdb_record *records, size_t count, uint64_t *last_lsn_out);

/* Copies the vector into `vector_out` (dim floats; may be NULL) and, if meta_out is not NULL, a
 * malloc'd NUL-terminated JSON string (NULL when the vector has no metadata) to free with jvdb_free.
 * JVDB_ENOTFOUND when the id is absent or deleted. */
JVDB_API int jvdb_get(jvdb_db *db, const char *id, float *vector_out, char **meta_out);

/* Deletes `id`; JVDB_ENOTFOUND if it is not live (nothing written then). */
JVDB_API int jvdb_delete(jvdb_db *db, const char *id, uint64_t *lsn_out);

/* Number of live vectors. */
JVDB_API uint64_t jvdb_count(jvdb_db *db);

/* Calls fn for every live vector, in no particular order, on a consistent snapshot.  The pointers
 * are valid only during the call; `meta_json` is not NUL-terminated (length meta_len, 0 = none).
 * A non-zero return from fn stops the iteration and is returned. */
typedef int (*jvdb_iter_fn)(void *arg, const char *id, size_t id_len, const float *vector, const char *meta_json,
                            size_t meta_len, uint64_t lsn);
JVDB_API int jvdb_iterate(jvdb_db *db, jvdb_iter_fn fn, void *arg);

typedef struct jvdb_stats {
    uint64_t live_records;
    uint64_t dead_records; /* overwritten puts, deletes and their tombstones */
    uint64_t tombstones;   /* tombstones still kept in the keydir */
    uint64_t file_bytes;   /* all segment files */
    uint64_t live_bytes;
    uint64_t dead_bytes;
    double dead_ratio; /* dead_bytes / file_bytes */
    uint32_t segments;
    uint64_t last_lsn;
    uint64_t backup_horizon; /* 0 = no backup yet */
} jvdb_stats;

JVDB_API int jvdb_stats_get(jvdb_db *db, jvdb_stats *out);

/* Forces everything written so far to stable storage (useful with sync never / interval). */
JVDB_API int jvdb_sync(jvdb_db *db);

JVDB_API void jvdb_free(void *p);

/* ---- search (docs/ARCHITECTURE.md 4, 7) ---- */

typedef enum { JVDB_INDEX_HNSW = 0, JVDB_INDEX_FLAT = 1 } jvdb_index_type;

typedef struct jvdb_index_options {
    jvdb_index_type type;     /* HNSW (default) or FLAT (exact scan only) */
    uint32_t m;               /* HNSW links per node (16) */
    uint32_t ef_construction; /* (200) */
    uint32_t ef_search;       /* default ef of a query (64) */
} jvdb_index_options;

JVDB_API void jvdb_index_options_init(jvdb_index_options *o);

/* The HNSW graph is maintained by a background thread per database, started by the first search
 * (or status / wait / set_index call); writes never wait for it.  Vectors it has not taken in yet
 * are "pending" and searched exactly, so results are complete either way.  The graph is saved
 * beside the database (ext.hnsw, docs/FORMAT.md) when the thread is idle and at close, and the next
 * process loads it and takes in only what was written after it, instead of building it again.
 * Saves after the first append only the changed nodes to ext.hnsw.log (rewriting ext.hnsw when that
 * passes a quarter of it), so a save costs in proportion to what changed. */
/* The graph's readiness: LOADING the saved graph (searches are exact meanwhile), CATCHING_UP with the
 * `pending` vectors written after it, REBUILDING from every vector (`reason` says why), READY. */
typedef enum {
    JVDB_INDEX_READY = 0,
    JVDB_INDEX_LOADING = 1,
    JVDB_INDEX_CATCHING_UP = 2,
    JVDB_INDEX_REBUILDING = 3
} jvdb_index_state;
JVDB_API const char *jvdb_index_state_name(jvdb_index_state s); /* "ready", "loading", "catching_up", "rebuilding" */
typedef struct jvdb_index_status {
    jvdb_index_type type;
    uint64_t nodes; /* graph nodes, deleted ones included */
    uint64_t deleted_nodes;
    uint64_t pending;      /* written vectors not yet in the graph (every live one while LOADING) */
    uint64_t memory_bytes; /* graph memory: links and the 8-bit navigation rows (full vectors stay in the segments) */
    jvdb_index_state state;
    uint64_t loaded_nodes; /* nodes taken from the saved graph at open (0: none) */
    uint64_t saved_lsn;    /* LSN the last saved graph is complete up to (0: never saved) */
    char reason[160];      /* why the graph was last rebuilt rather than loaded ("" when loaded) */
} jvdb_index_status;
JVDB_API int jvdb_db_index_status(jvdb_db *db, jvdb_index_status *out);
/* The same without starting the index: JVDB_ENOTFOUND when no search has attached it yet. */
JVDB_API int jvdb_db_index_status_if_attached(jvdb_db *db, jvdb_index_status *out);

/* What the next open would find on disk (docs/FORMAT.md "HNSW graph file"), read from the file's header
 * only, without loading the graph: for read-only tools (`jvdb stats`, `db info`). */
typedef struct jvdb_index_saved {
    int present;         /* 0: no saved graph, the index would be built from every vector */
    uint64_t nodes;      /* nodes in the file, dead ones included */
    uint64_t lsn;        /* the LSN it is complete up to */
    uint64_t file_bytes; /* ext.hnsw and the complete batches of its delta (ext.hnsw.log) */
    uint64_t behind;     /* live vectors written after that LSN (what a load catches up) */
    char problem[160];   /* why it would not be loaded (header damaged, other settings); "" */
} jvdb_index_saved;
JVDB_API int jvdb_db_index_saved(jvdb_db *db, jvdb_index_saved *out);
/* Waits until nothing is pending (JVDB_EBUSY after timeout_ms). */
JVDB_API int jvdb_db_index_wait(jvdb_db *db, uint32_t timeout_ms);
/* Saves the HNSW graph to the database directory now (docs/FORMAT.md "HNSW graph file" and "HNSW graph
 * delta": the changes since the last save, or the whole graph), records it names synced first.  The
 * index thread does this by itself when idle and at close; this is for tools, backups and tests.
 * JVDB_OK without writing when the graph is still loading or the database is read-only. */
JVDB_API int jvdb_db_index_save(jvdb_db *db);
/* Throws the HNSW graph away and builds it again from every live vector, in the background (the
 * state is REBUILDING until done; searches stay complete, exact meanwhile).  Returns once the rebuild
 * has begun: jvdb_db_index_wait / jvdb_db_index_status follow it.  Nothing to do for FLAT. */
JVDB_API int jvdb_db_index_rebuild(jvdb_db *db);
/* Threads every index thread of this process may use to build its HNSW graph (a rebuild, a catch-up, a
 * large ingest): 1..256, or 0 for every online core.  Process-wide; takes effect from the next batch
 * of vectors.  Until it is called the environment variable JVDB_INDEX_THREADS (same values) decides,
 * and without it 1.  Searches are not affected (each runs on its caller's thread).  JVDB_EINVAL
 * above 256. */
JVDB_API int jvdb_set_index_threads(uint32_t threads);
/* How HNSW searches read the full vectors they re-rank and the records they return. */
typedef enum jvdb_search_reads {
    /* Through the segments' long-lived mappings: no system call per vector (the most queries per
     * second), but every page a search touches stays mapped, so a long stream of searches brings the
     * segment files into the process's RSS (clean page cache, reclaimable, about 2x the raw vectors
     * at 1M x 128 after 2,000 random searches). */
    JVDB_READS_MAPPED = 0,
    /* With pread into a per-search buffer: RSS stays at the index's own (about 0.9x the raw vectors)
     * however many searches run, for one system call per vector read (0.81-0.86x the queries per
     * second at 1M x 128, 0.62-0.80x at 100k; bench/results/search-rerank-rss.md). */
    JVDB_READS_PREAD = 1,
} jvdb_search_reads;
/* Chooses how searches of this process read vectors (process-wide, from the next search).  Until it is
 * called the environment variable JVDB_RERANK_READS (`map` or `pread`) decides, and without it
 * JVDB_READS_MAPPED.  Answers are the same either way.  JVDB_EINVAL for another value. */
JVDB_API int jvdb_set_search_reads(jvdb_search_reads mode);
/* The database's index settings (persisted; changing them rebuilds the index). */
JVDB_API int jvdb_db_set_index(jvdb_db *db, const jvdb_index_options *o);
JVDB_API void jvdb_db_get_index(jvdb_db *db, jvdb_index_options *out);

/* A metadata filter: a JSON object whose keys all must hold (docs/API.md "Filters" has every rule):
 *   {"genre": "jazz"}                       equality (strings, numbers, booleans, null; exact in type)
 *   {"tags": "legal"}                       on a list: the list contains "legal" (so does $in)
 *   {"m.lang": "en"}                        dotted paths into nested objects and lists of objects
 *   {"genre": {"$in": ["jazz", "blues"]}}   any of; $nin none of; {"$ne": v} not equal
 *   {"year": {"$gte": 1990, "$lt": 2000}}   ranges $gt $gte $lt $lte; "1995" (a string holding a JSON
 *                                           number) compares as 1995, other non-numbers never match
 *   {"f": {"$exists": true}}                present (null counts); {"$exists": false} absent
 *   {"title": {"$contains": "tax"}}         substring of a string, or element of a list
 *   {"$and": [..]} {"$or": [..]} {"$not": {..}}   combine filters
 * A compiled filter is immutable: any number of threads may use one at once. */
typedef struct jvdb_filter jvdb_filter;
JVDB_API int jvdb_filter_parse(const char *json, jvdb_filter **out);
JVDB_API void jvdb_filter_free(jvdb_filter *f);

/* ---- payload indexes (issue 12) ----
 * A payload index is declared per metadata field (a dotted path, as in filters) and makes filtered
 * searches on that field fast: the search counts the vectors the filter can accept from the index,
 * then scans exactly the few candidates of a selective filter, or walks the HNSW graph with the
 * index as the predicate.  Answers are identical with or without an index (filters keep the rules
 * above, numeric strings included).
 *   KEYWORD  string values: equality, $in, $ne, $nin (list fields: contains), $exists
 *   NUMERIC  numbers, and strings holding a JSON number: $gt $gte $lt $lte (both), equality, $in,
 *            $ne, $nin with number operands (genuine numbers only, as equality is exact in type),
 *            $exists
 * Conditions an index cannot answer (other operators, operand types or fields) are checked on the
 * candidates' metadata.  The declarations are persisted in the MANIFEST (docs/FORMAT.md); the
 * contents live in memory, built from the records by the first search after the open (or after
 * the declaration) and kept current on every write.  Up to JVDB_PAYLOAD_MAX_INDEXES per database. */
typedef enum { JVDB_PAYLOAD_KEYWORD = 0, JVDB_PAYLOAD_NUMERIC = 1 } jvdb_payload_type;
#define JVDB_PAYLOAD_MAX_INDEXES 32
#define JVDB_PAYLOAD_MAX_FIELD   255
typedef struct jvdb_payload_index {
    char field[JVDB_PAYLOAD_MAX_FIELD + 1];
    jvdb_payload_type type;
} jvdb_payload_index;
/* "keyword" / "numeric"; parse accepts them in any case (JVDB_EINVAL naming both otherwise). */
JVDB_API const char *jvdb_payload_type_name(jvdb_payload_type t);
JVDB_API int jvdb_payload_type_parse(const char *s, jvdb_payload_type *out);
/* Declares (or re-types) the index of `field`; declaring the same field and type again is a no-op.
 * JVDB_EINVAL for a bad path or too many indexes; persisted before it returns. */
JVDB_API int jvdb_db_payload_index_create(jvdb_db *db, const char *field, jvdb_payload_type type);
/* Removes the index of `field` (JVDB_ENOTFOUND when there is none). */
JVDB_API int jvdb_db_payload_index_drop(jvdb_db *db, const char *field);
/* The declared indexes, sorted by field (free with jvdb_free). */
JVDB_API int jvdb_db_payload_index_list(jvdb_db *db, jvdb_payload_index **out, size_t *n);

/* ---- bulk and filtered operations (issue 12) ---- */

/* Deletes every listed id that is live, as one all-or-nothing batch (one fsync); ids not live (or
 * listed twice) are no-ops, so *deleted (optional) may be below count.  Liveness is decided under
 * the writer lock.  A bad id fails the call before anything is written.  *last_lsn (optional) is
 * the batch's last LSN, 0 when nothing was deleted. */
JVDB_API int jvdb_delete_ids(jvdb_db *db, const char *const *ids, size_t count, uint64_t *deleted, uint64_t *last_lsn);
/* Live vectors the filter accepts (NULL = all). */
JVDB_API int jvdb_count_filtered(jvdb_db *db, const jvdb_filter *filter, uint64_t *out);
/* Deletes, in one batch, the vectors the filter accepts on a snapshot; one rewritten by another
 * writer after the snapshot is left alone.  *deleted (optional) receives how many were deleted. */
JVDB_API int jvdb_delete_filtered(jvdb_db *db, const jvdb_filter *filter, uint64_t *deleted);
/* Merges `patch_json` (a JSON object, RFC 7396: keys replace, objects merge, null removes a key)
 * into the metadata of `id`, keeping its vector.  JVDB_ENOTFOUND when not live.  A concurrent
 * writer's change is never lost: the merge is redone on the newer record. */
JVDB_API int jvdb_update_metadata(jvdb_db *db, const char *id, const char *patch_json, uint64_t *lsn_out);
/* The same merge for every vector the filter accepts, in one batch (as jvdb_delete_filtered). */
JVDB_API int jvdb_update_metadata_filtered(jvdb_db *db, const jvdb_filter *filter, const char *patch_json,
                                           uint64_t *updated);

/* Reading a collection back page by page.  The ids of up to `limit` (1..JVDB_SCROLL_MAX) live
 * vectors the filter accepts (NULL = all) whose ids sort after `after` (byte order, which is code
 * point order; NULL = from the first), ascending; *more (optional) says whether more follow.
 * Passing the last id of a page as the next `after` visits every vector that exists throughout
 * exactly once, whatever is written meanwhile.  Each page scans the database (no ordered index).
 * Free with jvdb_scroll_ids_free. */
#define JVDB_SCROLL_MAX 100000u
JVDB_API int jvdb_scroll_ids(jvdb_db *db, const jvdb_filter *filter, const char *after, size_t limit, char ***ids,
                             size_t *n, int *more);
JVDB_API void jvdb_scroll_ids_free(char **ids, size_t n);

typedef struct jvdb_search_params {
    uint32_t k;        /* results wanted (10) */
    uint32_t ef;       /* HNSW ef for this query; 0 = the database's */
    int exact;         /* scan every vector instead of using the index */
    int has_threshold; /* only results at least as good as `threshold` */
    float threshold;
    const jvdb_filter *filter; /* NULL = all */
    uint32_t threads;          /* exact scan threads; 0 = one per core */
    int include_vectors;
    int include_metadata;
} jvdb_search_params;

JVDB_API void jvdb_search_params_init(jvdb_search_params *p);

/* Scores: l2 = squared Euclidean distance (smaller is better); cosine = cosine similarity and
 * dot = inner product (larger is better).  Results are best first. */
typedef struct jvdb_result {
    char *id;
    float score;
    float *vector;   /* dim floats when include_vectors, else NULL */
    char *meta_json; /* when include_metadata and the vector has metadata, else NULL */
} jvdb_result;

JVDB_API int jvdb_search(jvdb_db *db, const float *query, uint32_t dim, const jvdb_search_params *params,
                         jvdb_result **results, size_t *count);
JVDB_API void jvdb_results_free(jvdb_result *results, size_t count);

/* ---- compaction (docs/ARCHITECTURE.md 7) ---- */

typedef struct jvdb_compact_policy {
    double dead_ratio;           /* compact when dead bytes / file bytes >= this (0.30) */
    uint64_t large_bytes;        /* ... or when file bytes >= this (100 MiB) */
    double large_min_dead_ratio; /*     with at least this dead ratio (0.05) */
    int64_t max_age_s;           /* ... or when the last compaction is this old (7 days) and any byte is dead */
    uint64_t min_records;        /* never bother below this many records in the files (1000) */
    double max_seconds;          /* stop cleanly (leaving no trace) after this long; 0 = no limit */
    double segment_dead_ratio;   /* partial compaction takes sealed segments at least this dead (0.30) */
} jvdb_compact_policy;

JVDB_API void jvdb_compact_policy_init(jvdb_compact_policy *p);

typedef enum {
    JVDB_TRIGGER_NONE = 0,
    JVDB_TRIGGER_FORCED,
    JVDB_TRIGGER_DEAD_RATIO,
    JVDB_TRIGGER_LARGE_FILE,
    JVDB_TRIGGER_AGE,
} jvdb_compact_trigger;
JVDB_API const char *jvdb_compact_trigger_name(jvdb_compact_trigger t);

/* Whether the policy (NULL = the database's own, else defaults) says the database needs
 * compaction: returns 1 and sets *why, or 0 with *why = JVDB_TRIGGER_NONE.  `reason` (optional,
 * cap bytes) receives a sentence such as "dead ratio 0.41 >= 0.30". */
JVDB_API int jvdb_needs_compaction(jvdb_db *db, const jvdb_compact_policy *policy, jvdb_compact_trigger *why,
                                   char *reason, size_t cap);

/* The database's own policy (persisted in its MANIFEST; the defaults until set). */
JVDB_API int jvdb_db_set_compact_policy(jvdb_db *db, const jvdb_compact_policy *policy);
JVDB_API void jvdb_db_get_compact_policy(jvdb_db *db, jvdb_compact_policy *out);

typedef struct jvdb_compact_stats {
    jvdb_compact_trigger trigger;
    int full; /* every sealed segment was an input */
    uint32_t segments_in, segments_out;
    uint64_t bytes_before; /* all segment files, before */
    uint64_t bytes_after;
    uint64_t bytes_reclaimed; /* input bytes minus output bytes */
    uint64_t records_copied;
    uint64_t records_dropped; /* dead records and tombstones left behind */
    uint64_t tombstones_dropped;
    double seconds;
    int64_t finished_ns; /* wall clock */
} jvdb_compact_stats;

typedef struct jvdb_compact_options {
    int full;                          /* all sealed segments, not only those past the policy */
    int force;                         /* run even when the policy does not ask for it */
    const jvdb_compact_policy *policy; /* NULL = the database's own */
    const volatile int *cancel;        /* optional: non-zero abandons the run cleanly (JVDB_EBUSY) */
    /* optional: called from the compacting thread every 1024 records copied, with the records
     * looked at so far and the live records of the inputs (the server's job progress) */
    void (*progress)(void *arg, uint64_t done, uint64_t total);
    void *progress_arg;
} jvdb_compact_options;

/* Compacts one database while reads and writes go on.  Returns JVDB_OK with stats (trigger NONE and
 * nothing done when not needed and not forced), JVDB_EBUSY if another compaction of it is running
 * or it was cancelled / timed out (nothing changed). */
JVDB_API int jvdb_compact(jvdb_db *db, const jvdb_compact_options *opts, jvdb_compact_stats *out);

/* The background compactor service. */
typedef struct jvdb_compactor jvdb_compactor;

typedef enum { JVDB_COMPACT_START = 1, JVDB_COMPACT_FINISH = 2, JVDB_COMPACT_FAIL = 3 } jvdb_compact_event;
/* Called from a compactor thread: stats are set on FINISH, status and message on FAIL. */
typedef void (*jvdb_compact_event_fn)(void *arg, const char *db_name, jvdb_compact_event ev,
                                      const jvdb_compact_stats *stats, int status, const char *message);

typedef struct jvdb_compactor_options {
    uint32_t threads;           /* databases compacted in parallel (1) */
    uint32_t check_interval_ms; /* how often to look (60000) */
    jvdb_compact_policy policy; /* used for databases that have no policy of their own */
} jvdb_compactor_options;

JVDB_API void jvdb_compactor_options_init(jvdb_compactor_options *o);
JVDB_API int jvdb_compactor_start(jvdb_env *env, const jvdb_compactor_options *opts, jvdb_compactor **out);
/* Registers a callback (at most 8). */
JVDB_API int jvdb_compactor_on_event(jvdb_compactor *c, jvdb_compact_event_fn fn, void *arg);
/* Queues a compaction of one database now, whatever the policy says. */
JVDB_API int jvdb_compactor_force(jvdb_compactor *c, const char *db_name, int full);
/* Wakes the service to check every database now. */
JVDB_API void jvdb_compactor_poke(jvdb_compactor *c);

typedef struct jvdb_compactor_totals {
    uint64_t compactions, failures;
    uint64_t bytes_before, bytes_after, bytes_reclaimed;
    uint64_t records_copied, records_dropped;
    double seconds;
    int running; /* compactions in progress now */
} jvdb_compactor_totals;
/* Totals for one database (name) or all (NULL); *last (optional) gets that database's last run. */
JVDB_API int jvdb_compactor_stats(jvdb_compactor *c, const char *db_name, jvdb_compactor_totals *totals,
                                  jvdb_compact_stats *last);
/* Stops promptly: an in-flight compaction is abandoned cleanly (its temporary file removed). */
JVDB_API void jvdb_compactor_stop(jvdb_compactor *c);

/* ==== backups (docs/ARCHITECTURE.md 7) ============================================================== */
/*
 * Exact, logical backups of one database: records, not files.  A full backup holds every live
 * vector at one LSN; an incremental one the changes (puts live at its LSN, and deletes) since the
 * previous backup of its chain; a differential one the changes since the chain's full backup.
 * Backups live in a repository: a directory, or S3-compatible storage ("s3://bucket/prefix").
 * Backup ids sort by time: "YYYYMMDDTHHMMSSZ-<type>-<n>"; where two databases of one repository
 * share an id, write "DATABASE/ID".  Every failure message names the backup and what is wrong.
 */
typedef struct jvdb_repo jvdb_repo;

typedef struct jvdb_repo_options {
    /* S3 only; NULL = from the environment: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION or
     * AWS_DEFAULT_REGION (else us-east-1), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
     * AWS_SESSION_TOKEN.  Without an endpoint, https://s3.<region>.amazonaws.com is used. */
    const char *endpoint;
    const char *region;
    const char *access_key;
    const char *secret_key;
    const char *session_token;
    uint64_t part_size; /* multipart upload part size; 0 = 16 MiB (minimum 5 MiB) */
    /* Both kinds: a file holding the repository key (at least 32 bytes; trailing whitespace is
     * ignored); NULL = $JVDB_REPO_KEY_FILE, else none.  With a key, archives (and the HNSW graph a
     * backup carries) are encrypted with AES-256-GCM and every backup.json is signed (HMAC-SHA-256),
     * docs/FORMAT.md.  A plain repository given a key, or an encrypted one given none or another key,
     * fails with EINVAL. */
    const char *key_file;
} jvdb_repo_options;

/* Opens "DIR" or "s3://bucket/prefix"; opts may be NULL.  Nothing is created: jvdb_backup_create
 * creates a missing repository directory, and every other operation on a repository that does not
 * exist fails with JVDB_ENOTFOUND "repository <path> does not exist". */
JVDB_API int jvdb_repo_open(const char *spec, const jvdb_repo_options *opts, jvdb_repo **out);
JVDB_API void jvdb_repo_close(jvdb_repo *repo);
/* Every database the repository knows, sorted: each with backups, log objects (<db>/log/...) or
 * both, so also one whose backups are all gone; free with jvdb_free_names.  A folder emptied by
 * deletes may be listed with neither.  JVDB_ENOTFOUND when the repository does not exist. */
JVDB_API int jvdb_repo_databases(jvdb_repo *repo, char ***names, size_t *count);

typedef enum {
    JVDB_BACKUP_FULL = 1,
    JVDB_BACKUP_INCREMENTAL = 2,
    JVDB_BACKUP_DIFFERENTIAL = 3,
} jvdb_backup_type;

#define JVDB_BACKUP_ID_MAX   64
#define JVDB_BACKUP_DESC_MAX 1024

typedef struct jvdb_backup_info {
    char id[JVDB_BACKUP_ID_MAX];
    char database[JVDB_MAX_NAME_LEN + 1];
    jvdb_backup_type type;
    char parent[JVDB_BACKUP_ID_MAX];  /* "" for a full backup */
    uint64_t lsn_from;                /* changes after this LSN (0 for full) ... */
    uint64_t lsn_to;                  /* ... up to and including this one */
    int64_t created_ns;               /* wall clock, ns since the epoch */
    uint64_t put_count, delete_count; /* records in the archive */
    uint64_t raw_bytes, stored_bytes; /* record stream / compressed archive */
    char sha256[65];                  /* of the stored archive */
    uint32_t dim;
    jvdb_metric metric;
    int compression_level; /* zstd */
    uint32_t format_version;
    char description[JVDB_BACKUP_DESC_MAX + 1];
    uint32_t chain_length; /* backups a restore of this one applies (1 for full) */
    int restorable;        /* list/show: its metadata and every parent are present */
    char status[256];      /* "ok" or why it cannot be restored */
    char note[256];        /* create: e.g. why a full backup was made instead */
    int64_t incarnation;   /* the database's incarnation (its MANIFEST creation time) */
} jvdb_backup_info;

/* Progress of a long operation: `phase` ("backup", "verify", "restore"), bytes done of total
 * (total 0 = unknown) and records so far.  Called from the calling thread. */
typedef void (*jvdb_backup_progress_fn)(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records);

typedef struct jvdb_backup_options {
    jvdb_backup_type type;   /* default FULL */
    const char *description; /* optional, at most JVDB_BACKUP_DESC_MAX bytes of UTF-8 */
    /* The application's description of the database (the server's "description"), carried with
     * the database's own settings and handed back by restore; optional, at most 65536 bytes. */
    const char *database_description;
    int level;        /* zstd level 1..19 (default 1) */
    uint32_t threads; /* zstd worker threads; 0 = compress in the calling thread */
    jvdb_backup_progress_fn progress;
    void *progress_arg;
    /* Leave the HNSW graph out (it is carried by default, as the object index.hnsw beside the data,
     * by filesystem repositories; restore installs it so the database answers without a rebuild). */
    int no_index;
    /* optional: non-zero stops the backup cleanly (JVDB_EBUSY "... was cancelled"): what was staged is
     * removed and the repository is as it was; polled at every record and before the commit */
    const volatile int *cancel;
} jvdb_backup_options;

JVDB_API void jvdb_backup_options_init(jvdb_backup_options *o);
JVDB_API const char *jvdb_backup_type_name(jvdb_backup_type t);
JVDB_API int jvdb_backup_type_parse(const char *s, jvdb_backup_type *out);

/* Backs up `db` without blocking its writers.  An incremental or differential backup whose parent
 * is no longer usable (none, deleted, unreadable, older than the backup horizon, or of an earlier
 * database of the same name) becomes a full one, and info->note says why.  The backup is visible
 * only once complete; a full one then moves the database's backup horizon. */
JVDB_API int jvdb_backup_create(jvdb_db *db, jvdb_repo *repo, const jvdb_backup_options *opts, jvdb_backup_info *info);

/* Backups of one database (NULL = all), oldest first per database; free with jvdb_free. */
JVDB_API int jvdb_backup_list(jvdb_repo *repo, const char *db_name, jvdb_backup_info **out, size_t *count);
JVDB_API int jvdb_backup_show(jvdb_repo *repo, const char *id, jvdb_backup_info *info);

/* Checks the backup and its whole chain: metadata, every parent link, the SHA-256 of every
 * archive, every record's checksum.  JVDB_ECORRUPT (or ENOTFOUND) names the first bad backup. */
JVDB_API int jvdb_backup_verify(jvdb_repo *repo, const char *id, jvdb_backup_progress_fn progress, void *arg);

/* What a restore did (filled on success). */
typedef struct jvdb_restore_result {
    char database[JVDB_MAX_NAME_LEN + 1]; /* the database restored into */
    int replaced;                         /* it replaced an existing database of that name */
    jvdb_backup_info backup;              /* the backup restored (the newest of its chain) */
    uint64_t vectors;                     /* live vectors written */
    int has_settings;                     /* the backup carried the database's settings (format 2) */
    char *database_description;           /* carried description, or NULL; free with jvdb_free */
    int index_installed;                  /* the backup's HNSW graph was installed (no rebuild needed) */
    uint64_t lsn;                         /* the point restored: the last LSN the database holds */
    int64_t time_ns;                      /* acknowledgement time of the last batch applied from the
                                             log (0: the restore ended at the backup) */
    uint32_t log_objects;                 /* log objects applied after the backup */
    uint64_t log_records;                 /* records applied from them */
    int64_t incarnation;                  /* of the database in the repository */
} jvdb_restore_result;

typedef struct jvdb_restore_options {
    const char *as_name; /* NULL = the backed-up database's name; "" or a bad name: EINVAL */
    int force;           /* replace an existing database (atomically) */
    jvdb_backup_progress_fn progress;
    void *progress_arg;
    jvdb_restore_result *result; /* optional */
    /* Point-in-time restore: with `database` set and the id NULL, the restore starts from the newest
     * restorable backup (of the right incarnation) at or before the target and applies the log
     * objects continuous shipping left in the repository after it, in whole batches, up to the
     * target -- exactly the batches acknowledged up to that point, never part of one.  At most one
     * target; none means `latest`.  A target outside the restorable window (jvdb_backup_window)
     * fails with JVDB_ENOTFOUND naming the window, one in a hole between its spans naming the
     * nearest restorable points on both sides; a bad or tampered log object with JVDB_ECORRUPT,
     * and nothing is written either way. */
    const char *database;
    uint64_t to_lsn;    /* the batches whose last LSN is <= to_lsn, in the newest incarnation of the
                           database (0 = not given) */
    int64_t to_time_ns; /* the batches acknowledged (record time_ns) at or before this Unix time in ns,
                           in LSN order up to the first one acknowledged later, of the incarnation
                           whose newest backup made by then is the newest (0 = not given) */
    int latest;         /* the newest point: the newest backup and every log object after it (without
                           log objects: the newest backup) */
    int replica;        /* mark the restored database as a replica of `database`, which
                           jvdb_backup_follow continues (needs `database`) */
} jvdb_restore_options;

/* Verifies the chain -- checksums, and every record against the rules of jvdb_put (id, metadata,
 * finite vector) -- and applies it in order (the full backup verified as it is applied, in one pass)
 * into a new database built out of sight and discarded on any failure, with the
 * settings the backup carries (sync mode, segment size, index and compaction settings), which then
 * appears (or replaces the existing one, with force) in one rename.  On failure nothing changed.
 * Handles to a replaced database become invalid.  *out (optional) is the restored database. */
JVDB_API int jvdb_backup_restore(jvdb_env *env, jvdb_repo *repo, const char *id, const jvdb_restore_options *opts,
                                 jvdb_db **out);

/* One run of points a restore can reach without a gap: every LSN in earliest_lsn..latest_lsn (in
 * whole batches), starting from `backup`.  A backup whose log is gone is a span of one point. */
typedef struct jvdb_restore_span {
    uint64_t earliest_lsn, latest_lsn;
    int64_t earliest_time_ns, latest_time_ns;
    char backup[JVDB_BACKUP_ID_MAX]; /* the oldest backup the span starts from */
} jvdb_restore_span;

#define JVDB_RESTORE_SPANS_MAX 16

/* The points a database can be restored to (of its newest incarnation).  earliest..latest is the
 * contiguous span that reaches the latest point: from the oldest backup whose log reaches it.
 * Earlier points are restorable only where `spans` says so: retention or a log fold removes log
 * objects once newer backups cover them, so between two old backups there can be holes. */
typedef struct jvdb_restore_window {
    char database[JVDB_MAX_NAME_LEN + 1];
    int64_t incarnation;
    uint64_t earliest_lsn, latest_lsn;
    int64_t earliest_time_ns, latest_time_ns; /* a backup's time is its creation time */
    uint32_t backups;                         /* restorable backups of that incarnation */
    uint32_t log_objects;                     /* log objects on the way to latest */
    char latest_backup[JVDB_BACKUP_ID_MAX];   /* the backup a restore of latest starts from */
    /* Every restorable span, oldest first, without overlaps and with a hole (an LSN no restore reaches)
     * between each two; the last is earliest..latest.  At most JVDB_RESTORE_SPANS_MAX, the newest:
     * spans_omitted older ones were left out. */
    uint32_t nspans, spans_omitted;
    jvdb_restore_span spans[JVDB_RESTORE_SPANS_MAX];
} jvdb_restore_window;

/* Fills *out for database db_name; JVDB_ENOTFOUND when it has no restorable backup. */
JVDB_API int jvdb_backup_window(jvdb_repo *repo, const char *db_name, jvdb_restore_window *out);

/* What jvdb_backup_verify_log found in the log of one database. */
typedef struct jvdb_log_verify_result {
    uint32_t log_objects; /* log objects read and found intact */
    uint64_t log_records; /* records in them */
    uint64_t log_bytes;   /* their stored bytes */
    uint32_t bad;         /* objects that failed their checks (or vanished while listed) */
    uint32_t unreachable; /* objects inside the window no backup's log path reaches: a gap before them */
    uint32_t unused;      /* objects no path takes for a known reason: fenced, superseded, before the window */
    uint32_t unchecked;   /* objects of an incarnation no backup describes (dimension unknown): not read */
    uint32_t holes;       /* LSN ranges inside the window that neither a backup nor the log reaches */
    uint32_t no_base;     /* objects of an incarnation without a restorable backup (and no newer one that
                             has one): that log cannot be restored; verify fails, naming the incarnation */
    int has_window;       /* window is filled: the database has a restorable backup */
    /* jvdb_backup_window's, computed by the same rule with every log path cut before its first bad object */
    jvdb_restore_window window;
} jvdb_log_verify_result;

/* Told of each finding of jvdb_backup_verify_log: fail 1 for a bad or unreachable object (verify
 * fails), 0 for a note (an unused object, a hole where the log was re-based on a backup). */
typedef void (*jvdb_log_verify_fn)(void *arg, int fail, const char *message);

/* Verifies the repository's log of db_name (docs/FORMAT.md "Backup log objects"): reads every log
 * object (of every incarnation) and checks it completely -- the zstd checksum (in an encrypted
 * repository: authentication of every byte), every record's checksum and contents, LSN order and
 * range, the name's times and the final batch flag -- then follows the log from the lsn_to of every
 * restorable backup and checks that each object inside the restorable window is reached.  A bad
 * object, or one no backup chain reaches (a gap: the message names the object and the LSN range
 * missing before it), gives JVDB_ECORRUPT naming the first; so does a log with no restorable backup
 * to start from (out->no_base: only log objects are left, or a new incarnation shipped before its
 * first backup landed).  out (optional) is filled either way.  A database without log objects
 * passes.  Reads only. */
JVDB_API int jvdb_backup_verify_log(jvdb_repo *repo, const char *db_name, jvdb_log_verify_fn report, void *arg,
                                    jvdb_log_verify_result *out);

/* ---- read replicas ---- */

#define JVDB_LOG_NAME_MAX 160 /* a log object's name under <database>/log/, with its NUL */

/* What one jvdb_backup_follow call did. */
typedef struct jvdb_follow_result {
    uint64_t lsn;                       /* the replica's last LSN afterwards */
    int64_t last_time_ns;               /* acknowledgement time of the newest batch applied by this call (0: none) */
    uint64_t records, batches, objects; /* applied by this call */
    uint64_t repo_lsn;                  /* the newest LSN the repository holds for that incarnation */
    int64_t incarnation;                /* the incarnation the replica follows */
    int reseed;                         /* the replica cannot continue from the log: a newer incarnation of the
                             database, or a gap in the log; restore it afresh (replica = 1) */
    char reason[256];                   /* why, when reseed */
    /* JVDB_ECORRUPT from a damaged log object (checksum or authentication failure, bad contents):
     * its name under <database>/log/ and its last LSN, so a replica can wait for a backup past it;
     * empty for a transient failure (the repository unreachable, an object removed while listed). */
    char bad_object[JVDB_LOG_NAME_MAX];
    uint64_t bad_lsn_to;
    int full; /* the call listed the whole log and the backups (not only the log after the replica) */
} jvdb_follow_result;

/* How jvdb_backup_follow_ex looks at the repository. */
typedef struct jvdb_follow_options {
    /* 1: list only the log objects named from the replica's LSN on (S3 start-after; a directory
     * skips older names without a stat), so a poll costs what is new, not the repository's history,
     * and no backup is listed.  When that cannot decide (nothing there continues the replica yet
     * something lies beyond it, or a newer incarnation shows), the call does the full check, as
     * jvdb_backup_follow does (out->full says which ran).  A caller polling with log_only should
     * still make a full call now and then: a backup beyond a replica in a repository without a log
     * is only seen by one. */
    int log_only;
} jvdb_follow_options;

/* Continues a replica (a database restored with opts.replica) from its last LSN: applies every
 * record the repository's log holds after it in its incarnation, in whole batches with their LSNs
 * and times (each group of batches appended and synced at once, so a crash leaves the replica at a
 * batch boundary and the next call goes on from there without losing or repeating anything).
 * JVDB_OK with out->reseed set when it cannot continue; JVDB_ECORRUPT for a bad log object (what
 * came before it stays applied); JVDB_ENOTFOUND when `replica` is not a replica. */
JVDB_API int jvdb_backup_follow(jvdb_db *replica, jvdb_repo *repo, jvdb_follow_result *out);
/* jvdb_backup_follow with options (opts NULL: the same as it). */
JVDB_API int jvdb_backup_follow_ex(jvdb_db *replica, jvdb_repo *repo, const jvdb_follow_options *opts,
                                   jvdb_follow_result *out);
/* Whether db is a replica: JVDB_OK with the source database's name and incarnation (either may be
 * NULL), or JVDB_ENOTFOUND. */
JVDB_API int jvdb_backup_replica_of(jvdb_db *db, char source[JVDB_MAX_NAME_LEN + 1], int64_t *incarnation);
/* Turns a replica into a primary (persisted): it stops being continued by jvdb_backup_follow and is
 * a database of its own from then on (its own incarnation: its backups and log begin with a full
 * backup).  A primary is left as it is. */
JVDB_API int jvdb_backup_promote(jvdb_db *db);

/* Fences the primary that ships the log of db_name to the repository: takes its lease for this
 * process with the next epoch, whoever holds it, so that primary stops shipping at its next
 * shipment (jvdb_backup_ship: fenced).  For a promote; *epoch (optional) is the new epoch.  The
 * lease is written released (renewed_ns 0), so the promoted server's own shipper takes it (with the
 * epoch after) without waiting out a lease time. */
JVDB_API int jvdb_backup_fence(jvdb_repo *repo, const char *db_name, uint64_t *epoch);

/* ---- restore drills ---- */

typedef struct jvdb_drill_options {
    const char *backup_id;            /* NULL = the database's newest restorable backup */
    const char *scratch_dir;          /* where the scratch environment is made (NULL = $TMPDIR or /tmp) */
    uint32_t queries;                 /* sampled searches, 0..1000 (20) */
    jvdb_backup_progress_fn progress; /* of the restore */
    void *progress_arg;
} jvdb_drill_options;

typedef struct jvdb_drill_report {
    char backup_id[JVDB_BACKUP_ID_MAX];
    uint64_t backup_lsn; /* the point restored */
    int64_t backup_created_ns;
    double restore_seconds, check_seconds;
    uint64_t restored_vectors; /* live vectors in the restored database */
    int source_unchanged;      /* the source's last LSN is the backup's: every check is strict */
    uint64_t checked_records;  /* source records at or before the backup LSN restored identically */
    uint64_t changed_since;    /* source records written after the backup (not comparable) */
    uint64_t missing;          /* source records at or before the backup LSN not restored */
    uint64_t differing;        /* ... restored with another LSN, other vector bits or metadata */
    uint64_t not_in_source;    /* restored records the source no longer has (deleted since the
                                    backup; a failure when the source is unchanged) */
    int settings_match;
    char settings_diff[256];
    uint32_t queries;          /* sampled searches run on the restored database */
    uint32_t queries_compared; /* ... also run on the source (only when it is unchanged) */
    uint32_t queries_equal;    /* ... with the same answer */
    double index_recall;       /* restored index top-10 against the restored exact scan */
    int restore_failed;        /* the restore itself failed (failure says why): nothing was checked */
    int passed;
    char failure[512]; /* why it did not pass */
} jvdb_drill_report;

JVDB_API void jvdb_drill_options_init(jvdb_drill_options *o);

/* Restore drill: restores a backup of database `db_name` (by default its newest restorable one) into
 * a scratch environment of its own, then checks it -- the count the restore reported, the settings,
 * every record against `source` (optional: the live database; records written after the backup are
 * counted, not compared), sampled exact searches against the source when it has not changed since
 * the backup, and the restored index's recall -- and fills *report (passed, or why not).  Returns
 * JVDB_OK when the drill ran, whatever its verdict (a restore that fails is a failed drill:
 * report->restore_failed); an error only when it could not run (no backup of that database, bad
 * options, no scratch directory).  Never writes to the source or the
 * repository; the scratch environment is removed before returning. */
JVDB_API int jvdb_backup_drill(jvdb_repo *repo, const char *db_name, jvdb_db *source, const jvdb_drill_options *opts,
                               jvdb_drill_report *report);

/* Deletes a backup; JVDB_EBUSY if others depend on it, unless cascade (then they go first).
 * *deleted (optional, free with jvdb_free) lists what was removed. */
JVDB_API int jvdb_backup_delete(jvdb_repo *repo, const char *id, int cascade, jvdb_backup_info **deleted,
                                size_t *count);

/* Keeps the newest `keep` restorable backups of a database and every backup they depend on;
 * deletes the rest (dependants before what they depend on, so nothing listed is ever broken). */
JVDB_API int jvdb_backup_prune(jvdb_repo *repo, const char *db_name, uint32_t keep, jvdb_backup_info **deleted,
                               size_t *count);

/* Retention as restic's `forget` keeps snapshots, over restorable backups, newest first: the newest
 * keep_last; the newest of each of the keep_daily most recent UTC days that have one; the newest of
 * each of the keep_weekly most recent ISO weeks (Monday to Sunday, UTC) that have one.  One backup
 * may satisfy several rules.  Every backup a kept one depends on is kept too; the rest (including
 * broken ones) go.  At least one rule must be non-zero.  dry_run: *deleted lists what would go,
 * and nothing is changed (not even leftovers of interrupted backups). */
typedef struct jvdb_prune_options {
    uint32_t keep_last, keep_daily, keep_weekly;
    int dry_run;
} jvdb_prune_options;
JVDB_API int jvdb_backup_prune_ex(jvdb_repo *repo, const char *db_name, const jvdb_prune_options *o,
                                  jvdb_backup_info **deleted, size_t *count);

/* ---- continuous backup: shipping the log (docs/FORMAT.md "Backup log objects") ----
 * Every acknowledged write goes to the repository as small log objects (every record with an LSN in
 * a range, whole batches, verbatim), continuing the database's backup chain; the chain plus the log
 * is the recovery history.  One primary ships per database and repository: it holds the fencing
 * lease <repo>/<database>/log/LEASE, and a primary that finds another owner there stops shipping. */

/* What a shipper keeps between shipments of one database: where the repository's log ends, the
 * lease it holds, and when the shipped LSN was last recorded in the MANIFEST.  One per database. */
typedef struct jvdb_shipper jvdb_shipper;
/* owner NULL: "<hostname>:<pid>:<16 hex random>". */
JVDB_API int jvdb_shipper_new(const char *owner, jvdb_shipper **out);
/* Releases the lease it holds (so a successor need not wait for it to expire; best effort, needs the
 * repository: NULL skips that) and frees the shipper. */
JVDB_API void jvdb_shipper_free(jvdb_shipper *s, jvdb_repo *repo, const char *db_name);

typedef struct jvdb_ship_options {
    jvdb_shipper *shipper;     /* NULL: a one-off shipment (finds the log's end by listing, takes the
                                * lease and releases it) */
    int64_t lease_ns;          /* lease time; 0 = 30 s.  Renewed at most every third of it */
    uint64_t max_object_bytes; /* record bytes per log object; 0 = 64 MiB (more makes several) */
    int level;                 /* zstd level, -7 (fastest) .. 19; 0 = -5 */
    uint64_t backlog_limit;    /* record bytes left unshipped past which a failed shipment gives the
                                * gap up (logged at error): the next one that reaches the repository
                                * takes an incremental backup instead; 0 = no limit */
    /* the description a backup the shipment makes carries (jvdb_backup_options.database_description) */
    const char *database_description;
    /* optional: told of every backup the shipment made (the first of an incarnation, or one covering
     * a gap), so a scheduler or counters see it like any other */
    void (*on_backup)(void *arg, const jvdb_backup_info *info);
    void *on_backup_arg;
    /* optional: the repository's lock, held only where the shipment changes the chain -- a backup it makes,
     * and starting a log on a bare backup until its first object lands -- never around plain log objects
     * (their names are unique per LSN range and epoch, so they race with nothing).  repo_lock returns 0 when
     * taken; non-zero defers that step: JVDB_EBUSY with out->deferred, nothing lost (the next call goes on).
     * repo_unlock is called once for every successful repo_lock. */
    int (*repo_lock)(void *arg);
    void (*repo_unlock)(void *arg);
    void *repo_lock_arg;
} jvdb_ship_options;

typedef struct jvdb_ship_result {
    uint64_t shipped_lsn;        /* the repository's log holds every write up to this LSN */
    uint64_t records, bytes;     /* shipped by this call: records, their bytes */
    uint64_t stored_bytes;       /* what the objects written take in the repository */
    uint32_t objects;            /* objects written */
    char object[160];            /* the last one, "<incarnation>/<...>.jvl" under <db>/log/ ("" none) */
    uint64_t pending_bytes;      /* record bytes acknowledged and not shipped (after this call) */
    int64_t oldest_unshipped_ns; /* time_ns of the oldest unshipped write, 0 when none */
    double lag_seconds;          /* its age when the call returned (0 when nothing is pending) */
    int fenced;                  /* another owner holds the lease: nothing was shipped */
    int overflow;                /* the backlog passed backlog_limit: the gap will be an incremental */
    int deferred;                /* repo_lock was busy: a backup (or a log's start) waits for the next call */
    char note[256];              /* e.g. "no backup of this incarnation: made a full backup first" */
} jvdb_ship_result;

/* Ships everything acknowledged and not yet shipped (up to the database's visible LSN when called)
 * as one log object, or several of at most max_object_bytes each, or nothing; writers never wait
 * for it (the records are read from the segments inside a read section).  The log continues from
 * where the repository's log of this database incarnation ends; when it has none, from the newest
 * backup of this incarnation, and when there is none, a full backup is made first.  When the
 * records after that point are no longer all in the database (compacted away before shipping
 * started, or given up past backlog_limit), an incremental backup is made and the log continues
 * from it (out->note says so).  A failure leaves no gap and no duplicate: the next call finds the
 * log's end again.  Another owner holding the lease: JVDB_EBUSY naming it (out->fenced).  *out is
 * filled in every case (pending bytes and age even when the repository is unreachable). */
JVDB_API int jvdb_backup_ship(jvdb_db *db, jvdb_repo *repo, const jvdb_ship_options *opts, jvdb_ship_result *out);
/* Retention by time (`serve --backup-retention D`): everything that only serves restores to points
 * before window_start_ns goes -- backups made before it, and log objects whose last write is before
 * it and whose records the newest backup made before it already holds ("covered by a newer
 * backup") -- except that newest backup and its whole chain, from which every point inside the
 * window can still be restored.  Without a backup from before the window nothing goes.  dry_run:
 * only counts. */
typedef struct jvdb_retention_result {
    uint64_t log_objects_deleted;
    uint64_t log_objects_covered; /* of them, of the base backup's own incarnation */
    uint64_t backups_deleted;
} jvdb_retention_result;
JVDB_API int jvdb_backup_retain(jvdb_repo *repo, const char *db_name, int64_t window_start_ns, int dry_run,
                                jvdb_retention_result *out);

/* Shipping is off for `db`: removes the shipped LSN its MANIFEST keeps (key "log_shipping"), so
 * compaction no longer keeps records for a log nobody ships.  JVDB_OK when there was none. */
JVDB_API int jvdb_backup_ship_forget(jvdb_db *db);
/* ==== end of backups ====================================================================== */

#ifdef __cplusplus
}
#endif
#endif

/*
 * bench_sqlite_ingest.c — owns the SQLite peer of the ingest measurement of issue 2: the same
 * generated vectors stored as BLOB rows of `(id TEXT PRIMARY KEY, vec BLOB)` in WAL mode with
 * synchronous=FULL, one transaction per batch through one prepared statement.
 *
 * This is the configuration an application developer would pick for durable bulk loading with
 * SQLite (every COMMIT fsyncs the WAL, as sync=always fdatasyncs every jvdb batch), so the ratio
 * compares like with like.  Everything else (page size, cache size, auto-checkpoint at 1000 pages)
 * stays at SQLite's defaults, which the result line reports.
 *
 * Output: one JSON object on stdout, which bench/run-ingest parses.
 */
#include "bench_util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void sq_check(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        bench_die(0, "sqlite %s: %s", what, sqlite3_errmsg(db));
}

static void sq_exec(sqlite3 *db, const char *sql) { sq_check(db, sqlite3_exec(db, sql, NULL, NULL, NULL), sql); }

static long long sq_pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    sq_check(db, sqlite3_prepare_v2(db, sql, -1, &st, NULL), sql);
    long long v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_sqlite_ingest --dir DIR [options]   import into DIR/bench.sqlite\n%s",
            bench_common_usage());
    exit(2);
}

int main(int argc, char **argv)
{
    bench_opts o;
    bench_opts_default(&o);
    for (int i = 1; i < argc; i++)
        if (!bench_parse_common(argc, argv, &i, &o)) usage();
    if (!o.dir) usage();
    /* SQLite's schema has no metadata column; storing metadata would make the rows differ. */
    if (strcmp(o.meta, "none") != 0) bench_die(0, "the SQLite peer stores no metadata: use --meta none");
    bench_make_dir(o.dir);

    char path[4096], wal[4200];
    snprintf(path, sizeof path, "%s/bench.sqlite", o.dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(path);
    unlink(wal);

    bench_data d;
    bench_data_make(&o, &d);

    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) bench_die(0, "cannot open %s: %s", path, sqlite3_errmsg(db));
    sq_exec(db, "PRAGMA journal_mode=WAL");
    sq_exec(db, "PRAGMA synchronous=FULL");
    sq_exec(db, "CREATE TABLE vectors (id TEXT PRIMARY KEY, vec BLOB)");
    sqlite3_stmt *ins;
    sq_check(db, sqlite3_prepare_v2(db, "INSERT INTO vectors (id, vec) VALUES (?1, ?2)", -1, &ins, NULL), "prepare");
    sqlite3_stmt *begin, *commit;
    sq_check(db, sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL), "prepare BEGIN");
    sq_check(db, sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL), "prepare COMMIT");

    uint64_t nbatches = (d.n + o.batch - 1) / o.batch;
    double *lat = calloc(nbatches, sizeof *lat);
    if (!lat) bench_die(0, "out of memory");
    int vbytes = (int)(d.dim * sizeof(float));

    bench_region reg;
    bench_region_begin(&reg);
    for (uint64_t b = 0; b < nbatches; b++) {
        double tb = bench_now();
        uint64_t first = b * o.batch, end = first + o.batch < d.n ? first + o.batch : d.n;
        sq_check(db, sqlite3_step(begin), "BEGIN");
        sqlite3_reset(begin);
        for (uint64_t r = first; r < end; r++) {
            /* SQLITE_STATIC: the data set outlives the statement, so SQLite need not copy it. */
            sqlite3_bind_text(ins, 1, d.ids[r], -1, SQLITE_STATIC);
            sqlite3_bind_blob(ins, 2, d.vectors + r * d.dim, vbytes, SQLITE_STATIC);
            sq_check(db, sqlite3_step(ins), "INSERT");
            sqlite3_reset(ins);
        }
        sq_check(db, sqlite3_step(commit), "COMMIT");
        sqlite3_reset(commit);
        lat[b] = bench_now() - tb;
    }
    bench_region_end(&reg);
    double secs = reg.seconds;

    uint64_t db_bytes = bench_file_size(path), wal_bytes = bench_file_size(wal);
    long long count = sq_pragma_int(db, "SELECT count(*) FROM vectors");
    long long page_size = sq_pragma_int(db, "PRAGMA page_size");
    long long autockpt = sq_pragma_int(db, "PRAGMA wal_autocheckpoint");
    sqlite3_finalize(ins);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    /* Closing checkpoints the WAL into the database: deferred work, timed apart from ingest. */
    double tc = bench_now();
    sqlite3_close(db);
    double close_s = bench_now() - tc;

    bench_json_begin();
    bench_json_str("engine", "sqlite");
    bench_json_str("mode", "ingest");
    bench_json_common(&o, &d);
    bench_json_str("sqlite_version", sqlite3_libversion());
    bench_json_str("settings", "journal_mode=WAL synchronous=FULL");
    bench_json_int("page_size", page_size);
    bench_json_int("wal_autocheckpoint", autockpt);
    bench_json_region(&reg);
    bench_json_num("vectors_per_s", (double)d.n / secs);
    bench_json_int("db_bytes", (long long)db_bytes);
    bench_json_int("wal_bytes", (long long)wal_bytes);
    bench_json_int("final_bytes", (long long)bench_file_size(path));
    bench_json_num("close_s", close_s);
    bench_json_num("batch_p50_ms", 1e3 * bench_percentile(lat, nbatches, 50));
    bench_json_num("batch_p99_ms", 1e3 * bench_percentile(lat, nbatches, 99));
    bench_json_num("batch_max_ms", 1e3 * bench_percentile(lat, nbatches, 100));
    bench_json_int("count", count);
    int ok = count >= 0 && (uint64_t)count == d.n;
    bench_json_str("verify", ok ? "ok" : "FAILED");
    bench_json_end();
    free(lat);
    bench_data_free(&d);
    return ok ? 0 : 1;
}

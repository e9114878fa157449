/*
 * bench_sqlite_vacuum.c — owns the SQLite peer of issue 4's compaction measurement: the same
 * generated rows as bench_compact, stored as BLOBs in `(id TEXT PRIMARY KEY, vec BLOB)` (the schema
 * of the ingest peer), the same rows deleted (bench_compact.h), then `VACUUM` timed.
 *
 * Settings: SQLite's defaults for a file database — rollback journal (journal_mode=DELETE) and
 * synchronous=FULL — because that is the VACUUM people run, and it syncs its result like jvdb's
 * compaction fsyncs its output.  The load itself runs with synchronous=OFF in large transactions:
 * it is not measured.  Before the timed VACUUM the file is fsynced and the whole file system's dirty
 * pages are flushed (syncfs), as bench_compact does before compacting.
 *
 * Output: one JSON object on stdout, which bench/run-compact parses.
 */
#include "bench_compact.h"
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void sqv_check(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        bench_die(0, "sqlite %s: %s", what, sqlite3_errmsg(db));
}

static void sqv_exec(sqlite3 *db, const char *sql) { sqv_check(db, sqlite3_exec(db, sql, NULL, NULL, NULL), sql); }

static long long sqv_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    sqv_check(db, sqlite3_prepare_v2(db, sql, -1, &st, NULL), sql);
    long long v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

/* Runs `sql` once per row for which want(row) holds, `batch` rows per transaction. */
static void sqv_per_row(sqlite3 *db, const bench_opts *o, const bench_data *d, const char *sql, int binds_vec,
                        double frac, int deleted)
{
    sqlite3_stmt *st;
    sqv_check(db, sqlite3_prepare_v2(db, sql, -1, &st, NULL), sql);
    int vbytes = (int)(d->dim * sizeof(float));
    uint64_t in_tx = 0;
    sqv_exec(db, "BEGIN");
    for (uint64_t r = 0; r < d->n; r++) {
        if (frac >= 0 && bench_cd_deleted(o->data.seed, r, frac) != deleted) continue;
        sqlite3_bind_text(st, 1, d->ids[r], -1, SQLITE_STATIC);
        if (binds_vec) sqlite3_bind_blob(st, 2, d->vectors + r * d->dim, vbytes, SQLITE_STATIC);
        sqv_check(db, sqlite3_step(st), sql);
        sqlite3_reset(st);
        if (++in_tx == o->batch) {
            sqv_exec(db, "COMMIT");
            sqv_exec(db, "BEGIN");
            in_tx = 0;
        }
    }
    sqv_exec(db, "COMMIT");
    sqlite3_finalize(st);
}

static void sqv_usage(void)
{
    fprintf(stderr,
            "usage: bench_sqlite_vacuum --dir DIR [options]   builds DIR/vacuum.sqlite, deletes, VACUUMs\n"
            "%s"
            "  --delete-frac F   fraction of the rows deleted before VACUUM (default 0.4)\n",
            bench_common_usage());
    exit(2);
}

int main(int argc, char **argv)
{
    bench_opts o;
    bench_opts_default(&o);
    o.batch = 100000; /* load transactions: big, the load is not measured */
    double frac = 0.4;
    for (int i = 1; i < argc; i++) {
        if (bench_parse_common(argc, argv, &i, &o)) continue;
        if (!strcmp(argv[i], "--delete-frac") && i + 1 < argc) {
            char *end;
            frac = strtod(argv[++i], &end);
            if (*end || !(frac >= 0 && frac <= 1)) bench_die(0, "bad value '%s' for --delete-frac", argv[i]);
            continue;
        }
        sqv_usage();
    }
    if (!o.dir) sqv_usage();
    if (strcmp(o.meta, "none") != 0) bench_die(0, "the SQLite peer stores no metadata: use --meta none");
    bench_make_dir(o.dir);

    char path[4096], journal[4200];
    snprintf(path, sizeof path, "%s/vacuum.sqlite", o.dir);
    snprintf(journal, sizeof journal, "%s-journal", path);
    unlink(path);
    unlink(journal);

    bench_data d;
    bench_data_make(&o, &d);

    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) bench_die(0, "cannot open %s: %s", path, sqlite3_errmsg(db));
    sqv_exec(db, "PRAGMA synchronous=OFF");
    sqv_exec(db, "CREATE TABLE vectors (id TEXT PRIMARY KEY, vec BLOB)");
    double t0 = bench_now();
    sqv_per_row(db, &o, &d, "INSERT INTO vectors (id, vec) VALUES (?1, ?2)", 1, -1, 0);
    double load_s = bench_now() - t0;
    t0 = bench_now();
    sqv_per_row(db, &o, &d, "DELETE FROM vectors WHERE id = ?1", 0, frac, 1);
    double delete_s = bench_now() - t0;
    long long live = sqv_int(db, "SELECT count(*) FROM vectors");
    long long page_size = sqv_int(db, "PRAGMA page_size");
    long long pages_before = sqv_int(db, "PRAGMA page_count");
    long long free_before = sqv_int(db, "PRAGMA freelist_count");
    uint64_t bytes_before = bench_file_size(path);

    /* The measured configuration, and nothing of ours left dirty before the clock starts. */
    sqv_exec(db, "PRAGMA synchronous=FULL");
    sqv_exec(db, "PRAGMA journal_mode=DELETE");
    int fd = open(path, O_RDONLY);
    if (fd < 0) bench_die(errno, "cannot open %s", path);
    fsync(fd);
    syncfs(fd);
    close(fd);

    bench_region reg;
    bench_region_begin(&reg);
    sqv_exec(db, "VACUUM");
    bench_region_end(&reg);

    uint64_t bytes_after = bench_file_size(path);
    long long live_after = sqv_int(db, "SELECT count(*) FROM vectors");
    long long integrity = sqv_int(db, "SELECT count(*) FROM pragma_quick_check WHERE quick_check <> 'ok'");
    sqlite3_close(db);
    int ok = live_after == live && integrity == 0;

    bench_json_begin();
    bench_json_str("engine", "sqlite");
    bench_json_str("phase", "vacuum");
    bench_json_common(&o, &d);
    bench_json_num("delete_frac", frac);
    bench_json_str("sqlite_version", sqlite3_libversion());
    bench_json_str("settings", "journal_mode=DELETE synchronous=FULL (load: synchronous=OFF)");
    bench_json_int("page_size", page_size);
    bench_json_int("live", live);
    bench_json_int("deleted", (long long)d.n - live);
    bench_json_num("load_s", load_s);
    bench_json_num("delete_s", delete_s);
    bench_json_int("pages_before", pages_before);
    bench_json_int("freelist_before", free_before);
    bench_json_int("bytes_before", (long long)bytes_before);
    bench_json_int("bytes_after", (long long)bytes_after);
    bench_json_int("bytes_reclaimed", (long long)bytes_before - (long long)bytes_after);
    bench_json_num("vacuum_s", reg.seconds);
    bench_json_num("vacuum_user_s", reg.user_s);
    bench_json_num("vacuum_sys_s", reg.sys_s);
    bench_json_int("vacuum_involuntary_cs", reg.invol_cs);
    bench_json_int("vacuum_proc_write_bytes", reg.write_bytes);
    bench_json_str("verify", ok ? "ok" : "FAILED");
    bench_json_end();
    bench_data_free(&d);
    unlink(path);
    return ok ? 0 : 1;
}

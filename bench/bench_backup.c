/*
 * bench_backup.c — the library half of issue 5's backup measurement; bench/run-backup drives it
 * step by step and runs the peers (tar | zstd -1 | sha256sum, restic) between the steps, on the
 * same data directory.
 *
 *   bench_backup load    --dir DIR [data options]        create database "bench" from datagen
 *   bench_backup backup  --dir DIR --repo R [--type T] [--level L] [--threads N]
 *   bench_backup change  --dir DIR --frac F [data options]  overwrite F/2, delete F/2 of the rows
 *   bench_backup restore --dir DIR --repo R --id ID       restore the chain as "restored"
 *   bench_backup restore --dir DIR --repo R --database bench [--to-lsn N]
 *                                                        point-in-time restore (issue 13): latest,
 *                                                        or the batches up to LSN N
 *   bench_backup ship    --dir DIR --repo R              ship the log (jvdb_backup_ship) once
 *
 * change --offset K changes the rows a change with K before it did not (rounds of changes).
 *
 * Each step prints one JSON line.  Only the operation itself is timed: opening the data directory
 * (which rebuilds the keydir) and generating data happen before the clock starts, as they would
 * in a server that is already running.  The data directory is DIR/data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "jvdb.h"
#include "store/record.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_backup load|backup|change|restore --dir DIR [options]\n%s"
            "  --repo R          backup repository (backup, restore)\n"
            "  --type T          full | incremental | differential (backup; default full)\n"
            "  --level L         zstd level (backup; default 1)\n"
            "  --threads N       zstd workers (backup; default 0)\n"
            "  --frac F          share of rows changed (change; default 0.01)\n"
            "  --id ID           backup to restore (restore)\n"
            "  --database NAME   point-in-time restore of NAME (restore; with --to-lsn N or latest)\n"
            "  --offset K        skip the rows K earlier changes changed (change)\n",
            bench_common_usage());
    exit(2);
}

static void die_lib(const char *what, int rc) { bench_die(0, "%s: %s (%s)", what, jvdb_errmsg(), jvdb_strerror(rc)); }

static jvdb_env *open_env(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data", dir);
    jvdb_env *env;
    int rc = jvdb_env_open(path, &env);
    if (rc) die_lib("open data directory", rc);
    return env;
}

static void step_load(const bench_opts *o)
{
    bench_make_dir(o->dir);
    bench_data d;
    bench_data_make(o, &d);
    jvdb_env *env = open_env(o->dir);
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, d.dim);
    dbo.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    int rc = jvdb_db_create(env, "bench", &dbo, &db);
    if (rc) die_lib("create database", rc);
    double t0 = bench_now();
    jvdb_record *batch = malloc(o->batch * sizeof *batch);
    for (uint64_t i = 0; i < d.n; i += o->batch) {
        size_t k = 0;
        for (uint64_t r = i; r < d.n && k < o->batch; r++, k++)
            batch[k] = (jvdb_record){ d.ids[r], d.vectors + r * d.dim, d.dim, d.metas ? d.metas[r] : NULL };
        if ((rc = jvdb_put_batch(db, batch, k, NULL))) die_lib("put batch", rc);
    }
    if ((rc = jvdb_sync(db))) die_lib("sync", rc);
    double secs = bench_now() - t0;
    free(batch);
    jvdb_env_close(env);
    bench_json_begin();
    bench_json_str("step", "load");
    bench_json_common(o, &d);
    bench_json_num("seconds", secs);
    bench_json_end();
    bench_data_free(&d);
}

static void step_backup(const bench_opts *o, const char *repo_spec, const char *type, int level, uint32_t threads)
{
    jvdb_env *env = open_env(o->dir);
    jvdb_db *db;
    int rc = jvdb_db_open(env, "bench", &db);
    if (rc) die_lib("open database", rc);
    jvdb_repo *repo;
    if ((rc = jvdb_repo_open(repo_spec, NULL, &repo))) die_lib("open repository", rc);
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    if (type && jvdb_backup_type_parse(type, &bo.type)) bench_die(0, "bad --type %s", type);
    bo.level = level;
    bo.threads = threads;
    jvdb_backup_info info;
    double t0 = bench_now();
    if ((rc = jvdb_backup_create(db, repo, &bo, &info))) die_lib("backup", rc);
    double secs = bench_now() - t0;
    jvdb_repo_close(repo);
    jvdb_env_close(env);
    bench_json_begin();
    bench_json_str("step", "backup");
    bench_json_str("id", info.id);
    bench_json_str("type", jvdb_backup_type_name(info.type));
    bench_json_num("seconds", secs);
    bench_json_int("raw_bytes", (long long)info.raw_bytes);
    bench_json_int("stored_bytes", (long long)info.stored_bytes);
    bench_json_int("puts", (long long)info.put_count);
    bench_json_int("deletes", (long long)info.delete_count);
    bench_json_int("level", level);
    bench_json_int("threads", threads);
    bench_json_end();
}

/* Overwrites half of the changed rows with fresh vectors of the same distribution and deletes the
 * other half; reports the raw size of the records that change writes (what an ideal incremental
 * holds). */
static void step_change(const bench_opts *o, double frac, uint64_t offset)
{
    dg_gen *g;
    if (dg_open(&o->data, &g)) bench_die(0, "datagen failed");
    jvdb_env *env = open_env(o->dir);
    jvdb_db *db;
    int rc = jvdb_db_open(env, "bench", &db);
    if (rc) die_lib("open database", rc);
    uint64_t n = o->data.n, changes = (uint64_t)((double)n * frac);
    uint32_t dim = o->data.dim;
    float *v = malloc(dim * sizeof *v);
    char id[32], meta[48];
    uint64_t raw = 0, puts = 0, dels = 0;
    double t0 = bench_now();
    for (uint64_t k = 0; k < changes; k++) {
        uint64_t row = ((k + offset) * 7919 + 13) % n; /* 7919 is prime: distinct rows */
        snprintf(id, sizeof id, "v%llu", (unsigned long long)row);
        if (k % 2 == 0) {
            uint32_t cl = dg_row(g, n + row, v);
            const char *m = NULL;
            if (!strcmp(o->meta, "small")) {
                snprintf(meta, sizeof meta, "{\"cluster\":%u}", cl);
                m = meta;
            }
            if ((rc = jvdb_put(db, id, v, dim, m, NULL))) die_lib("put", rc);
            raw += rec_size(dim, REC_KIND_PUT, strlen(id), m ? strlen(m) : 0);
            puts++;
        } else {
            if ((rc = jvdb_delete(db, id, NULL))) die_lib("delete", rc);
            raw += rec_size(dim, REC_KIND_DELETE, strlen(id), 0);
            dels++;
        }
    }
    if ((rc = jvdb_sync(db))) die_lib("sync", rc);
    double secs = bench_now() - t0;
    free(v);
    dg_close(g);
    jvdb_env_close(env);
    bench_json_begin();
    bench_json_str("step", "change");
    bench_json_num("seconds", secs);
    bench_json_int("overwrites", (long long)puts);
    bench_json_int("deletes", (long long)dels);
    bench_json_int("changed_raw_bytes", (long long)raw);
    bench_json_end();
}

static void step_restore(const bench_opts *o, const char *repo_spec, const char *bid, const char *dbname,
                         uint64_t to_lsn)
{
    jvdb_env *env = open_env(o->dir);
    jvdb_repo *repo;
    int rc = jvdb_repo_open(repo_spec, NULL, &repo);
    if (rc) die_lib("open repository", rc);
    jvdb_restore_result res;
    jvdb_restore_options ro = { .as_name = "restored", .force = 1, .result = &res, .database = dbname };
    ro.to_lsn = to_lsn;
    jvdb_db *db;
    double t0 = bench_now();
    if ((rc = jvdb_backup_restore(env, repo, dbname ? NULL : bid, &ro, &db))) die_lib("restore", rc);
    double secs = bench_now() - t0;
    uint64_t count = jvdb_count(db);
    if ((rc = jvdb_db_drop(env, "restored"))) die_lib("drop", rc);
    jvdb_repo_close(repo);
    jvdb_env_close(env);
    bench_json_begin();
    bench_json_str("step", "restore");
    bench_json_num("seconds", secs);
    bench_json_int("count", (long long)count);
    bench_json_int("lsn", (long long)res.lsn);
    bench_json_int("log_objects", (long long)res.log_objects);
    bench_json_int("log_records", (long long)res.log_records);
    bench_json_str("backup", res.backup.id);
    bench_json_end();
}

/* Ships what database "bench" has not shipped yet (one shipment). */
static void step_ship(const bench_opts *o, const char *repo_spec)
{
    jvdb_env *env = open_env(o->dir);
    jvdb_repo *repo;
    int rc = jvdb_repo_open(repo_spec, NULL, &repo);
    if (rc) die_lib("open repository", rc);
    jvdb_db *db;
    if ((rc = jvdb_db_open(env, "bench", &db))) die_lib("open database", rc);
    jvdb_ship_result r;
    double t0 = bench_now();
    if ((rc = jvdb_backup_ship(db, repo, NULL, &r))) die_lib("ship", rc);
    double secs = bench_now() - t0;
    jvdb_repo_close(repo);
    jvdb_env_close(env);
    bench_json_begin();
    bench_json_str("step", "ship");
    bench_json_num("seconds", secs);
    bench_json_int("shipped_lsn", (long long)r.shipped_lsn);
    bench_json_int("records", (long long)r.records);
    bench_json_int("stored_bytes", (long long)r.stored_bytes);
    bench_json_end();
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    const char *step = argv[1];
    bench_opts o;
    bench_opts_default(&o);
    const char *repo = NULL, *type = NULL, *bid = NULL, *dbname = NULL;
    uint64_t to_lsn = 0, offset = 0;
    int level = 1;
    uint32_t threads = 0;
    double frac = 0.01;
    for (int i = 2; i < argc; i++) {
        if (bench_parse_common(argc, argv, &i, &o)) continue;
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        if (!strcmp(a, "--repo")) repo = argv[++i];
        else if (!strcmp(a, "--type")) type = argv[++i];
        else if (!strcmp(a, "--id")) bid = argv[++i];
        else if (!strcmp(a, "--level")) level = atoi(argv[++i]);
        else if (!strcmp(a, "--threads")) threads = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(a, "--frac")) frac = atof(argv[++i]);
        else if (!strcmp(a, "--database")) dbname = argv[++i];
        else if (!strcmp(a, "--to-lsn")) to_lsn = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--offset")) offset = strtoull(argv[++i], NULL, 10);
        else usage();
    }
    if (!o.dir) usage();
    if (!strcmp(step, "load")) step_load(&o);
    else if (!strcmp(step, "backup") && repo) step_backup(&o, repo, type, level, threads);
    else if (!strcmp(step, "change")) step_change(&o, frac, offset);
    else if (!strcmp(step, "restore") && repo && (bid || dbname)) step_restore(&o, repo, bid, dbname, to_lsn);
    else if (!strcmp(step, "ship") && repo) step_ship(&o, repo);
    else usage();
    return 0;
}

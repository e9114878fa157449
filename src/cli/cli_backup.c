/*
 * cli_backup.c — the `jvdb backup` group: create, list, show, verify, restore, delete, prune
 * (docs/ARCHITECTURE.md 7, issue 5), a thin layer over the backups section of jvdb.h.
 *
 * Every subcommand takes --repo (a directory or s3://bucket/prefix; default $JVDB_BACKUP_REPO)
 * and, for S3, --endpoint/--region/--access-key/--secret-key, which fall back to the standard AWS_*
 * environment variables inside the library.  Only create and restore open the data directory, so
 * list/show/verify/delete/prune work on a repository from any machine, even while a server holds
 * the data directory.  Long operations draw a progress bar when stderr is a terminal.
 *
 * A backup carries the database's settings, including the description the server keeps for it in
 * <data>/server/<name>.json (src/server/dbmeta.c), so create reads that file and restore writes it
 * back (atomically, like the server; the server is not running, since the CLI holds the data
 * directory's lock).
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include "core/clock.h"
#include "core/fs.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const struct cli_cmd cli_cmd_backup = {
    "backup",
    "Usage: jvdb [--data DIR] backup SUBCOMMAND ... --repo R\n"
    "\n"
    "  backup create NAME --repo R [--type full|incremental|differential] [--description TEXT]\n"
    "                [--level N] [--threads N] [--no-index]\n"
    "  backup list [NAME] --repo R\n"
    "  backup show ID --repo R\n"
    "  backup verify (ID | --all | --database NAME) --repo R\n"
    "  backup restore (ID | --database NAME [--to-time T | --to-lsn N | --latest] | --all) --repo R\n"
    "                 [--as NEWNAME] [--force]\n"
    "  backup delete ID --repo R [--cascade]\n"
    "  backup prune NAME --repo R [--keep N] [--keep-daily N] [--keep-weekly N] [--dry-run]\n"
    "  backup drill --database NAME --repo R [--backup ID] [--scratch DIR] [--queries N] [--no-source]\n"
    "\n"
    "R is a directory or s3://bucket/prefix (default: $JVDB_BACKUP_REPO).  For S3 also:\n"
    "  --endpoint URL --region REGION --access-key KEY --secret-key SECRET\n"
    "(default: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).\n"
    "--repo-key-file F (default: $JVDB_REPO_KEY_FILE): the repository's key; with it, archives are\n"
    "encrypted (AES-256-GCM) and metadata signed.  An encrypted repository needs it for every\n"
    "subcommand; a plain one that holds backups refuses it.\n"
    "ID is a backup id (YYYYMMDDTHHMMSSZ-TYPE-N) or DATABASE/ID.  Every subcommand takes --json.\n"
    "Only create makes a repository; on a missing one the others say \"repository R does not\n"
    "exist\" and create nothing.\n",
    1, -1
};

#define CLI_REPO_OPTS                                                                                           \
    { "repo", true, NULL }, { "endpoint", true, NULL }, { "region", true, NULL }, { "access-key", true, NULL }, \
        { "secret-key", true, NULL },                                                                           \
    {                                                                                                           \
        "repo-key-file", true, NULL                                                                             \
    }
enum { O_REPO, O_ENDPOINT, O_REGION, O_ACCESS, O_SECRET, O_KEYFILE, O_FIRST_OWN };

static const struct cli_cmd cli_cmd_backup_create = {
    "backup create",
    "Usage: jvdb [--data DIR] backup create NAME --repo R [options] [--json]\n"
    "\n"
    "Backs up database NAME while it stays available for reads and writes.\n"
    "\n"
    "  --type T          full (default), incremental (changes since the previous backup) or\n"
    "                    differential (changes since the last full backup).  When the parent it\n"
    "                    needs is gone or no longer exact, a full backup is made and says why.\n"
    "  --description S   free text stored with the backup\n"
    "  --level N         zstd level 1..19 (default 1)\n"
    "  --threads N       zstd worker threads (default 0: compress in the main thread)\n"
    "  --no-index        leave the HNSW graph out (by default a filesystem repository keeps it, so a\n"
    "                    restore answers HNSW searches at once instead of rebuilding the graph)\n",
    1, 1
};

static const struct cli_cmd cli_cmd_backup_list = {
    "backup list",
    "Usage: jvdb backup list [NAME] --repo R [--json]\n"
    "\n"
    "Lists the backups of database NAME (or of every database), oldest first: id, type, parent,\n"
    "time, records, stored bytes and status (\"ok\" or why it cannot be restored); then each\n"
    "database's restorable window: the earliest and latest point (time and LSN) a restore --database\n"
    "can reach, from its oldest restorable backup to the end of the log after its backups (JSON:\n"
    "\"windows\").\n",
    0, 1
};

static const struct cli_cmd cli_cmd_backup_show = {
    "backup show",
    "Usage: jvdb backup show ID --repo R [--json]\n"
    "\n"
    "Prints everything backup.json records about backup ID, and whether it can be restored.\n",
    1, 1
};

static const struct cli_cmd cli_cmd_backup_verify = {
    "backup verify",
    "Usage: jvdb backup verify (ID | --all | --database NAME) --repo R [--json]\n"
    "\n"
    "Checks backup ID and every backup it depends on: metadata, parent links, the SHA-256 of\n"
    "every archive, the checksum of every record, and every record's contents against the rules\n"
    "of put (id, metadata, finite vector).  Exit status 1 names the first bad backup.\n"
    "\n"
    "  --all             every backup of every database in the repository (each archive is read\n"
    "                    once per chain that needs it) and every database's log objects (continuous\n"
    "                    backup): each is read and checked, and the log is followed from every\n"
    "                    backup; an object that is bad or that no backup reaches (a gap) is named;\n"
    "                    prints one line per backup and per database's log, exit status 1 if any is bad\n"
    "  --database NAME   the same for one database\n",
    0, 1
};

static const struct cli_cmd cli_cmd_backup_restore = {
    "backup restore",
    "Usage: jvdb [--data DIR] backup restore ID --repo R [--as NEWNAME] [--force] [--json]\n"
    "       jvdb [--data DIR] backup restore --database NAME [--to-time T | --to-lsn N | --latest]\n"
    "                                        --repo R [--as NEWNAME] [--force] [--json]\n"
    "       jvdb [--data DIR] backup restore --all --repo R [--force]\n"
    "\n"
    "Verifies the chain of backup ID, then rebuilds the database from it beside the live ones and\n"
    "makes it appear in one step, with the settings the backup carries (metric, sync mode, index\n"
    "and compaction settings, description).  Nothing is written if verification fails.\n"
    "\n"
    "With --database, a point-in-time restore: the newest backup at or before the target, then the\n"
    "log objects continuous shipping (serve --backup-continuous) left after it, applied in whole\n"
    "batches up to the target: exactly the writes acknowledged by then, never part of a batch.\n"
    "`backup list` shows each database's restorable window; a target outside it is an error.\n"
    "\n"
    "  --as NAME      restore under another name, [A-Za-z0-9_-]{1,64} (default: the backed-up\n"
    "                 database's name)\n"
    "  --force        replace an existing database of that name (atomically)\n"
    "  --latest       the newest point: the newest backup and every log object after it (the\n"
    "                 default with --database)\n"
    "  --to-time T    the writes acknowledged at or before T, RFC 3339 (\"2026-11-29T21:00:00.5Z\",\n"
    "                 fractional seconds and offsets allowed)\n"
    "  --to-lsn N     the batches whose last LSN is at most N\n"
    "  --all          every database in the repository at its newest point (after a disaster):\n"
    "                 goes on past a failure, reports each, exit status 1 if any failed\n",
    0, 1
};

static const struct cli_cmd cli_cmd_backup_delete = {
    "backup delete",
    "Usage: jvdb backup delete ID --repo R [--cascade] [--json]\n"
    "\n"
    "Deletes backup ID.  Refuses when other backups depend on it, unless --cascade, which deletes\n"
    "those too (newest first, so no listed backup is ever left without its parent).\n",
    1, 1
};

static const struct cli_cmd cli_cmd_backup_prune = {
    "backup prune",
    "Usage: jvdb backup prune NAME --repo R [--keep N] [--keep-daily N] [--keep-weekly N] [--dry-run]\n"
    "                         [--json]\n"
    "\n"
    "Keeps restorable backups of database NAME by the rules given (at least one; as restic's\n"
    "forget), and every backup they depend on, and deletes the others (including broken ones):\n"
    "\n"
    "  --keep N          the newest N\n"
    "  --keep-daily N    the newest of each of the last N days (UTC) that have a backup\n"
    "  --keep-weekly N   the newest of each of the last N ISO weeks (UTC) that have a backup\n"
    "  --dry-run         print what would be deleted; change nothing\n",
    1, 1
};

static const struct cli_cmd cli_cmd_backup_drill = {
    "backup drill",
    "Usage: jvdb [--data DIR] backup drill --database NAME --repo R [--backup ID] [--scratch DIR]\n"
    "                                      [--queries N] [--no-source] [--json]\n"
    "\n"
    "Proves that the newest backup of database NAME restores: restores it (the whole chain) into a\n"
    "scratch directory, then checks the vector count, the settings, every record against the live\n"
    "database in --data (same LSN, vector bits and metadata for every record written up to the\n"
    "backup; later writes are counted, not compared), N sampled exact searches against the live\n"
    "database when it has not changed since the backup, and the restored index's recall.  Prints\n"
    "pass or fail with the figures; exit status 1 when the drill fails.  Changes nothing: the live\n"
    "database is opened read-only, the scratch directory is removed.\n"
    "\n"
    "  --backup ID     drill this backup instead of the newest restorable one\n"
    "  --scratch DIR   where the scratch directory is made (default: $TMPDIR or /tmp); it needs\n"
    "                  room for the restored database\n"
    "  --queries N     sampled searches (default 20, at most 1000)\n"
    "  --no-source     do not compare with a live database (e.g. on another machine)\n",
    0, 0
};

/* ------------------------------------------------------------------ shared pieces */

/* Opens the repository of --repo (else $JVDB_BACKUP_REPO) with the S3 endpoint, credentials and key file the
 * options give; a missing repository is a usage error. */
static int cli_repo_open(const struct cli_cmd *cmd, struct cli_opt *opts, jvdb_repo **repo)
{
    const char *spec = opts[O_REPO].value;
    if (!spec || !*spec) spec = getenv("JVDB_BACKUP_REPO");
    if (!spec || !*spec) return cli_usage_error(cmd->name, "--repo is required (a directory or s3://bucket/prefix)");
    jvdb_repo_options ro = { 0 };
    ro.endpoint = opts[O_ENDPOINT].value;
    ro.region = opts[O_REGION].value;
    ro.access_key = opts[O_ACCESS].value;
    ro.secret_key = opts[O_SECRET].value;
    ro.key_file = opts[O_KEYFILE].value;
    int rc = jvdb_repo_open(spec, &ro, repo);
    return rc ? cli_lib_error(rc) : 0;
}

/* One bar per phase (verify, then restore): the library reports bytes over the whole chain. */
struct cli_bk_progress {
    struct cli_progress bar;
    const char *phase;
    uint64_t done, records;
};

/* Progress callback of backup, verify, restore and drill: one bar per phase, the previous phase's bar finished when
 * the library moves to the next. */
static void cli_bk_on_progress(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records)
{
    struct cli_bk_progress *p = arg;
    if (!p->phase || strcmp(p->phase, phase)) {
        if (p->phase) cli_progress_finish(&p->bar, p->done, p->records);
        p->phase = phase;
        cli_progress_start(&p->bar,
                           !strcmp(phase, "verify")    ? "records verified"
                           : !strcmp(phase, "restore") ? "records restored"
                                                       : "records backed up",
                           total);
    }
    p->done = done;
    p->records = records;
    cli_progress_update(&p->bar, done, records);
}

/* Finishes the bar of the last phase, if any phase reported progress. */
static void cli_bk_progress_end(struct cli_bk_progress *p)
{
    if (p->phase) cli_progress_finish(&p->bar, p->done, p->records);
    p->phase = NULL;
}

/* A nanosecond wall-clock time as an ISO 8601 UTC timestamp. */
static void cli_format_time(int64_t ns, char *buf, size_t cap)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A byte count in binary units with one decimal ("1.5 MiB"); exact bytes below 1 KiB. */
static void cli_format_bytes(uint64_t b, char *buf, size_t cap)
{
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    if (i == 0) snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else snprintf(buf, cap, "%.1f %s", v, u[i]);
}

/* A backup as REST's backup object names it (backupId, lsnFrom, putCount, ...). */
static json_t *cli_backup_json(const jvdb_backup_info *b)
{
    char when[40];
    cli_format_time(b->created_ns, when, sizeof when);
    json_t *o = json_pack(
        "{sssssssosIsIsssIsIsIsIsssIsssisIsssIsbss}", "backupId", b->id, "databaseId", b->database, "type",
        jvdb_backup_type_name(b->type), "parent", b->parent[0] ? json_string(b->parent) : json_null(), "lsnFrom",
        (json_int_t)b->lsn_from, "lsnTo", (json_int_t)b->lsn_to, "createdAt", when, "putCount",
        (json_int_t)b->put_count, "deleteCount", (json_int_t)b->delete_count, "rawBytes", (json_int_t)b->raw_bytes,
        "storedBytes", (json_int_t)b->stored_bytes, "sha256", b->sha256, "vectorDimension", (json_int_t)b->dim,
        "distanceMetric", b->metric == JVDB_METRIC_L2 ? "euclidean" : jvdb_metric_name(b->metric), "compressionLevel",
        b->compression_level, "formatVersion", (json_int_t)b->format_version, "description", b->description,
        "chainLength", (json_int_t)b->chain_length, "restorable", b->restorable, "status", b->status);
    if (o && b->note[0]) json_object_set_new(o, "note", json_string(b->note));
    return o;
}

/* Prints one backup's manifest as aligned "key: value" lines (`backup show`). */
static void cli_backup_print(const jvdb_backup_info *b)
{
    char when[40], raw[32], stored[32];
    cli_format_time(b->created_ns, when, sizeof when);
    cli_format_bytes(b->raw_bytes, raw, sizeof raw);
    cli_format_bytes(b->stored_bytes, stored, sizeof stored);
    printf("id:            %s\n", b->id);
    printf("database:      %s\n", b->database);
    printf("type:          %s\n", jvdb_backup_type_name(b->type));
    printf("parent:        %s\n", b->parent[0] ? b->parent : "(none)");
    printf("lsn:           %llu..%llu\n", (unsigned long long)b->lsn_from, (unsigned long long)b->lsn_to);
    printf("created_at:    %s\n", when);
    printf("puts:          %llu\n", (unsigned long long)b->put_count);
    printf("deletes:       %llu\n", (unsigned long long)b->delete_count);
    printf("bytes:         %s raw, %s stored\n", raw, stored);
    printf("sha256:        %s\n", b->sha256);
    printf("dimension:     %u\n", b->dim);
    printf("metric:        %s\n", jvdb_metric_name(b->metric));
    printf("compression:   zstd level %d\n", b->compression_level);
    printf("description:   %s\n", b->description);
    printf("chain_length:  %u\n", b->chain_length);
    printf("status:        %s\n", b->status);
}

/* Through a server the repository is the server's (serve --backup-repo): one named here could be
 * another, so it is refused rather than silently replaced.  0, or the exit code after saying so. */
static int cli_bk_remote_repo(struct cli_ctx *ctx, const struct cli_cmd *cmd, const struct cli_opt *opts)
{
    for (int k = O_REPO; k < O_FIRST_OWN; k++)
        if (opts[k].value)
            return cli_fail("%s: through a server, backups use the server's repository (jvdb serve --backup-repo); "
                            "leave out --%s (to use repository options, stop the server)",
                            cmd->name, opts[k].name);
    (void)ctx;
    return 0;
}

/* Parses argv with the repository options in front of the command's own. */
static int cli_bk_parse(struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv, struct cli_opt *opts,
                        char **pos, int *npos, jvdb_repo **repo)
{
    int rc = cli_parse(ctx, cmd, argc, argv, opts, pos, npos);
    if (rc) return rc;
    *repo = NULL;
    if (ctx->remote) return cli_bk_remote_repo(ctx, cmd, opts);
    return cli_repo_open(cmd, opts, repo);
}

/* <data>/server/<name>.json, the server's metadata of a database (NULL on out of memory). */
static char *cli_bk_dbmeta_path(const struct cli_ctx *ctx, const char *name)
{
    char rel[JVDB_MAX_NAME_LEN + 16];
    snprintf(rel, sizeof rel, "server/%s.json", name);
    return fs_join(ctx->data_dir, rel);
}

/* The server's metadata of a database, or an empty object when there is none. */
static json_t *cli_bk_dbmeta_load(const struct cli_ctx *ctx, const char *name)
{
    char *path = cli_bk_dbmeta_path(ctx, name);
    json_t *doc = path && fs_exists(path) ? json_load_file(path, 0, NULL) : NULL;
    free(path);
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    return doc;
}

/* Writes the description a backup carried into the server's metadata, as the server does after
 * a restore; a failure is a warning (the database itself was restored). */
static void cli_bk_dbmeta_restore(const struct cli_ctx *ctx, const jvdb_restore_result *res)
{
    if (!res->database_description) return;
    json_t *doc = cli_bk_dbmeta_load(ctx, res->database);
    int64_t now = clock_wall_ns();
    char *dir = fs_join(ctx->data_dir, "server"), *path = cli_bk_dbmeta_path(ctx, res->database), *text = NULL;
    if (doc) {
        json_object_set_new(doc, "description", json_string(res->database_description));
        json_object_set_new(doc, "updated_ns", json_integer(now));
        if (!res->replaced || !json_is_integer(json_object_get(doc, "created_ns")))
            json_object_set_new(doc, "created_ns", json_integer(now));
        text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    }
    if (!text || !dir || !path || fs_mkdir(dir) || fs_replace_file(path, text, strlen(text), "cli.dbmeta"))
        fprintf(stderr, "jvdb: warning: the database's description could not be written to %s: %s\n",
                path ? path : "<data>/server", jvdb_errmsg());
    free(text);
    free(dir);
    free(path);
    json_decref(doc);
}

/* ------------------------------------------------------------------ subcommands */

/* `backup create NAME`: backs up one database into the repository, locally with a progress bar or through the
 * server (which takes neither --threads nor --no-index). */
static int cli_backup_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_backup_create;
    struct cli_opt opts[] = { CLI_REPO_OPTS,           { "type", true, NULL },    { "description", true, NULL },
                              { "level", true, NULL }, { "threads", true, NULL }, { "no-index", false, NULL },
                              { NULL, false, NULL } };
    enum { TYPE = O_FIRST_OWN, DESC, LEVEL, THREADS, NO_INDEX };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    if (opts[TYPE].value && jvdb_backup_type_parse(opts[TYPE].value, &bo.type))
        return cli_usage_error(cmd->name, "--type '%s' is not full, incremental or differential", opts[TYPE].value);
    uint64_t v;
    if (opts[LEVEL].value) {
        if (!cli_parse_u64(opts[LEVEL].value, &v) || v < 1 || v > 19)
            return cli_usage_error(cmd->name, "--level '%s' is not a number from 1 to 19", opts[LEVEL].value);
        bo.level = (int)v;
    }
    if (opts[THREADS].value) {
        if (!cli_parse_u64(opts[THREADS].value, &v) || v > 64)
            return cli_usage_error(cmd->name, "--threads '%s' is not a number from 0 to 64", opts[THREADS].value);
        bo.threads = (uint32_t)v;
    }
    bo.description = opts[DESC].value;
    bo.no_index = opts[NO_INDEX].value != NULL;
    jvdb_backup_info info;
    if (ctx->remote) {
        if ((rc = cli_bk_remote_repo(ctx, cmd, opts))) return rc;
        if (opts[THREADS].value || opts[NO_INDEX].value)
            return cli_fail("backup create: --threads and --no-index cannot be given through a server (its REST API "
                            "does not take them)");
        if ((rc = cli_remote_backup_create(ctx, pos[0], opts[TYPE].value, bo.description,
                                           opts[LEVEL].value ? bo.level : 0, &info)))
            return rc;
    } else {
        jvdb_repo *repo;
        if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
        jvdb_db *db;
        if ((rc = cli_open_db(ctx, pos[0], &db))) {
            jvdb_repo_close(repo);
            return rc;
        }
        struct cli_bk_progress pr = { 0 };
        bo.progress = cli_bk_on_progress;
        bo.progress_arg = &pr;
        json_t *dbmeta = cli_bk_dbmeta_load(ctx, jvdb_db_name(db));
        bo.database_description = json_string_value(json_object_get(dbmeta, "description"));
        rc = jvdb_backup_create(db, repo, &bo, &info);
        json_decref(dbmeta);
        cli_bk_progress_end(&pr);
        jvdb_repo_close(repo);
        if (rc) return cli_lib_error(rc);
    }
    if (info.note[0]) fprintf(stderr, "jvdb: note: %s\n", info.note);
    if (ctx->json) return cli_print_json(cli_backup_json(&info));
    char stored[32];
    cli_format_bytes(info.stored_bytes, stored, sizeof stored);
    printf("created %s backup %s of '%s': lsn %llu..%llu, %llu puts, %llu deletes, %s\n",
           jvdb_backup_type_name(info.type), info.id, info.database, (unsigned long long)info.lsn_from,
           (unsigned long long)info.lsn_to, (unsigned long long)info.put_count, (unsigned long long)info.delete_count,
           stored);
    return CLI_EXIT_OK;
}

/* The restorable window of every database with a restorable backup in v (listed oldest first per
 * database), as JSON objects; a database whose window cannot be computed is left out (warned). */
static json_t *cli_bk_windows(jvdb_repo *repo, const jvdb_backup_info *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n && arr; i++) {
        if (i + 1 < n && !strcmp(v[i + 1].database, v[i].database)) continue; /* once per database */
        int any = 0;
        for (size_t j = i + 1; j-- > 0 && !strcmp(v[j].database, v[i].database);) any |= v[j].restorable;
        if (!any) continue;
        jvdb_restore_window w;
        if (jvdb_backup_window(repo, v[i].database, &w)) {
            fprintf(stderr, "jvdb: warning: the restorable window of '%s': %s\n", v[i].database, jvdb_errmsg());
            continue;
        }
        char a[64], b[64];
        json_t *spans = json_array();
        for (uint32_t k = 0; k < w.nspans; k++) {
            const jvdb_restore_span *sp = &w.spans[k];
            clock_format_rfc3339(sp->earliest_time_ns, a, sizeof a);
            clock_format_rfc3339(sp->latest_time_ns, b, sizeof b);
            json_array_append_new(spans, json_pack("{sIsIssssss}", "earliestLsn", (json_int_t)sp->earliest_lsn,
                                                   "latestLsn", (json_int_t)sp->latest_lsn, "earliestTime", a,
                                                   "latestTime", b, "backup", sp->backup));
        }
        clock_format_rfc3339(w.earliest_time_ns, a, sizeof a);
        clock_format_rfc3339(w.latest_time_ns, b, sizeof b);
        json_array_append_new(arr,
                              json_pack("{sssIsssssIsIsIsIsssosI}", "databaseId", w.database, "incarnation",
                                        (json_int_t)w.incarnation, "earliestTime", a, "latestTime", b, "earliestLsn",
                                        (json_int_t)w.earliest_lsn, "latestLsn", (json_int_t)w.latest_lsn, "backups",
                                        (json_int_t)w.backups, "logObjects", (json_int_t)w.log_objects, "latestBackup",
                                        w.latest_backup, "spans", spans, "spansOmitted", (json_int_t)w.spans_omitted));
    }
    return arr;
}

/* Prints the restorable points of a window (JSON, as listed) before its contiguous span, if any:
 * backups without a log between them, or whose log retention or a log fold removed. */
static void cli_bk_print_spans(json_t *w)
{
    json_t *spans = json_object_get(w, "spans");
    long long omitted = (long long)json_integer_value(json_object_get(w, "spansOmitted"));
    if (json_array_size(spans) < 2 && !omitted) return;
    printf("  earlier restorable points (nothing between them can be restored):");
    if (omitted) printf(" %lld older span%s,", omitted, omitted == 1 ? "" : "s");
    for (size_t k = 0; k + 1 < json_array_size(spans); k++) {
        json_t *sp = json_array_get(spans, k);
        long long e = (long long)json_integer_value(json_object_get(sp, "earliestLsn")),
                  l = (long long)json_integer_value(json_object_get(sp, "latestLsn"));
        if (e == l) printf("%s LSN %lld (%s)", k ? "," : "", e, json_string_value(json_object_get(sp, "earliestTime")));
        else
            printf("%s LSN %lld..%lld (%s..%s)", k ? "," : "", e, l,
                   json_string_value(json_object_get(sp, "earliestTime")),
                   json_string_value(json_object_get(sp, "latestTime")));
    }
    printf("\n");
}

/* `backup list [NAME]`: the repository's backups (of one database, or all) as a table or JSON. */
static int cli_backup_list(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { CLI_REPO_OPTS, { NULL, false, NULL } };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_list, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    jvdb_backup_info *v;
    size_t n;
    json_t *windows = NULL;
    if (ctx->remote) {
        if ((rc = cli_remote_backup_list(ctx, npos ? pos[0] : NULL, &v, &n, &windows))) return rc;
    } else {
        rc = jvdb_backup_list(repo, npos ? pos[0] : NULL, &v, &n);
        if (rc) {
            jvdb_repo_close(repo);
            return cli_lib_error(rc);
        }
    }
    if (!ctx->remote) windows = cli_bk_windows(repo, v, n);
    jvdb_repo_close(repo);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, cli_backup_json(&v[i]));
        jvdb_free(v);
        json_t *doc = json_pack("{so}", "backups", arr);
        if (windows) json_object_set_new(doc, "windows", windows);
        return cli_print_json(doc);
    }
    if (n == 0) printf("no backups%s%s%s\n", npos ? " of '" : "", npos ? pos[0] : "", npos ? "'" : "");
    else
        printf("%-16s %-34s %-12s %-34s %-20s %10s %10s  %s\n", "DATABASE", "ID", "TYPE", "PARENT", "TIME", "RECORDS",
               "BYTES", "STATUS");
    for (size_t i = 0; i < n; i++) {
        char when[40], stored[32];
        cli_format_time(v[i].created_ns, when, sizeof when);
        cli_format_bytes(v[i].stored_bytes, stored, sizeof stored);
        printf("%-16s %-34s %-12s %-34s %-20s %10llu %10s  %s\n", v[i].database, v[i].id,
               jvdb_backup_type_name(v[i].type), v[i].parent[0] ? v[i].parent : "-", when,
               (unsigned long long)(v[i].put_count + v[i].delete_count), stored, v[i].status);
    }
    jvdb_free(v);
    for (size_t i = 0; i < json_array_size(windows); i++) {
        json_t *w = json_array_get(windows, i);
        printf("%srestorable window of '%s': %s..%s, LSN %lld..%lld (%lld backup%s, %lld log object%s to the "
               "latest point)\n",
               i ? "" : "\n", json_string_value(json_object_get(w, "databaseId")),
               json_string_value(json_object_get(w, "earliestTime")),
               json_string_value(json_object_get(w, "latestTime")),
               (long long)json_integer_value(json_object_get(w, "earliestLsn")),
               (long long)json_integer_value(json_object_get(w, "latestLsn")),
               (long long)json_integer_value(json_object_get(w, "backups")),
               json_integer_value(json_object_get(w, "backups")) == 1 ? "" : "s",
               (long long)json_integer_value(json_object_get(w, "logObjects")),
               json_integer_value(json_object_get(w, "logObjects")) == 1 ? "" : "s");
        cli_bk_print_spans(w);
    }
    json_decref(windows);
    return CLI_EXIT_OK;
}

/* `backup show ID`: one backup's manifest. */
static int cli_backup_show(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { CLI_REPO_OPTS, { NULL, false, NULL } };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_show, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    jvdb_backup_info info;
    if (ctx->remote) {
        if ((rc = cli_remote_backup_show(ctx, pos[0], &info))) return rc;
    } else {
        rc = jvdb_backup_show(repo, pos[0], &info);
        jvdb_repo_close(repo);
        if (rc) return cli_lib_error(rc);
    }
    if (ctx->json) return cli_print_json(cli_backup_json(&info));
    cli_backup_print(&info);
    return CLI_EXIT_OK;
}

/* jvdb_backup_verify_log callback: prints a finding, or collects it (JSON: arg is the array). */
static void cli_bk_log_finding(void *arg, int fail, const char *msg)
{
    if (arg) json_array_append_new(arg, json_pack("{sbss}", "fail", fail, "message", msg));
    else printf("%s %s\n", fail ? "BAD " : "note", msg);
}

/* verify --all / --database: the log objects of database db (see jvdb_backup_verify_log); 1 when bad. */
static int cli_bk_verify_log(jvdb_repo *repo, const char *db, json_t *logs)
{
    json_t *found = logs ? json_array() : NULL;
    jvdb_log_verify_result r;
    int rc = jvdb_backup_verify_log(repo, db, cli_bk_log_finding, found, &r);
    int bad = rc != JVDB_OK;
    if (bad && !r.bad && !r.unreachable && !r.no_base) cli_bk_log_finding(found, 1, jvdb_errmsg()); /* no verdict */
    char a[64] = "", b[64] = "";
    if (r.has_window) {
        clock_format_rfc3339(r.window.earliest_time_ns, a, sizeof a);
        clock_format_rfc3339(r.window.latest_time_ns, b, sizeof b);
    }
    if (logs) {
        json_t *o =
            json_pack("{sssbsIsIsIsIsIsIsIso}", "databaseId", db, "ok", !bad, "logObjects", (json_int_t)r.log_objects,
                      "logRecords", (json_int_t)r.log_records, "logBytes", (json_int_t)r.log_bytes, "bad",
                      (json_int_t)r.bad, "unreachable", (json_int_t)r.unreachable, "unused", (json_int_t)r.unused,
                      "holes", (json_int_t)r.holes, "findings", found);
        json_object_set_new(o, "noBase", json_integer((json_int_t)r.no_base));
        if (r.has_window)
            json_object_set_new(o, "window",
                                json_pack("{sIsssssIsI}", "incarnation", (json_int_t)r.window.incarnation,
                                          "earliestTime", a, "latestTime", b, "earliestLsn",
                                          (json_int_t)r.window.earliest_lsn, "latestLsn",
                                          (json_int_t)r.window.latest_lsn));
        json_array_append_new(logs, o);
    } else {
        printf("log  '%s' %s: %u object%s, %llu records verified", db, bad ? "BAD" : "ok", r.log_objects,
               r.log_objects == 1 ? "" : "s", (unsigned long long)r.log_records);
        if (r.bad || r.unreachable) printf(", %u bad, %u unreachable", r.bad, r.unreachable);
        if (r.no_base) printf(", %u without a backup to restore from", r.no_base);
        if (r.has_window)
            printf("; restorable LSN %llu..%llu, %s .. %s", (unsigned long long)r.window.earliest_lsn,
                   (unsigned long long)r.window.latest_lsn, a, b);
        printf("\n");
    }
    return bad;
}

/* Whether database db of the repository has any log object (its folder may be all that is left). */
static int cli_bk_has_log(jvdb_repo *repo, const char *db)
{
    jvdb_log_verify_result r;
    int rc = jvdb_backup_verify_log(repo, db, NULL, NULL, &r);
    return !(rc == JVDB_ENOTFOUND && !r.log_objects && !r.bad && !r.no_base && !r.unchecked);
}

/* verify --all (db NULL) / --database: every chain tip (a backup no other names as parent) is verified, which
 * reads every archive of its chain; a backup is intact when some verified chain through it passed.  Then the log of
 * every database. */
static int cli_backup_verify_all(struct cli_ctx *ctx, jvdb_repo *repo, const char *db)
{
    jvdb_backup_info *v;
    size_t n;
    int rc = jvdb_backup_list(repo, db, &v, &n);
    if (rc) return cli_lib_error(rc);
    char(*why)[512] = calloc(n ? n : 1, sizeof *why);
    int *state = calloc(n ? n : 1, sizeof *state); /* 0 unknown, 1 intact, -1 bad */
    if (!why || !state) {
        free(why);
        free(state);
        jvdb_free(v);
        return cli_lib_error(JVDB_ENOMEM);
    }
    struct cli_bk_progress pr = { 0 };
    for (size_t i = 0; i < n; i++) {
        if (!v[i].restorable) {
            state[i] = -1;
            snprintf(why[i], sizeof why[i], "%s", v[i].status);
            continue;
        }
        int tip = 1;
        for (size_t j = 0; j < n && tip; j++)
            if (j != i && !strcmp(v[j].database, v[i].database) && !strcmp(v[j].parent, v[i].id) && v[j].restorable)
                tip = 0;
        if (!tip) continue;
        char spec[JVDB_MAX_NAME_LEN + JVDB_BACKUP_ID_MAX + 2];
        snprintf(spec, sizeof spec, "%s/%s", v[i].database, v[i].id);
        int vr = jvdb_backup_verify(repo, spec, cli_bk_on_progress, &pr);
        cli_bk_progress_end(&pr);
        /* The chain, tip first.  Verify reads it from the full backup up and stops at the first bad
         * archive, which its message names: the members below that one were read without fault,
         * that one and every member above it (which depend on it) are bad. */
        size_t chain[n], len = 0;
        for (size_t k = i; len < n;) {
            chain[len++] = k;
            size_t p = n;
            for (size_t j = 0; j < n && v[k].parent[0]; j++)
                if (!strcmp(v[j].database, v[k].database) && !strcmp(v[j].id, v[k].parent)) p = j;
            if (p == n) break;
            k = p;
        }
        size_t named = 0; /* index in chain of the bad member (the tip when none is named) */
        for (size_t c = 0; vr != JVDB_OK && c < len; c++)
            if (strstr(jvdb_errmsg(), v[chain[c]].id)) named = c;
        for (size_t c = 0; c < len; c++) {
            size_t k = chain[c];
            if (vr == JVDB_OK || c > named) {
                if (state[k] == 0) state[k] = 1;
            } else if (state[k] != -1) {
                state[k] = -1;
                snprintf(why[k], sizeof why[k], "%s", jvdb_errmsg());
            }
        }
    }
    size_t bad = 0;
    json_t *arr = ctx->json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        int ok = state[i] >= 0;
        if (!ok) bad++;
        if (arr)
            json_array_append_new(arr, json_pack("{sssssbss}", "backupId", v[i].id, "databaseId", v[i].database, "ok",
                                                 ok, "message", ok ? "" : why[i]));
        else if (ok) printf("ok   %s/%s\n", v[i].database, v[i].id);
        else printf("BAD  %s/%s: %s\n", v[i].database, v[i].id, why[i]);
    }
    /* The log of every database the repository knows, not only of those with backups: one whose
     * backups are gone but whose log is left is checked too (and fails: nothing restores it). */
    json_t *logs = ctx->json ? json_array() : NULL;
    size_t bad_logs = 0, logs_n = 0;
    char **names = NULL;
    size_t nn = 0;
    if (!db && (rc = jvdb_repo_databases(repo, &names, &nn))) {
        json_decref(arr);
        json_decref(logs);
        free(why);
        free(state);
        jvdb_free(v);
        return cli_lib_error(rc);
    }
    for (size_t i = 0; i < (db ? 1 : nn); i++) {
        const char *name = db ? db : names[i];
        int has_backup = 0;
        for (size_t j = 0; j < n && !has_backup; j++) has_backup = !strcmp(v[j].database, name);
        if (!db && !has_backup && !cli_bk_has_log(repo, name)) continue; /* an emptied folder */
        bad_logs += (size_t)cli_bk_verify_log(repo, name, logs);
        logs_n++;
    }
    jvdb_free_names(names, nn);
    if (arr)
        cli_print_json(json_pack("{sososIsIsIsI}", "backups", arr, "logs", logs, "checked", (json_int_t)n, "bad",
                                 (json_int_t)bad, "logsChecked", (json_int_t)logs_n, "badLogs", (json_int_t)bad_logs));
    else
        printf("%zu backup%s checked, %zu bad; %zu log%s checked, %zu bad\n", n, n == 1 ? "" : "s", bad, logs_n,
               logs_n == 1 ? "" : "s", bad_logs);
    free(why);
    free(state);
    jvdb_free(v);
    return bad || bad_logs ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* `backup verify ID|--all`: reads back and checks every object of a backup and of the chain it restores from; --all
 * works only locally. */
static int cli_backup_verify(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_backup_verify;
    struct cli_opt opts[] = {
        CLI_REPO_OPTS, { "all", false, NULL }, { "database", true, NULL }, { NULL, false, NULL }
    };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    const char *dbname = opts[O_FIRST_OWN + 1].value;
    int all = opts[O_FIRST_OWN].value != NULL || dbname;
    if (all == (npos == 1) || (dbname && opts[O_FIRST_OWN].value))
        return cli_usage_error(cmd->name, "give one of a backup ID, --all or --database NAME");
    jvdb_backup_info info;
    if (ctx->remote) {
        if ((rc = cli_bk_remote_repo(ctx, cmd, opts))) return rc;
        if (all)
            return cli_fail("backup verify --all or --database cannot work through a server: verify each backup by its "
                            "ID");
        if ((rc = cli_remote_backup_verify(ctx, pos[0])) || (rc = cli_remote_backup_show(ctx, pos[0], &info)))
            return rc;
        goto print;
    }
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    if (all) {
        rc = cli_backup_verify_all(ctx, repo, dbname);
        jvdb_repo_close(repo);
        return rc;
    }
    struct cli_bk_progress pr = { 0 };
    rc = jvdb_backup_verify(repo, pos[0], cli_bk_on_progress, &pr);
    cli_bk_progress_end(&pr);
    if (!rc) rc = jvdb_backup_show(repo, pos[0], &info);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
print:
    if (ctx->json)
        return cli_print_json(json_pack("{sssssbsI}", "backupId", info.id, "databaseId", info.database, "ok", 1,
                                        "chainLength", (json_int_t)info.chain_length));
    printf("backup %s of '%s' is intact (chain of %u backup%s checked)\n", info.id, info.database, info.chain_length,
           info.chain_length == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

/* `backup drill --database NAME`: restores a backup into scratch space and compares it with the live database
 * (read-only) and its searches; exit status 1 when the drill fails. */
static int cli_backup_drill(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_backup_drill;
    struct cli_opt opts[] = { CLI_REPO_OPTS,
                              { "database", true, NULL },
                              { "backup", true, NULL },
                              { "scratch", true, NULL },
                              { "queries", true, NULL },
                              { "no-source", false, NULL },
                              { NULL, false, NULL } };
    enum { O_DATABASE = O_FIRST_OWN, O_BACKUP, O_SCRATCH, O_QUERIES, O_NO_SOURCE };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    const char *name = opts[O_DATABASE].value;
    if (!name) return cli_usage_error(cmd->name, "--database NAME is required");
    jvdb_drill_options o;
    jvdb_drill_options_init(&o);
    o.backup_id = opts[O_BACKUP].value;
    o.scratch_dir = opts[O_SCRATCH].value;
    if (opts[O_QUERIES].value) {
        uint64_t q;
        if (!cli_parse_u64(opts[O_QUERIES].value, &q) || q > 1000)
            return cli_usage_error(cmd->name, "bad --queries '%s' (expected 0 to 1000)", opts[O_QUERIES].value);
        o.queries = (uint32_t)q;
    }
    jvdb_db *source = NULL;
    if (!opts[O_NO_SOURCE].value) {
        ctx->readonly = true; /* the drill only reads the live database */
        if ((rc = cli_open_db(ctx, name, &source))) return rc;
    }
    jvdb_repo *repo;
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    struct cli_bk_progress pr = { 0 };
    o.progress = cli_bk_on_progress;
    o.progress_arg = &pr;
    jvdb_drill_report r;
    rc = jvdb_backup_drill(repo, name, source, &o, &r);
    cli_bk_progress_end(&pr);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
    if (ctx->json) {
        json_t *j =
            json_pack("{sssssIsIsfsfsIsbsIsIsIsIsIsbsbsisisisfsbss}", "database", name, "backupId", r.backup_id,
                      "backupLsn", (json_int_t)r.backup_lsn, "backupCreatedNs", (json_int_t)r.backup_created_ns,
                      "restoreSeconds", r.restore_seconds, "checkSeconds", r.check_seconds, "restoredVectors",
                      (json_int_t)r.restored_vectors, "sourceUnchanged", source ? r.source_unchanged : 0,
                      "checkedRecords", (json_int_t)r.checked_records, "changedSince", (json_int_t)r.changed_since,
                      "missing", (json_int_t)r.missing, "differing", (json_int_t)r.differing, "notInSource",
                      (json_int_t)r.not_in_source, "settingsMatch", r.settings_match, "restoreFailed", r.restore_failed,
                      "queries", (int)r.queries, "queriesCompared", (int)r.queries_compared, "queriesEqual",
                      (int)r.queries_equal, "indexRecall", r.index_recall, "passed", r.passed, "failure", r.failure);
        if (j && !source) json_object_set_new(j, "source", json_string("not compared (--no-source)"));
        int prc = cli_print_json(j);
        return prc ? prc : r.passed ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    printf("drill of '%s': %s\n", name, r.passed ? "PASS" : "FAIL");
    if (r.restore_failed) {
        printf("  backup %s (LSN %llu): %s\n", r.backup_id, (unsigned long long)r.backup_lsn, r.failure);
        return CLI_EXIT_FAIL;
    }
    printf("  backup %s (LSN %llu), restored in %.2f s, checked in %.2f s: %llu vectors\n", r.backup_id,
           (unsigned long long)r.backup_lsn, r.restore_seconds, r.check_seconds,
           (unsigned long long)r.restored_vectors);
    if (source)
        printf("  records: %llu identical, %llu changed since the backup, %llu missing, %llu different, "
               "%llu no longer in the source\n",
               (unsigned long long)r.checked_records, (unsigned long long)r.changed_since,
               (unsigned long long)r.missing, (unsigned long long)r.differing, (unsigned long long)r.not_in_source);
    else printf("  records: not compared with a live database (--no-source)\n");
    printf("  settings: %s\n", r.settings_match ? "match" : r.settings_diff);
    printf("  searches: %u sampled, %u of %u compared with the source equal%s; index recall@10 %.3f\n", r.queries,
           r.queries_equal, r.queries_compared,
           source && !r.source_unchanged ? " (the source changed since the backup: not compared)" : "", r.index_recall);
    if (!r.passed) printf("  failure: %s\n", r.failure);
    return r.passed ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* The newest restorable backup of each database (db_name NULL = every database), as "DB/ID"
 * specs; *n may be 0. */
static int cli_bk_newest(jvdb_repo *repo, const char *db_name,
                         char (**specs)[JVDB_MAX_NAME_LEN + JVDB_BACKUP_ID_MAX + 2], size_t *n)
{
    jvdb_backup_info *v;
    size_t nv;
    *specs = NULL;
    *n = 0;
    int rc = jvdb_backup_list(repo, db_name, &v, &nv);
    if (rc) return rc;
    *specs = calloc(nv ? nv : 1, sizeof **specs);
    if (!*specs) {
        jvdb_free(v);
        return JVDB_ENOMEM;
    }
    /* Oldest first per database: the last restorable one of each run is the newest. */
    for (size_t i = 0; i < nv; i++) {
        if (!v[i].restorable) continue;
        int newer = 0;
        for (size_t j = i + 1; j < nv && !strcmp(v[j].database, v[i].database); j++)
            if (v[j].restorable) newer = 1;
        if (!newer) snprintf((*specs)[(*n)++], sizeof **specs, "%s/%s", v[i].database, v[i].id);
    }
    jvdb_free(v);
    return JVDB_OK;
}

/* What one restore restores: a backup (spec) or a database at a point. */
struct cli_bk_target {
    const char *spec;     /* backup ID or DB/ID; NULL: by database */
    const char *database; /* with spec NULL */
    uint64_t to_lsn;
    int64_t to_time_ns;
};

/* What a restore did (said from what was done, not from what was asked): a line, or an entry of
 * arr (--json). */
static void cli_bk_restore_print(const jvdb_restore_result *res, json_t *arr)
{
    char when[64] = "";
    if (res->time_ns) clock_format_rfc3339(res->time_ns, when, sizeof when);
    if (arr) {
        json_t *o =
            json_pack("{sssssIsbsIsIsIsb}", "backup", res->backup.id, "database", res->database, "count",
                      (json_int_t)res->vectors, "replaced", res->replaced, "lsn", (json_int_t)res->lsn, "logObjects",
                      (json_int_t)res->log_objects, "logRecords", (json_int_t)res->log_records, "ok", 1);
        json_object_set_new(o, "time", res->time_ns ? json_string(when) : json_null());
        json_array_append_new(arr, o);
    } else if (res->log_objects) {
        printf("restored backup %s and %u log object%s (%llu records) as database '%s': LSN %llu, last write %s "
               "(%llu vectors)%s\n",
               res->backup.id, res->log_objects, res->log_objects == 1 ? "" : "s", (unsigned long long)res->log_records,
               res->database, (unsigned long long)res->lsn, when, (unsigned long long)res->vectors,
               res->replaced ? ", replacing the database of that name" : "");
    } else {
        printf("restored backup %s as database '%s' (%llu vectors)%s\n", res->backup.id, res->database,
               (unsigned long long)res->vectors, res->replaced ? ", replacing the database of that name" : "");
    }
}

/* Restores one target (a backup, or a database at a point), optionally as another name, and says what the library
 * restored (a line, or an entry of arr with --json). */
static int cli_backup_restore_one(struct cli_ctx *ctx, jvdb_repo *repo, const struct cli_bk_target *t, const char *as,
                                  int force, json_t *arr)
{
    struct cli_bk_progress pr = { 0 };
    jvdb_restore_result res;
    jvdb_restore_options ro = { .as_name = as,
                                .force = force,
                                .progress = cli_bk_on_progress,
                                .progress_arg = &pr,
                                .result = &res,
                                .database = t->spec ? NULL : t->database,
                                .to_lsn = t->to_lsn,
                                .to_time_ns = t->to_time_ns };
    jvdb_db *db = NULL;
    int rc = jvdb_backup_restore(ctx->env, repo, t->spec, &ro, &db);
    cli_bk_progress_end(&pr);
    if (rc) {
        if (arr)
            json_array_append_new(arr, json_pack("{sssbss}", t->spec ? "backup" : "database",
                                                 t->spec ? t->spec : t->database, "ok", 0, "message", jvdb_errmsg()));
        return rc;
    }
    cli_bk_dbmeta_restore(ctx, &res);
    jvdb_free(res.database_description);
    cli_bk_restore_print(&res, arr);
    return JVDB_OK;
}

/* backup restore through a server: a backup ID, or a database at a point (the REST route's latest,
 * toLsn, toTime). */
static int cli_bk_restore_remote(struct cli_ctx *ctx, const struct cli_cmd *cmd, const struct cli_opt *opts,
                                 const struct cli_bk_target *t, const char *to_time)
{
    enum { AS = O_FIRST_OWN, FORCE, LATEST, DATABASE, ALL };
    int rc;
    if ((rc = cli_bk_remote_repo(ctx, cmd, opts))) return rc;
    if (opts[ALL].value)
        return cli_fail("backup restore --all cannot work through a server: restore each database by its backup ID");
    json_t *target = NULL;
    if (!t->spec) {
        target = t->to_lsn ? json_pack("{sI}", "toLsn", (json_int_t)t->to_lsn)
                 : to_time ? json_pack("{ss}", "toTime", to_time)
                           : json_pack("{sb}", "latest", 1);
    }
    json_t *a;
    if ((rc = cli_remote_backup_restore(ctx, t->spec ? t->spec : t->database, opts[AS].value, opts[FORCE].value != NULL,
                                        target, &a)))
        return rc;
    jvdb_restore_result res;
    memset(&res, 0, sizeof res);
    const char *bid = json_string_value(json_object_get(a, "backupId")),
               *db = json_string_value(json_object_get(a, "databaseId"));
    snprintf(res.backup.id, sizeof res.backup.id, "%s", bid ? bid : "");
    snprintf(res.database, sizeof res.database, "%s", db ? db : "");
    res.vectors = (uint64_t)json_integer_value(json_object_get(json_object_get(a, "stats"), "vectorCount"));
    res.replaced = json_is_true(json_object_get(a, "replaced"));
    res.lsn = (uint64_t)json_integer_value(json_object_get(a, "lsn"));
    res.log_objects = (uint32_t)json_integer_value(json_object_get(a, "logObjects"));
    res.log_records = (uint64_t)json_integer_value(json_object_get(a, "logRecords"));
    const char *when = json_string_value(json_object_get(a, "time"));
    if (when && clock_parse_rfc3339(when, &res.time_ns)) res.time_ns = 0;
    json_t *arr = ctx->json ? json_array() : NULL;
    cli_bk_restore_print(&res, arr);
    json_decref(a);
    if (!arr) return CLI_EXIT_OK;
    json_t *o = json_incref(json_array_get(arr, 0));
    json_object_del(o, "ok");
    json_decref(arr);
    return cli_print_json(o);
}

/* `backup restore ID|--latest|--all`: restores one backup, the newest of a database or the newest of every
 * database; with --all a failure does not stop the others. */
static int cli_backup_restore(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_backup_restore;
    struct cli_opt opts[] = { CLI_REPO_OPTS,
                              { "as", true, NULL },
                              { "force", false, NULL },
                              { "latest", false, NULL },
                              { "database", true, NULL },
                              { "all", false, NULL },
                              { "to-time", true, NULL },
                              { "to-lsn", true, NULL },
                              { NULL, false, NULL } };
    enum { AS = O_FIRST_OWN, FORCE, LATEST, DATABASE, ALL, TO_TIME, TO_LSN };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    int all = opts[ALL].value != NULL, force = opts[FORCE].value != NULL, bydb = opts[DATABASE].value != NULL;
    int ntargets = (opts[LATEST].value != NULL) + (opts[TO_TIME].value != NULL) + (opts[TO_LSN].value != NULL);
    if (npos + bydb + all != 1)
        return cli_usage_error(cmd->name, "give exactly one of a backup ID, --database or --all");
    if (ntargets && !bydb)
        return cli_usage_error(cmd->name, "--latest, --to-time and --to-lsn go with --database NAME");
    if (ntargets > 1) return cli_usage_error(cmd->name, "give at most one of --latest, --to-time and --to-lsn");
    if (all && opts[AS].value) return cli_usage_error(cmd->name, "--as cannot rename every database (--all)");
    struct cli_bk_target one = { npos ? pos[0] : NULL, opts[DATABASE].value, 0, 0 };
    if (opts[TO_LSN].value && (!cli_parse_u64(opts[TO_LSN].value, &one.to_lsn) || one.to_lsn == 0))
        return cli_usage_error(cmd->name, "--to-lsn '%s' is not an LSN (a number from 1)", opts[TO_LSN].value);
    if (opts[TO_TIME].value && (clock_parse_rfc3339(opts[TO_TIME].value, &one.to_time_ns) || one.to_time_ns <= 0))
        return cli_usage_error(cmd->name,
                               "--to-time '%s' is not an RFC 3339 time (e.g. 2026-11-29T21:00:00.5Z or "
                               "2026-11-29T22:00:00+01:00)",
                               opts[TO_TIME].value);
    if (ctx->remote) {
        return cli_bk_restore_remote(ctx, cmd, opts, &one, opts[TO_TIME].value);
    }
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    char(*specs)[JVDB_MAX_NAME_LEN + JVDB_BACKUP_ID_MAX + 2] = NULL;
    size_t n = 0;
    const char *spec = opts[O_REPO].value ? opts[O_REPO].value : getenv("JVDB_BACKUP_REPO");
    if (all) {
        rc = cli_bk_newest(repo, NULL, &specs, &n);
        if (!rc && n == 0) {
            free(specs);
            jvdb_repo_close(repo);
            return cli_fail("no restorable backup in repository %s", spec);
        }
    }
    if (rc) {
        free(specs);
        jvdb_repo_close(repo);
        return cli_lib_error(rc);
    }
    ctx->create = true; /* like db create, a restore makes databases: onto a new host after a disaster */
    if ((rc = cli_open_env(ctx))) {
        free(specs);
        jvdb_repo_close(repo);
        return rc;
    }
    json_t *arr = ctx->json ? json_array() : NULL;
    size_t failed = 0;
    int last_rc = JVDB_OK;
    if (!all) n = 1;
    for (size_t i = 0; i < n; i++) {
        struct cli_bk_target t = one;
        if (all) {
            /* Each database at its newest point: its newest backup and the log after it. */
            char *slash = strchr(specs[i], '/');
            *slash = '\0';
            t = (struct cli_bk_target){ NULL, specs[i], 0, 0 };
        }
        int r = cli_backup_restore_one(ctx, repo, &t, opts[AS].value, force, arr);
        if (r) {
            failed++;
            last_rc = r;
            if (!all) break;
            fprintf(stderr, "jvdb: restoring '%s' failed: %s\n", specs[i], jvdb_errmsg());
        }
    }
    free(specs);
    jvdb_repo_close(repo);
    if (!all) {
        if (last_rc) {
            json_decref(arr);
            return cli_lib_error(last_rc);
        }
        if (arr) {
            json_t *o = json_incref(json_array_get(arr, 0));
            json_object_del(o, "ok");
            json_decref(arr);
            return cli_print_json(o);
        }
        return CLI_EXIT_OK;
    }
    if (arr)
        cli_print_json(
            json_pack("{sosIsI}", "restored", arr, "databases", (json_int_t)n, "failed", (json_int_t)failed));
    else printf("%zu database%s restored, %zu failed\n", n - failed, n - failed == 1 ? "" : "s", failed);
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* Prints (or returns as JSON, with an optional extra key) the backups a delete or prune removed; frees v and takes
 * extra. */
static int cli_print_deleted(struct cli_ctx *ctx, jvdb_backup_info *v, size_t n, const char *extra_key, json_t *extra)
{
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(v[i].id));
        jvdb_free(v);
        json_t *doc = json_pack("{so}", "deleted", arr);
        if (extra_key) json_object_set_new(doc, extra_key, extra);
        return cli_print_json(doc);
    }
    for (size_t i = 0; i < n; i++)
        printf("deleted %s backup %s of '%s'\n", jvdb_backup_type_name(v[i].type), v[i].id, v[i].database);
    if (n == 0) printf("nothing to delete\n");
    jvdb_free(v);
    json_decref(extra);
    return CLI_EXIT_OK;
}

/* `backup delete ID [--cascade]`: deletes a backup, and with --cascade the backups that restore through it. */
static int cli_backup_delete(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { CLI_REPO_OPTS, { "cascade", false, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_delete, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    rc = jvdb_backup_delete(repo, pos[0], opts[O_FIRST_OWN].value != NULL, &v, &n);
    jvdb_repo_close(repo);
    if (rc) {
        jvdb_free(v);
        return cli_lib_error(rc);
    }
    return cli_print_deleted(ctx, v, n, NULL, NULL);
}

/* `backup prune NAME --keep N [--keep-daily D] [--keep-weekly W] [--dry-run]`: deletes a database's backups outside
 * the retention rules, or lists them with --dry-run. */
static int cli_backup_prune(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_backup_prune;
    struct cli_opt opts[] = { CLI_REPO_OPTS,
                              { "keep", true, NULL },
                              { "keep-daily", true, NULL },
                              { "keep-weekly", true, NULL },
                              { "dry-run", false, NULL },
                              { NULL, false, NULL } };
    enum { KEEP = O_FIRST_OWN, DAILY, WEEKLY, DRY };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    jvdb_prune_options po = { 0, 0, 0, opts[DRY].value != NULL };
    uint32_t *dst[3] = { &po.keep_last, &po.keep_daily, &po.keep_weekly };
    for (int k = 0; k < 3; k++) {
        const char *v = opts[KEEP + k].value;
        uint64_t x;
        if (!v) continue;
        if (!cli_parse_u64(v, &x) || x < 1 || x > UINT32_MAX)
            return cli_usage_error(cmd->name, "--%s '%s' is not a positive whole number", opts[KEEP + k].name, v);
        *dst[k] = (uint32_t)x;
    }
    if (!po.keep_last && !po.keep_daily && !po.keep_weekly)
        return cli_usage_error(cmd->name, "--keep, --keep-daily or --keep-weekly is required");
    jvdb_repo *repo;
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    rc = jvdb_backup_prune_ex(repo, pos[0], &po, &v, &n);
    jvdb_repo_close(repo);
    if (rc) {
        jvdb_free(v);
        return cli_lib_error(rc);
    }
    if (po.dry_run) {
        if (ctx->json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(v[i].id));
            jvdb_free(v);
            json_t *o = json_pack("{sosb}", "wouldDelete", arr, "dryRun", 1);
            cli_json_add_deprecated(o, (const char *const[]){ "wouldDelete", NULL });
            return cli_print_json(o);
        }
        for (size_t i = 0; i < n; i++)
            printf("would delete %s backup %s of '%s'\n", jvdb_backup_type_name(v[i].type), v[i].id, v[i].database);
        if (n == 0) printf("nothing to delete\n");
        jvdb_free(v);
        return CLI_EXIT_OK;
    }
    return cli_print_deleted(ctx, v, n, "kept", json_integer((json_int_t)po.keep_last));
}

int cli_backup_main(struct cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli_ctx *, int, char **);
    } subs[] = { { "create", cli_backup_create }, { "list", cli_backup_list },       { "show", cli_backup_show },
                 { "verify", cli_backup_verify }, { "restore", cli_backup_restore }, { "delete", cli_backup_delete },
                 { "prune", cli_backup_prune },   { "drill", cli_backup_drill } };
    const char *names = "create, list, show, verify, restore, delete, prune, drill";
    if (argc < 2) return cli_usage_error("backup", "missing subcommand (%s)", names);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(cli_cmd_backup.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(ctx, argc - 1, argv + 1);
    return cli_usage_error("backup", "unknown subcommand '%s' (%s)", argv[1], names);
}

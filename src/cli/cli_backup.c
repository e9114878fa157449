/*
 * cli_backup.c — the `jvdb backup` group: create, list, show, verify, restore, delete, prune
 * (DESIGN.md 6, issue 5), a thin layer over the backups section of jvdb.h.
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

#include "core/clock.h"
#include "core/fs.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const cli_cmd cli_cmd_backup = {
    "backup",
    "Usage: jvdb [--data DIR] backup SUBCOMMAND ... --repo R\n"
    "\n"
    "  backup create NAME --repo R [--type full|incremental|differential] [--description TEXT]\n"
    "                [--level N] [--threads N] [--no-index]\n"
    "  backup list [NAME] --repo R\n"
    "  backup show ID --repo R\n"
    "  backup verify ID --repo R\n"
    "  backup restore ID --repo R [--as NEWNAME] [--force]\n"
    "  backup delete ID --repo R [--cascade]\n"
    "  backup prune NAME --repo R --keep N\n"
    "\n"
    "R is a directory or s3://bucket/prefix (default: $JVDB_BACKUP_REPO).  For S3 also:\n"
    "  --endpoint URL --region REGION --access-key KEY --secret-key SECRET\n"
    "(default: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).\n"
    "ID is a backup id (YYYYMMDDTHHMMSSZ-TYPE-N) or DATABASE/ID.  Every subcommand takes --json.\n"
    "Only create makes a repository; on a missing one the others say \"repository R does not\n"
    "exist\" and create nothing.\n",
    1, -1};

#define CLI_REPO_OPTS                                                                                     \
    {"repo", true, NULL}, {"endpoint", true, NULL}, {"region", true, NULL}, {"access-key", true, NULL}, \
        {"secret-key", true, NULL}
enum { O_REPO, O_ENDPOINT, O_REGION, O_ACCESS, O_SECRET, O_FIRST_OWN };

static const cli_cmd cli_cmd_backup_create = {
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
    1, 1};

static const cli_cmd cli_cmd_backup_list = {
    "backup list",
    "Usage: jvdb backup list [NAME] --repo R [--json]\n"
    "\n"
    "Lists the backups of database NAME (or of every database), oldest first: id, type, parent,\n"
    "time, records, stored bytes and status (\"ok\" or why it cannot be restored).\n",
    0, 1};

static const cli_cmd cli_cmd_backup_show = {
    "backup show",
    "Usage: jvdb backup show ID --repo R [--json]\n"
    "\n"
    "Prints everything backup.json records about backup ID, and whether it can be restored.\n",
    1, 1};

static const cli_cmd cli_cmd_backup_verify = {
    "backup verify",
    "Usage: jvdb backup verify ID --repo R [--json]\n"
    "\n"
    "Checks backup ID and every backup it depends on: metadata, parent links, the SHA-256 of\n"
    "every archive, the checksum of every record, and every record's contents against the rules\n"
    "of put (id, metadata, finite vector).  Exit status 1 names the first bad backup.\n",
    1, 1};

static const cli_cmd cli_cmd_backup_restore = {
    "backup restore",
    "Usage: jvdb [--data DIR] backup restore ID --repo R [--as NEWNAME] [--force] [--json]\n"
    "\n"
    "Verifies the chain of backup ID, then rebuilds the database from it beside the live ones and\n"
    "makes it appear in one step, with the settings the backup carries (metric, sync mode, index\n"
    "and compaction settings, description).  Nothing is written if verification fails.\n"
    "\n"
    "  --as NAME   restore under another name, [A-Za-z0-9_-]{1,64} (default: the backed-up\n"
    "              database's name)\n"
    "  --force     replace an existing database of that name (atomically)\n",
    1, 1};

static const cli_cmd cli_cmd_backup_delete = {
    "backup delete",
    "Usage: jvdb backup delete ID --repo R [--cascade] [--json]\n"
    "\n"
    "Deletes backup ID.  Refuses when other backups depend on it, unless --cascade, which deletes\n"
    "those too (newest first, so no listed backup is ever left without its parent).\n",
    1, 1};

static const cli_cmd cli_cmd_backup_prune = {
    "backup prune",
    "Usage: jvdb backup prune NAME --repo R --keep N [--json]\n"
    "\n"
    "Keeps the newest N restorable backups of database NAME and every backup they depend on, and\n"
    "deletes the others (including broken ones).\n",
    1, 1};

/* ------------------------------------------------------------------ shared pieces */

static int cli_repo_open(const cli_cmd *cmd, cli_opt *opts, jvdb_repo **repo)
{
    const char *spec = opts[O_REPO].value;
    if (!spec || !*spec) spec = getenv("JVDB_BACKUP_REPO");
    if (!spec || !*spec) return cli_usage_error(cmd->name, "--repo is required (a directory or s3://bucket/prefix)");
    jvdb_repo_options ro = {0};
    ro.endpoint = opts[O_ENDPOINT].value;
    ro.region = opts[O_REGION].value;
    ro.access_key = opts[O_ACCESS].value;
    ro.secret_key = opts[O_SECRET].value;
    int rc = jvdb_repo_open(spec, &ro, repo);
    return rc ? cli_lib_error(rc) : 0;
}

/* One bar per phase (verify, then restore): the library reports bytes over the whole chain. */
typedef struct cli_bk_progress {
    cli_progress bar;
    const char *phase;
    uint64_t done, records;
} cli_bk_progress;

static void cli_bk_on_progress(void *arg, const char *phase, uint64_t done, uint64_t total, uint64_t records)
{
    cli_bk_progress *p = arg;
    if (!p->phase || strcmp(p->phase, phase)) {
        if (p->phase) cli_progress_finish(&p->bar, p->done, p->records);
        p->phase = phase;
        cli_progress_start(&p->bar, !strcmp(phase, "verify") ? "records verified"
                                    : !strcmp(phase, "restore") ? "records restored" : "records backed up", total);
    }
    p->done = done;
    p->records = records;
    cli_progress_update(&p->bar, done, records);
}

static void cli_bk_progress_end(cli_bk_progress *p)
{
    if (p->phase) cli_progress_finish(&p->bar, p->done, p->records);
    p->phase = NULL;
}

static void cli_format_time(int64_t ns, char *buf, size_t cap)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void cli_format_bytes(uint64_t b, char *buf, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    if (i == 0) snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else snprintf(buf, cap, "%.1f %s", v, u[i]);
}

static json_t *cli_backup_json(const jvdb_backup_info *b)
{
    char when[40];
    cli_format_time(b->created_ns, when, sizeof when);
    json_t *o = json_pack("{sssssssosIsIsssIsIs{sIsI}sssisss{sssi}sssIsbss}", "id", b->id, "database", b->database,
                          "type", jvdb_backup_type_name(b->type), "parent",
                          b->parent[0] ? json_string(b->parent) : json_null(), "lsn_from", (json_int_t)b->lsn_from,
                          "lsn_to", (json_int_t)b->lsn_to, "created_at", when, "put_count",
                          (json_int_t)b->put_count, "delete_count", (json_int_t)b->delete_count, "bytes", "raw",
                          (json_int_t)b->raw_bytes, "stored", (json_int_t)b->stored_bytes, "sha256", b->sha256,
                          "dimension", (int)b->dim, "metric", jvdb_metric_name(b->metric), "compression",
                          "algorithm", "zstd", "level", b->compression_level, "description", b->description,
                          "chain_length", (json_int_t)b->chain_length, "restorable", b->restorable, "status",
                          b->status);
    if (o && b->note[0]) json_object_set_new(o, "note", json_string(b->note));
    return o;
}

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

/* Parses argv with the repository options in front of the command's own. */
static int cli_bk_parse(cli_ctx *ctx, const cli_cmd *cmd, int argc, char **argv, cli_opt *opts, char **pos, int *npos,
                        jvdb_repo **repo)
{
    int rc = cli_parse(ctx, cmd, argc, argv, opts, pos, npos);
    if (rc) return rc;
    return cli_repo_open(cmd, opts, repo);
}

/* <data>/server/<name>.json, the server's metadata of a database (NULL on out of memory). */
static char *cli_bk_dbmeta_path(const cli_ctx *ctx, const char *name)
{
    char rel[JVDB_MAX_NAME_LEN + 16];
    snprintf(rel, sizeof rel, "server/%s.json", name);
    return fs_join(ctx->data_dir, rel);
}

/* The server's metadata of a database, or an empty object when there is none. */
static json_t *cli_bk_dbmeta_load(const cli_ctx *ctx, const char *name)
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
static void cli_bk_dbmeta_restore(const cli_ctx *ctx, const jvdb_restore_result *res)
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

static int cli_backup_create(cli_ctx *ctx, int argc, char **argv)
{
    const cli_cmd *cmd = &cli_cmd_backup_create;
    cli_opt opts[] = {CLI_REPO_OPTS, {"type", true, NULL}, {"description", true, NULL}, {"level", true, NULL},
                      {"threads", true, NULL}, {"no-index", false, NULL}, {NULL, false, NULL}};
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
    jvdb_repo *repo;
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    jvdb_db *db;
    if ((rc = cli_open_db(ctx, pos[0], &db))) {
        jvdb_repo_close(repo);
        return rc;
    }
    cli_bk_progress pr = {0};
    bo.progress = cli_bk_on_progress;
    bo.progress_arg = &pr;
    json_t *dbmeta = cli_bk_dbmeta_load(ctx, jvdb_db_name(db));
    bo.database_description = json_string_value(json_object_get(dbmeta, "description"));
    jvdb_backup_info info;
    rc = jvdb_backup_create(db, repo, &bo, &info);
    json_decref(dbmeta);
    cli_bk_progress_end(&pr);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
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

static int cli_backup_list(cli_ctx *ctx, int argc, char **argv)
{
    cli_opt opts[] = {CLI_REPO_OPTS, {NULL, false, NULL}};
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_list, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    jvdb_backup_info *v;
    size_t n;
    rc = jvdb_backup_list(repo, npos ? pos[0] : NULL, &v, &n);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, cli_backup_json(&v[i]));
        jvdb_free(v);
        return cli_print_json(json_pack("{so}", "backups", arr));
    }
    if (n == 0) printf("no backups%s%s%s\n", npos ? " of '" : "", npos ? pos[0] : "", npos ? "'" : "");
    else
        printf("%-16s %-34s %-12s %-34s %-20s %10s %10s  %s\n", "DATABASE", "ID", "TYPE", "PARENT", "TIME",
               "RECORDS", "BYTES", "STATUS");
    for (size_t i = 0; i < n; i++) {
        char when[40], stored[32];
        cli_format_time(v[i].created_ns, when, sizeof when);
        cli_format_bytes(v[i].stored_bytes, stored, sizeof stored);
        printf("%-16s %-34s %-12s %-34s %-20s %10llu %10s  %s\n", v[i].database, v[i].id,
               jvdb_backup_type_name(v[i].type), v[i].parent[0] ? v[i].parent : "-", when,
               (unsigned long long)(v[i].put_count + v[i].delete_count), stored, v[i].status);
    }
    jvdb_free(v);
    return CLI_EXIT_OK;
}

static int cli_backup_show(cli_ctx *ctx, int argc, char **argv)
{
    cli_opt opts[] = {CLI_REPO_OPTS, {NULL, false, NULL}};
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_show, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    jvdb_backup_info info;
    rc = jvdb_backup_show(repo, pos[0], &info);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
    if (ctx->json) return cli_print_json(cli_backup_json(&info));
    cli_backup_print(&info);
    return CLI_EXIT_OK;
}

static int cli_backup_verify(cli_ctx *ctx, int argc, char **argv)
{
    cli_opt opts[] = {CLI_REPO_OPTS, {NULL, false, NULL}};
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, &cli_cmd_backup_verify, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    cli_bk_progress pr = {0};
    rc = jvdb_backup_verify(repo, pos[0], cli_bk_on_progress, &pr);
    cli_bk_progress_end(&pr);
    jvdb_backup_info info;
    if (!rc) rc = jvdb_backup_show(repo, pos[0], &info);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
    if (ctx->json)
        return cli_print_json(json_pack("{sssssbsI}", "id", info.id, "database", info.database, "ok", 1,
                                        "chain_length", (json_int_t)info.chain_length));
    printf("backup %s of '%s' is intact (chain of %u backup%s checked)\n", info.id, info.database, info.chain_length,
           info.chain_length == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

static int cli_backup_restore(cli_ctx *ctx, int argc, char **argv)
{
    const cli_cmd *cmd = &cli_cmd_backup_restore;
    cli_opt opts[] = {CLI_REPO_OPTS, {"as", true, NULL}, {"force", false, NULL}, {NULL, false, NULL}};
    enum { AS = O_FIRST_OWN, FORCE };
    char *pos[argc];
    jvdb_repo *repo;
    int npos, rc = cli_bk_parse(ctx, cmd, argc, argv, opts, pos, &npos, &repo);
    if (rc) return rc;
    if ((rc = cli_open_env(ctx))) {
        jvdb_repo_close(repo);
        return rc;
    }
    cli_bk_progress pr = {0};
    jvdb_restore_result res;
    jvdb_restore_options ro = {opts[AS].value, opts[FORCE].value != NULL, cli_bk_on_progress, &pr, &res};
    jvdb_db *db = NULL;
    rc = jvdb_backup_restore(ctx->env, repo, pos[0], &ro, &db);
    cli_bk_progress_end(&pr);
    jvdb_repo_close(repo);
    if (rc) return cli_lib_error(rc);
    cli_bk_dbmeta_restore(ctx, &res);
    jvdb_free(res.database_description);
    /* Said from what the library did, not from what was asked. */
    if (ctx->json)
        return cli_print_json(json_pack("{sssssIsbsI}", "backup", res.backup.id, "database", res.database, "count",
                                        (json_int_t)res.vectors, "replaced", res.replaced, "lsn", (json_int_t)res.backup.lsn_to));
    printf("restored backup %s as database '%s' (%llu vectors)%s\n", res.backup.id, res.database,
           (unsigned long long)res.vectors, res.replaced ? ", replacing the database of that name" : "");
    return CLI_EXIT_OK;
}

static int cli_print_deleted(cli_ctx *ctx, jvdb_backup_info *v, size_t n, const char *extra_key, json_t *extra)
{
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(v[i].id));
        jvdb_free(v);
        json_t *doc = json_pack("{so}", "deleted", arr);
        if (extra_key) json_object_set_new(doc, extra_key, extra);
        return cli_print_json(doc);
    }
    for (size_t i = 0; i < n; i++) printf("deleted %s backup %s of '%s'\n", jvdb_backup_type_name(v[i].type), v[i].id, v[i].database);
    if (n == 0) printf("nothing to delete\n");
    jvdb_free(v);
    json_decref(extra);
    return CLI_EXIT_OK;
}

static int cli_backup_delete(cli_ctx *ctx, int argc, char **argv)
{
    cli_opt opts[] = {CLI_REPO_OPTS, {"cascade", false, NULL}, {NULL, false, NULL}};
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

static int cli_backup_prune(cli_ctx *ctx, int argc, char **argv)
{
    const cli_cmd *cmd = &cli_cmd_backup_prune;
    cli_opt opts[] = {CLI_REPO_OPTS, {"keep", true, NULL}, {NULL, false, NULL}};
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    uint64_t keep;
    if (!opts[O_FIRST_OWN].value) return cli_usage_error(cmd->name, "--keep is required");
    if (!cli_parse_u64(opts[O_FIRST_OWN].value, &keep) || keep < 1 || keep > UINT32_MAX)
        return cli_usage_error(cmd->name, "--keep '%s' is not a positive whole number", opts[O_FIRST_OWN].value);
    jvdb_repo *repo;
    if ((rc = cli_repo_open(cmd, opts, &repo))) return rc;
    jvdb_backup_info *v = NULL;
    size_t n = 0;
    rc = jvdb_backup_prune(repo, pos[0], (uint32_t)keep, &v, &n);
    jvdb_repo_close(repo);
    if (rc) {
        jvdb_free(v);
        return cli_lib_error(rc);
    }
    return cli_print_deleted(ctx, v, n, "kept", json_integer((json_int_t)keep));
}

int cli_backup_main(cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(cli_ctx *, int, char **);
    } subs[] = {{"create", cli_backup_create}, {"list", cli_backup_list},       {"show", cli_backup_show},
                {"verify", cli_backup_verify}, {"restore", cli_backup_restore}, {"delete", cli_backup_delete},
                {"prune", cli_backup_prune}};
    const char *names = "create, list, show, verify, restore, delete, prune";
    if (argc < 2) return cli_usage_error("backup", "missing subcommand (%s)", names);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(cli_cmd_backup.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(ctx, argc - 1, argv + 1);
    return cli_usage_error("backup", "unknown subcommand '%s' (%s)", argv[1], names);
}

/*
 * cli_db.c — the `jvdb db` group: create, list, info, repair and drop databases in the data directory.
 *
 * `list` and `info` only read: they open the data directory read-only, so they never change a file
 * (not even to cut a torn tail).  A database directory whose MANIFEST is missing is "damaged": list
 * reports it on stderr (exit 1), info and create say so, drop removes it.  `repair` is the way out
 * of "corrupt record in FILE at offset N": it prints every damaged range it set aside.
 *
 * Option values the library parses (metric, sync mode) go through its own parsers so the CLI and the
 * REST server accept the same spellings; a value that does not parse is a usage error (exit 2),
 * while a well-formed request the library refuses (dimension out of range, name taken) exits 1.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include <string.h>

const struct cli_cmd cli_cmd_db = {
    "db",
    "Usage: jvdb [--data DIR] db SUBCOMMAND ...\n"
    "\n"
    "  db create NAME --dim D [--metric cosine|l2|dot] [--sync always|never|interval:MS]\n"
    "                 [--segment-max-bytes N]\n"
    "  db list\n"
    "  db info NAME\n"
    "  db repair NAME\n"
    "  db drop NAME\n"
    "\n"
    "Every subcommand takes --json.  Run 'jvdb db SUBCOMMAND --help' for details.\n",
    1, -1
};

static const struct cli_cmd cli_cmd_db_create = {
    "db create",
    "Usage: jvdb [--data DIR] db create NAME --dim D [options] [--json]\n"
    "\n"
    "Creates database NAME ([A-Za-z0-9_-], 1 to 64 characters) of dimension D.\n"
    "\n"
    "  --dim D                  number of values per vector, 1..65536 (required)\n"
    "  --metric cosine|l2|dot   distance metric (default cosine, as the REST API; earlier versions\n"
    "                           of the CLI defaulted to l2).  Vectors are stored as given\n"
    "  --sync MODE              always (default: every write is on disk before it returns),\n"
    "                           never, or interval:MS (flush every MS milliseconds)\n"
    "  --segment-max-bytes N    seal segment files past N bytes (K/M/G suffixes; default 1G)\n"
    "  --json                   print the new database's options as JSON\n",
    1, 1
};

static const struct cli_cmd cli_cmd_db_list = {
    "db list",
    "Usage: jvdb [--data DIR] db list [--json]\n"
    "\n"
    "Prints the names of all databases, sorted, one per line (--json: {\"databases\": [...]}).\n"
    "A database directory whose MANIFEST is missing is damaged: it is not listed but reported on\n"
    "stderr with what the directory holds (--json: \"damaged\": [{\"name\", \"error\"}]), and the exit\n"
    "status is 1.  'jvdb db drop NAME' removes such a directory.  Changes nothing on disk.\n",
    0, 0
};

static const struct cli_cmd cli_cmd_db_info = {
    "db info",
    "Usage: jvdb [--data DIR] db info NAME [--json]\n"
    "\n"
    "Prints the options of database NAME (dimension, metric, sync, segment size), its vector count\n"
    "and its storage statistics.  Changes nothing on disk (the data directory is opened read-only).\n",
    1, 1
};

static const struct cli_cmd cli_cmd_db_repair = {
    "db repair",
    "Usage: jvdb [--data DIR] db repair NAME [--json]\n"
    "\n"
    "Salvages database NAME when opening it fails with 'corrupt record in FILE at offset N'.  Every\n"
    "record whose checksum verifies is kept (the newest version of each id wins, as at open); each\n"
    "damaged byte range is copied to FILE.bad-OFFSET and listed (file, offsets, reason), and the\n"
    "repaired database replaces the old one in one step, so an interruption leaves one or the other.\n"
    "A database without damage is left unchanged.  Nothing may use the database meanwhile (stop the\n"
    "server).  A version of a vector that was in a damaged range is lost: an older one may show.\n",
    1, 1
};

static const struct cli_cmd cli_cmd_db_drop = {
    "db drop",
    "Usage: jvdb [--data DIR] db drop NAME [--json]\n"
    "\n"
    "Deletes database NAME and all its files.  There is no confirmation and no undo.\n",
    1, 1
};

/* The database's --json object (cli_db_object), with its count and stats for db info. */
static json_t *cli_db_json(jvdb_db *db, const uint64_t *count, json_t *stats)
{
    jvdb_db_options o;
    char sync[32];
    jvdb_db_get_options(db, &o);
    return cli_db_object(jvdb_db_name(db), o.dim, o.metric,
                         jvdb_sync_name(o.sync, o.sync_interval_ms, sync, sizeof sync), o.segment_max_bytes, count,
                         stats);
}

/* Prints a database's settings (name, dim, metric, sync, segment size) as aligned lines. */
static void cli_db_print(jvdb_db *db)
{
    jvdb_db_options o;
    char sync[32];
    jvdb_db_get_options(db, &o);
    printf("name:              %s\n", jvdb_db_name(db));
    printf("dim:               %u\n", o.dim);
    printf("metric:            %s\n", jvdb_metric_name(o.metric));
    printf("sync:              %s\n", jvdb_sync_name(o.sync, o.sync_interval_ms, sync, sizeof sync));
    printf("segment_max_bytes: %llu\n", (unsigned long long)o.segment_max_bytes);
}

/* `db create NAME --dim D [...]`: creates a database (cosine by default, as over REST) and prints its settings. */
static int cli_db_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_db_create;
    struct cli_opt opts[] = { { "dim", true, NULL },
                              { "metric", true, NULL },
                              { "sync", true, NULL },
                              { "segment-max-bytes", true, NULL },
                              { NULL, false, NULL } };
    enum { DIM, METRIC, SYNC, SEGMAX };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;

    uint64_t dim, segmax;
    if (!opts[DIM].value) return cli_usage_error(cmd->name, "--dim is required");
    if (!cli_parse_u64(opts[DIM].value, &dim) || dim > UINT32_MAX)
        return cli_usage_error(cmd->name, "--dim '%s' is not a positive whole number", opts[DIM].value);
    jvdb_db_options o;
    jvdb_db_options_init(&o, (uint32_t)dim);
    o.metric = JVDB_METRIC_COSINE; /* one default for the CLI and REST (docs/CLI.md) */
    if (opts[METRIC].value && jvdb_metric_parse(opts[METRIC].value, &o.metric))
        return cli_usage_error(cmd->name, "--metric '%s' is not one of l2, cosine, dot", opts[METRIC].value);
    if (opts[SYNC].value && jvdb_sync_parse(opts[SYNC].value, &o.sync, &o.sync_interval_ms))
        return cli_usage_error(cmd->name, "--sync '%s' is not always, never or interval:MS", opts[SYNC].value);
    if (opts[SEGMAX].value) {
        if (!cli_parse_size(opts[SEGMAX].value, &segmax))
            return cli_usage_error(cmd->name, "--segment-max-bytes '%s' is not a size (e.g. 64M)", opts[SEGMAX].value);
        o.segment_max_bytes = segmax;
    }

    if (ctx->remote) {
        if (opts[SEGMAX].value)
            return cli_fail("--segment-max-bytes cannot be set through a server (its REST API does not take it); "
                            "create the database with the server stopped");
        return cli_remote_db_create(ctx, pos[0], o.dim, o.metric, opts[SYNC].value);
    }
    ctx->create = true; /* the one command that may make the data directory */
    if ((rc = cli_open_env(ctx))) return rc;
    jvdb_db *db;
    if ((rc = jvdb_db_create(ctx->env, pos[0], &o, &db))) return cli_lib_error(rc);
    if (ctx->json) return cli_print_json(cli_db_json(db, NULL, NULL));
    printf("created database '%s'\n", jvdb_db_name(db));
    cli_db_print(db);
    return CLI_EXIT_OK;
}

/* `db list`: the databases of the data directory, and the damaged ones with the error that opening each gives (exit
 * status 1 when any is damaged). */
static int cli_db_list(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_db_list, argc, argv, NULL, pos, &npos);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_db_list(ctx);
    ctx->readonly = true;
    if ((rc = cli_open_env(ctx))) return rc;
    char **names, **damaged;
    size_t count, ndamaged;
    if ((rc = jvdb_db_list(ctx->env, &names, &count))) return cli_lib_error(rc);
    if ((rc = jvdb_db_list_damaged(ctx->env, &damaged, &ndamaged))) {
        jvdb_free_names(names, count);
        return cli_lib_error(rc);
    }
    /* Opening a damaged database fails at once with the sentence that says what it holds. */
    json_t *bad = json_array();
    for (size_t i = 0; i < ndamaged; i++) {
        jvdb_db *db;
        const char *msg = jvdb_db_open(ctx->env, damaged[i], &db) ? jvdb_errmsg() : "damaged";
        json_array_append_new(bad, json_pack("{ssss}", "name", damaged[i], "error", msg));
        if (!ctx->json) fprintf(stderr, "jvdb: %s\n", msg);
    }
    jvdb_free_names(damaged, ndamaged);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < count; i++) json_array_append_new(arr, json_string(names[i]));
        jvdb_free_names(names, count);
        json_t *doc = json_pack("{so}", "databases", arr);
        if (ndamaged) json_object_set(doc, "damaged", bad);
        json_decref(bad);
        rc = cli_print_json(doc);
        return rc ? rc : ndamaged ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    }
    json_decref(bad);
    for (size_t i = 0; i < count; i++) puts(names[i]);
    jvdb_free_names(names, count);
    return ndamaged ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* `db info NAME`: a database's settings, count and storage statistics (read-only). */
static int cli_db_info(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    jvdb_db *db;
    ctx->readonly = true;
    int npos, rc = cli_parse_db(ctx, &cli_cmd_db_info, argc, argv, NULL, pos, &npos, &db);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_db_info(ctx, pos[0]);
    jvdb_stats st;
    if ((rc = jvdb_stats_get(db, &st))) return cli_lib_error(rc);
    uint64_t count = jvdb_count(db);
    if (ctx->json) {
        return cli_print_json(cli_db_json(db, &count, cli_stats_json(db, &st)));
    }
    cli_db_print(db);
    printf("count:             %llu\n", (unsigned long long)count);
    printf("\n");
    cli_stats_print(db, &st);
    return CLI_EXIT_OK;
}

/* `db drop NAME`: deletes a database and its files. */
static int cli_db_drop(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_db_drop, argc, argv, NULL, pos, &npos);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_db_drop(ctx, pos[0]);
    if ((rc = cli_open_env(ctx))) return rc;
    if ((rc = jvdb_db_drop(ctx->env, pos[0]))) return cli_lib_error(rc);
    if (ctx->json) return cli_print_json(json_pack("{ss}", "dropped", pos[0]));
    printf("dropped database '%s'\n", pos[0]);
    return CLI_EXIT_OK;
}

struct cli_repair_out {
    struct cli_ctx *ctx;
    json_t *dropped;
};

/* Repair callback: records one dropped byte range for the JSON report and prints it at once otherwise. */
static void cli_repair_on_drop(void *arg, const char *file, uint64_t offset, uint64_t length, const char *why,
                               const char *kept)
{
    struct cli_repair_out *r = arg;
    json_array_append_new(r->dropped, json_pack("{sssIsIssss}", "file", file, "offset", (json_int_t)offset, "length",
                                                (json_int_t)length, "reason", why, "kept", kept));
    if (!r->ctx->json)
        printf("dropped bytes %llu..%llu of %s (%llu bytes: %s); kept in %s\n", (unsigned long long)offset,
               (unsigned long long)(offset + length - 1), file, (unsigned long long)length, why, kept);
}

/* `db repair NAME`: cuts damaged byte ranges out of a database's segments (keeping them aside) and reports what it
 * dropped. */
static int cli_db_repair(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_db_repair, argc, argv, NULL, pos, &npos);
    if (rc) return rc;
    if ((rc = cli_open_env(ctx))) return rc;
    struct cli_repair_out out = { ctx, json_array() };
    jvdb_repair_result res;
    if ((rc = jvdb_db_repair(ctx->env, pos[0], cli_repair_on_drop, &out, &res))) {
        json_decref(out.dropped);
        return cli_lib_error(rc);
    }
    if (ctx->json) {
        json_t *o = json_pack("{sssbsIsIsIsIso}", "database", pos[0], "changed", res.changed, "recordsKept",
                              (json_int_t)res.records_kept, "recordsRead", (json_int_t)res.records_read,
                              "rangesDropped", (json_int_t)res.ranges_dropped, "bytesDropped",
                              (json_int_t)res.bytes_dropped, "dropped", out.dropped);
        cli_json_add_deprecated(
            o, (const char *const[]){ "recordsKept", "recordsRead", "rangesDropped", "bytesDropped", NULL });
        return cli_print_json(o);
    }
    json_decref(out.dropped);
    if (!res.changed)
        printf("database '%s' has no damaged record; nothing to repair (%llu records)\n", pos[0],
               (unsigned long long)res.records_kept);
    else
        printf("repaired database '%s': kept %llu records (%llu read), dropped %llu damaged range%s (%llu bytes)\n",
               pos[0], (unsigned long long)res.records_kept, (unsigned long long)res.records_read,
               (unsigned long long)res.ranges_dropped, res.ranges_dropped == 1 ? "" : "s",
               (unsigned long long)res.bytes_dropped);
    return CLI_EXIT_OK;
}

int cli_db_main(struct cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli_ctx *, int, char **);
    } subs[] = { { "create", cli_db_create },
                 { "list", cli_db_list },
                 { "info", cli_db_info },
                 { "repair", cli_db_repair },
                 { "drop", cli_db_drop } };

    if (argc < 2) return cli_usage_error("db", "missing subcommand (create, list, info, repair, drop)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(cli_cmd_db.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(ctx, argc - 1, argv + 1);
    return cli_usage_error("db", "unknown subcommand '%s' (create, list, info, repair, drop)", argv[1]);
}

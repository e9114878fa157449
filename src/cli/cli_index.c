/*
 * cli_index.c — the `jvdb index` group: payload index declarations (issue 12; docs/CLI.md):
 *
 *   jvdb index payload create NAME FIELD --type keyword|numeric
 *   jvdb index payload list NAME
 *   jvdb index payload drop NAME FIELD
 *
 * Only declarations: the library persists them in the database's MANIFEST and builds the indexes
 * in memory when searches need them.  `list` only reads (the data directory opens read-only).
 * The type goes through the library's parser, so the CLI and REST accept the same spellings.
 */
#include "cli/cli.h"

#include <string.h>

const struct cli_cmd cli_cmd_index = {
    "index",
    "Usage: jvdb [--data DIR] index payload SUBCOMMAND ...\n"
    "\n"
    "  index payload create NAME FIELD --type keyword|numeric\n"
    "  index payload list NAME\n"
    "  index payload drop NAME FIELD\n"
    "\n"
    "A payload index on a metadata field (a dotted path, as in filters) makes filtered searches on\n"
    "it fast; answers are the same with or without one.  keyword: string equality, $in, $ne, $nin\n"
    "(list fields: contains), $exists.  numeric: $gt $gte $lt $lte (numeric strings count, as in\n"
    "filters), equality and $in on numbers, $exists.  Every subcommand takes --json.\n",
    2, -1
};

static const struct cli_cmd cli_cmd_index_create = {
    "index payload create",
    "Usage: jvdb [--data DIR] index payload create NAME FIELD --type keyword|numeric [--json]\n"
    "\n"
    "Declares a payload index on FIELD of database NAME (declaring it again with another type\n"
    "replaces it; with the same type it is a no-op).\n",
    2, 2
};

static const struct cli_cmd cli_cmd_index_list = {
    "index payload list",
    "Usage: jvdb [--data DIR] index payload list NAME [--json]\n"
    "\n"
    "Lists the payload indexes of database NAME, one \"FIELD TYPE\" line each, sorted by field.\n",
    1, 1
};

static const struct cli_cmd cli_cmd_index_drop = {
    "index payload drop",
    "Usage: jvdb [--data DIR] index payload drop NAME FIELD [--json]\n"
    "\n"
    "Removes the payload index on FIELD of database NAME (exit 1 when there is none).\n",
    2, 2
};

/* `index payload create NAME FIELD --type T` */
static int cli_index_create(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { "type", true, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_index_create, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    jvdb_payload_type type;
    if (!opts[0].value) return cli_usage_error("index payload create", "--type keyword|numeric is required");
    if (jvdb_payload_type_parse(opts[0].value, &type) != JVDB_OK)
        return cli_usage_error("index payload create", "--type: %s", jvdb_errmsg());
    jvdb_db *db;
    if ((rc = cli_open_db(ctx, pos[0], &db))) return rc;
    if ((rc = jvdb_db_payload_index_create(db, pos[1], type))) return cli_lib_error(rc);
    if (ctx->json)
        return cli_print_json(
            json_pack("{ss ss ss}", "database", pos[0], "field", pos[1], "type", jvdb_payload_type_name(type)));
    printf("payload index on '%s' of '%s': %s\n", pos[1], pos[0], jvdb_payload_type_name(type));
    return CLI_EXIT_OK;
}

/* `index payload list NAME` */
static int cli_index_list(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_index_list, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    ctx->readonly = true;
    jvdb_db *db;
    if ((rc = cli_open_db(ctx, pos[0], &db))) return rc;
    jvdb_payload_index *v;
    size_t n;
    if ((rc = jvdb_db_payload_index_list(db, &v, &n))) return cli_lib_error(rc);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
            json_array_append_new(arr,
                                  json_pack("{ss ss}", "field", v[i].field, "type", jvdb_payload_type_name(v[i].type)));
        jvdb_free(v);
        json_t *o = json_pack("{ss so}", "database", pos[0], "payloadIndexes", arr);
        cli_json_add_deprecated(o, (const char *const[]){ "payloadIndexes", NULL });
        return cli_print_json(o);
    }
    for (size_t i = 0; i < n; i++) printf("%s %s\n", v[i].field, jvdb_payload_type_name(v[i].type));
    jvdb_free(v);
    return CLI_EXIT_OK;
}

/* `index payload drop NAME FIELD` */
static int cli_index_drop(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_index_drop, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    jvdb_db *db;
    if ((rc = cli_open_db(ctx, pos[0], &db))) return rc;
    if ((rc = jvdb_db_payload_index_drop(db, pos[1]))) return cli_lib_error(rc);
    if (ctx->json) return cli_print_json(json_pack("{ss ss sb}", "database", pos[0], "field", pos[1], "deleted", 1));
    printf("payload index on '%s' of '%s' dropped\n", pos[1], pos[0]);
    return CLI_EXIT_OK;
}

int cli_index_main(struct cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli_ctx *, int, char **);
    } subs[] = { { "create", cli_index_create }, { "list", cli_index_list }, { "drop", cli_index_drop } };

    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(cli_cmd_index.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    if (argc < 2 || strcmp(argv[1], "payload"))
        return cli_usage_error("index", "%s (the group is 'index payload create|list|drop')",
                               argc < 2 ? "missing subcommand" : "unknown subcommand");
    if (argc < 3) return cli_usage_error("index payload", "missing subcommand (create, list, drop)");
    if (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        fputs(cli_cmd_index.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[2], subs[i].name)) return subs[i].fn(ctx, argc - 2, argv + 2);
    return cli_usage_error("index payload", "unknown subcommand '%s' (create, list, drop)", argv[2]);
}

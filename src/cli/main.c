/*
 * main.c — entry point of the jvdb program: global flags (--data, --json, --help, --version), the
 * command table, and handing `serve` to the server when this build has one.
 *
 * Every command except `serve` opens the data directory itself through the library, does one thing
 * and exits, so the directory lock is held only for the length of the command; while `jvdb serve`
 * holds it, or with --server, the command goes to the server instead (cli_remote.c).  The
 * environment is closed here, once, whatever the command did, so a final fdatasync always happens.  A command that
 * only reads opens it read-only (cli_ctx.readonly): it changes no file, whatever it finds there.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include <stdlib.h>
#include <string.h>

#include "server/server.h"

typedef int (*cli_main_fn)(struct cli_ctx *ctx, int argc, char **argv);

struct cli_command {
    const char *name;
    cli_main_fn fn;
    const struct cli_cmd *help;
    const char *summary;
};

static const struct cli_command cli_commands[] = {
    { "db", cli_db_main, &cli_cmd_db, "create, list, inspect, repair and drop databases" },
    { "backup", cli_backup_main, &cli_cmd_backup, "create, list, verify, restore and prune backups" },
    { "import", cli_import_main, &cli_cmd_import, "load vectors from fvecs, npy, jsonl or csv" },
    { "export", cli_export_main, &cli_cmd_export, "write every vector to jsonl, fvecs or csv" },
    { "put", cli_put_main, &cli_cmd_put, "insert or replace one vector" },
    { "get", cli_get_main, &cli_cmd_get, "print one vector and its metadata" },
    { "search", cli_search_main, &cli_cmd_search, "nearest neighbours of a query vector or file" },
    { "delete", cli_delete_main, &cli_cmd_delete, "delete vectors by id, ids file or filter" },
    { "count", cli_count_main, &cli_cmd_count, "count vectors, or those matching a filter" },
    { "stats", cli_stats_main, &cli_cmd_stats, "storage statistics of a database" },
    { "compact", cli_compact_main, &cli_cmd_compact, "reclaim the space of deleted vectors" },
    { "index", cli_index_main, &cli_cmd_index, "declare, list and drop payload indexes" },
    { "keys", cli_keys_main, &cli_cmd_keys, "create, list and revoke the server's API keys" },
};

/* `jvdb --help`: the commands and the global options. */
static void cli_print_help(void)
{
    printf("Usage: jvdb [--data DIR] COMMAND [ARGS...] [--json]\n"
           "\n"
           "JadeVectorDB command-line tool: works on a data directory through the library.\n"
           "\n"
           "Commands:\n");
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++)
        printf("  %-8s %s\n", cli_commands[i].name, cli_commands[i].summary);
    printf("  %-8s %s\n", "serve", "run the REST server on the data directory");
    printf("  %-8s %s\n", "help", "help on a command: jvdb help import");
    printf("\n"
           "Global options (before COMMAND):\n"
           "  --data DIR     data directory (default: $JVDB_DATA, else ./jvdb-data); it must exist,\n"
           "                 except for 'db create', 'backup restore' and with --create\n"
           "  --create       make the data directory if it does not exist\n"
           "  --server URL   send the command to the server at URL (default: $JVDB_SERVER); without\n"
           "                 it, a server running on the data directory is used through its socket\n"
           "  --api-key KEY  the key for --server (default: $JVDB_API_KEY)\n"
           "  --json         machine-readable output (also accepted after COMMAND)\n"
           "  --help, -h     this help\n"
           "  --version, -V  print the version\n"
           "\n"
           "Exit status: 0 success, 1 the operation failed, 2 the command line was wrong.\n"
           "Run 'jvdb COMMAND --help' for the options of a command.\n");
}

/* The command named name, or NULL. */
static const struct cli_command *cli_find_command(const char *name)
{
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++)
        if (!strcmp(cli_commands[i].name, name)) return &cli_commands[i];
    return NULL;
}

static int cli_serve(int argc, char **argv, const char *data_dir) { return server_main(argc, argv, data_dir); }

/* `jvdb help db create` is `jvdb db create --help`: one place prints each text. */
static int cli_help_command(struct cli_ctx *ctx, int argc, char **argv)
{
    if (argc < 2) {
        cli_print_help();
        return CLI_EXIT_OK;
    }
    const struct cli_command *c = cli_find_command(argv[1]);
    if (!c) {
        if (!strcmp(argv[1], "serve")) return cli_serve(2, (char *[]){ "serve", "--help", NULL }, ctx->data_dir);
        return cli_usage_error(NULL, "unknown command '%s'", argv[1]);
    }
    char *sub[4] = { argv[1], argc > 2 ? argv[2] : "--help", "--help", NULL };
    return c->fn(ctx, argc > 2 ? 3 : 2, sub);
}

int main(int argc, char **argv)
{
    struct cli_ctx ctx = { 0 };
    const char *server = NULL, *api_key = NULL;
    ctx.data_dir = getenv("JVDB_DATA");
    if (!ctx.data_dir || !*ctx.data_dir) ctx.data_dir = "./jvdb-data";

    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help();
            return CLI_EXIT_OK;
        }
        if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
            printf("jvdb %s\n", JVDB_VERSION);
            return CLI_EXIT_OK;
        }
        if (!strcmp(a, "--json")) {
            ctx.json = true;
        } else if (!strcmp(a, "--create")) {
            ctx.create = true;
        } else if (!strncmp(a, "--server=", 9) || !strcmp(a, "--server")) {
            if (a[8] == '=') server = a + 9;
            else if (i + 1 >= argc) return cli_usage_error(NULL, "option '--server' needs a URL");
            else server = argv[++i];
            if (!*server) return cli_usage_error(NULL, "--server is empty");
        } else if (!strncmp(a, "--api-key=", 10) || !strcmp(a, "--api-key")) {
            if (a[9] == '=') api_key = a + 10;
            else if (i + 1 >= argc) return cli_usage_error(NULL, "option '--api-key' needs a key");
            else api_key = argv[++i];
        } else if (!strncmp(a, "--data=", 7)) {
            ctx.data_dir = a + 7;
        } else if (!strcmp(a, "--data")) {
            if (i + 1 >= argc) return cli_usage_error(NULL, "option '--data' needs a directory");
            ctx.data_dir = argv[++i];
        } else {
            return cli_usage_error(NULL, "unknown option '%s'", a);
        }
    }
    if (!*ctx.data_dir) return cli_usage_error(NULL, "the data directory name is empty");
    if (i >= argc) {
        cli_usage_error(NULL, "no command given");
        return CLI_EXIT_USAGE;
    }

    const char *name = argv[i];
    if (!strcmp(name, "serve")) return cli_serve(argc - i, argv + i, ctx.data_dir);

    /* Commands that only read open the data directory read-only: they never change a file, not
     * even to cut a torn tail (`db list` and `db info` say so in cli_db.c). */
    static const char *const readonly_cmds[] = { "get", "search", "export", "stats" };
    for (size_t k = 0; k < sizeof readonly_cmds / sizeof readonly_cmds[0]; k++)
        if (!strcmp(name, readonly_cmds[k])) ctx.readonly = true;

    int rc;
    const struct cli_command *c = cli_find_command(name);
    /* Beside a running server (or with --server) the command goes to the server (cli_remote.c). */
    if (c && (rc = cli_remote_setup(&ctx, server, api_key, argc - i, argv + i))) {
        cli_remote_free(&ctx);
        return rc;
    }
    if (!strcmp(name, "help")) rc = cli_help_command(&ctx, argc - i, argv + i);
    else if (c) rc = c->fn(&ctx, argc - i, argv + i);
    else return cli_usage_error(NULL, "unknown command '%s'", name);
    if (rc == CLI_HELP_SHOWN) rc = CLI_EXIT_OK;

    jvdb_env_close(ctx.env);
    cli_remote_free(&ctx);
    /* Output that never reached its destination (full disk, closed pipe) is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == CLI_EXIT_OK) rc = cli_fail("cannot write to standard output");
    }
    return rc;
}

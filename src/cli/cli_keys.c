/*
 * cli_keys.c — `jvdb keys create|list|revoke`: the server's API keys, managed in the data
 * directory's key file (src/server/keys.c) whether or not a server is running on it.
 *
 * The CLI never opens the data directory's databases (so it needs no lock on them and works beside
 * a running server): it changes <data>/server/api-keys under the key file's own lock, and a running
 * server picks the change up within a second (it watches the file; SIGHUP reloads at once).
 * `create` prints the key once; only its hash is stored.  `list` only reads.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include "server/keys.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const struct cli_cmd cli_cmd_keys = {
    "keys",
    "Usage: jvdb [--data DIR] keys SUBCOMMAND ...\n"
    "\n"
    "  keys create --role read|write|admin [--database NAME]... [--expires D] [--description T]\n"
    "  keys list\n"
    "  keys revoke KEY_ID\n"
    "\n"
    "API keys of 'jvdb serve' on this data directory (stored as hashes in DIR/server/api-keys).\n"
    "Works whether or not the server is running: a running server applies changes within a second.\n"
    "Every subcommand takes --json.  Run 'jvdb keys SUBCOMMAND --help' for details.\n",
    1, -1
};

static const struct cli_cmd cli_cmd_keys_create = {
    "keys create",
    "Usage: jvdb [--data DIR] keys create --role ROLE [options] [--json]\n"
    "\n"
    "Creates an API key and prints it once: it is stored only as a SHA-256 hash, so keep it now.\n"
    "\n"
    "  --role read|write|admin  read: get, search, database info and stats; write: read + vector\n"
    "                           writes and deletes; admin: everything (databases, compaction,\n"
    "                           backups, keys, shutdown)\n"
    "  --database NAME          limit the key to this database (repeatable; default: every database)\n"
    "  --expires D              expiry: a duration from now (30d, 12h) or a UTC date (2027-01-31,\n"
    "                           2027-01-31T12:00:00Z); default: never\n"
    "  --description T          a note shown by 'keys list' (up to 256 bytes)\n"
    "  --json                   print {\"keyId\", \"role\", ..., \"apiKey\"}\n",
    0, 0
};

static const struct cli_cmd cli_cmd_keys_list = {
    "keys list",
    "Usage: jvdb [--data DIR] keys list [--json]\n"
    "\n"
    "Lists the API keys (id, role, databases, creation, expiry, description; never the keys).\n"
    "Changes nothing.\n",
    0, 0
};

static const struct cli_cmd cli_cmd_keys_revoke = {
    "keys revoke",
    "Usage: jvdb [--data DIR] keys revoke KEY_ID [--json]\n"
    "\n"
    "Deletes the API key with this id; a running server refuses it (401) within a second.\n",
    1, 1
};

/* Takes every "--database NAME" / "--database=NAME" out of argv into dbs; returns the new argc, or
 * -1 after a usage error. */
static int cli_keys_take_dbs(int argc, char **argv, const char **dbs, size_t *ndb)
{
    int w = 0;
    *ndb = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--database")) {
            if (i + 1 >= argc) return cli_usage_error("keys create", "option '--database' needs a value"), -1;
            v = argv[++i];
        } else if (!strncmp(argv[i], "--database=", 11)) {
            v = argv[i] + 11;
        } else {
            argv[w++] = argv[i];
            continue;
        }
        if (*ndb >= KEY_MAX_DATABASES)
            return cli_usage_error("keys create", "at most %d --database options", KEY_MAX_DATABASES), -1;
        dbs[(*ndb)++] = v;
    }
    return w;
}

/* Prints one API key as a line: id, role, databases, creation and expiry (marked when past), description. */
static void cli_keys_print(const struct key_entry *e, int64_t now)
{
    char created[32], exp[32] = "never";
    keys_time_text(e->created_s, created);
    if (e->expires_s) keys_time_text(e->expires_s, exp);
    printf("%s  %-5s  ", e->id, key_role_name(e->role));
    if (!e->ndb) printf("all databases");
    for (size_t i = 0; i < e->ndb; i++) printf("%s%s", i ? "," : "", e->databases[i]);
    printf("  created %s  expires %s%s", created, exp, e->expires_s && e->expires_s <= now ? " (expired)" : "");
    if (*e->description) printf("  \"%s\"", e->description);
    putchar('\n');
}

/* `keys create --role R [--database NAME...] [--expires T]`: makes an API key and prints its secret once. */
static int cli_keys_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_keys_create;
    const char *dbs[KEY_MAX_DATABASES];
    struct key_spec sp = { 0 };
    argc = cli_keys_take_dbs(argc, argv, dbs, &sp.ndb);
    if (argc < 0) return CLI_EXIT_USAGE;
    struct cli_opt opts[] = {
        { "role", true, NULL }, { "expires", true, NULL }, { "description", true, NULL }, { NULL, false, NULL }
    };
    enum { ROLE, EXPIRES, DESC };
    char *pos[argc + 1];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    if (!opts[ROLE].value) return cli_usage_error(cmd->name, "--role is required (read, write or admin)");
    if (!(sp.role = key_role_parse(opts[ROLE].value)))
        return cli_usage_error(cmd->name, "--role '%s' is not read, write or admin", opts[ROLE].value);
    int64_t now = (int64_t)time(NULL);
    if (opts[EXPIRES].value && keys_parse_expiry(opts[EXPIRES].value, now, &sp.expires_s))
        return cli_usage_error(cmd->name,
                               "--expires '%s' is neither a duration (30d, 12h) nor a UTC date (2027-01-31, "
                               "2027-01-31T12:00:00Z)",
                               opts[EXPIRES].value);
    sp.databases = dbs;
    sp.description = opts[DESC].value;
    char err[700], text[KEY_TEXT_LEN + 1];
    if (keys_spec_check(&sp, now, err, sizeof err)) return cli_usage_error(cmd->name, "%s", err);
    if (ctx->remote)
        return cli_remote_keys_create(ctx, key_role_name(sp.role), dbs, sp.ndb, sp.expires_s, sp.description);
    struct key_entry e;
    if (keys_create(ctx->data_dir, &sp, text, &e, err, sizeof err)) return cli_fail("%s", err);
    if (ctx->json) {
        json_t *doc = keys_entry_json(&e, now);
        json_object_set_new(doc, "apiKey", json_string(text));
        cli_json_add_deprecated(doc, (const char *const[]){ "apiKey", NULL });
        rc = cli_print_json(doc);
    } else {
        printf("%s\n", text);
        fprintf(stderr, "API key %s created (role %s); it is shown only this once.\n", e.id, key_role_name(e.role));
        rc = CLI_EXIT_OK;
    }
    OPENSSL_cleanse(text, sizeof text);
    keys_entry_free(&e);
    return rc;
}

/* `keys list`: the API keys of the data directory (never their secrets). */
static int cli_keys_list(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc + 1];
    int npos,
        rc = cli_parse(ctx, &cli_cmd_keys_list, argc, argv, (struct cli_opt[]){ { NULL, false, NULL } }, pos, &npos);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_keys_list(ctx);
    struct key_set ks;
    char err[700];
    if (access(ctx->data_dir, F_OK) != 0) return cli_fail("data directory '%s' does not exist", ctx->data_dir);
    if (keys_load(ctx->data_dir, &ks, err, sizeof err)) return cli_fail("%s", err);
    int64_t now = (int64_t)time(NULL);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ks.n; i++) json_array_append_new(arr, keys_entry_json(&ks.v[i], now));
        json_t *o = json_pack("{s:o}", "apiKeys", arr);
        cli_json_add_deprecated(o, (const char *const[]){ "apiKeys", NULL });
        rc = cli_print_json(o);
    } else {
        if (!ks.n) printf("no API keys\n");
        for (size_t i = 0; i < ks.n; i++) cli_keys_print(&ks.v[i], now);
        rc = CLI_EXIT_OK;
    }
    keys_free(&ks);
    return rc;
}

/* `keys revoke ID`: removes an API key. */
static int cli_keys_revoke(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc + 1];
    int npos,
        rc = cli_parse(ctx, &cli_cmd_keys_revoke, argc, argv, (struct cli_opt[]){ { NULL, false, NULL } }, pos, &npos);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_keys_revoke(ctx, pos[0]);
    char err[700];
    rc = keys_revoke(ctx->data_dir, pos[0], err, sizeof err);
    if (rc < 0) return cli_fail("%s", err);
    if (rc > 0) return cli_fail("no API key with id '%.40s' (see 'jvdb keys list')", pos[0]);
    if (ctx->json) {
        json_t *o = json_pack("{s:s, s:b}", "keyId", pos[0], "revoked", 1);
        cli_json_add_deprecated(o, (const char *const[]){ "keyId", NULL });
        return cli_print_json(o);
    }
    printf("API key %s revoked\n", pos[0]);
    return CLI_EXIT_OK;
}

int cli_keys_main(struct cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli_ctx *, int, char **);
    } subs[] = { { "create", cli_keys_create }, { "list", cli_keys_list }, { "revoke", cli_keys_revoke } };

    if (argc < 2) return cli_usage_error("keys", "missing subcommand (create, list, revoke)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(cli_cmd_keys.usage, stdout);
        return CLI_HELP_SHOWN;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(ctx, argc - 1, argv + 1);
    return cli_usage_error("keys", "unknown subcommand '%s' (create, list, revoke)", argv[1]);
}

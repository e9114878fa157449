/*
 * cli_vector.c — single-vector commands and per-database statistics: put, get, stats (delete and
 * count, which work on many vectors, are in cli_bulk.c).
 *
 * These are the commands people type by hand: input is parsed leniently (spaces, brackets) and the
 * library's own checks (dimension, NaN, metadata) supply the messages.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include <stdlib.h>
#include <string.h>

const struct cli_cmd cli_cmd_put = {
    "put",
    "Usage: jvdb [--data DIR] put NAME ID --vector V1,V2,... [--meta JSON] [--json]\n"
    "\n"
    "Inserts vector ID into database NAME, replacing any vector with the same id.\n"
    "\n"
    "  --vector LIST   exactly dim numbers separated by commas (spaces and [ ] are allowed)\n"
    "  --meta JSON     metadata, a JSON object such as '{\"title\": \"x\"}'\n"
    "  --json          print {\"id\", \"lsn\"}\n",
    2, 2
};

const struct cli_cmd cli_cmd_get = { "get",
                                     "Usage: jvdb [--data DIR] get NAME ID [--json]\n"
                                     "\n"
                                     "Prints vector ID of database NAME with its metadata\n"
                                     "(--json: {\"id\": ..., \"values\": [...], \"metadata\": {...} or null}).\n",
                                     2, 2 };

const struct cli_cmd cli_cmd_stats = {
    "stats",
    "Usage: jvdb [--data DIR] stats NAME [--json]\n"
    "\n"
    "Prints the storage statistics of database NAME: live and dead records, tombstones, file,\n"
    "live and dead bytes, dead ratio, segment count, last LSN and backup horizon, and whether\n"
    "compaction is due by the database's policy, and why (run it with 'jvdb compact NAME').\n",
    1, 1
};

/* Checked here, not left to the library, so the message can say what the user typed. */
static int cli_check_meta(const char *meta)
{
    json_error_t err;
    json_t *j = json_loads(meta, JSON_REJECT_DUPLICATES, &err);
    if (!j) return cli_fail("--meta is not valid JSON: %s (column %d)", err.text, err.column);
    bool obj = json_is_object(j);
    json_decref(j);
    return obj ? 0 : cli_fail("--meta must be a JSON object, like '{\"key\": \"value\"}'");
}

int cli_put_main(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { "vector", true, NULL }, { "meta", true, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_put, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    if (!opts[0].value) return cli_usage_error("put", "--vector is required");
    float *v = NULL;
    size_t n = 0;
    if ((rc = cli_parse_vector("put", "--vector", opts[0].value, &v, &n))) return rc;
    if (opts[1].value && (rc = cli_check_meta(opts[1].value))) goto out;

    jvdb_db *db;
    uint64_t lsn;
    if (ctx->remote) {
        if ((rc = cli_remote_put(ctx, pos[0], pos[1], v, n, opts[1].value, &lsn))) goto out;
    } else if ((rc = cli_open_db(ctx, pos[0], &db))) {
        goto out;
    } else if ((rc = jvdb_put(db, pos[1], v, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n, opts[1].value, &lsn))) {
        rc = cli_lib_error(rc);
        goto out;
    }
    if (ctx->json)
        rc = cli_print_json(json_pack("{sosI}", "id", cli_json_id(pos[1], strlen(pos[1])), "lsn", (json_int_t)lsn));
    else printf("stored '%s' in '%s' (lsn %llu)\n", pos[1], pos[0], (unsigned long long)lsn);
out:
    free(v);
    return rc;
}

int cli_get_main(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    jvdb_db *db;
    int npos, rc = cli_parse_db(ctx, &cli_cmd_get, argc, argv, NULL, pos, &npos, &db);
    if (rc) return rc;
    uint32_t dim;
    float *v;
    char *meta = NULL;
    if (ctx->remote) {
        if ((rc = cli_remote_get(ctx, pos[0], pos[1], &v, &dim, &meta))) return rc;
    } else {
        dim = jvdb_db_dim(db);
        if (!(v = malloc(dim * sizeof *v))) return cli_fail("out of memory");
    }
    if (!ctx->remote && (rc = jvdb_get(db, pos[1], v, &meta))) {
        free(v);
        return cli_lib_error(rc);
    }
    if (ctx->json) {
        json_t *m = meta ? json_loads(meta, 0, NULL) : json_null();
        if (!m) m = json_string(meta); /* stored text that is not JSON: still show it */
        rc = cli_print_json(json_pack("{sososo}", "id", cli_json_id(pos[1], strlen(pos[1])), "values",
                                      cli_json_floats(v, dim), "metadata", m));
    } else {
        printf("id:       %s\n", pos[1]);
        printf("vector:   ");
        cli_write_floats(stdout, v, dim, ',');
        printf("\nmetadata: %s\n", meta ? meta : "(none)");
    }
    jvdb_free(meta);
    free(v);
    return rc;
}

int cli_stats_main(struct cli_ctx *ctx, int argc, char **argv)
{
    char *pos[argc];
    jvdb_db *db;
    int npos, rc = cli_parse_db(ctx, &cli_cmd_stats, argc, argv, NULL, pos, &npos, &db);
    if (rc) return rc;
    if (ctx->remote) return cli_remote_stats(ctx, pos[0]);
    jvdb_stats st;
    if ((rc = jvdb_stats_get(db, &st))) return cli_lib_error(rc);
    if (ctx->json) return cli_print_json(cli_stats_json(db, &st));
    cli_stats_print(db, &st);
    return CLI_EXIT_OK;
}

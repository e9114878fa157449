/*
 * cli_bulk.c — commands on many vectors at once: delete (by ids, an ids file or a filter) and count.
 *
 * A delete is one library call, so one batch and one fsync however many ids it names (issue 12:
 * 200,000 ids took 59 s one fsync at a time).  Ids named on the command line keep their old rule,
 * every one must exist or nothing is deleted, since a hand-typed id that matches nothing is a typo;
 * ids from a file or a filter are a set to remove, where absent ones are no-ops and are counted.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"
#include "core/grow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const struct cli_cmd cli_cmd_delete = {
    "delete",
    "Usage: jvdb [--data DIR] delete NAME ID... [--json]\n"
    "       jvdb [--data DIR] delete NAME --ids-file FILE [--json]\n"
    "       jvdb [--data DIR] delete NAME --filter JSON [--json]\n"
    "\n"
    "Deletes vectors in one all-or-nothing batch.  Ids given as arguments must all exist; if one\n"
    "does not, nothing is deleted.  With --ids-file (one id per line, '-' for stdin) ids that do not\n"
    "exist are skipped and counted; with --filter every vector whose metadata matches is deleted\n"
    "(the filter language of 'jvdb search --filter'; an empty filter is refused).\n"
    "--json prints {\"deleted\": N}, with --ids-file also \"skipped\": M (ids not found or repeated).\n",
    1, -1
};

const struct cli_cmd cli_cmd_count = { "count",
                                       "Usage: jvdb [--data DIR] count NAME [--filter JSON] [--json]\n"
                                       "\n"
                                       "Prints how many vectors database NAME holds, or how many match the filter\n"
                                       "(--json: {\"count\": N}).\n",
                                       1, 1 };

/* Reads one id per line (a trailing \r is dropped, empty lines skipped) into a malloc'd array of
 * pointers into the malloc'd *text. */
static int cli_read_ids(const char *path, char **text, const char ***ids, size_t *n)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return cli_fail("cannot open --ids-file %s: %s", path, strerror(errno));
    size_t cap = 0, len = 0;
    char *buf = NULL;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            char *b = grow_array(buf, &cap, len + 65536 + 1, 1, 1 << 20);
            if (!b) {
                free(buf);
                if (f != stdin) fclose(f);
                return cli_fail("out of memory");
            }
            buf = b;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        free(buf);
        return cli_fail("cannot read --ids-file %s", path);
    }
    buf[len] = '\0';
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    const char **v = malloc(lines * sizeof *v);
    if (!v) {
        free(buf);
        return cli_fail("out of memory");
    }
    size_t k = 0;
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        char *end = nl ? nl : buf + len;
        if (end > p && end[-1] == '\r') end[-1] = '\0';
        *end = '\0';
        if (*p) v[k++] = p;
        p = end + 1;
    }
    *text = buf;
    *ids = v;
    *n = k;
    return 0;
}

/* Prints the outcome of a delete; `skipped` is reported for an ids file only (with_skipped). */
static int cli_delete_report(struct cli_ctx *ctx, const char *name, uint64_t deleted, int with_skipped,
                             uint64_t skipped)
{
    if (ctx->json && !with_skipped) return cli_print_json(json_pack("{sI}", "deleted", (json_int_t)deleted));
    if (ctx->json)
        return cli_print_json(json_pack("{sIsI}", "deleted", (json_int_t)deleted, "skipped", (json_int_t)skipped));
    printf("deleted %llu vector%s from '%s'", (unsigned long long)deleted, deleted == 1 ? "" : "s", name);
    if (skipped) printf(" (%llu ids skipped: not found or repeated)", (unsigned long long)skipped);
    printf("\n");
    return CLI_EXIT_OK;
}

/* cli_delete_args through a server: each id is read first, then all are deleted in one request. */
static int cli_remote_delete_args(struct cli_ctx *ctx, char **pos, int npos)
{
    int rc;
    for (int i = 1; i < npos; i++) {
        float *v = NULL;
        char *meta = NULL;
        uint32_t dim;
        rc = cli_remote_get(ctx, pos[0], pos[i], &v, &dim, &meta);
        free(v);
        free(meta);
        if (rc) return cli_fail("nothing deleted");
    }
    uint64_t deleted = 0;
    if (cli_remote_delete(ctx, pos[0], (const char *const *)pos + 1, (size_t)npos - 1, NULL, &deleted))
        return cli_fail("nothing deleted");
    return cli_delete_report(ctx, pos[0], deleted, 0, 0);
}

/* Ids typed as arguments: all must exist (checked first; this process holds the directory). */
static int cli_delete_args(struct cli_ctx *ctx, jvdb_db *db, char **pos, int npos)
{
    int rc;
    for (int i = 1; i < npos; i++)
        if ((rc = jvdb_get(db, pos[i], NULL, NULL))) {
            cli_lib_error(rc);
            return cli_fail("nothing deleted");
        }
    uint64_t deleted = 0;
    if ((rc = jvdb_delete_ids(db, (const char *const *)pos + 1, (size_t)npos - 1, &deleted, NULL))) {
        cli_lib_error(rc);
        return cli_fail("nothing deleted");
    }
    return cli_delete_report(ctx, pos[0], deleted, 0, 0);
}

int cli_delete_main(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { "ids-file", true, NULL }, { "filter", true, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_delete, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    int ways = (npos > 1) + (opts[0].value != NULL) + (opts[1].value != NULL);
    if (ways != 1) return cli_usage_error("delete", "give ids, --ids-file or --filter (exactly one)");
    jvdb_filter *filter = NULL;
    if (opts[1].value) {
        if ((rc = jvdb_filter_parse(opts[1].value, &filter)))
            return cli_usage_error("delete", "--filter: %s", jvdb_errmsg());
        json_t *doc = json_loads(opts[1].value, 0, NULL);
        size_t conds = json_object_size(doc);
        json_decref(doc);
        if (conds == 0) {
            jvdb_filter_free(filter);
            return cli_usage_error("delete", "--filter is empty: it would delete every vector (use 'jvdb db drop')");
        }
    }
    char *text = NULL;
    const char **ids = NULL;
    size_t n = 0;
    if (opts[0].value && (rc = cli_read_ids(opts[0].value, &text, &ids, &n))) goto out;
    jvdb_db *db;
    uint64_t deleted = 0;
    if (ctx->remote) {
        if (npos > 1) {
            rc = cli_remote_delete_args(ctx, pos, npos);
            goto out;
        }
        rc = cli_remote_delete(ctx, pos[0], ids, n, opts[1].value, &deleted);
        if (rc) {
            rc = cli_fail("nothing deleted");
            goto out;
        }
        rc = cli_delete_report(ctx, pos[0], deleted, !filter, filter ? 0 : n - deleted);
        goto out;
    }
    if ((rc = cli_open_db(ctx, pos[0], &db))) goto out;
    if (npos > 1) {
        rc = cli_delete_args(ctx, db, pos, npos);
        goto out;
    }
    rc = filter ? jvdb_delete_filtered(db, filter, &deleted) : jvdb_delete_ids(db, ids, n, &deleted, NULL);
    if (rc) {
        cli_lib_error(rc);
        rc = cli_fail("nothing deleted");
        goto out;
    }
    rc = cli_delete_report(ctx, pos[0], deleted, !filter, filter ? 0 : n - deleted);
out:
    jvdb_filter_free(filter);
    free(ids);
    free(text);
    return rc;
}

int cli_count_main(struct cli_ctx *ctx, int argc, char **argv)
{
    struct cli_opt opts[] = { { "filter", true, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_count, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    jvdb_filter *filter = NULL;
    if (opts[0].value && (rc = jvdb_filter_parse(opts[0].value, &filter)))
        return cli_usage_error("count", "--filter: %s", jvdb_errmsg());
    jvdb_db *db;
    uint64_t n = 0;
    if (ctx->remote) {
        if ((rc = cli_remote_count(ctx, pos[0], opts[0].value, &n))) goto out;
    } else if ((rc = cli_open_db(ctx, pos[0], &db))) {
        goto out;
    } else if ((rc = jvdb_count_filtered(db, filter, &n))) {
        rc = cli_lib_error(rc);
        goto out;
    }
    if (ctx->json) rc = cli_print_json(json_pack("{sI}", "count", (json_int_t)n));
    else printf("%llu\n", (unsigned long long)n);
out:
    jvdb_filter_free(filter);
    return rc;
}

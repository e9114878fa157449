/*
 * cli_import.c — `jvdb import`: reads fvecs, npy, jsonl or csv and writes the rows with
 * jvdb_put_batch, one batch of --batch rows at a time.
 *
 * The readers (cli_read.c, shared with `jvdb search --query-file`) fill one row (id, values,
 * metadata) at a time straight into the batch, so memory stays at one batch whatever the file size.
 * Every row is checked by the reader (dimension, finite values, id length, metadata is an object)
 * before it joins a batch, because only the reader knows the line or row to name; a bad row stops
 * the import and the batches already written stay (each batch is atomic in the library, so the
 * database never holds half a batch).
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"
#include "core/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const struct cli_cmd cli_cmd_import = {
    "import",
    "Usage: jvdb [--data DIR] import NAME FILE [options] [--json]\n"
    "\n"
    "Loads vectors from FILE into the existing database NAME (same ids are replaced).\n"
    "FILE '-' reads standard input (then --format is required).\n"
    "\n"
    "  --format F       fvecs | npy | jsonl | csv (default: from the file extension)\n"
    "  --id-prefix P    prepended to every id; fvecs and npy rows get ids P0, P1, ...\n"
    "  --batch N        rows per atomic batch (default 1000)\n"
    "\n"
    "Formats:\n"
    "  fvecs  per row: little-endian int32 dim, then dim float32\n"
    "  npy    2-D float32 array ('<f4', C order), npy format version 1, 2 or 3\n"
    "  jsonl  one object per line: {\"id\": \"a\", \"values\": [1, 2], \"metadata\": {...}}\n"
    "  csv    id,v1,...,vD[,metadata] per line; metadata is an optional last column holding a\n"
    "         JSON object (quote it: \"{\"\"k\"\": 1}\"); a first line is a header, skipped with a\n"
    "         note on stderr, only when every field after the id is a name (starts with a letter\n"
    "         or '_' and is not nan/inf): anything else is data and must be valid\n"
    "\n"
    "Numbers are decimal ([+-]digits[.digits][e[+-]digits]); hex, nan and inf are refused, as are\n"
    "values beyond float32.  npy shapes must match the file's size exactly.  Metadata is stored as\n"
    "the file spells it.\n"
    "\n"
    "A bad row stops the import with its line (text) or row (binary, counted from 0); the batches\n"
    "before it stay imported and the message says how many vectors that was.\n",
    2, 2
};

/* ---- the batch and the import loop ---- */

struct cli_batch {
    jvdb_record *recs;
    float *vecs;
    uint64_t *where; /* line or row of each record, to name it if the library refuses it */
    size_t n, cap;
};

/* Frees the ids and metadata of the rows in a batch and empties it (the vector buffer is reused). */
static void cli_batch_clear(struct cli_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->recs[i].id);
        free((char *)b->recs[i].meta_json);
    }
    b->n = 0;
}

/* Writes the batch; on failure reports the library's reason with the lines or rows it covered. */
static int cli_batch_commit(struct cli_ctx *ctx, jvdb_db *db, struct cli_reader *r, struct cli_batch *b,
                            uint64_t *imported)
{
    if (b->n == 0) return 0;
    int rc =
        ctx->remote ? cli_remote_put_batch(ctx, r->dbname, b->recs, b->n) : jvdb_put_batch(db, b->recs, b->n, NULL);
    if (rc) {
        /* The server words a bad record as the library does ("record 3: ..."). */
        const char *msg = ctx->remote ? cli_remote_errmsg(ctx) : *jvdb_errmsg() ? jvdb_errmsg() : jvdb_strerror(rc);
        const char *unit = r->text ? "line" : "row";
        size_t idx;
        int skip = 0;
        /* The library names the bad record by its index in the batch ("record 3: ..."); turning
         * that back into a line or row is what lets the user find it in the file. */
        if (b->n > 1 && sscanf(msg, "record %zu: %n", &idx, &skip) == 1 && skip > 0 && idx < b->n)
            cli_fail("%s: %s %llu: %s", r->path, unit, (unsigned long long)b->where[idx], msg + skip);
        else if (b->n == 1) cli_fail("%s: %s %llu: %s", r->path, unit, (unsigned long long)b->where[0], msg);
        else
            cli_fail("%s: %ss %llu-%llu: %s", r->path, unit, (unsigned long long)b->where[0],
                     (unsigned long long)b->where[b->n - 1], msg);
        cli_fail("import stopped: %llu vectors imported in the complete batches before this one; the "
                 "rest was not imported",
                 (unsigned long long)*imported);
        return CLI_EXIT_FAIL;
    }
    *imported += b->n;
    cli_batch_clear(b);
    return 0;
}

/* Reads rows into batches of batch_size and commits each whole batch; a bad row stops the import after the complete
 * batches before it, and says so. */
static int cli_import_run(struct cli_ctx *ctx, jvdb_db *db, struct cli_reader *r, size_t batch_size, uint64_t file_size)
{
    struct cli_batch b = { 0 };
    b.cap = batch_size;
    b.recs = calloc(b.cap, sizeof *b.recs);
    b.vecs = malloc(b.cap * r->dim * sizeof *b.vecs);
    b.where = malloc(b.cap * sizeof *b.where);
    if (!b.recs || !b.vecs || !b.where) {
        free(b.recs), free(b.vecs), free(b.where);
        return cli_fail("out of memory for a batch of %zu rows of dimension %u", batch_size, r->dim);
    }

    struct cli_progress prog;
    cli_progress_start(&prog, "imported", file_size);
    uint64_t imported = 0;
    int64_t t0 = clock_mono_ns();
    int rc = 0;
    for (;;) {
        char *id = NULL, *meta = NULL;
        int got = r->next(r, b.vecs + b.n * r->dim, &id, &meta);
        if (got < 0) {
            cli_progress_finish(&prog, file_size ? (uint64_t)ftello(r->f) : 0, imported);
            cli_fail("%s", r->err);
            rc = cli_fail("import stopped at %s %llu: %llu vectors imported in the complete batches "
                          "before it; the rest was not imported",
                          r->text ? "line" : "row", (unsigned long long)(r->text ? r->line : r->row),
                          (unsigned long long)imported);
            break;
        }
        if (got == 0) break;
        b.recs[b.n] = (jvdb_record){ id, b.vecs + b.n * r->dim, r->dim, meta };
        b.where[b.n++] = r->text ? r->line : r->row;
        r->row++;
        if (b.n == b.cap) {
            if ((rc = cli_batch_commit(ctx, db, r, &b, &imported))) break;
            cli_progress_update(&prog, file_size ? (uint64_t)ftello(r->f) : 0, imported);
        }
    }
    if (rc == 0) rc = cli_batch_commit(ctx, db, r, &b, &imported);
    if (rc == 0) cli_progress_finish(&prog, file_size, imported);
    cli_batch_clear(&b);
    free(b.recs), free(b.vecs), free(b.where);
    if (rc) return rc;

    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    if (ctx->json)
        return cli_print_json(json_pack("{sIsssssf}", "imported", (json_int_t)imported, "database", r->dbname, "file",
                                        r->path, "seconds", secs));
    printf("imported %llu vectors from %s into '%s' in %.2f s\n", (unsigned long long)imported, r->path, r->dbname,
           secs);
    return CLI_EXIT_OK;
}

int cli_import_main(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_import;
    struct cli_opt opts[] = {
        { "format", true, NULL }, { "id-prefix", true, NULL }, { "batch", true, NULL }, { NULL, false, NULL }
    };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    const char *name = pos[0], *path = pos[1];
    bool from_stdin = !strcmp(path, "-");

    enum cli_format fmt;
    if (opts[0].value) {
        if ((fmt = cli_format_parse(opts[0].value)) == CLI_FMT_NONE)
            return cli_usage_error(cmd->name, "--format '%s' is not one of fvecs, npy, jsonl, csv", opts[0].value);
    } else if (from_stdin) {
        return cli_usage_error(cmd->name, "reading standard input needs --format");
    } else if ((fmt = cli_format_from_name(path)) == CLI_FMT_NONE) {
        return cli_usage_error(cmd->name, "cannot tell the format of '%s' from its name; give --format", path);
    }
    uint64_t batch = 1000;
    if (opts[2].value && (!cli_parse_u64(opts[2].value, &batch) || batch == 0 || batch > 1000000))
        return cli_usage_error(cmd->name, "--batch '%s' is not a number from 1 to 1000000", opts[2].value);
    const char *prefix = opts[1].value ? opts[1].value : "";
    if (strlen(prefix) >= JVDB_MAX_ID_LEN)
        return cli_usage_error(cmd->name, "--id-prefix is longer than an id may be (%d bytes)", JVDB_MAX_ID_LEN);

    /* The input is opened before the data directory so a wrong path changes nothing there. */
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (!f) return cli_fail("cannot open '%s': %s", path, strerror(errno));
    static char iobuf[1 << 20];
    setvbuf(f, iobuf, _IOFBF, sizeof iobuf);
    uint64_t file_size = 0;
    struct stat stt;
    if (!from_stdin && fstat(fileno(f), &stt) == 0 && S_ISREG(stt.st_mode)) file_size = (uint64_t)stt.st_size;

    jvdb_db *db;
    uint32_t dim = 0;
    db = NULL;
    if (ctx->remote ? (rc = cli_remote_dim(ctx, name, &dim)) != 0 : (rc = cli_open_db(ctx, name, &db)) != 0) goto out;
    struct cli_reader r = { .f = f,
                            .path = from_stdin ? "<stdin>" : path,
                            .dbname = name,
                            .dim = db ? jvdb_db_dim(db) : dim,
                            .prefix = prefix,
                            .prefix_len = strlen(prefix) };
    if (cli_reader_start(&r, fmt)) rc = cli_fail("%s; nothing imported", r.err);
    else rc = cli_import_run(ctx, db, &r, (size_t)batch, file_size);
    cli_reader_free(&r);
out:
    if (!from_stdin) fclose(f);
    return rc;
}

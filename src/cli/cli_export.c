/*
 * cli_export.c — `jvdb export`: writes every live vector of a database, from one jvdb_iterate
 * snapshot, as jsonl, fvecs or csv, to a file or to stdout.
 *
 * The text formats print each float as its shortest decimal that reads back to the same bits, and
 * ids and metadata as stored (escaped only as JSON or CSV require), so export followed by import
 * reproduces every record byte for byte (jsonl alone must turn a raw line break in metadata, which
 * JSON allows only between tokens, into a space).  Writing them unchecked relies on the library's
 * record invariant (src/store/validate.c): every stored id is UTF-8 without control characters and
 * every metadata text one JSON object, whichever way it came in.  A file is written under a
 * temporary name and renamed at the end, so a failed export never leaves a truncated file where a
 * good one was.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const struct cli_cmd cli_cmd_export = {
    "export",
    "Usage: jvdb [--data DIR] export NAME FILE [--format jsonl|fvecs|csv] [--json]\n"
    "\n"
    "Writes every vector of database NAME to FILE ('-' for standard output), in no particular order.\n"
    "The format comes from the extension (.jsonl, .fvecs, .csv), else jsonl.\n"
    "\n"
    "  jsonl  {\"id\": ..., \"values\": [...], \"metadata\": {...}} per line (metadata only when set)\n"
    "  fvecs  int32 dim + float32 values per row; ids and metadata are not kept (a note says so)\n"
    "  csv    header id,v1,...,vD,metadata then one row per vector; the metadata column holds\n"
    "         the JSON object (quoted, line breaks kept) or is empty\n"
    "\n"
    "Importing a jsonl or csv export gives back every id and value exactly and the metadata byte for\n"
    "byte (jsonl alone turns line breaks between JSON tokens into spaces).\n",
    2, 2
};

enum cli_out_format { CLI_OUT_JSONL, CLI_OUT_FVECS, CLI_OUT_CSV };

struct cli_export {
    FILE *f;
    enum cli_out_format fmt;
    uint32_t dim;
    uint64_t written;
    struct cli_progress prog;
};

/* Writes bytes as the inside of a quoted CSV field: quotes doubled, everything else (line breaks
 * included) as it is, which RFC 4180 allows and the import reader keeps. */
static void cli_write_csv_quoted(FILE *f, const char *s, size_t len)
{
    putc('"', f);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"') putc('"', f);
        putc(s[i], f);
    }
    putc('"', f);
}

/* Metadata text is valid JSON, where a raw line break can only be whitespace between tokens (one
 * inside a string is written \n), so turning it into a space keeps the document equal and the
 * jsonl output one line per vector.  Nothing else changes: import stores the text as written. */
static void cli_write_meta_line(FILE *f, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) putc(s[i] == '\n' || s[i] == '\r' ? ' ' : s[i], f);
}

/* Whether a CSV field must be quoted to read back as the same text (empty, separators, quotes, line breaks, edge
 * blanks). */
static bool cli_csv_needs_quotes(const char *s, size_t len)
{
    if (len == 0) return true; /* an unquoted empty id would read back as a missing one */
    for (size_t i = 0; i < len; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r') return true;
    return s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t';
}

/* Scan callback of `export`: writes one record in the chosen format; non-zero stops the scan at the first write
 * error. */
static int cli_export_row(void *arg, const char *id, size_t id_len, const float *vector, const char *meta,
                          size_t meta_len, uint64_t lsn)
{
    (void)lsn;
    struct cli_export *e = arg;
    FILE *f = e->f;
    switch (e->fmt) {
    case CLI_OUT_JSONL:
        fputs("{\"id\":", f);
        cli_write_json_string(f, id, id_len);
        fputs(",\"values\":[", f);
        cli_write_floats(f, vector, e->dim, ',');
        putc(']', f);
        if (meta_len) {
            fputs(",\"metadata\":", f);
            cli_write_meta_line(f, meta, meta_len);
        }
        fputs("}\n", f);
        break;
    case CLI_OUT_FVECS: {
        int32_t d = (int32_t)e->dim;
        fwrite(&d, sizeof d, 1, f);
        fwrite(vector, sizeof *vector, e->dim, f);
        break;
    }
    case CLI_OUT_CSV:
        if (cli_csv_needs_quotes(id, id_len)) cli_write_csv_quoted(f, id, id_len);
        else fwrite(id, 1, id_len, f);
        putc(',', f);
        cli_write_floats(f, vector, e->dim, ',');
        putc(',', f);
        if (meta_len) cli_write_csv_quoted(f, meta, meta_len);
        putc('\n', f);
        break;
    }
    e->written++;
    cli_progress_update(&e->prog, e->written, e->written);
    /* Stop at the first write error instead of formatting the rest of the database for nothing. */
    return ferror(f) ? 1 : 0;
}

/* The CSV header line: id, v1..vDIM, metadata. */
static void cli_write_csv_header(FILE *f, uint32_t dim)
{
    fputs("id", f);
    for (uint32_t i = 1; i <= dim; i++) fprintf(f, ",v%u", i);
    fputs(",metadata\n", f);
}

int cli_export_main(struct cli_ctx *ctx, int argc, char **argv)
{
    const struct cli_cmd *cmd = &cli_cmd_export;
    struct cli_opt opts[] = { { "format", true, NULL }, { NULL, false, NULL } };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, cmd, argc, argv, opts, pos, &npos);
    if (rc) return rc;
    const char *name = pos[0], *path = pos[1];
    bool to_stdout = !strcmp(path, "-");

    const char *fmt_name = opts[0].value;
    if (!fmt_name) {
        const char *dot = strrchr(path, '.');
        fmt_name = dot && !strchr(dot, '/') ? dot + 1 : "jsonl";
        if (strcmp(fmt_name, "fvecs") && strcmp(fmt_name, "csv")) fmt_name = "jsonl";
    }
    struct cli_export e = { 0 };
    if (!strcmp(fmt_name, "jsonl") || !strcmp(fmt_name, "ndjson")) e.fmt = CLI_OUT_JSONL;
    else if (!strcmp(fmt_name, "fvecs")) e.fmt = CLI_OUT_FVECS;
    else if (!strcmp(fmt_name, "csv")) e.fmt = CLI_OUT_CSV;
    else return cli_usage_error(cmd->name, "--format '%s' is not one of jsonl, fvecs, csv", fmt_name);

    jvdb_db *db = NULL;
    uint64_t total = 0;
    if (ctx->remote) {
        if ((rc = cli_remote_dim(ctx, name, &e.dim)) || (rc = cli_remote_count(ctx, name, NULL, &total))) return rc;
    } else {
        if ((rc = cli_open_db(ctx, name, &db))) return rc;
        e.dim = jvdb_db_dim(db);
        total = jvdb_count(db);
    }

    /* Devices, pipes and symlinks (/dev/null, a fifo) are written in place: a rename would replace
     * them instead of writing through them. */
    struct stat st;
    bool in_place = to_stdout || (lstat(path, &st) == 0 && !S_ISREG(st.st_mode));
    char *tmp = NULL;
    if (to_stdout) {
        e.f = stdout;
    } else {
        const char *target = path;
        if (!in_place) {
            size_t n = strlen(path) + 32;
            if (!(tmp = malloc(n))) return cli_fail("out of memory");
            snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
            target = tmp;
        }
        if (!(e.f = fopen(target, "wb"))) {
            rc = cli_fail("cannot create '%s': %s", target, strerror(errno));
            free(tmp);
            return rc;
        }
    }

    if (e.fmt == CLI_OUT_CSV) cli_write_csv_header(e.f, e.dim);
    if (e.fmt == CLI_OUT_FVECS)
        fputs("jvdb: note: fvecs holds only the vectors; ids and metadata are not written (jsonl and csv "
              "keep them)\n",
              stderr);
    cli_progress_start(&e.prog, "exported", total);
    int irc = ctx->remote ? cli_remote_iterate(ctx, name, cli_export_row, &e) : jvdb_iterate(db, cli_export_row, &e);
    cli_progress_finish(&e.prog, e.written, e.written);
    int saved_errno = errno;
    bool write_failed = ferror(e.f) || fflush(e.f) != 0;
    if (!write_failed && !to_stdout && !in_place && fsync(fileno(e.f)) != 0) write_failed = true;
    if (write_failed) saved_errno = errno;
    if (!to_stdout && fclose(e.f) != 0 && !write_failed) {
        write_failed = true;
        saved_errno = errno;
    }

    if (irc < 0) {
        rc = ctx->remote ? CLI_EXIT_FAIL : cli_lib_error(irc); /* the remote failure is already reported */
    } else if (write_failed) {
        rc = cli_fail("writing '%s' failed: %s", to_stdout ? "<stdout>" : path, strerror(saved_errno));
    } else if (tmp && rename(tmp, path) != 0) {
        rc = cli_fail("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    }
    if (rc && tmp) unlink(tmp);
    free(tmp);
    if (rc) return rc;

    /* With '-' stdout carries the data, so a summary there would corrupt it. */
    if (to_stdout) return CLI_EXIT_OK;
    if (ctx->json)
        return cli_print_json(json_pack("{sIssss}", "exported", (json_int_t)e.written, "database", name, "file", path));
    printf("exported %llu vectors from '%s' to %s\n", (unsigned long long)e.written, name, path);
    return CLI_EXIT_OK;
}

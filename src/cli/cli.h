/*
 * cli.h — what the jvdb command-line files share: the run context, option parsing, error reporting
 * and number/JSON formatting.  The CLI talks to the library only through the public header jvdb.h,
 * so it exercises exactly the contract an embedding program sees.
 *
 * Exit codes are part of the interface scripts rely on: 0 success, 1 the operation failed (library
 * error, bad input file), 2 the command line itself was wrong.
 */
#ifndef JVDB_CLI_H
#define JVDB_CLI_H

#include "jvdb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* cli_parse() result when --help was asked for and printed: the command ends with exit 0. */
#define CLI_HELP_SHOWN (-1)

struct cli_ctx {
    const char *data_dir;
    bool json;                 /* --json: machine-readable output on stdout */
    jvdb_env *env;             /* opened on first use, closed by main */
    bool readonly;             /* the command only reads: the environment opens read-only (changes nothing) */
    bool create;               /* the data directory may be created (db create, --create); else it must exist */
    struct cli_remote *remote; /* non-NULL: commands go to a server (cli_remote.h), not the library */
};

/* One long option of a command.  `value` is filled by cli_parse: the argument, or "" for a flag
 * that was given; it stays NULL when the option is absent. */
struct cli_opt {
    const char *name; /* without the leading "--" */
    bool has_arg;
    const char *value;
};

struct cli_cmd {
    const char *name;  /* as the user types it: "db create" */
    const char *usage; /* the full --help text */
    int min_pos;       /* positional arguments accepted */
    int max_pos;       /* -1: no upper bound */
};

/* Parses argv (argv[0] is the command word) into options and positionals; `opts` ends with a
 * {NULL} entry, `pos` must have room for argc pointers.  --json and --help are understood for every
 * command.  Returns 0, CLI_HELP_SHOWN, or CLI_EXIT_USAGE after printing why. */
int cli_parse(struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv, struct cli_opt *opts, char **pos,
              int *npos);

/* cli_parse, then cli_open_db on the first positional (the database name): the start of every
 * command that works on one database. Through a server (ctx->remote) it only parses: *db is NULL. */
int cli_parse_db(struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv, struct cli_opt *opts,
                 char **pos, int *npos, jvdb_db **db);

/* Error reporting; each prints one line on stderr and returns the exit code to use. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_lib_error(int rc);

/* Opens the data directory (once per run) / a database in it; on failure reports and returns the
 * exit code, so callers write `if ((rc = cli_open_db(...))) return rc;`. */
int cli_open_env(struct cli_ctx *ctx);
int cli_open_db(struct cli_ctx *ctx, const char *name, jvdb_db **out);

/* Strict number parsing of a whole string: no sign for unsigned, no trailing junk, range checked.
 * cli_parse_size also takes a K/M/G/T suffix (powers of 1024). */
bool cli_parse_u64(const char *s, uint64_t *out);
bool cli_parse_size(const char *s, uint64_t *out);
/* The one number parser of the CLI: s[0..len), spaces and tabs around it ignored, must be a decimal
 * number ([+-]digits[.digits][e[+-]digits]) that is finite as a float32.  Returns NULL after storing
 * it in *out, else why not, as a phrase to follow the quoted value ("is a hexadecimal number; ...").
 * strtof alone would also take hex, "inf", "nan" and "infinity". */
const char *cli_float_problem(const char *s, size_t len, float *out);
/* cli_float_problem(...) == NULL. */
bool cli_parse_float(const char *s, size_t len, float *out);

/* Shortest of "%.6g" / "%.9g" that reads back as the same float bits; buf needs 32 bytes. */
const char *cli_format_float(float f, char *buf);
void cli_write_floats(FILE *f, const float *v, uint32_t dim, char sep);

/* Writes bytes as a JSON string literal (quotes included).  Bytes >= 0x80 pass through unchanged so
 * UTF-8 ids keep their form. */
void cli_write_json_string(FILE *f, const char *s, size_t len);
/* A json string for an id; invalid UTF-8 bytes become U+FFFD so the document still dumps. */
json_t *cli_json_id(const char *s, size_t len);
/* A JSON array of the values, each printed as its shortest exact decimal by cli_print_json. */
json_t *cli_json_floats(const float *v, uint32_t dim);
/* Dumps `doc` (reference stolen) compactly to stdout with a newline; returns the exit code. */
int cli_print_json(json_t *doc);
/* --json keys are camelCase, named as REST names the same object (docs/CLI.md "JSON output").  Adds
 * to `o` a copy of each of its keys named in `keys` (camelCase, NULL-terminated) under the key's
 * snake_case name: the names docs/CLI.md gave before, kept one release beside the new ones,
 * deprecated, as REST keeps created_at.  Keys absent from `o` are skipped. */
void cli_json_add_deprecated(json_t *o, const char *const *keys);
/* The database object of --json (db create, db info; with `count` and `stats` for db info, else
 * NULL), named as REST's: name, vectorDimension, distanceMetric (REST's words: euclidean for l2),
 * sync, segmentMaxBytes (left out when 0: the server does not report it), vectorCount, stats; then
 * the deprecated names of before, dim, metric (l2), segment_max_bytes and count. */
json_t *cli_db_object(const char *name, uint32_t dim, jvdb_metric metric, const char *sync, uint64_t segment_max_bytes,
                      const uint64_t *count, json_t *stats);
/* The stats keys whose snake_case names docs/CLI.md documented (stats, db info). */
extern const char *const cli_stats_deprecated[];

/* Parses a vector typed on the command line, "1,2,3", "1 2 3" or "[1, 2, 3]", into a malloc'd
 * array; on a bad value reports a usage error naming `cmd` and `opt` and returns its exit code. */
int cli_parse_vector(const char *cmd, const char *opt, const char *s, float **out, size_t *n);

/* ---- vector files (cli_read.c), read by `import` and by `search --query-file` ---- */

enum cli_format { CLI_FMT_NONE, CLI_FMT_FVECS, CLI_FMT_NPY, CLI_FMT_JSONL, CLI_FMT_CSV };

/* "fvecs", "npy", "jsonl" (or "ndjson"), "csv" / a path's extension; CLI_FMT_NONE otherwise. */
enum cli_format cli_format_parse(const char *s);
enum cli_format cli_format_from_name(const char *path);

/* A reader of one file.  The caller fills f, path, dbname, dim (and prefix, query), then calls
 * cli_reader_start and r->next until it returns 0; on -1, r->err says what and where. */
struct cli_reader;
struct cli_reader {
    FILE *f;
    const char *path;
    const char *dbname;
    uint32_t dim;
    const char *prefix; /* prepended to ids */
    size_t prefix_len;
    bool query; /* queries: jsonl lines may be bare arrays, ids are optional (NULL) */
    bool text;  /* locations are lines (text) or rows from 0 (binary) */
    bool in_header;
    uint64_t row;        /* rows returned so far: the caller counts them */
    uint64_t line;       /* text: line the current row ends on */
    uint64_t rows_total; /* npy: from the header */
    char *buf;           /* text: the current line or csv record */
    size_t cap;
    char **fields; /* csv: fields of the current record */
    size_t fcap;
    bool csv_started;
    char err[1024];
    /* Fills vec (dim floats) and malloc'd *id / *meta (NULL for none); 1 = a row, 0 = end, -1 = error. */
    int (*next)(struct cli_reader *r, float *vec, char **id, char **meta);
};

/* Sets the row function for `fmt` and reads the npy header; 0, or -1 with r->err. */
int cli_reader_start(struct cli_reader *r, enum cli_format fmt);
void cli_reader_free(struct cli_reader *r);

/* Progress bar on stderr, drawn only when stderr is a terminal. `total` is the work in the unit fed
 * to cli_progress_update (0 = unknown, then only count and rate are shown). */
struct cli_progress {
    bool enabled;
    const char *what; /* "imported", "exported" */
    uint64_t total;
    int64_t start_ns;
    int64_t last_draw_ns;
};

void cli_progress_start(struct cli_progress *p, const char *what, uint64_t total);
void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t items);
void cli_progress_finish(struct cli_progress *p, uint64_t done, uint64_t items);

/* `jvdb backup ...` (cli_backup.c). */
int cli_backup_main(struct cli_ctx *ctx, int argc, char **argv);
extern const struct cli_cmd cli_cmd_backup;
extern const struct cli_cmd cli_cmd_keys;

/* The subcommand groups; argv[0] is the group or command word. */
int cli_db_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_import_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_export_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_put_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_get_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_delete_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_count_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_stats_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_compact_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_search_main(struct cli_ctx *ctx, int argc, char **argv);
int cli_keys_main(struct cli_ctx *ctx, int argc, char **argv);
/* `jvdb index payload ...` (cli_index.c). */
int cli_index_main(struct cli_ctx *ctx, int argc, char **argv);
extern const struct cli_cmd cli_cmd_index;

/* Usage texts, shared by `jvdb CMD --help` and `jvdb help CMD`. */
extern const struct cli_cmd cli_cmd_import, cli_cmd_export, cli_cmd_put, cli_cmd_get, cli_cmd_delete, cli_cmd_count,
    cli_cmd_stats, cli_cmd_db, cli_cmd_compact, cli_cmd_search;

/* Stats as a JSON object / as aligned "key: value" lines; shared by `stats` and `db info`.  Both end
 * with the compaction policy's verdict on `db` (cli_compaction_*). */
json_t *cli_stats_json(jvdb_db *db, const jvdb_stats *st);
void cli_stats_print(jvdb_db *db, const jvdb_stats *st);
/* Whether and why compaction is due (jvdb_needs_compaction with the database's own policy):
 * {"due", "trigger", "reason"} / one "compaction: ..." line. */
json_t *cli_compaction_json(jvdb_db *db);
void cli_compaction_print(jvdb_db *db);

#endif

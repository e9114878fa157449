/*
 * cli_util.c — the pieces every jvdb subcommand shares: option parsing, the three kinds of error
 * report (usage / plain failure / library failure), opening the data directory, and the number and
 * JSON formatting that import and export must agree on for values to round-trip bit for bit.  Every
 * number the user gives as text is read by cli_float_problem, which takes decimal notation only, so
 * no command takes "0x10", "inf" or "nan" where another refuses it.
 *
 * Option parsing is hand-written rather than getopt_long because each subcommand has its own table,
 * --json/--help must work everywhere, and a value like `--vector -1,2` must not be taken for a flag.
 */
#include "cli/cli.h"
#include "core/grow.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (cmd) fprintf(stderr, "jvdb %s: ", cmd);
    else fputs("jvdb: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd) fprintf(stderr, "\nTry 'jvdb %s --help' for usage.\n", cmd);
    else fprintf(stderr, "\nTry 'jvdb --help' for usage.\n");
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("jvdb: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_FAIL;
}

int cli_lib_error(int rc)
{
    const char *msg = jvdb_errmsg();
    /* The detail message is the useful part; the code name is only a fallback for calls that
     * failed without setting one. */
    return cli_fail("%s", msg && *msg ? msg : jvdb_strerror(rc));
}

/* The option named by the len bytes of name, or NULL. */
static struct cli_opt *cli_find_opt(struct cli_opt *opts, const char *name, size_t len)
{
    for (struct cli_opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && !strncmp(o->name, name, len)) return o;
    return NULL;
}

int cli_parse(struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv, struct cli_opt *opts, char **pos,
              int *npos)
{
    bool only_positional = false;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_positional || a[0] != '-' || !strcmp(a, "-")) {
            pos[(*npos)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_positional = true;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cmd->usage, stdout);
            return CLI_HELP_SHOWN;
        }
        if (a[1] != '-')
            return cli_usage_error(cmd->name, "unknown option '%s' (put '--' before arguments that start with '-')", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 4 && !strncmp(name, "json", 4) && !eq) {
            ctx->json = true;
            continue;
        }
        struct cli_opt *o = cli_find_opt(opts, name, len);
        if (!o) return cli_usage_error(cmd->name, "unknown option '--%.*s'", (int)len, name);
        if (!o->has_arg) {
            if (eq) return cli_usage_error(cmd->name, "option '--%s' takes no value", o->name);
            o->value = "";
        } else if (eq) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            return cli_usage_error(cmd->name, "option '--%s' needs a value", o->name);
        }
    }
    if (*npos < cmd->min_pos)
        return cli_usage_error(cmd->name, "missing argument%s", cmd->min_pos - *npos > 1 ? "s" : "");
    if (cmd->max_pos >= 0 && *npos > cmd->max_pos)
        return cli_usage_error(cmd->name, "unexpected argument '%s'", pos[cmd->max_pos]);
    return 0;
}

int cli_open_env(struct cli_ctx *ctx)
{
    if (ctx->env) return 0;
    struct stat st;
    /* A typo in --data must not leave a new empty data directory behind. */
    if (stat(ctx->data_dir, &st) != 0 && errno == ENOENT) {
        if (!ctx->create)
            return cli_fail("data directory %s does not exist ('jvdb db create', 'jvdb backup restore' or "
                            "'jvdb --create' makes it)",
                            ctx->data_dir);
        if (ctx->readonly) {
            /* --create with a command that only reads: make the directory, then read it as usual. */
            jvdb_env *made;
            int mrc = jvdb_env_open(ctx->data_dir, &made);
            if (mrc) return cli_lib_error(mrc);
            jvdb_env_close(made);
        }
    }
    int rc = ctx->readonly ? jvdb_env_open_readonly(ctx->data_dir, &ctx->env) : jvdb_env_open(ctx->data_dir, &ctx->env);
    if (rc) {
        ctx->env = NULL;
        return cli_lib_error(rc);
    }
    return 0;
}

int cli_open_db(struct cli_ctx *ctx, const char *name, jvdb_db **out)
{
    int rc = cli_open_env(ctx);
    if (rc) return rc;
    rc = jvdb_db_open(ctx->env, name, out);
    if (rc == JVDB_ECORRUPT && strstr(jvdb_errmsg(), "corrupt record")) {
        cli_lib_error(rc);
        fprintf(stderr, "jvdb: nothing was changed; 'jvdb db repair %s' salvages every record that verifies\n", name);
        return CLI_EXIT_FAIL;
    }
    return rc ? cli_lib_error(rc) : 0;
}

int cli_parse_db(struct cli_ctx *ctx, const struct cli_cmd *cmd, int argc, char **argv, struct cli_opt *opts,
                 char **pos, int *npos, jvdb_db **db)
{
    int rc = cli_parse(ctx, cmd, argc, argv, opts, pos, npos);
    *db = NULL;
    /* Through a server there is no handle: the caller asks cli_remote.c instead. */
    return rc ? rc : ctx->remote ? 0 : cli_open_db(ctx, pos[0], db);
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return false; /* strtoull would accept "-1" and " 1" */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool cli_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    int shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    default: break;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift))) return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* True when s[0..len) spells `word` in any case: the non-numbers strtof would take. */
static bool cli_spells(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    if (len != n) return false;
    for (size_t i = 0; i < n; i++)
        if ((s[i] | 0x20) != word[i]) return false;
    return true;
}

/* Length of the decimal number at the start of s[0..len): [+-] digits [. digits] [e [+-] digits],
 * with digits on at least one side of the point.  Anything else strtof would take (hex, inf, nan)
 * is not a decimal number, so it gets no length. */
static size_t cli_decimal_len(const char *s, size_t len)
{
    size_t i = 0, digits = 0;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
    }
    if (digits == 0) return 0;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1, exp = 0;
        if (j < len && (s[j] == '+' || s[j] == '-')) j++;
        while (j < len && s[j] >= '0' && s[j] <= '9') j++, exp++;
        if (exp == 0) return 0;
        i = j;
    }
    return i;
}

const char *cli_float_problem(const char *s, size_t len, float *out)
{
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    if (len == 0) return "is empty";
    const char *u = s + (*s == '+' || *s == '-');
    size_t ulen = len - (size_t)(u - s);
    if (ulen >= 2 && u[0] == '0' && (u[1] | 0x20) == 'x')
        return "is a hexadecimal number; only decimal numbers are accepted";
    if (cli_spells(u, ulen, "nan") || cli_spells(u, ulen, "inf") || cli_spells(u, ulen, "infinity"))
        return "is not a finite number; NaN and infinities cannot be stored";
    if (cli_decimal_len(s, len) != len) return "is not a decimal number";
    char buf[128];
    if (len >= sizeof buf) return "is longer than 127 characters";
    memcpy(buf, s, len);
    buf[len] = '\0';
    float v = strtof(buf, NULL);
    /* Underflow to a denormal or zero is a faithful conversion; overflow is not a value a database
     * accepts, so it fails here where the caller can still say which field it was. */
    if (!isfinite(v)) return "is outside the float32 range (magnitude above 3.4028235e38)";
    *out = v;
    return NULL;
}

bool cli_parse_float(const char *s, size_t len, float *out) { return cli_float_problem(s, len, out) == NULL; }

int cli_parse_vector(const char *cmd, const char *opt, const char *s, float **out, size_t *n)
{
    size_t cap = 0, len = 0;
    float *v = NULL;
    const char *p = s;
    while (*p == ' ' || *p == '\t') p++;
    bool bracket = *p == '[';
    if (bracket) p++;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (!*p || (bracket && *p == ']')) break;
        size_t tok = strcspn(p, ", \t\n]");
        float *nv = grow_array(v, &cap, len + 1, sizeof *v, 16);
        if (!nv) {
            free(v);
            return cli_fail("out of memory");
        }
        v = nv;
        const char *why = tok ? cli_float_problem(p, tok, &v[len]) : "is not a number";
        if (why) {
            free(v);
            return cli_usage_error(cmd, "%s: value %zu ('%.*s') %s", opt, len + 1, (int)(tok ? tok : 1), p, why);
        }
        len++;
        p += tok;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == ',') p++;
    }
    if (bracket && *p == ']') p++;
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p || len == 0) {
        free(v);
        return cli_usage_error(cmd, "%s '%s' is not a list of numbers like 1,2,3", opt, s);
    }
    *out = v;
    *n = len;
    return 0;
}

const char *cli_format_float(float f, char *buf)
{
    /* JSON readers (jansson, Python) take "-0" for the integer 0 and drop the sign. */
    if (f == 0 && signbit(f)) return strcpy(buf, "-0.0");
    /* Six digits covers the values people type (0.1, 2.5); nine always reads back exactly. */
    snprintf(buf, 32, "%.6g", (double)f);
    float back = strtof(buf, NULL);
    if (memcmp(&back, &f, sizeof f) != 0) snprintf(buf, 32, "%.9g", (double)f);
    return buf;
}

void cli_write_floats(FILE *f, const float *v, uint32_t dim, char sep)
{
    char buf[32];
    for (uint32_t i = 0; i < dim; i++) {
        if (i) putc(sep, f);
        fputs(cli_format_float(v[i], buf), f);
    }
}

void cli_write_json_string(FILE *f, const char *s, size_t len)
{
    putc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20) fprintf(f, "\\u%04x", c);
            else putc(c, f);
        }
    }
    putc('"', f);
}

json_t *cli_json_id(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j) return j;
    /* Not UTF-8: jansson refuses it, and a lossy display beats failing the whole command. */
    char *copy = malloc(len * 3 + 1);
    if (!copy) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x80) {
            copy[n++] = s[i];
        } else {
            memcpy(copy + n, "\xef\xbf\xbd", 3);
            n += 3;
        }
    }
    j = json_stringn(copy, n);
    free(copy);
    return j;
}

json_t *cli_json_floats(const float *v, uint32_t dim)
{
    json_t *arr = json_array();
    char buf[32];
    for (uint32_t i = 0; arr && i < dim; i++)
        /* Going through the shortest decimal makes 0.1f print as 0.1, not 0.100000001. */
        if (json_array_append_new(arr, json_real(strtod(cli_format_float(v[i], buf), NULL)))) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

int cli_print_json(json_t *doc)
{
    if (!doc) return cli_fail("out of memory");
    /* Precision 9 prints every float32 so it reads back exactly (values are stored as float). */
    int rc = json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(doc);
    if (rc) return cli_fail("cannot write JSON output");
    putchar('\n');
    return CLI_EXIT_OK;
}

void cli_json_add_deprecated(json_t *o, const char *const *keys)
{
    for (; o && *keys; keys++) {
        json_t *v = json_object_get(o, *keys);
        char snake[64];
        size_t n = 0;
        for (const char *c = *keys; *c && n + 2 < sizeof snake; c++) {
            if (*c >= 'A' && *c <= 'Z') {
                snake[n++] = '_';
                snake[n++] = (char)(*c - 'A' + 'a');
            } else {
                snake[n++] = *c;
            }
        }
        snake[n] = '\0';
        if (v) json_object_set(o, snake, v);
    }
}

json_t *cli_db_object(const char *name, uint32_t dim, jvdb_metric metric, const char *sync, uint64_t segment_max_bytes,
                      const uint64_t *count, json_t *stats)
{
    const char *rest_metric = metric == JVDB_METRIC_L2 ? "euclidean" : jvdb_metric_name(metric);
    json_t *o = json_pack("{sssIssss}", "name", name, "vectorDimension", (json_int_t)dim, "distanceMetric", rest_metric,
                          "sync", sync);
    if (!o) {
        json_decref(stats);
        return NULL;
    }
    if (segment_max_bytes) json_object_set_new(o, "segmentMaxBytes", json_integer((json_int_t)segment_max_bytes));
    if (count) json_object_set_new(o, "vectorCount", json_integer((json_int_t)*count));
    if (stats) json_object_set_new(o, "stats", stats);
    json_object_set_new(o, "dim", json_integer((json_int_t)dim));
    json_object_set_new(o, "metric", json_string(jvdb_metric_name(metric)));
    cli_json_add_deprecated(o, (const char *const[]){ "segmentMaxBytes", NULL });
    if (count) json_object_set_new(o, "count", json_integer((json_int_t)*count));
    return o;
}

const char *const cli_stats_deprecated[] = { "liveRecords", "deadRecords", "fileBytes",     "liveBytes", "deadBytes",
                                             "deadRatio",   "lastLsn",     "backupHorizon", NULL };

/* The index's readiness: the live state when this process has the index attached, else what the
 * next open would do with the saved graph (read from its header only: a stats command never loads
 * or builds a graph). */
static json_t *cli_index_json(jvdb_db *db)
{
    jvdb_index_status ix;
    jvdb_index_saved sv;
    json_t *j = json_object();
    if (jvdb_db_index_status_if_attached(db, &ix) == JVDB_OK) {
        json_object_set_new(j, "state", json_string(jvdb_index_state_name(ix.state)));
        json_object_set_new(j, "nodes", json_integer((json_int_t)ix.nodes));
        json_object_set_new(j, "pending", json_integer((json_int_t)ix.pending));
        json_object_set_new(j, "reason", json_string(ix.reason));
    }
    if (jvdb_db_index_saved(db, &sv) == JVDB_OK) {
        json_object_set_new(j, "saved",
                            json_pack("{sbsIsIsIsIss}", "present", sv.present, "nodes", (json_int_t)sv.nodes, "lsn",
                                      (json_int_t)sv.lsn, "fileBytes", (json_int_t)sv.file_bytes, "behind",
                                      (json_int_t)sv.behind, "problem", sv.problem));
        if (!json_object_get(j, "state")) {
            const char *next = !sv.present     ? "rebuild"
                               : sv.problem[0] ? "rebuild"
                               : sv.behind     ? "load_and_catch_up"
                                               : "load";
            json_object_set_new(j, "onOpen", json_string(next));
        }
        cli_json_add_deprecated(json_object_get(j, "saved"), (const char *const[]){ "fileBytes", NULL });
        cli_json_add_deprecated(j, (const char *const[]){ "onOpen", NULL });
    }
    return j;
}

/* Prints the state of a database's HNSW index: the attached graph if any, and the saved graph file (or why it
 * cannot be used). */
static void cli_index_print(jvdb_db *db)
{
    jvdb_index_status ix;
    jvdb_index_saved sv;
    if (jvdb_db_index_status_if_attached(db, &ix) == JVDB_OK)
        printf("index:           %s, %llu nodes, %llu pending%s%s\n", jvdb_index_state_name(ix.state),
               (unsigned long long)ix.nodes, (unsigned long long)ix.pending, ix.reason[0] ? "; rebuilt because: " : "",
               ix.reason);
    if (jvdb_db_index_saved(db, &sv) != JVDB_OK) return;
    if (!sv.present)
        printf("saved_index:     none (the first HNSW search builds the graph from every vector)%s%s\n",
               sv.problem[0] ? ": " : "", sv.problem);
    else if (sv.problem[0]) printf("saved_index:     unusable (%s); the first HNSW search rebuilds it\n", sv.problem);
    else
        printf("saved_index:     %llu nodes up to LSN %llu (%llu bytes); %llu newer vectors to catch up at load\n",
               (unsigned long long)sv.nodes, (unsigned long long)sv.lsn, (unsigned long long)sv.file_bytes,
               (unsigned long long)sv.behind);
}

json_t *cli_stats_json(jvdb_db *db, const jvdb_stats *st)
{
    json_t *o = json_pack("{sIsIsIsIsIsIsfsIsIsIsoso}", "liveRecords", (json_int_t)st->live_records, "deadRecords",
                          (json_int_t)st->dead_records, "tombstones", (json_int_t)st->tombstones, "fileBytes",
                          (json_int_t)st->file_bytes, "liveBytes", (json_int_t)st->live_bytes, "deadBytes",
                          (json_int_t)st->dead_bytes, "deadRatio", st->dead_ratio, "segments", (json_int_t)st->segments,
                          "lastLsn", (json_int_t)st->last_lsn, "backupHorizon", (json_int_t)st->backup_horizon,
                          "compaction", cli_compaction_json(db), "index", cli_index_json(db));
    cli_json_add_deprecated(o, cli_stats_deprecated);
    return o;
}

void cli_stats_print(jvdb_db *db, const jvdb_stats *st)
{
    printf("live_records:    %llu\n", (unsigned long long)st->live_records);
    printf("dead_records:    %llu\n", (unsigned long long)st->dead_records);
    printf("tombstones:      %llu\n", (unsigned long long)st->tombstones);
    printf("file_bytes:      %llu\n", (unsigned long long)st->file_bytes);
    printf("live_bytes:      %llu\n", (unsigned long long)st->live_bytes);
    printf("dead_bytes:      %llu\n", (unsigned long long)st->dead_bytes);
    printf("dead_ratio:      %.4f\n", st->dead_ratio);
    printf("segments:        %u\n", st->segments);
    printf("last_lsn:        %llu\n", (unsigned long long)st->last_lsn);
    printf("backup_horizon:  %llu\n", (unsigned long long)st->backup_horizon);
    cli_compaction_print(db);
    cli_index_print(db);
}

/*
 * cli_import.c — `jvdb import`: reads fvecs, npy, jsonl or csv and writes the rows with
 * jvdb_put_batch, one batch of --batch rows at a time.
 *
 * Each format is a reader that fills one row (id, values, metadata) at a time straight into the
 * batch, so memory stays at one batch whatever the file size.  Every row is checked here (dimension,
 * finite values, id length, metadata is an object) before it joins a batch, because only the reader
 * knows the line or row to name; a bad row stops the import and the batches already written stay
 * (each batch is atomic in the library, so the database never holds half a batch).
 */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fvecs and npy readers assume a little-endian host"
#endif

const cli_cmd cli_cmd_import = {
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
    "         JSON object (quote it: \"{\"\"k\"\": 1}\"); a first line whose second field is not a\n"
    "         number is a header and is skipped\n"
    "\n"
    "A bad row stops the import with its line (text) or row (binary, counted from 0); the batches\n"
    "before it stay imported and the message says how many vectors that was.\n",
    2, 2};

enum cli_format { CLI_FMT_NONE, CLI_FMT_FVECS, CLI_FMT_NPY, CLI_FMT_JSONL, CLI_FMT_CSV };

typedef struct cli_reader cli_reader;
struct cli_reader {
    FILE *f;
    const char *path;
    const char *dbname;
    uint32_t dim;
    const char *prefix;
    size_t prefix_len;
    bool text;              /* locations are lines (text) or rows from 0 (binary) */
    bool in_header;
    uint64_t row;           /* rows returned so far */
    uint64_t line;          /* text: line the current row ends on */
    uint64_t rows_total;    /* npy: from the header */
    char *buf;              /* text: the current line or csv record */
    size_t cap;
    char **fields;          /* csv: fields of the current record */
    size_t fcap;
    bool csv_started;
    char err[1024];
    /* Fills vec (dim floats) and malloc'd *id / *meta (NULL for none); 1 = a row, 0 = end, -1 = error. */
    int (*next)(cli_reader *r, float *vec, char **id, char **meta);
};

__attribute__((format(printf, 2, 3))) static int cli_reader_fail(cli_reader *r, const char *fmt, ...)
{
    int n;
    if (r->in_header)
        n = snprintf(r->err, sizeof r->err, "%s: ", r->path);
    else
        n = snprintf(r->err, sizeof r->err, "%s: %s %llu: ", r->path, r->text ? "line" : "row",
                     (unsigned long long)(r->text ? r->line : r->row));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, sizeof r->err - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int cli_reader_read_error(cli_reader *r)
{
    return cli_reader_fail(r, "read error: %s", strerror(errno));
}

/* prefix + s as a malloc'd id, checked against the library's id rules so the row can be named. */
static int cli_make_id(cli_reader *r, const char *s, size_t len, char **out)
{
    if (len == 0 && r->prefix_len == 0) return cli_reader_fail(r, "the id is empty");
    if (memchr(s, '\0', len)) return cli_reader_fail(r, "the id contains a NUL byte");
    if (r->prefix_len + len > JVDB_MAX_ID_LEN)
        return cli_reader_fail(r, "the id is %zu bytes long; the limit is %d", r->prefix_len + len,
                               JVDB_MAX_ID_LEN);
    char *id = malloc(r->prefix_len + len + 1);
    if (!id) return cli_reader_fail(r, "out of memory");
    memcpy(id, r->prefix, r->prefix_len);
    memcpy(id + r->prefix_len, s, len);
    id[r->prefix_len + len] = '\0';
    *out = id;
    return 0;
}

static int cli_row_id(cli_reader *r, char **out)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)r->row);
    return cli_make_id(r, num, (size_t)n, out);
}

static int cli_dim_mismatch(cli_reader *r, uint64_t got, const char *what)
{
    return cli_reader_fail(r, "%s %llu values but database '%s' has dimension %u", what,
                           (unsigned long long)got, r->dbname, r->dim);
}

/* Metadata as compact JSON text; null means none. */
static int cli_meta_text(cli_reader *r, json_t *m, char **out)
{
    *out = NULL;
    if (!m || json_is_null(m)) return 0;
    if (!json_is_object(m)) return cli_reader_fail(r, "the metadata must be a JSON object");
    *out = json_dumps(m, JSON_COMPACT);
    return *out ? 0 : cli_reader_fail(r, "out of memory");
}

static int cli_check_finite(cli_reader *r, const float *vec)
{
    for (uint32_t i = 0; i < r->dim; i++)
        if (!isfinite(vec[i]))
            return cli_reader_fail(r, "value %u is %s; only finite numbers can be stored", i + 1,
                                   isnan(vec[i]) ? "NaN" : "infinite");
    return 0;
}

/* Reads the next line that is not blank into r->buf, without its line ending; 0 at the end. */
static int cli_next_line(cli_reader *r, size_t *len)
{
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->buf, &r->cap, r->f);
        if (n < 0) return ferror(r->f) ? cli_reader_read_error(r) : 0;
        r->line++;
        while (n > 0 && (r->buf[n - 1] == '\n' || r->buf[n - 1] == '\r')) r->buf[--n] = '\0';
        if (strspn(r->buf, " \t") < (size_t)n) {
            *len = (size_t)n;
            return 1;
        }
    }
}

/* ---- fvecs ---- */

static int cli_fvecs_next(cli_reader *r, float *vec, char **id, char **meta)
{
    unsigned char head[4];
    size_t got = fread(head, 1, 4, r->f);
    if (got == 0 && !ferror(r->f)) return 0;
    if (got < 4) return ferror(r->f) ? cli_reader_read_error(r) : cli_reader_fail(r, "the file ends inside the row");
    int32_t d;
    memcpy(&d, head, 4);
    if (d < 0 || (uint32_t)d != r->dim) return cli_dim_mismatch(r, d < 0 ? 0 : (uint64_t)d, "the row has");
    if (fread(vec, sizeof *vec, r->dim, r->f) != r->dim)
        return ferror(r->f) ? cli_reader_read_error(r) : cli_reader_fail(r, "the file ends inside the row");
    if (cli_check_finite(r, vec) || cli_row_id(r, id)) return -1;
    *meta = NULL;
    return 1;
}

/* ---- npy ---- */

/* Value of 'key' in the header dict, after the colon; NULL when absent. */
static const char *cli_npy_value(const char *hdr, const char *key)
{
    char pat[32];
    for (int q = 0; q < 2; q++) {
        snprintf(pat, sizeof pat, q ? "\"%s\"" : "'%s'", key);
        const char *p = strstr(hdr, pat);
        if (!p) continue;
        p += strlen(pat);
        while (*p == ' ') p++;
        if (*p++ != ':') return NULL;
        while (*p == ' ') p++;
        return p;
    }
    return NULL;
}

static int cli_npy_open(cli_reader *r)
{
    r->in_header = true;
    unsigned char magic[10];
    if (fread(magic, 1, 8, r->f) != 8 || memcmp(magic, "\x93NUMPY", 6))
        return cli_reader_fail(r, "not an npy file (no \\x93NUMPY magic)");
    uint32_t hlen;
    if (magic[6] == 1) {
        if (fread(magic + 8, 1, 2, r->f) != 2) return cli_reader_fail(r, "the npy header is cut short");
        hlen = (uint32_t)magic[8] | (uint32_t)magic[9] << 8;
    } else if (magic[6] == 2 || magic[6] == 3) {
        unsigned char l[4];
        if (fread(l, 1, 4, r->f) != 4) return cli_reader_fail(r, "the npy header is cut short");
        hlen = (uint32_t)l[0] | (uint32_t)l[1] << 8 | (uint32_t)l[2] << 16 | (uint32_t)l[3] << 24;
    } else {
        return cli_reader_fail(r, "npy format version %u is not supported (1, 2 or 3)", magic[6]);
    }
    if (hlen > (1u << 20)) return cli_reader_fail(r, "the npy header claims %u bytes", hlen);
    char *hdr = malloc(hlen + 1);
    if (!hdr) return cli_reader_fail(r, "out of memory");
    int rc = 0;
    if (fread(hdr, 1, hlen, r->f) != hlen) {
        rc = cli_reader_fail(r, "the npy header is cut short");
        goto out;
    }
    hdr[hlen] = '\0';

    const char *descr = cli_npy_value(hdr, "descr");
    const char *fortran = cli_npy_value(hdr, "fortran_order");
    const char *shape = cli_npy_value(hdr, "shape");
    if (!descr || !fortran || !shape || (*descr != '\'' && *descr != '"')) {
        rc = cli_reader_fail(r, "the npy header lacks descr, fortran_order or shape: %s", hdr);
        goto out;
    }
    size_t dlen = strcspn(descr + 1, "'\"");
    if (dlen != 3 || strncmp(descr + 1, "<f4", 3)) {
        rc = cli_reader_fail(r, "npy dtype '%.*s' is not supported: only float32 ('<f4') can be imported "
                             "(convert with arr.astype('<f4'))", (int)(dlen > 32 ? 32 : dlen), descr + 1);
        goto out;
    }
    if (strncmp(fortran, "False", 5)) {
        rc = cli_reader_fail(r, "the npy array is in Fortran order; save a C-order array "
                             "(np.ascontiguousarray)");
        goto out;
    }
    uint64_t dims[3];
    int ndims = 0;
    const char *p = shape;
    if (*p++ != '(') {
        rc = cli_reader_fail(r, "the npy shape is not a tuple");
        goto out;
    }
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || ndims == 3) {
            rc = cli_reader_fail(r, "npy arrays of shape %.*s are not supported; expected 2-D (rows, %u)",
                                 (int)strcspn(shape, ")") + 1, shape, r->dim);
            goto out;
        }
        dims[ndims++] = v;
        p = end;
    }
    if (ndims != 2) {
        rc = cli_reader_fail(r, "npy arrays of shape %.*s are not supported; expected 2-D (rows, %u)",
                             (int)strcspn(shape, ")") + 1, shape, r->dim);
        goto out;
    }
    if (dims[1] != r->dim) {
        rc = cli_dim_mismatch(r, dims[1], "npy rows have");
        goto out;
    }
    r->rows_total = dims[0];
    r->in_header = false;
out:
    free(hdr);
    return rc;
}

static int cli_npy_next(cli_reader *r, float *vec, char **id, char **meta)
{
    if (r->row == r->rows_total) return 0;
    if (fread(vec, sizeof *vec, r->dim, r->f) != r->dim)
        return ferror(r->f) ? cli_reader_read_error(r)
                            : cli_reader_fail(r, "the file ends early; its header promises %llu rows",
                                              (unsigned long long)r->rows_total);
    if (cli_check_finite(r, vec) || cli_row_id(r, id)) return -1;
    *meta = NULL;
    return 1;
}

/* ---- jsonl ---- */

static int cli_jsonl_values(cli_reader *r, json_t *values, float *vec)
{
    if (!json_is_array(values)) return cli_reader_fail(r, "'values' must be an array of numbers");
    if (json_array_size(values) != r->dim) return cli_dim_mismatch(r, json_array_size(values), "'values' has");
    for (uint32_t i = 0; i < r->dim; i++) {
        json_t *x = json_array_get(values, i);
        if (!json_is_number(x)) return cli_reader_fail(r, "'values' item %u is not a number", i + 1);
        double d = json_number_value(x);
        /* Checked before the conversion, which is undefined for a double no float rounds to; the
         * bound is the midpoint above FLT_MAX, so "3.40282347e+38" (an exported FLT_MAX) passes. */
        if (!(fabs(d) < 0x1.ffffffp+127))
            return cli_reader_fail(r, "'values' item %u (%g) is outside the float32 range", i + 1, d);
        vec[i] = (float)d;
    }
    return 0;
}

static int cli_jsonl_next(cli_reader *r, float *vec, char **id, char **meta)
{
    size_t len;
    int rc = cli_next_line(r, &len);
    if (rc <= 0) return rc;
    json_error_t jerr;
    json_t *j = json_loadb(r->buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) return cli_reader_fail(r, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
    rc = -1;
    json_t *jid = json_object_get(j, "id");
    char num[24];
    if (!json_is_object(j)) {
        cli_reader_fail(r, "expected a JSON object {\"id\": ..., \"values\": [...]}");
    } else if (!jid) {
        cli_reader_fail(r, "the object has no 'id'");
    } else if (json_is_integer(jid)) {
        /* Numeric ids are common in exported datasets; store their decimal text. */
        int n = snprintf(num, sizeof num, "%lld", (long long)json_integer_value(jid));
        rc = cli_make_id(r, num, (size_t)n, id);
    } else if (!json_is_string(jid)) {
        cli_reader_fail(r, "'id' must be a string");
    } else {
        rc = cli_make_id(r, json_string_value(jid), json_string_length(jid), id);
    }
    if (rc == 0 && !json_object_get(j, "values")) rc = cli_reader_fail(r, "the object has no 'values'");
    if (rc == 0) rc = cli_jsonl_values(r, json_object_get(j, "values"), vec);
    if (rc == 0) rc = cli_meta_text(r, json_object_get(j, "metadata"), meta);
    json_decref(j);
    if (rc == 0) return 1;
    free(*id);
    *id = NULL;
    return -1;
}

/* ---- csv ---- */

static size_t cli_count_quotes(const char *s)
{
    size_t n = 0;
    for (; (s = strchr(s, '"')); s++) n++;
    return n;
}

/* Reads one record (a quoted field may span lines) and splits it into r->fields, unquoting in
 * place (RFC 4180: "" inside quotes is one quote).  Returns the field count, 0 at the end. */
static int cli_csv_record(cli_reader *r, size_t *nfields)
{
    size_t len;
    int rc = cli_next_line(r, &len);
    if (rc <= 0) return rc;
    uint64_t first_line = r->line;
    /* An odd number of quotes means a quoted field is still open: it continues on the next line. */
    while (cli_count_quotes(r->buf) % 2) {
        char *more = NULL;
        size_t mcap = 0;
        ssize_t n = getline(&more, &mcap, r->f);
        if (n < 0) {
            free(more);
            r->line = first_line;
            return ferror(r->f) ? cli_reader_read_error(r) : cli_reader_fail(r, "a quoted field is never closed");
        }
        r->line++;
        while (n > 0 && (more[n - 1] == '\n' || more[n - 1] == '\r')) more[--n] = '\0';
        char *nb = realloc(r->buf, len + 1 + (size_t)n + 1);
        if (!nb) {
            free(more);
            return cli_reader_fail(r, "out of memory");
        }
        r->buf = nb;
        r->cap = len + 1 + (size_t)n + 1;
        r->buf[len++] = '\n';
        memcpy(r->buf + len, more, (size_t)n + 1);
        len += (size_t)n;
        free(more);
    }

    size_t nf = 0;
    char *p = r->buf, *w = r->buf;
    for (;;) {
        if (nf == r->fcap) {
            size_t ncap = r->fcap ? r->fcap * 2 : 64;
            char **nfl = realloc(r->fields, ncap * sizeof *nfl);
            if (!nfl) return cli_reader_fail(r, "out of memory");
            r->fields = nfl;
            r->fcap = ncap;
        }
        r->fields[nf++] = w;
        if (*p == '"') {
            for (p++;; p++) {
                if (*p == '\0')
                    return cli_reader_fail(r, "field %zu: a quoted field is never closed", nf);
                if (*p == '"' && p[1] == '"')
                    *w++ = *p++;
                else if (*p == '"')
                    break;
                else
                    *w++ = *p;
            }
            p++;
            if (*p != ',' && *p != '\0')
                return cli_reader_fail(r, "field %zu has text after its closing quote", nf);
        } else {
            while (*p != ',' && *p != '\0') *w++ = *p++;
        }
        /* w never overtakes p, so ending the field in place cannot clobber unread input. */
        bool last = *p == '\0';
        *w++ = '\0';
        if (last) break;
        p++;
    }
    *nfields = nf;
    return 1;
}

static int cli_csv_next(cli_reader *r, float *vec, char **id, char **meta)
{
    size_t nf;
    int rc = cli_csv_record(r, &nf);
    if (rc <= 0) return rc;
    float probe;
    if (!r->csv_started) {
        r->csv_started = true;
        if (nf >= 2 && !cli_parse_float(r->fields[1], strlen(r->fields[1]), &probe)) {
            rc = cli_csv_record(r, &nf); /* a header line: names, not values */
            if (rc <= 0) return rc;
        }
    }
    bool has_meta = nf == (size_t)r->dim + 2;
    if (nf != (size_t)r->dim + 1 && !has_meta) {
        size_t nvals = nf - 1;
        if (nf >= 2 && r->fields[nf - 1][0] == '{') nvals--;
        return cli_dim_mismatch(r, nvals, "the row has");
    }
    for (uint32_t i = 0; i < r->dim; i++) {
        const char *s = r->fields[i + 1];
        if (!cli_parse_float(s, strlen(s), &vec[i]))
            return cli_reader_fail(r, "value %u ('%.40s') is not a finite number", i + 1, s);
    }
    *meta = NULL;
    if (has_meta && r->fields[nf - 1][0]) {
        json_error_t jerr;
        json_t *m = json_loads(r->fields[nf - 1], JSON_REJECT_DUPLICATES, &jerr);
        if (!m) return cli_reader_fail(r, "the metadata column is not valid JSON: %s", jerr.text);
        rc = json_is_null(m) ? cli_reader_fail(r, "the metadata must be a JSON object") : cli_meta_text(r, m, meta);
        json_decref(m);
        if (rc) return -1;
    }
    if (cli_make_id(r, r->fields[0], strlen(r->fields[0]), id)) {
        free(*meta);
        *meta = NULL;
        return -1;
    }
    return 1;
}

/* ---- the batch and the import loop ---- */

typedef struct cli_batch {
    jvdb_record *recs;
    float *vecs;
    uint64_t *where;        /* line or row of each record, to name it if the library refuses it */
    size_t n, cap;
} cli_batch;

static void cli_batch_clear(cli_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->recs[i].id);
        free((char *)b->recs[i].meta_json);
    }
    b->n = 0;
}

static enum cli_format cli_format_parse(const char *s)
{
    if (!strcmp(s, "fvecs")) return CLI_FMT_FVECS;
    if (!strcmp(s, "npy")) return CLI_FMT_NPY;
    if (!strcmp(s, "jsonl") || !strcmp(s, "ndjson")) return CLI_FMT_JSONL;
    if (!strcmp(s, "csv")) return CLI_FMT_CSV;
    return CLI_FMT_NONE;
}

static enum cli_format cli_format_from_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && !strchr(dot, '/') ? cli_format_parse(dot + 1) : CLI_FMT_NONE;
}

/* Writes the batch; on failure reports the library's reason with the lines or rows it covered. */
static int cli_batch_commit(jvdb_db *db, cli_reader *r, cli_batch *b, uint64_t *imported)
{
    if (b->n == 0) return 0;
    int rc = jvdb_put_batch(db, b->recs, b->n, NULL);
    if (rc) {
        const char *msg = *jvdb_errmsg() ? jvdb_errmsg() : jvdb_strerror(rc);
        const char *unit = r->text ? "line" : "row";
        size_t idx;
        int skip = 0;
        /* The library names the bad record by its index in the batch ("record 3: ..."); turning
         * that back into a line or row is what lets the user find it in the file. */
        if (b->n > 1 && sscanf(msg, "record %zu: %n", &idx, &skip) == 1 && skip > 0 && idx < b->n)
            cli_fail("%s: %s %llu: %s", r->path, unit, (unsigned long long)b->where[idx], msg + skip);
        else
            cli_fail("%s: %ss %llu-%llu: %s", r->path, unit, (unsigned long long)b->where[0],
                     (unsigned long long)b->where[b->n - 1], msg);
        cli_fail("import stopped: %llu vectors imported in the complete batches before this one; the "
                 "rest was not imported", (unsigned long long)*imported);
        return CLI_EXIT_FAIL;
    }
    *imported += b->n;
    cli_batch_clear(b);
    return 0;
}

static int cli_import_run(cli_ctx *ctx, jvdb_db *db, cli_reader *r, size_t batch_size, uint64_t file_size)
{
    cli_batch b = {0};
    b.cap = batch_size;
    b.recs = calloc(b.cap, sizeof *b.recs);
    b.vecs = malloc(b.cap * r->dim * sizeof *b.vecs);
    b.where = malloc(b.cap * sizeof *b.where);
    if (!b.recs || !b.vecs || !b.where) {
        free(b.recs), free(b.vecs), free(b.where);
        return cli_fail("out of memory for a batch of %zu rows of dimension %u", batch_size, r->dim);
    }

    cli_progress prog;
    cli_progress_start(&prog, "imported", file_size);
    uint64_t imported = 0;
    int64_t t0 = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
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
        b.recs[b.n] = (jvdb_record){id, b.vecs + b.n * r->dim, r->dim, meta};
        b.where[b.n++] = r->text ? r->line : r->row;
        r->row++;
        if (b.n == b.cap) {
            if ((rc = cli_batch_commit(db, r, &b, &imported))) break;
            cli_progress_update(&prog, file_size ? (uint64_t)ftello(r->f) : 0, imported);
        }
    }
    if (rc == 0) rc = cli_batch_commit(db, r, &b, &imported);
    if (rc == 0) cli_progress_finish(&prog, file_size, imported);
    cli_batch_clear(&b);
    free(b.recs), free(b.vecs), free(b.where);
    if (rc) return rc;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    double secs = (double)((int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - t0) / 1e9;
    if (ctx->json)
        return cli_print_json(json_pack("{sIsssssf}", "imported", (json_int_t)imported, "database", r->dbname,
                                        "file", r->path, "seconds", secs));
    printf("imported %llu vectors from %s into '%s' in %.2f s\n", (unsigned long long)imported, r->path,
           r->dbname, secs);
    return CLI_EXIT_OK;
}

int cli_import_main(cli_ctx *ctx, int argc, char **argv)
{
    const cli_cmd *cmd = &cli_cmd_import;
    cli_opt opts[] = {{"format", true, NULL}, {"id-prefix", true, NULL}, {"batch", true, NULL},
                      {NULL, false, NULL}};
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
    if ((rc = cli_open_db(ctx, name, &db))) goto out;
    cli_reader r = {.f = f, .path = from_stdin ? "<stdin>" : path, .dbname = name, .dim = jvdb_db_dim(db),
                    .prefix = prefix, .prefix_len = strlen(prefix)};
    switch (fmt) {
    case CLI_FMT_FVECS: r.next = cli_fvecs_next; break;
    case CLI_FMT_NPY: r.next = cli_npy_next; break;
    case CLI_FMT_JSONL: r.next = cli_jsonl_next, r.text = true; break;
    case CLI_FMT_CSV: r.next = cli_csv_next, r.text = true; break;
    case CLI_FMT_NONE: break;
    }
    if (fmt == CLI_FMT_NPY && cli_npy_open(&r)) {
        rc = cli_fail("%s; nothing imported", r.err);
    } else {
        rc = cli_import_run(ctx, db, &r, (size_t)batch, file_size);
    }
    free(r.buf);
    free(r.fields);
out:
    if (!from_stdin) fclose(f);
    return rc;
}

/*
 * cli_read.c — the vector file readers that `jvdb import` (rows to store) and `jvdb search
 * --query-file` (queries) share: fvecs, npy, jsonl and csv, one row at a time.
 *
 * A reader fills one row (id, values, metadata) per call, so memory stays at one row whatever the
 * file size.  Every row is checked here (dimension, finite values, id length, metadata is an object)
 * because only the reader knows the line or row to name in a message.  In query mode (r->query) a
 * jsonl line may also be a bare array of numbers, and an object's id is optional: a query needs only
 * its values, and a file exported from another database can be used as queries as it is.
 */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fvecs and npy readers assume a little-endian host"
#endif

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

/* `what` names the array in messages: "'values'", or "the array" for a bare query array. */
static int cli_jsonl_values(cli_reader *r, json_t *values, float *vec, const char *what)
{
    if (!json_is_array(values)) return cli_reader_fail(r, "%s must be an array of numbers", what);
    if (json_array_size(values) != r->dim) {
        char has[64];
        snprintf(has, sizeof has, "%s has", what);
        return cli_dim_mismatch(r, json_array_size(values), has);
    }
    for (uint32_t i = 0; i < r->dim; i++) {
        json_t *x = json_array_get(values, i);
        if (!json_is_number(x)) return cli_reader_fail(r, "%s item %u is not a number", what, i + 1);
        double d = json_number_value(x);
        /* Checked before the conversion, which is undefined for a double no float rounds to; the
         * bound is the midpoint above FLT_MAX, so "3.40282347e+38" (an exported FLT_MAX) passes. */
        if (!(fabs(d) < 0x1.ffffffp+127))
            return cli_reader_fail(r, "%s item %u (%g) is outside the float32 range", what, i + 1, d);
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
    *id = NULL;
    *meta = NULL;
    if (r->query && json_is_array(j)) {
        rc = cli_jsonl_values(r, j, vec, "the array");
        json_decref(j);
        return rc == 0 ? 1 : -1;
    }
    json_t *jid = json_object_get(j, "id");
    char num[24];
    if (!json_is_object(j)) {
        cli_reader_fail(r, r->query ? "expected an array of numbers or an object {\"values\": [...]}"
                                    : "expected a JSON object {\"id\": ..., \"values\": [...]}");
    } else if (!jid) {
        if (r->query)
            rc = 0; /* a query's id is only a label */
        else
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
    if (rc == 0) rc = cli_jsonl_values(r, json_object_get(j, "values"), vec, "'values'");
    /* A query's metadata means nothing (an exported file is still usable as queries): ignored. */
    if (rc == 0 && !r->query) rc = cli_meta_text(r, json_object_get(j, "metadata"), meta);
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

enum cli_format cli_format_parse(const char *s)
{
    if (!strcmp(s, "fvecs")) return CLI_FMT_FVECS;
    if (!strcmp(s, "npy")) return CLI_FMT_NPY;
    if (!strcmp(s, "jsonl") || !strcmp(s, "ndjson")) return CLI_FMT_JSONL;
    if (!strcmp(s, "csv")) return CLI_FMT_CSV;
    return CLI_FMT_NONE;
}

enum cli_format cli_format_from_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && !strchr(dot, '/') ? cli_format_parse(dot + 1) : CLI_FMT_NONE;
}


int cli_reader_start(cli_reader *r, enum cli_format fmt)
{
    switch (fmt) {
    case CLI_FMT_FVECS: r->next = cli_fvecs_next; break;
    case CLI_FMT_NPY: r->next = cli_npy_next; break;
    case CLI_FMT_JSONL: r->next = cli_jsonl_next, r->text = true; break;
    case CLI_FMT_CSV: r->next = cli_csv_next, r->text = true; break;
    case CLI_FMT_NONE: return cli_reader_fail(r, "no file format given");
    }
    return fmt == CLI_FMT_NPY ? cli_npy_open(r) : 0;
}

void cli_reader_free(cli_reader *r)
{
    free(r->buf);
    free(r->fields);
    r->buf = NULL;
    r->fields = NULL;
}

/*
 * cli_read.c — the vector file readers that `jvdb import` (rows to store) and `jvdb search
 * --query-file` (queries) share: fvecs, npy, jsonl and csv, one row at a time.
 *
 * A reader fills one row (id, values, metadata) per call, so memory stays at one row whatever the
 * file size.  Every row is checked here (dimension, finite values, id length, metadata is an object)
 * because only the reader knows the line or row to name in a message.  Nothing is dropped or
 * rewritten silently: text numbers go through the CLI's one decimal parser (cli_float_problem), a
 * CSV first line is skipped as a header only when it is clearly names and the skip is said, metadata
 * is kept as the file spells it (so export -> import is byte-identical), and an npy header must
 * describe exactly the bytes the file holds before a row is read.  In query mode (r->query) a
 * jsonl line may also be a bare array of numbers, and an object's id is optional: a query needs only
 * its values, and a file exported from another database can be used as queries as it is.
 */
#include "cli/cli.h"
#include "core/grow.h"
#include "store/validate.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fvecs and npy readers assume a little-endian host"
#endif

__attribute__((format(printf, 2, 3))) static int cli_reader_fail(struct cli_reader *r, const char *fmt, ...)
{
    int n;
    if (r->in_header) n = snprintf(r->err, sizeof r->err, "%s: ", r->path);
    else
        n = snprintf(r->err, sizeof r->err, "%s: %s %llu: ", r->path, r->text ? "line" : "row",
                     (unsigned long long)(r->text ? r->line : r->row));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, sizeof r->err - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int cli_reader_read_error(struct cli_reader *r) { return cli_reader_fail(r, "read error: %s", strerror(errno)); }

/* prefix + s as a malloc'd id, checked against the library's id rules so the row can be named. */
static int cli_make_id(struct cli_reader *r, const char *s, size_t len, char **out)
{
    if (len == 0 && r->prefix_len == 0) return cli_reader_fail(r, "the id is empty");
    if (memchr(s, '\0', len)) return cli_reader_fail(r, "the id contains a NUL byte");
    if (r->prefix_len + len > JVDB_MAX_ID_LEN)
        return cli_reader_fail(r, "the id is %zu bytes long; the limit is %d", r->prefix_len + len, JVDB_MAX_ID_LEN);
    char *id = malloc(r->prefix_len + len + 1);
    if (!id) return cli_reader_fail(r, "out of memory");
    memcpy(id, r->prefix, r->prefix_len);
    memcpy(id + r->prefix_len, s, len);
    id[r->prefix_len + len] = '\0';
    *out = id;
    return 0;
}

/* The row's number as its id (formats whose rows carry no id), after the id prefix, if any. */
static int cli_row_id(struct cli_reader *r, char **out)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)r->row);
    return cli_make_id(r, num, (size_t)n, out);
}

/* Fails the row for holding `got` values where the database's dimension needs another count. */
static int cli_dim_mismatch(struct cli_reader *r, uint64_t got, const char *what)
{
    return cli_reader_fail(r, "%s %llu values but database '%s' has dimension %u", what, (unsigned long long)got,
                           r->dbname, r->dim);
}

/* Metadata as compact JSON text; null means none. */
static int cli_meta_text(struct cli_reader *r, json_t *m, char **out)
{
    *out = NULL;
    if (!m || json_is_null(m)) return 0;
    if (!json_is_object(m)) return cli_reader_fail(r, "the metadata must be a JSON object");
    *out = json_dumps(m, JSON_COMPACT);
    return *out ? 0 : cli_reader_fail(r, "out of memory");
}

/* Fails the row if a value is NaN or infinite (binary formats can hold them; the library refuses them). */
static int cli_check_finite(struct cli_reader *r, const float *vec)
{
    for (uint32_t i = 0; i < r->dim; i++)
        if (!isfinite(vec[i]))
            return cli_reader_fail(r, "value %u is %s; only finite numbers can be stored", i + 1,
                                   isnan(vec[i]) ? "NaN" : "infinite");
    return 0;
}

/* Reads the next line that is not blank into r->buf, without its line ending; 0 at the end. */
static int cli_next_line(struct cli_reader *r, size_t *len)
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

/* Reads one fvecs row (int32 dimension, then that many float32s); 0 at a clean end of file. */
static int cli_fvecs_next(struct cli_reader *r, float *vec, char **id, char **meta)
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

/* Reads and checks an .npy header (versions 1-3): a 2-D C-order little-endian float32 array whose width is the
 * database's dimension and whose rows fit the file. */
static int cli_npy_open(struct cli_reader *r)
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
        rc = cli_reader_fail(r,
                             "npy dtype '%.*s' is not supported: only float32 ('<f4') can be imported "
                             "(convert with arr.astype('<f4'))",
                             (int)(dlen > 32 ? 32 : dlen), descr + 1);
        goto out;
    }
    if (strncmp(fortran, "False", 5)) {
        rc = cli_reader_fail(r, "the npy array is in Fortran order; save a C-order array "
                                "(np.ascontiguousarray)");
        goto out;
    }
    uint64_t dims[3];
    int ndims = 0;
    int shape_len = (int)strcspn(shape, ")") + 1;
    const char *p = shape;
    if (*p++ != '(') {
        rc = cli_reader_fail(r, "the npy shape is not a tuple");
        goto out;
    }
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        /* Digits only: strtoull would wrap "-1" to 2**64-1 and saturate an overflow silently. */
        uint64_t v = 0;
        const char *d = p;
        bool overflow = false;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) overflow = true;
            v = v * 10 + (uint64_t)(*p - '0');
        }
        if (p == d || ndims == 3) {
            rc = cli_reader_fail(r,
                                 "npy shape %.*s is not supported; expected 2-D (rows, %u) with "
                                 "non-negative sizes",
                                 shape_len, shape, r->dim);
            goto out;
        }
        if (overflow) {
            rc = cli_reader_fail(r, "npy shape %.*s is impossible: a size above 2**64", shape_len, shape);
            goto out;
        }
        dims[ndims++] = v;
    }
    if (ndims != 2) {
        rc = cli_reader_fail(r, "npy arrays of shape %.*s are not supported; expected 2-D (rows, %u)", shape_len, shape,
                             r->dim);
        goto out;
    }
    if (dims[1] != r->dim) {
        rc = cli_dim_mismatch(r, dims[1], "npy rows have");
        goto out;
    }
    /* The size the header promises is checked against the file before anything is read, so an
     * absurd or lying shape stops the import with nothing written. */
    if (dims[0] > (uint64_t)INT64_MAX / 4 / (dims[1] ? dims[1] : 1)) {
        rc = cli_reader_fail(r,
                             "npy shape %.*s is impossible: %llu rows of %llu float32 is more than "
                             "2**63 bytes",
                             shape_len, shape, (unsigned long long)dims[0], (unsigned long long)dims[1]);
        goto out;
    }
    struct stat st;
    off_t data_at = ftello(r->f);
    uint64_t want = dims[0] * dims[1] * 4;
    if (data_at >= 0 && fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size - (uint64_t)data_at != want) {
        rc = cli_reader_fail(r,
                             "npy shape %.*s needs %llu bytes of data but the file has %llu after its "
                             "header",
                             shape_len, shape, (unsigned long long)want,
                             (unsigned long long)((uint64_t)st.st_size - (uint64_t)data_at));
        goto out;
    }
    r->rows_total = dims[0];
    r->in_header = false;
out:
    free(hdr);
    return rc;
}

/* Reads the next row of an .npy array; 0 after the last row the header promises. */
static int cli_npy_next(struct cli_reader *r, float *vec, char **id, char **meta)
{
    if (r->row == r->rows_total) {
        /* Regular files were measured against the header; this catches a pipe that goes on. */
        if (getc(r->f) != EOF)
            return cli_reader_fail(r, "the file goes on after the %llu rows its header promises",
                                   (unsigned long long)r->rows_total);
        return ferror(r->f) ? cli_reader_read_error(r) : 0;
    }
    if (fread(vec, sizeof *vec, r->dim, r->f) != r->dim)
        return ferror(r->f) ? cli_reader_read_error(r)
                            : cli_reader_fail(r, "the file ends early; its header promises %llu rows",
                                              (unsigned long long)r->rows_total);
    if (cli_check_finite(r, vec) || cli_row_id(r, id)) return -1;
    *meta = NULL;
    return 1;
}

/* ---- jsonl ---- */

/* End of the JSON value starting at p (already validated by jansson), before any whitespace. */
static const char *cli_json_skip_value(const char *start, const char *end)
{
    const char *p = start;
    int depth = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\') p++;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth-- == 0) break;
        } else if (c == ',' && depth == 0) {
            break;
        }
    }
    while (p > start && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r')) p--;
    return p;
}

/* The text of member `key` of the object in s[0..len), as written in the line; false when the
 * key is spelled with escapes (then the caller serialises the parsed value instead). */
static bool cli_json_member_text(const char *s, size_t len, const char *key, const char **vstart, size_t *vlen)
{
    const char *p = s, *end = s + len;
    size_t klen = strlen(key);
#define CLI_WS(q) \
    while ((q) < end && (*(q) == ' ' || *(q) == '\t' || *(q) == '\n' || *(q) == '\r')) (q)++
    CLI_WS(p);
    if (p == end || *p++ != '{') return false;
    for (;;) {
        CLI_WS(p);
        if (p == end || *p != '"') return false;
        const char *k = ++p;
        while (p < end && *p != '"') p += *p == '\\' ? 2 : 1;
        if (p >= end) return false;
        bool match = (size_t)(p - k) == klen && !memcmp(k, key, klen);
        p++;
        CLI_WS(p);
        if (p == end || *p++ != ':') return false;
        CLI_WS(p);
        const char *v = p;
        p = cli_json_skip_value(p, end);
        if (match) {
            *vstart = v;
            *vlen = (size_t)(p - v);
            return true;
        }
        CLI_WS(p);
        if (p == end || *p++ != ',') return false;
    }
#undef CLI_WS
}

/* `what` names the array in messages: "'values'", or "the array" for a bare query array. */
static int cli_jsonl_values(struct cli_reader *r, json_t *values, float *vec, const char *what)
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
        if (!rec_fits_float32(d))
            return cli_reader_fail(r, "%s item %u (%g) is outside the float32 range", what, i + 1, d);
        vec[i] = (float)d;
    }
    return 0;
}

/* Reads one JSON line: an object with id, values and optional metadata (or, for queries, also a bare array of
 * numbers). */
static int cli_jsonl_next(struct cli_reader *r, float *vec, char **id, char **meta)
{
    size_t len = 0;
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
        if (r->query) rc = 0; /* a query's id is only a label */
        else cli_reader_fail(r, "the object has no 'id'");
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
    if (rc == 0 && !r->query) {
        json_t *m = json_object_get(j, "metadata");
        const char *text;
        size_t tlen;
        /* An object is stored as the line spells it, so export then import gives back the same
         * bytes (jansson would reprint 0.1 as 0.10000000000000001). */
        if (json_is_object(m) && cli_json_member_text(r->buf, len, "metadata", &text, &tlen)) {
            if (!(*meta = strndup(text, tlen))) rc = cli_reader_fail(r, "out of memory");
        } else {
            rc = cli_meta_text(r, m, meta);
        }
    }
    json_decref(j);
    if (rc == 0) return 1;
    free(*id);
    *id = NULL;
    return -1;
}

/* ---- csv ---- */

/* Where a scan of CSV text stands: a record ends at a line break only outside a quoted field. */
enum cli_csv_state { CSV_FIELD_START, CSV_UNQUOTED, CSV_QUOTED, CSV_QUOTE_SEEN };

/* The state after scanning s[0..len) from `st`. */
static enum cli_csv_state cli_csv_scan(enum cli_csv_state st, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        switch (st) {
        case CSV_FIELD_START: st = c == '"' ? CSV_QUOTED : c == ',' ? CSV_FIELD_START : CSV_UNQUOTED; break;
        case CSV_UNQUOTED:
            if (c == ',') st = CSV_FIELD_START;
            break;
        case CSV_QUOTED:
            if (c == '"') st = CSV_QUOTE_SEEN;
            break;
        case CSV_QUOTE_SEEN: st = c == '"' ? CSV_QUOTED : c == ',' ? CSV_FIELD_START : CSV_UNQUOTED; break;
        }
    }
    return st;
}

/* A record larger than this is a quote that was never closed, not data: the biggest legal row is
 * an id, dim numbers and the metadata, far below it. */
#define CLI_CSV_MAX_RECORD ((size_t)JVDB_MAX_META_LEN * 2 + (size_t)JVDB_MAX_DIM * 64 + 4 * JVDB_MAX_ID_LEN)

/* Reads one record into r->buf: a line, continued over the following lines while a quoted field
 * is open.  Line breaks inside a quoted field are kept as they are in the file (they are data);
 * the record's own line ending is removed.  Blank lines between records are skipped. */
static int cli_csv_read_record(struct cli_reader *r, size_t *out_len)
{
    ssize_t n;
    for (;;) {
        errno = 0;
        if ((n = getline(&r->buf, &r->cap, r->f)) < 0) return ferror(r->f) ? cli_reader_read_error(r) : 0;
        r->line++;
        if (strspn(r->buf, " \t\r\n") < (size_t)n) break;
    }
    uint64_t first_line = r->line;
    size_t len = (size_t)n;
    enum cli_csv_state st = cli_csv_scan(CSV_FIELD_START, r->buf, len);
    char *more = NULL;
    size_t mcap = 0;
    while (st == CSV_QUOTED) {
        errno = 0;
        if ((n = getline(&more, &mcap, r->f)) < 0) {
            free(more);
            if (ferror(r->f)) return cli_reader_read_error(r);
            r->line = first_line;
            return cli_reader_fail(r, "a quoted field is never closed");
        }
        r->line++;
        if (len + (size_t)n > CLI_CSV_MAX_RECORD) {
            free(more);
            r->line = first_line;
            return cli_reader_fail(r, "the record is longer than %zu bytes: is a quote never closed?",
                                   CLI_CSV_MAX_RECORD);
        }
        char *nb = grow_array(r->buf, &r->cap, len + (size_t)n + 1, 1, 256);
        if (!nb) {
            free(more);
            return cli_reader_fail(r, "out of memory");
        }
        r->buf = nb;
        memcpy(r->buf + len, more, (size_t)n + 1);
        st = cli_csv_scan(st, r->buf + len, (size_t)n);
        len += (size_t)n;
    }
    free(more);
    if (memchr(r->buf, '\0', len)) return cli_reader_fail(r, "the record contains a NUL byte");
    while (len > 0 && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r')) r->buf[--len] = '\0';
    *out_len = len;
    return 1;
}

/* Reads one record and splits it into r->fields, unquoting in place (RFC 4180: "" inside quotes is
 * one quote).  Returns 1 with the field count, 0 at the end, -1 on error. */
static int cli_csv_record(struct cli_reader *r, size_t *nfields)
{
    size_t len;
    int rc = cli_csv_read_record(r, &len);
    if (rc <= 0) return rc;
    size_t nf = 0;
    char *p = r->buf, *w = r->buf;
    for (;;) {
        char **nfl = grow_array(r->fields, &r->fcap, nf + 1, sizeof *nfl, 64);
        if (!nfl) return cli_reader_fail(r, "out of memory");
        r->fields = nfl;
        r->fields[nf++] = w;
        if (*p == '"') {
            for (p++;; p++) {
                if (*p == '\0') return cli_reader_fail(r, "field %zu: a quoted field is never closed", nf);
                if (*p == '"' && p[1] == '"') *w++ = *p++;
                else if (*p == '"') break;
                else *w++ = *p;
            }
            p++;
            if (*p != ',' && *p != '\0') return cli_reader_fail(r, "field %zu has text after its closing quote", nf);
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

/* A header cell: a name such as "x", "v1" or "metadata", never something that could be a value
 * (a number, nan/inf, a hex number or an empty cell), so a first row of data is never dropped. */
static bool cli_csv_is_name(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    unsigned char c = (unsigned char)*s;
    /* A leading letter rules out numbers, hex and empty cells; only these words remain. */
    if (!((c | 0x20) >= 'a' && (c | 0x20) <= 'z') && c != '_' && c < 0x80) return false;
    if ((len == 3 && (!strncasecmp(s, "nan", 3) || !strncasecmp(s, "inf", 3))) ||
        (len == 8 && !strncasecmp(s, "infinity", 8)))
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

/* The first record is a header when every field after the id is a name; the caller skips it and
 * says so. */
static bool cli_csv_is_header(struct cli_reader *r, size_t nf)
{
    if (nf < 2) return false;
    for (size_t i = 1; i < nf; i++)
        if (!cli_csv_is_name(r->fields[i])) return false;
    return true;
}

/* Reads one CSV row: id, DIM values and an optional metadata column; a first line that looks like a header is
 * skipped. */
static int cli_csv_next(struct cli_reader *r, float *vec, char **id, char **meta)
{
    size_t nf;
    int rc = cli_csv_record(r, &nf);
    if (rc <= 0) return rc;
    if (!r->csv_started) {
        r->csv_started = true;
        if (cli_csv_is_header(r, nf)) {
            fprintf(stderr, "jvdb: %s: skipped header line %llu\n", r->path, (unsigned long long)r->line);
            rc = cli_csv_record(r, &nf);
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
        const char *why = cli_float_problem(s, strlen(s), &vec[i]);
        if (why) return cli_reader_fail(r, "column %u (value %u): '%.40s' %s", i + 2, i + 1, s, why);
    }
    *meta = NULL;
    const char *mtext = has_meta ? r->fields[nf - 1] : "";
    if (*mtext) {
        json_error_t jerr;
        json_t *m = json_loads(mtext, JSON_REJECT_DUPLICATES, &jerr);
        if (!m) return cli_reader_fail(r, "the metadata column is not valid JSON: %s", jerr.text);
        bool obj = json_is_object(m);
        json_decref(m);
        if (!obj) return cli_reader_fail(r, "the metadata must be a JSON object");
        /* Stored as written, not re-serialised, so export then import gives back the same bytes
         * (jansson would print 0.1 as 0.10000000000000001). */
        if (!(*meta = strdup(mtext))) return cli_reader_fail(r, "out of memory");
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

int cli_reader_start(struct cli_reader *r, enum cli_format fmt)
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

void cli_reader_free(struct cli_reader *r)
{
    free(r->buf);
    free(r->fields);
    r->buf = NULL;
    r->fields = NULL;
}

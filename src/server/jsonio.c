/*
 * jsonio.c — the JSON writer used for every response and the typed readers used on every request
 * body (see jsonio.h for why responses are written by hand rather than through jansson trees).
 *
 * The writer keeps one flag instead of a stack: after any complete value the next key or value
 * needs a comma, after an opening bracket or a key it does not.  Allocation failures are sticky
 * (jw->oom) so callers write a whole response and check once.
 */
#include "server/jsonio.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- writer */

void jw_init(jw *w) { memset(w, 0, sizeof *w); }

void jw_free(jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

char *jw_take(jw *w, size_t *len)
{
    if (w->oom || !w->buf) {
        jw_free(w);
        return NULL;
    }
    char *b = w->buf;
    if (len) *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

static int jw_reserve(jw *w, size_t more)
{
    if (w->oom) return -1;
    if (w->len + more + 1 <= w->cap) return 0;
    size_t ncap = w->cap ? w->cap : 256;
    while (ncap < w->len + more + 1) ncap *= 2;
    char *n = realloc(w->buf, ncap);
    if (!n) {
        w->oom = 1;
        return -1;
    }
    w->buf = n;
    w->cap = ncap;
    return 0;
}

static void jw_put(jw *w, const char *s, size_t n)
{
    if (jw_reserve(w, n)) return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

static void jw_putc(jw *w, char c) { jw_put(w, &c, 1); }

/* Every value starts here: the comma that separates it from the previous one. */
static void jw_value(jw *w)
{
    if (w->comma) jw_putc(w, ',');
    w->comma = 1;
}

void jw_obj(jw *w)
{
    jw_value(w);
    jw_putc(w, '{');
    w->comma = 0;
}

void jw_obj_end(jw *w)
{
    jw_putc(w, '}');
    w->comma = 1;
}

void jw_arr(jw *w)
{
    jw_value(w);
    jw_putc(w, '[');
    w->comma = 0;
}

void jw_arr_end(jw *w)
{
    jw_putc(w, ']');
    w->comma = 1;
}

static void jw_escaped(jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jw_putc(w, '"');
    size_t run = 0;   /* bytes that need no escaping are copied in runs */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jw_put(w, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0};
        switch (c) {
        case '"': e[1] = '"'; jw_put(w, e, 2); break;
        case '\\': e[1] = '\\'; jw_put(w, e, 2); break;
        case '\n': e[1] = 'n'; jw_put(w, e, 2); break;
        case '\r': e[1] = 'r'; jw_put(w, e, 2); break;
        case '\t': e[1] = 't'; jw_put(w, e, 2); break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            jw_put(w, e, 6);
        }
    }
    jw_put(w, s + run, n - run);
    jw_putc(w, '"');
}

void jw_key(jw *w, const char *key)
{
    if (w->comma) jw_putc(w, ',');
    jw_escaped(w, key, strlen(key));
    jw_putc(w, ':');
    w->comma = 0;
}

void jw_strn(jw *w, const char *s, size_t n)
{
    jw_value(w);
    jw_escaped(w, s, n);
}

void jw_str(jw *w, const char *s)
{
    if (!s) {
        jw_null(w);
        return;
    }
    jw_strn(w, s, strlen(s));
}

void jw_int(jw *w, int64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%" PRId64, v);
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

void jw_uint(jw *w, uint64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

void jw_double(jw *w, double v)
{
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    char b[40];
    /* 17 significant digits always read back as the same double; try shorter first for humans. */
    int n = 0;
    for (int p = 15; p <= 17; p++) {
        n = snprintf(b, sizeof b, "%.*g", p, v);
        if (strtod(b, NULL) == v) break;
    }
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

/* Shortest of %.6g .. %.9g that reads back as the same float32 (9 digits always does). */
static int jw_format_float(char *b, size_t cap, float v)
{
    int n = 0;
    for (int p = 6; p <= 9; p++) {
        n = snprintf(b, cap, "%.*g", p, (double)v);
        if (strtof(b, NULL) == v) break;
    }
    return n;
}

void jw_float(jw *w, float v)
{
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    char b[32];
    int n = jw_format_float(b, sizeof b, v);
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

void jw_floats(jw *w, const float *v, size_t n)
{
    jw_arr(w);
    for (size_t i = 0; i < n; i++) jw_float(w, v[i]);
    jw_arr_end(w);
}

void jw_bool(jw *w, int v)
{
    jw_value(w);
    if (v) jw_put(w, "true", 4);
    else jw_put(w, "false", 5);
}

void jw_null(jw *w)
{
    jw_value(w);
    jw_put(w, "null", 4);
}

void jw_raw(jw *w, const char *json, size_t n)
{
    if (!json || n == 0) {
        jw_null(w);
        return;
    }
    jw_value(w);
    jw_put(w, json, n);
}

void jw_time_fmt(int64_t wall_ns, char out[32])
{
    time_t t = (time_t)(wall_ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void jw_time(jw *w, int64_t wall_ns)
{
    char b[32];
    jw_time_fmt(wall_ns, b);
    jw_str(w, b);
}

/* ---------------------------------------------------------------- reader */

/* jansson's own depth limit is a compile-time 2048; a request may nest far less.  This scan counts
 * brackets outside strings before the parse, so a deeply nested body costs one pass, not a tree. */
static int jr_depth_ok(const char *s, size_t n, unsigned max_depth)
{
    unsigned depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) return 0;
        } else if (c == '}' || c == ']') {
            if (depth) depth--;
        }
    }
    return 1;
}

json_t *jr_parse_object(const char *body, size_t len, unsigned max_depth, char *err, size_t cap)
{
    if (!body || len == 0) {
        snprintf(err, cap, "request body is empty; a JSON object is expected");
        return NULL;
    }
    if (!jr_depth_ok(body, len, max_depth)) {
        snprintf(err, cap, "request body nests JSON deeper than %u levels", max_depth);
        return NULL;
    }
    json_error_t je;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(err, cap, "request body is not valid JSON: %s at line %d, column %d", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        snprintf(err, cap, "request body must be a JSON object");
        return NULL;
    }
    return doc;
}

int jr_string(json_t *obj, const char *key, const char **out, char *err, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_string(v)) {
        snprintf(err, cap, "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

int jr_bool(json_t *obj, const char *key, int *out, char *err, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, cap, "field '%s' must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

int jr_uint(json_t *obj, const char *key, uint64_t min, uint64_t max, uint64_t *out, char *err, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    json_int_t i = 0;
    if (json_is_integer(v)) {
        i = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        i = (json_int_t)json_real_value(v);   /* 10.0 from clients that only have doubles */
    } else {
        snprintf(err, cap, "field '%s' must be an integer from %" PRIu64 " to %" PRIu64, key, min, max);
        return -1;
    }
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max) {
        snprintf(err, cap, "field '%s' is %" JSON_INTEGER_FORMAT "; it must be from %" PRIu64 " to %" PRIu64, key, i,
                 min, max);
        return -1;
    }
    *out = (uint64_t)i;
    return 1;
}

int jr_number(json_t *obj, const char *key, double *out, char *err, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_number(v)) {
        snprintf(err, cap, "field '%s' must be a number", key);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

int jr_floats(json_t *arr, const char *what, uint32_t max_len, float **out, uint32_t *n, char *err, size_t cap)
{
    if (!json_is_array(arr)) {
        snprintf(err, cap, "%s must be an array of numbers", what);
        return -1;
    }
    size_t len = json_array_size(arr);
    if (len == 0) {
        snprintf(err, cap, "%s is empty", what);
        return -1;
    }
    if (len > max_len) {
        snprintf(err, cap, "%s has %zu numbers; the limit is %u", what, len, max_len);
        return -1;
    }
    float *v = malloc(len * sizeof *v);
    if (!v) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(arr, i);
        if (!json_is_number(x)) {
            snprintf(err, cap, "%s[%zu] is not a number", what, i);
            free(v);
            return -1;
        }
        double d = json_number_value(x);
        /* Anything below the midpoint between FLT_MAX and 2^128 rounds to a finite float
         * (so an exported FLT_MAX printed with 9 digits reads back). */
        if (!(fabs(d) < ldexp(2.0 - ldexp(1.0, -24), 127))) {
            snprintf(err, cap, "%s[%zu] = %g does not fit a 32-bit float", what, i, d);
            free(v);
            return -1;
        }
        v[i] = (float)d;
    }
    *out = v;
    *n = (uint32_t)len;
    return 1;
}

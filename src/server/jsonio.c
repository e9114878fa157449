/*
 * jsonio.c — the JSON writer used for every response and the typed readers used on every request
 * body (see jsonio.h for why responses are written by hand rather than through jansson trees).
 *
 * The writer keeps one flag instead of a stack: after any complete value the next key or value
 * needs a comma, after an opening bracket or a key it does not.  Allocation failures are sticky
 * (jw->oom) so callers write a whole response and check once.  Invariants of what it writes: the
 * text is valid JSON and valid UTF-8 whatever bytes it is given (strings are escaped, bytes that are
 * not well-formed UTF-8 become U+FFFD, stored metadata is re-encoded by jansson, never copied).
 *
 * The readers refuse every field a route does not know; the batch decoders (general and fast)
 * accept exactly the same bodies with the same values (tests/fuzz/fuzz_http_body.c).
 *
 * Numbers (issue 12): the fast decoders convert decimal text to the same double jansson would
 * (jf_number_text: Clinger's exact path, else strtod), and floats are printed with exactly the text
 * of printf's shortest round-tripping %.6g..%.9g (jw_format_float: exact double arithmetic when it
 * is certain, else printf) — so speed never changes a stored bit or an answer's text
 * (tests/unit/test_jsonio_numbers.c).
 */
#include "server/jsonio.h"

#include "jvdb.h"
#include "core/grow.h"
#include "store/validate.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- writer */

void jw_init(struct jw *w) { memset(w, 0, sizeof *w); }

void jw_free(struct jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

char *jw_take(struct jw *w, size_t *len)
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

/* Makes room for more bytes and a NUL; on failure sets the sticky oom flag. */
static int jw_reserve(struct jw *w, size_t more)
{
    if (w->oom) return -1;
    char *n = grow_array(w->buf, &w->cap, w->len + more + 1, 1, 256);
    if (!n) {
        w->oom = 1;
        return -1;
    }
    w->buf = n;
    return 0;
}

/* Appends n bytes, keeping the buffer NUL-terminated. */
static void jw_put(struct jw *w, const char *s, size_t n)
{
    if (jw_reserve(w, n)) return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

static void jw_putc(struct jw *w, char c) { jw_put(w, &c, 1); }

/* Every value starts here: the comma that separates it from the previous one. */
static void jw_value(struct jw *w)
{
    if (w->comma) jw_putc(w, ',');
    w->comma = 1;
}

void jw_obj(struct jw *w)
{
    jw_value(w);
    jw_putc(w, '{');
    w->comma = 0;
}

void jw_obj_end(struct jw *w)
{
    jw_putc(w, '}');
    w->comma = 1;
}

void jw_arr(struct jw *w)
{
    jw_value(w);
    jw_putc(w, '[');
    w->comma = 0;
}

void jw_arr_end(struct jw *w)
{
    jw_putc(w, ']');
    w->comma = 1;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when the bytes there are not one. */
static size_t jw_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xBF) return 0;
    return len;
}

/* Writes s as a JSON string: control characters, quote and backslash escaped, ill-formed UTF-8 bytes as U+FFFD. */
static void jw_escaped(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jw_putc(w, '"');
    size_t run = 0; /* bytes that need no escaping are copied in runs */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            /* An answer is always valid UTF-8: a byte that does not start a well-formed sequence
             * (an id stored by an older version, a client's bad key echoed in a message) becomes
             * U+FFFD instead of making the whole answer unreadable. */
            size_t k = jw_utf8_len((const unsigned char *)s + i, n - i);
            if (k) {
                i += k - 1;
                continue;
            }
            jw_put(w, s + run, i - run);
            run = i + 1;
            jw_put(w, "\\ufffd", 6);
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jw_put(w, s + run, i - run);
        run = i + 1;
        char e[6] = { '\\', 0 };
        switch (c) {
        case '"':
            e[1] = '"';
            jw_put(w, e, 2);
            break;
        case '\\':
            e[1] = '\\';
            jw_put(w, e, 2);
            break;
        case '\n':
            e[1] = 'n';
            jw_put(w, e, 2);
            break;
        case '\r':
            e[1] = 'r';
            jw_put(w, e, 2);
            break;
        case '\t':
            e[1] = 't';
            jw_put(w, e, 2);
            break;
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

void jw_key(struct jw *w, const char *key)
{
    if (w->comma) jw_putc(w, ',');
    jw_escaped(w, key, strlen(key));
    jw_putc(w, ':');
    w->comma = 0;
}

void jw_strn(struct jw *w, const char *s, size_t n)
{
    jw_value(w);
    jw_escaped(w, s, n);
}

void jw_str(struct jw *w, const char *s)
{
    if (!s) {
        jw_null(w);
        return;
    }
    jw_strn(w, s, strlen(s));
}

void jw_int(struct jw *w, int64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%" PRId64, v);
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

void jw_uint(struct jw *w, uint64_t v)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    jw_value(w);
    jw_put(w, b, (size_t)n);
}

void jw_double(struct jw *w, double v)
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

/* Exact powers of ten as doubles (10^22 is the largest a double holds exactly). */
static const double jw_pow10[23] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

/* Writes N (exactly p digits) x 10^(x-p+1), negative when neg, as printf's "%.{p}g" would. */
static int jw_g_text(char *b, int neg, uint64_t n, int p, int x)
{
    char d[24];
    for (int i = p - 1; i >= 0; i--, n /= 10) d[i] = (char)('0' + n % 10);
    int nd = p;
    while (nd > 1 && d[nd - 1] == '0') nd--; /* %g drops trailing zeros */
    char *o = b;
    if (neg) *o++ = '-';
    if (x < -4 || x >= p) {
        *o++ = d[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        int ax = x < 0 ? -x : x; /* printf's exponent: a sign and at least two digits */
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        if (ax >= 100) *o++ = (char)('0' + ax / 100);
        *o++ = (char)('0' + ax / 10 % 10);
        *o++ = (char)('0' + ax % 10);
    } else if (x >= 0) {
        for (int i = 0; i <= x; i++) *o++ = i < nd ? d[i] : '0';
        if (nd > x + 1) {
            *o++ = '.';
            memcpy(o, d + x + 1, (size_t)(nd - x - 1));
            o += nd - x - 1;
        }
    } else {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -x - 1; i++) *o++ = '0';
        memcpy(o, d, (size_t)nd);
        o += nd;
    }
    *o = 0;
    return (int)(o - b);
}

/* The p-digit decimal nearest to |v| (p <= 9) as N x 10^(x-p+1), computed in double: 1 when N is
 * certainly the correctly rounded one and reads back as v, 0 when it does not read back, -1 when
 * double arithmetic cannot decide (a near tie, or a power of ten a double does not hold exactly). */
static int jw_try_digits(float v, int p, uint64_t *n, int *x)
{
    double a = fabs((double)v);
    int ex = (int)floor(log10(a));
    for (int tries = 0; tries < 3; tries++) {
        int k = ex - p + 1; /* value = N x 10^k */
        if (k < -22 || k > 22) return -1;
        double scaled = k < 0 ? a * jw_pow10[-k] : a / jw_pow10[k]; /* relative error <= 2^-53 */
        double fl = floor(scaled), frac = scaled - fl;
        if (fabs(frac - 0.5) < 1e-6) return -1; /* too near a tie to trust one rounding */
        uint64_t nn = (uint64_t)fl + (frac > 0.5);
        uint64_t lo = (uint64_t)jw_pow10[p - 1], hi = (uint64_t)jw_pow10[p];
        if (nn >= hi) {
            ex++;
            continue;
        }
        if (nn < lo) {
            ex--;
            continue;
        }
        /* Read back as strtof would: one exact IEEE operation gives the correctly rounded double;
         * rounding that to float32 is strtof's answer unless the double is a float32 midpoint. */
        double back = k < 0 ? (double)nn / jw_pow10[-k] : (double)nn * jw_pow10[k];
        float f = (float)back;
        double lo32 = (double)f, other = (double)nextafterf(f, back > lo32 ? INFINITY : -INFINITY);
        if (back != lo32 && back - lo32 == (other - lo32) / 2) return -1;
        *n = nn;
        *x = ex;
        return f == (float)a;
    }
    return -1;
}

/* Shortest of %.6g .. %.9g that reads back as the same float32 (9 digits always does).  The digits
 * come from double arithmetic when it is certainly exact (jw_try_digits), which is most floats,
 * else from snprintf + strtof: printing floats was most of a search answer's cost. */
static int jw_format_float(char *b, size_t cap, float v)
{
    /* "-0" reads back as the integer 0 in many JSON parsers (Python's among them): keep the sign. */
    if (v == 0 && signbit(v)) return snprintf(b, cap, "-0.0");
    if (v != 0 && cap >= 32) {
        int p;
        for (p = 6; p <= 9; p++) {
            uint64_t n;
            int x, r = jw_try_digits(v, p, &n, &x);
            if (r < 0) break;
            if (r) return jw_g_text(b, v < 0, n, p, x);
        }
        if (p > 9) p = 9;
        /* Undecided at p: printf from there on, as below. */
        int n = 0;
        for (; p <= 9; p++) {
            n = snprintf(b, cap, "%.*g", p, (double)v);
            if (strtof(b, NULL) == v) break;
        }
        return n;
    }
    int n = 0;
    for (int p = 6; p <= 9; p++) {
        n = snprintf(b, cap, "%.*g", p, (double)v);
        if (strtof(b, NULL) == v) break;
    }
    return n;
}

int jw_format_float_ref(char *b, size_t cap, float v)
{
    if (v == 0 && signbit(v)) return snprintf(b, cap, "-0.0");
    int n = 0;
    for (int p = 6; p <= 9; p++) {
        n = snprintf(b, cap, "%.*g", p, (double)v);
        if (strtof(b, NULL) == v) break;
    }
    return n;
}

int jw_format_float_fast(char *b, size_t cap, float v) { return jw_format_float(b, cap, v); }

void jw_float(struct jw *w, float v)
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

void jw_floats(struct jw *w, const float *v, size_t n)
{
    jw_arr(w);
    for (size_t i = 0; i < n; i++) jw_float(w, v[i]);
    jw_arr_end(w);
}

void jw_bool(struct jw *w, int v)
{
    jw_value(w);
    if (v) jw_put(w, "true", 4);
    else jw_put(w, "false", 5);
}

void jw_null(struct jw *w)
{
    jw_value(w);
    jw_put(w, "null", 4);
}

int jw_json(struct jw *w, const char *json)
{
    if (!json) {
        jw_null(w);
        return 0;
    }
    /* Parsed and encoded again, never copied: what comes out is JSON whatever was stored. */
    json_t *doc = json_loads(json, 0, NULL);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        jw_null(w);
        return -1;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) {
        w->oom = 1;
        return 0;
    }
    jw_value(w);
    jw_put(w, text, strlen(text));
    free(text);
    return 0;
}

void jw_time_fmt(int64_t wall_ns, char out[32])
{
    time_t t = (time_t)(wall_ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void jw_time(struct jw *w, int64_t wall_ns)
{
    char b[32];
    jw_time_fmt(wall_ns, b);
    jw_str(w, b);
}

/* ---------------------------------------------------------------- reader */

/* Skips JSON whitespace in [p, e). */
static const char *jr_skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

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

int jr_nesting_ok(const char *s, size_t n, unsigned max_depth) { return jr_depth_ok(s, n, max_depth); }

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
    /* Anything but an object is refused before jansson builds a tree of it (a 64 MiB array). */
    const char *p = jr_skip_ws(body, body + len);
    if (p < body + len && *p != '{') {
        snprintf(err, cap, "request body must be a JSON object");
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

/* Writes "<where>unknown field 'k' (known fields: a, b)" into err; both decoders of a batch use it,
 * so their messages are the same.  Long keys are cut in the message (only there). */
static void jr_unknown_msg(const char *where, const char *key, size_t klen, const char *const *allowed, char *err,
                           size_t cap)
{
    char known[512] = "";
    size_t used = 0;
    for (size_t i = 0; allowed[i] && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", allowed[i]);
    snprintf(err, cap, "%sunknown field '%.*s%s' (%s%s)", where, klen > 64 ? 64 : (int)klen, key,
             klen > 64 ? "..." : "", allowed[0] ? "known fields: " : "this request takes no body", known);
}

/* Whether the klen-byte key is one of the NULL-terminated allowed names. */
static int jr_allowed(const char *key, size_t klen, const char *const *allowed)
{
    for (size_t i = 0; allowed[i]; i++)
        if (strlen(allowed[i]) == klen && !memcmp(allowed[i], key, klen)) return 1;
    return 0;
}

int jr_only(json_t *obj, const char *where, const char *const *allowed, char *err, size_t cap)
{
    const char *key;
    json_t *v;
    /* jansson keeps insertion order, so this names the first unknown key of the text. */
    json_object_foreach(obj, key, v)
    {
        if (!jr_allowed(key, strlen(key), allowed)) {
            jr_unknown_msg(where, key, strlen(key), allowed, err, cap);
            return -1;
        }
    }
    return 0;
}

/* Skips one JSON value without checking it (the parse does): strings and nesting are respected.
 * Returns the position after it, or NULL when the text ends first. */
static const char *jr_skip_value(const char *p, const char *e)
{
    unsigned depth = 0;
    int in_str = 0;
    for (; p < e; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\') p++;
            else if (c == '"') {
                in_str = 0;
                if (depth == 0) return p + 1;
            }
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return p; /* the end of the enclosing object: a scalar ended here */
            if (--depth == 0) return p + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return p;
        }
    }
    return NULL;
}

int jr_prescan_keys(const char *body, size_t len, const char *const *allowed, char *err, size_t cap)
{
    const char *p = body, *e = body + len;
    if (!body) return 0;
    p = jr_skip_ws(p, e);
    if (p >= e || *p != '{') return 0;
    p = jr_skip_ws(p + 1, e);
    while (p < e && *p == '"') {
        const char *k = ++p;
        while (p < e && *p != '"') {
            if (*p == '\\') return 0; /* an escaped key: the parse decides */
            p++;
        }
        if (p >= e) return 0;
        size_t kn = (size_t)(p - k);
        if (memchr(k, 0, kn)) return 0;
        if (!jr_allowed(k, kn, allowed)) {
            jr_unknown_msg("", k, kn, allowed, err, cap);
            return -1;
        }
        p = jr_skip_ws(p + 1, e);
        if (p >= e || *p != ':') return 0;
        p = jr_skip_value(jr_skip_ws(p + 1, e), e);
        if (!p) return 0;
        p = jr_skip_ws(p, e);
        if (p >= e || *p != ',') return 0;
        p = jr_skip_ws(p + 1, e);
    }
    return 0;
}

int jr_string(json_t *obj, const char *key, const char **out, char *err, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_string(v)) {
        snprintf(err, cap, "field '%s' must be a string", key);
        return -1;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, cap, "field '%s' contains a NUL character", key);
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
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        i = (json_int_t)json_real_value(v); /* 10.0 from clients that only have doubles */
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

/* Bounds of a float32: anything below the midpoint between FLT_MAX and 2^128 rounds to a finite
 * float (so an exported FLT_MAX printed with 9 digits reads back). */

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
        if (!rec_fits_float32(d)) {
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

/* ---------------------------------------------------------------- vectors (general path) */

const char *const jr_vector_fields[] = { "id", "values", "metadata", NULL };
const char *const jr_batch_fields[] = { "vectors", NULL };

void jf_vector_free(struct jf_vector *v)
{
    free(v->id);
    free(v->values);
    free(v->meta);
    memset(v, 0, sizeof *v);
}

/* metadata: absent or null = none; otherwise an object, kept as compact JSON text. */
static int jr_meta(json_t *o, const char *where, char **meta, char *err, size_t cap)
{
    json_t *m = json_object_get(o, "metadata");
    *meta = NULL;
    if (!m || json_is_null(m)) return 0;
    if (!json_is_object(m)) {
        snprintf(err, cap, "%sfield 'metadata' must be a JSON object", where);
        return -1;
    }
    *meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!*meta) {
        snprintf(err, cap, "%sout of memory encoding metadata", where);
        return -1;
    }
    return 0;
}

int jr_vector(json_t *o, const char *where, struct jf_vector *v, char *err, size_t cap)
{
    memset(v, 0, sizeof *v);
    if (!json_is_object(o)) {
        snprintf(err, cap, "%sa vector must be a JSON object", where);
        return -1;
    }
    if (jr_only(o, where, jr_vector_fields, err, cap)) return -1;
    json_t *id = json_object_get(o, "id");
    if (!id || !json_is_string(id)) {
        snprintf(err, cap, "%sfield 'id' %s", where, id ? "must be a string" : "is required");
        return -1;
    }
    json_t *vals = json_object_get(o, "values");
    if (!vals) {
        snprintf(err, cap, "%sfield 'values' is required", where);
        return -1;
    }
    char what[64];
    snprintf(what, sizeof what, "%svalues", where);
    if (!(v->id = strdup(json_string_value(id)))) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    if (jr_floats(vals, what, JVDB_MAX_DIM, &v->values, &v->n, err, cap) < 0 || jr_meta(o, where, &v->meta, err, cap)) {
        jf_vector_free(v);
        return -1;
    }
    return 0;
}

int jr_batch(json_t *body, struct jf_vector **out, size_t *count, long *index, char *err, size_t cap)
{
    *index = -1;
    if (jr_only(body, "", jr_batch_fields, err, cap)) return -1;
    json_t *arr = json_object_get(body, "vectors");
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n == 0) {
        snprintf(err, cap, "%s",
                 arr && json_is_array(arr) ? "field 'vectors' is empty"
                                           : "field 'vectors' must be an array of vectors");
        return -1;
    }
    struct jf_vector *v = calloc(n, sizeof *v);
    if (!v) {
        snprintf(err, cap, "out of memory for a batch of %zu vectors", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char where[48];
        snprintf(where, sizeof where, "record %zu: ", i);
        if (jr_vector(json_array_get(arr, i), where, &v[i], err, cap)) {
            *index = (long)i;
            jf_batch_free(v, i);
            return -1;
        }
    }
    *out = v;
    *count = n;
    return 0;
}

/* ---------------------------------------------------------------- fast path for batches */

#define JVDB_FAST_MAX_FLOATS JVDB_MAX_DIM

struct jf {
    const char *p, *end;
};

/* Skips JSON whitespace. */
static void jf_ws(struct jf *f)
{
    while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r')) f->p++;
}

/* Skips whitespace and consumes c; -1 when the next character is another. */
static int jf_char(struct jf *f, char c)
{
    jf_ws(f);
    if (f->p >= f->end || *f->p != c) return -1;
    f->p++;
    return 0;
}

/* A string of printable ASCII without escapes (anything else: the general path). */
static int jf_plain_string(struct jf *f, const char **s, size_t *n)
{
    if (jf_char(f, '"')) return -1;
    const char *b = f->p;
    while (f->p < f->end && *f->p != '"') {
        unsigned char c = (unsigned char)*f->p;
        if (c < 0x20 || c > 0x7e || c == '\\') return -1;
        f->p++;
    }
    if (f->p >= f->end) return -1;
    *s = b;
    *n = (size_t)(f->p - b);
    f->p++;
    return 0;
}

static int jf_key_is(const char *s, size_t n, const char *want) { return strlen(want) == n && !memcmp(s, want, n); }

/* Exact powers of ten as doubles (10^22 is the largest that a double holds exactly). */
static const double jf_pow10[23] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

const char *jf_number_text(const char *b, const char *end, double *out)
{
    const char *q = b;
    int neg = 0, real = 0, many = 0, nd = 0;
    uint64_t w = 0; /* the first 19 significant digits */
    long exp10 = 0;
    if (q < end && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= end || *q < '0' || *q > '9') return NULL;
    if (*q == '0') {
        q++;
    } else {
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
            if (nd < 19) {
                w = w * 10 + (uint64_t)(*q - '0');
                nd++;
            } else {
                many = 1;
                exp10++;
            }
        }
    }
    if (q < end && *q == '.') {
        real = 1;
        q++;
        if (q >= end || *q < '0' || *q > '9') return NULL;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
            if (nd < 19) {
                w = w * 10 + (uint64_t)(*q - '0');
                nd += w != 0; /* leading zeros of 0.000123 are not significant */
                exp10--;
            } else {
                many = 1;
            }
        }
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        real = 1;
        q++;
        int eneg = 0;
        if (q < end && (*q == '+' || *q == '-')) eneg = *q++ == '-';
        if (q >= end || *q < '0' || *q > '9') return NULL;
        long ev = 0;
        for (; q < end && *q >= '0' && *q <= '9'; q++)
            if (ev < 100000) ev = ev * 10 + (*q - '0');
        exp10 += eneg ? -ev : ev;
    }
    if (!real) {
        if (q - b > 18) return NULL; /* near the 64-bit limit: let jansson decide */
        /* jansson reads integers as 64-bit integers, so "-0" is +0. */
        *out = (double)(neg ? -(int64_t)w : (int64_t)w);
        return q;
    }
#if FLT_EVAL_METHOD == 0
    /* Clinger's fast path: both operands are exact doubles, so one IEEE multiply or divide rounds
     * the exact decimal value once, to nearest — the correctly rounded result strtod gives. */
    if (!many && w <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)w;
        d = exp10 < 0 ? d / jf_pow10[-exp10] : d * jf_pow10[exp10];
        *out = neg ? -d : d;
        return q;
    }
#endif
    char *e;
    errno = 0;
    *out = strtod(b, &e); /* everything else: many digits, large exponents, underflow */
    if (e != q || errno) return NULL;
    return q;
}

/* One JSON number, converted as jansson would (jf_number_text). */
static int jf_number(struct jf *f, double *out)
{
    jf_ws(f);
    const char *q = jf_number_text(f->p, f->end, out);
    if (!q) return -1;
    f->p = q;
    return 0;
}

/* Reads a non-empty array of numbers that fit float32 into a malloc'd array; -1 sends the body to the general
 * decoder, which says what is wrong. */
static int jf_floats(struct jf *f, float **out, uint32_t *count)
{
    if (jf_char(f, '[')) return -1;
    size_t n = 0, cap = 0;
    float *v = NULL;
    jf_ws(f);
    if (f->p < f->end && *f->p == ']') goto bad; /* empty: the general path says so */
    for (;;) {
        double d;
        if (jf_number(f, &d) || !rec_fits_float32(d) || n == JVDB_FAST_MAX_FLOATS) goto bad;
        float *nv = grow_array(v, &cap, n + 1, sizeof *nv, 128);
        if (!nv) goto bad;
        v = nv;
        v[n++] = (float)d;
        jf_ws(f);
        if (f->p < f->end && *f->p == ',') {
            f->p++;
            continue;
        }
        if (jf_char(f, ']')) goto bad;
        break;
    }
    *out = v;
    *count = (uint32_t)n;
    return 0;
bad:
    free(v);
    return -1;
}

/* The span of one object value (strings and nesting respected, at most `limit` levels deep, the
 * object itself being one); jansson validates it afterwards. */
static int jf_object_span(struct jf *f, const char **b, size_t *n, unsigned limit)
{
    jf_ws(f);
    if (f->p >= f->end || *f->p != '{') return -1;
    const char *start = f->p;
    unsigned depth = 0;
    int in_str = 0;
    for (; f->p < f->end; f->p++) {
        char c = *f->p;
        if (in_str) {
            if (c == '\\') f->p++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > limit) return -1; /* too deep: the general path says so */
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                f->p++;
                *b = start;
                *n = (size_t)(f->p - start);
                return 0;
            }
        }
    }
    return -1;
}

/* metadata: null, or an object that jansson (with the general path's flags) accepts. */
static int jf_meta(struct jf *f, char **meta, unsigned limit)
{
    jf_ws(f);
    if (f->end - f->p >= 4 && !memcmp(f->p, "null", 4)) {
        f->p += 4;
        *meta = NULL;
        return 0;
    }
    const char *b;
    size_t n;
    if (jf_object_span(f, &b, &n, limit)) return -1;
    json_t *m = json_loadb(b, n, JSON_REJECT_DUPLICATES, NULL);
    if (!m || !json_is_object(m)) {
        json_decref(m);
        return -1;
    }
    *meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(m);
    return *meta ? 0 : -1;
}

/* One vector object: 0 = decoded, -1 = use the general path, -2 = an unknown field (err set). */
static int jf_vector_obj(struct jf *f, struct jf_vector *v, size_t index, unsigned meta_limit, char *err, size_t cap)
{
    memset(v, 0, sizeof *v);
    if (jf_char(f, '{')) return -1;
    int have_id = 0, have_values = 0, have_meta = 0;
    for (;;) {
        const char *k, *id;
        size_t kn, idn;
        if (jf_plain_string(f, &k, &kn) || jf_char(f, ':')) return -1;
        if (jf_key_is(k, kn, "id") && !have_id) {
            if (jf_plain_string(f, &id, &idn) || !(v->id = strndup(id, idn))) return -1;
            have_id = 1;
        } else if (jf_key_is(k, kn, "values") && !have_values) {
            if (jf_floats(f, &v->values, &v->n)) return -1;
            have_values = 1;
        } else if (jf_key_is(k, kn, "metadata") && !have_meta) {
            if (jf_meta(f, &v->meta, meta_limit)) return -1;
            have_meta = 1;
        } else if (!jr_allowed(k, kn, jr_vector_fields)) {
            /* Refused as the general path would refuse it, without reading the value. */
            char where[48];
            snprintf(where, sizeof where, "record %zu: ", index);
            jr_unknown_msg(where, k, kn, jr_vector_fields, err, cap);
            return -2;
        } else {
            return -1; /* a duplicate */
        }
        jf_ws(f);
        if (f->p < f->end && *f->p == ',') {
            f->p++;
            continue;
        }
        if (jf_char(f, '}')) return -1;
        return have_id && have_values ? 0 : -1;
    }
}

int jf_vector_one(const char *body, size_t len, unsigned max_depth, struct jf_vector *v)
{
    char err[8];
    memset(v, 0, sizeof *v);
    /* Nesting: the vector object is level 1, its values level 2, its metadata 2 and below. */
    if (!body || !len || max_depth < 2) return 0;
    struct jf f = { body, body + len };
    if (jf_vector_obj(&f, v, 0, max_depth - 1, err, sizeof err) == 0) {
        jf_ws(&f);
        if (f.p == f.end) return 1;
    }
    jf_vector_free(v);
    memset(v, 0, sizeof *v);
    return 0;
}

char *jf_take_floats(const char *body, size_t len, const char *key, float **out, uint32_t *count)
{
    if (!body || !len) return NULL;
    struct jf f = { body, body + len };
    if (jf_char(&f, '{')) return NULL;
    for (;;) {
        const char *k;
        size_t kn;
        if (jf_plain_string(&f, &k, &kn) || jf_char(&f, ':')) return NULL;
        jf_ws(&f);
        if (jf_key_is(k, kn, key)) {
            const char *b = f.p;
            if (jf_floats(&f, out, count)) return NULL;
            char *copy = malloc(len + 1);
            if (!copy) {
                free(*out);
                *out = NULL;
                return NULL;
            }
            memcpy(copy, body, len);
            copy[len] = 0;
            /* Same length, so the parse's line/column of any later error do not move. */
            memset(copy + (b - body), ' ', (size_t)(f.p - b));
            memcpy(copy + (b - body), "[]", 2);
            return copy;
        }
        const char *q = jr_skip_value(f.p, f.end);
        if (!q || q == f.p) return NULL;
        f.p = q;
        jf_ws(&f);
        if (f.p >= f.end || *f.p != ',') return NULL;
        f.p++;
    }
}

void jf_batch_free(struct jf_vector *v, size_t count)
{
    if (!v) return;
    for (size_t i = 0; i < count; i++) {
        free(v[i].id);
        free(v[i].values);
        free(v[i].meta);
    }
    free(v);
}

int jf_batch(const char *body, size_t len, unsigned max_depth, struct jf_vector **out, size_t *count, long *index,
             char *err, size_t cap)
{
    /* Nesting is checked as the decoder goes (no separate pass over the body): the body is level 1,
     * the array 2, each vector 3, its values and metadata 4 and below. */
    if (!body || !len || max_depth < 4) return 0;
    struct jf f = { body, body + len };
    const char *k;
    size_t kn, n = 0, vcap = 0;
    struct jf_vector *v = NULL;
    if (jf_char(&f, '{') || jf_plain_string(&f, &k, &kn) || !jf_key_is(k, kn, "vectors") || jf_char(&f, ':') ||
        jf_char(&f, '['))
        return 0;
    jf_ws(&f);
    if (f.p < f.end && *f.p == ']') return 0;
    for (;;) {
        struct jf_vector *nv = grow_array(v, &vcap, n + 1, sizeof *nv, 64);
        if (!nv) goto fallback;
        v = nv;
        int bad = jf_vector_obj(&f, &v[n], n, max_depth - 3, err, cap);
        n++; /* freed below either way */
        if (bad == -2) {
            jf_batch_free(v, n);
            /* A body nested too deep further on is refused for that, as the general path does. */
            if (!jr_depth_ok(body, len, max_depth)) return 0;
            *index = (long)(n - 1);
            return -1;
        }
        if (bad) goto fallback;
        jf_ws(&f);
        if (f.p < f.end && *f.p == ',') {
            f.p++;
            continue;
        }
        if (jf_char(&f, ']')) goto fallback;
        break;
    }
    if (jf_char(&f, '}')) goto fallback;
    jf_ws(&f);
    if (f.p != f.end) goto fallback;
    *out = v;
    *count = n;
    return 1;
fallback:
    jf_batch_free(v, n);
    return 0;
}

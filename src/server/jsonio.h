/*
 * jsonio.h — JSON in and out for the REST server.
 *
 * Out: a small append-only writer (jw_*) instead of building jansson trees, so that float32 values
 * are printed in their shortest round-trip form (0.1, not 0.10000000149011612).  Stored metadata
 * is never copied into an answer as it is: jw_json re-encodes it through jansson, so text that is
 * not a JSON object (a damaged or forged record) cannot inject anything into the response.
 * In: jansson parses request bodies (strict, with line/column errors); jr_* helpers pull typed
 * fields out with messages that name the field.  Every body is checked against the fields its
 * route knows: an unknown field is refused with a message naming it (jr_only), and top-level keys
 * are checked before the parse (jr_prescan_keys), so a large unknown field never builds a tree.
 */
#ifndef JVDB_SERVER_JSONIO_H
#define JVDB_SERVER_JSONIO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* ---- writer ---- */

struct jw {
    char *buf;
    size_t len, cap;
    int comma; /* a value was just completed: the next key or value needs a ',' first */
    int oom;   /* an allocation failed; the text is incomplete */
};

void jw_init(struct jw *w);
void jw_free(struct jw *w);
/* Hands the malloc'd, NUL-terminated text to the caller (NULL after an allocation failure). */
char *jw_take(struct jw *w, size_t *len);

void jw_obj(struct jw *w);
void jw_obj_end(struct jw *w);
void jw_arr(struct jw *w);
void jw_arr_end(struct jw *w);
void jw_key(struct jw *w, const char *key);
void jw_str(struct jw *w, const char *s);
void jw_strn(struct jw *w, const char *s, size_t n);
void jw_int(struct jw *w, int64_t v);
void jw_uint(struct jw *w, uint64_t v);
void jw_double(struct jw *w, double v);                 /* non-finite values become null */
void jw_float(struct jw *w, float v);                   /* shortest text that reads back as the same float32 */
void jw_floats(struct jw *w, const float *v, size_t n); /* an array of floats */
/* The text jw_float writes for v (at most 16 bytes; cap >= 32), and the reference it must equal:
 * the shortest of printf's %.6g .. %.9g that strtof reads back as v.  For the unit tests. */
int jw_format_float_fast(char *b, size_t cap, float v);
int jw_format_float_ref(char *b, size_t cap, float v);
void jw_bool(struct jw *w, int v);
void jw_null(struct jw *w);
/* Stored metadata text, parsed and written again through jansson: a JSON object comes out as
 * compact JSON, NULL or anything else (not JSON, not an object) as null.  Returns 0, or -1 when
 * the text was there but not a JSON object (the caller may log it). */
int jw_json(struct jw *w, const char *json);
/* Writes an ISO 8601 UTC time ("2025-11-26T01:59:26Z") from wall-clock nanoseconds. */
void jw_time(struct jw *w, int64_t wall_ns);
void jw_time_fmt(int64_t wall_ns, char out[32]);

/* key + value shorthands */
#define jw_kstr(w, k, v)    (jw_key((w), (k)), jw_str((w), (v)))
#define jw_kint(w, k, v)    (jw_key((w), (k)), jw_int((w), (v)))
#define jw_kuint(w, k, v)   (jw_key((w), (k)), jw_uint((w), (v)))
#define jw_kdouble(w, k, v) (jw_key((w), (k)), jw_double((w), (v)))
#define jw_kbool(w, k, v)   (jw_key((w), (k)), jw_bool((w), (v)))

/* ---- reader helpers ----
 * Each returns 0 when the field is absent (leaving *out alone), 1 when present and valid, and -1
 * with a message in err (cap bytes) naming the field when present but of the wrong type. */

/* Parses a request body that must be one JSON object nested at most max_depth deep.
 * Returns NULL with err set ("request body is not valid JSON: ... at line 1, column 7"). */
json_t *jr_parse_object(const char *body, size_t len, unsigned max_depth, char *err, size_t cap);

/* 1 when JSON text s[0..n) nests brackets at most max_depth deep (strings skipped), else 0. */
int jr_nesting_ok(const char *s, size_t n, unsigned max_depth);

/* Refuses any key of obj that is not in `allowed` (NULL-terminated): -1 with "<where>unknown field
 * 'filter' (known fields: ...)" in err.  `where` is "" or a prefix such as "record 3: ". */
int jr_only(json_t *obj, const char *where, const char *const *allowed, char *err, size_t cap);
/* The same on the raw text of a body, before any parse: scans the top-level keys of the object
 * (skipping values without building anything) and returns -1 naming the first unknown one, 0 when
 * none was found or the text is not simple enough to tell (the parse decides then). */
int jr_prescan_keys(const char *body, size_t len, const char *const *allowed, char *err, size_t cap);

/* A string field; strings holding a NUL character are refused (they would be cut short). */
int jr_string(json_t *obj, const char *key, const char **out, char *err, size_t cap);
int jr_bool(json_t *obj, const char *key, int *out, char *err, size_t cap);
int jr_uint(json_t *obj, const char *key, uint64_t min, uint64_t max, uint64_t *out, char *err, size_t cap);
int jr_number(json_t *obj, const char *key, double *out, char *err, size_t cap);

/* Reads a JSON array of numbers into a malloc'd float array.  `what` names it in messages
 * ("values", "record 3: values").  At most max_len numbers; each must fit a float32. */
int jr_floats(json_t *arr, const char *what, uint32_t max_len, float **out, uint32_t *n, char *err, size_t cap);

/* ---- vectors in request bodies ---- */

/* One decoded request vector; every pointer is malloc'd and owned by it. */
struct jf_vector {
    char *id;
    float *values;
    uint32_t n;
    char *meta; /* compact JSON, as the general path writes it; NULL for none */
};

extern const char *const jr_vector_fields[]; /* id, values, metadata */
extern const char *const jr_batch_fields[];  /* vectors */

/* The general decoders (on a parsed body).  jr_vector reads {"id", "values", "metadata"}; `where`
 * ("" or "record N: ") prefixes messages.  jr_batch reads {"vectors": [...]} and on error sets
 * *index to the bad record (-1 when the error is not about one record).  Both return 0 or -1. */
int jr_vector(json_t *o, const char *where, struct jf_vector *v, char *err, size_t cap);
int jr_batch(json_t *body, struct jf_vector **out, size_t *count, long *index, char *err, size_t cap);
void jf_vector_free(struct jf_vector *v);

/* ---- fast path for vector batches ----
 * jansson builds a tree with one allocation per number, which makes it most of the cost of a batch
 * request (about 70 ms for 1,000 vectors of 128 floats).  jf_batch reads the common shape
 * {"vectors": [{"id": "...", "values": [numbers], "metadata": {...} | null}, ...]} straight into
 * floats.  It is deliberately narrow: anything else (escapes or non-ASCII in ids, a number that is
 * not plainly in range, any syntax error) returns 0 and the request takes the general jansson path,
 * which then also gives the error message — so the fast path can only ever accept what the general
 * path accepts, with the same result.  The one thing it refuses itself is an unknown field in a
 * vector, which the general path refuses too (with the same message when the body is otherwise
 * valid JSON): its value is never read, so a large one costs no tree.  tests/fuzz/fuzz_http_body.c
 * holds the two paths to this.  `body` must be NUL-terminated. */

/* Scans one JSON number starting at b (the text must not end inside a number before `end`, or be
 * NUL-terminated there) and sets *out to the double jansson gives for it: integers of up to 18
 * characters through a 64-bit integer ("-0" is +0), every other number correctly rounded as strtod
 * rounds it.  The common shapes (at most 19 significant digits, a decimal exponent within +-22 once
 * the point is moved: every "%.9g" float32) take Clinger's exact fast path (one IEEE multiply or
 * divide of exact operands) instead of strtod, the rest strtod.  Returns the end of the number, or
 * NULL when the text is not a JSON number or is out of double range (the general path decides). */
const char *jf_number_text(const char *b, const char *end, double *out);

/* The fast path for one vector body {"id", "values", "metadata"} (POST .../vectors): 1 = decoded
 * into *v, 0 = use the general path (*v empty).  It never refuses: the general path gives every
 * message.  Unknown top-level fields are the caller's (jr_prescan_keys) before this. */
int jf_vector_one(const char *body, size_t len, unsigned max_depth, struct jf_vector *v);

/* For bodies that carry one large numbers array beside small fields (a search's queryVector):
 * when top-level `key` of the object text body[0..len) holds an array the fast decoder reads
 * (numbers only, 1..JVDB_MAX_DIM of them), decodes it into *out / *count (malloc'd) and returns a
 * malloc'd, NUL-terminated copy of the body with that array replaced by "[]" and spaces (same
 * length, so parse errors elsewhere keep their line and column); the caller parses the copy with
 * jansson for the other fields.  NULL otherwise (nothing allocated): parse the body as it is. */
char *jf_take_floats(const char *body, size_t len, const char *key, float **out, uint32_t *count);

/* 1 = handled (*out holds count vectors); 0 = use the general path (nothing allocated);
 * -1 = refused: message in err, the record in *index. */
int jf_batch(const char *body, size_t len, unsigned max_depth, struct jf_vector **out, size_t *count, long *index,
             char *err, size_t cap);
void jf_batch_free(struct jf_vector *v, size_t count);

#endif

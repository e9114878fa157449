/*
 * validate.c — the record invariants (see validate.h), in one place for every entry point.
 *
 * Invariant: a record on disk, in a backup or in the keydir always has an id in the id alphabet, a
 * vector of finite values whose squared norm is at most REC_MAX_SQUARED_NORM, and metadata that is
 * absent or a JSON object.  Output paths rely on it: they may write ids and metadata unescaped by
 * anything but JSON's own rules, and scoring may use float32 throughout.
 */
#include "store/validate.h"

#include "core/err.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

/* Length of the UTF-8 sequence starting at p (at most `left` bytes), 0 when it is not valid UTF-8;
 * *cp receives the code point. */
static size_t utf8_decode(const unsigned char *p, size_t left, uint32_t *cp)
{
    unsigned char c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) n = 2, v = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) n = 3, v = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) n = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (n > left) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and values past Unicode's end are not UTF-8 (RFC 3629). */
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return n;
}

size_t rec_id_bad_offset(const char *id, size_t len, const char **why)
{
    const unsigned char *p = (const unsigned char *)id;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            *why = "is not valid UTF-8";
            return i;
        }
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
            *why = cp == 0 ? "holds a NUL byte" : "holds a control character";
            return i;
        }
        i += n;
    }
    return len;
}

int rec_check_id(const char *id, size_t len, const char *where)
{
    if (!id) return err_set(JVDB_EINVAL, "%sid is missing", where);
    if (len == 0) return err_set(JVDB_EINVAL, "%sid is empty", where);
    if (len > JVDB_MAX_ID_LEN)
        return err_set(JVDB_EINVAL, "%sid is %zu bytes long; the limit is %d", where, len, JVDB_MAX_ID_LEN);
    const char *why = NULL;
    size_t bad = rec_id_bad_offset(id, len, &why);
    if (bad < len)
        return err_set(JVDB_EINVAL, "%sid %s at byte %zu (ids are UTF-8 text without control characters)", where, why,
                       bad);
    return JVDB_OK;
}

int rec_check_meta(const char *meta, size_t len, const char *where)
{
    if (!meta) return JVDB_OK;
    if (len > JVDB_MAX_META_LEN)
        return err_set(JVDB_EINVAL, "%smetadata is %zu bytes; the limit is %u", where, len, JVDB_MAX_META_LEN);
    if (memchr(meta, '\0', len)) return err_set(JVDB_EINVAL, "%smetadata holds a NUL byte", where);
    json_error_t jerr;
    json_t *doc = json_loadb(meta, len, JSON_DECODE_ANY, &jerr);
    if (!doc)
        return err_set(JVDB_EINVAL, "%smetadata is not valid JSON (line %d, column %d): %s", where, jerr.line,
                       jerr.column, jerr.text);
    int is_obj = json_is_object(doc);
    json_decref(doc);
    if (!is_obj) return err_set(JVDB_EINVAL, "%smetadata must be a JSON object", where);
    return JVDB_OK;
}

/* rec_check_values, also giving the squared norm (summed in double) to a caller that needs it. */
static int rec_values_norm(const float *v, uint32_t dim, const char *what, const char *where, double *norm2)
{
    if (!v) return err_set(JVDB_EINVAL, "%s%s is missing", where, what);
    /* An all-ones exponent means NaN or infinity; OR-ing that test over the integer bits is a loop
     * the compiler vectorises, where isnan/isinf per value is not.  The slow loop only names the
     * culprit. */
    uint32_t nonfinite = 0;
    double sum = 0;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        nonfinite |= (bits & 0x7f800000u) == 0x7f800000u;
        sum += (double)v[i] * v[i];
    }
    for (uint32_t i = 0; nonfinite && i < dim; i++) {
        if (isnan(v[i])) return err_set(JVDB_EINVAL, "%s%s value %u is NaN", where, what, i);
        if (isinf(v[i])) return err_set(JVDB_EINVAL, "%s%s value %u is infinite", where, what, i);
    }
    if (sum > REC_MAX_SQUARED_NORM)
        return err_set(JVDB_EINVAL,
                       "%s%s has magnitude %.3g; the largest allowed is %.3g (beyond it float32 distances overflow)",
                       where, what, sqrt(sum), sqrt(REC_MAX_SQUARED_NORM));
    *norm2 = sum;
    return JVDB_OK;
}

int rec_check_values(const float *v, uint32_t dim, const char *what, const char *where)
{
    double sum;
    return rec_values_norm(v, dim, what, where, &sum);
}

int rec_check_vector(const float *v, uint32_t dim, jvdb_metric metric, const char *db_name, const char *where)
{
    double sum;
    int rc = rec_values_norm(v, dim, "vector", where, &sum);
    if (rc) return rc;
    /* The norm is summed in double, so a vector of tiny but non-zero values passes (distance.c copes). */
    if (metric == JVDB_METRIC_COSINE && !(sum > 0)) {
        if (db_name)
            return err_set(JVDB_EINVAL, "%sa zero vector has no direction, so cosine database '%s' cannot store it",
                           where, db_name);
        return err_set(JVDB_EINVAL, "%sa zero vector has no direction, so a cosine database cannot store it", where);
    }
    return JVDB_OK;
}

int rec_fits_float32(double d) { return fabs(d) < 0x1.ffffffp+127; }

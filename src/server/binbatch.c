/*
 * binbatch.c — decodes the binary vector batch (layout in binbatch.h, docs/API.md).
 *
 * Invariant: no byte outside body[0..len) is ever read — every declared size (count x dim values,
 * each id's length, the sidecar) is checked in 64-bit arithmetic against what remains before it is
 * used — and a body is either decoded whole or refused whole with a message naming the part (and
 * the record) that is wrong.  Values are copied out bytewise, so neither the body's alignment nor
 * the host's byte order matters.  What a record may hold (id text, finite values, metadata size)
 * is left to the library's validation, which words its messages as for JSON batches.
 */
#include "server/binbatch.h"

#include "jvdb.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a little-endian u32. */
static uint32_t jb_u32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads a little-endian u16. */
static uint32_t jb_u16(const unsigned char *p) { return p[0] | (uint32_t)p[1] << 8; }

/* Sets the error message and the record index; returns -1. */
static int jb_fail(long *index, long at, char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Writes the message into err, records the index of the vector at fault and returns -1. */
static int jb_fail(long *index, long at, char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    *index = at;
    return -1;
}

/* Copies count*dim little-endian float32 values from p into each vector's own array. */
static int jb_values(const unsigned char *p, struct jf_vector *v, size_t count, uint32_t dim)
{
    for (size_t i = 0; i < count; i++) {
        v[i].n = dim;
        if (!(v[i].values = malloc((size_t)dim * sizeof(float)))) return -1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(v[i].values, p + i * (size_t)dim * 4, (size_t)dim * 4);
#else
        for (uint32_t j = 0; j < dim; j++) {
            uint32_t bits = jb_u32(p + (i * (size_t)dim + j) * 4);
            memcpy(&v[i].values[j], &bits, 4);
        }
#endif
    }
    return 0;
}

/* Reads the metadata sidecar (a JSON array of count objects or nulls) into each vector's meta. */
static int jb_meta(const unsigned char *p, size_t n, unsigned max_depth, struct jf_vector *v, size_t count, long *index,
                   char *err, size_t cap)
{
    /* The array itself is one level above the objects a JSON batch nests at that depth. */
    if (!jr_nesting_ok((const char *)p, n, max_depth + 1))
        return jb_fail(index, -1, err, cap, "binary batch: metadata sidecar nests JSON deeper than %u levels",
                       max_depth);
    json_error_t je;
    json_t *arr = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &je);
    if (!arr)
        return jb_fail(index, -1, err, cap,
                       "binary batch: metadata sidecar is not valid JSON: %s at line %d, column %d", je.text, je.line,
                       je.column);
    int rc = 0;
    if (!json_is_array(arr)) {
        rc = jb_fail(index, -1, err, cap, "binary batch: metadata sidecar must be a JSON array (one entry per vector)");
    } else if (json_array_size(arr) != count) {
        rc = jb_fail(index, -1, err, cap, "binary batch: metadata sidecar has %zu entries for %zu vectors",
                     json_array_size(arr), count);
    } else {
        for (size_t i = 0; i < count && !rc; i++) {
            json_t *m = json_array_get(arr, i);
            if (json_is_null(m)) continue;
            if (!json_is_object(m))
                rc = jb_fail(index, (long)i, err, cap, "record %zu: metadata must be a JSON object or null", i);
            else if (!(v[i].meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY)))
                rc = jb_fail(index, (long)i, err, cap, "record %zu: out of memory encoding metadata", i);
        }
    }
    json_decref(arr);
    return rc;
}

int jb_decode(const unsigned char *body, size_t len, unsigned max_depth, struct jf_vector **out, size_t *count,
              long *index, char *err, size_t cap)
{
    if (!body || len < JB_HEADER_LEN)
        return jb_fail(index, -1, err, cap,
                       "binary batch is %zu bytes; its header alone is %d (magic \"%s\", count, "
                       "dimension, metadata length)",
                       body ? len : 0, JB_HEADER_LEN, JB_MAGIC);
    if (memcmp(body, JB_MAGIC, 4))
        return jb_fail(index, -1, err, cap, "binary batch must start with the magic \"%s\"", JB_MAGIC);
    uint32_t n = jb_u32(body + 4), dim = jb_u32(body + 8), meta_len = jb_u32(body + 12);
    if (n == 0) return jb_fail(index, -1, err, cap, "binary batch: count is 0; at least one vector is needed");
    if (dim == 0 || dim > JVDB_MAX_DIM)
        return jb_fail(index, -1, err, cap, "binary batch: dimension %u is out of range (1 to %d)", dim, JVDB_MAX_DIM);
    uint64_t rest = len - JB_HEADER_LEN, need = (uint64_t)n * dim * 4;
    /* Each vector needs at least its values and its id's 2-byte length: refuse before allocating. */
    if (need > rest || (uint64_t)n * 2 > rest - need || meta_len > rest - need - (uint64_t)n * 2)
        return jb_fail(index, -1, err, cap,
                       "binary batch: %u vectors of dimension %u need %" PRIu64 " bytes of values, %u or more of ids "
                       "and %u of metadata, but the body has %" PRIu64 " after the header",
                       n, dim, need, 2 * n, meta_len, rest);
    struct jf_vector *v = calloc(n, sizeof *v);
    if (!v || jb_values(body + JB_HEADER_LEN, v, n, dim)) {
        jf_batch_free(v, n);
        return jb_fail(index, -1, err, cap, "out of memory for a binary batch of %u vectors", n);
    }
    const unsigned char *p = body + JB_HEADER_LEN + need, *ids_end = body + len - meta_len;
    for (uint32_t i = 0; i < n; i++) {
        if (ids_end - p < 2) {
            jb_fail(index, i, err, cap,
                    "record %u: the id's length runs past the ids (before the %u bytes of metadata)", i, meta_len);
            goto bad;
        }
        uint32_t idn = jb_u16(p);
        p += 2;
        if (idn == 0) {
            jb_fail(index, i, err, cap, "record %u: id is empty", i);
            goto bad;
        }
        if ((size_t)(ids_end - p) < idn) {
            jb_fail(index, i, err, cap, "record %u: id of %u bytes runs past the ids (before the %u bytes of metadata)",
                    i, idn, meta_len);
            goto bad;
        }
        if (memchr(p, '\0', idn)) {
            jb_fail(index, i, err, cap, "record %u: id holds a NUL byte", i);
            goto bad;
        }
        if (!(v[i].id = strndup((const char *)p, idn))) {
            jb_fail(index, i, err, cap, "out of memory for a binary batch of %u vectors", n);
            goto bad;
        }
        p += idn;
    }
    if (p != ids_end) {
        jb_fail(index, -1, err, cap,
                "binary batch: %zu bytes between the last id and the metadata sidecar belong to "
                "nothing (count, ids or metadata length is wrong)",
                (size_t)(ids_end - p));
        goto bad;
    }
    if (meta_len && jb_meta(ids_end, meta_len, max_depth, v, n, index, err, cap)) goto bad;
    *out = v;
    *count = n;
    return 0;
bad:
    jf_batch_free(v, n);
    return -1;
}

/*
 * record.c — encoding and validation of single records (docs/FORMAT.md, "Record").
 *
 * The checksum covers everything after itself, LSN included, so a record is either entirely the
 * bytes its writer produced or detectably not.  Validation never trusts a length field before
 * checking it against the bytes that exist: this is the parser that recovery, compaction and backup
 * archives run over untrusted bytes, and it has a fuzz target.
 */
#include "store/record.h"

#include <string.h>
#include <xxhash.h>

/* Bytes of vector data in a record of this kind: dim floats for a put, none for a delete. */
static size_t rec_payload(uint32_t dim, unsigned kind)
{
    return kind == REC_KIND_PUT ? (size_t)dim * sizeof(float) : 0;
}

size_t rec_size(uint32_t dim, unsigned kind, size_t id_len, size_t meta_len)
{
    return rec_align(REC_HEADER_SIZE + rec_payload(dim, kind) + id_len + meta_len);
}

void rec_encode(void *buf, uint32_t dim, unsigned kind, const char *id, size_t id_len, const float *vector,
                const char *meta, size_t meta_len, int64_t time_ns)
{
    size_t total = rec_size(dim, kind, id_len, meta_len);
    struct rec_header *h = buf;
    memset(h, 0, REC_HEADER_SIZE);
    h->time_ns = time_ns;
    h->total_len = (uint32_t)total;
    h->meta_len = (uint32_t)meta_len;
    h->id_len = (uint16_t)id_len;
    h->kind = (uint8_t)kind;
    char *p = (char *)buf + REC_HEADER_SIZE;
    size_t vbytes = rec_payload(dim, kind);
    if (vbytes) memcpy(p, vector, vbytes);
    p += vbytes;
    memcpy(p, id, id_len);
    p += id_len;
    if (meta_len) memcpy(p, meta, meta_len);
    p += meta_len;
    memset(p, 0, (size_t)((char *)buf + total - p));
}

void rec_seal(void *buf, uint64_t lsn, unsigned flags)
{
    struct rec_header *h = buf;
    h->lsn = lsn;
    h->flags = (uint8_t)flags;
    h->checksum = XXH3_64bits((const char *)buf + 8, h->total_len - 8);
}

enum rec_check rec_check(const void *p, size_t avail, uint32_t dim, const char **why)
{
    if (avail < REC_HEADER_SIZE) return REC_SHORT;
    const struct rec_header *h = p;
    if (h->total_len == 0) {
        *why = "zero length (unwritten space)";
        return REC_BAD;
    }
    if (h->total_len % REC_ALIGN != 0 || h->total_len < REC_HEADER_SIZE) {
        *why = "length is not a positive multiple of 64";
        return REC_BAD;
    }
    if (h->kind != REC_KIND_PUT && h->kind != REC_KIND_DELETE) {
        *why = "unknown record kind";
        return REC_BAD;
    }
    if (h->id_len == 0) {
        *why = "empty id";
        return REC_BAD;
    }
    uint64_t need = REC_HEADER_SIZE + (uint64_t)rec_payload(dim, h->kind) + h->id_len + h->meta_len;
    if (rec_align(need) != h->total_len) {
        *why = "length fields disagree with the record length";
        return REC_BAD;
    }
    if (h->total_len > avail) return REC_SHORT;
    if (XXH3_64bits((const char *)p + 8, h->total_len - 8) != h->checksum) {
        *why = "checksum mismatch";
        return REC_BAD;
    }
    return rec_check_content(h, dim, why);
}

enum rec_check rec_check_content(const struct rec_header *h, uint32_t dim, const char **why)
{
    /* A checksum proves only that the bytes are what some writer produced; these are the invariants
     * put has enforced since the first format, so no legitimate file breaks them.  The newer, stricter
     * rules (the id alphabet, the magnitude bound) are enforced where records come in from outside:
     * put and restore (validate.c). */
    if (memchr(rec_id(h, dim), '\0', h->id_len)) {
        *why = "id holds a NUL byte";
        return REC_BAD;
    }
    if (h->kind == REC_KIND_PUT) {
        const unsigned char *v = (const unsigned char *)h + REC_HEADER_SIZE;
        uint32_t nonfinite = 0;
        for (uint32_t i = 0; i < dim; i++) {
            uint32_t bits;
            memcpy(&bits, v + (size_t)i * 4, sizeof bits);
            nonfinite |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (nonfinite) {
            *why = "vector holds a NaN or infinite value";
            return REC_BAD;
        }
    }
    if (h->meta_len && memchr(rec_meta(h, dim), '\0', h->meta_len)) {
        *why = "metadata holds a NUL byte";
        return REC_BAD;
    }
    return REC_OK;
}

const char *rec_id(const struct rec_header *h, uint32_t dim)
{
    return (const char *)h + REC_HEADER_SIZE + rec_payload(dim, h->kind);
}

const char *rec_meta(const struct rec_header *h, uint32_t dim) { return rec_id(h, dim) + h->id_len; }
